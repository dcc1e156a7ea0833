/*
 * test_ratelimit.c - api/ratelimit.c: a token bucket per token accessor. The rates are chosen
 * so slow that no token comes back while a test runs (one per 1000 s), so nothing depends on
 * the clock: the bucket size is what is let through, the Retry-After is the time to one token,
 * buckets are per id, and a full stripe reuses its least recently used bucket.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "api/api_int.h"

#include <stdio.h>

static void test_burst_then_refusal(void **state)
{
    struct kms_ratelimit *rl = NULL;
    int retry = -1;
    (void)state;
    assert_int_equal(kms_ratelimit_create(0.001, 3, &rl), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(kms_ratelimit_take(rl, "acc-a", &retry), 1);
    }
    assert_int_equal(retry, -1); /* untouched while allowed */
    assert_int_equal(kms_ratelimit_take(rl, "acc-a", &retry), 0);
    assert_true(retry >= 990 && retry <= 1000);
    /* another accessor has its own bucket */
    assert_int_equal(kms_ratelimit_take(rl, "acc-b", &retry), 1);
    assert_int_equal(kms_ratelimit_take(rl, "acc-a", &retry), 0);
    kms_ratelimit_destroy(&rl);
    assert_null(rl);
    kms_ratelimit_destroy(&rl); /* a second destroy is harmless */
}

static void test_bucket_at_least_one(void **state)
{
    struct kms_ratelimit *rl = NULL;
    int retry = 0;
    (void)state;
    /* a burst below one still lets one request through */
    assert_int_equal(kms_ratelimit_create(0.001, 0.2, &rl), 0);
    assert_int_equal(kms_ratelimit_take(rl, "x", &retry), 1);
    assert_int_equal(kms_ratelimit_take(rl, "x", &retry), 0);
    kms_ratelimit_destroy(&rl);
}

static void test_full_stripe_reuses_oldest(void **state)
{
    struct kms_ratelimit *rl = NULL;
    int retry = 0;
    char id[32];
    (void)state;
    assert_int_equal(kms_ratelimit_create(0.001, 1, &rl), 0);
    assert_int_equal(kms_ratelimit_take(rl, "first", &retry), 1);
    assert_int_equal(kms_ratelimit_take(rl, "first", &retry), 0);
    /* far more ids than the table holds: every stripe fills and recycles its oldest entries,
     * so "first" (used before all of them) loses its empty bucket */
    for (int i = 0; i < 256 * 64 * 4; i++) {
        snprintf(id, sizeof(id), "id-%d", i);
        assert_int_equal(kms_ratelimit_take(rl, id, &retry), 1);
    }
    assert_int_equal(kms_ratelimit_take(rl, "first", &retry), 1);
    /* the most recent ids are still remembered */
    snprintf(id, sizeof(id), "id-%d", 256 * 64 * 4 - 1);
    assert_int_equal(kms_ratelimit_take(rl, id, &retry), 0);
    kms_ratelimit_destroy(&rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_refusal),
        cmocka_unit_test(test_bucket_at_least_one),
        cmocka_unit_test(test_full_stripe_reuses_oldest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
