/*
 * hash.c - what the audit log never writes in clear: Vault's HMAC of a value under the
 * device salt, the walker that applies it to every string leaf of request and response data,
 * and the RFC 3339 test that exempts time strings (Go's time.Parse(time.RFC3339, s)).
 *
 * The HMAC is computed as H(K^opad || H(K^ipad || m)) over two one-shot SHA-256 calls rather
 * than through EVP_MAC: a batch line hashes thousands of values, and the generic MAC path
 * fetches the algorithm on every call (about twice the cost). Tests check it against
 * kms_hmac and Vault's published vectors.
 */
#include "audit/audit_int.h"

#include <stdlib.h>
#include <string.h>

#define BLOCK 64
#define SMALL_MSG 1024

int kms_audit_hmac(const char *salt, const void *in, size_t n, char out[KMS_AUDIT_HMAC_LEN + 1])
{
    uint8_t key[BLOCK];
    uint8_t inner[32];
    uint8_t outer_msg[BLOCK + 32];
    uint8_t mac[32];
    uint8_t small[BLOCK + SMALL_MSG];
    uint8_t *buf = small;
    size_t buflen = 0;
    size_t saltlen = strlen(salt);
    int rc = -1;

    memset(key, 0, sizeof(key));
    if (saltlen > BLOCK) {
        if (kms_hash(KMS_HASH_SHA2_256, salt, saltlen, key) != 0) {
            goto out;
        }
    } else {
        memcpy(key, salt, saltlen);
    }
    if (n > SMALL_MSG) {
        buf = malloc(BLOCK + n);
        if (buf == NULL) {
            goto out;
        }
    }
    buflen = BLOCK + n;
    for (size_t i = 0; i < BLOCK; i++) {
        buf[i] = key[i] ^ 0x36;
        outer_msg[i] = key[i] ^ 0x5c;
    }
    if (n > 0) {
        memcpy(buf + BLOCK, in, n);
    }
    if (kms_hash(KMS_HASH_SHA2_256, buf, BLOCK + n, inner) != 0) {
        goto out;
    }
    memcpy(outer_msg + BLOCK, inner, sizeof(inner));
    if (kms_hash(KMS_HASH_SHA2_256, outer_msg, sizeof(outer_msg), mac) != 0) {
        goto out;
    }
    memcpy(out, KMS_AUDIT_HMAC_PREFIX, 12);
    kms_hex_encode(mac, sizeof(mac), out + 12);
    rc = 0;
out:
    /* the message may be plaintext: wipe every copy */
    if (buflen > 0) {
        kms_memzero(buf, buflen);
    }
    if (buf != small) {
        free(buf);
    }
    kms_memzero(key, sizeof(key));
    kms_memzero(inner, sizeof(inner));
    kms_memzero(outer_msg, sizeof(outer_msg));
    return rc;
}

static bool digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
    }
    return true;
}

static int num(const char *s, size_t n)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static int days_in_month(int y, int m)
{
    static const int d[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : d[m - 1];
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian; Howard Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int kms_audit_rfc3339_parse(const char *s, size_t n, int64_t *sec, int32_t *nsec)
{
    /* 2006-01-02T15:04:05[.999999999](Z|-07:00) */
    if (n < 20 || !digits(s, 4) || s[4] != '-' || !digits(s + 5, 2) || s[7] != '-' ||
        !digits(s + 8, 2) || s[10] != 'T' || !digits(s + 11, 2) || s[13] != ':' ||
        !digits(s + 14, 2) || s[16] != ':' || !digits(s + 17, 2)) {
        return -1;
    }
    int y = num(s, 4), mo = num(s + 5, 2), d = num(s + 8, 2);
    int h = num(s + 11, 2), mi = num(s + 14, 2), se = num(s + 17, 2);
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || se > 59) {
        return -1;
    }
    size_t i = 19;
    int32_t frac = 0;
    if (i < n && (s[i] == '.' || s[i] == ',')) {
        size_t start = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            if (i - start < 9) {
                frac = frac * 10 + (s[i] - '0');
            }
            i++;
        }
        if (i == start) {
            return -1;
        }
        for (size_t k = i - start; k < 9; k++) {
            frac *= 10;
        }
    }
    int64_t off = 0;
    if (i < n && s[i] == 'Z') {
        i++;
    } else if (i + 6 == n && (s[i] == '+' || s[i] == '-') && digits(s + i + 1, 2) &&
               s[i + 3] == ':' && digits(s + i + 4, 2)) {
        int oh = num(s + i + 1, 2), om = num(s + i + 4, 2);
        if (oh > 23 || om > 59) {
            return -1;
        }
        off = (int64_t)(oh * 3600 + om * 60) * (s[i] == '-' ? -1 : 1);
        i += 6;
    } else {
        return -1;
    }
    if (i != n) {
        return -1;
    }
    *sec = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - off;
    *nsec = frac;
    return 0;
}

bool kms_audit_is_rfc3339(const char *s, size_t n)
{
    int64_t sec;
    int32_t nsec;
    return kms_audit_rfc3339_parse(s, n, &sec, &nsec) == 0;
}

json_t *kms_audit_hash_value(const char *salt, const json_t *v)
{
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        char h[KMS_AUDIT_HMAC_LEN + 1];
        if (kms_audit_is_rfc3339(s, n)) {
            return json_stringn(s, n);
        }
        if (kms_audit_hmac(salt, s, n, h) != 0) {
            return NULL;
        }
        return json_stringn(h, KMS_AUDIT_HMAC_LEN);
    }
    if (json_is_object(v)) {
        json_t *o = json_object();
        const char *k;
        json_t *e;
        if (o == NULL) {
            return NULL;
        }
        json_object_foreach((json_t *)v, k, e)
        {
            json_t *c = kms_audit_hash_value(salt, e);
            if (c == NULL || json_object_set_new(o, k, c) != 0) {
                json_decref(o);
                return NULL;
            }
        }
        return o;
    }
    if (json_is_array(v)) {
        json_t *a = json_array();
        size_t i;
        json_t *e;
        if (a == NULL) {
            return NULL;
        }
        json_array_foreach(v, i, e)
        {
            json_t *c = kms_audit_hash_value(salt, e);
            if (c == NULL || json_array_append_new(a, c) != 0) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    /* numbers, bools, null: shared, never modified */
    return json_deep_copy(v);
}
