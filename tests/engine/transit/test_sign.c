/*
 * test_sign.c - Transit's signing and hmac key types through the whole pipeline: create and
 * read of every type (public keys per version, hmac's key_size), sign/verify for ed25519,
 * ECDSA and RSA (single, batch, jws, pss/pkcs1v15, prehashed), OpenBao's check order and
 * status codes, version floors, export in every format, RSA encrypt/decrypt/datakey, hmac keys
 * with hmac/ and verify/, and keys surviving a reopen of the store.
 */
#include "tests/engine/transit/transit_util.h"

static const char *const asym_types[] = {"ed25519",  "ecdsa-p256", "ecdsa-p384", "ecdsa-p521",
                                         "rsa-2048", "rsa-3072",   "rsa-4096"};
#define NASYM (sizeof(asym_types) / sizeof(asym_types[0]))

/* POST sign/<name> with body; returns the signature (caller frees). */
static char *sign(struct kt *t, const char *name, const char *body)
{
    char target[128];
    snprintf(target, sizeof(target), "/v1/transit/sign/%s", name);
    json_t *b = tt_req(t, 200, "POST", target, body);
    char *s = strdup(tt_str(b, "signature"));
    assert_true(strncmp(s, "vault:v", 7) == 0);
    json_decref(b);
    return s;
}

/* POST verify/<name> with `extra` members and the signature; returns "valid". */
static bool verify(struct kt *t, const char *name, const char *sig, const char *extra)
{
    char target[128];
    char body[4096];
    snprintf(target, sizeof(target), "/v1/transit/verify/%s", name);
    snprintf(body, sizeof(body), "{\"signature\":\"%s\"%s%s}", sig, extra[0] ? "," : "", extra);
    json_t *b = tt_req(t, 200, "POST", target, body);
    json_t *v = kt_data(b, "valid");
    assert_true(json_is_boolean(v));
    bool valid = json_is_true(v);
    json_decref(b);
    return valid;
}

static void test_create_and_read_every_type(void **state)
{
    struct kt *t = *state;
    char target[128];
    char body[128];
    for (size_t i = 0; i < NASYM; i++) {
        snprintf(target, sizeof(target), "/v1/transit/keys/k%zu", i);
        snprintf(body, sizeof(body), "{\"type\":\"%s\"}", asym_types[i]);
        json_t *b = tt_req(t, 200, "POST", target, body);
        assert_string_equal(tt_str(b, "type"), asym_types[i]);
        assert_true(json_is_true(kt_data(b, "supports_signing")));
        assert_int_equal(json_is_true(kt_data(b, "supports_encryption")), i >= 4);
        assert_int_equal(json_is_true(kt_data(b, "supports_decryption")), i >= 4);
        assert_int_equal(json_is_true(kt_data(b, "supports_derivation")), i == 0);
        assert_null(kt_data(b, "key_size"));
        json_t *v1 = json_object_get(kt_data(b, "keys"), "1");
        assert_true(json_is_object(v1));
        const char *name = json_string_value(json_object_get(v1, "name"));
        char *pub = strdup(json_string_value(json_object_get(v1, "public_key")));
        static const char *const names[] = {"ed25519",  "P-256",    "P-384",   "P-521",
                                            "rsa-2048", "rsa-3072", "rsa-4096"};
        assert_string_equal(name, names[i]);
        assert_string_equal(json_string_value(json_object_get(v1, "certificate_chain")), "");
        assert_non_null(strchr(json_string_value(json_object_get(v1, "creation_time")), 'T'));
        if (i == 0) {
            assert_int_equal(strlen(pub), 44);
        } else {
            assert_int_equal(strncmp(pub, "-----BEGIN PUBLIC KEY-----\n", 27), 0);
        }
        json_decref(b);
        /* rotate adds a version with another public key */
        snprintf(target, sizeof(target), "/v1/transit/keys/k%zu/rotate", i);
        b = tt_req(t, 200, "POST", target, NULL);
        json_t *v2 = json_object_get(kt_data(b, "keys"), "2");
        assert_string_not_equal(json_string_value(json_object_get(v2, "public_key")), pub);
        json_decref(b);
        free(pub);
    }
    /* hmac keys: key_size, and no "keys" at all */
    json_t *b = tt_req(t, 200, "POST", "/v1/transit/keys/h", "{\"type\":\"hmac\",\"key_size\":64}");
    assert_int_equal(json_integer_value(kt_data(b, "key_size")), 64);
    assert_null(kt_data(b, "keys"));
    assert_false(json_is_true(kt_data(b, "supports_signing")));
    assert_false(json_is_true(kt_data(b, "supports_encryption")));
    json_decref(b);
}

