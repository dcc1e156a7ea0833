/*
 * storage.c - the backend-independent half of storage/: the public API, argument checks, the
 * seal key, sealing and the seal check. Where records live is a backend behind the vtable of
 * storage_int.h: lmdb.c (the embedded default) or postgresql.c.
 *
 * Design notes
 *
 * - Every value is sealed here, before any backend sees it: 0x01 || nonce(12) || AES-256-GCM
 *   ciphertext || tag(16), with the associated data "<db name>\0<key>". The value is sealed
 *   into a heap buffer and handed to the backend, and unsealed from the backend's borrowed
 *   bytes (LMDB: the memory map) into the caller's buffer, so plaintext never lands in a
 *   backend. A value that does not unseal is an error (-1), never data: the caller cannot
 *   tell a tampered record from an I/O error, on purpose. Because the associated data names
 *   the database and key only, a sealed record copied to another backend still opens there
 *   (kms_storage_copy).
 *
 * - The seal key lives in its own anonymous page, mlock'ed (best effort: RLIMIT_MEMLOCK may
 *   forbid it, and an unlocked key is better than no server) and excluded from core dumps.
 *   It is wiped before the page is unmapped.
 *
 * - A read transaction refuses writes here, whatever the backend.
 *
 * - The HA leader record (PostgreSQL) is not a sealed value but a row other replicas read to
 *   know where to forward requests, tokens included. Its fields carry an HMAC-SHA256 under a
 *   key derived from the seal key (HKDF, info "kmsd leader record v1"), so a row written by
 *   anyone without the seal key reads as forged and is not followed.
 */
#include "storage/storage_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define KMS_SEAL_VERSION 0x01
#define KMS_SEAL_NONCE_LEN 12
#define KMS_SEAL_OVERHEAD (1 + KMS_SEAL_NONCE_LEN + KMS_AEAD_TAG_LEN)
#define KMS_DB_NAME_MAX 16 /* longest entry of kms_db_names plus room to spare */

const char *const kms_db_names[KMS_DB_COUNT_] = {
    [KMS_DB_META] = "meta",
    [KMS_DB_NAMESPACES] = "namespaces",
    [KMS_DB_MOUNTS] = "mounts",
    [KMS_DB_KEYS] = "keys",
    [KMS_DB_KEY_VERSIONS] = "key_versions",
    [KMS_DB_TOKENS] = "tokens",
    [KMS_DB_ACCESSORS] = "accessors",
    [KMS_DB_POLICIES] = "policies",
    [KMS_DB_AUTH] = "auth",
    [KMS_DB_KMSKEYS] = "kmskeys",
};

/* A known constant sealed under meta/"seal_check": opening it proves the seal key is right. */
static const char kms_seal_check_key[] = "seal_check";
static const uint8_t kms_seal_check_val[] = "kmsd seal check v1";

struct kms_storage {
    const struct kms_backend_ops *ops;
    struct kms_backend *b;
    size_t maxkey;
    uint8_t *seal_key;        /* KMS_AEAD_MAX_KEY_LEN bytes at the start of a locked page */
    size_t seal_page;         /* size of that mapping */
    bool (*guard)(void *arg); /* kms_storage_set_commit_guard */
    void *guard_arg;
    pthread_mutex_t leader_mu;           /* guards published */
    struct kms_storage_leader published; /* this store's last published leader record */
};

struct kms_txn {
    struct kms_backend_txn *bt;
    struct kms_storage *st;
    bool write;
};

/* ---- seal key memory --------------------------------------------------------------------- */

static uint8_t *seal_page_alloc(size_t *len)
{
    long ps = sysconf(_SC_PAGESIZE);
    size_t n = ps > 0 ? (size_t)ps : 4096;
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (p == MAP_FAILED)
        return NULL;
    /* Both are best effort: an unprivileged process may have a zero RLIMIT_MEMLOCK. */
    (void)mlock(p, n);
    (void)madvise(p, n, MADV_DONTDUMP);
    *len = n;
    return p;
}

static void seal_page_free(uint8_t *p, size_t n)
{
    if (p == NULL)
        return;
    kms_memzero(p, n);
    (void)munlock(p, n);
    (void)munmap(p, n);
}

