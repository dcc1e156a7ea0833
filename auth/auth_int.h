/*
 * auth_int.h - private to auth/: the layout of the auth handle shared by the token store
 * (token.c) and the policy store and ACL (acl.c).
 */
#ifndef KMS_AUTH_INT_H
#define KMS_AUTH_INT_H

#include "auth/auth.h"

#include <pthread.h>

/* One cached policy: "<ns id>/<name>" -> parsed policy, or NULL when no such policy. */
struct kms_pol_ent {
    char key[16 + 1 + KMS_POLICY_NAME_MAX];
    struct kms_policy *pol;
};

struct kms_tok_cache;

struct kms_auth {
    struct kms_storage *st;
    uint8_t token_key[32];
    struct kms_hmac_key *token_hkey; /* token_key prepared for HMAC (no key setup per lookup) */
    struct kms_tok_cache *tok_cache; /* recently looked-up tokens (token.c) */
    pthread_rwlock_t pol_lock;       /* guards pol_cache and pol_gen */
    struct kms_pol_ent *pol_cache;
    size_t npol;
    size_t cappol;
    /* bumped by every drop (a policy written or deleted): a policy read from the store before
     * a drop is not published into the cache after it (acl.c) */
    uint64_t pol_gen;
};

/* Rule i of a parsed policy: its pattern (no namespace prefix) and capabilities. */
const char *kms_policy_rule(const struct kms_policy *p, size_t i, unsigned *caps);

/* Take one use of a num_uses token in one write transaction (the last use deletes it): 0
 * taken (or unlimited), 1 none left (used up concurrently), -1 storage error. */
int kms_auth_token_use(struct kms_auth *auth, const uint8_t hash[32]);
/* Drop every cached policy (acl.c); used by kms_auth_destroy. */
void kms_auth_policy_cache_clear(struct kms_auth *auth);

#endif
