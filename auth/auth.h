/*
 * auth.h - identity for kmsd: the token store (tokens kept only as salted hashes), and the
 * access decision for a token on a path (root, and ACL policies).
 *
 * Threads: every function may be called from several threads; writes go through storage
 * write transactions, which LMDB serialises.
 */
#ifndef KMS_AUTH_H
#define KMS_AUTH_H

#include "crypto/crypto.h"
#include "storage/storage.h"

/* The operation a request performs, as Vault's logical layer names it. */
enum kms_op {
    KMS_OP_READ,
    KMS_OP_LIST,
    KMS_OP_CREATE,
    KMS_OP_UPDATE,
    KMS_OP_DELETE,
    KMS_OP_PATCH,
};

const char *kms_op_name(enum kms_op op); /* "read", "list", "create", ... */

struct kms_auth;

int kms_auth_create(struct kms_storage *st, struct kms_auth **out, struct kms_err *err) KMS_WUR;
void kms_auth_destroy(struct kms_auth **auth);

#define KMS_TOKEN_MAX_LEN 128
#define KMS_TOKEN_MAX_POLICIES 32
#define KMS_TOKEN_MAX_META 8

/* What a token lookup yields; a plain value owned by the caller. */
struct kms_token {
    char accessor[64];
    char display_name[128];
    char ns_id[16];   /* namespace the token was issued in ("root" for root) */
    char path[128];   /* creation path, e.g. "auth/token/root" */
    bool root;        /* has the root policy */
    size_t npolicies;
    char policies[KMS_TOKEN_MAX_POLICIES][128];
    size_t nmeta;
    char meta_keys[KMS_TOKEN_MAX_META][64];
    char meta_values[KMS_TOKEN_MAX_META][256];
    int64_t creation_time; /* unix seconds */
    int64_t expire_time;   /* unix seconds, 0 = never */
};

/*
 * Create the root token in namespace "root" inside a write transaction. `id` is the requested
 * token (dev mode's -dev-root-token-id) or NULL for a random "s." + 24 base62 token. The
 * token is copied into out (KMS_TOKEN_MAX_LEN bytes). Only its salted hash is stored.
 */
int kms_auth_token_create_root(struct kms_auth *auth, struct kms_txn *txn, const char *id,
                               char *out, struct kms_err *err) KMS_WUR;

/*
 * Look a token up. Returns 0 and fills *out; KMS_STORAGE_NOTFOUND when the token is unknown,
 * revoked or expired; -1 on storage failure. The comparison never leaks timing about how
 * much of a token matched (lookup is by keyed hash).
 */
int kms_auth_token_lookup(struct kms_auth *auth, const char *token, struct kms_token *out) KMS_WUR;

/*
 * Access decision for `tok` performing `op` on `path` (relative to the request namespace
 * whose path is `ns_path`, "" for root, "org1/" for a child). Sets *allowed. A root token is
 * allowed in its namespace and every descendant.
 */
int kms_auth_check(struct kms_auth *auth, const struct kms_token *tok, const char *ns_path,
                   const char *tok_ns_path, const char *path, enum kms_op op,
                   bool *allowed) KMS_WUR;

#endif
