/*
 * backup.c - backup/:name and restore(/:name): a key as the base64 of OpenBao's keysutil
 * KeyData JSON ({"policy": Policy, "archived_keys": {"keys": [KeyEntry...]}}), so a key moves
 * between kmsd and OpenBao in either direction.
 *
 * Design notes:
 * - The document is written as keysutil marshals it: Go field names (including the untagged
 *   "Imported" and "AllowImportedKeyRotation", both kept both ways: a restored BYOK key
 *   keeps its allow_rotation rule), []byte as standard base64, times as
 *   RFC 3339 with nanoseconds, auto_rotate_period in nanoseconds, keysutil's numbering of key
 *   types. The policy's "keys" hold the versions from min_decryption_version up; the archive
 *   holds every stored version, index i being version min_available_version + i (with
 *   OpenBao's empty entry for "version 0" while nothing was trimmed).
 * - On restore a version is taken from the policy's "keys" when there, else from the
 *   archive; every version from max(1, min_available_version) to latest_version must be
 *   present. The backup's storage_prefix, backup_info and restore_info are not kept (kmsd
 *   does not store them).
 * - Types: every type kmsd has. ed25519's 64-byte private key is kmsd's layout. ECDSA
 *   versions carry ec_x/ec_y/ec_d and RSA versions rsa_key (Go's rsa.PrivateKey: N, E, D,
 *   Primes, Precomputed{Dp, Dq, Qinv, CRTValues}) and rsa_public_key ({N, E}), all Go
 *   *big.Int, i.e. bare JSON integers of any length: bigjson.c carries them through the
 *   text, crypto/bigint.c converts them (and checks a restored key before it is taken). An
 *   RSA key must have e = 65537 and two primes of half the modulus (kmsd's layout); a
 *   version without its private half (OpenBao's public-key-only imports) is refused.
 * - Refusals and statuses are OpenBao's (lock_manager.go, policy.go, path_restore.go): a
 *   missing key, a key that is not exportable or has no allow_plaintext_backup, and an
 *   existing key without force are 500 errors with OpenBao's text; no backup is a 400.
 * - The JSON text and its base64 hold key material: both are wiped before they are freed.
 *   jansson's own copies of the per-version base64 strings are freed without a wipe, as in
 *   export.c.
 */
#include "engine/transit/transit_int.h"

#include <stdlib.h>
#include <string.h>

/* keysutil's KeyType values (policy.go); kmsd's enum numbers differently. */
static const struct {
    enum kms_key_type kms;
    int bao;
} bao_types[] = {
    {KMS_KEY_AES256_GCM96, 0}, {KMS_KEY_ECDSA_P256, 1}, {KMS_KEY_ED25519, 2},
    {KMS_KEY_RSA2048, 3},      {KMS_KEY_RSA4096, 4},    {KMS_KEY_CHACHA20_POLY1305, 5},
    {KMS_KEY_ECDSA_P384, 6},   {KMS_KEY_ECDSA_P521, 7}, {KMS_KEY_AES128_GCM96, 8},
    {KMS_KEY_RSA3072, 9},      {KMS_KEY_HMAC, 10},      {KMS_KEY_XCHACHA20_POLY1305, 11},
};
#define NTYPES (sizeof(bao_types) / sizeof(bao_types[0]))

/* OpenBao's KDF numbering (keysutil Kdf_*): the legacy counter mode is what its imported
 * derived keys (and keys older than HKDF) carry. */
#define BAO_KDF_HMAC_SHA256_COUNTER 0
#define BAO_KDF_HKDF_SHA256 1
#define NSEC_PER_SEC 1000000000LL
/* Bound on the versions one restore writes (each is a record in one write transaction). */
#define RESTORE_VERSIONS_MAX 65536u

static bool is_ecdsa(enum kms_key_type t)
{
    return t == KMS_KEY_ECDSA_P256 || t == KMS_KEY_ECDSA_P384 || t == KMS_KEY_ECDSA_P521;
}

static bool is_rsa(enum kms_key_type t)
{
    return t == KMS_KEY_RSA2048 || t == KMS_KEY_RSA3072 || t == KMS_KEY_RSA4096;
}

static int bao_type(enum kms_key_type t)
{
    for (size_t i = 0; i < NTYPES; i++) {
        if (bao_types[i].kms == t) {
            return bao_types[i].bao;
        }
    }
    return -1;
}

static int kms_type(json_int_t bao, enum kms_key_type *out)
{
    for (size_t i = 0; i < NTYPES; i++) {
        if (bao_types[i].bao == bao) {
            *out = bao_types[i].kms;
            return 0;
        }
    }
    return -1;
}

