/*
 * sys.c - the system backend: health, seal status, init, mounts, namespaces and metrics.
 */
#include "engine/sys/sys_int.h"

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
    c->raw = json_pack("{s:b, s:b, s:b, s:s, s:s, s:s, s:s}", "initialized", init, "sealed", !init,
                       "standby", false, "replication_performance_mode", "disabled",
                       "replication_dr_mode", "disabled", "server_time_utc", now, "version",
                       kms_api_version(c->api));
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
                       "migration", false, "recovery_seal", false, "storage_type", "lmdb");
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

static json_t *mount_json(const struct kms_mount *m)
{
    return json_pack("{s:s, s:{s:i, s:b, s:i}, s:s, s:b, s:b, s:n, s:s, s:s, s:b, s:s, s:s}",
                     "accessor", m->accessor, "config", "default_lease_ttl", 0, "force_no_cache",
                     false, "max_lease_ttl", 0, "description", m->description,
                     "external_entropy_access", false, "local", false, "options", "plugin_version",
                     "", "running_plugin_version", "", "seal_wrap", false, "type", m->type, "uuid",
                     m->uuid);
}

static int list_mount_cb(const struct kms_mount *m, void *arg)
{
    if (strncmp(m->path, "auth/", 5) != 0) {
        json_object_set_new(arg, m->path, mount_json(m));
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
    json_object_set_new(c->data, "sys/", mount_json(&sys));
    if (kms_registry_mount_list(c->api, c->ns.id, list_mount_cb, c->data) != 0) {
        return KMS_FAILW(c, 500, "internal error");
    }
    return 0;
}

/* Normalise a mount path from the URL: no leading '/', one trailing '/'. */
static int mount_path(struct kms_ctx *c, char *out, size_t n)
{
    const char *p = kms_cap(c, "path");
    while (p != NULL && *p == '/') {
        p++;
    }
    size_t len = p ? strlen(p) : 0;
    while (len > 0 && p[len - 1] == '/') {
        len--;
    }
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

/*
 * The mount a sys/mounts/<path>[/tune] request names, into path. *tune tells whether the
 * request is for the tune endpoint; then *m is the mount (400 when there is none).
 */
static int mount_target(struct kms_ctx *c, char *path, size_t n, bool *tune, struct kms_mount *m)
{
    if (mount_path(c, path, n) != 0) {
        return -1;
    }
    size_t pl = strlen(path);
    *tune = pl > 5 && strcmp(path + pl - 5, "tune/") == 0 && (pl == 5 || path[pl - 6] == '/');
    if (*tune) {
        path[pl - 5] = '\0';
        if (kms_registry_mount_get(c->api, c->ns.id, path, m) != 0) {
            return KMS_FAIL(c, 400, "cannot fetch mount configuration: no mount at %s", path);
        }
    }
    return 0;
}

/* sys/mounts/<path>: the mount; sys/mounts/<path>/tune: the lease settings Transit ignores,
 * read back as Vault shows them. */
static int mount_read(struct kms_ctx *c)
{
    char path[KMS_PATH_MAX];
    struct kms_mount m;
    bool tune;
    if (mount_target(c, path, sizeof(path), &tune, &m) != 0) {
        return -1;
    }
    if (tune) {
        c->data =
            json_pack("{s:i, s:i, s:b, s:s, s:n}", "default_lease_ttl", 2764800, "max_lease_ttl",
                      2764800, "force_no_cache", false, "description", m.description, "options");
        return 0;
    }
    if (kms_registry_mount_get(c->api, c->ns.id, path, &m) != 0) {
        return KMS_FAIL(c, 400, "No secret engine mount at %s", path);
    }
    c->data = mount_json(&m);
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
    int rc = kms_registry_mount_remove(c->api, c->ns.id, path, &c->err);
    /* Like Vault, removing a mount that does not exist succeeds silently. */
    return rc == KMS_STORAGE_NOTFOUND ? 0 : rc;
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
        return 0; /* accepted; kmsd has no leases to tune */
    }
    const char *type = NULL;
    const char *desc = "";
    if (!kms_param_str(c, "type", &type) || type[0] == '\0') {
        return KMS_FAIL(c, 400, "backend type must be specified as a string");
    }
    (void)kms_param_str(c, "description", &desc);
    static const char *const reserved[] = {"sys/", "auth/", "cubbyhole/", "identity/"};
    for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++) {
        if (strncmp(path, reserved[i], strlen(reserved[i])) == 0) {
            return KMS_FAIL(c, 400, "cannot mount under reserved path \"%s\"", reserved[i]);
        }
    }
    if (strcmp(type, "transit") != 0) {
        return KMS_FAIL(c, 400, "plugin not found in the catalog: %s", type);
    }
    return kms_registry_mount_add(c->api, c->ns.id, path, type, desc, &m, &c->err);
}

/* ---- namespaces -------------------------------------------------------------------------- */

static json_t *ns_json(const struct kms_ns *ns)
{
    return json_pack("{s:{}, s:s, s:s}", "custom_metadata", "id", ns->id, "path", ns->path);
}

struct ns_list {
    json_t *keys;
    json_t *info;
    size_t parent_len;
};

static int list_ns_cb(const struct kms_ns *ns, void *arg)
{
    struct ns_list *l = arg;
    const char *rel = ns->path + l->parent_len;
    json_array_append_new(l->keys, json_string(rel));
    json_object_set_new(l->info, rel, ns_json(ns));
    return 0;
}

static int ns_list(struct kms_ctx *c)
{
    struct ns_list l = {json_array(), json_object(), strlen(c->ns.path)};
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
    while (name != NULL && *name == '/') {
        name++;
    }
    size_t len = name ? strlen(name) : 0;
    while (len > 0 && name[len - 1] == '/') {
        len--;
    }
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
    c->data = ns_json(&ns);
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

static int ns_write(struct kms_ctx *c)
{
    char path[KMS_PATH_MAX];
    struct kms_ns ns;
    if (ns_target(c, path, sizeof(path)) != 0) {
        return -1;
    }
    int rc = kms_registry_ns_create(c->api, path, &ns, &c->err);
    if (rc < 0) {
        return -1;
    }
    c->data = ns_json(&ns);
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
    {.tmpl = "namespaces/*path",
     .fields = ns_fields,
     .resource = "Namespace",
     .on = {[KMS_OP_READ] = {ns_read, NULL, 0},
            [KMS_OP_LIST] = {ns_list, NULL, 0},
            [KMS_OP_UPDATE] = {ns_write, NULL, 0},
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
