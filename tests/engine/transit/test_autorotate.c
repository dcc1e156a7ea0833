/*
 * test_autorotate.c - Transit's auto_rotate_period (engine/transit/autorotate.c,
 * transit-api.md 5), driven through kms_api_tick with the time the test gives: a key whose
 * latest version is older than its period rotates once, audited; keys without a period, with a
 * period not yet run out, soft-deleted ones, and any key while the audit log cannot record the
 * rotation, do not; the next scan comes between a minute and the next due time.
 *
 * Version creation times come from the real clock, so a key is made overdue by restoring a
 * backup whose version 1 was created in 2020 (what a key restored from an old backup is).
 */
#include "tests/engine/transit/transit_util.h"

#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crypto/crypto.h"

static int nrotated, nfailed;
static char last_name[128], last_detail[64];

static void report(const char *event, const char *ns_id, const char *project, const char *name,
                   const char *detail)
{
    (void)ns_id;
    (void)project;
    if (strcmp(event, "auto-rotated") == 0) {
        nrotated++;
        snprintf(last_name, sizeof(last_name), "%s", name);
        snprintf(last_detail, sizeof(last_detail), "%s", detail ? detail : "");
    } else if (strstr(event, "failed") != NULL) {
        nfailed++;
    }
}

static int64_t tick_rc(struct kt *t, int64_t now, int want_rc)
{
    int64_t next = -1;
    nrotated = nfailed = 0;
    last_name[0] = '\0';
    assert_int_equal(kms_api_tick(t->api, now, &next, report), want_rc);
    return next;
}

static int64_t tick(struct kt *t, int64_t now)
{
    return tick_rc(t, now, 0);
}

static int64_t latest(struct kt *t, const char *name)
{
    char target[160];
    snprintf(target, sizeof(target), "/v1/transit/keys/%s", name);
    json_t *b = tt_req(t, 200, "GET", target, NULL);
    int64_t v = json_integer_value(kt_data(b, "latest_version"));
    json_decref(b);
    return v;
}

/* `name`: version 1 created on 2020-01-01, auto_rotate_period `period` seconds. */
static void make_old(struct kt *t, const char *name, int64_t period)
{
    char target[160];
    tt_create(t, "overdue-src", "{\"exportable\":true,\"allow_plaintext_backup\":true}");
    json_t *b = tt_req(t, 200, "GET", "/v1/transit/backup/overdue-src", NULL);
    const char *enc = tt_str(b, "backup");
    uint8_t *raw = NULL;
    size_t rawlen = 0, at = 0;
    assert_int_equal(kms_b64_decode_alloc(enc, strlen(enc), &raw, &rawlen, &at), 0);
    json_t *kd = json_loadb((const char *)raw, rawlen, 0, NULL);
    kms_free_wipe((void **)&raw, rawlen);
    json_decref(b);
    assert_non_null(kd);
    json_t *pol = json_object_get(kd, "policy");
    json_object_set_new(pol, "auto_rotate_period", json_integer(period * 1000000000LL));
    const char *k;
    json_t *e;
    json_object_foreach(json_object_get(pol, "keys"), k, e)
    {
        json_object_set_new(e, "time", json_string("2020-01-01T00:00:00Z"));
        json_object_set_new(e, "creation_time", json_integer(1577836800));
    }
    size_t i;
    json_array_foreach(json_object_get(json_object_get(kd, "archived_keys"), "keys"), i, e)
    {
        json_object_set_new(e, "time", json_string("2020-01-01T00:00:00Z"));
        json_object_set_new(e, "creation_time", json_integer(1577836800));
    }
    char *text = json_dumps(kd, JSON_COMPACT);
    json_decref(kd);
    assert_non_null(text);
    size_t tl = strlen(text);
    char *b64 = malloc(4 * ((tl + 2) / 3) + 1);
    assert_non_null(b64);
    kms_b64_encode((const uint8_t *)text, tl, b64);
    json_t *req = json_pack("{s:s}", "backup", b64);
    char *body = json_dumps(req, JSON_COMPACT);
    snprintf(target, sizeof(target), "/v1/transit/restore/%s", name);
    json_decref(tt_req(t, 204, "POST", target, body));
    free(body);
    json_decref(req);
    free(b64);
    free(text);
}

static void make_overdue(struct kt *t, const char *name)
{
    make_old(t, name, 3600);
}