/* ---- sealing ----------------------------------------------------------------------------- */

static bool db_valid(enum kms_db db)
{
    return (unsigned)db < (unsigned)KMS_DB_COUNT_;
}

static bool key_valid(const struct kms_storage *st, const void *key, size_t keylen)
{
    return key != NULL && keylen > 0 && keylen <= st->maxkey;
}

/* aad must hold KMS_DB_NAME_MAX + 1 + KMS_KEY_MAX bytes; the key was checked by key_valid. */
static size_t aad_build(uint8_t *aad, enum kms_db db, const void *key, size_t keylen)
{
    size_t n = strlen(kms_db_names[db]);

    memcpy(aad, kms_db_names[db], n);
    aad[n] = 0;
    memcpy(aad + n + 1, key, keylen);
    return n + 1 + keylen;
}

/* Seal val into *out (malloc'd, caller frees). */
static int value_seal(const struct kms_storage *st, enum kms_db db, const void *key, size_t keylen,
                      const void *val, size_t vallen, uint8_t **out, size_t *outlen)
{
    uint8_t aad[KMS_DB_NAME_MAX + 1 + KMS_KEY_MAX];
    uint8_t *buf = NULL;
    size_t aadlen, n;
    int rc = -1;

    if (vallen > SIZE_MAX - KMS_SEAL_OVERHEAD || (val == NULL && vallen > 0))
        goto out;
    n = KMS_SEAL_OVERHEAD + vallen;
    if ((buf = malloc(n)) == NULL)
        goto out;
    aadlen = aad_build(aad, db, key, keylen);
    buf[0] = KMS_SEAL_VERSION;
    if (kms_rand_bytes(buf + 1, KMS_SEAL_NONCE_LEN) != 0)
        goto out;
    if (kms_aead_seal(KMS_AEAD_AES256_GCM, st->seal_key, buf + 1, aad, aadlen, val, vallen,
                      buf + 1 + KMS_SEAL_NONCE_LEN) != 0)
        goto out;
    *out = buf;
    *outlen = n;
    buf = NULL;
    rc = 0;
out:
    free(buf);
    return rc;
}

/* Unseal in (a sealed value) into out, which holds inlen - KMS_SEAL_OVERHEAD bytes. */
static int value_open(const struct kms_storage *st, enum kms_db db, const void *key, size_t keylen,
                      const uint8_t *in, size_t inlen, uint8_t *out)
{
    uint8_t aad[KMS_DB_NAME_MAX + 1 + KMS_KEY_MAX];
    size_t aadlen;

    if (inlen < KMS_SEAL_OVERHEAD || in[0] != KMS_SEAL_VERSION)
        return -1;
    aadlen = aad_build(aad, db, key, keylen);
    return kms_aead_open(KMS_AEAD_AES256_GCM, st->seal_key, in + 1, aad, aadlen,
                         in + 1 + KMS_SEAL_NONCE_LEN, inlen - 1 - KMS_SEAL_NONCE_LEN, out);
}

/* ---- open and close ---------------------------------------------------------------------- */

static void storage_free(struct kms_storage *st)
{
    if (st == NULL)
        return;
    if (st->b != NULL)
        st->ops->close(st->b);
    seal_page_free(st->seal_key, st->seal_page);
    pthread_mutex_destroy(&st->leader_mu);
    free(st);
}

/* In a write transaction: record the seal check in a new store (unless it must exist), or
 * verify it. */
