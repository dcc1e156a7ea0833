/*
 * sys.c - the system backend: health, seal status, init, mounts, namespaces and metrics.
 */
#include "engine/sys/sys_int.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static int health(struct kms_ctx *c)
{
    bool init = kms_api_initialized(c->api);
    int64_t code = init ? 200 : 501;
    int64_t v;
    char now[40];
    int64_t sec;
    int32_t nsec;

    /* every code the caller may choose goes on the status line: only real statuses */
    static const char *const codes[] = {"activecode", "standbycode",     "sealedcode",
                                        "uninitcode", "drsecondarycode", "performancestandbycode",
                                        "removedcode"};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        if (kms_param_int(c, codes[i], &v) && (v < 200 || v > 599)) {
            return KMS_FAIL(c, 400, "invalid %s %lld: must be an HTTP status from 200 to 599",
                            codes[i], (long long)v);
        }
    }
    if (init && kms_param_int(c, "activecode", &v)) {
        code = v;
    }
    if (!init && kms_param_int(c, "uninitcode", &v)) {
        code = v;
    }
    kms_now(&sec, &nsec);
    kms_time_rfc3339(sec, 0, now);
    /* every field of Vault's answer, as an HA standby's (server/ha.c) has them too */
    c->raw = json_pack("{s:b, s:b, s:b, s:b, s:s, s:s, s:s, s:s}", "initialized", init, "sealed",
                       !init, "standby", false, "performance_standby", false,
                       "replication_performance_mode", "disabled", "replication_dr_mode",
                       "disabled", "server_time_utc", now, "version", kms_api_version(c->api));
    if (init) {
        json_object_set_new(c->raw, "cluster_name", json_string("kmsd"));
        json_object_set_new(c->raw, "cluster_id", json_string(kms_api_cluster_id(c->api)));
    }
    /* server_time_utc is a unix timestamp in Vault's body */
    json_object_set_new(c->raw, "server_time_utc", json_integer(sec));
    c->status = (int)code;
    return 0;
}

static int seal_status(struct kms_ctx *c)
{
    bool init = kms_api_initialized(c->api);
    c->raw = json_pack("{s:s, s:b, s:b, s:i, s:i, s:i, s:s, s:s, s:s, s:b, s:b, s:s}", "type",
                       "static", "initialized", init, "sealed", !init, "t", 1, "n", 1, "progress",
                       0, "nonce", "", "version", kms_api_version(c->api), "build_date", "",
                       "migration", false, "recovery_seal", false, "storage_type",
                       kms_storage_backend_name(kms_api_storage(c->api)));
    if (init) {
        json_object_set_new(c->raw, "cluster_name", json_string("kmsd"));
        json_object_set_new(c->raw, "cluster_id", json_string(kms_api_cluster_id(c->api)));
    }
    return 0;
}

static int init_read(struct kms_ctx *c)
{
    c->raw = json_pack("{s:b}", "initialized", kms_api_initialized(c->api));
    return 0;
}

static int init_write(struct kms_ctx *c)
{
    char tok[KMS_TOKEN_MAX_LEN];
    if (kms_api_init_store(c->api, NULL, tok, &c->err) != 0) {
        return -1;
    }
    c->raw = json_pack("{s:[], s:[], s:s}", "keys", "keys_base64", "root_token", tok);
    kms_memzero(tok, sizeof(tok));
    return 0;
}

static int metrics(struct kms_ctx *c)
{
    const char *format = "";
    (void)kms_param_str(c, "format", &format);
    size_t len = 0;
    char *text = kms_metrics_prometheus(c->api, &len);
    if (text == NULL) {
        return KMS_FAILW(c, 500, "internal error");
    }
    if (strcmp(format, "prometheus") == 0) {
        c->text = text;
        c->text_len = len;
        c->content_type = "text/plain; version=0.0.4; charset=utf-8";
        return 0;
    }
    if (format[0] != '\0') {
        free(text);
        return KMS_FAIL(c, 400, "unsupported metrics format \"%s\": use \"prometheus\"", format);
    }
    /* JSON: the same samples, one string per line */
    json_t *lines = json_array();
    char *save = text;
    for (char *line = text; line != NULL && *line != '\0';) {
        char *nl = strchr(line, '\n');
        if (nl != NULL) {
            *nl = '\0';
        }
        if (line[0] != '#' && line[0] != '\0') {
            json_array_append_new(lines, json_string(line));
        }
        line = nl ? nl + 1 : NULL;
    }
    free(save);
    c->data = json_pack("{s:o}", "samples", lines);
    return 0;
}

