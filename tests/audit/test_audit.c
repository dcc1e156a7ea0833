/*
 * test_audit.c - the broker and its file devices, through the public API only: a request and
 * a response line per record with the secrets HMAC'd and the chain intact; concurrency (lines
 * never interleave, seq has no gap); every fsync mode; rotation (reopen) continuing the chain
 * across files; restart recovery (a torn last line is cut off); fail-closed writes (a file-size
 * limit fails the write and leaves no torn line, the chain rolls back and resumes); a deleted
 * file recreated; two devices with one broken; salts and chain heads kept in storage; in
 * test-hook builds, two devices with one hung in its fsync (the blocking wait settles on the
 * other at the timeout, and closing waits for it on the monotonic clock, whatever the wall
 * clock does); synced lines dropped from the page cache; one writer per file (a
 * second broker on a file another holds is refused, by any name, and the lock follows a
 * rotation); a batch that cannot be cut back (an append-only file, as root) says why; a thread
 * that defers its writer wake-ups (an event-loop worker) arms once per pass, and its blocking
 * waits and the end of the deferral wake what it owed.
 *
 * Each test works in a fresh mkdtemp directory under /tmp (the page-cache test under the
 * working directory: tmpfs pages cannot be dropped).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "audit/audit.h"
#include "tests/realtime_skew.h"

#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#define TOKEN "s.SuperSecretToken123"
#define ACCESSOR "accessor-abcdef"
#define PLAINTEXT "cGxhaW50ZXh0LXNlY3JldA=="
#define CIPHERTEXT "vault:v1:c2VjcmV0LWNpcGhlcnRleHQ="

struct fx {
    char dir[64];
    char path[128];
};

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/kms-test-audit-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/audit.log", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* The options of one device writing path (defaults otherwise). */
static void one_device(struct kms_audit_device_opts *o, struct kms_audit_opts *ao, const char *path)
{
    kms_audit_device_opts_default(o);
    snprintf(o->path, sizeof(o->path), "%s", path);
    memset(ao, 0, sizeof(*ao));
    ao->devices = o;
    ao->ndevices = 1;
}

static struct kms_audit *open_broker(struct kms_storage *st, const char *path,
                                     enum kms_audit_fsync mode)
{
    struct kms_audit_device_opts o;
    struct kms_audit_opts ao;
    struct kms_audit *a = NULL;
    struct kms_err err;
    kms_audit_device_opts_default(&o);
    snprintf(o.path, sizeof(o.path), "%s", path);
    o.fsync = mode;
    memset(&ao, 0, sizeof(ao));
    ao.devices = &o;
    ao.ndevices = 1;
    ao.timeout_ms = 5000;
    if (kms_audit_create(st, &ao, &a, &err) != 0) {
        fail_msg("kms_audit_create: %s", err.msg);
    }
    return a;
}

/* One request's two lines, with secrets in the auth, request and response blocks. */
static int log_pair(struct kms_audit *a, int i)
{
    struct kms_audit_rec *r = NULL;
    struct kms_err err;
    json_t *auth = json_pack("{s:s, s:s, s:s, s:{s:b}}", "client_token", TOKEN, "accessor",
                             ACCESSOR, "display_name", "alice", "policy_results", "allowed", 1);
    json_t *req = json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", "req-id", "path", "transit/encrypt/k",
                            "data", "plaintext", PLAINTEXT, "context", "Y3R4");
    json_t *resp = json_pack("{s:{s:s, s:i}}", "data", "ciphertext", CIPHERTEXT, "key_version", 1);
    json_t *extra =
        json_pack("{s:s, s:s, s:s, s:i}", "subject", "alice", "op", "encrypt", "key", "k", "n", i);
    int rc = -1;
    if (kms_audit_rec_create(a, auth, req, &r) == 0 &&
        kms_audit_rec_log(r, "request", false, NULL, NULL, extra, &err, NULL, 0) == 0 &&
        kms_audit_rec_log(r, "response", true, resp, NULL, extra, &err, NULL, 0) == 0) {
        rc = 0;
    }
    kms_audit_rec_destroy(&r);
    json_decref(auth);
    json_decref(req);
    json_decref(resp);
    json_decref(extra);
    return rc;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
    buf[n] = '\0';
    fclose(fp);
    if (len != NULL) {
        *len = (size_t)n;
    }
    return buf;
}

static size_t count_lines(const char *path)
{
    char *b = slurp(path, NULL);
    size_t n = 0;
    for (char *p = b; *p; p++) {
        n += *p == '\n';
    }
    free(b);
    return n;
}

static int verify(const char *const *paths, size_t n, struct kms_audit_verify_result *r)
{
    memset(r, 0, sizeof(*r));
    return kms_audit_verify_files(paths, n, r);
}

static void assert_intact(const char *path, uint64_t first, uint64_t last)
{
    struct kms_audit_verify_result r;
    int rc = verify(&path, 1, &r);
    if (rc != 0) {
        fail_msg("%s:%llu: %s", r.bad_file, (unsigned long long)r.bad_line, r.reason);
    }
    assert_int_equal(r.first_seq, first);
    assert_int_equal(r.last_seq, last);
}

static void test_lines_and_secrets(void **state)
{
    struct fx *f = *state;
    struct kms_audit *a = open_broker(NULL, f->path, KMS_AUDIT_FSYNC_BATCH);
    char h[KMS_AUDIT_HMAC_LEN + 1];

    assert_int_equal(log_pair(a, 1), 0);
    assert_int_equal(count_lines(f->path), 2);
    char *text = slurp(f->path, NULL);
    assert_null(strstr(text, TOKEN));
    assert_null(strstr(text, ACCESSOR));
    assert_null(strstr(text, PLAINTEXT));
    assert_null(strstr(text, CIPHERTEXT));
    assert_null(strstr(text, "Y3R4"));
    /* every secret is findable through the device's hash (sys/audit-hash) */
    const char *secrets[] = {TOKEN, ACCESSOR, PLAINTEXT, CIPHERTEXT, "Y3R4"};
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(kms_audit_hash_input(a, "file", secrets[i], strlen(secrets[i]), h), 0);
        assert_non_null(strstr(text, h));
    }
    assert_int_equal(kms_audit_hash_input(a, "nope", "x", 1, h), KMS_STORAGE_NOTFOUND);
    /* layout: one JSON object per line, Vault's blocks plus the kmsd and chain fields */
    char *nl = strchr(text, '\n');
    *nl = '\0';
    json_t *l1 = json_loads(text, 0, NULL);
    json_t *l2 = json_loads(nl + 1, JSON_DISABLE_EOF_CHECK, NULL);
    assert_non_null(l1);
    assert_non_null(l2);
    assert_string_equal(json_string_value(json_object_get(l1, "type")), "request");
    assert_string_equal(json_string_value(json_object_get(l2, "type")), "response");
    assert_null(json_object_get(l1, "response"));
    assert_non_null(json_object_get(json_object_get(l2, "response"), "data"));
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(json_object_get(l2, "response"), "data"), "key_version")),
                     1);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(l1, "auth"), "display_name")), "alice");
    assert_string_equal(json_string_value(json_object_get(l1, "subject")), "alice");
    assert_int_equal(json_integer_value(json_object_get(l1, "seq")), 1);
    assert_int_equal(json_integer_value(json_object_get(l2, "seq")), 2);
    assert_string_equal(json_string_value(json_object_get(l2, "prev_hash")),
                        json_string_value(json_object_get(l1, "hash")));
    json_decref(l1);
    json_decref(l2);
    free(text);
    kms_audit_destroy(&a);
    assert_intact(f->path, 1, 2);
}

static void test_accessor_clear_when_asked(void **state)
{
    struct fx *f = *state;
    struct kms_audit_device_opts o;
    struct kms_audit_opts ao;
    struct kms_audit *a = NULL;
    struct kms_err err;
    kms_audit_device_opts_default(&o);
    snprintf(o.path, sizeof(o.path), "%s", f->path);
    o.hmac_accessor = false;
    memset(&ao, 0, sizeof(ao));
    ao.devices = &o;
    ao.ndevices = 1;
    assert_int_equal(kms_audit_create(NULL, &ao, &a, &err), 0);
    assert_int_equal(log_pair(a, 1), 0);
    kms_audit_destroy(&a);
    char *text = slurp(f->path, NULL);
    assert_non_null(strstr(text, ACCESSOR));
    assert_null(strstr(text, TOKEN));
    free(text);
}

struct worker_arg {
    struct kms_audit *a;
    int n;
    int failures;
};

