/*
 * test_kmsplugin.c - the KMS plugin without a socket: KEY parsing and Transit names, and whole
 * gRPC exchanges through kms_plugin_session_run, written and read by a libnghttp2 client
 * session (so HTTP/2 is nghttp2's on both sides), over a backend on the real keyring.
 */
#include "kmsplugin/kmsplugin_int.h"

#include "crypto/keyring.h"

#include "api.pb-c.h"

#include <nghttp2/nghttp2.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmocka.h>

/* ---- KEY and Transit names ----------------------------------------------------------------- */

static void test_key_parse(void **state)
{
    char p[64], n[64];
    bool km = true;
    struct kms_err err;
    (void)state;
    assert_int_equal(kms_plugin_key_parse("etcd-k", &km, p, sizeof(p), n, sizeof(n), &err), 0);
    assert_false(km);
    assert_string_equal(n, "etcd-k");
    assert_string_equal(p, "");
    assert_int_equal(kms_plugin_key_parse("prod/etcd", &km, p, sizeof(p), n, sizeof(n), &err), 0);
    assert_true(km);
    assert_string_equal(p, "prod");
    assert_string_equal(n, "etcd");
    assert_int_equal(kms_plugin_key_parse("p-1/e-2", &km, p, sizeof(p), n, sizeof(n), &err), 0);
    /* a Transit key name keeps Transit's rules */
    assert_int_equal(kms_plugin_key_parse("Etcd_K", &km, p, sizeof(p), n, sizeof(n), &err), 0);
    assert_false(km);
    /* a KMSKey's project and name are DNS labels: no KMSKey has another name */
    static const char *const bad[] = {"",        "/x",      "x/",        "a/b/c",  "a:b",
                                      "a b",     "p/n%",    "Prod/etcd", "p/Etcd", "p/etcd_1",
                                      "p/-etcd", "p/etcd-", NULL};
    for (size_t i = 0; bad[i] != NULL; i++) {
        assert_int_equal(kms_plugin_key_parse(bad[i], &km, p, sizeof(p), n, sizeof(n), &err), -1);
        assert_int_equal(err.status, 400);
    }
}

static void test_transit_name(void **state)
{
    char out[128];
    struct kms_err err;
    (void)state;
    assert_int_equal(kms_plugin_transit_name("org1/", true, "prod", "etcd", out, sizeof(out), &err),
                     0);
    assert_string_equal(out, "org1-prod-etcd");
    assert_int_equal(kms_plugin_transit_name("a/b/", true, "p", "n", out, sizeof(out), &err), 0);
    assert_string_equal(out, "a-b-p-n");
    assert_int_equal(kms_plugin_transit_name("", false, "", "k", out, sizeof(out), &err), 0);
    assert_string_equal(out, "k");
    /* KMSKeys live in organizations */
    assert_int_equal(kms_plugin_transit_name("", true, "p", "n", out, sizeof(out), &err), -1);
}

/* ---- a backend on the real keyring ----------------------------------------------------------- */

static struct kms_key_policy policy;

/* The clock the sessions read deadlines on: it moves only when a test moves it. */
static int64_t fake_now = 1000000;

static int64_t fake_clock(void)
{
    return fake_now;
}

/* What the backend saw: calls with a uid (the health probe's is ""), the last uid and deadline;
 * each call moves the clock by backend_takes_ms (a backend that is slow). */
static int backend_calls;
static char backend_uid[64];
static int64_t backend_deadline;
static int64_t backend_takes_ms;

static void backend_called(const char *uid, int64_t deadline_ms)
{
    if (uid[0] != '\0') {
        backend_calls++;
        snprintf(backend_uid, sizeof(backend_uid), "%s", uid);
        backend_deadline = deadline_ms;
    }
    fake_now += backend_takes_ms;
}

static void version_of(uint32_t v, struct kms_key_version *kv)
{
    memset(kv, 0, sizeof(*kv));
    kv->version = v;
    kv->key_len = 32;
    memset(kv->key, 0x20 + (int)v, 32);
}

static int kr_encrypt(void *arg, const uint8_t *pt, size_t ptlen, const char *uid,
                      int64_t deadline_ms, char **ct, uint32_t *version, struct kms_err *err)
{
    struct kms_key_version kv;
    (void)arg;
    (void)uid;
    backend_called(uid, deadline_ms);
    *version = policy.latest_version;
    version_of(*version, &kv);
    return kms_keyring_encrypt(&policy, &kv, NULL, 0, false, NULL, 0, pt, ptlen, ct, err);
}

static int kr_decrypt(void *arg, const char *ct, size_t ctlen, uint32_t version, const char *uid,
                      int64_t deadline_ms, uint8_t **pt, size_t *ptlen, struct kms_err *err)
{
    struct kms_key_version kv;
    uint32_t v = 0;
    (void)arg;
    (void)uid;
    backend_called(uid, deadline_ms);
    if (kms_keyring_ciphertext_version(&policy, ct, ctlen, &v, err) != 0) {
        return -1;
    }
    assert_int_equal(v, version);
    version_of(v, &kv);
    return kms_keyring_decrypt(&policy, &kv, ct, ctlen, NULL, 0, false, NULL, 0, pt, ptlen, err);
}

static void backend(struct kms_plugin_backend *b)
{
    assert_int_equal(kms_key_policy_init(&policy, KMS_KEY_AES256_GCM96), 0);
    policy.latest_version = 2;
    policy.min_decryption_version = 1;
    memset(b, 0, sizeof(*b));
    snprintf(b->label, sizeof(b->label), "transit/keys/unit");
    b->encrypt = kr_encrypt;
    b->decrypt = kr_decrypt;
}

static int atoi_ok(const uint8_t *v, size_t n)
{
    int x = 0;
    for (size_t i = 0; i < n; i++) {
        assert_true(v[i] >= '0' && v[i] <= '9');
        x = x * 10 + (v[i] - '0');
    }
    return x;
}

/* ---- a client: one call, its answer ------------------------------------------------------------
 */

