/*
 * transit.c - the Transit engine's HTTP surface (OpenBao's builtin/logical/transit): key
 * lifecycle, encrypt (with upsert), decrypt, rewrap, datakey, and batch semantics (sign/verify
 * are sign.c's, export export.c's).
 *
 * Records: the key policy lives at KEYS "<ns>/<mount uuid>/<name>" and each version at
 * KEY_VERSIONS "<ns>/<mount uuid>/<name>/<version BE u32>", so a key with many versions never
 * becomes one growing blob and an encrypt reads exactly two records. Every change is one
 * LMDB write transaction, durable before the response. Cryptography and the policy rules
 * are crypto/keyring's; this file maps JSON to them and back.
 */
#include "engine/transit/transit_int.h"
#include "crypto/keyring.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define KEYREC_MAX (KMS_PATH_MAX + 64)
#define TRANSIT_CFG_META "transit_config/"

/* ---- records ----------------------------------------------------------------------------- */

/* "<ns>/<mount uuid>/<name>" into out (KEYREC_MAX bytes); its length. */
static size_t policy_key(const struct kms_mount *m, const char *name, char *out)
{
    size_t n = kms_mount_prefix(m, out, KEYREC_MAX);
    size_t l = strlen(name);
    if (n >= KEYREC_MAX) {
        n = KEYREC_MAX - 1;
    }
    if (l > KEYREC_MAX - 1 - n) {
        l = KEYREC_MAX - 1 - n; /* names are far shorter (KMS_PATH_MAX); never an overrun */
    }
    memcpy(out + n, name, l);
    out[n + l] = '\0';
    return n + l;
}

static size_t version_key(const struct kms_mount *m, const char *name, uint32_t v, uint8_t *out)
{
    size_t n = policy_key(m, name, (char *)out);
    out[n++] = '/';
    out[n++] = (uint8_t)(v >> 24);
    out[n++] = (uint8_t)(v >> 16);
    out[n++] = (uint8_t)(v >> 8);
    out[n++] = (uint8_t)v;
    return n;
}

static int load_policy(const struct kms_mount *m, struct kms_txn *txn, const char *name,
                       struct kms_key_policy *p)
{
    char key[KEYREC_MAX];
    uint8_t *val = NULL;
    size_t vallen = 0;
    size_t n = policy_key(m, name, key);
    int g = kms_storage_get(txn, KMS_DB_KEYS, key, n, &val, &vallen);
    if (g == 0 && kms_key_policy_decode(val, vallen, p) != 0) {
        g = -1;
    }
    kms_free_wipe((void **)&val, vallen);
    return g;
}

static int store_policy(const struct kms_mount *m, struct kms_txn *txn, const char *name,
                        const struct kms_key_policy *p)
{
    char key[KEYREC_MAX];
    uint8_t buf[KMS_KEY_POLICY_ENC_MAX];
    size_t n = policy_key(m, name, key);
    size_t len = kms_key_policy_encode(p, buf);
    return kms_storage_put(txn, KMS_DB_KEYS, key, n, buf, len);
}

static int load_version(const struct kms_mount *m, struct kms_txn *txn, const char *name,
                        uint32_t v, struct kms_key_version *kv)
{
    uint8_t key[KEYREC_MAX + 8];
    uint8_t *val = NULL;
    size_t vallen = 0;
    size_t n = version_key(m, name, v, key);
    int g = kms_storage_get(txn, KMS_DB_KEY_VERSIONS, key, n, &val, &vallen);
    if (g == 0 && kms_key_version_decode(val, vallen, kv) != 0) {
        g = -1;
    }
    kms_free_wipe((void **)&val, vallen);
    return g;
}

static int store_version(const struct kms_mount *m, struct kms_txn *txn, const char *name,
                         const struct kms_key_version *kv)
{
    uint8_t key[KEYREC_MAX + 8];
    uint8_t buf[KMS_KEY_VERSION_ENC_MAX];
    size_t n = version_key(m, name, kv->version, key);
    size_t len = kms_key_version_encode(kv, buf);
    int rc = kms_storage_put(txn, KMS_DB_KEY_VERSIONS, key, n, buf, len);
    kms_memzero(buf, sizeof(buf));
    return rc;
}

/* The key cache of the request's mount (its own when cache-config gave it a size). */
static struct kms_keycache *transit_kc(struct kms_ctx *c)
{
    return kms_transit_cache_of(c->estate, &c->mount);
}

/*
 * Commit a write transaction that changed key `name`, then drop it from the key cache, and
 * every thread's cipher contexts with it: a deleted or trimmed version's key material stays
 * in no worker's context (crypto/aead.c; the contexts of keys still in use are rebuilt on
 * their next operation, about a microsecond each). A failed commit drops them too: a
 * PostgreSQL COMMIT whose answer was lost (the connection broke) may have committed, and a
 * key deleted that way went on encrypting from the cache, with ciphertexts acknowledged
 * under a key the store no longer holds.
 */
static int commit_key(struct kms_transit *t, const struct kms_mount *m, const char *name,
                      struct kms_txn **txn)
{
    char key[KEYREC_MAX];
    int rc = kms_storage_txn_commit(txn) != 0 ? -1 : 0;
    policy_key(m, name, key);
    kms_keycache_invalidate(kms_transit_cache_of(t, m), key);
    kms_aead_forget_all();
    return rc;
}

int kms_transit_policy_load(const struct kms_mount *m, struct kms_txn *txn, const char *name,
                            struct kms_key_policy *p)
{
    return load_policy(m, txn, name, p);
}

int kms_transit_key_store(struct kms_transit *t, const struct kms_mount *m, const char *name,
                          const struct kms_key_policy *p, const struct kms_key_version *kv,
                          struct kms_txn **txn)
{
    if (store_version(m, *txn, name, kv) != 0 || store_policy(m, *txn, name, p) != 0 ||
        commit_key(t, m, name, txn) != 0) {
        return -1;
    }
    if (p->auto_rotate_period > 0) {
        kms_transit_autorotate_kick(t);
    }
    return 0;
}

/* Engine purge: a transit mount's keys, versions, mount config and import wrapping key. */
static int transit_purge(void *state, struct kms_txn *txn, const char *ns_id,
                         const struct kms_mount *m)
{
    (void)state;
    (void)ns_id;
    if (m == NULL || strcmp(m->type, "transit") != 0) {
        return 0;
    }
    char prefix[96];
    char cfg[160];
    kms_mount_prefix(m, prefix, sizeof(prefix));
    snprintf(cfg, sizeof(cfg), "%s%s", TRANSIT_CFG_META, prefix);
    if (kms_storage_del_prefix(txn, KMS_DB_KEYS, prefix, strlen(prefix), NULL) != 0 ||
        kms_storage_del_prefix(txn, KMS_DB_KEY_VERSIONS, prefix, strlen(prefix), NULL) != 0 ||
        kms_storage_del(txn, KMS_DB_META, cfg, strlen(cfg)) < 0 ||
        kms_transit_wrapping_key_purge(txn, m) != 0 || kms_transit_cache_purge(txn, m) != 0 ||
        kms_transit_chain_purge(txn, m) != 0) {
        return -1;
    }
    return 0;
}

/* Mount-wide config (config/keys): disable_upsert. */
static int mount_disable_upsert(struct kms_ctx *c, struct kms_txn *txn, bool *out)
{
    char prefix[96];
    char key[160];
    uint8_t *val = NULL;
    size_t vallen = 0;
    kms_mount_prefix(&c->mount, prefix, sizeof(prefix));
    snprintf(key, sizeof(key), "%s%s", TRANSIT_CFG_META, prefix);
    int g = kms_storage_get(txn, KMS_DB_META, key, strlen(key), &val, &vallen);
    *out = g == 0 && vallen == 1 && val[0] == 1;
    free(val);
    return g < 0 ? -1 : 0;
}

/* ---- the key object ---------------------------------------------------------------------- */

struct times_arg {
    json_t *keys;
    size_t name_len;
    uint32_t min;
    const struct kms_key_policy *p;
    const uint8_t *context; /* derived ed25519: public keys for this context */
    size_t ctxlen;
};

static int times_cb(const uint8_t *key, size_t keylen, const uint8_t *val, size_t vallen, void *arg)
{
    struct times_arg *t = arg;
    struct kms_key_version kv;
    struct kms_err err;
    int rc = 0;
    if (keylen != t->name_len + 4 || kms_key_version_decode(val, vallen, &kv) != 0) {
        return keylen == t->name_len + 4 ? -1 : 0;
    }
    if (kv.version >= t->min) {
        char ver[16];
        json_t *v = kms_transit_version_json(t->p, &kv, t->context, t->ctxlen, &err);
        snprintf(ver, sizeof(ver), "%u", kv.version);
        rc = v != NULL ? json_object_set_new(t->keys, ver, v) : -1;
    }
    kms_memzero(&kv, sizeof(kv));
    (void)key;
    return rc;
}

static int key_object_ctx(struct kms_ctx *c, struct kms_txn *txn, const char *name,
                          const struct kms_key_policy *p, const uint8_t *context, size_t ctxlen,
                          json_t **out)
{
    uint8_t prefix[KEYREC_MAX + 8];
    size_t n = policy_key(&c->mount, name, (char *)prefix);
    prefix[n++] = '/';
    struct times_arg t = {json_object(), n, p->min_decryption_version, p, context, ctxlen};
    uint8_t start[KEYREC_MAX + 8];
    size_t sn = version_key(&c->mount, name, p->min_decryption_version, start);
    if (kms_storage_scan(txn, KMS_DB_KEY_VERSIONS, prefix, n, start, sn, true, times_cb, &t) != 0 ||
        (kms_key_type_supports_signing(p->type) &&
         kms_transit_chains_attach(&c->mount, txn, name, t.keys) != 0)) {
        json_decref(t.keys);
        return -1;
    }
    json_t *o = json_pack(
        "{s:s, s:s, s:b, s:b, s:b, s:b, s:I, s:I, s:I, s:I, s:b, s:b, s:b, s:b, s:I, s:b, s:b, "
        "s:o}",
        "name", name, "type", kms_key_type_name(p->type), "derived", p->derived, "deletion_allowed",
        p->deletion_allowed, "exportable", p->exportable, "allow_plaintext_backup",
        p->allow_plaintext_backup, "latest_version", (json_int_t)p->latest_version,
        "min_decryption_version", (json_int_t)p->min_decryption_version, "min_encryption_version",
        (json_int_t)p->min_encryption_version, "min_available_version",
        (json_int_t)p->min_available_version, "supports_encryption",
        kms_key_type_supports_encryption(p->type), "supports_decryption",
        kms_key_type_supports_encryption(p->type), "supports_signing",
        kms_key_type_supports_signing(p->type), "supports_derivation",
        kms_key_type_supports_derivation(p->type), "auto_rotate_period",
        (json_int_t)p->auto_rotate_period, "imported_key", p->imported, "soft_deleted",
        p->soft_deleted, "keys", t.keys);
    if (o == NULL) {
        return -1;
    }
    if (p->imported) {
        json_object_set_new(o, "imported_key_allow_rotation",
                            json_boolean(p->allow_imported_rotation));
    }
    if (p->type == KMS_KEY_HMAC) {
        /* OpenBao's key object has no "keys" for hmac keys, but their key_size */
        json_object_del(o, "keys");
        json_object_set_new(o, "key_size", json_integer(p->key_size));
    }
    if (p->derived) {
        if (p->kdf_counter) {
            json_object_set_new(o, "kdf", json_string("hmac-sha256-counter"));
            json_object_set_new(o, "kdf_mode", json_string("hmac-sha256-counter"));
        } else {
            json_object_set_new(o, "kdf", json_string("hkdf_sha256"));
        }
        json_object_set_new(o, "convergent_encryption", json_boolean(p->convergent));
        if (p->convergent) {
            json_object_set_new(o, "convergent_encryption_version", json_integer(-1));
        }
    }
    *out = o;
    return 0;
}

static int key_object(struct kms_ctx *c, struct kms_txn *txn, const char *name,
                      const struct kms_key_policy *p, json_t **out)
{
    return key_object_ctx(c, txn, name, p, NULL, 0, out);
}

/* ---- key lifecycle ----------------------------------------------------------------------- */

static int parse_type(struct kms_ctx *c, const char *t, enum kms_key_type *out)
{
    /* encrypt's upsert only knows the AEAD types, as in OpenBao */
    bool upsert = c->route != NULL && c->route->exists != NULL;
    if (kms_key_type_parse(t, out) == 0 && (!upsert || kms_key_type_is_aead(*out))) {
        return 0;
    }
    return KMS_FAIL(c, 400, "unknown key type %s", t);
}

/*
 * Key material made before a write transaction begins, for the types whose generation is slow
 * (RSA-4096 takes a second or more): a write transaction holds the store, and on PostgreSQL
 * the session whose heartbeat keeps an HA replica's lease (docs/ha.md), so generating inside
 * it could cost the active its lease. 0 with *kv, -1 when there is nothing to make ahead
 * (fast types, or a policy the generator refuses: the transaction's own path says why).
 */
static int generate_ahead(const struct kms_key_policy *p, struct kms_key_version *kv)
{
    if (kms_key_type_is_aead(p->type) || p->type == KMS_KEY_HMAC) {
        return -1;
    }
    if (kms_key_version_generate(p, 1, kv) != 0) {
        kms_memzero(kv, sizeof(*kv));
        return -1;
    }
    return 0;
}

/*
 * Create `name` in txn with the given policy template; version 1 is generated (or taken from
 * `ahead`, made by generate_ahead for the same template). Returns 1 when the key already
 * exists (nothing written, *p holds the stored policy).
 */
static int create_key(struct kms_ctx *c, struct kms_txn *txn, const char *name,
                      struct kms_key_policy *p, const struct kms_key_version *ahead)
{
    struct kms_key_version kv;
    struct kms_key_policy old;
    int rc = -1;
    int g = load_policy(&c->mount, txn, name, &old);
    if (g == 0) {
        *p = old;
        return 1;
    }
    if (g < 0) {
        return KMS_FAILW(c, 500, "cannot read key");
    }
    if (kms_key_policy_check_new(p, &c->err) != 0) {
        return -1;
    }
    p->latest_version = 1;
    p->min_decryption_version = 1;
    if (ahead != NULL) {
        kv = *ahead;
    } else if (kms_key_version_generate(p, 1, &kv) != 0) {
        KMS_FAILW(c, 500, "cannot generate key material");
        goto out;
    }
    p->created_sec = kv.created_sec;
    if (store_version(&c->mount, txn, name, &kv) != 0 ||
        store_policy(&c->mount, txn, name, p) != 0) {
        KMS_FAILW(c, 500, "cannot store key");
        goto out;
    }
    rc = 0;
out:
    kms_memzero(&kv, sizeof(kv));
    return rc;
}

