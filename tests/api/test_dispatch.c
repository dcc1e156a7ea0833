/*
 * test_dispatch.c - the request pipeline without sockets: requests are built as
 * struct kms_http_req and fed to kms_api_handle over a real store in a temp directory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "api/api_int.h"
#include "engine/engines.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct fixture {
    char dir[64];
    struct kms_storage *st;
    struct kms_api *api;
};

static int setup_rate(void **state, double rate_limit)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct kms_storage_opts so = {.map_size = 0, .nosync = true, .create = true};
    struct kms_api_opts ao;
    struct kms_err err;
    uint8_t seal[32] = {1, 2, 3};
    char root[KMS_API_TOKEN_MAX];

    snprintf(f->dir, sizeof(f->dir), "/tmp/kms-test-api-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    assert_int_equal(kms_storage_open(f->dir, seal, &so, &f->st, &err), 0);
    memset(&ao, 0, sizeof(ao));
    kms_api_limits_default(&ao.limits);
    ao.limits.max_json_strings = 50;
    ao.limits.max_json_depth = 8;
    ao.limits.max_batch_items = 4;
    ao.limits.max_plaintext_size = 1024;
    ao.limits.max_request_size = 8192;
    ao.version = "test";
    ao.rate_limit = rate_limit;
    ao.rate_limit_burst = 2;
    assert_int_equal(kms_engines_create(f->st, &ao, NULL, &f->api, &err), 0);
    assert_int_equal(kms_api_dev_bootstrap(f->api, "root", root, sizeof(root), &err), 0);
    assert_string_equal(root, "root");
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_rate(state, 0);
}

/* One request per 1000 s per token with a bucket of two: the third request is refused. */
static int setup_limited(void **state)
{
    return setup_rate(state, 0.001);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char path[128];
    kms_api_destroy(&f->api);
    kms_storage_close(&f->st);
    snprintf(path, sizeof(path), "%s/data.mdb", f->dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/lock.mdb", f->dir);
    unlink(path);
    rmdir(f->dir);
    free(f);
    return 0;
}

/* Run one request; returns the status and the parsed body (caller decrefs). */
static int call(struct fixture *f, const char *method, const char *target, const char *token,
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
    kms_api_handle(f->api, &req, &resp);
    if (out != NULL) {
        *out = resp.body ? json_loadb(resp.body, resp.body_len, 0, NULL) : NULL;
    }
    int status = resp.status;
    kms_http_resp_dispose(&resp);
    return status;
}

static const char *first_error(json_t *body)
{
    return json_string_value(json_array_get(json_object_get(body, "errors"), 0));
}

static void test_auth_before_routing(void **state)
{
    struct fixture *f = *state;
    json_t *b = NULL;
    assert_int_equal(call(f, "GET", "/v1/nope/x", NULL, NULL, NULL, NULL, &b), 403);
    assert_string_equal(first_error(b), "permission denied");
    json_decref(b);
    assert_int_equal(call(f, "GET", "/v1/nope/x", "wrong", NULL, NULL, NULL, &b), 403);
    json_decref(b);
    assert_int_equal(call(f, "GET", "/v1/nope/x", "root", NULL, NULL, NULL, &b), 404);
    assert_string_equal(first_error(b), "no handler for route \"nope/x\". route entry not found.");
    json_decref(b);
    assert_int_equal(call(f, "GET", "/v1/sys/health", NULL, NULL, NULL, NULL, &b), 200);
    assert_true(json_is_true(json_object_get(b, "initialized")));
    json_decref(b);
}

static void test_routing_errors(void **state)
{
    struct fixture *f = *state;
    json_t *b = NULL;
    assert_int_equal(call(f, "GET", "/v1/transit/encrypt/k", "root", NULL, NULL, NULL, &b), 405);
    assert_string_equal(first_error(b), "1 error occurred:\n\t* unsupported operation\n\n");
    json_decref(b);
    assert_int_equal(call(f, "POST", "/v1/transit/bogus", "root", NULL, NULL, "{}", &b), 404);
    assert_string_equal(first_error(b), "1 error occurred:\n\t* unsupported path\n\n");
    json_decref(b);
    assert_int_equal(call(f, "POST", "/v1/transit/keys/", "root", NULL, NULL, "{}", &b), 400);
    assert_string_equal(first_error(b), "cannot write to a path ending in '/'");
    json_decref(b);
    assert_int_equal(call(f, "FOO", "/v1/sys/health", "root", NULL, NULL, NULL, &b), 405);
    json_decref(b);
    /* found by fuzz_request: a non-object JSON body was inspected after it was freed */
    assert_int_equal(call(f, "POST", "/v1/sys/namespaces/x", "root", NULL, NULL, "1", &b), 400);
    assert_string_equal(first_error(b), "failed to decode JSON input: json: cannot unmarshal "
                                        "number into Go value of type map[string]interface {}");
    json_decref(b);
    /* found by fuzz_request: an empty path used to be read at index -1 */
    assert_int_equal(call(f, "LIST", "/v1/", "root", NULL, NULL, NULL, &b), 404);
    json_decref(b);
    /* names must match Vault's regex */
    assert_int_equal(call(f, "POST", "/v1/transit/keys/-a", "root", NULL, NULL, "{}", &b), 404);
    json_decref(b);
    assert_int_equal(call(f, "POST", "/v1/transit/keys/a.b-c_d", "root", NULL, NULL, "{}", &b),
                     200);
    json_decref(b);
}

static void test_list_forms_agree(void **state)
{
    struct fixture *f = *state;
    json_t *a = NULL, *b = NULL;
    assert_int_equal(call(f, "LIST", "/v1/transit/keys", "root", NULL, NULL, NULL, &a), 404);
    assert_int_equal(json_array_size(json_object_get(a, "errors")), 0);
    json_decref(a);
    assert_int_equal(call(f, "POST", "/v1/transit/keys/k2", "root", NULL, NULL, "{}", NULL), 200);
    assert_int_equal(call(f, "POST", "/v1/transit/keys/k1", "root", NULL, NULL, "{}", NULL), 200);
    assert_int_equal(call(f, "LIST", "/v1/transit/keys", "root", NULL, NULL, NULL, &a), 200);
    assert_int_equal(call(f, "GET", "/v1/transit/keys?list=true", "root", NULL, NULL, NULL, &b),
                     200);
    json_t *ka = json_object_get(json_object_get(a, "data"), "keys");
    assert_true(json_equal(ka, json_object_get(json_object_get(b, "data"), "keys")));
    assert_string_equal(json_string_value(json_array_get(ka, 0)), "k1");
    json_decref(a);
    json_decref(b);
    assert_int_equal(call(f, "GET", "/v1/transit/keys?list=maybe", "root", NULL, NULL, NULL, &a),
                     400);
    json_decref(a);
}

static void test_params(void **state)
{
    struct fixture *f = *state;
    json_t *b = NULL;
    /* unknown fields warn (sorted); a body "name" loses to the path */
    assert_int_equal(call(f, "POST", "/v1/transit/keys/w", "root", NULL, NULL,
                          "{\"zz\":1,\"aa\":2,\"name\":\"other\"}", &b),
                     200);
    json_t *w = json_object_get(b, "warnings");
    assert_int_equal(json_array_size(w), 2); /* OpenBao's order: ignored, then replaced */
    assert_string_equal(json_string_value(json_array_get(w, 0)),
                        "Endpoint ignored these unrecognized parameters: [aa zz]");
    assert_string_equal(json_string_value(json_array_get(w, 1)),
                        "Endpoint replaced the value of these parameters with the values "
                        "captured from the endpoint's path: [name]");
    assert_string_equal(json_string_value(json_object_get(json_object_get(b, "data"), "name")),
                        "w");
    json_decref(b);
    /* weak typing: strings coerce to ints and durations */
    assert_int_equal(call(f, "POST", "/v1/transit/keys/w/config", "root", NULL, NULL,
                          "{\"auto_rotate_period\":\"2d\",\"deletion_allowed\":\"true\"}", &b),
                     200);
    json_t *d = json_object_get(b, "data");
    assert_int_equal(json_integer_value(json_object_get(d, "auto_rotate_period")), 172800);
    assert_true(json_is_true(json_object_get(d, "deletion_allowed")));
    json_decref(b);
    assert_int_equal(call(f, "POST", "/v1/transit/keys/w/config", "root", NULL, NULL,
                          "{\"min_decryption_version\":\"abc\"}", &b),
                     400);
    assert_non_null(strstr(first_error(b), "Field validation failed: error converting input for "
                                           "field \"min_decryption_version\""));
    json_decref(b);
    /* form-encoded body */
    assert_int_equal(call(f, "POST", "/v1/transit/keys/form1", "root", NULL,
                          "application/x-www-form-urlencoded", "type=chacha20-poly1305", &b),
                     200);
    assert_string_equal(json_string_value(json_object_get(json_object_get(b, "data"), "type")),
                        "chacha20-poly1305");
    json_decref(b);
}

static void test_json_limits(void **state)
{
    struct fixture *f = *state;
    json_t *b = NULL;
    assert_int_equal(call(f, "POST", "/v1/transit/keys/j", "root", NULL, NULL, "{\"a\":", &b), 400);
    assert_non_null(strstr(first_error(b), "failed to decode JSON input: "));
    json_decref(b);
    assert_int_equal(call(f, "POST", "/v1/transit/keys/j", "root", NULL, NULL,
                          "{\"a\":[[[[[[[[[[1]]]]]]]]]]}", &b),
                     400);
    assert_non_null(strstr(first_error(b), "refused JSON input due to high complexity"));
    json_decref(b);
    char big[2048];
    size_t o = 0;
    o += (size_t)snprintf(big + o, sizeof(big) - o, "{");
    for (int i = 0; i < 40; i++) {
        o += (size_t)snprintf(big + o, sizeof(big) - o, "%s\"k%d\":\"v\"", i ? "," : "", i);
    }
    snprintf(big + o, sizeof(big) - o, "}");
    assert_int_equal(call(f, "POST", "/v1/transit/keys/j", "root", NULL, NULL, big, &b), 400);
    assert_non_null(strstr(first_error(b), "exceeded maximum number of strings"));
    json_decref(b);
    /* batch cap */
    assert_int_equal(call(f, "POST", "/v1/transit/encrypt/j", "root", NULL, NULL,
                          "{\"batch_input\":[{},{},{},{},{}]}", &b),
                     400);
    assert_non_null(strstr(first_error(b), "max_batch_items"));
    json_decref(b);
    /* plaintext cap: 1500 bytes > 1024 */
    char pt[2100 + 40];
    memcpy(pt, "{\"plaintext\":\"", 14);
    memset(pt + 14, 'A', 2000);
    memcpy(pt + 2014, "\"}", 3);
    assert_int_equal(call(f, "POST", "/v1/transit/encrypt/j", "root", NULL, NULL, pt, &b), 413);
    assert_non_null(strstr(first_error(b), "1 KiB"));
    json_decref(b);
}

static void test_namespaces(void **state)
{
    struct fixture *f = *state;
    json_t *b = NULL;
    assert_int_equal(call(f, "GET", "/v1/transit/keys/x", "root", "nope", NULL, NULL, &b), 404);
    assert_string_equal(first_error(b), "namespace not found");
    json_decref(b);
    assert_int_equal(call(f, "POST", "/v1/sys/namespaces/org1", "root", NULL, NULL, NULL, NULL),
                     200);
    assert_int_equal(call(f, "POST", "/v1/sys/mounts/transit", "root", "org1", NULL,
                          "{\"type\":\"transit\"}", NULL),
                     204);
    assert_int_equal(call(f, "POST", "/v1/org1/transit/keys/same", "root", NULL, NULL, "{}", NULL),
                     200);
    /* header and path-prefix forms reach the same key; root's transit has no such key */
    assert_int_equal(call(f, "GET", "/v1/transit/keys/same", "root", "org1", NULL, NULL, NULL),
                     200);
    assert_int_equal(call(f, "GET", "/v1/transit/keys/same", "root", NULL, NULL, NULL, NULL), 404);
    assert_int_equal(call(f, "DELETE", "/v1/sys/namespaces/org1", "root", NULL, NULL, NULL, NULL),
                     204);
    assert_int_equal(call(f, "GET", "/v1/transit/keys/same", "root", "org1", NULL, NULL, NULL),
                     404);
}

static void test_durations(void **state)
{
    (void)state;
    int64_t v;
    assert_int_equal(kms_duration_parse("90", &v), 0);
    assert_int_equal(v, 90);
    assert_int_equal(kms_duration_parse("1h30m", &v), 0);
    assert_int_equal(v, 5400);
    assert_int_equal(kms_duration_parse("3d", &v), 0);
    assert_int_equal(v, 259200);
    assert_int_equal(kms_duration_parse("1.5h", &v), 0);
    assert_int_equal(v, 5400);
    assert_int_equal(kms_duration_parse("90x", &v), -1);
    assert_int_equal(kms_duration_parse("", &v), -1);
    assert_int_equal(kms_duration_parse("h", &v), -1);
    /* in milliseconds (the sidecar's -timeout): not cut to whole seconds */
    assert_int_equal(kms_duration_parse_ms("2500ms", &v), 0);
    assert_int_equal(v, 2500);
    assert_int_equal(kms_duration_parse_ms("1.5s", &v), 0);
    assert_int_equal(v, 1500);
    assert_int_equal(kms_duration_parse_ms("3", &v), 0);
    assert_int_equal(v, 3000);
    assert_int_equal(kms_duration_parse_ms("1m0.25s", &v), 0);
    assert_int_equal(v, 60250);
    assert_int_equal(kms_duration_parse_ms("90x", &v), -1);
    assert_int_equal(kms_duration_parse("2500ms", &v), 0);
    assert_int_equal(v, 2);
}

/* A request with arbitrary headers; the response's status, parsed body and extra headers. */
struct reply {
    int status;
    json_t *body;
    char retry_after[256];
    char ns_echo[256];
    char ctype[64];
    size_t body_len;
};

static void call_h(struct fixture *f, const char *method, const char *target,
                   const struct kms_http_header *h, size_t nh, const char *body, struct reply *r)
{
    struct kms_http_req req;
    struct kms_http_resp resp;
    memset(&req, 0, sizeof(req));
    memset(r, 0, sizeof(*r));
    req.method = method;
    req.target = target;
    req.headers = h;
    req.nheaders = nh;
    req.body = (const uint8_t *)body;
    req.body_len = body ? strlen(body) : 0;
    req.remote_addr = "127.0.0.1";
    kms_api_handle(f->api, &req, &resp);
    r->status = resp.status;
    r->body = resp.body ? json_loadb(resp.body, resp.body_len, 0, NULL) : NULL;
    r->body_len = resp.body_len;
    snprintf(r->ctype, sizeof(r->ctype), "%s", resp.content_type);
    for (size_t i = 0; i < resp.nextra; i++) {
        if (strcmp(resp.extra[i].name, "Retry-After") == 0) {
            snprintf(r->retry_after, sizeof(r->retry_after), "%s", resp.extra[i].value);
        }
        if (strcmp(resp.extra[i].name, "X-Vault-Namespace") == 0) {
            snprintf(r->ns_echo, sizeof(r->ns_echo), "%s", resp.extra[i].value);
        }
    }
    kms_http_resp_dispose(&resp);
}

static size_t nerrors(json_t *body)
{
    json_t *e = json_object_get(body, "errors");
    assert_true(json_is_array(e));
    return json_array_size(e);
}

/* Root writes a policy and a token (id chosen) that carries only it. */
static void make_token(struct fixture *f, const char *id, const char *policy, const char *hcl)
{
    char target[128];
    char body[512];
    json_t *b = NULL;
    json_t *p = json_pack("{s:s}", "policy", hcl);
    char *text = json_dumps(p, 0);
    snprintf(target, sizeof(target), "/v1/sys/policy/%s", policy);
    assert_int_equal(call(f, "POST", target, "root", NULL, NULL, text, NULL), 204);
    free(text);
    json_decref(p);
    snprintf(body, sizeof(body), "{\"id\":\"%s\",\"policies\":[\"%s\"]}", id, policy);
    assert_int_equal(call(f, "POST", "/v1/auth/token/create", "root", NULL, NULL, body, &b), 200);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(b, "auth"), "client_token")), id);
    json_decref(b);
}