static int seal_check(struct kms_storage *st, bool existing, struct kms_err *err)
{
    struct kms_txn *txn = NULL;
    uint8_t *val = NULL;
    size_t vallen = 0;
    int rc = -1, grc;

    if (kms_storage_txn_begin(st, true, &txn) != 0) {
        kms_err_set(err, 500, "cannot begin a write transaction in the %s store", st->ops->name);
        goto out;
    }
    grc = kms_storage_get(txn, KMS_DB_META, kms_seal_check_key, sizeof kms_seal_check_key - 1, &val,
                          &vallen);
    if (grc == KMS_STORAGE_NOTFOUND && existing) {
        kms_err_set(err, 500, "no kmsd store here: the %s store holds no seal check record",
                    st->ops->name);
        goto out;
    }
    if (grc == KMS_STORAGE_NOTFOUND) {
        if (kms_storage_put(txn, KMS_DB_META, kms_seal_check_key, sizeof kms_seal_check_key - 1,
                            kms_seal_check_val, sizeof kms_seal_check_val - 1) != 0) {
            kms_err_set(err, 500, "cannot write the seal check record");
            goto out;
        }
    } else if (grc != 0 || vallen != sizeof kms_seal_check_val - 1 ||
               !kms_ct_eq(val, kms_seal_check_val, vallen)) {
        /* A read error here is almost always an unseal failure; one message covers both. */
        kms_err_set(err, 500, "seal key does not match this store");
        goto out;
    }
    if (kms_storage_txn_commit(&txn) != 0) {
        kms_err_set(err, 500, "cannot commit the seal check record");
        goto out;
    }
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    kms_free_wipe((void **)&val, vallen);
    return rc;
}

int kms_storage_open(const char *location, const uint8_t seal_key[32],
                     const struct kms_storage_opts *opts, struct kms_storage **out,
                     struct kms_err *err)
{
    struct kms_storage *st = NULL;
    enum kms_storage_backend backend = opts != NULL ? opts->backend : KMS_STORAGE_LMDB;
    int rc = -1, brc;

