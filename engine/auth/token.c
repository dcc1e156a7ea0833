/*
 * token.c - the auth/token/ backend: lookup, renew and revoke of the caller's own token,
 * token creation, the admin calls by token or accessor (reference auth-audit.md §3.3), and
 * revoke-orphan, tidy and the accessor list.
 *
 * The dispatcher has already resolved and authorised the caller's token (c->token); the
 * store itself lives in auth/ token.c. Renewing a login token goes back to its auth method:
 * the role must still exist and its current token_ttl / token_max_ttl / token_period apply.
 */
#include "engine/auth/auth_int.h"

#include <ctype.h>
#include <string.h>

/* The caller's token string, as sent (the one the token check took). */
static const char *request_token(const struct kms_ctx *c)
{
    const char *t = kms_request_token(c->http);
    return t != NULL ? t : "";
}

static json_t *policies_json(const struct kms_token *t)
{
    json_t *pols = json_array();
    for (size_t i = 0; i < t->npolicies; i++) {
        json_array_append_new(pols, json_string(t->policies[i]));
    }
    return pols;
}

static int cmp_idx(const void *a, const void *b, void *arg)
{
    const struct kms_token *t = arg;
    return strcmp(t->meta_keys[*(const size_t *)a], t->meta_keys[*(const size_t *)b]);
}

/* Token metadata as a JSON object with sorted keys (Go map order), or null. */
static json_t *meta_json(const struct kms_token *t)
{
    size_t idx[KMS_TOKEN_MAX_META];
    if (t->nmeta == 0) {
        return json_null();
    }
    for (size_t i = 0; i < t->nmeta; i++) {
        idx[i] = i;
    }
    qsort_r(idx, t->nmeta, sizeof(idx[0]), cmp_idx, (void *)t);
    json_t *m = json_object();
    for (size_t i = 0; i < t->nmeta; i++) {
        json_object_set_new(m, t->meta_keys[idx[i]], json_string(t->meta_values[idx[i]]));
    }
    return m;
}

json_t *kms_token_auth_block(const struct kms_token *t, const char *client_token)
{
    /* The lease just granted (the block answers a create, login or renewal), measured on the
     * token store's clock, which may be injected: not expiry minus the wall clock. */
    int64_t granted = t->last_renewal > 0 ? t->last_renewal : t->creation_time;
    int64_t lease = t->expire_time ? t->expire_time - granted : 0;
    json_t *a = json_object();
    if (a == NULL) {
        return NULL;
    }
    json_object_set_new(a, "client_token", json_string(client_token));
    json_object_set_new(a, "accessor", json_string(t->accessor));
    json_object_set_new(a, "policies", policies_json(t));
    if (t->npolicies > 0) {
        json_object_set_new(a, "token_policies", policies_json(t));
    }
    json_object_set_new(a, "metadata", meta_json(t));
    json_object_set_new(a, "lease_duration", json_integer(lease > 0 ? lease : 0));
    json_object_set_new(a, "renewable", json_boolean(t->renewable));
    json_object_set_new(a, "entity_id", json_string(t->entity_id));
    json_object_set_new(a, "token_type", json_string("service"));
    json_object_set_new(a, "orphan", json_boolean(t->orphan));
    json_object_set_new(a, "mfa_requirement", json_null());
    json_object_set_new(a, "num_uses", json_integer(t->num_uses));
    return a;
}

/* lookup data (§3.3): every key with Vault's JSON types. `id` is "" for lookup-accessor. */
static int lookup_data(struct kms_ctx *c, const struct kms_token *t, const char *id)
{
    int64_t now;
    int32_t nsec;
    char buf[40];

    kms_now(&now, &nsec);
    int64_t ttl = t->expire_time ? t->expire_time - now : 0;
    c->data = json_object();
    if (c->data == NULL) {
        return KMS_FAILW(c, 500, "internal error");
    }
    json_object_set_new(c->data, "accessor", json_string(t->accessor));
    json_object_set_new(c->data, "creation_time", json_integer(t->creation_time));
    json_object_set_new(c->data, "creation_ttl", json_integer(t->creation_ttl));
    json_object_set_new(c->data, "display_name", json_string(t->display_name));
    json_object_set_new(c->data, "entity_id", json_string(t->entity_id));
    if (t->expire_time) {
        kms_time_rfc3339(t->expire_time, 0, buf);
        json_object_set_new(c->data, "expire_time", json_string(buf));
    } else {
        json_object_set_new(c->data, "expire_time", json_null());
    }
    json_object_set_new(c->data, "explicit_max_ttl", json_integer(t->explicit_max_ttl));
    json_object_set_new(c->data, "id", json_string(id));
    json_object_set_new(c->data, "meta", meta_json(t));
    json_object_set_new(c->data, "num_uses", json_integer(t->num_uses));
    json_object_set_new(c->data, "orphan", json_boolean(t->orphan));
    json_object_set_new(c->data, "path", json_string(t->path));
    json_object_set_new(c->data, "policies", policies_json(t));
    json_object_set_new(c->data, "ttl", json_integer(ttl > 0 ? ttl : 0));
    json_object_set_new(c->data, "type", json_string("service"));
    if (t->expire_time) {
        /* a token with a lease; the root token has none */
        kms_time_rfc3339(t->creation_time, 0, buf);
        json_object_set_new(c->data, "issue_time", json_string(buf));
        json_object_set_new(c->data, "renewable", json_boolean(t->renewable));
    }
    if (t->period > 0) {
        json_object_set_new(c->data, "period", json_integer(t->period));
    }
    if (t->role[0] != '\0') {
        json_object_set_new(c->data, "role", json_string(t->role));
    }
    if (t->ncidrs > 0) {
        json_t *cidrs = json_array();
        for (size_t i = 0; i < t->ncidrs; i++) {
            json_array_append_new(cidrs, json_string(t->cidrs[i]));
        }
        json_object_set_new(c->data, "bound_cidrs", cidrs);
    }
    if (strcmp(t->ns_id, "root") != 0) {
        struct kms_ns ns;
        if (kms_registry_ns_by_id(c->api, t->ns_id, &ns) == 0) {
            json_object_set_new(c->data, "namespace_path", json_string(ns.path));
        }
    }
    if (t->last_renewal > 0) {
        kms_time_rfc3339(t->last_renewal, 0, buf);
        json_object_set_new(c->data, "last_renewal_time", json_integer(t->last_renewal));
        json_object_set_new(c->data, "last_renewal", json_string(buf));
    }
    return 0;
}

