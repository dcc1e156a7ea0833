/*
 * api_int.h - private to api/: the request context, the route table row, parameter access and
 * the namespace/mount registry shared by the engines (sys.c, transit.c, token.c).
 */
#ifndef KMS_API_INT_H
#define KMS_API_INT_H

#include "api/api.h"
#include "auth/auth.h"
#include "crypto/keyring.h"

#include <jansson.h>
#include <pthread.h>

#define KMS_NS_ID_LEN 16
#define KMS_PATH_MAX 512
#define KMS_MAX_CAPTURES 4

struct kms_ns {
    char id[KMS_NS_ID_LEN];  /* "root" or 6 base62 characters */
    char path[KMS_PATH_MAX]; /* "" for root, else "org1/" or "org1/team/" */
    int64_t created;
};

struct kms_mount {
    char ns_id[KMS_NS_ID_LEN];
    char path[KMS_PATH_MAX]; /* "transit/", "auth/k8s-host/" */
    char type[32];           /* "transit", "kubernetes", "jwt" */
    char uuid[37];
    char accessor[64];
    char description[256];
    int64_t created;
};

/* Field types for parameter coercion, as Vault's framework names them. */
enum kms_ftype {
    KMS_F_STRING,
    KMS_F_INT,
    KMS_F_BOOL,
    KMS_F_DURATION, /* seconds, from int or "90", "1h30m", "3d" */
    KMS_F_ARRAY,    /* any JSON array, or a comma-separated string */
    KMS_F_MAP,      /* JSON object */
    KMS_F_RAW,      /* anything, untouched (batch_input) */
};

struct kms_field {
    const char *name;
    enum kms_ftype type;
};

struct kms_ctx;
typedef int (*kms_handler_fn)(struct kms_ctx *c);

#define KMS_OPBIT(op) (1u << (op))
#define KMS_R KMS_OPBIT(KMS_OP_READ)
#define KMS_L KMS_OPBIT(KMS_OP_LIST)
#define KMS_C KMS_OPBIT(KMS_OP_CREATE)
#define KMS_U KMS_OPBIT(KMS_OP_UPDATE)
#define KMS_D KMS_OPBIT(KMS_OP_DELETE)
#define KMS_CU (KMS_C | KMS_U)

/* Route flags. */
#define KMS_RT_PUBLIC 0x1    /* no token needed (sys/health, login) */
#define KMS_RT_EXISTENCE 0x2 /* POST/PUT is "create" when the resource is absent */
#define KMS_RT_SYS_TOP 0x4   /* sys/ response: copy data keys to the top level too */
#define KMS_RT_NO_AUDIT 0x8  /* not audited (sys/health, sys/seal-status, sys/init) */
#define KMS_RT_SUDO 0x10     /* root-protected path */

/*
 * One row of an engine's route table. `tmpl` segments are literals, ":name" (one segment
 * matching Vault's name regex), ":seg" style captures accept any single segment, and a final
 * "*rest" captures the remainder (may contain '/'). `ops` is a mask of KMS_OPBIT(op).
 */
struct kms_route {
    const char *tmpl;
    unsigned ops;
    unsigned flags;
    kms_handler_fn handler;
    const struct kms_field *fields; /* NULL-terminated by name == NULL; NULL = no fields */
    /* For KMS_RT_EXISTENCE: does the resource exist? 1 yes, 0 no, -1 error. */
    int (*exists)(struct kms_ctx *c);
};

struct kms_audit;
struct kms_audit_rec;

#define KMS_CTX_MAX_VERSIONS 32

/*
 * The audit hook's per-request state (audit_hook.c). Handlers record the key versions they
 * touch with kms_ctx_note_version; a handler whose route the hook's table does not name
 * may set `op`/`resource`/`subject` (static or ctx-lifetime strings).
 */
struct kms_ctx_audit {
    bool armed;          /* this request gets a request and a response line */
    bool request_logged; /* the request line was written after the policy check */
    char request_id[37]; /* request.id on both lines and the envelope's request_id */
    const char *op;
    const char *resource;
    const char *subject; /* logins: who logged in (JWT sub); else the token's subject */
    uint32_t versions[KMS_CTX_MAX_VERSIONS]; /* distinct, ascending */
    size_t nversions;
    bool versions_truncated;
    bool elide_data; /* the response data is not logged (sys/audit/events: the log itself) */
    struct kms_audit_rec *rec;
};

