/*
 * test_hmac.c - the Transit endpoints that are not encryption, through the whole pipeline:
 * hmac and HMAC verification (every algorithm, key_version rules, batches), sign and
 * signature verification (refused for kmsd's symmetric keys with OpenBao's messages), hash
 * (known answers of transit-api.md §9 I) and random (sources, formats and limits).
 *
 * HMACs are recomputed outside the engine from the exported hmac-key, so the test checks the
 * key, the algorithm and the "vault:v<N>:" encoding, not just a round trip.
 */
#include "tests/engine/transit/transit_util.h"

static const char *const algs[] = {"sha1",     "sha2-224", "sha2-256", "sha2-384", "sha2-512",
                                   "sha3-224", "sha3-256", "sha3-384", "sha3-512"};
#define NALGS (sizeof(algs) / sizeof(algs[0]))

/* The expected "vault:v<ver>:<b64 mac>" from the exported HMAC key of `name`. */
static void expected_hmac(struct kt *t, const char *name, int ver, const char *alg,
                          const char *input, char *out, size_t n)
{
    char target[160];
    char v[16];
    enum kms_hash h;
    uint8_t *key = NULL;
    size_t klen = 0, at = 0;
    uint8_t mac[KMS_HASH_MAX_LEN];
    char b64[128];
    snprintf(target, sizeof(target), "/v1/transit/export/hmac-key/%s/%d", name, ver);
    snprintf(v, sizeof(v), "%d", ver);
    json_t *b = tt_req(t, 200, "GET", target, NULL);
    const char *kb = json_string_value(json_object_get(kt_data(b, "keys"), v));
    assert_int_equal(kms_b64_decode_alloc(kb, strlen(kb), &key, &klen, &at), 0);
    json_decref(b);
    assert_int_equal(klen, 32);
    assert_int_equal(kms_hash_parse(alg, &h), 0);
    assert_int_equal(kms_hmac(h, key, klen, input, strlen(input), mac), 0);
    kms_b64_encode(mac, kms_hash_len(h), b64);
    snprintf(out, n, "vault:v%d:%s", ver, b64);
    free(key);
}

static void test_hmac_every_algorithm(void **state)
{
    struct kt *t = *state;
    char want[256];
    char body[512];
    char target[128];
    tt_create(t, "h", "{\"exportable\":true,\"type\":\"xchacha20-poly1305\"}");
    for (size_t i = 0; i < NALGS; i++) {
        expected_hmac(t, "h", 1, algs[i], "hello", want, sizeof(want));
        /* the algorithm in the URL ... */
        snprintf(target, sizeof(target), "/v1/transit/hmac/h/%s", algs[i]);
        json_t *b =
            tt_req(t, 200, "POST", target, "{\"input\":\"aGVsbG8=\",\"algorithm\":\"sha1\"}");
        assert_string_equal(tt_str(b, "hmac"), want);
        json_decref(b);
        /* ... or in the body */
        snprintf(body, sizeof(body), "{\"input\":\"aGVsbG8=\",\"algorithm\":\"%s\"}", algs[i]);
        b = tt_req(t, 200, "POST", "/v1/transit/hmac/h", body);
        assert_string_equal(tt_str(b, "hmac"), want);
        json_decref(b);
        /* and it verifies with the same algorithm, and not with another */
        snprintf(target, sizeof(target), "/v1/transit/verify/h/%s", algs[i]);
        snprintf(body, sizeof(body), "{\"input\":\"aGVsbG8=\",\"hmac\":\"%s\"}", want);
        b = tt_req(t, 200, "POST", target, body);
        assert_true(json_is_true(kt_data(b, "valid")));
        json_decref(b);
        snprintf(target, sizeof(target), "/v1/transit/verify/h/%s", algs[(i + 1) % NALGS]);
        b = tt_req(t, 200, "POST", target, body);
        assert_true(json_is_false(kt_data(b, "valid")));
        json_decref(b);
    }
    /* default sha2-256 */
    expected_hmac(t, "h", 1, "sha2-256", "hello", want, sizeof(want));
    json_t *b = tt_req(t, 200, "POST", "/v1/transit/hmac/h", "{\"input\":\"aGVsbG8=\"}");
    assert_string_equal(tt_str(b, "hmac"), want);
    json_decref(b);
    tt_fail(t, 400, "POST", "/v1/transit/hmac/h/none", "{\"input\":\"aGVsbG8=\"}",
            "unsupported algorithm none");
    tt_fail(t, 400, "POST", "/v1/transit/hmac/h", "{\"input\":\"aGVsbG8=\",\"algorithm\":\"md5\"}",
            "unsupported algorithm md5");
}

