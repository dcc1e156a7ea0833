/*
 * test_import.c - BYOK through the whole pipeline (engine/transit/import.c): the wrapping key
 * (made once per mount, kept across a restart, gone with the mount), import and import_version
 * of AEAD and hmac keys checked against the exported material, the imported-key flags and
 * rotation rule, byok-export's shape and refusals, and OpenBao's refusals with their statuses
 * and messages.
 *
 * Import ciphertexts are built with kms_keyring_import_wrap against the PEM the engine serves,
 * so every request is what an outside client would send.
 */
#include "tests/engine/transit/transit_util.h"

#include "crypto/keyring.h"

#define IMPORT_BODY_MAX 4096

static char *wrapping_pem(struct kt *t, const char *mount)
{
    char target[128];
    snprintf(target, sizeof(target), "/v1/%s/wrapping_key", mount);
    json_t *b = tt_req(t, 200, "GET", target, NULL);
    assert_int_equal(json_object_size(json_object_get(b, "data")), 1);
    const char *pem = tt_str(b, "public_key");
    assert_true(strncmp(pem, "-----BEGIN PUBLIC KEY-----\n", 27) == 0);
    char *copy = strdup(pem);
    json_decref(b);
    return copy;
}

/* An import body: ciphertext of `material` for transit/'s wrapping key, plus `extra`. */
static void import_body(struct kt *t, enum kms_hash h, const uint8_t *material, size_t len,
                        const char *extra, char *out)
{
    char *pem = wrapping_pem(t, "transit");
    char *ct = NULL;
    assert_int_equal(kms_keyring_import_wrap(pem, h, material, len, &ct), 0);
    snprintf(out, IMPORT_BODY_MAX, "{\"ciphertext\":\"%s\"%s%s}", ct, extra && extra[0] ? "," : "",
             extra ? extra : "");
    free(ct);
    free(pem);
}

static void assert_exported(struct kt *t, const char *kind, const char *name, int ver,
                            const uint8_t *material, size_t len)
{
    char target[160], v[16], want[1024];
    snprintf(target, sizeof(target), "/v1/transit/export/%s/%s/%d", kind, name, ver);
    snprintf(v, sizeof(v), "%d", ver);
    kms_b64_encode(material, len, want);
    json_t *b = tt_req(t, 200, "GET", target, NULL);
    assert_string_equal(json_string_value(json_object_get(kt_data(b, "keys"), v)), want);
    json_decref(b);
}

static void test_wrapping_key_per_mount(void **state)
{
    struct kt *t = *state;
    char *a = wrapping_pem(t, "transit");
    char *b = wrapping_pem(t, "transit");
    assert_string_equal(a, b);
    kt_reopen(t);
    free(b);
    b = wrapping_pem(t, "transit");
    assert_string_equal(a, b);
    free(b);
    /* a remount starts without one: the purge removed the sealed record */
    json_decref(tt_req(t, 204, "DELETE", "/v1/sys/mounts/transit", NULL));
    json_decref(tt_req(t, 204, "POST", "/v1/sys/mounts/transit", "{\"type\":\"transit\"}"));
    b = wrapping_pem(t, "transit");
    assert_string_not_equal(a, b);
    free(b);
    free(a);
}

