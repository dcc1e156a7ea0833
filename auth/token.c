/*
 * token.c - the token store.
 *
 * A token is never stored: its record key is HMAC-SHA256(token_key, token), where token_key
 * is a random 32-byte value kept (sealed) in the meta database. Looking a token up is then
 * one keyed hash and one LMDB read, so timing reveals nothing about partial matches. The
 * record value is a small JSON document (sealed by storage like every record) with the
 * accessor, policies, metadata and lease. Accessors are indexed the same way:
 * HMAC(token_key, "accessor/" + accessor) -> token hash.
 *
 * Expiry and revocation are lazy: a record past its expiry, or one whose parent record is gone
 * or expired (revoking a token revokes its children), reads as not found and is deleted on the
 * way. Login tokens are orphans, so the parent walk only costs anything for child tokens made
 * with auth/token/create. A tidy (kms_auth_token_tidy) removes the dead records no lookup
 * meets any more. There is no parent -> children index: revoke-orphan finds the children of a
 * token by a scan of the records and drops their parent link in the same write transaction.
 *
 * Time comes from the store's clock (kms_auth_set_clock; the wall clock by default) in
 * milliseconds, so a token with a ttl of N seconds lives N seconds from its creation, not
 * until the end of a whole second. Records keep Vault's whole-second "creation_time" and
 * "expire_time" (what lookup shows) and add "creation_ms" and "expire_ms", which decide
 * expiry and the max_ttl cap; a record written before those fields existed is read with its
 * whole seconds, as it was written.
 *
 * TTLs follow Vault's sdk/framework CalculateTTL (reference auth-audit.md §3.2); the one
 * deliberate difference is the default TTL of 1 h instead of 768 h (docs/auth.md).
 */
#include "auth/auth_int.h"

#include <ctype.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define TOKEN_KEY_META "token_hmac_key"
#define MAX_PARENT_DEPTH 16

static const char *const op_names[] = {
    [KMS_OP_READ] = "read",     [KMS_OP_LIST] = "list",     [KMS_OP_CREATE] = "create",
    [KMS_OP_UPDATE] = "update", [KMS_OP_DELETE] = "delete", [KMS_OP_PATCH] = "patch",
};

const char *kms_op_name(enum kms_op op)
{
    return op_names[op];
}

struct kms_tok_cache;
static struct kms_tok_cache *tc_create(void);
static int64_t token_now_ms(const struct kms_auth *auth);
static void tc_destroy(struct kms_tok_cache **tcp);
static void tc_bump(struct kms_auth *auth);

int kms_auth_create(struct kms_storage *st, struct kms_auth **out, struct kms_err *err)
{
    struct kms_auth *auth = NULL;
    struct kms_txn *txn = NULL;
    uint8_t *val = NULL;
    size_t vallen = 0;
    int rc = -1;

    auth = calloc(1, sizeof(*auth));
    if (auth == NULL) {
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    auth->st = st;
    auth->tok_cache = tc_create();
    if (auth->tok_cache == NULL) {
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    pthread_rwlock_init(&auth->pol_lock, NULL);
    if (kms_storage_txn_begin(st, true, &txn) != 0) {
        kms_err_set(err, 500, "cannot open storage transaction");
        goto out;
    }
    /* insert-if-absent: replicas racing at first start all end up with the one stored key */
    if (kms_rand_bytes(auth->token_key, sizeof(auth->token_key)) != 0) {
        kms_err_set(err, 500, "cannot create the token key");
        goto out;
    }
    int g = kms_storage_put_if_absent(txn, KMS_DB_META, TOKEN_KEY_META, strlen(TOKEN_KEY_META),
                                      auth->token_key, sizeof(auth->token_key), &val, &vallen);
    if (g == 1 && vallen == sizeof(auth->token_key)) {
        memcpy(auth->token_key, val, vallen);
        kms_storage_txn_abort(&txn);
    } else if (g == 0) {
        if (kms_storage_txn_commit(&txn) != 0) {
            kms_err_set(err, 500, "cannot create the token key");
            goto out;
        }
    } else {
        kms_err_set(err, 500, "cannot read the token key");
        goto out;
    }
    if (kms_hmac_key_create(auth->token_key, sizeof(auth->token_key), &auth->token_hkey) != 0) {
        kms_err_set(err, 500, "cannot prepare the token key");
        goto out;
    }
    *out = auth;
    auth = NULL;
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    kms_free_wipe((void **)&val, vallen);
    kms_auth_destroy(&auth);
    return rc;
}

void kms_auth_destroy(struct kms_auth **auth)
{
    if (*auth == NULL) {
        return;
    }
    kms_auth_policy_cache_clear(*auth);
    tc_destroy(&(*auth)->tok_cache);
    kms_hmac_key_destroy(&(*auth)->token_hkey);
    pthread_rwlock_destroy(&(*auth)->pol_lock);
    kms_memzero(*auth, sizeof(**auth));
    free(*auth);
    *auth = NULL;
}

static int token_hash(const struct kms_auth *auth, const char *token, uint8_t out[32])
{
    return kms_hmac_key_mac(auth->token_hkey, token, strlen(token), out);
}

static int accessor_hash(const struct kms_auth *auth, const char *accessor, uint8_t out[32])
{
    char buf[96];
    int n = snprintf(buf, sizeof(buf), "accessor/%s", accessor);
    if (n < 0 || (size_t)n >= sizeof(buf)) {
        return -1;
    }
    return kms_hmac_key_mac(auth->token_hkey, buf, (size_t)n, out);
}

/* Custom ids: printable ASCII, no '.', not Vault's own prefixes. */
static bool token_valid_custom_id(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n >= KMS_TOKEN_MAX_LEN || strchr(id, '.') != NULL || strncmp(id, "s.", 2) == 0 ||
        strncmp(id, "hvs.", 4) == 0) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)id[i];
        if (ch < 0x21 || ch > 0x7e) {
            return false;
        }
    }
    return true;
}

int kms_auth_token_create_root(struct kms_auth *auth, struct kms_txn *txn, const char *id,
                               char *out, struct kms_err *err)
{
    char token[KMS_TOKEN_MAX_LEN];
    char accessor[25];
    uint8_t hash[32];
    uint8_t ahash[32];
    json_t *rec = NULL;
    char *text = NULL;
    int rc = -1;

    if (id != NULL) {
        if (!token_valid_custom_id(id)) {
            kms_err_set(err, 400,
                        "invalid root token id: it must be printable ASCII without "
                        "'.' and shorter than %d characters",
                        KMS_TOKEN_MAX_LEN);
            goto out;
        }
        snprintf(token, sizeof(token), "%s", id);
    } else {
        token[0] = 's';
        token[1] = '.';
        if (kms_rand_base62(token + 2, 24) != 0) {
            kms_err_set(err, 500, "cannot generate a token");
            goto out;
        }
    }
    if (kms_rand_base62(accessor, 24) != 0 || token_hash(auth, token, hash) != 0 ||
        accessor_hash(auth, accessor, ahash) != 0) {
        kms_err_set(err, 500, "cannot generate a token");
        goto out;
    }
    int64_t now_ms = token_now_ms(auth);
    rec = json_pack("{s:s, s:s, s:s, s:s, s:s, s:[s], s:I, s:I, s:I, s:b}", "accessor", accessor,
                    "display_name", "root", "subject", "root", "namespace_id", "root", "path",
                    "auth/token/root", "policies", "root", "creation_time",
                    (json_int_t)(now_ms / 1000), "creation_ms", (json_int_t)now_ms, "expire_time",
                    (json_int_t)0, "renewable", false);
    text = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
    if (text == NULL ||
        kms_storage_put(txn, KMS_DB_TOKENS, hash, sizeof(hash), text, strlen(text)) != 0 ||
        kms_storage_put(txn, KMS_DB_ACCESSORS, ahash, sizeof(ahash), hash, sizeof(hash)) != 0) {
        kms_err_set(err, 500, "cannot store the root token");
        goto out;
    }
    snprintf(out, KMS_TOKEN_MAX_LEN, "%s", token);
    rc = 0;
out:
    kms_memzero(token, sizeof(token));
    kms_memzero(hash, sizeof(hash));
    json_decref(rec);
    free(text);
    return rc;
}

