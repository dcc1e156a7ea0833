/*
 * aead.c - the AEAD ciphers Transit uses: AES-128/256-GCM, ChaCha20-Poly1305 and
 * XChaCha20-Poly1305, all with 16-byte tags appended to the ciphertext.
 *
 * Design notes:
 * - AES-GCM and ChaCha20-Poly1305 (RFC 8439) go straight to OpenSSL's EVP interface.
 * - OpenSSL 3 has no XChaCha20-Poly1305, so it is built as draft-irtf-cfrg-xchacha-03 defines
 *   it: subkey = HChaCha20(key, nonce[0:16]), then IETF ChaCha20-Poly1305 under that subkey
 *   with the 12-byte nonce 00000000 || nonce[16:24]. HChaCha20 is the ChaCha20 block function
 *   without the final feed-forward addition, keeping words 0..3 and 12..15. The subkey is
 *   wiped on every path.
 * - Open never releases unverified plaintext: on any failure the output is wiped and a bare
 *   -1 is returned, so callers cannot tell which check failed.
 */
#include "crypto/crypto.h"
#include "crypto/crypto_int.h"

#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

size_t kms_aead_key_len(enum kms_aead a)
{
    switch (a) {
    case KMS_AEAD_AES128_GCM:
        return 16;
    case KMS_AEAD_AES256_GCM:
    case KMS_AEAD_CHACHA20_POLY1305:
    case KMS_AEAD_XCHACHA20_POLY1305:
        return 32;
    }
    return 0;
}

size_t kms_aead_nonce_len(enum kms_aead a)
{
    switch (a) {
    case KMS_AEAD_AES128_GCM:
    case KMS_AEAD_AES256_GCM:
    case KMS_AEAD_CHACHA20_POLY1305:
        return 12;
    case KMS_AEAD_XCHACHA20_POLY1305:
        return 24;
    }
    return 0;
}

/* ---- HChaCha20 --------------------------------------------------------------------------- */

