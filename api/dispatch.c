/*
 * dispatch.c - the request pipeline, in Vault's order:
 *
 *   1 target and method -> path, query, operation      (404 / 405 on a bad request line)
 *   2 namespace (X-Vault-Namespace + longest prefix)   (404 namespace not found)
 *   3 body -> parameters (limits, JSON or form)         (400 / 413)
 *   4 mount and route lookup (kept for later)
 *   5 token (X-Vault-Token or Bearer)                   (403 permission denied)
 *   6 policy check on the namespaced path               (403 multierror permission denied)
 *   7 missing mount / route / operation                 (404 / 405)
 *   8 existence check (update -> create), fields        (400 on bad field types)
 *   9 handler, then the envelope.
 *
 * Handlers never repeat these checks. Public routes (sys/health, sys/init, ...) skip 5-6.
 */
#include "api/api_int.h"
#include "audit/audit.h"
#include "crypto/crypto.h"

#include <ctype.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <malloc.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static const char *header(const struct kms_http_req *req, const char *name)
{
    for (size_t i = 0; i < req->nheaders; i++) {
        if (strcasecmp(req->headers[i].name, name) == 0) {
            return req->headers[i].value;
        }
    }
    return NULL;
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9') {
        return ch - '0';
    }
    if (ch >= 'a' && ch <= 'f') {
        return ch - 'a' + 10;
    }
    if (ch >= 'A' && ch <= 'F') {
        return ch - 'A' + 10;
    }
    return -1;
}

/* Percent-decode [s, s+n) into out (size cap); plus_space for query strings. */
static int pct_decode(const char *s, size_t n, char *out, size_t cap, bool plus_space)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int ch = (unsigned char)s[i];
        if (ch == '%') {
            int hi = i + 1 < n ? hexval(s[i + 1]) : -1;
            int lo = i + 2 < n ? hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                return -1;
            }
            ch = hi * 16 + lo;
            i += 2;
        } else if (ch == '+' && plus_space) {
            ch = ' ';
        }
        if (ch == 0 || o + 1 >= cap) {
            return -1;
        }
        out[o++] = (char)ch;
    }
    out[o] = '\0';
    return 0;
}

/* Add key=value to an object; a repeated key turns the value into an array. */
static void params_add(json_t *obj, const char *key, json_t *val)
{
    json_t *old = json_object_get(obj, key);
    if (old == NULL) {
        json_object_set_new(obj, key, val);
    } else if (json_is_array(old)) {
        json_array_append_new(old, val);
    } else {
        json_t *arr = json_array();
        json_array_append(arr, old);
        json_array_append_new(arr, val);
        json_object_set_new(obj, key, arr);
    }
}

/*
 * Vault joins the values of a repeated form key with commas: each key gathered into an array
 * first, joined here once (joining as each value came copied the growing text again per value:
 * 64 Ki repeats of "a=1&", a 256 KiB body, held a worker for 11 s before the token check).
 */
static int join_repeated(json_t *obj)
{
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val)
    {
        if (!json_is_array(val)) {
            continue;
        }
        size_t n = 0, i;
        json_t *e;
        json_array_foreach(val, i, e)
        {
            n += json_string_length(e) + 1;
        }
        char *joined = malloc(n);
        if (joined == NULL) {
            return -1;
        }
        size_t o = 0;
        json_array_foreach(val, i, e)
        {
            if (o > 0) {
                joined[o++] = ',';
            }
            memcpy(joined + o, json_string_value(e), json_string_length(e));
            o += json_string_length(e);
        }
        /* replacing the value of a key being visited is safe (jansson keeps the entry) */
        json_object_set_new(obj, key, json_stringn(joined, o));
        kms_free_wipe((void **)&joined, n); /* a form body may carry a plaintext */
    }
    return 0;
}

/* Parse "a=1&b=2" (query or form body) into obj: 0, -1 when malformed, -2 when a key or value
 * is not UTF-8 (it would be dropped silently: json_string refuses it, and a dropped
 * `policies` gives a child token its parent's). */
static int parse_urlencoded(const char *s, size_t n, json_t *obj, bool join_commas)
{
    size_t i = 0;
    int rc = -1;
    char *k = malloc(n + 1);
    char *v = malloc(n + 1);
    if (k == NULL || v == NULL) {
        goto out;
    }
    while (i < n) {
        size_t j = i;
        while (j < n && s[j] != '&') {
            j++;
        }
        const char *eq = memchr(s + i, '=', j - i);
        size_t klen = eq ? (size_t)(eq - (s + i)) : j - i;
        if (klen > 0) {
            if (pct_decode(s + i, klen, k, n + 1, true) != 0) {
                goto out;
            }
            if (eq != NULL) {
                if (pct_decode(eq + 1, (size_t)(s + j - eq - 1), v, n + 1, true) != 0) {
                    goto out;
                }
            } else {
                v[0] = '\0';
            }
            if (!kms_utf8_valid(k, strlen(k)) || !kms_utf8_valid(v, strlen(v))) {
                rc = -2;
                goto out;
            }
            params_add(obj, k, json_string(v));
        }
        i = j + 1;
    }
    rc = join_commas ? join_repeated(obj) : 0;
out:
    /* the last key and value decoded (a form body's plaintext, a query's token) */
    kms_free_wipe((void **)&k, k != NULL ? n + 1 : 0);
    kms_free_wipe((void **)&v, v != NULL ? n + 1 : 0);
    return rc;
}

static int method_to_op(const char *m, enum kms_op *op, bool *head)
{
    *head = false;
    if (strcmp(m, "GET") == 0) {
        *op = KMS_OP_READ;
    } else if (strcmp(m, "HEAD") == 0) {
        *op = KMS_OP_READ;
        *head = true;
    } else if (strcmp(m, "POST") == 0 || strcmp(m, "PUT") == 0) {
        *op = KMS_OP_UPDATE;
    } else if (strcmp(m, "DELETE") == 0) {
        *op = KMS_OP_DELETE;
    } else if (strcmp(m, "LIST") == 0) {
        *op = KMS_OP_LIST;
    } else if (strcmp(m, "PATCH") == 0) {
        *op = KMS_OP_PATCH;
    } else {
        return -1;
    }
    return 0;
}

static bool name_char(int ch)
{
    return isalnum(ch) || ch == '_';
}

/* Vault's transit name regex \w(([\w-.]+)?\w)? over one segment. */
bool kms_name_valid(const char *s, size_t n)
{
    /* records are keyed "<ns>/<mount uuid>/<name>/<version>" within LMDB's 511-byte limit */
    if (n == 0 || n > 256 || !name_char((unsigned char)s[0]) ||
        !name_char((unsigned char)s[n - 1])) {
        return false;
    }
    for (size_t i = 1; i + 1 < n; i++) {
        int ch = (unsigned char)s[i];
        if (!name_char(ch) && ch != '-' && ch != '.') {
            return false;
        }
    }
    return true;
}

