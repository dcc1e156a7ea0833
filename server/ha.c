/*
 * ha.c - several kmsd replicas on one PostgreSQL database: one active, the others standbys
 * (docs/ha.md, issue 15).
 *
 * Design notes
 *
 * - Leadership is the storage's leader lock (a PostgreSQL session advisory lock on the write
 *   connection, the one every write commits on). Two threads: the heartbeat thread pings that
 *   connection every heartbeat while the lock is held and moves the lease forward from each
 *   answered ping; the control thread tries for the lock while standing by, promotes, and steps
 *   down when the lock is lost or the lease ran out.
 *
 * - The lease rule. A ping sent at monotonic time t and answered (the session still holds the
 *   lock) lets the replica serve until t + lease - margin; serve_until only moves forward by such
 *   answers. It is checked before a request is handed to the API, again before its answer is
 *   released (an answer computed across the deadline becomes a 503), and before every write's
 *   COMMIT (kms_storage_set_commit_guard). PostgreSQL ends the holder's session after `lease`
 *   idle (idle_session_timeout), so a holder that stopped talking loses the lock no earlier
 *   than one lease after its last ping was sent, when its own rule has already stopped it.
 *
 * - Promotion. A standby that gets the lock reads the leader record: unless the last leader
 *   released cleanly (it stopped serving before it marked the record), the standby waits a
 *   whole lease (the larger of the old leader's and its own) from the moment it got the lock,
 *   heartbeating meanwhile; then it builds the service fresh from the store (every cache: keys,
 *   registry, policies, tokens, KMSKey schedule, audit heads, rate limits), publishes its
 *   address and starts serving. Stepping down stops serving first, waits for requests in
 *   flight (a writer-preferring rwlock around the API), then frees the whole service.
 *
 * - Standbys answer sys/health (Vault's standby code) and sys/leader themselves and forward
 *   everything else to the active replica's advertised api_addr with kmsctl's HTTP client (or
 *   answer 307 to it): method, target, headers but hop-by-hop ones, body; status, body and
 *   the end-to-end response headers back. Each worker thread keeps one keep-alive connection
 *   to the active (thread-specific data, closed when the thread ends or the active changes):
 *   the worker is blocked for the forwarded request anyway, so one connection per worker is
 *   all it can use. A forwarded request carries X-Kmsd-Forwarded; a standby never forwards
 *   such a request again (no loops while replicas disagree on the leader).
 *
 * - The client's address. A forwarded request also carries X-Kmsd-Forward-Auth, a secret every
 *   replica derives from the seal key (HMAC-SHA256(seal key, "kmsd ha forwarding v1"), never
 *   the seal key itself), and X-Forwarded-For / X-Kmsd-Forwarded-Port with the client's
 *   address. The active replica takes the client's address from them (audit remote_address,
 *   token_bound_cidrs) only when the secret matches; a client's own X-Forwarded-For and
 *   X-Kmsd-* headers are dropped by the standby and ignored by the active without the secret.
 */
#include "server/server.h"

#include "cli/cli.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <fcntl.h>

#define FORWARDED_HEADER "X-Kmsd-Forwarded"
#define FORWARD_AUTH_HEADER "X-Kmsd-Forward-Auth"
#define FORWARDED_PORT_HEADER "X-Kmsd-Forwarded-Port"
#define MAX_FWD_HEADERS 104

struct kms_ha {
    struct kms_ha_opts o;
    char replica[128];
    char api_addr[256];

    pthread_rwlock_t api_lock; /* read: a request using api; write: promotion, step-down */
    struct kms_api *api;       /* the service while active, else NULL */

    atomic_bool holding;       /* this replica's session holds the leader lock */
    atomic_bool active;        /* serving (api built, address published) */
    atomic_bool published;     /* this term wrote the leader record: only then mark it released */
    atomic_bool stepping;      /* a step-down runs: the heartbeat renews nothing */
    bool forged_seen;          /* the last leader record read failed its MAC (ctl thread) */
    bool read_failed;          /* the last leader record read failed (ctl thread) */
    int64_t own_addr_since;    /* a standby: since when the active's record names its address */
    bool own_addr_said;        /* ... and that was logged (ctl thread) */
    atomic_llong serve_until;  /* monotonic ms: the lease rule's deadline */
    atomic_llong active_since; /* wall clock seconds of the promotion */

    pthread_mutex_t mu;       /* stop flag, condition, leader address, last store status */
    atomic_bool status_known; /* the store was seen initialised (its cluster id below, under mu) */
    char status_cid[37];
    pthread_cond_t cond;
    bool stopping;
    char leader_addr[256]; /* the active replica's advertised address, "" = none known */
    char leader_replica[128];

    pthread_t hb_thread, ctl_thread;
    bool started;
    struct kms_pool *pool; /* handler threads: every request but answer_now's */
};

/* The lease's clock: CLOCK_BOOTTIME, monotonic and counting time the machine was suspended
 * (CLOCK_MONOTONIC stops then, and a resumed active would take its lease for still running
 * while PostgreSQL, whose clock ran on, had ended it and let another replica lead). */
static int64_t mono_ms(void *arg)
{
    struct timespec ts;
    (void)arg;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t ha_now(const struct kms_ha *ha)
{
    return ha->o.now_ms(ha->o.clock_arg);
}

bool kms_ha_lease_valid(int64_t now, int64_t ping_sent, int64_t lease_ms, int64_t margin_ms)
{
    return ping_sent > 0 && now < ping_sent + lease_ms - margin_ms;
}

static void ha_log(struct kms_ha *ha, const char *level, const char *msg, const char *detail)
{
    if (ha->o.log != NULL) {
        ha->o.log(level, msg, ha->replica, detail != NULL ? detail : "");
    }
}

/* The lease rule now; the commit guard and the request gate. */
static bool ha_lease_ok(struct kms_ha *ha)
{
    return atomic_load(&ha->holding) && ha_now(ha) < (int64_t)atomic_load(&ha->serve_until);
}

/* Set on the thread whose COMMIT the guard refused, or let through; serve_active reads and
 * clears them. */
static _Thread_local bool guard_refused;
static _Thread_local bool guard_allowed;

static bool commit_guard(void *arg)
{
    if (ha_lease_ok(arg)) {
        guard_allowed = true;
        return true;
    }
    guard_refused = true;
    return false;
}

/* Sleep up to ms or until stop; true when stopping. */
static bool ha_sleep(struct kms_ha *ha, int64_t ms)
{
    struct timespec ts;
    bool stop;

    /* on the monotonic clock (ha->cond waits on it): a wall clock stepped back (NTP, a VM
     * restored) would otherwise hold the heartbeat and the control loop for as long */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&ha->mu);
    if (!ha->stopping) {
        pthread_cond_timedwait(&ha->cond, &ha->mu, &ts);
    }
    stop = ha->stopping;
    pthread_mutex_unlock(&ha->mu);
    return stop;
}