static int lookup_self(struct kms_ctx *c)
{
    int rc = lookup_data(c, &c->token, request_token(c));
    if (rc == 0 && c->token.num_uses > 0) {
        /* this request has used the token already: what is left, as OpenBao shows it after
         * its UseToken (-1 on the last use: the token is revoked as the request ends) */
        json_object_set_new(c->data, "num_uses",
                            json_integer(c->token.num_uses > 1 ? c->token.num_uses - 1 : -1));
    }
    return rc;
}

/* A token created against a token role renews with the role's current period (OpenBao's
 * authRenew); a deleted role stops its renewals. */
static int role_renew_params(struct kms_ctx *c, const struct kms_token *t,
                             struct kms_token_ttl *cur)
{
    json_t *role = NULL;
    int g = kms_token_role_load(c, t->ns_id, t->role, &role);
    if (g == KMS_STORAGE_NOTFOUND) {
        return KMS_FAILW(c, 500,
                         "failed to renew entry: original token role \"%s\" could not be found, "
                         "not renewing",
                         t->role);
    }
    if (g != 0) {
        return KMS_FAILW(c, 500, "internal error");
    }
    cur->ttl = t->ttl;
    cur->max_ttl = t->max_ttl;
    cur->period = json_integer_value(json_object_get(role, "token_period"));
    json_decref(role);
    return 0;
}

/* Renew `t` (a token already authorised for this request) and answer with its auth block. */
static int renew_token(struct kms_ctx *c, const struct kms_token *t, const char *client_token)
{
    struct kms_token_ttl cur;
    struct kms_token out;
    char warning[256];
    int64_t increment = 0;
    bool login = strncmp(t->path, "auth/", 5) == 0 && strncmp(t->path, "auth/token/", 11) != 0;
    int rc = -1;

    memset(&cur, 0, sizeof(cur));

    (void)kms_param_int(c, "increment", &increment);
    if (increment < 0) {
        return KMS_FAIL(c, 400, "increment cannot be negative");
    }
    if (login) {
        int r = kms_login_renew_params(c, t, &cur);
        if (r < 0) {
            return -1;
        }
        login = r == 0;
    } else if (t->role[0] != '\0' && role_renew_params(c, t, &cur) == 0) {
        login = true;
    } else if (t->role[0] != '\0') {
        return -1;
    }
    if (kms_auth_token_renew(kms_api_auth(c->api), t, increment, login ? &cur : NULL, &out, warning,
                             sizeof(warning), &c->err) != 0) {
        goto out;
    }
    if (warning[0] != '\0') {
        kms_warn(c, "%s", warning);
    }
    c->auth = kms_token_auth_block(&out, client_token);
    rc = c->auth ? 0 : KMS_FAILW(c, 500, "internal error");
out:
    kms_memzero(&out, sizeof(out));
    return rc;
}

static int renew_self(struct kms_ctx *c)
{
    return renew_token(c, &c->token, request_token(c));
}

static int revoke_self(struct kms_ctx *c)
{
    int r = kms_auth_token_revoke(kms_api_auth(c->api), c->token.hash);
    return r < 0 ? KMS_FAILW(c, 500, "internal error") : 0;
}

/* A token named in the body, visible from this namespace; 403 "bad token" otherwise. */
static int body_token(struct kms_ctx *c, struct kms_token *t, const char **id)
{
    *id = "";
    if (!kms_param_str(c, "token", id) || (*id)[0] == '\0') {
        return KMS_FAIL(c, 400, "missing token");
    }
    int g = kms_auth_token_lookup(kms_api_auth(c->api), *id, t);
    if (g < 0) {
        return KMS_FAILW(c, 500, "internal error");
    }
    if (g != 0 || strcmp(t->ns_id, c->ns.id) != 0) {
        return KMS_FAIL(c, 403, "bad token");
    }
    return 0;
}