/*
 * Whether s[0..n) is the rest of a clean path, as a "*" capture must be: no empty segment (a
 * leading '/' or "//") and no "." or ".." segment; a trailing '/' only when `trailing` (the
 * capture ends the path: Go's path cleaning keeps it). The handlers trim slashes off such a
 * capture ("sys/mounts//prot" named the mount prot/), while the ACL had judged the path as
 * sent, where a rule for "sys/mounts/prot" does not match it; OpenBao's ServeMux never lets
 * such a path reach either (301 to the clean path).
 */
static bool clean_rest(const char *s, size_t n, bool trailing)
{
    size_t i = 0;
    while (i < n) {
        const char *slash = memchr(s + i, '/', n - i);
        size_t j = slash != NULL ? (size_t)(slash - s) : n;
        size_t len = j - i;
        if (len == 0 || (s[i] == '.' && (len == 1 || (len == 2 && s[i + 1] == '.')))) {
            return false;
        }
        if (j + 1 == n && !trailing) {
            return false;
        }
        i = j + 1;
    }
    return true;
}

/* Match rel against a template; fills captures. */
static bool route_match(const char *tmpl, const char *rel, struct kms_ctx *c)
{
    const char *t = tmpl;
    const char *p = rel;
    size_t ncap = 0;
    for (;;) {
        if (*t == '\0') {
            if (*p != '\0') {
                return false;
            }
            break;
        }
        const char *tend = strchr(t, '/');
        size_t tlen = tend ? (size_t)(tend - t) : strlen(t);
        if (t[0] == '*') {
            /* remainder, may be empty or contain '/'; "*name/rest" captures all but a final
             * "/rest" (a literal), which the path must end with after a non-empty capture */
            size_t plen = strlen(p);
            size_t slen = tend != NULL ? strlen(tend) : 0;
            if (ncap == KMS_MAX_CAPTURES || plen >= KMS_PATH_MAX || (slen > 0 && plen <= slen) ||
                (slen > 0 && strcmp(p + plen - slen, tend) != 0) ||
                !clean_rest(p, plen - slen, slen == 0)) {
                return false;
            }
            c->cap_names[ncap] = t + 1;
            memcpy(c->cap_values[ncap], p, plen - slen); /* plen < KMS_PATH_MAX */
            c->cap_values[ncap][plen - slen] = '\0';
            ncap++;
            break;
        }
        const char *pend = strchr(p, '/');
        size_t plen = pend ? (size_t)(pend - p) : strlen(p);
        if (t[0] == ':' || t[0] == '+') {
            if (plen == 0 || ncap == KMS_MAX_CAPTURES || plen >= KMS_PATH_MAX) {
                return false;
            }
            if (t[0] == ':' && !kms_name_valid(p, plen)) {
                return false;
            }
            /* "." and ".." are no segment of a clean path (404, docs/api.md), for a +capture
             * as for a :name */
            if (p[0] == '.' && (plen == 1 || (plen == 2 && p[1] == '.'))) {
                return false;
            }
            c->cap_names[ncap] = t + 1;
            memcpy(c->cap_values[ncap], p, plen);
            c->cap_values[ncap][plen] = '\0';
            ncap++;
        } else if (tlen != plen || memcmp(t, p, plen) != 0) {
            return false;
        }
        if (tend == NULL) {
            if (pend != NULL) {
                return false;
            }
            break;
        }
        if (pend == NULL) {
            return false;
        }
        t = tend + 1;
        p = pend + 1;
    }
    c->ncap = ncap;
    return true;
}

/* Capture names end at '/' inside the template string; compare up to there. */
const char *kms_cap(const struct kms_ctx *c, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < c->ncap; i++) {
        const char *cn = c->cap_names[i];
        if (strncmp(cn, name, n) == 0 && (cn[n] == '\0' || cn[n] == '/')) {
            return c->cap_values[i];
        }
    }
    return NULL;
}

size_t kms_trim_slashes(const char *s, const char **start)
{
    while (s != NULL && *s == '/') {
        s++;
    }
    size_t len = s ? strlen(s) : 0;
    while (len > 0 && s[len - 1] == '/') {
        len--;
    }
    *start = s ? s : "";
    return len;
}

static void cap_name(const char *cn, char *out, size_t cap)
{
    size_t n = 0;
    while (cn[n] != '\0' && cn[n] != '/' && n + 1 < cap) {
        out[n] = cn[n];
        n++;
    }
    out[n] = '\0';
}

/*
 * Find the route for c->rel in one engine's table. Returns 1 when found (c->route set), 0 when
 * no template matches, 2 when a template matches but not the operation.
 */
static int find_route(struct kms_ctx *c, const struct kms_route *routes)
{
    bool path_matched = false;
    for (const struct kms_route *r = routes; r->tmpl != NULL; r++) {
        if (!route_match(r->tmpl, c->rel, c)) {
            continue;
        }
        path_matched = true;
        /* a row with an existence check serves POST/PUT through create or update */
        bool served = r->on[c->op].fn != NULL || (c->op == KMS_OP_UPDATE && r->exists != NULL &&
                                                  r->on[KMS_OP_CREATE].fn != NULL);
        if (served) {
            c->route = r;
            return 1;
        }
    }
    return path_matched ? 2 : 0;
}

struct builtin_find {
    struct kms_ctx *c;
    int found;
};

/* Built-in engines answering at a fixed path; several may share one ("sys/"). */
static int builtin_cb(const struct kms_engine *e, void *arg)
{
    struct builtin_find *bf = arg;
    struct kms_ctx *c = bf->c;
    if (e->builtin_path == NULL || strcmp(e->builtin_path, c->mount.path) != 0) {
        return 0;
    }
    int f = find_route(c, e->routes);
    if (f > bf->found) {
        bf->found = f;
    }
    if (f == 1 || (bf->found == 0 && c->engine == NULL)) {
        c->engine = e;
    }
    return f == 1 ? 1 : 0;
}

/* The built-in path c->path starts with ("sys/", "kms/", "auth/token/"), into c->mount. */
static int builtin_path_cb(const struct kms_engine *e, void *arg)
{
    struct kms_ctx *c = arg;
    if (e->builtin_path == NULL) {
        return 0;
    }
    size_t n = strlen(e->builtin_path);
    bool bare = strncmp(c->path, e->builtin_path, n - 1) == 0 && c->path[n - 1] == '\0';
    if (strncmp(c->path, e->builtin_path, n) != 0 && !bare) {
        return 0;
    }
    snprintf(c->mount.path, sizeof(c->mount.path), "%s", e->builtin_path);
    snprintf(c->mount.type, sizeof(c->mount.type), "%s", e->type);
    return 1;
}

