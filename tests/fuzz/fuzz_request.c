/*
 * fuzz_request.c - the whole Vault request pipeline without sockets: method, target,
 * namespace header and body come from the input ("METHOD\nTARGET\nNAMESPACE\nBODY"), and
 * kms_api_handle runs them as the root token over a real LMDB store. Every answer must be a
 * well-formed response with a plausible status. A method field "METHOD CTYPE" also sends a
 * Content-Type: "f" is application/x-www-form-urlencoded (the form body parser), "m"
 * application/merge-patch+json (PATCH), anything else is sent as written.
 */
#include "engine/engines.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct kms_api *api;

static void setup(void)
{
    static char dir[] = "/tmp/kms-fuzz-XXXXXX";
    struct kms_storage *st = NULL;
    struct kms_storage_opts so = {.map_size = (size_t)2 << 30, .nosync = true, .create = true};
    struct kms_api_opts ao;
    struct kms_err err;
    uint8_t seal[32] = {7};
    char root[KMS_API_TOKEN_MAX];
    if (mkdtemp(dir) == NULL || kms_storage_open(dir, seal, &so, &st, &err) != 0) {
        abort();
    }
    memset(&ao, 0, sizeof(ao));
    kms_api_limits_default(&ao.limits);
    ao.limits.max_batch_items = 64;
    ao.version = "fuzz";
    if (kms_engines_create(st, &ao, NULL, &api, &err) != 0 ||
        kms_api_dev_bootstrap(api, "root", root, sizeof(root), &err) != 0) {
        abort();
    }
}

/* Split off the next '\n'-terminated field into buf (NUL-terminated). */
static size_t field(const uint8_t **p, size_t *left, char *buf, size_t cap)
{
    size_t i = 0;
    while (i < *left && (*p)[i] != '\n') {
        i++;
    }
    size_t n = i < cap - 1 ? i : cap - 1;
    memcpy(buf, *p, n);
    buf[n] = '\0';
    size_t used = i < *left ? i + 1 : i;
    *p += used;
    *left -= used;
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char method[96], target[1024], ns[128];
    struct kms_http_header h[4];
    struct kms_http_req req;
    struct kms_http_resp resp;
    if (api == NULL) {
        setup();
    }
    const uint8_t *p = data;
    size_t left = size;
    field(&p, &left, method, sizeof(method));
    field(&p, &left, target, sizeof(target));
    size_t nsl = field(&p, &left, ns, sizeof(ns));
    size_t nh = 0;
    h[nh].name = "X-Vault-Token";
    h[nh++].value = "root";
    char *ctype = strchr(method, ' ');
    if (ctype != NULL) {
        *ctype++ = '\0';
        h[nh].name = "Content-Type";
        h[nh++].value = strcmp(ctype, "f") == 0   ? "application/x-www-form-urlencoded"
                        : strcmp(ctype, "m") == 0 ? "application/merge-patch+json"
                                                  : ctype;
    }
    if (nsl > 0) {
        h[nh].name = "X-Vault-Namespace";
        h[nh++].value = ns;
    }
    memset(&req, 0, sizeof(req));
    req.method = method;
    req.target = target;
    req.headers = h;
    req.nheaders = nh;
    req.body = p;
    req.body_len = left;
    req.remote_addr = "127.0.0.1";
    kms_api_handle(api, &req, &resp);
    if (resp.status < 200 || resp.status > 599) {
        abort();
    }
    if (resp.body != NULL && resp.content_type[0] == '\0') {
        json_t *j = json_loadb(resp.body, resp.body_len, 0, NULL);
        if (j == NULL) {
            abort(); /* every JSON answer must parse */
        }
        json_decref(j);
    }
    kms_http_resp_dispose(&resp);
    return 0;
}
