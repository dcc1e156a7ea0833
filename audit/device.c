/*
 * device.c - one audit file and its group commit.
 *
 * Callers chain their line onto the device under `mu` (sequence number, previous hash, own
 * hash; the line is built straight into the open batch), then wait. There is no writer
 * thread: a waiting caller that finds nobody writing becomes the leader and appends the
 * oldest batch with one write(2) for everyone in it; one that needs durability and finds
 * nobody syncing makes everything written so far durable with one fdatasync(2). While a
 * leader syncs, new lines collect and are written by another, and the next fsync covers all
 * of them, so under load one fsync serves many requests, and an uncontended request pays no
 * thread hand-off at all (the cost that dominated a writer-thread design on small machines).
 *
 * A caller waits either until its line is written (a request line of an operation without
 * side effects: a full disk or a dead file is known by then) or until it is durable (response
 * lines; request lines of operations that change state). Modes: "batch" as above; "always"
 * writes and syncs each line on its own (one fsync per line, for comparison); "never" makes
 * "written" count as durable (Vault's behaviour).
 *
 * Bounded wait: a follower gives up at its deadline (the request fails, 500). A leader inside
 * write(2) or fdatasync(2) cannot be interrupted; on a hung file system it blocks its own
 * worker thread while every other request times out and fails closed.
 *
 * Failure: a batch that cannot be written whole is cut off the file again (ftruncate to the
 * size before the write, so a full disk or RLIMIT_FSIZE never leaves a torn line) and fails its
 * callers. Lines queued behind it were chained onto it, so they fail too, and the chain head
 * rolls back to the last line written. A failed fsync fails the callers waiting for it (their
 * lines stay in the file, in order). A file deleted under us (st_nlink == 0) is recreated by
 * path before the next write; after a failed open every write retries the open.
 *
 * Locks: `mu` guards the queues, the leader flags and the chain heads; `io` guards the current
 * file and is held around a write and by reopen, so a reopen never splits a batch. Open files
 * are reference-counted: a batch keeps the file it was written to until it is synced, so a
 * rotation never loses an fsync. Nobody holds `mu` during I/O.
 */
#include "audit/audit_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SALT_META "audit/%s/salt"
#define HEAD_META "audit/%s/head"
#define HEAD_META_REPLICA "audit/%s/head/%s" /* HA: one chain head per replica */
#define TAIL_READ 512

/* An open log file; the last reference closes it. */
struct afile {
    int fd;
    atomic_int refs;
};

struct kms_audit_batch {
    struct kms_audit_batch *next;
    char *buf;
    size_t len, cap;
    uint64_t last_seq;
    char last_hash[KMS_AUDIT_HASH_LEN + 1];
    int refs;           /* the queue's + one per waiting caller (under mu) */
    bool taken;         /* a write leader has it: no more lines join */
    bool written;       /* write(2) done, or failed */
    bool synced;        /* durable, or failed */
    int status;         /* 0, or -1 once failed at any stage */
    struct afile *file; /* written to this file, kept until synced */
    char why[512];
};

struct kms_audit_dev {
    struct kms_audit_device_opts o;
    struct kms_audit_dev_env env;
    char salt[40];
    struct kms_hmac_key *hkey; /* the salt, prepared for HMAC */
    pthread_mutex_t mu;
    pthread_cond_t done; /* a batch finished a stage, or a leader stepped down */
    pthread_mutex_t io;
    bool writing;                          /* a leader is writing */
    bool syncing;                          /* a leader is syncing */
    bool ready;                            /* opened and recovered */
    struct kms_audit_batch *qhead, *qtail; /* chained, not yet written */
    struct kms_audit_batch *whead, *wtail; /* written, not yet synced (batch mode) */
    uint64_t seq;                          /* chain head including queued lines */
    char hash[KMS_AUDIT_HASH_LEN + 1];
    uint64_t wseq; /* chain head in the file */
    char whash[KMS_AUDIT_HASH_LEN + 1];
    struct afile *file;   /* under io; NULL after a failed open */
    int64_t last_err_log; /* one error line per second at most (under mu) */
    /* metrics, updated with relaxed atomics */
    _Atomic uint64_t st_fsyncs;
    _Atomic uint64_t st_fsync_us;
};

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void count_fsync(struct kms_audit_dev *d, uint64_t t0)
{
    atomic_fetch_add_explicit(&d->st_fsyncs, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&d->st_fsync_us, mono_us() - t0, memory_order_relaxed);
}

