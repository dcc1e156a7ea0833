/*
 * params.c - request parameters the way Vault's framework sees them: weakly typed input
 * coerced to each route's declared field types, unknown fields reported as a warning,
 * durations in Vault's syntax, and Go-compatible base64 errors.
 */
#include "api/api_int.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

bool kms_parse_go_bool(const char *s, bool *out)
{
    static const char *const t[] = {"1", "t", "T", "TRUE", "true", "True"};
    static const char *const f[] = {"0", "f", "F", "FALSE", "false", "False"};
    for (size_t i = 0; i < 6; i++) {
        if (strcmp(s, t[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcmp(s, f[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

int kms_parse_duration_str(const char *s, int64_t *out)
{
    return kms_duration_parse(s, out);
}

int kms_parse_duration(const json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i > KMS_DURATION_MAX_SEC || i < -KMS_DURATION_MAX_SEC) {
            return -1; /* past Go's time.Duration */
        }
        *out = i;
        return 0;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!(d <= (double)KMS_DURATION_MAX_SEC && d >= -(double)KMS_DURATION_MAX_SEC)) {
            return -1;
        }
        *out = (int64_t)d;
        return 0;
    }
    if (json_is_string(v)) {
        return kms_parse_duration_str(json_string_value(v), out);
    }
    return -1;
}

/* Go's time.quote: ASCII kept ('"' and '\' escaped), other bytes as \xHH. */
static void go_time_quote(const char *s, char *buf, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (len < 3) {
        return;
    }
    buf[o++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0' && o + 6 < len; p++) {
        if (*p < 0x20 || *p >= 0x80) {
            buf[o++] = '\\';
            buf[o++] = 'x';
            buf[o++] = hex[*p >> 4];
            buf[o++] = hex[*p & 0xf];
            continue;
        }
        if (*p == '"' || *p == '\\') {
            buf[o++] = '\\';
        }
        buf[o++] = (char)*p;
    }
    buf[o++] = '"';
    buf[o] = '\0';
}

/* Go's strconv.Quote for the ASCII range (the text of a NumError); UTF-8 kept. */
static void go_strconv_quote(const char *s, size_t n, char *buf, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    static const char ctl[] = "\a\b\f\n\r\t\v", name[] = "abfnrtv";
    size_t o = 0;
    if (len < 3) {
        return;
    }
    buf[o++] = '"';
    for (size_t i = 0; i < n && o + 6 < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        const char *at = ch != '\0' ? strchr(ctl, ch) : NULL;
        if (ch == '"' || ch == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)ch;
        } else if (at != NULL) {
            buf[o++] = '\\';
            buf[o++] = name[at - ctl];
        } else if (ch < 0x20 || ch == 0x7f) {
            buf[o++] = '\\';
            buf[o++] = 'x';
            buf[o++] = hex[ch >> 4];
            buf[o++] = hex[ch & 0xf];
        } else {
            buf[o++] = (char)ch;
        }
    }
    buf[o++] = '"';
    buf[o] = '\0';
}

/* strconv.ParseInt(s[:n], 10, 64): 0 parsed, 1 syntax error, 2 out of range (Go stops at
 * the first digit that overflows, so "99999999999999999999x" is out of range). */
static int go_parse_int(const char *s, size_t n, int64_t *out)
{
    size_t i = 0;
    bool neg = false;
    uint64_t v = 0;
    if (n > 0 && (s[0] == '+' || s[0] == '-')) {
        neg = s[0] == '-';
        i = 1;
    }
    if (i == n) {
        return 1;
    }
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 1;
        }
        if (v > (UINT64_MAX - 9) / 10) {
            return 2;
        }
        v = v * 10 + (uint64_t)(s[i] - '0');
        if (v > (uint64_t)INT64_MAX + 1) {
            return 2;
        }
    }
    if (!neg && v > (uint64_t)INT64_MAX) {
        return 2;
    }
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

/* Go's time.ParseDuration: 0 with the duration in nanoseconds (as a magnitude and a sign),
 * else -1 with Go's message. */
static int go_parse_duration(const char *orig, uint64_t *ns, bool *neg, char *why, size_t whylen)
{
    static const struct {
        const char *name;
        uint64_t ns;
    } units[] = {
        {"ns", 1ULL},           {"us", 1000ULL},
        {"\xc2\xb5s", 1000ULL}, /* U+00B5 */
        {"\xce\xbcs", 1000ULL}, /* U+03BC */
        {"ms", 1000000ULL},     {"s", 1000000000ULL},
        {"m", 60000000000ULL},  {"h", 3600000000000ULL},
    };
    const uint64_t lim = 1ULL << 63;
    const char *s = orig;
    char q[160];
    uint64_t d = 0;

    go_time_quote(orig, q, sizeof(q));
    *neg = false;
    if (*s == '-' || *s == '+') {
        *neg = *s == '-';
        s++;
    }
    if (strcmp(s, "0") == 0) {
        *ns = 0;
        return 0;
    }
    if (*s == '\0') {
        goto invalid;
    }
    while (*s != '\0') {
        uint64_t v = 0, f = 0;
        double scale = 1.0;
        bool pre = false, post = false, over = false;
        if (!(*s == '.' || (*s >= '0' && *s <= '9'))) {
            goto invalid;
        }
        for (; *s >= '0' && *s <= '9'; s++) {
            if (v > lim / 10) {
                goto invalid;
            }
            v = v * 10 + (uint64_t)(*s - '0');
            if (v > lim) {
                goto invalid;
            }
            pre = true;
        }
        if (*s == '.') {
            s++;
            for (; *s >= '0' && *s <= '9'; s++) {
                post = true;
                if (over) {
                    continue;
                }
                if (f > (lim - 1) / 10) {
                    over = true;
                    continue;
                }
                uint64_t y = f * 10 + (uint64_t)(*s - '0');
                if (y > lim) {
                    over = true;
                    continue;
                }
                f = y;
                scale *= 10;
            }
        }
        if (!pre && !post) {
            goto invalid;
        }
        size_t ulen = 0;
        while (s[ulen] != '\0' && s[ulen] != '.' && !(s[ulen] >= '0' && s[ulen] <= '9')) {
            ulen++;
        }
        if (ulen == 0) {
            snprintf(why, whylen, "time: missing unit in duration %s", q);
            return -1;
        }
        uint64_t unit = 0;
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
            if (strlen(units[i].name) == ulen && strncmp(s, units[i].name, ulen) == 0) {
                unit = units[i].ns;
                break;
            }
        }
        if (unit == 0) {
            char u[64], uq[160];
            snprintf(u, sizeof(u), "%.*s", (int)(ulen < sizeof(u) ? ulen : sizeof(u) - 1), s);
            go_time_quote(u, uq, sizeof(uq));
            snprintf(why, whylen, "time: unknown unit %s in duration %s", uq, q);
            return -1;
        }
        s += ulen;
        if (v > lim / unit) {
            goto invalid;
        }
        v *= unit;
        if (f > 0) {
            v += (uint64_t)((double)f * ((double)unit / scale));
            if (v > lim) {
                goto invalid;
            }
        }
        d += v;
        if (d > lim) {
            goto invalid;
        }
    }
    if (!*neg && d > lim - 1) {
        goto invalid;
    }
    *ns = d;
    return 0;
invalid:
    snprintf(why, whylen, "time: invalid duration %s", q);
    return -1;
}

int kms_parse_go_duration_second(const char *s, int64_t *out, char *why, size_t whylen)
{
    size_t n = strlen(s);
    int64_t v;
    char q[160];

    if (n == 0) {
        *out = 0;
        return 0;
    }
    if (go_parse_int(s, n, &v) == 0) {
        if (v > KMS_DURATION_MAX_SEC || v < -KMS_DURATION_MAX_SEC) {
            goto toolong; /* Go's time.Duration would wrap around */
        }
        *out = v;
        return 0;
    }
    if (s[n - 1] == 'd') {
        int r = go_parse_int(s, n - 1, &v);
        if (r != 0) {
            go_strconv_quote(s, n - 1, q, sizeof(q));
            snprintf(why, whylen, "strconv.ParseInt: parsing %s: %s", q,
                     r == 1 ? "invalid syntax" : "value out of range");
            return -1;
        }
        if (v > KMS_DURATION_MAX_SEC / 86400 || v < -(KMS_DURATION_MAX_SEC / 86400)) {
            goto toolong;
        }
        *out = v * 86400;
        return 0;
    }
    uint64_t ns;
    bool neg;
    if (go_parse_duration(s, &ns, &neg, why, whylen) != 0) {
        return -1;
    }
    /* int(dur.Seconds()): whole seconds, toward zero */
    *out = (int64_t)(ns / 1000000000ULL) * (neg ? -1 : 1);
    return 0;
toolong:
    go_time_quote(s, q, sizeof(q));
    snprintf(why, whylen, "time: invalid duration %s", q);
    return -1;
}

/* A JSON value of a duration field as ParseDurationSecond sees it: the text of a number
 * (Go keeps a json.Number's text; a real's is rebuilt, shortest form, ".0" when it has no
 * point, as Python and Go write floats). */
void kms_go_number_text(const json_t *v, char *buf, size_t len)
{
    if (json_is_integer(v)) {
        snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return;
    }
    if (!json_is_real(v)) {
        snprintf(buf, len, "%s", "");
        return;
    }
    double d = json_real_value(v);
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, len, "%.*g", prec, d);
        if (strtod(buf, NULL) == d) {
            break;
        }
    }
    if (strpbrk(buf, ".en") == NULL) {
        size_t l = strlen(buf);
        snprintf(buf + l, len - l, ".0");
    }
}

