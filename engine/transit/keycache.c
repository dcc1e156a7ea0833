/*
 * keycache.c - a bounded in-memory cache of unsealed Transit key policies and versions, so
 * an encrypt or decrypt needs no storage read and no unsealing once a key is warm.
 *
 * Layout: 256 stripes, each with its own mutex and its own hash table (chained buckets, a
 * power of two of them), picked by the top bits of the key's 64-bit hash; the bucket by the
 * low bits, and the full hash is kept in the entry and compared before the key bytes (keys
 * share a long "<ns>/<mount uuid>/" prefix). The tables are sized from max_entries
 * (key_cache_size, or a mount's cache-config size) when the cache is made, and a stripe doubles
 * its table whenever it holds more entries than buckets (a bound raised in place by
 * cache-config, or no bound), so chains stay about one entry long at any size.
 *
 * Concurrency: workers contend only when they touch keys of the same stripe; values are
 * copied out under the lock (a policy and a version are ~100 bytes each), so no reference
 * outlives it.
 *
 * Size: at most max_entries keys (0 = no bound), counted exactly across the stripes. A new
 * key in a full cache evicts the oldest entry of its own stripe (each stripe keeps its entries
 * in insertion order, so this is O(1)), else the oldest of the first other stripe whose lock
 * is free (trylock, so two inserters never wait on each other), else it is not cached.
 * kms_keycache_set_max changes the bound in place (cache-config), so a cache is never freed
 * while requests may hold it. An entry evicted from the inserting key's own stripe is wiped and
 * reused for the new key (no free and allocation per miss once the cache is full; a free of
 * secure-heap memory takes OpenSSL's global secure-heap lock).
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
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define STRIPES 256
#define STRIPE_SHIFT 56 /* 64 - log2(STRIPES) */
#define MIN_BUCKETS 8
#define MAX_INITIAL_BUCKETS 8192 /* per stripe at creation; more by doubling */
#define VERSIONS_PER_ENTRY 4
#define INLINE_MATERIAL 64 /* AEAD, ed25519 and default hmac keys; bigger material apart */

/*
 * One cached version, sized for the common keys: 128 bytes instead of the 568 of a
 * struct kms_key_version (whose key[] is sized for RSA-4096). Material longer than
 * INLINE_MATERIAL lives in its own secure-heap block at `big`.
 */
struct cver {
    uint32_t version;
    uint32_t key_len;
    int64_t created_sec;
    int32_t created_nsec;
    int32_t convergent_version;
    uint8_t hmac_key[32];
    uint8_t key[INLINE_MATERIAL];
    uint8_t *big;
};

/*
 * An entry is one block: the links and hash first, the version numbers next to them (a
 * lookup reads one or two cache lines of a cold entry before it copies anything out), then
 * the policy, the version slots and the key bytes themselves.
 */
struct entry {
    struct entry *next;          /* in its bucket */
    struct entry *older, *newer; /* the stripe's insertion order */
    uint64_t h;
    uint32_t keylen;
    uint32_t keycap;                   /* bytes at key[] (the block was sized for it) */
    uint32_t vnum[VERSIONS_PER_ENTRY]; /* version of each slot in use */
    uint8_t nversions;
    uint8_t next_slot;
    bool has_policy;
    struct kms_key_policy policy;
    struct cver versions[VERSIONS_PER_ENTRY];
    char key[];
};

struct stripe {
    pthread_mutex_t lock;
    struct entry **buckets;
    size_t nbuckets; /* a power of two */
    size_t n;
    struct entry *oldest, *newest;
};

struct kms_keycache {
    _Atomic size_t max_total; /* 0 = no bound */
    _Atomic size_t count;
    _Atomic size_t cursor; /* where the next eviction from another stripe starts looking */
    _Atomic uint64_t seq;
    struct stripe s[STRIPES];
};

static _Atomic uint64_t seq_base;

static uint64_t hash64(const char *key, size_t n)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a, then a final mix for the top bits */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)key[i];
        h *= 1099511628211ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}

static struct stripe *stripe_of(struct kms_keycache *kc, uint64_t h)
{
    return &kc->s[h >> STRIPE_SHIFT];
}

