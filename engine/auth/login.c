/*
 * auth_methods.c - the login methods: sys/auth (enable, list, read, disable), and the
 * "kubernetes" and "jwt" engines mounted at auth/<path>/ (config, role/<name>, login).
 *
 * Both methods verify tokens offline (auth/ jwt.c and k8s.c): keys come from PEM (pem_keys,
 * jwt_validation_pubkeys) or JWKS documents (inline `jwks`, or `jwks_file` re-read at every
 * login so a rotated file is picked up). There is no TokenReview, no JWKS URL and no OIDC
 * discovery; those settings are refused at config write rather than silently ignored.
 *
 * Records live in KMS_DB_AUTH under "<ns id>/<mount uuid>/": "config", "role/<lower-case
 * name>" and "entity/<alias>" (the entity id a service account keeps across logins). They are
 * JSON, sealed by storage like every record; namespace deletion drops the whole prefix.
 *
 * Statuses and strings are upstream's (reference auth-audit.md §1-§2); a login error body is
 * always the plain {"errors":[msg]}, as Vault answers for login paths.
 */
#include "engine/auth/login.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Host files (jwks_file) are for the operator: only root-namespace configuration names them,
 * so an organization admin cannot probe or read the server's file system. */
bool kms_login_may_name_files(const struct kms_ctx *c)
{
    return strcmp(c->ns.id, "root") == 0;
}

/* ---- storage helpers --------------------------------------------------------------------- */

int kms_login_record_key(const struct kms_mount *m, const char *suffix, char *out, size_t n)
{
    char prefix[KMS_NS_ID_LEN + 40];
    kms_mount_prefix(m, prefix, sizeof(prefix));
    int w = snprintf(out, n, "%s%s", prefix, suffix);
    return (w < 0 || (size_t)w >= n) ? -1 : 0;
}

/* 0 with *out, KMS_STORAGE_NOTFOUND, or -1. */
int kms_login_rec_get(struct kms_api *api, const char *key, json_t **out)
{
    struct kms_txn *txn = NULL;
    uint8_t *val = NULL;
    size_t vallen = 0;
    int rc = -1;

    *out = NULL;
    if (kms_storage_txn_begin(kms_api_storage(api), false, &txn) != 0) {
        goto out;
    }
    rc = kms_storage_get(txn, KMS_DB_AUTH, key, strlen(key), &val, &vallen);
    if (rc != 0) {
        goto out;
    }
    *out = json_loadb((const char *)val, vallen, 0, NULL);
    rc = json_is_object(*out) ? 0 : -1;
out:
    kms_storage_txn_abort(&txn);
    kms_free_wipe((void **)&val, vallen);
    if (rc != 0) {
        json_decref(*out);
        *out = NULL;
    }
    return rc;
}

int kms_login_rec_put(struct kms_api *api, const char *key, const json_t *j)
{
    struct kms_txn *txn = NULL;
    char *text = json_dumps(j, JSON_COMPACT);
    int rc = -1;
    if (text != NULL && kms_storage_txn_begin(kms_api_storage(api), true, &txn) == 0 &&
        kms_storage_put(txn, KMS_DB_AUTH, key, strlen(key), text, strlen(text)) == 0 &&
        kms_storage_txn_commit(&txn) == 0) {
        rc = 0;
    }
    kms_storage_txn_abort(&txn);
    if (text != NULL) {
        kms_memzero(text, strlen(text));
        free(text);
    }
    return rc;
}

int kms_login_rec_del(struct kms_api *api, const char *key)
{
    struct kms_txn *txn = NULL;
    int rc = -1;
    if (kms_storage_txn_begin(kms_api_storage(api), true, &txn) == 0 &&
        kms_storage_del(txn, KMS_DB_AUTH, key, strlen(key)) >= 0 &&
        kms_storage_txn_commit(&txn) == 0) {
        rc = 0;
    }
    kms_storage_txn_abort(&txn);
    return rc;
}

/* Go's %q for the strings we quote in messages (ASCII escapes, \xNN otherwise). */
void kms_login_go_quote(const char *s, char *out, size_t n)
{
    size_t o = 0;
    if (n < 3) {
        return;
    }
    out[o++] = '"';
    for (; *s != '\0' && o + 6 < n; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            out[o++] = '\\';
            out[o++] = (char)ch;
        } else if (ch == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else if (ch == '\t') {
            out[o++] = '\\';
            out[o++] = 't';
        } else if (ch < 0x20 || ch == 0x7f) {
            o += (size_t)snprintf(out + o, n - o, "\\x%02x", ch);
        } else {
            out[o++] = (char)ch;
        }
    }
    out[o++] = '"';
    out[o] = '\0';
}

