/*
 * wrap.c - bring-your-own-key import (OpenBao's transit path_import.go and keysutil's
 * ImportPublicOrPrivate): AES key wrap with padding, the unwrap of an import ciphertext under
 * a mount's RSA-4096 wrapping key, and imported material turned into a key version.
 *
 * Design notes:
 * - AES-KWP is RFC 5649 as OpenSSL implements it (EVP_aes_{128,192,256}_wrap_pad); nothing
 *   here touches the block cipher. The wrap direction (kms_keyring_import_wrap) is the client
 *   side of an import, for the known-answer tests and for tools that build ciphertexts.
 * - The ephemeral AES key is opened with RSA-OAEP using the caller's hash for both the digest
 *   and MGF1 and an empty label, as Go's rsa.DecryptOAEP does with one hash.
 * - Asymmetric imports arrive as PKCS#8 DER. They are parsed by OpenSSL, checked against the
 *   policy's type and stored in the compact layout every version uses (keyring.h), so an
 *   imported key is indistinguishable from a generated one afterwards. RSA keys must have
 *   e = 65537 and two primes of exactly half the modulus: the layout keeps only p || q.
 * - Every secret temporary (ephemeral key, unwrapped material, BNs) is wiped at `out:`.
 */
#include "crypto/crypto_int.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <stdlib.h>
#include <string.h>

#define KWP_MAX_IN (1u << 24)
#define ED25519_LEN 32
#define RSA_E 65537

/* ---- AES-KWP ----------------------------------------------------------------------------- */

static const EVP_CIPHER *kwp_cipher(size_t keklen)
{
    switch (keklen) {
    case 16:
        return EVP_aes_128_wrap_pad();
    case 24:
        return EVP_aes_192_wrap_pad();
    case 32:
        return EVP_aes_256_wrap_pad();
    default:
        return NULL;
    }
}

static int kwp_run(bool enc, const uint8_t *kek, size_t keklen, const uint8_t *in, size_t inlen,
                   uint8_t *out, size_t *outlen)
{
    const EVP_CIPHER *ciph = kwp_cipher(keklen);
    EVP_CIPHER_CTX *ctx = NULL;
    int l1 = 0, l2 = 0;
    int rc = -1;

    *outlen = 0;
    if (ciph == NULL || inlen == 0 || inlen > KWP_MAX_IN)
        goto out;
    ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL)
        goto out;
    EVP_CIPHER_CTX_set_flags(ctx, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
    if (EVP_CipherInit_ex(ctx, ciph, NULL, kek, NULL, enc ? 1 : 0) != 1 ||
        EVP_CipherUpdate(ctx, out, &l1, in, (int)inlen) != 1 || l1 < 0 ||
        EVP_CipherFinal_ex(ctx, out + l1, &l2) != 1 || l2 < 0)
        goto out;
    *outlen = (size_t)l1 + (size_t)l2;
    rc = 0;
out:
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

int kms_kwp_wrap(const uint8_t *kek, size_t keklen, const uint8_t *in, size_t inlen, uint8_t *out,
                 size_t *outlen)
{
    return kwp_run(true, kek, keklen, in, inlen, out, outlen);
}

int kms_kwp_unwrap(const uint8_t *kek, size_t keklen, const uint8_t *in, size_t inlen, uint8_t *out,
                   size_t *outlen)
{
    /* RFC 5649: at least two 64-bit blocks, whole blocks only */
    if (inlen < 16 || inlen % 8 != 0 || inlen > KWP_MAX_IN + 16) {
        *outlen = 0;
        return -1;
    }
    if (kwp_run(false, kek, keklen, in, inlen, out, outlen) != 0) {
        kms_memzero(out, inlen);
        *outlen = 0;
        return -1;
    }
    return 0;
}

/* ---- import ciphertexts ------------------------------------------------------------------ */

static int oaep_open(const struct kms_key_version *wk, enum kms_hash h, const uint8_t *in,
                     uint8_t *out, size_t *outlen)
{
    const char *mdname = kms_hash_ossl_name(h);
    const EVP_MD *md = mdname != NULL ? EVP_get_digestbyname(mdname) : NULL;
    EVP_PKEY *k = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    int rc = -1;

    if (md == NULL || kms_asym_version_pkey(KMS_KEY_RSA4096, wk, true, &k) != 0)
        goto out;
    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, k, NULL);
    if (ctx == NULL || EVP_PKEY_decrypt_init(ctx) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) != 1 ||
        EVP_PKEY_CTX_set_rsa_oaep_md(ctx, md) != 1 || EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, md) != 1 ||
        EVP_PKEY_decrypt(ctx, out, outlen, in, KMS_IMPORT_RSA_BLOCK) != 1)
        goto out;
    rc = 0;
