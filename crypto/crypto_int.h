/*
 * crypto_int.h - helpers shared inside crypto/ and reached by its unit tests; not part of
 * the module's public interface (other folders include only crypto.h and keyring.h).
 */
#ifndef KMS_CRYPTO_INT_H
#define KMS_CRYPTO_INT_H

#include "crypto/crypto.h"

/*
 * HChaCha20 (draft-irtf-cfrg-xchacha-03 section 2.2): the ChaCha20 block function over
 * key[32] and nonce[16] without the final addition, output words 0..3 and 12..15 as a 32-byte
 * subkey. Pure function; the caller wipes out.
 */
void kms_hchacha20(const uint8_t key[32], const uint8_t nonce[16], uint8_t out[32]);

#endif
