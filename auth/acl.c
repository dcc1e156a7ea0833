/*
 * acl.c - the access decision: ACLs compiled from policies, the policy store and the built-in
 * policies.
 *
 * Matching is a transcription of OpenBao's vault/acl.go (reference auth-audit.md §4.3):
 *   - NewACL merges identical patterns across a token's policies: capabilities are OR'ed, and
 *     a deny anywhere makes the merged rule deny-only. Patterns go to one of three tables:
 *     exact, prefix (trailing '*', stored without it) and segment-wildcard (any '+' segment).
 *   - AllowOperation: an exact rule wins; for list the path without its trailing '/' is also
 *     tried as exact; then the non-exact candidates (list first with the trimmed path, then
 *     the path as is): the longest prefix rule plus every matching '+' rule, ranked by (a)
 *     later first glob, (b) not a prefix, (c) fewer '+', (d) longer, (e) lexically greater.
 *     No match denies. A deny only wins on the very same merged pattern.
 * Patterns are prefixed with the path of the namespace that owns the policy; the request path
 * is the request namespace's path plus the path, so a child-namespace token never matches in
 * its parent and root-namespace policies can name "org1/transit/..." or "+/transit/...".
 *
 * Parsed policies are cached per "<ns id>/<name>" (negative entries too) behind a rwlock and
 * dropped on every write or delete of that name. A policy missing from the cache is read from
 * the store outside the lock and published only if no drop happened since its read began
 * (pol_gen): otherwise a request that read the old text of a policy being narrowed would put
 * it back into the cache after the write's drop, for good. An ACL is built per request from
 * the cache: patterns are copied, so the lock is not held while the caller matches.
 */
#include "auth/auth_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POL_CACHE_MAX 4096

/* ---- built-in policies ------------------------------------------------------------------- */

static const char default_policy[] =
    "# Allow tokens to look up their own properties\n"
    "path \"auth/token/lookup-self\" {\n"
    "    capabilities = [\"read\"]\n"
    "}\n"
    "\n"
    "# Allow tokens to renew themselves\n"
    "path \"auth/token/renew-self\" {\n"
    "    capabilities = [\"update\"]\n"
    "}\n"
    "\n"
    "# Allow tokens to revoke themselves\n"
    "path \"auth/token/revoke-self\" {\n"
    "    capabilities = [\"update\"]\n"
    "}\n"
    "\n"
    "# Allow a token to look up its own capabilities on a path\n"
    "path \"sys/capabilities-self\" {\n"
    "    capabilities = [\"update\"]\n"
    "}\n"
    "\n"
    "# Allow a token to renew a lease via lease_id in the request body\n"
    "path \"sys/renew\" {\n"
    "    capabilities = [\"update\"]\n"
    "}\n"
    "path \"sys/leases/renew\" {\n"
    "    capabilities = [\"update\"]\n"
    "}\n"
    "\n"
    "# Allow looking up lease properties\n"
    "path \"sys/leases/lookup\" {\n"
    "    capabilities = [\"update\"]\n"
    "}\n"
    "\n"
    "# Allow a token to manage its own cubbyhole\n"
    "path \"cubbyhole/*\" {\n"
    "    capabilities = [\"create\", \"read\", \"update\", \"delete\", \"list\"]\n"
    "}\n"
    "\n"
    "# Allow a token to wrap arbitrary values in a response-wrapping token\n"
    "path \"sys/wrapping/wrap\" {\n"
    "    capabilities = [\"update\"]\n"
    "}\n"
    "\n"
    "# Allow a token to look up the creation time and TTL of a given\n"
    "# response-wrapping token\n"
    "path \"sys/wrapping/lookup\" {\n"
    "    capabilities = [\"update\"]\n"
    "}\n"
    "\n"
    "# Allow a token to unwrap a response-wrapping token\n"
    "path \"sys/wrapping/unwrap\" {\n"
    "    capabilities = [\"update\"]\n"
    "}\n"
    "\n"
    "# Allow general purpose tools\n"
    "path \"sys/tools/hash\" {\n"
    "    capabilities = [\"update\"]\n"
    "}\n"
    "path \"sys/tools/hash/*\" {\n"
    "    capabilities = [\"update\"]\n"
    "}\n";

/*
 * The product's project roles (Permissions table of the KMS page). The Transit mount is at
 * the root of the Organization namespace; KMSKey objects live under the kms/ API.
 */
