/*
 * crypto.c - errors, secure memory, randomness, identifiers, encodings and time.
 *
 * Design notes:
 * - Randomness comes only from OpenSSL's RAND_bytes (CTR-DRBG seeded from the OS), which is
 *   thread-safe in OpenSSL 3.
 * - The standard base64 decoder is a transcription of the behaviour of Go's
 *   base64.StdEncoding.DecodeString, because Transit reports Go's error text
 *   ("illegal base64 data at input byte <n>") and clients compare it. The quantum decoder
 *   below mirrors Go's decodeQuantum: CR/LF are skipped anywhere, '=' padding is required,
 *   trailing non-zero bits are accepted and data after the padding is an error at its index.
 *   A quantum's bytes are written only once the quantum is known to be valid, so on success
 *   the output never exceeds (len / 4) * 3 bytes.
 * - Time formatting does its own civil-date arithmetic so it has no locale or TZ dependency.
 */
#include "crypto/crypto.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

/* ---- errors ------------------------------------------------------------------------------ */

static int err_vset(struct kms_err *err, int status, bool wrapped, const char *fmt, va_list ap)
    KMS_PRINTF(4, 0);

static int err_vset(struct kms_err *err, int status, bool wrapped, const char *fmt, va_list ap)
{
    if (err == NULL)
        return -1;
    err->status = status;
    err->wrapped = wrapped;
    /* vsnprintf truncates and always NUL-terminates; a negative return leaves an empty msg. A
     * message cut inside a UTF-8 character (a long parameter echoed) ends before it: the
     * answer is JSON text. */
    int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    if (n < 0)
        err->msg[0] = '\0';
    else if ((size_t)n >= sizeof(err->msg))
        (void)kms_utf8_cut(err->msg, sizeof(err->msg) - 1);
    return -1;
}

int kms_err_set(struct kms_err *err, int status, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    err_vset(err, status, false, fmt, ap);
    va_end(ap);
    return -1;
}

int kms_err_setw(struct kms_err *err, int status, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    err_vset(err, status, true, fmt, ap);
    va_end(ap);
    return -1;
}

void kms_err_clear(struct kms_err *err)
{
    if (err == NULL)
        return;
    err->status = 0;
    err->wrapped = false;
    err->msg[0] = '\0';
}

/* ---- memory ------------------------------------------------------------------------------ */

/* glibc's explicit_bzero: memset's speed, and the compiler may not drop it */
void kms_memzero(void *p, size_t n)
{
    if (p != NULL && n > 0)
        explicit_bzero(p, n);
}

static size_t dec_digits(uint64_t v, char *out)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i < n; i++) {
        out[i] = tmp[n - 1 - i];
    }
    out[n] = '\0';
    return n;
}

size_t kms_u64_dec(uint64_t v, char out[21])
{
    return dec_digits(v, out);
}

size_t kms_i64_dec(int64_t v, char out[21])
{
    if (v >= 0) {
        return dec_digits((uint64_t)v, out);
    }
    out[0] = '-';
    return 1 + dec_digits((uint64_t)0 - (uint64_t)v, out + 1);
}

bool kms_str_join(char *dst, size_t cap, const char *a, const char *b)
{
    size_t al = strlen(a), bl = strlen(b);
    if (al >= cap || bl >= cap - al) {
        return false;
    }
    memmove(dst, a, al);
    memmove(dst + al, b, bl + 1);
    return true;
}

bool kms_ct_eq(const void *a, const void *b, size_t n)
{
    if (n == 0)
        return true;
    return CRYPTO_memcmp(a, b, n) == 0;
}

bool kms_ct_streq(const char *a, const char *b)
{
    size_t la, lb;

    if (a == NULL || b == NULL)
        return false;
    la = strlen(a);
    lb = strlen(b);
    /* Only the lengths leak; equal-length inputs are compared in constant time. */
    if (la != lb)
        return false;
    return kms_ct_eq(a, b, la);
}

