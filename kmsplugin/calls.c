/*
 * calls.c - Status, Encrypt and Decrypt as kube-apiserver uses them: the messages (protobuf-c;
 * requests decoded with wire.proto, responses packed with api.proto), the apiserver's limits,
 * key_id = "<label>:v<N>", the health probe (an encrypt + decrypt through the backend, its answer
 * reused for status_ttl_ms) and the mapping of backend errors to gRPC codes.
 */
#include "kmsplugin/kmsplugin_int.h"

#include "cli/cli.h"
#include "crypto/keyring.h"

#include "api.pb-c.h"
#include "wire.pb-c.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PROBE_LEN 32

int64_t kms_plugin_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t kms_plugin_mono_ms(void)
{
    return kms_plugin_mono_us() / 1000;
}

static const char *const method_paths[KMS_PLUGIN_NMETHODS] = {
    "/v2.KeyManagementService/Status",
    "/v2.KeyManagementService/Encrypt",
    "/v2.KeyManagementService/Decrypt",
};

int kms_plugin_method_of(const char *path, size_t len)
{
    for (int i = 0; i < KMS_PLUGIN_NMETHODS; i++) {
        if (strlen(method_paths[i]) == len && memcmp(method_paths[i], path, len) == 0) {
            return i;
        }
    }
    return -1;
}

const char *kms_plugin_method_name(enum kms_plugin_method m)
{
    static const char *const names[KMS_PLUGIN_NMETHODS] = {"Status", "Encrypt", "Decrypt"};
    return m < KMS_PLUGIN_NMETHODS ? names[m] : "unknown";
}

void kms_plugin_core_init(struct kms_plugin_core *c, const struct kms_plugin_backend *b,
                          int64_t status_ttl_ms)
{
    memset(c, 0, sizeof(*c));
    c->b = *b;
    c->status_ttl_ms = status_ttl_ms > 0 ? status_ttl_ms : 10000;
    c->now_ms = kms_plugin_mono_ms;
    atomic_init(&c->status_version, 0);
    atomic_init(&c->status_stale, false);
    pthread_mutex_init(&c->mu, NULL);
}

void kms_plugin_core_dispose(struct kms_plugin_core *c)
{
    pthread_mutex_destroy(&c->mu);
    if (c->b.destroy != NULL) {
        c->b.destroy(c->b.arg);
    }
    memset(c, 0, sizeof(*c));
}

/* A backend error (HTTP-style status) as a gRPC code. */
static int code_of(const struct kms_err *err)
{
    switch (err->status) {
    case 400:
    case 413:
        /* min_decryption_version refusals: the request is fine, the key's state is not */
        if (strstr(err->msg, "disallowed by policy") != NULL) {
            return KMS_GRPC_FAILED_PRECONDITION;
        }
        /* Transit's (kmsd's, Vault's) answer to a decrypt with a key that does not exist: a
         * 400, where the in-process plugin says NOT_FOUND (the sidecar answered
         * INVALID_ARGUMENT, as if the apiserver's request were at fault) */
        return strcmp(err->msg, "encryption key not found") == 0 ? KMS_GRPC_NOT_FOUND
                                                                 : KMS_GRPC_INVALID_ARGUMENT;
    case 401:
        return KMS_GRPC_UNAUTHENTICATED;
    case 403:
        return KMS_GRPC_PERMISSION_DENIED;
    case 404:
        return KMS_GRPC_NOT_FOUND;
    case 409:
    case 412:
        return KMS_GRPC_FAILED_PRECONDITION;
    case 429:
        return KMS_GRPC_RESOURCE_EXHAUSTED;
    case 502:
    case 503:
    case 504:
        return KMS_GRPC_UNAVAILABLE;
    default:
        return KMS_GRPC_INTERNAL;
    }
}

