/*
 * sign.c - Transit's sign/:name and the signature half of verify/:name (the HMAC half is in
 * transit_hmac.c), as OpenBao's path_sign_verify.go answers them.
 *
 * Design notes:
 * - Checks run in OpenBao's order: hash algorithm, marshaling type, salt length, the key
 *   ("signing key not found" / "signature verification key not found"), its type, the
 *   hash_algorithm=none rule, then each item (input, base64, context) and the crypto.
 * - Status mapping follows OpenBao's handlers: on a single sign request the item checks are
 *   400 and everything the signing step reports is a wrapped 500; a single verify reports
 *   user errors as 400 and others wrapped; batches always answer 200 with per-item errors.
 * - The policy is read once per request; versions through the key cache, once per distinct
 *   version (wiped at the end), and a batch's OpenSSL keys once per version (kms_sign_cache,
 *   destroyed at the end). Cryptography is crypto/keyring's.
 */
#include "engine/transit/transit_int.h"

#include <stdlib.h>
#include <string.h>

#define VERSIONS_PER_REQUEST 4

/* Versions loaded for one request, wiped at the end. */
struct vset {
    struct kms_key_version v[VERSIONS_PER_REQUEST];
    size_t n;
};

static int vset_get(struct kms_ctx *c, const char *name, struct vset *vs, uint32_t ver,
                    const struct kms_key_version **out, struct kms_err *err)
{
    size_t slot;

    for (size_t i = 0; i < vs->n; i++) {
        if (vs->v[i].version == ver) {
            *out = &vs->v[i];
            return 0;
        }
    }
    slot = vs->n < VERSIONS_PER_REQUEST ? vs->n++ : ver % VERSIONS_PER_REQUEST;
    kms_memzero(&vs->v[slot], sizeof(vs->v[slot]));
    if (kms_transit_read_version(c, name, ver, &vs->v[slot], err) != 0) {
        kms_memzero(&vs->v[slot], sizeof(vs->v[slot]));
        vs->v[slot].version = 0;
        return -1;
    }
    *out = &vs->v[slot];
    return 0;
}

/* hash algorithm of sign and verify: the URL segment, else hash_algorithm, which defaults to
 * sha2-256, so the deprecated algorithm counts only when hash_algorithm is given empty (as
 * OpenBao reads them). */
const char *kms_transit_hash_name(struct kms_ctx *c)
{
    const char *v = kms_cap(c, "urlalgorithm");

    if (v != NULL && v[0] != '\0') {
        return v;
    }
    if (!kms_param_str(c, "hash_algorithm", &v)) {
        return "sha2-256";
    }
    if (v[0] == '\0' && (!kms_param_str(c, "algorithm", &v) || v[0] == '\0')) {
        return "sha2-256";
    }
    return v;
}

/* Parse the options, load the key and check its type and the hash=none rule. */
static int prepare(struct kms_ctx *c, const char *missing, const char *what,
                   struct kms_key_policy *p, struct kms_sign_opts *o)
{
    const char *marshaling = "asn1";
    const char *salt = "auto";
    const char *sig_alg = "";
    bool prehashed = false;

    (void)kms_param_str(c, "marshaling_algorithm", &marshaling);
    (void)kms_param_str(c, "salt_length", &salt);
    (void)kms_param_str(c, "signature_algorithm", &sig_alg);
    (void)kms_param_bool(c, "prehashed", &prehashed);
    if (kms_sign_opts_parse(kms_transit_hash_name(c), marshaling, salt, sig_alg, prehashed, o,
                            &c->err) != 0) {
        return -1;
    }
    int g = kms_transit_read_key(c, kms_cap(c, "name"), p);
    if (g == KMS_STORAGE_NOTFOUND) {
        return KMS_FAIL(c, 400, "%s", missing);
    }
    if (g != 0) {
        return KMS_FAILW(c, 500, "cannot read key");
    }
    if (!kms_key_type_supports_signing(p->type)) {
        return KMS_FAIL(c, 400, "key type %s does not support %s", kms_key_type_name(p->type),
                        what);
    }
    if (o->hash_none && (!o->prehashed || strcmp(o->sig_alg, "pkcs1v15") != 0)) {
        return KMS_FAIL(c, 400,
                        "hash_algorithm=none requires both prehashed=true and "
                        "signature_algorithm=pkcs1v15");
    }
    return 0;
}

/*
 * The request's items: batch_input (an array of objects of strings, at most max_batch_items)
 * or one object built from the top-level fields. *items is a new reference.
 */
