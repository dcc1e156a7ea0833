/*
 * sign.c - Transit's asymmetric keys on OpenSSL 3 EVP_PKEY: generation of ed25519, ECDSA
 * (P-256/384/521) and RSA (2048/3072/4096) versions, sign and verify in OpenBao's formats,
 * RSA-OAEP for the rsa-* encrypt/decrypt, public keys and the export encodings.
 *
 * Design notes:
 * - A version stores compact material (keyring.h): ed25519 seed || public key, ECDSA scalar
 *   || uncompressed point, RSA p || q. An EVP_PKEY is rebuilt from it (RSA's d, CRT
 *   exponents and coefficient are recomputed with BN; e is always 65537) per call, or once
 *   per request through the request's kms_sign_cache, so nothing holding OpenSSL state
 *   outlives a request and the key cache keeps plain bytes. Building the key costs about as
 *   much as the signature (ECDSA's group set-up, ed25519's public key from the seed), which
 *   is why a batch builds it once.
 * - Behaviour follows OpenBao's keysutil SignWithOptions/VerifySignatureWithOptions and the
 *   transit export handler: ECDSA and RSA sign a digest of the input (unless prehashed),
 *   ed25519 the raw input; RSA-PSS salt lengths use Go's conventions (0 = auto: the largest
 *   salt when signing, detected when verifying; -1 = the digest length); hash "none" is raw
 *   PKCS#1 v1.5 without a DigestInfo.
 * - ASN.1 ECDSA signatures are parsed the way Go's encoding/asn1 parses them (strict DER
 *   lengths and minimal integers, extra elements inside the SEQUENCE ignored, bytes after it
 *   reported as extra data) and re-encoded canonically for OpenSSL, so the answers (invalid,
 *   extra data, valid false) match OpenBao's.
 * - Derived ed25519 keys: the signing seed is HKDF-SHA256(stored 64-byte key, empty salt,
 *   context), 32 bytes, as Go's ed25519.GenerateKey reads it from the HKDF stream.
 * - Secret temporaries (seeds, BNs, DER of private keys) are wiped at `out:`.
 */
#include "crypto/crypto_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/encoder.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#define RSA_E 65537u
#define ED25519_LEN 32
#define SIG_PREFIX "vault:v"
#define SIG_PREFIX_LEN (sizeof(SIG_PREFIX) - 1)
#define SIG_MAX 1024 /* RSA-4096 is 512 bytes, ECDSA P-521 DER 139 */

/* ---- key type facts ---------------------------------------------------------------------- */

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
        return "P-256";
    case KMS_KEY_ECDSA_P384:
        return "P-384";
    default:
        return "P-521";
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

static const EVP_MD *md_of(enum kms_hash h)
{
    const char *name = kms_hash_ossl_name(h);

    return name != NULL ? EVP_get_digestbyname(name) : NULL;
}

/* ---- generation -------------------------------------------------------------------------- */

static int gen_ed25519(uint8_t *key, uint32_t *key_len)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    size_t sl = ED25519_LEN, pl = ED25519_LEN;
    int rc = -1;

    if (k == NULL || EVP_PKEY_get_raw_private_key(k, key, &sl) != 1 ||
        EVP_PKEY_get_raw_public_key(k, key + ED25519_LEN, &pl) != 1 || sl != ED25519_LEN ||
        pl != ED25519_LEN)
        goto out;
    *key_len = 2 * ED25519_LEN;
    rc = 0;
out:
    EVP_PKEY_free(k);
    return rc;
}

static int gen_ec(enum kms_key_type t, uint8_t *key, uint32_t *key_len)
{
    size_t f = ec_field(t);
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", ec_group(t));
    BIGNUM *d = NULL;
    size_t pl = 0;
    int rc = -1;

    if (k == NULL || EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_PRIV_KEY, &d) != 1 ||
        BN_bn2binpad(d, key, (int)f) != (int)f)
        goto out;
    if (EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, key + f, 1 + 2 * f,
                                        &pl) != 1 ||
        pl != 1 + 2 * f || key[f] != 0x04)
        goto out;
    *key_len = (uint32_t)(f + 1 + 2 * f);
    rc = 0;
out:
    BN_clear_free(d);
    EVP_PKEY_free(k);
    return rc;
}

static int gen_rsa(enum kms_key_type t, uint8_t *key, uint32_t *key_len)
{
    int bits = rsa_bits(t);
    int half = bits / 16;
    EVP_PKEY *k = NULL;
    BIGNUM *p = NULL, *q = NULL, *e = NULL;
    int rc = -1;

    /* OpenSSL's primes are exactly bits/2 long; the fixed-width layout relies on it. */
    for (int tries = 0; tries < 4 && rc != 0; tries++) {
        EVP_PKEY_free(k);
        BN_clear_free(p);
        BN_clear_free(q);
        BN_free(e);
        p = q = e = NULL;
        k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits);
        if (k == NULL || EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_FACTOR1, &p) != 1 ||
            EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_FACTOR2, &q) != 1 ||
            EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_E, &e) != 1)
            goto out;
        if (!BN_is_word(e, RSA_E) || BN_num_bytes(p) != half || BN_num_bytes(q) != half)
            continue;
        if (BN_bn2binpad(p, key, half) != half || BN_bn2binpad(q, key + half, half) != half)
            goto out;
        *key_len = (uint32_t)(2 * half);
        rc = 0;
    }
out:
    BN_clear_free(p);
    BN_clear_free(q);
    BN_free(e);
    EVP_PKEY_free(k);
    return rc;
}

int kms_asym_generate(enum kms_key_type t, uint8_t *key, uint32_t *key_len)
{
    int rc = -1;

    if (t == KMS_KEY_ED25519)
        rc = gen_ed25519(key, key_len);
    else if (ec_field(t) != 0)
        rc = gen_ec(t, key, key_len);
    else if (rsa_bits(t) != 0)
        rc = gen_rsa(t, key, key_len);
    if (rc != 0)
        kms_memzero(key, KMS_KEY_MATERIAL_MAX);
    return rc;
}

