/*
 * test_line_kat.c - known answers for the audit line writer: fixed inputs (auth, request,
 * response blocks, error, kmsd's fields; device options and salt; time) must give exactly the
 * bytes the writer gave before it stopped building JSON trees (the golden lines below were
 * produced by the jansson-tree writer of commit 4ab5a9f). Covers every hashing rule (tokens,
 * accessors with and without hmac_accessor, wrap_info, response auth, every string leaf of
 * data at any depth, RFC 3339 times in clear, empty and non-string tokens) and jansson's
 * escaping (quotes, backslashes, control characters, non-ASCII in and outside the BMP).
 *
 * KAT_PRINT=1 prints the lines instead of comparing them (to regenerate the table).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "audit/audit_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SALT "0f7a9c4e-3b21-4d5e-8a6b-1c2d3e4f5a6b"
#define TIME "2026-05-01T10:00:00.123456789Z"

struct kat {
    const char *name;
    bool hmac_accessor;
    const char *type;
    const char *auth;     /* JSON text or NULL */
    const char *request;  /* JSON text or NULL */
    const char *response; /* JSON text or NULL */
    const char *error;
    const char *extra; /* JSON text or NULL */
    const char *want;
};

static const struct kat kats[] = {
#include "line_kat.inc"
};

static json_t *load(const char *text)
{
    if (text == NULL) {
        return NULL;
    }
    json_error_t e;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &e);
    if (v == NULL) {
        fail_msg("bad fixture JSON: %s: %s", e.text, text);
    }
    return v;
}

static void test_lines_match_known_answers(void **state)
{
    (void)state;
    bool print = getenv("KAT_PRINT") != NULL;
    for (size_t i = 0; i < sizeof(kats) / sizeof(kats[0]); i++) {
        const struct kat *k = &kats[i];
        struct kms_audit_device_opts o;
        kms_audit_device_opts_default(&o);
        o.hmac_accessor = k->hmac_accessor;
        json_t *auth = load(k->auth), *req = load(k->request), *resp = load(k->response),
               *extra = load(k->extra);
        char *out = NULL;
        size_t len = 0;
        assert_int_equal(kms_audit_format_body(&o, SALT, auth, req, TIME, k->type, resp, k->error,
                                               extra, &out, &len),
                         0);
        assert_int_equal(strlen(out), len);
        if (print) {
            printf("%s\n%s\n", k->name, out);
        } else if (strcmp(out, k->want) != 0) {
            fail_msg("%s:\n got  %s\n want %s", k->name, out, k->want);
        }
        free(out);
        json_decref(auth);
        json_decref(req);
        json_decref(resp);
        json_decref(extra);
    }
}

/* The same record twice gives the same bytes (the cached auth/request blocks are reused). */
static void test_deterministic(void **state)
{
    (void)state;
    const struct kat *k = &kats[0];
    struct kms_audit_device_opts o;
    kms_audit_device_opts_default(&o);
    json_t *auth = load(k->auth), *req = load(k->request);
    char *a = NULL, *b = NULL;
    size_t la = 0, lb = 0;
    assert_int_equal(
        kms_audit_format_body(&o, SALT, auth, req, TIME, "request", NULL, NULL, NULL, &a, &la), 0);
    assert_int_equal(
        kms_audit_format_body(&o, SALT, auth, req, TIME, "request", NULL, NULL, NULL, &b, &lb), 0);
    assert_int_equal(la, lb);
    assert_memory_equal(a, b, la);
    free(a);
    free(b);
    json_decref(auth);
    json_decref(req);
}

/* Append code point cp as UTF-8. */
static size_t put_utf8(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Strings of random code points (fixed seed) escape exactly as jansson escapes them; strings
 * that are not UTF-8 are refused, as jansson refuses them. */
static void test_string_escaping_matches_jansson(void **state)
{
    (void)state;
    uint32_t x = 12345;
    char s[256];
    for (int round = 0; round < 5000; round++) {
        size_t n = 0;
        int len = (int)((x = x * 1103515245u + 12345u) >> 16) % 40;
        for (int i = 0; i < len; i++) {
            x = x * 1103515245u + 12345u;
            uint32_t r = x >> 8, cp;
            switch (r % 4) {
            case 0:
                cp = r % 0x80;
                break;
            case 1:
                cp = 0x80 + r % 0x780;
                break;
            case 2:
                cp = 0x800 + r % 0xF800;
                break;
            default:
                cp = 0x10000 + r % 0x100000;
                break;
            }
            if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF)) {
                cp = 'a';
            }
            n += put_utf8(s + n, cp);
        }
        json_t *j = json_stringn(s, n);
        assert_non_null(j);
        char *want = json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_ENCODE_ANY);
        struct kms_audit_sbuf b = {NULL, 0, 0};
        assert_int_equal(kms_audit_sb_str(&b, s, n), 0);
        assert_string_equal(b.p, want);
        free(b.p);
        free(want);
        json_decref(j);
    }
    const char *bad[] = {"\xC0\x80", "\xED\xA0\x80", "\xF5\x80\x80\x80", "ab\xE2\x82", "\x80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct kms_audit_sbuf b = {NULL, 0, 0};
        assert_null(json_string(bad[i]));
        assert_int_equal(kms_audit_sb_str(&b, bad[i], strlen(bad[i])), -1);
        free(b.p);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines_match_known_answers),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_string_escaping_matches_jansson),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