static int collect(struct kms_ctx *c, const char *const *single, const char *go_item,
                   json_t **items, bool *batch)
{
    json_t *bi = kms_param(c, "batch_input");
    const char *s;

    *batch = bi != NULL;
    if (bi == NULL) {
        json_t *one = json_object();
        for (size_t f = 0; single[f] != NULL; f++) {
            if (kms_param_str(c, single[f], &s)) {
                json_object_set_new(one, single[f], json_string(s));
            }
        }
        /* a single request signs an absent input as the empty string, as OpenBao */
        if (json_object_get(one, "input") == NULL) {
            json_object_set_new(one, "input", json_string(""));
        }
        *items = json_pack("[o]", one);
        return 0;
    }
    return kms_transit_string_batch(c, bi, go_item, items);
}

/*
 * The item checks before the crypto: input present and base64, context base64. *in and
 * *ctx are malloc'd (ctx NULL when absent or empty). 400 errors.
 */
static int item_inputs(json_t *item, uint8_t **in, size_t *inlen, uint8_t **ctx, size_t *ctxlen,
                       struct kms_err *err)
{
    const char *input = json_string_value(json_object_get(item, "input"));
    const char *context = json_string_value(json_object_get(item, "context"));
    size_t at = 0;

    *in = *ctx = NULL;
    *inlen = *ctxlen = 0;
    if (input == NULL) {
        return kms_err_set(err, 400, "missing input");
    }
    if (kms_b64_decode_alloc(input, strlen(input), in, inlen, &at) != 0) {
        return kms_err_set(err, 400,
                           "unable to decode input as base64: illegal base64 data at input byte "
                           "%zu",
                           at);
    }
    if (context != NULL && context[0] != '\0' &&
        kms_b64_decode_alloc(context, strlen(context), ctx, ctxlen, &at) != 0) {
        kms_free_wipe((void **)in, *inlen);
        return kms_err_set(err, 400, "failed to base64-decode context");
    }
    return 0;
}

static const char *const sign_single[] = {"input", "context", NULL};
static const char *const verify_single[] = {"input", "context", "signature", NULL};

/*
 * One item of a sign or verify request: fills res (the batch entry, without error and
 * reference) and returns 0, or -1 with err. *internal marks errors that a single request
 * reports as a wrapped 500 whatever their status (the signing step's, as OpenBao).
 */
typedef int (*item_fn)(struct kms_ctx *c, const struct kms_key_policy *p,
                       const struct kms_sign_opts *o, struct vset *vs, json_t *item, json_t *res,
                       bool *internal, struct kms_err *err);

static int sign_one(struct kms_ctx *c, const struct kms_key_policy *p,
                    const struct kms_sign_opts *o, struct vset *vs, json_t *item, json_t *res,
                    bool *internal, struct kms_err *err)
{
    const struct kms_key_version *kv = NULL;
    uint8_t *in = NULL, *ctx = NULL;
    size_t inlen = 0, ctxlen = 0;
    char *sig = NULL, *pub = NULL;
    int64_t ver = 0;
    uint32_t v = 0;
    int rc = -1;

    json_object_set_new(res, "key_version", json_integer(0));
    if (item_inputs(item, &in, &inlen, &ctx, &ctxlen, err) != 0) {
        goto out;
    }
    *internal = true;
    if (p->soft_deleted) {
        kms_err_set(err, 400, "%s", KMS_MSG_SOFT_DELETED);
        goto out;
    }
    (void)kms_param_int(c, "key_version", &ver);
    if (kms_keyring_sign_version(p, ver, &v, err) != 0 ||
        vset_get(c, kms_cap(c, "name"), vs, v, &kv, err) != 0 ||
        kms_keyring_sign(p, kv, o, ctx, ctxlen, in, inlen, &sig, &pub, err) != 0) {
        goto out;
    }
    /* OpenBao's item order: signature, key_version, publickey (error, reference) */
    json_object_del(res, "key_version");
    json_object_set_new(res, "signature", json_string(sig));
    json_object_set_new(res, "key_version", json_integer(v));
    if (pub != NULL) {
        json_object_set_new(res, "publickey", json_string(pub));
    }
    kms_ctx_note_version(c, v);
    rc = 0;
out:
    free(sig);
    free(pub);
    kms_free_wipe((void **)&in, inlen);
    kms_free_wipe((void **)&ctx, ctxlen);
    return rc;
}

