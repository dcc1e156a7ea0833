/*
 * test_ownership.c - which KMSKey owns which Transit key. Transit names are
 * `<org>-<project>-<name>` and '-' is legal in both, so project b's KMSKey c-d and project
 * b-c's KMSKey d name the same Transit key org1-b-c-d. These tests drive the real engines
 * through kms_api_handle: whichever is created first owns the key and the other is refused
 * (both orders); an unowned key whose name reads as another project's is not adopted; a
 * retained key stays its project's; actions of a record that does not own its key (a store
 * written before the check) never touch the key; the index comes back after a restart and
 * goes with its namespace; and project-bound tokens reach only their project's keys, through
 * kms/ and transit/, whatever their policies.
 */
#include "tests/engine/engine_fixture.h"
#include "crypto/keyring.h"
#include "storage/storage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ORG "org1"

static int setup(void **state)
{
    assert_int_equal(kt_setup(state), 0);
    struct kt *t = *state;
    t->eopts.kms_deletion_delay = 60;
    kt_reopen(t);
    json_decref(kt_ok(t, 200, "POST", "/v1/sys/namespaces/" ORG, NULL, NULL));
    return 0;
}

static void key_path(char *out, size_t n, const char *project, const char *name, const char *tail)
{
    snprintf(out, n, "/v1/kms/keys/%s/%s%s", project, name, tail ? tail : "");
}

static json_t *kms(struct kt *t, int want, const char *method, const char *project,
                   const char *name, const char *tail, const char *body)
{
    char p[256];
    key_path(p, sizeof(p), project, name, tail);
    return kt_ok(t, want, method, p, ORG, body);
}

/* A field of condition `type` of KMSKey b/<name> (a static copy: the body is freed). */
static const char *condition_of(struct kt *t, const char *name, const char *type, const char *field)
{
    static char out[512];
    json_t *b = kms(t, 200, "GET", "b", name, NULL, NULL);
    json_t *c;
    size_t i;
    out[0] = '\0';
    json_array_foreach(
        json_object_get(json_object_get(json_object_get(b, "data"), "status"), "conditions"), i, c)
    {
        if (strcmp(json_string_value(json_object_get(c, "type")), type) == 0) {
            snprintf(out, sizeof(out), "%s", json_string_value(json_object_get(c, field)));
        }
    }
    json_decref(b);
    return out;
}

static void expect_err(struct kt *t, int want, const char *method, const char *project,
                       const char *name, const char *tail, const char *body, const char *msg)
{
    json_t *b = kms(t, want, method, project, name, tail, body);
    assert_string_equal(kt_err(b), msg);
    json_decref(b);
}

static int64_t transit_version(struct kt *t, const char *key, const char *field)
{
    char p[256];
    snprintf(p, sizeof(p), "/v1/transit/keys/%s", key);
    json_t *b = kt_ok(t, 200, "GET", p, ORG, NULL);
    int64_t v = json_integer_value(kt_data(b, field));
    json_decref(b);
    return v;
}

static const char *cond_reason(const json_t *b, const char *type)
{
    json_t *conds =
        json_object_get(json_object_get(json_object_get(b, "data"), "status"), "conditions");
    size_t i;
    json_t *c;
    json_array_foreach(conds, i, c)
    {
        if (strcmp(json_string_value(json_object_get(c, "type")), type) == 0) {
            return json_string_value(json_object_get(c, "reason"));
        }
    }
    return "";
}

static const char owned_by_b[] = "Transit key \"org1-b-c-d\" belongs to KMSKey \"c-d\" of project "
                                 "\"b\"; choose another name for this KMSKey";
static const char owned_by_bc[] = "Transit key \"org1-b-c-d\" belongs to KMSKey \"d\" of project "
                                  "\"b-c\"; choose another name for this KMSKey";

