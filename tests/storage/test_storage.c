/*
 * test_storage.c - unit tests for storage/: records in every database, persistence, the seal
 * check, tamper detection (by editing the backend's raw records directly), scans, prefix
 * deletes, aborts, large values, map exhaustion and seal key loading.
 *
 * The same tests run on both backends: on LMDB by default, on PostgreSQL when
 * KMS_TEST_PG_URL names a database (ctest starts a throwaway cluster with
 * tests/pg/pgtmp.py run -- ...). A few tests belong to one backend only (LMDB's directory and
 * map size; PostgreSQL's failed statements, writers on two stores, broken connections).
 *
 * Each test gets a fresh mkdtemp directory under /tmp (and, on PostgreSQL, an empty table) with
 * an open store (nosync) and removes it afterwards.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <libpq-fe.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "storage/storage.h"

/* KMS_TEST_PG_URL: a PostgreSQL conninfo string; NULL runs the tests on LMDB. */
static const char *pg_url;

struct fixture {
    char dir[64];
    uint8_t key[32];
    struct kms_storage *st;
};

static const char *const db_names[KMS_DB_COUNT_] = {
    "meta",   "namespaces", "mounts",   "keys", "key_versions",
    "tokens", "accessors",  "policies", "auth", "kmskeys",
};

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void fill_key(uint8_t key[32], uint8_t seed)
{
    for (size_t i = 0; i < 32; i++)
        key[i] = (uint8_t)(seed + i * 7);
}

/* Where the store lives: the fixture's directory or the PostgreSQL database. */
static const char *location(const struct fixture *f)
{
    return pg_url != NULL ? pg_url : f->dir;
}

static struct kms_storage *open_store(struct fixture *f, const struct kms_storage_opts *opts)
{
    struct kms_storage_opts o = {.nosync = true, .create = true};
    struct kms_storage *st = NULL;
    struct kms_err err = {0};

    if (opts != NULL)
        o = *opts;
    if (pg_url != NULL)
        o.backend = KMS_STORAGE_POSTGRESQL;
    if (kms_storage_open(location(f), f->key, &o, &st, &err) != 0)
        fail_msg("open %s: %s", location(f), err.msg);
    return st;
}

/* Run SQL on the test database over a connection of its own; returns the first value of the
 * result (malloc'd, "" when none). */
static char *pg_sql(const char *sql)
{
    PGconn *c = PQconnectdb(pg_url);
    PGresult *r;
    char *out;

    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connect %s: %s", pg_url, PQerrorMessage(c));
    PQclear(PQexec(c, "SET client_min_messages TO warning"));
    r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    out = strdup(PQntuples(r) > 0 && PQnfields(r) > 0 ? PQgetvalue(r, 0, 0) : "");
    assert_non_null(out);
    PQclear(r);
    PQfinish(c);
    return out;
}

static void pg_sqlf(const char *fmt, ...) KMS_PRINTF(1, 2);
static void pg_sqlf(const char *fmt, ...)
{
    char sql[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    free(pg_sql(sql));
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);

    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/kms-storage-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    fill_key(f->key, 1);
    if (pg_url != NULL)
        pg_sqlf("DROP TABLE IF EXISTS kmsd_records; DROP TABLE IF EXISTS kmsd_leader");
    f->st = open_store(f, NULL);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    kms_storage_close(&f->st);
    nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* ---- helpers ----------------------------------------------------------------------------- */

static void put_str(struct kms_storage *st, enum kms_db db, const char *key, const char *val)
{
    struct kms_txn *txn = NULL;

    assert_int_equal(kms_storage_txn_begin(st, true, &txn), 0);
    assert_int_equal(kms_storage_put(txn, db, key, strlen(key), val, strlen(val)), 0);
    assert_int_equal(kms_storage_txn_commit(&txn), 0);
    assert_null(txn);
}

/* Read key; returns the get rc and, on 0, checks the value equals expect (if non-NULL). */
static int get_check(struct kms_storage *st, enum kms_db db, const char *key, const char *expect)
{
    struct kms_txn *txn = NULL;
    uint8_t *val = NULL;
    size_t len = 0;
    int rc;

    assert_int_equal(kms_storage_txn_begin(st, false, &txn), 0);
    rc = kms_storage_get(txn, db, key, strlen(key), &val, &len);
    kms_storage_txn_abort(&txn);
    if (rc == 0 && expect != NULL) {
        assert_int_equal(len, strlen(expect));
        assert_memory_equal(val, expect, len);
    }
    if (rc != 0)
        assert_null(val);
    kms_free_wipe((void **)&val, len);
    return rc;
}

/* Edit the LMDB file directly (the store must be closed): apply fn to one raw record. */
typedef void (*raw_edit_fn)(MDB_txn *txn, MDB_dbi dbi, MDB_env *env, void *arg);

static void raw_edit(const char *dir, const char *dbname, raw_edit_fn fn, void *arg)
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;

    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 32), 0);
    assert_int_equal(mdb_env_open(env, dir, MDB_NOTLS, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, dbname, 0, &dbi), 0);
    fn(txn, dbi, env, arg);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

struct flip_arg {
    const char *key;
    size_t pos; /* index into the sealed value; SIZE_MAX = last byte */
};

static void flip_byte(MDB_txn *txn, MDB_dbi dbi, MDB_env *env, void *arg)
{
    struct flip_arg *fa = arg;
    MDB_val k = {.mv_size = strlen(fa->key), .mv_data = (void *)fa->key}, v;
    uint8_t *copy;
    size_t pos;

    (void)env;
    assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
    copy = malloc(v.mv_size);
    assert_non_null(copy);
    memcpy(copy, v.mv_data, v.mv_size);
    pos = fa->pos == SIZE_MAX ? v.mv_size - 1 : fa->pos;
    assert_true(pos < v.mv_size);
    copy[pos] ^= 0x01;
    v.mv_data = copy;
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    free(copy);
}

struct copy_arg {
    const char *from;
    const char *to;
    size_t truncate; /* if non-zero, store only this many bytes */
};

static void copy_value(MDB_txn *txn, MDB_dbi dbi, MDB_env *env, void *arg)
{
    struct copy_arg *ca = arg;
    MDB_val k = {.mv_size = strlen(ca->from), .mv_data = (void *)ca->from}, v, v2;
    uint8_t *copy;

    (void)env;
    assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
    copy = malloc(v.mv_size);
    assert_non_null(copy);
    memcpy(copy, v.mv_data, v.mv_size);
    v2.mv_data = copy;
    v2.mv_size = ca->truncate != 0 ? ca->truncate : v.mv_size;
    k.mv_data = (void *)ca->to;
    k.mv_size = strlen(ca->to);
    assert_int_equal(mdb_put(txn, dbi, &k, &v2, 0), 0);
    free(copy);
}

/* Copy the raw sealed value of key from one database to the same key in another. */
struct cross_arg {
    const char *key;
    const char *to_db;
};

static void copy_cross_db(MDB_txn *txn, MDB_dbi dbi, MDB_env *env, void *arg)
{
    struct cross_arg *ca = arg;
    MDB_val k = {.mv_size = strlen(ca->key), .mv_data = (void *)ca->key}, v;
    MDB_dbi to;
    uint8_t *copy;

    (void)env;
    assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
    copy = malloc(v.mv_size);
    assert_non_null(copy);
    memcpy(copy, v.mv_data, v.mv_size);
    v.mv_data = copy;
    assert_int_equal(mdb_dbi_open(txn, ca->to_db, 0, &to), 0);
    assert_int_equal(mdb_put(txn, to, &k, &v, 0), 0);
    free(copy);
}

static int db_index(const char *name)
{
    for (int i = 0; i < KMS_DB_COUNT_; i++)
        if (strcmp(db_names[i], name) == 0)
            return i;
    fail_msg("no database %s", name);
    return -1;
}

/* The raw edits on either backend (the store must be closed). Test keys are plain ASCII. */
static void raw_flip(struct fixture *f, const char *dbname, struct flip_arg *fa)
{
    if (pg_url == NULL) {
        raw_edit(f->dir, dbname, flip_byte, fa);
        return;
    }
    if (fa->pos == SIZE_MAX)
        pg_sqlf("UPDATE kmsd_records SET value = set_byte(value, length(value) - 1, "
                "get_byte(value, length(value) - 1) # 1) WHERE db = %d AND key = '%s'::bytea",
                db_index(dbname), fa->key);
    else
        pg_sqlf("UPDATE kmsd_records SET value = set_byte(value, %zu, get_byte(value, %zu) # 1) "
                "WHERE db = %d AND key = '%s'::bytea",
                fa->pos, fa->pos, db_index(dbname), fa->key);
}

static void raw_copy(struct fixture *f, const char *dbname, struct copy_arg *ca)
{
    if (pg_url == NULL) {
        raw_edit(f->dir, dbname, copy_value, ca);
        return;
    }
    pg_sqlf("INSERT INTO kmsd_records SELECT db, '%s'::bytea, substring(value from 1 for %zu) "
            "FROM kmsd_records WHERE db = %d AND key = '%s'::bytea ON CONFLICT (db, key) DO "
            "UPDATE SET value = EXCLUDED.value",
            ca->to, ca->truncate != 0 ? ca->truncate : (size_t)1 << 30, db_index(dbname), ca->from);
}

static void raw_cross(struct fixture *f, const char *dbname, struct cross_arg *xa)
{
    if (pg_url == NULL) {
        raw_edit(f->dir, dbname, copy_cross_db, xa);
        return;
    }
    pg_sqlf("INSERT INTO kmsd_records SELECT %d, key, value FROM kmsd_records WHERE db = %d "
            "AND key = '%s'::bytea ON CONFLICT (db, key) DO UPDATE SET value = EXCLUDED.value",
            db_index(xa->to_db), db_index(dbname), xa->key);
}

/* ---- records ----------------------------------------------------------------------------- */

static void test_roundtrip_every_db(void **state)
{
    struct fixture *f = *state;
    struct kms_txn *txn = NULL;
    char val[64];

    for (int db = 0; db < KMS_DB_COUNT_; db++) {
        snprintf(val, sizeof val, "value for %s", db_names[db]);
        put_str(f->st, (enum kms_db)db, "rec/1", val);
    }
    for (int db = 0; db < KMS_DB_COUNT_; db++) {
        snprintf(val, sizeof val, "value for %s", db_names[db]);
        assert_int_equal(get_check(f->st, (enum kms_db)db, "rec/1", val), 0);
    }
    assert_int_equal(kms_storage_txn_begin(f->st, true, &txn), 0);
    for (int db = 0; db < KMS_DB_COUNT_; db++) {
        assert_int_equal(kms_storage_del(txn, (enum kms_db)db, "rec/1", 5), 0);
        assert_int_equal(kms_storage_del(txn, (enum kms_db)db, "rec/1", 5), KMS_STORAGE_NOTFOUND);
    }
    assert_int_equal(kms_storage_txn_commit(&txn), 0);
    for (int db = 0; db < KMS_DB_COUNT_; db++)
        assert_int_equal(get_check(f->st, (enum kms_db)db, "rec/1", NULL), KMS_STORAGE_NOTFOUND);
    /* The seal check record is still there. */
    assert_int_equal(get_check(f->st, KMS_DB_META, "seal_check", NULL), 0);
}

