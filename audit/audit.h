/*
 * audit.h - kmsd's audit log: Vault file-audit JSON lines, secrets HMAC'd under a per-device
 * salt, a SHA-256 hash chain over the lines (continued across rotated files), a group-commit
 * writer per device, and the offline tools built on the same code (verify, query).
 *
 * A line is one JSON object:
 *
 *   {"time":…,"type":"request"|"response","auth":{…},"request":{…},"response":{…},
 *    "error":…, <kmsd fields: subject, op, key, key_version, …>,
 *    "seq":N,"prev_hash":"sha256:<hex>","hash":"sha256:<hex>"}
 *
 * `hash` is SHA-256 over the line's bytes up to (not including) `,"hash":`; `prev_hash` is the
 * previous line's `hash` (64 zeros before the first line). See docs/audit.md.
 *
 * Threads: kms_audit_rec_* may be called from any number of threads at once (one record by one
 * thread at a time). Lines are written by one writer thread per device; a caller either
 * blocks until its lines are finished (kms_audit_rec_wait, kms_audit_rec_log) or asks to be
 * called back (kms_audit_rec_notify) and does other work meanwhile.
 * kms_audit_reopen may be called from any thread. Everything else is single-threaded setup.
 */
#ifndef KMS_AUDIT_H
#define KMS_AUDIT_H

#include "crypto/crypto.h"
#include "storage/storage.h"

#include <jansson.h>
#include <stdio.h>

/* ---- devices and the broker -------------------------------------------------------------- */

enum kms_audit_fsync {
    KMS_AUDIT_FSYNC_BATCH,  /* group commit: one write + fdatasync per batch, callers wait */
    KMS_AUDIT_FSYNC_ALWAYS, /* one write + fdatasync per line, no batching */
    KMS_AUDIT_FSYNC_NEVER,  /* write(2) before the caller continues, no fsync (Vault's way) */
};

#define KMS_AUDIT_MAX_DEVICES 4
#define KMS_AUDIT_NAME_MAX 32
#define KMS_AUDIT_PATH_MAX 1024
#define KMS_AUDIT_HMAC_PREFIX "hmac-sha256:"
#define KMS_AUDIT_HMAC_LEN (12 + 64) /* "hmac-sha256:" + 64 hex, without the NUL */
#define KMS_AUDIT_HASH_LEN (7 + 64)  /* "sha256:" + 64 hex, without the NUL */
#define KMS_AUDIT_DEFAULT_TIMEOUT_MS 10000

struct kms_audit_device_opts {
    char name[KMS_AUDIT_NAME_MAX]; /* [a-z0-9_-]+, the <device> of sys/audit-hash/<device> */
    char path[KMS_AUDIT_PATH_MAX]; /* the log file */
    enum kms_audit_fsync fsync;
    unsigned mode;      /* permission bits of the file (exec bits stripped); 0 keeps them */
    bool hmac_accessor; /* HMAC token accessors too (Vault's default: true) */
};

/* name "file", fsync batch, mode 0600, hmac_accessor true, empty path. */
void kms_audit_device_opts_default(struct kms_audit_device_opts *o);
/* "always" | "batch" | "never"; -1 otherwise. */
int kms_audit_fsync_parse(const char *s, enum kms_audit_fsync *out) KMS_WUR;
const char *kms_audit_fsync_name(enum kms_audit_fsync f);

/* Where the broker reports I/O trouble (writer threads included); may be NULL. */
typedef void (*kms_audit_log_fn)(void *arg, const char *level, const char *msg);

struct kms_audit_opts {
    const struct kms_audit_device_opts *devices;
    size_t ndevices;    /* 0 = auditing off: nothing recorded, nothing enforced */
    int64_t timeout_ms; /* bound on waiting for a line to be durable; 0 = default (10 s) */
    kms_audit_log_fn log;
    void *log_arg;
    /* HA replicas (docs/ha.md): each keeps its own file and chain; the head record in storage
     * is then "audit/<device>/head/<replica>" (NULL: "audit/<device>/head"). The salt stays
     * one per device, shared by the replicas. Copied. */
    const char *replica;
};

struct kms_audit;