/* ---- mounts ------------------------------------------------------------------------------ */

struct list_mounts {
    struct kms_ctx *c;
    json_t *out;
};

static int list_mount_cb(const struct kms_mount *m, void *arg)
{
    struct list_mounts *l = arg;
    if (strncmp(m->path, "auth/", 5) != 0) {
        json_t *t = kms_mount_tuning_get(l->c->api, m);
        json_object_set_new(l->out, m->path, kms_mount_info(m, t));
        json_decref(t);
    }
    return 0;
}

static int mounts_list(struct kms_ctx *c)
{
    struct kms_mount sys;
    memset(&sys, 0, sizeof(sys));
    snprintf(sys.path, sizeof(sys.path), "sys/");
    snprintf(sys.type, sizeof(sys.type), "system");
    snprintf(sys.accessor, sizeof(sys.accessor), "system_00000000");
    snprintf(sys.description, sizeof(sys.description),
             "system endpoints used for control, policy and debugging");
    c->data = json_object();
    json_object_set_new(c->data, "sys/", kms_mount_info(&sys, NULL));
    struct list_mounts l = {c, c->data};
    if (kms_registry_mount_list(c->api, c->ns.id, list_mount_cb, &l) != 0) {
        return KMS_FAILW(c, 500, "internal error");
    }
    return 0;
}

/* Normalise a mount path: no leading '/', one trailing '/'. `what` names it in errors. */
static int norm_mount_path(struct kms_ctx *c, const char *p, char *out, size_t n)
{
    size_t len = kms_trim_slashes(p, &p);
    if (len == 0 || len + 2 > n) {
        return KMS_FAIL(c, 400, "path cannot be empty");
    }
    if (strstr(p, "..") != NULL) {
        return KMS_FAIL(c, 400, "path cannot contain '..'");
    }
    memcpy(out, p, len);
    out[len] = '/';
    out[len + 1] = '\0';
    return 0;
}

/* The mount a tune request names (400 when there is none); auth/token/ is the built-in token
 * store, whose settings are read as the system's and cannot be changed. */
static int tune_mount(struct kms_ctx *c, const char *path, struct kms_mount *m)
{
    if (strcmp(path, "auth/token/") == 0) {
        kms_mount_token_store(c->ns.id, m);
        return 0;
    }
    if (kms_registry_mount_get(c->api, c->ns.id, path, m) != 0) {
        return c->op == KMS_OP_READ
                   ? KMS_FAIL(c, 400, "cannot fetch mount configuration: no mount at %s", path)
                   : KMS_FAIL(c, 400, "tune of path \"%s\" failed: no mount entry found", path);
    }
    return 0;
}

/*
 * The mount a sys/mounts/<path>[/tune] request names, into path. *tune tells whether the
 * request is for the tune endpoint; then *m is the mount (400 when there is none).
 */
static int mount_target(struct kms_ctx *c, char *path, size_t n, bool *tune, struct kms_mount *m)
{
    if (norm_mount_path(c, kms_cap(c, "path"), path, n) != 0) {
        return -1;
    }
    size_t pl = strlen(path);
    *tune = pl > 5 && strcmp(path + pl - 5, "tune/") == 0 && (pl == 5 || path[pl - 6] == '/');
    if (*tune) {
        path[pl - 5] = '\0';
        return tune_mount(c, path, m);
    }
    return 0;
}

