/*
 * derive.c - derive-key/:name (OpenBao's transit path_derive_key.go): a new key agreed by
 * ECDH between a version of an ecdsa-* key of this mount and a peer's public key, stored as
 * an imported key.
 *
 * Design notes:
 * - Checks run in OpenBao's order and with its statuses: algorithm, peer key, derived key
 *   type (400s), the base key (400 when absent or not ECDSA), the base version (400s), the
 *   peer key's parsing and curve (400s, crypto/x509.c); the import's failures are 500s with
 *   OpenBao's "error importing key: " prefix.
 * - The result is stored as OpenBao's ImportPolicy stores it: a new key of derived_key_type
 *   with imported_key set and every flag off; when the name exists the derived key becomes a
 *   new version of that key, whatever its type, if its material fits (an AEAD key of the
 *   same size, an hmac key), else the import fails. A soft-deleted target refuses it.
 * - kmsd also refuses a soft-deleted base key (OpenBao derives from it): soft-deletion means
 *   no use of the key at all.
 * - The derived key never leaves the server: the answer is 204, and the key is wiped at out:.
 */
#include "engine/transit/transit_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IMPORT_ERR "error importing key: "

/* derived_key_type, any case, as OpenBao's switch takes it (AEAD types only). */
static int derived_type(const char *s, enum kms_key_type *t)
{
    char lower[32];
    size_t i = 0;
    for (; s[i] != '\0' && i + 1 < sizeof(lower); i++) {
        lower[i] = (char)tolower((unsigned char)s[i]);
    }
    lower[i] = '\0';
    if (s[i] != '\0' || kms_key_type_parse(lower, t) != 0 || !kms_key_type_is_aead(*t)) {
        return -1;
    }
    return 0;
}

/* The derived key into the key `name` (new, or a new version of an existing one). */
static int store_derived(struct kms_ctx *c, const char *name, enum kms_key_type type,
                         const uint8_t *key, size_t keylen)
{
    struct kms_key_policy p;
    struct kms_key_version kv;
    struct kms_txn *txn = NULL;
    char msg[sizeof(c->err.msg)];
    int rc = -1;
    int g;

    memset(&kv, 0, sizeof(kv));
    if (kms_storage_txn_begin(kms_api_storage(c->api), true, &txn) != 0) {
        return KMS_FAILW(c, 500, "cannot open storage transaction");
    }
    g = kms_transit_policy_load(&c->mount, txn, name, &p);
    if (g != 0 && g != KMS_STORAGE_NOTFOUND) {
        KMS_FAILW(c, 500, "cannot read key");
        goto out;
    }
    if (g == KMS_STORAGE_NOTFOUND) {
        if (kms_key_policy_init(&p, type) != 0) {
            KMS_FAILW(c, 500, "cannot initialise key");
            goto out;
        }
        p.imported = true;
    } else if (p.soft_deleted) {
        KMS_FAILW(c, 500, IMPORT_ERR "%s", KMS_MSG_SOFT_DELETED);
        goto out;
    } else if (kms_key_type_supports_signing(p.type)) {
        /* OpenBao imports the bytes as a public key in PEM, which they never are */
        if (p.type == KMS_KEY_ED25519 && p.derived) {
            KMS_FAILW(c, 500,
                      IMPORT_ERR "unable to import only public key for derived Ed25519 key: "
                                 "imported key should not be an Ed25519 key pair but is "
                                 "instead an HKDF key");
        } else {
            KMS_FAILW(c, 500, IMPORT_ERR "error parsing public key: not in PEM format");
        }
        goto out;
    } else if (p.latest_version == UINT32_MAX) {
        KMS_FAIL(c, 400, "key %s has reached the maximum number of versions", name);
        goto out;
    }
    if (kms_key_version_import(&p, p.latest_version + 1, key, keylen, &kv, &c->err) != 0) {
        snprintf(msg, sizeof(msg), "%s", c->err.msg);
        KMS_FAILW(c, 500, IMPORT_ERR "%s", msg);
        goto out;
    }
    p.latest_version++;
    if (p.min_decryption_version == 0) {
        p.min_decryption_version = 1;
    }
    if (p.latest_version == 1) {
        p.created_sec = kv.created_sec;
    }
    if (kms_transit_key_store(c->estate, &c->mount, name, &p, &kv, &txn) != 0) {
        KMS_FAILW(c, 500, IMPORT_ERR "cannot store key");
        goto out;
    }
    kms_ctx_note_version(c, p.latest_version);
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    kms_memzero(&kv, sizeof(kv));
    return rc;
}