static void test_import_aead_and_versions(void **state)
{
    struct kt *t = *state;
    uint8_t v1[32], v2[32];
    char body[IMPORT_BODY_MAX];
    memset(v1, 0x11, sizeof(v1));
    memset(v2, 0x22, sizeof(v2));

    import_body(t, KMS_HASH_SHA2_256, v1, sizeof(v1), "\"exportable\":true", body);
    json_decref(tt_req(t, 204, "POST", "/v1/transit/keys/byok/import", body));
    json_t *k = tt_req(t, 200, "GET", "/v1/transit/keys/byok", NULL);
    assert_true(json_is_true(kt_data(k, "imported_key")));
    assert_true(json_is_false(kt_data(k, "imported_key_allow_rotation")));
    assert_string_equal(tt_str(k, "type"), "aes256-gcm96");
    json_decref(k);
    assert_exported(t, "encryption-key", "byok", 1, v1, sizeof(v1));
    char *ct = tt_encrypt(t, "byok", "aGVsbG8=", NULL);
    tt_decrypt_is(t, "byok", ct, NULL, "aGVsbG8=");
    free(ct);

    tt_fail(t, 500, "POST", "/v1/transit/keys/byok/rotate", "{}",
            "1 error occurred:\n\t* imported key byok does not allow rotation within Vault\n\n");
    tt_fail(t, 500, "POST", "/v1/transit/keys/byok/import", body,
            "1 error occurred:\n\t* the import path cannot be used with an existing key; use "
            "import-version to rotate an existing imported key\n\n");

    import_body(t, KMS_HASH_SHA1, v2, sizeof(v2), "\"hash_function\":\"sha1\"", body);
    json_decref(tt_req(t, 204, "POST", "/v1/transit/keys/byok/import_version", body));
    k = tt_req(t, 200, "GET", "/v1/transit/keys/byok", NULL);
    assert_int_equal(json_integer_value(kt_data(k, "latest_version")), 2);
    json_decref(k);
    assert_exported(t, "encryption-key", "byok", 2, v2, sizeof(v2));
    assert_exported(t, "encryption-key", "byok", 1, v1, sizeof(v1));

    /* generated keys take no import_version */
    tt_create(t, "generated", NULL);
    tt_fail(t, 500, "POST", "/v1/transit/keys/generated/import_version", body,
            "1 error occurred:\n\t* the import_version endpoint can only be used with an "
            "imported key\n\n");
}

static void test_import_rotation_allowed(void **state)
{
    struct kt *t = *state;
    uint8_t v1[16];
    char body[IMPORT_BODY_MAX];
    memset(v1, 0x77, sizeof(v1));

    import_body(t, KMS_HASH_SHA2_512, v1, sizeof(v1),
                "\"type\":\"AES128-GCM96\",\"hash_function\":\"SHA512\",\"allow_rotation\":true,"
                "\"auto_rotate_period\":\"2h\",\"exportable\":true",
                body);
    json_decref(tt_req(t, 204, "POST", "/v1/transit/keys/r/import", body));
    assert_exported(t, "encryption-key", "r", 1, v1, sizeof(v1));
    json_t *k = tt_req(t, 200, "POST", "/v1/transit/keys/r/rotate", "{}");
    assert_int_equal(json_integer_value(kt_data(k, "latest_version")), 2);
    assert_int_equal(json_integer_value(kt_data(k, "auto_rotate_period")), 7200);
    /* as OpenBao: once rotated inside, the key no longer counts as imported */
    assert_true(json_is_false(kt_data(k, "imported_key")));
    json_decref(k);
}

static void test_import_hmac(void **state)
{
    struct kt *t = *state;
    uint8_t key[64];
    char body[IMPORT_BODY_MAX];
    for (size_t i = 0; i < sizeof(key); i++)
        key[i] = (uint8_t)i;

    import_body(t, KMS_HASH_SHA2_384, key, sizeof(key),
                "\"type\":\"hmac\",\"hash_function\":\"SHA384\",\"exportable\":true", body);
    json_decref(tt_req(t, 204, "POST", "/v1/transit/keys/mac/import", body));
    json_t *k = tt_req(t, 200, "GET", "/v1/transit/keys/mac", NULL);
    assert_int_equal(json_integer_value(kt_data(k, "key_size")), 64);
    json_decref(k);
    assert_exported(t, "hmac-key", "mac", 1, key, sizeof(key));
}

