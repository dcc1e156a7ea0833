/*
 * test_keycache.c - engine/transit/keycache.c alone: the bound is exact at any size, a hit
 * returns the value stored under that key (never another key's, whatever the hash spread),
 * the striped tables grow past their initial size without losing entries, invalidation and
 * the sequence rule, a bound changed in place, and entries reused after an eviction starting
 * empty.
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

/*
 * Once the cache is full, a new key takes over the entry it evicts (when that entry is in the
 * key's own stripe): it must start empty. Even keys get only a policy, odd keys only versions
 * (six of them, so the four-slot ring wraps), names of three lengths so that a longer name
 * lands on a shorter name's entry; every hit must be the key's own and nothing else.
 */
static void odd_even_key(char *out, size_t n, size_t i)
{
    snprintf(out, n, "nsid0001/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/k%07zu%.*s", i, (int)(i % 3),
             "xyz");
}

static void test_reused_entries_start_empty(void **state)
{
    (void)state;
    struct kms_keycache *kc = NULL;
    char k[128];
    struct kms_key_policy p, gp;
    struct kms_key_version v, gv;
    assert_int_equal(kms_keycache_create(300, &kc), 0);
    for (size_t i = 0; i < 30000; i++) {
        odd_even_key(k, sizeof(k), i);
        if (i % 2 == 0) {
            memset(&p, 0, sizeof(p));
            p.latest_version = (uint32_t)i + 1;
            kms_keycache_put_policy(kc, k, &p, kms_keycache_seq(kc));
        } else {
            for (uint32_t ver = 1; ver <= 6; ver++) {
                memset(&v, 0, sizeof(v));
                v.version = ver;
                v.key_len = 32;
                memcpy(v.key, &i, sizeof(i));
                v.key[31] = (uint8_t)ver;
                kms_keycache_put_version(kc, k, &v, kms_keycache_seq(kc));
            }
        }
        assert_true(kms_keycache_count(kc) <= 300);
    }
    size_t hits = 0;
    for (size_t i = 0; i < 30000; i++) {
        odd_even_key(k, sizeof(k), i);
        bool hp = kms_keycache_get_policy(kc, k, &gp);
        bool hv = false;
        for (uint32_t ver = 1; ver <= 6; ver++) {
            if (!kms_keycache_get_version(kc, k, ver, &gv)) {
                continue;
            }
            hv = true;
            assert_true(i % 2 == 1);
            assert_true(ver >= 3); /* versions 1 and 2 left the four-slot ring */
            size_t got;
            memcpy(&got, gv.key, sizeof(got));
            assert_int_equal(got, i);
            assert_int_equal(gv.key[31], ver);
        }
        if (hp) {
            assert_true(i % 2 == 0);
            assert_int_equal(gp.latest_version, i + 1);
        }
        hits += hp || hv;
    }
    assert_int_equal(hits, 300);
    kms_keycache_destroy(&kc);
}

/* A version of n bytes of material whose every field and byte depends on (i, n). */
static void fill_version(struct kms_key_version *v, uint32_t ver, size_t n, size_t i)
{
    memset(v, 0, sizeof(*v));
    v->version = ver;
    v->key_len = (uint32_t)n;
    for (size_t b = 0; b < n; b++) {
        v->key[b] = (uint8_t)(b * 7 + i + ver);
    }
    memset(v->hmac_key, (int)(0x30 + ver + i), sizeof(v->hmac_key));
    v->created_sec = 1700000000 + (int64_t)i;
    v->created_nsec = (int32_t)(ver * 1000 + n);
    v->convergent_version = (int)(i % 3);
}

/* Material of every size a key type has (AEAD 16/32, ed25519 64, ECDSA 97..199, hmac and
 * RSA up to 512) comes back byte for byte, the rest of the struct zero, through more
 * versions than an entry keeps and through eviction; a policy lookup brings the latest
 * version along only when it is cached. */
static void test_versions_of_every_size_round_trip(void **state)
{
    (void)state;
    const size_t sizes[] = {16, 32, 64, 65, 97, 199, 256, 512};
    const size_t nsizes = sizeof(sizes) / sizeof(sizes[0]);
    struct kms_keycache *kc = NULL;
    assert_int_equal(kms_keycache_create(64, &kc), 0);
    for (size_t round = 0; round < 3; round++) {
        for (size_t i = 0; i < 200; i++) { /* 200 keys through 64 places: evictions and reuse */
            char k[128];
            keyname(k, sizeof(k), i);
            struct kms_key_policy p;
            memset(&p, 0, sizeof(p));
            p.latest_version = 6;
            kms_keycache_put_policy(kc, k, &p, kms_keycache_seq(kc));
            for (uint32_t ver = 1; ver <= 6; ver++) { /* 6 versions into 4 slots */
                struct kms_key_version v;
                fill_version(&v, ver, sizes[(i + ver + round) % nsizes], i);
                kms_keycache_put_version(kc, k, &v, kms_keycache_seq(kc));
            }
            struct kms_key_version want, got, latest;
            struct kms_key_policy gp;
            bool has = false;
            for (uint32_t ver = 3; ver <= 6; ver++) { /* the four kept */
                memset(&got, 0xa5, sizeof(got));
                assert_true(kms_keycache_get_version(kc, k, ver, &got));
                fill_version(&want, ver, sizes[(i + ver + round) % nsizes], i);
                assert_memory_equal(&got, &want, sizeof(want));
            }
            assert_false(kms_keycache_get_version(kc, k, 2, &got));
            memset(&latest, 0xa5, sizeof(latest));
            assert_true(kms_keycache_get(kc, k, &gp, &latest, &has));
            assert_true(has);
            fill_version(&want, 6, sizes[(i + 6 + round) % nsizes], i);
            assert_memory_equal(&latest, &want, sizeof(want));
            /* a latest version not in the entry: the policy alone */
            p.latest_version = 7;
            kms_keycache_put_policy(kc, k, &p, kms_keycache_seq(kc));
            assert_true(kms_keycache_get(kc, k, &gp, &latest, &has));
            assert_int_equal(gp.latest_version, 7);
            assert_false(has);
        }
    }
    kms_keycache_destroy(&kc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bound_is_exact),
        cmocka_unit_test(test_tables_grow_past_their_initial_size),
        cmocka_unit_test(test_stale_sequence_is_not_inserted),
        cmocka_unit_test(test_reused_entries_start_empty),
        cmocka_unit_test(test_versions_of_every_size_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