void kms_free_wipe(void **p, size_t n)
{
    if (p == NULL || *p == NULL)
        return;
    kms_memzero(*p, n);
    free(*p);
    *p = NULL;
}

/* ---- randomness and ids ------------------------------------------------------------------ */

int kms_rand_bytes(uint8_t *buf, size_t n)
{
    /* RAND_bytes takes an int; feed large requests in chunks. */
    while (n > 0) {
        size_t chunk = n > (1u << 30) ? (1u << 30) : n;

        if (RAND_bytes(buf, (int)chunk) != 1)
            return -1;
        buf += chunk;
        n -= chunk;
    }
    return 0;
}

/*
 * The buffered generator behind kms_rand_fast: each thread draws RAND_BUF bytes from
 * RAND_bytes at a time and hands them out in order, each byte once, wiping what it hands out.
 * The bytes are the DRBG's output, so they are exactly as unpredictable as RAND_bytes; only
 * the call overhead (locks, the DRBG's per-call reseed check and health tests) is shared by a
 * few hundred nonces. Never repeated: a byte leaves the buffer once, and a forked child (which
 * would inherit a copy of its parent's buffer) discards the copy before its first draw, since
 * the fork handler bumps the generation the buffer was filled in.
 */
#define RAND_BUF 4096

struct rand_buf {
    uint8_t b[RAND_BUF];
    size_t pos;
    unsigned gen;
};

static pthread_key_t rand_key;
static pthread_once_t rand_once = PTHREAD_ONCE_INIT;
static atomic_uint rand_gen = 1;

static void rand_buf_free(void *p)
{
    kms_memzero(p, sizeof(struct rand_buf));
    free(p);
}

static void rand_after_fork(void)
{
    atomic_fetch_add(&rand_gen, 1);
}

static void rand_init(void)
{
    (void)pthread_key_create(&rand_key, rand_buf_free);
    (void)pthread_atfork(NULL, NULL, rand_after_fork);
}

int kms_rand_fast(uint8_t *buf, size_t n)
{
    if (n > RAND_BUF / 16)
        return kms_rand_bytes(buf, n);
    pthread_once(&rand_once, rand_init);
    struct rand_buf *r = pthread_getspecific(rand_key);
    if (r == NULL) {
        r = calloc(1, sizeof(*r));
        if (r == NULL || pthread_setspecific(rand_key, r) != 0) {
            free(r);
            return kms_rand_bytes(buf, n);
        }
        r->pos = RAND_BUF;
    }
    unsigned gen = atomic_load(&rand_gen);
    if (r->gen != gen || RAND_BUF - r->pos < n) {
        if (kms_rand_bytes(r->b, RAND_BUF) != 0) {
            r->pos = RAND_BUF;
            return -1;
        }
        r->pos = 0;
        r->gen = gen;
    }
    memcpy(buf, r->b + r->pos, n);
    kms_memzero(r->b + r->pos, n);
    r->pos += n;
    return 0;
}

int kms_uuid4(char out[37])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t b[16];
    size_t o = 0;
    int rc = -1;

    if (kms_rand_fast(b, sizeof(b)) != 0)
        goto out;
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    for (size_t i = 0; i < sizeof(b); i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 0x0f];
    }
    out[o] = '\0';
    rc = 0;
out:
    kms_memzero(b, sizeof(b));
    return rc;
}

int kms_rand_base62(char *out, size_t n)
{
    static const char alphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    uint8_t buf[64];
    size_t have = 0, pos = 0, o = 0;
    int rc = -1;

    while (o < n) {
        if (pos == have) {
            if (kms_rand_bytes(buf, sizeof(buf)) != 0)
                goto out;
            have = sizeof(buf);
            pos = 0;
        }
        /* Rejection sampling: 248 = 4 * 62, so accepted bytes are uniform mod 62. */
        uint8_t v = buf[pos++];
        if (v < 248)
            out[o++] = alphabet[v % 62];
    }
    out[n] = '\0';
    rc = 0;
out:
    kms_memzero(buf, sizeof(buf));
    return rc;
}

