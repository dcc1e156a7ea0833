/*
 * test_audit_hook.c - api/audit_hook.c without sockets: requests through kms_api_handle over a
 * real store with an audit device in a temp directory. Two lines per audited request sharing
 * the envelope's request_id, refusals with both lines, unaudited routes, the kmsd fields,
 * kms_ctx_note_version's set semantics, and the controller's internal events.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "api/api_int.h"
#include "engine/engines.h"
#include "audit/audit.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct fixture {
    char dir[64];
    char log[128];
    struct kms_storage *st;
    struct kms_audit *audit;
    struct kms_api *api;
};

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct kms_storage_opts so = {.map_size = 0, .nosync = true, .create = true};
    struct kms_api_opts ao;
    struct kms_audit_device_opts dev;
    struct kms_audit_opts auo;
    struct kms_err err;
    uint8_t seal[32] = {4, 5, 6};
    char root[KMS_API_TOKEN_MAX];
    char store[128];

    snprintf(f->dir, sizeof(f->dir), "/tmp/kms-test-hook-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(store, sizeof(store), "%s/store", f->dir);
    snprintf(f->log, sizeof(f->log), "%s/audit.log", f->dir);
    assert_int_equal(kms_storage_open(store, seal, &so, &f->st, &err), 0);
    kms_audit_device_opts_default(&dev);
    snprintf(dev.path, sizeof(dev.path), "%s", f->log);
    dev.fsync = KMS_AUDIT_FSYNC_NEVER;
    memset(&auo, 0, sizeof(auo));
    auo.devices = &dev;
    auo.ndevices = 1;
    assert_int_equal(kms_audit_create(f->st, &auo, &f->audit, &err), 0);
    memset(&ao, 0, sizeof(ao));
    kms_api_limits_default(&ao.limits);
    ao.version = "test";
    ao.audit = f->audit;
    assert_int_equal(kms_engines_create(f->st, &ao, NULL, &f->api, &err), 0);
    assert_int_equal(kms_api_dev_bootstrap(f->api, "root", root, sizeof(root), &err), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    kms_api_destroy(&f->api);
    kms_audit_destroy(&f->audit);
    kms_storage_close(&f->st);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static int call(struct fixture *f, const char *method, const char *target, const char *token,
                const char *body, json_t **out)
{
    struct kms_http_header h[1] = {{"X-Vault-Token", token}};
    struct kms_http_req req;
    struct kms_http_resp resp;
    memset(&req, 0, sizeof(req));
    req.method = method;
    req.target = target;
    req.headers = h;
    req.nheaders = token != NULL ? 1 : 0;
    req.body = (const uint8_t *)body;
    req.body_len = body ? strlen(body) : 0;
    req.remote_addr = "192.0.2.7";
    req.remote_port = 40000;
    kms_api_handle(f->api, &req, &resp);
    if (out != NULL) {
        *out = resp.body ? json_loadb(resp.body, resp.body_len, 0, NULL) : NULL;
    }
    int status = resp.status;
    kms_http_resp_dispose(&resp);
    return status;
}

/* Every line of the log, parsed. */
static json_t *log_lines(struct fixture *f)
{
    json_t *arr = json_array();
    FILE *fp = fopen(f->log, "r");
    char *line = NULL;
    size_t cap = 0;
    assert_non_null(fp);
    while (getline(&line, &cap, fp) > 0) {
        json_t *l = json_loads(line, 0, NULL);
        assert_non_null(l);
        json_array_append_new(arr, l);
    }
    free(line);
    fclose(fp);
    return arr;
}

static const char *str(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static void test_two_lines_per_request(void **state)
{
    struct fixture *f = *state;
    json_t *b = NULL;
    assert_int_equal(call(f, "POST", "/v1/transit/keys/hk", "root", "{}", NULL), 200);
    assert_int_equal(
        call(f, "POST", "/v1/transit/encrypt/hk", "root", "{\"plaintext\":\"aGk=\"}", &b), 200);
    const char *rid = str(b, "request_id");
    json_t *lines = log_lines(f);
    assert_int_equal(json_array_size(lines), 4);
    json_t *rq = json_array_get(lines, 2), *rs = json_array_get(lines, 3);
    assert_string_equal(str(rq, "type"), "request");
    assert_string_equal(str(rs, "type"), "response");
    assert_string_equal(str(json_object_get(rq, "request"), "id"), rid);
    assert_string_equal(str(json_object_get(rs, "request"), "id"), rid);
    assert_string_equal(str(rs, "op"), "encrypt");
    assert_string_equal(str(rs, "key"), "hk");
    assert_string_equal(str(rs, "subject"), "root");
    assert_string_equal(str(rs, "resource"), "KMSKey");
    assert_int_equal(json_integer_value(json_object_get(rs, "key_version")), 1);
    assert_int_equal(json_integer_value(json_object_get(rs, "status")), 200);
    assert_null(json_object_get(rq, "key_version"));
    assert_string_equal(str(json_object_get(rq, "request"), "remote_address"), "192.0.2.7");
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(rq, "request"), "remote_port")), 40000);
    assert_non_null(strstr(
        str(json_object_get(json_object_get(rq, "request"), "data"), "plaintext"), "hmac-sha256:"));
    json_decref(lines);
    json_decref(b);
}

