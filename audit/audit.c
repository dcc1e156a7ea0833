/*
 * audit.c - the broker: every configured device gets every line, each HMAC'd under its own
 * salt, and a line counts as recorded when at least one device made it durable (Vault's
 * rule). With no device configured nothing is recorded and nothing is enforced.
 *
 * A record (kms_audit_rec) is one request's pair of lines. The auth and request blocks are
 * the same on both lines, so their hashed forms are computed once per device and reused.
 *
 * Which values are hashed (Vault's audit/hashstructure.go rules): client_token everywhere,
 * accessors when hmac_accessor is set, wrap_info.token, and every string leaf of
 * request.data and response.data except RFC 3339 times. Metadata, policies, display names,
 * paths, errors, remote addresses and kmsd's own top-level fields stay in clear; the hook in
 * api/ puts nothing secret there.
 */
#include "audit/audit_int.h"
#include "crypto/crypto.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define FAIL_LOG_INTERVAL_MS 1000

struct kms_audit {
    size_t n;
    struct kms_audit_dev *devs[KMS_AUDIT_MAX_DEVICES];
    int64_t timeout_ms;
    kms_audit_log_fn log;
    void *log_arg;
    _Atomic int64_t last_fail_log; /* a failing disk must not flood the server log */
    _Atomic uint64_t fails;
    char replica[320]; /* opts->replica, "" = none (the devices point at it) */
};

/* Lines a record may post (a request and a response line per device). */
#define REC_LINES 2
#define REC_WAITERS (REC_LINES * KMS_AUDIT_MAX_DEVICES)

struct rec_waiter {
    struct kms_audit_waiter w; /* first: the device sees only this */
    struct kms_audit_rec *r;
    size_t dev;
};

struct kms_audit_rec {
    struct kms_audit *a;
    /* per device: `,"auth":{…},"request":{…}` hashed and written once, at the record's
     * creation, for both lines */
    struct kms_audit_sbuf blocks[KMS_AUDIT_MAX_DEVICES];
    size_t nposted; /* lines posted (waiters used) */
    struct rec_waiter waiters[REC_WAITERS];
    /* under mu: shared with the writer threads */
    pthread_mutex_t mu;
    int refs; /* the owner's (until destroy) + one per waiter not yet told */
    size_t dev_outstanding[KMS_AUDIT_MAX_DEVICES]; /* waiters not yet told, per device */
    bool failed[KMS_AUDIT_MAX_DEVICES];
    char why[KMS_AUDIT_MAX_DEVICES][256];
    kms_audit_notify_fn notify;
    void *notify_arg;
};

void kms_audit_device_opts_default(struct kms_audit_device_opts *o)
{
    memset(o, 0, sizeof(*o));
    snprintf(o->name, sizeof(o->name), "file");
    o->fsync = KMS_AUDIT_FSYNC_BATCH;
    o->mode = 0600;
    o->hmac_accessor = true;
}

static const char *const fsync_names[] = {"batch", "always", "never"};

int kms_audit_fsync_parse(const char *s, enum kms_audit_fsync *out)
{
    for (size_t i = 0; i < sizeof(fsync_names) / sizeof(fsync_names[0]); i++) {
        if (strcmp(s, fsync_names[i]) == 0) {
            *out = (enum kms_audit_fsync)i;
            return 0;
        }
    }
    return -1;
}

const char *kms_audit_fsync_name(enum kms_audit_fsync f)
{
    return (unsigned)f < 3 ? fsync_names[f] : "?";
}

static bool valid_name(const char *s)
{
    if (s[0] == '\0') {
        return false;
    }
    for (; *s != '\0'; s++) {
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' || *s == '-')) {
            return false;
        }
    }
    return true;
}

int kms_audit_create(struct kms_storage *st, const struct kms_audit_opts *opts,
                     struct kms_audit **out, struct kms_err *err)
{
    struct kms_audit *a = calloc(1, sizeof(*a));
    struct kms_audit_dev_env env = {st, opts->log, opts->log_arg, NULL};
    int rc = -1;

    if (a == NULL) {
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    if (opts->replica != NULL && opts->replica[0] != '\0') {
        snprintf(a->replica, sizeof(a->replica), "%s", opts->replica);
        env.replica = a->replica;
    }
    a->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : KMS_AUDIT_DEFAULT_TIMEOUT_MS;
    a->log = opts->log;
    a->log_arg = opts->log_arg;
    if (opts->ndevices > KMS_AUDIT_MAX_DEVICES) {
        kms_err_set(err, 400, "at most %d audit devices", KMS_AUDIT_MAX_DEVICES);
        goto out;
    }
    for (size_t i = 0; i < opts->ndevices; i++) {
        const struct kms_audit_device_opts *o = &opts->devices[i];
        if (!valid_name(o->name)) {
            kms_err_set(err, 400, "audit device name \"%s\" must be [a-z0-9_-]+", o->name);
            goto out;
        }
        if (o->path[0] == '\0') {
            kms_err_set(err, 400, "audit device %s: no file path", o->name);
            goto out;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(opts->devices[j].name, o->name) == 0) {
                kms_err_set(err, 400, "audit device name \"%s\" used twice", o->name);
                goto out;
            }
            if (strcmp(opts->devices[j].path, o->path) == 0) {
                kms_err_set(err, 400, "audit devices %s and %s write the same file",
                            opts->devices[j].name, o->name);
                goto out;
            }
        }
        /* the same file by another name (a link, "./"): its lock is the first device's */
        struct stat fst;
        for (size_t j = 0; j < i && stat(o->path, &fst) == 0; j++) {
            if (kms_audit_dev_writes(a->devs[j], &fst)) {
                kms_err_set(err, 400, "audit devices %s and %s write the same file (%s is %s)",
                            opts->devices[j].name, o->name, o->path, opts->devices[j].path);
                goto out;
            }
        }
        if (kms_audit_dev_open(o, &env, &a->devs[i], err) != 0) {
            goto out;
        }
        a->n++;
    }
    *out = a;
    a = NULL;
    rc = 0;
out:
    kms_audit_destroy(&a);
    return rc;
}

