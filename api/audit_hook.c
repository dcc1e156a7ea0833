/*
 * audit_hook.c - the API's side of the audit log: Vault's auth/request/response blocks and
 * kmsd's own fields, built from a request context and handed to audit/ (which HMACs the
 * secrets and makes the line durable).
 *
 * Where it runs (dispatch.c): arm() before the token check; request() after the policy check,
 * before routing failures and the handler; response() once the pipeline is done. A request
 * refused at the token or policy step gets both lines at the end, with the error and
 * policy_results.allowed=false on each (Vault's layout). Requests that fail before the token
 * step (bad request line, unknown namespace, unparsable body, sealed) and routes flagged
 * KMS_RT_NO_AUDIT are not audited, as in Vault.
 *
 * Fail-closed: a request line that no device records stops the request with 500 before any
 * handler runs; a response line that no device records replaces the result with 500, so an
 * answer never leaves without its record. Lines are queued here and written by the audit
 * writers; dispatch.c waits for them (or parks the request) between the steps.
 *
 * kmsd fields, in clear (nothing secret goes there): subject, op, resource, key, key_version
 * (a number, or for batches every version touched as an array), items (batch size), status
 * (response lines: the HTTP status sent). `op` and `resource` come from the table below by
 * route; a route it does not name gets Vault's operation name.
 */
#include "api/api_int.h"
#include "audit/audit.h"
#include "crypto/crypto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The row's entry for the operation the request runs as (an update of an absent resource
 * runs as create). */
static const struct kms_route_op *route_op(const struct kms_ctx *c)
{
    if (c->route == NULL) {
        return NULL;
    }
    const struct kms_route_op *o = &c->route->on[c->op];
    if (o->fn == NULL && c->op == KMS_OP_UPDATE) {
        o = &c->route->on[KMS_OP_CREATE];
    }
    return o->fn != NULL ? o : NULL;
}

/*
 * Whether the request cannot change state, so its request line only has to reach the file
 * before the handler runs (its durable response line follows before anything is released).
 * A request that may change state waits for its request line to be durable first, so a crash
 * can never leave an effect without a record of the request.
 */
static bool without_effects(const struct kms_ctx *c)
{
    const struct kms_route_op *o = route_op(c);
    if (c->op == KMS_OP_READ || c->op == KMS_OP_LIST) {
        return o == NULL || o->effect != KMS_EFFECT_READ_WRITES;
    }
    return o != NULL && o->effect == KMS_EFFECT_PURE && c->op != KMS_OP_CREATE;
}

/* The audit names of the request: the handler's override, else the route row's, else the
 * engine's resource and Vault's operation name. */
static void op_and_resource(const struct kms_ctx *c, const char **op, const char **resource)
{
    const struct kms_route_op *o = route_op(c);
    *op = o != NULL ? o->audit_op : NULL;
    if (o != NULL && c->route->audit_op_of != NULL) {
        const char *named = c->route->audit_op_of(c);
        *op = named != NULL ? named : *op;
    }
    *resource = c->route != NULL ? c->route->resource : NULL;
    if (*resource == NULL && c->engine != NULL) {
        *resource = c->engine->resource;
    }
    if (c->audit.op != NULL) {
        *op = c->audit.op;
    }
    if (c->audit.resource != NULL) {
        *resource = c->audit.resource;
    }
    if (*op == NULL) {
        *op = kms_op_name(c->op);
    }
}

static void write_str_array(struct kms_audit_lw *w, const char *key,
                            const char (*v)[KMS_POLICY_NAME_MAX], size_t n)
{
    kms_audit_lw_begin(w, key, '[');
    for (size_t i = 0; i < n; i++) {
        kms_audit_lw_str(w, NULL, v[i]);
    }
    kms_audit_lw_end(w);
}

static bool utf8(const char *s)
{
    return kms_utf8_valid(s, strlen(s));
}

/* The token's metadata as jansson's object held it: a key at its first accepted position
 * with its last accepted value (a key or value that is not UTF-8 was never set). */
