/*
 * jwt.c - offline JWT verification for the login methods.
 *
 * Order of a verification, each step refusing with 403 "permission denied" and no detail:
 *   1. size (<= 16 KiB), whitespace dropped, exactly three dot-separated parts;
 *   2. the JOSE header is parsed here, not by a library: base64url, a JSON object without
 *      duplicate keys, "alg" a string in the allow-list (RS256/384/512, PS256/384/512,
 *      ES256/384). "none" in any spelling and every HS* stop here, before any key is looked
 *      at, so the HS256-keyed-with-the-public-key confusion cannot happen. A "crit" header is
 *      refused (we understand no extension); jku, jwk, x5u and x5c are never used;
 *   3. candidate keys: those that fit the algorithm; a "kid" selects the JWKS keys with that
 *      kid, so an unknown kid finds no JWKS key (PEM keys have no kid and are tried for every
 *      token, as upstream's static key set does); a JWKS key with its own "alg" must agree;
 *   4. the signature must verify under one candidate (crypto/ jws.c, OpenSSL EVP);
 *   5. the claims: base64url, a duplicate-free JSON object of depth <= 32, and no claim that
 *      equals a registered claim name only under case folding (a different 403 message).
 * Claims are then checked by kms_jwt_validate with cap's messages and order.
 */
#include "auth/auth_int.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_KEYS 64
#define MAX_DEPTH 32

struct ks_key {
    struct kms_pubkey *key;
    char kid[128];
    bool has_kid;
    bool has_alg;
    enum kms_jws_alg alg;
};

struct kms_keyset {
    struct ks_key keys[MAX_KEYS];
    size_t n;
};

int kms_keyset_create(struct kms_keyset **out)
{
    *out = calloc(1, sizeof(**out));
    return *out ? 0 : -1;
}

void kms_keyset_destroy(struct kms_keyset **ks)
{
    if (*ks == NULL) {
        return;
    }
    for (size_t i = 0; i < (*ks)->n; i++) {
        kms_pubkey_free(&(*ks)->keys[i].key);
    }
    free(*ks);
    *ks = NULL;
}

size_t kms_keyset_size(const struct kms_keyset *ks)
{
    return ks ? ks->n : 0;
}

int kms_keyset_add_pem(struct kms_keyset *ks, const char *pem, size_t index, struct kms_err *err)
{
    struct kms_pubkey *k = NULL;
    if (ks->n == MAX_KEYS) {
        return kms_err_set(err, 400, "too many keys (at most %d)", MAX_KEYS);
    }
    if (kms_pubkey_from_pem(pem, strlen(pem), &k) != 0) {
        return kms_err_set(err, 400,
                           "pem_keys[%zu]: not a PEM public key or certificate of an RSA "
                           "(>= 2048 bits, an odd exponent from 3 to 2^31-1), P-256 or P-384 key",
                           index);
    }
    memset(&ks->keys[ks->n], 0, sizeof(ks->keys[0]));
    ks->keys[ks->n++].key = k;
    return 0;
}

static int b64url_member(const json_t *jwk, const char *name, uint8_t **out, size_t *len)
{
    const char *s = json_string_value(json_object_get(jwk, name));
    *out = NULL;
    *len = 0;
    if (s == NULL) {
        return -1;
    }
    return kms_b64url_decode_alloc(s, strlen(s), out, len);
}