/* err's message on one line (multierror wrapping flattened), into msg. */
static void err_text(const struct kms_err *err, char *msg, size_t n)
{
    size_t j = 0;
    const char *s = err->msg;
    if (strncmp(s, "1 error occurred:", 17) == 0) {
        s += 17;
    }
    for (; *s != '\0' && j + 1 < n; s++) {
        char ch = *s;
        if (ch == '\n' || ch == '\t' || ch == '*') {
            if (j > 0 && msg[j - 1] != ' ') {
                msg[j++] = ' ';
            }
            continue;
        }
        if (ch == ' ' && (j == 0 || msg[j - 1] == ' ')) {
            continue;
        }
        msg[j++] = ch;
    }
    while (j > 0 && msg[j - 1] == ' ') {
        j--;
    }
    msg[j] = '\0';
}

static int fail(char *msg, size_t n, int code, const char *fmt, ...) KMS_PRINTF(4, 5);

static int fail(char *msg, size_t n, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, n, fmt, ap);
    va_end(ap);
    return code;
}

/*
 * A request's string fields (uid, key_id, the annotations' keys) as the apiserver sends them:
 * UTF-8 (Go's protobuf refuses anything else, and the audit record, which carries the uid, is
 * JSON text) with no NUL byte. The requests are decoded with wire.proto, api.proto's twin with
 * `bytes` for `string`, so protobuf-c gives each with its real length: decoded as api.proto's
 * C strings, "abc\0xyz" would be read as "abc". A field sent twice: protobuf-c keeps the last
 * copy (as Go's protobuf does), and only that copy is checked and ever read. An annotation is a
 * repeated entry: every one is kept and checked. 0, or 1 with why ("uid contains a NUL byte").
 */
static int bad_string(const ProtobufCBinaryData *s, const char *name, char *why, size_t n)
{
    const char *bad = NULL;
    if (s->len > 0 && memchr(s->data, '\0', s->len) != NULL) {
        bad = "contains a NUL byte";
    } else if (s->len > 0 && !kms_utf8_valid((const char *)s->data, s->len)) {
        bad = "is not UTF-8";
    }
    if (bad != NULL) {
        snprintf(why, n, "%s %s", name, bad);
        return 1;
    }
    return 0;
}

V2wire__EncryptRequest *kms_plugin_encrypt_request(const uint8_t *in, size_t len, char *why,
                                                   size_t n)
{
    why[0] = '\0';
    V2wire__EncryptRequest *req = v2wire__encrypt_request__unpack(NULL, len, in);
    if (req != NULL && bad_string(&req->uid, "uid", why, n) != 0) {
        if (req->plaintext.data != NULL) {
            kms_memzero(req->plaintext.data, req->plaintext.len);
        }
        v2wire__encrypt_request__free_unpacked(req, NULL);
        return NULL;
    }
    return req;
}

V2wire__DecryptRequest *kms_plugin_decrypt_request(const uint8_t *in, size_t len, char *why,
                                                   size_t n)
{
    why[0] = '\0';
    V2wire__DecryptRequest *req = v2wire__decrypt_request__unpack(NULL, len, in);
    if (req == NULL) {
        return NULL;
    }
    int bad = bad_string(&req->uid, "uid", why, n);
    if (bad == 0) {
        bad = bad_string(&req->key_id, "key_id", why, n);
    }
    for (size_t i = 0; bad == 0 && i < req->n_annotations; i++) {
        bad = bad_string(&req->annotations[i]->key, "annotations key", why, n);
    }
    if (bad != 0) {
        v2wire__decrypt_request__free_unpacked(req, NULL);
        return NULL;
    }
    return req;
}

/* The uid as a C string in uid[KMS_PLUGIN_UID_MAX + 1] (checked: no NUL in it), at most 1 KiB
 * (a UUID in practice; each call writes it into two audit lines). KMS_GRPC_OK, or the refusal
 * (not audited: it has no uid to record as it was sent). */
static int uid_of(const ProtobufCBinaryData *s, char *uid, char *msg, size_t n)
{
    if (s->len > KMS_PLUGIN_UID_MAX) {
        return fail(msg, n, KMS_GRPC_INVALID_ARGUMENT, "uid is %zu bytes; at most %d", s->len,
                    KMS_PLUGIN_UID_MAX);
    }
    if (s->len > 0) {
        memcpy(uid, s->data, s->len);
    }
    uid[s->len] = '\0';
    return KMS_GRPC_OK;
}

