/*
 * test_sys_audit.c - the sys/ endpoints of the audit log through kms_api_handle: the device
 * list, audit-hash (the same HMAC the log holds), the refusals of enabling and disabling
 * devices over the API, and sys/audit/events with its filters and their refusals; also what
 * they answer when no device is configured.
 */
#include "tests/engine/engine_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *str(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

/* Every line of the audit log, parsed. */
static json_t *log_lines(struct kt *t)
{
    json_t *arr = json_array();
    FILE *fp = fopen(t->audit_path, "r");
    char *line = NULL;
    size_t cap = 0;
    assert_non_null(fp);
    while (getline(&line, &cap, fp) > 0) {
        json_t *l = json_loads(line, 0, NULL);
        assert_non_null(l);
        json_array_append_new(arr, l);
    }
    free(line);
    fclose(fp);
    return arr;
}

static void test_list_and_refusals(void **state)
{
    struct kt *t = *state;
    json_t *b = kt_ok(t, 200, "GET", "/v1/sys/audit", NULL, NULL);
    json_t *dev = kt_data(b, "file/");
    assert_string_equal(str(dev, "type"), "file");
    assert_string_equal(str(dev, "path"), "file/");
    assert_string_equal(str(json_object_get(dev, "options"), "file_path"), t->audit_path);
    assert_string_equal(str(json_object_get(dev, "options"), "fsync"), "never");
    assert_string_equal(str(json_object_get(dev, "options"), "mode"), "0600");
    assert_string_equal(str(json_object_get(dev, "options"), "hmac_accessor"), "true");
    assert_non_null(json_object_get(b, "file/")); /* sys/ top-level copy */
    json_decref(b);

    b = kt_ok(t, 400, "POST", "/v1/sys/audit/file2", NULL, "{\"type\":\"file\"}");
    assert_string_equal(kt_err(b), "cannot enable audit device via API; use declarative, "
                                   "config-based audit device management instead");
    json_decref(b);
    b = kt_ok(t, 400, "DELETE", "/v1/sys/audit/file", NULL, NULL);
    assert_string_equal(kt_err(b), "cannot disable audit device via API; use declarative, "
                                   "config-based audit device management instead");
    json_decref(b);
}

static void test_hash_matches_log(void **state)
{
    struct kt *t = *state;
    json_decref(kt_ok(t, 200, "POST", "/v1/transit/keys/h", NULL, "{}"));
    json_decref(kt_ok(t, 200, "POST", "/v1/transit/encrypt/h", NULL, "{\"plaintext\":\"aGk=\"}"));
    json_t *b = kt_ok(t, 200, "POST", "/v1/sys/audit-hash/file", NULL, "{\"input\":\"aGk=\"}");
    char hash[128];
    snprintf(hash, sizeof(hash), "%s", json_string_value(kt_data(b, "hash")));
    assert_string_equal(str(b, "hash"), hash); /* top-level copy */
    json_decref(b);
    assert_true(strncmp(hash, "hmac-sha256:", 12) == 0);
    /* the log holds exactly that value for the plaintext */
    json_t *lines = log_lines(t);
    bool seen = false;
    size_t i;
    json_t *l;
    json_array_foreach(lines, i, l)
    {
        const char *p = str(json_object_get(json_object_get(l, "request"), "data"), "plaintext");
        seen = seen || strcmp(p, hash) == 0;
    }
    json_decref(lines);
    assert_true(seen);
    /* a path that is not clean is no route: "//file" does not name the device */
    b = kt_ok(t, 404, "POST", "/v1/sys/audit-hash//file", NULL, "{\"input\":\"aGk=\"}");
    assert_string_equal(kt_err(b), "1 error occurred:\n\t* unsupported path\n\n");
    json_decref(b);

    b = kt_ok(t, 400, "POST", "/v1/sys/audit-hash/file", NULL, "{}");
    assert_string_equal(kt_err(b), "the \"input\" parameter is empty");
    json_decref(b);
    b = kt_ok(t, 400, "POST", "/v1/sys/audit-hash/file", NULL, "{\"input\":\"\"}");
    json_decref(b);
    b = kt_ok(t, 400, "POST", "/v1/sys/audit-hash/other", NULL, "{\"input\":\"x\"}");
    assert_string_equal(kt_err(b), "unknown audit backend other");
    json_decref(b);
    /* reading is not served */
    json_decref(kt_ok(t, 405, "GET", "/v1/sys/audit-hash/file", NULL, NULL));
}

