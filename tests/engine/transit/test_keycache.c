/*
 * test_keycache.c - engine/transit/keycache.c alone: the bound is exact at any size, a hit
 * returns the value stored under that key (never another key's, whatever the hash spread),
 * the striped tables grow past their initial size without losing entries, invalidation and
 * the sequence rule, and a bound changed in place.
 */
#include "tests/engine/transit/transit_util.h"
#include "engine/transit/transit_int.h"

static void keyname(char *out, size_t n, size_t i)
{
    snprintf(out, n, "nsid0001/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/k%07zu", i);
}

static void put(struct kms_keycache *kc, size_t i)
{
    char k[128];
    struct kms_key_policy p;
    struct kms_key_version v;
    memset(&p, 0, sizeof(p));
    memset(&v, 0, sizeof(v));
    p.latest_version = (uint32_t)i + 1;
    v.version = 1;
    v.key_len = 32;
    memcpy(v.key, &i, sizeof(i));
    keyname(k, sizeof(k), i);
    kms_keycache_put_policy(kc, k, &p, kms_keycache_seq(kc));
    kms_keycache_put_version(kc, k, &v, kms_keycache_seq(kc));
}

/* 1 hit with the right values, 0 miss; fails on a wrong value. */
static int check(struct kms_keycache *kc, size_t i)
{
    char k[128];
    struct kms_key_policy p;
    struct kms_key_version v;
    keyname(k, sizeof(k), i);
    if (!kms_keycache_get_policy(kc, k, &p)) {
        return 0;
    }
    assert_int_equal(p.latest_version, i + 1);
    assert_true(kms_keycache_get_version(kc, k, 1, &v));
    size_t got;
    memcpy(&got, v.key, sizeof(got));
    assert_int_equal(got, i);
    return 1;
}

static void test_bound_is_exact(void **state)
{
    (void)state;
    struct kms_keycache *kc = NULL;
    assert_int_equal(kms_keycache_create(1000, &kc), 0);
    for (size_t i = 0; i < 20000; i++) {
        put(kc, i);
        assert_true(kms_keycache_count(kc) <= 1000);
    }
    assert_int_equal(kms_keycache_count(kc), 1000);
    size_t hits = 0;
    for (size_t i = 0; i < 20000; i++) {
        hits += (size_t)check(kc, i);
    }
    assert_int_equal(hits, 1000);
    kms_keycache_set_max(kc, 100); /* shrunk in place */
    assert_int_equal(kms_keycache_count(kc), 100);
    kms_keycache_destroy(&kc);
}

static void test_tables_grow_past_their_initial_size(void **state)
{
    (void)state;
    struct kms_keycache *kc = NULL;
    /* a small bound makes small tables; raising it in place (cache-config) and having no
     * bound at all must both keep every key reachable */
    assert_int_equal(kms_keycache_create(10, &kc), 0);
    kms_keycache_set_max(kc, 0);
    for (size_t i = 0; i < 100000; i++) {
        put(kc, i);
    }
    assert_int_equal(kms_keycache_count(kc), 100000);
    for (size_t i = 0; i < 100000; i++) {
        assert_int_equal(check(kc, i), 1);
    }
    char k[128];
    keyname(k, sizeof(k), 4242);
    kms_keycache_invalidate(kc, k);
    assert_int_equal(check(kc, 4242), 0);
    assert_int_equal(check(kc, 4243), 1);
    assert_int_equal(kms_keycache_count(kc), 99999);
    kms_keycache_clear(kc);
    assert_int_equal(kms_keycache_count(kc), 0);
    assert_int_equal(check(kc, 1), 0);
    kms_keycache_destroy(&kc);
}

static void test_stale_sequence_is_not_inserted(void **state)
{
    (void)state;
    struct kms_keycache *kc = NULL;
    char k[128];
    struct kms_key_policy p, got;
    memset(&p, 0, sizeof(p));
    assert_int_equal(kms_keycache_create(1000000, &kc), 0);
    keyname(k, sizeof(k), 7);
    uint64_t seq = kms_keycache_seq(kc);
    kms_keycache_invalidate(kc, k); /* a write raced the read that took seq */
    kms_keycache_put_policy(kc, k, &p, seq);
    assert_false(kms_keycache_get_policy(kc, k, &got));
    kms_keycache_destroy(&kc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bound_is_exact),
        cmocka_unit_test(test_tables_grow_past_their_initial_size),
        cmocka_unit_test(test_stale_sequence_is_not_inserted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
