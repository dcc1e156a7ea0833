/*
 * test_hash.c - what never reaches the audit log in clear: the HMAC (Vault's vectors with salt
 * "foo", and agreement with the generic kms_hmac for every length around the block size), the
 * walker over request/response data (strings hashed at any depth, map keys, numbers, bools,
 * null and RFC 3339 times kept, the input left untouched), and the RFC 3339 test itself.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "audit/audit.h"

#include <stdlib.h>
#include <string.h>

static void test_vault_vectors(void **state)
{
    char h[KMS_AUDIT_HMAC_LEN + 1];
    (void)state;
    assert_int_equal(kms_audit_hmac("foo", "foo", 3, h), 0);
    assert_string_equal(h, "hmac-sha256:08ba357e274f528065766c770a639abf6809b39ccfd37c2a3157c7f5"
                           "1954da0a");
    assert_int_equal(kms_audit_hmac("foo", "bar", 3, h), 0);
    assert_string_equal(h, "hmac-sha256:f9320baf0249169e73850cd6156ded0106e2bb6ad8cab01b7bbbebe6"
                           "d1065317");
}

static void test_matches_generic_hmac(void **state)
{
    static const size_t lens[] = {0, 1, 31, 63, 64, 65, 127, 1023, 1024, 1025, 70000};
    static const char *const salts[] = {"", "foo", "0b5f6d1c-4e1e-4c43-9f8b-0c4a3f5e2d11",
                                        ("a-salt-longer-than-one-sha256-block-of-sixty-four-bytes-"
                                         "xxxxxxxxxxxxxxxx")};
    uint8_t *msg = malloc(70000);
    (void)state;
    assert_non_null(msg);
    for (size_t i = 0; i < 70000; i++) {
        msg[i] = (uint8_t)(i * 31 + 7);
    }
    for (size_t s = 0; s < sizeof(salts) / sizeof(salts[0]); s++) {
        for (size_t l = 0; l < sizeof(lens) / sizeof(lens[0]); l++) {
            char mine[KMS_AUDIT_HMAC_LEN + 1];
            char want[KMS_AUDIT_HMAC_LEN + 1];
            uint8_t mac[32];
            assert_int_equal(kms_audit_hmac(salts[s], msg, lens[l], mine), 0);
            assert_int_equal(
                kms_hmac(KMS_HASH_SHA2_256, salts[s], strlen(salts[s]), msg, lens[l], mac), 0);
            memcpy(want, "hmac-sha256:", 12);
            kms_hex_encode(mac, sizeof(mac), want + 12);
            assert_string_equal(mine, want);
        }
    }
    free(msg);
}

static void test_walker(void **state)
{
    (void)state;
    const char *in =
        "{\"plaintext\":\"aGVsbG8=\",\"n\":42,\"f\":1.5,\"b\":true,\"z\":null,"
        "\"t\":\"2024-05-01T10:00:00Z\",\"tn\":\"2024-05-01T10:00:00.123456789+02:00\","
        "\"notime\":\"2024-05-01 10:00:00\","
        "\"batch_input\":[{\"plaintext\":\"YQ==\",\"context\":\"Yw==\"},\"s\",7],"
        "\"nested\":{\"deep\":{\"list\":[\"x\",[\"y\"]]}},\"empty\":\"\"}";
    json_t *v = json_loads(in, 0, NULL);
    assert_non_null(v);
    char *before = json_dumps(v, JSON_SORT_KEYS | JSON_COMPACT);
    json_t *h = kms_audit_hash_value("foo", v);
    assert_non_null(h);
    char *after = json_dumps(v, JSON_SORT_KEYS | JSON_COMPACT);
    assert_string_equal(before, after); /* the input is not modified */

    char x[KMS_AUDIT_HMAC_LEN + 1];