static void test_request_line_refusals(void **state)
{
    struct fixture *f = *state;
    json_t *b = NULL;
    /* not under /v1/: 404 with an empty errors array, before any token check */
    assert_int_equal(call(f, "GET", "/v2/sys/health", NULL, NULL, NULL, NULL, &b), 404);
    assert_int_equal(nerrors(b), 0);
    json_decref(b);
    assert_int_equal(call(f, "GET", "/v1", NULL, NULL, NULL, NULL, &b), 404);
    json_decref(b);
    /* an unknown method: 405 with no message, even without a token */
    assert_int_equal(call(f, "BREW", "/v1/transit/keys/k", NULL, NULL, NULL, NULL, &b), 405);
    assert_int_equal(nerrors(b), 0);
    json_decref(b);
    /* bad percent-encoding and encoded NUL in the path */
    assert_int_equal(call(f, "GET", "/v1/transit/keys/%zz", "root", NULL, NULL, NULL, &b), 400);
    assert_string_equal(first_error(b), "invalid request path");
    json_decref(b);
    assert_int_equal(call(f, "GET", "/v1/transit/keys/a%00b", "root", NULL, NULL, NULL, &b), 400);
    json_decref(b);
    assert_int_equal(call(f, "GET", "/v1/transit/keys/%4", "root", NULL, NULL, NULL, &b), 400);
    json_decref(b);
    /* percent-encoded names reach the same key */
    assert_int_equal(call(f, "POST", "/v1/transit/keys/pc", "root", NULL, NULL, "{}", NULL), 200);
    assert_int_equal(call(f, "GET", "/v1/transit/keys/%70%63", "root", NULL, NULL, NULL, &b), 200);
    assert_string_equal(json_string_value(json_object_get(json_object_get(b, "data"), "name")),
                        "pc");
    json_decref(b);
    /* a bad query string on a read */
    assert_int_equal(call(f, "GET", "/v1/transit/keys/pc?x=%zz", "root", NULL, NULL, NULL, &b),
                     400);
    assert_string_equal(first_error(b), "failed to parse query string");
    json_decref(b);
    /* list=<not a bool>: 400 with no message */
    assert_int_equal(call(f, "GET", "/v1/transit/keys?list=2", "root", NULL, NULL, NULL, &b), 400);
    assert_int_equal(nerrors(b), 0);
    json_decref(b);
    /* list=false stays a read */
    assert_int_equal(call(f, "GET", "/v1/transit/keys/pc?list=false", "root", NULL, NULL, NULL, &b),
                     200);
    json_decref(b);
}

