/*
 * registry.c - the API object, its engines and its in-memory registry of namespaces and
 * mounts.
 *
 * Both tables are small (one entry per organisation and per mount) and read on every request,
 * so they live in memory behind a read-write lock and are written through to storage: a
 * change is committed durably first, then published in memory. Namespace and mount records
 * are JSON documents (sealed by storage like every record).
 *
 * The registry knows no engine by name: removing a mount or a namespace asks every engine to
 * purge its records inside the same write transaction, then to drop its cached state.
 */
#include "api/api_int.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

struct kms_api {
    struct kms_storage *st;
    struct kms_auth *auth;
    struct kms_api_limits limits;
    char version[32];
    pthread_rwlock_t lock;
    struct kms_ns *ns; /* ns[0] is root */
    size_t nns;
    struct kms_mount *mounts;
    size_t nmounts;
    bool initialized;
    char cluster_id[37];
    struct kms_ratelimit *ratelimit;
    struct kms_pool *offload; /* handler threads for requests that may run long */
    struct kms_audit *audit;
    void (*log)(const char *level, const char *msg, const char *path, const char *error);
    struct kms_engine *engines;
    size_t nengines;
};

#define INIT_META "init"

void kms_api_limits_default(struct kms_api_limits *l)
{
    l->max_request_size = 32u << 20;
    l->max_plaintext_size = 64u << 10;
    l->max_json_strings = 1000000;
    l->max_json_depth = 64;
    l->max_batch_items = 100000;
}

struct kms_storage *kms_api_storage(struct kms_api *api)
{
    return api->st;
}

struct kms_auth *kms_api_auth(struct kms_api *api)
{
    return api->auth;
}

void kms_api_log_failure(struct kms_api *api, const char *path, const char *error)
{
    static _Atomic int64_t last; /* the second of the last line */
    struct timespec ts;
    if (api->log == NULL) {
        return;
    }
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now = ts.tv_sec, prev = atomic_load(&last);
    if (now != prev && atomic_compare_exchange_strong(&last, &prev, now)) {
        api->log("error", "request failed with 500", path, error);
    }
}

void kms_api_log(struct kms_api *api, const char *level, const char *msg, const char *path,
                 const char *detail)
{
    if (api->log != NULL) {
        api->log(level, msg, path, detail);
    }
}

struct kms_audit *kms_api_audit(struct kms_api *api)
{
    return api->audit;
}

const struct kms_api_limits *kms_api_limits(struct kms_api *api)
{
    return &api->limits;
}

const char *kms_api_version(struct kms_api *api)
{
    return api->version;
}

struct kms_ratelimit *kms_api_ratelimit(struct kms_api *api)
{
    return api->ratelimit;
}

struct kms_pool *kms_api_offload(struct kms_api *api)
{
    return api->offload;
}

int kms_api_engine_add(struct kms_api *api, const struct kms_engine *e)
{
    struct kms_engine *grown = realloc(api->engines, (api->nengines + 1) * sizeof(*grown));
    if (grown == NULL) {
        return -1;
    }
    api->engines = grown;
    api->engines[api->nengines++] = *e;
    return 0;
}

const struct kms_engine *kms_api_engine_find(struct kms_api *api, const char *type)
{
    for (size_t i = 0; i < api->nengines; i++) {
        if (api->engines[i].builtin_path == NULL && strcmp(api->engines[i].type, type) == 0) {
            return &api->engines[i];
        }
    }
    return NULL;
}

int kms_api_engines_visit(struct kms_api *api, int (*cb)(const struct kms_engine *e, void *arg),
                          void *arg)
{
    for (size_t i = 0; i < api->nengines; i++) {
        int r = cb(&api->engines[i], arg);
        if (r != 0) {
            return r;
        }
    }
    return 0;
}

int kms_api_tick(struct kms_api *api, int64_t now, int64_t *next_due, kms_tick_report_fn report)
{
    int rc = 0;
    *next_due = 0;
    for (size_t i = 0; i < api->nengines; i++) {
        const struct kms_engine *e = &api->engines[i];
        int64_t due = 0;
        if (e->tick == NULL) {
            continue;
        }
        if (e->tick(e->state, now, &due, report) != 0) {
            rc = -1;
        }
        if (due > 0 && (*next_due == 0 || due < *next_due)) {
            *next_due = due;
        }
    }
    return rc;
}

/* Every engine's purge of a mount (m) or a whole namespace (m == NULL), in one transaction. */
static int purge_all(struct kms_api *api, struct kms_txn *txn, const char *ns_id,
                     const struct kms_mount *m)
{
    for (size_t i = 0; i < api->nengines; i++) {
        const struct kms_engine *e = &api->engines[i];
        if (e->purge != NULL && e->purge(e->state, txn, ns_id, m) != 0) {
            return -1;
        }
    }
    return 0;
}

static void purged_all(struct kms_api *api, const char *ns_id, const struct kms_mount *m)
{
    for (size_t i = 0; i < api->nengines; i++) {
        const struct kms_engine *e = &api->engines[i];
        if (e->purged != NULL) {
            e->purged(e->state, ns_id, m);
        }
    }
}

const char *kms_api_cluster_id(struct kms_api *api)
{
    return api->cluster_id;
}

int kms_api_store_status(struct kms_storage *st, bool *initialized, char cluster_id[37])
{
    struct kms_txn *txn = NULL;
    uint8_t *val = NULL;
    size_t vallen = 0;
    int g;

    *initialized = false;
    cluster_id[0] = '\0';
    if (kms_storage_txn_begin(st, false, &txn) != 0) {
        return -1;
    }
    g = kms_storage_get(txn, KMS_DB_META, INIT_META, strlen(INIT_META), &val, &vallen);
    kms_storage_txn_abort(&txn);
    if (g < 0) {
        return -1;
    }
    if (g == 0) {
        json_t *rec = json_loadb((const char *)val, vallen, 0, NULL);
        const char *cid = json_string_value(json_object_get(rec, "cluster_id"));
        snprintf(cluster_id, 37, "%s", cid ? cid : "");
        json_decref(rec);
        *initialized = true;
    }
    kms_free_wipe((void **)&val, vallen);
    return 0;
}

