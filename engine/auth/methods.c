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
#include "engine/auth/auth_int.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JWKS_FILE_MAX (1u << 20)

/* ---- storage helpers --------------------------------------------------------------------- */

static int auth_key(const struct kms_mount *m, const char *suffix, char *out, size_t n)
{
    char prefix[KMS_NS_ID_LEN + 40];
    kms_mount_prefix(m, prefix, sizeof(prefix));
    int w = snprintf(out, n, "%s%s", prefix, suffix);
    return (w < 0 || (size_t)w >= n) ? -1 : 0;
}

/* 0 with *out, KMS_STORAGE_NOTFOUND, or -1. */
static int rec_get(struct kms_api *api, const char *key, json_t **out)
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

static int rec_put(struct kms_api *api, const char *key, const json_t *j)
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

static int rec_del(struct kms_api *api, const char *key)
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
static void go_quote(const char *s, char *out, size_t n)
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

static bool all_strings(const json_t *arr)
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
static const char *jstr(const json_t *obj, const char *key)
{
    const char *v = json_string_value(json_object_get(obj, key));
    return v ? v : "";
}

/* A JSON array of strings into a borrowed const char* vector (max n); returns the count. */
static size_t str_vec(const json_t *arr, const char **out, size_t n)
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

/* ---- keys -------------------------------------------------------------------------------- */

