/*
 * token.c - the token store.
 *
 * A token is never stored: its record key is HMAC-SHA256(token_key, token), where token_key
 * is a random 32-byte value kept (sealed) in the meta database. Looking a token up is then
 * one keyed hash and one LMDB read, so timing reveals nothing about partial matches. The
 * record value is a small JSON document with the token's accessor, policies and metadata.
 */
#include "auth/auth.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define TOKEN_KEY_META "token_hmac_key"

struct kms_auth {
    struct kms_storage *st;
    uint8_t token_key[32];
};

static const char *const op_names[] = {
    [KMS_OP_READ] = "read",     [KMS_OP_LIST] = "list",     [KMS_OP_CREATE] = "create",
    [KMS_OP_UPDATE] = "update", [KMS_OP_DELETE] = "delete", [KMS_OP_PATCH] = "patch",
};

const char *kms_op_name(enum kms_op op)
{
    return op_names[op];
}

int kms_auth_create(struct kms_storage *st, struct kms_auth **out, struct kms_err *err)
{
    struct kms_auth *auth = NULL;
    struct kms_txn *txn = NULL;
    uint8_t *val = NULL;
    size_t vallen = 0;
    int rc = -1;

    auth = calloc(1, sizeof(*auth));
    if (auth == NULL) {
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    auth->st = st;
    if (kms_storage_txn_begin(st, true, &txn) != 0) {
        kms_err_set(err, 500, "cannot open storage transaction");
        goto out;
    }
    int g =
        kms_storage_get(txn, KMS_DB_META, TOKEN_KEY_META, strlen(TOKEN_KEY_META), &val, &vallen);
    if (g == 0 && vallen == sizeof(auth->token_key)) {
        memcpy(auth->token_key, val, vallen);
        kms_storage_txn_abort(&txn);
    } else if (g == KMS_STORAGE_NOTFOUND) {
        if (kms_rand_bytes(auth->token_key, sizeof(auth->token_key)) != 0 ||
            kms_storage_put(txn, KMS_DB_META, TOKEN_KEY_META, strlen(TOKEN_KEY_META),
                            auth->token_key, sizeof(auth->token_key)) != 0 ||
            kms_storage_txn_commit(&txn) != 0) {
            kms_err_set(err, 500, "cannot create the token key");
            goto out;
        }
    } else {
        kms_err_set(err, 500, "cannot read the token key");
        goto out;
    }
    *out = auth;
    auth = NULL;
    rc = 0;
out:
    kms_storage_txn_abort(&txn);
    kms_free_wipe((void **)&val, vallen);
    if (auth != NULL) {
        kms_memzero(auth, sizeof(*auth));
        free(auth);
    }
    return rc;
}

void kms_auth_destroy(struct kms_auth **auth)
{
    if (*auth == NULL) {
        return;
    }
    kms_memzero(*auth, sizeof(**auth));
    free(*auth);
    *auth = NULL;
}

static int token_hash(const struct kms_auth *auth, const char *token, uint8_t out[32])
{
    return kms_hmac(KMS_HASH_SHA2_256, auth->token_key, sizeof(auth->token_key), token,
                    strlen(token), out);
}

static int token_valid_custom_id(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n >= KMS_TOKEN_MAX_LEN || strchr(id, '.') != NULL) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)id[i];
        if (ch < 0x21 || ch > 0x7e) {
            return 0;
        }
    }
    return 1;
}