out:
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(k);
    return rc;
}

int kms_keyring_import_unwrap(const struct kms_key_version *wrapping, enum kms_hash oaep_hash,
                              const uint8_t *ct, size_t ctlen, uint8_t **key, size_t *keylen,
                              struct kms_err *err)
{
    uint8_t eph[KMS_IMPORT_RSA_BLOCK];
    size_t ephlen = sizeof(eph);
    uint8_t *buf = NULL;
    size_t wlen = 0, blen = 0;
    int rc = -1;

    *key = NULL;
    *keylen = 0;
    if (ctlen <= KMS_IMPORT_RSA_BLOCK) {
        kms_err_set(err, 500, "provided ciphertext is too short");
        goto out;
    }
    if (oaep_open(wrapping, oaep_hash, ct, eph, &ephlen) != 0) {
        kms_err_set(err, 500, "crypto/rsa: decryption error");
        goto out;
    }
    if (ephlen != 32) {
        kms_err_set(err, 500, "expected ephemeral AES key to be 256-bit");
        goto out;
    }
    wlen = ctlen - KMS_IMPORT_RSA_BLOCK;
    buf = malloc(wlen);
    if (buf == NULL) {
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    if (kms_kwp_unwrap(eph, 32, ct + KMS_IMPORT_RSA_BLOCK, wlen, buf, &blen) != 0) {
        kms_err_set(err, 500, "kwp: unwrap failed");
        goto out;
    }
    /* an exact-size copy, so the caller's wipe of *keylen bytes covers all of it */
    *key = malloc(blen > 0 ? blen : 1);
    if (*key == NULL) {
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    memcpy(*key, buf, blen);
    *keylen = blen;
    rc = 0;
out:
    kms_free_wipe((void **)&buf, wlen);
    kms_memzero(eph, sizeof(eph));
    return rc;
}

/* base64(RSA-OAEP(fresh AES-256 key) || AES-KWP(key)) for the RSA public key k; malloc'd. */
static int wrap_for(EVP_PKEY *k, enum kms_hash oaep_hash, const uint8_t *key, size_t keylen,
                    char **out)
{
    const char *mdname = kms_hash_ossl_name(oaep_hash);
    const EVP_MD *md = mdname != NULL ? EVP_get_digestbyname(mdname) : NULL;
    EVP_PKEY_CTX *ctx = NULL;
    uint8_t eph[32];
    uint8_t *buf = NULL;
    size_t rsalen = 0, wlen = 0, total = 0;
    int rc = -1;

    *out = NULL;
    if (md == NULL || keylen == 0 || keylen > KWP_MAX_IN || !EVP_PKEY_is_a(k, "RSA") ||
        EVP_PKEY_get_size(k) <= 0)
        goto out;
    rsalen = (size_t)EVP_PKEY_get_size(k);
    total = rsalen + KMS_KWP_WRAPPED_LEN(keylen);
    buf = malloc(total);
    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, k, NULL);
    if (buf == NULL || ctx == NULL || kms_rand_bytes(eph, sizeof(eph)) != 0 ||
        EVP_PKEY_encrypt_init(ctx) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) != 1 ||
        EVP_PKEY_CTX_set_rsa_oaep_md(ctx, md) != 1 || EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, md) != 1 ||
        EVP_PKEY_encrypt(ctx, buf, &rsalen, eph, sizeof(eph)) != 1 ||
        kms_kwp_wrap(eph, sizeof(eph), key, keylen, buf + rsalen, &wlen) != 0)
        goto out;
    *out = malloc(kms_b64_encoded_len(rsalen + wlen) + 1);
    if (*out == NULL)
        goto out;
    kms_b64_encode(buf, rsalen + wlen, *out);
    rc = 0;