static void test_first_owner_wins_b_then_bc(void **state)
{
    struct kt *t = *state;
    json_decref(kms(t, 200, "POST", "b", "c-d", NULL, "{}"));
    expect_err(t, 400, "POST", "b-c", "d", NULL, "{}", owned_by_b);
    /* nothing was created for b-c, and b's key was not touched */
    json_decref(kms(t, 404, "GET", "b-c", "d", NULL, NULL));
    assert_int_equal(transit_version(t, "org1-b-c-d", "latest_version"), 1);
    /* after a restart the index is rebuilt from the records */
    kt_reopen(t);
    expect_err(t, 400, "POST", "b-c", "d", NULL, "{}", owned_by_b);
    json_decref(kms(t, 200, "POST", "b", "c-d/rotate", NULL, NULL));
}

static void test_first_owner_wins_bc_then_b(void **state)
{
    struct kt *t = *state;
    json_decref(kms(t, 200, "POST", "b-c", "d", NULL, "{}"));
    expect_err(t, 400, "POST", "b", "c-d", NULL, "{}", owned_by_bc);
    json_decref(kms(t, 404, "GET", "b", "c-d", NULL, NULL));
    kt_reopen(t);
    expect_err(t, 400, "POST", "b", "c-d", NULL, "{\"deletionPolicy\":\"schedule\"}", owned_by_bc);
    /* the owner keeps working; unrelated names in b are fine */
    json_decref(kms(t, 200, "POST", "b-c", "d", "/rotate", NULL));
    json_decref(kms(t, 200, "POST", "b", "e", NULL, "{}"));
    assert_int_equal(transit_version(t, "org1-b-c-d", "latest_version"), 2);
}

static void test_ambiguous_adoption_refused(void **state)
{
    struct kt *t = *state;
    /* project b-c exists (has a KMSKey); a raw Transit key org1-b-c-y has no KMSKey */
    json_decref(kms(t, 200, "POST", "b-c", "x", NULL, "{}"));
    json_decref(kt_ok(t, 200, "POST", "/v1/transit/keys/org1-b-c-y", ORG, "{}"));
    expect_err(t, 400, "POST", "b", "c-y", NULL, "{}",
               "Transit key \"org1-b-c-y\" exists without a KMSKey and its name also reads as a "
               "key of project \"b-c\", so it is not adopted (kmsd cannot tell which project it "
               "belongs to); choose another name for this KMSKey");
    json_decref(kms(t, 404, "GET", "b", "c-y", NULL, NULL));
    /* a new key (no Transit key yet) is simply created and owned */
    json_decref(kms(t, 200, "POST", "b", "c-z", NULL, "{}"));
    expect_err(t, 400, "POST", "b-c", "z", NULL, "{}",
               "Transit key \"org1-b-c-z\" belongs to KMSKey \"c-z\" of project \"b\"; choose "
               "another name for this KMSKey");
    /* b-c's own reading is ambiguous too now that b has KMSKeys */
    expect_err(t, 400, "POST", "b-c", "y", NULL, "{}",
               "Transit key \"org1-b-c-y\" exists without a KMSKey and its name also reads as a "
               "key of project \"b\", so it is not adopted (kmsd cannot tell which project it "
               "belongs to); choose another name for this KMSKey");
    /* a project with no KMSKey is a reading too: a token of project m (none yet) may have made
     * org1-m-x-db, encrypted under it and raised its floor before project m-x claims "db" */
    json_decref(kt_ok(t, 200, "POST", "/v1/transit/keys/org1-m-x-db", ORG, "{}"));
    expect_err(t, 400, "POST", "m-x", "db", NULL, "{}",
               "Transit key \"org1-m-x-db\" exists without a KMSKey and its name also reads as a "
               "key of project \"m\", so it is not adopted (kmsd cannot tell which project it "
               "belongs to); choose another name for this KMSKey");
    /* ... and the other way round: a token of project m-x may have made it before m's "x-db" */
    expect_err(t, 400, "POST", "m", "x-db", NULL, "{}",
               "Transit key \"org1-m-x-db\" exists without a KMSKey and its name also reads as a "
               "key of project \"m-x\", so it is not adopted (kmsd cannot tell which project it "
               "belongs to); choose another name for this KMSKey");
    json_decref(kms(t, 404, "GET", "m-x", "db", NULL, NULL));
    /* an unambiguous name is adopted as before */
    json_decref(kt_ok(t, 200, "POST", "/v1/transit/keys/org1-q-k", ORG, "{}"));
    json_t *b = kms(t, 200, "POST", "q", "k", NULL, "{}");
    assert_string_equal(json_string_value(json_array_get(json_object_get(b, "warnings"), 0)),
                        "adopted the existing Transit key org1-q-k");
    json_decref(b);
}

