/*
 * kms.c - the KMSKey engine: Kube-DC's KMSKey objects served by kmsd under `kms/` in an
 * organisation namespace, and the in-process controller that acts on them.
 *
 * A KMSKey `<name>` of project `<project>` in organisation (namespace) `<org>` owns the Transit
 * key `<org>-<project>-<name>` of the organisation's `transit/` mount (created on demand). The
 * stored record holds what the user declared (spec) and the controller's own state (the
 * deletion countdown); everything else in `status` (current version, floor, last rotation) is
 * read live from the Transit key, so raw Transit operations can never make it stale.
 *
 * The controller is a schedule kept in memory (one entry per KMSKey: next rotation due,
 * deletion deadline) and loaded from storage at start-up, so it survives restarts and catches
 * up after downtime: an overdue rotation happens once, on the first tick. kms_api_tick() is
 * driven by the server's timer.
 *
 * Ownership. '-' is legal in projects and names, so `<org>-b-c-d` reads as KMSKey `c-d` of
 * project `b` and as KMSKey `d` of project `b-c`. Beside the schedule the engine keeps an
 * index (owners.c) of the Transit name every KMSKey owns, rebuilt from the records at start-up:
 * a KMSKey is created only when no other KMSKey (or tombstone, written when a KMSKey is
 * deleted with deletionPolicy retain, or when a project's token makes a Transit key whose name
 * other projects' could also claim: kms_kmskey_transit_created) owns its Transit name; an existing
 * Transit key nobody owns is adopted only when its name reads as no other project's; and every
 * action and the controller touch a Transit key only through the KMSKey that owns it. The same
 * index answers Transit's ownership check for project-bound tokens (kms_kmskey_transit_allows).
 */
#include "engine/kmskey/kmskey_int.h"
#include "engine/transit/transit.h"

#include <pthread.h>
#include <ctype.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define NAME_MAX_LEN KMS_KMSKEY_LABEL_MAX
#define PROJECT_MAX_LEN KMS_KMSKEY_LABEL_MAX
#define RETRY_SECONDS 10
/* Tombstones of retained (or project-made) Transit keys: "<ns id>/.retained/<project>/<name>"
 * in the KMSKey database ('.' is never part of a project, so no KMSKey list or record key
 * meets them). */
#define RETAINED_SEG ".retained"
/* The token metadata a Kubernetes login writes: the ServiceAccount's namespace, i.e. the
 * Kube-DC project the token is bound to. */
#define TOKEN_PROJECT_META "service_account_namespace"

struct sched_entry {
    char ns_id[KMS_NS_ID_LEN];
    char project[PROJECT_MAX_LEN + 1];
    char name[NAME_MAX_LEN + 1];
    int64_t interval;    /* rotation interval in seconds, 0 = no rotation */
    int64_t next_rotate; /* unix seconds, 0 = unknown (computed on the next tick) */
    int64_t delete_at;   /* unix seconds, 0 = no countdown */
};

/* The engine's state: the controller's schedule of every KMSKey. */
struct kms_sched {
    struct kms_api *api;         /* borrowed: the API owns the engine */
    struct kms_transit *transit; /* the Transit engine holding the keys */
    int64_t deletion_delay;      /* seconds */
    pthread_mutex_t lock;
    struct sched_entry *e;
    size_t n;
    struct kms_owners *owners; /* which KMSKey owns which Transit name (own lock) */
    /* Serialises KMSKey writes and deletions: the ownership check and the claim are one step. */
    pthread_mutex_t write_lock;
    bool load_failed;
};

static struct kms_sched *sched(struct kms_ctx *c)
{
    return c->estate;
}

static const char *const purposes[] = {"application", "etcd", "backup", NULL};
static const char *const algorithms[] = {"aes256-gcm96", "chacha20-poly1305", NULL};
static const char *const policies[] = {"retain", "schedule", NULL};

/* ---- names and records ------------------------------------------------------------------- */

/* The rule dns_label checks, stated whole in every refusal (kmsctl's kms_cli_check_name says
 * the same words). */
#define NAME_RULE                                                                                  \
    "a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or "  \
    "digit, at most 63 characters"

static bool dns_label(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max || !isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1])) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!(islower(ch) || isdigit(ch) || ch == '-')) {
            return false;
        }
    }
    return true;
}

/* Organisation name of a namespace: its path without the trailing '/', '/' -> '-'. */
static int org_name(const struct kms_ns *ns, char *out, size_t n)
{
    size_t len = strlen(ns->path);
    if (len == 0 || len >= n) {
        return -1;
    }
    for (size_t i = 0; i + 1 < len; i++) {
        out[i] = ns->path[i] == '/' ? '-' : ns->path[i];
    }
    out[len - 1] = '\0';
    return 0;
}

static size_t record_key(const char *ns_id, const char *project, const char *name, char *out,
                         size_t n)
{
    return (size_t)snprintf(out, n, "%s/%s/%s", ns_id, project, name);
}

/*
 * The Kube-DC project a token is bound to: the ServiceAccount namespace its Kubernetes login
 * recorded in its metadata. NULL for tokens without one (people, root, auth/token/create).
 */
static const char *token_project(const struct kms_ctx *c)
{
    if (!c->has_token) {
        return NULL;
    }
    for (size_t i = 0; i < c->token.nmeta; i++) {
        if (strcmp(c->token.meta_keys[i], TOKEN_PROJECT_META) == 0) {
            return c->token.meta_values[i];
        }
    }
    return NULL;
}

struct target {
    char org[KMS_PATH_MAX];
    char project[PROJECT_MAX_LEN + 1];
    char name[NAME_MAX_LEN + 1];
    char transit_name[KMS_PATH_MAX + 2 * (NAME_MAX_LEN + 1)];
    struct kms_mount mount; /* the org's transit/ mount (may be absent: mount.uuid empty) */
};

static int resolve_target(struct kms_ctx *c, struct target *t, bool need_name)
{
    const char *project = kms_cap(c, "project");
    const char *name = kms_cap(c, "name");
    memset(t, 0, sizeof(*t));
    if (org_name(&c->ns, t->org, sizeof(t->org)) != 0) {
        return KMS_FAIL(c, 400,
                        "KMSKeys belong to an organization namespace: send X-Vault-Namespace: "
                        "<org> or use /v1/<org>/kms/...");
    }
    const char *bound = token_project(c);
    if (bound != NULL && (project == NULL || strcmp(project, bound) != 0)) {
        /* a workload's token reaches its own project only, whatever its policies say */
        return KMS_FAILW(c, 403, "permission denied");
    }
    if (project == NULL || !dns_label(project, PROJECT_MAX_LEN)) {
        return KMS_FAIL(c, 400, "invalid project name \"%s\": must be " NAME_RULE,
                        project ? project : "");
    }
    snprintf(t->project, sizeof(t->project), "%s", project);
    if (need_name) {
        if (name == NULL || !dns_label(name, NAME_MAX_LEN)) {
            return KMS_FAIL(c, 400, "invalid KMSKey name \"%s\": must be " NAME_RULE,
                            name ? name : "");
        }
        snprintf(t->name, sizeof(t->name), "%s", name);
        snprintf(t->transit_name, sizeof(t->transit_name), "%s-%s-%s", t->org, t->project, t->name);
        if (strlen(t->transit_name) > 256) {
            return KMS_FAIL(c, 400, "the Transit key name %s is longer than 256 characters",
                            t->transit_name);
        }
    }
    (void)kms_registry_mount_get(c->api, c->ns.id, "transit/", &t->mount);
    return 0;
}

/* The Transit name without "<org>-": "<project>-<name>", the ownership index's key. */
static const char *target_rest(const struct target *t)
{
    return t->transit_name + strlen(t->org) + 1;
}

/* Whether KMSKey t of namespace ns_id owns its Transit name; *owner says who does (if any). */
static bool owns(struct kms_sched *s, const char *ns_id, const struct target *t,
                 struct kms_owner *owner)
{
    memset(owner, 0, sizeof(*owner));
    if (kms_owners_lookup(s->owners, ns_id, target_rest(t), owner) != 1) {
        return false;
    }
    return !owner->retained && strcmp(owner->project, t->project) == 0 &&
           strcmp(owner->name, t->name) == 0;
}

static size_t tombstone_key(const char *ns_id, const char *project, const char *name, char *out,
                            size_t n)
{
    return (size_t)snprintf(out, n, "%s/" RETAINED_SEG "/%s/%s", ns_id, project, name);
}

static int load_record(struct kms_api *api, const char *ns_id, const char *project,
                       const char *name, json_t **out)
{
    char key[KMS_PATH_MAX];
    struct kms_txn *txn = NULL;
    uint8_t *val = NULL;
    size_t vallen = 0;
    size_t kn = record_key(ns_id, project, name, key, sizeof(key));
    if (kms_storage_txn_begin(kms_api_storage(api), false, &txn) != 0) {
        return -1;
    }
    int g = kms_storage_get(txn, KMS_DB_KMSKEYS, key, kn, &val, &vallen);
    kms_storage_txn_abort(&txn);
    if (g == 0) {
        *out = json_loadb((const char *)val, vallen, 0, NULL);
        g = *out ? 0 : -1;
    }
    free(val);
    return g;
}

/*
 * Store a KMSKey record; drop_tombstone also removes its retained-key tombstone (adoption).
 * Every stored change moves metadata.resourceVersion on (Kubernetes': an opaque string that
 * changes whenever the object does, its spec or not; kmsctl apply reads "configured" from it).
 */
