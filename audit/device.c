/*
 * device.c - one audit file, its writer thread and its group commit.
 *
 * Callers chain their line onto the device under `mu` (sequence number, previous hash, own
 * hash; the line is copied into the open batch) together with a waiter, and return at once.
 * One writer thread per device takes the open batch (every line queued since it last looked),
 * appends it with one write(2), tells the waiters that only needed the line written, makes the
 * file durable with one fdatasync(2) when a waiter needs that, and tells the rest. While it
 * syncs, new lines gather in the next batch, so under load one fsync serves every request in
 * flight, and no caller ever blocks on the disk: a caller that has to wait (kms_audit_rec_wait,
 * audit.c) waits on its own condition, or, on an event loop, gets a callback (the waiter's fn,
 * called on the writer thread) and parks its request meanwhile.
 *
 * A waiter asks either for the line written (a request line of an operation without side
 * effects: a full disk or a dead file is known by then) or for it durable (response lines;
 * request lines of operations that change state). Modes: "batch" as above (a batch whose
 * waiters only need "written" is not synced on its own: the next durable batch's fsync covers
 * the same file); "always" writes and syncs each line on its own (one fsync per line, for
 * comparison); "never" makes "written" count as durable (Vault's behaviour).
 *
 * A writer inside write(2) or fdatasync(2) cannot be interrupted; on a hung file system the
 * waiters' own deadlines fail their requests (audit_timeout) while the writer stays blocked.
 *
 * Failure: a batch that cannot be written whole is cut off the file again (ftruncate to the
 * size before the write, so a full disk or RLIMIT_FSIZE never leaves a torn line) and fails
 * every waiter of the batch. Lines queued behind it were chained onto it, so they fail too,
 * and the chain head rolls back to the last line written. A failed fsync fails every waiter
 * of that group (their lines stay in the file, in order), and in "batch" mode the device is
 * then broken (unless a reopen already replaced the file that failed): it
 * takes no more lines until it is reopened (SIGHUP) or kmsd restarts, because Linux reports a
 * writeback error once and marks the pages it could not write clean, so a later fsync that
 * succeeds would not cover lines written before the failed one (a request line told
 * "written" whose response line went into a later group). A batch that cannot be cut off
 * again (ftruncate failed) breaks the device the same way: appending after a torn line would
 * put it in the middle of the file. A file deleted under us (st_nlink == 0) is recreated by
 * path before the next write; after a failed open every write retries the open.
 *
 * One writer per file: the device holds an exclusive flock(2) on the file it appends to while
 * it is open (open_file), so a second kmsd (its own store, the same audit file) refuses to start
 * instead of forking the chain; the lock follows the file across a rotation. Readers take none.
 *
 * A device whose writer hangs (a dead NFS server) holds at most QUEUE_MAX bytes of queued
 * lines; past that a new line is refused at once, so the other devices carry the records
 * (a line counts once one device has it) and memory stays bounded.
 *
 * Test hooks (built with -DKMS_TEST_HOOKS=ON only): with KMS_TEST_AUDIT_HOOKS=<dir> in the
 * environment the writer, before each fdatasync, sleeps the milliseconds written in
 * <dir>/delay and waits while <dir>/hold exists (creating <dir>/held meanwhile); before each
 * write it fails the batch after writing half of it when <dir>/fail exists and is empty or
 * names a string the batch contains; while <dir>/syncfail exists every fdatasync is skipped
 * and reported as failed (EIO); <dir>/gather_us, read at the open of a batch-mode device,
 * replaces GATHER_US (a test makes it long, so that what ends a gathering is never the clock). A
 * device whose name is a directory in <dir> takes its hooks from that directory instead (one device
 * of several held or failed).
 *
 * Locks: `mu` guards the queue and the chain heads; `io` guards the current file and is held
 * around a write and by reopen, so a reopen never splits a batch. Open files are
 * reference-counted: a batch keeps the file it was written to until it is synced, so a
 * rotation never loses an fsync. Nobody holds `mu` during I/O, and waiters are called with no
 * device lock held.
 */
#include "audit/audit_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SALT_META "audit/%s/salt"

/* batch mode: how long a group may wait for worker passes still adding lines to it (writer_main);
 * 200 µs took about a third of the fdatasync calls away under wrk -c64 at no cost in rate */
#define GATHER_US 200
#define HEAD_META "audit/%s/head"
#define HEAD_META_REPLICA "audit/%s/head/%s" /* HA: one chain head per replica */
#define TAIL_READ 512
#define QUEUE_MAX (64u * 1024 * 1024) /* bytes of lines queued for the writer, at most */
#define DROP_BYTES ((off_t)1 << 20)   /* synced bytes dropped from the page cache at once */
#define CLOSE_WAIT_S 10 /* at close, how long the writer may take to drain (the stop grace) */

/* An open log file; the last reference closes it. */
struct afile {
    int fd;
    atomic_int refs;
    dev_t dev; /* the inode opened (fstat at open) */
    ino_t ino;
    bool locked;   /* this open file took the device's flock (open_file) */
    off_t end;     /* writer only: the file's size after its last write */
    off_t dropped; /* writer only: [0, dropped) synced and dropped from the page cache */
    off_t queued;  /* writer only, "never" mode: [dropped, queued) handed to writeback */
};

struct kms_audit_batch {
    struct kms_audit_batch *next;
    char *buf;
    size_t len, cap;
    size_t lines;
    uint64_t last_seq;
    char last_hash[KMS_AUDIT_HASH_LEN + 1];
    struct kms_audit_waiter *on_written; /* told once the batch is in the file */
    struct kms_audit_waiter *on_synced;  /* told once it is durable */
    struct afile *file;                  /* written to this file */
};

struct kms_audit_dev {
    struct kms_audit_device_opts o;
    struct kms_audit_dev_env env;
    char salt[40];
    struct kms_hmac_key *hkey; /* the salt, prepared for HMAC */
    pthread_mutex_t mu;
    pthread_cond_t work; /* a batch was queued, or stop */
    pthread_cond_t done; /* the writer ended (under mu), for close's wait */
    pthread_mutex_t io;
    pthread_t writer;
    bool writer_started;
    bool stopping;
    atomic_int wstate;                     /* WRITER_*: close gave up waiting, or it ended */
    bool ready;                            /* opened and recovered */
    struct kms_audit_batch *qhead, *qtail; /* chained, not yet written */
    uint64_t seq;                          /* chain head including queued lines */
    char hash[KMS_AUDIT_HASH_LEN + 1];
    uint64_t wseq; /* chain head in the file */
    char whash[KMS_AUDIT_HASH_LEN + 1];
    struct afile *file;   /* under io; NULL after a failed open */
    struct afile *lock;   /* under io: the open file holding the flock (see open_file) */
    char broken[512];     /* under io: why the device takes no lines ("" = fine) */
    size_t qbytes;        /* under mu: bytes of the batches in the queue */
    bool owed;            /* under mu: a worker defers the wake-up (wake_writer) */
    int passes;           /* under mu: worker passes that queued lines here and are not over */
    bool urgent;          /* under mu: a thread that cannot defer signalled: take the queue now */
    int64_t gather_us;    /* the longest a group waits for passes still adding to it (0: never) */
    struct afile *dirty;  /* writer only: written since the last fdatasync (batch mode) */
    int64_t last_err_log; /* one error line per second at most (writer only) */
    int64_t last_group;   /* when the writer last finished a group (under mu) */
    size_t untrimmed;     /* bytes written since the last trim (under mu) */
    struct kms_audit_batch *spare; /* finished batches kept with their buffers (under mu) */
    size_t nspare;
    char hooks[512]; /* KMS_TEST_HOOKS: the hooks directory, "" = none */
    /* metrics, updated with relaxed atomics */
    _Atomic uint64_t st_fsyncs;
    _Atomic uint64_t st_fsync_us;
    _Atomic size_t st_pending; /* lines chained whose batch is not finished */
};

/* d->wstate: the writer runs; it ended; close gave up waiting for it (it writes nothing more,
 * and lets the file and its lock go when it ends: an HA replica promoted again opens it anew) */
