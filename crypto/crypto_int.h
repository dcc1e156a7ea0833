/*
 * crypto_int.h - helpers shared inside crypto/ and reached by its unit tests; not part of
 * the module's public interface (other folders include only crypto.h and keyring.h).
 */
#ifndef KMS_CRYPTO_INT_H
#define KMS_CRYPTO_INT_H

#include "crypto/crypto.h"
#include "crypto/keyring.h"

/*
 * HChaCha20 (draft-irtf-cfrg-xchacha-03 section 2.2): the ChaCha20 block function over
 * key[32] and nonce[16] without the final addition, output words 0..3 and 12..15 as a 32-byte
 * subkey. Pure function; the caller wipes out.
 */
void kms_hchacha20(const uint8_t key[32], const uint8_t nonce[16], uint8_t out[32]);

/* The digest of h, fetched once per process (never freed); NULL when unknown. */
struct evp_md_st;
const struct evp_md_st *kms_hash_evp_md(enum kms_hash h);

/* OpenSSL's digest name for h ("SHA2-256"); NULL when unknown. */
const char *kms_hash_ossl_name(enum kms_hash h);

/* ---- asymmetric key versions (sign.c), used by keyring.c -------------------------------- */

/*
 * Generate the material of a new ed25519, ECDSA or RSA version in OpenSSL into key
 * (KMS_KEY_MATERIAL_MAX bytes, layout in keyring.h) and its length into *key_len.
 */
int kms_asym_generate(enum kms_key_type t, uint8_t *key, uint32_t *key_len) KMS_WUR;

/*
 * RSA-OAEP (SHA-256 digest and MGF1, empty label) with an rsa-* version: encrypt (enc) or
 * decrypt `in`. *out is malloc'd (exactly *outlen bytes). Errors are OpenBao's 500s: "failed
 * to RSA encrypt the plaintext: crypto/rsa: message too long for RSA key size", "failed to
 * RSA decrypt the ciphertext: crypto/rsa: decryption error".
 */
int kms_asym_rsa_oaep(enum kms_key_type t, const struct kms_key_version *kv, bool enc,
                      const uint8_t *in, size_t inlen, uint8_t **out, size_t *outlen,
                      struct kms_err *err) KMS_WUR;

/*
 * The EVP_PKEY of a well-formed ed25519, ECDSA or RSA version (public only unless priv), for
 * the other files of crypto/. Caller frees with EVP_PKEY_free.
 */
struct evp_pkey_st;
int kms_asym_version_pkey(enum kms_key_type t, const struct kms_key_version *kv, bool priv,
                          struct evp_pkey_st **out) KMS_WUR;

#endif