/* ---- records ----------------------------------------------------------------------------- */

static void copy_str(char *dst, size_t n, const json_t *v)
{
    const char *s = json_is_string(v) ? json_string_value(v) : "";
    snprintf(dst, n, "%s", s);
}

static int64_t get_int(const json_t *rec, const char *key)
{
    return json_integer_value(json_object_get(rec, key));
}

/* A time in ms from `ms_key`, or from the whole seconds of `sec_key` in older records. */
static int64_t get_ms(const json_t *rec, const char *ms_key, const char *sec_key)
{
    const json_t *ms = json_object_get(rec, ms_key);
    if (json_is_integer(ms)) {
        return json_integer_value(ms);
    }
    return get_int(rec, sec_key) * 1000;
}

static int64_t expire_ms(const json_t *rec)
{
    return get_ms(rec, "expire_ms", "expire_time");
}

/* Record JSON -> struct (hash not touched). */
static void fill_token(const json_t *rec, struct kms_token *out)
{
    size_t i;
    json_t *v;
    const char *k;

    copy_str(out->accessor, sizeof(out->accessor), json_object_get(rec, "accessor"));
    copy_str(out->display_name, sizeof(out->display_name), json_object_get(rec, "display_name"));
    copy_str(out->subject, sizeof(out->subject), json_object_get(rec, "subject"));
    if (out->subject[0] == '\0') {
        snprintf(out->subject, sizeof(out->subject), "%s", out->display_name);
    }
    copy_str(out->ns_id, sizeof(out->ns_id), json_object_get(rec, "namespace_id"));
    copy_str(out->path, sizeof(out->path), json_object_get(rec, "path"));
    copy_str(out->entity_id, sizeof(out->entity_id), json_object_get(rec, "entity_id"));
    copy_str(out->role, sizeof(out->role), json_object_get(rec, "role"));
    out->creation_time = get_int(rec, "creation_time");
    out->expire_time = get_int(rec, "expire_time");
    out->expire_ms = expire_ms(rec);
    out->creation_ttl = get_int(rec, "creation_ttl");
    out->ttl = get_int(rec, "ttl");
    out->max_ttl = get_int(rec, "max_ttl");
    out->explicit_max_ttl = get_int(rec, "explicit_max_ttl");
    out->period = get_int(rec, "period");
    out->last_renewal = get_int(rec, "last_renewal");
    out->num_uses = get_int(rec, "num_uses");
    out->renewable = json_is_true(json_object_get(rec, "renewable"));
    out->orphan = json_object_get(rec, "parent") == NULL;
    out->npolicies = 0;
    json_array_foreach(json_object_get(rec, "policies"), i, v)
    {
        if (out->npolicies == KMS_TOKEN_MAX_POLICIES) {
            break;
        }
        copy_str(out->policies[out->npolicies], sizeof(out->policies[0]), v);
        if (strcmp(out->policies[out->npolicies], "root") == 0) {
            out->root = true;
        }
        out->npolicies++;
    }
    out->nmeta = 0;
    json_object_foreach(json_object_get(rec, "meta"), k, v)
    {
        if (out->nmeta == KMS_TOKEN_MAX_META) {
            break;
        }
        snprintf(out->meta_keys[out->nmeta], sizeof(out->meta_keys[0]), "%s", k);
        copy_str(out->meta_values[out->nmeta], sizeof(out->meta_values[0]), v);
        out->nmeta++;
    }
    out->ncidrs = 0;
    json_array_foreach(json_object_get(rec, "cidrs"), i, v)
    {
        if (out->ncidrs == KMS_TOKEN_MAX_CIDRS) {
            break;
        }
        copy_str(out->cidrs[out->ncidrs], sizeof(out->cidrs[0]), v);
        out->ncidrs++;
    }
}

/* Read and parse the record of `hash`; 0, KMS_STORAGE_NOTFOUND or -1. */
static int load_record(struct kms_txn *txn, const uint8_t hash[32], json_t **rec)
{
    uint8_t *val = NULL;
    size_t vallen = 0;
    int rc;

    *rec = NULL;
    rc = kms_storage_get(txn, KMS_DB_TOKENS, hash, 32, &val, &vallen);
    if (rc != 0) {
        return rc;
    }
    *rec = json_loadb((const char *)val, vallen, 0, NULL);
    kms_free_wipe((void **)&val, vallen);
    if (!json_is_object(*rec)) {
        json_decref(*rec);
        *rec = NULL;
        return -1;
    }
    return 0;
}

static bool expired(const json_t *rec, int64_t now_ms)
{
    int64_t exp = expire_ms(rec);
    return exp != 0 && now_ms >= exp;
}

/*
 * Is the record alive: unexpired, and every ancestor present and unexpired? 1 alive, 0 dead,
 * -1 on storage failure. When alive, *dies_ms is the earliest expiry along the chain (0 =
 * never): the token dies with the first ancestor that expires.
 */
static int record_alive(struct kms_txn *txn, const json_t *rec, int64_t now_ms, int64_t *dies_ms)
{
    json_t *cur = NULL;
    const json_t *r = rec;
    int rc = 1;

    *dies_ms = 0;
    for (int depth = 0;; depth++) {
        if (expired(r, now_ms)) {
            rc = 0;
            break;
        }
        int64_t exp = expire_ms(r);
        if (exp != 0 && (*dies_ms == 0 || exp < *dies_ms)) {
            *dies_ms = exp;
        }
        const char *parent = json_string_value(json_object_get(r, "parent"));
        if (parent == NULL) {
            break;
        }
        uint8_t ph[32];
        if (depth == MAX_PARENT_DEPTH || strlen(parent) != 64 ||
            kms_hex_decode(parent, 64, ph) != 0) {
            rc = 0;
            break;
        }
        json_t *next = NULL;
        int g = load_record(txn, ph, &next);
        json_decref(cur);
        cur = next;
        if (g == KMS_STORAGE_NOTFOUND) {
            rc = 0;
            break;
        }
        if (g != 0) {
            rc = -1;
            break;
        }
        r = cur;
    }
    json_decref(cur);
    return rc;
}

/* Delete a token record and its accessor entry inside txn. */
static int delete_record(struct kms_auth *auth, struct kms_txn *txn, const uint8_t hash[32],
                         const json_t *rec)
{
    uint8_t ahash[32];
    const char *acc = json_string_value(json_object_get(rec, "accessor"));
    if (acc != NULL && accessor_hash(auth, acc, ahash) == 0 &&
        kms_storage_del(txn, KMS_DB_ACCESSORS, ahash, sizeof(ahash)) < 0) {
        return -1;
    }
    return kms_storage_del(txn, KMS_DB_TOKENS, hash, 32) < 0 ? -1 : 0;
}

