/*
 * token.c - the auth/token/ backend: what a token holder can ask about its own token.
 */
#include "api/api_int.h"

#include <string.h>
#include <strings.h>

static int lookup_self(struct kms_ctx *c)
{
    const struct kms_token *t = &c->token;
    const char *tok = NULL;
    json_t *pols = json_array();
    json_t *meta = t->nmeta ? json_object() : json_null();
    int64_t now;
    int32_t nsec;

    for (size_t i = 0; i < t->npolicies; i++) {
        json_array_append_new(pols, json_string(t->policies[i]));
    }
    for (size_t i = 0; i < t->nmeta; i++) {
        json_object_set_new(meta, t->meta_keys[i], json_string(t->meta_values[i]));
    }
    /* the caller's own token, echoed back as Vault does */
    for (size_t i = 0; i < c->http->nheaders; i++) {
        if (strcasecmp(c->http->headers[i].name, "X-Vault-Token") == 0) {
            tok = c->http->headers[i].value;
        }
    }
    if (tok == NULL) {
        for (size_t i = 0; i < c->http->nheaders; i++) {
            if (strcasecmp(c->http->headers[i].name, "Authorization") == 0 &&
                strncmp(c->http->headers[i].value, "Bearer ", 7) == 0) {
                tok = c->http->headers[i].value + 7;
            }
        }
    }
    kms_now(&now, &nsec);
    int64_t ttl = t->expire_time ? t->expire_time - now : 0;
    c->data = json_pack(
        "{s:s, s:I, s:I, s:s, s:s, s:n, s:I, s:s, s:o, s:i, s:b, s:s, s:o, "
        "s:I, s:s}",
        "accessor", t->accessor, "creation_time", (json_int_t)t->creation_time, "creation_ttl",
        (json_int_t)(t->expire_time ? t->expire_time - t->creation_time : 0), "display_name",
        t->display_name, "entity_id", "", "expire_time", "explicit_max_ttl", (json_int_t)0, "id",
        tok ? tok : "", "meta", meta, "num_uses", 0, "orphan", true, "path", t->path, "policies",
        pols, "ttl", (json_int_t)(ttl > 0 ? ttl : 0), "type", "service");
    if (c->data == NULL) {
        return KMS_FAILW(c, 500, "internal error");
    }
    if (t->expire_time) {
        char buf[40];
        kms_time_rfc3339(t->expire_time, 0, buf);
        json_object_set_new(c->data, "expire_time", json_string(buf));
    }
    return 0;
}

const struct kms_route kms_token_routes[] = {
    {"lookup-self", KMS_R | KMS_U, 0, lookup_self, NULL, NULL},
    {NULL, 0, 0, NULL, NULL, NULL},
};