static void test_patch_and_trailing_slash(void **state)
{
    struct fixture *f = *state;
    json_t *b = NULL;
    /* PATCH needs the merge-patch content type, checked before the token */
    assert_int_equal(call(f, "PATCH", "/v1/transit/keys/k", NULL, NULL, NULL, "{}", &b), 415);
    assert_string_equal(first_error(b), "PATCH requires Content-Type application/merge-patch+json");
    json_decref(b);
    assert_int_equal(
        call(f, "PATCH", "/v1/transit/keys/k", "root", NULL, "application/json", "{}", &b), 415);
    json_decref(b);
    /* with it, a write to a path ending in '/' is still refused */
    assert_int_equal(call(f, "PATCH", "/v1/transit/keys/", "root", NULL,
                          "application/merge-patch+json", "{}", &b),
                     400);
    assert_string_equal(first_error(b), "cannot write to a path ending in '/'");
    json_decref(b);
    /* no route serves PATCH: the matched path answers 405 */
    assert_int_equal(call(f, "POST", "/v1/transit/keys/k", "root", NULL, NULL, "{}", NULL), 200);
    assert_int_equal(call(f, "PATCH", "/v1/transit/keys/k", "root", NULL,
                          "application/merge-patch+json", "{}", &b),
                     405);
    assert_string_equal(first_error(b), "1 error occurred:\n\t* unsupported operation\n\n");
    json_decref(b);
    /* PUT is POST */
    assert_int_equal(call(f, "PUT", "/v1/transit/keys/k/rotate", "root", NULL, NULL, NULL, &b),
                     200);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(b, "data"), "latest_version")), 2);
    json_decref(b);
    /* names: a character outside Vault's regex, an empty segment, a built-in path alone */
    assert_int_equal(call(f, "GET", "/v1/transit/keys/a!b", "root", NULL, NULL, NULL, &b), 404);
    assert_string_equal(first_error(b), "1 error occurred:\n\t* unsupported path\n\n");
    json_decref(b);
    assert_int_equal(call(f, "GET", "/v1/kms/keys//x", "root", NULL, NULL, NULL, &b), 404);
    json_decref(b);
    assert_int_equal(call(f, "GET", "/v1/sys", "root", NULL, NULL, NULL, &b), 404);
    assert_string_equal(first_error(b), "1 error occurred:\n\t* unsupported path\n\n");
    json_decref(b);
    /* a path that no route template matches inside a mount, and a name too long */
    char longname[300 + 32];
    memcpy(longname, "/v1/transit/keys/", 17);
    memset(longname + 17, 'a', 300);
    longname[317] = '\0';
    assert_int_equal(call(f, "GET", longname, "root", NULL, NULL, NULL, &b), 404);
    assert_string_equal(first_error(b), "1 error occurred:\n\t* unsupported path\n\n");
    json_decref(b);
}

