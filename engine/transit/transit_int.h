/*
 * transit_int.h - private to engine/transit: the engine state, key and version lookups
 * through the key cache, the hmac/verify/hash/random handlers and the key cache itself.
 */
#ifndef KMS_ENGINE_TRANSIT_INT_H
#define KMS_ENGINE_TRANSIT_INT_H

#include "engine/transit/transit.h"

#include <stdatomic.h>

struct kms_keycache;
struct kms_transit_caches;

struct kms_transit {
    struct kms_api *api;     /* borrowed: the API owns the engine */
    struct kms_keycache *kc; /* shared by the mounts without a cache-config size */
    struct kms_transit_caches *caches;
    kms_transit_owner_fn owner_fn; /* NULL = no check beyond the ACL */
    void *owner_arg;
    kms_transit_managed_fn managed_fn; /* NULL = no key is managed */
    void *managed_arg;
    kms_transit_created_fn created_fn; /* NULL = nobody is told of new keys */
    void *created_arg;
    /* auto-rotation (autorotate.c): the tick's schedule (main loop only) and the kick */
    int64_t ar_last_scan, ar_next_scan, ar_due;
    atomic_bool ar_kick;
};

/*
 * Auto-rotation (autorotate.c, transit-api.md 5). kms_transit_key_due: when key `name` (policy
 * p, read in txn) becomes due, 0 = never. kms_transit_key_rotate_due: rotate it in one write
 * transaction if it is due at `now` (checked inside it): 1 rotated (*out the new policy), 0 not
 * due, KMS_STORAGE_NOTFOUND, -1 (err); *next_due is when it is due next (0 = never).
 * kms_transit_autorotate_kick: a period was set; the next tick scans within a minute.
 * kms_transit_tick: the engine's tick (scans, rotates what is due).
 */
int kms_transit_key_due(const struct kms_mount *m, struct kms_txn *txn, const char *name,
                        const struct kms_key_policy *p, int64_t *due) KMS_WUR;
int kms_transit_key_rotate_due(struct kms_transit *t, const struct kms_mount *m, const char *name,
                               int64_t now, struct kms_key_policy *out, int64_t *next_due,
                               struct kms_err *err) KMS_WUR;
void kms_transit_autorotate_kick(struct kms_transit *t);
int kms_transit_tick(void *state, int64_t now, int64_t *next_due, kms_tick_report_fn report);

/* The managed check (transit.h): 400 in c with `what` when key `name` is managed. */
int kms_transit_refuse_managed(struct kms_ctx *c, const char *name, const char *what);
/* The created hook (transit.h) for key `name` that c creates in txn, or (txn NULL) has
 * created: 0, or -1 with c's error set. */
int kms_transit_note_created(struct kms_ctx *c, struct kms_txn *txn, const char *name);

/* Key and version lookups through the key cache for the other Transit endpoints:
 * read_key returns 0, KMS_STORAGE_NOTFOUND or -1; read_version fails with a 400
 * "no such key version" or a 500 in err. */
int kms_transit_read_key(struct kms_ctx *c, const char *name, struct kms_key_policy *p);
int kms_transit_read_version(struct kms_ctx *c, const char *name, uint32_t version,
                             struct kms_key_version *out, struct kms_err *err);

/* transit_hmac.c: hmac, verify (dispatch; HMAC half), hash, random. */
int kms_transit_hmac(struct kms_ctx *c);
int kms_transit_verify(struct kms_ctx *c);
/* sign and verify's hash algorithm name (URL, hash_algorithm, then algorithm; sign.c) */
const char *kms_transit_hash_name(struct kms_ctx *c);
int kms_transit_hash(struct kms_ctx *c);
int kms_transit_random(struct kms_ctx *c);
extern const struct kms_field kms_transit_hmac_fields[];
extern const struct kms_field kms_transit_verify_fields[];
extern const struct kms_field kms_transit_hash_fields[];
extern const struct kms_field kms_transit_random_fields[];

/* sign.c: sign/:name and verify/:name with a signature (called by kms_transit_verify). */
int kms_transit_sign(struct kms_ctx *c);
int kms_transit_verify_signature(struct kms_ctx *c);
extern const struct kms_field kms_transit_sign_fields[];

/* export.c: export/:type/:name(/:version) for every key type. */
int kms_transit_export(struct kms_ctx *c);
/* The versions an export names: all working ones (s NULL), "latest", N or vN, with OpenBao's
 * 400s ("invalid key version", "version for export is below minimum decryption version",
 * "version does not exist or cannot be found"); also used by byok-export. */
int kms_transit_export_versions(struct kms_ctx *c, const struct kms_key_policy *p, const char *s,
                                uint32_t *from, uint32_t *to);
