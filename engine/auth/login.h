/*
 * login.h - private to engine/auth: the login base shared by the kubernetes and jwt methods
 * (records under KMS_DB_AUTH, roles, token fields of Vault's tokenutil, issuing the login
 * token) and their route tables.
 */
#ifndef KMS_ENGINE_AUTH_LOGIN_H
#define KMS_ENGINE_AUTH_LOGIN_H

#include "engine/auth/auth_int.h"

/* What a method learned from a verified login, for the token it issues. */
struct kms_login_out {
    const char *display_tail; /* plugin display name: "<ns>-<sa>" or the user claim */
    const char *subject;
    const char *alias;
    const char *const *meta_keys;
    const char *const *meta_values;
    size_t nmeta;
    const char *role_name;
};

#define TOKEN_FIELD_DECLS                                                                          \
    {"token_ttl", KMS_F_DURATION}, {"token_max_ttl", KMS_F_DURATION},                              \
        {"token_period", KMS_F_DURATION}, {"token_explicit_max_ttl", KMS_F_DURATION},              \
        {"token_policies", KMS_F_ARRAY}, {"token_no_default_policy", KMS_F_BOOL},                  \
        {"token_num_uses", KMS_F_INT}, {"token_bound_cidrs", KMS_F_ARRAY},                         \
        {"token_type", KMS_F_STRING}, {"token_strictly_bind_ip", KMS_F_BOOL},                      \
        {"ttl", KMS_F_DURATION}, {"max_ttl", KMS_F_DURATION}, {"period", KMS_F_DURATION},          \
        {"policies", KMS_F_ARRAY}, {"num_uses", KMS_F_INT},                                        \
    {                                                                                              \
        "bound_cidrs", KMS_F_ARRAY                                                                 \
    }

extern const struct kms_field kms_login_fields[];      /* login: role, jwt */
extern const struct kms_field kms_login_list_fields[]; /* role/ lists */
extern const struct kms_route kms_login_kubernetes_routes[];
extern const struct kms_route kms_login_jwt_routes[];

int kms_login_record_key(const struct kms_mount *m, const char *suffix, char *out, size_t n);
int kms_login_rec_get(struct kms_api *api, const char *key, json_t **out);
int kms_login_rec_put(struct kms_api *api, const char *key, const json_t *j);
int kms_login_rec_del(struct kms_api *api, const char *key);
void kms_login_go_quote(const char *s, char *out, size_t n);
bool kms_login_all_strings(const json_t *arr);
const char *kms_login_jstr(const json_t *obj, const char *key);
size_t kms_login_str_vec(const json_t *arr, const char **out, size_t n);
int kms_login_jwks_text(struct kms_ctx *c, char **out);
int kms_login_token_fields_apply(struct kms_ctx *c, json_t *role, bool create);
void kms_login_token_fields_render(const json_t *role, json_t *d);
void kms_login_display_name(const char *mount_path, const char *tail, char *out, size_t n);
int kms_login_entity_id(struct kms_ctx *c, const char *alias, char out[40]);
int kms_login_issue_token(struct kms_ctx *c, const json_t *role, const struct kms_login_out *lo);
int kms_login_load_role(struct kms_ctx *c, const char *name, json_t **role);
int kms_login_role_key(struct kms_ctx *c, char *key, size_t n);
int kms_login_role_exists(struct kms_ctx *c);
int kms_login_config_exists(struct kms_ctx *c);
int kms_login_role_list(struct kms_ctx *c);
int kms_login_role_delete(struct kms_ctx *c);
bool kms_login_role_cidr_ok(struct kms_ctx *c, const json_t *role);
bool kms_login_may_name_files(const struct kms_ctx *c);

#endif