struct answer {
    int grpc_status;
    char grpc_message[256];
    char http_status[8];
    uint8_t body[4096];
    size_t len;
    bool closed;
    uint32_t close_code; /* the stream's: NGHTTP2_NO_ERROR, or the RST_STREAM's */
    int answers;         /* grpc-status headers received */
};

struct client {
    uint8_t out[200000];
    size_t outlen;
    const uint8_t *req;
    size_t reqlen, off;
    size_t defer_at; /* 0, or: the request's DATA stops there (incomplete, no END_STREAM) */
    struct answer a;
};

static ssize_t c_send(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *ud)
{
    struct client *c = ud;
    (void)s;
    (void)flags;
    assert_true(c->outlen + len <= sizeof(c->out));
    memcpy(c->out + c->outlen, data, len);
    c->outlen += len;
    return (ssize_t)len;
}

static int c_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                    const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
    struct client *c = ud;
    (void)s;
    (void)f;
    (void)flags;
    if (nl == 11 && memcmp(name, "grpc-status", 11) == 0) {
        c->a.grpc_status = atoi_ok(value, vl);
        c->a.answers++;
    } else if (nl == 12 && memcmp(name, "grpc-message", 12) == 0) {
        snprintf(c->a.grpc_message, sizeof(c->a.grpc_message), "%.*s", (int)vl, value);
    } else if (nl == 7 && memcmp(name, ":status", 7) == 0) {
        snprintf(c->a.http_status, sizeof(c->a.http_status), "%.*s", (int)vl, value);
    }
    return 0;
}

static int c_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                  void *ud)
{
    struct client *c = ud;
    (void)s;
    (void)flags;
    (void)id;
    assert_true(c->a.len + len <= sizeof(c->a.body));
    memcpy(c->a.body + c->a.len, data, len);
    c->a.len += len;
    return 0;
}

static int c_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
    struct client *c = ud;
    (void)s;
    (void)id;
    c->a.closed = true;
    c->a.close_code = code;
    return 0;
}

static ssize_t c_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                      nghttp2_data_source *src, void *ud)
{
    struct client *c = ud;
    (void)s;
    (void)id;
    (void)src;
    if (c->defer_at > 0 && c->off >= c->defer_at) {
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t end = c->defer_at > 0 ? c->defer_at : c->reqlen;
    size_t n = end - c->off < len ? end - c->off : len;
    memcpy(buf, c->req + c->off, n);
    c->off += n;
    if (c->off == c->reqlen) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    }
    return (ssize_t)n;
}

/* A client session writing into c->out, with one request submitted and sent: body = the gRPC
 * body (prefix included) sent as DATA (up to c->defer_at when set), after HEADERS with one
 * grpc-timeout header for each of `timeouts` (NULL-terminated; NULL: none). */
static nghttp2_session *client_request(struct client *c, const char *path, const char *ctype,
                                       const char *const *timeouts, const uint8_t *body, size_t len)
{
    nghttp2_session_callbacks *cbs;
    nghttp2_session *s;
    c->a.grpc_status = -1;
    c->req = body;
    c->reqlen = len;
    assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
    nghttp2_session_callbacks_set_send_callback(cbs, c_send);
    nghttp2_session_callbacks_set_on_header_callback(cbs, c_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, c_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, c_close);
    assert_int_equal(nghttp2_session_client_new(&s, cbs, c), 0);
    nghttp2_session_callbacks_del(cbs);
    assert_int_equal(nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, NULL, 0), 0);
    nghttp2_nv nva[10] = {
        {(uint8_t *)":method", (uint8_t *)"POST", 7, 4, 0},
        {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0},
        {(uint8_t *)":path", (uint8_t *)path, 5, strlen(path), 0},
        {(uint8_t *)":authority", (uint8_t *)"localhost", 10, 9, 0},
        {(uint8_t *)"content-type", (uint8_t *)ctype, 12, strlen(ctype), 0},
        {(uint8_t *)"te", (uint8_t *)"trailers", 2, 8, 0},
    };
    size_t n = 6;
    for (size_t i = 0; timeouts != NULL && timeouts[i] != NULL; i++) {
        assert_true(n < 10);
        nva[n++] = (nghttp2_nv){(uint8_t *)"grpc-timeout", (uint8_t *)timeouts[i], 12,
                                strlen(timeouts[i]), 0};
    }
    nghttp2_data_provider prd;
    prd.read_callback = c_read;
    prd.source.ptr = NULL;
    assert_true(nghttp2_submit_request(s, NULL, nva, n, &prd, NULL) > 0);
    assert_int_equal(nghttp2_session_send(s), 0);
    return s;
}

/* One call through kms_plugin_session_run (deadlines on fake_clock), with grpc-timeout headers
 * (NULL: none); the answer in *a. */
static void call_t(const char *path, const char *ctype, const char *const *timeouts,
                   const uint8_t *body, size_t len, struct answer *a)
{
    static struct client c;
    struct kms_plugin_backend b;
    memset(&c, 0, sizeof(c));
    nghttp2_session *s = client_request(&c, path, ctype, timeouts, body, len);
    backend(&b);
    uint8_t *out = NULL;
    size_t outlen = 0;
    assert_int_equal(kms_plugin_session_run(&b, fake_clock, c.out, c.outlen, &out, &outlen), 0);
    assert_int_equal(nghttp2_session_mem_recv(s, out, outlen), (ssize_t)outlen);
    free(out);
    nghttp2_session_del(s);
    assert_true(c.a.closed);
    *a = c.a;
}

/* One call without a grpc-timeout. */
static void call(const char *path, const char *ctype, const uint8_t *body, size_t len,
                 struct answer *a)
{
    call_t(path, ctype, NULL, body, len, a);
}

static size_t frame(const uint8_t *msg, size_t len, uint8_t *out)
{
    out[0] = 0;
    out[1] = (uint8_t)(len >> 24);
    out[2] = (uint8_t)(len >> 16);
    out[3] = (uint8_t)(len >> 8);
    out[4] = (uint8_t)len;
    if (len > 0) {
        memcpy(out + 5, msg, len);
    }
    return len + 5;
}