enum { WRITER_RUNNING, WRITER_ENDED, WRITER_ABANDONED };

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
    pthread_mutex_unlock(&d->mu);
    st->queued += q;
    st->pending += atomic_load_explicit(&d->st_pending, memory_order_relaxed);
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
    /* Vault's salt: a random UUID string, created once per device, insert-if-absent (HA
     * replicas racing at first start all end up with the one stored salt) */
    if (kms_uuid4(d->salt) != 0) {
        kms_err_set(err, 500, "audit device %s: cannot create a salt", d->o.name);
        goto out;
    }
    int g = kms_storage_put_if_absent(txn, KMS_DB_META, key, strlen(key), d->salt, strlen(d->salt),
                                      &val, &vallen);
    if (g == 1 && vallen > 0 && vallen < sizeof(d->salt)) {
        memcpy(d->salt, val, vallen);
        d->salt[vallen] = '\0';
        rc = 0;
        goto out;
    }
    if (g != 0) {
        kms_err_set(err, 500, "audit device %s: cannot read its salt", d->o.name);
        goto out;
    }
    if (kms_storage_txn_commit(&txn) != 0) {
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

static int load_head(struct kms_audit_dev *d, uint64_t *seq, char hash[KMS_AUDIT_HASH_LEN + 1],
                     bool *found)
{
    struct kms_txn *txn = NULL;
    uint8_t *val = NULL;
    size_t vallen = 0;
    char key[400];
    char text[128];
    int rc = -1;

    *seq = 0;
    *found = false;
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
    *found = true;
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    free(val);
    return rc;
}

/*
 * Chain heads this process could not record in storage (an HA replica closes its devices when
 * it steps down, and once its lease ran out or its session is gone nothing commits), by their
 * storage key. A device opened again in this process (the replica promoted again) takes the
 * newer of this head and the stored one: a file rotated while it stood by would otherwise
 * start again from the older stored head and fork the chain.
 */
#define UNSAVED_MAX 8
static pthread_mutex_t unsaved_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char key[400];
    uint64_t seq;
    char hash[KMS_AUDIT_HASH_LEN + 1];
} unsaved[UNSAVED_MAX];
static size_t nunsaved;

/* Remember (saved false) or forget (saved true) the unsaved head of key. */
static void unsaved_note(const char *key, uint64_t seq, const char *hash, bool saved)
{
    size_t i = 0;
    pthread_mutex_lock(&unsaved_mu);
    while (i < nunsaved && strcmp(unsaved[i].key, key) != 0) {
        i++;
    }
    if (saved && i < nunsaved && unsaved[i].seq <= seq) {
        unsaved[i] = unsaved[--nunsaved];
    } else if (!saved && (i < nunsaved || nunsaved < UNSAVED_MAX)) {
        nunsaved += i == nunsaved;
        snprintf(unsaved[i].key, sizeof(unsaved[i].key), "%s", key);
        unsaved[i].seq = seq;
        snprintf(unsaved[i].hash, sizeof(unsaved[i].hash), "%s", hash);
    }
    pthread_mutex_unlock(&unsaved_mu);
}

/* The unsaved head of key, when there is one. */
static bool unsaved_get(const char *key, uint64_t *seq, char hash[KMS_AUDIT_HASH_LEN + 1])
{
    bool found = false;
    pthread_mutex_lock(&unsaved_mu);
    for (size_t i = 0; i < nunsaved && !found; i++) {
        if (strcmp(unsaved[i].key, key) == 0) {
            *seq = unsaved[i].seq;
            memcpy(hash, unsaved[i].hash, KMS_AUDIT_HASH_LEN + 1);
            found = true;
        }
    }
    pthread_mutex_unlock(&unsaved_mu);
    return found;
}

/* Remember a head on disk so a restart with an empty (rotated) file continues the chain. */
static void save_head_at(struct kms_audit_dev *d, uint64_t seq, const char *hash)
{
    struct kms_txn *txn = NULL;
    char key[400];
    char text[128];

    if (d->env.st == NULL) {
        return;
    }
    int n = snprintf(text, sizeof(text), "%" PRIu64 " %s", seq, hash);
    head_key(d, key, sizeof(key));
    bool saved = kms_storage_txn_begin(d->env.st, true, &txn) == 0 &&
                 kms_storage_put(txn, KMS_DB_META, key, strlen(key), text, (size_t)n) == 0 &&
                 kms_storage_txn_commit(&txn) == 0;
    if (!saved) {
        dev_log(d, "warn", "audit device %s: cannot record the chain head in storage", d->o.name);
    }
    kms_storage_txn_abort(&txn);
    unsaved_note(key, seq, hash, saved);
}

