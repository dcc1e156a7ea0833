/*
 * engine.h - what an engine (engine/sys, engine/transit, engine/kmskey, engine/auth) sees of
 * the request pipeline: the request context, the route row, parameter getters, error macros,
 * the namespace/mount registry and the engine descriptor it registers with.
 *
 * An engine is a table of route rows plus optional callbacks. The pipeline (api/dispatch.c)
 * resolves the namespace and mount, picks the row, checks the token and the ACL, writes the
 * audit request line, coerces the row's fields and calls the row's handler for the request's
 * operation; the handler fills the context and the pipeline renders the one envelope.
 *
 * Threads: handlers run concurrently on every worker; engine state must be thread-safe.
 */
#ifndef KMS_API_ENGINE_H
#define KMS_API_ENGINE_H

#include "api/api.h"
#include "auth/auth.h"

#include <jansson.h>

#define KMS_NS_ID_LEN 16
#define KMS_PATH_MAX 512
/* A mount path ("transit/", "auth/k8s/") at most this long: its record's key is "<ns id>/<path>"
 * and storage keys are at most 511 bytes (LMDB). */
#define KMS_MOUNT_PATH_MAX 400
#define KMS_MAX_CAPTURES 4

struct kms_ns {
    char id[KMS_NS_ID_LEN];  /* "root" or 6 base62 characters */
    char path[KMS_PATH_MAX]; /* "" for root, else "org1/" or "org1/team/" */
    int64_t created;
};

struct kms_mount {
    char ns_id[KMS_NS_ID_LEN];
    char path[KMS_PATH_MAX]; /* "transit/", "auth/k8s-host/" */
    char type[32]; /* "transit", "kubernetes", "jwt"; built-ins: "system", "kms", "token" */
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
    KMS_F_DURATION,  /* seconds, from int or "90", "1h30m", "3d" (TypeSignedDurationSecond) */
    KMS_F_UDURATION, /* the same, a negative value refused (TypeDurationSecond) */
    KMS_F_ARRAY,     /* any JSON array, or a comma-separated string */
    KMS_F_MAP,       /* JSON object */
    KMS_F_RAW,       /* anything, untouched (batch_input) */
};

struct kms_field {
    const char *name;
    enum kms_ftype type;
};

struct kms_ctx;
typedef int (*kms_handler_fn)(struct kms_ctx *c);

#define KMS_OP_COUNT (KMS_OP_PATCH + 1)

/* Route flags. */
#define KMS_RT_PUBLIC 0x1   /* no token needed (sys/health, login) */
#define KMS_RT_SYS_TOP 0x4  /* sys/ response: copy data keys to the top level too */
#define KMS_RT_NO_AUDIT 0x8 /* not audited (sys/health, sys/seal-status, sys/init) */
#define KMS_RT_SUDO 0x10    /* root-protected path */
#define KMS_RT_ROOT_NS 0x20 /* root namespace only: 400 in any other (OpenBao's restricted sys) */
/* may run long (RSA key generation, signatures): a write's handler runs on the handler threads
 * (crypto/pool.c), not on the worker's event loop; so does any batch of more than
 * KMS_OFFLOAD_BATCH items, and any request the engine's `slow` hook names */
#define KMS_RT_SLOW 0x40
#define KMS_OFFLOAD_BATCH 1000
#define KMS_OFFLOAD_SMALL_BATCH 16

/* Audit durability of one operation (see docs/audit.md). */
enum kms_effect {
    KMS_EFFECT_WRITE = 0,   /* may change state: the request line is durable before it runs */
    KMS_EFFECT_PURE,        /* changes nothing (unless it creates a key, Vault's upsert) */
    KMS_EFFECT_READ_WRITES, /* a read that may change state (transit/wrapping_key makes the
                             * key on its first read): treated as a write */
};

