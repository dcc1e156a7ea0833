/*
 * api.h - kmsd's Vault-compatible API: one call turns a transport-neutral HTTP request into a
 * response. It owns the request pipeline (namespace, token, route, policy, body limits, JSON,
 * handler, envelope) and the namespace/mount registry; the engines behind it (engine/)
 * register through api/engine.h, and engine/engines.h composes the whole service.
 *
 * The HTTP transport (server/) knows nothing of Vault; this module knows nothing of sockets.
 * Threads: kms_api_handle may be called from several threads at once.
 */
#ifndef KMS_API_H
#define KMS_API_H

#include "crypto/crypto.h"
#include "storage/storage.h"

#include <jansson.h>

struct kms_api;

struct kms_api_limits {
    size_t max_request_size;   /* body bytes; 413 above (default 32 MiB) */
    size_t max_plaintext_size; /* decoded plaintext per item; 413 above (default 64 KiB) */
    size_t max_json_strings;   /* strings (keys + values) per body; 400 above */
    size_t max_json_depth;     /* nesting depth per body; 400 above */
    size_t max_batch_items;    /* batch_input items; 400 above */
};

/* Defaults as documented in docs/config.md. */
void kms_api_limits_default(struct kms_api_limits *l);

struct kms_audit;

struct kms_api_opts {
    struct kms_api_limits limits;
    const char *version;     /* reported by sys/health */
    double rate_limit;       /* requests per second per token; 0 = off */
    double rate_limit_burst; /* bucket size (0 = 2 x rate_limit) */
    struct kms_audit *audit; /* audit broker (borrowed, outlives the API); NULL = none */
    /* where answers of 500 are reported (at most one line a second: the request's path and the
     * error, never its data), so that a full store or disk shows in the server log, and what an
     * engine reports with kms_api_log (level "info": the detail in `error`); NULL = nowhere */
    void (*log)(const char *level, const char *msg, const char *path, const char *error);
};

/* The request body as json_loadb(JSON_DECODE_ANY | JSON_REJECT_DUPLICATES) reads it (the
 * same tree, or NULL with jansson's error in err), lexed by yajl wherever the two readers
 * agree (api/jsonbody.c). Caller decrefs. */
json_t *kms_json_body_load(const uint8_t *p, size_t n, json_error_t *err);
/* yajl's reading alone: jansson's tree, or NULL when the text is for jansson to read (a
 * refusal, or a case where the two readers could differ). Caller decrefs. */
json_t *kms_json_body_yajl(const uint8_t *p, size_t n);

/*
 * Process-wide, once, before any thread: glibc malloc thresholds sized for the pipeline's
 * request-sized buffers (a 1000-item batch allocates ~1 MB of bodies, trees, items and lines).
 * With glibc's defaults each such request gets fresh mmap'd or trimmed-and-refaulted pages;
 * see docs/performance.md ("Heap pages per request"). kmsd and kmsd-apibench call it.
 */
void kms_api_malloc_tune(void);

/* Create the pipeline over an open store (borrowed; must outlive the API), with no engine
 * yet: engines are added with kms_api_engine_add (api/engine.h). Use kms_engines_create
 * (engine/engines.h) for the whole service. */
int kms_api_create(struct kms_storage *st, const struct kms_api_opts *opts, struct kms_api **out,
                   struct kms_err *err) KMS_WUR;
void kms_api_destroy(struct kms_api **api);

/* Longest token kmsd issues or accepts, including the terminating NUL. */
#define KMS_API_TOKEN_MAX 128

/*
 * Read from the store whether sys/init has run and the cluster id (out[37], "" when not):
 * what a standby replica (server/ha.c), which holds no API, reports in sys/health. 0 or -1.
 */
int kms_api_store_status(struct kms_storage *st, bool *initialized, char cluster_id[37]) KMS_WUR;

/* True once sys/init has run on this store. */
bool kms_api_initialized(struct kms_api *api);

/*
 * Dev-mode bootstrap of an empty store: initialise it, create the root token (`root_id`, or a
 * random one when NULL) and mount transit/ in the root namespace. The token is copied to
 * root_out (NUL-terminated).
 */
int kms_api_dev_bootstrap(struct kms_api *api, const char *root_id, char *root_out,
                          size_t root_out_len, struct kms_err *err) KMS_WUR;

/*
 * Run every engine's scheduled work once at time `now` (the KMSKey controller: due rotations
 * and expired deletion countdowns; Transit: auto_rotate_period rotations, event "auto-rotated"
 * with the new version as detail, or "auto-rotation-failed"). *next_due receives the earliest
 * future due time (0 = nothing scheduled). `report` (may not be NULL) is told of each action: event
 * "rotated" (detail = new version), "deleted" (detail = Transit key), "rotation-failed" /
 * "deletion-failed" (detail = error).
 */
int kms_api_tick(struct kms_api *api, int64_t now, int64_t *next_due,
                 void (*report)(const char *event, const char *ns_id, const char *project,
                                const char *name, const char *detail));

struct kms_http_header {
    const char *name; /* as received; matched case-insensitively */
    const char *value;
};

/* A parsed HTTP request; everything borrowed for the duration of kms_api_handle. */
struct kms_http_req {
    const char *method; /* as received: "GET", "LIST", ... */
    const char *target; /* request target: "/v1/transit/keys?list=true" */
    const struct kms_http_header *headers;
    size_t nheaders;
    const uint8_t *body;
    size_t body_len;
    const char *remote_addr;
    int remote_port;
};

