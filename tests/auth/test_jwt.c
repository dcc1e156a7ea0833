/*
 * test_jwt.c - auth/jwt.c and auth/k8s.c: key sets (PEM, JWKS), the JWS refusal matrix
 * (reference auth-audit.md §8 cases 2-5, 11), claim validation with its messages and order
 * (cases 6-7), service-account claims and bindings (cases 8, 10), globs and CIDRs.
 * Vectors come from jwt_vectors.h (gen_jwt_vectors.py): fixed keys and tokens, so the test
 * passes its own clock and needs no OpenSSL.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "auth/auth.h"
#include "jwt_vectors.h"

#define NOW (VEC_IAT + 100)

static struct kms_keyset *pem_keys(void)
{
    struct kms_keyset *ks = NULL;
    struct kms_err err;
    assert_int_equal(kms_keyset_create(&ks), 0);
    assert_int_equal(kms_keyset_add_pem(ks, PEM_RSA, 0, &err), 0);
    assert_int_equal(kms_keyset_add_pem(ks, PEM_P256, 1, &err), 0);
    assert_int_equal(kms_keyset_add_pem(ks, PEM_P384, 2, &err), 0);
    return ks;
}

static void expect_denied(const struct kms_keyset *ks, const char *jwt, const char *msg)
{
    json_t *claims = NULL;
    struct kms_err err;
    memset(&err, 0, sizeof(err));
    if (kms_jwt_verify(jwt, ks, &claims, &err) == 0) {
        json_decref(claims);
        fail_msg("token accepted: %.60s...", jwt);
    }
    assert_null(claims);
    assert_int_equal(err.status, 403);
    assert_string_equal(err.msg, msg);
}

static void expect_ok(const struct kms_keyset *ks, const char *jwt)
{
    json_t *claims = NULL;
    struct kms_err err;
    if (kms_jwt_verify(jwt, ks, &claims, &err) != 0) {
        fail_msg("token refused (%d %s): %.60s...", err.status, err.msg, jwt);
    }
    assert_true(json_is_object(claims));
    assert_string_equal(json_string_value(json_object_get(claims, "sub")),
                        "system:serviceaccount:my-project:app");
    json_decref(claims);
}

static void test_alg_allow_list(void **state)
{
    (void)state;
    enum kms_jws_alg a;
    static const char *const ok[] = {"RS256", "RS384", "RS512", "PS256",
                                     "PS384", "PS512", "ES256", "ES384"};
    static const char *const bad[] = {"none",  "None",  "NONE",  "HS256",  "HS384", "HS512",
                                      "ES512", "EdDSA", "rs256", "RS256 ", "",      "RS1"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        assert_int_equal(kms_jws_alg_parse(ok[i], &a), 0);
        assert_string_equal(kms_jws_alg_name(a), ok[i]);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(kms_jws_alg_parse(bad[i], &a), -1);
    }
}

static void test_keyset_pem(void **state)
{
    (void)state;
    struct kms_keyset *ks = NULL;
    struct kms_err err;
    assert_int_equal(kms_keyset_create(&ks), 0);
    assert_int_equal(kms_keyset_add_pem(ks, PEM_RSA, 0, &err), 0);
    assert_int_equal(kms_keyset_add_pem(ks, PEM_RSA_PKCS1, 1, &err), 0);
    assert_int_equal(kms_keyset_add_pem(ks, PEM_P256, 2, &err), 0);
    assert_int_equal(kms_keyset_add_pem(ks, PEM_P384, 3, &err), 0);
    assert_int_equal(kms_keyset_size(ks), 4);
    assert_int_equal(kms_keyset_add_pem(ks, PEM_RSA_1024, 7, &err), -1);
    assert_int_equal(err.status, 400);
    assert_non_null(strstr(err.msg, "pem_keys[7]"));
    assert_int_equal(kms_keyset_add_pem(ks, PEM_RSA_PRIVATE, 0, &err), -1);
    assert_int_equal(kms_keyset_add_pem(ks, "not a pem", 0, &err), -1);
    assert_int_equal(kms_keyset_add_pem(ks, "", 0, &err), -1);
    assert_int_equal(kms_keyset_size(ks), 4);
    kms_keyset_destroy(&ks);
    assert_null(ks);
}

static void test_keyset_jwks(void **state)
{
    (void)state;
    struct kms_keyset *ks = NULL;
    struct kms_err err;
    assert_int_equal(kms_keyset_create(&ks), 0);
    assert_int_equal(kms_keyset_add_jwks(ks, JWKS, strlen(JWKS), &err), 0);
    assert_int_equal(kms_keyset_size(ks), 2); /* the "oct" key is skipped */
    expect_ok(ks, JWT_RS256);                 /* kid rsa-1 */
    expect_ok(ks, JWT_ES256);                 /* kid ec-1 */
    expect_denied(ks, JWT_UNKNOWN_KID, "permission denied");
    expect_denied(ks, JWT_PS256, "permission denied"); /* the JWK says alg RS256 */
    static const char *const bad[] = {
        "",
        "{",
        "[]",
        "{\"keys\":{}}",
        "{\"keys\":[]}",
        "{\"keys\":[{\"kty\":\"oct\"}]}",
        "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}",
        "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AAAA\",\"y\":\"AAAA\"}]}",
        "{\"keys\":[],\"keys\":[]}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(kms_keyset_add_jwks(ks, bad[i], strlen(bad[i]), &err), -1);
        assert_int_equal(err.status, 400);
    }
    kms_keyset_destroy(&ks);
}