static int store_record_tx(struct kms_api *api, const char *ns_id, const char *project,
                           const char *name, json_t *rec, bool drop_tombstone)
{
    char key[KMS_PATH_MAX], tkey[KMS_PATH_MAX];
    struct kms_txn *txn = NULL;
    json_t *meta = json_object_get(rec, "metadata");
    int64_t rv = 0;
    const char *cur = json_string_value(json_object_get(meta, "resourceVersion"));
    if (cur == NULL || !kms_int_parse(cur, &rv) || rv < 0 || rv == INT64_MAX) {
        rv = 0; /* a record from before resourceVersion */
    }
    char rvs[24];
    snprintf(rvs, sizeof(rvs), "%" PRId64, rv + 1);
    if (json_object_set_new(meta, "resourceVersion", json_string(rvs)) != 0) {
        return -1;
    }
    char *text = json_dumps(rec, JSON_COMPACT);
    size_t kn = record_key(ns_id, project, name, key, sizeof(key));
    size_t tn = tombstone_key(ns_id, project, name, tkey, sizeof(tkey));
    int rc = -1;
    if (text != NULL && kms_storage_txn_begin(kms_api_storage(api), true, &txn) == 0 &&
        kms_storage_put(txn, KMS_DB_KMSKEYS, key, kn, text, strlen(text)) == 0 &&
        (!drop_tombstone || kms_storage_del(txn, KMS_DB_KMSKEYS, tkey, tn) >= 0) &&
        kms_storage_txn_commit(&txn) == 0) {
        rc = 0;
    }
    kms_storage_txn_abort(&txn);
    free(text);
    return rc;
}

static int store_record(struct kms_api *api, const char *ns_id, const char *project,
                        const char *name, json_t *rec)
{
    return store_record_tx(api, ns_id, project, name, rec, false);
}

/*
 * Delete a KMSKey record. With `created` (its creationTimestamp) a tombstone takes its place in
 * the same transaction: the Transit key it leaves behind stays its project's.
 */
static int delete_record_tx(struct kms_api *api, const char *ns_id, const char *project,
                            const char *name, const char *created)
{
    char key[KMS_PATH_MAX], tkey[KMS_PATH_MAX];
    struct kms_txn *txn = NULL;
    json_t *tomb = created ? json_pack("{s:s}", "created", created) : NULL;
    char *text = tomb ? json_dumps(tomb, JSON_COMPACT) : NULL;
    size_t kn = record_key(ns_id, project, name, key, sizeof(key));
    size_t tn = tombstone_key(ns_id, project, name, tkey, sizeof(tkey));
    int rc = -1;
    if ((created == NULL || text != NULL) &&
        kms_storage_txn_begin(kms_api_storage(api), true, &txn) == 0 &&
        kms_storage_del(txn, KMS_DB_KMSKEYS, key, kn) >= 0 &&
        (text == NULL || kms_storage_put(txn, KMS_DB_KMSKEYS, tkey, tn, text, strlen(text)) == 0) &&
        kms_storage_txn_commit(&txn) == 0) {
        rc = 0;
    }
    kms_storage_txn_abort(&txn);
    free(text);
    json_decref(tomb);
    return rc;
}

static int delete_record(struct kms_api *api, const char *ns_id, const char *project,
                         const char *name)
{
    return delete_record_tx(api, ns_id, project, name, NULL);
}

/* Remove a tombstone whose Transit key is gone (it protects nothing any more). */
static int delete_tombstone(struct kms_api *api, const char *ns_id, const char *project,
                            const char *name)
{
    char tkey[KMS_PATH_MAX];
    struct kms_txn *txn = NULL;
    size_t tn = tombstone_key(ns_id, project, name, tkey, sizeof(tkey));
    int rc = -1;
    if (kms_storage_txn_begin(kms_api_storage(api), true, &txn) == 0 &&
        kms_storage_del(txn, KMS_DB_KMSKEYS, tkey, tn) >= 0 && kms_storage_txn_commit(&txn) == 0) {
        rc = 0;
    }
    kms_storage_txn_abort(&txn);
    return rc;
}

/* ---- spec validation --------------------------------------------------------------------- */

static bool in_enum(const char *v, const char *const *allowed)
{
    for (size_t i = 0; allowed[i] != NULL; i++) {
        if (strcmp(v, allowed[i]) == 0) {
            return true;
        }
    }
    return false;
}

/*
 * The CRD's interval syntax: ^[1-9][0-9]*(d|h|m|s|ms|us|ns)([0-9]+(d|h|m|s|ms|us|ns))*$,
 * i.e. Go durations plus days, whole numbers only. Result in whole seconds, at least 1.
 */
int kms_kmskey_interval_parse(const char *s, int64_t *out)
{
    const char *p = s;
    if (*p < '1' || *p > '9') {
        return -1;
    }
    while (*p != '\0') {
        if (!isdigit((unsigned char)*p)) {
            return -1;
        }
        while (isdigit((unsigned char)*p)) {
            p++;
        }
        if (strncmp(p, "ms", 2) == 0 || strncmp(p, "us", 2) == 0 || strncmp(p, "ns", 2) == 0) {
            p += 2;
        } else if (*p == 'd' || *p == 'h' || *p == 'm' || *p == 's') {
            p++;
        } else {
            return -1;
        }
    }
    int64_t v;
    if (kms_duration_parse(s, &v) != 0 || v < 1) {
        return -1;
    }
    *out = v;
    return 0;
}

static const char *enum_list(const char *const *allowed, char *buf, size_t n)
{
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; allowed[i] != NULL && o < n; i++) {
        o += (size_t)snprintf(buf + o, n - o, "%s\"%s\"", i ? ", " : "", allowed[i]);
    }
    return buf;
}

/*
 * Build a normalised spec from the request: {"spec": {...}} (as kubectl/kmsctl apply send
 * it) or the same fields at the top level. `base` is the current spec for updates (NULL on
 * create). rotation may be {"enabled","interval"} or a bare interval string.
 */
static int spec_from_request(struct kms_ctx *c, const json_t *base, json_t **out)
{
    json_t *src = kms_param(c, "spec");
    json_t *spec = base ? json_deep_copy(base)
                        : json_pack("{s:s, s:s, s:{s:b}, s:s, s:b}", "purpose", "application",
                                    "algorithm", "aes256-gcm96", "rotation", "enabled", false,
                                    "deletionPolicy", "retain", "exportable", false);
    char buf[128];
    const char *k;
    json_t *v;

    if (src == NULL) {
        src = c->params;
    } else if (!json_is_object(src)) {
        json_decref(spec);
        return KMS_FAIL(c, 400, "spec: Invalid value: must be an object");
    }
    json_object_foreach(src, k, v)
    {
        if (strcmp(k, "purpose") == 0 || strcmp(k, "algorithm") == 0 ||
            strcmp(k, "deletionPolicy") == 0) {
            const char *const *allowed = strcmp(k, "purpose") == 0     ? purposes
                                         : strcmp(k, "algorithm") == 0 ? algorithms
                                                                       : policies;
            if (!json_is_string(v) || !in_enum(json_string_value(v), allowed)) {
                KMS_FAIL(c, 400, "spec.%s: Unsupported value: %s%s%s: supported values: %s", k,
                         json_is_string(v) ? "\"" : "",
                         json_is_string(v) ? json_string_value(v) : "(not a string)",
                         json_is_string(v) ? "\"" : "", enum_list(allowed, buf, sizeof(buf)));
                json_decref(spec);
                return -1;
            }
            json_object_set(spec, k, v);
        } else if (strcmp(k, "exportable") == 0) {
            if (!json_is_boolean(v) || json_is_true(v)) {
                json_decref(spec);
                return KMS_FAIL(c, 400,
                                "spec.exportable: Invalid value: KMSKey keys are never exportable "
                                "(must be false)");
            }
        } else if (strcmp(k, "rotation") == 0) {
            json_t *rot = json_object();
            if (json_is_string(v)) {
                json_object_set_new(rot, "enabled", json_true());
                json_object_set(rot, "interval", v);
            } else if (json_is_object(v)) {
                json_t *en = json_object_get(v, "enabled");
                json_t *iv = json_object_get(v, "interval");
                if (en != NULL && !json_is_boolean(en)) {
                    json_decref(rot);
                    json_decref(spec);
                    return KMS_FAIL(c, 400,
                                    "spec.rotation.enabled: Invalid value: must be a "
                                    "boolean");
                }
                json_object_set_new(rot, "enabled", json_boolean(json_is_true(en)));
                if (iv != NULL && !json_is_null(iv)) {
                    json_object_set(rot, "interval", iv);
                }
                /* a field rotation does not have ("enable": true) is dropped as spec's are,
                 * with the same warning: silently, rotation stayed off */
                const char *rk;
                json_t *rv;
                json_object_foreach(v, rk, rv)
                {
                    if (strcmp(rk, "enabled") != 0 && strcmp(rk, "interval") != 0) {
                        kms_warn(c, "unknown field \"spec.rotation.%s\"", rk);
                    }
                }
            } else if (!json_is_null(v)) {
                json_decref(rot);
                json_decref(spec);
                return KMS_FAIL(c, 400, "spec.rotation: Invalid value: must be an object");
            }
            json_object_set_new(spec, "rotation", rot);
        } else if (src != c->params) {
            /* what Kubernetes' field validation says (in its Warn mode) of a field it does
             * not know: the object is kept without it */
            kms_warn(c, "unknown field \"spec.%s\"", k);
        }
    }
    json_t *rot = json_object_get(spec, "rotation");
    json_t *iv = json_object_get(rot, "interval");
    int64_t secs;
    if (iv != NULL &&
        (!json_is_string(iv) || kms_kmskey_interval_parse(json_string_value(iv), &secs) != 0)) {
        KMS_FAIL(c, 400,
                 "spec.rotation.interval: Invalid value: \"%s\": must be a duration of at least "
                 "1s such as 90d, 12h, 30m or 45s",
                 json_is_string(iv) ? json_string_value(iv) : "(not a string)");
        json_decref(spec);
        return -1;
    }
    if (json_is_true(json_object_get(rot, "enabled")) && iv == NULL) {
        json_decref(spec);
        return KMS_FAIL(c, 400,
                        "spec.rotation.interval: Required value: an interval is "
                        "required when rotation is enabled");
    }
    *out = spec;
    return 0;
}

