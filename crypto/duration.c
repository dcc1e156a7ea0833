/*
 * duration.c - strict decimal integers, and Vault's duration syntax
 * (parseutil.ParseDurationSecond): integers are seconds, otherwise Go's time.ParseDuration
 * units plus "d" for days.
 */
#include "crypto/crypto.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

bool kms_int_parse(const char *s, int64_t *out)
{
    char *end = NULL;
    if (*s == '\0') {
        return false;
    }
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0') {
        return false;
    }
    *out = v;
    return true;
}

/* Go time.ParseDuration plus a "d" (days) unit (not a bare integer): *total seconds, *neg. */
static int go_duration(const char *s, double *total_out, bool *neg_out)
{
    const char *p = s;
    bool neg = false;
    if (*p == '-' || *p == '+') {
        neg = *p == '-';
        p++;
    }
    if (*p == '\0') {
        return -1;
    }
    double total = 0;
    while (*p != '\0') {
        char *end = NULL;
        if (!((*p >= '0' && *p <= '9') || *p == '.')) {
            return -1;
        }
        errno = 0;
        double v = strtod(p, &end);
        if (errno != 0 || end == p) {
            return -1;
        }
        p = end;
        double mult;
        if (strncmp(p, "ns", 2) == 0) {
            mult = 1e-9;
            p += 2;
        } else if (strncmp(p, "us", 2) == 0) {
            mult = 1e-6;
            p += 2;
        } else if (strncmp(p, "\xc2\xb5s", 3) == 0) {
            mult = 1e-6;
            p += 3;
        } else if (strncmp(p, "ms", 2) == 0) {
            mult = 1e-3;
            p += 2;
        } else if (*p == 's') {
            mult = 1;
            p++;
        } else if (*p == 'm') {
            mult = 60;
            p++;
        } else if (*p == 'h') {
            mult = 3600;
            p++;
        } else if (*p == 'd') {
            mult = 86400;
            p++;
        } else {
            return -1;
        }
        total += v * mult;
        if (total > (double)KMS_DURATION_MAX_SEC) {
            return -1; /* Go: time: invalid duration (more than 2562047h47m16.854775807s) */
        }
    }
    *total_out = total;
    *neg_out = neg;
    return 0;
}

/* A duration in units of 1/per_sec seconds, rounded down (eps absorbs the float's error). */
static int parse_scaled(const char *s, int64_t per_sec, double eps, int64_t *out)
{
    int64_t iv;
    if (kms_int_parse(s, &iv)) {
        if (iv > KMS_DURATION_MAX_SEC || iv < -KMS_DURATION_MAX_SEC) {
            return -1; /* past Go's time.Duration */
        }
        *out = iv * per_sec;
        return 0;
    }
    double total = 0;
    bool neg = false;
    if (go_duration(s, &total, &neg) != 0) {
        return -1;
    }
    *out = (int64_t)floor(total * (double)per_sec + eps) * (neg ? -1 : 1);
    return 0;
}

/* Go time.ParseDuration plus a "d" (days) unit and bare integers as seconds. */
int kms_duration_parse(const char *s, int64_t *out)
{
    return parse_scaled(s, 1, 1e-9, out);
}

int kms_duration_parse_ms(const char *s, int64_t *out)
{
    return parse_scaled(s, 1000, 1e-6, out);
}