    *out = NULL;
    if ((st = calloc(1, sizeof *st)) == NULL) {
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    pthread_mutex_init(&st->leader_mu, NULL);
    if ((st->seal_key = seal_page_alloc(&st->seal_page)) == NULL) {
        kms_err_set(err, 500, "cannot allocate memory for the seal key: %s", strerror(errno));
        goto out;
    }
    memcpy(st->seal_key, seal_key, KMS_AEAD_MAX_KEY_LEN);
    switch (backend) {
    case KMS_STORAGE_LMDB:
        brc = kms_backend_lmdb_open(location, opts, &st->ops, &st->b, &st->maxkey, err);
        break;
    case KMS_STORAGE_POSTGRESQL:
        brc = kms_backend_pg_open(location, opts, &st->ops, &st->b, &st->maxkey, err);
        break;
    default:
        kms_err_set(err, 500, "unknown storage backend");
        brc = -1;
        break;
    }
    if (brc != 0)
        goto out;
    if (seal_check(st, opts != NULL && opts->existing, err) != 0)
        goto out;
    *out = st;
    st = NULL;
    rc = 0;
out:
    storage_free(st);
    return rc;
}

void kms_storage_close(struct kms_storage **st)
{
    if (st == NULL)
        return;
    storage_free(*st);
    *st = NULL;
}

const char *kms_storage_backend_name(const struct kms_storage *st)
{
    return st->ops->name;
}

/* ---- leadership ------------------------------------------------------------------------- */

void kms_storage_set_commit_guard(struct kms_storage *st, bool (*guard)(void *arg), void *arg)
{
    st->guard = guard;
    st->guard_arg = arg;
}

int kms_storage_leader_try(struct kms_storage *st, bool *got)
{
    *got = false;
    return st->ops->leader_try != NULL ? st->ops->leader_try(st->b, got) : -1;
}

int kms_storage_exclusive_check(struct kms_storage *st)
{
    return st->ops->exclusive_check != NULL ? st->ops->exclusive_check(st->b) : 0;
}

void kms_storage_close_idle(struct kms_storage *st)
{
    if (st->ops->close_idle != NULL)
        st->ops->close_idle(st->b);
}

int kms_storage_leader_ping(struct kms_storage *st)
{
    return st->ops->leader_ping != NULL ? st->ops->leader_ping(st->b) : -1;
}

/*
 * The MAC of a leader record, in hex: HMAC-SHA256 under HKDF(seal key, "kmsd leader record
 * v1") over "kmsd-leader-v1" NUL replica NUL api_addr NUL lease NUL released (decimal lease,
 * "0"/"1"). The strings are PostgreSQL text, which holds no NUL, so the encoding is unique.
 */
static int leader_mac(const struct kms_storage *st, const char *replica, const char *api_addr,
                      int64_t lease_ms, bool released, char out[KMS_LEADER_MAC_HEX + 1])
{
    static const char info[] = "kmsd leader record v1";
    uint8_t key[32], tag[32];
    char lease[24];
    char *msg = NULL;
    int n, rc = -1;

    snprintf(lease, sizeof lease, "%lld", (long long)lease_ms);
    size_t len = sizeof "kmsd-leader-v1" + strlen(replica) + 1 + strlen(api_addr) + 1 +
                 strlen(lease) + 1 + 1;
    if ((msg = malloc(len + 1)) == NULL)
        return -1;
    n = snprintf(msg, len + 1, "kmsd-leader-v1%c%s%c%s%c%s%c%c", 0, replica, 0, api_addr, 0, lease,
                 0, released ? '1' : '0');
    if (n < 0 || (size_t)n != len)
        goto out;
    if (kms_hkdf_sha256(st->seal_key, KMS_AEAD_MAX_KEY_LEN, NULL, 0, (const uint8_t *)info,
                        sizeof info - 1, key, sizeof key) != 0)
        goto out;
    if (kms_hmac(KMS_HASH_SHA2_256, key, sizeof key, msg, len, tag) != 0)
        goto out;
    kms_hex_encode(tag, sizeof tag, out);
    rc = 0;
out:
    kms_memzero(key, sizeof key);
    free(msg);
    return rc;
}

int kms_storage_leader_publish(struct kms_storage *st, const char *replica, const char *api_addr,
                               int64_t lease_ms)
{
    char mac[KMS_LEADER_MAC_HEX + 1];
    struct kms_storage_leader *p = &st->published;

    if (st->ops->leader_publish == NULL || replica == NULL || api_addr == NULL || lease_ms < 1 ||
        strlen(replica) >= sizeof p->replica || strlen(api_addr) >= sizeof p->api_addr)
        return -1;
    if (leader_mac(st, replica, api_addr, lease_ms, false, mac) != 0)
        return -1;
    if (st->ops->leader_publish(st->b, replica, api_addr, lease_ms, mac) != 0)
        return -1;
    pthread_mutex_lock(&st->leader_mu);
    p->present = true;
    snprintf(p->replica, sizeof p->replica, "%s", replica);
    snprintf(p->api_addr, sizeof p->api_addr, "%s", api_addr);
    p->lease_ms = lease_ms;
    pthread_mutex_unlock(&st->leader_mu);
    return 0;
}

int kms_storage_leader_release(struct kms_storage *st, const char *replica)
{
    char mac[KMS_LEADER_MAC_HEX + 1];
    struct kms_storage_leader p;

    if (st->ops->leader_release == NULL)
        return -1;
    pthread_mutex_lock(&st->leader_mu);
    p = st->published;
    pthread_mutex_unlock(&st->leader_mu);
    /* only the record this store published can be marked released: its fields are known */
    if (replica != NULL && (!p.present || strcmp(p.replica, replica) != 0))
        replica = NULL;
    if (replica != NULL && leader_mac(st, p.replica, p.api_addr, p.lease_ms, true, mac) != 0)
        return -1;
    return st->ops->leader_release(st->b, replica, replica != NULL ? mac : NULL);
}

int kms_storage_leader_read(struct kms_storage *st, struct kms_storage_leader *out)
{
    char got[KMS_LEADER_MAC_HEX + 1] = "", want[KMS_LEADER_MAC_HEX + 1];

    memset(out, 0, sizeof *out);
    if (st->ops->leader_read == NULL || st->ops->leader_read(st->b, out, got) != 0) {
        memset(out, 0, sizeof *out);
        return -1;
    }
    if (!out->present)
        return 0;
    if (leader_mac(st, out->replica, out->api_addr, out->lease_ms, out->released, want) != 0)
        return -1;
    if (strlen(got) != KMS_LEADER_MAC_HEX || !kms_ct_eq(got, want, KMS_LEADER_MAC_HEX)) {
        memset(out, 0, sizeof *out);
        out->present = true;
        out->forged = true;
    }
    return 0;
}

/* ---- transactions ------------------------------------------------------------------------ */

int kms_storage_txn_begin(struct kms_storage *st, bool write, struct kms_txn **out)
{
    struct kms_txn *t = NULL;

    *out = NULL;
    if ((t = calloc(1, sizeof *t)) == NULL)
        return -1;
    t->st = st;
    t->write = write;
    if (st->ops->txn_begin(st->b, write, &t->bt) != 0) {
        free(t);
        return -1;
    }
    *out = t;
    return 0;
}

int kms_storage_txn_commit(struct kms_txn **txn)
{
    struct kms_txn *t = *txn;
    int rc;

    if (t == NULL)
        return -1;
    *txn = NULL;
    if (t->write && t->st->guard != NULL && !t->st->guard(t->st->guard_arg)) {
        t->st->ops->txn_abort(t->bt);
        free(t);
        return -1;
    }
    rc = t->st->ops->txn_commit(t->bt);
    free(t);
    return rc == 0 ? 0 : -1;
}

void kms_storage_txn_abort(struct kms_txn **txn)
{
    if (txn == NULL || *txn == NULL)
        return;
    (*txn)->st->ops->txn_abort((*txn)->bt);
    free(*txn);
    *txn = NULL;
}

/* ---- records ----------------------------------------------------------------------------- */

int kms_storage_get(struct kms_txn *txn, enum kms_db db, const void *key, size_t keylen,
                    uint8_t **val, size_t *vallen)
{
    const uint8_t *sealed = NULL;
    size_t sealedlen = 0;
    uint8_t *buf = NULL;
    size_t n = 0;
    int rc = -1, grc;

    *val = NULL;
    *vallen = 0;
    if (!db_valid(db) || (key == NULL && keylen > 0))
        goto out;
    /* A key no backend can store names no record: not found rather than an error. */
    if (!key_valid(txn->st, key, keylen)) {
        rc = KMS_STORAGE_NOTFOUND;
        goto out;
    }
    if ((grc = txn->st->ops->get(txn->bt, db, key, keylen, &sealed, &sealedlen)) != 0) {
        rc = grc == KMS_STORAGE_NOTFOUND ? KMS_STORAGE_NOTFOUND : -1;
        goto out;
    }
    if (sealedlen < KMS_SEAL_OVERHEAD)
        goto out;
    n = sealedlen - KMS_SEAL_OVERHEAD;
    /* malloc(0) may return NULL; an empty value still gets a non-NULL buffer. */
    if ((buf = malloc(n > 0 ? n : 1)) == NULL)
        goto out;
    if (value_open(txn->st, db, key, keylen, sealed, sealedlen, buf) != 0)
        goto out;
    *val = buf;
    *vallen = n;
    buf = NULL;
    rc = 0;
out:
    kms_free_wipe((void **)&buf, n);
    return rc;
}

int kms_storage_put(struct kms_txn *txn, enum kms_db db, const void *key, size_t keylen,
                    const void *val, size_t vallen)
{
    uint8_t *sealed = NULL;
    size_t sealedlen = 0;
    int rc = -1;

    if (!txn->write || !db_valid(db) || !key_valid(txn->st, key, keylen))
        goto out;
    if (value_seal(txn->st, db, key, keylen, val, vallen, &sealed, &sealedlen) != 0)
        goto out;
    if (txn->st->ops->put(txn->bt, db, key, keylen, sealed, sealedlen) != 0)
        goto out;
    rc = 0;
out:
    free(sealed);
    return rc;
}

int kms_storage_put_if_absent(struct kms_txn *txn, enum kms_db db, const void *key, size_t keylen,
                              const void *val, size_t vallen, uint8_t **cur, size_t *curlen)
{
    uint8_t *sealed = NULL;
    size_t sealedlen = 0;
    int rc = -1, prc;

    *cur = NULL;
    *curlen = 0;
    if (!txn->write || !db_valid(db) || !key_valid(txn->st, key, keylen))
        goto out;
    if (value_seal(txn->st, db, key, keylen, val, vallen, &sealed, &sealedlen) != 0)
        goto out;
    prc = txn->st->ops->put_new(txn->bt, db, key, keylen, sealed, sealedlen);
    if (prc == 0) {
        rc = 0;
    } else if (prc == 1) {
        rc = kms_storage_get(txn, db, key, keylen, cur, curlen) == 0 ? 1 : -1;
    }
out:
    free(sealed);
    return rc;
}

int kms_storage_del(struct kms_txn *txn, enum kms_db db, const void *key, size_t keylen)
{
    int rc;

    if (!txn->write || !db_valid(db) || (key == NULL && keylen > 0))
        return -1;
    if (!key_valid(txn->st, key, keylen))
        return KMS_STORAGE_NOTFOUND;
    rc = txn->st->ops->del(txn->bt, db, key, keylen);
    return rc == 0 || rc == KMS_STORAGE_NOTFOUND ? rc : -1;
}

int kms_storage_del_prefix(struct kms_txn *txn, enum kms_db db, const void *prefix,
                           size_t prefixlen, size_t *count)
{
    size_t n = 0;

    if (count != NULL)
        *count = 0;
    if (!txn->write || !db_valid(db) || (prefix == NULL && prefixlen > 0))
        return -1;
    if (txn->st->ops->del_prefix(txn->bt, db, prefix, prefixlen, &n) != 0)
        return -1;
    if (count != NULL)
        *count = n;
    return 0;
}

/* LMDB's default key order: bytewise, a proper prefix sorting first. */
static int key_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n > 0 ? memcmp(a, b, n) : 0;

