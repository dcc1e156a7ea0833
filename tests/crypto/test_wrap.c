/*
 * test_wrap.c - crypto/wrap.c: AES key wrap with padding against the RFC 5649 section 6
 * known answers, its size and tamper refusals, the import ciphertext round trip under an
 * RSA-4096 wrapping key for every OAEP hash OpenBao accepts (and its refusals), byok-export
 * wraps that open as imports, and imported material turned into versions (raw AEAD/hmac keys,
 * the RFC 8410 ed25519 PKCS#8 key).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "crypto/crypto.h"
#include "crypto/keyring.h"

static size_t unhex(const char *s, uint8_t *out)
{
    size_t n = strlen(s);

    assert_int_equal(kms_hex_decode(s, n, out), 0);
    return n / 2;
}

static const char RFC5649_KEK[] = "5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8";

static void kwp_kat(const char *key_hex, const char *wrapped_hex)
{
    uint8_t kek[24], key[64], want[72], got[72], back[72];
    size_t keklen = unhex(RFC5649_KEK, kek);
    size_t keylen = unhex(key_hex, key);
    size_t wantlen = unhex(wrapped_hex, want);
    size_t gotlen = 0, backlen = 0;

    assert_int_equal(wantlen, KMS_KWP_WRAPPED_LEN(keylen));
    assert_int_equal(kms_kwp_wrap(kek, keklen, key, keylen, got, &gotlen), 0);
    assert_int_equal(gotlen, wantlen);
    assert_memory_equal(got, want, wantlen);
    assert_int_equal(kms_kwp_unwrap(kek, keklen, want, wantlen, back, &backlen), 0);
    assert_int_equal(backlen, keylen);
    assert_memory_equal(back, key, keylen);
}

static void test_rfc5649_20_octets(void **state)
{
    (void)state;
    kwp_kat("c37b7e6492584340bed12207808941155068f738",
            "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a");
}

static void test_rfc5649_7_octets(void **state)
{
    (void)state;
    kwp_kat("466f7250617369", "afbeb0f07dfbf5419200f2ccb50bb24f");
}

static void test_kwp_roundtrip_and_tamper(void **state)
{
    uint8_t kek[32], in[100], w[112], out[112];
    size_t wl = 0, ol = 0;

    (void)state;
    memset(kek, 0x42, sizeof(kek));
    for (size_t n = 1; n <= sizeof(in); n++) {
        for (size_t i = 0; i < n; i++)
            in[i] = (uint8_t)(i * 7 + n);
        assert_int_equal(kms_kwp_wrap(kek, 32, in, n, w, &wl), 0);
        assert_int_equal(wl, KMS_KWP_WRAPPED_LEN(n));
        assert_int_equal(kms_kwp_unwrap(kek, 32, w, wl, out, &ol), 0);
        assert_int_equal(ol, n);
        assert_memory_equal(out, in, n);
        /* any flipped bit, or the wrong key, fails and leaves nothing behind */
        w[n % wl] ^= 0x01;
        memset(out, 0xee, sizeof(out));
        assert_int_equal(kms_kwp_unwrap(kek, 32, w, wl, out, &ol), -1);
        assert_int_equal(ol, 0);
        for (size_t i = 0; i < wl; i++)
            assert_int_equal(out[i], 0);
        w[n % wl] ^= 0x01;
        kek[0] ^= 0x80;
        assert_int_equal(kms_kwp_unwrap(kek, 32, w, wl, out, &ol), -1);
        kek[0] ^= 0x80;
    }
}

static void test_kwp_sizes(void **state)
{
    uint8_t kek[32] = {0}, buf[64] = {0}, out[64];
    size_t ol = 0;

    (void)state;
    assert_int_equal(kms_kwp_wrap(kek, 20, buf, 16, out, &ol), -1); /* no AES-160 */
    assert_int_equal(kms_kwp_wrap(kek, 32, buf, 0, out, &ol), -1);  /* nothing to wrap */
    assert_int_equal(kms_kwp_unwrap(kek, 32, buf, 8, out, &ol), -1);
    assert_int_equal(kms_kwp_unwrap(kek, 32, buf, 17, out, &ol), -1);
    assert_int_equal(kms_kwp_unwrap(kek, 32, buf, 24, out, &ol), -1); /* zeros never verify */
}

/* ---- import ciphertexts ------------------------------------------------------------------ */

struct wk {
    struct kms_key_policy p;
    struct kms_key_version kv;
    char *pem;
};

static int wk_setup(void **state)
{
    struct wk *w = calloc(1, sizeof(*w));
    struct kms_err err;

    if (w == NULL || kms_key_policy_init(&w->p, KMS_KEY_RSA4096) != 0 ||
        kms_key_version_generate(&w->p, 1, &w->kv) != 0 ||
        kms_keyring_public_key(&w->p, &w->kv, NULL, 0, &w->pem, &err) != 0) {
        free(w);
        return -1;
    }
    *state = w;
    return 0;
}