static int accessor_token(struct kms_ctx *c, struct kms_token *t)
{
    const char *acc = "";
    if (!kms_param_str(c, "accessor", &acc) || acc[0] == '\0') {
        return KMS_FAIL(c, 400, "missing accessor");
    }
    int g = kms_auth_token_lookup_accessor(kms_api_auth(c->api), acc, t);
    if (g < 0) {
        return KMS_FAILW(c, 500, "internal error");
    }
    if (g != 0 || strcmp(t->ns_id, c->ns.id) != 0) {
        return KMS_FAIL(c, 400, "invalid accessor");
    }
    return 0;
}

static int lookup(struct kms_ctx *c)
{
    struct kms_token t;
    const char *id;
    int rc = body_token(c, &t, &id) == 0 ? lookup_data(c, &t, id) : -1;
    kms_memzero(&t, sizeof(t));
    return rc;
}

static int renew(struct kms_ctx *c)
{
    struct kms_token t;
    const char *id;
    int rc = body_token(c, &t, &id) == 0 ? renew_token(c, &t, id) : -1;
    kms_memzero(&t, sizeof(t));
    return rc;
}

static int revoke(struct kms_ctx *c)
{
    struct kms_token t;
    const char *id = "";
    int rc = 0;
    if (!kms_param_str(c, "token", &id) || id[0] == '\0') {
        return KMS_FAIL(c, 400, "missing token");
    }
    int g = kms_auth_token_lookup(kms_api_auth(c->api), id, &t);
    if (g < 0) {
        rc = KMS_FAILW(c, 500, "internal error");
    } else if (g == 0 && strcmp(t.ns_id, c->ns.id) == 0 &&
               kms_auth_token_revoke(kms_api_auth(c->api), t.hash) < 0) {
        rc = KMS_FAILW(c, 500, "internal error");
    }
    kms_memzero(&t, sizeof(t));
    return rc;
}

static int lookup_accessor(struct kms_ctx *c)
{
    struct kms_token t;
    int rc = accessor_token(c, &t) == 0 ? lookup_data(c, &t, "") : -1;
    kms_memzero(&t, sizeof(t));
    return rc;
}

/* An accessor no token of this namespace has is no error here (OpenBao: 200 and a warning);
 * lookup-accessor and renew-accessor answer 400 "invalid accessor" for it. */
static int revoke_accessor(struct kms_ctx *c)
{
    struct kms_token t;
    const char *acc = "";
    int rc = 0;
    if (!kms_param_str(c, "accessor", &acc) || acc[0] == '\0') {
        return KMS_FAIL(c, 400, "missing accessor");
    }
    int g = kms_auth_token_lookup_accessor(kms_api_auth(c->api), acc, &t);
    if (g < 0) {
        rc = KMS_FAILW(c, 500, "internal error");
    } else if (g != 0 || strcmp(t.ns_id, c->ns.id) != 0) {
        kms_warn(c, "No token found with this accessor");
        rc = kms_reply_warnings(c);
    } else if (kms_auth_token_revoke(kms_api_auth(c->api), t.hash) < 0) {
        rc = KMS_FAILW(c, 500, "internal error");
    }
    kms_memzero(&t, sizeof(t));
    return rc;
}

static int renew_accessor(struct kms_ctx *c)
{
    struct kms_token t;
    int rc = accessor_token(c, &t) == 0 ? renew_token(c, &t, "") : -1;
    kms_memzero(&t, sizeof(t));
    return rc;
}

/* Does the caller hold sudo on this path (root counts)? */
static bool caller_sudo(struct kms_ctx *c)
{
    struct kms_ns tns;
    struct kms_acl_result res;
    if (c->token.root) {
        return true;
    }
    if (kms_registry_ns_by_id(c->api, c->token.ns_id, &tns) != 0) {
        return false;
    }
    /* a probe with update + sudo: read-only on the token (no use is consumed for it) */
    struct kms_token probe = c->token;
    probe.num_uses = 0;
    struct kms_auth_req req = {c->ns.path, tns.path, c->path, KMS_OP_UPDATE, true};
    bool ok = kms_auth_authorize(kms_api_auth(c->api), &probe, &req, &res) == 0 && res.allowed;
    kms_memzero(&probe, sizeof(probe));
    return ok;
}

/*
 * auth/token/revoke-orphan: revoke a token of this namespace, its children live on as orphans.
 * OpenBao checks sudo in the handler (its root path is "revoke-orphan/" and below, which the
 * path itself is not), so a caller with update but no sudo gets its 400, not the ACL's 403.
 */
