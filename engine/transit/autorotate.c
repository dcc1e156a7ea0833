/*
 * autorotate.c - Transit's auto_rotate_period (transit-api.md 5): the engine's tick rotates
 * every key whose latest version is older than its period, as OpenBao's periodic function does.
 *
 * Design notes
 *
 * - A scan walks every transit mount of every namespace and every key policy in it (one read
 *   transaction per mount), rotates the keys that are due and notes the earliest future due
 *   time. The next scan runs at that time, an hour after this one at the latest (OpenBao scans
 *   hourly) and a minute after it at the earliest (SCAN_MIN_GAP: a store of many keys is not
 *   walked more often than that). So a key rotates within a minute of becoming due.
 * - A write that sets a period (create, config, import, restore) kicks the schedule: the next
 *   tick scans, at most a minute after the last scan, instead of waiting out the hour.
 * - Each rotation is its own write transaction that checks again that the key is due (a manual
 *   rotation in between moves it on), and is audited like the KMSKey controller's: a durable
 *   request record first (none: no rotation), subject system:kmsd-autorotate, op rotate, the
 *   new version in the response record.
 * - The tick runs where the KMSKey controller runs: once a second on the server's main loop,
 *   on the active replica only (HA). The time it is given decides everything (tests pass
 *   their own).
 */
#include "engine/transit/transit_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCAN_MAX_GAP 3600 /* seconds: OpenBao's hourly scan */
#define SCAN_MIN_GAP 60   /* seconds between two scans, whatever asks for one */
#define AUTOROTATE_SUBJECT "system:kmsd-autorotate"

/* Key names, each with its policy as the scan read it (periodic) or none (due). */
struct names {
    char **v;
    struct kms_key_policy *p;
    size_t n, cap;
};

struct scan {
    struct kms_transit *t;
    int64_t now;
    kms_tick_report_fn report;
    int64_t earliest; /* the earliest future due time seen (0 = none) */
    int rc;
    const struct kms_ns *ns; /* the namespace whose mounts are being visited */
    size_t prefix_len;
    struct names periodic; /* keys of the mount with a period */
};

static void names_free(struct names *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i]);
    }
    free(l->v);
    free(l->p);
    memset(l, 0, sizeof(*l));
}

static int names_add(struct names *l, const char *s, size_t n, const struct kms_key_policy *p)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        char **v = realloc(l->v, cap * sizeof(*v));
        if (v == NULL) {
            return -1;
        }
        l->v = v;
        struct kms_key_policy *ps = realloc(l->p, cap * sizeof(*ps));
        if (ps == NULL) {
            return -1;
        }
        l->p = ps;
        l->cap = cap;
    }
    if ((l->v[l->n] = strndup(s, n)) == NULL) {
        return -1;
    }
    if (p != NULL) {
        l->p[l->n] = *p;
    }
    l->n++;
    return 0;
}

static void note_due(struct scan *s, int64_t due)
{
    if (due > s->now && (s->earliest == 0 || due < s->earliest)) {
        s->earliest = due;
    }
}

/* Policies of one mount: the keys that have a period, with their policies. */
static int policy_cb(const uint8_t *key, size_t keylen, const uint8_t *val, size_t vallen,
                     void *arg)
{
    struct scan *s = arg;
    struct kms_key_policy p;
    if (keylen <= s->prefix_len || kms_key_policy_decode(val, vallen, &p) != 0) {
        return 0; /* not a policy this version reads: the request path reports it */
    }
    if (p.auto_rotate_period > 0 && names_add(&s->periodic, (const char *)key + s->prefix_len,
                                              keylen - s->prefix_len, &p) != 0) {
        return -1;
    }
    return 0;
}

/* Rotate one due key, audited; a missing audit record means no rotation. */
static void rotate_one(struct scan *s, const struct kms_mount *m, const char *name)
{
    char path[KMS_PATH_MAX * 2 + 32], detail[32];
    struct kms_audit_rec *rec = NULL;
    struct kms_key_policy p;
    struct kms_err err, aerr;
    int64_t next = 0;

    kms_err_clear(&err);
    snprintf(path, sizeof(path), "%skeys/%s/rotate", m->path, name);
    struct kms_api_audit_event ev = {.ns_id = m->ns_id,
                                     .ns_path = s->ns->path,
                                     .path = path,
                                     .operation = "update",
                                     .op = "rotate",
                                     .key = name,
                                     .subject = AUTOROTATE_SUBJECT};
    if (kms_api_audit_internal_begin(s->t->api, &ev, &rec, &err) != 0) {
        s->report("auto-rotation-failed", m->ns_id, "", name, err.msg);
        s->rc = -1;
        return;
    }
    int r = kms_transit_key_rotate_due(s->t, m, name, s->now, &p, &next, &err);
    uint32_t v = r == 1 ? p.latest_version : 0;
    if (r == KMS_STORAGE_NOTFOUND) {
        kms_err_set(&err, 400, "key not found");
    }
    if (kms_api_audit_internal_end(&rec, &ev, r == 1 ? &v : NULL, r == 1 ? 1 : 0,
                                   r == 1 || r == 0 ? NULL : err.msg, &aerr) != 0) {
        s->report("auto-rotation-audit-failed", m->ns_id, "", name, aerr.msg);
    }
    if (r == 1) {
        snprintf(detail, sizeof(detail), "%u", v);
        s->report("auto-rotated", m->ns_id, "", name, detail);
    } else if (r < 0) {
        s->report("auto-rotation-failed", m->ns_id, "", name, err.msg);
        s->rc = -1;
    }
    note_due(s, next);
}

