/*
 * api_int.h - private to api/: the pipeline's own steps (body limits, fields, audit hook,
 * rate limit, metrics, rendering) and the engine list. Engines include api/engine.h only.
 */
#ifndef KMS_API_INT_H
#define KMS_API_INT_H

#include "api/engine.h"

/* ---- engines (registry.c) ---------------------------------------------------------------- */

/* kms_api_engines_visit: api/engine.h */

/*
 * Change mount `path`'s settings in one write transaction, under the registry's lock: fn gets
 * deep copies of the stored config and options (empty objects when none) to change in place,
 * and may set *desc (a new description, valid until it returns). 0; KMS_STORAGE_NOTFOUND; -1
 * with err set; -2 when fn refused (fn reported why, err untouched).
 */
int kms_registry_mount_retune(struct kms_api *api, const char *ns_id, const char *path,
                              int (*fn)(json_t *cfg, json_t *opts, const char **desc, void *arg),
                              void *arg, struct kms_err *err) KMS_WUR;

/* ---- handler threads (crypto/pool.c) ------------------------------------------------------ */

/* The pipeline's handler threads, for handlers that may run long. */
struct kms_pool *kms_api_offload(struct kms_api *api);
/* CLOCK_MONOTONIC in microseconds (request timing, metrics). */
int64_t kms_api_mono_us(void);

/* ---- envelope (envelope.c) ---------------------------------------------------------------- */

/* A successful answer of c is a 204 (no data, no auth, and not warnings_only with warnings):
 * the rule the rendered answer and its audit line share. */
bool kms_ctx_no_content(const struct kms_ctx *c);

/* ---- parameters (params.c) --------------------------------------------------------------- */

/* Coerce known fields of c->params in place and warn about unknown ones (400 on bad type). */
int kms_params_apply_fields(struct kms_ctx *c) KMS_WUR;

/* ---- JSON body limits (jsonlim.c) -------------------------------------------------------- */

/* Scan JSON text before parsing: count strings and depth. 0 ok, -1 with err set (400). */
int kms_json_precheck(const uint8_t *p, size_t n, const struct kms_api_limits *lim,
                      struct kms_err *err) KMS_WUR;
/* The index of the quote that closes the string opened by the quote at p[open], or n when it
 * is not closed. Escapes are skipped, nothing is validated. */
size_t kms_json_string_end(const uint8_t *p, size_t n, size_t open);

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

/* ---- audit hook (audit_hook.c) ----------------------------------------------------------- */

/* Before the token check: decide whether this request is audited, pick its request id. */
void kms_api_audit_arm(struct kms_ctx *c);
/*
 * After the policy check, before routing failures and the handler: queue the request line.
 * -1 (c->err = 500 internal error) when no device took it: the request must stop here. When
 * the request may change state, c->audit.wait_request is set: its line must be durable before
 * the handler runs (kms_api_audit_wait or a notification, then kms_api_audit_request_done).
 */
int kms_api_audit_request(struct kms_ctx *c) KMS_WUR;
/* After the request line is finished: -1 (c->err = 500, the hook disarmed) when no device
 * recorded it. */
int kms_api_audit_request_done(struct kms_ctx *c) KMS_WUR;
/*
 * After the handler (rc is its result, or the pipeline's): queue the request line if the
 * request was refused before it (bad token, ACL denial: both lines carry the error), then the
 * response line. Returns rc, or -1 with c->err = 500 and the outputs dropped when no device
 * took a line. Then, once the lines are finished, kms_api_audit_finish.
 */
int kms_api_audit_response(struct kms_ctx *c, int rc);
/* Whether the request has audit lines to wait for (c->audit.rec is set). */
bool kms_api_audit_pending(const struct kms_ctx *c);
/* Block until the record's lines are finished (the synchronous pipeline). -1 when the time
 * ran out. */
int kms_api_audit_wait(struct kms_ctx *c) KMS_WUR;
/*
 * The lines are finished: returns rc, or -1 with c->err = 500 and the outputs dropped when
 * no device recorded them. Releases the hook's state.
 */
int kms_api_audit_finish(struct kms_ctx *c, int rc);
/*
 * Forget the record and every output of the handler (a record that could not be written, a
 * parked request given up): no notification after this returns, a handler not yet run never
 * runs, and the client gets only 500 "internal error". Returns -1.
 */
int kms_api_audit_abandon(struct kms_ctx *c);
/*
 * Known-answer tests (tests/api/test_audit_line_kat.c): the bodies of the request and the
 * response line the hook writes for c ended with rc, as device `o` with `salt` at `time`
 * (both lines at that time; `refused`: the token/policy refusal's layout, allowed=false and
 * the error on both lines). *req and *resp are malloc'd. 0, or -1.
 */
struct kms_audit_device_opts;
int kms_api_audit_format_kat(struct kms_ctx *c, int rc, bool refused,
                             const struct kms_audit_device_opts *o, const char *salt,
                             const char *time, char **req, size_t *reqlen, char **resp,
                             size_t *resplen) KMS_WUR;

/* ---- envelope (envelope.c) --------------------------------------------------------------- */

/* Build a response body from c (envelope, raw or error) into resp. */
void kms_render(struct kms_ctx *c, int handler_rc, struct kms_http_resp *resp);

/* An answer of 500: its path and error to the log (registry.c; at most one a second). */
void kms_api_log_failure(struct kms_api *api, const char *path, const char *error);

#endif