/* Commit txn and answer with the key object read in a fresh read transaction. */
static int reply_key(struct kms_ctx *c, const char *name, const struct kms_key_policy *p)
{
    struct kms_txn *txn = NULL;
    json_t *o = NULL;
    if (kms_storage_txn_begin(kms_api_storage(c->api), false, &txn) != 0 ||
        key_object(c, txn, name, p, &o) != 0) {
        kms_storage_txn_abort(&txn);
        return KMS_FAILW(c, 500, "cannot read key");
    }
    kms_storage_txn_abort(&txn);
    c->data = o;
    return 0;
}

static int keys_write(struct kms_ctx *c)
{
    const char *name = kms_cap(c, "name");
    const char *tname = "aes256-gcm96";
    struct kms_key_policy p;
    struct kms_txn *txn = NULL;
    bool b;
    int64_t v;
    int rc = -1;

    bool derived = kms_param_bool(c, "derived", &b) && b;
    bool convergent = kms_param_bool(c, "convergent_encryption", &b) && b;
    int64_t period = 0;
    (void)kms_param_str(c, "type", &tname);
    /* OpenBao's order: rotation period, convergent/derived, type, key size */
    if (kms_param_int(c, "auto_rotate_period", &v)) {
        if (v != 0 && v < 3600) {
            return KMS_FAIL(c, 400, "auto rotate period must be 0 to disable or at least an hour");
        }
        period = v;
    }
    if (convergent && !derived) {
        return KMS_FAIL(c, 400, "convergent encryption requires derivation to be enabled");
    }
    if (parse_type(c, tname, &p.type) != 0) {
        return -1;
    }
    int64_t key_size = 0;
    if (kms_param_int(c, "key_size", &key_size) && key_size != 0) {
        if (p.type != KMS_KEY_HMAC) {
            return KMS_FAIL(c, 400, "key_size is not valid for algorithm %s", tname);
        }
        if (key_size < KMS_HMAC_KEY_MIN || key_size > KMS_HMAC_KEY_MAX) {
            return KMS_FAIL(c, 400, "invalid key_size %lld", (long long)key_size);
        }
    }
    /* external keys are an unknown type here, so a reference is always misplaced */
    const char *ext = NULL;
    if (kms_param_str(c, "external_key_ref", &ext) && ext[0] != '\0') {
        return KMS_FAIL(c, 400, "must provide type=external-key to use external_key_ref");
    }
    if (kms_key_policy_init(&p, p.type) != 0) {
        return KMS_FAILW(c, 500, "cannot initialise key");
    }
    p.key_size = (uint32_t)key_size;
    p.derived = derived;
    p.convergent = convergent;
    p.exportable = kms_param_bool(c, "exportable", &b) && b;
    p.allow_plaintext_backup = kms_param_bool(c, "allow_plaintext_backup", &b) && b;
    p.auto_rotate_period = period;
    struct kms_key_version ahead;
    bool have_ahead = generate_ahead(&p, &ahead) == 0;
    if (kms_storage_txn_begin(kms_api_storage(c->api), true, &txn) != 0) {
        kms_memzero(&ahead, sizeof(ahead));
        return KMS_FAILW(c, 500, "cannot open storage transaction");
    }
    int cr = create_key(c, txn, name, &p, have_ahead ? &ahead : NULL);
    kms_memzero(&ahead, sizeof(ahead));
    if (cr < 0) {
        goto out;
    }
    if (cr == 1) {
        kms_warn(c, "key %s already existed", name);
        kms_storage_txn_abort(&txn);
    } else if (kms_transit_note_created(c, txn, name) != 0) {
        goto out;
    } else if (commit_key(c->estate, &c->mount, name, &txn) != 0) {
        KMS_FAILW(c, 500, "cannot store key");
        goto out;
    } else {
        (void)kms_transit_note_created(c, NULL, name);
        if (p.auto_rotate_period > 0) {
            kms_transit_autorotate_kick(c->estate);
        }
    }
    kms_ctx_note_version(c, p.latest_version);
    rc = reply_key(c, name, &p);
out:
    kms_storage_txn_abort(&txn);
    return rc;
}

static int keys_read(struct kms_ctx *c)
{
    const char *name = kms_cap(c, "name");
    struct kms_key_policy p;
    struct kms_txn *txn = NULL;
    const char *ctx = NULL;
    uint8_t *context = NULL;
    size_t ctxlen = 0, at;
    int rc = -1;
    if (kms_storage_txn_begin(kms_api_storage(c->api), false, &txn) != 0) {
        return KMS_FAILW(c, 500, "cannot open storage transaction");
    }
    int g = load_policy(&c->mount, txn, name, &p);
    if (g == KMS_STORAGE_NOTFOUND) {
        rc = kms_fail_notfound(c);
        goto out;
    }
    if (g == 0 && kms_param_str(c, "context", &ctx) && ctx[0] != '\0' &&
        kms_b64_decode_alloc(ctx, strlen(ctx), &context, &ctxlen, &at) != 0) {
        KMS_FAIL(c, 400, "failed to base64-decode context");
        goto out;
    }
    if (g != 0 || key_object_ctx(c, txn, name, &p, context, ctxlen, &c->data) != 0) {
        KMS_FAILW(c, 500, "cannot read key");
        goto out;
    }
    rc = 0;
out:
    kms_free_wipe((void **)&context, ctxlen);
    kms_storage_txn_abort(&txn);
    return rc;
}

struct list_arg {
    json_t *keys;
    size_t prefix_len;
    int64_t limit;
    const struct kms_ctx *c;
    const struct kms_transit *t;
};

static int list_cb(const uint8_t *key, size_t keylen, const uint8_t *val, size_t vallen, void *arg)
{
    struct list_arg *l = arg;
    char name[KEYREC_MAX];
    size_t n = keylen - l->prefix_len;
    (void)val;
    (void)vallen;
    if (l->limit > 0 && (int64_t)json_array_size(l->keys) >= l->limit) {
        return 1;
    }
    if (n >= sizeof(name)) {
        return 0;
    }
    memcpy(name, key + l->prefix_len, n);
    name[n] = '\0';
    /* a key the caller may not use is not shown either */
    if (l->t->owner_fn != NULL && !l->t->owner_fn(l->t->owner_arg, l->c, name)) {
        return 0;
    }
    json_array_append_new(l->keys, json_stringn(name, n));
    return 0;
}

static int keys_list(struct kms_ctx *c)
{
    char prefix[96];
    char start[KEYREC_MAX];
    const char *after = NULL;
    struct kms_txn *txn = NULL;
    int64_t limit = 0;
    int rc = -1;

    kms_mount_prefix(&c->mount, prefix, sizeof(prefix));
    struct list_arg l = {json_array(), strlen(prefix), 0, c, c->estate};
    if (kms_param_int(c, "limit", &limit)) {
        l.limit = limit;
    }
    size_t sn = 0;
    if (kms_param_str(c, "after", &after) && after[0] != '\0') {
        /* exclusive start: the smallest key greater than prefix+after */
        sn = (size_t)snprintf(start, sizeof(start), "%s%s", prefix, after);
        if (sn + 1 < sizeof(start)) {
            start[sn++] = '\0';
        }
    }
    if (kms_storage_txn_begin(kms_api_storage(c->api), false, &txn) != 0 ||
        kms_storage_scan(txn, KMS_DB_KEYS, prefix, strlen(prefix), sn ? start : NULL, sn, false,
                         list_cb, &l) != 0) {
        KMS_FAILW(c, 500, "cannot list keys");
        goto out;
    }
    if (json_array_size(l.keys) == 0) {
        rc = kms_fail_notfound(c);
        goto out;
    }
    c->data = json_pack("{s:O}", "keys", l.keys);
    rc = 0;
out:
    json_decref(l.keys);
    kms_storage_txn_abort(&txn);
    return rc;
}

static int keys_delete(struct kms_ctx *c)
{
    const char *name = kms_cap(c, "name");
    struct kms_key_policy p;
    struct kms_txn *txn = NULL;
    uint8_t prefix[KEYREC_MAX + 8];
    char key[KEYREC_MAX];
    int rc = -1;

    if (kms_storage_txn_begin(kms_api_storage(c->api), true, &txn) != 0) {
        return KMS_FAILW(c, 500, "cannot open storage transaction");
    }
    int g = load_policy(&c->mount, txn, name, &p);
    if (g == KMS_STORAGE_NOTFOUND) {
        KMS_FAIL(c, 400, "error deleting policy %s: could not delete key; not found", name);
        goto out;
    }
    if (g != 0) {
        KMS_FAILW(c, 500, "cannot read key");
        goto out;
    }
    if (!p.deletion_allowed) {
        KMS_FAIL(c, 400, "error deleting policy %s: deletion is not allowed for this key", name);
        goto out;
    }
    size_t kn = policy_key(&c->mount, name, key);
    memcpy(prefix, key, kn);
    prefix[kn] = '/';
    if (kms_storage_del_prefix(txn, KMS_DB_KEY_VERSIONS, prefix, kn + 1, NULL) != 0 ||
        kms_storage_del(txn, KMS_DB_KEYS, key, kn) != 0 ||
        kms_transit_chain_drop(&c->mount, txn, name, 0, 0) != 0 ||
        commit_key(c->estate, &c->mount, name, &txn) != 0) {
        KMS_FAILW(c, 500, "cannot delete key");
        goto out;
    }
    for (uint32_t v = p.min_available_version > 1 ? p.min_available_version : 1;
         v <= p.latest_version && v != 0 && !c->audit.versions_truncated; v++) {
        kms_ctx_note_version(c, v); /* every version destroyed */
    }
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    return rc;
}

/*
 * keys/:name/soft-delete (DELETE) and soft-delete-restore (POST), as OpenBao's
 * pathPolicySoftDelete(Restore): set or clear the flag and answer the key object, with a
 * warning when it was already so; an absent key answers 204, as OpenBao's nil response.
 */
static int soft_delete_set(struct kms_ctx *c, bool deleted)
{
    const char *name = kms_cap(c, "name");
    struct kms_key_policy p;
    struct kms_txn *txn = NULL;
    int rc = -1;

    if (kms_storage_txn_begin(kms_api_storage(c->api), true, &txn) != 0) {
        return KMS_FAILW(c, 500, "cannot open storage transaction");
    }
    int g = load_policy(&c->mount, txn, name, &p);
    if (g == KMS_STORAGE_NOTFOUND) {
        rc = 0;
        goto out;
    }
    if (g != 0) {
        KMS_FAILW(c, 500, "cannot read key");
        goto out;
    }
    bool already = p.soft_deleted == deleted;
    p.soft_deleted = deleted;
    if (!already && (store_policy(&c->mount, txn, name, &p) != 0 ||
                     commit_key(c->estate, &c->mount, name, &txn) != 0)) {
        KMS_FAILW(c, 500, "cannot store key");
        goto out;
    }
    kms_storage_txn_abort(&txn);
    rc = reply_key(c, name, &p);
    if (rc == 0 && already) {
        kms_warn(c, "%s",
                 deleted ? "key was already marked as soft deleted" : "key was already restored");
    }
out:
    kms_storage_txn_abort(&txn);
    return rc;
}

static int keys_soft_delete(struct kms_ctx *c)
{
    return soft_delete_set(c, true);
}

static int keys_soft_delete_restore(struct kms_ctx *c)
{
    return soft_delete_set(c, false);
}

static int keys_config(struct kms_ctx *c)
{
    const char *name = kms_cap(c, "name");
    struct kms_key_policy p;
    struct kms_key_config cfg;
    struct kms_txn *txn = NULL;
    char warning[256];
    int rc = -1;

    memset(&cfg, 0, sizeof(cfg));
    cfg.has_min_decryption_version =
        kms_param_int(c, "min_decryption_version", &cfg.min_decryption_version);
    cfg.has_min_encryption_version =
        kms_param_int(c, "min_encryption_version", &cfg.min_encryption_version);
    cfg.has_deletion_allowed = kms_param_bool(c, "deletion_allowed", &cfg.deletion_allowed);
    cfg.has_exportable = kms_param_bool(c, "exportable", &cfg.exportable);
    cfg.has_allow_plaintext_backup =
        kms_param_bool(c, "allow_plaintext_backup", &cfg.allow_plaintext_backup);
    cfg.has_auto_rotate_period = kms_param_int(c, "auto_rotate_period", &cfg.auto_rotate_period);
    if (((cfg.has_exportable && cfg.exportable) ||
         (cfg.has_allow_plaintext_backup && cfg.allow_plaintext_backup) ||
         (cfg.has_deletion_allowed && cfg.deletion_allowed)) &&
        kms_transit_refuse_managed(c, name,
                                   "exportable, allow_plaintext_backup and deletion_allowed stay "
                                   "false (its KMSKey's deletionPolicy and schedule-delete "
                                   "decide its deletion)") != 0) {
        return -1;
    }

    if (kms_storage_txn_begin(kms_api_storage(c->api), true, &txn) != 0) {
        return KMS_FAILW(c, 500, "cannot open storage transaction");
    }
    int g = load_policy(&c->mount, txn, name, &p);
    if (g == KMS_STORAGE_NOTFOUND) {
        KMS_FAIL(c, 400, "no existing key named %s could be found", name);
        goto out;
    }
    if (g != 0) {
        KMS_FAILW(c, 500, "cannot read key");
        goto out;
    }
    warning[0] = '\0';
    if (kms_keyring_config(&p, &cfg, warning, sizeof(warning), &c->err) != 0) {
        goto out;
    }
    if (store_policy(&c->mount, txn, name, &p) != 0 ||
        commit_key(c->estate, &c->mount, name, &txn) != 0) {
        KMS_FAILW(c, 500, "cannot store key");
        goto out;
    }
    if (warning[0] != '\0') {
        kms_warn(c, "%s", warning);
    }
    if (cfg.has_auto_rotate_period && p.auto_rotate_period > 0) {
        kms_transit_autorotate_kick(c->estate);
    }
    if (cfg.has_min_decryption_version) {
        kms_ctx_note_version(c, p.min_decryption_version);
    }
    rc = reply_key(c, name, &p);
out:
    kms_storage_txn_abort(&txn);
    return rc;
}