/* sys/mounts/<path>/tune (read): the stored settings; unset lease TTLs show the system's. */
static int tune_read(struct kms_ctx *c, const struct kms_mount *m)
{
    json_t *t = kms_mount_tuning_get(c->api, m);
    const json_t *cfg = json_object_get(t, "config");
    int64_t def = json_integer_value(json_object_get(cfg, "default_lease_ttl"));
    int64_t max = json_integer_value(json_object_get(cfg, "max_lease_ttl"));
    c->data = json_pack("{s:I, s:I, s:b, s:s}", "default_lease_ttl",
                        (json_int_t)(def > 0 ? def : KMS_AUTH_SYSTEM_MAX_TTL), "max_lease_ttl",
                        (json_int_t)(max > 0 ? max : KMS_AUTH_SYSTEM_MAX_TTL), "force_no_cache",
                        false, "description", m->description);
    static const char *const extra[] = {"audit_non_hmac_request_keys",
                                        "audit_non_hmac_response_keys", "listing_visibility",
                                        "passthrough_request_headers", "allowed_response_headers"};
    for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++) {
        json_t *v = json_object_get(cfg, extra[i]);
        if (v != NULL && !(json_is_string(v) && json_string_length(v) == 0)) {
            json_object_set(c->data, extra[i], v);
        }
    }
    if (strncmp(m->path, "auth/", 5) == 0) {
        json_t *tt = json_object_get(cfg, "token_type");
        json_object_set_new(c->data, "token_type",
                            tt ? json_incref(tt) : json_string("default-service"));
    }
    if (json_object_size(json_object_get(t, "options")) > 0) {
        json_object_set(c->data, "options", json_object_get(t, "options"));
    }
    json_decref(t);
    return 0;
}

/* sys/mounts/<path>: the mount; sys/mounts/<path>/tune: its tunable settings. */
static int mount_read(struct kms_ctx *c)
{
    char path[KMS_PATH_MAX];
    struct kms_mount m;
    bool tune;
    if (mount_target(c, path, sizeof(path), &tune, &m) != 0) {
        return -1;
    }
    if (tune) {
        return tune_read(c, &m);
    }
    if (kms_registry_mount_get(c->api, c->ns.id, path, &m) != 0) {
        return KMS_FAIL(c, 400, "No secret engine mount at %s", path);
    }
    json_t *t = kms_mount_tuning_get(c->api, &m);
    c->data = kms_mount_info(&m, t);
    json_decref(t);
    return 0;
}

static int mount_delete(struct kms_ctx *c)
{
    char path[KMS_PATH_MAX];
    struct kms_mount m;
    bool tune;
    if (mount_target(c, path, sizeof(path), &tune, &m) != 0) {
        return -1;
    }
    if (tune) {
        return 0; /* accepted; kmsd has no leases to tune */
    }
    /* OpenBao's protected mounts: a 204 that does nothing would tell automation it worked */
    if (strcmp(path, "auth/token/") == 0) {
        return KMS_FAIL(c, 400, "token credential backend cannot be disabled");
    }
    static const char *const kept[] = {"sys/", "audit/", "cubbyhole/", "identity/"};
    for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++) {
        if (strncmp(path, kept[i], strlen(kept[i])) == 0) {
            return KMS_FAIL(c, 400, "cannot unmount \"%s\"", path);
        }
    }
    int rc = kms_registry_mount_remove(c->api, c->ns.id, path, &c->err);
    /* Like Vault, removing a mount that does not exist succeeds silently. */
    return rc == KMS_STORAGE_NOTFOUND ? 0 : rc;
}

/* sys/mounts/<path>/tune (write): the settings a tune gives, in one write transaction. */
static int tune_write(struct kms_ctx *c, const struct kms_mount *m)
{
    if (strcmp(m->type, "token") == 0) {
        return KMS_FAIL(c, 400,
                        "tune of path \"auth/token/\" is not supported by kmsd: the token "
                        "store's settings are built in (token TTLs come from roles and "
                        "policies)");
    }
    return kms_mount_tune(c, m) != 0 ? -1 : kms_reply_warnings(c);
}

/* The auth method a sys/auth/<path>/tune request names (400 when there is none). */
static int auth_tune_target(struct kms_ctx *c, struct kms_mount *m)
{
    char rel[KMS_PATH_MAX - 5];
    char path[KMS_PATH_MAX];
    if (norm_mount_path(c, kms_cap(c, "path"), rel, sizeof(rel)) != 0) {
        return -1;
    }
    snprintf(path, sizeof(path), "auth/%s", rel);
    return tune_mount(c, path, m);
}

/* sys/auth/<path>/tune, the same endpoint as sys/mounts/auth/<path>/tune. */
static int auth_tune_read(struct kms_ctx *c)
{
    struct kms_mount m;
    return auth_tune_target(c, &m) != 0 ? -1 : tune_read(c, &m);
}