static const char kms_manager_policy[] =
    "# kms-manager: Project Manager. KMSKey full; encrypt, decrypt, rotate, delete,\n"
    "# min-decryption-version (and every other key setting).\n"
    "path \"kms/*\" {\n"
    "    capabilities = [\"create\", \"read\", \"update\", \"patch\", \"delete\", \"list\"]\n"
    "}\n"
    "path \"transit/keys\" {\n"
    "    capabilities = [\"list\"]\n"
    "}\n"
    "# create, read, delete a key; keys/<k>/config (min_decryption_version,\n"
    "# deletion_allowed), keys/<k>/rotate, keys/<k>/trim\n"
    "path \"transit/keys/*\" {\n"
    "    capabilities = [\"create\", \"read\", \"update\", \"delete\", \"list\"]\n"
    "}\n"
    "path \"transit/encrypt/+\" {\n"
    "    capabilities = [\"create\", \"update\"]\n"
    "}\n"
    "path \"transit/decrypt/+\" {\n"
    "    capabilities = [\"update\"]\n"
    "}\n"
    "path \"transit/rewrap/+\" {\n"
    "    capabilities = [\"update\"]\n"
    "}\n"
    "path \"transit/datakey/+/+\" {\n"
    "    capabilities = [\"update\"]\n"
    "}\n";

static const char kms_developer_policy[] =
    "# kms-developer: KMSKey read; encrypt and decrypt. No rotate, delete or\n"
    "# min-decryption-version.\n"
    "path \"kms/*\" {\n"
    "    capabilities = [\"read\", \"list\"]\n"
    "}\n"
    "path \"transit/keys\" {\n"
    "    capabilities = [\"list\"]\n"
    "}\n"
    "path \"transit/keys/+\" {\n"
    "    capabilities = [\"read\"]\n"
    "}\n"
    "path \"transit/encrypt/+\" {\n"
    "    capabilities = [\"update\"]\n"
    "}\n"
    "path \"transit/decrypt/+\" {\n"
    "    capabilities = [\"update\"]\n"
    "}\n";

static const char kms_viewer_policy[] =
    "# kms-viewer: KMSKey read; encrypt only (it can seal, never read plaintext back).\n"
    "path \"kms/*\" {\n"
    "    capabilities = [\"read\", \"list\"]\n"
    "}\n"
    "path \"transit/keys\" {\n"
    "    capabilities = [\"list\"]\n"
    "}\n"
    "path \"transit/keys/+\" {\n"
    "    capabilities = [\"read\"]\n"
    "}\n"
    "path \"transit/encrypt/+\" {\n"
    "    capabilities = [\"update\"]\n"
    "}\n";

static const struct {
    const char *name;
    const char *text;
    bool readonly;
} builtins[] = {
    {"root", "", true},
    {"default", default_policy, false},
    {"kms-developer", kms_developer_policy, true},
    {"kms-manager", kms_manager_policy, true},
    {"kms-viewer", kms_viewer_policy, true},
};

const char *kms_auth_policy_builtin(const char *name)
{
    for (size_t i = 0; i < sizeof(builtins) / sizeof(builtins[0]); i++) {
        if (strcmp(builtins[i].name, name) == 0) {
            return builtins[i].text;
        }
    }
    return NULL;
}

bool kms_auth_policy_readonly(const char *name)
{
    for (size_t i = 0; i < sizeof(builtins) / sizeof(builtins[0]); i++) {
        if (strcmp(builtins[i].name, name) == 0) {
            return builtins[i].readonly;
        }
    }
    return false;
}

/* ---- ACL --------------------------------------------------------------------------------- */

enum rule_kind { RULE_EXACT, RULE_PREFIX, RULE_SEGWC };

struct grant {
    char name[KMS_POLICY_NAME_MAX];
    unsigned caps;
};

struct rule {
    char *path; /* namespaced; prefix rules without their '*', segwc rules as written */
    enum rule_kind kind;
    unsigned caps;
    struct grant *grants;
    size_t ngrants;
};

struct kms_acl {
    bool root;
    struct rule *rules;
    size_t n;
    size_t nsegwc;
};

void kms_acl_destroy(struct kms_acl **acl)
{
    if (*acl == NULL) {
        return;
    }
    for (size_t i = 0; i < (*acl)->n; i++) {
        free((*acl)->rules[i].path);
        free((*acl)->rules[i].grants);
    }
    free((*acl)->rules);
    free(*acl);
    *acl = NULL;
}