/* One operation of a route: its handler and how the audit log names it. */
struct kms_route_op {
    kms_handler_fn fn;      /* NULL = the route does not serve this operation (405) */
    const char *audit_op;   /* kmsd's op field ("encrypt"); NULL = Vault's operation name */
    enum kms_effect effect; /* reads and lists are pure unless KMS_EFFECT_READ_WRITES */
};

/*
 * One row of an engine's route table: everything the pipeline needs for the paths it
 * matches. `tmpl` segments are literals, ":name" (one segment matching Vault's name regex),
 * "+seg" (any single segment) and a final "*rest" (the remainder, may contain '/').
 * `on` is indexed by enum kms_op. A row with `exists` turns POST/PUT into "create" when the
 * resource is absent (ACL and handler: on[KMS_OP_CREATE]).
 */
struct kms_route {
    const char *tmpl;
    unsigned flags;
    const struct kms_field *fields;   /* NULL-terminated by name == NULL; NULL = no fields */
    int (*exists)(struct kms_ctx *c); /* 1 yes, 0 no, -1 error */
    const char *resource;             /* audit resource ("KMSKey"); NULL = the engine's */
    /* Space-separated names of the optional path parameters OpenBao's pattern has and this row
     * leaves out (restore's "name"): OpenBao captures them empty, so a body field of that name
     * is replaced (dropped, with the warning) as if the path had given it. NULL = none. */
    const char *absent_caps;
    /* When one row serves several audit ops, names the op from the parameters (called before
     * the handler, so both audit lines agree); NULL or a NULL answer = on[op].audit_op. */
    const char *(*audit_op_of)(const struct kms_ctx *c);
    struct kms_route_op on[KMS_OP_COUNT];
};

/* The end of a route table. */
#define KMS_ROUTES_END                                                                             \
    {                                                                                              \
        .tmpl = NULL                                                                               \
    }

typedef void (*kms_tick_report_fn)(const char *event, const char *ns_id, const char *project,
                                   const char *name, const char *detail);

/*
 * An engine as the pipeline sees it. Built-in engines answer at a fixed path of every
 * namespace (`builtin_path`, e.g. "sys/"; several engines may share one and are tried in
 * registration order); the others are mounted (`type` names them in sys/mounts or sys/auth).
 */
struct kms_engine {
    const char *type;         /* mount type: "transit", "kubernetes", "jwt", "system", ... */
    const char *builtin_path; /* "sys/", "kms/", "auth/token/"; NULL = mounted */
    bool auth_method;         /* mounted under auth/ through sys/auth */
    const char *resource;     /* default audit resource of its routes ("KMSKey"); may be NULL */
    const struct kms_route *routes;
    void *state; /* handed to handlers as c->estate and to the callbacks below */
    /* Remove what the engine stores for mount `m`, or for the whole namespace `ns_id` when m
     * is NULL, inside the caller's write transaction. 0 ok, -1 failure (the caller aborts). */
    int (*purge)(void *state, struct kms_txn *txn, const char *ns_id, const struct kms_mount *m);
    /* After that transaction committed: drop what the engine keeps in memory for it. */
    void (*purged)(void *state, const char *ns_id, const struct kms_mount *m);
    /* Scheduled work at time `now`; *next_due lowered to the engine's next due time. */
    int (*tick)(void *state, int64_t now, int64_t *next_due, kms_tick_report_fn report);
    void (*destroy)(void *state);
    /* After the token and ACL checks, before the request line: refuses a request the engine
     * does not let this token make whatever its policies say (a project-bound token and
     * another project's key): -1 with c->err set (403 "permission denied"), recorded as a
     * policy refusal (allowed=false on both audit lines). NULL = none. */
    int (*authorize)(struct kms_ctx *c);
    /* Before the handler, for a batch of more than KMS_OFFLOAD_SMALL_BATCH items (and up to
     * KMS_OFFLOAD_BATCH) on a route not flagged KMS_RT_SLOW: true when it may run long all the
     * same (Transit: an RSA key), so that it runs on the handler threads. NULL = none. */
    bool (*slow)(struct kms_ctx *c);
    /* A JSON null in a string, int or bool field is that type's zero value, present (OpenBao's
     * framework: mapstructure decodes nil to the zero and GetOk reports it set), rather than
     * an absent field that takes the handler's default. */
    bool null_is_zero;
};

