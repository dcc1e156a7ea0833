/*
 * aead_stream.c - incremental AEAD and hashing for data too large to hold in memory (kmsctl's
 * envelope encryption streams many-GiB files through fixed buffers).
 *
 * Design notes:
 * - The output is byte-identical to the one-shot kms_aead_seal: ciphertext || 16-byte tag, so
 *   a file written in chunks opens with kms_aead_open, Go's gcm.Open or Python's AESGCM.
 * - Only the ciphers EVP can stream are offered (AES-GCM, ChaCha20-Poly1305). XChaCha20 would
 *   need the HChaCha20 subkey kept alive for the whole stream; nobody needs it yet.
 * - Decryption necessarily emits plaintext before the tag is checked. The contract comment in
 *   crypto.h makes the caller responsible for discarding it when open_final fails.
 * - Hash streams take the same names as kms_hash (Vault's "sha2-256"), which OpenSSL 3 also
 *   knows as algorithm aliases.
 */
#include "crypto/crypto.h"
#include "crypto/crypto_int.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

struct kms_aead_stream {
    EVP_CIPHER_CTX *ctx;
    bool encrypt;
    bool done;
};

struct kms_hash_stream {
    EVP_MD_CTX *ctx;
    enum kms_hash h;
};

static const EVP_CIPHER *stream_cipher(enum kms_aead a)
{
    switch (a) {
    case KMS_AEAD_AES128_GCM:
        return EVP_aes_128_gcm();
    case KMS_AEAD_AES256_GCM:
        return EVP_aes_256_gcm();
    case KMS_AEAD_CHACHA20_POLY1305:
        return EVP_chacha20_poly1305();
    case KMS_AEAD_XCHACHA20_POLY1305:
        break;
    }
    return NULL;
}

int kms_aead_stream_create(enum kms_aead a, bool encrypt, const uint8_t *key, const uint8_t *nonce,
                           const uint8_t *aad, size_t aadlen, struct kms_aead_stream **out)
{
    const EVP_CIPHER *cipher = stream_cipher(a);
    struct kms_aead_stream *s = NULL;
    int rc = -1;
    int outl = 0;

    *out = NULL;
    if (cipher == NULL || aadlen > INT_MAX) {
        goto out;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL || (s->ctx = EVP_CIPHER_CTX_new()) == NULL) {
        goto out;
    }
    s->encrypt = encrypt;
    if (EVP_CipherInit_ex(s->ctx, cipher, NULL, NULL, NULL, encrypt ? 1 : 0) != 1 ||
        EVP_CIPHER_CTX_ctrl(s->ctx, EVP_CTRL_AEAD_SET_IVLEN, (int)kms_aead_nonce_len(a), NULL) !=
            1 ||
        EVP_CipherInit_ex(s->ctx, NULL, NULL, key, nonce, encrypt ? 1 : 0) != 1) {
        goto out;
    }
    if (aadlen > 0 && EVP_CipherUpdate(s->ctx, NULL, &outl, aad, (int)aadlen) != 1) {
        goto out;
    }
    *out = s;
    s = NULL;
    rc = 0;
out:
    kms_aead_stream_destroy(&s);
    return rc;
}

int kms_aead_stream_update(struct kms_aead_stream *s, const uint8_t *in, size_t n, uint8_t *out)
{
    if (s->done) {
        return -1;
    }
    /* EVP counts in int; feed large buffers in slices */
    while (n > 0) {
        int chunk = n > (size_t)(INT_MAX / 2) ? INT_MAX / 2 : (int)n;
        int outl = 0;
        if (EVP_CipherUpdate(s->ctx, out, &outl, in, chunk) != 1 || outl != chunk) {
            s->done = true;
            return -1;
        }
        in += chunk;
        out += chunk;
        n -= (size_t)chunk;
    }
    return 0;
}

int kms_aead_stream_seal_final(struct kms_aead_stream *s, uint8_t tag[KMS_AEAD_TAG_LEN])
{
    uint8_t last[32];
    int outl = 0;
    int rc = -1;
    if (s->done || !s->encrypt) {
        goto out;
    }
    s->done = true;
    /* GCM and ChaCha20-Poly1305 are stream modes: Final emits no bytes */
    if (EVP_CipherFinal_ex(s->ctx, last, &outl) != 1 || outl != 0 ||
        EVP_CIPHER_CTX_ctrl(s->ctx, EVP_CTRL_AEAD_GET_TAG, KMS_AEAD_TAG_LEN, tag) != 1) {
        goto out;
    }
    rc = 0;
out:
    kms_memzero(last, sizeof(last));
    return rc;
}

int kms_aead_stream_open_final(struct kms_aead_stream *s, const uint8_t tag[KMS_AEAD_TAG_LEN])
{
    uint8_t last[32];
    uint8_t t[KMS_AEAD_TAG_LEN];
    int outl = 0;
    int rc = -1;
    if (s->done || s->encrypt) {
        goto out;
    }
    s->done = true;
    memcpy(t, tag, sizeof(t));
    if (EVP_CIPHER_CTX_ctrl(s->ctx, EVP_CTRL_AEAD_SET_TAG, KMS_AEAD_TAG_LEN, t) != 1 ||
        EVP_CipherFinal_ex(s->ctx, last, &outl) != 1 || outl != 0) {
        goto out;
    }
    rc = 0;
out:
    kms_memzero(last, sizeof(last));
    return rc;
}

void kms_aead_stream_destroy(struct kms_aead_stream **sp)
{
    struct kms_aead_stream *s = *sp;
    if (s == NULL) {
        return;
    }
    EVP_CIPHER_CTX_free(s->ctx); /* cleanses the key schedule */
    free(s);
    *sp = NULL;
}

/* ---- hashes ------------------------------------------------------------------------------ */

int kms_hash_stream_create(enum kms_hash h, struct kms_hash_stream **out)
{
    struct kms_hash_stream *s = NULL;
    const EVP_MD *md = NULL;
    int rc = -1;

    *out = NULL;
    s = calloc(1, sizeof(*s));
    if (s == NULL || (s->ctx = EVP_MD_CTX_new()) == NULL) {
        goto out;
    }
    s->h = h;
    md = kms_hash_evp_md(h);
    if (md == NULL || EVP_DigestInit_ex(s->ctx, md, NULL) != 1) {
        goto out;
    }
    *out = s;
    s = NULL;
    rc = 0;
out:
    kms_hash_stream_destroy(&s);
    return rc;
}

int kms_hash_stream_update(struct kms_hash_stream *s, const void *in, size_t n)
{
    return n == 0 || EVP_DigestUpdate(s->ctx, in, n) == 1 ? 0 : -1;
}

int kms_hash_stream_final(struct kms_hash_stream *s, uint8_t *out)
{
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(s->ctx, out, &len) != 1 || len != kms_hash_len(s->h)) {
        return -1;
    }
    return 0;
}

int kms_hash_stream_reset(struct kms_hash_stream *s)
{
    const EVP_MD *md = kms_hash_evp_md(s->h);
    return md != NULL && EVP_DigestInit_ex(s->ctx, md, NULL) == 1 ? 0 : -1;
}

void kms_hash_stream_destroy(struct kms_hash_stream **sp)
{
    struct kms_hash_stream *s = *sp;
    if (s == NULL) {
        return;
    }
    EVP_MD_CTX_free(s->ctx);
    free(s);
    *sp = NULL;
}
