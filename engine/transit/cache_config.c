/*
 * cache_config.c - GET|POST cache-config (OpenBao's path_cache_config.go): the size of a
 * Transit mount's key cache, stored per mount and applied to the cache that mount's
 * requests use.
 *
 * Design notes:
 * - A mount without a size (or with size 0) uses the engine's shared key cache, bounded by
 *   the server's key_cache_size; a mount with a size >= 10 gets a cache of its own bounded
 *   by it. OpenBao's 0 means "unlimited"; kmsd never keeps an unbounded number of unsealed
 *   keys, so 0 means the shared, bounded cache (docs/api.md).
 * - The size is a sealed META record per mount ("transit_cache/<ns>/<uuid>/", 8 bytes big
 *   endian), removed by the mount purge, read once per mount on first use after a start.
 * - Mounts are found in a small hash table (uuid -> entry) behind a rwlock. Entries and
 *   their caches are never freed while the engine lives (a request may still hold a cache):
 *   a purged mount's entry is emptied and reloaded on next use, a cache that falls out of use
 *   is cleared (its key material wiped) and kept for the mount's next size.
 * - Whenever a mount changes cache, the cache it moves to is cleared first, so no entry
 *   cached before the move (when writes to the mount invalidated the other cache) is read.
 */
#include "engine/transit/transit_int.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_META "transit_cache/"
#define MOUNT_HEADS 256

struct mount_cache {
    struct mount_cache *next;
    char uuid[37];
    bool loaded;              /* size read from storage (or set by a write) */
    size_t size;              /* 0 = the shared cache */
    struct kms_keycache *own; /* created on the first size > 0; NULL before */
};

struct kms_transit_caches {
    pthread_rwlock_t lock;
    struct mount_cache *heads[MOUNT_HEADS];
};

static size_t uuid_hash(const char *uuid)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const char *p = uuid; *p != '\0'; p++) {
        h ^= (unsigned char)*p;
        h *= 1099511628211ULL;
    }
    return (size_t)(h % MOUNT_HEADS);
}

int kms_transit_caches_create(struct kms_transit_caches **out)
{
    struct kms_transit_caches *cs = calloc(1, sizeof(*cs));
    if (cs == NULL || pthread_rwlock_init(&cs->lock, NULL) != 0) {
        free(cs);
        return -1;
    }
    *out = cs;
    return 0;
}

void kms_transit_caches_destroy(struct kms_transit_caches **csp)
{
    struct kms_transit_caches *cs = *csp;
    if (cs == NULL) {
        return;
    }
    for (size_t i = 0; i < MOUNT_HEADS; i++) {
        while (cs->heads[i] != NULL) {
            struct mount_cache *m = cs->heads[i];
            cs->heads[i] = m->next;
            kms_keycache_destroy(&m->own);
            free(m);
        }
    }
    pthread_rwlock_destroy(&cs->lock);
    free(cs);
    *csp = NULL;
}

/* Lock held. */
static struct mount_cache *find(struct kms_transit_caches *cs, const char *uuid)
{
    for (struct mount_cache *m = cs->heads[uuid_hash(uuid)]; m != NULL; m = m->next) {
        if (strcmp(m->uuid, uuid) == 0) {
            return m;
        }
    }
    return NULL;
}

static void meta_key(const struct kms_mount *m, char *out, size_t n)
{
    char prefix[96];
    kms_mount_prefix(m, prefix, sizeof(prefix));
    snprintf(out, n, "%s%s", CACHE_META, prefix);
}

/* The stored size of mount m (0 when none); -1 on a storage error. */
static int stored_size(struct kms_txn *txn, const struct kms_mount *m, size_t *out)
{
    char key[160];
    uint8_t *val = NULL;
    size_t vallen = 0;
    meta_key(m, key, sizeof(key));
    int g = kms_storage_get(txn, KMS_DB_META, key, strlen(key), &val, &vallen);
    *out = 0;
    if (g == 0 && vallen == 8) {
        uint64_t v = 0;
        for (size_t i = 0; i < 8; i++) {
            v = v << 8 | val[i];
        }
        *out = (size_t)v;
    }
    free(val);
    return g < 0 ? -1 : 0;
}

/*
 * Make entry e (write lock held) use `size`: the shared cache for 0, else its own cache,
 * created or resized. When a loaded mount changes cache, the cache it moves to is cleared
 * (and an own cache it leaves is wiped). -1 when a cache cannot be made (e unchanged).
 */
static int apply(struct kms_transit *t, struct mount_cache *e, size_t size)
{
    bool was_shared = e->loaded && e->size == 0;
    bool was_own = e->loaded && e->size != 0;
    if (size != 0) {
        if (e->own == NULL && kms_keycache_create(size, &e->own) != 0) {
            return -1;
        }
        if (was_shared) {
            kms_keycache_clear(e->own);
        }
        kms_keycache_set_max(e->own, size);
    } else if (was_own) {
        kms_keycache_clear(t->kc);
        kms_keycache_clear(e->own);
    }
    e->size = size;
    e->loaded = true;
    return 0;
}