static void test_refusals_and_unaudited(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(call(f, "GET", "/v1/transit/keys/x", "nope", NULL, NULL), 403);
    assert_int_equal(call(f, "GET", "/v1/sys/health", NULL, NULL, NULL), 200);
    assert_int_equal(call(f, "GET", "/v1/sys/seal-status", NULL, NULL, NULL), 200);
    assert_int_equal(call(f, "POST", "/v1/transit/keys/x", "root", "{bad json", NULL), 400);
    json_t *lines = log_lines(f);
    assert_int_equal(json_array_size(lines), 2); /* only the refused request */
    for (size_t i = 0; i < 2; i++) {
        json_t *l = json_array_get(lines, i);
        assert_string_equal(str(l, "error"), "permission denied");
        assert_true(json_is_false(json_object_get(
            json_object_get(json_object_get(l, "auth"), "policy_results"), "allowed")));
    }
    json_decref(lines);
}

static void test_note_version(void **state)
{
    struct kms_ctx *c = calloc(1, sizeof(*c));
    (void)state;
    kms_ctx_note_version(c, 3);
    kms_ctx_note_version(c, 1);
    kms_ctx_note_version(c, 3);
    kms_ctx_note_version(c, 2);
    assert_int_equal(c->audit.nversions, 3);
    assert_int_equal(c->audit.versions[0], 1);
    assert_int_equal(c->audit.versions[1], 2);
    assert_int_equal(c->audit.versions[2], 3);
    for (uint32_t v = 10; v < 10 + 2 * KMS_CTX_MAX_VERSIONS; v++) {
        kms_ctx_note_version(c, v);
    }
    assert_int_equal(c->audit.nversions, KMS_CTX_MAX_VERSIONS);
    assert_true(c->audit.versions_truncated);
    free(c);
}

static void test_internal_event(void **state)
{
    struct fixture *f = *state;
    struct kms_audit_rec *rec = NULL;
    struct kms_err err;
    const struct kms_api_audit_event ev = {.ns_id = "root",
                                           .ns_path = "",
                                           .path = "transit/keys/o-p-k/rotate",
                                           .operation = "update",
                                           .op = "rotate",
                                           .key = "k",
                                           .project = "p"};
    const uint32_t v[] = {4};
    assert_int_equal(kms_api_audit_internal_begin(f->api, &ev, &rec, &err), 0);
    assert_non_null(rec);
    assert_int_equal(kms_api_audit_internal_end(&rec, &ev, v, 1, NULL, &err), 0);
    assert_null(rec);
    json_t *lines = log_lines(f);
    assert_int_equal(json_array_size(lines), 2);
    json_t *rs = json_array_get(lines, 1);
    assert_string_equal(str(rs, "subject"), "system:kmsd-controller");
    assert_string_equal(str(rs, "op"), "rotate");
    assert_string_equal(str(rs, "project"), "p");
    assert_int_equal(json_integer_value(json_object_get(rs, "key_version")), 4);
    json_decref(lines);
    const char *p = f->log;
    struct kms_audit_verify_result r;
    memset(&r, 0, sizeof(r));
    assert_int_equal(kms_audit_verify_files(&p, 1, &r), 0);
}

static int call_ns(struct fixture *f, const char *method, const char *target, const char *token,
                   const char *ns, const char *body, json_t **out)
{
    struct kms_http_header h[2] = {{"X-Vault-Token", token}, {"X-Vault-Namespace", ns}};
    struct kms_http_req req;
    struct kms_http_resp resp;
    memset(&req, 0, sizeof(req));
    req.method = method;
    req.target = target;
    req.headers = h;
    req.nheaders = 2;
    req.body = (const uint8_t *)body;
    req.body_len = body ? strlen(body) : 0;
    req.remote_addr = "192.0.2.7";
    req.remote_port = 40000;
    kms_api_handle(f->api, &req, &resp);
    if (out != NULL) {
        *out = resp.body ? json_loadb(resp.body, resp.body_len, 0, NULL) : NULL;
    }
    int status = resp.status;
    kms_http_resp_dispose(&resp);
    return status;
}

