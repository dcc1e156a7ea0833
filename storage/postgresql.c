/*
 * postgresql.c - the PostgreSQL backend (libpq): every record is one row of one table,
 *
 *     kmsd_records (db smallint, key bytea, value bytea, PRIMARY KEY (db, key))
 *
 * where value is the record sealed by storage.c: PostgreSQL never sees a plaintext value.
 * bytea compares bytewise with a proper prefix first, the order LMDB keeps, so a prefix scan
 * is the index range key >= prefix AND key < successor(prefix) read in ORDER BY key.
 *
 * Design notes
 *
 * - Connections. One write connection, used by one write transaction at a time (a mutex held
 *   from begin to commit or abort), and a pool of read connections, one per live read
 *   transaction, grown on demand and kept idle between transactions. libpq connections are
 *   not shared between threads while a transaction uses them. A connection that broke is
 *   closed when its transaction ends; a begin on a connection the server closed while it was
 *   idle reconnects once, since nothing of the transaction has happened yet.
 *
 * - Atomicity as LMDB gives it. A write transaction is BEGIN ... COMMIT on the write
 *   connection and its first statement takes a transaction-scoped advisory lock
 *   (pg_advisory_xact_lock), so one write transaction runs at a time across every process on
 *   the database, as LMDB serialises its writers; the lock goes with the transaction. A
 *   failed statement aborts the PostgreSQL transaction, and COMMIT then answers ROLLBACK,
 *   which commit reports as a failure: a transaction commits whole or not at all. A read
 *   transaction is REPEATABLE READ READ ONLY and takes its snapshot when it begins (a first
 *   SELECT in the same round trip as BEGIN), so it sees what was committed before it began,
 *   as an LMDB read transaction does.
 *
 * - Durability: every connection sets synchronous_commit=on (off with `nosync`), so COMMIT
 *   returns once the commit record is flushed, and, with synchronous standbys configured,
 *   replicated (docs/ha.md says what the promise needs). A COMMIT whose answer is lost
 *   (connection broken) is reported as a failure: kmsd never acknowledges a write it could
 *   not see committed.
 *
 * - Statements are prepared once per connection (one round trip of PREPAREs); parameters and
 *   results travel in binary, so keys and sealed values are bytes, never escaped text.
 *
 * - Exclusive stores (opts->pg_exclusive, what the server asks for until replicas have
 *   leadership): the write connection holds a session advisory lock, taken with
 *   pg_try_advisory_lock when it connects, so a second kmsd on the same database fails to
 *   open. The lock dies with the connection (PostgreSQL releases it when the session ends),
 *   and then another kmsd may open the database and write: the write connection is never
 *   replaced (a new session that got the lock back would write over the other's records,
 *   judged by this process's stale caches), every later write fails, and
 *   kms_storage_exclusive_check reports the loss (the server stops, docs/ha.md).
 *
 * - Leadership (opts->pg_ha_lease_ms > 0, docs/ha.md): the leader lock is the exclusive
 *   store's session advisory lock (so a non-HA kmsd, `kmsd migrate` and an HA replica never
 *   write at once), taken by kms_storage_leader_try on the write connection and remembered on
 *   that connection (pg_conn.leader). Once the first leader_try ran (opening the store writes
 *   its seal check record before), a write transaction needs it: a write connection that
 *   broke is not replaced by a write (the new session would hold no lock), only by the next
 *   leader_try, which makes the replica a candidate again. The write connection sets
 *   idle_session_timeout and idle_in_transaction_session_timeout to the lease, so PostgreSQL
 *   ends the session of a holder that stopped talking (SIGSTOP, partition) one lease after
 *   its last statement, and the lock with it. The leader record (table kmsd_leader, one row)
 *   names the holder, its advertised address and lease, and whether it released cleanly.
 *
 * - The password (opts->pg_password) is copied into a buffer wiped on close and handed to
 *   libpq as the "password" keyword; messages carry libpq's error text, which never contains
 *   it, and never the conninfo string (which may). When the conninfo string holds a password
 *   itself (or cannot be parsed), the quoted parts of libpq's text are left out: libpq quotes
 *   what it could not parse or reach, and with a '%' or an '@' of the password not
 *   percent-encoded that is a piece of the password ("invalid percent-encoded token: ...",
 *   a host name "ss@host" from "user:pa@ss@host").
 */
#include "storage/storage_int.h"
#include "storage/pq_dl.h" /* the PQ* calls below go through dlopen'd pointers */

#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define PG_TABLE "kmsd_records"
#define PG_LEADER_TABLE "kmsd_leader"
/* pg_advisory_xact_lock key that serialises write transactions: "kmsdwrit" as a bigint. */
#define PG_WRITE_LOCK "7740970209857661300"
/* pg_try_advisory_lock key of an exclusive store (opts->pg_exclusive): "kmsdsole". */
#define PG_SOLE_LOCK "7740970209790356581"
#define PG_SCAN_PAGE "256"
#define PG_SCAN_PAGE_ROWS 256
#define PG_MAX_READERS 256 /* read connections open at once */

struct pg_conn {
    PGconn *c;
    bool leader; /* this session holds the leader lock (PG_SOLE_LOCK) */
    struct pg_conn *next;
};

struct kms_backend {
    char *conninfo;
    char *password; /* NULL when libpq finds it itself */
    size_t passlen;
    bool nosync;
    bool exclusive;
    bool url_secret;        /* the conninfo string holds a password, or cannot be parsed */
    int64_t ha_lease_ms;    /* > 0: leadership mode */
    bool ha_armed;          /* a leader_try ran: from then on writes need the lock */
    char begin_leader[256]; /* BEGIN of the leader's write transactions (pg_begin_write_leader) */

    pthread_mutex_t write_mu; /* held by the write transaction, begin to end */
    struct pg_conn *writer;   /* NULL until (re)connected */

    pthread_mutex_t pool_mu;
    struct pg_conn *idle;
    size_t nreaders; /* open read connections, idle or in use */
};

struct kms_backend_txn {
    struct kms_backend *b;
    struct pg_conn *pc;
    bool write;
    PGresult *last; /* the result a borrowed get value points into */
};