static int auth_tune_write(struct kms_ctx *c)
{
    struct kms_mount m;
    if (auth_tune_target(c, &m) != 0) {
        const char *type = NULL;
        if (c->err.status == 400 && kms_param_str(c, "type", &type)) {
            /* an enable meant at ".../tune": say why it is a tune instead */
            char why[sizeof(c->err.msg)];
            snprintf(why, sizeof(why), "%s", c->err.msg);
            KMS_FAIL(c, 400,
                     "%.300s (sys/auth/<path>/tune is the tune endpoint of the method at <path>: "
                     "an auth method cannot be enabled at a path ending in /tune)",
                     why);
        }
        return -1;
    }
    return tune_write(c, &m);
}

static int mount_write(struct kms_ctx *c)
{
    char path[KMS_PATH_MAX];
    struct kms_mount m;
    bool tune;
    if (mount_target(c, path, sizeof(path), &tune, &m) != 0) {
        return -1;
    }
    if (tune) {
        return tune_write(c, &m);
    }
    const char *type = NULL;
    const char *desc = "";
    if (!kms_param_str(c, "type", &type) || type[0] == '\0') {
        return KMS_FAIL(c, 400, "backend type must be specified as a string");
    }
    (void)kms_param_str(c, "description", &desc);
    static const char *const reserved[] = {"sys/", "auth/", "cubbyhole/", "identity/", "audit/"};
    for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++) {
        if (strncmp(path, reserved[i], strlen(reserved[i])) == 0) {
            return KMS_FAIL(c, 400, "cannot mount under reserved path \"%s\"", reserved[i]);
        }
    }
    if (strncmp(path, "kms/", 4) == 0) {
        /* the built-in KMSKey API answers there: a mount below it could never be reached */
        return KMS_FAIL(c, 400, "path is already in use at kms/");
    }
    if (strcmp(type, "transit") != 0) {
        return KMS_FAIL(c, 400, "plugin not found in the catalog: %s", type);
    }
    /* OpenBao's mount takes the tune settings too, nested in "config" (and "options"): they
     * were dropped (Terraform's vault_mount saw drift for ever) */
    return kms_mount_enable(c, path, type, desc, &m);
}

/* ---- remount ----------------------------------------------------------------------------- */

/*
 * sys/remount answers as OpenBao's asynchronous form ({migration_id} and a warning) but moves
 * the mount before answering, so sys/remount/status/<id> always reports the final status.
 * The last REMOUNT_KEEP moves are remembered (in memory, like OpenBao's tracker).
 */
#define REMOUNT_KEEP 64

struct remount_rec {
    char id[37];
    char source[2 * KMS_PATH_MAX];
    char target[2 * KMS_PATH_MAX];
    const char *status;
};

static struct {
    pthread_mutex_t lock;
    struct remount_rec recs[REMOUNT_KEEP];
    size_t next;
} remounts = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void remount_note(const char *id, const char *ns, const char *from, const char *to,
                         const char *status)
{
    pthread_mutex_lock(&remounts.lock);
    struct remount_rec *r = &remounts.recs[remounts.next];
    remounts.next = (remounts.next + 1) % REMOUNT_KEEP;
    snprintf(r->id, sizeof(r->id), "%s", id);
    snprintf(r->source, sizeof(r->source), "%s%s", ns, from);
    snprintf(r->target, sizeof(r->target), "%s%s", ns, to);
    r->status = status;
    pthread_mutex_unlock(&remounts.lock);
}

/* A path naming a child namespace of the request's ("org1/transit"): kmsd keeps mounts in
 * their namespace, so such a move is refused rather than half done. */
static bool names_child_ns(struct kms_ctx *c, const char *path)
{
    char full[2 * KMS_PATH_MAX];
    struct kms_ns ns;
    size_t used = 0;
    snprintf(full, sizeof(full), "%s%s", c->ns.path, path);
    return kms_registry_ns_resolve(c->api, full, &ns, &used) == 0 && strcmp(ns.id, c->ns.id) != 0;
}

