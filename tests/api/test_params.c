/*
 * test_params.c - api/params.c: every field type's weak coercion the way Vault's framework
 * does it (and the refusals with Go's messages), unknown fields as one sorted warning, null
 * values left alone, the typed getters, durations, Go booleans, base64 parameters, and path
 * captures by name.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "api/api_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct kms_field fields[] = {
    {"s", KMS_F_STRING},   {"i", KMS_F_INT},       {"b", KMS_F_BOOL},
    {"d", KMS_F_DURATION}, {"u", KMS_F_UDURATION}, {"a", KMS_F_ARRAY},
    {"m", KMS_F_MAP},      {"r", KMS_F_RAW},       {NULL, 0},
};

static const struct kms_route route = {.tmpl = "t/:name", .fields = fields};

/* Apply the route's fields to `body` (a write's parameters, or with op READ, LIST or DELETE
 * a query's); returns the result and leaves the context to inspect. */
static int apply_op(struct kms_ctx *c, enum kms_op op, const char *body)
{
    memset(c, 0, sizeof(*c));
    c->op = op;
    c->route = &route;
    c->params = json_loads(body, 0, NULL);
    assert_non_null(c->params);
    return kms_params_apply_fields(c);
}

static int apply(struct kms_ctx *c, const char *body)
{
    return apply_op(c, KMS_OP_UPDATE, body);
}

static void release(struct kms_ctx *c)
{
    json_decref(c->params);
    json_decref(c->warnings);
    c->params = NULL;
    c->warnings = NULL;
}

/* The coerced value of field `k` of `body`, dumped compactly (caller frees). */
static char *coerced(const char *body, const char *k)
{
    struct kms_ctx *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    assert_int_equal(apply(c, body), 0);
    char *out = json_dumps(json_object_get(c->params, k), JSON_ENCODE_ANY | JSON_COMPACT);
    release(c);
    free(c);
    return out;
}

static void expect(const char *body, const char *k, const char *want)
{
    char *got = coerced(body, k);
    assert_string_equal(got, want);
    free(got);
}

/* The 400 message of a refused body. */
static void refused(const char *body, const char *want)
{
    struct kms_ctx *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    assert_int_equal(apply(c, body), -1);
    assert_int_equal(c->err.status, 400);
    assert_string_equal(c->err.msg, want);
    release(c);
    free(c);
}

static void test_string(void **state)
{
    (void)state;
    expect("{\"s\":\"x\"}", "s", "\"x\"");
    expect("{\"s\":42}", "s", "\"42\"");
    expect("{\"s\":-7}", "s", "\"-7\"");
    expect("{\"s\":1.5}", "s", "\"1.5\"");
    expect("{\"s\":true}", "s", "\"1\"");
    expect("{\"s\":false}", "s", "\"0\"");
    refused("{\"s\":[1]}", "Field validation failed: error converting input for field \"s\": '' "
                           "expected type 'string', got unconvertible type '[]interface {}'");
    refused("{\"s\":{}}",
            "Field validation failed: error converting input for field \"s\": '' "
            "expected type 'string', got unconvertible type 'map[string]interface {}'");
}

/* A repeated query parameter is a []string to OpenBao (parseQuery keeps every value), so the
 * refusal names that type; a JSON array stays a []interface {}. */
static void test_repeated_query_parameter(void **state)
{
    (void)state;
    static const struct {
        const char *body, *want;
    } cases[] = {
        {"{\"s\":[\"a\",\"b\"]}", "\"s\": '' expected type 'string', got unconvertible type "
                                  "'[]string'"},
        {"{\"i\":[\"1\",\"2\"]}",
         "\"i\": '' expected type 'int', got unconvertible type '[]string'"},
        {"{\"b\":[\"1\",\"0\"]}",
         "\"b\": '' expected type 'bool', got unconvertible type '[]string'"},
    };
    const enum kms_op ops[] = {KMS_OP_READ, KMS_OP_LIST, KMS_OP_DELETE};
    for (size_t o = 0; o < sizeof(ops) / sizeof(ops[0]); o++) {
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            struct kms_ctx c;
            char want[256];
            snprintf(want, sizeof(want),
                     "Field validation failed: error converting input for field %s", cases[i].want);
            assert_int_equal(apply_op(&c, ops[o], cases[i].body), -1);
            assert_int_equal(c.err.status, 400);
            assert_string_equal(c.err.msg, want);
            release(&c);
        }
    }
}