/* Best-effort removal of a dead record found by a reader. */
static void reap(struct kms_auth *auth, const uint8_t hash[32])
{
    struct kms_txn *txn = NULL;
    json_t *rec = NULL;
    if (kms_storage_txn_begin(auth->st, true, &txn) == 0 && load_record(txn, hash, &rec) == 0 &&
        delete_record(auth, txn, hash, rec) == 0) {
        int crc = kms_storage_txn_commit(&txn);
        (void)crc; /* best effort: a reader retries the reap next time */
        tc_bump(auth);
    }
    kms_storage_txn_abort(&txn);
    json_decref(rec);
}

/* Look up by hash: 0 alive (out filled), KMS_STORAGE_NOTFOUND, -1. */
/*
 * A small cache of looked-up tokens, so the token check of every request is one keyed hash
 * and a table probe instead of an LMDB read, an unseal and a JSON parse. Each entry carries
 * the token store's generation, which every committed update or deletion of a token record
 * advances (revoke, renew, use counts, reaping); an entry from an older generation is never
 * used, so a revoked token is refused at once. Tokens with a use count are never cached, and
 * expiry is checked on every hit against the earliest expiry of the token and its ancestors
 * (a parent's expiry is not a write). A reader takes the generation before it reads storage, so
 * a read that raced with a write is stored with the older generation and ignored.
 */
#define TC_STRIPES 64
#define TC_WAYS 8

struct tc_entry {
    uint8_t hash[32];
    uint64_t gen;
    int64_t dies_ms; /* earliest expiry of the token and its ancestors, 0 = never */
    struct kms_token tok;
};

struct tc_stripe {
    pthread_mutex_t lock;
    struct tc_entry *e[TC_WAYS];
    size_t next;
};

/* The cache also holds the token store's clock: its layout is private to this file. */
struct kms_tok_cache {
    _Atomic uint64_t gen;
    atomic_bool tidying; /* a kms_auth_token_tidy is running (OpenBao's tidyLock) */
    struct tc_stripe s[TC_STRIPES];
    int64_t (*now_ms)(void *arg); /* NULL = the wall clock */
    void *clock_arg;
};

static int64_t token_now_ms(const struct kms_auth *auth)
{
    const struct kms_tok_cache *tc = auth->tok_cache;
    if (tc->now_ms != NULL) {
        return tc->now_ms(tc->clock_arg);
    }
    int64_t sec;
    int32_t nsec;
    kms_now(&sec, &nsec);
    return sec * 1000 + nsec / 1000000;
}

void kms_auth_set_clock(struct kms_auth *auth, int64_t (*now_ms)(void *arg), void *arg)
{
    auth->tok_cache->now_ms = now_ms;
    auth->tok_cache->clock_arg = now_ms != NULL ? arg : NULL;
}

static struct kms_tok_cache *tc_create(void)
{
    struct kms_tok_cache *tc = calloc(1, sizeof(*tc));
    for (size_t i = 0; tc != NULL && i < TC_STRIPES; i++) {
        pthread_mutex_init(&tc->s[i].lock, NULL);
    }
    return tc;
}

static void tc_destroy(struct kms_tok_cache **tcp)
{
    struct kms_tok_cache *tc = *tcp;
    if (tc == NULL) {
        return;
    }
    for (size_t i = 0; i < TC_STRIPES; i++) {
        for (size_t w = 0; w < TC_WAYS; w++) {
            kms_free_wipe((void **)&tc->s[i].e[w], sizeof(struct tc_entry));
        }
        pthread_mutex_destroy(&tc->s[i].lock);
    }
    free(tc);
    *tcp = NULL;
}

/* After a committed write to the token store. */
static void tc_bump(struct kms_auth *auth)
{
    atomic_fetch_add(&auth->tok_cache->gen, 1);
}

static bool tc_get(struct kms_auth *auth, const uint8_t hash[32], int64_t now_ms,
                   struct kms_token *out)
{
    struct kms_tok_cache *tc = auth->tok_cache;
    struct tc_stripe *st = &tc->s[hash[0] % TC_STRIPES];
    uint64_t gen = atomic_load(&tc->gen);
    bool hit = false;
    pthread_mutex_lock(&st->lock);
    for (size_t w = 0; w < TC_WAYS; w++) {
        struct tc_entry *e = st->e[w];
        if (e != NULL && e->gen == gen && kms_ct_eq(e->hash, hash, 32)) {
            if (e->dies_ms == 0 || now_ms < e->dies_ms) {
                *out = e->tok;
                hit = true;
            }
            break;
        }
    }
    pthread_mutex_unlock(&st->lock);
    return hit;
}

static void tc_put(struct kms_auth *auth, const uint8_t hash[32], uint64_t gen, int64_t dies_ms,
                   const struct kms_token *tok)
{
    struct kms_tok_cache *tc = auth->tok_cache;
    struct tc_stripe *st = &tc->s[hash[0] % TC_STRIPES];
    if (tok->num_uses != 0) {
        return;
    }
    pthread_mutex_lock(&st->lock);
    size_t slot = TC_WAYS;
    for (size_t w = 0; w < TC_WAYS; w++) {
        if (st->e[w] != NULL && kms_ct_eq(st->e[w]->hash, hash, 32)) {
            slot = w;
            break;
        }
    }
    if (slot == TC_WAYS) {
        slot = st->next;
        st->next = (st->next + 1) % TC_WAYS;
    }
    if (st->e[slot] == NULL) {
        st->e[slot] = malloc(sizeof(struct tc_entry));
    }
    if (st->e[slot] != NULL) {
        memcpy(st->e[slot]->hash, hash, 32);
        st->e[slot]->gen = gen;
        st->e[slot]->dies_ms = dies_ms;
        st->e[slot]->tok = *tok;
    }
    pthread_mutex_unlock(&st->lock);
}

static int lookup_hash(struct kms_auth *auth, const uint8_t hash[32], struct kms_token *out)
{
    struct kms_txn *txn = NULL;
    json_t *rec = NULL;
    int rc = -1;

    int64_t now_ms = token_now_ms(auth);
    if (tc_get(auth, hash, now_ms, out)) {
        return 0; /* the whole of *out copied from the cache */
    }
    memset(out, 0, sizeof(*out));
    uint64_t gen = atomic_load(&auth->tok_cache->gen);
    if (kms_storage_txn_begin(auth->st, false, &txn) != 0) {
        goto out;
    }
    rc = load_record(txn, hash, &rec);
    if (rc != 0) {
        goto out;
    }
    int64_t dies_ms;
    int alive = record_alive(txn, rec, now_ms, &dies_ms);
    kms_storage_txn_abort(&txn);
    if (alive < 0) {
        rc = -1;
        goto out;
    }
    if (alive == 0) {
        reap(auth, hash);
        rc = KMS_STORAGE_NOTFOUND;
        goto out;
    }
    fill_token(rec, out);
    memcpy(out->hash, hash, 32);
    tc_put(auth, hash, gen, dies_ms, out);
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    json_decref(rec);
    if (rc != 0) {
        kms_memzero(out, sizeof(*out));
    }
    return rc;
}