static void test_hmac_errors_and_versions(void **state)
{
    struct kt *t = *state;
    char want[256];
    tt_fail(t, 400, "POST", "/v1/transit/hmac/none", "{\"input\":\"YQ==\"}",
            "encryption key not found");
    tt_create(t, "hv", "{\"exportable\":true}");
    tt_fail(t, 400, "POST", "/v1/transit/hmac/hv", "{}", "missing input for HMAC");
    tt_fail(t, 400, "POST", "/v1/transit/hmac/hv", "{\"input\":\"aGVsbG8\"}",
            "unable to decode input as base64: illegal base64 data at input byte 4");
    for (int i = 0; i < 3; i++) {
        json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/hv/rotate", NULL));
    }
    /* each version has its own HMAC key; 0 is the latest */
    expected_hmac(t, "hv", 4, "sha2-256", "hello", want, sizeof(want));
    json_t *b =
        tt_req(t, 200, "POST", "/v1/transit/hmac/hv", "{\"input\":\"aGVsbG8=\",\"key_version\":0}");
    assert_string_equal(tt_str(b, "hmac"), want);
    json_decref(b);
    expected_hmac(t, "hv", 2, "sha2-256", "hello", want, sizeof(want));
    b = tt_req(t, 200, "POST", "/v1/transit/hmac/hv", "{\"input\":\"aGVsbG8=\",\"key_version\":2}");
    assert_string_equal(tt_str(b, "hmac"), want);
    json_decref(b);
    tt_fail(t, 400, "POST", "/v1/transit/hmac/hv", "{\"input\":\"YQ==\",\"key_version\":5}",
            "key version does not exist; latest key version is 4");
    tt_fail(t, 400, "POST", "/v1/transit/hmac/hv", "{\"input\":\"YQ==\",\"key_version\":-1}",
            "key version does not exist (cannot be negative)");
    json_decref(
        tt_req(t, 200, "POST", "/v1/transit/keys/hv/config", "{\"min_decryption_version\":2}"));
    tt_fail(t, 400, "POST", "/v1/transit/hmac/hv", "{\"input\":\"YQ==\",\"key_version\":1}",
            "no such key version");
    json_decref(
        tt_req(t, 200, "POST", "/v1/transit/keys/hv/config", "{\"min_encryption_version\":3}"));
    tt_fail(t, 400, "POST", "/v1/transit/hmac/hv", "{\"input\":\"YQ==\",\"key_version\":2}",
            "cannot generate HMAC: version is too old (disallowed by policy)");
    /* verification may still use version 2 (min_decryption_version), not version 1 */
    char body[512];
    snprintf(body, sizeof(body), "{\"input\":\"aGVsbG8=\",\"hmac\":\"%s\"}", want);
    b = tt_req(t, 200, "POST", "/v1/transit/verify/hv", body);
    assert_true(json_is_true(kt_data(b, "valid")));
    json_decref(b);
    tt_fail(t, 400, "POST", "/v1/transit/verify/hv",
            "{\"input\":\"aGVsbG8=\",\"hmac\":\"vault:v1:AAAA\"}",
            "cannot verify HMAC: version is too old (disallowed by policy)");
    tt_fail(t, 400, "POST", "/v1/transit/verify/hv",
            "{\"input\":\"aGVsbG8=\",\"hmac\":\"vault:v5:AAAA\"}",
            "invalid HMAC: version is too new");
}

