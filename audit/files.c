/*
 * files.c - audit logs at rest: finding a log's rotated files, ordering them by the chain
 * (first sequence number, whatever the rotation naming), and verifying the chain.
 *
 * Verification needs only the files: each line's own hash is recomputed from its bytes, and
 * each prev_hash must equal the previous line's hash, across file boundaries. An edit breaks
 * the edited line's own hash; a deleted, inserted or moved line breaks the next prev_hash (or
 * its seq); a torn last line lacks its newline or its hash. What the files alone cannot show
 * is a tail cut off at a line boundary, or a chain recomputed from scratch; docs/audit.md
 * explains anchoring the head elsewhere (a SIEM, the head verify prints).
 */
#include "audit/audit_int.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#define READ_CHUNK 65536

/* ---- expansion --------------------------------------------------------------------------- */

struct flist {
    char **v;
    size_t n, cap;
};

static int flist_add(struct flist *l, const char *path)
{
    for (size_t i = 0; i < l->n; i++) {
        if (strcmp(l->v[i], path) == 0) {
            return 0;
        }
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        char **nv = realloc(l->v, cap * sizeof(*nv));
        if (nv == NULL) {
            return -1;
        }
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n] = strdup(path);
    if (l->v[l->n] == NULL) {
        return -1;
    }
    l->n++;
    return 0;
}

static bool compressed(const char *name)
{
    static const char *const ext[] = {".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip", NULL};
    size_t n = strlen(name);
    for (size_t i = 0; ext[i] != NULL; i++) {
        size_t e = strlen(ext[i]);
        if (n > e && strcmp(name + n - e, ext[i]) == 0) {
            return true;
        }
    }
    return false;
}

static int add_dir(struct flist *l, const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t pl = prefix ? strlen(prefix) : 0;
    if (d == NULL) {
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        char path[KMS_AUDIT_PATH_MAX * 2];
        struct stat st;
        if (e->d_name[0] == '.' || compressed(e->d_name)) {
            continue;
        }
        /* rotated copies: "<name>.1", "<name>-20260101", "<name>.2026-01-01" */
        if (prefix != NULL && (strncmp(e->d_name, prefix, pl) != 0 ||
                               (e->d_name[pl] != '.' && e->d_name[pl] != '-'))) {
            continue;
        }
        /* "DIR/" (a shell's completion) must not name its files "DIR//NAME" */
        size_t dl = strlen(dir);
        snprintf(path, sizeof(path), "%s%s%s", dir, dl > 0 && dir[dl - 1] == '/' ? "" : "/",
                 e->d_name);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && flist_add(l, path) != 0) {
            closedir(d);
            return -1;
        }
    }
    closedir(d);
    return 0;
}

ssize_t kms_audit_getline(char **line, size_t *cap, FILE *f, size_t max)
{
    size_t len = 0;
    ssize_t rc = 0;
    int c;
    flockfile(f);
    while ((c = getc_unlocked(f)) != EOF) {
        if (len + 2 > *cap) {
            size_t ncap = *cap < 4096 ? 4096 : *cap * 2;
            ncap = ncap > max + 1 ? max + 1 : ncap;
            char *np = len + 2 <= ncap ? realloc(*line, ncap) : NULL;
            if (np == NULL) {
                rc = len + 2 > ncap ? KMS_AUDIT_LINE_TOO_LONG : -1;
                break;
            }
            *line = np;
            *cap = ncap;
        }
        (*line)[len++] = (char)c;
        if (c == '\n') {
            break;
        }
    }
    funlockfile(f);
    if (rc != 0) {
        return rc;
    }
    if (len == 0) {
        return ferror(f) ? -1 : 0;
    }
    (*line)[len] = '\0';
    return (ssize_t)len;
}

/* Lines read past a file's broken first lines to find where it starts in the chain. */
#define FIRST_SEQ_LINES 64

/*
 * Where a file starts in the chain: the seq of its first intact line (one whose own hash
 * matches), less the lines before it; UINT64_MAX for an empty file or one with no intact line
 * among its first FIRST_SEQ_LINES. A first line edited or cut short (its seq or chain fields
 * included) thus keeps its file in its place, and verify names that line, not the first line
 * of the file that would otherwise follow the previous one.
 */
