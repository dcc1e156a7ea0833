/*
 * k8s.c - the Kubernetes side of a login, verified offline: which service account a JWT
 * names, the role's name/namespace bindings, and the helpers they need (go-glob, CIDRs).
 *
 * Upstream (vault-plugin-auth-kubernetes) trusts the TokenReview API for the final say; kmsd
 * has no API server to ask, so the signature is the only trust and a few checks are added
 * (reference auth-audit.md §1.5): exp is required, and `sub` must be exactly
 * "system:serviceaccount:<ns>:<name>" for the namespace and name the claims carry, which is
 * what the TokenReview username check does upstream. Step order and messages are
 * upstream's: claims, name binding, namespace binding, UID, alias; then our `sub` check
 * (where upstream's TokenReview would run), which fails like TokenReview does: 403
 * "permission denied".
 */
#include "auth/auth_int.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

bool kms_glob_match(const char *pattern, const char *s)
{
    if (pattern[0] == '\0') {
        return s[0] == '\0';
    }
    if (strcmp(pattern, "*") == 0) {
        return true;
    }
    const char *star = strchr(pattern, '*');
    if (star == NULL) {
        return strcmp(pattern, s) == 0;
    }
    size_t plen = strlen(pattern);
    bool leading = pattern[0] == '*';
    bool trailing = pattern[plen - 1] == '*';
    /* Walk the parts between stars in order, as ryanuber/go-glob does. */
    const char *part = pattern;
    const char *subj = s;
    bool first = true;
    for (;;) {
        const char *next = strchr(part, '*');
        if (next == NULL) {
            /* last part: must end the subject unless the pattern ends in '*' */
            size_t pl = strlen(part);
            size_t sl = strlen(subj);
            return trailing || (sl >= pl && strcmp(subj + sl - pl, part) == 0);
        }
        size_t pl = (size_t)(next - part);
        const char *hit = NULL;
        if (pl == 0) {
            hit = subj;
        } else {
            for (const char *q = subj; *q != '\0'; q++) {
                if (strncmp(q, part, pl) == 0) {
                    hit = q;
                    break;
                }
            }
        }
        if (first) {
            if (!leading && hit != subj) {
                return false;
            }
        } else if (hit == NULL) {
            return false;
        }
        if (hit == NULL) {
            return false;
        }
        subj = hit + pl;
        part = next + 1;
        first = false;
    }
}

static bool glob_list(const char *const *list, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++) {
        if (kms_glob_match(list[i], s)) {
            return true;
        }
    }
    return false;
}

/* Parse "addr[/bits]" into family, bytes and prefix length. */
static bool parse_cidr(const char *cidr, int *family, uint8_t addr[16], int *bits)
{
    char buf[64];
    const char *slash = strchr(cidr, '/');
    size_t n = slash ? (size_t)(slash - cidr) : strlen(cidr);
    if (n == 0 || n >= sizeof(buf)) {
        return false;
    }
    memcpy(buf, cidr, n);
    buf[n] = '\0';
    if (inet_pton(AF_INET, buf, addr) == 1) {
        *family = AF_INET;
        *bits = 32;
    } else if (inet_pton(AF_INET6, buf, addr) == 1) {
        *family = AF_INET6;
        *bits = 128;
    } else {
        return false;
    }
    if (slash != NULL) {
        char *end = NULL;
        long b = strtol(slash + 1, &end, 10);
        if (slash[1] == '\0' || *end != '\0' || b < 0 || b > *bits) {
            return false;
        }
        *bits = (int)b;
    }
    return true;
}

bool kms_cidr_valid(const char *cidr)
{
    int fam;
    int bits;
    uint8_t a[16];
    return parse_cidr(cidr, &fam, a, &bits);
}

bool kms_cidr_contains(const char *cidr, const char *addr)
{
    int fam;
    int afam;
    int bits;
    int abits;
    uint8_t net[16];
    uint8_t a[16];

    if (!parse_cidr(cidr, &fam, net, &bits) || !parse_cidr(addr, &afam, a, &abits)) {
        return false;
    }
    if (fam != afam) {
        /* an IPv4-mapped IPv6 peer against an IPv4 block */
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (fam == AF_INET && afam == AF_INET6 && memcmp(a, mapped, 12) == 0) {
            memmove(a, a + 12, 4);
        } else {
            return false;
        }
    }
    int full = bits / 8;
    int rem = bits % 8;
    if (memcmp(net, a, (size_t)full) != 0) {
        return false;
    }
    if (rem != 0) {
        uint8_t mask = (uint8_t)(0xff << (8 - rem));
        if ((net[full] & mask) != (a[full] & mask)) {
            return false;
        }
    }
    return true;
}

