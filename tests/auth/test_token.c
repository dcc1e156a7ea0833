/*
 * test_token.c - auth/token.c and the policy store in auth/acl.c over a real (temporary,
 * nosync) store: Vault's TTL arithmetic and its warnings, policy-list normalisation, token
 * format and namespace suffixes, lookup by token and accessor, expiry, revocation with its
 * cascade to children, num_uses, renewal caps, the policy store (built-ins, default, cache
 * invalidation) and the namespace scope of kms_auth_authorize. The store's clock is the
 * fixture's now_ms (kms_auth_set_clock), so expiry, renewal and max_ttl are driven to the
 * millisecond without sleeping; records written before the millisecond fields still load.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "auth/auth.h"

#define S 1000             /* ms per second */
#define T0 1700000000900LL /* the fixture's clock at start: 0.9 s into a second */

struct fixture {
    char dir[64];
    struct kms_storage *st;
    struct kms_auth *auth;
    int64_t now_ms; /* the token store's clock: tests move it, nothing sleeps */
};

static int64_t fixture_now(void *arg)
{
    return ((const struct fixture *)arg)->now_ms;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct kms_storage_opts opts = {.nosync = true, .create = true};
    struct kms_err err = {0};
    uint8_t key[32];

    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/kms-auth-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    for (size_t i = 0; i < sizeof(key); i++) {
        key[i] = (uint8_t)(i * 13 + 5);
    }
    if (kms_storage_open(f->dir, key, &opts, &f->st, &err) != 0 ||
        kms_auth_create(f->st, &f->auth, &err) != 0) {
        fail_msg("setup: %s", err.msg);
    }
    f->now_ms = T0;
    kms_auth_set_clock(f->auth, fixture_now, f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    kms_auth_destroy(&f->auth);
    assert_null(f->auth);
    kms_storage_close(&f->st);
    nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* ---- pure helpers ------------------------------------------------------------------------ */

static void test_human_duration(void **state)
{
    (void)state;
    static const struct {
        int64_t s;
        const char *want;
    } t[] = {{0, "0s"},    {59, "59s"},     {60, "1m"},      {90, "1m30s"},
             {120, "2m"},  {3600, "1h"},    {3630, "1h30s"}, {3661, "1h1m1s"},
             {7200, "2h"}, {5400, "1h30m"}, {86400, "24h"},  {2764800, "768h"}};
    char out[32];
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        kms_auth_human_duration(t[i].s, out);
        assert_string_equal(out, t[i].want);
    }
}

/* The lease kms_auth_ttl grants, in ms, or -1 with err set. */
static int64_t lease_of(struct kms_ttl_req r, char *warning, struct kms_err *err)
{
    int64_t lease = -1;
    r.default_ttl = KMS_AUTH_DEFAULT_TTL;
    r.system_max = KMS_AUTH_SYSTEM_MAX_TTL;
    if (kms_auth_ttl(&r, &lease, warning, 256, err) != 0) {
        return -1;
    }
    return lease;
}

static void test_ttl_arithmetic(void **state)
{
    (void)state;
    char w[256];
    struct kms_err err;
    const int64_t now = T0;

    /* login: role ttl, default, capped by role max and the system max */
    assert_int_equal(lease_of((struct kms_ttl_req){.now_ms = now, .start_ms = now}, w, &err),
                     3600 * S);
    assert_string_equal(w, "");
    assert_int_equal(
        lease_of((struct kms_ttl_req){.now_ms = now, .start_ms = now, .ttl = 3600, .max_ttl = 7200},
                 w, &err),
        3600 * S);
    assert_int_equal(
        lease_of((struct kms_ttl_req){.now_ms = now, .start_ms = now, .ttl = 7200, .max_ttl = 3600},
                 w, &err),
        3600 * S);
    assert_string_equal(w, "TTL of \"2h\" exceeded the effective max_ttl of \"1h\"; TTL value is "
                           "capped accordingly");
    assert_int_equal(
        lease_of((struct kms_ttl_req){.now_ms = now, .start_ms = now, .ttl = 3000000}, w, &err),
        2764800LL * S);
    assert_int_equal(lease_of(
                         (struct kms_ttl_req){
                             .now_ms = now, .start_ms = now, .ttl = 7200, .explicit_max_ttl = 60},
                         w, &err),
                     60 * S);
    /* renew an hour in: increment 2h with max 2h is capped to what is left */
    assert_int_equal(lease_of((struct kms_ttl_req){.now_ms = now,
                                                   .start_ms = now - 3600 * S,
                                                   .increment = 7200,
                                                   .ttl = 3600,
                                                   .max_ttl = 7200},
                              w, &err),
                     3600 * S);
    assert_string_equal(w, "TTL of \"2h\" exceeded the effective max_ttl of \"1h\"; TTL value is "
                           "capped accordingly");
    /* the cap is exact to the millisecond: issued 400 ms before the hour, 400 ms less left */
    assert_int_equal(lease_of((struct kms_ttl_req){.now_ms = now,
                                                   .start_ms = now - 3600 * S - 400,
                                                   .increment = 7200,
                                                   .ttl = 3600,
                                                   .max_ttl = 7200},
                              w, &err),
                     3600 * S - 400);
    assert_string_equal(w, "TTL of \"2h\" exceeded the effective max_ttl of \"59m59s\"; TTL value "
                           "is capped accordingly");
    /* no increment: the role ttl again */
    assert_int_equal(lease_of(
                         (struct kms_ttl_req){
                             .now_ms = now, .start_ms = now - 60 * S, .ttl = 600, .max_ttl = 7200},
                         w, &err),
                     600 * S);
    /* past the max, and 1 ms before it */
    assert_int_equal(lease_of((struct kms_ttl_req){.now_ms = now,
                                                   .start_ms = now - 7200 * S,
                                                   .ttl = 3600,
                                                   .max_ttl = 7200},
                              w, &err),
                     -1);
    assert_int_equal(err.status, 400);
    assert_string_equal(err.msg, "past the max TTL, cannot renew");
    assert_int_equal(lease_of((struct kms_ttl_req){.now_ms = now,
                                                   .start_ms = now - 7200 * S + 1,
                                                   .ttl = 3600,
                                                   .max_ttl = 7200},
                              w, &err),
                     1);
    /* periodic: the period each time, no overall cap but explicit_max_ttl */
    assert_int_equal(lease_of((struct kms_ttl_req){.now_ms = now,
                                                   .start_ms = now - 999999 * S,
                                                   .increment = 99,
                                                   .period = 600},
                              w, &err),
                     600 * S);
    assert_int_equal(lease_of((struct kms_ttl_req){.now_ms = now,
                                                   .start_ms = now - 100 * S,
                                                   .period = 600,
                                                   .explicit_max_ttl = 300},
                              w, &err),
                     200 * S);
    assert_int_equal(
        lease_of(
            (struct kms_ttl_req){.now_ms = now, .start_ms = now, .period = 9000, .max_ttl = 3600},
            w, &err),
        3600 * S);
    assert_string_equal(w, "period of \"2h30m\" exceeded the effective max_ttl of \"1h\"; period "
                           "value is capped accordingly");
}

static void test_policies_normalize(void **state)
{
    (void)state;
    char out[KMS_TOKEN_MAX_POLICIES][KMS_POLICY_NAME_MAX];
    const char *a[] = {" Dev ", "default", "dev", "", "Apps"};
    assert_int_equal(kms_auth_policies_normalize(a, 5, true, out), 3);
    assert_string_equal(out[0], "apps");
    assert_string_equal(out[1], "default");
    assert_string_equal(out[2], "dev");
    const char *b[] = {"kms-viewer"};
    assert_int_equal(kms_auth_policies_normalize(b, 1, false, out), 1);
    assert_int_equal(kms_auth_policies_normalize(b, 0, true, out), 1);
    assert_string_equal(out[0], "default");
    const char *c[] = {"x", "ROOT", "y"};
    assert_int_equal(kms_auth_policies_normalize(c, 3, true, out), 1);
    assert_string_equal(out[0], "root");
    const char *many[40];
    char names[40][8];
    for (int i = 0; i < 40; i++) {
        snprintf(names[i], sizeof(names[i]), "p%d", i);
        many[i] = names[i];
    }
    assert_int_equal(kms_auth_policies_normalize(many, 40, false, out), -1);
}

/* ---- token store ------------------------------------------------------------------------- */

/* A renewable root-namespace login token spec with the given ttl and max_ttl (seconds). */
static struct kms_token_spec login_spec(const char *const *pols, int64_t ttl, int64_t max_ttl)
{
    return (struct kms_token_spec){.ns_id = "root",
                                   .path = "auth/k8s/login",
                                   .display_name = "x",
                                   .policies = pols,
                                   .npolicies = 1,
                                   .ttl = ttl,
                                   .max_ttl = max_ttl,
                                   .renewable = true};
}

static void make_token(struct fixture *f, struct kms_token_spec *spec, char *tok,
                       struct kms_token *out)
{
    struct kms_err err;
    char w[256];
    if (kms_auth_token_create(f->auth, spec, tok, out, w, sizeof(w), &err) != 0) {
        fail_msg("create: %d %s", err.status, err.msg);
    }
}

static void test_root_and_format(void **state)
{
    struct fixture *f = *state;
    struct kms_txn *txn = NULL;
    struct kms_err err;
    char root[KMS_TOKEN_MAX_LEN];
    struct kms_token t;

    assert_int_equal(kms_storage_txn_begin(f->st, true, &txn), 0);
    assert_int_equal(kms_auth_token_create_root(f->auth, txn, "my-root", root, &err), 0);
    assert_int_equal(kms_storage_txn_commit(&txn), 0);
    assert_string_equal(root, "my-root");
    assert_int_equal(kms_auth_token_lookup(f->auth, "my-root", &t), 0);
    assert_true(t.root);
    assert_string_equal(t.path, "auth/token/root");
    assert_string_equal(t.subject, "root");
    assert_int_equal(t.expire_time, 0);
    assert_int_equal(kms_auth_token_lookup(f->auth, "my-roo", &t), KMS_STORAGE_NOTFOUND);
    assert_int_equal(kms_auth_token_lookup(f->auth, "", &t), KMS_STORAGE_NOTFOUND);
    assert_int_equal(kms_auth_token_lookup(f->auth, NULL, &t), KMS_STORAGE_NOTFOUND);
    assert_int_equal(kms_storage_txn_begin(f->st, true, &txn), 0);
    assert_int_equal(kms_auth_token_create_root(f->auth, txn, "bad.id", root, &err), -1);
    assert_int_equal(kms_auth_token_create_root(f->auth, txn, NULL, root, &err), 0);
    kms_storage_txn_abort(&txn);
    assert_int_equal(strlen(root), 26);
    assert_memory_equal(root, "s.", 2);

    const char *pols[] = {"default", "dev"};
    const char *mk[] = {"role"};
    const char *mv[] = {"r1"};
    char tok[KMS_TOKEN_MAX_LEN];
    struct kms_token_spec spec = {.ns_id = "AbC123",
                                  .path = "auth/k8s/login",
                                  .display_name = "k8s-ns-app",
                                  .subject = "system:sa",
                                  .policies = pols,
                                  .npolicies = 2,
                                  .meta_keys = mk,
                                  .meta_values = mv,
                                  .nmeta = 1,
                                  .renewable = true,
                                  .role = "r1",
                                  .entity_id = "e-1"};
    make_token(f, &spec, tok, &t);
    assert_int_equal(strlen(tok), 26 + 7);
    assert_memory_equal(tok, "s.", 2);
    assert_string_equal(tok + 26, ".AbC123");
    for (size_t i = 2; i < 26; i++) {
        assert_true((tok[i] >= '0' && tok[i] <= '9') || (tok[i] >= 'a' && tok[i] <= 'z') ||
                    (tok[i] >= 'A' && tok[i] <= 'Z'));
    }
    assert_int_equal(strlen(t.accessor), 24 + 7);
    assert_string_equal(t.accessor + 24, ".AbC123");
    assert_int_equal(t.creation_ttl, KMS_AUTH_DEFAULT_TTL);
    assert_true(t.renewable);
    assert_true(t.orphan);
    assert_string_equal(t.subject, "system:sa");

    struct kms_token l;
    assert_int_equal(kms_auth_token_lookup(f->auth, tok, &l), 0);
    assert_string_equal(l.accessor, t.accessor);
    assert_string_equal(l.ns_id, "AbC123");
    assert_string_equal(l.role, "r1");
    assert_string_equal(l.entity_id, "e-1");
    assert_int_equal(l.npolicies, 2);
    assert_int_equal(l.nmeta, 1);
    assert_string_equal(l.meta_values[0], "r1");
    assert_false(l.root);
    assert_memory_equal(l.hash, t.hash, 32);
    assert_int_equal(kms_auth_token_lookup_accessor(f->auth, t.accessor, &l), 0);
    assert_memory_equal(l.hash, t.hash, 32);
    assert_int_equal(kms_auth_token_lookup_accessor(f->auth, "nope", &l), KMS_STORAGE_NOTFOUND);
    /* the token without its suffix is another token */
    tok[26] = '\0';
    assert_int_equal(kms_auth_token_lookup(f->auth, tok, &l), KMS_STORAGE_NOTFOUND);
}

static void test_expiry_revoke_cascade(void **state)
{
    struct fixture *f = *state;
    const char *pols[] = {"default"};
    char parent[KMS_TOKEN_MAX_LEN];
    char child[KMS_TOKEN_MAX_LEN];
    char grandchild[KMS_TOKEN_MAX_LEN];
    char shortlived[KMS_TOKEN_MAX_LEN];
    struct kms_token p, c, g, s, l;
    struct kms_token_spec spec = {.ns_id = "root",
                                  .path = "auth/token/create",
                                  .display_name = "token",
                                  .policies = pols,
                                  .npolicies = 1,
                                  .renewable = true};
    make_token(f, &spec, parent, &p);
    spec.parent_hash = p.hash;
    make_token(f, &spec, child, &c);
    assert_false(c.orphan);
    spec.parent_hash = c.hash;
    make_token(f, &spec, grandchild, &g);
    spec.parent_hash = NULL;
    spec.ttl = 1;
    make_token(f, &spec, shortlived, &s);
    assert_int_equal(s.expire_time - s.creation_time, 1);
    assert_int_equal(s.expire_ms, T0 + 1 * S);

    assert_int_equal(kms_auth_token_lookup(f->auth, grandchild, &l), 0);
    assert_int_equal(kms_auth_token_revoke(f->auth, p.hash), 0);
    assert_int_equal(kms_auth_token_lookup(f->auth, parent, &l), KMS_STORAGE_NOTFOUND);
    assert_int_equal(kms_auth_token_lookup(f->auth, child, &l), KMS_STORAGE_NOTFOUND);
    assert_int_equal(kms_auth_token_lookup(f->auth, grandchild, &l), KMS_STORAGE_NOTFOUND);
    assert_int_equal(kms_auth_token_lookup_accessor(f->auth, c.accessor, &l), KMS_STORAGE_NOTFOUND);
    assert_int_equal(kms_auth_token_revoke(f->auth, p.hash), KMS_STORAGE_NOTFOUND);

    /* ttl 1 lives one full second from its creation, though a whole second ends at T0+100 */
    f->now_ms = T0 + 100;
    assert_int_equal(kms_auth_token_lookup(f->auth, shortlived, &l), 0);
    f->now_ms = T0 + 999;
    assert_int_equal(kms_auth_token_lookup(f->auth, shortlived, &l), 0); /* from the cache */
    f->now_ms = T0 + 1000;
    assert_int_equal(kms_auth_token_lookup(f->auth, shortlived, &l), KMS_STORAGE_NOTFOUND);
    assert_int_equal(kms_auth_token_lookup_accessor(f->auth, s.accessor, &l), KMS_STORAGE_NOTFOUND);

    /* a parent's expiry ends its longer-lived child at the same millisecond */
    spec.ttl = 2;
    make_token(f, &spec, parent, &p);
    spec.ttl = 60;
    spec.parent_hash = p.hash;
    make_token(f, &spec, child, &c);
    f->now_ms += 2 * S - 1;
    assert_int_equal(kms_auth_token_lookup(f->auth, child, &l), 0);
    f->now_ms += 1;
    assert_int_equal(kms_auth_token_lookup(f->auth, child, &l), KMS_STORAGE_NOTFOUND);
}

static void renew_ok(struct fixture *f, const struct kms_token *t, int64_t increment,
                     const struct kms_token_ttl *cur, struct kms_token *out, char *w)
{
    struct kms_err err;
    if (kms_auth_token_renew(f->auth, t, increment, cur, out, w, 256, &err) != 0) {
        fail_msg("renew: %d %s", err.status, err.msg);
    }
}

/* Alive exactly until `until` (ms): found 1 ms before, gone from then on. */
static void assert_lives_until(struct fixture *f, const char *tok, int64_t until)
{
    struct kms_token l;
    f->now_ms = until - 1;
    assert_int_equal(kms_auth_token_lookup(f->auth, tok, &l), 0);
    assert_int_equal(l.expire_ms, until);
    f->now_ms = until;
    assert_int_equal(kms_auth_token_lookup(f->auth, tok, &l), KMS_STORAGE_NOTFOUND);
}

static void test_clock_renew_max_ttl(void **state)
{
    struct fixture *f = *state;
    const char *pols[] = {"default"};
    char a[KMS_TOKEN_MAX_LEN], b[KMS_TOKEN_MAX_LEN], c[KMS_TOKEN_MAX_LEN];
    char d[KMS_TOKEN_MAX_LEN], e[KMS_TOKEN_MAX_LEN];
    char w[256];
    struct kms_err err;
    struct kms_token ta, tb, tc, td, te, r;
    struct kms_token_spec spec = login_spec(pols, 60, 120);
    make_token(f, &spec, a, &ta);
    make_token(f, &spec, b, &tb);
    spec.max_ttl = 3600;
    make_token(f, &spec, c, &tc);
    spec.ttl = 0;
    spec.max_ttl = 0;
    spec.period = 10;
    make_token(f, &spec, d, &td);
    spec.explicit_max_ttl = 15;
    make_token(f, &spec, e, &te);
    assert_int_equal(ta.expire_ms, T0 + 60 * S);
    assert_int_equal(td.expire_ms, T0 + 10 * S);

    /* periodic with an explicit max: the period, cut short at creation + 15 s */
    f->now_ms = T0 + 9 * S;
    renew_ok(f, &te, 0, NULL, &r, w);
    assert_int_equal(r.expire_ms, T0 + 15 * S);
    assert_non_null(strstr(w, "exceeded the effective max_ttl"));
    /* periodic: any increment resets the lease to the period from now */
    f->now_ms = T0 + 10 * S - 1;
    renew_ok(f, &td, 3600, NULL, &r, w);
    assert_int_equal(r.expire_ms, T0 + 20 * S - 1);
    assert_string_equal(w, "");
    assert_lives_until(f, e, T0 + 15 * S);
    assert_lives_until(f, d, T0 + 20 * S - 1);

    /* renewal from now: the token's ttl again, recorded as the last renewal */
    f->now_ms = T0 + 30 * S;
    renew_ok(f, &tb, 0, NULL, &r, w);
    assert_int_equal(r.expire_ms, T0 + 90 * S);
    assert_int_equal(r.last_renewal, (T0 + 30 * S) / 1000);
    /* the role's current max_ttl (20 s) is already behind the token: refused */
    assert_int_equal(kms_auth_token_renew(f->auth, &tc, 0,
                                          &(struct kms_token_ttl){.ttl = 30, .max_ttl = 20}, &r, w,
                                          sizeof(w), &err),
                     -1);
    assert_int_equal(err.status, 400);
    assert_string_equal(err.msg, "past the max TTL, cannot renew");
    /* a token that expired cannot be renewed, even inside its max_ttl */
    f->now_ms = T0 + 60 * S;
    assert_int_equal(kms_auth_token_renew(f->auth, &ta, 10, NULL, &r, w, sizeof(w), &err), -1);
    assert_int_equal(err.status, 403);
    /* a big increment is capped at creation + max_ttl, to the millisecond */
    f->now_ms = T0 + 80 * S;
    renew_ok(f, &tb, 1000, NULL, &r, w);
    assert_int_equal(r.expire_ms, T0 + 120 * S);
    assert_string_equal(w, "TTL of \"16m40s\" exceeded the effective max_ttl of \"40s\"; TTL "
                           "value is capped accordingly");
    assert_lives_until(f, b, T0 + 120 * S);
    assert_int_equal(kms_auth_token_renew(f->auth, &tb, 10, NULL, &r, w, sizeof(w), &err), -1);
    assert_int_equal(err.status, 403);
}

/* Rewrite the stored record of `tok` as it was before the millisecond fields existed. */
static void make_legacy(struct fixture *f, const char *tok)
{
    struct kms_txn *txn = NULL;
    uint8_t *key = NULL, *val = NULL;
    size_t keylen = 0, vallen = 0;
    uint8_t hash[32];

    assert_int_equal(kms_storage_txn_begin(f->st, true, &txn), 0);
    assert_int_equal(kms_storage_get(txn, KMS_DB_META, "token_hmac_key", 14, &key, &keylen), 0);
    assert_int_equal(kms_hmac(KMS_HASH_SHA2_256, key, keylen, tok, strlen(tok), hash), 0);
    assert_int_equal(kms_storage_get(txn, KMS_DB_TOKENS, hash, 32, &val, &vallen), 0);
    json_t *rec = json_loadb((const char *)val, vallen, 0, NULL);
    assert_non_null(rec);
    assert_int_equal(json_object_del(rec, "expire_ms"), 0);
    assert_int_equal(json_object_del(rec, "creation_ms"), 0);
    char *text = json_dumps(rec, JSON_COMPACT);
    assert_non_null(text);
    assert_int_equal(kms_storage_put(txn, KMS_DB_TOKENS, hash, 32, text, strlen(text)), 0);
    assert_int_equal(kms_storage_txn_commit(&txn), 0);
    free(text);
    json_decref(rec);
    kms_free_wipe((void **)&val, vallen);
    kms_free_wipe((void **)&key, keylen);
}

static void test_legacy_records_load(void **state)
{
    struct fixture *f = *state;
    const char *pols[] = {"default"};
    char tok[KMS_TOKEN_MAX_LEN], tok2[KMS_TOKEN_MAX_LEN];
    char w[256];
    struct kms_token t, t2, r;
    struct kms_token_spec spec = login_spec(pols, 5, 10);
    make_token(f, &spec, tok, &t);
    make_token(f, &spec, tok2, &t2);
    make_legacy(f, tok);
    make_legacy(f, tok2);
    /* whole seconds, as written: expiry at the start of second T0/1000 + 5 */
    const int64_t sec0 = T0 / 1000 * 1000;
    assert_lives_until(f, tok, sec0 + 5 * S);
    /* renewal caps at the whole-second creation time + max_ttl, and writes ms from then on */
    f->now_ms = T0 + 1 * S;
    renew_ok(f, &t2, 100, NULL, &r, w);
    assert_int_equal(r.expire_ms, sec0 + 10 * S);
    assert_lives_until(f, tok2, sec0 + 10 * S);
}

static void test_renew_and_uses(void **state)
{
    struct fixture *f = *state;
    const char *pols[] = {"default"};
    char tok[KMS_TOKEN_MAX_LEN];
    char w[256];
    struct kms_err err;
    struct kms_token t, r;
    struct kms_token_spec spec = login_spec(pols, 60, 120);
    make_token(f, &spec, tok, &t);
    assert_int_equal(kms_auth_token_renew(f->auth, &t, 1000, NULL, &r, w, sizeof(w), &err), 0);
    assert_true(r.expire_time - r.creation_time <= 120);
    assert_true(r.expire_time - r.creation_time >= 119);
    assert_non_null(strstr(w, "exceeded the effective max_ttl"));
    assert_true(r.last_renewal > 0);
    /* the role's current values win over the token's own */
    struct kms_token_ttl cur = {.ttl = 30, .max_ttl = 3600};
    assert_int_equal(kms_auth_token_renew(f->auth, &t, 0, &cur, &r, w, sizeof(w), &err), 0);
    assert_string_equal(w, "");
    assert_true(r.expire_time - r.last_renewal == 30);

    spec.renewable = false;
    make_token(f, &spec, tok, &t);
    assert_int_equal(kms_auth_token_renew(f->auth, &t, 10, NULL, &r, w, sizeof(w), &err), -1);
    assert_int_equal(err.status, 400);
    assert_string_equal(err.msg, "lease is not renewable");
    assert_int_equal(kms_auth_token_revoke(f->auth, t.hash), 0);
    assert_int_equal(kms_auth_token_renew(f->auth, &t, 10, NULL, &r, w, sizeof(w), &err), -1);
    assert_int_equal(err.status, 403);

    /* num_uses: two allowed requests, then the token is gone */
    spec.renewable = true;
    spec.num_uses = 2;
    make_token(f, &spec, tok, &t);
    struct kms_auth_req req = {"", "", "auth/token/lookup-self", KMS_OP_READ, false};
    struct kms_acl_result res;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(kms_auth_token_lookup(f->auth, tok, &r), 0);
        assert_int_equal(r.num_uses, 2 - i);
        assert_int_equal(kms_auth_authorize(f->auth, &r, &req, &res), 0);
        assert_true(res.allowed);
    }
    assert_int_equal(kms_auth_token_lookup(f->auth, tok, &r), KMS_STORAGE_NOTFOUND);

    /* revoke by mount prefix */
    spec.num_uses = 0;
    char other[KMS_TOKEN_MAX_LEN];
    struct kms_token o;
    make_token(f, &spec, tok, &t);
    spec.path = "auth/jwt/login";
    make_token(f, &spec, other, &o);
    assert_int_equal(kms_auth_token_revoke_prefix(f->auth, "root", "auth/k8s/"), 0);
    assert_int_equal(kms_auth_token_lookup(f->auth, tok, &r), KMS_STORAGE_NOTFOUND);
    assert_int_equal(kms_auth_token_lookup(f->auth, other, &r), 0);

    /* bound CIDRs */
    const char *cidrs[] = {"10.0.0.0/8"};
    spec.cidrs = cidrs;
    spec.ncidrs = 1;
    make_token(f, &spec, tok, &t);
    assert_true(kms_auth_token_cidr_ok(&t, "10.1.2.3"));
    assert_false(kms_auth_token_cidr_ok(&t, "127.0.0.1"));
    assert_false(kms_auth_token_cidr_ok(&t, NULL));
    assert_true(kms_auth_token_cidr_ok(&o, "127.0.0.1"));
}

