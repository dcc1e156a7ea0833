/*
 * test_controller.c - the KMSKey controller with chosen times: kms_api_tick decides rotations
 * and deletion countdowns from the `now` it is given, so no test waits for a clock. Also the
 * KMSKey records going with their namespace, and a countdown decided on the stored record
 * (a cancel stored before the schedule heard of it wins).
 */
#include "tests/engine/engine_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_EVENTS 16

static struct {
    char event[32];
    char name[64];
    char detail[128];
} events[MAX_EVENTS];
static size_t nevents;

static void report(const char *event, const char *ns_id, const char *project, const char *name,
                   const char *detail)
{
    (void)ns_id;
    (void)project;
    if (nevents < MAX_EVENTS) {
        snprintf(events[nevents].event, sizeof(events[0].event), "%s", event);
        snprintf(events[nevents].name, sizeof(events[0].name), "%s", name);
        snprintf(events[nevents].detail, sizeof(events[0].detail), "%s", detail ? detail : "");
    }
    nevents++;
}

static int64_t tick(struct kt *t, int64_t now)
{
    int64_t next = -1;
    nevents = 0;
    assert_int_equal(kms_api_tick(t->api, now, &next, report), 0);
    return next;
}

static void make_org_key(struct kt *t, const char *org, const char *name, const char *spec)
{
    char target[256];
    snprintf(target, sizeof(target), "/v1/sys/namespaces/%s", org);
    json_t *ns = NULL;
    int st = kt_call(t, "POST", target, "root", NULL, "{}", &ns);
    assert_true(st == 200 || st == 204);
    json_decref(ns);
    snprintf(target, sizeof(target), "/v1/kms/keys/proj/%s", name);
    json_decref(kt_ok(t, 200, "POST", target, org, spec));
}

static int64_t version_of(struct kt *t, const char *org, const char *name)
{
    char target[256];
    snprintf(target, sizeof(target), "/v1/kms/keys/proj/%s", name);
    json_t *b = kt_ok(t, 200, "GET", target, org, NULL);
    int64_t v = json_integer_value(json_object_get(kt_data(b, "status"), "currentVersion"));
    json_decref(b);
    return v;
}

static void test_rotation_due_by_injected_time(void **state)
{
    struct kt *t = *state;
    int64_t now = (int64_t)time(NULL);
    make_org_key(t, "org1", "app",
                 "{\"spec\":{\"rotation\":{\"enabled\":true,\"interval\":\"1h\"}}}");
    assert_int_equal(version_of(t, "org1", "app"), 1);

    /* not due yet: nothing happens, the next due time is one interval after creation */
    int64_t next = tick(t, now);
    assert_int_equal(nevents, 0);
    assert_true(next >= now + 3600 - 5 && next <= now + 3600 + 5);
    assert_int_equal(version_of(t, "org1", "app"), 1);

    /* one second before it is due: still nothing */
    (void)tick(t, next - 1);
    assert_int_equal(nevents, 0);

    /* due: exactly one rotation, reported with the new version */
    next = tick(t, next);
    assert_int_equal(nevents, 1);
    assert_string_equal(events[0].event, "rotated");
    assert_string_equal(events[0].name, "app");
    assert_string_equal(events[0].detail, "2");
    assert_int_equal(version_of(t, "org1", "app"), 2);

    /* long downtime: an overdue key rotates once, not once per missed interval */
    (void)tick(t, next + 10 * 3600);
    assert_int_equal(nevents, 1);
    assert_int_equal(version_of(t, "org1", "app"), 3);
}

static void test_deletion_countdown_by_injected_time(void **state)
{
    struct kt *t = *state;
    int64_t now = (int64_t)time(NULL);
    make_org_key(t, "org2", "gone", "{\"spec\":{\"deletionPolicy\":\"schedule\"}}");
    int64_t next = tick(t, now);
    assert_int_equal(nevents, 0);
    /* the default countdown is 30 days */
    assert_true(next >= now + 30 * 86400 - 5 && next <= now + 30 * 86400 + 5);
    (void)tick(t, next - 1);
    assert_int_equal(nevents, 0);
    (void)tick(t, next);
    assert_int_equal(nevents, 1);
    assert_string_equal(events[0].event, "deleted");
    assert_string_equal(events[0].detail, "org2-proj-gone");
    json_decref(kt_ok(t, 404, "GET", "/v1/kms/keys/proj/gone", "org2", NULL));
    json_decref(kt_ok(t, 404, "GET", "/v1/transit/keys/org2-proj-gone", "org2", NULL));
    /* nothing is left to schedule */
    assert_int_equal(tick(t, next + 100), 0);
    assert_int_equal(nevents, 0);
}

static void test_cancelled_countdown_never_fires(void **state)
{
    struct kt *t = *state;
    int64_t now = (int64_t)time(NULL);
    make_org_key(t, "org3", "kept", "{\"spec\":{\"deletionPolicy\":\"schedule\"}}");
    json_decref(kt_ok(t, 200, "POST", "/v1/kms/keys/proj/kept/cancel-delete", "org3", "{}"));
    assert_int_equal(tick(t, now + 365 * 86400), 0);
    assert_int_equal(nevents, 0);
    assert_int_equal(version_of(t, "org3", "kept"), 1);
}

