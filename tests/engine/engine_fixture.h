/*
 * engine_fixture.h - a socket-free kmsd for unit tests: a real LMDB store in a temporary
 * directory, the real engines composed by kms_engines_create, dev bootstrap (root token
 * "root", transit/ mounted), and helpers that run one request through kms_api_handle.
 */
#ifndef KMS_TESTS_ENGINE_FIXTURE_H
#define KMS_TESTS_ENGINE_FIXTURE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "api/engine.h"
#include "audit/audit.h"
#include "engine/engines.h"

#include <jansson.h>

struct kt {
    char dir[64];
    struct kms_storage *st;
    struct kms_api *api;
    struct kms_audit *audit; /* NULL unless kt_open_audited */
    char audit_path[128];
    struct kms_api_opts opts;
    struct kms_engines_opts eopts;
};

/* cmocka setup/teardown: a fresh store and API per test (*state is a struct kt *). */
int kt_setup(void **state);
int kt_setup_audited(void **state); /* also a file audit device at kt->audit_path */
int kt_teardown(void **state);
/* Close and reopen the API over the same store (restart), keeping the options. */
void kt_reopen(struct kt *t);

/*
 * Run one request. token/ns/body may be NULL. Returns the HTTP status; *out (if not NULL)
 * receives the parsed body (NULL for an empty one; caller decrefs). ctype NULL = JSON.
 */
int kt_call(struct kt *t, const char *method, const char *target, const char *token, const char *ns,
            const char *body, json_t **out);
int kt_call_ct(struct kt *t, const char *method, const char *target, const char *token,
               const char *ns, const char *ctype, const char *body, json_t **out);
/* Like kt_call with the root token, asserting the status. Returns the body (may be NULL). */
json_t *kt_ok(struct kt *t, int want, const char *method, const char *target, const char *ns,
              const char *body);
/* The first error string of a body ("" when none). */
const char *kt_err(const json_t *body);
/* Poll the audit file (kt_setup_audited) until a line contains `needle`; false after 10 s. */
bool kt_audit_contains(const struct kt *t, const char *needle);
/* Data field helpers: body.data.<key>. */
json_t *kt_data(const json_t *body, const char *key);

#endif