/* One RSA JWK with the vectors' modulus and exponent e (base64url). */
static int add_rsa_jwk(struct kms_keyset *ks, const char *e, struct kms_err *err)
{
    const char *n = strstr(JWKS, "\"n\": \"");
    assert_non_null(n);
    n += 6;
    const char *end = strchr(n, '"');
    assert_non_null(end);
    char jwks[1024];
    int len =
        snprintf(jwks, sizeof jwks, "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"%.*s\",\"e\":\"%s\"}]}",
                 (int)(end - n), n, e);
    assert_true(len > 0 && (size_t)len < sizeof jwks);
    return kms_keyset_add_jwks(ks, jwks, (size_t)len, err);
}

/* Under e = 1 every message is its own signature: such a key would let anyone sign a token. */
static void test_keyset_rsa_exponent(void **state)
{
    (void)state;
    struct kms_keyset *ks = NULL;
    struct kms_err err;
    assert_int_equal(kms_keyset_create(&ks), 0);
    /* 1, 2 (even), 65536 (even), 2^31 + 1 and 2^32 + 1 (past Go's crypto/rsa bound), 0 */
    static const char *const bad[] = {"AQ", "Ag", "AQAA", "gAAAAQ", "AQAAAAE", "AA"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(add_rsa_jwk(ks, bad[i], &err), -1);
        assert_int_equal(err.status, 400);
    }
    assert_int_equal(kms_keyset_size(ks), 0);
    /* 3, 65537 and 2^31 - 1 are RSA exponents */
    assert_int_equal(add_rsa_jwk(ks, "Aw", &err), 0);
    assert_int_equal(add_rsa_jwk(ks, "AQAB", &err), 0);
    assert_int_equal(add_rsa_jwk(ks, "f____w", &err), 0);
    assert_int_equal(kms_keyset_size(ks), 3);
    kms_keyset_destroy(&ks);
}

static void test_verify_algorithms(void **state)
{
    (void)state;
    struct kms_keyset *ks = pem_keys();
    expect_ok(ks, JWT_RS256);
    expect_ok(ks, JWT_RS384);
    expect_ok(ks, JWT_RS512);
    expect_ok(ks, JWT_PS256);
    expect_ok(ks, JWT_PS384);
    expect_ok(ks, JWT_PS512);
    expect_ok(ks, JWT_ES256);
    expect_ok(ks, JWT_ES384);
    expect_ok(ks, JWT_WHITESPACE);
    kms_keyset_destroy(&ks);
}

