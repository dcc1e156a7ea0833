/*
 * test_num_uses.c - a token's uses are taken atomically: however many requests race for the
 * last use, exactly that many are allowed (was: up to 6 of 32 for num_uses=1).
 */
#include "tests/engine/engine_fixture.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define THREADS 32

struct race {
    struct kt *t;
    const char *token;
    pthread_barrier_t *go;
    int status;
};

static void *racer(void *arg)
{
    struct race *r = arg;
    pthread_barrier_wait(r->go);
    r->status = kt_call(r->t, "POST", "/v1/transit/encrypt/k", r->token, NULL,
                        "{\"plaintext\":\"aGk=\"}", NULL);
    return NULL;
}

static void race_uses(struct kt *t, int uses)
{
    char body[128];
    snprintf(body, sizeof(body), "{\"policies\":[\"kms-developer\"],\"num_uses\":%d}", uses);
    json_t *b = kt_ok(t, 200, "POST", "/v1/auth/token/create", NULL, body);
    char token[KMS_API_TOKEN_MAX];
    snprintf(token, sizeof(token), "%s",
             json_string_value(json_object_get(json_object_get(b, "auth"), "client_token")));
    json_decref(b);

    pthread_barrier_t go;
    pthread_t th[THREADS];
    struct race r[THREADS];
    assert_int_equal(pthread_barrier_init(&go, NULL, THREADS), 0);
    for (int i = 0; i < THREADS; i++) {
        r[i] = (struct race){t, token, &go, 0};
        assert_int_equal(pthread_create(&th[i], NULL, racer, &r[i]), 0);
    }
    int ok = 0, denied = 0;
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        ok += r[i].status == 200;
        denied += r[i].status == 403;
    }
    pthread_barrier_destroy(&go);
    assert_int_equal(ok, uses);
    assert_int_equal(denied, THREADS - uses);
    /* and the token is gone afterwards */
    assert_int_equal(kt_call(t, "GET", "/v1/auth/token/lookup-self", token, NULL, NULL, NULL), 403);
}

static void test_last_use_is_taken_once(void **state)
{
    struct kt *t = *state;
    json_t *b = NULL;
    (void)kt_call(t, "POST", "/v1/transit/keys/k", "root", NULL, NULL, &b);
    json_decref(b);
    for (int round = 0; round < 5; round++) {
        race_uses(t, 1);
    }
}

static void test_several_uses_under_a_race(void **state)
{
    struct kt *t = *state;
    json_t *b = NULL;
    (void)kt_call(t, "POST", "/v1/transit/keys/k", "root", NULL, NULL, &b);
    json_decref(b);
    race_uses(t, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_last_use_is_taken_once, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_several_uses_under_a_race, kt_setup, kt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