/* The head of what is in the file (at close: the writer has ended). */
static void save_head(struct kms_audit_dev *d)
{
    char hash[KMS_AUDIT_HASH_LEN + 1];
    pthread_mutex_lock(&d->mu);
    uint64_t seq = d->wseq;
    memcpy(hash, d->whash, sizeof(hash));
    pthread_mutex_unlock(&d->mu);
    save_head_at(d, seq, hash);
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

/*
 * One writer per audit file, across processes: the device holds an exclusive flock(2) on the
 * file it appends to for as long as it is open (two kmsd with their own stores but one audit
 * file would each continue the chain from their own head and fork it). The lock is on an open
 * file description, so the device keeps the afile that took it (d->lock) and a file opened
 * again by path that is the same inode (a SIGHUP that rotated nothing, a write retrying the open
 * while a batch still holds the old file) is covered by it instead of locking again, which
 * would fail against the device's own lock. The lock moves to the new file once a rotated
 * (or recreated) file is adopted. Readers (`audit verify`, `audit list`, sys/audit/events)
 * take no lock and are never blocked.
 */
static int lock_file(struct kms_audit_dev *d, struct afile *af, char *why, size_t whylen)
{
    if (d->lock != NULL && d->lock->dev == af->dev && d->lock->ino == af->ino) {
        return 0;
    }
    if (flock(af->fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
            snprintf(why, whylen,
                     "another kmsd is writing the audit file %.300s (another process holds its "
                     "lock): each server needs its own audit file",
                     d->o.path);
        } else {
            snprintf(why, whylen, "cannot lock the audit file %.300s: %s", d->o.path,
                     strerror(errno));
        }
        return -1;
    }
    af->locked = true;
    return 0;
}

/* af becomes the device's file (with `io` held, or before the writer starts): when it took a
 * lock of its own (another inode), the lock on the previous file is let go. */
static void adopt_lock(struct kms_audit_dev *d, struct afile *af)
{
    if (!af->locked || d->lock == af) {
        return;
    }
    if (d->lock != NULL) {
        /* batches may keep the old file open until they are synced: unlock it now */
        (void)flock(d->lock->fd, LOCK_UN);
        afile_unref(&d->lock);
    }
    d->lock = afile_ref(af);
}

/* Open (create) the file for appending, and lock it; 0 and *out (one reference), or -1 with
 * why. */
static int open_file(struct kms_audit_dev *d, struct afile **out, char *why, size_t whylen)
{
    struct stat st;
    unsigned mode = d->o.mode & 0666; /* never executable */
    struct afile *af = malloc(sizeof(*af));
    if (af == NULL) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    /* read too: check_continues reads the end of this very file (not whatever the path names
     * by then) */
    int f = open(d->o.path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, mode ? mode : 0600);
    if (f < 0) {
        snprintf(why, whylen, "cannot open %.300s: %s", d->o.path, strerror(errno));
        free(af);
        return -1;
    }
    if (fstat(f, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(why, whylen, "%.300s is not a regular file", d->o.path);
        goto fail;
    }
    af->fd = f;
    af->dev = st.st_dev;
    af->ino = st.st_ino;
    af->locked = false;
    /* before anything changes the file (its mode, recover's cut of a torn line) */
    if (lock_file(d, af, why, whylen) != 0) {
        goto fail;
    }
    if (mode != 0 && (st.st_mode & 07777) != mode && fchmod(f, mode) != 0) {
        snprintf(why, whylen, "cannot set the mode of %.300s: %s", d->o.path, strerror(errno));
        goto fail;
    }
    sync_dir(d->o.path);
    atomic_init(&af->refs, 1);
    af->end = af->dropped = af->queued = 0;
    *out = af;
    return 0;
fail:
    close(f); /* a lock it took goes with it */
    free(af);
    return -1;
}

/*
 * Whether bytes [from, size) of rfd are all zero: what a file system can show past the last
 * write that reached the disk after a power loss (the file's new size was, its data was not).
 */
static bool zero_tail(int rfd, off_t from, off_t size)
{
    char buf[TAIL_READ];
    while (from < size) {
        size_t want = size - from < (off_t)sizeof(buf) ? (size_t)(size - from) : sizeof(buf);
        ssize_t r = pread(rfd, buf, want, from);
        if (r <= 0) {
            return false;
        }
        for (ssize_t i = 0; i < r; i++) {
            if (buf[i] != '\0') {
                return false;
            }
        }
        from += r;
    }
    return true;
}

/*
 * The end of an audit file of `size` bytes read through rfd: *good is the end of its last
 * complete line (0: none), whose chain fields go to *seq and hash; *torn_ours tells whether
 * the bytes after it, if any, begin as a kmsd record does (a line cut short by a crash).
 * -1 with why when the file cannot be read or its last complete line is no kmsd record.
 */
static int scan_end(const struct kms_audit_dev *d, int rfd, off_t size, off_t *good, uint64_t *seq,
                    char hash[KMS_AUDIT_HASH_LEN + 1], bool *torn_ours, char *why, size_t whylen)
{
    static const char head[] = "{\"time\":\"";
    char buf[TAIL_READ];
    off_t end = size;
    *good = -1;
    while (end > 0 && *good < 0) {
        off_t start = end > (off_t)sizeof(buf) ? end - (off_t)sizeof(buf) : 0;
        ssize_t r = pread(rfd, buf, (size_t)(end - start), start);
        if (r != end - start) {
            snprintf(why, whylen, "audit file %.300s: cannot read it", d->o.path);
            return -1;
        }
        for (ssize_t i = r - 1; i >= 0; i--) {
            if (buf[i] == '\n') {
                *good = start + i + 1;
                break;
            }
        }
        end = start;
    }
    if (*good < 0) {
        *good = 0;
    }
    *torn_ours = true;
    if (*good < size) {
        size_t want =
            size - *good < (off_t)(sizeof(head) - 1) ? (size_t)(size - *good) : sizeof(head) - 1;
        ssize_t r = pread(rfd, buf, want, *good);
        *torn_ours =
            (r == (ssize_t)want && memcmp(buf, head, want) == 0) || zero_tail(rfd, *good, size);
    }
    *seq = 0;
    snprintf(hash, KMS_AUDIT_HASH_LEN + 1, "%s", KMS_AUDIT_GENESIS);
    if (*good == 0) {
        return 0;
    }
    off_t from = *good - 1 > (off_t)sizeof(buf) ? *good - 1 - (off_t)sizeof(buf) : 0;
    ssize_t r = pread(rfd, buf, (size_t)(*good - 1 - from), from);
    char prev[KMS_AUDIT_HASH_LEN + 1];
    size_t plen;
    if (r != *good - 1 - from ||
        kms_audit_line_chain(buf, (size_t)r, seq, prev, hash, &plen) != 0) {
        snprintf(why, whylen,
                 "audit file %.300s: its last line is not a kmsd audit record; move the file "
                 "away to start a new log",
                 d->o.path);
        return -1;
    }
    return 0;
}

/*
 * Whether the last complete line of the file (ending at `good`, its newline) still matches
 * its own hash: true when it cannot tell (unreadable, or longer than LAST_LINE_MAX).
 */
#define LAST_LINE_MAX (64 << 20)
static bool last_line_intact(int rfd, off_t good)
{
    char buf[TAIL_READ];
    off_t start = 0, end = good - 1; /* the line is [start, end), its newline at end */
    bool found = false;
    while (end > 0 && !found && good - 1 - end < LAST_LINE_MAX) {
        off_t from = end > (off_t)sizeof(buf) ? end - (off_t)sizeof(buf) : 0;
        ssize_t r = pread(rfd, buf, (size_t)(end - from), from);
        if (r != end - from) {
            return true;
        }
        for (ssize_t i = r - 1; i >= 0 && !found; i--) {
            if (buf[i] == '\n') {
                start = from + i + 1;
                found = true;
            }
        }
        end = from;
    }
    size_t len = (size_t)(good - 1 - start);
    if ((!found && end > 0) || len > LAST_LINE_MAX) {
        return true;
    }
    char *line = malloc(len ? len : 1);
    char prev[KMS_AUDIT_HASH_LEN + 1], own[KMS_AUDIT_HASH_LEN + 1], mine[KMS_AUDIT_HASH_LEN + 1];
    uint64_t seq;
    size_t pl;
    bool ok = line == NULL || pread(rfd, line, len, start) != (ssize_t)len ||
              kms_audit_line_chain(line, len, &seq, prev, own, &pl) != 0 ||
              (kms_audit_chain_hash(line, pl, mine) == 0 && strcmp(mine, own) == 0);
    free(line);
    return ok;
}

/*
 * How far the chain goes on in the rotated copy `path` from the head (seq, hash): when the copy
 * holds the line after it (seq + 1, whose prev_hash is the head), the head moves to the last of
 * the complete lines that follow on from there, one by one, and true is returned.
 */
static bool follow_file(const struct kms_audit_dev *d, const char *path, uint64_t *seq,
                        char hash[KMS_AUDIT_HASH_LEN + 1])
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    struct stat st;
    off_t good;
    bool torn_ours, found = false;
    uint64_t last, cur = *seq;
    char lhash[KMS_AUDIT_HASH_LEN + 1], curhash[KMS_AUDIT_HASH_LEN + 1], why[512];
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    FILE *f = NULL;

    /* its last line first: a copy that ends at or before the head holds nothing after it */
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
        scan_end(d, fd, st.st_size, &good, &last, lhash, &torn_ours, why, sizeof(why)) != 0 ||
        last <= cur || (f = fdopen(fd, "rb")) == NULL) {
        if (fd >= 0) {
            close(fd);
        }
        return false;
    }
    memcpy(curhash, hash, sizeof(curhash));
    while ((n = getline(&line, &cap, f)) > 0) {
        char prev[KMS_AUDIT_HASH_LEN + 1], own[KMS_AUDIT_HASH_LEN + 1];
        size_t pl;
        uint64_t s;
        bool ok = line[n - 1] == '\n' &&
                  kms_audit_line_chain(line, (size_t)n - 1, &s, prev, own, &pl) == 0;
        if (ok && s == cur + 1 && strcmp(prev, curhash) == 0) {
            found = true;
            cur = s;
            memcpy(curhash, own, sizeof(curhash));
        } else if (found || (ok && s > cur + 1)) {
            break; /* the chain from the head ends here, or this copy starts after it */
        }
    }
    free(line);
    fclose(f);
    if (found) {
        *seq = cur;
        memcpy(hash, curhash, sizeof(curhash));
    }
    return found;
}

/*
 * A file found empty at start-up (rotated while kmsd was down) continues from the head kmsd
 * stored, which is written at each reopen and at a clean stop only: after a crash (SIGKILL, the
 * OOM killer, a power loss) the file rotated since holds lines past it, and going on from the
 * stored head forked the chain there. So follow the chain from that head through the file's
 * rotated copies next to it (the files `audit verify` reads with it); *via names the last copy
 * the head moved into (empty when it did not move).
 */
static void follow_rotated(struct kms_audit_dev *d, char *via, size_t vialen)
{
    const char *arg = d->o.path;
    char **paths = NULL;
    size_t n = 0;
    struct kms_err e = {0};
    bool moved = true;

    via[0] = '\0';
    if (kms_audit_files_expand(&arg, 1, true, &paths, &n, &e) != 0) {
        return;
    }
    while (moved) {
        moved = false;
        for (size_t i = 0; i < n && !moved; i++) {
            if (strcmp(paths[i], d->o.path) != 0 && follow_file(d, paths[i], &d->seq, d->hash)) {
                snprintf(via, vialen, "%s", paths[i]);
                moved = true;
            }
        }
    }
    kms_audit_files_free(&paths, n);
}