int kms_auth_token_create_root(struct kms_auth *auth, struct kms_txn *txn, const char *id,
                               char *out, struct kms_err *err)
{
    char token[KMS_TOKEN_MAX_LEN];
    char accessor[25];
    uint8_t hash[32];
    json_t *rec = NULL;
    char *text = NULL;
    int64_t sec;
    int32_t nsec;
    int rc = -1;

    if (id != NULL) {
        if (!token_valid_custom_id(id)) {
            kms_err_set(err, 400,
                        "invalid root token id: it must be printable ASCII without "
                        "'.' and shorter than %d characters",
                        KMS_TOKEN_MAX_LEN);
            goto out;
        }
        snprintf(token, sizeof(token), "%s", id);
    } else {
        token[0] = 's';
        token[1] = '.';
        if (kms_rand_base62(token + 2, 24) != 0) {
            kms_err_set(err, 500, "cannot generate a token");
            goto out;
        }
    }
    if (kms_rand_base62(accessor, 24) != 0 || token_hash(auth, token, hash) != 0) {
        kms_err_set(err, 500, "cannot generate a token");
        goto out;
    }
    kms_now(&sec, &nsec);
    rec = json_pack("{s:s, s:s, s:s, s:s, s:[s], s:I, s:I}", "accessor", accessor, "display_name",
                    "root", "namespace_id", "root", "path", "auth/token/root", "policies", "root",
                    "creation_time", (json_int_t)sec, "expire_time", (json_int_t)0);
    text = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
    if (text == NULL ||
        kms_storage_put(txn, KMS_DB_TOKENS, hash, sizeof(hash), text, strlen(text)) != 0) {
        kms_err_set(err, 500, "cannot store the root token");
        goto out;
    }
    snprintf(out, KMS_TOKEN_MAX_LEN, "%s", token);
    rc = 0;
out:
    kms_memzero(token, sizeof(token));
    kms_memzero(hash, sizeof(hash));
    json_decref(rec);
    free(text);
    return rc;
}

static void copy_str(char *dst, size_t n, const json_t *v)
{
    const char *s = json_is_string(v) ? json_string_value(v) : "";
    snprintf(dst, n, "%s", s);
}

int kms_auth_token_lookup(struct kms_auth *auth, const char *token, struct kms_token *out)
{
    uint8_t hash[32];
    uint8_t *val = NULL;
    size_t vallen = 0;
    struct kms_txn *txn = NULL;
    json_t *rec = NULL;
    int rc = -1;

    memset(out, 0, sizeof(*out));
    if (token == NULL || token[0] == '\0' || strlen(token) >= KMS_TOKEN_MAX_LEN) {
        rc = KMS_STORAGE_NOTFOUND;
        goto out;
    }
    if (token_hash(auth, token, hash) != 0 || kms_storage_txn_begin(auth->st, false, &txn) != 0) {
        goto out;
    }
    int g = kms_storage_get(txn, KMS_DB_TOKENS, hash, sizeof(hash), &val, &vallen);
    kms_storage_txn_abort(&txn);
    if (g != 0) {
        rc = g;
        goto out;
    }
    rec = json_loadb((const char *)val, vallen, 0, NULL);
    if (!json_is_object(rec)) {
        goto out;
    }
    copy_str(out->accessor, sizeof(out->accessor), json_object_get(rec, "accessor"));
    copy_str(out->display_name, sizeof(out->display_name), json_object_get(rec, "display_name"));
    copy_str(out->ns_id, sizeof(out->ns_id), json_object_get(rec, "namespace_id"));
    copy_str(out->path, sizeof(out->path), json_object_get(rec, "path"));
    out->creation_time = json_integer_value(json_object_get(rec, "creation_time"));
    out->expire_time = json_integer_value(json_object_get(rec, "expire_time"));
    json_t *pols = json_object_get(rec, "policies");
    size_t i;
    json_t *p;
    json_array_foreach(pols, i, p)
    {
        if (out->npolicies == KMS_TOKEN_MAX_POLICIES) {
            break;
        }
        copy_str(out->policies[out->npolicies], sizeof(out->policies[0]), p);
        if (strcmp(out->policies[out->npolicies], "root") == 0) {
            out->root = true;
        }
        out->npolicies++;
    }
    if (out->expire_time != 0) {
        int64_t now;
        int32_t nsec;
        kms_now(&now, &nsec);
        if (now >= out->expire_time) {
            memset(out, 0, sizeof(*out));
            rc = KMS_STORAGE_NOTFOUND;
            goto out;
        }
    }
    rc = 0;
out:
    kms_memzero(hash, sizeof(hash));
    kms_free_wipe((void **)&val, vallen);
    json_decref(rec);
    return rc;
}

int kms_auth_check(struct kms_auth *auth, const struct kms_token *tok, const char *ns_path,
                   const char *tok_ns_path, const char *path, enum kms_op op, bool *allowed)
{
    (void)auth;
    (void)path;
    (void)op;
    *allowed = false;
    /* A token acts in its own namespace and its descendants only. */
    size_t tl = strlen(tok_ns_path);
    if (strncmp(ns_path, tok_ns_path, tl) != 0) {
        return 0;
    }
    if (tok->root) {
        *allowed = true;
    }
    return 0;
}
