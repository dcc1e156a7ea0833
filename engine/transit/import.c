/*
 * import.c - bring your own key (OpenBao's transit path_wrapping_key.go and path_import.go):
 * wrapping_key, keys/:name/import and keys/:name/import_version, and byok-export (path_byok.go),
 * which wraps a key of this mount for another mount's import under one of its RSA keys.
 *
 * Design notes:
 * - The wrapping key is one RSA-4096 version per mount, made on first use and kept as a
 *   sealed META record "transit_wrapping_key/<mount prefix>" (the mount purge deletes it with
 *   the mount's keys). It is generated outside any write transaction, since RSA-4096 takes
 *   seconds and LMDB has a single writer; if two first requests race, the one that commits
 *   first wins and the other uses its key.
 * - The order of checks and their statuses are OpenBao's: parameter errors it answers with an
 *   error response are 400s, errors its handler returns are 500s in multierror form, and a
 *   new key's import failures carry its "error importing key: " prefix.
 * - kmsd versions always hold private material, so the public_key form of import (public keys
 *   for verification only) is refused with a clear message instead of storing half a key.
 * - Unwrapped key material is wiped at `out:` on every path.
 */
#include "engine/transit/transit_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WRAPPING_META "transit_wrapping_key/"
#define WK_REC_MAX 160

/* ---- the wrapping key -------------------------------------------------------------------- */

static void wk_rec(const struct kms_mount *m, char *out)
{
    char prefix[96];
    kms_mount_prefix(m, prefix, sizeof(prefix));
    snprintf(out, WK_REC_MAX, "%s%s", WRAPPING_META, prefix);
}

int kms_transit_wrapping_key_purge(struct kms_txn *txn, const struct kms_mount *m)
{
    char rec[WK_REC_MAX];
    wk_rec(m, rec);
    return kms_storage_del(txn, KMS_DB_META, rec, strlen(rec)) < 0 ? -1 : 0;
}

static int wk_load(struct kms_txn *txn, const char *rec, struct kms_key_version *kv)
{
    uint8_t *val = NULL;
    size_t vallen = 0;
    int g = kms_storage_get(txn, KMS_DB_META, rec, strlen(rec), &val, &vallen);
    if (g == 0 && kms_key_version_decode(val, vallen, kv) != 0) {
        g = -1;
    }
    kms_free_wipe((void **)&val, vallen);
    return g;
}

/* The mount's wrapping key into *kv (wipe it after use), made and stored on first use. */
static int wrapping_key(struct kms_ctx *c, struct kms_key_version *kv)
{
    struct kms_storage *st = kms_api_storage(c->api);
    struct kms_txn *txn = NULL;
    struct kms_key_policy p;
    struct kms_key_version stored;
    uint8_t buf[KMS_KEY_VERSION_ENC_MAX];
    char rec[WK_REC_MAX];
    size_t len;
    int rc = -1;
    int g;

    memset(&stored, 0, sizeof(stored));
    memset(&p, 0, sizeof(p));
    p.type = KMS_KEY_RSA4096;
    wk_rec(&c->mount, rec);
    if (kms_storage_txn_begin(st, false, &txn) != 0) {
        KMS_FAILW(c, 500, "cannot open storage transaction");
        goto out;
    }
    g = wk_load(txn, rec, kv);
    kms_storage_txn_abort(&txn);
    if (g == 0) {
        rc = 0;
        goto out;
    }
    if (g != KMS_STORAGE_NOTFOUND) {
        KMS_FAILW(c, 500, "error retrieving wrapping key");
        goto out;
    }
    if (kms_key_version_generate(&p, 1, kv) != 0) {
        KMS_FAILW(c, 500, "error generating wrapping key");
        goto out;
    }
    if (kms_storage_txn_begin(st, true, &txn) != 0) {
        KMS_FAILW(c, 500, "cannot open storage transaction");
        goto out;
    }
    g = wk_load(txn, rec, &stored);
    if (g == 0) {
        *kv = stored;
        rc = 0;
        goto out;
    }
    len = kms_key_version_encode(kv, buf);
    if (g != KMS_STORAGE_NOTFOUND ||
        kms_storage_put(txn, KMS_DB_META, rec, strlen(rec), buf, len) != 0 ||
        kms_storage_txn_commit(&txn) != 0) {
        KMS_FAILW(c, 500, "error storing wrapping key");
        goto out;
    }
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    kms_memzero(buf, sizeof(buf));
    kms_memzero(&stored, sizeof(stored));
    if (rc != 0) {
        kms_memzero(kv, sizeof(*kv));
    }
    return rc;
}

