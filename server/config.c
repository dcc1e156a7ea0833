/*
 * config.c - kmsd's configuration as one table: name, type, where it lives, bounds. The JSON
 * file is parsed in one place; an unknown key or a value of the wrong type or out of bounds
 * is an error that names the key, so a misspelt setting never silently does nothing. The same
 * goes for values: a string setting with a fixed set of values ("log_level": "verbose")
 * is refused with the value and the allowed ones named, when the file is read.
 */
#include "server/server.h"

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum ctype { C_STR, C_SIZE, C_SECONDS, C_BOOL, C_MILLIS };

struct centry {
    const char *name;
    enum ctype type;
    size_t offset;
    size_t size; /* for strings: buffer size */
    int64_t min; /* for numbers */
    int64_t max;
    const char *const *values;   /* strings: the allowed values (NULL = any) */
    int (*check)(const char *v); /* strings: 0 when valid (NULL = any) */
    const char *expect;          /* strings with `check`: what a valid value looks like */
};

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const fsync_modes[] = {"always", "batch", "never", NULL};
static const char *const storage_backends[] = {"lmdb", "postgresql", NULL};

static int mode_check(const char *s);

bool kms_config_log_level_valid(const char *s)
{
    for (size_t i = 0; log_levels[i] != NULL; i++) {
        if (strcmp(s, log_levels[i]) == 0) {
            return true;
        }
    }
    return false;
}

#define STR(n, f)                                                                                  \
    {                                                                                              \
        n, C_STR, offsetof(struct kms_config, f), sizeof(((struct kms_config *)0)->f), 0, 0, NULL, \
            NULL, NULL                                                                             \
    }
#define ENUM(n, f, vals)                                                                           \
    {                                                                                              \
        n, C_STR, offsetof(struct kms_config, f), sizeof(((struct kms_config *)0)->f), 0, 0, vals, \
            NULL, NULL                                                                             \
    }
#define CHECKED(n, f, fn, what)                                                                    \
    {                                                                                              \
        n, C_STR, offsetof(struct kms_config, f), sizeof(((struct kms_config *)0)->f), 0, 0, NULL, \
            fn, what                                                                               \
    }
#define SIZE(n, f, lo, hi)                                                                         \
    {                                                                                              \
        n, C_SIZE, offsetof(struct kms_config, f), 0, lo, hi, NULL, NULL, NULL                     \
    }
#define SECS(n, f, lo, hi)                                                                         \
    {                                                                                              \
        n, C_SECONDS, offsetof(struct kms_config, f), 0, lo, hi, NULL, NULL, NULL                  \
    }
#define MILLIS(n, f, lo, hi)                                                                       \
    {                                                                                              \
        n, C_MILLIS, offsetof(struct kms_config, f), 0, lo, hi, NULL, NULL, NULL                   \
    }
#define BOOL(n, f)                                                                                 \
    {                                                                                              \
        n, C_BOOL, offsetof(struct kms_config, f), 0, 0, 1, NULL, NULL, NULL                       \
    }

