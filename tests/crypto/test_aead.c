/*
 * test_aead.c - crypto/aead.c: known answers for AES-GCM (McGrew-Viega GCM spec test cases 3
 * and 16, as used by NIST CAVP), ChaCha20-Poly1305 (RFC 8439 2.8.2), HChaCha20 and
 * XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha-03 2.2.1 and A.3.1), plus tamper, AAD and
 * wipe-on-failure behaviour for every cipher; the per-thread context cache, and wiping it from
 * another thread (kms_aead_forget_all) while it is in use.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "crypto/crypto.h"
#include "crypto/crypto_int.h"

#include <pthread.h>

static size_t unhex(const char *s, uint8_t *out)
{
    size_t n = strlen(s);

    assert_int_equal(kms_hex_decode(s, n, out), 0);
    return n / 2;
}

static const char SUNSCREEN[] = "Ladies and Gentlemen of the class of '99: If I could offer you "
                                "only one tip for the future, sunscreen would be it.";

/* Seal pt and compare with ct||tag, then open it back; then check that tampering fails. */
static void kat(enum kms_aead a, const char *key_hex, const char *nonce_hex, const char *aad_hex,
                const uint8_t *pt, size_t ptlen, const char *ct_hex, const char *tag_hex)
{
    uint8_t key[32], nonce[24], aad[64] = {0}, want[256], got[256], back[256];
    size_t keylen = unhex(key_hex, key);
    size_t noncelen = unhex(nonce_hex, nonce);
    size_t aadlen = unhex(aad_hex, aad);
    size_t ctlen = unhex(ct_hex, want);

    assert_int_equal(keylen, kms_aead_key_len(a));
    assert_int_equal(noncelen, kms_aead_nonce_len(a));
    assert_int_equal(ctlen, ptlen);
    assert_int_equal(unhex(tag_hex, want + ctlen), KMS_AEAD_TAG_LEN);

    assert_int_equal(kms_aead_seal(a, key, nonce, aadlen ? aad : NULL, aadlen, pt, ptlen, got), 0);
    assert_memory_equal(got, want, ptlen + KMS_AEAD_TAG_LEN);

    assert_int_equal(
        kms_aead_open(a, key, nonce, aadlen ? aad : NULL, aadlen, got, ptlen + 16, back), 0);
    assert_memory_equal(back, pt, ptlen);

    /* Flipped tag bit: fails and the output is wiped. */
    got[ptlen] ^= 0x01;
    memset(back, 0x55, sizeof(back));
    assert_int_equal(kms_aead_open(a, key, nonce, aad, aadlen, got, ptlen + 16, back), -1);
    for (size_t i = 0; i < ptlen; i++)
        assert_int_equal(back[i], 0);
    got[ptlen] ^= 0x01;

    /* Flipped ciphertext bit. */
    if (ptlen > 0) {
        got[0] ^= 0x80;
        assert_int_equal(kms_aead_open(a, key, nonce, aad, aadlen, got, ptlen + 16, back), -1);
        got[0] ^= 0x80;
    }
    /* Different AAD. */
    aad[0] ^= 0x01;
    assert_int_equal(kms_aead_open(a, key, nonce, aad, aadlen ? aadlen : 1, got, ptlen + 16, back),
                     -1);
}

static void test_aes128_gcm_tc3(void **state)
{
    uint8_t pt[64];
    size_t ptlen = unhex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
                         "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
                         pt);

    kat(KMS_AEAD_AES128_GCM, "feffe9928665731c6d6a8f9467308308", "cafebabefacedbaddecaf888", "", pt,
        ptlen,
        "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
        "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985",
        "4d5c2af327cd64a62cf35abd2ba6fab4");
}

static void test_aes256_gcm_tc16(void **state)
{
    uint8_t pt[64];
    size_t ptlen = unhex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
                         "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
                         pt);

    kat(KMS_AEAD_AES256_GCM, "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
        "cafebabefacedbaddecaf888", "feedfacedeadbeeffeedfacedeadbeefabaddad2", pt, ptlen,
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
        "76fc6ece0f4e1768cddf8853bb2d551b");
}

static void test_aes256_gcm_empty(void **state)
{
    /* GCM spec test case 13: zero key, zero IV, empty plaintext. */
    kat(KMS_AEAD_AES256_GCM, "0000000000000000000000000000000000000000000000000000000000000000",
        "000000000000000000000000", "", NULL, 0, "", "530f8afbc74536b9a963b4f1c4cb738b");
}