void kms_audit_dev_stats(struct kms_audit_dev *d, struct kms_audit_stats *st)
{
    size_t q = 0;
    pthread_mutex_lock(&d->mu);
    for (const struct kms_audit_batch *b = d->qhead; b != NULL; b = b->next) {
        q++;
    }
    for (const struct kms_audit_batch *b = d->whead; b != NULL; b = b->next) {
        q++;
    }
    pthread_mutex_unlock(&d->mu);
    st->queued += q;
    st->fsyncs += atomic_load_explicit(&d->st_fsyncs, memory_order_relaxed);
    st->fsync_us += atomic_load_explicit(&d->st_fsync_us, memory_order_relaxed);
}

int64_t kms_audit_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void dev_log(struct kms_audit_dev *d, const char *level, const char *fmt, ...)
    KMS_PRINTF(3, 4);

static void dev_log(struct kms_audit_dev *d, const char *level, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    if (d->env.log == NULL) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    d->env.log(d->env.log_arg, level, msg);
}

/* ---- salt and persisted chain head ------------------------------------------------------- */

static int load_salt(struct kms_audit_dev *d, struct kms_err *err)
{
    struct kms_txn *txn = NULL;
    uint8_t *val = NULL;
    size_t vallen = 0;
    char key[64];
    int rc = -1;

    if (d->env.st == NULL) {
        if (kms_uuid4(d->salt) != 0) {
            kms_err_set(err, 500, "audit device %s: cannot create a salt", d->o.name);
            goto out;
        }
        rc = 0;
        goto out;
    }
    snprintf(key, sizeof(key), SALT_META, d->o.name);
    if (kms_storage_txn_begin(d->env.st, true, &txn) != 0) {
        kms_err_set(err, 500, "audit device %s: cannot open storage", d->o.name);
        goto out;
    }
    int g = kms_storage_get(txn, KMS_DB_META, key, strlen(key), &val, &vallen);
    if (g == 0 && vallen > 0 && vallen < sizeof(d->salt)) {
        memcpy(d->salt, val, vallen);
        d->salt[vallen] = '\0';
        rc = 0;
        goto out;
    }
    if (g < 0 || g == 0) {
        kms_err_set(err, 500, "audit device %s: cannot read its salt", d->o.name);
        goto out;
    }
    /* Vault's salt: a random UUID string, created once per device */
    if (kms_uuid4(d->salt) != 0 ||
        kms_storage_put(txn, KMS_DB_META, key, strlen(key), d->salt, strlen(d->salt)) != 0 ||
        kms_storage_txn_commit(&txn) != 0) {
        kms_err_set(err, 500, "audit device %s: cannot store its salt", d->o.name);
        goto out;
    }
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    kms_free_wipe((void **)&val, vallen);
    return rc;
}

/* The storage key of the device's chain head: shared, or this replica's own. */
static void head_key(const struct kms_audit_dev *d, char *key, size_t cap)
{
    if (d->env.replica != NULL) {
        snprintf(key, cap, HEAD_META_REPLICA, d->o.name, d->env.replica);
    } else {
        snprintf(key, cap, HEAD_META, d->o.name);
    }
}

static int load_head(struct kms_audit_dev *d, uint64_t *seq, char hash[KMS_AUDIT_HASH_LEN + 1])
{
    struct kms_txn *txn = NULL;
    uint8_t *val = NULL;
    size_t vallen = 0;
    char key[400];
    char text[128];
    int rc = -1;

    *seq = 0;
    snprintf(hash, KMS_AUDIT_HASH_LEN + 1, "%s", KMS_AUDIT_GENESIS);
    if (d->env.st == NULL) {
        return 0;
    }
    head_key(d, key, sizeof(key));
    if (kms_storage_txn_begin(d->env.st, false, &txn) != 0) {
        goto out;
    }
    int g = kms_storage_get(txn, KMS_DB_META, key, strlen(key), &val, &vallen);
    if (g == KMS_STORAGE_NOTFOUND) {
        rc = 0;
        goto out;
    }
    if (g != 0 || vallen >= sizeof(text)) {
        goto out;
    }
    memcpy(text, val, vallen);
    text[vallen] = '\0';
    char *sp = strchr(text, ' ');
    if (sp == NULL || strlen(sp + 1) != KMS_AUDIT_HASH_LEN || !kms_audit_is_chain_hash(sp + 1)) {
        goto out;
    }
    *sp = '\0';
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0') {
        goto out;
    }
    *seq = v;
    memcpy(hash, sp + 1, KMS_AUDIT_HASH_LEN + 1);
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    free(val);
    return rc;
}

