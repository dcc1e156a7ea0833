/*
 * lmdb.c - the LMDB backend: one environment per data directory, one named database per
 * enum kms_db.
 *
 * Design notes
 *
 * - The database handles are opened (created) once, in a write transaction at open, so every
 *   later transaction can use them without a lookup.
 *
 * - The environment is opened with MDB_NOTLS. Without it LMDB ties each read transaction's
 *   reader slot to the thread that began it, and a thread can hold only one read transaction;
 *   that would break a design where a request is started on one thread and finished on
 *   another, or where one thread nests a read inside another. With MDB_NOTLS the slot belongs
 *   to the MDB_txn, so a read transaction may move between threads (used by one at a time).
 *   Write transactions are still owned by the thread that began them, as LMDB requires, and
 *   LMDB serialises them (one write transaction at a time).
 *
 * - Durability: without `nosync` LMDB fsyncs the data file before mdb_txn_commit returns, so
 *   a committed write survives a crash. `nosync` (dev mode, tests) trades that for speed;
 *   the store stays consistent but may lose the last commits.
 *
 * - Sealed values are handed to LMDB as they are and read straight from the memory map
 *   (borrowed until the transaction's next call), so storage.c unseals from the map into the
 *   caller's buffer and plaintext never lands in the map.
 *
 * - Read transactions are kept for reuse. Ending one resets it (mdb_txn_reset: the snapshot is
 *   released at once, so a kept transaction never holds old pages from reuse) and puts it in
 *   the backend's pool; the next read transaction, on any thread, renews a pooled one
 *   (mdb_txn_renew: a fresh snapshot of the latest commit, in the reader slot it already has)
 *   instead of mdb_txn_begin, which takes the reader table's lock to find a slot and
 *   allocates. On a key-cache miss that is about a third of the read's cost. The pool holds at
 *   most as many transactions as were ever open at once (up to KMS_LMDB_POOL_MAX), so it takes
 *   no reader slot that the peak load did not already need; close ends them all. A renewal
 *   that fails (e.g. the map was resized by another process) ends that transaction and
 *   begins a new one.
 *
 * - A data.mdb shorter than its last committed page (a torn copy) is refused at open
 *   (data_file_check): LMDB would map it anyway and a read past its end is a SIGBUS.
 *
 * - LMDB trusts every page it maps, so an existing store is read whole by a child process
 *   before it is opened (kms_lmdb_check, lmdb_check.c): a damaged page is refused with a
 *   message instead of killing kmsd, or corrupting its heap, on the first read or write.
 *
 * - MDB_MAP_FULL and every other LMDB error surface as -1. LMDB leaves the transaction in an
 *   error state; the caller aborts it and the store is exactly as the last commit left it.
 */
#include "storage/storage_int.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define KMS_LMDB_DEFAULT_MAP ((size_t)1 << 30)
#define KMS_LMDB_POOL_MAX 64 /* reset read transactions kept for renewal */
/*
 * Reader slots (LMDB's default is 126): a read transaction may be open on every worker (up
 * to 1024, a nested read making two) and every KMS plugin call thread (8 sockets x 32), and
 * each pooled one keeps its slot. With the default, a node with more than about 120 cores
 * failed reads with MDB_READERS_FULL under load. A slot is 64 bytes of lock.mdb.
 */
#define KMS_LMDB_MAX_READERS 4096
/* how often a write clears the reader slots of processes that died (mdb_reader_check) */
#define KMS_LMDB_READER_CHECK_MS 1000

struct kms_backend {
    MDB_env *env;
    int lockfd; /* <dir>/kmsd.lock, flock'ed: one kmsd per store (-1: none) */
    MDB_dbi dbi[KMS_DB_COUNT_];
    size_t maxkey;
    pthread_mutex_t pool_lock;
    bool pool_lock_ready;
    size_t npool;
    struct kms_backend_txn *pool[KMS_LMDB_POOL_MAX]; /* reset read transactions */
    _Atomic int64_t reader_check_ms;                 /* monotonic, of the last reader check */
};

struct kms_backend_txn {
    MDB_txn *txn;
    struct kms_backend *b;
    bool write;
};