static int coerce_duration(const json_t *v, bool nonneg, int64_t *out, char *why, size_t whylen)
{
    char num[64];
    const char *text;
    if (json_is_string(v)) {
        text = json_string_value(v);
    } else if (json_is_number(v)) {
        kms_go_number_text(v, num, sizeof(num));
        text = num;
    } else {
        snprintf(why, whylen, "could not parse duration from input");
        return -1;
    }
    if (kms_parse_go_duration_second(text, out, why, whylen) != 0) {
        return -1;
    }
    if (nonneg && *out < 0) {
        snprintf(why, whylen, "cannot provide negative value '%" PRId64 "'", *out);
        return -1;
    }
    return 0;
}

/* Go's underscoreOK: '_' only between digits (a base prefix counts as one). */
static bool go_underscore_ok(const char *s)
{
    char saw = '^';
    bool hex = false;
    if (*s == '+' || *s == '-') {
        s++;
    }
    if (s[0] == '0' && s[1] != '\0' && strchr("bBoOxX", s[1]) != NULL) {
        hex = s[1] == 'x' || s[1] == 'X';
        saw = '0';
        s += 2;
    }
    for (; *s != '\0'; s++) {
        if ((*s >= '0' && *s <= '9') || (hex && isxdigit((unsigned char)*s))) {
            saw = '0';
        } else if (*s == '_') {
            if (saw != '0') {
                return false;
            }
            saw = '_';
        } else if (saw == '_') {
            return false;
        } else {
            saw = '!';
        }
    }
    return saw != '_';
}