/* Step 4: mount and route. Returns 0 no mount, else find_route's answer + 10. */
static int resolve_route(struct kms_ctx *c, bool *have_mount)
{
    *have_mount = false;
    if (kms_api_engines_visit(c->api, builtin_path_cb, c) == 1) {
        *have_mount = true;
        c->rel = c->path + strlen(c->mount.path);
        if (c->rel > c->path + strlen(c->path)) {
            c->rel = c->path + strlen(c->path);
        }
        struct builtin_find bf = {c, 0};
        (void)kms_api_engines_visit(c->api, builtin_cb, &bf);
        c->estate = c->engine ? c->engine->state : NULL;
        return bf.found;
    }
    if (kms_registry_mount_resolve(c->api, c->ns.id, c->path, &c->mount) != 0) {
        return 0;
    }
    c->engine = kms_api_engine_find(c->api, c->mount.type);
    if (c->engine == NULL) {
        return 0;
    }
    *have_mount = true;
    c->estate = c->engine->state;
    c->rel = c->path + strlen(c->mount.path);
    return find_route(c, c->engine->routes);
}

int kms_json_error_len(const json_error_t *jerr)
{
    const char *near = strstr(jerr->text, " near ");
    if (near == NULL || strncmp(jerr->text, "duplicate object key", 20) == 0) {
        return (int)strlen(jerr->text);
    }
    return (int)(near - jerr->text);
}

/*
 * jansson's message for a body that does not parse, without its " near '<text>'" tail (a
 * JWT, a token or a plaintext must never be in an error answer): the position says where
 * instead; a duplicate key's message stands alone.
 */
static void json_error_brief(const json_error_t *jerr, char *out, size_t n)
{
    if (strncmp(jerr->text, "duplicate object key", 20) == 0) {
        snprintf(out, n, "%s", jerr->text);
        return;
    }
    if (strstr(jerr->text, "JSON_ALLOW_NUL") != NULL) {
        /* jansson's words name its own flag: say what is refused instead */
        snprintf(out, n, "a string holds \\u0000, which kmsd refuses, at line %d, column %d",
                 jerr->line, jerr->column);
        return;
    }
    snprintf(out, n, "%.*s at line %d, column %d", kms_json_error_len(jerr), jerr->text, jerr->line,
             jerr->column);
}

/* Body -> c->params; GET/DELETE/LIST take the query string. */
static int parse_params(struct kms_ctx *c, const char *query)
{
    const struct kms_http_req *req = c->http;
    const struct kms_api_limits *lim = kms_api_limits(c->api);

    c->params = json_object();
    if (c->params == NULL) {
        return KMS_FAILW(c, 500, "out of memory");
    }
    if (c->op == KMS_OP_READ || c->op == KMS_OP_LIST || c->op == KMS_OP_DELETE) {
        int qrc = query != NULL ? parse_urlencoded(query, strlen(query), c->params, false) : 0;
        if (qrc != 0) {
            return KMS_FAIL(c, 400, "failed to parse query string%s",
                            qrc == -2 ? ": not valid UTF-8" : "");
        }
        json_object_del(c->params, "list");
        json_object_del(c->params, "help"); /* an empty help=, which OpenBao skips too */
        return 0;
    }
    if (req->body_len > lim->max_request_size) {
        return KMS_FAIL(c, 413, "failed to decode JSON input: http: request body too large");
    }
    size_t i = 0;
    while (i < req->body_len && isspace(req->body[i])) {
        i++;
    }
    if (i == req->body_len) {
        return 0;
    }
    const char *ctype = header(req, "Content-Type");
    if (ctype != NULL && strncasecmp(ctype, "application/x-www-form-urlencoded", 33) == 0 &&
        req->body[i] != '{' && req->body[i] != '[') {
        /* Go's url.ParseQuery refuses a ';' (a separator some parsers take and others do not):
         * OpenBao answers "error parsing form data" */
        if (memchr(req->body, ';', req->body_len) != NULL) {
            return KMS_FAIL(c, 400, "error parsing form data");
        }
        /* its keys and values count against the JSON body's limit (two strings a pair): a
         * 26 MB body of distinct keys made 3 million of them, 240 MB, before the token check */
        size_t strings = 2;
        for (const uint8_t *a = req->body, *end = req->body + req->body_len;
             (a = memchr(a, '&', (size_t)(end - a))) != NULL; a++) {
            if ((strings += 2) > lim->max_json_strings) {
                return KMS_FAIL(c, 400,
                                "refused JSON input due to high complexity: exceeded maximum "
                                "number of strings");
            }
        }
        int frc = parse_urlencoded((const char *)req->body, req->body_len, c->params, true);
        if (frc != 0) {
            return KMS_FAIL(c, 400, "failed to parse form body%s",
                            frc == -2 ? ": not valid UTF-8" : "");
        }
        return 0;
    }
    if (kms_json_precheck(req->body, req->body_len, lim, &c->err) != 0) {
        return -1;
    }
    json_error_t jerr;
    json_t *body = kms_json_body_load(req->body, req->body_len, &jerr);
    if (body == NULL) {
        char brief[sizeof(jerr.text) + 48];
        json_error_brief(&jerr, brief, sizeof(brief));
        return KMS_FAIL(c, 400, "failed to decode JSON input: %s", brief);
    }
    if (json_is_null(body)) {
        json_decref(body);
        return 0;
    }
    if (!json_is_object(body)) {
        const char *what = json_is_array(body)    ? "array"
                           : json_is_string(body) ? "string"
                           : json_is_number(body) ? "number"
                                                  : "bool";
        json_decref(body);
        return KMS_FAIL(c, 400,
                        "failed to decode JSON input: json: cannot unmarshal %s into Go value of "
                        "type map[string]interface {}",
                        what);
    }
    json_decref(c->params);
    c->params = body;
    return 0;
}

/* Drop body field `name`, which a path capture replaces; a value given (OpenBao: raw[k] != nil)
 * is named in `list` (the warning's, o bytes used so far). */
static void drop_captured(struct kms_ctx *c, const char *name, char *list, size_t cap, size_t *o)
{
    const json_t *had = json_object_get(c->params, name);
    if (had != NULL && !json_is_null(had) && *o < cap) {
        *o += (size_t)snprintf(list + *o, cap - *o, "%s%s", *o ? " " : "", name);
    }
    json_object_del(c->params, name);
}

/* Captured path values replace body fields of the same name (with Vault's warning), and so
 * do the optional captures the row leaves out (kms_route.absent_caps). */
static void apply_captures(struct kms_ctx *c)
{
    char list[512] = "", name[64];
    size_t o = 0;
    for (size_t i = 0; i < c->ncap; i++) {
        cap_name(c->cap_names[i], name, sizeof(name));
        drop_captured(c, name, list, sizeof(list), &o);
    }
    for (const char *a = c->route->absent_caps; a != NULL && *a != '\0';) {
        size_t n = strcspn(a, " ");
        snprintf(name, sizeof(name), "%.*s", (int)n, a);
        drop_captured(c, name, list, sizeof(list), &o);
        a += n + (a[n] == ' ');
    }
    if (o > 0) {
        kms_warn(c,
                 "Endpoint replaced the value of these parameters with the values captured from "
                 "the endpoint's path: [%s]",
                 list);
    }
}