/* ---- revoke-orphan, tidy, the accessor list --------------------------------------------- */

/* Records in one database of the store. */
static size_t count_db(struct fixture *f, enum kms_db db)
{
    struct kms_txn *txn = NULL;
    size_t n = 0;
    assert_int_equal(kms_storage_txn_begin(f->st, false, &txn), 0);
    assert_int_equal(kms_storage_count(txn, db, &n), 0);
    kms_storage_txn_abort(&txn);
    return n;
}

/* The accessors kms_auth_token_accessors reports for ns_id, "a,b,c," in its order. */
static int acc_collect(const char *accessor, void *arg)
{
    char *buf = arg;
    size_t n = strlen(buf);
    snprintf(buf + n, 1024 - n, "%s,", accessor);
    return 0;
}

static void accessors_of(struct fixture *f, const char *ns_id, char out[1024])
{
    out[0] = '\0';
    assert_int_equal(kms_auth_token_accessors(f->auth, ns_id, acc_collect, out), 0);
}

static void test_revoke_orphan(void **state)
{
    struct fixture *f = *state;
    const char *pols[] = {"default"};
    char parent[KMS_TOKEN_MAX_LEN], child[KMS_TOKEN_MAX_LEN], grandchild[KMS_TOKEN_MAX_LEN];
    char brief[KMS_TOKEN_MAX_LEN], other[KMS_TOKEN_MAX_LEN];
    struct kms_token p, c, g, b, o, l;
    size_t orphaned = 99;
    struct kms_token_spec spec = {.ns_id = "root",
                                  .path = "auth/token/create",
                                  .display_name = "token",
                                  .policies = pols,
                                  .npolicies = 1,
                                  .renewable = true,
                                  .ttl = 2};
    make_token(f, &spec, parent, &p);
    spec.parent_hash = p.hash;
    spec.ttl = 3600;
    make_token(f, &spec, child, &c);
    spec.ttl = 1;
    make_token(f, &spec, brief, &b); /* a child that will be past its own expiry */
    spec.ttl = 3600;
    spec.parent_hash = c.hash;
    make_token(f, &spec, grandchild, &g);
    spec.parent_hash = NULL;
    make_token(f, &spec, other, &o); /* not in the family */
    assert_false(c.orphan);
    size_t tokens = count_db(f, KMS_DB_TOKENS), accs = count_db(f, KMS_DB_ACCESSORS);

    f->now_ms = T0 + 1 * S; /* `brief` has expired; the parent lives one more second */
    assert_int_equal(kms_auth_token_lookup(f->auth, child, &l), 0); /* cached, with its dies_ms */
    assert_int_equal(kms_auth_token_revoke_orphan(f->auth, p.hash, &orphaned), 0);
    assert_int_equal(orphaned, 1);
    /* the parent and its expired child are gone, record and accessor entry */
    assert_int_equal(count_db(f, KMS_DB_TOKENS), tokens - 2);
    assert_int_equal(count_db(f, KMS_DB_ACCESSORS), accs - 2);
    assert_int_equal(kms_auth_token_lookup(f->auth, parent, &l), KMS_STORAGE_NOTFOUND);
    assert_int_equal(kms_auth_token_lookup_accessor(f->auth, b.accessor, &l), KMS_STORAGE_NOTFOUND);
    /* the child lives on as an orphan; its own child keeps its parent link */
    assert_int_equal(kms_auth_token_lookup(f->auth, child, &l), 0);
    assert_true(l.orphan);
    assert_int_equal(kms_auth_token_lookup(f->auth, grandchild, &l), 0);
    assert_false(l.orphan);
    /* ... past the revoked parent's expiry too (the cached entry died with the parent) */
    f->now_ms = T0 + 10 * S;
    assert_int_equal(kms_auth_token_lookup(f->auth, child, &l), 0);
    assert_int_equal(kms_auth_token_lookup(f->auth, grandchild, &l), 0);
    assert_int_equal(kms_auth_token_lookup(f->auth, other, &l), 0);
    /* no record: not found; revoking the orphan itself still takes its child (no -orphan) */
    assert_int_equal(kms_auth_token_revoke_orphan(f->auth, p.hash, NULL), KMS_STORAGE_NOTFOUND);
    assert_int_equal(kms_auth_token_revoke(f->auth, c.hash), 0);
    assert_int_equal(kms_auth_token_lookup(f->auth, grandchild, &l), KMS_STORAGE_NOTFOUND);
    /* a token without children */
    assert_int_equal(kms_auth_token_revoke_orphan(f->auth, o.hash, &orphaned), 0);
    assert_int_equal(orphaned, 0);
    assert_int_equal(kms_auth_token_lookup(f->auth, other, &l), KMS_STORAGE_NOTFOUND);
}