/* Register an engine (copied; state owned by the API from now on, freed with destroy). */
int kms_api_engine_add(struct kms_api *api, const struct kms_engine *e) KMS_WUR;
/* The mounted engine of `type` (NULL when none is registered). */
const struct kms_engine *kms_api_engine_find(struct kms_api *api, const char *type);
/* Visit the registered engines in registration order; stops at the first non-zero return. */
int kms_api_engines_visit(struct kms_api *api, int (*cb)(const struct kms_engine *e, void *arg),
                          void *arg);

#define KMS_CTX_MAX_VERSIONS 32

struct kms_audit_rec;

/*
 * The audit hook's per-request state (api/audit_hook.c). Handlers record the key versions
 * they touch with kms_ctx_note_version and may override `op`/`resource`/`subject` (static or
 * ctx-lifetime strings) when the route row's names do not fit the request.
 */
struct kms_ctx_audit {
    bool armed;          /* this request gets a request and a response line */
    bool request_logged; /* the request line was written after the policy check */
    char request_id[37]; /* request.id on both lines and the envelope's request_id */
    const char *op;
    const char *resource;
    const char *subject;     /* logins: who logged in (JWT sub); else the token's subject */
    char login_subject[256]; /* a login's subject, kept for its response line */
    uint32_t versions[KMS_CTX_MAX_VERSIONS]; /* distinct, ascending */
    size_t nversions;
    bool versions_truncated;
    bool elide_data;   /* the response data is not logged (sys/audit/events: the log itself) */
    bool wait_request; /* the request line must be durable before the handler runs */
    struct kms_audit_rec *rec;
};

/* The pipeline's own state while a request is parked on its audit lines (dispatch.c). */
struct kms_ctx_park {
    /* 0 running; 1 waiting for the request line; 2 for the response line; 3 the handler runs
     * on a handler thread (dispatch.c) */
    int phase;
    int offload; /* phase 3: running, done (worker woken) or abandoned (the thread ends it) */
    int rc;      /* the pipeline's result so far (phase 2) */
    bool head;
    int found;       /* the route lookup's answer (steps 4 and 7) */
    bool have_mount; /* the path names a mount or a built-in path */
    int64_t t0_us;
    struct kms_http_resp resp; /* the response as built so far (extra headers) */
    void (*wake)(void *arg);   /* NULL: the blocking pipeline (kms_api_handle) */
    void *wake_arg;
    struct kms_http_req *req_copy;       /* phase 3: c->http, the request's own copy (dispatch.c) */
    size_t req_copy_len;                 /* its bytes, wiped when it is freed */
    void (*on_end)(void *arg, size_t n); /* kms_api_on_end: called once when the call ends */
    void *on_end_arg;
    size_t on_end_n;
};

/*
 * One item of an encrypt or rewrap batch's batch_results, as values for the audit hook. A
 * handler that writes an audited batch's data as text (data_json) hands the items here too,
 * and the hook writes the response line's data from them (every string HMAC'd as a string
 * leaf of data), byte-for-byte what it writes from the tree
 * {"batch_results":[{"ciphertext":…,"key_version":N,"reference":…} | {"reference":…,"error":…},…]}
 * without the tree being built.
 */