static int keys_rotate(struct kms_ctx *c)
{
    const char *name = kms_cap(c, "name");
    struct kms_key_policy p;
    struct kms_key_version kv, ahead;
    struct kms_key_policy pre;
    struct kms_txn *txn = NULL;
    bool have_ahead = false;
    int rc = -1;

    memset(&kv, 0, sizeof(kv));
    memset(&ahead, 0, sizeof(ahead));
    /* slow key material before the write transaction (generate_ahead), for the key's type as
     * a read sees it; used only if the type is still the same inside the transaction */
    if (kms_storage_txn_begin(kms_api_storage(c->api), false, &txn) == 0) {
        have_ahead =
            load_policy(&c->mount, txn, name, &pre) == 0 && generate_ahead(&pre, &ahead) == 0;
        kms_storage_txn_abort(&txn);
    }
    if (kms_storage_txn_begin(kms_api_storage(c->api), true, &txn) != 0) {
        kms_memzero(&ahead, sizeof(ahead));
        return KMS_FAILW(c, 500, "cannot open storage transaction");
    }
    int g = load_policy(&c->mount, txn, name, &p);
    if (g == KMS_STORAGE_NOTFOUND) {
        KMS_FAIL(c, 400, "key not found");
        goto out;
    }
    if (g != 0) {
        KMS_FAILW(c, 500, "cannot read key");
        goto out;
    }
    /* external keys are an unknown type here: a reference is always misplaced (OpenBao answers
     * it before rotating anything) */
    const char *ext = NULL;
    if (kms_param_str(c, "external_key_ref", &ext) && ext[0] != '\0') {
        KMS_FAIL(c, 400, "cannot use external_key_ref on key of type %s",
                 kms_key_type_name(p.type));
        goto out;
    }
    if (p.latest_version == UINT32_MAX) {
        KMS_FAIL(c, 400, "key %s has reached the maximum number of versions", name);
        goto out;
    }
    if (p.imported && !p.allow_imported_rotation) {
        KMS_FAILW(c, 500, "imported key %s does not allow rotation within Vault", name);
        goto out;
    }
    if (p.soft_deleted) {
        KMS_FAILW(c, 500, "%s", KMS_MSG_SOFT_DELETED);
        goto out;
    }
    /* as OpenBao: a rotated key counts as generated from then on */
    p.imported = false;
    p.latest_version++;
    if (have_ahead && pre.type == p.type && pre.convergent == p.convergent) {
        kv = ahead;
        kv.version = p.latest_version;
    } else if (kms_key_version_generate(&p, p.latest_version, &kv) != 0) {
        KMS_FAILW(c, 500, "cannot rotate key");
        goto out;
    }
    if (store_version(&c->mount, txn, name, &kv) != 0 ||
        store_policy(&c->mount, txn, name, &p) != 0 ||
        commit_key(c->estate, &c->mount, name, &txn) != 0) {
        KMS_FAILW(c, 500, "cannot rotate key");
        goto out;
    }
    kms_ctx_note_version(c, p.latest_version);
    rc = reply_key(c, name, &p);
out:
    kms_memzero(&kv, sizeof(kv));
    kms_memzero(&ahead, sizeof(ahead));
    kms_storage_txn_abort(&txn);
    return rc;
}

static int keys_trim(struct kms_ctx *c)
{
    const char *name = kms_cap(c, "name");
    struct kms_key_policy p;
    struct kms_txn *txn = NULL;
    int64_t v = 0;
    int rc = -1;

    bool has = kms_param_int(c, "min_available_version", &v);
    if (kms_storage_txn_begin(kms_api_storage(c->api), true, &txn) != 0) {
        return KMS_FAILW(c, 500, "cannot open storage transaction");
    }
    int g = load_policy(&c->mount, txn, name, &p);
    if (g == KMS_STORAGE_NOTFOUND) {
        KMS_FAIL(c, 400, "invalid key name");
        goto out;
    }
    if (g != 0) {
        KMS_FAILW(c, 500, "cannot read key");
        goto out;
    }
    uint32_t old_min = p.min_available_version;
    if (kms_keyring_trim(&p, has, v, &c->err) != 0) {
        goto out;
    }
    for (uint32_t ver = old_min > 1 ? old_min : 1; ver < p.min_available_version; ver++) {
        uint8_t key[KEYREC_MAX + 8];
        size_t n = version_key(&c->mount, name, ver, key);
        if (kms_storage_del(txn, KMS_DB_KEY_VERSIONS, key, n) < 0) {
            KMS_FAILW(c, 500, "cannot trim key");
            goto out;
        }
    }
    if (kms_transit_chain_drop(&c->mount, txn, name, old_min, p.min_available_version) != 0) {
        KMS_FAILW(c, 500, "cannot trim key");
        goto out;
    }
    if (store_policy(&c->mount, txn, name, &p) != 0 ||
        commit_key(c->estate, &c->mount, name, &txn) != 0) {
        KMS_FAILW(c, 500, "cannot store key");
        goto out;
    }
    kms_ctx_note_version(c, p.min_available_version);
    rc = reply_key(c, name, &p);
out:
    kms_storage_txn_abort(&txn);
    return rc;
}

/* ---- batch plumbing ---------------------------------------------------------------------- */

/* ITEM_QUIET_ERR: an item that carries its error but leaves the batch's status alone (OpenBao
 * and Vault do so for associated_data on a non-AEAD key: the item is skipped without setting
 * the batch's user-error flag, so the others' success answers 200). */
enum item_kind { ITEM_OK, ITEM_USER_ERR, ITEM_INTERNAL_ERR, ITEM_QUIET_ERR };

struct item {
    const char *plaintext;  /* encrypt: base64; NULL when absent */
    const char *ciphertext; /* decrypt/rewrap */
    const char *context;    /* base64 or NULL */
    const char *aad;        /* base64 or NULL */
    const char *reference;
    int64_t key_version;
    json_t *texts; /* the strings made from JSON numbers (rewrap), owned */
    /* results */
    enum item_kind kind;
    char *out;            /* ciphertext or base64 plaintext (malloc'd) */
    size_t out_len;       /* for plaintext wipe */
    uint32_t out_version; /* key version used */
    struct kms_err err;
};

const char *kms_go_kind(const json_t *v)
{
    if (json_is_object(v)) {
        return "map";
    }
    if (json_is_array(v)) {
        return "slice";
    }
    if (json_is_boolean(v)) {
        return "bool";
    }
    return json_is_null(v) ? "invalid" : "string";
}

static const char *go_type(const json_t *v)
{
    if (json_is_number(v)) {
        return "json.Number";
    }
    if (json_is_boolean(v)) {
        return "bool";
    }
    if (json_is_array(v)) {
        return "[]interface {}";
    }
    if (json_is_object(v)) {
        return "map[string]interface {}";
    }
    return "string";
}

/* The text a json.Number keeps, as a JSON string. */
static json_t *number_text(const json_t *v)
{
    char buf[64];
    kms_go_number_text(v, buf, sizeof(buf));
    return json_string(buf);
}

/* Append one line to the joined decode errors (errors.Join: one a line). */
static void join_error(char *buf, size_t len, size_t *o, const char *fmt, ...) KMS_PRINTF(4, 5);
static void join_error(char *buf, size_t len, size_t *o, const char *fmt, ...)
{
    va_list ap;
    if (*o >= len) {
        return;
    }
    if (*o > 0) {
        *o += (size_t)snprintf(buf + *o, len - *o, "\n");
        if (*o >= len) {
            return;
        }
    }
    va_start(ap, fmt);
    int n = vsnprintf(buf + *o, len - *o, fmt, ap);
    va_end(ap);
    *o += n > 0 ? (size_t)n : 0;
}

int kms_transit_string_batch(struct kms_ctx *c, json_t *bi, const char *go_item, json_t **out)
{
    char errs[512];
    size_t o = 0;
    size_t i;
    json_t *it;
    json_t *items = NULL;

    *out = NULL;
    errs[0] = '\0';
    if (!json_is_array(bi)) {
        return KMS_FAILW(c, 500,
                         "failed to parse batch input: '' source data must be an array or slice, "
                         "got %s",
                         kms_go_kind(bi));
    }
    if (json_array_size(bi) > kms_api_limits(c->api)->max_batch_items) {
        return KMS_FAIL(c, 400,
                        "batch_input has %zu items, more than the limit of %zu (max_batch_items)",
                        json_array_size(bi), kms_api_limits(c->api)->max_batch_items);
    }
    items = json_array();
    if (items == NULL) {
        return KMS_FAILW(c, 500, "out of memory");
    }
    json_array_foreach(bi, i, it)
    {
        json_t *m = json_object();
        const char *k;
        json_t *v;
        if (m == NULL || json_array_append_new(items, m) != 0) {
            json_decref(items);
            return KMS_FAILW(c, 500, "out of memory");
        }
        if (json_is_null(it)) {
            continue; /* an empty map: the item's own error follows */
        }
        if (!json_is_object(it)) {
            join_error(errs, sizeof(errs), &o,
                       "'[%zu]' expected type '%s', got unconvertible type '%s'", i, go_item,
                       go_type(it));
            continue;
        }
        json_object_foreach(it, k, v)
        {
            if (json_is_string(v)) {
                json_object_set(m, k, v);
            } else if (json_is_number(v)) {
                json_object_set_new(m, k, number_text(v));
            } else if (json_is_null(v)) {
                json_object_set_new(m, k, json_string("")); /* decoded as the zero value */
            } else {
                join_error(errs, sizeof(errs), &o,
                           "'[%zu][%s]' expected type 'string', got unconvertible type '%s'", i, k,
                           go_type(v));
            }
        }
    }
    if (o > 0) {
        /* the items' errors are joined (errors.Join), which mapstructure's Decode introduces */
        json_decref(items);
        return KMS_FAILW(c, 500,
                         "failed to parse batch input: decoding failed due to the following "
                         "error(s):\n\n%s",
                         errs);
    }
    if (json_array_size(items) == 0) {
        json_decref(items);
        return KMS_FAIL(c, 400, "missing batch input to process");
    }
    *out = items;
    return 0;
}

static void free_items(struct item *items, size_t n);

static const char *const item_fields[] = {"plaintext", "ciphertext",  "context", "associated_data",
                                          "reference", "key_version", "nonce",   NULL};

/* The fields OpenBao decodes from an encrypt/decrypt/rewrap item, in its order. */
static const char *const decoded_fields[] = {
    "context", "ciphertext", "plaintext", "key_version", "associated_data", "reference", NULL};

static bool field_allowed(const char *const *allowed, const char *k)
{
    for (size_t f = 0; allowed[f] != NULL; f++) {
        if (strcmp(allowed[f], k) == 0) {
            return true;
        }
    }
    return false;
}

/* The reflect.Kind mapstructure names in "expected a map or struct, got %q". */
static const char *go_reflect_kind(const json_t *v)
{
    return json_is_array(v) ? "slice" : kms_go_kind(v);
}

static void item_set(struct item *it, const char *k, const char *s)
{
    if (strcmp(k, "plaintext") == 0) {
        it->plaintext = s;
    } else if (strcmp(k, "ciphertext") == 0) {
        it->ciphertext = s;
    } else if (strcmp(k, "context") == 0) {
        it->context = s;
    } else if (strcmp(k, "associated_data") == 0) {
        it->aad = s;
    } else if (strcmp(k, "reference") == 0) {
        it->reference = s;
    }
}

/*
 * One batch item's fields, decoded as OpenBao does: encrypt and decrypt with its own decoder
 * (ms false: a number in a string field is an error), rewrap with mapstructure v2 into
 * BatchRequestItem (ms true: a number in a string field is its text). Every field of
 * BatchRequestItem is type-checked; only the allowed ones are kept. Null values are left out.
 * Errors are appended to errs (one a line, errors.Join); 0, or -1 out of memory.
 */
static int decode_item(json_t *o, size_t i, bool ms, const char *const *allowed, struct item *it,
                       char *errs, size_t errlen, size_t *eo)
{
    for (size_t f = 0; decoded_fields[f] != NULL; f++) {
        const char *k = decoded_fields[f];
        json_t *v = json_object_get(o, k);
        bool use = field_allowed(allowed, k); /* the others are decoded, then unused */
        if (v == NULL || json_is_null(v)) {
            continue;
        }
        if (strcmp(k, "key_version") == 0) {
            if (json_is_integer(v)) {
                it->key_version = use ? json_integer_value(v) : it->key_version;
            } else if (json_is_real(v)) {
                json_t *t = number_text(v);
                if (t == NULL) {
                    return -1;
                }
                if (ms) {
                    join_error(errs, errlen, eo,
                               "'[%zu].key_version' cannot parse value as 'int': "
                               "strconv.ParseInt: parsing \"%s\": invalid syntax",
                               i, json_string_value(t));
                } else {
                    join_error(errs, errlen, eo,
                               "error decoding json.Number into [%zu].key_version: "
                               "strconv.ParseInt: parsing \"%s\": invalid syntax",
                               i, json_string_value(t));
                }
                json_decref(t);
            } else {
                join_error(errs, errlen, eo,
                           "'[%zu].key_version' expected type 'int', got unconvertible type "
                           "'%s'",
                           i, go_type(v));
            }
            continue;
        }
        if (json_is_string(v)) {
            if (use) {
                item_set(it, k, json_string_value(v));
            }
        } else if (ms && json_is_number(v)) {
            json_t *t = number_text(v);
            if (t == NULL || (it->texts == NULL && (it->texts = json_array()) == NULL) ||
                json_array_append_new(it->texts, t) != 0) {
                return -1;
            }
            if (use) {
                item_set(it, k, json_string_value(t));
            }
        } else {
            join_error(errs, errlen, eo,
                       "'[%zu].%s' expected type 'string', got unconvertible type '%s'", i, k,
                       go_type(v));
        }
    }
    return 0;
}