/* An INVALID_ARGUMENT refusal of a call the backend was not asked (the message from fmt): the
 * backend records it; if it cannot, INTERNAL (fail closed). */
static int refuse(struct kms_plugin_core *c, bool decrypt, const char *uid, char *msg, size_t n,
                  const char *fmt, ...) KMS_PRINTF(6, 7);

static int refuse(struct kms_plugin_core *c, bool decrypt, const char *uid, char *msg, size_t n,
                  const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, n, fmt, ap);
    va_end(ap);
    struct kms_err err;
    kms_err_clear(&err);
    if (c->b.refused != NULL &&
        c->b.refused(c->b.arg, decrypt, uid != NULL ? uid : "", msg, &err) != 0) {
        return fail(msg, n, KMS_GRPC_INTERNAL, "internal error");
    }
    return KMS_GRPC_INVALID_ARGUMENT;
}

static int backend_fail(const struct kms_err *err, char *msg, size_t n)
{
    err_text(err, msg, n);
    if (msg[0] == '\0') {
        snprintf(msg, n, "internal error");
    }
    return code_of(err);
}

static void key_id_of(const struct kms_plugin_core *c, uint32_t version, char *out, size_t n)
{
    snprintf(out, n, "%s:v%" PRIu32, c->b.label, version);
}

/* Encrypt through the backend into a checked ciphertext, its key version and key_id. */
static int wrap(struct kms_plugin_core *c, const uint8_t *pt, size_t ptlen, const char *uid,
                int64_t deadline_ms, char **ct, uint32_t *version, char *key_id, char *msg,
                size_t n)
{
    struct kms_err err;
    kms_err_clear(&err);
    *ct = NULL;
    *version = 0;
    if (c->b.encrypt(c->b.arg, pt, ptlen, uid, deadline_ms, ct, version, &err) != 0) {
        return backend_fail(&err, msg, n);
    }
    size_t len = strlen(*ct);
    uint32_t v2 = 0;
    if (len == 0 || len > KMS_PLUGIN_CIPHERTEXT_MAX ||
        kms_ciphertext_parse_version(*ct, len, &v2) != 0 || v2 != *version) {
        kms_free_wipe((void **)ct, len);
        return fail(msg, n, KMS_GRPC_INTERNAL,
                    "the key service returned a ciphertext the apiserver cannot keep");
    }
    key_id_of(c, *version, key_id, KMS_PLUGIN_KEY_ID_MAX + 1);
    return KMS_GRPC_OK;
}

/* The health probe: encrypt and decrypt PROBE_LEN random bytes through the real path. */
static void probe(struct kms_plugin_core *c, bool *healthy, char *healthz, size_t hn, char *key_id,
                  uint32_t *version)
{
    uint8_t seed[PROBE_LEN];
    char *ct = NULL;
    uint8_t *pt = NULL;
    size_t ptlen = 0;
    char msg[256];
    struct kms_err err;

    *healthy = false;
    kms_err_clear(&err);
    if (kms_rand_bytes(seed, sizeof(seed)) != 0) {
        snprintf(healthz, hn, "random number generator failed");
        return;
    }
    /* no deadline: the answer is every caller's, not only the one whose call probes */
    if (wrap(c, seed, sizeof(seed), "", KMS_PLUGIN_NO_DEADLINE, &ct, version, key_id, msg,
             sizeof(msg)) != KMS_GRPC_OK) {
        snprintf(healthz, hn, "encrypt probe failed: %s", msg);
        goto out;
    }
    if (c->b.decrypt(c->b.arg, ct, strlen(ct), *version, "", KMS_PLUGIN_NO_DEADLINE, &pt, &ptlen,
                     &err) != 0) {
        err_text(&err, msg, sizeof(msg));
        snprintf(healthz, hn, "decrypt probe failed: %s", msg);
        goto out;
    }
    if (ptlen != sizeof(seed) || !kms_ct_eq(pt, seed, sizeof(seed))) {
        snprintf(healthz, hn, "decrypt probe returned other bytes than it encrypted");
        goto out;
    }
    *healthy = true;
    snprintf(healthz, hn, "ok");
out:
    kms_memzero(seed, sizeof(seed));
    if (ct != NULL) {
        kms_free_wipe((void **)&ct, strlen(ct));
    }
    kms_free_wipe((void **)&pt, ptlen);
}

