/*
 * storage.h - kmsd's persistent store: named databases of records (one per record family),
 * every value sealed with AES-256-GCM under the seal key, kept by one of two backends: an
 * embedded LMDB environment (the default) or a PostgreSQL database reached through libpq
 * (several kmsd replicas on one database, docs/ha.md). Callers cannot tell them apart.
 *
 * Sealed value layout: 0x01 || nonce(12) || ciphertext || tag(16); the associated data is the
 * database name, a NUL byte and the record key, so a value cannot be moved to another key or
 * database undetected. The seal key is only held in memory (locked, wiped on close); no
 * backend ever sees a plaintext value.
 *
 * This folder is the only place in kmsd that includes <lmdb.h> or <libpq-fe.h>. A write
 * transaction commits durably (LMDB: fsync; PostgreSQL: synchronous_commit=on) before
 * kms_storage_txn_commit returns, unless the store was opened with `nosync` (dev mode).
 * Threads: one write transaction at a time (LMDB serialises writers; on PostgreSQL a
 * transaction-scoped advisory lock serialises them across every process on the database),
 * any number of read transactions, each a consistent snapshot taken when it begins; a
 * transaction belongs to the thread that began it.
 */
#ifndef KMS_STORAGE_H
#define KMS_STORAGE_H

#include "crypto/crypto.h"

enum kms_db {
    KMS_DB_META,         /* "init", "seal_check", "token_key", ... */
    KMS_DB_NAMESPACES,   /* ns path -> namespace record */
    KMS_DB_MOUNTS,       /* <ns id>/<mount path> -> mount record */
    KMS_DB_KEYS,         /* <ns id>/<mount uuid>/<name> -> key policy */
    KMS_DB_KEY_VERSIONS, /* <ns id>/<mount uuid>/<name>/<BE u32 version> -> key version */
    KMS_DB_TOKENS,       /* salted token hash -> token entry */
    KMS_DB_ACCESSORS,    /* salted accessor hash -> token hash */
    KMS_DB_POLICIES,     /* <ns id>/<name> -> ACL policy */
    KMS_DB_AUTH,         /* auth method config and roles */
    KMS_DB_KMSKEYS,      /* KMSKey objects */
    KMS_DB_COUNT_,
};

/* Returned by get/del when the record does not exist. */
#define KMS_STORAGE_NOTFOUND 1

struct kms_storage;
struct kms_txn;

enum kms_storage_backend {
    KMS_STORAGE_LMDB,       /* location: a directory */
    KMS_STORAGE_POSTGRESQL, /* location: a libpq conninfo string or postgresql:// URI */
};

struct kms_storage_opts {
    size_t map_size; /* LMDB map size in bytes; 0 = default (1 GiB) */
    bool nosync;     /* LMDB: skip fsync; PostgreSQL: synchronous_commit=off (dev, tests) */
    bool create;     /* LMDB: create the directory (0700) if missing */
    /* the store must exist already (kmsd migrate's source): LMDB refuses a directory without
     * data.mdb (and creates nothing in it), every backend a store without a seal check record,
     * instead of starting an empty store there */
    bool existing;
    enum kms_storage_backend backend;
    /* PostgreSQL: the password, overriding the URI's (NULL: libpq's own sources, such as
     * PGPASSWORD or a pgpass file). Used to connect, never logged or kept in messages. */
    const char *pg_password;
    /* PostgreSQL: hold a session advisory lock on the write connection so that no other
     * kmsd process opened with pg_exclusive can use the database at the same time (the
     * server sets it: one kmsd per database until replicas have leadership, docs/ha.md). */
    bool pg_exclusive;
    /* PostgreSQL: leadership mode (several replicas on one database, docs/ha.md) when > 0:
     * the write connection ends its session after this many milliseconds idle or idle in a
     * transaction (so a stopped or cut-off holder loses the leader lock), writes need the
     * leader lock (kms_storage_leader_try) on the connection that carries them, and a write
     * connection that broke is not replaced by a write transaction. */
    int64_t pg_ha_lease_ms;
};

/*
 * Open (or create) the store at `location` (LMDB: a directory; PostgreSQL: a conninfo string
 * or URI, whose table kmsd_records is created if missing) with the 32-byte seal key (copied).
 * A new store records a seal check value; an existing store whose check value does not open
 * under `seal_key` fails with err "seal key does not match this store". Error messages never
 * contain a password. Caller closes with kms_storage_close.
 */