bool kms_api_initialized(struct kms_api *api)
{
    return __atomic_load_n(&api->initialized, __ATOMIC_ACQUIRE);
}

/* ---- records ----------------------------------------------------------------------------- */

static json_t *ns_to_json(const struct kms_ns *ns)
{
    return json_pack("{s:s, s:s, s:I}", "id", ns->id, "path", ns->path, "created",
                     (json_int_t)ns->created);
}

static int ns_from_json(const uint8_t *val, size_t len, struct kms_ns *ns)
{
    json_t *j = json_loadb((const char *)val, len, 0, NULL);
    int rc = -1;
    const char *id, *path;
    json_int_t created = 0;
    if (j != NULL &&
        json_unpack(j, "{s:s, s:s, s?I}", "id", &id, "path", &path, "created", &created) == 0) {
        memset(ns, 0, sizeof(*ns));
        snprintf(ns->id, sizeof(ns->id), "%s", id);
        snprintf(ns->path, sizeof(ns->path), "%s", path);
        ns->created = created;
        rc = 0;
    }
    json_decref(j);
    return rc;
}

static json_t *mount_to_json(const struct kms_mount *m)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I}", "ns_id", m->ns_id, "path", m->path,
                     "type", m->type, "uuid", m->uuid, "accessor", m->accessor, "description",
                     m->description, "created", (json_int_t)m->created);
}

static int mount_from_json(const uint8_t *val, size_t len, struct kms_mount *m)
{
    json_t *j = json_loadb((const char *)val, len, 0, NULL);
    int rc = -1;
    const char *ns_id, *path, *type, *uuid, *acc, *desc = "";
    json_int_t created = 0;
    if (j != NULL && json_unpack(j, "{s:s, s:s, s:s, s:s, s:s, s?s, s?I}", "ns_id", &ns_id, "path",
                                 &path, "type", &type, "uuid", &uuid, "accessor", &acc,
                                 "description", &desc, "created", &created) == 0) {
        memset(m, 0, sizeof(*m));
        snprintf(m->ns_id, sizeof(m->ns_id), "%s", ns_id);
        snprintf(m->path, sizeof(m->path), "%s", path);
        snprintf(m->type, sizeof(m->type), "%s", type);
        snprintf(m->uuid, sizeof(m->uuid), "%s", uuid);
        snprintf(m->accessor, sizeof(m->accessor), "%s", acc);
        snprintf(m->description, sizeof(m->description), "%s", desc);
        m->created = created;
        rc = 0;
    }
    json_decref(j);
    return rc;
}

static int put_json(struct kms_txn *txn, enum kms_db db, const char *key, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    int rc = -1;
    if (text != NULL) {
        rc = kms_storage_put(txn, db, key, strlen(key), text, strlen(text));
    }
    free(text);
    return rc;
}

static int load_ns_cb(const uint8_t *key, size_t keylen, const uint8_t *val, size_t vallen,
                      void *arg)
{
    struct kms_api *api = arg;
    struct kms_ns *grown = realloc(api->ns, (api->nns + 1) * sizeof(*grown));
    (void)key;
    (void)keylen;
    if (grown == NULL) {
        return -1;
    }
    api->ns = grown;
    if (ns_from_json(val, vallen, &api->ns[api->nns]) != 0) {
        return -1;
    }
    api->nns++;
    return 0;
}

static int load_mount_cb(const uint8_t *key, size_t keylen, const uint8_t *val, size_t vallen,
                         void *arg)
{
    struct kms_api *api = arg;
    struct kms_mount *grown = realloc(api->mounts, (api->nmounts + 1) * sizeof(*grown));
    (void)key;
    (void)keylen;
    if (grown == NULL) {
        return -1;
    }
    api->mounts = grown;
    if (mount_from_json(val, vallen, &api->mounts[api->nmounts]) != 0) {
        return -1;
    }
    api->nmounts++;
    return 0;
}

int kms_api_create(struct kms_storage *st, const struct kms_api_opts *opts, struct kms_api **out,
                   struct kms_err *err)
{
    struct kms_api *api = calloc(1, sizeof(*api));
    struct kms_txn *txn = NULL;
    uint8_t *val = NULL;
    size_t vallen = 0;
    int rc = -1;

