/*
 * test_login.c - the kubernetes and jwt login methods through the whole pipeline
 * (auth-audit.md §1-§2): config (PEM keys, JWKS inline and from a file, bad keys), roles (every
 * field, bound claims, errors), login success and each refusal with its status and string,
 * renewal of login tokens through the role, policies following the role, and tokens revoked
 * when the method is disabled.
 *
 * JWTs come from login_vectors.h (gen_login_vectors.py): accepted ones expire in 2100, refused
 * ones carry fixed past or far-future times, so nothing depends on when the test runs. The
 * token store's clock is injected for renewal.
 */
#include "tests/engine/auth/auth_util.h"
#include "tests/engine/auth/login_vectors.h"

#include <unistd.h>

/* JSON string literal of `s` (malloc'd). */
static char *jstr(const char *s)
{
    json_t *v = json_string(s);
    char *out = json_dumps(v, JSON_ENCODE_ANY);
    json_decref(v);
    return out;
}

static void enable(struct kt *t, const char *path, const char *type)
{
    char target[128];
    char body[64];
    snprintf(target, sizeof(target), "/v1/sys/auth/%s", path);
    snprintf(body, sizeof(body), "{\"type\":\"%s\"}", type);
    json_decref(at_req(t, 204, "POST", target, body));
}

/* POST with a JSON body built by json_pack-style `j` (stolen). */
static json_t *post_json(struct kt *t, int want, const char *target, json_t *j)
{
    char *text = json_dumps(j, 0);
    json_t *b = at_req(t, want, "POST", target, text);
    free(text);
    json_decref(j);
    return b;
}

/* Unauthenticated login; returns the status and *out. */
static int login(struct kt *t, const char *mount, const char *role, const char *jwt, json_t **out)
{
    char target[128];
    snprintf(target, sizeof(target), "/v1/auth/%s/login", mount);
    json_t *j = json_object();
    if (role != NULL) {
        json_object_set_new(j, "role", json_string(role));
    }
    if (jwt != NULL) {
        json_object_set_new(j, "jwt", json_string(jwt));
    }
    char *text = json_dumps(j, 0);
    int st = kt_call(t, "POST", target, NULL, NULL, text, out);
    free(text);
    json_decref(j);
    return st;
}

static void login_fails(struct kt *t, const char *mount, const char *role, const char *jwt,
                        int want, const char *msg)
{
    json_t *b = NULL;
    int st = login(t, mount, role, jwt, &b);
    if (st != want) {
        fprintf(stderr, "login %s/%s -> %d (want %d): %s\n", mount, role ? role : "", st, want,
                kt_err(b));
    }
    assert_int_equal(st, want);
    at_err_is(b, msg);
    json_decref(b);
}

/* Successful login; the client token is copied to tok (may be NULL). */
static json_t *login_ok(struct kt *t, const char *mount, const char *role, const char *jwt,
                        char *tok)
{
    json_t *b = NULL;
    int st = login(t, mount, role, jwt, &b);
    if (st != 200) {
        fprintf(stderr, "login %s/%s -> %d: %s\n", mount, role ? role : "", st, kt_err(b));
    }
    assert_int_equal(st, 200);
    if (tok != NULL) {
        snprintf(tok, KMS_TOKEN_MAX_LEN, "%s", at_auth_str(b, "client_token"));
    }
    return b;
}

/* kubernetes at auth/kubernetes/ with LV_PEM_RSA and the issuer, role "app". */
static void k8s_setup(struct kt *t, const char *role_extra)
{
    enable(t, "kubernetes", "kubernetes");
    json_decref(post_json(t, 204, "/v1/auth/kubernetes/config",
                          json_pack("{s:s, s:[s], s:s}", "kubernetes_host", "https://k8s:6443",
                                    "pem_keys", LV_PEM_RSA, "issuer", LV_K8S_ISS)));
    char body[1024];
    snprintf(body, sizeof(body),
             "{\"bound_service_account_names\":[\"app\"],"
             "\"bound_service_account_namespaces\":[\"my-project\"],\"audience\":\"openbao\","
             "\"token_policies\":[\"p1\"]%s%s}",
             role_extra ? "," : "", role_extra ? role_extra : "");
    json_decref(at_req(t, 204, "POST", "/v1/auth/kubernetes/role/app", body));
}

static void test_k8s_config(void **state)
{
    struct kt *t = *state;
    enable(t, "kubernetes", "kubernetes");
    json_decref(at_req(t, 404, "GET", "/v1/auth/kubernetes/config", NULL));
    at_fail(t, 400, "POST", "/v1/auth/kubernetes/config", "{\"kubernetes_host\":\"https://k\"}",
            "one of \"pem_keys\", \"jwks\" or \"jwks_file\" must be set: kmsd verifies service "
            "account tokens offline");
    at_fail(t, 400, "POST", "/v1/auth/kubernetes/config", "{\"pem_keys\":[\"not a key\"]}",
            "pem_keys[0]: not a PEM public key or certificate of an RSA (>= 2048 bits, an odd "
            "exponent from 3 to 2^31-1), P-256 or P-384 key");
    at_fail(t, 400, "POST", "/v1/auth/kubernetes/config", "{\"jwks\":\"{}\"}",
            "invalid JWKS: expected an object with a \"keys\" array");
    at_fail(t, 400, "POST", "/v1/auth/kubernetes/config", "{\"jwks\":{\"keys\":[]}}",
            "invalid JWKS: no usable signature key");
    at_fail(t, 400, "POST", "/v1/auth/kubernetes/config",
            "{\"jwks\":{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"},"
            "{\"kty\":\"RSA\",\"use\":\"enc\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}}",
            "invalid JWKS: no usable signature key (2 skipped: kmsd verifies with RSA (>= 2048 "
            "bits) or EC P-256/P-384 public keys meant for signatures; symmetric \"oct\" keys, "
            "encryption keys and other curves are not used)");
    at_fail(t, 400, "POST", "/v1/auth/kubernetes/config", "{\"jwks\":5}",
            "jwks must be a JWKS document (a JSON object or its text)");
    at_fail(t, 400, "POST", "/v1/auth/kubernetes/config", "{\"jwks_file\":\"relative.json\"}",
            "jwks_file must be an absolute path");
    json_decref(at_req(t, 404, "GET", "/v1/auth/kubernetes/config", NULL));

    /* PEM keys (RSA and P-256), with the issuer: an explicit disable_iss_validation warns */
    json_t *b = post_json(t, 200, "/v1/auth/kubernetes/config",
                          json_pack("{s:s, s:s, s:[s,s], s:s, s:b, s:s}", "kubernetes_host",
                                    "https://k8s:6443", "token_reviewer_jwt", "reviewer",
                                    "pem_keys", LV_PEM_RSA, LV_PEM_P256, "issuer", LV_K8S_ISS,
                                    "disable_iss_validation", 1, "kubernetes_ca_cert", "CA"));
    assert_string_equal(at_warning(b, 0), "kmsd always checks \"iss\" when \"issuer\" is set, "
                                          "whatever disable_iss_validation says");
    json_decref(b);
    b = at_req(t, 200, "GET", "/v1/auth/kubernetes/config", NULL);
    assert_string_equal(at_str(b, "kubernetes_host"), "https://k8s:6443");
    assert_string_equal(at_str(b, "kubernetes_ca_cert"), "CA");
    assert_string_equal(at_str(b, "issuer"), LV_K8S_ISS);
    assert_true(json_is_true(kt_data(b, "token_reviewer_jwt_set")));
    assert_null(kt_data(b, "token_reviewer_jwt"));
    assert_int_equal(json_array_size(kt_data(b, "pem_keys")), 2);
    assert_true(json_is_true(kt_data(b, "disable_iss_validation")));
    assert_true(json_is_false(kt_data(b, "disable_local_ca_jwt")));
    json_decref(b);
    /* a JWKS as an object replaces it */
    json_t *jwks = json_loads(LV_JWKS, 0, NULL);
    json_decref(post_json(t, 204, "/v1/auth/kubernetes/config", json_pack("{s:o}", "jwks", jwks)));
    b = at_req(t, 200, "GET", "/v1/auth/kubernetes/config", NULL);
    assert_int_equal(json_array_size(kt_data(b, "pem_keys")), 0);
    assert_true(json_is_false(kt_data(b, "token_reviewer_jwt_set")));
    assert_non_null(strstr(at_str(b, "jwks"), "rsa-1"));
    json_decref(b);
}