int kms_storage_open(const char *location, const uint8_t seal_key[32],
                     const struct kms_storage_opts *opts, struct kms_storage **out,
                     struct kms_err *err) KMS_WUR;
/* Close the store (all transactions must be finished) and wipe the seal key. */
void kms_storage_close(struct kms_storage **st);
/* "lmdb" or "postgresql". */
const char *kms_storage_backend_name(const struct kms_storage *st);

/* Begin a transaction; write != 0 for a write transaction. */
int kms_storage_txn_begin(struct kms_storage *st, bool write, struct kms_txn **out) KMS_WUR;
/* Commit (durable on return for write transactions) and free the handle; sets *txn = NULL. */
int kms_storage_txn_commit(struct kms_txn **txn) KMS_WUR;
/* Abort and free; NULL-safe; sets *txn = NULL. */
void kms_storage_txn_abort(struct kms_txn **txn);

/*
 * Read and unseal a record. On success *val is malloc'd (caller frees with
 * kms_free_wipe(&val, len)) and valid after the transaction ends. Returns 0, or
 * KMS_STORAGE_NOTFOUND, or -1 on I/O or unseal failure (tampered record).
 */
int kms_storage_get(struct kms_txn *txn, enum kms_db db, const void *key, size_t keylen,
                    uint8_t **val, size_t *vallen) KMS_WUR;
/* Seal and store a record, replacing any old value. */
int kms_storage_put(struct kms_txn *txn, enum kms_db db, const void *key, size_t keylen,
                    const void *val, size_t vallen) KMS_WUR;
/*
 * Insert-if-absent (the one-time records: audit salt, token key, init): in a write
 * transaction, store val under key unless a record is there. Returns 0 when it was inserted
 * (*cur NULL), 1 when a record was already there (left unchanged; its unsealed value in *cur,
 * malloc'd, *curlen bytes: the value everyone uses), -1 on error. LMDB: MDB_NOOVERWRITE;
 * PostgreSQL: INSERT … ON CONFLICT DO NOTHING, then the record read back.
 */
int kms_storage_put_if_absent(struct kms_txn *txn, enum kms_db db, const void *key, size_t keylen,
                              const void *val, size_t vallen, uint8_t **cur,
                              size_t *curlen) KMS_WUR;
/* Delete one record: 0, KMS_STORAGE_NOTFOUND or -1. */
int kms_storage_del(struct kms_txn *txn, enum kms_db db, const void *key, size_t keylen) KMS_WUR;
/* Delete every record whose key starts with prefix; *count (may be NULL) receives how many. */
int kms_storage_del_prefix(struct kms_txn *txn, enum kms_db db, const void *prefix,
                           size_t prefixlen, size_t *count) KMS_WUR;

/*
 * Visit records whose key starts with prefix, in key order, starting at the first key >= start
 * (NULL = from the prefix). The callback gets the key (borrowed until it returns) and, when
 * with_values is true, the unsealed value (borrowed, wiped after the callback). It returns 0
 * to continue, 1 to stop, -1 to fail the scan.
 */
typedef int (*kms_storage_scan_cb)(const uint8_t *key, size_t keylen, const uint8_t *val,
                                   size_t vallen, void *arg);
int kms_storage_scan(struct kms_txn *txn, enum kms_db db, const void *prefix, size_t prefixlen,
                     const void *start, size_t startlen, bool with_values, kms_storage_scan_cb cb,
                     void *arg) KMS_WUR;

/* Number of records in a database (LMDB: from its stats, O(1); PostgreSQL: count(*)). */
int kms_storage_count(struct kms_txn *txn, enum kms_db db, size_t *count) KMS_WUR;

/*
 * Copy every record of `from` into `to` as sealed bytes, record for record (`kmsd migrate`):
 * the associated data names only the database and the key, so a record opens in any store
 * under the same seal key, on either backend. Both stores must be open under the same seal
 * key, and each record is checked to open before it is copied (a tampered source fails the
 * copy). `to` must be empty (nothing but its seal check record): otherwise the copy is
 * refused with err "the target store is not empty". One read transaction on `from` and one
 * write transaction on `to`: the target receives everything or nothing. *count (may be NULL)
 * receives the number of records copied.
 */