static const char *CT = "application/grpc";

static void test_encrypt_decrypt_status(void **state)
{
    uint8_t seed[32], buf[2048], msg[2048];
    struct answer a;
    (void)state;
    memset(seed, 0x5a, sizeof(seed));
    V2__EncryptRequest er = V2__ENCRYPT_REQUEST__INIT;
    er.plaintext.data = seed;
    er.plaintext.len = sizeof(seed);
    size_t n = v2__encrypt_request__pack(&er, msg);
    call("/v2.KeyManagementService/Encrypt", CT, buf, frame(msg, n, buf), &a);
    assert_string_equal(a.http_status, "200");
    assert_int_equal(a.grpc_status, 0);
    assert_true(a.len > 5);
    V2__EncryptResponse *r = v2__encrypt_response__unpack(NULL, a.len - 5, a.body + 5);
    assert_non_null(r);
    assert_string_equal(r->key_id, "transit/keys/unit:v2");
    assert_memory_equal(r->ciphertext.data, "vault:v2:", 9);

    V2__DecryptRequest dr = V2__DECRYPT_REQUEST__INIT;
    dr.ciphertext = r->ciphertext;
    dr.key_id = r->key_id;
    n = v2__decrypt_request__pack(&dr, msg);
    call("/v2.KeyManagementService/Decrypt", "application/grpc+proto", buf, frame(msg, n, buf), &a);
    assert_int_equal(a.grpc_status, 0);
    V2__DecryptResponse *d = v2__decrypt_response__unpack(NULL, a.len - 5, a.body + 5);
    assert_non_null(d);
    assert_int_equal(d->plaintext.len, sizeof(seed));
    assert_memory_equal(d->plaintext.data, seed, sizeof(seed));
    v2__decrypt_response__free_unpacked(d, NULL);

    /* a key_id of another version than the ciphertext's */
    dr.key_id = (char *)"transit/keys/unit:v1";
    n = v2__decrypt_request__pack(&dr, msg);
    call("/v2.KeyManagementService/Decrypt", CT, buf, frame(msg, n, buf), &a);
    assert_int_equal(a.grpc_status, KMS_GRPC_INVALID_ARGUMENT);
    assert_non_null(strstr(a.grpc_message, "does not match key_id"));
    v2__encrypt_response__free_unpacked(r, NULL);

    call("/v2.KeyManagementService/Status", CT, buf, frame(NULL, 0, buf), &a);
    assert_int_equal(a.grpc_status, 0);
    V2__StatusResponse *st = v2__status_response__unpack(NULL, a.len - 5, a.body + 5);
    assert_non_null(st);
    assert_string_equal(st->version, "v2");
    assert_string_equal(st->healthz, "ok");
    assert_string_equal(st->key_id, "transit/keys/unit:v2");
    v2__status_response__free_unpacked(st, NULL);
}

static void test_protocol_errors(void **state)
{
    uint8_t buf[64];
    struct answer a;
    (void)state;
    call("/v2.KeyManagementService/Rewrap", CT, buf, frame(NULL, 0, buf), &a);
    assert_int_equal(a.grpc_status, KMS_GRPC_UNIMPLEMENTED);
    /* a compressed message */
    size_t n = frame((const uint8_t *)"\x0a\x01x", 3, buf);
    buf[0] = 1;
    call("/v2.KeyManagementService/Encrypt", CT, buf, n, &a);
    assert_int_equal(a.grpc_status, KMS_GRPC_UNIMPLEMENTED);
    /* a length prefix that does not match the body */
    n = frame((const uint8_t *)"\x0a\x01x", 3, buf);
    buf[4] = 9;
    call("/v2.KeyManagementService/Encrypt", CT, buf, n, &a);
    assert_int_equal(a.grpc_status, KMS_GRPC_INTERNAL);
    /* no message at all */
    call("/v2.KeyManagementService/Encrypt", CT, buf, 0, &a);
    assert_int_equal(a.grpc_status, KMS_GRPC_INTERNAL);
    /* not a protobuf message */
    n = frame((const uint8_t *)"\xff\xff\xff", 3, buf);
    call("/v2.KeyManagementService/Encrypt", CT, buf, n, &a);
    assert_int_equal(a.grpc_status, KMS_GRPC_INVALID_ARGUMENT);
    /* (a message above 64 KiB needs the server's WINDOW_UPDATEs, a conversation: it is
     * tested over the socket in tests/integration/test_kms_plugin.py) */
    /* not gRPC */
    call("/v2.KeyManagementService/Encrypt", "application/json", buf, n, &a);
    assert_string_equal(a.http_status, "415");
    /* an empty plaintext: a message with grpc-message percent-encoded */
    n = frame(NULL, 0, buf);
    call("/v2.KeyManagementService/Encrypt", CT, buf, n, &a);
    assert_int_equal(a.grpc_status, KMS_GRPC_INVALID_ARGUMENT);
    assert_string_equal(a.grpc_message, "plaintext is empty");
}

/* ---- string fields with a NUL byte or not UTF-8 ---------------------------------------------- */

/* A length-delimited field (number < 16, len < 128) appended at buf + *n. */
static void ld(uint8_t *buf, size_t *n, unsigned num, const void *data, size_t len)
{
    assert_true(num < 16 && len < 128);
    buf[(*n)++] = (uint8_t)(num << 3 | 2);
    buf[(*n)++] = (uint8_t)len;
    memcpy(buf + *n, data, len);
    *n += len;
}