static void test_create_refusals(void **state)
{
    struct kt *t = *state;
    tt_fail(t, 400, "POST", "/v1/transit/keys/x", "{\"type\":\"ed25519\",\"key_size\":32}",
            "key_size is not valid for algorithm ed25519");
    tt_fail(t, 400, "POST", "/v1/transit/keys/x", "{\"type\":\"hmac\",\"key_size\":31}",
            "invalid key_size 31");
    tt_fail(t, 400, "POST", "/v1/transit/keys/x", "{\"type\":\"hmac\",\"key_size\":513}",
            "invalid key_size 513");
    /* OpenBao fails a missing key_size when it generates the key: 500 wrapped */
    tt_fail(t, 500, "POST", "/v1/transit/keys/x", "{\"type\":\"hmac\"}",
            "1 error occurred:\n\t* invalid key size for HMAC key, must be between 32 and 512 "
            "bytes\n\n");
    tt_fail(t, 500, "POST", "/v1/transit/keys/x", "{\"type\":\"ecdsa-p256\",\"derived\":true}",
            "1 error occurred:\n\t* key derivation and convergent encryption not supported for "
            "keys of type ecdsa-p256\n\n");
    tt_fail(t, 500, "POST", "/v1/transit/keys/x",
            "{\"type\":\"ed25519\",\"derived\":true,\"convergent_encryption\":true}",
            "1 error occurred:\n\t* convergent encryption not supported for keys of type "
            "ed25519\n\n");
    json_decref(tt_req(t, 404, "GET", "/v1/transit/keys/x", NULL));
    /* an existing key is returned unchanged, whatever the body says */
    tt_create(t, "e", "{\"type\":\"ed25519\"}");
    json_t *b = tt_req(t, 200, "POST", "/v1/transit/keys/e", "{\"type\":\"hmac\"}");
    assert_string_equal(tt_str(b, "type"), "ed25519");
    assert_string_equal(tt_warning(b), "key e already existed");
    json_decref(b);
    /* encrypt's upsert creates AEAD keys only */
    tt_fail(t, 400, "POST", "/v1/transit/encrypt/u",
            "{\"plaintext\":\"YQ==\",\"type\":\"ed25519\"}", "unknown key type ed25519");
}

