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

#include <pthread.h>
#include <stdlib.h>
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

#define NHASHES (sizeof(hashes) / sizeof(hashes[0]))

static const struct hash_desc *hash_lookup(enum kms_hash h)
{
    for (size_t i = 0; i < NHASHES; i++) {
        if (hashes[i].id == h)
            return &hashes[i];
    }
    return NULL;
}

/*
 * Fetched once per process: an implicit fetch (EVP_get_digestbyname, EVP_MAC_fetch per call)
 * costs a method-store lookup under a lock each time, which profiles showed to be a large part
 * of a small HMAC. The fetched objects live as long as the process.
 */
static EVP_MD *md_cache[NHASHES];
static EVP_MAC *hmac_cache;
static pthread_once_t fetch_once = PTHREAD_ONCE_INIT;

static void fetch_all(void)
{
    for (size_t i = 0; i < NHASHES; i++)
        md_cache[i] = EVP_MD_fetch(NULL, hashes[i].ossl, NULL);
    hmac_cache = EVP_MAC_fetch(NULL, "HMAC", NULL);
}

static const EVP_MD *md_of(const struct hash_desc *d)
{
    pthread_once(&fetch_once, fetch_all);
    return md_cache[d - hashes];
}

const EVP_MD *kms_hash_evp_md(enum kms_hash h)
{
    const struct hash_desc *d = hash_lookup(h);
    return d != NULL ? md_of(d) : NULL;
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
    const EVP_MD *md = NULL;
    unsigned int outl = 0;

    if (d == NULL || (md = md_of(d)) == NULL)
        return -1;
    if (EVP_Digest(n > 0 ? in : "", n, out, &outl, md, NULL) != 1 || outl != d->len)
        return -1;
    return 0;
}

int kms_hmac(enum kms_hash h, const void *key, size_t keylen, const void *in, size_t n,
             uint8_t *out)
{
    const struct hash_desc *d = hash_lookup(h);
    static const uint8_t empty[1] = {0};
    EVP_MAC_CTX *ctx = NULL;
    OSSL_PARAM params[2];
    size_t outl = 0;
    int rc = -1;

    if (d == NULL)
        goto out;
    pthread_once(&fetch_once, fetch_all);
    if (hmac_cache == NULL)
        goto out;
    ctx = EVP_MAC_CTX_new(hmac_cache);
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
    return rc;
}

/* ---- prepared HMAC-SHA256 keys ----------------------------------------------------------- */

/*
 * HMAC(K, m) = H((K ^ opad) || H((K ^ ipad) || m)). The two states after the key blocks are
 * computed once per key; each MAC copies them into the calling thread's scratch context and
 * hashes only the message and the inner digest (two compressions fewer, no fetch, no key
 * schedule per call). The prepared states are only read after creation, so any number of
 * threads may use one key at once.
 */
struct kms_hmac_key {
    EVP_MD_CTX *inner;
    EVP_MD_CTX *outer;
};

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *p)
{
    EVP_MD_CTX_free(p);
}

static void scratch_init(void)
{
    (void)pthread_key_create(&scratch_key, scratch_free);
}

/* The calling thread's scratch digest context, freed when the thread exits. */
static EVP_MD_CTX *scratch_ctx(void)
{
    pthread_once(&scratch_once, scratch_init);
    EVP_MD_CTX *c = pthread_getspecific(scratch_key);
    if (c == NULL) {
        c = EVP_MD_CTX_new();
        if (c != NULL && pthread_setspecific(scratch_key, c) != 0) {
            EVP_MD_CTX_free(c);
            c = NULL;
        }
    }
    return c;
}

int kms_hmac_key_create(const void *key, size_t keylen, struct kms_hmac_key **out)
{
    const EVP_MD *md = kms_hash_evp_md(KMS_HASH_SHA2_256);
    struct kms_hmac_key *k = calloc(1, sizeof(*k));
    uint8_t block[64];
    uint8_t pad[64];
    int rc = -1;

    memset(block, 0, sizeof(block));
    if (k == NULL || md == NULL)
        goto out;
    if (keylen > sizeof(block)) {
        if (kms_hash(KMS_HASH_SHA2_256, key, keylen, block) != 0)
            goto out;
    } else if (keylen > 0) {
        memcpy(block, key, keylen);
    }
    k->inner = EVP_MD_CTX_new();
    k->outer = EVP_MD_CTX_new();
    if (k->inner == NULL || k->outer == NULL)
        goto out;
    for (size_t i = 0; i < sizeof(pad); i++)
        pad[i] = block[i] ^ 0x36;
    if (EVP_DigestInit_ex(k->inner, md, NULL) != 1 ||
        EVP_DigestUpdate(k->inner, pad, sizeof(pad)) != 1)
        goto out;
    for (size_t i = 0; i < sizeof(pad); i++)
        pad[i] = block[i] ^ 0x5c;
    if (EVP_DigestInit_ex(k->outer, md, NULL) != 1 ||
        EVP_DigestUpdate(k->outer, pad, sizeof(pad)) != 1)
        goto out;
    *out = k;
    k = NULL;
    rc = 0;
out:
    kms_memzero(block, sizeof(block));
    kms_memzero(pad, sizeof(pad));
    kms_hmac_key_destroy(&k);
    return rc;
}

int kms_hmac_key_mac(const struct kms_hmac_key *k, const void *in, size_t n, uint8_t out[32])
{
    EVP_MD_CTX *c = scratch_ctx();
    uint8_t inner[32];
    unsigned int len = 0;
    int rc = -1;

    if (c == NULL || EVP_MD_CTX_copy_ex(c, k->inner) != 1 ||
        (n > 0 && EVP_DigestUpdate(c, in, n) != 1) || EVP_DigestFinal_ex(c, inner, &len) != 1 ||
        len != sizeof(inner))
        goto out;
    if (EVP_MD_CTX_copy_ex(c, k->outer) != 1 || EVP_DigestUpdate(c, inner, sizeof(inner)) != 1 ||
        EVP_DigestFinal_ex(c, out, &len) != 1 || len != 32)
        goto out;
    rc = 0;
out:
    kms_memzero(inner, sizeof(inner));
    return rc;
}

void kms_hmac_key_destroy(struct kms_hmac_key **kp)
{
    struct kms_hmac_key *k = *kp;
    if (k == NULL)
        return;
    EVP_MD_CTX_free(k->inner);
    EVP_MD_CTX_free(k->outer);
    free(k);
    *kp = NULL;
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