static void test_namespace_header(void **state)
{
    struct fixture *f = *state;
    struct reply r;
    json_t *b = NULL;
    assert_int_equal(call(f, "POST", "/v1/sys/namespaces/org1", "root", NULL, NULL, NULL, NULL),
                     200);
    assert_int_equal(call(f, "POST", "/v1/sys/namespaces/team", "root", "org1", NULL, NULL, NULL),
                     200);
    /* slashes and blanks around the header are ignored; the header is echoed as sent */
    struct kms_http_header h[2] = {{"x-vault-token", "root"}, {"X-VAULT-NAMESPACE", " /org1/ "}};
    call_h(f, "LIST", "/v1/sys/namespaces", h, 2, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.ns_echo, " /org1/ ");
    assert_string_equal(json_string_value(json_array_get(
                            json_object_get(json_object_get(r.body, "data"), "keys"), 0)),
                        "team/");
    json_decref(r.body);
    /* "root" and "" name the root namespace */
    h[1].value = "root";
    call_h(f, "LIST", "/v1/sys/namespaces", h, 2, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_array_get(
                            json_object_get(json_object_get(r.body, "data"), "keys"), 0)),
                        "org1/");
    json_decref(r.body);
    h[1].value = "/";
    call_h(f, "GET", "/v1/sys/namespaces/org1", h, 2, NULL, &r);
    assert_int_equal(r.status, 200);
    json_decref(r.body);
    /* the header and a path prefix add up: org1 + team/ */
    h[1].value = "org1";
    call_h(f, "GET", "/v1/team/sys/mounts", h, 2, NULL, &r);
    assert_int_equal(r.status, 200);
    json_decref(r.body);
    /* a path prefix alone reaches a nested namespace */
    assert_int_equal(call(f, "LIST", "/v1/org1/sys/namespaces", "root", NULL, NULL, NULL, NULL),
                     200);
    /* an unknown namespace, or one longer than a path can be */
    char longns[KMS_PATH_MAX + 16];
    memset(longns, 'n', sizeof(longns) - 1);
    longns[sizeof(longns) - 1] = '\0';
    h[1].value = longns;
    call_h(f, "GET", "/v1/sys/mounts", h, 2, NULL, &r);
    assert_int_equal(r.status, 404);
    assert_string_equal(first_error(r.body), "namespace not found");
    assert_string_equal(r.ns_echo, "");
    json_decref(r.body);
    /* a path within limits that no longer fits once the namespace is prefixed */
    char target[1100];
    memcpy(target, "/v1/transit/keys/", 17);
    memset(target + 17, 'p', 1010);
    target[1027] = '\0';
    assert_int_equal(call(f, "GET", target, "root", "org1", NULL, NULL, &b), 400);
    assert_string_equal(first_error(b), "request path too long");
    json_decref(b);
    assert_int_equal(call(f, "GET", target, "root", NULL, NULL, NULL, &b), 400);
    assert_string_equal(first_error(b), "request path too long");
    json_decref(b);
}