static int revoke_orphan(struct kms_ctx *c)
{
    struct kms_token t;
    const char *id = "";
    int rc = 0;

    if (!kms_param_str(c, "token", &id) || id[0] == '\0') {
        return KMS_FAIL(c, 400, "missing token ID");
    }
    if (!caller_sudo(c)) {
        return KMS_FAIL(c, 400, "root or sudo privileges required to revoke and orphan");
    }
    int g = kms_auth_token_lookup(kms_api_auth(c->api), id, &t);
    if (g == 0 && strcmp(t.ns_id, c->ns.id) == 0) {
        g = kms_auth_token_revoke_orphan(kms_api_auth(c->api), t.hash, NULL);
    } else if (g == 0) {
        g = KMS_STORAGE_NOTFOUND; /* another namespace's token: not visible here */
    }
    if (g == KMS_STORAGE_NOTFOUND) {
        rc = KMS_FAIL(c, 400, "token to revoke not found");
    } else if (g != 0) {
        rc = KMS_FAILW(c, 500, "internal error");
    }
    kms_memzero(&t, sizeof(t));
    return rc;
}

/*
 * auth/token/tidy: OpenBao starts the tidy in the background and answers 202 with a warning;
 * kmsd's tidy is done when the answer goes out, with the same 202 and warning, and its counts
 * in the server log. A tidy already running: 200 with OpenBao's other warning.
 */
static int tidy(struct kms_ctx *c)
{
    struct kms_token_tidy st;
    char path[KMS_PATH_MAX * 2];
    char detail[256];

    int r = kms_auth_token_tidy(kms_api_auth(c->api), c->ns.id, strcmp(c->ns.id, "root") == 0, &st);
    if (r < 0) {
        return KMS_FAILW(c, 500, "internal error");
    }
    if (r == 1) {
        kms_warn(c, "Tidy operation already in progress.");
        return kms_reply_warnings(c);
    }
    snprintf(path, sizeof(path), "%s%s", c->ns.path, c->path);
    snprintf(detail, sizeof(detail),
             "tokens scanned %zu, expired removed %zu, revoked with a parent removed %zu, "
             "accessor entries scanned %zu, dangling accessor entries removed %zu",
             st.scanned, st.expired, st.parent_revoked, st.accessors_scanned,
             st.accessors_dangling);
    kms_api_log(c->api, "info", "token tidy finished", path, detail);
    kms_warn(c, "Tidy operation successfully started. Any information from the operation will be "
                "printed to kmsd's server log.");
    c->status = 202;
    return kms_reply_warnings(c);
}

static int accessor_list_cb(const char *accessor, void *arg)
{
    return json_array_append_new(arg, json_string(accessor)) == 0 ? 0 : -1;
}

/* LIST auth/token/accessors (sudo): the accessors of this namespace's live tokens. */
static int list_accessors(struct kms_ctx *c)
{
    json_t *keys = json_array();
    int rc = -1;

    if (keys == NULL ||
        kms_auth_token_accessors(kms_api_auth(c->api), c->ns.id, accessor_list_cb, keys) != 0) {
        KMS_FAILW(c, 500, "internal error");
        goto out;
    }
    if (json_array_size(keys) == 0) {
        rc = kms_fail_notfound(c); /* an empty list is a 404, as every Vault LIST */
        goto out;
    }
    c->data = json_pack("{s:O}", "keys", keys);
    rc = c->data != NULL ? 0 : KMS_FAILW(c, 500, "internal error");
out:
    json_decref(keys);
    return rc;
}

static bool in_list(const char *name, const struct kms_token *t)
{
    for (size_t i = 0; i < t->npolicies; i++) {
        if (strcmp(t->policies[i], name) == 0) {
            return true;
        }
    }
    return false;
}

/* The "policies" parameter as borrowed strings; *ng receives the count. */
static int given_policies(struct kms_ctx *c, const char **given, size_t *ng)
{
    json_t *pl = kms_param(c, "policies");
    size_t i;
    json_t *v;
    *ng = 0;
    if (pl != NULL && json_array_size(pl) > KMS_TOKEN_MAX_POLICIES) {
        return KMS_FAIL(c, 400, "too many policies (at most %d)", KMS_TOKEN_MAX_POLICIES);
    }
    json_array_foreach(pl, i, v)
    {
        if (!json_is_string(v)) {
            return KMS_FAIL(c, 400, "policies must be strings");
        }
        given[(*ng)++] = json_string_value(v);
    }
    return 0;
}

/*
 * The child token's policies without a role that lists policies, by OpenBao's rules
 * (resolveTokenPolicies): from a parent namespace, the given ones only; none given, the
 * parent's as they are; otherwise a subset of the parent's unless root or sudo. `default` is
 * added only where OpenBao adds it: never to an inherited set, and to a subset only when the
 * parent has it, so a token kept off `default` cannot hand it to its children. no_default
 * drops it in every case.
 */