static bool has_segment_wildcards(const char *p)
{
    return strcmp(p, "+") == 0 || strstr(p, "/+") != NULL || strncmp(p, "+/", 2) == 0;
}

static struct rule *find_rule(struct kms_acl *acl, enum rule_kind kind, const char *path)
{
    for (size_t i = 0; i < acl->n; i++) {
        if (acl->rules[i].kind == kind && strcmp(acl->rules[i].path, path) == 0) {
            return &acl->rules[i];
        }
    }
    return NULL;
}

static int add_grant(struct rule *r, const char *name, unsigned caps)
{
    for (size_t i = 0; i < r->ngrants; i++) {
        if (strcmp(r->grants[i].name, name) == 0) {
            r->grants[i].caps |= caps;
            return 0;
        }
    }
    struct grant *g = realloc(r->grants, (r->ngrants + 1) * sizeof(*g));
    if (g == NULL) {
        return -1;
    }
    r->grants = g;
    snprintf(g[r->ngrants].name, sizeof(g[0].name), "%s", name);
    g[r->ngrants].caps = caps;
    r->ngrants++;
    return 0;
}

static int acl_insert(struct kms_acl *acl, const char *ns_path, const char *pattern, unsigned caps,
                      const char *name)
{
    size_t nl = strlen(ns_path);
    size_t pl = strlen(pattern);
    char *full = malloc(nl + pl + 1);
    enum rule_kind kind = RULE_EXACT;
    int rc = -1;

    if (full == NULL) {
        return -1;
    }
    memcpy(full, ns_path, nl);
    memcpy(full + nl, pattern, pl + 1);
    if (has_segment_wildcards(full)) {
        kind = RULE_SEGWC;
    } else if (nl + pl > 0 && full[nl + pl - 1] == '*') {
        kind = RULE_PREFIX;
        full[nl + pl - 1] = '\0';
    }
    struct rule *r = find_rule(acl, kind, full);
    if (r == NULL) {
        struct rule *grown = realloc(acl->rules, (acl->n + 1) * sizeof(*grown));
        if (grown == NULL) {
            goto out;
        }
        acl->rules = grown;
        r = &acl->rules[acl->n++];
        memset(r, 0, sizeof(*r));
        r->path = full;
        full = NULL;
        r->kind = kind;
        r->caps = caps;
        if (kind == RULE_SEGWC) {
            acl->nsegwc++;
        }
        rc = add_grant(r, name, caps);
        goto out;
    }
    if (r->caps & KMS_CAP_DENY) {
        rc = 0; /* an explicit deny already won this pattern */
        goto out;
    }
    if (caps & KMS_CAP_DENY) {
        r->caps = KMS_CAP_DENY;
        rc = 0;
        goto out;
    }
    r->caps |= caps;
    rc = add_grant(r, name, caps);
out:
    free(full);
    return rc;
}

int kms_acl_create(const struct kms_policy *const *pols, const char *const *names, size_t n,
                   const char *ns_path, bool root, struct kms_acl **out)
{
    struct kms_acl *acl = calloc(1, sizeof(*acl));
    int rc = -1;

    *out = NULL;
    if (acl == NULL) {
        goto out;
    }
    acl->root = root;
    for (size_t i = 0; i < n; i++) {
        if (pols[i] == NULL) {
            continue;
        }
        for (size_t j = 0; j < kms_policy_npaths(pols[i]); j++) {
            unsigned caps;
            const char *pat = kms_policy_rule(pols[i], j, &caps);
            if (acl_insert(acl, ns_path ? ns_path : "", pat, caps, names[i]) != 0) {
                goto out;
            }
        }
    }
    *out = acl;
    acl = NULL;
    rc = 0;
out:
    kms_acl_destroy(&acl);
    return rc;
}

struct cand {
    const struct rule *r;
    size_t first; /* position of the first '+' or '*' */
    size_t wildcards;
    bool prefix;
    size_t len; /* pattern length without a trailing '*' */
};

/* Is a lower priority than b (acl.go's `less`)? */
static bool cand_less(const struct cand *a, const struct cand *b)
{
    if (a->first != b->first) {
        return a->first < b->first;
    }
    if (a->prefix != b->prefix) {
        return a->prefix;
    }
    if (a->wildcards != b->wildcards) {
        return a->wildcards > b->wildcards;
    }
    if (a->len != b->len) {
        return a->len < b->len;
    }
    return strncmp(a->r->path, b->r->path, a->len < b->len ? a->len : b->len) < 0;
}

