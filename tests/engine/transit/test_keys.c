/*
 * test_keys.c - Transit key lifecycle through the whole pipeline (kms_api_handle, real LMDB,
 * real keyring): create for every supported type and the refused ones, read, list, delete
 * with deletion_allowed, keys/:name/config, rotate, trim, export and config/keys, with the
 * statuses and error strings of transit-api.md §3.1-§3.7, §3.17 and §3.20.
 */
#include "tests/engine/transit/transit_util.h"

static const char *const sym_types[] = {"aes128-gcm96", "aes256-gcm96", "chacha20-poly1305",
                                        "xchacha20-poly1305"};

static void test_create_defaults_and_read(void **state)
{
    struct kt *t = *state;
    json_t *b = tt_req(t, 200, "POST", "/v1/transit/keys/k1", "{}");
    json_t *d = json_object_get(b, "data");
    assert_string_equal(tt_str(b, "name"), "k1");
    assert_string_equal(tt_str(b, "type"), "aes256-gcm96");
    assert_true(json_is_false(json_object_get(d, "derived")));
    assert_true(json_is_false(json_object_get(d, "deletion_allowed")));
    assert_true(json_is_false(json_object_get(d, "exportable")));
    assert_true(json_is_false(json_object_get(d, "allow_plaintext_backup")));
    assert_int_equal(json_integer_value(json_object_get(d, "latest_version")), 1);
    assert_int_equal(json_integer_value(json_object_get(d, "min_decryption_version")), 1);
    assert_int_equal(json_integer_value(json_object_get(d, "min_encryption_version")), 0);
    assert_int_equal(json_integer_value(json_object_get(d, "min_available_version")), 0);
    assert_int_equal(json_integer_value(json_object_get(d, "auto_rotate_period")), 0);
    assert_true(json_is_true(json_object_get(d, "supports_encryption")));
    assert_true(json_is_true(json_object_get(d, "supports_decryption")));
    assert_true(json_is_false(json_object_get(d, "supports_signing")));
    assert_true(json_is_true(json_object_get(d, "supports_derivation")));
    assert_null(json_object_get(d, "kdf"));
    json_t *keys = json_object_get(d, "keys");
    assert_int_equal(json_object_size(keys), 1);
    assert_true(json_integer_value(json_object_get(keys, "1")) > 1600000000);
    json_decref(b);

    /* the read answers the same object */
    b = tt_req(t, 200, "GET", "/v1/transit/keys/k1", NULL);
    assert_string_equal(tt_str(b, "type"), "aes256-gcm96");
    assert_int_equal(json_object_size(kt_data(b, "keys")), 1);
    json_decref(b);

    /* creating again changes nothing, whatever the parameters, and warns */
    b = tt_req(t, 200, "POST", "/v1/transit/keys/k1", "{\"type\":\"chacha20-poly1305\"}");
    assert_string_equal(tt_str(b, "type"), "aes256-gcm96");
    assert_string_equal(tt_warning(b), "key k1 already existed");
    json_decref(b);

    /* unknown key: 404 with an empty error list */
    b = tt_req(t, 404, "GET", "/v1/transit/keys/nope", NULL);
    assert_int_equal(json_array_size(json_object_get(b, "errors")), 0);
    json_decref(b);
}

static void test_create_every_supported_type(void **state)
{
    struct kt *t = *state;
    char target[128];
    char body[128];
    char pt[64];
    for (size_t i = 0; i < sizeof(sym_types) / sizeof(sym_types[0]); i++) {
        snprintf(target, sizeof(target), "/v1/transit/keys/t%zu", i);
        snprintf(body, sizeof(body), "{\"type\":\"%s\",\"exportable\":true}", sym_types[i]);
        json_t *b = tt_req(t, 200, "POST", target, body);
        assert_string_equal(tt_str(b, "type"), sym_types[i]);
        assert_true(json_is_true(kt_data(b, "exportable")));
        json_decref(b);
        /* round trip, and the exported key has the type's length */
        snprintf(target, sizeof(target), "t%zu", i);
        char *ct = tt_encrypt(t, target, tt_b64("hello", pt), NULL);
        tt_decrypt_is(t, target, ct, NULL, "aGVsbG8=");
        free(ct);
        snprintf(target, sizeof(target), "/v1/transit/export/encryption-key/t%zu/1", i);
        b = tt_req(t, 200, "GET", target, NULL);
        const char *k = json_string_value(json_object_get(kt_data(b, "keys"), "1"));
        assert_non_null(k);
        assert_int_equal(strlen(k), i == 0 ? 24 : 44); /* base64 of 16 or 32 bytes */
        assert_string_equal(tt_str(b, "type"), sym_types[i]);
        json_decref(b);
    }
}