static void test_retained_key_stays_with_its_project(void **state)
{
    struct kt *t = *state;
    json_decref(kms(t, 200, "POST", "b-c", "d", NULL, "{}"));
    json_decref(kms(t, 200, "POST", "b-c", "d", "/rotate", NULL));
    assert_null(kms(t, 204, "DELETE", "b-c", "d", NULL, NULL));
    /* b-c has no KMSKey any more, yet b cannot adopt the key b-c retained */
    static const char retained[] =
        "Transit key \"org1-b-c-d\" belongs to project \"b-c\" (kept when its KMSKey \"d\" was "
        "deleted with deletionPolicy retain); choose another name for this KMSKey";
    expect_err(t, 400, "POST", "b", "c-d", NULL, "{}", retained);
    kt_reopen(t);
    expect_err(t, 400, "POST", "b", "c-d", NULL, "{}", retained);
    /* b-c takes it back, versions and all */
    json_t *b = kms(t, 200, "POST", "b-c", "d", NULL, "{}");
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(json_object_get(b, "data"), "status"), "currentVersion")),
                     2);
    json_decref(b);
    expect_err(t, 400, "POST", "b", "c-d", NULL, "{}", owned_by_bc);
    /* a tombstone whose Transit key is gone protects nothing */
    assert_null(kms(t, 204, "DELETE", "b-c", "d", NULL, NULL));
    json_decref(kt_ok(t, 200, "POST", "/v1/transit/keys/org1-b-c-d/config", ORG,
                      "{\"deletion_allowed\":true}"));
    json_decref(kt_ok(t, 204, "DELETE", "/v1/transit/keys/org1-b-c-d", ORG, NULL));
    json_decref(kms(t, 200, "POST", "b", "c-d", NULL, "{}"));
}

/* The namespace id of ORG. */
static void org_id(struct kt *t, char *out, size_t n)
{
    json_t *b = kt_ok(t, 200, "GET", "/v1/sys/namespaces/" ORG, NULL, NULL);
    snprintf(out, n, "%s", json_string_value(kt_data(b, "id")));
    json_decref(b);
}

/*
 * A store written before ownership was checked: b-c's KMSKey d and, adopted later, b's
 * KMSKey c-d with a countdown running. The first-created owns the key.
 */
static void legacy_store(struct kt *t)
{
    char id[32], key[128];
    json_decref(kms(t, 200, "POST", "b-c", "d", NULL, "{}"));
    org_id(t, id, sizeof(id));
    const char *rec = "{\"metadata\":{\"name\":\"c-d\",\"namespace\":\"org1-b\","
                      "\"organization\":\"org1\",\"project\":\"b\",\"uid\":\"u\","
                      "\"creationTimestamp\":\"2999-01-01T00:00:00Z\",\"generation\":1},"
                      "\"spec\":{\"purpose\":\"application\",\"algorithm\":\"aes256-gcm96\","
                      "\"rotation\":{\"enabled\":true,\"interval\":\"1s\"},"
                      "\"deletionPolicy\":\"schedule\",\"exportable\":false},"
                      "\"scheduled_deletion\":1}";
    int kn = snprintf(key, sizeof(key), "%s/b/c-d", id);
    struct kms_txn *txn = NULL;
    assert_int_equal(kms_storage_txn_begin(t->st, true, &txn), 0);
    assert_int_equal(kms_storage_put(txn, KMS_DB_KMSKEYS, key, (size_t)kn, rec, strlen(rec)), 0);
    assert_int_equal(kms_storage_txn_commit(&txn), 0);
    kt_reopen(t);
}

