/*
 * metrics.c - request counters and latency histograms, lock-free.
 *
 * Every worker thread updates the same counters with relaxed atomic adds; a route's slot is
 * found by hashing the route-table row's address into a fixed open-addressed table (claimed
 * once with a compare-and-swap), so the request path takes no lock. `GET sys/metrics` renders
 * them in Prometheus text format (`?format=prometheus`) or as JSON.
 *
 * The text follows the exposition format's grouping rules, which scrapers rely on: one
 * `# HELP`/`# TYPE` pair per family, then every sample of that family together; a histogram
 * series is its `_bucket` lines in ascending `le` order ending with `+Inf`, then `_sum` and
 * `_count` (= the `+Inf` bucket). Each route is one slot, so no series appears twice.
 */
#include "api/api_int.h"
#include "audit/audit.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include <string.h>

#define SLOTS 256
#define NCODES 12
#define NBUCKETS 12

static const int codes[NCODES] = {200, 204, 207, 400, 403, 404, 405, 413, 429, 500, 503, 0};
/* upper bounds in microseconds */
static const uint64_t bounds_us[NBUCKETS] = {50,   100,   250,   500,    1000,    2500,
                                             5000, 10000, 25000, 100000, 1000000, UINT64_MAX};

struct slot {
    _Atomic(const struct kms_route *) route;
    _Atomic bool named; /* mount_type written: the slot may be rendered */
    char mount_type[32];
    _Atomic uint64_t by_code[NCODES];
    _Atomic uint64_t bucket[NBUCKETS];
    _Atomic uint64_t sum_us;
    _Atomic uint64_t items;
};

static struct slot slots[SLOTS];
static struct slot unmatched;
static _Atomic uint64_t logins[3]; /* allowed, denied, error */
static _Atomic uint64_t cache_hits, cache_misses;
static _Atomic(kms_metrics_extra_fn) extra_metrics;

static struct slot *slot_for(const struct kms_route *r, const char *mount_type)
{
    if (r == NULL) {
        return &unmatched;
    }
    size_t h = ((uintptr_t)r >> 4) % SLOTS;
    for (size_t i = 0; i < SLOTS; i++) {
        struct slot *s = &slots[(h + i) % SLOTS];
        const struct kms_route *cur = atomic_load_explicit(&s->route, memory_order_acquire);
        if (cur == r) {
            return s;
        }
        if (cur == NULL) {
            const struct kms_route *expected = NULL;
            /* the winner names the slot, then publishes the name for the renderer; until
             * then a scrape skips the slot (its counts show up in the next one) */
            if (atomic_compare_exchange_strong(&s->route, &expected, r)) {
                snprintf(s->mount_type, sizeof(s->mount_type), "%s", mount_type);
                atomic_store_explicit(&s->named, true, memory_order_release);
                return s;
            }
            if (expected == r) {
                return s;
            }
        }
    }
    return &unmatched;
}

void kms_metrics_request(const struct kms_route *r, const char *mount_type, int status,
                         uint64_t micros, size_t items)
{
    struct slot *s = slot_for(r, mount_type);
    size_t ci = NCODES - 1;
    for (size_t i = 0; i + 1 < NCODES; i++) {
        if (codes[i] == status) {
            ci = i;
            break;
        }
    }
    atomic_fetch_add_explicit(&s->by_code[ci], 1, memory_order_relaxed);
    for (size_t b = 0; b < NBUCKETS; b++) {
        if (micros <= bounds_us[b]) {
            atomic_fetch_add_explicit(&s->bucket[b], 1, memory_order_relaxed);
            break;
        }
    }
    atomic_fetch_add_explicit(&s->sum_us, micros, memory_order_relaxed);
    if (items > 0) {
        atomic_fetch_add_explicit(&s->items, items, memory_order_relaxed);
    }
}

void kms_metrics_login(int result)
{
    if (result >= 0 && result < 3) {
        atomic_fetch_add_explicit(&logins[result], 1, memory_order_relaxed);
    }
}

void kms_metrics_cache(bool hit)
{
    atomic_fetch_add_explicit(hit ? &cache_hits : &cache_misses, 1, memory_order_relaxed);
}

/* ---- rendering --------------------------------------------------------------------------- */

struct out {
    char *buf;
    size_t len, cap;
    bool oom;
};

static void outf(struct out *o, const char *fmt, ...) KMS_PRINTF(2, 3);

static void outf(struct out *o, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        size_t room = o->cap - o->len;
        va_start(ap, fmt);
        int n = vsnprintf(o->buf ? o->buf + o->len : NULL, o->buf ? room : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            return;
        }
        if ((size_t)n < room && o->buf != NULL) {
            o->len += (size_t)n;
            return;
        }
        size_t ncap = (o->cap ? o->cap * 2 : 4096) + (size_t)n;
        char *grown = realloc(o->buf, ncap);
        if (grown == NULL) {
            o->oom = true;
            return;
        }
        o->buf = grown;
        o->cap = ncap;
    }
}