static void test_bodies(void **state)
{
    struct fixture *f = *state;
    json_t *b = NULL;
    /* an all-blank body is no parameters; a JSON null too */
    assert_int_equal(call(f, "POST", "/v1/transit/keys/blank", "root", NULL, NULL, " \n\t ", &b),
                     200);
    json_decref(b);
    assert_int_equal(call(f, "POST", "/v1/transit/keys/nul", "root", NULL, NULL, "null", &b), 200);
    assert_true(json_is_null(json_object_get(b, "warnings")));
    json_decref(b);
    /* non-object bodies are named the way Go names them */
    static const struct {
        const char *body, *what;
    } bad[] = {{"[1]", "array"}, {"\"s\"", "string"}, {"true", "bool"}, {"2.5", "number"}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char want[160];
        snprintf(want, sizeof(want),
                 "failed to decode JSON input: json: cannot unmarshal %s into Go value of type "
                 "map[string]interface {}",
                 bad[i].what);
        assert_int_equal(call(f, "POST", "/v1/transit/keys/x", "root", NULL, NULL, bad[i].body, &b),
                         400);
        assert_string_equal(first_error(b), want);
        json_decref(b);
    }
    /* duplicate keys are refused */
    assert_int_equal(call(f, "POST", "/v1/transit/keys/x", "root", NULL, NULL,
                          "{\"type\":\"aes256-gcm96\",\"type\":\"chacha20-poly1305\"}", &b),
                     400);
    assert_non_null(strstr(first_error(b), "failed to decode JSON input: "));
    json_decref(b);
    /* a body over max_request_size (8 KiB here): 413 */
    char *big = malloc(9000);
    assert_non_null(big);
    memset(big, ' ', 8999);
    big[0] = '{';
    big[8997] = '}';
    big[8998] = '\0';
    assert_int_equal(call(f, "POST", "/v1/transit/keys/x", "root", NULL, NULL, big, &b), 413);
    assert_string_equal(first_error(b),
                        "failed to decode JSON input: http: request body too large");
    json_decref(b);
    free(big);
    /* form bodies: repeated keys are joined with commas; a JSON body with a form type is JSON */
    assert_int_equal(call(f, "POST", "/v1/sys/mounts/formed", "root", NULL,
                          "application/x-www-form-urlencoded",
                          "type=transit&description=a+b&description=c%2Cd&&flag", &b),
                     204);
    json_decref(b);
    assert_int_equal(call(f, "GET", "/v1/sys/mounts/formed", "root", NULL, NULL, NULL, &b), 200);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(b, "data"), "description")), "a b,c,d");
    json_decref(b);
    assert_int_equal(call(f, "POST", "/v1/transit/keys/jf", "root", NULL,
                          "application/x-www-form-urlencoded; charset=utf-8",
                          "{\"type\":\"chacha20-poly1305\"}", &b),
                     200);
    assert_string_equal(json_string_value(json_object_get(json_object_get(b, "data"), "type")),
                        "chacha20-poly1305");
    json_decref(b);
    assert_int_equal(call(f, "POST", "/v1/transit/keys/bf", "root", NULL,
                          "application/x-www-form-urlencoded", "type=%G1", &b),
                     400);
    assert_string_equal(first_error(b), "failed to parse form body");
    json_decref(b);
}

