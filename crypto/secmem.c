/*
 * secmem.c - memory for unwrapped key material: OpenSSL's secure heap (mlock'ed, excluded
 * from core dumps, guard pages) when kms_secmem_init succeeded, plain zeroed heap memory
 * otherwise (e.g. when RLIMIT_MEMLOCK is too small). Either way, frees wipe first.
 *
 * kmsd's own allocations (key cache entries, ~2.7 KB each) take at most half of the secure
 * heap and go to the ordinary heap past that: OpenSSL allocates private keys' big numbers
 * there too (BN_secure_new for RSA, the raw keys of Ed25519/X25519) and has no fallback, so a
 * key cache that filled the heap made every RSA decrypt and sign fail (500) once ~750 keys
 * were cached.
 */
#include "crypto/crypto.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <stdlib.h>

static int secure_ready;
static size_t secure_size; /* bytes in the secure heap */

int kms_secmem_init(size_t heap_size)
{
    /* minsize 32: key records are small; the heap size must be a power of two */
    size_t size = 1;
    while (size < heap_size) {
        size <<= 1;
    }
    secure_ready = CRYPTO_secure_malloc_init(size, 32) == 1;
    secure_size = secure_ready ? size : 0;
    return secure_ready ? 0 : -1;
}

bool kms_secmem_locked(void)
{
    return secure_ready && CRYPTO_secure_malloc_initialized();
}

void *kms_secmem_alloc(size_t n)
{
    /* the other half stays for OpenSSL (a race between two threads may overshoot by one) */
    if (secure_ready && CRYPTO_secure_used() + n <= secure_size / 2) {
        ERR_set_mark(); /* a full heap leaves no error on the thread's queue */
        void *p = OPENSSL_secure_zalloc(n);
        ERR_pop_to_mark();
        if (p != NULL) {
            return p;
        }
    }
    return calloc(1, n);
}

void kms_secmem_free(void *p, size_t n)
{
    if (p == NULL) {
        return;
    }
    if (secure_ready && CRYPTO_secure_allocated(p)) {
        OPENSSL_secure_clear_free(p, n);
        return;
    }
    kms_memzero(p, n);
    free(p);
}