static void write_metadata(struct kms_audit_lw *w, const struct kms_token *t)
{
    kms_audit_lw_begin(w, "metadata", '{');
    for (size_t i = 0; i < t->nmeta; i++) {
        const char *k = t->meta_keys[i];
        bool seen = false;
        if (!utf8(k) || !utf8(t->meta_values[i])) {
            continue;
        }
        for (size_t j = 0; j < i && !seen; j++) {
            seen = strcmp(t->meta_keys[j], k) == 0 && utf8(t->meta_values[j]);
        }
        if (seen) {
            continue;
        }
        const char *v = t->meta_values[i];
        for (size_t j = i + 1; j < t->nmeta; j++) {
            if (strcmp(t->meta_keys[j], k) == 0 && utf8(t->meta_values[j])) {
                v = t->meta_values[j];
            }
        }
        kms_audit_lw_str(w, k, v);
    }
    kms_audit_lw_end(w);
}

/* Vault's auth block: the token (HMAC'd), its accessor, names, policies and times. */
static void write_auth(struct kms_audit_lw *w, const struct kms_ctx *c, bool allowed)
{
    const struct kms_token *t = &c->token;
    kms_audit_lw_begin(w, "auth", '{');
    if (c->has_token) {
        kms_audit_lw_token(w, "client_token", kms_request_token(c->http));
        if (t->accessor[0] != '\0') {
            kms_audit_lw_accessor(w, "accessor", t->accessor);
        }
        kms_audit_lw_str(w, "display_name", t->display_name);
        write_str_array(w, "policies", t->policies, t->npolicies);
        write_str_array(w, "token_policies", t->policies, t->npolicies);
        if (t->nmeta > 0) {
            write_metadata(w, t);
        }
    }
    kms_audit_lw_begin(w, "policy_results", '{');
    kms_audit_lw_bool(w, "allowed", allowed);
    kms_audit_lw_end(w);
    if (c->has_token) {
        kms_audit_lw_str(w, "token_type", "service");
        if (t->expire_time > t->creation_time && t->creation_time > 0) {
            kms_audit_lw_int(w, "token_ttl", t->expire_time - t->creation_time);
        }
        if (t->creation_time > 0) {
            char ts[40];
            kms_time_rfc3339(t->creation_time, 0, ts);
            kms_audit_lw_str(w, "token_issue_time", ts);
        }
    } else {
        kms_audit_lw_str(w, "token_type", "default");
    }
    kms_audit_lw_end(w);
}

/* Vault's request block: id, operation, mount, token, namespace, path, data (every string
 * leaf HMAC'd), peer. */
/* Values (strings, numbers, ...) in v, counting up to stop. */
static size_t count_values(const json_t *v, size_t stop)
{
    size_t n = 0;
    if (json_is_object(v)) {
        const char *k;
        json_t *e;
        json_object_foreach((json_t *)v, k, e)
        {
            n += count_values(e, stop - n);
            if (n >= stop) {
                break;
            }
        }
        return n;
    }
    if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e)
        {
            n += count_values(e, stop - n);
            if (n >= stop) {
                break;
            }
        }
        return n;
    }
    return 1;
}

/*
 * The request data of a request no token vouches for (refused at the token or policy step, or
 * a route that needs none, such as a login) is recorded only when it holds at most
 * AUDIT_UNAUTH_MAX_VALUES values: each value becomes a ~77-byte HMAC in each of two lines, so
 * an anonymous body of many tiny strings would otherwise cost the log forty times its size.
 */
#define AUDIT_UNAUTH_MAX_VALUES 256

