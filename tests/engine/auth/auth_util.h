/*
 * auth_util.h - helpers shared by the auth engine tests (static inline, so an unused one
 * warns nowhere): requests with an asserted status and error, requests with a chosen token,
 * header set or peer address, the auth block of a body, and an injectable token-store clock.
 */
#ifndef KMS_TESTS_ENGINE_AUTH_UTIL_H
#define KMS_TESTS_ENGINE_AUTH_UTIL_H

#include "tests/engine/engine_fixture.h"
#include "auth/auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Root-token request with an asserted status; returns the body (caller decrefs). */
static inline json_t *at_req(struct kt *t, int want, const char *method, const char *target,
                             const char *body)
{
    return kt_ok(t, want, method, target, NULL, body);
}

/* Assert the first error string of a body, printing both on a mismatch. */
static inline void at_err_is(const json_t *b, const char *msg)
{
    if (strcmp(kt_err(b), msg) != 0) {
        fprintf(stderr, "error \"%s\", want \"%s\"\n", kt_err(b), msg);
    }
    assert_string_equal(kt_err(b), msg);
}

/* Root-token request that must fail with `want` and exactly `msg`. */
static inline void at_fail(struct kt *t, int want, const char *method, const char *target,
                           const char *body, const char *msg)
{
    json_t *b = kt_ok(t, want, method, target, NULL, body);
    at_err_is(b, msg);
    json_decref(b);
}

/* Request with `token` (NULL = none) and namespace `ns`, asserting the status. */
static inline json_t *at_as(struct kt *t, const char *token, const char *ns, int want,
                            const char *method, const char *target, const char *body)
{
    json_t *out = NULL;
    int got = kt_call(t, method, target, token, ns, body, &out);
    if (got != want) {
        char *text = out ? json_dumps(out, 0) : NULL;
        fprintf(stderr, "%s %s -> %d (want %d): %s\n", method, target, got, want, text ? text : "");
        free(text);
    }
    assert_int_equal(got, want);
    return out;
}

/* Request with arbitrary headers and peer address; returns the status, *out the body. */
static inline int at_raw(struct kt *t, const char *method, const char *target,
                         const struct kms_http_header *h, size_t nh, const char *peer,
                         const char *body, json_t **out)
{
    struct kms_http_req req;
    struct kms_http_resp resp;
    memset(&req, 0, sizeof(req));
    req.method = method;
    req.target = target;
    req.headers = h;
    req.nheaders = nh;
    req.body = (const uint8_t *)body;
    req.body_len = body ? strlen(body) : 0;
    req.remote_addr = peer;
    req.remote_port = 4242;
    kms_api_handle(t->api, &req, &resp);
    *out = resp.body_len ? json_loadb(resp.body, resp.body_len, 0, NULL) : NULL;
    int status = resp.status;
    kms_http_resp_dispose(&resp);
    return status;
}

static inline json_t *at_auth(const json_t *body, const char *key)
{
    return json_object_get(json_object_get(body, "auth"), key);
}

static inline const char *at_auth_str(const json_t *body, const char *key)
{
    const char *s = json_string_value(at_auth(body, key));
    return s ? s : "";
}

static inline const char *at_str(const json_t *body, const char *key)
{
    const char *s = json_string_value(kt_data(body, key));
    return s ? s : "";
}

static inline const char *at_warning(const json_t *body, size_t i)
{
    const char *s = json_string_value(json_array_get(json_object_get(body, "warnings"), i));
    return s ? s : "";
}

/* Does the JSON array `arr` hold exactly the strings of `want` (NULL-terminated), in order? */
static inline void at_strings_are(const json_t *arr, const char *const *want)
{
    size_t n = 0;
    while (want[n] != NULL) {
        n++;
    }
    assert_int_equal(json_array_size(arr), n);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(json_string_value(json_array_get(arr, i)), want[i]);
    }
}

/* The token-store clock: tests move at_clock_ms by hand (kms_auth_set_clock). */
static int64_t at_clock_ms;

static inline int64_t at_clock(void *arg)
{
    (void)arg;
    return at_clock_ms;
}

/* Start the injected clock at the wall clock's current second. */
static inline void at_clock_install(struct kt *t)
{
    int64_t s;
    int32_t ns;
    kms_now(&s, &ns);
    at_clock_ms = s * 1000;
    kms_auth_set_clock(kms_api_auth(t->api), at_clock, NULL);
}

#endif
