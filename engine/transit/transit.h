/*
 * transit.h - the Transit engine (OpenBao's transit secrets engine): its engine descriptor
 * and the key operations other engines (the KMSKey controller) run outside any request.
 */
#ifndef KMS_ENGINE_TRANSIT_H
#define KMS_ENGINE_TRANSIT_H

#include "api/engine.h"
#include "crypto/keyring.h"

struct kms_transit;

/*
 * Create the engine's state (a key cache of `key_cache_size` unsealed keys, 0 = 10000) and
 * fill *out with its descriptor (type "transit", mounted); *state_out is borrowed from the
 * descriptor (freed by its destroy) for other engines' use.
 */
int kms_transit_engine(struct kms_api *api, size_t key_cache_size, struct kms_engine *out,
                       struct kms_transit **state_out) KMS_WUR;

/*
 * Transit operations outside any HTTP request. Each is one storage transaction. get/destroy
 * return KMS_STORAGE_NOTFOUND for a missing key. create never replaces an existing key
 * (*existed tells) and creates keys with deletion_allowed=false and exportable=false.
 * raise_floor sets min_decryption_version and min_encryption_version (never lowers them) and
 * destroys the versions below (min_available_version).
 */
int kms_transit_key_get(struct kms_transit *t, const struct kms_mount *m, const char *name,
                        struct kms_key_policy *p, int64_t *last_rotated, struct kms_err *err);
int kms_transit_key_create(struct kms_transit *t, const struct kms_mount *m, const char *name,
                           enum kms_key_type type, struct kms_key_policy *out, bool *existed,
                           struct kms_err *err) KMS_WUR;
int kms_transit_key_rotate(struct kms_transit *t, const struct kms_mount *m, const char *name,
                           struct kms_key_policy *out, struct kms_err *err) KMS_WUR;
int kms_transit_key_raise_floor(struct kms_transit *t, const struct kms_mount *m, const char *name,
                                uint32_t version, struct kms_key_policy *out,
                                struct kms_err *err) KMS_WUR;
int kms_transit_key_destroy(struct kms_transit *t, const struct kms_mount *m, const char *name,
                            struct kms_err *err) KMS_WUR;

/*
 * Encrypt / decrypt with Transit key `name` of mount m outside any request (the KMS plugin;
 * engine/transit/direct.c), through the key cache, for AEAD keys without derivation (412
 * otherwise; 404 when the key is missing). encrypt uses the latest version (*version) and
 * gives *ct = "vault:v<N>:..." (malloc'd); decrypt takes such a ciphertext with Transit's
 * checks and messages (400 bad or tampered ciphertext, 400 "...disallowed by policy (too
 * old)" below min_decryption_version) and gives *pt (malloc'd, free with kms_free_wipe).
 * Thread-safe.
 */
int kms_transit_encrypt_direct(struct kms_transit *t, const struct kms_mount *m, const char *name,
                               const uint8_t *pt, size_t ptlen, char **ct, uint32_t *version,
                               struct kms_err *err) KMS_WUR;
int kms_transit_decrypt_direct(struct kms_transit *t, const struct kms_mount *m, const char *name,
                               const char *ct, size_t ctlen, uint8_t **pt, size_t *ptlen,
                               uint32_t *version, struct kms_err *err) KMS_WUR;

/*
 * Whether request c may use the Transit key `name` of its mount (true) beyond what its ACL
 * policies grant. Transit knows nothing of projects or KMSKeys; the composition root installs
 * the KMSKey engine's ownership check here. It is asked before any other work of every route
 * that names a key (403 "permission denied" when false) and for each name LIST shows. Called
 * concurrently from every worker; `arg` is borrowed for the engine's lifetime.
 */
typedef bool (*kms_transit_owner_fn)(void *arg, const struct kms_ctx *c, const char *name);
/* Install the check (before the first request; NULL = every key, the default). */
void kms_transit_set_owner_check(struct kms_transit *t, kms_transit_owner_fn fn, void *arg);

/*
 * Whether Transit key `name` of request c's mount is managed by something outside Transit (a
 * KMSKey); then `owner` (n bytes) names it ("KMSKey <project>/<name>"). A managed key's
 * exportable, allow_plaintext_backup and deletion_allowed stay off, and restore and derive-key
 * cannot replace or add to its key material: its key never leaves kmsd and only its owner
 * deletes it (docs/kmskey.md). A root token is not held back (the platform's break-glass, as
 * in OpenBao). Installed like the owner check.
 */
typedef bool (*kms_transit_managed_fn)(void *arg, const struct kms_ctx *c, const char *name,
                                       char *owner, size_t n);
void kms_transit_set_managed_check(struct kms_transit *t, kms_transit_managed_fn fn, void *arg);

/*
 * Told of every Transit key a request creates (keys/:name, an encrypt's upsert, import, a
 * restore under a new name): first with `txn`, the write transaction that creates it, which the
 * hook may add to (-1, with c's error set, fails the request and nothing is written), then once
 * more with txn NULL after it committed. The KMSKey engine records there which project's token
 * made a key whose name other projects' could also claim. Installed like the owner check.
 */
typedef int (*kms_transit_created_fn)(void *arg, struct kms_ctx *c, struct kms_txn *txn,
                                      const char *name);
void kms_transit_set_created_hook(struct kms_transit *t, kms_transit_created_fn fn, void *arg);

#endif