bool kms_login_all_strings(const json_t *arr)
{
    size_t i;
    json_t *v;
    if (!json_is_array(arr)) {
        return false;
    }
    json_array_foreach(arr, i, v)
    {
        if (!json_is_string(v)) {
            return false;
        }
    }
    return true;
}

/* A string member, "" when absent or not a string. */
const char *kms_login_jstr(const json_t *obj, const char *key)
{
    const char *v = json_string_value(json_object_get(obj, key));
    return v ? v : "";
}

/* A JSON array of strings into a borrowed const char* vector (max n); returns the count. */
size_t kms_login_str_vec(const json_t *arr, const char **out, size_t n)
{
    size_t k = 0;
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (k < n && json_is_string(v)) {
            out[k++] = json_string_value(v);
        }
    }
    return k;
}

/* `jwks` may arrive as a JSON object or as its text; store the text. */
int kms_login_jwks_text(struct kms_ctx *c, char **out)
{
    json_t *v = kms_param(c, "jwks");
    *out = NULL;
    if (v == NULL) {
        return 0;
    }
    if (json_is_string(v)) {
        *out = strdup(json_string_value(v));
    } else if (json_is_object(v)) {
        *out = json_dumps(v, JSON_COMPACT);
    } else {
        return KMS_FAIL(c, 400, "jwks must be a JWKS document (a JSON object or its text)");
    }
    return *out ? 0 : KMS_FAILW(c, 500, "out of memory");
}

/* ---- token fields (Vault's tokenutil) ---------------------------------------------------- */

enum tf_type { TF_DUR, TF_ARRAY, TF_BOOL, TF_INT, TF_STR };

static const struct {
    const char *name;
    const char *legacy;
    enum tf_type type;
} tok_fields[] = {
    {"token_ttl", "ttl", TF_DUR},
    {"token_max_ttl", "max_ttl", TF_DUR},
    {"token_period", "period", TF_DUR},
    {"token_explicit_max_ttl", NULL, TF_DUR},
    {"token_policies", "policies", TF_ARRAY},
    {"token_no_default_policy", NULL, TF_BOOL},
    {"token_num_uses", "num_uses", TF_INT},
    {"token_bound_cidrs", "bound_cidrs", TF_ARRAY},
    {"token_type", NULL, TF_STR},
    {"token_strictly_bind_ip", NULL, TF_BOOL},
};

static json_t *tf_default(enum tf_type t, const char *name)
{
    switch (t) {
    case TF_DUR:
    case TF_INT:
        return json_integer(0);
    case TF_ARRAY:
        return json_array();
    case TF_BOOL:
        return json_false();
    case TF_STR:
        return json_string(strcmp(name, "token_type") == 0 ? "default-service" : "");
    }
    return json_null();
}

