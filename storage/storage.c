/*
 * storage.c - the LMDB environment, its named databases, transactions and the record barrier.
 *
 * Design notes
 *
 * - One environment per data directory with one named database per enum kms_db. The database
 *   handles are opened (created) once, in the write transaction that kms_storage_open commits,
 *   so every later transaction can use them without a lookup.
 *
 * - The environment is opened with MDB_NOTLS. Without it LMDB ties each read transaction's
 *   reader slot to the thread that began it, and a thread can hold only one read transaction;
 *   that would break a design where a request is started on one thread and finished on
 *   another, or where one thread nests a read inside another. With MDB_NOTLS the slot belongs
 *   to the MDB_txn, so a read transaction may move between threads (used by one at a time).
 *   Write transactions are still owned by the thread that began them, as LMDB requires.
 *
 * - Durability: without `nosync` LMDB fsyncs the data file before mdb_txn_commit returns, so
 *   a committed write survives a crash. `nosync` (dev mode, tests) trades that for speed;
 *   the store stays consistent but may lose the last commits.
 *
 * - Every value is sealed: 0x01 || nonce(12) || AES-256-GCM ciphertext || tag(16), with the
 *   associated data "<db name>\0<key>". The value is sealed into a heap buffer and then
 *   handed to LMDB, and unsealed straight from the memory map into the caller's buffer, so
 *   plaintext never lands in the map. A value that does not unseal is an error (-1), never
 *   data: the caller cannot tell a tampered record from an I/O error, on purpose.
 *
 * - The seal key lives in its own anonymous page, mlock'ed (best effort: RLIMIT_MEMLOCK may
 *   forbid it, and an unlocked key is better than no server) and excluded from core dumps.
 *   It is wiped before the page is unmapped.
 *
 * - MDB_MAP_FULL and every other LMDB error surface as -1. LMDB leaves the transaction in an
 *   error state; the caller aborts it and the store is exactly as the last commit left it.
 */
#include "storage/storage.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define KMS_STORAGE_DEFAULT_MAP ((size_t)1 << 30)
#define KMS_SEAL_VERSION 0x01
#define KMS_SEAL_NONCE_LEN 12
#define KMS_SEAL_OVERHEAD (1 + KMS_SEAL_NONCE_LEN + KMS_AEAD_TAG_LEN)
/* LMDB's compiled-in default maximum key size; the runtime value is read after open. */
#define KMS_KEY_MAX 511
#define KMS_DB_NAME_MAX 16 /* longest entry of kms_db_names plus room to spare */

static const char *const kms_db_names[KMS_DB_COUNT_] = {
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
    MDB_env *env;
    MDB_dbi dbi[KMS_DB_COUNT_];
    size_t maxkey;
    uint8_t *seal_key; /* KMS_AEAD_MAX_KEY_LEN bytes at the start of a locked page */
    size_t seal_page;  /* size of that mapping */
};