/* The statements every connection prepares once. */
static const char pg_prepare_sql[] =
    "PREPARE kg(smallint, bytea) AS SELECT value FROM " PG_TABLE " WHERE db = $1 AND key = $2;"
    "PREPARE kp(smallint, bytea, bytea) AS INSERT INTO " PG_TABLE " (db, key, value) VALUES "
    "($1, $2, $3) ON CONFLICT (db, key) DO UPDATE SET value = EXCLUDED.value;"
    "PREPARE kn(smallint, bytea, bytea) AS INSERT INTO " PG_TABLE " (db, key, value) VALUES "
    "($1, $2, $3) ON CONFLICT (db, key) DO NOTHING;"
    "PREPARE kd(smallint, bytea) AS DELETE FROM " PG_TABLE " WHERE db = $1 AND key = $2;"
    "PREPARE kdr(smallint, bytea, bytea) AS DELETE FROM " PG_TABLE
    " WHERE db = $1 AND key >= $2 AND key < $3;"
    "PREPARE kdo(smallint, bytea) AS DELETE FROM " PG_TABLE " WHERE db = $1 AND key >= $2;"
    "PREPARE ksv(smallint, bytea, bytea) AS SELECT key, value FROM " PG_TABLE
    " WHERE db = $1 AND key >= $2 AND key < $3 ORDER BY key LIMIT " PG_SCAN_PAGE ";"
    "PREPARE ksvo(smallint, bytea) AS SELECT key, value FROM " PG_TABLE
    " WHERE db = $1 AND key >= $2 ORDER BY key LIMIT " PG_SCAN_PAGE ";"
    "PREPARE ksk(smallint, bytea, bytea) AS SELECT key FROM " PG_TABLE
    " WHERE db = $1 AND key >= $2 AND key < $3 ORDER BY key LIMIT " PG_SCAN_PAGE ";"
    "PREPARE ksko(smallint, bytea) AS SELECT key FROM " PG_TABLE
    " WHERE db = $1 AND key >= $2 ORDER BY key LIMIT " PG_SCAN_PAGE ";"
    "PREPARE kc(smallint) AS SELECT count(*) FROM " PG_TABLE " WHERE db = $1;";

static const char pg_schema_sql[] =
    "BEGIN; SELECT pg_advisory_xact_lock(" PG_WRITE_LOCK ");"
    "CREATE TABLE IF NOT EXISTS " PG_TABLE " (db smallint NOT NULL, key bytea NOT NULL, "
    "value bytea NOT NULL, PRIMARY KEY (db, key));"
    "CREATE TABLE IF NOT EXISTS " PG_LEADER_TABLE " (id smallint PRIMARY KEY CHECK (id = 1), "
    "replica text NOT NULL, api_addr text NOT NULL, lease_ms bigint NOT NULL, "
    "released boolean NOT NULL, since timestamptz NOT NULL DEFAULT now());"
    /* the record's MAC (storage.c), added to tables made before it existed */
    "ALTER TABLE " PG_LEADER_TABLE " ADD COLUMN IF NOT EXISTS mac text NOT NULL DEFAULT '';"
    "COMMIT";

/* ---- connections ------------------------------------------------------------------------- */

/*
 * The results of the statement just sent, with a deadline (a ping, or a read in HA mode, must
 * not hang on a partitioned network: PQexec would wait for TCP to give up, which a link that
 * drops packets without resetting never makes it do). The last result, or NULL on error or
 * when `ms` passed first; then the connection is shut down, so nothing after this statement
 * (a ROLLBACK, libpq draining the unanswered result) can block on it, and the pool drops it.
 */
static PGresult *pg_wait_within(PGconn *c, int64_t ms)
{
    struct timespec start, now;
    PGresult *r, *last = NULL;

    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        int64_t spent;
        struct pollfd pfd = {.fd = PQsocket(c), .events = POLLIN};
        int flushed = PQflush(c);

        if (flushed < 0)
            break;
        if (flushed == 1)
            pfd.events |= POLLOUT;
        if (!PQisBusy(c)) {
            while ((r = PQgetResult(c)) != NULL) {
                PQclear(last);
                last = r;
            }
            return last;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        spent =
            (int64_t)(now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (spent >= ms || poll(&pfd, 1, (int)(ms - spent)) <= 0)
            break;
        if ((pfd.revents & (POLLIN | POLLERR | POLLHUP)) != 0 && PQconsumeInput(c) != 1)
            break;
    }
    PQclear(last);
    if (PQsocket(c) >= 0)
        (void)shutdown(PQsocket(c), SHUT_RDWR);
    /* read to the end of the stream, so the connection is marked bad even when the whole
     * answer had arrived by now (libpq would otherwise hand it out below and keep its status
     * OK) */
    for (int i = 0; i < 64 && PQconsumeInput(c) == 1; i++) {
        /* data still queued is read first (Linux keeps it readable after SHUT_RD) */
    }
    while ((r = PQgetResult(c)) != NULL)
        PQclear(r);
    return NULL;
}

/* One statement with a deadline (pg_wait_within). */
static PGresult *pg_exec_within(PGconn *c, const char *sql, int64_t ms)
{
    if (PQsendQuery(c, sql) != 1)
        return NULL;
    return pg_wait_within(c, ms);
}

/* Run sql (one or more statements) and check the last result; 0 or -1. */
static int pg_exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType s = r != NULL ? PQresultStatus(r) : PGRES_FATAL_ERROR;

    PQclear(r);
    return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK ? 0 : -1;
}

/* pg_exec_ok within a lease in HA mode (pg_wait_within), for reads and writes alike. */
static int pg_lease_exec_ok(const struct kms_backend *b, PGconn *c, const char *sql)
{
    if (b->ha_lease_ms <= 0)
        return pg_exec_ok(c, sql);
    PGresult *r = pg_exec_within(c, sql, b->ha_lease_ms);
    ExecStatusType st = r != NULL ? PQresultStatus(r) : PGRES_FATAL_ERROR;

    PQclear(r);
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? 0 : -1;
}

/* libpq's message without its trailing newline; its quoted parts as "***" when the conninfo
 * string holds a password (see the top). */