    if (api == NULL) {
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    api->st = st;
    api->limits = opts->limits;
    snprintf(api->version, sizeof(api->version), "%s", opts->version ? opts->version : "");
    api->audit = opts->audit;
    api->log = opts->log;
    pthread_rwlock_init(&api->lock, NULL);
    api->ns = calloc(1, sizeof(*api->ns));
    if (api->ns == NULL) {
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    snprintf(api->ns[0].id, sizeof(api->ns[0].id), "root");
    api->nns = 1;
    if (opts->rate_limit > 0 &&
        kms_ratelimit_create(opts->rate_limit,
                             opts->rate_limit_burst > 0 ? opts->rate_limit_burst
                                                        : 2 * opts->rate_limit,
                             &api->ratelimit) != 0) {
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    if (kms_auth_create(st, &api->auth, err) != 0) {
        goto out;
    }
    /* as many handler threads as cores: the work they take is CPU-bound */
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (kms_pool_create(ncpu < 2 ? 2 : ncpu > 64 ? 64 : (size_t)ncpu, &api->offload) != 0) {
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    if (kms_storage_txn_begin(st, false, &txn) != 0) {
        kms_err_set(err, 500, "cannot open storage transaction");
        goto out;
    }
    if (kms_storage_scan(txn, KMS_DB_NAMESPACES, "", 0, NULL, 0, true, load_ns_cb, api) != 0 ||
        kms_storage_scan(txn, KMS_DB_MOUNTS, "", 0, NULL, 0, true, load_mount_cb, api) != 0) {
        kms_err_set(err, 500, "cannot load namespaces and mounts from storage");
        goto out;
    }
    int g = kms_storage_get(txn, KMS_DB_META, INIT_META, strlen(INIT_META), &val, &vallen);
    if (g < 0) {
        kms_err_set(err, 500, "cannot read the init record");
        goto out;
    }
    api->initialized = g == 0;
    if (g == 0) {
        json_t *rec = json_loadb((const char *)val, vallen, 0, NULL);
        const char *cid = json_string_value(json_object_get(rec, "cluster_id"));
        snprintf(api->cluster_id, sizeof(api->cluster_id), "%s", cid ? cid : "");
        json_decref(rec);
    }
    *out = api;
    api = NULL;
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    free(val);
    if (api != NULL) {
        kms_api_destroy(&api);
    }
    return rc;
}

void kms_api_destroy(struct kms_api **apip)
{
    struct kms_api *api = *apip;
    if (api == NULL) {
        return;
    }
    /* first: a request abandoned while its handler ran is finished by its handler thread */
    kms_pool_destroy(&api->offload);
    for (size_t i = api->nengines; i > 0; i--) {
        if (api->engines[i - 1].destroy != NULL) {
            api->engines[i - 1].destroy(api->engines[i - 1].state);
        }
    }
    free(api->engines);
    kms_auth_destroy(&api->auth);
    kms_ratelimit_destroy(&api->ratelimit);
    pthread_rwlock_destroy(&api->lock);
    free(api->ns);
    free(api->mounts);
    free(api);
    *apip = NULL;
}

int kms_api_init_store(struct kms_api *api, const char *root_id, char *root_out,
                       struct kms_err *err)
{
    struct kms_txn *txn = NULL;
    int rc = -1;
    int64_t sec;
    int32_t nsec;
    char rec[128];
    char cid[37];

    pthread_rwlock_wrlock(&api->lock);
    if (api->initialized) {
        kms_err_set(err, 400, "Vault is already initialized");
        goto out;
    }
    kms_now(&sec, &nsec);
    if (kms_uuid4(cid) != 0) {
        kms_err_set(err, 500, "cannot generate the cluster id");
        goto out;
    }
    snprintf(rec, sizeof(rec), "{\"initialized_at\":%lld,\"cluster_id\":\"%s\"}", (long long)sec,
             cid);
    if (kms_storage_txn_begin(api->st, true, &txn) != 0) {
        kms_err_set(err, 500, "cannot open storage transaction");
        goto out;
    }
    /* a store whose init record is gone while its tokens or keys remain (a damaged page, a
     * hand-edited copy) is not initialised again: that would hand out a new root token over
     * the old keys */
    static const enum kms_db kept[] = {KMS_DB_TOKENS, KMS_DB_KEYS, KMS_DB_KEY_VERSIONS,
                                       KMS_DB_KMSKEYS};
    for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++) {
        size_t n = 0;
        if (kms_storage_count(txn, kept[i], &n) != 0 || n > 0) {
            kms_err_set(err, 500,
                        "the store holds tokens or keys but no init record: it is damaged and is "
                        "not initialised again; restore it from a backup");
            goto out;
        }
    }
    if (kms_auth_token_create_root(api->auth, txn, root_id, root_out, err) != 0) {
        goto out;
    }
    if (kms_storage_put(txn, KMS_DB_META, INIT_META, strlen(INIT_META), rec, strlen(rec)) != 0 ||
        kms_storage_txn_commit(&txn) != 0) {
        kms_err_set(err, 500, "cannot write the init record");
        goto out;
    }
    snprintf(api->cluster_id, sizeof(api->cluster_id), "%s", cid);
    __atomic_store_n(&api->initialized, true, __ATOMIC_RELEASE);
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    pthread_rwlock_unlock(&api->lock);
    return rc;
}

int kms_api_dev_bootstrap(struct kms_api *api, const char *root_id, char *root_out,
                          size_t root_out_len, struct kms_err *err)
{
    char tok[KMS_TOKEN_MAX_LEN];
    struct kms_mount m;
    int rc = -1;
    if (kms_api_init_store(api, root_id, tok, err) != 0) {
        goto out;
    }
    if (kms_registry_mount_add(api, "root", "transit/", "transit", "transit for dev mode", &m,
                               err) != 0) {
        goto out;
    }
    snprintf(root_out, root_out_len, "%s", tok);
    rc = 0;
out:
    kms_memzero(tok, sizeof(tok));
    return rc;
}

/* ---- namespaces -------------------------------------------------------------------------- */

int kms_registry_ns_resolve(struct kms_api *api, const char *path, struct kms_ns *ns,
                            size_t *consumed)
{
    size_t best = 0;
    pthread_rwlock_rdlock(&api->lock);
    for (size_t i = 1; i < api->nns; i++) {
        size_t n = strlen(api->ns[i].path);
        if (n > strlen(api->ns[best].path) && strncmp(path, api->ns[i].path, n) == 0) {
            best = i;
        }
    }
    *ns = api->ns[best];
    *consumed = strlen(api->ns[best].path);
    pthread_rwlock_unlock(&api->lock);
    return 0;
}

/* With api->lock held: the namespace with this path, or with this id; NULL when none. */
static const struct kms_ns *ns_at_path(const struct kms_api *api, const char *path)
{
    for (size_t i = 0; i < api->nns; i++) {
        if (strcmp(api->ns[i].path, path) == 0) {
            return &api->ns[i];
        }
    }
    return NULL;
}

static const struct kms_ns *ns_with_id(const struct kms_api *api, const char *id)
{
    for (size_t i = 0; i < api->nns; i++) {
        if (strcmp(api->ns[i].id, id) == 0) {
            return &api->ns[i];
        }
    }
    return NULL;
}

int kms_registry_ns_get(struct kms_api *api, const char *path, struct kms_ns *ns)
{
    if (strcmp(path, "root") == 0 || strcmp(path, "root/") == 0) {
        path = "";
    }
    pthread_rwlock_rdlock(&api->lock);
    const struct kms_ns *n = ns_at_path(api, path);
    if (n != NULL) {
        *ns = *n;
    }
    pthread_rwlock_unlock(&api->lock);
    return n != NULL ? 0 : KMS_STORAGE_NOTFOUND;
}

int kms_registry_ns_by_id(struct kms_api *api, const char *id, struct kms_ns *ns)
{
    pthread_rwlock_rdlock(&api->lock);
    const struct kms_ns *n = ns_with_id(api, id);
    if (n != NULL) {
        *ns = *n;
    }
    pthread_rwlock_unlock(&api->lock);
    return n != NULL ? 0 : KMS_STORAGE_NOTFOUND;
}

/* OpenBao's reserved names, and "kms": the built-in KMSKey API answers at kms/ in every
 * namespace (as sys/ does), and a child namespace of that name would take every kms/ request of
 * its parent (the longest namespace prefix wins) */
static bool ns_name_reserved(const char *name, size_t n)
{
    static const char *const reserved[] = {".",    "..",        "root",     "sys", "audit",
                                           "auth", "cubbyhole", "identity", "kms"};
    for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++) {
        if (strlen(reserved[i]) == n && strncmp(reserved[i], name, n) == 0) {
            return true;
        }
    }
    return false;
}

/* Two mount-table paths ("a/", "a/b/") that would shadow one another: one is a prefix of the
 * other. */
static bool paths_overlap(const char *x, const char *y)
{
    size_t a = strlen(x), b = strlen(y);
    return strncmp(x, y, a < b ? a : b) == 0;
}

/*
 * With api->lock held: the mount of the namespace at parent_path (its path, "" for root) that
 * a child namespace `seg` ("name/") would shadow, or NULL. A namespace is resolved from the
 * path before the mount is, so either would hide the other (OpenBao refuses the namespace:
 * "new namespace conflicts with existing mount").
 */
static const char *ns_mount_conflict(const struct kms_api *api, const char *parent_path,
                                     const char *seg)
{
    const struct kms_ns *parent = ns_at_path(api, parent_path);
    for (size_t i = 0; parent != NULL && i < api->nmounts; i++) {
        if (strcmp(api->mounts[i].ns_id, parent->id) == 0 &&
            paths_overlap(api->mounts[i].path, seg)) {
            return api->mounts[i].path;
        }
    }
    return NULL;
}

/* With api->lock held: the child namespace of ns_id that a mount at `path` would overlap (the
 * namespace would hide it), or NULL. */
static const char *mount_ns_conflict(const struct kms_api *api, const char *ns_id, const char *path)
{
    const struct kms_ns *parent = ns_with_id(api, ns_id);
    size_t pl = parent != NULL ? strlen(parent->path) : 0;
    for (size_t i = 0; parent != NULL && i < api->nns; i++) {
        const char *seg = api->ns[i].path + pl; /* "name/" for a direct child */
        if (strncmp(api->ns[i].path, parent->path, pl) == 0 && seg[0] != '\0' &&
            strchr(seg, '/') == seg + strlen(seg) - 1 && paths_overlap(seg, path)) {
            return api->ns[i].path;
        }
    }
    return NULL;
}

/* A new custom_metadata object: a copy of now (NULL or not an object: empty) with md merged
 * in as RFC 7396 does (a null value removes the key). */
static json_t *metadata_merged(const json_t *now, const json_t *md)
{
    json_t *next = json_is_object(now) ? json_deep_copy(now) : json_object();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)md, k, v)
    {
        if (json_is_null(v)) {
            json_object_del(next, k);
        } else {
            json_object_set(next, k, v);
        }
    }
    return next;
}

