/*
 * test_remount.c - sys/mounts/<path>/tune values read back as written (and after a restart),
 * with OpenBao's validation errors; sys/remount moves a transit mount inside its namespace
 * (keys keep working under the new path, the old one is gone, the ACL and the audit log see
 * the new path), its status under sys/remount/status/<id>, auth mounts (their tokens are
 * revoked), and every refusal, cross-namespace moves included.
 */
#include "tests/engine/engine_fixture.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void err_is(json_t *b, const char *msg)
{
    if (strcmp(kt_err(b), msg) != 0) {
        fprintf(stderr, "error \"%s\", want \"%s\"\n", kt_err(b), msg);
    }
    assert_string_equal(kt_err(b), msg);
    json_decref(b);
}

static void test_tune_round_trip(void **state)
{
    struct kt *t = *state;
    json_decref(kt_ok(t, 204, "POST", "/v1/sys/mounts/t2", NULL,
                      "{\"type\":\"transit\",\"description\":\"first\"}"));
    json_t *b = kt_ok(t, 200, "GET", "/v1/sys/mounts/t2/tune", NULL, NULL);
    assert_int_equal(json_integer_value(kt_data(b, "default_lease_ttl")), 2764800);
    assert_int_equal(json_integer_value(kt_data(b, "max_lease_ttl")), 2764800);
    assert_null(kt_data(b, "options"));
    assert_null(kt_data(b, "listing_visibility"));
    json_decref(b);

    /* a first version option counts as an upgrade from 0, as in OpenBao */
    json_decref(kt_ok(t, 200, "POST", "/v1/sys/mounts/t2/tune", NULL,
                      "{\"default_lease_ttl\":\"1h\",\"max_lease_ttl\":7200,"
                      "\"description\":\"second\",\"listing_visibility\":\"hidden\","
                      "\"audit_non_hmac_request_keys\":\"plaintext,context\","
                      "\"passthrough_request_headers\":[\"X-Req\"],"
                      "\"allowed_response_headers\":[\"X-Resp\"],"
                      "\"options\":{\"team\":\"blue\",\"version\":\"1\"}}"));
    for (int round = 0; round < 2; round++) {
        b = kt_ok(t, 200, "GET", "/v1/sys/mounts/t2/tune", NULL, NULL);
        assert_int_equal(json_integer_value(kt_data(b, "default_lease_ttl")), 3600);
        assert_int_equal(json_integer_value(kt_data(b, "max_lease_ttl")), 7200);
        assert_string_equal(json_string_value(kt_data(b, "description")), "second");
        assert_string_equal(json_string_value(kt_data(b, "listing_visibility")), "hidden");
        json_t *keys = kt_data(b, "audit_non_hmac_request_keys");
        assert_int_equal(json_array_size(keys), 2);
        assert_string_equal(json_string_value(json_array_get(keys, 1)), "context");
        assert_string_equal(
            json_string_value(json_array_get(kt_data(b, "passthrough_request_headers"), 0)),
            "X-Req");
        assert_string_equal(
            json_string_value(json_array_get(kt_data(b, "allowed_response_headers"), 0)), "X-Resp");
        assert_string_equal(json_string_value(json_object_get(kt_data(b, "options"), "team")),
                            "blue");
        json_decref(b);
        /* sys/mounts shows the raw values in config, the options and the description */
        b = kt_ok(t, 200, "GET", "/v1/sys/mounts/t2", NULL, NULL);
        json_t *cfg = kt_data(b, "config");
        assert_int_equal(json_integer_value(json_object_get(cfg, "default_lease_ttl")), 3600);
        assert_int_equal(json_integer_value(json_object_get(cfg, "max_lease_ttl")), 7200);
        assert_string_equal(json_string_value(kt_data(b, "description")), "second");
        assert_string_equal(json_string_value(json_object_get(kt_data(b, "options"), "version")),
                            "1");
        json_decref(b);
        kt_reopen(t); /* stored in the mount record: survives a restart */
    }
    b = kt_ok(t, 200, "GET", "/v1/sys/mounts", NULL, NULL);
    json_t *listed = json_object_get(kt_data(b, "t2/"), "config");
    assert_int_equal(json_integer_value(json_object_get(listed, "max_lease_ttl")), 7200);
    json_decref(b);

    /* "" keeps, "system" resets; an empty option value removes the key; version 1 -> 2 warns */
    b = kt_ok(t, 200, "POST", "/v1/sys/mounts/t2/tune", NULL,
              "{\"default_lease_ttl\":\"\",\"max_lease_ttl\":\"system\","
              "\"options\":{\"team\":\"\",\"version\":\"2\"}}");
    assert_string_equal(json_string_value(json_array_get(json_object_get(b, "warnings"), 0)),
                        "Upgrading mount from version 1 to version 2. This mount will be "
                        "unavailable for a brief period and will resume service shortly.");
    json_decref(b);
    b = kt_ok(t, 200, "GET", "/v1/sys/mounts/t2/tune", NULL, NULL);
    assert_int_equal(json_integer_value(kt_data(b, "default_lease_ttl")), 3600);
    assert_int_equal(json_integer_value(kt_data(b, "max_lease_ttl")), 2764800);
    assert_null(json_object_get(kt_data(b, "options"), "team"));
    json_decref(b);
}