static int verify_one(struct kms_ctx *c, const struct kms_key_policy *p,
                      const struct kms_sign_opts *o, struct vset *vs, json_t *item, json_t *res,
                      bool *internal, struct kms_err *err)
{
    const struct kms_key_version *kv = NULL;
    const char *sig = json_string_value(json_object_get(item, "signature"));
    uint8_t *in = NULL, *ctx = NULL;
    size_t inlen = 0, ctxlen = 0;
    bool valid = false;
    uint32_t v = 0;
    int rc = -1;

    (void)internal;
    if (item_inputs(item, &in, &inlen, &ctx, &ctxlen, err) != 0) {
        goto out;
    }
    if (sig == NULL) {
        kms_err_set(err, 400, "missing signature");
        goto out;
    }
    if (p->soft_deleted) {
        kms_err_set(err, 400, "%s", KMS_MSG_SOFT_DELETED);
        goto out;
    }
    if (kms_keyring_signature_version(p, sig, strlen(sig), &v, err) != 0 ||
        vset_get(c, kms_cap(c, "name"), vs, v, &kv, err) != 0 ||
        kms_keyring_verify(p, kv, o, ctx, ctxlen, in, inlen, sig, strlen(sig), &valid, err) != 0) {
        goto out;
    }
    kms_ctx_note_version(c, v);
    rc = 0;
out:
    /* unlike HMAC verification, "valid" is always present */
    json_object_set_new(res, "valid", json_boolean(valid));
    kms_free_wipe((void **)&in, inlen);
    kms_free_wipe((void **)&ctx, ctxlen);
    return rc;
}

/* The shared body of sign and verify: options, key, items, then the single or batch answer. */
static int run(struct kms_ctx *c, const char *missing, const char *what, const char *const *single,
               item_fn one)
{
    struct kms_key_policy p;
    struct kms_sign_opts o;
    struct vset vs;
    json_t *items = NULL;
    json_t *results = NULL;
    bool batch = false;
    size_t i;
    json_t *item;
    int rc = -1;

    memset(&vs, 0, sizeof(vs));
    memset(&o, 0, sizeof(o));
    if (prepare(c, missing, what, &p, &o) != 0 ||
        collect(c, single,
                strcmp(what, "signing") == 0 ? "transit.batchRequestSignItem"
                                             : "transit.batchRequestVerifyItem",
                &items, &batch) != 0) {
        goto out;
    }
    /* a batch builds each version's OpenSSL key once */
    if (json_array_size(items) > 1 && kms_sign_cache_create(&o.cache) != 0) {
        KMS_FAILW(c, 500, "out of memory");
        goto out;
    }
    results = json_array();
    json_array_foreach(items, i, item)
    {
        struct kms_err err;
        bool internal = false;
        json_t *res = json_object();
        kms_err_clear(&err);
        int r = one(c, &p, &o, &vs, item, res, &internal, &err);
        if (batch) {
            if (r != 0) {
                json_object_set_new(res, "error", json_string(err.msg));
            }
            const char *ref = json_string_value(json_object_get(item, "reference"));
            json_object_set_new(res, "reference", json_string(ref != NULL ? ref : ""));
            json_array_append_new(results, res);
            continue;
        }
        if (r != 0) {
            json_decref(res);
            c->err = err;
            c->err.status = internal ? 500 : err.status;
            c->err.wrapped = c->err.status >= 500;
            goto out;
        }
        /* a single answer names the derived public key "public_key" (batch: "publickey") */
        json_t *pub = json_object_get(res, "publickey");
        if (pub != NULL) {
            json_object_set(res, "public_key", pub);
            json_object_del(res, "publickey");
        }
        c->data = res;
    }
    if (batch) {
        c->items = json_array_size(items);
        c->data = json_pack("{s:O}", "batch_results", results);
    }
    rc = 0;
out:
    json_decref(results);
    json_decref(items);
    kms_sign_cache_destroy(&o.cache);
    kms_memzero(&vs, sizeof(vs));
    return rc;
}

int kms_transit_sign(struct kms_ctx *c)
{
    return run(c, "signing key not found", "signing", sign_single, sign_one);
}

int kms_transit_verify_signature(struct kms_ctx *c)
{
    return run(c, "signature verification key not found", "verification", verify_single,
               verify_one);
}

const struct kms_field kms_transit_sign_fields[] = {
    {"input", KMS_F_STRING},
    {"context", KMS_F_STRING},
    {"key_version", KMS_F_INT},
    {"hash_algorithm", KMS_F_STRING},
    {"algorithm", KMS_F_STRING},
    {"prehashed", KMS_F_BOOL},
    {"signature_algorithm", KMS_F_STRING},
    {"marshaling_algorithm", KMS_F_STRING},
    {"salt_length", KMS_F_STRING},
    {"batch_input", KMS_F_RAW},
    {NULL, 0},
};