static void write_request(struct kms_audit_lw *w, const struct kms_ctx *c, bool allowed)
{
    kms_audit_lw_begin(w, "request", '{');
    kms_audit_lw_str(w, "id", c->audit.request_id);
    kms_audit_lw_str(w, "operation", kms_op_name(c->op));
    if (c->mount.path[0] != '\0') {
        kms_audit_lw_str(w, "mount_point", c->mount.path);
        kms_audit_lw_str(w, "mount_type", c->mount.type);
        if (c->mount.accessor[0] != '\0') {
            kms_audit_lw_str(w, "mount_accessor", c->mount.accessor);
        }
        kms_audit_lw_str(w, "mount_class",
                         strncmp(c->mount.path, "auth/", 5) == 0 ? "auth" : "secret");
    }
    kms_audit_lw_token(w, "client_token", kms_request_token(c->http));
    if (c->has_token && c->token.accessor[0] != '\0') {
        kms_audit_lw_accessor(w, "client_token_accessor", c->token.accessor);
    }
    kms_audit_lw_begin(w, "namespace", '{');
    kms_audit_lw_str(w, "id", c->ns.id[0] ? c->ns.id : "root");
    if (c->ns.path[0] != '\0') {
        kms_audit_lw_str(w, "path", c->ns.path);
    }
    kms_audit_lw_end(w);
    kms_audit_lw_str(w, "path", c->path);
    if (json_is_object(c->params) && json_object_size(c->params) > 0) {
        if ((allowed && c->has_token) ||
            count_values(c->params, AUDIT_UNAUTH_MAX_VALUES + 1) <= AUDIT_UNAUTH_MAX_VALUES) {
            kms_audit_lw_data(w, "data", c->params);
        } else {
            kms_audit_lw_str(w, "data_omitted",
                             "more than 256 values in a request no token allowed");
        }
    }
    if (c->http->remote_addr != NULL && c->http->remote_addr[0] != '\0') {
        kms_audit_lw_str(w, "remote_address", c->http->remote_addr);
        kms_audit_lw_int(w, "remote_port", c->http->remote_port);
    }
    kms_audit_lw_end(w);
}

struct blocks_arg {
    const struct kms_ctx *c;
    bool allowed;
};

/* `"auth":{…},"request":{…}`, once per device at the record's creation. */
static int write_blocks(struct kms_audit_lw *w, void *arg)
{
    const struct blocks_arg *a = arg;
    write_auth(w, a->c, a->allowed);
    write_request(w, a->c, a->allowed);
    return 0;
}

static const char *subject(const struct kms_ctx *c)
{
    if (c->audit.subject != NULL && c->audit.subject[0] != '\0') {
        return c->audit.subject;
    }
    if (c->has_token) {
        return c->token.subject[0] != '\0' ? c->token.subject : c->token.display_name;
    }
    const char *dn = json_string_value(json_object_get(c->auth, "display_name"));
    return dn != NULL && dn[0] != '\0' ? dn : NULL;
}

static size_t batch_items(const struct kms_ctx *c)
{
    if (c->items > 0) {
        return c->items;
    }
    json_t *b = json_object_get(c->params, "batch_input");
    return json_is_array(b) ? json_array_size(b) : 0;
}

/* KMSKey objects report their versions in status (kms.c records none itself). */
static void note_kms_versions(struct kms_ctx *c)
{
    const char *op, *resource;
    op_and_resource(c, &op, &resource);
    bool kmskey = resource != NULL && strcmp(resource, "KMSKey") == 0;
    if (kmskey && c->audit.nversions == 0 && strcmp(c->mount.type, "kms") == 0) {
        json_t *st = json_object_get(c->data, "status");
        json_t *v = json_object_get(st, strcmp(op, "set-min-decryption-version") == 0
                                            ? "minDecryptionVersion"
                                            : "currentVersion");
        if (json_is_integer(v) && json_integer_value(v) > 0) {
            kms_ctx_note_version(c, (uint32_t)json_integer_value(v));
        }
    }
}

/* kmsd's own fields, in clear: subject, op, resource, key, project, key_version, items,
 * status. */