/* ---- EVP_PKEY from a version's material -------------------------------------------------- */

static int pkey_fromdata(const char *alg, int selection, OSSL_PARAM_BLD *bld, EVP_PKEY **out)
{
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, alg, NULL);
    int rc = -1;

    if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, out, selection, params) != 1)
        goto out;
    rc = 0;
out:
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params); /* secure BNs sit in the secure part, which is cleared */
    return rc;
}

/* An ed25519 key from a seed (the public key is computed) or from a public key alone. */
static int ed25519_pkey(const uint8_t *seed, const uint8_t *pub, EVP_PKEY **out)
{
    *out = seed != NULL ? EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, ED25519_LEN)
                        : EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, ED25519_LEN);
    return *out != NULL ? 0 : -1;
}

static int ec_pkey(enum kms_key_type t, const uint8_t *key, bool priv, EVP_PKEY **out)
{
    size_t f = ec_field(t);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    BIGNUM *d = NULL;
    int rc = -1;

    if (bld == NULL ||
        OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, ec_group(t), 0) != 1 ||
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, key + f, 1 + 2 * f) != 1)
        goto out;
    if (priv) {
        d = BN_secure_new();
        if (d == NULL || BN_bin2bn(key, (int)f, d) == NULL ||
            OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, d) != 1)
            goto out;
    }
    rc = pkey_fromdata("EC", priv ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, bld, out);
out:
    BN_clear_free(d);
    OSSL_PARAM_BLD_free(bld);
    return rc;
}

/*
 * RSA from p || q: n = pq, d = e^-1 mod lcm(p-1, q-1) (as OpenSSL's own key generation),
 * then the CRT values.
 */
static int rsa_pkey(enum kms_key_type t, const uint8_t *key, bool priv, EVP_PKEY **out)
{
    int half = rsa_bits(t) / 16;
    BN_CTX *bc = BN_CTX_secure_new();
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    BIGNUM *p = BN_secure_new(), *q = BN_secure_new(), *n = BN_new(), *e = BN_new();
    BIGNUM *p1 = BN_secure_new(), *q1 = BN_secure_new(), *g = BN_secure_new();
    BIGNUM *l = BN_secure_new(), *d = BN_secure_new(), *dp = BN_secure_new();
    BIGNUM *dq = BN_secure_new(), *qi = BN_secure_new();
    int rc = -1;

    if (bc == NULL || bld == NULL || p == NULL || q == NULL || n == NULL || e == NULL ||
        p1 == NULL || q1 == NULL || g == NULL || l == NULL || d == NULL || dp == NULL ||
        dq == NULL || qi == NULL)
        goto out;
    if (BN_bin2bn(key, half, p) == NULL || BN_bin2bn(key + half, half, q) == NULL ||
        BN_set_word(e, RSA_E) != 1 || BN_mul(n, p, q, bc) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) != 1)
        goto out;
    if (priv) {
        if (BN_sub(p1, p, BN_value_one()) != 1 || BN_sub(q1, q, BN_value_one()) != 1 ||
            BN_gcd(g, p1, q1, bc) != 1 || BN_mul(l, p1, q1, bc) != 1 ||
            BN_div(l, NULL, l, g, bc) != 1 || BN_mod_inverse(d, e, l, bc) == NULL ||
            BN_mod(dp, d, p1, bc) != 1 || BN_mod(dq, d, q1, bc) != 1 ||
            BN_mod_inverse(qi, q, p, bc) == NULL)
            goto out;
        if (OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_D, d) != 1 ||
            OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_FACTOR1, p) != 1 ||
            OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_FACTOR2, q) != 1 ||
            OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_EXPONENT1, dp) != 1 ||
            OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_EXPONENT2, dq) != 1 ||
            OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_COEFFICIENT1, qi) != 1)
            goto out;
    }
    rc = pkey_fromdata("RSA", priv ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, bld, out);
out:
    BN_clear_free(qi);
    BN_clear_free(dq);
    BN_clear_free(dp);
    BN_clear_free(d);
    BN_clear_free(l);
    BN_clear_free(g);
    BN_clear_free(q1);
    BN_clear_free(p1);
    BN_free(e);
    BN_free(n);
    BN_clear_free(q);
    BN_clear_free(p);
    OSSL_PARAM_BLD_free(bld);
    BN_CTX_free(bc);
    return rc;
}

/* Whether kv holds well-formed material for the key type. */
static bool material_ok(enum kms_key_type t, const struct kms_key_version *kv)
{
    if (t == KMS_KEY_ED25519)
        return kv->key_len == 2 * ED25519_LEN;
    if (ec_field(t) != 0)
        return kv->key_len == 3 * ec_field(t) + 1;
    if (rsa_bits(t) != 0)
        return kv->key_len == (uint32_t)rsa_bits(t) / 8;
    return false;
}

/* The version's own (underived) key; public only unless priv. */
static int version_pkey(enum kms_key_type t, const struct kms_key_version *kv, bool priv,
                        EVP_PKEY **out)
{
    *out = NULL;
    if (!material_ok(t, kv))
        return -1;
    if (t == KMS_KEY_ED25519)
        return ed25519_pkey(priv ? kv->key : NULL, kv->key + ED25519_LEN, out);
    if (ec_field(t) != 0)
        return ec_pkey(t, kv->key, priv, out);
    return rsa_pkey(t, kv->key, priv, out);
}

int kms_asym_version_pkey(enum kms_key_type t, const struct kms_key_version *kv, bool priv,
                          EVP_PKEY **out)
{
    return version_pkey(t, kv, priv, out);
}

/* ---- the request's key cache ------------------------------------------------------------- */

#define SIGN_CACHE_SLOTS 4

struct kms_sign_cache {
    struct {
        EVP_PKEY *k; /* NULL: free slot */
        char uuid[sizeof(((struct kms_key_policy *)0)->uuid)];
        uint32_t version;
        bool priv;
    } e[SIGN_CACHE_SLOTS];
};

int kms_sign_cache_create(struct kms_sign_cache **out)
{
    *out = calloc(1, sizeof(**out));
    return *out != NULL ? 0 : -1;
}