/* The stored custom_metadata of namespace record `path` changed by md (lock held). */
static int ns_metadata_write(struct kms_api *api, const char *path, const json_t *md, bool merge,
                             struct kms_err *err)
{
    struct kms_txn *txn = NULL;
    uint8_t *val = NULL;
    size_t vallen = 0;
    json_t *rec = NULL;
    int rc = -1;

    if (kms_storage_txn_begin(api->st, true, &txn) != 0 ||
        kms_storage_get(txn, KMS_DB_NAMESPACES, path, strlen(path), &val, &vallen) != 0 ||
        (rec = json_loadb((const char *)val, vallen, 0, NULL)) == NULL || !json_is_object(rec)) {
        kms_err_set(err, 500, "cannot read the namespace");
        goto out;
    }
    json_t *now = json_object_get(rec, "custom_metadata");
    json_object_set_new(rec, "custom_metadata",
                        metadata_merged(merge && md != NULL ? now : NULL, md));
    if (put_json(txn, KMS_DB_NAMESPACES, path, rec) != 0 || kms_storage_txn_commit(&txn) != 0) {
        kms_err_set(err, 500, "cannot store the namespace");
        goto out;
    }
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    free(val);
    json_decref(rec);
    return rc;
}

int kms_registry_ns_create(struct kms_api *api, const char *path, struct kms_ns *out,
                           struct kms_err *err)
{
    return kms_registry_ns_put(api, path, NULL, KMS_NS_KEEP, out, err);
}

int kms_registry_ns_put(struct kms_api *api, const char *path, const json_t *metadata,
                        enum kms_ns_md how, struct kms_ns *out, struct kms_err *err)
{
    struct kms_ns ns;
    struct kms_txn *txn = NULL;
    json_t *j = NULL;
    int rc = -1;
    int32_t nsec;

