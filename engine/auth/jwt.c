#include "engine/auth/login.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- jwt --------------------------------------------------------------------------------- */

static const char *const jwt_unsupported[] = {
    "jwks_url",   "jwks_ca_pem",     "oidc_discovery_url", "oidc_discovery_ca_pem",
    "jwks_pairs", "provider_config", "oidc_client_id",     "oidc_client_secret",
};

static int jwt_config_write(struct kms_ctx *c)
{
    char key[KMS_PATH_MAX + 64];
    struct kms_keyset *ks = NULL;
    char *jwks = NULL;
    json_t *rec = NULL;
    const char *issuer = "";
    const char *jwks_file = "";
    const char *default_role = "";
    int rc = -1;

    for (size_t i = 0; i < sizeof(jwt_unsupported) / sizeof(jwt_unsupported[0]); i++) {
        json_t *v = kms_param(c, jwt_unsupported[i]);
        if (v != NULL && !(json_is_string(v) && json_string_length(v) == 0)) {
            KMS_FAIL(c, 400,
                     "\"%s\" is not supported: kmsd verifies tokens offline; use "
                     "\"jwt_validation_pubkeys\", \"jwks\" or \"jwks_file\"",
                     jwt_unsupported[i]);
            goto out;
        }
    }
    (void)kms_param_str(c, "bound_issuer", &issuer);
    (void)kms_param_str(c, "jwks_file", &jwks_file);
    if (jwks_file[0] != '\0' && !kms_login_may_name_files(c)) {
        return KMS_FAIL(c, 400,
                        "jwks_file may only be set by a method mounted in the root namespace; "
                        "use jwks (the document itself) in an organization namespace");
    }
    (void)kms_param_str(c, "default_role", &default_role);
    json_t *pems = kms_param(c, "jwt_validation_pubkeys");
    if (pems != NULL && !kms_login_all_strings(pems)) {
        KMS_FAIL(c, 400, "jwt_validation_pubkeys must be a list of PEM strings");
        goto out;
    }
    if (kms_login_jwks_text(c, &jwks) != 0) {
        goto out;
    }
    int sources =
        (json_array_size(pems) > 0) + (jwks != NULL && jwks[0] != '\0') + (jwks_file[0] != '\0');
    if (sources != 1) {
        KMS_FAIL(c, 400,
                 "exactly one of 'jwt_validation_pubkeys', 'jwks' or 'jwks_file' must be set");
        goto out;
    }
    json_t *algs = kms_param(c, "jwt_supported_algs");
    if (algs != NULL) {
        size_t i;
        json_t *a;
        enum kms_jws_alg alg;
        if (!kms_login_all_strings(algs)) {
            KMS_FAIL(c, 400, "jwt_supported_algs must be a list of strings");
            goto out;
        }
        json_array_foreach(algs, i, a)
        {
            if (kms_jws_alg_parse(json_string_value(a), &alg) != 0) {
                KMS_FAIL(c, 400,
                         "invalid supported algorithm \"%s\": kmsd accepts RS256, RS384, RS512, "
                         "PS256, PS384, PS512, ES256 and ES384",
                         json_string_value(a));
                goto out;
            }
        }
    }
    if (kms_keyset_build(pems, jwks, jwks_file, &ks, &c->err) != 0) {
        goto out;
    }
    rec = json_pack("{s:o, s:s, s:s, s:s, s:s, s:o}", "jwt_validation_pubkeys",
                    pems ? json_incref(pems) : json_array(), "jwks", jwks ? jwks : "", "jwks_file",
                    jwks_file, "bound_issuer", issuer, "default_role", default_role,
                    "jwt_supported_algs", algs ? json_incref(algs) : json_array());
    if (rec == NULL || kms_login_record_key(&c->mount, "config", key, sizeof(key)) != 0 ||
        kms_login_rec_put(c->api, key, rec) != 0) {
        KMS_FAILW(c, 500, "internal error");
        goto out;
    }
    rc = 0;
out:
    kms_keyset_destroy(&ks);
    free(jwks);
    json_decref(rec);
    return rc;
}