static uint64_t first_seq(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *line = NULL;
    size_t cap = 0;
    uint64_t seq = UINT64_MAX;
    ssize_t n;
    if (f == NULL) {
        return seq;
    }
    for (uint64_t i = 0; i < FIRST_SEQ_LINES &&
                         (n = kms_audit_getline(&line, &cap, f, KMS_AUDIT_READ_LINE_MAX)) > 0;
         i++) {
        char prev[KMS_AUDIT_HASH_LEN + 1], hash[KMS_AUDIT_HASH_LEN + 1];
        char mine[KMS_AUDIT_HASH_LEN + 1];
        size_t pl;
        uint64_t s;
        if (line[n - 1] == '\n' &&
            kms_audit_line_chain(line, (size_t)n - 1, &s, prev, hash, &pl) == 0 &&
            kms_audit_chain_hash(line, pl, mine) == 0 && strcmp(mine, hash) == 0) {
            seq = s > i ? s - i : 0;
            break;
        }
    }
    free(line);
    fclose(f);
    return seq;
}

struct keyed {
    char *path;
    uint64_t seq;
    size_t pos;
};

static int cmp_keyed(const void *a, const void *b)
{
    const struct keyed *x = a, *y = b;
    if (x->seq != y->seq) {
        return x->seq < y->seq ? -1 : 1;
    }
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

int kms_audit_files_expand(const char *const *args, size_t nargs, bool siblings, char ***paths,
                           size_t *npaths, struct kms_err *err)
{
    struct flist l = {NULL, 0, 0};
    struct keyed *k = NULL;
    int rc = -1;

    for (size_t i = 0; i < nargs; i++) {
        struct stat st;
        if (stat(args[i], &st) != 0) {
            kms_err_set(err, 400, "%s: %s", args[i], strerror(errno));
            goto out;
        }
        if (S_ISDIR(st.st_mode)) {
            size_t had = l.n;
            if (add_dir(&l, args[i], NULL) != 0) {
                kms_err_set(err, 400, "%s: cannot read the directory", args[i]);
                goto out;
            }
            if (l.n == had) {
                /* a wrong directory would otherwise "verify" as an intact log of nothing */
                kms_err_set(err, 400, "%s: no audit files in this directory", args[i]);
                goto out;
            }
            continue;
        }
        if (flist_add(&l, args[i]) != 0) {
            kms_err_set(err, 500, "out of memory");
            goto out;
        }
        if (siblings) {
            char dir[KMS_AUDIT_PATH_MAX];
            const char *slash = strrchr(args[i], '/');
            const char *base = slash ? slash + 1 : args[i];
            if (slash == NULL) {
                snprintf(dir, sizeof(dir), ".");
            } else {
                snprintf(dir, sizeof(dir), "%.*s", (int)(slash - args[i]), args[i]);
                if (dir[0] == '\0') {
                    snprintf(dir, sizeof(dir), "/");
                }
            }
            if (add_dir(&l, dir, base) != 0) {
                kms_err_set(err, 400, "%s: cannot read the directory", dir);
                goto out;
            }
        }
    }
    k = calloc(l.n ? l.n : 1, sizeof(*k));
    if (k == NULL) {
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < l.n; i++) {
        struct stat st;
        k[i].path = l.v[i];
        k[i].pos = i;
        /* a pipe (`<(zcat audit.log.1.gz)`, /dev/stdin) can be read only once: reading its first
         * lines here would leave the rest to the reader. It keeps its place after the argument
         * before it. */
        if (stat(l.v[i], &st) == 0 && !S_ISREG(st.st_mode)) {
            k[i].seq = i > 0 ? k[i - 1].seq : 0;
        } else {
            k[i].seq = first_seq(l.v[i]);
        }
    }
    qsort(k, l.n, sizeof(*k), cmp_keyed);
    for (size_t i = 0; i < l.n; i++) {
        l.v[i] = k[i].path;
    }
    *paths = l.v;
    *npaths = l.n;
    l.v = NULL;
    l.n = 0;
    rc = 0;
out:
    free(k);
    kms_audit_files_free(&l.v, l.n);
    return rc;
}

void kms_audit_files_free(char ***paths, size_t n)
{
    if (*paths == NULL) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        free((*paths)[i]);
    }
    free(*paths);
    *paths = NULL;
}

/* ---- verification ------------------------------------------------------------------------ */

static int bad(struct kms_audit_verify_result *r, const char *file, uint64_t line, const char *fmt,
               ...) KMS_PRINTF(4, 5);