/* ---- heartbeat --------------------------------------------------------------------------- */

static void *hb_main(void *arg)
{
    struct kms_ha *ha = arg;

    for (;;) {
        int64_t t = ha_now(ha);
        /* not during a step-down: it waits for the requests in flight, a long one for a
         * minute (forever behind a stuck audit device), and pings answered meanwhile kept the
         * session, and the leader lock, from every other replica: nobody served. Unpinged, the
         * idle session ends one lease later and a standby takes over */
        if (atomic_load(&ha->holding) && !atomic_load(&ha->stepping)) {
            int pr = kms_storage_leader_ping(ha->o.st);
            int64_t took = ha_now(ha) - t;
            if (took > ha->o.heartbeat_ms) {
                /* a slow ping eats the lease: say so (CPU starvation, a busy write connection) */
                char d[64];
                snprintf(d, sizeof(d), "%lld ms", (long long)took);
                ha_log(ha, "warn", "slow heartbeat ping", d);
            }
            if (pr == 0) {
                int64_t until = t + ha->o.lease_ms - ha->o.margin_ms;
                if (until > (int64_t)atomic_load(&ha->serve_until)) {
                    atomic_store(&ha->serve_until, until);
                }
            } else {
                /* the session no longer holds the lock: nothing may be served or committed */
                atomic_store(&ha->holding, false);
                atomic_store(&ha->serve_until, 0);
                pthread_mutex_lock(&ha->mu);
                pthread_cond_broadcast(&ha->cond);
                pthread_mutex_unlock(&ha->mu);
            }
        }
        int64_t spent = ha_now(ha) - t;
        if (ha_sleep(ha, spent < ha->o.heartbeat_ms ? ha->o.heartbeat_ms - spent : 1)) {
            return NULL;
        }
    }
}

/* ---- control ----------------------------------------------------------------------------- */

static void set_leader(struct kms_ha *ha, const struct kms_storage_leader *l)
{
    bool forged = l != NULL && l->forged;
    if (forged != ha->forged_seen) {
        ha->forged_seen = forged;
        if (forged) {
            ha_log(ha, "error",
                   "the leader record in PostgreSQL fails its MAC check (not written by a kmsd "
                   "with this seal key): no request is forwarded until the active replica "
                   "publishes it again",
                   NULL);
        }
    }
    pthread_mutex_lock(&ha->mu);
    if (l != NULL && l->present && !l->released) {
        snprintf(ha->leader_addr, sizeof(ha->leader_addr), "%s", l->api_addr);
        snprintf(ha->leader_replica, sizeof(ha->leader_replica), "%s", l->replica);
    } else {
        ha->leader_addr[0] = '\0';
        ha->leader_replica[0] = '\0';
    }
    pthread_mutex_unlock(&ha->mu);
}

/* Stop serving, wait for requests in flight, free the service; release the lock if held. */
static void step_down(struct kms_ha *ha, const char *why, bool release)
{
    bool was_active = atomic_exchange(&ha->active, false);

    atomic_store(&ha->stepping, true);
    pthread_rwlock_wrlock(&ha->api_lock);
    if (ha->api != NULL) {
        ha->o.teardown(ha->o.arg, &ha->api);
    }
    pthread_rwlock_unlock(&ha->api_lock);
    /* the read connections of its time as active: a standby needs one (the leader record),
     * and every replica shares PostgreSQL's max_connections */
    kms_storage_close_idle(ha->o.st);
    if (release && atomic_load(&ha->holding)) {
        /* not serving any more: the next leader need not wait out this lease */
        atomic_store(&ha->holding, false);
        atomic_store(&ha->serve_until, 0);
        bool mine = atomic_exchange(&ha->published, false);
        if (kms_storage_leader_release(ha->o.st, mine ? ha->replica : NULL) != 0) {
            ha_log(ha, "warn", "could not mark the leader lock released", NULL);
        }
    } else {
        atomic_store(&ha->holding, false);
        atomic_store(&ha->serve_until, 0);
        atomic_store(&ha->published, false);
    }
    set_leader(ha, NULL);
    atomic_store(&ha->stepping, false);
    if (was_active) {
        ha_log(ha, "warn", "standing by: no longer the active replica", why);
    } else {
        ha_log(ha, "info", "not promoted", why);
    }
}

/* Holding the lock: wait out the old lease if needed, build the service, publish, serve. */
#ifdef KMS_TEST_HOOKS
/*
 * Test hook (KMS_TEST_HOOKS builds only): with KMS_TEST_HA_HOLD_PROMOTION=<path>, a promotion
 * whose service is built waits while <path> exists before it switches to active, and creates
 * <path>.held meanwhile, so a test can land a signal in that window.
 */
static void hook_hold_env(const char *env)
{
    const char *hold = getenv(env);
    char held[600];
    if (hold == NULL || hold[0] == '\0' ||
        (size_t)snprintf(held, sizeof(held), "%s.held", hold) >= sizeof(held)) {
        return;
    }
    kms_test_hold(hold, held);
}

static void hook_hold_promotion(void)
{
    hook_hold_env("KMS_TEST_HA_HOLD_PROMOTION");
}

/* KMS_TEST_HA_HOLD_BEFORE_LOCK=<path>: a request that found the replica active waits while
 * <path> exists before it takes the service's lock (<path>.held meanwhile) */
static void hook_hold_before_lock(void)
{
    hook_hold_env("KMS_TEST_HA_HOLD_BEFORE_LOCK");
}
#endif

