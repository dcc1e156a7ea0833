/* auth_int.h - private to engine/auth: what token.c, policy.c and methods.c share. */
#ifndef KMS_ENGINE_AUTH_INT_H
#define KMS_ENGINE_AUTH_INT_H

#include "engine/auth/auth_engine.h"

extern const struct kms_route kms_token_routes[];

/* sys/auth and sys/policy(ies) handlers (methods.c, policy.c). */
int kms_login_mounts_list(struct kms_ctx *c);
int kms_login_mounts_read(struct kms_ctx *c);
int kms_login_mounts_write(struct kms_ctx *c);
int kms_login_mounts_delete(struct kms_ctx *c);
extern const struct kms_field kms_login_mounts_fields[];
int kms_policy_api_list(struct kms_ctx *c);
int kms_policy_api_read(struct kms_ctx *c);
int kms_policy_api_write(struct kms_ctx *c);
int kms_policy_api_delete(struct kms_ctx *c);
extern const struct kms_field kms_policy_api_fields[];

/* Vault's "auth" block for a token (token.c); malloc'd JSON, NULL when out of memory. */
json_t *kms_token_auth_block(const struct kms_token *t, const char *client_token);
/*
 * Renewal of a login token goes back to its method (methods.c): the role's current
 * ttl / max_ttl / period into *out. 0 done, 1 not a login token, -1 with c->err set (400
 * "failed to renew entry: role <r> does not exist during renewal").
 */
int kms_login_renew_params(struct kms_ctx *c, const struct kms_token *tok,
                           struct kms_token_ttl *out);

/*
 * Token store roles (token_roles.c), records in KMS_DB_AUTH under "<ns id>/token/role/<name>".
 * load: 0 with *role (caller decrefs; legacy fields folded into the token_ ones),
 * KMS_STORAGE_NOTFOUND or -1. The handlers serve auth/token/roles[/:role_name].
 */
int kms_token_role_load(struct kms_ctx *c, const char *ns_id, const char *name, json_t **role);
int kms_token_role_list(struct kms_ctx *c);
int kms_token_role_read(struct kms_ctx *c);
int kms_token_role_write(struct kms_ctx *c);
int kms_token_role_delete(struct kms_ctx *c);
int kms_token_role_exists(struct kms_ctx *c);
extern const struct kms_field kms_token_role_fields[];
/*
 * The policies of a token created against a role that sets allowed/disallowed lists (OpenBao's
 * resolveTokenPolicies): `given` (ng may be 0), or the role's allowed ones, or the caller's;
 * each inside the role's allowed (exact or glob) and outside its disallowed lists. 400 with
 * OpenBao's messages otherwise. *np receives the count.
 */
int kms_token_role_policies(struct kms_ctx *c, const json_t *role, const char *const *given,
                            size_t ng, bool no_default, char pols[][KMS_POLICY_NAME_MAX], int *np);
/* entity_alias on create: 400 without a role or outside its allowed_entity_aliases; kmsd has
 * no identity store, so an allowed alias is refused too (always returns -1). */
int kms_token_role_entity_alias(struct kms_ctx *c, const json_t *role, const char *alias);

#endif
