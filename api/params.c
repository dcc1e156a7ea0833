/*
 * params.c - request parameters the way Vault's framework sees them: weakly typed input
 * coerced to each route's declared field types, unknown fields reported as a warning,
 * durations in Vault's syntax, and Go-compatible base64 errors.
 */
#include "api/api_int.h"

#include <errno.h>
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

/* [+-]digits: a number ParseInt refuses only for its size */
static bool all_digits(const char *s)
{
    if (*s == '+' || *s == '-') {
        s++;
    }
    if (*s == '\0') {
        return false;
    }
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9') {
            return false;
        }
    }
    return true;
}

static int coerce(json_t *v, enum kms_ftype t, json_t **out, char *why, size_t whylen)
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
                     json_is_array(v) ? "[]interface {}" : "map[string]interface {}");
            return -1;
        }
        return 0;
    case KMS_F_INT: {
        int64_t iv;
        if (json_is_integer(v)) {
            *out = json_incref(v);
        } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
                   fabs(json_real_value(v)) < 9e18) {
            *out = json_integer((json_int_t)json_real_value(v));
        } else if (json_is_string(v) && kms_int_parse(json_string_value(v), &iv)) {
            *out = json_integer(iv);
        } else if (json_is_string(v) && json_string_value(v)[0] == '\0') {
            *out = json_integer(0);
        } else if (json_is_boolean(v)) {
            *out = json_integer(json_is_true(v) ? 1 : 0);
        } else if (json_is_string(v) || json_is_real(v)) {
            /* Go's mapstructure parses the text (a JSON number included) with ParseInt */
            char num[64];
            const char *text = json_string_value(v);
            if (text == NULL) {
                snprintf(num, sizeof(num), "%.17g", json_real_value(v));
                text = num;
            }
            snprintf(why, whylen, "cannot parse '' as int: strconv.ParseInt: parsing \"%.64s\": %s",
                     text, all_digits(text) ? "value out of range" : "invalid syntax");
            return -1;
        } else {
            snprintf(why, whylen, "'' expected type 'int', got unconvertible type '%s'",
                     json_is_array(v) ? "[]interface {}" : "map[string]interface {}");
            return -1;
        }
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
        } else if (json_is_integer(v)) {
            *out = json_boolean(json_integer_value(v) != 0);
        } else if (json_is_string(v)) {
            snprintf(why, whylen,
                     "cannot parse '' as bool: strconv.ParseBool: parsing \"%.64s\": invalid "
                     "syntax",
                     json_string_value(v));
            return -1;
        } else {
            snprintf(why, whylen, "'' expected type 'bool', got unconvertible type '%s'",
                     json_is_array(v) ? "[]interface {}" : "map[string]interface {}");
            return -1;
        }
        return 0;
    }
    case KMS_F_DURATION: {
        int64_t d;
        if (kms_parse_duration(v, &d) != 0) {
            if (json_is_integer(v)) {
                snprintf(why, whylen, "time: invalid duration \"%" JSON_INTEGER_FORMAT "\"",
                         json_integer_value(v));
            } else if (json_is_real(v)) {
                snprintf(why, whylen, "time: invalid duration \"%g\"", json_real_value(v));
            } else {
                snprintf(why, whylen, "time: invalid duration \"%.64s\"",
                         json_is_string(v) ? json_string_value(v) : "?");
            }
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
            continue;
        }
        json_t *cv = NULL;
        char why[256];
        if (coerce(v, f->type, &cv, why, sizeof(why)) != 0) {
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