static void test_refusal_matrix(void **state)
{
    (void)state;
    struct kms_keyset *ks = pem_keys();
    const char *const denied[] = {
        JWT_WRONG_KEY,
        JWT_UNKNOWN_KID,
        JWT_JWK_HEADER,
        JWT_CRIT,
        JWT_HS256_PEM,
        JWT_HS384_PEM,
        JWT_HS512_PEM,
        JWT_HS256_DER,
        JWT_HS256_EC,
        JWT_NONE_0,
        JWT_NONE_1,
        JWT_NONE_2,
        JWT_NONE_3,
        JWT_NONE_SIG_0,
        JWT_NONE_SIG_1,
        JWT_NONE_SIG_2,
        JWT_NONE_SIG_3,
        JWT_RS_ON_EC,
        JWT_ES_ON_RSA,
        JWT_ES512_HDR,
        JWT_SIG_FLIPPED,
        JWT_TAMPERED,
        JWT_TWO_PARTS,
        JWT_FOUR_PARTS,
        JWT_PADDED,
        JWT_BAD_B64,
        JWT_EMPTY_SIG,
        JWT_DUP_HDR,
        JWT_DUP_EXP,
        JWT_DUP_K8S,
        JWT_NUL,
        JWT_NON_UTF8,
        JWT_DEEP,
        JWT_BIG,
        "",
        ".",
        "..",
        "a.b.c",
    };
    for (size_t i = 0; i < sizeof(denied) / sizeof(denied[0]); i++) {
        expect_denied(ks, denied[i], "permission denied");
    }
    json_t *claims = NULL;
    struct kms_err err;
    assert_int_equal(kms_jwt_verify(NULL, ks, &claims, &err), -1);
    assert_int_equal(kms_jwt_verify(JWT_RS256, NULL, &claims, &err), -1);
    /* an HS256 token is refused even with no keys at all to confuse */
    struct kms_keyset *empty = NULL;
    assert_int_equal(kms_keyset_create(&empty), 0);
    expect_denied(empty, JWT_HS256_PEM, "permission denied");
    expect_denied(empty, JWT_RS256, "permission denied");
    kms_keyset_destroy(&empty);
    kms_keyset_destroy(&ks);
}

static void test_case_folded_claims(void **state)
{
    (void)state;
    struct kms_keyset *ks = pem_keys();
    expect_denied(ks, JWT_CLAIM_EXP_UPPER,
                  "ambiguous claim: key \"EXP\" collides with registered claim \"exp\" under "
                  "case folding");
    expect_denied(ks, JWT_CLAIM_AUD_MIXED,
                  "ambiguous claim: key \"Aud\" collides with registered claim \"aud\" under "
                  "case folding");
    kms_keyset_destroy(&ks);
}

static json_t *claims_of(const char *jwt)
{
    struct kms_keyset *ks = pem_keys();
    json_t *claims = NULL;
    struct kms_err err;
    assert_int_equal(kms_jwt_verify(jwt, ks, &claims, &err), 0);
    kms_keyset_destroy(&ks);
    return claims;
}

static int validate(const json_t *claims, int64_t now, const char *iss, const char *aud,
                    bool require_exp, struct kms_err *err)
{
    const char *auds[1] = {aud};
    struct kms_jwt_expect e = {now, iss, auds, aud && aud[0] ? 1 : 0, require_exp, 60, 60, 60};
    memset(err, 0, sizeof(*err));
    return kms_jwt_validate(claims, &e, 403, err);
}

static void expect_invalid(const json_t *claims, int64_t now, const char *iss, const char *aud,
                           const char *msg)
{
    struct kms_err err;
    assert_int_equal(validate(claims, now, iss, aud, true, &err), -1);
    assert_int_equal(err.status, 403);
    assert_string_equal(err.msg, msg);
}

#define MSG_EXP "invalid expiration time (exp) claim: token is expired"
#define MSG_NBF "invalid not before (nbf) claim: token not yet valid"
#define MSG_IAT "invalid issued at (iat) claim: token issued in the future"
#define MSG_AUD "invalid audience (aud) claim: audience claim does not match any expected audience"
#define MSG_ISS "invalid issuer (iss) claim"

