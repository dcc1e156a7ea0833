/*
 * query.c - `kmsctl audit list` and GET sys/audit/events: the response lines of a log that
 * match a filter, reduced to one summary per operation (who, what, which key and version,
 * the outcome), newest `limit` kept, oldest first.
 *
 * A response line stands for the whole operation: it repeats the request line's auth and
 * request blocks and adds the outcome. Files are read in chain order; a file last modified
 * before `since` holds nothing newer and is skipped unread.
 */
#include "audit/audit_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

int kms_audit_time_arg(const char *s, int64_t now, int64_t *out)
{
    size_t n = strlen(s);
    bool all_digits = n > 0;
    int32_t nsec;
    int64_t d;

    for (size_t i = 0; i < n; i++) {
        all_digits = all_digits && s[i] >= '0' && s[i] <= '9';
    }
    if (all_digits) {
        char *end = NULL;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (errno != 0 || *end != '\0') {
            return -1;
        }
        *out = v;
        return 0;
    }
    if (strcmp(s, "now") == 0) {
        *out = now;
        return 0;
    }
    if (kms_audit_rfc3339_parse(s, n, out, &nsec) == 0) {
        return 0;
    }
    /* "24h", "90m", "7d", "1h30m" */
    if (kms_duration_parse(s, &d) == 0 && d >= 0) {
        *out = now - d;
        return 0;
    }
    return -1;
}

const char *kms_audit_line_result(const json_t *line)
{
    json_t *pr = json_object_get(json_object_get(line, "auth"), "policy_results");
    json_t *allowed = json_object_get(pr, "allowed");
    const char *error = json_string_value(json_object_get(line, "error"));
    json_int_t status = json_integer_value(json_object_get(line, "status"));

    if (json_is_false(allowed)) {
        return "denied";
    }
    if ((error != NULL && error[0] != '\0') || status >= 400) {
        return "error";
    }
    return "allowed";
}

static bool str_eq(const json_t *v, const char *want)
{
    return json_is_string(v) && strcmp(json_string_value(v), want) == 0;
}

/* Namespace paths compare without the trailing '/', and "" == "root". */
static bool ns_eq(const char *have, const char *want)
{
    size_t hl = strlen(have), wl = strlen(want);
    while (hl > 0 && have[hl - 1] == '/') {
        hl--;
    }
    while (wl > 0 && want[wl - 1] == '/') {
        wl--;
    }
    if (wl == 4 && strncmp(want, "root", 4) == 0) {
        wl = 0;
    }
    return hl == wl && strncmp(have, want, hl) == 0;
}

/*
 * --key: a KMSKey operation's line names the KMSKey ("key" + "project"), a Transit
 * operation's line names the Transit key "<org>-<project>-<name>". A plain name matches
 * KMSKey lines of that name (any project) and Transit lines of that exact name; the Transit
 * name or "<project>/<name>" matches both kinds of line for that one key, the organization
 * being the line's namespace.
 *
 * Only a line of the KMSKey API (request path kms/...) names the KMSKey: the controller's
 * scheduled rotations and countdown deletions run on transit/ paths and carry the Transit name
 * as "key" with "project" beside it, as every kmsd version has written them, so the path and
 * not the presence of "project" decides (existing logs match too).
 */
static bool key_matches(const json_t *line, const char *want)
{
    const char *key = json_string_value(json_object_get(line, "key"));
    const char *project = json_string_value(json_object_get(line, "project"));
    const json_t *req = json_object_get(line, "request");
    const json_t *nsp = json_object_get(json_object_get(req, "namespace"), "path");
    const char *path = json_string_value(json_object_get(req, "path"));
    const char *slash = strchr(want, '/');
    char org[256], transit[1024], wanted[1024];
    if (key == NULL) {
        return false;
    }
    if (slash == NULL && strcmp(key, want) == 0) {
        return true;
    }
    snprintf(org, sizeof(org), "%s", json_is_string(nsp) ? json_string_value(nsp) : "");
    size_t ol = strlen(org);
    while (ol > 0 && org[ol - 1] == '/') {
        org[--ol] = '\0';
    }
    for (size_t i = 0; i < ol; i++) {
        org[i] = org[i] == '/' ? '-' : org[i];
    }
    if (project != NULL && (path == NULL || strncmp(path, "kms/", 4) == 0)) {
        snprintf(transit, sizeof(transit), "%s-%s-%s", org, project, key);
    } else {
        snprintf(transit, sizeof(transit), "%s", key);
    }
    if (slash != NULL) {
        snprintf(wanted, sizeof(wanted), "%s-%.*s-%s", org, (int)(slash - want), want, slash + 1);
    } else {
        snprintf(wanted, sizeof(wanted), "%s", want);
    }
    return strcmp(transit, wanted) == 0;
}