static void test_int(void **state)
{
    (void)state;
    expect("{\"i\":5}", "i", "5");
    expect("{\"i\":\"12\"}", "i", "12");
    /* strconv.ParseInt(s, 0, 64), as mapstructure's weak decoding calls it: base prefixes,
     * a leading 0 for octal, '_' between digits, a sign; no space */
    expect("{\"i\":\"0x1f\"}", "i", "31");
    expect("{\"i\":\"010\"}", "i", "8");
    expect("{\"i\":\"0o17\"}", "i", "15");
    expect("{\"i\":\"-0b11\"}", "i", "-3");
    expect("{\"i\":\"1_000\"}", "i", "1000");
    expect("{\"i\":\"+7\"}", "i", "7");
    expect("{\"i\":\"0\"}", "i", "0");
    expect("{\"i\":\"-9223372036854775808\"}", "i", "-9223372036854775808");
    refused("{\"i\":\" 1\"}", "Field validation failed: error converting input for field \"i\": '' "
                              "cannot parse value as 'int': strconv.ParseInt: invalid syntax");
    refused("{\"i\":\"1__0\"}", "Field validation failed: error converting input for field \"i\": "
                                "'' cannot parse value as 'int': strconv.ParseInt: invalid syntax");
    refused("{\"i\":\"08\"}", "Field validation failed: error converting input for field \"i\": '' "
                              "cannot parse value as 'int': strconv.ParseInt: invalid syntax");
    refused("{\"i\":\"0x\"}", "Field validation failed: error converting input for field \"i\": '' "
                              "cannot parse value as 'int': strconv.ParseInt: invalid syntax");
    refused("{\"i\":\"9223372036854775808\"}",
            "Field validation failed: error converting input for field \"i\": '' cannot parse "
            "value as 'int': strconv.ParseInt: value out of range");
    /* a JSON number is its text to mapstructure (json.Number is a string): 3.0 is no int */
    refused("{\"i\":3.0}", "Field validation failed: error converting input for field \"i\": '' "
                           "cannot parse value as 'int': strconv.ParseInt: invalid syntax");
    expect("{\"i\":\"\"}", "i", "0");
    expect("{\"i\":true}", "i", "1");
    expect("{\"i\":false}", "i", "0");
    refused("{\"i\":\"abc\"}", "Field validation failed: error converting input for field \"i\": "
                               "'' cannot parse value as 'int': strconv.ParseInt: invalid syntax");
    refused("{\"i\":[1]}", "Field validation failed: error converting input for field \"i\": '' "
                           "expected type 'int', got unconvertible type '[]interface {}'");
    refused("{\"i\":{}}", "Field validation failed: error converting input for field \"i\": '' "
                          "expected type 'int', got unconvertible type 'map[string]interface {}'");
    /* a fractional number is no int: Go's mapstructure parses its text */
    refused("{\"i\":2.5}", "Field validation failed: error converting input for field \"i\": '' "
                           "cannot parse value as 'int': strconv.ParseInt: invalid syntax");
    /* digits too many for 64 bits are out of range, not bad syntax */
    refused("{\"i\":\"99999999999999999999\"}",
            "Field validation failed: error converting input for field \"i\": '' cannot parse "
            "value as 'int': strconv.ParseInt: value out of range");
}