static int wk_teardown(void **state)
{
    struct wk *w = *state;

    kms_memzero(&w->kv, sizeof(w->kv));
    free(w->pem);
    free(w);
    return 0;
}

static void unwrap_b64(const struct wk *w, enum kms_hash h, const char *ct, uint8_t **key,
                       size_t *keylen, struct kms_err *err, int want)
{
    uint8_t *raw = NULL;
    size_t rawlen = 0, at = 0;

    assert_int_equal(kms_b64_decode_alloc(ct, strlen(ct), &raw, &rawlen, &at), 0);
    assert_int_equal(kms_keyring_import_unwrap(&w->kv, h, raw, rawlen, key, keylen, err), want);
    kms_free_wipe((void **)&raw, rawlen);
}

static void test_import_roundtrip_every_hash(void **state)
{
    static const enum kms_hash hashes[] = {KMS_HASH_SHA1, KMS_HASH_SHA2_224, KMS_HASH_SHA2_256,
                                           KMS_HASH_SHA2_384, KMS_HASH_SHA2_512};
    const struct wk *w = *state;
    uint8_t material[48];
    struct kms_err err;

    memset(material, 0x5a, sizeof(material));
    for (size_t i = 0; i < sizeof(hashes) / sizeof(hashes[0]); i++) {
        char *ct = NULL;
        uint8_t *key = NULL;
        size_t keylen = 0;

        assert_int_equal(
            kms_keyring_import_wrap(w->pem, hashes[i], material, sizeof(material), &ct), 0);
        unwrap_b64(w, hashes[i], ct, &key, &keylen, &err, 0);
        assert_int_equal(keylen, sizeof(material));
        assert_memory_equal(key, material, sizeof(material));
        kms_free_wipe((void **)&key, keylen);
        /* the same ciphertext under another OAEP hash does not open */
        unwrap_b64(w, hashes[(i + 1) % 5], ct, &key, &keylen, &err, -1);
        assert_null(key);
        assert_int_equal(err.status, 500);
        assert_string_equal(err.msg, "crypto/rsa: decryption error");
        free(ct);
    }
}

static void test_import_refusals(void **state)
{
    const struct wk *w = *state;
    uint8_t material[32] = {1};
    uint8_t *raw = NULL, *key = NULL;
    size_t rawlen = 0, keylen = 0, at = 0;
    struct kms_err err;
    char *ct = NULL;

    assert_int_equal(kms_keyring_import_unwrap(&w->kv, KMS_HASH_SHA2_256, material,
                                               sizeof(material), &key, &keylen, &err),
                     -1);
    assert_string_equal(err.msg, "provided ciphertext is too short");

    assert_int_equal(
        kms_keyring_import_wrap(w->pem, KMS_HASH_SHA2_256, material, sizeof(material), &ct), 0);
    assert_int_equal(kms_b64_decode_alloc(ct, strlen(ct), &raw, &rawlen, &at), 0);
    raw[rawlen - 3] ^= 0x10;
    assert_int_equal(
        kms_keyring_import_unwrap(&w->kv, KMS_HASH_SHA2_256, raw, rawlen, &key, &keylen, &err), -1);
    assert_string_equal(err.msg, "kwp: unwrap failed");
    assert_null(key);
    kms_free_wipe((void **)&raw, rawlen);
    free(ct);
    assert_int_equal(
        kms_keyring_import_wrap("not a pem", KMS_HASH_SHA2_256, material, sizeof(material), &ct),
        -1);
}

