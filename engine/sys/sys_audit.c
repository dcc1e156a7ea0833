/*
 * sys_audit.c - the sys/ endpoints of the audit log:
 *
 *   POST sys/audit-hash/<device> {input}   the HMAC a value would have in that device's log
 *   GET  sys/audit                         the configured devices (sudo)
 *   PUT/POST/DELETE sys/audit/<device>     refused: devices come from the config file only
 *   GET  sys/audit/events?since=...        operations from the server's own log (sudo), the
 *                                          remote side of `kmsctl audit list`
 */
#include "engine/sys/sys_int.h"
#include "audit/audit.h"

#include <stdlib.h>
#include <string.h>

const struct kms_field kms_sys_audit_hash_fields[] = {
    {"input", KMS_F_STRING},
    {NULL, 0},
};

const struct kms_field kms_sys_audit_events_fields[] = {
    {"since", KMS_F_STRING},
    {"until", KMS_F_STRING},
    {"resource", KMS_F_STRING},
    {"key", KMS_F_STRING},
    {"op", KMS_F_STRING},
    {"subject", KMS_F_STRING},
    {"result", KMS_F_STRING},
    {"namespace", KMS_F_STRING},
    {"limit", KMS_F_INT},
    {"device", KMS_F_STRING},
    {NULL, 0},
};

/* Device name from the path capture: "file" and "file/" name "file" ("/file" is no route). */
static void device_name(struct kms_ctx *c, char *out, size_t n)
{
    const char *p = kms_cap(c, "path");
    size_t len = kms_trim_slashes(p, &p);
    snprintf(out, n, "%.*s", (int)len, p ? p : "");
}

int kms_sys_audit_hash(struct kms_ctx *c)
{
    char name[KMS_AUDIT_NAME_MAX + 64];
    char hash[KMS_AUDIT_HMAC_LEN + 1];
    const char *input = NULL;

    device_name(c, name, sizeof(name));
    if (!kms_param_str(c, "input", &input) || input[0] == '\0') {
        return KMS_FAIL(c, 400, "the \"input\" parameter is empty");
    }
    int rc = kms_audit_hash_input(kms_api_audit(c->api), name, input, strlen(input), hash);
    if (rc == KMS_STORAGE_NOTFOUND) {
        return KMS_FAIL(c, 400, "unknown audit backend %s", name);
    }
    if (rc != 0) {
        return KMS_FAILW(c, 500, "internal error");
    }
    c->data = json_pack("{s:s}", "hash", hash);
    return 0;
}

int kms_sys_audit_list(struct kms_ctx *c)
{
    struct kms_audit *a = kms_api_audit(c->api);
    c->data = json_object();
    for (size_t i = 0; i < kms_audit_ndevices(a); i++) {
        struct kms_audit_device_opts o;
        char key[KMS_AUDIT_NAME_MAX + 1];
        char mode[8];
        kms_audit_device_get(a, i, &o);
        snprintf(key, sizeof(key), "%s/", o.name);
        snprintf(mode, sizeof(mode), "%04o", o.mode);
        json_object_set_new(c->data, key,
                            json_pack("{s:s, s:s, s:s, s:b, s:{s:s, s:s, s:s, s:s}}", "type",
                                      "file", "path", key, "description",
                                      "configured in the server configuration", "local", false,
                                      "options", "file_path", o.path, "mode", mode, "fsync",
                                      kms_audit_fsync_name(o.fsync), "hmac_accessor",
                                      o.hmac_accessor ? "true" : "false"));
    }
    return 0;
}

int kms_sys_audit_disable(struct kms_ctx *c)
{
    return KMS_FAIL(c, 400,
                    "cannot disable audit device via API; use declarative, config-based "
                    "audit device management instead");
}

int kms_sys_audit_enable(struct kms_ctx *c)
{
    return KMS_FAIL(c, 400,
                    "cannot enable audit device via API; use declarative, config-based audit "
                    "device management instead");
}

int kms_sys_audit_events(struct kms_ctx *c)
{
    struct kms_audit *a = kms_api_audit(c->api);
    struct kms_audit_device_opts o;
    struct kms_audit_filter f;
    struct kms_err err;
    const char *s = NULL;
    const char *dev = NULL;
    char **paths = NULL;
    size_t npaths = 0;
    json_t *events = NULL;
    bool truncated = false;
    int64_t now, limit;
    int32_t nsec;
    size_t i;
    int rc = -1;

    memset(&f, 0, sizeof(f));
    if (kms_audit_ndevices(a) == 0) {
        return KMS_FAIL(c, 400, "no audit device is configured");
    }
    (void)kms_param_str(c, "device", &dev);
    for (i = 0; i < kms_audit_ndevices(a); i++) {
        kms_audit_device_get(a, i, &o);
        if (dev == NULL || strcmp(dev, o.name) == 0) {
            break;
        }
    }
    if (i == kms_audit_ndevices(a)) {
        return KMS_FAIL(c, 400, "unknown audit backend %s", dev);
    }
    kms_now(&now, &nsec);
    if (kms_param_str(c, "since", &s) && kms_audit_time_arg(s, now, &f.since) != 0) {
        return KMS_FAIL(c, 400, "since: use a duration (24h), RFC 3339 or epoch seconds");
    }
    if (kms_param_str(c, "until", &s) && kms_audit_time_arg(s, now, &f.until) != 0) {
        return KMS_FAIL(c, 400, "until: use a duration (24h), RFC 3339 or epoch seconds");
    }
    if (kms_param_int(c, "limit", &limit)) {
        if (limit < 1 || limit > KMS_AUDIT_LIST_MAX_LIMIT) {
            return KMS_FAIL(c, 400, "limit must be between 1 and %d", KMS_AUDIT_LIST_MAX_LIMIT);
        }
        f.limit = (size_t)limit;
    }
    (void)kms_param_str(c, "resource", &f.resource);
    (void)kms_param_str(c, "key", &f.key);
    (void)kms_param_str(c, "op", &f.op);
    (void)kms_param_str(c, "subject", &f.subject);
    (void)kms_param_str(c, "namespace", &f.ns);
    if (kms_param_str(c, "result", &f.result) && strcmp(f.result, "allowed") != 0 &&
        strcmp(f.result, "denied") != 0 && strcmp(f.result, "error") != 0) {
        return KMS_FAIL(c, 400, "result must be allowed, denied or error");
    }
    const char *file = o.path;
    if (kms_audit_files_expand(&file, 1, true, &paths, &npaths, &err) != 0 ||
        kms_audit_query((const char *const *)paths, npaths, &f, &events, &truncated, &err) != 0) {
        KMS_FAILW(c, 500, "cannot read the audit log");
        goto out;
    }
    c->data =
        json_pack("{s:o, s:b, s:s}", "events", events, "truncated", truncated, "device", o.name);
    c->audit.elide_data = true;
    if (kms_audit_replica(a) != NULL) {
        /* HA: each replica keeps its own log, and only this one's is here (docs/ha.md) */
        kms_warn(c,
                 "the audit log of HA replica %s only: operations answered by other replicas "
                 "(while they were active) are in their own logs; read them together with "
                 "kmsctl audit list --file LOG_A --file LOG_B ...",
                 kms_audit_replica(a));
    }
    events = NULL;
    rc = 0;
out:
    json_decref(events);
    kms_audit_files_free(&paths, npaths);
    return rc;
}
