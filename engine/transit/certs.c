/*
 * certs.c - keys/:name/csr and keys/:name/set-certificate (OpenBao's transit
 * path_certificates.go), and the certificate chains kept per key version.
 *
 * Design notes:
 * - A chain is its own sealed record, META "transit_chain/<mount prefix><name>/<version BE
 *   u32>", holding the certificates' DER concatenated, so the fixed-size version records stay
 *   as they are. Whatever removes versions removes their chains in the same write transaction:
 *   key delete and restore (the whole name), trim and the KMSKey floor (versions below the new
 *   minimum), the mount purge (the mount's prefix). Backups carry them as OpenBao's KeyEntry
 *   does (certificate_chain, Go's [][]byte), and restore puts them back (backup.c).
 * - Key read shows each version's chain as certificate_chain (PEM blocks joined by newlines),
 *   export/certificate-chain returns it; both read the record, never the key cache.
 * - Checks run in OpenBao's order with its statuses (400 for its error responses, 500 wrapped
 *   for the errors its handlers return). kmsd also refuses a CSR from a soft-deleted key
 *   (a CSR is a signature); set-certificate, which signs nothing, still works on one.
 */
#include "engine/transit/transit_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHAIN_META "transit_chain/"
#define CHAIN_REC_MAX (KMS_PATH_MAX + 128)

/* ---- chain records ----------------------------------------------------------------------- */

/* "transit_chain/<prefix><name>/" into out; its length. */
static size_t chain_prefix(const struct kms_mount *m, const char *name, uint8_t *out)
{
    char prefix[96];
    kms_mount_prefix(m, prefix, sizeof(prefix));
    int n = snprintf((char *)out, CHAIN_REC_MAX, "%s%s%s/", CHAIN_META, prefix, name);
    return n > 0 && n < CHAIN_REC_MAX - 4 ? (size_t)n : 0;
}

static size_t chain_rec(const struct kms_mount *m, const char *name, uint32_t v, uint8_t *out)
{
    size_t n = chain_prefix(m, name, out);
    if (n == 0) {
        return 0;
    }
    out[n++] = (uint8_t)(v >> 24);
    out[n++] = (uint8_t)(v >> 16);
    out[n++] = (uint8_t)(v >> 8);
    out[n++] = (uint8_t)v;
    return n;
}

int kms_transit_chain_drop(const struct kms_mount *m, struct kms_txn *txn, const char *name,
                           uint32_t from, uint32_t below)
{
    uint8_t rec[CHAIN_REC_MAX];
    size_t n;
    if (below == 0) {
        n = chain_prefix(m, name, rec);
        return n != 0 && kms_storage_del_prefix(txn, KMS_DB_META, rec, n, NULL) == 0 ? 0 : -1;
    }
    for (uint32_t v = from > 1 ? from : 1; v < below; v++) {
        n = chain_rec(m, name, v, rec);
        if (n == 0 || kms_storage_del(txn, KMS_DB_META, rec, n) < 0) {
            return -1;
        }
    }
    return 0;
}

int kms_transit_chain_purge(struct kms_txn *txn, const struct kms_mount *m)
{
    char prefix[96];
    char rec[160];
    kms_mount_prefix(m, prefix, sizeof(prefix));
    snprintf(rec, sizeof(rec), "%s%s", CHAIN_META, prefix);
    return kms_storage_del_prefix(txn, KMS_DB_META, rec, strlen(rec), NULL) == 0 ? 0 : -1;
}

int kms_transit_chain_der(const struct kms_mount *m, struct kms_txn *txn, const char *name,
                          uint32_t version, uint8_t **der, size_t *len)
{
    uint8_t rec[CHAIN_REC_MAX];
    size_t n = chain_rec(m, name, version, rec);
    *der = NULL;
    *len = 0;
    return n == 0 ? -1 : kms_storage_get(txn, KMS_DB_META, rec, n, der, len);
}

int kms_transit_chain_put(const struct kms_mount *m, struct kms_txn *txn, const char *name,
                          uint32_t version, const uint8_t *der, size_t len)
{
    uint8_t rec[CHAIN_REC_MAX];
    size_t n = chain_rec(m, name, version, rec);
    return n != 0 && kms_storage_put(txn, KMS_DB_META, rec, n, der, len) == 0 ? 0 : -1;
}