/* A clock that starts a second tidy from inside the first (which reads the clock once, after
 * taking its lock): that one must find the lock taken. */
static int nested_tidy_rc = -2;

static int64_t nesting_clock(void *arg)
{
    struct fixture *f = arg;
    struct kms_token_tidy st;
    if (nested_tidy_rc == -2) {
        nested_tidy_rc = kms_auth_token_tidy(f->auth, "root", true, &st);
    }
    return f->now_ms;
}

/* Store an accessor entry that points to no token record. */
static void put_dangling_accessor(struct fixture *f, uint8_t fill)
{
    struct kms_txn *txn = NULL;
    uint8_t key[32], val[32];
    memset(key, fill, sizeof(key));
    memset(val, fill ^ 0xff, sizeof(val));
    assert_int_equal(kms_storage_txn_begin(f->st, true, &txn), 0);
    assert_int_equal(kms_storage_put(txn, KMS_DB_ACCESSORS, key, 32, val, 32), 0);
    assert_int_equal(kms_storage_txn_commit(&txn), 0);
}

static void test_tidy(void **state)
{
    struct fixture *f = *state;
    const char *pols[] = {"default"};
    char live[KMS_TOKEN_MAX_LEN], gone[KMS_TOKEN_MAX_LEN], parent[KMS_TOKEN_MAX_LEN];
    char child[KMS_TOKEN_MAX_LEN], lone[KMS_TOKEN_MAX_LEN], nsold[KMS_TOKEN_MAX_LEN];
    char list[1024], want[1024];
    struct kms_token tl, tg, tp, tc, tn, to, l;
    struct kms_token_tidy st;
    struct kms_token_spec spec = {.ns_id = "root",
                                  .path = "auth/token/create",
                                  .display_name = "token",
                                  .policies = pols,
                                  .npolicies = 1,
                                  .renewable = true,
                                  .ttl = 3600};
    make_token(f, &spec, live, &tl);
    make_token(f, &spec, parent, &tp);
    spec.parent_hash = tp.hash;
    make_token(f, &spec, child, &tc); /* dies with its parent, its record stays */
    spec.parent_hash = NULL;
    spec.ttl = 5;
    make_token(f, &spec, gone, &tg); /* expires and is never looked up again */
    spec.ttl = 3600;
    make_token(f, &spec, lone, &to); /* expires by its parent's expiry ... below */
    spec.ns_id = "Org111";
    spec.ttl = 5;
    make_token(f, &spec, nsold, &tn); /* another namespace's expired token */
    assert_int_equal(kms_auth_token_revoke(f->auth, tp.hash), 0);
    assert_int_equal(kms_auth_token_revoke(f->auth, to.hash), 0);
    put_dangling_accessor(f, 0x5a);
    size_t tokens = count_db(f, KMS_DB_TOKENS), accs = count_db(f, KMS_DB_ACCESSORS);
    assert_int_equal(tokens, 4); /* live, child, gone, nsold */
    assert_int_equal(accs, 5);

    /* before the expiry: only the dead child is taken; the dangling entry without `accessors`
     * stays */
    f->now_ms = T0 + 5 * S - 1;
    assert_int_equal(kms_auth_token_tidy(f->auth, "root", false, &st), 0);
    assert_int_equal(st.scanned, 3);
    assert_int_equal(st.expired, 0);
    assert_int_equal(st.parent_revoked, 1);
    assert_int_equal(st.accessors_scanned, 0);
    assert_int_equal(count_db(f, KMS_DB_TOKENS), 3);
    assert_int_equal(count_db(f, KMS_DB_ACCESSORS), 4);
    /* the list shows exactly the live tokens, in byte order */
    snprintf(want, sizeof(want), "%s,%s,",
             strcmp(tl.accessor, tg.accessor) < 0 ? tl.accessor : tg.accessor,
             strcmp(tl.accessor, tg.accessor) < 0 ? tg.accessor : tl.accessor);
    accessors_of(f, "root", list);
    assert_string_equal(list, want);

    /* at the expiry (to the millisecond): the expired record goes, with its accessor entry,
     * and the root namespace's tidy takes the entry that points nowhere; Org111's token is not
     * this namespace's */
    f->now_ms = T0 + 5 * S;
    snprintf(want, sizeof(want), "%s,", tl.accessor);
    accessors_of(f, "root", list);
    assert_string_equal(list, want);
    assert_int_equal(count_db(f, KMS_DB_TOKENS), 3); /* listing removes nothing */
    kms_auth_set_clock(f->auth, nesting_clock, f);
    assert_int_equal(kms_auth_token_tidy(f->auth, "root", true, &st), 0);
    kms_auth_set_clock(f->auth, fixture_now, f);
    assert_int_equal(nested_tidy_rc, 1); /* a second tidy meanwhile: already in progress */
    assert_int_equal(st.scanned, 2);
    assert_int_equal(st.expired, 1);
    assert_int_equal(st.parent_revoked, 0);
    assert_int_equal(st.accessors_scanned, 4);
    assert_int_equal(st.accessors_dangling, 1);
    assert_int_equal(count_db(f, KMS_DB_TOKENS), 2);
    assert_int_equal(count_db(f, KMS_DB_ACCESSORS), 2);
    assert_int_equal(kms_auth_token_lookup(f->auth, live, &l), 0);
    accessors_of(f, "Org111", list);
    assert_string_equal(list, "");
    /* the other namespace's tidy takes its own */
    assert_int_equal(kms_auth_token_tidy(f->auth, "Org111", false, &st), 0);
    assert_int_equal(st.scanned, 1);
    assert_int_equal(st.expired, 1);
    assert_int_equal(count_db(f, KMS_DB_TOKENS), 1);
    assert_int_equal(count_db(f, KMS_DB_ACCESSORS), 1);
    /* and the lock was given back: a tidy of a clean store finds nothing */
    assert_int_equal(kms_auth_token_tidy(f->auth, "root", true, &st), 0);
    assert_int_equal(st.scanned, 1);
    assert_int_equal(st.expired + st.parent_revoked + st.accessors_dangling, 0);
    assert_int_equal(st.accessors_scanned, 1);
}