static void test_hmac_batch(void **state)
{
    struct kt *t = *state;
    char want[256];
    tt_create(t, "hb", "{\"exportable\":true}");
    expected_hmac(t, "hb", 1, "sha2-512", "hello", want, sizeof(want));
    json_t *b = tt_req(t, 200, "POST", "/v1/transit/hmac/hb/sha2-512",
                       "{\"batch_input\":[{\"input\":\"aGVsbG8=\",\"reference\":\"one\"},"
                       "{\"input\":\"!!\"},{\"reference\":\"three\"}]}");
    json_t *r = kt_data(b, "batch_results");
    assert_int_equal(json_array_size(r), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(r, 0), "hmac")), want);
    assert_string_equal(json_string_value(json_object_get(json_array_get(r, 0), "reference")),
                        "one");
    assert_string_equal(json_string_value(json_object_get(json_array_get(r, 1), "error")),
                        "unable to decode input as base64: illegal base64 data at input byte 0");
    assert_string_equal(json_string_value(json_object_get(json_array_get(r, 1), "reference")), "");
    assert_string_equal(json_string_value(json_object_get(json_array_get(r, 2), "error")),
                        "missing input for HMAC");
    json_decref(b);
    tt_fail(t, 400, "POST", "/v1/transit/hmac/hb", "{\"batch_input\":[]}",
            "missing batch input to process");
    /* mapstructure v2 into []batchRequestHMACItem (map[string]string), as OpenBao */
    tt_fail(t, 500, "POST", "/v1/transit/hmac/hb", "{\"batch_input\":{}}",
            "1 error occurred:\n\t* failed to parse batch input: '' source data must be an "
            "array or slice, got map\n\n");
    tt_fail(t, 500, "POST", "/v1/transit/hmac/hb", "{\"batch_input\":[{\"input\":true}]}",
            "1 error occurred:\n\t* failed to parse batch input: decoding failed due to the "
            "following error(s):\n\n'[0][input]' expected type "
            "'string', got unconvertible type 'bool'\n\n");
    tt_fail(t, 500, "POST", "/v1/transit/hmac/hb", "{\"batch_input\":[{\"input\":\"eA==\"},1,[]]}",
            "1 error occurred:\n\t* failed to parse batch input: decoding failed due to the "
            "following error(s):\n\n'[1]' expected type "
            "'transit.batchRequestHMACItem', got unconvertible type 'json.Number'\n'[2]' "
            "expected type 'transit.batchRequestHMACItem', got unconvertible type '[]interface "
            "{}'\n\n");
    /* a number is its text, null the empty string */
    b = tt_req(t, 200, "POST", "/v1/transit/hmac/hb",
               "{\"batch_input\":[{\"input\":1234,\"reference\":5},{\"input\":null}]}");
    r = kt_data(b, "batch_results");
    assert_string_equal(json_string_value(json_object_get(json_array_get(r, 0), "reference")), "5");
    assert_non_null(json_object_get(json_array_get(r, 0), "hmac"));
    assert_non_null(json_object_get(json_array_get(r, 1), "hmac"));
    json_decref(b);

    /* verify batch: `valid` omitted when false, errors per item, always 200 */
    char body[1024];
    snprintf(body, sizeof(body),
             "{\"batch_input\":[{\"input\":\"aGVsbG8=\",\"hmac\":\"%s\",\"reference\":\"a\"},"
             "{\"input\":\"eA==\",\"hmac\":\"%s\"},{\"input\":\"eA==\",\"hmac\":\"bad\"}]}",
             want, want);
    b = tt_req(t, 200, "POST", "/v1/transit/verify/hb/sha2-512", body);
    r = kt_data(b, "batch_results");
    assert_true(json_is_true(json_object_get(json_array_get(r, 0), "valid")));
    assert_string_equal(json_string_value(json_object_get(json_array_get(r, 0), "reference")), "a");
    assert_null(json_object_get(json_array_get(r, 1), "valid"));
    assert_null(json_object_get(json_array_get(r, 1), "error"));
    assert_string_equal(json_string_value(json_object_get(json_array_get(r, 2), "error")),
                        "invalid HMAC to verify: no prefix");
    json_decref(b);
}

