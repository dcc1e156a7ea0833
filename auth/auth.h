/*
 * auth.h - identity for kmsd: the token store (tokens kept only as keyed hashes), ACL
 * policies (HCL/JSON parser, matcher, policy store with the built-in policies), and the
 * offline verification behind the login methods (JWS keys, JWT claims, ServiceAccount
 * claims, globs, CIDRs).
 *
 * Threads: every function may be called from several threads; writes go through storage
 * write transactions, which LMDB serialises. The pure helpers (kms_policy_*, kms_acl_*,
 * kms_jwt_*, kms_k8s_*, kms_glob_match, kms_cidr_*) touch no shared state.
 */
#ifndef KMS_AUTH_H
#define KMS_AUTH_H

#include "crypto/crypto.h"
#include "storage/storage.h"

#include <jansson.h>

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

/* Load (or create on first start) the token key; st is borrowed and must outlive auth. */
int kms_auth_create(struct kms_storage *st, struct kms_auth **out, struct kms_err *err) KMS_WUR;
void kms_auth_destroy(struct kms_auth **auth);

/*
 * The token store's clock: now_ms(arg) returns unix time in milliseconds and decides token
 * creation times, expiry, renewal and the max_ttl cap. NULL restores the wall clock (the
 * default). Tests use it to drive expiry without sleeping. Not synchronised: call it before
 * the handle is shared between threads; now_ms itself may be called from any thread.
 */
void kms_auth_set_clock(struct kms_auth *auth, int64_t (*now_ms)(void *arg), void *arg);

/* ---- tokens (token.c) -------------------------------------------------------------------- */

#define KMS_TOKEN_MAX_LEN 128
#define KMS_TOKEN_MAX_POLICIES 32
#define KMS_TOKEN_MAX_META 8
#define KMS_TOKEN_MAX_CIDRS 8
#define KMS_POLICY_NAME_MAX 128

/* TTL defaults (documented in docs/auth.md). */
#define KMS_AUTH_DEFAULT_TTL 3600       /* a role or request without a ttl gets 1 h */
#define KMS_AUTH_SYSTEM_MAX_TTL 2764800 /* Vault's 768 h system max_lease_ttl */

/* What a token lookup yields; a plain value owned by the caller (wipe it when done). */
struct kms_token {
    char accessor[64];
    char display_name[128];
    char subject[256]; /* who: JWT "sub" for logins, else the display name (audit's subject) */
    char ns_id[16];    /* namespace the token was issued in ("root" for root) */
    char path[128];    /* creation path, e.g. "auth/token/root", "auth/k8s-host/login" */
    bool root;         /* has the root policy */
    size_t npolicies;
    char policies[KMS_TOKEN_MAX_POLICIES][KMS_POLICY_NAME_MAX];
    size_t nmeta;
    char meta_keys[KMS_TOKEN_MAX_META][64];
    char meta_values[KMS_TOKEN_MAX_META][256];
    int64_t creation_time; /* unix seconds */
    int64_t expire_time;   /* unix seconds (what lookup shows), 0 = never */
    int64_t expire_ms;     /* unix milliseconds, 0 = never: alive while the clock is below */
    int64_t creation_ttl;  /* seconds granted at creation (0 for root) */
    int64_t ttl;           /* requested ttl, re-applied on renewal (0 = default) */
    int64_t max_ttl;       /* backend max ttl at issue (0 = system) */
    int64_t explicit_max_ttl;
    int64_t period;
    int64_t last_renewal; /* unix seconds, 0 = never renewed */
    int64_t num_uses;     /* remaining uses, 0 = unlimited */
    bool renewable;
    bool orphan;
    char entity_id[40];
    char role[128]; /* login role (renewal re-reads it), "" otherwise */
    size_t ncidrs;
    char cidrs[KMS_TOKEN_MAX_CIDRS][64];
    uint8_t hash[32]; /* the token's storage key (keyed hash); identifies it for renew/revoke */
};

/*
 * Create the root token in namespace "root" inside a write transaction. `id` is the requested
 * token (dev mode's -dev-root-token-id) or NULL for a random "s." + 24 base62 token. The
 * token is copied into out (KMS_TOKEN_MAX_LEN bytes). Only its keyed hash is stored.
 */