/* The events of a query (borrowed from *body, which the caller decrefs). */
static json_t *events(struct kt *t, const char *query, json_t **body)
{
    char target[256];
    snprintf(target, sizeof(target), "/v1/sys/audit/events%s", query);
    *body = kt_ok(t, 200, "GET", target, NULL, NULL);
    assert_string_equal(json_string_value(kt_data(*body, "device")), "file");
    return kt_data(*body, "events");
}

static void test_events(void **state)
{
    struct kt *t = *state;
    json_t *b = NULL;
    json_decref(kt_ok(t, 200, "POST", "/v1/transit/keys/e1", NULL, "{}"));
    json_decref(kt_ok(t, 200, "POST", "/v1/transit/encrypt/e1", NULL, "{\"plaintext\":\"aGk=\"}"));
    json_decref(kt_ok(t, 200, "POST", "/v1/transit/encrypt/e1", NULL, "{\"plaintext\":\"aGk=\"}"));
    assert_int_equal(kt_call(t, "GET", "/v1/transit/keys/e1", "bad-token", NULL, NULL, NULL), 403);

    json_t *ev = events(t, "", &b);
    assert_int_equal(json_array_size(ev), 4);
    assert_string_equal(str(json_array_get(ev, 0), "op"), "create");
    assert_false(json_is_true(kt_data(b, "truncated")));
    json_decref(b);

    ev = events(t, "?op=encrypt", &b);
    assert_int_equal(json_array_size(ev), 2);
    assert_string_equal(str(json_array_get(ev, 0), "key"), "e1");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(ev, 0), "key_version")), 1);
    json_decref(b);
    ev = events(t, "?op=encrypt&limit=1", &b);
    assert_int_equal(json_array_size(ev), 1);
    assert_true(json_is_true(kt_data(b, "truncated")));
    json_decref(b);
    ev = events(t, "?result=denied", &b);
    assert_int_equal(json_array_size(ev), 1);
    assert_string_equal(str(json_array_get(ev, 0), "path"), "transit/keys/e1");
    json_decref(b);
    ev = events(t, "?result=allowed&key=e1&resource=KMSKey&subject=root&namespace=root&device=file",
                &b);
    assert_int_equal(json_array_size(ev), 3);
    json_decref(b);
    ev = events(t, "?since=1h&until=2999-01-01T00:00:00Z", &b);
    /* the four requests and the five earlier events queries (each audited itself) */
    assert_int_equal(json_array_size(ev), 9);
    json_decref(b);
    ev = events(t, "?until=1000000000", &b);
    assert_int_equal(json_array_size(ev), 0);
    json_decref(b);

    /* the events query's own response line does not copy the events into the log */
    json_t *lines = log_lines(t);
    json_t *last = json_array_get(lines, json_array_size(lines) - 1);
    assert_string_equal(str(json_object_get(last, "request"), "path"), "sys/audit/events");
    assert_null(json_object_get(json_object_get(last, "response"), "data"));
    json_decref(lines);

    static const struct {
        const char *query, *err;
    } bad[] = {
        {"?since=yesterday", "since: use a duration (24h), RFC 3339 or epoch seconds"},
        {"?until=later", "until: use a duration (24h), RFC 3339 or epoch seconds"},
        {"?limit=0", "limit must be between 1 and 100000"},
        {"?limit=100001", "limit must be between 1 and 100000"},
        {"?result=maybe", "result must be allowed, denied or error"},
        {"?device=nope", "unknown audit backend nope"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char target[128];
        snprintf(target, sizeof(target), "/v1/sys/audit/events%s", bad[i].query);
        b = kt_ok(t, 400, "GET", target, NULL, NULL);
        assert_string_equal(kt_err(b), bad[i].err);
        json_decref(b);
    }
}

static void test_without_devices(void **state)
{
    struct kt *t = *state;
    json_t *b = kt_ok(t, 200, "GET", "/v1/sys/audit", NULL, NULL);
    assert_int_equal(json_object_size(json_object_get(b, "data")), 0);
    json_decref(b);
    b = kt_ok(t, 400, "GET", "/v1/sys/audit/events", NULL, NULL);
    assert_string_equal(kt_err(b), "no audit device is configured");
    json_decref(b);
    b = kt_ok(t, 400, "POST", "/v1/sys/audit-hash/file", NULL, "{\"input\":\"x\"}");
    assert_string_equal(kt_err(b), "unknown audit backend file");
    json_decref(b);
}

