/*
 * test_crypto.c - Transit encrypt, decrypt, rewrap and datakey through the whole pipeline:
 * every key type plain, derived and convergent, with and without associated data; key_version
 * rules; ciphertext mutations; batch semantics and status codes (transit-api.md §3.8-§3.11,
 * §4); encrypt's upsert; and the key cache seeing every write at once.
 *
 * Ciphertexts are checked independently of the engine: the key is exported and the payload
 * opened with crypto/'s AEAD (after HKDF for derived keys, and with the convergent nonce
 * recomputed from the plaintext), so a wrong KDF, nonce or layout cannot pass unnoticed.
 */
#include "tests/engine/transit/transit_util.h"

struct type_case {
    const char *name;
    enum kms_aead aead;
    size_t key_len;
    size_t nonce_len;
    const char *auth_fail;
};

static const struct type_case types[] = {
    {"aes128-gcm96", KMS_AEAD_AES128_GCM, 16, 12, "cipher: message authentication failed"},
    {"aes256-gcm96", KMS_AEAD_AES256_GCM, 32, 12, "cipher: message authentication failed"},
    {"chacha20-poly1305", KMS_AEAD_CHACHA20_POLY1305, 32, 12,
     "chacha20poly1305: message authentication failed"},
    {"xchacha20-poly1305", KMS_AEAD_XCHACHA20_POLY1305, 32, 24,
     "chacha20poly1305: message authentication failed"},
};
#define NTYPES (sizeof(types) / sizeof(types[0]))

/* Decode base64 into a fresh buffer (asserting it decodes). */
static uint8_t *unb64(const char *s, size_t *len)
{
    uint8_t *out = NULL;
    size_t at = 0;
    assert_int_equal(kms_b64_decode_alloc(s, strlen(s), &out, len, &at), 0);
    return out;
}

/* The raw payload of "vault:vN:<b64>". */
static uint8_t *payload_of(const char *ct, size_t *len)
{
    const char *p = strchr(ct + 7, ':');
    assert_non_null(p);
    return unb64(p + 1, len);
}

/* Exported encryption key `version` of `name`. */
static uint8_t *exported_key(struct kt *t, const char *name, int version, size_t *len)
{
    char target[160];
    char ver[16];
    snprintf(target, sizeof(target), "/v1/transit/export/encryption-key/%s/%d", name, version);
    snprintf(ver, sizeof(ver), "%d", version);
    json_t *b = tt_req(t, 200, "GET", target, NULL);
    uint8_t *k = unb64(json_string_value(json_object_get(kt_data(b, "keys"), ver)), len);
    json_decref(b);
    return k;
}

/*
 * Open `ct` outside the engine: derive the operation key (and, when convergent, check the
 * nonce is HMAC-SHA256(nonce key, plaintext)), then AEAD-open and compare with `pt`.
 */
static void check_independently(struct kt *t, const struct type_case *tc, const char *name,
                                const char *ct, bool derived, bool convergent, const char *ctx,
                                const char *aad, const char *pt)
{
    size_t klen = 0, plen = 0;
    uint8_t *key = exported_key(t, name, 1, &klen);
    uint8_t *payload = payload_of(ct, &plen);
    uint8_t op[64 + 32];
    assert_int_equal(klen, tc->key_len);
    assert_int_equal(plen, strlen(pt) + tc->nonce_len + KMS_AEAD_TAG_LEN);
    if (derived) {
        size_t olen = tc->key_len + (convergent ? 32 : 0);
        assert_int_equal(
            kms_hkdf_sha256(key, klen, NULL, 0, (const uint8_t *)ctx, strlen(ctx), op, olen), 0);
    } else {
        memcpy(op, key, klen);
    }
    if (convergent) {
        uint8_t mac[32];
        assert_int_equal(kms_hmac(KMS_HASH_SHA2_256, op + tc->key_len, 32, pt, strlen(pt), mac), 0);
        assert_memory_equal(payload, mac, tc->nonce_len);
    }
    uint8_t out[256];
    assert_int_equal(kms_aead_open(tc->aead, op, payload, (const uint8_t *)aad,
                                   aad ? strlen(aad) : 0, payload + tc->nonce_len,
                                   plen - tc->nonce_len, out),
                     0);
    assert_memory_equal(out, pt, strlen(pt));
    free(key);
    free(payload);
}

static void test_every_type_plain_derived_convergent(void **state)
{
    struct kt *t = *state;
    char name[64];
    char body[256];
    char pt[64];
    char extra[128];
    tt_b64("hello", pt);
    for (size_t i = 0; i < NTYPES; i++) {
        for (int mode = 0; mode < 3; mode++) {
            bool derived = mode > 0;
            bool convergent = mode == 2;
            for (int with_ad = 0; with_ad < 2; with_ad++) {
                snprintf(name, sizeof(name), "k%zu-%d-%d", i, mode, with_ad);
                snprintf(body, sizeof(body),
                         "{\"type\":\"%s\",\"exportable\":true,\"derived\":%s,"
                         "\"convergent_encryption\":%s}",
                         types[i].name, derived ? "true" : "false", convergent ? "true" : "false");
                tt_create(t, name, body);
                snprintf(extra, sizeof(extra), "%s%s%s", derived ? "\"context\":\"Y3R4\"" : "",
                         derived && with_ad ? "," : "",
                         with_ad ? "\"associated_data\":\"YWQ=\"" : "");
                char *c1 = tt_encrypt(t, name, pt, extra);
                char *c2 = tt_encrypt(t, name, pt, extra);
                assert_true(strncmp(c1, "vault:v1:", 9) == 0);
                /* random nonces differ; convergent encryption is deterministic */
                if (convergent) {
                    assert_string_equal(c1, c2);
                } else {
                    assert_string_not_equal(c1, c2);
                }
                tt_decrypt_is(t, name, c1, extra, pt);
                check_independently(t, &types[i], name, c1, derived, convergent, "ctx",
                                    with_ad ? "ad" : NULL, "hello");
                if (with_ad) {
                    /* without (or with other) associated data the tag fails */
                    tt_decrypt_fails(t, name, c1, derived ? "\"context\":\"Y3R4\"" : "", 400,
                                     types[i].auth_fail);
                }
                if (derived) {
                    /* another context derives another key */
                    char *c3 = tt_encrypt(t, name, pt, "\"context\":\"b3RoZXI=\"");
                    assert_string_not_equal(c1, c3);
                    tt_decrypt_fails(t, name, c3, "\"context\":\"Y3R4\"", 400, types[i].auth_fail);
                    free(c3);
                }
                free(c1);
                free(c2);
            }
        }
    }
}