static const struct centry table[] = {
    STR("listen_address", listen_address),
    ENUM("storage", storage, storage_backends),
    STR("storage_path", storage_path),
    STR("postgresql_url", postgresql_url),
    STR("postgresql_password_file", postgresql_password_file),
    STR("postgresql_password_env", postgresql_password_env),
    STR("seal_key_file", seal_key_file),
    STR("seal_key_env", seal_key_env),
    ENUM("log_level", log_level, log_levels),
    STR("tls_cert_file", tls_cert_file),
    STR("tls_key_file", tls_key_file),
    STR("tls_client_ca_file", tls_client_ca_file),
    BOOL("tls_require_client_cert", tls_require_client_cert),
    SIZE("max_header_size", max_header_size, 1024, 1 << 20),
    SIZE("max_connections", max_connections, 1, 1000000),
    SIZE("max_request_bytes_in_flight", max_request_bytes_in_flight, 0, (int64_t)1 << 40),
    SIZE("workers", workers, 0, 1024),
    SIZE("key_cache_size", key_cache_size, 1, 100000000),
    SIZE("rate_limit", rate_limit, 0, 100000000),
    SIZE("rate_limit_burst", rate_limit_burst, 0, 100000000),
    SIZE("storage_map_size", storage_map_size, (int64_t)1 << 20, (int64_t)1 << 40),
    SECS("read_timeout", read_timeout, 1, 3600),
    SECS("idle_timeout", idle_timeout, 1, 86400),
    SIZE("max_request_size", limits.max_request_size, 1024, (int64_t)1 << 32),
    SIZE("max_plaintext_size", limits.max_plaintext_size, 1, (int64_t)1 << 30),
    SIZE("max_json_strings", limits.max_json_strings, 10, (int64_t)1 << 30),
    SIZE("max_json_depth", limits.max_json_depth, 2, 10000),
    SIZE("max_batch_items", limits.max_batch_items, 1, (int64_t)1 << 30),
    SECS("kms_deletion_delay", kms_deletion_delay, 1, (int64_t)100 * 366 * 86400),
    STR("audit_file", audit_file),
    ENUM("audit_fsync", audit_fsync, fsync_modes),
    CHECKED("audit_mode", audit_mode, mode_check, "an octal file mode such as \"0600\""),
    BOOL("audit_hmac_accessor", audit_hmac_accessor),
    SECS("audit_timeout", audit_timeout, 1, 3600),
    BOOL("unauthenticated_metrics_access", unauthenticated_metrics_access),
    SECS("kms_plugin_status_interval", kms_plugin_status_interval, 1, 3600),
    BOOL("ha_enabled", ha_enabled),
    STR("api_addr", api_addr),
    STR("ha_replica_id", ha_replica_id),
    MILLIS("ha_lease", ha_lease, 100, 3600000),
    MILLIS("ha_heartbeat", ha_heartbeat, 10, 600000),
    MILLIS("ha_forward_timeout", ha_forward_timeout, 100, 3600000),
    MILLIS("ha_forward_long_timeout", ha_forward_long_timeout, 100, 86400000),
    BOOL("ha_redirect", ha_redirect),
    STR("ha_forward_ca_cert", ha_forward_ca_cert),
};

/*
 * A duration in milliseconds: a bare integer is seconds (as every duration setting), a string
 * a decimal number with the unit ms, s or m ("500ms", "1.5s", "2m"). -1 when invalid.
 */
static int millis_parse(const char *s, int64_t *out)
{
    int64_t whole = 0, frac = 0, scale = 1;
    const char *p = s;
    bool digits = false;

    while (*p >= '0' && *p <= '9') {
        if (whole > (int64_t)1 << 40) {
            return -1;
        }
        whole = whole * 10 + (*p++ - '0');
        digits = true;
    }
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9') {
            if (scale < 1000000) {
                frac = frac * 10 + (*p - '0');
                scale *= 10;
            }
            p++;
            digits = true;
        }
    }
    if (!digits) {
        return -1;
    }
    int64_t unit = strcmp(p, "ms") == 0  ? 1
                   : strcmp(p, "s") == 0 ? 1000
                   : strcmp(p, "m") == 0 ? 60000
                                         : 0;
    if (unit == 0) {
        return -1;
    }
    *out = whole * unit + frac * unit / scale;
    return 0;
}

void kms_config_default(struct kms_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->listen_address, sizeof(cfg->listen_address), "127.0.0.1:8200");
    snprintf(cfg->log_level, sizeof(cfg->log_level), "info");
    snprintf(cfg->storage, sizeof(cfg->storage), "lmdb");
    cfg->max_header_size = 64 * 1024;
    cfg->max_connections = 4096;
    cfg->read_timeout = 30;
    cfg->idle_timeout = 120;
    cfg->storage_map_size = (size_t)1 << 30;
    cfg->key_cache_size = 10000;
    cfg->rate_limit = 5000; /* config mode; dev mode turns it off */
    cfg->rate_limit_burst = 0;
    cfg->kms_deletion_delay = 30 * 86400;
    cfg->kms_plugin_status_interval = 10;
    snprintf(cfg->audit_fsync, sizeof(cfg->audit_fsync), "batch");
    snprintf(cfg->audit_mode, sizeof(cfg->audit_mode), "0600");
    cfg->audit_hmac_accessor = true;
    cfg->audit_timeout = 10;
    cfg->ha_lease = 2000;
    cfg->ha_heartbeat = 500;
    cfg->ha_forward_timeout = 10000;
    cfg->ha_forward_long_timeout = 600000;
    kms_api_limits_default(&cfg->limits);
}