static void test_query_params(void **state)
{
    struct fixture *f = *state;
    json_t *b = NULL;
    /* a repeated query key becomes a []string (OpenBao's parseQuery), which an int field
     * refuses */
    assert_int_equal(call(f, "GET", "/v1/sys/health?activecode=201&activecode=202&activecode=203",
                          NULL, NULL, NULL, NULL, &b),
                     400);
    assert_string_equal(first_error(b),
                        "Field validation failed: error converting input for field \"activecode\": "
                        "'' expected type 'int', got unconvertible type '[]string'");
    json_decref(b);
    /* a single one is coerced from its string form */
    assert_int_equal(
        call(f, "GET", "/v1/sys/health?activecode=299&standbyok", NULL, NULL, NULL, NULL, &b), 299);
    json_decref(b);
    /* ?list=true on GET is a LIST, and the list key is not a parameter */
    assert_int_equal(call(f, "POST", "/v1/transit/keys/q1", "root", NULL, NULL, "{}", NULL), 200);
    assert_int_equal(
        call(f, "GET", "/v1/transit/keys/?list=true&extra=1", "root", NULL, NULL, NULL, &b), 200);
    assert_string_equal(json_string_value(json_array_get(json_object_get(b, "warnings"), 0)),
                        "Endpoint ignored these unrecognized parameters: [extra]");
    json_decref(b);
    /* query parameters of a DELETE reach the handler as well */
    assert_int_equal(call(f, "DELETE", "/v1/sys/mounts/nothing?x=1", "root", NULL, NULL, NULL, &b),
                     204);
    assert_null(b);
}

