/*
 * export.c - export/:type/:name(/:version) for every key type, and the per-version entries of
 * the key object (keys/:name read) that depend on the type.
 *
 * Design notes:
 * - Checks run in OpenBao's order (path_export.go): export type, format, the key (404 when
 *   absent), exportability (public-key and certificate-chain need none), whether the type
 *   has such a key, the version. Encoding failures of one version fail the request with a
 *   wrapped 500, as OpenBao returns them.
 * - certificate-chain returns the chains keys/:name/set-certificate stored (certs.c); a
 *   version without one answers OpenBao's "no chain imported" error.
 * - Exported strings hold key material: they are wiped before they are freed; the response
 *   body is the caller's (the envelope frees it).
 */
#include "engine/transit/transit_int.h"

#include <stdlib.h>
#include <string.h>

static int parse_type(const char *s, enum kms_export_type *t, bool *chain)
{
    *chain = false;
    if (strcmp(s, "encryption-key") == 0) {
        *t = KMS_EXPORT_ENCRYPTION_KEY;
    } else if (strcmp(s, "signing-key") == 0) {
        *t = KMS_EXPORT_SIGNING_KEY;
    } else if (strcmp(s, "hmac-key") == 0) {
        *t = KMS_EXPORT_HMAC_KEY;
    } else if (strcmp(s, "public-key") == 0) {
        *t = KMS_EXPORT_PUBLIC_KEY;
    } else if (strcmp(s, "certificate-chain") == 0) {
        *t = KMS_EXPORT_PUBLIC_KEY;
        *chain = true;
    } else {
        return -1;
    }
    return 0;
}

static int parse_format(const char *s, enum kms_export_format *f)
{
    if (s[0] == '\0') {
        *f = KMS_FORMAT_DEFAULT;
    } else if (strcmp(s, "raw") == 0) {
        *f = KMS_FORMAT_RAW;
    } else if (strcmp(s, "der") == 0) {
        *f = KMS_FORMAT_DER;
    } else if (strcmp(s, "pem") == 0) {
        *f = KMS_FORMAT_PEM;
    } else {
        return -1;
    }
    return 0;
}

int kms_transit_export_versions(struct kms_ctx *c, const struct kms_key_policy *p, const char *s,
                                uint32_t *from, uint32_t *to)
{
    int64_t v = 0;

    *from = p->min_decryption_version;
    *to = p->latest_version;
    if (s == NULL) {
        return 0;
    }
    if (strcmp(s, "latest") == 0) {
        v = p->latest_version;
    } else {
        const char *d = s[0] == 'v' ? s + 1 : s;
        const char *q = d[0] == '+' || d[0] == '-' ? d + 1 : d;
        bool digits = q[0] != '\0';
        for (const char *x = q; *x != '\0'; x++) {
            digits = digits && *x >= '0' && *x <= '9';
        }
        if (!digits || !kms_int_parse(d, &v)) {
            return KMS_FAIL(c, 400, "invalid key version");
        }
    }
    if (v < (int64_t)p->min_decryption_version) {
        return KMS_FAIL(c, 400, "version for export is below minimum decryption version");
    }
    if (v > (int64_t)p->latest_version) {
        return KMS_FAIL(c, 400, "version does not exist or cannot be found");
    }
    *from = *to = (uint32_t)v;
    return 0;
}

