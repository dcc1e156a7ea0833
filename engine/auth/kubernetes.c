#include "engine/auth/login.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- kubernetes -------------------------------------------------------------------------- */

static int k8s_config_write(struct kms_ctx *c)
{
    char key[KMS_PATH_MAX + 64];
    struct kms_keyset *ks = NULL;
    char *jwks = NULL;
    json_t *rec = NULL;
    const char *host = "";
    const char *ca = "";
    const char *reviewer = "";
    const char *issuer = "";
    const char *jwks_file = "";
    bool disable_iss = true;
    bool disable_local = false;
    int rc = -1;

    (void)kms_param_str(c, "kubernetes_host", &host);
    (void)kms_param_str(c, "kubernetes_ca_cert", &ca);
    (void)kms_param_str(c, "token_reviewer_jwt", &reviewer);
    (void)kms_param_str(c, "issuer", &issuer);
    (void)kms_param_str(c, "jwks_file", &jwks_file);
    if (jwks_file[0] != '\0' && !kms_login_may_name_files(c)) {
        return KMS_FAIL(c, 400,
                        "jwks_file may only be set by a method mounted in the root namespace; "
                        "use jwks (the document itself) in an organization namespace");
    }
    (void)kms_param_bool(c, "disable_iss_validation", &disable_iss);
    (void)kms_param_bool(c, "disable_local_ca_jwt", &disable_local);
    json_t *pems = kms_param(c, "pem_keys");
    if (pems != NULL && !kms_login_all_strings(pems)) {
        KMS_FAIL(c, 400, "pem_keys must be a list of PEM strings");
        goto out;
    }
    if (kms_login_jwks_text(c, &jwks) != 0) {
        goto out;
    }
    if (json_array_size(pems) == 0 && (jwks == NULL || jwks[0] == '\0') && jwks_file[0] == '\0') {
        KMS_FAIL(c, 400,
                 "one of \"pem_keys\", \"jwks\" or \"jwks_file\" must be set: kmsd verifies "
                 "service account tokens offline");
        goto out;
    }
    if (kms_keyset_build(pems, jwks, jwks_file, &ks, &c->err) != 0) {
        goto out;
    }
    rec = json_pack("{s:s, s:s, s:s, s:o, s:s, s:b, s:b, s:s, s:s}", "kubernetes_host", host,
                    "kubernetes_ca_cert", ca, "token_reviewer_jwt", reviewer, "pem_keys",
                    pems ? json_incref(pems) : json_array(), "issuer", issuer,
                    "disable_iss_validation", disable_iss, "disable_local_ca_jwt", disable_local,
                    "jwks", jwks ? jwks : "", "jwks_file", jwks_file);
    if (rec == NULL || kms_login_record_key(&c->mount, "config", key, sizeof(key)) != 0 ||
        kms_login_rec_put(c->api, key, rec) != 0) {
        KMS_FAILW(c, 500, "internal error");
        goto out;
    }
    if (issuer[0] != '\0' && disable_iss && kms_param(c, "disable_iss_validation") != NULL) {
        kms_warn(c, "kmsd always checks \"iss\" when \"issuer\" is set, whatever "
                    "disable_iss_validation says");
    }
    rc = kms_reply_warnings(c);
out:
    kms_keyset_destroy(&ks);
    free(jwks);
    json_decref(rec);
    return rc;
}

static int k8s_config_read(struct kms_ctx *c)
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
    const char *reviewer = json_string_value(json_object_get(rec, "token_reviewer_jwt"));
    c->data =
        json_pack("{s:O?, s:O?, s:O?, s:O?, s:O?, s:O?, s:b, s:O?, s:O?}", "kubernetes_host",
                  json_object_get(rec, "kubernetes_host"), "kubernetes_ca_cert",
                  json_object_get(rec, "kubernetes_ca_cert"), "pem_keys",
                  json_object_get(rec, "pem_keys"), "issuer", json_object_get(rec, "issuer"),
                  "disable_iss_validation", json_object_get(rec, "disable_iss_validation"),
                  "disable_local_ca_jwt", json_object_get(rec, "disable_local_ca_jwt"),
                  "token_reviewer_jwt_set", reviewer != NULL && reviewer[0] != '\0', "jwks",
                  json_object_get(rec, "jwks"), "jwks_file", json_object_get(rec, "jwks_file"));
    json_decref(rec);
    return c->data ? 0 : KMS_FAILW(c, 500, "internal error");
}