static void test_utf8(void **state)
{
    (void)state;
    static const char *const good[] = {
        "",
        "plain ascii",
        "\xc3\xa9",
        "\xe2\x82\xac",
        "\xf0\x9d\x84\x9e",
        "\xf4\x8f\xbf\xbf",
        "\xed\x9f\xbf", /* U+D7FF, just below the surrogates */
        "\xee\x80\x80", /* U+E000, just above */
        "\xc2\x80",     /* U+0080 */
        NULL,
    };
    static const char *const bad[] = {
        "\xc0\x80",         /* overlong NUL */
        "\xc1\xbf",         /* overlong */
        "\xe0\x80\x80",     /* overlong */
        "\xe0\x9f\xbf",     /* overlong */
        "\xed\xa0\x80",     /* U+D800, a surrogate */
        "\xed\xbf\xbf",     /* U+DFFF */
        "\xf0\x8f\xbf\xbf", /* overlong */
        "\xf4\x90\x80\x80", /* U+110000 */
        "\xf5\x80\x80\x80",
        "\xff",
        "\xfe",
        "\x80",
        "\xbf",     /* not a first byte */
        "\xe2\x82", /* cut short */
        "\xc3"
        "a", /* not a continuation */
        "ok-\xe2\x82",
        "\xf0\x9d\x84",
        NULL,
    };
    for (size_t i = 0; good[i] != NULL; i++) {
        assert_true(kms_utf8_valid(good[i], strlen(good[i])));
    }
    for (size_t i = 0; bad[i] != NULL; i++) {
        assert_false(kms_utf8_valid(bad[i], strlen(bad[i])));
    }
    /* NUL is UTF-8 (U+0000): refused as a NUL, not as an encoding error */
    assert_true(kms_utf8_valid("a\0b", 3));
}

/* A request decoded (wire.proto) and its string fields checked: NULL and why, or the message */
static int enc_strings(const uint8_t *m, size_t n, char *why, size_t wn)
{
    V2wire__EncryptRequest *r = kms_plugin_encrypt_request(m, n, why, wn);
    if (r == NULL) {
        return why[0] != '\0' ? 1 : -1;
    }
    v2wire__encrypt_request__free_unpacked(r, NULL);
    return 0;
}

static int dec_strings(const uint8_t *m, size_t n, char *why, size_t wn)
{
    V2wire__DecryptRequest *r = kms_plugin_decrypt_request(m, n, why, wn);
    if (r == NULL) {
        return why[0] != '\0' ? 1 : -1;
    }
    v2wire__decrypt_request__free_unpacked(r, NULL);
    return 0;
}

static void test_request_strings(void **state)
{
    uint8_t m[256], entry[64];
    char why[128];
    size_t n = 0, en = 0;
    (void)state;
    /* EncryptRequest: uid "abc\0xyz" */
    ld(m, &n, 1, "seed", 4);
    ld(m, &n, 2, "abc\0xyz", 7);
    assert_int_equal(enc_strings(m, n, why, sizeof(why)), 1);
    assert_string_equal(why, "uid contains a NUL byte");
    /* bytes fields may hold anything: the plaintext and ciphertext */
    n = 0;
    ld(m, &n, 1, "\0\xff\0", 3);
    ld(m, &n, 2, "uid", 3);
    assert_int_equal(enc_strings(m, n, why, sizeof(why)), 0);
    /* the lengths are the wire's: a uid "abc\0xyz" is seen whole */
    n = 0;
    ld(m, &n, 2, "abc\0xyz", 7);
    V2wire__EncryptRequest *er = v2wire__encrypt_request__unpack(NULL, n, m);
    assert_non_null(er);
    assert_int_equal(er->uid.len, 7);
    v2wire__encrypt_request__free_unpacked(er, NULL);
    /* DecryptRequest: key_id with a NUL, uid not UTF-8 */
    n = 0;
    ld(m, &n, 1, "vault:v1:\0", 10);
    ld(m, &n, 3, "transit/keys/unit:v2\0junk", 25);
    assert_int_equal(dec_strings(m, n, why, sizeof(why)), 1);
    assert_string_equal(why, "key_id contains a NUL byte");
    n = 0;
    ld(m, &n, 2, "\xed\xa0\x80", 3);
    assert_int_equal(dec_strings(m, n, why, sizeof(why)), 1);
    assert_string_equal(why, "uid is not UTF-8");
    /* a field given twice: protobuf-c keeps the last copy, the only one read and checked */
    n = 0;
    ld(m, &n, 2, "good", 4);
    ld(m, &n, 2, "bad\0", 4);
    assert_int_equal(dec_strings(m, n, why, sizeof(why)), 1);
    assert_string_equal(why, "uid contains a NUL byte");
    n = 0;
    ld(m, &n, 2, "bad\0", 4);
    ld(m, &n, 2, "good", 4);
    assert_int_equal(dec_strings(m, n, why, sizeof(why)), 0);
    /* the annotations' keys (map entries: a nested message); their values are bytes */
    ld(entry, &en, 1, "a.example.com\0x", 15);
    ld(entry, &en, 2, "v", 1);
    n = 0;
    ld(m, &n, 4, entry, en);
    assert_int_equal(dec_strings(m, n, why, sizeof(why)), 1);
    assert_string_equal(why, "annotations key contains a NUL byte");
    en = 0;
    ld(entry, &en, 1, "k\xff", 2);
    n = 0;
    ld(m, &n, 4, entry, en);
    assert_int_equal(dec_strings(m, n, why, sizeof(why)), 1);
    assert_string_equal(why, "annotations key is not UTF-8");
    /* every entry is kept: a bad key after a good one */
    en = 0;
    ld(entry, &en, 1, "ok", 2);
    n = 0;
    ld(m, &n, 4, entry, en);
    en = 0;
    ld(entry, &en, 1, "k\0", 2);
    ld(m, &n, 4, entry, en);
    assert_int_equal(dec_strings(m, n, why, sizeof(why)), 1);
    assert_string_equal(why, "annotations key contains a NUL byte");
    en = 0;
    ld(entry, &en, 1, "a.example.com", 13);
    ld(entry, &en, 2, "\0\0", 2);
    n = 0;
    ld(m, &n, 4, entry, en);
    assert_int_equal(dec_strings(m, n, why, sizeof(why)), 0);
    /* unknown fields are skipped, whatever they hold; varints, fixed32 and fixed64 too */
    n = 0;
    ld(m, &n, 9, "\0\xff", 2);
    memcpy(m + n,
           "\x50\x96\x01" /* 10: varint 150 */ "\x5d\x01\x02\x03\x04" /* 11: fixed32 */
           "\x61\x01\x02\x03\x04\x05\x06\x07\x08" /* 12: fixed64 */,
           17);
    n += 17;
    ld(m, &n, 2, "fine", 4);
    assert_int_equal(dec_strings(m, n, why, sizeof(why)), 0);
    assert_int_equal(enc_strings(m, n, why, sizeof(why)), 0);
    /* not protobuf: cut short, a group, a string field that is not length-delimited */
    n = 0;
    ld(m, &n, 2, "uid", 3);
    assert_int_equal(dec_strings(m, n - 1, why, sizeof(why)), -1);
    assert_int_equal(dec_strings((const uint8_t *)"\x13\x14", 2, why, sizeof(why)), -1);
    assert_int_equal(dec_strings((const uint8_t *)"\x10\x01", 2, why, sizeof(why)), -1);
}