    if (c != 0)
        return c;
    return alen < blen ? -1 : alen > blen;
}

size_t kms_prefix_successor(const uint8_t *prefix, size_t prefixlen, uint8_t *out)
{
    size_t n = prefixlen;

    while (n > 0 && prefix[n - 1] == 0xff)
        n--;
    if (n == 0)
        return 0;
    memcpy(out, prefix, n);
    out[n - 1]++;
    return n;
}

struct scan_ctx {
    struct kms_storage *st;
    enum kms_db db;
    bool with_values;
    kms_storage_scan_cb cb;
    void *arg;
    uint8_t *buf; /* unsealed value, wiped after each callback */
    size_t cap;
};

static int scan_visit(const uint8_t *key, size_t keylen, const uint8_t *sealed, size_t sealedlen,
                      void *arg)
{
    struct scan_ctx *c = arg;
    size_t n = 0;
    int crc;

    if (c->with_values) {
        if (sealedlen < KMS_SEAL_OVERHEAD || !key_valid(c->st, key, keylen))
            return -1;
        n = sealedlen - KMS_SEAL_OVERHEAD;
        if (n + 1 > c->cap) {
            kms_free_wipe((void **)&c->buf, c->cap);
            c->cap = 0;
            if ((c->buf = malloc(n + 1)) == NULL)
                return -1;
            c->cap = n + 1;
        }
        if (value_open(c->st, c->db, key, keylen, sealed, sealedlen, c->buf) != 0)
            return -1;
    }
    crc = c->cb(key, keylen, c->with_values ? c->buf : NULL, n, c->arg);
    if (c->with_values)
        kms_memzero(c->buf, n);
    return crc < 0 ? -1 : crc > 0 ? 1 : 0;
}