/* Wipe the version slots in use and free their separate material (lock held). */
static void wipe_versions(struct entry *e)
{
    for (size_t i = 0; i < e->nversions; i++) {
        struct cver *v = &e->versions[i];
        if (v->big != NULL) {
            kms_secmem_free(v->big, v->key_len);
        }
    }
    /* slots at and past nversions were never written since the entry was zeroed */
    kms_memzero(e->versions, e->nversions * sizeof(e->versions[0]));
    kms_memzero(e->vnum, sizeof(e->vnum));
    e->nversions = 0;
    e->next_slot = 0;
}

static void entry_free(struct entry *e)
{
    size_t size = sizeof(*e) + e->keycap;
    wipe_versions(e);
    kms_secmem_free(e, size);
}

/* A version into slot v (its old material already wiped); false when big material has no room. */
static bool cver_set(struct cver *v, const struct kms_key_version *kv)
{
    size_t n = kv->key_len <= sizeof(kv->key) ? kv->key_len : sizeof(kv->key);
    uint8_t *dst = v->key;
    if (n > sizeof(v->key)) {
        if ((v->big = kms_secmem_alloc(n)) == NULL) {
            return false;
        }
        dst = v->big;
    }
    v->version = kv->version;
    v->key_len = (uint32_t)n;
    v->created_sec = kv->created_sec;
    v->created_nsec = kv->created_nsec;
    v->convergent_version = kv->convergent_version;
    memcpy(v->hmac_key, kv->hmac_key, sizeof(v->hmac_key));
    memcpy(dst, kv->key, n);
    return true;
}

/* Slot v out into a full kms_key_version (the material's unused tail zeroed). */
static void cver_get(const struct cver *v, struct kms_key_version *out)
{
    out->version = v->version;
    out->key_len = v->key_len;
    out->created_sec = v->created_sec;
    out->created_nsec = v->created_nsec;
    out->convergent_version = v->convergent_version;
    memcpy(out->hmac_key, v->hmac_key, sizeof(out->hmac_key));
    memcpy(out->key, v->big != NULL ? v->big : v->key, v->key_len);
    kms_memzero(out->key + v->key_len, sizeof(out->key) - v->key_len);
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
    size_t per = MIN_BUCKETS;
    while (per < max_entries / STRIPES && per < MAX_INITIAL_BUCKETS) {
        per *= 2;
    }
    for (size_t i = 0; i < STRIPES; i++) {
        pthread_mutex_init(&kc->s[i].lock, NULL);
        kc->s[i].buckets = calloc(per, sizeof(*kc->s[i].buckets));
        kc->s[i].nbuckets = per;
        if (kc->s[i].buckets == NULL) {
            for (size_t j = 0; j <= i; j++) {
                free(kc->s[j].buckets);
                pthread_mutex_destroy(&kc->s[j].lock);
            }
            free(kc);
            return -1;
        }
    }
    *out = kc;
    return 0;
}

/* Unlink e from its bucket and the insertion order (lock held); the caller frees or reuses it. */
static void unlink_entry(struct kms_keycache *kc, struct stripe *s, struct entry *e)
{
    struct entry **pp = &s->buckets[e->h & (s->nbuckets - 1)];
    while (*pp != e) {
        pp = &(*pp)->next;
    }
    *pp = e->next;
    if (e->older != NULL) {
        e->older->newer = e->newer;
    } else {
        s->oldest = e->newer;
    }
    if (e->newer != NULL) {
        e->newer->older = e->older;
    } else {
        s->newest = e->older;
    }
    s->n--;
    atomic_fetch_sub(&kc->count, 1);
}

/* Unlink e and free it (lock held). */
static void remove_entry(struct kms_keycache *kc, struct stripe *s, struct entry *e)
{
    unlink_entry(kc, s, e);
    entry_free(e);
}

void kms_keycache_clear(struct kms_keycache *kc)
{
    atomic_fetch_add(&kc->seq, 1);
    for (size_t i = 0; i < STRIPES; i++) {
        struct stripe *s = &kc->s[i];
        pthread_mutex_lock(&s->lock);
        while (s->oldest != NULL) {
            remove_entry(kc, s, s->oldest);
        }
        pthread_mutex_unlock(&s->lock);
    }
}