    /* path = parent path + one segment + "/" */
    size_t n = strlen(path);
    if (n < 2 || path[n - 1] != '/' || n >= sizeof(ns.path)) {
        kms_err_set(err, 400, "invalid namespace path");
        return -1;
    }
    const char *seg = path + n - 1;
    while (seg > path && seg[-1] != '/') {
        seg--;
    }
    size_t seglen = (size_t)(path + n - 1 - seg);
    if (seglen == 0 || ns_name_reserved(seg, seglen)) {
        kms_err_set(err, 400, "%.*s is a reserved path", (int)seglen, seg);
        return -1;
    }
    for (size_t i = 0; i < seglen; i++) {
        unsigned char ch = (unsigned char)seg[i];
        if (ch <= ' ' || ch == 0x7f || ch == '%' || ch == '?' || ch == '#') {
            kms_err_set(err, 400, "invalid namespace name \"%.*s\"", (int)seglen, seg);
            return -1;
        }
    }
    memset(&ns, 0, sizeof(ns));
    snprintf(ns.path, sizeof(ns.path), "%s", path);
    kms_now(&ns.created, &nsec);

    pthread_rwlock_wrlock(&api->lock);
    const struct kms_ns *had = ns_at_path(api, path);
    if (had != NULL) {
        *out = *had;
        rc = how == KMS_NS_KEEP ||
                     ns_metadata_write(api, path, metadata, how == KMS_NS_MERGE, err) == 0
                 ? 1 /* exists */
                 : -1;
        goto out;
    }
    if (how == KMS_NS_MERGE) {
        kms_err_set(err, 404, "namespace not found"); /* OpenBao's PATCH */
        goto out;
    }
    char parent[KMS_PATH_MAX];
    snprintf(parent, sizeof(parent), "%.*s", (int)(seg - path), path);
    const char *conflict = ns_mount_conflict(api, parent, seg);
    if (conflict != NULL) {
        kms_err_set(err, 400, "new namespace conflicts with existing mount: %s", conflict);
        goto out;
    }
    do {
        if (kms_rand_base62(ns.id, 6) != 0) {
            kms_err_set(err, 500, "cannot generate a namespace id");
            goto out;
        }
        bool clash = false;
        for (size_t i = 0; i < api->nns; i++) {
            clash = clash || strcmp(api->ns[i].id, ns.id) == 0;
        }
        if (!clash) {
            break;
        }
    } while (1);
    struct kms_ns *grown = realloc(api->ns, (api->nns + 1) * sizeof(*grown));
    if (grown == NULL) {
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    api->ns = grown;
    j = ns_to_json(&ns);
    if (j != NULL && json_object_size(metadata) > 0) {
        json_object_set_new(j, "custom_metadata", metadata_merged(NULL, metadata));
    }
    if (j == NULL || kms_storage_txn_begin(api->st, true, &txn) != 0 ||
        put_json(txn, KMS_DB_NAMESPACES, ns.path, j) != 0 || kms_storage_txn_commit(&txn) != 0) {
        kms_err_set(err, 500, "cannot store the namespace");
        goto out;
    }
    api->ns[api->nns++] = ns;
    *out = ns;
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    json_decref(j);
    pthread_rwlock_unlock(&api->lock);
    return rc;
}

int kms_registry_ns_metadata(struct kms_api *api, const char *path, json_t **out)
{
    struct kms_txn *txn = NULL;
    uint8_t *val = NULL;
    size_t vallen = 0;
    json_t *rec = NULL;
    *out = NULL;
    int rc = kms_storage_txn_begin(api->st, false, &txn) != 0
                 ? -1
                 : kms_storage_get(txn, KMS_DB_NAMESPACES, path, strlen(path), &val, &vallen);
    if (rc == 0) {
        rec = json_loadb((const char *)val, vallen, 0, NULL);
        json_t *md = json_object_get(rec, "custom_metadata");
        *out = json_is_object(md) ? json_incref(md) : json_object();
        rc = *out != NULL ? 0 : -1;
    }
    kms_storage_txn_abort(&txn);
    free(val);
    json_decref(rec);
    return rc;
}

int kms_registry_ns_delete(struct kms_api *api, const char *path, struct kms_err *err)
{
    struct kms_txn *txn = NULL;
    int rc = -1;
    size_t idx = 0;
    char prefix[KMS_NS_ID_LEN + 2];

    pthread_rwlock_wrlock(&api->lock);
    for (size_t i = 1; i < api->nns; i++) {
        if (strcmp(api->ns[i].path, path) == 0) {
            idx = i;
        }
    }
    if (idx == 0) {
        rc = KMS_STORAGE_NOTFOUND;
        goto out;
    }
    for (size_t i = 1; i < api->nns; i++) {
        if (i != idx && strncmp(api->ns[i].path, path, strlen(path)) == 0) {
            kms_err_set(err, 400, "cannot delete namespace (\"%s\") containing child namespaces",
                        path);
            goto out;
        }
    }
    const struct kms_ns *ns = &api->ns[idx];
    snprintf(prefix, sizeof(prefix), "%s/", ns->id);
    if (kms_storage_txn_begin(api->st, true, &txn) != 0) {
        kms_err_set(err, 500, "cannot open storage transaction");
        goto out;
    }
    for (size_t i = 0; i < api->nmounts; i++) {
        if (strcmp(api->mounts[i].ns_id, ns->id) == 0 &&
            purge_all(api, txn, ns->id, &api->mounts[i]) != 0) {
            kms_err_set(err, 500, "cannot remove the namespace's records");
            goto out;
        }
    }
    if (purge_all(api, txn, ns->id, NULL) != 0) {
        kms_err_set(err, 500, "cannot remove the namespace's records");
        goto out;
    }
    if (kms_storage_del_prefix(txn, KMS_DB_MOUNTS, prefix, strlen(prefix), NULL) != 0 ||
        kms_storage_del(txn, KMS_DB_NAMESPACES, path, strlen(path)) < 0 ||
        kms_storage_txn_commit(&txn) != 0) {
        kms_err_set(err, 500, "cannot delete the namespace");
        /* as for a mount: its mounts' cached keys go, whatever the commit's outcome */
        for (size_t i = 0; i < api->nmounts; i++) {
            if (strcmp(api->mounts[i].ns_id, ns->id) == 0) {
                purged_all(api, ns->id, &api->mounts[i]);
            }
        }
        goto out;
    }
    char gone_id[KMS_NS_ID_LEN];
    snprintf(gone_id, sizeof(gone_id), "%s", ns->id);
    size_t w = 0;
    for (size_t i = 0; i < api->nmounts; i++) {
        if (strcmp(api->mounts[i].ns_id, gone_id) != 0) {
            api->mounts[w++] = api->mounts[i];
        } else {
            purged_all(api, gone_id, &api->mounts[i]);
        }
    }
    api->nmounts = w;
    api->ns[idx] = api->ns[api->nns - 1];
    api->nns--;
    purged_all(api, gone_id, NULL);
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    pthread_rwlock_unlock(&api->lock);
    return rc;
}

static int cmp_ns(const void *a, const void *b)
{
    return strcmp(((const struct kms_ns *)a)->path, ((const struct kms_ns *)b)->path);
}

int kms_registry_ns_list(struct kms_api *api, const char *parent,
                         int (*cb)(const struct kms_ns *ns, void *arg), void *arg)
{
    struct kms_ns *copy = NULL;
    size_t n = 0;
    size_t pl = strlen(parent);
    int rc = 0;

    pthread_rwlock_rdlock(&api->lock);
    copy = calloc(api->nns ? api->nns : 1, sizeof(*copy));
    for (size_t i = 1; copy != NULL && i < api->nns; i++) {
        const char *p = api->ns[i].path;
        if (strncmp(p, parent, pl) == 0 && strlen(p) > pl) {
            const char *rest = p + pl;
            const char *slash = strchr(rest, '/');
            if (slash != NULL && slash[1] == '\0') {
                copy[n++] = api->ns[i];
            }
        }
    }
    pthread_rwlock_unlock(&api->lock);
    if (copy == NULL) {
        return -1;
    }
    qsort(copy, n, sizeof(*copy), cmp_ns);
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = cb(&copy[i], arg);
    }
    free(copy);
    return rc < 0 ? -1 : 0;
}