int kms_storage_scan(struct kms_txn *txn, enum kms_db db, const void *prefix, size_t prefixlen,
                     const void *start, size_t startlen, bool with_values, kms_storage_scan_cb cb,
                     void *arg)
{
    struct scan_ctx c = {.st = txn->st, .db = db, .with_values = with_values, .cb = cb, .arg = arg};
    const void *from = prefix;
    size_t fromlen = prefixlen;
    int rc;

    if (!db_valid(db) || cb == NULL || (prefix == NULL && prefixlen > 0) ||
        (start == NULL && startlen > 0))
        return -1;
    if (start != NULL && key_cmp(start, startlen, prefix, prefixlen) > 0) {
        from = start;
        fromlen = startlen;
    }
    rc = txn->st->ops->scan(txn->bt, db, prefix, prefixlen, from, fromlen, with_values, scan_visit,
                            &c);
    kms_free_wipe((void **)&c.buf, c.cap);
    return rc == 0 ? 0 : -1;
}

int kms_storage_count(struct kms_txn *txn, enum kms_db db, size_t *count)
{
    *count = 0;
    if (!db_valid(db))
        return -1;
    return txn->st->ops->count(txn->bt, db, count) == 0 ? 0 : -1;
}

/* ---- copy between stores ----------------------------------------------------------------- */