int kms_transit_wrapping_key_read(struct kms_ctx *c)
{
    struct kms_key_version kv;
    struct kms_key_policy p;
    char *pem = NULL;
    int rc = -1;

    memset(&p, 0, sizeof(p));
    p.type = KMS_KEY_RSA4096;
    if (wrapping_key(c, &kv) != 0) {
        return -1;
    }
    if (kms_keyring_public_key(&p, &kv, NULL, 0, &pem, &c->err) != 0) {
        KMS_FAILW(c, 500, "error marshaling RSA public key");
        goto out;
    }
    c->data = json_pack("{s:s}", "public_key", pem);
    if (c->data == NULL) {
        KMS_FAILW(c, 500, "out of memory");
        goto out;
    }
    rc = 0;
out:
    free(pem);
    kms_memzero(&kv, sizeof(kv));
    return rc;
}

/* ---- shared steps ------------------------------------------------------------------------ */

/* OpenBao's hash_function names, any case. */
static int parse_hash_fn(const char *s, enum kms_hash *out)
{
    static const struct {
        const char *name;
        enum kms_hash h;
    } tab[] = {
        {"SHA1", KMS_HASH_SHA1},       {"SHA224", KMS_HASH_SHA2_224}, {"SHA256", KMS_HASH_SHA2_256},
        {"SHA384", KMS_HASH_SHA2_384}, {"SHA512", KMS_HASH_SHA2_512},
    };
    for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
        if (strcasecmp(s, tab[i].name) == 0) {
            *out = tab[i].h;
            return 0;
        }
    }
    return -1;
}

static bool public_import_type(enum kms_key_type t)
{
    return kms_key_type_supports_signing(t);
}

/*
 * The key material a request carries: the unwrapped ciphertext (malloc'd into *key, wipe with
 * kms_free_wipe), or a refusal of the public_key form.
 */
static int extract_key(struct kms_ctx *c, enum kms_key_type t, uint8_t **key, size_t *keylen)
{
    const char *ct = "";
    const char *hname = "SHA256";
    struct kms_key_version wk;
    enum kms_hash h;
    uint8_t *raw = NULL;
    size_t rawlen = 0, at = 0;
    int rc = -1;

    memset(&wk, 0, sizeof(wk));
    *key = NULL;
    *keylen = 0;
    /* OpenBao takes the public_key form whenever ciphertext is absent */
    if (json_object_get(c->params, "ciphertext") == NULL) {
        if (!public_import_type(t)) {
            KMS_FAILW(c, 500, "provided type does not support public_key import");
        } else {
            KMS_FAIL(c, 400,
                     "public_key import is not supported by kmsd; import the private "
                     "key as ciphertext");
        }
        goto out;
    }
    (void)kms_param_str(c, "hash_function", &hname);
    if (parse_hash_fn(hname, &h) != 0) {
        KMS_FAIL(c, 400, "unknown hash function: %s", hname);
        goto out;
    }
    (void)kms_param_str(c, "ciphertext", &ct);
    if (kms_b64_decode_alloc(ct, strlen(ct), &raw, &rawlen, &at) != 0) {
        KMS_FAILW(c, 500, "illegal base64 data at input byte %zu", at);
        goto out;
    }
    if (wrapping_key(c, &wk) != 0) {
        goto out;
    }
    if (kms_keyring_import_unwrap(&wk, h, raw, rawlen, key, keylen, &c->err) != 0) {
        c->err.wrapped = true;
        goto out;
    }
    rc = 0;
out:
    kms_memzero(&wk, sizeof(wk));
    kms_free_wipe((void **)&raw, rawlen);
    return rc;
}

/* Re-render the current error as OpenBao's import failure. */
static int import_failed(struct kms_ctx *c)
{
    char msg[sizeof(c->err.msg)];
    snprintf(msg, sizeof(msg), "%s", c->err.msg);
    return KMS_FAILW(c, 500, "error importing key: %s", msg);
}