int kms_auth_token_create_root(struct kms_auth *auth, struct kms_txn *txn, const char *id,
                               char *out, struct kms_err *err) KMS_WUR;

/* What a new token carries. Strings are borrowed for the call. */
struct kms_token_spec {
    const char *ns_id;           /* namespace id; tokens outside root get the ".<ns id>" suffix */
    const char *path;            /* "auth/k8s-host/login", "auth/token/create" */
    const char *display_name;    /* already formatted (e.g. "k8s-host-my-ns-app") */
    const char *subject;         /* NULL = display_name */
    const char *const *policies; /* final list (see kms_auth_policies_normalize) */
    size_t npolicies;
    const char *const *meta_keys;
    const char *const *meta_values;
    size_t nmeta;
    int64_t ttl;              /* 0 = KMS_AUTH_DEFAULT_TTL (or no expiry for root policy) */
    int64_t max_ttl;          /* 0 = system max */
    int64_t explicit_max_ttl; /* 0 = none */
    int64_t period;           /* 0 = not periodic */
    int64_t num_uses;         /* 0 = unlimited */
    /* the issuing auth mount's tuned default_lease_ttl and max_lease_ttl (sys/auth/<p>/tune):
     * 0 = KMS_AUTH_DEFAULT_TTL and the system max */
    int64_t mount_default_ttl;
    int64_t mount_max_ttl;
    bool renewable;
    const uint8_t *parent_hash; /* NULL = orphan; else the parent's kms_token.hash */
    const char *entity_id;      /* NULL = "" */
    const char *role;           /* NULL = "" */
    const char *const *cidrs;   /* token_bound_cidrs */
    size_t ncidrs;
    const char *id; /* custom token id (root callers only) or NULL for a random one */
};

/*
 * Create and store a service token: "s." + 24 base62 (+ ".<ns id>" outside root), a
 * 24-character accessor (same suffix), TTL per Vault's CalculateTTL. The token is copied to
 * token_out (KMS_TOKEN_MAX_LEN), its record to *out. A capped TTL leaves a Vault warning in
 * warning (else ""). Errors: 400 for bad input, 500 for storage.
 */
int kms_auth_token_create(struct kms_auth *auth, const struct kms_token_spec *spec, char *token_out,
                          struct kms_token *out, char *warning, size_t wlen,
                          struct kms_err *err) KMS_WUR;

/*
 * Look a token up. Returns 0 and fills *out; KMS_STORAGE_NOTFOUND when the token is unknown,
 * revoked, expired, or its parent chain is gone (revoking a parent revokes its children);
 * -1 on storage failure. Lookup is by keyed hash, so timing says nothing about partial
 * matches. Expired records are removed on the way.
 */
int kms_auth_token_lookup(struct kms_auth *auth, const char *token, struct kms_token *out) KMS_WUR;
/* The same by accessor (for lookup-accessor / revoke-accessor). */
int kms_auth_token_lookup_accessor(struct kms_auth *auth, const char *accessor,
                                   struct kms_token *out) KMS_WUR;
/* True when the token may be used from remote_addr (no bound CIDRs, or one contains it). */
bool kms_auth_token_cidr_ok(const struct kms_token *tok, const char *remote_addr);

/* Renewal inputs: what the issuing role says now (login tokens), or the token's own values. */
struct kms_token_ttl {
    int64_t ttl;
    int64_t max_ttl;
    int64_t period;
    int64_t mount_default_ttl; /* as in kms_token_spec: 0 = KMS_AUTH_DEFAULT_TTL */
    int64_t mount_max_ttl;     /* 0 = the system max */
};

/*
 * Renew the token identified by tok->hash: ttl per Vault's CalculateTTL from `increment`
 * (0 = none) and `cur` (NULL = the token's own ttl/max_ttl/period). Updates *out. Errors
 * (400): "past the max TTL, cannot renew", "lease is not renewable"; 403 when the token is
 * gone. A capped ttl leaves the warning in `warning`.
 */
int kms_auth_token_renew(struct kms_auth *auth, const struct kms_token *tok, int64_t increment,
                         const struct kms_token_ttl *cur, struct kms_token *out, char *warning,
                         size_t wlen, struct kms_err *err) KMS_WUR;