/* byok-export output opens as an import ciphertext under the destination's private key. */
static void test_byok_wrap_roundtrip(void **state)
{
    const struct wk *w = *state;
    static const enum kms_key_type types[] = {KMS_KEY_AES128_GCM96, KMS_KEY_HMAC, KMS_KEY_ED25519,
                                              KMS_KEY_ECDSA_P384};
    struct kms_key_policy sp, dp;
    struct kms_key_version skv, back;
    struct kms_err err;

    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        char *ct = NULL;
        uint8_t *key = NULL;
        size_t keylen = 0;

        assert_int_equal(kms_key_policy_init(&sp, types[i]), 0);
        sp.key_size = types[i] == KMS_KEY_HMAC ? 40 : 0;
        assert_int_equal(kms_key_version_generate(&sp, 1, &skv), 0);
        assert_int_equal(
            kms_keyring_byok_wrap(&w->p, &w->kv, &sp, &skv, KMS_HASH_SHA2_384, &ct, &err), 0);
        unwrap_b64(w, KMS_HASH_SHA2_384, ct, &key, &keylen, &err, 0);
        assert_int_equal(kms_key_version_import(&sp, 1, key, keylen, &back, &err), 0);
        assert_int_equal(back.key_len, skv.key_len);
        assert_memory_equal(back.key, skv.key, skv.key_len);
        kms_free_wipe((void **)&key, keylen);
        free(ct);
    }
    /* only RSA destinations */
    assert_int_equal(kms_key_policy_init(&dp, KMS_KEY_AES256_GCM96), 0);
    assert_int_equal(
        kms_keyring_byok_wrap(&dp, &skv, &sp, &skv, KMS_HASH_SHA2_256, &(char *){0}, &err), -1);
    assert_string_equal(err.msg, "key wrapping (requring message signing) is not supported for "
                                 "key type aes256-gcm96");
    assert_int_equal(kms_key_policy_init(&dp, KMS_KEY_ECDSA_P384), 0);
    assert_int_equal(
        kms_keyring_byok_wrap(&dp, &skv, &sp, &skv, KMS_HASH_SHA2_256, &(char *){0}, &err), -1);
    assert_string_equal(err.msg, "unsupported key type in use; must be a rsa key");
    kms_memzero(&skv, sizeof(skv));
    kms_memzero(&back, sizeof(back));
}

/* ---- imported material into versions ------------------------------------------------------ */

/* RFC 8410 section 10.3: an ed25519 private key in PKCS#8 (its seed is the last 32 bytes). */
static const char RFC8410_ED25519[] =
    "302e020100300506032b657004220420"
    "d4ee72dbf913584ad5b6d8f1f769f8ad3afe7c28cbf1d4fbe097a88f44755842";

static void test_version_import(void **state)
{
    struct kms_key_policy p;
    struct kms_key_version kv;
    struct kms_err err;
    uint8_t key[600], der[64];
    size_t derlen = unhex(RFC8410_ED25519, der);

    (void)state;
    memset(key, 0x33, sizeof(key));
    assert_int_equal(kms_key_policy_init(&p, KMS_KEY_AES128_GCM96), 0);
    assert_int_equal(kms_key_version_import(&p, 1, key, 16, &kv, &err), 0);
    assert_int_equal(kv.key_len, 32);
    assert_memory_equal(kv.key, key, 16);
    assert_int_equal(kv.key[16], 0);
    assert_int_equal(kms_key_version_import(&p, 1, key, 32, &kv, &err), -1);
    assert_string_equal(err.msg, "invalid key size 32 bytes for key type aes128-gcm96");

    assert_int_equal(kms_key_policy_init(&p, KMS_KEY_HMAC), 0);
    assert_int_equal(kms_key_version_import(&p, 3, key, 100, &kv, &err), 0);
    assert_int_equal(p.key_size, 100);
    assert_int_equal(kv.version, 3);
    assert_int_equal(kms_key_version_import(&p, 1, key, 31, &kv, &err), -1);
    assert_int_equal(kms_key_version_import(&p, 1, key, 513, &kv, &err), -1);
    assert_string_equal(err.msg, "invalid key size 513 bytes for key type hmac");

    assert_int_equal(kms_key_policy_init(&p, KMS_KEY_ED25519), 0);
    assert_int_equal(kms_key_version_import(&p, 1, der, derlen, &kv, &err), 0);
    assert_int_equal(kv.key_len, 64);
    assert_memory_equal(kv.key, der + derlen - 32, 32);
    assert_int_equal(kms_key_version_import(&p, 1, der, derlen - 1, &kv, &err), -1);
    assert_string_equal(err.msg, "error parsing asymmetric key: malformed PKCS#8 private key");

    assert_int_equal(kms_key_policy_init(&p, KMS_KEY_ECDSA_P256), 0);
    assert_int_equal(kms_key_version_import(&p, 1, der, derlen, &kv, &err), -1);
    assert_string_equal(err.msg, "invalid key type: expected ecdsa-p256, got ed25519.PrivateKey");
    for (size_t i = 0; i < sizeof(kv); i++)
        assert_int_equal(((const uint8_t *)&kv)[i], 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc5649_20_octets),        cmocka_unit_test(test_rfc5649_7_octets),
        cmocka_unit_test(test_kwp_roundtrip_and_tamper), cmocka_unit_test(test_kwp_sizes),
        cmocka_unit_test(test_version_import),
    };
    const struct CMUnitTest rsa_tests[] = {
        cmocka_unit_test(test_import_roundtrip_every_hash),
        cmocka_unit_test(test_import_refusals),
        cmocka_unit_test(test_byok_wrap_roundtrip),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    return failed + cmocka_run_group_tests(rsa_tests, wk_setup, wk_teardown);
}