/* The chain of a new (empty) file starts at the stored head, or past it (follow_rotated). */
static void start_from_head(struct kms_audit_dev *d, bool stored_found, uint64_t seq,
                            const char *hash)
{
    char via[KMS_AUDIT_PATH_MAX];
    d->seq = seq;
    memcpy(d->hash, hash, sizeof(d->hash));
    if (!stored_found || seq == 0) {
        return; /* nothing of this device's chain was written anywhere: another chain's file
                 * next to it (an older store's, another replica's) also starts at the genesis */
    }
    follow_rotated(d, via, sizeof(via));
    if (via[0] != '\0') {
        dev_log(d, "warn",
                "audit file %s is new: its chain goes on from seq %llu, the last record of %s, "
                "not from the head stored at the last reopen or clean stop (seq %llu): kmsd "
                "stopped without storing it",
                d->o.path, (unsigned long long)d->seq, via, (unsigned long long)seq);
        save_head_at(d, d->seq, d->hash);
    }
}

/*
 * At start-up: cut off a torn last line (a crash mid-write; that line was never acknowledged)
 * and read the chain head from the last line. An empty file takes the head from storage.
 * Only what begins as a kmsd record is cut: a file that ends otherwise is not a kmsd log (a
 * path given by mistake: another log, a key file) and is refused untouched.
 */
static int recover(struct kms_audit_dev *d, struct kms_err *err)
{
    struct stat st;
    char why[512];
    int rc = -1;
    uint64_t stored_seq = 0, useq;
    char stored[KMS_AUDIT_HASH_LEN + 1], uhash[KMS_AUDIT_HASH_LEN + 1];
    char key[400];
    bool stored_found;

    if (load_head(d, &stored_seq, stored, &stored_found) != 0) {
        kms_err_set(err, 500, "audit device %s: cannot read its chain head", d->o.name);
        goto out;
    }
    head_key(d, key, sizeof(key));
    if (d->env.st != NULL && unsaved_get(key, &useq, uhash) && useq > stored_seq) {
        /* this process wrote further than storage says (see unsaved): store it now */
        stored_seq = useq;
        memcpy(stored, uhash, sizeof(stored));
        stored_found = true;
        save_head_at(d, useq, uhash);
    }
    if (fstat(d->file->fd, &st) != 0) {
        kms_err_set(err, 500, "audit file %s: %s", d->o.path, strerror(errno));
        goto out;
    }
    if (st.st_size == 0) {
        start_from_head(d, stored_found, stored_seq, stored);
        rc = 0;
        goto out;
    }
    off_t good;
    bool torn_ours;
    /* the file opened (read and write), not whatever the path names by now */
    if (scan_end(d, d->file->fd, st.st_size, &good, &d->seq, d->hash, &torn_ours, why,
                 sizeof(why)) != 0) {
        kms_err_set(err, 500, "%s", why);
        goto out;
    }
    if (good != st.st_size) {
        if (!torn_ours) {
            kms_err_set(err, 500,
                        "audit file %s ends in %lld bytes that are not a kmsd audit record (and "
                        "no newline); kmsd changes nothing in it: move the file away to start a "
                        "new log",
                        d->o.path, (long long)(st.st_size - good));
            goto out;
        }
        bool zeros = zero_tail(d->file->fd, good, st.st_size);
        if (ftruncate(d->file->fd, good) != 0) {
            kms_err_set(err, 500, "audit file %s: cannot cut off a torn last line: %s", d->o.path,
                        strerror(errno));
            goto out;
        }
        dev_log(d, "warn",
                "audit file %s: removed a torn last line (%lld bytes) left by an interrupted "
                "write%s",
                d->o.path, (long long)(st.st_size - good),
                zeros ? " (zero bytes: the file's size reached the disk before its data, as "
                        "after a power loss)"
                      : "");
    }
    if (good > 0 && !last_line_intact(d->file->fd, good)) {
        dev_log(d, "error",
                "audit file %s: its last line (seq %llu) does not match its own hash: it was "
                "changed after it was written; the chain goes on from it, and `kmsd audit "
                "verify` names it",
                d->o.path, (unsigned long long)d->seq);
    }
    if (good == 0) {
        start_from_head(d, stored_found, stored_seq, stored);
    } else if (d->seq < stored_seq) {
        /* the head saved at the last reopen or clean stop is ahead of the file */
        dev_log(d, "error",
                "audit file %s ends at seq %llu, but this device had written up to seq %llu "
                "(%s): the records after seq %llu are missing from its end (cut off, or an "
                "older copy of the file put back); `kmsd audit verify --anchor` shows it",
                d->o.path, (unsigned long long)d->seq, (unsigned long long)stored_seq, stored,
                (unsigned long long)d->seq);
    }
    rc = 0;
out:
    return rc;
}

/*
 * Before appending to a file opened again (SIGHUP, or a write retrying after a failed open):
 * an empty file starts a new one of the chain; a non-empty one must end in this device's
 * last record (the same file kept), else it is another log or another chain (an older copy, a
 * foreign file), and appending would glue this chain onto it. With `io` held.
 */
static int check_continues(struct kms_audit_dev *d, const struct afile *f, char *why, size_t whylen)
{
    struct stat st;
    if (fstat(f->fd, &st) != 0 || st.st_size == 0) {
        return 0; /* an fstat error is met again by the write */
    }
    off_t good;
    bool torn_ours;
    uint64_t fseq;
    char fhash[KMS_AUDIT_HASH_LEN + 1];
    if (scan_end(d, f->fd, st.st_size, &good, &fseq, fhash, &torn_ours, why, whylen) != 0) {
        return -1;
    }
    pthread_mutex_lock(&d->mu);
    uint64_t seq = d->wseq;
    bool same = good == st.st_size && seq == fseq && strcmp(d->whash, fhash) == 0;
    pthread_mutex_unlock(&d->mu);
    if (!same) {
        snprintf(why, whylen,
                 "%.300s is not this device's log (it ends %s seq %llu, the device's last record "
                 "is seq %llu): kmsd does not append to it; move it away and send SIGHUP",
                 d->o.path, good == st.st_size ? "at" : "in an incomplete line after",
                 (unsigned long long)fseq, (unsigned long long)seq);
        return -1;
    }
    return 0;
}

/* open_file, then check_continues; 0 and *out (the device's lock moved to it when it is
 * another inode), or -1 with why (nothing opened, the lock where it was). With `io` held. */
static int open_continuing(struct kms_audit_dev *d, struct afile **out, char *why, size_t whylen)
{
    if (open_file(d, out, why, whylen) != 0) {
        return -1;
    }
    if (check_continues(d, *out, why, whylen) != 0) {
        afile_unref(out);
        return -1;
    }
    adopt_lock(d, *out);
    return 0;
}

/* ---- test hooks (KMS_TEST_HOOKS builds only) -------------------------------------------- */

#ifdef KMS_TEST_HOOKS
static bool hook_path(const struct kms_audit_dev *d, const char *name, char *out, size_t n)
{
    return d->hooks[0] != '\0' && (size_t)snprintf(out, n, "%s/%s", d->hooks, name) < n;
}

