/*
 * engines.c - the composition root. The pipeline (api/) knows engines only through their
 * descriptors; this file is the one place that names them all and wires the KMSKey engine
 * to the Transit engine that keeps its keys, both ways: KMSKeys call Transit's key operations,
 * and Transit asks the KMSKey engine's ownership index whether a project-bound token may use a
 * key (so Transit itself never depends on KMSKeys).
 */
#include "engine/engines.h"

#include "engine/auth/auth_engine.h"
#include "engine/kmskey/kmskey.h"
#include "engine/sys/sys.h"
#include "engine/transit/transit.h"

#include <string.h>

int kms_engines_create(struct kms_storage *st, const struct kms_api_opts *opts,
                       const struct kms_engines_opts *eopts, struct kms_api **out,
                       struct kms_err *err)
{
    struct kms_engines_opts defaults;
    struct kms_api *api = NULL;
    struct kms_engine sys, metrics, transit, kmskey;
    struct kms_transit *ts = NULL;
    int rc = -1;

    memset(&defaults, 0, sizeof(defaults));
    if (eopts == NULL) {
        eopts = &defaults;
    }
    if (kms_api_create(st, opts, &api, err) != 0) {
        goto out;
    }
    kms_sys_engine(&sys);
    kms_sys_metrics_engine(&metrics, eopts->unauthenticated_metrics_access);
    if (kms_api_engine_add(api, &sys) != 0 || kms_api_engine_add(api, &metrics) != 0 ||
        kms_auth_engines_add(api) != 0) {
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    if (kms_transit_engine(api, eopts->key_cache_size, &transit, &ts) != 0) {
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    if (kms_api_engine_add(api, &transit) != 0) {
        transit.destroy(transit.state);
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    if (kms_kmskey_engine(api, ts, eopts->kms_deletion_delay, &kmskey) != 0) {
        kms_err_set(err, 500, "cannot load KMSKeys from storage");
        goto out;
    }
    if (kms_api_engine_add(api, &kmskey) != 0) {
        kmskey.destroy(kmskey.state);
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    kms_transit_set_owner_check(ts, kms_kmskey_transit_allows, kmskey.state);
    kms_transit_set_managed_check(ts, kms_kmskey_transit_managed, kmskey.state);
    kms_transit_set_created_hook(ts, kms_kmskey_transit_created, kmskey.state);
    *out = api;
    api = NULL;
    rc = 0;
out:
    kms_api_destroy(&api);
    return rc;
}
