/*
 * jws.c - public keys and JWS signature verification for the login methods (RFC 7515/7518).
 *
 * Design notes:
 * - Only asymmetric algorithms exist here: RS256/384/512 (PKCS#1 v1.5), PS256/384/512 (PSS,
 *   salt length = digest length, MGF1 with the same digest) and ES256/384. There is no HMAC
 *   path at all, so a token whose header says HS256 can never be "verified" with a public key
 *   used as an HMAC secret (the libjwt 1.x confusion): the caller's algorithm parse refuses
 *   every name that is not in the table below, before any key is touched.
 * - The algorithm must fit the key: RS and PS need an RSA key (at least 2048 bits), ES256 a
 *   P-256 key and ES384 a P-384 key. A mismatch is a verification failure, not an error.
 * - JWS ECDSA signatures are the raw big-endian r || s, each exactly the coordinate size;
 *   OpenSSL wants DER, so the halves are rebuilt into an ECDSA_SIG.
 * - EVP_PKEY objects are only read after construction, which OpenSSL 3 allows from several
 *   threads at once; every verification uses its own EVP_MD_CTX.
 */
#include "crypto/crypto.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/decoder.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#define RSA_MIN_BITS 2048

struct kms_pubkey {
    EVP_PKEY *pkey;
    enum kms_pubkey_kind kind;
};

static const struct {
    const char *name;
    enum kms_jws_alg alg;
} alg_names[] = {
    {"RS256", KMS_JWS_RS256}, {"RS384", KMS_JWS_RS384}, {"RS512", KMS_JWS_RS512},
    {"PS256", KMS_JWS_PS256}, {"PS384", KMS_JWS_PS384}, {"PS512", KMS_JWS_PS512},
    {"ES256", KMS_JWS_ES256}, {"ES384", KMS_JWS_ES384},
};

int kms_jws_alg_parse(const char *name, enum kms_jws_alg *out)
{
    for (size_t i = 0; i < sizeof(alg_names) / sizeof(alg_names[0]); i++) {
        if (strcmp(alg_names[i].name, name) == 0) {
            *out = alg_names[i].alg;
            return 0;
        }
    }
    return -1;
}

const char *kms_jws_alg_name(enum kms_jws_alg alg)
{
    for (size_t i = 0; i < sizeof(alg_names) / sizeof(alg_names[0]); i++) {
        if (alg_names[i].alg == alg) {
            return alg_names[i].name;
        }
    }
    return "";
}

/*
 * An RSA public exponent that is odd and from 3 to 2^31 - 1, as Go's crypto/rsa (OpenBao's
 * verifier) requires. Under e = 1 every message is its own signature: a key with it would
 * let anyone sign a login token.
 */
static bool rsa_exponent_ok(const EVP_PKEY *pkey)
{
    BIGNUM *e = NULL;
    bool ok = EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e) == 1 && BN_is_odd(e) &&
              BN_num_bits(e) <= 31 && !BN_is_one(e);
    BN_free(e);
    return ok;
}

/* Classify a key; -1 for anything kmsd does not verify with. */
static int classify(EVP_PKEY *pkey, enum kms_pubkey_kind *kind)
{
    char group[64];
    size_t glen = 0;

    if (EVP_PKEY_is_a(pkey, "RSA")) {
        if (EVP_PKEY_get_bits(pkey) < RSA_MIN_BITS || !rsa_exponent_ok(pkey)) {
            return -1;
        }
        *kind = KMS_PUBKEY_RSA;
        return 0;
    }
    if (EVP_PKEY_is_a(pkey, "EC") &&
        EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                       &glen) == 1) {
        if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0) {
            *kind = KMS_PUBKEY_P256;
            return 0;
        }
        if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0) {
            *kind = KMS_PUBKEY_P384;
            return 0;
        }
    }
    return -1;
}

static int wrap(EVP_PKEY **pkey, struct kms_pubkey **out)
{
    enum kms_pubkey_kind kind;
    struct kms_pubkey *k = NULL;

    if (classify(*pkey, &kind) != 0) {
        return -1;
    }
    k = calloc(1, sizeof(*k));
    if (k == NULL) {
        return -1;
    }
    k->pkey = *pkey;
    k->kind = kind;
    *pkey = NULL;
    *out = k;
    return 0;
}