static void quiet(const char *event, const char *ns_id, const char *project, const char *name,
                  const char *detail)
{
    (void)event;
    (void)ns_id;
    (void)project;
    (void)name;
    (void)detail;
}

static void test_actions_only_on_owned_key(void **state)
{
    struct kt *t = *state;
    legacy_store(t);
    static const char not_owner[] =
        "KMSKey \"c-d\" of project \"b\" does not own Transit key \"org1-b-c-d\": it belongs to "
        "KMSKey \"d\" of project \"b-c\"; delete this KMSKey (its deletion never touches that "
        "key)";
    expect_err(t, 409, "POST", "b", "c-d", "/rotate", NULL, not_owner);
    expect_err(t, 409, "POST", "b", "c-d", "/min-decryption-version", "{\"version\":1}", not_owner);
    json_t *b = kms(t, 200, "GET", "b", "c-d", NULL, NULL);
    assert_string_equal(cond_reason(b, "Ready"), "KeyOwnedElsewhere");
    assert_null(
        json_object_get(json_object_get(json_object_get(b, "data"), "status"), "currentVersion"));
    json_decref(b);
    b = kms(t, 200, "GET", "b-c", "d", NULL, NULL);
    assert_string_equal(cond_reason(b, "Ready"), "KeyReady");
    json_decref(b);
    /* the controller: no rotation through c-d, and its overdue countdown removes c-d only */
    int64_t next = -1;
    assert_int_equal(kms_api_tick(t->api, (int64_t)time(NULL) + 5, &next, quiet), 0);
    json_decref(kms(t, 404, "GET", "b", "c-d", NULL, NULL));
    assert_int_equal(transit_version(t, "org1-b-c-d", "latest_version"), 1);
    json_decref(kms(t, 200, "POST", "b-c", "d", "/rotate", NULL));
    json_decref(kms(t, 200, "POST", "b-c", "d", "/min-decryption-version", "{\"version\":2}"));
    assert_int_equal(transit_version(t, "org1-b-c-d", "min_decryption_version"), 2);
}

static void test_legacy_delete_keeps_owner_key(void **state)
{
    struct kt *t = *state;
    legacy_store(t);
    /* cancel the countdown, then DELETE (retain): c-d goes, leaves no tombstone for b */
    json_decref(kms(t, 200, "POST", "b", "c-d", "/cancel-delete", NULL));
    assert_null(kms(t, 204, "DELETE", "b", "c-d", NULL, NULL));
    json_decref(kms(t, 200, "POST", "b-c", "d", "/rotate", NULL));
    assert_null(kms(t, 204, "DELETE", "b-c", "d", NULL, NULL));
    expect_err(t, 400, "POST", "b", "c-d", NULL, "{}",
               "Transit key \"org1-b-c-d\" belongs to project \"b-c\" (kept when its KMSKey \"d\" "
               "was deleted with deletionPolicy retain); choose another name for this KMSKey");
}

static void test_index_goes_with_namespace(void **state)
{
    struct kt *t = *state;
    json_decref(kms(t, 200, "POST", "b", "c-d", NULL, "{}"));
    json_decref(kms(t, 200, "POST", "b", "kept", NULL, "{}"));
    assert_null(kms(t, 204, "DELETE", "b", "kept", NULL, NULL));
    json_decref(kt_ok(t, 204, "DELETE", "/v1/sys/namespaces/" ORG, NULL, NULL));
    json_decref(kt_ok(t, 200, "POST", "/v1/sys/namespaces/" ORG, NULL, NULL));
    json_decref(kms(t, 200, "POST", "b-c", "d", NULL, "{}"));
    kt_reopen(t);
    expect_err(t, 400, "POST", "b", "c-d", NULL, "{}", owned_by_bc);
    json_decref(kms(t, 200, "POST", "b-c", "kept", NULL, "{}"));
}