/* Apply token_* (and legacy) parameters to a role record; 400 on conflicts or bad values. */
int kms_login_token_fields_apply(struct kms_ctx *c, json_t *role, bool create)
{
    for (size_t i = 0; i < sizeof(tok_fields) / sizeof(tok_fields[0]); i++) {
        json_t *nv = kms_param(c, tok_fields[i].name);
        json_t *ov = tok_fields[i].legacy ? kms_param(c, tok_fields[i].legacy) : NULL;
        char lkey[40];
        if (tok_fields[i].legacy != NULL) {
            snprintf(lkey, sizeof(lkey), "legacy_%s", tok_fields[i].legacy);
        }
        if (nv != NULL && ov != NULL) {
            return KMS_FAIL(c, 400, "Cannot specify both \"%s\" and \"%s\"", tok_fields[i].legacy,
                            tok_fields[i].name);
        }
        json_t *v = nv ? nv : ov;
        if (v != NULL) {
            if (tok_fields[i].type == TF_ARRAY && !kms_login_all_strings(v)) {
                return KMS_FAIL(c, 400, "%s must be a list of strings", tok_fields[i].name);
            }
            json_object_set(role, tok_fields[i].name, v);
            if (tok_fields[i].legacy != NULL) {
                json_object_set_new(role, lkey, json_boolean(ov != NULL));
            }
        } else if (create || json_object_get(role, tok_fields[i].name) == NULL) {
            json_object_set_new(role, tok_fields[i].name,
                                tf_default(tok_fields[i].type, tok_fields[i].name));
        }
    }
    int64_t ttl = json_integer_value(json_object_get(role, "token_ttl"));
    int64_t max = json_integer_value(json_object_get(role, "token_max_ttl"));
    int64_t period = json_integer_value(json_object_get(role, "token_period"));
    int64_t explicit_max = json_integer_value(json_object_get(role, "token_explicit_max_ttl"));
    int64_t uses = json_integer_value(json_object_get(role, "token_num_uses"));
    const char *type = json_string_value(json_object_get(role, "token_type"));
    if (ttl < 0 || max < 0 || period < 0 || explicit_max < 0) {
        return KMS_FAIL(c, 400, "token durations cannot be negative");
    }
    if (uses < 0) {
        return KMS_FAIL(c, 400, "'token_num_uses' cannot be negative");
    }
    if (type == NULL || (strcmp(type, "default-service") != 0 && strcmp(type, "service") != 0 &&
                         strcmp(type, "default") != 0 && strcmp(type, "batch") != 0 &&
                         strcmp(type, "default-batch") != 0)) {
        return KMS_FAIL(c, 400, "invalid 'token_type' value \"%s\"", type ? type : "");
    }
    if (strcmp(type, "batch") == 0 || strcmp(type, "default-batch") == 0) {
        return KMS_FAIL(c, 400, "batch tokens are not supported by kmsd; use \"service\"");
    }
    /* a token holds at most this many of each: a longer list would be accepted here and then
     * fail every login (policies) or issue tokens that cannot be used (CIDRs) */
    if (json_array_size(json_object_get(role, "token_policies")) > KMS_TOKEN_MAX_POLICIES) {
        return KMS_FAIL(c, 400, "too many token_policies (at most %d)", KMS_TOKEN_MAX_POLICIES);
    }
    if (json_array_size(json_object_get(role, "token_bound_cidrs")) > KMS_TOKEN_MAX_CIDRS) {
        return KMS_FAIL(c, 400, "too many CIDR blocks in token_bound_cidrs (at most %d)",
                        KMS_TOKEN_MAX_CIDRS);
    }
    size_t i;
    json_t *cidr;
    json_array_foreach(json_object_get(role, "token_bound_cidrs"), i, cidr)
    {
        if (!kms_cidr_valid(json_string_value(cidr))) {
            return KMS_FAIL(c, 400, "invalid CIDR \"%s\" in token_bound_cidrs",
                            json_string_value(cidr));
        }
    }
    if (period > KMS_AUTH_SYSTEM_MAX_TTL) {
        char a[32];
        char b[32];
        kms_auth_human_duration(period, a);
        kms_auth_human_duration(KMS_AUTH_SYSTEM_MAX_TTL, b);
        return KMS_FAIL(c, 400,
                        "token period of '\"%s\"' is greater than the backend's maximum lease "
                        "TTL of '\"%s\"'",
                        a, b);
    }
    if (max > 0 && ttl > max) {
        return KMS_FAIL(c, 400, "token ttl should not be greater than token max ttl");
    }
    if (max > KMS_AUTH_SYSTEM_MAX_TTL) {
        kms_warn(c, "max_ttl is greater than the system or backend mount's maximum TTL value; "
                    "issued tokens' max TTL value will be truncated");
    }
    return 0;
}

/* Token fields of a role record into a read response (Vault's PopulateTokenData). */
void kms_login_token_fields_render(const json_t *role, json_t *d)
{
    for (size_t i = 0; i < sizeof(tok_fields) / sizeof(tok_fields[0]); i++) {
        json_t *v = json_object_get(role, tok_fields[i].name);
        json_object_set_new(d, tok_fields[i].name,
                            v ? json_incref(v)
                              : tf_default(tok_fields[i].type, tok_fields[i].name));
        if (tok_fields[i].legacy != NULL) {
            char lkey[40];
            snprintf(lkey, sizeof(lkey), "legacy_%s", tok_fields[i].legacy);
            bool shown = json_is_true(json_object_get(role, lkey));
            bool nonzero = v != NULL && ((json_is_integer(v) && json_integer_value(v) > 0) ||
                                         (json_is_array(v) && json_array_size(v) > 0));
            if (shown && nonzero) {
                json_object_set(d, tok_fields[i].legacy, v);
            }
        }
    }
}

/* ---- login helpers ----------------------------------------------------------------------- */

/* "auth/k8s-host/" + "my-ns-app" -> "k8s-host-my-ns-app" (trailing '-' trimmed). */
void kms_login_display_name(const char *mount_path, const char *tail, char *out, size_t n)
{
    const char *p = mount_path;
    size_t o = 0;
    if (strncmp(p, "auth/", 5) == 0) {
        p += 5;
    }
    for (; *p != '\0' && o + 1 < n; p++) {
        out[o++] = *p == '/' ? '-' : *p;
    }
    for (; *tail != '\0' && o + 1 < n; tail++) {
        out[o++] = *tail;
    }
    while (o > 0 && out[o - 1] == '-') {
        o--;
    }
    out[o] = '\0';
}