/*
 * Open every device: create or open its file (refusing non-regular files), recover the chain
 * head from the file's last line (a torn last line, left by a crash before it was
 * acknowledged, is cut off), or from storage when the file is empty, and start its writer.
 * Salts and chain heads live in storage meta under "audit/<name>/"; `st` (borrowed, must
 * outlive the broker) may be NULL, then salts are random per process and heads are not kept.
 * Caller destroys with kms_audit_destroy.
 */
int kms_audit_create(struct kms_storage *st, const struct kms_audit_opts *opts,
                     struct kms_audit **out, struct kms_err *err) KMS_WUR;
/* Drain and stop the writers, record each chain head in storage, close the files. */
void kms_audit_destroy(struct kms_audit **a);

/* Counters for metrics, summed over the devices (thread-safe, cheap). */
struct kms_audit_stats {
    size_t queued;     /* batches waiting to be written */
    size_t pending;    /* lines queued whose group is not finished (written and synced) */
    uint64_t fsyncs;   /* fdatasync calls */
    uint64_t fsync_us; /* time spent in them */
    uint64_t failures; /* records that could not be written on any device */
};
void kms_audit_stats_get(struct kms_audit *a, struct kms_audit_stats *st);
size_t kms_audit_ndevices(const struct kms_audit *a);
/* The HA replica whose chain the devices keep (kms_audit_opts.replica), or NULL. */
const char *kms_audit_replica(const struct kms_audit *a);
/* Options of device i (i < ndevices) copied to *out. */
void kms_audit_device_get(const struct kms_audit *a, size_t i, struct kms_audit_device_opts *out);

/*
 * Reopen every device's file by path (SIGHUP after logrotate). The chain continues in the new
 * file. A device whose file cannot be opened fails every write (fail-closed) and retries the
 * open before each later write. Returns 0 when every device reopened; else -1 with err naming
 * the first failure.
 */
int kms_audit_reopen(struct kms_audit *a, struct kms_err *err) KMS_WUR;

/*
 * HMAC of `input` under device `name`'s salt, as "hmac-sha256:<hex>" in out. Returns 0,
 * KMS_STORAGE_NOTFOUND for an unknown device, or -1.
 */
int kms_audit_hash_input(struct kms_audit *a, const char *name, const char *input, size_t n,
                         char out[KMS_AUDIT_HMAC_LEN + 1]) KMS_WUR;

/* ---- records ----------------------------------------------------------------------------- */

/*
 * One request's pair of lines. `auth` and `request` are Vault's blocks with raw values (the
 * client token, accessors and request data in clear); the broker HMACs them per device
 * (Vault's rules, audit-hash rules in docs/audit.md) once and reuses the result for both
 * lines. References to auth and request are taken. Caller destroys with kms_audit_rec_destroy.
 */
struct kms_audit_rec;
int kms_audit_rec_create(struct kms_audit *a, json_t *auth, json_t *request,
                         struct kms_audit_rec **out) KMS_WUR;
void kms_audit_rec_destroy(struct kms_audit_rec **r);

/*
 * Queue one line of type "request" or "response" on every device, without waiting: each
 * device's writer writes it, and with `durable` also syncs it (per the device's fsync mode).
 * `response` (response lines only, may be NULL) has raw data and auth; `error` may be NULL;
 * `extra` (may be NULL) holds kmsd's own top-level fields, written in clear. All borrowed.
 * Returns 0 when at least one device queued it (or none is configured); else -1 and err =
 * 500 "internal error" (the cause goes to *cause when not NULL, and to the log callback).
 */
int kms_audit_rec_post(struct kms_audit_rec *r, const char *type, bool durable, json_t *response,
                       const char *error, json_t *extra, struct kms_err *err, char *cause,
                       size_t causelen) KMS_WUR;

/*
 * Be told when every line posted so far is finished (written or durable, as each asked, or
 * failed): fn(arg) is called once, on a writer thread, unless the record is destroyed first
 * (after kms_audit_rec_destroy returns it is never called). Returns 0 when they already are
 * finished (fn is not called), 1 when fn will be. One notification at a time.
 */
typedef void (*kms_audit_notify_fn)(void *arg);
int kms_audit_rec_notify(struct kms_audit_rec *r, kms_audit_notify_fn fn, void *arg) KMS_WUR;

/*
 * At the deadline of a wait (audit_timeout): true when one device already has every line
 * posted so far without a failure, and then the notification is cancelled (the lines still
 * owed by a slow or hung device are told to nobody) and kms_audit_rec_status answers 0.
 * False: nothing changes.
 */
