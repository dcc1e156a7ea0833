/*
 * transit_hmac.c - the Transit endpoints that are not encryption: hmac and HMAC verification
 * with each version's independent HMAC key (an hmac key's own key), the verify dispatch
 * between HMACs and signatures (signatures are sign.c's), hash and random.
 */
#include "engine/transit/transit_int.h"

#include <stdlib.h>
#include <string.h>

#define RANDOM_MAX 131072

/* The algorithm in the path, else the parameter as given (an explicit "" is refused as an
 * unsupported algorithm, as OpenBao's FieldData.Get returns it), else def. */
static const char *url_or_param(struct kms_ctx *c, const char *param, const char *def)
{
    const char *v = kms_cap(c, "urlalgorithm");
    if (v != NULL) {
        return v;
    }
    if (kms_param_str(c, param, &v)) {
        return v;
    }
    return def;
}

static int hmac_alg(struct kms_ctx *c, const char *name, enum kms_hash *h)
{
    if (strcmp(name, "none") == 0 || kms_hash_parse(name, h) != 0) {
        return KMS_FAIL(c, 400, "unsupported algorithm %s", name);
    }
    return 0;
}

/* Go-style message for an input that is not base64. */
static int decode_input(const char *in, uint8_t **out, size_t *len, struct kms_err *err)
{
    size_t at = 0;
    if (kms_b64_decode_alloc(in, strlen(in), out, len, &at) != 0) {
        return kms_err_set(err, 400,
                           "unable to decode input as base64: illegal base64 data at input byte "
                           "%zu",
                           at);
    }
    return 0;
}

/*
 * The version an hmac request uses, checked once for the whole request in OpenBao's order
 * (its handler, then Policy.HMACKey): 0 is the latest, below a set min_encryption_version is
 * too old (even when negative), then soft-deleted, negative, past the latest, below
 * min_decryption_version. 400s.
 */
static int hmac_version(const struct kms_key_policy *p, int64_t *ver, struct kms_err *err)
{
    if (*ver == 0) {
        *ver = p->latest_version;
    }
    if (*ver != p->latest_version && p->min_encryption_version > 0 &&
        *ver < p->min_encryption_version) {
        return kms_err_set(err, 400,
                           "cannot generate HMAC: version is too old (disallowed by "
                           "policy)");
    }
    if (p->soft_deleted) {
        return kms_err_set(err, 400, "%s", KMS_MSG_SOFT_DELETED);
    }
    if (*ver < 0) {
        return kms_err_set(err, 400, "key version does not exist (cannot be negative)");
    }
    if (*ver > p->latest_version) {
        return kms_err_set(err, 400, "key version does not exist; latest key version is %u",
                           p->latest_version);
    }
    if (*ver < p->min_decryption_version) {
        return kms_err_set(err, 400, "no such key version");
    }
    return 0;
}

/* One HMAC item with a checked version; *out = "vault:v<N>:<b64>" (malloc'd). */
static int hmac_one(struct kms_ctx *c, const char *name, const struct kms_key_policy *p,
                    enum kms_hash h, int64_t ver, const char *input, char **out,
                    struct kms_err *err)
{
    struct kms_key_version kv;
    uint8_t *in = NULL;
    size_t inlen = 0;
    uint8_t mac[KMS_HASH_MAX_LEN];
    int rc = -1;

