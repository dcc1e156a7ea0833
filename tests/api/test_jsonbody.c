/*
 * test_jsonbody.c - api/jsonbody.c: the body reader gives exactly json_loadb's answer
 * (JSON_DECODE_ANY | JSON_REJECT_DUPLICATES): the same tree, the same types, or the same
 * refusal with the same message. Checked on a corpus of texts where yajl and jansson could
 * disagree, each padded past the small-body cut so the yajl path is the one taken, and on
 * seeded random mutations of a batch body (deterministic: a fixed xorshift seed).
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

/* Past jsonbody.c's small-body cut (1024 bytes), so yajl reads first. */
#define PADDED 1100

static size_t accepted; /* texts both readers accepted, to show the corpus is not all errors */
static size_t by_yajl;  /* texts the yajl reader built itself, without handing them over */

/* Both readers on the same bytes: equal trees, or both refuse with the same text. */
static void same_answer(const uint8_t *p, size_t n)
{
    json_error_t want_err, got_err;
    memset(&want_err, 0, sizeof(want_err));
    memset(&got_err, 0, sizeof(got_err));
    json_t *want =
        json_loadb((const char *)p, n, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &want_err);
    json_t *got = kms_json_body_load(p, n, &got_err);
    /* the yajl reader alone: it builds jansson's tree or hands the text over, never more */
    json_t *fast = kms_json_body_yajl(p, n);
    if (fast != NULL) {
        by_yajl++;
        if (want == NULL || !json_equal(want, fast)) {
            char *f = json_dumps(fast, JSON_ENCODE_ANY);
            print_error("yajl accepted (%zu bytes): %.*s\njansson: %s\nyajl: %s\n", n,
                        (int)(n > 300 ? 300 : n), (const char *)p,
                        want != NULL ? "a different tree" : want_err.text, f ? f : "?");
            free(f);
            fail();
        }
        json_decref(fast);
    }
    if ((want == NULL) != (got == NULL) || (want != NULL && !json_equal(want, got))) {
        char *w = want != NULL ? json_dumps(want, JSON_ENCODE_ANY) : NULL;
        char *g = got != NULL ? json_dumps(got, JSON_ENCODE_ANY) : NULL;
        print_error("text (%zu bytes): %.*s\njansson: %s\nbody reader: %s\n", n,
                    (int)(n > 300 ? 300 : n), (const char *)p, w ? w : want_err.text,
                    g ? g : got_err.text);
        free(w);
        free(g);
        fail();
    }
    if (want == NULL) {
        assert_string_equal(got_err.text, want_err.text);
    } else {
        accepted++;
        /* json_equal takes 1 and 1.0 as different types already; check integer values too */
        if (json_is_integer(want)) {
            assert_int_equal(json_integer_value(want), json_integer_value(got));
        }
    }
    json_decref(want);
    json_decref(got);
}

/* s inside a padded document, and s alone followed by whitespace. */
static void check_case(const char *s)
{
    size_t len = strlen(s);
    size_t cap = len + PADDED + 64;
    char *buf = malloc(cap);
    assert_non_null(buf);
    int o = snprintf(buf, cap, "{\"pad\":\"%0*d\",\"v\":%s}", PADDED, 0, s);
    same_answer((const uint8_t *)buf, (size_t)o);
    memcpy(buf, s, len);
    memset(buf + len, ' ', PADDED);
    same_answer((const uint8_t *)buf, len + PADDED);
    free(buf);
}