static void test_empty_and_large_plaintext(void **state)
{
    struct kt *t = *state;
    tt_create(t, "e", "{\"type\":\"xchacha20-poly1305\"}");
    char *ct = tt_encrypt(t, "e", "", NULL);
    size_t plen = 0;
    uint8_t *p = payload_of(ct, &plen);
    assert_int_equal(plen, 40);
    free(p);
    tt_decrypt_is(t, "e", ct, NULL, "");
    free(ct);

    /* exactly the plaintext limit is fine, one byte more is 413 */
    size_t lim = kms_api_limits(t->api)->max_plaintext_size;
    uint8_t *raw = calloc(1, lim + 1);
    char *b64 = malloc(kms_b64_encoded_len(lim + 1) + 1);
    char *body = malloc(kms_b64_encoded_len(lim + 1) + 64);
    kms_b64_encode(raw, lim, b64);
    snprintf(body, kms_b64_encoded_len(lim + 1) + 64, "{\"plaintext\":\"%s\"}", b64);
    json_t *b = tt_req(t, 200, "POST", "/v1/transit/encrypt/e", body);
    json_decref(b);
    kms_b64_encode(raw, lim + 1, b64);
    snprintf(body, kms_b64_encoded_len(lim + 1) + 64, "{\"plaintext\":\"%s\"}", b64);
    b = tt_req(t, 413, "POST", "/v1/transit/encrypt/e", body);
    assert_non_null(strstr(kt_err(b), "limit for direct encryption (max_plaintext_size)"));
    json_decref(b);
    free(raw);
    free(b64);
    free(body);
}

static void test_key_version_rules(void **state)
{
    struct kt *t = *state;
    tt_create(t, "v", NULL);
    for (int i = 0; i < 3; i++) {
        json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/v/rotate", NULL));
    }
    json_t *b = tt_req(t, 200, "POST", "/v1/transit/encrypt/v", "{\"plaintext\":\"YQ==\"}");
    assert_int_equal(json_integer_value(kt_data(b, "key_version")), 4);
    assert_true(strncmp(tt_str(b, "ciphertext"), "vault:v4:", 9) == 0);
    json_decref(b);
    b = tt_req(t, 200, "POST", "/v1/transit/encrypt/v",
               "{\"plaintext\":\"YQ==\",\"key_version\":2}");
    assert_int_equal(json_integer_value(kt_data(b, "key_version")), 2);
    char *v2 = strdup(tt_str(b, "ciphertext"));
    json_decref(b);
    b = tt_req(t, 200, "POST", "/v1/transit/encrypt/v",
               "{\"plaintext\":\"YQ==\",\"key_version\":\"0\"}");
    assert_int_equal(json_integer_value(kt_data(b, "key_version")), 4);
    json_decref(b);
    tt_fail(t, 400, "POST", "/v1/transit/encrypt/v", "{\"plaintext\":\"YQ==\",\"key_version\":5}",
            "requested version for encryption is higher than the latest key version");
    tt_fail(t, 400, "POST", "/v1/transit/encrypt/v", "{\"plaintext\":\"YQ==\",\"key_version\":-1}",
            "requested version for encryption is negative");
    json_decref(
        tt_req(t, 200, "POST", "/v1/transit/keys/v/config", "{\"min_encryption_version\":3}"));
    tt_fail(t, 400, "POST", "/v1/transit/encrypt/v", "{\"plaintext\":\"YQ==\",\"key_version\":2}",
            "requested version for encryption is less than the minimum encryption key version");
    tt_fail(t, 400, "POST", "/v1/transit/datakey/plaintext/v", "{\"key_version\":2}",
            "requested version for encryption is less than the minimum encryption key version");
    /* the v2 ciphertext still decrypts (min_decryption_version is 1) and rewraps to v4 */
    tt_decrypt_is(t, "v", v2, NULL, "YQ==");
    char body[512];
    snprintf(body, sizeof(body), "{\"ciphertext\":\"%s\"}", v2);
    b = tt_req(t, 200, "POST", "/v1/transit/rewrap/v", body);
    assert_int_equal(json_integer_value(kt_data(b, "key_version")), 4);
    assert_true(strncmp(tt_str(b, "ciphertext"), "vault:v4:", 9) == 0);
    tt_decrypt_is(t, "v", tt_str(b, "ciphertext"), NULL, "YQ==");
    json_decref(b);
    snprintf(body, sizeof(body), "{\"ciphertext\":\"%s\",\"key_version\":3}", v2);
    b = tt_req(t, 200, "POST", "/v1/transit/rewrap/v", body);
    assert_int_equal(json_integer_value(kt_data(b, "key_version")), 3);
    json_decref(b);
    snprintf(body, sizeof(body), "{\"ciphertext\":\"%s\",\"key_version\":9}", v2);
    tt_fail(t, 400, "POST", "/v1/transit/rewrap/v", body,
            "requested version for encryption is higher than the latest key version");
    snprintf(body, sizeof(body), "{\"ciphertext\":\"%s\",\"key_version\":2}", v2);
    tt_fail(t, 400, "POST", "/v1/transit/rewrap/v", body,
            "requested version for encryption is less than the minimum encryption key version");
    free(v2);
}