static int64_t spec_interval(const json_t *spec)
{
    json_t *rot = json_object_get(spec, "rotation");
    int64_t secs = 0;
    if (json_is_true(json_object_get(rot, "enabled")) &&
        kms_kmskey_interval_parse(json_string_value(json_object_get(rot, "interval")), &secs) !=
            0) {
        secs = 0;
    }
    return json_is_true(json_object_get(rot, "enabled")) ? secs : 0;
}

/* ---- the schedule ------------------------------------------------------------------------ */

/* Insert or replace the entry of one KMSKey (lock held by caller). */
static void sched_put_locked(struct kms_sched *s, const struct sched_entry *e)
{
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->e[i].ns_id, e->ns_id) == 0 && strcmp(s->e[i].project, e->project) == 0 &&
            strcmp(s->e[i].name, e->name) == 0) {
            s->e[i] = *e;
            return;
        }
    }
    struct sched_entry *grown = realloc(s->e, (s->n + 1) * sizeof(*grown));
    if (grown == NULL) {
        return;
    }
    s->e = grown;
    s->e[s->n++] = *e;
}

static void sched_remove_locked(struct kms_sched *s, const char *ns_id, const char *project,
                                const char *name)
{
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->e[i].ns_id, ns_id) == 0 && strcmp(s->e[i].project, project) == 0 &&
            strcmp(s->e[i].name, name) == 0) {
            s->e[i] = s->e[--s->n];
            return;
        }
    }
}

static void sched_from_record(const char *ns_id, const char *project, const char *name,
                              const json_t *rec, struct sched_entry *e)
{
    memset(e, 0, sizeof(*e));
    snprintf(e->ns_id, sizeof(e->ns_id), "%s", ns_id);
    snprintf(e->project, sizeof(e->project), "%s", project);
    snprintf(e->name, sizeof(e->name), "%s", name);
    e->interval = spec_interval(json_object_get(rec, "spec"));
    e->delete_at = json_integer_value(json_object_get(rec, "scheduled_deletion"));
    e->next_rotate = 0; /* computed from the Transit key on the next tick */
}

static void sched_update(struct kms_sched *s, const char *ns_id, const char *project,
                         const char *name, const json_t *rec)
{
    struct sched_entry e;
    sched_from_record(ns_id, project, name, rec, &e);
    pthread_mutex_lock(&s->lock);
    sched_put_locked(s, &e);
    pthread_mutex_unlock(&s->lock);
}

static int load_cb(const uint8_t *key, size_t keylen, const uint8_t *val, size_t vallen, void *arg)
{
    struct kms_sched *s = arg;
    char k[KMS_PATH_MAX];
    if (keylen >= sizeof(k)) {
        return 0;
    }
    memcpy(k, key, keylen);
    k[keylen] = '\0';
    char *p1 = strchr(k, '/');
    char *p2 = p1 ? strchr(p1 + 1, '/') : NULL;
    json_t *rec = json_loadb((const char *)val, vallen, 0, NULL);
    if (p1 != NULL && p2 != NULL && rec != NULL) {
        *p1 = '\0';
        *p2 = '\0';
        if (strcmp(p1 + 1, RETAINED_SEG) == 0) {
            /* "<ns>/.retained/<project>/<name>": a retained Transit key's tombstone */
            char *p3 = strchr(p2 + 1, '/');
            if (p3 != NULL) {
                *p3 = '\0';
                if (kms_owners_add(s->owners, k, p2 + 1, p3 + 1,
                                   json_string_value(json_object_get(rec, "created")), true,
                                   json_is_true(json_object_get(rec, "made"))) != 0) {
                    s->load_failed = true;
                }
            }
        } else {
            struct sched_entry e;
            sched_from_record(k, p1 + 1, p2 + 1, rec, &e);
            sched_put_locked(s, &e);
            json_t *created =
                json_object_get(json_object_get(rec, "metadata"), "creationTimestamp");
            if (kms_owners_add(s->owners, k, p1 + 1, p2 + 1, json_string_value(created), false,
                               false) != 0) {
                s->load_failed = true;
            }
        }
    }
    json_decref(rec);
    return s->load_failed ? -1 : 0;
}

static void sched_destroy(struct kms_sched **sp);

static int sched_create(struct kms_api *api, struct kms_transit *transit, int64_t deletion_delay,
                        struct kms_sched **out)
{
    struct kms_sched *s = calloc(1, sizeof(*s));
    struct kms_txn *txn = NULL;
    if (s == NULL) {
        return -1;
    }
    s->api = api;
    s->transit = transit;
    s->deletion_delay = deletion_delay > 0 ? deletion_delay : 30 * 86400;
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->write_lock, NULL);
    /* an incomplete ownership index would let one project take another's key: fail instead */
    if (kms_owners_create(&s->owners) != 0 ||
        kms_storage_txn_begin(kms_api_storage(api), false, &txn) != 0 ||
        kms_storage_scan(txn, KMS_DB_KMSKEYS, "", 0, NULL, 0, true, load_cb, s) != 0) {
        kms_storage_txn_abort(&txn);
        sched_destroy(&s);
        return -1;
    }
    kms_storage_txn_abort(&txn);
    *out = s;
    return 0;
}

static void sched_destroy(struct kms_sched **sp)
{
    struct kms_sched *s = *sp;
    if (s == NULL) {
        return;
    }
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->write_lock);
    kms_owners_destroy(&s->owners);
    free(s->e);
    free(s);
    *sp = NULL;
}

/* ---- the object ---------------------------------------------------------------------------- */

static json_t *condition(const char *type, bool ok, const char *reason, const char *msg,
                         const char *when)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s}", "type", type, "status", ok ? "True" : "False",
                     "reason", reason, "message", msg, "lastTransitionTime", when);
}

/*
 * Protected: the latches a KMSKey's key is made without (exportable, allow_plaintext_backup,
 * deletion_allowed) are still off. Only a root token (the break-glass) can set them on a key a
 * KMSKey owns; the spec cannot say so (exportable must be false), so the status does.
 */
static json_t *protected_condition(const struct kms_key_policy *p, const char *when)
{
    char msg[256];
    size_t n = 0;
    const char *what[3];

    if (p->exportable) {
        what[n++] = "it is exportable";
    }
    if (p->allow_plaintext_backup) {
        what[n++] = "it allows plaintext backup";
    }
    if (p->deletion_allowed) {
        what[n++] = "deletion_allowed is set (a Transit DELETE skips the deletion countdown)";
    }
    if (n == 0) {
        return condition("Protected", true, "Latched",
                         "the Transit key is not exportable, allows no plaintext backup and "
                         "cannot be deleted outside its KMSKey",
                         when);
    }
    int len =
        snprintf(msg, sizeof(msg), "the Transit key was changed outside its KMSKey: %s", what[0]);
    for (size_t i = 1; i < n && len > 0 && (size_t)len < sizeof(msg); i++) {
        len += snprintf(msg + len, sizeof(msg) - (size_t)len, "; %s", what[i]);
    }
    return condition("Protected", false, "ChangedOutsideKMSKey", msg, when);
}

static void rfc3339(int64_t sec, char out[40])
{
    kms_time_rfc3339(sec, 0, out);
}

/*
 * The full KMSKey object: the stored record plus status read live from the Transit key, when
 * the KMSKey owns it (a record from before ownership was checked may not).
 */
static json_t *render(struct kms_sched *s, const struct target *t, const char *ns_id,
                      const json_t *rec)
{
    struct kms_key_policy p;
    struct kms_owner ow;
    struct kms_err err;
    int64_t last = 0;
    char buf[40], when[40];
    json_t *spec = json_object_get(rec, "spec");
    json_t *meta = json_deep_copy(json_object_get(rec, "metadata"));
    json_t *status = json_object();
    json_t *conds = json_array();
    bool mine = owns(s, ns_id, t, &ow);
    int g = t->mount.uuid[0] && mine
                ? kms_transit_key_get(s->transit, &t->mount, t->transit_name, &p, &last, &err)
                : KMS_STORAGE_NOTFOUND;
    int64_t interval = spec_interval(spec);
    int64_t del = json_integer_value(json_object_get(rec, "scheduled_deletion"));

    snprintf(when, sizeof(when), "%s",
             json_string_value(json_object_get(meta, "creationTimestamp")) ?: "");
    json_object_set_new(status, "keyId", json_sprintf("transit/keys/%s", t->transit_name));
    if (g == 0) {
        json_object_set_new(status, "currentVersion", json_integer(p.latest_version));
        json_object_set_new(status, "minDecryptionVersion", json_integer(p.min_decryption_version));
        rfc3339(last, buf);
        json_object_set_new(status, "lastRotatedTime", json_string(buf));
        if (interval > 0) {
            rfc3339(last + interval, buf);
            json_object_set_new(status, "nextRotationTime", json_string(buf));
        } else {
            json_object_set_new(status, "nextRotationTime", json_null());
        }
    }
    if (del > 0) {
        rfc3339(del, buf);
        json_object_set_new(status, "scheduledDeletion", json_string(buf));
    } else {
        json_object_set_new(status, "scheduledDeletion", json_null());
    }
    if (!mine) {
        char msg[256];
        snprintf(msg, sizeof(msg), "the Transit key belongs to KMSKey \"%s\" of project \"%s\"",
                 ow.name, ow.project);
        json_array_append_new(conds, condition("Ready", false, "KeyOwnedElsewhere", msg, when));
    } else if (g != 0) {
        json_array_append_new(
            conds, condition("Ready", false, "KeyMissing", "the Transit key does not exist", when));
    } else if (del > 0) {
        rfc3339(del, buf);
        char msg[128];
        snprintf(msg, sizeof(msg), "the key is destroyed at %s unless deletion is cancelled", buf);
        json_array_append_new(conds, condition("Ready", false, "DeletionScheduled", msg, when));
    } else {
        json_array_append_new(
            conds, condition("Ready", true, "KeyReady", "the Transit key is provisioned", when));
    }
    if (g == 0) {
        json_array_append_new(conds, protected_condition(&p, when));
    }
    json_array_append_new(conds, condition("OpenBaoMounted", t->mount.uuid[0] != '\0',
                                           t->mount.uuid[0] ? "Mounted" : "NotMounted",
                                           "the organization's transit/ mount", when));
    json_array_append_new(
        conds,
        condition("RotationScheduled", interval > 0, interval > 0 ? "Enabled" : "Disabled",
                  interval > 0 ? "scheduled rotation is enabled" : "scheduled rotation is disabled",
                  when));
    json_object_set_new(status, "conditions", conds);
    return json_pack("{s:s, s:s, s:o, s:O, s:o}", "apiVersion", "security.kube-dc.com/v1alpha1",
                     "kind", "KMSKey", "metadata", meta, "spec", spec, "status", status);
}