static void pg_err(const struct kms_backend *b, struct kms_err *err, const char *what, PGconn *c)
{
    const char *m = c != NULL ? PQerrorMessage(c) : "out of memory";
    size_t n = strlen(m), o = 0;
    char safe[400];
    bool quoted = false;

    while (n > 0 && (m[n - 1] == '\n' || m[n - 1] == ' '))
        n--;
    if (!b->url_secret) {
        kms_err_set(err, 500, "%s: %.*s", what, (int)n, m);
        return;
    }
    for (size_t i = 0; i < n && o + 6 < sizeof safe; i++) {
        if (m[i] == '"' && !quoted) {
            memcpy(safe + o, "\"***", 4);
            o += 4;
        } else if (m[i] == '"') {
            safe[o++] = '"';
        } else if (!quoted) {
            safe[o++] = m[i];
        }
        quoted = m[i] == '"' ? !quoted : quoted;
    }
    if (quoted)
        safe[o++] = '"';
    safe[o] = '\0';
    kms_err_set(err, 500, "%s: %s", what, safe);
}

/* Whether the conninfo string carries a password of its own (or cannot be parsed, so that
 * nothing of it is known). */
static bool pg_url_secret(const char *conninfo)
{
    char *why = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &why);
    bool secret = opts == NULL;

    for (PQconninfoOption *o = opts; o != NULL && o->keyword != NULL; o++) {
        if (strcmp(o->keyword, "password") == 0 && o->val != NULL && o->val[0] != '\0')
            secret = true;
    }
    PQconninfoFree(opts);
    PQfreemem(why);
    return secret;
}