const char *kms_request_token(const struct kms_http_req *req)
{
    const char *t = header(req, "X-Vault-Token");
    if (t != NULL && t[0] != '\0') {
        return t;
    }
    const char *a = header(req, "Authorization");
    if (a != NULL && strncmp(a, "Bearer ", 7) == 0) {
        a += 7;
        while (*a == ' ' || *a == '\t') {
            a++;
        }
        return a[0] != '\0' ? a : NULL;
    }
    return NULL;
}

/* Canonical namespace from the header: trim slashes, "root" = "", add trailing '/'. */
static int header_namespace(const char *h, char *out, size_t cap)
{
    while (*h == '/' || *h == ' ') {
        h++;
    }
    size_t n = strlen(h);
    while (n > 0 && (h[n - 1] == '/' || h[n - 1] == ' ')) {
        n--;
    }
    if (n == 0 || (n == 4 && strncmp(h, "root", 4) == 0)) {
        out[0] = '\0';
        return 0;
    }
    if (n + 2 > cap) {
        return -1;
    }
    memcpy(out, h, n);
    out[n] = '/';
    out[n + 1] = '\0';
    return 0;
}

static int token_ns_path(struct kms_ctx *c, char *out, size_t cap)
{
    struct kms_ns tns;
    if (kms_registry_ns_by_id(c->api, c->token.ns_id, &tns) != 0) {
        return -1;
    }
    return kms_str_join(out, cap, tns.path, "") ? 0 : -1;
}

/* Whether the parsed query asks for path help as Go's Query().Get("help") != "" does: the first
 * value of the key "help" is not empty. */
/* A query parameter's first value (repeated ones arrive as an array), "" when none. */
static const char *first_value(const json_t *v)
{
    if (json_is_array(v)) {
        v = json_array_get(v, 0);
    }
    return json_is_string(v) ? json_string_value(v) : "";
}

static bool asks_for_help(const json_t *qp)
{
    return first_value(json_object_get(qp, "help"))[0] != '\0';
}

/* The method (and for a read, the query's list= and scan=) -> c->op; the HELP method or a
 * query asking for help is refused. qp is the parsed query, or NULL. */

static int request_op(struct kms_ctx *c, const json_t *qp, bool *head)
{
    if (strcmp(c->http->method, "HELP") == 0 || (qp != NULL && asks_for_help(qp))) {
        /* OpenBao answers the path's help text and runs nothing; kmsd has no help texts, and
         * running the request instead would rotate or delete where help was asked for */
        return KMS_FAIL(c, 400,
                        "path help (help=1, the HELP method) is not supported by kmsd; nothing "
                        "was run (docs/api.md lists every endpoint and its parameters)");
    }
    if (method_to_op(c->http->method, &c->op, head) != 0) {
        c->err.status = 405;
        c->err.msg[0] = '\0';
        return -1;
    }
    if (c->op != KMS_OP_READ || qp == NULL) {
        return 0;
    }
    /* Go's queryVals.Get: the first of repeated values, "" when absent */
    bool list = false, scan = false;
    const char *l = first_value(json_object_get(qp, "list"));
    const char *sc = first_value(json_object_get(qp, "scan"));
    if ((l[0] != '\0' && !kms_parse_go_bool(l, &list)) ||
        (sc[0] != '\0' && !kms_parse_go_bool(sc, &scan)) || (list && scan)) {
        c->err.status = 400;
        c->err.msg[0] = '\0';
        return -1;
    }
    if (scan) {
        /* OpenBao's scan operation: no route of kmsd (nor of Transit) serves one */
        c->err.status = 405;
        c->err.msg[0] = '\0';
        return -1;
    }
    if (list) {
        c->op = KMS_OP_LIST;
    }
    return 0;
}

/* Step 1: target and method -> c->op, the decoded path after /v1/ (target), the query. */
static int parse_request_line(struct kms_ctx *c, char *target, size_t cap, const char **query,
                              size_t *plenp, bool *head)
{
    const struct kms_http_req *req = c->http;
    const char *q = *query = strchr(req->target, '?');
    size_t plen = *plenp = q ? (size_t)(q - req->target) : strlen(req->target);
    if (plen < 4 || strncmp(req->target, "/v1/", 4) != 0) {
        return kms_fail_notfound(c);
    }
    if (pct_decode(req->target + 4, plen - 4, target, cap, false) != 0) {
        return KMS_FAIL(c, 400, "invalid request path");
    }
    if (!kms_utf8_valid(target, strlen(target))) {
        /* names, errors and the audit record are JSON text: refused before anything runs */
        return KMS_FAIL(c, 400, "invalid request path: not valid UTF-8");
    }
    /* the query, parsed once here for help and list= (one that does not parse is left to the
     * parameter step, which refuses it) */
    json_t *qp = NULL;
    if (q != NULL) {
        qp = json_object();
        if (qp != NULL && parse_urlencoded(q + 1, strlen(q + 1), qp, false) != 0) {
            json_decref(qp);
            qp = NULL;
        }
    }
    int rc = request_op(c, qp, head);
    json_decref(qp);
    if (rc != 0) {
        return -1;
    }
    if (c->op == KMS_OP_PATCH) {
        const char *ct = header(req, "Content-Type");
        if (ct == NULL || strncasecmp(ct, "application/merge-patch+json", 28) != 0) {
            return KMS_FAIL(c, 415, "PATCH requires Content-Type application/merge-patch+json");
        }
    }
    /* the decoded path, as OpenBao's req.Path: "keys/k%2F" ends in '/' too */
    size_t tlen = strlen(target);
    if ((c->op == KMS_OP_UPDATE || c->op == KMS_OP_PATCH) && tlen > 0 && target[tlen - 1] == '/') {
        return KMS_FAIL(c, 400, "cannot write to a path ending in '/'");
    }

    return 0;
}

/* Step 2: the namespace (header + longest path prefix) and c->path relative to it. */
/*
 * An X-Vault-Namespace that names no namespace. Only a caller with a valid token learns that
 * (404); anyone else gets the 403 every unauthenticated request gets, so namespace names
 * cannot be enumerated without a token (OpenBao answers 404 before the token check).
 */
/*
 * A namespace header naming no namespace: 404 to a token of the namespace it would be in or
 * above (its own organization's missing team, anything for a root token); 403 to everyone
 * else, so that a workload of one organization cannot tell which other organizations exist.
 */
