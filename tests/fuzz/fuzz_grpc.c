/*
 * fuzz_grpc.c - the KMS plugin's request path on arbitrary client bytes: the HTTP/2 server
 * session (libnghttp2), the gRPC framing, the protobuf-c messages and the plugin calls
 * (kms_plugin_session_run, grpc-timeout deadlines on a clock the input moves on), with a
 * backend over the real keyring (one aes256-gcm96 key of fixed material, versions 1..3,
 * min_decryption_version 2). Never a crash or a leak; whatever the server writes is valid
 * HTTP/2 framing (9-byte frame headers adding up to its length).
 */
#include "crypto/keyring.h"
#include "kmsplugin/kmsplugin.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct kms_key_policy policy;

static void version_of(uint32_t v, struct kms_key_version *kv)
{
    memset(kv, 0, sizeof(*kv));
    kv->version = v;
    kv->key_len = 32;
    memset(kv->key, 0x11 * (int)v, 32); /* version 1: the corpus's key */
}

static int fz_encrypt(void *arg, const uint8_t *pt, size_t ptlen, const char *uid,
                      int64_t deadline_ms, char **ct, uint32_t *version, struct kms_err *err)
{
    (void)deadline_ms;
    struct kms_key_version kv;
    (void)arg;
    (void)uid;
    *version = policy.latest_version;
    version_of(*version, &kv);
    return kms_keyring_encrypt(&policy, &kv, NULL, 0, false, NULL, 0, pt, ptlen, ct, err);
}

static int fz_decrypt(void *arg, const char *ct, size_t ctlen, uint32_t version, const char *uid,
                      int64_t deadline_ms, uint8_t **pt, size_t *ptlen, struct kms_err *err)
{
    (void)deadline_ms;
    struct kms_key_version kv;
    uint32_t v = 0;
    (void)arg;
    (void)uid;
    if (kms_keyring_ciphertext_version(&policy, ct, ctlen, &v, err) != 0) {
        return -1;
    }
    if (v != version) {
        abort(); /* the plugin checked key_id against the ciphertext's version */
    }
    version_of(v, &kv);
    return kms_keyring_decrypt(&policy, &kv, ct, ctlen, NULL, 0, false, NULL, 0, pt, ptlen, err);
}

static const uint8_t preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/* The clock of deadlines (grpc-timeout): it moves on by fz_step ms at every reading, fz_step
 * being the input's last byte (0 to 255; a byte the session mostly tolerates changing), so
 * that deadlines pass mid-stream as the input decides: between a request's HEADERS and its
 * end, while its call runs, before kms_h2_expire looks at the requests left incomplete. Each
 * input starts it at the same time, so a run is repeatable. */
static int64_t fz_t, fz_step;

static int64_t fz_now(void)
{
    int64_t t = fz_t;
    fz_t += fz_step;
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kms_plugin_backend b;
    uint8_t *out = NULL, *in = NULL;
    size_t outlen = 0;

    if (kms_key_policy_init(&policy, KMS_KEY_AES256_GCM96) != 0) {
        abort();
    }
    policy.latest_version = 3;
    policy.min_decryption_version = 1 + (size > 0 ? data[0] % 2 : 0);
    fz_t = 1000000;
    fz_step = size > 0 ? data[size - 1] : 0;
    memset(&b, 0, sizeof(b));
    memcpy(b.label, "transit/keys/fuzz", sizeof("transit/keys/fuzz"));
    b.encrypt = fz_encrypt;
    b.decrypt = fz_decrypt;
    /* inputs without the client preface get it, so the fuzzer spends its time on frames */
    size_t pl = sizeof(preface) - 1;
    bool has = size >= pl && memcmp(data, preface, pl) == 0;
    in = malloc(size + pl + 1);
    if (in == NULL) {
        return 0;
    }
    if (!has) {
        memcpy(in, preface, pl);
    }
    if (size > 0) {
        memcpy(in + (has ? 0 : pl), data, size);
    }
    int rc = kms_plugin_session_run(&b, fz_now, in, size + (has ? 0 : pl), &out, &outlen);
    free(in);
    if (rc < 0) {
        return 0;
    }
    /* the server's bytes are whole frames */
    size_t off = 0;
    while (off + 9 <= outlen) {
        size_t flen = (size_t)out[off] << 16 | (size_t)out[off + 1] << 8 | out[off + 2];
        off += 9 + flen;
    }
    if (off != outlen) {
        abort();
    }
    free(out);
    return 0;
}