static int read_file_text(const char *path, char **out, size_t *len, struct kms_err *err)
{
    FILE *f = path[0] == '/' ? fopen(path, "rb") : NULL;
    char *buf = NULL;
    size_t n = 0;
    int rc = -1;

    *out = NULL;
    if (f == NULL) {
        kms_err_set(err, 400, "cannot read jwks_file %s: %s", path,
                    path[0] == '/' ? strerror(errno) : "the path must be absolute");
        goto out;
    }
    buf = malloc(JWKS_FILE_MAX + 1);
    if (buf == NULL) {
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    n = fread(buf, 1, JWKS_FILE_MAX + 1, f);
    if (ferror(f) || n > JWKS_FILE_MAX) {
        kms_err_set(err, 400, "cannot read jwks_file %s: unreadable or larger than 1 MiB", path);
        goto out;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    buf = NULL;
    rc = 0;
out:
    if (f != NULL) {
        fclose(f);
    }
    free(buf);
    return rc;
}

/* Build the key set a config names: PEM list, inline JWKS text, JWKS file. */
static int build_keyset(const json_t *pems, const char *jwks, const char *jwks_file,
                        struct kms_keyset **out, struct kms_err *err)
{
    struct kms_keyset *ks = NULL;
    char *file = NULL;
    size_t flen = 0;
    int rc = -1;

    *out = NULL;
    if (kms_keyset_create(&ks) != 0) {
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    size_t i;
    json_t *v;
    json_array_foreach(pems, i, v)
    {
        if (!json_is_string(v) || kms_keyset_add_pem(ks, json_string_value(v), i, err) != 0) {
            if (!json_is_string(v)) {
                kms_err_set(err, 400, "pem_keys[%zu]: expected a string", i);
            }
            goto out;
        }
    }
    if (jwks != NULL && jwks[0] != '\0' && kms_keyset_add_jwks(ks, jwks, strlen(jwks), err) != 0) {
        goto out;
    }
    if (jwks_file != NULL && jwks_file[0] != '\0') {
        if (read_file_text(jwks_file, &file, &flen, err) != 0) {
            goto out;
        }
        /* Say nothing about the file's content: it is not echoed to the API caller. */
        if (kms_keyset_add_jwks(ks, file, flen, err) != 0) {
            kms_err_set(err, 400, "jwks_file %s does not hold a JWKS with a usable signature key",
                        jwks_file);
            goto out;
        }
    }
    *out = ks;
    ks = NULL;
    rc = 0;
out:
    free(file);
    kms_keyset_destroy(&ks);
    return rc;
}

/* `jwks` may arrive as a JSON object or as its text; store the text. */
static int jwks_text(struct kms_ctx *c, char **out)
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

#define TOKEN_FIELD_DECLS                                                                          \
    {"token_ttl", KMS_F_DURATION}, {"token_max_ttl", KMS_F_DURATION},                              \
        {"token_period", KMS_F_DURATION}, {"token_explicit_max_ttl", KMS_F_DURATION},              \
        {"token_policies", KMS_F_ARRAY}, {"token_no_default_policy", KMS_F_BOOL},                  \
        {"token_num_uses", KMS_F_INT}, {"token_bound_cidrs", KMS_F_ARRAY},                         \
        {"token_type", KMS_F_STRING}, {"token_strictly_bind_ip", KMS_F_BOOL},                      \
        {"ttl", KMS_F_DURATION}, {"max_ttl", KMS_F_DURATION}, {"period", KMS_F_DURATION},          \
        {"policies", KMS_F_ARRAY}, {"num_uses", KMS_F_INT},                                        \
    {                                                                                              \
        "bound_cidrs", KMS_F_ARRAY                                                                 \
    }

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
static int token_fields_apply(struct kms_ctx *c, json_t *role, bool create)
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
            if (tok_fields[i].type == TF_ARRAY && !all_strings(v)) {
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
static void token_fields_render(const json_t *role, json_t *d)
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
static void display_name(const char *mount_path, const char *tail, char *out, size_t n)
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
static int entity_id(struct kms_ctx *c, const char *alias, char out[40])
{
    char key[KMS_PATH_MAX + 64];
    char sub[KMS_PATH_MAX];
    json_t *rec = NULL;
    int rc = -1;

    snprintf(sub, sizeof(sub), "entity/%s", alias);
    if (auth_key(&c->mount, sub, key, sizeof(key)) != 0) {
        return -1;
    }
    int g = rec_get(c->api, key, &rec);
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
    if (rec == NULL || rec_put(c->api, key, rec) != 0) {
        goto out;
    }
    snprintf(out, 40, "%s", id);
    rc = 0;
out:
    json_decref(rec);
    return rc;
}

/* Issue the login token for a role and fill c->auth. */
struct login_out {
    const char *display_tail; /* plugin display name: "<ns>-<sa>" or the user claim */
    const char *subject;
    const char *alias;
    const char *const *meta_keys;
    const char *const *meta_values;
    size_t nmeta;
    const char *role_name;
};

static int issue_login_token(struct kms_ctx *c, const json_t *role, const struct login_out *lo)
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
    size_t ng = str_vec(tp, given, KMS_TOKEN_MAX_POLICIES);
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
    if (entity_id(c, lo->alias, eid) != 0) {
        return KMS_FAILW(c, 500, "internal error");
    }
    display_name(c->mount.path, lo->display_tail, dname, sizeof(dname));
    snprintf(path, sizeof(path), "%slogin", c->mount.path);
    size_t nc = str_vec(json_object_get(role, "token_bound_cidrs"), cidrs, KMS_TOKEN_MAX_CIDRS);
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

static int load_role(struct kms_ctx *c, const char *name, json_t **role)
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
    if (auth_key(&c->mount, lower, key, sizeof(key)) != 0) {
        return KMS_STORAGE_NOTFOUND;
    }
    return rec_get(c->api, key, role);
}

static int role_key(struct kms_ctx *c, char *key, size_t n)
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
    return auth_key(&c->mount, lower, key, n);
}

static int role_exists(struct kms_ctx *c)
{
    char key[KMS_PATH_MAX + 64];
    json_t *r = NULL;
    if (role_key(c, key, sizeof(key)) != 0) {
        return 0;
    }
    int g = rec_get(c->api, key, &r);
    json_decref(r);
    return g == 0 ? 1 : g == KMS_STORAGE_NOTFOUND ? 0 : -1;
}

static int config_exists(struct kms_ctx *c)
{
    char key[KMS_PATH_MAX + 64];
    json_t *r = NULL;
    if (auth_key(&c->mount, "config", key, sizeof(key)) != 0) {
        return -1;
    }
    int g = rec_get(c->api, key, &r);
    json_decref(r);
    return g == 0 ? 1 : g == KMS_STORAGE_NOTFOUND ? 0 : -1;
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
    json_array_append_new(l->keys,
                          json_stringn((const char *)key + l->prefix_len, keylen - l->prefix_len));
    return 0;
}

static int role_list(struct kms_ctx *c)
{
    char prefix[KMS_PATH_MAX];
    struct kms_txn *txn = NULL;
    struct role_list l = {json_array(), 0};
    int rc = -1;

    if (auth_key(&c->mount, "role/", prefix, sizeof(prefix)) != 0) {
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

static int role_delete(struct kms_ctx *c)
{
    char key[KMS_PATH_MAX + 64];
    if (role_key(c, key, sizeof(key)) != 0) {
        return KMS_FAIL(c, 400, "missing role name");
    }
    return rec_del(c->api, key) == 0 ? 0 : KMS_FAILW(c, 500, "internal error");
}

/* ---- kubernetes -------------------------------------------------------------------------- */

static int k8s_config_write(struct kms_ctx *c)
{
    char key[KMS_PATH_MAX + 64];
    struct kms_keyset *ks = NULL;
    char *jwks = NULL;
    json_t *rec = NULL;
    const char *host = "";
    const char *ca = "";
    const char *reviewer = "";
    const char *issuer = "";
    const char *jwks_file = "";
    bool disable_iss = true;
    bool disable_local = false;
    int rc = -1;

    (void)kms_param_str(c, "kubernetes_host", &host);
    (void)kms_param_str(c, "kubernetes_ca_cert", &ca);
    (void)kms_param_str(c, "token_reviewer_jwt", &reviewer);
    (void)kms_param_str(c, "issuer", &issuer);
    (void)kms_param_str(c, "jwks_file", &jwks_file);
    (void)kms_param_bool(c, "disable_iss_validation", &disable_iss);
    (void)kms_param_bool(c, "disable_local_ca_jwt", &disable_local);
    json_t *pems = kms_param(c, "pem_keys");
    if (pems != NULL && !all_strings(pems)) {
        KMS_FAIL(c, 400, "pem_keys must be a list of PEM strings");
        goto out;
    }
    if (jwks_text(c, &jwks) != 0) {
        goto out;
    }
    if (json_array_size(pems) == 0 && (jwks == NULL || jwks[0] == '\0') && jwks_file[0] == '\0') {
        KMS_FAIL(c, 400,
                 "one of \"pem_keys\", \"jwks\" or \"jwks_file\" must be set: kmsd verifies "
                 "service account tokens offline");
        goto out;
    }
    if (build_keyset(pems, jwks, jwks_file, &ks, &c->err) != 0) {
        goto out;
    }
    rec = json_pack("{s:s, s:s, s:s, s:o, s:s, s:b, s:b, s:s, s:s}", "kubernetes_host", host,
                    "kubernetes_ca_cert", ca, "token_reviewer_jwt", reviewer, "pem_keys",
                    pems ? json_incref(pems) : json_array(), "issuer", issuer,
                    "disable_iss_validation", disable_iss, "disable_local_ca_jwt", disable_local,
                    "jwks", jwks ? jwks : "", "jwks_file", jwks_file);
    if (rec == NULL || auth_key(&c->mount, "config", key, sizeof(key)) != 0 ||
        rec_put(c->api, key, rec) != 0) {
        KMS_FAILW(c, 500, "internal error");
        goto out;
    }
    if (issuer[0] != '\0' && disable_iss && kms_param(c, "disable_iss_validation") != NULL) {
        kms_warn(c, "kmsd always checks \"iss\" when \"issuer\" is set, whatever "
                    "disable_iss_validation says");
    }
    rc = kms_reply_warnings(c);
out:
    kms_keyset_destroy(&ks);
    free(jwks);
    json_decref(rec);
    return rc;
}

static int k8s_config_read(struct kms_ctx *c)
{
    char key[KMS_PATH_MAX + 64];
    json_t *rec = NULL;

    if (auth_key(&c->mount, "config", key, sizeof(key)) != 0) {
        return KMS_FAILW(c, 500, "internal error");
    }
    int g = rec_get(c->api, key, &rec);
    if (g == KMS_STORAGE_NOTFOUND) {
        return kms_fail_notfound(c);
    }
    if (g != 0) {
        return KMS_FAILW(c, 500, "internal error");
    }
    const char *reviewer = json_string_value(json_object_get(rec, "token_reviewer_jwt"));
    c->data =
        json_pack("{s:O?, s:O?, s:O?, s:O?, s:O?, s:O?, s:b, s:O?, s:O?}", "kubernetes_host",
                  json_object_get(rec, "kubernetes_host"), "kubernetes_ca_cert",
                  json_object_get(rec, "kubernetes_ca_cert"), "pem_keys",
                  json_object_get(rec, "pem_keys"), "issuer", json_object_get(rec, "issuer"),
                  "disable_iss_validation", json_object_get(rec, "disable_iss_validation"),
                  "disable_local_ca_jwt", json_object_get(rec, "disable_local_ca_jwt"),
                  "token_reviewer_jwt_set", reviewer != NULL && reviewer[0] != '\0', "jwks",
                  json_object_get(rec, "jwks"), "jwks_file", json_object_get(rec, "jwks_file"));
    json_decref(rec);
    return c->data ? 0 : KMS_FAILW(c, 500, "internal error");
}

static int star_mix(const json_t *arr)
{
    size_t i;
    json_t *v;
    if (json_array_size(arr) <= 1) {
        return 0;
    }
    json_array_foreach(arr, i, v)
    {
        if (strcmp(json_string_value(v), "*") == 0) {
            return 1;
        }
    }
    return 0;
}

static int k8s_role_write(struct kms_ctx *c)
{
    char key[KMS_PATH_MAX + 64];
    json_t *role = NULL;
    bool create = c->op == KMS_OP_CREATE;
    int rc = -1;

    if (role_key(c, key, sizeof(key)) != 0) {
        return KMS_FAIL(c, 400, "missing role name");
    }
    int g = rec_get(c->api, key, &role);
    if (g < 0) {
        return KMS_FAILW(c, 500, "internal error");
    }
    if (g == KMS_STORAGE_NOTFOUND) {
        if (!create) {
            return KMS_FAILW(c, 500, "role entry not found during update operation");
        }
        role = json_object();
    }
    if (token_fields_apply(c, role, g == KMS_STORAGE_NOTFOUND) != 0) {
        goto out;
    }
    json_t *names = kms_param(c, "bound_service_account_names");
    if (names != NULL) {
        if (!all_strings(names)) {
            KMS_FAIL(c, 400, "bound_service_account_names must be a list of strings");
            goto out;
        }
        json_object_set(role, "bound_service_account_names", names);
    } else if (json_object_get(role, "bound_service_account_names") == NULL) {
        json_object_set_new(role, "bound_service_account_names", json_array());
    }
    names = json_object_get(role, "bound_service_account_names");
    if (json_array_size(names) == 0) {
        KMS_FAIL(c, 400, "\"bound_service_account_names\" can not be empty");
        goto out;
    }
    if (star_mix(names)) {
        KMS_FAIL(c, 400, "can not mix \"*\" with values");
        goto out;
    }
    json_t *nss = kms_param(c, "bound_service_account_namespaces");
    if (nss != NULL) {
        if (!all_strings(nss)) {
            KMS_FAIL(c, 400, "bound_service_account_namespaces must be a list of strings");
            goto out;
        }
        json_object_set(role, "bound_service_account_namespaces", nss);
    } else if (json_object_get(role, "bound_service_account_namespaces") == NULL) {
        json_object_set_new(role, "bound_service_account_namespaces", json_array());
    }
    nss = json_object_get(role, "bound_service_account_namespaces");
    const char *selector = "";
    (void)kms_param_str(c, "bound_service_account_namespace_selector", &selector);
    if (json_array_size(nss) == 0 && selector[0] == '\0') {
        KMS_FAIL(c, 400,
                 "\"bound_service_account_namespaces\" can not be empty if "
                 "\"bound_service_account_namespace_selector\" is not set");
        goto out;
    }
    if (selector[0] != '\0') {
        KMS_FAIL(c, 400,
                 "\"bound_service_account_namespace_selector\" is not supported: kmsd verifies "
                 "tokens offline and cannot read namespace labels; list the namespaces in "
                 "\"bound_service_account_namespaces\"");
        goto out;
    }
    if (star_mix(nss)) {
        KMS_FAIL(c, 400, "can not mix \"*\" with values");
        goto out;
    }
    const char *aud = NULL;
    if (kms_param_str(c, "audience", &aud)) {
        json_object_set_new(role, "audience", json_string(aud));
    }
    const char *src = NULL;
    if (kms_param_str(c, "alias_name_source", &src) && src[0] != '\0') {
        json_object_set_new(role, "alias_name_source", json_string(src));
    } else if (json_object_get(role, "alias_name_source") == NULL) {
        json_object_set_new(role, "alias_name_source", json_string("serviceaccount_uid"));
    }
    src = jstr(role, "alias_name_source");
    if (strcmp(src, "serviceaccount_uid") != 0 && strcmp(src, "serviceaccount_name") != 0) {
        KMS_FAIL(c, 400,
                 "invalid alias_name_source %s, must be one of: serviceaccount_uid, "
                 "serviceaccount_name",
                 src);
        goto out;
    }
    const char *raud = json_string_value(json_object_get(role, "audience"));
    if (raud == NULL || raud[0] == '\0') {
        kms_warn(c, "This role has no \"audience\": a token issued for any audience is accepted. "
                    "Set \"audience\" to the projected token's audience (e.g. \"openbao\").");
    }
    if (rec_put(c->api, key, role) != 0) {
        KMS_FAILW(c, 500, "internal error");
        goto out;
    }
    rc = kms_reply_warnings(c);
out:
    json_decref(role);
    return rc;
}

static int k8s_role_read(struct kms_ctx *c)
{
    char key[KMS_PATH_MAX + 64];
    json_t *role = NULL;

    if (role_key(c, key, sizeof(key)) != 0) {
        return KMS_FAIL(c, 400, "missing name");
    }
    int g = rec_get(c->api, key, &role);
    if (g == KMS_STORAGE_NOTFOUND) {
        return kms_fail_notfound(c);
    }
    if (g != 0) {
        return KMS_FAILW(c, 500, "internal error");
    }
    c->data = json_pack("{s:O, s:O, s:s, s:O}", "bound_service_account_names",
                        json_object_get(role, "bound_service_account_names"),
                        "bound_service_account_namespaces",
                        json_object_get(role, "bound_service_account_namespaces"),
                        "bound_service_account_namespace_selector", "", "alias_name_source",
                        json_object_get(role, "alias_name_source"));
    const char *aud = json_string_value(json_object_get(role, "audience"));
    if (aud != NULL && aud[0] != '\0') {
        json_object_set_new(c->data, "audience", json_string(aud));
    }
    token_fields_render(role, c->data);
    json_decref(role);
    return 0;
}

static bool role_cidr_ok(struct kms_ctx *c, const json_t *role)
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

static int k8s_login(struct kms_ctx *c)
{
    char key[KMS_PATH_MAX + 64];
    char quoted[600];
    const char *names[64];
    const char *nss[64];
    const char *role_name = "";
    const char *jwt = "";
    json_t *role = NULL;
    json_t *cfg = NULL;
    struct kms_keyset *ks = NULL;
    struct kms_k8s_sa sa;
    int64_t now;
    int32_t nsec;
    int rc = -1;

    memset(&sa, 0, sizeof(sa));
    (void)kms_param_str(c, "role", &role_name);
    (void)kms_param_str(c, "jwt", &jwt);
    if (role_name[0] == '\0') {
        KMS_FAIL(c, 400, "missing role");
        goto out;
    }
    if (jwt[0] == '\0') {
        KMS_FAIL(c, 400, "missing jwt");
        goto out;
    }
    int g = load_role(c, role_name, &role);
    if (g == KMS_STORAGE_NOTFOUND) {
        go_quote(role_name, quoted, sizeof(quoted));
        KMS_FAIL(c, 400, "invalid role name %s", quoted);
        goto out;
    }
    if (g != 0) {
        KMS_FAIL(c, 500, "internal error");
        goto out;
    }
    if (!role_cidr_ok(c, role)) {
        KMS_FAIL(c, 403, "permission denied");
        goto out;
    }
    if (auth_key(&c->mount, "config", key, sizeof(key)) != 0 || rec_get(c->api, key, &cfg) != 0) {
        KMS_FAIL(c, 500, "could not load backend configuration");
        goto out;
    }
    struct kms_err kerr;
    if (build_keyset(json_object_get(cfg, "pem_keys"),
                     json_string_value(json_object_get(cfg, "jwks")),
                     json_string_value(json_object_get(cfg, "jwks_file")), &ks, &kerr) != 0) {
        KMS_FAIL(c, 500, "could not load backend configuration");
        goto out;
    }
    kms_now(&now, &nsec);
    json_t *jn = json_object_get(role, "bound_service_account_names");
    json_t *jns = json_object_get(role, "bound_service_account_namespaces");
    struct kms_k8s_login in = {
        .jwt = jwt,
        .keys = ks,
        .issuer = json_string_value(json_object_get(cfg, "issuer")),
        .audience = json_string_value(json_object_get(role, "audience")),
        .names = names,
        .nnames = str_vec(jn, names, 64),
        .namespaces = nss,
        .nnamespaces = str_vec(jns, nss, 64),
        .alias_by_name = strcmp(jstr(role, "alias_name_source"), "serviceaccount_name") == 0,
        .now = now,
    };
    if (kms_k8s_login_validate(&in, &sa, &c->err) != 0) {
        goto out;
    }
    char alias[600];
    if (in.alias_by_name) {
        snprintf(alias, sizeof(alias), "%s/%s", sa.ns, sa.name);
    } else {
        snprintf(alias, sizeof(alias), "%s", sa.uid);
    }
    char tail[600];
    snprintf(tail, sizeof(tail), "%s-%s", sa.ns, sa.name);
    const char *mk[] = {"role", "service_account_name", "service_account_namespace",
                        "service_account_secret_name", "service_account_uid"};
    const char *mv[] = {role_name, sa.name, sa.ns, sa.secret_name, sa.uid};
    struct login_out lo = {tail, sa.sub, alias, mk, mv, 5, role_name};
    rc = issue_login_token(c, role, &lo);
out:
    kms_metrics_login(rc == 0 ? 0 : c->err.status >= 500 ? 2 : 1);
    kms_keyset_destroy(&ks);
    json_decref(role);
    json_decref(cfg);
    kms_memzero(&sa, sizeof(sa));
    return rc;
}

/* ---- jwt --------------------------------------------------------------------------------- */

static const char *const jwt_unsupported[] = {
    "jwks_url",   "jwks_ca_pem",     "oidc_discovery_url", "oidc_discovery_ca_pem",
    "jwks_pairs", "provider_config", "oidc_client_id",     "oidc_client_secret",
};

static int jwt_config_write(struct kms_ctx *c)
{
    char key[KMS_PATH_MAX + 64];
    struct kms_keyset *ks = NULL;
    char *jwks = NULL;
    json_t *rec = NULL;
    const char *issuer = "";
    const char *jwks_file = "";
    const char *default_role = "";
    int rc = -1;

    for (size_t i = 0; i < sizeof(jwt_unsupported) / sizeof(jwt_unsupported[0]); i++) {
        json_t *v = kms_param(c, jwt_unsupported[i]);
        if (v != NULL && !(json_is_string(v) && json_string_length(v) == 0)) {
            KMS_FAIL(c, 400,
                     "\"%s\" is not supported: kmsd verifies tokens offline; use "
                     "\"jwt_validation_pubkeys\", \"jwks\" or \"jwks_file\"",
                     jwt_unsupported[i]);
            goto out;
        }
    }
    (void)kms_param_str(c, "bound_issuer", &issuer);
    (void)kms_param_str(c, "jwks_file", &jwks_file);
    (void)kms_param_str(c, "default_role", &default_role);
    json_t *pems = kms_param(c, "jwt_validation_pubkeys");
    if (pems != NULL && !all_strings(pems)) {
        KMS_FAIL(c, 400, "jwt_validation_pubkeys must be a list of PEM strings");
        goto out;
    }
    if (jwks_text(c, &jwks) != 0) {
        goto out;
    }
    int sources =
        (json_array_size(pems) > 0) + (jwks != NULL && jwks[0] != '\0') + (jwks_file[0] != '\0');
    if (sources != 1) {
        KMS_FAIL(c, 400,
                 "exactly one of 'jwt_validation_pubkeys', 'jwks' or 'jwks_file' must be set");
        goto out;
    }
    json_t *algs = kms_param(c, "jwt_supported_algs");
    if (algs != NULL) {
        size_t i;
        json_t *a;
        enum kms_jws_alg alg;
        if (!all_strings(algs)) {
            KMS_FAIL(c, 400, "jwt_supported_algs must be a list of strings");
            goto out;
        }
        json_array_foreach(algs, i, a)
        {
            if (kms_jws_alg_parse(json_string_value(a), &alg) != 0) {
                KMS_FAIL(c, 400,
                         "invalid supported algorithm \"%s\": kmsd accepts RS256, RS384, RS512, "
                         "PS256, PS384, PS512, ES256 and ES384",
                         json_string_value(a));
                goto out;
            }
        }
    }
    if (build_keyset(pems, jwks, jwks_file, &ks, &c->err) != 0) {
        goto out;
    }
    rec = json_pack("{s:o, s:s, s:s, s:s, s:s, s:o}", "jwt_validation_pubkeys",
                    pems ? json_incref(pems) : json_array(), "jwks", jwks ? jwks : "", "jwks_file",
                    jwks_file, "bound_issuer", issuer, "default_role", default_role,
                    "jwt_supported_algs", algs ? json_incref(algs) : json_array());
    if (rec == NULL || auth_key(&c->mount, "config", key, sizeof(key)) != 0 ||
        rec_put(c->api, key, rec) != 0) {
        KMS_FAILW(c, 500, "internal error");
        goto out;
    }
    rc = 0;
out:
    kms_keyset_destroy(&ks);
    free(jwks);
    json_decref(rec);
    return rc;
}

static int jwt_config_read(struct kms_ctx *c)
{
    char key[KMS_PATH_MAX + 64];
    json_t *rec = NULL;

    if (auth_key(&c->mount, "config", key, sizeof(key)) != 0) {
        return KMS_FAILW(c, 500, "internal error");
    }
    int g = rec_get(c->api, key, &rec);
    if (g == KMS_STORAGE_NOTFOUND) {
        return kms_fail_notfound(c);
    }
    if (g != 0) {
        return KMS_FAILW(c, 500, "internal error");
    }
    c->data = json_pack(
        "{s:O?, s:O?, s:O?, s:O?, s:O?, s:O?, s:s, s:s, s:s}", "jwt_validation_pubkeys",
        json_object_get(rec, "jwt_validation_pubkeys"), "jwks", json_object_get(rec, "jwks"),
        "jwks_file", json_object_get(rec, "jwks_file"), "bound_issuer",
        json_object_get(rec, "bound_issuer"), "default_role", json_object_get(rec, "default_role"),
        "jwt_supported_algs", json_object_get(rec, "jwt_supported_algs"), "jwks_url", "",
        "oidc_discovery_url", "", "jwks_ca_pem", "");
    json_decref(rec);
    return c->data ? 0 : KMS_FAILW(c, 500, "internal error");
}

static int jwt_role_write(struct kms_ctx *c)
{
    char key[KMS_PATH_MAX + 64];
    json_t *role = NULL;
    bool create = c->op == KMS_OP_CREATE;
    int rc = -1;

    if (role_key(c, key, sizeof(key)) != 0) {
        return KMS_FAIL(c, 400, "missing role name");
    }
    int g = rec_get(c->api, key, &role);
    if (g < 0) {
        return KMS_FAILW(c, 500, "internal error");
    }
    if (g == KMS_STORAGE_NOTFOUND) {
        if (!create) {
            return KMS_FAILW(c, 500, "role entry not found during update operation");
        }
        role = json_object();
    }
    const char *rt = NULL;
    if (kms_param_str(c, "role_type", &rt) && rt[0] != '\0' && strcmp(rt, "jwt") != 0) {
        KMS_FAIL(c, 400, "invalid 'role_type': \"%s\"; kmsd supports only \"jwt\" roles", rt);
        goto out;
    }
    json_object_set_new(role, "role_type", json_string("jwt"));
    if (token_fields_apply(c, role, g == KMS_STORAGE_NOTFOUND) != 0) {
        goto out;
    }
    static const char *const strs[] = {"bound_subject", "user_claim", "groups_claim",
                                       "bound_claims_type"};
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        const char *v = NULL;
        if (kms_param_str(c, strs[i], &v)) {
            json_object_set_new(role, strs[i], json_string(v));
        } else if (json_object_get(role, strs[i]) == NULL) {
            json_object_set_new(
                role, strs[i],
                json_string(strcmp(strs[i], "bound_claims_type") == 0 ? "string" : ""));
        }
    }
    json_t *auds = kms_param(c, "bound_audiences");
    if (auds != NULL) {
        if (!all_strings(auds)) {
            KMS_FAIL(c, 400, "bound_audiences must be a list of strings");
            goto out;
        }
        json_object_set(role, "bound_audiences", auds);
    } else if (json_object_get(role, "bound_audiences") == NULL) {
        json_object_set_new(role, "bound_audiences", json_array());
    }
    static const char *const maps[] = {"bound_claims", "claim_mappings"};
    for (size_t i = 0; i < 2; i++) {
        json_t *m = kms_param(c, maps[i]);
        if (m != NULL) {
            const char *k;
            json_t *v;
            json_object_foreach(m, k, v)
            {
                bool ok = json_is_string(v) || (i == 0 && all_strings(v));
                if (!ok) {
                    KMS_FAIL(c, 400, "%s: values must be strings%s", maps[i],
                             i == 0 ? " or lists of strings" : "");
                    goto out;
                }
            }
            json_object_set(role, maps[i], m);
        } else if (json_object_get(role, maps[i]) == NULL) {
            json_object_set_new(role, maps[i], json_object());
        }
    }
    static const char *const leeways[] = {"expiration_leeway", "not_before_leeway",
                                          "clock_skew_leeway"};
    for (size_t i = 0; i < 3; i++) {
        int64_t v;
        if (kms_param_int(c, leeways[i], &v)) {
            if (v < -1) {
                KMS_FAIL(c, 400, "%s must be -1 (off), 0 (default) or a positive duration",
                         leeways[i]);
                goto out;
            }
            json_object_set_new(role, leeways[i], json_integer(v));
        } else if (json_object_get(role, leeways[i]) == NULL) {
            json_object_set_new(role, leeways[i], json_integer(0));
        }
    }
    const char *bct = jstr(role, "bound_claims_type");
    if (strcmp(bct, "string") != 0 && strcmp(bct, "glob") != 0) {
        KMS_FAIL(c, 400, "invalid 'bound_claims_type': %s", bct);
        goto out;
    }
    if (jstr(role, "user_claim")[0] == '\0') {
        KMS_FAIL(c, 400, "a user claim must be defined on the role");
        goto out;
    }
    if (json_array_size(json_object_get(role, "bound_audiences")) == 0 &&
        json_array_size(json_object_get(role, "token_bound_cidrs")) == 0 &&
        jstr(role, "bound_subject")[0] == '\0' &&
        json_object_size(json_object_get(role, "bound_claims")) == 0) {
        KMS_FAIL(c, 400, "must have at least one bound constraint when creating/updating a role");
        goto out;
    }
    if (rec_put(c->api, key, role) != 0) {
        KMS_FAILW(c, 500, "internal error");
        goto out;
    }
    rc = kms_reply_warnings(c);
out:
    json_decref(role);
    return rc;
}

static int jwt_role_read(struct kms_ctx *c)
{
    char key[KMS_PATH_MAX + 64];
    json_t *role = NULL;

    if (role_key(c, key, sizeof(key)) != 0) {
        return KMS_FAIL(c, 400, "missing name");
    }
    int g = rec_get(c->api, key, &role);
    if (g == KMS_STORAGE_NOTFOUND) {
        return kms_fail_notfound(c);
    }
    if (g != 0) {
        return KMS_FAILW(c, 500, "internal error");
    }
    c->data = json_object();
    static const char *const keys[] = {
        "role_type",         "bound_audiences",   "bound_subject",     "bound_claims",
        "bound_claims_type", "user_claim",        "groups_claim",      "claim_mappings",
        "expiration_leeway", "not_before_leeway", "clock_skew_leeway",
    };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        json_t *v = json_object_get(role, keys[i]);
        if (v != NULL) {
            json_object_set(c->data, keys[i], v);
        }
    }
    token_fields_render(role, c->data);
    json_decref(role);
    return 0;
}

/* A claim by name, or by JSON pointer when it starts with '/'. */
static json_t *get_claim(json_t *claims, const char *name)
{
    if (name[0] != '/') {
        return json_object_get(claims, name);
    }
    json_t *cur = claims;
    const char *p = name + 1;
    char seg[256];
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        size_t o = 0;
        for (size_t i = 0; i < n && o + 1 < sizeof(seg); i++) {
            if (p[i] == '~' && i + 1 < n && (p[i + 1] == '0' || p[i + 1] == '1')) {
                seg[o++] = p[i + 1] == '0' ? '~' : '/';
                i++;
            } else {
                seg[o++] = p[i];
            }
        }
        seg[o] = '\0';
        if (json_is_object(cur)) {
            cur = json_object_get(cur, seg);
        } else if (json_is_array(cur)) {
            char *end = NULL;
            long idx = strtol(seg, &end, 10);
            cur = (*seg != '\0' && *end == '\0' && idx >= 0) ? json_array_get(cur, (size_t)idx)
                                                             : NULL;
        } else {
            cur = NULL;
        }
        if (cur == NULL || slash == NULL) {
            return cur;
        }
        p = slash + 1;
    }
}

static bool claim_value_matches(const json_t *have, const json_t *want, bool glob)
{
    size_t i;
    json_t *w;
    const char *hs = json_string_value(have);
    char buf[64];
    if (hs == NULL && json_is_boolean(have)) {
        hs = json_is_true(have) ? "true" : "false";
    } else if (hs == NULL && json_is_integer(have)) {
        snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(have));
        hs = buf;
    }
    if (hs == NULL) {
        return false;
    }
    if (json_is_string(want)) {
        const char *ws = json_string_value(want);
        return glob ? kms_glob_match(ws, hs) : strcmp(ws, hs) == 0;
    }
    json_array_foreach(want, i, w)
    {
        if (claim_value_matches(have, w, glob)) {
            return true;
        }
    }
    return false;
}

