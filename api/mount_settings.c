/*
 * mount_settings.c - a mount's tunable settings from a request: OpenBao's
 * handleTuneWriteCommon for what kmsd stores (lease TTLs, audit HMAC exemptions, listing
 * visibility, token type of auth mounts, header lists, options), shared by the tune
 * endpoints and by enabling a mount with `config`/`options` (secret engines and auth methods
 * alike).
 */
#include "api/api_int.h"

#include <stdio.h>
#include <string.h>

/* A lease TTL of a tune write into cfg[name]: "" keeps it, "system" clears it. */
static int tune_ttl(struct kms_ctx *c, json_t *cfg, const char *name, int64_t *out)
{
    json_t *v = kms_param(c, name);
    *out = json_integer_value(json_object_get(cfg, name));
    if (v == NULL || (json_is_string(v) && json_string_length(v) == 0)) {
        return 0;
    }
    /* OpenBao reads the field as a string (mapstructure's weak decode: true is "1", a number
     * its text) and then as seconds or a Go duration: a fraction of a second is refused, not
     * truncated (0.9 would have reset the TTL to the system's) */
    char text[64];
    double d = json_is_real(v) ? json_real_value(v) : 0;
    if (json_is_boolean(v) || json_is_integer(v) ||
        (json_is_real(v) && d == (double)(long long)d && d > -1e15 && d < 1e15)) {
        long long n = json_is_boolean(v)   ? json_is_true(v)
                      : json_is_integer(v) ? (long long)json_integer_value(v)
                                           : (long long)d;
        snprintf(text, sizeof(text), "%lld", n);
    } else if (json_is_real(v)) {
        snprintf(text, sizeof(text), "%g", d);
    } else if (!json_is_string(v)) {
        return KMS_FAIL(c, 400, "%s: expected a duration (\"1h\") or a number of seconds", name);
    }
    const char *str = json_is_string(v) ? json_string_value(v) : text;
    if (strcmp(str, "system") == 0) {
        *out = 0;
    } else if (kms_parse_duration_str(str, out) != 0 || *out < 0) {
        return KMS_FAIL(c, 400, "time: invalid duration \"%s\"", str);
    }
    json_object_set_new(cfg, name, json_integer(*out));
    return 0;
}

/* A string list parameter (JSON array of strings or comma-separated string) into cfg. */
static int tune_list(struct kms_ctx *c, json_t *cfg, const char *name)
{
    json_t *v = kms_param(c, name);
    json_t *list = json_array();
    size_t i;
    json_t *e;
    if (v == NULL) {
        json_decref(list);
        return 0;
    }
    if (json_is_string(v)) {
        for (const char *s = json_string_value(v); *s != '\0';) {
            const char *comma = strchr(s, ',');
            size_t n = comma ? (size_t)(comma - s) : strlen(s);
            json_array_append_new(list, json_stringn(s, n));
            s += n + (comma ? 1 : 0);
        }
    } else if (json_is_array(v) && json_array_size(v) <= 256) {
        json_array_foreach(v, i, e)
        {
            if (!json_is_string(e)) {
                break;
            }
            json_array_append(list, e);
        }
    }
    if (json_array_size(list) != (json_is_array(v) ? json_array_size(v) : json_array_size(list))) {
        json_decref(list);
        return KMS_FAIL(c, 400, "%s must be a list of at most 256 strings", name);
    }
    json_object_set_new(cfg, name, list);
    return 0;
}

/* options: a "version" (1 or 2, never lowered) and other keys; an empty value removes a key. */
static int tune_options(struct kms_ctx *c, json_t *opts)
{
    const char *k;
    json_t *v;
    json_t *given = kms_param(c, "options");
    const char *ver = NULL;
    if (json_object_size(given) == 0) {
        return 0;
    }
    json_object_foreach(given, k, v)
    {
        /* OpenBao's key=value pairs: scalars weakly typed to strings */
        if (json_is_integer(v)) {
            char buf[32];
            snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(v));
            json_object_set_new(given, k, json_string(buf));
        } else if (json_is_boolean(v)) {
            json_object_set_new(given, k, json_string(json_is_true(v) ? "true" : "false"));
        } else if (!json_is_string(v)) {
            return KMS_FAIL(c, 400, "options must be a map of strings");
        }
    }
    if ((ver = json_string_value(json_object_get(given, "version"))) != NULL) {
        int64_t want = 0;
        int64_t have = 0;
        const char *cur = json_string_value(json_object_get(opts, "version"));
        if (!kms_int_parse(ver, &want)) {
            return KMS_FAIL(c, 400, "unable to parse options: could not parse value from input");
        }
        if (want != 1 && want != 2) {
            return KMS_FAIL(c, 400, "invalid version provided: %lld", (long long)want);
        }
        if (cur != NULL && cur[0] != '\0' && !kms_int_parse(cur, &have)) {
            have = 0;
        }
        if (have > want) {
            return KMS_FAIL(c, 400, "cannot downgrade mount from version %lld", (long long)have);
        }
        if (have < want) {
            kms_warn(c,
                     "Upgrading mount from version %lld to version %lld. This mount will be "
                     "unavailable for a brief period and will resume service shortly.",
                     (long long)have, (long long)want);
        }
    }
    json_object_foreach(given, k, v)
    {
        if (json_string_length(v) == 0 && strcmp(k, "version") != 0) {
            json_object_del(opts, k);
        } else {
            json_object_set(opts, k, v);
        }
    }
    return 0;
}