/* The contents of <hooks>/name (at most n-1 bytes, trailing newline dropped); -1 if absent. */
static ssize_t hook_read(const struct kms_audit_dev *d, const char *name, char *out, size_t n)
{
    char path[600];
    if (!hook_path(d, name, path, sizeof(path))) {
        return -1;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    ssize_t r = read(fd, out, n - 1);
    close(fd);
    if (r < 0) {
        r = 0;
    }
    while (r > 0 && (out[r - 1] == '\n' || out[r - 1] == '\r')) {
        r--;
    }
    out[r] = '\0';
    return r;
}

static bool hook_fail(const struct kms_audit_dev *d, const struct kms_audit_batch *b)
{
    char what[256];
    ssize_t n = hook_read(d, "fail", what, sizeof(what));
    return n == 0 || (n > 0 && memmem(b->buf, b->len, what, (size_t)n) != NULL);
}

static bool hook_sync_fails(const struct kms_audit_dev *d)
{
    char path[600];
    return hook_path(d, "syncfail", path, sizeof(path)) && access(path, F_OK) == 0;
}

static void hook_before_sync(const struct kms_audit_dev *d)
{
    char text[32];
    char hold[600], held[600];
    int64_t ms;
    if (hook_read(d, "delay", text, sizeof(text)) > 0 && kms_int_parse(text, &ms) && ms > 0 &&
        ms < 600000) {
        struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (!hook_path(d, "hold", hold, sizeof(hold)) || !hook_path(d, "held", held, sizeof(held)) ||
        access(hold, F_OK) != 0) {
        return;
    }
    int fd = open(held, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) {
        close(fd);
    }
    while (access(hold, F_OK) == 0) {
        struct timespec ts = {0, 2000000L};
        nanosleep(&ts, NULL);
    }
    unlink(held);
}
#else
static bool hook_fail(const struct kms_audit_dev *d, const struct kms_audit_batch *b)
{
    (void)d;
    (void)b;
    return false;
}

static bool hook_sync_fails(const struct kms_audit_dev *d)
{
    (void)d;
    return false;
}

static void hook_before_sync(const struct kms_audit_dev *d)
{
    (void)d;
}
#endif

/* The device takes no more lines until it is reopened (with `io` held). */
static void mark_broken(struct kms_audit_dev *d, const char *why)
{
    if (d->broken[0] == '\0') {
        snprintf(
            d->broken, sizeof(d->broken),
            "audit device %.32s is unusable until it is reopened (SIGHUP) or kmsd restarts: %.400s",
            d->o.name, why);
        dev_log(d, "error", "%s", d->broken);
    }
}

/* fdatasync fd, counted; 0 or -1 with why. */
static int sync_fd(struct kms_audit_dev *d, int fd, char *why, size_t whylen)
{
    hook_before_sync(d);
    uint64_t t0 = mono_us();
    int sr;
    if (hook_sync_fails(d)) {
        errno = EIO;
        sr = -1;
    } else {
        sr = fdatasync(fd);
    }
    count_fsync(d, t0);
    if (sr != 0) {
        snprintf(why, whylen, "cannot sync %.300s: %s", d->o.path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Drop [dropped, upto) from the page cache (from the page the last drop ended in: the kernel
 * drops whole pages only). */
static void drop_to(struct afile *f, off_t upto)
{
    long pg = sysconf(_SC_PAGESIZE);
    off_t from = f->dropped - f->dropped % (off_t)(pg > 0 ? pg : 4096);
    (void)posix_fadvise(f->fd, from, upto - from, POSIX_FADV_DONTNEED);
    f->dropped = upto;
}

/*
 * Once a sync has made f durable up to its end: drop those pages from the page cache. kmsd
 * never reads its own audit lines back (the chain head is kept in memory; `audit verify` and
 * queries read the file from disk), so an audit file left cached only grows the page cache by
 * every byte logged (~390 KB per audited 1000-item batch) and evicts the key store's pages
 * under memory pressure; and each write then fills pages the kernel has just allocated,
 * not ones it has just freed. Only what is synced is dropped: dirty pages stay (POSIX_FADV_
 * DONTNEED would start their writeback, not free them). Advice only: a failure changes
 * nothing but the cache.
 */
static void drop_synced(struct afile *f)
{
    if (f->end < f->dropped) {
        f->dropped = 0; /* cut shorter under us (copytruncate) */
    }
    if (f->end - f->dropped >= DROP_BYTES) {
        drop_to(f, f->end);
    }
}

/*
 * "never" mode syncs nothing, so without this every byte logged would stay in the page cache
 * until memory pressure wrote it back, and every write would fill freshly allocated pages (a
 * third of the audited request's CPU in that mode). Each MiB written is handed to writeback at
 * once (sync_file_range WRITE: asynchronous, data only), and the MiB handed over the time before
 * is waited for (long done as a rule) and dropped, as RocksDB's bytes_per_sync does. This
 * neither promises nor changes durability: nothing waits for it but the writer, and an error
 * here is the kernel's writeback error, which "never" mode does not report.
 */
static void writeback_unsynced(struct afile *f)
{
    if (f->end < f->queued || f->queued < f->dropped) {
        f->dropped = f->queued = 0; /* cut shorter under us (copytruncate) */
    }
    if (f->end - f->queued < DROP_BYTES) {
        return;
    }
    if (f->queued > f->dropped) {
        (void)sync_file_range(f->fd, f->dropped, f->queued - f->dropped,
                              SYNC_FILE_RANGE_WAIT_BEFORE);
        drop_to(f, f->queued);
    }
    (void)sync_file_range(f->fd, f->queued, f->end - f->queued, SYNC_FILE_RANGE_WRITE);
    f->queued = f->end;
}

/*
 * Append the whole batch (and, in "always" mode, sync it); on failure cut the file back.
 * Called by the writer with `io` held. On success b->file references the file written to.
 */
static int write_batch(struct kms_audit_dev *d, struct kms_audit_batch *b, char *why, size_t whylen)
{
    struct stat st;
    if (d->broken[0] != '\0') {
        snprintf(why, whylen, "%s", d->broken);
        return -1;
    }
    if (d->file == NULL && open_continuing(d, &d->file, why, whylen) != 0) {
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
        if (open_continuing(d, &d->file, why, whylen) != 0 || fstat(d->file->fd, &st) != 0) {
            return -1;
        }
    }
    int fd = d->file->fd;
    off_t before = st.st_size;
    size_t off = 0;
    if (hook_fail(d, b)) {
        /* test builds: a write that dies half-way (the batch is cut back below) */
        ssize_t w = write(fd, b->buf, b->len / 2);
        (void)w;
        snprintf(why, whylen, "cannot write %.300s: injected failure (test hook)", d->o.path);
        goto fail;
    }
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
    d->file->end = before + (off_t)b->len;
    if (d->o.fsync == KMS_AUDIT_FSYNC_ALWAYS) {
        /* every earlier line was synced: cutting this batch off leaves none unsynced */
        if (sync_fd(d, fd, why, whylen) != 0) {
            goto fail;
        }
        drop_synced(d->file);
    } else if (d->o.fsync == KMS_AUDIT_FSYNC_NEVER) {
        writeback_unsynced(d->file);
    }
    b->file = afile_ref(d->file);
    return 0;
fail:
    d->file->end = before;
    if (ftruncate(fd, before) != 0) {
        /* say what failed first, what the cut met, and what the file holds now */
        int e = errno;
        char cut[400], left[96] = "";
        if (fstat(fd, &st) == 0) {
            if (st.st_size == before) {
                snprintf(left, sizeof(left), "; nothing of the batch is in the file");
            } else if (st.st_size > before) {
                snprintf(left, sizeof(left), "; the file now ends in %lld bytes of a torn line",
                         (long long)(st.st_size - before));
            }
        }
        snprintf(cut, sizeof(cut), "%.250s; cutting the file back to %lld bytes failed: %s%s%s",
                 why, (long long)before, strerror(e),
                 e == EPERM ? " (an append-only or immutable file? see lsattr)" : "", left);
        snprintf(why, whylen, "%s", cut);
        mark_broken(d, cut);
    }
    return -1;
}
/* ---- the writer -------------------------------------------------------------------------- */

/*
 * Group buffers are kept for the next groups (SPARE_MAX batches of at most SPARE_CAP bytes):
 * a fresh buffer per group cost a malloc, a realloc per doubling with its copy, the page
 * faults of memory the heap had just given back, and for groups of 128 KiB and more an
 * mremap and a munmap with its TLB shootdown on every core (docs/performance.md, issue 12).
 * The spares are freed when the writer goes idle (trim_idle).
 */
#define SPARE_MAX 2
#define SPARE_CAP (512 * 1024)

static void batch_free(struct kms_audit_batch *b)
{
    afile_unref(&b->file);
    kms_audit_buf_free(b->buf, b->cap);
    free(b);
}

/* With mu held: an empty batch, from the spares when there is one. */
static struct kms_audit_batch *batch_take(struct kms_audit_dev *d)
{
    struct kms_audit_batch *b = d->spare;
    if (b == NULL) {
        return calloc(1, sizeof(*b));
    }
    d->spare = b->next;
    d->nspare--;
    b->next = NULL;
    return b;
}

/* A batch is done with: kept as a spare (emptied) or freed. No lock held. */
static void batch_recycle(struct kms_audit_dev *d, struct kms_audit_batch *b)
{
    afile_unref(&b->file);
    b->len = 0;
    b->lines = 0;
    b->last_seq = 0;
    b->on_written = b->on_synced = NULL;
    if (b->cap <= SPARE_CAP) {
        pthread_mutex_lock(&d->mu);
        if (d->nspare < SPARE_MAX) {
            b->next = d->spare;
            d->spare = b;
            d->nspare++;
            b = NULL;
        }
        pthread_mutex_unlock(&d->mu);
    }
    if (b != NULL) {
        batch_free(b);
    }
}

/* With mu held: free the spares (mu is let go meanwhile). */
static void spares_free(struct kms_audit_dev *d)
{
    struct kms_audit_batch *list = d->spare;
    d->spare = NULL;
    d->nspare = 0;
    pthread_mutex_unlock(&d->mu);
    while (list != NULL) {
        struct kms_audit_batch *b = list;
        list = b->next;
        batch_free(b);
    }
    pthread_mutex_lock(&d->mu);
}

/* Tell a list of waiters (no lock held). */
static void notify(struct kms_audit_waiter *w, int status, const char *why)
{
    while (w != NULL) {
        struct kms_audit_waiter *next = w->next;
        w->done(w, status, why);
        w = next;
    }
}

/* A batch is finished: every waiter told, the pending count dropped. No lock held. */
static void batch_finish(struct kms_audit_dev *d, struct kms_audit_batch *b, int status,
                         const char *why)
{
    notify(b->on_written, status, why);
    notify(b->on_synced, status, why);
    b->on_written = b->on_synced = NULL;
    atomic_fetch_sub_explicit(&d->st_pending, b->lines, memory_order_relaxed);
    batch_recycle(d, b);
}

/* Log an I/O error, at most once a second (writer only). */
static void io_error(struct kms_audit_dev *d, const char *why)
{
    int64_t now = kms_audit_mono_ms();
    if (now - d->last_err_log >= 1000) {
        d->last_err_log = now;
        dev_log(d, "error", "audit device %s: %s", d->o.name, why);
    }
}

/* fdatasync f, counted; 0 or -1 with why, and the device broken (see the top). */
static int sync_file(struct kms_audit_dev *d, struct afile *f, char *why, size_t whylen)
{
    if (sync_fd(d, f->fd, why, whylen) == 0) {
        drop_synced(f);
        return 0;
    }
    /* only while f is still the device's file: a reopen that came during the sync (the
     * operator's rename and SIGHUP) already left it, and the new file lost nothing */
    pthread_mutex_lock(&d->io);
    if (f == d->file) {
        mark_broken(d, why);
    }
    pthread_mutex_unlock(&d->io);
    return -1;
}

/* Make what was written without a sync durable (a later file's sync does not cover it). */
static int sync_dirty(struct kms_audit_dev *d, char *why, size_t whylen)
{
    int rc = 0;
    if (d->dirty != NULL) {
        rc = sync_file(d, d->dirty, why, whylen);
        afile_unref(&d->dirty);
    }
    return rc;
}

/* One group: write the batch, tell the "written" waiters, sync when asked, tell the rest. */
static void write_group(struct kms_audit_dev *d, struct kms_audit_batch *b)
{
    char why[512];
    why[0] = '\0';
    struct kms_audit_batch *failed = NULL;
    pthread_mutex_lock(&d->io);
    int rc = -1;
    if (atomic_load(&d->wstate) == WRITER_ABANDONED) {
        /* closed without us (we were stuck): the file may have a new writer by now (an HA
         * replica promoted again), so lines chained on this device's head stay out of it */
        snprintf(why, sizeof(why), "audit device %s was closed while its writer was blocked",
                 d->o.name);
    } else {
        rc = write_batch(d, b, why, sizeof(why));
    }
    /* the head moves with the file's contents under io, so a reopen saves the head of what
     * the old file holds */
    pthread_mutex_lock(&d->mu);
    if (rc == 0) {
        d->wseq = b->last_seq;
        memcpy(d->whash, b->last_hash, sizeof(d->whash));
    } else {
        /* every queued line was chained onto this batch: they fail with it; roll back */
        failed = d->qhead;
        d->qhead = d->qtail = NULL;
        d->qbytes = 0;
        d->seq = d->wseq;
        memcpy(d->hash, d->whash, sizeof(d->hash));
    }
    pthread_mutex_unlock(&d->mu);
    pthread_mutex_unlock(&d->io);

    if (rc != 0) {
        io_error(d, why);
        batch_finish(d, b, -1, why);
        while (failed != NULL) {
            struct kms_audit_batch *q = failed;
            failed = q->next;
            batch_finish(d, q, -1, why);
        }
        return;
    }
    notify(b->on_written, 0, NULL);
    b->on_written = NULL;
    if (d->o.fsync == KMS_AUDIT_FSYNC_BATCH) {
        if (b->on_synced != NULL) {
            /* the group commit: one fdatasync for every line of the group (and an earlier
             * unsynced file's, across a rotation) */
            if (d->dirty != NULL && d->dirty != b->file) {
                rc = sync_dirty(d, why, sizeof(why));
            }
            afile_unref(&d->dirty);
            if (sync_file(d, b->file, why, sizeof(why)) != 0) {
                rc = -1;
            }
        } else if (d->dirty != b->file) {
            /* only "written" waiters: the next durable group's sync covers this file */
            if (d->dirty != NULL) {
                rc = sync_dirty(d, why, sizeof(why));
            }
            d->dirty = afile_ref(b->file);
        }
    }
    if (rc != 0) {
        io_error(d, why);
    }
    batch_finish(d, b, rc, rc != 0 ? why : NULL);
}

/*
 * Once a burst of lines is over: give the pages that the workers' heaps freed meanwhile (the
 * batches' JSON trees, bodies, lines and blocks) back to the kernel. glibc keeps freed memory
 * in each thread's arena and returns only the top of a heap; after an audited batch load that
 * held the server at ~30 MiB (docs/performance.md, issue 12). The writer calls
 * malloc_trim(0), which releases every free page of every arena, and frees its spare group
 * buffers, once it has had no group for TRIM_IDLE_MS after at least TRIM_BYTES of lines since
 * the last trim. Only when idle: a trim under a steady load (it ran every 500 ms before) makes
 * the workers fault the same pages in again.
 */
#define TRIM_BYTES (256 * 1024)
#define TRIM_IDLE_MS 100

/* With mu held and the queue empty: trim now (0), wait up to the returned ms first, or -1
 * (nothing to trim: wait for work). */
static int64_t trim_idle(struct kms_audit_dev *d)
{
    if (d->untrimmed < TRIM_BYTES) {
        return -1;
    }
    int64_t wait = d->last_group + TRIM_IDLE_MS - kms_audit_mono_ms();
    if (wait > 0) {
        return wait;
    }
    d->untrimmed = 0;
    spares_free(d);
    pthread_mutex_unlock(&d->mu);
    (void)malloc_trim(0);
    pthread_mutex_lock(&d->mu);
    return 0;
}

/* The monotonic time us microseconds from now, for a timed wait on `work`. */
static struct timespec mono_after_us(int64_t us)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t ns = ts.tv_nsec + (us % 1000000) * 1000;
    ts.tv_sec += (time_t)(us / 1000000 + ns / 1000000000);
    ts.tv_nsec = (long)(ns % 1000000000);
    return ts;
}

static void *writer_main(void *arg)
{
    struct kms_audit_dev *d = arg;
    bool gathering = false;
    struct timespec gather_until;
    pthread_mutex_lock(&d->mu);
    for (;;) {
        while (d->qhead == NULL && !d->stopping) {
            int64_t wait = trim_idle(d);
            if (wait == 0) {
                continue; /* trimmed (mu was let go): look at the queue again */
            }
            if (wait < 0) {
                pthread_cond_wait(&d->work, &d->mu);
            } else {
                struct timespec ts = mono_after_us(wait * 1000);
                (void)pthread_cond_timedwait(&d->work, &d->mu, &ts);
            }
        }
        struct kms_audit_batch *b = d->qhead;
        if (b == NULL) {
            break; /* stopping, and nothing left to write */
        }
        /* A worker pass that has queued lines and is still running adds more lines before it
         * ends (the rest of its ready connections): taking the queue now would sync those in a
         * group of their own right after this one. So wait for such passes to end, at most
         * gather_us, unless a thread that cannot defer is waiting (urgent). Under a closed
         * load this stops groups alternating big and tiny. */
        if (d->passes > 0 && !d->urgent && !d->stopping && d->gather_us > 0) {
            if (!gathering) {
                gather_until = mono_after_us(d->gather_us);
                gathering = true;
            }
            if (pthread_cond_timedwait(&d->work, &d->mu, &gather_until) != ETIMEDOUT) {
                continue; /* woken (a pass ended): look again */
            }
        }
        gathering = false;
        d->urgent = false;
        /* take the open batch: lines from now on gather in the next one */
        d->owed = false;
        d->qhead = b->next;
        if (d->qhead == NULL) {
            d->qtail = NULL;
        }
        d->qbytes -= b->len;
        b->next = NULL;
        pthread_mutex_unlock(&d->mu);
        size_t bytes = b->len;
        write_group(d, b);
        pthread_mutex_lock(&d->mu);
        d->untrimmed += bytes;
        d->last_group = kms_audit_mono_ms();
    }
    spares_free(d);
    pthread_mutex_unlock(&d->mu);
    char why[512];
    if (sync_dirty(d, why, sizeof(why)) != 0) {
        io_error(d, why);
    }
    /* under mu, as close's wait, so close either sees the end or abandons a writer that has
     * not ended: never both */
    pthread_mutex_lock(&d->mu);
    int running = WRITER_RUNNING;
    bool ended = atomic_compare_exchange_strong(&d->wstate, &running, WRITER_ENDED);
    pthread_cond_broadcast(&d->done);
    pthread_mutex_unlock(&d->mu);
    if (!ended) {
        /* kms_audit_dev_close gave up on us and left the device behind: nobody joins this
         * thread, and the file (with its lock) is let go here, or no kmsd (this one promoted
         * again included) could open it while the process lives */
        (void)pthread_detach(pthread_self());
        pthread_mutex_lock(&d->io);
        afile_unref(&d->file);
        afile_unref(&d->lock);
        pthread_mutex_unlock(&d->io);
        dev_log(d, "warn", "audit device %s: its blocked writer returned; %s is closed", d->o.name,
                d->o.path);
    }
    return NULL;
}

/* ---- life cycle -------------------------------------------------------------------------- */

int kms_audit_dev_open(const struct kms_audit_device_opts *o, const struct kms_audit_dev_env *env,
                       struct kms_audit_dev **out, struct kms_err *err)
{
    struct kms_audit_dev *d = calloc(1, sizeof(*d));
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
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca,
                              CLOCK_MONOTONIC); /* the writer's timed waits ignore the wall clock */
    pthread_cond_init(&d->work, &ca);
    pthread_cond_init(&d->done, &ca);
    pthread_condattr_destroy(&ca);
#ifdef KMS_TEST_HOOKS
    const char *hooks = getenv("KMS_TEST_AUDIT_HOOKS");
    struct stat hst;
    snprintf(d->hooks, sizeof(d->hooks), "%s", hooks != NULL ? hooks : "");
    if (hooks != NULL &&
        (size_t)snprintf(d->hooks, sizeof(d->hooks), "%s/%s", hooks, o->name) < sizeof(d->hooks)) {
        if (stat(d->hooks, &hst) != 0 || !S_ISDIR(hst.st_mode)) {
            snprintf(d->hooks, sizeof(d->hooks), "%s", hooks);
        }
    }
#endif
    d->gather_us = d->o.fsync == KMS_AUDIT_FSYNC_BATCH ? GATHER_US : 0;
#ifdef KMS_TEST_HOOKS
    char gtext[32];
    int64_t gus;
    if (d->o.fsync == KMS_AUDIT_FSYNC_BATCH &&
        hook_read(d, "gather_us", gtext, sizeof(gtext)) > 0 && kms_int_parse(gtext, &gus) &&
        gus >= 0) {
        d->gather_us = gus;
    }
#endif
    if (open_file(d, &d->file, why, sizeof(why)) != 0) {
        kms_err_set(err, 500, "audit device %s: %s", o->name, why);
        goto out;
    }
    adopt_lock(d, d->file);
    if (recover(d, err) != 0 || load_salt(d, err) != 0) {
        goto out;
    }
    if (kms_hmac_key_create(d->salt, strlen(d->salt), &d->hkey) != 0) {
        kms_err_set(err, 500, "audit device %s: cannot prepare its salt", o->name);
        goto out;
    }
    d->wseq = d->seq;
    memcpy(d->whash, d->hash, sizeof(d->hash));
    if (pthread_create(&d->writer, NULL, writer_main, d) != 0) {
        kms_err_set(err, 500, "audit device %s: cannot start its writer thread", o->name);
        goto out;
    }
    d->writer_started = true;
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
    if (d->writer_started) {
        /* lines whose callers gave up waiting are still owed to the file: the writer drains
         * the queue, syncs, and ends */
        /* the wait is on the monotonic clock: a wall clock stepped forward meanwhile would
         * abandon a writer still draining, one stepped back would hang the stop */
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += CLOSE_WAIT_S;
        pthread_mutex_lock(&d->mu);
        d->stopping = true;
        pthread_cond_signal(&d->work);
        while (atomic_load(&d->wstate) == WRITER_RUNNING &&
               pthread_cond_timedwait(&d->done, &d->mu, &until) != ETIMEDOUT) {
        }
        int running = WRITER_RUNNING;
        bool abandoned = atomic_compare_exchange_strong(&d->wstate, &running, WRITER_ABANDONED);
        pthread_mutex_unlock(&d->mu);
        if (abandoned) {
            /* stuck in write(2) or fdatasync(2) (a frozen or dead file system): the process
             * is ending (or an HA replica steps down), so leave the device to it rather than
             * hang; what is still queued was never acknowledged to anyone, and it is never
             * written (if it ever comes back it writes nothing, and closes the file) */
            dev_log(d, "error",
                    "audit device %s: its writer is still blocked in a write or fsync of %s "
                    "after %d s; stopping without it (unacknowledged lines may be lost)",
                    d->o.name, d->o.path, CLOSE_WAIT_S);
            *dp = NULL;
            return;
        }
        (void)pthread_join(d->writer, NULL); /* it has ended, or is just returning */
    }
    if (d->ready) {
        save_head(d);
    }
    pthread_mutex_lock(&d->mu);
    spares_free(d);
    pthread_mutex_unlock(&d->mu);
    afile_unref(&d->file);
    afile_unref(&d->lock);
    pthread_mutex_destroy(&d->mu);
    pthread_mutex_destroy(&d->io);
    pthread_cond_destroy(&d->work);
    pthread_cond_destroy(&d->done);
    kms_memzero(d->salt, sizeof(d->salt));
    kms_hmac_key_destroy(&d->hkey);
    free(d);
    *dp = NULL;
}

bool kms_audit_dev_writes(struct kms_audit_dev *d, const struct stat *st)
{
    pthread_mutex_lock(&d->io);
    bool same = d->lock != NULL && d->lock->dev == st->st_dev && d->lock->ino == st->st_ino;
    pthread_mutex_unlock(&d->io);
    return same;
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
    char hash[KMS_AUDIT_HASH_LEN + 1];
    pthread_mutex_lock(&d->io);
    int rc = open_continuing(d, &nf, why, whylen);
    /* batches written to the old file keep it open until they are synced */
    afile_unref(&d->file);
    /* on failure every write fails (and retries the open) until the path works again */
    d->file = nf;
    if (rc == 0 && d->broken[0] != '\0') {
        d->broken[0] = '\0';
        dev_log(d, "info", "audit device %s: reopened %s, taking lines again", d->o.name,
                d->o.path);
    }
    /* the head of what the old file holds: no write is under way while io is held */
    pthread_mutex_lock(&d->mu);
    uint64_t seq = d->wseq;
    memcpy(hash, d->whash, sizeof(hash));
    pthread_mutex_unlock(&d->mu);
    pthread_mutex_unlock(&d->io);
    if (rc == 0) {
        save_head_at(d, seq, hash);
    }
    return rc;
}
/* ---- callers ----------------------------------------------------------------------------- */

/* Each thread keeps one SHA-256 stream for the chain hashes (reset per line) instead of a
 * context allocated and its digest fetched per line. */
static pthread_key_t hs_key;
static pthread_once_t hs_once = PTHREAD_ONCE_INIT;

static void hs_key_free(void *p)
{
    struct kms_hash_stream *hs = p;
    kms_hash_stream_destroy(&hs);
}

static void hs_key_init(void)
{
    (void)pthread_key_create(&hs_key, hs_key_free);
}

/* This thread's chain-hash stream, started over; NULL when none can be made. */
static struct kms_hash_stream *chain_stream(void)
{
    pthread_once(&hs_once, hs_key_init);
    struct kms_hash_stream *hs = pthread_getspecific(hs_key);
    if (hs != NULL) {
        return kms_hash_stream_reset(hs) == 0 ? hs : NULL;
    }
    if (kms_hash_stream_create(KMS_HASH_SHA2_256, &hs) != 0) {
        return NULL;
    }
    if (pthread_setspecific(hs_key, hs) != 0) {
        kms_hash_stream_destroy(&hs);
        return NULL;
    }
    return hs;
}

/* Room for need more bytes; a group of batch lines (MBs) is mmapped and given back whole. */
static int grow(struct kms_audit_batch *b, size_t need)
{
    return kms_audit_buf_grow(&b->buf, &b->cap, b->len, b->len + need, 4096);
}

/*
 * Deferred writer wake-ups (audit.h): the devices whose writer this thread owes a wake-up. Only
 * event-loop workers defer, and the broker outlives them (server/main.c destroys it after
 * joining them), so a device listed here is still open when the list is emptied.
 *
 * A queue whose wake-up a worker defers is `owed` until the writer takes it. A line another
 * thread adds to it must not wait for that worker's pass to end: that pass may be long (a key
 * generation, a storage round trip) or blocked on a lock the other thread holds while it waits
 * for its line (the KMSKey controller's schedule lock, taken by a KMSKey write on a worker). So
 * that thread owes the wake-up too: a worker at the end of its own pass, any other thread at
 * once (and marks the queue urgent: the writer takes it without gathering).
 *
 * Each worker pass that queued a line on a device counts in its `passes` until the pass ends
 * (kms_audit_wake_deferred), so the writer can tell a queue that is still growing.
 */
#define DEFER_MAX 8
static _Thread_local struct {
    void (*arm)(void *);
    void *arg;
    struct kms_audit_dev *dev[DEFER_MAX];
    size_t n;
} defer;

/* With d->mu held, once a line is queued: whether the writer must be signalled now (after mu
 * is let go), else it is deferred to the end of this thread's pass (*arm: arm it first). */
static bool wake_writer(struct kms_audit_dev *d, bool queued_fresh, bool *arm)
{
    *arm = false;
    if (defer.arm != NULL) {
        bool listed = false;
        for (size_t i = 0; i < defer.n && !listed; i++) {
            listed = defer.dev[i] == d;
        }
        if (!listed && defer.n < DEFER_MAX) {
            defer.dev[defer.n++] = d;
            *arm = defer.n == 1;
            d->passes++;
            listed = true;
        }
        if (listed) {
            if (queued_fresh) {
                d->owed = true;
            }
            return false;
        }
    }
    if (!queued_fresh && !d->owed) {
        return false; /* the writer was told of this queue (or has it): nothing owed */
    }
    /* the writer looks at the queue and waits on `work` in one step under mu: a signal given
     * after the batch was queued (under mu) is never lost */
    d->owed = false;
    d->urgent = true;
    return true;
}

void kms_audit_wake_deferred(void)
{
    size_t n = defer.n;
    defer.n = 0;
    for (size_t i = 0; i < n; i++) {
        struct kms_audit_dev *d = defer.dev[i];
        pthread_mutex_lock(&d->mu);
        d->passes--;
        pthread_mutex_unlock(&d->mu);
        pthread_cond_signal(&d->work);
    }
}

void kms_audit_defer_wakeups(void (*arm)(void *), void *arg)
{
    kms_audit_wake_deferred();
    defer.arm = arm;
    defer.arg = arg;
}

int kms_audit_dev_submit(struct kms_audit_dev *d, const char *body, size_t len,
                         struct kms_audit_waiter *w, bool durable, char *why, size_t whylen)
{
    struct kms_audit_batch *b = NULL;
    struct kms_hash_stream *hs = NULL;
    bool fresh = false;
    bool wake = false;
    bool arm = false;
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
    hs = chain_stream();
    if (hs == NULL || kms_hash_stream_update(hs, body, len - 1) != 0) {
        snprintf(why, whylen, "cannot hash the record");
        return -1;
    }
    pthread_mutex_lock(&d->mu);
    if (d->stopping) {
        snprintf(why, whylen, "audit device %s is closing", d->o.name);
        goto out;
    }
    if (d->qbytes > 0 && d->qbytes + len > QUEUE_MAX) {
        snprintf(why, whylen, "audit device %s is behind: %zu bytes of lines wait for its writer",
                 d->o.name, d->qbytes);
        goto out;
    }
    b = d->qtail;
    if (b == NULL || d->o.fsync == KMS_AUDIT_FSYNC_ALWAYS) {
        b = batch_take(d);
        if (b == NULL) {
            snprintf(why, whylen, "out of memory");
            goto out;
        }
        fresh = true;
    }
    uint64_t seq = d->seq + 1;
    /* ,"seq":N,"prev_hash":"sha256:…" built by hand: this runs under mu on every line */
    size_t sn = 0;
    memcpy(suffix, ",\"seq\":", 7);
    sn = 7 + kms_u64_dec(seq, suffix + 7);
    memcpy(suffix + sn, ",\"prev_hash\":\"", 14);
    sn += 14;
    memcpy(suffix + sn, d->hash, KMS_AUDIT_HASH_LEN);
    sn += KMS_AUDIT_HASH_LEN;
    suffix[sn++] = '"';
    /* prefix = body without its '}' + suffix; then ,"hash":"…"} and a newline */
    if (kms_hash_stream_update(hs, suffix, sn) != 0 || kms_hash_stream_final(hs, digest) != 0) {
        snprintf(why, whylen, "cannot hash the record");
        goto out;
    }
    memcpy(h, "sha256:", 7);
    kms_hex_encode(digest, sizeof(digest), h + 7);
    if (grow(b, len - 1 + sn + 9 + KMS_AUDIT_HASH_LEN + 3) != 0) {
        snprintf(why, whylen, "out of memory");
        goto out;
    }
    memcpy(b->buf + b->len, body, len - 1);
    b->len += len - 1;
    memcpy(b->buf + b->len, suffix, sn);
    b->len += sn;
    memcpy(b->buf + b->len, ",\"hash\":\"", 9);
    b->len += 9;
    memcpy(b->buf + b->len, h, KMS_AUDIT_HASH_LEN);
    b->len += KMS_AUDIT_HASH_LEN;
    memcpy(b->buf + b->len, "\"}\n", 3);
    b->len += 3;
    b->lines++;
    d->qbytes += len - 1 + sn + 9 + KMS_AUDIT_HASH_LEN + 3;

    d->seq = seq;
    memcpy(d->hash, h, sizeof(d->hash));
    b->last_seq = seq;
    memcpy(b->last_hash, h, sizeof(b->last_hash));
    if (w != NULL) {
        struct kms_audit_waiter **list =
            durable && d->o.fsync != KMS_AUDIT_FSYNC_NEVER ? &b->on_synced : &b->on_written;
        w->next = *list;
        *list = w;
    }
    atomic_fetch_add_explicit(&d->st_pending, 1, memory_order_relaxed);
    bool queued_fresh = fresh;
    if (fresh) {
        if (d->qtail != NULL) {
            d->qtail->next = b;
        } else {
            d->qhead = b;
        }
        d->qtail = b;
        fresh = false;
    }
    wake = wake_writer(d, queued_fresh, &arm);
    rc = 0;
out:
    if (fresh) {
        /* unused: back to the spares (mu is held) */
        if (d->nspare < SPARE_MAX) {
            b->len = 0;
            b->next = d->spare;
            d->spare = b;
            d->nspare++;
        } else {
            batch_free(b);
        }
    }
    pthread_mutex_unlock(&d->mu);
    if (arm) {
        defer.arm(defer.arg);
    }
    if (wake) {
        pthread_cond_signal(&d->work);
    }
    return rc;
}