/* OpenBao's checks on a remount's source and destination (400 with its messages). */
static int remount_check(struct kms_ctx *c, const char *from_raw, const char *to_raw, char *from,
                         char *to, size_t n)
{
    if (from_raw[0] == ' ' || (from_raw[0] && from_raw[strlen(from_raw) - 1] == ' ')) {
        return KMS_FAIL(c, 400, "'from' path cannot contain trailing whitespace");
    }
    if (to_raw[0] == ' ' || (to_raw[0] && to_raw[strlen(to_raw) - 1] == ' ')) {
        return KMS_FAIL(c, 400, "'to' path cannot contain trailing whitespace");
    }
    if (norm_mount_path(c, from_raw, from, n) != 0 || norm_mount_path(c, to_raw, to, n) != 0) {
        return -1;
    }
    if (names_child_ns(c, from) || names_child_ns(c, to)) {
        return KMS_FAIL(c, 400,
                        "kmsd cannot move a mount between namespaces (%s to %s): remount "
                        "within one namespace",
                        from, to);
    }
    bool auth = strncmp(from, "auth/", 5) == 0;
    if (auth && strncmp(to, "auth/", 5) != 0) {
        return KMS_FAIL(c, 400, "cannot remount auth mount to non-auth mount \"%s\"", to);
    }
    if (auth && strncmp(from, "auth/token/", 11) == 0) {
        return KMS_FAIL(c, 400, "cannot remount \"%s\"", from);
    }
    if (auth && (strncmp(to, "auth/token/", 11) == 0 || strcmp(to, "auth/") == 0)) {
        return KMS_FAIL(c, 400, "cannot remount to destination \"%s\"", to);
    }
    size_t tl = strlen(to);
    if (auth && tl > 11 && strcmp(to + tl - 6, "/tune/") == 0) {
        /* sys/auth/<p>/tune is the tune endpoint of auth/<p>/: a method there could never
         * be read or disabled */
        return KMS_FAIL(c, 400,
                        "cannot remount to destination \"%s\": sys/auth/<path>/tune is the tune "
                        "endpoint of the method at <path>",
                        to);
    }
    static const char *const protected_paths[] = {"audit/", "auth/", "sys/", "cubbyhole/",
                                                  "identity/"};
    for (size_t i = 0; !auth && i < sizeof(protected_paths) / sizeof(protected_paths[0]); i++) {
        size_t pl = strlen(protected_paths[i]);
        if (strncmp(from, protected_paths[i], pl) == 0) {
            return KMS_FAIL(c, 400, "cannot remount \"%s\"", from);
        }
        if (strncmp(to, protected_paths[i], pl) == 0) {
            return KMS_FAIL(c, 400, "cannot remount to destination %s", to);
        }
    }
    if (strncmp(to, "kms/", 4) == 0) {
        /* the built-in KMSKey API answers there (as for sys/mounts) */
        return KMS_FAIL(c, 400, "cannot remount to destination %s", to);
    }
    return 0;
}

static int remount(struct kms_ctx *c)
{
    const char *from_raw = "";
    const char *to_raw = "";
    char from[KMS_PATH_MAX];
    char to[KMS_PATH_MAX];
    char id[37];

    (void)kms_param_str(c, "from", &from_raw);
    (void)kms_param_str(c, "to", &to_raw);
    if (from_raw[0] == '\0' || to_raw[0] == '\0') {
        return KMS_FAIL(c, 400, "both 'from' and 'to' path must be specified as a string");
    }
    if (remount_check(c, from_raw, to_raw, from, to, sizeof(from)) != 0) {
        return -1;
    }
    if (kms_uuid4(id) != 0) {
        return KMS_FAILW(c, 500, "internal error");
    }
    /* moving a login method revokes what it issued, as OpenBao revokes the source's leases */
    if (strncmp(from, "auth/", 5) == 0 &&
        kms_auth_token_revoke_prefix(kms_api_auth(c->api), c->ns.id, from) != 0) {
        return KMS_FAILW(c, 500, "internal error");
    }
    int r = kms_registry_mount_move(c->api, c->ns.id, from, to, &c->err);
    if (r == KMS_STORAGE_NOTFOUND) {
        return KMS_FAIL(c, 400, "no matching mount at \"%s\"", from);
    }
    remount_note(id, c->ns.path, from, to, r == 0 ? "success" : "failure");
    if (r != 0) {
        return -1;
    }
    c->data = json_pack("{s:s}", "migration_id", id);
    kms_warn(c, "Mount move has been queued. Progress will be reported in OpenBao's server log, "
                "tagged with the returned migration_id");
    return 0;
}