int kms_transit_derive_key(struct kms_ctx *c)
{
    const struct kms_transit *t = c->estate;
    const char *name = kms_cap(c, "name");
    const char *alg = "ecdh";
    const char *peer = "";
    const char *base = "";
    const char *tname = "aes256-gcm96";
    int64_t ver = 0;
    enum kms_key_type type;
    struct kms_key_policy bp;
    struct kms_key_version bkv;
    uint8_t key[32];
    size_t keylen;
    int rc = -1;
    int g;

    memset(&bkv, 0, sizeof(bkv));
    (void)kms_param_str(c, "key_derivation_algorithm", &alg);
    (void)kms_param_str(c, "peer_public_key", &peer);
    (void)kms_param_str(c, "base_key_name", &base);
    (void)kms_param_int(c, "base_key_version", &ver);
    (void)kms_param_str(c, "derived_key_type", &tname);
    if (strcmp(alg, "ecdh") != 0) {
        return KMS_FAIL(c, 400, "key derivation algorithm %s not supported", alg);
    }
    if (peer[0] == '\0') {
        return KMS_FAIL(c, 400, "peer public key not provided");
    }
    if (derived_type(tname, &type) != 0) {
        return KMS_FAIL(c, 400, "unknown key type %s", tname);
    }
    keylen = kms_key_type_key_len(type);
    if (kms_transit_refuse_managed(c, name, "derive-key cannot add versions to it") != 0) {
        return -1;
    }
    /* the base key is a key of its own: the ownership check covers it too */
    if (base[0] != '\0' && t->owner_fn != NULL && !t->owner_fn(t->owner_arg, c, base)) {
        return KMS_FAILW(c, 403, "permission denied");
    }
    g = base[0] != '\0' ? kms_transit_read_key(c, base, &bp) : KMS_STORAGE_NOTFOUND;
    if (g == KMS_STORAGE_NOTFOUND) {
        return KMS_FAIL(c, 400, "specified base key not found");
    }
    if (g != 0) {
        return KMS_FAILW(c, 500, "cannot read key");
    }
    if (bp.type != KMS_KEY_ECDSA_P256 && bp.type != KMS_KEY_ECDSA_P384 &&
        bp.type != KMS_KEY_ECDSA_P521) {
        return KMS_FAIL(c, 400, "base key type %s does not support key agreement",
                        kms_key_type_name(bp.type));
    }
    if (bp.soft_deleted) {
        return KMS_FAIL(c, 400, "%s", KMS_MSG_SOFT_DELETED);
    }
    /* the version and peer key checks are DeriveKeyECDH's, whose errors OpenBao's handler
     * returns without a response: 500, wrapped (as sign's, contract §8 #18) */
    if (ver == 0) {
        ver = bp.latest_version;
    } else if (ver < 0) {
        return KMS_FAILW(c, 500, "requested version of the base key is negative");
    } else if (ver > (int64_t)bp.latest_version) {
        return KMS_FAILW(c, 500,
                         "requested version of the base key is higher than the latest key "
                         "version");
    } else if (ver < (int64_t)bp.min_available_version) {
        return KMS_FAILW(c, 500,
                         "requested version of the base key is less than the minimum available "
                         "key version");
    }
    /* versions below min_decryption_version are archived: OpenBao has no entry for them */
    if (ver < (int64_t)bp.min_decryption_version) {
        return KMS_FAILW(c, 500, "no such key version");
    }
    if (kms_transit_read_version(c, base, (uint32_t)ver, &bkv, &c->err) != 0) {
        goto out;
    }
    if (kms_keyring_derive_ecdh(&bp, &bkv, peer, strlen(peer), key, keylen, &c->err) != 0) {
        if (c->err.status == 400) {
            /* DeriveKeyECDH's UserErrors come back without a response in OpenBao: 500 */
            c->err.status = 500;
            c->err.wrapped = true;
        }
        goto out;
    }
    rc = store_derived(c, name, type, key, keylen);
out:
    kms_memzero(key, sizeof(key));
    kms_memzero(&bkv, sizeof(bkv));
    return rc;
}

const struct kms_field kms_transit_derive_key_fields[] = {
    {"key_derivation_algorithm", KMS_F_STRING},
    {"peer_public_key", KMS_F_STRING},
    {"base_key_name", KMS_F_STRING},
    {"base_key_version", KMS_F_INT},
    {"derived_key_type", KMS_F_STRING},
    {NULL, 0},
};
