/* auth_int.h - private to engine/auth: what token.c, policy.c and methods.c share. */
#ifndef KMS_ENGINE_AUTH_INT_H
#define KMS_ENGINE_AUTH_INT_H

#include "engine/auth/auth_engine.h"

extern const struct kms_route kms_token_routes[];

/* sys/auth and sys/policy(ies) handlers (methods.c, policy.c). */
int kms_sys_auth_list(struct kms_ctx *c);
int kms_sys_auth_read(struct kms_ctx *c);
int kms_sys_auth_write(struct kms_ctx *c);
int kms_sys_auth_delete(struct kms_ctx *c);
extern const struct kms_field kms_sys_auth_fields[];
int kms_sys_policy_list(struct kms_ctx *c);
int kms_sys_policy_read(struct kms_ctx *c);
int kms_sys_policy_write(struct kms_ctx *c);
int kms_sys_policy_delete(struct kms_ctx *c);
extern const struct kms_field kms_sys_policy_fields[];

/* Vault's "auth" block for a token (token.c); malloc'd JSON, NULL when out of memory. */
json_t *kms_token_auth_block(const struct kms_token *t, const char *client_token);
/*
 * Renewal of a login token goes back to its method (methods.c): the role's current
 * ttl / max_ttl / period into *out. 0 done, 1 not a login token, -1 with c->err set (400
 * "failed to renew entry: role <r> does not exist during renewal").
 */
int kms_auth_login_renew_params(struct kms_ctx *c, const struct kms_token *tok,
                                struct kms_token_ttl *out);

#endif
