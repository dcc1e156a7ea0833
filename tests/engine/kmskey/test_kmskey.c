/*
 * test_kmskey.c - the KMSKey endpoints of docs/kmskey.md through kms_api_handle: the object and
 * its defaults, both request forms, every validation error of the spec table, name rules,
 * immutability and generation, list, rotate, min-decryption-version, schedule/cancel delete,
 * DELETE under both policies, adoption of an existing Transit key, and what the object and
 * the controller do when the Transit key or the organization's transit/ mount goes away.
 */
#include "tests/engine/engine_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ORG "org1"

static void make_org(struct kt *t, const char *org)
{
    char target[256];
    snprintf(target, sizeof(target), "/v1/sys/namespaces/%s", org);
    json_decref(kt_ok(t, 200, "POST", target, NULL, NULL));
}

static int setup(void **state)
{
    assert_int_equal(kt_setup(state), 0);
    struct kt *t = *state;
    t->eopts.kms_deletion_delay = 60;
    kt_reopen(t);
    make_org(t, ORG);
    return 0;
}

static int setup_audited(void **state)
{
    assert_int_equal(kt_setup_audited(state), 0);
    make_org(*state, ORG);
    return 0;
}

static const char *str(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static json_t *status_of(const json_t *b)
{
    return json_object_get(json_object_get(b, "data"), "status");
}

static json_t *spec_of(const json_t *b)
{
    return json_object_get(json_object_get(b, "data"), "spec");
}

static json_t *meta_of(const json_t *b)
{
    return json_object_get(json_object_get(b, "data"), "metadata");
}

static int64_t ival(const json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

/* The condition of `type` in a KMSKey body. */
static json_t *cond(const json_t *b, const char *type)
{
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(status_of(b), "conditions"), i, c)
    {
        if (strcmp(str(c, "type"), type) == 0) {
            return c;
        }
    }
    fail_msg("no condition %s", type);
    return NULL;
}

static void expect_cond(const json_t *b, const char *type, const char *status, const char *reason)
{
    json_t *c = cond(b, type);
    assert_string_equal(str(c, "status"), status);
    assert_string_equal(str(c, "reason"), reason);
}

/* POST a spec expecting 400 with exactly `err`. */
static void refused(struct kt *t, const char *target, const char *body, const char *err)
{
    json_t *b = NULL;
    int st = kt_call(t, "POST", target, "root", ORG, body, &b);
    if (st != 400 || strcmp(kt_err(b), err) != 0) {
        fprintf(stderr, "%s %s -> %d %s\n", target, body, st, kt_err(b));
    }
    assert_int_equal(st, 400);
    assert_string_equal(kt_err(b), err);
    json_decref(b);
}

static void test_create_defaults(void **state)
{
    struct kt *t = *state;
    /* the organization has no transit/ mount yet: creating a KMSKey mounts it */
    json_t *m = kt_ok(t, 200, "GET", "/v1/sys/mounts", ORG, NULL);
    assert_null(json_object_get(m, "transit/"));
    json_decref(m);

    json_t *b = kt_ok(t, 200, "POST", "/v1/kms/keys/proj/app", ORG, "{}");
    json_t *d = json_object_get(b, "data");
    assert_string_equal(str(d, "apiVersion"), "security.kube-dc.com/v1alpha1");
    assert_string_equal(str(d, "kind"), "KMSKey");
    json_t *meta = meta_of(b);
    assert_string_equal(str(meta, "name"), "app");
    assert_string_equal(str(meta, "namespace"), "org1-proj");
    assert_string_equal(str(meta, "organization"), "org1");
    assert_string_equal(str(meta, "project"), "proj");
    assert_int_equal(strlen(str(meta, "uid")), 36);
    assert_int_equal(strlen(str(meta, "creationTimestamp")), 20);
    assert_int_equal(ival(meta, "generation"), 1);
    json_t *spec = spec_of(b);
    assert_string_equal(str(spec, "purpose"), "application");
    assert_string_equal(str(spec, "algorithm"), "aes256-gcm96");
    assert_string_equal(str(spec, "deletionPolicy"), "retain");
    assert_true(json_is_false(json_object_get(spec, "exportable")));
    assert_true(json_is_false(json_object_get(json_object_get(spec, "rotation"), "enabled")));
    json_t *st = status_of(b);
    assert_string_equal(str(st, "keyId"), "transit/keys/org1-proj-app");
    assert_int_equal(ival(st, "currentVersion"), 1);
    assert_int_equal(ival(st, "minDecryptionVersion"), 1);
    assert_int_equal(strlen(str(st, "lastRotatedTime")), 20);
    assert_true(json_is_null(json_object_get(st, "nextRotationTime")));
    assert_true(json_is_null(json_object_get(st, "scheduledDeletion")));
    expect_cond(b, "Ready", "True", "KeyReady");
    expect_cond(b, "OpenBaoMounted", "True", "Mounted");
    expect_cond(b, "RotationScheduled", "False", "Disabled");
    json_decref(b);

    m = kt_ok(t, 200, "GET", "/v1/sys/mounts/transit", ORG, NULL);
    assert_string_equal(json_string_value(kt_data(m, "description")),
                        "organization transit engine (created for KMSKeys)");
    json_decref(m);
    /* the Transit key: neither deletable nor exportable */
    b = kt_ok(t, 200, "GET", "/v1/transit/keys/org1-proj-app", ORG, NULL);
    assert_true(json_is_false(kt_data(b, "deletion_allowed")));
    assert_true(json_is_false(kt_data(b, "exportable")));
    json_decref(b);
    json_decref(kt_ok(t, 400, "DELETE", "/v1/transit/keys/org1-proj-app", ORG, NULL));

    /* read it back; the path-prefix form names the same organization */
    b = kt_ok(t, 200, "GET", "/v1/org1/kms/keys/proj/app", NULL, NULL);
    assert_string_equal(str(meta_of(b), "name"), "app");
    json_decref(b);
    b = kt_ok(t, 404, "GET", "/v1/kms/keys/proj/other", ORG, NULL);
    assert_int_equal(json_array_size(json_object_get(b, "errors")), 0);
    json_decref(b);

    /* a spec field nobody knows: kept out, with Kubernetes' warning */
    b = kt_ok(t, 200, "POST", "/v1/kms/keys/proj/extra", ORG,
              "{\"spec\":{\"bogus\":1,\"purpose\":\"application\"}}");
    assert_string_equal(json_string_value(json_array_get(json_object_get(b, "warnings"), 0)),
                        "unknown field \"spec.bogus\"");
    assert_null(json_object_get(spec_of(b), "bogus"));
    json_decref(b);
    /* ... and one of rotation's: a typo of "enabled" left rotation off without a word */
    b = kt_ok(t, 200, "POST", "/v1/kms/keys/proj/extra2", ORG,
              "{\"spec\":{\"rotation\":{\"enable\":true,\"interval\":\"90d\"}}}");
    assert_string_equal(json_string_value(json_array_get(json_object_get(b, "warnings"), 0)),
                        "unknown field \"spec.rotation.enable\"");
    assert_false(json_is_true(json_object_get(json_object_get(spec_of(b), "rotation"), "enabled")));
    assert_null(json_object_get(json_object_get(spec_of(b), "rotation"), "enable"));
    json_decref(b);
}

static void test_request_forms(void **state)
{
    struct kt *t = *state;
    /* the fields at the top level, rotation as a bare interval (which enables it) */
    json_t *b = kt_ok(t, 200, "POST", "/v1/kms/keys/proj/top", ORG,
                      "{\"purpose\":\"etcd\",\"algorithm\":\"chacha20-poly1305\","
                      "\"rotation\":\"12h\",\"exportable\":false,\"apiVersion\":\"x\","
                      "\"kind\":\"KMSKey\",\"metadata\":{},\"status\":{}}");
    json_t *spec = spec_of(b);
    assert_string_equal(str(spec, "purpose"), "etcd");
    assert_string_equal(str(spec, "algorithm"), "chacha20-poly1305");
    assert_true(json_is_true(json_object_get(json_object_get(spec, "rotation"), "enabled")));
    assert_string_equal(str(json_object_get(spec, "rotation"), "interval"), "12h");
    expect_cond(b, "RotationScheduled", "True", "Enabled");
    assert_int_equal(strlen(str(status_of(b), "nextRotationTime")), 20);
    assert_true(json_is_null(json_object_get(b, "warnings")));
    json_decref(b);
    b = kt_ok(t, 200, "GET", "/v1/transit/keys/org1-proj-top", ORG, NULL);
    assert_string_equal(json_string_value(kt_data(b, "type")), "chacha20-poly1305");
    json_decref(b);

    /* the kubectl form: {"spec": {...}}, rotation as an object; disabled with an interval */
    b = kt_ok(t, 200, "PUT", "/v1/kms/keys/proj/wrapped", ORG,
              "{\"spec\":{\"purpose\":\"backup\",\"rotation\":{\"enabled\":false,"
              "\"interval\":\"30d\"},\"deletionPolicy\":\"retain\"}}");
    assert_string_equal(str(spec_of(b), "purpose"), "backup");
    expect_cond(b, "RotationScheduled", "False", "Disabled");
    assert_true(json_is_null(json_object_get(status_of(b), "nextRotationTime")));
    json_decref(b);
    /* rotation null: no rotation */
    b = kt_ok(t, 200, "POST", "/v1/kms/keys/proj/nullrot", ORG, "{\"spec\":{\"rotation\":null}}");
    expect_cond(b, "RotationScheduled", "False", "Disabled");
    json_decref(b);
    /* rotation units of the CRD syntax */
    b = kt_ok(t, 200, "POST", "/v1/kms/keys/proj/units", ORG,
              "{\"spec\":{\"rotation\":{\"enabled\":true,\"interval\":\"1h30m\"}}}");
    json_decref(b);
    b = kt_ok(t, 200, "POST", "/v1/kms/keys/proj/units", ORG,
              "{\"spec\":{\"rotation\":{\"enabled\":true,\"interval\":\"2000ms\"}}}");
    json_decref(b);
}

static void test_validation(void **state)
{
    struct kt *t = *state;
    const char *k = "/v1/kms/keys/proj/v";
    refused(t, k, "{\"spec\":{\"purpose\":\"x\"}}",
            "spec.purpose: Unsupported value: \"x\": supported values: \"application\", \"etcd\", "
            "\"backup\"");
    refused(t, k, "{\"algorithm\":\"rsa-2048\"}",
            "spec.algorithm: Unsupported value: \"rsa-2048\": supported values: "
            "\"aes256-gcm96\", \"chacha20-poly1305\"");
    refused(t, k, "{\"spec\":{\"algorithm\":5}}",
            "spec.algorithm: Unsupported value: (not a string): supported values: "
            "\"aes256-gcm96\", \"chacha20-poly1305\"");
    refused(t, k, "{\"deletionPolicy\":\"keep\"}",
            "spec.deletionPolicy: Unsupported value: \"keep\": supported values: \"retain\", "
            "\"schedule\"");
    refused(t, k, "{\"exportable\":true}",
            "spec.exportable: Invalid value: KMSKey keys are never exportable (must be false)");
    refused(t, k, "{\"spec\":{\"exportable\":\"false\"}}",
            "spec.exportable: Invalid value: KMSKey keys are never exportable (must be false)");
    refused(t, k, "{\"spec\":{\"rotation\":{\"enabled\":\"yes\",\"interval\":\"1h\"}}}",
            "spec.rotation.enabled: Invalid value: must be a boolean");
    refused(t, k, "{\"rotation\":5}", "spec.rotation: Invalid value: must be an object");
    refused(t, k, "{\"spec\":{\"rotation\":{\"enabled\":true}}}",
            "spec.rotation.interval: Required value: an interval is required when rotation is "
            "enabled");
    static const char *const bad_intervals[] = {"0s", "1.5h", "90x", "h", "", "500ms", "-1h"};
    for (size_t i = 0; i < sizeof(bad_intervals) / sizeof(bad_intervals[0]); i++) {
        char body[128], err[256];
        snprintf(body, sizeof(body),
                 "{\"spec\":{\"rotation\":{\"enabled\":true,\"interval\":\"%s\"}}}",
                 bad_intervals[i]);
        snprintf(err, sizeof(err),
                 "spec.rotation.interval: Invalid value: \"%s\": must be a duration of at least 1s "
                 "such as 90d, 12h, 30m or 45s",
                 bad_intervals[i]);
        refused(t, k, body, err);
    }
    refused(t, k, "{\"spec\":{\"rotation\":{\"enabled\":true,\"interval\":60}}}",
            "spec.rotation.interval: Invalid value: \"(not a string)\": must be a duration of at "
            "least 1s such as 90d, 12h, 30m or 45s");
    /* spec must be an object: the field type refuses it first */
    json_t *b = kt_ok(t, 400, "POST", k, ORG, "{\"spec\":\"x\"}");
    assert_non_null(strstr(kt_err(b), "error converting input for field \"spec\""));
    json_decref(b);
    /* nothing was created by any of these */
    json_decref(kt_ok(t, 404, "GET", k, ORG, NULL));
    json_decref(kt_ok(t, 404, "GET", "/v1/transit/keys/org1-proj-v", ORG, NULL));

    /* names: DNS labels only */
    refused(t, "/v1/kms/keys/proj/App", "{}",
            "invalid KMSKey name \"App\": must be a DNS-1123 label: lower-case letters, digits "
            "and '-', starting and ending with a letter or digit, at most 63 characters");
    refused(t, "/v1/kms/keys/proj/a_b", "{}",
            "invalid KMSKey name \"a_b\": must be a DNS-1123 label: lower-case letters, digits "
            "and '-', starting and ending with a letter or digit, at most 63 characters");
    refused(t, "/v1/kms/keys/Proj/a", "{}",
            "invalid project name \"Proj\": must be a DNS-1123 label: lower-case letters, digits "
            "and '-', starting and ending with a letter or digit, at most 63 characters");
    refused(t, "/v1/kms/keys/proj/trail-", "{}",
            "invalid KMSKey name \"trail-\": must be a DNS-1123 label: lower-case letters, "
            "digits and '-', starting and ending with a letter or digit, at most 63 characters");
    refused(t, "/v1/kms/keys/-p/a", "{}",
            "invalid project name \"-p\": must be a DNS-1123 label: lower-case letters, digits "
            "and '-', starting and ending with a letter or digit, at most 63 characters");
    char target[256], name[80];
    memset(name, 'n', 64);
    name[64] = '\0';
    snprintf(target, sizeof(target), "/v1/kms/keys/proj/%s", name);
    b = kt_ok(t, 400, "POST", target, ORG, "{}");
    assert_non_null(strstr(kt_err(b), "invalid KMSKey name"));
    json_decref(b);
    name[63] = '\0';
    snprintf(target, sizeof(target), "/v1/kms/keys/proj/%s", name);
    json_decref(kt_ok(t, 200, "POST", target, ORG, "{}"));

    /* only in an organization namespace */
    b = kt_ok(t, 400, "POST", "/v1/kms/keys/proj/a", NULL, "{}");
    assert_string_equal(kt_err(b), "KMSKeys belong to an organization namespace: send "
                                   "X-Vault-Namespace: <org> or use /v1/<org>/kms/...");
    json_decref(b);
    json_decref(kt_ok(t, 400, "LIST", "/v1/kms/keys/proj", NULL, NULL));

    /* the Transit key name must fit Vault's 256 characters */
    char org[200];
    memset(org, 'o', 150);
    org[150] = '\0';
    make_org(t, org);
    char p63[64];
    memset(p63, 'p', 63);
    p63[63] = '\0';
    snprintf(target, sizeof(target), "/v1/kms/keys/%s/%s", p63, name);
    b = NULL;
    assert_int_equal(kt_call(t, "POST", target, "root", org, "{}", &b), 400);
    assert_non_null(strstr(kt_err(b), "is longer than 256 characters"));
    json_decref(b);
}

static void test_nested_org(void **state)
{
    struct kt *t = *state;
    json_decref(kt_ok(t, 200, "POST", "/v1/sys/namespaces/team", ORG, NULL));
    json_t *b = kt_ok(t, 200, "POST", "/v1/kms/keys/proj/k", "org1/team", "{}");
    assert_string_equal(str(meta_of(b), "organization"), "org1-team");
    assert_string_equal(str(status_of(b), "keyId"), "transit/keys/org1-team-proj-k");
    json_decref(b);
}

static void test_update_immutability_generation(void **state)
{
    struct kt *t = *state;
    const char *k = "/v1/kms/keys/proj/im";
    json_decref(kt_ok(t, 200, "POST", k, ORG, "{\"spec\":{\"purpose\":\"etcd\"}}"));
    refused(t, k, "{\"spec\":{\"algorithm\":\"chacha20-poly1305\"}}",
            "spec.algorithm: Invalid value: the field is immutable (it is \"aes256-gcm96\")");
    refused(t, k, "{\"purpose\":\"backup\"}",
            "spec.purpose: Invalid value: the field is immutable (it is \"etcd\")");
    /* a real change bumps the generation, the same spec again does not; uid stays */
    json_t *b = kt_ok(t, 200, "GET", k, ORG, NULL);
    char uid[64];
    snprintf(uid, sizeof(uid), "%s", str(meta_of(b), "uid"));
    json_decref(b);
    b = kt_ok(t, 200, "POST", k, ORG, "{\"spec\":{\"rotation\":\"24h\"}}");
    assert_int_equal(ival(meta_of(b), "generation"), 2);
    assert_string_equal(str(meta_of(b), "uid"), uid);
    assert_string_equal(str(spec_of(b), "purpose"), "etcd"); /* kept from before */
    json_decref(b);
    b = kt_ok(t, 200, "POST", k, ORG, "{\"spec\":{\"rotation\":\"24h\"}}");
    assert_int_equal(ival(meta_of(b), "generation"), 2);
    json_decref(b);
    b = kt_ok(t, 200, "POST", k, ORG, "{\"spec\":{\"algorithm\":\"aes256-gcm96\"}}");
    assert_int_equal(ival(meta_of(b), "generation"), 2);
    json_decref(b);
    /* an update does not rotate */
    assert_int_equal(ival(status_of(b = kt_ok(t, 200, "GET", k, ORG, NULL)), "currentVersion"), 1);
    json_decref(b);
}

static void test_list(void **state)
{
    struct kt *t = *state;
    json_decref(kt_ok(t, 404, "LIST", "/v1/kms/keys/proj", ORG, NULL));
    json_decref(kt_ok(t, 200, "POST", "/v1/kms/keys/proj/b", ORG, "{}"));
    json_decref(kt_ok(t, 200, "POST", "/v1/kms/keys/proj/a", ORG, "{}"));
    json_decref(kt_ok(t, 200, "POST", "/v1/kms/keys/other/c", ORG, "{}"));
    json_t *b = kt_ok(t, 200, "LIST", "/v1/kms/keys/proj", ORG, NULL);
    json_t *keys = kt_data(b, "keys");
    assert_int_equal(json_array_size(keys), 2);
    assert_string_equal(json_string_value(json_array_get(keys, 0)), "a");
    assert_string_equal(json_string_value(json_array_get(keys, 1)), "b");
    json_t *info = json_object_get(kt_data(b, "key_info"), "b");
    assert_string_equal(str(info, "kind"), "KMSKey");
    assert_string_equal(str(json_object_get(info, "status"), "keyId"), "transit/keys/org1-proj-b");
    json_decref(b);
    b = kt_ok(t, 200, "GET", "/v1/kms/keys/other/?list=true", ORG, NULL);
    assert_int_equal(json_array_size(kt_data(b, "keys")), 1);
    json_decref(b);
    json_decref(kt_ok(t, 400, "LIST", "/v1/kms/keys/Bad", ORG, NULL));
    json_decref(kt_ok(t, 404, "LIST", "/v1/kms/keys/proj", "org1/../x", NULL));
}

static void test_rotate_and_min_version(void **state)
{
    struct kt *t = *state;
    const char *k = "/v1/kms/keys/proj/rot";
    json_decref(kt_ok(t, 200, "POST", k, ORG, "{}"));
    json_t *b = kt_ok(t, 200, "POST", "/v1/kms/keys/proj/rot/rotate", ORG, NULL);
    assert_int_equal(ival(status_of(b), "currentVersion"), 2);
    json_decref(b);
    json_decref(kt_ok(t, 200, "POST", "/v1/kms/keys/proj/rot/rotate", ORG, "{}"));
    /* a raw Transit rotation shows up at once */
    json_decref(kt_ok(t, 200, "POST", "/v1/transit/keys/org1-proj-rot/rotate", ORG, NULL));
    b = kt_ok(t, 200, "GET", k, ORG, NULL);
    assert_int_equal(ival(status_of(b), "currentVersion"), 4);
    json_decref(b);
    b = kt_ok(t, 404, "POST", "/v1/kms/keys/proj/nope/rotate", ORG, NULL);
    assert_string_equal(kt_err(b), "KMSKey nope not found in project proj");
    json_decref(b);
    json_decref(kt_ok(t, 405, "GET", "/v1/kms/keys/proj/rot/rotate", ORG, NULL));

    const char *mv = "/v1/kms/keys/proj/rot/min-decryption-version";
    b = kt_ok(t, 400, "POST", mv, ORG, "{}");
    assert_string_equal(kt_err(b), "missing version");
    json_decref(b);
    b = kt_ok(t, 400, "POST", mv, ORG, "{\"version\":0}");
    assert_string_equal(kt_err(b), "version must be a positive key version");
    json_decref(b);
    b = kt_ok(t, 400, "POST", mv, ORG, "{\"version\":4294967296}");
    assert_string_equal(kt_err(b), "version must be a positive key version");
    json_decref(b);
    b = kt_ok(t, 400, "POST", mv, ORG, "{\"version\":\"two\"}");
    assert_non_null(strstr(kt_err(b), "field \"version\""));
    json_decref(b);
    b = kt_ok(t, 400, "POST", mv, ORG, "{\"version\":9}");
    assert_string_equal(kt_err(b),
                        "cannot set min decryption version of 9, latest key version is 4");
    json_decref(b);
    b = kt_ok(t, 200, "POST", mv, ORG, "{\"version\":\"3\"}");
    assert_int_equal(ival(status_of(b), "minDecryptionVersion"), 3);
    assert_int_equal(ival(status_of(b), "currentVersion"), 4);
    json_decref(b);
    b = kt_ok(t, 200, "GET", "/v1/transit/keys/org1-proj-rot", ORG, NULL);
    assert_int_equal(json_integer_value(kt_data(b, "min_decryption_version")), 3);
    json_decref(b);
    b = kt_ok(t, 404, "POST", "/v1/kms/keys/proj/nope/min-decryption-version", ORG,
              "{\"version\":1}");
    json_decref(b);
}

static void test_schedule_and_cancel(void **state)
{
    struct kt *t = *state;
    const char *k = "/v1/kms/keys/proj/del";
    int64_t now = (int64_t)time(NULL);
    json_decref(kt_ok(t, 200, "POST", k, ORG, "{}"));
    json_t *b = kt_ok(t, 200, "POST", "/v1/kms/keys/proj/del/schedule-delete", ORG, NULL);
    assert_string_equal(str(spec_of(b), "deletionPolicy"), "schedule");
    char when[40];
    snprintf(when, sizeof(when), "%s", str(status_of(b), "scheduledDeletion"));
    expect_cond(b, "Ready", "False", "DeletionScheduled");
    json_decref(b);
    /* the deadline is now + the configured delay (60 s here), to the second */
    char lo[40], hi[40];
    struct tm tm;
    time_t a = (time_t)(now + 60 - 2), z = (time_t)(now + 60 + 5);
    gmtime_r(&a, &tm);
    strftime(lo, sizeof(lo), "%Y-%m-%dT%H:%M:%SZ", &tm);
    gmtime_r(&z, &tm);
    strftime(hi, sizeof(hi), "%Y-%m-%dT%H:%M:%SZ", &tm);
    assert_true(strcmp(when, lo) >= 0 && strcmp(when, hi) <= 0);
    /* scheduling again keeps the first deadline */
    b = kt_ok(t, 200, "POST", "/v1/kms/keys/proj/del/schedule-delete", ORG, NULL);
    assert_string_equal(str(status_of(b), "scheduledDeletion"), when);
    json_decref(b);

    /* DELETE while counting down: the object stays, marked, with a warning */
    b = kt_ok(t, 200, "DELETE", k, ORG, NULL);
    assert_int_equal(strlen(str(meta_of(b), "deletionTimestamp")), 20);
    assert_non_null(strstr(json_string_value(json_array_get(json_object_get(b, "warnings"), 0)),
                           "deletionPolicy is schedule"));
    json_decref(b);
    b = kt_ok(t, 200, "GET", k, ORG, NULL);
    assert_int_equal(strlen(str(meta_of(b), "deletionTimestamp")), 20);
    json_decref(b);

    /* cancel: back to retain, no countdown, no deletion mark */
    b = kt_ok(t, 200, "POST", "/v1/kms/keys/proj/del/cancel-delete", ORG, "{}");
    assert_string_equal(str(spec_of(b), "deletionPolicy"), "retain");
    assert_true(json_is_null(json_object_get(status_of(b), "scheduledDeletion")));
    assert_null(json_object_get(meta_of(b), "deletionTimestamp"));
    expect_cond(b, "Ready", "True", "KeyReady");
    json_decref(b);

    /* the same through the spec: schedule starts it, retain ends it */
    b = kt_ok(t, 200, "POST", k, ORG, "{\"deletionPolicy\":\"schedule\"}");
    assert_false(json_is_null(json_object_get(status_of(b), "scheduledDeletion")));
    json_decref(b);
    json_decref(kt_ok(t, 200, "DELETE", k, ORG, NULL));
    b = kt_ok(t, 200, "POST", k, ORG, "{\"deletionPolicy\":\"retain\"}");
    assert_true(json_is_null(json_object_get(status_of(b), "scheduledDeletion")));
    assert_null(json_object_get(meta_of(b), "deletionTimestamp"));
    json_decref(b);
    json_decref(kt_ok(t, 404, "POST", "/v1/kms/keys/proj/nope/schedule-delete", ORG, NULL));
    json_decref(kt_ok(t, 404, "POST", "/v1/kms/keys/proj/nope/cancel-delete", ORG, NULL));
}

static void test_delete_retain_and_adopt(void **state)
{
    struct kt *t = *state;
    const char *k = "/v1/kms/keys/proj/keep";
    json_decref(kt_ok(t, 200, "POST", k, ORG, "{}"));
    json_decref(kt_ok(t, 200, "POST", "/v1/kms/keys/proj/keep/rotate", ORG, NULL));
    /* retain: 204, the KMSKey goes, the Transit key stays */
    json_t *b = kt_ok(t, 204, "DELETE", k, ORG, NULL);
    assert_null(b);
    json_decref(kt_ok(t, 404, "GET", k, ORG, NULL));
    json_decref(kt_ok(t, 404, "DELETE", k, ORG, NULL));
    json_decref(kt_ok(t, 200, "GET", "/v1/transit/keys/org1-proj-keep", ORG, NULL));
    /* a different algorithm cannot adopt it, and nothing is left behind */
    b = kt_ok(t, 400, "POST", k, ORG, "{\"algorithm\":\"chacha20-poly1305\"}");
    assert_string_equal(kt_err(b), "Transit key org1-proj-keep already exists with type "
                                   "aes256-gcm96; spec.algorithm must match to adopt it");
    json_decref(b);
    json_decref(kt_ok(t, 404, "GET", k, ORG, NULL));
    /* the same algorithm adopts it, versions and all */
    b = kt_ok(t, 200, "POST", k, ORG, "{}");
    assert_string_equal(json_string_value(json_array_get(json_object_get(b, "warnings"), 0)),
                        "adopted the existing Transit key org1-proj-keep");
    assert_int_equal(ival(status_of(b), "currentVersion"), 2);
    json_decref(b);

    /* a key made with raw Transit calls is adopted the same way */
    json_decref(kt_ok(t, 200, "POST", "/v1/transit/keys/org1-proj-pre", ORG,
                      "{\"type\":\"chacha20-poly1305\"}"));
    b = kt_ok(t, 200, "POST", "/v1/kms/keys/proj/pre", ORG,
              "{\"spec\":{\"algorithm\":\"chacha20-poly1305\"}}");
    assert_string_equal(json_string_value(json_array_get(json_object_get(b, "warnings"), 0)),
                        "adopted the existing Transit key org1-proj-pre");
    json_decref(b);

    /* but not a key with what a KMSKey's key never has: someone else's material or latches
     * (a token of another project could plant it before this project claims the name) */
    static const struct {
        const char *name, *create, *config, *why;
    } planted[] = {
        {"exp", "{\"exportable\":true}", NULL, "is exportable"},
        {"bak", "{\"exportable\":true,\"allow_plaintext_backup\":true}", NULL, "is exportable"},
        {"del", "{}", "{\"deletion_allowed\":true}", "has deletion_allowed set"},
        {"der", "{\"derived\":true}", NULL, "is a derived key"},
        {"cnv", "{\"derived\":true,\"convergent_encryption\":true}", NULL, "is a derived key"},
    };
    for (size_t i = 0; i < sizeof(planted) / sizeof(planted[0]); i++) {
        char tpath[128], kpath[128], cpath[160], want[400];
        snprintf(tpath, sizeof(tpath), "/v1/transit/keys/org1-proj-%s", planted[i].name);
        snprintf(cpath, sizeof(cpath), "%s/config", tpath);
        snprintf(kpath, sizeof(kpath), "/v1/kms/keys/proj/%s", planted[i].name);
        json_decref(kt_ok(t, 200, "POST", tpath, ORG, planted[i].create));
        if (planted[i].config != NULL) {
            json_decref(kt_ok(t, 200, "POST", cpath, ORG, planted[i].config));
        }
        b = kt_ok(t, 400, "POST", kpath, ORG, "{}");
        snprintf(want, sizeof(want),
                 "Transit key \"org1-proj-%s\" exists without a KMSKey and %s, which a KMSKey's "
                 "key never does, so it is not adopted; choose another name for this KMSKey",
                 planted[i].name, planted[i].why);
        assert_string_equal(kt_err(b), want);
        json_decref(b);
        json_decref(kt_ok(t, 404, "GET", kpath, ORG, NULL));
    }
}

static void test_missing_key_and_mount(void **state)
{
    struct kt *t = *state;
    const char *k = "/v1/kms/keys/proj/gone";
    json_decref(kt_ok(t, 200, "POST", k, ORG, "{}"));
    /* the Transit key removed by hand: the object says so */
    json_decref(kt_ok(t, 200, "POST", "/v1/transit/keys/org1-proj-gone/config", ORG,
                      "{\"deletion_allowed\":true}"));
    json_decref(kt_ok(t, 204, "DELETE", "/v1/transit/keys/org1-proj-gone", ORG, NULL));
    json_t *b = kt_ok(t, 200, "GET", k, ORG, NULL);
    expect_cond(b, "Ready", "False", "KeyMissing");
    assert_null(json_object_get(status_of(b), "currentVersion"));
    json_decref(b);
    b = kt_ok(t, 400, "POST", "/v1/kms/keys/proj/gone/rotate", ORG, NULL);
    assert_string_equal(kt_err(b), "key not found"); /* Transit's own answer */
    json_decref(b);

    /* the organization's transit/ mount removed: the object stays, Not mounted */
    json_decref(kt_ok(t, 204, "DELETE", "/v1/sys/mounts/transit", ORG, NULL));
    b = kt_ok(t, 200, "GET", k, ORG, NULL);
    expect_cond(b, "OpenBaoMounted", "False", "NotMounted");
    expect_cond(b, "Ready", "False", "KeyMissing");
    json_decref(b);
    b = kt_ok(t, 404, "POST", "/v1/kms/keys/proj/gone/rotate", ORG, NULL);
    assert_string_equal(kt_err(b), "the organization has no transit/ mount");
    json_decref(b);
    b = kt_ok(t, 404, "POST", "/v1/kms/keys/proj/gone/min-decryption-version", ORG,
              "{\"version\":1}");
    assert_string_equal(kt_err(b), "the organization has no transit/ mount");
    json_decref(b);
    /* a new KMSKey mounts transit/ again */
    json_decref(kt_ok(t, 200, "POST", "/v1/kms/keys/proj/again", ORG, "{}"));
    b = kt_ok(t, 200, "GET", "/v1/kms/keys/proj/again", ORG, NULL);
    expect_cond(b, "OpenBaoMounted", "True", "Mounted");
    json_decref(b);
}

/* ---- the controller on its edge cases ---------------------------------------------------- */

static size_t nevents;
static char last_event[32], last_detail[128];

static void report(const char *event, const char *ns_id, const char *project, const char *name,
                   const char *detail)
{
    (void)ns_id;
    (void)project;
    (void)name;
    nevents++;
    snprintf(last_event, sizeof(last_event), "%s", event);
    snprintf(last_detail, sizeof(last_detail), "%s", detail ? detail : "");
}

static int64_t tick(struct kt *t, int64_t now)
{
    int64_t next = -1;
    nevents = 0;
    last_event[0] = '\0';
    assert_int_equal(kms_api_tick(t->api, now, &next, report), 0);
    return next;
}

static void test_controller_earliest_due(void **state)
{
    struct kt *t = *state;
    int64_t now = (int64_t)time(NULL);
    json_decref(kt_ok(t, 200, "POST", "/v1/kms/keys/proj/r", ORG, "{\"rotation\":\"2h\"}"));
    json_decref(
        kt_ok(t, 200, "POST", "/v1/kms/keys/proj/d", ORG, "{\"deletionPolicy\":\"schedule\"}"));
    json_decref(kt_ok(t, 200, "POST", "/v1/kms/keys/proj/both", ORG,
                      "{\"rotation\":\"1h\",\"deletionPolicy\":\"schedule\"}"));
    /* the earliest of all: the 60 s countdowns */
    int64_t next = tick(t, now);
    assert_int_equal(nevents, 0);
    assert_true(next >= now + 60 - 2 && next <= now + 60 + 5);
    /* both countdowns end; the rotation of the 2h key is the next thing due */
    next = tick(t, now + 120);
    assert_int_equal(nevents, 2);
    assert_string_equal(last_event, "deleted");
    assert_true(next >= now + 7200 - 5 && next <= now + 7200 + 5);
    json_decref(kt_ok(t, 404, "GET", "/v1/kms/keys/proj/both", ORG, NULL));
    json_decref(kt_ok(t, 404, "GET", "/v1/transit/keys/org1-proj-d", ORG, NULL));
    json_decref(kt_ok(t, 200, "GET", "/v1/kms/keys/proj/r", ORG, NULL));
}

static void test_controller_missing_transit_key(void **state)
{
    struct kt *t = *state;
    int64_t now = (int64_t)time(NULL);
    json_decref(kt_ok(t, 200, "POST", "/v1/kms/keys/proj/x", ORG,
                      "{\"rotation\":\"1h\",\"deletionPolicy\":\"schedule\"}"));
    json_decref(kt_ok(t, 200, "POST", "/v1/transit/keys/org1-proj-x/config", ORG,
                      "{\"deletion_allowed\":true}"));
    json_decref(kt_ok(t, 204, "DELETE", "/v1/transit/keys/org1-proj-x", ORG, NULL));
    /* a rotation due on a vanished key waits and retries */
    int64_t next = tick(t, now + 30);
    assert_int_equal(nevents, 0);
    assert_int_equal(next, now + 30 + 10);
    /* the countdown still ends: the KMSKey goes although its key is already gone */
    (void)tick(t, now + 3600);
    assert_int_equal(nevents, 1);
    assert_string_equal(last_event, "deleted");
    assert_string_equal(last_detail, "org1-proj-x");
    json_decref(kt_ok(t, 404, "GET", "/v1/kms/keys/proj/x", ORG, NULL));
    assert_int_equal(tick(t, now + 7200), 0);
}

static void test_controller_without_mount(void **state)
{
    struct kt *t = *state;
    int64_t now = (int64_t)time(NULL);
    json_decref(kt_ok(t, 200, "POST", "/v1/kms/keys/proj/m", ORG, "{\"rotation\":\"1h\"}"));
    json_decref(kt_ok(t, 204, "DELETE", "/v1/sys/mounts/transit", ORG, NULL));
    /* no transit/ mount: nothing happens, and the entry is kept to retry */
    (void)tick(t, now + 2 * 3600);
    assert_int_equal(nevents, 0);
    /* mounted again (with a fresh key made an hour before the injected time): the retry
     * finds the key overdue and rotates it once */
    json_decref(kt_ok(t, 200, "POST", "/v1/kms/keys/proj/m2", ORG, "{}"));
    json_decref(kt_ok(t, 200, "POST", "/v1/transit/keys/org1-proj-m", ORG, NULL));
    (void)tick(t, now + 2 * 3600 + 9); /* still within the retry delay */
    assert_int_equal(nevents, 0);
    int64_t next = tick(t, now + 2 * 3600 + 10);
    assert_int_equal(nevents, 1);
    assert_string_equal(last_event, "rotated");
    assert_string_equal(last_detail, "2");
    assert_int_equal(next, now + 3 * 3600 + 10);
}

/*
 * kms_api_tick's contract (api/api.h): *next_due is the earliest future due time, 0 meaning
 * nothing is scheduled. An entry whose organization lost its transit/ mount is retried in
 * RETRY_SECONDS, like one whose Transit key is missing (test_controller_missing_transit_key),
 * so next_due must say so rather than 0.
 */
static void test_controller_mountless_retry_in_next_due(void **state)
{
    struct kt *t = *state;
    int64_t now = (int64_t)time(NULL);
    json_decref(kt_ok(t, 200, "POST", "/v1/kms/keys/proj/m", ORG, "{\"rotation\":\"1h\"}"));
    json_decref(kt_ok(t, 204, "DELETE", "/v1/sys/mounts/transit", ORG, NULL));
    int64_t next = tick(t, now + 2 * 3600);
    assert_int_equal(nevents, 0);
    assert_int_equal(next, now + 2 * 3600 + 10);
}

static void test_controller_audited(void **state)
{
    struct kt *t = *state;
    int64_t now = (int64_t)time(NULL);
    json_decref(kt_ok(t, 200, "POST", "/v1/kms/keys/proj/a", ORG,
                      "{\"rotation\":\"1h\",\"deletionPolicy\":\"schedule\"}"));
    (void)tick(t, now + 3600 + 5);
    assert_int_equal(nevents, 1);
    assert_string_equal(last_event, "rotated");
    (void)tick(t, now + 31 * 86400);
    assert_string_equal(last_event, "deleted");
    /* four internal lines: rotate request/response, delete request/response */
    FILE *fp = fopen(t->audit_path, "r");
    assert_non_null(fp);
    char *line = NULL;
    size_t cap = 0;
    json_t *rows = json_array();
    while (getline(&line, &cap, fp) > 0) {
        json_t *l = json_loads(line, 0, NULL);
        if (strcmp(str(l, "subject"), "system:kmsd-controller") == 0) {
            json_array_append(rows, l);
        }
        json_decref(l);
    }
    free(line);
    fclose(fp);
    assert_int_equal(json_array_size(rows), 4);
    json_t *rot = json_array_get(rows, 1);
    assert_string_equal(str(rot, "op"), "rotate");
    assert_string_equal(str(rot, "key"), "org1-proj-a");
    assert_string_equal(str(rot, "project"), "proj");
    assert_int_equal(ival(rot, "key_version"), 2);
    assert_int_equal(ival(rot, "status"), 200);
    assert_string_equal(str(json_object_get(json_object_get(rot, "request"), "namespace"), "path"),
                        "org1/");
    json_t *del = json_array_get(rows, 3);
    assert_string_equal(str(del, "op"), "delete");
    assert_string_equal(str(json_object_get(del, "request"), "operation"), "delete");
    assert_string_equal(str(json_object_get(del, "request"), "path"), "transit/keys/org1-proj-a");
    /* the versions destroyed: 1 and the rotation's 2 */
    json_t *kv = json_object_get(del, "key_version");
    assert_true(json_is_array(kv));
    assert_int_equal(json_array_size(kv), 2);
    assert_int_equal(json_integer_value(json_array_get(kv, 0)), 1);
    assert_int_equal(json_integer_value(json_array_get(kv, 1)), 2);
    json_decref(rows);
}

static void test_controller_other_org_kept(void **state)
{
    struct kt *t = *state;
    int64_t now = (int64_t)time(NULL);
    make_org(t, "org2");
    json_decref(kt_ok(t, 200, "POST", "/v1/kms/keys/proj/a", ORG, "{\"rotation\":\"1h\"}"));
    json_decref(kt_ok(t, 200, "POST", "/v1/kms/keys/proj/b", "org2", "{\"rotation\":\"1h\"}"));
    /* deleting one organization leaves the other's schedule alone */
    json_decref(kt_ok(t, 204, "DELETE", "/v1/sys/namespaces/" ORG, NULL, NULL));
    (void)tick(t, now + 3600 + 5);
    assert_int_equal(nevents, 1);
    assert_string_equal(last_event, "rotated");
    json_t *b = kt_ok(t, 200, "GET", "/v1/kms/keys/proj/b", "org2", NULL);
    assert_int_equal(ival(status_of(b), "currentVersion"), 2);
    json_decref(b);
}

/* Without a durable audit record the controller neither rotates nor destroys, and retries. */
static void test_controller_fail_closed(void **state)
{
    struct kt *t = *state;
    int64_t now = (int64_t)time(NULL);
    json_decref(kt_ok(t, 200, "POST", "/v1/kms/keys/proj/r", ORG, "{\"rotation\":\"1h\"}"));
    json_decref(
        kt_ok(t, 200, "POST", "/v1/kms/keys/proj/d", ORG, "{\"deletionPolicy\":\"schedule\"}"));
    assert_int_equal(unlink(t->audit_path), 0);
    assert_int_equal(mkdir(t->audit_path, 0700), 0);
    int64_t next = tick(t, now + 40 * 86400);
    assert_int_equal(nevents, 2);
    assert_int_equal(next, now + 40 * 86400 + 10);
    assert_int_equal(rmdir(t->audit_path), 0);
    /* nothing happened to either key */
    json_t *b = kt_ok(t, 200, "GET", "/v1/kms/keys/proj/r", ORG, NULL);
    assert_int_equal(ival(status_of(b), "currentVersion"), 1);
    json_decref(b);
    json_decref(kt_ok(t, 200, "GET", "/v1/kms/keys/proj/d", ORG, NULL));
    /* the log is back: both happen on the retry */
    (void)tick(t, now + 40 * 86400 + 10);
    assert_int_equal(nevents, 2);
    b = kt_ok(t, 200, "GET", "/v1/kms/keys/proj/r", ORG, NULL);
    assert_int_equal(ival(status_of(b), "currentVersion"), 2);
    json_decref(b);
    json_decref(kt_ok(t, 404, "GET", "/v1/kms/keys/proj/d", ORG, NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_defaults, setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_request_forms, setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_validation, setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_nested_org, setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_update_immutability_generation, setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_list, setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_rotate_and_min_version, setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_schedule_and_cancel, setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_delete_retain_and_adopt, setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_missing_key_and_mount, setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_controller_earliest_due, setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_controller_missing_transit_key, setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_controller_without_mount, setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_controller_mountless_retry_in_next_due, setup,
                                        kt_teardown),
        cmocka_unit_test_setup_teardown(test_controller_audited, setup_audited, kt_teardown),
        cmocka_unit_test_setup_teardown(test_controller_other_org_kept, setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_controller_fail_closed, setup_audited, kt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
