/*
 * test_crypto.c - crypto/crypto.c: errors, memory helpers, randomness and ids, Go-compatible
 * base64 (including the byte index of every error Go reports), base64url, hex and time; the
 * secure heap's split between kmsd and OpenSSL.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "crypto/crypto.h"

#include <openssl/bn.h>
#include <openssl/crypto.h>

/* ---- errors ------------------------------------------------------------------------------ */

static void test_err_set(void **state)
{
    struct kms_err err;

    kms_err_clear(&err);
    assert_int_equal(kms_err_set(&err, 400, "bad %s %d", "thing", 7), -1);
    assert_int_equal(err.status, 400);
    assert_false(err.wrapped);
    assert_string_equal(err.msg, "bad thing 7");

    assert_int_equal(kms_err_setw(&err, 500, "internal %s", "boom"), -1);
    assert_int_equal(err.status, 500);
    assert_true(err.wrapped);
    assert_string_equal(err.msg, "internal boom");

    kms_err_clear(&err);
    assert_int_equal(err.status, 0);
    assert_false(err.wrapped);
    assert_string_equal(err.msg, "");
}

static void test_err_truncates(void **state)
{
    struct kms_err err;
    char big[2000];

    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(kms_err_set(&err, 400, "%s", big), -1);
    assert_int_equal(strlen(err.msg), sizeof(err.msg) - 1);
    assert_int_equal(err.msg[0], 'x');

    /* cut inside a character: the message ends before it, still UTF-8 (it becomes JSON) */
    char wide[2000] = "";
    for (size_t i = 0; i + 4 < sizeof(wide); i += 2) {
        memcpy(wide + i, "\xc3\xa9", 3); /* é, NUL-terminated each time */
    }
    for (size_t shift = 0; shift < 4; shift++) {
        /* 0 to 3 ASCII bytes first move the cut through the character */
        assert_int_equal(kms_err_set(&err, 400, "%.*s%s", (int)shift, "abc", wide), -1);
        size_t len = strlen(err.msg);
        assert_true(len >= sizeof(err.msg) - 2);
        assert_true(kms_utf8_valid(err.msg, len));
    }
    /* 3- and 4-byte characters, and a string that needs no cut */
    char s3[] = "ab\xe2\x82\xac\xe2\x82";
    assert_int_equal(kms_utf8_cut(s3, strlen(s3)), 5);
    assert_string_equal(s3, "ab\xe2\x82\xac");
    char s4[] = "\xf0\x9f\x98\x80\xf0\x9f\x98";
    assert_int_equal(kms_utf8_cut(s4, strlen(s4)), 4);
    char s1[] = "plain";
    assert_int_equal(kms_utf8_cut(s1, 5), 5);
    char s2[] = "\xc3\xa9";
    assert_int_equal(kms_utf8_cut(s2, 2), 2);

    /* bytes that are no UTF-8 become U+FFFD, one each; good characters stay */
    char *f = kms_utf8_fix("a\xff\xc3\xa9"
                           "b\xe2\x82\xed\xa0\x80");
    assert_non_null(f);
    assert_string_equal(f, "a\xef\xbf\xbd\xc3\xa9"
                           "b\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
                           "\xef\xbf\xbd");
    assert_true(kms_utf8_valid(f, strlen(f)));
    free(f);
    f = kms_utf8_fix("");
    assert_string_equal(f, "");
    free(f);
}

/* ---- memory ------------------------------------------------------------------------------ */

