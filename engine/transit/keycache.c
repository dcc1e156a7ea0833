/*
 * keycache.c - a bounded in-memory cache of unsealed Transit key policies and versions, so
 * an encrypt or decrypt needs no storage read and no unsealing once a key is warm.
 *
 * Concurrency: the table is split into buckets, each with its own mutex, so workers contend
 * only when they touch keys hashing to the same bucket; values are copied out under the lock
 * (a policy and a version are ~100 bytes each), so no reference outlives it.
 *
 * Size: at most max_entries keys (0 = no bound), counted exactly across the buckets. A new
 * key in a full cache evicts the oldest entry of its own bucket, else the oldest of the
 * first other bucket whose lock is free (trylock, so two inserters never wait on each other),
 * else it is not cached. kms_keycache_set_max changes the bound in place (cache-config), so a
 * cache is never freed while requests may hold it.
 *
 * Staleness: every write to a key invalidates its entry and advances a global sequence
 * number. A reader takes the sequence before it reads storage and may only insert what it
 * read if the sequence has not moved since, so a read that raced with a write can never
 * re-insert the old value. Entries (which hold key material) come from the locked secure heap
 * when one is available and are wiped before they are freed.
 */
#include "engine/transit/transit_int.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define BUCKETS 1024
#define VERSIONS_PER_ENTRY 4

struct entry {
    struct entry *next;
    char *key;
    size_t keylen;
    bool has_policy;
    struct kms_key_policy policy;
    size_t nversions;
    size_t next_slot;
    struct kms_key_version versions[VERSIONS_PER_ENTRY];
};

struct bucket {
    pthread_mutex_t lock;
    struct entry *head;
    size_t n;
};

struct kms_keycache {
    _Atomic size_t max_total; /* 0 = no bound */
    _Atomic size_t count;
    _Atomic size_t cursor; /* where the next eviction from another bucket starts looking */
    _Atomic uint64_t seq;
    struct bucket b[BUCKETS];
};

static _Atomic uint64_t seq_base;

static size_t hash(const char *key, size_t n)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)key[i];
        h *= 1099511628211ULL;
    }
    return (size_t)(h % BUCKETS);
}

static void entry_free(struct entry *e)
{
    kms_memzero(e->key, e->keylen);
    free(e->key);
    kms_secmem_free(e, sizeof(*e));
}

int kms_keycache_create(size_t max_entries, struct kms_keycache **out)
{
    struct kms_keycache *kc = calloc(1, sizeof(*kc));
    if (kc == NULL) {
        return -1;
    }
    atomic_store(&kc->max_total, max_entries);
    /* sequences never coincide between caches, so a sequence taken from one cache can
     * never pass for another's */
    atomic_store(&kc->seq, atomic_fetch_add(&seq_base, 1) << 40);
    for (size_t i = 0; i < BUCKETS; i++) {
        pthread_mutex_init(&kc->b[i].lock, NULL);
    }
    *out = kc;
    return 0;
}

void kms_keycache_clear(struct kms_keycache *kc)
{
    atomic_fetch_add(&kc->seq, 1);
    for (size_t i = 0; i < BUCKETS; i++) {
        struct bucket *b = &kc->b[i];
        pthread_mutex_lock(&b->lock);
        while (b->head != NULL) {
            struct entry *e = b->head;
            b->head = e->next;
            entry_free(e);
            atomic_fetch_sub(&kc->count, 1);
        }
        b->n = 0;
        pthread_mutex_unlock(&b->lock);
    }
}

void kms_keycache_destroy(struct kms_keycache **kcp)
{
    struct kms_keycache *kc = *kcp;
    if (kc == NULL) {
        return;
    }
    kms_keycache_clear(kc);
    for (size_t i = 0; i < BUCKETS; i++) {
        pthread_mutex_destroy(&kc->b[i].lock);
    }
    free(kc);
    *kcp = NULL;
}

uint64_t kms_keycache_seq(struct kms_keycache *kc)
{
    return atomic_load(&kc->seq);
}

/* Find (lock held). */
static struct entry *find(struct bucket *b, const char *key, size_t n)
{
    for (struct entry *e = b->head; e != NULL; e = e->next) {
        if (e->keylen == n && memcmp(e->key, key, n) == 0) {
            return e;
        }
    }
    return NULL;
}

/* Drop the bucket's oldest entry (lock held); false when it has none. */
static bool evict_tail(struct kms_keycache *kc, struct bucket *b)
{
    if (b->head == NULL) {
        return false;
    }
    struct entry **pp = &b->head;
    while ((*pp)->next != NULL) {
        pp = &(*pp)->next;
    }
    entry_free(*pp);
    *pp = NULL;
    b->n--;
    atomic_fetch_sub(&kc->count, 1);
    return true;
}

/* Room for one more key (b's lock held): evict from b, else from another bucket whose lock
 * is free. False when the cache is full and nothing could be evicted. */