bool kms_audit_rec_settle(struct kms_audit_rec *r) KMS_WUR;

/* Block until every posted line is finished, at most the broker's timeout. 0 (also when the
 * time ran out but kms_audit_rec_settle holds), or -1 when the time ran out (err 500, cause
 * logged as by kms_audit_rec_status). */
int kms_audit_rec_wait(struct kms_audit_rec *r, struct kms_err *err, char *cause,
                       size_t causelen) KMS_WUR;

/*
 * Once the posted lines are finished: 0 when at least one device recorded every line posted
 * on the record so far (Vault's rule, per device), else -1 and err = 500 "internal error"
 * (the cause to *cause and the log callback). Without devices, 0.
 */
int kms_audit_rec_status(struct kms_audit_rec *r, struct kms_err *err, char *cause,
                         size_t causelen) KMS_WUR;

/*
 * Writer wake-ups once per pass of an event loop. After kms_audit_defer_wakeups(arm, arg) on a
 * thread, a line posted there that finds its device's writer with nothing queued does not wake
 * the writer at once: arm(arg) is called (once, until the next kms_audit_wake_deferred), and
 * the caller calls kms_audit_wake_deferred on the same thread when its pass ends, so the lines
 * of one pass go to the disk as one group instead of the first alone. A line that joins a
 * queue whose wake-up a deferring thread owes is owed by its own thread too (at once on a
 * thread that does not defer). kms_audit_rec_wait wakes the deferred writers before it blocks.
 * kms_audit_defer_wakeups(NULL, NULL) wakes them and ends the deferral. Threads that never call it
 * wake the writer at once.
 */
void kms_audit_defer_wakeups(void (*arm)(void *), void *arg);
void kms_audit_wake_deferred(void);

/* kms_audit_rec_post, then kms_audit_rec_wait, then kms_audit_rec_status: the blocking form. */
int kms_audit_rec_log(struct kms_audit_rec *r, const char *type, bool durable, json_t *response,
                      const char *error, json_t *extra, struct kms_err *err, char *cause,
                      size_t causelen) KMS_WUR;

/*
 * The body "{…}" of one line (everything before the chain fields) as device `o` with `salt`
 * writes it, at the given time text and type; the same inputs as kms_audit_rec_create and
 * kms_audit_rec_log. *out is malloc'd (NUL-terminated, *len bytes). For known-answer tests
 * (tests/audit/test_line_kat.c, tests/api/test_audit_line_kat.c).
 */
int kms_audit_format_body(const struct kms_audit_device_opts *o, const char *salt, json_t *auth,
                          json_t *request, const char *time, const char *type, json_t *response,
                          const char *error, json_t *extra, char **out, size_t *len) KMS_WUR;

/* ---- records written straight into the line ---------------------------------------------- */

/*
 * The blocks of a line written by the caller, with no JSON tree: kms_audit_rec_create_w calls
 * `blocks` once per device to write `"auth":{…},"request":{…}` (both lines reuse it), and
 * kms_audit_rec_post_w calls `tail` once per device for what follows them (`"response":{…}`,
 * `"error":…`, kmsd's fields), each time with a writer bound to that device's salt and
 * options. The writer applies no hashing rule on its own: the caller picks the call for each
 * value (Vault's rules, "What is hashed" in docs/audit.md). Output is byte-for-byte what the
 * tree form gives for the same values: keys in call order, jansson's JSON_ENSURE_ASCII
 * escaping. Every call after a failure is a no-op and the line is refused. A write function
 * returns 0, or -1 to refuse the line.
 */
struct kms_audit_lw;
typedef int (*kms_audit_write_fn)(struct kms_audit_lw *w, void *arg);

int kms_audit_rec_create_w(struct kms_audit *a, kms_audit_write_fn blocks, void *arg,
                           struct kms_audit_rec **out) KMS_WUR;
int kms_audit_rec_post_w(struct kms_audit_rec *r, const char *type, bool durable,
                         kms_audit_write_fn tail, void *arg, struct kms_err *err, char *cause,
                         size_t causelen) KMS_WUR;
/* kms_audit_format_body's form for write functions (known-answer tests). */
int kms_audit_format_body_w(const struct kms_audit_device_opts *o, const char *salt,
                            kms_audit_write_fn blocks, void *barg, const char *time,
                            const char *type, kms_audit_write_fn tail, void *targ, char **out,
                            size_t *len) KMS_WUR;