void kms_sign_cache_destroy(struct kms_sign_cache **c)
{
    if (*c == NULL)
        return;
    for (size_t i = 0; i < SIGN_CACHE_SLOTS; i++)
        EVP_PKEY_free((*c)->e[i].k);
    free(*c);
    *c = NULL;
}

/* version_pkey through o's cache, if any. *out is a new reference either way. */
static int cached_pkey(const struct kms_key_policy *p, const struct kms_key_version *kv,
                       const struct kms_sign_opts *o, bool priv, EVP_PKEY **out)
{
    struct kms_sign_cache *c = o->cache;
    size_t slot = SIGN_CACHE_SLOTS;

    if (c == NULL)
        return version_pkey(p->type, kv, priv, out);
    for (size_t i = 0; i < SIGN_CACHE_SLOTS; i++) {
        if (c->e[i].k == NULL) {
            slot = slot < SIGN_CACHE_SLOTS ? slot : i;
            continue;
        }
        if (c->e[i].version == kv->version && c->e[i].priv == priv &&
            strcmp(c->e[i].uuid, p->uuid) == 0) {
            *out = c->e[i].k;
            return EVP_PKEY_up_ref(*out) == 1 ? 0 : (*out = NULL, -1);
        }
    }
    if (version_pkey(p->type, kv, priv, out) != 0)
        return -1;
    if (slot < SIGN_CACHE_SLOTS && EVP_PKEY_up_ref(*out) == 1) {
        c->e[slot].k = *out;
        snprintf(c->e[slot].uuid, sizeof(c->e[slot].uuid), "%s", p->uuid);
        c->e[slot].version = kv->version;
        c->e[slot].priv = priv;
    }
    return 0;
}

/* Derived ed25519: seed = HKDF-SHA256(stored 64 bytes, empty salt, context). */
static int derived_seed(const struct kms_key_version *kv, const uint8_t *context, size_t ctxlen,
                        uint8_t seed[ED25519_LEN], struct kms_err *err)
{
    if (ctxlen == 0)
        return kms_err_set(err, 500, "error deriving key: %s", KMS_MSG_MISSING_CONTEXT);
    if (kv->key_len != 2 * ED25519_LEN ||
        kms_hkdf_sha256(kv->key, kv->key_len, NULL, 0, context, ctxlen, seed, ED25519_LEN) != 0)
        return kms_err_set(err, 500, "error deriving key: error generating derived key");
    return 0;
}

/* ---- encodings --------------------------------------------------------------------------- */

/* base64 (std, or url without padding) of n bytes; malloc'd. */
static char *b64_alloc(const uint8_t *in, size_t n, bool url)
{
    char *s = malloc(kms_b64_encoded_len(n) + 1);

    if (s == NULL)
        return NULL;
    kms_b64_encode(in, n, s);
    if (url) {
        size_t o = 0;

        for (size_t i = 0; s[i] != '\0'; i++) {
            if (s[i] == '=')
                break;
            s[o++] = s[i] == '+' ? '-' : s[i] == '/' ? '_' : s[i];
        }
        s[o] = '\0';
    }
    return s;
}

/* Copy of a memory BIO's contents as a string, without trailing whitespace when trim. */
static char *bio_string(BIO *bio, bool trim)
{
    char *data = NULL;
    long len = BIO_get_mem_data(bio, &data);
    char *s = NULL;

    if (len < 0 || data == NULL)
        return NULL;
    while (trim && len > 0 &&
           (data[len - 1] == '\n' || data[len - 1] == '\r' || data[len - 1] == ' ' ||
            data[len - 1] == '\t'))
        len--;
    s = malloc((size_t)len + 1);
    if (s == NULL)
        return NULL;
    memcpy(s, data, (size_t)len);
    s[len] = '\0';
    return s;
}

static char *public_pem(EVP_PKEY *k, bool trim)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *s = NULL;

    if (bio != NULL && PEM_write_bio_PUBKEY(bio, k) == 1)
        s = bio_string(bio, trim);
    BIO_free(bio);
    return s;
}

static char *public_der_b64(EVP_PKEY *k)
{
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(k, &der);
    char *s = n > 0 ? b64_alloc(der, (size_t)n, false) : NULL;

    OPENSSL_free(der);
    return s;
}

/*
 * A private key through OpenSSL's encoders: structure "type-specific" (PKCS#1 "RSA PRIVATE
 * KEY", SEC1 "EC PRIVATE KEY") or "PrivateKeyInfo" (PKCS#8), as PEM text or base64 DER.
 */
static char *private_encode(EVP_PKEY *k, const char *structure, bool pem, bool trim)
{
    OSSL_ENCODER_CTX *ec =
        OSSL_ENCODER_CTX_new_for_pkey(k, EVP_PKEY_KEYPAIR, pem ? "PEM" : "DER", structure, NULL);
    unsigned char *data = NULL;
    size_t len = 0;
    char *s = NULL;

    if (ec == NULL || OSSL_ENCODER_CTX_get_num_encoders(ec) == 0 ||
        OSSL_ENCODER_to_data(ec, &data, &len) != 1)
        goto out;
    if (!pem) {
        s = b64_alloc(data, len, false);
        goto out;
    }
    while (trim && len > 0 && (data[len - 1] == '\n' || data[len - 1] == ' '))
        len--;
    s = malloc(len + 1);
    if (s != NULL) {
        memcpy(s, data, len);
        s[len] = '\0';
    }
out:
    if (data != NULL)
        OPENSSL_clear_free(data, len);
    OSSL_ENCODER_CTX_free(ec);
    return s;
}

/* ---- sign / verify options --------------------------------------------------------------- */

/* Go's strconv.Atoi for an int (64-bit): sign, digits, no other characters. */
static bool go_atoi_int(const char *s, int64_t *out)
{
    const char *d = s;

    if (*d == '+' || *d == '-')
        d++;
    if (*d == '\0')
        return false;
    for (const char *c = d; *c != '\0'; c++) {
        if (*c < '0' || *c > '9')
            return false;
    }
    return kms_int_parse(s, out);
}