/*
 * One version's entry in the key object's "keys": its creation time (unix seconds) for AEAD
 * and hmac keys (whose key object then drops "keys"), else {name, public_key,
 * certificate_chain, creation_time} (derived ed25519 keys show the public key derived from
 * context, "" without one). New reference; NULL with err set on failure.
 */
/* The reflect.Kind name mapstructure reports for a decoded JSON value (OpenBao decodes numbers
 * as json.Number, a string kind): "map", "slice", "bool", "string" ("invalid" for null). */
const char *kms_go_kind(const json_t *v);
/*
 * batch_input of hmac, sign and verify as OpenBao decodes it (mapstructure v2 into a slice of
 * map[string]string named go_item, e.g. "transit.batchRequestSignItem"): a null item is an
 * empty map; a string value is kept, a number becomes its text, null the empty string; an item
 * that is not an object, or a value that is a bool, array or object, is a 500 wrapped
 * `failed to parse batch input: ...` (every item's error, one a line); [] is 400 `missing
 * batch input to process`; more than max_batch_items 400. *out: a new array of objects whose
 * values are all strings.
 */
int kms_transit_string_batch(struct kms_ctx *c, json_t *bi, const char *go_item, json_t **out);

json_t *kms_transit_version_json(const struct kms_key_policy *p, const struct kms_key_version *kv,
                                 const uint8_t *context, size_t ctxlen, struct kms_err *err);

/* Record access for the files beside transit.c: load a key's policy (0, KMS_STORAGE_NOTFOUND
 * or -1), and store a policy with one version then commit txn and drop the key from the
 * cache (0 or -1; *txn is finished either way on success). */
int kms_transit_policy_load(const struct kms_mount *m, struct kms_txn *txn, const char *name,
                            struct kms_key_policy *p);
int kms_transit_key_store(struct kms_transit *t, const struct kms_mount *m, const char *name,
                          const struct kms_key_policy *p, const struct kms_key_version *kv,
                          struct kms_txn **txn);

/* import.c: wrapping_key, keys/:name/import and import_version (BYOK). The wrapping key is a
 * sealed META record per mount, removed by kms_transit_wrapping_key_purge in the mount purge. */
int kms_transit_wrapping_key_read(struct kms_ctx *c);
int kms_transit_import(struct kms_ctx *c);
int kms_transit_import_version(struct kms_ctx *c);
int kms_transit_byok_export(struct kms_ctx *c);
int kms_transit_wrapping_key_purge(struct kms_txn *txn, const struct kms_mount *m);
extern const struct kms_field kms_transit_import_fields[];
extern const struct kms_field kms_transit_import_version_fields[];
extern const struct kms_field kms_transit_byok_export_fields[];

/* derive.c: derive-key/:name (ECDH with an ecdsa-* key, stored as an imported key). */
int kms_transit_derive_key(struct kms_ctx *c);
extern const struct kms_field kms_transit_derive_key_fields[];

/*
 * certs.c: keys/:name/csr, keys/:name/set-certificate and the chain records (sealed META
 * "transit_chain/<mount prefix><name>/<version BE u32>"). chain_drop removes a key's chains
 * inside the caller's write txn: every one (below 0) or those of versions from..below-1;
 * chain_purge a mount's; chain_get one version's as PEM (*pem malloc'd; 0, NOTFOUND or -1);
 * chains_attach sets certificate_chain on the version objects of a key read's "keys".
 */
int kms_transit_csr(struct kms_ctx *c);
int kms_transit_set_certificate(struct kms_ctx *c);
extern const struct kms_field kms_transit_csr_fields[];
extern const struct kms_field kms_transit_set_certificate_fields[];
int kms_transit_chain_drop(const struct kms_mount *m, struct kms_txn *txn, const char *name,
                           uint32_t from, uint32_t below);
int kms_transit_chain_purge(struct kms_txn *txn, const struct kms_mount *m);
int kms_transit_chain_get(const struct kms_mount *m, struct kms_txn *txn, const char *name,
                          uint32_t version, char **pem);
int kms_transit_chains_attach(const struct kms_mount *m, struct kms_txn *txn, const char *name,
                              json_t *keys);
/* The raw record (the certificates' DER concatenated) of one version, for backup/restore:
 * der_get gives *der malloc'd (0, NOTFOUND or -1); put stores one inside the caller's txn;
 * der_next is the length of the DER SEQUENCE at b (0 when malformed). */
int kms_transit_chain_der(const struct kms_mount *m, struct kms_txn *txn, const char *name,
                          uint32_t version, uint8_t **der, size_t *len);
int kms_transit_chain_put(const struct kms_mount *m, struct kms_txn *txn, const char *name,
                          uint32_t version, const uint8_t *der, size_t len);