/* The response line of the last request. */
static json_t *last_response(struct fixture *f)
{
    json_t *lines = log_lines(f);
    json_t *l = json_incref(json_array_get(lines, json_array_size(lines) - 1));
    json_decref(lines);
    assert_string_equal(str(l, "type"), "response");
    return l;
}

static void test_names_per_route(void **state)
{
    struct fixture *f = *state;
    static const struct {
        const char *method, *target, *body;
        int status;
        const char *op, *resource, *key;
    } rows[] = {
        {"POST", "/v1/transit/keys/n1", "{}", 200, "create", "KMSKey", "n1"},
        {"POST", "/v1/transit/keys/n1/rotate", NULL, 200, "rotate", "KMSKey", "n1"},
        {"POST", "/v1/transit/keys/n1/config", "{\"min_decryption_version\":2}", 200,
         "set-min-decryption-version", "KMSKey", "n1"},
        {"POST", "/v1/transit/keys/n1/config", "{\"deletion_allowed\":false}", 200, "config",
         "KMSKey", "n1"},
        {"LIST", "/v1/transit/keys", NULL, 200, "list", "KMSKey", NULL},
        {"GET", "/v1/sys/mounts", NULL, 200, "read", "Mount", NULL},
        {"POST", "/v1/sys/mounts/t2", "{\"type\":\"transit\"}", 204, "update", "Mount", NULL},
        {"POST", "/v1/sys/namespaces/o1", NULL, 200, "update", "Namespace", NULL},
        {"GET", "/v1/nomount/x", NULL, 404, "read", NULL, NULL},
        {"GET", "/v1/transit/encrypt/n1", NULL, 405, "read", "KMSKey", "n1"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        int st = call(f, rows[i].method, rows[i].target, "root", rows[i].body, NULL);
        json_t *rs = last_response(f);
        if (st != rows[i].status || strcmp(str(rs, "op"), rows[i].op) != 0) {
            fprintf(stderr, "%s %s -> %d op=%s resource=%s\n", rows[i].method, rows[i].target, st,
                    str(rs, "op"), str(rs, "resource"));
        }
        assert_int_equal(st, rows[i].status);
        assert_int_equal(json_integer_value(json_object_get(rs, "status")), rows[i].status);
        assert_string_equal(str(rs, "op"), rows[i].op);
        if (rows[i].resource != NULL) {
            assert_string_equal(str(rs, "resource"), rows[i].resource);
        } else {
            assert_null(json_object_get(rs, "resource"));
        }
        if (rows[i].key != NULL) {
            assert_string_equal(str(rs, "key"), rows[i].key);
        } else {
            assert_null(json_object_get(rs, "key"));
        }
        json_decref(rs);
    }
    /* the mount fields of the request line */
    json_t *lines = log_lines(f);
    json_t *rq = json_object_get(json_array_get(lines, 0), "request");
    assert_string_equal(str(rq, "mount_point"), "transit/");
    assert_string_equal(str(rq, "mount_type"), "transit");
    assert_string_equal(str(rq, "mount_class"), "secret");
    assert_true(strncmp(str(rq, "mount_accessor"), "transit_", 8) == 0);
    assert_string_equal(str(rq, "operation"), "update"); /* Vault's name: no existence check */
    assert_string_equal(str(json_object_get(rq, "namespace"), "id"), "root");
    json_decref(lines);
}

static void test_batches_and_warnings(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(call(f, "POST", "/v1/transit/keys/b", "root", "{}", NULL), 200);
    assert_int_equal(call(f, "POST", "/v1/transit/encrypt/b", "root",
                          "{\"batch_input\":[{\"plaintext\":\"aGk=\"},{\"plaintext\":\"aGk=\"}]}",
                          NULL),
                     200);
    json_t *rs = last_response(f);
    /* a batch lists its versions as an array, with the item count */
    json_t *kv = json_object_get(rs, "key_version");
    assert_true(json_is_array(kv));
    assert_int_equal(json_array_size(kv), 1);
    assert_int_equal(json_integer_value(json_object_get(rs, "items")), 2);
    json_decref(rs);
    /* versions touched in one request, ascending */
    char ct1[256];
    json_t *b = NULL;
    assert_int_equal(
        call(f, "POST", "/v1/transit/encrypt/b", "root", "{\"plaintext\":\"aGk=\"}", &b), 200);
    snprintf(ct1, sizeof(ct1), "%s",
             json_string_value(json_object_get(json_object_get(b, "data"), "ciphertext")));
    json_decref(b);
    assert_int_equal(call(f, "POST", "/v1/transit/keys/b/rotate", "root", NULL, NULL), 200);
    char body[512];
    snprintf(body, sizeof(body), "{\"ciphertext\":\"%s\"}", ct1);
    assert_int_equal(call(f, "POST", "/v1/transit/rewrap/b", "root", body, NULL), 200);
    rs = last_response(f);
    kv = json_object_get(rs, "key_version");
    assert_int_equal(json_array_size(kv), 2);
    assert_int_equal(json_integer_value(json_array_get(kv, 0)), 1);
    assert_int_equal(json_integer_value(json_array_get(kv, 1)), 2);
    json_decref(rs);
    /* warnings go into the response line */
    assert_int_equal(call(f, "POST", "/v1/transit/keys/w", "root", "{\"bogus\":1}", NULL), 200);
    rs = last_response(f);
    assert_string_equal(json_string_value(json_array_get(
                            json_object_get(json_object_get(rs, "response"), "warnings"), 0)),
                        "Endpoint ignored these unrecognized parameters: [bogus]");
    json_decref(rs);
}

static void test_denied_token_lines(void **state)
{
    struct fixture *f = *state;
    json_t *b = NULL;
    assert_int_equal(call(f, "POST", "/v1/sys/policy/ro", "root",
                          "{\"policy\":\"path \\\"transit/keys/*\\\" { capabilities = "
                          "[\\\"read\\\"] }\"}",
                          NULL),
                     204);
    assert_int_equal(call(f, "POST", "/v1/auth/token/create", "root",
                          "{\"id\":\"ro-token\",\"policies\":[\"ro\"],\"ttl\":\"1h\","
                          "\"display_name\":\"reader\",\"meta\":{\"team\":\"blue\"}}",
                          &b),
                     200);
    /* the token creation answer's auth block is in its response line */
    json_t *rs = last_response(f);
    assert_non_null(json_object_get(json_object_get(rs, "response"), "auth"));
    json_decref(rs);
    json_decref(b);
    assert_int_equal(call(f, "POST", "/v1/transit/keys/d", "ro-token", "{}", &b), 403);
    json_decref(b);
    json_t *lines = log_lines(f);
    size_t n = json_array_size(lines);
    json_t *rq = json_array_get(lines, n - 2), *rp = json_array_get(lines, n - 1);
    assert_string_equal(str(rq, "type"), "request");
    for (int i = 0; i < 2; i++) {
        json_t *l = i ? rp : rq;
        json_t *auth = json_object_get(l, "auth");
        assert_string_equal(str(l, "error"), "1 error occurred:\n\t* permission denied\n\n");
        assert_true(
            json_is_false(json_object_get(json_object_get(auth, "policy_results"), "allowed")));
        assert_string_equal(str(auth, "display_name"), "token-reader");
        assert_string_equal(str(json_object_get(auth, "metadata"), "team"), "blue");
        assert_int_equal(json_integer_value(json_object_get(auth, "token_ttl")), 3600);
        assert_int_equal(strlen(str(auth, "token_issue_time")), 20);
        assert_string_equal(str(auth, "token_type"), "service");
        assert_string_equal(json_string_value(json_array_get(json_object_get(auth, "policies"), 0)),
                            "default");
        assert_non_null(json_object_get(json_object_get(l, "request"), "client_token_accessor"));
    }
    assert_int_equal(json_integer_value(json_object_get(rp, "status")), 403);
    assert_string_equal(str(rp, "subject"), "token-reader");
    json_decref(lines);
}

static void test_kmskey_versions(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(call(f, "POST", "/v1/sys/namespaces/org", "root", NULL, NULL), 200);
    assert_int_equal(call_ns(f, "POST", "/v1/kms/keys/p/k", "root", "org", "{}", NULL), 200);
    json_t *rs = last_response(f);
    assert_string_equal(str(rs, "op"), "create");
    assert_string_equal(str(rs, "resource"), "KMSKey");
    assert_string_equal(str(rs, "key"), "k");
    assert_string_equal(str(rs, "project"), "p");
    assert_int_equal(json_integer_value(json_object_get(rs, "key_version")), 1);
    assert_string_equal(str(json_object_get(json_object_get(rs, "request"), "namespace"), "path"),
                        "org/");
    assert_string_equal(str(json_object_get(rs, "request"), "mount_type"), "kms");
    json_decref(rs);
    assert_int_equal(call_ns(f, "POST", "/v1/kms/keys/p/k/rotate", "root", "org", NULL, NULL), 200);
    assert_int_equal(call_ns(f, "POST", "/v1/kms/keys/p/k/rotate", "root", "org", NULL, NULL), 200);
    rs = last_response(f);
    assert_string_equal(str(rs, "op"), "rotate");
    assert_int_equal(json_integer_value(json_object_get(rs, "key_version")), 3);
    json_decref(rs);
    assert_int_equal(call_ns(f, "POST", "/v1/kms/keys/p/k/min-decryption-version", "root", "org",
                             "{\"version\":2}", NULL),
                     200);
    rs = last_response(f);
    assert_string_equal(str(rs, "op"), "set-min-decryption-version");
    assert_int_equal(json_integer_value(json_object_get(rs, "key_version")), 2);
    json_decref(rs);
    /* a failure notes no version */
    assert_int_equal(call_ns(f, "GET", "/v1/kms/keys/p/none", "root", "org", NULL, NULL), 404);
    rs = last_response(f);
    assert_null(json_object_get(rs, "key_version"));
    json_decref(rs);
}

static void test_fail_closed(void **state)
{
    struct fixture *f = *state;
    json_t *b = NULL;
    /* the log path turns into a directory: no line can be written */
    assert_int_equal(unlink(f->log), 0);
    assert_int_equal(mkdir(f->log, 0700), 0);
    assert_int_equal(call(f, "POST", "/v1/transit/keys/fc", "root", "{}", &b), 500);
    assert_string_equal(json_string_value(json_array_get(json_object_get(b, "errors"), 0)),
                        "internal error");
    json_decref(b);
    /* a refusal cannot leave without its lines either */
    assert_int_equal(call(f, "GET", "/v1/transit/keys/fc", "nope", NULL, &b), 500);
    json_decref(b);
    /* unaudited routes still answer */
    assert_int_equal(call(f, "GET", "/v1/sys/health", NULL, NULL, NULL), 200);
    /* the log is back: the refused create never ran */
    assert_int_equal(rmdir(f->log), 0);
    assert_int_equal(call(f, "GET", "/v1/transit/keys/fc", "root", NULL, NULL), 404);
    json_t *lines = log_lines(f);
    assert_int_equal(json_array_size(lines), 2);
    json_decref(lines);
}

static void test_internal_event_variants(void **state)
{
    struct fixture *f = *state;
    struct kms_audit_rec *rec = NULL;
    struct kms_err err;
    const struct kms_api_audit_event ev = {.ns_id = "root",
                                           .ns_path = "org/",
                                           .path = "transit/keys/o-p-k",
                                           .operation = "delete",
                                           .op = "delete",
                                           .key = "o-p-k",
                                           .project = NULL};
    const uint32_t v[] = {1, 2, 3};
    assert_int_equal(kms_api_audit_internal_begin(f->api, &ev, &rec, &err), 0);
    assert_int_equal(kms_api_audit_internal_end(&rec, &ev, v, 3, "cannot destroy", &err), 0);
    json_t *lines = log_lines(f);
    json_t *rq = json_array_get(lines, 0), *rs = json_array_get(lines, 1);
    assert_string_equal(str(json_object_get(json_object_get(rq, "request"), "namespace"), "path"),
                        "org/");
    assert_null(json_object_get(rs, "project"));
    assert_int_equal(json_array_size(json_object_get(rs, "key_version")), 3);
    assert_int_equal(json_integer_value(json_object_get(rs, "status")), 500);
    assert_string_equal(str(rs, "error"), "cannot destroy");
    json_decref(lines);
    /* ending nothing is a no-op */
    assert_null(rec);
    assert_int_equal(kms_api_audit_internal_end(&rec, &ev, NULL, 0, NULL, &err), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_two_lines_per_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals_and_unaudited, setup, teardown),
        cmocka_unit_test(test_note_version),
        cmocka_unit_test_setup_teardown(test_internal_event, setup, teardown),
        cmocka_unit_test_setup_teardown(test_names_per_route, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batches_and_warnings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_denied_token_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kmskey_versions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fail_closed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_internal_event_variants, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