/* Segment i of s ("a/b/c"): sets *seg, *n; false when there are fewer segments. */
static bool segment(const char *s, size_t idx, const char **seg, size_t *n)
{
    const char *p = s;
    for (size_t i = 0; i < idx; i++) {
        p = strchr(p, '/');
        if (p == NULL) {
            return false;
        }
        p++;
    }
    const char *e = strchr(p, '/');
    *seg = p;
    *n = e ? (size_t)(e - p) : strlen(p);
    return true;
}

static size_t count_segments(const char *s, size_t len)
{
    size_t n = 1;
    for (size_t i = 0; i < len; i++) {
        n += s[i] == '/';
    }
    return n;
}

static bool segwc_match(const struct rule *r, const char *path, struct cand *c)
{
    const char *full = r->path;
    size_t flen = strlen(full);
    const char *plus = strchr(full, '+');

    memset(c, 0, sizeof(*c));
    c->r = r;
    c->first = plus ? (size_t)(plus - full) : flen;
    c->len = flen;
    if (flen > 0 && full[flen - 1] == '*') {
        c->prefix = true;
        c->len = flen - 1;
    }
    size_t nparts = count_segments(full, c->len);
    size_t npath = count_segments(path, strlen(path));
    if (npath < nparts || (!c->prefix && nparts != npath)) {
        return false;
    }
    for (size_t i = 0; i < nparts; i++) {
        const char *ap = NULL;
        const char *pp = NULL;
        size_t an = 0;
        size_t pn = 0;
        if (!segment(full, i, &ap, &an) || !segment(path, i, &pp, &pn)) {
            return false;
        }
        if (i == nparts - 1 && c->prefix) {
            an = (size_t)(full + c->len - ap);
        }
        if (an == 1 && ap[0] == '+') {
            c->wildcards++;
        } else if (an == pn && memcmp(ap, pp, an) == 0) {
            /* literal segment */
        } else if (c->prefix && i == nparts - 1 && pn >= an && memcmp(ap, pp, an) == 0) {
            /* last segment of a glob pattern: prefix match, rest of the path included */
        } else {
            return false;
        }
    }
    return true;
}

/* CheckAllowedFromNonExactPaths: the best non-exact rule for path, or NULL. */
static const struct rule *nonexact(const struct kms_acl *acl, const char *path)
{
    const struct rule *longest = NULL;
    size_t ll = 0;
    struct cand best;
    bool have = false;

    memset(&best, 0, sizeof(best));

    for (size_t i = 0; i < acl->n; i++) {
        const struct rule *r = &acl->rules[i];
        size_t rl = strlen(r->path);
        if (r->kind == RULE_PREFIX && strncmp(path, r->path, rl) == 0 &&
            (longest == NULL || rl > ll)) {
            longest = r;
            ll = rl;
        }
    }
    if (acl->nsegwc == 0) {
        return longest;
    }
    if (longest != NULL) {
        best.r = longest;
        best.first = ll;
        best.wildcards = 0;
        best.prefix = true;
        best.len = ll;
        have = true;
    }
    for (size_t i = 0; i < acl->n; i++) {
        struct cand c;
        if (acl->rules[i].kind != RULE_SEGWC || acl->rules[i].path[0] == '\0' ||
            !segwc_match(&acl->rules[i], path, &c)) {
            continue;
        }
        if (!have || cand_less(&best, &c)) {
            best = c;
            have = true;
        }
    }
    return have ? best.r : NULL;
}

static unsigned op_cap(enum kms_op op)
{
    switch (op) {
    case KMS_OP_READ:
        return KMS_CAP_READ;
    case KMS_OP_LIST:
        return KMS_CAP_LIST;
    case KMS_OP_CREATE:
        return KMS_CAP_CREATE;
    case KMS_OP_UPDATE:
        return KMS_CAP_UPDATE;
    case KMS_OP_DELETE:
        return KMS_CAP_DELETE;
    case KMS_OP_PATCH:
        return KMS_CAP_PATCH;
    }
    return 0;
}

void kms_acl_check(const struct kms_acl *acl, const char *path, enum kms_op op, bool sudo_required,
                   struct kms_acl_result *res)
{
    const struct rule *r = NULL;
    char trimmed[2048];

