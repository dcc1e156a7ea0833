/*
 * engines.h - the composition root: creates the API (pipeline and registry) over a store and
 * registers every engine in order (sys, auth, transit, kmskey). The API owns what it creates;
 * kms_api_destroy releases it all.
 */
#ifndef KMS_ENGINE_ENGINES_H
#define KMS_ENGINE_ENGINES_H

#include "api/api.h"

struct kms_engines_opts {
    int64_t kms_deletion_delay;          /* KMSKey deletion countdown in seconds (0 = 30 days) */
    size_t key_cache_size;               /* unsealed Transit keys kept in memory (0 = 10000) */
    bool unauthenticated_metrics_access; /* GET sys/metrics needs no token */
};

/* The whole service over `st` (borrowed; must outlive the API). eopts may be NULL (defaults). */
int kms_engines_create(struct kms_storage *st, const struct kms_api_opts *opts,
                       const struct kms_engines_opts *eopts, struct kms_api **out,
                       struct kms_err *err) KMS_WUR;

struct kms_plugin_backend;

/*
 * The in-process KMS plugin backend (engine/plugin_local.c) for KEY (kmsplugin/kmsplugin.h:
 * "<project>/<name>" = a KMSKey of purpose etcd, else a Transit key) in namespace ns_path
 * ("" or NULL = root; KMSKeys need an organization). The namespace, mount and key are looked
 * up at each call. *out is filled for kms_plugin_start, which takes it over.
 */
int kms_engines_plugin_backend(struct kms_api *api, const char *ns_path, const char *key,
                               struct kms_plugin_backend *out, struct kms_err *err) KMS_WUR;

#endif
