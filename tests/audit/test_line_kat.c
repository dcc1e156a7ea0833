/*
 * test_line_kat.c - known answers for the audit line writer: fixed inputs (auth, request,
 * response blocks, error, kmsd's fields; device options and salt; time) must give exactly the
 * bytes the writer gave before it stopped building JSON trees (the golden lines below were
 * produced by the jansson-tree writer of commit 4ab5a9f). Covers every hashing rule (tokens,
 * accessors with and without hmac_accessor, wrap_info, response auth, every string leaf of
 * data at any depth, RFC 3339 times in clear, empty and non-string tokens) and jansson's
 * escaping (quotes, backslashes, control characters, non-ASCII in and outside the BMP).
 *
 * The same fixtures are also written through the writer calls (kms_audit_lw_*, what the
 * API's audit hook uses instead of trees): a walker below picks the call for each member by
 * Vault's rules, and the bytes must be the same golden lines.
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
        assert_int_equal(kms_audit_sb_str(&b, bad[i], strlen(bad[i])), KMS_AUDIT_NOT_UTF8);
        free(b.p);
    }
}

/* ---- the same fixtures through the writer calls ------------------------------------------ */

enum kind { K_AUTH, K_REQUEST, K_RESPONSE, K_WRAP, K_TOP };

/* A member in clear, with the scalar calls where they apply. */
static void lw_clear(struct kms_audit_lw *w, const char *key, json_t *v)
{
    if (json_is_string(v)) {
        kms_audit_lw_strn(w, key, json_string_value(v), json_string_length(v));
    } else if (json_is_integer(v)) {
        kms_audit_lw_int(w, key, json_integer_value(v));
    } else if (json_is_boolean(v)) {
        kms_audit_lw_bool(w, key, json_is_true(v));
    } else {
        kms_audit_lw_json(w, key, v);
    }
}

static void lw_block(struct kms_audit_lw *w, const char *name, json_t *obj, enum kind kind)
{
    const char *k;
    json_t *v;
    if (!json_is_object(obj)) {
        kms_audit_lw_json(w, name, obj);
        return;
    }
    kms_audit_lw_begin(w, name, '{');
    json_object_foreach(obj, k, v)
    {
        bool token = (kind != K_WRAP && strcmp(k, "client_token") == 0) ||
                     (kind == K_WRAP && strcmp(k, "token") == 0);
        bool accessor = ((kind == K_AUTH || kind == K_WRAP) && strcmp(k, "accessor") == 0) ||
                        (kind == K_REQUEST && strcmp(k, "client_token_accessor") == 0);
        if ((token || accessor) && kind != K_RESPONSE && json_is_string(v)) {
            if (token) {
                kms_audit_lw_token(w, k, json_string_value(v));
            } else {
                kms_audit_lw_accessor(w, k, json_string_value(v));
            }
        } else if ((kind == K_REQUEST || kind == K_RESPONSE) && strcmp(k, "data") == 0) {
            kms_audit_lw_data(w, k, v);
        } else if (kind == K_RESPONSE && strcmp(k, "auth") == 0) {
            kms_audit_lw_auth(w, k, v);
        } else if (kind == K_RESPONSE && strcmp(k, "wrap_info") == 0) {
            lw_block(w, k, v, K_WRAP);
        } else {
            lw_clear(w, k, v);
        }
    }
    kms_audit_lw_end(w);
}

struct lw_fixture {
    json_t *auth, *req, *resp, *extra;
    const char *error;
};

static int lw_blocks(struct kms_audit_lw *w, void *arg)
{
    struct lw_fixture *f = arg;
    if (f->auth != NULL) {
        lw_block(w, "auth", f->auth, K_AUTH);
    }
    if (f->req != NULL) {
        lw_block(w, "request", f->req, K_REQUEST);
    }
    return 0;
}