size_t kms_transit_der_next(const uint8_t *b, size_t len)
{
    size_t hl, vl = 0;
    if (len < 2 || b[0] != 0x30) {
        return 0;
    }
    if (b[1] < 0x80) {
        hl = 2;
        vl = b[1];
    } else {
        size_t k = b[1] & 0x7f;
        if (k == 0 || k > 4 || len < 2 + k) {
            return 0;
        }
        for (size_t i = 0; i < k; i++) {
            vl = vl << 8 | b[2 + i];
        }
        hl = 2 + k;
    }
    return vl <= len - hl ? hl + vl : 0;
}

int kms_transit_chain_get(const struct kms_mount *m, struct kms_txn *txn, const char *name,
                          uint32_t version, char **pem)
{
    uint8_t rec[CHAIN_REC_MAX];
    uint8_t *val = NULL;
    size_t vallen = 0;
    size_t n = chain_rec(m, name, version, rec);
    int g;

    *pem = NULL;
    if (n == 0) {
        return -1;
    }
    g = kms_storage_get(txn, KMS_DB_META, rec, n, &val, &vallen);
    if (g == 0 && kms_cert_chain_pem(val, vallen, pem) != 0) {
        g = -1;
    }
    free(val);
    return g;
}

struct attach_arg {
    json_t *keys;
    size_t prefix_len;
    int rc;
};

static int attach_cb(const uint8_t *key, size_t keylen, const uint8_t *val, size_t vallen,
                     void *arg)
{
    struct attach_arg *a = arg;
    char ver[16];
    char *pem = NULL;
    json_t *entry;

    if (keylen != a->prefix_len + 4) {
        return 0;
    }
    const uint8_t *b = key + a->prefix_len;
    uint32_t v = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
    snprintf(ver, sizeof(ver), "%u", v);
    entry = json_object_get(a->keys, ver);
    if (!json_is_object(entry)) {
        return 0;
    }
    if (kms_cert_chain_pem(val, vallen, &pem) != 0) {
        a->rc = -1;
        return -1;
    }
    json_object_set_new(entry, "certificate_chain", json_string(pem));
    free(pem);
    return 0;
}

int kms_transit_chains_attach(const struct kms_mount *m, struct kms_txn *txn, const char *name,
                              json_t *keys)
{
    uint8_t prefix[CHAIN_REC_MAX];
    struct attach_arg a = {keys, chain_prefix(m, name, prefix), 0};
    if (a.prefix_len == 0 || keys == NULL) {
        return keys == NULL ? 0 : -1;
    }
    if (kms_storage_scan(txn, KMS_DB_META, prefix, a.prefix_len, NULL, 0, true, attach_cb, &a) !=
        0) {
        return -1;
    }
    return a.rc;
}

/* ---- shared checks ----------------------------------------------------------------------- */

/*
 * The key and version both endpoints act on: OpenBao's 400s for an absent key, a type that
 * cannot sign and a derived key (-1); *v is the version asked for (latest by default); 1 when
 * it is not a working one (keysutil's safeGetKeyEntry: "no such key version"), else 0.
 */
static int signing_version(struct kms_ctx *c, const char *name, struct kms_key_policy *p,
                           int64_t *v)
{
    int g = kms_transit_read_key(c, name, p);
    if (g == KMS_STORAGE_NOTFOUND) {
        return KMS_FAIL(c, 400, "key with provided name '%s' not found", name);
    }
    if (g != 0) {
        return KMS_FAILW(c, 500, "cannot read key");
    }
    if (!kms_key_type_supports_signing(p->type)) {
        return KMS_FAIL(c, 400, "key type '%s' does not support signing",
                        kms_key_type_name(p->type));
    }
    if (p->derived) {
        return KMS_FAIL(c, 400, "operation not supported for keys with derivation enabled");
    }
    if (!kms_param_int(c, "version", v)) {
        *v = p->latest_version;
    }
    return *v >= 1 && *v >= (int64_t)p->min_decryption_version && *v <= (int64_t)p->latest_version
               ? 0
               : 1;
}

/* ---- keys/:name/csr ---------------------------------------------------------------------- */