static int remount_status(struct kms_ctx *c)
{
    const char *id = kms_cap(c, "migration_id");
    struct remount_rec found;
    bool hit = false;
    pthread_mutex_lock(&remounts.lock);
    for (size_t i = 0; i < REMOUNT_KEEP && id != NULL; i++) {
        if (remounts.recs[i].id[0] != '\0' && strcmp(remounts.recs[i].id, id) == 0) {
            found = remounts.recs[i];
            hit = true;
        }
    }
    pthread_mutex_unlock(&remounts.lock);
    if (!hit) {
        return kms_fail_notfound(c);
    }
    c->data = json_pack("{s:s, s:{s:s, s:s, s:s}}", "migration_id", found.id, "migration_info",
                        "source_mount", found.source, "target_mount", found.target, "status",
                        found.status);
    return 0;
}

/* ---- namespaces -------------------------------------------------------------------------- */

/* A namespace as sys/namespaces shows it, with its stored custom_metadata. */
static json_t *ns_json(struct kms_api *api, const struct kms_ns *ns)
{
    json_t *md = NULL;
    if (kms_registry_ns_metadata(api, ns->path, &md) != 0) {
        md = json_object();
    }
    return json_pack("{s:o, s:s, s:s}", "custom_metadata", md, "id", ns->id, "path", ns->path);
}

struct ns_list {
    struct kms_api *api;
    json_t *keys;
    json_t *info;
    size_t parent_len;
};

static int list_ns_cb(const struct kms_ns *ns, void *arg)
{
    struct ns_list *l = arg;
    const char *rel = ns->path + l->parent_len;
    json_array_append_new(l->keys, json_string(rel));
    json_object_set_new(l->info, rel, ns_json(l->api, ns));
    return 0;
}

static int ns_list(struct kms_ctx *c)
{
    struct ns_list l = {c->api, json_array(), json_object(), strlen(c->ns.path)};
    if (kms_registry_ns_list(c->api, c->ns.path, list_ns_cb, &l) != 0) {
        json_decref(l.keys);
        json_decref(l.info);
        return KMS_FAILW(c, 500, "internal error");
    }
    if (json_array_size(l.keys) == 0) {
        json_decref(l.keys);
        json_decref(l.info);
        return kms_fail_notfound(c);
    }
    c->data = json_pack("{s:o, s:o}", "keys", l.keys, "key_info", l.info);
    return 0;
}

/* The child namespace path a sys/namespaces/<name> request names, into path. */
static int ns_target(struct kms_ctx *c, char *path, size_t n)
{
    const char *name = kms_cap(c, "path");
    size_t len = kms_trim_slashes(name, &name);
    if (len == 0) {
        return KMS_FAIL(c, 400, "namespace path cannot be empty");
    }
    if (memchr(name, '/', len) != NULL) {
        return KMS_FAIL(c, 400, "namespace name cannot contain '/'");
    }
    if ((size_t)snprintf(path, n, "%s%.*s/", c->ns.path, (int)len, name) >= n) {
        return KMS_FAIL(c, 400, "namespace path too long");
    }
    return 0;
}

static int ns_read(struct kms_ctx *c)
{
    char path[KMS_PATH_MAX];
    struct kms_ns ns;
    if (ns_target(c, path, sizeof(path)) != 0) {
        return -1;
    }
    if (kms_registry_ns_get(c->api, path, &ns) != 0) {
        return kms_fail_notfound(c);
    }
    c->data = ns_json(c->api, &ns);
    return 0;
}

static int ns_delete(struct kms_ctx *c)
{
    char path[KMS_PATH_MAX];
    if (ns_target(c, path, sizeof(path)) != 0) {
        return -1;
    }
    int rc = kms_registry_ns_delete(c->api, path, &c->err);
    return rc == KMS_STORAGE_NOTFOUND ? 0 : rc;
}

/*
 * custom_metadata of a namespace write: a map of strings (and, in a PATCH, nulls that remove a
 * key), into *md (borrowed; NULL when not given).
 */
static int ns_metadata_param(struct kms_ctx *c, bool patch, json_t **md)
{
    const char *k;
    json_t *v;
    *md = kms_param(c, "custom_metadata");
    json_object_foreach(*md, k, v)
    {
        if (!json_is_string(v) && !(patch && json_is_null(v))) {
            return KMS_FAIL(c, 400,
                            patch ? "metadata patch can only have string or null values"
                                  : "custom_metadata values must be strings");
        }
    }
    return 0;
}

/* POST creates the namespace, or replaces the custom_metadata of the one there (OpenBao's
 * ModifyNamespaceByPath); PATCH merges into it (RFC 7396). */