int kms_sign_opts_parse(const char *hash, const char *marshaling, const char *salt,
                        const char *sig_alg, bool prehashed, struct kms_sign_opts *o,
                        struct kms_err *err)
{
    char lower[64];
    size_t i;
    int64_t v = 0;

    memset(o, 0, sizeof(*o));
    o->prehashed = prehashed;
    if (strcmp(hash, "none") == 0)
        o->hash_none = true;
    else if (kms_hash_parse(hash, &o->hash) != 0)
        return kms_err_set(err, 400, "invalid hash algorithm \"%s\"", hash);
    if (strcmp(marshaling, "jws") == 0)
        o->jws = true;
    else if (strcmp(marshaling, "asn1") != 0)
        return kms_err_set(err, 400, "invalid marshaling type \"%s\"", marshaling);
    for (i = 0; salt[i] != '\0' && i + 1 < sizeof(lower); i++)
        lower[i] = (salt[i] >= 'A' && salt[i] <= 'Z') ? (char)(salt[i] - 'A' + 'a') : salt[i];
    lower[i] = '\0';
    if (strcmp(lower, "auto") == 0) {
        o->salt_length = 0;
    } else if (strcmp(lower, "hash") == 0) {
        o->salt_length = -1;
    } else {
        if (strlen(salt) >= sizeof(lower) || !go_atoi_int(lower, &v))
            return kms_err_set(err, 400, "salt length neither 'auto', 'hash', nor an int: %s",
                               salt);
        if (v < -1)
            return kms_err_set(err, 400, "salt length is invalid: %" PRId64, v);
        /* larger values fail the key-size check later, with OpenBao's message */
        o->salt_length = v > 65536 ? 65536 : (int)v;
    }
    /* a truncated name can equal neither "pss" nor "pkcs1v15", so it still fails at use */
    snprintf(o->sig_alg, sizeof(o->sig_alg), "%s", sig_alg != NULL ? sig_alg : "");
    return 0;
}

/* ---- versions ---------------------------------------------------------------------------- */

int kms_keyring_sign_version(const struct kms_key_policy *p, int64_t requested, uint32_t *version,
                             struct kms_err *err)
{
    int64_t v = requested;

    if (v == 0)
        v = p->latest_version;
    else if (v < 0)
        return kms_err_set(err, 400, "requested version for signing is negative");
    else if (v > (int64_t)p->latest_version)
        return kms_err_set(err, 400,
                           "requested version for signing is higher than the latest key version");
    else if (p->min_encryption_version > 0 && v < (int64_t)p->min_encryption_version)
        return kms_err_set(
            err, 400,
            "requested version for signing is less than the minimum encryption key version");
    if (v < 1 || v < (int64_t)p->min_decryption_version)
        return kms_err_set(err, 400, "no such key version");
    *version = (uint32_t)v;
    return 0;
}

/* "vault:v<N>:" of a signature: N (Go's Atoi, no 0 -> 1 mapping) and the payload offset. */
static int sig_header(const char *sig, size_t len, int64_t *v, size_t *payload, struct kms_err *err)
{
    const char *colon;
    char num[24];
    size_t nl;

    if (len < SIG_PREFIX_LEN || memcmp(sig, SIG_PREFIX, SIG_PREFIX_LEN) != 0)
        return kms_err_set(err, 400, "invalid signature: no prefix");
    colon = memchr(sig + SIG_PREFIX_LEN, ':', len - SIG_PREFIX_LEN);
    if (colon == NULL)
        return kms_err_set(err, 400, "invalid signature: wrong number of fields");
    nl = (size_t)(colon - sig) - SIG_PREFIX_LEN;
    if (nl >= sizeof(num))
        return kms_err_set(err, 400, "invalid signature: version number could not be decoded");
    memcpy(num, sig + SIG_PREFIX_LEN, nl);
    num[nl] = '\0';
    if (!go_atoi_int(num, v))
        return kms_err_set(err, 400, "invalid signature: version number could not be decoded");
    *payload = (size_t)(colon - sig) + 1;
    return 0;
}

int kms_keyring_signature_version(const struct kms_key_policy *p, const char *sig, size_t len,
                                  uint32_t *version, struct kms_err *err)
{
    int64_t v = 0;
    size_t off = 0;

    if (sig_header(sig, len, &v, &off, err) != 0)
        return -1;
    if (v > (int64_t)p->latest_version)
        return kms_err_set(err, 400, "invalid signature: version is too new");
    if (v < 1 || v < (int64_t)p->min_decryption_version)
        return kms_err_set(err, 400,
                           "ciphertext or signature version is disallowed by policy (too old)");
    *version = (uint32_t)v;
    return 0;
}

/* ---- signing ----------------------------------------------------------------------------- */

/* The bytes that are signed: the digest of the input for ECDSA and RSA unless prehashed. */
static const uint8_t *signed_input(enum kms_key_type t, const struct kms_sign_opts *o,
                                   const uint8_t *in, size_t *len, uint8_t dg[KMS_HASH_MAX_LEN])
{
    if (t == KMS_KEY_ED25519 || o->prehashed || o->hash_none)
        return in;
    if (kms_hash(o->hash, in, *len, dg) != 0)
        return NULL;
    *len = kms_hash_len(o->hash);
    return dg;
}

/* 0 pss, 1 pkcs1v15, -1 unknown (500 with OpenBao's message). */
static int rsa_scheme(const struct kms_sign_opts *o, struct kms_err *err)
{
    if (o->sig_alg[0] == '\0' || strcmp(o->sig_alg, "pss") == 0)
        return 0;
    if (strcmp(o->sig_alg, "pkcs1v15") == 0)
        return 1;
    return kms_err_set(err, 500, "unsupported rsa signature algorithm %s", o->sig_alg);
}