static int jwt_config_read(struct kms_ctx *c)
{
    char key[KMS_PATH_MAX + 64];
    json_t *rec = NULL;

    if (kms_login_record_key(&c->mount, "config", key, sizeof(key)) != 0) {
        return KMS_FAILW(c, 500, "internal error");
    }
    int g = kms_login_rec_get(c->api, key, &rec);
    if (g == KMS_STORAGE_NOTFOUND) {
        return kms_fail_notfound(c);
    }
    if (g != 0) {
        return KMS_FAILW(c, 500, "internal error");
    }
    c->data = json_pack(
        "{s:O?, s:O?, s:O?, s:O?, s:O?, s:O?, s:s, s:s, s:s}", "jwt_validation_pubkeys",
        json_object_get(rec, "jwt_validation_pubkeys"), "jwks", json_object_get(rec, "jwks"),
        "jwks_file", json_object_get(rec, "jwks_file"), "bound_issuer",
        json_object_get(rec, "bound_issuer"), "default_role", json_object_get(rec, "default_role"),
        "jwt_supported_algs", json_object_get(rec, "jwt_supported_algs"), "jwks_url", "",
        "oidc_discovery_url", "", "jwks_ca_pem", "");
    json_decref(rec);
    return c->data ? 0 : KMS_FAILW(c, 500, "internal error");
}

/* claim_mappings' destinations: not the metadata key "role" (the login sets it), and each
 * at most once (OpenBao's path_role.go refuses both). */
static int check_claim_mappings(struct kms_ctx *c, json_t *m)
{
    const char *k;
    json_t *v;
    json_object_foreach(m, k, v)
    {
        const char *dest = json_string_value(v);
        if (strcmp(dest, "role") == 0) {
            return KMS_FAIL(c, 400,
                            "metadata key \"role\" is reserved and may not be a mapping "
                            "destination");
        }
        const char *k2;
        json_t *v2;
        json_object_foreach(m, k2, v2)
        {
            if (k2 == k) {
                break; /* only the keys before this one */
            }
            if (strcmp(json_string_value(v2), dest) == 0) {
                return KMS_FAIL(c, 400, "multiple keys are mapped to metadata key \"%s\"", dest);
            }
        }
    }
    return 0;
}

