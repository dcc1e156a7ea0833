/*
 * test_hash.c - crypto/hash.c: hash names, FIPS 180-4 / FIPS 202 "abc" digests, HMAC
 * (RFC 4231 test case 2, RFC 2202 for SHA-1) and HKDF-SHA256 (RFC 5869 test cases 1-3).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <pthread.h>
#include <string.h>

#include <cmocka.h>

#include "crypto/crypto.h"

static size_t unhex(const char *s, uint8_t *out)
{
    size_t n = strlen(s);

    assert_int_equal(kms_hex_decode(s, n, out), 0);
    return n / 2;
}

static void expect_hex(const uint8_t *got, size_t n, const char *want)
{
    char s[2 * KMS_HASH_MAX_LEN * 4 + 1];

    assert_true(2 * n < sizeof(s));
    kms_hex_encode(got, n, s);
    assert_string_equal(s, want);
}

static const struct {
    const char *name;
    enum kms_hash h;
    size_t len;
    const char *abc;
    const char *hmac_jefe;
} vectors[] = {
    {"sha1", KMS_HASH_SHA1, 20, "a9993e364706816aba3e25717850c26c9cd0d89d",
     "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"},
    {"sha2-224", KMS_HASH_SHA2_224, 28, "23097d223405d8228642a477bda255b32aadbce4bda0b3f7e36c9da7",
     "a30e01098bc6dbbf45690f3a7e9e6d0f8bbea2a39e6148008fd05e44"},
    {"sha2-256", KMS_HASH_SHA2_256, 32,
     "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
    {"sha2-384", KMS_HASH_SHA2_384, 48,
     "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed"
     "8086072ba1e7cc2358baeca134c825a7",
     "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e"
     "8e2240ca5e69e2c78b3239ecfab21649"},
    {"sha2-512", KMS_HASH_SHA2_512, 64,
     "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
     "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
     "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
     "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"},
    {"sha3-224", KMS_HASH_SHA3_224, 28, "e642824c3f8cf24ad09234ee7d3c766fc9a3a5168d0c94ad73b46fdf",
     "7fdb8dd88bd2f60d1b798634ad386811c2cfc85bfaf5d52bbace5e66"},
    {"sha3-256", KMS_HASH_SHA3_256, 32,
     "3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532",
     "c7d4072e788877ae3596bbb0da73b887c9171f93095b294ae857fbe2645e1ba5"},
    {"sha3-384", KMS_HASH_SHA3_384, 48,
     "ec01498288516fc926459f58e2c6ad8df9b473cb0fc08c2596da7cf0e49be4b2"
     "98d88cea927ac7f539f1edf228376d25",
     "f1101f8cbf9766fd6764d2ed61903f21ca9b18f57cf3e1a23ca13508a93243ce"
     "48c045dc007f26a21b3f5e0e9df4c20a"},
    {"sha3-512", KMS_HASH_SHA3_512, 64,
     "b751850b1a57168a5693cd924b6b096e08f621827444f70d884f5d0240d2712e"
     "10e116e9192af3c91a7ec57647e3934057340b4cf408d5a56592f8274eec53f0",
     "5a4bfeab6166427c7a3647b747292b8384537cdb89afb3bf5665e4c5e709350b"
     "287baec921fd7ca0ee7a0c31d022a95e1fc92ba9d77df883960275beb4e62024"},
};
#define N_VECTORS (sizeof(vectors) / sizeof(vectors[0]))

static void test_names(void **state)
{
    enum kms_hash h;

    for (size_t i = 0; i < N_VECTORS; i++) {
        assert_int_equal(kms_hash_parse(vectors[i].name, &h), 0);
        assert_int_equal(h, vectors[i].h);
        assert_string_equal(kms_hash_name(h), vectors[i].name);
        assert_int_equal(kms_hash_len(h), vectors[i].len);
    }
    assert_int_equal(kms_hash_parse("sha256", &h), -1);
    assert_int_equal(kms_hash_parse("SHA2-256", &h), -1);
    assert_int_equal(kms_hash_parse("none", &h), -1);
    assert_int_equal(kms_hash_parse("", &h), -1);
}

static void test_hash_abc(void **state)
{
    uint8_t out[KMS_HASH_MAX_LEN];

    for (size_t i = 0; i < N_VECTORS; i++) {
        assert_int_equal(kms_hash(vectors[i].h, "abc", 3, out), 0);
        expect_hex(out, vectors[i].len, vectors[i].abc);
    }
}

static void test_hash_transit_vectors(void **state)
{
    uint8_t out[KMS_HASH_MAX_LEN];
    char b64[64];

    /* Reference section 9 I. */
    assert_int_equal(kms_hash(KMS_HASH_SHA2_256, "hello", 5, out), 0);
    expect_hex(out, 32, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    kms_b64_encode(out, 32, b64);
    assert_string_equal(b64, "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=");
    assert_int_equal(kms_hash(KMS_HASH_SHA3_256, NULL, 0, out), 0);
    expect_hex(out, 32, "a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a");
}