int kms_auth_token_lookup(struct kms_auth *auth, const char *token, struct kms_token *out)
{
    uint8_t hash[32];
    int rc = KMS_STORAGE_NOTFOUND;

    /* *out is written whole: by the cache, by the record, or zeroed on a failure (a token is
     * looked up per request: no memset of its ~8 KB ahead of that) */
    if (token == NULL || token[0] == '\0' || strlen(token) >= KMS_TOKEN_MAX_LEN) {
        goto out;
    }
    if (token_hash(auth, token, hash) != 0) {
        rc = -1;
        goto out;
    }
    rc = lookup_hash(auth, hash, out);
out:
    if (rc != 0) {
        memset(out, 0, sizeof(*out));
    }
    kms_memzero(hash, sizeof(hash));
    return rc;
}

int kms_auth_token_lookup_accessor(struct kms_auth *auth, const char *accessor,
                                   struct kms_token *out)
{
    uint8_t ahash[32];
    uint8_t *val = NULL;
    size_t vallen = 0;
    struct kms_txn *txn = NULL;
    int rc = KMS_STORAGE_NOTFOUND;

    memset(out, 0, sizeof(*out));
    if (accessor == NULL || accessor[0] == '\0' || strlen(accessor) >= 64) {
        goto out;
    }
    if (accessor_hash(auth, accessor, ahash) != 0 ||
        kms_storage_txn_begin(auth->st, false, &txn) != 0) {
        rc = -1;
        goto out;
    }
    rc = kms_storage_get(txn, KMS_DB_ACCESSORS, ahash, sizeof(ahash), &val, &vallen);
    kms_storage_txn_abort(&txn);
    if (rc != 0) {
        goto out;
    }
    if (vallen != 32) {
        rc = -1;
        goto out;
    }
    rc = lookup_hash(auth, val, out);
out:
    kms_storage_txn_abort(&txn);
    kms_free_wipe((void **)&val, vallen);
    return rc;
}

bool kms_auth_token_cidr_ok(const struct kms_token *tok, const char *remote_addr)
{
    if (tok->ncidrs == 0) {
        return true;
    }
    for (size_t i = 0; i < tok->ncidrs; i++) {
        if (remote_addr != NULL && kms_cidr_contains(tok->cidrs[i], remote_addr)) {
            return true;
        }
    }
    return false;
}

/* ---- TTL arithmetic ---------------------------------------------------------------------- */

void kms_auth_human_duration(int64_t s, char out[32])
{
    char buf[64];
    if (s <= 0) {
        snprintf(out, 32, "0s");
        return;
    }
    int64_t h = s / 3600;
    int64_t m = (s % 3600) / 60;
    int64_t sec = s % 60;
    if (h > 0) {
        snprintf(buf, sizeof(buf), "%lldh%lldm%llds", (long long)h, (long long)m, (long long)sec);
    } else if (m > 0) {
        snprintf(buf, sizeof(buf), "%lldm%llds", (long long)m, (long long)sec);
    } else {
        snprintf(buf, sizeof(buf), "%llds", (long long)sec);
    }
    size_t n = strlen(buf);
    if (n >= 3 && strcmp(buf + n - 3, "m0s") == 0) {
        buf[n - 2] = '\0';
    }
    char *hz = strstr(buf, "h0m");
    if (hz != NULL && hz > buf) {
        memmove(hz + 1, hz + 3, strlen(hz + 3) + 1);
    }
    size_t len = strlen(buf);
    if (len > 31) {
        len = 31;
    }
    memcpy(out, buf, len);
    out[len] = '\0';
}

int kms_auth_ttl(const struct kms_ttl_req *r, int64_t *lease_ms_out, char *warning, size_t wlen,
                 struct kms_err *err)
{
    char a[32];
    char b[32];
    int64_t max = r->system_max;
    int64_t ttl;
    int64_t max_valid_ms = 0;
    bool have_max_valid = false;

    if (warning != NULL && wlen > 0) {
        warning[0] = '\0';
    }
    if (r->max_ttl > 0 && r->max_ttl < max) {
        max = r->max_ttl;
    }
    if (r->explicit_max_ttl > 0 && r->explicit_max_ttl < max) {
        max = r->explicit_max_ttl;
    }
    if (r->period > 0) {
        int64_t period = r->period;
        if (period > max) {
            kms_auth_human_duration(period, a);
            kms_auth_human_duration(max, b);
            if (warning != NULL) {
                snprintf(warning, wlen,
                         "period of \"%s\" exceeded the effective max_ttl of \"%s\"; period value "
                         "is capped accordingly",
                         a, b);
            }
            period = max;
        }
        ttl = period;
        if (r->explicit_max_ttl > 0) {
            max_valid_ms = r->start_ms + r->explicit_max_ttl * 1000;
            have_max_valid = true;
        }
    } else {
        ttl = r->increment > 0 ? r->increment : r->ttl > 0 ? r->ttl : r->default_ttl;
        max_valid_ms = r->start_ms + max * 1000;
        have_max_valid = true;
    }
    int64_t lease_ms = ttl * 1000;
    if (have_max_valid) {
        int64_t left_ms = max_valid_ms - r->now_ms;
        if (left_ms <= 0) {
            return kms_err_set(err, 400, "past the max TTL, cannot renew");
        }
        if (lease_ms > left_ms) {
            kms_auth_human_duration(ttl, a);
            kms_auth_human_duration(left_ms / 1000, b);
            if (warning != NULL) {
                snprintf(warning, wlen,
                         "TTL of \"%s\" exceeded the effective max_ttl of \"%s\"; TTL value is "
                         "capped accordingly",
                         a, b);
            }
            lease_ms = left_ms;
        }
    }
    *lease_ms_out = lease_ms;
    return 0;
}

/* ---- policies ---------------------------------------------------------------------------- */