out:
    kms_memzero(eph, sizeof(eph));
    kms_free_wipe((void **)&buf, total);
    EVP_PKEY_CTX_free(ctx);
    return rc;
}

int kms_keyring_import_wrap(const char *pem, enum kms_hash oaep_hash, const uint8_t *key,
                            size_t keylen, char **out)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *k = bio != NULL ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
    int rc = k != NULL ? wrap_for(k, oaep_hash, key, keylen, out) : -1;

    if (k == NULL)
        *out = NULL;
    EVP_PKEY_free(k);
    BIO_free(bio);
    return rc;
}

int kms_keyring_byok_wrap(const struct kms_key_policy *dst, const struct kms_key_version *dkv,
                          const struct kms_key_policy *src, const struct kms_key_version *skv,
                          enum kms_hash oaep_hash, char **out, struct kms_err *err)
{
    EVP_PKEY *dk = NULL, *sk = NULL;
    PKCS8_PRIV_KEY_INFO *p8 = NULL;
    unsigned char *der = NULL;
    int derlen = 0;
    const uint8_t *material = skv->key;
    size_t len = 0;
    int rc = -1;

    *out = NULL;
    if (!kms_key_type_supports_signing(dst->type)) {
        kms_err_set(err, 500,
                    "key wrapping (requring message signing) is not supported for key type %s",
                    kms_key_type_name(dst->type));
        goto out;
    }
    if (dst->type != KMS_KEY_RSA2048 && dst->type != KMS_KEY_RSA3072 &&
        dst->type != KMS_KEY_RSA4096) {
        kms_err_set(err, 500, "unsupported key type in use; must be a rsa key");
        goto out;
    }
    if (kms_key_type_is_aead(src->type)) {
        len = kms_key_type_key_len(src->type);
    } else if (src->type == KMS_KEY_HMAC) {
        len = skv->key_len;
    } else {
        /* PKCS#8, as Go's x509.MarshalPKCS8PrivateKey */
        if (kms_asym_version_pkey(src->type, skv, true, &sk) != 0 ||
            (p8 = EVP_PKEY2PKCS8(sk)) == NULL ||
            (derlen = i2d_PKCS8_PRIV_KEY_INFO(p8, &der)) <= 0) {
            kms_err_set(err, 500, "failed to wrap target key for import");
            goto out;
        }
        material = der;
        len = (size_t)derlen;
    }
    if (kms_asym_version_pkey(dst->type, dkv, false, &dk) != 0 ||
        wrap_for(dk, oaep_hash, material, len, out) != 0) {
        kms_err_set(err, 500, "failed to wrap target key for import");
        goto out;
    }
    rc = 0;
out:
    if (der != NULL)
        OPENSSL_clear_free(der, (size_t)derlen);
    PKCS8_PRIV_KEY_INFO_free(p8);
    EVP_PKEY_free(sk);
    EVP_PKEY_free(dk);
    return rc;
}

/* ---- imported material into a version ---------------------------------------------------- */

static size_t ec_field(enum kms_key_type t)
{
    switch (t) {
    case KMS_KEY_ECDSA_P256:
        return 32;
    case KMS_KEY_ECDSA_P384:
        return 48;
    case KMS_KEY_ECDSA_P521:
        return 66;
    default:
        return 0;
    }
}

static const char *ec_group(enum kms_key_type t)
{
    switch (t) {
    case KMS_KEY_ECDSA_P256:
        return "prime256v1";
    case KMS_KEY_ECDSA_P384:
        return "secp384r1";
    default:
        return "secp521r1";
    }
}

static int rsa_bits(enum kms_key_type t)
{
    switch (t) {
    case KMS_KEY_RSA2048:
        return 2048;
    case KMS_KEY_RSA3072:
        return 3072;
    case KMS_KEY_RSA4096:
        return 4096;
    default:
        return 0;
    }
}

static int take_ed25519(EVP_PKEY *k, struct kms_key_version *kv)
{
    size_t sl = ED25519_LEN, pl = ED25519_LEN;

    if (!EVP_PKEY_is_a(k, "ED25519") || EVP_PKEY_get_raw_private_key(k, kv->key, &sl) != 1 ||
        EVP_PKEY_get_raw_public_key(k, kv->key + ED25519_LEN, &pl) != 1 || sl != ED25519_LEN ||
        pl != ED25519_LEN)
        return -1;
    kv->key_len = 2 * ED25519_LEN;
    return 0;
}

