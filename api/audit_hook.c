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

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *header(const struct kms_http_req *req, const char *name)
{
    for (size_t i = 0; i < req->nheaders; i++) {
        if (strcasecmp(req->headers[i].name, name) == 0) {
            return req->headers[i].value;
        }
    }
    return NULL;
}

/* The token the client sent (X-Vault-Token or Authorization: Bearer), as dispatch reads it. */
static const char *client_token(const struct kms_http_req *req)
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
    if (c->op == KMS_OP_READ || c->op == KMS_OP_LIST) {
        return true;
    }
    const struct kms_route_op *o = route_op(c);
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

static json_t *str_array(const char (*v)[128], size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(a, json_string(v[i]));
    }
    return a;
}

static json_t *build_auth(const struct kms_ctx *c, bool allowed)
{
    json_t *a = json_object();
    const struct kms_token *t = &c->token;
    if (a == NULL) {
        return NULL;
    }
    if (c->has_token) {
        const char *tok = client_token(c->http);
        if (tok != NULL) {
            json_object_set_new(a, "client_token", json_string(tok));
        }
        if (t->accessor[0] != '\0') {
            json_object_set_new(a, "accessor", json_string(t->accessor));
        }
        json_object_set_new(a, "display_name", json_string(t->display_name));
        json_object_set_new(a, "policies", str_array(t->policies, t->npolicies));
        json_object_set_new(a, "token_policies", str_array(t->policies, t->npolicies));
        if (t->nmeta > 0) {
            json_t *m = json_object();
            for (size_t i = 0; i < t->nmeta; i++) {
                json_object_set_new(m, t->meta_keys[i], json_string(t->meta_values[i]));
            }
            json_object_set_new(a, "metadata", m);
        }
    }
    json_object_set_new(a, "policy_results", json_pack("{s:b}", "allowed", allowed));
    if (c->has_token) {
        char ts[40];
        json_object_set_new(a, "token_type", json_string("service"));
        if (t->expire_time > t->creation_time && t->creation_time > 0) {
            json_object_set_new(a, "token_ttl",
                                json_integer((json_int_t)(t->expire_time - t->creation_time)));
        }
        if (t->creation_time > 0) {
            kms_time_rfc3339(t->creation_time, 0, ts);
            json_object_set_new(a, "token_issue_time", json_string(ts));
        }
    } else {
        json_object_set_new(a, "token_type", json_string("default"));
    }
    return a;
}