/* Go's bounds for PSS salt lengths: -1 (hash length) .. emLen - 2 - hLen. */
static int rsa_salt_check(enum kms_key_type t, const struct kms_sign_opts *o, struct kms_err *err)
{
    int max = (rsa_bits(t) - 1 + 7) / 8 - 2 - (int)kms_hash_len(o->hash);

    if (o->salt_length < -1 || o->salt_length > max)
        return kms_err_set(err, 400, "requested salt length %d is invalid", o->salt_length);
    return 0;
}

/* Set up an RSA signature context (sign or verify) for the scheme. */
static int rsa_ctx_setup(EVP_PKEY_CTX *ctx, const struct kms_sign_opts *o, int scheme, bool sign)
{
    const EVP_MD *md = o->hash_none ? NULL : md_of(o->hash);
    int salt;

    if (!o->hash_none && md == NULL)
        return -1;
    if (EVP_PKEY_CTX_set_rsa_padding(ctx,
                                     scheme == 0 ? RSA_PKCS1_PSS_PADDING : RSA_PKCS1_PADDING) != 1)
        return -1;
    if (md != NULL && EVP_PKEY_CTX_set_signature_md(ctx, md) != 1)
        return -1;
    if (scheme != 0)
        return 0;
    if (o->salt_length == 0)
        salt = sign ? RSA_PSS_SALTLEN_MAX : RSA_PSS_SALTLEN_AUTO;
    else if (o->salt_length == -1)
        salt = RSA_PSS_SALTLEN_DIGEST;
    else
        salt = o->salt_length;
    if (EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, md) != 1 ||
        EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, salt) != 1)
        return -1;
    return 0;
}

/* ECDSA DER -> r || s, each `f` bytes. */
static int ecdsa_der_to_jws(const uint8_t *der, size_t len, size_t f, uint8_t *out)
{
    const unsigned char *p = der;
    ECDSA_SIG *s = d2i_ECDSA_SIG(NULL, &p, (long)len);
    const BIGNUM *r = NULL, *ss = NULL;
    int rc = -1;

    if (s == NULL)
        return -1;
    ECDSA_SIG_get0(s, &r, &ss);
    if (BN_bn2binpad(r, out, (int)f) == (int)f && BN_bn2binpad(ss, out + f, (int)f) == (int)f)
        rc = 0;
    ECDSA_SIG_free(s);
    return rc;
}

/* The raw signature of msg (already the digest where one applies) into sig. */
static int sign_raw(enum kms_key_type t, EVP_PKEY *k, const struct kms_sign_opts *o,
                    const uint8_t *msg, size_t msglen, uint8_t *sig, size_t *siglen,
                    struct kms_err *err)
{
    EVP_PKEY_CTX *ctx = NULL;
    EVP_MD_CTX *mctx = NULL;
    uint8_t der[SIG_MAX];
    size_t dl = sizeof(der);
    int scheme;
    int rc = -1;

    if (t == KMS_KEY_ED25519) {
        mctx = EVP_MD_CTX_new();
        if (mctx == NULL || EVP_DigestSignInit_ex(mctx, NULL, NULL, NULL, NULL, k, NULL) != 1 ||
            EVP_DigestSign(mctx, sig, siglen, msg, msglen) != 1) {
            kms_err_set(err, 500, "failed to sign the input");
            goto out;
        }
        rc = 0;
        goto out;
    }
    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, k, NULL);
    if (ctx == NULL || EVP_PKEY_sign_init(ctx) != 1) {
        kms_err_set(err, 500, "failed to sign the input");
        goto out;
    }
    if (ec_field(t) != 0) {
        if (EVP_PKEY_sign(ctx, der, &dl, msg, msglen) != 1) {
            kms_err_set(err, 500, "failed to sign the input");
            goto out;
        }
        if (o->jws) {
            if (ecdsa_der_to_jws(der, dl, ec_field(t), sig) != 0) {
                kms_err_set(err, 500, "failed to sign the input");
                goto out;
            }
            *siglen = 2 * ec_field(t);
        } else {
            memcpy(sig, der, dl);
            *siglen = dl;
        }
        rc = 0;
        goto out;
    }
    scheme = rsa_scheme(o, err);
    if (scheme < 0 || (scheme == 0 && rsa_salt_check(t, o, err) != 0))
        goto out;
    /* Go refuses a digest of the wrong size before signing, with these messages. */
    if (!o->hash_none && msglen != kms_hash_len(o->hash)) {
        kms_err_set(err, 500, "%s",
                    scheme == 0 ? "crypto/rsa: input must be hashed with given hash"
                                : "crypto/rsa: input must be hashed message");
        goto out;
    }
    if (o->hash_none && msglen + 11 > (size_t)rsa_bits(t) / 8) {
        kms_err_set(err, 500, "crypto/rsa: message too long for RSA key size");
        goto out;
    }
    if (rsa_ctx_setup(ctx, o, scheme, true) != 0 ||
        EVP_PKEY_sign(ctx, sig, siglen, msg, msglen) != 1) {
        kms_err_set(err, 500, "failed to sign the input");
        goto out;
    }
    rc = 0;
out:
    EVP_MD_CTX_free(mctx);
    EVP_PKEY_CTX_free(ctx);
    return rc;
}