/* Server notices ("relation already exists, skipping") are not kmsd's to print. */
static void pg_notice_drop(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static void pg_conn_close(struct pg_conn *pc)
{
    if (pc == NULL)
        return;
    PQfinish(pc->c);
    free(pc);
}

/* A set-up statement of pg_connect (pg_lease_exec_ok); err names `what` and, when the lease
 * ran out, that PostgreSQL did not answer within it. */
static int pg_setup_exec(const struct kms_backend *b, struct pg_conn *pc, const char *sql,
                         const char *what, struct kms_err *err)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (pg_lease_exec_ok(b, pc->c, sql) == 0) {
        return 0;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    int64_t ms = (int64_t)(t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    if (b->ha_lease_ms > 0 && ms >= b->ha_lease_ms) {
        return kms_err_set(err, 500, "%s: no answer within the lease (%lld ms)", what,
                           (long long)b->ha_lease_ms);
    }
    pg_err(b, err, what, pc->c);
    return -1;
}

/*
 * Connect and prepare a connection. The fallbacks come before the conninfo string, which
 * libpq expands in place (expand_dbname), so the string's own values win over them; the
 * password comes after it, so the configured one wins. In HA mode the set-up statements are
 * answered within a lease like every other (pg_lease_exec_ok): connect_timeout ends with the
 * connection's start, and a proxy that accepted the session and then passes nothing on would
 * otherwise hold the thread that connects (a worker taking a read connection, the heartbeat
 * taking the write one) for as long as TCP lets it.
 */
static struct pg_conn *pg_connect(struct kms_backend *b, bool writer, struct kms_err *err)
{
    const char *keys[6], *vals[6];
    struct pg_conn *pc = calloc(1, sizeof *pc);
    char tcp_timeout[24], connect_timeout[24] = "10";
    size_t n = 0;

    if (pc == NULL) {
        kms_err_set(err, 500, "out of memory");
        return NULL;
    }
    keys[n] = "fallback_application_name";
    vals[n++] = "kmsd";
    if (b->ha_lease_ms > 0) {
        /* HA: a connection is made within a lease too (libpq counts whole seconds, at least
         * 2), as every statement is answered within one: a request or the leader record read
         * waiting 10 s on a link that drops packets held the replica's step-down that long */
        snprintf(connect_timeout, sizeof connect_timeout, "%lld",
                 (long long)(b->ha_lease_ms + 999) / 1000);
    }
    keys[n] = "connect_timeout";
    vals[n++] = connect_timeout;
    if (writer && b->ha_lease_ms > 0) {
        /* HA: unacknowledged writes on the leader's session fail within a lease on TCP */
        snprintf(tcp_timeout, sizeof tcp_timeout, "%lld", (long long)b->ha_lease_ms);
        keys[n] = "tcp_user_timeout";
        vals[n++] = tcp_timeout;
    }
    keys[n] = "dbname";
    vals[n++] = b->conninfo;
    if (b->password != NULL) {
        keys[n] = "password";
        vals[n++] = b->password;
    }
    keys[n] = NULL;
    vals[n] = NULL;
    pc->c = PQconnectdbParams(keys, vals, 1);
    if (pc->c == NULL || PQstatus(pc->c) != CONNECTION_OK) {
        pg_err(b, err, "cannot connect to PostgreSQL", pc->c);
        goto fail;
    }
    PQsetNoticeProcessor(pc->c, pg_notice_drop, NULL);
    if (pg_setup_exec(b, pc,
                      b->nosync ? "SET synchronous_commit TO off" : "SET synchronous_commit TO on",
                      "cannot set synchronous_commit on PostgreSQL", err) != 0) {
        goto fail;
    }
    if (writer && b->ha_lease_ms > 0) {
        char sql[160];

        snprintf(sql, sizeof sql,
                 "SET idle_session_timeout TO %lld; SET idle_in_transaction_session_timeout TO "
                 "%lld",
                 (long long)b->ha_lease_ms, (long long)b->ha_lease_ms);
        if (pg_setup_exec(b, pc, sql, "cannot set the session timeouts on PostgreSQL", err) != 0) {
            goto fail;
        }
    }
    /* an exclusive store's lock lives as long as this session (kms_storage_exclusive_check):
     * an idle_session_timeout set for the role or database must not end it (PostgreSQL 14 or
     * later has the setting) */
    if (writer && b->exclusive &&
        pg_setup_exec(b, pc,
                      "SELECT set_config(name, '0', false) FROM pg_settings WHERE name = "
                      "'idle_session_timeout'",
                      "cannot set the session timeouts on PostgreSQL", err) != 0) {
        goto fail;
    }
    if (writer && b->exclusive) {
        PGresult *r = PQexec(pc->c, "SELECT pg_try_advisory_lock(" PG_SOLE_LOCK ")");
        bool got = r != NULL && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
                   strcmp(PQgetvalue(r, 0, 0), "t") == 0;
        bool failed = r == NULL || PQresultStatus(r) != PGRES_TUPLES_OK;

        PQclear(r);
        if (failed) {
            pg_err(b, err, "cannot lock the PostgreSQL database", pc->c);
            goto fail;
        }
        if (!got) {
            kms_err_set(err, 500, "another kmsd is using this PostgreSQL database");
            goto fail;
        }
    }
    if (writer && pg_setup_exec(b, pc, pg_schema_sql,
                                "cannot create table " PG_TABLE " in PostgreSQL", err) != 0) {
        goto fail;
    }
    if (pg_setup_exec(b, pc, pg_prepare_sql, "cannot prepare statements on PostgreSQL", err) != 0) {
        goto fail;
    }
    return pc;
fail:
    pg_conn_close(pc);
    return NULL;
}

/* A read connection: an idle one or a new one. */
static struct pg_conn *pool_take(struct kms_backend *b)
{
    struct kms_err err;
    struct pg_conn *pc = NULL;

    pthread_mutex_lock(&b->pool_mu);
    if (b->idle != NULL) {
        pc = b->idle;
        b->idle = pc->next;
        pc->next = NULL;
    } else if (b->nreaders < PG_MAX_READERS) {
        b->nreaders++;
    } else {
        pthread_mutex_unlock(&b->pool_mu);
        return NULL;
    }
    pthread_mutex_unlock(&b->pool_mu);
    if (pc != NULL)
        return pc;
    kms_err_clear(&err);
    if ((pc = pg_connect(b, false, &err)) == NULL) {
        pthread_mutex_lock(&b->pool_mu);
        b->nreaders--;
        pthread_mutex_unlock(&b->pool_mu);
    }
    return pc;
}

/* Back to the pool if it is healthy and outside any transaction, else closed. */
static void pool_give(struct kms_backend *b, struct pg_conn *pc)
{
    bool keep = PQstatus(pc->c) == CONNECTION_OK && PQtransactionStatus(pc->c) == PQTRANS_IDLE;

    pthread_mutex_lock(&b->pool_mu);
    if (keep) {
        pc->next = b->idle;
        b->idle = pc;
    } else {
        b->nreaders--;
    }
    pthread_mutex_unlock(&b->pool_mu);
    if (!keep)
        pg_conn_close(pc);
}

/* Close every idle read connection: one was found closed by the server (a restart closes
 * them all), so the next transactions connect afresh instead of meeting them one by one. */
static void pool_flush_idle(struct kms_backend *b)
{
    struct pg_conn *list, *pc;

    pthread_mutex_lock(&b->pool_mu);
    list = b->idle;
    b->idle = NULL;
    for (pc = list; pc != NULL; pc = pc->next)
        b->nreaders--;
    pthread_mutex_unlock(&b->pool_mu);
    while ((pc = list) != NULL) {
        list = pc->next;
        pg_conn_close(pc);
    }
}

static void pg_close(struct kms_backend *b)
{
    struct pg_conn *pc;

    if (b == NULL)
        return;
    while ((pc = b->idle) != NULL) {
        b->idle = pc->next;
        pg_conn_close(pc);
    }
    pg_conn_close(b->writer);
    pthread_mutex_destroy(&b->write_mu);
    pthread_mutex_destroy(&b->pool_mu);
    if (b->password != NULL)
        kms_free_wipe((void **)&b->password, b->passlen);
    free(b->conninfo);
    free(b);
}

/* ---- transactions ------------------------------------------------------------------------ */

/*
 * An exclusive store's write session ended, or is given up: the database lock went with it,
 * for good (write_mu held). Another kmsd may open the database from now on, so this store
 * writes nothing more (a new session that got the lock back would write over whatever the
 * other one did, judged by this process's caches); kms_storage_exclusive_check says so.
 */
static void pg_exclusive_lost(struct kms_backend *b)
{
    pg_conn_close(b->writer);
    b->writer = NULL;
}

static const char pg_begin_write[] =
    "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock(" PG_WRITE_LOCK ")";
static const char pg_begin_read[] = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT 1";

/*
 * BEGIN of a leader's write transaction (HA): inside PostgreSQL, a statement of it waiting on a
 * lock gives up after a quarter of a lease, and any statement after a third of one, so it fails
 * with an error while the session, and the leader lock it holds, live on. (The transaction
 * holds the write session, so the heartbeat waits for it: a quarter or a third of a lease,
 * plus a heartbeat interval, at most a third of a lease, stays within the three quarters the
 * lease leaves before it must be renewed.) kmsd's own deadline (a lease, pg_wait_within) is
 * then only for a server that does not answer at all: closing the socket does not end a
 * backend waiting on a lock (it reads nothing meanwhile), which would keep the leader lock from
 * every replica until the lock holder let go. SET LOCAL ends with the transaction: the schema
 * statements and the seal check a replica runs on this session while it starts (before it
 * leads) still wait for the write lock as long as it takes. Written once, at open.
 */
static void pg_begin_write_leader(struct kms_backend *b)
{
    snprintf(b->begin_leader, sizeof(b->begin_leader),
             "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout TO %lld; "
             "SET LOCAL statement_timeout TO %lld; SELECT pg_advisory_xact_lock(" PG_WRITE_LOCK ")",
             (long long)(b->ha_lease_ms / 4), (long long)(b->ha_lease_ms / 3));
}

static int pg_txn_begin(struct kms_backend *b, bool write, struct kms_backend_txn **out)
{
    struct kms_backend_txn *t = calloc(1, sizeof *t);
    struct kms_err err;

    *out = NULL;
    if (t == NULL)
        return -1;
    t->b = b;
    t->write = write;
    kms_err_clear(&err);
    if (write && b->ha_armed) {
        /* leadership: only on the session that holds the lock, never on a replacement */
        pthread_mutex_lock(&b->write_mu);
        if (b->writer == NULL || !b->writer->leader ||
            pg_lease_exec_ok(b, b->writer->c, b->begin_leader) != 0 ||
            PQtransactionStatus(b->writer->c) != PQTRANS_INTRANS) {
            if (b->writer != NULL && PQstatus(b->writer->c) != CONNECTION_OK) {
                pg_conn_close(b->writer);
                b->writer = NULL;
            } else if (b->writer != NULL && PQtransactionStatus(b->writer->c) != PQTRANS_IDLE) {
                (void)pg_lease_exec_ok(b, b->writer->c, "ROLLBACK");
            }
            pthread_mutex_unlock(&b->write_mu);
            free(t);
            return -1;
        }
        t->pc = b->writer;
    } else if (write) {
        pthread_mutex_lock(&b->write_mu);
        if (b->exclusive) {
            /* only on the session that took the database lock at open, never a replacement */
            if (b->writer != NULL && pg_exec_ok(b->writer->c, pg_begin_write) != 0 &&
                PQstatus(b->writer->c) != CONNECTION_OK)
                pg_exclusive_lost(b);
        } else {
            if (b->writer == NULL)
                b->writer = pg_connect(b, true, &err);
            if (b->writer != NULL && pg_exec_ok(b->writer->c, pg_begin_write) != 0 &&
                PQstatus(b->writer->c) != CONNECTION_OK) {
                /* Closed while idle (server restart, idle_session_timeout): once more. */
                pg_conn_close(b->writer);
                if ((b->writer = pg_connect(b, true, &err)) != NULL &&
                    pg_exec_ok(b->writer->c, pg_begin_write) != 0) {
                    pg_conn_close(b->writer);
                    b->writer = NULL;
                }
            }
        }
        if (b->writer == NULL || PQtransactionStatus(b->writer->c) != PQTRANS_INTRANS) {
            if (b->writer != NULL)
                (void)pg_exec_ok(b->writer->c, "ROLLBACK");
            pthread_mutex_unlock(&b->write_mu);
            free(t);
            return -1;
        }
        t->pc = b->writer;
    } else {
        if ((t->pc = pool_take(b)) == NULL) {
            free(t);
            return -1;
        }
        if (pg_lease_exec_ok(b, t->pc->c, pg_begin_read) != 0 &&
            PQstatus(t->pc->c) != CONNECTION_OK) {
            pool_give(b, t->pc);
            pool_flush_idle(b);
            t->pc = pool_take(b);
            if (t->pc != NULL && pg_lease_exec_ok(b, t->pc->c, pg_begin_read) != 0) {
                pool_give(b, t->pc);
                t->pc = NULL;
            }
        }
        if (t->pc == NULL || PQtransactionStatus(t->pc->c) != PQTRANS_INTRANS) {
            if (t->pc != NULL) {
                (void)pg_lease_exec_ok(b, t->pc->c, "ROLLBACK");
                pool_give(b, t->pc);
            }
            free(t);
            return -1;
        }
    }
    *out = t;
    return 0;
}

/* Give the connection back (write: release the write mutex) and free t. */
static void pg_txn_end(struct kms_backend_txn *t)
{
    struct kms_backend *b = t->b;

    PQclear(t->last);
    if (t->write) {
        if (PQstatus(b->writer->c) != CONNECTION_OK ||
            PQtransactionStatus(b->writer->c) != PQTRANS_IDLE) {
            pg_conn_close(b->writer); /* an exclusive store's lock goes with it, for good */
            b->writer = NULL;
        }
        pthread_mutex_unlock(&b->write_mu);
    } else {
        pool_give(b, t->pc);
    }
    free(t);
}

static int pg_txn_commit(struct kms_backend_txn *t)
{
    /* HA: within a lease too. A COMMIT unanswered by then may or may not have committed: the
     * request fails, and its outcome is unknown to the client, as after any lost answer. */
    PGresult *r = t->b->ha_lease_ms > 0 ? pg_exec_within(t->pc->c, "COMMIT", t->b->ha_lease_ms)
                                        : PQexec(t->pc->c, "COMMIT");
    int rc = -1;

    /* A transaction that failed earlier answers COMMIT with "ROLLBACK". */
    if (r != NULL && PQresultStatus(r) == PGRES_COMMAND_OK && strcmp(PQcmdStatus(r), "COMMIT") == 0)
        rc = 0;
    PQclear(r);
    pg_txn_end(t);
    return rc;
}

static void pg_txn_abort(struct kms_backend_txn *t)
{
    /* HA: within a lease, as every statement (pg_lease_exec_ok). A read transaction ends here,
     * and a partition that began after its last answer left its ROLLBACK waiting for as long
     * as TCP let it (forever behind a proxy that acknowledges the bytes): the request held the
     * service, and the step-down, and every request behind it, waited for it. Unanswered, the
     * connection is shut down and pg_txn_end or pool_give closes it. */
    if (PQstatus(t->pc->c) == CONNECTION_OK)
        (void)pg_lease_exec_ok(t->b, t->pc->c, "ROLLBACK");
    pg_txn_end(t);
}

/* ---- records ----------------------------------------------------------------------------- */

/* Run a prepared statement: db (text) then up to three binary byte strings. */
static PGresult *pg_run(struct kms_backend_txn *t, const char *stmt, enum kms_db db, const void *a,
                        size_t alen, const void *b2, size_t blen, const void *c, size_t clen,
                        int nparams)
{
    char dbtext[8];
    const char *values[4];
    int lengths[4], formats[4] = {0, 1, 1, 1};

    snprintf(dbtext, sizeof dbtext, "%d", (int)db);
    values[0] = dbtext;
    lengths[0] = 0;
    values[1] = a;
    lengths[1] = (int)alen;
    values[2] = b2;
    lengths[2] = (int)blen;
    values[3] = c;
    lengths[3] = (int)clen;
    if (t->b->ha_lease_ms > 0) {
        /* HA: a statement answers within a lease or fails (the tick and requests hold the
         * service while they read or write; a stuck statement, such as a write waiting on a
         * lock some other session holds, would hold a replica that has to stand down). A write
         * that fails so leaves its transaction uncommitted: the connection is shut down, so
         * no COMMIT follows, and the session's leader lock goes with it. */
        if (PQsendQueryPrepared(t->pc->c, stmt, nparams, values, lengths, formats, 1) != 1)
            return NULL;
        return pg_wait_within(t->pc->c, t->b->ha_lease_ms);
    }
    return PQexecPrepared(t->pc->c, stmt, nparams, values, lengths, formats, 1);
}

static bool pg_ok(PGresult *r, ExecStatusType want)
{
    return r != NULL && PQresultStatus(r) == want;
}

static int pg_get(struct kms_backend_txn *t, enum kms_db db, const void *key, size_t keylen,
                  const uint8_t **sealed, size_t *sealedlen)
{
    PQclear(t->last);
    t->last = pg_run(t, "kg", db, key, keylen, NULL, 0, NULL, 0, 2);
    if (!pg_ok(t->last, PGRES_TUPLES_OK))
        return -1;
    if (PQntuples(t->last) == 0)
        return KMS_STORAGE_NOTFOUND;
    *sealed = (const uint8_t *)PQgetvalue(t->last, 0, 0);
    *sealedlen = (size_t)PQgetlength(t->last, 0, 0);
    return 0;
}

static int pg_put(struct kms_backend_txn *t, enum kms_db db, const void *key, size_t keylen,
                  const uint8_t *sealed, size_t sealedlen)
{
    PGresult *r;
    int rc;

    if (!t->write || sealedlen > (size_t)1 << 30)
        return -1;
    r = pg_run(t, "kp", db, key, keylen, sealed, sealedlen, NULL, 0, 3);
    rc = pg_ok(r, PGRES_COMMAND_OK) ? 0 : -1;
    PQclear(r);
    return rc;
}

/* The row count of a DELETE, or -1. */
static long pg_affected(PGresult *r)
{
    char *end = NULL;
    const char *s;
    long n;

    if (!pg_ok(r, PGRES_COMMAND_OK))
        return -1;
    s = PQcmdTuples(r);
    n = strtol(s, &end, 10);
    return end != s && *end == '\0' && n >= 0 ? n : -1;
}

/* INSERT … ON CONFLICT DO NOTHING: one row inserted, or none when the key was there. */
static int pg_put_new(struct kms_backend_txn *t, enum kms_db db, const void *key, size_t keylen,
                      const uint8_t *sealed, size_t sealedlen)
{
    PGresult *r;
    long n;

    if (!t->write || sealedlen > (size_t)1 << 30)
        return -1;
    r = pg_run(t, "kn", db, key, keylen, sealed, sealedlen, NULL, 0, 3);
    n = pg_affected(r);
    PQclear(r);
    return n < 0 ? -1 : n == 1 ? 0 : 1;
}

static int pg_del(struct kms_backend_txn *t, enum kms_db db, const void *key, size_t keylen)
{
    PGresult *r;
    long n;

    if (!t->write)
        return -1;
    r = pg_run(t, "kd", db, key, keylen, NULL, 0, NULL, 0, 2);
    n = pg_affected(r);
    PQclear(r);
    return n < 0 ? -1 : n == 0 ? KMS_STORAGE_NOTFOUND : 0;
}

static int pg_del_prefix(struct kms_backend_txn *t, enum kms_db db, const void *prefix,
                         size_t prefixlen, size_t *count)
{
    uint8_t succ[KMS_KEY_MAX + 1];
    size_t succlen = 0;
    PGresult *r;
    long n;

    if (!t->write || prefixlen > KMS_KEY_MAX + 1)
        return -1;
    if (prefixlen > 0)
        succlen = kms_prefix_successor(prefix, prefixlen, succ);
    if (succlen > 0)
        r = pg_run(t, "kdr", db, prefixlen > 0 ? prefix : "", prefixlen, succ, succlen, NULL, 0, 3);
    else
        r = pg_run(t, "kdo", db, prefixlen > 0 ? prefix : "", prefixlen, NULL, 0, NULL, 0, 2);
    n = pg_affected(r);
    PQclear(r);
    if (n < 0)
        return -1;
    *count = (size_t)n;
    return 0;
}

/*
 * Pages of PG_SCAN_PAGE rows in key order; the next page starts at the last key followed by a
 * 0x00 byte, the smallest key after it. Keys are at most KMS_KEY_MAX bytes (a longer start is
 * compared as it is, as bytea compares).
 */
static int pg_scan(struct kms_backend_txn *t, enum kms_db db, const void *prefix, size_t prefixlen,
                   const void *from, size_t fromlen, bool with_values, kms_backend_scan_cb cb,
                   void *arg)
{
    uint8_t succ[KMS_KEY_MAX + 1];
    uint8_t *next = NULL;
    size_t succlen = 0, nextlen = fromlen, cap = 0;
    PGresult *r = NULL;
    int rc = -1;

    if (prefixlen > KMS_KEY_MAX + 1)
        return -1;
    if (prefixlen > 0)
        succlen = kms_prefix_successor(prefix, prefixlen, succ);
    cap = (fromlen > KMS_KEY_MAX ? fromlen : KMS_KEY_MAX) + 1;
    if ((next = malloc(cap)) == NULL)
        return -1;
    if (fromlen > 0)
        memcpy(next, from, fromlen);
    for (;;) {
        int rows, crc = 0;

        if (succlen > 0)
            r = pg_run(t, with_values ? "ksv" : "ksk", db, next, nextlen, succ, succlen, NULL, 0,
                       3);
        else
            r = pg_run(t, with_values ? "ksvo" : "ksko", db, next, nextlen, NULL, 0, NULL, 0, 2);
        if (!pg_ok(r, PGRES_TUPLES_OK))
            goto out;
        rows = PQntuples(r);
        for (int i = 0; i < rows && crc == 0; i++) {
            const uint8_t *k = (const uint8_t *)PQgetvalue(r, i, 0);
            size_t klen = (size_t)PQgetlength(r, i, 0);

            crc = cb(k, klen, with_values ? (const uint8_t *)PQgetvalue(r, i, 1) : NULL,
                     with_values ? (size_t)PQgetlength(r, i, 1) : 0, arg);
        }
        if (crc < 0)
            goto out;
        if (crc > 0 || rows < PG_SCAN_PAGE_ROWS)
            break;
        nextlen = (size_t)PQgetlength(r, rows - 1, 0);
        if (nextlen + 1 > cap)
            goto out;
        memcpy(next, PQgetvalue(r, rows - 1, 0), nextlen);
        next[nextlen++] = 0;
        PQclear(r);
        r = NULL;
    }
    rc = 0;
out:
    PQclear(r);
    free(next);
    return rc;
}

static int pg_count(struct kms_backend_txn *t, enum kms_db db, size_t *count)
{
    PGresult *r = pg_run(t, "kc", db, NULL, 0, NULL, 0, NULL, 0, 1);
    uint64_t n = 0;
    int rc = -1;

    if (pg_ok(r, PGRES_TUPLES_OK) && PQntuples(r) == 1 && PQgetlength(r, 0, 0) == 8) {
        const uint8_t *p = (const uint8_t *)PQgetvalue(r, 0, 0);

        for (int i = 0; i < 8; i++)
            n = n << 8 | p[i];
        *count = (size_t)n;
        rc = 0;
    }
    PQclear(r);
    return rc;
}

/* ---- leadership ------------------------------------------------------------------------- */

/* The write connection, reconnected when missing or broken; write_mu held. */
static int pg_writer_ready(struct kms_backend *b)
{
    struct kms_err err;

    if (b->writer != NULL && PQstatus(b->writer->c) != CONNECTION_OK) {
        pg_conn_close(b->writer);
        b->writer = NULL;
    }
    kms_err_clear(&err);
    if (b->writer == NULL)
        b->writer = pg_connect(b, true, &err);
    return b->writer != NULL ? 0 : -1;
}

/* Forget a write connection that broke (its session and any lock are gone); write_mu held. */
static void pg_writer_check(struct kms_backend *b)
{
    if (b->writer != NULL && PQstatus(b->writer->c) != CONNECTION_OK) {
        pg_conn_close(b->writer);
        b->writer = NULL;
    }
}

/*
 * A leader statement (the lock's try and release, the leader record's read and write): within
 * a lease in HA mode. The active reads its record every heartbeat, and a partition must not
 * hold that thread for TCP's minutes; on the write connection, tcp_user_timeout does not help
 * behind a proxy that acknowledges the bytes and never passes on that PostgreSQL ended the
 * session (HAProxy, a cloud SQL proxy whose backend is gone): a replica waiting there forever
 * would never stand for leadership again. A connection left with its statement unanswered is
 * shut down (pg_wait_within); pool_give and pg_writer_check close it.
 */
static PGresult *pg_leader_exec(struct kms_backend *b, struct pg_conn *pc, const char *sql)
{
    return b->ha_lease_ms > 0 ? pg_exec_within(pc->c, sql, b->ha_lease_ms) : PQexec(pc->c, sql);
}

/* pg_leader_exec with text parameters. */
static PGresult *pg_leader_exec_params(struct kms_backend *b, struct pg_conn *pc, const char *sql,
                                       int n, const char *const *values)
{
    if (b->ha_lease_ms <= 0)
        return PQexecParams(pc->c, sql, n, NULL, values, NULL, NULL, 0);
    if (PQsendQueryParams(pc->c, sql, n, NULL, values, NULL, NULL, 0) != 1)
        return NULL;
    return pg_wait_within(pc->c, b->ha_lease_ms);
}

static int pg_leader_try(struct kms_backend *b, bool *got)
{
    PGresult *r = NULL;
    int rc = -1;

    pthread_mutex_lock(&b->write_mu);
    b->ha_armed = true;
    if (pg_writer_ready(b) != 0)
        goto out;
    if (b->writer->leader) {
        *got = true;
        rc = 0;
        goto out;
    }
    r = pg_leader_exec(b, b->writer, "SELECT pg_try_advisory_lock(" PG_SOLE_LOCK ")");
    if (!pg_ok(r, PGRES_TUPLES_OK) || PQntuples(r) != 1)
        goto out;
    b->writer->leader = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    *got = b->writer->leader;
    rc = 0;
out:
    PQclear(r);
    if (rc != 0)
        pg_writer_check(b);
    pthread_mutex_unlock(&b->write_mu);
    return rc;
}

/* PG_SOLE_LOCK as pg_locks shows a bigint advisory key: classid high, objid low 32 bits. */
static const char pg_ping_sql[] =
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND "
    "granted AND objsubid = 1 AND classid = (" PG_SOLE_LOCK "::bigint >> 32)::oid AND "
    "objid = (" PG_SOLE_LOCK "::bigint & 4294967295)::oid";

static int pg_leader_ping(struct kms_backend *b)
{
    PGresult *r = NULL;
    int rc = -1;

    pthread_mutex_lock(&b->write_mu);
    if (b->writer == NULL || !b->writer->leader)
        goto out;
    r = pg_exec_within(b->writer->c, pg_ping_sql, b->ha_lease_ms);
    if (pg_ok(r, PGRES_TUPLES_OK) && PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "1") == 0) {
        rc = 0;
    } else if (r == NULL && PQstatus(b->writer->c) == CONNECTION_OK) {
        /* no answer within a lease (a partition): give the session up, the lock goes with it
         * once PostgreSQL ends it, and this replica stands again on a new connection */
        pg_conn_close(b->writer);
        b->writer = NULL;
    } else {
        b->writer->leader = false; /* lost: only a new try takes it again */
    }
out:
    PQclear(r);
    pg_writer_check(b);
    pthread_mutex_unlock(&b->write_mu);
    return rc;
}

static int pg_leader_publish(struct kms_backend *b, const char *replica, const char *api_addr,
                             int64_t lease_ms, const char *mac)
{
    char lease[24];
    const char *values[4] = {replica, api_addr, lease, mac};
    PGresult *r = NULL;
    int rc = -1;

    snprintf(lease, sizeof lease, "%lld", (long long)lease_ms);
    pthread_mutex_lock(&b->write_mu);
    if (b->writer == NULL || !b->writer->leader)
        goto out;
    r = pg_leader_exec_params(
        b, b->writer,
        "INSERT INTO " PG_LEADER_TABLE " (id, replica, api_addr, lease_ms, released, mac) "
        "VALUES (1, $1, $2, $3::bigint, false, $4) ON CONFLICT (id) DO UPDATE SET "
        "replica = EXCLUDED.replica, api_addr = EXCLUDED.api_addr, lease_ms = "
        "EXCLUDED.lease_ms, released = false, mac = EXCLUDED.mac, since = now()",
        4, values);
    rc = pg_ok(r, PGRES_COMMAND_OK) ? 0 : -1;
out:
    PQclear(r);
    pg_writer_check(b);
    pthread_mutex_unlock(&b->write_mu);
    return rc;
}

static int pg_leader_release(struct kms_backend *b, const char *replica, const char *mac)
{
    const char *values[2] = {replica, mac};
    PGresult *r = NULL;
    int rc = -1;

    pthread_mutex_lock(&b->write_mu);
    if (b->writer == NULL || !b->writer->leader)
        goto out;
    if (replica != NULL) {
        r = pg_leader_exec_params(b, b->writer,
                                  "UPDATE " PG_LEADER_TABLE
                                  " SET released = true, mac = $2 WHERE id = 1 AND replica = $1",
                                  2, values);
        if (!pg_ok(r, PGRES_COMMAND_OK))
            goto out;
        PQclear(r);
    }
    r = pg_leader_exec(b, b->writer, "SELECT pg_advisory_unlock(" PG_SOLE_LOCK ")");
    if (!pg_ok(r, PGRES_TUPLES_OK))
        goto out;
    b->writer->leader = false;
    rc = 0;
out:
    PQclear(r);
    pg_writer_check(b);
    pthread_mutex_unlock(&b->write_mu);
    return rc;
}

static int pg_leader_read(struct kms_backend *b, struct kms_storage_leader *out,
                          char mac[KMS_LEADER_MAC_HEX + 1])
{
    struct pg_conn *pc = pool_take(b);
    PGresult *r = NULL;
    int rc = -1;

    static const char sql[] =
        "SELECT replica, api_addr, lease_ms, released, mac FROM " PG_LEADER_TABLE " WHERE id = 1";

    if (pc == NULL)
        return -1;
    r = pg_leader_exec(b, pc, sql);
    if (!pg_ok(r, PGRES_TUPLES_OK) && PQstatus(pc->c) != CONNECTION_OK) {
        /* an idle connection the server closed (restart): once more on another */
        PQclear(r);
        r = NULL;
        pool_give(b, pc);
        pool_flush_idle(b);
        if ((pc = pool_take(b)) == NULL)
            return -1;
        r = pg_leader_exec(b, pc, sql);
    }
    if (pg_ok(r, PGRES_TUPLES_OK) && PQntuples(r) == 0) {
        rc = 0;
    } else if (pg_ok(r, PGRES_TUPLES_OK) && PQntuples(r) == 1) {
        char *end = NULL;

        out->present = true;
        snprintf(out->replica, sizeof out->replica, "%s", PQgetvalue(r, 0, 0));
        snprintf(out->api_addr, sizeof out->api_addr, "%s", PQgetvalue(r, 0, 1));
        out->lease_ms = strtoll(PQgetvalue(r, 0, 2), &end, 10);
        out->released = strcmp(PQgetvalue(r, 0, 3), "t") == 0;
        if (*end != '\0' || PQgetlength(r, 0, 0) >= (int)sizeof out->replica ||
            PQgetlength(r, 0, 1) >= (int)sizeof out->api_addr)
            out->lease_ms = -1; /* cut or unreadable: fails the MAC check */
        snprintf(mac, KMS_LEADER_MAC_HEX + 1, "%s", PQgetvalue(r, 0, 4));
        rc = 0;
    }
    PQclear(r);
    pool_give(b, pc);
    return rc;
}

/*
 * kms_storage_exclusive_check. An idle session says nothing until PostgreSQL ends it (its
 * FATAL message, then the close): a readable write connection is read, and one found closed
 * is the lock lost. A write transaction in flight (write_mu busy) finds out itself.
 */
static int pg_exclusive_check(struct kms_backend *b)
{
    int rc;

    if (!b->exclusive)
        return 0;
    if (pthread_mutex_trylock(&b->write_mu) != 0)
        return 0;
    if (b->writer != NULL) {
        struct pollfd pfd = {.fd = PQsocket(b->writer->c), .events = POLLIN};

        if (PQstatus(b->writer->c) != CONNECTION_OK || pfd.fd < 0 ||
            (poll(&pfd, 1, 0) > 0 &&
             (PQconsumeInput(b->writer->c) != 1 || PQstatus(b->writer->c) != CONNECTION_OK)))
            pg_exclusive_lost(b);
    }
    rc = b->writer != NULL ? 0 : -1;
    pthread_mutex_unlock(&b->write_mu);
    return rc;
}

static const struct kms_backend_ops pg_ops = {
    .name = "postgresql",
    .close = pg_close,
    .txn_begin = pg_txn_begin,
    .txn_commit = pg_txn_commit,
    .txn_abort = pg_txn_abort,
    .get = pg_get,
    .put = pg_put,
    .put_new = pg_put_new,
    .del = pg_del,
    .del_prefix = pg_del_prefix,
    .scan = pg_scan,
    .count = pg_count,
    .leader_try = pg_leader_try,
    .leader_ping = pg_leader_ping,
    .leader_publish = pg_leader_publish,
    .leader_release = pg_leader_release,
    .leader_read = pg_leader_read,
    .exclusive_check = pg_exclusive_check,
    .close_idle = pool_flush_idle,
};

int kms_backend_pg_open(const char *conninfo, const struct kms_storage_opts *opts,
                        const struct kms_backend_ops **ops, struct kms_backend **out,
                        size_t *maxkey, struct kms_err *err)
{
    struct kms_backend *b = NULL;

    *out = NULL;
    if (kms_pq_load(err) != 0) {
        return -1;
    }
    if (!PQisthreadsafe()) {
        kms_err_set(err, 500, "libpq was built without thread safety");
        return -1;
    }
    if ((b = calloc(1, sizeof *b)) == NULL || (b->conninfo = strdup(conninfo)) == NULL) {
        free(b);
        kms_err_set(err, 500, "out of memory");
        return -1;
    }
    pthread_mutex_init(&b->write_mu, NULL);
    pthread_mutex_init(&b->pool_mu, NULL);
    b->nosync = opts != NULL && opts->nosync;
    b->exclusive = opts != NULL && opts->pg_exclusive;
    b->url_secret = pg_url_secret(conninfo);
    b->ha_lease_ms = opts != NULL && opts->pg_ha_lease_ms > 0 ? opts->pg_ha_lease_ms : 0;
    pg_begin_write_leader(b);
    if (opts != NULL && opts->pg_password != NULL) {
        b->passlen = strlen(opts->pg_password) + 1;
        if ((b->password = malloc(b->passlen)) == NULL) {
            pg_close(b);
            kms_err_set(err, 500, "out of memory");
            return -1;
        }
        memcpy(b->password, opts->pg_password, b->passlen);
    }
    /* The write connection creates the table (once, under the write lock). */
    if ((b->writer = pg_connect(b, true, err)) == NULL) {
        pg_close(b);
        return -1;
    }
    *ops = &pg_ops;
    *maxkey = KMS_KEY_MAX;
    *out = b;
    return 0;
}
