/*
 * secmem.c - memory for unwrapped key material: OpenSSL's secure heap (mlock'ed, excluded
 * from core dumps, guard pages) when kms_secmem_init succeeded, plain zeroed heap memory
 * otherwise (e.g. when RLIMIT_MEMLOCK is too small). Either way, frees wipe first.
 */
#include "crypto/crypto.h"

#include <openssl/crypto.h>
#include <stdlib.h>

static int secure_ready;

int kms_secmem_init(size_t heap_size)
{
    /* minsize 32: key records are small; the heap size must be a power of two */
    size_t size = 1;
    while (size < heap_size) {
        size <<= 1;
    }
    secure_ready = CRYPTO_secure_malloc_init(size, 32) == 1;
    return secure_ready ? 0 : -1;
}

bool kms_secmem_locked(void)
{
    return secure_ready && CRYPTO_secure_malloc_initialized();
}

void *kms_secmem_alloc(size_t n)
{
    if (secure_ready) {
        void *p = OPENSSL_secure_zalloc(n);
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
