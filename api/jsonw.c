/*
 * jsonw.c - compact JSON text written straight into a buffer, for response bodies. jansson
 * still parses every request; this only replaces building a tree to dump it. The bytes are
 * json_dumps(JSON_COMPACT | JSON_ENCODE_ANY)'s (tests/api/test_envelope.c compares them):
 * keys in insertion order, UTF-8 as it is, the short escapes \" \\ \b \f \n \r \t and \uXXXX
 * (upper-case hex) for the other control characters; integers as "%lld", reals through
 * jansson itself.
 */
#include "api/api_int.h"
#include "crypto/crypto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int kms_jw_reserve(struct kms_jw *w, size_t n)
{
    if (w->oom) {
        return -1;
    }
    if (w->len + n + 1 <= w->cap) {
        return 0;
    }
    size_t cap = w->cap ? w->cap : 512;
    while (cap < w->len + n + 1) {
        cap *= 2;
    }
    /* not realloc: a block it moves is freed unwiped, and a body may hold plaintexts */
    char *np = malloc(cap);
    if (np == NULL) {
        w->oom = true;
        return -1;
    }
    if (w->p != NULL) {
        memcpy(np, w->p, w->len + 1);
        kms_free_wipe((void **)&w->p, w->len);
    }
    w->p = np;
    w->cap = cap;
    return 0;
}

void kms_jw_raw(struct kms_jw *w, const char *s, size_t n)
{
    if (kms_jw_reserve(w, n) != 0) {
        return;
    }
    memcpy(w->p + w->len, s, n);
    w->len += n;
    w->p[w->len] = '\0';
}

void kms_jw_str(struct kms_jw *w, const char *str, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *s = (const unsigned char *)str;
    if (kms_jw_reserve(w, n * 6 + 2) != 0) {
        return;
    }
    char *o = w->p + w->len;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        size_t run = i;
        while (run < n && s[run] >= 0x20 && s[run] != '"' && s[run] != '\\') {
            run++;
        }
        if (run > i) {
            /* jansson strings are valid UTF-8: copied as they are, a run at a time */
            memcpy(o, s + i, run - i);
            o += run - i;
            i = run;
            if (i == n) {
                break;
            }
        }
        unsigned char c = s[i];
        *o++ = '\\';
        switch (c) {
        case '"':
        case '\\':
            *o++ = (char)c;
            break;
        case '\b':
            *o++ = 'b';
            break;
        case '\f':
            *o++ = 'f';
            break;
        case '\n':
            *o++ = 'n';
            break;
        case '\r':
            *o++ = 'r';
            break;
        case '\t':
            *o++ = 't';
            break;
        default:
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 0xF];
            break;
        }
    }
    *o++ = '"';
    *o = '\0';
    w->len = (size_t)(o - w->p);
}

void kms_jw_uint(struct kms_jw *w, uint64_t v)
{
    char num[21];
    kms_jw_raw(w, num, kms_u64_dec(v, num));
}

static int cmp_key(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* An object with its keys in byte order (Go's map marshalling), values as they are. */
static void write_sorted(struct kms_jw *w, const json_t *obj)
{
    const char *small[32];
    size_t n = json_object_size(obj);
    const char **keys = n <= 32 ? small : malloc(n * sizeof(*keys));
    const char *k;
    json_t *v;
    size_t i = 0;
    if (keys == NULL) {
        w->oom = true;
        return;
    }
    json_object_foreach((json_t *)obj, k, v)
    {
        keys[i++] = k;
    }
    qsort(keys, n, sizeof(*keys), cmp_key);
    kms_jw_raw(w, "{", 1);
    for (i = 0; i < n; i++) {
        if (i > 0) {
            kms_jw_raw(w, ",", 1);
        }
        kms_jw_str(w, keys[i], strlen(keys[i]));
        kms_jw_raw(w, ":", 1);
        kms_jw_value(w, json_object_get(obj, keys[i]), false);
    }
    kms_jw_raw(w, "}", 1);
    if (keys != small) {
        free(keys);
    }
}

void kms_jw_value(struct kms_jw *w, const json_t *v, bool sort_top)
{
    char num[32];
    const char *k;
    json_t *e;
    size_t i;
    bool first = true;

    if (v == NULL) {
        w->oom = true; /* a missing value: never a valid body */
        return;
    }
    if (sort_top && !json_is_object(v)) {
        kms_jw_raw(w, "{}", 2); /* what the sorted copy of a non-object always was */
        return;
    }
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        if (sort_top) {
            write_sorted(w, v);
            return;
        }
        kms_jw_raw(w, "{", 1);
        json_object_foreach((json_t *)v, k, e)
        {
            if (!first) {
                kms_jw_raw(w, ",", 1);
            }
            first = false;
            kms_jw_str(w, k, strlen(k));
            kms_jw_raw(w, ":", 1);
            kms_jw_value(w, e, false);
        }
        kms_jw_raw(w, "}", 1);
        return;
    case JSON_ARRAY:
        kms_jw_raw(w, "[", 1);
        json_array_foreach(v, i, e)
        {
            if (i > 0) {
                kms_jw_raw(w, ",", 1);
            }
            kms_jw_value(w, e, false);
        }
        kms_jw_raw(w, "]", 1);
        return;
    case JSON_STRING:
        kms_jw_str(w, json_string_value(v), json_string_length(v));
        return;
    case JSON_INTEGER: {
        int n = snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        kms_jw_raw(w, num, (size_t)n);
        return;
    }
    case JSON_TRUE:
        kms_jw_raw(w, "true", 4);
        return;
    case JSON_FALSE:
        kms_jw_raw(w, "false", 5);
        return;
    case JSON_NULL:
        kms_jw_raw(w, "null", 4);
        return;
    default: {
        char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY); /* reals: jansson's format */
        if (t == NULL) {
            w->oom = true;
            return;
        }
        kms_jw_raw(w, t, strlen(t));
        free(t);
        return;
    }
    }
}
