/*
 * envelope.c - the only place that turns a request context into response bytes: Vault's
 * success envelope, raw bodies (sys/health), 204s and {"errors":[...]} bodies.
 */
#include "api/api_int.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* A string literal and its length, for kms_jw_raw. */
#define LIT(s) s, sizeof(s) - 1

static void set_body(struct kms_http_resp *resp, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
    if (text == NULL) {
        resp->status = 500;
        resp->body = strdup("{\"errors\":[\"internal error\"]}\n");
        resp->body_len = resp->body ? strlen(resp->body) : 0;
        return;
    }
    size_t n = strlen(text);
    /* a copy, not realloc: a block realloc moves is freed unwiped, and the body may hold
     * plaintexts (decrypt) or key material (export) */
    char *withnl = malloc(n + 2);
    if (withnl != NULL) {
        memcpy(withnl, text, n);
        withnl[n] = '\n';
        withnl[n + 1] = '\0';
    }
    kms_free_wipe((void **)&text, n);
    if (withnl == NULL) {
        resp->status = 500;
        return;
    }
    resp->body = withnl;
    resp->body_len = n + 1;
}

/* The writer's text as the body, with the newline; 500 when it ran out of memory. */
static void take_body(struct kms_http_resp *resp, struct kms_jw *w)
{
    kms_jw_raw(w, "\n", 1);
    if (w->oom) {
        free(w->p);
        resp->status = 500;
        resp->body = strdup("{\"errors\":[\"internal error\"]}\n");
        resp->body_len = resp->body ? strlen(resp->body) : 0;
        return;
    }
    resp->body = w->p;
    resp->body_len = w->len;
}

void kms_api_error_response(int status, const char *msg, struct kms_http_resp *resp)
{
    struct kms_jw w = {NULL, 0, 0, false};
    resp->status = status;
    kms_jw_raw(&w, LIT("{\"errors\":["));
    if (msg != NULL && msg[0] != '\0') {
        /* json_string's rule: text that is not UTF-8 has no JSON form (an empty list) */
        json_t *m = json_string(msg);
        if (m != NULL) {
            kms_jw_str(&w, msg, strlen(msg));
        }
        json_decref(m);
    }
    kms_jw_raw(&w, LIT("]}"));
    take_body(resp, &w);
}

void kms_http_resp_dispose(struct kms_http_resp *resp)
{
    kms_free_wipe((void **)&resp->body, resp->body_len);
    resp->body_len = 0;
}

int kms_fail_notfound(struct kms_ctx *c)
{
    c->err.status = 404;
    c->err.wrapped = false;
    c->err.msg[0] = '\0';
    return -1;
}

bool kms_ctx_no_content(const struct kms_ctx *c)
{
    bool warned = c->warnings != NULL && json_array_size(c->warnings) > 0;
    return c->data == NULL && c->data_json == NULL && c->auth == NULL &&
           !(c->warnings_only && warned);
}

int kms_reply_warnings(struct kms_ctx *c)
{
    c->warnings_only = true;
    return 0;
}

void kms_warn(struct kms_ctx *c, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof(buf)) {
        (void)kms_utf8_cut(buf, sizeof(buf) - 1); /* cut inside a character: before it */
    }
    if (c->warnings == NULL) {
        c->warnings = json_array();
    }
    json_array_append_new(c->warnings, json_string(buf));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Go marshals map keys sorted; rebuild obj with its keys in byte order (one level). */
static json_t *sorted_copy(json_t *obj)
{
    size_t n = json_object_size(obj);
    const char **keys = calloc(n ? n : 1, sizeof(*keys));
    json_t *out = json_object();
    const char *k;
    json_t *v;
    size_t i = 0;
    if (keys == NULL || out == NULL) {
        free(keys);
        json_decref(out);
        return json_incref(obj);
    }
    json_object_foreach(obj, k, v)
    {
        keys[i++] = k;
    }
    qsort(keys, n, sizeof(*keys), cmp_str);
    for (i = 0; i < n; i++) {
        json_object_set(out, keys[i], json_object_get(obj, keys[i]));
    }
    free(keys);
    return out;
}

