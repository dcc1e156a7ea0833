/*
 * test_ha.c - server/ha.c with an injected monotonic clock.
 *
 * The lease rule itself (kms_ha_lease_valid) at its boundaries; then, when KMS_TEST_PG_URL
 * names a database (ctest: server_test_ha_postgresql, a throwaway cluster from
 * tests/pg/pgtmp.py), replicas in this process on real PostgreSQL stores, each with a clock
 * the test moves by hand:
 *
 * - the lease gates answers and commits: with a write transaction open (which holds the write
 *   connection, so no heartbeat can renew the lease) the clock is moved past the lease; at
 *   once the replica is not active, answers 503 or its standby health, and the transaction's
 *   COMMIT is refused (nothing lands); once the connection is free it is active again;
 * - a new leader waits out the old lease: the holder's session is ended by PostgreSQL
 *   (pg_terminate_backend, as a PostgreSQL restart would), the other replica takes the lock
 *   and stays inactive while its clock stands still (and one millisecond short of the
 *   lease), and becomes active once its clock has moved a whole lease;
 * - that lease counts from when the lock was got, not from when the replica began to try for
 *   it: the try is held up (the test holds the replica's write connection) while its clock
 *   moves a whole lease and the old holder's session ends.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "engine/engines.h"
#include "server/server.h"
#include "tests/realtime_skew.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LEASE 1000
#define HEARTBEAT 100
#define MARGIN 250

static const char *pg_url;

/* ---- the lease rule ---------------------------------------------------------------------- */

static void test_lease_rule(void **state)
{
    (void)state;
    /* serve while now < ping_sent + lease - margin */
    assert_true(kms_ha_lease_valid(5000, 5000, LEASE, MARGIN));
    assert_true(kms_ha_lease_valid(5000 + LEASE - MARGIN - 1, 5000, LEASE, MARGIN));
    assert_false(kms_ha_lease_valid(5000 + LEASE - MARGIN, 5000, LEASE, MARGIN));
    assert_false(kms_ha_lease_valid(5000 + LEASE, 5000, LEASE, MARGIN));
    /* no answered ping yet: never */
    assert_false(kms_ha_lease_valid(1, 0, LEASE, MARGIN));
}

static void test_create_checks(void **state)
{
    struct kms_ha_opts o = {.lease_ms = 300, .heartbeat_ms = 200, .margin_ms = 10};
    struct kms_ha *ha = NULL;
    struct kms_err err;

    (void)state;
    kms_err_clear(&err);
    assert_int_not_equal(kms_ha_create(&o, &ha, &err), 0);
    assert_null(ha);
    assert_non_null(strstr(err.msg, "ha_lease"));
    o.lease_ms = 50;
    o.heartbeat_ms = 10;
    assert_int_not_equal(kms_ha_create(&o, &ha, &err), 0);
}

/* ---- replicas in this process ------------------------------------------------------------ */

struct replica {
    char name[16];
    atomic_llong clock; /* the injected monotonic clock, ms */
    struct kms_storage *st;
    struct kms_ha *ha;
    pthread_mutex_t readers_mu; /* the threads that read the clock, but the test's own */
    pthread_t readers[4];
    int nreaders;
};

static pthread_t test_thread;

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_buf[65536];

static void capture_log(const char *level, const char *msg, const char *replica, const char *detail)
{
    pthread_mutex_lock(&log_mu);
    size_t n = strlen(log_buf);
    if (n + 512 < sizeof(log_buf)) {
        snprintf(log_buf + n, sizeof(log_buf) - n, "%s|%s|%s|%s\n", replica, level, msg, detail);
    }
    pthread_mutex_unlock(&log_mu);
}

