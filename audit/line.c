/*
 * line.c - the audit line writer: JSON text written straight into a growable buffer, secrets
 * HMAC'd as they are written. No copied or hashed jansson trees, no json_dumps.
 *
 * The output is byte-for-byte what the earlier writer produced with jansson's
 * json_dumps(JSON_COMPACT | JSON_ENSURE_ASCII) over hashed copies of the blocks
 * (tests/audit/test_line_kat.c holds its golden lines): object keys in insertion order; the
 * short escapes \" \\ \b \f \n \r \t; every other control character and every non-ASCII
 * character as \uXXXX with upper-case hex (a surrogate pair outside the BMP); '/' and DEL as
 * they are. Integers as "%lld"; reals (never produced by kmsd itself) through jansson, so
 * their formatting stays jansson's.
 *
 * Buffers of KMS_AUDIT_BUF_MAP bytes or more (a batch's lines, the writer's group buffers)
 * are mmapped by hand and unmapped when freed, so they go back to the kernel whatever
 * glibc's dynamic mmap threshold has grown to (it rises to the largest mmapped chunk freed,
 * after which such buffers came from the heaps and stayed resident after a burst).
 */
#include "audit/audit_int.h"
#include "crypto/crypto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

int kms_audit_buf_grow(char **p, size_t *cap, size_t len, size_t need, size_t first)
{
    if (need <= *cap) {
        return 0;
    }
    size_t ncap = *cap ? *cap : first;
    while (ncap < need) {
        ncap *= 2;
    }
    char *np;
    if (ncap < KMS_AUDIT_BUF_MAP) {
        np = realloc(*p, ncap);
        if (np == NULL) {
            return -1;
        }
    } else if (*cap >= KMS_AUDIT_BUF_MAP) {
        np = mremap(*p, *cap, ncap, MREMAP_MAYMOVE);
        if (np == MAP_FAILED) {
            return -1;
        }
    } else {
        np = mmap(NULL, ncap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (np == MAP_FAILED) {
            return -1;
        }
        if (*p != NULL) {
            memcpy(np, *p, len);
        }
        free(*p);
    }
    *p = np;
    *cap = ncap;
    return 0;
}

void kms_audit_buf_free(char *p, size_t cap)
{
    if (p == NULL) {
        return;
    }
    if (cap >= KMS_AUDIT_BUF_MAP) {
        munmap(p, cap);
    } else {
        free(p);
    }
}

int kms_audit_sb_reserve(struct kms_audit_sbuf *b, size_t n)
{
    if (b->len + n + 1 <= b->cap) {
        return 0;
    }
    return kms_audit_buf_grow(&b->p, &b->cap, b->len + (b->p != NULL), b->len + n + 1, 2048);
}

void kms_audit_sb_free(struct kms_audit_sbuf *b)
{
    kms_audit_buf_free(b->p, b->cap);
    b->p = NULL;
    b->len = b->cap = 0;
}

int kms_audit_sb_add(struct kms_audit_sbuf *b, const void *s, size_t n)
{
    if (kms_audit_sb_reserve(b, n) != 0) {
        return -1;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static const char HEXU[] = "0123456789ABCDEF";

static void put_u(char *o, uint32_t v)
{
    o[0] = '\\';
    o[1] = 'u';
    o[2] = HEXU[(v >> 12) & 0xF];
    o[3] = HEXU[(v >> 8) & 0xF];
    o[4] = HEXU[(v >> 4) & 0xF];
    o[5] = HEXU[v & 0xF];
}

/* 1: the byte is written as it is (printable ASCII and DEL, but '"' and '\\') */
static const unsigned char PLAIN[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};

int kms_audit_sb_str(struct kms_audit_sbuf *b, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    /* worst case 12 output bytes per 4 input bytes (a surrogate pair), 6 per control byte */
    if (kms_audit_sb_reserve(b, n * 6 + 2) != 0) {
        return -1;
    }
    char *o = b->p + b->len;
    *o++ = '"';
    size_t i = 0;
    while (i < n) {
        /* a run of bytes written as they are, one table load per byte */
        size_t j = i;
        while (j < n && PLAIN[s[j]]) {
            j++;
        }
        memcpy(o, s + i, j - i);
        o += j - i;
        i = j;
        if (i == n) {
            break;
        }
        uint32_t cp = 0;
        size_t len = kms_utf8_next(s + i, n - i, &cp);
        if (len == 0) {
            b->p[b->len] = '\0';
            return KMS_AUDIT_NOT_UTF8; /* jansson refused such strings too */
        }
        i += len;
        switch (cp) {
        case '"':
            *o++ = '\\';
            *o++ = '"';
            break;
        case '\\':
            *o++ = '\\';
            *o++ = '\\';
            break;
        case '\b':
            *o++ = '\\';
            *o++ = 'b';
            break;
        case '\f':
            *o++ = '\\';
            *o++ = 'f';
            break;
        case '\n':
            *o++ = '\\';
            *o++ = 'n';
            break;
        case '\r':
            *o++ = '\\';
            *o++ = 'r';
            break;
        case '\t':
            *o++ = '\\';
            *o++ = 't';
            break;
        default:
            if (cp < 0x10000) {
                put_u(o, cp);
                o += 6;
            } else {
                uint32_t v = cp - 0x10000;
                put_u(o, 0xD800 | ((v & 0xFFC00) >> 10));
                put_u(o + 6, 0xDC00 | (v & 0x3FF));
                o += 12;
            }
            break;
        }
    }
    *o++ = '"';
    *o = '\0';
    b->len = (size_t)(o - b->p);
    return 0;
}

int kms_audit_sb_hmac(struct kms_audit_sbuf *b, const struct kms_hmac_key *hk, const void *in,
                      size_t n)
{
    uint8_t mac[32];
    if (kms_audit_sb_reserve(b, KMS_AUDIT_HMAC_LEN + 2) != 0 ||
        kms_hmac_key_mac(hk, in, n, mac) != 0) {
        kms_memzero(mac, sizeof(mac));
        return -1;
    }
    char *o = b->p + b->len;
    o[0] = '"';
    memcpy(o + 1, KMS_AUDIT_HMAC_PREFIX, 12);
    kms_hex_encode(mac, sizeof(mac), o + 13);
    o[13 + 64] = '"';
    o[14 + 64] = '\0';
    b->len += KMS_AUDIT_HMAC_LEN + 2;
    kms_memzero(mac, sizeof(mac));
    return 0;
}

static int write_scalar(struct kms_audit_sbuf *b, const json_t *v)
{
    char num[21];
    switch (json_typeof(v)) {
    case JSON_INTEGER:
        return kms_audit_sb_add(b, num, kms_i64_dec(json_integer_value(v), num));
    case JSON_TRUE:
        return kms_audit_sb_add(b, "true", 4);
    case JSON_FALSE:
        return kms_audit_sb_add(b, "false", 5);
    case JSON_NULL:
        return kms_audit_sb_add(b, "null", 4);
    default: {
        /* reals: jansson's own formatting */
        char *t = json_dumps(v, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_ENCODE_ANY);
        int rc = t != NULL ? kms_audit_sb_add(b, t, strlen(t)) : -1;
        free(t);
        return rc;
    }
    }
}

int kms_audit_sb_value(struct kms_audit_sbuf *b, const json_t *v, const struct kms_hmac_key *hk)
{
    const char *k;
    json_t *e;
    size_t i;
    bool first = true;

    switch (json_typeof(v)) {
    case JSON_STRING: {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        if (hk != NULL && !kms_audit_is_rfc3339(s, n)) {
            return kms_audit_sb_hmac(b, hk, s, n);
        }
        return kms_audit_sb_str(b, s, n);
    }
    case JSON_OBJECT:
        if (kms_audit_sb_add(b, "{", 1) != 0) {
            return -1;
        }
        json_object_foreach((json_t *)v, k, e)
        {
            if ((!first && kms_audit_sb_add(b, ",", 1) != 0) ||
                kms_audit_sb_str(b, k, strlen(k)) != 0 || kms_audit_sb_add(b, ":", 1) != 0 ||
                kms_audit_sb_value(b, e, hk) != 0) {
                return -1;
            }
            first = false;
        }
        return kms_audit_sb_add(b, "}", 1);
    case JSON_ARRAY:
        if (kms_audit_sb_add(b, "[", 1) != 0) {
            return -1;
        }
        json_array_foreach(v, i, e)
        {
            if ((i > 0 && kms_audit_sb_add(b, ",", 1) != 0) || kms_audit_sb_value(b, e, hk) != 0) {
                return -1;
            }
        }
        return kms_audit_sb_add(b, "]", 1);
    default:
        return write_scalar(b, v);
    }
}