static void lmdb_close(struct kms_backend *b)
{
    if (b == NULL)
        return;
    /* Pooled transactions are reset (no snapshot) but still LMDB transactions with a reader
     * slot: end them before the environment. */
    while (b->npool > 0) {
        struct kms_backend_txn *t = b->pool[--b->npool];

        mdb_txn_abort(t->txn);
        free(t);
    }
    if (b->pool_lock_ready)
        pthread_mutex_destroy(&b->pool_lock);
    if (b->env != NULL)
        mdb_env_close(b->env);
    if (b->lockfd >= 0)
        close(b->lockfd); /* releases the lock */
    free(b);
}

/* A pooled read transaction renewed onto the latest commit, or NULL. */
static struct kms_backend_txn *pool_take(struct kms_backend *b)
{
    struct kms_backend_txn *t = NULL;

    pthread_mutex_lock(&b->pool_lock);
    if (b->npool > 0)
        t = b->pool[--b->npool];
    pthread_mutex_unlock(&b->pool_lock);
    if (t != NULL && mdb_txn_renew(t->txn) != 0) {
        mdb_txn_abort(t->txn);
        free(t);
        t = NULL;
    }
    return t;
}

/* End a read transaction: reset it (its snapshot released now) and keep it for renewal. */
static void pool_put(struct kms_backend_txn *t)
{
    struct kms_backend *b = t->b;
    bool kept = false;

    mdb_txn_reset(t->txn);
    pthread_mutex_lock(&b->pool_lock);
    if (b->npool < KMS_LMDB_POOL_MAX) {
        b->pool[b->npool++] = t;
        kept = true;
    }
    pthread_mutex_unlock(&b->pool_lock);
    if (!kept) {
        mdb_txn_abort(t->txn);
        free(t);
    }
}

/*
 * A process that died inside a read transaction (an `mdb_copy` backup cut off with its
 * `kubectl exec`) leaves its reader slot, and LMDB reuses no page that slot's snapshot could
 * see: every write then grows the file until the map is full. LMDB clears such slots only
 * when asked; a write asks at most once a second.
 */
static void readers_check(struct kms_backend *b)
{
    struct timespec ts;
    int dead = 0;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    int64_t last = atomic_load(&b->reader_check_ms);
    if (now - last < KMS_LMDB_READER_CHECK_MS ||
        !atomic_compare_exchange_strong(&b->reader_check_ms, &last, now))
        return;
    (void)mdb_reader_check(b->env, &dead);
}

static int lmdb_txn_begin(struct kms_backend *b, bool write, struct kms_backend_txn **out)
{
    struct kms_backend_txn *t = NULL;

    *out = NULL;
    if (write)
        readers_check(b);
    if (!write && (t = pool_take(b)) != NULL) {
        *out = t;
        return 0;
    }
    if ((t = calloc(1, sizeof *t)) == NULL)
        return -1;
    t->b = b;
    t->write = write;
    if (mdb_txn_begin(b->env, NULL, write ? 0 : MDB_RDONLY, &t->txn) != 0) {
        free(t);
        return -1;
    }
    *out = t;
    return 0;
}

static int lmdb_txn_commit(struct kms_backend_txn *t)
{
    int rc;

    if (!t->write) {
        /* Committing a read transaction only ends it. */
        pool_put(t);
        return 0;
    }
    /* mdb_txn_commit frees the transaction whether or not it succeeds. */
    rc = mdb_txn_commit(t->txn) == 0 ? 0 : -1;
    free(t);
    return rc;
}

static void lmdb_txn_abort(struct kms_backend_txn *t)
{
    if (!t->write) {
        pool_put(t);
        return;
    }
    mdb_txn_abort(t->txn);
    free(t);
}

static int lmdb_get(struct kms_backend_txn *t, enum kms_db db, const void *key, size_t keylen,
                    const uint8_t **sealed, size_t *sealedlen)
{
    MDB_val k = {.mv_size = keylen, .mv_data = (void *)key}, v;
    int mrc = mdb_get(t->txn, t->b->dbi[db], &k, &v);

    if (mrc != 0)
        return mrc == MDB_NOTFOUND ? KMS_STORAGE_NOTFOUND : -1;
    *sealed = v.mv_data;
    *sealedlen = v.mv_size;
    return 0;
}

