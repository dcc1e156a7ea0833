/*
 * test_bigjson.c - the two JSON text passes for Go's big integers (engine/transit/bigjson.c):
 * long integers outside strings quoted and nothing else touched (digits inside strings,
 * escaped quotes and backslashes, short integers, negatives, fractions and exponents), and
 * marked strings written as bare integers while look-alikes inside other strings stay.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "crypto/crypto.h"
#include "engine/transit/transit_int.h"

static void quoted_is(const char *in, const char *want)
{
    char *out = NULL;
    size_t n = 0;
    assert_int_equal(kms_json_quote_bigints(in, strlen(in), &out, &n), 0);
    if (strcmp(out, want) != 0) {
        fprintf(stderr, "quote(%s) = %s, want %s\n", in, out, want);
    }
    assert_string_equal(out, want);
    assert_int_equal(n, strlen(want));
    /* the result parses, and a long integer is now a string */
    json_t *j = json_loads(out, 0, NULL);
    json_decref(j);
    free(out);
}

static void test_quote(void **state)
{
    (void)state;
    /* 18 digits stay, 19 and more are quoted */
    quoted_is("{\"a\":123456789012345678}", "{\"a\":123456789012345678}");
    quoted_is("{\"a\":1234567890123456789}", "{\"a\":\"1234567890123456789\"}");
    quoted_is("[1,22,33333333333333333333333,-44444444444444444444444,5]",
              "[1,22,\"33333333333333333333333\",\"-44444444444444444444444\",5]");
    /* not integers: left to jansson */
    quoted_is("[1.2345678901234567890123,12345678901234567890e3,1e1234567890123456789]",
              "[1.2345678901234567890123,12345678901234567890e3,1e1234567890123456789]");
    /* a bare top-level number, and whitespace around */
    quoted_is("99999999999999999999999", "\"99999999999999999999999\"");
    quoted_is("{ \"N\" : 99999999999999999999999 ,\"E\":65537}",
              "{ \"N\" : \"99999999999999999999999\" ,\"E\":65537}");
    /* digits inside strings are never touched, whatever escapes precede them */
    quoted_is("{\"k\":\"99999999999999999999999\"}", "{\"k\":\"99999999999999999999999\"}");
    quoted_is("{\"k\\\"99999999999999999999999\":1}", "{\"k\\\"99999999999999999999999\":1}");
    quoted_is("{\"k\\\\\":99999999999999999999999}", "{\"k\\\\\":\"99999999999999999999999\"}");
    quoted_is("[\"\\\\\\\"99999999999999999999999\"]", "[\"\\\\\\\"99999999999999999999999\"]");
    quoted_is("[\"a\\\\\",99999999999999999999999,\"\\\"\"]",
              "[\"a\\\\\",\"99999999999999999999999\",\"\\\"\"]");
    quoted_is("[\"\\u0022\",12345678901234567890]", "[\"\\u0022\",\"12345678901234567890\"]");
    /* a backslash at the very end of truncated input does not run past it */
    quoted_is("[\"\\", "[\"\\");
    quoted_is("", "");
}

static void unquoted_is(const char *in, const char *mark, const char *want)
{
    size_t n = strlen(in);
    char *s = malloc(n + 1);
    assert_non_null(s);
    memcpy(s, in, n + 1);
    kms_json_unquote_marked(s, mark);
    if (strcmp(s, want) != 0) {
        fprintf(stderr, "unquote(%s) = %s, want %s\n", in, s, want);
    }
    assert_string_equal(s, want);
    /* the tail left behind is wiped */
    for (size_t i = strlen(s); i < n + 1; i++) {
        assert_int_equal(s[i], 0);
    }
    free(s);
}

static void test_unquote(void **state)
{
    (void)state;
    const char *m = "kmsbig-00ff:";
    unquoted_is("{\"ec_d\":\"kmsbig-00ff:12345\"}", m, "{\"ec_d\":12345}");
    unquoted_is("[\"kmsbig-00ff:1\",\"kmsbig-00ff:22\",{\"x\":[\"kmsbig-00ff:333\"]}]", m,
                "[1,22,{\"x\":[333]}]");
    /* not exactly mark + digits: left as strings */
    unquoted_is("[\"kmsbig-00ff:\",\"kmsbig-00ff:12a\",\"xkmsbig-00ff:1\",\"kmsbig-00fe:1\"]", m,
                "[\"kmsbig-00ff:\",\"kmsbig-00ff:12a\",\"xkmsbig-00ff:1\",\"kmsbig-00fe:1\"]");
    /* the mark inside another string, after an escaped quote, is not a token */
    unquoted_is("{\"name\":\"a\\\"kmsbig-00ff:5\\\"\",\"d\":\"kmsbig-00ff:6\"}", m,
                "{\"name\":\"a\\\"kmsbig-00ff:5\\\"\",\"d\":6}");
    unquoted_is("{\"n\\\\\":\"kmsbig-00ff:7\"}", m, "{\"n\\\\\":7}");
    /* an empty mark marks nothing */
    unquoted_is("[\"123\"]", "", "[\"123\"]");
}

/* What the backup writes reads back as the same big integers. */
static void test_round_trip(void **state)
{
    (void)state;
    const char *m = "kmsbig-abcd:";
    const char *big = "123456789012345678901234567890123456789012345678901234567890";
    char doc[512];
    snprintf(doc, sizeof(doc), "{\"N\":\"%s%s\",\"E\":65537,\"name\":\"%s\"}", m, big, big);
    kms_json_unquote_marked(doc, m);
    char *q = NULL;
    size_t n = 0;
    assert_int_equal(kms_json_quote_bigints(doc, strlen(doc), &q, &n), 0);
    json_t *j = json_loads(q, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "N")), big);
    assert_string_equal(json_string_value(json_object_get(j, "name")), big);
    assert_int_equal(json_integer_value(json_object_get(j, "E")), 65537);
    json_decref(j);
    free(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quote),
        cmocka_unit_test(test_unquote),
        cmocka_unit_test(test_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