static void test_sign_verify_every_type(void **state)
{
    struct kt *t = *state;
    char name[16];
    char body[256];
    for (size_t i = 0; i < NASYM; i++) {
        snprintf(name, sizeof(name), "s%zu", i);
        snprintf(body, sizeof(body), "{\"type\":\"%s\"}", asym_types[i]);
        tt_create(t, name, body);
        char *s = sign(t, name, "{\"input\":\"aGVsbG8=\"}");
        assert_true(strncmp(s, "vault:v1:", 9) == 0);
        assert_true(verify(t, name, s, "\"input\":\"aGVsbG8=\""));
        assert_false(verify(t, name, s, "\"input\":\"aGVsbE8=\""));
        free(s);
        /* the hash in the URL, jws marshaling */
        char target[128];
        snprintf(target, sizeof(target), "/v1/transit/sign/%s/sha2-512", name);
        json_t *b = tt_req(t, 200, "POST", target,
                           "{\"input\":\"aGVsbG8=\",\"marshaling_algorithm\":\"jws\"}");
        s = strdup(tt_str(b, "signature"));
        assert_int_equal(json_integer_value(kt_data(b, "key_version")), 1);
        json_decref(b);
        assert_null(strchr(s, '='));
        assert_true(verify(t, name, s,
                           "\"input\":\"aGVsbG8=\",\"hash_algorithm\":\"sha2-512\","
                           "\"marshaling_algorithm\":\"jws\""));
        if (i > 0) {
            /* ECDSA and RSA sign a digest: another hash does not verify */
            assert_false(
                verify(t, name, s, "\"input\":\"aGVsbG8=\",\"marshaling_algorithm\":\"jws\""));
        }
        free(s);
    }
    /* RSA: pkcs1v15, salt lengths, prehashed */
    char *s = sign(t, "s4", "{\"input\":\"aGVsbG8=\",\"signature_algorithm\":\"pkcs1v15\"}");
    assert_true(verify(t, "s4", s, "\"input\":\"aGVsbG8=\",\"signature_algorithm\":\"pkcs1v15\""));
    assert_false(verify(t, "s4", s, "\"input\":\"aGVsbG8=\""));
    free(s);
    s = sign(t, "s4", "{\"input\":\"aGVsbG8=\",\"salt_length\":\"hash\"}");
    assert_true(verify(t, "s4", s, "\"input\":\"aGVsbG8=\",\"salt_length\":32"));
    assert_true(verify(t, "s4", s, "\"input\":\"aGVsbG8=\""));
    assert_false(verify(t, "s4", s, "\"input\":\"aGVsbG8=\",\"salt_length\":\"222\""));
    free(s);
    /* sha2-256("hello"), prehashed */
    s = sign(t, "s1",
             "{\"input\":\"LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=\","
             "\"prehashed\":true}");
    assert_true(verify(t, "s1", s, "\"input\":\"aGVsbG8=\""));
    free(s);
}

static void test_sign_errors_in_openbao_order(void **state)
{
    struct kt *t = *state;
    tt_create(t, "ed", "{\"type\":\"ed25519\"}");
    tt_create(t, "aes", NULL);
    /* option errors come before the key lookup */
    tt_fail(t, 400, "POST", "/v1/transit/sign/none/md5", "{\"input\":\"\"}",
            "invalid hash algorithm \"md5\"");
    tt_fail(t, 400, "POST", "/v1/transit/sign/none", "{\"marshaling_algorithm\":\"der\"}",
            "invalid marshaling type \"der\"");
    tt_fail(t, 400, "POST", "/v1/transit/sign/none", "{\"salt_length\":\"big\"}",
            "salt length neither 'auto', 'hash', nor an int: big");
    tt_fail(t, 400, "POST", "/v1/transit/sign/none", "{\"salt_length\":-5}",
            "salt length is invalid: -5");
    tt_fail(t, 400, "POST", "/v1/transit/sign/none", "{}", "signing key not found");
    tt_fail(t, 400, "POST", "/v1/transit/verify/none", "{\"signature\":\"x\"}",
            "signature verification key not found");
    tt_fail(t, 400, "POST", "/v1/transit/sign/aes", "{}",
            "key type aes256-gcm96 does not support signing");
    tt_fail(t, 400, "POST", "/v1/transit/verify/aes", "{\"signature\":\"x\"}",
            "key type aes256-gcm96 does not support verification");
    tt_fail(t, 400, "POST", "/v1/transit/sign/ed/none", "{\"prehashed\":true}",
            "hash_algorithm=none requires both prehashed=true and signature_algorithm=pkcs1v15");
    /* item checks are 400; the signing step's errors a wrapped 500 (OpenBao) */
    tt_fail(t, 400, "POST", "/v1/transit/sign/ed", "{\"input\":\"a\"}",
            "unable to decode input as base64: illegal base64 data at input byte 0");
    tt_fail(t, 500, "POST", "/v1/transit/sign/ed", "{\"input\":\"\",\"key_version\":2}",
            "1 error occurred:\n\t* requested version for signing is higher than the latest key "
            "version\n\n");
    tt_fail(t, 500, "POST", "/v1/transit/sign/ed", "{\"input\":\"\",\"key_version\":-1}",
            "1 error occurred:\n\t* requested version for signing is negative\n\n");
    /* verify: user errors are 400 */
    tt_fail(t, 400, "POST", "/v1/transit/verify/ed", "{\"input\":\"\",\"signature\":\"v1:x\"}",
            "invalid signature: no prefix");
    tt_fail(t, 400, "POST", "/v1/transit/verify/ed",
            "{\"input\":\"\",\"signature\":\"vault:v2:x\"}",
            "invalid signature: version is too new");
    tt_fail(t, 400, "POST", "/v1/transit/verify/ed",
            "{\"input\":\"\",\"signature\":\"vault:v0:x\"}",
            "ciphertext or signature version is disallowed by policy (too old)");
    tt_fail(t, 400, "POST", "/v1/transit/verify/ed",
            "{\"input\":\"\",\"signature\":\"vault:v1:x\"}", "invalid base64 signature value");
    /* an absent input signs (and verifies) the empty message */
    char *s = sign(t, "ed", "{}");
    assert_true(verify(t, "ed", s, "\"input\":\"\""));
    free(s);
}

