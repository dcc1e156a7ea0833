/*
 * test_sys.c - the system backend through kms_api_handle: health and its status codes, seal
 * status, init (before and after), metrics in both formats, and the namespace/mount registry
 * behind sys/namespaces and sys/mounts (create, read, list, tune, delete, refusals, purge of
 * what a mount or namespace held, and persistence across a restart).
 */
#include "tests/engine/engine_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Replace the fixture's API with one over a brand-new, uninitialised store. */
static void fresh_uninitialised(struct kt *t)
{
    struct kms_storage_opts so = {.map_size = 0, .nosync = true, .create = true};
    struct kms_err err;
    uint8_t seal[32] = {7, 1, 2, 3};
    char path[128];
    kms_api_destroy(&t->api);
    kms_storage_close(&t->st);
    snprintf(path, sizeof(path), "%s/data.mdb", t->dir);
    assert_int_equal(unlink(path), 0);
    snprintf(path, sizeof(path), "%s/lock.mdb", t->dir);
    (void)unlink(path);
    assert_int_equal(kms_storage_open(t->dir, seal, &so, &t->st, &err), 0);
    assert_int_equal(kms_engines_create(t->st, &t->opts, &t->eopts, &t->api, &err), 0);
    assert_false(kms_api_initialized(t->api));
}

/* A request whose body is not JSON: the status, content type and text (caller frees). */
static int call_text(struct kt *t, const char *target, char **text, char *ctype, size_t n)
{
    struct kms_http_header h[1] = {{"X-Vault-Token", "root"}};
    struct kms_http_req req;
    struct kms_http_resp resp;
    memset(&req, 0, sizeof(req));
    req.method = "GET";
    req.target = target;
    req.headers = h;
    req.nheaders = 1;
    req.remote_addr = "127.0.0.1";
    kms_api_handle(t->api, &req, &resp);
    *text = strndup(resp.body ? resp.body : "", resp.body_len);
    snprintf(ctype, n, "%s", resp.content_type);
    int status = resp.status;
    kms_http_resp_dispose(&resp);
    return status;
}