/* The requests themselves: refused INVALID_ARGUMENT before the backend is asked. */
static void test_nul_in_request_strings(void **state)
{
    uint8_t msg[512], buf[600], entry[64];
    size_t n = 0, en = 0;
    struct answer a;
    (void)state;
    backend_calls = 0;
    ld(msg, &n, 1, "0123456789abcdef0123456789abcdef", 32);
    ld(msg, &n, 2, "abc\0xyz", 7);
    call("/v2.KeyManagementService/Encrypt", CT, buf, frame(msg, n, buf), &a);
    assert_int_equal(a.grpc_status, KMS_GRPC_INVALID_ARGUMENT);
    assert_string_equal(a.grpc_message,
                        "malformed EncryptRequest message: uid contains a NUL byte");
    /* a uid of 2000 bytes with a NUL at 5: its real length is refused too (it was "abcde") */
    char big[2000];
    memset(big, 'u', sizeof(big));
    big[5] = '\0';
    n = 0;
    ld(msg, &n, 1, "seed", 4);
    msg[n++] = 2 << 3 | 2;
    msg[n++] = (uint8_t)(0x80 | (sizeof(big) & 0x7f));
    msg[n++] = (uint8_t)(sizeof(big) >> 7);
    static uint8_t large[2100], framed[2200];
    memcpy(large, msg, n);
    memcpy(large + n, big, sizeof(big));
    call("/v2.KeyManagementService/Encrypt", CT, framed, frame(large, n + sizeof(big), framed), &a);
    assert_int_equal(a.grpc_status, KMS_GRPC_INVALID_ARGUMENT);
    assert_string_equal(a.grpc_message,
                        "malformed EncryptRequest message: uid contains a NUL byte");
    /* Decrypt: a key_id that is this plugin's up to its NUL */
    n = 0;
    ld(msg, &n, 1, "vault:v2:AAAA", 13);
    ld(msg, &n, 2, "uid-1", 5);
    ld(msg, &n, 3, "transit/keys/unit:v2\0other", 26);
    call("/v2.KeyManagementService/Decrypt", CT, buf, frame(msg, n, buf), &a);
    assert_int_equal(a.grpc_status, KMS_GRPC_INVALID_ARGUMENT);
    assert_string_equal(a.grpc_message,
                        "malformed DecryptRequest message: key_id contains a NUL byte");
    /* an annotation key with a NUL */
    ld(entry, &en, 1, "k8s.io\0x", 8);
    ld(entry, &en, 2, "v", 1);
    n = 0;
    ld(msg, &n, 1, "vault:v2:AAAA", 13);
    ld(msg, &n, 3, "transit/keys/unit:v2", 20);
    ld(msg, &n, 4, entry, en);
    call("/v2.KeyManagementService/Decrypt", CT, buf, frame(msg, n, buf), &a);
    assert_int_equal(a.grpc_status, KMS_GRPC_INVALID_ARGUMENT);
    assert_string_equal(a.grpc_message,
                        "malformed DecryptRequest message: annotations key contains a NUL byte");
    assert_int_equal(backend_calls, 0);
    /* and without the NUL, the same uid is served */
    n = 0;
    ld(msg, &n, 1, "0123456789abcdef0123456789abcdef", 32);
    ld(msg, &n, 2, "abcxyz", 6);
    call("/v2.KeyManagementService/Encrypt", CT, buf, frame(msg, n, buf), &a);
    assert_int_equal(a.grpc_status, KMS_GRPC_OK);
    assert_int_equal(backend_calls, 1);
    assert_string_equal(backend_uid, "abcxyz");
}

/* ---- grpc-timeout ------------------------------------------------------------------------------
 */