/* A copy of r in one malloc'd block of *size bytes (free it with kms_free_wipe: it holds the
 * token and the body), for a request that outlives its parser; NULL when out of memory. */
struct kms_http_req *kms_http_req_copy(const struct kms_http_req *r, size_t *size);

#define KMS_HTTP_MAX_EXTRA_HEADERS 4

struct kms_http_resp {
    int status;
    char *body; /* malloc'd JSON (may be NULL for 204); freed by kms_http_resp_dispose */
    size_t body_len;
    char content_type[64]; /* "" = application/json */
    struct {
        char name[32];
        char value[256];
    } extra[KMS_HTTP_MAX_EXTRA_HEADERS]; /* e.g. X-Vault-Namespace echo */
    size_t nextra;
};

/* Run the whole pipeline for one request; always fills resp. Blocks while the request's
 * audit lines are written. */
void kms_api_handle(struct kms_api *api, const struct kms_http_req *req,
                    struct kms_http_resp *resp);
/* Before kms_api_handle, for a caller that would rather not wait on a long handler where it
 * is (an HA replica's worker): true when req's handler may run long, by its route (a write on
 * a KMS_RT_SLOW route: key creation, rotation, import, sign...) or its body (over
 * KMS_LONG_BODY bytes: a batch of more than a few items). Resolves the route only: no token
 * check, no body parse. */
#define KMS_LONG_BODY 2048
bool kms_api_may_run_long(struct kms_api *api, const struct kms_http_req *req);

/*
 * The same pipeline for an event loop, which must never wait for a disk. A request whose
 * audit lines are not yet written (or durable, as docs/audit.md says) is parked: its result
 * is held, and the thread goes on with other work.
 *
 * kms_api_start returns 0 when resp is complete, or 1 when the request is parked: *call is
 * set, and wake(arg) will be called once, from an audit writer thread, when it can go on;
 * the caller then calls kms_api_resume on the thread that started it, which again returns 0
 * (resp complete, call gone) or 1 (parked again, wake comes again). `req` must stay valid
 * until resp is complete. kms_api_abandon gives up on a parked call (its audit wait timed
 * out, or its connection is gone): no wake comes after it returns, resp (may be NULL) gets
 * 500 "internal error", and a request parked before its handler never runs it.
 *
 * A request whose handler may run long (an RSA key generation, a batch: KMS_RT_SLOW) is also
 * parked while its handler runs on a handler thread, and wake comes from that thread when it
 * is done. While it runs (kms_api_running) there is no audit wait to time out: the caller
 * arms no audit_timeout. Abandoning it leaves the handler running: it finishes, records its
 * response line and ends the request on its own thread.
 */
struct kms_api_call;
typedef void (*kms_api_wake_fn)(void *arg);
int kms_api_start(struct kms_api *api, const struct kms_http_req *req, struct kms_http_resp *resp,
                  kms_api_wake_fn wake, void *arg, struct kms_api_call **call) KMS_WUR;
int kms_api_resume(struct kms_api_call *call, struct kms_http_resp *resp) KMS_WUR;
void kms_api_abandon(struct kms_api_call *call, struct kms_http_resp *resp);
/* Before kms_api_abandon: fn(arg, n) is called once when the call ends, on whichever thread
 * ends it (at once, or on the handler thread that runs on with the request's own copy): what
 * the caller kept for the request, such as its body's charge, is given back then. */
void kms_api_on_end(struct kms_api_call *call, void (*fn)(void *arg, size_t n), void *arg,
                    size_t n);
/* At audit_timeout, before abandoning: true when one audit device already recorded every
 * line of the call (another is slow or hung); no wake comes after that, and the caller
 * resumes the call instead (kms_api_resume), as if woken. False: abandon it. */
bool kms_api_settle(struct kms_api_call *call) KMS_WUR;
/* True when the parked call's handler has run (it waits for its response line): its result
 * exists and will be recorded, so it is worth delivering even to a client that has stopped
 * sending (also while it runs on a handler thread). False while it waits for its request
 * line (its handler has not run). */
bool kms_api_handled(const struct kms_api_call *call) KMS_WUR;
/* True while the parked call's handler runs on a handler thread (no audit wait yet). */
bool kms_api_running(const struct kms_api_call *call) KMS_WUR;
/* How long a parked request may wait for its audit lines (audit_timeout), milliseconds. */
int64_t kms_api_audit_timeout_ms(struct kms_api *api);
/*
 * More Prometheus text for sys/metrics from outside the pipeline (the KMS plugin's calls):
 * fn appends to *buf (malloc'd, grown; *len, *cap updated) and returns 0, or -1 when out of
 * memory. Process-wide, like the counters; NULL = none.
 */
typedef int (*kms_metrics_extra_fn)(char **buf, size_t *len, size_t *cap);
void kms_metrics_set_extra(kms_metrics_extra_fn fn);

/* Render a Vault error body ({"errors":[msg]}) for the transport's own refusals. */
void kms_api_error_response(int status, const char *msg, struct kms_http_resp *resp);
/*
 * How much of jansson's parse error to show: its message without the " near '<text>'" tail,
 * which quotes the input around the error (a token, a plaintext, a password in a config file);
 * a duplicate key's message whole (it quotes the key, never a value).
 */
int kms_json_error_len(const json_error_t *jerr);
void kms_http_resp_dispose(struct kms_http_resp *resp);

#endif