/* ---- policy store and authorisation ------------------------------------------------------ */

static int collect(const char *name, void *arg)
{
    char *buf = arg;
    size_t n = strlen(buf);
    snprintf(buf + n, 512 - n, "%s,", name);
    return 0;
}

static bool authorized(struct fixture *f, const struct kms_token *t, const char *ns_path,
                       const char *tok_ns, const char *path, enum kms_op op)
{
    struct kms_auth_req req = {ns_path, tok_ns, path, op, false};
    struct kms_acl_result res;
    assert_int_equal(kms_auth_authorize(f->auth, t, &req, &res), 0);
    return res.allowed;
}

static void test_policy_store(void **state)
{
    struct fixture *f = *state;
    struct kms_err err;
    char *text = NULL;
    char list[512] = "";

    assert_int_equal(kms_auth_policy_put(f->auth, "root", "", "p1",
                                         "path \"transit/encrypt/+\" { capabilities = "
                                         "[\"update\"] }",
                                         &err),
                     0);
    assert_int_equal(kms_auth_policy_get(f->auth, "root", "p1", &text), 0);
    assert_non_null(strstr(text, "transit/encrypt/+"));
    free(text);
    assert_int_equal(kms_auth_policy_get(f->auth, "zzz999", "p1", &text), KMS_STORAGE_NOTFOUND);
    assert_int_equal(kms_auth_policy_list(f->auth, "root", true, collect, list), 0);
    assert_string_equal(list, "default,kms-developer,kms-manager,kms-viewer,p1,root,");
    list[0] = '\0';
    assert_int_equal(kms_auth_policy_list(f->auth, "zzz999", false, collect, list), 0);
    assert_string_equal(list, "default,kms-developer,kms-manager,kms-viewer,");

    assert_int_equal(kms_auth_policy_get(f->auth, "root", "root", &text), 0);
    assert_string_equal(text, "");
    free(text);
    assert_int_equal(kms_auth_policy_get(f->auth, "zzz999", "root", &text), KMS_STORAGE_NOTFOUND);
    assert_int_equal(kms_auth_policy_get(f->auth, "zzz999", "kms-viewer", &text), 0);
    free(text);

    assert_int_equal(kms_auth_policy_put(f->auth, "root", "", "root", "", &err), -1);
    assert_string_equal(err.msg, "cannot update \"root\" policy");
    assert_int_equal(kms_auth_policy_put(f->auth, "root", "", "kms-manager", "", &err), -1);
    assert_int_equal(err.status, 400);
    assert_string_equal(err.msg, "cannot update \"kms-manager\" policy");
    assert_int_equal(kms_auth_policy_delete(f->auth, "root", "default", &err), -1);
    assert_string_equal(err.msg, "cannot delete default policy");
    assert_int_equal(kms_auth_policy_delete(f->auth, "root", "root", &err), -1);
    assert_string_equal(err.msg, "cannot delete root policy");
    assert_int_equal(kms_auth_policy_delete(f->auth, "root", "kms-viewer", &err), -1);
    assert_int_equal(kms_auth_policy_put(f->auth, "root", "", "bad", "path \"x\" {", &err), -1);
    assert_int_equal(err.status, 400);
    assert_int_equal(kms_auth_policy_delete(f->auth, "root", "never-existed", &err), 0);

    /* decisions follow writes and deletes (the cache is invalidated) */
    const char *pols[] = {"default", "p1"};
    char tok[KMS_TOKEN_MAX_LEN];
    struct kms_token t;
    struct kms_token_spec spec = {.ns_id = "root",
                                  .path = "auth/token/create",
                                  .display_name = "t",
                                  .policies = pols,
                                  .npolicies = 2,
                                  .renewable = true};
    make_token(f, &spec, tok, &t);
    assert_true(authorized(f, &t, "", "", "transit/encrypt/k", KMS_OP_UPDATE));
    assert_false(authorized(f, &t, "", "", "transit/decrypt/k", KMS_OP_UPDATE));
    assert_true(authorized(f, &t, "", "", "auth/token/lookup-self", KMS_OP_READ));
    assert_int_equal(kms_auth_policy_put(f->auth, "root", "", "p1",
                                         "path \"transit/decrypt/+\" { capabilities = "
                                         "[\"update\"] }",
                                         &err),
                     0);
    assert_false(authorized(f, &t, "", "", "transit/encrypt/k", KMS_OP_UPDATE));
    assert_true(authorized(f, &t, "", "", "transit/decrypt/k", KMS_OP_UPDATE));
    assert_int_equal(kms_auth_policy_delete(f->auth, "root", "p1", &err), 0);
    assert_false(authorized(f, &t, "", "", "transit/decrypt/k", KMS_OP_UPDATE));
    /* default is editable; the stored text replaces the built-in one */
    assert_int_equal(kms_auth_policy_put(f->auth, "root", "", "default",
                                         "path \"sys/x\" { capabilities = [\"read\"] }", &err),
                     0);
    assert_false(authorized(f, &t, "", "", "auth/token/lookup-self", KMS_OP_READ));
    assert_true(authorized(f, &t, "", "", "sys/x", KMS_OP_READ));
    assert_int_equal(kms_auth_policy_get(f->auth, "root", "default", &text), 0);
    assert_string_equal(text, "path \"sys/x\" { capabilities = [\"read\"] }");
    free(text);
}