static void *worker(void *p)
{
    struct worker_arg *w = p;
    for (int i = 0; i < w->n; i++) {
        if (log_pair(w->a, i) != 0) {
            w->failures++;
        }
    }
    return NULL;
}

static void run_concurrent(const char *path, enum kms_audit_fsync mode, int threads, int each)
{
    struct kms_audit *a = open_broker(NULL, path, mode);
    pthread_t t[16];
    struct worker_arg w[16];
    for (int i = 0; i < threads; i++) {
        w[i].a = a;
        w[i].n = each;
        w[i].failures = 0;
        assert_int_equal(pthread_create(&t[i], NULL, worker, &w[i]), 0);
    }
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].failures, 0);
    }
    kms_audit_destroy(&a);
    assert_int_equal(count_lines(path), (size_t)(threads * each * 2));
    assert_intact(path, 1, (uint64_t)(threads * each * 2));
}

static void test_concurrent_batch(void **state)
{
    struct fx *f = *state;
    run_concurrent(f->path, KMS_AUDIT_FSYNC_BATCH, 8, 100);
}

static void test_concurrent_always_and_never(void **state)
{
    struct fx *f = *state;
    char p2[160];
    run_concurrent(f->path, KMS_AUDIT_FSYNC_ALWAYS, 4, 25);
    snprintf(p2, sizeof(p2), "%s/never.log", f->dir);
    run_concurrent(p2, KMS_AUDIT_FSYNC_NEVER, 8, 100);
}

static void test_rotation_continues_chain(void **state)
{
    struct fx *f = *state;
    struct kms_err err;
    char rotated[200], rotated2[200];
    struct kms_audit *a = open_broker(NULL, f->path, KMS_AUDIT_FSYNC_BATCH);

    assert_int_equal(log_pair(a, 1), 0);
    snprintf(rotated, sizeof(rotated), "%s.1", f->path);
    assert_int_equal(rename(f->path, rotated), 0);
    assert_int_equal(log_pair(a, 2), 0); /* still the renamed file until SIGHUP */
    assert_int_equal(kms_audit_reopen(a, &err), 0);
    assert_int_equal(log_pair(a, 3), 0);
    snprintf(rotated2, sizeof(rotated2), "%s.2", f->path);
    assert_int_equal(rename(rotated, rotated2), 0);
    assert_int_equal(rename(f->path, rotated), 0);
    assert_int_equal(kms_audit_reopen(a, &err), 0);
    assert_int_equal(log_pair(a, 4), 0);
    kms_audit_destroy(&a);

    assert_int_equal(count_lines(rotated2), 4);
    assert_int_equal(count_lines(rotated), 2);
    assert_int_equal(count_lines(f->path), 2);
    /* the live file alone verifies, starting mid-chain */
    assert_intact(f->path, 7, 8);
    /* the set, found from the live file's name and ordered by first seq */
    char **paths = NULL;
    size_t n = 0;
    const char *arg = f->path;
    assert_int_equal(kms_audit_files_expand(&arg, 1, true, &paths, &n, &err), 0);
    assert_int_equal(n, 3);
    assert_string_equal(paths[0], rotated2);
    assert_string_equal(paths[1], rotated);
    assert_string_equal(paths[2], f->path);
    struct kms_audit_verify_result r;
    assert_int_equal(verify((const char *const *)paths, n, &r), 0);
    assert_int_equal(r.lines, 8);
    assert_int_equal(r.first_seq, 1);
    /* a missing middle file breaks the chain at the next file's first line */
    const char *gap[] = {rotated2, f->path};
    assert_int_equal(verify(gap, 2, &r), 1);
    assert_string_equal(r.bad_file, f->path);
    assert_int_equal(r.bad_line, 1);
    /* so does the wrong order */
    const char *swapped[] = {rotated, rotated2, f->path};
    assert_int_equal(verify(swapped, 3, &r), 1);
    assert_string_equal(r.bad_file, rotated2);
    assert_int_equal(r.bad_line, 1);
    /* a directory argument means every file in it, in chain order */
    kms_audit_files_free(&paths, n);
    arg = f->dir;
    assert_int_equal(kms_audit_files_expand(&arg, 1, false, &paths, &n, &err), 0);
    assert_int_equal(n, 3);
    assert_int_equal(verify((const char *const *)paths, n, &r), 0);
    kms_audit_files_free(&paths, n);
    /* given with a trailing '/' (a shell's completion), the paths verify names stay clean:
     * "DIR/audit.log", not "DIR//audit.log" */
    char slashed[200];
    snprintf(slashed, sizeof(slashed), "%s/", f->dir);
    arg = slashed;
    assert_int_equal(kms_audit_files_expand(&arg, 1, false, &paths, &n, &err), 0);
    assert_int_equal(n, 3);
    assert_string_equal(paths[2], f->path);
    kms_audit_files_free(&paths, n);
    /* a directory without audit files is an error, not an intact log of nothing */
    char empty[200];
    snprintf(empty, sizeof(empty), "%s/empty", f->dir);
    assert_int_equal(mkdir(empty, 0700), 0);
    arg = empty;
    assert_int_equal(kms_audit_files_expand(&arg, 1, false, &paths, &n, &err), -1);
    assert_non_null(strstr(err.msg, "no audit files in this directory"));
    rmdir(empty);
}

static void test_restart_recovers_head_and_cuts_torn_line(void **state)
{
    struct fx *f = *state;
    struct kms_audit *a = open_broker(NULL, f->path, KMS_AUDIT_FSYNC_BATCH);
    assert_int_equal(log_pair(a, 1), 0);
    kms_audit_destroy(&a);
    /* a crash in the middle of a write leaves a partial line */
    FILE *fp = fopen(f->path, "ab");
    fputs("{\"time\":\"2024-01-01T00:00:00Z\",\"type\":\"requ", fp);
    fclose(fp);
    struct kms_audit_verify_result r;
    const char *p = f->path;
    assert_int_equal(verify(&p, 1, &r), 1);
    assert_int_equal(r.bad_line, 3);
    a = open_broker(NULL, f->path, KMS_AUDIT_FSYNC_BATCH);
    assert_int_equal(log_pair(a, 2), 0);
    kms_audit_destroy(&a);
    assert_int_equal(count_lines(f->path), 4);
    assert_intact(f->path, 1, 4);
}

static void test_refuses_foreign_file(void **state)
{
    struct fx *f = *state;
    struct kms_audit_device_opts o;
    struct kms_audit_opts ao;
    struct kms_audit *a = NULL;
    struct kms_err err;
    FILE *fp = fopen(f->path, "w");
    fputs("{\"time\":\"x\",\"type\":\"request\"}\n", fp);
    fclose(fp);
    one_device(&o, &ao, f->path);
    assert_int_equal(kms_audit_create(NULL, &ao, &a, &err), -1);
    assert_non_null(strstr(err.msg, "not a kmsd audit record"));
    /* a directory is not a log file either */
    snprintf(o.path, sizeof(o.path), "%s", f->dir);
    assert_int_equal(kms_audit_create(NULL, &ao, &a, &err), -1);
    /* nor are two devices on one file */
    struct kms_audit_device_opts two[2];
    kms_audit_device_opts_default(&two[0]);
    kms_audit_device_opts_default(&two[1]);
    snprintf(two[0].path, sizeof(two[0].path), "%s/x.log", f->dir);
    snprintf(two[1].path, sizeof(two[1].path), "%s/x.log", f->dir);
    snprintf(two[1].name, sizeof(two[1].name), "second");
    ao.devices = two;
    ao.ndevices = 2;
    assert_int_equal(kms_audit_create(NULL, &ao, &a, &err), -1);
}