/* ---- time ---------------------------------------------------------------------------------- */

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned mp = m > 2 ? m - 3 : m + 9;
    unsigned doy = (153 * mp + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static bool digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

/* Go's time.Time JSON (RFC 3339, optional fraction, Z or +hh:mm) to unix seconds + nsec. */
static int parse_rfc3339(const char *s, int64_t *sec, int32_t *nsec)
{
    int y, mo, d, h, mi, se, oh = 0, om = 0;
    int32_t ns = 0;
    if (strlen(s) < 20 || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) ||
        s[7] != '-' || !digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') ||
        !digits(s + 11, 2, &h) || s[13] != ':' || !digits(s + 14, 2, &mi) || s[16] != ':' ||
        !digits(s + 17, 2, &se) || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
        se > 60) {
        return -1;
    }
    const char *p = s + 19;
    if (*p == '.') {
        int n = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, n++) {
            if (n < 9) {
                ns = ns * 10 + (*p - '0');
            }
        }
        if (n == 0) {
            return -1;
        }
        for (; n < 9; n++) {
            ns *= 10;
        }
    }
    int sign = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if ((*p == '+' || *p == '-') && digits(p + 1, 2, &oh) && p[3] == ':' &&
               digits(p + 4, 2, &om)) {
        sign = *p == '-' ? -1 : 1;
        p += 6;
    } else {
        return -1;
    }
    if (*p != '\0') {
        return -1;
    }
    *sec = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + se -
           sign * (oh * 3600 + om * 60);
    *nsec = ns;
    return 0;
}

/* ---- backup --------------------------------------------------------------------------------- */

/* A JSON string of base64(b); the temporary text is wiped. NULL on allocation failure. */
static json_t *b64_json(const uint8_t *b, size_t n)
{
    size_t len = kms_b64_encoded_len(n) + 1;
    char *s = malloc(len);
    if (s == NULL) {
        return NULL;
    }
    kms_b64_encode(b, n, s);
    json_t *j = json_string(s);
    kms_free_wipe((void **)&s, len);
    return j;
}

/* The string "<mark><digits>" that kms_json_unquote_marked turns into a bare integer. */
static json_t *big_json(const char *mark, const char *digits)
{
    size_t n = strlen(mark) + strlen(digits) + 1;
    char *s = malloc(n);
    if (s == NULL) {
        return NULL;
    }
    snprintf(s, n, "%s%s", mark, digits);
    json_t *j = json_string(s);
    kms_free_wipe((void **)&s, n);
    return j;
}

/* An ECDSA entry's ec_x, ec_y, ec_d or an RSA entry's rsa_key and rsa_public_key, into e. */
static int entry_bigints(const struct kms_key_policy *p, const struct kms_key_version *kv,
                         const char *mark, json_t *e)
{
    char *b[KMS_BIG_COUNT];
    int rc = -1;

    if (kms_key_bigints_get(p->type, kv, b) != 0) {
        return -1;
    }
    if (is_ecdsa(p->type)) {
        rc = json_object_set_new(e, "ec_x", big_json(mark, b[KMS_BIG_EC_X])) != 0 ||
                     json_object_set_new(e, "ec_y", big_json(mark, b[KMS_BIG_EC_Y])) != 0 ||
                     json_object_set_new(e, "ec_d", big_json(mark, b[KMS_BIG_EC_D])) != 0
                 ? -1
                 : 0;
    } else {
        json_t *rk =
            json_pack("{s:o, s:i, s:o, s:[o, o], s:{s:o, s:o, s:o, s:[]}}", "N",
                      big_json(mark, b[KMS_BIG_RSA_N]), "E", KMS_KEY_RSA_E, "D",
                      big_json(mark, b[KMS_BIG_RSA_D]), "Primes", big_json(mark, b[KMS_BIG_RSA_P]),
                      big_json(mark, b[KMS_BIG_RSA_Q]), "Precomputed", "Dp",
                      big_json(mark, b[KMS_BIG_RSA_DP]), "Dq", big_json(mark, b[KMS_BIG_RSA_DQ]),
                      "Qinv", big_json(mark, b[KMS_BIG_RSA_QINV]), "CRTValues");
        json_t *pk =
            json_pack("{s:o, s:i}", "N", big_json(mark, b[KMS_BIG_RSA_N]), "E", KMS_KEY_RSA_E);
        rc = rk == NULL || pk == NULL || json_object_set_new(e, "rsa_key", rk) != 0 ||
                     json_object_set_new(e, "rsa_public_key", pk) != 0
                 ? -1
                 : 0;
        if (rc != 0 && rk == NULL) {
            json_decref(pk);
        }
    }
    kms_key_bigints_free(b);
    return rc;
}