static void test_tune_refusals(void **state)
{
    struct kt *t = *state;
    static const struct {
        const char *body;
        const char *msg;
    } refused[] = {
        {"{\"default_lease_ttl\":\"2h\",\"max_lease_ttl\":\"1h\"}",
         "backend max lease TTL of 3600 would be less than backend default lease TTL of 7200"},
        {"{\"default_lease_ttl\":\"soon\"}", "time: invalid duration \"soon\""},
        {"{\"listing_visibility\":\"public\"}", "invalid listing_visibility public"},
        {"{\"token_type\":\"service\"}", "'token_type' can only be modified on auth mounts"},
        {"{\"options\":{\"version\":\"3\"}}", "invalid version provided: 3"},
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        err_is(kt_ok(t, 400, "POST", "/v1/sys/mounts/transit/tune", NULL, refused[i].body),
               refused[i].msg);
    }
    json_decref(kt_ok(t, 200, "POST", "/v1/sys/mounts/transit/tune", NULL,
                      "{\"options\":{\"version\":2}}"));
    err_is(kt_ok(t, 400, "POST", "/v1/sys/mounts/transit/tune", NULL,
                 "{\"options\":{\"version\":\"1\"}}"),
           "cannot downgrade mount from version 2");
    err_is(kt_ok(t, 400, "POST", "/v1/sys/mounts/nope/tune", NULL, "{}"),
           "tune of path \"nope/\" failed: no mount entry found");
    /* auth mounts tune through sys/mounts/auth/<path>/tune, token_type included */
    json_decref(kt_ok(t, 204, "POST", "/v1/sys/auth/k8s", NULL, "{\"type\":\"kubernetes\"}"));
    json_decref(kt_ok(t, 204, "POST", "/v1/sys/mounts/auth/k8s/tune", NULL,
                      "{\"token_type\":\"service\",\"max_lease_ttl\":\"10m\"}"));
    json_t *b = kt_ok(t, 200, "GET", "/v1/sys/mounts/auth/k8s/tune", NULL, NULL);
    assert_string_equal(json_string_value(kt_data(b, "token_type")), "service");
    assert_int_equal(json_integer_value(kt_data(b, "max_lease_ttl")), 600);
    json_decref(b);
    err_is(kt_ok(t, 400, "POST", "/v1/sys/mounts/auth/k8s/tune", NULL, "{\"token_type\":\"x\"}"),
           "invalid value for 'token_type'");
}