static uint32_t load32_le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void store32_le(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t rotl32(uint32_t v, int n)
{
    return (v << n) | (v >> (32 - n));
}

/* The ChaCha quarter round on words a, b, c, d of the state. */
static void quarter_round(uint32_t x[16], size_t a, size_t b, size_t c, size_t d)
{
    x[a] += x[b];
    x[d] = rotl32(x[d] ^ x[a], 16);
    x[c] += x[d];
    x[b] = rotl32(x[b] ^ x[c], 12);
    x[a] += x[b];
    x[d] = rotl32(x[d] ^ x[a], 8);
    x[c] += x[d];
    x[b] = rotl32(x[b] ^ x[c], 7);
}

void kms_hchacha20(const uint8_t key[32], const uint8_t nonce[16], uint8_t out[32])
{
    uint32_t x[16];

    x[0] = 0x61707865; /* "expand 32-byte k" */
    x[1] = 0x3320646e;
    x[2] = 0x79622d32;
    x[3] = 0x6b206574;
    for (size_t i = 0; i < 8; i++)
        x[4 + i] = load32_le(key + 4 * i);
    for (size_t i = 0; i < 4; i++)
        x[12 + i] = load32_le(nonce + 4 * i);
    for (int r = 0; r < 10; r++) {
        quarter_round(x, 0, 4, 8, 12);
        quarter_round(x, 1, 5, 9, 13);
        quarter_round(x, 2, 6, 10, 14);
        quarter_round(x, 3, 7, 11, 15);
        quarter_round(x, 0, 5, 10, 15);
        quarter_round(x, 1, 6, 11, 12);
        quarter_round(x, 2, 7, 8, 13);
        quarter_round(x, 3, 4, 9, 14);
    }
    for (size_t i = 0; i < 4; i++) {
        store32_le(out + 4 * i, x[i]);
        store32_le(out + 16 + 4 * i, x[12 + i]);
    }
    kms_memzero(x, sizeof(x));
}

/* ---- EVP --------------------------------------------------------------------------------- */

/* The ciphers, fetched once per process (an implicit fetch per EVP_CipherInit_ex showed up in
 * every profile); they live as long as the process. */
static EVP_CIPHER *cipher_cache[3];
static pthread_once_t cipher_once = PTHREAD_ONCE_INIT;

static void cipher_fetch(void)
{
    cipher_cache[0] = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
    cipher_cache[1] = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    cipher_cache[2] = EVP_CIPHER_fetch(NULL, "ChaCha20-Poly1305", NULL);
}

static const EVP_CIPHER *evp_cipher(enum kms_aead a)
{
    pthread_once(&cipher_once, cipher_fetch);
    switch (a) {
    case KMS_AEAD_AES128_GCM:
        return cipher_cache[0];
    case KMS_AEAD_AES256_GCM:
        return cipher_cache[1];
    case KMS_AEAD_CHACHA20_POLY1305:
    case KMS_AEAD_XCHACHA20_POLY1305:
        return cipher_cache[2];
    }
    return NULL;
}

/*
 * Per-thread cipher contexts keyed by (cipher, direction, key): the key schedule (AES key
 * expansion, GHASH tables) is computed once per key, and each operation only sets the nonce.
 * A thread keeps CTX_SLOTS keys, least recently used out; keys are compared in constant time,
 * and a slot's key copy and context are wiped when it is replaced or the thread ends. The keys
 * are the ones the key cache already holds in memory, for as long as the thread serves them.
 *
 * Every thread's cache is also in a registry, so kms_aead_forget_all can wipe them all at once
 * when keys leave storage (a deleted or trimmed key must not stay in memory in some worker's
 * context until that worker happens to evict it). A cache's mutex is held by its thread for
 * the length of one operation and by a forget; neither ever waits for the other for long, and
 * the lock order is reg_mu, then a cache's mu.
 */
#define CTX_SLOTS 8

struct ctx_slot {
    EVP_CIPHER_CTX *ctx;
    const EVP_CIPHER *cipher;
    int enc;
    size_t keylen;
    uint64_t used; /* 0 = empty */
    uint8_t key[32];
};

struct ctx_cache {
    pthread_mutex_t mu;
    struct ctx_cache *prev, *next; /* the registry, under reg_mu */
    uint64_t clock;
    struct ctx_slot s[CTX_SLOTS];
};

static pthread_key_t ctx_key;
static pthread_once_t ctx_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct ctx_cache *reg_head;

static void slot_clear(struct ctx_slot *sl)
{
    EVP_CIPHER_CTX_free(sl->ctx); /* cleanses the key schedule */
    kms_memzero(sl, sizeof(*sl));
}

static void ctx_cache_free(void *p)
{
    struct ctx_cache *c = p;
    pthread_mutex_lock(&reg_mu);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        reg_head = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    pthread_mutex_unlock(&reg_mu);
    for (size_t i = 0; i < CTX_SLOTS; i++)
        slot_clear(&c->s[i]);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static void ctx_init(void)
{
    (void)pthread_key_create(&ctx_key, ctx_cache_free);
}

void kms_aead_forget_all(void)
{
    pthread_mutex_lock(&reg_mu);
    for (struct ctx_cache *c = reg_head; c != NULL; c = c->next) {
        pthread_mutex_lock(&c->mu);
        for (size_t i = 0; i < CTX_SLOTS; i++)
            if (c->s[i].used != 0)
                slot_clear(&c->s[i]);
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_unlock(&reg_mu);
}

bool kms_aead_key_cached(const uint8_t *key, size_t keylen)
{
    bool found = false;
    pthread_mutex_lock(&reg_mu);
    for (struct ctx_cache *c = reg_head; c != NULL; c = c->next) {
        pthread_mutex_lock(&c->mu);
        for (size_t i = 0; i < CTX_SLOTS; i++)
            found |= c->s[i].used != 0 && c->s[i].keylen == keylen &&
                     CRYPTO_memcmp(c->s[i].key, key, keylen) == 0;
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_unlock(&reg_mu);
    return found;
}

/* This thread's cache, registered on first use; NULL when out of memory. */
static struct ctx_cache *ctx_cache_self(void)
{
    pthread_once(&ctx_once, ctx_init);
    struct ctx_cache *c = pthread_getspecific(ctx_key);
    if (c != NULL)
        return c;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    if (pthread_mutex_init(&c->mu, NULL) != 0) {
        free(c);
        return NULL;
    }
    if (pthread_setspecific(ctx_key, c) != 0) {
        pthread_mutex_destroy(&c->mu);
        free(c);
        return NULL;
    }
    pthread_mutex_lock(&reg_mu);
    c->next = reg_head;
    if (reg_head != NULL)
        reg_head->prev = c;
    reg_head = c;
    pthread_mutex_unlock(&reg_mu);
    return c;
}

/*
 * A context of this thread holding (cipher, enc, key), with *owner's mutex held until the
 * caller unlocks it; or NULL, nothing held (then use a fresh context).
 */
static struct ctx_slot *ctx_get(const EVP_CIPHER *cipher, int enc, const uint8_t *key,
                                size_t keylen, struct ctx_cache **owner)
{
    struct ctx_cache *c = ctx_cache_self();
    if (c == NULL)
        return NULL;
    pthread_mutex_lock(&c->mu);
    struct ctx_slot *victim = &c->s[0];
    for (size_t i = 0; i < CTX_SLOTS; i++) {
        struct ctx_slot *sl = &c->s[i];
        if (sl->used != 0 && sl->cipher == cipher && sl->enc == enc && sl->keylen == keylen &&
            CRYPTO_memcmp(sl->key, key, keylen) == 0) {
            sl->used = ++c->clock;
            *owner = c;
            return sl;
        }
        if (sl->used < victim->used)
            victim = sl;
    }
    /* The victim's context is re-keyed when it already runs this cipher and direction (the
     * new key schedule overwrites the old one: no free, allocation and cipher set-up per
     * evicted key, which random keys pay on every operation); else it is rebuilt. */
    bool rekey = victim->used != 0 && victim->ctx != NULL && victim->cipher == cipher &&
                 victim->enc == enc && victim->keylen == keylen;
    if (!rekey) {
        slot_clear(victim);
        victim->ctx = EVP_CIPHER_CTX_new();
    } else {
        kms_memzero(victim->key, sizeof(victim->key));
        victim->used = 0;
    }
    if (victim->ctx == NULL ||
        (!rekey && (EVP_CipherInit_ex(victim->ctx, cipher, NULL, NULL, NULL, enc) != 1 ||
                    EVP_CIPHER_CTX_ctrl(victim->ctx, EVP_CTRL_AEAD_SET_IVLEN, 12, NULL) != 1)) ||
        EVP_CipherInit_ex(victim->ctx, NULL, NULL, key, NULL, enc) != 1) {
        slot_clear(victim);
        pthread_mutex_unlock(&c->mu);
        return NULL;
    }
    victim->cipher = cipher;
    victim->enc = enc;
    victim->keylen = keylen;
    memcpy(victim->key, key, keylen);
    victim->used = ++c->clock;
    *owner = c;
    return victim;
}

/*
 * One EVP AEAD pass with a 12-byte nonce. Seal (enc = 1) writes the tag to tag_out; open
 * (enc = 0) checks tag_in. Returns 0 only when the operation (and, for open, the tag) succeeds.
 * `cached`: the key may be kept in this thread's context cache (not for per-message subkeys).
 */
static int evp_aead(const EVP_CIPHER *cipher, int enc, const uint8_t *key, size_t keylen,
                    bool cached, const uint8_t *nonce, const uint8_t *aad, size_t aadlen,
                    const uint8_t *in, size_t inlen, uint8_t *out, uint8_t *tag_out,
                    const uint8_t *tag_in)
{
    EVP_CIPHER_CTX *ctx = NULL;
    struct ctx_slot *slot = NULL;
    struct ctx_cache *owner = NULL;
    uint8_t tag[KMS_AEAD_TAG_LEN];
    uint8_t fin[32];
    int len = 0;
    int rc = -1;

    if (inlen > INT_MAX || aadlen > INT_MAX)
        goto out;
    if (cached)
        slot = ctx_get(cipher, enc, key, keylen, &owner);
    if (slot != NULL) {
        ctx = slot->ctx;
        if (EVP_CipherInit_ex(ctx, NULL, NULL, NULL, nonce, enc) != 1)
            goto out;
    } else {
        ctx = EVP_CIPHER_CTX_new();
        if (ctx == NULL)
            goto out;
        if (EVP_CipherInit_ex(ctx, cipher, NULL, NULL, NULL, enc) != 1)
            goto out;
        if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_IVLEN, 12, NULL) != 1)
            goto out;
        if (EVP_CipherInit_ex(ctx, NULL, NULL, key, nonce, enc) != 1)
            goto out;
    }
    if (aadlen > 0 && EVP_CipherUpdate(ctx, NULL, &len, aad, (int)aadlen) != 1)
        goto out;
    if (inlen > 0 && EVP_CipherUpdate(ctx, out, &len, in, (int)inlen) != 1)
        goto out;
    if (!enc) {
        memcpy(tag, tag_in, sizeof(tag));
        if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, KMS_AEAD_TAG_LEN, tag) != 1)
            goto out;
    }
    /* Both ciphers are stream-like: Final emits no bytes, only the tag work. */
    if (EVP_CipherFinal_ex(ctx, fin, &len) != 1 || len != 0)
        goto out;
    if (enc) {
        if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, KMS_AEAD_TAG_LEN, tag) != 1)
            goto out;
        memcpy(tag_out, tag, sizeof(tag));
    }
    rc = 0;
