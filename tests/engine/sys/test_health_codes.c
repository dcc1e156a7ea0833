/* test_health_codes.c - sys/health puts a caller-chosen code on the status line only when it is
 * a real HTTP status (200-599); anything else is a 400. */
#include "tests/engine/engine_fixture.h"

#include <stdio.h>
#include <string.h>

static void test_codes_in_range(void **state)
{
    struct kt *t = *state;
    assert_int_equal(kt_call(t, "GET", "/v1/sys/health?activecode=299", NULL, NULL, NULL, NULL),
                     299);
    assert_int_equal(kt_call(t, "GET", "/v1/sys/health?activecode=200", NULL, NULL, NULL, NULL),
                     200);
    assert_int_equal(kt_call(t, "GET", "/v1/sys/health?activecode=599", NULL, NULL, NULL, NULL),
                     599);
}

static void test_codes_out_of_range(void **state)
{
    struct kt *t = *state;
    static const char *const bad[] = {"activecode=100",
                                      "activecode=-1",
                                      "activecode=99999",
                                      "activecode=199",
                                      "activecode=600",
                                      "standbycode=0",
                                      "sealedcode=1000",
                                      "uninitcode=42",
                                      "drsecondarycode=-200",
                                      "performancestandbycode=700",
                                      "removedcode=9223372036854775807"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char target[128];
        json_t *b = NULL;
        snprintf(target, sizeof(target), "/v1/sys/health?%s", bad[i]);
        assert_int_equal(kt_call(t, "GET", target, NULL, NULL, NULL, &b), 400);
        assert_non_null(strstr(kt_err(b), "200 to 599"));
        json_decref(b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_codes_in_range, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_codes_out_of_range, kt_setup, kt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