/*
 * Writer calls. `key` names the member in an object (at the top level: a field of the line)
 * and is NULL for an array element. A string (key or value) that is not UTF-8 leaves its
 * member out, as jansson's json_string/json_object_set_new refused it (an array element is
 * skipped); _str_strict refuses the line instead.
 */
const struct kms_audit_device_opts *kms_audit_lw_device(const struct kms_audit_lw *w);
void kms_audit_lw_begin(struct kms_audit_lw *w, const char *key, char open); /* '{' or '[' */
void kms_audit_lw_end(struct kms_audit_lw *w);
void kms_audit_lw_str(struct kms_audit_lw *w, const char *key, const char *s); /* in clear */
void kms_audit_lw_strn(struct kms_audit_lw *w, const char *key, const char *s, size_t n);
void kms_audit_lw_str_strict(struct kms_audit_lw *w, const char *key, const char *s);
void kms_audit_lw_int(struct kms_audit_lw *w, const char *key, int64_t v);
void kms_audit_lw_bool(struct kms_audit_lw *w, const char *key, bool v);
/* HMAC'd (a token; "" stays ""). */
void kms_audit_lw_token(struct kms_audit_lw *w, const char *key, const char *s);
/* HMAC'd when the device's hmac_accessor is set, else in clear. */
void kms_audit_lw_accessor(struct kms_audit_lw *w, const char *key, const char *s);
/* "hmac-sha256:…" of s[0, n) (any bytes): a string leaf of data. */
void kms_audit_lw_hmac(struct kms_audit_lw *w, const char *key, const void *s, size_t n);
/* s[0, n) as a string leaf of data: HMAC'd unless it is an RFC 3339 time, as
 * kms_audit_lw_data writes a string of its tree (not UTF-8: left out). The HMAC of "" is taken
 * once per writer. */
void kms_audit_lw_data_str(struct kms_audit_lw *w, const char *key, const char *s, size_t n);
/* v (NULL: left out) in clear / with every string leaf but RFC 3339 times HMAC'd (data) /
 * by the rules of an auth block (client_token, accessor). */
void kms_audit_lw_json(struct kms_audit_lw *w, const char *key, const json_t *v);
void kms_audit_lw_data(struct kms_audit_lw *w, const char *key, const json_t *v);
void kms_audit_lw_auth(struct kms_audit_lw *w, const char *key, const json_t *v);
/* text[0, n), already JSON, as the value. */
void kms_audit_lw_raw(struct kms_audit_lw *w, const char *key, const char *text, size_t n);

/* The bound on waiting for a record (audit_timeout), in milliseconds. */
int64_t kms_audit_timeout_ms(const struct kms_audit *a);

/* ---- hashing rules (also used by tests and sys/audit-hash) ------------------------------- */

/* "hmac-sha256:" + hex(HMAC-SHA256(key = salt bytes, in)) into out. */
int kms_audit_hmac(const char *salt, const void *in, size_t n,
                   char out[KMS_AUDIT_HMAC_LEN + 1]) KMS_WUR;
/*
 * A new value equal to v with every string leaf (at any depth, in objects and arrays)
 * replaced by its HMAC, except strings that parse as RFC 3339 times; keys, numbers, bools and
 * null stay. v is not modified. NULL on allocation failure.
 */
json_t *kms_audit_hash_value(const char *salt, const json_t *v);
/* Go's time.Parse(time.RFC3339, s) acceptance: YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM). */
bool kms_audit_is_rfc3339(const char *s, size_t n);
/* Parse the same syntax to unix seconds + nanoseconds; -1 when invalid. */
int kms_audit_rfc3339_parse(const char *s, size_t n, int64_t *sec, int32_t *nsec) KMS_WUR;

/* ---- files: rotation sets, verification ---------------------------------------------------- */

/*
 * Expand arguments into an ordered list of audit files: a directory contributes its regular
 * files, a file contributes itself, and with `siblings` also its rotated copies in the same
 * directory ("<name>.1", "<name>-20260101", …; compressed ones are skipped). The result is
 * ordered by each file's first sequence number (that of its first intact line, less the
 * lines before it; empty files last), which is the chain order whatever the rotation naming.
 * *paths is a malloc'd array of malloc'd strings; free with kms_audit_files_free. Returns 0,
 * or -1 with err naming the unreadable argument.
 */