static void claim_string(const json_t *v, char *out, size_t n)
{
    if (json_is_string(v)) {
        snprintf(out, n, "%s", json_string_value(v));
    } else if (json_is_integer(v)) {
        snprintf(out, n, "%lld", (long long)json_integer_value(v));
    } else if (json_is_boolean(v)) {
        snprintf(out, n, "%s", json_is_true(v) ? "true" : "false");
    } else {
        out[0] = '\0';
    }
}

static int jwt_login(struct kms_ctx *c)
{
    char key[KMS_PATH_MAX + 64];
    char quoted[600];
    const char *role_name = "";
    const char *jwt = "";
    const char *auds[64];
    json_t *role = NULL;
    json_t *cfg = NULL;
    json_t *claims = NULL;
    struct kms_keyset *ks = NULL;
    char *mvals[KMS_TOKEN_MAX_META];
    const char *mkeys[KMS_TOKEN_MAX_META];
    size_t nmeta = 0;
    int64_t now;
    int32_t nsec;
    int rc = -1;

    memset(mvals, 0, sizeof(mvals));
    if (auth_key(&c->mount, "config", key, sizeof(key)) != 0 || rec_get(c->api, key, &cfg) != 0) {
        KMS_FAIL(c, 400, "could not load configuration");
        goto out;
    }
    (void)kms_param_str(c, "role", &role_name);
    (void)kms_param_str(c, "jwt", &jwt);
    if (role_name[0] == '\0') {
        role_name = json_string_value(json_object_get(cfg, "default_role"));
    }
    if (role_name == NULL || role_name[0] == '\0') {
        KMS_FAIL(c, 400, "missing role");
        goto out;
    }
    int g = load_role(c, role_name, &role);
    if (g == KMS_STORAGE_NOTFOUND) {
        go_quote(role_name, quoted, sizeof(quoted));
        KMS_FAIL(c, 400, "role %s could not be found", quoted);
        goto out;
    }
    if (g != 0) {
        KMS_FAIL(c, 500, "internal error");
        goto out;
    }
    if (jwt[0] == '\0') {
        KMS_FAIL(c, 400, "missing token");
        goto out;
    }
    if (!role_cidr_ok(c, role)) {
        KMS_FAIL(c, 403, "permission denied");
        goto out;
    }
    struct kms_err kerr;
    if (build_keyset(json_object_get(cfg, "jwt_validation_pubkeys"),
                     json_string_value(json_object_get(cfg, "jwks")),
                     json_string_value(json_object_get(cfg, "jwks_file")), &ks, &kerr) != 0) {
        KMS_FAIL(c, 500, "could not load configuration");
        goto out;
    }
    if (kms_jwt_verify(jwt, ks, &claims, &kerr) != 0) {
        KMS_FAIL(c, 400, "error validating token: %s",
                 strcmp(kerr.msg, "permission denied") == 0 ? "failed to verify id token signature"
                                                            : kerr.msg);
        goto out;
    }
    /* Supported algs narrow the allow-list further when configured. */
    json_t *algs = json_object_get(cfg, "jwt_supported_algs");
    if (json_array_size(algs) > 0) {
        /* the header was already validated; re-read its alg to compare */
        const char *dot = strchr(jwt, '.');
        uint8_t *hb = NULL;
        size_t hl = 0;
        bool ok = false;
        if (dot != NULL && kms_b64url_decode_alloc(jwt, (size_t)(dot - jwt), &hb, &hl) == 0) {
            json_t *h = json_loadb((const char *)hb, hl, 0, NULL);
            const char *alg = json_string_value(json_object_get(h, "alg"));
            size_t i;
            json_t *a;
            json_array_foreach(algs, i, a)
            {
                ok = ok || (alg != NULL && strcmp(alg, json_string_value(a)) == 0);
            }
            json_decref(h);
        }
        free(hb);
        if (!ok) {
            KMS_FAIL(c, 400,
                     "error validating token: invalid algorithm (alg) header parameter: token "
                     "signed with unexpected algorithm");
            goto out;
        }
    }
    kms_now(&now, &nsec);
    json_t *bound_aud = json_object_get(role, "bound_audiences");
    int64_t skew = json_integer_value(json_object_get(role, "clock_skew_leeway"));
    int64_t expl = json_integer_value(json_object_get(role, "expiration_leeway"));
    int64_t nbfl = json_integer_value(json_object_get(role, "not_before_leeway"));
    skew = skew == 0 ? 60 : skew < 0 ? 0 : skew;
    expl = expl == 0 ? 150 : expl < 0 ? 0 : expl;
    nbfl = nbfl == 0 ? 150 : nbfl < 0 ? 0 : nbfl;
    struct kms_jwt_expect e = {
        .now = now,
        .issuer = json_string_value(json_object_get(cfg, "bound_issuer")),
        .audiences = auds,
        .naudiences = str_vec(bound_aud, auds, 64),
        .require_exp = true,
        .exp_leeway = skew + expl,
        .nbf_leeway = skew + nbfl,
        .iat_leeway = skew,
    };
    if (kms_jwt_validate(claims, &e, 400, &kerr) != 0) {
        KMS_FAIL(c, kerr.status, "%s%s", kerr.status == 400 ? "error validating token: " : "",
                 kerr.msg);
        goto out;
    }
    const char *bsub = json_string_value(json_object_get(role, "bound_subject"));
    if (bsub != NULL && bsub[0] != '\0') {
        const char *sub = json_string_value(json_object_get(claims, "sub"));
        if (sub == NULL || strcmp(sub, bsub) != 0) {
            KMS_FAIL(c, 400, "error validating token: invalid subject (sub) claim");
            goto out;
        }
    }
    json_t *aud = json_object_get(claims, "aud");
    if (json_array_size(bound_aud) == 0 && aud != NULL && !json_is_null(aud) &&
        !(json_is_array(aud) && json_array_size(aud) == 0)) {
        KMS_FAIL(c, 400, "audience claim found in JWT but no audiences bound to the role");
        goto out;
    }
    const char *uc = jstr(role, "user_claim");
    json_t *user = get_claim(claims, uc);
    if (user == NULL) {
        KMS_FAIL(c, 400, "claim \"%s\" not found in token", uc);
        goto out;
    }
    if (!json_is_string(user)) {
        KMS_FAIL(c, 400, "claim \"%s\" could not be converted to string", uc);
        goto out;
    }
    const char *gc = json_string_value(json_object_get(role, "groups_claim"));
    if (gc != NULL && gc[0] != '\0') {
        json_t *groups = get_claim(claims, gc);
        if (groups == NULL) {
            KMS_FAIL(c, 400, "%s claim not found in token", gc);
            goto out;
        }
        if (!json_is_string(groups) && !all_strings(groups)) {
            KMS_FAIL(c, 400, "%s claim could not be converted to a list of strings", gc);
            goto out;
        }
    }
    bool glob = strcmp(jstr(role, "bound_claims_type"), "glob") == 0;
    const char *bk;
    json_t *bv;
    json_object_foreach(json_object_get(role, "bound_claims"), bk, bv)
    {
        json_t *have = get_claim(claims, bk);
        bool hit = false;
        if (have == NULL) {
            KMS_FAIL(c, 400, "error validating claims: claim \"%s\" is missing", bk);
            goto out;
        }
        if (json_is_array(have)) {
            size_t i;
            json_t *h;
            json_array_foreach(have, i, h)
            {
                hit = hit || claim_value_matches(h, bv, glob);
            }
        } else {
            hit = claim_value_matches(have, bv, glob);
        }
        if (!hit) {
            KMS_FAIL(c, 400,
                     "error validating claims: claim \"%s\" does not match any associated bound "
                     "claim values",
                     bk);
            goto out;
        }
    }
    mkeys[nmeta] = "role";
    mvals[nmeta] = strdup(role_name);
    nmeta++;
    const char *ck;
    json_t *cv;
    json_object_foreach(json_object_get(role, "claim_mappings"), ck, cv)
    {
        json_t *have = get_claim(claims, ck);
        char buf[256];
        if (have == NULL || nmeta == KMS_TOKEN_MAX_META) {
            continue;
        }
        claim_string(have, buf, sizeof(buf));
        mkeys[nmeta] = json_string_value(cv);
        mvals[nmeta] = strdup(buf);
        nmeta++;
    }
    for (size_t i = 0; i < nmeta; i++) {
        if (mvals[i] == NULL) {
            KMS_FAILW(c, 500, "out of memory");
            goto out;
        }
    }
    struct login_out lo = {json_string_value(user),
                           json_string_value(user),
                           json_string_value(user),
                           mkeys,
                           (const char *const *)mvals,
                           nmeta,
                           role_name};
    rc = issue_login_token(c, role, &lo);
out:
    kms_metrics_login(rc == 0 ? 0 : c->err.status >= 500 ? 2 : 1);
    for (size_t i = 0; i < nmeta; i++) {
        free(mvals[i]);
    }
    kms_keyset_destroy(&ks);
    json_decref(claims);
    json_decref(role);
    json_decref(cfg);
    return rc;
}