static int unknown_namespace(struct kms_ctx *c, const char *wanted)
{
    const char *tok = kms_request_token(c->http);
    struct kms_token t;
    if (tok == NULL || kms_auth_token_lookup(kms_api_auth(c->api), tok, &t) != 0) {
        return KMS_FAIL(c, 403, "permission denied"); /* as for any path without a token */
    }
    struct kms_ns tns;
    bool below = kms_registry_ns_by_id(c->api, t.ns_id, &tns) == 0 &&
                 strncmp(wanted, tns.path, strlen(tns.path)) == 0;
    kms_memzero(&t, sizeof(t));
    if (below) {
        return KMS_FAIL(c, 404, "namespace not found");
    }
    /* the answer the ACL gives in a namespace that exists, word for word */
    return KMS_FAILW(c, 403, "permission denied");
}

static int resolve_namespace(struct kms_ctx *c, struct kms_http_resp *resp, const char *target)
{
    const struct kms_http_req *req = c->http;
    char full[KMS_PATH_MAX * 2];
    char hns[KMS_PATH_MAX];
    hns[0] = '\0';
    const char *hdr = header(req, "X-Vault-Namespace");
    if (hdr != NULL) {
        struct kms_ns hn;
        if (header_namespace(hdr, hns, sizeof(hns)) != 0) {
            return unknown_namespace(c, ""); /* too long: as if under the root */
        }
        if (kms_registry_ns_get(c->api, hns, &hn) != 0) {
            return unknown_namespace(c, hns);
        }
        snprintf(resp->extra[resp->nextra].name, sizeof(resp->extra[0].name), "%s",
                 "X-Vault-Namespace");
        snprintf(resp->extra[resp->nextra].value, sizeof(resp->extra[0].value), "%s", hdr);
        resp->nextra++;
    }
    if (!kms_str_join(full, sizeof(full), hns, target)) {
        return KMS_FAIL(c, 400, "request path too long");
    }
    size_t consumed = 0;
    if (kms_registry_ns_resolve(c->api, full, &c->ns, &consumed) != 0) {
        return KMS_FAILW(c, 500, "cannot resolve namespace");
    }
    size_t flen = strlen(full);
    if (flen == 0) {
        return kms_fail_notfound(c);
    }
    if (!kms_str_join(c->path, sizeof(c->path), full + consumed,
                      c->op == KMS_OP_LIST && full[flen - 1] != '/' ? "/" : "")) {
        return KMS_FAIL(c, 400, "request path too long");
    }

    return 0;
}

/* Steps 5-6: token (+ rate limit and CIDR binding), existence check, policy check. */
static int check_token_and_policy(struct kms_ctx *c, struct kms_http_resp *resp, int found)
{
    const struct kms_http_req *req = c->http;
    {
        const char *tok = kms_request_token(req);
        int lr = tok ? kms_auth_token_lookup(kms_api_auth(c->api), tok, &c->token) : 1;
        if (lr < 0) {
            return KMS_FAILW(c, 500, "internal error");
        }
        if (lr != 0) {
            return KMS_FAIL(c, 403, "permission denied");
        }
        c->has_token = true;
        struct kms_ratelimit *rl = kms_api_ratelimit(c->api);
        int retry = 0;
        if (rl != NULL && !kms_ratelimit_take(rl, c->token.accessor, &retry)) {
            snprintf(resp->extra[resp->nextra].name, sizeof(resp->extra[0].name), "Retry-After");
            snprintf(resp->extra[resp->nextra].value, sizeof(resp->extra[0].value), "%d", retry);
            resp->nextra++;
            return KMS_FAIL(c, 429, "rate limit quota exceeded");
        }
        char tns[KMS_PATH_MAX];
        if (token_ns_path(c, tns, sizeof(tns)) != 0 ||
            !kms_auth_token_cidr_ok(&c->token, req->remote_addr)) {
            return KMS_FAIL(c, 403, "permission denied");
        }
        if (found == 1 && c->op == KMS_OP_UPDATE && c->route->exists != NULL) {
            int ex = c->route->exists(c);
            if (ex < 0) {
                return KMS_FAILW(c, 500, "internal error");
            }
            if (ex == 0) {
                c->op = KMS_OP_CREATE;
            }
        }
        /* The ACL runs before routing: a non-root token gets 403 on a path that does not
         * exist, root gets the 404 below. Root-protected routes also need sudo. */
        struct kms_auth_req areq = {c->ns.path, tns, c->path, c->op,
                                    found == 1 && (c->route->flags & KMS_RT_SUDO) != 0};
        struct kms_acl_result ares;
        if (kms_auth_authorize(kms_api_auth(c->api), &c->token, &areq, &ares) != 0) {
            return KMS_FAILW(c, 500, "internal error");
        }
        bool allowed = ares.allowed;
        if (!allowed) {
            return KMS_FAILW(c, 403, "permission denied");
        }
    }

    return 0;
}

static int run(struct kms_ctx *c, struct kms_http_resp *resp)
{
    char target[KMS_PATH_MAX * 2];
    const char *q = NULL;
    size_t plen = 0;
    bool head = false;

    /* 1. request line */
    if (parse_request_line(c, target, sizeof(target), &q, &plen, &head) != 0) {
        return -1;
    }
    if (header(c->http, "X-Vault-Wrap-TTL") != NULL) {
        /* answering unwrapped would hand the secret to whoever holds the response */
        return KMS_FAIL(c, 400,
                        "response wrapping (X-Vault-Wrap-TTL) is not supported by kmsd; send "
                        "the request without it");
    }

    /* 2. namespace */
    if (resolve_namespace(c, resp, target) != 0) {
        return -1;
    }

    /* 3. parameters */
    if (parse_params(c, q ? q + 1 : NULL) != 0) {
        return -1;
    }

    /* 4. mount and route */
    bool have_mount = false;
    int found = resolve_route(c, &have_mount);
    if (found == 1 && (c->route->flags & KMS_RT_ROOT_NS) && strcmp(c->ns.id, "root") != 0) {
        /* server-wide endpoints (audit, metrics, health, init): never from a namespace */
        return KMS_FAIL(c, 400, "operation unavailable in namespaces");
    }
    if (found == 1 && head && (c->route->flags & KMS_RT_PUBLIC) == 0) {
        found = 2;
    }
    bool public_route = found == 1 && (c->route->flags & KMS_RT_PUBLIC);

    if (!public_route && !kms_api_initialized(c->api)) {
        return KMS_FAIL(c, 503, "Vault is sealed");
    }

    kms_api_audit_arm(c); /* audited from here on: refusals below get both audit lines */

    /* 5-6. token and policy, then the engine's own refusals (a project binding) */
    if (!public_route && check_token_and_policy(c, resp, found) != 0) {
        return -1;
    }
    if (!public_route && found == 1 && c->engine != NULL && c->engine->authorize != NULL &&
        c->engine->authorize(c) != 0) {
        return -1;
    }

    /* 6b. audit request line; fail closed: without it nothing below runs */
    c->park.head = head;
    c->park.found = found;
    c->park.have_mount = have_mount;
    return kms_api_audit_request(c);
}