    memset(res, 0, sizeof(*res));
    if (acl == NULL) {
        return;
    }
    if (acl->root) {
        res->allowed = true;
        res->is_root = true;
        res->root_privs = true;
        res->caps = ~0u & ~KMS_CAP_DENY;
        res->ngranting = 1;
        snprintf(res->granting[0], sizeof(res->granting[0]), "root");
        return;
    }
    while (*path == '/') {
        path++;
    }
    size_t pl = strlen(path);
    bool list_slash = op == KMS_OP_LIST && pl > 0 && path[pl - 1] == '/';
    if (list_slash && pl < sizeof(trimmed)) {
        memcpy(trimmed, path, pl - 1);
        trimmed[pl - 1] = '\0';
    } else {
        list_slash = false;
    }
    for (size_t i = 0; i < acl->n && r == NULL; i++) {
        if (acl->rules[i].kind == RULE_EXACT && strcmp(acl->rules[i].path, path) == 0) {
            r = &acl->rules[i];
        }
    }
    for (size_t i = 0; i < acl->n && r == NULL && list_slash; i++) {
        if (acl->rules[i].kind == RULE_EXACT && strcmp(acl->rules[i].path, trimmed) == 0) {
            r = &acl->rules[i];
        }
    }
    if (r == NULL && list_slash) {
        r = nonexact(acl, trimmed);
    }
    if (r == NULL) {
        r = nonexact(acl, path);
    }
    if (r == NULL) {
        return;
    }
    res->caps = r->caps;
    res->root_privs = (r->caps & KMS_CAP_SUDO) != 0;
    unsigned need = op_cap(op);
    if ((r->caps & need) == 0) {
        return;
    }
    if (sudo_required && !res->root_privs) {
        return;
    }
    res->allowed = true;
    for (size_t i = 0; i < r->ngrants && res->ngranting < KMS_TOKEN_MAX_POLICIES; i++) {
        if (r->grants[i].caps & need) {
            snprintf(res->granting[res->ngranting++], sizeof(res->granting[0]), "%s",
                     r->grants[i].name);
        }
    }
}

/* ---- policy store ------------------------------------------------------------------------ */

void kms_auth_policy_cache_clear(struct kms_auth *auth)
{
    for (size_t i = 0; i < auth->npol; i++) {
        kms_policy_free(&auth->pol_cache[i].pol);
    }
    free(auth->pol_cache);
    auth->pol_cache = NULL;
    auth->npol = 0;
    auth->cappol = 0;
    /* no pol_gen bump: emptying a full cache makes no text stale, and a bump would send every
     * concurrent reader back to the store (three tries, then 500) */
}

static int pol_key(const char *ns_id, const char *name, char *out, size_t n)
{
    int w = snprintf(out, n, "%s/%s", ns_id, name);
    return (w < 0 || (size_t)w >= n) ? -1 : 0;
}

static struct kms_pol_ent *cache_find(struct kms_auth *auth, const char *key)
{
    for (size_t i = 0; i < auth->npol; i++) {
        if (strcmp(auth->pol_cache[i].key, key) == 0) {
            return &auth->pol_cache[i];
        }
    }
    return NULL;
}

static void cache_drop(struct kms_auth *auth, const char *key)
{
    pthread_rwlock_wrlock(&auth->pol_lock);
    struct kms_pol_ent *e = cache_find(auth, key);
    if (e != NULL) {
        kms_policy_free(&e->pol);
        *e = auth->pol_cache[--auth->npol];
    }
    auth->pol_gen++;
    pthread_rwlock_unlock(&auth->pol_lock);
}

/* Stored text of a policy: 0 (malloc'd *text), KMS_STORAGE_NOTFOUND, -1. */
static int stored_text(struct kms_auth *auth, const char *key, char **text)
{
    struct kms_txn *txn = NULL;
    uint8_t *val = NULL;
    size_t vallen = 0;
    json_t *rec = NULL;
    int rc = -1;

    *text = NULL;
    if (kms_storage_txn_begin(auth->st, false, &txn) != 0) {
        goto out;
    }
    rc = kms_storage_get(txn, KMS_DB_POLICIES, key, strlen(key), &val, &vallen);
    if (rc != 0) {
        goto out;
    }
    rec = json_loadb((const char *)val, vallen, 0, NULL);
    const char *raw = json_string_value(json_object_get(rec, "raw"));
    if (raw == NULL || (*text = strdup(raw)) == NULL) {
        rc = -1;
        goto out;
    }
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    kms_free_wipe((void **)&val, vallen);
    json_decref(rec);
    return rc;
}