static void test_ciphertext_mutations(void **state)
{
    struct kt *t = *state;
    char pt[16];
    tt_create(t, "m", NULL);
    char *ct = tt_encrypt(t, "m", tt_b64("hello", pt), NULL);
    tt_decrypt_fails(t, "m", "", NULL, 400, "missing ciphertext to decrypt");
    tt_fail(t, 400, "POST", "/v1/transit/decrypt/m", "{}", "missing ciphertext to decrypt");
    tt_decrypt_fails(t, "m", "abc", NULL, 400, "invalid ciphertext: no prefix");
    tt_decrypt_fails(t, "m", "vault:v1", NULL, 400, "invalid ciphertext: wrong number of fields");
    tt_decrypt_fails(t, "m", "vault:vX:AAAA", NULL, 400,
                     "invalid ciphertext: version number could not be decoded");
    tt_decrypt_fails(t, "m", "vault:v99:AAAA", NULL, 400, "invalid ciphertext: version is too new");
    tt_decrypt_fails(t, "m", "vault:v1:%%%", NULL, 400,
                     "invalid ciphertext: could not decode base64");
    tt_decrypt_fails(t, "m", "vault:v1:AAAA", NULL, 400, "invalid ciphertext length");
    tt_decrypt_fails(t, "m", "vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", NULL, 400,
                     "cipher: message authentication failed");
    /* v0 is v1 (the first implementation numbered from 0) */
    char zero[256];
    snprintf(zero, sizeof(zero), "vault:v0:%s", ct + 9);
    tt_decrypt_is(t, "m", zero, NULL, pt);
    /* a flipped bit in the tag */
    char flipped[256];
    snprintf(flipped, sizeof(flipped), "%s", ct);
    size_t n = strlen(flipped);
    flipped[n - 3] = flipped[n - 3] == 'A' ? 'B' : 'A';
    tt_decrypt_fails(t, "m", flipped, NULL, 400, "cipher: message authentication failed");
    tt_decrypt_fails(t, "nokey", ct, NULL, 400, "encryption key not found");
    free(ct);
}

static void test_derived_context_rules(void **state)
{
    struct kt *t = *state;
    tt_create(t, "dk", "{\"derived\":true}");
    const char *missing = "missing 'context' for key derivation; the key was created using a "
                          "derived key, which means additional, per-request information must be "
                          "included in order to perform operations with the key";
    tt_fail(t, 400, "POST", "/v1/transit/encrypt/dk", "{\"plaintext\":\"YQ==\"}", missing);
    char *ct = tt_encrypt(t, "dk", "YQ==", "\"context\":\"Y3R4\"");
    tt_decrypt_fails(t, "dk", ct, NULL, 400, missing);
    tt_fail(t, 400, "POST", "/v1/transit/datakey/wrapped/dk", "{}", missing);
    tt_fail(t, 400, "POST", "/v1/transit/encrypt/dk",
            "{\"plaintext\":\"YQ==\",\"context\":\"%%%\"}", "illegal base64 data at input byte 0");
    tt_fail(t, 400, "POST", "/v1/transit/datakey/wrapped/dk", "{\"context\":\"%%%\"}",
            "failed to base64-decode context");
    /* context on only some items fails the whole request */
    tt_fail(t, 400, "POST", "/v1/transit/encrypt/dk",
            "{\"batch_input\":[{\"plaintext\":\"YQ==\",\"context\":\"Y3R4\"},{\"plaintext\":\"YQ=="
            "\"}]}",
            "context should be set either in all the request blocks or in none");
    /* a bad base64 context in one item is that item's error */
    json_t *b = tt_req(t, 400, "POST", "/v1/transit/encrypt/dk",
                       "{\"batch_input\":[{\"plaintext\":\"YQ==\",\"context\":\"Y3R4\"},"
                       "{\"plaintext\":\"YQ==\",\"context\":\"*\"}]}");
    json_t *r = kt_data(b, "batch_results");
    assert_non_null(json_object_get(json_array_get(r, 0), "ciphertext"));
    assert_string_equal(json_string_value(json_object_get(json_array_get(r, 1), "error")),
                        "illegal base64 data at input byte 0");
    json_decref(b);
    /* a context on a non-derived key is ignored */
    tt_create(t, "plain", NULL);
    char *p = tt_encrypt(t, "plain", "YQ==", "\"context\":\"Y3R4\"");
    tt_decrypt_is(t, "plain", p, NULL, "YQ==");
    free(p);
    free(ct);
}

static void test_associated_data_errors(void **state)
{
    struct kt *t = *state;
    tt_create(t, "ad", NULL);
    json_t *b = tt_req(t, 500, "POST", "/v1/transit/encrypt/ad",
                       "{\"plaintext\":\"YQ==\",\"associated_data\":\"***\"}");
    assert_string_equal(kt_err(b), "1 error occurred:\n\t* unable to get "
                                   "associated_data/additional_data from factory[0]: illegal "
                                   "base64 data at input byte 0\n\n");
    json_decref(b);
    char *ct = tt_encrypt(t, "ad", "YQ==", "\"associated_data\":\"YWQ=\"");
    tt_decrypt_fails(t, "ad", ct, "\"associated_data\":\"***\"", 500,
                     "1 error occurred:\n\t* unable to get associated_data/additional_data from "
                     "factory[0]: illegal base64 data at input byte 0\n\n");
    tt_decrypt_is(t, "ad", ct, "\"associated_data\":\"YWQ=\"", "YQ==");
    free(ct);
}

/* The batch_results array of a body. */
static json_t *results(json_t *b)
{
    json_t *r = kt_data(b, "batch_results");
    assert_true(json_is_array(r));
    return r;
}

static const char *item_str(json_t *r, size_t i, const char *key)
{
    const char *s = json_string_value(json_object_get(json_array_get(r, i), key));
    return s ? s : "";
}

/* one good item and one with bad base64, then more top-level members */
#define MIXED "{\"batch_input\":[{\"plaintext\":\"YQ==\"},{\"plaintext\":\"!\"}]%s}"