out:
    if (slot == NULL) {
        EVP_CIPHER_CTX_free(ctx);
    } else {
        if (rc != 0)
            slot_clear(slot); /* a context in an unknown state is not reused */
        pthread_mutex_unlock(&owner->mu);
    }
    return rc;
}

/* Resolve the EVP key and 12-byte nonce for a; XChaCha derives its subkey into subkey. */
static void aead_prepare(enum kms_aead a, const uint8_t *key, const uint8_t *nonce,
                         uint8_t subkey[32], uint8_t nonce12[12], const uint8_t **k,
                         const uint8_t **n)
{
    if (a == KMS_AEAD_XCHACHA20_POLY1305) {
        kms_hchacha20(key, nonce, subkey);
        memset(nonce12, 0, 4);
        memcpy(nonce12 + 4, nonce + 16, 8);
        *k = subkey;
        *n = nonce12;
    } else {
        *k = key;
        *n = nonce;
    }
}

int kms_aead_seal(enum kms_aead a, const uint8_t *key, const uint8_t *nonce, const uint8_t *aad,
                  size_t aadlen, const uint8_t *pt, size_t ptlen, uint8_t *out)
{
    const EVP_CIPHER *cipher = evp_cipher(a);
    uint8_t subkey[32];
    uint8_t nonce12[12];
    const uint8_t *k = NULL, *n = NULL;
    int rc = -1;

    if (cipher == NULL)
        goto out;
    aead_prepare(a, key, nonce, subkey, nonce12, &k, &n);
    if (evp_aead(cipher, 1, k, kms_aead_key_len(a), a != KMS_AEAD_XCHACHA20_POLY1305, n, aad,
                 aadlen, pt, ptlen, out, out + ptlen, NULL) != 0) {
        kms_memzero(out, ptlen + KMS_AEAD_TAG_LEN);
        goto out;
    }
    rc = 0;
out:
    kms_memzero(subkey, sizeof(subkey));
    return rc;
}

int kms_aead_open(enum kms_aead a, const uint8_t *key, const uint8_t *nonce, const uint8_t *aad,
                  size_t aadlen, const uint8_t *in, size_t inlen, uint8_t *out)
{
    const EVP_CIPHER *cipher = evp_cipher(a);
    uint8_t subkey[32];
    uint8_t nonce12[12];
    const uint8_t *k = NULL, *n = NULL;
    size_t ctlen = 0;
    int rc = -1;

    if (cipher == NULL || inlen < KMS_AEAD_TAG_LEN)
        goto out;
    ctlen = inlen - KMS_AEAD_TAG_LEN;
    aead_prepare(a, key, nonce, subkey, nonce12, &k, &n);
    if (evp_aead(cipher, 0, k, kms_aead_key_len(a), a != KMS_AEAD_XCHACHA20_POLY1305, n, aad,
                 aadlen, in, ctlen, out, NULL, in + ctlen) != 0)
        goto out;
    rc = 0;
out:
    if (rc != 0)
        kms_memzero(out, ctlen);
    kms_memzero(subkey, sizeof(subkey));
    return rc;
}