static const char *str(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static void test_health(void **state)
{
    struct kt *t = *state;
    json_t *b = NULL;
    assert_int_equal(kt_call(t, "GET", "/v1/sys/health", NULL, NULL, NULL, &b), 200);
    assert_true(json_is_true(json_object_get(b, "initialized")));
    assert_true(json_is_false(json_object_get(b, "sealed")));
    assert_true(json_is_false(json_object_get(b, "standby")));
    assert_true(json_is_false(json_object_get(b, "performance_standby")));
    assert_string_equal(str(b, "version"), "test");
    assert_string_equal(str(b, "cluster_name"), "kmsd");
    assert_int_equal(strlen(str(b, "cluster_id")), 36);
    assert_string_equal(str(b, "replication_dr_mode"), "disabled");
    assert_true(json_integer_value(json_object_get(b, "server_time_utc")) > 1600000000);
    assert_null(json_object_get(b, "data")); /* a raw body, no envelope */
    json_decref(b);
    /* activecode chooses the status; a non-int is a 400; uninitcode does not apply */
    assert_int_equal(kt_call(t, "GET", "/v1/sys/health?activecode=473", NULL, NULL, NULL, &b), 473);
    json_decref(b);
    assert_int_equal(
        kt_call(t, "GET", "/v1/sys/health?uninitcode=200&standbyok=true", NULL, NULL, NULL, &b),
        200);
    json_decref(b);
    assert_int_equal(kt_call(t, "GET", "/v1/sys/health?activecode=x", NULL, NULL, NULL, &b), 400);
    assert_non_null(strstr(kt_err(b), "\"activecode\""));
    json_decref(b);
    /* no token needed; a bad one does not matter either */
    assert_int_equal(kt_call(t, "GET", "/v1/sys/health", "bogus", NULL, NULL, NULL), 200);
    /* only GET */
    assert_int_equal(kt_call(t, "POST", "/v1/sys/health", "root", NULL, "{}", &b), 405);
    json_decref(b);

    b = NULL;
    assert_int_equal(kt_call(t, "GET", "/v1/sys/seal-status", NULL, NULL, NULL, &b), 200);
    assert_string_equal(str(b, "type"), "static");
    assert_true(json_is_false(json_object_get(b, "sealed")));
    assert_int_equal(json_integer_value(json_object_get(b, "t")), 1);
    assert_int_equal(json_integer_value(json_object_get(b, "n")), 1);
    assert_int_equal(json_integer_value(json_object_get(b, "progress")), 0);
    assert_string_equal(str(b, "storage_type"), "lmdb");
    assert_string_equal(str(b, "cluster_name"), "kmsd");
    json_decref(b);
}

static void test_init(void **state)
{
    struct kt *t = *state;
    json_t *b = NULL;
    assert_int_equal(kt_call(t, "GET", "/v1/sys/init", NULL, NULL, NULL, &b), 200);
    assert_true(json_is_true(json_object_get(b, "initialized")));
    json_decref(b);
    assert_int_equal(kt_call(t, "POST", "/v1/sys/init", NULL, NULL, "{}", &b), 400);
    assert_string_equal(kt_err(b), "Vault is already initialized");
    json_decref(b);

    fresh_uninitialised(t);
    assert_int_equal(kt_call(t, "GET", "/v1/sys/init", NULL, NULL, NULL, &b), 200);
    assert_true(json_is_false(json_object_get(b, "initialized")));
    json_decref(b);
    /* uninitialised: health says 501 (or uninitcode), with no cluster fields */
    assert_int_equal(kt_call(t, "GET", "/v1/sys/health", NULL, NULL, NULL, &b), 501);
    assert_true(json_is_true(json_object_get(b, "sealed")));
    assert_null(json_object_get(b, "cluster_id"));
    json_decref(b);
    assert_int_equal(
        kt_call(t, "GET", "/v1/sys/health?uninitcode=200&activecode=500", NULL, NULL, NULL, &b),
        200);
    json_decref(b);
    assert_int_equal(kt_call(t, "GET", "/v1/sys/seal-status", NULL, NULL, NULL, &b), 200);
    assert_true(json_is_true(json_object_get(b, "sealed")));
    assert_null(json_object_get(b, "cluster_id"));
    json_decref(b);

    /* init returns a root token (Vault's key fields empty: no unseal keys) that works */
    assert_int_equal(kt_call(t, "POST", "/v1/sys/init", NULL, NULL,
                             "{\"secret_shares\":1,\"secret_threshold\":1}", &b),
                     200);
    assert_int_equal(json_array_size(json_object_get(b, "keys")), 0);
    char root[KMS_API_TOKEN_MAX];
    snprintf(root, sizeof(root), "%s", str(b, "root_token"));
    json_decref(b);
    assert_true(strlen(root) > 10);
    assert_true(kms_api_initialized(t->api));
    assert_int_equal(kt_call(t, "GET", "/v1/sys/mounts", root, NULL, NULL, &b), 200);
    /* no dev bootstrap: only sys/ is mounted */
    assert_non_null(json_object_get(b, "sys/"));
    assert_null(json_object_get(b, "transit/"));
    json_decref(b);
    assert_int_equal(kt_call(t, "POST", "/v1/sys/init", NULL, NULL, NULL, &b), 400);
    json_decref(b);
    /* after a restart the store is still initialised, with the same cluster id */
    assert_int_equal(kt_call(t, "GET", "/v1/sys/health", NULL, NULL, NULL, &b), 200);
    char cid[64];
    snprintf(cid, sizeof(cid), "%s", str(b, "cluster_id"));
    json_decref(b);
    kt_reopen(t);
    assert_int_equal(kt_call(t, "GET", "/v1/sys/health", NULL, NULL, NULL, &b), 200);
    assert_string_equal(str(b, "cluster_id"), cid);
    json_decref(b);
    assert_int_equal(kt_call(t, "GET", "/v1/sys/mounts", root, NULL, NULL, NULL), 200);
}

/* A store that lost its init record (a damaged page) but holds tokens is not initialised
 * again: that would hand out a new root token over the old keys. */
static void test_init_refused_on_a_store_with_records(void **state)
{
    struct kt *t = *state;
    struct kms_txn *txn = NULL;
    json_t *b = NULL;

    fresh_uninitialised(t);
    assert_int_equal(kt_call(t, "POST", "/v1/sys/init", NULL, NULL, "{}", &b), 200);
    json_decref(b);
    assert_int_equal(kms_storage_txn_begin(t->st, true, &txn), 0);
    assert_int_equal(kms_storage_del(txn, KMS_DB_META, "init", 4), 0);
    assert_int_equal(kms_storage_txn_commit(&txn), 0);
    kms_api_destroy(&t->api); /* a restart on the damaged store */
    struct kms_err err;
    assert_int_equal(kms_engines_create(t->st, &t->opts, &t->eopts, &t->api, &err), 0);
    assert_false(kms_api_initialized(t->api));
    assert_int_equal(kt_call(t, "POST", "/v1/sys/init", NULL, NULL, "{}", &b), 500);
    assert_string_equal(kt_err(b), "the store holds tokens or keys but no init record: it is "
                                   "damaged and is not initialised again; restore it from a "
                                   "backup");
    json_decref(b);
    assert_false(kms_api_initialized(t->api));
    /* an empty store still initialises */
    fresh_uninitialised(t);
    assert_int_equal(kt_call(t, "POST", "/v1/sys/init", NULL, NULL, "{}", &b), 200);
    json_decref(b);
}

static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = strstr(text, line); p != NULL; p = strstr(p + 1, line)) {
        if ((p == text || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0')) {
            return true;
        }
    }
    return false;
}