/* Per-request context: everything a handler reads and writes. */
struct kms_ctx {
    struct kms_api *api;
    const struct kms_http_req *http;
    enum kms_op op;
    struct kms_ns ns;        /* namespace the request resolved to */
    struct kms_mount mount;  /* mount the path resolved to (type "system" for sys/) */
    char path[KMS_PATH_MAX]; /* path relative to the namespace, e.g. "transit/keys/k" */
    const char *rel;         /* path relative to the mount (points into path) */
    const struct kms_route *route;
    size_t ncap;
    const char *cap_names[KMS_MAX_CAPTURES];
    char cap_values[KMS_MAX_CAPTURES][KMS_PATH_MAX];
    bool has_token;
    struct kms_token token;
    json_t *params;   /* request parameters (object), coerced per route fields */
    json_t *warnings; /* array of strings, or NULL */
    /* handler outputs */
    json_t *data; /* response data; NULL and no raw -> 204 */
    json_t *raw;  /* a body sent as is, without the envelope (sys/health) */
    json_t *auth; /* envelope "auth" block (logins) */
    int status;   /* 0 = 200 (or 204); set for batch partial failures */
    char *text;   /* a non-JSON body (Prometheus metrics), malloc'd */
    size_t text_len;
    const char *content_type; /* for text */
    size_t items;             /* batch items processed (metrics) */
    struct kms_err err;       /* set by a failing handler (returns -1) */
    struct kms_ctx_audit audit;
};

/* ---- parameters (params.c) --------------------------------------------------------------- */

/* Path capture by name ("name" for ":name"); NULL when the route has none. */
const char *kms_cap(const struct kms_ctx *c, const char *name);
/* Parameter lookups after coercion. Return true when present (and non-null). */
bool kms_param_str(struct kms_ctx *c, const char *name, const char **out);
bool kms_param_int(struct kms_ctx *c, const char *name, int64_t *out);
bool kms_param_bool(struct kms_ctx *c, const char *name, bool *out);
json_t *kms_param(struct kms_ctx *c, const char *name);
/* Add a warning string to the response. */
void kms_warn(struct kms_ctx *c, const char *fmt, ...) KMS_PRINTF(2, 3);
/* Parse a Vault duration ("90", "1h30m", "3d", 3600) to seconds; -1 when invalid. */
int kms_parse_duration(const json_t *v, int64_t *out) KMS_WUR;
int kms_parse_duration_str(const char *s, int64_t *out) KMS_WUR;
/* Coerce known fields of c->params in place and warn about unknown ones (400 on bad type). */
int kms_params_apply_fields(struct kms_ctx *c) KMS_WUR;
/* Go strconv.ParseBool. */
bool kms_parse_go_bool(const char *s, bool *out);

/* Decode a base64 parameter with Go's message on failure. *out malloc'd (wiped-free). */
int kms_b64_param(const char *s, uint8_t **out, size_t *outlen, struct kms_err *err,
                  int status) KMS_WUR;

/* ---- JSON body limits (jsonlim.c) -------------------------------------------------------- */

/* Scan JSON text before parsing: count strings and depth. 0 ok, -1 with err set (400). */
int kms_json_precheck(const uint8_t *p, size_t n, const struct kms_api_limits *lim,
                      struct kms_err *err) KMS_WUR;

/* ---- registry of namespaces and mounts (registry.c) -------------------------------------- */

struct kms_storage *kms_api_storage(struct kms_api *api);
struct kms_auth *kms_api_auth(struct kms_api *api);
const struct kms_api_limits *kms_api_limits(struct kms_api *api);
const char *kms_api_version(struct kms_api *api);

/* sys/init: mark the store initialised and create the root token (copied to root_out). */
int kms_api_init_store(struct kms_api *api, const char *root_id, char *root_out,
                       struct kms_err *err) KMS_WUR;
