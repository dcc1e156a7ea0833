/*
 * test_restricted.c - what a namespace may not reach: server-wide sys endpoints are root-only
 * (400 "operation unavailable in namespaces", also for a namespace admin with path "*" sudo),
 * an unknown X-Vault-Namespace is only revealed to a valid token, and response wrapping and
 * path help are refused instead of silently ignored.
 */
#include "tests/engine/engine_fixture.h"

#include <stdio.h>
#include <string.h>

/* An organization with an admin token: path "*" with every capability and sudo. */
static void org_admin(struct kt *t, char *token, size_t n)
{
    json_t *b = NULL;
    int st = kt_call(t, "POST", "/v1/sys/namespaces/org1", "root", NULL, "{}", &b);
    assert_true(st == 200 || st == 204);
    json_decref(b);
    json_decref(kt_ok(t, 204, "POST", "/v1/sys/policies/acl/admin", "org1",
                      "{\"policy\":\"path \\\"*\\\" { capabilities = [\\\"create\\\", "
                      "\\\"read\\\", \\\"update\\\", \\\"delete\\\", \\\"list\\\", "
                      "\\\"sudo\\\"] }\"}"));
    b = kt_ok(t, 200, "POST", "/v1/auth/token/create", "org1", "{\"policies\":[\"admin\"]}");
    snprintf(token, n, "%s",
             json_string_value(json_object_get(json_object_get(b, "auth"), "client_token")));
    json_decref(b);
}

