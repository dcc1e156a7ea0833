/*
 * lmdb_check.c - reads a whole LMDB store once, in a child process, before kmsd opens it.
 *
 * LMDB keeps no checksums: it trusts every page it maps. A damaged data.mdb (a failing disk,
 * a copy patched by hand, a bit flipped on the way through a backup) is read as it is, and a
 * page whose header, node offsets or free-page list are garbage makes LMDB read or write
 * outside the map or outside its own buffers. With random bytes of one page changed, about
 * one store in a hundred killed kmsd with SIGSEGV or SIGBUS at start-up, or corrupted its
 * heap on the first write (glibc aborted in malloc; under ASan a negative-size memmove in
 * mdb_cursor_put and a wild read in mdb_midl_xmerge).
 *
 * So an existing store is first read by a child process (fork, no exec: nothing is shared
 * but the file) that:
 * - opens the environment read-only, in its own LMDB environment (an MDB_env must not cross a
 *   fork, so the parent has not opened one yet);
 * - checks the file is as long as its last page (a shorter one is a SIGBUS on first read);
 * - walks every record of the main database (which holds the named databases), of each
 *   named database and of the free-page database, touching every page of every value;
 * - checks each leaf page the walk passes through (a key points into its page): its header
 *   names it, and its bounds and every node lie inside it (LMDB 0.9's page layout; other
 *   versions skip this step);
 * - checks each free-page record the way LMDB will use it when a write reuses those pages:
 *   a count, then that many page numbers, in descending order, each inside the file. LMDB
 *   merges these lists into fixed buffers without checking them; a count that lies is a
 *   write past the buffer's end.
 *
 * The child reports a finding through a pipe and exits 1; if the walk itself is killed by a
 * signal, the signal is the finding. Either way the parent refuses the store with a message
 * that names it and says to restore a backup. A cursor that loops (a branch page pointing
 * back up the tree) is cut off after more records than the file could hold.
 *
 * Cost: one read of the whole file, from the page cache once it is warm: a 1M-key store of
 * 364 MB started in 170 ms instead of 11 (docs/performance.md). A new (absent or empty)
 * data.mdb is not checked, so dev mode and a first start pay nothing but a stat.
 *
 * What this does not catch: a branch page's damage (the cursor API never hands one out; a
 * write that meets it trips LMDB's own assertion, which aborts before anything is written),
 * a change that leaves every page well formed (a value's bytes: those are sealed, and
 * storage.c refuses a record whose seal does not open), and damage done while kmsd runs.
 */
#include "storage/storage_int.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define FREE_DBI 0 /* LMDB's free-page database */
#define MAIN_DBI 1 /* LMDB's main database: the named databases' records */

/*
 * LMDB 0.9's page layout (data format 1; mdb.c's MDB_page and MDB_node), for the leaf page
 * check below. kms_lmdb_check checks mdb_version before relying on it.
 */
#define PAGE_HDR 16 /* page number (8), pad (2), flags (2), lower (2), upper (2) */
#define NODE_HDR 8  /* data size low (2) and high (2) halves, flags (2), key size (2) */
#define P_LEAF 0x02
#define F_BIGDATA 0x01 /* the node holds the page number of the value's overflow pages */

struct walk {
    MDB_txn *txn;
    const unsigned char *map;  /* the environment's map (mdb_env_info) */
    const unsigned char *leaf; /* the leaf page checked last */
    bool pages;                /* the library's page layout is the one above */
    size_t last_pgno;          /* the highest page number in use */
    size_t psize;
    uint64_t budget; /* records the file could hold at most */
    volatile unsigned char sink;
    char msg[256];
};

/* Reads the first byte of each page of v, so that a value reaching past the map faults here. */
static void touch(struct walk *w, const MDB_val *v)
{
    const unsigned char *p = v->mv_data;
    unsigned char acc = 0;
    if (v->mv_size == 0)
        return;
    for (size_t off = 0; off < v->mv_size; off += w->psize)
        acc ^= p[off];
    acc ^= p[v->mv_size - 1];
    w->sink ^= acc;
}

/*
 * A free-page record as LMDB reads it back (midl.h: IDLs are sorted in descending order, the
 * first element is the count): the value is exactly 1 + count page numbers, each a page the
 * file has and not one of the two meta pages.
 */