static void test_chacha20_poly1305_rfc8439(void **state)
{
    kat(KMS_AEAD_CHACHA20_POLY1305,
        "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
        "070000004041424344454647", "50515253c0c1c2c3c4c5c6c7", (const uint8_t *)SUNSCREEN,
        strlen(SUNSCREEN),
        "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6"
        "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36"
        "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
        "3ff4def08e4b7a9de576d26586cec64b6116",
        "1ae10b594f09e26a7e902ecbd0600691");
}

static void test_hchacha20(void **state)
{
    uint8_t key[32], nonce[16], want[32], got[32];

    unhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", key);
    unhex("000000090000004a0000000031415927", nonce);
    unhex("82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc", want);
    kms_hchacha20(key, nonce, got);
    assert_memory_equal(got, want, 32);
}

static void test_xchacha20_poly1305_draft(void **state)
{
    kat(KMS_AEAD_XCHACHA20_POLY1305,
        "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
        "404142434445464748494a4b4c4d4e4f5051525354555657", "50515253c0c1c2c3c4c5c6c7",
        (const uint8_t *)SUNSCREEN, strlen(SUNSCREEN),
        "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb"
        "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452"
        "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9"
        "21f9664c97637da9768812f615c68b13b52e",
        "c0875924c1c7987947deafd8780acf49");
}

static void test_roundtrip_all(void **state)
{
    const enum kms_aead all[] = {KMS_AEAD_AES128_GCM, KMS_AEAD_AES256_GCM,
                                 KMS_AEAD_CHACHA20_POLY1305, KMS_AEAD_XCHACHA20_POLY1305};
    const size_t sizes[] = {0, 1, 15, 16, 17, 1000, 70000};

    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
            uint8_t key[32], nonce[24];
            size_t n = sizes[s];
            uint8_t *pt = malloc(n + 1), *ct = malloc(n + 16), *back = malloc(n + 1);

            assert_non_null(pt);
            assert_non_null(ct);
            assert_non_null(back);
            assert_int_equal(kms_rand_bytes(key, sizeof(key)), 0);
            assert_int_equal(kms_rand_bytes(nonce, sizeof(nonce)), 0);
            assert_int_equal(kms_rand_bytes(pt, n + 1), 0);
            assert_int_equal(kms_aead_seal(all[i], key, nonce, NULL, 0, n ? pt : NULL, n, ct), 0);
            assert_int_equal(kms_aead_open(all[i], key, nonce, NULL, 0, ct, n + 16, back), 0);
            if (n > 0)
                assert_memory_equal(pt, back, n);
            /* Wrong nonce fails (for XChaCha, both the HChaCha and the tail part matter). */
            nonce[0] ^= 1;
            assert_int_equal(kms_aead_open(all[i], key, nonce, NULL, 0, ct, n + 16, back), -1);
            nonce[0] ^= 1;
            if (kms_aead_nonce_len(all[i]) == 24) {
                nonce[23] ^= 1;
                assert_int_equal(kms_aead_open(all[i], key, nonce, NULL, 0, ct, n + 16, back), -1);
                nonce[23] ^= 1;
            }
            /* Truncated input. */
            assert_int_equal(kms_aead_open(all[i], key, nonce, NULL, 0, ct, 15, back), -1);
            free(pt);
            free(ct);
            free(back);
        }
    }
}

static void test_sizes(void **state)
{
    assert_int_equal(kms_aead_key_len(KMS_AEAD_AES128_GCM), 16);
    assert_int_equal(kms_aead_key_len(KMS_AEAD_AES256_GCM), 32);
    assert_int_equal(kms_aead_key_len(KMS_AEAD_CHACHA20_POLY1305), 32);
    assert_int_equal(kms_aead_key_len(KMS_AEAD_XCHACHA20_POLY1305), 32);
    assert_int_equal(kms_aead_nonce_len(KMS_AEAD_AES128_GCM), 12);
    assert_int_equal(kms_aead_nonce_len(KMS_AEAD_AES256_GCM), 12);
    assert_int_equal(kms_aead_nonce_len(KMS_AEAD_CHACHA20_POLY1305), 12);
    assert_int_equal(kms_aead_nonce_len(KMS_AEAD_XCHACHA20_POLY1305), 24);
}