/* Cluster id generated at init ("" before). */
const char *kms_api_cluster_id(struct kms_api *api);

/* Longest namespace whose path prefixes `path`; copies it to *ns and sets *consumed. */
int kms_registry_ns_resolve(struct kms_api *api, const char *path, struct kms_ns *ns,
                            size_t *consumed);
/* Exact namespace by path ("" or "root" = root). 0 found, KMS_STORAGE_NOTFOUND otherwise. */
int kms_registry_ns_get(struct kms_api *api, const char *path, struct kms_ns *ns);
int kms_registry_ns_by_id(struct kms_api *api, const char *id, struct kms_ns *ns);
int kms_registry_ns_create(struct kms_api *api, const char *path, struct kms_ns *out,
                           struct kms_err *err) KMS_WUR;
int kms_registry_ns_delete(struct kms_api *api, const char *path, struct kms_err *err) KMS_WUR;
/* Visit the direct children of namespace `parent` (path), in path order. */
int kms_registry_ns_list(struct kms_api *api, const char *parent,
                         int (*cb)(const struct kms_ns *ns, void *arg), void *arg);

/* Longest mount of namespace ns_id that prefixes path (mount paths end in '/'). */
int kms_registry_mount_resolve(struct kms_api *api, const char *ns_id, const char *path,
                               struct kms_mount *out);
int kms_registry_mount_get(struct kms_api *api, const char *ns_id, const char *path,
                           struct kms_mount *out);
int kms_registry_mount_add(struct kms_api *api, const char *ns_id, const char *path,
                           const char *type, const char *description, struct kms_mount *out,
                           struct kms_err *err) KMS_WUR;
int kms_registry_mount_remove(struct kms_api *api, const char *ns_id, const char *path,
                              struct kms_err *err) KMS_WUR;
int kms_registry_mount_list(struct kms_api *api, const char *ns_id,
                            int (*cb)(const struct kms_mount *m, void *arg), void *arg);

/* Storage key prefix of a mount's records: "<ns id>/<mount uuid>/". */
void kms_mount_prefix(const struct kms_mount *m, char *out, size_t n);

/* ---- engines ----------------------------------------------------------------------------- */

extern const struct kms_route kms_sys_routes[];
extern const struct kms_route kms_transit_routes[];
extern const struct kms_route kms_token_routes[];
extern const struct kms_route kms_kubernetes_routes[]; /* auth_methods.c */
extern const struct kms_route kms_jwt_routes[];        /* auth_methods.c */

/* sys/auth and sys/policy(ies) handlers, listed in sys.c's route table. */
int kms_sys_auth_list(struct kms_ctx *c);
int kms_sys_auth_one(struct kms_ctx *c);
extern const struct kms_field kms_sys_auth_fields[];
int kms_sys_policy_list(struct kms_ctx *c); /* policy.c */
int kms_sys_policy_one(struct kms_ctx *c);
extern const struct kms_field kms_sys_policy_fields[];

/* Vault's "auth" block for a token (token.c); malloc'd JSON, NULL when out of memory. */
json_t *kms_token_auth_block(const struct kms_token *t, const char *client_token);
/*
 * Renewal of a login token goes back to its method (auth_methods.c): the role's current
 * ttl / max_ttl / period into *out. 0 done, 1 not a login token, -1 with c->err set (400
 * "failed to renew entry: role <r> does not exist during renewal").
 */
int kms_auth_login_renew_params(struct kms_ctx *c, const struct kms_token *tok,
                                struct kms_token_ttl *out);
/* Answer 200 with only c->warnings (data null), or 204 when there are none. */
int kms_reply_warnings(struct kms_ctx *c);
extern const struct kms_route kms_kms_routes[];

/* KMSKey controller state (api/kms.c), owned by the API object. */
struct kms_sched;
int kms_kms_sched_create(struct kms_api *api, struct kms_sched **out) KMS_WUR;
void kms_kms_sched_destroy(struct kms_sched **s);
struct kms_sched *kms_api_kms_sched(struct kms_api *api);
int64_t kms_api_kms_deletion_delay(struct kms_api *api);
/* The KMSKey rotation interval syntax (Go durations plus d, whole units); seconds >= 1. */
int kms_kmskey_interval_parse(const char *s, int64_t *out) KMS_WUR;

