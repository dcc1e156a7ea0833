/*
 * text.c - UTF-8, as jansson, Go's protobuf and the audit line accept it (RFC 3629): no
 * overlong forms, no surrogates, nothing past U+10FFFF. One place for the audit writer, the
 * request pipeline, kmsctl's terminal output and the KMS plugin's string fields.
 */
#include "crypto/crypto.h"

#include <stdlib.h>
#include <string.h>

size_t kms_utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2, v = c & 0x1Fu, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, v = c & 0x0Fu, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, v = c & 0x07u, min = 0x10000;
    } else {
        return 0;
    }
    if (len > n) {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            return 0;
        }
        v = (v << 6) | (s[i] & 0x3Fu);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) {
        return 0;
    }
    *cp = v;
    return len;
}

bool kms_utf8_valid(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        size_t len = kms_utf8_next(s + i, n - i, &cp);
        if (len == 0) {
            return false;
        }
        i += len;
    }
    return true;
}

size_t kms_utf8_cut(char *s, size_t len)
{
    size_t back = 0;
    /* the last lead byte within the 4 bytes a character may take */
    while (back < len && back < 4 && ((unsigned char)s[len - 1 - back] & 0xC0) == 0x80) {
        back++;
    }
    if (back == len || back == 4) {
        return len; /* no lead byte to judge by: left as it is (invalid either way) */
    }
    unsigned char lead = (unsigned char)s[len - 1 - back];
    size_t need = lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    if (need > back + 1) {
        len -= back + 1;
        s[len] = '\0';
    }
    return len;
}

char *kms_utf8_fix(const char *s)
{
    size_t n = strlen(s), o = 0;
    char *out = malloc(n * 3 + 1); /* each bad byte may become the 3 bytes of U+FFFD */
    if (out == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len = kms_utf8_next((const unsigned char *)s + i, n - i, &cp);
        if (len == 0) {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else {
            memcpy(out + o, s + i, len);
            o += len;
            i += len;
        }
    }
    out[o] = '\0';
    return out;
}