/* Remember the head on disk so a restart with an empty (rotated) file continues the chain. */
static void save_head(struct kms_audit_dev *d)
{
    struct kms_txn *txn = NULL;
    char key[400];
    char text[128];
    uint64_t seq;

    if (d->env.st == NULL) {
        return;
    }
    pthread_mutex_lock(&d->mu);
    seq = d->wseq;
    int n = snprintf(text, sizeof(text), "%" PRIu64 " %s", seq, d->whash);
    pthread_mutex_unlock(&d->mu);
    head_key(d, key, sizeof(key));
    if (kms_storage_txn_begin(d->env.st, true, &txn) != 0 ||
        kms_storage_put(txn, KMS_DB_META, key, strlen(key), text, (size_t)n) != 0 ||
        kms_storage_txn_commit(&txn) != 0) {
        dev_log(d, "warn", "audit device %s: cannot record the chain head in storage", d->o.name);
    }
    kms_storage_txn_abort(&txn);
}

/* ---- the file ---------------------------------------------------------------------------- */

/* fsync the directory holding path, so a newly created file survives a crash. */
static void sync_dir(const char *path)
{
    char copy[KMS_AUDIT_PATH_MAX];
    snprintf(copy, sizeof(copy), "%s", path);
    int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
}

static void afile_unref(struct afile **fp)
{
    struct afile *f = *fp;
    if (f != NULL && atomic_fetch_sub(&f->refs, 1) == 1) {
        close(f->fd);
        free(f);
    }
    *fp = NULL;
}

static struct afile *afile_ref(struct afile *f)
{
    atomic_fetch_add(&f->refs, 1);
    return f;
}