static void test_verify_dispatch_and_errors(void **state)
{
    struct kt *t = *state;
    tt_create(t, "vd", NULL);
    tt_fail(t, 400, "POST", "/v1/transit/verify/vd", "{\"input\":\"YQ==\"}",
            "neither a 'signature' nor an 'hmac' were given to verify");
    tt_fail(t, 400, "POST", "/v1/transit/verify/vd",
            "{\"input\":\"YQ==\",\"hmac\":\"x\",\"signature\":\"y\"}",
            "provide one of 'signature' or 'hmac'");
    tt_fail(t, 400, "POST", "/v1/transit/verify/vd",
            "{\"batch_input\":[{\"input\":\"YQ==\",\"hmac\":\"x\"},{\"input\":\"YQ==\","
            "\"signature\":\"y\"}]}",
            "elements of batch_input must all provide 'signature' or all provide 'hmac'");
    tt_fail(t, 400, "POST", "/v1/transit/verify/vd", "{\"batch_input\":[{\"input\":\"YQ==\"}]}",
            "no batch_input elements have 'signature' or 'hmac'");
    tt_fail(t, 400, "POST", "/v1/transit/verify/vd",
            "{\"batch_input\":[{\"input\":\"YQ==\",\"signature\":\"x\"},{\"input\":\"YQ==\"}]}",
            "some elements of batch_input are missing 'signature'");
    tt_fail(t, 400, "POST", "/v1/transit/verify/vd",
            "{\"batch_input\":[{\"input\":\"YQ==\",\"hmac\":\"x\"},{\"input\":\"YQ==\"}]}",
            "some elements of batch_input are missing 'hmac'");
    /* signatures: kmsd's keys cannot sign */
    tt_fail(t, 400, "POST", "/v1/transit/verify/none", "{\"input\":\"YQ==\",\"signature\":\"x\"}",
            "signature verification key not found");
    tt_fail(t, 400, "POST", "/v1/transit/verify/vd", "{\"input\":\"YQ==\",\"signature\":\"x\"}",
            "key type aes256-gcm96 does not support verification");
    tt_fail(t, 400, "POST", "/v1/transit/verify/vd",
            "{\"batch_input\":[{\"input\":\"YQ==\",\"signature\":\"x\"}]}",
            "key type aes256-gcm96 does not support verification");
    tt_fail(t, 400, "POST", "/v1/transit/sign/none", "{\"input\":\"YQ==\"}",
            "signing key not found");
    tt_fail(t, 400, "POST", "/v1/transit/sign/vd/sha2-256", "{\"input\":\"YQ==\"}",
            "key type aes256-gcm96 does not support signing");
    /* HMAC mode */
    tt_fail(t, 400, "POST", "/v1/transit/verify/none", "{\"input\":\"YQ==\",\"hmac\":\"x\"}",
            "encryption key not found");
    tt_fail(t, 400, "POST", "/v1/transit/verify/vd/none", "{\"input\":\"YQ==\",\"hmac\":\"x\"}",
            "invalid hash algorithm \"none\"");
    tt_fail(t, 400, "POST", "/v1/transit/verify/vd",
            "{\"input\":\"YQ==\",\"hmac\":\"x\",\"hash_algorithm\":\"sha2-999\"}",
            "invalid hash algorithm \"sha2-999\"");
    /* the deprecated algorithm counts only when hash_algorithm (default sha2-256) is empty */
    tt_fail(t, 400, "POST", "/v1/transit/verify/vd",
            "{\"input\":\"YQ==\",\"hmac\":\"x\",\"hash_algorithm\":\"\",\"algorithm\":\"md4\"}",
            "invalid hash algorithm \"md4\"");
    tt_fail(t, 400, "POST", "/v1/transit/verify/vd",
            "{\"input\":\"YQ==\",\"hmac\":\"x\",\"algorithm\":\"md4\"}",
            "invalid HMAC to verify: no prefix");
    /* a present but empty hmac is checked for its prefix ("missing hmac" is a batch item's
     * without one) */
    tt_fail(t, 400, "POST", "/v1/transit/verify/vd", "{\"input\":\"YQ==\",\"hmac\":\"\"}",
            "invalid HMAC to verify: no prefix");
    /* the input is decoded before the HMAC is looked at */
    tt_fail(t, 400, "POST", "/v1/transit/verify/vd", "{\"input\":\"Y\",\"hmac\":\"\"}",
            "unable to decode input as base64: illegal base64 data at input byte 0");
    tt_fail(t, 400, "POST", "/v1/transit/verify/vd", "{\"input\":\"YQ==\",\"hmac\":\"vault:v1\"}",
            "invalid HMAC: wrong number of fields");
    tt_fail(t, 400, "POST", "/v1/transit/verify/vd",
            "{\"input\":\"YQ==\",\"hmac\":\"vault:vx:AA\"}",
            "invalid HMAC: version number could not be decoded");
    tt_fail(t, 400, "POST", "/v1/transit/verify/vd", "{\"input\":\"YQ==\",\"hmac\":\"vault:v:AA\"}",
            "invalid HMAC: version number could not be decoded");
    tt_fail(t, 400, "POST", "/v1/transit/verify/vd", "{\"input\":\"YQ==\",\"hmac\":\"vault:v1:A\"}",
            "unable to decode verification HMAC as base64: illegal base64 data at input byte 0");
    tt_fail(t, 400, "POST", "/v1/transit/verify/vd", "{\"input\":\"Y\",\"hmac\":\"vault:v1:AAAA\"}",
            "unable to decode input as base64: illegal base64 data at input byte 0");

    /* hash_algorithm and the deprecated algorithm both select the HMAC; the URL wins */
    json_t *b = tt_req(t, 200, "POST", "/v1/transit/hmac/vd/sha2-384", "{\"input\":\"YQ==\"}");
    char mac[256];
    snprintf(mac, sizeof(mac), "%s", tt_str(b, "hmac"));
    json_decref(b);
    static const char *const ways[] = {
        "/v1/transit/verify/"
        "vd|{\"input\":\"YQ==\",\"hmac\":\"%s\",\"hash_algorithm\":\"sha2-384\"}",
        "/v1/transit/verify/"
        "vd|{\"input\":\"YQ==\",\"hmac\":\"%s\",\"hash_algorithm\":\"\",\"algorithm\":\"sha2-"
        "384\"}",
        "/v1/transit/verify/vd/sha2-384|{\"input\":\"YQ==\",\"hmac\":\"%s\","
        "\"hash_algorithm\":\"sha1\"}",
    };
    for (size_t i = 0; i < 3; i++) {
        char target[128];
        char fmt[256];
        char body[512];
        const char *bar = strchr(ways[i], '|');
        snprintf(target, sizeof(target), "%.*s", (int)(bar - ways[i]), ways[i]);
        snprintf(fmt, sizeof(fmt), "%s", bar + 1);
        char *pct = strstr(fmt, "%s");
        snprintf(body, sizeof(body), "%.*s%s%s", (int)(pct - fmt), fmt, mac, pct + 2);
        b = tt_req(t, 200, "POST", target, body);
        assert_true(json_is_true(kt_data(b, "valid")));
        json_decref(b);
    }
    /* a tampered HMAC (same length) is just invalid */
    char bad[256];
    snprintf(bad, sizeof(bad), "%s", mac);
    bad[10] = bad[10] == 'A' ? 'B' : 'A';
    char body[512];
    snprintf(body, sizeof(body), "{\"input\":\"YQ==\",\"hmac\":\"%s\"}", bad);
    b = tt_req(t, 200, "POST", "/v1/transit/verify/vd/sha2-384", body);
    assert_true(json_is_false(kt_data(b, "valid")));
    json_decref(b);
    /* the deprecated algorithm alone is not read: the sha2-384 HMAC is checked as sha2-256 */
    snprintf(body, sizeof(body), "{\"input\":\"YQ==\",\"hmac\":\"%s\",\"algorithm\":\"sha2-384\"}",
             mac);
    b = tt_req(t, 200, "POST", "/v1/transit/verify/vd", body);
    assert_true(json_is_false(kt_data(b, "valid")));
    json_decref(b);
    /* a missing input is the empty input (a batch item without one is an error) */
    b = tt_req(t, 200, "POST", "/v1/transit/hmac/vd", "{\"input\":\"\"}");
    snprintf(body, sizeof(body), "{\"hmac\":\"%s\"}", tt_str(b, "hmac"));
    json_decref(b);
    b = tt_req(t, 200, "POST", "/v1/transit/verify/vd", body);
    assert_true(json_is_true(kt_data(b, "valid")));
    json_decref(b);
    /* the URL's algorithm is its own field: a body algorithm beside it is no replaced value */
    b = tt_req(t, 200, "POST", "/v1/transit/hmac/vd/sha2-384",
               "{\"input\":\"YQ==\",\"algorithm\":\"sha1\"}");
    assert_string_equal(tt_str(b, "hmac"), mac);
    assert_null(json_object_get(b, "warnings") ? json_array_get(json_object_get(b, "warnings"), 0)
                                               : NULL);
    json_decref(b);
}

