/*
 * storage_int.h - the backend vtable behind storage.h, private to storage/.
 *
 * storage.c owns what does not depend on where records live: the seal key, sealing and
 * unsealing, argument checks and the seal check. A backend stores opaque sealed values under
 * (database, key) and keeps them in bytewise key order (a proper prefix sorting first); it
 * never sees a plaintext value. Two backends: lmdb.c (the embedded default) and
 * postgresql.c (libpq; several kmsd replicas on one database).
 *
 * Borrowed values: the sealed value handed out by get, and the key and value handed to a scan
 * callback, are valid until the next call on the same transaction (get) or until the callback
 * returns (scan).
 */
#ifndef KMS_STORAGE_INT_H
#define KMS_STORAGE_INT_H

#include "storage/storage.h"

/* The longest key kmsd stores, on every backend (LMDB's compiled-in limit), so that a store
 * can be migrated between backends record for record. */
#define KMS_KEY_MAX 511

extern const char *const kms_db_names[KMS_DB_COUNT_];

struct kms_backend;
struct kms_backend_txn;

/* Visit one record: key and sealed value (NULL/0 when values were not asked for). Returns
 * 0 to continue, 1 to stop, -1 to fail. */
typedef int (*kms_backend_scan_cb)(const uint8_t *key, size_t keylen, const uint8_t *sealed,
                                   size_t sealedlen, void *arg);

#define KMS_LEADER_MAC_HEX 64

struct kms_backend_ops {
    const char *name; /* "lmdb", "postgresql" */
    void (*close)(struct kms_backend *b);
    int (*txn_begin)(struct kms_backend *b, bool write, struct kms_backend_txn **out);
    int (*txn_commit)(struct kms_backend_txn *t); /* frees t whatever the result */
    void (*txn_abort)(struct kms_backend_txn *t); /* frees t */
    /* 0, KMS_STORAGE_NOTFOUND or -1; *sealed borrowed until the next call on t. */
    int (*get)(struct kms_backend_txn *t, enum kms_db db, const void *key, size_t keylen,
               const uint8_t **sealed, size_t *sealedlen);
    int (*put)(struct kms_backend_txn *t, enum kms_db db, const void *key, size_t keylen,
               const uint8_t *sealed, size_t sealedlen);
    /* Insert only when absent: 0 inserted, 1 a record was there (left as it is), -1 error. */
    int (*put_new)(struct kms_backend_txn *t, enum kms_db db, const void *key, size_t keylen,
                   const uint8_t *sealed, size_t sealedlen);
    /* 0, KMS_STORAGE_NOTFOUND or -1 */
    int (*del)(struct kms_backend_txn *t, enum kms_db db, const void *key, size_t keylen);
    int (*del_prefix)(struct kms_backend_txn *t, enum kms_db db, const void *prefix,
                      size_t prefixlen, size_t *count);
    /* Records with the prefix, in key order, from the first key >= from (from >= prefix). */
    int (*scan)(struct kms_backend_txn *t, enum kms_db db, const void *prefix, size_t prefixlen,
                const void *from, size_t fromlen, bool with_values, kms_backend_scan_cb cb,
                void *arg);
    int (*count)(struct kms_backend_txn *t, enum kms_db db, size_t *count);
    /* Leadership (storage.h); NULL on backends without it. `mac` is the record's MAC in hex
     * (KMS_LEADER_MAC_HEX characters), computed and checked by storage.c: publish stores it
     * with the record, release stores the one of the released record, read returns it. */
    int (*leader_try)(struct kms_backend *b, bool *got);
    int (*leader_ping)(struct kms_backend *b);
    int (*leader_publish)(struct kms_backend *b, const char *replica, const char *api_addr,
                          int64_t lease_ms, const char *mac);
    int (*leader_release)(struct kms_backend *b, const char *replica, const char *mac);
    int (*leader_read)(struct kms_backend *b, struct kms_storage_leader *out,
                       char mac[KMS_LEADER_MAC_HEX + 1]);
    /* kms_storage_exclusive_check (storage.h); NULL: nothing to lose (0). */
    int (*exclusive_check)(struct kms_backend *b);
    /* kms_storage_close_idle (storage.h); NULL: nothing kept. */
    void (*close_idle)(struct kms_backend *b);
};

/* Open a backend; *maxkey receives the longest key it stores (at most KMS_KEY_MAX). */
int kms_backend_lmdb_open(const char *dir, const struct kms_storage_opts *opts,
                          const struct kms_backend_ops **ops, struct kms_backend **out,
                          size_t *maxkey, struct kms_err *err);
/* Read the whole LMDB store in dir (if it has a data.mdb) in a child process before it is
 * opened: 0, or -1 with `the store … is damaged: …` when a page is not what LMDB would need
 * (lmdb_check.c). */
int kms_lmdb_check(const char *dir, size_t map_size, struct kms_err *err);
int kms_backend_pg_open(const char *conninfo, const struct kms_storage_opts *opts,
                        const struct kms_backend_ops **ops, struct kms_backend **out,
                        size_t *maxkey, struct kms_err *err);

/* The smallest key greater than every key starting with prefix: prefix with its last byte
 * below 0xff incremented and the rest cut. Returns its length, 0 when there is none (the
 * prefix is empty or all 0xff bytes). out holds prefixlen bytes. */
size_t kms_prefix_successor(const uint8_t *prefix, size_t prefixlen, uint8_t *out);

#endif