/*
 * Collect the request's items: batch_input when present, otherwise one item built from the
 * top-level parameters. Malformed batch input fails the whole request (500 wrapped), as in
 * OpenBao, with the words of its decoder (ms: rewrap's mapstructure, else encrypt and
 * decrypt's own).
 */
static int collect_items(struct kms_ctx *c, const char *const *allowed, bool ms, struct item **out,
                         size_t *n, bool *batch)
{
    json_t *bi = kms_param(c, "batch_input");
    const struct kms_api_limits *lim = kms_api_limits(c->api);
    char errs[512];
    size_t eo = 0;
    *batch = bi != NULL;
    if (bi == NULL) {
        struct item *it = calloc(1, sizeof(*it));
        if (it == NULL) {
            return KMS_FAILW(c, 500, "out of memory");
        }
        (void)kms_param_str(c, "plaintext", &it->plaintext);
        (void)kms_param_str(c, "ciphertext", &it->ciphertext);
        (void)kms_param_str(c, "context", &it->context);
        (void)kms_param_str(c, "associated_data", &it->aad);
        (void)kms_param_int(c, "key_version", &it->key_version);
        it->reference = "";
        *out = it;
        *n = 1;
        return 0;
    }
    if (!json_is_array(bi)) {
        if (ms) {
            return KMS_FAILW(c, 500,
                             "failed to parse batch input: '' source data must be an array or "
                             "slice, got %s",
                             kms_go_kind(bi));
        }
        return KMS_FAILW(c, 500,
                         "failed to parse batch input: source data must be an array or slice, "
                         "got %s",
                         go_type(bi));
    }
    size_t count = json_array_size(bi);
    if (count == 0) {
        return KMS_FAIL(c, 400, "missing batch input to process");
    }
    if (count > lim->max_batch_items) {
        return KMS_FAIL(c, 400,
                        "batch_input has %zu items, more than the limit of %zu (max_batch_items)",
                        count, lim->max_batch_items);
    }
    int64_t top_version = 0;
    (void)kms_param_int(c, "key_version", &top_version);
    struct item *items = calloc(count, sizeof(*items));
    if (items == NULL) {
        return KMS_FAILW(c, 500, "out of memory");
    }
    errs[0] = '\0';
    for (size_t i = 0; i < count; i++) {
        json_t *o = json_array_get(bi, i);
        struct item *it = &items[i];
        it->reference = "";
        it->key_version = top_version;
        if (json_is_null(o)) {
            continue; /* an empty item: its own error follows */
        }
        if (!json_is_object(o)) {
            if (ms) {
                join_error(errs, sizeof(errs), &eo, "'[%zu]' expected a map or struct, got \"%s\"",
                           i, go_reflect_kind(o));
                continue;
            }
            /* encrypt and decrypt's decoder stops at an item that is not a map */
            free_items(items, count);
            return KMS_FAILW(c, 500, "failed to parse batch input: [%zu] expected a map, got '%s'",
                             i, go_type(o));
        }
        if (decode_item(o, i, ms, allowed, it, errs, sizeof(errs), &eo) != 0) {
            free_items(items, count);
            return KMS_FAILW(c, 500, "out of memory");
        }
    }
    if (eo > 0) {
        /* rewrap's mapstructure.Decode joins the items' errors and says so first; encrypt and
         * decrypt's own decoder returns the bare errors.Join */
        free_items(items, count);
        return KMS_FAILW(c, 500, "failed to parse batch input: %s%s",
                         ms ? "decoding failed due to the following error(s):\n\n" : "", errs);
    }
    *out = items;
    *n = count;
    return 0;
}

static void free_items(struct item *items, size_t n)
{
    for (size_t i = 0; items != NULL && i < n; i++) {
        if (items[i].out != NULL) {
            kms_memzero(items[i].out, items[i].out_len);
            free(items[i].out);
        }
        json_decref(items[i].texts);
    }
    free(items);
}

/* Context must be on all items or none (an empty string counts as none). */
static int check_context_mix(struct kms_ctx *c, const struct item *items, size_t n)
{
    bool first = items[0].context != NULL && items[0].context[0] != '\0';
    for (size_t i = 1; i < n; i++) {
        bool set = items[i].context != NULL && items[i].context[0] != '\0';
        if (set != first) {
            return KMS_FAIL(c, 400,
                            "context should be set either in all the request blocks or in none");
        }
    }
    return 0;
}

static void item_fail(struct item *it, const struct kms_err *err)
{
    it->kind = err->status >= 500 ? ITEM_INTERNAL_ERR : ITEM_USER_ERR;
    it->err = *err;
}

/*
 * Per-request read state: versions already unsealed (wiped at the end), the read transaction
 * (begun only on a key-cache miss) and the key-cache sequence taken before any storage read.
 */
struct vcache {
    struct kms_key_version v[8];
    size_t n;
    struct kms_txn *txn;
    uint64_t seq;
};

/* Ends the transaction and wipes the versions it holds (slots 0..n-1, the only ones used). */
static void vcache_dispose(struct vcache *vc)
{
    kms_storage_txn_abort(&vc->txn);
    kms_memzero(vc->v, vc->n * sizeof(vc->v[0]));
    vc->n = 0;
}

static int vcache_txn(struct kms_ctx *c, struct vcache *vc)
{
    if (vc->txn == NULL && kms_storage_txn_begin(kms_api_storage(c->api), false, &vc->txn) != 0) {
        return -1;
    }
    return 0;
}

/*
 * The policy encrypt's existence check read from storage on a key-cache miss, kept on the
 * thread for the handler that runs right after it: read_policy takes it instead of reading
 * and unsealing the same record again, and puts it in the cache. It is taken only while the
 * cache's sequence has not moved since before that read (no write to any key in between: the
 * rule the cache itself inserts under), and only once. The existence check does not put it in
 * the cache itself, so the cache's hit and miss counts stay one lookup per request and key.
 */
struct policy_stash {
    struct kms_keycache *kc; /* NULL: empty (a new cache never reuses an old one's sequences) */
    uint64_t seq;
    char key[KEYREC_MAX];
    struct kms_key_policy p;
};
static _Thread_local struct policy_stash stash;

static void stash_policy(struct kms_keycache *kc, uint64_t seq, const char *key,
                         const struct kms_key_policy *p)
{
    size_t n = strlen(key);
    if (n >= sizeof(stash.key)) {
        return;
    }
    memcpy(stash.key, key, n + 1);
    stash.p = *p;
    stash.seq = seq;
    stash.kc = kc;
}

/* The stashed policy of key, if it is still current; *seq: the sequence it was read under. */
static bool take_stashed_policy(struct kms_keycache *kc, const char *key, struct kms_key_policy *p,
                                uint64_t *seq)
{
    if (stash.kc != kc || kc == NULL) {
        return false;
    }
    stash.kc = NULL;
    if (kms_keycache_seq(kc) != stash.seq || strcmp(stash.key, key) != 0) {
        return false;
    }
    *p = stash.p;
    *seq = stash.seq;
    return true;
}

/* Policy through the key cache; 0, KMS_STORAGE_NOTFOUND or -1 (no error set). */
static int read_policy(struct kms_ctx *c, struct vcache *vc, const char *name,
                       struct kms_key_policy *p)
{
    char key[KEYREC_MAX];
    struct kms_keycache *kc = transit_kc(c);
    uint64_t seq = 0;
    policy_key(&c->mount, name, key);
    if (take_stashed_policy(kc, key, p, &seq)) {
        kms_keycache_put_policy(kc, key, p, seq);
        return 0;
    }
    /* the latest version comes along into the request's versions (an encrypt's next need) */
    bool room = vc->n < sizeof(vc->v) / sizeof(vc->v[0]);
    bool got = false;
    if (kms_keycache_get(kc, key, p, room ? &vc->v[vc->n] : NULL, &got)) {
        if (got) {
            bool dup = false;
            for (size_t i = 0; i < vc->n; i++) {
                dup = dup || vc->v[i].version == vc->v[vc->n].version;
            }
            if (dup) {
                kms_memzero(&vc->v[vc->n], sizeof(vc->v[0]));
            } else {
                vc->n++;
            }
        }
        return 0;
    }
    if (vcache_txn(c, vc) != 0) {
        return -1;
    }
    int g = load_policy(&c->mount, vc->txn, name, p);
    if (g == 0) {
        kms_keycache_put_policy(kc, key, p, vc->seq);
    }
    return g;
}

static int get_version(struct kms_ctx *c, const char *name, struct vcache *vc, uint32_t ver,
                       const struct kms_key_version **out, struct kms_err *err)
{
    for (size_t i = 0; i < vc->n; i++) {
        if (vc->v[i].version == ver) {
            *out = &vc->v[i];
            return 0;
        }
    }
    /* read straight into the slot it will take (a full cache reuses slot ver % 8) */
    size_t slot = vc->n < 8 ? vc->n : ver % 8;
    struct kms_key_version *kv = &vc->v[slot];
    char key[KEYREC_MAX];
    struct kms_keycache *kc = transit_kc(c);
    policy_key(&c->mount, name, key);
    int g = 0;
    if (!kms_keycache_get_version(kc, key, ver, kv)) {
        g = vcache_txn(c, vc) != 0 ? -1 : load_version(&c->mount, vc->txn, name, ver, kv);
        if (g == 0) {
            kms_keycache_put_version(kc, key, kv, vc->seq);
        }
    }
    if (g != 0) {
        kms_memzero(kv, sizeof(*kv));
        if (slot < vc->n) {
            kv->version = UINT32_MAX; /* an evicted slot: never matches a lookup again */
        }
        return g == KMS_STORAGE_NOTFOUND ? kms_err_set(err, 400, "no such key version")
                                         : kms_err_set(err, 500, "cannot read key version");
    }
    if (slot == vc->n) {
        vc->n++;
    }
    *out = kv;
    return 0;
}

/* Decode an optional base64 field into *out (NULL when absent). */
static int decode_opt(const char *s, uint8_t **out, size_t *len, struct kms_err *err)
{
    *out = NULL;
    *len = 0;
    if (s == NULL || s[0] == '\0') {
        return 0;
    }
    return kms_b64_param(s, out, len, err, 400);
}

/*
 * The item's associated_data (when given) decoded where OpenBao decodes it: inside
 * Encrypt/DecryptWithFactory, after the version and the key derivation, so a derived key
 * without context says so first. A bad base64 value is OpenBao's internal error (500).
 */
static int aad_decode(const struct kms_key_policy *p, const struct item *it, size_t ctxlen,
                      uint8_t **aad, size_t *aadlen, struct kms_err *err)
{
    if (it->aad == NULL || it->aad[0] == '\0') {
        return 0;
    }
    if (p->derived && ctxlen == 0) {
        return kms_err_set(err, 400, "%s", KMS_MSG_MISSING_CONTEXT);
    }
    if (decode_opt(it->aad, aad, aadlen, err) != 0) {
        /* OpenBao hands each item its own one-factory list (path_encrypt.go, path_decrypt.go):
         * the index it prints is always 0, whichever item failed */
        char why[sizeof(err->msg)];
        snprintf(why, sizeof(why), "%s", err->msg);
        return kms_err_set(
            err, 500, "unable to get associated_data/additional_data from factory[0]: %s", why);
    }
    return 0;
}

/* Whether the payload of a "vault:vN:<b64>" ciphertext (its version already parsed) is
 * base64 that decodes. */
static bool ciphertext_payload_b64(const char *ct)
{
    const char *colon = strchr(ct + 7, ':');
    uint8_t *raw = NULL;
    size_t rawlen = 0, at = 0;
    if (colon == NULL ||
        kms_b64_decode_alloc(colon + 1, strlen(colon + 1), &raw, &rawlen, &at) != 0) {
        return false;
    }
    kms_free_wipe((void **)&raw, rawlen);
    return true;
}

static int encrypt_one(struct kms_ctx *c, const char *name, const struct kms_key_policy *p,
                       struct vcache *vc, struct item *it, size_t idx, const uint8_t *pt,
                       size_t ptlen)
{
    uint8_t *ctx = NULL, *aad = NULL;
    size_t ctxlen = 0, aadlen = 0;
    const struct kms_key_version *kv = NULL;
    uint32_t ver;
    struct kms_err err;
    bool quiet = false;
    int rc = -1;

    kms_err_clear(&err);
    if (decode_opt(it->context, &ctx, &ctxlen, &err) != 0) {
        goto out;
    }
    if (it->aad != NULL && it->aad[0] != '\0' && !kms_key_type_is_aead(p->type)) {
        kms_err_set(&err, 400, "'[%zu].associated_data' provided for non-AEAD cipher suite %s", idx,
                    kms_key_type_name(p->type));
        quiet = true;
        goto out;
    }
    if (p->soft_deleted) {
        kms_err_set(&err, 400, "%s", KMS_MSG_SOFT_DELETED);
        goto out;
    }
    if (kms_keyring_encrypt_version(p, it->key_version, &ver, &err) != 0 ||
        get_version(c, name, vc, ver, &kv, &err) != 0 ||
        aad_decode(p, it, ctxlen, &aad, &aadlen, &err) != 0 ||
        kms_keyring_encrypt(p, kv, ctx, ctxlen, ctx != NULL, aad, aadlen, pt, ptlen, &it->out,
                            &err) != 0) {
        goto out;
    }
    it->out_len = strlen(it->out);
    it->out_version = ver;
    kms_ctx_note_version(c, ver);
    it->kind = ITEM_OK;
    rc = 0;
out:
    if (rc != 0) {
        item_fail(it, &err);
        if (quiet) {
            it->kind = ITEM_QUIET_ERR;
        }
    }
    kms_free_wipe((void **)&ctx, ctxlen);
    kms_free_wipe((void **)&aad, aadlen);
    return rc;
}