static int check_free_list(struct walk *w, const MDB_val *k, const MDB_val *v)
{
    size_t n;
    const unsigned char *p = v->mv_data;
    if (k->mv_size != sizeof(size_t) || v->mv_size < sizeof(size_t) ||
        v->mv_size % sizeof(size_t) != 0) {
        snprintf(w->msg, sizeof w->msg, "a free-page record has a %zu-byte key and %zu bytes",
                 k->mv_size, v->mv_size);
        return -1;
    }
    memcpy(&n, p, sizeof n);
    if (n != v->mv_size / sizeof(size_t) - 1) {
        snprintf(w->msg, sizeof w->msg, "a free-page record counts %zu pages in %zu bytes", n,
                 v->mv_size);
        return -1;
    }
    size_t prev = SIZE_MAX;
    for (size_t i = 1; i <= n; i++) {
        size_t pg;
        memcpy(&pg, p + i * sizeof(size_t), sizeof pg);
        if (pg < 2 || pg > w->last_pgno || pg >= prev) {
            snprintf(w->msg, sizeof w->msg,
                     "a free-page record lists page %zu (the file's pages are 2 to %zu, "
                     "listed once each in descending order)",
                     pg, w->last_pgno);
            return -1;
        }
        prev = pg;
    }
    return 0;
}