/* Open (create) the file for appending; 0 and *out (one reference), or -1 with why. */
static int open_file(struct kms_audit_dev *d, struct afile **out, char *why, size_t whylen)
{
    struct stat st;
    unsigned mode = d->o.mode & 0666; /* never executable */
    struct afile *af = malloc(sizeof(*af));
    if (af == NULL) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    int f = open(d->o.path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, mode ? mode : 0600);
    if (f < 0) {
        snprintf(why, whylen, "cannot open %.300s: %s", d->o.path, strerror(errno));
        free(af);
        return -1;
    }
    if (fstat(f, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(why, whylen, "%.300s is not a regular file", d->o.path);
        goto fail;
    }
    if (mode != 0 && (st.st_mode & 07777) != mode && fchmod(f, mode) != 0) {
        snprintf(why, whylen, "cannot set the mode of %.300s: %s", d->o.path, strerror(errno));
        goto fail;
    }
    sync_dir(d->o.path);
    af->fd = f;
    atomic_init(&af->refs, 1);
    *out = af;
    return 0;
fail:
    close(f);
    free(af);
    return -1;
}

/*
 * At start-up: cut off a torn last line (a crash mid-write; that line was never acknowledged)
 * and read the chain head from the last line. An empty file takes the head from storage.
 */
static int recover(struct kms_audit_dev *d, struct kms_err *err)
{
    struct stat st;
    char buf[TAIL_READ];
    int rfd = -1;
    int rc = -1;

    if (fstat(d->file->fd, &st) != 0) {
        kms_err_set(err, 500, "audit file %s: %s", d->o.path, strerror(errno));
        goto out;
    }
    if (st.st_size == 0) {
        if (load_head(d, &d->seq, d->hash) != 0) {
            kms_err_set(err, 500, "audit device %s: cannot read its chain head", d->o.name);
            goto out;
        }
        rc = 0;
        goto out;
    }
    rfd = open(d->o.path, O_RDONLY | O_CLOEXEC);
    if (rfd < 0) {
        kms_err_set(err, 500, "audit file %s: %s", d->o.path, strerror(errno));
        goto out;
    }
    /* find the end of the last complete line */
    off_t end = st.st_size;
    off_t good = -1;
    while (end > 0 && good < 0) {
        off_t start = end > (off_t)sizeof(buf) ? end - (off_t)sizeof(buf) : 0;
        ssize_t r = pread(rfd, buf, (size_t)(end - start), start);
        if (r != end - start) {
            kms_err_set(err, 500, "audit file %s: cannot read it", d->o.path);
            goto out;
        }
        for (ssize_t i = r - 1; i >= 0; i--) {
            if (buf[i] == '\n') {
                good = start + i + 1;
                break;
            }
        }
        end = start;
    }
    if (good < 0) {
        good = 0;
    }
    if (good != st.st_size) {
        if (ftruncate(d->file->fd, good) != 0) {
            kms_err_set(err, 500, "audit file %s: cannot cut off a torn last line: %s", d->o.path,
                        strerror(errno));
            goto out;
        }
        dev_log(d, "warn",
                "audit file %s: removed a torn last line (%lld bytes) left by an interrupted "
                "write",
                d->o.path, (long long)(st.st_size - good));
    }
    if (good == 0) {
        rc = load_head(d, &d->seq, d->hash) == 0 ? 0 : -1;
        if (rc != 0) {
            kms_err_set(err, 500, "audit device %s: cannot read its chain head", d->o.name);
        }
        goto out;
    }
    off_t from = good - 1 > (off_t)sizeof(buf) ? good - 1 - (off_t)sizeof(buf) : 0;
    ssize_t r = pread(rfd, buf, (size_t)(good - 1 - from), from);
    char prev[KMS_AUDIT_HASH_LEN + 1];
    size_t plen;
    if (r != good - 1 - from ||
        kms_audit_line_chain(buf, (size_t)r, &d->seq, prev, d->hash, &plen) != 0) {
        kms_err_set(err, 500,
                    "audit file %s: its last line is not a kmsd audit record; move the file "
                    "away to start a new log",
                    d->o.path);
        goto out;
    }
    rc = 0;
out:
    if (rfd >= 0) {
        close(rfd);
    }
    return rc;
}

/*
 * Append the whole batch (and, in "always" mode, sync it); on failure cut the file back.
 * Called by the write leader with `io` held. On success b->file references the file written to.
 */
static int write_batch(struct kms_audit_dev *d, struct kms_audit_batch *b, char *why, size_t whylen)
{
    struct stat st;
    if (d->file == NULL && open_file(d, &d->file, why, whylen) != 0) {
        return -1;
    }
    if (fstat(d->file->fd, &st) != 0) {
        snprintf(why, whylen, "cannot stat %.300s: %s", d->o.path, strerror(errno));
        return -1;
    }
    if (st.st_nlink == 0) {
        /* deleted under us: writing on would fill an invisible inode */
        dev_log(d, "warn", "audit file %s was deleted; creating it again", d->o.path);
        afile_unref(&d->file);
        if (open_file(d, &d->file, why, whylen) != 0 || fstat(d->file->fd, &st) != 0) {
            return -1;
        }
    }
    int fd = d->file->fd;
    off_t before = st.st_size;
    size_t off = 0;
    while (off < b->len) {
        ssize_t w = write(fd, b->buf + off, b->len - off);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            snprintf(why, whylen, "cannot write %.300s: %s", d->o.path,
                     w < 0 ? strerror(errno) : "short write");
            goto fail;
        }
        off += (size_t)w;
    }
    if (d->o.fsync == KMS_AUDIT_FSYNC_ALWAYS) {
        uint64_t t0 = mono_us();
        int sr = fdatasync(fd);
        count_fsync(d, t0);
        if (sr != 0) {
            snprintf(why, whylen, "cannot sync %.300s: %s", d->o.path, strerror(errno));
            goto fail;
        }
    }
    b->file = afile_ref(d->file);
    return 0;
fail:
    if (ftruncate(fd, before) != 0) {
        dev_log(d, "error", "audit file %s: cannot remove a partly written batch: %s", d->o.path,
                strerror(errno));
    }
    return -1;
}

