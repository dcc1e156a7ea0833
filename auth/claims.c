/*
 * claims.c - reading and matching JWT claims as OpenBao's jwt method does: JSON-pointer claim
 * names ("/a/b/0"), bound values matched exactly or as globs, claims rendered as strings for
 * metadata.
 */
#include "auth/auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

json_t *kms_claims_get(json_t *claims, const char *name)
{
    if (name[0] != '/') {
        return json_object_get(claims, name);
    }
    json_t *cur = claims;
    const char *p = name + 1;
    char seg[256];
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        size_t o = 0;
        for (size_t i = 0; i < n; i++) {
            if (o + 1 == sizeof(seg)) {
                /* a segment too long to hold names no claim: never a truncated, other name */
                return NULL;
            }
            if (p[i] == '~' && i + 1 < n && (p[i + 1] == '0' || p[i + 1] == '1')) {
                seg[o++] = p[i + 1] == '0' ? '~' : '/';
                i++;
            } else {
                seg[o++] = p[i];
            }
        }
        seg[o] = '\0';
        if (json_is_object(cur)) {
            cur = json_object_get(cur, seg);
        } else if (json_is_array(cur)) {
            char *end = NULL;
            long idx = strtol(seg, &end, 10);
            cur = (*seg != '\0' && *end == '\0' && idx >= 0) ? json_array_get(cur, (size_t)idx)
                                                             : NULL;
        } else {
            cur = NULL;
        }
        if (cur == NULL || slash == NULL) {
            return cur;
        }
        p = slash + 1;
    }
}

bool kms_claims_match(const json_t *have, const json_t *want, bool glob)
{
    size_t i;
    json_t *w;
    const char *hs = json_string_value(have);
    char buf[64];
    if (hs == NULL && json_is_boolean(have)) {
        hs = json_is_true(have) ? "true" : "false";
    } else if (hs == NULL && json_is_integer(have)) {
        snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(have));
        hs = buf;
    }
    if (hs == NULL) {
        return false;
    }
    if (json_is_string(want)) {
        const char *ws = json_string_value(want);
        return glob ? kms_glob_match(ws, hs) : strcmp(ws, hs) == 0;
    }
    json_array_foreach(want, i, w)
    {
        if (kms_claims_match(have, w, glob)) {
            return true;
        }
    }
    return false;
}

void kms_claims_string(const json_t *v, char *out, size_t n)
{
    if (json_is_string(v)) {
        snprintf(out, n, "%s", json_string_value(v));
    } else if (json_is_integer(v)) {
        snprintf(out, n, "%lld", (long long)json_integer_value(v));
    } else if (json_is_boolean(v)) {
        snprintf(out, n, "%s", json_is_true(v) ? "true" : "false");
    } else {
        out[0] = '\0';
    }
}

int kms_claims_bound(json_t *claims, const json_t *bound, bool glob, struct kms_err *err)
{
    const char *bk;
    json_t *bv;
    json_object_foreach((json_t *)bound, bk, bv)
    {
        json_t *have = kms_claims_get(claims, bk);
        bool hit = false;
        if (have == NULL) {
            return kms_err_set(err, 400, "error validating claims: claim \"%s\" is missing", bk);
        }
        if (json_is_array(have)) {
            size_t i;
            json_t *h;
            json_array_foreach(have, i, h)
            {
                hit = hit || kms_claims_match(h, bv, glob);
            }
        } else {
            hit = kms_claims_match(have, bv, glob);
        }
        if (!hit) {
            return kms_err_set(err, 400,
                               "error validating claims: claim \"%s\" does not match any "
                               "associated bound claim values",
                               bk);
        }
    }
    return 0;
}

bool kms_jwt_alg_allowed(const char *jwt, const json_t *algs)
{
    const char *dot = strchr(jwt, '.');
    uint8_t *hb = NULL;
    size_t hl = 0;
    bool ok = false;
    if (json_array_size(algs) == 0) {
        return true;
    }
    /* the header was already validated by kms_jwt_verify; re-read its alg to compare */
    if (dot != NULL && kms_b64url_decode_alloc(jwt, (size_t)(dot - jwt), &hb, &hl) == 0) {
        json_t *h = json_loadb((const char *)hb, hl, 0, NULL);
        const char *alg = json_string_value(json_object_get(h, "alg"));
        size_t i;
        json_t *a;
        json_array_foreach(algs, i, a)
        {
            ok = ok || (alg != NULL && json_is_string(a) && strcmp(alg, json_string_value(a)) == 0);
        }
        json_decref(h);
    }
    free(hb);
    return ok;
}