static void write_extra(struct kms_audit_lw *w, const struct kms_ctx *c, bool response, int status)
{
    const char *op, *resource;
    op_and_resource(c, &op, &resource);
    kms_audit_lw_str(w, "subject", subject(c));
    kms_audit_lw_str(w, "op", op);
    kms_audit_lw_str(w, "resource", resource);
    bool kmskey = resource != NULL && strcmp(resource, "KMSKey") == 0;
    const char *key = kmskey ? kms_cap(c, "name") : NULL;
    const char *project = kmskey ? kms_cap(c, "project") : NULL;
    if (key != NULL && key[0] != '\0') {
        kms_audit_lw_str(w, "key", key);
    }
    if (project != NULL && project[0] != '\0') {
        kms_audit_lw_str(w, "project", project);
    }
    bool batch = json_is_array(json_object_get(c->params, "batch_input"));
    if (response && c->audit.nversions > 0) {
        if (batch || c->audit.nversions > 1) {
            kms_audit_lw_begin(w, "key_version", '[');
            for (size_t i = 0; i < c->audit.nversions; i++) {
                kms_audit_lw_int(w, NULL, c->audit.versions[i]);
            }
            kms_audit_lw_end(w);
        } else {
            kms_audit_lw_int(w, "key_version", c->audit.versions[0]);
        }
        if (c->audit.versions_truncated) {
            kms_audit_lw_bool(w, "key_version_truncated", true);
        }
    }
    if (batch) {
        kms_audit_lw_int(w, "items", (int64_t)batch_items(c));
    }
    if (response) {
        kms_audit_lw_int(w, "status", status);
    }
}

/* data {"batch_results":[…]} from the handler's values (no tree): the keys and the order the
 * tree had, every string HMAC'd as a string leaf of data, key_version in clear. */
static void write_batch_results(struct kms_audit_lw *w, const struct kms_ctx *c)
{
    kms_audit_lw_begin(w, "data", '{');
    kms_audit_lw_begin(w, "batch_results", '[');
    for (size_t i = 0; i < c->nbatch_results; i++) {
        const struct kms_batch_result *r = &c->batch_results[i];
        kms_audit_lw_begin(w, NULL, '{');
        if (r->ciphertext != NULL) {
            kms_audit_lw_data_str(w, "ciphertext", r->ciphertext, r->ciphertext_len);
            kms_audit_lw_int(w, "key_version", r->key_version);
        }
        if (r->ciphertext == NULL && r->error != NULL) {
            kms_audit_lw_data_str(w, "error", r->error, r->error_len);
        }
        kms_audit_lw_data_str(w, "reference", r->reference, r->reference_len);
        kms_audit_lw_end(w);
    }
    kms_audit_lw_end(w);
    kms_audit_lw_end(w);
}

/* data {"ciphertext":…,"key_version":N} of a single encrypt from its values (no tree), as the
 * tree json_pack("{s:s, s:i}") made is written: the ciphertext HMAC'd, the version in clear. */
static void write_single_result(struct kms_audit_lw *w, const struct kms_batch_result *r)
{
    kms_audit_lw_begin(w, "data", '{');
    kms_audit_lw_data_str(w, "ciphertext", r->ciphertext, r->ciphertext_len);
    kms_audit_lw_int(w, "key_version", r->key_version);
    kms_audit_lw_end(w);
}

/* Vault's response block: the mount, and for a success the data (every string leaf
 * HMAC'd), the issued token's auth block and the warnings. */
static void write_response(struct kms_audit_lw *w, const struct kms_ctx *c, int rc)
{
    kms_audit_lw_begin(w, "response", '{');
    if (c->mount.path[0] != '\0') {
        kms_audit_lw_str(w, "mount_point", c->mount.path);
        kms_audit_lw_str(w, "mount_type", c->mount.type);
        if (c->mount.accessor[0] != '\0') {
            kms_audit_lw_str(w, "mount_accessor", c->mount.accessor);
        }
    }
    if (rc == 0) {
        const json_t *data = c->data != NULL ? c->data : c->raw;
        if (c->audit.elide_data) {
            /* the data is not logged */
        } else if (c->batch_results != NULL && c->single_result) {
            write_single_result(w, &c->batch_results[0]);
        } else if (c->batch_results != NULL) {
            write_batch_results(w, c);
        } else if (data != NULL) {
            kms_audit_lw_data(w, "data", data);
        }
        kms_audit_lw_auth(w, "auth", c->auth);
        if (c->warnings != NULL && json_array_size(c->warnings) > 0) {
            kms_audit_lw_json(w, "warnings", c->warnings);
        }
    }
    kms_audit_lw_end(w);
}