int kms_pubkey_from_pem(const char *pem, size_t len, struct kms_pubkey **out)
{
    BIO *bio = NULL;
    EVP_PKEY *pkey = NULL;
    X509 *cert = NULL;
    OSSL_DECODER_CTX *dctx = NULL;
    const char *begin;
    int rc = -1;

    *out = NULL;
    if (len == 0 || len > INT32_MAX) {
        goto out;
    }
    /* Only public material: the first PEM block must be a public key or a certificate. */
    begin = memmem(pem, len, "-----BEGIN ", 11);
    if (begin == NULL) {
        goto out;
    }
    size_t rest = len - (size_t)(begin - pem);
    bio = BIO_new_mem_buf(begin, (int)rest);
    if (bio == NULL) {
        goto out;
    }
    if (rest >= 27 && memcmp(begin, "-----BEGIN CERTIFICATE-----", 27) == 0) {
        cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        pkey = cert ? X509_get_pubkey(cert) : NULL;
    } else if ((rest >= 26 && memcmp(begin, "-----BEGIN PUBLIC KEY-----", 26) == 0) ||
               (rest >= 30 && memcmp(begin, "-----BEGIN RSA PUBLIC KEY-----", 30) == 0)) {
        dctx = OSSL_DECODER_CTX_new_for_pkey(&pkey, "PEM", NULL, NULL, EVP_PKEY_PUBLIC_KEY, NULL,
                                             NULL);
        if (dctx == NULL || OSSL_DECODER_from_bio(dctx, bio) != 1) {
            EVP_PKEY_free(pkey);
            pkey = NULL;
        }
    }
    if (pkey == NULL) {
        goto out;
    }
    rc = wrap(&pkey, out);
out:
    EVP_PKEY_free(pkey);
    OSSL_DECODER_CTX_free(dctx);
    X509_free(cert);
    BIO_free(bio);
    return rc;
}

int kms_pubkey_from_rsa(const uint8_t *n, size_t nlen, const uint8_t *e, size_t elen,
                        struct kms_pubkey **out)
{
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *pkey = NULL;
    BIGNUM *bn_n = NULL;
    BIGNUM *bn_e = NULL;
    int rc = -1;

    *out = NULL;
    if (nlen == 0 || elen == 0 || nlen > 2048 || elen > 16) {
        goto out;
    }
    bn_n = BN_bin2bn(n, (int)nlen, NULL);
    bn_e = BN_bin2bn(e, (int)elen, NULL);
    bld = OSSL_PARAM_BLD_new();
    if (bn_n == NULL || bn_e == NULL || bld == NULL ||
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e) != 1 ||
        (params = OSSL_PARAM_BLD_to_param(bld)) == NULL) {
        goto out;
    }
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1) {
        goto out;
    }
    rc = wrap(&pkey, out);
out:
    EVP_PKEY_free(pkey);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn_n);
    BN_free(bn_e);
    return rc;
}

static size_t coord_len(enum kms_pubkey_kind kind)
{
    return kind == KMS_PUBKEY_P256 ? 32 : kind == KMS_PUBKEY_P384 ? 48 : 0;
}

int kms_pubkey_from_ec(enum kms_pubkey_kind curve, const uint8_t *x, size_t xlen, const uint8_t *y,
                       size_t ylen, struct kms_pubkey **out)
{
    OSSL_PARAM params[3];
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY_CTX *check = NULL;
    EVP_PKEY *pkey = NULL;
    uint8_t point[1 + 2 * 48];
    size_t cl = coord_len(curve);
    int rc = -1;

    *out = NULL;
    if (cl == 0 || xlen != cl || ylen != cl) {
        goto out;
    }
    point[0] = 0x04;
    memcpy(point + 1, x, cl);
    memcpy(point + 1 + cl, y, cl);
    params[0] = OSSL_PARAM_construct_utf8_string(
        OSSL_PKEY_PARAM_GROUP_NAME, curve == KMS_PUBKEY_P256 ? "prime256v1" : "secp384r1", 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * cl);
    params[2] = OSSL_PARAM_construct_end();
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1) {
        goto out;
    }
    /* The point must lie on the curve (no invalid-curve games with attacker JWKS). */
    check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (check == NULL || EVP_PKEY_public_check(check) != 1) {
        goto out;
    }
    rc = wrap(&pkey, out);