static void test_remount_transit(void **state)
{
    struct kt *t = *state;
    int st = kt_call(t, "POST", "/v1/transit/keys/k1", "root", NULL, NULL, NULL);
    assert_true(st == 200 || st == 204);
    json_decref(kt_ok(t, 204, "POST", "/v1/sys/mounts/transit/tune", NULL,
                      "{\"description\":\"moved\",\"max_lease_ttl\":99}"));
    json_t *b =
        kt_ok(t, 200, "POST", "/v1/transit/encrypt/k1", NULL, "{\"plaintext\":\"aGVsbG8=\"}");
    char ct[256];
    snprintf(ct, sizeof(ct), "%s", json_string_value(kt_data(b, "ciphertext")));
    json_decref(b);
    b = kt_ok(t, 200, "GET", "/v1/sys/mounts/transit", NULL, NULL);
    char uuid[40];
    snprintf(uuid, sizeof(uuid), "%s", json_string_value(kt_data(b, "uuid")));
    json_decref(b);

    b = kt_ok(t, 200, "POST", "/v1/sys/remount", NULL,
              "{\"from\":\"transit\",\"to\":\"secure/transit\"}");
    const char *id = json_string_value(kt_data(b, "migration_id"));
    assert_non_null(id);
    assert_int_equal(strlen(id), 36);
    char target[128];
    snprintf(target, sizeof(target), "/v1/sys/remount/status/%s", id);
    json_decref(b);
    b = kt_ok(t, 200, "GET", target, NULL, NULL);
    json_t *info = kt_data(b, "migration_info");
    assert_string_equal(json_string_value(json_object_get(info, "source_mount")), "transit/");
    assert_string_equal(json_string_value(json_object_get(info, "target_mount")),
                        "secure/transit/");
    assert_string_equal(json_string_value(json_object_get(info, "status")), "success");
    json_decref(b);
    json_decref(kt_ok(t, 404, "GET", "/v1/sys/remount/status/nope", NULL, NULL));

    /* the same mount (uuid, tuning) under the new path; its keys decrypt what they encrypted */
    b = kt_ok(t, 200, "GET", "/v1/sys/mounts/secure/transit", NULL, NULL);
    assert_string_equal(json_string_value(kt_data(b, "uuid")), uuid);
    assert_string_equal(json_string_value(kt_data(b, "description")), "moved");
    json_decref(b);
    b = kt_ok(t, 200, "GET", "/v1/sys/mounts/secure/transit/tune", NULL, NULL);
    assert_int_equal(json_integer_value(kt_data(b, "max_lease_ttl")), 99);
    json_decref(b);
    char body[400];
    snprintf(body, sizeof(body), "{\"ciphertext\":\"%s\"}", ct);
    b = kt_ok(t, 200, "POST", "/v1/secure/transit/decrypt/k1", NULL, body);
    assert_string_equal(json_string_value(kt_data(b, "plaintext")), "aGVsbG8=");
    json_decref(b);
    json_decref(kt_ok(t, 404, "POST", "/v1/transit/decrypt/k1", NULL, body));
    b = kt_ok(t, 400, "GET", "/v1/sys/mounts/transit", NULL, NULL);
    json_decref(b);
    assert_true(kt_audit_contains(t, "secure/transit/decrypt/k1"));

    /* the ACL sees the new path only */
    json_decref(kt_ok(t, 204, "POST", "/v1/sys/policy/dec", NULL,
                      "{\"policy\":\"path \\\"secure/transit/decrypt/*\\\" { capabilities = "
                      "[\\\"update\\\"] }\"}"));
    b = kt_ok(t, 200, "POST", "/v1/auth/token/create", NULL, "{\"policies\":[\"dec\"]}");
    char tok[KMS_TOKEN_MAX_LEN];
    snprintf(tok, sizeof(tok), "%s",
             json_string_value(json_object_get(json_object_get(b, "auth"), "client_token")));
    json_decref(b);
    assert_int_equal(kt_call(t, "POST", "/v1/secure/transit/decrypt/k1", tok, NULL, body, NULL),
                     200);

    /* and it stays there across a restart; the old path can be mounted afresh */
    kt_reopen(t);
    b = kt_ok(t, 200, "POST", "/v1/secure/transit/decrypt/k1", NULL, body);
    json_decref(b);
    json_decref(kt_ok(t, 204, "POST", "/v1/sys/mounts/transit", NULL, "{\"type\":\"transit\"}"));
    json_decref(kt_ok(t, 404, "GET", "/v1/transit/keys/k1", NULL, NULL));
}