/* Stable entity id per (mount, alias), created on first login. */
/* Aliases up to this many bytes name their entity record as they are ("entity/<alias>"). */
#define ENTITY_ALIAS_IN_KEY 200

int kms_login_entity_id(struct kms_ctx *c, const char *alias, char out[40])
{
    char key[KMS_PATH_MAX + 64];
    char sub[KMS_PATH_MAX];
    json_t *rec = NULL;
    int rc = -1;

    size_t alen = strlen(alias);
    if (alen <= ENTITY_ALIAS_IN_KEY) {
        snprintf(sub, sizeof(sub), "entity/%s", alias);
    } else {
        /* a long alias (a JWT's user claim may be anything) would pass the store's key limit:
         * its record is named by its SHA-256, and the record's own alias must match */
        uint8_t d[32];
        char hex[65];
        if (kms_hash(KMS_HASH_SHA2_256, alias, alen, d) != 0) {
            return -1;
        }
        kms_hex_encode(d, sizeof(d), hex);
        snprintf(sub, sizeof(sub), "entity/sha256/%s", hex);
    }
    if (kms_login_record_key(&c->mount, sub, key, sizeof(key)) != 0) {
        return -1;
    }
    int g = kms_login_rec_get(c->api, key, &rec);
    const char *had = json_string_value(json_object_get(rec, "alias"));
    if (g == 0 && alen > ENTITY_ALIAS_IN_KEY && (had == NULL || strcmp(had, alias) != 0)) {
        goto out; /* another alias under the same digest: never hand out its entity */
    }
    if (g == 0 && json_is_string(json_object_get(rec, "id"))) {
        snprintf(out, 40, "%s", json_string_value(json_object_get(rec, "id")));
        rc = 0;
        goto out;
    }
    if (g < 0) {
        goto out;
    }
    char id[37];
    if (kms_uuid4(id) != 0) {
        goto out;
    }
    json_decref(rec);
    rec = json_pack("{s:s, s:s}", "id", id, "alias", alias);
    if (rec == NULL || kms_login_rec_put(c->api, key, rec) != 0) {
        goto out;
    }
    snprintf(out, 40, "%s", id);
    rc = 0;
out:
    json_decref(rec);
    return rc;
}

/* An auth mount's tuned default_lease_ttl and max_lease_ttl (0 when not tuned): they bound
 * the tokens it issues and renews, as OpenBao's CalculateTTL reads them from the mount. */
static void mount_lease_ttls(struct kms_api *api, const struct kms_mount *m, int64_t *def,
                             int64_t *max)
{
    json_t *t = kms_mount_tuning_get(api, m);
    json_t *cfg = json_object_get(t, "config");
    *def = json_integer_value(json_object_get(cfg, "default_lease_ttl"));
    *max = json_integer_value(json_object_get(cfg, "max_lease_ttl"));
    json_decref(t);
}

/* Issue the login token for a role and fill c->auth. */