static void test_metrics(void **state)
{
    struct kt *t = *state;
    json_t *b = NULL;
    char *text = NULL;
    char ctype[64];
    /* traffic to count: a 200, a 299 ("other"), an unmatched 404, a batch of three */
    assert_int_equal(kt_call(t, "GET", "/v1/sys/health", NULL, NULL, NULL, NULL), 200);
    assert_int_equal(kt_call(t, "GET", "/v1/sys/health?activecode=299", NULL, NULL, NULL, NULL),
                     299);
    assert_int_equal(kt_call(t, "GET", "/v2/nothing", NULL, NULL, NULL, NULL), 404);
    json_decref(kt_ok(t, 200, "POST", "/v1/transit/keys/m1", NULL, "{}"));
    json_decref(kt_ok(t, 200, "POST", "/v1/transit/keys/m2", NULL, "{}"));
    json_decref(kt_ok(t, 200, "POST", "/v1/transit/encrypt/m1", NULL,
                      "{\"batch_input\":[{\"plaintext\":\"aGk=\"},{\"plaintext\":\"aGk=\"},"
                      "{\"plaintext\":\"aGk=\"}]}"));

    assert_int_equal(call_text(t, "/v1/sys/metrics?format=prometheus", &text, ctype, sizeof(ctype)),
                     200);
    assert_string_equal(ctype, "text/plain; version=0.0.4; charset=utf-8");
    assert_true(has_line(text, "# TYPE kmsd_requests_total counter"));
    assert_non_null(strstr(text, "kmsd_requests_total{route=\"system:health\",code=\"200\"} "));
    assert_non_null(strstr(text, "kmsd_requests_total{route=\"system:health\",code=\"other\"} "));
    assert_non_null(strstr(text, "kmsd_requests_total{route=\"unmatched\",code=\"404\"} "));
    assert_non_null(strstr(text, "kmsd_request_duration_seconds_bucket{route=\"system:health\","
                                 "le=\"+Inf\"} "));
    assert_non_null(strstr(text, "kmsd_request_duration_seconds_count{route=\"system:health\"} "));
    assert_non_null(strstr(text, "kmsd_batch_items_total{route=\"transit:encrypt/:name\"} "));
    assert_non_null(strstr(text, "kmsd_logins_total{result=\"denied\"} "));
    assert_non_null(strstr(text, "kmsd_key_cache_requests_total{result=\"hit\"} "));
    /* gauges read from this store */
    assert_true(has_line(text, "kmsd_transit_keys 2"));
    assert_true(has_line(text, "kmsd_kmskeys 0"));
    /* no audit device: no audit samples */
    assert_null(strstr(text, "kmsd_audit_queue_batches"));
    free(text);

    /* the JSON form: the same samples, one string each, comments left out */
    b = kt_ok(t, 200, "GET", "/v1/sys/metrics", NULL, NULL);
    json_t *samples = kt_data(b, "samples");
    assert_true(json_array_size(samples) > 10);
    bool found = false;
    size_t i;
    json_t *v;
    json_array_foreach(samples, i, v)
    {
        assert_true(json_string_value(v)[0] != '#');
        found = found || strcmp(json_string_value(v), "kmsd_transit_keys 2") == 0;
    }
    assert_true(found);
    json_decref(b);
    b = kt_ok(t, 400, "GET", "/v1/sys/metrics?format=xml", NULL, NULL);
    assert_string_equal(kt_err(b), "unsupported metrics format \"xml\": use \"prometheus\"");
    json_decref(b);
    /* it needs a token */
    assert_int_equal(kt_call(t, "GET", "/v1/sys/metrics", NULL, NULL, NULL, NULL), 403);
}

