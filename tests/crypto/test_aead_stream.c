/*
 * test_aead_stream.c - crypto/aead_stream.c: the streaming AEAD reproduces the GCM spec's test
 * case 16 in pieces of every size, equals kms_aead_seal/open for AES-GCM and
 * ChaCha20-Poly1305 over random splits, refuses XChaCha20 and misuse (final twice, the wrong
 * direction), detects a flipped tag, ciphertext or AAD bit; the hash stream equals kms_hash.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "crypto/crypto.h"

static size_t unhex(const char *s, uint8_t *out)
{
    size_t n = strlen(s);
    assert_int_equal(kms_hex_decode(s, n, out), 0);
    return n / 2;
}

/* Run one message through a stream, `step` bytes per update (0 = random steps). */
static void stream(enum kms_aead a, bool enc, const uint8_t *key, const uint8_t *nonce,
                   const uint8_t *aad, size_t aadlen, const uint8_t *in, size_t n, size_t step,
                   uint8_t *out)
{
    struct kms_aead_stream *s = NULL;
    assert_int_equal(kms_aead_stream_create(a, enc, key, nonce, aad, aadlen, &s), 0);
    for (size_t off = 0; off < n;) {
        size_t k = step ? step : (size_t)(rand() % 97) + 1;
        if (k > n - off) {
            k = n - off;
        }
        assert_int_equal(kms_aead_stream_update(s, in + off, k, out + off), 0);
        off += k;
    }
    if (enc) {
        assert_int_equal(kms_aead_stream_seal_final(s, out + n), 0);
    } else {
        assert_int_equal(kms_aead_stream_open_final(s, in + n), 0);
    }
    kms_aead_stream_destroy(&s);
    assert_null(s);
}

static void test_gcm_tc16_in_pieces(void **state)
{
    uint8_t key[32], nonce[12], aad[20], pt[64], want[80], got[80], back[80];
    size_t ptlen = unhex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
                         "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
                         pt);
    unhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308", key);
    unhex("cafebabefacedbaddecaf888", nonce);
    unhex("feedfacedeadbeeffeedfacedeadbeefabaddad2", aad);
    unhex("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
          "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
          "76fc6ece0f4e1768cddf8853bb2d551b",
          want);
    for (size_t step = 1; step <= ptlen; step++) {
        memset(got, 0, sizeof(got));
        stream(KMS_AEAD_AES256_GCM, true, key, nonce, aad, sizeof(aad), pt, ptlen, step, got);
        assert_memory_equal(got, want, ptlen + KMS_AEAD_TAG_LEN);
        stream(KMS_AEAD_AES256_GCM, false, key, nonce, aad, sizeof(aad), want, ptlen, step, back);
        assert_memory_equal(back, pt, ptlen);
    }
}

static void test_equals_one_shot(void **state)
{
    static const enum kms_aead algs[] = {KMS_AEAD_AES128_GCM, KMS_AEAD_AES256_GCM,
                                         KMS_AEAD_CHACHA20_POLY1305};
    enum { N = 5000 };
    uint8_t *pt = malloc(N), *a = malloc(N + 16), *b = malloc(N + 16), *back = malloc(N);
    uint8_t key[32], nonce[12];
    assert_non_null(pt);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(back);
    srand(7);
    for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++) {
        for (size_t n = 0; n <= N; n += n < 40 ? 1 : 997) {
            assert_int_equal(kms_rand_bytes(pt, N), 0);
            assert_int_equal(kms_rand_bytes(key, sizeof(key)), 0);
            assert_int_equal(kms_rand_bytes(nonce, sizeof(nonce)), 0);
            assert_int_equal(kms_aead_seal(algs[i], key, nonce, NULL, 0, pt, n, a), 0);
            stream(algs[i], true, key, nonce, NULL, 0, pt, n, 0, b);
            assert_memory_equal(a, b, n + KMS_AEAD_TAG_LEN);
            stream(algs[i], false, key, nonce, NULL, 0, a, n, 0, back);
            if (n > 0) {
                assert_memory_equal(back, pt, n);
            }
            /* in place */
            memcpy(b, pt, n);
            stream(algs[i], true, key, nonce, NULL, 0, b, n, 0, b);
            assert_memory_equal(a, b, n + KMS_AEAD_TAG_LEN);
        }
    }
    free(pt);
    free(a);
    free(b);
    free(back);
}