/* ---- mounts ------------------------------------------------------------------------------ */

size_t kms_mount_prefix(const struct kms_mount *m, char *out, size_t n)
{
    /* on every request's key lookups: two copies instead of a snprintf */
    size_t a = strnlen(m->ns_id, sizeof(m->ns_id));
    size_t b = strnlen(m->uuid, sizeof(m->uuid));
    if (a + b + 2 >= n) {
        return n > 0 ? (size_t)snprintf(out, n, "%s/%s/", m->ns_id, m->uuid) : a + b + 2;
    }
    memcpy(out, m->ns_id, a);
    out[a] = '/';
    memcpy(out + a + 1, m->uuid, b);
    out[a + 1 + b] = '/';
    out[a + b + 2] = '\0';
    return a + b + 2;
}

int kms_registry_mount_resolve(struct kms_api *api, const char *ns_id, const char *path,
                               struct kms_mount *out)
{
    int rc = KMS_STORAGE_NOTFOUND;
    size_t bestlen = 0;
    size_t plen = strlen(path);
    pthread_rwlock_rdlock(&api->lock);
    for (size_t i = 0; i < api->nmounts; i++) {
        const struct kms_mount *m = &api->mounts[i];
        size_t n = strlen(m->path);
        if (strcmp(m->ns_id, ns_id) != 0 || n <= bestlen) {
            continue;
        }
        /* "transit/..." or exactly "transit" (a request for the mount root) */
        if (strncmp(path, m->path, n) == 0 ||
            (plen == n - 1 && strncmp(path, m->path, n - 1) == 0)) {
            *out = *m;
            bestlen = n;
            rc = 0;
        }
    }
    pthread_rwlock_unlock(&api->lock);
    return rc;
}

int kms_registry_mount_get(struct kms_api *api, const char *ns_id, const char *path,
                           struct kms_mount *out)
{
    int rc = KMS_STORAGE_NOTFOUND;
    pthread_rwlock_rdlock(&api->lock);
    for (size_t i = 0; i < api->nmounts; i++) {
        if (strcmp(api->mounts[i].ns_id, ns_id) == 0 && strcmp(api->mounts[i].path, path) == 0) {
            *out = api->mounts[i];
            rc = 0;
            break;
        }
    }
    pthread_rwlock_unlock(&api->lock);
    return rc;
}

int kms_registry_mount_add(struct kms_api *api, const char *ns_id, const char *path,
                           const char *type, const char *description, struct kms_mount *out,
                           struct kms_err *err)
{
    return kms_registry_mount_add_tuned(api, ns_id, path, type, description, NULL, NULL, out, err);
}