/* Revoke a token (record + accessor). Its children die with it (see lookup). */
int kms_auth_token_revoke(struct kms_auth *auth, const uint8_t hash[32]) KMS_WUR;
/*
 * Remove every token record of namespace ns_id, with its accessor entry, inside txn (the
 * namespace is being deleted: OpenBao revokes its tokens). Once txn commits, the caller flushes
 * the token cache (kms_auth_token_cache_flush). 0 or -1.
 */
int kms_auth_token_purge_ns(struct kms_auth *auth, struct kms_txn *txn, const char *ns_id) KMS_WUR;
/* Forget every cached token lookup (after a commit that removed tokens behind the cache). */
void kms_auth_token_cache_flush(struct kms_auth *auth);
/* Revoke every token of namespace ns_id whose path starts with prefix (auth mount disable). */
int kms_auth_token_revoke_prefix(struct kms_auth *auth, const char *ns_id,
                                 const char *prefix) KMS_WUR;

/*
 * Revoke a token but not its children (auth/token/revoke-orphan). One write transaction: the
 * record and its accessor entry go, and every record naming it as its parent loses that link
 * and lives on as an orphan (a child already past its own expiry is removed instead). kmsd
 * keeps no parent index: the children are found by a scan of the token records. *orphaned (may
 * be NULL) receives how many children became orphans. 0, KMS_STORAGE_NOTFOUND (no record), -1.
 */
int kms_auth_token_revoke_orphan(struct kms_auth *auth, const uint8_t hash[32],
                                 size_t *orphaned) KMS_WUR;

/* What one tidy found and removed (kms_auth_token_tidy). */
struct kms_token_tidy {
    size_t scanned;            /* token records of the namespace looked at */
    size_t expired;            /* removed: past their own expiry */
    size_t parent_revoked;     /* removed: an ancestor revoked or expired (the token died) */
    size_t accessors_scanned;  /* accessor entries looked at (only with `accessors`) */
    size_t accessors_dangling; /* removed: accessor entries whose token record is gone */
};

/*
 * auth/token/tidy: remove what lazy expiry leaves in the store for namespace ns_id. Records
 * past their expiry and records whose parent chain is gone or expired are deleted with their
 * accessor entries; with `accessors`, also every accessor entry whose token record is gone
 * (such an entry names no namespace any more, so only the root namespace's tidy takes them).
 * Live tokens are never touched. Expiry is decided by the store's clock (kms_auth_set_clock),
 * read once at the start. Candidates are found in one read transaction and removed in small
 * write transactions, each re-checking its records. Returns 0 with *out filled, 1 when another
 * tidy is running (nothing done), -1 on storage failure (what was removed stays removed).
 */
int kms_auth_token_tidy(struct kms_auth *auth, const char *ns_id, bool accessors,
                        struct kms_token_tidy *out) KMS_WUR;

/*
 * The accessors of the live tokens (unexpired, parent chain alive) of namespace ns_id, in
 * byte order: cb(accessor, arg) for each; a non-zero return stops the walk and is returned.
 * 0, or -1 on storage failure. Reads only (dead records are left for tidy or lookups).
 */
int kms_auth_token_accessors(struct kms_auth *auth, const char *ns_id,
                             int (*cb)(const char *accessor, void *arg), void *arg) KMS_WUR;

/*
 * Vault's TTL arithmetic (sdk/framework CalculateTTL), used at login, create and renew.
 * Times are unix milliseconds (start_ms is the token's issue time), durations seconds; ttl 0
 * means default_ttl. Returns 0 with the lease in *lease_ms (whole seconds unless the max TTL
 * cut it short: then exactly up to start_ms + max) and maybe a warning, or -1 with 400 "past
 * the max TTL, cannot renew".
 */
struct kms_ttl_req {
    int64_t now_ms;
    int64_t start_ms;
    int64_t increment;
    int64_t ttl;
    int64_t max_ttl;
    int64_t explicit_max_ttl;
    int64_t period;
    int64_t default_ttl;
    int64_t system_max;
};
int kms_auth_ttl(const struct kms_ttl_req *r, int64_t *lease_ms, char *warning, size_t wlen,
                 struct kms_err *err) KMS_WUR;
