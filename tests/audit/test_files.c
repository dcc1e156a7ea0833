/*
 * test_files.c - verification of logs at rest: every kind of tampering is caught at the first
 * bad line (an edited byte, a deleted, inserted, duplicated or swapped line, an empty line, a
 * torn or newline-less last line, a removed first line with --genesis, a lost anchor), and
 * the `audit verify` command's exit statuses. Also the query side: --since/--until forms,
 * filters, result classes, and the newest-N limit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "audit/audit.h"

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NLINES 10

struct fx {
    char dir[64];
    char path[128];
    char *lines[NLINES]; /* the intact log, each with its '\n' */
};

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

/* Five request/response pairs with varied kmsd fields. */
static void write_log(const char *path)
{
    struct kms_audit_device_opts o;
    struct kms_audit_opts ao;
    struct kms_audit *a = NULL;
    struct kms_err err;
    static const char *const ops[] = {"encrypt", "decrypt", "rotate", "encrypt", "delete"};
    static const char *const subjects[] = {"alice", "bob", "alice", "mallory", "alice"};
    static const char *const keys[] = {"k1", "k1", "k2", "k1", "k2"};

    kms_audit_device_opts_default(&o);
    snprintf(o.path, sizeof(o.path), "%s", path);
    memset(&ao, 0, sizeof(ao));
    ao.devices = &o;
    ao.ndevices = 1;
    assert_int_equal(kms_audit_create(NULL, &ao, &a, &err), 0);
    for (int i = 0; i < NLINES / 2; i++) {
        struct kms_audit_rec *r = NULL;
        bool denied = i == 3;
        json_t *auth = json_pack("{s:s, s:{s:b}}", "client_token", "tok", "policy_results",
                                 "allowed", !denied);
        json_t *req =
            json_pack("{s:s, s:{s:s}}", "id", ops[i], "namespace", "path", i == 4 ? "org1/" : "");
        json_t *x = json_pack("{s:s, s:s, s:s, s:s, s:i}", "subject", subjects[i], "op", ops[i],
                              "resource", "KMSKey", "key", keys[i], "key_version", i + 1);
        json_t *xr = json_deep_copy(x);
        json_object_set_new(xr, "status", json_integer(denied ? 403 : i == 1 ? 400 : 200));
        assert_int_equal(kms_audit_rec_create(a, auth, req, &r), 0);
        assert_int_equal(kms_audit_rec_log(r, "request", false, NULL,
                                           denied ? "permission denied" : NULL, x, &err, NULL, 0),
                         0);
        assert_int_equal(kms_audit_rec_log(r, "response", true, NULL,
                                           denied   ? "permission denied"
                                           : i == 1 ? "cipher: message authentication failed"
                                                    : NULL,
                                           xr, &err, NULL, 0),
                         0);
        kms_audit_rec_destroy(&r);
        json_decref(auth);
        json_decref(req);
        json_decref(x);
        json_decref(xr);
    }
    kms_audit_destroy(&a);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/kms-test-auditf-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/audit.log", f->dir);
    write_log(f->path);
    FILE *fp = fopen(f->path, "rb");
    size_t cap = 0;
    for (int i = 0; i < NLINES; i++) {
        f->lines[i] = NULL;
        cap = 0;
        assert_true(getline(&f->lines[i], &cap, fp) > 0);
    }
    fclose(fp);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    for (int i = 0; i < NLINES; i++) {
        free(f->lines[i]);
    }
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* Write the given parts (NULL-terminated) as the log, then verify; returns the result. */
static int check(struct fx *f, struct kms_audit_verify_result *r, const char *const *parts)
{
    FILE *fp = fopen(f->path, "wb");
    for (size_t i = 0; parts[i] != NULL; i++) {
        fputs(parts[i], fp);
    }
    fclose(fp);
    const char *p = f->path;
    bool genesis = r->genesis;
    const char *anchor = r->anchor;
    memset(r, 0, sizeof(*r));
    r->genesis = genesis;
    r->anchor = anchor;
    return kms_audit_verify_files(&p, 1, r);
}

#define L(i) (f->lines[(i)-1])

static void expect_bad(struct fx *f, const char *const *parts, uint64_t line, const char *what)
{
    struct kms_audit_verify_result r;
    memset(&r, 0, sizeof(r));
    int rc = check(f, &r, parts);
    if (rc != 1 || r.bad_line != line) {
        fail_msg("%s: expected bad line %llu, got rc %d line %llu (%s)", what,
                 (unsigned long long)line, rc, (unsigned long long)r.bad_line, r.reason);
    }
}

static void test_intact(void **state)
{
    struct fx *f = *state;
    struct kms_audit_verify_result r;
    memset(&r, 0, sizeof(r));
    const char *all[] = {L(1), L(2), L(3), L(4), L(5), L(6), L(7), L(8), L(9), L(10), NULL};
    assert_int_equal(check(f, &r, all), 0);
    assert_int_equal(r.lines, 10);
    assert_int_equal(r.first_seq, 1);
    assert_int_equal(r.last_seq, 10);
}

static void test_edit(void **state)
{
    struct fx *f = *state;
    char *e = strdup(L(5));
    char *p = strstr(e, "\"op\":\"");
    assert_non_null(p);
    p[6] = p[6] == 'x' ? 'y' : 'x'; /* one byte of the content */
    const char *parts[] = {L(1), L(2), L(3), L(4), e, L(6), L(7), L(8), L(9), L(10), NULL};
    expect_bad(f, parts, 5, "edited line");
    /* editing the last line is caught by its own hash */
    const char *last[] = {L(1), L(2), L(3), L(4), L(5), L(6), L(7), L(8), L(9), e, NULL};
    expect_bad(f, last, 10, "edited last line");
    free(e);
}

static void test_delete_insert_reorder(void **state)
{
    struct fx *f = *state;
    const char *deleted[] = {L(1), L(2), L(3), L(4), L(6), L(7), L(8), L(9), L(10), NULL};
    expect_bad(f, deleted, 5, "deleted line");
    const char *inserted[] = {L(1), L(2), L(3), L(4), L(5),  L(6),
                              L(3), L(7), L(8), L(9), L(10), NULL};
    expect_bad(f, inserted, 7, "inserted (replayed) line");
    const char *swapped[] = {L(1), L(2), L(3), L(5), L(4), L(6), L(7), L(8), L(9), L(10), NULL};
    expect_bad(f, swapped, 4, "swapped lines");
    const char *blank[] = {L(1), L(2), "\n", L(3), L(4), L(5), L(6), L(7), L(8), L(9), L(10), NULL};
    expect_bad(f, blank, 3, "empty line");
    const char *foreign[] = {L(1), L(2), "{\"type\":\"request\"}\n", L(3), NULL};
    expect_bad(f, foreign, 3, "foreign line");
}

static void test_torn_tail(void **state)
{
    struct fx *f = *state;
    char *torn = strdup(L(10));
    torn[strlen(torn) / 2] = '\0';
    const char *parts[] = {L(1), L(2), L(3), L(4), L(5), L(6), L(7), L(8), L(9), torn, NULL};
    expect_bad(f, parts, 10, "torn last line");
    char *nonl = strdup(L(10));
    nonl[strlen(nonl) - 1] = '\0';
    const char *parts2[] = {L(1), L(2), L(3), L(4), L(5), L(6), L(7), L(8), L(9), nonl, NULL};
    expect_bad(f, parts2, 10, "last line without newline");
    free(torn);
    free(nonl);
}

static void test_genesis_and_anchor(void **state)
{
    struct fx *f = *state;
    struct kms_audit_verify_result r;
    const char *no_first[] = {L(2), L(3), L(4), L(5), L(6), L(7), L(8), L(9), L(10), NULL};
    memset(&r, 0, sizeof(r));
    assert_int_equal(check(f, &r, no_first), 0); /* fine as a later part of a chain */
    assert_int_equal(r.first_seq, 2);
    memset(&r, 0, sizeof(r));
    r.genesis = true;
    assert_int_equal(check(f, &r, no_first), 1); /* not when the chain must start here */
    assert_int_equal(r.bad_line, 1);

    /* the head recorded when the log had 8 lines must still be there */
    json_t *l8 = json_loads(L(8), JSON_DISABLE_EOF_CHECK, NULL);
    char anchor[80];
    snprintf(anchor, sizeof(anchor), "%s", json_string_value(json_object_get(l8, "hash")));
    json_decref(l8);
    const char *all[] = {L(1), L(2), L(3), L(4), L(5), L(6), L(7), L(8), L(9), L(10), NULL};
    memset(&r, 0, sizeof(r));
    r.anchor = anchor;
    assert_int_equal(check(f, &r, all), 0);
    assert_true(r.anchor_found);
    const char *cut[] = {L(1), L(2), L(3), L(4), L(5), L(6), L(7), NULL};
    memset(&r, 0, sizeof(r));
    r.anchor = anchor;
    assert_int_equal(check(f, &r, cut), 1);
    assert_false(r.anchor_found);
    /* the files after the one that ended at the recorded head (a rotated log verified
       incrementally): the chain continues from the anchor, nothing was removed */
    const char *after[] = {L(9), L(10), NULL};
    memset(&r, 0, sizeof(r));
    r.anchor = anchor;
    assert_int_equal(check(f, &r, after), 0);
    assert_true(r.anchor_found);
    /* ... but not a later part that skips records after it */
    const char *gap[] = {L(10), NULL};
    memset(&r, 0, sizeof(r));
    r.anchor = anchor;
    assert_int_equal(check(f, &r, gap), 1);
    assert_false(r.anchor_found);
}

static void test_verify_command(void **state)
{
    struct fx *f = *state;
    char *argv_ok[] = {"-q", f->path, NULL};
    assert_int_equal(kms_audit_verify_command("test", 2, argv_ok), 0);
    char *argv_none[] = {NULL};
    assert_int_equal(kms_audit_verify_command("test", 0, argv_none), 2);
    char missing[160];
    snprintf(missing, sizeof(missing), "%s/nope.log", f->dir);
    char *argv_missing[] = {missing, NULL};
    assert_int_equal(kms_audit_verify_command("test", 1, argv_missing), 2);
    const char *deleted[] = {L(1), L(2), L(4), NULL};
    struct kms_audit_verify_result r;
    memset(&r, 0, sizeof(r));
    assert_int_equal(check(f, &r, deleted), 1);
    assert_int_equal(kms_audit_verify_command("test", 2, argv_ok), 1);
}

static void test_time_args(void **state)
{
    int64_t t;
    const int64_t now = 1714550400;
    (void)state;
    assert_int_equal(kms_audit_time_arg("24h", now, &t), 0);
    assert_int_equal(t, now - 86400);
    assert_int_equal(kms_audit_time_arg("90m", now, &t), 0);
    assert_int_equal(t, now - 5400);
    assert_int_equal(kms_audit_time_arg("7d", now, &t), 0);
    assert_int_equal(t, now - 7 * 86400);
    assert_int_equal(kms_audit_time_arg("1h30m", now, &t), 0);
    assert_int_equal(t, now - 5400);
    assert_int_equal(kms_audit_time_arg("1700000000", now, &t), 0);
    assert_int_equal(t, 1700000000);
    assert_int_equal(kms_audit_time_arg("2024-05-01T00:00:00Z", now, &t), 0);
    assert_int_equal(t, 1714521600);
    assert_int_equal(kms_audit_time_arg("now", now, &t), 0);
    assert_int_equal(t, now);
    assert_int_equal(kms_audit_time_arg("yesterday", now, &t), -1);
    assert_int_equal(kms_audit_time_arg("", now, &t), -1);
    assert_int_equal(kms_audit_time_arg("-5h", now, &t), -1);
}

static json_t *query(struct fx *f, struct kms_audit_filter *flt, bool *truncated)
{
    struct kms_err err;
    json_t *ev = NULL;
    const char *p = f->path;
    assert_int_equal(kms_audit_query(&p, 1, flt, &ev, truncated, &err), 0);
    return ev;
}

static void test_query(void **state)
{
    struct fx *f = *state;
    struct kms_audit_filter flt;
    bool tr;

    memset(&flt, 0, sizeof(flt));
    json_t *ev = query(f, &flt, &tr);
    assert_int_equal(json_array_size(ev), 5); /* one per operation (response lines) */
    assert_false(tr);
    json_t *e0 = json_array_get(ev, 0);
    assert_string_equal(json_string_value(json_object_get(e0, "op")), "encrypt");
    assert_string_equal(json_string_value(json_object_get(e0, "subject")), "alice");
    assert_string_equal(json_string_value(json_object_get(e0, "result")), "allowed");
    assert_int_equal(json_integer_value(json_object_get(e0, "key_version")), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(ev, 1), "result")),
                        "error");
    assert_string_equal(json_string_value(json_object_get(json_array_get(ev, 3), "result")),
                        "denied");
    json_decref(ev);

    flt.subject = "alice";
    ev = query(f, &flt, &tr);
    assert_int_equal(json_array_size(ev), 3);
    json_decref(ev);
    flt.key = "k2";
    ev = query(f, &flt, &tr);
    assert_int_equal(json_array_size(ev), 2);
    json_decref(ev);
    flt.op = "delete";
    ev = query(f, &flt, &tr);
    assert_int_equal(json_array_size(ev), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(ev, 0), "namespace")),
                        "org1/");
    json_decref(ev);

    memset(&flt, 0, sizeof(flt));
    flt.ns = "org1";
    ev = query(f, &flt, &tr);
    assert_int_equal(json_array_size(ev), 1);
    json_decref(ev);
    flt.ns = "root";
    ev = query(f, &flt, &tr);
    assert_int_equal(json_array_size(ev), 4);
    json_decref(ev);

    memset(&flt, 0, sizeof(flt));
    flt.result = "denied";
    ev = query(f, &flt, &tr);
    assert_int_equal(json_array_size(ev), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(ev, 0), "subject")),
                        "mallory");
    json_decref(ev);

    memset(&flt, 0, sizeof(flt));
    flt.resource = "kmskey"; /* case-insensitive */
    flt.limit = 2;
    ev = query(f, &flt, &tr);
    assert_int_equal(json_array_size(ev), 2);
    assert_true(tr);
    /* the newest two, oldest first */
    assert_string_equal(json_string_value(json_object_get(json_array_get(ev, 0), "request_id")),
                        "encrypt");
    assert_string_equal(json_string_value(json_object_get(json_array_get(ev, 1), "op")), "delete");
    json_decref(ev);

    memset(&flt, 0, sizeof(flt));
    flt.resource = "Token";
    ev = query(f, &flt, &tr);
    assert_int_equal(json_array_size(ev), 0);
    json_decref(ev);

    int64_t now, later;
    int32_t ns;
    kms_now(&now, &ns);
    memset(&flt, 0, sizeof(flt));
    flt.since = now + 3600;
    ev = query(f, &flt, &tr);
    assert_int_equal(json_array_size(ev), 0);
    json_decref(ev);
    assert_int_equal(kms_audit_time_arg("24h", now, &later), 0);
    flt.since = later;
    flt.until = now + 60;
    ev = query(f, &flt, &tr);
    assert_int_equal(json_array_size(ev), 5);
    json_decref(ev);
    flt.until = later;
    ev = query(f, &flt, &tr);
    assert_int_equal(json_array_size(ev), 0);
    json_decref(ev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_intact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_edit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_insert_reorder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_genesis_and_anchor, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify_command, setup, teardown),
        cmocka_unit_test(test_time_args),
        cmocka_unit_test_setup_teardown(test_query, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
