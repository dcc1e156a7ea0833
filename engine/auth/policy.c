/*
 * policy.c - sys/policy/<name> and sys/policies/acl/<name>: read, write, list and delete ACL
 * policies of the request's namespace (reference auth-audit.md §4.1). Parsing, the store and
 * the built-in policies are in auth/ (policy_parse.c, acl.c).
 *
 * Names are trimmed and lower-cased (with Vault's warning); the text may be base64 (decoded when it
 * decodes, as Vault does); sys/policy also takes the deprecated `rules`. Reads answer
 * {name, rules} on sys/policy and {name, policy} on sys/policies/acl.
 */
#include "engine/auth/auth_int.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

static bool legacy_path(const struct kms_ctx *c)
{
    return strncmp(c->rel, "policy", 6) == 0;
}

static int add_name(const char *name, void *arg)
{
    return json_array_append_new(arg, json_string(name));
}

int kms_policy_api_list(struct kms_ctx *c)
{
    json_t *keys = json_array();
    if (keys == NULL || kms_auth_policy_list(kms_api_auth(c->api), c->ns.id,
                                             strcmp(c->ns.id, "root") == 0, add_name, keys) != 0) {
        json_decref(keys);
        return KMS_FAILW(c, 500, "internal error");
    }
    if (legacy_path(c)) {
        c->data = json_pack("{s:O, s:o}", "keys", keys, "policies", keys);
    } else {
        c->data = json_pack("{s:o}", "keys", keys);
    }
    return c->data ? 0 : KMS_FAILW(c, 500, "internal error");
}

/*
 * The name from the URL as OpenBao's policy store sanitises it: white space trimmed and
 * lower-cased (a token's policy list is read the same way, so " default" is `default`, never
 * a second policy no token could hold); warns when that changed it.
 */
static int policy_name(struct kms_ctx *c, char *out, size_t n, bool warn)
{
    const char *raw = kms_cap(c, "name");
    const char *p = raw ? raw : "";
    while (isspace((unsigned char)*p)) {
        p++;
    }
    size_t len = strlen(p);
    while (len > 0 && isspace((unsigned char)p[len - 1])) {
        len--;
    }
    if (len == 0) {
        return KMS_FAIL(c, 400, "policy name must be provided in the URL");
    }
    if (len >= n || len >= KMS_POLICY_NAME_MAX) {
        return KMS_FAIL(c, 400, "policy name too long (at most %d bytes)", KMS_POLICY_NAME_MAX - 1);
    }
    for (size_t i = 0; i < len; i++) {
        out[i] = (char)tolower((unsigned char)p[i]);
    }
    out[len] = '\0';
    if (warn && strcmp(out, raw) != 0) {
        kms_warn(c, "policy name was converted to %s", out);
    }
    return 0;
}

static int policy_write(struct kms_ctx *c, const char *name)
{
    const char *text = "";
    uint8_t *dec = NULL;
    size_t declen = 0;
    size_t at = 0;
    char *plain = NULL;
    int rc = -1;

    (void)kms_param_str(c, "policy", &text);
    if (text[0] == '\0' && legacy_path(c) && kms_param_str(c, "rules", &text)) {
        kms_warn(c, "'rules' is deprecated, please use 'policy' instead");
    }
    if (text[0] == '\0') {
        return KMS_FAIL(c, 400, "'policy' parameter not supplied or empty");
    }
    if (kms_b64_decode_alloc(text, strlen(text), &dec, &declen, &at) == 0) {
        plain = malloc(declen + 1);
        if (plain == NULL) {
            KMS_FAILW(c, 500, "out of memory");
            goto out;
        }
        memcpy(plain, dec, declen);
        plain[declen] = '\0';
        if (strlen(plain) != declen) {
            KMS_FAIL(c, 400, "failed to parse policy: At 1:1: illegal char");
            goto out;
        }
        text = plain;
    }
    if (kms_auth_policy_put(kms_api_auth(c->api), c->ns.id, c->ns.path, name, text, &c->err) != 0) {
        goto out;
    }
    rc = kms_reply_warnings(c);
out:
    kms_free_wipe((void **)&dec, declen);
    free(plain);
    return rc;
}

int kms_policy_api_delete(struct kms_ctx *c)
{
    char name[KMS_PATH_MAX];
    if (policy_name(c, name, sizeof(name), false) != 0) {
        return -1;
    }
    return kms_auth_policy_delete(kms_api_auth(c->api), c->ns.id, name, &c->err);
}

int kms_policy_api_write(struct kms_ctx *c)
{
    char name[KMS_PATH_MAX];
    if (policy_name(c, name, sizeof(name), true) != 0) {
        return -1;
    }
    return policy_write(c, name);
}

int kms_policy_api_read(struct kms_ctx *c)
{
    char name[KMS_PATH_MAX];
    char *text = NULL;

    if (policy_name(c, name, sizeof(name), false) != 0) {
        return -1;
    }
    int g = kms_auth_policy_get(kms_api_auth(c->api), c->ns.id, name, &text);
    if (g == KMS_STORAGE_NOTFOUND) {
        return kms_fail_notfound(c);
    }
    if (g != 0) {
        return KMS_FAILW(c, 500, "internal error");
    }
    c->data = json_pack("{s:s, s:s}", "name", name, legacy_path(c) ? "rules" : "policy", text);
    free(text);
    return c->data ? 0 : KMS_FAILW(c, 500, "internal error");
}

const struct kms_field kms_policy_api_fields[] = {
    {"policy", KMS_F_STRING},
    {"rules", KMS_F_STRING},
    {NULL, 0},
};