/* ---- renewal ----------------------------------------------------------------------------- */

int kms_auth_login_renew_params(struct kms_ctx *c, const struct kms_token *tok,
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
    int g = load_role(c, tok->role, &role);
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
    json_decref(role);
    return 0;
}

/* ---- sys/auth ---------------------------------------------------------------------------- */

static json_t *auth_mount_json(const struct kms_mount *m)
{
    return json_pack("{s:s, s:{s:i, s:b, s:i, s:s}, s:s, s:b, s:b, s:n, s:s, s:s, s:b, s:s, s:s}",
                     "accessor", m->accessor, "config", "default_lease_ttl", 0, "force_no_cache",
                     false, "max_lease_ttl", 0, "token_type", "default-service", "description",
                     m->description, "external_entropy_access", false, "local", false, "options",
                     "plugin_version", "", "running_plugin_version", "", "seal_wrap", false, "type",
                     m->type, "uuid", m->uuid);
}

static int list_auth_cb(const struct kms_mount *m, void *arg)
{
    if (strncmp(m->path, "auth/", 5) == 0) {
        json_object_set_new(arg, m->path + 5, auth_mount_json(m));
    }
    return 0;
}

int kms_sys_auth_list(struct kms_ctx *c)
{
    struct kms_mount tok;
    memset(&tok, 0, sizeof(tok));
    snprintf(tok.path, sizeof(tok.path), "auth/token/");
    snprintf(tok.type, sizeof(tok.type), "token");
    snprintf(tok.accessor, sizeof(tok.accessor), "auth_token_00000000");
    snprintf(tok.description, sizeof(tok.description), "token based credentials");
    c->data = json_object();
    json_object_set_new(c->data, "token/", auth_mount_json(&tok));
    if (kms_registry_mount_list(c->api, c->ns.id, list_auth_cb, c->data) != 0) {
        return KMS_FAILW(c, 500, "internal error");
    }
    return 0;
}

