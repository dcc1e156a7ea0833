/*
 * kmskey.h - the KMSKey engine (kms/keys/<project>/<name> in an organization namespace): the
 * product's key objects on top of Transit keys, and the controller that rotates them on
 * schedule and ends deletion countdowns (its tick).
 */
#ifndef KMS_ENGINE_KMSKEY_H
#define KMS_ENGINE_KMSKEY_H

#include "api/engine.h"

struct kms_transit;

/*
 * Load the KMSKey schedule from storage and fill *out with the engine's descriptor (built in
 * at "kms/"). Keys live in `transit` (borrowed; registered before this engine). Deletion
 * countdowns last `deletion_delay` seconds (0 = 30 days).
 */
int kms_kmskey_engine(struct kms_api *api, struct kms_transit *transit, int64_t deletion_delay,
                      struct kms_engine *out) KMS_WUR;

/*
 * Transit's ownership check (kms_transit_owner_fn; `state` is the descriptor's state): true
 * when request c may use Transit key `name`. A token bound to a project (the
 * service_account_namespace of its Kubernetes login) may use, in an organization namespace,
 * only keys its project's KMSKeys own (retained ones included), keys its project's tokens made
 * (below) and unowned `<org>-<project>-*` keys whose name reads as no other project's (a
 * project with KMSKeys). Other tokens: always true.
 */
bool kms_kmskey_transit_allows(void *state, const struct kms_ctx *c, const char *name);
/*
 * Transit's created hook (kms_transit_created_fn): a key a project-bound token makes with
 * Transit calls, `<org>-<project>-<n>`, whose name also reads as another project's key, gets a
 * tombstone of its project in txn (then, committed, in the index): it stays that project's, as
 * a retained key does, so no other project's token reaches it and only that project's KMSKey
 * `n` adopts it. 0, or -1 with c's error set.
 */
int kms_kmskey_transit_created(void *state, struct kms_ctx *c, struct kms_txn *txn,
                               const char *name);
/* Transit's managed check (kms_transit_managed_fn): true when a KMSKey of c's organization owns
 * Transit key `name` (retained ones included); owner gets "KMSKey <project>/<name>". */
bool kms_kmskey_transit_managed(void *state, const struct kms_ctx *c, const char *name, char *owner,
                                size_t n);

/*
 * For the KMS plugin (engine/plugin_local.c): KMSKey <project>/<name> of namespace ns must
 * exist, have purpose etcd and own its Transit key, whose name goes to transit_name. 0, or -1
 * with err: 404 no such KMSKey, 412 another purpose, 409 another KMSKey owns the Transit name,
 * 400 not an organization namespace or a bad name, 500 storage. `state` is the descriptor's.
 */
int kms_kmskey_plugin_key(void *state, const struct kms_ns *ns, const char *project,
                          const char *name, char *transit_name, size_t n, struct kms_err *err);

/* The KMSKey rotation interval syntax (Go durations plus d, whole units); seconds >= 1. */
int kms_kmskey_interval_parse(const char *s, int64_t *out) KMS_WUR;

#endif