int kms_registry_mount_add_tuned(struct kms_api *api, const char *ns_id, const char *path,
                                 const char *type, const char *description, const json_t *config,
                                 const json_t *options, struct kms_mount *out, struct kms_err *err)
{
    struct kms_mount m;
    struct kms_txn *txn = NULL;
    json_t *j = NULL;
    char key[KMS_PATH_MAX + KMS_NS_ID_LEN + 2];
    char acc[9];
    int32_t nsec;
    int rc = -1;

    if (kms_api_engine_find(api, type) == NULL) {
        return kms_err_set(err, 400, "plugin not found in the catalog: %s", type);
    }
    if (strlen(path) > KMS_MOUNT_PATH_MAX) {
        /* the record's key ("<ns id>/<path>") must fit a storage key (LMDB: 511 bytes) */
        return kms_err_set(err, 400, "path too long (at most %d bytes)", KMS_MOUNT_PATH_MAX);
    }
    if (description != NULL && strlen(description) >= sizeof(m.description)) {
        return kms_err_set(err, 400, "description too long (at most %zu bytes)",
                           sizeof(m.description) - 1);
    }
    memset(&m, 0, sizeof(m));
    snprintf(m.ns_id, sizeof(m.ns_id), "%s", ns_id);
    snprintf(m.path, sizeof(m.path), "%s", path);
    snprintf(m.type, sizeof(m.type), "%s", type);
    snprintf(m.description, sizeof(m.description), "%s", description ? description : "");
    kms_now(&m.created, &nsec);
    uint8_t rnd[4];
    if (kms_uuid4(m.uuid) != 0 || kms_rand_bytes(rnd, sizeof(rnd)) != 0) {
        return kms_err_set(err, 500, "cannot generate a mount id");
    }
    kms_hex_encode(rnd, sizeof(rnd), acc);
    /* OpenBao's form: "transit_1a2b3c4d", and "auth_kubernetes_1a2b3c4d" for auth methods */
    snprintf(m.accessor, sizeof(m.accessor), "%s%s_%s",
             strncmp(path, "auth/", 5) == 0 ? "auth_" : "", type, acc);
    snprintf(key, sizeof(key), "%s/%s", ns_id, path);

    pthread_rwlock_wrlock(&api->lock);
    for (size_t i = 0; i < api->nmounts; i++) {
        const struct kms_mount *o = &api->mounts[i];
        if (strcmp(o->ns_id, ns_id) != 0) {
            continue;
        }
        if (paths_overlap(o->path, path)) {
            kms_err_set(err, 400, "path is already in use at %s", o->path);
            goto out;
        }
    }
    const char *child = mount_ns_conflict(api, ns_id, path);
    if (child != NULL) {
        kms_err_set(err, 400, "path is already in use by the namespace %s", child);
        goto out;
    }
    struct kms_mount *grown = realloc(api->mounts, (api->nmounts + 1) * sizeof(*grown));
    if (grown == NULL) {
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    api->mounts = grown;
    j = mount_to_json(&m);
    if (j != NULL && config != NULL) {
        json_object_set(j, "config", (json_t *)config);
    }
    if (j != NULL && options != NULL) {
        json_object_set(j, "options", (json_t *)options);
    }
    if (j == NULL || kms_storage_txn_begin(api->st, true, &txn) != 0 ||
        put_json(txn, KMS_DB_MOUNTS, key, j) != 0 || kms_storage_txn_commit(&txn) != 0) {
        kms_err_set(err, 500, "cannot store the mount");
        goto out;
    }
    api->mounts[api->nmounts++] = m;
    if (out != NULL) {
        *out = m;
    }
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    json_decref(j);
    pthread_rwlock_unlock(&api->lock);
    return rc;
}

int kms_registry_mount_remove(struct kms_api *api, const char *ns_id, const char *path,
                              struct kms_err *err)
{
    struct kms_txn *txn = NULL;
    char key[KMS_PATH_MAX + KMS_NS_ID_LEN + 2];
    int rc = -1;
    size_t idx = SIZE_MAX;

    snprintf(key, sizeof(key), "%s/%s", ns_id, path);
    pthread_rwlock_wrlock(&api->lock);
    for (size_t i = 0; i < api->nmounts; i++) {
        if (strcmp(api->mounts[i].ns_id, ns_id) == 0 && strcmp(api->mounts[i].path, path) == 0) {
            idx = i;
        }
    }
    if (idx == SIZE_MAX) {
        rc = KMS_STORAGE_NOTFOUND;
        goto out;
    }
    if (kms_storage_txn_begin(api->st, true, &txn) != 0 ||
        purge_all(api, txn, ns_id, &api->mounts[idx]) != 0 ||
        kms_storage_del(txn, KMS_DB_MOUNTS, key, strlen(key)) < 0 ||
        kms_storage_txn_commit(&txn) != 0) {
        kms_err_set(err, 500, "cannot remove the mount");
        /* the mount stays, but not its cached keys: a PostgreSQL COMMIT whose answer was lost
         * may have removed them, and they would go on encrypting from the caches (the purge
         * callbacks of a mount only drop cached state, which is read again) */
        purged_all(api, ns_id, &api->mounts[idx]);
        goto out;
    }
    struct kms_mount gone = api->mounts[idx];
    api->mounts[idx] = api->mounts[api->nmounts - 1];
    api->nmounts--;
    purged_all(api, ns_id, &gone);
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    pthread_rwlock_unlock(&api->lock);
    return rc;
}

static int cmp_mount(const void *a, const void *b)
{
    return strcmp(((const struct kms_mount *)a)->path, ((const struct kms_mount *)b)->path);
}

int kms_registry_mount_list(struct kms_api *api, const char *ns_id,
                            int (*cb)(const struct kms_mount *m, void *arg), void *arg)
{
    struct kms_mount *copy = NULL;
    size_t n = 0;
    int rc = 0;
    pthread_rwlock_rdlock(&api->lock);
    copy = calloc(api->nmounts ? api->nmounts : 1, sizeof(*copy));
    for (size_t i = 0; copy != NULL && i < api->nmounts; i++) {
        if (strcmp(api->mounts[i].ns_id, ns_id) == 0) {
            copy[n++] = api->mounts[i];
        }
    }
    pthread_rwlock_unlock(&api->lock);
    if (copy == NULL) {
        return -1;
    }
    qsort(copy, n, sizeof(*copy), cmp_mount);
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = cb(&copy[i], arg);
    }
    free(copy);
    return rc < 0 ? -1 : 0;
}

/* ---- tuning and moves -------------------------------------------------------------------- */

/* The index of mount `path` of namespace ns_id in api->mounts (lock held), or SIZE_MAX. */
static size_t mount_index(const struct kms_api *api, const char *ns_id, const char *path)
{
    for (size_t i = 0; i < api->nmounts; i++) {
        if (strcmp(api->mounts[i].ns_id, ns_id) == 0 && strcmp(api->mounts[i].path, path) == 0) {
            return i;
        }
    }
    return SIZE_MAX;
}

/* The stored record of a mount, parsed; 0, KMS_STORAGE_NOTFOUND or -1. */
static int mount_record_get(struct kms_txn *txn, const char *key, json_t **out)
{
    uint8_t *val = NULL;
    size_t vallen = 0;
    *out = NULL;
    int g = kms_storage_get(txn, KMS_DB_MOUNTS, key, strlen(key), &val, &vallen);
    if (g == 0) {
        *out = json_loadb((const char *)val, vallen, 0, NULL);
        g = json_is_object(*out) ? 0 : -1;
    }
    free(val);
    return g;
}