struct kms_keycache *kms_transit_cache_of(struct kms_transit *t, const struct kms_mount *m)
{
    struct kms_transit_caches *cs = t->caches;
    struct kms_keycache *kc = NULL;
    pthread_rwlock_rdlock(&cs->lock);
    struct mount_cache *e = find(cs, m->uuid);
    if (e != NULL && e->loaded) {
        kc = e->size != 0 ? e->own : t->kc;
    }
    pthread_rwlock_unlock(&cs->lock);
    if (kc != NULL) {
        return kc;
    }
    /* first use since start (or since a purge): read the mount's size */
    size_t size = 0;
    struct kms_txn *txn = NULL;
    if (kms_storage_txn_begin(kms_api_storage(t->api), false, &txn) != 0 ||
        stored_size(txn, m, &size) != 0) {
        size = 0; /* the shared cache is always correct, if not the size asked for */
    }
    kms_storage_txn_abort(&txn);
    pthread_rwlock_wrlock(&cs->lock);
    e = find(cs, m->uuid);
    if (e == NULL && (e = calloc(1, sizeof(*e))) != NULL) {
        snprintf(e->uuid, sizeof(e->uuid), "%s", m->uuid);
        size_t h = uuid_hash(e->uuid);
        e->next = cs->heads[h];
        cs->heads[h] = e;
    }
    if (e != NULL && !e->loaded && apply(t, e, size) != 0) {
        (void)apply(t, e, 0);
    }
    kc = e != NULL && e->loaded && e->size != 0 ? e->own : t->kc;
    pthread_rwlock_unlock(&cs->lock);
    return kc;
}

void kms_transit_cache_forget(struct kms_transit *t, const struct kms_mount *m)
{
    struct kms_transit_caches *cs = t->caches;
    pthread_rwlock_wrlock(&cs->lock);
    struct mount_cache *e = find(cs, m->uuid);
    if (e != NULL) {
        if (e->own != NULL) {
            kms_keycache_clear(e->own);
        }
        e->loaded = false;
        e->size = 0;
    }
    pthread_rwlock_unlock(&cs->lock);
}

int kms_transit_cache_purge(struct kms_txn *txn, const struct kms_mount *m)
{
    char key[160];
    meta_key(m, key, sizeof(key));
    return kms_storage_del(txn, KMS_DB_META, key, strlen(key)) < 0 ? -1 : 0;
}

/* ---- the endpoint ---------------------------------------------------------------------- */

int kms_transit_cache_config_read(struct kms_ctx *c)
{
    struct kms_txn *txn = NULL;
    size_t size = 0;
    if (kms_storage_txn_begin(kms_api_storage(c->api), false, &txn) != 0 ||
        stored_size(txn, &c->mount, &size) != 0) {
        kms_storage_txn_abort(&txn);
        return KMS_FAILW(c, 500, "cannot read cache config");
    }
    kms_storage_txn_abort(&txn);
    c->data = json_pack("{s:I}", "size", (json_int_t)size);
    return c->data != NULL ? 0 : KMS_FAILW(c, 500, "cannot encode cache config");
}

int kms_transit_cache_config_write(struct kms_ctx *c)
{
    struct kms_transit *t = c->estate;
    int64_t size = 0;
    struct kms_txn *txn = NULL;
    char key[160];
    uint8_t val[8];

    (void)kms_param_int(c, "size", &size);
    if (size != 0 && size < KMS_TRANSIT_CACHE_MIN) {
        return KMS_FAIL(c, 400, "size must be 0 or a value greater or equal to %d",
                        KMS_TRANSIT_CACHE_MIN);
    }
    if (size > KMS_TRANSIT_CACHE_MAX) {
        return KMS_FAIL(c, 400, "size must be at most %d in kmsd", KMS_TRANSIT_CACHE_MAX);
    }
    for (size_t i = 0; i < 8; i++) {
        val[i] = (uint8_t)((uint64_t)size >> (56 - 8 * i));
    }
    meta_key(&c->mount, key, sizeof(key));
    /* the write lock is held across the commit, so two writes apply in the order stored */
    pthread_rwlock_wrlock(&t->caches->lock);
    struct mount_cache *e = find(t->caches, c->mount.uuid);
    if (e == NULL && (e = calloc(1, sizeof(*e))) != NULL) {
        snprintf(e->uuid, sizeof(e->uuid), "%s", c->mount.uuid);
        size_t h = uuid_hash(e->uuid);
        e->next = t->caches->heads[h];
        t->caches->heads[h] = e;
    }
    int rc = -1;
    if (e == NULL ||
        (size != 0 && e->own == NULL && kms_keycache_create((size_t)size, &e->own) != 0)) {
        KMS_FAILW(c, 500, "cannot create key cache");
    } else if (kms_storage_txn_begin(kms_api_storage(c->api), true, &txn) != 0 ||
               kms_storage_put(txn, KMS_DB_META, key, strlen(key), val, sizeof(val)) != 0 ||
               kms_storage_txn_commit(&txn) != 0) {
        KMS_FAILW(c, 500, "cannot store cache config");
    } else {
        rc = apply(t, e, (size_t)size); /* cannot fail: the cache exists when needed */
    }
    pthread_rwlock_unlock(&t->caches->lock);
    kms_storage_txn_abort(&txn);
    if (rc != 0) {
        return -1;
    }
    c->data = json_pack("{s:I}", "size", (json_int_t)size);
    return c->data != NULL ? 0 : KMS_FAILW(c, 500, "cannot encode cache config");
}

const struct kms_field kms_transit_cache_config_fields[] = {
    {"size", KMS_F_INT},
    {NULL, 0},
};