/* Octal permission bits ("0600", "600"); -1 when invalid. */
static int parse_mode(const char *s, unsigned *out)
{
    unsigned m = 0;
    if (s[0] == '\0' || strlen(s) > 4) {
        return -1;
    }
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '7') {
            return -1;
        }
        m = m * 8 + (unsigned)(*s - '0');
    }
    *out = m;
    return 0;
}

static int mode_check(const char *s)
{
    unsigned m;
    return parse_mode(s, &m);
}

/* 0 when v is one of values; else err names the setting, the value and the allowed ones. */
static int enum_check(const char *path, const char *key, const char *v, const char *const *values,
                      struct kms_err *err)
{
    char allowed[256];
    size_t o = 0;
    for (size_t i = 0; values[i] != NULL; i++) {
        if (strcmp(values[i], v) == 0) {
            return 0;
        }
    }
    allowed[0] = '\0';
    for (size_t i = 0; values[i] != NULL && o < sizeof(allowed); i++) {
        o += (size_t)snprintf(allowed + o, sizeof(allowed) - o, "%s\"%s\"", i ? ", " : "",
                              values[i]);
    }
    return kms_err_set(err, 400,
                       "config %s: \"%s\": unsupported value \"%s\": supported values: %s", path,
                       key, v, allowed);
}

/*
 * "audit_devices": [{"name": "backup", "path": "/mnt/b/audit.log", "fsync": "never",
 * "mode": "0600", "hmac_accessor": true}, ...]: extra devices beside "file".
 */
static int audit_devices_load(const char *path, json_t *v, struct kms_config *cfg,
                              struct kms_err *err)
{
    size_t i;
    json_t *d;
    if (!json_is_array(v) || json_array_size(v) > KMS_AUDIT_MAX_DEVICES - 1) {
        return kms_err_set(err, 400,
                           "config %s: \"audit_devices\" must be an array of at most %d "
                           "objects",
                           path, KMS_AUDIT_MAX_DEVICES - 1);
    }
    cfg->naudit_devices = 0;
    json_array_foreach(v, i, d)
    {
        struct kms_audit_device_opts *o = &cfg->audit_devices[cfg->naudit_devices];
        const char *k;
        json_t *f;
        kms_audit_device_opts_default(o);
        o->name[0] = '\0';
        if (!json_is_object(d)) {
            return kms_err_set(err, 400, "config %s: audit_devices[%zu] must be an object", path,
                               i);
        }
        json_object_foreach(d, k, f)
        {
            const char *sv = json_string_value(f);
            bool ok = true;
            if (strcmp(k, "name") == 0 && sv != NULL && strlen(sv) < sizeof(o->name)) {
                snprintf(o->name, sizeof(o->name), "%s", sv);
            } else if (strcmp(k, "path") == 0 && sv != NULL && strlen(sv) < sizeof(o->path)) {
                snprintf(o->path, sizeof(o->path), "%s", sv);
            } else if (strcmp(k, "fsync") == 0 && sv != NULL) {
                if (enum_check(path, "audit_devices[].fsync", sv, fsync_modes, err) != 0) {
                    return -1;
                }
                ok = kms_audit_fsync_parse(sv, &o->fsync) == 0;
            } else if (strcmp(k, "mode") == 0 && sv != NULL) {
                ok = parse_mode(sv, &o->mode) == 0;
            } else if (strcmp(k, "hmac_accessor") == 0 && json_is_boolean(f)) {
                o->hmac_accessor = json_is_true(f);
            } else {
                ok = false;
            }
            if (!ok) {
                return kms_err_set(err, 400,
                                   "config %s: audit_devices[%zu]: unknown setting or invalid "
                                   "value \"%s\" (settings: name, path, fsync, mode, "
                                   "hmac_accessor)",
                                   path, i, k);
            }
        }
        if (o->name[0] == '\0' || o->path[0] == '\0') {
            return kms_err_set(
                err, 400, "config %s: audit_devices[%zu] needs \"name\" and \"path\"", path, i);
        }
        cfg->naudit_devices++;
    }
    return 0;
}

/*
 * "kms_plugins": [{"socket": "/run/kmsd/kms.sock", "key": "my-project/etcd", "namespace":
 * "my-org", "socket_mode": "0660", "socket_group": "kube"}, ...]: KMS plugin sockets.
 */