static int star_mix(const json_t *arr)
{
    size_t i;
    json_t *v;
    if (json_array_size(arr) <= 1) {
        return 0;
    }
    json_array_foreach(arr, i, v)
    {
        if (strcmp(json_string_value(v), "*") == 0) {
            return 1;
        }
    }
    return 0;
}

static int k8s_role_write(struct kms_ctx *c)
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
    if (kms_login_token_fields_apply(c, role, g == KMS_STORAGE_NOTFOUND) != 0) {
        goto out;
    }
    json_t *names = kms_param(c, "bound_service_account_names");
    if (names != NULL) {
        if (!kms_login_all_strings(names)) {
            KMS_FAIL(c, 400, "bound_service_account_names must be a list of strings");
            goto out;
        }
        json_object_set(role, "bound_service_account_names", names);
    } else if (json_object_get(role, "bound_service_account_names") == NULL) {
        json_object_set_new(role, "bound_service_account_names", json_array());
    }
    names = json_object_get(role, "bound_service_account_names");
    if (json_array_size(names) == 0) {
        KMS_FAIL(c, 400, "\"bound_service_account_names\" can not be empty");
        goto out;
    }
    if (star_mix(names)) {
        KMS_FAIL(c, 400, "can not mix \"*\" with values");
        goto out;
    }
    json_t *nss = kms_param(c, "bound_service_account_namespaces");
    if (nss != NULL) {
        if (!kms_login_all_strings(nss)) {
            KMS_FAIL(c, 400, "bound_service_account_namespaces must be a list of strings");
            goto out;
        }
        json_object_set(role, "bound_service_account_namespaces", nss);
    } else if (json_object_get(role, "bound_service_account_namespaces") == NULL) {
        json_object_set_new(role, "bound_service_account_namespaces", json_array());
    }
    nss = json_object_get(role, "bound_service_account_namespaces");
    const char *selector = "";
    (void)kms_param_str(c, "bound_service_account_namespace_selector", &selector);
    if (json_array_size(nss) == 0 && selector[0] == '\0') {
        KMS_FAIL(c, 400,
                 "\"bound_service_account_namespaces\" can not be empty if "
                 "\"bound_service_account_namespace_selector\" is not set");
        goto out;
    }
    if (selector[0] != '\0') {
        KMS_FAIL(c, 400,
                 "\"bound_service_account_namespace_selector\" is not supported: kmsd verifies "
                 "tokens offline and cannot read namespace labels; list the namespaces in "
                 "\"bound_service_account_namespaces\"");
        goto out;
    }
    if (star_mix(nss)) {
        KMS_FAIL(c, 400, "can not mix \"*\" with values");
        goto out;
    }
    const char *aud = NULL;
    if (kms_param_str(c, "audience", &aud)) {
        json_object_set_new(role, "audience", json_string(aud));
    }
    const char *src = NULL;
    if (kms_param_str(c, "alias_name_source", &src) && src[0] != '\0') {
        json_object_set_new(role, "alias_name_source", json_string(src));
    } else if (json_object_get(role, "alias_name_source") == NULL) {
        json_object_set_new(role, "alias_name_source", json_string("serviceaccount_uid"));
    }
    src = kms_login_jstr(role, "alias_name_source");
    if (strcmp(src, "serviceaccount_uid") != 0 && strcmp(src, "serviceaccount_name") != 0) {
        KMS_FAIL(c, 400,
                 "invalid alias_name_source %s, must be one of: serviceaccount_uid, "
                 "serviceaccount_name",
                 src);
        goto out;
    }
    const char *raud = json_string_value(json_object_get(role, "audience"));
    if (raud == NULL || raud[0] == '\0') {
        kms_warn(c, "This role has no \"audience\": a token issued for any audience is accepted. "
                    "Set \"audience\" to the projected token's audience (e.g. \"openbao\").");
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

static int k8s_role_read(struct kms_ctx *c)
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
    c->data = json_pack("{s:O, s:O, s:s, s:O}", "bound_service_account_names",
                        json_object_get(role, "bound_service_account_names"),
                        "bound_service_account_namespaces",
                        json_object_get(role, "bound_service_account_namespaces"),
                        "bound_service_account_namespace_selector", "", "alias_name_source",
                        json_object_get(role, "alias_name_source"));
    const char *aud = json_string_value(json_object_get(role, "audience"));
    if (aud != NULL && aud[0] != '\0') {
        json_object_set_new(c->data, "audience", json_string(aud));
    }
    kms_login_token_fields_render(role, c->data);
    json_decref(role);
    return 0;
}