static void test_remount_refusals_and_auth(void **state)
{
    struct kt *t = *state;
    json_decref(kt_ok(t, 204, "POST", "/v1/sys/mounts/other", NULL, "{\"type\":\"transit\"}"));
    static const struct {
        const char *body;
        const char *msg;
    } refused[] = {
        {"{\"from\":\"transit\"}", "both 'from' and 'to' path must be specified as a string"},
        {"{\"from\":\" transit\",\"to\":\"x\"}", "'from' path cannot contain trailing whitespace"},
        {"{\"from\":\"transit\",\"to\":\"x \"}", "'to' path cannot contain trailing whitespace"},
        {"{\"from\":\"nope\",\"to\":\"x\"}", "no matching mount at \"nope/\""},
        {"{\"from\":\"transit\",\"to\":\"other\"}", "path already in use at \"other/\""},
        {"{\"from\":\"transit\",\"to\":\"other/sub\"}", "path already in use at \"other/\""},
        {"{\"from\":\"transit\",\"to\":\"sys/x\"}", "cannot remount to destination sys/x/"},
        {"{\"from\":\"sys\",\"to\":\"x\"}", "cannot remount \"sys/\""},
        {"{\"from\":\"auth/k8s\",\"to\":\"k8s\"}",
         "cannot remount auth mount to non-auth mount \"k8s/\""},
        {"{\"from\":\"auth/token\",\"to\":\"auth/t2\"}", "cannot remount \"auth/token/\""},
        {"{\"from\":\"auth/k8s\",\"to\":\"auth/token\"}",
         "cannot remount to destination \"auth/token/\""},
        {"{\"from\":\"transit\",\"to\":\"a/../b\"}", "path cannot contain '..'"},
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        err_is(kt_ok(t, 400, "POST", "/v1/sys/remount", NULL, refused[i].body), refused[i].msg);
    }
    /* cross-namespace moves are refused, from either side */
    json_decref(kt_ok(t, 200, "POST", "/v1/sys/namespaces/org1", NULL, NULL));
    json_decref(kt_ok(t, 204, "POST", "/v1/sys/mounts/transit", "org1", "{\"type\":\"transit\"}"));
    err_is(kt_ok(t, 400, "POST", "/v1/sys/remount", NULL,
                 "{\"from\":\"org1/transit\",\"to\":\"moved\"}"),
           "kmsd cannot move a mount between namespaces (org1/transit/ to moved/): remount "
           "within one namespace");
    err_is(kt_ok(t, 400, "POST", "/v1/sys/remount", NULL,
                 "{\"from\":\"transit\",\"to\":\"org1/moved\"}"),
           "kmsd cannot move a mount between namespaces (transit/ to org1/moved/): remount "
           "within one namespace");
    /* inside a namespace: its own mounts, by their namespace-relative paths */
    json_decref(kt_ok(t, 200, "POST", "/v1/sys/remount", "org1",
                      "{\"from\":\"transit\",\"to\":\"kms-transit\"}"));
    json_decref(kt_ok(t, 200, "GET", "/v1/sys/mounts/kms-transit", "org1", NULL));
    json_decref(kt_ok(t, 200, "GET", "/v1/sys/mounts/transit", NULL, NULL));

    /* sudo is required (sys/remount is root-protected) */
    json_decref(kt_ok(t, 204, "POST", "/v1/sys/policy/mover", NULL,
                      "{\"policy\":\"path \\\"sys/remount\\\" { capabilities = [\\\"update\\\"] "
                      "}\"}"));
    json_t *b = kt_ok(t, 200, "POST", "/v1/auth/token/create", NULL, "{\"policies\":[\"mover\"]}");
    char tok[KMS_TOKEN_MAX_LEN];
    snprintf(tok, sizeof(tok), "%s",
             json_string_value(json_object_get(json_object_get(b, "auth"), "client_token")));
    json_decref(b);
    assert_int_equal(kt_call(t, "POST", "/v1/sys/remount", tok, NULL,
                             "{\"from\":\"other\",\"to\":\"other2\"}", NULL),
                     403);

    /* an auth method moves with its config and roles; tokens it issued are revoked */
    json_decref(kt_ok(t, 204, "POST", "/v1/sys/auth/k8s", NULL, "{\"type\":\"kubernetes\"}"));
    json_decref(kt_ok(t, 204, "POST", "/v1/auth/k8s/role/r", NULL,
                      "{\"bound_service_account_names\":\"a\","
                      "\"bound_service_account_namespaces\":\"n\",\"audience\":\"x\"}"));
    json_decref(kt_ok(t, 200, "POST", "/v1/sys/remount", NULL,
                      "{\"from\":\"auth/k8s\",\"to\":\"auth/k8s-new\"}"));
    b = kt_ok(t, 200, "GET", "/v1/auth/k8s-new/role/r", NULL, NULL);
    json_decref(b);
    json_decref(kt_ok(t, 200, "GET", "/v1/sys/auth/k8s-new", NULL, NULL));
    json_decref(kt_ok(t, 400, "GET", "/v1/sys/auth/k8s", NULL, NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_tune_round_trip, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_tune_refusals, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_remount_transit, kt_setup_audited, kt_teardown),
        cmocka_unit_test_setup_teardown(test_remount_refusals_and_auth, kt_setup, kt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