static void test_overwrite_and_empty_value(void **state)
{
    struct fixture *f = *state;
    struct kms_txn *txn = NULL;
    uint8_t *val = NULL;
    size_t len = 99;

    put_str(f->st, KMS_DB_KEYS, "k", "first");
    put_str(f->st, KMS_DB_KEYS, "k", "second value");
    assert_int_equal(get_check(f->st, KMS_DB_KEYS, "k", "second value"), 0);

    assert_int_equal(kms_storage_txn_begin(f->st, true, &txn), 0);
    assert_int_equal(kms_storage_put(txn, KMS_DB_KEYS, "empty", 5, NULL, 0), 0);
    assert_int_equal(kms_storage_get(txn, KMS_DB_KEYS, "empty", 5, &val, &len), 0);
    assert_non_null(val);
    assert_int_equal(len, 0);
    kms_free_wipe((void **)&val, len);
    assert_int_equal(kms_storage_txn_commit(&txn), 0);
}

/* Insert-if-absent: the first value stays, every later caller gets it back. */
static void test_put_if_absent(void **state)
{
    struct fixture *f = *state;
    struct kms_txn *txn = NULL;
    uint8_t *cur = NULL;
    size_t len = 99;

    assert_int_equal(kms_storage_txn_begin(f->st, true, &txn), 0);
    assert_int_equal(kms_storage_put_if_absent(txn, KMS_DB_META, "once", 4, "first", 5, &cur, &len),
                     0);
    assert_null(cur);
    assert_int_equal(len, 0);
    /* within the same transaction the record is there already */
    assert_int_equal(
        kms_storage_put_if_absent(txn, KMS_DB_META, "once", 4, "second", 6, &cur, &len), 1);
    assert_non_null(cur);
    assert_int_equal(len, 5);
    assert_memory_equal(cur, "first", 5);
    kms_free_wipe((void **)&cur, len);
    assert_int_equal(kms_storage_txn_commit(&txn), 0);
    /* a later transaction: unchanged, and nothing to commit */
    assert_int_equal(kms_storage_txn_begin(f->st, true, &txn), 0);
    assert_int_equal(kms_storage_put_if_absent(txn, KMS_DB_META, "once", 4, "third", 5, &cur, &len),
                     1);
    assert_memory_equal(cur, "first", 5);
    kms_free_wipe((void **)&cur, len);
    kms_storage_txn_abort(&txn);
    assert_int_equal(get_check(f->st, KMS_DB_META, "once", "first"), 0);
    /* a read transaction cannot insert */
    assert_int_equal(kms_storage_txn_begin(f->st, false, &txn), 0);
    assert_int_equal(kms_storage_put_if_absent(txn, KMS_DB_META, "new", 3, "x", 1, &cur, &len), -1);
    kms_storage_txn_abort(&txn);
}

static void test_not_found(void **state)
{
    struct fixture *f = *state;
    struct kms_txn *txn = NULL;
    uint8_t *val = (uint8_t *)"x";
    size_t len = 5;

    assert_int_equal(kms_storage_txn_begin(f->st, false, &txn), 0);
    assert_int_equal(kms_storage_get(txn, KMS_DB_TOKENS, "missing", 7, &val, &len),
                     KMS_STORAGE_NOTFOUND);
    assert_null(val);
    assert_int_equal(len, 0);
    kms_storage_txn_abort(&txn);
    assert_null(txn);
    kms_storage_txn_abort(&txn); /* NULL-safe */

    assert_int_equal(kms_storage_txn_begin(f->st, true, &txn), 0);
    assert_int_equal(kms_storage_del(txn, KMS_DB_TOKENS, "missing", 7), KMS_STORAGE_NOTFOUND);
    kms_storage_txn_abort(&txn);
}

static void test_bad_arguments(void **state)
{
    struct fixture *f = *state;
    struct kms_txn *txn = NULL;
    char big[600];
    uint8_t *val = NULL;
    size_t len = 0;

    memset(big, 'k', sizeof big);
    assert_int_equal(kms_storage_txn_begin(f->st, true, &txn), 0);
    /* Empty and over-long keys are refused. */
    assert_int_equal(kms_storage_put(txn, KMS_DB_KEYS, "", 0, "v", 1), -1);
    assert_int_equal(kms_storage_put(txn, KMS_DB_KEYS, big, 512, "v", 1), -1);
    assert_int_equal(kms_storage_put(txn, KMS_DB_KEYS, big, 511, "v", 1), 0);
    assert_int_equal(kms_storage_get(txn, KMS_DB_KEYS, big, 511, &val, &len), 0);
    kms_free_wipe((void **)&val, len);
    /* No record can have such a key: get and del report not found. */
    assert_int_equal(kms_storage_get(txn, KMS_DB_KEYS, big, 512, &val, &len), KMS_STORAGE_NOTFOUND);
    assert_int_equal(kms_storage_get(txn, KMS_DB_KEYS, "", 0, &val, &len), KMS_STORAGE_NOTFOUND);
    assert_int_equal(kms_storage_del(txn, KMS_DB_KEYS, big, 512), KMS_STORAGE_NOTFOUND);
    assert_int_equal(kms_storage_put(txn, (enum kms_db)KMS_DB_COUNT_, "k", 1, "v", 1), -1);
    assert_int_equal(kms_storage_txn_commit(&txn), 0);

    /* A read transaction cannot write. */
    assert_int_equal(kms_storage_txn_begin(f->st, false, &txn), 0);
    assert_int_equal(kms_storage_put(txn, KMS_DB_KEYS, "k", 1, "v", 1), -1);
    assert_int_equal(kms_storage_del(txn, KMS_DB_KEYS, big, 511), -1);
    kms_storage_txn_abort(&txn);
    assert_int_equal(get_check(f->st, KMS_DB_KEYS, "k", NULL), KMS_STORAGE_NOTFOUND);
}

static void test_persistence(void **state)
{
    struct fixture *f = *state;
    /* A key version key: "<ns>/<mount>/<name>/" and a big-endian u32 holding zero bytes. */
    static const uint8_t vkey[] = {'n', 's', '/', 'm', '/', 'k', '/', 0, 0, 0, 1};
    struct kms_txn *txn = NULL;
    uint8_t *val = NULL;
    size_t len = 0;

    assert_int_equal(kms_storage_txn_begin(f->st, true, &txn), 0);
    assert_int_equal(kms_storage_put(txn, KMS_DB_KEY_VERSIONS, vkey, sizeof vkey, "material", 8),
                     0);
    assert_int_equal(kms_storage_txn_commit(&txn), 0);
    put_str(f->st, KMS_DB_POLICIES, "root/default", "path \"*\" {}");
    kms_storage_close(&f->st);
    assert_null(f->st);
    kms_storage_close(&f->st); /* NULL-safe */

    f->st = open_store(f, NULL);
    assert_int_equal(kms_storage_txn_begin(f->st, false, &txn), 0);
    assert_int_equal(kms_storage_get(txn, KMS_DB_KEY_VERSIONS, vkey, sizeof vkey, &val, &len), 0);
    assert_int_equal(len, 8);
    assert_memory_equal(val, "material", 8);
    kms_free_wipe((void **)&val, len);
    assert_int_equal(kms_storage_get(txn, KMS_DB_KEY_VERSIONS, vkey, 7, &val, &len),
                     KMS_STORAGE_NOTFOUND);
    kms_storage_txn_abort(&txn);
    assert_int_equal(get_check(f->st, KMS_DB_POLICIES, "root/default", "path \"*\" {}"), 0);
}

static void test_durable_open(void **state)
{
    struct fixture *f = *state;
    struct kms_storage_opts opts = {0};

    /* Default options: fsync on commit, the directory must already exist. */
    kms_storage_close(&f->st);
    f->st = open_store(f, &opts);
    put_str(f->st, KMS_DB_MOUNTS, "root/transit/", "{\"type\":\"transit\"}");
    kms_storage_close(&f->st);
    f->st = open_store(f, &opts);
    assert_int_equal(get_check(f->st, KMS_DB_MOUNTS, "root/transit/", "{\"type\":\"transit\"}"), 0);
}

static void test_wrong_seal_key(void **state)
{
    struct fixture *f = *state;
    struct kms_storage_opts opts = {.nosync = true};
    struct kms_storage *st = NULL;
    struct kms_err err = {0};
    uint8_t other[32];

    put_str(f->st, KMS_DB_TOKENS, "t", "secret");
    kms_storage_close(&f->st);

    fill_key(other, 2);
    if (pg_url != NULL)
        opts.backend = KMS_STORAGE_POSTGRESQL;
    assert_int_equal(kms_storage_open(location(f), other, &opts, &st, &err), -1);
    assert_null(st);
    assert_string_equal(err.msg, "seal key does not match this store");
    assert_int_equal(err.status, 500);

    /* The failed open changed nothing. */
    f->st = open_store(f, &opts);
    assert_int_equal(get_check(f->st, KMS_DB_TOKENS, "t", "secret"), 0);
}

static void test_open_errors(void **state)
{
    struct fixture *f = *state;
    struct kms_storage_opts opts = {.nosync = true};
    struct kms_storage *st = NULL;
    struct kms_err err = {0};
    char path[128], want[256];
    int fd;

    snprintf(path, sizeof path, "%s/missing", f->dir);
    assert_int_equal(kms_storage_open(path, f->key, &opts, &st, &err), -1);
    assert_null(st);
    snprintf(want, sizeof want, "cannot open storage directory %s: No such file or directory",
             path);
    assert_string_equal(err.msg, want);

    snprintf(path, sizeof path, "%s/file", f->dir);
    fd = open(path, O_CREAT | O_WRONLY, 0600);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(kms_storage_open(path, f->key, &opts, &st, &err), -1);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "Not a directory"));

    opts.create = true;
    assert_int_equal(kms_storage_open(path, f->key, &opts, &st, &err), -1);
    assert_non_null(strstr(err.msg, path));
}