void kms_audit_destroy(struct kms_audit **ap)
{
    struct kms_audit *a = *ap;
    if (a == NULL) {
        return;
    }
    for (size_t i = 0; i < a->n; i++) {
        kms_audit_dev_close(&a->devs[i]);
    }
    free(a);
    *ap = NULL;
}

size_t kms_audit_ndevices(const struct kms_audit *a)
{
    return a ? a->n : 0;
}

const char *kms_audit_replica(const struct kms_audit *a)
{
    return a != NULL && a->replica[0] != '\0' ? a->replica : NULL;
}

int64_t kms_audit_timeout_ms(const struct kms_audit *a)
{
    return a != NULL ? a->timeout_ms : KMS_AUDIT_DEFAULT_TIMEOUT_MS;
}

void kms_audit_device_get(const struct kms_audit *a, size_t i, struct kms_audit_device_opts *out)
{
    *out = *kms_audit_dev_opts(a->devs[i]);
}

int kms_audit_reopen(struct kms_audit *a, struct kms_err *err)
{
    int rc = 0;
    for (size_t i = 0; i < a->n; i++) {
        char why[512];
        if (kms_audit_dev_reopen(a->devs[i], why, sizeof(why)) != 0 && rc == 0) {
            kms_err_set(err, 500, "audit device %s: %s", kms_audit_dev_opts(a->devs[i])->name, why);
            rc = -1;
        }
    }
    return rc;
}

int kms_audit_hash_input(struct kms_audit *a, const char *name, const char *input, size_t n,
                         char out[KMS_AUDIT_HMAC_LEN + 1])
{
    for (size_t i = 0; a != NULL && i < a->n; i++) {
        if (strcmp(kms_audit_dev_opts(a->devs[i])->name, name) == 0) {
            uint8_t mac[32];
            if (kms_hmac_key_mac(kms_audit_dev_hkey(a->devs[i]), input, n, mac) != 0) {
                return -1;
            }
            memcpy(out, KMS_AUDIT_HMAC_PREFIX, 12);
            kms_hex_encode(mac, sizeof(mac), out + 12);
            return 0;
        }
    }
    return KMS_STORAGE_NOTFOUND;
}

/* ---- the block buffer kept per thread ---------------------------------------------------- */

/*
 * A record's blocks (auth and request, per device) are written once and copied into both of
 * its lines; a 1000-item batch's request block is ~100 KB, a mapped buffer (line.c). One such
 * buffer is kept per thread, up to BLOCK_KEEP, and handed to the next record created on that
 * thread, so a batch load does not map, fault in and unmap (a TLB shootdown on every core the
 * process runs on) one per record. It holds what the blocks hold: no secret in clear.
 */
#define BLOCK_KEEP (512 * 1024)

/* What a thread keeps between records: its line buffer (below) and one block buffer. */
struct thread_bufs {
    struct kms_audit_sbuf line;
    struct kms_audit_sbuf block;
};

static pthread_key_t bufs_key;
static pthread_once_t bufs_once = PTHREAD_ONCE_INIT;

static void bufs_key_free(void *p)
{
    struct thread_bufs *t = p;
    kms_audit_sb_free(&t->line);
    kms_audit_sb_free(&t->block);
    free(t);
}

static void bufs_key_init(void)
{
    (void)pthread_key_create(&bufs_key, bufs_key_free);
}

/* The calling thread's kept buffers, made on first use (NULL when out of memory). */
static struct thread_bufs *thread_bufs(void)
{
    pthread_once(&bufs_once, bufs_key_init);
    struct thread_bufs *t = pthread_getspecific(bufs_key);
    if (t == NULL) {
        t = calloc(1, sizeof(*t));
        if (t != NULL && pthread_setspecific(bufs_key, t) != 0) {
            free(t);
            t = NULL;
        }
    }
    return t;
}

/* The thread's kept buffer moved into the empty blk, when it keeps one. */
static void block_take(struct kms_audit_sbuf *blk)
{
    if (blk->p != NULL) {
        return;
    }
    pthread_once(&bufs_once, bufs_key_init);
    struct thread_bufs *t = pthread_getspecific(bufs_key);
    struct kms_audit_sbuf *k = t != NULL ? &t->block : NULL;
    if (k != NULL && k->p != NULL) {
        *blk = *k;
        blk->len = 0;
        blk->p[0] = '\0';
        memset(k, 0, sizeof(*k));
    }
}