static void test_captures_and_head(void **state)
{
    struct fixture *f = *state;
    json_t *b = NULL;
    struct reply r;
    assert_int_equal(
        call(f, "POST", "/v1/transit/keys/cap", "root", NULL, NULL, "{\"name\":\"x\"}", &b), 200);
    assert_string_equal(json_string_value(json_array_get(json_object_get(b, "warnings"), 0)),
                        "Endpoint replaced the value of these parameters with the values captured "
                        "from the endpoint's path: [name]");
    json_decref(b);
    /* two captures replaced at once */
    assert_int_equal(call(f, "POST", "/v1/transit/datakey/plaintext/cap", "root", NULL, NULL,
                          "{\"name\":\"x\",\"plaintext\":\"y\"}", &b),
                     200);
    assert_string_equal(json_string_value(json_array_get(json_object_get(b, "warnings"), 0)),
                        "Endpoint replaced the value of these parameters with the values captured "
                        "from the endpoint's path: [plaintext name]");
    json_decref(b);
    /* HEAD of a public route runs it (status only matters); of any other route: 405 */
    struct kms_http_header h[1] = {{"X-Vault-Token", "root"}};
    call_h(f, "HEAD", "/v1/sys/health", h, 0, NULL, &r);
    assert_int_equal(r.status, 200);
    json_decref(r.body);
    call_h(f, "HEAD", "/v1/sys/health?activecode=204", h, 0, NULL, &r);
    assert_int_equal(r.status, 204);
    json_decref(r.body);
    call_h(f, "HEAD", "/v1/transit/keys/cap", h, 1, NULL, &r);
    assert_int_equal(r.status, 405);
    json_decref(r.body);
}

static void test_tokens_and_acl(void **state)
{
    struct fixture *f = *state;
    json_t *b = NULL;
    struct reply r;
    /* Authorization: Bearer works like X-Vault-Token; an empty bearer is no token */
    struct kms_http_header h[1] = {{"Authorization", "Bearer  root"}};
    call_h(f, "GET", "/v1/sys/mounts", h, 1, NULL, &r);
    assert_int_equal(r.status, 200);
    json_decref(r.body);
    h[0].value = "Bearer ";
    call_h(f, "GET", "/v1/sys/mounts", h, 1, NULL, &r);
    assert_int_equal(r.status, 403);
    json_decref(r.body);
    h[0].value = "Basic cm9vdDo=";
    call_h(f, "GET", "/v1/sys/mounts", h, 1, NULL, &r);
    assert_int_equal(r.status, 403);
    json_decref(r.body);
    /* an empty X-Vault-Token falls back to the bearer */
    struct kms_http_header h2[2] = {{"X-Vault-Token", ""}, {"Authorization", "Bearer root"}};
    call_h(f, "GET", "/v1/sys/mounts", h2, 2, NULL, &r);
    assert_int_equal(r.status, 200);
    json_decref(r.body);

    make_token(f, "reader", "reader", "path \"transit/keys/*\" { capabilities = [\"read\"] }");
    assert_int_equal(call(f, "POST", "/v1/transit/keys/acl", "root", NULL, NULL, "{}", NULL), 200);
    assert_int_equal(call(f, "GET", "/v1/transit/keys/acl", "reader", NULL, NULL, NULL, NULL), 200);
    /* denied by policy: the multierror form */
    assert_int_equal(call(f, "POST", "/v1/transit/keys/acl/rotate", "reader", NULL, NULL, NULL, &b),
                     403);
    assert_string_equal(first_error(b), "1 error occurred:\n\t* permission denied\n\n");
    json_decref(b);
    /* the ACL runs before routing: a non-root token gets 403 where root gets 404 */
    assert_int_equal(call(f, "GET", "/v1/nomount/x", "reader", NULL, NULL, NULL, &b), 403);
    json_decref(b);
    assert_int_equal(call(f, "GET", "/v1/nomount/x", "root", NULL, NULL, NULL, &b), 404);
    json_decref(b);

    /* encrypt to an absent key is a create (upsert): update alone does not allow it */
    make_token(f, "updater", "updater",
               "path \"transit/encrypt/*\" { capabilities = [\"update\"] }");
    assert_int_equal(call(f, "POST", "/v1/transit/encrypt/acl", "updater", NULL, NULL,
                          "{\"plaintext\":\"aGk=\"}", NULL),
                     200);
    assert_int_equal(call(f, "POST", "/v1/transit/encrypt/newkey", "updater", NULL, NULL,
                          "{\"plaintext\":\"aGk=\"}", &b),
                     403);
    json_decref(b);
    assert_int_equal(call(f, "GET", "/v1/transit/keys/newkey", "root", NULL, NULL, NULL, NULL),
                     404);

    /* root-protected paths need sudo on top of the capability */
    make_token(f, "mounter", "mounter",
               "path \"sys/mounts/*\" { capabilities = [\"create\", \"read\", \"update\", "
               "\"delete\"] }");
    assert_int_equal(
        call(f, "POST", "/v1/sys/mounts/m1", "mounter", NULL, NULL, "{\"type\":\"transit\"}", &b),
        403);
    json_decref(b);
    make_token(f, "sudoer", "sudoer",
               "path \"sys/mounts/*\" { capabilities = [\"create\", \"read\", \"update\", "
               "\"delete\", \"sudo\"] }");
    assert_int_equal(
        call(f, "POST", "/v1/sys/mounts/m1", "sudoer", NULL, NULL, "{\"type\":\"transit\"}", NULL),
        204);
    assert_int_equal(call(f, "DELETE", "/v1/sys/mounts/m1", "sudoer", NULL, NULL, NULL, NULL), 204);
}