/* Go's time.Duration String with Vault's trimming ("1h", "1h30m", "59s"); out[32]. */
void kms_auth_human_duration(int64_t seconds, char out[32]);

/*
 * Policy list as the token store keeps it: lower-case, trimmed, deduplicated, sorted, and
 * "default" added when add_default. Empty names are dropped. Returns the count, or -1 when
 * more than KMS_TOKEN_MAX_POLICIES or a name is too long.
 */
int kms_auth_policies_normalize(const char *const *in, size_t n, bool add_default,
                                char out[][KMS_POLICY_NAME_MAX]) KMS_WUR;

/* ---- ACL policies (policy_parse.c, acl.c) ------------------------------------------------ */

#define KMS_CAP_DENY 0x001u
#define KMS_CAP_CREATE 0x002u
#define KMS_CAP_READ 0x004u
#define KMS_CAP_UPDATE 0x008u
#define KMS_CAP_DELETE 0x010u
#define KMS_CAP_LIST 0x020u
#define KMS_CAP_SUDO 0x040u
#define KMS_CAP_PATCH 0x080u
#define KMS_CAP_SCAN 0x100u

/* A parsed policy: an ordered list of (pattern, capabilities). Immutable once parsed. */
struct kms_policy;

/*
 * Parse policy text: the HCL subset (`path "<p>" { capabilities = [...] }`, `policy = "..."`,
 * `comment`, `name`, comments # // and block) or the JSON form
 * ({"path":{"<p>":{"capabilities":[...]}}} or "path":[{...}]). ns_path ("" or "org1/") is
 * only used in error messages, as Vault reports namespaced patterns. Errors are 400 with
 * Vault's "failed to parse policy: ..." text. Parameter constraints, wrapping TTLs, MFA and
 * control groups are refused (400) rather than silently ignored.
 */
int kms_policy_parse(const char *text, size_t len, const char *ns_path, struct kms_policy **out,
                     struct kms_err *err) KMS_WUR;
void kms_policy_free(struct kms_policy **p);
size_t kms_policy_npaths(const struct kms_policy *p);

/* A compiled ACL for one token: the merge of its policies (acl.go's NewACL). */
struct kms_acl;

/*
 * Build an ACL from n policies (names[i] names pols[i]; NULL entries are skipped), every
 * pattern prefixed with ns_path, the path of the namespace that owns the policies. `root`
 * makes an ACL that allows everything (the root policy).
 */
int kms_acl_create(const struct kms_policy *const *pols, const char *const *names, size_t n,
                   const char *ns_path, bool root, struct kms_acl **out) KMS_WUR;
void kms_acl_destroy(struct kms_acl **acl);

struct kms_acl_result {
    bool allowed;
    bool is_root;
    bool root_privs; /* the matched rule has sudo (or the ACL is root) */
    unsigned caps;   /* capabilities of the matched rule; 0 when nothing matched */
    size_t ngranting;
    char granting[KMS_TOKEN_MAX_POLICIES][KMS_POLICY_NAME_MAX]; /* policies granting op */
};

/*
 * Decide `op` on `path` (the full path: request namespace path + path). Matching is Vault's:
 * exact rule; for list also the path without its trailing '/'; then the best of the longest
 * prefix rule and every matching '+' rule (list tries the trimmed path first); no match
 * denies. `sudo_required` also demands sudo on the matched rule.
 */
void kms_acl_check(const struct kms_acl *acl, const char *path, enum kms_op op, bool sudo_required,
                   struct kms_acl_result *res);

/* Built-in policies: "root" (virtual), "default" (editable), "kms-manager", "kms-developer",
 * "kms-viewer" (read-only). Returns the HCL text, or NULL when `name` is not built in. */
const char *kms_auth_policy_builtin(const char *name);
/* True for the policies that cannot be written ("root", "kms-*"). */
bool kms_auth_policy_readonly(const char *name);

/*
 * Policy store: records under "<ns id>/<name>" in KMS_DB_POLICIES, parsed policies cached in
 * memory. put parses first (400 on error) and refuses read-only names (400 `cannot update
 * "<name>" policy`). get returns the text (malloc'd, caller frees) of a stored or built-in
 * policy, KMS_STORAGE_NOTFOUND otherwise. delete refuses "root", "default" and "kms-*"
 * (400) and succeeds for a missing name. list calls cb with every name in `ns_id` sorted,
 * built-ins included ("root" only when root_ns).
 */