static void test_hmac_rfc4231_case2(void **state)
{
    static const char data[] = "what do ya want for nothing?";
    uint8_t out[KMS_HASH_MAX_LEN];

    for (size_t i = 0; i < N_VECTORS; i++) {
        assert_int_equal(kms_hmac(vectors[i].h, "Jefe", 4, data, strlen(data), out), 0);
        expect_hex(out, vectors[i].len, vectors[i].hmac_jefe);
    }
}

static void test_hmac_transit_vector_f(void **state)
{
    uint8_t key[32], out[32];
    char b64[64];

    /* Reference section 9 F: hmac key 00..1f, sha2-256, input "hello". */
    for (int i = 0; i < 32; i++)
        key[i] = (uint8_t)i;
    assert_int_equal(kms_hmac(KMS_HASH_SHA2_256, key, 32, "hello", 5, out), 0);
    kms_b64_encode(out, 32, b64);
    assert_string_equal(b64, "U8QCcqcMFcpO4K9N8fFV/WxB4AziMH2Jh+zUuzan6ZA=");
}

static void test_hmac_empty(void **state)
{
    uint8_t out[32];

    /* HMAC-SHA256 with empty key and empty message (well-known value). */
    assert_int_equal(kms_hmac(KMS_HASH_SHA2_256, NULL, 0, NULL, 0, out), 0);
    expect_hex(out, 32, "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
}

/* A prepared key gives kms_hmac's answer: short, block-sized and long keys, from threads. */
static void *prepared_thread(void *arg)
{
    const struct kms_hmac_key *k = arg;
    uint8_t out[32];
    for (int i = 0; i < 200; i++) {
        if (kms_hmac_key_mac(k, "what do ya want for nothing?", 28, out) != 0) {
            return (void *)1;
        }
    }
    return NULL;
}

static void test_hmac_prepared_key(void **state)
{
    (void)state;
    uint8_t key[131];
    for (size_t i = 0; i < sizeof(key); i++) {
        key[i] = (uint8_t)(i * 7 + 1);
    }
    const size_t keylens[] = {0, 4, 36, 64, 65, 131};
    const size_t msglens[] = {0, 1, 55, 64, 200};
    char msg[200];
    memset(msg, 'm', sizeof(msg));
    for (size_t i = 0; i < sizeof(keylens) / sizeof(keylens[0]); i++) {
        struct kms_hmac_key *k = NULL;
        assert_int_equal(kms_hmac_key_create(key, keylens[i], &k), 0);
        for (size_t j = 0; j < sizeof(msglens) / sizeof(msglens[0]); j++) {
            uint8_t want[32], got[32];
            assert_int_equal(kms_hmac(KMS_HASH_SHA2_256, key, keylens[i], msg, msglens[j], want),
                             0);
            assert_int_equal(kms_hmac_key_mac(k, msg, msglens[j], got), 0);
            assert_memory_equal(want, got, 32);
        }
        kms_hmac_key_destroy(&k);
        assert_null(k);
    }
    /* RFC 4231 case 2, from four threads sharing one key */
    struct kms_hmac_key *k = NULL;
    uint8_t out[32];
    char hex[65];
    assert_int_equal(kms_hmac_key_create("Jefe", 4, &k), 0);
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_create(&t[i], NULL, prepared_thread, k), 0);
    }
    for (int i = 0; i < 4; i++) {
        void *r = NULL;
        pthread_join(t[i], &r);
        assert_null(r);
    }
    assert_int_equal(kms_hmac_key_mac(k, "what do ya want for nothing?", 28, out), 0);
    kms_hex_encode(out, 32, hex);
    assert_string_equal(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    kms_hmac_key_destroy(&k);
}