static int ns_write(struct kms_ctx *c)
{
    char path[KMS_PATH_MAX];
    struct kms_ns ns;
    json_t *md = NULL;
    bool patch = c->op == KMS_OP_PATCH;
    if (ns_target(c, path, sizeof(path)) != 0 || ns_metadata_param(c, patch, &md) != 0) {
        return -1;
    }
    if (patch && md == NULL && !json_is_null(json_object_get(c->params, "custom_metadata"))) {
        return KMS_FAIL(c, 400, "missing required field \"custom_metadata\"");
    }
    int rc =
        kms_registry_ns_put(c->api, path, md, patch ? KMS_NS_MERGE : KMS_NS_REPLACE, &ns, &c->err);
    if (rc < 0) {
        return -1;
    }
    c->data = ns_json(c->api, &ns);
    return 0;
}

static const struct kms_field health_fields[] = {
    {"standbyok", KMS_F_BOOL},      {"perfstandbyok", KMS_F_BOOL},
    {"activecode", KMS_F_INT},      {"standbycode", KMS_F_INT},
    {"sealedcode", KMS_F_INT},      {"uninitcode", KMS_F_INT},
    {"drsecondarycode", KMS_F_INT}, {"performancestandbycode", KMS_F_INT},
    {"removedcode", KMS_F_INT},     {NULL, 0},
};

static const struct kms_field metrics_fields[] = {
    {"format", KMS_F_STRING},
    {NULL, 0},
};

static const struct kms_field init_fields[] = {
    {"secret_shares", KMS_F_INT},
    {"secret_threshold", KMS_F_INT},
    {"pgp_keys", KMS_F_ARRAY},
    {"root_token_pgp_key", KMS_F_STRING},
    {"recovery_shares", KMS_F_INT},
    {"recovery_threshold", KMS_F_INT},
    {"recovery_pgp_keys", KMS_F_ARRAY},
    {"stored_shares", KMS_F_INT},
    {NULL, 0},
};

static const struct kms_field mount_fields[] = {
    {"type", KMS_F_STRING},
    {"description", KMS_F_STRING},
    {"config", KMS_F_MAP},
    {"options", KMS_F_MAP},
    {"local", KMS_F_BOOL},
    {"seal_wrap", KMS_F_BOOL},
    {"plugin_name", KMS_F_STRING},
    {"plugin_version", KMS_F_STRING},
    {"external_entropy_access", KMS_F_BOOL},
    {"default_lease_ttl", KMS_F_RAW},
    {"max_lease_ttl", KMS_F_RAW},
    {"force_no_cache", KMS_F_BOOL},
    {"audit_non_hmac_request_keys", KMS_F_RAW},
    {"audit_non_hmac_response_keys", KMS_F_RAW},
    {"listing_visibility", KMS_F_STRING},
    {"passthrough_request_headers", KMS_F_RAW},
    {"allowed_response_headers", KMS_F_RAW},
    {"token_type", KMS_F_STRING},
    {NULL, 0},
};

static const struct kms_field remount_fields[] = {
    {"from", KMS_F_STRING},
    {"to", KMS_F_STRING},
    {NULL, 0},
};

static const struct kms_field ns_fields[] = {
    {"custom_metadata", KMS_F_MAP},
    {NULL, 0},
};

#define PUBLIC_UNAUDITED (KMS_RT_PUBLIC | KMS_RT_NO_AUDIT)