static void test_create_refusals(void **state)
{
    struct kt *t = *state;
    tt_fail(t, 400, "POST", "/v1/transit/keys/x", "{\"type\":\"des\"}", "unknown key type des");
    tt_fail(t, 400, "POST", "/v1/transit/keys/x", "{\"convergent_encryption\":true}",
            "convergent encryption requires derivation to be enabled");
    tt_fail(t, 400, "POST", "/v1/transit/keys/x", "{\"key_size\":32}",
            "key_size is not valid for algorithm aes256-gcm96");
    tt_fail(t, 400, "POST", "/v1/transit/keys/x", "{\"auto_rotate_period\":\"30m\"}",
            "auto rotate period must be 0 to disable or at least an hour");
    /* the period is checked before the type, as in OpenBao */
    tt_fail(t, 400, "POST", "/v1/transit/keys/x", "{\"auto_rotate_period\":60,\"type\":\"des\"}",
            "auto rotate period must be 0 to disable or at least an hour");
    /* nothing was created by any of them */
    json_decref(tt_req(t, 404, "GET", "/v1/transit/keys/x", NULL));
}

static void test_auto_rotate_period_forms(void **state)
{
    struct kt *t = *state;
    static const struct {
        const char *name;
        const char *value;
        int64_t seconds;
    } cases[] = {
        {"p1", "\"1h\"", 3600}, {"p2", "3600", 3600}, {"p3", "\"2d\"", 172800}, {"p4", "0", 0}};
    char body[128];
    char target[128];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(body, sizeof(body), "{\"auto_rotate_period\":%s}", cases[i].value);
        snprintf(target, sizeof(target), "/v1/transit/keys/%s", cases[i].name);
        json_t *b = tt_req(t, 200, "POST", target, body);
        assert_int_equal(json_integer_value(kt_data(b, "auto_rotate_period")), cases[i].seconds);
        json_decref(b);
    }
    /* and through config, with the same floor */
    json_t *b =
        tt_req(t, 200, "POST", "/v1/transit/keys/p4/config", "{\"auto_rotate_period\":\"90m\"}");
    assert_int_equal(json_integer_value(kt_data(b, "auto_rotate_period")), 5400);
    json_decref(b);
    tt_fail(t, 400, "POST", "/v1/transit/keys/p4/config", "{\"auto_rotate_period\":59}",
            "auto rotate period must be 0 to disable or at least an hour");
    b = tt_req(t, 200, "GET", "/v1/transit/keys/p4", NULL);
    assert_int_equal(json_integer_value(kt_data(b, "auto_rotate_period")), 5400);
    json_decref(b);
}

static void test_derived_and_convergent_read(void **state)
{
    struct kt *t = *state;
    json_t *b = tt_req(t, 200, "POST", "/v1/transit/keys/d", "{\"derived\":true}");
    assert_true(json_is_true(kt_data(b, "derived")));
    assert_string_equal(tt_str(b, "kdf"), "hkdf_sha256");
    assert_true(json_is_false(kt_data(b, "convergent_encryption")));
    assert_null(kt_data(b, "convergent_encryption_version"));
    json_decref(b);
    b = tt_req(t, 200, "POST", "/v1/transit/keys/c",
               "{\"derived\":true,\"convergent_encryption\":true}");
    assert_true(json_is_true(kt_data(b, "convergent_encryption")));
    assert_int_equal(json_integer_value(kt_data(b, "convergent_encryption_version")), -1);
    json_decref(b);
    /* a read with a context: accepted when base64, refused otherwise */
    json_decref(tt_req(t, 200, "GET", "/v1/transit/keys/d?context=Y3R4", NULL));
    tt_fail(t, 400, "GET", "/v1/transit/keys/d?context=%25%25%25", NULL,
            "failed to base64-decode context");
}

