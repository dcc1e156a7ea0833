/*
 * policy_parse.c - ACL policy text -> struct kms_policy.
 *
 * Two syntaxes, chosen by the first non-blank character:
 *   HCL subset:  path "transit/encrypt/+" { capabilities = ["update"] }   (plus `name = "..."`,
 *                `policy = "write"`, `comment = "..."`, comments #, // and block comments)
 *   JSON:        {"path": {"transit/encrypt/+": {"capabilities": ["update"]}}}
 *                or "path": [{"a": {...}}, {"b": {...}}] (HCL1's JSON form)
 * That is what `bao policy write`, Terraform and hvac send. Anything else is a 400 rather than
 * a guess. Per-path keys Vault knows but kmsd does not enforce (allowed_parameters,
 * denied_parameters, required_parameters, min/max_wrapping_ttl, mfa_methods, control_group,
 * pagination_limit, expiration, list_scan_response_keys_filter_path) are refused: accepting
 * and ignoring them would grant more than the policy author wrote.
 *
 * The checks and messages follow OpenBao's vault/policy.go parsePaths: leading '/' dropped,
 * '+*' forbidden (reported with the namespaced pattern), legacy `policy` values mapped to
 * capabilities, `deny` wiping the other capabilities, unknown capabilities refused.
 */
#include "auth/auth_int.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RULES 4096
#define MAX_STR 4096

struct prule {
    char *pattern; /* without the namespace prefix, leading '/' removed */
    unsigned caps;
};

struct kms_policy {
    struct prule *rules;
    size_t n;
};

size_t kms_policy_npaths(const struct kms_policy *p)
{
    return p ? p->n : 0;
}

const char *kms_policy_rule(const struct kms_policy *p, size_t i, unsigned *caps)
{
    *caps = p->rules[i].caps;
    return p->rules[i].pattern;
}

void kms_policy_free(struct kms_policy **p)
{
    if (*p == NULL) {
        return;
    }
    for (size_t i = 0; i < (*p)->n; i++) {
        free((*p)->rules[i].pattern);
    }
    free((*p)->rules);
    free(*p);
    *p = NULL;
}

static const struct {
    const char *name;
    unsigned bit;
} cap_names[] = {
    {"deny", KMS_CAP_DENY},     {"create", KMS_CAP_CREATE}, {"read", KMS_CAP_READ},
    {"update", KMS_CAP_UPDATE}, {"delete", KMS_CAP_DELETE}, {"list", KMS_CAP_LIST},
    {"sudo", KMS_CAP_SUDO},     {"patch", KMS_CAP_PATCH},   {"scan", KMS_CAP_SCAN},
};

static const char *const unsupported_keys[] = {
    "allowed_parameters",  "denied_parameters",
    "required_parameters", "min_wrapping_ttl",
    "max_wrapping_ttl",    "mfa_methods",
    "pagination_limit",    "expiration",
    "control_group",       "list_scan_response_keys_filter_path",
};

static bool is_unsupported_key(const char *k)
{
    for (size_t i = 0; i < sizeof(unsupported_keys) / sizeof(unsupported_keys[0]); i++) {
        if (strcmp(k, unsupported_keys[i]) == 0) {
            return true;
        }
    }
    return false;
}

/* One path stanza while it is being read. */
struct stanza {
    char *key; /* the pattern as written */
    char *legacy;
    char **caps;
    size_t ncaps;
    bool have_caps;
};

static void stanza_clear(struct stanza *s)
{
    free(s->key);
    free(s->legacy);
    for (size_t i = 0; i < s->ncaps; i++) {
        free(s->caps[i]);
    }
    free(s->caps);
    memset(s, 0, sizeof(*s));
}

static int stanza_add_cap(struct stanza *s, const char *c)
{
    char **grown = realloc(s->caps, (s->ncaps + 1) * sizeof(*grown));
    if (grown == NULL) {
        return -1;
    }
    s->caps = grown;
    s->caps[s->ncaps] = strdup(c);
    if (s->caps[s->ncaps] == NULL) {
        return -1;
    }
    s->ncaps++;
    return 0;
}