static int lmdb_put(struct kms_backend_txn *t, enum kms_db db, const void *key, size_t keylen,
                    const uint8_t *sealed, size_t sealedlen)
{
    MDB_val k = {.mv_size = keylen, .mv_data = (void *)key};
    MDB_val v = {.mv_size = sealedlen, .mv_data = (void *)sealed};

    return mdb_put(t->txn, t->b->dbi[db], &k, &v, 0) == 0 ? 0 : -1;
}

static int lmdb_put_new(struct kms_backend_txn *t, enum kms_db db, const void *key, size_t keylen,
                        const uint8_t *sealed, size_t sealedlen)
{
    MDB_val k = {.mv_size = keylen, .mv_data = (void *)key};
    MDB_val v = {.mv_size = sealedlen, .mv_data = (void *)sealed};
    int mrc = mdb_put(t->txn, t->b->dbi[db], &k, &v, MDB_NOOVERWRITE);

    return mrc == 0 ? 0 : mrc == MDB_KEYEXIST ? 1 : -1;
}

static int lmdb_del(struct kms_backend_txn *t, enum kms_db db, const void *key, size_t keylen)
{
    MDB_val k = {.mv_size = keylen, .mv_data = (void *)key};
    int mrc = mdb_del(t->txn, t->b->dbi[db], &k, NULL);

    if (mrc == MDB_NOTFOUND)
        return KMS_STORAGE_NOTFOUND;
    return mrc == 0 ? 0 : -1;
}

static bool has_prefix(const MDB_val *k, const void *prefix, size_t prefixlen)
{
    return k->mv_size >= prefixlen &&
           (prefixlen == 0 || memcmp(k->mv_data, prefix, prefixlen) == 0);
}

/*
 * Put the cursor on the first key >= from. A key longer than LMDB allows cannot be stored, so
 * for a longer `from` the first key >= its truncation is the answer unless it is the
 * truncation itself (which sorts before `from`).
 */
static int cursor_seek(MDB_cursor *cur, const struct kms_backend *b, const void *from,
                       size_t fromlen, MDB_val *k, MDB_val *v)
{
    int mrc;

    if (fromlen == 0)
        return mdb_cursor_get(cur, k, v, MDB_FIRST);
    k->mv_data = (void *)from;
    k->mv_size = fromlen > b->maxkey ? b->maxkey : fromlen;
    mrc = mdb_cursor_get(cur, k, v, MDB_SET_RANGE);
    if (mrc == 0 && fromlen > b->maxkey && k->mv_size == b->maxkey &&
        memcmp(k->mv_data, from, b->maxkey) == 0)
        mrc = mdb_cursor_get(cur, k, v, MDB_NEXT);
    return mrc;
}

static int lmdb_del_prefix(struct kms_backend_txn *t, enum kms_db db, const void *prefix,
                           size_t prefixlen, size_t *count)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    size_t n = 0;
    int rc = -1, mrc;

    if (mdb_cursor_open(t->txn, t->b->dbi[db], &cur) != 0)
        goto out;
    mrc = cursor_seek(cur, t->b, prefix, prefixlen, &k, &v);
    while (mrc == 0 && has_prefix(&k, prefix, prefixlen)) {
        if (mdb_cursor_del(cur, 0) != 0)
            goto out;
        n++;
        /* After a delete the cursor already sits on the next record; MDB_NEXT returns it. */
        mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (mrc != 0 && mrc != MDB_NOTFOUND)
        goto out;
    *count = n;
    rc = 0;
out:
    if (cur != NULL)
        mdb_cursor_close(cur);
    return rc;
}

static int lmdb_scan(struct kms_backend_txn *t, enum kms_db db, const void *prefix,
                     size_t prefixlen, const void *from, size_t fromlen, bool with_values,
                     kms_backend_scan_cb cb, void *arg)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    int rc = -1, mrc, crc;

    if (mdb_cursor_open(t->txn, t->b->dbi[db], &cur) != 0)
        goto out;
    mrc = cursor_seek(cur, t->b, from, fromlen, &k, &v);
    while (mrc == 0 && has_prefix(&k, prefix, prefixlen)) {
        crc = cb(k.mv_data, k.mv_size, with_values ? v.mv_data : NULL, with_values ? v.mv_size : 0,
                 arg);
        if (crc < 0)
            goto out;
        if (crc > 0)
            break;
        mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (mrc != 0 && mrc != MDB_NOTFOUND)
        goto out;
    rc = 0;
out:
    if (cur != NULL)
        mdb_cursor_close(cur);
    return rc;
}