/* One JWK -> key; 1 when skipped (not a signature key we use), 0 added, -1 invalid. */
static int add_jwk(struct kms_keyset *ks, const json_t *jwk)
{
    const char *kty = json_string_value(json_object_get(jwk, "kty"));
    const char *use = json_string_value(json_object_get(jwk, "use"));
    const char *kid = json_string_value(json_object_get(jwk, "kid"));
    const char *alg = json_string_value(json_object_get(jwk, "alg"));
    struct kms_pubkey *k = NULL;
    uint8_t *a = NULL;
    uint8_t *b = NULL;
    size_t al = 0;
    size_t bl = 0;
    int rc = -1;

    if (!json_is_object(jwk) || kty == NULL) {
        goto out;
    }
    if (use != NULL && strcmp(use, "sig") != 0) {
        rc = 1;
        goto out;
    }
    if (kid != NULL && strlen(kid) >= sizeof(ks->keys[0].kid)) {
        goto out;
    }
    if (strcmp(kty, "RSA") == 0) {
        if (b64url_member(jwk, "n", &a, &al) != 0 || b64url_member(jwk, "e", &b, &bl) != 0 ||
            kms_pubkey_from_rsa(a, al, b, bl, &k) != 0) {
            goto out;
        }
    } else if (strcmp(kty, "EC") == 0) {
        const char *crv = json_string_value(json_object_get(jwk, "crv"));
        enum kms_pubkey_kind kind;
        if (crv != NULL && strcmp(crv, "P-256") == 0) {
            kind = KMS_PUBKEY_P256;
        } else if (crv != NULL && strcmp(crv, "P-384") == 0) {
            kind = KMS_PUBKEY_P384;
        } else {
            rc = 1;
            goto out;
        }
        if (b64url_member(jwk, "x", &a, &al) != 0 || b64url_member(jwk, "y", &b, &bl) != 0 ||
            kms_pubkey_from_ec(kind, a, al, b, bl, &k) != 0) {
            goto out;
        }
    } else {
        rc = 1;
        goto out;
    }
    if (ks->n == MAX_KEYS) {
        goto out;
    }
    struct ks_key *e = &ks->keys[ks->n];
    memset(e, 0, sizeof(*e));
    if (alg != NULL) {
        if (kms_jws_alg_parse(alg, &e->alg) != 0 || !kms_jws_alg_fits(e->alg, kms_pubkey_kind(k))) {
            rc = 1; /* a key meant for an algorithm kmsd never accepts */
            goto out;
        }
        e->has_alg = true;
    }
    if (kid != NULL) {
        snprintf(e->kid, sizeof(e->kid), "%s", kid);
        e->has_kid = true;
    }
    e->key = k;
    k = NULL;
    ks->n++;
    rc = 0;
out:
    kms_pubkey_free(&k);
    free(a);
    free(b);
    return rc;
}

int kms_keyset_add_jwks(struct kms_keyset *ks, const char *text, size_t len, struct kms_err *err)
{
    json_error_t jerr;
    json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *keys = json_object_get(doc, "keys");
    size_t i;
    json_t *jwk;
    size_t added = 0, skipped = 0;
    int rc = -1;

    if (!json_is_array(keys)) {
        kms_err_set(err, 400, "invalid JWKS: %s",
                    doc == NULL ? jerr.text : "expected an object with a \"keys\" array");
        goto out;
    }
    json_array_foreach(keys, i, jwk)
    {
        int a = add_jwk(ks, jwk);
        if (a < 0) {
            kms_err_set(err, 400,
                        "invalid JWKS: key %zu is not a valid RSA (>= 2048 bits, an odd exponent "
                        "from 3 to 2^31-1) or "
                        "EC P-256/P-384 public key",
                        i);
            goto out;
        }
        added += a == 0;
        skipped += a == 1;
    }
    if (added == 0 && skipped > 0) {
        kms_err_set(err, 400,
                    "invalid JWKS: no usable signature key (%zu skipped: kmsd verifies with RSA "
                    "(>= 2048 bits) or EC P-256/P-384 public keys meant for signatures; "
                    "symmetric \"oct\" keys, encryption keys and other curves are not used)",
                    skipped);
        goto out;
    }
    if (added == 0) {
        kms_err_set(err, 400, "invalid JWKS: no usable signature key");
        goto out;
    }
    rc = 0;
out:
    json_decref(doc);
    return rc;
}

/* JSON nesting depth of a document (strings skipped); > MAX_DEPTH means too deep. */
static size_t json_depth(const uint8_t *p, size_t n)
{
    size_t depth = 0;
    size_t maxd = 0;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (in_str) {
            if (c == '\\') {
                i++;
            } else if (c == '"') {
                in_str = false;
            }
        } else if (c == '"') {
            in_str = true;
        } else if (c == '{' || c == '[') {
            depth++;
            maxd = depth > maxd ? depth : maxd;
        } else if ((c == '}' || c == ']') && depth > 0) {
            depth--;
        }
    }
    return maxd;
}