static void test_list(void **state)
{
    struct kt *t = *state;
    json_t *b = tt_req(t, 404, "LIST", "/v1/transit/keys", NULL);
    assert_int_equal(json_array_size(json_object_get(b, "errors")), 0);
    json_decref(b);
    tt_create(t, "b", NULL);
    tt_create(t, "a", NULL);
    tt_create(t, "c.d-e_f", NULL);
    b = tt_req(t, 200, "LIST", "/v1/transit/keys", NULL);
    json_t *keys = kt_data(b, "keys");
    assert_int_equal(json_array_size(keys), 3);
    assert_string_equal(json_string_value(json_array_get(keys, 0)), "a");
    assert_string_equal(json_string_value(json_array_get(keys, 1)), "b");
    assert_string_equal(json_string_value(json_array_get(keys, 2)), "c.d-e_f");
    json_decref(b);
    /* GET ?list=true is the same operation; trailing slash too */
    b = tt_req(t, 200, "GET", "/v1/transit/keys?list=true", NULL);
    assert_int_equal(json_array_size(kt_data(b, "keys")), 3);
    json_decref(b);
    b = tt_req(t, 200, "LIST", "/v1/transit/keys/", NULL);
    assert_int_equal(json_array_size(kt_data(b, "keys")), 3);
    json_decref(b);
    /* OpenBao pagination: after is exclusive, limit caps */
    b = tt_req(t, 200, "LIST", "/v1/transit/keys?after=a&limit=1", NULL);
    keys = kt_data(b, "keys");
    assert_int_equal(json_array_size(keys), 1);
    assert_string_equal(json_string_value(json_array_get(keys, 0)), "b");
    json_decref(b);
    b = tt_req(t, 200, "LIST", "/v1/transit/keys?after=b", NULL);
    assert_int_equal(json_array_size(kt_data(b, "keys")), 1);
    json_decref(b);
    json_decref(tt_req(t, 404, "LIST", "/v1/transit/keys?after=zzz", NULL));
}

static void test_delete_needs_deletion_allowed(void **state)
{
    struct kt *t = *state;
    char pt[16];
    tt_fail(t, 400, "DELETE", "/v1/transit/keys/gone", NULL,
            "error deleting policy gone: could not delete key; not found");
    tt_create(t, "gone", NULL);
    json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/gone/rotate", NULL));
    char *ct = tt_encrypt(t, "gone", tt_b64("x", pt), NULL);
    tt_fail(t, 400, "DELETE", "/v1/transit/keys/gone", NULL,
            "error deleting policy gone: deletion is not allowed for this key");
    json_t *b =
        tt_req(t, 200, "POST", "/v1/transit/keys/gone/config", "{\"deletion_allowed\":true}");
    assert_true(json_is_true(kt_data(b, "deletion_allowed")));
    json_decref(b);
    b = tt_req(t, 204, "DELETE", "/v1/transit/keys/gone", NULL);
    assert_null(b);
    json_decref(tt_req(t, 404, "GET", "/v1/transit/keys/gone", NULL));
    /* the cached key went with it: decrypt no longer finds it */
    tt_decrypt_fails(t, "gone", ct, NULL, 400, "encryption key not found");
    /* a key of the same name is a new key: the old ciphertext (v2) is too new for it */
    tt_create(t, "gone", NULL);
    tt_decrypt_fails(t, "gone", ct, NULL, 400, "invalid ciphertext: version is too new");
    free(ct);
}