static int jwt_role_write(struct kms_ctx *c)
{
    char key[KMS_PATH_MAX + 64];
    json_t *role = NULL;
    bool create = c->op == KMS_OP_CREATE;
    int rc = -1;

    if (kms_login_role_key(c, key, sizeof(key)) != 0) {
        return KMS_FAIL(c, 400, "missing role name");
    }
    int g = kms_login_rec_get(c->api, key, &role);
    if (g < 0) {
        return KMS_FAILW(c, 500, "internal error");
    }
    if (g == KMS_STORAGE_NOTFOUND) {
        if (!create) {
            return KMS_FAILW(c, 500, "role entry not found during update operation");
        }
        role = json_object();
    }
    const char *rt = NULL;
    if (kms_param_str(c, "role_type", &rt) && rt[0] != '\0' && strcmp(rt, "jwt") != 0) {
        KMS_FAIL(c, 400, "invalid 'role_type': \"%s\"; kmsd supports only \"jwt\" roles", rt);
        goto out;
    }
    json_object_set_new(role, "role_type", json_string("jwt"));
    if (kms_login_token_fields_apply(c, role, g == KMS_STORAGE_NOTFOUND) != 0) {
        goto out;
    }
    static const char *const strs[] = {"bound_subject", "user_claim", "groups_claim",
                                       "bound_claims_type"};
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        const char *v = NULL;
        if (kms_param_str(c, strs[i], &v)) {
            json_object_set_new(role, strs[i], json_string(v));
        } else if (json_object_get(role, strs[i]) == NULL) {
            json_object_set_new(
                role, strs[i],
                json_string(strcmp(strs[i], "bound_claims_type") == 0 ? "string" : ""));
        }
    }
    json_t *auds = kms_param(c, "bound_audiences");
    if (auds != NULL) {
        if (!kms_login_all_strings(auds)) {
            KMS_FAIL(c, 400, "bound_audiences must be a list of strings");
            goto out;
        }
        json_object_set(role, "bound_audiences", auds);
    } else if (json_object_get(role, "bound_audiences") == NULL) {
        json_object_set_new(role, "bound_audiences", json_array());
    }
    static const char *const maps[] = {"bound_claims", "claim_mappings"};
    for (size_t i = 0; i < 2; i++) {
        json_t *m = kms_param(c, maps[i]);
        if (m != NULL) {
            const char *k;
            json_t *v;
            json_object_foreach(m, k, v)
            {
                bool ok = json_is_string(v) || (i == 0 && kms_login_all_strings(v));
                if (!ok) {
                    KMS_FAIL(c, 400, "%s: values must be strings%s", maps[i],
                             i == 0 ? " or lists of strings" : "");
                    goto out;
                }
            }
            if (i == 1 && check_claim_mappings(c, m) != 0) {
                goto out;
            }
            json_object_set(role, maps[i], m);
        } else if (json_object_get(role, maps[i]) == NULL) {
            json_object_set_new(role, maps[i], json_object());
        }
    }
    static const char *const leeways[] = {"expiration_leeway", "not_before_leeway",
                                          "clock_skew_leeway"};
    for (size_t i = 0; i < 3; i++) {
        int64_t v;
        if (kms_param_int(c, leeways[i], &v)) {
            if (v < -1) {
                KMS_FAIL(c, 400, "%s must be -1 (off), 0 (default) or a positive duration",
                         leeways[i]);
                goto out;
            }
            json_object_set_new(role, leeways[i], json_integer(v));
        } else if (json_object_get(role, leeways[i]) == NULL) {
            json_object_set_new(role, leeways[i], json_integer(0));
        }
    }
    const char *bct = kms_login_jstr(role, "bound_claims_type");
    if (strcmp(bct, "string") != 0 && strcmp(bct, "glob") != 0) {
        KMS_FAIL(c, 400, "invalid 'bound_claims_type': %s", bct);
        goto out;
    }
    if (kms_login_jstr(role, "user_claim")[0] == '\0') {
        KMS_FAIL(c, 400, "a user claim must be defined on the role");
        goto out;
    }
    if (json_array_size(json_object_get(role, "bound_audiences")) == 0 &&
        json_array_size(json_object_get(role, "token_bound_cidrs")) == 0 &&
        kms_login_jstr(role, "bound_subject")[0] == '\0' &&
        json_object_size(json_object_get(role, "bound_claims")) == 0) {
        KMS_FAIL(c, 400, "must have at least one bound constraint when creating/updating a role");
        goto out;
    }
    if (kms_login_rec_put(c->api, key, role) != 0) {
        KMS_FAILW(c, 500, "internal error");
        goto out;
    }
    rc = kms_reply_warnings(c);
out:
    json_decref(role);
    return rc;
}

static int jwt_role_read(struct kms_ctx *c)
{
    char key[KMS_PATH_MAX + 64];
    json_t *role = NULL;

    if (kms_login_role_key(c, key, sizeof(key)) != 0) {
        return KMS_FAIL(c, 400, "missing name");
    }
    int g = kms_login_rec_get(c->api, key, &role);
    if (g == KMS_STORAGE_NOTFOUND) {
        return kms_fail_notfound(c);
    }
    if (g != 0) {
        return KMS_FAILW(c, 500, "internal error");
    }
    c->data = json_object();
    static const char *const keys[] = {
        "role_type",         "bound_audiences",   "bound_subject",     "bound_claims",
        "bound_claims_type", "user_claim",        "groups_claim",      "claim_mappings",
        "expiration_leeway", "not_before_leeway", "clock_skew_leeway",
    };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        json_t *v = json_object_get(role, keys[i]);
        if (v != NULL) {
            json_object_set(c->data, keys[i], v);
        }
    }
    kms_login_token_fields_render(role, c->data);
    json_decref(role);
    return 0;
}