static void test_grpc_timeout_parse(void **state)
{
    static const struct {
        const char *v;
        int64_t ms;
    } good[] = {
        {"1H", 3600000},
        {"2M", 120000},
        {"3S", 3000},
        {"4m", 4},
        {"0S", 0},
        {"0n", 0},
        {"1n", 1}, /* rounded up: never cut short */
        {"1u", 1},
        {"1000u", 1},
        {"1001u", 2},
        {"12345678n", 13},
        {"99999999n", 100},
        {"00000001S", 1000},
        {"99999999m", 99999999},
        {"99999999H", INT64_C(359999996400000)}, /* the largest: 11,415 years, no overflow */
    };
    static const struct {
        const char *v;
        const char *why;
    } bad[] = {
        {"", "too short"},
        {"S", "too short"},
        {"5", "too short"},
        {"123456789S", "too long"}, /* 9 digits */
        {"999999999999999999999H", "too long"},
        {"5X", "unknown unit"},
        {"5s", "unknown unit"},
        {"5h", "unknown unit"},
        {"10", "unknown unit"},
        {"-5S", "not a number"},
        {"+5S", "not a number"},
        {" 5S", "not a number"},
        {"5 S", "not a number"},
        {"1.5S", "not a number"},
        {"0x1S", "not a number"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        int64_t ms = -1;
        const char *why = NULL;
        assert_int_equal(
            kms_grpc_timeout_parse((const uint8_t *)good[i].v, strlen(good[i].v), &ms, &why), 0);
        assert_int_equal(ms, good[i].ms);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t ms = -1;
        const char *why = NULL;
        assert_int_equal(
            kms_grpc_timeout_parse((const uint8_t *)bad[i].v, strlen(bad[i].v), &ms, &why), -1);
        assert_non_null(why);
        assert_non_null(strstr(why, bad[i].why));
    }
}

static size_t encrypt_body(const char *uid, uint8_t *buf)
{
    uint8_t seed[32], msg[256];
    memset(seed, 0x5a, sizeof(seed));
    V2__EncryptRequest er = V2__ENCRYPT_REQUEST__INIT;
    er.plaintext.data = seed;
    er.plaintext.len = sizeof(seed);
    er.uid = (char *)uid;
    return frame(msg, v2__encrypt_request__pack(&er, msg), buf);
}

static void test_deadlines_in_session(void **state)
{
    uint8_t buf[512];
    struct answer a;
    const char *const zero[] = {"0S", NULL};
    const char *const ten[] = {"10S", NULL};
    const char *const short_[] = {"100m", NULL};
    const char *const twice[] = {"0S", "10S", NULL}; /* the last one counts (grpc-go) */
    const char *const bad[] = {"5X", NULL};
    const char *const long_[] = {"123456789S", NULL};
    const char *const bad_then_good[] = {"5X", "10S", NULL};
    (void)state;
    backend_calls = 0;
    backend_takes_ms = 0;
    fake_now = 1000000;

    /* a deadline already passed when the call is complete: not run */
    call_t("/v2.KeyManagementService/Encrypt", CT, zero, buf, encrypt_body("late", buf), &a);
    assert_int_equal(a.grpc_status, KMS_GRPC_DEADLINE_EXCEEDED);
    assert_string_equal(a.grpc_message, "deadline exceeded before the call ran");
    call_t("/v2.KeyManagementService/Status", CT, zero, buf, frame(NULL, 0, buf), &a);
    assert_int_equal(a.grpc_status, KMS_GRPC_DEADLINE_EXCEEDED);
    assert_int_equal(backend_calls, 0);

    /* in time: served, and the backend is given the deadline */
    call_t("/v2.KeyManagementService/Encrypt", CT, ten, buf, encrypt_body("in-time", buf), &a);
    assert_int_equal(a.grpc_status, KMS_GRPC_OK);
    assert_int_equal(backend_calls, 1);
    assert_string_equal(backend_uid, "in-time");
    assert_int_equal(backend_deadline, 1000000 + 10000);
    call_t("/v2.KeyManagementService/Encrypt", CT, twice, buf, encrypt_body("twice", buf), &a);
    assert_int_equal(a.grpc_status, KMS_GRPC_OK);
    assert_int_equal(backend_calls, 2);
    /* no grpc-timeout: no deadline */
    call("/v2.KeyManagementService/Encrypt", CT, buf, encrypt_body("none", buf), &a);
    assert_int_equal(a.grpc_status, KMS_GRPC_OK);
    assert_true(backend_deadline == KMS_PLUGIN_NO_DEADLINE);

    /* the backend takes longer than the timeout: DEADLINE_EXCEEDED, never a late OK */
    backend_takes_ms = 200;
    call_t("/v2.KeyManagementService/Encrypt", CT, short_, buf, encrypt_body("slow", buf), &a);
    assert_int_equal(a.grpc_status, KMS_GRPC_DEADLINE_EXCEEDED);
    assert_string_equal(a.grpc_message,
                        "deadline exceeded: no answer within the call's grpc-timeout");
    assert_int_equal(a.len, 0);
    assert_int_equal(backend_calls, 4);
    backend_takes_ms = 0;

    /* malformed: refused as grpc-go refuses it (HTTP 400, INTERNAL), not run */
    call_t("/v2.KeyManagementService/Encrypt", CT, bad, buf, encrypt_body("bad", buf), &a);
    assert_string_equal(a.http_status, "400");
    assert_int_equal(a.grpc_status, KMS_GRPC_INTERNAL);
    assert_string_equal(a.grpc_message,
                        "malformed grpc-timeout: unknown unit (one of H, M, S, m, u, n)");
    call_t("/v2.KeyManagementService/Encrypt", CT, long_, buf, encrypt_body("bad", buf), &a);
    assert_int_equal(a.grpc_status, KMS_GRPC_INTERNAL);
    assert_string_equal(a.grpc_message,
                        "malformed grpc-timeout: too long (at most 8 digits and a unit)");
    call_t("/v2.KeyManagementService/Encrypt", CT, bad_then_good, buf, encrypt_body("bad", buf),
           &a);
    assert_int_equal(a.grpc_status, KMS_GRPC_INTERNAL);
    assert_int_equal(backend_calls, 4);
}

/* ---- deadlines of calls handed over and not answered (the socket server's case) ----------------
 */

struct held {
    uint8_t out[65536]; /* what the server session wrote */
    size_t outlen;
    int calls;
    int32_t stream;
    int64_t deadline;
    int cancels;
    int cancel_code;
};

static void *held_call(void *arg, struct kms_h2 *h, int32_t id, enum kms_plugin_method m,
                       uint8_t *msg, size_t len, int64_t deadline_ms)
{
    struct held *x = arg;
    (void)h;
    (void)m;
    kms_free_wipe((void **)&msg, len); /* kept, not answered: a call thread is busy with it */
    x->calls++;
    x->stream = id;
    x->deadline = deadline_ms;
    return &x->calls; /* the handle on_cancel gets back */
}

static void held_cancel(void *arg, int32_t id, void *call, int code)
{
    struct held *x = arg;
    assert_int_equal(id, x->stream);
    assert_ptr_equal(call, &x->calls);
    x->cancels++;
    x->cancel_code = code;
}

static int held_send(void *arg, const uint8_t *data, size_t len)
{
    struct held *x = arg;
    assert_true(x->outlen + len <= sizeof(x->out));
    memcpy(x->out + x->outlen, data, len);
    x->outlen += len;
    return 0;
}

/* What the server wrote, to the client. */
static void to_client(nghttp2_session *s, struct held *x)
{
    assert_int_equal(nghttp2_session_mem_recv(s, x->out, x->outlen), (ssize_t)x->outlen);
    x->outlen = 0;
}

static void test_deadline_of_a_call_in_flight(void **state)
{
    static struct client c;
    static struct held x;
    struct kms_h2 *h = NULL;
    uint8_t buf[512];
    const char *const t50[] = {"50m", NULL};
    int64_t next = 0;
    (void)state;
    memset(&c, 0, sizeof(c));
    memset(&x, 0, sizeof(x));
    fake_now = 5000000;
    assert_int_equal(kms_h2_create(held_call, held_cancel, held_send, &x, &h), 0);
    kms_h2_set_clock(h, fake_clock);
    nghttp2_session *s = client_request(&c, "/v2.KeyManagementService/Encrypt", CT, t50, buf,
                                        encrypt_body("held", buf));
    assert_int_equal(kms_h2_recv(h, c.out, c.outlen), 0);
    assert_int_equal(x.calls, 1);
    assert_int_equal(x.deadline, 5000050);
    assert_int_equal(kms_h2_new_deadline(h), 5000050); /* the owner's timer */
    assert_true(kms_h2_new_deadline(h) == KMS_PLUGIN_NO_DEADLINE);
    /* before the deadline: nothing, and the next one is named */
    fake_now += 49;
    assert_int_equal(kms_h2_expire(h, &next), 0);
    assert_int_equal(next, 5000050);
    assert_int_equal(x.cancels, 0);
    to_client(s, &x);
    assert_int_equal(c.a.answers, 0);
    /* at the deadline: DEADLINE_EXCEEDED, and the owner is told not to answer */
    fake_now += 1;
    assert_int_equal(kms_h2_expire(h, &next), 0);
    assert_true(next == KMS_PLUGIN_NO_DEADLINE);
    assert_int_equal(x.cancels, 1);
    assert_int_equal(x.cancel_code, KMS_GRPC_DEADLINE_EXCEEDED);
    to_client(s, &x);
    assert_int_equal(c.a.grpc_status, KMS_GRPC_DEADLINE_EXCEEDED);
    assert_string_equal(c.a.grpc_message,
                        "deadline exceeded: no answer within the call's grpc-timeout");
    assert_true(c.a.closed);
    /* the call thread's late answer is dropped: nothing more is sent */
    assert_int_equal(kms_h2_answer(h, x.stream, KMS_GRPC_OK, (const uint8_t *)"\x0a\x01x", 3, NULL),
                     0);
    assert_int_equal(x.outlen, 0);
    assert_int_equal(c.a.answers, 1);
    assert_int_equal(kms_h2_open_streams(h), 0);
    nghttp2_session_del(s);
    kms_h2_destroy(&h);
}

static void test_deadline_of_an_incomplete_request(void **state)
{
    static struct client c;
    static struct held x;
    struct kms_h2 *h = NULL;
    uint8_t buf[512];
    const char *const t1[] = {"1S", NULL};
    int64_t next = 0;
    (void)state;
    memset(&c, 0, sizeof(c));
    memset(&x, 0, sizeof(x));
    fake_now = 7000000;
    assert_int_equal(kms_h2_create(held_call, held_cancel, held_send, &x, &h), 0);
    kms_h2_set_clock(h, fake_clock);
    c.defer_at = 10; /* the prefix and 5 bytes of the message, no END_STREAM */
    nghttp2_session *s = client_request(&c, "/v2.KeyManagementService/Encrypt", CT, t1, buf,
                                        encrypt_body("incomplete", buf));
    assert_int_equal(kms_h2_recv(h, c.out, c.outlen), 0);
    assert_int_equal(x.calls, 0);
    assert_int_equal(kms_h2_open_streams(h), 1);
    fake_now += 1000;
    assert_int_equal(kms_h2_expire(h, &next), 0);
    assert_int_equal(x.cancels, 0); /* never handed over */
    to_client(s, &x);
    /* the answer, then RST_STREAM NO_ERROR: the rest of the request is not wanted */
    assert_int_equal(c.a.grpc_status, KMS_GRPC_DEADLINE_EXCEEDED);
    assert_true(c.a.closed);
    assert_int_equal(c.a.close_code, NGHTTP2_NO_ERROR);
    assert_int_equal(kms_h2_open_streams(h), 0);
    nghttp2_session_del(s);
    kms_h2_destroy(&h);
}

/* A malformed grpc-timeout is answered when the HEADERS end, as grpc-go answers it, not when
 * (if ever) the request does; the stream is then reset, no more of it being wanted. */
static void test_malformed_timeout_at_headers(void **state)
{
    static struct client c;
    static struct held x;
    struct kms_h2 *h = NULL;
    uint8_t buf[512];
    const char *const bad[] = {"5X", NULL};
    (void)state;
    memset(&c, 0, sizeof(c));
    memset(&x, 0, sizeof(x));
    assert_int_equal(kms_h2_create(held_call, held_cancel, held_send, &x, &h), 0);
    c.defer_at = 10; /* the prefix and 5 bytes of the message, no END_STREAM */
    nghttp2_session *s = client_request(&c, "/v2.KeyManagementService/Encrypt", CT, bad, buf,
                                        encrypt_body("bad-timeout", buf));
    assert_int_equal(kms_h2_recv(h, c.out, c.outlen), 0);
    to_client(s, &x);
    assert_string_equal(c.a.http_status, "400");
    assert_int_equal(c.a.grpc_status, KMS_GRPC_INTERNAL);
    assert_string_equal(c.a.grpc_message,
                        "malformed grpc-timeout: unknown unit (one of H, M, S, m, u, n)");
    assert_true(c.a.closed);
    assert_int_equal(c.a.close_code, NGHTTP2_NO_ERROR);
    assert_int_equal(x.calls, 0);
    assert_int_equal(kms_h2_open_streams(h), 0);
    nghttp2_session_del(s);
    kms_h2_destroy(&h);
}

/* An answer the client never takes (its flow-control window shut): the stream would stay open
 * as long as the connection; the stall sweep resets it once it has waited too long. */
static void test_stalled_answer_is_reset(void **state)
{
    static struct client c;
    static struct held x;
    struct kms_h2 *h = NULL;
    uint8_t buf[512];
    (void)state;
    memset(&c, 0, sizeof(c));
    memset(&x, 0, sizeof(x));
    assert_int_equal(kms_h2_create(held_call, held_cancel, held_send, &x, &h), 0);
    nghttp2_session *s = client_request(&c, "/v2.KeyManagementService/Encrypt", CT, NULL, buf,
                                        encrypt_body("stalled", buf));
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 0}};
    assert_int_equal(nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, iv, 1), 0);
    assert_int_equal(nghttp2_session_send(s), 0);
    assert_int_equal(kms_h2_recv(h, c.out, c.outlen), 0);
    assert_int_equal(x.calls, 1);
    assert_int_equal(kms_h2_answer(h, x.stream, KMS_GRPC_OK, (const uint8_t *)"\x0a\x01x", 3, NULL),
                     0);
    to_client(s, &x);
    assert_string_equal(c.a.http_status, "200"); /* its HEADERS; the DATA waits for a window */
    assert_int_equal(c.a.answers, 0);
    assert_false(c.a.closed);
    assert_int_equal(kms_h2_open_streams(h), 1);
    /* answered just now: not yet stalled */
    assert_int_equal(kms_h2_reset_stalled(h, kms_plugin_mono_ms() - 10000), 0);
    assert_int_equal(kms_h2_open_streams(h), 1);
    /* past the limit: reset (CANCEL), and the stream is gone */
    assert_int_equal(kms_h2_reset_stalled(h, kms_plugin_mono_ms() + 1), 0);
    to_client(s, &x);
    assert_true(c.a.closed);
    assert_int_equal(c.a.close_code, NGHTTP2_CANCEL);
    assert_int_equal(x.cancels, 0); /* its owner had answered */
    assert_int_equal(kms_h2_open_streams(h), 0);
    nghttp2_session_del(s);
    kms_h2_destroy(&h);
}

