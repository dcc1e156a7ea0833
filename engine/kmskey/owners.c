/*
 * owners.c - the KMSKey ownership index: which KMSKey (or retained-key tombstone) owns which
 * Transit name of an organization namespace, and which projects have KMSKeys there.
 *
 * Two arrays of pointers to the same entries, each kept sorted: by (namespace, Transit rest,
 * creation, load order) to find a name's owner, the first of its group; and by (namespace,
 * project, name, kind) to find an entry or whether a project has any. Lookups are binary
 * searches under a read lock; inserts and removals move pointers, which is cheap next to the
 * storage write that comes with every one of them.
 */
#include "engine/kmskey/kmskey_int.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct entry {
    char ns_id[KMS_NS_ID_LEN];
    char project[KMS_KMSKEY_LABEL_MAX + 1];
    char name[KMS_KMSKEY_LABEL_MAX + 1];
    char rest[2 * (KMS_KMSKEY_LABEL_MAX + 1)];
    char created[40];
    uint64_t seq;
    bool retained;
    bool made;
};

struct kms_owners {
    pthread_rwlock_t lock;
    struct entry **by_rest;
    struct entry **by_key;
    size_t n, cap;
    struct entry *spare; /* kms_owners_reserve's entry for the next add */
    uint64_t seq;
};

static int cmp_rest(const struct entry *a, const struct entry *b)
{
    int r = strcmp(a->ns_id, b->ns_id);
    if (r == 0) {
        r = strcmp(a->rest, b->rest);
    }
    if (r == 0) {
        r = strcmp(a->created, b->created);
    }
    if (r == 0) {
        r = a->seq < b->seq ? -1 : a->seq > b->seq;
    }
    return r;
}

static int cmp_key(const struct entry *a, const struct entry *b)
{
    int r = strcmp(a->ns_id, b->ns_id);
    if (r == 0) {
        r = strcmp(a->project, b->project);
    }
    if (r == 0) {
        r = strcmp(a->name, b->name);
    }
    if (r == 0) {
        r = (int)a->retained - (int)b->retained;
    }
    return r;
}

/* First index whose entry is not below `probe` in `arr`'s order. */
static size_t lower_bound(struct entry *const *arr, size_t n, const struct entry *probe,
                          int (*cmp)(const struct entry *, const struct entry *))
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cmp(arr[mid], probe) < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

int kms_owners_create(struct kms_owners **out)
{
    struct kms_owners *o = calloc(1, sizeof(*o));
    if (o == NULL) {
        return -1;
    }
    pthread_rwlock_init(&o->lock, NULL);
    *out = o;
    return 0;
}

void kms_owners_destroy(struct kms_owners **op)
{
    struct kms_owners *o = *op;
    if (o == NULL) {
        return;
    }
    for (size_t i = 0; i < o->n; i++) {
        free(o->by_key[i]);
    }
    free(o->spare);
    free(o->by_rest);
    free(o->by_key);
    pthread_rwlock_destroy(&o->lock);
    free(o);
    *op = NULL;
}

static int reserve_locked(struct kms_owners *o)
{
    if (o->spare == NULL && (o->spare = malloc(sizeof(*o->spare))) == NULL) {
        return -1;
    }
    if (o->n < o->cap) {
        return 0;
    }
    size_t cap = o->cap ? o->cap * 2 : 64;
    struct entry **a = realloc(o->by_rest, cap * sizeof(*a));
    if (a == NULL) {
        return -1;
    }
    o->by_rest = a;
    a = realloc(o->by_key, cap * sizeof(*a));
    if (a == NULL) {
        return -1;
    }
    o->by_key = a;
    o->cap = cap;
    return 0;
}

int kms_owners_reserve(struct kms_owners *o)
{
    pthread_rwlock_wrlock(&o->lock);
    int rc = reserve_locked(o);
    pthread_rwlock_unlock(&o->lock);
    return rc;
}

static void probe_key(struct entry *p, const char *ns_id, const char *project, const char *name,
                      bool retained)
{
    memset(p, 0, sizeof(*p));
    snprintf(p->ns_id, sizeof(p->ns_id), "%s", ns_id);
    snprintf(p->project, sizeof(p->project), "%s", project);
    snprintf(p->name, sizeof(p->name), "%s", name);
    p->retained = retained;
}