static void test_tamper_and_misuse(void **state)
{
    uint8_t key[32] = {1}, nonce[24] = {2}, aad[4] = {3, 4, 5, 6}, pt[100], ct[116], out[116];
    struct kms_aead_stream *s = NULL;
    memset(pt, 0x5a, sizeof(pt));
    stream(KMS_AEAD_AES256_GCM, true, key, nonce, aad, sizeof(aad), pt, sizeof(pt), 33, ct);

    for (int which = 0; which < 3; which++) {
        uint8_t c2[116], a2[4];
        memcpy(c2, ct, sizeof(c2));
        memcpy(a2, aad, sizeof(a2));
        if (which == 0) {
            c2[115] ^= 1; /* tag */
        } else if (which == 1) {
            c2[50] ^= 0x80; /* ciphertext */
        } else {
            a2[0] ^= 1; /* associated data */
        }
        assert_int_equal(
            kms_aead_stream_create(KMS_AEAD_AES256_GCM, false, key, nonce, a2, sizeof(a2), &s), 0);
        assert_int_equal(kms_aead_stream_update(s, c2, 100, out), 0);
        assert_int_equal(kms_aead_stream_open_final(s, c2 + 100), -1);
        kms_aead_stream_destroy(&s);
    }
    /* XChaCha20 cannot stream */
    assert_int_equal(
        kms_aead_stream_create(KMS_AEAD_XCHACHA20_POLY1305, true, key, nonce, NULL, 0, &s), -1);
    assert_null(s);
    /* final twice, update after final, the wrong final for the direction */
    assert_int_equal(kms_aead_stream_create(KMS_AEAD_AES256_GCM, true, key, nonce, NULL, 0, &s), 0);
    assert_int_equal(kms_aead_stream_open_final(s, ct), -1);
    assert_int_equal(kms_aead_stream_seal_final(s, out), 0);
    assert_int_equal(kms_aead_stream_seal_final(s, out), -1);
    assert_int_equal(kms_aead_stream_update(s, pt, 1, out), -1);
    kms_aead_stream_destroy(&s);
    kms_aead_stream_destroy(&s); /* NULL-safe */
}

static void test_hash_stream(void **state)
{
    static const enum kms_hash hs[] = {KMS_HASH_SHA1, KMS_HASH_SHA2_256, KMS_HASH_SHA2_512,
                                       KMS_HASH_SHA3_256};
    uint8_t data[3000], want[KMS_HASH_MAX_LEN], got[KMS_HASH_MAX_LEN];
    char hex[2 * KMS_HASH_MAX_LEN + 1];
    struct kms_hash_stream *s = NULL;
    memset(data, 'a', sizeof(data));
    for (size_t i = 0; i < sizeof(hs) / sizeof(hs[0]); i++) {
        assert_int_equal(kms_hash(hs[i], data, sizeof(data), want), 0);
        assert_int_equal(kms_hash_stream_create(hs[i], &s), 0);
        for (size_t off = 0; off < sizeof(data); off += 7) {
            size_t k = sizeof(data) - off < 7 ? sizeof(data) - off : 7;
            assert_int_equal(kms_hash_stream_update(s, data + off, k), 0);
        }
        assert_int_equal(kms_hash_stream_update(s, NULL, 0), 0);
        assert_int_equal(kms_hash_stream_final(s, got), 0);
        assert_memory_equal(got, want, kms_hash_len(hs[i]));
        kms_hash_stream_destroy(&s);
        assert_null(s);
    }
    /* FIPS 180-2 "abc" */
    assert_int_equal(kms_hash_stream_create(KMS_HASH_SHA2_256, &s), 0);
    assert_int_equal(kms_hash_stream_update(s, "ab", 2), 0);
    assert_int_equal(kms_hash_stream_update(s, "c", 1), 0);
    assert_int_equal(kms_hash_stream_final(s, got), 0);
    kms_hex_encode(got, 32, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    /* reset: after a final, and in the middle of a message (what was fed is dropped) */
    assert_int_equal(kms_hash_stream_reset(s), 0);
    assert_int_equal(kms_hash_stream_update(s, "abc", 3), 0);
    assert_int_equal(kms_hash_stream_final(s, got), 0);
    kms_hex_encode(got, 32, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_int_equal(kms_hash_stream_reset(s), 0);
    assert_int_equal(kms_hash_stream_update(s, "xyz", 3), 0);
    assert_int_equal(kms_hash_stream_reset(s), 0);
    assert_int_equal(kms_hash_stream_update(s, "abc", 3), 0);
    assert_int_equal(kms_hash_stream_final(s, got), 0);
    kms_hex_encode(got, 32, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    kms_hash_stream_destroy(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gcm_tc16_in_pieces),
        cmocka_unit_test(test_equals_one_shot),
        cmocka_unit_test(test_tamper_and_misuse),
        cmocka_unit_test(test_hash_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
