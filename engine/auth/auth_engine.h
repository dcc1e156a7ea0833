/*
 * auth_engine.h - the authentication engines: auth/token/ (token endpoints), the mounted
 * "kubernetes" and "jwt" login methods (config, roles, login) and their sys/ endpoints
 * (sys/auth, sys/policy, sys/policies/acl). Token and policy storage live in auth/.
 */
#ifndef KMS_ENGINE_AUTH_ENGINE_H
#define KMS_ENGINE_AUTH_ENGINE_H

#include "api/engine.h"

/* Register the engines above with the API (no state of their own: they use kms_api_auth). */
int kms_auth_engines_add(struct kms_api *api) KMS_WUR;

#endif
