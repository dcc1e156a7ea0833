/* engine_fixture.c - see engine_fixture.h. */
#include "tests/engine/engine_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void open_api(struct kt *t)
{
    struct kms_err err;
    t->opts.audit = t->audit;
    assert_int_equal(kms_engines_create(t->st, &t->opts, &t->eopts, &t->api, &err), 0);
    if (!kms_api_initialized(t->api)) {
        char root[KMS_API_TOKEN_MAX];
        assert_int_equal(kms_api_dev_bootstrap(t->api, "root", root, sizeof(root), &err), 0);
    }
}

static int setup(void **state, bool audited)
{
    struct kt *t = calloc(1, sizeof(*t));
    struct kms_storage_opts so = {.map_size = 0, .nosync = true, .create = true};
    struct kms_err err;
    uint8_t seal[32] = {7, 1, 2, 3};

    assert_non_null(t);
    snprintf(t->dir, sizeof(t->dir), "/tmp/kms-test-engine-XXXXXX");
    assert_non_null(mkdtemp(t->dir));
    assert_int_equal(kms_storage_open(t->dir, seal, &so, &t->st, &err), 0);
    kms_api_limits_default(&t->opts.limits);
    t->opts.version = "test";
    if (audited) {
        struct kms_audit_device_opts d;
        struct kms_audit_opts ao;
        kms_audit_device_opts_default(&d);
        snprintf(t->audit_path, sizeof(t->audit_path), "%s/audit.log", t->dir);
        snprintf(d.path, sizeof(d.path), "%s", t->audit_path);
        d.fsync = KMS_AUDIT_FSYNC_NEVER;
        memset(&ao, 0, sizeof(ao));
        ao.devices = &d;
        ao.ndevices = 1;
        assert_int_equal(kms_audit_create(t->st, &ao, &t->audit, &err), 0);
    }
    open_api(t);
    *state = t;
    return 0;
}

int kt_setup(void **state)
{
    return setup(state, false);
}

int kt_setup_audited(void **state)
{
    return setup(state, true);
}

void kt_reopen(struct kt *t)
{
    kms_api_destroy(&t->api);
    open_api(t);
}

int kt_teardown(void **state)
{
    struct kt *t = *state;
    char cmd[160];
    kms_api_destroy(&t->api);
    if (t->audit != NULL) {
        kms_audit_destroy(&t->audit);
    }
    kms_storage_close(&t->st);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
    assert_int_equal(system(cmd), 0);
    free(t);
    return 0;
}

int kt_call_ct(struct kt *t, const char *method, const char *target, const char *token,
               const char *ns, const char *ctype, const char *body, json_t **out)
{
    struct kms_http_header h[4];
    size_t nh = 0;
    struct kms_http_req req;
    struct kms_http_resp resp;
    if (token != NULL) {
        h[nh].name = "X-Vault-Token";
        h[nh++].value = token;
    }
    if (ns != NULL) {
        h[nh].name = "X-Vault-Namespace";
        h[nh++].value = ns;
    }
    if (ctype != NULL) {
        h[nh].name = "Content-Type";
        h[nh++].value = ctype;
    }
    memset(&req, 0, sizeof(req));
    req.method = method;
    req.target = target;
    req.headers = h;
    req.nheaders = nh;
    req.body = (const uint8_t *)body;
    req.body_len = body ? strlen(body) : 0;
    req.remote_addr = "127.0.0.1";
    req.remote_port = 4242;
    kms_api_handle(t->api, &req, &resp);
    if (out != NULL) {
        *out = resp.body_len ? json_loadb(resp.body, resp.body_len, 0, NULL) : NULL;
    }
    int status = resp.status;
    kms_http_resp_dispose(&resp);
    return status;
}

int kt_call(struct kt *t, const char *method, const char *target, const char *token, const char *ns,
            const char *body, json_t **out)
{
    return kt_call_ct(t, method, target, token, ns, NULL, body, out);
}

json_t *kt_ok(struct kt *t, int want, const char *method, const char *target, const char *ns,
              const char *body)
{
    json_t *out = NULL;
    int got = kt_call(t, method, target, "root", ns, body, &out);
    if (got != want) {
        char *text = out ? json_dumps(out, 0) : NULL;
        fprintf(stderr, "%s %s -> %d (want %d): %s\n", method, target, got, want, text ? text : "");
        free(text);
    }
    assert_int_equal(got, want);
    return out;
}

const char *kt_err(const json_t *body)
{
    const char *s = json_string_value(json_array_get(json_object_get(body, "errors"), 0));
    return s ? s : "";
}

json_t *kt_data(const json_t *body, const char *key)
{
    return json_object_get(json_object_get(body, "data"), key);
}

bool kt_audit_contains(const struct kt *t, const char *needle)
{
    struct timespec start, now, pause = {0, 10 * 1000 * 1000};
    clock_gettime(CLOCK_MONOTONIC, &start);
    do {
        FILE *f = fopen(t->audit_path, "r");
        if (f != NULL) {
            char line[16384];
            while (fgets(line, sizeof(line), f) != NULL) {
                if (strstr(line, needle) != NULL) {
                    fclose(f);
                    return true;
                }
            }
            fclose(f);
        }
        nanosleep(&pause, NULL);
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while (now.tv_sec - start.tv_sec < 10);
    return false;
}