/* A keysutil KeyEntry; kv NULL gives the zero entry OpenBao keeps for "version 0". */
/* A version's chain as Go's [][]byte: an array of base64 DER certificates, or null. */
static json_t *chain_json(const uint8_t *der, size_t len)
{
    json_t *a;
    size_t n;
    if (der == NULL || len == 0 || (a = json_array()) == NULL) {
        return json_null();
    }
    for (size_t at = 0; at < len; at += n) {
        n = kms_transit_der_next(der + at, len - at);
        if (n == 0 || json_array_append_new(a, b64_json(der + at, n)) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

static json_t *entry_json(const struct kms_key_policy *p, const struct kms_key_version *kv,
                          const char *mark, json_t *chain)
{
    char t[40] = "0001-01-01T00:00:00Z";
    json_t *key = json_null(), *hkey = json_null();
    json_t *pub = json_string("");
    int64_t created = 0;
    int conv = 0;
    bool big = kv != NULL && (is_ecdsa(p->type) || is_rsa(p->type));

    if (kv != NULL) {
        key = big ? json_null()
                  : b64_json(kv->key, kms_key_type_is_aead(p->type) ? kms_key_type_key_len(p->type)
                                                                    : kv->key_len);
        /* keysutil sets an hmac key's HMACKey to the key itself */
        hkey = p->type == KMS_KEY_HMAC ? b64_json(kv->key, kv->key_len)
                                       : b64_json(kv->hmac_key, sizeof(kv->hmac_key));
        if (p->type == KMS_KEY_ED25519) {
            json_decref(pub);
            pub = b64_json(kv->key + 32, 32);
        } else if (is_ecdsa(p->type)) {
            /* keysutil keeps an ECDSA version's PEM public key; RSA versions keep none */
            char *pem = NULL;
            struct kms_err err;
            if (kms_keyring_public_key(p, kv, NULL, 0, &pem, &err) == 0) {
                json_decref(pub);
                pub = json_string(pem);
            }
            free(pem);
        }
        kms_time_rfc3339(kv->created_sec, kv->created_nsec, t);
        created = kv->created_sec;
        conv = kv->convergent_version;
    }
    json_t *e = json_pack("{s:o, s:o, s:s, s:n, s:n, s:n, s:n, s:n, s:o, s:i, s:I, s:o, s:s}",
                          "key", key, "hmac_key", hkey, "time", t, "ec_x", "ec_y", "ec_d",
                          "rsa_key", "rsa_public_key", "public_key", pub, "convergent_version",
                          conv, "creation_time", (json_int_t)created, "certificate_chain",
                          chain != NULL ? chain : json_null(), "external_key_ref", "");
    if (e != NULL && big && entry_bigints(p, kv, mark, e) != 0) {
        json_decref(e);
        e = NULL;
    }
    return e;
}

static json_t *policy_json(const char *name, const struct kms_key_policy *p, json_t *keys)
{
    char now[40];
    int64_t sec;
    int32_t nsec;
    kms_now(&sec, &nsec);
    kms_time_rfc3339(sec, nsec, now);
    json_t *o = json_pack(
        "{s:s, s:O, s:b, s:i, s:b, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:i, s:i,"
        " s:{s:s, s:I}, s:n, s:b, s:s, s:s, s:I, s:b, s:b, s:b}",
        "name", name, "keys", keys, "derived", p->derived, "kdf",
        p->derived && !p->kdf_counter ? BAO_KDF_HKDF_SHA256 : BAO_KDF_HMAC_SHA256_COUNTER,
        "convergent_encryption", p->convergent, "exportable", p->exportable,
        "min_decryption_version", (json_int_t)p->min_decryption_version, "min_encryption_version",
        (json_int_t)p->min_encryption_version, "latest_version", (json_int_t)p->latest_version,
        "archive_version", (json_int_t)p->latest_version, "archive_min_version",
        (json_int_t)p->min_available_version, "min_available_version",
        (json_int_t)p->min_available_version, "deletion_allowed", p->deletion_allowed,
        "convergent_version", p->convergent ? KMS_KEY_CONVERGENT_VERSION : 0, "type",
        bao_type(p->type), "backup_info", "time", now, "version", (json_int_t)p->latest_version,
        "restore_info", "allow_plaintext_backup", p->allow_plaintext_backup, "version_template", "",
        "storage_prefix", "", "auto_rotate_period",
        (json_int_t)(p->auto_rotate_period > INT64_MAX / NSEC_PER_SEC
                         ? INT64_MAX / NSEC_PER_SEC * NSEC_PER_SEC
                         : p->auto_rotate_period * NSEC_PER_SEC),
        "Imported", p->imported, "AllowImportedKeyRotation", p->allow_imported_rotation,
        "soft_deleted", false);
    if (o != NULL && p->key_size != 0) {
        json_object_set_new(o, "key_size", json_integer(p->key_size));
    }
    return o;
}

int kms_transit_backup(struct kms_ctx *c)
{
    const char *name = kms_cap(c, "name");
    struct kms_key_policy p;
    struct kms_key_version kv;
    json_t *keys = NULL, *archive = NULL, *doc = NULL;
    char *text = NULL, *b64 = NULL;
    size_t textlen = 0, b64len = 0;
    int rc = -1;

    memset(&kv, 0, sizeof(kv));
    int g = kms_transit_read_key(c, name, &p);
    if (g == KMS_STORAGE_NOTFOUND) {
        return KMS_FAILW(c, 500, "key \"%s\" not found", name);
    }
    if (g != 0) {
        return KMS_FAILW(c, 500, "cannot read key");
    }
    if (p.soft_deleted) {
        return KMS_FAILW(c, 500, "%s", KMS_MSG_SOFT_DELETED);
    }
    if (!p.exportable) {
        return KMS_FAILW(c, 500, "exporting is disallowed on the policy");
    }
    if (!p.allow_plaintext_backup) {
        return KMS_FAILW(c, 500, "plaintext backup is disallowed on the policy");
    }
    /* the mark of this backup's big integers (bigjson.c) */
    uint8_t rnd[16];
    char mark[8 + 2 * sizeof(rnd) + 2] = "kmsbig-";
    if (kms_rand_bytes(rnd, sizeof(rnd)) != 0) {
        return KMS_FAILW(c, 500, "cannot encode backup");
    }
    kms_hex_encode(rnd, sizeof(rnd), mark + 7);
    mark[7 + 2 * sizeof(rnd)] = ':';
    mark[8 + 2 * sizeof(rnd)] = '\0';
    keys = json_object();
    archive = json_array();
    if (keys == NULL || archive == NULL ||
        (p.min_available_version == 0 &&
         json_array_append_new(archive, entry_json(&p, NULL, mark, NULL)))) {
        KMS_FAILW(c, 500, "cannot encode backup");
        goto out;
    }
    for (uint32_t v = p.min_available_version > 1 ? p.min_available_version : 1;
         v <= p.latest_version && v != 0; v++) {
        char ver[16];
        if (kms_transit_read_version(c, name, v, &kv, &c->err) != 0) {
            c->err.wrapped = true;
            c->err.status = 500;
            goto out;
        }
        json_t *chain = NULL;
        if (kms_key_type_supports_signing(p.type)) {
            struct kms_txn *txn = NULL;
            uint8_t *der = NULL;
            size_t derlen = 0;
            int cg = kms_storage_txn_begin(kms_api_storage(c->api), false, &txn) != 0
                         ? -1
                         : kms_transit_chain_der(&c->mount, txn, name, v, &der, &derlen);
            kms_storage_txn_abort(&txn);
            chain = cg == 0                      ? chain_json(der, derlen)
                    : cg == KMS_STORAGE_NOTFOUND ? json_null()
                                                 : NULL;
            free(der);
            if (chain == NULL) {
                KMS_FAILW(c, 500, "cannot encode backup");
                goto out;
            }
        }
        json_t *e = entry_json(&p, &kv, mark, chain);
        kms_memzero(&kv, sizeof(kv));
        snprintf(ver, sizeof(ver), "%u", v);
        if (e == NULL || json_array_append(archive, e) != 0 ||
            (v >= p.min_decryption_version && json_object_set(keys, ver, e) != 0)) {
            json_decref(e);
            KMS_FAILW(c, 500, "cannot encode backup");
            goto out;
        }
        json_decref(e);
    }
    doc = json_pack("{s:o, s:{s:O}}", "policy", policy_json(name, &p, keys), "archived_keys",
                    "keys", archive);
    text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
    if (text == NULL) {
        KMS_FAILW(c, 500, "cannot encode backup");
        goto out;
    }
    textlen = strlen(text);
    kms_json_unquote_marked(text, mark); /* wipes what it shortens */
    size_t used = strlen(text);
    b64len = kms_b64_encoded_len(used) + 1;
    b64 = malloc(b64len);
    if (b64 == NULL) {
        KMS_FAILW(c, 500, "cannot encode backup");
        goto out;
    }
    kms_b64_encode((const uint8_t *)text, used, b64);
    c->data = json_pack("{s:s}", "backup", b64);
    kms_ctx_note_version(c, p.latest_version);
    rc = c->data != NULL ? 0 : KMS_FAILW(c, 500, "cannot encode backup");
out:
    kms_free_wipe((void **)&b64, b64len);
    kms_free_wipe((void **)&text, textlen + 1);
    json_decref(doc);
    json_decref(archive);
    json_decref(keys);
    kms_memzero(&kv, sizeof(kv));
    return rc;
}

/* ---- restore -------------------------------------------------------------------------------- */

static bool get_bool(const json_t *o, const char *k)
{
    return json_is_true(json_object_get(o, k));
}

/* A non-negative integer member (absent or null = 0); -1 when of another type or negative. */
static int64_t get_uint(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    if (v == NULL || json_is_null(v)) {
        return 0;
    }
    return json_is_integer(v) && json_integer_value(v) >= 0 ? (int64_t)json_integer_value(v) : -1;
}

/* The policy half of the backup; the versions are parsed one by one later. */
static int restore_policy(struct kms_ctx *c, const json_t *pol, struct kms_key_policy *p)
{
    enum kms_key_type type;
    const json_t *jt = json_object_get(pol, "type");
    if (!json_is_integer(jt) || kms_type(json_integer_value(jt), &type) != 0) {
        return KMS_FAIL(c, 400, "restore of this key type is not supported by kmsd");
    }
    if (kms_key_policy_init(p, type) != 0) {
        return KMS_FAILW(c, 500, "cannot initialise key");
    }
    int64_t latest = get_uint(pol, "latest_version");
    int64_t mindec = get_uint(pol, "min_decryption_version");
    int64_t minenc = get_uint(pol, "min_encryption_version");
    int64_t minav = get_uint(pol, "min_available_version");
    int64_t ksize = get_uint(pol, "key_size");
    /* nanoseconds; 19 digits and more arrive quoted (bigjson.c): read as the integer */
    const json_t *jp = json_object_get(pol, "auto_rotate_period");
    int64_t period_ns = 0;
    bool period_ok = jp == NULL || json_is_null(jp);
    if (json_is_integer(jp)) {
        period_ns = (int64_t)json_integer_value(jp);
        period_ok = true;
    } else if (json_is_string(jp)) {
        period_ok = kms_int_parse(json_string_value(jp), &period_ns);
    }
    const char *tmpl = json_string_value(json_object_get(pol, "version_template"));
    if (latest < 1 || latest > UINT32_MAX || mindec < 1 || mindec > latest || minenc < 0 ||
        minenc > latest || minav < 0 || minav > mindec || ksize < 0 || ksize > KMS_HMAC_KEY_MAX ||
        !period_ok || (uint64_t)(latest - (minav > 1 ? minav : 1)) >= RESTORE_VERSIONS_MAX) {
        return KMS_FAIL(c, 400, "invalid key versions in backup");
    }
    if (tmpl != NULL && tmpl[0] != '\0' && strcmp(tmpl, "vault:v{{version}}:") != 0) {
        return KMS_FAIL(c, 400, "restore of keys with a version_template is not supported by kmsd");
    }
    p->derived = get_bool(pol, "derived");
    p->convergent = get_bool(pol, "convergent_encryption");
    if (p->convergent && !p->derived) {
        return KMS_FAIL(c, 400, "convergent encryption requires derivation to be enabled");
    }
    int64_t kdf = get_uint(pol, "kdf");
    /* the counter KDF's 32 bytes leave no nonce key for convergent keys, and make no ed25519
     * key (OpenBao cannot sign with such a key either) */
    p->kdf_counter = p->derived && kdf == BAO_KDF_HMAC_SHA256_COUNTER && !p->convergent &&
                     kms_key_type_is_aead(type);
    if (p->derived && kdf != BAO_KDF_HKDF_SHA256 && !p->kdf_counter) {
        return KMS_FAIL(c, 400, "restore of keys derived with this kdf is not supported by kmsd");
    }
    p->exportable = get_bool(pol, "exportable");
    p->allow_plaintext_backup = get_bool(pol, "allow_plaintext_backup");
    p->deletion_allowed = get_bool(pol, "deletion_allowed");
    p->soft_deleted = get_bool(pol, "soft_deleted");
    /* a key made from imported material keeps its rotation rule (allow_rotation) */
    p->imported = get_bool(pol, "Imported");
    p->allow_imported_rotation = get_bool(pol, "AllowImportedKeyRotation");
    p->latest_version = (uint32_t)latest;
    p->min_decryption_version = (uint32_t)mindec;
    p->min_encryption_version = (uint32_t)minenc;
    p->min_available_version = (uint32_t)minav;
    p->key_size = type == KMS_KEY_HMAC ? (uint32_t)ksize : 0;
    p->auto_rotate_period = period_ns / NSEC_PER_SEC;
    if (p->auto_rotate_period < 0 || (p->auto_rotate_period > 0 && p->auto_rotate_period < 3600)) {
        /* the rule of create and config: a stored key never holds another period */
        return KMS_FAIL(c, 400, "auto rotate period must be 0 to disable or at least an hour");
    }
    if (kms_key_policy_check_new(p, &c->err) != 0) {
        return -1;
    }
    return 0;
}

/* Decode base64 member k of e into out (exactly want bytes, or 1..max when want is 0). */
static int entry_bytes(const json_t *e, const char *k, size_t want, size_t max, uint8_t *out,
                       size_t *outlen)
{
    const char *s = json_string_value(json_object_get(e, k));
    uint8_t *b = NULL;
    size_t n = 0, at = 0;
    int rc = -1;
    if (s == NULL || kms_b64_decode_alloc(s, strlen(s), &b, &n, &at) != 0) {
        goto out;
    }
    if ((want != 0 && n != want) || n == 0 || n > max) {
        goto out;
    }
    memcpy(out, b, n);
    *outlen = n;
    rc = 0;
out:
    kms_free_wipe((void **)&b, n);
    return rc;
}

/*
 * A Go big integer member: a decimal string (as kms_json_quote_bigints left a long one) or a
 * non-negative JSON integer (a short one), into buf (for the integer) or borrowed from v.
 * NULL when absent, null or of another kind.
 */
static const char *big_member(const json_t *v, char *buf, size_t buflen)
{
    if (json_is_string(v)) {
        return json_string_value(v);
    }
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        snprintf(buf, buflen, "%lld", (long long)json_integer_value(v));
        return buf;
    }
    return NULL;
}

/* An ECDSA entry's ec_x/ec_y/ec_d or an RSA entry's rsa_key into kv->key. */
static int restore_bigints(struct kms_ctx *c, const struct kms_key_policy *p, const json_t *e,
                           uint32_t v, struct kms_key_version *kv)
{
    char small[KMS_BIG_COUNT][24];
    const char *in[KMS_BIG_COUNT] = {NULL};
    json_int_t pub_e = 0;
    struct kms_err err;

    if (is_ecdsa(p->type)) {
        static const char *const names[] = {"ec_x", "ec_y", "ec_d"};
        for (size_t i = 0; i < 3; i++) {
            in[KMS_BIG_EC_X + i] =
                big_member(json_object_get(e, names[i]), small[i], sizeof(small[i]));
        }
        if (in[KMS_BIG_EC_D] == NULL && in[KMS_BIG_EC_X] != NULL) {
            return KMS_FAIL(c, 400,
                            "restore of public-key-only versions is not supported by kmsd "
                            "(version %u)",
                            v);
        }
    } else {
        const json_t *rk = json_object_get(e, "rsa_key");
        const json_t *pre = json_object_get(rk, "Precomputed");
        const json_t *primes = json_object_get(rk, "Primes");
        if (!json_is_object(rk) && json_is_object(json_object_get(e, "rsa_public_key"))) {
            return KMS_FAIL(c, 400,
                            "restore of public-key-only versions is not supported by kmsd "
                            "(version %u)",
                            v);
        }
        if (!json_is_object(rk)) {
            return KMS_FAIL(c, 400, "invalid key material for version %u in backup", v);
        }
        if (json_is_array(primes) && json_array_size(primes) != 2) {
            return KMS_FAIL(c, 400,
                            "invalid key material for version %u in backup: RSA keys must have "
                            "two primes of half the modulus each",
                            v);
        }
        struct {
            enum kms_key_bigint slot;
            const json_t *val;
        } const m[] = {
            {KMS_BIG_RSA_N, json_object_get(rk, "N")},
            {KMS_BIG_RSA_D, json_object_get(rk, "D")},
            {KMS_BIG_RSA_P, json_array_get(primes, 0)},
            {KMS_BIG_RSA_Q, json_array_get(primes, 1)},
            {KMS_BIG_RSA_DP, json_object_get(pre, "Dp")},
            {KMS_BIG_RSA_DQ, json_object_get(pre, "Dq")},
            {KMS_BIG_RSA_QINV, json_object_get(pre, "Qinv")},
        };
        for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
            in[m[i].slot] = big_member(m[i].val, small[i], sizeof(small[i]));
        }
        const json_t *je = json_object_get(rk, "E");
        pub_e = json_is_integer(je) ? json_integer_value(je) : -1;
    }
    int rc = kms_key_bigints_put(p->type, in, (int64_t)pub_e, kv, &err);
    kms_memzero(small, sizeof(small));
    if (rc != 0) {
        return KMS_FAIL(c, 400, "invalid key material for version %u in backup: %s", v, err.msg);
    }
    return 0;
}

/* One KeyEntry of the backup into kv (version v of p). */
static int restore_entry(struct kms_ctx *c, const struct kms_key_policy *p, const json_t *e,
                         uint32_t v, int pconv, struct kms_key_version *kv)
{
    size_t want = 0, n = 0, hn = 0;
    bool big = is_ecdsa(p->type) || is_rsa(p->type);
    const char *t = json_string_value(json_object_get(e, "time"));

    memset(kv, 0, sizeof(*kv));
    kv->version = v;
    if (kms_key_type_is_aead(p->type)) {
        want = kms_key_type_key_len(p->type);
    } else if (p->type == KMS_KEY_ED25519) {
        want = 64;
    } else {
        want = p->key_size;
    }
    if (!json_is_object(e) ||
        (!big && entry_bytes(e, "key", want, KMS_KEY_MATERIAL_MAX, kv->key, &n) != 0) ||
        (p->type != KMS_KEY_HMAC && entry_bytes(e, "hmac_key", sizeof(kv->hmac_key),
                                                sizeof(kv->hmac_key), kv->hmac_key, &hn) != 0)) {
        kms_memzero(kv, sizeof(*kv));
        return KMS_FAIL(c, 400, "invalid key material for version %u in backup", v);
    }
    if (big) {
        if (restore_bigints(c, p, e, v, kv) != 0) {
            kms_memzero(kv, sizeof(*kv));
            return -1;
        }
    } else {
        kv->key_len = kms_key_type_is_aead(p->type) ? 32 : (uint32_t)n;
    }
    if (t == NULL || parse_rfc3339(t, &kv->created_sec, &kv->created_nsec) != 0) {
        int64_t cs = get_uint(e, "creation_time");
        kv->created_sec = cs > 0 ? cs : 0;
        kv->created_nsec = 0;
    }
    int64_t conv = get_uint(e, "convergent_version");
    if (conv == 0) {
        conv = pconv;
    }
    if (p->convergent) {
        if (conv != KMS_KEY_CONVERGENT_VERSION) {
            kms_memzero(kv, sizeof(*kv));
            return KMS_FAIL(c, 400,
                            "restore of convergent keys of convergent version %lld is not "
                            "supported by kmsd",
                            (long long)conv);
        }
        kv->convergent_version = KMS_KEY_CONVERGENT_VERSION;
    }
    return 0;
}

/* A version's certificate_chain ([][]byte: base64 DER certificates, or null) into its chain
 * record; each certificate must parse (400 otherwise), so key read can always show it. */
static int restore_chain(struct kms_ctx *c, const struct kms_key_policy *p, const json_t *a,
                         const char *name, uint32_t v, struct kms_txn *txn)
{
    uint8_t *der = NULL, *one = NULL;
    size_t len = 0, onelen = 0;
    char *pem = NULL;
    int rc = -1;

    if (a == NULL || json_is_null(a) || (json_is_array(a) && json_array_size(a) == 0)) {
        return 0;
    }
    if (!json_is_array(a) || !kms_key_type_supports_signing(p->type) || json_array_size(a) > 16) {
        return KMS_FAIL(c, 400, "invalid certificate chain for version %u in backup", v);
    }
    for (size_t i = 0; i < json_array_size(a); i++) {
        const char *s = json_string_value(json_array_get(a, i));
        size_t at = 0;
        uint8_t *grown;
        if (s == NULL || kms_b64_decode_alloc(s, strlen(s), &one, &onelen, &at) != 0 ||
            kms_transit_der_next(one, onelen) != onelen ||
            (grown = realloc(der, len + onelen)) == NULL) {
            KMS_FAIL(c, 400, "invalid certificate chain for version %u in backup", v);
            goto out;
        }
        der = grown;
        memcpy(der + len, one, onelen);
        len += onelen;
        free(one);
        one = NULL;
    }
    if (kms_cert_chain_pem(der, len, &pem) != 0) {
        KMS_FAIL(c, 400, "invalid certificate chain for version %u in backup", v);
        goto out;
    }
    if (kms_transit_chain_put(&c->mount, txn, name, v, der, len) != 0) {
        KMS_FAILW(c, 500, "cannot store key");
        goto out;
    }
    rc = 0;
out:
    free(pem);
    free(one);
    free(der);
    return rc;
}

/* Version v's entry: from the policy's keys, else from the archive. */
static const json_t *find_entry(const json_t *pol, const json_t *archive, uint32_t v,
                                uint32_t minav)
{
    char ver[16];
    snprintf(ver, sizeof(ver), "%u", v);
    const json_t *e = json_object_get(json_object_get(pol, "keys"), ver);
    if (json_is_object(e)) {
        return e;
    }
    return json_array_get(archive, v - minav);
}

int kms_transit_restore(struct kms_ctx *c)
{
    const struct kms_transit *t = c->estate;
    const char *b64 = NULL;
    const char *name = kms_cap(c, "name");
    struct kms_key_policy p, old;
    struct kms_key_version kv;
    struct kms_txn *txn = NULL;
    uint8_t *raw = NULL;
    char *quoted = NULL;
    size_t rawlen = 0, quotedlen = 0;
    json_t *doc = NULL;
    json_error_t jerr;
    bool force = false;
    int rc = -1;

    memset(&kv, 0, sizeof(kv));
    if (!kms_param_str(c, "backup", &b64) || b64[0] == '\0') {
        return KMS_FAIL(c, 400, "'backup' must be supplied");
    }
    if (name != NULL && name[0] != '\0' &&
        kms_transit_refuse_managed(c, name, "a restore cannot replace its key material") != 0) {
        return -1; /* named in the path: before any decoding */
    }
    (void)kms_param_bool(c, "force", &force);
    if (kms_b64_param(b64, &raw, &rawlen, &c->err, 500) != 0) {
        c->err.wrapped = true;
        goto out;
    }
    /* Go's big integers as strings, so jansson can hold them (bigjson.c) */
    if (kms_json_quote_bigints((const char *)raw, rawlen, &quoted, &quotedlen) != 0) {
        KMS_FAILW(c, 500, "cannot decode backup");
        goto out;
    }
    doc = json_loadb(quoted, quotedlen, JSON_REJECT_DUPLICATES, &jerr);
    const json_t *pol = json_object_get(doc, "policy");
    const json_t *archive = json_object_get(json_object_get(doc, "archived_keys"), "keys");
    if (!json_is_object(pol)) {
        KMS_FAILW(c, 500, "invalid backup: %s", doc == NULL ? jerr.text : "no policy");
        goto out;
    }
    /* a body "name" never gets here: OpenBao's restore pattern captures it (empty) over the
     * body, so without one in the path the backup's name is restored */
    if (name == NULL || name[0] == '\0') {
        name = json_string_value(json_object_get(pol, "name"));
    }
    if (name == NULL || name[0] == '\0' || strlen(name) > KMS_PATH_MAX / 2) {
        KMS_FAIL(c, 400, "invalid key name in backup");
        goto out;
    }
    if (strchr(name, '/') != NULL) {
        KMS_FAILW(c, 500, "key names cannot be paths");
        goto out;
    }
    /* a key the routes could never reach again (keys/-bad, keys/café) is not stored */
    if (!kms_name_valid(name, strlen(name))) {
        KMS_FAIL(c, 400,
                 "invalid key name %.64s: a key name is letters, digits and _, with - or . "
                 "inside",
                 name);
        goto out;
    }
    /* the route has no :name when the backup names the key: check its owner here */
    if (t->owner_fn != NULL && !t->owner_fn(t->owner_arg, c, name)) {
        KMS_FAILW(c, 403, "permission denied");
        goto out;
    }
    if (kms_transit_refuse_managed(c, name, "a restore cannot replace its key material") != 0) {
        goto out;
    }
    if (restore_policy(c, pol, &p) != 0) {
        goto out;
    }
    int pconv = (int)get_uint(pol, "convergent_version");
    if (kms_storage_txn_begin(kms_api_storage(c->api), true, &txn) != 0) {
        KMS_FAILW(c, 500, "cannot open storage transaction");
        goto out;
    }
    int g = kms_transit_rec_policy(&c->mount, txn, name, &old);
    if (g == 0 && !force) {
        KMS_FAILW(c, 500, "key \"%s\" already exists", name);
        goto out;
    }
    if ((g != 0 && g != KMS_STORAGE_NOTFOUND) ||
        (g == 0 && kms_transit_rec_drop(&c->mount, txn, name) != 0)) {
        KMS_FAILW(c, 500, "cannot replace key");
        goto out;
    }
    uint32_t first = p.min_available_version > 1 ? p.min_available_version : 1;
    for (uint32_t v = first; v <= p.latest_version && v != 0; v++) {
        const json_t *e = find_entry(pol, archive, v, p.min_available_version);
        if (restore_entry(c, &p, e, v, pconv, &kv) != 0) {
            goto out;
        }
        if (v == first) {
            p.created_sec = kv.created_sec;
        }
        if (kms_transit_rec_put_version(&c->mount, txn, name, &kv) != 0) {
            KMS_FAILW(c, 500, "cannot store key");
            goto out;
        }
        kms_memzero(&kv, sizeof(kv));
        if (restore_chain(c, &p, json_object_get(e, "certificate_chain"), name, v, txn) != 0) {
            goto out;
        }
    }
    if (g != 0 && kms_transit_note_created(c, txn, name) != 0) {
        goto out;
    }
    if (kms_transit_rec_commit(c->estate, &c->mount, name, &p, &txn) != 0) {
        KMS_FAILW(c, 500, "cannot store key");
        goto out;
    }
    if (g != 0) {
        (void)kms_transit_note_created(c, NULL, name); /* a new name, not a forced replace */
    }
    kms_ctx_note_version(c, p.latest_version);
    rc = 0; /* OpenBao returns no response: 204, and the framework drops its warnings */
out:
    kms_storage_txn_abort(&txn);
    kms_memzero(&kv, sizeof(kv));
    json_decref(doc);
    kms_free_wipe((void **)&raw, rawlen);
    if (quoted != NULL) {
        kms_free_wipe((void **)&quoted, quotedlen + 1);
    }
    return rc;
}

const struct kms_field kms_transit_restore_fields[] = {
    {"backup", KMS_F_STRING},
    {"name", KMS_F_STRING},
    {"force", KMS_F_BOOL},
    {NULL, 0},
};