/* healthz is a protobuf string, which Go's protobuf refuses when it is not UTF-8: a whole
 * StatusResponse would be unreadable to kube-apiserver (a decoding error instead of the reason).
 * A byte that starts no well-formed sequence (a key service's error page in another charset, a
 * character cut at the end of the buffer) and a control character become '?'. */
static void text_clean(char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        uint32_t cp = 0;
        size_t len = kms_utf8_next((const unsigned char *)s + i, n - i, &cp);
        if (len == 0 || cp < 0x20 || cp == 0x7f) {
            s[i++] = '?';
        } else {
            i += len;
        }
    }
}

static int status(struct kms_plugin_core *c, uint8_t **out, size_t *outlen)
{
    V2__StatusResponse r = V2__STATUS_RESPONSE__INIT;
    char healthz[sizeof(c->healthz)];
    char key_id[KMS_PLUGIN_KEY_ID_MAX + 1];

    pthread_mutex_lock(&c->mu);
    int64_t now = kms_plugin_mono_ms();
    bool stale = atomic_exchange(&c->status_stale, false);
    if (!c->status_known || stale || now >= c->status_until) {
        /* one probe at a time; callers meanwhile wait for its answer */
        bool healthy = false;
        uint32_t version = 0;
        key_id[0] = '\0';
        probe(c, &healthy, healthz, sizeof(healthz), key_id, &version);
        c->healthy = healthy;
        snprintf(c->healthz, sizeof(c->healthz), "%s", healthz);
        text_clean(c->healthz);
        if (healthy) {
            snprintf(c->key_id, sizeof(c->key_id), "%s", key_id);
            atomic_store(&c->status_version, version);
        }
        c->status_known = true;
        /* an unhealthy answer is reused for a second at most, so recovery shows quickly */
        int64_t ttl =
            healthy ? c->status_ttl_ms : (c->status_ttl_ms < 1000 ? c->status_ttl_ms : 1000);
        c->status_until = kms_plugin_mono_ms() + ttl;
    }
    snprintf(healthz, sizeof(healthz), "%s", c->healthz);
    snprintf(key_id, sizeof(key_id), "%s", c->key_id);
    pthread_mutex_unlock(&c->mu);

    r.version = (char *)"v2";
    r.healthz = healthz;
    r.key_id = key_id;
    *outlen = v2__status_response__get_packed_size(&r);
    *out = malloc(*outlen ? *outlen : 1);
    if (*out == NULL) {
        return KMS_GRPC_RESOURCE_EXHAUSTED;
    }
    v2__status_response__pack(&r, *out);
    return KMS_GRPC_OK;
}