static void del_seal_check(MDB_txn *txn, MDB_dbi dbi, MDB_env *env, void *arg)
{
    MDB_val k = {.mv_size = strlen("seal_check"), .mv_data = (void *)"seal_check"};

    (void)env;
    (void)arg;
    assert_int_equal(mdb_del(txn, dbi, &k, NULL), 0);
}

/*
 * kmsd migrate's source must be a store already: a directory without data.mdb, or a store
 * without a seal check, is refused (it was made into a new, empty store and "copied").
 */
static void test_existing_store(void **state)
{
    struct fixture *f = *state;
    struct kms_storage_opts opts = {.nosync = true, .existing = true};
    struct kms_storage *st = NULL;
    struct kms_err err = {0};
    char path[128], file[160], want[512];
    struct stat sb;

    kms_storage_close(&f->st);
    f->st = open_store(f, &opts); /* a store: opens */
    kms_storage_close(&f->st);
    if (pg_url == NULL) {
        snprintf(path, sizeof path, "%s/empty", f->dir);
        assert_int_equal(mkdir(path, 0700), 0);
        assert_int_equal(kms_storage_open(path, f->key, &opts, &st, &err), -1);
        assert_null(st);
        snprintf(want, sizeof want,
                 "no kmsd store in %s: cannot open %s/data.mdb: No such file or directory", path,
                 path);
        assert_string_equal(err.msg, want);
        snprintf(file, sizeof file, "%s/data.mdb", path);
        assert_int_equal(stat(file, &sb), -1); /* nothing created there */
        raw_edit(f->dir, "meta", del_seal_check, NULL);
    } else {
        opts.backend = KMS_STORAGE_POSTGRESQL;
        pg_sqlf("DELETE FROM kmsd_records WHERE db = %d AND key = 'seal_check'::bytea",
                db_index("meta"));
    }
    assert_int_equal(kms_storage_open(location(f), f->key, &opts, &st, &err), -1);
    assert_null(st);
    snprintf(want, sizeof want, "no kmsd store here: the %s store holds no seal check record",
             pg_url != NULL ? "postgresql" : "lmdb");
    assert_string_equal(err.msg, want);
}

/*
 * As many read transactions at once as the server can have: a worker (up to 1024) or a KMS
 * plugin call thread each hold one, some a nested second, and the pool keeps up to 64 reset
 * ones with their reader slots. LMDB's default reader table (126 slots) failed the 127th
 * with MDB_READERS_FULL: sporadic 500s on a node with more than about 120 cores.
 */
static void test_many_readers(void **state)
{
    struct fixture *f = *state;
    enum { N = 2 * 1024 + 8 * 32 }; /* two per worker at most workers, 8 plugins' threads */
    struct kms_txn **txn = calloc(N, sizeof *txn);
    uint8_t *val = NULL;
    size_t len = 0;

    assert_non_null(txn);
    put_str(f->st, KMS_DB_META, "r", "v");
    for (size_t i = 0; i < N; i++) {
        if (kms_storage_txn_begin(f->st, false, &txn[i]) != 0)
            fail_msg("read transaction %zu of %d could not begin", i + 1, N);
    }
    assert_int_equal(kms_storage_get(txn[N - 1], KMS_DB_META, "r", 1, &val, &len), 0);
    kms_free_wipe((void **)&val, len);
    for (size_t i = 0; i < N; i++)
        kms_storage_txn_abort(&txn[i]);
    free(txn);
}

static void test_create_modes(void **state)
{
    struct fixture *f = *state;
    struct kms_storage_opts opts = {.nosync = true, .create = true};
    struct kms_storage *st = NULL;
    struct kms_err err = {0};
    char path[128], file[160];
    struct stat sb;

    snprintf(path, sizeof path, "%s/sub", f->dir);
    assert_int_equal(kms_storage_open(path, f->key, &opts, &st, &err), 0);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0700);
    snprintf(file, sizeof file, "%s/data.mdb", path);
    assert_int_equal(stat(file, &sb), 0);
    assert_int_equal(sb.st_mode & 077, 0);
    kms_storage_close(&st);
}

static void test_two_read_txns(void **state)
{
    struct fixture *f = *state;
    struct kms_txn *a = NULL, *b = NULL, *w = NULL;
    uint8_t *val = NULL;
    size_t len = 0;

    put_str(f->st, KMS_DB_KEYS, "k", "v1");
    /* MDB_NOTLS: one thread may hold several read transactions at once. */
    assert_int_equal(kms_storage_txn_begin(f->st, false, &a), 0);
    assert_int_equal(kms_storage_txn_begin(f->st, false, &b), 0);
    assert_int_equal(kms_storage_txn_begin(f->st, true, &w), 0);
    assert_int_equal(kms_storage_put(w, KMS_DB_KEYS, "k", 1, "v2", 2), 0);
    assert_int_equal(kms_storage_txn_commit(&w), 0);
    /* Snapshots: the older readers still see v1. */
    assert_int_equal(kms_storage_get(a, KMS_DB_KEYS, "k", 1, &val, &len), 0);
    assert_memory_equal(val, "v1", 2);
    kms_free_wipe((void **)&val, len);
    assert_int_equal(kms_storage_get(b, KMS_DB_KEYS, "k", 1, &val, &len), 0);
    assert_memory_equal(val, "v1", 2);
    kms_free_wipe((void **)&val, len);
    assert_int_equal(kms_storage_txn_commit(&a), 0);
    kms_storage_txn_abort(&b);
    assert_int_equal(get_check(f->st, KMS_DB_KEYS, "k", "v2"), 0);
}

/*
 * Ended read transactions are kept and renewed (LMDB: mdb_txn_reset into a pool, then
 * mdb_txn_renew): a read transaction begun after a commit sees it, whether the previous one
 * was ended by abort or by commit, and a kept one never shows an older snapshot.
 */
static void test_read_txn_reuse_sees_commits(void **state)
{
    struct fixture *f = *state;
    struct kms_txn *r = NULL;
    uint8_t *val = NULL;
    size_t len = 0;
    char v[16];

    put_str(f->st, KMS_DB_KEYS, "k", "v0");
    for (int i = 1; i <= 20; i++) {
        assert_int_equal(kms_storage_txn_begin(f->st, false, &r), 0);
        assert_int_equal(kms_storage_get(r, KMS_DB_KEYS, "k", 1, &val, &len), 0);
        snprintf(v, sizeof v, "v%d", i - 1);
        assert_int_equal(len, strlen(v));
        assert_memory_equal(val, v, len);
        kms_free_wipe((void **)&val, len);
        /* alternate the two ways a read transaction ends */
        if (i % 2 == 0)
            assert_int_equal(kms_storage_txn_commit(&r), 0);
        else
            kms_storage_txn_abort(&r);
        assert_null(r);
        snprintf(v, sizeof v, "v%d", i);
        put_str(f->st, KMS_DB_KEYS, "k", v);
    }
    /* a record deleted after the last read is gone for the next one */
    struct kms_txn *w = NULL;
    assert_int_equal(kms_storage_txn_begin(f->st, true, &w), 0);
    assert_int_equal(kms_storage_del(w, KMS_DB_KEYS, "k", 1), 0);
    assert_int_equal(kms_storage_txn_commit(&w), 0);
    assert_int_equal(get_check(f->st, KMS_DB_KEYS, "k", NULL), KMS_STORAGE_NOTFOUND);
}

/* More read transactions open at once than the backend keeps (LMDB keeps 64): every one
 * works, and after they all ended the next ones see a later commit. */
static void test_many_read_txns(void **state)
{
    struct fixture *f = *state;
    enum { N = 80 };
    struct kms_txn *r[N] = {0};

    put_str(f->st, KMS_DB_KEYS, "k", "a");
    for (int round = 0; round < 2; round++) {
        const char *want = round == 0 ? "a" : "b";
        for (int i = 0; i < N; i++)
            assert_int_equal(kms_storage_txn_begin(f->st, false, &r[i]), 0);
        for (int i = 0; i < N; i++) {
            uint8_t *val = NULL;
            size_t len = 0;
            assert_int_equal(kms_storage_get(r[i], KMS_DB_KEYS, "k", 1, &val, &len), 0);
            assert_int_equal(len, 1);
            assert_memory_equal(val, want, 1);
            kms_free_wipe((void **)&val, len);
            kms_storage_txn_abort(&r[i]);
        }
        put_str(f->st, KMS_DB_KEYS, "k", "b");
    }
}

/* Readers on several threads while a writer counts up: a reader's next transaction never
 * sees an older count than its last one, and once the writer is done every reader sees the
 * final count. */
struct counter_reader {
    struct kms_storage *st;
    atomic_int *writer_done;
    int final_seen;
    int rc; /* 0 ok, else what went wrong */
};

static int read_count(struct kms_storage *st, int *out)
{
    struct kms_txn *r = NULL;
    uint8_t *val = NULL;
    size_t len = 0;
    char buf[16];
    int g;

    if (kms_storage_txn_begin(st, false, &r) != 0)
        return -1;
    g = kms_storage_get(r, KMS_DB_META, "count", 5, &val, &len);
    kms_storage_txn_abort(&r);
    if (g != 0 || len == 0 || len >= sizeof buf) {
        kms_free_wipe((void **)&val, len);
        return -1;
    }
    memcpy(buf, val, len);
    buf[len] = '\0';
    kms_free_wipe((void **)&val, len);
    *out = (int)strtol(buf, NULL, 10);
    return 0;
}

static void *count_reader(void *p)
{
    struct counter_reader *c = p;
    int last = -1, n = 0;

    for (;;) {
        bool done = atomic_load(c->writer_done) != 0;
        if (read_count(c->st, &n) != 0) {
            c->rc = 1;
            return NULL;
        }
        if (n < last) {
            c->rc = 2; /* an older snapshot after a newer one */
            return NULL;
        }
        last = n;
        if (done)
            break;
    }
    c->final_seen = last;
    return NULL;
}

static void test_readers_and_writer(void **state)
{
    struct fixture *f = *state;
    enum { READERS = 4, WRITES = 300 };
    struct counter_reader c[READERS];
    pthread_t th[READERS];
    atomic_int done = 0;
    char v[16];

    put_str(f->st, KMS_DB_META, "count", "0");
    for (int i = 0; i < READERS; i++) {
        c[i] = (struct counter_reader){.st = f->st, .writer_done = &done};
        assert_int_equal(pthread_create(&th[i], NULL, count_reader, &c[i]), 0);
    }
    for (int i = 1; i <= WRITES; i++) {
        snprintf(v, sizeof v, "%d", i);
        put_str(f->st, KMS_DB_META, "count", v);
    }
    atomic_store(&done, 1);
    for (int i = 0; i < READERS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(c[i].rc, 0);
        assert_int_equal(c[i].final_seen, WRITES);
    }
}