struct kms_batch_result {
    const char *ciphertext; /* NULL: the item failed */
    size_t ciphertext_len;
    uint32_t key_version;
    const char *reference; /* never NULL ("" when none) */
    size_t reference_len;
    const char *error; /* a failed item's error (NULL: left out, it was not UTF-8) */
    size_t error_len;
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
    const struct kms_engine *engine;
    void *estate; /* engine->state */
    const struct kms_route *route;
    size_t ncap;
    const char *cap_names[KMS_MAX_CAPTURES];
    char cap_values[KMS_MAX_CAPTURES][KMS_PATH_MAX];
    bool has_token;
    struct kms_token token;
    json_t *params;   /* request parameters (object), coerced per route fields */
    json_t *warnings; /* array of strings, or NULL */
    /* handler outputs */
    json_t *data; /* response data; NULL and no raw -> 204 (or 200 with warnings_only) */
    json_t *raw;  /* a body sent as is, without the envelope (sys/health) */
    /* the data object already rendered as JSON text (malloc'd), written as is into the
     * envelope instead of `data`; an audited request's response line needs the data as
     * values, so an audited request sets it only with batch_results */
    char *data_json;
    size_t data_json_len;
    /* an audited batch's data_json as values for the response line (audit_hook.c): one
     * malloc'd block with the strings it points to; freed with data_json */
    struct kms_batch_result *batch_results;
    size_t nbatch_results;
    /* batch_results holds the one result of a single encrypt: the response line's data is
     * {"ciphertext":…,"key_version":N}, not {"batch_results":[…]} */
    bool single_result;
    json_t *auth;       /* envelope "auth" block (logins) */
    bool warnings_only; /* answer 200 with data null when there are warnings, else 204 */
    int status;         /* 0 = 200 (or 204); set for batch partial failures */
    char *text;         /* a non-JSON body (Prometheus metrics), malloc'd */
    size_t text_len;
    const char *content_type; /* for text */
    size_t items;             /* batch items processed (metrics) */
    struct kms_err err;       /* set by a failing handler (returns -1) */
    struct kms_ctx_audit audit;
    struct kms_ctx_park park; /* the pipeline's, not for handlers */
};

/* ---- JSON text writer (api/jsonw.c) ----------------------------------------------------- */

/* A growable buffer; `oom` is set by the first failure and turns the rest into no-ops. */
struct kms_jw {
    char *p;
    size_t len, cap;
    bool oom;
};

int kms_jw_reserve(struct kms_jw *w, size_t n);
void kms_jw_raw(struct kms_jw *w, const char *s, size_t n);
/* s[0, n) (UTF-8) as a JSON string, escaped as json_dumps escapes it. */
void kms_jw_str(struct kms_jw *w, const char *s, size_t n);
/* v in decimal, as json_dumps writes a non-negative integer. */
void kms_jw_uint(struct kms_jw *w, uint64_t v);
/* Compact JSON of v, byte-identical to json_dumps(JSON_COMPACT | JSON_ENCODE_ANY); with
 * sort_top an object's own keys are written in byte order (Go's map order). */
void kms_jw_value(struct kms_jw *w, const json_t *v, bool sort_top);

/* ---- parameters (params.c) --------------------------------------------------------------- */

/* Whether s (n bytes) is a name a route's ":name" matches: Vault's \w(([\w-.]+)?\w)?, at most
 * 256 bytes. For names that do not come through the path (restore's backup). */
bool kms_name_valid(const char *s, size_t n);
/* The token a request carries, as the token check reads it: the first X-Vault-Token header
 * when it is not empty, else the first Authorization header's Bearer value; NULL when none.
 * Every reader of the token (the token check, the audit record, lookup-self's id and
 * renew-self's client_token) takes it from here, so all name the token that was checked. */
const char *kms_request_token(const struct kms_http_req *req);
/* Path capture by name ("name" for ":name"); NULL when the route has none. */
const char *kms_cap(const struct kms_ctx *c, const char *name);
/* `s` without leading and trailing '/': *start points into s (or "" for NULL), returns the
 * length ("/file/" -> "file", 4). */