static void test_bool(void **state)
{
    (void)state;
    expect("{\"b\":true}", "b", "true");
    expect("{\"b\":\"t\"}", "b", "true");
    expect("{\"b\":\"TRUE\"}", "b", "true");
    expect("{\"b\":\"False\"}", "b", "false");
    expect("{\"b\":\"0\"}", "b", "false");
    expect("{\"b\":\"\"}", "b", "false");
    expect("{\"b\":1}", "b", "true");
    expect("{\"b\":0}", "b", "false");
    /* a JSON number is its text to mapstructure: ParseBool takes 1 and 0, nothing else */
    refused("{\"b\":2}", "Field validation failed: error converting input for field \"b\": '' "
                         "cannot parse value as 'bool': strconv.ParseBool: invalid syntax");
    refused("{\"b\":0.5}", "Field validation failed: error converting input for field \"b\": '' "
                           "cannot parse value as 'bool': strconv.ParseBool: invalid syntax");
    refused("{\"b\":\"yes\"}",
            "Field validation failed: error converting input for field \"b\": '' cannot parse "
            "value as 'bool': strconv.ParseBool: invalid syntax");
    refused("{\"b\":[]}", "Field validation failed: error converting input for field \"b\": '' "
                          "expected type 'bool', got unconvertible type '[]interface {}'");
    refused("{\"b\":{}}", "Field validation failed: error converting input for field \"b\": '' "
                          "expected type 'bool', got unconvertible type 'map[string]interface {}'");
}

/* parseutil.ParseDurationSecond over the text Go's decoder keeps (json.Number for numbers),
 * then the framework's whole seconds; OpenBao's messages. */
static void test_duration(void **state)
{
    (void)state;
    expect("{\"d\":90}", "d", "90");
    expect("{\"d\":\"90\"}", "d", "90");
    expect("{\"d\":\"+90\"}", "d", "90");
    expect("{\"d\":\"1h30m\"}", "d", "5400");
    expect("{\"d\":\"2d\"}", "d", "172800");
    expect("{\"d\":\"-2d\"}", "d", "-172800");
    expect("{\"d\":\"1.5h\"}", "d", "5400");
    expect("{\"d\":\".5m\"}", "d", "30");
    expect("{\"d\":\"2.9s\"}", "d", "2");
    expect("{\"d\":\"-2.9s\"}", "d", "-2");
    expect("{\"d\":\"1500ms\"}", "d", "1");
    expect("{\"d\":\"3\xc2\xb5s\"}", "d", "0");
    expect("{\"d\":\"0\"}", "d", "0");
    expect("{\"d\":\"-0\"}", "d", "0");
    expect("{\"d\":\"\"}", "d", "0"); /* an empty string is a zero duration */
    expect("{\"d\":\"-1h\"}", "d", "-3600");
    expect("{\"d\":\"2562047h47m16s\"}", "d", "9223372036");
#define DUR_REFUSED(body, why)                                                                     \
    refused(body, "Field validation failed: error converting input for field \"d\": " why)
    DUR_REFUSED("{\"d\":\"soon\"}", "time: invalid duration \"soon\"");
    DUR_REFUSED("{\"d\":\"-\"}", "time: invalid duration \"-\"");
    DUR_REFUSED("{\"d\":\"1h.\"}", "time: invalid duration \"1h.\"");
    DUR_REFUSED("{\"d\":\"1.5\"}", "time: missing unit in duration \"1.5\"");
    DUR_REFUSED("{\"d\":\"1h30\"}", "time: missing unit in duration \"1h30\"");
    DUR_REFUSED("{\"d\":\"90x\"}", "time: unknown unit \"x\" in duration \"90x\"");
    DUR_REFUSED("{\"d\":\"1 h\"}", "time: unknown unit \" h\" in duration \"1 h\"");
    DUR_REFUSED("{\"d\":\"1H\"}", "time: unknown unit \"H\" in duration \"1H\"");
    DUR_REFUSED("{\"d\":\"1\xc3\xa9\"}", "time: unknown unit \"\\xc3\\xa9\" in duration "
                                         "\"1\\xc3\\xa9\"");
    /* "d" is only a whole suffix: ParseInt's words for what comes before it */
    DUR_REFUSED("{\"d\":\"1.5d\"}", "strconv.ParseInt: parsing \"1.5\": invalid syntax");
    DUR_REFUSED("{\"d\":\"1h2d\"}", "strconv.ParseInt: parsing \"1h2\": invalid syntax");
    DUR_REFUSED("{\"d\":\"d\"}", "strconv.ParseInt: parsing \"\": invalid syntax");
    DUR_REFUSED("{\"d\":\"1\\t\\\"d\"}", "strconv.ParseInt: parsing \"1\\t\\\"\": invalid syntax");
    DUR_REFUSED("{\"d\":\"99999999999999999999d\"}",
                "strconv.ParseInt: parsing \"99999999999999999999\": value out of range");
    /* a JSON number is its text to Go: a fraction has no unit */
    DUR_REFUSED("{\"d\":2.7}", "time: missing unit in duration \"2.7\"");
    DUR_REFUSED("{\"d\":3600.0}", "time: missing unit in duration \"3600.0\"");
    DUR_REFUSED("{\"d\":true}", "could not parse duration from input");
    DUR_REFUSED("{\"d\":[]}", "could not parse duration from input");
    DUR_REFUSED("{\"d\":{}}", "could not parse duration from input");
    /* past time.Duration (Go would wrap around) */
    DUR_REFUSED("{\"d\":\"2562047h47m17s\"}", "time: invalid duration \"2562047h47m17s\"");
    DUR_REFUSED("{\"d\":9223372037}", "time: invalid duration \"9223372037\"");
    DUR_REFUSED("{\"d\":\"106751992d\"}", "time: invalid duration \"106751992d\"");
#undef DUR_REFUSED
    /* TypeDurationSecond (unsigned): a negative value is refused after parsing */
    expect("{\"u\":\"-0.5s\"}", "u", "0");
    expect("{\"u\":\"\"}", "u", "0");
    refused("{\"u\":\"-1h\"}", "Field validation failed: error converting input for field \"u\": "
                               "cannot provide negative value '-3600'");
    refused("{\"u\":-5}", "Field validation failed: error converting input for field \"u\": "
                          "cannot provide negative value '-5'");
}