int kms_mount_tune_params(struct kms_ctx *c, const char *path, json_t *cfg, json_t *opts,
                          const char **desc)
{
    const char *vis = NULL;
    const char *tt = NULL;
    int64_t def = 0;
    int64_t max = 0;
    bool auth = strncmp(path, "auth/", 5) == 0;

    *desc = NULL;
    if (tune_ttl(c, cfg, "default_lease_ttl", &def) != 0 ||
        tune_ttl(c, cfg, "max_lease_ttl", &max) != 0) {
        return -1;
    }
    if (def != 0 && max != 0 && max < def) {
        return KMS_FAIL(c, 400,
                        "backend max lease TTL of %lld would be less than backend default lease "
                        "TTL of %lld",
                        (long long)max, (long long)def);
    }
    (void)kms_param_str(c, "description", desc);
    if (tune_list(c, cfg, "audit_non_hmac_request_keys") != 0 ||
        tune_list(c, cfg, "audit_non_hmac_response_keys") != 0) {
        return -1;
    }
    if (kms_param_str(c, "listing_visibility", &vis)) {
        if (vis[0] != '\0' && strcmp(vis, "hidden") != 0 && strcmp(vis, "unauth") != 0) {
            return KMS_FAIL(c, 400, "invalid listing_visibility %s", vis);
        }
        json_object_set_new(cfg, "listing_visibility", json_string(vis));
    }
    if (kms_param_str(c, "token_type", &tt)) {
        if (!auth) {
            return KMS_FAIL(c, 400, "'token_type' can only be modified on auth mounts");
        }
        if (tt[0] != '\0' && strcmp(tt, "default-service") != 0 && strcmp(tt, "service") != 0) {
            return KMS_FAIL(c, 400,
                            strcmp(tt, "batch") == 0 || strcmp(tt, "default-batch") == 0
                                ? "batch tokens are not supported by kmsd; use \"service\""
                                : "invalid value for 'token_type'");
        }
        json_object_set_new(cfg, "token_type", json_string(tt[0] ? tt : "default-service"));
    }
    if (tune_list(c, cfg, "passthrough_request_headers") != 0 ||
        tune_list(c, cfg, "allowed_response_headers") != 0 || tune_options(c, opts) != 0) {
        return -1;
    }
    if (*desc != NULL && strlen(*desc) >= sizeof(((struct kms_mount *)NULL)->description)) {
        return KMS_FAIL(c, 400, "description too long (at most %zu bytes)",
                        sizeof(((struct kms_mount *)NULL)->description) - 1);
    }
    return 0;
}

/* The settings of a mount being enabled: the request's `config` map (its keys read as a tune's
 * parameters) and `options`, validated as a tune of a fresh mount; both NULL when neither is
 * given. */
static int enable_settings(struct kms_ctx *c, const char *path, json_t **cfg, json_t **opts)
{
    const char *k;
    json_t *v;
    const char *desc = NULL;

    *cfg = NULL;
    *opts = NULL;
    json_t *given = kms_param(c, "config");
    if (!json_is_object(given) && !json_is_object(kms_param(c, "options"))) {
        return 0;
    }
    /* OpenBao's enable takes the tune settings nested in "config" (its MountConfigInput), read
     * here as a tune's parameters, and "options"; top-level tune keys are no enable field and
     * mean nothing. They are read from an object of their own: the caller holds pointers into
     * c->params (type, description), and config's own "type", "description", "options" and
     * "config" are not settings */
    static const char *const not_settings[] = {"type", "description", "options", "config"};
    json_t *params = json_object();
    json_t *saved = c->params;
    size_t nwarn = json_array_size(c->warnings);
    int rc = -1;
    *cfg = json_object();
    *opts = json_object();
    if (params == NULL || *cfg == NULL || *opts == NULL) {
        json_decref(params);
        KMS_FAILW(c, 500, "out of memory");
        goto fail;
    }
    json_object_foreach(given, k, v)
    {
        bool skip = false;
        for (size_t i = 0; i < sizeof(not_settings) / sizeof(not_settings[0]); i++) {
            skip = skip || strcmp(k, not_settings[i]) == 0;
        }
        if (!skip) {
            json_object_set(params, k, v);
        }
    }
    if (json_is_object(kms_param(c, "options"))) {
        json_object_set(params, "options", kms_param(c, "options"));
    }
    c->params = params;
    rc = kms_mount_tune_params(c, path, *cfg, *opts, &desc);
    c->params = saved;
    json_decref(params); /* desc pointed into it: not used */
    if (rc != 0) {
        goto fail;
    }
    /* a new mount is no upgrade: the tune's own warnings ("Upgrading mount...") do not apply;
     * those given before stay */
    while (json_array_size(c->warnings) > nwarn) {
        json_array_remove(c->warnings, json_array_size(c->warnings) - 1);
    }
    return 0;
fail:
    json_decref(*cfg);
    json_decref(*opts);
    *cfg = NULL;
    *opts = NULL;
    return -1;
}