static void test_config_rules(void **state)
{
    struct kt *t = *state;
    tt_fail(t, 400, "POST", "/v1/transit/keys/none/config", "{\"deletion_allowed\":true}",
            "no existing key named none could be found");
    tt_create(t, "k", NULL);
    for (int i = 0; i < 3; i++) {
        json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/k/rotate", NULL));
    }
    tt_fail(t, 400, "POST", "/v1/transit/keys/k/config", "{\"min_decryption_version\":-1}",
            "min decryption version cannot be negative");
    tt_fail(t, 400, "POST", "/v1/transit/keys/k/config", "{\"min_decryption_version\":5}",
            "cannot set min decryption version of 5, latest key version is 4");
    tt_fail(t, 400, "POST", "/v1/transit/keys/k/config", "{\"min_encryption_version\":-2}",
            "min encryption version cannot be negative");
    tt_fail(t, 400, "POST", "/v1/transit/keys/k/config", "{\"min_encryption_version\":9}",
            "cannot set min encryption version of 9, latest key version is 4");
    tt_fail(t, 400, "POST", "/v1/transit/keys/k/config",
            "{\"min_decryption_version\":3,\"min_encryption_version\":2}",
            "cannot set min encryption/decryption values; min encryption version of 2 must be "
            "greater than or equal to min decryption version of 3");
    /* a refused change is rolled back entirely */
    json_t *b = tt_req(t, 200, "GET", "/v1/transit/keys/k", NULL);
    assert_int_equal(json_integer_value(kt_data(b, "min_decryption_version")), 1);
    assert_int_equal(json_object_size(kt_data(b, "keys")), 4);
    json_decref(b);

    /* raising min_decryption_version hides the older versions from `keys` */
    b = tt_req(t, 200, "POST", "/v1/transit/keys/k/config",
               "{\"min_decryption_version\":3,\"min_encryption_version\":3}");
    assert_int_equal(json_integer_value(kt_data(b, "min_decryption_version")), 3);
    assert_int_equal(json_integer_value(kt_data(b, "min_encryption_version")), 3);
    json_t *keys = kt_data(b, "keys");
    assert_int_equal(json_object_size(keys), 2);
    assert_non_null(json_object_get(keys, "3"));
    assert_non_null(json_object_get(keys, "4"));
    json_decref(b);

    /* 0 forces 1, with the fork's warning; lowering restores the versions */
    b = tt_req(t, 200, "POST", "/v1/transit/keys/k/config",
               "{\"min_decryption_version\":0,\"min_encryption_version\":0}");
    assert_int_equal(json_integer_value(kt_data(b, "min_decryption_version")), 1);
    assert_string_equal(tt_warning(b), "since Vault 0.3 (prior to the OpenBao fork), transit key "
                                       "numbering starts at 1; forcing minimum to 1");
    assert_int_equal(json_object_size(kt_data(b, "keys")), 4);
    json_decref(b);

    /* exportable and allow_plaintext_backup are one-way latches */
    b = tt_req(t, 200, "POST", "/v1/transit/keys/k/config",
               "{\"exportable\":true,\"allow_plaintext_backup\":true}");
    assert_true(json_is_true(kt_data(b, "exportable")));
    assert_true(json_is_true(kt_data(b, "allow_plaintext_backup")));
    json_decref(b);
    b = tt_req(t, 200, "POST", "/v1/transit/keys/k/config",
               "{\"exportable\":false,\"allow_plaintext_backup\":\"false\"}");
    assert_true(json_is_true(kt_data(b, "exportable")));
    assert_true(json_is_true(kt_data(b, "allow_plaintext_backup")));
    json_decref(b);

    /* deletion_allowed goes both ways; bools are weakly typed */
    b = tt_req(t, 200, "POST", "/v1/transit/keys/k/config", "{\"deletion_allowed\":\"true\"}");
    assert_true(json_is_true(kt_data(b, "deletion_allowed")));
    json_decref(b);
    b = tt_req(t, 200, "POST", "/v1/transit/keys/k/config", "{\"deletion_allowed\":false}");
    assert_true(json_is_false(kt_data(b, "deletion_allowed")));
    json_decref(b);
    /* a known field of the wrong type fails in the pipeline, before the handler */
    b = tt_req(t, 400, "POST", "/v1/transit/keys/k/config", "{\"min_decryption_version\":\"x\"}");
    assert_non_null(strstr(kt_err(b), "Field validation failed: error converting input for field "
                                      "\"min_decryption_version\""));
    json_decref(b);
}

static void test_rotate(void **state)
{
    struct kt *t = *state;
    char pt[16];
    tt_fail(t, 400, "POST", "/v1/transit/keys/none/rotate", NULL, "key not found");
    tt_create(t, "r", "{\"type\":\"chacha20-poly1305\"}");
    char *v1 = tt_encrypt(t, "r", tt_b64("one", pt), NULL);
    json_t *b = tt_req(t, 200, "POST", "/v1/transit/keys/r/rotate", "{}");
    assert_int_equal(json_integer_value(kt_data(b, "latest_version")), 2);
    assert_int_equal(json_object_size(kt_data(b, "keys")), 2);
    assert_string_equal(tt_str(b, "type"), "chacha20-poly1305");
    json_decref(b);
    char *v2 = tt_encrypt(t, "r", tt_b64("two", pt), NULL);
    assert_true(strncmp(v1, "vault:v1:", 9) == 0);
    assert_true(strncmp(v2, "vault:v2:", 9) == 0);
    tt_decrypt_is(t, "r", v1, NULL, tt_b64("one", pt));
    tt_decrypt_is(t, "r", v2, NULL, tt_b64("two", pt));
    free(v1);
    free(v2);
}