int kms_login_issue_token(struct kms_ctx *c, const json_t *role, const struct kms_login_out *lo)
{
    const char *given[KMS_TOKEN_MAX_POLICIES];
    char pols[KMS_TOKEN_MAX_POLICIES][KMS_POLICY_NAME_MAX];
    const char *polp[KMS_TOKEN_MAX_POLICIES];
    const char *cidrs[KMS_TOKEN_MAX_CIDRS];
    char dname[256];
    char path[KMS_PATH_MAX + 8];
    char eid[40];
    char token[KMS_TOKEN_MAX_LEN];
    char warning[256];
    struct kms_token tok;
    int rc = -1;

    json_t *tp = json_object_get(role, "token_policies");
    if (json_array_size(tp) > KMS_TOKEN_MAX_POLICIES) {
        return KMS_FAIL(c, 400, "too many token_policies (at most %d)", KMS_TOKEN_MAX_POLICIES);
    }
    size_t ng = kms_login_str_vec(tp, given, KMS_TOKEN_MAX_POLICIES);
    bool no_default = json_is_true(json_object_get(role, "token_no_default_policy"));
    int np = kms_auth_policies_normalize(given, ng, !no_default, pols);
    if (np < 0) {
        return KMS_FAIL(c, 400, "too many token_policies (at most %d)", KMS_TOKEN_MAX_POLICIES);
    }
    for (int i = 0; i < np; i++) {
        if (strcmp(pols[i], "root") == 0) {
            return KMS_FAIL(c, 400, "auth methods cannot create root tokens");
        }
        polp[i] = pols[i];
    }
    if (kms_login_entity_id(c, lo->alias, eid) != 0) {
        return KMS_FAILW(c, 500, "internal error");
    }
    kms_login_display_name(c->mount.path, lo->display_tail, dname, sizeof(dname));
    snprintf(path, sizeof(path), "%slogin", c->mount.path);
    size_t nc =
        kms_login_str_vec(json_object_get(role, "token_bound_cidrs"), cidrs, KMS_TOKEN_MAX_CIDRS);
    int64_t mount_def = 0;
    int64_t mount_max = 0;
    mount_lease_ttls(c->api, &c->mount, &mount_def, &mount_max);
    struct kms_token_spec spec = {
        .ns_id = c->ns.id,
        .path = path,
        .display_name = dname,
        .subject = lo->subject,
        .policies = polp,
        .npolicies = (size_t)np,
        .meta_keys = lo->meta_keys,
        .meta_values = lo->meta_values,
        .nmeta = lo->nmeta,
        .ttl = json_integer_value(json_object_get(role, "token_ttl")),
        .max_ttl = json_integer_value(json_object_get(role, "token_max_ttl")),
        .explicit_max_ttl = json_integer_value(json_object_get(role, "token_explicit_max_ttl")),
        .period = json_integer_value(json_object_get(role, "token_period")),
        .num_uses = json_integer_value(json_object_get(role, "token_num_uses")),
        .mount_default_ttl = mount_def,
        .mount_max_ttl = mount_max,
        .renewable = true,
        .entity_id = eid,
        .role = lo->role_name,
        .cidrs = cidrs,
        .ncidrs = nc,
    };
    if (kms_auth_token_create(kms_api_auth(c->api), &spec, token, &tok, warning, sizeof(warning),
                              &c->err) != 0) {
        goto out;
    }
    if (warning[0] != '\0') {
        kms_warn(c, "%s", warning);
    }
    /* the response line names who logged in (docs/audit.md: subject) */
    snprintf(c->audit.login_subject, sizeof(c->audit.login_subject), "%s", tok.subject);
    c->audit.subject = c->audit.login_subject;
    c->auth = kms_token_auth_block(&tok, token);
    if (c->auth == NULL) {
        KMS_FAILW(c, 500, "internal error");
        goto out;
    }
    rc = 0;
out:
    kms_memzero(token, sizeof(token));
    kms_memzero(&tok, sizeof(tok));
    return rc;
}

int kms_login_load_role(struct kms_ctx *c, const char *name, json_t **role)
{
    char lower[KMS_PATH_MAX];
    char key[KMS_PATH_MAX + 64];
    size_t n = strlen(name);
    *role = NULL;
    if (n == 0 || n + 6 >= sizeof(lower)) {
        return KMS_STORAGE_NOTFOUND;
    }
    memcpy(lower, "role/", 5);
    for (size_t i = 0; i <= n; i++) {
        lower[5 + i] = (char)tolower((unsigned char)name[i]);
    }
    if (kms_login_record_key(&c->mount, lower, key, sizeof(key)) != 0) {
        return KMS_STORAGE_NOTFOUND;
    }
    return kms_login_rec_get(c->api, key, role);
}

int kms_login_role_key(struct kms_ctx *c, char *key, size_t n)
{
    const char *name = kms_cap(c, "name");
    char lower[KMS_PATH_MAX];
    size_t len = name ? strlen(name) : 0;
    if (len == 0 || len + 6 >= sizeof(lower)) {
        return -1;
    }
    memcpy(lower, "role/", 5);
    for (size_t i = 0; i <= len; i++) {
        lower[5 + i] = (char)tolower((unsigned char)name[i]);
    }
    return kms_login_record_key(&c->mount, lower, key, n);
}

int kms_login_role_exists(struct kms_ctx *c)
{
    char key[KMS_PATH_MAX + 64];
    json_t *r = NULL;
    if (kms_login_role_key(c, key, sizeof(key)) != 0) {
        return 0;
    }
    int g = kms_login_rec_get(c->api, key, &r);
    json_decref(r);
    return g == 0 ? 1 : g == KMS_STORAGE_NOTFOUND ? 0 : -1;
}

int kms_login_config_exists(struct kms_ctx *c)
{
    char key[KMS_PATH_MAX + 64];
    json_t *r = NULL;
    if (kms_login_record_key(&c->mount, "config", key, sizeof(key)) != 0) {
        return -1;
    }
    int g = kms_login_rec_get(c->api, key, &r);
    json_decref(r);
    return g == 0 ? 1 : g == KMS_STORAGE_NOTFOUND ? 0 : -1;
}