int kms_transit_csr(struct kms_ctx *c)
{
    const char *name = kms_cap(c, "name");
    const char *tmpl = "";
    struct kms_key_policy p;
    struct kms_key_version kv;
    char *csr = NULL;
    int64_t v = 0;
    int rc = -1;
    int s;

    memset(&kv, 0, sizeof(kv));
    (void)kms_param_str(c, "csr", &tmpl);
    s = signing_version(c, name, &p, &v);
    if (s < 0) {
        return -1;
    }
    /* OpenBao parses the template before it looks at the version */
    if (kms_keyring_csr(&p, NULL, tmpl, &csr, &c->err) != 0) {
        goto out;
    }
    if (s > 0) {
        KMS_FAIL(c, 400, "could not create the csr: no such key version");
        goto out;
    }
    if (p.soft_deleted) {
        KMS_FAIL(c, 400, "could not create the csr: %s", KMS_MSG_SOFT_DELETED);
        goto out;
    }
    if (kms_transit_read_version(c, name, (uint32_t)v, &kv, &c->err) != 0) {
        goto out;
    }
    if (kms_keyring_csr(&p, &kv, tmpl, &csr, &c->err) != 0) {
        goto out;
    }
    kms_ctx_note_version(c, (uint32_t)v);
    c->data =
        json_pack("{s:s, s:s, s:s}", "name", name, "type", kms_key_type_name(p.type), "csr", csr);
    rc = c->data != NULL ? 0 : KMS_FAILW(c, 500, "out of memory");
out:
    free(csr);
    kms_memzero(&kv, sizeof(kv));
    return rc;
}

/* ---- keys/:name/set-certificate ---------------------------------------------------------- */

int kms_transit_set_certificate(struct kms_ctx *c)
{
    const char *name = kms_cap(c, "name");
    const char *chain = "";
    struct kms_key_policy p, now;
    struct kms_key_version kv;
    struct kms_txn *txn = NULL;
    uint8_t rec[CHAIN_REC_MAX];
    uint8_t *der = NULL;
    size_t derlen = 0, n;
    int64_t v = 0;
    int rc = -1;
    int s;

    memset(&kv, 0, sizeof(kv));
    (void)kms_param_str(c, "certificate_chain", &chain);
    s = signing_version(c, name, &p, &v);
    if (s < 0) {
        return -1;
    }
    /* the chain is parsed and its shape checked before the version is looked up (OpenBao) */
    if (kms_keyring_cert_chain_check(&p, NULL, chain, &der, &derlen, &c->err) != 0) {
        goto out;
    }
    if (s > 0) {
        KMS_FAIL(c, 400, "failed to persist certificate chain: no such key version");
        goto out;
    }
    if (kms_transit_read_version(c, name, (uint32_t)v, &kv, &c->err) != 0 ||
        kms_keyring_cert_chain_check(&p, &kv, chain, &der, &derlen, &c->err) != 0) {
        goto out;
    }
    if (kms_storage_txn_begin(kms_api_storage(c->api), true, &txn) != 0) {
        KMS_FAILW(c, 500, "cannot open storage transaction");
        goto out;
    }
    /* the version must still be there under the writer lock (no trim or delete since) */
    int g = kms_transit_policy_load(&c->mount, txn, name, &now);
    if (g == KMS_STORAGE_NOTFOUND ||
        (g == 0 && (strcmp(now.uuid, p.uuid) != 0 || v < (int64_t)now.min_decryption_version))) {
        KMS_FAIL(c, 400, "failed to persist certificate chain: no such key version");
        goto out;
    }
    n = chain_rec(&c->mount, name, (uint32_t)v, rec);
    if (g != 0 || n == 0 || kms_storage_put(txn, KMS_DB_META, rec, n, der, derlen) != 0 ||
        kms_storage_txn_commit(&txn) != 0) {
        KMS_FAILW(c, 500, "failed to persist certificate chain: cannot store it");
        goto out;
    }
    kms_ctx_note_version(c, (uint32_t)v);
    c->data = json_pack("{s:s, s:s, s:s}", "name", name, "type", kms_key_type_name(p.type),
                        "certificate_chain", chain);
    rc = c->data != NULL ? 0 : KMS_FAILW(c, 500, "out of memory");
out:
    kms_storage_txn_abort(&txn);
    free(der);
    kms_memzero(&kv, sizeof(kv));
    return rc;
}

const struct kms_field kms_transit_csr_fields[] = {
    {"version", KMS_F_INT},
    {"csr", KMS_F_STRING},
    {NULL, 0},
};

const struct kms_field kms_transit_set_certificate_fields[] = {
    {"version", KMS_F_INT},
    {"certificate_chain", KMS_F_STRING},
    {NULL, 0},
};