/* What follows the blocks on one line. */
struct tail_arg {
    const struct kms_ctx *c;
    bool response;
    int rc;
    int status;
    const char *error; /* "" or NULL: none */
};

static int write_tail(struct kms_audit_lw *w, void *arg)
{
    const struct tail_arg *t = arg;
    if (t->response) {
        write_response(w, t->c, t->rc);
    }
    if (t->error != NULL && t->error[0] != '\0') {
        kms_audit_lw_str_strict(w, "error", t->error);
    }
    write_extra(w, t->c, t->response, t->status);
    return 0;
}

/* The error text the client sees (kms_render's rendering), or NULL. */
static void error_text(const struct kms_ctx *c, int rc, char *out, size_t n)
{
    out[0] = '\0';
    if (rc == 0 || c->err.msg[0] == '\0') {
        return;
    }
    if (c->err.wrapped) {
        snprintf(out, n, "1 error occurred:\n\t* %s\n\n", c->err.msg);
    } else {
        snprintf(out, n, "%s", c->err.msg);
    }
}

static int http_status(const struct kms_ctx *c, int rc)
{
    if (rc != 0) {
        return c->err.status ? c->err.status : 500;
    }
    if (c->raw != NULL || c->text != NULL) {
        return c->status ? c->status : 200;
    }
    if (kms_ctx_no_content(c)) {
        return 204;
    }
    return c->status ? c->status : 200;
}

void kms_ctx_note_version(struct kms_ctx *c, uint32_t v)
{
    struct kms_ctx_audit *a = &c->audit;
    size_t i = 0;
    while (i < a->nversions && a->versions[i] < v) {
        i++;
    }
    if (i < a->nversions && a->versions[i] == v) {
        return;
    }
    if (a->nversions == KMS_CTX_MAX_VERSIONS) {
        a->versions_truncated = true;
        return;
    }
    memmove(&a->versions[i + 1], &a->versions[i], (a->nversions - i) * sizeof(a->versions[0]));
    a->versions[i] = v;
    a->nversions++;
}

void kms_api_audit_arm(struct kms_ctx *c)
{
    struct kms_audit *au = kms_api_audit(c->api);
    c->audit.armed =
        kms_audit_ndevices(au) > 0 && !(c->route != NULL && (c->route->flags & KMS_RT_NO_AUDIT));
    if (c->audit.armed && kms_uuid4(c->audit.request_id) != 0) {
        c->audit.request_id[0] = '\0';
    }
}

/* Queue one line; on failure set c->err to 500 (audit/ logs the cause). */
static int post_line(struct kms_ctx *c, const char *type, bool durable, const struct tail_arg *t)
{
    struct kms_err err;
    kms_err_clear(&err);
    if (kms_audit_rec_post_w(c->audit.rec, type, durable, write_tail, (void *)t, &err, NULL, 0) !=
        0) {
        kms_err_clear(&c->err);
        kms_err_set(&c->err, 500, "internal error");
        return -1;
    }
    return 0;
}

static int start_rec(struct kms_ctx *c, bool allowed)
{
    struct blocks_arg b = {c, allowed};
    return kms_audit_rec_create_w(kms_api_audit(c->api), write_blocks, &b, &c->audit.rec);
}

/* The request ends here with c->err's 500: nothing more is written for it. */
static void disarm(struct kms_ctx *c)
{
    kms_audit_rec_destroy(&c->audit.rec);
    c->audit.armed = false;
    c->audit.wait_request = false;
}

int kms_api_audit_request(struct kms_ctx *c)
{
    if (!c->audit.armed) {
        return 0;
    }
    if (start_rec(c, true) != 0) {
        disarm(c);
        return KMS_FAIL(c, 500, "internal error");
    }
    struct tail_arg t = {c, false, 0, 0, NULL};
    /*
     * A request that may change state waits for its request line to be durable before the
     * handler runs. One without effects does not wait at all: its line is queued ahead of
     * its response line in the same file, and the response line's wait covers both (a failed
     * write fails every line queued behind it, and the record's status counts every line).
     */
    c->audit.wait_request = !without_effects(c);
    int rc = post_line(c, "request", c->audit.wait_request, &t);
    if (rc == 0) {
        c->audit.request_logged = true;
    } else {
        disarm(c);
    }
    return rc;
}

