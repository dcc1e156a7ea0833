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

static int setup(void **state)
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
    ao.version = "test";
    assert_int_equal(kms_engines_create(f->st, &ao, NULL, &f->api, &err), 0);
    assert_int_equal(kms_api_dev_bootstrap(f->api, "root", root, sizeof(root), &err), 0);
    assert_string_equal(root, "root");
    *state = f;
    return 0;
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
    assert_int_equal(json_array_size(w), 2);
    assert_string_equal(json_string_value(json_array_get(w, 1)),
                        "Endpoint ignored these unrecognized parameters: [aa zz]");
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