static void test_trim(void **state)
{
    struct kt *t = *state;
    char pt[16];
    tt_fail(t, 400, "POST", "/v1/transit/keys/none/trim", "{\"min_available_version\":1}",
            "invalid key name");
    tt_create(t, "tr", "{\"exportable\":true}");
    char *v1 = tt_encrypt(t, "tr", tt_b64("old", pt), NULL);
    for (int i = 0; i < 3; i++) {
        json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/tr/rotate", NULL));
    }
    tt_fail(t, 400, "POST", "/v1/transit/keys/tr/trim", "{}", "missing min_available_version");
    tt_fail(t, 400, "POST", "/v1/transit/keys/tr/trim", "{\"min_available_version\":2}",
            "minimum available version cannot be set when minimum encryption version is not set");
    json_decref(
        tt_req(t, 200, "POST", "/v1/transit/keys/tr/config", "{\"min_encryption_version\":3}"));
    tt_fail(t, 400, "POST", "/v1/transit/keys/tr/trim", "{\"min_available_version\":4}",
            "minimum available version cannot be greater than minmum encryption version");
    tt_fail(t, 400, "POST", "/v1/transit/keys/tr/trim", "{\"min_available_version\":2}",
            "minimum available version cannot be greater than minimum decryption version");
    tt_fail(t, 400, "POST", "/v1/transit/keys/tr/trim", "{\"min_available_version\":0}",
            "minimum available version should be positive");
    json_decref(
        tt_req(t, 200, "POST", "/v1/transit/keys/tr/config", "{\"min_decryption_version\":3}"));
    json_t *b = tt_req(t, 200, "POST", "/v1/transit/keys/tr/trim", "{\"min_available_version\":3}");
    assert_int_equal(json_integer_value(kt_data(b, "min_available_version")), 3);
    assert_int_equal(json_object_size(kt_data(b, "keys")), 2);
    json_decref(b);
    tt_fail(t, 400, "POST", "/v1/transit/keys/tr/trim", "{\"min_available_version\":2}",
            "minimum available version cannot be decremented");
    /* trimmed versions are gone for good: min_decryption_version may not go below 3 */
    tt_fail(t, 400, "POST", "/v1/transit/keys/tr/config", "{\"min_decryption_version\":1}",
            "min decryption version should not be less then min available version");
    tt_fail(t, 400, "POST", "/v1/transit/keys/tr/config",
            "{\"min_encryption_version\":0,\"deletion_allowed\":true}",
            "min encryption version should not be less than min available version");
    tt_decrypt_fails(t, "tr", v1, NULL, 400,
                     "ciphertext or signature version is disallowed by policy (too old)");
    tt_fail(t, 400, "GET", "/v1/transit/export/encryption-key/tr/1", NULL,
            "version for export is below minimum decryption version");
    b = tt_req(t, 200, "GET", "/v1/transit/export/encryption-key/tr", NULL);
    assert_int_equal(json_object_size(kt_data(b, "keys")), 2);
    json_decref(b);
    free(v1);
    /* a restart reads the trimmed key back as it was */
    kt_reopen(t);
    b = tt_req(t, 200, "GET", "/v1/transit/keys/tr", NULL);
    assert_int_equal(json_integer_value(kt_data(b, "min_available_version")), 3);
    assert_int_equal(json_integer_value(kt_data(b, "latest_version")), 4);
    json_decref(b);
}

