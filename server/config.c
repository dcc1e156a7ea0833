/*
 * config.c - kmsd's configuration as one table: name, type, where it lives, bounds. The JSON
 * file is parsed in one place; an unknown key or a value of the wrong type or out of bounds
 * is an error that names the key, so a misspelt setting never silently does nothing.
 */
#include "server/server.h"

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

enum ctype { C_STR, C_SIZE, C_SECONDS, C_BOOL };

struct centry {
    const char *name;
    enum ctype type;
    size_t offset;
    size_t size; /* for strings: buffer size */
    int64_t min; /* for numbers */
    int64_t max;
};

#define STR(n, f)                                                                                  \
    {                                                                                              \
        n, C_STR, offsetof(struct kms_config, f), sizeof(((struct kms_config *)0)->f), 0, 0        \
    }
#define SIZE(n, f, lo, hi)                                                                         \
    {                                                                                              \
        n, C_SIZE, offsetof(struct kms_config, f), 0, lo, hi                                       \
    }
#define SECS(n, f, lo, hi)                                                                         \
    {                                                                                              \
        n, C_SECONDS, offsetof(struct kms_config, f), 0, lo, hi                                    \
    }
#define BOOL(n, f)                                                                                 \
    {                                                                                              \
        n, C_BOOL, offsetof(struct kms_config, f), 0, 0, 1                                         \
    }

static const struct centry table[] = {
    STR("listen_address", listen_address),
    STR("storage_path", storage_path),
    STR("seal_key_file", seal_key_file),
    STR("seal_key_env", seal_key_env),
    STR("log_level", log_level),
    STR("tls_cert_file", tls_cert_file),
    STR("tls_key_file", tls_key_file),
    STR("tls_client_ca_file", tls_client_ca_file),
    BOOL("tls_require_client_cert", tls_require_client_cert),
    SIZE("max_header_size", max_header_size, 1024, 1 << 20),
    SIZE("max_connections", max_connections, 1, 1000000),
    SIZE("workers", workers, 0, 1024),
    SIZE("storage_map_size", storage_map_size, (int64_t)1 << 20, (int64_t)1 << 40),
    SECS("read_timeout", read_timeout, 1, 3600),
    SECS("idle_timeout", idle_timeout, 1, 86400),
    SIZE("max_request_size", limits.max_request_size, 1024, (int64_t)1 << 32),
    SIZE("max_plaintext_size", limits.max_plaintext_size, 1, (int64_t)1 << 30),
    SIZE("max_json_strings", limits.max_json_strings, 10, (int64_t)1 << 30),
    SIZE("max_json_depth", limits.max_json_depth, 2, 10000),
    SIZE("max_batch_items", limits.max_batch_items, 1, (int64_t)1 << 30),
    SECS("kms_deletion_delay", kms_deletion_delay, 1, (int64_t)100 * 366 * 86400),
};

void kms_config_default(struct kms_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->listen_address, sizeof(cfg->listen_address), "127.0.0.1:8200");
    snprintf(cfg->log_level, sizeof(cfg->log_level), "info");
    cfg->max_header_size = 64 * 1024;
    cfg->max_connections = 4096;
    cfg->read_timeout = 30;
    cfg->idle_timeout = 120;
    cfg->storage_map_size = (size_t)1 << 30;
    cfg->kms_deletion_delay = 30 * 86400;
    kms_api_limits_default(&cfg->limits);
}

int kms_config_load(const char *path, struct kms_config *cfg, struct kms_err *err)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    int rc = -1;
    const char *k;
    json_t *v;

    if (root == NULL) {
        kms_err_set(err, 400, "config %s: %s (line %d)", path, jerr.text, jerr.line);
        goto out;
    }
    if (!json_is_object(root)) {
        kms_err_set(err, 400, "config %s: the top level must be a JSON object", path);
        goto out;
    }
    json_object_foreach(root, k, v)
    {
        const struct centry *e = NULL;
        for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
            if (strcmp(table[i].name, k) == 0) {
                e = &table[i];
            }
        }
        if (e == NULL) {
            kms_err_set(err, 400, "config %s: unknown setting \"%s\"", path, k);
            goto out;
        }
        char *field = (char *)cfg + e->offset;
        if (e->type == C_STR) {
            if (!json_is_string(v) || json_string_length(v) >= e->size) {
                kms_err_set(err, 400, "config %s: \"%s\" must be a string shorter than %zu bytes",
                            path, k, e->size);
                goto out;
            }
            memcpy(field, json_string_value(v), json_string_length(v) + 1);
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
    rc = 0;
out:
    json_decref(root);
    return rc;
}