static int k8s_login(struct kms_ctx *c)
{
    char key[KMS_PATH_MAX + 64];
    char quoted[600];
    const char **names = NULL;
    const char **nss = NULL;
    const char *role_name = "";
    const char *jwt = "";
    json_t *role = NULL;
    json_t *cfg = NULL;
    struct kms_keyset *ks = NULL;
    struct kms_k8s_sa sa;
    int64_t now;
    int32_t nsec;
    int rc = -1;

    memset(&sa, 0, sizeof(sa));
    (void)kms_param_str(c, "role", &role_name);
    (void)kms_param_str(c, "jwt", &jwt);
    if (role_name[0] == '\0') {
        KMS_FAIL(c, 400, "missing role");
        goto out;
    }
    if (jwt[0] == '\0') {
        KMS_FAIL(c, 400, "missing jwt");
        goto out;
    }
    int g = kms_login_load_role(c, role_name, &role);
    if (g == KMS_STORAGE_NOTFOUND) {
        kms_login_go_quote(role_name, quoted, sizeof(quoted));
        KMS_FAIL(c, 400, "invalid role name %s", quoted);
        goto out;
    }
    if (g != 0) {
        KMS_FAIL(c, 500, "internal error");
        goto out;
    }
    if (!kms_login_role_cidr_ok(c, role)) {
        KMS_FAIL(c, 403, "permission denied");
        goto out;
    }
    if (kms_login_record_key(&c->mount, "config", key, sizeof(key)) != 0 ||
        kms_login_rec_get(c->api, key, &cfg) != 0) {
        KMS_FAIL(c, 500, "could not load backend configuration");
        goto out;
    }
    struct kms_err kerr;
    if (kms_keyset_build(json_object_get(cfg, "pem_keys"),
                         json_string_value(json_object_get(cfg, "jwks")),
                         json_string_value(json_object_get(cfg, "jwks_file")), &ks, &kerr) != 0) {
        KMS_FAIL(c, 500, "could not load backend configuration");
        goto out;
    }
    kms_now(&now, &nsec);
    json_t *jn = json_object_get(role, "bound_service_account_names");
    json_t *jns = json_object_get(role, "bound_service_account_namespaces");
    /* every entry counts, however long the role's lists (OpenBao has no limit) */
    names = calloc(json_array_size(jn) + 1, sizeof(*names));
    nss = calloc(json_array_size(jns) + 1, sizeof(*nss));
    if (names == NULL || nss == NULL) {
        KMS_FAILW(c, 500, "internal error");
        goto out;
    }
    struct kms_k8s_login in = {
        .jwt = jwt,
        .keys = ks,
        .issuer = json_string_value(json_object_get(cfg, "issuer")),
        .audience = json_string_value(json_object_get(role, "audience")),
        .names = names,
        .nnames = kms_login_str_vec(jn, names, json_array_size(jn)),
        .namespaces = nss,
        .nnamespaces = kms_login_str_vec(jns, nss, json_array_size(jns)),
        .alias_by_name =
            strcmp(kms_login_jstr(role, "alias_name_source"), "serviceaccount_name") == 0,
        .now = now,
    };
    if (kms_k8s_login_validate(&in, &sa, &c->err) != 0) {
        goto out;
    }
    char alias[600];
    if (in.alias_by_name) {
        snprintf(alias, sizeof(alias), "%s/%s", sa.ns, sa.name);
    } else {
        snprintf(alias, sizeof(alias), "%s", sa.uid);
    }
    char tail[600];
    snprintf(tail, sizeof(tail), "%s-%s", sa.ns, sa.name);
    const char *mk[] = {"role", "service_account_name", "service_account_namespace",
                        "service_account_secret_name", "service_account_uid"};
    const char *mv[] = {role_name, sa.name, sa.ns, sa.secret_name, sa.uid};
    struct kms_login_out lo = {tail, sa.sub, alias, mk, mv, 5, role_name};
    rc = kms_login_issue_token(c, role, &lo);
out:
    kms_metrics_login(rc == 0 ? 0 : c->err.status >= 500 ? 2 : 1);
    kms_keyset_destroy(&ks);
    free(names);
    free(nss);
    json_decref(role);
    json_decref(cfg);
    kms_memzero(&sa, sizeof(sa));
    return rc;
}