/* base64url segment -> JSON object (no duplicates, bounded depth). */
static json_t *decode_segment(const char *s, size_t n)
{
    uint8_t *raw = NULL;
    size_t rawlen = 0;
    json_t *j = NULL;

    if (n == 0 || kms_b64url_decode_alloc(s, n, &raw, &rawlen) != 0) {
        return NULL;
    }
    if (rawlen > 0 && memchr(raw, '\0', rawlen) == NULL && json_depth(raw, rawlen) <= MAX_DEPTH) {
        j = json_loadb((const char *)raw, rawlen, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(j)) {
            json_decref(j);
            j = NULL;
        }
    }
    kms_free_wipe((void **)&raw, rawlen);
    return j;
}

static const char *const registered[] = {"iss", "sub", "aud", "exp", "nbf", "iat", "jti"};

int kms_jwt_verify(const char *jwt, const struct kms_keyset *ks, json_t **claims,
                   struct kms_err *err)
{
    char *tok = NULL;
    json_t *hdr = NULL;
    json_t *cl = NULL;
    uint8_t *sig = NULL;
    size_t siglen = 0;
    enum kms_jws_alg alg;
    int rc = -1;

    *claims = NULL;
    kms_err_set(err, 403, "permission denied");
    size_t n = jwt ? strlen(jwt) : 0;
    if (n == 0 || n > KMS_JWT_MAX_LEN || ks == NULL) {
        goto out;
    }
    tok = malloc(n + 1);
    if (tok == NULL) {
        goto out;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (jwt[i] != ' ' && jwt[i] != '\t' && jwt[i] != '\r' && jwt[i] != '\n') {
            tok[o++] = jwt[i];
        }
    }
    tok[o] = '\0';
    char *d1 = strchr(tok, '.');
    char *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    if (d1 == NULL || d2 == NULL || strchr(d2 + 1, '.') != NULL) {
        goto out;
    }
    hdr = decode_segment(tok, (size_t)(d1 - tok));
    const char *algname = json_string_value(json_object_get(hdr, "alg"));
    if (hdr == NULL || algname == NULL || kms_jws_alg_parse(algname, &alg) != 0 ||
        json_object_get(hdr, "crit") != NULL) {
        goto out;
    }
    json_t *kidv = json_object_get(hdr, "kid");
    if (kidv != NULL && !json_is_string(kidv)) {
        goto out;
    }
    const char *kid = json_string_value(kidv);
    if (kms_b64url_decode_alloc(d2 + 1, strlen(d2 + 1), &sig, &siglen) != 0 || siglen == 0) {
        goto out;
    }
    bool verified = false;
    for (size_t i = 0; i < ks->n && !verified; i++) {
        const struct ks_key *k = &ks->keys[i];
        if (kid != NULL && k->has_kid) {
            if (strcmp(k->kid, kid) != 0) {
                continue;
            }
        }
        if (!kms_jws_alg_fits(alg, kms_pubkey_kind(k->key)) || (k->has_alg && k->alg != alg)) {
            continue;
        }
        verified = kms_jws_verify(k->key, alg, tok, (size_t)(d2 - tok), sig, siglen) == 0;
    }
    if (!verified) {
        goto out;
    }
    cl = decode_segment(d1 + 1, (size_t)(d2 - d1 - 1));
    if (cl == NULL) {
        goto out;
    }
    const char *key;
    json_t *v;
    json_object_foreach(cl, key, v)
    {
        for (size_t i = 0; i < sizeof(registered) / sizeof(registered[0]); i++) {
            if (strcasecmp(key, registered[i]) == 0 && strcmp(key, registered[i]) != 0) {
                kms_err_set(err, 403,
                            "ambiguous claim: key \"%s\" collides with registered claim \"%s\" "
                            "under case folding",
                            key, registered[i]);
                goto out;
            }
        }
    }
    *claims = cl;
    cl = NULL;
    kms_err_clear(err);
    rc = 0;
out:
    if (tok != NULL) {
        kms_memzero(tok, n + 1);
        free(tok);
    }
    free(sig);
    json_decref(hdr);
    json_decref(cl);
    return rc;
}