static int decrypt_one(struct kms_ctx *c, const char *name, const struct kms_key_policy *p,
                       struct vcache *vc, struct item *it, size_t idx, bool use_aad, uint8_t **pt,
                       size_t *ptlen)
{
    uint8_t *ctx = NULL, *aad = NULL;
    size_t ctxlen = 0, aadlen = 0;
    const struct kms_key_version *kv = NULL;
    uint32_t ver;
    struct kms_err err;
    bool quiet = false;
    int rc = -1;

    kms_err_clear(&err);
    if (it->ciphertext == NULL || it->ciphertext[0] == '\0') {
        kms_err_set(&err, 400, "missing ciphertext to decrypt");
        goto out;
    }
    if (p->soft_deleted) {
        kms_err_set(&err, 400, "%s", KMS_MSG_SOFT_DELETED);
        goto out;
    }
    /* OpenBao's order: the context, associated_data on a non-AEAD key, the ciphertext's
     * prefix, version and base64, the key version and its derivation, then the associated
     * data itself, then the ciphertext's length and tag */
    size_t ctlen = strlen(it->ciphertext);
    if (decode_opt(it->context, &ctx, &ctxlen, &err) != 0) {
        goto out;
    }
    if (use_aad && it->aad != NULL && it->aad[0] != '\0' && !kms_key_type_is_aead(p->type)) {
        kms_err_set(&err, 400, "'[%zu].associated_data' provided for non-AEAD cipher suite %s", idx,
                    kms_key_type_name(p->type));
        quiet = true;
        goto out;
    }
    if (kms_keyring_ciphertext_version(p, it->ciphertext, ctlen, &ver, &err) != 0) {
        goto out;
    }
    if (use_aad && it->aad != NULL && it->aad[0] != '\0' &&
        !ciphertext_payload_b64(it->ciphertext)) {
        /* checked before associated_data, as OpenBao decodes the payload first */
        kms_err_set(&err, 400, "invalid ciphertext: could not decode base64");
        goto out;
    }
    if (get_version(c, name, vc, ver, &kv, &err) != 0 ||
        (use_aad && aad_decode(p, it, ctxlen, &aad, &aadlen, &err) != 0) ||
        kms_keyring_decrypt(p, kv, it->ciphertext, ctlen, ctx, ctxlen, ctx != NULL, aad, aadlen, pt,
                            ptlen, &err) != 0) {
        goto out;
    }
    kms_ctx_note_version(c, ver);
    rc = 0;
out:
    if (rc != 0) {
        item_fail(it, &err);
        if (quiet) {
            it->kind = ITEM_QUIET_ERR;
        }
    }
    kms_free_wipe((void **)&ctx, ctxlen);
    kms_free_wipe((void **)&aad, aadlen);
    return rc;
}

/*
 * Status of an encrypt/decrypt batch: 400 on any user error, else 500 on an internal one;
 * partial_failure_response_code overrides when at least one item succeeded.
 */
static int batch_status(struct kms_ctx *c, const struct item *items, size_t n)
{
    bool user = false, internal = false, ok = false;
    for (size_t i = 0; i < n; i++) {
        user = user || items[i].kind == ITEM_USER_ERR;
        internal = internal || items[i].kind == ITEM_INTERNAL_ERR;
        ok = ok || items[i].kind == ITEM_OK;
    }
    if (!user && !internal) {
        return 0;
    }
    int code = user ? 400 : 500;
    int64_t override;
    if (ok && kms_param_int(c, "partial_failure_response_code", &override)) {
        /* OpenBao takes 1..599, but Go's server panics on a status below 100 (the client
         * sees the connection drop): kmsd reverts those with the warning instead */
        if (override >= 100 && override <= 599) {
            code = (int) override;
        } else {
            kms_warn(c,
                     "invalid HTTP response code override from partial_failure_response_code, "
                     "reverting to %d",
                     code);
        }
    }
    return code;
}

static int too_large(struct kms_ctx *c)
{
    size_t lim = kms_api_limits(c->api)->max_plaintext_size;
    if (lim % 1024 == 0) {
        return KMS_FAIL(c, 413,
                        "plaintext exceeds the %zu KiB limit for direct encryption "
                        "(max_plaintext_size); use envelope encryption (datakey) for larger data",
                        lim / 1024);
    }
    return KMS_FAIL(c, 413,
                    "plaintext exceeds the %zu byte limit for direct encryption "
                    "(max_plaintext_size); use envelope encryption (datakey) for larger data",
                    lim);
}

/* ---- encrypt ----------------------------------------------------------------------------- */

/* The policy of key `name` of c's mount, from the key cache or read (and cached): 0,
 * KMS_STORAGE_NOTFOUND, or -1. */
static int cached_policy(struct kms_ctx *c, const char *name, struct kms_key_policy *p)
{
    struct kms_txn *txn = NULL;
    char key[KEYREC_MAX];
    struct kms_keycache *kc = transit_kc(c);
    /* a cached policy is a key that exists (deletes drop it from the cache on commit) */
    policy_key(&c->mount, name, key);
    if (kms_keycache_get_policy(kc, key, p)) {
        return 0;
    }
    uint64_t seq = kms_keycache_seq(kc); /* before the read, for the stash */
    if (kms_storage_txn_begin(kms_api_storage(c->api), false, &txn) != 0) {
        return -1;
    }
    int g = load_policy(&c->mount, txn, name, p);
    kms_storage_txn_abort(&txn);
    if (g == 0) {
        stash_policy(kc, seq, key, p);
    }
    return g;
}

static int encrypt_exists(struct kms_ctx *c)
{
    struct kms_key_policy p;
    int g = cached_policy(c, kms_cap(c, "name"), &p);
    return g == 0 ? 1 : g == KMS_STORAGE_NOTFOUND ? 0 : -1;
}

/* Create the key on first encrypt (Vault's upsert) when the caller may create it. */
static int upsert(struct kms_ctx *c, const char *name, bool derived, struct kms_key_policy *p)
{
    struct kms_txn *txn = NULL;
    const char *tname = "aes256-gcm96";
    bool convergent = false;
    bool disabled = false;
    int rc = -1;

    if (kms_storage_txn_begin(kms_api_storage(c->api), true, &txn) != 0) {
        return KMS_FAILW(c, 500, "cannot open storage transaction");
    }
    if (mount_disable_upsert(c, txn, &disabled) != 0) {
        KMS_FAILW(c, 500, "cannot read mount config");
        goto out;
    }
    if (c->op != KMS_OP_CREATE || disabled) {
        KMS_FAIL(c, 400, "encryption key not found");
        goto out;
    }
    (void)kms_param_str(c, "type", &tname);
    (void)kms_param_bool(c, "convergent_encryption", &convergent);
    if (strncmp(tname, "ecdsa-", 6) == 0) {
        KMS_FAIL(c, 400, "key type %s not supported for this operation", tname);
        goto out;
    }
    if (parse_type(c, tname, &p->type) != 0 || kms_key_policy_init(p, p->type) != 0) {
        goto out;
    }
    if (convergent && !derived) {
        KMS_FAIL(c, 400,
                 "convergent encryption requires derivation to be enabled, so context is required");
        goto out;
    }
    p->derived = derived;
    p->convergent = convergent;
    int cr = create_key(c, txn, name, p, NULL); /* AEAD types only: fast */
    if (cr < 0) {
        goto out;
    }
    if (cr == 1) {
        kms_warn(c, "Attempted creation of the key during the encrypt operation, but it was "
                    "created beforehand");
        rc = 0;
        goto out;
    }
    if (kms_transit_note_created(c, txn, name) != 0) {
        goto out;
    }
    if (commit_key(c->estate, &c->mount, name, &txn) != 0) {
        KMS_FAILW(c, 500, "cannot store key");
        goto out;
    }
    (void)kms_transit_note_created(c, NULL, name);
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    return rc;
}

static json_t *encrypt_results(const struct item *items, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        const struct item *it = &items[i];
        json_t *o = json_object();
        if (it->kind == ITEM_OK) {
            json_object_set_new(o, "ciphertext", json_string(it->out));
            json_object_set_new(o, "key_version", json_integer(it->out_version));
        } else {
            json_object_set_new(o, "error", json_string(it->err.msg));
        }
        /* OpenBao's item is a struct: its fields in declaration order, reference last */
        json_object_set_new(o, "reference", json_string(it->reference));
        json_array_append_new(arr, o);
    }
    return arr;
}

/* Hands the writer's text to the envelope as the response data; false (and nothing kept) when
 * the writer ran out of memory. */
static bool take_data_json(struct kms_ctx *c, struct kms_jw *w)
{
    if (w->oom) {
        free(w->p);
        return false;
    }
    c->data_json = w->p;
    c->data_json_len = w->len;
    return true;
}

/* Whether json_string would take s (UTF-8), as the tree form kept an item's error only then. */
static bool json_text_ok(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p >= 0x80) {
            json_t *v = json_string(s);
            bool ok = v != NULL;
            json_decref(v);
            return ok;
        }
    }
    return true;
}

/*
 * An encrypt or rewrap batch's data written straight as JSON text (no tree to build, render
 * and free), byte-identical to what the envelope writes from encrypt_results' tree:
 * {"batch_results":[{"ciphertext":…,"key_version":N,"reference":…} | {"error":…,"reference":…},
 * …]}. An audited request also hands the values to the audit hook (c->batch_results, one block
 * with copies of the ciphertexts and errors), which writes the response line from them. false
 * (nothing kept) when out of memory: the caller builds the tree.
 */
static bool encrypt_results_text(struct kms_ctx *c, const struct item *items, size_t n)
{
    struct kms_jw w = {NULL, 0, 0, false};
    bool audited = c->audit.armed;
    size_t text = 32, strings = 0, longest = 0;
    for (size_t i = 0; i < n; i++) {
        const struct item *it = &items[i];
        size_t rl = strlen(it->reference);
        size_t sl = it->kind == ITEM_OK ? it->out_len : strlen(it->err.msg);
        /* the fixed parts, the strings unescaped, a key version of 10 digits */
        text += 60 + rl + sl;
        strings += sl + 1 + rl + 1;
        longest = rl > longest ? rl : longest;
        longest = sl > longest ? sl : longest;
    }
    /* kms_jw_str reserves 6 bytes a character of the string it writes: room for the longest */
    (void)kms_jw_reserve(&w, text + longest * 6);
    struct kms_batch_result *res = NULL;
    char *arena = NULL;
    if (audited) {
        res = malloc(n * sizeof(*res) + strings);
        if (res == NULL) {
            free(w.p);
            return false;
        }
        arena = (char *)(res + n);
    }
    kms_jw_raw(&w, "{\"batch_results\":[", 18);
    for (size_t i = 0; i < n; i++) {
        const struct item *it = &items[i];
        size_t rl = strlen(it->reference);
        kms_jw_raw(&w, i > 0 ? ",{" : "{", i > 0 ? 2 : 1);
        const char *err = NULL;
        size_t el = 0;
        if (it->kind == ITEM_OK) {
            /* "vault:vN:" and base64: nothing to escape */
            kms_jw_raw(&w, "\"ciphertext\":\"", 14);
            kms_jw_raw(&w, it->out, it->out_len);
            kms_jw_raw(&w, "\",\"key_version\":", 16);
            kms_jw_uint(&w, it->out_version);
            kms_jw_raw(&w, ",\"reference\":", 13);
            kms_jw_str(&w, it->reference, rl);
        } else {
            if (json_text_ok(it->err.msg)) {
                err = it->err.msg;
                el = strlen(err);
                kms_jw_raw(&w, "\"error\":", 8);
                kms_jw_str(&w, err, el);
                kms_jw_raw(&w, ",", 1);
            }
            kms_jw_raw(&w, "\"reference\":", 12);
            kms_jw_str(&w, it->reference, rl);
        }
        kms_jw_raw(&w, "}", 1);
        if (res != NULL) {
            struct kms_batch_result *r = &res[i];
            memset(r, 0, sizeof(*r));
            /* a copy: a reference given as a number (rewrap reads it as its text) lives in
             * the item, freed before the audit hook writes the response line */
            memcpy(arena, it->reference, rl + 1);
            r->reference = arena;
            r->reference_len = rl;
            arena += rl + 1;
            if (it->kind == ITEM_OK) {
                memcpy(arena, it->out, it->out_len + 1);
                r->ciphertext = arena;
                r->ciphertext_len = it->out_len;
                r->key_version = it->out_version;
                arena += it->out_len + 1;
            } else if (err != NULL) {
                memcpy(arena, err, el + 1);
                r->error = arena;
                r->error_len = el;
                arena += el + 1;
            }
        }
    }
    kms_jw_raw(&w, "]}", 2);
    if (!take_data_json(c, &w)) {
        free(res);
        return false;
    }
    c->batch_results = res;
    c->nbatch_results = res != NULL ? n : 0;
    return true;
}

/*
 * The data of a successful single encrypt as JSON text, byte-identical to the envelope's
 * rendering of {"ciphertext":…,"key_version":N}. An audited request also hands the values to
 * the audit hook (c->batch_results with c->single_result: one block holding the result and a
 * copy of the ciphertext), which writes the response line from them instead of from a tree.
 * false (nothing kept) when out of memory: the caller builds the tree.
 */
static bool encrypt_result_text(struct kms_ctx *c, const struct item *it)
{
    struct kms_jw w = {NULL, 0, 0, false};
    struct kms_batch_result *res = NULL;
    if (c->audit.armed) {
        res = malloc(sizeof(*res) + it->out_len + 1);
        if (res == NULL) {
            return false;
        }
        memset(res, 0, sizeof(*res));
        char *ct = (char *)(res + 1);
        memcpy(ct, it->out, it->out_len + 1);
        res->ciphertext = ct;
        res->ciphertext_len = it->out_len;
        res->key_version = it->out_version;
        res->reference = "";
    }
    (void)kms_jw_reserve(&w, it->out_len + 48);
    kms_jw_raw(&w, "{\"ciphertext\":", 14);
    kms_jw_str(&w, it->out, it->out_len);
    kms_jw_raw(&w, ",\"key_version\":", 15);
    kms_jw_uint(&w, it->out_version);
    kms_jw_raw(&w, "}", 1);
    if (!take_data_json(c, &w)) {
        free(res);
        return false;
    }
    if (res != NULL) {
        c->batch_results = res;
        c->nbatch_results = 1;
        c->single_result = true;
    }
    return true;
}

static int single_error(struct kms_ctx *c, const struct item *it)
{
    c->err = it->err;
    if (c->err.status >= 500) {
        c->err.wrapped = true;
    }
    return -1;
}