static void route_label(const struct slot *s, char *out, size_t n)
{
    const struct kms_route *r = atomic_load(&s->route);
    if (r == NULL) {
        snprintf(out, n, "unmatched");
    } else {
        snprintf(out, n, "%s:%s", s->mount_type, r->tmpl);
    }
}

static void render_slot(struct out *o, const struct slot *s)
{
    char label[160];
    route_label(s, label, sizeof(label));
    for (size_t i = 0; i < NCODES; i++) {
        uint64_t v = atomic_load_explicit(&s->by_code[i], memory_order_relaxed);
        if (v != 0) {
            if (codes[i] != 0) {
                outf(o, "kmsd_requests_total{route=\"%s\",code=\"%d\"} %llu\n", label, codes[i],
                     (unsigned long long)v);
            } else {
                outf(o, "kmsd_requests_total{route=\"%s\",code=\"other\"} %llu\n", label,
                     (unsigned long long)v);
            }
        }
    }
}

static void render_hist(struct out *o, const struct slot *s)
{
    char label[160];
    uint64_t cum = 0;
    route_label(s, label, sizeof(label));
    for (size_t b = 0; b < NBUCKETS; b++) {
        cum += atomic_load_explicit(&s->bucket[b], memory_order_relaxed);
        if (bounds_us[b] == UINT64_MAX) {
            outf(o, "kmsd_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n", label,
                 (unsigned long long)cum);
        } else {
            outf(o, "kmsd_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n", label,
                 (double)bounds_us[b] / 1e6, (unsigned long long)cum);
        }
    }
    outf(o, "kmsd_request_duration_seconds_sum{route=\"%s\"} %.6f\n", label,
         (double)atomic_load(&s->sum_us) / 1e6);
    outf(o, "kmsd_request_duration_seconds_count{route=\"%s\"} %llu\n", label,
         (unsigned long long)cum);
}

static bool slot_used(const struct slot *s)
{
    if (s != &unmatched && !atomic_load_explicit(&s->named, memory_order_acquire)) {
        return false;
    }
    for (size_t b = 0; b < NBUCKETS; b++) {
        if (atomic_load_explicit(&s->bucket[b], memory_order_relaxed) != 0) {
            return true;
        }
    }
    return false;
}

/* The store's record counts (all 0 when the store cannot be read). */
static void count_store(struct kms_storage *st, size_t c[4])
{
    struct kms_txn *txn = NULL;

    c[0] = c[1] = c[2] = c[3] = 0;
    if (kms_storage_txn_begin(st, false, &txn) == 0) {
        if (kms_storage_count(txn, KMS_DB_KEYS, &c[0]) != 0 ||
            kms_storage_count(txn, KMS_DB_KEY_VERSIONS, &c[1]) != 0 ||
            kms_storage_count(txn, KMS_DB_KMSKEYS, &c[2]) != 0 ||
            kms_storage_count(txn, KMS_DB_TOKENS, &c[3]) != 0) {
            c[0] = c[1] = c[2] = c[3] = 0;
        }
        kms_storage_txn_abort(&txn);
    }
}

/*
 * On PostgreSQL the counts are reused for 100 times as long as counting took. LMDB keeps them
 * (every scrape counts afresh), PostgreSQL counts rows: a million tokens took ~40 ms a scrape,
 * and a client scraping in a loop (no token needed with unauthenticated_metrics_access) kept
 * a database backend counting full time. A scrape that finds another one counting uses the
 * previous counts rather than counting too.
 */
static pthread_mutex_t counts_mu = PTHREAD_MUTEX_INITIALIZER;
static size_t counts[4];
static int64_t counts_until_us; /* 0: never counted */
static bool counting;

static void store_counts(struct kms_api *api, size_t c[4])
{
    struct kms_storage *st = kms_api_storage(api);

    if (strcmp(kms_storage_backend_name(st), "postgresql") != 0) {
        count_store(st, c);
        return;
    }
    pthread_mutex_lock(&counts_mu);
    int64_t start = kms_api_mono_us();
    if (counts_until_us != 0 && (counting || start < counts_until_us)) {
        memcpy(c, counts, sizeof(counts));
        pthread_mutex_unlock(&counts_mu);
        return;
    }
    counting = true;
    pthread_mutex_unlock(&counts_mu);
    count_store(st, c);
    pthread_mutex_lock(&counts_mu);
    int64_t end = kms_api_mono_us();
    memcpy(counts, c, sizeof(counts));
    counts_until_us = end + 100 * (end - start);
    counting = false;
    pthread_mutex_unlock(&counts_mu);
}