static int encrypt(struct kms_plugin_core *c, const uint8_t *in, size_t len, int64_t deadline_ms,
                   uint8_t **out, size_t *outlen, char *msg, size_t n)
{
    char why[128];
    V2wire__EncryptRequest *req = kms_plugin_encrypt_request(in, len, why, sizeof(why));
    V2__EncryptResponse r = V2__ENCRYPT_RESPONSE__INIT;
    char key_id[KMS_PLUGIN_KEY_ID_MAX + 1];
    char uid[KMS_PLUGIN_UID_MAX + 1];
    char *ct = NULL;
    uint32_t version = 0;
    int code;

    if (req == NULL) {
        return fail(msg, n, KMS_GRPC_INVALID_ARGUMENT, "malformed EncryptRequest message%s%s",
                    why[0] != '\0' ? ": " : "", why);
    }
    code = uid_of(&req->uid, uid, msg, n);
    if (code != KMS_GRPC_OK) {
        goto out;
    }
    if (req->plaintext.len == 0) {
        code = refuse(c, false, uid, msg, n, "plaintext is empty");
        goto out;
    }
    if (req->plaintext.len > KMS_PLUGIN_PLAINTEXT_MAX) {
        code = refuse(c, false, uid, msg, n,
                      "plaintext is %zu bytes; at most %d are accepted (a DEK seed is 32)",
                      req->plaintext.len, KMS_PLUGIN_PLAINTEXT_MAX);
        goto out;
    }
    code = wrap(c, req->plaintext.data, req->plaintext.len, uid, deadline_ms, &ct, &version, key_id,
                msg, n);
    if (code != KMS_GRPC_OK) {
        goto out;
    }
    /* a key version Status does not report yet (the key was rotated since its last probe): the
     * next Status probes again. kube-apiserver keeps a new DEK seed only when its Encrypt's
     * key_id is its Status's, so one that needs a seed (a restarted apiserver) would fail until
     * the cached answer expired (the status interval, up to an hour) */
    uint32_t reported = atomic_load(&c->status_version);
    if (reported != 0 && reported != version) {
        atomic_store(&c->status_stale, true);
    }
    r.ciphertext.data = (uint8_t *)ct;
    r.ciphertext.len = strlen(ct);
    r.key_id = key_id;
    *outlen = v2__encrypt_response__get_packed_size(&r);
    *out = malloc(*outlen);
    if (*out == NULL) {
        code = fail(msg, n, KMS_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    v2__encrypt_response__pack(&r, *out);
out:
    if (ct != NULL) {
        kms_free_wipe((void **)&ct, strlen(ct));
    }
    if (req->plaintext.data != NULL) {
        kms_memzero(req->plaintext.data, req->plaintext.len);
    }
    v2wire__encrypt_request__free_unpacked(req, NULL);
    return code;
}

/* key_id "<label>:v<N>" of this plugin's key; *version = N. */
static int parse_key_id(const struct kms_plugin_core *c, const char *key_id, uint32_t *version)
{
    size_t ll = strlen(c->b.label);
    if (strncmp(key_id, c->b.label, ll) != 0 || strncmp(key_id + ll, ":v", 2) != 0) {
        return -1;
    }
    const char *d = key_id + ll + 2;
    uint64_t v = 0;
    if (*d == '\0' || *d == '0') {
        return -1;
    }
    for (; *d != '\0'; d++) {
        if (*d < '0' || *d > '9' || v > UINT32_MAX / 10) {
            return -1;
        }
        v = v * 10 + (uint64_t)(*d - '0');
    }
    if (v == 0 || v > UINT32_MAX) {
        return -1;
    }
    *version = (uint32_t)v;
    return 0;
}

static int decrypt(struct kms_plugin_core *c, const uint8_t *in, size_t len, int64_t deadline_ms,
                   uint8_t **out, size_t *outlen, char *msg, size_t n)
{
    char why[128];
    V2wire__DecryptRequest *req = kms_plugin_decrypt_request(in, len, why, sizeof(why));
    V2__DecryptResponse r = V2__DECRYPT_RESPONSE__INIT;
    char uid[KMS_PLUGIN_UID_MAX + 1];
    char key_id[KMS_PLUGIN_KEY_ID_MAX + 1];
    uint8_t *pt = NULL;
    size_t ptlen = 0;
    uint32_t kv = 0, cv = 0;
    struct kms_err err;
    int code;

    kms_err_clear(&err);
    if (req == NULL) {
        return fail(msg, n, KMS_GRPC_INVALID_ARGUMENT, "malformed DecryptRequest message%s%s",
                    why[0] != '\0' ? ": " : "", why);
    }
    code = uid_of(&req->uid, uid, msg, n);
    if (code != KMS_GRPC_OK) {
        goto out;
    }
    const char *ct = (const char *)req->ciphertext.data;
    size_t ctlen = req->ciphertext.len;
    if (ctlen == 0) {
        code = refuse(c, true, uid, msg, n, "ciphertext is empty");
        goto out;
    }
    if (ctlen > KMS_PLUGIN_CIPHERTEXT_MAX) {
        code =
            refuse(c, true, uid, msg, n, "ciphertext is %zu bytes; the apiserver keeps at most %d",
                   ctlen, KMS_PLUGIN_CIPHERTEXT_MAX);
        goto out;
    }
    if (req->key_id.len > KMS_PLUGIN_KEY_ID_MAX) {
        code =
            refuse(c, true, uid, msg, n, "unknown key_id: this plugin serves %s:v<N>", c->b.label);
        goto out;
    }
    if (req->key_id.len > 0) {
        memcpy(key_id, req->key_id.data, req->key_id.len); /* checked: no NUL in it */
    }
    key_id[req->key_id.len] = '\0';
    if (parse_key_id(c, key_id, &kv) != 0) {
        code =
            refuse(c, true, uid, msg, n, "unknown key_id: this plugin serves %s:v<N>", c->b.label);
        goto out;
    }
    if (memchr(ct, '\0', ctlen) != NULL || kms_ciphertext_parse_version(ct, ctlen, &cv) != 0) {
        code = refuse(c, true, uid, msg, n,
                      "invalid ciphertext: not a vault:v<N>: ciphertext of this plugin");
        goto out;
    }
    if (cv != kv) {
        code = refuse(c, true, uid, msg, n,
                      "ciphertext version v%" PRIu32 " does not match key_id version v%" PRIu32, cv,
                      kv);
        goto out;
    }
    /* the backend reads a NUL-terminated copy */
    char *text = malloc(ctlen + 1);
    if (text == NULL) {
        code = fail(msg, n, KMS_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    memcpy(text, ct, ctlen);
    text[ctlen] = '\0';
    int rc = c->b.decrypt(c->b.arg, text, ctlen, cv, uid, deadline_ms, &pt, &ptlen, &err);
    free(text);
    if (rc != 0) {
        code = backend_fail(&err, msg, n);
        goto out;
    }
    r.plaintext.data = pt;
    r.plaintext.len = ptlen;
    *outlen = v2__decrypt_response__get_packed_size(&r);
    *out = malloc(*outlen ? *outlen : 1);
    if (*out == NULL) {
        code = fail(msg, n, KMS_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    v2__decrypt_response__pack(&r, *out);
    code = KMS_GRPC_OK;
out:
    kms_free_wipe((void **)&pt, ptlen);
    v2wire__decrypt_request__free_unpacked(req, NULL);
    return code;
}

int kms_plugin_call(struct kms_plugin_core *c, enum kms_plugin_method m, const uint8_t *in,
                    size_t len, int64_t deadline_ms, uint8_t **out, size_t *outlen, char *msg,
                    size_t msglen)
{
    int64_t t0 = kms_plugin_mono_us();
    int code;
    *out = NULL;
    *outlen = 0;
    msg[0] = '\0';
    if (deadline_ms != KMS_PLUGIN_NO_DEADLINE && c->now_ms() >= deadline_ms) {
        /* nobody waits for the answer any more (grpc-timeout): not run */
        kms_plugin_metrics_refused(m, KMS_GRPC_DEADLINE_EXCEEDED);
        return fail(msg, msglen, KMS_GRPC_DEADLINE_EXCEEDED,
                    "deadline exceeded before the call ran");
    }
    switch (m) {
    case KMS_PLUGIN_STATUS: {
        /* StatusRequest has no fields, but a body that is not protobuf is refused as the other
         * calls' are (unknown fields are skipped, as protobuf readers do) */
        V2__StatusRequest *req = v2__status_request__unpack(NULL, len, in);
        if (req == NULL) {
            code = fail(msg, msglen, KMS_GRPC_INVALID_ARGUMENT, "malformed StatusRequest message");
            break;
        }
        v2__status_request__free_unpacked(req, NULL);
        code = status(c, out, outlen);
        break;
    }
    case KMS_PLUGIN_ENCRYPT:
        code = encrypt(c, in, len, deadline_ms, out, outlen, msg, msglen);
        break;
    case KMS_PLUGIN_DECRYPT:
        code = decrypt(c, in, len, deadline_ms, out, outlen, msg, msglen);
        break;
    default:
        code = fail(msg, msglen, KMS_GRPC_UNIMPLEMENTED, "unknown method");
        break;
    }
    if (deadline_ms != KMS_PLUGIN_NO_DEADLINE && c->now_ms() >= deadline_ms) {
        /* the client has stopped waiting: never a late OK (nor the error of a backend call
         * the deadline cut short) */
        code = fail(msg, msglen, KMS_GRPC_DEADLINE_EXCEEDED,
                    "deadline exceeded: no answer within the call's grpc-timeout");
    }
    if (code != KMS_GRPC_OK && *out != NULL) {
        kms_free_wipe((void **)out, *outlen);
        *outlen = 0;
    }
    kms_plugin_metrics_count(m, code, kms_plugin_mono_us() - t0);
    return code;
}

/* ---- key specifications ------------------------------------------------------------------- */

static bool name_ok(const char *s, size_t n)
{
    if (n == 0) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= ' ' || ch >= 0x7f || ch == '/' || ch == ':' || ch == '?' || ch == '#' ||
            ch == '%') {
            return false;
        }
    }
    return true;
}

int kms_plugin_key_parse(const char *key, bool *is_kmskey, char *project, size_t project_len,
                         char *name, size_t name_len, struct kms_err *err)
{
    const char *slash = strchr(key, '/');
    size_t kl = strlen(key);
    if (slash == NULL) {
        if (!name_ok(key, kl) || kl >= name_len) {
            return kms_err_set(err, 400,
                               "invalid key \"%s\": a Transit key name or <project>/<name>", key);
        }
        *is_kmskey = false;
        project[0] = '\0';
        memcpy(name, key, kl + 1);
        return 0;
    }
    size_t pl = (size_t)(slash - key);
    const char *nm = slash + 1;
    size_t nl = strlen(nm);
    if (!name_ok(key, pl) || !name_ok(nm, nl) || pl >= project_len || nl >= name_len) {
        return kms_err_set(err, 400, "invalid key \"%s\": a Transit key name or <project>/<name>",
                           key);
    }
    /* a KMSKey's project and name are DNS labels (kmsctl's check, the KMSKey engine's rule) */
    char proj[KMS_CLI_NAME_MAX + 1] = "";
    if (pl < sizeof(proj)) {
        memcpy(proj, key, pl);
        proj[pl] = '\0';
    }
    if (!kms_cli_name_ok(proj) || !kms_cli_name_ok(nm)) {
        /* no KMSKey can have such a name: every call would fail */
        return kms_err_set(err, 400,
                           "invalid key \"%s\": a KMSKey's project and name are DNS labels "
                           "(lowercase letters, digits and '-', at most 63)",
                           key);
    }
    *is_kmskey = true;
    memcpy(project, key, pl);
    project[pl] = '\0';
    memcpy(name, nm, nl + 1);
    return 0;
}

int kms_plugin_transit_name(const char *ns_path, bool is_kmskey, const char *project,
                            const char *name, char *out, size_t n, struct kms_err *err)
{
    if (!is_kmskey) {
        if ((size_t)snprintf(out, n, "%s", name) >= n) {
            return kms_err_set(err, 400, "key name too long");
        }
        return 0;
    }
    size_t pl = strlen(ns_path);
    while (pl > 0 && ns_path[pl - 1] == '/') {
        pl--;
    }
    if (pl == 0) {
        return kms_err_set(err, 400,
                           "KMSKey %s/%s: KMSKeys belong to an organization namespace; give "
                           "the namespace",
                           project, name);
    }
    if (pl + strlen(project) + strlen(name) + 3 > n) {
        return kms_err_set(err, 400, "key name too long");
    }
    size_t j = 0;
    for (size_t i = 0; i < pl; i++) {
        out[j++] = ns_path[i] == '/' ? '-' : ns_path[i];
    }
    snprintf(out + j, n - j, "-%s-%s", project, name);
    return 0;
}