static json_t *object_or_empty(json_t *v)
{
    return json_is_object(v) ? json_incref(v) : json_object();
}

int kms_registry_mount_tuning(struct kms_api *api, const char *ns_id, const char *path,
                              json_t **out)
{
    struct kms_txn *txn = NULL;
    json_t *rec = NULL;
    char key[KMS_PATH_MAX + KMS_NS_ID_LEN + 2];
    int rc = -1;

    *out = NULL;
    snprintf(key, sizeof(key), "%s/%s", ns_id, path);
    if (kms_storage_txn_begin(api->st, false, &txn) != 0) {
        goto out;
    }
    rc = mount_record_get(txn, key, &rec);
    if (rc == 0) {
        *out = json_pack("{s:o, s:o}", "config", object_or_empty(json_object_get(rec, "config")),
                         "options", object_or_empty(json_object_get(rec, "options")));
        rc = *out != NULL ? 0 : -1;
    }
out:
    kms_storage_txn_abort(&txn);
    json_decref(rec);
    return rc;
}

int kms_registry_mount_retune(struct kms_api *api, const char *ns_id, const char *path,
                              int (*fn)(json_t *cfg, json_t *opts, const char **desc, void *arg),
                              void *arg, struct kms_err *err)
{
    struct kms_txn *txn = NULL;
    json_t *rec = NULL;
    json_t *cfg = NULL;
    json_t *opts = NULL;
    const char *description = NULL;
    char key[KMS_PATH_MAX + KMS_NS_ID_LEN + 2];
    int rc = -1;

    snprintf(key, sizeof(key), "%s/%s", ns_id, path);
    pthread_rwlock_wrlock(&api->lock);
    size_t idx = mount_index(api, ns_id, path);
    if (idx == SIZE_MAX) {
        rc = KMS_STORAGE_NOTFOUND;
        goto out;
    }
    if (kms_storage_txn_begin(api->st, true, &txn) != 0 || mount_record_get(txn, key, &rec) != 0) {
        kms_err_set(err, 500, "cannot read the mount");
        goto out;
    }
    /* the settings as stored now, changed under the lock: two tunes never lose each other's */
    cfg = json_is_object(json_object_get(rec, "config"))
              ? json_deep_copy(json_object_get(rec, "config"))
              : json_object();
    opts = json_is_object(json_object_get(rec, "options"))
               ? json_deep_copy(json_object_get(rec, "options"))
               : json_object();
    if (cfg == NULL || opts == NULL) {
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    if (fn(cfg, opts, &description, arg) != 0) {
        rc = -2; /* refused: fn said why */
        goto out;
    }
    json_object_set(rec, "config", cfg);
    json_object_set(rec, "options", opts);
    if (description != NULL) {
        json_object_set_new(rec, "description", json_string(description));
    }
    if (put_json(txn, KMS_DB_MOUNTS, key, rec) != 0 || kms_storage_txn_commit(&txn) != 0) {
        kms_err_set(err, 500, "cannot store the mount");
        goto out;
    }
    if (description != NULL) {
        snprintf(api->mounts[idx].description, sizeof(api->mounts[idx].description), "%s",
                 description);
    }
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    json_decref(rec);
    json_decref(cfg);
    json_decref(opts);
    pthread_rwlock_unlock(&api->lock);
    return rc;
}

int kms_registry_mount_move(struct kms_api *api, const char *ns_id, const char *from,
                            const char *to, struct kms_err *err)
{
    struct kms_txn *txn = NULL;
    json_t *rec = NULL;
    char okey[KMS_PATH_MAX + KMS_NS_ID_LEN + 2];
    char nkey[KMS_PATH_MAX + KMS_NS_ID_LEN + 2];
    int rc = -1;

    if (strlen(to) >= sizeof(api->mounts[0].path)) {
        return kms_err_set(err, 400, "invalid destination mount path \"%s\"", to);
    }
    if (strlen(to) > KMS_MOUNT_PATH_MAX) {
        return kms_err_set(err, 400, "path too long (at most %d bytes)", KMS_MOUNT_PATH_MAX);
    }
    snprintf(okey, sizeof(okey), "%s/%s", ns_id, from);
    snprintf(nkey, sizeof(nkey), "%s/%s", ns_id, to);
    pthread_rwlock_wrlock(&api->lock);
    size_t idx = mount_index(api, ns_id, from);
    if (idx == SIZE_MAX) {
        rc = KMS_STORAGE_NOTFOUND;
        goto out;
    }
    /* the same overlap rule as mount_add, the moving mount included (as OpenBao checks the
     * destination while the source is still mounted: "src" cannot move to "src/sub") */
    for (size_t i = 0; i < api->nmounts; i++) {
        const struct kms_mount *o = &api->mounts[i];
        if (strcmp(o->ns_id, ns_id) == 0 && paths_overlap(o->path, to)) {
            kms_err_set(err, 400, "path already in use at \"%s\"", o->path);
            goto out;
        }
    }
    if (kms_storage_txn_begin(api->st, true, &txn) != 0 || mount_record_get(txn, okey, &rec) != 0) {
        kms_err_set(err, 500, "cannot read the mount");
        goto out;
    }
    json_object_set_new(rec, "path", json_string(to));
    if (kms_storage_del(txn, KMS_DB_MOUNTS, okey, strlen(okey)) < 0 ||
        put_json(txn, KMS_DB_MOUNTS, nkey, rec) != 0 || kms_storage_txn_commit(&txn) != 0) {
        kms_err_set(err, 500, "cannot move the mount");
        goto out;
    }
    snprintf(api->mounts[idx].path, sizeof(api->mounts[idx].path), "%s", to);
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    json_decref(rec);
    pthread_rwlock_unlock(&api->lock);
    return rc;
}
