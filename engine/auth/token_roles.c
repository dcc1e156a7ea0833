/*
 * token_roles.c - the token store's roles: auth/token/roles (LIST) and roles/:role_name (read,
 * create/update with an existence check, delete), and what auth/token/create/:role_name needs
 * from a role (load, policy resolution).
 *
 * A role is a JSON record in KMS_DB_AUTH under "<ns id>/token/role/<name>" ("token" can never
 * be a mount uuid, and the namespace purge drops the whole "<ns id>/" prefix). The record holds
 * OpenBao's tsRoleEntry fields under their read names, legacy ones (period, explicit_max_ttl,
 * bound_cidrs) kept apart so a read shows what was written. Names are case-sensitive, as the
 * token store's role view is.
 *
 * Batch token types are refused at write (kmsd issues service tokens only); an
 * allowed_entity_aliases list is stored and checked at create time, but kmsd has no identity
 * store, so an entity_alias that passes the check is then refused (docs/auth.md).
 */
#include "engine/auth/login.h"

#include <ctype.h>
#include <string.h>

#define ROLE_LIST_MAX 256  /* entries per list field: bounds the record and the checks */
#define ROLE_ENTRY_MAX 256 /* bytes per entry, NUL included */

static int role_key(const char *ns_id, const char *name, char *out, size_t n)
{
    int w = snprintf(out, n, "%s/token/role/%s", ns_id, name);
    return (w < 0 || (size_t)w >= n) ? -1 : 0;
}

/* OpenBao's upgrade on load: the token_ fields take a legacy value when they are unset. */
static void role_upgrade(json_t *role)
{
    static const char *const pairs[][2] = {
        {"period", "token_period"},
        {"explicit_max_ttl", "token_explicit_max_ttl"},
    };
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        json_int_t legacy = json_integer_value(json_object_get(role, pairs[i][0]));
        if (legacy > 0 && json_integer_value(json_object_get(role, pairs[i][1])) == 0) {
            json_object_set_new(role, pairs[i][1], json_integer(legacy));
        }
    }
    json_t *bc = json_object_get(role, "bound_cidrs");
    if (json_array_size(bc) > 0 &&
        json_array_size(json_object_get(role, "token_bound_cidrs")) == 0) {
        json_object_set(role, "token_bound_cidrs", bc);
    }
}

int kms_token_role_load(struct kms_ctx *c, const char *ns_id, const char *name, json_t **role)
{
    char key[KMS_PATH_MAX + 64];
    *role = NULL;
    if (role_key(ns_id, name, key, sizeof(key)) != 0) {
        return KMS_STORAGE_NOTFOUND;
    }
    int g = kms_login_rec_get(c->api, key, role);
    if (g == 0) {
        role_upgrade(*role);
    }
    return g;
}

/* ---- list sanitising, as Go's strutil / policyutil ------------------------------------- */

static int cmp_json_str(const void *a, const void *b)
{
    return strcmp(json_string_value(*(json_t *const *)a), json_string_value(*(json_t *const *)b));
}

/*
 * strutil.RemoveDuplicates(list, true): trimmed, lower-cased, empty entries dropped, unique,
 * sorted. With `policies`, SanitizePolicies(list, false): a "root" entry leaves only "root".
 * NULL (and a 400) for a non-string entry or too many entries.
 */