static void test_memory(void **state)
{
    uint8_t a[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    uint8_t b[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    uint8_t *heap;

    assert_true(kms_ct_eq(a, b, sizeof(a)));
    b[7] ^= 1;
    assert_false(kms_ct_eq(a, b, sizeof(a)));
    assert_true(kms_ct_eq(a, b, 0));

    assert_true(kms_ct_streq("token", "token"));
    assert_false(kms_ct_streq("token", "tokem"));
    assert_false(kms_ct_streq("token", "token2"));
    assert_true(kms_ct_streq("", ""));

    kms_memzero(a, sizeof(a));
    for (size_t i = 0; i < sizeof(a); i++)
        assert_int_equal(a[i], 0);

    heap = malloc(16);
    assert_non_null(heap);
    memset(heap, 0xaa, 16);
    kms_free_wipe((void **)&heap, 16);
    assert_null(heap);
    kms_free_wipe((void **)&heap, 16); /* NULL-safe */
    kms_free_wipe(NULL, 0);
}

/* ---- randomness and ids ------------------------------------------------------------------ */

static bool is_hex_lower(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static void test_uuid4(void **state)
{
    char u1[37], u2[37];

    assert_int_equal(kms_uuid4(u1), 0);
    assert_int_equal(kms_uuid4(u2), 0);
    assert_int_equal(strlen(u1), 36);
    assert_string_not_equal(u1, u2);
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23)
            assert_int_equal(u1[i], '-');
        else
            assert_true(is_hex_lower(u1[i]));
    }
    assert_int_equal(u1[14], '4');
    assert_true(u1[19] == '8' || u1[19] == '9' || u1[19] == 'a' || u1[19] == 'b');
}

static void test_rand(void **state)
{
    uint8_t a[32] = {0}, b[32] = {0};
    char s[101];
    char s0[1] = {'x'};

    assert_int_equal(kms_rand_bytes(a, sizeof(a)), 0);
    assert_int_equal(kms_rand_bytes(b, sizeof(b)), 0);
    assert_false(kms_ct_eq(a, b, sizeof(a)));
    assert_int_equal(kms_rand_bytes(a, 0), 0);

    assert_int_equal(kms_rand_base62(s, 100), 0);
    assert_int_equal(strlen(s), 100);
    for (int i = 0; i < 100; i++) {
        char c = s[i];
        assert_true((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'));
    }
    assert_int_equal(kms_rand_base62(s0, 0), 0);
    assert_int_equal(s0[0], '\0');
}

/* The buffered generator: no 12-byte draw repeats across many refills, and a forked child
 * never hands out the bytes its parent hands out next (it discards its copy of the buffer). */
static void test_rand_fast(void **state)
{
    (void)state;
    enum { N = 5000 };
    uint8_t(*v)[12] = calloc(N, 12);
    assert_non_null(v);
    for (int i = 0; i < N; i++) {
        assert_int_equal(kms_rand_fast(v[i], 12), 0);
    }
    for (int i = 0; i < N; i++) {
        for (int j = i + 1; j < N; j++) {
            assert_false(memcmp(v[i], v[j], 12) == 0);
        }
    }
    free(v);
    uint8_t big[1000];
    assert_int_equal(kms_rand_fast(big, sizeof(big)), 0); /* larger draws go to RAND_bytes */

    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        uint8_t c[16];
        int ok = kms_rand_fast(c, sizeof(c)) == 0 && write(fds[1], c, sizeof(c)) == sizeof(c);
        _exit(ok ? 0 : 1);
    }
    uint8_t parent[16], child[16];
    assert_int_equal(kms_rand_fast(parent, sizeof(parent)), 0);
    assert_int_equal(read(fds[0], child, sizeof(child)), sizeof(child));
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_false(memcmp(parent, child, sizeof(parent)) == 0);
    close(fds[0]);
    close(fds[1]);
}

/* ---- secure heap ------------------------------------------------------------------------- */

/* In a child (the secure heap is per process, made once): kmsd's allocations, e.g. a full key
 * cache, leave half of the heap to OpenSSL, whose BN_secure_new (RSA private keys) has no
 * fallback. Exit codes say which step failed. */
static int secmem_child(void)
{
    enum { HEAP = 64 * 1024, ENTRY = 2700, N = 64 };
    void *p[N];
    BIGNUM *b[8] = {NULL};
    if (kms_secmem_init(HEAP) != 0 || !kms_secmem_locked()) {
        return 2;
    }
    for (int i = 0; i < N; i++) {
        if ((p[i] = kms_secmem_alloc(ENTRY)) == NULL) {
            return 3;
        }
        for (int j = 0; j < ENTRY; j++) {
            if (((uint8_t *)p[i])[j] != 0) {
                return 4; /* zeroed, from either heap */
            }
        }
    }
    if (!CRYPTO_secure_allocated(p[0]) || CRYPTO_secure_allocated(p[N - 1])) {
        return 5; /* the first from the secure heap, the last past the half */
    }
    if (CRYPTO_secure_used() > HEAP / 2) {
        return 6;
    }
    for (int i = 0; i < 8; i++) { /* 8 x 4096-bit secure numbers: 4 KiB and more */
        if ((b[i] = BN_secure_new()) == NULL ||
            BN_rand(b[i], 4096, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1) {
            return 7;
        }
    }
    for (int i = 0; i < 8; i++) {
        BN_clear_free(b[i]);
    }
    for (int i = 0; i < N; i++) {
        kms_secmem_free(p[i], ENTRY);
    }
    return CRYPTO_secure_used() == 0 ? 0 : 8;
}

static void test_secmem_leaves_openssl_room(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        _exit(secmem_child());
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

/* ---- base64 ------------------------------------------------------------------------------ */

static void test_b64_encode(void **state)
{
    static const struct {
        const char *in;
        const char *out;
    } v[] = {
        {"", ""},
        {"f", "Zg=="},
        {"fo", "Zm8="},
        {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="},
        {"fooba", "Zm9vYmE="},
        {"foobar", "Zm9vYmFy"},
        {"hello", "aGVsbG8="},
    };
    char out[64];

    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        size_t n = strlen(v[i].in);
        assert_int_equal(kms_b64_encoded_len(n), strlen(v[i].out));
        kms_b64_encode((const uint8_t *)v[i].in, n, out);
        assert_string_equal(out, v[i].out);
    }
    /* Bytes that use '+' and '/'. */
    {
        const uint8_t bin[] = {0xfb, 0xff, 0xbf};
        kms_b64_encode(bin, sizeof(bin), out);
        assert_string_equal(out, "+/+/");
    }
}

/* Decode with the allocating API; expect success and the given output. */
static void expect_ok(const char *in, const void *want, size_t wantlen)
{
    uint8_t *out = NULL;
    size_t outlen = 99, at = 77;
    uint8_t buf[128];

    assert_int_equal(kms_b64_decode_alloc(in, strlen(in), &out, &outlen, &at), 0);
    assert_non_null(out);
    assert_int_equal(outlen, wantlen);
    if (wantlen > 0)
        assert_memory_equal(out, want, wantlen);
    kms_free_wipe((void **)&out, outlen);

    assert_true(kms_b64_decoded_max(strlen(in)) <= sizeof(buf));
    assert_int_equal(kms_b64_decode(in, strlen(in), buf, &outlen, &at), 0);
    assert_int_equal(outlen, wantlen);
    assert_true(outlen <= kms_b64_decoded_max(strlen(in)));
}

/* Expect Go's "illegal base64 data at input byte <at>". */
static void expect_err(const char *in, size_t want_at)
{
    uint8_t *out = (uint8_t *)1;
    size_t outlen = 99, at = 9999;

    assert_int_equal(kms_b64_decode_alloc(in, strlen(in), &out, &outlen, &at), -1);
    assert_null(out);
    assert_int_equal(outlen, 0);
    if (at != want_at)
        fail_msg("input \"%s\": error at %zu, Go reports %zu", in, at, want_at);
}

static void test_b64_decode_ok(void **state)
{
    expect_ok("", "", 0);
    expect_ok("\n", "", 0);
    expect_ok("\r\n\r\n", "", 0);
    expect_ok("aGVsbG8=", "hello", 5);
    expect_ok("Zg==", "f", 1);
    expect_ok("Zm8=", "fo", 2);
    expect_ok("Zm9vYmFy", "foobar", 6);
    expect_ok("AAA=\n", "\0\0", 2);
    expect_ok("AAAA\n", "\0\0\0", 3);
    expect_ok("AA==", "\0", 1);
    /* CR/LF are skipped anywhere, even between the two padding characters. */
    expect_ok("aG\nVs\rbG8=", "hello", 5);
    expect_ok("Zg=\n=", "f", 1);
    expect_ok("Zg==\r\n", "f", 1);
    expect_ok("\nZm9v\nYmFy\n", "foobar", 6);
    /* Non-zero trailing bits are accepted (StdEncoding is not Strict). */
    expect_ok("Zh==", "f", 1);
    expect_ok("Zm9=", "fo", 2);
    {
        const uint8_t bin[] = {0xfb, 0xff, 0xbf};
        expect_ok("+/+/", bin, sizeof(bin));
    }
}

static void test_b64_decode_go_indexes(void **state)
{
    /* The reference's examples. */
    expect_err("abc", 0);
    expect_err("aGVsbG8", 4);
    /* Go's own corrupt-input table (encoding/base64 TestDecodeCorrupt). */
    expect_err("!!!!", 0);
    expect_err("====", 0);
    expect_err("x===", 1);
    expect_err("=AAA", 0);
    expect_err("A=AA", 1);
    expect_err("AA=A", 2);
    expect_err("AA==A", 4);
    expect_err("AAA=AAAA", 4);
    expect_err("AAAAA", 4);
    expect_err("AAAAAA", 4);
    expect_err("A=", 1);
    expect_err("A==", 1);
    expect_err("AA=", 3);
    expect_err("AAAAAA=", 7);
    expect_err("YWJjZA=====", 8);
    expect_err("A!\n", 1);
    expect_err("A=\n", 1);
    /* More: a short quantum reports si - j, with j counting only alphabet characters. */
    expect_err("a", 0);
    expect_err("ab", 0);
    expect_err("aGVsbG8=x", 8);
    expect_err("aGVsbG8=\nx", 9);
    expect_err("aGVs\nbG8", 5);
    expect_err("AA\nA", 1);
    expect_err("aGVsbG8-", 7);
    expect_err("aGVs bG8=", 4);
    expect_err("Zg=x", 2);
    expect_err("Zg=\nx", 3);
    expect_err("Zg=\n", 4);
    expect_err("Zg===", 4);
    expect_err("Zm8==", 4);
    expect_err("aGVsbG8=aGVsbG8=", 8);
    /* bytes outside ASCII, inside a quantum the fast path would take whole */
    expect_err("\xff"
               "AAA",
               0);
    expect_err("AAAA\xc3\xa9"
               "AA",
               4);
    expect_err("AAAAAA\x80"
               "A",
               6);
}

/* Every byte value at every length through encode and decode, with and without CR/LF. */
static void test_b64_round_trip(void **state)
{
    uint8_t bin[300], back[300];
    char enc[512], crlf[1024];
    (void)state;
    for (size_t i = 0; i < sizeof(bin); i++) {
        bin[i] = (uint8_t)(i * 7 + 3);
    }
    for (size_t n = 0; n <= sizeof(bin); n++) {
        size_t outlen = 0, at = 0, o = 0;
        kms_b64_encode(bin, n, enc);
        assert_int_equal(kms_b64_decode(enc, strlen(enc), back, &outlen, &at), 0);
        assert_int_equal(outlen, n);
        assert_memory_equal(back, bin, n);
        for (size_t i = 0; enc[i] != '\0'; i++) {
            crlf[o++] = enc[i];
            if ((i + n) % 5 == 0) {
                crlf[o++] = (i % 2) ? '\r' : '\n';
            }
        }
        assert_int_equal(kms_b64_decode(crlf, o, back, &outlen, &at), 0);
        assert_int_equal(outlen, n);
        assert_memory_equal(back, bin, n);
    }
}

static void test_b64_decode_embedded_nul(void **state)
{
    const char in[] = {'Z', 'g', '\0', '='};
    uint8_t *out = NULL;
    size_t outlen = 0, at = 0;

    assert_int_equal(kms_b64_decode_alloc(in, sizeof(in), &out, &outlen, &at), -1);
    assert_int_equal(at, 2);
    assert_int_equal(kms_b64_decode_alloc(in, 2, &out, &outlen, &at), -1);
    assert_int_equal(at, 0);
}

static void test_b64url(void **state)
{
    uint8_t *out = NULL;
    size_t outlen = 0;
    const uint8_t bin[] = {0xfb, 0xff, 0xbf};

    assert_int_equal(kms_b64url_decode_alloc("-_-_", 4, &out, &outlen), 0);
    assert_int_equal(outlen, 3);
    assert_memory_equal(out, bin, 3);
    kms_free_wipe((void **)&out, outlen);

    assert_int_equal(kms_b64url_decode_alloc("eyJhbGciOiJSUzI1NiJ9", 20, &out, &outlen), 0);
    assert_int_equal(outlen, 15);
    assert_memory_equal(out, "{\"alg\":\"RS256\"}", 15);
    kms_free_wipe((void **)&out, outlen);

    assert_int_equal(kms_b64url_decode_alloc("aGVsbG8", 7, &out, &outlen), 0);
    assert_int_equal(outlen, 5);
    assert_memory_equal(out, "hello", 5);
    kms_free_wipe((void **)&out, outlen);

    assert_int_equal(kms_b64url_decode_alloc("", 0, &out, &outlen), 0);
    assert_non_null(out);
    assert_int_equal(outlen, 0);
    kms_free_wipe((void **)&out, outlen);

    assert_int_equal(kms_b64url_decode_alloc("aGVsbG8=", 8, &out, &outlen), -1);
    assert_null(out);
    assert_int_equal(kms_b64url_decode_alloc("+/+/", 4, &out, &outlen), -1);
    assert_int_equal(kms_b64url_decode_alloc("aGVsb", 5, &out, &outlen), -1);
    assert_int_equal(kms_b64url_decode_alloc("aG\nVs", 5, &out, &outlen), -1);
}

/* ---- hex --------------------------------------------------------------------------------- */

static void test_hex(void **state)
{
    const uint8_t bin[] = {0x00, 0x01, 0xab, 0xff};
    char s[9];
    uint8_t out[4];

    kms_hex_encode(bin, sizeof(bin), s);
    assert_string_equal(s, "0001abff");
    assert_int_equal(kms_hex_decode("0001ABff", 8, out), 0);
    assert_memory_equal(out, bin, 4);
    assert_int_equal(kms_hex_decode("", 0, out), 0);
    assert_int_equal(kms_hex_decode("abc", 3, out), -1);
    assert_int_equal(kms_hex_decode("zz", 2, out), -1);
    assert_int_equal(kms_hex_decode("0g", 2, out), -1);
}

/* ---- time -------------------------------------------------------------------------------- */

static void test_decimal(void **state)
{
    (void)state;
    char out[21], want[32];
    const int64_t v[] = {0,  1,   -1,         9,         10,        -10,
                         99, 100, 1234567890, INT64_MAX, INT64_MIN, INT64_MIN + 1};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        snprintf(want, sizeof(want), "%lld", (long long)v[i]);
        assert_int_equal(kms_i64_dec(v[i], out), strlen(want));
        assert_string_equal(out, want);
    }
    assert_int_equal(kms_u64_dec(UINT64_MAX, out), 20);
    assert_string_equal(out, "18446744073709551615");
    assert_int_equal(kms_u64_dec(0, out), 1);
    assert_string_equal(out, "0");
}

static void test_time(void **state)
{
    char out[40];
    int64_t sec = 0;
    int32_t nsec = -1;

    kms_time_rfc3339(0, 0, out);
    assert_string_equal(out, "1970-01-01T00:00:00Z");
    kms_time_rfc3339(1767323045, 123456789, out); /* 2026-01-02T03:04:05 */
    assert_string_equal(out, "2026-01-02T03:04:05.123456789Z");
    kms_time_rfc3339(1767323045, 120000000, out);
    assert_string_equal(out, "2026-01-02T03:04:05.12Z");
    kms_time_rfc3339(1767323045, 1, out);
    assert_string_equal(out, "2026-01-02T03:04:05.000000001Z");
    kms_time_rfc3339(1767323045, 500000000, out);
    assert_string_equal(out, "2026-01-02T03:04:05.5Z");
    kms_time_rfc3339(951782400, 0, out); /* leap day 2000 */
    assert_string_equal(out, "2000-02-29T00:00:00Z");
    kms_time_rfc3339(1442851412, 0, out);
    assert_string_equal(out, "2015-09-21T16:03:32Z");
    kms_time_rfc3339(-1, 0, out);
    assert_string_equal(out, "1969-12-31T23:59:59Z");
    kms_time_rfc3339(253402300799, 999999999, out);
    assert_string_equal(out, "9999-12-31T23:59:59.999999999Z");

    kms_time_rfc3339(INT64_C(-62135596800) - 1, 7, out); /* clamped to the first second */
    assert_string_equal(out, "0001-01-01T00:00:00.000000007Z");
    kms_time_rfc3339(INT64_MAX, 1000000000, out); /* clamped; a bad nsec is dropped */
    assert_string_equal(out, "9999-12-31T23:59:59Z");

    kms_now(&sec, &nsec);
    assert_true(sec > 1700000000);
    assert_true(nsec >= 0 && nsec <= 999999999);
}

/* The hand formatting against the C library's calendar, second by second over a spread of
 * dates (leap years, centuries, negative times) with every fraction length. */
static void test_time_matches_libc(void **state)
{
    (void)state;
    uint64_t x = 88172645463325252ULL; /* xorshift64: the same spread every run */
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int64_t sec = (int64_t)(x % UINT64_C(253402300800 + 62135596800)) - INT64_C(62135596800);
        if (i < 1000) {
            sec = INT64_C(951782400) - 500 * 86400 + (int64_t)i * 86400; /* daily, around 2000 */
        }
        int32_t nsec = (int32_t)((x >> 20) % 1000000000u);
        int32_t p = 1;
        for (int cut = i % 10; cut > 0; cut--) {
            p *= 10;
        }
        nsec = nsec / p * p; /* a run of i % 10 trailing zeros */
        char out[40], want[64], date[40];
        time_t t = (time_t)sec;
        struct tm tm;
        assert_non_null(gmtime_r(&t, &tm));
        strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
        if (tm.tm_year + 1900 < 1000) {
            /* strftime's %Y is not zero-padded: pad to four digits as RFC 3339 does */
            snprintf(date, sizeof(date), "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        }
        if (nsec == 0) {
            snprintf(want, sizeof(want), "%sZ", date);
        } else {
            char frac[16];
            snprintf(frac, sizeof(frac), "%09d", (int)nsec);
            size_t n = strlen(frac);
            while (frac[n - 1] == '0') {
                frac[--n] = '\0';
            }
            snprintf(want, sizeof(want), "%s.%sZ", date, frac);
        }
        kms_time_rfc3339(sec, nsec, out);
        assert_string_equal(out, want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_err_set),
        cmocka_unit_test(test_err_truncates),
        cmocka_unit_test(test_memory),
        cmocka_unit_test(test_uuid4),
        cmocka_unit_test(test_rand),
        cmocka_unit_test(test_rand_fast),
        cmocka_unit_test(test_b64_encode),
        cmocka_unit_test(test_b64_decode_ok),
        cmocka_unit_test(test_b64_decode_go_indexes),
        cmocka_unit_test(test_b64_round_trip),
        cmocka_unit_test(test_b64_decode_embedded_nul),
        cmocka_unit_test(test_secmem_leaves_openssl_room),
        cmocka_unit_test(test_b64url),
        cmocka_unit_test(test_hex),
        cmocka_unit_test(test_decimal),
        cmocka_unit_test(test_time),
        cmocka_unit_test(test_time_matches_libc),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