static void test_batch_status_codes(void **state)
{
    struct kt *t = *state;
    tt_create(t, "b", NULL);
    /* all ok: 200, order and references kept */
    json_t *b = tt_req(t, 200, "POST", "/v1/transit/encrypt/b",
                       "{\"batch_input\":[{\"plaintext\":\"YQ==\",\"reference\":\"r1\"},"
                       "{\"plaintext\":\"Yg==\"},{\"plaintext\":\"Yw==\",\"reference\":\"r3\"}]}");
    json_t *r = results(b);
    assert_int_equal(json_array_size(r), 3);
    assert_string_equal(item_str(r, 0, "reference"), "r1");
    assert_string_equal(item_str(r, 1, "reference"), "");
    assert_string_equal(item_str(r, 2, "reference"), "r3");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(r, 0), "key_version")), 1);
    assert_null(json_object_get(json_array_get(r, 0), "error"));
    assert_null(json_object_get(b, "errors"));
    char body[2048];
    snprintf(body, sizeof(body),
             "{\"batch_input\":[{\"ciphertext\":\"%s\",\"reference\":\"a\"},"
             "{\"ciphertext\":\"%s\"},{\"ciphertext\":\"%s\",\"reference\":\"c\"}]}",
             item_str(r, 0, "ciphertext"), item_str(r, 1, "ciphertext"),
             item_str(r, 2, "ciphertext"));
    json_decref(b);
    b = tt_req(t, 200, "POST", "/v1/transit/decrypt/b", body);
    r = results(b);
    assert_string_equal(item_str(r, 0, "plaintext"), "YQ==");
    assert_string_equal(item_str(r, 1, "plaintext"), "Yg==");
    assert_string_equal(item_str(r, 2, "plaintext"), "Yw==");
    assert_string_equal(item_str(r, 2, "reference"), "c");
    json_decref(b);

    /* mixed: 400, the full envelope with the results, no `errors` */
    snprintf(body, sizeof(body), MIXED, "");
    b = tt_req(t, 400, "POST", "/v1/transit/encrypt/b", body);
    r = results(b);
    assert_null(json_object_get(b, "errors"));
    assert_non_null(json_object_get(json_array_get(r, 0), "ciphertext"));
    assert_string_equal(item_str(r, 1, "error"), "illegal base64 data at input byte 0");
    assert_null(json_object_get(json_array_get(r, 1), "ciphertext"));
    json_decref(b);
    /* mixed with an override: that status */
    snprintf(body, sizeof(body), MIXED, ",\"partial_failure_response_code\":207");
    json_decref(tt_req(t, 207, "POST", "/v1/transit/encrypt/b", body));
    /* out-of-range overrides warn and keep 400 */
    snprintf(body, sizeof(body), MIXED, ",\"partial_failure_response_code\":600");
    b = tt_req(t, 400, "POST", "/v1/transit/encrypt/b", body);
    assert_string_equal(tt_warning(b), "invalid HTTP response code override from "
                                       "partial_failure_response_code, reverting to 400");
    json_decref(b);
    snprintf(body, sizeof(body), MIXED, ",\"partial_failure_response_code\":0");
    json_decref(tt_req(t, 400, "POST", "/v1/transit/encrypt/b", body));
    /* all failed: 400 regardless of the override */
    json_decref(tt_req(t, 400, "POST", "/v1/transit/encrypt/b",
                       "{\"batch_input\":[{\"plaintext\":\"!\"}],"
                       "\"partial_failure_response_code\":207}"));
    /* internal errors only: 500; with a success and an internal error: 500 too */
    json_decref(tt_req(t, 500, "POST", "/v1/transit/encrypt/b",
                       "{\"batch_input\":[{\"plaintext\":\"YQ==\",\"associated_data\":\"*\"}]}"));
    b = tt_req(t, 500, "POST", "/v1/transit/encrypt/b",
               "{\"batch_input\":[{\"plaintext\":\"YQ==\"},"
               "{\"plaintext\":\"YQ==\",\"associated_data\":\"*\"}]}");
    r = results(b);
    /* OpenBao's factory list is per item: always factory[0] */
    assert_non_null(strstr(item_str(r, 1, "error"), "factory[0]"));
    json_decref(b);
    /* decrypt batch: a failing item is reported with an empty plaintext */
    b = tt_req(t, 400, "POST", "/v1/transit/decrypt/b",
               "{\"batch_input\":[{\"ciphertext\":\"vault:v1:AAAA\",\"reference\":\"x\"},"
               "{\"ciphertext\":\"\"}],\"partial_failure_response_code\":299}");
    r = results(b);
    assert_string_equal(item_str(r, 0, "error"), "invalid ciphertext length");
    assert_string_equal(item_str(r, 0, "plaintext"), "");
    assert_string_equal(item_str(r, 0, "reference"), "x");
    assert_string_equal(item_str(r, 1, "error"), "missing ciphertext to decrypt");
    json_decref(b);
    /* an item without plaintext is an item error */
    b = tt_req(t, 400, "POST", "/v1/transit/encrypt/b",
               "{\"batch_input\":[{\"reference\":\"z\"}]}");
    assert_string_equal(item_str(results(b), 0, "error"), "missing plaintext to encrypt");
    json_decref(b);
}