int kms_transit_export(struct kms_ctx *c)
{
    const char *name = kms_cap(c, "name");
    const char *tname = kms_cap(c, "type");
    const char *format = "";
    enum kms_export_type type;
    enum kms_export_format fmt;
    struct kms_key_policy p;
    struct kms_key_version kv;
    json_t *keys = NULL;
    uint32_t from, to;
    bool chain;
    int rc = -1;

    memset(&kv, 0, sizeof(kv));
    (void)kms_param_str(c, "format", &format);
    if (parse_type(tname, &type, &chain) != 0) {
        return KMS_FAIL(c, 400, "invalid export type: %s", tname);
    }
    if (parse_format(format, &fmt) != 0) {
        return KMS_FAIL(c, 400, "invalid format: %s", format);
    }
    int g = kms_transit_read_key(c, name, &p);
    if (g == KMS_STORAGE_NOTFOUND) {
        return kms_fail_notfound(c);
    }
    if (g != 0) {
        return KMS_FAILW(c, 500, "cannot read key");
    }
    if (!p.exportable && type != KMS_EXPORT_PUBLIC_KEY) {
        return KMS_FAIL(c, 400, "private key material is not exportable");
    }
    if (p.soft_deleted) {
        return KMS_FAILW(c, 500, "%s", KMS_MSG_SOFT_DELETED);
    }
    if (type == KMS_EXPORT_ENCRYPTION_KEY && !kms_key_type_supports_encryption(p.type)) {
        return KMS_FAIL(c, 400, "encryption not supported for the key");
    }
    if (type == KMS_EXPORT_SIGNING_KEY && !kms_key_type_supports_signing(p.type)) {
        return KMS_FAIL(c, 400, "signing not supported for the key");
    }
    if (chain && !kms_key_type_supports_signing(p.type)) {
        return KMS_FAIL(c, 400,
                        "certificate chain not supported for keys that do not support signing");
    }
    if (kms_transit_export_versions(c, &p, kms_cap(c, "version"), &from, &to) != 0) {
        return -1;
    }
    keys = json_object();
    for (uint32_t v = from; v <= to && v != 0; v++) {
        char ver[16];
        char *out = NULL;
        if (kms_transit_read_version(c, name, v, &kv, &c->err) != 0) {
            c->err.wrapped = true;
            c->err.status = 500;
            goto out;
        }
        if (chain) {
            struct kms_txn *txn = NULL;
            int cg = kms_storage_txn_begin(kms_api_storage(c->api), false, &txn) != 0
                         ? -1
                         : kms_transit_chain_get(&c->mount, txn, name, v, &out);
            kms_storage_txn_abort(&txn);
            if (cg != 0) {
                KMS_FAILW(c, 500, "%s",
                          cg == KMS_STORAGE_NOTFOUND
                              ? "selected key version does not have a certificate chain imported"
                              : "cannot read certificate chain");
                goto out;
            }
        } else if (kms_keyring_export(&p, &kv, type, fmt, &out, &c->err) != 0) {
            goto out;
        }
        snprintf(ver, sizeof(ver), "%u", v);
        json_object_set_new(keys, ver, json_string(out));
        kms_free_wipe((void **)&out, strlen(out) + 1);
        kms_memzero(&kv, sizeof(kv));
        kms_ctx_note_version(c, v);
    }
    c->data =
        json_pack("{s:s, s:s, s:O}", "name", name, "type", kms_key_type_name(p.type), "keys", keys);
    rc = 0;
out:
    json_decref(keys);
    kms_memzero(&kv, sizeof(kv));
    return rc;
}

json_t *kms_transit_version_json(const struct kms_key_policy *p, const struct kms_key_version *kv,
                                 const uint8_t *context, size_t ctxlen, struct kms_err *err)
{
    static const char *const curve[] = {"P-256", "P-384", "P-521"};
    char created[40];
    char *pub = NULL;
    const char *kname;

    if (kms_key_type_is_aead(p->type) || p->type == KMS_KEY_HMAC) {
        return json_integer(kv->created_sec);
    }
    if (kms_keyring_public_key(p, kv, context, ctxlen, &pub, err) != 0) {
        return NULL;
    }
    switch (p->type) {
    case KMS_KEY_ECDSA_P256:
    case KMS_KEY_ECDSA_P384:
    case KMS_KEY_ECDSA_P521:
        kname = curve[p->type - KMS_KEY_ECDSA_P256];
        break;
    default:
        kname = kms_key_type_name(p->type);
        break;
    }
    kms_time_rfc3339(kv->created_sec, kv->created_nsec, created);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "name", kname, "public_key", pub,
                          "certificate_chain", "", "creation_time", created);
    free(pub);
    return o;
}