#define HASHED(ptr, plain)                                                                         \
    do {                                                                                           \
        assert_int_equal(kms_audit_hmac("foo", plain, strlen(plain), x), 0);                       \
        assert_string_equal(json_string_value(ptr), x);                                            \
    } while (0)
    HASHED(json_object_get(h, "plaintext"), "aGVsbG8=");
    HASHED(json_object_get(h, "notime"), "2024-05-01 10:00:00");
    HASHED(json_object_get(h, "empty"), "");
    json_t *bi = json_object_get(h, "batch_input");
    HASHED(json_object_get(json_array_get(bi, 0), "plaintext"), "YQ==");
    HASHED(json_object_get(json_array_get(bi, 0), "context"), "Yw==");
    HASHED(json_array_get(bi, 1), "s");
    assert_int_equal(json_integer_value(json_array_get(bi, 2)), 7);
    json_t *list = json_object_get(json_object_get(json_object_get(h, "nested"), "deep"), "list");
    HASHED(json_array_get(list, 0), "x");
    HASHED(json_array_get(json_array_get(list, 1), 0), "y");
    /* kept in clear */
    assert_int_equal(json_integer_value(json_object_get(h, "n")), 42);
    assert_true(json_real_value(json_object_get(h, "f")) == 1.5);
    assert_true(json_is_true(json_object_get(h, "b")));
    assert_true(json_is_null(json_object_get(h, "z")));
    assert_string_equal(json_string_value(json_object_get(h, "t")), "2024-05-01T10:00:00Z");
    assert_string_equal(json_string_value(json_object_get(h, "tn")),
                        "2024-05-01T10:00:00.123456789+02:00");
    assert_int_equal(json_object_size(h), json_object_size(v));
#undef HASHED
    free(before);
    free(after);
    json_decref(v);
    json_decref(h);
}

static void test_rfc3339(void **state)
{
    static const char *const good[] = {
        "2024-05-01T10:00:00Z",
        "2024-02-29T23:59:59Z",
        "2024-05-01T10:00:00.1Z",
        "2024-05-01T10:00:00+05:30",
        "2000-01-01T00:00:00-00:00",
        "2024-05-01T10:00:00.123456789123Z", /* Go accepts more than 9 fraction digits */
    };
    static const char *const bad[] = {
        "",
        "2024-05-01",
        "2024-05-01 10:00:00Z",
        "2024-05-01t10:00:00Z",
        "2024-05-01T10:00:00",
        "2023-02-29T10:00:00Z",
        "2024-13-01T10:00:00Z",
        "2024-04-31T10:00:00Z",
        "2024-05-01T24:00:00Z",
        "2024-05-01T10:60:00Z",
        "2024-05-01T10:00:60Z",
        "2024-05-01T10:00:00.Z",
        "2024-05-01T10:00:00+0530",
        "2024-05-01T10:00:00Zjunk",
        "aGVsbG8=",
        "vault:v1:abc",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        if (!kms_audit_is_rfc3339(good[i], strlen(good[i]))) {
            fail_msg("should be RFC 3339: %s", good[i]);
        }
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (kms_audit_is_rfc3339(bad[i], strlen(bad[i]))) {
            fail_msg("should not be RFC 3339: %s", bad[i]);
        }
    }
    int64_t sec;
    int32_t nsec;
    assert_int_equal(kms_audit_rfc3339_parse("1970-01-01T00:00:00Z", 20, &sec, &nsec), 0);
    assert_int_equal(sec, 0);
    assert_int_equal(kms_audit_rfc3339_parse("2024-05-01T10:00:00.5+02:00", 27, &sec, &nsec), 0);
    assert_int_equal(sec, 1714550400);
    assert_int_equal(nsec, 500000000);
    assert_int_equal(kms_audit_rfc3339_parse("1969-12-31T23:59:59Z", 20, &sec, &nsec), 0);
    assert_int_equal(sec, -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vault_vectors),
        cmocka_unit_test(test_matches_generic_hmac),
        cmocka_unit_test(test_walker),
        cmocka_unit_test(test_rfc3339),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