struct kms_txn {
    MDB_txn *txn;
    struct kms_storage *st;
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

/* ---- environment ------------------------------------------------------------------------- */

static void storage_free(struct kms_storage *st)
{
    if (st == NULL)
        return;
    if (st->env != NULL)
        mdb_env_close(st->env);
    seal_page_free(st->seal_key, st->seal_page);
    free(st);
}

/* In the open transaction: record the seal check in a new store, or verify it. */
static int seal_check(struct kms_storage *st, MDB_txn *mtxn, struct kms_err *err)
{
    struct kms_txn txn = {.txn = mtxn, .st = st};
    uint8_t *val = NULL;
    size_t vallen = 0;
    int rc = -1, grc;

    grc = kms_storage_get(&txn, KMS_DB_META, kms_seal_check_key, sizeof kms_seal_check_key - 1,
                          &val, &vallen);
    if (grc == KMS_STORAGE_NOTFOUND) {
        if (kms_storage_put(&txn, KMS_DB_META, kms_seal_check_key, sizeof kms_seal_check_key - 1,
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
    rc = 0;
out:
    kms_free_wipe((void **)&val, vallen);
    return rc;
}

int kms_storage_open(const char *dir, const uint8_t seal_key[32],
                     const struct kms_storage_opts *opts, struct kms_storage **out,
                     struct kms_err *err)
{
    struct kms_storage *st = NULL;
    MDB_txn *txn = NULL;
    unsigned int flags = MDB_NOTLS;
    size_t map_size = KMS_STORAGE_DEFAULT_MAP;
    int rc = -1, mrc, fd;

    *out = NULL;
    if (opts != NULL && opts->map_size != 0)
        map_size = opts->map_size;
    if (opts != NULL && opts->nosync)
        flags |= MDB_NOSYNC;

    if (opts != NULL && opts->create && mkdir(dir, 0700) != 0 && errno != EEXIST) {
        kms_err_set(err, 500, "cannot create storage directory %s: %s", dir, strerror(errno));
        goto out;
    }
    /* Checked here so that a missing or unreadable directory gets a message naming it. */
    if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        kms_err_set(err, 500, "cannot open storage directory %s: %s", dir, strerror(errno));
        goto out;
    }
    close(fd);

    if ((st = calloc(1, sizeof *st)) == NULL) {
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    if ((st->seal_key = seal_page_alloc(&st->seal_page)) == NULL) {
        kms_err_set(err, 500, "cannot allocate memory for the seal key: %s", strerror(errno));
        goto out;
    }
    memcpy(st->seal_key, seal_key, KMS_AEAD_MAX_KEY_LEN);

    if ((mrc = mdb_env_create(&st->env)) != 0) {
        st->env = NULL;
        kms_err_set(err, 500, "cannot create storage environment: %s", mdb_strerror(mrc));
        goto out;
    }
    if ((mrc = mdb_env_set_maxdbs(st->env, KMS_DB_COUNT_)) != 0 ||
        (mrc = mdb_env_set_mapsize(st->env, map_size)) != 0 ||
        (mrc = mdb_env_open(st->env, dir, flags, 0600)) != 0) {
        kms_err_set(err, 500, "cannot open storage in %s: %s", dir, mdb_strerror(mrc));
        goto out;
    }
    mrc = mdb_env_get_maxkeysize(st->env);
    st->maxkey = mrc > 0 && mrc < KMS_KEY_MAX ? (size_t)mrc : KMS_KEY_MAX;

    if ((mrc = mdb_txn_begin(st->env, NULL, 0, &txn)) != 0) {
        kms_err_set(err, 500, "cannot open storage in %s: %s", dir, mdb_strerror(mrc));
        goto out;
    }
    for (size_t i = 0; i < KMS_DB_COUNT_; i++) {
        if ((mrc = mdb_dbi_open(txn, kms_db_names[i], MDB_CREATE, &st->dbi[i])) != 0) {
            kms_err_set(err, 500, "cannot open database %s in %s: %s", kms_db_names[i], dir,
                        mdb_strerror(mrc));
            goto out;
        }
    }
    if (seal_check(st, txn, err) != 0)
        goto out;
    mrc = mdb_txn_commit(txn);
    txn = NULL;
    if (mrc != 0) {
        kms_err_set(err, 500, "cannot write storage in %s: %s", dir, mdb_strerror(mrc));
        goto out;
    }
    *out = st;
    st = NULL;
    rc = 0;
out:
    if (txn != NULL)
        mdb_txn_abort(txn);
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

/* ---- transactions ------------------------------------------------------------------------ */

int kms_storage_txn_begin(struct kms_storage *st, bool write, struct kms_txn **out)
{
    struct kms_txn *t = NULL;
    int rc = -1;

    *out = NULL;
    if ((t = calloc(1, sizeof *t)) == NULL)
        goto out;
    t->st = st;
    if (mdb_txn_begin(st->env, NULL, write ? 0 : MDB_RDONLY, &t->txn) != 0)
        goto out;
    *out = t;
    t = NULL;
    rc = 0;
out:
    free(t);
    return rc;
}

int kms_storage_txn_commit(struct kms_txn **txn)
{
    struct kms_txn *t = *txn;
    int rc = -1;

    if (t == NULL)
        return -1;
    *txn = NULL;
    /* mdb_txn_commit frees the transaction whether or not it succeeds. */
    if (mdb_txn_commit(t->txn) == 0)
        rc = 0;
    free(t);
    return rc;
}

void kms_storage_txn_abort(struct kms_txn **txn)
{
    if (txn == NULL || *txn == NULL)
        return;
    mdb_txn_abort((*txn)->txn);
    free(*txn);
    *txn = NULL;
}

/* ---- records ----------------------------------------------------------------------------- */

int kms_storage_get(struct kms_txn *txn, enum kms_db db, const void *key, size_t keylen,
                    uint8_t **val, size_t *vallen)
{
    MDB_val k, v;
    uint8_t *buf = NULL;
    size_t n = 0;
    int rc = -1, mrc;

    *val = NULL;
    *vallen = 0;
    if (!db_valid(db) || (key == NULL && keylen > 0))
        goto out;
    /* A key LMDB cannot store names no record: not found rather than an error. */
    if (!key_valid(txn->st, key, keylen)) {
        rc = KMS_STORAGE_NOTFOUND;
        goto out;
    }
    k.mv_data = (void *)key;
    k.mv_size = keylen;
    if ((mrc = mdb_get(txn->txn, txn->st->dbi[db], &k, &v)) != 0) {
        rc = mrc == MDB_NOTFOUND ? KMS_STORAGE_NOTFOUND : -1;
        goto out;
    }
    if (v.mv_size < KMS_SEAL_OVERHEAD)
        goto out;
    n = v.mv_size - KMS_SEAL_OVERHEAD;
    /* malloc(0) may return NULL; an empty value still gets a non-NULL buffer. */
    if ((buf = malloc(n > 0 ? n : 1)) == NULL)
        goto out;
    if (value_open(txn->st, db, key, keylen, v.mv_data, v.mv_size, buf) != 0)
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
    MDB_val k, v;
    uint8_t *sealed = NULL;
    size_t sealedlen = 0;
    int rc = -1;

    if (!db_valid(db) || !key_valid(txn->st, key, keylen))
        goto out;
    if (value_seal(txn->st, db, key, keylen, val, vallen, &sealed, &sealedlen) != 0)
        goto out;
    k.mv_data = (void *)key;
    k.mv_size = keylen;
    v.mv_data = sealed;
    v.mv_size = sealedlen;
    if (mdb_put(txn->txn, txn->st->dbi[db], &k, &v, 0) != 0)
        goto out;
    rc = 0;
out:
    free(sealed);
    return rc;
}

int kms_storage_del(struct kms_txn *txn, enum kms_db db, const void *key, size_t keylen)
{
    MDB_val k;
    int mrc;

    if (!db_valid(db) || (key == NULL && keylen > 0))
        return -1;
    if (!key_valid(txn->st, key, keylen))
        return KMS_STORAGE_NOTFOUND;
    k.mv_data = (void *)key;
    k.mv_size = keylen;
    mrc = mdb_del(txn->txn, txn->st->dbi[db], &k, NULL);
    if (mrc == MDB_NOTFOUND)
        return KMS_STORAGE_NOTFOUND;
    return mrc == 0 ? 0 : -1;
}

static bool has_prefix(const MDB_val *k, const void *prefix, size_t prefixlen)
{
    return k->mv_size >= prefixlen &&
           (prefixlen == 0 || memcmp(k->mv_data, prefix, prefixlen) == 0);
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

/*
 * Put the cursor on the first key >= from. A key longer than LMDB allows cannot be stored, so
 * for a longer `from` the first key >= its truncation is the answer unless it is the
 * truncation itself (which sorts before `from`).
 */
static int cursor_seek(MDB_cursor *cur, const struct kms_storage *st, const void *from,
                       size_t fromlen, MDB_val *k, MDB_val *v)
{
    int mrc;

    if (fromlen == 0)
        return mdb_cursor_get(cur, k, v, MDB_FIRST);
    k->mv_data = (void *)from;
    k->mv_size = fromlen > st->maxkey ? st->maxkey : fromlen;
    mrc = mdb_cursor_get(cur, k, v, MDB_SET_RANGE);
    if (mrc == 0 && fromlen > st->maxkey && k->mv_size == st->maxkey &&
        memcmp(k->mv_data, from, st->maxkey) == 0)
        mrc = mdb_cursor_get(cur, k, v, MDB_NEXT);
    return mrc;
}

int kms_storage_del_prefix(struct kms_txn *txn, enum kms_db db, const void *prefix,
                           size_t prefixlen, size_t *count)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    size_t n = 0;
    int rc = -1, mrc;

    if (count != NULL)
        *count = 0;
    if (!db_valid(db) || (prefix == NULL && prefixlen > 0))
        goto out;
    if (mdb_cursor_open(txn->txn, txn->st->dbi[db], &cur) != 0)
        goto out;
    mrc = cursor_seek(cur, txn->st, prefix, prefixlen, &k, &v);
    while (mrc == 0 && has_prefix(&k, prefix, prefixlen)) {
        if (mdb_cursor_del(cur, 0) != 0)
            goto out;
        n++;
        /* After a delete the cursor already sits on the next record; MDB_NEXT returns it. */
        mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (mrc != 0 && mrc != MDB_NOTFOUND)
        goto out;
    if (count != NULL)
        *count = n;
    rc = 0;
out:
    if (cur != NULL)
        mdb_cursor_close(cur);
    return rc;
}

int kms_storage_scan(struct kms_txn *txn, enum kms_db db, const void *prefix, size_t prefixlen,
                     const void *start, size_t startlen, bool with_values, kms_storage_scan_cb cb,
                     void *arg)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    uint8_t *buf = NULL;
    size_t cap = 0, n = 0;
    const void *from = prefix;
    size_t fromlen = prefixlen;
    int rc = -1, mrc, crc;

    if (!db_valid(db) || cb == NULL || (prefix == NULL && prefixlen > 0) ||
        (start == NULL && startlen > 0))
        goto out;
    if (start != NULL && key_cmp(start, startlen, prefix, prefixlen) > 0) {
        from = start;
        fromlen = startlen;
    }
    if (mdb_cursor_open(txn->txn, txn->st->dbi[db], &cur) != 0)
        goto out;
    mrc = cursor_seek(cur, txn->st, from, fromlen, &k, &v);
    while (mrc == 0 && has_prefix(&k, prefix, prefixlen)) {
        n = 0;
        if (with_values) {
            if (v.mv_size < KMS_SEAL_OVERHEAD)
                goto out;
            n = v.mv_size - KMS_SEAL_OVERHEAD;
            if (n + 1 > cap) {
                kms_free_wipe((void **)&buf, cap);
                cap = 0;
                if ((buf = malloc(n + 1)) == NULL)
                    goto out;
                cap = n + 1;
            }
            if (value_open(txn->st, db, k.mv_data, k.mv_size, v.mv_data, v.mv_size, buf) != 0)
                goto out;
        }
        crc = cb(k.mv_data, k.mv_size, with_values ? buf : NULL, n, arg);
        if (with_values)
            kms_memzero(buf, n);
        if (crc < 0)
            goto out;
        if (crc > 0)
            break;
        mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (mrc != 0 && mrc != MDB_NOTFOUND)
        goto out;
    rc = 0;
out:
    kms_free_wipe((void **)&buf, cap);
    if (cur != NULL)
        mdb_cursor_close(cur);
    return rc;
}

int kms_storage_count(struct kms_txn *txn, enum kms_db db, size_t *count)
{
    MDB_stat ms;

    *count = 0;
    if (!db_valid(db) || mdb_stat(txn->txn, txn->st->dbi[db], &ms) != 0)
        return -1;
    *count = ms.ms_entries;
    return 0;
}