static int child_policies(struct kms_ctx *c, const char **given, size_t ng, bool no_default,
                          bool sudo, char pols[][KMS_POLICY_NAME_MAX], int *np)
{
    bool add_default = !no_default;
    if (strcmp(c->token.ns_id, c->ns.id) == 0 && ng == 0) {
        for (size_t i = 0; i < c->token.npolicies; i++) {
            given[ng++] = c->token.policies[i];
        }
        add_default = false;
    } else if (strcmp(c->token.ns_id, c->ns.id) == 0 && !sudo) {
        add_default = !no_default && in_list("default", &c->token);
    }
    *np = kms_auth_policies_normalize(given, ng, add_default, pols);
    if (*np < 0) {
        return KMS_FAIL(c, 400, "too many policies (at most %d)", KMS_TOKEN_MAX_POLICIES);
    }
    for (int k = 0; k < *np; k++) {
        /* root is refused with its own message by check_final_policies */
        if (!sudo && strcmp(pols[k], "root") != 0 && !in_list(pols[k], &c->token)) {
            return KMS_FAIL(c, 400, "child policies must be subset of parent");
        }
    }
    if (no_default) {
        int w = 0;
        for (int k = 0; k < *np; k++) {
            if (strcmp(pols[k], "default") != 0) {
                memmove(pols[w++], pols[k], KMS_POLICY_NAME_MAX);
            }
        }
        *np = w;
    }
    return 0;
}

/* The final policy set: root only from root, never in a namespace; unknown ones warned. */
static int check_final_policies(struct kms_ctx *c, char pols[][KMS_POLICY_NAME_MAX], int np,
                                const char **polp)
{
    for (int k = 0; k < np; k++) {
        polp[k] = pols[k];
        if (strcmp(pols[k], "root") == 0 && !c->token.root) {
            return KMS_FAIL(c, 400,
                            "root tokens may not be created without parent token being root");
        }
        if (strcmp(pols[k], "root") == 0 && strcmp(c->ns.id, "root") != 0) {
            return KMS_FAIL(c, 400, "root tokens may not be created within a namespace");
        }
    }
    for (int k = 0; k < np; k++) {
        if (strcmp(pols[k], "root") != 0) {
            char *text = NULL;
            int g = kms_auth_policy_get(kms_api_auth(c->api), c->ns.id, pols[k], &text);
            free(text);
            if (g == KMS_STORAGE_NOTFOUND) {
                kms_warn(c, "Policy \"%s\" does not exist", pols[k]);
            }
        }
    }
    return 0;
}

/* The metadata entry that binds a Kubernetes-login token to its project (the ServiceAccount's
 * namespace); the KMSKey and Transit engines confine such a token to that project's keys. */
#define PROJECT_BINDING "service_account_namespace"

/* The parent token's project binding, or NULL. */
static const char *parent_binding(const struct kms_ctx *c)
{
    for (size_t i = 0; i < c->token.nmeta; i++) {
        if (strcmp(c->token.meta_keys[i], PROJECT_BINDING) == 0) {
            return c->token.meta_values[i];
        }
    }
    return NULL;
}

/*
 * The "meta" map: string values only, at most KMS_TOKEN_MAX_META entries. A child of a
 * project-bound token is bound to the same project whatever the request says, so a workload
 * cannot mint itself a token that escapes (or changes) its binding.
 */
static int child_meta(struct kms_ctx *c, const char **mk, const char **mv, size_t *nm)
{
    const char *mkey;
    json_t *mval;
    const char *bound = parent_binding(c);
    *nm = 0;
    json_object_foreach(kms_param(c, "meta"), mkey, mval)
    {
        if (!json_is_string(mval)) {
            return KMS_FAIL(c, 400, "meta values must be strings");
        }
        if (*nm == KMS_TOKEN_MAX_META) {
            return KMS_FAIL(c, 400, "too many meta entries (at most %d)", KMS_TOKEN_MAX_META);
        }
        if (strcmp(mkey, PROJECT_BINDING) == 0 && bound != NULL) {
            continue; /* replaced by the parent's binding below */
        }
        mk[*nm] = mkey;
        mv[*nm] = json_string_value(mval);
        (*nm)++;
    }
    if (bound != NULL) {
        if (*nm == KMS_TOKEN_MAX_META) {
            return KMS_FAIL(c, 400, "too many meta entries (at most %d)", KMS_TOKEN_MAX_META);
        }
        mk[*nm] = PROJECT_BINDING;
        mv[*nm] = bound;
        (*nm)++;
    }
    return 0;
}

/* Vault: "token", or "token-" + the name with [^a-zA-Z0-9-] turned into '-'. */
static void child_display_name(const char *dn, char *out, size_t n)
{
    if (dn[0] == '\0') {
        snprintf(out, n, "token");
        return;
    }
    size_t o = (size_t)snprintf(out, n, "token-");
    for (const char *p = dn; *p != '\0' && o + 1 < n; p++) {
        out[o++] = (isalnum((unsigned char)*p) || *p == '-') ? *p : '-';
    }
    while (o > 0 && out[o - 1] == '-') {
        o--;
    }
    out[o] = '\0';
}