int kms_auth_policy_put(struct kms_auth *auth, const char *ns_id, const char *ns_path,
                        const char *name, const char *text, struct kms_err *err) KMS_WUR;
int kms_auth_policy_get(struct kms_auth *auth, const char *ns_id, const char *name,
                        char **text) KMS_WUR;
int kms_auth_policy_delete(struct kms_auth *auth, const char *ns_id, const char *name,
                           struct kms_err *err) KMS_WUR;
int kms_auth_policy_list(struct kms_auth *auth, const char *ns_id, bool root_ns,
                         int (*cb)(const char *name, void *arg), void *arg) KMS_WUR;

/* One request to authorise. Paths are relative to their namespaces. */
struct kms_auth_req {
    const char *ns_path;     /* request namespace path: "" for root, "org1/" */
    const char *tok_ns_path; /* path of the token's namespace */
    const char *path;        /* request path inside ns_path, e.g. "transit/keys/k" */
    enum kms_op op;
    bool sudo; /* the route is root-protected */
};

/*
 * The access decision for `tok` (namespace scope, root, then the ACL of its policies read in
 * the token's namespace). Fills *res (res->allowed). A token is valid only in its namespace
 * and below. An allowed use of a token with num_uses consumes one use. Returns -1 only on
 * internal failure.
 */
int kms_auth_authorize(struct kms_auth *auth, const struct kms_token *tok,
                       const struct kms_auth_req *req, struct kms_acl_result *res) KMS_WUR;

/* The same reduced to a bool (kept for callers that only need the verdict). */
int kms_auth_check(struct kms_auth *auth, const struct kms_token *tok, const char *ns_path,
                   const char *tok_ns_path, const char *path, enum kms_op op,
                   bool *allowed) KMS_WUR;

/* ---- JWT verification (jwt.c) ------------------------------------------------------------ */

#define KMS_JWT_MAX_LEN 16384

/* Verification keys: PEM keys (no kid) and JWKS keys (optional kid / alg). */
struct kms_keyset;

int kms_keyset_create(struct kms_keyset **out) KMS_WUR;
void kms_keyset_destroy(struct kms_keyset **ks);
/* Add one PEM public key or certificate; 400 naming the index on failure. */
int kms_keyset_add_pem(struct kms_keyset *ks, const char *pem, size_t index,
                       struct kms_err *err) KMS_WUR;
/* Add the signature keys of a JWKS document ({"keys":[...]}, as /openid/v1/jwks serves it).
 * Keys with "use" other than "sig" or an unsupported kty/crv are skipped; a document that
 * yields no key is a 400. */
int kms_keyset_add_jwks(struct kms_keyset *ks, const char *json, size_t len,
                        struct kms_err *err) KMS_WUR;
size_t kms_keyset_size(const struct kms_keyset *ks);

/*
 * Verify a compact JWS and return its claims (*claims, caller decrefs). Refused, all with
 * 403 "permission denied" and no detail: more than KMS_JWT_MAX_LEN bytes, not three parts,
 * bad base64url, a header that is not a duplicate-free JSON object, an "alg" outside
 * RS256/384/512, PS256/384/512, ES256/384 (so none and HS* never reach a key), a "crit"
 * header, a "kid" that names no key, no key that verifies the signature, claims that are not
 * a duplicate-free JSON object (depth <= 32). Header fields jku/jwk/x5u/x5c are ignored.
 * A claim whose name equals a registered claim only under case folding is a 403
 * `ambiguous claim: key "EXP" collides with registered claim "exp" under case folding`.
 * ASCII whitespace around and inside the token is dropped first (as go-jose does).
 */
int kms_jwt_verify(const char *jwt, const struct kms_keyset *ks, json_t **claims,
                   struct kms_err *err) KMS_WUR;

struct kms_jwt_expect {
    int64_t now;
    const char *issuer;           /* NULL or "" = not checked */
    const char *const *audiences; /* the token's aud (string or array) must hold one */
    size_t naudiences;            /* 0 = aud not checked */
    bool require_exp;             /* offline mode: a token without exp is refused */
    int64_t exp_leeway;
    int64_t nbf_leeway;
    int64_t iat_leeway;
};