int kms_keyring_sign(const struct kms_key_policy *p, const struct kms_key_version *kv,
                     const struct kms_sign_opts *o, const uint8_t *context, size_t ctxlen,
                     const uint8_t *in, size_t inlen, char **sig, char **pub, struct kms_err *err)
{
    EVP_PKEY *k = NULL;
    uint8_t dg[KMS_HASH_MAX_LEN];
    uint8_t seed[ED25519_LEN];
    uint8_t raw[SIG_MAX];
    size_t rawlen = sizeof(raw);
    size_t msglen = inlen;
    const uint8_t *msg;
    char *enc = NULL;
    char *s = NULL;
    size_t slen;
    int rc = -1;

    *sig = NULL;
    if (pub != NULL)
        *pub = NULL;
    if (!kms_key_type_supports_signing(p->type)) {
        kms_err_set(err, 500, "message signing not supported for key type %s",
                    kms_key_type_name(p->type));
        goto out;
    }
    msg = signed_input(p->type, o, in, &msglen, dg);
    if (msg == NULL) {
        kms_err_set(err, 500, "failed to hash the input");
        goto out;
    }
    if (p->type == KMS_KEY_ED25519 && p->derived) {
        uint8_t pk[ED25519_LEN];
        size_t pl = sizeof(pk);

        if (derived_seed(kv, context, ctxlen, seed, err) != 0)
            goto out;
        if (ed25519_pkey(seed, NULL, &k) != 0 || EVP_PKEY_get_raw_public_key(k, pk, &pl) != 1) {
            kms_err_set(err, 500, "error deriving key: error generating derived key");
            goto out;
        }
        if (pub != NULL && (*pub = b64_alloc(pk, pl, false)) == NULL) {
            kms_err_set(err, 500, "out of memory");
            goto out;
        }
    } else if (cached_pkey(p, kv, o, true, &k) != 0) {
        kms_err_set(err, 500, "requested version for signing does not contain a private part");
        goto out;
    }
    if (sign_raw(p->type, k, o, msg, msglen, raw, &rawlen, err) != 0)
        goto out;
    enc = b64_alloc(raw, rawlen, o->jws);
    slen = SIG_PREFIX_LEN + 12 + (enc != NULL ? strlen(enc) : 0);
    s = enc != NULL ? malloc(slen) : NULL;
    if (s == NULL) {
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    snprintf(s, slen, SIG_PREFIX "%" PRIu32 ":%s", kv->version, enc);
    *sig = s;
    s = NULL;
    rc = 0;
out:
    if (rc != 0 && pub != NULL) {
        free(*pub);
        *pub = NULL;
    }
    free(s);
    free(enc);
    EVP_PKEY_free(k);
    kms_memzero(seed, sizeof(seed));
    kms_memzero(dg, sizeof(dg));
    return rc;
}

/* ---- verification ------------------------------------------------------------------------ */

/*
 * One DER tag and length as Go's encoding/asn1 reads them: low tag numbers only (the tags
 * wanted here are), definite minimal lengths, content within the buffer.
 */
static int der_tl(const uint8_t *b, size_t len, size_t *off, uint8_t *tag, size_t *vlen)
{
    size_t l = 0;
    uint8_t c;

    if (*off + 2 > len)
        return -1;
    *tag = b[(*off)++];
    if ((*tag & 0x1f) == 0x1f)
        return -1;
    c = b[(*off)++];
    if ((c & 0x80) == 0) {
        l = c;
    } else {
        size_t n = c & 0x7f;

        if (n == 0 || n > 3 || *off + n > len || b[*off] == 0)
            return -1;
        for (size_t i = 0; i < n; i++)
            l = l << 8 | b[(*off)++];
        if (l < 0x80)
            return -1;
    }
    if (l > len - *off)
        return -1;
    *vlen = l;
    return 0;
}

/* A DER INTEGER at *off: minimal encoding required; *neg for negative values. */
static int der_int(const uint8_t *b, size_t len, size_t *off, const uint8_t **v, size_t *vlen,
                   bool *neg)
{
    uint8_t tag;

    if (der_tl(b, len, off, &tag, vlen) != 0 || tag != 0x02 || *vlen == 0)
        return -1;
    *v = b + *off;
    if (*vlen > 1 &&
        (((*v)[0] == 0x00 && ((*v)[1] & 0x80) == 0) || ((*v)[0] == 0xff && ((*v)[1] & 0x80) != 0)))
        return -1;
    *neg = ((*v)[0] & 0x80) != 0;
    *off += *vlen;
    return 0;
}

/*
 * Parse an ECDSA signature (ASN.1 like Go, or JWS r || s) and re-encode it as canonical DER.
 * Returns 0 with *der (OPENSSL_malloc'd) or NULL when r or s is negative (a signature that can
 * only be invalid); -1 with err for a malformed one.
 */
static int ecdsa_sig_der(const uint8_t *sig, size_t len, bool jws, unsigned char **der,
                         size_t *derlen, struct kms_err *err)
{
    const uint8_t *r = sig, *s = sig;
    size_t rl = len / 2, sl = len - len / 2;
    bool rneg = false, sneg = false;
    ECDSA_SIG *es = NULL;
    BIGNUM *br = NULL, *bs = NULL;
    int n;
    int rc = -1;

    *der = NULL;
    *derlen = 0;
    if (jws) {
        s = sig + rl;
    } else {
        size_t off = 0, body;
        uint8_t tag;

        if (der_tl(sig, len, &off, &tag, &body) != 0 || tag != 0x30) {
            kms_err_set(err, 400, "supplied signature is invalid");
            goto out;
        }
        size_t end = off + body;
        if (der_int(sig, end, &off, &r, &rl, &rneg) != 0 ||
            der_int(sig, end, &off, &s, &sl, &sneg) != 0) {
            kms_err_set(err, 400, "supplied signature is invalid");
            goto out;
        }
        if (end != len) {
            kms_err_set(err, 400, "supplied signature contains extra data");
            goto out;
        }
    }
    if (rneg || sneg) {
        rc = 0;
        goto out;
    }
    es = ECDSA_SIG_new();
    br = BN_bin2bn(r, (int)rl, NULL);
    bs = BN_bin2bn(s, (int)sl, NULL);
    if (es == NULL || br == NULL || bs == NULL || ECDSA_SIG_set0(es, br, bs) != 1) {
        kms_err_set(err, 500, "failed to verify the signature");
        goto out;
    }
    br = bs = NULL;
    n = i2d_ECDSA_SIG(es, der);
    if (n <= 0) {
        kms_err_set(err, 500, "failed to verify the signature");
        goto out;
    }
    *derlen = (size_t)n;
    rc = 0;
out:
    BN_free(br);
    BN_free(bs);
    ECDSA_SIG_free(es);
    return rc;
}

int kms_keyring_verify(const struct kms_key_policy *p, const struct kms_key_version *kv,
                       const struct kms_sign_opts *o, const uint8_t *context, size_t ctxlen,
                       const uint8_t *in, size_t inlen, const char *sig, size_t siglen, bool *valid,
                       struct kms_err *err)
{
    EVP_PKEY *k = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_MD_CTX *mctx = NULL;
    uint8_t dg[KMS_HASH_MAX_LEN];
    uint8_t seed[ED25519_LEN];
    uint8_t *raw = NULL;
    size_t rawlen = 0;
    unsigned char *der = NULL;
    size_t derlen = 0;
    size_t msglen = inlen;
    const uint8_t *msg;
    int64_t v = 0;
    size_t off = 0, at = 0;
    int scheme;
    int rc = -1;

    *valid = false;
    if (!kms_key_type_supports_signing(p->type)) {
        kms_err_set(err, 400, "message verification not supported for key type %s",
                    kms_key_type_name(p->type));
        goto out;
    }
    if (sig_header(sig, siglen, &v, &off, err) != 0)
        goto out;
    if ((o->jws ? kms_b64url_decode_alloc(sig + off, siglen - off, &raw, &rawlen)
                : kms_b64_decode_alloc(sig + off, siglen - off, &raw, &rawlen, &at)) != 0) {
        kms_err_set(err, 400, "invalid base64 signature value");
        goto out;
    }
    msg = signed_input(p->type, o, in, &msglen, dg);
    if (msg == NULL) {
        kms_err_set(err, 500, "failed to hash the input");
        goto out;
    }
    if (ec_field(p->type) != 0) {
        if (ecdsa_sig_der(raw, rawlen, o->jws, &der, &derlen, err) != 0)
            goto out;
        if (der == NULL) {
            rc = 0;
            goto out;
        }
        if (cached_pkey(p, kv, o, false, &k) != 0 ||
            (ctx = EVP_PKEY_CTX_new_from_pkey(NULL, k, NULL)) == NULL ||
            EVP_PKEY_verify_init(ctx) != 1) {
            kms_err_set(err, 500, "failed to verify the signature");
            goto out;
        }
        *valid = EVP_PKEY_verify(ctx, der, derlen, msg, msglen) == 1;
        rc = 0;
        goto out;
    }
    if (p->type == KMS_KEY_ED25519) {
        int g;

        if (p->derived) {
            if (derived_seed(kv, context, ctxlen, seed, err) != 0)
                goto out;
            g = ed25519_pkey(seed, NULL, &k);
        } else {
            g = cached_pkey(p, kv, o, false, &k);
        }
        mctx = EVP_MD_CTX_new();
        if (g != 0 || mctx == NULL ||
            EVP_DigestVerifyInit_ex(mctx, NULL, NULL, NULL, NULL, k, NULL) != 1) {
            kms_err_set(err, 500, "failed to verify the signature");
            goto out;
        }
        *valid = rawlen == 64 && EVP_DigestVerify(mctx, raw, rawlen, msg, msglen) == 1;
        rc = 0;
        goto out;
    }
    scheme = rsa_scheme(o, err);
    if (scheme < 0 || (scheme == 0 && rsa_salt_check(p->type, o, err) != 0))
        goto out;
    if (cached_pkey(p, kv, o, false, &k) != 0 ||
        (ctx = EVP_PKEY_CTX_new_from_pkey(NULL, k, NULL)) == NULL ||
        EVP_PKEY_verify_init(ctx) != 1 || rsa_ctx_setup(ctx, o, scheme, false) != 0) {
        kms_err_set(err, 500, "failed to verify the signature");
        goto out;
    }
    /* Go fails (invalid) on a digest of the wrong size; OpenSSL would refuse the call. */
    *valid = (o->hash_none || msglen == kms_hash_len(o->hash)) &&
             EVP_PKEY_verify(ctx, raw, rawlen, msg, msglen) == 1;
    rc = 0;
out:
    OPENSSL_free(der);
    kms_free_wipe((void **)&raw, rawlen);
    EVP_MD_CTX_free(mctx);
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(k);
    kms_memzero(seed, sizeof(seed));
    kms_memzero(dg, sizeof(dg));
    return rc;
}

/* ---- RSA-OAEP ---------------------------------------------------------------------------- */

static int oaep_ctx(EVP_PKEY *k, bool enc, EVP_PKEY_CTX **out)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, k, NULL);

    *out = ctx;
    if (ctx == NULL || (enc ? EVP_PKEY_encrypt_init(ctx) : EVP_PKEY_decrypt_init(ctx)) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) != 1 ||
        EVP_PKEY_CTX_set_rsa_oaep_md(ctx, EVP_sha256()) != 1 ||
        EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256()) != 1)
        return -1;
    return 0;
}