/* blk kept for the thread when it is mapped, at most BLOCK_KEEP and the thread keeps none;
 * else freed. */
static void block_give(struct kms_audit_sbuf *blk)
{
    if (blk->cap >= KMS_AUDIT_BUF_MAP && blk->cap <= BLOCK_KEEP) {
        struct thread_bufs *t = thread_bufs();
        struct kms_audit_sbuf *k = t != NULL ? &t->block : NULL;
        if (k != NULL && k->p == NULL) {
            *k = *blk;
            k->len = 0;
            memset(blk, 0, sizeof(*blk));
            return;
        }
    }
    kms_audit_sb_free(blk);
}

/* ---- records ----------------------------------------------------------------------------- */

static void rec_free(struct kms_audit_rec *r)
{
    for (size_t i = 0; i < KMS_AUDIT_MAX_DEVICES; i++) {
        block_give(&r->blocks[i]);
    }
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static int write_blocks(const struct kms_audit_device_opts *o, const struct kms_hmac_key *hk,
                        kms_audit_write_fn fn, void *arg, struct kms_audit_sbuf *blk);

int kms_audit_rec_create_w(struct kms_audit *a, kms_audit_write_fn blocks, void *arg,
                           struct kms_audit_rec **out)
{
    struct kms_audit_rec *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        return -1;
    }
    r->a = a;
    pthread_mutex_init(&r->mu, NULL);
    r->refs = 1;
    for (size_t i = 0; a != NULL && i < a->n; i++) {
        struct kms_audit_dev *d = a->devs[i];
        block_take(&r->blocks[i]);
        if (write_blocks(kms_audit_dev_opts(d), kms_audit_dev_hkey(d), blocks, arg,
                         &r->blocks[i]) != 0) {
            rec_free(r);
            return -1;
        }
    }
    *out = r;
    return 0;
}

/*
 * The owner lets go: no notification is made after this returns (it is cleared under the
 * lock the writers notify under); the record itself lives on until its last waiter is told.
 */
void kms_audit_rec_destroy(struct kms_audit_rec **rp)
{
    struct kms_audit_rec *r = *rp;
    if (r == NULL) {
        return;
    }
    pthread_mutex_lock(&r->mu);
    r->notify = NULL;
    bool last = --r->refs == 0;
    pthread_mutex_unlock(&r->mu);
    if (last) {
        rec_free(r);
    }
    *rp = NULL;
}

/*
 * With mu held: one device has every line posted to it so far, without a failure. A line
 * counts once one device has it (Vault's rule). A record is waited for until every device
 * has told (so each device's fsync mode holds for the answer); at audit_timeout this decides
 * instead of failing outright, so a device hung in write(2) or fdatasync(2) delays the
 * requests by audit_timeout but does not fail those that another device recorded.
 */
/* With mu held: some waiter of some device has not been told yet. */
static bool rec_pending(const struct kms_audit_rec *r)
{
    for (size_t i = 0; i < KMS_AUDIT_MAX_DEVICES; i++) {
        if (r->dev_outstanding[i] > 0) {
            return true;
        }
    }
    return false;
}

static bool rec_recorded(const struct kms_audit_rec *r)
{
    size_t n = r->a != NULL ? r->a->n : 0;
    for (size_t i = 0; i < n; i++) {
        if (r->dev_outstanding[i] == 0 && !r->failed[i]) {
            return true;
        }
    }
    return false;
}

/* A waiter of device `dev` is finished (from a writer thread, or at a failed submit). */
static void rec_waiter_finish(struct kms_audit_rec *r, size_t dev, int status, const char *why)
{
    pthread_mutex_lock(&r->mu);
    if (status != 0 && !r->failed[dev]) {
        r->failed[dev] = true;
        snprintf(r->why[dev], sizeof(r->why[dev]), "%s", why != NULL ? why : "write failed");
    }
    r->dev_outstanding[dev]--;
    if (!rec_pending(r) && r->notify != NULL) {
        kms_audit_notify_fn fn = r->notify;
        r->notify = NULL;
        fn(r->notify_arg); /* under mu: destroy cannot race it */
    }
    bool last = --r->refs == 0;
    pthread_mutex_unlock(&r->mu);
    if (last) {
        rec_free(r);
    }
}

static void rec_waiter_done(struct kms_audit_waiter *w, int status, const char *why)
{
    struct rec_waiter *rw = (struct rec_waiter *)w;
    rec_waiter_finish(rw->r, rw->dev, status, why);
}