static json_t *clean_list(struct kms_ctx *c, const char *field, const json_t *in, bool policies)
{
    json_t *items[ROLE_LIST_MAX];
    size_t n = 0;
    size_t i;
    json_t *v;

    if (json_array_size(in) > ROLE_LIST_MAX) {
        KMS_FAIL(c, 400, "too many entries in %s (at most %d)", field, ROLE_LIST_MAX);
        return NULL;
    }
    json_array_foreach(in, i, v)
    {
        if (!json_is_string(v)) {
            for (size_t k = 0; k < n; k++) {
                json_decref(items[k]);
            }
            KMS_FAIL(c, 400, "%s must be a list of strings", field);
            return NULL;
        }
        const char *s = json_string_value(v);
        size_t len = strlen(s);
        while (len > 0 && isspace((unsigned char)*s)) {
            s++;
            len--;
        }
        while (len > 0 && isspace((unsigned char)s[len - 1])) {
            len--;
        }
        if (len == 0) {
            continue;
        }
        char buf[ROLE_ENTRY_MAX];
        if (len >= sizeof(buf)) {
            for (size_t k = 0; k < n; k++) {
                json_decref(items[k]);
            }
            KMS_FAIL(c, 400, "an entry of %s is too long (at most %d bytes)", field,
                     ROLE_ENTRY_MAX - 1);
            return NULL;
        }
        for (size_t k = 0; k < len; k++) {
            buf[k] = (char)tolower((unsigned char)s[k]);
        }
        buf[len] = '\0';
        json_t *low = json_string(buf);
        if (policies && strcmp(buf, "root") == 0) {
            for (size_t k = 0; k < n; k++) {
                json_decref(items[k]);
            }
            json_decref(low);
            return json_pack("[s]", "root");
        }
        items[n++] = low;
    }
    qsort(items, n, sizeof(items[0]), cmp_json_str);
    json_t *out = json_array();
    const json_t *last = NULL;
    for (size_t k = 0; k < n; k++) {
        if (last != NULL && strcmp(json_string_value(items[k]), json_string_value(last)) == 0) {
            json_decref(items[k]);
            continue;
        }
        last = items[k];
        json_array_append_new(out, items[k]);
    }
    return out;
}

/* One list field: written when given, reset to [] on create, else kept. */
static int role_list_field(struct kms_ctx *c, json_t *role, const char *field, bool policies,
                           bool create)
{
    json_t *v = kms_param(c, field);
    if (v == NULL && !create) {
        return 0;
    }
    json_t *empty = json_array();
    json_t *clean = clean_list(c, field, v ? v : empty, policies);
    json_decref(empty);
    if (clean == NULL) {
        return -1;
    }
    json_object_set_new(role, field, clean);
    return 0;
}

/* Go's regexp `\w[\w-.]+\w` found anywhere in s (MatchString is unanchored). */
static bool suffix_matches(const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++) {
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_')) {
            continue;
        }
        size_t last_word = i;
        for (size_t j = i + 1; j < n; j++) {
            unsigned char ch = (unsigned char)s[j];
            if (isalnum(ch) || ch == '_') {
                last_word = j;
            } else if (ch != '-' && ch != '.') {
                break;
            }
        }
        if (last_word >= i + 2) {
            return true;
        }
    }
    return false;
}

/* orphan, renewable, path_suffix and the four policy lists (OpenBao's first block). */
static int role_plain_fields(struct kms_ctx *c, json_t *role, bool create)
{
    bool b;
    const char *suffix;

    if (kms_param_bool(c, "orphan", &b)) {
        json_object_set_new(role, "orphan", json_boolean(b));
    } else if (create) {
        json_object_set_new(role, "orphan", json_false());
    }
    if (kms_param_bool(c, "renewable", &b)) {
        json_object_set_new(role, "renewable", json_boolean(b));
    } else if (create) {
        json_object_set_new(role, "renewable", json_true());
    }
    if (kms_param_str(c, "path_suffix", &suffix)) {
        if (suffix[0] != '\0' && !suffix_matches(suffix)) {
            return KMS_FAIL(c, 400,
                            "given role path suffix contains invalid characters; must match "
                            "\\w[\\w-.]+\\w");
        }
        json_object_set_new(role, "path_suffix", json_string(suffix));
    } else if (create) {
        json_object_set_new(role, "path_suffix", json_string(""));
    }
    const char *ps = json_string_value(json_object_get(role, "path_suffix"));
    if (ps != NULL && strstr(ps, "..") != NULL) {
        return KMS_FAIL(c, 400,
                        "error registering path suffix: path cannot contain parent references");
    }
    if (role_list_field(c, role, "allowed_policies", true, create) != 0 ||
        role_list_field(c, role, "disallowed_policies", false, create) != 0 ||
        role_list_field(c, role, "allowed_policies_glob", true, create) != 0 ||
        role_list_field(c, role, "disallowed_policies_glob", false, create) != 0) {
        return -1;
    }
    return 0;
}

