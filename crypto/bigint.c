/*
 * bigint.c - the ECDSA and RSA versions of a key as the big integers Go's keysutil keeps
 * (KeyEntry.EC_X/EC_Y/EC_D and rsa.PrivateKey's N, D, Primes, Precomputed), as decimal text,
 * both ways, for OpenBao's backup format.
 *
 * Design notes:
 * - Decimal conversion is OpenSSL's (BN_bn2dec, BN_dec2bn); fixed-width fields are written
 *   with BN_bn2binpad. Inputs are plain decimal digits only (no sign, no hex, no spaces),
 *   at most KMS_KEY_BIGINT_DIGITS_MAX long.
 * - From a version: ECDSA gives x, y and d of the stored d || 04 || X || Y; RSA gives n = pq,
 *   d = e^-1 mod lcm(p-1, q-1) (OpenSSL's convention, the key sign.c builds), the primes,
 *   dp = d mod (p-1), dq = d mod (q-1) and qinv = q^-1 mod p, i.e. what Go's Precompute fills
 *   in for two primes.
 * - Into a version, nothing is trusted: ECDSA's d and point are checked by OpenSSL
 *   (EVP_PKEY_check: point on the curve, d in range, d*G equal to the point); RSA needs
 *   e = 65537, two probable primes of exactly half the modulus each, n = pq, e*d = 1 modulo
 *   p-1 and q-1, and when given, dp, dq and qinv equal to the values they must have. The
 *   version then keeps p || q, the layout every RSA version has (keyring.h).
 * - Every secret BN is a secure BN cleared on free; decimal texts of secrets are wiped.
 */
#include "crypto/crypto_int.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

#define RSA_E KMS_KEY_RSA_E

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

static int rsa_half(enum kms_key_type t)
{
    switch (t) {
    case KMS_KEY_RSA2048:
        return 2048 / 16;
    case KMS_KEY_RSA3072:
        return 3072 / 16;
    case KMS_KEY_RSA4096:
        return 4096 / 16;
    default:
        return 0;
    }
}

void kms_key_bigints_free(char *v[KMS_BIG_COUNT])
{
    for (size_t i = 0; i < KMS_BIG_COUNT; i++) {
        if (v[i] != NULL)
            OPENSSL_clear_free(v[i], strlen(v[i]));
        v[i] = NULL;
    }
}

/* Decimal text of big-endian bytes b[0..n). */
static char *bin_dec(const uint8_t *b, size_t n)
{
    BIGNUM *x = BN_secure_new();
    char *s = NULL;

    if (x != NULL && BN_bin2bn(b, (int)n, x) != NULL)
        s = BN_bn2dec(x);
    BN_clear_free(x);
    return s;
}

static int ec_get(enum kms_key_type t, const struct kms_key_version *kv, char *out[KMS_BIG_COUNT])
{
    size_t f = ec_field(t);

    if (kv->key_len != 3 * f + 1 || kv->key[f] != 0x04)
        return -1;
    out[KMS_BIG_EC_D] = bin_dec(kv->key, f);
    out[KMS_BIG_EC_X] = bin_dec(kv->key + f + 1, f);
    out[KMS_BIG_EC_Y] = bin_dec(kv->key + 2 * f + 1, f);
    return out[KMS_BIG_EC_D] != NULL && out[KMS_BIG_EC_X] != NULL && out[KMS_BIG_EC_Y] != NULL ? 0
                                                                                               : -1;
}

/* The RSA values a version's p || q determines (d modulo lcm(p-1, q-1)). */
struct rsa_bns {
    BIGNUM *n, *e, *d, *p, *q, *dp, *dq, *qinv;
};

static void rsa_bns_free(struct rsa_bns *r)
{
    BN_free(r->n);
    BN_free(r->e);
    BN_clear_free(r->d);
    BN_clear_free(r->p);
    BN_clear_free(r->q);
    BN_clear_free(r->dp);
    BN_clear_free(r->dq);
    BN_clear_free(r->qinv);
    memset(r, 0, sizeof(*r));
}