static void test_array(void **state)
{
    (void)state;
    expect("{\"a\":[1,\"x\"]}", "a", "[1,\"x\"]");
    expect("{\"a\":\" a, b ,,c \"}", "a", "[\"a\",\"b\",\"c\"]");
    expect("{\"a\":\"one\"}", "a", "[\"one\"]");
    expect("{\"a\":\"\"}", "a", "[]");
    expect("{\"a\":\"x,\"}", "a", "[\"x\"]");
    refused("{\"a\":{}}", "Field validation failed: error converting input for field \"a\": '' "
                          "expected type '[]string', got unconvertible type 'map[string]interface "
                          "{}'");
    refused("{\"a\":3}", "Field validation failed: error converting input for field \"a\": '' "
                         "expected type '[]string', got unconvertible type 'scalar'");
}

static void test_map_and_raw(void **state)
{
    (void)state;
    expect("{\"m\":{\"k\":1}}", "m", "{\"k\":1}");
    refused("{\"m\":[]}", "Field validation failed: error converting input for field \"m\": '' "
                          "expected a map, got 'slice'");
    refused("{\"m\":\"x\"}", "Field validation failed: error converting input for field \"m\": '' "
                             "expected a map, got 'scalar'");
    expect("{\"r\":[{\"a\":1}]}", "r", "[{\"a\":1}]");
    expect("{\"r\":\"as is\"}", "r", "\"as is\"");
}

static void test_unknown_and_null(void **state)
{
    struct kms_ctx *c = calloc(1, sizeof(*c));
    (void)state;
    assert_non_null(c);
    /* nulls stay null (the getters treat them as absent); unknown names warn, sorted, once */
    assert_int_equal(apply(c, "{\"zeta\":1,\"i\":null,\"alpha\":2,\"s\":\"v\",\"mid\":null}"), 0);
    assert_true(json_is_null(json_object_get(c->params, "i")));
    assert_int_equal(json_array_size(c->warnings), 1);
    assert_string_equal(json_string_value(json_array_get(c->warnings, 0)),
                        "Endpoint ignored these unrecognized parameters: [alpha mid zeta]");
    int64_t iv = 99;
    const char *sv = NULL;
    bool bv = false;
    assert_false(kms_param_int(c, "i", &iv));
    assert_int_equal(iv, 99);
    assert_null(kms_param(c, "i"));
    assert_true(kms_param_str(c, "s", &sv));
    assert_string_equal(sv, "v");
    /* getters refuse the wrong type */
    assert_false(kms_param_int(c, "s", &iv));
    assert_false(kms_param_bool(c, "s", &bv));
    assert_false(kms_param_str(c, "zeta", &sv));
    release(c);
    /* an empty body warns nothing; a route without fields warns about everything */
    assert_int_equal(apply(c, "{}"), 0);
    assert_null(c->warnings);
    release(c);
    static const struct kms_route bare = {.tmpl = "bare"};
    memset(c, 0, sizeof(*c));
    c->route = &bare;
    c->params = json_pack("{s:i}", "b", 1);
    assert_int_equal(kms_params_apply_fields(c), 0);
    assert_string_equal(json_string_value(json_array_get(c->warnings, 0)),
                        "Endpoint ignored these unrecognized parameters: [b]");
    release(c);
    /* typed getters after coercion */
    assert_int_equal(apply(c, "{\"i\":\"7\",\"b\":\"true\"}"), 0);
    assert_true(kms_param_int(c, "i", &iv));
    assert_int_equal(iv, 7);
    assert_true(kms_param_bool(c, "b", &bv));
    assert_true(bv);
    release(c);
    free(c);
}