/* Every entry of a CIDR list parses; `prefix` starts the message as OpenBao words it. */
static int check_cidrs(struct kms_ctx *c, const json_t *list, const char *prefix)
{
    size_t i;
    json_t *v;
    if (json_array_size(list) > KMS_TOKEN_MAX_CIDRS) {
        return KMS_FAIL(c, 400, "%stoo many CIDR blocks (at most %d)", prefix, KMS_TOKEN_MAX_CIDRS);
    }
    json_array_foreach(list, i, v)
    {
        const char *s = json_string_value(v);
        if (s == NULL || !kms_cidr_valid(s)) {
            return KMS_FAIL(c, 400,
                            "%serror parsing address \"%s\": Unable to convert \"%s\" to an IPv4 "
                            "or IPv6 address, or a UNIX Socket",
                            prefix, s ? s : "", s ? s : "");
        }
    }
    return 0;
}

/* A token_/legacy pair: the token_ field wins (legacy zeroed, warning when both are given). */
static void role_legacy_pair(struct kms_ctx *c, json_t *role, const char *tname, const char *lname,
                             json_t *zero)
{
    json_t *tv = kms_param(c, tname);
    json_t *lv = kms_param(c, lname);
    if (tv == NULL) {
        if (lv != NULL) {
            json_object_set(role, lname, lv);
            json_object_set(role, tname, lv);
        }
    } else {
        if (lv != NULL) {
            kms_warn(c,
                     "Both '%s' and deprecated '%s' value supplied, ignoring the deprecated value",
                     tname, lname);
        }
        json_object_set(role, lname, zero);
    }
    json_decref(zero);
}