static void test_export(void **state)
{
    struct kt *t = *state;
    json_decref(tt_req(t, 404, "GET", "/v1/transit/export/encryption-key/none", NULL));
    tt_create(t, "locked", NULL);
    tt_fail(t, 400, "GET", "/v1/transit/export/encryption-key/locked", NULL,
            "private key material is not exportable");
    tt_fail(t, 400, "GET", "/v1/transit/export/hmac-key/locked/latest", NULL,
            "private key material is not exportable");
    tt_fail(t, 400, "GET", "/v1/transit/export/bogus-key/locked", NULL,
            "invalid export type: bogus-key");
    /* exportability is checked before the key type; public-key needs none (OpenBao) */
    tt_fail(t, 400, "GET", "/v1/transit/export/signing-key/locked", NULL,
            "private key material is not exportable");
    tt_fail(t, 500, "GET", "/v1/transit/export/public-key/locked", NULL,
            "1 error occurred:\n\t* unknown key type aes256-gcm96 for export type public-key\n\n");
    tt_fail(t, 400, "GET", "/v1/transit/export/certificate-chain/locked", NULL,
            "certificate chain not supported for keys that do not support signing");

    tt_create(t, "ex", "{\"exportable\":true,\"type\":\"aes128-gcm96\"}");
    json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/ex/rotate", NULL));
    json_t *all = tt_req(t, 200, "GET", "/v1/transit/export/encryption-key/ex", NULL);
    assert_string_equal(tt_str(all, "name"), "ex");
    assert_string_equal(tt_str(all, "type"), "aes128-gcm96");
    json_t *keys = kt_data(all, "keys");
    assert_int_equal(json_object_size(keys), 2);
    const char *k1 = json_string_value(json_object_get(keys, "1"));
    const char *k2 = json_string_value(json_object_get(keys, "2"));
    assert_string_not_equal(k1, k2);

    static const char *const forms[] = {"latest", "2", "v2"};
    for (size_t i = 0; i < 3; i++) {
        char target[128];
        snprintf(target, sizeof(target), "/v1/transit/export/encryption-key/ex/%s", forms[i]);
        json_t *one = tt_req(t, 200, "GET", target, NULL);
        assert_int_equal(json_object_size(kt_data(one, "keys")), 1);
        assert_string_equal(json_string_value(json_object_get(kt_data(one, "keys"), "2")), k2);
        json_decref(one);
    }
    /* 0 parses (Go's Atoi) and is below the decryption floor, as in OpenBao */
    tt_fail(t, 400, "GET", "/v1/transit/export/encryption-key/ex/0", NULL,
            "version for export is below minimum decryption version");
    tt_fail(t, 400, "GET", "/v1/transit/export/encryption-key/ex/x1", NULL, "invalid key version");
    tt_fail(t, 400, "GET", "/v1/transit/export/encryption-key/ex/3", NULL,
            "version does not exist or cannot be found");

    /* the HMAC key is independent of the encryption key and 32 bytes for every type */
    json_t *h = tt_req(t, 200, "GET", "/v1/transit/export/hmac-key/ex/1", NULL);
    const char *hk = json_string_value(json_object_get(kt_data(h, "keys"), "1"));
    assert_int_equal(strlen(hk), 44);
    assert_string_not_equal(hk, k1);
    json_decref(h);
    json_decref(all);
}

static void test_config_keys_disable_upsert(void **state)
{
    struct kt *t = *state;
    char pt[16];
    json_t *b = tt_req(t, 200, "GET", "/v1/transit/config/keys", NULL);
    assert_true(json_is_false(kt_data(b, "disable_upsert")));
    json_decref(b);
    /* upsert works by default */
    free(tt_encrypt(t, "auto1", tt_b64("a", pt), NULL));
    b = tt_req(t, 200, "POST", "/v1/transit/config/keys", "{\"disable_upsert\":true}");
    assert_true(json_is_true(kt_data(b, "disable_upsert")));
    json_decref(b);
    b = tt_req(t, 200, "GET", "/v1/transit/config/keys", NULL);
    assert_true(json_is_true(kt_data(b, "disable_upsert")));
    json_decref(b);
    tt_fail(t, 400, "POST", "/v1/transit/encrypt/auto2", "{\"plaintext\":\"YQ==\"}",
            "encryption key not found");
    json_decref(tt_req(t, 404, "GET", "/v1/transit/keys/auto2", NULL));
    /* existing keys still encrypt; a write without the field keeps the setting */
    free(tt_encrypt(t, "auto1", tt_b64("a", pt), NULL));
    b = tt_req(t, 200, "POST", "/v1/transit/config/keys", "{}");
    assert_true(json_is_true(kt_data(b, "disable_upsert")));
    json_decref(b);
    /* it survives a restart, and can be turned off again */
    kt_reopen(t);
    tt_fail(t, 400, "POST", "/v1/transit/encrypt/auto2", "{\"plaintext\":\"YQ==\"}",
            "encryption key not found");
    json_decref(tt_req(t, 200, "POST", "/v1/transit/config/keys", "{\"disable_upsert\":false}"));
    free(tt_encrypt(t, "auto2", tt_b64("a", pt), NULL));
}