static int take_ec(enum kms_key_type t, EVP_PKEY *k, struct kms_key_version *kv)
{
    size_t f = ec_field(t);
    char group[32];
    size_t gl = 0, pl = 0;
    BIGNUM *d = NULL;
    int rc = -1;

    if (!EVP_PKEY_is_a(k, "EC") ||
        EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), &gl) !=
            1 ||
        strcmp(group, ec_group(t)) != 0)
        goto out;
    if (EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_PRIV_KEY, &d) != 1 ||
        BN_bn2binpad(d, kv->key, (int)f) != (int)f)
        goto out;
    /* the uncompressed point, whatever form the PKCS#8 carried */
    if (EVP_PKEY_set_utf8_string_param(k, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
                                       "uncompressed") != 1 ||
        EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, kv->key + f,
                                        1 + 2 * f, &pl) != 1 ||
        pl != 1 + 2 * f || kv->key[f] != 0x04)
        goto out;
    kv->key_len = (uint32_t)(3 * f + 1);
    rc = 0;
out:
    BN_clear_free(d);
    return rc;
}

static int take_rsa(enum kms_key_type t, EVP_PKEY *k, struct kms_key_version *kv)
{
    int half = rsa_bits(t) / 16;
    BIGNUM *p = NULL, *q = NULL, *e = NULL, *r3 = NULL;
    int rc = -1;

    if (!EVP_PKEY_is_a(k, "RSA") || EVP_PKEY_get_bits(k) != rsa_bits(t) ||
        EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_E, &e) != 1 || !BN_is_word(e, RSA_E) ||
        EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_FACTOR1, &p) != 1 ||
        EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_FACTOR2, &q) != 1)
        goto out;
    /* multi-prime keys cannot be kept as p || q */
    if (EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_FACTOR3, &r3) == 1)
        goto out;
    if (BN_num_bytes(p) != half || BN_num_bytes(q) != half ||
        BN_bn2binpad(p, kv->key, half) != half || BN_bn2binpad(q, kv->key + half, half) != half)
        goto out;
    kv->key_len = (uint32_t)(2 * half);
    rc = 0;
out:
    BN_clear_free(r3);
    BN_clear_free(p);
    BN_clear_free(q);
    BN_free(e);
    return rc;
}

/* Go's name (%T) of what x509.ParsePKCS8PrivateKey gives for k, or NULL. */
static const char *go_key_type(const EVP_PKEY *k)
{
    switch (EVP_PKEY_get_base_id(k)) {
    case EVP_PKEY_RSA:
        return "*rsa.PrivateKey";
    case EVP_PKEY_EC:
        return "*ecdsa.PrivateKey";
    case EVP_PKEY_ED25519:
        return "ed25519.PrivateKey";
    case EVP_PKEY_X25519:
        return "*ecdh.PrivateKey";
    default:
        return NULL;
    }
}

/* Go's name of a NIST curve ("P-256"), or NULL for another curve. */
static const char *go_curve(const char *group)
{
    if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0) {
        return "P-256";
    }
    if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0) {
        return "P-384";
    }
    if (strcmp(group, "secp521r1") == 0 || strcmp(group, "P-521") == 0) {
        return "P-521";
    }
    return NULL;
}

/* A key of another type, curve or size than t: OpenBao's message (keysutil's parseFromKey)
 * in err and 1; 0 when family, curve and size fit. */