int kms_api_audit_request_done(struct kms_ctx *c)
{
    struct kms_err err;
    c->audit.wait_request = false;
    if (c->audit.rec == NULL || kms_audit_rec_status(c->audit.rec, &err, NULL, 0) == 0) {
        return 0;
    }
    disarm(c);
    kms_err_clear(&c->err);
    return KMS_FAIL(c, 500, "internal error");
}

bool kms_api_audit_pending(const struct kms_ctx *c)
{
    return c->audit.rec != NULL;
}

int kms_api_audit_wait(struct kms_ctx *c)
{
    struct kms_err err;
    if (c->audit.rec == NULL) {
        return 0;
    }
    return kms_audit_rec_wait(c->audit.rec, &err, NULL, 0);
}

/* Drop every output of the handler: the client gets only the 500. */
static void drop_outputs(struct kms_ctx *c)
{
    json_decref(c->data);
    c->data = NULL;
    json_decref(c->raw);
    c->raw = NULL;
    json_decref(c->auth);
    c->auth = NULL;
    json_decref(c->warnings);
    c->warnings = NULL;
    free(c->text);
    free(c->data_json);
    c->data_json = NULL;
    free(c->batch_results);
    c->batch_results = NULL;
    c->nbatch_results = 0;
    c->single_result = false;
    c->text = NULL;
    c->status = 0;
}

int kms_api_audit_abandon(struct kms_ctx *c)
{
    disarm(c);
    drop_outputs(c);
    kms_err_clear(&c->err);
    return kms_err_set(&c->err, 500, "internal error");
}

int kms_api_audit_response(struct kms_ctx *c, int rc)
{
    char error[sizeof(c->err.msg) + 32];

    if (!c->audit.armed) {
        return rc;
    }
    error_text(c, rc, error, sizeof(error));
    if (!c->audit.request_logged) {
        /* refused at the token or policy step: both lines carry the refusal */
        struct tail_arg t = {c, false, rc, 0, error};
        if (c->audit.rec == NULL && start_rec(c, false) != 0) {
            return kms_api_audit_abandon(c);
        }
        /* nothing ran: the durable response line right after covers this one */
        if (post_line(c, "request", false, &t) != 0) {
            return kms_api_audit_abandon(c);
        }
    } else if (c->audit.rec == NULL) {
        return kms_api_audit_abandon(c);
    }
    note_kms_versions(c);
    struct tail_arg t = {c, true, rc, http_status(c, rc), error};
    if (post_line(c, "response", true, &t) != 0) {
        return kms_api_audit_abandon(c);
    }
    return rc;
}

int kms_api_audit_finish(struct kms_ctx *c, int rc)
{
    struct kms_err err;
    if (c->audit.rec == NULL) {
        return rc;
    }
    if (kms_audit_rec_status(c->audit.rec, &err, NULL, 0) != 0) {
        return kms_api_audit_abandon(c);
    }
    disarm(c);
    return rc;
}

int kms_api_audit_format_kat(struct kms_ctx *c, int rc, bool refused,
                             const struct kms_audit_device_opts *o, const char *salt,
                             const char *time, char **req, size_t *reqlen, char **resp,
                             size_t *resplen)
{
    char error[sizeof(c->err.msg) + 32];
    struct blocks_arg b = {c, !refused};

    *req = *resp = NULL;
    error_text(c, rc, error, sizeof(error));
    struct tail_arg rt = {c, false, rc, 0, refused ? error : NULL};
    if (kms_audit_format_body_w(o, salt, write_blocks, &b, time, "request", write_tail, &rt, req,
                                reqlen) != 0) {
        return -1;
    }
    note_kms_versions(c);
    struct tail_arg pt = {c, true, rc, http_status(c, rc), error};
    if (kms_audit_format_body_w(o, salt, write_blocks, &b, time, "response", write_tail, &pt, resp,
                                resplen) != 0) {
        free(*req);
        *req = NULL;
        return -1;
    }
    return 0;
}