static int encrypt(struct kms_ctx *c)
{
    const char *name = kms_cap(c, "name");
    struct item *items = NULL;
    size_t n = 0;
    bool batch;
    struct kms_key_policy p;
    struct vcache vc = {.n = 0, .txn = NULL, .seq = kms_keycache_seq(transit_kc(c))};
    size_t max_pt = kms_api_limits(c->api)->max_plaintext_size;
    int rc = -1;

    if (collect_items(c, item_fields, false, &items, &n, &batch) != 0) {
        goto out;
    }
    c->items = batch ? n : 0;
    if (!batch && items[0].plaintext == NULL) {
        KMS_FAIL(c, 400, "missing plaintext to encrypt");
        goto out;
    }
    if (check_context_mix(c, items, n) != 0) {
        goto out;
    }
    /* Cheap size check before any work: base64 of the limit is ceil(lim/3)*4 characters. */
    for (size_t i = 0; i < n; i++) {
        if (items[i].plaintext != NULL && strlen(items[i].plaintext) > (max_pt + 2) / 3 * 4 + 64) {
            too_large(c);
            goto out;
        }
    }
    bool derived = items[0].context != NULL && items[0].context[0] != '\0';
    int g = read_policy(c, &vc, name, &p);
    if (g == KMS_STORAGE_NOTFOUND) {
        vcache_dispose(&vc);
        vc.seq = kms_keycache_seq(transit_kc(c));
        if (upsert(c, name, derived, &p) != 0 || read_policy(c, &vc, name, &p) != 0) {
            if (c->err.status == 0) {
                KMS_FAILW(c, 500, "cannot read key");
            }
            goto out;
        }
    } else if (g != 0) {
        KMS_FAILW(c, 500, "cannot read key");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        struct item *it = &items[i];
        uint8_t *pt = NULL;
        size_t ptlen = 0;
        struct kms_err err;
        kms_err_clear(&err);
        if (it->plaintext == NULL) {
            kms_err_set(&err, 400, "missing plaintext to encrypt");
            item_fail(it, &err);
            continue;
        }
        if (decode_opt(it->plaintext, &pt, &ptlen, &err) != 0) {
            item_fail(it, &err);
            continue;
        }
        if (ptlen > max_pt) {
            kms_free_wipe((void **)&pt, ptlen);
            too_large(c);
            goto out;
        }
        (void)encrypt_one(c, name, &p, &vc, it, i, pt, ptlen);
        kms_free_wipe((void **)&pt, ptlen);
    }
    if (!batch) {
        if (items[0].kind != ITEM_OK) {
            single_error(c, &items[0]);
            goto out;
        }
        if (!encrypt_result_text(c, &items[0])) {
            c->data = json_pack("{s:s, s:i}", "ciphertext", items[0].out, "key_version",
                                (int)items[0].out_version);
        }
    } else {
        c->status = batch_status(c, items, n);
        if (!encrypt_results_text(c, items, n)) {
            c->data = json_pack("{s:o}", "batch_results", encrypt_results(items, n));
        }
    }
    rc = 0;
out:
    vcache_dispose(&vc);
    free_items(items, n);
    return rc;
}

/* ---- decrypt / rewrap -------------------------------------------------------------------- */

static int open_policy(struct kms_ctx *c, const char *name, struct vcache *vc,
                       struct kms_key_policy *p)
{
    int g = read_policy(c, vc, name, p);
    if (g == KMS_STORAGE_NOTFOUND) {
        return KMS_FAIL(c, 400, "encryption key not found");
    }
    if (g != 0) {
        return KMS_FAILW(c, 500, "cannot read key");
    }
    return 0;
}

static const char *const rewrap_fields[] = {"ciphertext", "context", "key_version",
                                            "reference",  "nonce",   NULL};

/*
 * Shared start of decrypt and rewrap: collect the items, require a ciphertext in single mode,
 * check the context rule and load the key.
 */
static int ciphertext_items(struct kms_ctx *c, const char *const *fields, const char *name,
                            struct item **items, size_t *n, bool *batch, struct vcache *vc,
                            struct kms_key_policy *p)
{
    if (collect_items(c, fields, fields == rewrap_fields, items, n, batch) != 0) {
        return -1;
    }
    c->items = *batch ? *n : 0;
    if (!*batch && ((*items)[0].ciphertext == NULL || (*items)[0].ciphertext[0] == '\0')) {
        return KMS_FAIL(c, 400, "missing ciphertext to decrypt");
    }
    if (check_context_mix(c, *items, *n) != 0 || open_policy(c, name, vc, p) != 0) {
        return -1;
    }
    return 0;
}

static int decrypt(struct kms_ctx *c)
{
    const char *name = kms_cap(c, "name");
    struct item *items = NULL;
    size_t n = 0;
    bool batch;
    struct kms_key_policy p;
    struct vcache vc = {.n = 0, .txn = NULL, .seq = kms_keycache_seq(transit_kc(c))};
    int rc = -1;

    if (ciphertext_items(c, item_fields, name, &items, &n, &batch, &vc, &p) != 0) {
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        uint8_t *pt = NULL;
        size_t ptlen = 0;
        struct item *it = &items[i];
        if (decrypt_one(c, name, &p, &vc, it, i, true, &pt, &ptlen) != 0) {
            continue;
        }
        it->out_len = kms_b64_encoded_len(ptlen) + 1;
        it->out = malloc(it->out_len);
        if (it->out == NULL) {
            kms_free_wipe((void **)&pt, ptlen);
            KMS_FAILW(c, 500, "out of memory");
            goto out;
        }
        kms_b64_encode(pt, ptlen, it->out);
        kms_free_wipe((void **)&pt, ptlen);
        it->kind = ITEM_OK;
    }
    if (!batch) {
        if (items[0].kind != ITEM_OK) {
            single_error(c, &items[0]);
            goto out;
        }
        c->data = json_pack("{s:s}", "plaintext", items[0].out);
    } else {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++) {
            const struct item *it = &items[i];
            json_t *o = json_pack("{s:s}", "plaintext", it->kind == ITEM_OK ? it->out : "");
            if (it->kind != ITEM_OK) {
                json_object_set_new(o, "error", json_string(it->err.msg));
            }
            json_object_set_new(o, "reference", json_string(it->reference));
            json_array_append_new(arr, o);
        }
        c->status = batch_status(c, items, n);
        c->data = json_pack("{s:o}", "batch_results", arr);
    }
    rc = 0;
out:
    vcache_dispose(&vc);
    free_items(items, n);
    return rc;
}

static int rewrap(struct kms_ctx *c)
{
    const char *name = kms_cap(c, "name");
    struct item *items = NULL;
    size_t n = 0;
    bool batch;
    struct kms_key_policy p;
    struct vcache vc = {.n = 0, .txn = NULL, .seq = kms_keycache_seq(transit_kc(c))};
    int rc = -1;

    if (ciphertext_items(c, rewrap_fields, name, &items, &n, &batch, &vc, &p) != 0) {
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        uint8_t *pt = NULL;
        size_t ptlen = 0;
        struct item *it = &items[i];
        if (decrypt_one(c, name, &p, &vc, it, i, false, &pt, &ptlen) != 0) {
            continue;
        }
        (void)encrypt_one(c, name, &p, &vc, it, i, pt, ptlen);
        kms_free_wipe((void **)&pt, ptlen);
    }
    /* OpenBao's rewrap keeps only user errors per item: the first other error (an RSA
     * ciphertext that does not decrypt, a failed read) fails the whole request, batch or not */
    for (size_t i = 0; batch && i < n; i++) {
        if (items[i].kind == ITEM_INTERNAL_ERR) {
            single_error(c, &items[i]);
            goto out;
        }
    }
    if (!batch) {
        if (items[0].kind != ITEM_OK) {
            single_error(c, &items[0]);
            goto out;
        }
        if (!encrypt_result_text(c, &items[0])) {
            c->data = json_pack("{s:s, s:i}", "ciphertext", items[0].out, "key_version",
                                (int)items[0].out_version);
        }
    } else {
        /* otherwise rewrap batches answer 200, user errors inside */
        if (!encrypt_results_text(c, items, n)) {
            c->data = json_pack("{s:o}", "batch_results", encrypt_results(items, n));
        }
    }
    rc = 0;
out:
    vcache_dispose(&vc);
    free_items(items, n);
    return rc;
}

/* ---- datakey ----------------------------------------------------------------------------- */

static int datakey(struct kms_ctx *c)
{
    const char *name = kms_cap(c, "name");
    const char *kind = kms_cap(c, "plaintext");
    struct kms_key_policy p;
    struct vcache vc = {.n = 0, .txn = NULL, .seq = kms_keycache_seq(transit_kc(c))};
    struct item it;
    uint8_t key[64];
    int64_t bits = 256;
    int rc = -1;

    memset(&it, 0, sizeof(it));
    bool plaintext = strcmp(kind, "plaintext") == 0;
    if (!plaintext && strcmp(kind, "wrapped") != 0) {
        return KMS_FAIL(c, 400, "Invalid path, must be 'plaintext' or 'wrapped'");
    }
    (void)kms_param_str(c, "context", &it.context);
    (void)kms_param_str(c, "associated_data", &it.aad);
    (void)kms_param_int(c, "key_version", &it.key_version);
    if (it.context != NULL && it.context[0] != '\0') {
        uint8_t *tmp = NULL;
        size_t tl = 0;
        size_t at;
        if (kms_b64_decode_alloc(it.context, strlen(it.context), &tmp, &tl, &at) != 0) {
            return KMS_FAIL(c, 400, "failed to base64-decode context");
        }
        kms_free_wipe((void **)&tmp, tl);
    }
    if (open_policy(c, name, &vc, &p) != 0) {
        goto out;
    }
    (void)kms_param_int(c, "bits", &bits);
    if (bits != 128 && bits != 256 && bits != 512) {
        KMS_FAIL(c, 400, "invalid bit length");
        goto out;
    }
    if (it.aad != NULL && it.aad[0] != '\0' && !kms_key_type_is_aead(p.type)) {
        KMS_FAIL(c, 400, "'associated_data' provided for non-AEAD cipher suite %s",
                 kms_key_type_name(p.type));
        goto out;
    }
    size_t klen = (size_t)bits / 8;
    if (kms_rand_bytes(key, klen) != 0) {
        KMS_FAILW(c, 500, "cannot generate a data key");
        goto out;
    }
    if (encrypt_one(c, name, &p, &vc, &it, 0, key, klen) != 0) {
        single_error(c, &it);
        goto out;
    }
    c->data = json_pack("{s:s, s:i}", "ciphertext", it.out, "key_version", (int)it.out_version);
    if (plaintext) {
        char b64[90];
        kms_b64_encode(key, klen, b64);
        json_object_set_new(c->data, "plaintext", json_string(b64));
        kms_memzero(b64, sizeof(b64));
    }
    rc = 0;
out:
    kms_memzero(key, sizeof(key));
    vcache_dispose(&vc);
    free(it.out);
    return rc;
}

/* ---- mount-wide config ------------------------------------------------------------------- */

static int config_keys(struct kms_ctx *c, bool write)
{
    struct kms_txn *txn = NULL;
    bool disabled = false;
    int rc = -1;
    if (!write) {
        if (kms_storage_txn_begin(kms_api_storage(c->api), false, &txn) != 0 ||
            mount_disable_upsert(c, txn, &disabled) != 0) {
            KMS_FAILW(c, 500, "cannot read mount config");
            goto out;
        }
    } else {
        char prefix[96];
        char key[160];
        bool v;
        if (kms_storage_txn_begin(kms_api_storage(c->api), true, &txn) != 0 ||
            mount_disable_upsert(c, txn, &disabled) != 0) {
            KMS_FAILW(c, 500, "cannot read mount config");
            goto out;
        }
        if (kms_param_bool(c, "disable_upsert", &v)) {
            disabled = v;
        }
        uint8_t byte = disabled ? 1 : 0;
        kms_mount_prefix(&c->mount, prefix, sizeof(prefix));
        snprintf(key, sizeof(key), "%s%s", TRANSIT_CFG_META, prefix);
        if (kms_storage_put(txn, KMS_DB_META, key, strlen(key), &byte, 1) != 0 ||
            kms_storage_txn_commit(&txn) != 0) {
            KMS_FAILW(c, 500, "cannot store mount config");
            goto out;
        }
    }
    c->data = json_pack("{s:b}", "disable_upsert", disabled);
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    return rc;
}

static int config_keys_read(struct kms_ctx *c)
{
    return config_keys(c, false);
}

static int config_keys_write(struct kms_ctx *c)
{
    return config_keys(c, true);
}

/* ---- operations for the KMSKey engine (api/kms.c) ---------------------------------------- */

/* Latest version's creation time (unix seconds) of a loaded policy. */
static int latest_created(const struct kms_mount *m, struct kms_txn *txn, const char *name,
                          const struct kms_key_policy *p, int64_t *out)
{
    struct kms_key_version kv;
    int g = load_version(m, txn, name, p->latest_version, &kv);
    *out = g == 0 ? kv.created_sec : p->created_sec;
    kms_memzero(&kv, sizeof(kv));
    return g < 0 ? -1 : 0;
}

int kms_transit_key_get(struct kms_transit *t, const struct kms_mount *m, const char *name,
                        struct kms_key_policy *p, int64_t *last_rotated, struct kms_err *err)
{
    struct kms_txn *txn = NULL;
    int rc = -1;
    if (kms_storage_txn_begin(kms_api_storage(t->api), false, &txn) != 0) {
        return kms_err_setw(err, 500, "cannot open storage transaction");
    }
    int g = load_policy(m, txn, name, p);
    if (g == KMS_STORAGE_NOTFOUND) {
        rc = KMS_STORAGE_NOTFOUND;
        goto out;
    }
    if (g != 0 || latest_created(m, txn, name, p, last_rotated) != 0) {
        kms_err_setw(err, 500, "cannot read key %s", name);
        goto out;
    }
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    return rc;
}

/* Rotate key `name` (policy *p, read in *txn): a new latest version, stored and committed. */
static int append_version(struct kms_transit *t, const struct kms_mount *m, const char *name,
                          struct kms_txn **txn, struct kms_key_policy *p,
                          struct kms_key_version *kv, struct kms_err *err)
{
    p->imported = false;
    p->latest_version++;
    if (kms_key_version_generate(p, p->latest_version, kv) != 0 ||
        store_version(m, *txn, name, kv) != 0 || store_policy(m, *txn, name, p) != 0 ||
        commit_key(t, m, name, txn) != 0) {
        return kms_err_setw(err, 500, "cannot rotate key %s", name);
    }
    return 0;
}