/* ---- base64 ------------------------------------------------------------------------------ */

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t kms_b64_encoded_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

/* The two characters of every 12-bit value, for encoding a quantum with two look-ups (a
 * batch encodes every ciphertext: 4 KiB built once). */
static char b64_pairs[4096][2];
static pthread_once_t b64_pairs_once = PTHREAD_ONCE_INIT;

static void b64_pairs_init(void)
{
    for (unsigned v = 0; v < 4096; v++) {
        b64_pairs[v][0] = b64_std[v >> 6];
        b64_pairs[v][1] = b64_std[v & 0x3f];
    }
}

void kms_b64_encode(const uint8_t *in, size_t n, char *out)
{
    size_t i = 0, o = 0;

    pthread_once(&b64_pairs_once, b64_pairs_init);
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        memcpy(out + o, b64_pairs[v >> 12], 2);
        memcpy(out + o + 2, b64_pairs[v & 0xfff], 2);
        o += 4;
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = b64_std[(v >> 18) & 0x3f];
        out[o++] = b64_std[(v >> 12) & 0x3f];
        out[o++] = '=';
        out[o++] = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = b64_std[(v >> 18) & 0x3f];
        out[o++] = b64_std[(v >> 12) & 0x3f];
        out[o++] = b64_std[(v >> 6) & 0x3f];
        out[o++] = '=';
    }
    out[o] = '\0';
}

size_t kms_b64_decoded_max(size_t len)
{
    return len / 4 * 3;
}

/* 6-bit value of c in the standard alphabet, or -1. */
static int b64_std_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* b64_std_val as a table: the value of each standard-alphabet byte, -1 for any other */
static const int8_t b64_std_tab[256] = {
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 62, -1, -1, -1, 63,
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, -1, -1, -1, -1, -1, -1, -1, 0,  1,  2,  3,  4,  5,  6,
    7,  8,  9,  10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, -1, -1, -1, -1, -1,
    -1, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48,
    49, 50, 51, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
};

static bool is_crlf(char c)
{
    return c == '\r' || c == '\n';
}

/*
 * Decode one quantum starting at *si (Go's decodeQuantum). Returns 0 and sets *done when the
 * input ended cleanly, or -1 with *err_at set. *n receives the bytes written to dst (which may
 * be non-zero even on the trailing-garbage error, as in Go, but callers discard them).
 */
static int b64_quantum(const char *src, size_t len, size_t *si, uint8_t *dst, size_t *n, bool *done,
                       size_t *err_at)
{
    uint8_t dbuf[4] = {0, 0, 0, 0};
    size_t dlen = 4;
    size_t i = *si;
    int rc = 0;

    *n = 0;
    *done = false;
    for (size_t j = 0; j < 4;) {
        if (i == len) {
            if (j == 0) {
                *done = true;
                goto out;
            }
            /* Short final quantum: Go reports si - j. */
            *err_at = i - j;
            rc = -1;
            goto out;
        }
        char in = src[i++];
        int v = b64_std_val((unsigned char)in);
        if (v >= 0) {
            dbuf[j++] = (uint8_t)v;
            continue;
        }
        if (is_crlf(in))
            continue;
        if (in != '=') {
            *err_at = i - 1;
            rc = -1;
            goto out;
        }
        /* Padding reached. */
        if (j == 0 || j == 1) {
            *err_at = i - 1;
            rc = -1;
            goto out;
        }
        if (j == 2) {
            /* A second '=' is required; CR/LF may sit between them. */
            while (i < len && is_crlf(src[i]))
                i++;
            if (i == len) {
                *err_at = len;
                rc = -1;
                goto out;
            }
            if (src[i] != '=') {
                *err_at = i - 1;
                rc = -1;
                goto out;
            }
            i++;
        }
        while (i < len && is_crlf(src[i]))
            i++;
        if (i < len) {
            *err_at = i;
            rc = -1;
        }
        dlen = j;
        break;
    }

    uint32_t val =
        (uint32_t)dbuf[0] << 18 | (uint32_t)dbuf[1] << 12 | (uint32_t)dbuf[2] << 6 | dbuf[3];
    if (rc == 0) {
        dst[0] = (uint8_t)(val >> 16);
        if (dlen >= 3)
            dst[1] = (uint8_t)(val >> 8);
        if (dlen == 4)
            dst[2] = (uint8_t)val;
        *n = dlen - 1;
        if (dlen < 4)
            *done = true;
    }
out:
    kms_memzero(dbuf, sizeof(dbuf));
    *si = i;
    return rc;
}