/* Steps 7-9, once the request line is recorded (durable first when it may change state). */
/* The warnings added since the first `from` (NULL: none), taken off c's list. */
static json_t *take_warnings(struct kms_ctx *c, size_t from)
{
    size_t n = json_array_size(c->warnings);
    if (n <= from) {
        return NULL;
    }
    json_t *taken = json_array();
    for (size_t i = from; i < n; i++) {
        json_array_append(taken, json_array_get(c->warnings, i));
    }
    while (json_array_size(c->warnings) > from) {
        json_array_remove(c->warnings, from);
    }
    return taken;
}

/* Append taken warnings to c's list again (and drop the list). */
static void give_warnings(struct kms_ctx *c, json_t *taken)
{
    size_t i;
    json_t *w;
    json_array_foreach(taken, i, w)
    {
        kms_warn(c, "%s", json_string_value(w));
    }
    json_decref(taken);
}

static int run_handler(struct kms_ctx *c)
{
    bool have_mount = c->park.have_mount;
    int found = c->park.found;

    /* 7. routing failures */
    if (!have_mount) {
        return KMS_FAIL(c, 404, "no handler for route \"%s\". route entry not found.", c->path);
    }
    if (found == 0) {
        return KMS_FAILW(c, 404, "unsupported path");
    }
    if (found == 2) {
        return KMS_FAILW(c, 405, "unsupported operation");
    }

    /* 8. fields; their warnings go after the handler's, "ignored" before "replaced", as
     * OpenBao's framework adds them to the handler's response */
    json_t *replaced = NULL, *ignored = NULL;
    size_t nw = json_array_size(c->warnings);
    apply_captures(c);
    replaced = take_warnings(c, nw);
    if (kms_params_apply_fields(c) != 0) {
        json_decref(replaced);
        return -1;
    }
    ignored = take_warnings(c, nw);

    /* 9. handler: the row's operation (an update of an absent resource runs as create) */
    kms_handler_fn fn = c->route->on[c->op].fn;
    if (fn == NULL && c->op == KMS_OP_UPDATE) {
        fn = c->route->on[KMS_OP_CREATE].fn;
    }
    int rc = fn(c);
    give_warnings(c, ignored);
    give_warnings(c, replaced);
    if (c->park.head) {
        json_decref(c->data);
        c->data = NULL;
        free(c->data_json);
        c->data_json = NULL;
        free(c->batch_results);
        c->batch_results = NULL;
        c->nbatch_results = 0;
        c->single_result = false;
    }
    return rc;
}

/*
 * Request contexts are reused: each thread keeps a short free list of them, so a request pays
 * neither a 13 KB calloc nor a 13 KB wipe. ctx_reset clears every field a request may read
 * before writing it; the large text arrays (captures, paths, the token's policies and
 * metadata) are cleared only as far as their lengths and first bytes, which is all anything
 * reads of them, so nothing of the previous request is reachable (its token's accessor,
 * policies and metadata counts are zero, its strings empty).
 */
#define CTX_FREE_MAX 4

struct ctx_pool {
    struct kms_ctx *free[CTX_FREE_MAX];
    size_t n;
};

static pthread_key_t pool_key;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

static void pool_free(void *p)
{
    struct ctx_pool *pool = p;
    for (size_t i = 0; i < pool->n; i++) {
        free(pool->free[i]);
    }
    free(pool);
}

static void pool_init(void)
{
    (void)pthread_key_create(&pool_key, pool_free);
}

static void token_reset(struct kms_token *t)
{
    memset(t, 0, offsetof(struct kms_token, policies));
    t->nmeta = 0;
    memset(&t->creation_time, 0,
           offsetof(struct kms_token, cidrs) - offsetof(struct kms_token, creation_time));
    memset(t->hash, 0, sizeof(t->hash));
}

static void ctx_reset(struct kms_ctx *c)
{
    memset(c, 0, offsetof(struct kms_ctx, ns));
    c->ns.id[0] = '\0';
    c->ns.path[0] = '\0';
    c->ns.created = 0;
    memset(c->mount.ns_id, 0, sizeof(c->mount.ns_id));
    c->mount.path[0] = '\0';
    memset(c->mount.type, 0, sizeof(c->mount.type));
    memset(c->mount.uuid, 0, sizeof(c->mount.uuid));
    memset(c->mount.accessor, 0, sizeof(c->mount.accessor));
    c->mount.description[0] = '\0';
    c->mount.created = 0;
    c->path[0] = '\0';
    memset(&c->rel, 0, offsetof(struct kms_ctx, cap_values) - offsetof(struct kms_ctx, rel));
    for (size_t i = 0; i < KMS_MAX_CAPTURES; i++) {
        c->cap_values[i][0] = '\0';
    }
    c->has_token = false;
    token_reset(&c->token);
    memset(&c->params, 0, sizeof(*c) - offsetof(struct kms_ctx, params));
}

static struct kms_ctx *ctx_take(void)
{
    pthread_once(&pool_once, pool_init);
    struct ctx_pool *pool = pthread_getspecific(pool_key);
    struct kms_ctx *c;
    if (pool != NULL && pool->n > 0) {
        c = pool->free[--pool->n];
    } else {
        c = malloc(sizeof(*c));
    }
    if (c != NULL) {
        ctx_reset(c);
    }
    return c;
}

static void ctx_give(struct kms_ctx *c)
{
    struct ctx_pool *pool = pthread_getspecific(pool_key);
    if (pool == NULL) {
        pool = calloc(1, sizeof(*pool));
        if (pool != NULL && pthread_setspecific(pool_key, pool) != 0) {
            free(pool);
            pool = NULL;
        }
    }
    if (pool != NULL && pool->n < CTX_FREE_MAX) {
        pool->free[pool->n++] = c;
    } else {
        free(c);
    }
}

int64_t kms_api_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The request is done: render, count, release the context. */
static void finish(struct kms_ctx *c, int rc, struct kms_http_resp *resp)
{
    kms_render(c, rc, resp);
    if (resp->status == 500) {
        /* before routing there is only the target: logged without its query, which may hold
         * a token (auth/token/lookup?token=) */
        char bare[KMS_PATH_MAX];
        const char *where = c->path;
        if (where[0] == '\0') {
            snprintf(bare, sizeof(bare), "%.*s", (int)strcspn(c->http->target, "?"),
                     c->http->target);
            where = bare;
        }
        kms_api_log_failure(c->api, where, c->err.msg);
    }
    kms_metrics_request(c->route, c->mount.type, resp->status,
                        (uint64_t)(kms_api_mono_us() - c->park.t0_us), c->items);
    free(c->text);
    free(c->data_json);
    c->data_json = NULL;
    /* an offloaded request's own copy (c->http): its token and plaintexts are wiped, as the
     * parser's buffers are */
    kms_free_wipe((void **)&c->park.req_copy, c->park.req_copy_len);
    if (c->park.on_end != NULL) {
        c->park.on_end(c->park.on_end_arg, c->park.on_end_n);
        c->park.on_end = NULL;
    }
    free(c->batch_results);
    json_decref(c->params);
    json_decref(c->warnings);
    json_decref(c->data);
    json_decref(c->raw);
    json_decref(c->auth);
    /* the context holds no key material or token (only its accessor and policies); plaintexts
     * live in jansson values, which kmsd wipes when freed (json_set_alloc_funcs in main.c) */
    ctx_give(c);
}