/* Under mu. */
static void batch_unref(struct kms_audit_batch *b)
{
    if (--b->refs == 0) {
        afile_unref(&b->file);
        free(b->buf);
        free(b);
    }
}

/* Under mu: b failed; it is finished for every waiter. */
static void batch_fail(struct kms_audit_batch *b, const char *why)
{
    snprintf(b->why, sizeof(b->why), "%s", why);
    b->status = -1;
    b->written = true;
    b->synced = true;
}

/* Under mu: log an I/O error, at most once a second. */
static void io_error(struct kms_audit_dev *d, const char *why)
{
    int64_t now = kms_audit_mono_ms();
    if (now - d->last_err_log >= 1000) {
        d->last_err_log = now;
        pthread_mutex_unlock(&d->mu);
        dev_log(d, "error", "audit device %s: %s", d->o.name, why);
        pthread_mutex_lock(&d->mu);
    }
}

/* Under mu, as the write leader: append the oldest batch. Drops and retakes mu. */
static void lead_write(struct kms_audit_dev *d)
{
    struct kms_audit_batch *b = d->qhead;
    char why[512];

    b->taken = true;
    d->writing = true;
    pthread_mutex_unlock(&d->mu);
    why[0] = '\0';
    pthread_mutex_lock(&d->io);
    int rc = write_batch(d, b, why, sizeof(why));
    pthread_mutex_unlock(&d->io);
    pthread_mutex_lock(&d->mu);

    d->qhead = b->next;
    if (d->qhead == NULL) {
        d->qtail = NULL;
    }
    b->next = NULL;
    if (rc == 0) {
        d->wseq = b->last_seq;
        memcpy(d->whash, b->last_hash, sizeof(d->whash));
        b->written = true;
        if (d->o.fsync == KMS_AUDIT_FSYNC_BATCH) {
            /* the queue's reference moves to the sync list */
            if (d->wtail != NULL) {
                d->wtail->next = b;
            } else {
                d->whead = b;
            }
            d->wtail = b;
        } else {
            b->synced = true;
            batch_unref(b);
        }
    } else {
        /* every queued line was chained onto this batch: fail them all, roll back */
        batch_fail(b, why);
        batch_unref(b);
        while (d->qhead != NULL) {
            struct kms_audit_batch *q = d->qhead;
            d->qhead = q->next;
            batch_fail(q, why);
            batch_unref(q);
        }
        d->qtail = NULL;
        d->seq = d->wseq;
        memcpy(d->hash, d->whash, sizeof(d->hash));
    }
    d->writing = false;
    pthread_cond_broadcast(&d->done);
    if (rc != 0) {
        io_error(d, why);
    }
}

/* Under mu, as the sync leader: make every written batch durable. Drops and retakes mu. */
static void lead_sync(struct kms_audit_dev *d)
{
    struct kms_audit_batch *list = d->whead;
    char why[512];
    int rc = 0;

    d->whead = d->wtail = NULL;
    d->syncing = true;
    pthread_mutex_unlock(&d->mu);
    /* one fdatasync per file in the list (usually one; two across a rotation) */
    why[0] = '\0';
    struct afile *last = NULL;
    for (struct kms_audit_batch *b = list; b != NULL; b = b->next) {
        if (b->file != last) {
            last = b->file;
            uint64_t t0 = mono_us();
            int sr = fdatasync(last->fd);
            count_fsync(d, t0);
            if (sr != 0 && rc == 0) {
                snprintf(why, sizeof(why), "cannot sync %.300s: %s", d->o.path, strerror(errno));
                rc = -1;
            }
        }
    }
    pthread_mutex_lock(&d->mu);
    while (list != NULL) {
        struct kms_audit_batch *b = list;
        list = b->next;
        if (rc != 0) {
            batch_fail(b, why);
        }
        b->synced = true;
        batch_unref(b);
    }
    d->syncing = false;
    pthread_cond_broadcast(&d->done);
    if (rc != 0) {
        io_error(d, why);
    }
}

/* ---- life cycle -------------------------------------------------------------------------- */