size_t kms_trim_slashes(const char *s, const char **start);
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
/*
 * A duration field's text as OpenBao's framework reads it (parseutil.ParseDurationSecond,
 * then whole seconds toward zero): "" is 0, an int64 is seconds, "<int>d" days, else Go's
 * time.ParseDuration. On failure -1 with Go's message in why ("time: unknown unit ...",
 * "strconv.ParseInt: parsing ..."); beyond KMS_DURATION_MAX_SEC is `time: invalid duration`
 * (Go would wrap around).
 */
int kms_parse_go_duration_second(const char *s, int64_t *out, char *why, size_t whylen) KMS_WUR;
/*
 * The text a Go json.Number keeps of a JSON number: an integer's digits, a real's shortest
 * round-trip form with ".0" when that has no point (as a real was written). "" for a non-number.
 */
void kms_go_number_text(const json_t *v, char *buf, size_t len);
/* Go strconv.ParseBool. */
bool kms_parse_go_bool(const char *s, bool *out);
/* Decode a base64 parameter with Go's message on failure. *out malloc'd (wiped-free). */
int kms_b64_param(const char *s, uint8_t **out, size_t *outlen, struct kms_err *err,
                  int status) KMS_WUR;

/* ---- mount settings (mount_settings.c) --------------------------------------------------- */

/*
 * A tune request's parameters (OpenBao's handleTuneWriteCommon for what kmsd stores) applied
 * to cfg and opts, which hold the settings of the mount at `path` and are changed in place;
 * *desc is the new description or NULL. `token_type` is allowed on "auth/..." paths only.
 * 0, or -1 with c->err set (400 for a bad value).
 */
int kms_mount_tune_params(struct kms_ctx *c, const char *path, json_t *cfg, json_t *opts,
                          const char **desc) KMS_WUR;
/*
 * A tune of mount m by the request's parameters (kms_mount_tune_params), applied to the
 * settings as stored when its write transaction begins (two tunes never lose each other's).
 * 0, or -1 with c->err set (400 for a refused value or no mount).
 */
int kms_mount_tune(struct kms_ctx *c, const struct kms_mount *m) KMS_WUR;
/*
 * Enable a mount of `type` at `path` in the request's namespace, with the tune settings the
 * request gives in `config` (its keys read as a tune's parameters; its own type, description,
 * options and config ignored, as OpenBao's MountConfigInput) and `options`, all stored in one
 * write transaction. A refused setting: its 400 and no mount. -1 with c->err set.
 */
int kms_mount_enable(struct kms_ctx *c, const char *path, const char *type, const char *desc,
                     struct kms_mount *out) KMS_WUR;

/* A mount's stored settings ({"config":{...},"options":{...}}, empty objects when none or
 * unreadable; caller decrefs). */
json_t *kms_mount_tuning_get(struct kms_api *api, const struct kms_mount *m);
/* The built-in token store of namespace ns_id as a mount ("auth/token/", type "token"): it
 * has no record, so sys/auth lists it and its tune reads the system's settings. */
void kms_mount_token_store(const char *ns_id, struct kms_mount *out);
/* A mount as sys/mounts and sys/auth show it, with its settings (tuning may be NULL). */
json_t *kms_mount_info(const struct kms_mount *m, const json_t *tuning);

/* ---- errors and replies (envelope.c) ----------------------------------------------------- */

/* Set c->err and return -1; user errors are 400, internal ones 500 wrapped. */
#define KMS_FAIL(c, status, ...) kms_err_set(&(c)->err, (status), __VA_ARGS__)
#define KMS_FAILW(c, status, ...) kms_err_setw(&(c)->err, (status), __VA_ARGS__)

/* A 404 with an empty errors array (read/list of nothing). */
int kms_fail_notfound(struct kms_ctx *c);
/* Answer 200 with only c->warnings (data null), or 204 when there are none. Returns 0. */
int kms_reply_warnings(struct kms_ctx *c);

/* ---- API services ------------------------------------------------------------------------ */