/* ---- the socket file ------------------------------------------------------------------------ */

/* A fresh directory dir (a mkdtemp template) and options for dir/kms.sock, mode 0660, group 1. */
static void socket_fixture(char *dir, char path[128], struct kms_plugin_opts *o)
{
    assert_non_null(mkdtemp(dir));
    snprintf(path, 128, "%s/kms.sock", dir);
    memset(o, 0, sizeof(*o));
    o->socket_path = path;
    o->socket_mode = 0660;
    o->socket_group = "1";
}

/* bound with the configured mode and group, and a socket */
static void test_socket_mode_and_group(void **state)
{
    (void)state;
    char dir[] = "/tmp/kms-sock-XXXXXX", path[128];
    struct kms_plugin_opts o;
    socket_fixture(dir, path, &o);
    struct kms_err err = {0};
    int fd = -1;
    assert_int_equal(kms_plugin_socket_open(&o, &fd, &err), 0);
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0660);
    assert_int_equal(st.st_gid, 1);
    close(fd);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(rmdir(dir), 0);
}

#ifdef KMS_TEST_HOOKS
static char victim[128];

/* what a process that may write to the socket's directory could do between bind and chmod */
static void swap_for_link(const char *path)
{
    assert_int_equal(unlink(path), 0);
    assert_int_equal(symlink(victim, path), 0);
}