static void test_batches_and_versions(void **state)
{
    struct kt *t = *state;
    tt_create(t, "b", "{\"type\":\"ecdsa-p256\"}");
    json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/b/rotate", NULL));
    json_t *b = tt_req(t, 200, "POST", "/v1/transit/sign/b",
                       "{\"key_version\":1,\"batch_input\":[{\"input\":\"YQ==\",\"reference\":"
                       "\"r1\"},{\"input\":\"!\"},{\"reference\":\"r3\"}]}");
    json_t *r = kt_data(b, "batch_results");
    assert_int_equal(json_array_size(r), 3);
    json_t *r0 = json_array_get(r, 0);
    assert_string_equal(json_string_value(json_object_get(r0, "reference")), "r1");
    assert_int_equal(json_integer_value(json_object_get(r0, "key_version")), 1);
    const char *sig = json_string_value(json_object_get(r0, "signature"));
    assert_true(strncmp(sig, "vault:v1:", 9) == 0);
    char *s1 = strdup(sig);
    json_t *r1 = json_array_get(r, 1);
    assert_int_equal(json_integer_value(json_object_get(r1, "key_version")), 0);
    assert_string_equal(json_string_value(json_object_get(r1, "error")),
                        "unable to decode input as base64: illegal base64 data at input byte 0");
    assert_string_equal(json_string_value(json_object_get(json_array_get(r, 2), "error")),
                        "missing input");
    json_decref(b);

    /* batch verify: "valid" is always present; item errors inside a 200 */
    char body[1024];
    snprintf(body, sizeof(body),
             "{\"batch_input\":[{\"input\":\"YQ==\",\"signature\":\"%s\",\"reference\":\"x\"},"
             "{\"input\":\"Yg==\",\"signature\":\"%s\"},{\"input\":\"YQ==\",\"signature\":"
             "\"vault:v9:AA==\"}]}",
             s1, s1);
    b = tt_req(t, 200, "POST", "/v1/transit/verify/b", body);
    r = kt_data(b, "batch_results");
    assert_true(json_is_true(json_object_get(json_array_get(r, 0), "valid")));
    assert_string_equal(json_string_value(json_object_get(json_array_get(r, 0), "reference")), "x");
    assert_true(json_is_false(json_object_get(json_array_get(r, 1), "valid")));
    assert_true(json_is_false(json_object_get(json_array_get(r, 2), "valid")));
    assert_string_equal(json_string_value(json_object_get(json_array_get(r, 2), "error")),
                        "invalid signature: version is too new");
    json_decref(b);

    /* floors: signing below min_encryption, verifying below min_decryption */
    json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/b/config",
                       "{\"min_encryption_version\":2,\"min_decryption_version\":2}"));
    tt_fail(t, 500, "POST", "/v1/transit/sign/b", "{\"input\":\"\",\"key_version\":1}",
            "1 error occurred:\n\t* requested version for signing is less than the minimum "
            "encryption key version\n\n");
    snprintf(body, sizeof(body), "{\"input\":\"YQ==\",\"signature\":\"%s\"}", s1);
    tt_fail(t, 400, "POST", "/v1/transit/verify/b", body,
            "ciphertext or signature version is disallowed by policy (too old)");
    free(s1);
    json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/b/trim", "{\"min_available_version\":2}"));
    b = tt_req(t, 200, "GET", "/v1/transit/keys/b", NULL);
    assert_null(json_object_get(kt_data(b, "keys"), "1"));
    assert_non_null(json_object_get(kt_data(b, "keys"), "2"));
    json_decref(b);
}