static void test_file_mode(void **state)
{
    struct fx *f = *state;
    struct stat st;
    struct kms_audit_device_opts o;
    struct kms_audit_opts ao;
    struct kms_audit *a = NULL;
    struct kms_err err;
    kms_audit_device_opts_default(&o);
    snprintf(o.path, sizeof(o.path), "%s", f->path);
    o.mode = 0750; /* exec bits are never set */
    memset(&ao, 0, sizeof(ao));
    ao.devices = &o;
    ao.ndevices = 1;
    assert_int_equal(kms_audit_create(NULL, &ao, &a, &err), 0);
    kms_audit_destroy(&a);
    assert_int_equal(stat(f->path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0640);
    chmod(f->path, 0644);
    o.mode = 0; /* keep */
    assert_int_equal(kms_audit_create(NULL, &ao, &a, &err), 0);
    kms_audit_destroy(&a);
    assert_int_equal(stat(f->path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0644);
}

/* A full disk, simulated with RLIMIT_FSIZE: the write fails whole, nothing torn stays. */
static void test_full_disk_fails_closed(void **state)
{
    struct fx *f = *state;
    struct rlimit old, lim;
    struct kms_audit *a = open_broker(NULL, f->path, KMS_AUDIT_FSYNC_BATCH);
    struct stat st;

    assert_int_equal(log_pair(a, 1), 0);
    assert_int_equal(stat(f->path, &st), 0);
    signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = (rlim_t)st.st_size + 300; /* room for part of one line */
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    assert_int_equal(log_pair(a, 2), -1);
    assert_int_equal(log_pair(a, 3), -1);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    struct stat st2;
    assert_int_equal(stat(f->path, &st2), 0);
    assert_int_equal(st2.st_size, st.st_size); /* cut back: no torn line */
    assert_intact(f->path, 1, 2);
    /* space again: the chain resumes where the disk left it */
    assert_int_equal(log_pair(a, 4), 0);
    kms_audit_destroy(&a);
    assert_intact(f->path, 1, 4);
}

static void test_deleted_file_recreated(void **state)
{
    struct fx *f = *state;
    struct kms_audit *a = open_broker(NULL, f->path, KMS_AUDIT_FSYNC_BATCH);
    assert_int_equal(log_pair(a, 1), 0);
    assert_int_equal(unlink(f->path), 0);
    assert_int_equal(log_pair(a, 2), 0);
    kms_audit_destroy(&a);
    assert_int_equal(count_lines(f->path), 2);
    assert_intact(f->path, 3, 4);
}

/* A broker with the fixture's file and a second device "backup" writing to p2. */
static struct kms_audit *open_two(const struct fx *f, const char *p2, int64_t timeout_ms)
{
    struct kms_audit_device_opts o[2];
    struct kms_audit_opts ao;
    struct kms_audit *a = NULL;
    struct kms_err err;
    kms_audit_device_opts_default(&o[0]);
    kms_audit_device_opts_default(&o[1]);
    snprintf(o[0].path, sizeof(o[0].path), "%s", f->path);
    snprintf(o[1].name, sizeof(o[1].name), "backup");
    snprintf(o[1].path, sizeof(o[1].path), "%s", p2);
    memset(&ao, 0, sizeof(ao));
    ao.devices = o;
    ao.ndevices = 2;
    ao.timeout_ms = timeout_ms;
    assert_int_equal(kms_audit_create(NULL, &ao, &a, &err), 0);
    assert_int_equal(kms_audit_ndevices(a), 2);
    return a;
}

static void test_two_devices_one_broken(void **state)
{
    struct fx *f = *state;
    struct kms_err err;
    char sub[160], p2[200];

    snprintf(sub, sizeof(sub), "%s/sub", f->dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    snprintf(p2, sizeof(p2), "%s/b.log", sub);
    struct kms_audit *a = open_two(f, p2, 0);
    assert_int_equal(log_pair(a, 1), 0);
    /* each device hashes under its own salt */
    char h1[KMS_AUDIT_HMAC_LEN + 1], h2[KMS_AUDIT_HMAC_LEN + 1];
    assert_int_equal(kms_audit_hash_input(a, "file", TOKEN, strlen(TOKEN), h1), 0);
    assert_int_equal(kms_audit_hash_input(a, "backup", TOKEN, strlen(TOKEN), h2), 0);
    assert_string_not_equal(h1, h2);
    /* break the second device: its directory goes away and it must reopen */
    unlink(p2);
    rmdir(sub);
    assert_int_equal(kms_audit_reopen(a, &err), -1);
    assert_int_equal(log_pair(a, 2), 0); /* one device is enough */
    assert_int_equal(count_lines(f->path), 4);
    /* both broken: refused */
    char moved[200];
    snprintf(moved, sizeof(moved), "%s.moved", f->dir);
    assert_int_equal(rename(f->dir, moved), 0);
    assert_int_equal(kms_audit_reopen(a, &err), -1);
    assert_int_equal(log_pair(a, 3), -1);
    assert_int_equal(rename(moved, f->dir), 0);
    /* and a reopen heals it without a SIGHUP: the next write retries the open */
    assert_int_equal(log_pair(a, 4), 0);
    kms_audit_destroy(&a);
    assert_intact(f->path, 1, 6);
}

#ifdef KMS_TEST_HOOKS
/* Two devices, f->path and the backup p2 (a 200 ms wait), with the backup's writer waiting
 * before its fsync while <hooks>/backup/hold exists (created here) and <held> telling it
 * waits. */
static struct kms_audit *open_backup_held(struct fx *f, char hold[240], char held[240],
                                          char p2[200])
{
    char hooks[160], dev[200];
    snprintf(hooks, 160, "%s/hooks", f->dir);
    snprintf(dev, sizeof(dev), "%s/backup", hooks);
    snprintf(hold, 240, "%s/hold", dev);
    snprintf(held, 240, "%s/held", dev);
    snprintf(p2, 200, "%s/b.log", f->dir);
    assert_int_equal(mkdir(hooks, 0700), 0);
    assert_int_equal(mkdir(dev, 0700), 0);
    assert_int_equal(setenv("KMS_TEST_AUDIT_HOOKS", hooks, 1), 0);
    struct kms_audit *a = open_two(f, p2, 200);
    assert_int_equal(unsetenv("KMS_TEST_AUDIT_HOOKS"), 0);
    FILE *fp = fopen(hold, "w");
    assert_non_null(fp);
    fclose(fp);
    return a;
}

static void test_two_devices_one_hung(void **state)
{
    struct fx *f = *state;
    char hold[240], held[240], p2[200];
    struct kms_audit *a = open_backup_held(f, hold, held, p2);
    /* the first device has both lines; the hung one holds the response line's fsync: the
     * wait ends at the timeout, and the record counts (one device is enough) */
    assert_int_equal(log_pair(a, 1), 0);
    assert_int_equal(access(held, F_OK), 0);
    assert_int_equal(log_pair(a, 2), 0);
    assert_int_equal(count_lines(f->path), 4);
    /* the hung device comes back and writes what it was given, in order */
    assert_int_equal(unlink(hold), 0);
    kms_audit_destroy(&a);
    assert_intact(f->path, 1, 4);
    assert_intact(p2, 1, 4);
}

static void *unhold_later(void *arg)
{
    usleep(300 * 1000); /* destroy is waiting for the writer by then (either way the test holds) */
    (void)unlink(arg);
    return NULL;
}

/* Closing waits up to 10 s for a writer still draining, on the monotonic clock: the wall
 * clock stepped forward an hour (here: read an hour behind the deadline the kernel waits for)
 * made the wait end at once, and the device was abandoned with its lines unwritten. */
static void test_close_waits_for_the_writer_whatever_the_wall_clock(void **state)
{
    struct fx *f = *state;
    char hold[240], held[240], p2[200];
    struct kms_audit *a = open_backup_held(f, hold, held, p2);
    /* the backup device's writer holds its first fsync; the records count from the first,
     * and the second waits in the backup's queue */
    assert_int_equal(log_pair(a, 1), 0);
    assert_int_equal(access(held, F_OK), 0);
    assert_int_equal(log_pair(a, 2), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, unhold_later, hold), 0);
    atomic_store(&realtime_skew, -3600);
    kms_audit_destroy(&a);
    atomic_store(&realtime_skew, 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    /* the writer was waited for: the queued lines reached the backup file */
    assert_intact(f->path, 1, 4);
    assert_intact(p2, 1, 4);
}
#endif

#ifdef KMS_TEST_HOOKS
/* A batch-mode broker whose writer gathers for at most gather_us (the <hooks>/gather_us hook). */
static struct kms_audit *open_gathering(struct fx *f, const char *gather_us)
{
    char hooks[160], path[200];
    snprintf(hooks, sizeof(hooks), "%s/hooks", f->dir);
    snprintf(path, sizeof(path), "%s/gather_us", hooks);
    assert_int_equal(mkdir(hooks, 0700), 0);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(gather_us, fp);
    fclose(fp);
    assert_int_equal(setenv("KMS_TEST_AUDIT_HOOKS", hooks, 1), 0);
    struct kms_audit *a = open_broker(NULL, f->path, KMS_AUDIT_FSYNC_BATCH);
    assert_int_equal(unsetenv("KMS_TEST_AUDIT_HOOKS"), 0);
    return a;
}

#endif

/* A thread that defers its writer wake-ups (an event-loop worker): the first line arms it
 * once, the writer is woken by kms_audit_wake_deferred, and a blocking wait on that thread wakes
 * it itself (else it would wait out audit_timeout, 5 s here, and fail). */
static void count_arm(void *arg)
{
    (*(int *)arg)++;
}

struct flag {
    pthread_mutex_t m;
    bool set;
};

static void set_flag(void *arg)
{
    struct flag *fl = arg;
    pthread_mutex_lock(&fl->m);
    fl->set = true;
    pthread_mutex_unlock(&fl->m);
}

static bool flag_within(struct flag *fl, int ms)
{
    for (int i = 0; i < ms; i++) {
        pthread_mutex_lock(&fl->m);
        bool set = fl->set;
        pthread_mutex_unlock(&fl->m);
        if (set) {
            return true;
        }
        usleep(1000);
    }
    return false;
}

static void test_deferred_wakeups(void **state)
{
    struct fx *f = *state;
    struct kms_err err;
    int armed = 0;
    struct kms_audit *a = open_broker(NULL, f->path, KMS_AUDIT_FSYNC_BATCH);
    kms_audit_defer_wakeups(count_arm, &armed);

    json_t *auth = json_pack("{s:s}", "client_token", TOKEN);
    json_t *req = json_pack("{s:s, s:s}", "id", "req-1", "path", "transit/encrypt/k");
    struct kms_audit_rec *r1 = NULL, *r2 = NULL;
    assert_int_equal(kms_audit_rec_create(a, auth, req, &r1), 0);
    assert_int_equal(kms_audit_rec_create(a, auth, req, &r2), 0);
    assert_int_equal(kms_audit_rec_post(r1, "request", false, NULL, NULL, NULL, &err, NULL, 0), 0);
    assert_int_equal(armed, 1);
    assert_int_equal(kms_audit_rec_post(r2, "request", false, NULL, NULL, NULL, &err, NULL, 0), 0);
    assert_int_equal(kms_audit_rec_post(r1, "response", true, NULL, NULL, NULL, &err, NULL, 0), 0);
    assert_int_equal(armed, 1); /* armed once per pass, however many lines */

    struct flag fl = {PTHREAD_MUTEX_INITIALIZER, false};
    int n = kms_audit_rec_notify(r1, set_flag, &fl);
    assert_true(n == 0 || n == 1);
    if (n == 0) {
        fl.set = true; /* a spurious wake-up of the writer got there first */
    }
    kms_audit_wake_deferred(); /* the end of the pass */
    assert_true(flag_within(&fl, 5000));
    assert_int_equal(kms_audit_rec_status(r1, &err, NULL, 0), 0);
    kms_audit_rec_destroy(&r1);

    /* a blocking wait on the deferring thread wakes the writer first */
    assert_int_equal(kms_audit_rec_post(r2, "response", true, NULL, NULL, NULL, &err, NULL, 0), 0);
    assert_int_equal(armed, 2);
    assert_int_equal(kms_audit_rec_wait(r2, &err, NULL, 0), 0);
    assert_int_equal(kms_audit_rec_status(r2, &err, NULL, 0), 0);
    kms_audit_rec_destroy(&r2);
    assert_int_equal(log_pair(a, 3), 0);
    assert_int_equal(armed, 4); /* its request line, then its response line */

    /* ending the deferral wakes what it still owed; after it, lines wake the writer at once */
    assert_int_equal(kms_audit_rec_create(a, auth, req, &r1), 0);
    assert_int_equal(kms_audit_rec_post(r1, "request", true, NULL, NULL, NULL, &err, NULL, 0), 0);
    assert_int_equal(armed, 5);
    fl.set = false;
    n = kms_audit_rec_notify(r1, set_flag, &fl);
    if (n == 0) {
        fl.set = true;
    }
    kms_audit_defer_wakeups(NULL, NULL);
    assert_true(flag_within(&fl, 5000));
    kms_audit_rec_destroy(&r1);
    assert_int_equal(log_pair(a, 4), 0);
    assert_int_equal(armed, 5);
    json_decref(auth);
    json_decref(req);
    kms_audit_destroy(&a);
    assert_int_equal(count_lines(f->path), 9);
    assert_intact(f->path, 1, 9);
}

/* A line another thread adds to the batch whose wake-up a deferring worker still owes: that
 * thread's blocking wait (the KMSKey controller, with its schedule lock held) must not depend on
 * the worker's pass ending, or a worker that blocks on the same lock in that pass (a KMSKey
 * write) stalls both until audit_timeout and the controller's operation fails. */
static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct joiner {
    struct kms_audit *a;
    pthread_mutex_t *lock; /* held across the post and the wait, as kmskey_tick holds s->lock */
    struct flag *holds;
    int rc;
    int64_t ms;
};

static void *join_deferred_batch(void *arg)
{
    struct joiner *j = arg;
    struct kms_err err;
    json_t *auth = json_pack("{s:s}", "client_token", TOKEN);
    json_t *req = json_pack("{s:s, s:s}", "id", "req-c", "path", "kms/keys/p/k");
    struct kms_audit_rec *r = NULL;
    pthread_mutex_lock(j->lock);
    set_flag(j->holds);
    int64_t t0 = now_ms();
    j->rc = kms_audit_rec_create(j->a, auth, req, &r) != 0
                ? -1
                : kms_audit_rec_log(r, "request", true, NULL, NULL, NULL, &err, NULL, 0);
    j->ms = now_ms() - t0;
    pthread_mutex_unlock(j->lock);
    kms_audit_rec_destroy(&r);
    json_decref(auth);
    json_decref(req);
    return NULL;
}

static void test_deferred_batch_joined_by_a_waiter(void **state)
{
    struct fx *f = *state;
    struct kms_err err;
    int armed = 0;
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    struct flag holds = {PTHREAD_MUTEX_INITIALIZER, false};
    struct joiner j = {NULL, &lock, &holds, -1, 0};
    pthread_t t;
#ifdef KMS_TEST_HOOKS
    /* a writer that would gather for 30 s: the waiter's line is urgent and ends the wait */
    struct kms_audit *a = open_gathering(f, "30000000");
#else
    struct kms_audit *a = open_broker(NULL, f->path, KMS_AUDIT_FSYNC_BATCH);
#endif
    j.a = a;
    /* a writer that has started and gone idle (one that has not yet looked at its queue would
     * take the worker's batch without a wake-up) */
    assert_int_equal(log_pair(a, 1), 0);
    usleep(50 * 1000);
    kms_audit_defer_wakeups(count_arm, &armed);

    json_t *auth = json_pack("{s:s}", "client_token", TOKEN);
    json_t *req = json_pack("{s:s, s:s}", "id", "req-w", "path", "transit/encrypt/k");
    struct kms_audit_rec *r = NULL;
    assert_int_equal(kms_audit_rec_create(a, auth, req, &r), 0);
    assert_int_equal(kms_audit_rec_post(r, "request", false, NULL, NULL, NULL, &err, NULL, 0), 0);
    assert_int_equal(armed, 1); /* the writer's wake-up is owed until the pass ends */

    assert_int_equal(pthread_create(&t, NULL, join_deferred_batch, &j), 0);
    assert_true(flag_within(&holds, 5000));
    pthread_mutex_lock(&lock); /* the worker's pass blocks on the lock the waiter holds */
    pthread_mutex_unlock(&lock);
    kms_audit_wake_deferred(); /* the end of the pass */
    pthread_join(t, NULL);
    kms_audit_defer_wakeups(NULL, NULL);
    assert_int_equal(j.rc, 0);
    assert_true(j.ms < 4000);

    assert_int_equal(kms_audit_rec_post(r, "response", true, NULL, NULL, NULL, &err, NULL, 0), 0);
    assert_int_equal(kms_audit_rec_wait(r, &err, NULL, 0), 0);
    kms_audit_rec_destroy(&r);
    json_decref(auth);
    json_decref(req);
    kms_audit_destroy(&a);
    assert_int_equal(count_lines(f->path), 5);
    assert_intact(f->path, 1, 5);
}

/* Two workers: the second adds its line to the batch whose wake-up the first still owes, and
 * its pass ends. Its line is written then, not when the first worker's pass ends (a slow pass
 * there, a key generation or a storage round trip, would hold every other worker's requests). */
struct second_worker {
    struct kms_audit *a;
    int armed;
    struct flag written;
};

static void *post_as_second_worker(void *arg)
{
    struct second_worker *w = arg;
    struct kms_err err;
    json_t *auth = json_pack("{s:s}", "client_token", TOKEN);
    json_t *req = json_pack("{s:s, s:s}", "id", "req-2", "path", "transit/encrypt/k");
    struct kms_audit_rec *r = NULL;
    kms_audit_defer_wakeups(count_arm, &w->armed);
    if (kms_audit_rec_create(w->a, auth, req, &r) == 0 &&
        kms_audit_rec_post(r, "request", true, NULL, NULL, NULL, &err, NULL, 0) == 0 &&
        kms_audit_rec_notify(r, set_flag, &w->written) == 0) {
        set_flag(&w->written);
    }
    kms_audit_wake_deferred(); /* the end of its pass */
    (void)flag_within(&w->written, 4000);
    kms_audit_defer_wakeups(NULL, NULL);
    kms_audit_rec_destroy(&r);
    json_decref(auth);
    json_decref(req);
    return NULL;
}

static void test_deferred_batch_joined_by_a_worker(void **state)
{
    struct fx *f = *state;
    struct kms_err err;
    int armed = 0;
    struct second_worker w;
    pthread_t t;
    memset(&w, 0, sizeof(w));
    pthread_mutex_init(&w.written.m, NULL);
    struct kms_audit *a = open_broker(NULL, f->path, KMS_AUDIT_FSYNC_BATCH);
    w.a = a;
    assert_int_equal(log_pair(a, 1), 0); /* a started writer, gone idle */
    usleep(50 * 1000);
    kms_audit_defer_wakeups(count_arm, &armed);

    json_t *auth = json_pack("{s:s}", "client_token", TOKEN);
    json_t *req = json_pack("{s:s, s:s}", "id", "req-1", "path", "transit/encrypt/k");
    struct kms_audit_rec *r = NULL;
    assert_int_equal(kms_audit_rec_create(a, auth, req, &r), 0);
    assert_int_equal(kms_audit_rec_post(r, "request", false, NULL, NULL, NULL, &err, NULL, 0), 0);
    assert_int_equal(armed, 1);

    /* this worker's pass goes on meanwhile */
    assert_int_equal(pthread_create(&t, NULL, post_as_second_worker, &w), 0);
    pthread_join(t, NULL);
    bool written = flag_within(&w.written, 1);
    kms_audit_wake_deferred();
    kms_audit_defer_wakeups(NULL, NULL);
    assert_true(written);

    assert_int_equal(kms_audit_rec_post(r, "response", true, NULL, NULL, NULL, &err, NULL, 0), 0);
    assert_int_equal(kms_audit_rec_wait(r, &err, NULL, 0), 0);
    kms_audit_rec_destroy(&r);
    json_decref(auth);
    json_decref(req);
    kms_audit_destroy(&a);
    assert_int_equal(count_lines(f->path), 5);
    assert_intact(f->path, 1, 5);
}

#ifdef KMS_TEST_HOOKS
/* The second worker's pass: a durable request line, a notification when it is written, the
 * end of the pass (which signals the writer). Its record is kept for the test to destroy. */
struct passer {
    struct kms_audit *a;
    int armed;
    struct flag written;
    struct kms_audit_rec *r;
    int rc;
};

static void *one_pass(void *arg)
{
    struct passer *p = arg;
    struct kms_err err;
    json_t *auth = json_pack("{s:s}", "client_token", TOKEN);
    json_t *req = json_pack("{s:s, s:s}", "id", "req-2", "path", "transit/encrypt/k");
    kms_audit_defer_wakeups(count_arm, &p->armed);
    p->rc = kms_audit_rec_create(p->a, auth, req, &p->r) != 0 ||
                    kms_audit_rec_post(p->r, "request", true, NULL, NULL, NULL, &err, NULL, 0) != 0
                ? -1
                : 0;
    if (p->rc == 0 && kms_audit_rec_notify(p->r, set_flag, &p->written) == 0) {
        set_flag(&p->written);
    }
    kms_audit_wake_deferred(); /* the end of its pass */
    kms_audit_defer_wakeups(NULL, NULL);
    json_decref(auth);
    json_decref(req);
    return NULL;
}

/* Two worker passes on a broker gathering for at most gather_us: this thread's pass queues a
 * request line and goes on (its pass is not over when this returns); a second worker's pass
 * queues a durable request line and ends (p: its record and a flag set once it is written). */
struct two_passes {
    struct kms_audit *a;
    int armed;
    json_t *auth, *req;
    struct kms_audit_rec *r;
    struct passer p;
};

static void start_two_passes(struct fx *f, const char *gather_us, struct two_passes *tp)
{
    struct kms_err err;
    memset(tp, 0, sizeof(*tp));
    tp->a = open_gathering(f, gather_us);
    assert_int_equal(log_pair(tp->a, 1), 0); /* a started writer (a blocking caller) */
    kms_audit_defer_wakeups(count_arm, &tp->armed);
    tp->auth = json_pack("{s:s}", "client_token", TOKEN);
    tp->req = json_pack("{s:s, s:s}", "id", "req-1", "path", "transit/encrypt/k");
    assert_int_equal(kms_audit_rec_create(tp->a, tp->auth, tp->req, &tp->r), 0);
    assert_int_equal(kms_audit_rec_post(tp->r, "request", false, NULL, NULL, NULL, &err, NULL, 0),
                     0);
    pthread_mutex_init(&tp->p.written.m, NULL);
    tp->p.a = tp->a;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, one_pass, &tp->p), 0);
    pthread_join(t, NULL);
    assert_int_equal(tp->p.rc, 0);
}

/* Both records' five lines (with log_pair's) are in the file, chained. */
static void finish_two_passes(struct fx *f, struct two_passes *tp)
{
    kms_audit_defer_wakeups(NULL, NULL);
    kms_audit_rec_destroy(&tp->r);
    kms_audit_rec_destroy(&tp->p.r);
    json_decref(tp->auth);
    json_decref(tp->req);
    kms_audit_destroy(&tp->a);
    assert_int_equal(count_lines(f->path), 5);
    assert_intact(f->path, 1, 5);
}

/* Group commit waits for a worker pass that has queued lines and is still running: a second
 * worker's line, whose pass has ended, is not synced in a group of its own but with the lines
 * the first pass adds before it ends: one fdatasync for the three lines. (Before, the second
 * pass's end started a group at once, and the first pass's later line took a second one.) The
 * gathering bound is 30 s here, so only the end of the first pass can end the wait. */
static void test_group_waits_for_a_running_pass(void **state)
{
    struct fx *f = *state;
    struct kms_err err;
    struct two_passes tp;
    struct kms_audit_stats st0, st1;
    start_two_passes(f, "30000000", &tp);
    kms_audit_stats_get(tp.a, &st0);
    /* the first pass goes on: nothing is synced meanwhile */
    assert_false(flag_within(&tp.p.written, 300));
    kms_audit_stats_get(tp.a, &st1);
    assert_int_equal(st1.fsyncs, st0.fsyncs);

    struct flag fl = {PTHREAD_MUTEX_INITIALIZER, false};
    assert_int_equal(kms_audit_rec_post(tp.r, "response", true, NULL, NULL, NULL, &err, NULL, 0),
                     0);
    if (kms_audit_rec_notify(tp.r, set_flag, &fl) == 0) {
        set_flag(&fl);
    }
    kms_audit_wake_deferred(); /* the end of the first pass */
    assert_true(flag_within(&fl, 10000));
    assert_true(flag_within(&tp.p.written, 10000));
    kms_audit_stats_get(tp.a, &st1);
    assert_int_equal(st1.fsyncs, st0.fsyncs + 1);
    assert_int_equal(kms_audit_rec_status(tp.r, &err, NULL, 0), 0);
    assert_int_equal(kms_audit_rec_status(tp.p.r, &err, NULL, 0), 0);
    finish_two_passes(f, &tp);
}

/* The wait is bounded: a first pass that never ends (a slow key generation) holds another
 * worker's line for gather_us (50 ms here), not longer. */
static void test_group_gathering_is_bounded(void **state)
{
    struct fx *f = *state;
    struct kms_err err;
    struct two_passes tp;
    start_two_passes(f, "50000", &tp);
    assert_true(flag_within(&tp.p.written, 10000)); /* while the first pass still runs */
    assert_int_equal(kms_audit_rec_status(tp.p.r, &err, NULL, 0), 0);

    kms_audit_wake_deferred();
    assert_int_equal(kms_audit_rec_post(tp.r, "response", true, NULL, NULL, NULL, &err, NULL, 0),
                     0);
    assert_int_equal(kms_audit_rec_wait(tp.r, &err, NULL, 0), 0);
    finish_two_passes(f, &tp);
}
#endif

static void test_storage_keeps_salt_and_head(void **state)
{
    struct fx *f = *state;
    struct kms_storage_opts so = {.map_size = 0, .nosync = true, .create = true};
    struct kms_storage *st = NULL;
    struct kms_err err;
    uint8_t seal[32] = {9, 8, 7};
    char store[160], rotated[200];
    char h1[KMS_AUDIT_HMAC_LEN + 1], h2[KMS_AUDIT_HMAC_LEN + 1];

    snprintf(store, sizeof(store), "%s/store", f->dir);
    assert_int_equal(kms_storage_open(store, seal, &so, &st, &err), 0);
    struct kms_audit *a = open_broker(st, f->path, KMS_AUDIT_FSYNC_BATCH);
    assert_int_equal(kms_audit_hash_input(a, "file", "x", 1, h1), 0);
    assert_int_equal(log_pair(a, 1), 0);
    kms_audit_destroy(&a);
    /* rotated while the server was down: the new file continues the chain from storage */
    snprintf(rotated, sizeof(rotated), "%s.1", f->path);
    assert_int_equal(rename(f->path, rotated), 0);
    a = open_broker(st, f->path, KMS_AUDIT_FSYNC_BATCH);
    assert_int_equal(kms_audit_hash_input(a, "file", "x", 1, h2), 0);
    assert_string_equal(h1, h2); /* same salt: old hashes stay reproducible */
    assert_int_equal(log_pair(a, 2), 0);
    kms_audit_destroy(&a);
    kms_storage_close(&st);
    const char *both[] = {rotated, f->path};
    struct kms_audit_verify_result r;
    assert_int_equal(verify(both, 2, &r), 0);
    assert_int_equal(r.lines, 4);
}

/* A device that never wrote a line stores the genesis as its head. Its new file must start a
 * chain of its own, not continue another chain that starts at the genesis too from a file next
 * to it (an older store's log, another replica's) as one rotated after a crash is continued. */
static void test_genesis_head_follows_no_other_chain(void **state)
{
    struct fx *f = *state;
    struct kms_storage_opts so = {.map_size = 0, .nosync = true, .create = true};
    struct kms_storage *st = NULL;
    struct kms_err err;
    uint8_t seal[32] = {9, 8, 7};
    char store[160], other[200], sibling[200];

    snprintf(store, sizeof(store), "%s/store", f->dir);
    snprintf(other, sizeof(other), "%s/other.log", f->dir);
    snprintf(sibling, sizeof(sibling), "%s.old", f->path);
    assert_int_equal(kms_storage_open(store, seal, &so, &st, &err), 0);
    struct kms_audit *a = open_broker(st, f->path, KMS_AUDIT_FSYNC_BATCH);
    kms_audit_destroy(&a); /* no line: the stored head is the genesis */
    a = open_broker(NULL, other, KMS_AUDIT_FSYNC_BATCH);
    assert_int_equal(log_pair(a, 1), 0);
    kms_audit_destroy(&a);
    assert_int_equal(rename(other, sibling), 0);
    a = open_broker(st, f->path, KMS_AUDIT_FSYNC_BATCH);
    assert_int_equal(log_pair(a, 2), 0);
    kms_audit_destroy(&a);
    kms_storage_close(&st);
    assert_intact(f->path, 1, 2);
}

static char logged[2048];

static void capture_log(void *arg, const char *level, const char *msg)
{
    (void)arg;
    snprintf(logged + strlen(logged), sizeof(logged) - strlen(logged), "%s: %s\n", level, msg);
}

/* A file at the audit path that ends without a newline is cut only when the tail begins as a
 * kmsd record: another text file, a key file or foreign bytes after a log stay untouched. */
static void test_foreign_tail_is_refused_untouched(void **state)
{
    struct fx *f = *state;
    struct kms_audit_device_opts o;
    struct kms_audit_opts ao;
    struct kms_audit *a = NULL;
    struct kms_err err;
    one_device(&o, &ao, f->path);
    static const char *const foreign[] = {
        "some other log\nits last line without a newline",
        "8f4c2a7b9e1d3f5a6c8b0d2e4f6a8c0e1b3d5f7a9c2e4b6d8f0a1c3e5b7d9f2a", /* a key file */
    };
    for (size_t i = 0; i < 2; i++) {
        FILE *fp = fopen(f->path, "wb");
        fputs(foreign[i], fp);
        fclose(fp);
        assert_int_equal(kms_audit_create(NULL, &ao, &a, &err), -1);
        assert_non_null(strstr(err.msg, "not a kmsd audit record"));
        char *after = slurp(f->path, NULL);
        assert_string_equal(after, foreign[i]);
        free(after);
    }
    /* a kmsd log with foreign bytes after its last line */
    unlink(f->path);
    a = open_broker(NULL, f->path, KMS_AUDIT_FSYNC_BATCH);
    assert_int_equal(log_pair(a, 1), 0);
    kms_audit_destroy(&a);
    FILE *fp = fopen(f->path, "ab");
    fputs("appended by something else", fp);
    fclose(fp);
    size_t n1, n2;
    char *before = slurp(f->path, &n1);
    assert_int_equal(kms_audit_create(NULL, &ao, &a, &err), -1);
    assert_non_null(strstr(err.msg, "not a kmsd audit record"));
    char *after = slurp(f->path, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(before, after, n1);
    free(before);
    free(after);
}

/* After a power loss a file system can show the file's new size without its data: a tail of
 * zero bytes past the last line (with audit_fsync never, or lines only written). That tail was
 * never acknowledged and is cut like a torn line; it used to stop kmsd from starting. */
static void test_zero_tail_is_cut(void **state)
{
    struct fx *f = *state;
    static const char zeros[4096];
    struct kms_audit *a = open_broker(NULL, f->path, KMS_AUDIT_FSYNC_BATCH);
    assert_int_equal(log_pair(a, 1), 0);
    kms_audit_destroy(&a);
    size_t n1, n2;
    char *before = slurp(f->path, &n1);
    FILE *fp = fopen(f->path, "ab");
    assert_int_equal(fwrite(zeros, 1, sizeof(zeros), fp), sizeof(zeros));
    fclose(fp);
    a = open_broker(NULL, f->path, KMS_AUDIT_FSYNC_BATCH);
    char *after = slurp(f->path, &n2);
    assert_int_equal(n1, n2); /* cut back to the last line, before anything is appended */
    assert_memory_equal(before, after, n1);
    free(before);
    free(after);
    assert_int_equal(log_pair(a, 2), 0);
    kms_audit_destroy(&a);
    assert_intact(f->path, 1, 4);
    /* zeros after a torn line are cut with it; a file of nothing but zeros starts anew */
    fp = fopen(f->path, "ab");
    fputs("{\"time\":\"2026-", fp);
    assert_int_equal(fwrite(zeros, 1, 100, fp), 100);
    fclose(fp);
    a = open_broker(NULL, f->path, KMS_AUDIT_FSYNC_BATCH);
    assert_int_equal(log_pair(a, 3), 0);
    kms_audit_destroy(&a);
    assert_intact(f->path, 1, 6);
    fp = fopen(f->path, "wb");
    assert_int_equal(fwrite(zeros, 1, sizeof(zeros), fp), sizeof(zeros));
    fclose(fp);
    a = open_broker(NULL, f->path, KMS_AUDIT_FSYNC_BATCH);
    assert_int_equal(log_pair(a, 4), 0);
    kms_audit_destroy(&a);
    assert_intact(f->path, 1, 2);
}

/* SIGHUP's reopen appends only to an empty file or to the device's own (unrotated) log: not
 * to a foreign file, nor to an older copy of the log (another chain head). */
static void test_reopen_refuses_another_chain(void **state)
{
    struct fx *f = *state;
    struct kms_err err;
    char old[200], rotated[200];
    snprintf(old, sizeof(old), "%s.old", f->path);
    snprintf(rotated, sizeof(rotated), "%s.1", f->path);
    struct kms_audit *a = open_broker(NULL, f->path, KMS_AUDIT_FSYNC_BATCH);
    assert_int_equal(log_pair(a, 1), 0);
    size_t n;
    char *copy = slurp(f->path, &n);
    FILE *fp = fopen(old, "wb");
    assert_int_equal(fwrite(copy, 1, n, fp), n);
    fclose(fp);
    free(copy);
    assert_int_equal(log_pair(a, 2), 0);
    /* the same file kept (a SIGHUP for the TLS certificate): goes on */
    assert_int_equal(kms_audit_reopen(a, &err), 0);
    assert_int_equal(log_pair(a, 3), 0);
    /* rotated, and a foreign file put at the path: refused, the file untouched */
    assert_int_equal(rename(f->path, rotated), 0);
    fp = fopen(f->path, "wb");
    fputs("foreign\n", fp);
    fclose(fp);
    assert_int_equal(kms_audit_reopen(a, &err), -1);
    assert_non_null(strstr(err.msg, "not a kmsd audit record"));
    assert_int_equal(log_pair(a, 4), -1); /* fail closed; the retried open refuses it too */
    char *text = slurp(f->path, NULL);
    assert_string_equal(text, "foreign\n");
    free(text);
    /* an older copy of the log (it ends at seq 2, the device at seq 6): refused as well */
    assert_int_equal(rename(old, f->path), 0);
    size_t n1;
    char *before = slurp(f->path, &n1);
    assert_int_equal(kms_audit_reopen(a, &err), -1);
    assert_non_null(strstr(err.msg, "is not this device's log"));
    assert_int_equal(log_pair(a, 5), -1);
    size_t n2;
    char *after = slurp(f->path, &n2);
    assert_int_equal(n1, n2);
    free(before);
    free(after);
    /* moved away: a new file continues the chain */
    unlink(f->path);
    assert_int_equal(kms_audit_reopen(a, &err), 0);
    assert_int_equal(log_pair(a, 6), 0);
    kms_audit_destroy(&a);
    const char *both[] = {rotated, f->path};
    struct kms_audit_verify_result r;
    assert_int_equal(verify(both, 2, &r), 0);
    assert_int_equal(r.lines, 8);
}

/* One writer per file: a second broker (a second kmsd: its own store, the same audit file)
 * cannot open the file while the first holds it, whatever the name it is given; readers are
 * not held up; the lock follows the file across a rotation and goes with the broker. */
static void test_one_writer_per_file(void **state)
{
    struct fx *f = *state;
    struct kms_audit_device_opts o;
    struct kms_audit_opts ao;
    struct kms_audit *b = NULL;
    struct kms_err err;
    char other[200], rotated[200], linked[200];
    struct kms_audit *a = open_broker(NULL, f->path, KMS_AUDIT_FSYNC_BATCH);
    assert_int_equal(log_pair(a, 1), 0);

    one_device(&o, &ao, f->path);
    assert_int_equal(kms_audit_create(NULL, &ao, &b, &err), -1);
    assert_null(b);
    char want[300];
    snprintf(want, sizeof(want),
             "audit device file: another kmsd is writing the audit file %s (another process "
             "holds its lock): each server needs its own audit file",
             f->path);
    assert_string_equal(err.msg, want);
    /* under another name (a hard link): the same inode, the same lock */
    snprintf(linked, sizeof(linked), "%s/linked.log", f->dir);
    assert_int_equal(link(f->path, linked), 0);
    one_device(&o, &ao, linked);
    assert_int_equal(kms_audit_create(NULL, &ao, &b, &err), -1);
    assert_non_null(strstr(err.msg, "another kmsd is writing the audit file"));
    assert_int_equal(unlink(linked), 0);
    /* nothing was changed by the refused opens; the first goes on, and a reader reads */
    assert_int_equal(log_pair(a, 2), 0);
    assert_intact(f->path, 1, 4);
    /* a SIGHUP that rotated nothing keeps the lock (the same inode opened again) */
    assert_int_equal(kms_audit_reopen(a, &err), 0);
    assert_int_equal(log_pair(a, 3), 0);
    one_device(&o, &ao, f->path);
    assert_int_equal(kms_audit_create(NULL, &ao, &b, &err), -1);
    /* rotated: the lock moves to the new file, the renamed one is free */
    snprintf(rotated, sizeof(rotated), "%s.1", f->path);
    assert_int_equal(rename(f->path, rotated), 0);
    assert_int_equal(kms_audit_reopen(a, &err), 0);
    assert_int_equal(log_pair(a, 4), 0);
    assert_int_equal(kms_audit_create(NULL, &ao, &b, &err), -1);
    assert_non_null(strstr(err.msg, f->path));
    one_device(&o, &ao, rotated);
    assert_int_equal(kms_audit_create(NULL, &ao, &b, &err), 0);
    kms_audit_destroy(&b);
    /* a second device of one broker on the same file by another name: said so */
    struct kms_audit_device_opts two[2];
    kms_audit_device_opts_default(&two[0]);
    kms_audit_device_opts_default(&two[1]);
    snprintf(other, sizeof(other), "%s/./other.log", f->dir);
    snprintf(two[0].path, sizeof(two[0].path), "%s/other.log", f->dir);
    snprintf(two[1].name, sizeof(two[1].name), "backup");
    snprintf(two[1].path, sizeof(two[1].path), "%s", other);
    ao.devices = two;
    ao.ndevices = 2;
    assert_int_equal(kms_audit_create(NULL, &ao, &b, &err), -1);
    assert_non_null(strstr(err.msg, "audit devices file and backup write the same file"));
    /* the first broker gone, its file is free */
    kms_audit_destroy(&a);
    one_device(&o, &ao, f->path);
    assert_int_equal(kms_audit_create(NULL, &ao, &b, &err), 0);
    kms_audit_destroy(&b);
    assert_intact(f->path, 7, 8);
}

static pthread_mutex_t logged_mu = PTHREAD_MUTEX_INITIALIZER;
static char logged[2048];

static void log_capture(void *arg, const char *level, const char *msg)
{
    (void)arg;
    pthread_mutex_lock(&logged_mu);
    size_t n = strlen(logged);
    snprintf(logged + n, sizeof(logged) - n, "%s: %s\n", level, msg);
    pthread_mutex_unlock(&logged_mu);
}

/* Set (on) or clear the inode flag `flag` (FS_APPEND_FL, FS_IMMUTABLE_FL) of path; -1 when
 * the file system or the user cannot (not root, no such flag). */
static int set_inode_flag(const char *path, int flag, bool on)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int flags = 0;
    int rc = -1;
    if (fd >= 0 && ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0) {
        flags = on ? flags | flag : flags & ~flag;
        rc = ioctl(fd, FS_IOC_SETFLAGS, &flags);
    }
    if (fd >= 0) {
        close(fd);
    }
    return rc;
}

static void assert_logged(const char *want)
{
    pthread_mutex_lock(&logged_mu);
    if (strstr(logged, want) == NULL) {
        fail_msg("want\n%s\nin the log:\n%s", want, logged);
    }
    pthread_mutex_unlock(&logged_mu);
}

/* A write that fails into a file that cannot be cut back breaks the device (fail-closed, as
 * before), and the server log says what failed, on which file, why, and what the file holds:
 * part of a batch in an append-only file (chattr +a: the write goes in, the cut is refused);
 * nothing in an immutable one (+i: the write is refused, then the cut). Needs root and a file
 * system with these flags (skipped otherwise). */
static void test_cut_failure_says_why(void **state)
{
    struct fx *f = *state;
    struct kms_audit_device_opts o;
    struct kms_audit_opts ao;
    struct kms_audit *a = NULL;
    struct kms_err err;
    struct rlimit old, lim;
    struct stat st;
    char want[700];

    one_device(&o, &ao, f->path);
    ao.log = log_capture;
    logged[0] = '\0';
    assert_int_equal(kms_audit_create(NULL, &ao, &a, &err), 0);
    assert_int_equal(log_pair(a, 1), 0);
    if (set_inode_flag(f->path, FS_APPEND_FL, true) != 0) {
        kms_audit_destroy(&a);
        skip(); /* not root, or no append-only flag on this file system */
    }
    assert_int_equal(stat(f->path, &st), 0);
    signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = (rlim_t)st.st_size + 300; /* room for part of one line */
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int r2 = log_pair(a, 2);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    int r3 = log_pair(a, 3); /* room again, still broken */
    assert_int_equal(set_inode_flag(f->path, FS_APPEND_FL, false), 0);
    kms_audit_destroy(&a);
    assert_int_equal(r2, -1);
    assert_int_equal(r3, -1);
    snprintf(want, sizeof(want),
             "error: audit device file is unusable until it is reopened (SIGHUP) or kmsd "
             "restarts: cannot write %s: File too large; cutting the file back to %lld bytes "
             "failed: Operation not permitted (an append-only or immutable file? see lsattr); "
             "the file now ends in 300 bytes of a torn line\n",
             f->path, (long long)st.st_size);
    assert_logged(want);

    /* immutable: nothing goes in, the device is broken all the same until a reopen */
    assert_int_equal(unlink(f->path), 0);
    logged[0] = '\0';
    assert_int_equal(kms_audit_create(NULL, &ao, &a, &err), 0);
    assert_int_equal(log_pair(a, 1), 0);
    assert_int_equal(stat(f->path, &st), 0);
    assert_int_equal(set_inode_flag(f->path, FS_IMMUTABLE_FL, true), 0);
    r2 = log_pair(a, 2);
    assert_int_equal(set_inode_flag(f->path, FS_IMMUTABLE_FL, false), 0);
    r3 = log_pair(a, 3);
    assert_int_equal(r2, -1);
    assert_int_equal(r3, -1);
    snprintf(want, sizeof(want),
             "error: audit device file is unusable until it is reopened (SIGHUP) or kmsd "
             "restarts: cannot write %s: Operation not permitted; cutting the file back to %lld "
             "bytes failed: Operation not permitted (an append-only or immutable file? see "
             "lsattr); nothing of the batch is in the file\n",
             f->path, (long long)st.st_size);
    assert_logged(want);
    assert_int_equal(kms_audit_reopen(a, &err), 0);
    assert_int_equal(log_pair(a, 4), 0);
    kms_audit_destroy(&a);
    assert_intact(f->path, 1, 4);
}

/* After a clean stop the device's head is stored: a file that ends before it (its last records
 * cut off at a line boundary) is reported at start-up. */
static void test_restart_reports_a_cut_tail(void **state)
{
    struct fx *f = *state;
    struct kms_storage_opts so = {.map_size = 0, .nosync = true, .create = true};
    struct kms_storage *st = NULL;
    struct kms_err err;
    uint8_t seal[32] = {4, 5, 6};
    char store[160];
    snprintf(store, sizeof(store), "%s/store", f->dir);
    assert_int_equal(kms_storage_open(store, seal, &so, &st, &err), 0);
    struct kms_audit *a = open_broker(st, f->path, KMS_AUDIT_FSYNC_BATCH);
    assert_int_equal(log_pair(a, 1), 0);
    assert_int_equal(log_pair(a, 2), 0);
    kms_audit_destroy(&a);
    /* the last two lines cut off */
    size_t n;
    char *text = slurp(f->path, &n);
    char *cut = text + n - 1;
    for (int nl = 0; cut > text; cut--) {
        if (cut[-1] == '\n' && ++nl == 2) {
            break;
        }
    }
    assert_int_equal(truncate(f->path, cut - text), 0);
    free(text);
    struct kms_audit_device_opts o;
    struct kms_audit_opts ao;
    one_device(&o, &ao, f->path);
    ao.log = capture_log;
    logged[0] = '\0';
    assert_int_equal(kms_audit_create(st, &ao, &a, &err), 0);
    assert_non_null(strstr(logged, "ends at seq 2, but this device had written up to seq 4"));
    kms_audit_destroy(&a);
    kms_storage_close(&st);
}

/* A last line changed after kmsd wrote it (its content no longer matches its own hash) was
 * taken as the chain head without a word; start-up now says so (and still starts). */
static void test_edited_last_line_reported_at_start(void **state)
{
    struct fx *f = *state;
    struct kms_audit_device_opts o;
    struct kms_audit_opts ao;
    struct kms_audit *a = open_broker(NULL, f->path, KMS_AUDIT_FSYNC_BATCH);
    struct kms_err err;
    assert_int_equal(log_pair(a, 1), 0);
    kms_audit_destroy(&a);
    one_device(&o, &ao, f->path);
    ao.log = capture_log;
    logged[0] = '\0';
    assert_int_equal(kms_audit_create(NULL, &ao, &a, &err), 0); /* intact: nothing said */
    kms_audit_destroy(&a);
    assert_null(strstr(logged, "does not match its own hash"));
    size_t n;
    char *text = slurp(f->path, &n);
    char *last = strstr(text, "\"type\":\"response\"");
    assert_non_null(last);
    char *field = strstr(last, "\"n\":1");
    assert_non_null(field);
    field[4] = '7';
    FILE *fp = fopen(f->path, "wb");
    assert_int_equal(fwrite(text, 1, n, fp), n);
    fclose(fp);
    free(text);
    logged[0] = '\0';
    assert_int_equal(kms_audit_create(NULL, &ao, &a, &err), 0);
    assert_non_null(strstr(logged, "its last line (seq 2) does not match its own hash"));
    kms_audit_destroy(&a);
}

/* Pages of path in the page cache, and pages in all (mincore over a read-only mapping). */
static void cached_pages(const char *path, size_t *cached, size_t *total)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    size_t pg = (size_t)sysconf(_SC_PAGESIZE), n = ((size_t)st.st_size + pg - 1) / pg;
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    assert_true(m != MAP_FAILED);
    unsigned char *vec = malloc(n);
    assert_int_equal(mincore(m, (size_t)st.st_size, vec), 0);
    *cached = 0;
    for (size_t i = 0; i < n; i++) {
        *cached += vec[i] & 1;
    }
    *total = n;
    free(vec);
    munmap(m, (size_t)st.st_size);
    close(fd);
}