/* A claim by name, or by JSON pointer when it starts with '/'. */
/* The role's claim rules: bound subject, audiences, user and groups claims, bound claims. */
static int check_role_claims(struct kms_ctx *c, const json_t *role, json_t *claims,
                             const json_t *bound_aud)
{
    struct kms_err kerr;
    const char *bsub = json_string_value(json_object_get(role, "bound_subject"));
    if (bsub != NULL && bsub[0] != '\0') {
        const char *sub = json_string_value(json_object_get(claims, "sub"));
        if (sub == NULL || strcmp(sub, bsub) != 0) {
            KMS_FAIL(c, 400, "error validating token: invalid subject (sub) claim");
            return -1;
        }
    }
    json_t *aud = json_object_get(claims, "aud");
    if (json_array_size(bound_aud) == 0 && aud != NULL && !json_is_null(aud) &&
        !(json_is_array(aud) && json_array_size(aud) == 0)) {
        KMS_FAIL(c, 400, "audience claim found in JWT but no audiences bound to the role");
        return -1;
    }
    const char *uc = kms_login_jstr(role, "user_claim");
    json_t *user = kms_claims_get(claims, uc);
    if (user == NULL) {
        KMS_FAIL(c, 400, "claim \"%s\" not found in token", uc);
        return -1;
    }
    if (!json_is_string(user)) {
        KMS_FAIL(c, 400, "claim \"%s\" could not be converted to string", uc);
        return -1;
    }
    if (json_string_length(user) == 0) {
        /* the identity of the token and of its audit records: none is no identity */
        KMS_FAIL(c, 400, "claim \"%s\" is empty", uc);
        return -1;
    }
    const char *gc = json_string_value(json_object_get(role, "groups_claim"));
    if (gc != NULL && gc[0] != '\0') {
        json_t *groups = kms_claims_get(claims, gc);
        if (groups == NULL) {
            KMS_FAIL(c, 400, "%s claim not found in token", gc);
            return -1;
        }
        if (!json_is_string(groups) && !kms_login_all_strings(groups)) {
            KMS_FAIL(c, 400, "%s claim could not be converted to a list of strings", gc);
            return -1;
        }
    }
    bool glob = strcmp(kms_login_jstr(role, "bound_claims_type"), "glob") == 0;
    if (kms_claims_bound(claims, json_object_get(role, "bound_claims"), glob, &kerr) != 0) {
        return KMS_FAIL(c, kerr.status, "%s", kerr.msg);
    }
    return 0;
}