static int kms_plugins_load(const char *path, json_t *v, struct kms_config *cfg,
                            struct kms_err *err)
{
    size_t i;
    json_t *d;
    if (!json_is_array(v) || json_array_size(v) > KMS_CONFIG_PLUGINS_MAX) {
        return kms_err_set(err, 400,
                           "config %s: \"kms_plugins\" must be an array of at most %d objects",
                           path, KMS_CONFIG_PLUGINS_MAX);
    }
    cfg->nkms_plugins = 0;
    json_array_foreach(v, i, d)
    {
        struct kms_config_plugin *o = &cfg->kms_plugins[cfg->nkms_plugins];
        const char *k;
        json_t *f;
        memset(o, 0, sizeof(*o));
        if (!json_is_object(d)) {
            return kms_err_set(err, 400, "config %s: kms_plugins[%zu] must be an object", path, i);
        }
        json_object_foreach(d, k, f)
        {
            const char *sv = json_string_value(f);
            bool ok = sv != NULL;
            if (ok && strcmp(k, "socket") == 0 && strlen(sv) < sizeof(o->socket)) {
                snprintf(o->socket, sizeof(o->socket), "%s", sv);
            } else if (ok && strcmp(k, "key") == 0 && strlen(sv) < sizeof(o->key)) {
                snprintf(o->key, sizeof(o->key), "%s", sv);
            } else if (ok && strcmp(k, "namespace") == 0 && strlen(sv) < sizeof(o->ns)) {
                snprintf(o->ns, sizeof(o->ns), "%s", sv);
            } else if (ok && strcmp(k, "socket_mode") == 0) {
                ok = parse_mode(sv, &o->mode) == 0 && o->mode != 0;
            } else if (ok && strcmp(k, "socket_group") == 0 && strlen(sv) < sizeof(o->group)) {
                snprintf(o->group, sizeof(o->group), "%s", sv);
            } else {
                ok = false;
            }
            if (!ok) {
                return kms_err_set(err, 400,
                                   "config %s: kms_plugins[%zu]: unknown setting or invalid "
                                   "value \"%s\" (settings: socket, key, namespace, "
                                   "socket_mode, socket_group)",
                                   path, i, k);
            }
        }
        if (o->socket[0] == '\0' || o->key[0] == '\0') {
            return kms_err_set(err, 400, "config %s: kms_plugins[%zu] needs \"socket\" and \"key\"",
                               path, i);
        }
        cfg->nkms_plugins++;
    }
    return 0;
}

int kms_config_audit_devices(const struct kms_config *cfg, const char *file_flag,
                             const char *fsync_flag, struct kms_audit_device_opts *out, size_t *n,
                             struct kms_err *err)
{
    const char *file = file_flag != NULL ? file_flag : cfg->audit_file;
    const char *fsync = fsync_flag != NULL ? fsync_flag : cfg->audit_fsync;
    *n = 0;
    if (file[0] != '\0') {
        struct kms_audit_device_opts *o = &out[(*n)++];
        kms_audit_device_opts_default(o);
        if (strlen(file) >= sizeof(o->path)) {
            return kms_err_set(err, 400, "audit_file: path too long");
        }
        snprintf(o->path, sizeof(o->path), "%s", file);
        if (kms_audit_fsync_parse(fsync, &o->fsync) != 0) {
            return kms_err_set(err, 400, "audit_fsync: \"%s\" is not always, batch or never",
                               fsync);
        }
        if (parse_mode(cfg->audit_mode, &o->mode) != 0) {
            return kms_err_set(err, 400, "audit_mode: \"%s\" is not an octal mode like \"0600\"",
                               cfg->audit_mode);
        }
        o->hmac_accessor = cfg->audit_hmac_accessor;
    }
    for (size_t i = 0; i < cfg->naudit_devices && *n < KMS_AUDIT_MAX_DEVICES; i++) {
        out[(*n)++] = cfg->audit_devices[i];
    }
    return 0;
}

bool kms_env_scrub(const char *name)
{
    char *text = getenv(name);
    if (text == NULL) {
        return false;
    }
    kms_memzero(text, strlen(text));
    unsetenv(name);
    return true;
}