static int scan_mount(const struct kms_mount *m, void *arg)
{
    struct scan *s = arg;
    char prefix[96];
    struct kms_txn *txn = NULL;
    struct names due;

    if (strcmp(m->type, "transit") != 0) {
        return 0;
    }
    memset(&due, 0, sizeof(due));
    s->prefix_len = kms_mount_prefix(m, prefix, sizeof(prefix));
    if (s->prefix_len >= sizeof(prefix) ||
        kms_storage_txn_begin(kms_api_storage(s->t->api), false, &txn) != 0) {
        s->rc = -1;
        return 0;
    }
    if (kms_storage_scan(txn, KMS_DB_KEYS, prefix, s->prefix_len, NULL, 0, true, policy_cb, s) !=
        0) {
        s->rc = -1;
    }
    /* after the scan, in its transaction: when each is due (its latest version's time) */
    for (size_t i = 0; i < s->periodic.n; i++) {
        int64_t at = 0;
        if (kms_transit_key_due(m, txn, s->periodic.v[i], &s->periodic.p[i], &at) != 0) {
            s->rc = -1;
            continue;
        }
        if (at != 0 && s->now > at) {
            if (names_add(&due, s->periodic.v[i], strlen(s->periodic.v[i]), NULL) != 0) {
                s->rc = -1;
            }
        } else {
            note_due(s, at);
        }
    }
    kms_storage_txn_abort(&txn);
    names_free(&s->periodic);
    for (size_t i = 0; i < due.n; i++) {
        rotate_one(s, m, due.v[i]);
    }
    names_free(&due);
    return 0;
}

static int scan_ns(const struct kms_ns *ns, void *arg)
{
    struct scan *s = arg;
    const struct kms_ns *outer = s->ns;
    s->ns = ns;
    if (kms_registry_mount_list(s->t->api, ns->id, scan_mount, s) != 0) {
        s->rc = -1;
    }
    /* the children (the registry hands copies: no lock is held here) */
    if (kms_registry_ns_list(s->t->api, ns->path, scan_ns, s) != 0) {
        s->rc = -1;
    }
    s->ns = outer;
    return 0;
}

void kms_transit_autorotate_kick(struct kms_transit *t)
{
    atomic_store(&t->ar_kick, true);
}

int kms_transit_tick(void *state, int64_t now, int64_t *next_due, kms_tick_report_fn report)
{
    struct kms_transit *t = state;
    struct kms_ns root;

    if (atomic_exchange(&t->ar_kick, false) && t->ar_next_scan > t->ar_last_scan + SCAN_MIN_GAP) {
        t->ar_next_scan = t->ar_last_scan + SCAN_MIN_GAP;
    }
    if (t->ar_next_scan != 0 && now < t->ar_next_scan) {
        *next_due = t->ar_due;
        return 0;
    }
    struct scan s = {.t = t, .now = now, .report = report};
    if (kms_registry_ns_get(t->api, "", &root) == 0) {
        (void)scan_ns(&root, &s);
    } else {
        s.rc = -1;
    }
    int64_t next = now + SCAN_MAX_GAP;
    if (s.earliest != 0 && s.earliest < next) {
        next = s.earliest + 1; /* due means strictly after its time */
    }
    if (s.rc != 0 || next < now + SCAN_MIN_GAP) {
        next = now + SCAN_MIN_GAP; /* a failure is tried again a minute later */
    }
    t->ar_last_scan = now;
    t->ar_next_scan = next;
    /* what is due (a key's rotation, a failure's retry); the hourly scan itself is not */
    t->ar_due = s.rc != 0 || s.earliest != 0 ? next : 0;
    *next_due = t->ar_due;
    return s.rc;
}