/* ---- handlers ---------------------------------------------------------------------------- */

static int kmskey_exists(struct kms_ctx *c)
{
    const char *project = kms_cap(c, "project");
    const char *name = kms_cap(c, "name");
    json_t *rec = NULL;
    int g = load_record(c->api, c->ns.id, project ? project : "", name ? name : "", &rec);
    json_decref(rec);
    return g == 0 ? 1 : g == KMS_STORAGE_NOTFOUND ? 0 : -1;
}

static int ensure_mount(struct kms_ctx *c, struct target *t)
{
    if (t->mount.uuid[0] != '\0') {
        return 0;
    }
    if (kms_registry_mount_add(c->api, c->ns.id, "transit/", "transit",
                               "organization transit engine (created for KMSKeys)", &t->mount,
                               &c->err) != 0) {
        /* a concurrent creation is fine */
        if (kms_registry_mount_get(c->api, c->ns.id, "transit/", &t->mount) != 0) {
            return -1;
        }
        kms_err_clear(&c->err);
    }
    return 0;
}

/*
 * Before a new KMSKey t takes its Transit name: refuse (400) when another KMSKey owns it, or a
 * tombstone keeps it for another project while the key still exists (a tombstone whose key is
 * gone is dropped). *own_tombstone tells that t's own tombstone holds it (t adopts it back).
 * Called with the write lock held.
 */
static int claim_check(struct kms_ctx *c, const struct target *t, bool *own_tombstone)
{
    struct kms_sched *s = sched(c);
    struct kms_owner ow;
    *own_tombstone = false;
    while (kms_owners_lookup(s->owners, c->ns.id, target_rest(t), &ow) == 1) {
        if (strcmp(ow.project, t->project) == 0 && strcmp(ow.name, t->name) == 0) {
            *own_tombstone = ow.retained;
            return 0;
        }
        if (!ow.retained) {
            return KMS_FAIL(c, 400,
                            "Transit key \"%s\" belongs to KMSKey \"%s\" of project \"%s\"; "
                            "choose another name for this KMSKey",
                            t->transit_name, ow.name, ow.project);
        }
        struct kms_key_policy p;
        struct kms_err err;
        int64_t last;
        int g = t->mount.uuid[0]
                    ? kms_transit_key_get(s->transit, &t->mount, t->transit_name, &p, &last, &err)
                    : KMS_STORAGE_NOTFOUND;
        if (g != KMS_STORAGE_NOTFOUND && ow.made) {
            return KMS_FAIL(c, 400,
                            "Transit key \"%s\" belongs to project \"%s\" (a token of that "
                            "project made it with Transit calls); choose another name for this "
                            "KMSKey",
                            t->transit_name, ow.project);
        }
        if (g != KMS_STORAGE_NOTFOUND) {
            return KMS_FAIL(c, 400,
                            "Transit key \"%s\" belongs to project \"%s\" (kept when its KMSKey "
                            "\"%s\" was deleted with deletionPolicy retain); choose another name "
                            "for this KMSKey",
                            t->transit_name, ow.project, ow.name);
        }
        if (delete_tombstone(c->api, c->ns.id, ow.project, ow.name) != 0) {
            return KMS_FAILW(c, 500, "cannot store KMSKey");
        }
        kms_owners_remove(s->owners, c->ns.id, ow.project, ow.name, true);
    }
    return 0;
}

/*
 * Another project than `project` whose key `<org>-<rest>` also reads as, into out: one that
 * has KMSKeys, else the nearest other split ('-' before this project's end, else after it).
 * Any split counts, not only projects kmsd has seen: a project without KMSKeys is still a
 * namespace whose tokens may have made the key (docs/kmskey.md, "Ownership").
 */
static bool other_reading(struct kms_sched *s, const char *ns_id, const char *rest,
                          const char *project, char *out)
{
    size_t len = strlen(rest), pl = strlen(project), at = 0;
    if (kms_owners_other_project(s->owners, ns_id, rest, project, out) == 1) {
        return true;
    }
    for (size_t i = 1; i + 1 < len && i <= KMS_KMSKEY_LABEL_MAX; i++) {
        if (rest[i] == '-' && i != pl && (at == 0 || i < pl)) {
            at = i; /* the last split before pl, or the first after it */
        }
    }
    if (at == 0) {
        return false;
    }
    memcpy(out, rest, at);
    out[at] = '\0';
    return true;
}

/*
 * After kms_transit_key_create found the key t names already there: adopt it only when the
 * algorithm matches and, unless t's own tombstone kept it, its name reads as no other
 * project's key (no other split `<org>-<p'>-<n'>` of the name, p' with KMSKeys or not).
 */
static int adopt_check(struct kms_ctx *c, const struct target *t, const json_t *spec,
                       const struct kms_key_policy *p, bool own_tombstone)
{
    char other[KMS_KMSKEY_LABEL_MAX + 1];
    if (strcmp(kms_key_type_name(p->type), json_string_value(json_object_get(spec, "algorithm"))) !=
        0) {
        return KMS_FAIL(c, 400,
                        "Transit key %s already exists with type %s; spec.algorithm must match to "
                        "adopt it",
                        t->transit_name, kms_key_type_name(p->type));
    }
    /* a key a KMSKey cannot describe is not adopted: one made elsewhere (a token of another
     * project can make a Transit key whose name reads as this project's before any KMSKey
     * claims it) with material or latches that would outlive the adoption */
    const char *why = p->imported                 ? "holds imported key material"
                      : p->exportable             ? "is exportable"
                      : p->allow_plaintext_backup ? "allows plaintext backup"
                      : p->deletion_allowed       ? "has deletion_allowed set"
                      : p->derived                ? "is a derived key"
                      : p->convergent             ? "uses convergent encryption"
                      : p->soft_deleted           ? "is soft-deleted"
                                                  : NULL;
    if (why != NULL) {
        return KMS_FAIL(c, 400,
                        "Transit key \"%s\" exists without a KMSKey and %s, which a KMSKey's key "
                        "never does, so it is not adopted; choose another name for this KMSKey",
                        t->transit_name, why);
    }
    if (!own_tombstone && other_reading(sched(c), c->ns.id, target_rest(t), t->project, other)) {
        return KMS_FAIL(c, 400,
                        "Transit key \"%s\" exists without a KMSKey and its name also reads as a "
                        "key of project \"%s\", so it is not adopted (kmsd cannot tell which "
                        "project it belongs to); choose another name for this KMSKey",
                        t->transit_name, other);
    }
    kms_warn(c, "adopted the existing Transit key %s", t->transit_name);
    return 0;
}

/* A new KMSKey's record: metadata, the spec and no countdown yet. */
static json_t *new_record(struct kms_ctx *c, const struct target *t, json_t *spec, const char *now)
{
    char uid[37];
    char pns[KMS_PATH_MAX + PROJECT_MAX_LEN + 2];
    if (kms_uuid4(uid) != 0) {
        KMS_FAILW(c, 500, "cannot generate a uid");
        return NULL;
    }
    snprintf(pns, sizeof(pns), "%s-%s", t->org, t->project);
    return json_pack("{s:{s:s, s:s, s:s, s:s, s:s, s:s, s:i}, s:O, s:I}", "metadata", "name",
                     t->name, "namespace", pns, "organization", t->org, "project", t->project,
                     "uid", uid, "creationTimestamp", now, "generation", 1, "spec", spec,
                     "scheduled_deletion", (json_int_t)0);
}

/* The spec a write gives: {"spec": {...}}, or its fields at the top level. */
static const json_t *applied_spec(struct kms_ctx *c)
{
    const json_t *spec = kms_param(c, "spec");
    return spec != NULL ? spec : c->params;
}

/* True when the JSON array of strings `names` (may be NULL) holds name. */
static bool names_has(const json_t *names, const char *name)
{
    size_t i;
    json_t *e;
    json_array_foreach(names, i, e)
    {
        if (json_is_string(e) && strcmp(json_string_value(e), name) == 0) {
            return true;
        }
    }
    return false;
}

/*
 * `kubectl apply` semantics (`"apply": true`, what kmsctl apply sends): a mutable top-level
 * spec field the previous apply set and this one leaves out goes back to its default, as
 * kubectl's three-way merge with its last-applied configuration does; a field set otherwise
 * (kmsctl patch, the API) and never applied stays. The names of the fields each apply gave are
 * kept in the record (`last_applied`, never shown). purpose and algorithm are immutable and
 * not reset. Returns the base spec to overlay the request on (a new reference).
 */
static json_t *apply_base(struct kms_ctx *c, const json_t *rec)
{
    static const char *const mutable_defaults[][2] = {
        {"rotation", "{\"enabled\":false}"},
        {"deletionPolicy", "\"retain\""},
    };
    json_t *base = json_deep_copy(json_object_get(rec, "spec"));
    const json_t *given = applied_spec(c);
    const json_t *last = json_object_get(rec, "last_applied");
    /* a deletion asked for (DELETE while the countdown runs) is not undone by leaving
     * deletionPolicy out; `retain` given explicitly (or cancel-delete) still cancels it */
    bool deleting = json_object_get(json_object_get(rec, "metadata"), "deletionTimestamp") != NULL;
    for (size_t i = 0; base != NULL && i < sizeof(mutable_defaults) / sizeof(mutable_defaults[0]);
         i++) {
        const char *k = mutable_defaults[i][0];
        bool was_applied = names_has(last, k);
        if (deleting && strcmp(k, "deletionPolicy") == 0) {
            continue;
        }
        if (was_applied && json_object_get(given, k) == NULL) {
            json_object_set_new(base, k, json_loads(mutable_defaults[i][1], JSON_DECODE_ANY, NULL));
        }
    }
    return base;
}