int kms_audit_dev_open(const struct kms_audit_device_opts *o, const struct kms_audit_dev_env *env,
                       struct kms_audit_dev **out, struct kms_err *err)
{
    struct kms_audit_dev *d = calloc(1, sizeof(*d));
    pthread_condattr_t ca;
    char why[512];
    int rc = -1;

    if (d == NULL) {
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    d->o = *o;
    d->env = *env;
    pthread_mutex_init(&d->mu, NULL);
    pthread_mutex_init(&d->io, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&d->done, &ca);
    pthread_condattr_destroy(&ca);
    if (open_file(d, &d->file, why, sizeof(why)) != 0) {
        kms_err_set(err, 500, "audit device %s: %s", o->name, why);
        goto out;
    }
    if (recover(d, err) != 0 || load_salt(d, err) != 0) {
        goto out;
    }
    if (kms_hmac_key_create(d->salt, strlen(d->salt), &d->hkey) != 0) {
        kms_err_set(err, 500, "audit device %s: cannot prepare its salt", o->name);
        goto out;
    }
    d->wseq = d->seq;
    memcpy(d->whash, d->hash, sizeof(d->hash));
    d->ready = true;
    *out = d;
    d = NULL;
    rc = 0;
out:
    kms_audit_dev_close(&d);
    return rc;
}

void kms_audit_dev_close(struct kms_audit_dev **dp)
{
    struct kms_audit_dev *d = *dp;
    if (d == NULL) {
        return;
    }
    if (d->ready) {
        /* lines whose callers gave up waiting are still owed to the file */
        pthread_mutex_lock(&d->mu);
        while (d->writing || d->syncing) {
            pthread_cond_wait(&d->done, &d->mu);
        }
        while (d->qhead != NULL) {
            lead_write(d);
        }
        if (d->whead != NULL) {
            lead_sync(d);
        }
        pthread_mutex_unlock(&d->mu);
        save_head(d);
    }
    afile_unref(&d->file);
    pthread_mutex_destroy(&d->mu);
    pthread_mutex_destroy(&d->io);
    pthread_cond_destroy(&d->done);
    kms_memzero(d->salt, sizeof(d->salt));
    kms_hmac_key_destroy(&d->hkey);
    free(d);
    *dp = NULL;
}

const struct kms_audit_device_opts *kms_audit_dev_opts(const struct kms_audit_dev *d)
{
    return &d->o;
}

const char *kms_audit_dev_salt(const struct kms_audit_dev *d)
{
    return d->salt;
}

const struct kms_hmac_key *kms_audit_dev_hkey(const struct kms_audit_dev *d)
{
    return d->hkey;
}

int kms_audit_dev_reopen(struct kms_audit_dev *d, char *why, size_t whylen)
{
    struct afile *nf = NULL;
    pthread_mutex_lock(&d->io);
    int rc = open_file(d, &nf, why, whylen);
    /* batches written to the old file keep it open until they are synced */
    afile_unref(&d->file);
    /* on failure every write fails (and retries the open) until the path works again */
    d->file = nf;
    pthread_mutex_unlock(&d->io);
    if (rc == 0) {
        save_head(d);
    }
    return rc;
}

/* ---- callers ----------------------------------------------------------------------------- */

static int grow(struct kms_audit_batch *b, size_t need)
{
    if (b->len + need <= b->cap) {
        return 0;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + need) {
        cap *= 2;
    }
    char *nb = realloc(b->buf, cap);
    if (nb == NULL) {
        return -1;
    }
    b->buf = nb;
    b->cap = cap;
    return 0;
}

int kms_audit_dev_submit(struct kms_audit_dev *d, const char *body, size_t len,
                         struct kms_audit_batch **out, char *why, size_t whylen)
{
    struct kms_audit_batch *b = NULL;
    struct kms_hash_stream *hs = NULL;
    bool fresh = false;
    char suffix[64 + KMS_AUDIT_HASH_LEN];
    uint8_t digest[32];
    char h[KMS_AUDIT_HASH_LEN + 1];
    int rc = -1;