static bool logged(const char *replica, const char *msg)
{
    char want[256];
    bool found;

    snprintf(want, sizeof(want), "%s|", replica);
    pthread_mutex_lock(&log_mu);
    found = false;
    for (const char *p = log_buf; (p = strstr(p, want)) != NULL; p++) {
        const char *eol = strchr(p, '\n');
        const char *m = strstr(p, msg);
        if ((p == log_buf || p[-1] == '\n') && m != NULL && (eol == NULL || m < eol)) {
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&log_mu);
    return found;
}

/*
 * A script for the clock as one thread sees it: with script_on, reading number script_at
 * (from 0; the second by default) taken on script_thread is a whole lease ahead (the lease ran
 * out at that moment), every other reading is the replica's clock (the heartbeat renewed it
 * meanwhile).
 */
static atomic_bool script_on;
static pthread_t script_thread;
static atomic_int script_calls;
static atomic_int script_at = 1;
static atomic_bool script_sticky; /* every reading from script_at on is ahead */

/* Remember which threads read r's clock (the heartbeat's and the control thread's). */
static void note_reader(struct replica *r)
{
    pthread_t self = pthread_self();
    if (pthread_equal(self, test_thread)) {
        return;
    }
    pthread_mutex_lock(&r->readers_mu);
    bool known = false;
    for (int i = 0; i < r->nreaders; i++) {
        known = known || pthread_equal(r->readers[i], self);
    }
    if (!known && r->nreaders < 4) {
        r->readers[r->nreaders++] = self;
    }
    pthread_mutex_unlock(&r->readers_mu);
}

static int64_t fake_now(void *arg)
{
    int64_t now = atomic_load(&((struct replica *)arg)->clock);
    note_reader(arg);
    int at = atomic_load(&script_at);
    if (atomic_load(&script_on) && pthread_equal(pthread_self(), script_thread)) {
        int call = atomic_fetch_add(&script_calls, 1);
        if (call == at || (atomic_load(&script_sticky) && call > at)) {
            return now + LEASE;
        }
    }
    return now;
}

static int build(void *arg, struct kms_api **api, struct kms_err *err)
{
    struct replica *r = arg;
    struct kms_api_opts ao;

    memset(&ao, 0, sizeof(ao));
    kms_api_limits_default(&ao.limits);
    ao.version = "test";
    return kms_engines_create(r->st, &ao, NULL, api, err);
}

static void teardown_api(void *arg, struct kms_api **api)
{
    (void)arg;
    kms_api_destroy(api);
}

/* Run SQL on the test database with psql; the first value of the answer into out. */
static void psql(const char *sql, char *out, size_t cap)
{
    const char *bin = getenv("KMS_PG_BIN");
    char cmd[2048], all[4096];
    size_t n = 0;
    FILE *p;

    snprintf(cmd, sizeof(cmd),
             "PGOPTIONS='-c client_min_messages=warning' %s/psql -X -q -tA -d '%s' -c \"%s\" 2>&1",
             bin != NULL ? bin : "/usr/lib/postgresql/15/bin", pg_url, sql);
    p = popen(cmd, "r");
    assert_non_null(p);
    n = fread(all, 1, sizeof(all) - 1, p);
    all[n] = '\0';
    if (pclose(p) != 0) {
        fail_msg("%s: %s", sql, all);
    }
    snprintf(out, cap, "%.*s", (int)strcspn(all, "\n"), all);
}

/* The replica's store and HA state, not started yet (replica_run). */
static void replica_init(struct replica *r, const char *name)
{
    struct kms_storage_opts so = {.nosync = true, .pg_ha_lease_ms = LEASE};
    uint8_t seal[32];
    struct kms_err err;

    memset(seal, 7, sizeof(seal));
    kms_err_clear(&err);
    snprintf(r->name, sizeof(r->name), "%s", name);
    atomic_store(&r->clock, 1000000);
    pthread_mutex_init(&r->readers_mu, NULL);
    r->nreaders = 0;
    test_thread = pthread_self();
    so.backend = KMS_STORAGE_POSTGRESQL;
    if (kms_storage_open(pg_url, seal, &so, &r->st, &err) != 0) {
        fail_msg("open: %s", err.msg);
    }
    struct kms_ha_opts o = {
        .st = r->st,
        .version = "test",
        .lease_ms = LEASE,
        .heartbeat_ms = HEARTBEAT,
        .margin_ms = MARGIN,
        .forward_timeout_ms = 1000,
        .build = build,
        .teardown = teardown_api,
        .arg = r,
        .now_ms = fake_now,
        .clock_arg = r,
        .log = capture_log,
    };
    assert_int_equal(kms_ha_create(&o, &r->ha, &err), 0);
}

static void replica_run(struct replica *r)
{
    struct kms_err err;
    char addr[64];

    kms_err_clear(&err);
    /* nobody listens there: a forwarded request would fail, never reach a replica */
    snprintf(addr, sizeof(addr), "http://127.0.0.1:9/%s", r->name);
    assert_int_equal(kms_ha_start(r->ha, addr, r->name, &err), 0);
}

static void replica_start(struct replica *r, const char *name)
{
    replica_init(r, name);
    replica_run(r);
}

static void replica_stop(struct replica *r)
{
    kms_ha_destroy(&r->ha);
    kms_storage_close(&r->st);
    pthread_mutex_destroy(&r->readers_mu);
}

/* Poll (real time, 10 s at most) until n threads other than the test's read r's clock. */
static void wait_readers(struct replica *r, int n)
{
    for (int i = 0;; i++) {
        pthread_mutex_lock(&r->readers_mu);
        int have = r->nreaders;
        pthread_mutex_unlock(&r->readers_mu);
        if (have >= n) {
            return;
        }
        if (i >= 1000) {
            fail_msg("%s: %d threads read its clock, not %d", r->name, have, n);
        }
        usleep(10 * 1000);
    }
}

/* Poll (real time, 10 s at most) until the replica's activity is `want`. */
static void wait_active(struct replica *r, bool want)
{
    for (int i = 0; kms_ha_is_active(r->ha) != want; i++) {
        if (i >= 1000) {
            fail_msg("%s did not become %s", r->name, want ? "active" : "inactive");
        }
        usleep(10 * 1000);
    }
}

static void wait_logged(const char *replica, const char *msg)
{
    for (int i = 0; !logged(replica, msg); i++) {
        if (i >= 1000) {
            fail_msg("%s never logged \"%s\"\n%s", replica, msg, log_buf);
        }
        usleep(10 * 1000);
    }
}

static int handle(struct replica *r, const char *method, const char *target, char *body, size_t cap)
{
    struct kms_http_req req;
    struct kms_http_resp resp;
    int status;

    memset(&req, 0, sizeof(req));
    req.method = method;
    req.target = target;
    req.remote_addr = "127.0.0.1";
    kms_ha_handle(r->ha, &req, &resp);
    status = resp.status;
    snprintf(body, cap, "%.*s", (int)resp.body_len, resp.body != NULL ? resp.body : "");
    kms_http_resp_dispose(&resp);
    return status;
}

static int setup_pg(void **state)
{
    char out[64];

    (void)state;
    psql("DROP TABLE IF EXISTS kmsd_records; DROP TABLE IF EXISTS kmsd_leader", out, sizeof(out));
    log_buf[0] = '\0';
    return 0;
}

static void test_lease_gates_answers_and_commits(void **state)
{
    struct replica r;
    struct kms_txn *txn = NULL;
    uint8_t *val = NULL;
    size_t vallen = 0;
    char body[4096];

    (void)state;
    replica_start(&r, "r1");
    wait_active(&r, true);
    assert_int_equal(handle(&r, "GET", "/v1/sys/health", body, sizeof(body)), 501);
    assert_non_null(strstr(body, "\"standby\":false"));

    /* the write transaction holds the write connection: no ping renews the lease */
    assert_int_equal(kms_storage_txn_begin(r.st, true, &txn), 0);
    assert_int_equal(kms_storage_put(txn, KMS_DB_META, "late", 4, "v", 1), 0);
    atomic_fetch_add(&r.clock, LEASE - MARGIN);
    assert_false(kms_ha_is_active(r.ha));
    assert_int_equal(handle(&r, "GET", "/v1/sys/mounts", body, sizeof(body)), 503);
    assert_non_null(strstr(body, "{\"errors\":["));
    assert_int_equal(handle(&r, "GET", "/v1/sys/health", body, sizeof(body)), 501);
    assert_non_null(strstr(body, "\"standby\":true"));
    assert_int_equal(handle(&r, "GET", "/v1/sys/leader", body, sizeof(body)), 200);
    assert_non_null(strstr(body, "\"is_self\":false"));
    assert_int_not_equal(kms_storage_txn_commit(&txn), 0); /* the commit guard */
    assert_int_equal(kms_storage_txn_begin(r.st, false, &txn), 0);
    assert_int_equal(kms_storage_get(txn, KMS_DB_META, "late", 4, &val, &vallen),
                     KMS_STORAGE_NOTFOUND);
    kms_storage_txn_abort(&txn);

    /* the connection free again: pings answer, and the replica serves again */
    wait_active(&r, true);
    assert_int_equal(handle(&r, "GET", "/v1/sys/leader", body, sizeof(body)), 200);
    assert_non_null(strstr(body, "\"is_self\":true"));
    assert_int_equal(kms_storage_txn_begin(r.st, true, &txn), 0);
    assert_int_equal(kms_storage_put(txn, KMS_DB_META, "late", 4, "v", 1), 0);
    assert_int_equal(kms_storage_txn_commit(&txn), 0);
    replica_stop(&r);
}

/*
 * The commit guard refused a write (the lease had run out at COMMIT) and the lease was renewed
 * before the answer left: the client gets 503 (not the active replica), never the handler's
 * 500, and nothing was written.
 */
static void test_refused_commit_answers_503(void **state)
{
    struct replica r;
    char body[4096];
    int status;

    (void)state;
    replica_start(&r, "r1");
    wait_active(&r, true);
    script_thread = pthread_self();
    atomic_store(&script_calls, 0);
    atomic_store(&script_on, true);
    status = handle(&r, "PUT", "/v1/sys/init", body, sizeof(body));
    atomic_store(&script_on, false);
    assert_true(atomic_load(&script_calls) >= 2); /* the gate, then the commit guard */
    assert_int_equal(status, 503);
    assert_non_null(strstr(body, "not the active replica"));
    /* the refused commit wrote nothing: the store is still uninitialised */
    assert_int_equal(handle(&r, "PUT", "/v1/sys/init", body, sizeof(body)), 200);
    assert_non_null(strstr(body, "root_token"));
    replica_stop(&r);
}

/*
 * The lease ran out after the request's COMMIT went through, before its answer left: the
 * change is made (and audited), so the client gets the handler's answer, not a 503 that would
 * have it repeat the request (sys/init: its root token would be lost, the store initialised).
 * sys/init reads the clock on its thread at the gate (reading 0) and at its one COMMIT
 * (reading 1); from reading 2 on the lease is gone, which the check after the answer used to
 * read.
 */
static void test_committed_write_keeps_its_answer(void **state)
{
    struct replica r;
    char body[4096];
    int status;

    (void)state;
    replica_start(&r, "r1");
    wait_active(&r, true);
    script_thread = pthread_self();
    atomic_store(&script_calls, 0);
    atomic_store(&script_at, 2);
    atomic_store(&script_sticky, true);
    atomic_store(&script_on, true);
    status = handle(&r, "PUT", "/v1/sys/init", body, sizeof(body));
    atomic_store(&script_on, false);
    atomic_store(&script_sticky, false);
    atomic_store(&script_at, 1);
    if (status != 200 || strstr(body, "root_token") == NULL) {
        replica_stop(&r);
        fail_msg("a committed sys/init answered %d: %s", status, body);
    }
    /* it was made: a second init is refused */
    status = handle(&r, "PUT", "/v1/sys/init", body, sizeof(body));
    replica_stop(&r);
    assert_int_equal(status, 400);
}

/* The old leader: a store of its own holding the leader lock, its record published ("ra"). */
static struct kms_storage *old_leader(void)
{
    struct kms_storage_opts so = {.nosync = true, .pg_ha_lease_ms = LEASE};
    struct kms_storage *old = NULL;
    struct kms_err err;
    uint8_t seal[32];
    bool got = false;

    memset(seal, 7, sizeof(seal));
    so.backend = KMS_STORAGE_POSTGRESQL;
    kms_err_clear(&err);
    assert_int_equal(kms_storage_open(pg_url, seal, &so, &old, &err), 0);
    assert_int_equal(kms_storage_leader_try(old, &got), 0);
    assert_true(got);
    assert_int_equal(kms_storage_leader_publish(old, "ra", "http://127.0.0.1:9/ra", LEASE), 0);
    return old;
}

/* PostgreSQL ends the session holding the leader lock (a restart, pg_terminate_backend). */
static void end_leader_session(void)
{
    char out[64];
    psql("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted "
         "AND classid = 1802335076 AND objid = 1936682085",
         out, sizeof(out));
    assert_string_equal(out, "t");
}

static void test_new_leader_waits_out_the_lease(void **state)
{
    struct replica b;
    char body[4096];

    (void)state;
    /* the old leader: a store holding the lock and its published record, that never
     * stands again (so the new leader's wait is all there is to see) */
    struct kms_storage *old = old_leader();
    replica_start(&b, "rb");
    wait_logged("rb", "standing by for the leader lock");
    assert_false(kms_ha_is_active(b.ha));

    /* PostgreSQL ends the holder's session (a restart, pg_terminate_backend): the lock goes,
     * but the old leader did not release, so its lease may still be running */
    end_leader_session();
    wait_logged("rb", "leader lock taken; waiting out the previous leader's lease");
    /* b's clock stands still: it waits, whatever the real time */
    for (int i = 0; i < 3; i++) {
        assert_false(kms_ha_is_active(b.ha));
        assert_int_equal(handle(&b, "GET", "/v1/sys/mounts", body, sizeof(body)), 503);
        usleep(HEARTBEAT * 1000);
    }
    atomic_fetch_add(&b.clock, LEASE - 1);
    for (int i = 0; i < 3; i++) {
        assert_false(kms_ha_is_active(b.ha));
        usleep(HEARTBEAT * 1000);
    }
    atomic_fetch_add(&b.clock, 1);
    wait_active(&b, true);
    wait_logged("rb", "active replica");
    assert_int_equal(handle(&b, "GET", "/v1/sys/leader", body, sizeof(body)), 200);
    assert_non_null(strstr(body, "\"leader_address\":\"http://127.0.0.1:9/rb\""));
    replica_stop(&b);
    /* b stopped cleanly: the record says released, a next leader would not wait */
    struct kms_storage_leader l;
    assert_int_equal(kms_storage_leader_read(old, &l), 0);
    assert_true(l.released);
    assert_string_equal(l.replica, "rb");
    kms_storage_close(&old);
}

/*
 * A standby's tries for the lock (and an active's heartbeat) sleep on the monotonic clock: they
 * waited for a deadline on the wall clock, so a system clock stepped back an hour held the
 * standby an hour after the leader's session ended (and an active's heartbeat as long, so its
 * lease ran out and it stopped serving).
 */
static void test_wall_clock_step_does_not_hold_the_standby(void **state)
{
    struct replica b;

    (void)state;
    struct kms_storage *old = old_leader();
    replica_start(&b, "rb");
    wait_logged("rb", "standing by for the leader lock");
    atomic_store(&realtime_skew, 3600);
    usleep(2 * HEARTBEAT * 1000); /* b's next sleep starts with the wall clock stepped */
    end_leader_session();
    wait_logged("rb", "leader lock taken; waiting out the previous leader's lease");
    atomic_store(&realtime_skew, 0);
    atomic_fetch_add(&b.clock, LEASE);
    wait_active(&b, true);
    replica_stop(&b);
    kms_storage_close(&old);
}

/*
 * The old leader's lease is waited out from when the lock was got. The new replica's try is
 * held up on its write connection (a write transaction the test keeps open, as a slow new
 * connection to PostgreSQL would hold it) after the control thread read its clock; meanwhile
 * that clock moves a whole lease and the old holder's session is ended. A wait counted from
 * the clock read before the try would be over at once, while the old holder may have served
 * until just before its session ended.
 */
static void test_lease_wait_counts_from_the_lock(void **state)
{
    struct kms_txn *txn = NULL;
    struct replica b;
    char out[64], body[4096];

    (void)state;
    struct kms_storage *old = old_leader();
    replica_init(&b, "rb");
    /* b's write connection is busy: its first try for the lock waits for it */
    assert_int_equal(kms_storage_txn_begin(b.st, true, &txn), 0);
    replica_run(&b);
    wait_readers(&b, 2); /* the heartbeat's, and the control thread's read before its try */
    atomic_fetch_add(&b.clock, LEASE);
    end_leader_session();
    for (int i = 0;; i++) {
        psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
             "classid = 1802335076 AND objid = 1936682085",
             out, sizeof(out));
        if (strcmp(out, "0") == 0) {
            break;
        }
        if (i >= 1000) {
            fail_msg("the old holder's session kept the leader lock");
        }
        usleep(10 * 1000);
    }
    kms_storage_txn_abort(&txn); /* the try goes on, and gets the lock */
    wait_logged("rb", "leader lock taken; waiting out the previous leader's lease");
    for (int i = 0; i < 5; i++) {
        assert_false(kms_ha_is_active(b.ha));
        assert_int_equal(handle(&b, "GET", "/v1/sys/mounts", body, sizeof(body)), 503);
        usleep(HEARTBEAT * 1000);
    }
    atomic_fetch_add(&b.clock, LEASE);
    wait_active(&b, true);
    replica_stop(&b);
    kms_storage_close(&old);
}

int main(void)
{
    const struct CMUnitTest pure[] = {
        cmocka_unit_test(test_lease_rule),
        cmocka_unit_test(test_create_checks),
    };
    const struct CMUnitTest pg[] = {
        cmocka_unit_test_setup(test_lease_gates_answers_and_commits, setup_pg),
        cmocka_unit_test_setup(test_refused_commit_answers_503, setup_pg),
        cmocka_unit_test_setup(test_committed_write_keeps_its_answer, setup_pg),
        cmocka_unit_test_setup(test_new_leader_waits_out_the_lease, setup_pg),
        cmocka_unit_test_setup(test_lease_wait_counts_from_the_lock, setup_pg),
        cmocka_unit_test_setup(test_wall_clock_step_does_not_hold_the_standby, setup_pg),
    };
    int failed;

    pg_url = getenv("KMS_TEST_PG_URL");
    if (pg_url != NULL && pg_url[0] == '\0') {
        pg_url = NULL;
    }
    failed = cmocka_run_group_tests_name("lease rule", pure, NULL, NULL);
    if (pg_url != NULL) {
        failed += cmocka_run_group_tests_name("replicas on postgresql", pg, NULL, NULL);
    }
    return failed;
}