static void test_metrics_audited(void **state)
{
    struct kt *t = *state;
    char *text = NULL;
    char ctype[64];
    assert_int_equal(call_text(t, "/v1/sys/metrics?format=prometheus", &text, ctype, sizeof(ctype)),
                     200);
    assert_non_null(strstr(text, "\nkmsd_audit_queue_batches "));
    assert_non_null(strstr(text, "\nkmsd_audit_failures_total 0\n"));
    free(text);
}

static void test_mounts(void **state)
{
    struct kt *t = *state;
    json_t *b = NULL;
    /* the list: sys/ and the dev transit/, at the top level and under data */
    b = kt_ok(t, 200, "GET", "/v1/sys/mounts", NULL, NULL);
    assert_string_equal(str(json_object_get(b, "sys/"), "type"), "system");
    assert_string_equal(str(json_object_get(b, "transit/"), "type"), "transit");
    assert_string_equal(str(kt_data(b, "transit/"), "type"), "transit");
    assert_true(json_is_object(json_object_get(kt_data(b, "transit/"), "config")));
    json_decref(b);

    json_decref(kt_ok(t, 204, "POST", "/v1/sys/mounts/t2", NULL,
                      "{\"type\":\"transit\",\"description\":\"second\",\"config\":{}}"));
    b = kt_ok(t, 200, "GET", "/v1/sys/mounts/t2", NULL, NULL);
    assert_string_equal(str(json_object_get(b, "data"), "description"), "second");
    assert_string_equal(str(b, "type"), "transit"); /* sys/ top-level copy */
    assert_true(strncmp(str(b, "accessor"), "transit_", 8) == 0);
    json_decref(b);
    /* a trailing slash names the same mount; a path that is not clean is no route (the ACL
     * judged it as sent, the handler would have trimmed it to t2/) */
    json_decref(kt_ok(t, 200, "GET", "/v1/sys/mounts/t2/", NULL, NULL));
    static const char *const unclean[] = {"/v1/sys/mounts//t2/", "/v1/sys/mounts//t2",
                                          "/v1/sys/mounts/./t2", "/v1/sys/mounts/t2/.",
                                          "/v1/sys/mounts/t2//tune"};
    for (size_t i = 0; i < sizeof(unclean) / sizeof(unclean[0]); i++) {
        b = kt_ok(t, 404, "GET", unclean[i], NULL, NULL);
        assert_string_equal(kt_err(b), "1 error occurred:\n\t* unsupported path\n\n");
        json_decref(b);
    }
    /* tune: read back as Vault shows it; writes accepted and ignored */
    b = kt_ok(t, 200, "GET", "/v1/sys/mounts/t2/tune", NULL, NULL);
    assert_int_equal(json_integer_value(kt_data(b, "default_lease_ttl")), 2764800);
    assert_string_equal(json_string_value(kt_data(b, "description")), "second");
    json_decref(b);
    json_decref(kt_ok(t, 204, "POST", "/v1/sys/mounts/t2/tune", NULL, "{\"max_lease_ttl\":60}"));
    json_decref(kt_ok(t, 204, "DELETE", "/v1/sys/mounts/t2/tune", NULL, NULL));
    json_decref(kt_ok(t, 200, "GET", "/v1/sys/mounts/t2", NULL, NULL));
    b = kt_ok(t, 400, "GET", "/v1/sys/mounts/nope/tune", NULL, NULL);
    assert_string_equal(kt_err(b), "cannot fetch mount configuration: no mount at nope/");
    json_decref(b);
    b = kt_ok(t, 400, "POST", "/v1/sys/mounts/nope/tune", NULL, "{}");
    json_decref(b);
    b = kt_ok(t, 400, "GET", "/v1/sys/mounts/nope", NULL, NULL);
    assert_string_equal(kt_err(b), "No secret engine mount at nope/");
    json_decref(b);

    /* refusals */
    static const struct {
        const char *path, *body, *err;
    } bad[] = {
        {"/v1/sys/mounts/t2", "{\"type\":\"transit\"}", "path is already in use at t2/"},
        {"/v1/sys/mounts/t2/sub", "{\"type\":\"transit\"}", "path is already in use at t2/"},
        {"/v1/sys/mounts/kv", "{\"type\":\"kv\"}", "plugin not found in the catalog: kv"},
        {"/v1/sys/mounts/kv", "{}", "backend type must be specified as a string"},
        {"/v1/sys/mounts/kv", "{\"type\":\"\"}", "backend type must be specified as a string"},
        {"/v1/sys/mounts/sys/x", "{\"type\":\"transit\"}",
         "cannot mount under reserved path \"sys/\""},
        {"/v1/sys/mounts/auth/x", "{\"type\":\"transit\"}",
         "cannot mount under reserved path \"auth/\""},
        {"/v1/sys/mounts/a..b", "{\"type\":\"transit\"}", "path cannot contain '..'"},
        {"/v1/sys/mounts//", "{\"type\":\"transit\"}", "path cannot be empty"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *r = NULL;
        const char *target = bad[i].path;
        int st = kt_call(t, "POST", target, "root", NULL, bad[i].body, &r);
        if (strcmp(target, "/v1/sys/mounts//") == 0) {
            /* a write to a path ending in '/' never reaches the handler */
            assert_int_equal(st, 400);
            json_decref(r);
            continue;
        }
        if (st != 400 || strcmp(kt_err(r), bad[i].err) != 0) {
            fprintf(stderr, "%s %s -> %d %s\n", target, bad[i].body, st, kt_err(r));
        }
        assert_int_equal(st, 400);
        assert_string_equal(kt_err(r), bad[i].err);
        json_decref(r);
    }
    b = kt_ok(t, 400, "GET", "/v1/sys/mounts/", NULL, NULL);
    assert_string_equal(kt_err(b), "path cannot be empty");
    json_decref(b);

    /* a name that only shares a prefix with a mount is free */
    json_decref(kt_ok(t, 204, "POST", "/v1/sys/mounts/t", NULL, "{\"type\":\"transit\"}"));
    json_decref(kt_ok(t, 204, "DELETE", "/v1/sys/mounts/t", NULL, NULL));

    /* removing a mount removes its keys: a new mount at the same path starts empty */
    json_decref(kt_ok(t, 200, "POST", "/v1/t2/keys/k", NULL, "{}"));
    json_decref(kt_ok(t, 200, "GET", "/v1/t2/keys/k", NULL, NULL));
    json_decref(kt_ok(t, 204, "DELETE", "/v1/sys/mounts/t2", NULL, NULL));
    json_decref(kt_ok(t, 404, "GET", "/v1/t2/keys/k", NULL, NULL));
    json_decref(kt_ok(t, 204, "POST", "/v1/sys/mounts/t2", NULL, "{\"type\":\"transit\"}"));
    json_decref(kt_ok(t, 404, "GET", "/v1/t2/keys/k", NULL, NULL));
    /* removing what is not there succeeds */
    json_decref(kt_ok(t, 204, "DELETE", "/v1/sys/mounts/never", NULL, NULL));

    /* auth methods are not secret engines: not listed here */
    json_decref(kt_ok(t, 204, "POST", "/v1/sys/auth/k8s", NULL, "{\"type\":\"kubernetes\"}"));
    b = kt_ok(t, 200, "GET", "/v1/sys/mounts", NULL, NULL);
    assert_null(json_object_get(b, "auth/k8s/"));
    assert_non_null(json_object_get(b, "t2/"));
    json_decref(b);

    /* mounts survive a restart */
    kt_reopen(t);
    b = kt_ok(t, 200, "GET", "/v1/sys/mounts", NULL, NULL);
    assert_non_null(json_object_get(b, "t2/"));
    json_decref(b);
}

static void test_registry_direct(void **state)
{
    struct kt *t = *state;
    struct kms_err err;
    struct kms_mount m;
    struct kms_ns ns;
    /* the catalog is the set of mountable engines */
    kms_err_clear(&err);
    assert_int_equal(kms_registry_mount_add(t->api, "root", "x/", "nope", NULL, &m, &err), -1);
    assert_int_equal(err.status, 400);
    assert_string_equal(err.msg, "plugin not found in the catalog: nope");
    assert_null(kms_api_engine_find(t->api, "system")); /* built-in, not mountable */
    assert_null(kms_api_engine_find(t->api, "kms"));
    assert_non_null(kms_api_engine_find(t->api, "transit"));
    assert_non_null(kms_api_engine_find(t->api, "kubernetes"));
    assert_int_equal(kms_registry_mount_add(t->api, "root", "x/", "transit", NULL, NULL, &err), 0);
    assert_int_equal(kms_registry_mount_get(t->api, "root", "x/", &m), 0);
    assert_string_equal(m.description, "");
    /* longest prefix wins; the bare mount name resolves too */
    assert_int_equal(kms_registry_mount_resolve(t->api, "root", "x/keys/k", &m), 0);
    assert_string_equal(m.path, "x/");
    assert_int_equal(kms_registry_mount_resolve(t->api, "root", "x", &m), 0);
    assert_int_equal(kms_registry_mount_resolve(t->api, "root", "xy/keys", &m),
                     KMS_STORAGE_NOTFOUND);
    assert_int_equal(kms_registry_mount_resolve(t->api, "nons", "x/keys", &m),
                     KMS_STORAGE_NOTFOUND);
    assert_int_equal(kms_registry_mount_remove(t->api, "root", "x/", &err), 0);
    assert_int_equal(kms_registry_mount_remove(t->api, "root", "x/", &err), KMS_STORAGE_NOTFOUND);
    /* a mount and its settings are one record, written once: after a restart both are there */
    json_t *cfg = json_pack("{s:I}", "default_lease_ttl", (json_int_t)60);
    json_t *opts = json_pack("{s:s}", "version", "2");
    assert_int_equal(kms_registry_mount_add_tuned(t->api, "root", "y/", "transit", "tuned", cfg,
                                                  opts, NULL, &err),
                     0);
    json_decref(cfg);
    json_decref(opts);
    kt_reopen(t);
    json_t *tuning = NULL;
    assert_int_equal(kms_registry_mount_tuning(t->api, "root", "y/", &tuning), 0);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(tuning, "config"), "default_lease_ttl")),
        60);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(tuning, "options"), "version")), "2");
    json_decref(tuning);
    assert_int_equal(kms_registry_mount_get(t->api, "root", "y/", &m), 0);
    assert_string_equal(m.description, "tuned");
    /* a description the record cannot hold is refused, not cut */
    char longdesc[300];
    memset(longdesc, 'd', sizeof(longdesc) - 1);
    longdesc[sizeof(longdesc) - 1] = '\0';
    assert_int_equal(kms_registry_mount_add(t->api, "root", "z/", "transit", longdesc, NULL, &err),
                     -1);
    assert_int_equal(err.status, 400);
    assert_int_equal(kms_registry_mount_get(t->api, "root", "z/", &m), KMS_STORAGE_NOTFOUND);
    /* namespace paths must be one segment plus '/' */
    assert_int_equal(kms_registry_ns_create(t->api, "a", &ns, &err), -1);
    assert_string_equal(err.msg, "invalid namespace path");
    assert_int_equal(kms_registry_ns_create(t->api, "/", &ns, &err), -1);
    assert_int_equal(kms_registry_ns_create(t->api, "ok/", &ns, &err), 0);
    assert_int_equal(kms_registry_ns_create(t->api, "ok/", &ns, &err), 1); /* exists */
    assert_int_equal(kms_registry_ns_get(t->api, "root", &ns), 0);
    assert_string_equal(ns.id, "root");
    assert_int_equal(kms_registry_ns_get(t->api, "root/", &ns), 0);
    assert_int_equal(kms_registry_ns_by_id(t->api, "zzzzzz", &ns), KMS_STORAGE_NOTFOUND);
    assert_int_equal(kms_registry_ns_delete(t->api, "nope/", &err), KMS_STORAGE_NOTFOUND);
    /* the root namespace cannot be deleted */
    assert_int_equal(kms_registry_ns_delete(t->api, "", &err), KMS_STORAGE_NOTFOUND);
    /* kms_mount_prefix names a mount's records */
    assert_int_equal(kms_registry_mount_get(t->api, "root", "transit/", &m), 0);
    char prefix[128], want[128];
    kms_mount_prefix(&m, prefix, sizeof(prefix));
    snprintf(want, sizeof(want), "root/%s/", m.uuid);
    assert_string_equal(prefix, want);
}