static void test_authorize_namespaces(void **state)
{
    struct fixture *f = *state;
    struct kms_txn *txn = NULL;
    struct kms_err err;
    char root[KMS_TOKEN_MAX_LEN];
    char tok[KMS_TOKEN_MAX_LEN];
    struct kms_token r, t;

    assert_int_equal(kms_storage_txn_begin(f->st, true, &txn), 0);
    assert_int_equal(kms_auth_token_create_root(f->auth, txn, "rt", root, &err), 0);
    assert_int_equal(kms_storage_txn_commit(&txn), 0);
    assert_int_equal(kms_auth_token_lookup(f->auth, "rt", &r), 0);
    /* root works in its namespace and every descendant */
    assert_true(authorized(f, &r, "", "", "anything", KMS_OP_DELETE));
    assert_true(authorized(f, &r, "org1/", "", "transit/keys/k", KMS_OP_DELETE));

    /* org1 token with the built-in developer policy */
    const char *pols[] = {"default", "kms-developer"};
    struct kms_token_spec spec = {.ns_id = "Org001",
                                  .path = "auth/k8s-host/login",
                                  .display_name = "t",
                                  .policies = pols,
                                  .npolicies = 2,
                                  .renewable = true};
    make_token(f, &spec, tok, &t);
    assert_true(authorized(f, &t, "org1/", "org1/", "transit/encrypt/k", KMS_OP_UPDATE));
    assert_false(authorized(f, &t, "org1/", "org1/", "transit/encrypt/k", KMS_OP_CREATE));
    /* in its parent (root) and in a sibling: never */
    assert_false(authorized(f, &t, "", "org1/", "transit/encrypt/k", KMS_OP_UPDATE));
    assert_false(authorized(f, &t, "org2/", "org1/", "transit/encrypt/k", KMS_OP_UPDATE));
    assert_false(authorized(f, &t, "org10/", "org1/", "transit/encrypt/k", KMS_OP_UPDATE));
    /* in a child namespace its patterns (org1/transit/...) do not match org1/team/transit */
    assert_false(authorized(f, &t, "org1/team/", "org1/", "transit/encrypt/k", KMS_OP_UPDATE));

    /* a root-namespace policy naming +/transit reaches org1 */
    assert_int_equal(kms_auth_policy_put(f->auth, "root", "", "ctrl",
                                         "path \"+/transit/*\" { capabilities = [\"read\"] }",
                                         &err),
                     0);
    const char *cp[] = {"ctrl"};
    spec.ns_id = "root";
    spec.policies = cp;
    spec.npolicies = 1;
    make_token(f, &spec, tok, &t);
    assert_true(authorized(f, &t, "org1/", "", "transit/keys/k", KMS_OP_READ));
    assert_false(authorized(f, &t, "", "", "transit/keys/k", KMS_OP_READ));
    /* the same policy name in org1 is a different policy */
    spec.ns_id = "Org001";
    make_token(f, &spec, tok, &t);
    assert_false(authorized(f, &t, "org1/", "org1/", "transit/keys/k", KMS_OP_READ));

    /* sudo routes need sudo */
    struct kms_auth_req req = {"", "", "sys/auth/k8s", KMS_OP_UPDATE, true};
    struct kms_acl_result res;
    assert_int_equal(kms_auth_policy_put(f->auth, "root", "", "admin",
                                         "path \"sys/auth/*\" { capabilities = [\"update\"] }",
                                         &err),
                     0);
    const char *ap[] = {"admin"};
    spec.ns_id = "root";
    spec.policies = ap;
    make_token(f, &spec, tok, &t);
    assert_int_equal(kms_auth_authorize(f->auth, &t, &req, &res), 0);
    assert_false(res.allowed);
    req.sudo = false;
    assert_int_equal(kms_auth_authorize(f->auth, &t, &req, &res), 0);
    assert_true(res.allowed);
    assert_int_equal(res.ngranting, 1);
    assert_string_equal(res.granting[0], "admin");

    bool ok = false;
    assert_int_equal(kms_auth_check(f->auth, &r, "", "", "x", KMS_OP_READ, &ok), 0);
    assert_true(ok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_human_duration),
        cmocka_unit_test(test_ttl_arithmetic),
        cmocka_unit_test(test_policies_normalize),
        cmocka_unit_test_setup_teardown(test_root_and_format, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expiry_revoke_cascade, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clock_renew_max_ttl, setup, teardown),
        cmocka_unit_test_setup_teardown(test_legacy_records_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_renew_and_uses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revoke_orphan, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tidy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_policy_store, setup, teardown),
        cmocka_unit_test_setup_teardown(test_authorize_namespaces, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