static int jwt_login(struct kms_ctx *c)
{
    char key[KMS_PATH_MAX + 64];
    char quoted[600];
    const char *role_name = "";
    const char *jwt = "";
    const char **auds = NULL;
    json_t *role = NULL;
    json_t *cfg = NULL;
    json_t *claims = NULL;
    struct kms_keyset *ks = NULL;
    char *mvals[KMS_TOKEN_MAX_META];
    const char *mkeys[KMS_TOKEN_MAX_META];
    size_t nmeta = 0;
    int64_t now;
    int32_t nsec;
    int rc = -1;

    memset(mvals, 0, sizeof(mvals));
    if (kms_login_record_key(&c->mount, "config", key, sizeof(key)) != 0 ||
        kms_login_rec_get(c->api, key, &cfg) != 0) {
        KMS_FAIL(c, 400, "could not load configuration");
        goto out;
    }
    (void)kms_param_str(c, "role", &role_name);
    (void)kms_param_str(c, "jwt", &jwt);
    if (role_name[0] == '\0') {
        role_name = json_string_value(json_object_get(cfg, "default_role"));
    }
    if (role_name == NULL || role_name[0] == '\0') {
        KMS_FAIL(c, 400, "missing role");
        goto out;
    }
    int g = kms_login_load_role(c, role_name, &role);
    if (g == KMS_STORAGE_NOTFOUND) {
        kms_login_go_quote(role_name, quoted, sizeof(quoted));
        KMS_FAIL(c, 400, "role %s could not be found", quoted);
        goto out;
    }
    if (g != 0) {
        KMS_FAIL(c, 500, "internal error");
        goto out;
    }
    if (jwt[0] == '\0') {
        KMS_FAIL(c, 400, "missing token");
        goto out;
    }
    if (!kms_login_role_cidr_ok(c, role)) {
        KMS_FAIL(c, 403, "permission denied");
        goto out;
    }
    struct kms_err kerr;
    if (kms_keyset_build(json_object_get(cfg, "jwt_validation_pubkeys"),
                         json_string_value(json_object_get(cfg, "jwks")),
                         json_string_value(json_object_get(cfg, "jwks_file")), &ks, &kerr) != 0) {
        KMS_FAIL(c, 500, "could not load configuration");
        goto out;
    }
    if (kms_jwt_verify(jwt, ks, &claims, &kerr) != 0) {
        KMS_FAIL(c, 400, "error validating token: %s",
                 strcmp(kerr.msg, "permission denied") == 0 ? "failed to verify id token signature"
                                                            : kerr.msg);
        goto out;
    }
    if (!kms_jwt_alg_allowed(jwt, json_object_get(cfg, "jwt_supported_algs"))) {
        KMS_FAIL(c, 400,
                 "error validating token: invalid algorithm (alg) header parameter: token "
                 "signed with unexpected algorithm");
        goto out;
    }
    kms_now(&now, &nsec);
    json_t *bound_aud = json_object_get(role, "bound_audiences");
    /* every bound audience counts, however many the role lists */
    auds = calloc(json_array_size(bound_aud) + 1, sizeof(*auds));
    if (auds == NULL) {
        KMS_FAILW(c, 500, "internal error");
        goto out;
    }
    int64_t skew = json_integer_value(json_object_get(role, "clock_skew_leeway"));
    int64_t expl = json_integer_value(json_object_get(role, "expiration_leeway"));
    int64_t nbfl = json_integer_value(json_object_get(role, "not_before_leeway"));
    skew = skew == 0 ? 60 : skew < 0 ? 0 : skew;
    expl = expl == 0 ? 150 : expl < 0 ? 0 : expl;
    nbfl = nbfl == 0 ? 150 : nbfl < 0 ? 0 : nbfl;
    struct kms_jwt_expect e = {
        .now = now,
        .issuer = json_string_value(json_object_get(cfg, "bound_issuer")),
        .audiences = auds,
        .naudiences = kms_login_str_vec(bound_aud, auds, json_array_size(bound_aud)),
        .require_exp = true,
        .exp_leeway = skew + expl,
        .nbf_leeway = skew + nbfl,
        .iat_leeway = skew,
    };
    if (kms_jwt_validate(claims, &e, 400, &kerr) != 0) {
        KMS_FAIL(c, kerr.status, "%s%s", kerr.status == 400 ? "error validating token: " : "",
                 kerr.msg);
        goto out;
    }
    if (check_role_claims(c, role, claims, bound_aud) != 0) {
        goto out;
    }
    /* checked above: present and a string */
    json_t *user = kms_claims_get(claims, kms_login_jstr(role, "user_claim"));
    mkeys[nmeta] = "role";
    mvals[nmeta] = strdup(role_name);
    nmeta++;
    const char *ck;
    json_t *cv;
    json_object_foreach(json_object_get(role, "claim_mappings"), ck, cv)
    {
        json_t *have = kms_claims_get(claims, ck);
        char buf[256];
        if (have == NULL || nmeta == KMS_TOKEN_MAX_META) {
            continue;
        }
        kms_claims_string(have, buf, sizeof(buf));
        mkeys[nmeta] = json_string_value(cv);
        mvals[nmeta] = strdup(buf);
        nmeta++;
    }
    for (size_t i = 0; i < nmeta; i++) {
        if (mvals[i] == NULL) {
            KMS_FAILW(c, 500, "out of memory");
            goto out;
        }
    }
    struct kms_login_out lo = {json_string_value(user),
                               json_string_value(user),
                               json_string_value(user),
                               mkeys,
                               (const char *const *)mvals,
                               nmeta,
                               role_name};
    rc = kms_login_issue_token(c, role, &lo);
out:
    kms_metrics_login(rc == 0 ? 0 : c->err.status >= 500 ? 2 : 1);
    for (size_t i = 0; i < nmeta; i++) {
        free(mvals[i]);
    }
    kms_keyset_destroy(&ks);
    free(auds);
    json_decref(claims);
    json_decref(role);
    json_decref(cfg);
    return rc;
}

