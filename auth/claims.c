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
        for (size_t i = 0; i < n && o + 1 < sizeof(seg); i++) {
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