static void test_time_claims(void **state)
{
    (void)state;
    struct kms_err err;
    json_t *c = claims_of(JWT_RS256);
    assert_int_equal(validate(c, NOW, VEC_ISS, "openbao", true, &err), 0);
    assert_int_equal(validate(c, VEC_EXP + 59, VEC_ISS, "openbao", true, &err), 0);
    expect_invalid(c, VEC_EXP + 60, VEC_ISS, "openbao", MSG_EXP);
    expect_invalid(c, VEC_EXP + 61, VEC_ISS, "openbao", MSG_EXP);
    assert_int_equal(validate(c, VEC_IAT - 59, VEC_ISS, "openbao", true, &err), 0);
    expect_invalid(c, VEC_IAT - 61, VEC_ISS, "openbao", MSG_NBF);
    /* order: aud before exp, so expired + wrong audience reports the audience */
    expect_invalid(c, VEC_EXP + 1000, VEC_ISS, "vault", MSG_AUD);
    json_decref(c);

    /* iat in the future, nbf present and fine: the iat message */
    json_t *j = json_pack("{s:I, s:I, s:I}", "nbf", (json_int_t)NOW, "iat", (json_int_t)NOW + 61,
                          "exp", (json_int_t)NOW + 600);
    expect_invalid(j, NOW, NULL, NULL, MSG_IAT);
    json_decref(j);
    /* no nbf: it becomes the iat (cap), so the nbf message */
    j = json_pack("{s:I, s:I}", "iat", (json_int_t)NOW + 61, "exp", (json_int_t)NOW + 600);
    expect_invalid(j, NOW, NULL, NULL, MSG_NBF);
    json_decref(j);
    /* real-valued NumericDate works */
    j = json_pack("{s:f}", "exp", (double)NOW + 10.5);
    assert_int_equal(validate(j, NOW, NULL, NULL, true, &err), 0);
    json_decref(j);

    c = claims_of(JWT_NO_EXP);
    expect_invalid(c, NOW, VEC_ISS, "openbao",
                   "invalid expiration time (exp) claim: token has no expiration time");
    assert_int_equal(validate(c, NOW, VEC_ISS, "openbao", false, &err), 0);
    json_decref(c);
    c = claims_of(JWT_NO_TIMES);
    expect_invalid(c, NOW, VEC_ISS, "openbao",
                   "invalid expiration time (exp) claim: token has no expiration time");
    json_decref(c);
    c = claims_of(JWT_EXP_STRING);
    expect_invalid(c, NOW, VEC_ISS, "openbao", "permission denied");
    json_decref(c);
}

static void test_iss_aud(void **state)
{
    (void)state;
    struct kms_err err;
    json_t *c = claims_of(JWT_RS256);
    assert_int_equal(validate(c, NOW, NULL, NULL, true, &err), 0);
    assert_int_equal(validate(c, NOW, "", "", true, &err), 0);
    expect_invalid(c, NOW, "https://other.example", "openbao", MSG_ISS);
    expect_invalid(c, NOW, VEC_ISS, "vault", MSG_AUD);
    json_decref(c);
    c = claims_of(JWT_AUD_STRING); /* RFC 7519: a single string is fine */
    assert_int_equal(validate(c, NOW, VEC_ISS, "openbao", true, &err), 0);
    json_decref(c);
    c = claims_of(JWT_AUD_OTHER);
    expect_invalid(c, NOW, VEC_ISS, "openbao", MSG_AUD);
    assert_int_equal(validate(c, NOW, VEC_ISS, NULL, true, &err), 0); /* no audience bound */
    json_decref(c);
    c = claims_of(JWT_NO_AUD);
    expect_invalid(c, NOW, VEC_ISS, "openbao", MSG_AUD);
    json_decref(c);
    c = claims_of(JWT_ISS_OTHER);
    expect_invalid(c, NOW, VEC_ISS, "openbao", MSG_ISS);
    assert_int_equal(validate(c, NOW, NULL, "openbao", true, &err), 0);
    json_decref(c);
    json_t *j = json_pack("{s:[i], s:I}", "aud", 5, "exp", (json_int_t)NOW + 60);
    expect_invalid(j, NOW, NULL, "openbao", "permission denied");
    json_decref(j);
}