static const struct kms_field f_k8s_config[] = {
    {"kubernetes_host", KMS_F_STRING},
    {"kubernetes_ca_cert", KMS_F_STRING},
    {"token_reviewer_jwt", KMS_F_STRING},
    {"pem_keys", KMS_F_ARRAY},
    {"issuer", KMS_F_STRING},
    {"disable_iss_validation", KMS_F_BOOL},
    {"disable_local_ca_jwt", KMS_F_BOOL},
    {"jwks", KMS_F_RAW},
    {"jwks_file", KMS_F_STRING},
    {NULL, 0},
};

static const struct kms_field f_k8s_role[] = {
    {"bound_service_account_names", KMS_F_ARRAY},
    {"bound_service_account_namespaces", KMS_F_ARRAY},
    {"bound_service_account_namespace_selector", KMS_F_STRING},
    {"audience", KMS_F_STRING},
    {"alias_name_source", KMS_F_STRING},
    TOKEN_FIELD_DECLS,
    {NULL, 0},
};

const struct kms_route kms_login_kubernetes_routes[] = {
    {.tmpl = "config",
     .fields = f_k8s_config,
     .exists = kms_login_config_exists,
     .on = {[KMS_OP_READ] = {k8s_config_read, NULL, 0},
            [KMS_OP_CREATE] = {k8s_config_write, NULL, 0},
            [KMS_OP_UPDATE] = {k8s_config_write, NULL, 0}}},
    {.tmpl = "role/",
     .fields = kms_login_list_fields,
     .on = {[KMS_OP_LIST] = {kms_login_role_list, NULL, 0}}},
    {.tmpl = "role/:name",
     .fields = f_k8s_role,
     .exists = kms_login_role_exists,
     .on = {[KMS_OP_READ] = {k8s_role_read, NULL, 0},
            [KMS_OP_CREATE] = {k8s_role_write, NULL, 0},
            [KMS_OP_UPDATE] = {k8s_role_write, NULL, 0},
            [KMS_OP_DELETE] = {kms_login_role_delete, NULL, 0}}},
    {.tmpl = "login",
     .flags = KMS_RT_PUBLIC,
     .fields = kms_login_fields,
     .resource = "Login",
     .on = {[KMS_OP_UPDATE] = {k8s_login, "login", 0}}},
    KMS_ROUTES_END,
};