static void test_batch_malformed(void **state)
{
    struct kt *t = *state;
    tt_create(t, "bm", NULL);
    tt_fail(t, 400, "POST", "/v1/transit/encrypt/bm", "{\"batch_input\":[]}",
            "missing batch input to process");
    tt_fail(t, 400, "POST", "/v1/transit/decrypt/bm", "{\"batch_input\":[]}",
            "missing batch input to process");
    tt_fail(t, 500, "POST", "/v1/transit/encrypt/bm", "{\"batch_input\":{\"plaintext\":\"YQ==\"}}",
            "1 error occurred:\n\t* failed to parse batch input: source data must be an array or "
            "slice, got map[string]interface {}\n\n");
    tt_fail(t, 500, "POST", "/v1/transit/encrypt/bm", "{\"batch_input\":\"x\"}",
            "1 error occurred:\n\t* failed to parse batch input: source data must be an array or "
            "slice, got string\n\n");
    tt_fail(t, 500, "POST", "/v1/transit/encrypt/bm", "{\"batch_input\":[\"YQ==\"]}",
            "1 error occurred:\n\t* failed to parse batch input: [0] expected a map, got "
            "'string'\n\n");
    /* encrypt and decrypt's own decoder names the Go type (%T) */
    tt_fail(t, 500, "POST", "/v1/transit/encrypt/bm", "{\"batch_input\":[true]}",
            "1 error occurred:\n\t* failed to parse batch input: [0] expected a map, got "
            "'bool'\n\n");
    tt_fail(t, 500, "POST", "/v1/transit/encrypt/bm", "{\"batch_input\":[7]}",
            "1 error occurred:\n\t* failed to parse batch input: [0] expected a map, got "
            "'json.Number'\n\n");
    tt_fail(t, 500, "POST", "/v1/transit/encrypt/bm", "{\"batch_input\":false}",
            "1 error occurred:\n\t* failed to parse batch input: source data must be an array or "
            "slice, got bool\n\n");
    tt_fail(t, 500, "POST", "/v1/transit/encrypt/bm",
            "{\"batch_input\":[{\"plaintext\":\"YQ==\"},[1]]}",
            "1 error occurred:\n\t* failed to parse batch input: [1] expected a map, got "
            "'[]interface {}'\n\n");
    tt_fail(t, 500, "POST", "/v1/transit/encrypt/bm",
            "{\"batch_input\":[{\"plaintext\":\"YQ==\",\"context\":5}]}",
            "1 error occurred:\n\t* failed to parse batch input: '[0].context' expected type "
            "'string', got unconvertible type 'json.Number'\n\n");
    tt_fail(t, 500, "POST", "/v1/transit/encrypt/bm", "{\"batch_input\":[{\"plaintext\":true}]}",
            "1 error occurred:\n\t* failed to parse batch input: '[0].plaintext' expected type "
            "'string', got unconvertible type 'bool'\n\n");
    tt_fail(t, 500, "POST", "/v1/transit/encrypt/bm", "{\"batch_input\":[{\"plaintext\":{}}]}",
            "1 error occurred:\n\t* failed to parse batch input: '[0].plaintext' expected type "
            "'string', got unconvertible type 'map[string]interface {}'\n\n");
    tt_fail(t, 500, "POST", "/v1/transit/encrypt/bm",
            "{\"batch_input\":[{\"plaintext\":\"YQ==\",\"key_version\":\"1\"}]}",
            "1 error occurred:\n\t* failed to parse batch input: '[0].key_version' expected type "
            "'int', got unconvertible type 'string'\n\n");
    tt_fail(t, 500, "POST", "/v1/transit/encrypt/bm",
            "{\"batch_input\":[{\"plaintext\":\"YQ==\",\"key_version\":[]}]}",
            "1 error occurred:\n\t* failed to parse batch input: '[0].key_version' expected type "
            "'int', got unconvertible type '[]interface {}'\n\n");
    /* a fractional key_version, and every item's errors, one a line */
    tt_fail(t, 500, "POST", "/v1/transit/encrypt/bm",
            "{\"batch_input\":[{\"plaintext\":\"YQ==\",\"key_version\":1.5}]}",
            "1 error occurred:\n\t* failed to parse batch input: error decoding json.Number into "
            "[0].key_version: strconv.ParseInt: parsing \"1.5\": invalid syntax\n\n");
    tt_fail(t, 500, "POST", "/v1/transit/decrypt/bm",
            "{\"batch_input\":[{\"ciphertext\":\"x\",\"reference\":1},{\"context\":true,"
            "\"plaintext\":2}]}",
            "1 error occurred:\n\t* failed to parse batch input: '[0].reference' expected type "
            "'string', got unconvertible type 'json.Number'\n'[1].context' expected type "
            "'string', got unconvertible type 'bool'\n'[1].plaintext' expected type 'string', "
            "got unconvertible type 'json.Number'\n\n");
    /* rewrap decodes with mapstructure: a number is its text, its own words otherwise */
    tt_fail(t, 500, "POST", "/v1/transit/rewrap/bm", "{\"batch_input\":[\"x\",[]]}",
            "1 error occurred:\n\t* failed to parse batch input: decoding failed due to the "
            "following error(s):\n\n'[0]' expected a map or struct, "
            "got \"string\"\n'[1]' expected a map or struct, got \"slice\"\n\n");
    tt_fail(t, 500, "POST", "/v1/transit/rewrap/bm",
            "{\"batch_input\":[{\"ciphertext\":\"x\",\"key_version\":2.0}]}",
            "1 error occurred:\n\t* failed to parse batch input: decoding failed due to the "
            "following error(s):\n\n'[0].key_version' cannot parse "
            "value as 'int': strconv.ParseInt: parsing \"2.0\": invalid syntax\n\n");
    json_t *rw = tt_req(t, 200, "POST", "/v1/transit/rewrap/bm",
                        "{\"batch_input\":[{\"ciphertext\":5,\"reference\":7}]}");
    json_t *rw0 = json_array_get(kt_data(rw, "batch_results"), 0);
    assert_string_equal(json_string_value(json_object_get(rw0, "reference")), "7");
    assert_string_equal(json_string_value(json_object_get(rw0, "error")),
                        "invalid ciphertext: no prefix");
    json_decref(rw);
    /* unknown item keys and nulls are ignored; a per-item key_version applies */
    json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/bm/rotate", NULL));
    json_t *b = tt_req(t, 200, "POST", "/v1/transit/encrypt/bm",
                       "{\"key_version\":1,\"batch_input\":[{\"plaintext\":\"YQ==\",\"x\":1,"
                       "\"context\":null},{\"plaintext\":\"YQ==\",\"key_version\":2}]}");
    json_t *r = results(b);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(r, 0), "key_version")), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(r, 1), "key_version")), 2);
    json_decref(b);
}