static const char *const corpus[] = {
    /* numbers: integers, reals, the int64 edges, overflow, grammar */
    "0",
    "-0",
    "1",
    "-1",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "-9223372036854775809",
    "123456789012345678901234567890",
    "1.0",
    "1.5e3",
    "1E3",
    "1e-3",
    "-0.0",
    "1e400",
    "-1e400",
    "1e-400",
    "01",
    "-01",
    "1.",
    ".5",
    "-",
    "+1",
    "1e",
    "1e+",
    "0x10",
    "1_000",
    "NaN",
    "Infinity",
    "-Infinity",
    "1.7976931348623157e308",
    "4.9e-324",
    "00",
    "0e0",
    "0.e1",
    /* literals */
    "true",
    "false",
    "null",
    "tru",
    "nul",
    "True",
    "NULL",
    /* strings and escapes */
    "\"\"",
    "\"a\"",
    "\"\\n\\t\\r\\b\\f\\/\\\\\\\"\"",
    "\"\\x\"",
    "\"\\'\"",
    "\"\\u0041\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"\\udc00\"",
    "\"\\ud83d\\ude00\"",
    "\"\\ud83d\"",
    "\"\\uDFFF\\uD800\"",
    "\"\\u00e9\"",
    "\"\\u12\"",
    "\"\\uzzzz\"",
    "\"a\tb\"",
    "\"a\nb\"",
    "\"a\x01"
    "b\"",
    "\"a\x1f"
    "b\"",
    "\"a\x7f"
    "b\"",
    "\"\xc3\xa9\"",
    "\"\xc3\"",
    "\"\xc0\x80\"",
    "\"\xc1\xbf\"",
    "\"\xe0\x80\x80\"",
    "\"\xed\xa0\x80\"",
    "\"\xf4\x90\x80\x80\"",
    "\"\xf5\x80\x80\x80\"",
    "\"\xff\"",
    "\"\xef\xbb\xbf\"",
    "\"\xf0\x9f\x98\x80\"",
    "\"unterminated",
    /* objects and arrays */
    "{}",
    "[]",
    "{\"a\":1,\"a\":2}",
    "{\"a\":1,\"b\":{\"a\":2}}",
    "{\"\":1}",
    "{\"\":1,\"\":2}",
    "{\"k\\u0000\":1}",
    "{\"\\u0061\":1,\"a\":2}",
    "{\"\xc3\xa9\":1}",
    "{\"\xed\xa0\x80\":1}",
    "{\"\xff\":1}",
    "{\"a\"}",
    "{\"a\":}",
    "{\"a\":1,}",
    "[1,]",
    "[,1]",
    "[1 2]",
    "{1:2}",
    "{'a':1}",
    "[[[[[[[[[[]]]]]]]]]]",
    "[{\"a\":[{\"b\":[null,true,false,1.5,\"x\"]}]}]",
    "{\"a\":1",
    "[1",
    "]",
    "}",
    "{\"a\":1}}",
    "[1]]",
    "{\"batch_input\":[{\"plaintext\":\"aGk=\"},{}]}",
    /* whitespace and trailing bytes */
    " 1 ",
    "\t[\n1\r]\n",
    "\f1",
    "\v1",
    "[1\f]",
    "1 2",
    "{} {}",
    "[] x",
    "1/*c*/",
    "// c\n1",
    "\xef\xbb\xbf{}",
    "\x00",
    "[1]\x00",
    /* an unfinished token after the top-level value (yajl's complete_parse misses it) */
    "\"3{\"\"3",
    "{} \"abc",
    "{} \"}",
    "[1] \"a\\\"",
    "{} -",
    "{} 1",
    "{}]",
    "{}}",
    "[]{",
    NULL,
};

static void test_corpus(void **state)
{
    (void)state;
    accepted = 0;
    by_yajl = 0;
    for (size_t i = 0; corpus[i] != NULL; i++) {
        check_case(corpus[i]);
    }
    /* a NUL inside a key and a string, which strlen-based cases cannot hold */
    static const char nul_key[] = "{\"a\0b\":1}";
    static const char nul_str[] = "[\"a\0b\"]";
    for (int k = 0; k < 2; k++) {
        const char *s = k == 0 ? nul_key : nul_str;
        size_t len = k == 0 ? sizeof(nul_key) - 1 : sizeof(nul_str) - 1;
        char buf[PADDED + 32];
        memcpy(buf, s, len);
        memset(buf + len, ' ', PADDED);
        same_answer((const uint8_t *)buf, len + PADDED);
    }
    assert_true(accepted > 40);
    assert_true(by_yajl > 40); /* most accepted texts never reached jansson's reader */
}