int kms_audit_rec_notify(struct kms_audit_rec *r, kms_audit_notify_fn fn, void *arg)
{
    int rc = 0;
    pthread_mutex_lock(&r->mu);
    if (rec_pending(r)) {
        r->notify = fn;
        r->notify_arg = arg;
        rc = 1;
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

bool kms_audit_rec_settle(struct kms_audit_rec *r)
{
    pthread_mutex_lock(&r->mu);
    bool ok = rec_recorded(r);
    if (ok) {
        r->notify = NULL; /* the rest is told to nobody */
    }
    pthread_mutex_unlock(&r->mu);
    return ok;
}

/* Top-level names only the broker and the device write. */
static bool reserved(const char *k)
{
    static const char *const names[] = {"time",  "type", "auth", "request",   "response",
                                        "error", "seq",  "hash", "prev_hash", NULL};
    for (size_t i = 0; names[i] != NULL; i++) {
        if (strcmp(k, names[i]) == 0) {
            return true;
        }
    }
    return false;
}

/* ---- the blocks, HMAC'd as they are written (Vault's rules) ------------------------------ */

/* A string leaf that is a secret: HMAC'd when it is a non-empty string, else as it is. */
static int write_secret(struct kms_audit_sbuf *b, const json_t *v, const struct kms_hmac_key *hk)
{
    if (json_is_string(v) && json_string_length(v) > 0) {
        return kms_audit_sb_hmac(b, hk, json_string_value(v), json_string_length(v));
    }
    return kms_audit_sb_value(b, v, NULL);
}

enum block { BLOCK_AUTH, BLOCK_REQUEST, BLOCK_RESPONSE, BLOCK_WRAP };

/*
 * One block object: client_token (auth, request), the accessors (when hmac_accessor), the
 * wrap token, and every string leaf of `data` HMAC'd; response.auth and response.wrap_info
 * by their own rules; everything else in clear.
 */
static int write_block(struct kms_audit_sbuf *b, const json_t *obj, enum block kind,
                       const struct kms_audit_device_opts *o, const struct kms_hmac_key *hk)
{
    const char *k;
    json_t *v;
    bool first = true;

    if (!json_is_object(obj)) {
        return kms_audit_sb_value(b, obj, NULL);
    }
    if (kms_audit_sb_add(b, "{", 1) != 0) {
        return -1;
    }
    json_object_foreach((json_t *)obj, k, v)
    {
        int rc;
        if ((!first && kms_audit_sb_add(b, ",", 1) != 0) ||
            kms_audit_sb_str(b, k, strlen(k)) != 0 || kms_audit_sb_add(b, ":", 1) != 0) {
            return -1;
        }
        first = false;
        if ((kind == BLOCK_AUTH && (strcmp(k, "client_token") == 0 ||
                                    (o->hmac_accessor && strcmp(k, "accessor") == 0))) ||
            (kind == BLOCK_REQUEST &&
             (strcmp(k, "client_token") == 0 ||
              (o->hmac_accessor && strcmp(k, "client_token_accessor") == 0))) ||
            (kind == BLOCK_WRAP &&
             (strcmp(k, "token") == 0 || (o->hmac_accessor && strcmp(k, "accessor") == 0)))) {
            rc = write_secret(b, v, hk);
        } else if (kind != BLOCK_AUTH && kind != BLOCK_WRAP && strcmp(k, "data") == 0) {
            rc = kms_audit_sb_value(b, v, hk);
        } else if (kind == BLOCK_RESPONSE && strcmp(k, "auth") == 0) {
            rc = write_block(b, v, BLOCK_AUTH, o, hk);
        } else if (kind == BLOCK_RESPONSE && strcmp(k, "wrap_info") == 0) {
            rc = write_block(b, v, BLOCK_WRAP, o, hk);
        } else {
            rc = kms_audit_sb_value(b, v, NULL);
        }
        if (rc != 0) {
            return -1;
        }
    }
    return kms_audit_sb_add(b, "}", 1);
}

/* `,"key":` with the key as it is (the broker's and the hook's own names). */
static int top_key(struct kms_audit_sbuf *b, const char *key)
{
    size_t n = strlen(key);
    if (kms_audit_sb_reserve(b, n + 4) != 0) {
        return -1;
    }
    char *p = b->p + b->len;
    p[0] = ',';
    p[1] = '"';
    memcpy(p + 2, key, n);
    p[n + 2] = '"';
    p[n + 3] = ':';
    p[n + 4] = '\0';
    b->len += n + 4;
    return 0;
}

/* ---- the line writer handed to the callers' write functions ------------------------------ */

#define LW_DEPTH 16

struct kms_audit_lw {
    struct kms_audit_sbuf *b;
    const struct kms_audit_device_opts *o;
    const struct kms_hmac_key *hk;
    int depth;
    bool first[LW_DEPTH]; /* nothing written yet at this depth (depth 0: the line's top) */
    char close[LW_DEPTH];
    bool err; /* sticky: the line cannot be written */
    /* the last tokens HMAC'd, by address and length (the same token or accessor appears in
     * the auth and the request block: one HMAC each); no secret is kept here */
    const void *memo_in[2];
    size_t memo_n[2];
    char memo_out[2][KMS_AUDIT_HMAC_LEN + 2];
    unsigned memo_next;
    /* the HMAC of the empty string with this device's salt, once written (a batch's items
     * without a reference carry one each) */
    bool empty_done;
    char empty_out[KMS_AUDIT_HMAC_LEN + 2];
};

static void lw_init(struct kms_audit_lw *w, struct kms_audit_sbuf *b,
                    const struct kms_audit_device_opts *o, const struct kms_hmac_key *hk)
{
    memset(w, 0, sizeof(*w));
    w->b = b;
    w->o = o;
    w->hk = hk;
}

static void lw_rollback(struct kms_audit_lw *w, size_t mark)
{
    w->b->len = mark;
    if (w->b->p != NULL) {
        w->b->p[mark] = '\0';
    }
}

/* The separator and `"key":` (no key inside an array). false when nothing may be written:
 * a sticky error, or a key that is not UTF-8 (the entry is left out, as jansson's
 * json_object_set_new refused it); *mark is where to roll back to. */
static bool lw_open(struct kms_audit_lw *w, const char *key, size_t *mark)
{
    if (w->err) {
        return false;
    }
    *mark = w->b->len;
    if (!w->first[w->depth] && kms_audit_sb_add(w->b, ",", 1) != 0) {
        w->err = true;
        return false;
    }
    if (key != NULL) {
        int rc = kms_audit_sb_str(w->b, key, strlen(key));
        if (rc == KMS_AUDIT_NOT_UTF8) {
            lw_rollback(w, *mark);
            return false;
        }
        if (rc != 0 || kms_audit_sb_add(w->b, ":", 1) != 0) {
            w->err = true;
            return false;
        }
    }
    return true;
}

/* After a value: the next one at this depth needs a separator. */
static void lw_wrote(struct kms_audit_lw *w, int rc)
{
    if (rc != 0) {
        w->err = true;
        return;
    }
    w->first[w->depth] = false;
}

const struct kms_audit_device_opts *kms_audit_lw_device(const struct kms_audit_lw *w)
{
    return w->o;
}

void kms_audit_lw_begin(struct kms_audit_lw *w, const char *key, char open)
{
    size_t mark;
    if (!lw_open(w, key, &mark)) {
        w->err = true; /* a container cannot be left out: its contents would land outside */
        return;
    }
    if (w->depth + 1 >= LW_DEPTH || (open != '{' && open != '[')) {
        w->err = true;
        return;
    }
    lw_wrote(w, kms_audit_sb_add(w->b, &open, 1));
    w->depth++;
    w->first[w->depth] = true;
    w->close[w->depth] = open == '{' ? '}' : ']';
}

void kms_audit_lw_end(struct kms_audit_lw *w)
{
    if (w->err) {
        return;
    }
    if (w->depth == 0) {
        w->err = true;
        return;
    }
    char c = w->close[w->depth];
    w->depth--;
    lw_wrote(w, kms_audit_sb_add(w->b, &c, 1));
}

void kms_audit_lw_strn(struct kms_audit_lw *w, const char *key, const char *s, size_t n)
{
    size_t mark;
    if (s == NULL || !lw_open(w, key, &mark)) {
        return;
    }
    int rc = kms_audit_sb_str(w->b, s, n);
    if (rc == KMS_AUDIT_NOT_UTF8) {
        lw_rollback(w, mark); /* json_string refused it: left out */
        return;
    }
    lw_wrote(w, rc);
}

void kms_audit_lw_str(struct kms_audit_lw *w, const char *key, const char *s)
{
    if (s != NULL) {
        kms_audit_lw_strn(w, key, s, strlen(s));
    }
}

void kms_audit_lw_str_strict(struct kms_audit_lw *w, const char *key, const char *s)
{
    size_t mark;
    if (s == NULL || !lw_open(w, key, &mark)) {
        return;
    }
    lw_wrote(w, kms_audit_sb_str(w->b, s, strlen(s)));
}

void kms_audit_lw_int(struct kms_audit_lw *w, const char *key, int64_t v)
{
    char num[21];
    size_t mark;
    if (lw_open(w, key, &mark)) {
        lw_wrote(w, kms_audit_sb_add(w->b, num, kms_i64_dec(v, num)));
    }
}

void kms_audit_lw_bool(struct kms_audit_lw *w, const char *key, bool v)
{
    size_t mark;
    if (lw_open(w, key, &mark)) {
        lw_wrote(w, kms_audit_sb_add(w->b, v ? "true" : "false", v ? 4 : 5));
    }
}

void kms_audit_lw_token(struct kms_audit_lw *w, const char *key, const char *s)
{
    size_t n = s != NULL ? strlen(s) : 0;
    size_t mark;
    if (s == NULL || !kms_utf8_valid(s, n)) {
        return; /* json_string refused it: left out */
    }
    if (n == 0) {
        kms_audit_lw_strn(w, key, s, 0);
        return;
    }
    for (unsigned i = 0; i < 2; i++) {
        if (w->memo_in[i] == s && w->memo_n[i] == n) {
            kms_audit_lw_raw(w, key, w->memo_out[i], KMS_AUDIT_HMAC_LEN + 2);
            return;
        }
    }
    if (lw_open(w, key, &mark)) {
        size_t at = w->b->len;
        int rc = kms_audit_sb_hmac(w->b, w->hk, s, n);
        if (rc == 0) {
            unsigned slot = w->memo_next++ % 2;
            memcpy(w->memo_out[slot], w->b->p + at, KMS_AUDIT_HMAC_LEN + 2);
            w->memo_in[slot] = s;
            w->memo_n[slot] = n;
        }
        lw_wrote(w, rc);
    }
}

void kms_audit_lw_accessor(struct kms_audit_lw *w, const char *key, const char *s)
{
    if (w->o->hmac_accessor) {
        kms_audit_lw_token(w, key, s);
    } else {
        kms_audit_lw_str(w, key, s);
    }
}

void kms_audit_lw_hmac(struct kms_audit_lw *w, const char *key, const void *s, size_t n)
{
    size_t mark;
    if (lw_open(w, key, &mark)) {
        lw_wrote(w, kms_audit_sb_hmac(w->b, w->hk, s, n));
    }
}

void kms_audit_lw_data_str(struct kms_audit_lw *w, const char *key, const char *s, size_t n)
{
    size_t mark;
    if (s != NULL && n == 0 && w->empty_done) {
        kms_audit_lw_raw(w, key, w->empty_out, KMS_AUDIT_HMAC_LEN + 2);
        return;
    }
    if (s == NULL || !lw_open(w, key, &mark)) {
        return;
    }
    if (kms_audit_is_rfc3339(s, n)) {
        int rc = kms_audit_sb_str(w->b, s, n);
        if (rc == KMS_AUDIT_NOT_UTF8) {
            lw_rollback(w, mark);
            return;
        }
        lw_wrote(w, rc);
        return;
    }
    if (!kms_utf8_valid(s, n)) {
        lw_rollback(w, mark); /* json_string refused it: left out */
        return;
    }
    size_t at = w->b->len;
    int rc = kms_audit_sb_hmac(w->b, w->hk, s, n);
    if (rc == 0 && n == 0) {
        memcpy(w->empty_out, w->b->p + at, KMS_AUDIT_HMAC_LEN + 2);
        w->empty_done = true;
    }
    lw_wrote(w, rc);
}

void kms_audit_lw_json(struct kms_audit_lw *w, const char *key, const json_t *v)
{
    size_t mark;
    if (v != NULL && lw_open(w, key, &mark)) {
        lw_wrote(w, kms_audit_sb_value(w->b, v, NULL));
    }
}

void kms_audit_lw_data(struct kms_audit_lw *w, const char *key, const json_t *v)
{
    size_t mark;
    if (v != NULL && lw_open(w, key, &mark)) {
        lw_wrote(w, kms_audit_sb_value(w->b, v, w->hk));
    }
}

void kms_audit_lw_auth(struct kms_audit_lw *w, const char *key, const json_t *v)
{
    size_t mark;
    if (v != NULL && lw_open(w, key, &mark)) {
        lw_wrote(w, write_block(w->b, v, BLOCK_AUTH, w->o, w->hk));
    }
}

void kms_audit_lw_raw(struct kms_audit_lw *w, const char *key, const char *text, size_t n)
{
    size_t mark;
    if (lw_open(w, key, &mark)) {
        lw_wrote(w, kms_audit_sb_add(w->b, text, n));
    }
}

/* A write function's output into blk (the caller's buffer, emptied first). */
static int write_blocks(const struct kms_audit_device_opts *o, const struct kms_hmac_key *hk,
                        kms_audit_write_fn fn, void *arg, struct kms_audit_sbuf *blk)
{
    struct kms_audit_lw w;
    blk->len = 0;
    if (fn == NULL) {
        return 0;
    }
    lw_init(&w, blk, o, hk);
    if (fn(&w, arg) != 0 || w.err || w.depth != 0) {
        blk->len = 0;
        return -1;
    }
    return 0;
}

/*
 * The line body into out: "{…}" without the chain fields: time, type, the record's blocks
 * (written at its creation), then whatever `tail` writes (response, error, kmsd's fields).
 */
static int format_body(const struct kms_audit_device_opts *o, const struct kms_hmac_key *hk,
                       const struct kms_audit_sbuf *blk, const char *time, const char *type,
                       kms_audit_write_fn tail, void *targ, struct kms_audit_sbuf *out)
{
    out->len = 0;
    if (kms_audit_sb_add(out, "{\"time\":\"", 9) != 0 ||
        kms_audit_sb_add(out, time, strlen(time)) != 0 ||
        kms_audit_sb_add(out, "\",\"type\":\"", 10) != 0 ||
        kms_audit_sb_add(out, type, strlen(type)) != 0 || kms_audit_sb_add(out, "\"", 1) != 0 ||
        (blk->len > 0 && kms_audit_sb_add(out, blk->p, blk->len) != 0)) {
        return -1;
    }
    if (tail != NULL) {
        struct kms_audit_lw w;
        lw_init(&w, out, o, hk);
        if (tail(&w, targ) != 0 || w.err || w.depth != 0) {
            return -1;
        }
    }
    return kms_audit_sb_add(out, "}", 1);
}

/* ---- the jansson-tree form of the blocks (kms_audit_rec_create/post) ------------------- */

struct tree_blocks {
    json_t *auth, *request;
};

static int tree_blocks_fn(struct kms_audit_lw *w, void *arg)
{
    const struct tree_blocks *t = arg;
    if (t->auth != NULL &&
        (top_key(w->b, "auth") != 0 || write_block(w->b, t->auth, BLOCK_AUTH, w->o, w->hk) != 0)) {
        return -1;
    }
    if (t->request != NULL && (top_key(w->b, "request") != 0 ||
                               write_block(w->b, t->request, BLOCK_REQUEST, w->o, w->hk) != 0)) {
        return -1;
    }
    return 0;
}

struct tree_tail {
    json_t *response;
    const char *error;
    json_t *extra;
};

static int tree_tail_fn(struct kms_audit_lw *w, void *arg)
{
    const struct tree_tail *t = arg;
    struct kms_audit_sbuf *out = w->b;
    const char *k;
    json_t *v;
    if (t->response != NULL && (top_key(out, "response") != 0 ||
                                write_block(out, t->response, BLOCK_RESPONSE, w->o, w->hk) != 0)) {
        return -1;
    }
    if (t->error != NULL && t->error[0] != '\0' &&
        (top_key(out, "error") != 0 || kms_audit_sb_str(out, t->error, strlen(t->error)) != 0)) {
        return -1;
    }
    json_object_foreach(t->extra, k, v)
    {
        if (!reserved(k) && (top_key(out, k) != 0 || kms_audit_sb_value(out, v, NULL) != 0)) {
            return -1;
        }
    }
    return 0;
}

int kms_audit_rec_create(struct kms_audit *a, json_t *auth, json_t *request,
                         struct kms_audit_rec **out)
{
    struct tree_blocks t = {auth, request};
    return kms_audit_rec_create_w(a, tree_blocks_fn, &t, out);
}

int kms_audit_format_body_w(const struct kms_audit_device_opts *o, const char *salt,
                            kms_audit_write_fn blocks, void *barg, const char *time,
                            const char *type, kms_audit_write_fn tail, void *targ, char **out,
                            size_t *len)
{
    struct kms_audit_sbuf blk = {NULL, 0, 0};
    struct kms_audit_sbuf line = {NULL, 0, 0};
    struct kms_hmac_key *hk = NULL;
    if (kms_hmac_key_create(salt, strlen(salt), &hk) != 0) {
        return -1;
    }
    int rc = write_blocks(o, hk, blocks, barg, &blk);
    if (rc == 0) {
        rc = format_body(o, hk, &blk, time, type, tail, targ, &line);
    }
    kms_hmac_key_destroy(&hk);
    kms_audit_sb_free(&blk);
    if (rc == 0) {
        *out = malloc(line.len + 1); /* the caller frees it with free() */
        rc = *out != NULL ? 0 : -1;
        if (rc == 0) {
            memcpy(*out, line.p, line.len + 1);
            *len = line.len;
        }
    }
    kms_audit_sb_free(&line);
    return rc;
}

int kms_audit_format_body(const struct kms_audit_device_opts *o, const char *salt, json_t *auth,
                          json_t *request, const char *time, const char *type, json_t *response,
                          const char *error, json_t *extra, char **out, size_t *len)
{
    struct tree_blocks b = {auth, request};
    struct tree_tail t = {response, error, extra};
    return kms_audit_format_body_w(o, salt, tree_blocks_fn, &b, time, type, tree_tail_fn, &t, out,
                                   len);
}

/* Count a refused record and log it (at most once a second); err = 500. */
static int rec_refused(struct kms_audit *a, const char *msg, struct kms_err *err, char *cause,
                       size_t causelen)
{
    if (cause != NULL) {
        snprintf(cause, causelen, "%s", msg);
    }
    uint64_t fails = atomic_fetch_add(&a->fails, 1) + 1;
    int64_t now = kms_audit_mono_ms();
    int64_t last = atomic_load(&a->last_fail_log);
    if (a->log != NULL && now - last >= FAIL_LOG_INTERVAL_MS &&
        atomic_compare_exchange_strong(&a->last_fail_log, &last, now)) {
        char note[760];
        snprintf(note, sizeof(note), "%s (%llu requests refused so far)", msg,
                 (unsigned long long)fails);
        a->log(a->log_arg, "error", note);
    }
    return kms_err_set(err, 500, "internal error");
}

/* ---- per-thread scratch: the line buffer and the time text ------------------------------ */

/* A line buffer kept per thread up to this capacity (a 1000-item batch's line is ~100-250 KB:
 * kept, so a batch load does not map and unmap a buffer per line); a bigger one is freed after
 * its line is queued. */
#define LINE_KEEP (512 * 1024)

static struct kms_audit_sbuf *line_buf(void)
{
    struct thread_bufs *t = thread_bufs();
    return t != NULL ? &t->line : NULL;
}

static void line_buf_release(struct kms_audit_sbuf *b)
{
    if (b->cap > LINE_KEEP) {
        kms_audit_sb_free(b);
    }
    b->len = 0;
}

int kms_audit_rec_post_w(struct kms_audit_rec *r, const char *type, bool durable,
                         kms_audit_write_fn tail, void *arg, struct kms_err *err, char *cause,
                         size_t causelen)
{
    struct kms_audit *a = r->a;
    struct kms_audit_sbuf *line = NULL;
    char why[512];
    char ts[40];
    int64_t sec;
    int32_t nsec;
    size_t ok = 0;

    if (a == NULL || a->n == 0) {
        return 0;
    }
    why[0] = '\0';
    if (r->nposted + a->n > REC_WAITERS) {
        snprintf(why, sizeof(why), "too many lines for one record");
        goto refused;
    }
    line = line_buf();
    if (line == NULL) {
        snprintf(why, sizeof(why), "out of memory");
        goto refused;
    }
    kms_now(&sec, &nsec);
    kms_time_rfc3339(sec, nsec, ts);
    for (size_t i = 0; i < a->n; i++) {
        struct rec_waiter *rw = &r->waiters[r->nposted++];
        char dwhy[512];
        rw->w.done = rec_waiter_done;
        rw->r = r;
        rw->dev = i;
        pthread_mutex_lock(&r->mu);
        r->dev_outstanding[i]++;
        r->refs++;
        pthread_mutex_unlock(&r->mu);
        dwhy[0] = '\0';
        struct kms_audit_dev *d = a->devs[i];
        if (format_body(kms_audit_dev_opts(d), kms_audit_dev_hkey(d), &r->blocks[i], ts, type, tail,
                        arg, line) != 0) {
            snprintf(dwhy, sizeof(dwhy), "cannot format the record");
        } else if (kms_audit_dev_submit(d, line->p, line->len, &rw->w, durable, dwhy,
                                        sizeof(dwhy)) == 0) {
            ok++;
            continue;
        }
        rec_waiter_finish(r, i, -1, dwhy);
        if (why[0] == '\0') {
            snprintf(why, sizeof(why), "%s", dwhy);
        }
    }
    line_buf_release(line);
    if (ok > 0) {
        return 0;
    }
refused:;
    char msg[700];
    snprintf(msg, sizeof(msg), "no audit backend succeeded in logging the %s: %s", type, why);
    return rec_refused(a, msg, err, cause, causelen);
}

int kms_audit_rec_post(struct kms_audit_rec *r, const char *type, bool durable, json_t *response,
                       const char *error, json_t *extra, struct kms_err *err, char *cause,
                       size_t causelen)
{
    struct tree_tail t = {response, error, extra};
    return kms_audit_rec_post_w(r, type, durable, tree_tail_fn, &t, err, cause, causelen);
}

struct sync_wait {
    pthread_mutex_t m;
    pthread_cond_t c;
    bool done;
};

static void sync_wake(void *arg)
{
    struct sync_wait *sw = arg;
    pthread_mutex_lock(&sw->m);
    sw->done = true;
    pthread_cond_signal(&sw->c);
    pthread_mutex_unlock(&sw->m);
}

int kms_audit_rec_wait(struct kms_audit_rec *r, struct kms_err *err, char *cause, size_t causelen)
{
    struct kms_audit *a = r->a;
    struct sync_wait sw;
    pthread_condattr_t ca;
    struct timespec ts;

    if (a == NULL || a->n == 0) {
        return 0;
    }
    kms_audit_wake_deferred(); /* this thread may owe the writers the lines it waits for */
    pthread_mutex_init(&sw.m, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&sw.c, &ca);
    pthread_condattr_destroy(&ca);
    sw.done = false;
    int64_t deadline = kms_audit_mono_ms() + a->timeout_ms;
    ts.tv_sec = (time_t)(deadline / 1000);
    ts.tv_nsec = (long)(deadline % 1000) * 1000000;
    bool done = true;
    if (kms_audit_rec_notify(r, sync_wake, &sw) == 1) {
        pthread_mutex_lock(&sw.m);
        while (!sw.done) {
            if (pthread_cond_timedwait(&sw.c, &sw.m, &ts) == ETIMEDOUT) {
                break;
            }
        }
        pthread_mutex_unlock(&sw.m);
        /* stop a late notification before sw goes away (it is made under r->mu); at the
         * deadline, a record one device has is recorded (a hung device does not fail it) */
        pthread_mutex_lock(&r->mu);
        r->notify = NULL;
        bool recorded = rec_recorded(r);
        pthread_mutex_unlock(&r->mu);
        pthread_mutex_lock(&sw.m);
        done = sw.done || recorded;
        pthread_mutex_unlock(&sw.m);
    }
    pthread_cond_destroy(&sw.c);
    pthread_mutex_destroy(&sw.m);
    if (done) {
        return 0;
    }
    char msg[700];
    snprintf(msg, sizeof(msg),
             "no audit backend succeeded in logging the record: timed out "
             "waiting for the audit file");
    return rec_refused(a, msg, err, cause, causelen);
}

int kms_audit_rec_status(struct kms_audit_rec *r, struct kms_err *err, char *cause, size_t causelen)
{
    struct kms_audit *a = r->a;
    char msg[700];
    if (a == NULL || a->n == 0) {
        return 0;
    }
    pthread_mutex_lock(&r->mu);
    bool ok = rec_recorded(r);
    if (!ok) {
        snprintf(msg, sizeof(msg), "no audit backend succeeded in logging the record: %s",
                 r->why[0]);
    }
    pthread_mutex_unlock(&r->mu);
    if (ok) {
        return 0;
    }
    return rec_refused(a, msg, err, cause, causelen);
}

int kms_audit_rec_log(struct kms_audit_rec *r, const char *type, bool durable, json_t *response,
                      const char *error, json_t *extra, struct kms_err *err, char *cause,
                      size_t causelen)
{
    if (kms_audit_rec_post(r, type, durable, response, error, extra, err, cause, causelen) != 0 ||
        kms_audit_rec_wait(r, err, cause, causelen) != 0) {
        return -1;
    }
    return kms_audit_rec_status(r, err, cause, causelen);
}

void kms_audit_stats_get(struct kms_audit *a, struct kms_audit_stats *st)
{
    memset(st, 0, sizeof(*st));
    for (size_t i = 0; i < a->n; i++) {
        kms_audit_dev_stats(a->devs[i], st);
    }
    st->failures = atomic_load_explicit(&a->fails, memory_order_relaxed);
}