struct kms_storage *kms_api_storage(struct kms_api *api);
struct kms_auth *kms_api_auth(struct kms_api *api);
/* The audit broker the API was created with (NULL when auditing is off). */
struct kms_audit *kms_api_audit(struct kms_api *api);
const struct kms_api_limits *kms_api_limits(struct kms_api *api);
const char *kms_api_version(struct kms_api *api);
/* sys/init: mark the store initialised and create the root token (copied to root_out). */
int kms_api_init_store(struct kms_api *api, const char *root_id, char *root_out,
                       struct kms_err *err) KMS_WUR;
/* Cluster id generated at init ("" before). */
const char *kms_api_cluster_id(struct kms_api *api);

/* ---- registry of namespaces and mounts (registry.c) -------------------------------------- */

/* Longest namespace whose path prefixes `path`; copies it to *ns and sets *consumed. */
int kms_registry_ns_resolve(struct kms_api *api, const char *path, struct kms_ns *ns,
                            size_t *consumed);
/* Exact namespace by path ("" or "root" = root). 0 found, KMS_STORAGE_NOTFOUND otherwise. */
int kms_registry_ns_get(struct kms_api *api, const char *path, struct kms_ns *ns);
int kms_registry_ns_by_id(struct kms_api *api, const char *id, struct kms_ns *ns);
/* 0 created, 1 when it exists already (unchanged), -1 with err set. */
int kms_registry_ns_create(struct kms_api *api, const char *path, struct kms_ns *out,
                           struct kms_err *err) KMS_WUR;
/* What kms_registry_ns_put does with the custom_metadata of a namespace that exists. */
enum kms_ns_md {
    KMS_NS_KEEP,    /* leave it (create only) */
    KMS_NS_REPLACE, /* replace it with `metadata` (OpenBao's POST) */
    KMS_NS_MERGE,   /* RFC 7396 merge of `metadata` (a null removes a key; OpenBao's PATCH);
                       no namespace → -1 with a 404 "namespace not found" */
};
/*
 * Create namespace `path` with custom_metadata `metadata` (an object of strings, nulls
 * skipped; NULL for none) in one write transaction, or change the metadata of the existing
 * one as `how` says. 0 created, 1 existed, or -1 with err set.
 */
int kms_registry_ns_put(struct kms_api *api, const char *path, const json_t *metadata,
                        enum kms_ns_md how, struct kms_ns *out, struct kms_err *err) KMS_WUR;
/* Namespace `path`'s custom_metadata (an object, empty when none; caller decrefs); 0,
 * KMS_STORAGE_NOTFOUND or -1. */
int kms_registry_ns_metadata(struct kms_api *api, const char *path, json_t **out) KMS_WUR;
/* Deletes the namespace and, through every engine's purge, everything stored in it. */
int kms_registry_ns_delete(struct kms_api *api, const char *path, struct kms_err *err) KMS_WUR;
/* Visit the direct children of namespace `parent` (path), in path order. */
int kms_registry_ns_list(struct kms_api *api, const char *parent,
                         int (*cb)(const struct kms_ns *ns, void *arg), void *arg);

/* Longest mount of namespace ns_id that prefixes path (mount paths end in '/'). */
int kms_registry_mount_resolve(struct kms_api *api, const char *ns_id, const char *path,
                               struct kms_mount *out);
int kms_registry_mount_get(struct kms_api *api, const char *ns_id, const char *path,
                           struct kms_mount *out);
/* `type` must name a registered mountable engine (400 otherwise). */
int kms_registry_mount_add(struct kms_api *api, const char *ns_id, const char *path,
                           const char *type, const char *description, struct kms_mount *out,
                           struct kms_err *err) KMS_WUR;
/* The same with the mount's tuned settings (NULL for none), stored with it in one write
 * transaction: a crash leaves either no mount or the tuned one. */
int kms_registry_mount_add_tuned(struct kms_api *api, const char *ns_id, const char *path,
                                 const char *type, const char *description, const json_t *config,
                                 const json_t *options, struct kms_mount *out,
                                 struct kms_err *err) KMS_WUR;