/* A given spec value that only spells out the default ("retain", exportable false, rotation
 * disabled without an interval, the default purpose and algorithm). */
static bool default_value(const char *field, const json_t *v)
{
    if (strcmp(field, "exportable") == 0) {
        return json_is_false(v);
    }
    if (strcmp(field, "rotation") == 0) {
        json_t *iv = json_object_get(v, "interval");
        return json_is_object(v) && !json_is_true(json_object_get(v, "enabled")) &&
               (iv == NULL || json_is_null(iv));
    }
    const char *def = strcmp(field, "purpose") == 0     ? "application"
                      : strcmp(field, "algorithm") == 0 ? "aes256-gcm96"
                                                        : "retain";
    return json_is_string(v) && strcmp(json_string_value(v), def) == 0;
}

/*
 * The spec fields an apply gave, for the next apply's apply_base (the spec fields given at
 * the top level count as well, as spec_from_request reads them). A field given with its
 * default value counts as given only if the previous apply (`last`, NULL for none) gave it:
 * spelling out a default the manifest left out is no change, so `kmsctl keys get -o yaml`
 * (which prints every field) applies back unchanged, and the manifest without it as well.
 */
static json_t *applied_fields(struct kms_ctx *c, const json_t *last)
{
    static const char *const fields[] = {"purpose", "algorithm", "rotation", "deletionPolicy",
                                         "exportable"};
    json_t *names = json_array();
    const json_t *given = applied_spec(c);
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        json_t *v = json_object_get(given, fields[i]);
        if (v != NULL && !json_is_null(v) &&
            (!default_value(fields[i], v) || names_has(last, fields[i]))) {
            json_array_append_new(names, json_string(fields[i]));
        }
    }
    return names;
}

static int kmskey_write(struct kms_ctx *c)
{
    struct kms_sched *s = sched(c);
    struct target t;
    json_t *rec = NULL;
    json_t *before = NULL; /* the stored record: a write that changes nothing is not stored */
    json_t *spec = NULL;
    struct kms_key_policy p;
    bool existed = false, created = false, own_tombstone = false;
    int rc = -1;
    char now[40];
    int64_t sec;
    int32_t nsec;

    if (resolve_target(c, &t, true) != 0) {
        return -1;
    }
    kms_now(&sec, &nsec);
    rfc3339(sec, now);
    /* the ownership check and the claim of the Transit name are one step */
    pthread_mutex_lock(&s->write_lock);
    int g = load_record(c->api, c->ns.id, t.project, t.name, &rec);
    if (g < 0) {
        KMS_FAILW(c, 500, "cannot read KMSKey");
        goto out;
    }
    if (g == 0 && (before = json_deep_copy(rec)) == NULL) {
        KMS_FAILW(c, 500, "out of memory");
        goto out;
    }
    bool create_only = false;
    (void)kms_param_bool(c, "create_only", &create_only);
    if (g == 0 && create_only) {
        /* `kmsctl keys create`: never reconfigure an existing key, and no probe beforehand */
        KMS_FAIL(c, 409, "KMSKey \"%s\" already exists in project \"%s\"", t.name, t.project);
        goto out;
    }
    bool apply = false;
    (void)kms_param_bool(c, "apply", &apply);
    json_t *base = g == 0 && apply ? apply_base(c, rec) : NULL;
    int sr = spec_from_request(c,
                               base != NULL ? base
                               : g == 0     ? json_object_get(rec, "spec")
                                            : NULL,
                               &spec);
    json_decref(base);
    if (sr != 0) {
        goto out;
    }
    if (g == 0) {
        json_t *old = json_object_get(rec, "spec");
        static const char *const immutable[] = {"algorithm", "purpose"};
        for (size_t i = 0; i < 2; i++) {
            if (!json_equal(json_object_get(old, immutable[i]),
                            json_object_get(spec, immutable[i]))) {
                KMS_FAIL(c, 400, "spec.%s: Invalid value: the field is immutable (it is \"%s\")",
                         immutable[i], json_string_value(json_object_get(old, immutable[i])));
                goto out;
            }
        }
        json_t *meta = json_object_get(rec, "metadata");
        json_object_set_new(meta, "generation",
                            json_integer(json_integer_value(json_object_get(meta, "generation")) +
                                         (json_equal(old, spec) ? 0 : 1)));
        json_object_set(rec, "spec", spec);
    } else {
        enum kms_key_type type;
        created = true;
        if (claim_check(c, &t, &own_tombstone) != 0 ||
            (rec = new_record(c, &t, spec, now)) == NULL) {
            goto out;
        }
        if (kms_key_type_parse(json_string_value(json_object_get(spec, "algorithm")), &type) != 0 ||
            ensure_mount(c, &t) != 0 ||
            kms_transit_key_create(s->transit, &t.mount, t.transit_name, type, &p, &existed,
                                   &c->err) != 0) {
            if (c->err.status == 0) {
                KMS_FAILW(c, 500, "cannot provision the Transit key");
            }
            goto out;
        }
        if (existed && adopt_check(c, &t, spec, &p, own_tombstone) != 0) {
            goto out;
        }
        if (kms_owners_reserve(s->owners) != 0) {
            KMS_FAILW(c, 500, "out of memory");
            goto out;
        }
    }
    if (apply) {
        json_object_set_new(rec, "last_applied",
                            applied_fields(c, json_object_get(before, "last_applied")));
    }
    /* deletionPolicy drives the countdown: schedule starts it, retain cancels it */
    const char *dp = json_string_value(json_object_get(spec, "deletionPolicy"));
    int64_t del = json_integer_value(json_object_get(rec, "scheduled_deletion"));
    if (strcmp(dp, "schedule") == 0 && del == 0) {
        json_object_set_new(rec, "scheduled_deletion", json_integer(sec + s->deletion_delay));
    } else if (strcmp(dp, "retain") == 0 && del != 0) {
        json_object_set_new(rec, "scheduled_deletion", json_integer(0));
        json_object_del(json_object_get(rec, "metadata"), "deletionTimestamp");
    }
    if ((before == NULL || !json_equal(before, rec)) &&
        store_record_tx(c->api, c->ns.id, t.project, t.name, rec, own_tombstone) != 0) {
        KMS_FAILW(c, 500, "cannot store KMSKey");
        goto out;
    }
    if (created) {
        /* cannot fail after kms_owners_reserve */
        (void)kms_owners_add(s->owners, c->ns.id, t.project, t.name, now, false, false);
        if (own_tombstone) {
            kms_owners_remove(s->owners, c->ns.id, t.project, t.name, true);
        }
    }
    sched_update(s, c->ns.id, t.project, t.name, rec);
    c->data = render(s, &t, c->ns.id, rec);
    rc = 0;
out:
    pthread_mutex_unlock(&s->write_lock);
    json_decref(before);
    json_decref(spec);
    json_decref(rec);
    return rc;
}

static int kmskey_read(struct kms_ctx *c)
{
    struct target t;
    json_t *rec = NULL;
    if (resolve_target(c, &t, true) != 0) {
        return -1;
    }
    int g = load_record(c->api, c->ns.id, t.project, t.name, &rec);
    if (g == KMS_STORAGE_NOTFOUND) {
        return kms_fail_notfound(c);
    }
    if (g != 0) {
        return KMS_FAILW(c, 500, "cannot read KMSKey");
    }
    c->data = render(sched(c), &t, c->ns.id, rec);
    json_decref(rec);
    return 0;
}

struct list_arg {
    struct kms_sched *s;
    struct target *t;
    const char *ns_id;
    json_t *keys;
    json_t *info;
    size_t prefix_len;
};

static int list_cb(const uint8_t *key, size_t keylen, const uint8_t *val, size_t vallen, void *arg)
{
    struct list_arg *l = arg;
    size_t nl = keylen - l->prefix_len;
    if (nl == 0 || nl > NAME_MAX_LEN) {
        return 0;
    }
    memcpy(l->t->name, key + l->prefix_len, nl);
    l->t->name[nl] = '\0';
    snprintf(l->t->transit_name, sizeof(l->t->transit_name), "%s-%s-%s", l->t->org, l->t->project,
             l->t->name);
    json_t *rec = json_loadb((const char *)val, vallen, 0, NULL);
    if (rec != NULL) {
        json_array_append_new(l->keys, json_string(l->t->name));
        json_object_set_new(l->info, l->t->name, render(l->s, l->t, l->ns_id, rec));
    }
    json_decref(rec);
    return 0;
}

static int kmskey_list(struct kms_ctx *c)
{
    struct target t;
    struct kms_txn *txn = NULL;
    char prefix[KMS_PATH_MAX];
    int rc = -1;
    if (resolve_target(c, &t, false) != 0) {
        return -1;
    }
    snprintf(prefix, sizeof(prefix), "%s/%s/", c->ns.id, t.project);
    struct list_arg l = {sched(c), &t, c->ns.id, json_array(), json_object(), strlen(prefix)};
    if (kms_storage_txn_begin(kms_api_storage(c->api), false, &txn) != 0 ||
        kms_storage_scan(txn, KMS_DB_KMSKEYS, prefix, strlen(prefix), NULL, 0, true, list_cb, &l) !=
            0) {
        KMS_FAILW(c, 500, "cannot list KMSKeys");
        goto out;
    }
    if (json_array_size(l.keys) == 0) {
        rc = kms_fail_notfound(c);
        goto out;
    }
    c->data = json_pack("{s:O, s:O}", "keys", l.keys, "key_info", l.info);
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    json_decref(l.keys);
    json_decref(l.info);
    return rc;
}