char *kms_metrics_prometheus(struct kms_api *api, size_t *len)
{
    struct out o = {NULL, 0, 0, false};
    size_t nkeys = 0, nversions = 0, nkmskeys = 0, ntokens = 0;

    outf(&o, "# HELP kmsd_requests_total Requests answered, by route and status code.\n"
             "# TYPE kmsd_requests_total counter\n");
    for (size_t i = 0; i < SLOTS; i++) {
        if (slot_used(&slots[i])) {
            render_slot(&o, &slots[i]);
        }
    }
    if (slot_used(&unmatched)) {
        render_slot(&o, &unmatched);
    }
    outf(&o, "# HELP kmsd_request_duration_seconds Time from parsed request to response.\n"
             "# TYPE kmsd_request_duration_seconds histogram\n");
    for (size_t i = 0; i < SLOTS; i++) {
        if (slot_used(&slots[i])) {
            render_hist(&o, &slots[i]);
        }
    }
    if (slot_used(&unmatched)) {
        render_hist(&o, &unmatched);
    }
    outf(&o, "# HELP kmsd_batch_items_total Items processed in batch requests, by route.\n"
             "# TYPE kmsd_batch_items_total counter\n");
    for (size_t i = 0; i < SLOTS; i++) {
        uint64_t v = atomic_load(&slots[i].items);
        if (v != 0 && slot_used(&slots[i])) {
            char label[160];
            route_label(&slots[i], label, sizeof(label));
            outf(&o, "kmsd_batch_items_total{route=\"%s\"} %llu\n", label, (unsigned long long)v);
        }
    }
    static const char *const lr[3] = {"allowed", "denied", "error"};
    outf(&o, "# HELP kmsd_logins_total Logins, by result.\n# TYPE kmsd_logins_total counter\n");
    for (size_t i = 0; i < 3; i++) {
        outf(&o, "kmsd_logins_total{result=\"%s\"} %llu\n", lr[i],
             (unsigned long long)atomic_load(&logins[i]));
    }
    outf(&o,
         "# HELP kmsd_key_cache_requests_total Key cache lookups, by result.\n"
         "# TYPE kmsd_key_cache_requests_total counter\n"
         "kmsd_key_cache_requests_total{result=\"hit\"} %llu\n"
         "kmsd_key_cache_requests_total{result=\"miss\"} %llu\n",
         (unsigned long long)atomic_load(&cache_hits),
         (unsigned long long)atomic_load(&cache_misses));
    size_t c[4];
    store_counts(api, c);
    nkeys = c[0];
    nversions = c[1];
    nkmskeys = c[2];
    ntokens = c[3];
    outf(&o,
         "# HELP kmsd_transit_keys Transit keys in the store.\n# TYPE kmsd_transit_keys gauge\n"
         "kmsd_transit_keys %zu\n"
         "# HELP kmsd_transit_key_versions Transit key versions in the store.\n"
         "# TYPE kmsd_transit_key_versions gauge\nkmsd_transit_key_versions %zu\n"
         "# HELP kmsd_kmskeys KMSKey objects in the store.\n# TYPE kmsd_kmskeys gauge\n"
         "kmsd_kmskeys %zu\n"
         "# HELP kmsd_tokens Tokens in the store.\n# TYPE kmsd_tokens gauge\nkmsd_tokens %zu\n",
         nkeys, nversions, nkmskeys, ntokens);
    /* a server without audit devices still has a broker (of none): its zeros describe no log
       (docs/operations.md, Metrics: these families come with an audit device only) */
    struct kms_audit *audit = kms_api_audit(api);
    if (audit != NULL && kms_audit_ndevices(audit) > 0) {
        struct kms_audit_stats as;
        kms_audit_stats_get(audit, &as);
        outf(&o,
             "# HELP kmsd_audit_queue_batches Audit record batches waiting to be written.\n"
             "# TYPE kmsd_audit_queue_batches gauge\nkmsd_audit_queue_batches %zu\n"
             "# HELP kmsd_audit_pending_lines Audit lines queued whose group commit has not "
             "finished.\n# TYPE kmsd_audit_pending_lines gauge\nkmsd_audit_pending_lines %zu\n"
             "# HELP kmsd_audit_fsyncs_total fdatasync calls on audit files.\n"
             "# TYPE kmsd_audit_fsyncs_total counter\nkmsd_audit_fsyncs_total %llu\n"
             "# HELP kmsd_audit_fsync_seconds_total Time spent in those fdatasync calls.\n"
             "# TYPE kmsd_audit_fsync_seconds_total counter\n"
             "kmsd_audit_fsync_seconds_total %.6f\n"
             "# HELP kmsd_audit_failures_total Records no audit device could take (the request "
             "failed).\n# TYPE kmsd_audit_failures_total counter\nkmsd_audit_failures_total "
             "%llu\n",
             as.queued, as.pending, (unsigned long long)as.fsyncs, (double)as.fsync_us / 1e6,
             (unsigned long long)as.failures);
    }
    kms_metrics_extra_fn extra = atomic_load(&extra_metrics);
    if (!o.oom && extra != NULL && extra(&o.buf, &o.len, &o.cap) != 0) {
        o.oom = true;
    }
    if (o.oom) {
        free(o.buf);
        return NULL;
    }
    *len = o.len;
    return o.buf;
}

void kms_metrics_set_extra(kms_metrics_extra_fn fn)
{
    atomic_store(&extra_metrics, fn);
}