/* The token fields OpenBao's token store allows on roles, then the legacy names. */
static int role_token_fields(struct kms_ctx *c, json_t *role, bool create)
{
    json_t *v;
    int64_t n;
    bool b;

    /* the raw parameters: kms_param hides an explicit null, which OpenBao refuses here */
    json_t *tt = json_object_get(c->params, "token_type");
    if (json_is_null(tt)) {
        return KMS_FAIL(c, 400, "Invalid 'token_type' value: null");
    }
    if ((v = kms_param(c, "token_bound_cidrs")) != NULL) {
        if (check_cidrs(c, v, "error parsing role fields: ") != 0) {
            return -1;
        }
        json_object_set(role, "token_bound_cidrs", v);
    }
    if (kms_param_int(c, "token_explicit_max_ttl", &n)) {
        json_object_set_new(role, "token_explicit_max_ttl", json_integer(n));
    }
    if (kms_param_bool(c, "token_no_default_policy", &b)) {
        json_object_set_new(role, "token_no_default_policy", json_boolean(b));
    }
    if (kms_param_int(c, "token_period", &n)) {
        json_object_set_new(role, "token_period", json_integer(n));
    }
    if (json_integer_value(json_object_get(role, "token_period")) < 0) {
        return KMS_FAIL(c, 400, "error parsing role fields: 'token_period' cannot be negative");
    }
    if (kms_param_int(c, "token_num_uses", &n)) {
        json_object_set_new(role, "token_num_uses", json_integer(n));
    }
    if (json_integer_value(json_object_get(role, "token_num_uses")) < 0) {
        return KMS_FAIL(c, 400, "error parsing role fields: 'token_num_uses' cannot be negative");
    }
    if (create && json_object_get(role, "token_type") == NULL) {
        json_object_set_new(role, "token_type", json_string("default-service"));
    }
    if (tt != NULL) {
        const char *s = json_string_value(tt);
        if (s == NULL) {
            return KMS_FAIL(c, 400, "invalid 'token_type' value");
        }
        if (strcmp(s, "batch") == 0 || strcmp(s, "default-batch") == 0) {
            return KMS_FAIL(c, 400, "batch tokens are not supported by kmsd; use \"service\"");
        }
        if (strcmp(s, "service") != 0 && strcmp(s, "default-service") != 0) {
            return KMS_FAIL(c, 400, "invalid 'token_type' value \"%s\"", s);
        }
        json_object_set_new(role, "token_type", json_string(s));
    }
    role_legacy_pair(c, role, "token_period", "period", json_integer(0));
    if (kms_param(c, "token_bound_cidrs") == NULL && (v = kms_param(c, "bound_cidrs")) != NULL &&
        check_cidrs(c, v, "error parsing bound_cidrs: ") != 0) {
        return -1;
    }
    role_legacy_pair(c, role, "token_bound_cidrs", "bound_cidrs", json_array());
    bool token_emt = kms_param(c, "token_explicit_max_ttl") != NULL;
    role_legacy_pair(c, role, "token_explicit_max_ttl", "explicit_max_ttl", json_integer(0));
    int64_t emt = json_integer_value(
        json_object_get(role, token_emt ? "token_explicit_max_ttl" : "explicit_max_ttl"));
    if (emt > KMS_AUTH_SYSTEM_MAX_TTL) {
        kms_warn(c,
                 "Given explicit max TTL of %lld is greater than system/mount allowed value of "
                 "%d seconds; until this is fixed attempting to create tokens against this role "
                 "will result in an error",
                 (long long)emt, KMS_AUTH_SYSTEM_MAX_TTL);
    }
    if (json_integer_value(json_object_get(role, "token_explicit_max_ttl")) < 0 ||
        json_integer_value(json_object_get(role, "explicit_max_ttl")) < 0 ||
        json_integer_value(json_object_get(role, "period")) < 0) {
        return KMS_FAIL(c, 400, "token durations cannot be negative");
    }
    return 0;
}

/* The fields a new record starts with, so a read always shows every key. */
static json_t *role_new(const char *name)
{
    return json_pack("{s:s, s:b, s:[], s:[], s:I, s:I, s:I, s:I, s:I}", "name", name,
                     "token_no_default_policy", false, "token_bound_cidrs", "bound_cidrs", "period",
                     (json_int_t)0, "token_period", (json_int_t)0, "explicit_max_ttl",
                     (json_int_t)0, "token_explicit_max_ttl", (json_int_t)0, "token_num_uses",
                     (json_int_t)0);
}

int kms_token_role_write(struct kms_ctx *c)
{
    const char *name = kms_cap(c, "role_name");
    char key[KMS_PATH_MAX + 64];
    json_t *role = NULL;
    bool create = c->op == KMS_OP_CREATE;
    int rc = -1;

    if (name == NULL || name[0] == '\0') {
        return KMS_FAIL(c, 400, "role name cannot be empty");
    }
    if (role_key(c->ns.id, name, key, sizeof(key)) != 0) {
        return KMS_FAIL(c, 400, "role name too long");
    }
    int g = kms_token_role_load(c, c->ns.id, name, &role);
    if (g < 0) {
        return KMS_FAILW(c, 500, "internal error");
    }
    if (g == KMS_STORAGE_NOTFOUND) {
        /* the existence check said update, but the role is gone: create it afresh */
        create = true;
        role = role_new(name);
        if (role == NULL) {
            return KMS_FAILW(c, 500, "internal error");
        }
    }
    if (role_plain_fields(c, role, create) != 0 || role_token_fields(c, role, create) != 0) {
        goto out;
    }
    json_t *aliases = kms_param(c, "allowed_entity_aliases");
    if (aliases != NULL) {
        json_t *clean = clean_list(c, "allowed_entity_aliases", aliases, false);
        if (clean == NULL) {
            goto out;
        }
        json_object_set_new(role, "allowed_entity_aliases", clean);
    }
    if (kms_login_rec_put(c->api, key, role) != 0) {
        KMS_FAILW(c, 500, "internal error");
        goto out;
    }
    rc = kms_reply_warnings(c);
out:
    json_decref(role);
    return rc;
}

