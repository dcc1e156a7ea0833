/*
 * keyring.h - a Transit key: its policy (type, flags, version floors) and the operations on
 * its versions (encrypt, decrypt, derivation, convergent nonces, version checks, config, trim).
 *
 * This is kmsd's counterpart of OpenBao's sdk/helper/keysutil. It knows nothing of JSON, HTTP
 * or storage: callers load a policy and the key versions it needs and pass them in. Records
 * are persisted through the binary encoders below. Error messages are OpenBao's exact
 * user-visible strings; statuses are those of the Transit HTTP contract.
 */
#ifndef KMS_KEYRING_H
#define KMS_KEYRING_H

#include "crypto/crypto.h"

enum kms_key_type {
    KMS_KEY_AES128_GCM96,
    KMS_KEY_AES256_GCM96,
    KMS_KEY_CHACHA20_POLY1305,
    KMS_KEY_XCHACHA20_POLY1305,
};

/* "aes256-gcm96" etc. -> type; -1 when unknown. */
int kms_key_type_parse(const char *name, enum kms_key_type *out) KMS_WUR;
const char *kms_key_type_name(enum kms_key_type t);
/* Key length in bytes for the type (16 or 32). */
size_t kms_key_type_key_len(enum kms_key_type t);
enum kms_aead kms_key_type_aead(enum kms_key_type t);

#define KMS_KEY_CONVERGENT_VERSION 3

struct kms_key_policy {
    enum kms_key_type type;
    bool derived;
    bool convergent;
    bool exportable;             /* one-way latch */
    bool allow_plaintext_backup; /* one-way latch */
    bool deletion_allowed;
    uint32_t latest_version;
    uint32_t min_decryption_version; /* >= 1 */
    uint32_t min_encryption_version; /* 0 = no floor */
    uint32_t min_available_version;  /* 0 = nothing trimmed */
    int64_t auto_rotate_period;      /* seconds, 0 = off */
    int64_t created_sec;             /* creation of the key (version 1) */
    char uuid[37];                   /* random per key, never reused */
};

struct kms_key_version {
    uint32_t version;
    uint8_t key[32];      /* first kms_key_type_key_len() bytes used */
    uint8_t hmac_key[32]; /* independent HMAC key of this version */
    int64_t created_sec;
    int32_t created_nsec;
    int convergent_version; /* KMS_KEY_CONVERGENT_VERSION for convergent keys, else 0 */
};

/* Fill a new policy with defaults for `type` (versions all 0, uuid fresh). */
int kms_key_policy_init(struct kms_key_policy *p, enum kms_key_type type) KMS_WUR;

/* Fresh random material for version `version`, creation time now. Wipe with kms_memzero. */
int kms_key_version_generate(const struct kms_key_policy *p, uint32_t version,
                             struct kms_key_version *out) KMS_WUR;

/* ---- persistence (versioned binary records; values are sealed by storage) ---------------- */

#define KMS_KEY_POLICY_ENC_MAX 128
#define KMS_KEY_VERSION_ENC_MAX 128
/* Encode into buf (KMS_KEY_*_ENC_MAX bytes); returns the length used. */
size_t kms_key_policy_encode(const struct kms_key_policy *p, uint8_t *buf);
int kms_key_policy_decode(const uint8_t *buf, size_t len, struct kms_key_policy *p) KMS_WUR;
size_t kms_key_version_encode(const struct kms_key_version *v, uint8_t *buf);
int kms_key_version_decode(const uint8_t *buf, size_t len, struct kms_key_version *v) KMS_WUR;

/* ---- encrypt / decrypt ------------------------------------------------------------------- */

/*
 * Resolve the version to encrypt with: requested 0 means latest. Errors (400):
 * "requested version for encryption is negative",
 * "requested version for encryption is higher than the latest key version",
 * "requested version for encryption is less than the minimum encryption key version",
 * "no such key version" (below min_decryption_version: the version is archived).
 */
int kms_keyring_encrypt_version(const struct kms_key_policy *p, int64_t requested,
                                uint32_t *version, struct kms_err *err) KMS_WUR;

/*
 * Encrypt pt with key version kv into *out = "vault:v<N>:<base64(nonce||ct||tag)>" (malloc'd,
 * caller frees). context is required (and used) only for derived keys; has_context tells
 * whether one was sent. Convergent keys derive the nonce from the plaintext. Errors: 400
 * missing-context message; 500 on internal failure.
 */
int kms_keyring_encrypt(const struct kms_key_policy *p, const struct kms_key_version *kv,
                        const uint8_t *context, size_t ctxlen, bool has_context, const uint8_t *aad,
                        size_t aadlen, const uint8_t *pt, size_t ptlen, char **out,
                        struct kms_err *err) KMS_WUR;

/*
 * First decrypt step: parse the "vault:v<N>:" header of ct and check N against the policy.
 * Version 0 means 1. Errors (400): "invalid ciphertext: no prefix",
 * "invalid ciphertext: wrong number of fields",
 * "invalid ciphertext: version number could not be decoded",
 * "invalid ciphertext: version is too new",
 * "ciphertext or signature version is disallowed by policy (too old)".
 */
int kms_keyring_ciphertext_version(const struct kms_key_policy *p, const char *ct, size_t len,
                                   uint32_t *version, struct kms_err *err) KMS_WUR;

/*
 * Decrypt ct (already checked by kms_keyring_ciphertext_version) with version kv. *pt is
 * malloc'd (never NULL on success, even for empty plaintext; caller frees with kms_free_wipe).
 * Errors (400): "invalid ciphertext: could not decode base64", missing-context message,
 * "invalid ciphertext length", "cipher: message authentication failed" (AES-GCM) or
 * "chacha20poly1305: message authentication failed" (ChaCha20/XChaCha20).
 */
int kms_keyring_decrypt(const struct kms_key_policy *p, const struct kms_key_version *kv,
                        const char *ct, size_t len, const uint8_t *context, size_t ctxlen,
                        bool has_context, const uint8_t *aad, size_t aadlen, uint8_t **pt,
                        size_t *ptlen, struct kms_err *err) KMS_WUR;

/* The exact message OpenBao gives when a derived key gets no context. */
extern const char KMS_MSG_MISSING_CONTEXT[];

/* ---- configuration ----------------------------------------------------------------------- */

struct kms_key_config {
    bool has_min_decryption_version;
    int64_t min_decryption_version;
    bool has_min_encryption_version;
    int64_t min_encryption_version;
    bool has_deletion_allowed;
    bool deletion_allowed;
    bool has_exportable;
    bool exportable;
    bool has_allow_plaintext_backup;
    bool allow_plaintext_backup;
    bool has_auto_rotate_period;
    int64_t auto_rotate_period;
};

/*
 * Apply a keys/:name/config request to p (OpenBao semantics and messages, section 3.5).
 * On error p is unchanged. *warning receives the min_decryption_version=0 warning or "".
 */
int kms_keyring_config(struct kms_key_policy *p, const struct kms_key_config *cfg, char *warning,
                       size_t warnlen, struct kms_err *err) KMS_WUR;

/*
 * Apply keys/:name/trim (section 3.7 checks, in that order). has_value false -> "missing
 * min_available_version". On success versions below p->min_available_version must be
 * destroyed by the caller. On error p is unchanged.
 */
int kms_keyring_trim(struct kms_key_policy *p, bool has_value, int64_t min_available,
                     struct kms_err *err) KMS_WUR;

/* Parse a ciphertext-style "vault:v<N>:" version without a policy (CLI and audit use). */
int kms_ciphertext_parse_version(const char *ct, size_t len, uint32_t *version) KMS_WUR;

#endif