/*
 * Check registered claims in cap's order: iss, aud, nbf, exp, iat. Status `status` (403 for
 * kubernetes, 400 for jwt) with cap's messages: "invalid issuer (iss) claim", "invalid
 * audience (aud) claim: audience claim does not match any expected audience", "invalid not
 * before (nbf) claim: token not yet valid", "invalid expiration time (exp) claim: token is
 * expired", "invalid issued at (iat) claim: token issued in the future"; a missing exp when
 * required: "invalid expiration time (exp) claim: token has no expiration time". Badly typed
 * time claims are 403 "permission denied".
 */
int kms_jwt_validate(const json_t *claims, const struct kms_jwt_expect *e, int status,
                     struct kms_err *err) KMS_WUR;

/* ---- Kubernetes service accounts and bindings (k8s.c) ------------------------------------ */

struct kms_k8s_sa {
    char ns[256];
    char name[256];
    char uid[128];
    char secret_name[256];
    char sub[512];
};

/*
 * The service account a token names: the projected "kubernetes.io" object wins over the
 * legacy flat "kubernetes.io/serviceaccount/..." claims (as upstream). Claims of the wrong
 * JSON type are a 403 "permission denied".
 */
int kms_k8s_sa_from_claims(const json_t *claims, struct kms_k8s_sa *sa,
                           struct kms_err *err) KMS_WUR;

struct kms_k8s_login {
    const char *jwt;
    const struct kms_keyset *keys;
    const char *issuer;   /* "" = not checked */
    const char *audience; /* "" = not checked */
    const char *const *names;
    size_t nnames;
    const char *const *namespaces;
    size_t nnamespaces;
    bool alias_by_name; /* alias_name_source = serviceaccount_name */
    int64_t now;
};

/*
 * Steps 5-6 of a kubernetes login, offline: signature (kms_jwt_verify), claims (exp
 * required, 60 s leeway), service account name then namespace bindings (403 "service account
 * name not authorized" / "namespace not authorized"), UID (500 "could not parse UID from
 * claims"), alias (500 "service account namespace and name must be set"), and `sub` equal to
 * "system:serviceaccount:<ns>:<name>" (403 "permission denied"). Fills *sa.
 */
int kms_k8s_login_validate(const struct kms_k8s_login *in, struct kms_k8s_sa *sa,
                           struct kms_err *err) KMS_WUR;

/* go-glob matching as Vault's StrListContainsGlob: '*' matches any run of characters. */
bool kms_glob_match(const char *pattern, const char *s);
/* True when cidr ("10.0.0.0/8", "::1/128", or a bare address) parses. */
bool kms_cidr_valid(const char *cidr);
/* True when addr (IPv4 or IPv6 text) lies in cidr; false for anything unparsable. */
bool kms_cidr_contains(const char *cidr, const char *addr);

/* ---- login configuration helpers (keyset_load.c, claims.c) ------------------------------ */

/*
 * The key set a login config names: PEM keys (JSON array of strings, may be NULL), inline
 * JWKS text and/or a JWKS file (absolute path; a regular file of at most 1 MiB, opened
 * without blocking). 400 with a message that never says whether a path exists.
 */
int kms_keyset_build(const json_t *pems, const char *jwks, const char *jwks_file,
                     struct kms_keyset **out, struct kms_err *err) KMS_WUR;
/* A claim by name, or by JSON pointer when the name starts with '/'; NULL when absent. */
json_t *kms_claims_get(json_t *claims, const char *name);
/* Does claim value `have` match `want` (a string or an array of them), exactly or as globs? */
bool kms_claims_match(const json_t *have, const json_t *want, bool glob);
/* Every bound claim (name -> value or list) is present in `claims` and matches (400 naming
 * the claim otherwise, OpenBao's messages). */
int kms_claims_bound(json_t *claims, const json_t *bound, bool glob, struct kms_err *err) KMS_WUR;
/* The token's header alg is one of `algs` (JSON array of strings); true when algs is empty. */
bool kms_jwt_alg_allowed(const char *jwt, const json_t *algs);
/* A string, integer or boolean claim as text ("" for anything else). */
void kms_claims_string(const json_t *v, char *out, size_t n);

#endif