/* ---- keys/:name/import ------------------------------------------------------------------- */

int kms_transit_import(struct kms_ctx *c)
{
    const char *name = kms_cap(c, "name");
    const char *tname = "aes256-gcm96";
    char lower[32];
    struct kms_key_policy p, old;
    struct kms_key_version kv;
    struct kms_txn *txn = NULL;
    uint8_t *key = NULL;
    size_t keylen = 0;
    int64_t period = 0;
    bool b;
    int rc = -1;
    int g;

    memset(&kv, 0, sizeof(kv));
    bool allow_rotation = kms_param_bool(c, "allow_rotation", &b) && b;
    (void)kms_param_int(c, "auto_rotate_period", &period);
    (void)kms_param_str(c, "type", &tname);
    if (json_object_get(c->params, "convergent_encryption") != NULL) {
        return KMS_FAILW(c, 500,
                         "import cannot be used on keys with convergent encryption "
                         "enabled");
    }
    if (period > 0 && !allow_rotation) {
        return KMS_FAILW(c, 500, "allow_rotation must be set to true if auto-rotation is enabled");
    }
    size_t i = 0;
    for (; tname[i] != '\0' && i + 1 < sizeof(lower); i++) {
        lower[i] = (char)tolower((unsigned char)tname[i]);
    }
    lower[i] = '\0';
    if (tname[i] != '\0' || kms_key_type_parse(lower, &p.type) != 0) {
        return KMS_FAIL(c, 400, "unknown key type: %s", tname);
    }
    if (kms_key_policy_init(&p, p.type) != 0) {
        return KMS_FAILW(c, 500, "cannot initialise key");
    }
    p.derived = kms_param_bool(c, "derived", &b) && b;
    /* OpenBao's ImportPolicy never sets the KDF: its imported derived keys derive with the
     * legacy counter mode (ed25519 keeps HKDF: the counter's 32 bytes make no ed25519 key) */
    p.kdf_counter = p.derived && kms_key_type_is_aead(p.type);
    p.exportable = kms_param_bool(c, "exportable", &b) && b;
    p.allow_plaintext_backup = kms_param_bool(c, "allow_plaintext_backup", &b) && b;
    p.auto_rotate_period = period;
    p.imported = true;
    p.allow_imported_rotation = allow_rotation;

    /* refused before the (costly) unwrap, and checked again in the write transaction */
    if (kms_storage_txn_begin(kms_api_storage(c->api), false, &txn) != 0) {
        return KMS_FAILW(c, 500, "cannot open storage transaction");
    }
    g = kms_transit_policy_load(&c->mount, txn, name, &old);
    kms_storage_txn_abort(&txn);
    if (g == 0) {
        return KMS_FAILW(c, 500,
                         "the import path cannot be used with an existing key; use "
                         "import-version to rotate an existing imported key");
    }
    if (g != KMS_STORAGE_NOTFOUND) {
        return KMS_FAILW(c, 500, "cannot read key");
    }
    if (extract_key(c, p.type, &key, &keylen) != 0) {
        goto out;
    }
    /* the import sets an hmac key's key_size, which the creation checks look at */
    if (kms_key_version_import(&p, 1, key, keylen, &kv, &c->err) != 0 ||
        kms_key_policy_check_new(&p, &c->err) != 0) {
        import_failed(c);
        goto out;
    }
    p.latest_version = 1;
    p.min_decryption_version = 1;
    p.created_sec = kv.created_sec;
    if (kms_storage_txn_begin(kms_api_storage(c->api), true, &txn) != 0) {
        KMS_FAILW(c, 500, "cannot open storage transaction");
        goto out;
    }
    g = kms_transit_policy_load(&c->mount, txn, name, &old);
    if (g == 0) {
        KMS_FAILW(c, 500,
                  "the import path cannot be used with an existing key; use "
                  "import-version to rotate an existing imported key");
        goto out;
    }
    if (g != KMS_STORAGE_NOTFOUND) {
        KMS_FAILW(c, 500, "error importing key: cannot store key");
        goto out;
    }
    if (kms_transit_note_created(c, txn, name) != 0) {
        goto out;
    }
    if (kms_transit_key_store(c->estate, &c->mount, name, &p, &kv, &txn) != 0) {
        KMS_FAILW(c, 500, "error importing key: cannot store key");
        goto out;
    }
    (void)kms_transit_note_created(c, NULL, name);
    kms_ctx_note_version(c, p.latest_version);
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    kms_memzero(&kv, sizeof(kv));
    kms_free_wipe((void **)&key, keylen);
    return rc;
}