static int bad(struct kms_audit_verify_result *r, const char *file, uint64_t line, const char *fmt,
               ...)
{
    va_list ap;
    snprintf(r->bad_file, sizeof(r->bad_file), "%s", file);
    r->bad_line = line;
    va_start(ap, fmt);
    vsnprintf(r->reason, sizeof(r->reason), fmt, ap);
    va_end(ap);
    return 1;
}

/* Check one line (without its newline) against the running chain in r. */
static int check_line(struct kms_audit_verify_result *r, const char *file, uint64_t lineno,
                      const char *line, size_t n)
{
    uint64_t seq;
    char prev[KMS_AUDIT_HASH_LEN + 1], hash[KMS_AUDIT_HASH_LEN + 1], mine[KMS_AUDIT_HASH_LEN + 1];
    size_t plen;

    if (n == 0) {
        return bad(r, file, lineno, "empty line (inserted?)");
    }
    if (kms_audit_line_chain(line, n, &seq, prev, hash, &plen) != 0) {
        return bad(r, file, lineno, "not a kmsd audit record (no seq/prev_hash/hash at its end)");
    }
    if (kms_audit_chain_hash(line, plen, mine) != 0) {
        return bad(r, file, lineno, "cannot hash the line");
    }
    if (strcmp(mine, hash) != 0) {
        return bad(r, file, lineno, "line content does not match its hash (edited)");
    }
    json_error_t jerr;
    json_t *j = json_loadb(line, n, JSON_REJECT_DUPLICATES, &jerr);
    bool obj = json_is_object(j);
    json_decref(j);
    if (!obj) {
        return bad(r, file, lineno, "not valid JSON: %s", jerr.text);
    }
    if (r->lines == 0) {
        r->first_seq = seq;
        if (seq == 0) {
            return bad(r, file, lineno, "seq 0 is not valid");
        }
        if (seq == 1 && strcmp(prev, KMS_AUDIT_GENESIS) != 0) {
            return bad(r, file, lineno, "first record (seq 1) does not start the chain");
        }
        if (r->genesis && seq != 1) {
            return bad(r, file, lineno,
                       "the chain starts at seq %" PRIu64 ", not 1: records before it are missing",
                       seq);
        }
        /* the files given start right after the recorded head (the files up to it, already
           verified, left out): the chain provably continues from it */
        if (r->anchor != NULL && strcmp(r->anchor, prev) == 0) {
            r->anchor_found = true;
        }
    } else {
        if (strcmp(prev, r->head) != 0) {
            return bad(r, file, lineno,
                       "prev_hash does not match the previous line (seq %" PRIu64
                       "): a record was deleted, inserted or reordered before this line",
                       r->last_seq);
        }
        if (seq != r->last_seq + 1) {
            return bad(r, file, lineno, "seq %" PRIu64 " follows seq %" PRIu64, seq, r->last_seq);
        }
    }
    if (r->anchor != NULL && strcmp(r->anchor, hash) == 0) {
        r->anchor_found = true;
    }
    r->lines++;
    r->last_seq = seq;
    memcpy(r->head, hash, sizeof(r->head));
    return 0;
}

/* Field i (0-based, blank-separated) of line into out; false when the line is shorter. */
static bool field_of(const char *line, int i, char *out, size_t n)
{
    const char *p = line;
    for (;;) {
        while (*p == ' ' || *p == '\t') {
            p++;
        }
        if (*p == '\0' || *p == '\n') {
            return false;
        }
        size_t len = strcspn(p, " \t\n");
        if (i-- == 0) {
            if (len >= n) {
                return false;
            }
            memcpy(out, p, len);
            out[len] = '\0';
            return true;
        }
        p += len;
    }
}

/*
 * Whether a process holds a flock on the open file fd (a running kmsd appending to it: its
 * device holds LOCK_EX while the file is its current one). Read from /proc/locks rather than
 * probed with flock: a probe's own lock, however short, could make a kmsd starting at that
 * moment find the file taken.
 */