/*
 * Go's strconv.ParseInt(s, 0, 64), which mapstructure's weak decoding applies to a string or a
 * JSON number's text: a sign, then 0b/0o/0x or a leading 0 (octal), '_' between digits, no
 * space. 0 with *out set, -1 invalid syntax, -2 value out of range.
 */
static int go_strconv_parse_int(const char *s, int64_t *out)
{
    const char *p = s;
    bool neg = false, underscores = false;
    unsigned base = 10;
    uint64_t n = 0;
    if (*p == '+' || *p == '-') {
        neg = *p == '-';
        p++;
    }
    if (*p == '\0') {
        return -1;
    }
    if (p[0] == '0') {
        char b = (char)tolower((unsigned char)p[1]);
        if (p[1] != '\0' && p[2] != '\0' && (b == 'b' || b == 'o' || b == 'x')) {
            base = b == 'b' ? 2 : b == 'o' ? 8 : 16;
            p += 2;
        } else {
            base = 8;
            p++;
        }
    }
    for (; *p != '\0'; p++) {
        unsigned d;
        char ch = (char)tolower((unsigned char)*p);
        if (ch == '_') {
            underscores = true;
            continue;
        }
        if (ch >= '0' && ch <= '9') {
            d = (unsigned)(ch - '0');
        } else if (ch >= 'a' && ch <= 'z') {
            d = (unsigned)(ch - 'a') + 10;
        } else {
            return -1;
        }
        if (d >= base) {
            return -1;
        }
        if (n > (UINT64_MAX - d) / base) {
            return -2;
        }
        n = n * base + d;
    }
    if (underscores && !go_underscore_ok(s)) {
        return -1;
    }
    if ((!neg && n > (uint64_t)INT64_MAX) || (neg && n > (uint64_t)INT64_MAX + 1)) {
        return -2;
    }
    *out = neg ? (int64_t)(0 - n) : (int64_t)n;
    return 0;
}