#ifdef KMS_TEST_HOOKS
/* Test hook (KMS_TEST_HOOKS builds only): with KMS_TEST_POLICY_HOOKS=<dir>, a policy read from
 * the store for the cache waits while <dir>/hold exists (tests/integration/hooks_auth.py). */
static void hook_policy_read(void)
{
    kms_test_hold_dir("KMS_TEST_POLICY_HOOKS");
}
#else
static void hook_policy_read(void)
{
}
#endif

/* Load and parse a policy for the cache: 0 with *pol (NULL when absent), -1 on failure. */
static int load_policy(struct kms_auth *auth, const char *ns_id, const char *name,
                       struct kms_policy **pol)
{
    char key[sizeof(((struct kms_pol_ent *)0)->key)];
    char *text = NULL;
    struct kms_err err;
    int rc = -1;

    *pol = NULL;
    if (pol_key(ns_id, name, key, sizeof(key)) != 0) {
        return 0;
    }
    int g = stored_text(auth, key, &text);
    if (g < 0) {
        goto out;
    }
    hook_policy_read();
    const char *src = text;
    if (g == KMS_STORAGE_NOTFOUND) {
        src = strcmp(name, "root") == 0 ? NULL : kms_auth_policy_builtin(name);
    }
    if (src != NULL && kms_policy_parse(src, strlen(src), "", pol, &err) != 0) {
        *pol = NULL; /* an unparsable record grants nothing */
    }
    rc = 0;
out:
    free(text);
    return rc;
}

int kms_auth_authorize(struct kms_auth *auth, const struct kms_token *tok,
                       const struct kms_auth_req *req, struct kms_acl_result *res)
{
    const struct kms_policy *pols[KMS_TOKEN_MAX_POLICIES];
    const char *names[KMS_TOKEN_MAX_POLICIES];
    struct kms_acl *acl = NULL;
    char full[4096];
    int rc = -1;

    memset(res, 0, sizeof(*res));
    /* A token acts in its own namespace and its descendants only. */
    if (strncmp(req->ns_path, req->tok_ns_path, strlen(req->tok_ns_path)) != 0) {
        return 0;
    }
    if (!kms_str_join(full, sizeof(full), req->ns_path, req->path)) {
        return 0;
    }
    /* A root-policy token is allowed everything, but a limited-use one (auth/token/create
     * {"num_uses": 1} by root: a break-glass token) still spends a use per request below, as
     * OpenBao's UseToken does for every token. */
    if (tok->root && kms_acl_create(NULL, NULL, 0, req->tok_ns_path, true, &acl) != 0) {
        goto out;
    }
    for (int attempt = 0; acl == NULL && attempt < 3; attempt++) {
        size_t missing = SIZE_MAX;
        pthread_rwlock_rdlock(&auth->pol_lock);
        for (size_t i = 0; i < tok->npolicies; i++) {
            char key[sizeof(((struct kms_pol_ent *)0)->key)];
            struct kms_pol_ent *e = NULL;
            names[i] = tok->policies[i];
            if (pol_key(tok->ns_id, tok->policies[i], key, sizeof(key)) == 0) {
                e = cache_find(auth, key);
                if (e == NULL && missing == SIZE_MAX) {
                    missing = i;
                }
            }
            pols[i] = e ? e->pol : NULL;
        }
        if (missing == SIZE_MAX) {
            int b = kms_acl_create(pols, names, tok->npolicies, req->tok_ns_path, false, &acl);
            pthread_rwlock_unlock(&auth->pol_lock);
            if (b != 0) {
                goto out;
            }
            break;
        }
        pthread_rwlock_unlock(&auth->pol_lock);
        /* Load the missing policies outside the lock, then publish them unless a policy was
         * written or deleted meanwhile (pol_gen moved: what was read may be the old text; the
         * next attempt reads it again). */
        for (size_t i = missing; i < tok->npolicies; i++) {
            char key[sizeof(((struct kms_pol_ent *)0)->key)];
            struct kms_policy *p = NULL;
            if (pol_key(tok->ns_id, tok->policies[i], key, sizeof(key)) != 0) {
                continue;
            }
            pthread_rwlock_rdlock(&auth->pol_lock);
            bool have = cache_find(auth, key) != NULL;
            uint64_t gen = auth->pol_gen;
            pthread_rwlock_unlock(&auth->pol_lock);
            if (have) {
                continue;
            }
            if (load_policy(auth, tok->ns_id, tok->policies[i], &p) != 0) {
                goto out;
            }
            pthread_rwlock_wrlock(&auth->pol_lock);
            if (cache_find(auth, key) != NULL || auth->pol_gen != gen) {
                kms_policy_free(&p);
            } else {
                if (auth->npol >= POL_CACHE_MAX) {
                    kms_auth_policy_cache_clear(auth);
                }
                if (auth->npol == auth->cappol) {
                    size_t nc = auth->cappol ? auth->cappol * 2 : 32;
                    struct kms_pol_ent *g = realloc(auth->pol_cache, nc * sizeof(*g));
                    if (g == NULL) {
                        pthread_rwlock_unlock(&auth->pol_lock);
                        kms_policy_free(&p);
                        goto out;
                    }
                    auth->pol_cache = g;
                    auth->cappol = nc;
                }
                snprintf(auth->pol_cache[auth->npol].key, sizeof(auth->pol_cache[0].key), "%s",
                         key);
                auth->pol_cache[auth->npol].pol = p;
                auth->npol++;
            }
            pthread_rwlock_unlock(&auth->pol_lock);
        }
    }
    if (acl == NULL) {
        goto out;
    }
    kms_acl_check(acl, full, req->op, req->sudo, res);
    if (tok->num_uses > 0) {
        /* A request the ACL refuses uses the token too, as in OpenBao (which decrements "even
         * in the case of an error"): a limited-use token cannot probe paths for free. The
         * use is taken in one write transaction: of N concurrent requests holding the last
         * use, exactly one is allowed. */
        int u = kms_auth_token_use(auth, tok->hash);
        if (u < 0) {
            goto out;
        }
        if (u == 1) {
            res->allowed = false;
        }
    }
    rc = 0;
out:
    kms_acl_destroy(&acl);
    if (rc != 0) {
        memset(res, 0, sizeof(*res));
    }
    return rc;
}