static void test_hkdf_rfc5869(void **state)
{
    uint8_t ikm[80], salt[80], info[80], okm[82];
    size_t ikmlen, saltlen, infolen;

    /* Test case 1. */
    ikmlen = unhex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", ikm);
    saltlen = unhex("000102030405060708090a0b0c", salt);
    infolen = unhex("f0f1f2f3f4f5f6f7f8f9", info);
    assert_int_equal(kms_hkdf_sha256(ikm, ikmlen, salt, saltlen, info, infolen, okm, 42), 0);
    expect_hex(okm, 42,
               "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
               "34007208d5b887185865");

    /* Test case 2 (long inputs). */
    for (int i = 0; i < 80; i++) {
        ikm[i] = (uint8_t)i;
        salt[i] = (uint8_t)(0x60 + i);
        info[i] = (uint8_t)(0xb0 + i);
    }
    assert_int_equal(kms_hkdf_sha256(ikm, 80, salt, 80, info, 80, okm, 82), 0);
    expect_hex(okm, 82,
               "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
               "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
               "cc30c58179ec3e87c14c01d5c1f3434f1d87");

    /* Test case 3: empty salt (= 32 zero bytes) and empty info. */
    ikmlen = unhex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", ikm);
    assert_int_equal(kms_hkdf_sha256(ikm, ikmlen, NULL, 0, NULL, 0, okm, 42), 0);
    expect_hex(okm, 42,
               "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
               "9d201395faa4b61a96c8");
    memset(salt, 0, 32);
    assert_int_equal(kms_hkdf_sha256(ikm, ikmlen, salt, 32, NULL, 0, okm, 42), 0);
    expect_hex(okm, 42,
               "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
               "9d201395faa4b61a96c8");

    /* L = 0 and L > 255 * HashLen are refused. */
    assert_int_equal(kms_hkdf_sha256(ikm, ikmlen, NULL, 0, NULL, 0, okm, 0), -1);
}

static void test_hkdf_prefix_consistent(void **state)
{
    uint8_t ikm[32], a[64], b[32];

    for (int i = 0; i < 32; i++)
        ikm[i] = (uint8_t)i;
    assert_int_equal(kms_hkdf_sha256(ikm, 32, NULL, 0, (const uint8_t *)"ctx", 3, a, 64), 0);
    assert_int_equal(kms_hkdf_sha256(ikm, 32, NULL, 0, (const uint8_t *)"ctx", 3, b, 32), 0);
    assert_memory_equal(a, b, 32);
    /* Reference section 9 B and C. */
    expect_hex(a, 64,
               "08f959277c527020901da82beafed559872e8b0b770de26673f4b41ce55e3885"
               "4df200443872b49a79764812a57c64e4fbb55e5c3bf025ce5b0ee546ae433980");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_hash_abc),
        cmocka_unit_test(test_hash_transit_vectors),
        cmocka_unit_test(test_hmac_rfc4231_case2),
        cmocka_unit_test(test_hmac_prepared_key),
        cmocka_unit_test(test_hmac_transit_vector_f),
        cmocka_unit_test(test_hmac_empty),
        cmocka_unit_test(test_hkdf_rfc5869),
        cmocka_unit_test(test_hkdf_prefix_consistent),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