int kms_b64_decode(const char *in, size_t len, uint8_t *out, size_t *outlen, size_t *err_at)
{
    size_t si = 0, o = 0, dummy = 0;
    bool done = false;

    if (err_at == NULL)
        err_at = &dummy;
    *outlen = 0;
    while (!done && si < len) {
        size_t n = 0;

        if (len - si >= 4) {
            /* a whole quantum of alphabet characters (nearly every one): what b64_quantum
             * gives for it, without its per-character branches */
            const unsigned char *q = (const unsigned char *)in + si;
            int a = b64_std_tab[q[0]], b = b64_std_tab[q[1]], c = b64_std_tab[q[2]],
                d = b64_std_tab[q[3]];
            if ((a | b | c | d) >= 0) {
                uint32_t val =
                    (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
                out[o] = (uint8_t)(val >> 16);
                out[o + 1] = (uint8_t)(val >> 8);
                out[o + 2] = (uint8_t)val;
                o += 3;
                si += 4;
                continue;
            }
        }
        if (b64_quantum(in, len, &si, out + o, &n, &done, err_at) != 0) {
            kms_memzero(out, o);
            return -1;
        }
        o += n;
    }
    *outlen = o;
    return 0;
}

int kms_b64_decode_alloc(const char *in, size_t len, uint8_t **out, size_t *outlen, size_t *err_at)
{
    size_t cap = kms_b64_decoded_max(len);
    uint8_t *buf = NULL;
    int rc = -1;

    *out = NULL;
    *outlen = 0;
    buf = malloc(cap > 0 ? cap : 1);
    if (buf == NULL) {
        if (err_at != NULL)
            *err_at = 0;
        goto out;
    }
    if (kms_b64_decode(in, len, buf, outlen, err_at) != 0)
        goto out;
    *out = buf;
    buf = NULL;
    rc = 0;
out:
    kms_free_wipe((void **)&buf, cap);
    return rc;
}

static int b64url_val(unsigned char c)
{
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    if (c == '+' || c == '/')
        return -1;
    return b64_std_val(c);
}

int kms_b64url_decode_alloc(const char *in, size_t len, uint8_t **out, size_t *outlen)
{
    size_t cap = len / 4 * 3 + 3;
    uint8_t *buf = NULL;
    uint32_t acc = 0;
    size_t bits = 0, o = 0;
    int rc = -1;

    *out = NULL;
    *outlen = 0;
    /* A single leftover character carries fewer than 8 bits: never valid. */
    if (len % 4 == 1)
        goto out;
    buf = malloc(cap);
    if (buf == NULL)
        goto out;
    for (size_t i = 0; i < len; i++) {
        int v = b64url_val((unsigned char)in[i]);
        if (v < 0)
            goto out;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    *out = buf;
    *outlen = o;
    buf = NULL;
    rc = 0;
out:
    kms_free_wipe((void **)&buf, cap);
    return rc;
}

/* ---- hex --------------------------------------------------------------------------------- */

/* the two digits of every byte value: one two-byte copy per input byte (the audit writer
 * hex-encodes six digests per request) */
static const char HEX_PAIRS[513] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
    "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
    "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

void kms_hex_encode(const uint8_t *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        memcpy(out + 2 * i, HEX_PAIRS + 2 * in[i], 2);
    }
    out[2 * n] = '\0';
}

static int hex_val(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int kms_hex_decode(const char *in, size_t len, uint8_t *out)
{
    if (len % 2 != 0)
        return -1;
    for (size_t i = 0; i < len; i += 2) {
        int hi = hex_val((unsigned char)in[i]);
        int lo = hex_val((unsigned char)in[i + 1]);
        if (hi < 0 || lo < 0) {
            kms_memzero(out, i / 2);
            return -1;
        }
        out[i / 2] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

/* ---- time -------------------------------------------------------------------------------- */

void kms_now(int64_t *sec, int32_t *nsec)
{
    struct timespec ts;

    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) {
        ts.tv_sec = time(NULL);
        ts.tv_nsec = 0;
    }
    *sec = (int64_t)ts.tv_sec;
    *nsec = (int32_t)ts.tv_nsec;
}

/* Days since 1970-01-01 -> proleptic Gregorian y/m/d (Howard Hinnant's civil_from_days). */
static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;

    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

/* v as exactly `width` decimal digits (leading zeros); returns the end */
static char *put_digits(char *o, unsigned v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        o[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return o + width;
}

/* Formatted digit by digit: the audit writer calls this on every request (token_issue_time,
 * the line's time), where two snprintf calls cost about 3,000 instructions. */
void kms_time_rfc3339(int64_t sec, int32_t nsec, char out[40])
{
    int64_t days, rem, y;
    unsigned mo, d;
    char *o = out;

    if (nsec < 0 || nsec > 999999999)
        nsec = 0;
    /* Keep the arithmetic far from overflow; such dates are meaningless for a KMS anyway. */
    if (sec > INT64_C(253402300799))
        sec = INT64_C(253402300799); /* 9999-12-31T23:59:59Z */
    if (sec < INT64_C(-62135596800))
        sec = INT64_C(-62135596800); /* 0001-01-01T00:00:00Z */
    days = sec / 86400;
    rem = sec % 86400;
    if (rem < 0) {
        rem += 86400;
        days--;
    }
    civil_from_days(days, &y, &mo, &d);
    o = put_digits(o, (unsigned)y, 4);
    *o++ = '-';
    o = put_digits(o, mo, 2);
    *o++ = '-';
    o = put_digits(o, d, 2);
    *o++ = 'T';
    o = put_digits(o, (unsigned)(rem / 3600), 2);
    *o++ = ':';
    o = put_digits(o, (unsigned)(rem % 3600 / 60), 2);
    *o++ = ':';
    o = put_digits(o, (unsigned)(rem % 60), 2);
    if (nsec != 0) {
        /* Go's RFC3339Nano: the fraction without its trailing zeros */
        unsigned v = (unsigned)nsec;
        int digits = 9;

        while (v % 10 == 0) {
            v /= 10;
            digits--;
        }
        *o++ = '.';
        o = put_digits(o, v, digits);
    }
    *o++ = 'Z';
    *o = '\0';
}

#ifdef KMS_TEST_HOOKS
void kms_test_hold(const char *hold, const char *held)
{
    bool shown = false;
    while (access(hold, F_OK) == 0) {
        if (!shown) {
            int fd = open(held, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
            if (fd >= 0)
                close(fd);
            shown = true;
        }
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

void kms_test_hold_dir(const char *env)
{
    const char *dir = getenv(env);
    char hold[512], held[512];
    if (dir == NULL || snprintf(hold, sizeof(hold), "%s/hold", dir) >= (int)sizeof(hold) ||
        snprintf(held, sizeof(held), "%s/held", dir) >= (int)sizeof(held)) {
        return;
    }
    kms_test_hold(hold, held);
}
#endif