/* Hold the request until its audit lines are finished: 1 when parked (resp saved). */
static int park(struct kms_ctx *c, int phase, int rc, struct kms_http_resp *resp)
{
    if (c->park.wake == NULL ||
        kms_audit_rec_notify(c->audit.rec, c->park.wake, c->park.wake_arg) != 1) {
        return 0;
    }
    c->park.phase = phase;
    c->park.rc = rc;
    c->park.resp = *resp;
    return 1;
}

/* From the response line on: 0 when resp is complete, 1 when parked. */
static int after_handler(struct kms_ctx *c, int rc, struct kms_http_resp *resp)
{
    rc = kms_api_audit_response(c, rc); /* no result leaves without its audit line */
    if (kms_api_audit_pending(c)) {
        if (park(c, 2, rc, resp) == 1) {
            return 1;
        }
        if (c->park.wake == NULL && kms_api_audit_wait(c) != 0) {
            rc = kms_api_audit_abandon(c); /* timed out: the result is withheld */
        } else {
            rc = kms_api_audit_finish(c, rc);
        }
    }
    finish(c, rc, resp);
    return 0;
}

/*
 * Handlers that may run long run on the handler threads (crypto/pool.c), so that the worker's
 * event loop is not held: an RSA-4096 key generation takes seconds, and a 10,000-item batch
 * of RSA signatures a minute; meanwhile every other connection of that worker (sys/health, a
 * liveness probe among them) went unanswered. The request is parked in phase 3 while its
 * handler runs there; the thread wakes the worker when it is done, and the worker goes on
 * with the response line (kms_api_resume). A connection that goes away meanwhile abandons the
 * request: its handler thread then records the response line itself and ends it. The state
 * moves under offload_mu: running -> done (the worker is woken, and owns the request again)
 * or running -> abandoned (the thread owns it).
 */
enum { OFF_NONE, OFF_RUNNING, OFF_DONE, OFF_ABANDONED };

static pthread_mutex_t offload_mu = PTHREAD_MUTEX_INITIALIZER;

/* The handler may run long (a key generation, signatures, a big batch). */
static bool may_run_long(struct kms_ctx *c)
{
    if (c->route == NULL) {
        return false;
    }
    if ((c->route->flags & KMS_RT_SLOW) != 0 && c->op != KMS_OP_READ && c->op != KMS_OP_LIST) {
        return true;
    }
    size_t n = json_array_size(json_object_get(c->params, "batch_input")); /* 0: not an array */
    if (n > KMS_OFFLOAD_BATCH) {
        return true;
    }
    return n > KMS_OFFLOAD_SMALL_BATCH && c->engine != NULL && c->engine->slow != NULL &&
           c->engine->slow(c);
}

static bool goes_offload(struct kms_ctx *c)
{
    /* the blocking pipeline (kms_api_handle: HA replicas, on their own handler threads) runs
     * it where it is */
    return c->park.wake != NULL && may_run_long(c);
}

#ifdef KMS_TEST_HOOKS
/*
 * Test hook (KMS_TEST_HOOKS builds only): with KMS_TEST_HANDLER_HOOKS=<dir>, a handler that
 * may run long waits before it runs while <dir>/hold exists, and shows it by creating
 * <dir>/held (tests/integration/hooks_offload.py, hooks_ha.py).
 */
static void hook_hold(void)
{
    kms_test_hold_dir("KMS_TEST_HANDLER_HOOKS");
}
#else
static void hook_hold(void)
{
}
#endif

static int after_handler(struct kms_ctx *c, int rc, struct kms_http_resp *resp);

/*
 * The request as a handler thread sees it (api.h): its own copy (one block), because the connection
 * that owns the original may go away while the handler runs (its client closed it), and with
 * it the parser's buffers. NULL when out of memory.
 */
struct kms_http_req *kms_http_req_copy(const struct kms_http_req *r, size_t *size)
{
    size_t n = sizeof(*r) + r->nheaders * sizeof(struct kms_http_header) + r->body_len + 1;
    n += strlen(r->method) + 1 + strlen(r->target) + 1 +
         (r->remote_addr != NULL ? strlen(r->remote_addr) + 1 : 0);
    for (size_t i = 0; i < r->nheaders; i++) {
        n += strlen(r->headers[i].name) + 1 + strlen(r->headers[i].value) + 1;
    }
    struct kms_http_req *q = malloc(n);
    if (q == NULL) {
        return NULL;
    }
    *size = n;
    struct kms_http_header *h = (struct kms_http_header *)(q + 1);
    char *p = (char *)(h + r->nheaders);
#define KEEP(dst, src)                                                                             \
    do {                                                                                           \
        size_t len_ = strlen(src) + 1;                                                             \
        memcpy(p, (src), len_);                                                                    \
        (dst) = p;                                                                                 \
        p += len_;                                                                                 \
    } while (0)
    *q = *r;
    KEEP(q->method, r->method);
    KEEP(q->target, r->target);
    if (r->remote_addr != NULL) {
        KEEP(q->remote_addr, r->remote_addr);
    }
    for (size_t i = 0; i < r->nheaders; i++) {
        KEEP(h[i].name, r->headers[i].name);
        KEEP(h[i].value, r->headers[i].value);
    }
#undef KEEP
    q->headers = h;
    if (r->body_len > 0) {
        memcpy(p, r->body, r->body_len);
    }
    p[r->body_len] = '\0';
    q->body = (const uint8_t *)p;
    return q;
}

/* On a handler thread, for a request abandoned after its handler ran (its result in park.rc):
 * nobody waits for the answer, so its response line is recorded here, then it ends. */
static void offloaded_abandoned(void *arg)
{
    struct kms_ctx *c = arg;
    struct kms_http_resp resp = c->park.resp;
    c->park.wake = NULL;
    c->park.phase = 0;
    (void)after_handler(c, c->park.rc, &resp);
    kms_http_resp_dispose(&resp);
}

/* On a handler thread. */
static void offloaded(void *arg)
{
    struct kms_ctx *c = arg;
    hook_hold();
    int rc = run_handler(c);
    pthread_mutex_lock(&offload_mu);
    bool abandoned = c->park.offload == OFF_ABANDONED;
    if (!abandoned) {
        c->park.offload = OFF_DONE;
        c->park.rc = rc;
        c->park.wake(c->park.wake_arg); /* the worker owns c from here */
    }
    pthread_mutex_unlock(&offload_mu);
    if (abandoned) {
        c->park.rc = rc;
        offloaded_abandoned(c);
    }
}