static void promote(struct kms_ha *ha, int64_t got_at)
{
    struct kms_storage_leader old;
    struct kms_err err;
    int64_t wait = 0;

    ha->own_addr_since = 0; /* its own record from now on is this term's */
    ha->own_addr_said = false;
    if (kms_storage_leader_read(ha->o.st, &old) != 0) {
        step_down(ha, "cannot read the leader record", true);
        return;
    }
    if (old.forged) {
        ha_log(ha, "error",
               "the leader record in PostgreSQL fails its MAC check: waiting out a whole lease",
               NULL);
    }
    if (old.present && !old.released) {
        wait = old.lease_ms > ha->o.lease_ms ? old.lease_ms : ha->o.lease_ms;
        ha_log(ha, "info", "leader lock taken; waiting out the previous leader's lease",
               old.replica);
    }
    while (ha_now(ha) < got_at + wait) {
        if (!atomic_load(&ha->holding)) {
            step_down(ha, "lost the leader lock while waiting", false);
            return;
        }
        int64_t left = got_at + wait - ha_now(ha);
        if (ha_sleep(ha, left < ha->o.heartbeat_ms ? left : ha->o.heartbeat_ms)) {
            return;
        }
    }
    /* a fresh lease before building: the build's own writes go through the commit guard */
    int64_t t = ha_now(ha);
    if (kms_storage_leader_ping(ha->o.st) != 0) {
        step_down(ha, "lost the leader lock", false);
        return;
    }
    atomic_store(&ha->serve_until, t + ha->o.lease_ms - ha->o.margin_ms);
    kms_err_clear(&err);
    /* built outside the lock: requests (a standby's forwarding, health) do not wait for it */
    struct kms_api *api = NULL;
    int built = ha->o.build(ha->o.arg, &api, &err);
#ifdef KMS_TEST_HOOKS
    if (built == 0) {
        hook_hold_promotion();
    }
#endif
    if (built == 0) {
        pthread_rwlock_wrlock(&ha->api_lock);
        ha->api = api;
        pthread_rwlock_unlock(&ha->api_lock);
    }
    if (built != 0) {
        ha_log(ha, "error", "cannot load the service from PostgreSQL", err.msg);
        step_down(ha, "load failed", true);
        return;
    }
    if (kms_storage_leader_publish(ha->o.st, ha->replica, ha->api_addr, ha->o.lease_ms) != 0) {
        step_down(ha, "cannot publish the leader record", true);
        return;
    }
    atomic_store(&ha->published, true);
    if (!ha_lease_ok(ha)) {
        step_down(ha, "the lease ran out while loading", true);
        return;
    }
    int64_t sec;
    int32_t nsec;
    kms_now(&sec, &nsec);
    atomic_store(&ha->active_since, sec);
    pthread_mutex_lock(&ha->mu);
    snprintf(ha->leader_addr, sizeof(ha->leader_addr), "%s", ha->api_addr);
    snprintf(ha->leader_replica, sizeof(ha->leader_replica), "%s", ha->replica);
    pthread_mutex_unlock(&ha->mu);
    atomic_store(&ha->active, true);
    ha_log(ha, "notice", "active replica", ha->api_addr);
}

/* Remember that the store is initialised, with its cluster id (an active replica, after a
 * request): its health answers as a standby while the database is away come from it. */
static void note_store_status(struct kms_ha *ha)
{
    bool init = false;
    char cid[37];
    if (atomic_load(&ha->status_known) || kms_api_store_status(ha->o.st, &init, cid) != 0 ||
        !init) {
        return;
    }
    pthread_mutex_lock(&ha->mu);
    memcpy(ha->status_cid, cid, sizeof(ha->status_cid));
    atomic_store(&ha->status_known, true);
    pthread_mutex_unlock(&ha->mu);
}

/* The active's own leader record: published again when it was changed or fails its check. */
static void keep_record(struct kms_ha *ha)
{
    struct kms_storage_leader l;

    if (kms_storage_leader_read(ha->o.st, &l) != 0) {
        return; /* PostgreSQL trouble: the lease decides what happens next */
    }
    if (l.present && !l.forged && !l.released && strcmp(l.replica, ha->replica) == 0 &&
        strcmp(l.api_addr, ha->api_addr) == 0) {
        return;
    }
    ha_log(ha, "warn",
           "the leader record was changed under the active replica: publishing it again",
           l.forged ? "the record found failed its MAC check" : NULL);
    if (kms_storage_leader_publish(ha->o.st, ha->replica, ha->api_addr, ha->o.lease_ms) != 0) {
        ha_log(ha, "warn", "cannot publish the leader record", NULL);
    }
}

/*
 * A standby that reads an active's record naming its own api_addr forwards nothing (it would
 * send requests to itself) and answers 503 `no active kmsd replica`. That is right for a
 * moment after it restarted (its own record, until the new active has waited out the lease,
 * built its service from a store maybe large, and published), but for ten leases it is two
 * replicas configured with one api_addr (a load balancer's address, as Vault's api_addr often
 * is): said once, as nothing else would show why every request to the standbys fails, and
 * their shared ha_replica_id (api_addr by default) mixes their audit chains.
 */
static void own_addr_check(struct kms_ha *ha, const struct kms_storage_leader *l)
{
    if (!l->present || l->forged || l->released || strcmp(l->api_addr, ha->api_addr) != 0) {
        ha->own_addr_since = 0;
        ha->own_addr_said = false;
        return;
    }
    int64_t now = ha_now(ha);
    if (ha->own_addr_since == 0) {
        ha->own_addr_since = now;
    } else if (!ha->own_addr_said && now - ha->own_addr_since > 10 * ha->o.lease_ms) {
        ha->own_addr_said = true;
        ha_log(ha, "error",
               "the active replica advertises this replica's own api_addr: give every replica "
               "its own api_addr (and ha_replica_id); this standby forwards nothing and answers "
               "503 until then",
               l->replica);
    }
}