static int lmdb_count(struct kms_backend_txn *t, enum kms_db db, size_t *count)
{
    MDB_stat ms;

    if (mdb_stat(t->txn, t->b->dbi[db], &ms) != 0)
        return -1;
    *count = ms.ms_entries;
    return 0;
}

static const struct kms_backend_ops lmdb_ops = {
    .name = "lmdb",
    .close = lmdb_close,
    .txn_begin = lmdb_txn_begin,
    .txn_commit = lmdb_txn_commit,
    .txn_abort = lmdb_txn_abort,
    .get = lmdb_get,
    .put = lmdb_put,
    .put_new = lmdb_put_new,
    .del = lmdb_del,
    .del_prefix = lmdb_del_prefix,
    .scan = lmdb_scan,
    .count = lmdb_count,
};

/*
 * A data.mdb shorter than its meta page says (a torn copy or an interrupted restore) would be
 * mapped all the same, and the first read of a page past its end kills the process with
 * SIGBUS: refuse it while a message can still be given.
 */
static int data_file_check(MDB_env *env, const char *dir, struct kms_err *err)
{
    MDB_envinfo info;
    MDB_stat ms;
    struct stat sb;
    int fd;

    if (mdb_env_info(env, &info) != 0 || mdb_env_stat(env, &ms) != 0 ||
        mdb_env_get_fd(env, &fd) != 0 || fstat(fd, &sb) != 0)
        return kms_err_set(err, 500, "cannot read the size of the store in %s", dir);
    uint64_t need = ((uint64_t)info.me_last_pgno + 1) * ms.ms_psize;
    if ((uint64_t)sb.st_size < need)
        return kms_err_set(err, 500,
                           "the store %s/data.mdb is truncated: %lld bytes, its last page ends "
                           "at %llu; restore it from a backup",
                           dir, (long long)sb.st_size, (unsigned long long)need);
    return 0;
}