/* When auto-rotation makes a key due (transit-api.md 5): the latest version's creation time
 * plus the period; 0 when it never is (no period, an imported key without allow_rotation, a
 * soft-deleted key). */
static int64_t rotate_due_at(const struct kms_key_policy *p, int64_t latest_created_sec)
{
    if (p->auto_rotate_period <= 0 || (p->imported && !p->allow_imported_rotation) ||
        p->soft_deleted || p->latest_version == UINT32_MAX) {
        return 0;
    }
    if (latest_created_sec > INT64_MAX - p->auto_rotate_period) {
        return 0;
    }
    return latest_created_sec + p->auto_rotate_period;
}

int kms_transit_key_due(const struct kms_mount *m, struct kms_txn *txn, const char *name,
                        const struct kms_key_policy *p, int64_t *due)
{
    int64_t latest = 0;
    *due = 0;
    if (rotate_due_at(p, 0) == 0) {
        return 0; /* never due: no need to read the latest version */
    }
    if (latest_created(m, txn, name, p, &latest) != 0) {
        return -1;
    }
    *due = rotate_due_at(p, latest);
    return 0;
}

int kms_transit_key_rotate_due(struct kms_transit *t, const struct kms_mount *m, const char *name,
                               int64_t now, struct kms_key_policy *out, int64_t *next_due,
                               struct kms_err *err)
{
    struct kms_txn *txn = NULL;
    struct kms_key_version kv;
    int64_t latest = 0, due;
    int rc = -1;

    memset(&kv, 0, sizeof(kv));
    *next_due = 0;
    if (kms_storage_txn_begin(kms_api_storage(t->api), true, &txn) != 0) {
        return kms_err_setw(err, 500, "cannot open storage transaction");
    }
    int g = load_policy(m, txn, name, out);
    if (g == KMS_STORAGE_NOTFOUND) {
        rc = KMS_STORAGE_NOTFOUND;
        goto out;
    }
    if (g != 0 || latest_created(m, txn, name, out, &latest) != 0) {
        kms_err_setw(err, 500, "cannot read key %s", name);
        goto out;
    }
    due = rotate_due_at(out, latest);
    if (due == 0 || now <= due) {
        *next_due = due; /* not (or no longer) due: a rotation in between moved it */
        rc = 0;
        goto out;
    }
    if (append_version(t, m, name, &txn, out, &kv, err) != 0) {
        goto out;
    }
    *next_due = rotate_due_at(out, kv.created_sec);
    rc = 1;
out:
    kms_memzero(&kv, sizeof(kv));
    kms_storage_txn_abort(&txn);
    return rc;
}

int kms_transit_key_create(struct kms_transit *t, const struct kms_mount *m, const char *name,
                           enum kms_key_type type, struct kms_key_policy *out, bool *existed,
                           struct kms_err *err)
{
    struct kms_txn *txn = NULL;
    struct kms_key_version kv;
    int rc = -1;

    memset(&kv, 0, sizeof(kv));
    *existed = false;
    if (kms_storage_txn_begin(kms_api_storage(t->api), true, &txn) != 0) {
        return kms_err_setw(err, 500, "cannot open storage transaction");
    }
    int g = load_policy(m, txn, name, out);
    if (g == 0) {
        *existed = true;
        rc = 0;
        goto out;
    }
    if (g != KMS_STORAGE_NOTFOUND || kms_key_policy_init(out, type) != 0) {
        kms_err_setw(err, 500, "cannot read key %s", name);
        goto out;
    }
    out->latest_version = 1;
    out->min_decryption_version = 1;
    out->deletion_allowed = false;
    out->exportable = false;
    if (kms_key_version_generate(out, 1, &kv) != 0) {
        kms_err_setw(err, 500, "cannot generate key material");
        goto out;
    }
    out->created_sec = kv.created_sec;
    if (store_version(m, txn, name, &kv) != 0 || store_policy(m, txn, name, out) != 0 ||
        commit_key(t, m, name, &txn) != 0) {
        kms_err_setw(err, 500, "cannot store key %s", name);
        goto out;
    }
    rc = 0;
out:
    kms_memzero(&kv, sizeof(kv));
    kms_storage_txn_abort(&txn);
    return rc;
}

int kms_transit_key_rotate(struct kms_transit *t, const struct kms_mount *m, const char *name,
                           struct kms_key_policy *out, struct kms_err *err)
{
    struct kms_txn *txn = NULL;
    struct kms_key_version kv;
    int rc = -1;

    memset(&kv, 0, sizeof(kv));
    if (kms_storage_txn_begin(kms_api_storage(t->api), true, &txn) != 0) {
        return kms_err_setw(err, 500, "cannot open storage transaction");
    }
    int g = load_policy(m, txn, name, out);
    if (g == KMS_STORAGE_NOTFOUND) {
        kms_err_set(err, 400, "key not found");
        goto out;
    }
    if (g != 0 || out->latest_version == UINT32_MAX) {
        kms_err_setw(err, 500, "cannot rotate key %s", name);
        goto out;
    }
    if (out->imported && !out->allow_imported_rotation) {
        kms_err_setw(err, 500, "imported key %s does not allow rotation within Vault", name);
        goto out;
    }
    if (out->soft_deleted) {
        kms_err_setw(err, 500, "%s", KMS_MSG_SOFT_DELETED);
        goto out;
    }
    if (append_version(t, m, name, &txn, out, &kv, err) != 0) {
        goto out;
    }
    rc = 0;
out:
    kms_memzero(&kv, sizeof(kv));
    kms_storage_txn_abort(&txn);
    return rc;
}

int kms_transit_key_raise_floor(struct kms_transit *t, const struct kms_mount *m, const char *name,
                                uint32_t version, struct kms_key_policy *out, struct kms_err *err)
{
    struct kms_txn *txn = NULL;
    struct kms_key_config cfg;
    char warning[256];
    int rc = -1;

    if (kms_storage_txn_begin(kms_api_storage(t->api), true, &txn) != 0) {
        return kms_err_setw(err, 500, "cannot open storage transaction");
    }
    int g = load_policy(m, txn, name, out);
    if (g == KMS_STORAGE_NOTFOUND) {
        kms_err_set(err, 404, "transit key %s not found", name);
        goto out;
    }
    if (g != 0) {
        kms_err_setw(err, 500, "cannot read key %s", name);
        goto out;
    }
    if (version < out->min_decryption_version) {
        kms_err_set(err, 400,
                    "min decryption version cannot be lowered (it is %u): raising it is "
                    "irreversible",
                    out->min_decryption_version);
        goto out;
    }
    if (version > out->latest_version) {
        kms_err_set(err, 400, "cannot set min decryption version of %u, latest key version is %u",
                    version, out->latest_version);
        goto out;
    }
    /* floor for decryption and explicit-version encryption, then destroy older versions */
    memset(&cfg, 0, sizeof(cfg));
    cfg.has_min_decryption_version = true;
    cfg.min_decryption_version = version;
    if (out->min_encryption_version < version) {
        cfg.has_min_encryption_version = true;
        cfg.min_encryption_version = version;
    }
    uint32_t old_min = out->min_available_version;
    if (kms_keyring_config(out, &cfg, warning, sizeof(warning), err) != 0 ||
        (version > out->min_available_version && kms_keyring_trim(out, true, version, err) != 0)) {
        goto out;
    }
    for (uint32_t v = old_min > 1 ? old_min : 1; v < out->min_available_version; v++) {
        uint8_t key[KEYREC_MAX + 8];
        size_t n = version_key(m, name, v, key);
        if (kms_storage_del(txn, KMS_DB_KEY_VERSIONS, key, n) < 0) {
            kms_err_setw(err, 500, "cannot trim key %s", name);
            goto out;
        }
    }
    if (kms_transit_chain_drop(m, txn, name, old_min, out->min_available_version) != 0) {
        kms_err_setw(err, 500, "cannot trim key %s", name);
        goto out;
    }
    if (store_policy(m, txn, name, out) != 0 || commit_key(t, m, name, &txn) != 0) {
        kms_err_setw(err, 500, "cannot store key %s", name);
        goto out;
    }
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    return rc;
}

int kms_transit_key_destroy(struct kms_transit *t, const struct kms_mount *m, const char *name,
                            struct kms_err *err)
{
    struct kms_txn *txn = NULL;
    uint8_t prefix[KEYREC_MAX + 8];
    char key[KEYREC_MAX];
    int rc = -1;

    if (kms_storage_txn_begin(kms_api_storage(t->api), true, &txn) != 0) {
        return kms_err_setw(err, 500, "cannot open storage transaction");
    }
    size_t kn = policy_key(m, name, key);
    memcpy(prefix, key, kn);
    prefix[kn] = '/';
    int d = kms_storage_del(txn, KMS_DB_KEYS, key, kn);
    if (d < 0 || kms_storage_del_prefix(txn, KMS_DB_KEY_VERSIONS, prefix, kn + 1, NULL) != 0 ||
        kms_transit_chain_drop(m, txn, name, 0, 0) != 0 || commit_key(t, m, name, &txn) != 0) {
        kms_err_setw(err, 500, "cannot delete key %s", name);
        goto out;
    }
    rc = d == KMS_STORAGE_NOTFOUND ? KMS_STORAGE_NOTFOUND : 0;
out:
    kms_storage_txn_abort(&txn);
    return rc;
}

/* ---- key access for the other Transit endpoints (transit_hmac.c) ------------------------ */

int kms_transit_read_key(struct kms_ctx *c, const char *name, struct kms_key_policy *p)
{
    struct vcache vc = {.n = 0, .txn = NULL, .seq = kms_keycache_seq(transit_kc(c))};
    int g = read_policy(c, &vc, name, p);
    vcache_dispose(&vc);
    return g;
}

int kms_transit_read_version(struct kms_ctx *c, const char *name, uint32_t version,
                             struct kms_key_version *out, struct kms_err *err)
{
    struct vcache vc = {.n = 0, .txn = NULL, .seq = kms_keycache_seq(transit_kc(c))};
    const struct kms_key_version *kv = NULL;
    int rc = get_version(c, name, &vc, version, &kv, err);
    if (rc == 0) {
        *out = *kv;
    }
    vcache_dispose(&vc);
    return rc;
}

/* ---- whole-key records for restore (backup.c) ------------------------------------------- */

int kms_transit_rec_policy(const struct kms_mount *m, struct kms_txn *txn, const char *name,
                           struct kms_key_policy *p)
{
    return load_policy(m, txn, name, p);
}

int kms_transit_rec_drop(const struct kms_mount *m, struct kms_txn *txn, const char *name)
{
    uint8_t prefix[KEYREC_MAX + 8];
    size_t kn = policy_key(m, name, (char *)prefix);
    prefix[kn] = '/';
    if (kms_storage_del_prefix(txn, KMS_DB_KEY_VERSIONS, prefix, kn + 1, NULL) != 0 ||
        kms_storage_del(txn, KMS_DB_KEYS, prefix, kn) < 0 ||
        kms_transit_chain_drop(m, txn, name, 0, 0) != 0) {
        return -1;
    }
    return 0;
}

int kms_transit_rec_put_version(const struct kms_mount *m, struct kms_txn *txn, const char *name,
                                const struct kms_key_version *kv)
{
    return store_version(m, txn, name, kv);
}

int kms_transit_rec_commit(struct kms_transit *t, const struct kms_mount *m, const char *name,
                           const struct kms_key_policy *p, struct kms_txn **txn)
{
    if (store_policy(m, *txn, name, p) != 0 || commit_key(t, m, name, txn) != 0) {
        return -1;
    }
    if (p->auto_rotate_period > 0) {
        kms_transit_autorotate_kick(t);
    }
    return 0;
}

/* ---- routes ------------------------------------------------------------------------------ */

static const struct kms_field f_keys[] = {
    {"type", KMS_F_STRING},
    {"derived", KMS_F_BOOL},
    {"convergent_encryption", KMS_F_BOOL},
    {"exportable", KMS_F_BOOL},
    {"allow_plaintext_backup", KMS_F_BOOL},
    {"auto_rotate_period", KMS_F_UDURATION},
    {"key_size", KMS_F_INT},
    {"external_key_ref", KMS_F_STRING},
    {"context", KMS_F_STRING},
    {NULL, 0},
};

static const struct kms_field f_list[] = {
    {"after", KMS_F_STRING},
    {"limit", KMS_F_INT},
    {NULL, 0},
};

static const struct kms_field f_config[] = {
    {"min_decryption_version", KMS_F_INT},
    {"min_encryption_version", KMS_F_INT},
    {"deletion_allowed", KMS_F_BOOL},
    {"exportable", KMS_F_BOOL},
    {"allow_plaintext_backup", KMS_F_BOOL},
    {"auto_rotate_period", KMS_F_UDURATION},
    {NULL, 0},
};

static const struct kms_field f_rotate[] = {
    {"external_key_ref", KMS_F_STRING},
    {NULL, 0},
};

static const struct kms_field f_trim[] = {
    {"min_available_version", KMS_F_INT},
    {NULL, 0},
};

static const struct kms_field f_encrypt[] = {
    {"plaintext", KMS_F_STRING},
    {"context", KMS_F_STRING},
    {"key_version", KMS_F_INT},
    {"associated_data", KMS_F_STRING},
    {"type", KMS_F_STRING},
    {"convergent_encryption", KMS_F_BOOL},
    {"batch_input", KMS_F_RAW},
    {"partial_failure_response_code", KMS_F_INT},
    {NULL, 0},
};

static const struct kms_field f_decrypt[] = {
    {"ciphertext", KMS_F_STRING},
    {"context", KMS_F_STRING},
    {"associated_data", KMS_F_STRING},
    {"batch_input", KMS_F_RAW},
    {"partial_failure_response_code", KMS_F_INT},
    {NULL, 0},
};

static const struct kms_field f_rewrap[] = {
    {"ciphertext", KMS_F_STRING},
    {"context", KMS_F_STRING},
    {"key_version", KMS_F_INT},
    {"batch_input", KMS_F_RAW},
    {NULL, 0},
};