/*
 * Transit operations for the KMSKey engine, outside any HTTP request. Each is one storage
 * transaction. get/destroy return KMS_STORAGE_NOTFOUND for a missing key. create never
 * replaces an existing key (*existed tells) and creates keys with deletion_allowed=false and
 * exportable=false. raise_floor sets min_decryption_version (never lowers it) and destroys
 * the versions below it.
 */
int kms_transit_key_get(struct kms_api *api, const struct kms_mount *m, const char *name,
                        struct kms_key_policy *p, int64_t *last_rotated, struct kms_err *err);
int kms_transit_key_create(struct kms_api *api, const struct kms_mount *m, const char *name,
                           enum kms_key_type type, struct kms_key_policy *out, bool *existed,
                           struct kms_err *err) KMS_WUR;
int kms_transit_key_rotate(struct kms_api *api, const struct kms_mount *m, const char *name,
                           struct kms_key_policy *out, struct kms_err *err) KMS_WUR;
int kms_transit_key_raise_floor(struct kms_api *api, const struct kms_mount *m, const char *name,
                                uint32_t version, struct kms_key_policy *out,
                                struct kms_err *err) KMS_WUR;
int kms_transit_key_destroy(struct kms_api *api, const struct kms_mount *m, const char *name,
                            struct kms_err *err) KMS_WUR;

/* Key and version lookups through the key cache for the other Transit endpoints:
 * read_key returns 0, KMS_STORAGE_NOTFOUND or -1; read_version fails with a 400
 * "no such key version" or a 500 in err. */
int kms_transit_read_key(struct kms_ctx *c, const char *name, struct kms_key_policy *p);
int kms_transit_read_version(struct kms_ctx *c, const char *name, uint32_t version,
                             struct kms_key_version *out, struct kms_err *err);

/* transit_hmac.c: hmac, verify (HMAC), sign (refused for symmetric keys), hash, random. */
int kms_transit_hmac(struct kms_ctx *c);
int kms_transit_verify(struct kms_ctx *c);
int kms_transit_sign(struct kms_ctx *c);
int kms_transit_hash(struct kms_ctx *c);
int kms_transit_random(struct kms_ctx *c);
extern const struct kms_field kms_transit_hmac_fields[];
extern const struct kms_field kms_transit_verify_fields[];
extern const struct kms_field kms_transit_hash_fields[];
extern const struct kms_field kms_transit_random_fields[];

/* Remove every record a transit mount owns (on unmount / namespace delete). */
int kms_transit_purge(struct kms_txn *txn, const struct kms_mount *m) KMS_WUR;

/* ---- key cache (keycache.c) ------------------------------------------------------------- */

struct kms_keycache;
int kms_keycache_create(size_t max_entries, struct kms_keycache **out) KMS_WUR;
void kms_keycache_destroy(struct kms_keycache **kc);
/* Sequence to take before reading storage; a put is dropped if a write happened since. */
uint64_t kms_keycache_seq(struct kms_keycache *kc);
bool kms_keycache_get_policy(struct kms_keycache *kc, const char *key, struct kms_key_policy *out);
void kms_keycache_put_policy(struct kms_keycache *kc, const char *key,
                             const struct kms_key_policy *p, uint64_t seq);
bool kms_keycache_get_version(struct kms_keycache *kc, const char *key, uint32_t version,
                              struct kms_key_version *out);
void kms_keycache_put_version(struct kms_keycache *kc, const char *key,
                              const struct kms_key_version *v, uint64_t seq);
/* After a committed write to `key` (the key's storage key): drop its entry. */
void kms_keycache_invalidate(struct kms_keycache *kc, const char *key);
/* After a mount or namespace is removed. */
void kms_keycache_clear(struct kms_keycache *kc);
struct kms_keycache *kms_api_keycache(struct kms_api *api);

/* ---- per-token rate limit (ratelimit.c) ------------------------------------------------- */