/* The caller-chosen properties that need more than a policy: id, orphan, period, type. */
static int check_child_privileges(struct kms_ctx *c, const char *type, const char *id, bool orphan,
                                  int64_t period, bool sudo)
{
    if (strcmp(type, "service") != 0 && strcmp(type, "default") != 0 && type[0] != '\0') {
        return KMS_FAIL(c, 400,
                        strcmp(type, "batch") == 0
                            ? "batch tokens are not supported by kmsd; use \"service\""
                            : "unsupported token type \"%s\"",
                        type);
    }
    if (id != NULL && id[0] != '\0' && !c->token.root) {
        return KMS_FAIL(c, 400, "root or sudo privileges required to specify token id");
    }
    if (orphan && !sudo) {
        return KMS_FAIL(c, 400, "root or sudo privileges required to create orphan token");
    }
    if (period > 0 && !sudo) {
        return KMS_FAIL(c, 400, "root or sudo privileges required to create periodic token");
    }
    return 0;
}

/* What one create request asks for; a role then narrows it (apply_role). */
struct child_req {
    const char *id;
    const char *dn;
    const char *type;
    bool orphan;
    bool no_default;
    bool renewable;
    int64_t ttl;
    int64_t explicit_max;
    int64_t period;
    int64_t uses;
    const char *cidrs[KMS_TOKEN_MAX_CIDRS]; /* borrowed from the role or the parent token */
    size_t ncidrs;
};

static void child_req_read(struct kms_ctx *c, struct child_req *r)
{
    bool no_parent = false;
    memset(r, 0, sizeof(*r));
    r->dn = "";
    r->type = "service";
    r->renewable = true;
    (void)kms_param_str(c, "id", &r->id);
    (void)kms_param_str(c, "display_name", &r->dn);
    (void)kms_param_str(c, "type", &r->type);
    (void)kms_param_bool(c, "no_default_policy", &r->no_default);
    (void)kms_param_bool(c, "renewable", &r->renewable);
    if (!kms_param_int(c, "ttl", &r->ttl)) {
        (void)kms_param_int(c, "lease", &r->ttl);
    }
    (void)kms_param_int(c, "explicit_max_ttl", &r->explicit_max);
    (void)kms_param_int(c, "period", &r->period);
    (void)kms_param_int(c, "num_uses", &r->uses);
    (void)kms_param_bool(c, "no_parent", &no_parent);
    r->orphan = strcmp(c->rel, "create-orphan") == 0 || no_parent;
}

/* The lesser of a requested and a role value (0 = unset), with OpenBao's warning when both. */
static int64_t lesser(struct kms_ctx *c, int64_t asked, int64_t role, const char *what)
{
    if (role == 0) {
        return asked;
    }
    if (asked == 0) {
        return role;
    }
    int64_t v = role < asked ? role : asked;
    kms_warn(c,
             "%s specified both during creation call and in role; using the lesser value of %lld "
             "seconds",
             what, (long long)v);
    return v;
}

/* OpenBao's role rules for auth/token/create/:role_name (handleCreateCommon). */
static void apply_role(struct kms_ctx *c, const json_t *role, struct child_req *r)
{
    const char *rt = json_string_value(json_object_get(role, "token_type"));
    int64_t role_uses = json_integer_value(json_object_get(role, "token_num_uses"));
    if (rt != NULL && strcmp(rt, "service") == 0) {
        r->type = "service";
    }
    if (!json_is_true(json_object_get(role, "renewable"))) {
        r->renewable = false;
    }
    /* 0 is unlimited: the role's limit applies when it is the tighter one */
    if (role_uses > 0 && (r->uses == 0 || role_uses < r->uses)) {
        r->uses = role_uses;
    }
    r->orphan = json_is_true(json_object_get(role, "orphan"));
    r->explicit_max = lesser(c, r->explicit_max,
                             json_integer_value(json_object_get(role, "token_explicit_max_ttl")),
                             "Explicit max TTL");
    r->period =
        lesser(c, r->period, json_integer_value(json_object_get(role, "token_period")), "Period");
    json_t *cidrs = json_object_get(role, "token_bound_cidrs");
    for (size_t i = 0; i < json_array_size(cidrs) && r->ncidrs < KMS_TOKEN_MAX_CIDRS; i++) {
        r->cidrs[r->ncidrs++] = json_string_value(json_array_get(cidrs, i));
    }
}

/* "auth/token/create/<role>[/<suffix>]" or the role-less creation path. */
static int child_path(struct kms_ctx *c, const json_t *role, bool orphan, char *out, size_t n)
{
    if (role == NULL) {
        snprintf(out, n, "%s",
                 orphan && strcmp(c->rel, "create-orphan") == 0 ? "auth/token/create-orphan"
                                                                : "auth/token/create");
        return 0;
    }
    const char *suffix = json_string_value(json_object_get(role, "path_suffix"));
    int w = snprintf(out, n, "auth/token/%s%s%s", c->rel, suffix && suffix[0] ? "/" : "",
                     suffix ? suffix : "");
    return (w < 0 || (size_t)w >= n) ? KMS_FAIL(c, 400, "token path too long") : 0;
}

/* Who may create here at all: not a limited-use token; from a parent namespace, sudo only (a
 * root policy is refused in any namespace by check_final_policies). */