static json_t *summary(const json_t *line, const char *result)
{
    json_t *req = json_object_get(line, "request");
    json_t *ns = json_object_get(req, "namespace");
    json_t *s = json_object();
    static const char *const top[] = {"time",   "subject", "op",          "resource",
                                      "key",    "project", "key_version", "items",
                                      "status", "error",   NULL};

    if (s == NULL) {
        return NULL;
    }
    for (size_t i = 0; top[i] != NULL; i++) {
        json_t *v = json_object_get(line, top[i]);
        if (v != NULL) {
            json_object_set(s, top[i], v);
        }
        if (i == 0) {
            json_t *id = json_object_get(req, "id");
            if (id != NULL) {
                json_object_set(s, "request_id", id);
            }
        }
    }
    json_object_set_new(s, "result", json_string(result));
    json_t *path = json_object_get(ns, "path");
    json_object_set_new(s, "namespace",
                        json_string(json_is_string(path) ? json_string_value(path) : ""));
    static const char *const from_req[] = {"operation", "path", "remote_address", NULL};
    for (size_t i = 0; from_req[i] != NULL; i++) {
        json_t *v = json_object_get(req, from_req[i]);
        if (v != NULL) {
            json_object_set(s, from_req[i], v);
        }
    }
    return s;
}

static bool matches(const json_t *line, const struct kms_audit_filter *f, const char **result)
{
    if (!str_eq(json_object_get(line, "type"), "response")) {
        return false;
    }
    const char *ts = json_string_value(json_object_get(line, "time"));
    int64_t sec;
    int32_t nsec;
    if (ts == NULL || kms_audit_rfc3339_parse(ts, strlen(ts), &sec, &nsec) != 0) {
        return false;
    }
    if ((f->since != 0 && sec < f->since) || (f->until != 0 && sec >= f->until)) {
        return false;
    }
    if (f->resource != NULL) {
        const char *r = json_string_value(json_object_get(line, "resource"));
        if (r == NULL || strcasecmp(r, f->resource) != 0) {
            return false;
        }
    }
    if ((f->key != NULL && !key_matches(line, f->key)) ||
        (f->op != NULL && !str_eq(json_object_get(line, "op"), f->op)) ||
        (f->subject != NULL && !str_eq(json_object_get(line, "subject"), f->subject))) {
        return false;
    }
    if (f->ns != NULL) {
        json_t *p =
            json_object_get(json_object_get(json_object_get(line, "request"), "namespace"), "path");
        if (!ns_eq(json_is_string(p) ? json_string_value(p) : "", f->ns)) {
            return false;
        }
    }
    *result = kms_audit_line_result(line);
    return f->result == NULL || strcmp(f->result, *result) == 0;
}

