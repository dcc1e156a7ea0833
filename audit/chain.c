/*
 * chain.c - the chain suffix of an audit line (`"seq":N,"prev_hash":"…","hash":"…"}`):
 * parsing it and hashing the prefix it covers. Pure functions, shared by the devices and by
 * the offline verifier, so kmsctl's `audit verify` links these without the devices and the
 * storage they keep their salt in.
 */
#include "audit/audit_int.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

int kms_audit_chain_hash(const char *p, size_t n, char out[KMS_AUDIT_HASH_LEN + 1])
{
    uint8_t h[32];
    if (kms_hash(KMS_HASH_SHA2_256, p, n, h) != 0) {
        return -1;
    }
    memcpy(out, "sha256:", 7);
    kms_hex_encode(h, sizeof(h), out + 7);
    return 0;
}

bool kms_audit_is_chain_hash(const char *p)
{
    if (memcmp(p, "sha256:", 7) != 0) {
        return false;
    }
    for (size_t i = 7; i < KMS_AUDIT_HASH_LEN; i++) {
        char ch = p[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) {
            return false;
        }
    }
    return true;
}

int kms_audit_line_chain(const char *line, size_t n, uint64_t *seq,
                         char prev[KMS_AUDIT_HASH_LEN + 1], char hash[KMS_AUDIT_HASH_LEN + 1],
                         size_t *prefix_len)
{
    static const char hk[] = ",\"hash\":\"";
    static const char pk[] = ",\"prev_hash\":\"";
    static const char sk[] = ",\"seq\":";
    size_t tail = (sizeof(hk) - 1) + KMS_AUDIT_HASH_LEN + 2;
    size_t ptail = (sizeof(pk) - 1) + KMS_AUDIT_HASH_LEN + 1;

    if (n < tail + ptail + sizeof(sk) || memcmp(line + n - 2, "\"}", 2) != 0) {
        return -1;
    }
    size_t hpos = n - tail;
    if (memcmp(line + hpos, hk, sizeof(hk) - 1) != 0 ||
        !kms_audit_is_chain_hash(line + hpos + sizeof(hk) - 1)) {
        return -1;
    }
    size_t ppos = hpos - ptail;
    if (memcmp(line + ppos, pk, sizeof(pk) - 1) != 0 ||
        !kms_audit_is_chain_hash(line + ppos + sizeof(pk) - 1) || line[hpos - 1] != '"') {
        return -1;
    }
    size_t d = ppos;
    uint64_t v = 0;
    uint64_t mul = 1;
    while (d > 0 && line[d - 1] >= '0' && line[d - 1] <= '9' && ppos - d < 20) {
        d--;
        v += (uint64_t)(line[d] - '0') * mul;
        mul *= 10;
    }
    if (d == ppos || d < sizeof(sk) - 1 ||
        memcmp(line + d - (sizeof(sk) - 1), sk, sizeof(sk) - 1) != 0) {
        return -1;
    }
    *seq = v;
    memcpy(prev, line + ppos + sizeof(pk) - 1, KMS_AUDIT_HASH_LEN);
    prev[KMS_AUDIT_HASH_LEN] = '\0';
    memcpy(hash, line + hpos + sizeof(hk) - 1, KMS_AUDIT_HASH_LEN);
    hash[KMS_AUDIT_HASH_LEN] = '\0';
    *prefix_len = hpos;
    return 0;
}