/* Removes the mount and, through its engine's purge, everything stored under it. */
int kms_registry_mount_remove(struct kms_api *api, const char *ns_id, const char *path,
                              struct kms_err *err) KMS_WUR;
int kms_registry_mount_list(struct kms_api *api, const char *ns_id,
                            int (*cb)(const struct kms_mount *m, void *arg), void *arg);
/*
 * A mount's tuned settings as stored in its record: *out = {"config":{...},"options":{...}}
 * (objects, empty when never tuned; caller decrefs). 0, KMS_STORAGE_NOTFOUND or -1.
 */
int kms_registry_mount_tuning(struct kms_api *api, const char *ns_id, const char *path,
                              json_t **out) KMS_WUR;
/*
 * Move mount `from` to `to` inside namespace ns_id (sys/remount). Engines key their records by
 * "<ns id>/<mount uuid>/", which a move keeps, so only the mount record is rekeyed; one write
 * transaction. 400 "path already in use at ..." when `to` overlaps another mount;
 * KMS_STORAGE_NOTFOUND when there is no mount at `from`.
 */
int kms_registry_mount_move(struct kms_api *api, const char *ns_id, const char *from,
                            const char *to, struct kms_err *err) KMS_WUR;

/* Storage key prefix of a mount's records: "<ns id>/<mount uuid>/", NUL-terminated in out (n
 * bytes); returns its length (snprintf's: the length it needs when n is too small). */
size_t kms_mount_prefix(const struct kms_mount *m, char *out, size_t n);

/* ---- metrics and audit services for engines ---------------------------------------------- */

/* Count one key cache lookup. */
void kms_metrics_cache(bool hit);
/* Count one login: 0 allowed, 1 denied, 2 error. */
void kms_metrics_login(int result);
/* Prometheus text exposition; malloc'd, caller frees. */
char *kms_metrics_prometheus(struct kms_api *api, size_t *len);

/* A line in the server log (kms_api_opts.log; nowhere when it is NULL): level ("info"), what
 * happened, the path it concerns and a detail (never secret: the log is not audited). */
void kms_api_log(struct kms_api *api, const char *level, const char *msg, const char *path,
                 const char *detail);

/* Record a key version the request touched (encrypt, decrypt, rotate, ...). */
void kms_ctx_note_version(struct kms_ctx *c, uint32_t version);

/*
 * An operation the server performs on its own (the KMSKey controller's scheduled rotations and
 * deletions): a request line, durable, before the effect (-1 with err: do not act, retry
 * later), and a response line after it. Subject "system:kmsd-controller". *out is NULL when
 * auditing is off; end is then a no-op.
 */
struct kms_api_audit_event {
    const char *ns_id;
    const char *ns_path;
    const char *path;      /* the equivalent API path, e.g. "transit/keys/org1-p-k/rotate" */
    const char *operation; /* Vault's: "update", "delete" */
    const char *op;        /* kmsd's: "rotate", "delete" */
    const char *key;
    const char *project;    /* NULL when none */
    const char *subject;    /* NULL = "system:kmsd-controller" */
    const char *resource;   /* NULL = "KMSKey" */
    bool pure;              /* changes nothing: the request line need not be durable first */
    const char *client_uid; /* the caller's own request id (kube-apiserver's uid); may be NULL */
    int status;             /* the response line's status when it carries an error (0 = 500) */
};
int kms_api_audit_internal_begin(struct kms_api *api, const struct kms_api_audit_event *ev,
                                 struct kms_audit_rec **out, struct kms_err *err) KMS_WUR;
int kms_api_audit_internal_end(struct kms_audit_rec **rec, const struct kms_api_audit_event *ev,
                               const uint32_t *versions, size_t n, const char *error,
                               struct kms_err *err) KMS_WUR;

#endif