/* Finish a stanza into a rule (Vault's parsePaths after decoding). */
static int stanza_finish(struct kms_policy *pol, struct stanza *s, const char *ns_path,
                         struct kms_err *err)
{
    const char *pat = s->key;
    unsigned caps = 0;
    char full[2 * MAX_STR];

    if (pat[0] == '/') {
        pat++;
    }
    snprintf(full, sizeof(full), "%s%s", ns_path, pat);
    if (strstr(full, "+*") != NULL) {
        return kms_err_set(err, 400,
                           "failed to parse policy: path \"%s\": invalid use of wildcards ('+*' "
                           "is forbidden)",
                           full);
    }
    if (s->legacy != NULL && s->legacy[0] != '\0') {
        if (strcmp(s->legacy, "deny") == 0) {
            caps = KMS_CAP_DENY;
        } else if (strcmp(s->legacy, "read") == 0) {
            caps = KMS_CAP_READ | KMS_CAP_LIST;
        } else if (strcmp(s->legacy, "write") == 0) {
            caps = KMS_CAP_CREATE | KMS_CAP_READ | KMS_CAP_UPDATE | KMS_CAP_DELETE | KMS_CAP_LIST;
        } else if (strcmp(s->legacy, "sudo") == 0) {
            caps = KMS_CAP_CREATE | KMS_CAP_READ | KMS_CAP_UPDATE | KMS_CAP_DELETE | KMS_CAP_LIST |
                   KMS_CAP_SUDO;
        } else {
            return kms_err_set(err, 400,
                               "failed to parse policy: path \"%s\": invalid policy \"%s\"", s->key,
                               s->legacy);
        }
    }
    if (caps != KMS_CAP_DENY) {
        for (size_t i = 0; i < s->ncaps; i++) {
            unsigned bit = 0;
            for (size_t j = 0; j < sizeof(cap_names) / sizeof(cap_names[0]); j++) {
                if (strcmp(cap_names[j].name, s->caps[i]) == 0) {
                    bit = cap_names[j].bit;
                }
            }
            if (bit == 0) {
                return kms_err_set(err, 400,
                                   "failed to parse policy: path \"%s\": invalid capability \"%s\"",
                                   s->key, s->caps[i]);
            }
            if (bit == KMS_CAP_DENY) {
                caps = KMS_CAP_DENY;
                break;
            }
            caps |= bit;
        }
    }
    if (pol->n == MAX_RULES) {
        return kms_err_set(err, 400, "failed to parse policy: too many paths (limit %d)",
                           MAX_RULES);
    }
    struct prule *grown = realloc(pol->rules, (pol->n + 1) * sizeof(*grown));
    if (grown == NULL) {
        return kms_err_set(err, 500, "out of memory");
    }
    pol->rules = grown;
    pol->rules[pol->n].pattern = strdup(pat);
    if (pol->rules[pol->n].pattern == NULL) {
        return kms_err_set(err, 500, "out of memory");
    }
    pol->rules[pol->n].caps = caps;
    pol->n++;
    return 0;
}

/* ---- HCL subset -------------------------------------------------------------------------- */

enum tok_kind {
    T_EOF,
    T_IDENT,
    T_STRING,
    T_NUMBER,
    T_LBRACE,
    T_RBRACE,
    T_LBRACK,
    T_RBRACK,
    T_EQ,
    T_COMMA,
    T_BAD
};

struct lexer {
    const char *p;
    const char *end;
    int line;
    int col;
    /* current token */
    enum tok_kind kind;
    char text[MAX_STR];
    int tline;
    int tcol;
};

static void adv(struct lexer *lx, size_t n)
{
    for (size_t i = 0; i < n && lx->p < lx->end; i++) {
        if (*lx->p == '\n') {
            lx->line++;
            lx->col = 1;
        } else {
            lx->col++;
        }
        lx->p++;
    }
}