static void test_import_refusals(void **state)
{
    struct kt *t = *state;
    uint8_t key[32] = {9};
    char body[IMPORT_BODY_MAX];

    import_body(t, KMS_HASH_SHA2_256, key, sizeof(key), "\"hash_function\":\"SHA3\"", body);
    tt_fail(t, 400, "POST", "/v1/transit/keys/x/import", body, "unknown hash function: SHA3");
    import_body(t, KMS_HASH_SHA2_256, key, sizeof(key), "\"type\":\"rsa-1024\"", body);
    tt_fail(t, 400, "POST", "/v1/transit/keys/x/import", body, "unknown key type: rsa-1024");
    import_body(t, KMS_HASH_SHA2_256, key, sizeof(key), "\"hash_function\":\"SHA224\"", body);
    tt_fail(t, 500, "POST", "/v1/transit/keys/x/import", body,
            "1 error occurred:\n\t* crypto/rsa: decryption error\n\n");
    import_body(t, KMS_HASH_SHA2_256, key, 20, NULL, body);
    tt_fail(t, 500, "POST", "/v1/transit/keys/x/import", body,
            "1 error occurred:\n\t* error importing key: invalid key size 20 bytes for key type "
            "aes256-gcm96\n\n");
    import_body(t, KMS_HASH_SHA2_256, key, sizeof(key), "\"convergent_encryption\":false", body);
    tt_fail(t, 500, "POST", "/v1/transit/keys/x/import", body,
            "1 error occurred:\n\t* import cannot be used on keys with convergent encryption "
            "enabled\n\n");
    tt_fail(t, 500, "POST", "/v1/transit/keys/x/import", "{\"ciphertext\":\"AAAA\"}",
            "1 error occurred:\n\t* provided ciphertext is too short\n\n");
    tt_fail(t, 400, "POST", "/v1/transit/keys/x/import",
            "{\"type\":\"ed25519\",\"public_key\":\"-----BEGIN PUBLIC KEY-----\"}",
            "public_key import is not supported by kmsd; import the private key as ciphertext");
    tt_fail(t, 500, "POST", "/v1/transit/keys/x/import_version", body,
            "1 error occurred:\n\t* no key found with name x; to import a new key, use the "
            "import/ endpoint\n\n");
    json_decref(tt_req(t, 404, "GET", "/v1/transit/keys/x", NULL));
}

static void test_byok_export_shape(void **state)
{
    struct kt *t = *state;
    tt_create(t, "dst", "{\"type\":\"rsa-2048\"}");
    tt_create(t, "src", "{\"type\":\"chacha20-poly1305\",\"exportable\":true}");
    json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/src/rotate", "{}"));
    json_t *b = tt_req(t, 200, "GET", "/v1/transit/byok-export/dst/src", NULL);
    assert_string_equal(tt_str(b, "name"), "src");
    assert_string_equal(tt_str(b, "type"), "chacha20-poly1305");
    json_t *keys = kt_data(b, "keys");
    assert_int_equal(json_object_size(keys), 2);
    /* 256-byte OAEP block + KWP of 32 bytes (40), in base64 */
    assert_int_equal(strlen(json_string_value(json_object_get(keys, "2"))), 396);
    json_decref(b);
    b = tt_req(t, 200, "GET", "/v1/transit/byok-export/dst/src/1?hash=sha224", NULL);
    assert_int_equal(json_object_size(kt_data(b, "keys")), 1);
    json_decref(b);
    tt_fail(t, 400, "GET", "/v1/transit/byok-export/dst/dst", NULL, "key is not exportable");
    tt_fail(t, 500, "GET", "/v1/transit/byok-export/src/src", NULL,
            "1 error occurred:\n\t* key wrapping (requring message signing) is not supported "
            "for key type chacha20-poly1305\n\n");
    tt_fail(t, 400, "GET", "/v1/transit/byok-export/dst/src/v0", NULL,
            "version for export is below minimum decryption version");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_wrapping_key_per_mount, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_import_aead_and_versions, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_import_rotation_allowed, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_import_hmac, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_import_refusals, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_byok_export_shape, kt_setup, kt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