/*
 * Synced lines leave the page cache (device.c, drop_synced): kmsd never reads them back, and
 * an audit file that stayed cached grew the page cache by every byte logged. 40 records with a
 * 100 KB clear field (~8 MB of lines, a group per record) leave at most the last undropped
 * MiB and its partial page cached.
 */
/* 8 MB of lines in `mode`; fails when more than max_cached of the file's pages stay cached. */
static void lines_leave_page_cache(enum kms_audit_fsync mode, size_t max_cached)
{
    char dir[] = "kms-test-audit-cache-XXXXXX", path[64];
    assert_non_null(mkdtemp(dir));
    struct statfs sf;
    assert_int_equal(statfs(dir, &sf), 0);
    if (sf.f_type == 0x01021994 /* TMPFS_MAGIC */) {
        fail_msg("the working directory is on tmpfs, whose pages cannot be dropped");
    }
    snprintf(path, sizeof(path), "%s/audit.log", dir);
    struct kms_audit *a = open_broker(NULL, path, mode);
    char *pad = malloc(100001);
    memset(pad, 'p', 100000);
    pad[100000] = '\0';
    json_t *extra = json_pack("{s:s, s:s}", "op", "encrypt", "pad", pad);
    json_t *req = json_pack("{s:s}", "path", "transit/encrypt/k");
    for (int i = 0; i < 40; i++) {
        struct kms_audit_rec *r = NULL;
        struct kms_err err;
        assert_int_equal(kms_audit_rec_create(a, NULL, req, &r), 0);
        assert_int_equal(kms_audit_rec_log(r, "request", false, NULL, NULL, extra, &err, NULL, 0),
                         0);
        assert_int_equal(kms_audit_rec_log(r, "response", true, NULL, NULL, extra, &err, NULL, 0),
                         0);
        kms_audit_rec_destroy(&r);
    }
    json_decref(extra);
    json_decref(req);
    free(pad);
    size_t cached, total;
    cached_pages(path, &cached, &total);
    assert_true(total > 1900); /* 80 lines of ~100 KB */
    if (cached > max_cached) {
        fail_msg("%zu of the file's %zu pages still cached", cached, total);
    }
    kms_audit_destroy(&a);
    assert_intact(path, 1, 80);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void test_synced_lines_leave_page_cache(void **state)
{
    (void)state;
    lines_leave_page_cache(KMS_AUDIT_FSYNC_BATCH, 257); /* at most the last MiB, and a page */
}

/* "never" syncs nothing: each MiB goes to writeback as it is written and leaves the cache once
 * the next MiB has been written, so at most the last two MiB (and a page) stay. */
static void test_unsynced_lines_leave_page_cache(void **state)
{
    (void)state;
    lines_leave_page_cache(KMS_AUDIT_FSYNC_NEVER, 513);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lines_and_secrets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_accessor_clear_when_asked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deferred_wakeups, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deferred_batch_joined_by_a_waiter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deferred_batch_joined_by_a_worker, setup, teardown),
#ifdef KMS_TEST_HOOKS
        cmocka_unit_test_setup_teardown(test_group_waits_for_a_running_pass, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_gathering_is_bounded, setup, teardown),
#endif
        cmocka_unit_test_setup_teardown(test_concurrent_always_and_never, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rotation_continues_chain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_recovers_head_and_cuts_torn_line, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_refuses_foreign_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_mode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_disk_fails_closed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deleted_file_recreated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_devices_one_broken, setup, teardown),
#ifdef KMS_TEST_HOOKS
        cmocka_unit_test_setup_teardown(test_two_devices_one_hung, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_waits_for_the_writer_whatever_the_wall_clock,
                                        setup, teardown),
#endif
        cmocka_unit_test_setup_teardown(test_storage_keeps_salt_and_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_foreign_tail_is_refused_untouched, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zero_tail_is_cut, setup, teardown),
        cmocka_unit_test_setup_teardown(test_genesis_head_follows_no_other_chain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_edited_last_line_reported_at_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_refuses_another_chain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_reports_a_cut_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_writer_per_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cut_failure_says_why, setup, teardown),
        cmocka_unit_test(test_synced_lines_leave_page_cache),
        cmocka_unit_test(test_unsynced_lines_leave_page_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