static void test_hash(void **state)
{
    struct kt *t = *state;
    json_t *b = tt_req(t, 200, "POST", "/v1/transit/hash", "{\"input\":\"aGVsbG8=\"}");
    assert_string_equal(tt_str(b, "sum"),
                        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    json_decref(b);
    b = tt_req(t, 200, "POST", "/v1/transit/hash/sha2-256",
               "{\"input\":\"aGVsbG8=\",\"format\":\"base64\",\"algorithm\":\"sha2-512\"}");
    assert_string_equal(tt_str(b, "sum"), "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=");
    json_decref(b);
    b = tt_req(t, 200, "POST", "/v1/transit/hash/sha3-256", "{\"input\":\"\"}");
    assert_string_equal(tt_str(b, "sum"),
                        "a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a");
    json_decref(b);
    static const struct {
        const char *alg;
        size_t hexlen;
    } lens[] = {{"sha2-224", 56}, {"sha2-384", 96}, {"sha2-512", 128},
                {"sha3-224", 56}, {"sha3-384", 96}, {"sha3-512", 128}};
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        char body[128];
        snprintf(body, sizeof(body), "{\"input\":\"aGVsbG8=\",\"algorithm\":\"%s\"}", lens[i].alg);
        b = tt_req(t, 200, "POST", "/v1/transit/hash", body);
        assert_int_equal(strlen(tt_str(b, "sum")), lens[i].hexlen);
        json_decref(b);
    }
    tt_fail(t, 400, "POST", "/v1/transit/hash", "{}", "input missing");
    tt_fail(t, 400, "POST", "/v1/transit/hash", "{\"input\":\"a\"}",
            "unable to decode input as base64: illegal base64 data at input byte 0");
    /* the format is checked before the algorithm */
    tt_fail(t, 400, "POST", "/v1/transit/hash/bogus", "{\"input\":\"YQ==\",\"format\":\"raw\"}",
            "unsupported encoding format raw; must be \"hex\" or \"base64\"");
    tt_fail(t, 400, "POST", "/v1/transit/hash/bogus", "{\"input\":\"YQ==\"}",
            "unsupported algorithm bogus");
    tt_fail(t, 400, "POST", "/v1/transit/hash/sha1", "{\"input\":\"YQ==\"}",
            "unsupported algorithm sha1");
}