static bool flock_held(int fd)
{
    struct stat st;
    char want[64], line[256];
    bool held = false;
    if (fstat(fd, &st) != 0) {
        return false;
    }
    snprintf(want, sizeof(want), "%02x:%02x:%ju", major(st.st_dev), minor(st.st_dev),
             (uintmax_t)st.st_ino);
    FILE *f = fopen("/proc/locks", "re");
    if (f == NULL) {
        return false;
    }
    while (!held && fgets(line, sizeof(line), f) != NULL) {
        /* "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"; a waiter's line has "->" */
        char type[16], dev[64];
        if (strstr(line, "->") == NULL && field_of(line, 1, type, sizeof(type)) &&
            field_of(line, 5, dev, sizeof(dev)) && strcmp(type, "FLOCK") == 0 &&
            strcmp(dev, want) == 0) {
            held = true;
        }
    }
    fclose(f);
    return held;
}

static int verify_file(const char *path, bool last, struct kms_audit_verify_result *r)
{
    FILE *f = fopen(path, "rb");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    uint64_t lineno = 0;
    int rc = 0;

    if (f == NULL) {
        snprintf(r->bad_file, sizeof(r->bad_file), "%s", path);
        snprintf(r->reason, sizeof(r->reason), "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    while ((n = kms_audit_getline(&line, &cap, f, KMS_AUDIT_READ_LINE_MAX)) != 0) {
        lineno++;
        if (n == KMS_AUDIT_LINE_TOO_LONG) {
            rc = bad(r, path, lineno, "line longer than %zu MiB (not a kmsd audit record)",
                     KMS_AUDIT_READ_LINE_MAX >> 20);
            break;
        }
        if (n < 0) {
            snprintf(r->bad_file, sizeof(r->bad_file), "%s", path);
            snprintf(r->reason, sizeof(r->reason), "cannot read %s: %s", path, strerror(errno));
            rc = -1;
            break;
        }
        if (line[n - 1] != '\n') {
            if (last && flock_held(fileno(f))) {
                r->tail_in_progress = (uint64_t)n; /* written now: the next verify sees it */
                break;
            }
            rc = bad(r, path, lineno, "torn last line (no newline at the end of the file)");
            break;
        }
        if (memchr(line, '\0', (size_t)n) != NULL) {
            rc = bad(r, path, lineno, "NUL byte in the line");
            break;
        }
        rc = check_line(r, path, lineno, line, (size_t)n - 1);
        if (rc != 0) {
            break;
        }
    }
    if (rc == 0 && ferror(f)) {
        snprintf(r->bad_file, sizeof(r->bad_file), "%s", path);
        snprintf(r->reason, sizeof(r->reason), "cannot read %s", path);
        rc = -1;
    }
    free(line);
    fclose(f);
    return rc;
}

int kms_audit_verify_files(const char *const *paths, size_t n, struct kms_audit_verify_result *r)
{
    bool genesis = r->genesis;
    const char *anchor = r->anchor;
    memset(r, 0, sizeof(*r));
    r->genesis = genesis;
    r->anchor = anchor;
    snprintf(r->head, sizeof(r->head), "%s", KMS_AUDIT_GENESIS);
    for (size_t i = 0; i < n; i++) {
        int rc = verify_file(paths[i], i + 1 == n, r);
        if (rc != 0) {
            return rc;
        }
    }
    if (r->genesis && r->lines == 0) {
        return bad(r, n ? paths[0] : "-", 0, "no records");
    }
    if (r->anchor != NULL && !r->anchor_found) {
        return bad(r, n ? paths[n - 1] : "-", 0,
                   "anchor %s is not in the chain: records up to it were removed or rewritten",
                   r->anchor);
    }
    return 0;
}

/* ---- the `audit verify` command (kmsctl and kmsd) ---------------------------------------- */

static void verify_usage(const char *prog, FILE *f)
{
    fprintf(f,
            "Usage: %s audit verify [--genesis] [--anchor=sha256:HEX] [--each] [-q] FILE|DIR...\n\n"
            "Checks the hash chain of an audit log: every line's own hash, and that each\n"
            "line's prev_hash is the previous line's hash, across rotated files (ordered by\n"
            "their first sequence number; a directory means every file in it).\n\n"
            "  --genesis        the chain must start at seq 1 (no older file left out)\n"
            "  --anchor=HASH    a head recorded elsewhere earlier must still be in the chain\n"
            "                   (or the files given start right after it)\n"
            "  --each           every FILE|DIR is a chain of its own (HA replicas: one log\n"
            "                   each), verified on its own\n"
            "  -q               print nothing on success\n\n"
            "Exit status: 0 intact, 1 tampered (the first bad FILE:LINE is printed), 2 usage\n"
            "or read errors.\n",
            prog);
}

/* Verify one chain (files of one log, rotated copies included) and report it; the exit status. */
static int verify_chain(const char *prog, const char *const *args, size_t nargs, bool quiet,
                        const char *label, struct kms_audit_verify_result *r)
{
    struct kms_err err;
    char **paths = NULL;
    size_t npaths = 0;
    int status = 2;

    if (kms_audit_files_expand(args, nargs, false, &paths, &npaths, &err) != 0) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        goto out;
    }
    int rc = kms_audit_verify_files((const char *const *)paths, npaths, r);
    if (rc < 0) {
        fprintf(stderr, "%s: %s\n", prog, r->reason);
        goto out;
    }
    if (rc > 0) {
        if (r->bad_line > 0) {
            fprintf(stderr, "%s:%" PRIu64 ": %s\n", r->bad_file, r->bad_line, r->reason);
        } else {
            fprintf(stderr, "%s: %s\n", r->bad_file, r->reason);
        }
        fprintf(stderr, "%s: audit log NOT intact (%" PRIu64 " good lines before it)\n", prog,
                r->lines);
        status = 1;
        goto out;
    }
    if (r->tail_in_progress > 0) {
        fprintf(stderr,
                "%s: note: the last line (%" PRIu64 " bytes so far) is being written by a "
                "running kmsd (it holds the file's lock); it was not checked\n",
                prog, r->tail_in_progress);
    }
    if (!quiet) {
        if (label != NULL) {
            printf("%s: ", label);
        }
        if (r->lines == 0) {
            printf("ok: no records in %zu file(s)\n", npaths);
        } else {
            printf("ok: %" PRIu64 " records in %zu file(s), seq %" PRIu64 "..%" PRIu64
                   "%s\nhead: %s\n",
                   r->lines, npaths, r->first_seq, r->last_seq,
                   r->first_seq == 1 ? " (from the genesis)" : " (earlier records not given)",
                   r->head);
        }
    }
    status = 0;
out:
    kms_audit_files_free(&paths, npaths);
    return status;
}

