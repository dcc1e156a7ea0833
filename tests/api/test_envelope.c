/*
 * test_envelope.c - api/envelope.c, the one writer of response bytes: error bodies (plain,
 * multierror-wrapped, the empty array of a 404, 500 when no status was set), text bodies with
 * their content type, raw bodies with their status, 204 when there is nothing to say, the
 * warnings-only 200, sys/ routes' top-level copy, Go's sorted data keys, and the request id
 * shared with the audit lines.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "api/api_int.h"

#include <stdlib.h>
#include <string.h>

struct rendered {
    int status;
    json_t *body;
    char text[256];
    char ctype[64];
};

/* Render c with rc and release the context's outputs the way kms_api_handle does. */
static void render(struct kms_ctx *c, int rc, struct rendered *out)
{
    struct kms_http_resp resp;
    memset(&resp, 0, sizeof(resp));
    kms_render(c, rc, &resp);
    out->status = resp.status;
    out->body = resp.body ? json_loadb(resp.body, resp.body_len, JSON_DECODE_ANY, NULL) : NULL;
    snprintf(out->text, sizeof(out->text), "%.*s", (int)resp.body_len, resp.body ? resp.body : "");
    snprintf(out->ctype, sizeof(out->ctype), "%s", resp.content_type);
    kms_http_resp_dispose(&resp);
    free(c->text);
    json_decref(c->warnings);
    json_decref(c->data);
    json_decref(c->raw);
    json_decref(c->auth);
    memset(c, 0, sizeof(*c));
}

static const char *err0(json_t *body)
{
    return json_string_value(json_array_get(json_object_get(body, "errors"), 0));
}

static void test_errors(void **state)
{
    struct kms_ctx *c = calloc(1, sizeof(*c));
    struct rendered r;
    (void)state;
    assert_non_null(c);
    kms_err_set(&c->err, 400, "bad %s", "input");
    render(c, -1, &r);
    assert_int_equal(r.status, 400);
    assert_string_equal(r.text, "{\"errors\":[\"bad input\"]}\n");
    json_decref(r.body);

    kms_err_setw(&c->err, 500, "no such thing");
    render(c, -1, &r);
    assert_int_equal(r.status, 500);
    assert_string_equal(err0(r.body), "1 error occurred:\n\t* no such thing\n\n");
    json_decref(r.body);

    /* a failure that set no status is a 500; one with no message has an empty array */
    render(c, -1, &r);
    assert_int_equal(r.status, 500);
    assert_int_equal(json_array_size(json_object_get(r.body, "errors")), 0);
    json_decref(r.body);

    assert_int_equal(kms_fail_notfound(c), -1);
    render(c, -1, &r);
    assert_int_equal(r.status, 404);
    assert_string_equal(r.text, "{\"errors\":[]}\n");
    json_decref(r.body);

    /* an error drops whatever the handler had produced */
    c->data = json_pack("{s:s}", "secret", "x");
    kms_err_set(&c->err, 403, "permission denied");
    render(c, -1, &r);
    assert_null(json_object_get(r.body, "data"));
    assert_null(strstr(r.text, "secret"));
    json_decref(r.body);
    free(c);
}

static void test_text_raw_and_empty(void **state)
{
    struct kms_ctx *c = calloc(1, sizeof(*c));
    struct rendered r;
    (void)state;
    assert_non_null(c);
    c->text = strdup("metric 1\n");
    c->text_len = strlen(c->text);
    c->content_type = "text/plain; version=0.0.4";
    render(c, 0, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.text, "metric 1\n");
    assert_string_equal(r.ctype, "text/plain; version=0.0.4");
    assert_null(r.body);

    /* raw bodies go out as they are, with the handler's status */
    c->raw = json_pack("{s:b}", "initialized", true);
    c->status = 501;
    render(c, 0, &r);
    assert_int_equal(r.status, 501);
    assert_string_equal(r.text, "{\"initialized\":true}\n");
    assert_string_equal(r.ctype, "");
    json_decref(r.body);

    /* nothing to say: 204 without a body, even with warnings unless asked for them */
    render(c, 0, &r);
    assert_int_equal(r.status, 204);
    assert_null(r.body);
    assert_string_equal(r.text, "");
    kms_warn(c, "ignored %d", 1);
    render(c, 0, &r);
    assert_int_equal(r.status, 204);
    assert_int_equal(kms_reply_warnings(c), 0);
    render(c, 0, &r);
    assert_int_equal(r.status, 204);
    assert_int_equal(kms_reply_warnings(c), 0);
    kms_warn(c, "role %s has no policies", "r");
    render(c, 0, &r);
    assert_int_equal(r.status, 200);
    assert_true(json_is_null(json_object_get(r.body, "data")));
    assert_string_equal(json_string_value(json_array_get(json_object_get(r.body, "warnings"), 0)),
                        "role r has no policies");
    json_decref(r.body);
    free(c);
}

