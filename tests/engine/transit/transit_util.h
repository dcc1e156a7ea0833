/*
 * transit_util.h - small helpers shared by the Transit engine tests (static inline, so a test
 * that does not use one gets no warning): formatted requests with an asserted status and
 * error string, base64 of test strings, and encrypt/decrypt shortcuts.
 */
#ifndef KMS_TESTS_ENGINE_TRANSIT_UTIL_H
#define KMS_TESTS_ENGINE_TRANSIT_UTIL_H

#include "tests/engine/engine_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Request with the root token and an asserted status; returns the body (caller decrefs). */
static inline json_t *tt_req(struct kt *t, int want, const char *method, const char *target,
                             const char *body)
{
    return kt_ok(t, want, method, target, NULL, body);
}

/* Request that must fail with `want` and exactly the error `msg`. */
static inline void tt_fail(struct kt *t, int want, const char *method, const char *target,
                           const char *body, const char *msg)
{
    json_t *b = kt_ok(t, want, method, target, NULL, body);
    if (strcmp(kt_err(b), msg) != 0) {
        fprintf(stderr, "%s %s: error \"%s\", want \"%s\"\n", method, target, kt_err(b), msg);
    }
    assert_string_equal(kt_err(b), msg);
    json_decref(b);
}

/* A string member of body.data ("" when absent). */
static inline const char *tt_str(const json_t *body, const char *key)
{
    const char *s = json_string_value(kt_data(body, key));
    return s ? s : "";
}

/* The first warning of a body ("" when none). */
static inline const char *tt_warning(const json_t *body)
{
    const char *s = json_string_value(json_array_get(json_object_get(body, "warnings"), 0));
    return s ? s : "";
}

/* base64 of a C string into out (at least 4/3 strlen + 4 bytes). */
static inline const char *tt_b64(const char *s, char *out)
{
    kms_b64_encode((const uint8_t *)s, strlen(s), out);
    return out;
}

/* POST transit/keys/<name> with `body`; 200 expected. */
static inline void tt_create(struct kt *t, const char *name, const char *body)
{
    char target[256];
    snprintf(target, sizeof(target), "/v1/transit/keys/%s", name);
    json_decref(tt_req(t, 200, "POST", target, body ? body : "{}"));
}

/* Encrypt base64 `pt` under `name` with extra JSON members `extra` (may be NULL or "");
 * returns the ciphertext (caller frees). */
static inline char *tt_encrypt(struct kt *t, const char *name, const char *pt, const char *extra)
{
    char target[256];
    char body[4096];
    snprintf(target, sizeof(target), "/v1/transit/encrypt/%s", name);
    snprintf(body, sizeof(body), "{\"plaintext\":\"%s\"%s%s}", pt, extra && extra[0] ? "," : "",
             extra ? extra : "");
    json_t *b = tt_req(t, 200, "POST", target, body);
    char *ct = strdup(tt_str(b, "ciphertext"));
    assert_true(strncmp(ct, "vault:v", 7) == 0);
    json_decref(b);
    return ct;
}

/* Decrypt `ct` under `name` (extra JSON members as above); asserts 200 and the plaintext. */
static inline void tt_decrypt_is(struct kt *t, const char *name, const char *ct, const char *extra,
                                 const char *want_pt)
{
    char target[256];
    char body[4096];
    snprintf(target, sizeof(target), "/v1/transit/decrypt/%s", name);
    snprintf(body, sizeof(body), "{\"ciphertext\":\"%s\"%s%s}", ct, extra && extra[0] ? "," : "",
             extra ? extra : "");
    json_t *b = tt_req(t, 200, "POST", target, body);
    assert_string_equal(tt_str(b, "plaintext"), want_pt);
    json_decref(b);
}

/* Decrypt that must fail with `want` and `msg`. */
static inline void tt_decrypt_fails(struct kt *t, const char *name, const char *ct,
                                    const char *extra, int want, const char *msg)
{
    char target[256];
    char body[4096];
    snprintf(target, sizeof(target), "/v1/transit/decrypt/%s", name);
    snprintf(body, sizeof(body), "{\"ciphertext\":\"%s\"%s%s}", ct, extra && extra[0] ? "," : "",
             extra ? extra : "");
    tt_fail(t, want, "POST", target, body, msg);
}

#endif