int kms_storage_copy(struct kms_storage *from, struct kms_storage *to, size_t *count,
                     struct kms_err *err) KMS_WUR;

/*
 * Leadership on PostgreSQL (docs/ha.md). The leader lock is a session advisory lock held by
 * the write connection, the connection every write commits on, so no write commits in a
 * session that does not hold it. LMDB has none of this: every call returns -1.
 *
 * kms_storage_leader_try: take the lock if free (a broken write connection is replaced
 * first); *got is true while this store holds it. kms_storage_leader_ping: one round trip on
 * the write connection checking that its session still holds the lock; -1 when it does not
 * (then the lock is lost for good: a later try must take it anew). kms_storage_leader_publish
 * writes the leader record (replica id, advertised address, lease, released = false) on the
 * locked connection; kms_storage_leader_release marks it released when it names `replica`
 * (NULL: a replica that never published leaves the record as it is), then drops the lock.
 * kms_storage_leader_read reads the record on a read connection (*present false when no
 * leader ever published). Strings are copied and cut to their buffers. Thread-safe.
 *
 * The record is authenticated: publish and release store an HMAC-SHA256 of its fields under
 * a key derived from the seal key, and read checks it. A record that fails the check (written
 * by someone with access to the database but not the seal key, or by a kmsd older than the
 * check) reads as present with `forged` set and every other field cleared: no address to
 * forward tokens to, not released, no lease.
 */
struct kms_storage_leader {
    bool present;
    bool forged;   /* present, but its MAC does not match: the fields below are cleared */
    bool released; /* the last leader let go cleanly (its lease need not be waited out) */
    char replica[128];
    char api_addr[256];
    int64_t lease_ms;
};
int kms_storage_leader_try(struct kms_storage *st, bool *got) KMS_WUR;
int kms_storage_leader_ping(struct kms_storage *st) KMS_WUR;
int kms_storage_leader_publish(struct kms_storage *st, const char *replica, const char *api_addr,
                               int64_t lease_ms) KMS_WUR;
int kms_storage_leader_release(struct kms_storage *st, const char *replica) KMS_WUR;
int kms_storage_leader_read(struct kms_storage *st, struct kms_storage_leader *out) KMS_WUR;

/*
 * An exclusive PostgreSQL store (opts->pg_exclusive): 0 while the write session that took the
 * database lock at open lives; -1 once it ended (a PostgreSQL restart, pg_terminate_backend,
 * a broken connection), for good: from then on every write transaction fails too. The lock
 * went with the session, so another kmsd may have opened the database and written meanwhile,
 * and nothing a caller cached from the store can be trusted any more (the server stops,
 * docs/ha.md). Does not block: a session PostgreSQL ended has sent its end (readable while
 * idle); a write transaction in flight finds out itself. 0 for any other store.
 */
int kms_storage_exclusive_check(struct kms_storage *st) KMS_WUR;

/*
 * Close the idle read connections a PostgreSQL store keeps between transactions (the next
 * read transactions connect afresh); nothing for LMDB. An HA replica that stands down calls it:
 * the pool of its busiest time as active would otherwise stay open, idle, for as long as it
 * stands by, and PostgreSQL's max_connections is shared by every replica. Thread-safe.
 */
void kms_storage_close_idle(struct kms_storage *st);

/*
 * A check run before every write transaction's COMMIT is sent (the leader's lease, docs/ha.md):
 * when it returns false the transaction is aborted and the commit fails. NULL removes it. Set
 * before any transaction runs; the check runs on the committing thread.
 */
void kms_storage_set_commit_guard(struct kms_storage *st, bool (*guard)(void *arg), void *arg);

/* Load a 32-byte seal key from a file: raw 32 bytes, 64 hex chars or base64, whitespace
 * trimmed. Refuses a file readable or writable by group/others. */
int kms_seal_key_load_file(const char *path, uint8_t key[32], struct kms_err *err) KMS_WUR;
/* Parse a seal key given as 64 hex chars or base64 of 32 bytes (e.g. from the environment). */
int kms_seal_key_parse(const char *text, uint8_t key[32], struct kms_err *err) KMS_WUR;

#endif