static void *ctl_main(void *arg)
{
    struct kms_ha *ha = arg;

    for (;;) {
        int64_t t = ha_now(ha);
        if (atomic_load(&ha->active)) {
            if (!atomic_load(&ha->holding)) {
                step_down(ha, "lost the leader lock", false);
            } else if (!ha_lease_ok(ha)) {
                step_down(ha, "the lease ran out (PostgreSQL did not answer in time)", true);
            } else {
                keep_record(ha);
            }
        } else {
            bool got = false;
            if (kms_storage_leader_try(ha->o.st, &got) == 0 && got) {
                atomic_store(&ha->holding, true);
                /* the wait counts from now, with the lock held: the try may have taken long (a
                 * new write connection, the write mutex) while the old holder still served */
                promote(ha, ha_now(ha));
            } else {
                struct kms_storage_leader l;
                if (kms_storage_leader_read(ha->o.st, &l) == 0) {
                    ha->read_failed = false;
                    set_leader(ha, &l);
                    own_addr_check(ha, &l);
                } else if (!ha->read_failed) {
                    /* PostgreSQL unreachable from here (maybe from here alone): the last active
                     * known is kept, as the active may well serve on. Forwarding to it stays
                     * safe: a replica that is not active any more answers a forwarded request
                     * 503 itself, and never forwards it again. */
                    ha->read_failed = true;
                    ha_log(ha, "warn",
                           "cannot read the leader record: forwarding to the last active replica "
                           "known",
                           NULL);
                }
            }
        }
        int64_t spent = ha_now(ha) - t;
        if (ha_sleep(ha, spent < ha->o.heartbeat_ms ? ha->o.heartbeat_ms - spent : 1)) {
            return NULL;
        }
    }
}

/* ---- requests ---------------------------------------------------------------------------- */

/* A Vault error body on a response not filled yet (or already disposed). */
static void ha_error(int status, const char *msg, struct kms_http_resp *resp)
{
    memset(resp, 0, sizeof(*resp));
    kms_api_error_response(status, msg, resp);
}

static void json_response(struct kms_http_resp *resp, int status, json_t *body)
{
    char *s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    memset(resp, 0, sizeof(*resp));
    if (s == NULL) {
        ha_error(500, "out of memory", resp);
        return;
    }
    resp->status = status;
    resp->body = s;
    resp->body_len = strlen(s);
}

/* The path of a target without its query; false unless it is "/v1/<want>". */
static bool path_is(const char *target, const char *want)
{
    size_t n = strcspn(target, "?");
    size_t wl = strlen(want);
    return n == 4 + wl && strncmp(target, "/v1/", 4) == 0 && strncmp(target + 4, want, wl) == 0;
}

/* The value of query parameter `name` (not decoded: the values here are plain), or NULL. */
static const char *query_get(const char *target, const char *name, char *buf, size_t cap)
{
    const char *q = strchr(target, '?');
    size_t nl = strlen(name);
    while (q != NULL) {
        q++;
        size_t len = strcspn(q, "&");
        if (len >= nl && strncmp(q, name, nl) == 0 && (q[nl] == '=' || len == nl)) {
            size_t vl = len == nl ? 0 : len - nl - 1;
            if (vl >= cap) {
                vl = cap - 1;
            }
            memcpy(buf, q + nl + (len == nl ? 0 : 1), vl);
            buf[vl] = '\0';
            return buf;
        }
        q = strchr(q, '&');
    }
    return NULL;
}