/*
 * The countdown acts on the stored record: a cancel-delete that stored its record (retain, no
 * countdown) before it told the controller's schedule is what the controller finds when the
 * old countdown comes due, and the key stays. The store is written here as such a cancel
 * leaves it, without the schedule update that follows it.
 */
static void test_countdown_rechecks_the_record(void **state)
{
    struct kt *t = *state;
    int64_t now = (int64_t)time(NULL);
    char id[32], key[160];
    make_org_key(t, "org6", "late", "{\"spec\":{\"deletionPolicy\":\"schedule\"}}");
    json_t *b = kt_ok(t, 200, "GET", "/v1/sys/namespaces/org6", NULL, NULL);
    snprintf(id, sizeof(id), "%s", json_string_value(kt_data(b, "id")));
    json_decref(b);
    int kn = snprintf(key, sizeof(key), "%s/proj/late", id);

    struct kms_txn *txn = NULL;
    uint8_t *val = NULL;
    size_t vallen = 0;
    assert_int_equal(kms_storage_txn_begin(t->st, true, &txn), 0);
    assert_int_equal(kms_storage_get(txn, KMS_DB_KMSKEYS, key, (size_t)kn, &val, &vallen), 0);
    json_t *rec = json_loadb((const char *)val, vallen, 0, NULL);
    free(val);
    assert_non_null(rec);
    assert_true(json_integer_value(json_object_get(rec, "scheduled_deletion")) > now);
    json_object_set_new(json_object_get(rec, "spec"), "deletionPolicy", json_string("retain"));
    json_object_set_new(rec, "scheduled_deletion", json_integer(0));
    char *text = json_dumps(rec, JSON_COMPACT);
    json_decref(rec);
    assert_int_equal(kms_storage_put(txn, KMS_DB_KMSKEYS, key, (size_t)kn, text, strlen(text)), 0);
    free(text);
    assert_int_equal(kms_storage_txn_commit(&txn), 0);

    /* long past the old countdown: nothing is destroyed, and nothing is due again */
    (void)tick(t, now + 365 * 86400);
    assert_int_equal(nevents, 0);
    assert_int_equal(version_of(t, "org6", "late"), 1);
    json_decref(kt_ok(t, 200, "GET", "/v1/transit/keys/org6-proj-late", "org6", NULL));
    assert_int_equal(tick(t, now + 2 * 365 * 86400), 0);
    assert_int_equal(nevents, 0);
}

static void test_namespace_deletion_takes_kmskeys(void **state)
{
    struct kt *t = *state;
    int64_t now = (int64_t)time(NULL);
    make_org_key(t, "org4", "k",
                 "{\"spec\":{\"rotation\":\"1h\",\"deletionPolicy\":\"schedule\"}}");
    assert_true(tick(t, now) > 0);
    json_decref(kt_ok(t, 204, "DELETE", "/v1/sys/namespaces/org4", NULL, NULL));
    /* the controller has nothing left and reports nothing, however late */
    assert_int_equal(tick(t, now + 400 * 86400), 0);
    assert_int_equal(nevents, 0);
    /* a namespace of the same name starts empty: no KMSKey, no Transit key, no mount */
    json_t *ns = NULL;
    int st = kt_call(t, "POST", "/v1/sys/namespaces/org4", "root", NULL, "{}", &ns);
    assert_true(st == 200 || st == 204);
    json_decref(ns);
    json_decref(kt_ok(t, 404, "GET", "/v1/kms/keys/proj/k", "org4", NULL));
    json_decref(kt_ok(t, 404, "LIST", "/v1/kms/keys/proj/", "org4", NULL));
    /* and after a restart nothing comes back from storage */
    kt_reopen(t);
    assert_int_equal(tick(t, now + 400 * 86400), 0);
    json_decref(kt_ok(t, 404, "GET", "/v1/kms/keys/proj/k", "org4", NULL));
}

static void test_schedule_survives_restart(void **state)
{
    struct kt *t = *state;
    int64_t now = (int64_t)time(NULL);
    make_org_key(t, "org5", "r", "{\"spec\":{\"rotation\":\"2h\"}}");
    kt_reopen(t);
    int64_t next = tick(t, now);
    assert_true(next >= now + 7200 - 5 && next <= now + 7200 + 5);
    (void)tick(t, next);
    assert_int_equal(nevents, 1);
    assert_string_equal(events[0].event, "rotated");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rotation_due_by_injected_time, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_deletion_countdown_by_injected_time, kt_setup,
                                        kt_teardown),
        cmocka_unit_test_setup_teardown(test_cancelled_countdown_never_fires, kt_setup,
                                        kt_teardown),
        cmocka_unit_test_setup_teardown(test_countdown_rechecks_the_record, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_namespace_deletion_takes_kmskeys, kt_setup,
                                        kt_teardown),
        cmocka_unit_test_setup_teardown(test_schedule_survives_restart, kt_setup, kt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
