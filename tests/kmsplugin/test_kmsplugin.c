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
    static const char *const bad[] = {"", "/x", "x/", "a/b/c", "a:b", "a b", "p/n%", NULL};
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

static void version_of(uint32_t v, struct kms_key_version *kv)
{
    memset(kv, 0, sizeof(*kv));
    kv->version = v;
    kv->key_len = 32;
    memset(kv->key, 0x20 + (int)v, 32);
}

static int kr_encrypt(void *arg, const uint8_t *pt, size_t ptlen, const char *uid, char **ct,
                      uint32_t *version, struct kms_err *err)
{
    struct kms_key_version kv;
    (void)arg;
    (void)uid;
    *version = policy.latest_version;
    version_of(*version, &kv);
    return kms_keyring_encrypt(&policy, &kv, NULL, 0, false, NULL, 0, pt, ptlen, ct, err);
}

static int kr_decrypt(void *arg, const char *ct, size_t ctlen, uint32_t version, const char *uid,
                      uint8_t **pt, size_t *ptlen, struct kms_err *err)
{
    struct kms_key_version kv;
    uint32_t v = 0;
    (void)arg;
    (void)uid;
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
};

struct client {
    uint8_t out[200000];
    size_t outlen;
    const uint8_t *req;
    size_t reqlen, off;
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
    (void)code;
    c->a.closed = true;
    return 0;
}

static ssize_t c_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                      nghttp2_data_source *src, void *ud)
{
    struct client *c = ud;
    (void)s;
    (void)id;
    (void)src;
    size_t n = c->reqlen - c->off < len ? c->reqlen - c->off : len;
    memcpy(buf, c->req + c->off, n);
    c->off += n;
    if (c->off == c->reqlen) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    }
    return (ssize_t)n;
}

/* One call: body = the gRPC body (prefix included) sent as DATA; the answer in *a. */
static void call(const char *path, const char *ctype, const uint8_t *body, size_t len,
                 struct answer *a)
{
    static struct client c;
    nghttp2_session_callbacks *cbs;
    nghttp2_session *s;
    struct kms_plugin_backend b;
    memset(&c, 0, sizeof(c));
    c.a.grpc_status = -1;
    c.req = body;
    c.reqlen = len;
    assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
    nghttp2_session_callbacks_set_send_callback(cbs, c_send);
    nghttp2_session_callbacks_set_on_header_callback(cbs, c_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, c_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, c_close);
    assert_int_equal(nghttp2_session_client_new(&s, cbs, &c), 0);
    nghttp2_session_callbacks_del(cbs);
    assert_int_equal(nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, NULL, 0), 0);
    nghttp2_nv nva[] = {
        {(uint8_t *)":method", (uint8_t *)"POST", 7, 4, 0},
        {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0},
        {(uint8_t *)":path", (uint8_t *)path, 5, strlen(path), 0},
        {(uint8_t *)":authority", (uint8_t *)"localhost", 10, 9, 0},
        {(uint8_t *)"content-type", (uint8_t *)ctype, 12, strlen(ctype), 0},
        {(uint8_t *)"te", (uint8_t *)"trailers", 2, 8, 0},
    };
    nghttp2_data_provider prd;
    prd.read_callback = c_read;
    prd.source.ptr = NULL;
    assert_true(nghttp2_submit_request(s, NULL, nva, 6, &prd, NULL) > 0);
    assert_int_equal(nghttp2_session_send(s), 0);
    backend(&b);
    uint8_t *out = NULL;
    size_t outlen = 0;
    assert_int_equal(kms_plugin_session_run(&b, c.out, c.outlen, &out, &outlen), 0);
    assert_int_equal(nghttp2_session_mem_recv(s, out, outlen), (ssize_t)outlen);
    free(out);
    nghttp2_session_del(s);
    assert_true(c.a.closed);
    *a = c.a;
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_parse),
        cmocka_unit_test(test_transit_name),
        cmocka_unit_test(test_encrypt_decrypt_status),
        cmocka_unit_test(test_protocol_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