struct kms_ratelimit;
int kms_ratelimit_create(double rate, double burst, struct kms_ratelimit **out) KMS_WUR;
void kms_ratelimit_destroy(struct kms_ratelimit **rl);
/* Take one request for `id`: 1 allowed, 0 refused with *retry_after seconds. */
int kms_ratelimit_take(struct kms_ratelimit *rl, const char *id, int *retry_after);
/* NULL when rate limiting is off. */
struct kms_ratelimit *kms_api_ratelimit(struct kms_api *api);

/* ---- metrics (metrics.c): lock-free counters ------------------------------------------- */

/* Count one answered request (route NULL when none matched). */
void kms_metrics_request(const struct kms_route *r, const char *mount_type, int status,
                         uint64_t micros, size_t items);
/* Count one login: 0 allowed, 1 denied, 2 error. */
void kms_metrics_login(int result);
void kms_metrics_cache(bool hit);
/* Prometheus text exposition; malloc'd, caller frees. */
char *kms_metrics_prometheus(struct kms_api *api, size_t *len);

/* ---- audit (audit_hook.c, sys_audit.c) ------------------------------------------------ */

/* The audit broker the API was created with (NULL when auditing is off). */
struct kms_audit *kms_api_audit(struct kms_api *api);
/* Before the token check: decide whether this request is audited, pick its request id. */
void kms_audit_hook_arm(struct kms_ctx *c);
/*
 * After the policy check, before routing failures and the handler: write the request line.
 * -1 (c->err = 500 internal error) when no device recorded it: the request must stop here.
 */
int kms_audit_hook_request(struct kms_ctx *c) KMS_WUR;
/*
 * After the handler (rc is its result, or the pipeline's): write the request line if the
 * request was refused before it (bad token, ACL denial: both lines carry the error), then the
 * response line. Returns rc, or -1 with c->err = 500 and the outputs dropped when a line
 * could not be written. Also releases the hook's state.
 */
int kms_audit_hook_response(struct kms_ctx *c, int rc);
/* Record a key version the request touched (encrypt, decrypt, rotate, ...). */
void kms_ctx_note_version(struct kms_ctx *c, uint32_t version);

/*
 * An operation the server performs on its own (the KMSKey controller's scheduled rotations and
 * deletions): a request line, durable, before the effect (-1 with err: do not act, retry
 * later), and a response line after it. Subject "system:kmsd-controller". *out is NULL when
 * auditing is off; end is then a no-op.
 */
struct kms_audit_internal {
    const char *ns_id;
    const char *ns_path;
    const char *path;      /* the equivalent API path, e.g. "transit/keys/org1-p-k/rotate" */
    const char *operation; /* Vault's: "update", "delete" */
    const char *op;        /* kmsd's: "rotate", "delete" */
    const char *key;
    const char *project; /* NULL when none */
};
int kms_audit_internal_begin(struct kms_api *api, const struct kms_audit_internal *ev,
                             struct kms_audit_rec **out, struct kms_err *err) KMS_WUR;
int kms_audit_internal_end(struct kms_audit_rec **rec, const struct kms_audit_internal *ev,
                           const uint32_t *versions, size_t n, const char *error,
                           struct kms_err *err) KMS_WUR;

int kms_sys_audit_hash(struct kms_ctx *c);
int kms_sys_audit_list(struct kms_ctx *c);
int kms_sys_audit_events(struct kms_ctx *c);
int kms_sys_audit_refuse(struct kms_ctx *c);
extern const struct kms_field kms_sys_audit_hash_fields[];
extern const struct kms_field kms_sys_audit_events_fields[];

/* ---- envelope helpers (envelope.c) ------------------------------------------------------- */

/* Set c->err and return -1; user errors are 400, internal ones 500 wrapped. */
#define KMS_FAIL(c, status, ...) kms_err_set(&(c)->err, (status), __VA_ARGS__)
#define KMS_FAILW(c, status, ...) kms_err_setw(&(c)->err, (status), __VA_ARGS__)

/* A 404 with an empty errors array (read/list of nothing). */
int kms_fail_notfound(struct kms_ctx *c);

/* Build a response body from c (envelope, raw or error) into resp. */
void kms_render(struct kms_ctx *c, int handler_rc, struct kms_http_resp *resp);

#endif