/* A string claim: 1 present, 0 absent, -1 wrong type. */
static int str_claim(const json_t *obj, const char *name, char *out, size_t n)
{
    json_t *v = json_object_get(obj, name);
    out[0] = '\0';
    if (v == NULL || json_is_null(v)) {
        return 0;
    }
    if (!json_is_string(v) || json_string_length(v) >= n) {
        return -1;
    }
    snprintf(out, n, "%s", json_string_value(v));
    return 1;
}

int kms_k8s_sa_from_claims(const json_t *claims, struct kms_k8s_sa *sa, struct kms_err *err)
{
    memset(sa, 0, sizeof(*sa));
    if (str_claim(claims, "sub", sa->sub, sizeof(sa->sub)) < 0 ||
        str_claim(claims, "kubernetes.io/serviceaccount/namespace", sa->ns, sizeof(sa->ns)) < 0 ||
        str_claim(claims, "kubernetes.io/serviceaccount/service-account.name", sa->name,
                  sizeof(sa->name)) < 0 ||
        str_claim(claims, "kubernetes.io/serviceaccount/service-account.uid", sa->uid,
                  sizeof(sa->uid)) < 0 ||
        str_claim(claims, "kubernetes.io/serviceaccount/secret.name", sa->secret_name,
                  sizeof(sa->secret_name)) < 0) {
        return kms_err_set(err, 403, "permission denied");
    }
    json_t *k = json_object_get(claims, "kubernetes.io");
    if (k == NULL || json_is_null(k)) {
        return 0;
    }
    if (!json_is_object(k)) {
        return kms_err_set(err, 403, "permission denied");
    }
    /* Projected form wins: namespace from it, name and uid from its serviceaccount. */
    if (str_claim(k, "namespace", sa->ns, sizeof(sa->ns)) < 0) {
        return kms_err_set(err, 403, "permission denied");
    }
    json_t *svc = json_object_get(k, "serviceaccount");
    if (svc != NULL && !json_is_null(svc)) {
        if (!json_is_object(svc) || str_claim(svc, "name", sa->name, sizeof(sa->name)) < 0 ||
            str_claim(svc, "uid", sa->uid, sizeof(sa->uid)) < 0) {
            return kms_err_set(err, 403, "permission denied");
        }
    }
    json_t *pod = json_object_get(k, "pod");
    if (pod != NULL && !json_is_null(pod) && !json_is_object(pod)) {
        return kms_err_set(err, 403, "permission denied");
    }
    return 0;
}

int kms_k8s_login_validate(const struct kms_k8s_login *in, struct kms_k8s_sa *sa,
                           struct kms_err *err)
{
    json_t *claims = NULL;
    const char *aud[1] = {in->audience};
    char want[600];
    int rc = -1;

    memset(sa, 0, sizeof(*sa));
    if (kms_jwt_verify(in->jwt, in->keys, &claims, err) != 0) {
        goto out;
    }
    struct kms_jwt_expect e = {
        .now = in->now,
        .issuer = in->issuer,
        .audiences = aud,
        .naudiences = in->audience != NULL && in->audience[0] != '\0' ? 1 : 0,
        .require_exp = true,
        .exp_leeway = 60,
        .nbf_leeway = 60,
        .iat_leeway = 60,
    };
    if (kms_jwt_validate(claims, &e, 403, err) != 0 ||
        kms_k8s_sa_from_claims(claims, sa, err) != 0) {
        goto out;
    }
    if (in->nnames > 1 || (in->nnames == 1 && strcmp(in->names[0], "*") != 0)) {
        if (!glob_list(in->names, in->nnames, sa->name)) {
            kms_err_set(err, 403, "service account name not authorized");
            goto out;
        }
    }
    if (in->nnamespaces == 0 || !(strcmp(in->namespaces[0], "*") == 0 ||
                                  glob_list(in->namespaces, in->nnamespaces, sa->ns))) {
        kms_err_set(err, 403, "namespace not authorized");
        goto out;
    }
    if (sa->uid[0] == '\0') {
        kms_err_set(err, 500, "could not parse UID from claims");
        goto out;
    }
    if (in->alias_by_name && (sa->ns[0] == '\0' || sa->name[0] == '\0')) {
        kms_err_set(err, 500, "service account namespace and name must be set");
        goto out;
    }
    /* Offline stand-in for the TokenReview username check. */
    int w = snprintf(want, sizeof(want), "system:serviceaccount:%s:%s", sa->ns, sa->name);
    if (w < 0 || (size_t)w >= sizeof(want) || sa->ns[0] == '\0' || sa->name[0] == '\0' ||
        strcmp(want, sa->sub) != 0) {
        kms_err_set(err, 403, "permission denied");
        goto out;
    }
    kms_err_clear(err);
    rc = 0;
out:
    json_decref(claims);
    return rc;
}