static void test_namespaces(void **state)
{
    struct kt *t = *state;
    json_t *b = NULL;
    b = kt_ok(t, 404, "LIST", "/v1/sys/namespaces", NULL, NULL);
    assert_int_equal(json_array_size(json_object_get(b, "errors")), 0);
    json_decref(b);
    b = kt_ok(t, 200, "POST", "/v1/sys/namespaces/org1", NULL, "{\"custom_metadata\":{}}");
    char id[16];
    snprintf(id, sizeof(id), "%s", json_string_value(kt_data(b, "id")));
    assert_int_equal(strlen(id), 6);
    assert_string_equal(json_string_value(kt_data(b, "path")), "org1/");
    json_decref(b);
    /* creating it again answers the same namespace */
    b = kt_ok(t, 200, "PUT", "/v1/sys/namespaces/org1", NULL, NULL);
    assert_string_equal(json_string_value(kt_data(b, "id")), id);
    json_decref(b);
    b = kt_ok(t, 200, "GET", "/v1/sys/namespaces/org1", NULL, NULL);
    assert_string_equal(json_string_value(kt_data(b, "id")), id);
    json_decref(b);
    json_decref(kt_ok(t, 404, "GET", "/v1/sys/namespaces/org2", NULL, NULL));
    json_decref(kt_ok(t, 200, "POST", "/v1/sys/namespaces/abc", NULL, NULL));
    json_decref(kt_ok(t, 200, "POST", "/v1/sys/namespaces/team", "org1", NULL));
    json_decref(kt_ok(t, 200, "POST", "/v1/org1/team/sys/namespaces/deep", NULL, NULL));
    /* lists: direct children only, sorted, relative to the namespace listed */
    b = kt_ok(t, 200, "LIST", "/v1/sys/namespaces", NULL, NULL);
    json_t *keys = kt_data(b, "keys");
    assert_int_equal(json_array_size(keys), 2);
    assert_string_equal(json_string_value(json_array_get(keys, 0)), "abc/");
    assert_string_equal(json_string_value(json_array_get(keys, 1)), "org1/");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(kt_data(b, "key_info"), "org1/"), "id")),
        id);
    json_decref(b);
    b = kt_ok(t, 200, "GET", "/v1/sys/namespaces?list=true", "org1", NULL);
    assert_string_equal(json_string_value(json_array_get(kt_data(b, "keys"), 0)), "team/");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(kt_data(b, "key_info"), "team/"), "path")),
                        "org1/team/");
    json_decref(b);

    /* custom_metadata: POST stores (or replaces) it, PATCH merges (RFC 7396), both survive a
     * restart and show in reads and lists */
    b = kt_ok(t, 200, "POST", "/v1/sys/namespaces/org1", NULL,
              "{\"custom_metadata\":{\"team\":\"a\",\"env\":\"prod\"}}");
    assert_string_equal(json_string_value(kt_data(b, "id")), id);
    json_decref(b);
    json_t *md = NULL;
    assert_int_equal(kt_call_ct(t, "PATCH", "/v1/sys/namespaces/org1", "root", NULL,
                                "application/merge-patch+json",
                                "{\"custom_metadata\":{\"team\":null,\"x\":\"y\"}}", &md),
                     200);
    json_decref(md);
    kt_reopen(t);
    b = kt_ok(t, 200, "GET", "/v1/sys/namespaces/org1", NULL, NULL);
    md = kt_data(b, "custom_metadata");
    assert_int_equal(json_object_size(md), 2);
    assert_string_equal(json_string_value(json_object_get(md, "env")), "prod");
    assert_string_equal(json_string_value(json_object_get(md, "x")), "y");
    json_decref(b);
    b = kt_ok(t, 200, "LIST", "/v1/sys/namespaces", NULL, NULL);
    md = json_object_get(json_object_get(kt_data(b, "key_info"), "org1/"), "custom_metadata");
    assert_string_equal(json_string_value(json_object_get(md, "x")), "y");
    json_decref(b);
    static const struct {
        const char *method, *body, *err;
        int status;
    } mdbad[] = {
        {"POST", "{\"custom_metadata\":{\"k\":1}}", "custom_metadata values must be strings", 400},
        {"POST", "{\"custom_metadata\":{\"k\":null}}", "custom_metadata values must be strings",
         400},
        {"PATCH", "{\"custom_metadata\":{\"k\":[]}}",
         "metadata patch can only have string or null values", 400},
        {"PATCH", "{}", "missing required field \"custom_metadata\"", 400},
    };
    for (size_t i = 0; i < sizeof(mdbad) / sizeof(mdbad[0]); i++) {
        json_t *e = NULL;
        assert_int_equal(kt_call_ct(t, mdbad[i].method, "/v1/sys/namespaces/org1", "root", NULL,
                                    "application/merge-patch+json", mdbad[i].body, &e),
                         mdbad[i].status);
        assert_string_equal(kt_err(e), mdbad[i].err);
        json_decref(e);
    }
    json_t *e = NULL;
    assert_int_equal(kt_call_ct(t, "PATCH", "/v1/sys/namespaces/nope", "root", NULL,
                                "application/merge-patch+json",
                                "{\"custom_metadata\":{\"a\":\"b\"}}", &e),
                     404);
    assert_string_equal(kt_err(e), "namespace not found");
    json_decref(e);
    json_decref(kt_ok(t, 404, "GET", "/v1/sys/namespaces/nope", NULL, NULL));
    /* a null patch clears it; a POST without it clears it too (OpenBao replaces) */
    assert_int_equal(kt_call_ct(t, "PATCH", "/v1/sys/namespaces/org1", "root", NULL,
                                "application/merge-patch+json", "{\"custom_metadata\":null}", &e),
                     200);
    assert_int_equal(json_object_size(kt_data(e, "custom_metadata")), 0);
    json_decref(e);
    b = kt_ok(t, 200, "POST", "/v1/sys/namespaces/org1", NULL,
              "{\"custom_metadata\":{\"k\":\"v\"}}");
    json_decref(b);
    b = kt_ok(t, 200, "POST", "/v1/sys/namespaces/org1", NULL, "{}");
    assert_int_equal(json_object_size(kt_data(b, "custom_metadata")), 0);
    json_decref(b);

    /* a namespace with children stays; without, it goes */
    b = kt_ok(t, 400, "DELETE", "/v1/sys/namespaces/org1", NULL, NULL);
    assert_string_equal(kt_err(b),
                        "cannot delete namespace (\"org1/\") containing child namespaces");
    json_decref(b);
    json_decref(kt_ok(t, 204, "DELETE", "/v1/sys/namespaces/deep", "org1/team", NULL));
    json_decref(kt_ok(t, 204, "DELETE", "/v1/sys/namespaces/team", "org1", NULL));
    json_decref(kt_ok(t, 204, "DELETE", "/v1/sys/namespaces/org1", NULL, NULL));
    json_decref(kt_ok(t, 204, "DELETE", "/v1/sys/namespaces/org1", NULL, NULL));
    json_decref(kt_ok(t, 404, "GET", "/v1/sys/namespaces/org1", NULL, NULL));

    /* names Vault refuses */
    static const struct {
        const char *target, *err;
    } bad[] = {
        {"/v1/sys/namespaces/sys", "sys is a reserved path"},
        {"/v1/sys/namespaces/root", "root is a reserved path"},
        {"/v1/sys/namespaces/audit", "audit is a reserved path"},
        /* kmsd's built-in KMSKey API path: a namespace there would take over kms/ */
        {"/v1/sys/namespaces/kms", "kms is a reserved path"},
        {"/v1/sys/namespaces/a%20b", "invalid namespace name \"a b\""},
        {"/v1/sys/namespaces/a%25", "invalid namespace name \"a%\""},
        {"/v1/sys/namespaces/a#b", "invalid namespace name \"a#b\""},
        {"/v1/sys/namespaces/a/b", "namespace name cannot contain '/'"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        b = kt_ok(t, 400, "POST", bad[i].target, NULL, NULL);
        assert_string_equal(kt_err(b), bad[i].err);
        json_decref(b);
    }
    b = kt_ok(t, 400, "GET", "/v1/sys/namespaces/", NULL, NULL);
    assert_string_equal(kt_err(b), "namespace path cannot be empty");
    json_decref(b);
    /* in an organization too: its kms/ keeps answering (the KMSKey API, not a child's 404) */
    json_decref(kt_ok(t, 200, "POST", "/v1/sys/namespaces/orgk", NULL, NULL));
    b = kt_ok(t, 400, "POST", "/v1/sys/namespaces/kms", "orgk", NULL);
    assert_string_equal(kt_err(b), "kms is a reserved path");
    json_decref(b);
    json_decref(kt_ok(t, 404, "GET", "/v1/sys/namespaces/kms", "orgk", NULL));
    json_decref(kt_ok(t, 204, "DELETE", "/v1/sys/namespaces/orgk", NULL, NULL));
    b = kt_ok(t, 400, "POST", "/v1/sys/namespaces/x", NULL, "{\"custom_metadata\":[]}");
    json_decref(b);

    /* namespaces survive a restart with their ids */
    kt_reopen(t);
    b = kt_ok(t, 200, "LIST", "/v1/sys/namespaces", NULL, NULL);
    assert_int_equal(json_array_size(kt_data(b, "keys")), 1);
    json_decref(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_health, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_init, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_init_refused_on_a_store_with_records, kt_setup,
                                        kt_teardown),
        cmocka_unit_test_setup_teardown(test_metrics, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_metrics_audited, kt_setup_audited, kt_teardown),
        cmocka_unit_test_setup_teardown(test_mounts, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_registry_direct, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_namespaces, kt_setup, kt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