static int cmp_name(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

int kms_auth_policies_normalize(const char *const *in, size_t n, bool add_default,
                                char out[][KMS_POLICY_NAME_MAX])
{
    size_t k = 0;
    bool have_default = false;

    for (size_t i = 0; i < n; i++) {
        const char *p = in[i];
        while (*p != '\0' && isspace((unsigned char)*p)) {
            p++;
        }
        size_t len = strlen(p);
        while (len > 0 && isspace((unsigned char)p[len - 1])) {
            len--;
        }
        if (len == 0) {
            continue;
        }
        if (len >= KMS_POLICY_NAME_MAX) {
            return -1;
        }
        char name[KMS_POLICY_NAME_MAX];
        for (size_t j = 0; j < len; j++) {
            name[j] = (char)tolower((unsigned char)p[j]);
        }
        name[len] = '\0';
        if (strcmp(name, "root") == 0) {
            /* Vault: root wipes every other policy. */
            snprintf(out[0], KMS_POLICY_NAME_MAX, "root");
            return 1;
        }
        have_default = have_default || strcmp(name, "default") == 0;
        bool dup = false;
        for (size_t j = 0; j < k; j++) {
            dup = dup || strcmp(out[j], name) == 0;
        }
        if (dup) {
            continue;
        }
        if (k == KMS_TOKEN_MAX_POLICIES) {
            return -1;
        }
        memcpy(out[k++], name, len + 1);
    }
    if (add_default && !have_default) {
        if (k == KMS_TOKEN_MAX_POLICIES) {
            return -1;
        }
        snprintf(out[k++], KMS_POLICY_NAME_MAX, "default");
    }
    qsort(out, k, KMS_POLICY_NAME_MAX, cmp_name);
    return (int)k;
}

/* ---- create / renew / revoke ------------------------------------------------------------- */

static int put_record(struct kms_txn *txn, const uint8_t hash[32], const json_t *rec)
{
    char *text = json_dumps(rec, JSON_COMPACT);
    int rc = -1;
    if (text != NULL) {
        rc = kms_storage_put(txn, KMS_DB_TOKENS, hash, 32, text, strlen(text));
        kms_memzero(text, strlen(text));
        free(text);
    }
    return rc;
}

/* The effective max of an auth mount: its tuned max_lease_ttl, never above the system's. */
static int64_t mount_max(int64_t tuned)
{
    return tuned > 0 && tuned < KMS_AUTH_SYSTEM_MAX_TTL ? tuned : KMS_AUTH_SYSTEM_MAX_TTL;
}

int kms_auth_token_create(struct kms_auth *auth, const struct kms_token_spec *spec, char *token_out,
                          struct kms_token *out, char *warning, size_t wlen, struct kms_err *err)
{
    char token[KMS_TOKEN_MAX_LEN];
    char accessor[64];
    char parent_hex[65];
    uint8_t hash[32];
    uint8_t ahash[32];
    json_t *rec = NULL;
    json_t *pols = NULL;
    json_t *meta = NULL;
    json_t *cidrs = NULL;
    struct kms_txn *txn = NULL;
    bool root = false;
    int64_t lease_ms = 0;
    int rc = -1;

    memset(token, 0, sizeof(token));
    if (warning != NULL && wlen > 0) {
        warning[0] = '\0';
    }
    bool in_root_ns = strcmp(spec->ns_id, "root") == 0;
    char suffix[20] = "";
    if (!in_root_ns) {
        snprintf(suffix, sizeof(suffix), ".%s", spec->ns_id);
    }
    if (spec->id != NULL) {
        if (!token_valid_custom_id(spec->id) ||
            strlen(spec->id) + strlen(suffix) >= KMS_TOKEN_MAX_LEN) {
            /* OpenBao's words for its rules; the others are kmsd's (a token travels in a
             * header, and the namespace suffix must fit) */
            const char *id = spec->id;
            if (strncmp(id, "hvs.", 4) == 0) {
                kms_err_set(err, 400, "custom token ID cannot have the 'hvs.' prefix");
            } else if (strncmp(id, "s.", 2) == 0) {
                kms_err_set(err, 400, "custom token ID cannot have the 's.' prefix");
            } else if (strchr(id, '.') != NULL) {
                kms_err_set(err, 400, "custom token ID cannot have a '.' in the value");
            } else {
                kms_err_set(err, 400,
                            "custom token ID must be 1 to %zu printable ASCII characters without "
                            "spaces",
                            KMS_TOKEN_MAX_LEN - 1 - strlen(suffix));
            }
            goto out;
        }
        size_t il = strlen(spec->id);
        memcpy(token, spec->id, il);
        memcpy(token + il, suffix, strlen(suffix) + 1);
    } else {
        token[0] = 's';
        token[1] = '.';
        if (kms_rand_base62(token + 2, 24) != 0) {
            kms_err_set(err, 500, "cannot generate a token");
            goto out;
        }
        snprintf(token + 26, sizeof(token) - 26, "%s", suffix);
    }
    if (kms_rand_base62(accessor, 24) != 0) {
        kms_err_set(err, 500, "cannot generate a token");
        goto out;
    }
    snprintf(accessor + 24, sizeof(accessor) - 24, "%s", suffix);
    if (token_hash(auth, token, hash) != 0 || accessor_hash(auth, accessor, ahash) != 0) {
        kms_err_set(err, 500, "cannot generate a token");
        goto out;
    }

    pols = json_array();
    meta = json_object();
    cidrs = json_array();
    if (pols == NULL || meta == NULL || cidrs == NULL) {
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < spec->npolicies; i++) {
        json_array_append_new(pols, json_string(spec->policies[i]));
        root = root || strcmp(spec->policies[i], "root") == 0;
    }
    for (size_t i = 0; i < spec->nmeta; i++) {
        json_object_set_new(meta, spec->meta_keys[i], json_string(spec->meta_values[i]));
    }
    for (size_t i = 0; i < spec->ncidrs; i++) {
        json_array_append_new(cidrs, json_string(spec->cidrs[i]));
    }

    int64_t now_ms = token_now_ms(auth);
    if (root && spec->ttl == 0 && spec->period == 0 && spec->explicit_max_ttl == 0) {
        lease_ms = 0; /* a root token without a requested lease never expires (Vault) */
    } else {
        struct kms_ttl_req tr = {
            .now_ms = now_ms,
            .start_ms = now_ms,
            .ttl = spec->ttl,
            .max_ttl = spec->max_ttl,
            .explicit_max_ttl = spec->explicit_max_ttl,
            .period = spec->period,
            .default_ttl =
                spec->mount_default_ttl > 0 ? spec->mount_default_ttl : KMS_AUTH_DEFAULT_TTL,
            .system_max = mount_max(spec->mount_max_ttl),
        };
        if (kms_auth_ttl(&tr, &lease_ms, warning, wlen, err) != 0) {
            goto out;
        }
    }

    int64_t exp_ms = lease_ms > 0 ? now_ms + lease_ms : 0;
    rec = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:O, s:O, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
        "s:I, s:I, s:b, s:s, s:s, s:O}",
        "accessor", accessor, "display_name", spec->display_name, "subject",
        spec->subject ? spec->subject : spec->display_name, "namespace_id", spec->ns_id, "path",
        spec->path, "policies", pols, "meta", meta, "creation_time", (json_int_t)(now_ms / 1000),
        "creation_ms", (json_int_t)now_ms, "expire_time", (json_int_t)(exp_ms / 1000), "expire_ms",
        (json_int_t)exp_ms, "creation_ttl", (json_int_t)(lease_ms / 1000), "ttl",
        (json_int_t)spec->ttl, "max_ttl", (json_int_t)spec->max_ttl, "explicit_max_ttl",
        (json_int_t)spec->explicit_max_ttl, "period", (json_int_t)spec->period, "num_uses",
        (json_int_t)spec->num_uses, "renewable", spec->renewable && lease_ms > 0, "entity_id",
        spec->entity_id ? spec->entity_id : "", "role", spec->role ? spec->role : "", "cidrs",
        cidrs);
    if (rec == NULL) {
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    if (spec->parent_hash != NULL) {
        kms_hex_encode(spec->parent_hash, 32, parent_hex);
        json_object_set_new(rec, "parent", json_string(parent_hex));
    }
    if (kms_storage_txn_begin(auth->st, true, &txn) != 0) {
        kms_err_set(err, 500, "cannot open storage transaction");
        goto out;
    }
    if (spec->id != NULL) {
        uint8_t *v = NULL;
        size_t vl = 0;
        int g = kms_storage_get(txn, KMS_DB_TOKENS, hash, sizeof(hash), &v, &vl);
        kms_free_wipe((void **)&v, vl);
        if (g != KMS_STORAGE_NOTFOUND) {
            kms_err_set(err, 400, "cannot create a token with a duplicate ID");
            goto out;
        }
    }
    if (put_record(txn, hash, rec) != 0 ||
        kms_storage_put(txn, KMS_DB_ACCESSORS, ahash, sizeof(ahash), hash, sizeof(hash)) != 0 ||
        kms_storage_txn_commit(&txn) != 0) {
        kms_err_set(err, 500, "cannot store the token");
        goto out;
    }
    memset(out, 0, sizeof(*out));
    fill_token(rec, out);
    memcpy(out->hash, hash, sizeof(hash));
    snprintf(token_out, KMS_TOKEN_MAX_LEN, "%s", token);
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    kms_memzero(token, sizeof(token));
    kms_memzero(hash, sizeof(hash));
    json_decref(rec);
    json_decref(pols);
    json_decref(meta);
    json_decref(cidrs);
    return rc;
}

int kms_auth_token_renew(struct kms_auth *auth, const struct kms_token *tok, int64_t increment,
                         const struct kms_token_ttl *cur, struct kms_token *out, char *warning,
                         size_t wlen, struct kms_err *err)
{
    struct kms_txn *txn = NULL;
    json_t *rec = NULL;
    int64_t lease_ms;
    int rc = -1;

    int64_t now_ms = token_now_ms(auth);
    if (kms_storage_txn_begin(auth->st, true, &txn) != 0) {
        kms_err_set(err, 500, "cannot open storage transaction");
        goto out;
    }
    int g = load_record(txn, tok->hash, &rec);
    if (g == KMS_STORAGE_NOTFOUND) {
        kms_err_set(err, 403, "permission denied");
        goto out;
    }
    if (g != 0) {
        kms_err_set(err, 500, "internal error");
        goto out;
    }
    int64_t dies_ms;
    int alive = record_alive(txn, rec, now_ms, &dies_ms);
    if (alive <= 0) {
        kms_err_set(err, alive < 0 ? 500 : 403, alive < 0 ? "internal error" : "permission denied");
        goto out;
    }
    if (expire_ms(rec) == 0 || !json_is_true(json_object_get(rec, "renewable"))) {
        kms_err_set(err, 400, "lease is not renewable");
        goto out;
    }
    struct kms_ttl_req tr = {
        .now_ms = now_ms,
        .start_ms = get_ms(rec, "creation_ms", "creation_time"),
        .increment = increment,
        .ttl = cur ? cur->ttl : get_int(rec, "ttl"),
        .max_ttl = cur ? cur->max_ttl : get_int(rec, "max_ttl"),
        .explicit_max_ttl = get_int(rec, "explicit_max_ttl"),
        .period = cur ? cur->period : get_int(rec, "period"),
        .default_ttl = cur != NULL && cur->mount_default_ttl > 0 ? cur->mount_default_ttl
                                                                 : KMS_AUTH_DEFAULT_TTL,
        .system_max = mount_max(cur != NULL ? cur->mount_max_ttl : 0),
    };
    if (kms_auth_ttl(&tr, &lease_ms, warning, wlen, err) != 0) {
        goto out;
    }
    json_object_set_new(rec, "expire_time", json_integer((now_ms + lease_ms) / 1000));
    json_object_set_new(rec, "expire_ms", json_integer(now_ms + lease_ms));
    json_object_set_new(rec, "last_renewal", json_integer(now_ms / 1000));
    if (put_record(txn, tok->hash, rec) != 0) {
        kms_err_set(err, 500, "internal error");
        goto out;
    }
    int crc = kms_storage_txn_commit(&txn);
    tc_bump(auth); /* whatever the commit's outcome, as in the revocation below */
    if (crc != 0) {
        kms_err_set(err, 500, "internal error");
        goto out;
    }
    memset(out, 0, sizeof(*out));
    fill_token(rec, out);
    memcpy(out->hash, tok->hash, 32);
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    json_decref(rec);
    return rc;
}

int kms_auth_token_revoke(struct kms_auth *auth, const uint8_t hash[32])
{
    struct kms_txn *txn = NULL;
    json_t *rec = NULL;
    int rc = -1;

    if (kms_storage_txn_begin(auth->st, true, &txn) != 0) {
        goto out;
    }
    rc = load_record(txn, hash, &rec);
    if (rc != 0) {
        goto out;
    }
    if (delete_record(auth, txn, hash, rec) != 0) {
        rc = -1;
        goto out;
    }
    /* also when the commit failed: a PostgreSQL COMMIT whose answer was lost may have
     * committed, and the revoked token must not stay valid from the cache */
    rc = kms_storage_txn_commit(&txn) != 0 ? -1 : 0;
    tc_bump(auth);
out:
    kms_storage_txn_abort(&txn);
    json_decref(rec);
    return rc;
}

/* Append a 32-byte hash (a record key) to a growable list; -1 when out of memory. */
static int hashes_add(uint8_t (**v)[32], size_t *n, size_t *cap, const uint8_t *h)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        uint8_t(*grown)[32] = realloc(*v, nc * 32);
        if (grown == NULL) {
            return -1;
        }
        *v = grown;
        *cap = nc;
    }
    memcpy((*v)[(*n)++], h, 32);
    return 0;
}