/* ---- keys/:name/import_version ----------------------------------------------------------- */

int kms_transit_import_version(struct kms_ctx *c)
{
    const char *name = kms_cap(c, "name");
    struct kms_key_policy p;
    struct kms_key_version kv;
    struct kms_txn *txn = NULL;
    uint8_t *key = NULL;
    size_t keylen = 0;
    int64_t version = 0;
    int rc = -1;
    int g;

    memset(&kv, 0, sizeof(kv));
    if (kms_storage_txn_begin(kms_api_storage(c->api), false, &txn) != 0) {
        return KMS_FAILW(c, 500, "cannot open storage transaction");
    }
    g = kms_transit_policy_load(&c->mount, txn, name, &p);
    kms_storage_txn_abort(&txn);
    if (g == KMS_STORAGE_NOTFOUND) {
        return KMS_FAILW(c, 500,
                         "no key found with name %s; to import a new key, use the import/ "
                         "endpoint",
                         name);
    }
    if (g != 0) {
        return KMS_FAILW(c, 500, "cannot read key");
    }
    if (!p.imported) {
        return KMS_FAILW(c, 500,
                         "the import_version endpoint can only be used with an imported "
                         "key");
    }
    if (p.convergent) {
        return KMS_FAILW(c, 500,
                         "import_version cannot be used on keys with convergent "
                         "encryption enabled");
    }
    if (extract_key(c, p.type, &key, &keylen) != 0) {
        goto out;
    }
    if (kms_param_int(c, "version", &version)) {
        /* kmsd versions always hold their private key, so none can be completed */
        if (version < (int64_t)p.min_available_version || version < 1 ||
            version > (int64_t)p.latest_version) {
            KMS_FAIL(c, 400, "no such key version");
        } else if (!public_import_type(p.type)) {
            KMS_FAILW(c, 500, "provided type does not support importing key versions");
        } else {
            KMS_FAILW(c, 500, "private key imported, key version cannot be updated");
        }
        goto out;
    }
    if (kms_storage_txn_begin(kms_api_storage(c->api), true, &txn) != 0) {
        KMS_FAILW(c, 500, "cannot open storage transaction");
        goto out;
    }
    /* the policy as it is now, under the writer lock */
    g = kms_transit_policy_load(&c->mount, txn, name, &p);
    if (g != 0 || !p.imported) {
        KMS_FAILW(c, 500, "cannot read key");
        goto out;
    }
    if (p.soft_deleted) {
        KMS_FAILW(c, 500, "%s", KMS_MSG_SOFT_DELETED);
        goto out;
    }
    if (p.latest_version == UINT32_MAX) {
        KMS_FAIL(c, 400, "key %s has reached the maximum number of versions", name);
        goto out;
    }
    if (kms_key_version_import(&p, p.latest_version + 1, key, keylen, &kv, &c->err) != 0) {
        c->err.wrapped = true;
        goto out;
    }
    p.latest_version++;
    if (kms_transit_key_store(c->estate, &c->mount, name, &p, &kv, &txn) != 0) {
        KMS_FAILW(c, 500, "cannot store key");
        goto out;
    }
    kms_ctx_note_version(c, p.latest_version);
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    kms_memzero(&kv, sizeof(kv));
    kms_free_wipe((void **)&key, keylen);
    return rc;
}

/* ---- byok-export/:destination/:name(/:version) ------------------------------------------ */