/* ---- operations the server performs on its own ------------------------------------------- */

#define INTERNAL_SUBJECT "system:kmsd-controller"

static json_t *internal_extra(const struct kms_api_audit_event *ev, bool response,
                              const uint32_t *versions, size_t n, int status)
{
    json_t *e = json_pack("{s:s, s:s, s:s}", "subject",
                          ev->subject != NULL ? ev->subject : INTERNAL_SUBJECT, "op", ev->op,
                          "resource", ev->resource != NULL ? ev->resource : "KMSKey");
    if (e == NULL) {
        return NULL;
    }
    if (ev->key != NULL) {
        json_object_set_new(e, "key", json_string(ev->key));
    }
    if (ev->project != NULL) {
        json_object_set_new(e, "project", json_string(ev->project));
    }
    if (ev->client_uid != NULL && ev->client_uid[0] != '\0') {
        json_object_set_new(e, "client_uid", json_string(ev->client_uid));
    }
    if (response && n == 1) {
        json_object_set_new(e, "key_version", json_integer(versions[0]));
    } else if (response && n > 1) {
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++) {
            json_array_append_new(a, json_integer(versions[i]));
        }
        json_object_set_new(e, "key_version", a);
    }
    if (response) {
        json_object_set_new(e, "status", json_integer(status));
    }
    return e;
}

int kms_api_audit_internal_begin(struct kms_api *api, const struct kms_api_audit_event *ev,
                                 struct kms_audit_rec **out, struct kms_err *err)
{
    struct kms_audit *au = kms_api_audit(api);
    char rid[37];
    json_t *auth = NULL, *req = NULL, *extra = NULL;
    int rc = -1;

    *out = NULL;
    if (kms_audit_ndevices(au) == 0) {
        return 0;
    }
    if (kms_uuid4(rid) != 0) {
        return kms_err_set(err, 500, "internal error");
    }
    auth = json_pack("{s:s, s:{s:b}, s:s}", "display_name",
                     ev->subject != NULL ? ev->subject : INTERNAL_SUBJECT, "policy_results",
                     "allowed", true, "token_type", "default");
    req = json_pack("{s:s, s:s, s:{s:s}, s:s}", "id", rid, "operation", ev->operation, "namespace",
                    "id", ev->ns_id, "path", ev->path);
    if (req != NULL && ev->ns_path != NULL && ev->ns_path[0] != '\0') {
        json_object_set_new(json_object_get(req, "namespace"), "path", json_string(ev->ns_path));
    }
    extra = internal_extra(ev, false, NULL, 0, 0);
    if (auth == NULL || req == NULL || extra == NULL ||
        kms_audit_rec_create(au, auth, req, out) != 0) {
        kms_err_set(err, 500, "internal error");
        goto out;
    }
    /* durable before the effect, as for any request that changes state */
    if (kms_audit_rec_log(*out, "request", !ev->pure, NULL, NULL, extra, err, NULL, 0) != 0) {
        kms_audit_rec_destroy(out);
        goto out;
    }
    rc = 0;
out:
    json_decref(auth);
    json_decref(req);
    json_decref(extra);
    return rc;
}

int kms_api_audit_internal_end(struct kms_audit_rec **rec, const struct kms_api_audit_event *ev,
                               const uint32_t *versions, size_t n, const char *error,
                               struct kms_err *err)
{
    int rc = 0;
    if (*rec == NULL) {
        return 0;
    }
    json_t *extra = internal_extra(ev, true, versions, n,
                                   error == NULL    ? 200
                                   : ev->status > 0 ? ev->status
                                                    : 500);
    if (extra == NULL ||
        kms_audit_rec_log(*rec, "response", true, NULL, error, extra, err, NULL, 0) != 0) {
        rc = kms_err_set(err, 500, "internal error");
    }
    json_decref(extra);
    kms_audit_rec_destroy(rec);
    return rc;
}