struct prefix_scan {
    const char *ns_id;
    const char *prefix;
    uint8_t (*hits)[32];
    size_t n;
    size_t cap;
};

static int prefix_cb(const uint8_t *key, size_t keylen, const uint8_t *val, size_t vallen,
                     void *arg)
{
    struct prefix_scan *ps = arg;
    json_t *rec;
    int rc = 0;

    if (keylen != 32) {
        return 0;
    }
    rec = json_loadb((const char *)val, vallen, 0, NULL);
    const char *ns = json_string_value(json_object_get(rec, "namespace_id"));
    const char *path = json_string_value(json_object_get(rec, "path"));
    /* prefix "" takes every record of the namespace, one without a path too */
    if (ns != NULL && strcmp(ns, ps->ns_id) == 0 &&
        (ps->prefix[0] == '\0' ||
         (path != NULL && strncmp(path, ps->prefix, strlen(ps->prefix)) == 0))) {
        rc = hashes_add(&ps->hits, &ps->n, &ps->cap, key);
    }
    json_decref(rec);
    return rc;
}

int kms_auth_token_revoke_prefix(struct kms_auth *auth, const char *ns_id, const char *prefix)
{
    struct prefix_scan ps = {ns_id, prefix, NULL, 0, 0};
    struct kms_txn *txn = NULL;
    int rc = -1;

    if (kms_storage_txn_begin(auth->st, false, &txn) != 0 ||
        kms_storage_scan(txn, KMS_DB_TOKENS, "", 0, NULL, 0, true, prefix_cb, &ps) != 0) {
        goto out;
    }
    kms_storage_txn_abort(&txn);
    for (size_t i = 0; i < ps.n; i++) {
        if (kms_auth_token_revoke(auth, ps.hits[i]) < 0) {
            goto out;
        }
    }
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    free(ps.hits);
    return rc;
}

int kms_auth_token_purge_ns(struct kms_auth *auth, struct kms_txn *txn, const char *ns_id)
{
    struct prefix_scan ps = {ns_id, "", NULL, 0, 0};
    int rc = -1;

    if (kms_storage_scan(txn, KMS_DB_TOKENS, "", 0, NULL, 0, true, prefix_cb, &ps) != 0) {
        goto out;
    }
    for (size_t i = 0; i < ps.n; i++) {
        json_t *rec = NULL;
        int g = load_record(txn, ps.hits[i], &rec);
        int d = g == 0                      ? delete_record(auth, txn, ps.hits[i], rec)
                : g == KMS_STORAGE_NOTFOUND ? 0
                                            : -1;
        json_decref(rec);
        if (d != 0) {
            goto out;
        }
    }
    rc = 0;
out:
    free(ps.hits);
    return rc;
}

void kms_auth_token_cache_flush(struct kms_auth *auth)
{
    tc_bump(auth);
}

/* ---- revoke-orphan ----------------------------------------------------------------------- */

/* The children of one token: records whose "parent" is its hash in hex. */
struct child_scan {
    char parent[65];
    uint8_t (*hits)[32];
    size_t n;
    size_t cap;
};