static const struct kms_field f_datakey[] = {
    {"context", KMS_F_STRING},         {"bits", KMS_F_INT}, {"key_version", KMS_F_INT},
    {"associated_data", KMS_F_STRING}, {NULL, 0},
};

static const struct kms_field f_config_keys[] = {
    {"disable_upsert", KMS_F_BOOL},
    {NULL, 0},
};

static const struct kms_field f_export[] = {
    {"format", KMS_F_STRING},
    {NULL, 0},
};

/* keys/:name/config raising min_decryption_version is audited as that operation. */
static const char *config_audit_op(const struct kms_ctx *c)
{
    return json_object_get(c->params, "min_decryption_version") != NULL
               ? "set-min-decryption-version"
               : NULL;
}

/*
 * The installed ownership check (project-bound tokens, see kms_transit_set_owner_check) for
 * the key a route names.
 */
static int owner_check(struct kms_ctx *c)
{
    const struct kms_transit *t = c->estate;
    const char *name = kms_cap(c, "name");
    if (t->owner_fn == NULL || name == NULL || t->owner_fn(t->owner_arg, c, name)) {
        return 0;
    }
    return KMS_FAILW(c, 403, "permission denied");
}

/* Every route that names a key runs the ownership check before the request line and its
 * handler (kms_engine.authorize), so that no handler can forget it and a refusal is recorded
 * as a policy refusal. */
static int transit_authorize(struct kms_ctx *c)
{
    const struct kms_transit *t = c->estate;
    if (owner_check(c) != 0) {
        return -1;
    }
    /* derive-key names a second key in its body */
    if (t->owner_fn == NULL || strncmp(c->route->tmpl, "derive-key/", 11) != 0) {
        return 0;
    }
    const char *base = json_string_value(json_object_get(c->params, "base_key_name"));
    if (base != NULL && !t->owner_fn(t->owner_arg, c, base)) {
        return KMS_FAILW(c, 403, "permission denied");
    }
    return 0;
}

/*
 * A batch with an RSA key may run long (an RSA-4096 decryption is milliseconds an item): more
 * than 16 items go to the handler threads (kms_engine.slow). Other batches stay on the worker
 * up to KMS_OFFLOAD_BATCH items (a 1000-item AES batch is under a millisecond; the hop to a
 * handler thread cost the 1000-item bench batch 5 %).
 */
static bool transit_slow(struct kms_ctx *c)
{
    const char *name = kms_cap(c, "name");
    if (name == NULL) {
        return false;
    }
    struct kms_key_policy p;
    if (cached_policy(c, name, &p) != 0) {
        return false;
    }
    return p.type == KMS_KEY_RSA2048 || p.type == KMS_KEY_RSA3072 || p.type == KMS_KEY_RSA4096;
}

void kms_transit_set_created_hook(struct kms_transit *t, kms_transit_created_fn fn, void *arg)
{
    t->created_fn = fn;
    t->created_arg = arg;
}

int kms_transit_note_created(struct kms_ctx *c, struct kms_txn *txn, const char *name)
{
    struct kms_transit *t = c->estate;
    if (t->created_fn == NULL) {
        return 0;
    }
    return t->created_fn(t->created_arg, c, txn, name);
}

void kms_transit_set_owner_check(struct kms_transit *t, kms_transit_owner_fn fn, void *arg)
{
    t->owner_fn = fn;
    t->owner_arg = arg;
}

void kms_transit_set_managed_check(struct kms_transit *t, kms_transit_managed_fn fn, void *arg)
{
    t->managed_fn = fn;
    t->managed_arg = arg;
}

int kms_transit_refuse_managed(struct kms_ctx *c, const char *name, const char *what)
{
    const struct kms_transit *t = c->estate;
    char owner[2 * KMS_PATH_MAX];
    if (c->has_token && c->token.root) {
        return 0; /* the platform's break-glass: a root token may, as in OpenBao */
    }
    if (t->managed_fn == NULL || !t->managed_fn(t->managed_arg, c, name, owner, sizeof(owner))) {
        return 0;
    }
    return KMS_FAIL(c, 400, "transit key %s is managed by %s: %s", name, owner, what);
}

#define PURE KMS_EFFECT_PURE

static const struct kms_route transit_routes[] = {
    {.tmpl = "keys/", .fields = f_list, .on = {[KMS_OP_LIST] = {keys_list, "list", 0}}},
    /* GET transit/keys: 405, as in OpenBao */
    {.tmpl = "keys", .fields = f_list, .on = {[KMS_OP_LIST] = {keys_list, "list", 0}}},
    {.tmpl = "keys/:name",
     .fields = f_keys,
     .flags = KMS_RT_SLOW,
     .on = {[KMS_OP_READ] = {keys_read, "read", 0},
            [KMS_OP_UPDATE] = {keys_write, "create", 0},
            [KMS_OP_DELETE] = {keys_delete, "delete", 0}}},
    {.tmpl = "keys/:name/config",
     .fields = f_config,
     .audit_op_of = config_audit_op,
     .on = {[KMS_OP_UPDATE] = {keys_config, "config", 0}}},
    {.tmpl = "keys/:name/rotate",
     .flags = KMS_RT_SLOW,
     .fields = f_rotate,
     .on = {[KMS_OP_UPDATE] = {keys_rotate, "rotate", 0}}},
    {.tmpl = "keys/:name/soft-delete",
     .on = {[KMS_OP_DELETE] = {keys_soft_delete, "soft-delete", 0}}},
    {.tmpl = "keys/:name/soft-delete-restore",
     .on = {[KMS_OP_UPDATE] = {keys_soft_delete_restore, "soft-delete-restore", 0}}},
    {.tmpl = "keys/:name/import",
     .flags = KMS_RT_SLOW,
     .fields = kms_transit_import_fields,
     .on = {[KMS_OP_UPDATE] = {kms_transit_import, "import", 0}}},
    {.tmpl = "keys/:name/import_version",
     .flags = KMS_RT_SLOW,
     .fields = kms_transit_import_version_fields,
     .on = {[KMS_OP_UPDATE] = {kms_transit_import_version, "import", 0}}},
    {.tmpl = "byok-export/:destination/:name",
     .absent_caps = "version",
     .fields = kms_transit_byok_export_fields,
     .on = {[KMS_OP_READ] = {kms_transit_byok_export, "export", 0}}},
    {.tmpl = "byok-export/:destination/:name/+version",
     .fields = kms_transit_byok_export_fields,
     .on = {[KMS_OP_READ] = {kms_transit_byok_export, "export", 0}}},
    {.tmpl = "keys/:name/csr",
     .flags = KMS_RT_SLOW,
     .fields = kms_transit_csr_fields,
     .on = {[KMS_OP_UPDATE] = {kms_transit_csr, "csr", PURE}}},
    {.tmpl = "keys/:name/set-certificate",
     .fields = kms_transit_set_certificate_fields,
     .on = {[KMS_OP_UPDATE] = {kms_transit_set_certificate, "set-certificate", 0}}},
    {.tmpl = "derive-key/:name",
     .fields = kms_transit_derive_key_fields,
     .on = {[KMS_OP_UPDATE] = {kms_transit_derive_key, "derive-key", 0}}},
    {.tmpl = "wrapping_key",
     .resource = "TransitMount",
     .on = {[KMS_OP_READ] = {kms_transit_wrapping_key_read, "read", KMS_EFFECT_READ_WRITES}}},
    {.tmpl = "keys/:name/trim", .fields = f_trim, .on = {[KMS_OP_UPDATE] = {keys_trim, "trim", 0}}},
    {.tmpl = "encrypt/:name",
     .fields = f_encrypt,
     .exists = encrypt_exists,
     .on = {[KMS_OP_CREATE] = {encrypt, "encrypt", PURE},
            [KMS_OP_UPDATE] = {encrypt, "encrypt", PURE}}},
    {.tmpl = "decrypt/:name",
     .fields = f_decrypt,
     .on = {[KMS_OP_UPDATE] = {decrypt, "decrypt", PURE}}},
    {.tmpl = "rewrap/:name",
     .fields = f_rewrap,
     .on = {[KMS_OP_UPDATE] = {rewrap, "rewrap", PURE}}},
    {.tmpl = "datakey/+plaintext/:name",
     .fields = f_datakey,
     .on = {[KMS_OP_UPDATE] = {datakey, "datakey", PURE}}},
    {.tmpl = "export/+type/:name",
     .absent_caps = "version",
     .fields = f_export,
     .on = {[KMS_OP_READ] = {kms_transit_export, "export", 0}}},
    {.tmpl = "export/+type/:name/+version",
     .fields = f_export,
     .on = {[KMS_OP_READ] = {kms_transit_export, "export", 0}}},
    {.tmpl = "cache-config",
     .fields = kms_transit_cache_config_fields,
     .resource = "TransitMount",
     .on = {[KMS_OP_READ] = {kms_transit_cache_config_read, "config", 0},
            [KMS_OP_UPDATE] = {kms_transit_cache_config_write, "config", 0}}},
    {.tmpl = "config/keys",
     .fields = f_config_keys,
     .resource = "TransitMount",
     .on = {[KMS_OP_READ] = {config_keys_read, "config", 0},
            [KMS_OP_UPDATE] = {config_keys_write, "config", 0}}},
    {.tmpl = "hmac/:name",
     .absent_caps = "urlalgorithm",
     .fields = kms_transit_hmac_fields,
     .on = {[KMS_OP_UPDATE] = {kms_transit_hmac, NULL, 0}}},
    {.tmpl = "hmac/:name/+urlalgorithm",
     .fields = kms_transit_hmac_fields,
     .on = {[KMS_OP_UPDATE] = {kms_transit_hmac, NULL, 0}}},
    {.tmpl = "verify/:name",
     .absent_caps = "urlalgorithm",
     .flags = KMS_RT_SLOW,
     .fields = kms_transit_verify_fields,
     .on = {[KMS_OP_UPDATE] = {kms_transit_verify, NULL, 0}}},
    {.tmpl = "verify/:name/+urlalgorithm",
     .flags = KMS_RT_SLOW,
     .fields = kms_transit_verify_fields,
     .on = {[KMS_OP_UPDATE] = {kms_transit_verify, NULL, 0}}},
    {.tmpl = "sign/:name",
     .absent_caps = "urlalgorithm",
     .flags = KMS_RT_SLOW,
     .fields = kms_transit_sign_fields,
     .on = {[KMS_OP_UPDATE] = {kms_transit_sign, NULL, 0}}},
    {.tmpl = "sign/:name/+urlalgorithm",
     .flags = KMS_RT_SLOW,
     .fields = kms_transit_sign_fields,
     .on = {[KMS_OP_UPDATE] = {kms_transit_sign, NULL, 0}}},
    {.tmpl = "backup/:name", .on = {[KMS_OP_READ] = {kms_transit_backup, "backup", 0}}},
    /* restore checks the owner of the name it restores to (the backup's when none is given) */
    {.tmpl = "restore",
     .absent_caps = "name",
     .flags = KMS_RT_SLOW,
     .fields = kms_transit_restore_fields,
     .on = {[KMS_OP_UPDATE] = {kms_transit_restore, "restore", 0}}},
    {.tmpl = "restore/:name",
     .flags = KMS_RT_SLOW,
     .fields = kms_transit_restore_fields,
     .on = {[KMS_OP_UPDATE] = {kms_transit_restore, "restore", 0}}},
    {.tmpl = "hash",
     .absent_caps = "urlalgorithm",
     .resource = "TransitMount",
     .fields = kms_transit_hash_fields,
     .on = {[KMS_OP_UPDATE] = {kms_transit_hash, NULL, 0}}},
    {.tmpl = "hash/+urlalgorithm",
     .resource = "TransitMount",
     .fields = kms_transit_hash_fields,
     .on = {[KMS_OP_UPDATE] = {kms_transit_hash, NULL, 0}}},
    {.tmpl = "random",
     .absent_caps = "source urlbytes",
     .resource = "TransitMount",
     .fields = kms_transit_random_fields,
     .on = {[KMS_OP_UPDATE] = {kms_transit_random, NULL, 0}}},
    {.tmpl = "random/+source",
     .absent_caps = "urlbytes",
     .resource = "TransitMount",
     .fields = kms_transit_random_fields,
     .on = {[KMS_OP_UPDATE] = {kms_transit_random, NULL, 0}}},
    {.tmpl = "random/+source/+urlbytes",
     .resource = "TransitMount",
     .fields = kms_transit_random_fields,
     .on = {[KMS_OP_UPDATE] = {kms_transit_random, NULL, 0}}},
    KMS_ROUTES_END,
};

static void transit_purged(void *state, const char *ns_id, const struct kms_mount *m)
{
    struct kms_transit *t = state;
    (void)ns_id;
    if (m != NULL && strcmp(m->type, "transit") == 0) {
        kms_transit_cache_forget(t, m);
        kms_keycache_clear(t->kc);
        kms_aead_forget_all();
    }
}

static void transit_destroy(void *state)
{
    struct kms_transit *t = state;
    if (t != NULL) {
        kms_keycache_destroy(&t->kc);
        kms_transit_caches_destroy(&t->caches);
        /* the cipher contexts of every worker hold the keys too (commit_key): an HA replica
         * that stands down goes on running, with no request left to evict them */
        kms_aead_forget_all();
        free(t);
    }
}

int kms_transit_engine(struct kms_api *api, size_t key_cache_size, struct kms_engine *out,
                       struct kms_transit **state_out)
{
    struct kms_transit *t = calloc(1, sizeof(*t));
    if (t == NULL || kms_keycache_create(key_cache_size ? key_cache_size : 10000, &t->kc) != 0 ||
        kms_transit_caches_create(&t->caches) != 0) {
        transit_destroy(t);
        return -1;
    }
    t->api = api;
    memset(out, 0, sizeof(*out));
    out->type = "transit";
    out->resource = "KMSKey";
    out->routes = transit_routes;
    out->state = t;
    out->purge = transit_purge;
    out->purged = transit_purged;
    out->tick = kms_transit_tick;
    out->destroy = transit_destroy;
    out->authorize = transit_authorize;
    out->null_is_zero = true;
    out->slow = transit_slow;
    *state_out = t;
    return 0;
}
