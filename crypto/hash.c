/*
 * hash.c - the hashes Transit names (sha1, sha2-*, sha3-*), HMAC over them and HKDF-SHA256.
 *
 * Design notes:
 * - One table maps enum kms_hash to its Vault name, OpenSSL digest name and output length,
 *   so parse/name/len cannot drift apart.
 * - HMAC and HKDF use OpenSSL 3's EVP_MAC / EVP_KDF interfaces (the HMAC_* and
 *   EVP_PKEY-based HKDF APIs are deprecated). Contexts are freed at `out:`; OpenSSL wipes
 *   its own key copies when the contexts are freed.
 * - RFC 5869: an absent salt means HashLen zero bytes. That is what HMAC with an empty key
 *   computes anyway, but the salt is passed explicitly so the behaviour does not depend on
 *   how a provider treats an empty octet string.
 */
#include "crypto/crypto_int.h"

#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

struct hash_desc {
    enum kms_hash id;
    const char *name; /* Vault's name */
    const char *ossl; /* OpenSSL digest name */
    size_t len;
};

static const struct hash_desc hashes[] = {
    {KMS_HASH_SHA1, "sha1", "SHA1", 20},
    {KMS_HASH_SHA2_224, "sha2-224", "SHA2-224", 28},
    {KMS_HASH_SHA2_256, "sha2-256", "SHA2-256", 32},
    {KMS_HASH_SHA2_384, "sha2-384", "SHA2-384", 48},
    {KMS_HASH_SHA2_512, "sha2-512", "SHA2-512", 64},
    {KMS_HASH_SHA3_224, "sha3-224", "SHA3-224", 28},
    {KMS_HASH_SHA3_256, "sha3-256", "SHA3-256", 32},
    {KMS_HASH_SHA3_384, "sha3-384", "SHA3-384", 48},
    {KMS_HASH_SHA3_512, "sha3-512", "SHA3-512", 64},
};

static const struct hash_desc *hash_lookup(enum kms_hash h)
{
    for (size_t i = 0; i < sizeof(hashes) / sizeof(hashes[0]); i++) {
        if (hashes[i].id == h)
            return &hashes[i];
    }
    return NULL;
}

const char *kms_hash_ossl_name(enum kms_hash h)
{
    const struct hash_desc *d = hash_lookup(h);

    return d != NULL ? d->ossl : NULL;
}

int kms_hash_parse(const char *name, enum kms_hash *out)
{
    if (name == NULL)
        return -1;
    for (size_t i = 0; i < sizeof(hashes) / sizeof(hashes[0]); i++) {
        if (strcmp(hashes[i].name, name) == 0) {
            *out = hashes[i].id;
            return 0;
        }
    }
    return -1;
}

const char *kms_hash_name(enum kms_hash h)
{
    const struct hash_desc *d = hash_lookup(h);

    return d != NULL ? d->name : "";
}

size_t kms_hash_len(enum kms_hash h)
{
    const struct hash_desc *d = hash_lookup(h);

    return d != NULL ? d->len : 0;
}

int kms_hash(enum kms_hash h, const void *in, size_t n, uint8_t *out)
{
    const struct hash_desc *d = hash_lookup(h);
    EVP_MD *md = NULL;
    unsigned int outl = 0;
    int rc = -1;

    if (d == NULL)
        goto out;
    md = EVP_MD_fetch(NULL, d->ossl, NULL);
    if (md == NULL)
        goto out;
    if (EVP_Digest(n > 0 ? in : "", n, out, &outl, md, NULL) != 1 || outl != d->len)
        goto out;
    rc = 0;
out:
    EVP_MD_free(md);
    return rc;
}

int kms_hmac(enum kms_hash h, const void *key, size_t keylen, const void *in, size_t n,
             uint8_t *out)
{
    const struct hash_desc *d = hash_lookup(h);
    static const uint8_t empty[1] = {0};
    EVP_MAC *mac = NULL;
    EVP_MAC_CTX *ctx = NULL;
    OSSL_PARAM params[2];
    size_t outl = 0;
    int rc = -1;

    if (d == NULL)
        goto out;
    mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (mac == NULL)
        goto out;
    ctx = EVP_MAC_CTX_new(mac);
    if (ctx == NULL)
        goto out;
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)d->ossl, 0);
    params[1] = OSSL_PARAM_construct_end();
    if (EVP_MAC_init(ctx, keylen > 0 ? key : empty, keylen, params) != 1)
        goto out;
    if (n > 0 && EVP_MAC_update(ctx, in, n) != 1)
        goto out;
    if (EVP_MAC_final(ctx, out, &outl, d->len) != 1 || outl != d->len)
        goto out;
    rc = 0;
out:
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    return rc;
}

int kms_hkdf_sha256(const uint8_t *ikm, size_t ikmlen, const uint8_t *salt, size_t saltlen,
                    const uint8_t *info, size_t infolen, uint8_t *out, size_t outlen)
{
    static const uint8_t zero_salt[32] = {0};
    static const uint8_t empty[1] = {0};
    EVP_KDF *kdf = NULL;
    EVP_KDF_CTX *ctx = NULL;
    OSSL_PARAM params[5];
    size_t p = 0;
    int rc = -1;

    /* RFC 5869 caps L at 255 * HashLen. */
    if (outlen == 0 || outlen > (size_t)255 * 32)
        goto out;
    if (saltlen == 0) {
        salt = zero_salt;
        saltlen = sizeof(zero_salt);
    }
    kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    if (kdf == NULL)
        goto out;
    ctx = EVP_KDF_CTX_new(kdf);
    if (ctx == NULL)
        goto out;
    params[p++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA2-256", 0);
    params[p++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
                                                    (void *)(ikmlen > 0 ? ikm : empty), ikmlen);
    params[p++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, saltlen);
    if (infolen > 0)
        params[p++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, infolen);
    params[p] = OSSL_PARAM_construct_end();
    if (EVP_KDF_derive(ctx, out, outlen, params) != 1) {
        kms_memzero(out, outlen);
        goto out;
    }
    rc = 0;
out:
    EVP_KDF_CTX_free(ctx);
    EVP_KDF_free(kdf);
    return rc;
}