out:
    EVP_PKEY_free(pkey);
    EVP_PKEY_CTX_free(check);
    EVP_PKEY_CTX_free(ctx);
    return rc;
}

enum kms_pubkey_kind kms_pubkey_kind(const struct kms_pubkey *k)
{
    return k->kind;
}

void kms_pubkey_free(struct kms_pubkey **k)
{
    if (*k == NULL) {
        return;
    }
    EVP_PKEY_free((*k)->pkey);
    free(*k);
    *k = NULL;
}

static const EVP_MD *alg_md(enum kms_jws_alg alg)
{
    switch (alg) {
    case KMS_JWS_RS256:
    case KMS_JWS_PS256:
    case KMS_JWS_ES256:
        return EVP_sha256();
    case KMS_JWS_RS384:
    case KMS_JWS_PS384:
    case KMS_JWS_ES384:
        return EVP_sha384();
    case KMS_JWS_RS512:
    case KMS_JWS_PS512:
        return EVP_sha512();
    }
    return NULL;
}

bool kms_jws_alg_fits(enum kms_jws_alg alg, enum kms_pubkey_kind kind)
{
    switch (alg) {
    case KMS_JWS_RS256:
    case KMS_JWS_RS384:
    case KMS_JWS_RS512:
    case KMS_JWS_PS256:
    case KMS_JWS_PS384:
    case KMS_JWS_PS512:
        return kind == KMS_PUBKEY_RSA;
    case KMS_JWS_ES256:
        return kind == KMS_PUBKEY_P256;
    case KMS_JWS_ES384:
        return kind == KMS_PUBKEY_P384;
    }
    return false;
}

/* Raw r || s -> DER ECDSA-Sig-Value; *der malloc'd. */
static int ecdsa_raw_to_der(const uint8_t *sig, size_t siglen, size_t cl, uint8_t **der,
                            size_t *derlen)
{
    ECDSA_SIG *es = NULL;
    BIGNUM *r = NULL;
    BIGNUM *s = NULL;
    unsigned char *p = NULL;
    int n;
    int rc = -1;

    *der = NULL;
    if (siglen != 2 * cl) {
        goto out;
    }
    es = ECDSA_SIG_new();
    r = BN_bin2bn(sig, (int)cl, NULL);
    s = BN_bin2bn(sig + cl, (int)cl, NULL);
    if (es == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(es, r, s) != 1) {
        goto out;
    }
    r = NULL;
    s = NULL;
    n = i2d_ECDSA_SIG(es, &p);
    if (n <= 0) {
        goto out;
    }
    *der = p;
    *derlen = (size_t)n;
    p = NULL;
    rc = 0;
out:
    OPENSSL_free(p);
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(es);
    return rc;
}

int kms_jws_verify(const struct kms_pubkey *k, enum kms_jws_alg alg, const void *msg, size_t msglen,
                   const uint8_t *sig, size_t siglen)
{
    EVP_MD_CTX *mctx = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    uint8_t *der = NULL;
    size_t derlen = 0;
    const uint8_t *vsig = sig;
    size_t vlen = siglen;
    int rc = -1;

    if (k == NULL || !kms_jws_alg_fits(alg, k->kind) || siglen == 0) {
        goto out;
    }
    if (alg == KMS_JWS_ES256 || alg == KMS_JWS_ES384) {
        if (ecdsa_raw_to_der(sig, siglen, coord_len(k->kind), &der, &derlen) != 0) {
            goto out;
        }
        vsig = der;
        vlen = derlen;
    }
    mctx = EVP_MD_CTX_new();
    if (mctx == NULL || EVP_DigestVerifyInit(mctx, &pctx, alg_md(alg), NULL, k->pkey) != 1) {
        goto out;
    }
    if (alg == KMS_JWS_PS256 || alg == KMS_JWS_PS384 || alg == KMS_JWS_PS512) {
        if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
            EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1 ||
            EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, alg_md(alg)) != 1) {
            goto out;
        }
    } else if (k->kind == KMS_PUBKEY_RSA) {
        if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1) {
            goto out;
        }
    }
    if (EVP_DigestVerify(mctx, vsig, vlen, msg, msglen) == 1) {
        rc = 0;
    }
out:
    EVP_MD_CTX_free(mctx);
    OPENSSL_free(der);
    return rc;
}