static int kmskey_delete(struct kms_ctx *c)
{
    struct kms_sched *s = sched(c);
    struct target t;
    struct kms_owner ow;
    json_t *rec = NULL;
    int rc = -1;
    if (resolve_target(c, &t, true) != 0) {
        return -1;
    }
    pthread_mutex_lock(&s->write_lock);
    int g = load_record(c->api, c->ns.id, t.project, t.name, &rec);
    if (g == KMS_STORAGE_NOTFOUND) {
        rc = kms_fail_notfound(c);
        goto out;
    }
    if (g != 0) {
        KMS_FAILW(c, 500, "cannot read KMSKey");
        goto out;
    }
    if (json_integer_value(json_object_get(rec, "scheduled_deletion")) != 0) {
        /* like a finalizer: the object stays until the countdown destroys the key */
        char now[40];
        int64_t sec;
        int32_t nsec;
        kms_now(&sec, &nsec);
        rfc3339(sec, now);
        json_object_set_new(json_object_get(rec, "metadata"), "deletionTimestamp",
                            json_string(now));
        if (store_record(c->api, c->ns.id, t.project, t.name, rec) != 0) {
            KMS_FAILW(c, 500, "cannot store KMSKey");
            goto out;
        }
        kms_warn(c, "deletionPolicy is schedule: the KMSKey and its Transit key are destroyed "
                    "when the countdown ends");
        c->data = render(s, &t, c->ns.id, rec);
        rc = 0;
        goto out;
    }
    /*
     * retain: the Transit key survives the KMSKey, and a tombstone keeps it the project's (no
     * other project's KMSKey adopts it, no other project's token uses it). A KMSKey that does
     * not own its Transit name leaves no tombstone: the key is not its own.
     */
    struct kms_key_policy p;
    struct kms_err err;
    int64_t last;
    const char *created = NULL;
    if (owns(s, c->ns.id, &t, &ow) && t.mount.uuid[0] != '\0' &&
        kms_transit_key_get(s->transit, &t.mount, t.transit_name, &p, &last, &err) == 0) {
        created = json_string_value(
                      json_object_get(json_object_get(rec, "metadata"), "creationTimestamp"))
                      ?: "";
    }
    if (created != NULL && kms_owners_reserve(s->owners) != 0) {
        KMS_FAILW(c, 500, "out of memory");
        goto out;
    }
    if (delete_record_tx(c->api, c->ns.id, t.project, t.name, created) != 0) {
        KMS_FAILW(c, 500, "cannot delete KMSKey");
        goto out;
    }
    kms_owners_remove(s->owners, c->ns.id, t.project, t.name, false);
    if (created != NULL) {
        (void)kms_owners_add(s->owners, c->ns.id, t.project, t.name, created, true, false);
    }
    pthread_mutex_lock(&s->lock);
    sched_remove_locked(s, c->ns.id, t.project, t.name);
    pthread_mutex_unlock(&s->lock);
    rc = 0;
out:
    pthread_mutex_unlock(&s->write_lock);
    json_decref(rec);
    return rc;
}

/* Load the record of an action route, or fail with 404. */
static int action_target(struct kms_ctx *c, struct target *t, json_t **rec)
{
    if (resolve_target(c, t, true) != 0) {
        return -1;
    }
    int g = load_record(c->api, c->ns.id, t->project, t->name, rec);
    if (g == KMS_STORAGE_NOTFOUND) {
        return KMS_FAIL(c, 404, "KMSKey %s not found in project %s", t->name, t->project);
    }
    if (g != 0) {
        return KMS_FAILW(c, 500, "cannot read KMSKey");
    }
    return 0;
}

/* An action on the Transit key: only through the KMSKey that owns it (409 otherwise). */
static int require_owner(struct kms_ctx *c, const struct target *t)
{
    struct kms_owner ow;
    if (owns(sched(c), c->ns.id, t, &ow)) {
        return 0;
    }
    return KMS_FAIL(c, 409,
                    "KMSKey \"%s\" of project \"%s\" does not own Transit key \"%s\": it "
                    "belongs to KMSKey \"%s\" of project \"%s\"; delete this KMSKey (its "
                    "deletion never touches that key)",
                    t->name, t->project, t->transit_name, ow.name, ow.project);
}

static int kmskey_rotate(struct kms_ctx *c)
{
    struct target t;
    json_t *rec = NULL;
    struct kms_key_policy p;
    int rc = -1;
    if (action_target(c, &t, &rec) != 0) {
        return -1;
    }
    if (require_owner(c, &t) != 0) {
        goto out;
    }
    if (t.mount.uuid[0] == '\0') {
        KMS_FAIL(c, 404, "the organization has no transit/ mount");
        goto out;
    }
    if (kms_transit_key_rotate(sched(c)->transit, &t.mount, t.transit_name, &p, &c->err) != 0) {
        goto out;
    }
    sched_update(sched(c), c->ns.id, t.project, t.name, rec);
    c->data = render(sched(c), &t, c->ns.id, rec);
    rc = 0;
out:
    json_decref(rec);
    return rc;
}

static int kmskey_min_version(struct kms_ctx *c)
{
    struct target t;
    json_t *rec = NULL;
    struct kms_key_policy p;
    int64_t v;
    int rc = -1;
    if (!kms_param_int(c, "version", &v)) {
        return KMS_FAIL(c, 400, "missing version");
    }
    if (v < 1 || v > UINT32_MAX) {
        return KMS_FAIL(c, 400, "version must be a positive key version");
    }
    if (action_target(c, &t, &rec) != 0) {
        return -1;
    }
    if (require_owner(c, &t) != 0) {
        goto out;
    }
    if (t.mount.uuid[0] == '\0') {
        KMS_FAIL(c, 404, "the organization has no transit/ mount");
        goto out;
    }
    if (kms_transit_key_raise_floor(sched(c)->transit, &t.mount, t.transit_name, (uint32_t)v, &p,
                                    &c->err) != 0) {
        goto out;
    }
    c->data = render(sched(c), &t, c->ns.id, rec);
    rc = 0;
out:
    json_decref(rec);
    return rc;
}

static int kmskey_deletion(struct kms_ctx *c, bool schedule)
{
    struct kms_sched *s = sched(c);
    struct target t;
    json_t *rec = NULL;
    json_t *before = NULL; /* as stored: asking for what already holds stores nothing */
    int64_t sec;
    int32_t nsec;
    int rc = -1;
    /* read, change and store as one step with every other KMSKey write: a concurrent apply's
     * spec is never overwritten with the one read here */
    pthread_mutex_lock(&s->write_lock);
    if (action_target(c, &t, &rec) != 0) {
        goto out;
    }
    if ((before = json_deep_copy(rec)) == NULL) {
        KMS_FAILW(c, 500, "out of memory");
        goto out;
    }
    kms_now(&sec, &nsec);
    json_t *spec = json_object_get(rec, "spec");
    const char *policy = schedule ? "schedule" : "retain";
    const char *was = json_string_value(json_object_get(spec, "deletionPolicy"));
    if (was == NULL || strcmp(was, policy) != 0) {
        /* a change of the spec, as a write of deletionPolicy would be */
        json_t *meta = json_object_get(rec, "metadata");
        json_object_set_new(
            meta, "generation",
            json_integer(json_integer_value(json_object_get(meta, "generation")) + 1));
    }
    json_object_set_new(spec, "deletionPolicy", json_string(policy));
    if (schedule) {
        if (json_integer_value(json_object_get(rec, "scheduled_deletion")) == 0) {
            json_object_set_new(rec, "scheduled_deletion",
                                json_integer(sec + sched(c)->deletion_delay));
        }
    } else {
        if (json_integer_value(json_object_get(rec, "scheduled_deletion")) == 0) {
            kms_warn(c, "KMSKey %s had no deletion scheduled: nothing to cancel", t.name);
        }
        json_object_set_new(rec, "scheduled_deletion", json_integer(0));
        json_object_del(json_object_get(rec, "metadata"), "deletionTimestamp");
    }
    if (!json_equal(before, rec) && store_record(c->api, c->ns.id, t.project, t.name, rec) != 0) {
        KMS_FAILW(c, 500, "cannot store KMSKey");
        goto out;
    }
    struct kms_owner ow;
    if (schedule && !owns(sched(c), c->ns.id, &t, &ow)) {
        kms_warn(c,
                 "this KMSKey does not own Transit key %s (it belongs to KMSKey \"%s\" of "
                 "project \"%s\"): the countdown removes this KMSKey only",
                 t.transit_name, ow.name, ow.project);
    }
    sched_update(sched(c), c->ns.id, t.project, t.name, rec);
    c->data = render(sched(c), &t, c->ns.id, rec);
    rc = 0;
out:
    pthread_mutex_unlock(&s->write_lock);
    json_decref(before);
    json_decref(rec);
    return rc;
}

static int kmskey_schedule_delete(struct kms_ctx *c)
{
    return kmskey_deletion(c, true);
}

static int kmskey_cancel_delete(struct kms_ctx *c)
{
    return kmskey_deletion(c, false);
}

/* ---- the controller ---------------------------------------------------------------------- */

/* Locate the org's transit mount and target names for a schedule entry. */
static int entry_target(struct kms_api *api, const struct sched_entry *e, struct target *t,
                        struct kms_ns *ns)
{
    memset(t, 0, sizeof(*t));
    if (kms_registry_ns_by_id(api, e->ns_id, ns) != 0) {
        return KMS_STORAGE_NOTFOUND;
    }
    if (org_name(ns, t->org, sizeof(t->org)) != 0) {
        return -1;
    }
    snprintf(t->project, sizeof(t->project), "%s", e->project);
    snprintf(t->name, sizeof(t->name), "%s", e->name);
    snprintf(t->transit_name, sizeof(t->transit_name), "%s-%s-%s", t->org, t->project, t->name);
    return kms_registry_mount_get(api, e->ns_id, "transit/", &t->mount) == 0 ? 0 : -1;
}

/*
 * End a due deletion countdown: a durable audit record first (or no destruction), then the
 * Transit key (only when this KMSKey owns it) and the KMSKey record. 1 when the entry is done,
 * 0 when it is to be retried (delete_at moved RETRY_SECONDS ahead).
 */