static uint16_t u16_at(const unsigned char *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/*
 * The leaf page that holds the key k (keys are stored inline, so k points into its page): its
 * header names it, and its bounds and every node lie inside it. LMDB reads a page through its
 * node pointers alone, so a damaged upper bound or node size is first used by the write that
 * moves nodes to insert one, as a memmove of a negative length.
 */
static int check_leaf(struct walk *w, const MDB_val *k, const char *name)
{
    uintptr_t kp = (uintptr_t)k->mv_data;
    if (!w->pages)
        return 0;
    /* the map is page-aligned, and a page's header holds its number */
    const unsigned char *pg = (const unsigned char *)(kp - kp % w->psize);
    if (pg == w->leaf)
        return 0;
    w->leaf = pg;
    size_t pgno;
    memcpy(&pgno, pg, sizeof pgno);
    if (w->map == NULL && pgno <= w->last_pgno && (uintptr_t)pg / w->psize >= pgno)
        w->map = pg - pgno * w->psize; /* from the first leaf; every other must agree */
    uint16_t flags = u16_at(pg + 10), lower = u16_at(pg + 12), upper = u16_at(pg + 14);
    if (pgno > w->last_pgno || pg != w->map + pgno * w->psize || (flags & P_LEAF) == 0 ||
        lower < PAGE_HDR || lower > upper || upper > w->psize || (lower - PAGE_HDR) % 2 != 0)
        goto bad;
    for (size_t i = 0; i < (size_t)(lower - PAGE_HDR) / 2; i++) {
        uint16_t at = u16_at(pg + PAGE_HDR + 2 * i);
        if (at < upper || (size_t)at + NODE_HDR > w->psize)
            goto bad;
        const unsigned char *node = pg + at;
        size_t dsize = (size_t)u16_at(node) | (size_t)u16_at(node + 2) << 16;
        size_t ksize = u16_at(node + 6);
        if (u16_at(node + 4) & F_BIGDATA)
            dsize = sizeof(size_t);
        if (at + NODE_HDR + ksize + dsize > w->psize)
            goto bad;
    }
    return 0;
bad:
    snprintf(w->msg, sizeof w->msg,
             "a leaf page of the %s database (its header says page %zu) is not well formed", name,
             pgno);
    return -1;
}

static int walk_db(struct walk *w, MDB_dbi dbi, const char *name)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int mrc = mdb_cursor_open(w->txn, dbi, &cur);
    if (mrc != 0) {
        snprintf(w->msg, sizeof w->msg, "cannot read the %s database: %s", name, mdb_strerror(mrc));
        return -1;
    }
    int rc = 0;
    while ((mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
        if (w->budget-- == 0) {
            snprintf(w->msg, sizeof w->msg, "the %s database's records run in a loop", name);
            rc = -1;
            break;
        }
        touch(w, &k);
        if (check_leaf(w, &k, name) != 0) {
            rc = -1;
            break;
        }
        if (dbi == FREE_DBI) {
            if (check_free_list(w, &k, &v) != 0) {
                rc = -1;
                break;
            }
        } else {
            touch(w, &v);
        }
    }
    if (rc == 0 && mrc != MDB_NOTFOUND) {
        snprintf(w->msg, sizeof w->msg, "reading the %s database: %s", name, mdb_strerror(mrc));
        rc = -1;
    }
    mdb_cursor_close(cur);
    return rc;
}

static int walk_store(const char *dir, size_t map_size, char *msg, size_t msglen)
{
    MDB_env *env = NULL;
    MDB_envinfo info;
    MDB_stat ms;
    struct walk w = {0};
    struct stat sb;
    int fd, mrc, rc = -1;

    if ((mrc = mdb_env_create(&env)) != 0 || (mrc = mdb_env_set_maxdbs(env, KMS_DB_COUNT_)) != 0 ||
        (mrc = mdb_env_set_mapsize(env, map_size)) != 0 ||
        (mrc = mdb_env_open(env, dir, MDB_RDONLY | MDB_NOTLS, 0600)) != 0 ||
        mdb_env_info(env, &info) != 0 || mdb_env_stat(env, &ms) != 0 ||
        mdb_env_get_fd(env, &fd) != 0 || fstat(fd, &sb) != 0) {
        /* the open that follows says why, as it does for a store that is not checked */
        rc = 0;
        goto out;
    }
    int major, minor;
    (void)mdb_version(&major, &minor, NULL);
    w.pages = major == 0 && minor == 9;
    w.last_pgno = info.me_last_pgno;
    w.psize = ms.ms_psize;
    if ((uint64_t)sb.st_size < ((uint64_t)w.last_pgno + 1) * w.psize) {
        /* reported by the open that follows, with the sizes */
        rc = 0;
        goto out;
    }
    /* a record takes at least 8 bytes of a page (its node header and pointer) */
    w.budget = ((uint64_t)w.last_pgno + 1) * (w.psize / 8);
    if (mdb_txn_begin(env, NULL, MDB_RDONLY, &w.txn) != 0) {
        w.txn = NULL;
        rc = 0; /* as above */
        goto out;
    }
    if (walk_db(&w, FREE_DBI, "free-page") != 0 || walk_db(&w, MAIN_DBI, "main") != 0)
        goto found;
    for (size_t i = 0; i < KMS_DB_COUNT_; i++) {
        MDB_dbi dbi;
        mrc = mdb_dbi_open(w.txn, kms_db_names[i], 0, &dbi);
        if (mrc == MDB_NOTFOUND)
            continue;
        if (mrc != 0) {
            snprintf(w.msg, sizeof w.msg, "cannot open the %s database: %s", kms_db_names[i],
                     mdb_strerror(mrc));
            goto found;
        }
        if (walk_db(&w, dbi, kms_db_names[i]) != 0)
            goto found;
    }
    rc = 0;
    goto out;
found:
    snprintf(msg, msglen, "%s", w.msg);
out:
    if (w.txn != NULL)
        mdb_txn_abort(w.txn);
    if (env != NULL)
        mdb_env_close(env);
    return rc;
}

static void write_all(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t r = write(fd, s, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return;
        s += r;
        n -= (size_t)r;
    }
}

/* A signal that reading a damaged map raises (an abort: LMDB's own assertion), not one sent. */
static bool fault_signal(int sig)
{
    return sig == SIGSEGV || sig == SIGBUS || sig == SIGABRT || sig == SIGFPE || sig == SIGILL;
}

int kms_lmdb_check(const char *dir, size_t map_size, struct kms_err *err)
{
    char datapath[4096];
    struct stat sb;
    int pfd[2];

    if ((size_t)snprintf(datapath, sizeof datapath, "%s/data.mdb", dir) >= sizeof datapath)
        return kms_err_set(err, 500, "storage path too long: %s", dir);
    if (stat(datapath, &sb) != 0 || sb.st_size == 0)
        return 0; /* a new store */
    if (pipe2(pfd, O_CLOEXEC) != 0)
        return kms_err_set(err, 500, "cannot check the store in %s: %s", dir, strerror(errno));
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(pfd[0]);
        close(pfd[1]);
        return kms_err_set(err, 500, "cannot check the store in %s: %s", dir, strerror(e));
    }
    if (pid == 0) {
        char msg[512] = "";
        close(pfd[0]);
        /* a parent killed meanwhile takes the check with it (it holds the store's lock) */
        (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        /* the default action for the faults the walk is there to catch */
        struct sigaction dfl = {.sa_handler = SIG_DFL};
        sigemptyset(&dfl.sa_mask);
        (void)sigaction(SIGSEGV, &dfl, NULL);
        (void)sigaction(SIGBUS, &dfl, NULL);
        (void)sigaction(SIGABRT, &dfl, NULL);
        int rc = walk_store(dir, map_size, msg, sizeof msg);
        if (rc != 0)
            write_all(pfd[1], msg, strlen(msg));
        _exit(rc == 0 ? 0 : 1);
    }
    close(pfd[1]);
    char msg[512];
    size_t len = 0;
    for (;;) {
        ssize_t r = read(pfd[0], msg + len, sizeof msg - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
        if (len == sizeof msg - 1)
            break;
    }
    msg[len] = '\0';
    close(pfd[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return kms_err_set(err, 500, "cannot check the store in %s: %s", dir, strerror(errno));
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (WIFSIGNALED(status) && !fault_signal(WTERMSIG(status)))
        return kms_err_set(err, 500, "the check of the store %s was stopped by signal %d (%s)",
                           datapath, WTERMSIG(status), strsignal(WTERMSIG(status)));
    if (WIFSIGNALED(status))
        return kms_err_set(err, 500,
                           "the store %s is damaged: reading it killed the check with signal %d "
                           "(%s); restore it from a backup",
                           datapath, WTERMSIG(status), strsignal(WTERMSIG(status)));
    return kms_err_set(err, 500, "the store %s is damaged: %s; restore it from a backup", datapath,
                       len > 0 ? msg : "the check failed");
}