/* ---- kubernetes ---------------------------------------------------------------------------- */

struct login_case {
    const char *jwt;
    const char *names;      /* comma-separated */
    const char *namespaces; /* comma-separated */
    const char *audience;
    int status;
    const char *msg;
};

static size_t split(const char *s, char *buf, size_t n, const char **out, size_t max)
{
    size_t k = 0;
    snprintf(buf, n, "%s", s);
    for (char *p = buf; *p != '\0' && k < max;) {
        out[k++] = p;
        char *comma = strchr(p, ',');
        if (comma == NULL) {
            break;
        }
        *comma = '\0';
        p = comma + 1;
    }
    return k;
}

static int run_login(const struct login_case *lc, struct kms_k8s_sa *sa, struct kms_err *err,
                     bool by_name)
{
    char nb[256];
    char sb[256];
    const char *names[8];
    const char *nss[8];
    struct kms_keyset *ks = pem_keys();
    struct kms_k8s_login in = {
        .jwt = lc->jwt,
        .keys = ks,
        .issuer = VEC_ISS,
        .audience = lc->audience,
        .names = names,
        .nnames = split(lc->names, nb, sizeof(nb), names, 8),
        .namespaces = nss,
        .nnamespaces = split(lc->namespaces, sb, sizeof(sb), nss, 8),
        .alias_by_name = by_name,
        .now = NOW,
    };
    memset(err, 0, sizeof(*err));
    int rc = kms_k8s_login_validate(&in, sa, err);
    kms_keyset_destroy(&ks);
    return rc;
}

