/*
 * plugin_local.c - the in-process KMS plugin backend (kmsd server -kms-plugin-socket=...): the
 * local keyring through the Transit engine's direct operations, no HTTP and no token. The key
 * is a Transit key of the namespace's transit/ mount, or a KMSKey of purpose etcd whose
 * Transit key is used. Namespace, mount and KMSKey are looked up again for every call (a
 * namespace or KMSKey created after start-up works, a deleted one stops working); each call
 * is audited like the HTTP call it stands for, subject "system:kms-plugin".
 */
#include "engine/engines.h"

#include "api/engine.h"
#include "engine/kmskey/kmskey.h"
#include "engine/transit/transit.h"
#include "kmsplugin/kmsplugin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PLUGIN_SUBJECT "system:kms-plugin"

struct local {
    struct kms_api *api;
    struct kms_transit *transit;
    void *kmskey; /* the KMSKey engine's state */
    char ns_path[KMS_PATH_MAX];
    bool is_kmskey;
    char project[128];
    char name[256];
    char transit_name[KMS_PATH_MAX];
};

struct target {
    struct kms_ns ns;
    struct kms_mount mount;
};

static int resolve(struct local *l, struct target *t, struct kms_err *err)
{
    if (kms_registry_ns_get(l->api, l->ns_path, &t->ns) != 0) {
        return kms_err_set(err, 404, "namespace \"%s\" not found", l->ns_path);
    }
    if (kms_registry_mount_get(l->api, t->ns.id, "transit/", &t->mount) != 0 ||
        strcmp(t->mount.type, "transit") != 0) {
        return kms_err_set(err, 404, "no transit/ mount in namespace \"%s\"", l->ns_path);
    }
    if (l->is_kmskey) {
        char tn[KMS_PATH_MAX];
        if (kms_kmskey_plugin_key(l->kmskey, &t->ns, l->project, l->name, tn, sizeof(tn), err) !=
            0) {
            return -1;
        }
    }
    return 0;
}

static int audit_begin(struct local *l, const struct target *t, const char *op, const char *uid,
                       struct kms_api_audit_event *ev, char *path, size_t pathlen,
                       struct kms_audit_rec **rec, struct kms_err *err)
{
    snprintf(path, pathlen, "transit/%s/%s",
             strcmp(op, "kms-plugin-encrypt") == 0 ? "encrypt" : "decrypt", l->transit_name);
    memset(ev, 0, sizeof(*ev));
    ev->ns_id = t->ns.id;
    ev->ns_path = t->ns.path;
    ev->path = path;
    ev->operation = "update";
    ev->op = op;
    ev->key = l->transit_name;
    ev->project = l->is_kmskey ? l->project : NULL;
    ev->subject = PLUGIN_SUBJECT;
    ev->resource = "KMSKey"; /* as HTTP calls on Transit keys are */
    ev->pure = true;
    ev->client_uid = uid;
    return kms_api_audit_internal_begin(l->api, ev, rec, err);
}

static int audit_end(struct kms_audit_rec **rec, struct kms_api_audit_event *ev, int rc,
                     uint32_t version, const struct kms_err *call_err, struct kms_err *err)
{
    if (*rec == NULL) {
        return 0;
    }
    /* the status the HTTP call it stands for would have had (a tampered ciphertext: 400) */
    ev->status = rc != 0 && call_err->status >= 400 ? call_err->status : 0;
    return kms_api_audit_internal_end(rec, ev, rc == 0 ? &version : NULL, rc == 0 ? 1 : 0,
                                      rc == 0 ? NULL : call_err->msg, err);
}

/* deadline_ms is not used: a Transit operation and its audit lines are not cut short half-way
 * (the plugin answers DEADLINE_EXCEEDED at the deadline and drops this call's answer). */
static int local_encrypt(void *arg, const uint8_t *pt, size_t ptlen, const char *uid,
                         int64_t deadline_ms, char **ct, uint32_t *version, struct kms_err *err)
{
    struct local *l = arg;
    (void)deadline_ms;
    struct target t;
    struct kms_api_audit_event ev;
    struct kms_audit_rec *rec = NULL;
    char path[KMS_PATH_MAX + 32];
    struct kms_err aerr;

    *ct = NULL;
    if (resolve(l, &t, err) != 0 ||
        audit_begin(l, &t, "kms-plugin-encrypt", uid, &ev, path, sizeof(path), &rec, err) != 0) {
        return -1;
    }
    int rc = kms_transit_encrypt_direct(l->transit, &t.mount, l->transit_name, pt, ptlen, ct,
                                        version, err);
    kms_err_clear(&aerr);
    if (audit_end(&rec, &ev, rc, *version, err, &aerr) != 0) {
        /* fail closed: an answer the audit log does not show is not given */
        if (*ct != NULL) {
            kms_free_wipe((void **)ct, strlen(*ct));
        }
        *err = aerr;
        return -1;
    }
    return rc;
}

