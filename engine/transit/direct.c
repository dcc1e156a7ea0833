/*
 * direct.c - encrypt and decrypt with a Transit key outside any HTTP request (the KMS plugin
 * of kmsd, engine/plugin_local.c): the same key cache, version rules and keyring calls as
 * transit/encrypt and transit/decrypt, for AEAD keys without derivation.
 */
#include "engine/transit/transit_int.h"

#include <stdlib.h>
#include <string.h>

/* A request context that is only what the key lookups read: the API, the mount, the engine. */
static void direct_ctx(struct kms_transit *t, const struct kms_mount *m, struct kms_ctx *c)
{
    memset(c, 0, sizeof(*c));
    c->api = t->api;
    c->mount = *m;
    c->estate = t;
}

static int usable_key(struct kms_ctx *c, const char *name, struct kms_key_policy *p,
                      struct kms_err *err)
{
    int g = kms_transit_read_key(c, name, p);
    if (g == KMS_STORAGE_NOTFOUND) {
        return kms_err_set(err, 404, "Transit key %s not found", name);
    }
    if (g != 0) {
        return kms_err_set(err, 500, "cannot read Transit key %s", name);
    }
    if (!kms_key_type_is_aead(p->type) || p->derived) {
        return kms_err_set(err, 412,
                           "Transit key %s is %s%s; the KMS plugin needs an AEAD key without "
                           "derivation",
                           name, p->derived ? "derived " : "", kms_key_type_name(p->type));
    }
    if (p->soft_deleted) {
        return kms_err_set(err, 412, "Transit key %s: %s", name, KMS_MSG_SOFT_DELETED);
    }
    return 0;
}

int kms_transit_encrypt_direct(struct kms_transit *t, const struct kms_mount *m, const char *name,
                               const uint8_t *pt, size_t ptlen, char **ct, uint32_t *version,
                               struct kms_err *err)
{
    struct kms_ctx *c = malloc(sizeof(*c));
    struct kms_key_policy p;
    struct kms_key_version kv;
    int rc = -1;

    *ct = NULL;
    if (c == NULL) {
        return kms_err_set(err, 500, "out of memory");
    }
    direct_ctx(t, m, c);
    if (usable_key(c, name, &p, err) != 0 ||
        kms_keyring_encrypt_version(&p, 0, version, err) != 0 ||
        kms_transit_read_version(c, name, *version, &kv, err) != 0) {
        goto out;
    }
    rc = kms_keyring_encrypt(&p, &kv, NULL, 0, false, NULL, 0, pt, ptlen, ct, err);
    kms_memzero(&kv, sizeof(kv));
out:
    free(c);
    return rc;
}

int kms_transit_decrypt_direct(struct kms_transit *t, const struct kms_mount *m, const char *name,
                               const char *ct, size_t ctlen, uint8_t **pt, size_t *ptlen,
                               uint32_t *version, struct kms_err *err)
{
    struct kms_ctx *c = malloc(sizeof(*c));
    struct kms_key_policy p;
    struct kms_key_version kv;
    int rc = -1;

    *pt = NULL;
    *ptlen = 0;
    if (c == NULL) {
        return kms_err_set(err, 500, "out of memory");
    }
    direct_ctx(t, m, c);
    if (usable_key(c, name, &p, err) != 0 ||
        kms_keyring_ciphertext_version(&p, ct, ctlen, version, err) != 0 ||
        kms_transit_read_version(c, name, *version, &kv, err) != 0) {
        goto out;
    }
    rc = kms_keyring_decrypt(&p, &kv, ct, ctlen, NULL, 0, false, NULL, 0, pt, ptlen, err);
    kms_memzero(&kv, sizeof(kv));
out:
    free(c);
    return rc;
}