static int tick_delete_locked(struct kms_sched *s, struct sched_entry *e, const struct target *t,
                              const struct kms_ns *ns, int64_t now, kms_tick_report_fn report)
{
    char path[KMS_PATH_MAX + 160];
    struct kms_audit_rec *rec = NULL;
    struct kms_owner ow;
    struct kms_err err, aerr;
    bool mine = owns(s, e->ns_id, t, &ow);
    kms_err_clear(&err);
    if (mine) {
        snprintf(path, sizeof(path), "transit/keys/%s", t->transit_name);
    } else {
        snprintf(path, sizeof(path), "kms/keys/%s/%s", e->project, e->name);
    }
    struct kms_api_audit_event ev = {.ns_id = e->ns_id,
                                     .ns_path = ns->path,
                                     .path = path,
                                     .operation = "delete",
                                     .op = "delete",
                                     .key = mine ? t->transit_name : e->name,
                                     .project = e->project};
    if (kms_api_audit_internal_begin(s->api, &ev, &rec, &err) != 0) {
        report("deletion-failed", e->ns_id, e->project, e->name, err.msg);
        e->delete_at = now + RETRY_SECONDS;
        return 0;
    }
    /* the versions destroyed, for the record (the first KMS_CTX_MAX_VERSIONS of them) */
    uint32_t versions[KMS_CTX_MAX_VERSIONS];
    size_t nv = 0;
    struct kms_key_policy p;
    int64_t last = 0;
    struct kms_err gerr;
    kms_err_clear(&gerr);
    if (mine &&
        kms_transit_key_get(s->transit, &t->mount, t->transit_name, &p, &last, &gerr) == 0) {
        for (uint32_t v = p.min_available_version > 1 ? p.min_available_version : 1;
             v != 0 && v <= p.latest_version && nv < KMS_CTX_MAX_VERSIONS; v++) {
            versions[nv++] = v;
        }
    }
    int d = mine ? kms_transit_key_destroy(s->transit, &t->mount, t->transit_name, &err) : 0;
    bool failed = d < 0 || delete_record(s->api, e->ns_id, e->project, e->name) != 0;
    if (kms_api_audit_internal_end(&rec, &ev, failed ? NULL : versions, failed ? 0 : nv,
                                   failed ? err.msg : NULL, &aerr) != 0) {
        report("audit-failed", e->ns_id, e->project, e->name, aerr.msg);
    }
    if (failed) {
        report("deletion-failed", e->ns_id, e->project, e->name, err.msg);
        e->delete_at = now + RETRY_SECONDS;
        return 0;
    }
    kms_owners_remove(s->owners, e->ns_id, e->project, e->name, false);
    report("deleted", e->ns_id, e->project, e->name, mine ? t->transit_name : "");
    return 1;
}

/*
 * A due deletion countdown, decided on the stored record with every KMSKey write kept out:
 * the schedule is what the writers last told the controller, and a cancel-delete (or an
 * apply of `retain`) that stored its record is not yet in it until its sched_update. Writers
 * take the schedule's lock under write_lock, and the controller holds the schedule's lock
 * here, so it only tries: a write under way makes it come back on the next tick. 1 when the
 * KMSKey is gone (its entry goes too).
 */
static int tick_delete(struct kms_sched *s, struct sched_entry *e, const struct target *t,
                       const struct kms_ns *ns, int64_t now, kms_tick_report_fn report)
{
    if (pthread_mutex_trylock(&s->write_lock) != 0) {
        return 0;
    }
    json_t *cur = NULL;
    int g = load_record(s->api, e->ns_id, e->project, e->name, &cur);
    int64_t at = g == 0 ? json_integer_value(json_object_get(cur, "scheduled_deletion")) : 0;
    json_decref(cur);
    int rc = 0;
    if (g == KMS_STORAGE_NOTFOUND) {
        rc = 1; /* deleted meanwhile (retain): nothing to count down */
    } else if (g != 0) {
        e->delete_at = now + RETRY_SECONDS;
    } else if (at == 0 || at > now) {
        e->delete_at = at; /* cancelled, or scheduled again: the record's word */
    } else {
        rc = tick_delete_locked(s, e, t, ns, now, report);
    }
    pthread_mutex_unlock(&s->write_lock);
    return rc;
}

/* A due rotation: at most one, however many intervals were missed; audited like a request. */
static void tick_rotate(struct kms_sched *s, struct sched_entry *e, const struct target *t,
                        const struct kms_ns *ns, int64_t now, kms_tick_report_fn report)
{
    char path[KMS_PATH_MAX + 160];
    struct kms_audit_rec *rec = NULL;
    struct kms_err err, aerr;
    struct kms_key_policy p;
    struct kms_owner ow;
    int64_t last = 0;
    kms_err_clear(&err);
    if (!owns(s, e->ns_id, t, &ow)) {
        /* another KMSKey's key: never rotated through this one */
        e->next_rotate = now + e->interval;
        return;
    }
    if (kms_transit_key_get(s->transit, &t->mount, t->transit_name, &p, &last, &err) != 0) {
        e->next_rotate = now + RETRY_SECONDS;
        return;
    }
    if (last + e->interval > now) {
        e->next_rotate = last + e->interval; /* rotated meanwhile (or first tick) */
        return;
    }
    snprintf(path, sizeof(path), "transit/keys/%s/rotate", t->transit_name);
    struct kms_api_audit_event ev = {.ns_id = e->ns_id,
                                     .ns_path = ns->path,
                                     .path = path,
                                     .operation = "update",
                                     .op = "rotate",
                                     .key = t->transit_name,
                                     .project = e->project};
    if (kms_api_audit_internal_begin(s->api, &ev, &rec, &err) != 0 ||
        kms_transit_key_rotate(s->transit, &t->mount, t->transit_name, &p, &err) != 0) {
        if (rec != NULL && kms_api_audit_internal_end(&rec, &ev, NULL, 0, err.msg, &aerr) != 0) {
            report("audit-failed", e->ns_id, e->project, e->name, aerr.msg);
        }
        report("rotation-failed", e->ns_id, e->project, e->name, err.msg);
        e->next_rotate = now + RETRY_SECONDS;
        return;
    }
    char ver[16];
    if (kms_api_audit_internal_end(&rec, &ev, &p.latest_version, 1, NULL, &aerr) != 0) {
        report("audit-failed", e->ns_id, e->project, e->name, aerr.msg);
    }
    snprintf(ver, sizeof(ver), "%u", p.latest_version);
    report("rotated", e->ns_id, e->project, e->name, ver);
    e->next_rotate = now + e->interval;
}

/* The entry's next due time (0 = nothing scheduled). */
static int64_t entry_due(const struct sched_entry *e)
{
    int64_t mine = e->interval > 0 ? e->next_rotate : 0;
    if (e->delete_at != 0 && (mine == 0 || e->delete_at < mine)) {
        mine = e->delete_at;
    }
    return mine;
}

static int kmskey_tick(void *state, int64_t now, int64_t *next_due, kms_tick_report_fn report)
{
    struct kms_sched *s = state;
    int64_t due = 0;
    size_t i = 0;

    pthread_mutex_lock(&s->lock);
    while (i < s->n) {
        struct sched_entry *e = &s->e[i];
        struct target t;
        struct kms_ns ns;
        int et = entry_target(s->api, e, &t, &ns);
        if (et == KMS_STORAGE_NOTFOUND) {
            /* the namespace is gone (its purge removed the record): forget the entry */
            *e = s->e[--s->n];
            continue;
        }
        if (et != 0) {
            /* no transit/ mount in the organization: retry, it may be mounted again */
            if (e->interval > 0 && now >= e->next_rotate) {
                e->next_rotate = now + RETRY_SECONDS;
            }
            if (e->delete_at != 0 && now >= e->delete_at) {
                e->delete_at = now + RETRY_SECONDS;
            }
        } else {
            if (e->delete_at != 0 && now >= e->delete_at &&
                tick_delete(s, e, &t, &ns, now, report) == 1) {
                *e = s->e[--s->n];
                continue;
            }
            if (e->interval > 0 && now >= e->next_rotate) {
                tick_rotate(s, e, &t, &ns, now, report);
            }
        }
        int64_t mine = entry_due(e);
        if (mine != 0 && (due == 0 || mine < due)) {
            due = mine;
        }
        i++;
    }
    pthread_mutex_unlock(&s->lock);
    *next_due = due;
    return 0;
}

/* ---- routes ------------------------------------------------------------------------------ */

static const struct kms_field f_kmskey[] = {
    {"spec", KMS_F_MAP},
    {"purpose", KMS_F_STRING},
    {"algorithm", KMS_F_STRING},
    {"rotation", KMS_F_RAW},
    {"deletionPolicy", KMS_F_STRING},
    {"exportable", KMS_F_RAW},
    {"metadata", KMS_F_RAW},
    {"apiVersion", KMS_F_STRING},
    {"kind", KMS_F_STRING},
    {"status", KMS_F_RAW},
    {"create_only", KMS_F_BOOL},
    {"apply", KMS_F_BOOL},
    {NULL, 0},
};

static const struct kms_field f_version[] = {
    {"version", KMS_F_INT},
    {NULL, 0},
};

/* A write to an existing KMSKey (an apply that reconfigures it) is audited as `config`; a
 * create that finds the name taken (create_only, refused) stays a `create`. */
static const char *kmskey_write_audit_op(const struct kms_ctx *c)
{
    return c->op == KMS_OP_UPDATE && !json_is_true(json_object_get(c->params, "create_only"))
               ? "config"
               : NULL;
}

/* +name, not :name: the router's :name is Transit's looser rule and would answer a name such
 * as "trail-" with a bare 404; the handlers check the DNS-1123 rule and say it (NAME_RULE). */