void kms_keycache_destroy(struct kms_keycache **kcp)
{
    struct kms_keycache *kc = *kcp;
    if (kc == NULL) {
        return;
    }
    kms_keycache_clear(kc);
    for (size_t i = 0; i < STRIPES; i++) {
        pthread_mutex_destroy(&kc->s[i].lock);
        free(kc->s[i].buckets);
    }
    free(kc);
    *kcp = NULL;
}

uint64_t kms_keycache_seq(struct kms_keycache *kc)
{
    return atomic_load(&kc->seq);
}

/* Find (lock held). */
static struct entry *find(struct stripe *s, uint64_t h, const char *key, size_t n)
{
    for (struct entry *e = s->buckets[h & (s->nbuckets - 1)]; e != NULL; e = e->next) {
        if (e->h == h && e->keylen == n && memcmp(e->key, key, n) == 0) {
            return e;
        }
    }
    return NULL;
}

/* Drop the stripe's oldest entry (lock held); false when it has none. */
static bool evict_oldest(struct kms_keycache *kc, struct stripe *s)
{
    if (s->oldest == NULL) {
        return false;
    }
    remove_entry(kc, s, s->oldest);
    return true;
}

/* Room for one more key (s's lock held): evict from s, else from another stripe whose lock
 * is free. False when the cache is full and nothing could be evicted. An entry evicted from s
 * comes back in *reuse, unlinked and wiped but for its key buffer, for the new key to take. */
static bool make_room(struct kms_keycache *kc, struct stripe *s, struct entry **reuse)
{
    size_t max = atomic_load(&kc->max_total);
    *reuse = NULL;
    if (max == 0 || atomic_load(&kc->count) < max) {
        return true;
    }
    if (s->oldest != NULL) {
        struct entry *e = s->oldest;
        unlink_entry(kc, s, e);
        uint32_t cap = e->keycap;
        wipe_versions(e);
        kms_memzero(e->key, e->keylen);
        kms_memzero(e, offsetof(struct entry, versions));
        e->keycap = cap;
        *reuse = e;
        return true;
    }
    size_t start = atomic_fetch_add(&kc->cursor, 1);
    for (size_t i = 0; i < STRIPES; i++) {
        struct stripe *o = &kc->s[(start + i) % STRIPES];
        if (o == s || pthread_mutex_trylock(&o->lock) != 0) {
            continue;
        }
        bool done = evict_oldest(kc, o);
        pthread_mutex_unlock(&o->lock);
        if (done) {
            return true;
        }
    }
    return false;
}

/* Double the stripe's table when it holds more entries than buckets (lock held). A failed
 * allocation keeps the old table: longer chains, still correct. */
static void maybe_grow(struct stripe *s)
{
    if (s->n <= s->nbuckets) {
        return;
    }
    size_t nb = s->nbuckets * 2;
    struct entry **t = calloc(nb, sizeof(*t));
    if (t == NULL) {
        return;
    }
    for (struct entry *e = s->oldest; e != NULL; e = e->newer) {
        struct entry **b = &t[e->h & (nb - 1)];
        e->next = *b;
        *b = e;
    }
    free(s->buckets);
    s->buckets = t;
    s->nbuckets = nb;
}

/* Find or create (lock held); NULL when the cache is full and has nothing to evict. */
static struct entry *find_or_add(struct kms_keycache *kc, struct stripe *s, uint64_t h,
                                 const char *key, size_t n)
{
    struct entry *e = find(s, h, key, n);
    if (e != NULL) {
        return e;
    }
    if (!make_room(kc, s, &e)) {
        return NULL;
    }
    if (e != NULL && e->keycap < n) { /* the reused block is too small for this key */
        entry_free(e);
        e = NULL;
    }
    if (e == NULL) {
        /* holds key material; key bytes sized up to a multiple of 64, so most reuse fits */
        size_t cap = (n + 64) & ~(size_t)63;
        if ((e = kms_secmem_alloc(sizeof(*e) + cap)) == NULL) {
            return NULL;
        }
        e->keycap = (uint32_t)cap;
    }
    memcpy(e->key, key, n);
    e->keylen = (uint32_t)n;
    e->h = h;
    struct entry **b = &s->buckets[h & (s->nbuckets - 1)];
    e->next = *b;
    *b = e;
    e->newer = NULL;
    e->older = s->newest;
    if (s->newest != NULL) {
        s->newest->newer = e;
    } else {
        s->oldest = e;
    }
    s->newest = e;
    s->n++;
    atomic_fetch_add(&kc->count, 1);
    maybe_grow(s);
    return e;
}