static void test_derived_ed25519(void **state)
{
    struct kt *t = *state;
    tt_create(t, "d", "{\"type\":\"ed25519\",\"derived\":true}");
    json_t *b =
        tt_req(t, 200, "POST", "/v1/transit/sign/d", "{\"input\":\"aGk=\",\"context\":\"Y3R4\"}");
    char *s = strdup(tt_str(b, "signature"));
    char *pub = strdup(tt_str(b, "public_key"));
    assert_int_equal(strlen(pub), 44);
    json_decref(b);
    assert_true(verify(t, "d", s, "\"input\":\"aGk=\",\"context\":\"Y3R4\""));
    assert_false(verify(t, "d", s, "\"input\":\"aGk=\",\"context\":\"Y3R5\""));
    /* key read: "" without a context, the derived public key with one */
    b = tt_req(t, 200, "GET", "/v1/transit/keys/d", NULL);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(kt_data(b, "keys"), "1"), "public_key")),
        "");
    json_decref(b);
    b = tt_req(t, 200, "GET", "/v1/transit/keys/d?context=Y3R4", NULL);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(kt_data(b, "keys"), "1"), "public_key")),
        pub);
    json_decref(b);
    tt_fail(t, 500, "POST", "/v1/transit/sign/d", "{\"input\":\"aGk=\"}",
            "1 error occurred:\n\t* error deriving key: missing 'context' for key derivation; the "
            "key was created using a derived key, which means additional, per-request information "
            "must be included in order to perform operations with the key\n\n");
    /* batch items carry "publickey" */
    b = tt_req(t, 200, "POST", "/v1/transit/sign/d",
               "{\"batch_input\":[{\"input\":\"aGk=\",\"context\":\"Y3R4\"}]}");
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(kt_data(b, "batch_results"), 0), "publickey")),
                        pub);
    json_decref(b);
    free(s);
    free(pub);
}