int kms_auth_check(struct kms_auth *auth, const struct kms_token *tok, const char *ns_path,
                   const char *tok_ns_path, const char *path, enum kms_op op, bool *allowed)
{
    struct kms_acl_result res;
    struct kms_auth_req req = {ns_path, tok_ns_path, path, op, false};
    int rc = kms_auth_authorize(auth, tok, &req, &res);
    *allowed = rc == 0 && res.allowed;
    return rc;
}

int kms_auth_policy_put(struct kms_auth *auth, const char *ns_id, const char *ns_path,
                        const char *name, const char *text, struct kms_err *err)
{
    char key[sizeof(((struct kms_pol_ent *)0)->key)];
    struct kms_policy *pol = NULL;
    struct kms_txn *txn = NULL;
    json_t *rec = NULL;
    char *dump = NULL;
    int rc = -1;

    if (name[0] == '\0') {
        return kms_err_set(err, 400, "policy name must be provided in the URL");
    }
    if (pol_key(ns_id, name, key, sizeof(key)) != 0) {
        return kms_err_set(err, 400, "policy name too long");
    }
    if (kms_auth_policy_readonly(name)) {
        return kms_err_set(err, 400, "cannot update \"%s\" policy", name);
    }
    if (kms_policy_parse(text, strlen(text), ns_path, &pol, err) != 0) {
        goto out;
    }
    rec = json_pack("{s:s, s:s}", "name", name, "raw", text);
    dump = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
    if (dump == NULL || kms_storage_txn_begin(auth->st, true, &txn) != 0 ||
        kms_storage_put(txn, KMS_DB_POLICIES, key, strlen(key), dump, strlen(dump)) != 0) {
        kms_err_set(err, 500, "cannot store the policy");
        goto out;
    }
    /* dropped whatever the commit's outcome: a PostgreSQL COMMIT whose answer was lost may
     * have committed, and the old text must not go on granting from the cache */
    int crc = kms_storage_txn_commit(&txn);
    cache_drop(auth, key);
    if (crc != 0) {
        kms_err_set(err, 500, "cannot store the policy");
        goto out;
    }
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    kms_policy_free(&pol);
    json_decref(rec);
    free(dump);
    return rc;
}