int kms_backend_lmdb_open(const char *dir, const struct kms_storage_opts *opts,
                          const struct kms_backend_ops **ops, struct kms_backend **out,
                          size_t *maxkey, struct kms_err *err)
{
    struct kms_backend *b = NULL;
    MDB_txn *txn = NULL;
    unsigned int flags = MDB_NOTLS;
    size_t map_size = KMS_LMDB_DEFAULT_MAP;
    int rc = -1, mrc, fd;

    *out = NULL;
    if (opts != NULL && opts->map_size != 0)
        map_size = opts->map_size;
    if (opts != NULL && opts->nosync)
        flags |= MDB_NOSYNC;

    if (opts != NULL && opts->create && mkdir(dir, 0700) != 0 && errno != EEXIST) {
        kms_err_set(err, 500, "cannot create storage directory %s: %s", dir, strerror(errno));
        goto out;
    }
    /* Checked here so that a missing or unreadable directory gets a message naming it. */
    if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        kms_err_set(err, 500, "cannot open storage directory %s: %s", dir, strerror(errno));
        goto out;
    }
    close(fd);
    if (opts != NULL && opts->existing) {
        char datapath[4096];
        struct stat sb;
        if ((size_t)snprintf(datapath, sizeof datapath, "%s/data.mdb", dir) >= sizeof datapath) {
            kms_err_set(err, 500, "storage path too long: %s", dir);
            goto out;
        }
        if (stat(datapath, &sb) != 0) {
            kms_err_set(err, 500, "no kmsd store in %s: cannot open %s: %s", dir, datapath,
                        strerror(errno));
            goto out;
        }
    }

    if ((b = calloc(1, sizeof *b)) == NULL) {
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    b->lockfd = -1;
    /*
     * One process per store. LMDB keeps the file consistent between processes, but each kmsd
     * caches keys: a second server on the store would go on encrypting with a key the first
     * deleted or rotated (PostgreSQL stores refuse a second server the same way, docs/ha.md).
     */
    char lockpath[4096];
    if ((size_t)snprintf(lockpath, sizeof lockpath, "%s/kmsd.lock", dir) >= sizeof lockpath) {
        kms_err_set(err, 500, "storage path too long: %s", dir);
        goto out;
    }
    b->lockfd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (b->lockfd < 0) {
        kms_err_set(err, 500, "cannot open %s: %s", lockpath, strerror(errno));
        goto out;
    }
    if (flock(b->lockfd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK)
            kms_err_set(err, 500,
                        "another kmsd is using the store in %s (it holds %s); stop it first", dir,
                        lockpath);
        else
            kms_err_set(err, 500, "cannot lock %s: %s", lockpath, strerror(errno));
        goto out;
    }
    if (pthread_mutex_init(&b->pool_lock, NULL) != 0) {
        kms_err_set(err, 500, "cannot create a lock for the storage environment");
        goto out;
    }
    b->pool_lock_ready = true;
    /*
     * LMDB takes an empty data.mdb for a new store and writes one into it. kmsd leaves none
     * (LMDB writes the meta pages right after it creates the file: only a kill in between
     * could): it is a failed backup (`mdb_copy … > file` whose copy failed) or copy put in
     * place, and starting a new, uninitialised store over it would invite a second sys/init.
     */
    char datapath[4096];
    struct stat dsb;
    if ((size_t)snprintf(datapath, sizeof datapath, "%s/data.mdb", dir) >= sizeof datapath) {
        kms_err_set(err, 500, "storage path too long: %s", dir);
        goto out;
    }
    if (stat(datapath, &dsb) == 0 && S_ISREG(dsb.st_mode) && dsb.st_size == 0) {
        kms_err_set(err, 500,
                    "the store %s is empty (0 bytes): a failed backup or copy? Restore a "
                    "verified backup, or delete the file to start a new store",
                    datapath);
        goto out;
    }
    if (kms_lmdb_check(dir, map_size, err) != 0)
        goto out;
    if ((mrc = mdb_env_create(&b->env)) != 0) {
        b->env = NULL;
        kms_err_set(err, 500, "cannot create storage environment: %s", mdb_strerror(mrc));
        goto out;
    }
    if ((mrc = mdb_env_set_maxdbs(b->env, KMS_DB_COUNT_)) != 0 ||
        (mrc = mdb_env_set_maxreaders(b->env, KMS_LMDB_MAX_READERS)) != 0 ||
        (mrc = mdb_env_set_mapsize(b->env, map_size)) != 0 ||
        (mrc = mdb_env_open(b->env, dir, flags, 0600)) != 0) {
        kms_err_set(err, 500, "cannot open storage in %s: %s", dir, mdb_strerror(mrc));
        goto out;
    }
    if (data_file_check(b->env, dir, err) != 0)
        goto out;
    int dead;
    (void)mdb_reader_check(b->env, &dead); /* a check killed by a signal kept its reader slot */
    mrc = mdb_env_get_maxkeysize(b->env);
    b->maxkey = mrc > 0 && mrc < KMS_KEY_MAX ? (size_t)mrc : KMS_KEY_MAX;

    if ((mrc = mdb_txn_begin(b->env, NULL, 0, &txn)) != 0) {
        kms_err_set(err, 500, "cannot open storage in %s: %s", dir, mdb_strerror(mrc));
        goto out;
    }
    for (size_t i = 0; i < KMS_DB_COUNT_; i++) {
        if ((mrc = mdb_dbi_open(txn, kms_db_names[i], MDB_CREATE, &b->dbi[i])) != 0) {
            kms_err_set(err, 500, "cannot open database %s in %s: %s", kms_db_names[i], dir,
                        mdb_strerror(mrc));
            goto out;
        }
    }
    mrc = mdb_txn_commit(txn);
    txn = NULL;
    if (mrc != 0) {
        kms_err_set(err, 500, "cannot write storage in %s: %s", dir, mdb_strerror(mrc));
        goto out;
    }
    *ops = &lmdb_ops;
    *maxkey = b->maxkey;
    *out = b;
    b = NULL;
    rc = 0;
out:
    if (txn != NULL)
        mdb_txn_abort(txn);
    lmdb_close(b);
    return rc;
}