static bool make_room(struct kms_keycache *kc, struct bucket *b)
{
    size_t max = atomic_load(&kc->max_total);
    if (max == 0 || atomic_load(&kc->count) < max || evict_tail(kc, b)) {
        return true;
    }
    size_t start = atomic_fetch_add(&kc->cursor, 1);
    for (size_t i = 0; i < BUCKETS; i++) {
        struct bucket *o = &kc->b[(start + i) % BUCKETS];
        if (o == b || pthread_mutex_trylock(&o->lock) != 0) {
            continue;
        }
        bool done = evict_tail(kc, o);
        pthread_mutex_unlock(&o->lock);
        if (done) {
            return true;
        }
    }
    return false;
}

/* Find or create (lock held); NULL when the cache is full and has nothing to evict. */
static struct entry *find_or_add(struct kms_keycache *kc, struct bucket *b, const char *key,
                                 size_t n)
{
    struct entry *e = find(b, key, n);
    if (e != NULL) {
        return e;
    }
    if (!make_room(kc, b)) {
        return NULL;
    }
    e = kms_secmem_alloc(sizeof(*e)); /* holds unwrapped key material */
    if (e == NULL || (e->key = malloc(n)) == NULL) {
        kms_secmem_free(e, sizeof(*e));
        return NULL;
    }
    memcpy(e->key, key, n);
    e->keylen = n;
    e->next = b->head;
    b->head = e;
    b->n++;
    atomic_fetch_add(&kc->count, 1);
    return e;
}

void kms_keycache_set_max(struct kms_keycache *kc, size_t max_entries)
{
    atomic_store(&kc->max_total, max_entries);
    /* shrink to the new bound, oldest entries of each bucket first */
    for (size_t i = 0; i < BUCKETS && max_entries != 0; i++) {
        struct bucket *b = &kc->b[i];
        pthread_mutex_lock(&b->lock);
        while (atomic_load(&kc->count) > max_entries && evict_tail(kc, b)) {
        }
        pthread_mutex_unlock(&b->lock);
    }
}

size_t kms_keycache_max(struct kms_keycache *kc)
{
    return atomic_load(&kc->max_total);
}

size_t kms_keycache_count(struct kms_keycache *kc)
{
    return atomic_load(&kc->count);
}

bool kms_keycache_get_policy(struct kms_keycache *kc, const char *key, struct kms_key_policy *out)
{
    size_t n = strlen(key);
    struct bucket *b = &kc->b[hash(key, n)];
    bool hit = false;
    pthread_mutex_lock(&b->lock);
    struct entry *e = find(b, key, n);
    if (e != NULL && e->has_policy) {
        *out = e->policy;
        hit = true;
    }
    pthread_mutex_unlock(&b->lock);
    kms_metrics_cache(hit);
    return hit;
}

void kms_keycache_put_policy(struct kms_keycache *kc, const char *key,
                             const struct kms_key_policy *p, uint64_t seq)
{
    size_t n = strlen(key);
    struct bucket *b = &kc->b[hash(key, n)];
    pthread_mutex_lock(&b->lock);
    if (atomic_load(&kc->seq) == seq) {
        struct entry *e = find_or_add(kc, b, key, n);
        if (e != NULL) {
            e->policy = *p;
            e->has_policy = true;
        }
    }
    pthread_mutex_unlock(&b->lock);
}

bool kms_keycache_get_version(struct kms_keycache *kc, const char *key, uint32_t version,
                              struct kms_key_version *out)
{
    size_t n = strlen(key);
    struct bucket *b = &kc->b[hash(key, n)];
    bool hit = false;
    pthread_mutex_lock(&b->lock);
    struct entry *e = find(b, key, n);
    for (size_t i = 0; e != NULL && i < e->nversions; i++) {
        if (e->versions[i].version == version) {
            *out = e->versions[i];
            hit = true;
            break;
        }
    }
    pthread_mutex_unlock(&b->lock);
    return hit;
}

void kms_keycache_put_version(struct kms_keycache *kc, const char *key,
                              const struct kms_key_version *v, uint64_t seq)
{
    size_t n = strlen(key);
    struct bucket *b = &kc->b[hash(key, n)];
    pthread_mutex_lock(&b->lock);
    if (atomic_load(&kc->seq) == seq) {
        struct entry *e = find_or_add(kc, b, key, n);
        if (e != NULL) {
            size_t slot;
            if (e->nversions < VERSIONS_PER_ENTRY) {
                slot = e->nversions++;
            } else {
                slot = e->next_slot;
                e->next_slot = (e->next_slot + 1) % VERSIONS_PER_ENTRY;
            }
            kms_memzero(&e->versions[slot], sizeof(e->versions[slot]));
            e->versions[slot] = *v;
        }
    }
    pthread_mutex_unlock(&b->lock);
}

void kms_keycache_invalidate(struct kms_keycache *kc, const char *key)
{
    size_t n = strlen(key);
    struct bucket *b = &kc->b[hash(key, n)];
    pthread_mutex_lock(&b->lock);
    atomic_fetch_add(&kc->seq, 1);
    struct entry **pp = &b->head;
    while (*pp != NULL) {
        if ((*pp)->keylen == n && memcmp((*pp)->key, key, n) == 0) {
            struct entry *dead = *pp;
            *pp = dead->next;
            entry_free(dead);
            b->n--;
            atomic_fetch_sub(&kc->count, 1);
            break;
        }
        pp = &(*pp)->next;
    }
    pthread_mutex_unlock(&b->lock);
}