static void test_envelope(void **state)
{
    struct kms_ctx *c = calloc(1, sizeof(*c));
    struct rendered r;
    static const struct kms_route plain = {.tmpl = "x"};
    static const struct kms_route top = {.tmpl = "mounts", .flags = KMS_RT_SYS_TOP};
    (void)state;
    assert_non_null(c);

    /* data keys sorted as Go marshals a map; the audit request id is the envelope's */
    c->route = &plain;
    c->data = json_pack("{s:i, s:i, s:i}", "zz", 1, "aa", 2, "mm", 3);
    snprintf(c->audit.request_id, sizeof(c->audit.request_id), "%s",
             "11111111-2222-4333-8444-555555555555");
    render(c, 0, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.text, "\"data\":{\"aa\":2,\"mm\":3,\"zz\":1}"));
    assert_string_equal(json_string_value(json_object_get(r.body, "request_id")),
                        "11111111-2222-4333-8444-555555555555");
    assert_string_equal(json_string_value(json_object_get(r.body, "lease_id")), "");
    assert_true(json_is_false(json_object_get(r.body, "renewable")));
    assert_int_equal(json_integer_value(json_object_get(r.body, "lease_duration")), 0);
    assert_true(json_is_null(json_object_get(r.body, "wrap_info")));
    assert_true(json_is_null(json_object_get(r.body, "warnings")));
    assert_true(json_is_null(json_object_get(r.body, "auth")));
    assert_null(json_object_get(r.body, "zz")); /* not a sys/ route: no top-level copy */
    json_decref(r.body);

    /* without an audit id, a fresh UUID */
    c->route = &plain;
    c->data = json_object();
    render(c, 0, &r);
    assert_int_equal(strlen(json_string_value(json_object_get(r.body, "request_id"))), 36);
    json_decref(r.body);

    /* sys/ routes copy data to the top level as well */
    c->route = &top;
    c->data = json_pack("{s:{s:s}}", "transit/", "type", "transit");
    render(c, 0, &r);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(r.body, "transit/"), "type")), "transit");
    assert_non_null(json_object_get(json_object_get(r.body, "data"), "transit/"));
    json_decref(r.body);

    /* an auth block alone makes a 200; a batch's partial failure keeps its status */
    c->auth = json_pack("{s:s}", "client_token", "t");
    render(c, 0, &r);
    assert_int_equal(r.status, 200);
    assert_true(json_is_null(json_object_get(r.body, "data")));
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(r.body, "auth"), "client_token")), "t");
    json_decref(r.body);
    c->data = json_pack("{s:[]}", "batch_results");
    c->status = 400;
    kms_warn(c, "w");
    render(c, 0, &r);
    assert_int_equal(r.status, 400);
    assert_null(json_object_get(r.body, "errors"));
    assert_string_equal(json_string_value(json_array_get(json_object_get(r.body, "warnings"), 0)),
                        "w");
    json_decref(r.body);
    free(c);
}

/* The writer gives json_dumps' bytes (JSON_COMPACT | JSON_ENCODE_ANY): nested values, escapes,
 * UTF-8, numbers; with sort_top the object's own keys in byte order. */
static void test_writer_matches_jansson(void **state)
{
    (void)state;
    const char *docs[] = {
        "{\"ciphertext\":\"vault:v1:abc+/=\",\"key_version\":1}",
        "{\"z\":1,\"a\":{\"y\":[1,2,{\"q\":null}],\"b\":true},\"m\":false,\"\\u00e9\":\"caf\\u00e9 "
        "\\ud83d\\ude00\"}",
        "{\"esc\":\"q\\\" b\\\\ s/ \\b\\f\\n\\r\\t \\u0001\\u001f "
        "\\u007f\",\"neg\":-9007199254740993,"
        "\"r\":0.1,\"r2\":100.0,\"r3\":1e300,\"e\":{},\"ea\":[]}",
        "[\"a\",1,null]",
        "\"just a string\"",
        "{}",
    };
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        json_t *v = json_loads(docs[i], JSON_DECODE_ANY, NULL);
        assert_non_null(v);
        char *want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        struct kms_jw w = {NULL, 0, 0, false};
        kms_jw_value(&w, v, false);
        assert_false(w.oom);
        assert_string_equal(w.p, want);
        free(w.p);
        free(want);
        if (json_is_object(v)) {
            /* sorted: json_dumps with JSON_SORT_KEYS sorts every level, so compare the top */
            json_t *sorted = json_object();
            const char *keys[16];
            size_t n = 0;
            const char *k;
            json_t *e;
            json_object_foreach(v, k, e)
            {
                keys[n++] = k;
            }
            for (size_t a = 0; a < n; a++) {
                for (size_t b = a + 1; b < n; b++) {
                    if (strcmp(keys[b], keys[a]) < 0) {
                        const char *t = keys[a];
                        keys[a] = keys[b];
                        keys[b] = t;
                    }
                }
            }
            for (size_t a = 0; a < n; a++) {
                json_object_set(sorted, keys[a], json_object_get(v, keys[a]));
            }
            want = json_dumps(sorted, JSON_COMPACT | JSON_ENCODE_ANY);
            struct kms_jw ws = {NULL, 0, 0, false};
            kms_jw_value(&ws, v, true);
            assert_string_equal(ws.p, want);
            free(ws.p);
            free(want);
            json_decref(sorted);
        }
        json_decref(v);
    }
}

/* kms_jw_uint writes what json_dumps writes for the same integer. */
static void test_writer_uint(void **state)
{
    (void)state;
    const uint64_t vals[] = {
        0, 1, 9, 10, 99, 100, 4294967295u, 9007199254740993ull, (uint64_t)INT64_MAX};
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        json_t *v = json_integer((json_int_t)vals[i]);
        char *want = json_dumps(v, JSON_ENCODE_ANY);
        struct kms_jw w = {NULL, 0, 0, false};
        kms_jw_raw(&w, "[", 1);
        kms_jw_uint(&w, vals[i]);
        kms_jw_raw(&w, "]", 1);
        assert_false(w.oom);
        assert_int_equal(w.len, strlen(want) + 2);
        assert_memory_equal(w.p + 1, want, strlen(want));
        free(w.p);
        free(want);
        json_decref(v);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors),      cmocka_unit_test(test_text_raw_and_empty),
        cmocka_unit_test(test_envelope),    cmocka_unit_test(test_writer_matches_jansson),
        cmocka_unit_test(test_writer_uint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