/* Depth past jansson's limit of 2048, and just under it. */
static void test_depth(void **state)
{
    (void)state;
    for (size_t depth = 2040; depth <= 2056; depth += 8) {
        size_t n = depth * 2;
        uint8_t *buf = malloc(n);
        assert_non_null(buf);
        memset(buf, '[', depth);
        memset(buf + depth, ']', depth);
        same_answer(buf, n);
        free(buf);
    }
}

/* A big batch body takes the yajl path and gives jansson's tree. */
static void test_batch_body(void **state)
{
    (void)state;
    size_t cap = 200000, o = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    o += (size_t)snprintf(buf + o, cap - o, "{\"batch_input\":[");
    for (int i = 0; i < 1000; i++) {
        o += (size_t)snprintf(buf + o, cap - o,
                              "%s{\"plaintext\":\"QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB\","
                              "\"reference\":\"r%d\",\"key_version\":%d}",
                              i ? "," : "", i, i % 3);
    }
    o += (size_t)snprintf(buf + o, cap - o, "],\"type\":\"aes256-gcm96\",\"x\":1.25}");
    size_t yajl_before = by_yajl;
    same_answer((const uint8_t *)buf, o);
    assert_int_equal(by_yajl, yajl_before + 1);
    json_error_t err;
    json_t *v = kms_json_body_load((const uint8_t *)buf, o, &err);
    assert_non_null(v);
    assert_int_equal(json_array_size(json_object_get(v, "batch_input")), 1000);
    json_decref(v);
    free(buf);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Seeded mutations of a batch body: bytes replaced, inserted and removed from a dictionary of
 * the characters and tokens where the readers could differ. */
static void test_mutations(void **state)
{
    (void)state;
    static const char *const dict[] = {
        "\"",
        "\\",
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "0",
        "-",
        "e",
        ".",
        "1e999",
        "-9223372036854775809",
        "9223372036854775807",
        "\xc0\x80",
        "\xed\xa0\x80",
        "\xff",
        "\x01",
        "\f",
        "\t",
        "\n",
        "tru",
        "null",
        "\\n",
        "\\u0000",
        "\"a\":1,\"a\":2",
        "[]",
        "{}",
        " ",
        "\x00",
        "00",
        "1.",
    };
    const size_t ndict = sizeof(dict) / sizeof(dict[0]);
    char base[PADDED + 400];
    int blen = snprintf(base, sizeof(base),
                        "{\"batch_input\":[{\"plaintext\":\"aGVsbG8=\",\"reference\":\"a\"},"
                        "{\"ciphertext\":\"vault:v1:abc\",\"key_version\":2,\"context\":\"\"},"
                        "{\"nonce\":null,\"x\":[true,false,1.5e2,-0]}],\"pad\":\"%0*d\","
                        "\"n\":{\"m\":[1,2,{\"o\":\"\xc3\xa9\"}]}}",
                        PADDED, 0);
    assert_true(blen > 0 && (size_t)blen < sizeof(base));
    uint8_t buf[sizeof(base) + 256];
    size_t both_ok = 0;
    for (int iter = 0; iter < 40000; iter++) {
        size_t n = (size_t)blen;
        memcpy(buf, base, n);
        int edits = 1 + (int)(rng() % 4);
        for (int e = 0; e < edits; e++) {
            size_t at = (size_t)(rng() % n);
            const char *tok = dict[rng() % ndict];
            size_t tl = tok[0] == '\0' ? 1 : strlen(tok);
            switch (rng() % 3) {
            case 0: /* replace */
                if (at + tl <= n) {
                    memcpy(buf + at, tok, tl);
                }
                break;
            case 1: /* insert */
                if (n + tl <= sizeof(buf)) {
                    memmove(buf + at + tl, buf + at, n - at);
                    memcpy(buf + at, tok, tl);
                    n += tl;
                }
                break;
            default: /* remove */
                if (at + tl < n) {
                    memmove(buf + at, buf + at + tl, n - at - tl);
                    n -= tl;
                }
                break;
            }
        }
        size_t before = accepted;
        same_answer(buf, n);
        both_ok += accepted - before;
    }
    /* the mutations reach both sides: some texts still parse, most do not */
    assert_true(both_ok > 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corpus),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_batch_body),
        cmocka_unit_test(test_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