/* A token of ORG with kms-manager bound to `project` like a Kubernetes login's. */
static void bound_token(struct kt *t, const char *project, char *out, size_t n)
{
    char body[256];
    snprintf(body, sizeof(body),
             "{\"policies\":[\"kms-manager\"],\"meta\":{\"service_account_namespace\":\"%s\"}}",
             project);
    json_t *b = kt_ok(t, 200, "POST", "/v1/auth/token/create", ORG, body);
    snprintf(out, n, "%s",
             json_string_value(json_object_get(json_object_get(b, "auth"), "client_token")));
    json_decref(b);
}

static int call(struct kt *t, const char *tok, const char *method, const char *path,
                const char *body)
{
    json_t *b = NULL;
    int st = kt_call(t, method, path, tok, ORG, body, &b);
    if (st == 403) {
        assert_string_equal(kt_err(b), "1 error occurred:\n\t* permission denied\n\n");
    }
    json_decref(b);
    return st;
}

static void test_project_bound_tokens(void **state)
{
    struct kt *t = *state;
    char tb[128], tbc[128], unbound[128];
    json_decref(kms(t, 200, "POST", "b", "e", NULL, "{}"));
    json_decref(kms(t, 200, "POST", "b-c", "d", NULL, "{}"));
    bound_token(t, "b", tb, sizeof(tb));
    bound_token(t, "b-c", tbc, sizeof(tbc));
    json_t *b =
        kt_ok(t, 200, "POST", "/v1/auth/token/create", ORG, "{\"policies\":[\"kms-manager\"]}");
    snprintf(unbound, sizeof(unbound), "%s",
             json_string_value(json_object_get(json_object_get(b, "auth"), "client_token")));
    json_decref(b);

    /* b cannot reach b-c's key d (Transit org1-b-c-d), by either road */
    assert_int_equal(call(t, tb, "GET", "/v1/kms/keys/b-c/d", NULL), 403);
    assert_int_equal(call(t, tb, "LIST", "/v1/kms/keys/b-c", NULL), 403);
    assert_int_equal(call(t, tb, "POST", "/v1/kms/keys/b-c/d/rotate", NULL), 403);
    assert_int_equal(call(t, tb, "DELETE", "/v1/kms/keys/b-c/d", NULL), 403);
    assert_int_equal(call(t, tb, "POST", "/v1/kms/keys/b/c-d", "{}"), 400);
    assert_int_equal(call(t, tb, "GET", "/v1/transit/keys/org1-b-c-d", NULL), 403);
    assert_int_equal(call(t, tb, "POST", "/v1/transit/encrypt/org1-b-c-d", "{\"plaintext\":\"\"}"),
                     403);
    assert_int_equal(call(t, tb, "POST", "/v1/transit/keys/org1-b-c-d/rotate", NULL), 403);
    assert_int_equal(
        call(t, tb, "POST", "/v1/transit/keys/org1-b-c-d/config", "{\"min_decryption_version\":1}"),
        403);
    assert_int_equal(call(t, tb, "DELETE", "/v1/transit/keys/org1-b-c-d", NULL), 403);
    /* nor any key outside org1-b-*, existing or not */
    assert_int_equal(call(t, tb, "POST", "/v1/transit/keys/other-b-x", NULL), 403);
    assert_int_equal(call(t, tb, "POST", "/v1/transit/keys/org1-q-x", NULL), 403);
    /* b-c cannot reach b's key e */
    assert_int_equal(call(t, tbc, "GET", "/v1/kms/keys/b/e", NULL), 403);
    assert_int_equal(call(t, tbc, "POST", "/v1/transit/encrypt/org1-b-e", "{\"plaintext\":\"\"}"),
                     403);
    assert_int_equal(call(t, tbc, "POST", "/v1/transit/keys/org1-b-e/rotate", NULL), 403);
    assert_int_equal(transit_version(t, "org1-b-c-d", "latest_version"), 1);
    assert_int_equal(transit_version(t, "org1-b-e", "latest_version"), 1);

    /* each uses its own */
    assert_int_equal(call(t, tb, "GET", "/v1/kms/keys/b/e", NULL), 200);
    assert_int_equal(call(t, tb, "POST", "/v1/transit/encrypt/org1-b-e", "{\"plaintext\":\"\"}"),
                     200);
    assert_int_equal(call(t, tb, "POST", "/v1/kms/keys/b/e/rotate", NULL), 200);
    assert_int_equal(call(t, tbc, "POST", "/v1/transit/keys/org1-b-c-d/rotate", NULL), 200);
    assert_int_equal(call(t, tbc, "POST", "/v1/transit/encrypt/org1-b-c-d", "{\"plaintext\":\"\"}"),
                     200);
    /* b's raw key org1-b-c-q would read as b-c's: refused; org1-b-raw is b's */
    assert_int_equal(call(t, tb, "POST", "/v1/transit/keys/org1-b-c-q", NULL), 403);
    assert_int_equal(call(t, tb, "POST", "/v1/transit/keys/org1-b-raw", NULL), 200);

    /* LIST transit/keys shows each project its own keys only */
    json_t *l = NULL;
    assert_int_equal(kt_call(t, "LIST", "/v1/transit/keys", tb, ORG, NULL, &l), 200);
    json_t *keys = kt_data(l, "keys");
    assert_int_equal(json_array_size(keys), 2);
    assert_string_equal(json_string_value(json_array_get(keys, 0)), "org1-b-e");
    assert_string_equal(json_string_value(json_array_get(keys, 1)), "org1-b-raw");
    json_decref(l);

    /* a token without a project keeps what its policies grant */
    assert_int_equal(
        call(t, unbound, "POST", "/v1/transit/encrypt/org1-b-c-d", "{\"plaintext\":\"\"}"), 200);
    assert_int_equal(call(t, unbound, "GET", "/v1/kms/keys/b/e", NULL), 200);
}