int kms_asym_rsa_oaep(enum kms_key_type t, const struct kms_key_version *kv, bool enc,
                      const uint8_t *in, size_t inlen, uint8_t **out, size_t *outlen,
                      struct kms_err *err)
{
    const char *what = enc ? "encrypt the plaintext" : "decrypt the ciphertext";
    EVP_PKEY *k = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    size_t kl = (size_t)rsa_bits(t) / 8;
    uint8_t *buf = NULL;
    size_t bl = kl;
    int rc = -1;

    *out = NULL;
    *outlen = 0;
    buf = kl > 0 ? malloc(kl) : NULL;
    if (buf == NULL || version_pkey(t, kv, !enc, &k) != 0 || oaep_ctx(k, enc, &ctx) != 0) {
        kms_err_set(err, 500, "failed to RSA %s", what);
        goto out;
    }
    /* Go's checks and messages: OAEP-SHA256 carries at most k - 2*32 - 2 bytes, and any
     * decryption failure is one error */
    if (enc && inlen > kl - 2 * 32 - 2) {
        kms_err_set(err, 500, "failed to RSA %s: crypto/rsa: message too long for RSA key size",
                    what);
        goto out;
    }
    if (enc ? EVP_PKEY_encrypt(ctx, buf, &bl, in, inlen) != 1
            : inlen != kl || EVP_PKEY_decrypt(ctx, buf, &bl, in, inlen) != 1) {
        kms_err_set(err, 500, "failed to RSA %s%s", what,
                    enc ? "" : ": crypto/rsa: decryption error");
        goto out;
    }
    /* an exact-size copy, so the caller's wipe of *outlen bytes covers all of it */
    *out = malloc(bl > 0 ? bl : 1);
    if (*out == NULL) {
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    memcpy(*out, buf, bl);
    *outlen = bl;
    rc = 0;
out:
    kms_free_wipe((void **)&buf, kl);
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(k);
    return rc;
}

/* ---- public keys and export -------------------------------------------------------------- */

int kms_keyring_public_key(const struct kms_key_policy *p, const struct kms_key_version *kv,
                           const uint8_t *context, size_t ctxlen, char **out, struct kms_err *err)
{
    EVP_PKEY *k = NULL;
    uint8_t seed[ED25519_LEN];
    uint8_t pk[ED25519_LEN];
    size_t pl = sizeof(pk);
    int rc = -1;

    *out = NULL;
    if (p->type == KMS_KEY_ED25519) {
        if (!material_ok(p->type, kv)) {
            kms_err_setw(err, 500, "invalid key material");
            goto out;
        }
        if (!p->derived) {
            *out = b64_alloc(kv->key + ED25519_LEN, ED25519_LEN, false);
        } else if (ctxlen == 0) {
            *out = strdup("");
        } else {
            if (derived_seed(kv, context, ctxlen, seed, err) != 0 ||
                ed25519_pkey(seed, NULL, &k) != 0 || EVP_PKEY_get_raw_public_key(k, pk, &pl) != 1) {
                kms_err_setw(err, 500, "failed to derive key to return public component");
                goto out;
            }
            *out = b64_alloc(pk, pl, false);
        }
    } else if (version_pkey(p->type, kv, false, &k) == 0) {
        *out = public_pem(k, false);
    }
    if (*out == NULL) {
        kms_err_setw(err, 500, "cannot encode the public key");
        goto out;
    }
    rc = 0;
out:
    EVP_PKEY_free(k);
    kms_memzero(seed, sizeof(seed));
    return rc;
}

static const char *export_type_name(enum kms_export_type t)
{
    switch (t) {
    case KMS_EXPORT_ENCRYPTION_KEY:
        return "encryption-key";
    case KMS_EXPORT_SIGNING_KEY:
        return "signing-key";
    case KMS_EXPORT_HMAC_KEY:
        return "hmac-key";
    default:
        return "public-key";
    }
}

static const char MSG_FMT_HMAC[] = "unknown format for HMAC key; supported values are `` or `raw`";
static const char MSG_FMT_RSA[] =
    "unknown key format for rsa key; supported values are ``, `der`, or `pem`";
static const char MSG_FMT_EC[] =
    "unknown key format for ec key; supported values are ``, `der`, or `pem`";

/* Private keys: the type-specific PEM by default (RSA kept with its newline, EC trimmed),
 * PKCS#8 for der (base64) and pem. ed25519's default/raw form is seed || public in base64. */
static char *export_private(enum kms_key_type t, EVP_PKEY *k, const struct kms_key_version *kv,
                            enum kms_export_format f)
{
    bool rsa = rsa_bits(t) != 0;