/* Overwrite a 64 KiB value; 0 when committed, -1 when the map was full. */
static int churn_once(struct kms_storage *st, const uint8_t *big, size_t n)
{
    struct kms_txn *w = NULL;

    assert_int_equal(kms_storage_txn_begin(st, true, &w), 0);
    if (kms_storage_put(w, KMS_DB_KEYS, "big", 3, big, n) != 0) {
        kms_storage_txn_abort(&w);
        return -1;
    }
    return kms_storage_txn_commit(&w);
}

/*
 * A kept (reset) read transaction holds no snapshot: LMDB cannot reuse the pages a commit
 * frees while a reader older than that commit is open, so a value overwritten over and over
 * fills a small map while a reader is held open, and never does when every reader ends
 * (and is kept for renewal) between the writes.
 */
static void test_kept_read_txn_holds_no_snapshot(void **state)
{
    struct fixture *f = *state;
    struct kms_storage_opts opts = {.nosync = true, .create = true, .map_size = (size_t)2 << 20};
    const size_t n = (size_t)64 << 10;
    uint8_t *big = calloc(1, n);
    struct kms_txn *held = NULL;
    int i, rc = 0;

    assert_non_null(big);
    kms_storage_close(&f->st);
    nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    f->st = open_store(f, &opts);
    assert_int_equal(churn_once(f->st, big, n), 0);

    /* the check can fail: with a reader held open the map fills */
    assert_int_equal(kms_storage_txn_begin(f->st, false, &held), 0);
    assert_int_equal(get_check(f->st, KMS_DB_KEYS, "big", NULL), 0);
    for (i = 0; i < 200 && rc == 0; i++) {
        big[0] = (uint8_t)i;
        rc = churn_once(f->st, big, n);
    }
    assert_int_equal(rc, -1);
    kms_storage_txn_abort(&held);

    /* a reader that ended (its transaction kept for renewal), then more writes than filled
     * the map above: the kept transaction pins nothing */
    int filled_after = i;
    for (int round = 0; round < 4; round++) {
        assert_int_equal(get_check(f->st, KMS_DB_KEYS, "big", NULL), 0);
        for (i = 0; i < 2 * filled_after; i++) {
            big[0] = (uint8_t)i;
            assert_int_equal(churn_once(f->st, big, n), 0);
        }
    }
    free(big);
}

/* ---- tamper detection -------------------------------------------------------------------- */

static void test_tamper_flipped_byte(void **state)
{
    struct fixture *f = *state;
    /* version byte, nonce, ciphertext, tag */
    const size_t positions[] = {0, 1, 12, 13, 20, SIZE_MAX};

    put_str(f->st, KMS_DB_KEYS, "ns/m/key", "policy record");
    put_str(f->st, KMS_DB_KEYS, "ns/m/other", "untouched");
    for (size_t i = 0; i < sizeof positions / sizeof positions[0]; i++) {
        struct flip_arg fa = {.key = "ns/m/key", .pos = positions[i]};

        kms_storage_close(&f->st);
        raw_flip(f, "keys", &fa);
        f->st = open_store(f, NULL);
        assert_int_equal(get_check(f->st, KMS_DB_KEYS, "ns/m/key", NULL), -1);
        assert_int_equal(get_check(f->st, KMS_DB_KEYS, "ns/m/other", "untouched"), 0);
        /* Flip it back: the record opens again, so exactly that byte was detected. */
        kms_storage_close(&f->st);
        raw_flip(f, "keys", &fa);
        f->st = open_store(f, NULL);
        assert_int_equal(get_check(f->st, KMS_DB_KEYS, "ns/m/key", "policy record"), 0);
    }
}

static void test_tamper_moved_value(void **state)
{
    struct fixture *f = *state;
    struct copy_arg ca = {.from = "ns/m/a", .to = "ns/m/b"};
    struct copy_arg trunc = {.from = "ns/m/a", .to = "ns/m/short", .truncate = 20};
    struct copy_arg tiny = {.from = "ns/m/a", .to = "ns/m/tiny", .truncate = 1};
    struct cross_arg xa = {.key = "ns/m/a", .to_db = "policies"};

    put_str(f->st, KMS_DB_KEYS, "ns/m/a", "value a");
    kms_storage_close(&f->st);
    raw_copy(f, "keys", &ca);
    raw_copy(f, "keys", &trunc);
    raw_copy(f, "keys", &tiny);
    raw_cross(f, "keys", &xa);
    f->st = open_store(f, NULL);

    assert_int_equal(get_check(f->st, KMS_DB_KEYS, "ns/m/a", "value a"), 0);
    /* Same bytes under another key or in another database: the AAD no longer matches. */
    assert_int_equal(get_check(f->st, KMS_DB_KEYS, "ns/m/b", NULL), -1);
    assert_int_equal(get_check(f->st, KMS_DB_POLICIES, "ns/m/a", NULL), -1);
    assert_int_equal(get_check(f->st, KMS_DB_KEYS, "ns/m/short", NULL), -1);
    assert_int_equal(get_check(f->st, KMS_DB_KEYS, "ns/m/tiny", NULL), -1);
}

static int count_cb(const uint8_t *key, size_t keylen, const uint8_t *val, size_t vallen, void *arg)
{
    (void)key;
    (void)keylen;
    (void)val;
    (void)vallen;
    (*(int *)arg)++;
    return 0;
}

static void test_tamper_fails_scan(void **state)
{
    struct fixture *f = *state;
    struct copy_arg ca = {.from = "p/a", .to = "p/b"};
    struct kms_txn *txn = NULL;
    int n = 0;

    put_str(f->st, KMS_DB_TOKENS, "p/a", "token a");
    put_str(f->st, KMS_DB_TOKENS, "p/c", "token c");
    kms_storage_close(&f->st);
    raw_copy(f, "tokens", &ca);
    f->st = open_store(f, NULL);

    assert_int_equal(kms_storage_txn_begin(f->st, false, &txn), 0);
    assert_int_equal(kms_storage_scan(txn, KMS_DB_TOKENS, "p/", 2, NULL, 0, true, count_cb, &n),
                     -1);
    assert_int_equal(n, 1); /* p/a was visited, p/b failed */
    n = 0;
    assert_int_equal(kms_storage_scan(txn, KMS_DB_TOKENS, "p/", 2, NULL, 0, false, count_cb, &n),
                     0);
    assert_int_equal(n, 3);
    kms_storage_txn_abort(&txn);
}

/* ---- scans and prefix deletes ------------------------------------------------------------ */

struct collect {
    char keys[16][32];
    char vals[16][32];
    int n;
    int stop_after; /* 0 = never */
    bool fail;
};

static int collect_cb(const uint8_t *key, size_t keylen, const uint8_t *val, size_t vallen,
                      void *arg)
{
    struct collect *c = arg;

    if (c->fail)
        return -1;
    assert_true(c->n < 16);
    assert_true(keylen < 32 && vallen < 32);
    memcpy(c->keys[c->n], key, keylen);
    c->keys[c->n][keylen] = 0;
    if (val != NULL)
        memcpy(c->vals[c->n], val, vallen);
    else
        assert_int_equal(vallen, 0);
    c->vals[c->n][vallen] = 0;
    c->n++;
    return c->stop_after != 0 && c->n >= c->stop_after ? 1 : 0;
}

static void scan_into(struct kms_storage *st, const char *prefix, const char *start,
                      bool with_values, struct collect *c, int want_rc)
{
    struct kms_txn *txn = NULL;

    assert_int_equal(kms_storage_txn_begin(st, false, &txn), 0);
    assert_int_equal(kms_storage_scan(txn, KMS_DB_KEYS, prefix, prefix ? strlen(prefix) : 0, start,
                                      start ? strlen(start) : 0, with_values, collect_cb, c),
                     want_rc);
    kms_storage_txn_abort(&txn);
}

static void scan_fill(struct kms_storage *st)
{
    /* Inserted out of order; ns1 and ns10/ share the bytes "ns1". */
    static const char *const keys[] = {"ns1/c", "ns10/x", "ns1/a", "ns2/a",
                                       "ns1",   "ns1/b",  "ns0/z"};
    struct kms_txn *txn = NULL;
    char val[32];

    assert_int_equal(kms_storage_txn_begin(st, true, &txn), 0);
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        snprintf(val, sizeof val, "v-%s", keys[i]);
        assert_int_equal(
            kms_storage_put(txn, KMS_DB_KEYS, keys[i], strlen(keys[i]), val, strlen(val)), 0);
    }
    assert_int_equal(kms_storage_txn_commit(&txn), 0);
}

static void test_scan_order_and_values(void **state)
{
    struct fixture *f = *state;
    struct collect c = {0};

    scan_fill(f->st);
    scan_into(f->st, "ns1/", NULL, true, &c, 0);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.keys[0], "ns1/a");
    assert_string_equal(c.keys[1], "ns1/b");
    assert_string_equal(c.keys[2], "ns1/c");
    assert_string_equal(c.vals[0], "v-ns1/a");
    assert_string_equal(c.vals[2], "v-ns1/c");

    memset(&c, 0, sizeof c);
    scan_into(f->st, "ns1/", NULL, false, &c, 0);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.vals[1], "");

    memset(&c, 0, sizeof c);
    scan_into(f->st, "ns1", NULL, false, &c, 0);
    assert_int_equal(c.n, 5);
    assert_string_equal(c.keys[0], "ns1");
    assert_string_equal(c.keys[1], "ns1/a");
    assert_string_equal(c.keys[4], "ns10/x");

    memset(&c, 0, sizeof c);
    scan_into(f->st, NULL, NULL, true, &c, 0);
    assert_int_equal(c.n, 7);
    assert_string_equal(c.keys[0], "ns0/z");
    assert_string_equal(c.keys[6], "ns2/a");

    memset(&c, 0, sizeof c);
    scan_into(f->st, "nope/", NULL, true, &c, 0);
    assert_int_equal(c.n, 0);
    scan_into(f->st, "zzz", NULL, true, &c, 0);
    assert_int_equal(c.n, 0);
}

static void test_scan_start(void **state)
{
    struct fixture *f = *state;
    struct collect c = {0};

    scan_fill(f->st);
    scan_into(f->st, "ns1/", "ns1/b", true, &c, 0);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.keys[0], "ns1/b");
    assert_string_equal(c.vals[0], "v-ns1/b");
    assert_string_equal(c.keys[1], "ns1/c");

    memset(&c, 0, sizeof c);
    scan_into(f->st, "ns1/", "ns1/bb", false, &c, 0);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.keys[0], "ns1/c");

    /* A start before the prefix starts at the prefix. */
    memset(&c, 0, sizeof c);
    scan_into(f->st, "ns1/", "a", false, &c, 0);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.keys[0], "ns1/a");

    /* A start past the prefix range visits nothing. */
    memset(&c, 0, sizeof c);
    scan_into(f->st, "ns1/", "ns2", false, &c, 0);
    assert_int_equal(c.n, 0);

    memset(&c, 0, sizeof c);
    scan_into(f->st, NULL, "ns10", false, &c, 0);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.keys[0], "ns10/x");
    assert_string_equal(c.keys[1], "ns2/a");
}

