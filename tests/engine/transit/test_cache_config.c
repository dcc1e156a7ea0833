/*
 * test_cache_config.c - GET|POST cache-config: OpenBao's validation and text, the size read
 * back per mount and after a restart, and the size really bounding the mount's key cache
 * (kmsd_key_cache_requests_total: a second pass over 20 keys hits at most 10 of them with
 * size 10, all of them with the shared cache), with no stale key after moving between
 * caches.
 */
#include "tests/engine/transit/transit_util.h"

static uint64_t metric(struct kt *t, const char *line)
{
    size_t len = 0;
    char *text = kms_metrics_prometheus(t->api, &len);
    assert_non_null(text);
    const char *p = strstr(text, line);
    assert_non_null(p);
    uint64_t v = strtoull(p + strlen(line), NULL, 10);
    free(text);
    return v;
}

static uint64_t hits(struct kt *t)
{
    return metric(t, "kmsd_key_cache_requests_total{result=\"hit\"} ");
}

static uint64_t lookups(struct kt *t)
{
    return hits(t) + metric(t, "kmsd_key_cache_requests_total{result=\"miss\"} ");
}

/* Encrypt once with each of keys c0..c19; *nlookups gets the cache lookups made. */
static uint64_t pass(struct kt *t, uint64_t *nlookups)
{
    char pt[16];
    uint64_t h0 = hits(t), l0 = lookups(t);
    for (int i = 0; i < 20; i++) {
        char name[16];
        snprintf(name, sizeof(name), "c%d", i);
        free(tt_encrypt(t, name, tt_b64("x", pt), NULL));
    }
    *nlookups = lookups(t) - l0;
    return hits(t) - h0;
}

static json_int_t size_of(struct kt *t, const char *mount)
{
    char target[64];
    snprintf(target, sizeof(target), "/v1/%s/cache-config", mount);
    json_t *b = tt_req(t, 200, "GET", target, NULL);
    json_int_t v = json_integer_value(kt_data(b, "size"));
    json_decref(b);
    return v;
}

static void test_validation_and_read_back(void **state)
{
    struct kt *t = *state;
    assert_int_equal(size_of(t, "transit"), 0);
    const char *msg = "size must be 0 or a value greater or equal to 10";
    tt_fail(t, 400, "POST", "/v1/transit/cache-config", "{\"size\":9}", msg);
    tt_fail(t, 400, "POST", "/v1/transit/cache-config", "{\"size\":1}", msg);
    tt_fail(t, 400, "POST", "/v1/transit/cache-config", "{\"size\":-5}", msg);
    tt_fail(t, 400, "POST", "/v1/transit/cache-config", "{\"size\":1000001}",
            "size must be at most 1000000 in kmsd");
    assert_int_equal(size_of(t, "transit"), 0);

    json_t *b = tt_req(t, 200, "POST", "/v1/transit/cache-config", "{\"size\":10}");
    assert_int_equal(json_integer_value(kt_data(b, "size")), 10);
    json_decref(b);
    assert_int_equal(size_of(t, "transit"), 10);
    /* PUT as the Go client writes, and a string as the framework coerces it */
    b = tt_req(t, 200, "PUT", "/v1/transit/cache-config", "{\"size\":\"250\"}");
    assert_int_equal(json_integer_value(kt_data(b, "size")), 250);
    json_decref(b);

    /* per mount */
    json_decref(tt_req(t, 204, "POST", "/v1/sys/mounts/other", "{\"type\":\"transit\"}"));
    assert_int_equal(size_of(t, "other"), 0);
    json_decref(tt_req(t, 200, "POST", "/v1/other/cache-config", "{\"size\":20}"));
    assert_int_equal(size_of(t, "other"), 20);
    assert_int_equal(size_of(t, "transit"), 250);

    /* survives a restart */
    kt_reopen(t);
    assert_int_equal(size_of(t, "transit"), 250);
    assert_int_equal(size_of(t, "other"), 20);
    /* no size: back to 0 (OpenBao's default) */
    b = tt_req(t, 200, "POST", "/v1/transit/cache-config", "{}");
    assert_int_equal(json_integer_value(kt_data(b, "size")), 0);
    json_decref(b);
    assert_int_equal(size_of(t, "transit"), 0);

    /* removed with the mount */
    json_decref(tt_req(t, 204, "DELETE", "/v1/sys/mounts/other", NULL));
    json_decref(tt_req(t, 204, "POST", "/v1/sys/mounts/other", "{\"type\":\"transit\"}"));
    assert_int_equal(size_of(t, "other"), 0);
}

static void test_size_bounds_the_cache(void **state)
{
    struct kt *t = *state;
    uint64_t n = 0;
    for (int i = 0; i < 20; i++) {
        char name[16];
        snprintf(name, sizeof(name), "c%d", i);
        tt_create(t, name, NULL);
    }
    /* the shared cache holds all 20 */
    (void)pass(t, &n);
    uint64_t shared = pass(t, &n);
    assert_true(n >= 20);
    assert_int_equal(shared, n);
    uint64_t per_request = n / 20;

    /* a cache of 10: the second pass finds at most 10 keys */
    json_decref(tt_req(t, 200, "POST", "/v1/transit/cache-config", "{\"size\":10}"));
    (void)pass(t, &n);
    uint64_t own = pass(t, &n);
    assert_true(own <= 10 * per_request);
    assert_true(own < shared);

    /* after a restart the stored size still bounds it */
    kt_reopen(t);
    (void)pass(t, &n);
    own = pass(t, &n);
    assert_true(own <= 10 * per_request);

    /* a larger size holds them all again */
    /* (the lookups of the pass itself: a request that misses makes fewer than one that hits,
     * its read of the policy for the existence check is handed on to the handler) */
    json_decref(tt_req(t, 200, "POST", "/v1/transit/cache-config", "{\"size\":100}"));
    (void)pass(t, &n);
    uint64_t all = pass(t, &n);
    assert_int_equal(all, n);

    /* and 0 goes back to the shared cache */
    json_decref(tt_req(t, 200, "POST", "/v1/transit/cache-config", "{\"size\":0}"));
    (void)pass(t, &n);
    all = pass(t, &n);
    assert_int_equal(all, n);
}

/* A key written while the mount used one cache is never read stale from the other. */
static void test_no_stale_key_across_caches(void **state)
{
    struct kt *t = *state;
    char pt[16];
    tt_create(t, "st", NULL);
    char *ct = tt_encrypt(t, "st", tt_b64("x", pt), NULL); /* cached in the shared cache */
    assert_true(strncmp(ct, "vault:v1:", 9) == 0);
    free(ct);
    json_decref(tt_req(t, 200, "POST", "/v1/transit/cache-config", "{\"size\":10}"));
    json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/st/rotate", "{}"));
    ct = tt_encrypt(t, "st", pt, NULL);
    assert_true(strncmp(ct, "vault:v2:", 9) == 0);
    free(ct);
    json_decref(tt_req(t, 200, "POST", "/v1/transit/cache-config", "{\"size\":0}"));
    ct = tt_encrypt(t, "st", pt, NULL);
    assert_true(strncmp(ct, "vault:v2:", 9) == 0);
    free(ct);
    json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/st/rotate", "{}"));
    json_decref(tt_req(t, 200, "POST", "/v1/transit/cache-config", "{\"size\":10}"));
    ct = tt_encrypt(t, "st", pt, NULL);
    assert_true(strncmp(ct, "vault:v3:", 9) == 0);
    free(ct);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_validation_and_read_back, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_size_bounds_the_cache, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_no_stale_key_across_caches, kt_setup, kt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