static bool skip_blank(struct lexer *lx, struct kms_err *err)
{
    for (;;) {
        while (lx->p < lx->end && isspace((unsigned char)*lx->p)) {
            adv(lx, 1);
        }
        if (lx->p >= lx->end) {
            return true;
        }
        if (*lx->p == '#' || (*lx->p == '/' && lx->p + 1 < lx->end && lx->p[1] == '/')) {
            while (lx->p < lx->end && *lx->p != '\n') {
                adv(lx, 1);
            }
            continue;
        }
        if (*lx->p == '/' && lx->p + 1 < lx->end && lx->p[1] == '*') {
            int l = lx->line;
            int c = lx->col;
            adv(lx, 2);
            while (lx->p + 1 < lx->end && !(lx->p[0] == '*' && lx->p[1] == '/')) {
                adv(lx, 1);
            }
            if (lx->p + 1 >= lx->end) {
                kms_err_set(err, 400, "failed to parse policy: At %d:%d: comment not terminated", l,
                            c);
                return false;
            }
            adv(lx, 2);
            continue;
        }
        return true;
    }
}

static int hexv(int c)
{
    return isdigit(c) ? c - '0' : isxdigit(c) ? (tolower(c) - 'a' + 10) : -1;
}

/* Append a code point as UTF-8. */
static bool put_utf8(char *out, size_t *o, size_t cap, unsigned cp)
{
    char b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (char)(0xc0 | (cp >> 6));
        b[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else {
        b[0] = (char)(0xe0 | (cp >> 12));
        b[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        b[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    }
    if (*o + n >= cap) {
        return false;
    }
    memcpy(out + *o, b, n);
    *o += n;
    return true;
}

static int lex(struct lexer *lx, struct kms_err *err)
{
    if (!skip_blank(lx, err)) {
        return -1;
    }
    lx->tline = lx->line;
    lx->tcol = lx->col;
    lx->text[0] = '\0';
    if (lx->p >= lx->end) {
        lx->kind = T_EOF;
        return 0;
    }
    char c = *lx->p;
    static const char punct[] = "{}[]=,";
    static const enum tok_kind pk[] = {T_LBRACE, T_RBRACE, T_LBRACK, T_RBRACK, T_EQ, T_COMMA};
    const char *pp = strchr(punct, c);
    if (pp != NULL && c != '\0') {
        lx->kind = pk[pp - punct];
        lx->text[0] = c;
        lx->text[1] = '\0';
        adv(lx, 1);
        return 0;
    }
    if (c == '"') {
        size_t o = 0;
        adv(lx, 1);
        while (lx->p < lx->end && *lx->p != '"') {
            unsigned char ch = (unsigned char)*lx->p;
            if (ch == '\n' || ch == '\0') {
                break;
            }
            if (ch == '\\') {
                if (lx->p + 1 >= lx->end) {
                    break;
                }
                char e = lx->p[1];
                adv(lx, 2);
                char r;
                switch (e) {
                case '"':
                    r = '"';
                    break;
                case '\\':
                    r = '\\';
                    break;
                case 'n':
                    r = '\n';
                    break;
                case 't':
                    r = '\t';
                    break;
                case 'r':
                    r = '\r';
                    break;
                case '/':
                    r = '/';
                    break;
                case 'u': {
                    unsigned cp = 0;
                    for (int i = 0; i < 4; i++) {
                        int h = lx->p < lx->end ? hexv((unsigned char)*lx->p) : -1;
                        if (h < 0) {
                            goto bad_string;
                        }
                        cp = cp * 16 + (unsigned)h;
                        adv(lx, 1);
                    }
                    if (cp == 0 || !put_utf8(lx->text, &o, sizeof(lx->text), cp)) {
                        goto bad_string;
                    }
                    continue;
                }
                default:
                    goto bad_string;
                }
                if (o + 1 >= sizeof(lx->text)) {
                    goto bad_string;
                }
                lx->text[o++] = r;
                continue;
            }
            if (o + 1 >= sizeof(lx->text)) {
                goto bad_string;
            }
            lx->text[o++] = (char)ch;
            adv(lx, 1);
        }
        if (lx->p >= lx->end || *lx->p != '"') {
            goto bad_string;
        }
        adv(lx, 1);
        lx->text[o] = '\0';
        lx->kind = T_STRING;
        return 0;
    bad_string:
        return kms_err_set(err, 400, "failed to parse policy: At %d:%d: literal not terminated",
                           lx->tline, lx->tcol);
    }
    if (isalpha((unsigned char)c) || c == '_') {
        size_t o = 0;
        while (lx->p < lx->end && (isalnum((unsigned char)*lx->p) || *lx->p == '_' ||
                                   *lx->p == '-' || *lx->p == '.')) {
            if (o + 1 >= sizeof(lx->text)) {
                return kms_err_set(err, 400,
                                   "failed to parse policy: At %d:%d: identifier too long",
                                   lx->tline, lx->tcol);
            }
            lx->text[o++] = *lx->p;
            adv(lx, 1);
        }
        lx->text[o] = '\0';
        lx->kind = T_IDENT;
        return 0;
    }
    if (isdigit((unsigned char)c) || c == '-') {
        size_t o = 0;
        while (lx->p < lx->end && (isalnum((unsigned char)*lx->p) || *lx->p == '.' ||
                                   *lx->p == '-' || *lx->p == '+')) {
            if (o + 1 < sizeof(lx->text)) {
                lx->text[o++] = *lx->p;
            }
            adv(lx, 1);
        }
        lx->text[o] = '\0';
        lx->kind = T_NUMBER;
        return 0;
    }
    return kms_err_set(err, 400, "failed to parse policy: At %d:%d: illegal char", lx->tline,
                       lx->tcol);
}

static const char *tok_name(enum tok_kind k)
{
    static const char *const names[] = {"EOF",    "IDENT",  "STRING", "NUMBER", "LBRACE", "RBRACE",
                                        "LBRACK", "RBRACK", "ASSIGN", "COMMA",  "ILLEGAL"};
    return names[k];
}

static int expect(struct lexer *lx, enum tok_kind k, const char *what, struct kms_err *err)
{
    if (lx->kind != k) {
        return kms_err_set(err, 400, "failed to parse policy: At %d:%d: expected %s, got: %s",
                           lx->tline, lx->tcol, what, tok_name(lx->kind));
    }
    return 0;
}

/* capabilities = [ "a", "b", ] */
static int hcl_string_list(struct lexer *lx, struct stanza *s, struct kms_err *err)
{
    if (expect(lx, T_LBRACK, "'['", err) != 0 || lex(lx, err) != 0) {
        return -1;
    }
    while (lx->kind != T_RBRACK) {
        if (expect(lx, T_STRING, "a string", err) != 0) {
            return -1;
        }
        if (stanza_add_cap(s, lx->text) != 0) {
            return kms_err_set(err, 500, "out of memory");
        }
        if (lex(lx, err) != 0) {
            return -1;
        }
        if (lx->kind == T_COMMA) {
            if (lex(lx, err) != 0) {
                return -1;
            }
        } else if (lx->kind != T_RBRACK) {
            return expect(lx, T_RBRACK, "',' or ']'", err);
        }
    }
    return lex(lx, err);
}

static int hcl_path_body(struct lexer *lx, struct stanza *s, struct kms_err *err)
{
    if (expect(lx, T_LBRACE, "'{'", err) != 0 || lex(lx, err) != 0) {
        return -1;
    }
    while (lx->kind != T_RBRACE) {
        char key[64];
        int kl = lx->tline;
        if (lx->kind != T_IDENT && lx->kind != T_STRING) {
            return expect(lx, T_IDENT, "a key", err);
        }
        size_t klen = strlen(lx->text);
        if (klen >= sizeof(key)) {
            return kms_err_set(err, 400,
                               "failed to parse policy: path \"%s\": invalid key on line %d",
                               s->key, kl);
        }
        memcpy(key, lx->text, klen + 1);
        if (strcmp(key, "capabilities") != 0 && strcmp(key, "policy") != 0 &&
            strcmp(key, "comment") != 0) {
            if (is_unsupported_key(key)) {
                return kms_err_set(err, 400,
                                   "failed to parse policy: path \"%s\": \"%s\" is not supported "
                                   "by kmsd",
                                   s->key, key);
            }
            return kms_err_set(err, 400,
                               "failed to parse policy: path \"%s\": invalid key \"%s\" on line %d",
                               s->key, key, kl);
        }
        if (lex(lx, err) != 0 || expect(lx, T_EQ, "'='", err) != 0 || lex(lx, err) != 0) {
            return -1;
        }
        if (strcmp(key, "capabilities") == 0) {
            s->have_caps = true;
            if (hcl_string_list(lx, s, err) != 0) {
                return -1;
            }
        } else {
            if (expect(lx, T_STRING, "a string", err) != 0) {
                return -1;
            }
            if (strcmp(key, "policy") == 0) {
                free(s->legacy);
                s->legacy = strdup(lx->text);
                if (s->legacy == NULL) {
                    return kms_err_set(err, 500, "out of memory");
                }
            }
            if (lex(lx, err) != 0) {
                return -1;
            }
        }
        if (lx->kind == T_COMMA && lex(lx, err) != 0) {
            return -1;
        }
    }
    return lex(lx, err);
}

static int parse_hcl(const char *text, size_t len, const char *ns_path, struct kms_policy *pol,
                     struct kms_err *err)
{
    struct lexer lx;
    struct stanza s;

    memset(&s, 0, sizeof(s));
    memset(&lx, 0, sizeof(lx));
    lx.p = text;
    lx.end = text + len;
    lx.line = 1;
    lx.col = 1;
    if (lex(&lx, err) != 0) {
        return -1;
    }
    while (lx.kind != T_EOF) {
        int kl = lx.tline;
        if (lx.kind != T_IDENT && lx.kind != T_STRING) {
            return expect(&lx, T_IDENT, "IDENT | STRING", err);
        }
        if (strcmp(lx.text, "name") == 0) {
            if (lex(&lx, err) != 0 || expect(&lx, T_EQ, "'='", err) != 0 || lex(&lx, err) != 0 ||
                expect(&lx, T_STRING, "a string", err) != 0 || lex(&lx, err) != 0) {
                return -1;
            }
            continue;
        }
        if (strcmp(lx.text, "path") != 0) {
            return kms_err_set(err, 400, "failed to parse policy: invalid key \"%s\" on line %d",
                               lx.text, kl);
        }
        if (lex(&lx, err) != 0 || expect(&lx, T_STRING, "a quoted path", err) != 0) {
            return -1;
        }
        s.key = strdup(lx.text);
        if (s.key == NULL) {
            return kms_err_set(err, 500, "out of memory");
        }
        if (lex(&lx, err) != 0) {
            goto fail;
        }
        if (lx.kind == T_EQ && lex(&lx, err) != 0) {
            goto fail;
        }
        if (hcl_path_body(&lx, &s, err) != 0 || stanza_finish(pol, &s, ns_path, err) != 0) {
            goto fail;
        }
        stanza_clear(&s);
    }
    return 0;
fail:
    stanza_clear(&s);
    return -1;
}

/* ---- JSON form --------------------------------------------------------------------------- */

static int json_stanza(struct kms_policy *pol, const char *pattern, json_t *body,
                       const char *ns_path, struct kms_err *err)
{
    struct stanza s;
    const char *k;
    json_t *v;
    int rc = -1;

    memset(&s, 0, sizeof(s));
    s.key = strdup(pattern);
    if (s.key == NULL) {
        return kms_err_set(err, 500, "out of memory");
    }
    if (json_is_array(body) && json_array_size(body) == 1) {
        body = json_array_get(body, 0); /* HCL1 JSON sometimes wraps the body in a list */
    }
    if (!json_is_object(body)) {
        kms_err_set(err, 400, "failed to parse policy: path \"%s\": expected an object", pattern);
        goto out;
    }
    json_object_foreach(body, k, v)
    {
        if (strcmp(k, "capabilities") == 0) {
            size_t i;
            json_t *c;
            if (!json_is_array(v)) {
                kms_err_set(err, 400,
                            "failed to parse policy: path \"%s\": capabilities must be a list",
                            pattern);
                goto out;
            }
            json_array_foreach(v, i, c)
            {
                if (!json_is_string(c)) {
                    kms_err_set(err, 400,
                                "failed to parse policy: path \"%s\": capabilities must be strings",
                                pattern);
                    goto out;
                }
                if (stanza_add_cap(&s, json_string_value(c)) != 0) {
                    kms_err_set(err, 500, "out of memory");
                    goto out;
                }
            }
        } else if (strcmp(k, "policy") == 0 || strcmp(k, "comment") == 0) {
            if (!json_is_string(v)) {
                kms_err_set(err, 400, "failed to parse policy: path \"%s\": %s must be a string",
                            pattern, k);
                goto out;
            }
            if (k[0] == 'p') {
                s.legacy = strdup(json_string_value(v));
            }
        } else if (is_unsupported_key(k)) {
            kms_err_set(err, 400,
                        "failed to parse policy: path \"%s\": \"%s\" is not supported by kmsd",
                        pattern, k);
            goto out;
        } else {
            kms_err_set(err, 400, "failed to parse policy: path \"%s\": invalid key \"%s\"",
                        pattern, k);
            goto out;
        }
    }
    rc = stanza_finish(pol, &s, ns_path, err);
out:
    stanza_clear(&s);
    return rc;
}

static int json_paths_object(struct kms_policy *pol, json_t *obj, const char *ns_path,
                             struct kms_err *err)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        if (json_stanza(pol, k, v, ns_path, err) != 0) {
            return -1;
        }
    }
    return 0;
}

static int parse_json(const char *text, size_t len, const char *ns_path, struct kms_policy *pol,
                      struct kms_err *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    const char *k;
    json_t *v;
    int rc = -1;

    if (!json_is_object(root)) {
        kms_err_set(err, 400, "failed to parse policy: %s",
                    root == NULL ? jerr.text : "does not contain a root object");
        goto out;
    }
    json_object_foreach(root, k, v)
    {
        if (strcmp(k, "name") == 0) {
            continue;
        }
        if (strcmp(k, "path") != 0) {
            kms_err_set(err, 400, "failed to parse policy: invalid key \"%s\"", k);
            goto out;
        }
        if (json_is_object(v)) {
            if (json_paths_object(pol, v, ns_path, err) != 0) {
                goto out;
            }
        } else if (json_is_array(v)) {
            size_t i;
            json_t *item;
            json_array_foreach(v, i, item)
            {
                if (!json_is_object(item)) {
                    kms_err_set(err, 400, "failed to parse policy: path entries must be objects");
                    goto out;
                }
                if (json_paths_object(pol, item, ns_path, err) != 0) {
                    goto out;
                }
            }
        } else {
            kms_err_set(err, 400, "failed to parse policy: path must be an object");
            goto out;
        }
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}

int kms_policy_parse(const char *text, size_t len, const char *ns_path, struct kms_policy **out,
                     struct kms_err *err)
{
    struct kms_policy *pol = calloc(1, sizeof(*pol));
    size_t i = 0;
    int rc;

    *out = NULL;
    if (pol == NULL) {
        return kms_err_set(err, 500, "out of memory");
    }
    if (memchr(text, '\0', len) != NULL) {
        kms_policy_free(&pol);
        return kms_err_set(err, 400, "failed to parse policy: At 1:1: illegal char");
    }
    while (i < len && isspace((unsigned char)text[i])) {
        i++;
    }
    if (i < len && text[i] == '{') {
        rc = parse_json(text, len, ns_path ? ns_path : "", pol, err);
    } else {
        rc = parse_hcl(text, len, ns_path ? ns_path : "", pol, err);
    }
    if (rc != 0) {
        kms_policy_free(&pol);
        return -1;
    }
    *out = pol;
    return 0;
}