static int child_cb(const uint8_t *key, size_t keylen, const uint8_t *val, size_t vallen, void *arg)
{
    struct child_scan *cs = arg;
    int rc = 0;

    /* most records do not hold the parent's hash at all: no JSON parse for them */
    if (keylen != 32 || memmem(val, vallen, cs->parent, 64) == NULL) {
        return 0;
    }
    json_t *rec = json_loadb((const char *)val, vallen, 0, NULL);
    const char *parent = json_string_value(json_object_get(rec, "parent"));
    if (parent != NULL && strcmp(parent, cs->parent) == 0) {
        rc = hashes_add(&cs->hits, &cs->n, &cs->cap, key);
    }
    json_decref(rec);
    return rc;
}

int kms_auth_token_revoke_orphan(struct kms_auth *auth, const uint8_t hash[32], size_t *orphaned)
{
    struct child_scan cs;
    struct kms_txn *txn = NULL;
    json_t *rec = NULL;
    size_t n = 0;
    int rc = -1;

    memset(&cs, 0, sizeof(cs));
    kms_hex_encode(hash, 32, cs.parent);
    int64_t now_ms = token_now_ms(auth);
    if (kms_storage_txn_begin(auth->st, true, &txn) != 0) {
        goto out;
    }
    rc = load_record(txn, hash, &rec);
    if (rc != 0) {
        goto out;
    }
    rc = -1;
    /* the scan runs inside the write transaction: the children found are those it commits */
    if (kms_storage_scan(txn, KMS_DB_TOKENS, "", 0, NULL, 0, true, child_cb, &cs) != 0) {
        goto out;
    }
    for (size_t i = 0; i < cs.n; i++) {
        json_t *child = NULL;
        int g = load_record(txn, cs.hits[i], &child);
        int w = g == KMS_STORAGE_NOTFOUND ? 0 : -1;
        if (g == 0) {
            /* OpenBao's revokeInternal: te.Parent = "" and store; a dead child just goes */
            json_object_del(child, "parent");
            if (expired(child, now_ms)) {
                w = delete_record(auth, txn, cs.hits[i], child);
            } else {
                w = put_record(txn, cs.hits[i], child);
                n++;
            }
        }
        json_decref(child);
        if (w != 0) {
            goto out;
        }
    }
    if (delete_record(auth, txn, hash, rec) != 0) {
        goto out;
    }
    int crc = kms_storage_txn_commit(&txn);
    tc_bump(auth); /* whatever the commit's outcome, as in the revocation above */
    if (crc != 0) {
        goto out;
    }
    if (orphaned != NULL) {
        *orphaned = n;
    }
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    json_decref(rec);
    free(cs.hits);
    return rc;
}

/* ---- tidy and the accessor list ---------------------------------------------------------- */

/* One token record of a namespace as a scan saw it. */
struct tok_ent {
    uint8_t hash[32];
    char accessor[64];
    int64_t expire_ms;
    bool has_parent;
};

struct tok_scan {
    const char *ns_id;
    struct tok_ent *e; /* the namespace's records */
    size_t n;
    size_t cap;
    bool want_all;      /* also every record's key, any namespace (tidy's accessor check) */
    uint8_t (*all)[32]; /* in key order, as the scan visits them */
    size_t nall;
    size_t capall;
};

static int tok_scan_cb(const uint8_t *key, size_t keylen, const uint8_t *val, size_t vallen,
                       void *arg)
{
    struct tok_scan *ts = arg;
    int rc = 0;

    if (keylen != 32) {
        return 0;
    }
    if (ts->want_all && hashes_add(&ts->all, &ts->nall, &ts->capall, key) != 0) {
        return -1;
    }
    json_t *rec = json_loadb((const char *)val, vallen, 0, NULL);
    const char *ns = json_string_value(json_object_get(rec, "namespace_id"));
    if (ns != NULL && strcmp(ns, ts->ns_id) == 0) {
        if (ts->n == ts->cap) {
            size_t nc = ts->cap ? ts->cap * 2 : 16;
            struct tok_ent *grown = realloc(ts->e, nc * sizeof(*grown));
            if (grown == NULL) {
                rc = -1;
                goto out;
            }
            ts->e = grown;
            ts->cap = nc;
        }
        struct tok_ent *e = &ts->e[ts->n++];
        memcpy(e->hash, key, 32);
        copy_str(e->accessor, sizeof(e->accessor), json_object_get(rec, "accessor"));
        e->expire_ms = expire_ms(rec);
        e->has_parent = json_object_get(rec, "parent") != NULL;
    }
out:
    json_decref(rec);
    return rc;
}

/* Scan every token record in txn, keeping those of ts->ns_id. 0 or -1. */
static int tok_scan_run(struct kms_txn *txn, struct tok_scan *ts)
{
    return kms_storage_scan(txn, KMS_DB_TOKENS, "", 0, NULL, 0, true, tok_scan_cb, ts);
}

static void tok_scan_free(struct tok_scan *ts)
{
    kms_free_wipe((void **)&ts->e, ts->cap * sizeof(*ts->e));
    free(ts->all);
    ts->all = NULL;
}

/* Is a scanned record alive at now_ms (record_alive, reading its ancestors in txn)? 1, 0, -1. */
static int ent_alive(struct kms_txn *txn, const struct tok_ent *e, int64_t now_ms)
{
    json_t *rec = NULL;
    int64_t dies_ms;

    if (e->expire_ms != 0 && now_ms >= e->expire_ms) {
        return 0;
    }
    if (!e->has_parent) {
        return 1;
    }
    int g = load_record(txn, e->hash, &rec);
    if (g != 0) {
        return g == KMS_STORAGE_NOTFOUND ? 0 : -1;
    }
    int alive = record_alive(txn, rec, now_ms, &dies_ms);
    json_decref(rec);
    return alive;
}

/* Records (or accessor entries) removed per write transaction: a tidy of a large store does
 * not hold the writer for long at a time. */
#define TIDY_BATCH 128

/* Remove the records of hashes[0, n) that are dead, checked again inside the write txn. */
static int tidy_records(struct kms_auth *auth, uint8_t (*hashes)[32], size_t n, int64_t now_ms,
                        struct kms_token_tidy *out)
{
    struct kms_txn *txn = NULL;
    size_t nexpired = 0, nrevoked = 0;
    int rc = -1;

    if (kms_storage_txn_begin(auth->st, true, &txn) != 0) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *rec = NULL;
        int64_t dies_ms;
        int g = load_record(txn, hashes[i], &rec);
        if (g == KMS_STORAGE_NOTFOUND) {
            continue; /* revoked or reaped since the scan */
        }
        int alive = g == 0 ? record_alive(txn, rec, now_ms, &dies_ms) : -1;
        int d = 0;
        if (alive == 0) {
            d = delete_record(auth, txn, hashes[i], rec);
            if (expired(rec, now_ms)) {
                nexpired++;
            } else {
                nrevoked++;
            }
        }
        json_decref(rec);
        if (alive < 0 || d != 0) {
            goto out;
        }
    }
    int crc = kms_storage_txn_commit(&txn);
    tc_bump(auth); /* whatever the commit's outcome, as in the revocation above */
    if (crc != 0) {
        goto out;
    }
    out->expired += nexpired;
    out->parent_revoked += nrevoked;
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    return rc;
}

