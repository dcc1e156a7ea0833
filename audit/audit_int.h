/*
 * audit_int.h - private to audit/: the chain suffix of a line, and the file device (one log
 * file with its writer thread) that the broker in audit.c drives.
 */
#ifndef KMS_AUDIT_INT_H
#define KMS_AUDIT_INT_H

#include "audit/audit.h"

#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>

#define KMS_AUDIT_GENESIS "sha256:0000000000000000000000000000000000000000000000000000000000000000"

/*
 * Every line ends with the chain fields, in this order and spelling:
 *   …,"seq":<N>,"prev_hash":"sha256:<64 hex>","hash":"sha256:<64 hex>"}
 * `hash` covers the bytes before `,"hash":`. Parse them from the end of line[0, n) (no
 * newline; line may start anywhere before the suffix). Returns 0 and fills the outputs
 * (prefix_len = offset of `,"hash":`), or -1 when the line does not end that way.
 */
int kms_audit_line_chain(const char *line, size_t n, uint64_t *seq,
                         char prev[KMS_AUDIT_HASH_LEN + 1], char hash[KMS_AUDIT_HASH_LEN + 1],
                         size_t *prefix_len) KMS_WUR;
/* "sha256:" + hex(SHA-256(p[0, n))). */
int kms_audit_chain_hash(const char *p, size_t n, char out[KMS_AUDIT_HASH_LEN + 1]) KMS_WUR;
/* p[0, KMS_AUDIT_HASH_LEN) is "sha256:" + 64 lower-case hex digits. */
bool kms_audit_is_chain_hash(const char *p);

/*
 * The longest line the offline readers (verify, list, the first-seq probe) take in: kmsd
 * writes nothing near it (values are HMAC'd), and device.c gives up on a last line as long.
 */
#define KMS_AUDIT_READ_LINE_MAX ((size_t)64 << 20)
#define KMS_AUDIT_LINE_TOO_LONG (-2)
/*
 * getline(3) with a bound: the next line (its newline included, NUL-terminated) into *line,
 * its length returned; 0 at the end of f; -1 on a read error or out of memory; and
 * KMS_AUDIT_LINE_TOO_LONG once more than max bytes came without a newline, with f left in
 * the middle of that line. A file with no newline (a binary file, /dev/zero) thus costs at
 * most max bytes of memory, where getline would grow its buffer until memory runs out.
 */
ssize_t kms_audit_getline(char **line, size_t *cap, FILE *f, size_t max);

/* ---- the line writer (line.c) ----------------------------------------------------------- */

/* A growable text buffer, always NUL-terminated once written to. */
struct kms_audit_sbuf {
    char *p;
    size_t len, cap;
};

/* Buffers from this size on are mmapped and unmapped when freed (line.c). */
#define KMS_AUDIT_BUF_MAP (128 * 1024)
/* Grow *p (capacity *cap, the first len bytes kept) to hold need bytes, doubling from
 * `first`; realloc below KMS_AUDIT_BUF_MAP, mmap/mremap from it on. 0 or -1. */
int kms_audit_buf_grow(char **p, size_t *cap, size_t len, size_t need, size_t first) KMS_WUR;
/* Free what kms_audit_buf_grow gave (by its capacity). */
void kms_audit_buf_free(char *p, size_t cap);
/* Free b's buffer (whichever way it was allocated) and empty it. */
void kms_audit_sb_free(struct kms_audit_sbuf *b);
/* Room for n more bytes (and a NUL). */
int kms_audit_sb_reserve(struct kms_audit_sbuf *b, size_t n) KMS_WUR;
int kms_audit_sb_add(struct kms_audit_sbuf *b, const void *s, size_t n) KMS_WUR;
#define KMS_AUDIT_NOT_UTF8 (-2)
/* s[0, n) as a JSON string (jansson's JSON_ENSURE_ASCII escaping); KMS_AUDIT_NOT_UTF8 (and
 * nothing written) if it is not UTF-8, -1 when out of memory. */
int kms_audit_sb_str(struct kms_audit_sbuf *b, const char *s, size_t n) KMS_WUR;
/* "hmac-sha256:<hex of HMAC(hk, in)>" as a JSON string. */
int kms_audit_sb_hmac(struct kms_audit_sbuf *b, const struct kms_hmac_key *hk, const void *in,
                      size_t n) KMS_WUR;
/* Compact JSON of v; with hk every string leaf except RFC 3339 times is HMAC'd. */
int kms_audit_sb_value(struct kms_audit_sbuf *b, const json_t *v,
                       const struct kms_hmac_key *hk) KMS_WUR;

/* ---- the file device (device.c) ---------------------------------------------------------- */

struct kms_audit_dev;
struct kms_audit_batch;
struct kms_audit_waiter;

struct kms_audit_dev_env {
    struct kms_storage *st; /* may be NULL */
    kms_audit_log_fn log;
    void *log_arg;
    const char *replica; /* the chain head record is per replica when set (borrowed) */
};

/*
 * Open the file, recover the chain head, load or create the salt and start the writer.
 * Caller closes with kms_audit_dev_close.
 */
int kms_audit_dev_open(const struct kms_audit_device_opts *o, const struct kms_audit_dev_env *env,
                       struct kms_audit_dev **out, struct kms_err *err) KMS_WUR;
void kms_audit_dev_close(struct kms_audit_dev **d);
/* Add this device's counters and current queue length to *st. */
void kms_audit_dev_stats(struct kms_audit_dev *d, struct kms_audit_stats *st);
const struct kms_audit_device_opts *kms_audit_dev_opts(const struct kms_audit_dev *d);
/* d holds the lock on the file st describes (the file it writes, by inode). */
bool kms_audit_dev_writes(struct kms_audit_dev *d, const struct stat *st);
const char *kms_audit_dev_salt(const struct kms_audit_dev *d);
/* The salt prepared as an HMAC key. */
const struct kms_hmac_key *kms_audit_dev_hkey(const struct kms_audit_dev *d);

/*
 * Someone waiting for a line: done(w, status, why) is called exactly once, on the device's
 * writer thread with no device lock held, when the line is written (or durable, as asked),
 * with status 0, or when it failed, with -1 and the reason. `next` belongs to the device.
 */
struct kms_audit_waiter {
    struct kms_audit_waiter *next;
    void (*done)(struct kms_audit_waiter *w, int status, const char *why);
};

/*
 * Chain `body` (a JSON object text "{…}", len bytes) onto the device and queue it for the
 * writer; never blocks on I/O. With w (may be NULL) the waiter is told once the line is
 * written, or with `durable` once it is also synced (per the fsync mode; a durable line also
 * makes every earlier line of the same file durable). 0 when queued (w will be told); -1 with
 * why when not (w will not be told).
 */
int kms_audit_dev_submit(struct kms_audit_dev *d, const char *body, size_t len,
                         struct kms_audit_waiter *w, bool durable, char *why,
                         size_t whylen) KMS_WUR;
/* Reopen the file by path (rotation). */
int kms_audit_dev_reopen(struct kms_audit_dev *d, char *why, size_t whylen) KMS_WUR;

/* CLOCK_MONOTONIC in milliseconds. */
int64_t kms_audit_mono_ms(void);

#endif