struct copy_ctx {
    struct kms_storage *from;
    struct kms_txn *to;
    enum kms_db db;
    uint8_t *buf; /* the unsealed value, to check it opens; wiped */
    size_t cap;
    size_t n;
    bool other;        /* emptiness check: a record other than the seal check */
    bool write_failed; /* the target refused a record (an LMDB map or a disk full) */
};

static int copy_visit(const uint8_t *key, size_t keylen, const uint8_t *sealed, size_t sealedlen,
                      void *arg)
{
    struct copy_ctx *c = arg;
    size_t n;

    if (sealedlen < KMS_SEAL_OVERHEAD || !key_valid(c->from, key, keylen) ||
        !key_valid(c->to->st, key, keylen))
        return -1;
    n = sealedlen - KMS_SEAL_OVERHEAD;
    if (n + 1 > c->cap) {
        kms_free_wipe((void **)&c->buf, c->cap);
        c->cap = 0;
        if ((c->buf = malloc(n + 1)) == NULL)
            return -1;
        c->cap = n + 1;
    }
    if (value_open(c->from, c->db, key, keylen, sealed, sealedlen, c->buf) != 0)
        return -1;
    kms_memzero(c->buf, n);
    if (c->to->st->ops->put(c->to->bt, c->db, key, keylen, sealed, sealedlen) != 0) {
        c->write_failed = true;
        return -1;
    }
    c->n++;
    return 0;
}

static int empty_visit(const uint8_t *key, size_t keylen, const uint8_t *sealed, size_t sealedlen,
                       void *arg)
{
    struct copy_ctx *c = arg;

    (void)sealed;
    (void)sealedlen;
    if (c->db == KMS_DB_META && keylen == sizeof kms_seal_check_key - 1 &&
        memcmp(key, kms_seal_check_key, keylen) == 0)
        return 0;
    c->other = true;
    return 1;
}

int kms_storage_copy(struct kms_storage *from, struct kms_storage *to, size_t *count,
                     struct kms_err *err)
{
    struct copy_ctx c = {.from = from};
    struct kms_txn *rt = NULL, *wt = NULL;
    int rc = -1;

    if (count != NULL)
        *count = 0;
    if (!kms_ct_eq(from->seal_key, to->seal_key, KMS_AEAD_MAX_KEY_LEN)) {
        kms_err_set(err, 400, "the two stores are open under different seal keys");
        return -1;
    }
    if (kms_storage_txn_begin(from, false, &rt) != 0 || kms_storage_txn_begin(to, true, &wt) != 0) {
        kms_err_set(err, 500, "cannot begin the copy's transactions");
        goto out;
    }
    c.to = wt;
    for (int db = 0; db < KMS_DB_COUNT_ && !c.other; db++) {
        c.db = (enum kms_db)db;
        if (to->ops->scan(wt->bt, c.db, "", 0, "", 0, false, empty_visit, &c) != 0) {
            kms_err_set(err, 500, "cannot read the target store");
            goto out;
        }
    }
    if (c.other) {
        kms_err_set(err, 400, "the target store is not empty");
        goto out;
    }
    for (int db = 0; db < KMS_DB_COUNT_; db++) {
        c.db = (enum kms_db)db;
        if (from->ops->scan(rt->bt, c.db, "", 0, "", 0, true, copy_visit, &c) == 0)
            continue;
        if (c.write_failed)
            kms_err_set(err, 500,
                        "cannot write database %s into the target store after %zu records: is "
                        "it full (an LMDB target's map size, or its disk)?",
                        kms_db_names[db], c.n);
        else
            kms_err_set(err, 500,
                        "cannot copy database %s: a record does not open under the seal key, "
                        "or a store failed",
                        kms_db_names[db]);
        goto out;
    }
    if (kms_storage_txn_commit(&wt) != 0) {
        kms_err_set(err, 500,
                    "cannot commit the copy to the target store: is it full (an LMDB "
                    "target's map size, or its disk)?");
        goto out;
    }
    if (count != NULL)
        *count = c.n;
    rc = 0;
out:
    kms_free_wipe((void **)&c.buf, c.cap);
    kms_storage_txn_abort(&wt);
    kms_storage_txn_abort(&rt);
    return rc;
}