static void test_rate_limit(void **state)
{
    struct fixture *f = *state;
    struct reply r;
    struct kms_http_header h[1] = {{"X-Vault-Token", "root"}};
    for (int i = 0; i < 2; i++) {
        call_h(f, "GET", "/v1/sys/mounts", h, 1, NULL, &r);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.retry_after, "");
        json_decref(r.body);
    }
    call_h(f, "GET", "/v1/sys/mounts", h, 1, NULL, &r);
    assert_int_equal(r.status, 429);
    assert_string_equal(first_error(r.body), "rate limit quota exceeded");
    /* one token back takes ~1000 s at 0.001 per second */
    long ra = strtol(r.retry_after, NULL, 10);
    assert_true(ra >= 990 && ra <= 1000);
    json_decref(r.body);
    /* public routes are not limited; a bad token is refused before the limiter */
    call_h(f, "GET", "/v1/sys/health", h, 0, NULL, &r);
    assert_int_equal(r.status, 200);
    json_decref(r.body);
    h[0].value = "nope";
    call_h(f, "GET", "/v1/sys/mounts", h, 1, NULL, &r);
    assert_int_equal(r.status, 403);
    json_decref(r.body);
}

static void test_sealed_before_init(void **state)
{
    struct fixture *f = *state;
    struct kms_api *live = f->api;
    struct kms_api *fresh = NULL;
    struct kms_storage *st = NULL;
    struct kms_storage_opts so = {.map_size = 0, .nosync = true, .create = true};
    struct kms_api_opts ao;
    struct kms_err err;
    char dir[64], path[128];
    uint8_t seal[32] = {9};
    json_t *b = NULL;

    snprintf(dir, sizeof(dir), "/tmp/kms-test-api-XXXXXX");
    assert_non_null(mkdtemp(dir));
    assert_int_equal(kms_storage_open(dir, seal, &so, &st, &err), 0);
    memset(&ao, 0, sizeof(ao));
    kms_api_limits_default(&ao.limits);
    ao.version = "test";
    assert_int_equal(kms_engines_create(st, &ao, NULL, &fresh, &err), 0);
    assert_false(kms_api_initialized(fresh));
    f->api = fresh;
    /* every non-public route: 503, whatever the token */
    assert_int_equal(call(f, "GET", "/v1/transit/keys/k", "root", NULL, NULL, NULL, &b), 503);
    assert_string_equal(first_error(b), "Vault is sealed");
    json_decref(b);
    assert_int_equal(call(f, "GET", "/v1/nomount", NULL, NULL, NULL, NULL, &b), 503);
    json_decref(b);
    /* public ones answer */
    assert_int_equal(call(f, "GET", "/v1/sys/seal-status", NULL, NULL, NULL, NULL, &b), 200);
    assert_true(json_is_true(json_object_get(b, "sealed")));
    json_decref(b);
    assert_int_equal(call(f, "GET", "/v1/sys/health", NULL, NULL, NULL, NULL, &b), 501);
    json_decref(b);
    f->api = live;
    kms_api_destroy(&fresh);
    kms_storage_close(&st);
    snprintf(path, sizeof(path), "%s/data.mdb", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/lock.mdb", dir);
    unlink(path);
    rmdir(dir);
}

static void test_error_response(void **state)
{
    struct kms_http_resp resp;
    (void)state;
    memset(&resp, 0, sizeof(resp));
    kms_api_error_response(413, "too big", &resp);
    assert_int_equal(resp.status, 413);
    assert_string_equal(resp.body, "{\"errors\":[\"too big\"]}\n");
    assert_int_equal(resp.body_len, strlen(resp.body));
    kms_http_resp_dispose(&resp);
    assert_null(resp.body);
    kms_api_error_response(404, NULL, &resp);
    assert_string_equal(resp.body, "{\"errors\":[]}\n");
    kms_http_resp_dispose(&resp);
    kms_api_error_response(404, "", &resp);
    assert_string_equal(resp.body, "{\"errors\":[]}\n");
    kms_http_resp_dispose(&resp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_auth_before_routing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_routing_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_forms_agree, setup, teardown),
        cmocka_unit_test_setup_teardown(test_params, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_namespaces, setup, teardown),
        cmocka_unit_test(test_durations),
        cmocka_unit_test_setup_teardown(test_request_line_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_patch_and_trailing_slash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_namespace_header, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bodies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_query_params, setup, teardown),
        cmocka_unit_test_setup_teardown(test_captures_and_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tokens_and_acl, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rate_limit, setup_limited, teardown),
        cmocka_unit_test_setup_teardown(test_sealed_before_init, setup, teardown),
        cmocka_unit_test(test_error_response),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