static json_t *copy_or(const json_t *role, const char *k, json_t *dflt)
{
    json_t *v = json_object_get(role, k);
    if (v != NULL) {
        json_decref(dflt);
        return json_incref(v);
    }
    return dflt;
}

int kms_token_role_read(struct kms_ctx *c)
{
    json_t *role = NULL;
    const char *name = kms_cap(c, "role_name");
    int g = kms_token_role_load(c, c->ns.id, name ? name : "", &role);
    if (g == KMS_STORAGE_NOTFOUND) {
        return kms_fail_notfound(c);
    }
    if (g != 0) {
        return KMS_FAILW(c, 500, "internal error");
    }
    static const char *const ints[] = {"period", "token_period", "explicit_max_ttl",
                                       "token_explicit_max_ttl"};
    static const char *const lists[] = {"disallowed_policies", "allowed_policies",
                                        "disallowed_policies_glob", "allowed_policies_glob"};
    c->data = json_object();
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        json_object_set_new(c->data, ints[i], copy_or(role, ints[i], json_integer(0)));
    }
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
        json_object_set_new(c->data, lists[i], copy_or(role, lists[i], json_array()));
    }
    json_object_set_new(c->data, "name", copy_or(role, "name", json_string(name)));
    json_object_set_new(c->data, "orphan", copy_or(role, "orphan", json_false()));
    json_object_set_new(c->data, "path_suffix", copy_or(role, "path_suffix", json_string("")));
    json_object_set_new(c->data, "renewable", copy_or(role, "renewable", json_true()));
    json_object_set_new(c->data, "token_type",
                        copy_or(role, "token_type", json_string("default-service")));
    json_object_set_new(c->data, "allowed_entity_aliases",
                        copy_or(role, "allowed_entity_aliases", json_null()));
    json_object_set_new(c->data, "token_no_default_policy",
                        copy_or(role, "token_no_default_policy", json_false()));
    if (json_array_size(json_object_get(role, "token_bound_cidrs")) > 0) {
        json_object_set(c->data, "token_bound_cidrs", json_object_get(role, "token_bound_cidrs"));
    }
    if (json_array_size(json_object_get(role, "bound_cidrs")) > 0) {
        json_object_set(c->data, "bound_cidrs", json_object_get(role, "bound_cidrs"));
    }
    if (json_integer_value(json_object_get(role, "token_num_uses")) > 0) {
        json_object_set(c->data, "token_num_uses", json_object_get(role, "token_num_uses"));
    }
    json_decref(role);
    return 0;
}

int kms_token_role_exists(struct kms_ctx *c)
{
    json_t *role = NULL;
    const char *name = kms_cap(c, "role_name");
    int g = kms_token_role_load(c, c->ns.id, name ? name : "", &role);
    json_decref(role);
    return g == 0 ? 1 : g == KMS_STORAGE_NOTFOUND ? 0 : -1;
}

int kms_token_role_delete(struct kms_ctx *c)
{
    char key[KMS_PATH_MAX + 64];
    const char *name = kms_cap(c, "role_name");
    if (name == NULL || role_key(c->ns.id, name, key, sizeof(key)) != 0) {
        return 0;
    }
    return kms_login_rec_del(c->api, key) == 0 ? 0 : KMS_FAILW(c, 500, "internal error");
}

struct role_list {
    json_t *keys;
    size_t prefix_len;
};