int kms_transit_byok_export(struct kms_ctx *c)
{
    const struct kms_transit *t = c->estate;
    const char *dst = kms_cap(c, "destination");
    const char *src = kms_cap(c, "name");
    const char *hname = "SHA256";
    struct kms_key_policy dp, sp;
    struct kms_key_version dkv, skv;
    json_t *keys = NULL;
    enum kms_hash h;
    uint32_t from, to;
    int rc = -1;
    int g;

    memset(&dkv, 0, sizeof(dkv));
    memset(&skv, 0, sizeof(skv));
    (void)kms_param_str(c, "hash", &hname);
    /* the destination is a key of its own: the ownership check covers it too */
    if (t->owner_fn != NULL && !t->owner_fn(t->owner_arg, c, dst)) {
        return KMS_FAILW(c, 403, "permission denied");
    }
    g = kms_transit_read_key(c, dst, &dp);
    if (g == KMS_STORAGE_NOTFOUND) {
        return KMS_FAILW(c, 500, "no such destination key to export to");
    }
    if (g != 0) {
        return KMS_FAILW(c, 500, "cannot read key");
    }
    if (dp.soft_deleted) {
        return KMS_FAILW(c, 500, "for destination key: %s", KMS_MSG_SOFT_DELETED);
    }
    g = kms_transit_read_key(c, src, &sp);
    if (g == KMS_STORAGE_NOTFOUND) {
        return KMS_FAILW(c, 500, "no such source key for export");
    }
    if (g != 0) {
        return KMS_FAILW(c, 500, "cannot read key");
    }
    if (!sp.exportable) {
        return KMS_FAIL(c, 400, "key is not exportable");
    }
    if (sp.soft_deleted) {
        return KMS_FAILW(c, 500, "for source key: %s", KMS_MSG_SOFT_DELETED);
    }
    if (kms_transit_export_versions(c, &sp, kms_cap(c, "version"), &from, &to) != 0) {
        return -1;
    }
    if (parse_hash_fn(hname, &h) != 0) {
        return KMS_FAILW(c, 500, "unknown hash function: %s", hname);
    }
    /* OpenBao wraps with the destination's latest version */
    if (kms_transit_read_version(c, dst, dp.latest_version, &dkv, &c->err) != 0) {
        c->err.wrapped = true;
        c->err.status = 500;
        goto out;
    }
    keys = json_object();
    for (uint32_t v = from; v <= to && v != 0; v++) {
        char ver[16];
        char *out = NULL;
        if (kms_transit_read_version(c, src, v, &skv, &c->err) != 0) {
            c->err.wrapped = true;
            c->err.status = 500;
            goto out;
        }
        if (kms_keyring_byok_wrap(&dp, &dkv, &sp, &skv, h, &out, &c->err) != 0) {
            c->err.wrapped = true;
            goto out;
        }
        snprintf(ver, sizeof(ver), "%u", v);
        json_object_set_new(keys, ver, json_string(out));
        free(out);
        kms_memzero(&skv, sizeof(skv));
        kms_ctx_note_version(c, v);
    }
    c->data =
        json_pack("{s:s, s:s, s:O}", "name", src, "type", kms_key_type_name(sp.type), "keys", keys);
    rc = c->data != NULL ? 0 : KMS_FAILW(c, 500, "out of memory");
out:
    json_decref(keys);
    kms_memzero(&skv, sizeof(skv));
    kms_memzero(&dkv, sizeof(dkv));
    return rc;
}

const struct kms_field kms_transit_byok_export_fields[] = {
    {"hash", KMS_F_STRING},
    {NULL, 0},
};

const struct kms_field kms_transit_import_fields[] = {
    {"type", KMS_F_STRING},
    {"hash_function", KMS_F_STRING},
    {"ciphertext", KMS_F_STRING},
    {"public_key", KMS_F_STRING},
    {"allow_rotation", KMS_F_BOOL},
    {"derived", KMS_F_BOOL},
    {"exportable", KMS_F_BOOL},
    {"allow_plaintext_backup", KMS_F_BOOL},
    {"context", KMS_F_STRING},
    {"auto_rotate_period", KMS_F_UDURATION},
    /* not in OpenBao's schema: its mere presence (d.Raw) refuses the import, whatever its
     * value, so it is taken as it comes */
    {"convergent_encryption", KMS_F_RAW},
    {NULL, 0},
};

const struct kms_field kms_transit_import_version_fields[] = {
    {"ciphertext", KMS_F_STRING},
    {"public_key", KMS_F_STRING},
    {"hash_function", KMS_F_STRING},
    {"version", KMS_F_INT},
    {NULL, 0},
};