static void test_server_wide_endpoints_are_root_only(void **state)
{
    struct kt *t = *state;
    char tok[KMS_API_TOKEN_MAX];
    org_admin(t, tok, sizeof(tok));
    static const struct {
        const char *method, *path, *body;
    } cases[] = {
        {"GET", "/v1/sys/audit", NULL},
        {"GET", "/v1/sys/audit/events", NULL},
        {"POST", "/v1/sys/audit-hash/file", "{\"input\":\"x\"}"},
        {"PUT", "/v1/sys/audit/file", "{\"type\":\"file\"}"},
        {"DELETE", "/v1/sys/audit/file", NULL},
        {"GET", "/v1/sys/metrics", NULL},
        {"GET", "/v1/sys/health", NULL},
        {"GET", "/v1/sys/init", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        /* the header form and the path form */
        const char *tokens[] = {tok, "root"};
        for (size_t k = 0; k < 2; k++) {
            json_t *b = NULL;
            int st =
                kt_call(t, cases[i].method, cases[i].path, tokens[k], "org1", cases[i].body, &b);
            if (st != 400 || strcmp(kt_err(b), "operation unavailable in namespaces") != 0) {
                fprintf(stderr, "%s %s (ns org1): %d %s\n", cases[i].method, cases[i].path, st,
                        kt_err(b));
            }
            assert_int_equal(st, 400);
            assert_string_equal(kt_err(b), "operation unavailable in namespaces");
            json_decref(b);
        }
        char path[128];
        snprintf(path, sizeof(path), "/v1/org1/%s", cases[i].path + 4);
        json_t *b = NULL;
        assert_int_equal(kt_call(t, cases[i].method, path, tok, NULL, cases[i].body, &b), 400);
        json_decref(b);
    }
    /* in the root namespace they still answer */
    json_decref(kt_ok(t, 200, "GET", "/v1/sys/audit", NULL, NULL));
    assert_int_equal(kt_call(t, "GET", "/v1/sys/health", NULL, NULL, NULL, NULL), 200);
    /* what an organization does reach is its own */
    json_decref(kt_ok(t, 200, "GET", "/v1/sys/mounts", "org1", NULL));
}

static void test_unknown_namespace_needs_a_token_to_learn_it(void **state)
{
    struct kt *t = *state;
    json_t *b = NULL;
    /* an existing and a missing namespace look the same without a valid token */
    assert_int_equal(kt_call(t, "POST", "/v1/sys/namespaces/real", "root", NULL, "{}", NULL), 200);
    static const char *const nss[] = {"real", "no-such-org"};
    static const char *const toks[] = {NULL, "s.not-a-token"};
    for (size_t i = 0; i < 2; i++) {
        for (size_t k = 0; k < 2; k++) {
            assert_int_equal(kt_call(t, "GET", "/v1/transit/keys/k", toks[k], nss[i], NULL, &b),
                             403);
            assert_string_equal(kt_err(b), "permission denied");
            json_decref(b);
        }
    }
    /* a valid token learns that it does not exist */
    assert_int_equal(kt_call(t, "GET", "/v1/transit/keys/k", "root", "no-such-org", NULL, &b), 404);
    assert_string_equal(kt_err(b), "namespace not found");
    json_decref(b);
}

static void test_wrap_ttl_is_refused(void **state)
{
    struct kt *t = *state;
    struct kms_http_header h[2] = {{"X-Vault-Token", "root"}, {"X-Vault-Wrap-TTL", "60s"}};
    struct kms_http_req req;
    struct kms_http_resp resp;
    memset(&req, 0, sizeof(req));
    req.method = "POST";
    req.target = "/v1/transit/datakey/plaintext/k";
    req.headers = h;
    req.nheaders = 2;
    req.body = (const uint8_t *)"{}";
    req.body_len = 2;
    req.remote_addr = "127.0.0.1";
    kms_api_handle(t->api, &req, &resp);
    assert_int_equal(resp.status, 400);
    assert_non_null(strstr(resp.body, "X-Vault-Wrap-TTL"));
    assert_null(strstr(resp.body, "plaintext\":"));
    kms_http_resp_dispose(&resp);
    /* and no key was created by the refused request */
    json_decref(kt_ok(t, 404, "GET", "/v1/transit/keys/k", NULL, NULL));
}

/* help=<not empty> or the HELP method asks OpenBao for the path's help text and runs nothing;
 * kmsd refuses it with 400 and runs nothing either (before, the rotate and the delete ran). */
static void test_path_help_is_refused_and_runs_nothing(void **state)
{
    struct kt *t = *state;
    json_t *b = NULL;
    json_decref(kt_ok(t, 200, "POST", "/v1/transit/keys/k", NULL, "{}"));
    json_decref(
        kt_ok(t, 200, "POST", "/v1/transit/keys/k/config", NULL, "{\"deletion_allowed\":true}"));
    static const struct {
        const char *method, *target;
    } asks[] = {
        {"POST", "/v1/transit/keys/k/rotate?help=1"},
        {"DELETE", "/v1/transit/keys/k?help=1"},
        {"GET", "/v1/transit/keys/k?help=true"},
        {"DELETE", "/v1/transit/keys/k?help=1&help="}, /* Go's Get: the first value */
        {"HELP", "/v1/transit/keys/k"},
    };
    for (size_t i = 0; i < sizeof(asks) / sizeof(asks[0]); i++) {
        assert_int_equal(kt_call(t, asks[i].method, asks[i].target, "root", NULL, NULL, &b), 400);
        const char *msg = json_string_value(json_array_get(json_object_get(b, "errors"), 0));
        assert_non_null(msg);
        assert_non_null(strstr(msg, "path help"));
        json_decref(b);
        b = NULL;
    }
    /* nothing ran: one version, the key still there; an empty help= is no request for help
     * and, as in OpenBao, not an unknown parameter either */
    b = kt_ok(t, 200, "GET", "/v1/transit/keys/k?help=", NULL, NULL);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(b, "data"), "latest_version")), 1);
    assert_true(json_is_null(json_object_get(b, "warnings")) ||
                json_object_get(b, "warnings") == NULL);
    json_decref(b);
    b = kt_ok(t, 200, "GET", "/v1/transit/keys?list=true&help=&help=1", NULL, NULL);
    assert_true(json_is_null(json_object_get(b, "warnings")) ||
                json_object_get(b, "warnings") == NULL);
    json_decref(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_server_wide_endpoints_are_root_only, kt_setup_audited,
                                        kt_teardown),
        cmocka_unit_test_setup_teardown(test_unknown_namespace_needs_a_token_to_learn_it, kt_setup,
                                        kt_teardown),
        cmocka_unit_test_setup_teardown(test_wrap_ttl_is_refused, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_path_help_is_refused_and_runs_nothing, kt_setup,
                                        kt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