int kms_audit_query(const char *const *paths, size_t n, const struct kms_audit_filter *f,
                    json_t **events, bool *truncated, struct kms_err *err)
{
    size_t limit = f->limit ? f->limit : KMS_AUDIT_LIST_DEFAULT_LIMIT;
    json_t **ring = NULL;
    size_t count = 0; /* matches seen */
    char *buf = NULL;
    size_t cap = 0;
    FILE *fp = NULL;
    int rc = -1;

    *events = NULL;
    *truncated = false;
    if (limit > KMS_AUDIT_LIST_MAX_LIMIT) {
        limit = KMS_AUDIT_LIST_MAX_LIMIT;
    }
    ring = calloc(limit, sizeof(*ring));
    if (ring == NULL) {
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        if (f->since != 0 && stat(paths[i], &st) == 0 && st.st_mtime < f->since) {
            continue;
        }
        fp = fopen(paths[i], "rb");
        if (fp == NULL) {
            kms_err_set(err, 400, "%s: %s", paths[i], strerror(errno));
            goto out;
        }
        ssize_t len;
        uint64_t lineno = 0;
        while ((len = kms_audit_getline(&buf, &cap, fp, KMS_AUDIT_READ_LINE_MAX)) != 0) {
            lineno++;
            if (len == KMS_AUDIT_LINE_TOO_LONG) {
                kms_err_set(err, 400,
                            "%s:%" PRIu64 ": line longer than %zu MiB (not a kmsd audit log)",
                            paths[i], lineno, KMS_AUDIT_READ_LINE_MAX >> 20);
                goto out;
            }
            if (len < 0) {
                kms_err_set(err, 500, "%s: %s", paths[i], strerror(errno));
                goto out;
            }
            const char *result = NULL;
            json_t *line = json_loadb(buf, (size_t)len, 0, NULL);
            if (line != NULL && matches(line, f, &result)) {
                json_t *s = summary(line, result);
                if (s != NULL) {
                    size_t slot = count % limit;
                    json_decref(ring[slot]);
                    ring[slot] = s;
                    count++;
                }
            }
            json_decref(line);
        }
        fclose(fp);
        fp = NULL;
    }
    *events = json_array();
    if (*events == NULL) {
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    size_t kept = count < limit ? count : limit;
    for (size_t i = 0; i < kept; i++) {
        size_t slot = (count - kept + i) % limit;
        json_array_append(*events, ring[slot]);
    }
    *truncated = count > limit;
    rc = 0;
out:
    if (fp != NULL) {
        fclose(fp);
    }
    for (size_t i = 0; ring != NULL && i < limit; i++) {
        json_decref(ring[i]);
    }
    free(ring);
    free(buf);
    return rc;
}

/* Cell text of column `key` for one event (key_version arrays joined by ','). */
static void cell(const json_t *ev, const char *key, char *out, size_t n)
{
    json_t *v = json_object_get(ev, key);
    out[0] = '\0';
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        const char *project = json_string_value(json_object_get(ev, "project"));
        const char *path = json_string_value(json_object_get(ev, "path"));
        if (strcmp(key, "time") == 0 && strlen(s) >= 19) {
            snprintf(out, n, "%.19sZ", s);
        } else if (strcmp(key, "key") == 0 && project != NULL && path != NULL &&
                   strncmp(path, "kms/", 4) == 0) {
            /* a KMSKey is named within its project: "app-secrets" alone is every project's
               (the form --key takes) */
            snprintf(out, n, "%s/%s", project, s);
        } else {
            snprintf(out, n, "%s", s);
        }
    } else if (json_is_integer(v)) {
        snprintf(out, n, "%lld", (long long)json_integer_value(v));
    } else if (json_is_array(v)) {
        size_t o = 0, i;
        json_t *e;
        json_array_foreach(v, i, e)
        {
            if (o < n) {
                o += (size_t)snprintf(out + o, n - o, "%s%lld", i ? "," : "",
                                      (long long)json_integer_value(e));
            }
        }
    }
    if (out[0] == '\0') {
        snprintf(out, n, "-");
    }
}

void kms_audit_events_print_table(const json_t *events, FILE *out)
{
    static const char *const cols[] = {"time",        "subject", "op",     "key",
                                       "key_version", "result",  "status", "remote_address"};
    static const char *const heads[] = {"TIME",    "SUBJECT", "OP",     "KEY",
                                        "VERSION", "RESULT",  "STATUS", "REMOTE"};
    enum { NCOL = sizeof(cols) / sizeof(cols[0]) };
    size_t w[NCOL];
    char c[128];
    size_t i;
    json_t *ev;

    for (size_t k = 0; k < NCOL; k++) {
        w[k] = strlen(heads[k]);
    }
    json_array_foreach(events, i, ev)
    {
        for (size_t k = 0; k < NCOL; k++) {
            cell(ev, cols[k], c, sizeof(c));
            if (strlen(c) > w[k]) {
                w[k] = strlen(c);
            }
        }
    }
    for (size_t k = 0; k < NCOL; k++) {
        fprintf(out, "%-*s%s", k + 1 < NCOL ? (int)w[k] : 0, heads[k], k + 1 < NCOL ? "  " : "\n");
    }
    json_array_foreach(events, i, ev)
    {
        for (size_t k = 0; k < NCOL; k++) {
            cell(ev, cols[k], c, sizeof(c));
            fprintf(out, "%-*s%s", k + 1 < NCOL ? (int)w[k] : 0, c, k + 1 < NCOL ? "  " : "\n");
        }
    }
}