static int check_parent(struct kms_ctx *c, bool sudo)
{
    if (c->token.num_uses > 0) {
        return KMS_FAIL(c, 400, "restricted use token cannot generate child tokens");
    }
    if (strcmp(c->token.ns_id, c->ns.id) != 0 && !sudo) {
        return KMS_FAIL(c, 400,
                        "root or sudo privileges required to directly generate a token "
                        "in a child namespace");
    }
    return 0;
}

/* The policies of the new token (role-listed or the ordinary subset rules), checked. */
static int resolve_policies(struct kms_ctx *c, const json_t *role, const struct child_req *r,
                            bool sudo, char pols[][KMS_POLICY_NAME_MAX], const char **polp, int *np)
{
    const char *given[KMS_TOKEN_MAX_POLICIES];
    size_t ng = 0;
    bool listed =
        role != NULL && (json_array_size(json_object_get(role, "allowed_policies")) > 0 ||
                         json_array_size(json_object_get(role, "disallowed_policies")) > 0 ||
                         json_array_size(json_object_get(role, "allowed_policies_glob")) > 0 ||
                         json_array_size(json_object_get(role, "disallowed_policies_glob")) > 0);
    if (given_policies(c, given, &ng) != 0) {
        return -1;
    }
    int rc = listed ? kms_token_role_policies(c, role, given, ng, r->no_default, pols, np)
                    : child_policies(c, given, ng, r->no_default, sudo, pols, np);
    return rc != 0 ? -1 : check_final_policies(c, pols, *np, polp);
}

static int create_common(struct kms_ctx *c, const json_t *role)
{
    char pols[KMS_TOKEN_MAX_POLICIES][KMS_POLICY_NAME_MAX];
    const char *polp[KMS_TOKEN_MAX_POLICIES];
    const char *mk[KMS_TOKEN_MAX_META];
    const char *mv[KMS_TOKEN_MAX_META];
    char dname[128];
    char path[KMS_PATH_MAX];
    char token[KMS_TOKEN_MAX_LEN];
    char warning[256];
    struct kms_token out;
    struct child_req r;
    const char *alias = NULL;
    size_t nm = 0;
    int np = 0;
    int rc = -1;

    memset(token, 0, sizeof(token));
    memset(&out, 0, sizeof(out));
    bool sudo = caller_sudo(c);
    child_req_read(c, &r);
    if (check_parent(c, sudo) != 0 ||
        check_child_privileges(c, r.type, r.id, role == NULL && r.orphan, r.period, sudo) != 0) {
        return -1;
    }
    if (r.ttl < 0 || r.explicit_max < 0 || r.period < 0 || r.uses < 0) {
        return KMS_FAIL(c, 400, "ttl, explicit_max_ttl, period and num_uses cannot be negative");
    }
    if (kms_param_str(c, "entity_alias", &alias) && alias[0] != '\0') {
        return kms_token_role_entity_alias(c, role, alias);
    }
    if (role != NULL) {
        apply_role(c, role, &r);
    } else if (!r.orphan) {
        /* a child keeps its parent's network binding (a role sets its own) */
        for (size_t i = 0; i < c->token.ncidrs; i++) {
            r.cidrs[r.ncidrs++] = c->token.cidrs[i];
        }
    }
    if (resolve_policies(c, role, &r, sudo, pols, polp, &np) != 0 ||
        child_meta(c, mk, mv, &nm) != 0 || child_path(c, role, r.orphan, path, sizeof(path)) != 0) {
        return -1;
    }
    child_display_name(r.dn, dname, sizeof(dname));
    struct kms_token_spec spec = {
        .ns_id = c->ns.id,
        .path = path,
        .display_name = dname,
        .policies = polp,
        .npolicies = (size_t)np,
        .meta_keys = mk,
        .meta_values = mv,
        .nmeta = nm,
        .ttl = r.ttl,
        .explicit_max_ttl = r.explicit_max,
        .period = r.period,
        .num_uses = r.uses,
        .renewable = r.renewable,
        .parent_hash = r.orphan ? NULL : c->token.hash,
        .entity_id = r.orphan ? "" : c->token.entity_id,
        .role = role != NULL ? json_string_value(json_object_get(role, "name")) : "",
        .cidrs = r.cidrs,
        .ncidrs = r.ncidrs,
        .id = r.id != NULL && r.id[0] != '\0' ? r.id : NULL,
    };
    if (kms_auth_token_create(kms_api_auth(c->api), &spec, token, &out, warning, sizeof(warning),
                              &c->err) != 0) {
        goto out;
    }
    if (warning[0] != '\0') {
        kms_warn(c, "%s", warning);
    }
    c->auth = kms_token_auth_block(&out, token);
    rc = c->auth ? 0 : KMS_FAILW(c, 500, "internal error");
out:
    kms_memzero(token, sizeof(token));
    kms_memzero(&out, sizeof(out));
    return rc;
}

static int create(struct kms_ctx *c)
{
    return create_common(c, NULL);
}