static void test_k8s_roles(void **state)
{
    struct kt *t = *state;
    enable(t, "k8s-host", "kubernetes");
    json_decref(at_req(t, 404, "LIST", "/v1/auth/k8s-host/role", NULL));
    const char *prefix = "/v1/auth/k8s-host/role/r";
    static const struct {
        const char *body;
        const char *msg;
    } bad[] = {
        {"{\"bound_service_account_namespaces\":[\"a\"]}",
         "\"bound_service_account_names\" can not be empty"},
        {"{\"bound_service_account_names\":[\"*\",\"a\"],\"bound_service_account_namespaces\":"
         "[\"a\"]}",
         "can not mix \"*\" with values"},
        {"{\"bound_service_account_names\":[\"a\"]}",
         "\"bound_service_account_namespaces\" can not be empty if "
         "\"bound_service_account_namespace_selector\" is not set"},
        {"{\"bound_service_account_names\":[\"a\"],\"bound_service_account_namespaces\":[\"a\","
         "\"*\"]}",
         "can not mix \"*\" with values"},
        {"{\"bound_service_account_names\":[\"a\"],"
         "\"bound_service_account_namespace_selector\":\"{}\"}",
         "\"bound_service_account_namespace_selector\" is not supported: kmsd verifies tokens "
         "offline and cannot read namespace labels; list the namespaces in "
         "\"bound_service_account_namespaces\""},
        {"{\"bound_service_account_names\":[\"a\"],\"bound_service_account_namespaces\":[\"a\"],"
         "\"alias_name_source\":\"pod\"}",
         "invalid alias_name_source pod, must be one of: serviceaccount_uid, "
         "serviceaccount_name"},
        {"{\"bound_service_account_names\":[\"a\"],\"bound_service_account_namespaces\":[\"a\"],"
         "\"token_ttl\":7200,\"token_max_ttl\":3600}",
         "token ttl should not be greater than token max ttl"},
        {"{\"bound_service_account_names\":[\"a\"],\"bound_service_account_namespaces\":[\"a\"],"
         "\"ttl\":60,\"token_ttl\":60}",
         "Cannot specify both \"ttl\" and \"token_ttl\""},
        {"{\"bound_service_account_names\":[\"a\"],\"bound_service_account_namespaces\":[\"a\"],"
         "\"token_num_uses\":-1}",
         "'token_num_uses' cannot be negative"},
        {"{\"bound_service_account_names\":[\"a\"],\"bound_service_account_namespaces\":[\"a\"],"
         "\"token_type\":\"batch\"}",
         "batch tokens are not supported by kmsd; use \"service\""},
        {"{\"bound_service_account_names\":[\"a\"],\"bound_service_account_namespaces\":[\"a\"],"
         "\"token_type\":\"odd\"}",
         "invalid 'token_type' value \"odd\""},
        {"{\"bound_service_account_names\":[\"a\"],\"bound_service_account_namespaces\":[\"a\"],"
         "\"token_bound_cidrs\":[\"10.0.0.0/33\"]}",
         "invalid CIDR \"10.0.0.0/33\" in token_bound_cidrs"},
        {"{\"bound_service_account_names\":[\"a\"],\"bound_service_account_namespaces\":[\"a\"],"
         "\"token_period\":\"800h\"}",
         "token period of '\"800h\"' is greater than the backend's maximum lease TTL of "
         "'\"768h\"'"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        at_fail(t, 400, "POST", prefix, bad[i].body, bad[i].msg);
    }
    json_decref(at_req(t, 404, "GET", prefix, NULL));

    /* every field, names lower-cased; no audience warns */
    json_t *b = at_req(t, 200, "POST", "/v1/auth/k8s-host/role/MyRole",
                       "{\"bound_service_account_names\":[\"app-*\"],"
                       "\"bound_service_account_namespaces\":[\"*\"],"
                       "\"alias_name_source\":\"serviceaccount_name\",\"ttl\":\"1h\","
                       "\"max_ttl\":\"2h\",\"policies\":[\"a\",\"b\"],\"num_uses\":3,"
                       "\"token_explicit_max_ttl\":\"3h\",\"token_no_default_policy\":true,"
                       "\"token_bound_cidrs\":[\"127.0.0.0/8\"],\"token_type\":\"service\"}");
    assert_non_null(strstr(at_warning(b, 0), "This role has no \"audience\""));
    json_decref(b);
    at_fail(t, 400, "POST", "/v1/auth/k8s-host/role/MyRole",
            "{\"max_ttl\":60,\"token_max_ttl\":60}",
            "Cannot specify both \"max_ttl\" and \"token_max_ttl\"");
    b = at_req(t, 200, "GET", "/v1/auth/k8s-host/role/myrole", NULL);
    static const char *const names[] = {"app-*", NULL};
    at_strings_are(kt_data(b, "bound_service_account_names"), names);
    assert_string_equal(at_str(b, "alias_name_source"), "serviceaccount_name");
    assert_string_equal(at_str(b, "bound_service_account_namespace_selector"), "");
    assert_null(kt_data(b, "audience"));
    assert_int_equal(json_integer_value(kt_data(b, "token_ttl")), 3600);
    assert_int_equal(json_integer_value(kt_data(b, "ttl")), 3600); /* legacy name shown */
    assert_int_equal(json_integer_value(kt_data(b, "token_max_ttl")), 7200);
    assert_int_equal(json_integer_value(kt_data(b, "max_ttl")), 7200);
    assert_null(kt_data(b, "explicit_max_ttl")); /* no legacy name */
    assert_int_equal(json_integer_value(kt_data(b, "token_explicit_max_ttl")), 10800);
    assert_int_equal(json_integer_value(kt_data(b, "token_num_uses")), 3);
    assert_int_equal(json_integer_value(kt_data(b, "num_uses")), 3);
    assert_true(json_is_true(kt_data(b, "token_no_default_policy")));
    assert_string_equal(at_str(b, "token_type"), "service");
    static const char *const pols[] = {"a", "b", NULL};
    at_strings_are(kt_data(b, "token_policies"), pols);
    at_strings_are(kt_data(b, "policies"), pols);
    assert_int_equal(json_integer_value(kt_data(b, "token_period")), 0);
    json_decref(b);
    /* an update keeps what it does not name, and an audience silences the warning */
    json_decref(at_req(t, 204, "POST", "/v1/auth/k8s-host/role/myrole",
                       "{\"audience\":\"openbao\",\"token_period\":\"5m\"}"));
    b = at_req(t, 200, "GET", "/v1/auth/k8s-host/role/MYROLE", NULL);
    assert_string_equal(at_str(b, "audience"), "openbao");
    assert_int_equal(json_integer_value(kt_data(b, "token_period")), 300);
    assert_int_equal(json_integer_value(kt_data(b, "token_ttl")), 3600);
    json_decref(b);
    /* a max_ttl above the system's warns */
    b = at_req(t, 200, "POST", "/v1/auth/k8s-host/role/big",
               "{\"bound_service_account_names\":[\"a\"],"
               "\"bound_service_account_namespaces\":[\"a\"],\"audience\":\"x\","
               "\"token_max_ttl\":\"1000h\"}");
    assert_string_equal(at_warning(b, 0),
                        "max_ttl is greater than the system or backend mount's maximum TTL value; "
                        "issued tokens' max TTL value will be truncated");
    json_decref(b);
    b = at_req(t, 200, "LIST", "/v1/auth/k8s-host/role", NULL);
    static const char *const roles[] = {"big", "myrole", NULL};
    at_strings_are(kt_data(b, "keys"), roles);
    json_decref(b);
    json_decref(at_req(t, 204, "DELETE", "/v1/auth/k8s-host/role/big", NULL));
    json_decref(at_req(t, 404, "GET", "/v1/auth/k8s-host/role/big", NULL));
}

static void test_k8s_login_success(void **state)
{
    struct kt *t = *state;
    char tok[KMS_TOKEN_MAX_LEN];
    k8s_setup(t, "\"token_ttl\":\"30m\"");
    json_t *b = login_ok(t, "kubernetes", "app", K8S_GOOD, tok);
    assert_true(strncmp(tok, "s.", 2) == 0);
    static const char *const pols[] = {"default", "p1", NULL};
    at_strings_are(at_auth(b, "policies"), pols);
    at_strings_are(at_auth(b, "token_policies"), pols);
    assert_int_equal(json_integer_value(at_auth(b, "lease_duration")), 1800);
    assert_true(json_is_true(at_auth(b, "renewable")));
    assert_true(json_is_true(at_auth(b, "orphan")));
    assert_string_equal(at_auth_str(b, "token_type"), "service");
    json_t *md = at_auth(b, "metadata");
    assert_int_equal(json_object_size(md), 5);
    assert_string_equal(json_string_value(json_object_get(md, "role")), "app");
    assert_string_equal(json_string_value(json_object_get(md, "service_account_name")), "app");
    assert_string_equal(json_string_value(json_object_get(md, "service_account_namespace")),
                        "my-project");
    assert_string_equal(json_string_value(json_object_get(md, "service_account_secret_name")), "");
    assert_string_equal(json_string_value(json_object_get(md, "service_account_uid")), LV_UID);
    char entity[40];
    snprintf(entity, sizeof(entity), "%s", at_auth_str(b, "entity_id"));
    assert_int_equal(strlen(entity), 36);
    json_decref(b);
    /* the token's identity */
    b = at_as(t, tok, NULL, 200, "GET", "/v1/auth/token/lookup-self", NULL);
    assert_string_equal(at_str(b, "display_name"), "kubernetes-my-project-app");
    assert_string_equal(at_str(b, "path"), "auth/kubernetes/login");
    assert_string_equal(at_str(b, "role"), "app");
    assert_string_equal(at_str(b, "entity_id"), entity);
    json_decref(b);
    /* the same service account keeps its entity; role names are case-insensitive */
    b = login_ok(t, "kubernetes", "APP", K8S_GOOD, NULL);
    assert_string_equal(at_auth_str(b, "entity_id"), entity);
    json_decref(b);
    /* a string aud is accepted (RFC 7519) */
    json_decref(login_ok(t, "kubernetes", "app", K8S_AUD_STRING, NULL));
}

static void test_k8s_login_refusals(void **state)
{
    struct kt *t = *state;
    enable(t, "kubernetes", "kubernetes");
    /* a role but no config */
    json_decref(at_req(t, 204, "POST", "/v1/auth/kubernetes/role/app",
                       "{\"bound_service_account_names\":[\"app\"],"
                       "\"bound_service_account_namespaces\":[\"my-project\"],"
                       "\"audience\":\"openbao\"}"));
    login_fails(t, "kubernetes", "app", K8S_GOOD, 500, "could not load backend configuration");
    json_decref(post_json(t, 204, "/v1/auth/kubernetes/config",
                          json_pack("{s:[s], s:s}", "pem_keys", LV_PEM_RSA, "issuer", LV_K8S_ISS)));
    login_fails(t, "kubernetes", NULL, K8S_GOOD, 400, "missing role");
    login_fails(t, "kubernetes", "app", NULL, 400, "missing jwt");
    login_fails(t, "kubernetes", "nope", K8S_GOOD, 400, "invalid role name \"nope\"");
    login_fails(t, "kubernetes", "a\"b\n", K8S_GOOD, 400, "invalid role name \"a\\\"b\\n\"");
    static const struct {
        const char *jwt;
        int status;
        const char *msg;
    } cases[] = {
        {K8S_WRONG_KEY, 403, "permission denied"},
        {K8S_NONE, 403, "permission denied"},
        {K8S_HS256, 403, "permission denied"},
        {"a.b", 403, "permission denied"},
        {K8S_EXPIRED, 403, "invalid expiration time (exp) claim: token is expired"},
        {K8S_NBF_FUTURE, 403, "invalid not before (nbf) claim: token not yet valid"},
        {K8S_IAT_FUTURE, 403, "invalid issued at (iat) claim: token issued in the future"},
        {K8S_NO_EXP, 403, "invalid expiration time (exp) claim: token has no expiration time"},
        {K8S_ISS_OTHER, 403, "invalid issuer (iss) claim"},
        {K8S_AUD_OTHER, 403,
         "invalid audience (aud) claim: audience claim does not match any expected audience"},
        {K8S_NO_AUD, 403,
         "invalid audience (aud) claim: audience claim does not match any expected audience"},
        {K8S_XAPP, 403, "service account name not authorized"},
        {K8S_OTHER_NS, 403, "namespace not authorized"},
        {K8S_BOTH_WRONG, 403, "service account name not authorized"},
        {K8S_NO_UID, 500, "could not parse UID from claims"},
        {K8S_SUB_MISMATCH, 403, "permission denied"},
        {K8S_LEGACY, 403, "invalid issuer (iss) claim"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        login_fails(t, "kubernetes", "app", cases[i].jwt, cases[i].status, cases[i].msg);
    }
    /* nothing was issued: the good token still logs in */
    json_decref(login_ok(t, "kubernetes", "app", K8S_GOOD, NULL));
}

static void test_k8s_bindings_and_keys(void **state)
{
    struct kt *t = *state;
    enable(t, "kubernetes", "kubernetes");
    /* JWKS with kid selection (ES256), no issuer: the legacy form is accepted */
    char *j = jstr(LV_JWKS);
    char body[4096];
    snprintf(body, sizeof(body), "{\"jwks\":%s}", j);
    free(j);
    json_decref(at_req(t, 204, "POST", "/v1/auth/kubernetes/config", body));
    json_decref(at_req(t, 204, "POST", "/v1/auth/kubernetes/role/globs",
                       "{\"bound_service_account_names\":[\"app*\"],"
                       "\"bound_service_account_namespaces\":[\"my-*\",\"other-ns\"],"
                       "\"audience\":\"openbao\"}"));
    json_decref(login_ok(t, "kubernetes", "globs", K8S_GOOD_ES256, NULL));
    json_decref(login_ok(t, "kubernetes", "globs", K8S_APP_X, NULL));
    json_decref(login_ok(t, "kubernetes", "globs", K8S_OTHER_NS, NULL));
    login_fails(t, "kubernetes", "globs", K8S_XAPP, 403, "service account name not authorized");
    /* a role with no audience accepts any aud (or none: the legacy secret token); alias by
     * name */
    json_decref(at_req(t, 200, "POST", "/v1/auth/kubernetes/role/any",
                       "{\"bound_service_account_names\":[\"*\"],"
                       "\"bound_service_account_namespaces\":[\"*\"],"
                       "\"alias_name_source\":\"serviceaccount_name\"}"));
    json_t *b = login_ok(t, "kubernetes", "any", K8S_LEGACY, NULL);
    assert_string_equal(
        json_string_value(json_object_get(at_auth(b, "metadata"), "service_account_secret_name")),
        "app-token-x7k2p");
    json_decref(b);
    json_decref(login_ok(t, "kubernetes", "any", K8S_AUD_OTHER, NULL));
    json_decref(login_ok(t, "kubernetes", "any", K8S_BOTH_WRONG, NULL));
    /* token_bound_cidrs: the caller (127.0.0.1) must be inside */
    json_decref(at_req(t, 204, "POST", "/v1/auth/kubernetes/role/cidr",
                       "{\"bound_service_account_names\":[\"app\"],"
                       "\"bound_service_account_namespaces\":[\"my-project\"],"
                       "\"audience\":\"openbao\",\"token_bound_cidrs\":[\"10.0.0.0/8\"]}"));
    login_fails(t, "kubernetes", "cidr", K8S_GOOD_ES256, 403, "permission denied");
    json_decref(at_req(t, 204, "POST", "/v1/auth/kubernetes/role/cidr",
                       "{\"token_bound_cidrs\":[\"10.0.0.0/8\",\"127.0.0.0/8\"]}"));
    char tok[KMS_TOKEN_MAX_LEN];
    json_decref(login_ok(t, "kubernetes", "cidr", K8S_GOOD_ES256, tok));
    b = at_as(t, tok, NULL, 200, "GET", "/v1/auth/token/lookup-self", NULL);
    static const char *const cidrs[] = {"10.0.0.0/8", "127.0.0.0/8", NULL};
    at_strings_are(kt_data(b, "bound_cidrs"), cidrs);
    json_decref(b);
    /* a role handing out root is refused at login */
    json_decref(at_req(t, 204, "POST", "/v1/auth/kubernetes/role/rooty",
                       "{\"bound_service_account_names\":[\"app\"],"
                       "\"bound_service_account_namespaces\":[\"my-project\"],"
                       "\"audience\":\"openbao\",\"token_policies\":[\"root\"]}"));
    login_fails(t, "kubernetes", "rooty", K8S_GOOD_ES256, 400,
                "auth methods cannot create root tokens");
}

static void test_k8s_jwks_file(void **state)
{
    struct kt *t = *state;
    char path[160];
    snprintf(path, sizeof(path), "%s/jwks.json", t->dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(LV_JWKS, f);
    fclose(f);
    enable(t, "kubernetes", "kubernetes");
    char body[256];
    snprintf(body, sizeof(body), "{\"jwks_file\":\"%s\"}", path);
    json_decref(at_req(t, 204, "POST", "/v1/auth/kubernetes/config", body));
    json_t *b = at_req(t, 200, "GET", "/v1/auth/kubernetes/config", NULL);
    assert_string_equal(at_str(b, "jwks_file"), path);
    json_decref(b);
    json_decref(at_req(t, 200, "POST", "/v1/auth/kubernetes/role/app",
                       "{\"bound_service_account_names\":[\"app\"],"
                       "\"bound_service_account_namespaces\":[\"my-project\"]}"));
    json_decref(login_ok(t, "kubernetes", "app", K8S_GOOD, NULL));
    /* the file is read at every login: replaced by a file without our keys, logins fail */
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"keys\":[]}", f);
    fclose(f);
    login_fails(t, "kubernetes", "app", K8S_GOOD, 500, "could not load backend configuration");
    /* a file without a JWKS and a missing file get the same answer (no oracle for which
     * host files exist) */
    char want[400];
    snprintf(want, sizeof(want),
             "jwks_file %s is not a readable regular file of at most 1 MiB holding a JWKS", path);
    b = at_req(t, 400, "POST", "/v1/auth/kubernetes/config", body);
    at_err_is(b, want);
    json_decref(b);
    unlink(path);
    snprintf(body, sizeof(body), "{\"jwks_file\":\"%s\"}", path);
    b = at_req(t, 400, "POST", "/v1/auth/kubernetes/config", body);
    at_err_is(b, want);
    json_decref(b);
    /* organization namespaces may not name host files */
    json_t *ns = NULL;
    int st = kt_call(t, "POST", "/v1/sys/namespaces/org1", "root", NULL, "{}", &ns);
    assert_true(st == 200 || st == 204);
    json_decref(ns);
    json_decref(
        kt_ok(t, 204, "POST", "/v1/sys/auth/kubernetes", "org1", "{\"type\":\"kubernetes\"}"));
    b = kt_ok(t, 400, "POST", "/v1/auth/kubernetes/config", "org1", body);
    at_err_is(b, "jwks_file may only be set by a method mounted in the root namespace; use jwks "
                 "(the document itself) in an organization namespace");
    json_decref(b);
    json_decref(kt_ok(t, 204, "POST", "/v1/sys/auth/jwt", "org1", "{\"type\":\"jwt\"}"));
    b = kt_ok(t, 400, "POST", "/v1/auth/jwt/config", "org1", body);
    at_err_is(b, "jwks_file may only be set by a method mounted in the root namespace; use jwks "
                 "(the document itself) in an organization namespace");
    json_decref(b);
}

static void test_k8s_renewal_follows_role(void **state)
{
    struct kt *t = *state;
    char tok[KMS_TOKEN_MAX_LEN];
    at_clock_install(t);
    k8s_setup(t, "\"token_ttl\":\"1h\",\"token_max_ttl\":\"2h\"");
    json_t *b = login_ok(t, "kubernetes", "app", K8S_GOOD, tok);
    assert_int_equal(json_integer_value(at_auth(b, "lease_duration")), 3600);
    json_decref(b);
    /* the role's current ttl applies at renewal */
    json_decref(at_req(t, 204, "POST", "/v1/auth/kubernetes/role/app", "{\"token_ttl\":\"10m\"}"));
    at_clock_ms += 600 * 1000;
    b = at_as(t, tok, NULL, 200, "POST", "/v1/auth/token/renew-self", "{}");
    assert_int_equal(json_integer_value(at_auth(b, "lease_duration")), 600);
    json_decref(b);
    /* an increment past the role's max is capped */
    at_clock_ms += 500 * 1000;
    b = at_as(t, tok, NULL, 200, "POST", "/v1/auth/token/renew-self", "{\"increment\":\"2h\"}");
    assert_int_equal(json_integer_value(at_auth(b, "lease_duration")), 7200 - 1100);
    assert_non_null(strstr(at_warning(b, 0), "exceeded the effective max_ttl"));
    json_decref(b);
    /* a periodic role renews to its period */
    json_decref(at_req(t, 204, "POST", "/v1/auth/kubernetes/role/app", "{\"token_period\":300}"));
    at_clock_ms += 100 * 1000;
    b = at_as(t, tok, NULL, 200, "POST", "/v1/auth/token/renew-self", "{}");
    assert_int_equal(json_integer_value(at_auth(b, "lease_duration")), 300);
    json_decref(b);
    /* policies follow the role for the next login */
    json_decref(at_req(t, 204, "POST", "/v1/auth/kubernetes/role/app",
                       "{\"token_policies\":[\"p2\",\"P3\"],\"token_period\":0}"));
    b = login_ok(t, "kubernetes", "app", K8S_GOOD, NULL);
    static const char *const pols[] = {"default", "p2", "p3", NULL};
    at_strings_are(at_auth(b, "policies"), pols);
    json_decref(b);
    json_decref(at_req(t, 204, "POST", "/v1/auth/kubernetes/role/app",
                       "{\"token_no_default_policy\":true}"));
    b = login_ok(t, "kubernetes", "app", K8S_GOOD, NULL);
    static const char *const nodef[] = {"p2", "p3", NULL};
    at_strings_are(at_auth(b, "policies"), nodef);
    json_decref(b);
    /* renewal by accessor goes through the role too */
    b = at_as(t, tok, NULL, 200, "GET", "/v1/auth/token/lookup-self", NULL);
    char body[128];
    snprintf(body, sizeof(body), "{\"accessor\":\"%s\"}", at_str(b, "accessor"));
    json_decref(b);
    b = at_req(t, 200, "POST", "/v1/auth/token/renew-accessor", body);
    assert_int_equal(json_integer_value(at_auth(b, "lease_duration")), 600);
    json_decref(b);
    /* role gone: renewal refused */
    json_decref(at_req(t, 204, "DELETE", "/v1/auth/kubernetes/role/app", NULL));
    b = at_as(t, tok, NULL, 400, "POST", "/v1/auth/token/renew-self", "{}");
    at_err_is(b, "failed to renew entry: role app does not exist during renewal");
    json_decref(b);
}

static void test_disable_revokes_tokens(void **state)
{
    struct kt *t = *state;
    char tok[KMS_TOKEN_MAX_LEN];
    char other[KMS_TOKEN_MAX_LEN];
    k8s_setup(t, NULL);
    json_decref(login_ok(t, "kubernetes", "app", K8S_GOOD, tok));
    json_t *b = at_req(t, 200, "POST", "/v1/auth/token/create", "{\"policies\":[\"x\"]}");
    snprintf(other, sizeof(other), "%s", at_auth_str(b, "client_token"));
    json_decref(b);
    json_decref(at_as(t, tok, NULL, 200, "GET", "/v1/auth/token/lookup-self", NULL));
    json_decref(at_req(t, 204, "DELETE", "/v1/sys/auth/kubernetes", NULL));
    b = at_as(t, tok, NULL, 403, "GET", "/v1/auth/token/lookup-self", NULL);
    at_err_is(b, "permission denied");
    json_decref(b);
    /* other tokens stay */
    json_decref(at_as(t, other, NULL, 200, "GET", "/v1/auth/token/lookup-self", NULL));
    /* re-enabled, the method starts empty */
    enable(t, "kubernetes", "kubernetes");
    json_decref(at_req(t, 404, "GET", "/v1/auth/kubernetes/config", NULL));
    json_decref(at_req(t, 404, "GET", "/v1/auth/kubernetes/role/app", NULL));
}

/* ---- jwt --------------------------------------------------------------------------------- */

static void jwt_setup(struct kt *t, const char *role_body)
{
    enable(t, "jwt", "jwt");
    json_decref(post_json(t, 204, "/v1/auth/jwt/config",
                          json_pack("{s:[s], s:s}", "jwt_validation_pubkeys", LV_PEM_RSA,
                                    "bound_issuer", LV_JWT_ISS)));
    json_decref(at_req(t, 204, "POST", "/v1/auth/jwt/role/dev", role_body));
}

static void test_jwt_config(void **state)
{
    struct kt *t = *state;
    enable(t, "jwt", "jwt");
    json_decref(at_req(t, 404, "GET", "/v1/auth/jwt/config", NULL));
    const char *one = "exactly one of 'jwt_validation_pubkeys', 'jwks' or 'jwks_file' must be set";
    at_fail(t, 400, "POST", "/v1/auth/jwt/config", "{}", one);
    json_t *j = json_pack("{s:[s], s:s}", "jwt_validation_pubkeys", LV_PEM_RSA, "jwks", LV_JWKS);
    json_t *b = post_json(t, 400, "/v1/auth/jwt/config", j);
    at_err_is(b, one);
    json_decref(b);
    at_fail(t, 400, "POST", "/v1/auth/jwt/config", "{\"jwks_url\":\"https://x/jwks\"}",
            "\"jwks_url\" is not supported: kmsd verifies tokens offline; use "
            "\"jwt_validation_pubkeys\", \"jwks\" or \"jwks_file\"");
    at_fail(t, 400, "POST", "/v1/auth/jwt/config", "{\"oidc_discovery_url\":\"https://x\"}",
            "\"oidc_discovery_url\" is not supported: kmsd verifies tokens offline; use "
            "\"jwt_validation_pubkeys\", \"jwks\" or \"jwks_file\"");
    at_fail(t, 400, "POST", "/v1/auth/jwt/config", "{\"jwt_validation_pubkeys\":[\"junk\"]}",
            "pem_keys[0]: not a PEM public key or certificate of an RSA (>= 2048 bits, an odd "
            "exponent from 3 to 2^31-1), P-256 or P-384 key");
    j = json_pack("{s:[s], s:[s]}", "jwt_validation_pubkeys", LV_PEM_RSA, "jwt_supported_algs",
                  "HS256");
    b = post_json(t, 400, "/v1/auth/jwt/config", j);
    at_err_is(b, "invalid supported algorithm \"HS256\": kmsd accepts RS256, RS384, RS512, PS256, "
                 "PS384, PS512, ES256 and ES384");
    json_decref(b);
    /* empty unsupported settings are tolerated (clients send them blank) */
    j = json_pack("{s:[s], s:s, s:s, s:s, s:[s,s]}", "jwt_validation_pubkeys", LV_PEM_RSA,
                  "jwks_url", "", "bound_issuer", LV_JWT_ISS, "default_role", "dev",
                  "jwt_supported_algs", "RS256", "ES256");
    json_decref(post_json(t, 204, "/v1/auth/jwt/config", j));
    b = at_req(t, 200, "GET", "/v1/auth/jwt/config", NULL);
    assert_string_equal(at_str(b, "bound_issuer"), LV_JWT_ISS);
    assert_string_equal(at_str(b, "default_role"), "dev");
    assert_string_equal(at_str(b, "jwks_url"), "");
    assert_string_equal(at_str(b, "oidc_discovery_url"), "");
    assert_int_equal(json_array_size(kt_data(b, "jwt_validation_pubkeys")), 1);
    assert_int_equal(json_array_size(kt_data(b, "jwt_supported_algs")), 2);
    json_decref(b);
    /* a JWKS as text */
    char *jw = jstr(LV_JWKS);
    char body[4096];
    snprintf(body, sizeof(body), "{\"jwks\":%s}", jw);
    free(jw);
    json_decref(at_req(t, 204, "POST", "/v1/auth/jwt/config", body));
    b = at_req(t, 200, "GET", "/v1/auth/jwt/config", NULL);
    assert_int_equal(json_array_size(kt_data(b, "jwt_validation_pubkeys")), 0);
    assert_non_null(strstr(at_str(b, "jwks"), "ec-1"));
    json_decref(b);
}

static void test_jwt_roles(void **state)
{
    struct kt *t = *state;
    enable(t, "jwt", "jwt");
    static const struct {
        const char *body;
        const char *msg;
    } bad[] = {
        {"{\"role_type\":\"oidc\",\"user_claim\":\"sub\",\"bound_subject\":\"x\"}",
         "invalid 'role_type': \"oidc\"; kmsd supports only \"jwt\" roles"},
        {"{\"bound_subject\":\"x\"}", "a user claim must be defined on the role"},
        {"{\"user_claim\":\"sub\"}",
         "must have at least one bound constraint when creating/updating a role"},
        {"{\"user_claim\":\"sub\",\"bound_subject\":\"x\",\"bound_claims_type\":\"regex\"}",
         "invalid 'bound_claims_type': regex"},
        {"{\"user_claim\":\"sub\",\"bound_claims\":{\"a\":1}}",
         "bound_claims: values must be strings or lists of strings"},
        {"{\"user_claim\":\"sub\",\"bound_subject\":\"x\",\"claim_mappings\":{\"a\":[\"b\"]}}",
         "claim_mappings: values must be strings"},
        {"{\"user_claim\":\"sub\",\"bound_subject\":\"x\",\"claim_mappings\":{\"r\":\"role\"}}",
         "metadata key \"role\" is reserved and may not be a mapping destination"},
        {"{\"user_claim\":\"sub\",\"bound_subject\":\"x\",\"claim_mappings\":{\"a\":\"m\","
         "\"b\":\"n\",\"c\":\"m\"}}",
         "multiple keys are mapped to metadata key \"m\""},
        {"{\"user_claim\":\"sub\",\"bound_subject\":\"x\",\"expiration_leeway\":-2}",
         "expiration_leeway must be -1 (off), 0 (default) or a positive duration"},
        {"{\"user_claim\":\"sub\",\"bound_subject\":\"x\",\"token_ttl\":-1}",
         "token durations cannot be negative"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        at_fail(t, 400, "POST", "/v1/auth/jwt/role/r", bad[i].body, bad[i].msg);
    }
    json_decref(
        at_req(t, 204, "POST", "/v1/auth/jwt/role/Full",
               "{\"role_type\":\"jwt\",\"user_claim\":\"email\",\"bound_subject\":\"user-1\","
               "\"bound_audiences\":[\"kmsd\"],\"bound_claims\":{\"env\":\"prod-*\","
               "\"/org/team\":[\"platform\",\"infra\"]},\"bound_claims_type\":\"glob\","
               "\"groups_claim\":\"groups\",\"claim_mappings\":{\"email\":\"mail\"},"
               "\"expiration_leeway\":\"30s\",\"not_before_leeway\":-1,"
               "\"clock_skew_leeway\":10,\"token_policies\":[\"dev\"],"
               "\"token_ttl\":\"15m\"}"));
    json_t *b = at_req(t, 200, "GET", "/v1/auth/jwt/role/full", NULL);
    assert_string_equal(at_str(b, "role_type"), "jwt");
    assert_string_equal(at_str(b, "user_claim"), "email");
    assert_string_equal(at_str(b, "bound_subject"), "user-1");
    assert_string_equal(at_str(b, "bound_claims_type"), "glob");
    assert_string_equal(at_str(b, "groups_claim"), "groups");
    assert_string_equal(json_string_value(json_object_get(kt_data(b, "bound_claims"), "env")),
                        "prod-*");
    assert_string_equal(json_string_value(json_object_get(kt_data(b, "claim_mappings"), "email")),
                        "mail");
    assert_int_equal(json_integer_value(kt_data(b, "expiration_leeway")), 30);
    assert_int_equal(json_integer_value(kt_data(b, "not_before_leeway")), -1);
    assert_int_equal(json_integer_value(kt_data(b, "clock_skew_leeway")), 10);
    assert_int_equal(json_integer_value(kt_data(b, "token_ttl")), 900);
    static const char *const auds[] = {"kmsd", NULL};
    at_strings_are(kt_data(b, "bound_audiences"), auds);
    json_decref(b);
    /* an update keeps the rest */
    json_decref(at_req(t, 204, "POST", "/v1/auth/jwt/role/full", "{\"bound_subject\":\"user-2\"}"));
    b = at_req(t, 200, "GET", "/v1/auth/jwt/role/full", NULL);
    assert_string_equal(at_str(b, "bound_subject"), "user-2");
    assert_string_equal(at_str(b, "user_claim"), "email");
    json_decref(b);
    b = at_req(t, 200, "LIST", "/v1/auth/jwt/role", NULL);
    static const char *const roles[] = {"full", NULL};
    at_strings_are(kt_data(b, "keys"), roles);
    json_decref(b);
    json_decref(at_req(t, 204, "DELETE", "/v1/auth/jwt/role/full", NULL));
    json_decref(at_req(t, 404, "GET", "/v1/auth/jwt/role/full", NULL));
    json_decref(at_req(t, 404, "LIST", "/v1/auth/jwt/role", NULL));
}

static void test_jwt_login_success(void **state)
{
    struct kt *t = *state;
    char tok[KMS_TOKEN_MAX_LEN];
    jwt_setup(t, "{\"user_claim\":\"sub\",\"bound_audiences\":[\"kmsd\"],"
                 "\"bound_claims\":{\"env\":\"prod-*\",\"/org/team\":\"platform\","
                 "\"groups\":\"green\"},\"bound_claims_type\":\"glob\","
                 "\"groups_claim\":\"groups\",\"claim_mappings\":{\"email\":\"mail\","
                 "\"/org/level\":\"level\",\"absent\":\"x\"},\"token_policies\":[\"dev\"],"
                 "\"token_ttl\":600}");
    json_t *b = login_ok(t, "jwt", "dev", OIDC_GOOD, tok);
    static const char *const pols[] = {"default", "dev", NULL};
    at_strings_are(at_auth(b, "policies"), pols);
    assert_int_equal(json_integer_value(at_auth(b, "lease_duration")), 600);
    json_t *md = at_auth(b, "metadata");
    assert_string_equal(json_string_value(json_object_get(md, "role")), "dev");
    assert_string_equal(json_string_value(json_object_get(md, "mail")), "user1@example.com");
    assert_string_equal(json_string_value(json_object_get(md, "level")), "3");
    assert_null(json_object_get(md, "x"));
    json_decref(b);
    b = at_as(t, tok, NULL, 200, "GET", "/v1/auth/token/lookup-self", NULL);
    assert_string_equal(at_str(b, "display_name"), "jwt-user-1");
    assert_string_equal(at_str(b, "path"), "auth/jwt/login");
    json_decref(b);
    /* the default role when none is named; an exact (string) bound claim */
    json_decref(post_json(
        t, 204, "/v1/auth/jwt/config",
        json_pack("{s:[s], s:s}", "jwt_validation_pubkeys", LV_PEM_RSA, "default_role", "dev")));
    json_decref(login_ok(t, "jwt", NULL, OIDC_GOOD, NULL));
    json_decref(at_req(t, 204, "POST", "/v1/auth/jwt/role/exact",
                       "{\"user_claim\":\"email\",\"bound_audiences\":[\"kmsd\"],"
                       "\"bound_claims\":{\"env\":[\"prod-us\",\"prod-eu\"]}}"));
    b = login_ok(t, "jwt", "exact", OIDC_GOOD, tok);
    json_decref(b);
    b = at_as(t, tok, NULL, 200, "GET", "/v1/auth/token/lookup-self", NULL);
    assert_string_equal(at_str(b, "display_name"), "jwt-user1@example.com");
    json_decref(b);
    /* JWKS keys, with supported algs narrowing what is accepted */
    char *jw = jstr(LV_JWKS);
    char body[4096];
    snprintf(body, sizeof(body), "{\"jwks\":%s,\"jwt_supported_algs\":[\"ES256\"]}", jw);
    free(jw);
    json_decref(at_req(t, 204, "POST", "/v1/auth/jwt/config", body));
    json_decref(login_ok(t, "jwt", "exact", OIDC_GOOD_ES256, NULL));
    login_fails(t, "jwt", "exact", OIDC_GOOD, 400,
                "error validating token: invalid algorithm (alg) header parameter: token signed "
                "with unexpected algorithm");
}

static void test_jwt_login_refusals(void **state)
{
    struct kt *t = *state;
    enable(t, "jwt", "jwt");
    login_fails(t, "jwt", "dev", OIDC_GOOD, 400, "could not load configuration");
    json_decref(post_json(t, 204, "/v1/auth/jwt/config",
                          json_pack("{s:[s], s:s}", "jwt_validation_pubkeys", LV_PEM_RSA,
                                    "bound_issuer", LV_JWT_ISS)));
    json_decref(at_req(t, 204, "POST", "/v1/auth/jwt/role/dev",
                       "{\"user_claim\":\"sub\",\"bound_audiences\":[\"kmsd\"],"
                       "\"bound_subject\":\"user-1\",\"bound_claims\":{\"env\":\"prod-eu\"}}"));
    login_fails(t, "jwt", NULL, OIDC_GOOD, 400, "missing role");
    login_fails(t, "jwt", "nope", OIDC_GOOD, 400, "role \"nope\" could not be found");
    login_fails(t, "jwt", "dev", NULL, 400, "missing token");
    const char *sig = "error validating token: failed to verify id token signature";
    static const struct {
        const char *jwt;
        const char *msg;
    } cases[] = {
        {OIDC_WRONG_KEY, NULL},
        {OIDC_NONE, NULL},
        {OIDC_HS256, NULL},
        {"x.y.z", NULL},
        {OIDC_EXPIRED, "error validating token: invalid expiration time (exp) claim: token is "
                       "expired"},
        {OIDC_NBF_FUTURE, "error validating token: invalid not before (nbf) claim: token not yet "
                          "valid"},
        {OIDC_NO_EXP, "error validating token: invalid expiration time (exp) claim: token has no "
                      "expiration time"},
        {OIDC_ISS_OTHER, "error validating token: invalid issuer (iss) claim"},
        {OIDC_AUD_OTHER, "error validating token: invalid audience (aud) claim: audience claim "
                         "does not match any expected audience"},
        {OIDC_SUB_OTHER, "error validating token: invalid subject (sub) claim"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        login_fails(t, "jwt", "dev", cases[i].jwt, 400, cases[i].msg ? cases[i].msg : sig);
    }
    /* claim rules of the role */
    static const struct {
        const char *role;
        const char *msg;
    } roles[] = {
        {"{\"user_claim\":\"sub\",\"bound_subject\":\"user-1\"}",
         "audience claim found in JWT but no audiences bound to the role"},
        {"{\"user_claim\":\"nope\",\"bound_audiences\":[\"kmsd\"]}",
         "claim \"nope\" not found in token"},
        {"{\"user_claim\":\"groups\",\"bound_audiences\":[\"kmsd\"]}",
         "claim \"groups\" could not be converted to string"},
        {"{\"user_claim\":\"sub\",\"bound_audiences\":[\"kmsd\"],\"groups_claim\":\"teams\"}",
         "teams claim not found in token"},
        {"{\"user_claim\":\"sub\",\"bound_audiences\":[\"kmsd\"],\"groups_claim\":\"org\"}",
         "org claim could not be converted to a list of strings"},
        {"{\"user_claim\":\"sub\",\"bound_audiences\":[\"kmsd\"],\"bound_claims\":{\"env\":"
         "\"prod-us\"}}",
         "error validating claims: claim \"env\" does not match any associated bound claim "
         "values"},
        {"{\"user_claim\":\"sub\",\"bound_audiences\":[\"kmsd\"],\"bound_claims\":{\"env\":"
         "\"prod-*\"}}",
         "error validating claims: claim \"env\" does not match any associated bound claim "
         "values"},
        {"{\"user_claim\":\"sub\",\"bound_audiences\":[\"kmsd\"],\"bound_claims\":{\"tier\":"
         "\"gold\"}}",
         "error validating claims: claim \"tier\" is missing"},
        {"{\"user_claim\":\"sub\",\"bound_audiences\":[\"kmsd\"],"
         "\"token_bound_cidrs\":[\"192.168.0.0/16\"]}",
         "permission denied"},
    };
    for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++) {
        char target[64];
        snprintf(target, sizeof(target), "/v1/auth/jwt/role/r%zu", i);
        json_decref(at_req(t, 204, "POST", target, roles[i].role));
        snprintf(target, sizeof(target), "r%zu", i);
        login_fails(t, "jwt", target, OIDC_GOOD,
                    strcmp(roles[i].msg, "permission denied") == 0 ? 403 : 400, roles[i].msg);
    }
    /* the token without aud passes a role without bound audiences */
    json_decref(at_req(t, 204, "POST", "/v1/auth/jwt/role/noaud",
                       "{\"user_claim\":\"sub\",\"bound_subject\":\"user-1\"}"));
    json_decref(login_ok(t, "jwt", "noaud", OIDC_NO_AUD, NULL));
    /* leeways: -1 turns the expiry leeway off, a huge one lets an old token in */
    json_decref(at_req(t, 204, "POST", "/v1/auth/jwt/role/lenient",
                       "{\"user_claim\":\"sub\",\"bound_audiences\":[\"kmsd\"],"
                       "\"expiration_leeway\":\"1000000h\"}"));
    json_decref(login_ok(t, "jwt", "lenient", OIDC_EXPIRED, NULL));
}

static void test_jwt_renewal_and_disable(void **state)
{
    struct kt *t = *state;
    char tok[KMS_TOKEN_MAX_LEN];
    at_clock_install(t);
    jwt_setup(t, "{\"user_claim\":\"sub\",\"bound_audiences\":[\"kmsd\"],\"token_ttl\":\"20m\","
                 "\"token_policies\":[\"a\"]}");
    json_decref(login_ok(t, "jwt", "dev", OIDC_GOOD, tok));
    at_clock_ms += 60 * 1000;
    json_decref(at_req(t, 204, "POST", "/v1/auth/jwt/role/dev", "{\"token_ttl\":\"5m\"}"));
    json_t *b = at_as(t, tok, NULL, 200, "POST", "/v1/auth/token/renew-self", "{}");
    assert_int_equal(json_integer_value(at_auth(b, "lease_duration")), 300);
    json_decref(b);
    /* past the lease, the token is gone */
    at_clock_ms += 301 * 1000;
    json_decref(at_as(t, tok, NULL, 403, "GET", "/v1/auth/token/lookup-self", NULL));
    json_decref(login_ok(t, "jwt", "dev", OIDC_GOOD, tok));
    json_decref(at_req(t, 204, "DELETE", "/v1/sys/auth/jwt", NULL));
    json_decref(at_as(t, tok, NULL, 403, "GET", "/v1/auth/token/lookup-self", NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_k8s_config, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_k8s_roles, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_k8s_login_success, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_k8s_login_refusals, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_k8s_bindings_and_keys, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_k8s_jwks_file, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_k8s_renewal_follows_role, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_disable_revokes_tokens, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_jwt_config, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_jwt_roles, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_jwt_login_success, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_jwt_login_refusals, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_jwt_renewal_and_disable, kt_setup, kt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