    if (len < 2 || body[0] != '{' || body[len - 1] != '}') {
        snprintf(why, whylen, "malformed record");
        return -1;
    }
    /* the chain hash covers body-without-'}' + suffix: hash the body outside the lock, and
     * only the short suffix (which needs the chain head) under it */
    if (kms_hash_stream_create(KMS_HASH_SHA2_256, &hs) != 0 ||
        kms_hash_stream_update(hs, body, len - 1) != 0) {
        kms_hash_stream_destroy(&hs);
        snprintf(why, whylen, "cannot hash the record");
        return -1;
    }
    pthread_mutex_lock(&d->mu);
    b = d->qtail;
    if (b == NULL || b->taken || d->o.fsync == KMS_AUDIT_FSYNC_ALWAYS) {
        b = calloc(1, sizeof(*b));
        if (b == NULL) {
            snprintf(why, whylen, "out of memory");
            goto out;
        }
        b->refs = 1;
        fresh = true;
    }
    uint64_t seq = d->seq + 1;
    int sn =
        snprintf(suffix, sizeof(suffix), ",\"seq\":%" PRIu64 ",\"prev_hash\":\"%s\"", seq, d->hash);
    /* prefix = body without its '}' + suffix; then ,"hash":"…"} and a newline */
    if (kms_hash_stream_update(hs, suffix, (size_t)sn) != 0 ||
        kms_hash_stream_final(hs, digest) != 0) {
        snprintf(why, whylen, "cannot hash the record");
        goto out;
    }
    memcpy(h, "sha256:", 7);
    kms_hex_encode(digest, sizeof(digest), h + 7);
    if (grow(b, len - 1 + (size_t)sn + 9 + KMS_AUDIT_HASH_LEN + 3) != 0) {
        snprintf(why, whylen, "out of memory");
        goto out;
    }
    memcpy(b->buf + b->len, body, len - 1);
    b->len += len - 1;
    memcpy(b->buf + b->len, suffix, (size_t)sn);
    b->len += (size_t)sn;
    memcpy(b->buf + b->len, ",\"hash\":\"", 9);
    b->len += 9;
    memcpy(b->buf + b->len, h, KMS_AUDIT_HASH_LEN);
    b->len += KMS_AUDIT_HASH_LEN;
    memcpy(b->buf + b->len, "\"}\n", 3);
    b->len += 3;

    d->seq = seq;
    memcpy(d->hash, h, sizeof(d->hash));
    b->last_seq = seq;
    memcpy(b->last_hash, h, sizeof(b->last_hash));
    if (fresh) {
        if (d->qtail != NULL) {
            d->qtail->next = b;
        } else {
            d->qhead = b;
        }
        d->qtail = b;
        fresh = false;
    }
    b->refs++;
    *out = b;
    rc = 0;
out:
    if (fresh) {
        free(b->buf);
        free(b);
    }
    pthread_mutex_unlock(&d->mu);
    kms_hash_stream_destroy(&hs);
    return rc;
}

int kms_audit_dev_wait(struct kms_audit_dev *d, struct kms_audit_batch **bp, bool durable,
                       int64_t deadline_ms, char *why, size_t whylen)
{
    struct kms_audit_batch *b = *bp;
    struct timespec ts;
    int rc;

    ts.tv_sec = (time_t)(deadline_ms / 1000);
    ts.tv_nsec = (long)(deadline_ms % 1000) * 1000000;
    pthread_mutex_lock(&d->mu);
    while (!(durable ? b->synced : b->written)) {
        /* ours is written: sync first, rather than write newer batches and delay our sync */
        if (durable && b->written && !d->syncing && d->whead != NULL) {
            lead_sync(d);
            continue;
        }
        if (!d->writing && d->qhead != NULL) {
            lead_write(d); /* the oldest batch first: ours, or one ours is chained onto */
            continue;
        }
        if (pthread_cond_timedwait(&d->done, &d->mu, &ts) == ETIMEDOUT) {
            break;
        }
    }
    if (!(durable ? b->synced : b->written)) {
        snprintf(why, whylen, "timed out waiting for %.300s", d->o.path);
        rc = -1;
    } else {
        if (b->status != 0) {
            snprintf(why, whylen, "%s", b->why);
        }
        rc = b->status;
    }
    batch_unref(b);
    pthread_mutex_unlock(&d->mu);
    *bp = NULL;
    return rc;
}
