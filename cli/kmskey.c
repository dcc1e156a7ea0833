/*
 * kmskey.c - the fields a KMSKey manifest may carry, in one table used both ways: `apply`
 * refuses a manifest with any other field (kubectl's strict decoding: a misspelt
 * `spec.rotaton` is an error, not a silently ignored line), and `-o json|yaml` prints only
 * these fields, so what kmsctl prints can be applied again (`kmsctl keys get K -o yaml |
 * kmsctl apply -f -`, or kubectl against the CRD).
 *
 * metadata is Kubernetes' ObjectMeta (the fields `kubectl get -o yaml` prints); status is
 * what kmsd reports and is ignored on input, as the API server ignores it on a resource
 * with a status subresource.
 */
#include "cli/cli.h"

#include <string.h>

enum shape {
    SH_LEAF, /* any value */
    SH_MAP,  /* a mapping whose keys are `sub` */
    SH_LIST, /* a sequence of mappings whose keys are `sub` */
};

struct field {
    const char *name;
    enum shape shape;
    const struct field *sub;
};

static const struct field rotation_fields[] = {
    {"enabled", SH_LEAF, NULL},
    {"interval", SH_LEAF, NULL},
    {NULL, SH_LEAF, NULL},
};

static const struct field spec_fields[] = {
    {"purpose", SH_LEAF, NULL},
    {"algorithm", SH_LEAF, NULL},
    {"rotation", SH_MAP, rotation_fields},
    {"deletionPolicy", SH_LEAF, NULL},
    {"exportable", SH_LEAF, NULL},
    {NULL, SH_LEAF, NULL},
};

static const struct field condition_fields[] = {
    {"type", SH_LEAF, NULL},
    {"status", SH_LEAF, NULL},
    {"reason", SH_LEAF, NULL},
    {"message", SH_LEAF, NULL},
    {"lastTransitionTime", SH_LEAF, NULL},
    {"observedGeneration", SH_LEAF, NULL},
    {NULL, SH_LEAF, NULL},
};

static const struct field status_fields[] = {
    {"keyId", SH_LEAF, NULL},
    {"currentVersion", SH_LEAF, NULL},
    {"minDecryptionVersion", SH_LEAF, NULL},
    {"lastRotatedTime", SH_LEAF, NULL},
    {"nextRotationTime", SH_LEAF, NULL},
    {"scheduledDeletion", SH_LEAF, NULL},
    {"observedGeneration", SH_LEAF, NULL},
    {"conditions", SH_LIST, condition_fields},
    {NULL, SH_LEAF, NULL},
};

/* metav1.ObjectMeta */
static const struct field metadata_fields[] = {
    {"name", SH_LEAF, NULL},
    {"generateName", SH_LEAF, NULL},
    {"namespace", SH_LEAF, NULL},
    {"uid", SH_LEAF, NULL},
    {"resourceVersion", SH_LEAF, NULL},
    {"generation", SH_LEAF, NULL},
    {"creationTimestamp", SH_LEAF, NULL},
    {"deletionTimestamp", SH_LEAF, NULL},
    {"deletionGracePeriodSeconds", SH_LEAF, NULL},
    {"labels", SH_LEAF, NULL},
    {"annotations", SH_LEAF, NULL},
    {"ownerReferences", SH_LEAF, NULL},
    {"finalizers", SH_LEAF, NULL},
    {"managedFields", SH_LEAF, NULL},
    {NULL, SH_LEAF, NULL},
};

static const struct field kmskey_fields[] = {
    {"apiVersion", SH_LEAF, NULL},         {"kind", SH_LEAF, NULL},
    {"metadata", SH_MAP, metadata_fields}, {"spec", SH_MAP, spec_fields},
    {"status", SH_MAP, status_fields},     {NULL, SH_LEAF, NULL},
};

static const struct field *lookup(const struct field *fields, const char *name)
{
    for (const struct field *f = fields; f->name != NULL; f++) {
        if (strcmp(f->name, name) == 0) {
            return f;
        }
    }
    return NULL;
}

struct walk {
    bool prune; /* delete unknown fields (output) instead of reporting them (input) */
    char *msg;  /* report: `unknown field "a.b", unknown field "c"` */
    size_t n, used;
    size_t count;
};

static void walk_map(json_t *obj, const struct field *fields, const char *prefix, struct walk *w);

static void walk_value(json_t *v, const struct field *f, const char *path, struct walk *w)
{
    size_t i;
    json_t *item;
    char ipath[512];
    if (f->shape == SH_MAP && json_is_object(v)) {
        walk_map(v, f->sub, path, w);
    } else if (f->shape == SH_LIST && json_is_array(v)) {
        json_array_foreach(v, i, item)
        {
            if (json_is_object(item) &&
                (size_t)snprintf(ipath, sizeof(ipath), "%s[%zu]", path, i) < sizeof(ipath)) {
                walk_map(item, f->sub, ipath, w);
            }
        }
    }
}

static void walk_map(json_t *obj, const struct field *fields, const char *prefix, struct walk *w)
{
    const char *k;
    json_t *v;
    void *tmp;
    char path[512];
    json_object_foreach_safe(obj, tmp, k, v)
    {
        const struct field *f = lookup(fields, k);
        snprintf(path, sizeof(path), "%s%s%s", prefix, prefix[0] ? "." : "", k);
        if (f != NULL) {
            walk_value(v, f, path, w);
        } else if (w->prune) {
            json_object_del(obj, k);
        } else {
            w->count++;
            if (w->used < w->n) {
                w->used +=
                    (size_t)snprintf(w->msg + w->used, w->n - w->used, "%sunknown field \"%s\"",
                                     w->count > 1 ? ", " : "", path);
            }
        }
    }
}

int kms_cli_kmskey_strict(const json_t *doc, char *msg, size_t n)
{
    struct walk w = {false, msg, n, 0, 0};
    msg[0] = '\0';
    /* walk_map only deletes when pruning; the document is not modified here */
    walk_map((json_t *)(uintptr_t)doc, kmskey_fields, "", &w);
    return w.count == 0 ? 0 : -1;
}

void kms_cli_kmskey_clean(json_t *obj)
{
    struct walk w = {true, NULL, 0, 0, 0};
    if (json_is_object(obj)) {
        walk_map(obj, kmskey_fields, "", &w);
    }
}

int kms_cli_print_kmskey(enum kms_cli_fmt fmt, const json_t *obj)
{
    json_t *copy = json_deep_copy(obj);
    const char *kind = json_string_value(json_object_get(obj, "kind"));
    size_t i;
    json_t *item;
    int rc;
    if (copy == NULL) {
        kms_cli_errorf("out of memory");
        return -1;
    }
    if (kind != NULL && strcmp(kind, "KMSKeyList") == 0) {
        json_array_foreach(json_object_get(copy, "items"), i, item)
        {
            kms_cli_kmskey_clean(item);
        }
    } else {
        kms_cli_kmskey_clean(copy);
    }
    rc = kms_cli_print_value(fmt, copy);
    json_decref(copy);
    return rc;
}