int kms_audit_files_expand(const char *const *args, size_t nargs, bool siblings, char ***paths,
                           size_t *npaths, struct kms_err *err) KMS_WUR;
void kms_audit_files_free(char ***paths, size_t n);

struct kms_audit_verify_result {
    /* inputs (set after memset, before the call; kms_audit_verify_files keeps them) */
    bool genesis;       /* the chain must start at seq 1 (no earlier file left out) */
    const char *anchor; /* a hash recorded elsewhere earlier that must still be in the chain */
    /* outputs */
    bool anchor_found;
    uint64_t lines;     /* lines checked */
    uint64_t first_seq; /* seq of the first line (1 when the chain starts at its genesis) */
    uint64_t last_seq;
    char head[KMS_AUDIT_HASH_LEN + 1]; /* hash of the last good line */
    /* bytes of an unterminated last line left unchecked: the last file is held by a running
     * kmsd (its flock), which is writing that line now */
    uint64_t tail_in_progress;
    /* on failure: where and why */
    char bad_file[KMS_AUDIT_PATH_MAX];
    uint64_t bad_line; /* 1-based line number within bad_file */
    char reason[256];
};

/*
 * Verify the chain over `paths` in the given order: every line complete (ends in '\n'; only
 * the last file's last line may be unterminated, and only while a running kmsd holds that file:
 * it is being written, r->tail_in_progress),
 * valid JSON, its own hash correct, seq consecutive and prev_hash equal to the previous
 * line's hash, across file boundaries; with r->genesis the first line must be seq 1, with
 * r->anchor that hash must be some line's. Returns 0 when intact, 1 at the first bad line (r
 * says where and why; bad_line 0 when the problem is the whole set, e.g. a missing anchor),
 * -1 when a file cannot be read (r->reason says why).
 */
int kms_audit_verify_files(const char *const *paths, size_t n,
                           struct kms_audit_verify_result *r) KMS_WUR;

/*
 * `<prog> audit verify [--genesis] [--anchor=HASH] [-q] FILE|DIR...` for kmsd and kmsctl:
 * argv holds the arguments after "verify". Prints the result; returns the exit status (0
 * intact, 1 tampered, 2 usage or read error).
 */
int kms_audit_verify_command(const char *prog, int argc, char **argv);

/* ---- query ------------------------------------------------------------------------------- */

struct kms_audit_filter {
    int64_t since;        /* unix seconds, inclusive; 0 = no bound */
    int64_t until;        /* unix seconds, exclusive; 0 = no bound */
    const char *resource; /* "KMSKey", "Token", …; case-insensitive; NULL = any */
    const char *key;
    const char *op;
    const char *subject;
    const char *result; /* "allowed" | "denied" | "error" */
    const char *ns;     /* namespace path ("org1/" or "org1"); NULL = any */
    size_t limit;       /* newest `limit` events; 0 = 500 */
};

#define KMS_AUDIT_LIST_DEFAULT_LIMIT 500
#define KMS_AUDIT_LIST_MAX_LIMIT 100000

/*
 * Parse a --since/--until value: a Go-style duration ("24h", "90m", "7d") meaning that long
 * before `now`, an RFC 3339 time, or epoch seconds. -1 when invalid.
 */
int kms_audit_time_arg(const char *s, int64_t now, int64_t *out) KMS_WUR;

/*
 * Summaries of the response lines in `paths` that match f, oldest first, at most f->limit
 * (the newest ones). Each summary: time, request_id, type-independent fields (subject, op,
 * resource, key, key_version, items, namespace, path, result, status, error,
 * remote_address). *events is a new JSON array; *truncated tells when older matches were
 * dropped. Lines that are not JSON are skipped. Returns 0 or -1 with err.
 */
int kms_audit_query(const char *const *paths, size_t n, const struct kms_audit_filter *f,
                    json_t **events, bool *truncated, struct kms_err *err) KMS_WUR;
/* Classify a line: "allowed", "denied" or "error". */
const char *kms_audit_line_result(const json_t *line);
/* Print events as an aligned table (time, subject, op, key, version, result, …) to out. */
void kms_audit_events_print_table(const json_t *events, FILE *out);

#endif