/* A NumericDate: 1 present (value in *out), 0 absent, -1 malformed. */
static int numeric_date(const json_t *claims, const char *name, int64_t *out)
{
    json_t *v = json_object_get(claims, name);
    if (v == NULL || json_is_null(v)) {
        return 0;
    }
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!(d > -9.2e18 && d < 9.2e18)) {
            return -1;
        }
        *out = (int64_t)d;
    } else {
        return -1;
    }
    return 1;
}

static bool aud_contains(const json_t *aud, const char *want, bool *malformed)
{
    *malformed = false;
    if (json_is_string(aud)) {
        return strcmp(json_string_value(aud), want) == 0;
    }
    if (json_is_array(aud)) {
        size_t i;
        json_t *v;
        bool hit = false;
        json_array_foreach(aud, i, v)
        {
            if (!json_is_string(v)) {
                *malformed = true;
                return false;
            }
            hit = hit || strcmp(json_string_value(v), want) == 0;
        }
        return hit;
    }
    *malformed = aud != NULL && !json_is_null(aud);
    return false;
}

/* a + b, saturated at the int64 range: claims are attacker-chosen (exp = INT64_MAX). */
static int64_t sat_add(int64_t a, int64_t b)
{
    int64_t r;
    if (__builtin_add_overflow(a, b, &r)) {
        return b > 0 ? INT64_MAX : INT64_MIN;
    }
    return r;
}

int kms_jwt_validate(const json_t *claims, const struct kms_jwt_expect *e, int status,
                     struct kms_err *err)
{
    int64_t exp = 0;
    int64_t nbf = 0;
    int64_t iat = 0;
    int hexp = numeric_date(claims, "exp", &exp);
    int hnbf = numeric_date(claims, "nbf", &nbf);
    int hiat = numeric_date(claims, "iat", &iat);
    json_t *iss = json_object_get(claims, "iss");

    if (hexp < 0 || hnbf < 0 || hiat < 0 || (iss != NULL && !json_is_string(iss))) {
        return kms_err_set(err, 403, "permission denied");
    }
    if (e->issuer != NULL && e->issuer[0] != '\0' &&
        (iss == NULL || strcmp(json_string_value(iss), e->issuer) != 0)) {
        return kms_err_set(err, status, "invalid issuer (iss) claim");
    }
    if (e->naudiences > 0) {
        json_t *aud = json_object_get(claims, "aud");
        bool hit = false;
        bool malformed = false;
        for (size_t i = 0; i < e->naudiences && !hit; i++) {
            hit = aud_contains(aud, e->audiences[i], &malformed);
            if (malformed) {
                return kms_err_set(err, 403, "permission denied");
            }
        }
        if (!hit) {
            return kms_err_set(err, status,
                               "invalid audience (aud) claim: audience claim does not match any "
                               "expected audience");
        }
    }
    if (hexp == 0 && e->require_exp) {
        return kms_err_set(err, status,
                           "invalid expiration time (exp) claim: token has no expiration time");
    }
    if (hnbf == 0 && hiat == 1) {
        nbf = iat; /* cap: a missing nbf is the iat */
        hnbf = 1;
    }
    if (hnbf == 1 && sat_add(e->now, e->nbf_leeway) < nbf) {
        return kms_err_set(err, status, "invalid not before (nbf) claim: token not yet valid");
    }
    if (hexp == 1 && e->now >= sat_add(exp, e->exp_leeway)) {
        return kms_err_set(err, status, "invalid expiration time (exp) claim: token is expired");
    }
    if (hiat == 1 && sat_add(e->now, e->iat_leeway) < iat) {
        return kms_err_set(err, status,
                           "invalid issued at (iat) claim: token issued in the future");
    }
    return 0;
}