void kms_render(struct kms_ctx *c, int rc, struct kms_http_resp *resp)
{
    if (rc != 0) {
        int status = c->err.status ? c->err.status : 500;
        if (c->err.wrapped && c->err.msg[0] != '\0') {
            char buf[sizeof(c->err.msg) + 32];
            snprintf(buf, sizeof(buf), "1 error occurred:\n\t* %s\n\n", c->err.msg);
            kms_api_error_response(status, buf, resp);
        } else {
            kms_api_error_response(status, c->err.msg, resp);
        }
        return;
    }
    if (c->text != NULL) {
        resp->status = c->status ? c->status : 200;
        resp->body = c->text;
        resp->body_len = c->text_len;
        snprintf(resp->content_type, sizeof(resp->content_type), "%s", c->content_type);
        c->text = NULL;
        return;
    }
    if (c->raw != NULL) {
        resp->status = c->status ? c->status : 200;
        set_body(resp, c->raw);
        return;
    }
    if (kms_ctx_no_content(c)) {
        resp->status = 204;
        return;
    }
    char rid[37];
    /* the audit lines' request.id, so a response can be found in the audit log */
    if (c->audit.request_id[0] != '\0') {
        memcpy(rid, c->audit.request_id, sizeof(rid));
    } else if (kms_uuid4(rid) != 0) {
        kms_api_error_response(500, "internal error", resp);
        return;
    }
    resp->status = c->status ? c->status : 200;
    json_t *warnings = c->warnings && json_array_size(c->warnings) ? c->warnings : NULL;
    if (c->route != NULL && (c->route->flags & KMS_RT_SYS_TOP) && json_is_object(c->data)) {
        /* sys/ routes copy data to the top level too (rare: built with jansson) */
        json_t *data = sorted_copy(c->data);
        json_t *env = json_object();
        const char *k;
        json_t *v;
        json_object_foreach(data, k, v)
        {
            json_object_set(env, k, v);
        }
        json_object_set_new(env, "request_id", json_string(rid));
        json_object_set_new(env, "lease_id", json_string(""));
        json_object_set_new(env, "renewable", json_false());
        json_object_set_new(env, "lease_duration", json_integer(0));
        json_object_set_new(env, "data", data);
        json_object_set_new(env, "wrap_info", json_null());
        json_object_set(env, "warnings", warnings ? warnings : json_null());
        json_object_set(env, "auth", c->auth ? c->auth : json_null());
        set_body(resp, env);
        json_decref(env);
        return;
    }
    /* the envelope's fixed fields around the data, written straight into the body */
    struct kms_jw w = {NULL, 0, 0, false};
    (void)kms_jw_reserve(&w, 256 + c->data_json_len); /* no growth copies for a batch */
    kms_jw_raw(&w, LIT("{\"request_id\":\""));
    kms_jw_raw(&w, rid, strlen(rid));
    kms_jw_raw(&w, LIT("\",\"lease_id\":\"\",\"renewable\":false,\"lease_duration\":0,\"data\":"));
    if (c->data_json != NULL) {
        kms_jw_raw(&w, c->data_json, c->data_json_len); /* rendered by the handler */
    } else if (c->data != NULL) {
        kms_jw_value(&w, c->data, true);
    } else {
        kms_jw_raw(&w, LIT("null"));
    }
    kms_jw_raw(&w, LIT(",\"wrap_info\":null,\"warnings\":"));
    if (warnings != NULL) {
        kms_jw_value(&w, warnings, false);
    } else {
        kms_jw_raw(&w, LIT("null"));
    }
    kms_jw_raw(&w, LIT(",\"auth\":"));
    if (c->auth != NULL) {
        kms_jw_value(&w, c->auth, false);
    } else {
        kms_jw_raw(&w, LIT("null"));
    }
    kms_jw_raw(&w, LIT("}"));
    take_body(resp, &w);
}