int kms_auth_policy_get(struct kms_auth *auth, const char *ns_id, const char *name, char **text)
{
    char key[sizeof(((struct kms_pol_ent *)0)->key)];

    *text = NULL;
    if (pol_key(ns_id, name, key, sizeof(key)) != 0) {
        return KMS_STORAGE_NOTFOUND;
    }
    if (strcmp(name, "root") == 0) {
        if (strcmp(ns_id, "root") != 0) {
            return KMS_STORAGE_NOTFOUND;
        }
        *text = strdup("");
        return *text ? 0 : -1;
    }
    int g = stored_text(auth, key, text);
    if (g != KMS_STORAGE_NOTFOUND) {
        return g;
    }
    const char *b = kms_auth_policy_builtin(name);
    if (b == NULL) {
        return KMS_STORAGE_NOTFOUND;
    }
    *text = strdup(b);
    return *text ? 0 : -1;
}

int kms_auth_policy_delete(struct kms_auth *auth, const char *ns_id, const char *name,
                           struct kms_err *err)
{
    char key[sizeof(((struct kms_pol_ent *)0)->key)];
    struct kms_txn *txn = NULL;
    int rc = -1;

    if (strcmp(name, "default") == 0 || kms_auth_policy_readonly(name)) {
        return kms_err_set(err, 400, "cannot delete %s policy", name);
    }
    if (pol_key(ns_id, name, key, sizeof(key)) != 0) {
        return 0;
    }
    if (kms_storage_txn_begin(auth->st, true, &txn) != 0 ||
        kms_storage_del(txn, KMS_DB_POLICIES, key, strlen(key)) < 0) {
        kms_err_set(err, 500, "cannot delete the policy");
        goto out;
    }
    int crc = kms_storage_txn_commit(&txn);
    cache_drop(auth, key); /* whatever the commit's outcome, as above */
    if (crc != 0) {
        kms_err_set(err, 500, "cannot delete the policy");
        goto out;
    }
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    return rc;
}

struct name_list {
    char **names;
    size_t n;
    size_t cap;
    size_t prefix_len;
};

static int list_add(struct name_list *l, const char *name, size_t len)
{
    for (size_t i = 0; i < l->n; i++) {
        if (strlen(l->names[i]) == len && memcmp(l->names[i], name, len) == 0) {
            return 0;
        }
    }
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 16;
        char **g = realloc(l->names, nc * sizeof(*g));
        if (g == NULL) {
            return -1;
        }
        l->names = g;
        l->cap = nc;
    }
    l->names[l->n] = strndup(name, len);
    if (l->names[l->n] == NULL) {
        return -1;
    }
    l->n++;
    return 0;
}

static int list_cb(const uint8_t *key, size_t keylen, const uint8_t *val, size_t vallen, void *arg)
{
    struct name_list *l = arg;
    (void)val;
    (void)vallen;
    return list_add(l, (const char *)key + l->prefix_len, keylen - l->prefix_len);
}

static int cmp_strp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int kms_auth_policy_list(struct kms_auth *auth, const char *ns_id, bool root_ns,
                         int (*cb)(const char *name, void *arg), void *arg)
{
    struct name_list l = {NULL, 0, 0, 0};
    struct kms_txn *txn = NULL;
    char prefix[24];
    int rc = -1;

    snprintf(prefix, sizeof(prefix), "%s/", ns_id);
    l.prefix_len = strlen(prefix);
    if (kms_storage_txn_begin(auth->st, false, &txn) != 0 ||
        kms_storage_scan(txn, KMS_DB_POLICIES, prefix, strlen(prefix), NULL, 0, false, list_cb,
                         &l) != 0) {
        goto out;
    }
    kms_storage_txn_abort(&txn);
    for (size_t i = 0; i < sizeof(builtins) / sizeof(builtins[0]); i++) {
        if (strcmp(builtins[i].name, "root") == 0 && !root_ns) {
            continue;
        }
        if (list_add(&l, builtins[i].name, strlen(builtins[i].name)) != 0) {
            goto out;
        }
    }
    qsort(l.names, l.n, sizeof(*l.names), cmp_strp);
    for (size_t i = 0; i < l.n; i++) {
        if (cb(l.names[i], arg) != 0) {
            goto out;
        }
    }
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    for (size_t i = 0; i < l.n; i++) {
        free(l.names[i]);
    }
    free(l.names);
    return rc;
}