/* Accessor entries whose token hash is not among the token records of the same snapshot. */
struct acc_scan {
    const uint8_t (*all)[32];
    size_t nall;
    uint8_t (*hits)[32];
    size_t n;
    size_t cap;
    size_t scanned;
};

static int cmp_hash(const void *a, const void *b)
{
    return memcmp(a, b, 32);
}

static int acc_scan_cb(const uint8_t *key, size_t keylen, const uint8_t *val, size_t vallen,
                       void *arg)
{
    struct acc_scan *as = arg;

    as->scanned++;
    if (keylen != 32 ||
        (vallen == 32 && as->nall > 0 && bsearch(val, as->all, as->nall, 32, cmp_hash) != NULL)) {
        return 0;
    }
    return hashes_add(&as->hits, &as->n, &as->cap, key);
}

/* Remove the accessor entries keys[0, n) whose token record is (still) gone. */
static int tidy_accessors(struct kms_auth *auth, uint8_t (*keys)[32], size_t n,
                          struct kms_token_tidy *out)
{
    struct kms_txn *txn = NULL;
    size_t removed = 0;
    int rc = -1;

    if (kms_storage_txn_begin(auth->st, true, &txn) != 0) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        uint8_t *val = NULL, *tv = NULL;
        size_t vallen = 0, tvlen = 0;
        int g = kms_storage_get(txn, KMS_DB_ACCESSORS, keys[i], 32, &val, &vallen);
        if (g == KMS_STORAGE_NOTFOUND) {
            continue;
        }
        int t = KMS_STORAGE_NOTFOUND; /* a value that is no token hash points nowhere */
        if (g == 0 && vallen == 32) {
            t = kms_storage_get(txn, KMS_DB_TOKENS, val, 32, &tv, &tvlen);
            kms_free_wipe((void **)&tv, tvlen);
        }
        kms_free_wipe((void **)&val, vallen);
        if (g != 0 || (t != 0 && t != KMS_STORAGE_NOTFOUND)) {
            goto out;
        }
        if (t == KMS_STORAGE_NOTFOUND) {
            if (kms_storage_del(txn, KMS_DB_ACCESSORS, keys[i], 32) < 0) {
                goto out;
            }
            removed++;
        }
    }
    if (kms_storage_txn_commit(&txn) != 0) {
        goto out;
    }
    out->accessors_dangling += removed;
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    return rc;
}

int kms_auth_token_tidy(struct kms_auth *auth, const char *ns_id, bool accessors,
                        struct kms_token_tidy *out)
{
    struct tok_scan ts;
    struct acc_scan as;
    struct kms_txn *txn = NULL;
    uint8_t(*dead)[32] = NULL;
    size_t ndead = 0, capdead = 0;
    int rc = -1;

    memset(out, 0, sizeof(*out));
    if (atomic_exchange(&auth->tok_cache->tidying, true)) {
        return 1;
    }
    memset(&ts, 0, sizeof(ts));
    memset(&as, 0, sizeof(as));
    ts.ns_id = ns_id;
    ts.want_all = accessors;
    int64_t now_ms = token_now_ms(auth);
    /* 1. one snapshot: the namespace's dead records, and the accessor entries pointing nowhere */
    if (kms_storage_txn_begin(auth->st, false, &txn) != 0 || tok_scan_run(txn, &ts) != 0) {
        goto out;
    }
    out->scanned = ts.n;
    for (size_t i = 0; i < ts.n; i++) {
        int alive = ent_alive(txn, &ts.e[i], now_ms);
        if (alive < 0 || (alive == 0 && hashes_add(&dead, &ndead, &capdead, ts.e[i].hash) != 0)) {
            goto out;
        }
    }
    if (accessors) {
        /* the scan visits keys in order; sorted here all the same, for bsearch */
        if (ts.nall > 1) {
            qsort(ts.all, ts.nall, 32, cmp_hash);
        }
        as.all = (const uint8_t(*)[32])ts.all;
        as.nall = ts.nall;
        if (kms_storage_scan(txn, KMS_DB_ACCESSORS, "", 0, NULL, 0, true, acc_scan_cb, &as) != 0) {
            goto out;
        }
        out->accessors_scanned = as.scanned;
    }
    kms_storage_txn_abort(&txn);
    /* 2. removal in batches, each record checked again where it is deleted */
    for (size_t i = 0; i < ndead; i += TIDY_BATCH) {
        size_t k = ndead - i < TIDY_BATCH ? ndead - i : TIDY_BATCH;
        if (tidy_records(auth, dead + i, k, now_ms, out) != 0) {
            goto out;
        }
    }
    for (size_t i = 0; i < as.n; i += TIDY_BATCH) {
        size_t k = as.n - i < TIDY_BATCH ? as.n - i : TIDY_BATCH;
        if (tidy_accessors(auth, as.hits + i, k, out) != 0) {
            goto out;
        }
    }
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    tok_scan_free(&ts);
    free(dead);
    free(as.hits);
    atomic_store(&auth->tok_cache->tidying, false);
    return rc;
}

static int cmp_ent_accessor(const void *a, const void *b)
{
    return strcmp(((const struct tok_ent *)a)->accessor, ((const struct tok_ent *)b)->accessor);
}

int kms_auth_token_accessors(struct kms_auth *auth, const char *ns_id,
                             int (*cb)(const char *accessor, void *arg), void *arg)
{
    struct tok_scan ts;
    struct kms_txn *txn = NULL;
    size_t live = 0;
    int rc = -1;

    memset(&ts, 0, sizeof(ts));
    ts.ns_id = ns_id;
    int64_t now_ms = token_now_ms(auth);
    if (kms_storage_txn_begin(auth->st, false, &txn) != 0 || tok_scan_run(txn, &ts) != 0) {
        goto out;
    }
    for (size_t i = 0; i < ts.n; i++) {
        int alive = ent_alive(txn, &ts.e[i], now_ms);
        if (alive < 0) {
            goto out;
        }
        if (alive == 1 && ts.e[i].accessor[0] != '\0') {
            ts.e[live++] = ts.e[i];
        }
    }
    kms_storage_txn_abort(&txn);
    if (live > 1) {
        qsort(ts.e, live, sizeof(*ts.e), cmp_ent_accessor);
    }
    rc = 0;
    for (size_t i = 0; i < live && rc == 0; i++) {
        rc = cb(ts.e[i].accessor, arg);
    }
out:
    kms_storage_txn_abort(&txn);
    tok_scan_free(&ts);
    return rc;
}

int kms_auth_token_use(struct kms_auth *auth, const uint8_t hash[32])
{
    struct kms_txn *txn = NULL;
    json_t *rec = NULL;
    int rc = -1;

    if (kms_storage_txn_begin(auth->st, true, &txn) != 0) {
        goto out;
    }
    int g = load_record(txn, hash, &rec);
    if (g != 0) {
        /* used up (and deleted) by a concurrent request since the caller looked it up */
        rc = g == KMS_STORAGE_NOTFOUND ? 1 : -1;
        goto out;
    }
    int64_t uses = get_int(rec, "num_uses");
    if (uses <= 0) {
        rc = 0; /* unlimited */
        goto out;
    }
    if (uses == 1) {
        rc = delete_record(auth, txn, hash, rec);
    } else {
        json_object_set_new(rec, "num_uses", json_integer(uses - 1));
        rc = put_record(txn, hash, rec);
    }
    if (rc == 0) {
        rc = kms_storage_txn_commit(&txn);
        tc_bump(auth);
    }
out:
    kms_storage_txn_abort(&txn);
    json_decref(rec);
    return rc;
}