static void test_mount_removal_purges_keys(void **state)
{
    struct kt *t = *state;
    char pt[16];
    json_decref(tt_req(t, 204, "POST", "/v1/sys/mounts/t2", "{\"type\":\"transit\"}"));
    json_decref(tt_req(t, 200, "POST", "/v1/t2/keys/k", "{}"));
    json_decref(tt_req(t, 200, "POST", "/v1/t2/config/keys", "{\"disable_upsert\":true}"));
    json_t *b = tt_req(t, 200, "POST", "/v1/t2/encrypt/k", "{\"plaintext\":\"YQ==\"}");
    json_decref(b);
    /* keys are per mount */
    json_decref(tt_req(t, 404, "GET", "/v1/transit/keys/k", NULL));
    free(tt_encrypt(t, "k", tt_b64("a", pt), NULL)); /* upsert on transit/ is still on */
    json_decref(tt_req(t, 204, "DELETE", "/v1/sys/mounts/t2", NULL));
    json_decref(tt_req(t, 204, "POST", "/v1/sys/mounts/t2", "{\"type\":\"transit\"}"));
    json_decref(tt_req(t, 404, "GET", "/v1/t2/keys/k", NULL));
    b = tt_req(t, 200, "GET", "/v1/t2/config/keys", NULL);
    assert_true(json_is_false(kt_data(b, "disable_upsert")));
    json_decref(b);
    /* transit/ kept its key */
    json_decref(tt_req(t, 200, "GET", "/v1/transit/keys/k", NULL));
}

/* The raw material of version v of exportable key `name` (encryption-key export), 32 bytes. */
static void exported_key(struct kt *t, const char *name, int v, uint8_t out[32])
{
    char target[256], num[16];
    snprintf(target, sizeof(target), "/v1/transit/export/encryption-key/%s/%d", name, v);
    snprintf(num, sizeof(num), "%d", v);
    json_t *b = tt_req(t, 200, "GET", target, NULL);
    const char *k = json_string_value(json_object_get(kt_data(b, "keys"), num));
    assert_non_null(k);
    uint8_t buf[64];
    size_t n = 0, at = 0;
    assert_int_equal(kms_b64_decode(k, strlen(k), buf, &n, &at), 0);
    assert_int_equal(n, 32);
    memcpy(out, buf, 32);
    json_decref(b);
}

/*
 * Key material that leaves storage leaves the per-thread cipher contexts too (crypto/aead.c
 * keeps a key schedule per key and thread): a deleted key stays in no context; any key write
 * (a trim too) wipes them all, and versions still in use come back on their next operation.
 */
static void test_deleted_and_trimmed_keys_leave_cipher_contexts(void **state)
{
    struct kt *t = *state;
    char pt[16], pt1[16], pt2[16];
    uint8_t k1[32], k2[32];
    tt_create(t, "wiped", "{\"exportable\":true}");
    json_decref(
        tt_req(t, 200, "POST", "/v1/transit/keys/wiped/config", "{\"deletion_allowed\":true}"));
    char *ct = tt_encrypt(t, "wiped", tt_b64("x", pt), NULL);
    exported_key(t, "wiped", 1, k1);
    assert_true(kms_aead_key_cached(k1, 32));
    json_decref(tt_req(t, 204, "DELETE", "/v1/transit/keys/wiped", NULL));
    assert_false(kms_aead_key_cached(k1, 32));
    free(ct);

    /* any key write wipes every context (a trim, too, removes versions); a version still
     * in use is set up again by its next operation */
    tt_create(t, "kept", "{\"exportable\":true}");
    char *ct1 = tt_encrypt(t, "kept", tt_b64("one", pt1), NULL);
    exported_key(t, "kept", 1, k1);
    assert_true(kms_aead_key_cached(k1, 32));
    json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/kept/rotate", NULL));
    assert_false(kms_aead_key_cached(k1, 32));
    tt_decrypt_is(t, "kept", ct1, NULL, pt1);
    assert_true(kms_aead_key_cached(k1, 32));
    char *ct2 = tt_encrypt(t, "kept", tt_b64("two", pt2), NULL);
    exported_key(t, "kept", 2, k2);
    assert_true(kms_aead_key_cached(k2, 32));
    free(ct1);
    free(ct2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_defaults_and_read, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_deleted_and_trimmed_keys_leave_cipher_contexts,
                                        kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_create_every_supported_type, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_create_refusals, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_auto_rotate_period_forms, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_derived_and_convergent_read, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_list, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_delete_needs_deletion_allowed, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_config_rules, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_rotate, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_trim, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_export, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_config_keys_disable_upsert, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_mount_removal_purges_keys, kt_setup, kt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