static json_t *build_request(const struct kms_ctx *c)
{
    json_t *r = json_object();
    const char *tok = client_token(c->http);
    if (r == NULL) {
        return NULL;
    }
    json_object_set_new(r, "id", json_string(c->audit.request_id));
    json_object_set_new(r, "operation", json_string(kms_op_name(c->op)));
    if (c->mount.path[0] != '\0') {
        json_object_set_new(r, "mount_point", json_string(c->mount.path));
        json_object_set_new(r, "mount_type", json_string(c->mount.type));
        if (c->mount.accessor[0] != '\0') {
            json_object_set_new(r, "mount_accessor", json_string(c->mount.accessor));
        }
        json_object_set_new(
            r, "mount_class",
            json_string(strncmp(c->mount.path, "auth/", 5) == 0 ? "auth" : "secret"));
    }
    if (tok != NULL) {
        json_object_set_new(r, "client_token", json_string(tok));
    }
    if (c->has_token && c->token.accessor[0] != '\0') {
        json_object_set_new(r, "client_token_accessor", json_string(c->token.accessor));
    }
    json_t *ns = json_pack("{s:s}", "id", c->ns.id[0] ? c->ns.id : "root");
    if (c->ns.path[0] != '\0') {
        json_object_set_new(ns, "path", json_string(c->ns.path));
    }
    json_object_set_new(r, "namespace", ns);
    json_object_set_new(r, "path", json_string(c->path));
    if (json_is_object(c->params) && json_object_size(c->params) > 0) {
        /* hashed once, at the first line, into a copy: later coercion does not matter */
        json_object_set(r, "data", c->params);
    }
    if (c->http->remote_addr != NULL && c->http->remote_addr[0] != '\0') {
        json_object_set_new(r, "remote_address", json_string(c->http->remote_addr));
        json_object_set_new(r, "remote_port", json_integer(c->http->remote_port));
    }
    return r;
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

static json_t *build_extra(struct kms_ctx *c, bool response, int status)
{
    json_t *e = json_object();
    const char *op, *resource;
    const char *who = subject(c);
    if (e == NULL) {
        return NULL;
    }
    op_and_resource(c, &op, &resource);
    if (who != NULL) {
        json_object_set_new(e, "subject", json_string(who));
    }
    json_object_set_new(e, "op", json_string(op));
    if (resource != NULL) {
        json_object_set_new(e, "resource", json_string(resource));
    }
    bool kmskey = resource != NULL && strcmp(resource, "KMSKey") == 0;
    const char *key = kmskey ? kms_cap(c, "name") : NULL;
    const char *project = kmskey ? kms_cap(c, "project") : NULL;
    if (key != NULL && key[0] != '\0') {
        json_object_set_new(e, "key", json_string(key));
    }
    if (project != NULL && project[0] != '\0') {
        json_object_set_new(e, "project", json_string(project));
    }
    bool batch = json_is_array(json_object_get(c->params, "batch_input"));
    if (response && kmskey && c->audit.nversions == 0 && strcmp(c->mount.type, "kms") == 0) {
        /* KMSKey objects report their versions in status (kms.c records none itself) */
        json_t *st = json_object_get(c->data, "status");
        json_t *v = json_object_get(st, strcmp(op, "set-min-decryption-version") == 0
                                            ? "minDecryptionVersion"
                                            : "currentVersion");
        if (json_is_integer(v) && json_integer_value(v) > 0) {
            kms_ctx_note_version(c, (uint32_t)json_integer_value(v));
        }
    }
    if (response && c->audit.nversions > 0) {
        if (batch || c->audit.nversions > 1) {
            json_t *a = json_array();
            for (size_t i = 0; i < c->audit.nversions; i++) {
                json_array_append_new(a, json_integer(c->audit.versions[i]));
            }
            json_object_set_new(e, "key_version", a);
        } else {
            json_object_set_new(e, "key_version", json_integer(c->audit.versions[0]));
        }
        if (c->audit.versions_truncated) {
            json_object_set_new(e, "key_version_truncated", json_true());
        }
    }
    if (batch) {
        json_object_set_new(e, "items", json_integer((json_int_t)batch_items(c)));
    }
    if (response) {
        json_object_set_new(e, "status", json_integer(status));
    }
    return e;
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
    if (c->data == NULL && c->auth == NULL) {
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
static int post_line(struct kms_ctx *c, const char *type, bool durable, json_t *response,
                     const char *error, json_t *extra)
{
    struct kms_err err;
    kms_err_clear(&err);
    if (extra == NULL || kms_audit_rec_post(c->audit.rec, type, durable, response, error, extra,
                                            &err, NULL, 0) != 0) {
        kms_err_clear(&c->err);
        kms_err_set(&c->err, 500, "internal error");
        return -1;
    }
    return 0;
}

static int start_rec(struct kms_ctx *c, bool allowed)
{
    json_t *auth = build_auth(c, allowed);
    json_t *req = build_request(c);
    int rc = -1;
    if (auth != NULL && req != NULL &&
        kms_audit_rec_create(kms_api_audit(c->api), auth, req, &c->audit.rec) == 0) {
        rc = 0;
    }
    json_decref(auth);
    json_decref(req);
    return rc;
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
    json_t *extra = build_extra(c, false, 0);
    /*
     * A request that may change state waits for its request line to be durable before the
     * handler runs. One without effects does not wait at all: its line is queued ahead of
     * its response line in the same file, and the response line's wait covers both (a failed
     * write fails every line queued behind it, and the record's status counts every line).
     */
    c->audit.wait_request = !without_effects(c);
    int rc = post_line(c, "request", c->audit.wait_request, NULL, NULL, extra);
    json_decref(extra);
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
    json_t *extra = NULL;
    json_t *resp = NULL;

    if (!c->audit.armed) {
        return rc;
    }
    error_text(c, rc, error, sizeof(error));
    if (!c->audit.request_logged) {
        /* refused at the token or policy step: both lines carry the refusal */
        if (c->audit.rec == NULL && start_rec(c, false) != 0) {
            goto fail;
        }
        extra = build_extra(c, false, 0);
        /* nothing ran: the durable response line right after covers this one */
        if (post_line(c, "request", false, NULL, error, extra) != 0) {
            goto fail;
        }
        json_decref(extra);
    } else if (c->audit.rec == NULL) {
        goto fail;
    }
    resp = json_object();
    if (c->mount.path[0] != '\0') {
        json_object_set_new(resp, "mount_point", json_string(c->mount.path));
        json_object_set_new(resp, "mount_type", json_string(c->mount.type));
        if (c->mount.accessor[0] != '\0') {
            json_object_set_new(resp, "mount_accessor", json_string(c->mount.accessor));
        }
    }
    if (rc == 0) {
        json_t *data = c->data != NULL ? c->data : c->raw;
        if (data != NULL && !c->audit.elide_data) {
            json_object_set(resp, "data", data);
        }
        if (c->auth != NULL) {
            json_object_set(resp, "auth", c->auth);
        }
        if (c->warnings != NULL && json_array_size(c->warnings) > 0) {
            json_object_set(resp, "warnings", c->warnings);
        }
    }
    extra = build_extra(c, true, http_status(c, rc));
    if (post_line(c, "response", true, resp, error, extra) != 0) {
        goto fail;
    }
    json_decref(extra);
    json_decref(resp);
    return rc;
fail:
    json_decref(extra);
    json_decref(resp);
    return kms_api_audit_abandon(c);
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
    json_t *extra = internal_extra(ev, true, versions, n, error != NULL ? 500 : 200);
    if (extra == NULL ||
        kms_audit_rec_log(*rec, "response", true, NULL, error, extra, err, NULL, 0) != 0) {
        rc = kms_err_set(err, 500, "internal error");
    }
    json_decref(extra);
    kms_audit_rec_destroy(rec);
    return rc;
}
