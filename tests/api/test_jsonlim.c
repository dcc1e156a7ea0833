/*
 * test_jsonlim.c - api/jsonlim.c: the pre-scan counts strings (keys and values) and nesting
 * outside strings only, so quoted brackets, escaped quotes and stray closers do not fool it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "api/api_int.h"

#include <string.h>

static int scan(const char *s, size_t strings, size_t depth, struct kms_err *err)
{
    struct kms_api_limits lim;
    kms_api_limits_default(&lim);
    lim.max_json_strings = strings;
    lim.max_json_depth = depth;
    kms_err_clear(err);
    return kms_json_precheck((const uint8_t *)s, strlen(s), &lim, err);
}

static void test_limits(void **state)
{
    struct kms_err err;
    (void)state;
    /* two strings, depth one: at the limits */
    assert_int_equal(scan("{\"a\":\"b\"}", 2, 1, &err), 0);
    assert_int_equal(scan("{\"a\":\"b\",\"c\":1}", 2, 1, &err), -1);
    assert_int_equal(err.status, 400);
    assert_string_equal(err.msg, "refused JSON input due to high complexity: exceeded maximum "
                                 "number of strings");
    assert_int_equal(scan("{\"a\":[1]}", 10, 1, &err), -1);
    assert_string_equal(err.msg, "refused JSON input due to high complexity: exceeded maximum "
                                 "nesting depth");
    /* siblings do not add up: depth is the current nesting */
    assert_int_equal(scan("[[1],[2],[3],{}]", 10, 2, &err), 0);
}

static void test_strings_are_opaque(void **state)
{
    struct kms_err err;
    (void)state;
    /* brackets and escaped quotes inside a string are text */
    assert_int_equal(scan("{\"k\":\"[[[{{{\\\"]]]\"}", 2, 1, &err), 0);
    assert_int_equal(scan("{\"k\":\"\\\\\",\"l\":\"x\"}", 4, 1, &err), 0);
    assert_int_equal(scan("{\"k\":\"\\\\\",\"l\":\"x\"}", 3, 1, &err), -1);
    /* runs of backslashes before a quote: odd escapes it, even closes the string */
    assert_int_equal(scan("[\"\\\\\\\"[[\",\"\\\\\\\\\",[1]]", 2, 2, &err), 0);
    assert_int_equal(scan("[\"\\\\\\\"[[\",\"\\\\\\\\\",[1]]", 2, 1, &err), -1);
    assert_int_equal(scan("[\"\\\"[\",\"a\"]", 1, 1, &err), -1);
    /* an unterminated string hides the rest (the parser then refuses the document) */
    assert_int_equal(scan("[\"abc\\\"[[[[", 1, 1, &err), 0);
    /* stray closers cannot push the depth below zero to buy room */
    assert_int_equal(scan("]]]]{[1]}", 10, 2, &err), 0);
    assert_int_equal(scan("]]]]{[[1]]}", 10, 2, &err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_strings_are_opaque),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