    memset(&kv, 0, sizeof(kv));
    if (input == NULL) {
        return kms_err_set(err, 400, "missing input for HMAC");
    }
    if (decode_input(input, &in, &inlen, err) != 0 ||
        kms_transit_read_version(c, name, (uint32_t)ver, &kv, err) != 0) {
        goto out;
    }
    size_t klen = 0;
    const uint8_t *key = kms_key_version_hmac_key(p, &kv, &klen);
    if (kms_hmac(h, key, klen, in, inlen, mac) != 0) {
        kms_err_set(err, 500, "HMAC failed");
        goto out;
    }
    size_t ml = kms_hash_len(h);
    *out = malloc(32 + kms_b64_encoded_len(ml));
    if (*out == NULL) {
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    int n = snprintf(*out, 32, "vault:v%u:", (uint32_t)ver);
    kms_b64_encode(mac, ml, *out + n);
    kms_ctx_note_version(c, (uint32_t)ver);
    rc = 0;
out:
    kms_memzero(&kv, sizeof(kv));
    kms_memzero(mac, sizeof(mac));
    kms_free_wipe((void **)&in, inlen);
    return rc;
}

static int load_key(struct kms_ctx *c, const char *name, struct kms_key_policy *p,
                    const char *missing)
{
    int g = kms_transit_read_key(c, name, p);
    if (g == KMS_STORAGE_NOTFOUND) {
        return KMS_FAIL(c, 400, "%s", missing);
    }
    if (g != 0) {
        return KMS_FAILW(c, 500, "cannot read key");
    }
    return 0;
}

int kms_transit_hmac(struct kms_ctx *c)
{
    const char *name = kms_cap(c, "name");
    struct kms_key_policy p;
    enum kms_hash h;
    int64_t ver = 0;
    json_t *batch = kms_param(c, "batch_input");
    json_t *items = NULL;

    /* OpenBao's order: the key, the version, the algorithm, then the items */
    (void)kms_param_int(c, "key_version", &ver);
    if (load_key(c, name, &p, "encryption key not found") != 0) {
        return -1;
    }
    if (hmac_version(&p, &ver, &c->err) != 0) {
        return -1;
    }
    if (hmac_alg(c, url_or_param(c, "algorithm", "sha2-256"), &h) != 0) {
        return -1;
    }
    if (batch == NULL) {
        const char *input = NULL;
        char *mac = NULL;
        (void)kms_param_str(c, "input", &input);
        if (hmac_one(c, name, &p, h, ver, input, &mac, &c->err) != 0) {
            return -1;
        }
        c->data = json_pack("{s:s}", "hmac", mac);
        free(mac);
        return 0;
    }
    if (kms_transit_string_batch(c, batch, "transit.batchRequestHMACItem", &items) != 0) {
        return -1;
    }
    json_t *results = json_array();
    size_t i;
    json_t *item;
    json_array_foreach(items, i, item)
    {
        const char *input = json_string_value(json_object_get(item, "input"));
        const char *ref = json_string_value(json_object_get(item, "reference"));
        struct kms_err err;
        char *mac = NULL;
        kms_err_clear(&err);
        json_t *o = json_object();
        if (hmac_one(c, name, &p, h, ver, input, &mac, &err) == 0) {
            json_object_set_new(o, "hmac", json_string(mac));
            free(mac);
        } else {
            json_object_set_new(o, "error", json_string(err.msg));
        }
        json_object_set_new(o, "reference", json_string(ref ? ref : ""));
        json_array_append_new(results, o);
    }
    c->items = json_array_size(items);
    c->data = json_pack("{s:o}", "batch_results", results);
    json_decref(items);
    return 0;
}

/* Verify one HMAC; *valid set on success (a mismatch is not an error). */
static int verify_one(struct kms_ctx *c, const char *name, const struct kms_key_policy *p,
                      enum kms_hash h, const char *input, const char *hmac, bool *valid,
                      struct kms_err *err)
{
    *valid = false;
    if (input == NULL) {
        return kms_err_set(err, 400, "missing input");
    }
    uint8_t *raw = NULL; /* checked before the HMAC, in OpenBao's order */
    size_t rawlen = 0;
    if (decode_input(input, &raw, &rawlen, err) != 0) {
        return -1;
    }
    kms_free_wipe((void **)&raw, rawlen);
    if (hmac == NULL) {
        return kms_err_set(err, 400, "missing hmac");
    }
    if (strncmp(hmac, "vault:v", 7) != 0) {
        return kms_err_set(err, 400, "invalid HMAC to verify: no prefix");
    }
    const char *colon = strchr(hmac + 7, ':');
    if (colon == NULL) {
        return kms_err_set(err, 400, "invalid HMAC: wrong number of fields");
    }
    char num[16];
    size_t nl = (size_t)(colon - (hmac + 7));
    int64_t ver;
    if (nl == 0 || nl >= sizeof(num)) {
        return kms_err_set(err, 400, "invalid HMAC: version number could not be decoded");
    }
    memcpy(num, hmac + 7, nl);
    num[nl] = '\0';
    if (!kms_int_parse(num, &ver)) {
        return kms_err_set(err, 400, "invalid HMAC: version number could not be decoded");
    }
    uint8_t *given = NULL;
    size_t glen = 0, at = 0;
    if (kms_b64_decode_alloc(colon + 1, strlen(colon + 1), &given, &glen, &at) != 0) {
        return kms_err_set(err, 400,
                           "unable to decode verification HMAC as base64: illegal base64 data at "
                           "input byte %zu",
                           at);
    }
    int rc = -1;
    char *mine = NULL;
    if (ver > p->latest_version) {
        kms_err_set(err, 400, "invalid HMAC: version is too new");
        goto out;
    }
    if (ver < p->min_decryption_version) {
        kms_err_set(err, 400, "cannot verify HMAC: version is too old (disallowed by policy)");
        goto out;
    }
    if (p->soft_deleted) {
        kms_err_set(err, 400, "%s", KMS_MSG_SOFT_DELETED);
        goto out;
    }
    struct kms_key_policy q = *p;
    q.min_encryption_version = 0; /* verification may use any working version */
    if (hmac_one(c, name, &q, h, ver == 0 ? 1 : ver, input, &mine, err) != 0) {
        goto out;
    }
    const char *mine_b64 = strchr(mine + 7, ':') + 1;
    uint8_t *expect = NULL;
    size_t elen = 0;
    if (kms_b64_decode_alloc(mine_b64, strlen(mine_b64), &expect, &elen, &at) != 0) {
        kms_err_set(err, 500, "HMAC failed");
        goto out;
    }
    *valid = elen == glen && kms_ct_eq(expect, given, elen);
    free(expect);
    rc = 0;
out:
    free(mine);
    free(given);
    return rc;
}

int kms_transit_verify(struct kms_ctx *c)
{
    const char *name = kms_cap(c, "name");
    struct kms_key_policy p;
    enum kms_hash h;
    json_t *batch = kms_param(c, "batch_input");
    json_t *items = NULL;
    const char *sig = NULL, *hmac = NULL;
    bool has_sig = kms_param_str(c, "signature", &sig);
    bool has_hmac = kms_param_str(c, "hmac", &hmac);
    int rc = -1;

    if (batch == NULL && has_sig && has_hmac) {
        return KMS_FAIL(c, 400, "provide one of 'signature' or 'hmac'");
    }
    if (batch == NULL && !has_sig && !has_hmac) {
        return KMS_FAIL(c, 400, "neither a 'signature' nor an 'hmac' were given to verify");
    }
    if (batch != NULL) {
        /* decoded first, as OpenBao does; an item with both is a signature item */
        size_t i, nsig = 0, nhmac = 0;
        json_t *item;
        if (kms_transit_string_batch(c, batch, "transit.batchRequestVerifyItem", &items) != 0) {
            return -1;
        }
        json_array_foreach(items, i, item)
        {
            if (json_object_get(item, "signature") != NULL) {
                nsig++;
            } else if (json_object_get(item, "hmac") != NULL) {
                nhmac++;
            }
        }
        if (nsig > 0 && nhmac > 0) {
            KMS_FAIL(c, 400,
                     "elements of batch_input must all provide 'signature' or all provide "
                     "'hmac'");
            goto out;
        }
        if (nsig > 0 && nsig < json_array_size(items)) {
            KMS_FAIL(c, 400, "some elements of batch_input are missing 'signature'");
            goto out;
        }
        if (nhmac > 0 && nhmac < json_array_size(items)) {
            KMS_FAIL(c, 400, "some elements of batch_input are missing 'hmac'");
            goto out;
        }
        if (nsig == 0 && nhmac == 0) {
            KMS_FAIL(c, 400, "no batch_input elements have 'signature' or 'hmac'");
            goto out;
        }
        has_sig = nsig > 0;
    }
    if (has_sig) {
        rc = kms_transit_verify_signature(c);
        goto out;
    }
    const char *alg = kms_transit_hash_name(c);
    if (load_key(c, name, &p, "encryption key not found") != 0) {
        goto out;
    }
    if (strcmp(alg, "none") == 0 || kms_hash_parse(alg, &h) != 0) {
        KMS_FAIL(c, 400, "invalid hash algorithm \"%s\"", alg);
        goto out;
    }
    if (batch == NULL) {
        const char *input = ""; /* a missing input is empty here, not an error */
        bool valid;
        (void)kms_param_str(c, "input", &input);
        if (verify_one(c, name, &p, h, input, hmac, &valid, &c->err) != 0) {
            goto out;
        }
        c->data = json_pack("{s:b}", "valid", valid);
        rc = 0;
        goto out;
    }
    json_t *results = json_array();
    size_t i;
    json_t *item;
    json_array_foreach(items, i, item)
    {
        struct kms_err err;
        bool valid = false;
        const char *ref = json_string_value(json_object_get(item, "reference"));
        json_t *o = json_object();
        kms_err_clear(&err);
        if (verify_one(c, name, &p, h, json_string_value(json_object_get(item, "input")),
                       json_string_value(json_object_get(item, "hmac")), &valid, &err) != 0) {
            json_object_set_new(o, "error", json_string(err.msg));
        } else if (valid) {
            json_object_set_new(o, "valid", json_true()); /* omitted when false, as in Go */
        }
        json_object_set_new(o, "reference", json_string(ref ? ref : ""));
        json_array_append_new(results, o);
    }
    c->items = json_array_size(items);
    c->data = json_pack("{s:o}", "batch_results", results);
    rc = 0;
out:
    json_decref(items);
    return rc;
}

int kms_transit_hash(struct kms_ctx *c)
{
    const char *input = NULL;
    const char *format = "hex";
    const char *alg = url_or_param(c, "algorithm", "sha2-256");
    enum kms_hash h;
    uint8_t *in = NULL;
    size_t inlen = 0;
    uint8_t sum[KMS_HASH_MAX_LEN];
    char out[2 * KMS_HASH_MAX_LEN + 1];

    if (!kms_param_str(c, "input", &input)) {
        return KMS_FAIL(c, 400, "input missing");
    }
    if (decode_input(input, &in, &inlen, &c->err) != 0) {
        return -1;
    }
    (void)kms_param_str(c, "format", &format);
    if (strcmp(format, "hex") != 0 && strcmp(format, "base64") != 0) {
        kms_free_wipe((void **)&in, inlen);
        return KMS_FAIL(c, 400, "unsupported encoding format %s; must be \"hex\" or \"base64\"",
                        format);
    }
    if (kms_hash_parse(alg, &h) != 0 || h == KMS_HASH_SHA1) {
        kms_free_wipe((void **)&in, inlen);
        return KMS_FAIL(c, 400, "unsupported algorithm %s", alg);
    }
    int rc = kms_hash(h, in, inlen, sum);
    kms_free_wipe((void **)&in, inlen);
    if (rc != 0) {
        return KMS_FAILW(c, 500, "hash failed");
    }
    if (strcmp(format, "hex") == 0) {
        kms_hex_encode(sum, kms_hash_len(h), out);
    } else {
        kms_b64_encode(sum, kms_hash_len(h), out);
    }
    c->data = json_pack("{s:s}", "sum", out);
    return 0;
}

static bool valid_source(const char *s)
{
    return strcmp(s, "platform") == 0 || strcmp(s, "seal") == 0 || strcmp(s, "all") == 0;
}

int kms_transit_random(struct kms_ctx *c)
{
    /* the source and the count come from the path only: OpenBao captures both, empty when the
     * path has none, over any body field of the same name (the route's absent_caps) */
    const char *a = kms_cap(c, "source");
    const char *b = kms_cap(c, "urlbytes");
    const char *source = "platform";
    const char *format = "base64";
    const char *count = NULL;
    int64_t bytes = 32;

    (void)kms_param_int(c, "bytes", &bytes);
    (void)kms_param_str(c, "format", &format);
    if (a != NULL && b != NULL) {
        source = a;
        count = b;
    } else if (a != NULL && valid_source(a)) {
        source = a;
    } else if (a != NULL) {
        count = a;
    }
    if (count != NULL && !kms_int_parse(count, &bytes)) {
        return KMS_FAIL(c, 400,
                        "error parsing url-set byte count: strconv.Atoi: parsing \"%s\": invalid "
                        "syntax",
                        count);
    }
    if (bytes < 1) {
        return KMS_FAIL(c, 400, "'bytes' cannot be less than 1");
    }
    if (bytes > RANDOM_MAX) {
        return KMS_FAIL(c, 400, "'bytes' should be less than %d", RANDOM_MAX);
    }
    if (strcmp(format, "hex") != 0 && strcmp(format, "base64") != 0) {
        return KMS_FAIL(c, 400, "unsupported encoding format \"%s\"; must be \"hex\" or \"base64\"",
                        format);
    }
    if (!valid_source(source)) {
        return KMS_FAIL(c, 400,
                        "unsupported entropy source \"%s\"; must be \"platform\" or \"seal\", or "
                        "\"all\"",
                        source);
    }
    if (strcmp(source, "seal") == 0) { /* not for "all", as in OpenBao */
        kms_warn(c, "no seal/entropy augmentation available, using platform entropy source");
    }
    size_t n = (size_t)bytes;
    uint8_t *buf = malloc(n);
    char *out = malloc(2 * n + 4);
    if (buf == NULL || out == NULL || kms_rand_bytes(buf, n) != 0) {
        free(buf);
        free(out);
        return KMS_FAILW(c, 500, "cannot generate random bytes");
    }
    if (strcmp(format, "hex") == 0) {
        kms_hex_encode(buf, n, out);
    } else {
        kms_b64_encode(buf, n, out);
    }
    c->data = json_pack("{s:s}", "random_bytes", out);
    kms_free_wipe((void **)&buf, n);
    kms_free_wipe((void **)&out, 2 * n + 4);
    return 0;
}

const struct kms_field kms_transit_hmac_fields[] = {
    /* OpenBao's schema (path_hmac.go): a top-level "reference" is an unknown parameter */
    {"input", KMS_F_STRING},
    {"algorithm", KMS_F_STRING},
    {"key_version", KMS_F_INT},
    {"batch_input", KMS_F_RAW},
    {NULL, 0},
};

const struct kms_field kms_transit_verify_fields[] = {
    {"input", KMS_F_STRING},
    {"signature", KMS_F_STRING},
    {"hmac", KMS_F_STRING},
    {"algorithm", KMS_F_STRING},
    {"hash_algorithm", KMS_F_STRING},
    {"context", KMS_F_STRING},
    {"prehashed", KMS_F_BOOL},
    {"signature_algorithm", KMS_F_STRING},
    {"marshaling_algorithm", KMS_F_STRING},
    {"salt_length", KMS_F_STRING},
    {"batch_input", KMS_F_RAW}, /* no key_version: the signature or HMAC names its version */
    {NULL, 0},
};

const struct kms_field kms_transit_hash_fields[] = {
    {"input", KMS_F_STRING},
    {"algorithm", KMS_F_STRING},
    {"format", KMS_F_STRING},
    {NULL, 0},
};

const struct kms_field kms_transit_random_fields[] = {
    {"bytes", KMS_F_INT},
    {"format", KMS_F_STRING},
    {"source", KMS_F_STRING},
    {NULL, 0},
};
