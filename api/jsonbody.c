/*
 * jsonbody.c - the request body's JSON, lexed by yajl and built into jansson values.
 *
 * jansson stays the JSON representation of the whole server; only its reader is slow: it
 * pulls every byte through a stream callback and a scratch buffer, about 150 instructions a
 * byte (16,000 of a single encrypt's 55,000 instructions, and 16,000 per item of a 1000-item
 * batch). yajl's lexer walks the same text in a tight loop and hands over each value, which
 * is built here into the tree jansson would have built (docs/performance.md).
 *
 * Design notes:
 * - Same answer as json_loadb(JSON_DECODE_ANY | JSON_REJECT_DUPLICATES): every value, type,
 *   integer and real is what jansson would produce. Where the two readers could disagree, the
 *   text goes to jansson instead: any "\u" escape (yajl turns a lone surrogate into '?'
 *   where jansson refuses it; yajl's \u decoding is also where its known bugs were), a form
 *   feed or vertical tab (whitespace to yajl), an integer or real jansson cannot hold, a
 *   string or key that jansson's UTF-8 check refuses, a NUL in a key or a string, a duplicate
 *   key, nesting past jansson's limit, a text that is not one object or array followed by
 * whitespace (yajl misses an unfinished token after the top-level value). jansson then reads the
 * whole text: its tree or its error is the answer.
 * - Every text yajl refuses is also read again by jansson, so error messages stay jansson's
 *   ("failed to decode JSON input: ..." in dispatch.c).
 * - tests/api/test_jsonbody.c compares both readers on a corpus of tricky texts and on seeded
 *   mutations of a batch body; tests/fuzz/fuzz_jsonbody.c does the same under libFuzzer.
 */
#include "api/api_int.h"

#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

/* jansson's own nesting limit (JSON_PARSER_MAX_DEPTH): deeper text is jansson's to refuse. */
#define MAX_DEPTH 2048

struct builder {
    json_t *root;   /* the value being built; owns everything below */
    json_t **stack; /* open containers, borrowed from root */
    size_t depth;
    size_t cap;
    char *key; /* the pending object key, NUL-terminated */
    size_t key_len;
    size_t key_cap;
};

/* Attach v (a new reference) to the innermost open container, or make it the root. */
static int attach(struct builder *b, json_t *v)
{
    if (v == NULL) {
        return 0;
    }
    if (b->depth == 0) {
        if (b->root != NULL) {
            json_decref(v);
            return 0;
        }
        b->root = v;
        return 1;
    }
    json_t *parent = b->stack[b->depth - 1];
    if (json_is_array(parent)) {
        return json_array_append_new(parent, v) == 0;
    }
    if (json_object_getn(parent, b->key, b->key_len) != NULL) {
        json_decref(v);
        return 0; /* a duplicate key: jansson names it */
    }
    /* the checked setter: jansson refuses a key that is not valid UTF-8 */
    return json_object_setn_new(parent, b->key, b->key_len, v) == 0;
}

static int open_container(struct builder *b, json_t *v)
{
    if (v == NULL || b->depth >= MAX_DEPTH) {
        json_decref(v);
        return 0;
    }
    if (b->depth == b->cap) {
        size_t cap = b->cap == 0 ? 16 : b->cap * 2;
        json_t **s = realloc(b->stack, cap * sizeof(*s));
        if (s == NULL) {
            json_decref(v);
            return 0;
        }
        b->stack = s;
        b->cap = cap;
    }
    if (!attach(b, json_incref(v))) {
        json_decref(v);
        return 0;
    }
    b->stack[b->depth++] = v;
    json_decref(v); /* the parent holds it */
    return 1;
}

static int on_null(void *ctx)
{
    return attach(ctx, json_null());
}

static int on_boolean(void *ctx, int value)
{
    return attach(ctx, json_boolean(value));
}

/* A number as jansson reads it: an integer unless it has a fraction or an exponent. */
static int on_number(void *ctx, const char *s, size_t len)
{
    char text[64];
    if (len >= sizeof(text)) {
        return 0; /* longer than any number jansson holds exactly: jansson decides */
    }
    memcpy(text, s, len);
    text[len] = '\0';
    char *end = NULL;
    errno = 0;
    if (strpbrk(text, ".eE") == NULL) {
        long long v = strtoll(text, &end, 10);
        if (errno != 0 || *end != '\0') {
            return 0; /* too big an integer: jansson's error */
        }
        return attach(ctx, json_integer((json_int_t)v));
    }
    double d = strtod(text, &end);
    if (((d == HUGE_VAL || d == -HUGE_VAL) && errno == ERANGE) || *end != '\0') {
        return 0; /* real number overflow: jansson's error */
    }
    return attach(ctx, json_real(d));
}

static int on_string(void *ctx, const unsigned char *s, size_t len)
{
    if (memchr(s, '\0', len) != NULL) {
        return 0; /* jansson's reader never yields a NUL without JSON_ALLOW_NUL */
    }
    /* json_stringn checks UTF-8 as jansson's reader does; NULL sends the text to jansson */
    return attach(ctx, json_stringn((const char *)s, len));
}