static const struct kms_field f_jwt_config[] = {
    {"jwt_validation_pubkeys", KMS_F_ARRAY},
    {"jwks", KMS_F_RAW},
    {"jwks_file", KMS_F_STRING},
    {"bound_issuer", KMS_F_STRING},
    {"default_role", KMS_F_STRING},
    {"jwt_supported_algs", KMS_F_ARRAY},
    {"jwks_url", KMS_F_RAW},
    {"jwks_ca_pem", KMS_F_RAW},
    {"oidc_discovery_url", KMS_F_RAW},
    {"oidc_discovery_ca_pem", KMS_F_RAW},
    {"oidc_client_id", KMS_F_RAW},
    {"oidc_client_secret", KMS_F_RAW},
    {"jwks_pairs", KMS_F_RAW},
    {"provider_config", KMS_F_RAW},
    {"namespace_in_state", KMS_F_BOOL},
    {NULL, 0},
};

static const struct kms_field f_jwt_role[] = {
    {"role_type", KMS_F_STRING},
    {"bound_audiences", KMS_F_ARRAY},
    {"bound_subject", KMS_F_STRING},
    {"bound_claims", KMS_F_MAP},
    {"bound_claims_type", KMS_F_STRING},
    {"user_claim", KMS_F_STRING},
    {"groups_claim", KMS_F_STRING},
    {"claim_mappings", KMS_F_MAP},
    {"expiration_leeway", KMS_F_DURATION},
    {"not_before_leeway", KMS_F_DURATION},
    {"clock_skew_leeway", KMS_F_DURATION},
    TOKEN_FIELD_DECLS,
    {NULL, 0},
};

const struct kms_route kms_login_jwt_routes[] = {
    {.tmpl = "config",
     .fields = f_jwt_config,
     .exists = kms_login_config_exists,
     .on = {[KMS_OP_READ] = {jwt_config_read, NULL, 0},
            [KMS_OP_CREATE] = {jwt_config_write, NULL, 0},
            [KMS_OP_UPDATE] = {jwt_config_write, NULL, 0}}},
    {.tmpl = "role/",
     .fields = kms_login_list_fields,
     .on = {[KMS_OP_LIST] = {kms_login_role_list, NULL, 0}}},
    {.tmpl = "role/:name",
     .fields = f_jwt_role,
     .exists = kms_login_role_exists,
     .on = {[KMS_OP_READ] = {jwt_role_read, NULL, 0},
            [KMS_OP_CREATE] = {jwt_role_write, NULL, 0},
            [KMS_OP_UPDATE] = {jwt_role_write, NULL, 0},
            [KMS_OP_DELETE] = {kms_login_role_delete, NULL, 0}}},
    {.tmpl = "login",
     .flags = KMS_RT_PUBLIC,
     .fields = kms_login_fields,
     .resource = "Login",
     .on = {[KMS_OP_UPDATE] = {jwt_login, "login", 0}}},
    KMS_ROUTES_END,
};