    if (t == KMS_KEY_ED25519 && (f == KMS_FORMAT_DEFAULT || f == KMS_FORMAT_RAW))
        return b64_alloc(kv->key, 2 * ED25519_LEN, false);
    if (f == KMS_FORMAT_DEFAULT)
        return private_encode(k, "type-specific", true, !rsa);
    return private_encode(k, "PrivateKeyInfo", f == KMS_FORMAT_PEM, !rsa);
}

static char *export_public(enum kms_key_type t, EVP_PKEY *k, const struct kms_key_version *kv,
                           enum kms_export_format f)
{
    if (t == KMS_KEY_ED25519 && (f == KMS_FORMAT_DEFAULT || f == KMS_FORMAT_RAW))
        return b64_alloc(kv->key + ED25519_LEN, ED25519_LEN, false);
    if (f == KMS_FORMAT_DER)
        return public_der_b64(k);
    return public_pem(k, rsa_bits(t) == 0);
}

int kms_keyring_export(const struct kms_key_policy *p, const struct kms_key_version *kv,
                       enum kms_export_type type, enum kms_export_format format, char **out,
                       struct kms_err *err)
{
    enum kms_key_type t = p->type;
    bool rsa = rsa_bits(t) != 0;
    bool symmetric = type == KMS_EXPORT_HMAC_KEY || (type == KMS_EXPORT_ENCRYPTION_KEY && !rsa);
    const uint8_t *src = kv->key;
    size_t len = kms_key_type_key_len(t);
    EVP_PKEY *k = NULL;
    int rc = -1;

    *out = NULL;
    if (type == KMS_EXPORT_HMAC_KEY)
        src = kms_key_version_hmac_key(p, kv, &len);
    /* OpenBao's fall-through for a type the key has no such key of */
    if ((symmetric && len == 0) || (!symmetric && !kms_key_type_supports_signing(t))) {
        kms_err_setw(err, 500, "unknown key type %s for export type %s", kms_key_type_name(t),
                     export_type_name(type));
        goto out;
    }
    if (symmetric) {
        if (format == KMS_FORMAT_DER || format == KMS_FORMAT_PEM) {
            kms_err_setw(err, 500, "%s", MSG_FMT_HMAC);
            goto out;
        }
        *out = b64_alloc(src, len, false);
    } else {
        if (format == KMS_FORMAT_RAW && t != KMS_KEY_ED25519) {
            kms_err_setw(err, 500, "%s", rsa ? MSG_FMT_RSA : MSG_FMT_EC);
            goto out;
        }
        if (version_pkey(t, kv, type != KMS_EXPORT_PUBLIC_KEY, &k) != 0) {
            kms_err_setw(err, 500, "cannot load the key");
            goto out;
        }
        *out = type == KMS_EXPORT_PUBLIC_KEY ? export_public(t, k, kv, format)
                                             : export_private(t, k, kv, format);
    }
    if (*out == NULL) {
        kms_err_setw(err, 500, "cannot encode the key");
        goto out;
    }
    rc = 0;
out:
    EVP_PKEY_free(k);
    return rc;
}