/*
 * A key a project's token makes with Transit calls, under a name that also reads as another
 * project's, stays the maker's: with neither project having KMSKeys, m's raw org1-m-x-db was
 * usable by m-x's tokens too, and m-x's KMSKey db adopted it (with m's ciphertexts and floor).
 */
static void test_raw_key_stays_with_the_project_that_made_it(void **state)
{
    struct kt *t = *state;
    char tm[128], tmx[128];
    json_decref(kms(t, 200, "POST", "z", "k", NULL, "{}")); /* (the first KMSKey mounts transit/) */
    bound_token(t, "m", tm, sizeof(tm));
    bound_token(t, "m-x", tmx, sizeof(tmx));
    static const char enc[] = "{\"plaintext\":\"Rk9SR0VE\"}";
    /* made by keys/:name, by an encrypt's upsert and by an import */
    assert_int_equal(call(t, tm, "POST", "/v1/transit/keys/org1-m-x-db", NULL), 200);
    assert_int_equal(call(t, tm, "POST", "/v1/transit/encrypt/org1-m-x-up", enc), 200);
    json_t *w = kt_ok(t, 200, "GET", "/v1/transit/wrapping_key", ORG, NULL);
    static const uint8_t material[32] = {1, 2, 3};
    char *ct = NULL, body[4096];
    assert_int_equal(kms_keyring_import_wrap(json_string_value(kt_data(w, "public_key")),
                                             KMS_HASH_SHA2_256, material, sizeof(material), &ct),
                     0);
    snprintf(body, sizeof(body), "{\"ciphertext\":\"%s\"}", ct);
    free(ct);
    json_decref(w);
    assert_int_equal(call(t, tm, "POST", "/v1/transit/keys/org1-m-x-imp/import", body), 204);
    for (int round = 0; round < 2; round++) { /* and after a restart, from the store */
        assert_int_equal(call(t, tm, "POST", "/v1/transit/encrypt/org1-m-x-db", enc), 200);
        assert_int_equal(call(t, tmx, "POST", "/v1/transit/encrypt/org1-m-x-db", enc), 403);
        assert_int_equal(call(t, tmx, "POST", "/v1/transit/encrypt/org1-m-x-up", enc), 403);
        assert_int_equal(call(t, tmx, "POST", "/v1/transit/encrypt/org1-m-x-imp", enc), 403);
        assert_int_equal(call(t, tm, "POST", "/v1/transit/encrypt/org1-m-x-imp", enc), 200);
        assert_int_equal(call(t, tmx, "GET", "/v1/transit/keys/org1-m-x-db", NULL), 403);
        assert_int_equal(call(t, tmx, "POST", "/v1/transit/keys/org1-m-x-db/rotate", NULL), 403);
        expect_err(t, 400, "POST", "m-x", "db", NULL, "{}",
                   "Transit key \"org1-m-x-db\" belongs to project \"m\" (a token of that project "
                   "made it with Transit calls); choose another name for this KMSKey");
        kt_reopen(t);
    }
    /* the maker keeps Transit's own rules for it: deletion can be allowed and the key deleted */
    assert_int_equal(
        call(t, tm, "POST", "/v1/transit/keys/org1-m-x-up/config", "{\"deletion_allowed\":true}"),
        200);
    assert_int_equal(call(t, tm, "DELETE", "/v1/transit/keys/org1-m-x-up", NULL), 204);
    /* its project's KMSKey adopts it, and it stays m's */
    json_t *b = kms(t, 200, "POST", "m", "x-db", NULL, "{}");
    assert_string_equal(json_string_value(json_array_get(json_object_get(b, "warnings"), 0)),
                        "adopted the existing Transit key org1-m-x-db");
    json_decref(b);
    assert_int_equal(call(t, tmx, "POST", "/v1/transit/encrypt/org1-m-x-db", enc), 403);
    assert_int_equal(call(t, tm, "POST", "/v1/transit/encrypt/org1-m-x-db", enc), 200);
    /* a name no other project reads needs no record: q's org1-q-k is q's alone anyway */
    char tq[128];
    bound_token(t, "q", tq, sizeof(tq));
    assert_int_equal(call(t, tq, "POST", "/v1/transit/keys/org1-q-k", NULL), 200);
    b = kms(t, 200, "POST", "q", "k", NULL, "{}");
    json_decref(b);
}