/* `slice`: Go's type of an array value here, for the errors: a repeated query parameter is
 * a []string (OpenBao's parseQuery), a JSON array a []interface {}. */
static int coerce(json_t *v, enum kms_ftype t, const char *slice, json_t **out, char *why,
                  size_t whylen)
{
    *out = NULL;
    switch (t) {
    case KMS_F_RAW:
        *out = json_incref(v);
        return 0;
    case KMS_F_STRING:
        if (json_is_string(v)) {
            *out = json_incref(v);
        } else if (json_is_integer(v)) {
            char buf[32];
            snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(v));
            *out = json_string(buf);
        } else if (json_is_real(v)) {
            char buf[64];
            snprintf(buf, sizeof(buf), "%.17g", json_real_value(v));
            *out = json_string(buf);
        } else if (json_is_boolean(v)) {
            *out = json_string(json_is_true(v) ? "1" : "0");
        } else {
            snprintf(why, whylen, "'' expected type 'string', got unconvertible type '%s'",
                     json_is_array(v) ? slice : "map[string]interface {}");
            return -1;
        }
        return 0;
    case KMS_F_INT: {
        /* mapstructure reads a JSON number as its text (json.Number is a string), so a
         * fraction or an exponent is ParseInt's syntax error, as in "1.0" */
        int64_t iv = 0;
        int prc = 0;
        if (json_is_integer(v)) {
            *out = json_incref(v);
            return 0;
        }
        if (json_is_boolean(v)) {
            *out = json_integer(json_is_true(v) ? 1 : 0);
            return 0;
        }
        if (json_is_string(v)) {
            const char *text = json_string_value(v);
            prc = text[0] == '\0' ? 0 : go_strconv_parse_int(text, &iv);
        } else if (json_is_real(v)) {
            prc = -1;
        } else {
            snprintf(why, whylen, "'' expected type 'int', got unconvertible type '%s'",
                     json_is_array(v) ? slice : "map[string]interface {}");
            return -1;
        }
        if (prc != 0) {
            /* go-viper/mapstructure v2.4+ words, the value left out (wrapStrconvNumError) */
            snprintf(why, whylen, "'' cannot parse value as 'int': strconv.ParseInt: %s",
                     prc == -2 ? "value out of range" : "invalid syntax");
            return -1;
        }
        *out = json_integer(iv);
        return 0;
    }
    case KMS_F_BOOL: {
        bool b;
        if (json_is_boolean(v)) {
            *out = json_incref(v);
        } else if (json_is_string(v) && kms_parse_go_bool(json_string_value(v), &b)) {
            *out = json_boolean(b);
        } else if (json_is_string(v) && json_string_value(v)[0] == '\0') {
            *out = json_false();
        } else if (json_is_integer(v) &&
                   (json_integer_value(v) == 0 || json_integer_value(v) == 1)) {
            *out = json_boolean(json_integer_value(v) != 0);
        } else if (json_is_string(v) || json_is_number(v)) {
            /* a JSON number is its text to mapstructure: ParseBool takes only 1 and 0 */
            snprintf(why, whylen,
                     "'' cannot parse value as 'bool': strconv.ParseBool: invalid syntax");
            return -1;
        } else {
            snprintf(why, whylen, "'' expected type 'bool', got unconvertible type '%s'",
                     json_is_array(v) ? slice : "map[string]interface {}");
            return -1;
        }
        return 0;
    }
    case KMS_F_DURATION:
    case KMS_F_UDURATION: {
        int64_t d;
        if (coerce_duration(v, t == KMS_F_UDURATION, &d, why, whylen) != 0) {
            return -1;
        }
        *out = json_integer(d);
        return 0;
    }
    case KMS_F_ARRAY:
        if (json_is_array(v)) {
            *out = json_incref(v);
        } else if (json_is_string(v)) {
            json_t *arr = json_array();
            const char *s = json_string_value(v);
            while (*s != '\0') {
                const char *comma = strchr(s, ',');
                size_t n = comma ? (size_t)(comma - s) : strlen(s);
                while (n > 0 && *s == ' ') {
                    s++;
                    n--;
                }
                while (n > 0 && s[n - 1] == ' ') {
                    n--;
                }
                if (n > 0) {
                    json_array_append_new(arr, json_stringn(s, n));
                }
                if (comma == NULL) {
                    break;
                }
                s = comma + 1;
            }
            *out = arr;
        } else {
            snprintf(why, whylen, "'' expected type '[]string', got unconvertible type '%s'",
                     json_is_object(v) ? "map[string]interface {}" : "scalar");
            return -1;
        }
        return 0;
    case KMS_F_MAP:
        if (json_is_object(v)) {
            *out = json_incref(v);
            return 0;
        }
        snprintf(why, whylen, "'' expected a map, got '%s'", json_is_array(v) ? "slice" : "scalar");
        return -1;
    }
    return -1;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int kms_params_apply_fields(struct kms_ctx *c)
{
    const struct kms_field *fields = c->route->fields;
    size_t n = json_object_size(c->params);
    const char **unknown = calloc(n ? n : 1, sizeof(*unknown));
    size_t nunknown = 0;
    const char *k;
    json_t *v;
    void *tmp;
    int rc = -1;

    if (unknown == NULL) {
        return KMS_FAILW(c, 500, "out of memory");
    }
    /* reads, lists and deletes take their parameters from the query (parse_params) */
    bool from_query = c->op == KMS_OP_READ || c->op == KMS_OP_LIST || c->op == KMS_OP_DELETE;
    json_object_foreach_safe(c->params, tmp, k, v)
    {
        const struct kms_field *f = NULL;
        for (size_t i = 0; fields != NULL && fields[i].name != NULL; i++) {
            if (strcmp(fields[i].name, k) == 0) {
                f = &fields[i];
                break;
            }
        }
        if (f == NULL) {
            unknown[nunknown++] = k;
            continue;
        }
        if (json_is_null(v)) {
            bool zero = c->engine != NULL && c->engine->null_is_zero;
            if (zero && f->type == KMS_F_STRING) {
                json_object_set_new(c->params, k, json_string(""));
            } else if (zero && f->type == KMS_F_INT) {
                json_object_set_new(c->params, k, json_integer(0));
            } else if (zero && f->type == KMS_F_BOOL) {
                json_object_set_new(c->params, k, json_false());
            }
            continue;
        }
        json_t *cv = NULL;
        char why[256];
        if (coerce(v, f->type, from_query ? "[]string" : "[]interface {}", &cv, why, sizeof(why)) !=
            0) {
            KMS_FAIL(c, 400, "Field validation failed: error converting input for field \"%s\": %s",
                     k, why);
            goto out;
        }
        json_object_set_new(c->params, k, cv);
    }
    if (nunknown > 0) {
        char buf[1024];
        size_t o = 0;
        qsort(unknown, nunknown, sizeof(*unknown), cmp_str);
        for (size_t i = 0; i < nunknown && o < sizeof(buf); i++) {
            o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s%s", i ? " " : "", unknown[i]);
        }
        kms_warn(c, "Endpoint ignored these unrecognized parameters: [%s]", buf);
    }
    rc = 0;
out:
    free(unknown);
    return rc;
}

json_t *kms_param(struct kms_ctx *c, const char *name)
{
    json_t *v = json_object_get(c->params, name);
    return json_is_null(v) ? NULL : v;
}

bool kms_param_str(struct kms_ctx *c, const char *name, const char **out)
{
    json_t *v = kms_param(c, name);
    if (!json_is_string(v)) {
        return false;
    }
    *out = json_string_value(v);
    return true;
}

bool kms_param_int(struct kms_ctx *c, const char *name, int64_t *out)
{
    json_t *v = kms_param(c, name);
    if (!json_is_integer(v)) {
        return false;
    }
    *out = json_integer_value(v);
    return true;
}

bool kms_param_bool(struct kms_ctx *c, const char *name, bool *out)
{
    json_t *v = kms_param(c, name);
    if (!json_is_boolean(v)) {
        return false;
    }
    *out = json_is_true(v);
    return true;
}

int kms_b64_param(const char *s, uint8_t **out, size_t *outlen, struct kms_err *err, int status)
{
    size_t at = 0;
    if (kms_b64_decode_alloc(s, strlen(s), out, outlen, &at) != 0) {
        return kms_err_set(err, status, "illegal base64 data at input byte %zu", at);
    }
    return 0;
}