int kms_audit_verify_command(const char *prog, int argc, char **argv)
{
    struct kms_audit_verify_result r;
    const char **args = calloc((size_t)(argc > 0 ? argc : 1), sizeof(*args));
    size_t nargs = 0;
    bool quiet = false, each = false;
    int status = 2;

    memset(&r, 0, sizeof(r));
    if (args == NULL) {
        goto out;
    }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0 || strcmp(a, "-help") == 0) {
            verify_usage(prog, stdout);
            status = 0;
            goto out;
        } else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
            quiet = true;
        } else if (strcmp(a, "--each") == 0 || strcmp(a, "-each") == 0) {
            each = true;
        } else if (strcmp(a, "--genesis") == 0 || strcmp(a, "-genesis") == 0) {
            r.genesis = true;
        } else if (strncmp(a, "--anchor=", 9) == 0 || strncmp(a, "-anchor=", 8) == 0) {
            r.anchor = strchr(a, '=') + 1;
        } else if ((strcmp(a, "--anchor") == 0 || strcmp(a, "-anchor") == 0) && i + 1 < argc) {
            r.anchor = argv[++i];
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "%s: unknown option \"%s\"\n", prog, a);
            verify_usage(prog, stderr);
            goto out;
        } else {
            args[nargs++] = a;
        }
    }
    if (nargs == 0 || (each && r.anchor != NULL)) {
        if (each && r.anchor != NULL) {
            fprintf(stderr, "%s: --anchor names one chain: it cannot be used with --each\n", prog);
        }
        verify_usage(prog, stderr);
        goto out;
    }
    if (!each) {
        status = verify_chain(prog, args, nargs, quiet, NULL, &r);
        goto out;
    }
    /* one chain per argument (HA replicas: one log each); the worst status wins */
    status = 0;
    for (size_t i = 0; i < nargs; i++) {
        struct kms_audit_verify_result one;
        memset(&one, 0, sizeof(one));
        one.genesis = r.genesis;
        int st = verify_chain(prog, &args[i], 1, quiet, args[i], &one);
        if (st == 2 || (st == 1 && status == 0)) {
            status = st;
        }
    }
out:
    free(args);
    return status;
}