static const struct kms_route kmskey_routes[] = {
    {.tmpl = "keys/+project/", .on = {[KMS_OP_LIST] = {kmskey_list, "list", 0}}},
    {.tmpl = "keys/+project/+name",
     .fields = f_kmskey,
     .exists = kmskey_exists,
     .audit_op_of = kmskey_write_audit_op,
     .on = {[KMS_OP_READ] = {kmskey_read, "read", 0},
            [KMS_OP_CREATE] = {kmskey_write, "create", 0},
            [KMS_OP_UPDATE] = {kmskey_write, "create", 0},
            [KMS_OP_DELETE] = {kmskey_delete, "delete", 0}}},
    {.tmpl = "keys/+project/+name/rotate", .on = {[KMS_OP_UPDATE] = {kmskey_rotate, "rotate", 0}}},
    {.tmpl = "keys/+project/+name/min-decryption-version",
     .fields = f_version,
     .on = {[KMS_OP_UPDATE] = {kmskey_min_version, "set-min-decryption-version", 0}}},
    {.tmpl = "keys/+project/+name/schedule-delete",
     .on = {[KMS_OP_UPDATE] = {kmskey_schedule_delete, "schedule-delete", 0}}},
    {.tmpl = "keys/+project/+name/cancel-delete",
     .on = {[KMS_OP_UPDATE] = {kmskey_cancel_delete, "cancel-delete", 0}}},
    KMS_ROUTES_END,
};

/* A namespace's KMSKey records go with it, in the registry's transaction. */
static int kmskey_purge(void *state, struct kms_txn *txn, const char *ns_id,
                        const struct kms_mount *m)
{
    char prefix[KMS_NS_ID_LEN + 2];
    (void)state;
    if (m != NULL) {
        return 0;
    }
    snprintf(prefix, sizeof(prefix), "%s/", ns_id);
    return kms_storage_del_prefix(txn, KMS_DB_KMSKEYS, prefix, strlen(prefix), NULL) != 0 ? -1 : 0;
}

/* ... and their schedule entries once it committed: the controller never looks for them. */
static void kmskey_purged(void *state, const char *ns_id, const struct kms_mount *m)
{
    struct kms_sched *s = state;
    if (m != NULL) {
        return;
    }
    pthread_mutex_lock(&s->lock);
    size_t i = 0;
    while (i < s->n) {
        if (strcmp(s->e[i].ns_id, ns_id) == 0) {
            s->e[i] = s->e[--s->n];
        } else {
            i++;
        }
    }
    pthread_mutex_unlock(&s->lock);
    kms_owners_purge_ns(s->owners, ns_id);
}

/* Transit name `name` of c's organization without its "<org>-" (the owners index's key);
 * NULL when c is in no organization (*in_org false) or the name has another prefix. */
static const char *org_rest(const struct kms_ctx *c, const char *name, bool *in_org)
{
    char org[KMS_PATH_MAX];
    *in_org = org_name(&c->ns, org, sizeof(org)) == 0;
    if (!*in_org) {
        return NULL;
    }
    size_t ol = strlen(org);
    return strncmp(name, org, ol) == 0 && name[ol] == '-' ? name + ol + 1 : NULL;
}

/* The name within `project` of rest "<project>-<n>" (n not empty), else NULL. */
static const char *project_part(const char *rest, const char *project)
{
    size_t pl = strlen(project);
    return strncmp(rest, project, pl) == 0 && rest[pl] == '-' && rest[pl + 1] != '\0'
               ? rest + pl + 1
               : NULL;
}

bool kms_kmskey_transit_allows(void *state, const struct kms_ctx *c, const char *name)
{
    struct kms_sched *s = state;
    const char *project = token_project(c);
    char other[KMS_KMSKEY_LABEL_MAX + 1];
    struct kms_owner ow;
    bool in_org;
    const char *rest = project != NULL ? org_rest(c, name, &in_org) : NULL;
    if (project == NULL || !in_org) {
        return true; /* not bound to a project, or no organization (the root namespace) */
    }
    if (rest == NULL) {
        return false;
    }
    if (kms_owners_lookup(s->owners, c->ns.id, rest, &ow) == 1) {
        return strcmp(ow.project, project) == 0;
    }
    /* nobody owns it: the token's project only when the name reads as no other project's */
    return project_part(rest, project) != NULL &&
           kms_owners_other_project(s->owners, c->ns.id, rest, project, other) == 0;
}

int kms_kmskey_transit_created(void *state, struct kms_ctx *c, struct kms_txn *txn,
                               const char *name)
{
    struct kms_sched *s = state;
    const char *project = token_project(c);
    char other[KMS_KMSKEY_LABEL_MAX + 1], now[40], tkey[KMS_PATH_MAX];
    int64_t sec;
    int32_t nsec;
    bool in_org;
    const char *rest = project != NULL ? org_rest(c, name, &in_org) : NULL;
    const char *own = rest != NULL ? project_part(rest, project) : NULL; /* n of <project>-<n> */
    if (own == NULL || strlen(own) > KMS_KMSKEY_LABEL_MAX ||
        !other_reading(s, c->ns.id, rest, project, other)) {
        return 0; /* no project-bound token, or a name no other project's token could reach */
    }
    kms_now(&sec, &nsec);
    rfc3339(sec, now);
    if (txn == NULL) {
        (void)kms_owners_add(s->owners, c->ns.id, project, own, now, true, true);
        return 0;
    }
    json_t *tomb = json_pack("{s:s, s:b}", "created", now, "made", 1);
    char *text = tomb != NULL ? json_dumps(tomb, JSON_COMPACT) : NULL;
    size_t tn = tombstone_key(c->ns.id, project, own, tkey, sizeof(tkey));
    int rc = text != NULL && kms_owners_reserve(s->owners) == 0 &&
                     kms_storage_put(txn, KMS_DB_KMSKEYS, tkey, tn, text, strlen(text)) == 0
                 ? 0
                 : KMS_FAILW(c, 500, "cannot store key");
    free(text);
    json_decref(tomb);
    return rc;
}

bool kms_kmskey_transit_managed(void *state, const struct kms_ctx *c, const char *name, char *owner,
                                size_t n)
{
    struct kms_sched *s = state;
    struct kms_owner ow;
    bool in_org;
    const char *rest = org_rest(c, name, &in_org); /* (the root namespace has no KMSKeys) */
    if (rest == NULL || kms_owners_lookup(s->owners, c->ns.id, rest, &ow) != 1 || ow.made) {
        return false; /* (a key a project's token made is its own: Transit's rules only) */
    }
    snprintf(owner, n, "KMSKey %s/%s%s", ow.project, ow.name,
             ow.retained ? " (deleted; its project keeps the key)" : "");
    return true;
}

static void kmskey_destroy(void *state)
{
    struct kms_sched *s = state;
    sched_destroy(&s);
}

/* A project-bound token and another project's KMSKeys, refused before the request line
 * (kms_engine.authorize) so that the audit log records a policy refusal; resolve_target keeps
 * the check for routes without a project. */
static int kmskey_authorize(struct kms_ctx *c)
{
    const char *bound = token_project(c);
    const char *project = kms_cap(c, "project");
    if (bound != NULL && project != NULL && strcmp(project, bound) != 0) {
        return KMS_FAILW(c, 403, "permission denied");
    }
    return 0;
}

int kms_kmskey_engine(struct kms_api *api, struct kms_transit *transit, int64_t deletion_delay,
                      struct kms_engine *out)
{
    struct kms_sched *s = NULL;
    if (sched_create(api, transit, deletion_delay, &s) != 0) {
        return -1;
    }
    memset(out, 0, sizeof(*out));
    out->type = "kms";
    out->builtin_path = "kms/";
    out->resource = "KMSKey";
    out->routes = kmskey_routes;
    out->state = s;
    out->purge = kmskey_purge;
    out->purged = kmskey_purged;
    out->tick = kmskey_tick;
    out->destroy = kmskey_destroy;
    out->authorize = kmskey_authorize;
    return 0;
}

int kms_kmskey_plugin_key(void *state, const struct kms_ns *ns, const char *project,
                          const char *name, char *transit_name, size_t n, struct kms_err *err)
{
    struct kms_sched *s = state;
    struct target t;
    struct kms_owner ow;
    json_t *rec = NULL;

    memset(&t, 0, sizeof(t));
    if (org_name(ns, t.org, sizeof(t.org)) != 0) {
        return kms_err_set(err, 400, "KMSKeys belong to an organization namespace");
    }
    if (!dns_label(project, PROJECT_MAX_LEN) || !dns_label(name, NAME_MAX_LEN)) {
        return kms_err_set(err, 400,
                           "invalid KMSKey %s/%s: the project and the name must each be " NAME_RULE,
                           project, name);
    }
    snprintf(t.project, sizeof(t.project), "%s", project);
    snprintf(t.name, sizeof(t.name), "%s", name);
    snprintf(t.transit_name, sizeof(t.transit_name), "%s-%s-%s", t.org, t.project, t.name);
    int g = load_record(s->api, ns->id, project, name, &rec);
    if (g == KMS_STORAGE_NOTFOUND) {
        return kms_err_set(err, 404, "KMSKey %s/%s not found in organization %s", project, name,
                           t.org);
    }
    if (g != 0) {
        return kms_err_set(err, 500, "cannot read KMSKey %s/%s", project, name);
    }
    const char *purpose =
        json_string_value(json_object_get(json_object_get(rec, "spec"), "purpose"));
    bool etcd = purpose != NULL && strcmp(purpose, "etcd") == 0;
    char pbuf[32];
    snprintf(pbuf, sizeof(pbuf), "%s", purpose != NULL ? purpose : "");
    json_decref(rec);
    if (!etcd) {
        return kms_err_set(err, 412,
                           "KMSKey %s/%s has purpose \"%s\"; the KMS plugin serves keys of "
                           "purpose etcd",
                           project, name, pbuf);
    }
    if (!owns(s, ns->id, &t, &ow)) {
        return kms_err_set(err, 409, "KMSKey %s/%s does not own Transit key %s", project, name,
                           t.transit_name);
    }
    if ((size_t)snprintf(transit_name, n, "%s", t.transit_name) >= n) {
        return kms_err_set(err, 400, "Transit key name too long");
    }
    return 0;
}