/* The mode and group are never applied through a symlink put at the path after the bind:
 * the file it points to keeps its mode and group, the start fails with a clear error and
 * the link is left as it is. (chown and chmod by path changed the victim to 0660, group 1.) */
static void test_socket_mode_never_follows_a_swapped_link(void **state)
{
    (void)state;
    char dir[] = "/tmp/kms-sock-XXXXXX", path[128];
    struct kms_plugin_opts o;
    socket_fixture(dir, path, &o);
    snprintf(victim, sizeof(victim), "%s/victim", dir);
    int vfd = open(victim, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    assert_true(vfd >= 0);
    close(vfd);
    assert_int_equal(chmod(victim, 0644), 0);
    assert_int_equal(chown(victim, (uid_t)-1, 0), 0);

    struct kms_err err = {0};
    int fd = -1;
    kms_plugin_socket_bound_hook = swap_for_link;
    int rc = kms_plugin_socket_open(&o, &fd, &err);
    kms_plugin_socket_bound_hook = NULL;
    assert_int_not_equal(rc, 0);
    assert_int_equal(fd, -1);
    assert_non_null(strstr(err.msg, "replaced after the bind"));

    struct stat st;
    assert_int_equal(stat(victim, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0644);
    assert_int_equal(st.st_gid, 0);
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISLNK(st.st_mode)); /* not ours: not removed */

    assert_int_equal(unlink(path), 0);
    assert_int_equal(unlink(victim), 0);
    assert_int_equal(rmdir(dir), 0);
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_parse),
        cmocka_unit_test(test_transit_name),
        cmocka_unit_test(test_encrypt_decrypt_status),
        cmocka_unit_test(test_protocol_errors),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_request_strings),
        cmocka_unit_test(test_nul_in_request_strings),
        cmocka_unit_test(test_grpc_timeout_parse),
        cmocka_unit_test(test_deadlines_in_session),
        cmocka_unit_test(test_deadline_of_a_call_in_flight),
        cmocka_unit_test(test_deadline_of_an_incomplete_request),
        cmocka_unit_test(test_malformed_timeout_at_headers),
        cmocka_unit_test(test_stalled_answer_is_reset),
        cmocka_unit_test(test_socket_mode_and_group),
#ifdef KMS_TEST_HOOKS
        cmocka_unit_test(test_socket_mode_never_follows_a_swapped_link),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