static void test_scan_stop_and_fail(void **state)
{
    struct fixture *f = *state;
    struct collect c = {.stop_after = 2};

    scan_fill(f->st);
    scan_into(f->st, "ns1/", NULL, true, &c, 0);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.keys[1], "ns1/b");

    memset(&c, 0, sizeof c);
    c.fail = true;
    scan_into(f->st, "ns1/", NULL, true, &c, -1);
    assert_int_equal(c.n, 0);
}

static void test_del_prefix(void **state)
{
    struct fixture *f = *state;
    struct kms_txn *txn = NULL;
    struct collect c = {0};
    size_t n = 99;

    scan_fill(f->st);
    assert_int_equal(kms_storage_txn_begin(f->st, true, &txn), 0);
    assert_int_equal(kms_storage_del_prefix(txn, KMS_DB_KEYS, "ns1/", 4, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(kms_storage_del_prefix(txn, KMS_DB_KEYS, "ns1/", 4, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(kms_storage_del_prefix(txn, KMS_DB_KEYS, "none", 4, NULL), 0);
    assert_int_equal(kms_storage_count(txn, KMS_DB_KEYS, &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(kms_storage_txn_commit(&txn), 0);

    scan_into(f->st, NULL, NULL, false, &c, 0);
    assert_int_equal(c.n, 4);
    assert_string_equal(c.keys[0], "ns0/z");
    assert_string_equal(c.keys[1], "ns1");
    assert_string_equal(c.keys[2], "ns10/x");
    assert_string_equal(c.keys[3], "ns2/a");

    /* A prefix delete of many records crossing page boundaries. */
    assert_int_equal(kms_storage_txn_begin(f->st, true, &txn), 0);
    for (int i = 0; i < 2000; i++) {
        char key[32];
        int len = snprintf(key, sizeof key, "bulk/%06d", i);
        assert_int_equal(kms_storage_put(txn, KMS_DB_KEYS, key, (size_t)len, key, (size_t)len), 0);
    }
    assert_int_equal(kms_storage_txn_commit(&txn), 0);
    assert_int_equal(kms_storage_txn_begin(f->st, true, &txn), 0);
    assert_int_equal(kms_storage_del_prefix(txn, KMS_DB_KEYS, "bulk/", 5, &n), 0);
    assert_int_equal(n, 2000);
    assert_int_equal(kms_storage_count(txn, KMS_DB_KEYS, &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(kms_storage_txn_commit(&txn), 0);

    /* The empty prefix deletes everything. */
    assert_int_equal(kms_storage_txn_begin(f->st, true, &txn), 0);
    assert_int_equal(kms_storage_del_prefix(txn, KMS_DB_KEYS, NULL, 0, &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(kms_storage_txn_commit(&txn), 0);
}

static void test_txn_abort(void **state)
{
    struct fixture *f = *state;
    struct kms_txn *txn = NULL;
    size_t n = 99;

    put_str(f->st, KMS_DB_KEYS, "kept", "v");
    assert_int_equal(kms_storage_txn_begin(f->st, true, &txn), 0);
    assert_int_equal(kms_storage_put(txn, KMS_DB_KEYS, "gone", 4, "v", 1), 0);
    assert_int_equal(kms_storage_put(txn, KMS_DB_ACCESSORS, "gone", 4, "v", 1), 0);
    assert_int_equal(kms_storage_del(txn, KMS_DB_KEYS, "kept", 4), 0);
    kms_storage_txn_abort(&txn);
    assert_null(txn);

    assert_int_equal(get_check(f->st, KMS_DB_KEYS, "gone", NULL), KMS_STORAGE_NOTFOUND);
    assert_int_equal(get_check(f->st, KMS_DB_ACCESSORS, "gone", NULL), KMS_STORAGE_NOTFOUND);
    assert_int_equal(get_check(f->st, KMS_DB_KEYS, "kept", "v"), 0);
    assert_int_equal(kms_storage_txn_begin(f->st, false, &txn), 0);
    assert_int_equal(kms_storage_count(txn, KMS_DB_ACCESSORS, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(kms_storage_count(txn, KMS_DB_KEYS, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(kms_storage_count(txn, KMS_DB_META, &n), 0);
    assert_int_equal(n, 1); /* seal_check */
    kms_storage_txn_abort(&txn);
}

static void test_large_value(void **state)
{
    struct fixture *f = *state;
    const size_t size = (size_t)1 << 20;
    struct kms_txn *txn = NULL;
    uint8_t *big = malloc(size), *val = NULL;
    size_t len = 0;

    assert_non_null(big);
    for (size_t i = 0; i < size; i++)
        big[i] = (uint8_t)(i * 31 + (i >> 8));
    assert_int_equal(kms_storage_txn_begin(f->st, true, &txn), 0);
    assert_int_equal(kms_storage_put(txn, KMS_DB_KMSKEYS, "big", 3, big, size), 0);
    assert_int_equal(kms_storage_txn_commit(&txn), 0);

    kms_storage_close(&f->st);
    f->st = open_store(f, NULL);
    assert_int_equal(kms_storage_txn_begin(f->st, false, &txn), 0);
    assert_int_equal(kms_storage_get(txn, KMS_DB_KMSKEYS, "big", 3, &val, &len), 0);
    kms_storage_txn_abort(&txn);
    assert_int_equal(len, size);
    assert_memory_equal(val, big, size);
    kms_free_wipe((void **)&val, len);
    free(big);
}

static void test_map_full(void **state)
{
    struct fixture *f = *state;
    struct kms_storage_opts opts = {.nosync = true, .create = true, .map_size = (size_t)256 << 10};
    struct kms_txn *txn = NULL;
    const size_t bigsize = (size_t)1 << 20;
    uint8_t *big = calloc(1, bigsize);
    uint8_t chunk[8192] = {0};
    char key[32];
    int i, rc = 0, len;

    assert_non_null(big);
    kms_storage_close(&f->st);
    nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    f->st = open_store(f, &opts);
    put_str(f->st, KMS_DB_KEYS, "before", "committed");

    /* One value larger than the whole map. */
    assert_int_equal(kms_storage_txn_begin(f->st, true, &txn), 0);
    assert_int_equal(kms_storage_put(txn, KMS_DB_KEYS, "big", 3, big, bigsize), -1);
    kms_storage_txn_abort(&txn);

    /* Many values in one transaction until the map is full. */
    assert_int_equal(kms_storage_txn_begin(f->st, true, &txn), 0);
    for (i = 0; i < 1000 && rc == 0; i++) {
        len = snprintf(key, sizeof key, "fill/%04d", i);
        rc = kms_storage_put(txn, KMS_DB_KEYS, key, (size_t)len, chunk, sizeof chunk);
    }
    assert_int_equal(rc, -1);
    assert_true(i > 1 && i < 1000);
    kms_storage_txn_abort(&txn);

    /* The store is as the last commit left it and still takes writes. */
    assert_int_equal(get_check(f->st, KMS_DB_KEYS, "before", "committed"), 0);
    assert_int_equal(get_check(f->st, KMS_DB_KEYS, "fill/0000", NULL), KMS_STORAGE_NOTFOUND);
    put_str(f->st, KMS_DB_KEYS, "after", "also committed");
    kms_storage_close(&f->st);
    f->st = open_store(f, &opts);
    assert_int_equal(get_check(f->st, KMS_DB_KEYS, "before", "committed"), 0);
    assert_int_equal(get_check(f->st, KMS_DB_KEYS, "after", "also committed"), 0);
    free(big);
}

/* ---- copy between stores (kmsd migrate) --------------------------------------------------- */

static struct kms_storage *open_lmdb_at(struct fixture *f, const char *sub, const uint8_t key[32])
{
    struct kms_storage_opts o = {.nosync = true, .create = true};
    struct kms_storage *st = NULL;
    struct kms_err err = {0};
    char path[128];

    snprintf(path, sizeof path, "%s/%s", f->dir, sub);
    if (kms_storage_open(path, key, &o, &st, &err) != 0)
        fail_msg("open %s: %s", path, err.msg);
    return st;
}

struct dump {
    char text[8192];
    size_t len;
    size_t n;
};

static int dump_cb(const uint8_t *key, size_t keylen, const uint8_t *val, size_t vallen, void *arg)
{
    struct dump *d = arg;

    assert_true(d->len + keylen + vallen + 4 < sizeof d->text);
    memcpy(d->text + d->len, key, keylen);
    d->len += keylen;
    d->text[d->len++] = '=';
    memcpy(d->text + d->len, val, vallen);
    d->len += vallen;
    d->text[d->len++] = ';';
    d->n++;
    return 0;
}

/* Every record of every database, keys and unsealed values, in order. */
static void dump_store(struct kms_storage *st, struct dump *d)
{
    struct kms_txn *txn = NULL;

    memset(d, 0, sizeof *d);
    assert_int_equal(kms_storage_txn_begin(st, false, &txn), 0);
    for (int db = 0; db < KMS_DB_COUNT_; db++) {
        assert_int_equal(kms_storage_scan(txn, (enum kms_db)db, NULL, 0, NULL, 0, true, dump_cb, d),
                         0);
        d->text[d->len++] = '|';
    }
    kms_storage_txn_abort(&txn);
}

static void fill_for_copy(struct kms_storage *st)
{
    static const uint8_t vkey[] = {'n', 's', '/', 'm', '/', 'k', '/', 0, 0, 0, 1};
    struct kms_txn *txn = NULL;
    char key[32], val[32];

    assert_int_equal(kms_storage_txn_begin(st, true, &txn), 0);
    for (int db = 0; db < KMS_DB_COUNT_; db++) {
        for (int i = 0; i < 3; i++) {
            int kl = snprintf(key, sizeof key, "%s/%d", db_names[db], i);
            int vl = snprintf(val, sizeof val, "value %d of %s", i, db_names[db]);
            assert_int_equal(
                kms_storage_put(txn, (enum kms_db)db, key, (size_t)kl, val, (size_t)vl), 0);
        }
    }
    assert_int_equal(kms_storage_put(txn, KMS_DB_KEY_VERSIONS, vkey, sizeof vkey, "", 0), 0);
    assert_int_equal(kms_storage_txn_commit(&txn), 0);
}

static void test_copy_between_stores(void **state)
{
    struct fixture *f = *state;
    struct kms_storage *src = open_lmdb_at(f, "src", f->key), *back = NULL, *other = NULL;
    struct dump a, b;
    struct kms_err err = {0};
    uint8_t otherkey[32];
    size_t n = 99;

    fill_for_copy(src);
    dump_store(src, &a);
    assert_int_equal(a.n, KMS_DB_COUNT_ * 3 + 2); /* + the seal check and the binary key */

    /* LMDB -> the fixture's store (LMDB, or PostgreSQL with KMS_TEST_PG_URL) */
    assert_int_equal(kms_storage_copy(src, f->st, &n, &err), 0);
    assert_int_equal(n, a.n);
    dump_store(f->st, &b);
    assert_int_equal(b.len, a.len);
    assert_memory_equal(b.text, a.text, a.len);

    /* a non-empty target is refused and left alone */
    assert_int_equal(kms_storage_copy(src, f->st, &n, &err), -1);
    assert_string_equal(err.msg, "the target store is not empty");
    assert_int_equal(n, 0);
    dump_store(f->st, &b);
    assert_int_equal(b.n, a.n);

    /* and back into a new LMDB store: the same records */
    back = open_lmdb_at(f, "back", f->key);
    assert_int_equal(kms_storage_copy(f->st, back, &n, &err), 0);
    dump_store(back, &b);
    assert_int_equal(b.len, a.len);
    assert_memory_equal(b.text, a.text, a.len);
    kms_storage_close(&back);

    /* stores under different seal keys */
    fill_key(otherkey, 9);
    other = open_lmdb_at(f, "other", otherkey);
    assert_int_equal(kms_storage_copy(src, other, &n, &err), -1);
    assert_string_equal(err.msg, "the two stores are open under different seal keys");
    kms_storage_close(&other);
    kms_storage_close(&src);
}

/* A record that does not open fails the copy, and the target receives nothing. */
static void test_copy_tampered_source(void **state)
{
    struct fixture *f = *state;
    struct kms_storage *src = open_lmdb_at(f, "src", f->key);
    struct flip_arg fa = {.key = "keys/1", .pos = 20};
    struct kms_err err = {0};
    char path[128];
    struct dump d;
    size_t n = 99;

    fill_for_copy(src);
    kms_storage_close(&src);
    snprintf(path, sizeof path, "%s/src", f->dir);
    raw_edit(path, "keys", flip_byte, &fa);
    src = open_lmdb_at(f, "src", f->key);
    assert_int_equal(kms_storage_copy(src, f->st, &n, &err), -1);
    assert_non_null(strstr(err.msg, "cannot copy database keys"));
    assert_int_equal(n, 0);
    dump_store(f->st, &d);
    assert_int_equal(d.n, 1); /* its own seal check only */
    kms_storage_close(&src);
}

/* ---- PostgreSQL only --------------------------------------------------------------------- */

/* A statement that fails inside a write transaction fails the commit: nothing of it lands. */
static void test_pg_failed_statement_rolls_back(void **state)
{
    struct fixture *f = *state;
    struct kms_txn *txn = NULL;
    uint8_t big[300] = {0};

    put_str(f->st, KMS_DB_KEYS, "kept", "v");
    pg_sqlf("ALTER TABLE kmsd_records ADD CONSTRAINT kms_test_small "
            "CHECK (octet_length(value) < 200)");
    assert_int_equal(kms_storage_txn_begin(f->st, true, &txn), 0);
    assert_int_equal(kms_storage_put(txn, KMS_DB_KEYS, "a", 1, "small", 5), 0);
    assert_int_equal(kms_storage_del(txn, KMS_DB_KEYS, "kept", 4), 0);
    assert_int_equal(kms_storage_put(txn, KMS_DB_KEYS, "b", 1, big, sizeof big), -1);
    /* Even a caller that ignores the failure cannot commit the rest. */
    assert_int_equal(kms_storage_put(txn, KMS_DB_KEYS, "c", 1, "small", 5), -1);
    assert_int_equal(kms_storage_txn_commit(&txn), -1);
    assert_null(txn);
    assert_int_equal(get_check(f->st, KMS_DB_KEYS, "a", NULL), KMS_STORAGE_NOTFOUND);
    assert_int_equal(get_check(f->st, KMS_DB_KEYS, "kept", "v"), 0);

    /* The store still takes writes. */
    pg_sqlf("ALTER TABLE kmsd_records DROP CONSTRAINT kms_test_small");
    put_str(f->st, KMS_DB_KEYS, "after", "ok");
    assert_int_equal(get_check(f->st, KMS_DB_KEYS, "after", "ok"), 0);
}

struct writer_arg {
    struct kms_storage *st;
    int rc;
    char seen[16];
};

static void *second_writer(void *p)
{
    struct writer_arg *w = p;
    struct kms_txn *txn = NULL;
    uint8_t *val = NULL;
    size_t len = 0;

    w->rc = -1;
    if (kms_storage_txn_begin(w->st, true, &txn) != 0)
        return NULL;
    if (kms_storage_get(txn, KMS_DB_KEYS, "x", 1, &val, &len) == 0 && len < sizeof w->seen)
        memcpy(w->seen, val, len);
    kms_free_wipe((void **)&val, len);
    if (kms_storage_put(txn, KMS_DB_KEYS, "y", 1, "2", 1) != 0) {
        kms_storage_txn_abort(&txn);
        return NULL;
    }
    w->rc = kms_storage_txn_commit(&txn);
    return NULL;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* Two stores (two processes' worth of connections) racing to create one record. */
struct racer {
    struct kms_storage *st;
    pthread_barrier_t *go;
    char mine[8];
    char got[8];
    int rc;
};

static void *race_put_if_absent(void *p)
{
    struct racer *r = p;
    struct kms_txn *txn = NULL;
    uint8_t *cur = NULL;
    size_t len = 0;

    r->rc = -1;
    pthread_barrier_wait(r->go);
    if (kms_storage_txn_begin(r->st, true, &txn) != 0)
        return NULL;
    int g = kms_storage_put_if_absent(txn, KMS_DB_META, "salt", 4, r->mine, strlen(r->mine), &cur,
                                      &len);
    if (g == 0 && kms_storage_txn_commit(&txn) == 0) {
        memcpy(r->got, r->mine, strlen(r->mine) + 1);
        r->rc = 0;
    } else if (g == 1 && len < sizeof r->got) {
        memcpy(r->got, cur, len);
        r->got[len] = '\0';
        r->rc = 1;
    }
    kms_free_wipe((void **)&cur, len);
    kms_storage_txn_abort(&txn);
    return NULL;
}

static void test_pg_put_if_absent_race(void **state)
{
    struct fixture *f = *state;
    pthread_barrier_t go;
    struct racer r[2];
    pthread_t th[2];

    for (int round = 0; round < 5; round++) {
        memset(r, 0, sizeof r);
        assert_int_equal(pthread_barrier_init(&go, NULL, 2), 0);
        for (int i = 0; i < 2; i++) {
            r[i].st = i == 0 ? f->st : open_store(f, NULL);
            r[i].go = &go;
            snprintf(r[i].mine, sizeof r[i].mine, "r%d-%d", round, i);
        }
        for (int i = 0; i < 2; i++)
            assert_int_equal(pthread_create(&th[i], NULL, race_put_if_absent, &r[i]), 0);
        for (int i = 0; i < 2; i++)
            assert_int_equal(pthread_join(th[i], NULL), 0);
        pthread_barrier_destroy(&go);
        /* one inserted, the other got the same value back */
        assert_int_equal(r[0].rc + r[1].rc, 1);
        assert_string_equal(r[0].got, r[1].got);
        assert_int_equal(get_check(f->st, KMS_DB_META, "salt", r[0].got), 0);
        kms_storage_close(&r[1].st);
        /* the next round starts without the record */
        struct kms_txn *txn = NULL;
        assert_int_equal(kms_storage_txn_begin(f->st, true, &txn), 0);
        assert_int_equal(kms_storage_del(txn, KMS_DB_META, "salt", 4), 0);
        assert_int_equal(kms_storage_txn_commit(&txn), 0);
    }
}

/* Two stores on one database (two replicas): one write transaction at a time across both. */
static void test_pg_writers_serialised(void **state)
{
    struct fixture *f = *state;
    struct writer_arg w = {0};
    struct kms_txn *txn = NULL;
    pthread_t th;
    char *waiting = NULL;
    int i;

    w.st = open_store(f, NULL);
    assert_int_equal(kms_storage_txn_begin(f->st, true, &txn), 0);
    assert_int_equal(kms_storage_put(txn, KMS_DB_KEYS, "x", 1, "1", 1), 0);
    assert_int_equal(pthread_create(&th, NULL, second_writer, &w), 0);
    /* Wait (with a deadline) until the second writer blocks on the write lock. */
    for (i = 0; i < 1000; i++) {
        waiting = pg_sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND "
                         "NOT granted");
        if (strcmp(waiting, "1") == 0)
            break;
        free(waiting);
        waiting = NULL;
        sleep_ms(10);
    }
    assert_non_null(waiting);
    free(waiting);
    assert_int_equal(kms_storage_txn_commit(&txn), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(w.rc, 0);
    /* It began after the first committed, so it saw x. */
    assert_string_equal(w.seen, "1");
    assert_int_equal(get_check(f->st, KMS_DB_KEYS, "y", "2"), 0);
    kms_storage_close(&w.st);
}

/* Connections the server closed while idle (restart, idle_session_timeout) are replaced. */
static void test_pg_reconnect(void **state)
{
    struct fixture *f = *state;
    char *left = NULL;
    int i;

    put_str(f->st, KMS_DB_KEYS, "k", "v1");
    assert_int_equal(get_check(f->st, KMS_DB_KEYS, "k", "v1"), 0);
    pg_sqlf("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = "
            "'kmsd'");
    for (i = 0; i < 1000; i++) {
        left = pg_sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'kmsd'");
        if (strcmp(left, "0") == 0)
            break;
        free(left);
        left = NULL;
        sleep_ms(10);
    }
    assert_non_null(left);
    free(left);
    assert_int_equal(get_check(f->st, KMS_DB_KEYS, "k", "v1"), 0);
    put_str(f->st, KMS_DB_KEYS, "k", "v2");
    assert_int_equal(get_check(f->st, KMS_DB_KEYS, "k", "v2"), 0);
}

/* A refused connection fails the open with libpq's reason, never with the password. */
static void test_pg_open_errors(void **state)
{
    struct fixture *f = *state;
    struct kms_storage_opts opts = {.backend = KMS_STORAGE_POSTGRESQL,
                                    .pg_password = "hunter2-opt"};
    struct kms_storage *st = NULL;
    struct kms_err err = {0};
    char url[256];

    snprintf(url, sizeof url, "host=%s/nosocket port=5432 user=kmsd dbname=kmsd", f->dir);
    assert_int_equal(kms_storage_open(url, f->key, &opts, &st, &err), -1);
    assert_null(st);
    assert_int_equal(err.status, 500);
    assert_non_null(strstr(err.msg, "cannot connect to PostgreSQL: "));
    assert_null(strstr(err.msg, "hunter2"));

    opts.pg_password = NULL;
    snprintf(url, sizeof url, "postgresql://kmsd:hunter2-url@/kmsd?host=%s/nosocket", f->dir);
    assert_int_equal(kms_storage_open(url, f->key, &opts, &st, &err), -1);
    assert_non_null(strstr(err.msg, "cannot connect to PostgreSQL: "));
    assert_null(strstr(err.msg, "hunter2"));

    /* A password given with the options is used (trust authentication ignores it). */
    opts.pg_password = "unused";
    assert_int_equal(kms_storage_open(pg_url, f->key, &opts, &st, &err), 0);
    assert_string_equal(kms_storage_backend_name(st), "postgresql");
    kms_storage_close(&st);
}

/* An exclusive store: a second one on the same database is refused until the first closes. */
static void test_pg_exclusive(void **state)
{
    struct fixture *f = *state;
    struct kms_storage_opts opts = {.backend = KMS_STORAGE_POSTGRESQL, .pg_exclusive = true};
    struct kms_storage *a = NULL, *b = NULL;
    struct kms_err err = {0};

    assert_int_equal(kms_storage_open(pg_url, f->key, &opts, &a, &err), 0);
    assert_int_equal(kms_storage_open(pg_url, f->key, &opts, &b, &err), -1);
    assert_null(b);
    assert_string_equal(err.msg, "another kmsd is using this PostgreSQL database");
    /* A store opened without the option is not locked out (the unit tests' second writer). */
    kms_storage_close(&a);
    /* the closed session's lock goes when its backend has ended, which PostgreSQL does after
     * the close returned: poll with a deadline */
    int rc = -1;
    for (int i = 0; i < 200 && rc != 0; i++) {
        rc = kms_storage_open(pg_url, f->key, &opts, &b, &err);
        if (rc != 0) {
            assert_string_equal(err.msg, "another kmsd is using this PostgreSQL database");
            usleep(50 * 1000);
        }
    }
    assert_int_equal(rc, 0);
    kms_storage_close(&b);
}

/*
 * An exclusive store whose write session PostgreSQL ended (restart, pg_terminate_backend) lost
 * the database lock for good: kms_storage_exclusive_check says so, no write reconnects (a second
 * store opened meanwhile writes alone), and that second store is let in.
 */
static void test_pg_exclusive_lost(void **state)
{
    struct fixture *f = *state;
    struct kms_storage_opts opts = {.backend = KMS_STORAGE_POSTGRESQL, .pg_exclusive = true};
    struct kms_storage *a = NULL, *b = NULL;
    struct kms_txn *txn = NULL;
    struct kms_err err = {0};
    int rc = 0;

    assert_int_equal(kms_storage_open(pg_url, f->key, &opts, &a, &err), 0);
    put_str(a, KMS_DB_KEYS, "k", "v1");
    assert_int_equal(kms_storage_exclusive_check(a), 0);
    pg_sqlf("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = "
            "'kmsd'");
    /* the session's end reaches the client a moment after the call returned: poll */
    for (int i = 0; i < 200 && rc == 0; i++) {
        if ((rc = kms_storage_exclusive_check(a)) == 0) {
            usleep(50 * 1000);
        }
    }
    assert_int_equal(rc, -1);
    assert_int_equal(kms_storage_exclusive_check(a), -1);
    assert_int_equal(kms_storage_open(pg_url, f->key, &opts, &b, &err), 0);
    put_str(b, KMS_DB_KEYS, "k", "v2");
    /* the first store writes nothing more, not even once b has gone */
    assert_int_not_equal(kms_storage_txn_begin(a, true, &txn), 0);
    assert_null(txn);
    kms_storage_close(&b);
    assert_int_not_equal(kms_storage_txn_begin(a, true, &txn), 0);
    assert_int_equal(get_check(a, KMS_DB_KEYS, "k", "v2"), 0);
    /* a store without the option has nothing to lose */
    assert_int_equal(kms_storage_exclusive_check(f->st), 0);
    kms_storage_close(&a);

    /* an idle_session_timeout set for the role does not end the lock's session: well past it,
     * the store still holds the database */
    pg_sqlf("ALTER ROLE CURRENT_USER SET idle_session_timeout = 100");
    rc = kms_storage_open(pg_url, f->key, &opts, &a, &err);
    pg_sqlf("ALTER ROLE CURRENT_USER RESET idle_session_timeout");
    assert_int_equal(rc, 0);
    sleep_ms(600);
    assert_int_equal(kms_storage_exclusive_check(a), 0);
    put_str(a, KMS_DB_KEYS, "k", "v3");
    kms_storage_close(&a);
}

/* ---- seal key files ---------------------------------------------------------------------- */

static void write_key_file(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

static void test_seal_key_file_modes(void **state)
{
    struct fixture *f = *state;
    struct kms_err err = {0};
    uint8_t key[32];
    char path[128], want[512];

    snprintf(path, sizeof path, "%s/seal.key", f->dir);
    write_key_file(path, f->key, 32, 0644);
    assert_int_equal(kms_seal_key_load_file(path, key, &err), -1);
    snprintf(want, sizeof want,
             "seal key file %s must not be accessible by group or others (mode 0644); run "
             "chmod 600 %s",
             path, path);
    assert_string_equal(err.msg, want);

    write_key_file(path, f->key, 32, 0640);
    assert_int_equal(kms_seal_key_load_file(path, key, &err), -1);
    assert_non_null(strstr(err.msg, "(mode 0640)"));
    write_key_file(path, f->key, 32, 0604);
    assert_int_equal(kms_seal_key_load_file(path, key, &err), -1);

    write_key_file(path, f->key, 32, 0600);
    assert_int_equal(kms_seal_key_load_file(path, key, &err), 0);
    assert_memory_equal(key, f->key, 32);
    write_key_file(path, f->key, 32, 0400);
    assert_int_equal(kms_seal_key_load_file(path, key, &err), 0);
    assert_memory_equal(key, f->key, 32);

    snprintf(path, sizeof path, "%s/absent.key", f->dir);
    assert_int_equal(kms_seal_key_load_file(path, key, &err), -1);
    assert_non_null(strstr(err.msg, path));
}

static void test_seal_key_encodings(void **state)
{
    struct fixture *f = *state;
    struct kms_err err = {0};
    uint8_t key[32], want[32];
    char path[128], text[128], big[2000];

    for (size_t i = 0; i < 32; i++)
        want[i] = (uint8_t)(0xf0 - i);
    snprintf(path, sizeof path, "%s/seal.key", f->dir);

    /* Raw bytes, including whitespace bytes that must not be trimmed. */
    want[0] = ' ';
    want[31] = '\n';
    write_key_file(path, want, 32, 0600);
    assert_int_equal(kms_seal_key_load_file(path, key, &err), 0);
    assert_memory_equal(key, want, 32);

    /* 64 hex characters, any case, with surrounding whitespace. */
    for (size_t i = 0; i < 32; i++)
        snprintf(text + 2 * i, 3, "%02x", want[i]);
    {
        char buf[80];
        int n = snprintf(buf, sizeof buf, "  %s\n", text);
        write_key_file(path, buf, (size_t)n, 0600);
    }
    memset(key, 0, sizeof key);
    assert_int_equal(kms_seal_key_load_file(path, key, &err), 0);
    assert_memory_equal(key, want, 32);
    assert_int_equal(kms_seal_key_parse(text, key, &err), 0);
    assert_memory_equal(key, want, 32);

    /* Base64 of 32 bytes. */
    kms_b64_encode(want, 32, text);
    assert_int_equal(strlen(text), 44);
    {
        char buf[80];
        int n = snprintf(buf, sizeof buf, "%s\r\n", text);
        write_key_file(path, buf, (size_t)n, 0600);
    }
    memset(key, 0, sizeof key);
    assert_int_equal(kms_seal_key_load_file(path, key, &err), 0);
    assert_memory_equal(key, want, 32);
    memset(key, 0, sizeof key);
    assert_int_equal(kms_seal_key_parse(text, key, &err), 0);
    assert_memory_equal(key, want, 32);

    /* Wrong sizes and encodings. */
    write_key_file(path, want, 31, 0600);
    assert_int_equal(kms_seal_key_load_file(path, key, &err), -1);
    assert_non_null(strstr(err.msg, path));
    kms_b64_encode(want, 31, text);
    assert_int_equal(kms_seal_key_parse(text, key, &err), -1);
    assert_int_equal(kms_seal_key_parse("", key, &err), -1);
    assert_int_equal(
        kms_seal_key_parse("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg", key,
                           &err),
        -1);
    assert_int_equal(
        kms_seal_key_parse("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd", key,
                           &err),
        -1);
    memset(big, 'A', sizeof big);
    write_key_file(path, big, sizeof big, 0600);
    assert_int_equal(kms_seal_key_load_file(path, key, &err), -1);
    assert_non_null(strstr(err.msg, "1 KiB"));
}

/* ---- leadership (docs/ha.md) ------------------------------------------------------------- */

static bool guard_answer;

static bool test_guard(void *arg)
{
    (void)arg;
    return guard_answer;
}

static struct kms_storage *open_ha_store(struct fixture *f)
{
    struct kms_storage_opts o = {.nosync = true, .pg_ha_lease_ms = 2000};

    return open_store(f, &o);
}

static bool write_one(struct kms_storage *st, const char *key)
{
    struct kms_txn *txn = NULL;

    if (kms_storage_txn_begin(st, true, &txn) != 0)
        return false;
    assert_int_equal(kms_storage_put(txn, KMS_DB_META, key, strlen(key), "v", 1), 0);
    return kms_storage_txn_commit(&txn) == 0;
}

/*
 * Two replicas' stores on one database: one takes the leader lock, the other cannot; once
 * armed, only the holder writes; the leader record round-trips; the commit guard refuses a
 * COMMIT (nothing lands); a holder whose session PostgreSQL ended has lost the lock for good
 * (ping fails, writes fail) and the other takes it; a release is recorded.
 */
static void test_pg_leader_lock(void **state)
{
    struct fixture *f = *state;
    struct kms_storage *a = open_ha_store(f), *b = open_ha_store(f);
    struct kms_storage_leader l;
    bool got = true;
    char *pid;

    assert_int_equal(kms_storage_leader_read(a, &l), 0);
    assert_false(l.present);
    assert_int_equal(kms_storage_leader_try(a, &got), 0);
    assert_true(got);
    assert_int_equal(kms_storage_leader_try(a, &got), 0); /* held: still true */
    assert_true(got);
    assert_int_equal(kms_storage_leader_try(b, &got), 0);
    assert_false(got);
    /* the exclusive (non-HA) mode uses the same lock: refused while a replica holds it */
    {
        struct kms_storage_opts o = {.nosync = true, .pg_exclusive = true};
        struct kms_storage *x = NULL;
        struct kms_err err = {0};

        o.backend = KMS_STORAGE_POSTGRESQL;
        assert_int_not_equal(kms_storage_open(pg_url, f->key, &o, &x, &err), 0);
        assert_non_null(strstr(err.msg, "another kmsd is using this PostgreSQL database"));
    }
    assert_int_equal(kms_storage_leader_ping(a), 0);
    assert_int_not_equal(kms_storage_leader_ping(b), 0);
    assert_int_not_equal(kms_storage_leader_publish(b, "b", "http://b:1", 2000), 0);
    assert_int_equal(kms_storage_leader_publish(a, "a", "http://a:1", 2000), 0);
    assert_int_equal(kms_storage_leader_read(b, &l), 0);
    assert_true(l.present);
    assert_false(l.released);
    assert_string_equal(l.replica, "a");
    assert_string_equal(l.api_addr, "http://a:1");
    assert_int_equal(l.lease_ms, 2000);

    assert_true(write_one(a, "ha-a"));
    assert_false(write_one(b, "ha-b")); /* armed, without the lock */
    assert_int_equal(get_check(b, KMS_DB_META, "ha-a", "v"), 0);
    assert_int_equal(get_check(b, KMS_DB_META, "ha-b", NULL), KMS_STORAGE_NOTFOUND);

    guard_answer = false;
    kms_storage_set_commit_guard(a, test_guard, NULL);
    assert_false(write_one(a, "ha-guarded"));
    assert_int_equal(get_check(a, KMS_DB_META, "ha-guarded", NULL), KMS_STORAGE_NOTFOUND);
    guard_answer = true;
    assert_true(write_one(a, "ha-guarded"));
    kms_storage_set_commit_guard(a, NULL, NULL);

    /* PostgreSQL ends a's session (as its idle_session_timeout would): the lock is gone */
    pid = pg_sql("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                 "AND granted AND classid = 1802335076 AND objid = 1936682085");
    assert_string_equal(pid, "t");
    free(pid);
    assert_int_not_equal(kms_storage_leader_ping(a), 0);
    assert_false(write_one(a, "ha-after")); /* never on a replacement session */
    assert_int_equal(kms_storage_leader_try(b, &got), 0);
    assert_true(got);
    assert_true(write_one(b, "ha-b"));
    assert_int_equal(kms_storage_leader_try(a, &got), 0); /* a reconnects, b holds it */
    assert_false(got);
    assert_int_equal(kms_storage_leader_release(a, "a"), -1); /* not holding */
    assert_int_equal(kms_storage_leader_publish(b, "b", "http://b:1", 3000), 0);
    assert_int_equal(kms_storage_leader_release(b, "b"), 0);
    assert_int_equal(kms_storage_leader_read(a, &l), 0);
    assert_true(l.released);
    assert_string_equal(l.replica, "b");
    assert_int_equal(l.lease_ms, 3000);
    assert_false(write_one(b, "ha-released"));
    assert_int_equal(kms_storage_leader_try(a, &got), 0);
    assert_true(got);
    /* a holder that never published unlocks without touching the record */
    assert_int_equal(kms_storage_leader_release(a, NULL), 0);
    assert_int_equal(kms_storage_leader_read(b, &l), 0);
    assert_true(l.released);
    assert_string_equal(l.replica, "b");
    assert_int_equal(kms_storage_leader_try(b, &got), 0);
    assert_true(got);
    assert_int_equal(kms_storage_leader_publish(b, "b", "http://b:1", 3000), 0);
    assert_int_equal(kms_storage_leader_release(b, NULL), 0);
    assert_int_equal(kms_storage_leader_read(a, &l), 0);
    assert_false(l.released); /* b published and unlocked without marking: next one waits */
    kms_storage_close(&b);
    kms_storage_close(&a);
}

/*
 * The leader record carries a MAC under the seal key: a row changed in the database by someone
 * without it (a forwarding address pointing elsewhere, a faked release, a row from before the
 * MAC) reads as forged with every field cleared; the holder's next publish repairs it.
 */
static void test_pg_leader_record_mac(void **state)
{
    struct fixture *f = *state;
    struct kms_storage *a = open_ha_store(f), *b = open_ha_store(f);
    struct kms_storage_leader l;
    bool got = false;
    char *mac;

    assert_int_equal(kms_storage_leader_try(a, &got), 0);
    assert_true(got);
    assert_int_equal(kms_storage_leader_publish(a, "a", "http://a:1", 2000), 0);
    assert_int_equal(kms_storage_leader_read(b, &l), 0);
    assert_true(l.present);
    assert_false(l.forged);
    mac = pg_sql("SELECT mac FROM kmsd_leader WHERE id = 1");
    assert_int_equal(strlen(mac), 64);
    free(mac);

    pg_sqlf("UPDATE kmsd_leader SET api_addr = 'http://attacker:8200'");
    assert_int_equal(kms_storage_leader_read(b, &l), 0);
    assert_true(l.present);
    assert_true(l.forged);
    assert_false(l.released);
    assert_string_equal(l.api_addr, "");
    assert_string_equal(l.replica, "");
    assert_int_equal(l.lease_ms, 0);

    /* published again: good; then each field changed alone fails the check */
    assert_int_equal(kms_storage_leader_publish(a, "a", "http://a:1", 2000), 0);
    assert_int_equal(kms_storage_leader_read(b, &l), 0);
    assert_false(l.forged);
    assert_string_equal(l.api_addr, "http://a:1");
    const char *tamper[] = {"released = true", "lease_ms = 1", "replica = 'b'", "mac = ''",
                            "mac = upper(mac)"};
    for (size_t i = 0; i < sizeof tamper / sizeof tamper[0]; i++) {
        mac = pg_sql("SELECT mac FROM kmsd_leader WHERE id = 1");
        pg_sqlf("UPDATE kmsd_leader SET %s", tamper[i]);
        assert_int_equal(kms_storage_leader_read(b, &l), 0);
        assert_true(l.present);
        assert_true(l.forged);
        assert_false(l.released);
        pg_sqlf("UPDATE kmsd_leader SET replica = 'a', api_addr = 'http://a:1', lease_ms = 2000, "
                "released = false, mac = '%s'",
                mac);
        free(mac);
        assert_int_equal(kms_storage_leader_read(b, &l), 0);
        assert_false(l.forged);
    }
    /* the holder's own release is accepted */
    assert_int_equal(kms_storage_leader_release(a, "a"), 0);
    assert_int_equal(kms_storage_leader_read(b, &l), 0);
    assert_false(l.forged);
    assert_true(l.released);
    assert_string_equal(l.replica, "a");
    kms_storage_close(&b);
    kms_storage_close(&a);
}

/* The session of a replica stuck past its lease is ended by PostgreSQL itself. */
static void test_pg_leader_idle_timeout(void **state)
{
    struct fixture *f = *state;
    struct kms_storage_opts o = {.nosync = true, .pg_ha_lease_ms = 300};
    struct kms_storage *a = open_store(f, &o);
    bool got = false;
    char *n;

    assert_int_equal(kms_storage_leader_try(a, &got), 0);
    assert_true(got);
    /* poll: the lock is released once the idle session was ended (about 300 ms) */
    for (int i = 0; i < 100; i++) {
        n = pg_sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
                   "classid = 1802335076 AND objid = 1936682085");
        bool gone = strcmp(n, "0") == 0;
        free(n);
        if (gone)
            break;
        assert_true(i < 99);
        usleep(100 * 1000);
    }
    assert_int_not_equal(kms_storage_leader_ping(a), 0);
    kms_storage_close(&a);
}

/* LMDB has no leadership. */
static void test_leader_unsupported(void **state)
{
    struct fixture *f = *state;
    struct kms_storage_leader l;
    bool got = true;

    assert_int_equal(kms_storage_leader_try(f->st, &got), -1);
    assert_false(got);
    assert_int_equal(kms_storage_leader_ping(f->st), -1);
    assert_int_equal(kms_storage_leader_publish(f->st, "a", "http://a:1", 1000), -1);
    assert_int_equal(kms_storage_leader_release(f->st, "a"), -1);
    assert_int_equal(kms_storage_leader_read(f->st, &l), -1);
}

int main(void)
{
    const struct CMUnitTest common[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip_every_db, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overwrite_and_empty_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_if_absent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_found, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_persistence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_durable_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_seal_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_read_txns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_txn_reuse_sees_commits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_read_txns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readers_and_writer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tamper_flipped_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tamper_moved_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tamper_fails_scan, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scan_order_and_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scan_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scan_stop_and_fail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_del_prefix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_txn_abort, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_copy_between_stores, setup, teardown),
        cmocka_unit_test_setup_teardown(test_copy_tampered_source, setup, teardown),
        cmocka_unit_test_setup_teardown(test_existing_store, setup, teardown),
    };
    const struct CMUnitTest lmdb_only[] = {
        cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_readers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_modes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_map_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kept_read_txn_holds_no_snapshot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seal_key_file_modes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seal_key_encodings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_leader_unsupported, setup, teardown),
    };
    const struct CMUnitTest pg_only[] = {
        cmocka_unit_test_setup_teardown(test_pg_failed_statement_rolls_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_writers_serialised, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_put_if_absent_race, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_reconnect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_open_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_exclusive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_exclusive_lost, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_leader_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_leader_idle_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_leader_record_mac, setup, teardown),
    };
    int failed;

    pg_url = getenv("KMS_TEST_PG_URL");
    if (pg_url != NULL && pg_url[0] == '\0')
        pg_url = NULL;
    failed =
        cmocka_run_group_tests_name(pg_url != NULL ? "postgresql" : "lmdb", common, NULL, NULL);
    if (pg_url != NULL)
        failed += cmocka_run_group_tests_name("postgresql only", pg_only, NULL, NULL);
    else
        failed += cmocka_run_group_tests_name("lmdb only", lmdb_only, NULL, NULL);
    return failed;
}