/* Each thread keeps a few initialised contexts keyed by (cipher, direction, key): many keys in
 * turn (more than the cache holds), both directions, a failed open in between, never mix up
 * keys or nonces. */
static void test_context_cache(void **state)
{
    (void)state;
    const enum kms_aead algs[] = {KMS_AEAD_AES128_GCM, KMS_AEAD_AES256_GCM,
                                  KMS_AEAD_CHACHA20_POLY1305};
    uint8_t keys[12][32];
    for (int k = 0; k < 12; k++) {
        memset(keys[k], k + 1, sizeof(keys[k]));
    }
    const uint8_t pt[40] = "forty bytes of plaintext for the cache.";
    for (int round = 0; round < 3; round++) {
        for (int k = 0; k < 12; k++) {
            enum kms_aead a = algs[k % 3];
            uint8_t nonce[12], ct[sizeof(pt) + KMS_AEAD_TAG_LEN], back[sizeof(pt)];
            uint8_t nonce2[12], ct2[sizeof(ct)];
            memset(nonce, round * 16 + k, sizeof(nonce));
            memset(nonce2, 0xee, sizeof(nonce2));
            assert_int_equal(kms_aead_seal(a, keys[k], nonce, NULL, 0, pt, sizeof(pt), ct), 0);
            assert_int_equal(kms_aead_seal(a, keys[k], nonce2, NULL, 0, pt, sizeof(pt), ct2), 0);
            assert_false(memcmp(ct, ct2, sizeof(ct)) == 0); /* the nonce is applied each time */
            /* the wrong key (cached for another slot) fails; then the right one works */
            assert_int_equal(
                kms_aead_open(a, keys[(k + 3) % 12], nonce, NULL, 0, ct, sizeof(ct), back), -1);
            assert_int_equal(kms_aead_open(a, keys[k], nonce, NULL, 0, ct, sizeof(ct), back), 0);
            assert_memory_equal(back, pt, sizeof(pt));
            ct[0] ^= 1;
            assert_int_equal(kms_aead_open(a, keys[k], nonce, NULL, 0, ct, sizeof(ct), back), -1);
            ct[0] ^= 1;
            assert_int_equal(kms_aead_open(a, keys[k], nonce, NULL, 0, ct, sizeof(ct), back), 0);
            assert_int_equal(kms_aead_open(a, keys[k], nonce2, NULL, 0, ct2, sizeof(ct2), back), 0);
            assert_memory_equal(back, pt, sizeof(pt));
        }
    }
}

/* Known answers after every context of the thread has been re-keyed many times over (more
 * keys of one cipher than the cache holds: an evicted context takes the next key in place),
 * in both directions: a re-keyed context computes the same as a fresh one. */
static void test_rekeyed_contexts_keep_known_answers(void **state)
{
    (void)state;
    for (int round = 0; round < 4; round++) {
        uint8_t key[32], nonce[12] = {0}, pt[48] = {0}, ct[sizeof(pt) + KMS_AEAD_TAG_LEN];
        uint8_t back[sizeof(pt)];
        for (int k = 0; k < 40; k++) { /* 40 AES-256 keys through 8 slots, sealing and opening */
            memset(key, 0x40 + k + round, sizeof(key));
            assert_int_equal(
                kms_aead_seal(KMS_AEAD_AES256_GCM, key, nonce, NULL, 0, pt, sizeof(pt), ct), 0);
            assert_int_equal(
                kms_aead_open(KMS_AEAD_AES256_GCM, key, nonce, NULL, 0, ct, sizeof(ct), back), 0);
        }
        test_aes256_gcm_tc16(NULL);
        test_aes256_gcm_empty(NULL);
        for (int k = 0; k < 40; k++) {
            memset(key, 0x90 + k + round, sizeof(key));
            assert_int_equal(
                kms_aead_seal(KMS_AEAD_AES128_GCM, key, nonce, NULL, 0, pt, sizeof(pt), ct), 0);
            assert_int_equal(
                kms_aead_seal(KMS_AEAD_CHACHA20_POLY1305, key, nonce, NULL, 0, pt, sizeof(pt), ct),
                0);
        }
        test_aes128_gcm_tc3(NULL);
        test_chacha20_poly1305_rfc8439(NULL);
    }
}