static void test_due_keys_rotate_once(void **state)
{
    struct kt *t = *state;
    make_overdue(t, "overdue");
    tt_create(t, "plain", NULL);
    tt_create(t, "hourly", "{\"auto_rotate_period\":\"1h\"}");
    make_overdue(t, "shelved");
    json_decref(tt_req(t, 200, "DELETE", "/v1/transit/keys/shelved/soft-delete", NULL));
    assert_int_equal(latest(t, "overdue"), 1);

    int64_t now = (int64_t)time(NULL);
    int64_t next = tick(t, now);
    assert_int_equal(nrotated, 1);
    assert_string_equal(last_name, "overdue");
    assert_string_equal(last_detail, "2");
    assert_int_equal(latest(t, "overdue"), 2);
    assert_int_equal(latest(t, "plain"), 1);
    assert_int_equal(latest(t, "hourly"), 1);
    assert_int_equal(latest(t, "shelved"), 1); /* soft-deleted: never */
    /* next: the hourly key's (and overdue's new version's) due time, a minute away at least */
    assert_true(next >= now + 60);
    assert_true(next <= now + 3600 + 5);
    /* before then nothing is scanned or rotated, however often the tick runs */
    (void)tick(t, now + 30);
    (void)tick(t, now + 59);
    assert_int_equal(nrotated, 0);
    assert_int_equal(latest(t, "overdue"), 2);
    /* an hour on, both periodic keys rotate, once each */
    (void)tick(t, now + 3600 + 10);
    assert_int_equal(nrotated, 2);
    assert_int_equal(latest(t, "overdue"), 3);
    assert_int_equal(latest(t, "hourly"), 2);
    assert_int_equal(latest(t, "plain"), 1);
    /* the rotations are in the audit log, as the server's own operations */
    assert_true(kt_audit_contains(t, "\"subject\":\"system:kmsd-autorotate\""));
    assert_true(kt_audit_contains(t, "\"path\":\"transit/keys/hourly/rotate\""));
}

/*
 * A period set on an existing key is seen at the next tick a minute after the last scan, not
 * an hour later; a period set to 0 stops the rotations.
 */
static void test_config_kicks_a_scan(void **state)
{
    struct kt *t = *state;
    make_old(t, "aged", 0); /* created in 2020, no period */
    int64_t now = (int64_t)time(NULL);
    int64_t next = tick(t, now);
    assert_int_equal(nrotated, 0);
    assert_int_equal(next, 0); /* nothing due (the hourly scan is not a due item) */
    json_decref(
        tt_req(t, 200, "POST", "/v1/transit/keys/aged/config", "{\"auto_rotate_period\":\"2h\"}"));
    (void)tick(t, now + 59);
    assert_int_equal(nrotated, 0); /* a minute between scans */
    (void)tick(t, now + 60);
    assert_int_equal(nrotated, 1);
    assert_int_equal(latest(t, "aged"), 2);
    /* the new version is due two hours after its creation (real time, about now) */
    (void)tick(t, now + 3600);
    assert_int_equal(latest(t, "aged"), 2);
    (void)tick(t, now + 2 * 3600 + 70);
    assert_int_equal(latest(t, "aged"), 3);
    /* 0 turns it off */
    json_decref(
        tt_req(t, 200, "POST", "/v1/transit/keys/aged/config", "{\"auto_rotate_period\":0}"));
    (void)tick(t, now + 10 * 3600);
    assert_int_equal(nrotated, 0);
    assert_int_equal(latest(t, "aged"), 3);
}

/* Without a durable audit record no key rotates; the scan is tried again a minute later. */
static void test_fail_closed(void **state)
{
    struct kt *t = *state;
    make_overdue(t, "blocked");
    int64_t now = (int64_t)time(NULL);
    assert_int_equal(unlink(t->audit_path), 0);
    assert_int_equal(mkdir(t->audit_path, 0700), 0);
    int64_t next = tick_rc(t, now, -1);
    assert_int_equal(nrotated, 0);
    assert_true(nfailed >= 1);
    assert_int_equal(next, now + 60);
    assert_int_equal(rmdir(t->audit_path), 0);
    assert_int_equal(latest(t, "blocked"), 1);
    (void)tick(t, now + 60);
    assert_int_equal(nrotated, 1);
    assert_int_equal(latest(t, "blocked"), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_due_keys_rotate_once, kt_setup_audited, kt_teardown),
        cmocka_unit_test_setup_teardown(test_config_kicks_a_scan, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_fail_closed, kt_setup_audited, kt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