json_t *kms_mount_tuning_get(struct kms_api *api, const struct kms_mount *m)
{
    json_t *t = NULL;
    if (kms_registry_mount_tuning(api, m->ns_id, m->path, &t) != 0) {
        t = json_pack("{s:{}, s:{}}", "config", "options");
    }
    return t;
}

json_t *kms_mount_info(const struct kms_mount *m, const json_t *tuning)
{
    const json_t *cfg = json_object_get(tuning, "config");
    const json_t *opts = json_object_get(tuning, "options");
    json_t *j = json_pack("{s:s, s:{s:I, s:b, s:I}, s:s, s:b, s:b, s:n, s:s, s:s, s:b, s:s, s:s}",
                          "accessor", m->accessor, "config", "default_lease_ttl",
                          (json_int_t)json_integer_value(json_object_get(cfg, "default_lease_ttl")),
                          "force_no_cache", false, "max_lease_ttl",
                          (json_int_t)json_integer_value(json_object_get(cfg, "max_lease_ttl")),
                          "description", m->description, "external_entropy_access", false, "local",
                          false, "options", "plugin_version", "", "running_plugin_version", "",
                          "seal_wrap", false, "type", m->type, "uuid", m->uuid);
    static const char *const extra[] = {"listing_visibility", "audit_non_hmac_request_keys",
                                        "audit_non_hmac_response_keys",
                                        "passthrough_request_headers", "allowed_response_headers"};
    json_t *jc = json_object_get(j, "config");
    for (size_t i = 0; j != NULL && i < sizeof(extra) / sizeof(extra[0]); i++) {
        json_t *v = json_object_get(cfg, extra[i]);
        if (v != NULL) {
            json_object_set(jc, extra[i], v);
        }
    }
    if (j != NULL && strncmp(m->path, "auth/", 5) == 0) {
        json_t *tt = json_object_get(cfg, "token_type");
        json_object_set_new(jc, "token_type",
                            tt != NULL ? json_incref(tt) : json_string("default-service"));
    }
    if (j != NULL && json_object_size(opts) > 0) {
        json_object_set(j, "options", (json_t *)opts);
    }
    return j;
}

int kms_mount_enable(struct kms_ctx *c, const char *path, const char *type, const char *desc,
                     struct kms_mount *out)
{
    json_t *cfg = NULL;
    json_t *opts = NULL;
    if (enable_settings(c, path, &cfg, &opts) != 0) {
        return -1;
    }
    int rc =
        kms_registry_mount_add_tuned(c->api, c->ns.id, path, type, desc, cfg, opts, out, &c->err);
    json_decref(cfg);
    json_decref(opts);
    return rc;
}

struct tune_arg {
    struct kms_ctx *c;
    const char *path;
};

static int tune_cb(json_t *cfg, json_t *opts, const char **desc, void *arg)
{
    struct tune_arg *a = arg;
    return kms_mount_tune_params(a->c, a->path, cfg, opts, desc);
}

int kms_mount_tune(struct kms_ctx *c, const struct kms_mount *m)
{
    struct tune_arg a = {c, m->path};
    int r = kms_registry_mount_retune(c->api, m->ns_id, m->path, tune_cb, &a, &c->err);
    if (r == KMS_STORAGE_NOTFOUND) {
        return KMS_FAIL(c, 400, "tune of path \"%s\" failed: no mount entry found", m->path);
    }
    return r == 0 ? 0 : -1;
}

void kms_mount_token_store(const char *ns_id, struct kms_mount *out)
{
    memset(out, 0, sizeof(*out));
    snprintf(out->ns_id, sizeof(out->ns_id), "%s", ns_id);
    snprintf(out->path, sizeof(out->path), "auth/token/");
    snprintf(out->type, sizeof(out->type), "token");
    snprintf(out->accessor, sizeof(out->accessor), "auth_token_00000000");
    snprintf(out->description, sizeof(out->description), "token based credentials");
}