size_t kms_transit_der_next(const uint8_t *b, size_t len);

/* backup.c: backup/:name and restore(/:name) in OpenBao's keysutil backup format. */
int kms_transit_backup(struct kms_ctx *c);
int kms_transit_restore(struct kms_ctx *c);
extern const struct kms_field kms_transit_restore_fields[];

/*
 * bigjson.c: Go big integers (bare JSON integers of any length) in JSON text. quote_bigints
 * copies in (len bytes) with every integer of more than 18 digits outside strings quoted;
 * *out is malloc'd and NUL-terminated, *outlen bytes long (free with kms_free_wipe(*outlen +
 * 1)); -1 on allocation failure. unquote_marked rewrites, in place, every string token that is
 * exactly "<mark><digits>" as the bare digits, and wipes the tail the text no longer uses.
 */
int kms_json_quote_bigints(const char *in, size_t len, char **out, size_t *outlen);
void kms_json_unquote_marked(char *s, const char *mark);

/* Whole-key records for restore, inside the caller's write txn: read a policy (0,
 * KMS_STORAGE_NOTFOUND or -1); drop a key's policy and every version; store one version;
 * store the policy, commit *txn and drop the key from the cache. All but the first 0 or -1. */
int kms_transit_rec_policy(const struct kms_mount *m, struct kms_txn *txn, const char *name,
                           struct kms_key_policy *p);
int kms_transit_rec_drop(const struct kms_mount *m, struct kms_txn *txn, const char *name);
int kms_transit_rec_put_version(const struct kms_mount *m, struct kms_txn *txn, const char *name,
                                const struct kms_key_version *kv);
int kms_transit_rec_commit(struct kms_transit *t, const struct kms_mount *m, const char *name,
                           const struct kms_key_policy *p, struct kms_txn **txn);

/* cache_config.c: GET|POST cache-config and the key cache of each mount. cache_of gives the
 * cache a mount's requests use (its own when it has a size, else the shared t->kc), reading
 * the mount's size on first use; forget drops what is known of a removed mount; purge
 * deletes its record (in the mount purge's txn). */
#define KMS_TRANSIT_CACHE_MIN 10
#define KMS_TRANSIT_CACHE_MAX 1000000
int kms_transit_caches_create(struct kms_transit_caches **out);
void kms_transit_caches_destroy(struct kms_transit_caches **cs);
struct kms_keycache *kms_transit_cache_of(struct kms_transit *t, const struct kms_mount *m);
void kms_transit_cache_forget(struct kms_transit *t, const struct kms_mount *m);
int kms_transit_cache_purge(struct kms_txn *txn, const struct kms_mount *m);
int kms_transit_cache_config_read(struct kms_ctx *c);
int kms_transit_cache_config_write(struct kms_ctx *c);
extern const struct kms_field kms_transit_cache_config_fields[];

/* ---- key cache (keycache.c) ------------------------------------------------------------- */

int kms_keycache_create(size_t max_entries, struct kms_keycache **out) KMS_WUR;
void kms_keycache_destroy(struct kms_keycache **kc);
/* Sequence to take before reading storage; a put is dropped if a write happened since. */
uint64_t kms_keycache_seq(struct kms_keycache *kc);
bool kms_keycache_get_policy(struct kms_keycache *kc, const char *key, struct kms_key_policy *out);
/* The policy, and with it its latest version when that is cached too (*has_latest), in one
 * lookup: an encrypt needs both, and a cold entry costs its cache misses once. */
bool kms_keycache_get(struct kms_keycache *kc, const char *key, struct kms_key_policy *out,
                      struct kms_key_version *latest, bool *has_latest);
void kms_keycache_put_policy(struct kms_keycache *kc, const char *key,
                             const struct kms_key_policy *p, uint64_t seq);
bool kms_keycache_get_version(struct kms_keycache *kc, const char *key, uint32_t version,
                              struct kms_key_version *out);
void kms_keycache_put_version(struct kms_keycache *kc, const char *key,
                              const struct kms_key_version *v, uint64_t seq);
/* After a committed write to `key` (the key's storage key): drop its entry. */
void kms_keycache_invalidate(struct kms_keycache *kc, const char *key);
/* After a mount or namespace is removed. */
void kms_keycache_clear(struct kms_keycache *kc);
/* The bound on cached keys (0 = none), changed in place: a smaller one evicts at once. */
void kms_keycache_set_max(struct kms_keycache *kc, size_t max_entries);
size_t kms_keycache_max(struct kms_keycache *kc);
/* Keys cached now. */
size_t kms_keycache_count(struct kms_keycache *kc);

#endif