int kms_config_load(const char *path, struct kms_config *cfg, struct kms_err *err)
{
    json_error_t jerr;
    json_t *root = NULL;
    int rc = -1;
    const char *k;
    json_t *v;
    struct stat sb;

    /* a directory opens and reads as an empty file: jansson's "'[' or '{' expected" */
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        kms_err_set(err, 400, "config %s: is a directory, not a JSON file", path);
        goto out;
    }
    root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL && jerr.line < 1) { /* not read at all: "unable to open F: …" */
        kms_err_set(err, 400, "config %s: %s", path, jerr.text);
        goto out;
    }
    if (root == NULL) {
        /* without jansson's " near '<text>'" tail (kms_json_error_len): it quotes the file
         * around the error, which in a postgresql_url whose password holds a '"' not escaped
         * is a piece of that password */
        kms_err_set(err, 400, "config %s: %.*s (line %d, column %d)", path,
                    kms_json_error_len(&jerr), jerr.text, jerr.line, jerr.column);
        goto out;
    }
    if (!json_is_object(root)) {
        kms_err_set(err, 400, "config %s: the top level must be a JSON object", path);
        goto out;
    }
    json_object_foreach(root, k, v)
    {
        if (strcmp(k, "audit_devices") == 0) {
            if (audit_devices_load(path, v, cfg, err) != 0) {
                goto out;
            }
            continue;
        }
        if (strcmp(k, "kms_plugins") == 0) {
            if (kms_plugins_load(path, v, cfg, err) != 0) {
                goto out;
            }
            continue;
        }
        const struct centry *e = NULL;
        for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
            if (strcmp(table[i].name, k) == 0) {
                e = &table[i];
            }
        }
        if (e == NULL) {
            kms_err_set(err, 400,
                        "config %s: unknown setting \"%s\" (docs/config.md lists the settings)",
                        path, k);
            goto out;
        }
        char *field = (char *)cfg + e->offset;
        if (e->type == C_STR) {
            if (!json_is_string(v) || json_string_length(v) >= e->size) {
                kms_err_set(err, 400, "config %s: \"%s\" must be a string shorter than %zu bytes",
                            path, k, e->size);
                goto out;
            }
            const char *sv = json_string_value(v);
            if (e->values != NULL && enum_check(path, k, sv, e->values, err) != 0) {
                goto out;
            }
            if (e->check != NULL && e->check(sv) != 0) {
                kms_err_set(err, 400, "config %s: \"%s\": invalid value \"%s\": expected %s", path,
                            k, sv, e->expect);
                goto out;
            }
            memcpy(field, sv, json_string_length(v) + 1);
            continue;
        }
        if (e->type == C_BOOL) {
            if (!json_is_boolean(v)) {
                kms_err_set(err, 400, "config %s: \"%s\" must be true or false", path, k);
                goto out;
            }
            *(bool *)(void *)field = json_is_true(v);
            continue;
        }
        int64_t n;
        if (json_is_integer(v)) {
            n = json_integer_value(v);
            if (e->type == C_MILLIS) {
                n = n > INT64_MAX / 1000 || n < 0 ? -1 : n * 1000;
            }
        } else if (e->type == C_MILLIS && json_is_string(v)) {
            if (millis_parse(json_string_value(v), &n) != 0) {
                kms_err_set(err, 400, "config %s: \"%s\" is not a duration such as \"500ms\"", path,
                            k);
                goto out;
            }
        } else if (e->type == C_SECONDS && json_is_string(v)) {
            if (kms_duration_parse(json_string_value(v), &n) != 0) {
                kms_err_set(err, 400, "config %s: \"%s\" is not a duration", path, k);
                goto out;
            }
        } else {
            kms_err_set(err, 400, "config %s: \"%s\" must be an integer", path, k);
            goto out;
        }
        if (n < e->min || n > e->max) {
            kms_err_set(err, 400, "config %s: \"%s\" must be between %lld and %lld", path, k,
                        (long long)e->min, (long long)e->max);
            goto out;
        }
        if (e->type == C_SIZE) {
            *(size_t *)(void *)field = (size_t)n;
        } else {
            *(int64_t *)(void *)field = n;
        }
    }
    /* one body of max_request_size must always fit (0: the default, eight of them) */
    if (cfg->max_request_bytes_in_flight != 0 &&
        cfg->max_request_bytes_in_flight < cfg->limits.max_request_size) {
        kms_err_set(err, 400,
                    "config %s: \"max_request_bytes_in_flight\" (%zu) must be at least "
                    "\"max_request_size\" (%zu)",
                    path, cfg->max_request_bytes_in_flight, cfg->limits.max_request_size);
        goto out;
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}