static void test_batch_limit(void **state)
{
    struct kt *t = *state;
    t->opts.limits.max_batch_items = 2;
    kt_reopen(t);
    tt_create(t, "lim", NULL);
    const char *three = "{\"batch_input\":[{\"plaintext\":\"YQ==\"},{\"plaintext\":\"YQ==\"},"
                        "{\"plaintext\":\"YQ==\"}]}";
    const char *msg = "batch_input has 3 items, more than the limit of 2 (max_batch_items)";
    tt_fail(t, 400, "POST", "/v1/transit/encrypt/lim", three, msg);
    tt_fail(t, 400, "POST", "/v1/transit/hmac/lim",
            "{\"batch_input\":[{\"input\":\"YQ==\"},{\"input\":\"YQ==\"},{\"input\":\"YQ==\"}]}",
            msg);
    json_decref(tt_req(t, 200, "POST", "/v1/transit/encrypt/lim",
                       "{\"batch_input\":[{\"plaintext\":\"YQ==\"},{\"plaintext\":\"YQ==\"}]}"));
}

static void test_rewrap(void **state)
{
    struct kt *t = *state;
    tt_create(t, "rw", NULL);
    char *old = tt_encrypt(t, "rw", "YQ==", NULL);
    json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/rw/rotate", NULL));
    tt_fail(t, 400, "POST", "/v1/transit/rewrap/rw", "{}", "missing ciphertext to decrypt");
    tt_fail(t, 400, "POST", "/v1/transit/rewrap/none", "{\"ciphertext\":\"vault:v1:AAAA\"}",
            "encryption key not found");
    /* a fresh ciphertext every time, even when already at the latest version */
    char body[1024];
    snprintf(body, sizeof(body), "{\"ciphertext\":\"%s\"}", old);
    json_t *a = tt_req(t, 200, "POST", "/v1/transit/rewrap/rw", body);
    json_t *b = tt_req(t, 200, "POST", "/v1/transit/rewrap/rw", body);
    assert_string_not_equal(tt_str(a, "ciphertext"), tt_str(b, "ciphertext"));
    assert_true(strncmp(tt_str(a, "ciphertext"), "vault:v2:", 9) == 0);
    json_decref(a);
    json_decref(b);
    /* batch: always 200, item errors inside, references kept */
    snprintf(body, sizeof(body),
             "{\"batch_input\":[{\"ciphertext\":\"%s\",\"reference\":\"ok\"},"
             "{\"ciphertext\":\"bogus\",\"reference\":\"bad\"}]}",
             old);
    b = tt_req(t, 200, "POST", "/v1/transit/rewrap/rw", body);
    json_t *r = results(b);
    assert_true(strncmp(item_str(r, 0, "ciphertext"), "vault:v2:", 9) == 0);
    assert_string_equal(item_str(r, 0, "reference"), "ok");
    assert_string_equal(item_str(r, 1, "error"), "invalid ciphertext: no prefix");
    assert_string_equal(item_str(r, 1, "reference"), "bad");
    tt_decrypt_is(t, "rw", item_str(r, 0, "ciphertext"), NULL, "YQ==");
    json_decref(b);
    /* a single failure is the request's error */
    tt_fail(t, 400, "POST", "/v1/transit/rewrap/rw", "{\"ciphertext\":\"vault:v9:AAAA\"}",
            "invalid ciphertext: version is too new");
    /* derived keys need the context for both halves */
    tt_create(t, "rwd", "{\"derived\":true}");
    char *dct = tt_encrypt(t, "rwd", "YQ==", "\"context\":\"Y3R4\"");
    json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/rwd/rotate", NULL));
    snprintf(body, sizeof(body), "{\"ciphertext\":\"%s\",\"context\":\"Y3R4\"}", dct);
    b = tt_req(t, 200, "POST", "/v1/transit/rewrap/rwd", body);
    tt_decrypt_is(t, "rwd", tt_str(b, "ciphertext"), "\"context\":\"Y3R4\"", "YQ==");
    json_decref(b);
    free(dct);
    free(old);
}

static void test_datakey(void **state)
{
    struct kt *t = *state;
    tt_create(t, "dk", NULL);
    static const struct {
        int bits;
        size_t b64len;
    } sizes[] = {{128, 24}, {256, 44}, {512, 88}};
    for (size_t i = 0; i < 3; i++) {
        char body[64];
        snprintf(body, sizeof(body), "{\"bits\":%d}", sizes[i].bits);
        json_t *b = tt_req(t, 200, "POST", "/v1/transit/datakey/plaintext/dk", body);
        const char *pk = tt_str(b, "plaintext");
        assert_int_equal(strlen(pk), sizes[i].b64len);
        assert_int_equal(json_integer_value(kt_data(b, "key_version")), 1);
        /* decrypting the wrapped key yields the plaintext key */
        tt_decrypt_is(t, "dk", tt_str(b, "ciphertext"), NULL, pk);
        json_decref(b);
    }
    json_t *b = tt_req(t, 200, "POST", "/v1/transit/datakey/wrapped/dk", "{}");
    assert_null(kt_data(b, "plaintext"));
    assert_true(strncmp(tt_str(b, "ciphertext"), "vault:v1:", 9) == 0);
    json_decref(b);
    tt_fail(t, 400, "POST", "/v1/transit/datakey/plaintext/dk", "{\"bits\":64}",
            "invalid bit length");
    tt_fail(t, 400, "POST", "/v1/transit/datakey/other/dk", "{}",
            "Invalid path, must be 'plaintext' or 'wrapped'");
    tt_fail(t, 400, "POST", "/v1/transit/datakey/wrapped/none", "{}", "encryption key not found");
    /* associated data and derived keys */
    b = tt_req(t, 200, "POST", "/v1/transit/datakey/plaintext/dk",
               "{\"associated_data\":\"YWQ=\"}");
    tt_decrypt_is(t, "dk", tt_str(b, "ciphertext"), "\"associated_data\":\"YWQ=\"",
                  tt_str(b, "plaintext"));
    tt_decrypt_fails(t, "dk", tt_str(b, "ciphertext"), NULL, 400,
                     "cipher: message authentication failed");
    json_decref(b);
    tt_create(t, "dkd", "{\"derived\":true}");
    b = tt_req(t, 200, "POST", "/v1/transit/datakey/plaintext/dkd", "{\"context\":\"Y3R4\"}");
    tt_decrypt_is(t, "dkd", tt_str(b, "ciphertext"), "\"context\":\"Y3R4\"",
                  tt_str(b, "plaintext"));
    json_decref(b);
    /* datakey never creates keys */
    json_decref(tt_req(t, 404, "GET", "/v1/transit/keys/none", NULL));
}