static void test_helpers(void **state)
{
    bool b;
    int64_t v;
    (void)state;
    static const char *const yes[] = {"1", "t", "T", "TRUE", "true", "True"};
    static const char *const no[] = {"0", "f", "F", "FALSE", "false", "False"};
    for (size_t i = 0; i < 6; i++) {
        b = false;
        assert_true(kms_parse_go_bool(yes[i], &b));
        assert_true(b);
        assert_true(kms_parse_go_bool(no[i], &b));
        assert_false(b);
    }
    assert_false(kms_parse_go_bool("tRuE", &b));
    assert_false(kms_parse_go_bool("", &b));

    json_t *j = json_integer(30);
    assert_int_equal(kms_parse_duration(j, &v), 0);
    assert_int_equal(v, 30);
    json_decref(j);
    j = json_real(4.9);
    assert_int_equal(kms_parse_duration(j, &v), 0);
    assert_int_equal(v, 4);
    json_decref(j);
    j = json_string("2m");
    assert_int_equal(kms_parse_duration(j, &v), 0);
    assert_int_equal(v, 120);
    json_decref(j);
    assert_int_equal(kms_parse_duration(json_true(), &v), -1);
    assert_int_equal(kms_parse_duration(NULL, &v), -1);
    assert_int_equal(kms_parse_duration_str("1m1s", &v), 0);
    assert_int_equal(v, 61);

    uint8_t *out = NULL;
    size_t n = 0;
    struct kms_err err;
    kms_err_clear(&err);
    assert_int_equal(kms_b64_param("aGk=", &out, &n, &err, 400), 0);
    assert_int_equal(n, 2);
    assert_memory_equal(out, "hi", 2);
    free(out);
    out = NULL;
    assert_int_equal(kms_b64_param("aG!k", &out, &n, &err, 422), -1);
    assert_int_equal(err.status, 422);
    assert_string_equal(err.msg, "illegal base64 data at input byte 2");
}

static void test_captures(void **state)
{
    struct kms_ctx *c = calloc(1, sizeof(*c));
    (void)state;
    assert_non_null(c);
    /* capture names point into the template: they end at the next '/' */
    static const char tmpl[] = "keys/+project/:name/rotate";
    c->ncap = 2;
    c->cap_names[0] = tmpl + 6;
    c->cap_names[1] = tmpl + 15;
    snprintf(c->cap_values[0], KMS_PATH_MAX, "%s", "p1");
    snprintf(c->cap_values[1], KMS_PATH_MAX, "%s", "k1");
    assert_string_equal(kms_cap(c, "project"), "p1");
    assert_string_equal(kms_cap(c, "name"), "k1");
    assert_null(kms_cap(c, "proj"));
    assert_null(kms_cap(c, "name/rotate/x"));
    assert_null(kms_cap(c, "version"));
    free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_string),      cmocka_unit_test(test_repeated_query_parameter),
        cmocka_unit_test(test_int),         cmocka_unit_test(test_bool),
        cmocka_unit_test(test_duration),    cmocka_unit_test(test_array),
        cmocka_unit_test(test_map_and_raw), cmocka_unit_test(test_unknown_and_null),
        cmocka_unit_test(test_helpers),     cmocka_unit_test(test_captures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