static void test_export(void **state)
{
    struct kt *t = *state;
    tt_create(t, "locked", "{\"type\":\"ecdsa-p384\"}");
    tt_fail(t, 400, "GET", "/v1/transit/export/signing-key/locked", NULL,
            "private key material is not exportable");
    /* public keys need no exportable flag; ECDSA's are trimmed */
    json_t *b = tt_req(t, 200, "GET", "/v1/transit/export/public-key/locked", NULL);
    const char *pk = json_string_value(json_object_get(kt_data(b, "keys"), "1"));
    assert_int_equal(strncmp(pk, "-----BEGIN PUBLIC KEY-----\n", 27), 0);
    assert_int_not_equal(pk[strlen(pk) - 1], '\n');
    assert_string_equal(tt_str(b, "type"), "ecdsa-p384");
    json_decref(b);
    tt_fail(t, 400, "GET", "/v1/transit/export/encryption-key/locked", NULL,
            "private key material is not exportable");
    tt_fail(t, 400, "GET", "/v1/transit/export/public-key/locked?format=bogus", NULL,
            "invalid format: bogus");
    tt_fail(t, 500, "GET", "/v1/transit/export/public-key/locked?format=raw", NULL,
            "1 error occurred:\n\t* unknown key format for ec key; supported values are ``, "
            "`der`, or `pem`\n\n");
    tt_fail(t, 500, "GET", "/v1/transit/export/certificate-chain/locked/1", NULL,
            "1 error occurred:\n\t* selected key version does not have a certificate chain "
            "imported\n\n");

    tt_create(t, "rsa", "{\"type\":\"rsa-2048\",\"exportable\":true}");
    b = tt_req(t, 200, "GET", "/v1/transit/export/encryption-key/rsa/v1", NULL);
    pk = json_string_value(json_object_get(kt_data(b, "keys"), "1"));
    assert_int_equal(strncmp(pk, "-----BEGIN RSA PRIVATE KEY-----\n", 32), 0);
    json_decref(b);
    b = tt_req(t, 200, "GET", "/v1/transit/export/signing-key/rsa/latest?format=pem", NULL);
    pk = json_string_value(json_object_get(kt_data(b, "keys"), "1"));
    assert_int_equal(strncmp(pk, "-----BEGIN PRIVATE KEY-----\n", 28), 0);
    json_decref(b);
    b = tt_req(t, 200, "GET", "/v1/transit/export/hmac-key/rsa", NULL);
    assert_int_equal(strlen(json_string_value(json_object_get(kt_data(b, "keys"), "1"))), 44);
    json_decref(b);

    tt_create(t, "ed", "{\"type\":\"ed25519\",\"exportable\":true}");
    tt_fail(t, 400, "GET", "/v1/transit/export/encryption-key/ed", NULL,
            "encryption not supported for the key");
    b = tt_req(t, 200, "GET", "/v1/transit/export/signing-key/ed?format=raw", NULL);
    assert_int_equal(strlen(json_string_value(json_object_get(kt_data(b, "keys"), "1"))), 88);
    json_decref(b);

    tt_create(t, "h", "{\"type\":\"hmac\",\"key_size\":48,\"exportable\":true}");
    tt_fail(t, 400, "GET", "/v1/transit/export/signing-key/h", NULL,
            "signing not supported for the key");
    tt_fail(t, 400, "GET", "/v1/transit/export/certificate-chain/h", NULL,
            "certificate chain not supported for keys that do not support signing");
    b = tt_req(t, 200, "GET", "/v1/transit/export/hmac-key/h", NULL);
    assert_int_equal(strlen(json_string_value(json_object_get(kt_data(b, "keys"), "1"))), 64);
    json_decref(b);
}

static void test_rsa_encryption(void **state)
{
    struct kt *t = *state;
    tt_create(t, "r", "{\"type\":\"rsa-3072\"}");
    char *ct = tt_encrypt(t, "r", "aGVsbG8=", NULL);
    assert_int_equal(strlen(ct), 9 + 512); /* base64 of 384 bytes */
    tt_decrypt_is(t, "r", ct, NULL, "aGVsbG8=");
    free(ct);
    tt_fail(t, 400, "POST", "/v1/transit/encrypt/r",
            "{\"plaintext\":\"YQ==\",\"associated_data\":\"YQ==\"}",
            "'[0].associated_data' provided for non-AEAD cipher suite rsa-3072");
    tt_fail(t, 400, "POST", "/v1/transit/datakey/plaintext/r", "{\"associated_data\":\"YQ==\"}",
            "'associated_data' provided for non-AEAD cipher suite rsa-3072");
    json_t *b = tt_req(t, 200, "POST", "/v1/transit/datakey/plaintext/r", "{}");
    char *dk = strdup(tt_str(b, "ciphertext"));
    char *pt = strdup(tt_str(b, "plaintext"));
    json_decref(b);
    tt_decrypt_is(t, "r", dk, NULL, pt);
    free(dk);
    free(pt);
    tt_decrypt_fails(t, "r", "vault:v1:AAAA", NULL, 500,
                     "1 error occurred:\n\t* failed to RSA decrypt the ciphertext: crypto/rsa: "
                     "decryption error\n\n");
    /* ed25519 and hmac keys do neither */
    tt_create(t, "e", "{\"type\":\"ed25519\"}");
    tt_fail(t, 400, "POST", "/v1/transit/encrypt/e", "{\"plaintext\":\"YQ==\"}",
            "message encryption not supported for key type ed25519");
    tt_decrypt_fails(t, "e", "vault:v1:AAAA", NULL, 400,
                     "message decryption not supported for key type ed25519");
}