static int lw_tail(struct kms_audit_lw *w, void *arg)
{
    struct lw_fixture *f = arg;
    const char *k;
    json_t *v;
    if (f->resp != NULL) {
        lw_block(w, "response", f->resp, K_RESPONSE);
    }
    if (f->error != NULL && f->error[0] != '\0') {
        kms_audit_lw_str_strict(w, "error", f->error);
    }
    json_object_foreach(f->extra, k, v)
    {
        lw_clear(w, k, v);
    }
    return 0;
}

static void test_writer_calls_match_known_answers(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(kats) / sizeof(kats[0]); i++) {
        const struct kat *k = &kats[i];
        struct kms_audit_device_opts o;
        kms_audit_device_opts_default(&o);
        o.hmac_accessor = k->hmac_accessor;
        struct lw_fixture f = {load(k->auth), load(k->request), load(k->response), load(k->extra),
                               k->error};
        char *out = NULL;
        size_t len = 0;
        assert_int_equal(kms_audit_format_body_w(&o, SALT, lw_blocks, &f, TIME, k->type, lw_tail,
                                                 &f, &out, &len),
                         0);
        assert_int_equal(strlen(out), len);
        if (strcmp(out, k->want) != 0) {
            fail_msg("%s (writer calls):\n got  %s\n want %s", k->name, out, k->want);
        }
        free(out);
        json_decref(f.auth);
        json_decref(f.req);
        json_decref(f.resp);
        json_decref(f.extra);
    }
}

/* Strings that are not UTF-8 are left out (a member) or skipped (an element), as jansson's
 * setters refused them; a container left open, or a strict string, refuses the line. */
static int lw_bad_utf8(struct kms_audit_lw *w, void *arg)
{
    (void)arg;
    kms_audit_lw_begin(w, "o", '{');
    kms_audit_lw_str(w, "a", "x\xff");
    kms_audit_lw_str(w, "k\xc3", "v");
    kms_audit_lw_token(w, "t", "s.\xfe");
    kms_audit_lw_str(w, "b", "ok");
    kms_audit_lw_end(w);
    kms_audit_lw_begin(w, "arr", '[');
    kms_audit_lw_str(w, NULL, "\xc0\x80");
    kms_audit_lw_int(w, NULL, -9223372036854775807LL - 1);
    kms_audit_lw_str(w, NULL, "y");
    kms_audit_lw_end(w);
    kms_audit_lw_hmac(w, "h", "\xff\x00", 2);
    return 0;
}

static int lw_open_container(struct kms_audit_lw *w, void *arg)
{
    (void)arg;
    kms_audit_lw_begin(w, "o", '{');
    return 0;
}

static int lw_strict_bad(struct kms_audit_lw *w, void *arg)
{
    (void)arg;
    kms_audit_lw_str_strict(w, "error", "bad \xff");
    return 0;
}

static void test_writer_edges(void **state)
{
    (void)state;
    struct kms_audit_device_opts o;
    kms_audit_device_opts_default(&o);
    char *out = NULL;
    size_t len = 0;
    char want[256];
    char h[KMS_AUDIT_HMAC_LEN + 1];
    assert_int_equal(kms_audit_hmac(SALT, "\xff\x00", 2, h), 0);
    snprintf(want, sizeof(want),
             "{\"time\":\"%s\",\"type\":\"request\",\"o\":{\"b\":\"ok\"},"
             "\"arr\":[-9223372036854775808,\"y\"],\"h\":\"%s\"}",
             TIME, h);
    assert_int_equal(kms_audit_format_body_w(&o, SALT, NULL, NULL, TIME, "request", lw_bad_utf8,
                                             NULL, &out, &len),
                     0);
    assert_string_equal(out, want);
    free(out);
    assert_int_equal(kms_audit_format_body_w(&o, SALT, lw_open_container, NULL, TIME, "request",
                                             NULL, NULL, &out, &len),
                     -1);
    assert_int_equal(kms_audit_format_body_w(&o, SALT, NULL, NULL, TIME, "request", lw_strict_bad,
                                             NULL, &out, &len),
                     -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines_match_known_answers),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_string_escaping_matches_jansson),
        cmocka_unit_test(test_writer_calls_match_known_answers),
        cmocka_unit_test(test_writer_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