static void test_upsert(void **state)
{
    struct kt *t = *state;
    /* plain upsert: aes256-gcm96, not derived */
    char *ct = tt_encrypt(t, "u1", "YQ==", NULL);
    json_t *b = tt_req(t, 200, "GET", "/v1/transit/keys/u1", NULL);
    assert_string_equal(tt_str(b, "type"), "aes256-gcm96");
    assert_true(json_is_false(kt_data(b, "derived")));
    json_decref(b);
    free(ct);
    /* a context makes it derived; type and convergent_encryption are honoured */
    ct = tt_encrypt(t, "u2", "YQ==",
                    "\"context\":\"Y3R4\",\"type\":\"chacha20-poly1305\","
                    "\"convergent_encryption\":true");
    b = tt_req(t, 200, "GET", "/v1/transit/keys/u2", NULL);
    assert_string_equal(tt_str(b, "type"), "chacha20-poly1305");
    assert_true(json_is_true(kt_data(b, "derived")));
    assert_true(json_is_true(kt_data(b, "convergent_encryption")));
    json_decref(b);
    char *again = tt_encrypt(t, "u2", "YQ==", "\"context\":\"Y3R4\"");
    assert_string_equal(ct, again);
    free(again);
    free(ct);
    tt_fail(t, 400, "POST", "/v1/transit/encrypt/u3",
            "{\"plaintext\":\"YQ==\",\"convergent_encryption\":true}",
            "convergent encryption requires derivation to be enabled, so context is required");
    tt_fail(t, 400, "POST", "/v1/transit/encrypt/u3",
            "{\"plaintext\":\"YQ==\",\"type\":\"ecdsa-p256\"}",
            "key type ecdsa-p256 not supported for this operation");
    tt_fail(t, 400, "POST", "/v1/transit/encrypt/u3",
            "{\"plaintext\":\"YQ==\",\"type\":\"rsa-2048\"}", "unknown key type rsa-2048");
    tt_fail(t, 400, "POST", "/v1/transit/encrypt/u3", "{}", "missing plaintext to encrypt");
    json_decref(tt_req(t, 404, "GET", "/v1/transit/keys/u3", NULL));
    /* an existing key keeps its type whatever `type` says */
    tt_create(t, "u4", "{\"type\":\"aes128-gcm96\"}");
    free(tt_encrypt(t, "u4", "YQ==", "\"type\":\"chacha20-poly1305\""));
    b = tt_req(t, 200, "GET", "/v1/transit/keys/u4", NULL);
    assert_string_equal(tt_str(b, "type"), "aes128-gcm96");
    json_decref(b);
}

/* A token whose only policy allows `caps` on transit/encrypt/<key>. */
static void token_with(struct kt *t, const char *caps, char *tok, size_t n)
{
    char body[512];
    snprintf(body, sizeof(body),
             "{\"policy\":\"path \\\"transit/encrypt/*\\\" { capabilities = [%s] }\"}", caps);
    json_decref(tt_req(t, 204, "POST", "/v1/sys/policy/enc", body));
    json_t *b = tt_req(t, 200, "POST", "/v1/auth/token/create",
                       "{\"policies\":[\"enc\"],\"no_default_policy\":true}");
    snprintf(tok, n, "%s",
             json_string_value(json_object_get(json_object_get(b, "auth"), "client_token")));
    json_decref(b);
}

static void test_upsert_needs_create_capability(void **state)
{
    struct kt *t = *state;
    char tok[KMS_TOKEN_MAX_LEN];
    json_t *b = NULL;
    token_with(t, "\\\"update\\\"", tok, sizeof(tok));
    /* update alone cannot create the key ... */
    assert_int_equal(
        kt_call(t, "POST", "/v1/transit/encrypt/new", tok, NULL, "{\"plaintext\":\"YQ==\"}", &b),
        403);
    json_decref(b);
    json_decref(tt_req(t, 404, "GET", "/v1/transit/keys/new", NULL));
    /* ... but encrypts once it exists */
    tt_create(t, "new", NULL);
    assert_int_equal(
        kt_call(t, "POST", "/v1/transit/encrypt/new", tok, NULL, "{\"plaintext\":\"YQ==\"}", &b),
        200);
    json_decref(b);
    /* create alone may upsert */
    token_with(t, "\\\"create\\\"", tok, sizeof(tok));
    assert_int_equal(
        kt_call(t, "POST", "/v1/transit/encrypt/new2", tok, NULL, "{\"plaintext\":\"YQ==\"}", &b),
        200);
    json_decref(b);
    json_decref(tt_req(t, 200, "GET", "/v1/transit/keys/new2", NULL));
}

static void test_keycache_sees_writes(void **state)
{
    struct kt *t = *state;
    tt_create(t, "kc", NULL);
    /* warm the cache with version 1 */
    char *v1 = tt_encrypt(t, "kc", "YQ==", NULL);
    tt_decrypt_is(t, "kc", v1, NULL, "YQ==");
    /* a rotate is seen by the very next encrypt */
    json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/kc/rotate", NULL));
    char *v2 = tt_encrypt(t, "kc", "Yg==", NULL);
    assert_true(strncmp(v2, "vault:v2:", 9) == 0);
    tt_decrypt_is(t, "kc", v1, NULL, "YQ==");
    /* raising min_decryption_version refuses v1 at once, in decrypt and rewrap */
    json_decref(
        tt_req(t, 200, "POST", "/v1/transit/keys/kc/config", "{\"min_decryption_version\":2}"));
    const char *too_old = "ciphertext or signature version is disallowed by policy (too old)";
    tt_decrypt_fails(t, "kc", v1, NULL, 400, too_old);
    char body[512];
    snprintf(body, sizeof(body), "{\"ciphertext\":\"%s\"}", v1);
    tt_fail(t, 400, "POST", "/v1/transit/rewrap/kc", body, too_old);
    tt_decrypt_is(t, "kc", v2, NULL, "Yg==");
    /* and lowering it again lets v1 through at once */
    json_decref(
        tt_req(t, 200, "POST", "/v1/transit/keys/kc/config", "{\"min_decryption_version\":1}"));
    tt_decrypt_is(t, "kc", v1, NULL, "YQ==");
    /* min_encryption_version applies at once too */
    json_decref(
        tt_req(t, 200, "POST", "/v1/transit/keys/kc/config", "{\"min_encryption_version\":2}"));
    tt_fail(t, 400, "POST", "/v1/transit/encrypt/kc", "{\"plaintext\":\"YQ==\",\"key_version\":1}",
            "requested version for encryption is less than the minimum encryption key version");
    free(v1);
    free(v2);
}