static void test_k8s_login(void **state)
{
    (void)state;
    static const struct login_case cases[] = {
        {JWT_RS256, "app", "my-project", "openbao", 0, ""},
        {JWT_RS256, "*", "*", "openbao", 0, ""},
        {JWT_RS256, "ap*", "my-*", "", 0, ""},
        {JWT_RS256, "other,app", "x,my-project", "openbao", 0, ""},
        {JWT_ES256, "app", "my-project", "openbao", 0, ""},
        {JWT_AUD_STRING, "app", "my-project", "openbao", 0, ""},
        {JWT_MIXED_FORMS, "app", "my-project", "openbao", 0, ""},
        {JWT_LEGACY_EXP, "app", "my-project", "", 403, MSG_ISS},
        {JWT_WRONG_SA, "app", "my-project", "openbao", 403, "service account name not authorized"},
        {JWT_WRONG_NS, "app", "my-project", "openbao", 403, "namespace not authorized"},
        {JWT_BOTH_WRONG, "app", "my-project", "openbao", 403,
         "service account name not authorized"},
        {JWT_RS256, "app-*", "my-project", "openbao", 403, "service account name not authorized"},
        {JWT_RS256, "*app", "my-project", "openbao", 0, ""},
        {JWT_RS256, "xapp", "my-project", "openbao", 403, "service account name not authorized"},
        {JWT_AUD_OTHER, "app", "my-project", "openbao", 403, MSG_AUD},
        {JWT_NO_AUD, "app", "my-project", "openbao", 403, MSG_AUD},
        {JWT_AUD_OTHER, "app", "my-project", "", 0, ""},
        {JWT_ISS_OTHER, "app", "my-project", "openbao", 403, MSG_ISS},
        {JWT_SUB_MISMATCH, "app", "my-project", "openbao", 403, "permission denied"},
        {JWT_NO_SUB, "app", "my-project", "openbao", 403, "permission denied"},
        {JWT_NO_SERVICEACCOUNT, "*", "*", "openbao", 500, "could not parse UID from claims"},
        {JWT_NO_SERVICEACCOUNT, "app", "*", "openbao", 403, "service account name not authorized"},
        {JWT_NO_EXP, "app", "my-project", "openbao", 403,
         "invalid expiration time (exp) claim: token has no expiration time"},
        {JWT_WRONG_KEY, "app", "my-project", "openbao", 403, "permission denied"},
        {JWT_HS256_PEM, "app", "my-project", "openbao", 403, "permission denied"},
        {JWT_DUP_K8S, "*", "*", "openbao", 403, "permission denied"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct kms_k8s_sa sa;
        struct kms_err err;
        int rc = run_login(&cases[i], &sa, &err, false);
        if (cases[i].status == 0) {
            if (rc != 0) {
                fail_msg("case %zu refused: %d %s", i, err.status, err.msg);
            }
            assert_string_equal(sa.ns, "my-project");
            assert_string_equal(sa.name, "app");
            assert_string_equal(sa.uid, VEC_UID);
            assert_string_equal(sa.secret_name, "");
        } else {
            if (rc == 0) {
                fail_msg("case %zu accepted", i);
            }
            assert_int_equal(err.status, cases[i].status);
            assert_string_equal(err.msg, cases[i].msg);
        }
    }
}

static void test_k8s_legacy_and_alias(void **state)
{
    (void)state;
    struct kms_k8s_sa sa;
    struct kms_err err;
    json_t *c = claims_of(JWT_LEGACY_EXP);
    assert_int_equal(kms_k8s_sa_from_claims(c, &sa, &err), 0);
    assert_string_equal(sa.ns, "my-project");
    assert_string_equal(sa.name, "app");
    assert_string_equal(sa.uid, VEC_UID);
    assert_string_equal(sa.secret_name, "app-token-x7k2p");
    json_decref(c);
    /* legacy token without exp: upstream takes it, offline kmsd does not */
    struct login_case lc = {JWT_LEGACY_NO_EXP,
                            "app",
                            "my-project",
                            "",
                            403,
                            "invalid expiration time (exp) claim: token has no expiration time"};
    struct kms_keyset *ks = pem_keys();
    const char *names[1] = {"app"};
    const char *nss[1] = {"my-project"};
    struct kms_k8s_login in = {lc.jwt, ks, "", "", names, 1, nss, 1, false, NOW};
    assert_int_equal(kms_k8s_login_validate(&in, &sa, &err), -1);
    assert_string_equal(err.msg, lc.msg);
    in.jwt = JWT_LEGACY_EXP;
    assert_int_equal(kms_k8s_login_validate(&in, &sa, &err), 0);
    kms_keyset_destroy(&ks);
    /* mixed forms: the projected claims are used */
    c = claims_of(JWT_MIXED_FORMS);
    assert_int_equal(kms_k8s_sa_from_claims(c, &sa, &err), 0);
    assert_string_equal(sa.ns, "my-project");
    assert_string_equal(sa.name, "app");
    json_decref(c);
    /* wrong JSON types */
    json_t *j = json_pack("{s:i}", "kubernetes.io", 3);
    assert_int_equal(kms_k8s_sa_from_claims(j, &sa, &err), -1);
    assert_int_equal(err.status, 403);
    json_decref(j);
    j = json_pack("{s:{s:i}}", "kubernetes.io", "namespace", 3);
    assert_int_equal(kms_k8s_sa_from_claims(j, &sa, &err), -1);
    json_decref(j);
    j = json_pack("{s:{s:s, s:[]}}", "kubernetes.io", "namespace", "x", "serviceaccount");
    assert_int_equal(kms_k8s_sa_from_claims(j, &sa, &err), -1);
    json_decref(j);
    j = json_pack("{s:b}", "sub", 1);
    assert_int_equal(kms_k8s_sa_from_claims(j, &sa, &err), -1);
    json_decref(j);
}

static void test_glob(void **state)
{
    (void)state;
    static const struct {
        const char *pat;
        const char *s;
        bool match;
    } t[] = {
        {"*", "", true},
        {"*", "anything", true},
        {"app", "app", true},
        {"app", "app2", false},
        {"app-*", "app-x", true},
        {"app-*", "app-", true},
        {"app-*", "xapp-x", false},
        {"app*", "xapp", false},
        {"*app", "xapp", true},
        {"*app", "appx", false},
        {"*mid*", "a-mid-b", true},
        {"*mid*", "mid", true},
        {"*mid*", "mi-d", false},
        {"", "", true},
        {"", "x", false},
        {"a*b", "axxb", true},
        {"a*b", "axxbc", false},
        {"a*b*c", "abc", true},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        if (kms_glob_match(t[i].pat, t[i].s) != t[i].match) {
            fail_msg("glob %s vs %s", t[i].pat, t[i].s);
        }
    }
}

static void test_cidr(void **state)
{
    (void)state;
    assert_true(kms_cidr_valid("10.0.0.0/8"));
    assert_true(kms_cidr_valid("127.0.0.1"));
    assert_true(kms_cidr_valid("::1/128"));
    assert_false(kms_cidr_valid("10.0.0.0/33"));
    assert_false(kms_cidr_valid("10.0.0/8"));
    assert_false(kms_cidr_valid("/8"));
    assert_false(kms_cidr_valid("10.0.0.0/"));
    assert_true(kms_cidr_contains("10.0.0.0/8", "10.200.3.4"));
    assert_false(kms_cidr_contains("10.0.0.0/8", "11.0.0.1"));
    assert_true(kms_cidr_contains("192.168.1.0/25", "192.168.1.127"));
    assert_false(kms_cidr_contains("192.168.1.0/25", "192.168.1.128"));
    assert_true(kms_cidr_contains("127.0.0.1/32", "127.0.0.1"));
    assert_true(kms_cidr_contains("127.0.0.1", "127.0.0.1"));
    assert_true(kms_cidr_contains("0.0.0.0/0", "8.8.8.8"));
    assert_true(kms_cidr_contains("10.0.0.0/8", "::ffff:10.1.2.3"));
    assert_true(kms_cidr_contains("fd00::/8", "fd12::1"));
    assert_false(kms_cidr_contains("fd00::/8", "10.0.0.1"));
    assert_false(kms_cidr_contains("10.0.0.0/8", "garbage"));
}

/* Attacker-chosen times at the ends of the int64 range: no overflow (UBSan checks it), and
 * the answers are the saturated ones. */
static void test_time_claims_extremes(void **state)
{
    (void)state;
    struct kms_err err;
    struct kms_jwt_expect e = {INT64_MAX - 1, NULL, NULL, 0, true, INT64_MAX, INT64_MAX, INT64_MAX};
    json_t *c = json_pack("{s:I, s:I, s:I}", "exp", (json_int_t)INT64_MAX, "nbf",
                          (json_int_t)INT64_MIN, "iat", (json_int_t)INT64_MIN);
    assert_int_equal(kms_jwt_validate(c, &e, 403, &err), 0);
    json_decref(c);
    /* expired at the bottom of the range with a huge negative leeway: refused, no wrap */
    struct kms_jwt_expect e2 = {0, NULL, NULL, 0, true, INT64_MIN, INT64_MIN, INT64_MIN};
    c = json_pack("{s:I}", "exp", (json_int_t)INT64_MIN);
    assert_int_equal(kms_jwt_validate(c, &e2, 403, &err), -1);
    assert_non_null(strstr(err.msg, "expired"));
    json_decref(c);
    /* a token issued at INT64_MAX is in the future for any sane clock */
    struct kms_jwt_expect e3 = {1700000000, NULL, NULL, 0, false, 60, 60, 60};
    c = json_pack("{s:I}", "iat", (json_int_t)INT64_MAX);
    assert_int_equal(kms_jwt_validate(c, &e3, 403, &err), -1);
    json_decref(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alg_allow_list),
        cmocka_unit_test(test_keyset_pem),
        cmocka_unit_test(test_keyset_jwks),
        cmocka_unit_test(test_keyset_rsa_exponent),
        cmocka_unit_test(test_verify_algorithms),
        cmocka_unit_test(test_refusal_matrix),
        cmocka_unit_test(test_case_folded_claims),
        cmocka_unit_test(test_time_claims),
        cmocka_unit_test(test_iss_aud),
        cmocka_unit_test(test_k8s_login),
        cmocka_unit_test(test_k8s_legacy_and_alias),
        cmocka_unit_test(test_glob),
        cmocka_unit_test(test_cidr),
        cmocka_unit_test(test_time_claims_extremes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