/* Decoded length of data.random_bytes (hex or base64). */
static size_t random_len(json_t *b, bool hex)
{
    const char *s = tt_str(b, "random_bytes");
    if (hex) {
        for (const char *p = s; *p; p++) {
            assert_non_null(strchr("0123456789abcdef", *p));
        }
        return strlen(s) / 2;
    }
    uint8_t *out = NULL;
    size_t n = 0, at = 0;
    assert_int_equal(kms_b64_decode_alloc(s, strlen(s), &out, &n, &at), 0);
    free(out);
    return n;
}

static void test_random(void **state)
{
    struct kt *t = *state;
    json_t *b = tt_req(t, 200, "POST", "/v1/transit/random", "{}");
    assert_int_equal(random_len(b, false), 32);
    json_t *b2 = tt_req(t, 200, "POST", "/v1/transit/random", "{}");
    assert_string_not_equal(tt_str(b, "random_bytes"), tt_str(b2, "random_bytes"));
    json_decref(b);
    json_decref(b2);
    b = tt_req(t, 200, "POST", "/v1/transit/random", "{\"bytes\":10,\"format\":\"hex\"}");
    assert_int_equal(random_len(b, true), 10);
    assert_null(json_object_get(b, "warnings") ? json_array_get(json_object_get(b, "warnings"), 0)
                                               : NULL);
    json_decref(b);
    b = tt_req(t, 200, "POST", "/v1/transit/random/64", "{}");
    assert_int_equal(random_len(b, false), 64);
    json_decref(b);
    b = tt_req(t, 200, "POST", "/v1/transit/random/all/16", "{\"format\":\"hex\"}");
    assert_int_equal(random_len(b, true), 16);
    assert_null(json_array_get(json_object_get(b, "warnings"), 0)); /* only seal warns */
    json_decref(b);
    b = tt_req(t, 200, "POST", "/v1/transit/random/seal", "{\"bytes\":\"8\"}");
    assert_int_equal(random_len(b, false), 8);
    assert_string_equal(tt_warning(b),
                        "no seal/entropy augmentation available, using platform entropy source");
    json_decref(b);
    b = tt_req(t, 200, "POST", "/v1/transit/random/platform/131072", "{}");
    assert_int_equal(random_len(b, false), 131072);
    json_decref(b);
    tt_fail(t, 400, "POST", "/v1/transit/random/131073", "{}",
            "'bytes' should be less than 131072");
    tt_fail(t, 400, "POST", "/v1/transit/random", "{\"bytes\":0}", "'bytes' cannot be less than 1");
    tt_fail(t, 400, "POST", "/v1/transit/random/hex", "{}",
            "error parsing url-set byte count: strconv.Atoi: parsing \"hex\": invalid syntax");
    tt_fail(t, 400, "POST", "/v1/transit/random", "{\"format\":\"raw\"}",
            "unsupported encoding format \"raw\"; must be \"hex\" or \"base64\"");
    /* a body source is replaced by the path's (empty) capture, as in OpenBao */
    b = tt_req(t, 200, "POST", "/v1/transit/random", "{\"source\":\"moon\"}");
    assert_int_equal(random_len(b, false), 32);
    json_decref(b);
    tt_fail(t, 400, "POST", "/v1/transit/random/moon/8", "{}",
            "unsupported entropy source \"moon\"; must be \"platform\" or \"seal\", or \"all\"");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_hmac_every_algorithm, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_hmac_errors_and_versions, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_hmac_batch, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_verify_dispatch_and_errors, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_hash, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_random, kt_setup, kt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