static int role_list_cb(const uint8_t *key, size_t keylen, const uint8_t *val, size_t vallen,
                        void *arg)
{
    struct role_list *l = arg;
    (void)val;
    (void)vallen;
    return json_array_append_new(
        l->keys, json_stringn((const char *)key + l->prefix_len, keylen - l->prefix_len));
}

int kms_token_role_list(struct kms_ctx *c)
{
    char prefix[KMS_NS_ID_LEN + 16];
    struct kms_txn *txn = NULL;
    struct role_list l = {json_array(), 0};
    int rc = -1;

    snprintf(prefix, sizeof(prefix), "%s/token/role/", c->ns.id);
    l.prefix_len = strlen(prefix);
    if (l.keys == NULL || kms_storage_txn_begin(kms_api_storage(c->api), false, &txn) != 0 ||
        kms_storage_scan(txn, KMS_DB_AUTH, prefix, strlen(prefix), NULL, 0, false, role_list_cb,
                         &l) != 0) {
        KMS_FAILW(c, 500, "internal error");
        goto out;
    }
    if (json_array_size(l.keys) == 0) {
        rc = kms_fail_notfound(c);
        goto out;
    }
    c->data = json_pack("{s:O}", "keys", l.keys);
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    json_decref(l.keys);
    return rc;
}

/* ---- create against a role --------------------------------------------------------------- */

static bool list_has(const json_t *list, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
    {
        if (strcmp(json_string_value(v), s) == 0) {
            return true;
        }
    }
    return false;
}

static bool list_glob(const json_t *list, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
    {
        if (kms_glob_match(json_string_value(v), s)) {
            return true;
        }
    }
    return false;
}

/* Go's %q of a string list: ["a" "b"]. */
static void go_list(const json_t *list, const char (*arr)[KMS_POLICY_NAME_MAX], int n, char *out,
                    size_t cap)
{
    size_t o = 0;
    out[o++] = '[';
    size_t count = list ? json_array_size(list) : (size_t)n;
    for (size_t i = 0; i < count && o + 4 < cap; i++) {
        const char *s = list ? json_string_value(json_array_get(list, i)) : arr[i];
        int w = snprintf(out + o, cap - o, "%s\"%s\"", i ? " " : "", s);
        o += w > 0 ? (size_t)w : 0;
        if (o >= cap) {
            o = cap - 2;
        }
    }
    out[o++] = ']';
    out[o] = '\0';
}