static int on_key(void *ctx, const unsigned char *s, size_t len)
{
    struct builder *b = ctx;
    if (memchr(s, '\0', len) != NULL) {
        return 0; /* jansson refuses a NUL in a key */
    }
    if (len + 1 > b->key_cap) {
        size_t cap = len + 1 > 64 ? len + 1 : 64;
        char *k = realloc(b->key, cap);
        if (k == NULL) {
            return 0;
        }
        b->key = k;
        b->key_cap = cap;
    }
    memcpy(b->key, s, len);
    b->key[len] = '\0';
    b->key_len = len;
    return 1;
}

static int on_start_map(void *ctx)
{
    return open_container(ctx, json_object());
}

static int on_start_array(void *ctx)
{
    return open_container(ctx, json_array());
}

static int on_end(void *ctx)
{
    struct builder *b = ctx;
    b->depth--;
    return 1;
}

static const yajl_callbacks callbacks = {
    .yajl_null = on_null,
    .yajl_boolean = on_boolean,
    .yajl_number = on_number,
    .yajl_string = on_string,
    .yajl_start_map = on_start_map,
    .yajl_map_key = on_key,
    .yajl_end_map = on_end,
    .yajl_start_array = on_start_array,
    .yajl_end_array = on_end,
};

static bool json_space(uint8_t ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

/*
 * Whether the text is one object or array and nothing but JSON whitespace after it. yajl
 * does not see a token left unfinished after the top-level value (`{} "abc` passes
 * yajl_complete_parse), so the end is found here: brackets counted outside strings.
 */
static bool one_container(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n && json_space(p[i])) {
        i++;
    }
    if (i == n || (p[i] != '{' && p[i] != '[')) {
        return false; /* a bare scalar is refused by the API anyway: jansson words it */
    }
    size_t depth = 0;
    for (; i < n; i++) {
        if (p[i] == '"') {
            i = kms_json_string_end(p, n, i);
        } else if (p[i] == '{' || p[i] == '[') {
            depth++;
        } else if ((p[i] == '}' || p[i] == ']') && --depth == 0) {
            break;
        }
    }
    for (i++; i < n; i++) {
        if (!json_space(p[i])) {
            return false;
        }
    }
    return depth == 0;
}

/* Whether a backslash is followed by 'u' anywhere (memchr's speed: bodies rarely hold '\\'). */
static bool has_u_escape(const uint8_t *p, size_t n)
{
    for (const uint8_t *q = p; (q = memchr(q, '\\', n - (size_t)(q - p))) != NULL; q++) {
        if ((size_t)(q - p) + 1 < n && q[1] == 'u') {
            return true;
        }
    }
    return false;
}

/*
 * yajl's own buffers (a string with escapes is decoded into one) get jansson's allocator, so
 * they are wiped when freed wherever kmsd makes jansson wipe (json_set_alloc_funcs in
 * server/main.c): a decoded plaintext must not outlive the request in freed heap. The realloc
 * copies malloc_usable_size bytes: jansson's malloc is the C library's in kmsd and kmsctl.
 */
static void *yajl_malloc_j(void *ctx, size_t n)
{
    (void)ctx;
    json_malloc_t jm;
    json_free_t jf;
    json_get_alloc_funcs(&jm, &jf);
    return jm(n);
}

static void yajl_free_j(void *ctx, void *ptr)
{
    (void)ctx;
    json_malloc_t jm;
    json_free_t jf;
    json_get_alloc_funcs(&jm, &jf);
    jf(ptr);
}

static void *yajl_realloc_j(void *ctx, void *ptr, size_t n)
{
    void *q = yajl_malloc_j(ctx, n);
    if (q != NULL && ptr != NULL) {
        size_t old = malloc_usable_size(ptr);
        memcpy(q, ptr, old < n ? old : n);
        yajl_free_j(ctx, ptr);
    }
    return q;
}

static yajl_alloc_funcs alloc_funcs = {yajl_malloc_j, yajl_realloc_j, yajl_free_j, NULL};

json_t *kms_json_body_yajl(const uint8_t *p, size_t n)
{
    /* yajl and jansson differ on lone surrogates and \u0000, and yajl takes a form feed or
     * a vertical tab for whitespace (never valid JSON) */
    if (has_u_escape(p, n) || memchr(p, '\f', n) != NULL || memchr(p, '\v', n) != NULL ||
        !one_container(p, n)) {
        return NULL;
    }
    struct builder b = {0};
    yajl_handle h = yajl_alloc(&callbacks, &alloc_funcs, &b);
    if (h == NULL) {
        return NULL;
    }
    bool ok = yajl_parse(h, p, n) == yajl_status_ok && yajl_complete_parse(h) == yajl_status_ok &&
              b.depth == 0 && b.root != NULL;
    yajl_free(h);
    free(b.stack);
    free(b.key);
    if (!ok) {
        json_decref(b.root);
        return NULL;
    }
    return b.root;
}

json_t *kms_json_body_load(const uint8_t *p, size_t n, json_error_t *err)
{
    json_t *v = kms_json_body_yajl(p, n);
    if (v != NULL) {
        return v;
    }
    return json_loadb((const char *)p, n, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, err);
}
