/*
 * test_envelope_ids.c - every response carries the request id of its audit lines, warnings-
 * only answers included (they used to get a fresh id found nowhere in the audit log).
 */
#include "tests/engine/engine_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void test_warnings_only_reply_has_audited_request_id(void **state)
{
    struct kt *t = *state;
    json_decref(
        kt_ok(t, 204, "POST", "/v1/sys/auth/kubernetes", NULL, "{\"type\":\"kubernetes\"}"));
    json_t *b = kt_ok(t, 200, "POST", "/v1/auth/kubernetes/role/r", NULL,
                      "{\"bound_service_account_names\":[\"a\"],"
                      "\"bound_service_account_namespaces\":[\"b\"],\"no_such_field\":1}");
    assert_non_null(json_object_get(b, "warnings"));
    assert_true(json_array_size(json_object_get(b, "warnings")) > 0);
    assert_true(json_is_null(json_object_get(b, "data")));
    const char *rid = json_string_value(json_object_get(b, "request_id"));
    assert_non_null(rid);
    assert_int_equal(strlen(rid), 36);
    assert_true(kt_audit_contains(t, rid));
    json_decref(b);
}

static void test_plain_reply_has_audited_request_id(void **state)
{
    struct kt *t = *state;
    json_t *b =
        kt_ok(t, 200, "POST", "/v1/transit/encrypt/k", NULL, "{\"plaintext\":\"aGVsbG8=\"}");
    const char *rid = json_string_value(json_object_get(b, "request_id"));
    assert_non_null(rid);
    assert_true(kt_audit_contains(t, rid));
    json_decref(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_warnings_only_reply_has_audited_request_id,
                                        kt_setup_audited, kt_teardown),
        cmocka_unit_test_setup_teardown(test_plain_reply_has_audited_request_id, kt_setup_audited,
                                        kt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