static const struct kms_route sys_routes[] = {
    {.tmpl = "health",
     .flags = PUBLIC_UNAUDITED | KMS_RT_ROOT_NS,
     .fields = health_fields,
     .on = {[KMS_OP_READ] = {health, NULL, 0}}},
    {.tmpl = "seal-status",
     .flags = PUBLIC_UNAUDITED,
     .on = {[KMS_OP_READ] = {seal_status, NULL, 0}}},
    {.tmpl = "init",
     .flags = PUBLIC_UNAUDITED | KMS_RT_ROOT_NS,
     .fields = init_fields,
     .on = {[KMS_OP_READ] = {init_read, NULL, 0}, [KMS_OP_UPDATE] = {init_write, NULL, 0}}},
    {.tmpl = "mounts",
     .flags = KMS_RT_SYS_TOP,
     .resource = "Mount",
     .on = {[KMS_OP_READ] = {mounts_list, NULL, 0}}},
    {.tmpl = "mounts/*path",
     .flags = KMS_RT_SYS_TOP | KMS_RT_SUDO,
     .fields = mount_fields,
     .resource = "Mount",
     .on = {[KMS_OP_READ] = {mount_read, NULL, 0},
            [KMS_OP_UPDATE] = {mount_write, NULL, 0},
            [KMS_OP_DELETE] = {mount_delete, NULL, 0}}},
    /* before the auth engine's sys/auth route (sys/ engines are searched in the order added) */
    {.tmpl = "auth/*path/tune",
     .flags = KMS_RT_SYS_TOP | KMS_RT_SUDO,
     .fields = mount_fields,
     .resource = "AuthMethod",
     .on =
         {[KMS_OP_READ] = {auth_tune_read, NULL, 0}, [KMS_OP_UPDATE] = {auth_tune_write, NULL, 0}}},
    {.tmpl = "remount",
     .flags = KMS_RT_SYS_TOP | KMS_RT_SUDO,
     .fields = remount_fields,
     .resource = "Mount",
     .on = {[KMS_OP_UPDATE] = {remount, NULL, 0}}},
    {.tmpl = "remount/status/:migration_id",
     .flags = KMS_RT_SYS_TOP,
     .resource = "Mount",
     .on = {[KMS_OP_READ] = {remount_status, NULL, 0}}},
    {.tmpl = "namespaces/*path",
     .fields = ns_fields,
     .resource = "Namespace",
     .on = {[KMS_OP_READ] = {ns_read, NULL, 0},
            [KMS_OP_LIST] = {ns_list, NULL, 0},
            [KMS_OP_UPDATE] = {ns_write, NULL, 0},
            [KMS_OP_PATCH] = {ns_write, NULL, 0},
            [KMS_OP_DELETE] = {ns_delete, NULL, 0}}},
    {.tmpl = "audit-hash/*path",
     .flags = KMS_RT_SYS_TOP | KMS_RT_ROOT_NS,
     .fields = kms_sys_audit_hash_fields,
     .resource = "Audit",
     .on = {[KMS_OP_UPDATE] = {kms_sys_audit_hash, "audit-hash", KMS_EFFECT_PURE}}},
    {.tmpl = "audit",
     .flags = KMS_RT_SYS_TOP | KMS_RT_SUDO | KMS_RT_ROOT_NS,
     .resource = "Audit",
     .on = {[KMS_OP_READ] = {kms_sys_audit_list, NULL, 0}}},
    {.tmpl = "audit/events",
     .flags = KMS_RT_SUDO | KMS_RT_ROOT_NS,
     .fields = kms_sys_audit_events_fields,
     .resource = "Audit",
     .on = {[KMS_OP_READ] = {kms_sys_audit_events, NULL, 0}}},
    {.tmpl = "audit/*path",
     .flags = KMS_RT_SUDO | KMS_RT_ROOT_NS,
     .resource = "Audit",
     .on = {[KMS_OP_UPDATE] = {kms_sys_audit_enable, NULL, 0},
            [KMS_OP_DELETE] = {kms_sys_audit_disable, NULL, 0}}},
    KMS_ROUTES_END,
};

void kms_sys_engine(struct kms_engine *out)
{
    memset(out, 0, sizeof(*out));
    out->type = "system";
    out->builtin_path = "sys/";
    out->routes = sys_routes;
}

/*
 * sys/metrics is never audited and answers in the root namespace only; whether it needs a
 * token is configuration (unauthenticated_metrics_access), so its row lives in one of two
 * one-row tables instead of sys_routes.
 */
#define METRICS_ROW(extra)                                                                         \
    {                                                                                              \
        .tmpl = "metrics", .flags = KMS_RT_NO_AUDIT | KMS_RT_ROOT_NS | (extra),                    \
        .fields = metrics_fields, .resource = "Metrics", .on = {                                   \
            [KMS_OP_READ] = {metrics, NULL, 0}                                                     \
        }                                                                                          \
    }

static const struct kms_route metrics_token_routes[] = {METRICS_ROW(0), KMS_ROUTES_END};
static const struct kms_route metrics_public_routes[] = {METRICS_ROW(KMS_RT_PUBLIC),
                                                         KMS_ROUTES_END};

void kms_sys_metrics_engine(struct kms_engine *out, bool unauthenticated)
{
    memset(out, 0, sizeof(*out));
    out->type = "system";
    out->builtin_path = "sys/";
    out->routes = unauthenticated ? metrics_public_routes : metrics_token_routes;
}