void kms_keycache_set_max(struct kms_keycache *kc, size_t max_entries)
{
    atomic_store(&kc->max_total, max_entries);
    /* shrink to the new bound, oldest entries of each stripe first */
    for (size_t i = 0; i < STRIPES && max_entries != 0; i++) {
        struct stripe *s = &kc->s[i];
        pthread_mutex_lock(&s->lock);
        while (atomic_load(&kc->count) > max_entries && evict_oldest(kc, s)) {
        }
        pthread_mutex_unlock(&s->lock);
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

bool kms_keycache_get(struct kms_keycache *kc, const char *key, struct kms_key_policy *out,
                      struct kms_key_version *latest, bool *has_latest)
{
    size_t n = strlen(key);
    uint64_t h = hash64(key, n);
    struct stripe *b = stripe_of(kc, h);
    bool hit = false;
    if (has_latest != NULL) {
        *has_latest = false;
    }
    pthread_mutex_lock(&b->lock);
    struct entry *e = find(b, h, key, n);
    if (e != NULL && e->has_policy) {
        *out = e->policy;
        hit = true;
        for (size_t i = 0; latest != NULL && i < e->nversions; i++) {
            if (e->vnum[i] == e->policy.latest_version) {
                cver_get(&e->versions[i], latest);
                *has_latest = true;
                break;
            }
        }
    }
    pthread_mutex_unlock(&b->lock);
    kms_metrics_cache(hit);
    return hit;
}

bool kms_keycache_get_policy(struct kms_keycache *kc, const char *key, struct kms_key_policy *out)
{
    return kms_keycache_get(kc, key, out, NULL, NULL);
}

void kms_keycache_put_policy(struct kms_keycache *kc, const char *key,
                             const struct kms_key_policy *p, uint64_t seq)
{
    size_t n = strlen(key);
    uint64_t h = hash64(key, n);
    struct stripe *b = stripe_of(kc, h);
    pthread_mutex_lock(&b->lock);
    if (atomic_load(&kc->seq) == seq) {
        struct entry *e = find_or_add(kc, b, h, key, n);
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
    uint64_t h = hash64(key, n);
    struct stripe *b = stripe_of(kc, h);
    bool hit = false;
    pthread_mutex_lock(&b->lock);
    struct entry *e = find(b, h, key, n);
    for (size_t i = 0; e != NULL && i < e->nversions; i++) {
        if (e->vnum[i] == version) {
            cver_get(&e->versions[i], out);
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
    uint64_t h = hash64(key, n);
    struct stripe *b = stripe_of(kc, h);
    pthread_mutex_lock(&b->lock);
    if (atomic_load(&kc->seq) == seq) {
        struct entry *e = find_or_add(kc, b, h, key, n);
        if (e != NULL) {
            size_t slot;
            if (e->nversions < VERSIONS_PER_ENTRY) {
                slot = e->nversions++;
            } else {
                slot = e->next_slot;
                e->next_slot = (uint8_t)((e->next_slot + 1) % VERSIONS_PER_ENTRY);
            }
            struct cver *cv = &e->versions[slot];
            if (cv->big != NULL) {
                kms_secmem_free(cv->big, cv->key_len);
            }
            kms_memzero(cv, sizeof(*cv));
            e->vnum[slot] = 0;
            if (cver_set(cv, v)) {
                e->vnum[slot] = v->version;
            }
        }
    }
    pthread_mutex_unlock(&b->lock);
}

void kms_keycache_invalidate(struct kms_keycache *kc, const char *key)
{
    size_t n = strlen(key);
    uint64_t h = hash64(key, n);
    struct stripe *b = stripe_of(kc, h);
    pthread_mutex_lock(&b->lock);
    atomic_fetch_add(&kc->seq, 1);
    struct entry *e = find(b, h, key, n);
    if (e != NULL) {
        remove_entry(kc, b, e);
    }
    pthread_mutex_unlock(&b->lock);
}