/*
 * On a key-cache miss, encrypt's existence check reads the policy and hands it on (on its
 * thread) to the handler that runs next. A write between the two must make it unusable: here
 * the check runs for a request the ACL then refuses, the key's config changes, and a decrypt
 * (which has no existence check of its own) must see the new config.
 */
static void test_existence_check_read_is_not_reused_after_a_write(void **state)
{
    struct kt *t = *state;
    char tok[KMS_TOKEN_MAX_LEN];
    json_t *b = NULL;
    tt_create(t, "ex", NULL);
    char *v1 = tt_encrypt(t, "ex", "YQ==", NULL);
    json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/ex/rotate", NULL)); /* not cached now */
    token_with(t, "\\\"read\\\"", tok, sizeof(tok));
    assert_int_equal(
        kt_call(t, "POST", "/v1/transit/encrypt/ex", tok, NULL, "{\"plaintext\":\"YQ==\"}", &b),
        403);
    json_decref(b);
    json_decref(
        tt_req(t, 200, "POST", "/v1/transit/keys/ex/config", "{\"min_decryption_version\":2}"));
    tt_decrypt_fails(t, "ex", v1, NULL, 400,
                     "ciphertext or signature version is disallowed by policy (too old)");
    /* and with no write in between, a refused check changes nothing either */
    json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/ex/rotate", NULL));
    assert_int_equal(
        kt_call(t, "POST", "/v1/transit/encrypt/ex", tok, NULL, "{\"plaintext\":\"YQ==\"}", &b),
        403);
    json_decref(b);
    char *v3 = tt_encrypt(t, "ex", "Yg==", NULL);
    assert_true(strncmp(v3, "vault:v3:", 9) == 0);
    tt_decrypt_is(t, "ex", v3, NULL, "Yg==");
    free(v1);
    free(v3);
}

static void test_keycache_eviction(void **state)
{
    struct kt *t = *state;
    /* one entry per bucket: more keys than buckets must evict, and every key still works */
    t->eopts.key_cache_size = 1;
    kt_reopen(t);
    enum { NKEYS = 1100 };
    char name[32];
    char target[96];
    static char cts[NKEYS][128];
    for (int i = 0; i < NKEYS; i++) {
        snprintf(name, sizeof(name), "ev%d", i);
        char *ct = tt_encrypt(t, name, "YQ==", NULL); /* upsert, then cached */
        snprintf(cts[i], sizeof(cts[i]), "%s", ct);
        free(ct);
    }
    for (int i = 0; i < NKEYS; i += 7) {
        snprintf(name, sizeof(name), "ev%d", i);
        tt_decrypt_is(t, name, cts[i], NULL, "YQ==");
    }
    /* rotating an evicted key and a cached one: both see version 2 */
    for (int i = NKEYS - 2; i < NKEYS; i++) {
        snprintf(target, sizeof(target), "/v1/transit/keys/ev%d/rotate", i);
        json_decref(tt_req(t, 200, "POST", target, NULL));
        snprintf(name, sizeof(name), "ev%d", i);
        char *ct = tt_encrypt(t, name, "YQ==", NULL);
        assert_true(strncmp(ct, "vault:v2:", 9) == 0);
        free(ct);
        tt_decrypt_is(t, name, cts[i], NULL, "YQ==");
    }
}

static void test_many_versions_in_one_batch(void **state)
{
    struct kt *t = *state;
    /* a batch touching more versions than the per-request cache holds */
    tt_create(t, "mv", NULL);
    char cts[10][128];
    for (int i = 0; i < 10; i++) {
        char *ct = tt_encrypt(t, "mv", "YQ==", NULL);
        snprintf(cts[i], sizeof(cts[i]), "%s", ct);
        free(ct);
        json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/mv/rotate", NULL));
    }
    char body[4096];
    size_t o = (size_t)snprintf(body, sizeof(body), "{\"batch_input\":[");
    for (int i = 0; i < 10; i++) {
        o += (size_t)snprintf(body + o, sizeof(body) - o, "%s{\"ciphertext\":\"%s\"}", i ? "," : "",
                              cts[i]);
    }
    snprintf(body + o, sizeof(body) - o, "]}");
    json_t *b = tt_req(t, 200, "POST", "/v1/transit/decrypt/mv", body);
    json_t *r = results(b);
    for (size_t i = 0; i < 10; i++) {
        assert_string_equal(item_str(r, i, "plaintext"), "YQ==");
    }
    json_decref(b);
    b = tt_req(t, 200, "POST", "/v1/transit/rewrap/mv", body);
    r = results(b);
    for (size_t i = 0; i < 10; i++) {
        assert_true(strncmp(item_str(r, i, "ciphertext"), "vault:v11:", 10) == 0);
    }
    json_decref(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_every_type_plain_derived_convergent, kt_setup,
                                        kt_teardown),
        cmocka_unit_test_setup_teardown(test_empty_and_large_plaintext, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_key_version_rules, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_ciphertext_mutations, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_derived_context_rules, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_associated_data_errors, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_batch_status_codes, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_batch_malformed, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_batch_limit, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_rewrap, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_datakey, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_upsert, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_upsert_needs_create_capability, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_keycache_sees_writes, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_existence_check_read_is_not_reused_after_a_write,
                                        kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_keycache_eviction, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_many_versions_in_one_batch, kt_setup, kt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