static int rsa_derive(const uint8_t *key, int half, BN_CTX *bc, struct rsa_bns *r)
{
    BIGNUM *p1 = BN_secure_new(), *q1 = BN_secure_new(), *g = BN_secure_new();
    BIGNUM *l = BN_secure_new();
    int rc = -1;

    r->n = BN_new();
    r->e = BN_new();
    r->d = BN_secure_new();
    r->p = BN_secure_new();
    r->q = BN_secure_new();
    r->dp = BN_secure_new();
    r->dq = BN_secure_new();
    r->qinv = BN_secure_new();
    if (p1 == NULL || q1 == NULL || g == NULL || l == NULL || r->n == NULL || r->e == NULL ||
        r->d == NULL || r->p == NULL || r->q == NULL || r->dp == NULL || r->dq == NULL ||
        r->qinv == NULL)
        goto out;
    if (BN_bin2bn(key, half, r->p) == NULL || BN_bin2bn(key + half, half, r->q) == NULL ||
        BN_set_word(r->e, RSA_E) != 1 || BN_mul(r->n, r->p, r->q, bc) != 1 ||
        BN_sub(p1, r->p, BN_value_one()) != 1 || BN_sub(q1, r->q, BN_value_one()) != 1 ||
        BN_gcd(g, p1, q1, bc) != 1 || BN_mul(l, p1, q1, bc) != 1 ||
        BN_div(l, NULL, l, g, bc) != 1 || BN_mod_inverse(r->d, r->e, l, bc) == NULL ||
        BN_mod(r->dp, r->d, p1, bc) != 1 || BN_mod(r->dq, r->d, q1, bc) != 1 ||
        BN_mod_inverse(r->qinv, r->q, r->p, bc) == NULL)
        goto out;
    rc = 0;
out:
    BN_clear_free(l);
    BN_clear_free(g);
    BN_clear_free(q1);
    BN_clear_free(p1);
    return rc;
}

static int rsa_get(enum kms_key_type t, const struct kms_key_version *kv, char *out[KMS_BIG_COUNT])
{
    int half = rsa_half(t);
    BN_CTX *bc = BN_CTX_secure_new();
    struct rsa_bns r = {0};
    int rc = -1;

    if (bc == NULL || kv->key_len != (uint32_t)(2 * half) || rsa_derive(kv->key, half, bc, &r) != 0)
        goto out;
    out[KMS_BIG_RSA_N] = BN_bn2dec(r.n);
    out[KMS_BIG_RSA_D] = BN_bn2dec(r.d);
    out[KMS_BIG_RSA_P] = BN_bn2dec(r.p);
    out[KMS_BIG_RSA_Q] = BN_bn2dec(r.q);
    out[KMS_BIG_RSA_DP] = BN_bn2dec(r.dp);
    out[KMS_BIG_RSA_DQ] = BN_bn2dec(r.dq);
    out[KMS_BIG_RSA_QINV] = BN_bn2dec(r.qinv);
    rc = 0;
    for (size_t i = KMS_BIG_RSA_N; i <= KMS_BIG_RSA_QINV; i++)
        if (out[i] == NULL)
            rc = -1;
out:
    rsa_bns_free(&r);
    BN_CTX_free(bc);
    return rc;
}

int kms_key_bigints_get(enum kms_key_type t, const struct kms_key_version *kv,
                        char *out[KMS_BIG_COUNT])
{
    int rc = -1;

    for (size_t i = 0; i < KMS_BIG_COUNT; i++)
        out[i] = NULL;
    if (ec_field(t) != 0)
        rc = ec_get(t, kv, out);
    else if (rsa_half(t) != 0)
        rc = rsa_get(t, kv, out);
    if (rc != 0)
        kms_key_bigints_free(out);
    return rc;
}

/* ---- into a version ---------------------------------------------------------------------- */

/* A secure BN from plain decimal digits; NULL when s is not such a number. */
static BIGNUM *dec_bn(const char *s)
{
    size_t n = s != NULL ? strlen(s) : 0;
    BIGNUM *x = NULL;

    if (n == 0 || n > KMS_KEY_BIGINT_DIGITS_MAX || strspn(s, "0123456789") != n)
        return NULL;
    x = BN_secure_new();
    if (x == NULL || BN_dec2bn(&x, s) != (int)n) {
        BN_clear_free(x);
        return NULL;
    }
    return x;
}

static int ec_put(enum kms_key_type t, const char *const in[KMS_BIG_COUNT],
                  struct kms_key_version *kv)
{
    size_t f = ec_field(t);
    BIGNUM *x = dec_bn(in[KMS_BIG_EC_X]), *y = dec_bn(in[KMS_BIG_EC_Y]);
    BIGNUM *d = dec_bn(in[KMS_BIG_EC_D]);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL, *chk = NULL;
    EVP_PKEY *k = NULL;
    uint8_t key[KMS_KEY_MATERIAL_MAX];
    int rc = -1;