/* Go's strconv.ParseBool. */
static int parse_bool(const char *s, bool *out)
{
    static const char *const t[] = {"1", "t", "T", "TRUE", "true", "True"};
    static const char *const f[] = {"0", "f", "F", "FALSE", "false", "False"};
    for (size_t i = 0; i < 6; i++) {
        if (strcmp(s, t[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcmp(s, f[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

/* sys/health on a replica that is not active (Vault's standby answer). */
static void standby_health(struct kms_ha *ha, const struct kms_http_req *req,
                           struct kms_http_resp *resp)
{
    static const char *const names[] = {"activecode", "standbycode", "sealedcode", "uninitcode"};
    int codes[] = {200, 429, 503, 501};
    char v[64], cid[37];
    bool standbyok = false, init = false;
    int64_t sec;
    int32_t nsec;

    if (query_get(req->target, "standbyok", v, sizeof(v)) != NULL &&
        parse_bool(v, &standbyok) != 0) {
        ha_error(400, "bad value for standbyok parameter", resp);
        return;
    }
    for (size_t i = 0; i < 4; i++) {
        int64_t n;
        if (query_get(req->target, names[i], v, sizeof(v)) == NULL) {
            continue;
        }
        if (!kms_int_parse(v, &n) || n < 200 || n > 599) {
            char msg[128];
            snprintf(msg, sizeof(msg), "invalid %s %s: must be an HTTP status from 200 to 599",
                     names[i], v);
            ha_error(400, msg, resp);
            return;
        }
        codes[i] = (int)n;
    }
    /* An initialised store stays initialised: once seen, that is remembered and answered
     * without asking PostgreSQL again, so while the database is away (down, or unreachable
     * behind a link that drops packets, where a read takes a lease or a connect timeout to
     * fail) the standby answers at once (docs/ha.md: every replica serves again once it is
     * back) rather than 500 or past a probe's timeout, which would make Kubernetes restart
     * every replica. */
    int sr = 0;
    pthread_mutex_lock(&ha->mu);
    bool known = atomic_load(&ha->status_known);
    if (known) {
        init = true;
        memcpy(cid, ha->status_cid, sizeof(ha->status_cid));
    }
    pthread_mutex_unlock(&ha->mu);
    if (!known && (sr = kms_api_store_status(ha->o.st, &init, cid)) == 0 && init) {
        pthread_mutex_lock(&ha->mu);
        memcpy(ha->status_cid, cid, sizeof(ha->status_cid));
        atomic_store(&ha->status_known, true);
        pthread_mutex_unlock(&ha->mu);
    }
    if (sr != 0) {
        ha_error(503, "cannot read the store", resp);
        return;
    }
    kms_now(&sec, &nsec);
    json_t *o = json_pack("{s:b, s:b, s:b, s:b, s:s, s:s, s:I, s:s}", "initialized", init, "sealed",
                          !init, "standby", true, "performance_standby", false,
                          "replication_performance_mode", "disabled", "replication_dr_mode",
                          "disabled", "server_time_utc", (json_int_t)sec, "version", ha->o.version);
    if (o != NULL && init) {
        json_object_set_new(o, "cluster_name", json_string("kmsd"));
        json_object_set_new(o, "cluster_id", json_string(cid));
    }
    json_response(resp, !init ? codes[3] : standbyok ? codes[0] : codes[1], o);
}

static void leader_status(struct kms_ha *ha, struct kms_http_resp *resp)
{
    char addr[256], since[40] = "";
    bool self = atomic_load(&ha->active) && ha_lease_ok(ha);

    pthread_mutex_lock(&ha->mu);
    snprintf(addr, sizeof(addr), "%s", ha->leader_addr);
    pthread_mutex_unlock(&ha->mu);
    if (self) {
        kms_time_rfc3339(atomic_load(&ha->active_since), 0, since);
    }
    /* Vault's fields (performance_standby_last_remote_wal is always there: clients with
     * strict decoders need it) */
    json_t *o = json_pack("{s:b, s:b, s:s, s:s, s:b, s:i}", "ha_enabled", true, "is_self", self,
                          "leader_address", addr, "leader_cluster_address", "",
                          "performance_standby", false, "performance_standby_last_remote_wal", 0);
    if (o != NULL && self) {
        json_object_set_new(o, "active_time", json_string(since));
    }
    json_response(resp, 200, o);
}

static bool hop_by_hop(const char *name)
{
    static const char *const h[] = {"Host",
                                    "Connection",
                                    "Keep-Alive",
                                    "Proxy-Connection",
                                    "TE",
                                    "Trailer",
                                    "Transfer-Encoding",
                                    "Upgrade",
                                    "Expect",
                                    "Content-Length",
                                    "Proxy-Authorization",
                                    "X-Forwarded-For",
                                    FORWARDED_HEADER,
                                    FORWARD_AUTH_HEADER,
                                    FORWARDED_PORT_HEADER};
    for (size_t i = 0; i < sizeof(h) / sizeof(h[0]); i++) {
        if (strcasecmp(name, h[i]) == 0) {
            return true;
        }
    }
    return false;
}

/* Response headers the standby does not pass on: its own, and hop-by-hop ones. */
static bool resp_header_skipped(const char *name, size_t nl)
{
    static const char *const h[] = {"Content-Type",
                                    "Content-Length",
                                    "Cache-Control",
                                    "Connection",
                                    "Keep-Alive",
                                    "Transfer-Encoding",
                                    "TE",
                                    "Trailer",
                                    "Upgrade",
                                    "Proxy-Authenticate"};
    for (size_t i = 0; i < sizeof(h) / sizeof(h[0]); i++) {
        if (strlen(h[i]) == nl && strncasecmp(name, h[i], nl) == 0) {
            return true;
        }
    }
    return false;
}

/* The active's end-to-end response headers (Retry-After, Location, X-Vault-Namespace, …). */
static void copy_resp_headers(const char *lines, struct kms_http_resp *resp)
{
    for (const char *l = lines; l != NULL && *l != '\0';) {
        const char *eol = strstr(l, "\r\n");
        size_t len = eol != NULL ? (size_t)(eol - l) : strlen(l);
        const char *colon = memchr(l, ':', len);
        if (colon != NULL && resp->nextra < KMS_HTTP_MAX_EXTRA_HEADERS) {
            size_t nl = (size_t)(colon - l);
            const char *v = colon + 1;
            while (v < l + len && (*v == ' ' || *v == '\t')) {
                v++;
            }
            size_t vl = (size_t)(l + len - v);
            if (nl > 0 && nl < sizeof(resp->extra[0].name) && vl < sizeof(resp->extra[0].value) &&
                !resp_header_skipped(l, nl)) {
                memcpy(resp->extra[resp->nextra].name, l, nl);
                resp->extra[resp->nextra].name[nl] = '\0';
                memcpy(resp->extra[resp->nextra].value, v, vl);
                resp->extra[resp->nextra].value[vl] = '\0';
                resp->nextra++;
            }
        }
        l = eol != NULL ? eol + 2 : NULL;
    }
}

/* Each worker thread's kept connection to the active replica. */
struct fwd_conn {
    char addr[256];
    struct kms_cli_http *client;
};
static pthread_key_t fwd_key;
static pthread_once_t fwd_once = PTHREAD_ONCE_INIT;

static void fwd_conn_free(void *p)
{
    struct fwd_conn *fc = p;
    kms_cli_http_destroy(&fc->client);
    free(fc);
}

static void fwd_key_init(void)
{
    (void)pthread_key_create(&fwd_key, fwd_conn_free);
}

/* This thread's client for leader (created, or replaced when the active changed). */
static struct kms_cli_http *fwd_client(struct kms_ha *ha, const char *leader)
{
    struct kms_cli_http_opts co;
    char err[256];

    pthread_once(&fwd_once, fwd_key_init);
    struct fwd_conn *fc = pthread_getspecific(fwd_key);
    if (fc == NULL) {
        if ((fc = calloc(1, sizeof(*fc))) == NULL) {
            return NULL;
        }
        if (pthread_setspecific(fwd_key, fc) != 0) {
            free(fc);
            return NULL;
        }
    }
    if (fc->client != NULL && strcmp(fc->addr, leader) == 0) {
        return fc->client;
    }
    kms_cli_http_destroy(&fc->client);
    memset(&co, 0, sizeof(co));
    co.addr = leader;
    co.timeout_ms = (int)ha->o.forward_timeout_ms;
    co.ca_cert = ha->o.forward_ca_cert;
    co.keepalive = true;
    if (kms_cli_http_create(&co, &fc->client, err, sizeof(err)) != 0) {
        return NULL;
    }
    snprintf(fc->addr, sizeof(fc->addr), "%s", leader);
    return fc->client;
}

/* Drop this thread's kept connection (after a transport error). */
static void fwd_client_drop(void)
{
    struct fwd_conn *fc = pthread_getspecific(fwd_key);
    if (fc != NULL) {
        kms_cli_http_destroy(&fc->client);
    }
}

static bool quick_forward(const struct kms_http_req *req);

static void forward(struct kms_ha *ha, const char *leader, const struct kms_http_req *req,
                    struct kms_http_resp *resp)
{
    struct kms_cli_header hdrs[MAX_FWD_HEADERS];
    struct kms_cli_http *client;
    struct kms_cli_resp r;
    char err[256], xff[80], port[16];
    size_t n = 0;

    for (size_t i = 0; i < req->nheaders && n < MAX_FWD_HEADERS - 4; i++) {
        if (!hop_by_hop(req->headers[i].name)) {
            hdrs[n].name = req->headers[i].name;
            hdrs[n++].value = req->headers[i].value;
        }
    }
    hdrs[n].name = FORWARDED_HEADER;
    hdrs[n++].value = ha->replica;
    hdrs[n].name = FORWARD_AUTH_HEADER;
    hdrs[n++].value = ha->o.forward_secret;
    snprintf(xff, sizeof(xff), "%s", req->remote_addr != NULL ? req->remote_addr : "");
    if (xff[0] != '\0') {
        hdrs[n].name = "X-Forwarded-For";
        hdrs[n++].value = xff;
        snprintf(port, sizeof(port), "%d", req->remote_port);
        hdrs[n].name = FORWARDED_PORT_HEADER;
        hdrs[n++].value = port;
    }
    if ((client = fwd_client(ha, leader)) == NULL) {
        ha_error(500, "invalid address of the active replica", resp);
        return;
    }
    /* a request that may run long there (a key generation, a batch of RSA signatures: about a
     * minute) is given the long bound: cut off at the short one, it was answered 503 while the
     * active carried it out, and clients that retry a 5xx ran it again */
    kms_cli_http_set_timeout(client, (int)(quick_forward(req) ? ha->o.forward_timeout_ms
                                                              : ha->o.forward_long_timeout_ms));
    bool has_body = req->body_len > 0 || strcmp(req->method, "POST") == 0 ||
                    strcmp(req->method, "PUT") == 0 || strcmp(req->method, "PATCH") == 0;
    if (kms_cli_http_request(
            client, req->method, req->target, hdrs, n,
            has_body ? (const void *)(req->body != NULL ? req->body : (const uint8_t *)"") : NULL,
            req->body_len, &r, err, sizeof(err)) != 0) {
        fwd_client_drop();
        ha_log(ha, "warn", "cannot forward a request to the active replica", err);
        ha_error(503, "the active kmsd replica cannot be reached", resp);
        return;
    }
    memset(resp, 0, sizeof(*resp));
    resp->status = r.status;
    resp->body = r.body; /* taken over: kms_http_resp_dispose frees it */
    resp->body_len = r.len;
    r.body = NULL;
    if (r.content_type[0] != '\0' && strncasecmp(r.content_type, "application/json", 16) != 0) {
        snprintf(resp->content_type, sizeof(resp->content_type), "%s", r.content_type);
    }
    copy_resp_headers(r.headers, resp);
    kms_cli_resp_dispose(&r);
}

static void redirect(const char *leader, const struct kms_http_req *req, struct kms_http_resp *resp)
{
    memset(resp, 0, sizeof(*resp));
    resp->status = 307;
    snprintf(resp->extra[0].name, sizeof(resp->extra[0].name), "Location");
    int n =
        snprintf(resp->extra[0].value, sizeof(resp->extra[0].value), "%s%s", leader, req->target);
    if (n < 0 || (size_t)n >= sizeof(resp->extra[0].value)) {
        ha_error(503, "the redirect location is too long", resp);
        return;
    }
    resp->nextra = 1;
}

static const char *get_header(const struct kms_http_req *req, const char *name)
{
    for (size_t i = 0; i < req->nheaders; i++) {
        if (strcasecmp(req->headers[i].name, name) == 0) {
            return req->headers[i].value;
        }
    }
    return NULL;
}

/* Whether req carries the replicas' forwarding secret (it comes from another replica). */
static bool from_a_replica(const struct kms_ha *ha, const struct kms_http_req *req)
{
    const char *auth = get_header(req, FORWARD_AUTH_HEADER);
    size_t sl = strlen(ha->o.forward_secret);
    return auth != NULL && sl > 0 && strlen(auth) == sl &&
           kms_ct_eq(auth, ha->o.forward_secret, sl);
}

/*
 * A request forwarded by a replica that proved it holds the seal key (the forwarding secret):
 * its X-Forwarded-For (one IP address) and port become the request's remote address. Anything
 * else keeps the connection's own address.
 */
static void forwarded_client(const struct kms_ha *ha, const struct kms_http_req *req,
                             struct kms_http_req *copy, char *addr, size_t cap)
{
    const char *xff = get_header(req, "X-Forwarded-For");
    const char *port = get_header(req, FORWARDED_PORT_HEADER);
    uint8_t ip[16];
    int64_t p = 0;

    *copy = *req;
    if (!from_a_replica(ha, req) || xff == NULL || strlen(xff) >= cap ||
        (inet_pton(AF_INET, xff, ip) != 1 && inet_pton(AF_INET6, xff, ip) != 1)) {
        return;
    }
    snprintf(addr, cap, "%s", xff);
    copy->remote_addr = addr;
    copy->remote_port =
        port != NULL && kms_int_parse(port, &p) && p >= 0 && p <= 65535 ? (int)p : 0;
}

/* sys/health with an X-Vault-Namespace naming a namespace other than root: the active
 * answers it (400 in a namespace, 403/404 for an unknown one), so the standby forwards it. */
static bool health_in_namespace(const struct kms_http_req *req)
{
    const char *ns = get_header(req, "X-Vault-Namespace");
    if (ns == NULL) {
        return false;
    }
    size_t b = strspn(ns, "/ "), e = strlen(ns);
    while (e > b && (ns[e - 1] == '/' || ns[e - 1] == ' ')) {
        e--;
    }
    return !(e == b || (e - b == 4 && strncmp(ns + b, "root", 4) == 0));
}

/* The service answers req; called with api_lock held for reading, which it releases. */
static void serve_active(struct kms_ha *ha, const struct kms_http_req *req,
                         struct kms_http_resp *resp)
{
    struct kms_http_req fwd;
    char addr[64];
    forwarded_client(ha, req, &fwd, addr, sizeof(addr));
    guard_refused = guard_allowed = false;
    kms_api_handle(ha->api, &fwd, resp);
    note_store_status(ha); /* for its health answers once it stands by again */
    bool refused = guard_refused, committed = guard_allowed && !refused;
    guard_refused = guard_allowed = false;
    if (refused || (!committed && !ha_lease_ok(ha))) {
        /* the lease ran out while the answer was computed (or at a COMMIT it refused,
         * even when a heartbeat renewed it since): the answer is not given. A request that
         * committed within the lease keeps its answer, whatever the lease did since: its
         * change is made and audited, and a 503 would have its client repeat it (a second
         * rotation, a sys/init whose root token is lost) */
        kms_http_resp_dispose(resp);
        ha_error(503, "kmsd is not the active replica any more", resp);
    }
    pthread_rwlock_unlock(&ha->api_lock);
}

static void standby_health_answer(struct kms_ha *ha, const struct kms_http_req *req,
                                  struct kms_http_resp *resp)
{
    standby_health(ha, req, resp);
    const char *ns = get_header(req, "X-Vault-Namespace");
    if (ns != NULL && strlen(ns) < sizeof(resp->extra[0].value) &&
        resp->nextra < KMS_HTTP_MAX_EXTRA_HEADERS) {
        /* echoed as the active echoes it */
        snprintf(resp->extra[resp->nextra].name, sizeof(resp->extra[0].name), "X-Vault-Namespace");
        snprintf(resp->extra[resp->nextra].value, sizeof(resp->extra[0].value), "%s", ns);
        resp->nextra++;
    }
}

static bool is_get(const struct kms_http_req *req)
{
    return strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
}

bool kms_ha_answer_now(struct kms_ha *ha, const struct kms_http_req *req,
                       struct kms_http_resp *resp)
{
    if (!is_get(req)) {
        return false;
    }
    if (path_is(req->target, "sys/leader")) {
        leader_status(ha, resp);
        return true;
    }
    if (!path_is(req->target, "sys/health")) {
        return false;
    }
    /* the active's health is the API's (no storage, not audited); a promotion that holds the
     * lock sends it to the handler threads, which wait for it. A replica that is not active
     * answers without the lock: a step-down holds it until the requests in flight are done */
    if (atomic_load(&ha->active)) {
        if (pthread_rwlock_tryrdlock(&ha->api_lock) != 0) {
            return false;
        }
        if (atomic_load(&ha->active) && ha->api != NULL && ha_lease_ok(ha)) {
            serve_active(ha, req, resp);
            return true;
        }
        pthread_rwlock_unlock(&ha->api_lock);
    }
    if (health_in_namespace(req)) {
        return false; /* forwarded to the active */
    }
    standby_health_answer(ha, req, resp);
    return true;
}

static bool seg_is(const char *s, size_t n, const char *word)
{
    return strlen(word) == n && memcmp(s, word, n) == 0;
}

/* Whether one of the segments [from, to) is one of the n words. */
static bool segs_hold(const char *const *seg, const size_t *len, size_t from, size_t to,
                      const char *const *words, size_t n)
{
    for (size_t m = from; m < to; m++) {
        for (size_t w = 0; w < n; w++) {
            if (seg_is(seg[m], len[m], words[w])) {
                return true;
            }
        }
    }
    return false;
}

/*
 * A standby has no service to resolve routes with: a forward is quick when it is a read or one
 * of Transit's data-plane operations on a small body, which the active answers from its key
 * cache in microseconds; anything else (a key creation, a signature, a login, a batch) may
 * keep the active, and so the forward, busy for long.
 *
 * By whole segments of the path as sent: "<mount>/<op>/..." with the op's own number of
 * segments after it (encrypt/k, hmac/k[/alg], datakey/plaintext/k, hash[/alg], random[/a[/b]]),
 * the op not a key's name (keys/hash, sign/random, restore/encrypt) nor under sys/ or auth/,
 * and no "keys" after it. A substring match took "transit/keys/hash-rsa" or
 * "transit/keys/random" (a key creation: a key generation, maybe an RSA one) for a quick one,
 * cut off at ha_forward_timeout. Anything unsure is not quick: the long bound only waits.
 */
static bool quick_forward(const struct kms_http_req *req)
{
    static const struct {
        const char *op;
        size_t min, max; /* segments after it */
    } ops[] = {{"encrypt", 1, 1}, {"decrypt", 1, 1}, {"rewrap", 1, 1}, {"hmac", 1, 2},
               {"datakey", 2, 2}, {"hash", 0, 1},    {"random", 0, 2}};
    static const char *const not_after[] = {"keys",   "sign",   "verify", "restore",
                                            "backup", "export", "sys",    "auth"};
    static const char *const keys[] = {"keys"};
    enum { MAX_SEGS = 32 };
    const char *seg[MAX_SEGS];
    size_t len[MAX_SEGS], n = 0;

    if (is_get(req) || strcmp(req->method, "LIST") == 0) {
        return true;
    }
    if (req->body_len > KMS_LONG_BODY) {
        return false;
    }
    size_t plen = strcspn(req->target, "?");
    if (plen < 4 || strncmp(req->target, "/v1/", 4) != 0) {
        return false;
    }
    for (size_t i = 4; i <= plen;) {
        size_t j = i;
        while (j < plen && req->target[j] != '/') {
            j++;
        }
        if (n == MAX_SEGS) {
            return false;
        }
        seg[n] = req->target + i;
        len[n++] = j - i;
        i = j + 1;
    }
    for (size_t i = 1; i < n; i++) {
        size_t after = n - 1 - i;
        for (size_t k = 0; k < sizeof(ops) / sizeof(ops[0]); k++) {
            if (seg_is(seg[i], len[i], ops[k].op) && after >= ops[k].min && after <= ops[k].max &&
                !segs_hold(seg, len, 0, i, not_after, sizeof(not_after) / sizeof(not_after[0])) &&
                !segs_hold(seg, len, i + 1, n, keys, 1)) {
                return true;
            }
        }
    }
    return false;
}

bool kms_ha_may_wait(struct kms_ha *ha, const struct kms_http_req *req)
{
    if (!atomic_load(&ha->active)) {
        return !quick_forward(req); /* as below, without waiting for a step-down */
    }
    if (pthread_rwlock_tryrdlock(&ha->api_lock) != 0) {
        return true; /* a promotion or step-down holds the service */
    }
    bool wait;
    if (atomic_load(&ha->active) && ha->api != NULL) {
        wait = kms_api_may_run_long(ha->api, req);
    } else {
        wait = !quick_forward(req); /* a standby forwards it (or refuses it) */
    }
    pthread_rwlock_unlock(&ha->api_lock);
    return wait;
}

void kms_ha_handle(struct kms_ha *ha, const struct kms_http_req *req, struct kms_http_resp *resp)
{
    char leader[256];
    bool get = is_get(req);

    if (get && path_is(req->target, "sys/leader")) {
        leader_status(ha, resp);
        return;
    }
    /* only an active replica takes the service's lock: a step-down holds it (active already
     * false) until the requests in flight are done, a long one (a big batch of RSA signatures)
     * for a minute, and this replica's answers as a standby must not wait for that. Nor
     * must a request that found it active just before a step-down began: the lock prefers
     * writers, so it is busy from the step-down's first moment, and the request is answered
     * as by a standby (it waited for the whole step-down) */
    if (atomic_load(&ha->active)) {
#ifdef KMS_TEST_HOOKS
        hook_hold_before_lock();
#endif
        if (pthread_rwlock_tryrdlock(&ha->api_lock) == 0) {
            if (atomic_load(&ha->active) && ha->api != NULL && ha_lease_ok(ha)) {
                serve_active(ha, req, resp);
                return;
            }
            pthread_rwlock_unlock(&ha->api_lock);
        }
    }
    if (get && path_is(req->target, "sys/health") && !health_in_namespace(req)) {
        standby_health_answer(ha, req, resp);
        return;
    }
    pthread_mutex_lock(&ha->mu);
    snprintf(leader, sizeof(leader), "%s", ha->leader_addr);
    pthread_mutex_unlock(&ha->mu);
    /* a replica's forward that reached a standby is not forwarded again (no loops); a
     * client's own X-Kmsd-Forwarded, without the secret, changes nothing */
    if (leader[0] == '\0' || strcmp(leader, ha->api_addr) == 0 ||
        (get_header(req, FORWARDED_HEADER) != NULL && from_a_replica(ha, req))) {
        ha_error(503, "no active kmsd replica", resp);
        return;
    }
    if (ha->o.redirect) {
        redirect(leader, req, resp);
        return;
    }
    forward(ha, leader, req, resp);
}

int kms_ha_submit(struct kms_ha *ha, void (*fn)(void *arg), void *arg)
{
    return kms_pool_submit(ha->pool, fn, arg);
}

int kms_ha_with_api(struct kms_ha *ha, int (*fn)(void *arg, struct kms_api *api), void *arg)
{
    int rc = 1;
    /* never waits for the lock: the controller's tick runs on the main loop, which waited
     * for a step-down held by a long request, and with it every signal (SIGHUP's audit
     * reopen, SIGTERM); a tick skipped comes again a second later */
    if (!atomic_load(&ha->active) || pthread_rwlock_tryrdlock(&ha->api_lock) != 0) {
        return rc;
    }
    if (atomic_load(&ha->active) && ha->api != NULL && ha_lease_ok(ha)) {
        rc = fn(arg, ha->api);
    }
    pthread_rwlock_unlock(&ha->api_lock);
    return rc;
}

bool kms_ha_is_active(struct kms_ha *ha)
{
    return atomic_load(&ha->active) && ha_lease_ok(ha);
}

/* ---- life cycle -------------------------------------------------------------------------- */

int kms_ha_create(const struct kms_ha_opts *o, struct kms_ha **out, struct kms_err *err)
{
    struct kms_ha *ha;
    pthread_rwlockattr_t ra;

    *out = NULL;
    if (o->lease_ms < 100 || o->heartbeat_ms < 10 || o->heartbeat_ms * 3 > o->lease_ms ||
        o->margin_ms < 0 || o->margin_ms >= o->lease_ms - o->heartbeat_ms) {
        return kms_err_set(err, 400,
                           "ha_lease must be at least 100ms and three heartbeats (ha_heartbeat)");
    }
    if ((ha = calloc(1, sizeof(*ha))) == NULL) {
        return kms_err_set(err, 500, "out of memory");
    }
    if (kms_pool_create(KMS_HA_THREADS, &ha->pool) != 0) {
        free(ha);
        return kms_err_set(err, 500, "out of memory");
    }
    ha->o = *o;
    if (ha->o.now_ms == NULL) {
        ha->o.now_ms = mono_ms;
    }
    pthread_rwlockattr_init(&ra);
    /* a step-down must not starve behind a stream of requests */
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&ha->api_lock, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutex_init(&ha->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ha->cond, &ca);
    pthread_condattr_destroy(&ca);
    kms_storage_set_commit_guard(o->st, commit_guard, ha);
    *out = ha;
    return 0;
}

int kms_ha_start(struct kms_ha *ha, const char *api_addr, const char *replica, struct kms_err *err)
{
    snprintf(ha->api_addr, sizeof(ha->api_addr), "%s", api_addr);
    snprintf(ha->replica, sizeof(ha->replica), "%s", replica);
    if (pthread_create(&ha->hb_thread, NULL, hb_main, ha) != 0) {
        return kms_err_set(err, 500, "cannot start the heartbeat thread");
    }
    if (pthread_create(&ha->ctl_thread, NULL, ctl_main, ha) != 0) {
        pthread_mutex_lock(&ha->mu);
        ha->stopping = true;
        pthread_cond_broadcast(&ha->cond);
        pthread_mutex_unlock(&ha->mu);
        pthread_join(ha->hb_thread, NULL);
        return kms_err_set(err, 500, "cannot start the leadership thread");
    }
    ha->started = true;
    ha_log(ha, "info", "standing by for the leader lock", api_addr);
    return 0;
}

void kms_ha_destroy(struct kms_ha **hap)
{
    struct kms_ha *ha = *hap;
    if (ha == NULL) {
        return;
    }
    /* first: what the handler threads still run uses the service (the workers, gone by now,
     * gave up on those requests' connections) */
    kms_pool_destroy(&ha->pool);
    if (ha->started) {
        pthread_mutex_lock(&ha->mu);
        ha->stopping = true;
        pthread_cond_broadcast(&ha->cond);
        pthread_mutex_unlock(&ha->mu);
        pthread_join(ha->ctl_thread, NULL);
        pthread_join(ha->hb_thread, NULL);
    }
    /* a clean release: the next leader starts without waiting out this lease */
    step_down(ha, "shutting down", true);
    kms_storage_set_commit_guard(ha->o.st, NULL, NULL);
    kms_memzero(ha->o.forward_secret, sizeof(ha->o.forward_secret));
    pthread_rwlock_destroy(&ha->api_lock);
    pthread_mutex_destroy(&ha->mu);
    pthread_cond_destroy(&ha->cond);
    free(ha);
    *hap = NULL;
}