int kms_token_role_policies(struct kms_ctx *c, const json_t *role, const char *const *given,
                            size_t ng, bool no_default, char pols[][KMS_POLICY_NAME_MAX], int *np)
{
    const json_t *allowed = json_object_get(role, "allowed_policies");
    const json_t *allowed_glob = json_object_get(role, "allowed_policies_glob");
    const json_t *denied = json_object_get(role, "disallowed_policies");
    const json_t *denied_glob = json_object_get(role, "disallowed_policies_glob");
    bool add_default = !no_default &&
                       !json_is_true(json_object_get(role, "token_no_default_policy")) &&
                       !list_has(denied, "default") && !list_glob(denied_glob, "default");
    const char *src[KMS_TOKEN_MAX_POLICIES];
    size_t ns = 0;

    *np = 0;
    if (ng > 0) {
        *np = kms_auth_policies_normalize(given, ng, add_default, pols);
    }
    if (*np < 0) {
        return KMS_FAIL(c, 400, "too many policies (at most %d)", KMS_TOKEN_MAX_POLICIES);
    }
    if (json_array_size(allowed) > 0 || json_array_size(allowed_glob) > 0) {
        if (json_array_size(allowed) > KMS_TOKEN_MAX_POLICIES) {
            return KMS_FAIL(c, 400, "too many policies (at most %d)", KMS_TOKEN_MAX_POLICIES);
        }
        for (size_t i = 0; i < json_array_size(allowed); i++) {
            src[ns++] = json_string_value(json_array_get(allowed, i));
        }
        char role_pols[KMS_TOKEN_MAX_POLICIES][KMS_POLICY_NAME_MAX];
        int nr = kms_auth_policies_normalize(src, ns, add_default, role_pols);
        if (nr < 0) {
            return KMS_FAIL(c, 400, "too many policies (at most %d)", KMS_TOKEN_MAX_POLICIES);
        }
        if (*np == 0) {
            memcpy(pols, role_pols, (size_t)nr * sizeof(role_pols[0]));
            *np = nr;
        } else {
            for (int k = 0; k < *np; k++) {
                bool ok = list_glob(allowed_glob, pols[k]);
                for (int j = 0; j < nr && !ok; j++) {
                    ok = strcmp(role_pols[j], pols[k]) == 0;
                }
                if (!ok) {
                    char a[1024];
                    char b[1024];
                    char g[1024];
                    go_list(NULL, pols, *np, a, sizeof(a));
                    go_list(NULL, role_pols, nr, b, sizeof(b));
                    go_list(allowed_glob, NULL, 0, g, sizeof(g));
                    return KMS_FAIL(c, 400,
                                    "token policies (%s) must be subset of the role's allowed "
                                    "policies (%s) or glob policies (%s)",
                                    a, b, g);
                }
            }
        }
    } else if (*np == 0) {
        for (size_t i = 0; i < c->token.npolicies; i++) {
            src[ns++] = c->token.policies[i];
        }
        *np = kms_auth_policies_normalize(src, ns, add_default, pols);
        if (*np < 0) {
            return KMS_FAIL(c, 400, "too many policies (at most %d)", KMS_TOKEN_MAX_POLICIES);
        }
    }
    for (int k = 0; k < *np; k++) {
        if (list_has(denied, pols[k]) || list_glob(denied_glob, pols[k])) {
            return KMS_FAIL(c, 400, "token policy \"%s\" is disallowed by this role", pols[k]);
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

int kms_token_role_entity_alias(struct kms_ctx *c, const json_t *role, const char *alias)
{
    char low[256];
    size_t i = 0;
    if (role == NULL) {
        return KMS_FAIL(c, 400, "'entity_alias' is only allowed in combination with token role");
    }
    for (; alias[i] != '\0' && i + 1 < sizeof(low); i++) {
        low[i] = (char)tolower((unsigned char)alias[i]);
    }
    low[i] = '\0';
    const json_t *allowed = json_object_get(role, "allowed_entity_aliases");
    if (!list_has(allowed, low) && !list_glob(allowed, low)) {
        return KMS_FAIL(c, 400, "invalid 'entity_alias' value");
    }
    /* allowed by the role, but there is no identity store to create or fetch the entity */
    return KMS_FAIL(c, 400, "entity aliases are not supported by kmsd (no identity store)");
}

const struct kms_field kms_token_role_fields[] = {
    {"allowed_policies", KMS_F_ARRAY},
    {"disallowed_policies", KMS_F_ARRAY},
    {"allowed_policies_glob", KMS_F_ARRAY},
    {"disallowed_policies_glob", KMS_F_ARRAY},
    {"orphan", KMS_F_BOOL},
    {"renewable", KMS_F_BOOL},
    {"path_suffix", KMS_F_STRING},
    {"allowed_entity_aliases", KMS_F_ARRAY},
    {"period", KMS_F_DURATION},
    {"explicit_max_ttl", KMS_F_DURATION},
    {"bound_cidrs", KMS_F_ARRAY},
    {"token_period", KMS_F_DURATION},
    {"token_explicit_max_ttl", KMS_F_DURATION},
    {"token_bound_cidrs", KMS_F_ARRAY},
    {"token_no_default_policy", KMS_F_BOOL},
    {"token_num_uses", KMS_F_INT},
    {"token_type", KMS_F_RAW},
    {NULL, 0},
};