    if (x == NULL || y == NULL || d == NULL || bld == NULL ||
        BN_bn2binpad(d, key, (int)f) != (int)f) /* also refuses values wider than the field */
        goto out;
    key[f] = 0x04;
    if (BN_bn2binpad(x, key + f + 1, (int)f) != (int)f ||
        BN_bn2binpad(y, key + 2 * f + 1, (int)f) != (int)f)
        goto out;
    if (OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, ec_group(t), 0) != 1 ||
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, key + f, 1 + 2 * f) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, d) != 1 ||
        (params = OSSL_PARAM_BLD_to_param(bld)) == NULL)
        goto out;
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &k, EVP_PKEY_KEYPAIR, params) != 1)
        goto out;
    /* point on the curve, scalar in range, d*G equal to the point */
    chk = EVP_PKEY_CTX_new_from_pkey(NULL, k, NULL);
    if (chk == NULL || EVP_PKEY_check(chk) != 1)
        goto out;
    memcpy(kv->key, key, 3 * f + 1);
    kv->key_len = (uint32_t)(3 * f + 1);
    rc = 0;
out:
    kms_memzero(key, sizeof(key));
    EVP_PKEY_CTX_free(chk);
    EVP_PKEY_free(k);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_clear_free(d);
    BN_free(y);
    BN_free(x);
    return rc;
}

/* Whether given (NULL = absent) equals want; an unparsable value never does. */
static bool optional_eq(const char *given, const BIGNUM *want)
{
    BIGNUM *g = NULL;
    bool eq = false;

    if (given == NULL)
        return true;
    g = dec_bn(given);
    eq = g != NULL && BN_cmp(g, want) == 0;
    BN_clear_free(g);
    return eq;
}

static int rsa_put(enum kms_key_type t, const char *const in[KMS_BIG_COUNT], int64_t e,
                   struct kms_key_version *kv, struct kms_err *err)
{
    int half = rsa_half(t);
    BN_CTX *bc = BN_CTX_secure_new();
    BIGNUM *n = dec_bn(in[KMS_BIG_RSA_N]), *d = dec_bn(in[KMS_BIG_RSA_D]);
    BIGNUM *p = dec_bn(in[KMS_BIG_RSA_P]), *q = dec_bn(in[KMS_BIG_RSA_Q]);
    BIGNUM *ed = BN_secure_new(), *m = BN_secure_new(), *t1 = BN_secure_new();
    struct rsa_bns r = {0};
    uint8_t key[KMS_KEY_MATERIAL_MAX];
    int rc = -1;

    if (e != RSA_E) {
        kms_err_set(err, 400, "RSA keys with a public exponent other than 65537 are not supported");
        goto out;
    }
    if (bc == NULL || n == NULL || d == NULL || p == NULL || q == NULL || ed == NULL || m == NULL ||
        t1 == NULL)
        goto bad;
    if (BN_num_bytes(p) != half || BN_num_bytes(q) != half) {
        kms_err_set(err, 400, "RSA keys must have two primes of half the modulus each");
        goto out;
    }
    if (BN_bn2binpad(p, key, half) != half || BN_bn2binpad(q, key + half, half) != half ||
        rsa_derive(key, half, bc, &r) != 0 || BN_cmp(r.n, n) != 0 ||
        BN_check_prime(p, bc, NULL) != 1 || BN_check_prime(q, bc, NULL) != 1)
        goto bad;
    /* e*d = 1 modulo p-1 and q-1: the given d is a private exponent of this key */
    if (BN_mul(ed, r.e, d, bc) != 1 || BN_sub(t1, p, BN_value_one()) != 1 ||
        BN_mod(m, ed, t1, bc) != 1 || !BN_is_one(m) || BN_sub(t1, q, BN_value_one()) != 1 ||
        BN_mod(m, ed, t1, bc) != 1 || !BN_is_one(m))
        goto bad;
    if (!optional_eq(in[KMS_BIG_RSA_DP], r.dp) || !optional_eq(in[KMS_BIG_RSA_DQ], r.dq) ||
        !optional_eq(in[KMS_BIG_RSA_QINV], r.qinv))
        goto bad;
    memcpy(kv->key, key, (size_t)(2 * half));
    kv->key_len = (uint32_t)(2 * half);
    rc = 0;
    goto out;
bad:
    kms_err_set(err, 400, "invalid RSA key");
out:
    kms_memzero(key, sizeof(key));
    rsa_bns_free(&r);
    BN_clear_free(t1);
    BN_clear_free(m);
    BN_clear_free(ed);
    BN_clear_free(q);
    BN_clear_free(p);
    BN_clear_free(d);
    BN_free(n);
    BN_CTX_free(bc);
    return rc;
}

int kms_key_bigints_put(enum kms_key_type t, const char *const in[KMS_BIG_COUNT], int64_t e,
                        struct kms_key_version *kv, struct kms_err *err)
{
    if (ec_field(t) != 0) {
        if (ec_put(t, in, kv) != 0)
            return kms_err_set(err, 400, "invalid %s key", kms_key_type_name(t));
        return 0;
    }
    if (rsa_half(t) != 0)
        return rsa_put(t, in, e, kv, err);
    return kms_err_set(err, 400, "key type %s has no big-integer form", kms_key_type_name(t));
}