/* auth/token/create/:role_name: the role must exist in this namespace. */
static int create_role(struct kms_ctx *c)
{
    const char *name = kms_cap(c, "role_name");
    json_t *role = NULL;
    int g = kms_token_role_load(c, c->ns.id, name ? name : "", &role);
    if (g == KMS_STORAGE_NOTFOUND) {
        return KMS_FAIL(c, 400, "unknown role %s", name ? name : "");
    }
    if (g != 0) {
        return KMS_FAILW(c, 500, "internal error");
    }
    int rc = create_common(c, role);
    json_decref(role);
    return rc;
}

static const struct kms_field f_increment[] = {
    {"increment", KMS_F_DURATION},
    {NULL, 0},
};

static const struct kms_field f_token[] = {
    {"token", KMS_F_STRING},
    {"increment", KMS_F_DURATION},
    {NULL, 0},
};

static const struct kms_field f_token_only[] = {
    {"token", KMS_F_STRING},
    {NULL, 0},
};

static const struct kms_field f_accessor[] = {
    {"accessor", KMS_F_STRING},
    {"increment", KMS_F_DURATION},
    {NULL, 0},
};

static const struct kms_field f_create[] = {
    {"id", KMS_F_STRING},
    {"policies", KMS_F_ARRAY},
    {"meta", KMS_F_MAP},
    {"no_parent", KMS_F_BOOL},
    {"no_default_policy", KMS_F_BOOL},
    {"renewable", KMS_F_BOOL},
    {"ttl", KMS_F_DURATION},
    {"lease", KMS_F_DURATION},
    {"explicit_max_ttl", KMS_F_DURATION},
    {"period", KMS_F_DURATION},
    {"display_name", KMS_F_STRING},
    {"num_uses", KMS_F_INT},
    {"type", KMS_F_STRING},
    {"entity_alias", KMS_F_STRING},
    {NULL, 0},
};

const struct kms_route kms_token_routes[] = {
    {.tmpl = "lookup-self",
     .on = {[KMS_OP_READ] = {lookup_self, "lookup-self", 0},
            [KMS_OP_UPDATE] = {lookup_self, "lookup-self", 0}}},
    {.tmpl = "renew-self",
     .fields = f_increment,
     .on = {[KMS_OP_UPDATE] = {renew_self, "renew-self", 0}}},
    {.tmpl = "revoke-self", .on = {[KMS_OP_UPDATE] = {revoke_self, "revoke-self", 0}}},
    {.tmpl = "create", .fields = f_create, .on = {[KMS_OP_UPDATE] = {create, "create", 0}}},
    {.tmpl = "create-orphan",
     .fields = f_create,
     .on = {[KMS_OP_UPDATE] = {create, "create-orphan", 0}}},
    {.tmpl = "create/:role_name",
     .fields = f_create,
     .on = {[KMS_OP_UPDATE] = {create_role, "create", 0}}},
    {.tmpl = "roles/", .on = {[KMS_OP_LIST] = {kms_token_role_list, NULL, 0}}},
    {.tmpl = "roles/:role_name",
     .fields = kms_token_role_fields,
     .exists = kms_token_role_exists,
     .on = {[KMS_OP_READ] = {kms_token_role_read, NULL, 0},
            [KMS_OP_CREATE] = {kms_token_role_write, NULL, 0},
            [KMS_OP_UPDATE] = {kms_token_role_write, NULL, 0},
            [KMS_OP_DELETE] = {kms_token_role_delete, NULL, 0}}},
    {.tmpl = "lookup",
     .fields = f_token,
     .on = {[KMS_OP_READ] = {lookup, "lookup", 0}, [KMS_OP_UPDATE] = {lookup, "lookup", 0}}},
    {.tmpl = "renew", .fields = f_token, .on = {[KMS_OP_UPDATE] = {renew, "renew", 0}}},
    {.tmpl = "revoke", .fields = f_token, .on = {[KMS_OP_UPDATE] = {revoke, "revoke", 0}}},
    {.tmpl = "revoke-orphan",
     .fields = f_token_only,
     .on = {[KMS_OP_UPDATE] = {revoke_orphan, "revoke-orphan", 0}}},
    {.tmpl = "tidy", .on = {[KMS_OP_UPDATE] = {tidy, "tidy", 0}}},
    /* OpenBao's root path "accessors*": list and sudo */
    {.tmpl = "accessors/", .flags = KMS_RT_SUDO, .on = {[KMS_OP_LIST] = {list_accessors, NULL, 0}}},
    {.tmpl = "lookup-accessor",
     .fields = f_accessor,
     .on = {[KMS_OP_UPDATE] = {lookup_accessor, "lookup-accessor", 0}}},
    {.tmpl = "renew-accessor",
     .fields = f_accessor,
     .on = {[KMS_OP_UPDATE] = {renew_accessor, "renew-accessor", 0}}},
    {.tmpl = "revoke-accessor",
     .fields = f_accessor,
     .on = {[KMS_OP_UPDATE] = {revoke_accessor, "revoke-accessor", 0}}},
    KMS_ROUTES_END,
};