int kms_owners_add(struct kms_owners *o, const char *ns_id, const char *project, const char *name,
                   const char *created, bool retained, bool made)
{
    struct entry probe;
    struct entry *e = NULL;
    int rc = -1;
    probe_key(&probe, ns_id, project, name, retained);
    pthread_rwlock_wrlock(&o->lock);
    size_t k = lower_bound(o->by_key, o->n, &probe, cmp_key);
    if (k < o->n && cmp_key(o->by_key[k], &probe) == 0) {
        rc = 0; /* already there: its place among the claimants does not change */
        goto out;
    }
    if (reserve_locked(o) != 0) {
        goto out;
    }
    e = o->spare;
    o->spare = NULL;
    *e = probe;
    e->made = retained && made;
    snprintf(e->rest, sizeof(e->rest), "%s-%s", project, name);
    /* "~" sorts after every RFC 3339 time: an entry added now comes after those loaded */
    snprintf(e->created, sizeof(e->created), "%s", created && created[0] ? created : "~");
    e->seq = o->seq++;
    size_t r = lower_bound(o->by_rest, o->n, e, cmp_rest);
    memmove(o->by_rest + r + 1, o->by_rest + r, (o->n - r) * sizeof(*o->by_rest));
    o->by_rest[r] = e;
    memmove(o->by_key + k + 1, o->by_key + k, (o->n - k) * sizeof(*o->by_key));
    o->by_key[k] = e;
    o->n++;
    rc = 0;
out:
    pthread_rwlock_unlock(&o->lock);
    return rc;
}

/* Remove by_key[k] from both arrays (write lock held). */
static void remove_at_locked(struct kms_owners *o, size_t k)
{
    struct entry *e = o->by_key[k];
    size_t r = lower_bound(o->by_rest, o->n, e, cmp_rest);
    memmove(o->by_rest + r, o->by_rest + r + 1, (o->n - r - 1) * sizeof(*o->by_rest));
    memmove(o->by_key + k, o->by_key + k + 1, (o->n - k - 1) * sizeof(*o->by_key));
    o->n--;
    free(e);
}

void kms_owners_remove(struct kms_owners *o, const char *ns_id, const char *project,
                       const char *name, bool retained)
{
    struct entry probe;
    probe_key(&probe, ns_id, project, name, retained);
    pthread_rwlock_wrlock(&o->lock);
    size_t k = lower_bound(o->by_key, o->n, &probe, cmp_key);
    if (k < o->n && cmp_key(o->by_key[k], &probe) == 0) {
        remove_at_locked(o, k);
    }
    pthread_rwlock_unlock(&o->lock);
}

void kms_owners_purge_ns(struct kms_owners *o, const char *ns_id)
{
    struct entry probe;
    probe_key(&probe, ns_id, "", "", false);
    pthread_rwlock_wrlock(&o->lock);
    size_t k = lower_bound(o->by_key, o->n, &probe, cmp_key);
    while (k < o->n && strcmp(o->by_key[k]->ns_id, ns_id) == 0) {
        remove_at_locked(o, k);
    }
    pthread_rwlock_unlock(&o->lock);
}

int kms_owners_lookup(struct kms_owners *o, const char *ns_id, const char *rest,
                      struct kms_owner *out)
{
    struct entry probe;
    int found = 0;
    memset(&probe, 0, sizeof(probe));
    snprintf(probe.ns_id, sizeof(probe.ns_id), "%s", ns_id);
    if ((size_t)snprintf(probe.rest, sizeof(probe.rest), "%s", rest) >= sizeof(probe.rest)) {
        return 0; /* longer than any KMSKey's Transit name */
    }
    pthread_rwlock_rdlock(&o->lock);
    size_t r = lower_bound(o->by_rest, o->n, &probe, cmp_rest);
    if (r < o->n && strcmp(o->by_rest[r]->ns_id, ns_id) == 0 &&
        strcmp(o->by_rest[r]->rest, rest) == 0) {
        const struct entry *e = o->by_rest[r];
        snprintf(out->project, sizeof(out->project), "%s", e->project);
        snprintf(out->name, sizeof(out->name), "%s", e->name);
        out->retained = e->retained;
        out->made = e->made;
        found = 1;
    }
    pthread_rwlock_unlock(&o->lock);
    return found;
}

/* Whether project has an entry in ns_id (lock held). */
static bool has_project_locked(struct kms_owners *o, const char *ns_id, const char *project)
{
    struct entry probe;
    probe_key(&probe, ns_id, project, "", false);
    size_t k = lower_bound(o->by_key, o->n, &probe, cmp_key);
    return k < o->n && strcmp(o->by_key[k]->ns_id, ns_id) == 0 &&
           strcmp(o->by_key[k]->project, project) == 0;
}

int kms_owners_other_project(struct kms_owners *o, const char *ns_id, const char *rest,
                             const char *except, char *out)
{
    char p[KMS_KMSKEY_LABEL_MAX + 1];
    size_t len = strlen(rest);
    int found = 0;
    pthread_rwlock_rdlock(&o->lock);
    /* every '-' that leaves a non-empty project and name is a possible split */
    for (size_t i = 1; i + 1 < len && i <= KMS_KMSKEY_LABEL_MAX && !found; i++) {
        if (rest[i] != '-') {
            continue;
        }
        memcpy(p, rest, i);
        p[i] = '\0';
        if (strcmp(p, except) != 0 && has_project_locked(o, ns_id, p)) {
            memcpy(out, p, i + 1);
            found = 1;
        }
    }
    pthread_rwlock_unlock(&o->lock);
    return found;
}