/* From the request line's completion on: the handler, then the response line. */
static int after_request_line(struct kms_ctx *c, int rc, struct kms_http_resp *resp)
{
    struct kms_http_req *own = NULL;
    if (rc == 0 && goes_offload(c) &&
        (own = kms_http_req_copy(c->http, &c->park.req_copy_len)) != NULL) {
        c->http = own;
        c->park.req_copy = own;
        c->park.phase = 3;
        c->park.resp = *resp;
        c->park.offload = OFF_RUNNING;
        if (kms_pool_submit(kms_api_offload(c->api), offloaded, c) == 0) {
            return 1;
        }
        c->park.phase = 0; /* no thread to take it: run it here */
        c->park.offload = OFF_NONE;
    }
#ifdef KMS_TEST_HOOKS
    if (rc == 0 && c->park.wake == NULL && may_run_long(c)) {
        hook_hold(); /* as on a handler thread: tests hold a slow HA request the same way */
    }
#endif
    if (rc == 0) {
        rc = run_handler(c);
    }
    return after_handler(c, rc, resp);
}

int kms_api_start(struct kms_api *api, const struct kms_http_req *req, struct kms_http_resp *resp,
                  kms_api_wake_fn wake, void *arg, struct kms_api_call **call)
{
    struct kms_ctx *c = ctx_take();
    memset(resp, 0, sizeof(*resp));
    *call = NULL;
    if (c == NULL) {
        kms_api_error_response(500, "internal error", resp);
        return 0;
    }
    c->park.t0_us = kms_api_mono_us();
    c->park.wake = wake;
    c->park.wake_arg = arg;
    c->api = api;
    c->http = req;
    int rc = run(c, resp);
    if (rc == 0 && c->audit.wait_request) {
        /* the request may change state: its line is durable before the handler runs */
        if (park(c, 1, 0, resp) == 1) {
            *call = (struct kms_api_call *)c;
            return 1;
        }
        if (wake == NULL && kms_api_audit_wait(c) != 0) {
            rc = kms_api_audit_abandon(c);
        } else {
            rc = kms_api_audit_request_done(c);
        }
    }
    int parked = after_request_line(c, rc, resp);
    if (parked) {
        *call = (struct kms_api_call *)c;
    }
    return parked;
}

int kms_api_resume(struct kms_api_call *call, struct kms_http_resp *resp)
{
    struct kms_ctx *c = (struct kms_ctx *)call;
    int phase = c->park.phase;
    *resp = c->park.resp;
    c->park.phase = 0;
    if (phase == 1) {
        return after_request_line(c, kms_api_audit_request_done(c), resp);
    }
    if (phase == 3) {
        c->park.offload = OFF_NONE; /* done: woken by its handler thread */
        return after_handler(c, c->park.rc, resp);
    }
    finish(c, kms_api_audit_finish(c, c->park.rc), resp);
    return 0;
}

void kms_api_on_end(struct kms_api_call *call, void (*fn)(void *arg, size_t n), void *arg, size_t n)
{
    struct kms_ctx *c = (struct kms_ctx *)call;
    /* written before kms_api_abandon takes offload_mu: the handler thread that ends the call
     * reads them after it saw the abandonment under that lock */
    c->park.on_end = fn;
    c->park.on_end_arg = arg;
    c->park.on_end_n = n;
}

void kms_api_abandon(struct kms_api_call *call, struct kms_http_resp *resp)
{
    struct kms_ctx *c = (struct kms_ctx *)call;
    struct kms_http_resp dummy;
    if (c->park.phase == 3) {
        /* its handler runs, or has run, on a handler thread, which ends the request */
        pthread_mutex_lock(&offload_mu);
        bool running = c->park.offload == OFF_RUNNING;
        c->park.offload = OFF_ABANDONED;
        pthread_mutex_unlock(&offload_mu);
        if (!running && kms_pool_submit(kms_api_offload(c->api), offloaded_abandoned, c) != 0) {
            offloaded_abandoned(c); /* stopping: the response line waits here */
        }
        if (resp != NULL) {
            memset(resp, 0, sizeof(*resp));
            kms_api_error_response(500, "internal error", resp);
        }
        return;
    }
    if (resp == NULL) {
        resp = &dummy;
    }
    *resp = c->park.resp;
    finish(c, kms_api_audit_abandon(c), resp);
    if (resp == &dummy) {
        kms_http_resp_dispose(&dummy);
    }
}

bool kms_api_settle(struct kms_api_call *call)
{
    struct kms_ctx *c = (struct kms_ctx *)call;
    return c->audit.rec != NULL && kms_audit_rec_settle(c->audit.rec);
}

bool kms_api_handled(const struct kms_api_call *call)
{
    const struct kms_ctx *c = (const struct kms_ctx *)call;
    return c->park.phase == 2 || c->park.phase == 3;
}

bool kms_api_running(const struct kms_api_call *call)
{
    const struct kms_ctx *c = (const struct kms_ctx *)call;
    return c->park.phase == 3;
}

int64_t kms_api_audit_timeout_ms(struct kms_api *api)
{
    return kms_audit_timeout_ms(kms_api_audit(api));
}

bool kms_api_may_run_long(struct kms_api *api, const struct kms_http_req *req)
{
    if (req->body_len > KMS_LONG_BODY) {
        return true; /* a batch of more than a few items, an import, a restore */
    }
    struct kms_ctx *c = ctx_take();
    if (c == NULL) {
        return true;
    }
    c->api = api;
    c->http = req;
    char target[KMS_PATH_MAX * 2];
    const char *q = NULL;
    size_t plen = 0;
    bool head = false, have_mount = false, slow = false;
    struct kms_http_resp scratch;
    memset(&scratch, 0, sizeof(scratch));
    if (parse_request_line(c, target, sizeof(target), &q, &plen, &head) == 0 &&
        resolve_namespace(c, &scratch, target) == 0 && resolve_route(c, &have_mount) == 1) {
        slow = may_run_long(c); /* no parameters parsed: by its route alone */
    }
    ctx_give(c);
    return slow;
}

void kms_api_handle(struct kms_api *api, const struct kms_http_req *req, struct kms_http_resp *resp)
{
    struct kms_api_call *call = NULL;
    int parked = kms_api_start(api, req, resp, NULL, NULL, &call);
    (void)parked; /* without a wake function the pipeline waits instead of parking */
}

void kms_api_malloc_tune(void)
{
    /* buffers under 1 MiB come from the arenas, and an arena keeps up to 4 MiB of free top
     * before giving pages back (kmsd's audit writer trims everything once idle) */
    (void)mallopt(M_MMAP_THRESHOLD, 1 << 20);
    (void)mallopt(M_TRIM_THRESHOLD, 4 << 20);
}