/* A thread that seals under `key`, says so, waits for `go`, then seals and opens again. */
struct holder {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool sealed, go;
    int failures;
    uint8_t key[32];
};

static int roundtrip(const uint8_t *key, uint8_t n)
{
    uint8_t nonce[12], pt[24], ct[sizeof(pt) + KMS_AEAD_TAG_LEN], back[sizeof(pt)];
    memset(nonce, n, sizeof(nonce));
    memset(pt, n ^ 0x5a, sizeof(pt));
    if (kms_aead_seal(KMS_AEAD_AES256_GCM, key, nonce, NULL, 0, pt, sizeof(pt), ct) != 0 ||
        kms_aead_open(KMS_AEAD_AES256_GCM, key, nonce, NULL, 0, ct, sizeof(ct), back) != 0 ||
        memcmp(back, pt, sizeof(pt)) != 0) {
        return 1;
    }
    return 0;
}

static void *holder_main(void *arg)
{
    struct holder *h = arg;
    int f = roundtrip(h->key, 1);
    pthread_mutex_lock(&h->mu);
    h->sealed = true;
    pthread_cond_broadcast(&h->cv);
    while (!h->go) {
        pthread_cond_wait(&h->cv, &h->mu);
    }
    pthread_mutex_unlock(&h->mu);
    f += roundtrip(h->key, 2);
    h->failures = f;
    return NULL;
}

/* kms_aead_forget_all wipes another, live thread's contexts; that thread's next operation
 * sets its context up again; a thread that ends leaves no context behind. */
static void test_forget_all_across_threads(void **state)
{
    (void)state;
    struct holder h;
    memset(&h, 0, sizeof(h));
    pthread_mutex_init(&h.mu, NULL);
    pthread_cond_init(&h.cv, NULL);
    memset(h.key, 0xa7, sizeof(h.key));
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, holder_main, &h), 0);
    pthread_mutex_lock(&h.mu);
    while (!h.sealed) {
        pthread_cond_wait(&h.cv, &h.mu);
    }
    pthread_mutex_unlock(&h.mu);
    assert_true(kms_aead_key_cached(h.key, sizeof(h.key)));
    kms_aead_forget_all();
    assert_false(kms_aead_key_cached(h.key, sizeof(h.key)));
    pthread_mutex_lock(&h.mu);
    h.go = true;
    pthread_cond_broadcast(&h.cv);
    pthread_mutex_unlock(&h.mu);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(h.failures, 0);
    assert_false(kms_aead_key_cached(h.key, sizeof(h.key))); /* gone with its thread */
    pthread_cond_destroy(&h.cv);
    pthread_mutex_destroy(&h.mu);
}

struct churn {
    int id;
    int failures;
};

static void *churn_main(void *arg)
{
    struct churn *c = arg;
    uint8_t keys[3][32];
    for (int k = 0; k < 3; k++) {
        memset(keys[k], c->id * 3 + k + 1, sizeof(keys[k]));
    }
    for (int i = 0; i < 3000; i++) {
        c->failures += roundtrip(keys[i % 3], (uint8_t)i);
    }
    return NULL;
}

/* Threads sealing and opening while another wipes every context over and over: every
 * operation still succeeds with the right key (run under ASan/TSan by make test-asan). */
static void test_forget_all_under_load(void **state)
{
    (void)state;
    pthread_t th[4];
    struct churn c[4];
    for (int i = 0; i < 4; i++) {
        c[i].id = i;
        c[i].failures = 0;
        assert_int_equal(pthread_create(&th[i], NULL, churn_main, &c[i]), 0);
    }
    for (int i = 0; i < 2000; i++) {
        kms_aead_forget_all();
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(c[i].failures, 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_aes128_gcm_tc3),
        cmocka_unit_test(test_aes256_gcm_tc16),
        cmocka_unit_test(test_aes256_gcm_empty),
        cmocka_unit_test(test_chacha20_poly1305_rfc8439),
        cmocka_unit_test(test_hchacha20),
        cmocka_unit_test(test_xchacha20_poly1305_draft),
        cmocka_unit_test(test_roundtrip_all),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_context_cache),
        cmocka_unit_test(test_rekeyed_contexts_keep_known_answers),
        cmocka_unit_test(test_forget_all_across_threads),
        cmocka_unit_test(test_forget_all_under_load),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