struct kms_login_role_list {
    json_t *keys;
    size_t prefix_len;
};

static int role_list_cb(const uint8_t *key, size_t keylen, const uint8_t *val, size_t vallen,
                        void *arg)
{
    struct kms_login_role_list *l = arg;
    (void)val;
    (void)vallen;
    json_array_append_new(l->keys,
                          json_stringn((const char *)key + l->prefix_len, keylen - l->prefix_len));
    return 0;
}

int kms_login_role_list(struct kms_ctx *c)
{
    char prefix[KMS_PATH_MAX];
    struct kms_txn *txn = NULL;
    struct kms_login_role_list l = {json_array(), 0};
    int rc = -1;

    if (kms_login_record_key(&c->mount, "role/", prefix, sizeof(prefix)) != 0) {
        goto out;
    }
    l.prefix_len = strlen(prefix);
    if (kms_storage_txn_begin(kms_api_storage(c->api), false, &txn) != 0 ||
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

int kms_login_role_delete(struct kms_ctx *c)
{
    char key[KMS_PATH_MAX + 64];
    if (kms_login_role_key(c, key, sizeof(key)) != 0) {
        return KMS_FAIL(c, 400, "missing role name");
    }
    return kms_login_rec_del(c->api, key) == 0 ? 0 : KMS_FAILW(c, 500, "internal error");
}

bool kms_login_role_cidr_ok(struct kms_ctx *c, const json_t *role)
{
    json_t *cidrs = json_object_get(role, "token_bound_cidrs");
    size_t i;
    json_t *v;
    if (json_array_size(cidrs) == 0) {
        return true;
    }
    json_array_foreach(cidrs, i, v)
    {
        if (c->http->remote_addr != NULL &&
            kms_cidr_contains(json_string_value(v), c->http->remote_addr)) {
            return true;
        }
    }
    return false;
}

/* ---- renewal ----------------------------------------------------------------------------- */

int kms_login_renew_params(struct kms_ctx *c, const struct kms_token *tok,
                           struct kms_token_ttl *out)
{
    char mpath[KMS_PATH_MAX];
    struct kms_mount m;
    json_t *role = NULL;
    size_t n = strlen(tok->path);

    /* "auth/<mount>/login" -> mount "auth/<mount>/" */
    if (n <= 5 || strcmp(tok->path + n - 5, "login") != 0 || n - 5 >= sizeof(mpath)) {
        return 1;
    }
    memcpy(mpath, tok->path, n - 5);
    mpath[n - 5] = '\0';
    if (kms_registry_mount_get(c->api, tok->ns_id, mpath, &m) != 0) {
        return KMS_FAIL(c, 400, "failed to renew entry: no auth method is mounted at %s", mpath);
    }
    struct kms_mount saved = c->mount;
    c->mount = m;
    int g = kms_login_load_role(c, tok->role, &role);
    c->mount = saved;
    if (g == KMS_STORAGE_NOTFOUND) {
        return KMS_FAIL(c, 400, "failed to renew entry: role %s does not exist during renewal",
                        tok->role);
    }
    if (g != 0) {
        return KMS_FAILW(c, 500, "internal error");
    }
    out->ttl = json_integer_value(json_object_get(role, "token_ttl"));
    out->max_ttl = json_integer_value(json_object_get(role, "token_max_ttl"));
    out->period = json_integer_value(json_object_get(role, "token_period"));
    mount_lease_ttls(c->api, &m, &out->mount_default_ttl, &out->mount_max_ttl);
    json_decref(role);
    return 0;
}

/* ---- sys/auth ---------------------------------------------------------------------------- */

/* A method as sys/auth shows it, with its tuned settings. */
static json_t *auth_mount_json(struct kms_api *api, const struct kms_mount *m)
{
    json_t *t = api != NULL ? kms_mount_tuning_get(api, m) : NULL;
    json_t *j = kms_mount_info(m, t);
    json_decref(t);
    return j;
}

struct list_auth {
    struct kms_api *api;
    json_t *out;
};

static int list_auth_cb(const struct kms_mount *m, void *arg)
{
    struct list_auth *l = arg;
    if (strncmp(m->path, "auth/", 5) == 0) {
        json_object_set_new(l->out, m->path + 5, auth_mount_json(l->api, m));
    }
    return 0;
}

int kms_login_mounts_list(struct kms_ctx *c)
{
    struct kms_mount tok;
    kms_mount_token_store(c->ns.id, &tok);
    c->data = json_object();
    json_object_set_new(c->data, "token/", auth_mount_json(NULL, &tok));
    struct list_auth l = {c->api, c->data};
    if (kms_registry_mount_list(c->api, c->ns.id, list_auth_cb, &l) != 0) {
        return KMS_FAILW(c, 500, "internal error");
    }
    return 0;
}

/* "k8s-host" / "/k8s-host/" -> "auth/k8s-host/" */
static int auth_mount_path(struct kms_ctx *c, char *out, size_t n)
{
    const char *p = kms_cap(c, "path");
    size_t len = kms_trim_slashes(p, &p);
    if (len == 0) {
        return KMS_FAIL(c, 400, "path cannot be empty");
    }
    if (len + 7 > n) {
        return KMS_FAIL(c, 400, "path too long");
    }
    if (memmem(p, len, "..", 2) != NULL) {
        return KMS_FAIL(c, 400, "path cannot contain '..'");
    }
    snprintf(out, n, "auth/%.*s/", (int)len, p);
    return 0;
}

int kms_login_mounts_read(struct kms_ctx *c)
{
    char path[KMS_PATH_MAX];
    struct kms_mount m;
    if (auth_mount_path(c, path, sizeof(path)) != 0) {
        return -1;
    }
    if (kms_registry_mount_get(c->api, c->ns.id, path, &m) != 0) {
        return KMS_FAIL(c, 400, "No auth engine at %s", path);
    }
    c->data = auth_mount_json(c->api, &m);
    return 0;
}

/* Disabling a method revokes the tokens it issued; its roles and config go with the mount
 * (the engine's purge, in the registry's transaction). */
int kms_login_mounts_delete(struct kms_ctx *c)
{
    char path[KMS_PATH_MAX];
    struct kms_mount m;
    if (auth_mount_path(c, path, sizeof(path)) != 0) {
        return -1;
    }
    if (strcmp(path, "auth/token/") == 0) {
        return KMS_FAIL(c, 400, "token credential backend cannot be disabled"); /* OpenBao's */
    }
    if (kms_registry_mount_get(c->api, c->ns.id, path, &m) != 0) {
        return 0; /* like Vault, disabling a missing mount succeeds */
    }
    if (kms_auth_token_revoke_prefix(kms_api_auth(c->api), c->ns.id, path) != 0) {
        return KMS_FAILW(c, 500, "internal error");
    }
    int rc = kms_registry_mount_remove(c->api, c->ns.id, path, &c->err);
    return rc == KMS_STORAGE_NOTFOUND ? 0 : rc;
}

int kms_login_mounts_write(struct kms_ctx *c)
{
    char path[KMS_PATH_MAX];
    struct kms_mount m;
    if (auth_mount_path(c, path, sizeof(path)) != 0) {
        return -1;
    }
    const char *type = NULL;
    const char *desc = "";
    if (!kms_param_str(c, "type", &type) || type[0] == '\0') {
        return KMS_FAIL(c, 400, "backend type must be specified as a string");
    }
    (void)kms_param_str(c, "description", &desc);
    if (strncmp(path, "auth/token/", 11) == 0) {
        /* the token store is a mount there: a method below it could never be reached */
        return KMS_FAIL(c, 400, "path is already in use at auth/token/");
    }
    if (strcmp(type, "kubernetes") != 0 && strcmp(type, "jwt") != 0) {
        return KMS_FAIL(c, 400, "plugin not found in the catalog: %s", type);
    }
    /* OpenBao's enable takes the tune settings in "config" (and "options") */
    return kms_mount_enable(c, path, type, desc, &m);
}

const struct kms_field kms_login_mounts_fields[] = {
    {"type", KMS_F_STRING},
    {"description", KMS_F_STRING},
    {"config", KMS_F_MAP},
    {"options", KMS_F_MAP},
    {"local", KMS_F_BOOL},
    {"seal_wrap", KMS_F_BOOL},
    {"plugin_name", KMS_F_STRING},
    {"plugin_version", KMS_F_STRING},
    {"external_entropy_access", KMS_F_BOOL},
    {NULL, 0},
};

const struct kms_field kms_login_fields[] = {
    {"role", KMS_F_STRING},
    {"jwt", KMS_F_STRING},
    {NULL, 0},
};

const struct kms_field kms_login_list_fields[] = {
    {"after", KMS_F_STRING},
    {"limit", KMS_F_INT},
    {NULL, 0},
};

/* Purge: an auth mount's config and roles; a namespace's policies, auth records and tokens
 * (state is the token store). */
static int auth_purge(void *state, struct kms_txn *txn, const char *ns_id,
                      const struct kms_mount *m)
{
    char prefix[KMS_NS_ID_LEN + 40];
    if (m == NULL) {
        snprintf(prefix, sizeof(prefix), "%s/", ns_id);
        return kms_storage_del_prefix(txn, KMS_DB_POLICIES, prefix, strlen(prefix), NULL) != 0 ||
                       kms_storage_del_prefix(txn, KMS_DB_AUTH, prefix, strlen(prefix), NULL) !=
                           0 ||
                       (state != NULL && kms_auth_token_purge_ns(state, txn, ns_id) != 0)
                   ? -1
                   : 0;
    }
    if (strcmp(m->type, "kubernetes") != 0 && strcmp(m->type, "jwt") != 0) {
        return 0;
    }
    kms_mount_prefix(m, prefix, sizeof(prefix));
    return kms_storage_del_prefix(txn, KMS_DB_AUTH, prefix, strlen(prefix), NULL) != 0 ? -1 : 0;
}

/* After a namespace's purge committed: no cached lookup of its tokens survives. */
static void auth_purged(void *state, const char *ns_id, const struct kms_mount *m)
{
    (void)ns_id;
    if (m == NULL && state != NULL) {
        kms_auth_token_cache_flush(state);
    }
}

static const struct kms_route auth_sys_routes[] = {
    {.tmpl = "auth",
     .flags = KMS_RT_SYS_TOP,
     .resource = "AuthMethod",
     .on = {[KMS_OP_READ] = {kms_login_mounts_list, NULL, 0}}},
    {.tmpl = "auth/*path",
     .flags = KMS_RT_SYS_TOP | KMS_RT_SUDO,
     .fields = kms_login_mounts_fields,
     .resource = "AuthMethod",
     .on = {[KMS_OP_READ] = {kms_login_mounts_read, NULL, 0},
            [KMS_OP_UPDATE] = {kms_login_mounts_write, NULL, 0},
            [KMS_OP_DELETE] = {kms_login_mounts_delete, NULL, 0}}},
    {.tmpl = "policy",
     .flags = KMS_RT_SYS_TOP,
     .resource = "Policy",
     .on = {[KMS_OP_READ] = {kms_policy_api_list, NULL, 0}}},
    {.tmpl = "policy/",
     .flags = KMS_RT_SYS_TOP,
     .resource = "Policy",
     .on = {[KMS_OP_LIST] = {kms_policy_api_list, NULL, 0}}},
    {.tmpl = "policy/*name",
     .flags = KMS_RT_SYS_TOP,
     .fields = kms_policy_api_fields,
     .resource = "Policy",
     .on = {[KMS_OP_READ] = {kms_policy_api_read, NULL, 0},
            [KMS_OP_UPDATE] = {kms_policy_api_write, NULL, 0},
            [KMS_OP_DELETE] = {kms_policy_api_delete, NULL, 0}}},
    {.tmpl = "policies/acl/",
     .flags = KMS_RT_SYS_TOP,
     .resource = "Policy",
     .on = {[KMS_OP_LIST] = {kms_policy_api_list, NULL, 0}}},
    {.tmpl = "policies/acl/*name",
     .flags = KMS_RT_SYS_TOP,
     .fields = kms_policy_api_fields,
     .resource = "Policy",
     .on = {[KMS_OP_READ] = {kms_policy_api_read, NULL, 0},
            [KMS_OP_UPDATE] = {kms_policy_api_write, NULL, 0},
            [KMS_OP_DELETE] = {kms_policy_api_delete, NULL, 0}}},
    KMS_ROUTES_END,
};

int kms_auth_engines_add(struct kms_api *api)
{
    const struct kms_engine engines[] = {
        {.type = "system", .builtin_path = "sys/", .routes = auth_sys_routes},
        {.type = "token",
         .builtin_path = "auth/token/",
         .resource = "Token",
         .routes = kms_token_routes,
         .state = kms_api_auth(api),
         .purge = auth_purge,
         .purged = auth_purged},
        {.type = "kubernetes",
         .auth_method = true,
         .resource = "AuthMethod",
         .routes = kms_login_kubernetes_routes},
        {.type = "jwt",
         .auth_method = true,
         .resource = "AuthMethod",
         .routes = kms_login_jwt_routes},
    };
    for (size_t i = 0; i < sizeof(engines) / sizeof(engines[0]); i++) {
        if (kms_api_engine_add(api, &engines[i]) != 0) {
            return -1;
        }
    }
    return 0;
}