static int local_decrypt(void *arg, const char *ct, size_t ctlen, uint32_t version, const char *uid,
                         int64_t deadline_ms, uint8_t **pt, size_t *ptlen, struct kms_err *err)
{
    struct local *l = arg;
    (void)deadline_ms;
    struct target t;
    struct kms_api_audit_event ev;
    struct kms_audit_rec *rec = NULL;
    char path[KMS_PATH_MAX + 32];
    struct kms_err aerr;
    uint32_t used = version;

    *pt = NULL;
    *ptlen = 0;
    if (resolve(l, &t, err) != 0 ||
        audit_begin(l, &t, "kms-plugin-decrypt", uid, &ev, path, sizeof(path), &rec, err) != 0) {
        return -1;
    }
    int rc = kms_transit_decrypt_direct(l->transit, &t.mount, l->transit_name, ct, ctlen, pt, ptlen,
                                        &used, err);
    kms_err_clear(&aerr);
    if (audit_end(&rec, &ev, rc, used, err, &aerr) != 0) {
        kms_free_wipe((void **)pt, *ptlen);
        *ptlen = 0;
        *err = aerr;
        return -1;
    }
    return rc;
}

/* A call the plugin refused before asking Transit: audited as the HTTP call it stands for
 * would be when Transit refuses it (400 and the message). A namespace, mount or KMSKey that
 * does not resolve leaves no record, as the calls themselves do not. */
static int local_refused(void *arg, bool decrypt, const char *uid, const char *why,
                         struct kms_err *err)
{
    struct local *l = arg;
    struct target t;
    struct kms_api_audit_event ev;
    struct kms_audit_rec *rec = NULL;
    char path[KMS_PATH_MAX + 32];
    struct kms_err call;

    kms_err_clear(&call);
    if (resolve(l, &t, &call) != 0) {
        return 0;
    }
    if (audit_begin(l, &t, decrypt ? "kms-plugin-decrypt" : "kms-plugin-encrypt", uid, &ev, path,
                    sizeof(path), &rec, err) != 0) {
        return -1;
    }
    kms_err_set(&call, 400, "%s", why);
    return audit_end(&rec, &ev, -1, 0, &call, err);
}

static void local_destroy(void *arg)
{
    free(arg);
}

struct find_kms {
    void *state;
};

static int find_kmskey(const struct kms_engine *e, void *arg)
{
    struct find_kms *f = arg;
    if (e->builtin_path != NULL && strcmp(e->type, "kms") == 0) {
        f->state = e->state;
        return 1;
    }
    return 0;
}

int kms_engines_plugin_backend(struct kms_api *api, const char *ns_path, const char *key,
                               struct kms_plugin_backend *out, struct kms_err *err)
{
    const struct kms_engine *te = kms_api_engine_find(api, "transit");
    struct find_kms fk = {NULL};
    memset(out, 0, sizeof(*out));
    if (te == NULL || kms_api_engines_visit(api, find_kmskey, &fk) < 0 || fk.state == NULL) {
        return kms_err_set(err, 500, "the transit and kms engines are not registered");
    }
    struct local *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        return kms_err_set(err, 500, "out of memory");
    }
    l->api = api;
    l->transit = te->state;
    l->kmskey = fk.state;
    const char *ns = ns_path != NULL ? ns_path : "";
    size_t nl = strlen(ns);
    while (nl > 0 && ns[nl - 1] == '/') {
        nl--;
    }
    if (nl + 2 > sizeof(l->ns_path)) {
        free(l);
        return kms_err_set(err, 400, "namespace path too long");
    }
    /* the registry's form: "" for root, else "org/" */
    memcpy(l->ns_path, ns, nl);
    if (nl > 0) {
        l->ns_path[nl++] = '/';
    }
    l->ns_path[nl] = '\0';
    if (kms_plugin_key_parse(key, &l->is_kmskey, l->project, sizeof(l->project), l->name,
                             sizeof(l->name), err) != 0 ||
        kms_plugin_transit_name(l->ns_path, l->is_kmskey, l->project, l->name, l->transit_name,
                                sizeof(l->transit_name), err) != 0) {
        free(l);
        return -1;
    }
    /* key_id = "<ns path>transit/keys/<transit name>:v<N>": the same in the sidecar */
    if ((size_t)snprintf(out->label, sizeof(out->label), "%stransit/keys/%s", l->ns_path,
                         l->transit_name) >= sizeof(out->label)) {
        free(l);
        return kms_err_set(err, 400, "key name too long");
    }
    out->arg = l;
    out->encrypt = local_encrypt;
    out->decrypt = local_decrypt;
    out->refused = local_refused;
    out->destroy = local_destroy;
    return 0;
}