static int key_mismatch(enum kms_key_type t, const EVP_PKEY *k, struct kms_err *err)
{
    static const char *const curves[] = {"P-256", "P-384", "P-521"};
    const char *got = go_key_type(k);
    int base = EVP_PKEY_get_base_id(k);
    int want = t == KMS_KEY_ED25519 ? EVP_PKEY_ED25519
               : ec_field(t) != 0   ? EVP_PKEY_EC
                                    : EVP_PKEY_RSA;
    if (base != want) {
        if (got == NULL) {
            kms_err_set(err, 500, "error parsing asymmetric key: unsupported key type");
        } else {
            kms_err_set(err, 500, "invalid key type: expected %s, got %s", kms_key_type_name(t),
                        got);
        }
        return 1;
    }
    if (base == EVP_PKEY_EC) {
        char group[64] = "";
        size_t glen = 0;
        const char *expect = curves[t == KMS_KEY_ECDSA_P256 ? 0 : t == KMS_KEY_ECDSA_P384 ? 1 : 2];
        const char *have = EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, group,
                                                          sizeof(group), &glen) == 1
                               ? go_curve(group)
                               : NULL;
        if (have == NULL) {
            kms_err_set(err, 500, "error parsing asymmetric key: x509: unsupported elliptic curve");
            return 1;
        }
        if (strcmp(have, expect) != 0) {
            kms_err_set(err, 500, "invalid curve: expected %s, got %s", expect, have);
            return 1;
        }
    }
    if (base == EVP_PKEY_RSA && EVP_PKEY_get_size(k) != rsa_bits(t) / 8) {
        kms_err_set(err, 500, "invalid key size: expected %d bytes, got %d bytes", rsa_bits(t) / 8,
                    EVP_PKEY_get_size(k));
        return 1;
    }
    return 0;
}

static int take_pkcs8(enum kms_key_type t, const uint8_t *der, size_t len,
                      struct kms_key_version *kv, struct kms_err *err)
{
    const unsigned char *pp = der;
    PKCS8_PRIV_KEY_INFO *p8 = NULL;
    EVP_PKEY *k = NULL;
    int rc = -1;

    if (len > (size_t)KMS_KEY_MATERIAL_MAX * 8)
        goto bad;
    p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &pp, (long)len);
    if (p8 == NULL || pp != der + len || (k = EVP_PKCS82PKEY(p8)) == NULL)
        goto bad;
    if (key_mismatch(t, k, err))
        goto out;
    if (t == KMS_KEY_ED25519)
        rc = take_ed25519(k, kv);
    else if (ec_field(t) != 0)
        rc = take_ec(t, k, kv);
    else if (rsa_bits(t) != 0)
        rc = take_rsa(t, k, kv);
    if (rc != 0) {
        kms_err_set(err, 500, "error parsing asymmetric key: not a %s private key",
                    kms_key_type_name(t));
    }
    goto out;
bad:
    kms_err_set(err, 500, "error parsing asymmetric key: malformed PKCS#8 private key");
out:
    EVP_PKEY_free(k);
    PKCS8_PRIV_KEY_INFO_free(p8);
    return rc;
}

int kms_key_version_import(struct kms_key_policy *p, uint32_t version, const uint8_t *key,
                           size_t keylen, struct kms_key_version *out, struct kms_err *err)
{
    size_t aead = kms_key_type_key_len(p->type);
    int rc = -1;

    memset(out, 0, sizeof(*out));
    if ((kms_key_type_is_aead(p->type) && keylen != aead) ||
        (p->type == KMS_KEY_HMAC && (keylen < KMS_HMAC_KEY_MIN || keylen > KMS_HMAC_KEY_MAX))) {
        kms_err_set(err, 500, "invalid key size %zu bytes for key type %s", keylen,
                    kms_key_type_name(p->type));
        goto out;
    }
    out->version = version;
    if (kms_key_type_is_aead(p->type)) {
        /* records keep 32 bytes whatever the AEAD key length, as generated versions do */
        memcpy(out->key, key, keylen);
        out->key_len = 32;
    } else if (p->type == KMS_KEY_HMAC) {
        memcpy(out->key, key, keylen);
        out->key_len = (uint32_t)keylen;
        p->key_size = (uint32_t)keylen;
    } else if (take_pkcs8(p->type, key, keylen, out, err) != 0) {
        goto out;
    }
    if (kms_rand_bytes(out->hmac_key, sizeof(out->hmac_key)) != 0) {
        kms_err_set(err, 500, "cannot generate key material");
        goto out;
    }
    kms_now(&out->created_sec, &out->created_nsec);
    out->convergent_version = p->convergent ? KMS_KEY_CONVERGENT_VERSION : 0;
    rc = 0;
out:
    if (rc != 0)
        kms_memzero(out, sizeof(*out));
    return rc;
}