/*
 * A KMSKey's Transit key stays its KMSKey's: no token but root makes it exportable, backup-able
 * or deletable through Transit's config, replaces it by restore, or adds derived versions.
 */
static void test_managed_key_settings_refused(void **state)
{
    struct kt *t = *state;
    char tb[128];
    json_decref(kms(t, 200, "POST", "b", "e", NULL, "{}"));
    bound_token(t, "b", tb, sizeof(tb));
    json_t *u =
        kt_ok(t, 200, "POST", "/v1/auth/token/create", ORG, "{\"policies\":[\"kms-manager\"]}");
    char unbound[128];
    snprintf(unbound, sizeof(unbound), "%s",
             json_string_value(json_object_get(json_object_get(u, "auth"), "client_token")));
    json_decref(u);
    const char *flips[] = {"{\"exportable\":true}", "{\"allow_plaintext_backup\":true}",
                           "{\"deletion_allowed\":true}"};
    const char *toks[] = {tb, unbound};
    for (size_t k = 0; k < 2; k++) {
        for (size_t i = 0; i < 3; i++) {
            json_t *b = NULL;
            assert_int_equal(
                kt_call(t, "POST", "/v1/transit/keys/org1-b-e/config", toks[k], ORG, flips[i], &b),
                400);
            assert_non_null(strstr(kt_err(b), "is managed by KMSKey b/e"));
            json_decref(b);
        }
        assert_int_equal(call(t, toks[k], "DELETE", "/v1/transit/keys/org1-b-e", NULL), 400);
        /* its other settings are the manager's, as before */
        assert_int_equal(call(t, toks[k], "POST", "/v1/transit/keys/org1-b-e/config",
                              "{\"min_decryption_version\":1}"),
                         200);
    }
    /* restore over it and derive-key into it (a policy granting all of transit/): refused
     * before any work */
    json_decref(kt_ok(t, 204, "POST", "/v1/sys/policies/acl/transit-all", ORG,
                      "{\"policy\":\"path \\\"transit/*\\\" { capabilities = "
                      "[\\\"create\\\", \\\"update\\\", \\\"read\\\"] }\"}"));
    u = kt_ok(t, 200, "POST", "/v1/auth/token/create", ORG, "{\"policies\":[\"transit-all\"]}");
    snprintf(tb, sizeof(tb), "%s",
             json_string_value(json_object_get(json_object_get(u, "auth"), "client_token")));
    json_decref(u);
    json_t *b = NULL;
    assert_int_equal(kt_call(t, "POST", "/v1/transit/restore/org1-b-e", tb, ORG,
                             "{\"backup\":\"e30=\",\"force\":true}", &b),
                     400);
    assert_non_null(strstr(kt_err(b), "a restore cannot replace its key material"));
    json_decref(b);
    assert_int_equal(kt_call(t, "POST", "/v1/transit/derive-key/org1-b-e", tb, ORG,
                             "{\"peer_public_key\":\"x\",\"base_key_name\":\"org1-b-raw\"}", &b),
                     400);
    assert_non_null(strstr(kt_err(b), "derive-key cannot add versions to it"));
    json_decref(b);
    u = kt_ok(t, 200, "GET", "/v1/transit/keys/org1-b-e", ORG, NULL);
    bool exportable = json_is_true(json_object_get(json_object_get(u, "data"), "exportable"));
    json_decref(u);
    assert_false(exportable);
    assert_string_equal(condition_of(t, "e", "Protected", "status"), "True");
    assert_string_equal(condition_of(t, "e", "Protected", "reason"), "Latched");
    /* root is the break-glass; the KMSKey's status says what it changed (its spec cannot:
     * exportable must stay false there), and the key stays Ready */
    json_decref(kt_ok(t, 200, "POST", "/v1/transit/keys/org1-b-e/config", ORG,
                      "{\"deletion_allowed\":true}"));
    assert_string_equal(condition_of(t, "e", "Protected", "status"), "False");
    assert_string_equal(condition_of(t, "e", "Protected", "reason"), "ChangedOutsideKMSKey");
    assert_string_equal(condition_of(t, "e", "Protected", "message"),
                        "the Transit key was changed outside its KMSKey: deletion_allowed is set "
                        "(a Transit DELETE skips the deletion countdown)");
    json_decref(kt_ok(t, 200, "POST", "/v1/transit/keys/org1-b-e/config", ORG,
                      "{\"exportable\":true,\"allow_plaintext_backup\":true}"));
    assert_string_equal(condition_of(t, "e", "Protected", "message"),
                        "the Transit key was changed outside its KMSKey: it is exportable; it "
                        "allows plaintext backup; deletion_allowed is set (a Transit DELETE skips "
                        "the deletion countdown)");
    assert_string_equal(condition_of(t, "e", "Ready", "status"), "True");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_first_owner_wins_b_then_bc, setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_managed_key_settings_refused, setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_first_owner_wins_bc_then_b, setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_ambiguous_adoption_refused, setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_raw_key_stays_with_the_project_that_made_it, setup,
                                        kt_teardown),
        cmocka_unit_test_setup_teardown(test_retained_key_stays_with_its_project, setup,
                                        kt_teardown),
        cmocka_unit_test_setup_teardown(test_actions_only_on_owned_key, setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_legacy_delete_keeps_owner_key, setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_index_goes_with_namespace, setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_project_bound_tokens, setup, kt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