static void test_sudo_needed(void **state)
{
    struct kt *t = *state;
    json_decref(kt_ok(t, 204, "POST", "/v1/sys/policy/auditor", NULL,
                      "{\"policy\":\"path \\\"sys/audit*\\\" { capabilities = [\\\"read\\\", "
                      "\\\"list\\\", \\\"update\\\"] }\"}"));
    json_decref(kt_ok(t, 200, "POST", "/v1/auth/token/create", NULL,
                      "{\"id\":\"auditor\",\"policies\":[\"auditor\"]}"));
    json_t *b = NULL;
    assert_int_equal(kt_call(t, "GET", "/v1/sys/audit", "auditor", NULL, NULL, &b), 403);
    json_decref(b);
    assert_int_equal(kt_call(t, "GET", "/v1/sys/audit/events", "auditor", NULL, NULL, &b), 403);
    json_decref(b);
    /* audit-hash is not root-protected */
    assert_int_equal(
        kt_call(t, "POST", "/v1/sys/audit-hash/file", "auditor", NULL, "{\"input\":\"x\"}", &b),
        200);
    json_decref(b);
}

/* A body of n one-character strings under "junk", plus `extra` fields. */
static char *junk_body(size_t n, const char *extra)
{
    size_t cap = n * 4 + strlen(extra) + 64;
    char *b = malloc(cap);
    assert_non_null(b);
    size_t o = (size_t)snprintf(b, cap, "{%s\"junk\":[", extra);
    for (size_t i = 0; i < n; i++) {
        o += (size_t)snprintf(b + o, cap - o, "%s\"a\"", i ? "," : "");
    }
    snprintf(b + o, cap - o, "]}");
    return b;
}

/* The request block of the last line whose request path is `path`. */
static json_t *last_request(struct kt *t, const char *path)
{
    json_t *lines = log_lines(t), *found = NULL;
    size_t i;
    json_t *l;
    json_array_foreach(lines, i, l)
    {
        json_t *r = json_object_get(l, "request");
        if (strcmp(str(r, "path"), path) == 0) {
            json_decref(found);
            found = json_incref(r);
        }
    }
    json_decref(lines);
    assert_non_null(found);
    return found;
}

/*
 * A body of many values in a request no token allows (a wrong token; a login, which needs
 * none) is not copied into the audit lines, HMAC by HMAC: the lines say it was left out. A
 * small body is recorded as always, and so is any body of an allowed request.
 */
static void test_unauthenticated_bodies_bounded(void **state)
{
    struct kt *t = *state;
    char *big = junk_body(300, "");
    json_t *b = NULL;
    assert_int_equal(kt_call(t, "POST", "/v1/transit/encrypt/k", "not-a-token", NULL, big, &b),
                     403);
    json_decref(b);
    json_t *r = last_request(t, "transit/encrypt/k");
    assert_null(json_object_get(r, "data"));
    assert_non_null(strstr(str(r, "data_omitted"), "more than 256 values"));
    json_decref(r);

    char *login = junk_body(300, "\"role\":\"x\",\"jwt\":\"x\",");
    (void)kt_call(t, "POST", "/v1/auth/token/create-orphan", NULL, NULL, login, &b);
    json_decref(b);
    r = last_request(t, "auth/token/create-orphan");
    assert_null(json_object_get(r, "data"));
    json_decref(r);

    char *small = junk_body(10, "");
    assert_int_equal(kt_call(t, "POST", "/v1/transit/encrypt/k", "not-a-token", NULL, small, &b),
                     403);
    json_decref(b);
    r = last_request(t, "transit/encrypt/k");
    assert_true(json_is_object(json_object_get(r, "data")));
    json_decref(r);

    /* allowed: recorded whatever its size */
    char *ok = junk_body(300, "\"plaintext\":\"aGk=\",");
    json_decref(kt_ok(t, 200, "POST", "/v1/transit/encrypt/k", NULL, ok));
    r = last_request(t, "transit/encrypt/k");
    assert_int_equal(json_array_size(json_object_get(json_object_get(r, "data"), "junk")), 300);
    json_decref(r);
    free(big);
    free(login);
    free(small);
    free(ok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_list_and_refusals, kt_setup_audited, kt_teardown),
        cmocka_unit_test_setup_teardown(test_hash_matches_log, kt_setup_audited, kt_teardown),
        cmocka_unit_test_setup_teardown(test_events, kt_setup_audited, kt_teardown),
        cmocka_unit_test_setup_teardown(test_without_devices, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_sudo_needed, kt_setup_audited, kt_teardown),
        cmocka_unit_test_setup_teardown(test_unauthenticated_bodies_bounded, kt_setup_audited,
                                        kt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