/* "k8s-host" / "/k8s-host/" -> "auth/k8s-host/" */
static int auth_mount_path(struct kms_ctx *c, char *out, size_t n)
{
    const char *p = kms_cap(c, "path");
    while (p != NULL && *p == '/') {
        p++;
    }
    size_t len = p ? strlen(p) : 0;
    while (len > 0 && p[len - 1] == '/') {
        len--;
    }
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

int kms_sys_auth_read(struct kms_ctx *c)
{
    char path[KMS_PATH_MAX];
    struct kms_mount m;
    if (auth_mount_path(c, path, sizeof(path)) != 0) {
        return -1;
    }
    if (kms_registry_mount_get(c->api, c->ns.id, path, &m) != 0) {
        return KMS_FAIL(c, 400, "No auth engine at %s", path);
    }
    c->data = auth_mount_json(&m);
    return 0;
}

/* Disabling a method revokes the tokens it issued; its roles and config go with the mount
 * (the engine's purge, in the registry's transaction). */
int kms_sys_auth_delete(struct kms_ctx *c)
{
    char path[KMS_PATH_MAX];
    struct kms_mount m;
    if (auth_mount_path(c, path, sizeof(path)) != 0) {
        return -1;
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

int kms_sys_auth_write(struct kms_ctx *c)
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
    if (strcmp(path, "auth/token/") == 0) {
        return KMS_FAIL(c, 400, "path is already in use at auth/token/");
    }
    if (strcmp(type, "kubernetes") != 0 && strcmp(type, "jwt") != 0) {
        return KMS_FAIL(c, 400, "plugin not found in the catalog: %s", type);
    }
    return kms_registry_mount_add(c->api, c->ns.id, path, type, desc, &m, &c->err);
}

const struct kms_field kms_sys_auth_fields[] = {
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

/* ---- route tables ------------------------------------------------------------------------ */

static const struct kms_field f_k8s_config[] = {
    {"kubernetes_host", KMS_F_STRING},
    {"kubernetes_ca_cert", KMS_F_STRING},
    {"token_reviewer_jwt", KMS_F_STRING},
    {"pem_keys", KMS_F_ARRAY},
    {"issuer", KMS_F_STRING},
    {"disable_iss_validation", KMS_F_BOOL},
    {"disable_local_ca_jwt", KMS_F_BOOL},
    {"jwks", KMS_F_RAW},
    {"jwks_file", KMS_F_STRING},
    {NULL, 0},
};

static const struct kms_field f_k8s_role[] = {
    {"bound_service_account_names", KMS_F_ARRAY},
    {"bound_service_account_namespaces", KMS_F_ARRAY},
    {"bound_service_account_namespace_selector", KMS_F_STRING},
    {"audience", KMS_F_STRING},
    {"alias_name_source", KMS_F_STRING},
    TOKEN_FIELD_DECLS,
    {NULL, 0},
};

static const struct kms_field f_login[] = {
    {"role", KMS_F_STRING},
    {"jwt", KMS_F_STRING},
    {NULL, 0},
};

static const struct kms_field f_list[] = {
    {"after", KMS_F_STRING},
    {"limit", KMS_F_INT},
    {NULL, 0},
};

static const struct kms_route kubernetes_routes[] = {
    {.tmpl = "config",
     .fields = f_k8s_config,
     .exists = config_exists,
     .on = {[KMS_OP_READ] = {k8s_config_read, NULL, 0},
            [KMS_OP_CREATE] = {k8s_config_write, NULL, 0},
            [KMS_OP_UPDATE] = {k8s_config_write, NULL, 0}}},
    {.tmpl = "role/", .fields = f_list, .on = {[KMS_OP_LIST] = {role_list, NULL, 0}}},
    {.tmpl = "role/:name",
     .fields = f_k8s_role,
     .exists = role_exists,
     .on = {[KMS_OP_READ] = {k8s_role_read, NULL, 0},
            [KMS_OP_CREATE] = {k8s_role_write, NULL, 0},
            [KMS_OP_UPDATE] = {k8s_role_write, NULL, 0},
            [KMS_OP_DELETE] = {role_delete, NULL, 0}}},
    {.tmpl = "login",
     .flags = KMS_RT_PUBLIC,
     .fields = f_login,
     .resource = "Login",
     .on = {[KMS_OP_UPDATE] = {k8s_login, "login", 0}}},
    KMS_ROUTES_END,
};

static const struct kms_field f_jwt_config[] = {
    {"jwt_validation_pubkeys", KMS_F_ARRAY},
    {"jwks", KMS_F_RAW},
    {"jwks_file", KMS_F_STRING},
    {"bound_issuer", KMS_F_STRING},
    {"default_role", KMS_F_STRING},
    {"jwt_supported_algs", KMS_F_ARRAY},
    {"jwks_url", KMS_F_RAW},
    {"jwks_ca_pem", KMS_F_RAW},
    {"oidc_discovery_url", KMS_F_RAW},
    {"oidc_discovery_ca_pem", KMS_F_RAW},
    {"oidc_client_id", KMS_F_RAW},
    {"oidc_client_secret", KMS_F_RAW},
    {"jwks_pairs", KMS_F_RAW},
    {"provider_config", KMS_F_RAW},
    {"namespace_in_state", KMS_F_BOOL},
    {NULL, 0},
};

static const struct kms_field f_jwt_role[] = {
    {"role_type", KMS_F_STRING},
    {"bound_audiences", KMS_F_ARRAY},
    {"bound_subject", KMS_F_STRING},
    {"bound_claims", KMS_F_MAP},
    {"bound_claims_type", KMS_F_STRING},
    {"user_claim", KMS_F_STRING},
    {"groups_claim", KMS_F_STRING},
    {"claim_mappings", KMS_F_MAP},
    {"expiration_leeway", KMS_F_DURATION},
    {"not_before_leeway", KMS_F_DURATION},
    {"clock_skew_leeway", KMS_F_DURATION},
    TOKEN_FIELD_DECLS,
    {NULL, 0},
};

static const struct kms_route jwt_routes[] = {
    {.tmpl = "config",
     .fields = f_jwt_config,
     .exists = config_exists,
     .on = {[KMS_OP_READ] = {jwt_config_read, NULL, 0},
            [KMS_OP_CREATE] = {jwt_config_write, NULL, 0},
            [KMS_OP_UPDATE] = {jwt_config_write, NULL, 0}}},
    {.tmpl = "role/", .fields = f_list, .on = {[KMS_OP_LIST] = {role_list, NULL, 0}}},
    {.tmpl = "role/:name",
     .fields = f_jwt_role,
     .exists = role_exists,
     .on = {[KMS_OP_READ] = {jwt_role_read, NULL, 0},
            [KMS_OP_CREATE] = {jwt_role_write, NULL, 0},
            [KMS_OP_UPDATE] = {jwt_role_write, NULL, 0},
            [KMS_OP_DELETE] = {role_delete, NULL, 0}}},
    {.tmpl = "login",
     .flags = KMS_RT_PUBLIC,
     .fields = f_login,
     .resource = "Login",
     .on = {[KMS_OP_UPDATE] = {jwt_login, "login", 0}}},
    KMS_ROUTES_END,
};

/* Purge: an auth mount's config and roles; a namespace's policies and auth records. */
static int auth_purge(void *state, struct kms_txn *txn, const char *ns_id,
                      const struct kms_mount *m)
{
    char prefix[KMS_NS_ID_LEN + 40];
    (void)state;
    if (m == NULL) {
        snprintf(prefix, sizeof(prefix), "%s/", ns_id);
        return kms_storage_del_prefix(txn, KMS_DB_POLICIES, prefix, strlen(prefix), NULL) != 0 ||
                       kms_storage_del_prefix(txn, KMS_DB_AUTH, prefix, strlen(prefix), NULL) != 0
                   ? -1
                   : 0;
    }
    if (strcmp(m->type, "kubernetes") != 0 && strcmp(m->type, "jwt") != 0) {
        return 0;
    }
    kms_mount_prefix(m, prefix, sizeof(prefix));
    return kms_storage_del_prefix(txn, KMS_DB_AUTH, prefix, strlen(prefix), NULL) != 0 ? -1 : 0;
}

static const struct kms_route auth_sys_routes[] = {
    {.tmpl = "auth",
     .flags = KMS_RT_SYS_TOP,
     .resource = "AuthMethod",
     .on = {[KMS_OP_READ] = {kms_sys_auth_list, NULL, 0}}},
    {.tmpl = "auth/*path",
     .flags = KMS_RT_SYS_TOP | KMS_RT_SUDO,
     .fields = kms_sys_auth_fields,
     .resource = "AuthMethod",
     .on = {[KMS_OP_READ] = {kms_sys_auth_read, NULL, 0},
            [KMS_OP_UPDATE] = {kms_sys_auth_write, NULL, 0},
            [KMS_OP_DELETE] = {kms_sys_auth_delete, NULL, 0}}},
    {.tmpl = "policy",
     .flags = KMS_RT_SYS_TOP,
     .resource = "Policy",
     .on = {[KMS_OP_READ] = {kms_sys_policy_list, NULL, 0}}},
    {.tmpl = "policy/",
     .flags = KMS_RT_SYS_TOP,
     .resource = "Policy",
     .on = {[KMS_OP_LIST] = {kms_sys_policy_list, NULL, 0}}},
    {.tmpl = "policy/*name",
     .flags = KMS_RT_SYS_TOP,
     .fields = kms_sys_policy_fields,
     .resource = "Policy",
     .on = {[KMS_OP_READ] = {kms_sys_policy_read, NULL, 0},
            [KMS_OP_UPDATE] = {kms_sys_policy_write, NULL, 0},
            [KMS_OP_DELETE] = {kms_sys_policy_delete, NULL, 0}}},
    {.tmpl = "policies/acl/",
     .flags = KMS_RT_SYS_TOP,
     .resource = "Policy",
     .on = {[KMS_OP_LIST] = {kms_sys_policy_list, NULL, 0}}},
    {.tmpl = "policies/acl/*name",
     .flags = KMS_RT_SYS_TOP,
     .fields = kms_sys_policy_fields,
     .resource = "Policy",
     .on = {[KMS_OP_READ] = {kms_sys_policy_read, NULL, 0},
            [KMS_OP_UPDATE] = {kms_sys_policy_write, NULL, 0},
            [KMS_OP_DELETE] = {kms_sys_policy_delete, NULL, 0}}},
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
         .purge = auth_purge},
        {.type = "kubernetes",
         .auth_method = true,
         .resource = "AuthMethod",
         .routes = kubernetes_routes},
        {.type = "jwt", .auth_method = true, .resource = "AuthMethod", .routes = jwt_routes},
    };
    for (size_t i = 0; i < sizeof(engines) / sizeof(engines[0]); i++) {
        if (kms_api_engine_add(api, &engines[i]) != 0) {
            return -1;
        }
    }
    return 0;
}