static void test_hmac_keys(void **state)
{
    struct kt *t = *state;
    tt_create(t, "h", "{\"type\":\"hmac\",\"key_size\":32,\"exportable\":true}");
    json_t *b = tt_req(t, 200, "GET", "/v1/transit/export/hmac-key/h/1", NULL);
    const char *kb = json_string_value(json_object_get(kt_data(b, "keys"), "1"));
    uint8_t *key = NULL;
    size_t klen = 0, at = 0;
    assert_int_equal(kms_b64_decode_alloc(kb, strlen(kb), &key, &klen, &at), 0);
    json_decref(b);
    uint8_t mac[32];
    char want[128], b64[64];
    assert_int_equal(kms_hmac(KMS_HASH_SHA2_256, key, klen, "hello", 5, mac), 0);
    kms_b64_encode(mac, 32, b64);
    snprintf(want, sizeof(want), "vault:v1:%s", b64);
    free(key);
    b = tt_req(t, 200, "POST", "/v1/transit/hmac/h", "{\"input\":\"aGVsbG8=\"}");
    assert_string_equal(tt_str(b, "hmac"), want);
    json_decref(b);
    char body[256];
    snprintf(body, sizeof(body), "{\"input\":\"aGVsbG8=\",\"hmac\":\"%s\"}", want);
    b = tt_req(t, 200, "POST", "/v1/transit/verify/h", body);
    assert_true(json_is_true(kt_data(b, "valid")));
    json_decref(b);
    tt_fail(t, 400, "POST", "/v1/transit/sign/h", "{}", "key type hmac does not support signing");
    tt_fail(t, 400, "POST", "/v1/transit/encrypt/h", "{\"plaintext\":\"YQ==\"}",
            "message encryption not supported for key type hmac");
    /* rotation makes a new key of the same size */
    json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/h/rotate", NULL));
    b = tt_req(t, 200, "GET", "/v1/transit/export/hmac-key/h/2", NULL);
    assert_int_equal(strlen(json_string_value(json_object_get(kt_data(b, "keys"), "2"))), 44);
    json_decref(b);
}

/* Keys are sealed records: they survive a reopen of the store and still verify. */
static void test_keys_survive_reopen(void **state)
{
    struct kt *t = *state;
    tt_create(t, "p", "{\"type\":\"rsa-2048\"}");
    tt_create(t, "q", "{\"type\":\"hmac\",\"key_size\":100}");
    char *s = sign(t, "p", "{\"input\":\"aGVsbG8=\"}");
    json_t *b = tt_req(t, 200, "POST", "/v1/transit/hmac/q", "{\"input\":\"aGVsbG8=\"}");
    char *h = strdup(tt_str(b, "hmac"));
    json_decref(b);
    kt_reopen(t);
    assert_true(verify(t, "p", s, "\"input\":\"aGVsbG8=\""));
    b = tt_req(t, 200, "POST", "/v1/transit/hmac/q", "{\"input\":\"aGVsbG8=\"}");
    assert_string_equal(tt_str(b, "hmac"), h);
    json_decref(b);
    b = tt_req(t, 200, "GET", "/v1/transit/keys/q", NULL);
    assert_int_equal(json_integer_value(kt_data(b, "key_size")), 100);
    json_decref(b);
    free(s);
    free(h);
    /* deletion works as for every key */
    json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/p/config", "{\"deletion_allowed\":true}"));
    json_decref(tt_req(t, 204, "DELETE", "/v1/transit/keys/p", NULL));
    json_decref(tt_req(t, 404, "GET", "/v1/transit/keys/p", NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_and_read_every_type, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_create_refusals, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_sign_verify_every_type, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_sign_errors_in_openbao_order, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_batches_and_versions, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_derived_ed25519, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_export, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_rsa_encryption, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_hmac_keys, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_keys_survive_reopen, kt_setup, kt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
