/*
 * keyring.c - Transit key policies and the symmetric operations on their versions.
 *
 * Design notes:
 * - Behaviour and messages follow OpenBao's keysutil policy and the transit config/trim
 *   handlers (reference sections 2.2-2.5, 3.5, 3.7). Decrypt checks run in OpenBao's order:
 *   prefix, field split, version parse, too new, too old, old convergent version, base64,
 *   key derivation (missing context), payload length, AEAD open.
 * - Derived keys: HKDF-SHA256(IKM = version key, empty salt, info = raw context), or, for
 *   imported derived keys (kdf_counter), OpenBao's legacy NIST SP 800-108 counter mode: one
 *   HMAC-SHA256(version key, BE32(0) || context || BE32(256)), 32 bytes whatever the key
 *   size, of which the operation takes its key's length (aes128 its first 16). Convergent
 *   keys (version 3) derive keylen + 32 bytes; the tail is the HMAC-SHA256 key whose output,
 *   truncated to the nonce size, is the nonce. HKDF output is prefix-consistent, so decrypt
 *   derives only keylen bytes.
 * - Config and trim work on a copy of the policy and publish it only when every check has
 *   passed, so the caller's policy is unchanged on error.
 * - Records are fixed-layout, little-endian, led by a format byte. Decoders treat input as
 *   untrusted: exact length, known format, enum and flag ranges, version invariants.
 * - Derived keys live on the stack and are wiped at `out:` on every path.
 */
#include "crypto/crypto_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char KMS_MSG_SOFT_DELETED[] = "refusing to use soft-deleted key";

const char KMS_MSG_MISSING_CONTEXT[] =
    "missing 'context' for key derivation; the key was created using a derived key, which "
    "means additional, per-request information must be included in order to perform "
    "operations with the key";

#define CT_PREFIX "vault:v"
#define CT_PREFIX_LEN (sizeof(CT_PREFIX) - 1)
#define NONCE_KEY_LEN 32

/* ---- key types --------------------------------------------------------------------------- */

#define KT_ENC 0x01u    /* encryption and decryption */
#define KT_SIGN 0x02u   /* signing and verification */
#define KT_DERIVE 0x04u /* derivation */
#define KT_AEAD 0x08u

static const struct {
    const char *name;
    size_t key_len; /* AEAD key length, 0 for the other types */
    enum kms_key_type type;
    enum kms_aead aead;
    unsigned caps;
} key_types[] = {
    {"aes128-gcm96", 16, KMS_KEY_AES128_GCM96, KMS_AEAD_AES128_GCM, KT_ENC | KT_DERIVE | KT_AEAD},
    {"aes256-gcm96", 32, KMS_KEY_AES256_GCM96, KMS_AEAD_AES256_GCM, KT_ENC | KT_DERIVE | KT_AEAD},
    {"chacha20-poly1305", 32, KMS_KEY_CHACHA20_POLY1305, KMS_AEAD_CHACHA20_POLY1305,
     KT_ENC | KT_DERIVE | KT_AEAD},
    {"xchacha20-poly1305", 32, KMS_KEY_XCHACHA20_POLY1305, KMS_AEAD_XCHACHA20_POLY1305,
     KT_ENC | KT_DERIVE | KT_AEAD},
    {"ed25519", 0, KMS_KEY_ED25519, KMS_AEAD_AES256_GCM, KT_SIGN | KT_DERIVE},
    {"ecdsa-p256", 0, KMS_KEY_ECDSA_P256, KMS_AEAD_AES256_GCM, KT_SIGN},
    {"ecdsa-p384", 0, KMS_KEY_ECDSA_P384, KMS_AEAD_AES256_GCM, KT_SIGN},
    {"ecdsa-p521", 0, KMS_KEY_ECDSA_P521, KMS_AEAD_AES256_GCM, KT_SIGN},
    {"rsa-2048", 0, KMS_KEY_RSA2048, KMS_AEAD_AES256_GCM, KT_ENC | KT_SIGN},
    {"rsa-3072", 0, KMS_KEY_RSA3072, KMS_AEAD_AES256_GCM, KT_ENC | KT_SIGN},
    {"rsa-4096", 0, KMS_KEY_RSA4096, KMS_AEAD_AES256_GCM, KT_ENC | KT_SIGN},
    {"hmac", 0, KMS_KEY_HMAC, KMS_AEAD_AES256_GCM, 0},
};
#define N_KEY_TYPES (sizeof(key_types) / sizeof(key_types[0]))

static int key_type_index(enum kms_key_type t)
{
    for (size_t i = 0; i < N_KEY_TYPES; i++) {
        if (key_types[i].type == t)
            return (int)i;
    }
    return -1;
}

int kms_key_type_parse(const char *name, enum kms_key_type *out)
{
    if (name == NULL)
        return -1;
    for (size_t i = 0; i < N_KEY_TYPES; i++) {
        if (strcmp(key_types[i].name, name) == 0) {
            *out = key_types[i].type;
            return 0;
        }
    }
    return -1;
}

const char *kms_key_type_name(enum kms_key_type t)
{
    int i = key_type_index(t);

    return i >= 0 ? key_types[i].name : "[unknown]";
}

size_t kms_key_type_key_len(enum kms_key_type t)
{
    int i = key_type_index(t);

    return i >= 0 ? key_types[i].key_len : 0;
}

enum kms_aead kms_key_type_aead(enum kms_key_type t)
{
    int i = key_type_index(t);

    return i >= 0 ? key_types[i].aead : KMS_AEAD_AES256_GCM;
}

static bool key_type_has(enum kms_key_type t, unsigned cap)
{
    int i = key_type_index(t);

    return i >= 0 && (key_types[i].caps & cap) != 0;
}

bool kms_key_type_is_aead(enum kms_key_type t)
{
    return key_type_has(t, KT_AEAD);
}

bool kms_key_type_supports_encryption(enum kms_key_type t)
{
    return key_type_has(t, KT_ENC);
}

bool kms_key_type_supports_signing(enum kms_key_type t)
{
    return key_type_has(t, KT_SIGN);
}

bool kms_key_type_supports_derivation(enum kms_key_type t)
{
    return key_type_has(t, KT_DERIVE);
}

static bool is_rsa(enum kms_key_type t)
{
    return t == KMS_KEY_RSA2048 || t == KMS_KEY_RSA3072 || t == KMS_KEY_RSA4096;
}

/* ---- policy and versions ----------------------------------------------------------------- */

int kms_key_policy_init(struct kms_key_policy *p, enum kms_key_type type)
{
    int32_t nsec = 0;

    memset(p, 0, sizeof(*p));
    if (key_type_index(type) < 0)
        return -1;
    p->type = type;
    /* Version numbering starts at 1, so the decryption floor is 1 from the start. */
    p->min_decryption_version = 1;
    kms_now(&p->created_sec, &nsec);
    return kms_uuid4(p->uuid);
}

int kms_key_policy_check_new(const struct kms_key_policy *p, struct kms_err *err)
{
    const char *name = kms_key_type_name(p->type);

    if (p->type == KMS_KEY_ED25519 && p->convergent)
        return kms_err_setw(err, 500, "convergent encryption not supported for keys of type %s",
                            name);
    if (!kms_key_type_is_aead(p->type) && p->type != KMS_KEY_ED25519 &&
        (p->derived || p->convergent))
        return kms_err_setw(
            err, 500, "key derivation and convergent encryption not supported for keys of type %s",
            name);
    if (p->type == KMS_KEY_HMAC &&
        (p->key_size < KMS_HMAC_KEY_MIN || p->key_size > KMS_HMAC_KEY_MAX))
        return kms_err_setw(err, 500,
                            "invalid key size for HMAC key, must be between %d and %d bytes",
                            KMS_HMAC_KEY_MIN, KMS_HMAC_KEY_MAX);
    return 0;
}

const uint8_t *kms_key_version_hmac_key(const struct kms_key_policy *p,
                                        const struct kms_key_version *kv, size_t *len)
{
    if (p->type == KMS_KEY_HMAC) {
        *len = kv->key_len;
        return kv->key;
    }
    *len = sizeof(kv->hmac_key);
    return kv->hmac_key;
}

int kms_key_version_generate(const struct kms_key_policy *p, uint32_t version,
                             struct kms_key_version *out)
{
    size_t keylen = kms_key_type_key_len(p->type);
    int rc = -1;

    memset(out, 0, sizeof(*out));
    if (version == 0 || key_type_index(p->type) < 0)
        goto out;
    out->version = version;
    if (kms_key_type_is_aead(p->type)) {
        /* The record keeps 32 bytes whatever the AEAD key length (version format 1). */
        out->key_len = 32;
        if (kms_rand_bytes(out->key, keylen) != 0)
            goto out;
    } else if (p->type == KMS_KEY_HMAC) {
        if (p->key_size < KMS_HMAC_KEY_MIN || p->key_size > KMS_HMAC_KEY_MAX)
            goto out;
        out->key_len = p->key_size;
        if (kms_rand_bytes(out->key, p->key_size) != 0)
            goto out;
    } else if (kms_asym_generate(p->type, out->key, &out->key_len) != 0) {
        goto out;
    }
    if (kms_rand_bytes(out->hmac_key, sizeof(out->hmac_key)) != 0)
        goto out;
    kms_now(&out->created_sec, &out->created_nsec);
    out->convergent_version = p->convergent ? KMS_KEY_CONVERGENT_VERSION : 0;
    rc = 0;
out:
    if (rc != 0)
        kms_memzero(out, sizeof(*out));
    return rc;
}

/* ---- persistence ------------------------------------------------------------------------- */

/*
 * Format 1 records are what every key had before the asymmetric and hmac types; they are
 * still written whenever they can hold the value, so older binaries keep reading stores of
 * symmetric keys. Format 2 adds a u32 key_size to the policy, and a u16 material length
 * before variable-length material to the version.
 */
#define POLICY_FMT_V1 1
#define POLICY_ENC_LEN_V1 71 /* fmt, type, flags, 4 x u32, 2 x i64, 36-byte uuid */
#define POLICY_FMT_V2 2
#define POLICY_ENC_LEN_V2 75 /* V1 + u32 key_size */
#define POLICY_FMT_V3 3
#define POLICY_ENC_LEN_V3 76 /* V2 + u8 flags2; written only when flags2 is not 0 */
#define VERSION_FMT_V1 1
#define VERSION_ENC_LEN_V1 82 /* fmt, u32 version, key[32], hmac[32], i64, i32, u8 */
#define VERSION_FMT_V2 2
#define VERSION_ENC_LEN_V2_BASE 52 /* fmt, u32 version, u16 len, hmac[32], i64, i32, u8 */

#define PF_DERIVED 0x01u
#define PF_CONVERGENT 0x02u
#define PF_EXPORTABLE 0x04u
#define PF_PLAINTEXT_BACKUP 0x08u
#define PF_DELETION_ALLOWED 0x10u
#define PF_IMPORTED 0x20u
#define PF_IMPORTED_ROTATION 0x40u
#define PF_SOFT_DELETED 0x80u
#define PF_ALL 0xffu
#define PF2_KDF_COUNTER 0x01u
#define PF2_ALL 0x01u

_Static_assert(POLICY_ENC_LEN_V1 <= KMS_KEY_POLICY_ENC_MAX, "policy record too large");
_Static_assert(VERSION_ENC_LEN_V1 <= KMS_KEY_VERSION_ENC_MAX, "version record too large");
_Static_assert(POLICY_ENC_LEN_V3 <= KMS_KEY_POLICY_ENC_MAX, "policy record too large");
_Static_assert(VERSION_ENC_LEN_V2_BASE + KMS_KEY_MATERIAL_MAX <= KMS_KEY_VERSION_ENC_MAX,
               "version record too large");

static void put_u32(uint8_t *b, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *b, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *b)
{
    uint32_t v = 0;

    for (int i = 3; i >= 0; i--)
        v = v << 8 | b[i];
    return v;
}

static uint64_t get_u64(const uint8_t *b)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = v << 8 | b[i];
    return v;
}

/* Two's-complement reinterpretation without implementation-defined conversions. */
static int64_t u64_to_i64(uint64_t v)
{
    if (v <= (uint64_t)INT64_MAX)
        return (int64_t)v;
    return -(int64_t)(~v) - 1;
}

static bool uuid_valid(const char *u)
{
    for (int i = 0; i < 36; i++) {
        char c = u[i];
        bool dash = (i == 8 || i == 13 || i == 18 || i == 23);

        if (dash ? c != '-' : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    return true;
}

size_t kms_key_policy_encode(const struct kms_key_policy *p, uint8_t *buf)
{
    uint8_t flags = 0;
    size_t o = 0;

    flags |= p->derived ? PF_DERIVED : 0;
    flags |= p->convergent ? PF_CONVERGENT : 0;
    flags |= p->exportable ? PF_EXPORTABLE : 0;
    flags |= p->allow_plaintext_backup ? PF_PLAINTEXT_BACKUP : 0;
    flags |= p->deletion_allowed ? PF_DELETION_ALLOWED : 0;
    flags |= p->imported ? PF_IMPORTED : 0;
    flags |= p->allow_imported_rotation ? PF_IMPORTED_ROTATION : 0;
    flags |= p->soft_deleted ? PF_SOFT_DELETED : 0;
    uint8_t flags2 = p->kdf_counter ? PF2_KDF_COUNTER : 0;
    buf[o++] = flags2 != 0 ? POLICY_FMT_V3 : p->key_size != 0 ? POLICY_FMT_V2 : POLICY_FMT_V1;
    buf[o++] = (uint8_t)p->type;
    buf[o++] = flags;
    put_u32(buf + o, p->latest_version);
    o += 4;
    put_u32(buf + o, p->min_decryption_version);
    o += 4;
    put_u32(buf + o, p->min_encryption_version);
    o += 4;
    put_u32(buf + o, p->min_available_version);
    o += 4;
    put_u64(buf + o, (uint64_t)p->auto_rotate_period);
    o += 8;
    put_u64(buf + o, (uint64_t)p->created_sec);
    o += 8;
    memcpy(buf + o, p->uuid, 36);
    o += 36;
    if (p->key_size != 0 || flags2 != 0) {
        put_u32(buf + o, p->key_size);
        o += 4;
    }
    if (flags2 != 0)
        buf[o++] = flags2;
    return o;
}

int kms_key_policy_decode(const uint8_t *buf, size_t len, struct kms_key_policy *p)
{
    struct kms_key_policy q;
    size_t o = 3;
    uint8_t flags;

    memset(&q, 0, sizeof(q));
    if (buf == NULL || !((len == POLICY_ENC_LEN_V1 && buf[0] == POLICY_FMT_V1) ||
                         (len == POLICY_ENC_LEN_V2 && buf[0] == POLICY_FMT_V2) ||
                         (len == POLICY_ENC_LEN_V3 && buf[0] == POLICY_FMT_V3)))
        return -1;
    if (buf[1] >= N_KEY_TYPES || key_type_index((enum kms_key_type)buf[1]) < 0)
        return -1;
    q.type = (enum kms_key_type)buf[1];
    flags = buf[2];
    if ((flags & ~PF_ALL) != 0)
        return -1;
    q.derived = (flags & PF_DERIVED) != 0;
    q.convergent = (flags & PF_CONVERGENT) != 0;
    q.exportable = (flags & PF_EXPORTABLE) != 0;
    q.allow_plaintext_backup = (flags & PF_PLAINTEXT_BACKUP) != 0;
    q.deletion_allowed = (flags & PF_DELETION_ALLOWED) != 0;
    q.imported = (flags & PF_IMPORTED) != 0;
    q.allow_imported_rotation = (flags & PF_IMPORTED_ROTATION) != 0;
    q.soft_deleted = (flags & PF_SOFT_DELETED) != 0;
    q.latest_version = get_u32(buf + o);
    o += 4;
    q.min_decryption_version = get_u32(buf + o);
    o += 4;
    q.min_encryption_version = get_u32(buf + o);
    o += 4;
    q.min_available_version = get_u32(buf + o);
    o += 4;
    q.auto_rotate_period = u64_to_i64(get_u64(buf + o));
    o += 8;
    q.created_sec = u64_to_i64(get_u64(buf + o));
    o += 8;
    memcpy(q.uuid, buf + o, 36);
    q.uuid[36] = '\0';
    o += 36;
    if (buf[0] != POLICY_FMT_V1)
        q.key_size = get_u32(buf + o);
    if (buf[0] == POLICY_FMT_V3) {
        uint8_t flags2 = buf[o + 4];
        if (flags2 == 0 || (flags2 & ~PF2_ALL) != 0)
            return -1;
        q.kdf_counter = (flags2 & PF2_KDF_COUNTER) != 0;
    }

    /* Convergent encryption is only defined on top of derivation. */
    if (q.convergent && !q.derived)
        return -1;
    /* The creation rules of kms_key_policy_check_new hold for every stored key. */
    if ((q.convergent && !kms_key_type_is_aead(q.type)) ||
        (q.derived && !kms_key_type_supports_derivation(q.type)))
        return -1;
    /* the counter KDF gives 32 bytes: no room for a convergent key's nonce key */
    if (q.kdf_counter && (!q.derived || q.convergent || !kms_key_type_is_aead(q.type)))
        return -1;
    if (q.type == KMS_KEY_HMAC ? q.key_size < KMS_HMAC_KEY_MIN || q.key_size > KMS_HMAC_KEY_MAX
                               : q.key_size != 0)
        return -1;
    if (q.min_decryption_version < 1 || q.auto_rotate_period < 0)
        return -1;
    if (q.latest_version > 0 &&
        (q.min_decryption_version > q.latest_version ||
         q.min_encryption_version > q.latest_version || q.min_available_version > q.latest_version))
        return -1;
    if (!uuid_valid(q.uuid))
        return -1;
    *p = q;
    return 0;
}

size_t kms_key_version_encode(const struct kms_key_version *v, uint8_t *buf)
{
    bool v1 = v->key_len == 32;
    size_t klen = v->key_len <= KMS_KEY_MATERIAL_MAX ? v->key_len : KMS_KEY_MATERIAL_MAX;
    size_t o = 0;

    buf[o++] = v1 ? VERSION_FMT_V1 : VERSION_FMT_V2;
    put_u32(buf + o, v->version);
    o += 4;
    if (!v1) {
        buf[o++] = (uint8_t)klen;
        buf[o++] = (uint8_t)(klen >> 8);
    }
    memcpy(buf + o, v->key, klen);
    o += klen;
    memcpy(buf + o, v->hmac_key, 32);
    o += 32;
    put_u64(buf + o, (uint64_t)v->created_sec);
    o += 8;
    put_u32(buf + o, (uint32_t)v->created_nsec);
    o += 4;
    buf[o++] = (uint8_t)v->convergent_version;
    return o;
}

int kms_key_version_decode(const uint8_t *buf, size_t len, struct kms_key_version *v)
{
    struct kms_key_version w;
    size_t o = 1;
    uint32_t nsec;
    int rc = -1;

    memset(&w, 0, sizeof(w));
    if (buf == NULL || len < 5)
        goto out;
    if (buf[0] == VERSION_FMT_V1 && len == VERSION_ENC_LEN_V1) {
        w.key_len = 32;
    } else if (buf[0] == VERSION_FMT_V2 && len >= VERSION_ENC_LEN_V2_BASE) {
        w.key_len = (uint32_t)buf[5] | (uint32_t)buf[6] << 8;
        if (w.key_len == 0 || w.key_len > KMS_KEY_MATERIAL_MAX ||
            len != VERSION_ENC_LEN_V2_BASE + w.key_len)
            goto out;
    } else {
        goto out;
    }
    w.version = get_u32(buf + o);
    o += buf[0] == VERSION_FMT_V1 ? 4 : 6;
    memcpy(w.key, buf + o, w.key_len);
    o += w.key_len;
    memcpy(w.hmac_key, buf + o, 32);
    o += 32;
    w.created_sec = u64_to_i64(get_u64(buf + o));
    o += 8;
    nsec = get_u32(buf + o);
    o += 4;
    /* 1 and 2 are legacy convergent versions: decodable, refused at use. */
    if (w.version == 0 || nsec > 999999999u || buf[o] > KMS_KEY_CONVERGENT_VERSION)
        goto out;
    w.created_nsec = (int32_t)nsec;
    w.convergent_version = buf[o];
    *v = w;
    rc = 0;
out:
    kms_memzero(&w, sizeof(w));
    return rc;
}

/* ---- ciphertext header ------------------------------------------------------------------- */

/*
 * Go's strconv.Atoi (64-bit int): optional '+'/'-', then one or more ASCII digits, no other
 * characters, within int64 range.
 */
static int go_atoi(const char *s, size_t len, int64_t *out)
{
    bool neg = false;
    uint64_t v = 0;
    size_t i = 0;

    if (len > 0 && (s[0] == '+' || s[0] == '-')) {
        neg = s[0] == '-';
        i = 1;
    }
    if (i == len)
        return -1;
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        if (v > (UINT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
        if (v > (uint64_t)INT64_MAX + (neg ? 1u : 0u))
            return -1;
    }
    if (neg)
        *out = v == (uint64_t)INT64_MAX + 1u ? INT64_MIN : -(int64_t)v;
    else
        *out = (int64_t)v;
    return 0;
}

/* The "vault:v<N>:" header: parsed version (0 mapped to 1) and where the payload starts. */
static int ct_header(const char *ct, size_t len, int64_t *version, size_t *payload,
                     struct kms_err *err)
{
    const char *colon;
    int64_t v = 0;

    if (ct == NULL || len < CT_PREFIX_LEN || memcmp(ct, CT_PREFIX, CT_PREFIX_LEN) != 0)
        return kms_err_set(err, 400, "invalid ciphertext: no prefix");
    colon = memchr(ct + CT_PREFIX_LEN, ':', len - CT_PREFIX_LEN);
    if (colon == NULL)
        return kms_err_set(err, 400, "invalid ciphertext: wrong number of fields");
    if (go_atoi(ct + CT_PREFIX_LEN, (size_t)(colon - ct) - CT_PREFIX_LEN, &v) != 0)
        return kms_err_set(err, 400, "invalid ciphertext: version number could not be decoded");
    /* Compatibility with the first implementation, whose versions started at 0. */
    if (v == 0)
        v = 1;
    *version = v;
    *payload = (size_t)(colon - ct) + 1;
    return 0;
}

static int ct_check_version(const struct kms_key_policy *p, int64_t v, struct kms_err *err)
{
    if (v > (int64_t)p->latest_version)
        return kms_err_set(err, 400, "invalid ciphertext: version is too new");
    /* Negative versions parse (Go's Atoi) and land here as too old. */
    if (p->min_decryption_version > 0 && v < (int64_t)p->min_decryption_version)
        return kms_err_set(err, 400,
                           "ciphertext or signature version is disallowed by policy (too old)");
    return 0;
}

int kms_keyring_ciphertext_version(const struct kms_key_policy *p, const char *ct, size_t len,
                                   uint32_t *version, struct kms_err *err)
{
    int64_t v = 0;
    size_t payload = 0;

    if (!kms_key_type_supports_encryption(p->type))
        return kms_err_set(err, 400, "message decryption not supported for key type %s",
                           kms_key_type_name(p->type));
    if (ct_header(ct, len, &v, &payload, err) != 0)
        return -1;
    if (ct_check_version(p, v, err) != 0)
        return -1;
    if (v < 1 || v > (int64_t)UINT32_MAX)
        return kms_err_set(err, 400,
                           "ciphertext or signature version is disallowed by policy (too old)");
    *version = (uint32_t)v;
    return 0;
}

int kms_ciphertext_parse_version(const char *ct, size_t len, uint32_t *version)
{
    struct kms_err err;
    int64_t v = 0;
    size_t payload = 0;

    if (ct_header(ct, len, &v, &payload, &err) != 0)
        return -1;
    if (v < 1 || v > (int64_t)UINT32_MAX)
        return -1;
    *version = (uint32_t)v;
    return 0;
}

/* ---- encrypt / decrypt ------------------------------------------------------------------- */

int kms_keyring_encrypt_version(const struct kms_key_policy *p, int64_t requested,
                                uint32_t *version, struct kms_err *err)
{
    int64_t v = requested;

    if (!kms_key_type_supports_encryption(p->type))
        return kms_err_set(err, 400, "message encryption not supported for key type %s",
                           kms_key_type_name(p->type));
    if (v == 0)
        v = p->latest_version;
    else if (v < 0)
        return kms_err_set(err, 400, "requested version for encryption is negative");
    else if (v > (int64_t)p->latest_version)
        return kms_err_set(
            err, 400, "requested version for encryption is higher than the latest key version");
    else if (v < (int64_t)p->min_encryption_version)
        return kms_err_set(
            err, 400,
            "requested version for encryption is less than the minimum encryption key version");
    /* Versions below the decryption floor are archived (or trimmed): OpenBao cannot see them. */
    if (v < 1 || v < (int64_t)p->min_decryption_version)
        return kms_err_set(err, 400, "no such key version");
    *version = (uint32_t)v;
    return 0;
}

/*
 * OpenBao's legacy KDF (sdk/helper/kdf CounterMode with HMAC-SHA256, 256 bits): a single
 * round, HMAC-SHA256(key, BE32(0) || context || BE32(256)); the first outlen bytes of it.
 */
static int kdf_counter(const uint8_t *master, size_t mlen, const uint8_t *context, size_t ctxlen,
                       size_t outlen, uint8_t *key, struct kms_err *err)
{
    uint8_t full[32];
    uint8_t *in;

    if (outlen > sizeof(full))
        return kms_err_setw(err, 500, "could not derive key, length too small");
    if (ctxlen > SIZE_MAX - 8 || (in = malloc(ctxlen + 8)) == NULL)
        return kms_err_setw(err, 500, "out of memory");
    memset(in, 0, ctxlen + 8);
    memcpy(in + 4, context, ctxlen);
    in[4 + ctxlen + 2] = 0x01; /* the bit count, BE32(256): 00 00 01 00 */
    int rc = kms_hmac(KMS_HASH_SHA2_256, master, mlen, in, ctxlen + 8, full);
    kms_memzero(in, ctxlen + 8);
    free(in);
    if (rc != 0) {
        kms_memzero(full, sizeof(full));
        return kms_err_setw(err, 500, "error deriving key");
    }
    memcpy(key, full, outlen);
    kms_memzero(full, sizeof(full));
    return 0;
}

/*
 * The key for one operation: the version key itself, or HKDF(version key, context) of
 * outlen bytes for derived keys. key receives up to KMS_AEAD_MAX_KEY_LEN + NONCE_KEY_LEN bytes.
 */
static int op_key(const struct kms_key_policy *p, const struct kms_key_version *kv,
                  const uint8_t *context, size_t ctxlen, bool has_context, size_t outlen,
                  uint8_t *key, struct kms_err *err)
{
    size_t keylen = kms_key_type_key_len(p->type);

    if (!p->derived) {
        if (outlen != keylen)
            return kms_err_setw(err, 500, "could not derive key, length too small");
        memcpy(key, kv->key, keylen);
        return 0;
    }
    /* OpenBao tests len(context) == 0, so an empty context is as good as none. */
    if (!has_context || ctxlen == 0)
        return kms_err_set(err, 400, "%s", KMS_MSG_MISSING_CONTEXT);
    if (p->kdf_counter)
        return kdf_counter(kv->key, keylen, context, ctxlen, outlen, key, err);
    if (kms_hkdf_sha256(kv->key, keylen, NULL, 0, context, ctxlen, key, outlen) != 0)
        return kms_err_setw(err, 500, "error reading returned derived bytes");
    return 0;
}

static int check_convergent_version(const struct kms_key_policy *p,
                                    const struct kms_key_version *kv, struct kms_err *err)
{
    if (!p->convergent)
        return 0;
    if (kv->convergent_version > 0 && kv->convergent_version < KMS_KEY_CONVERGENT_VERSION)
        return kms_err_set(err, 400,
                           "refusing to support decryption with old convergent encryption key: "
                           "version %d",
                           kv->convergent_version);
    return 0;
}

/* "vault:v<N>:" + base64(raw) into a malloc'd string. */
static char *ct_format(uint32_t version, const uint8_t *raw, size_t rawlen)
{
    size_t slen = CT_PREFIX_LEN + 11 + kms_b64_encoded_len(rawlen) + 1;
    char *s = malloc(slen);
    char num[10];
    size_t d = sizeof(num), n = CT_PREFIX_LEN;

    if (s == NULL)
        return NULL;
    do {
        num[--d] = (char)('0' + version % 10);
        version /= 10;
    } while (version != 0);
    memcpy(s, CT_PREFIX, CT_PREFIX_LEN);
    memcpy(s + n, num + d, sizeof(num) - d);
    n += sizeof(num) - d;
    s[n++] = ':';
    kms_b64_encode(raw, rawlen, s + n);
    return s;
}

/* rsa-* keys: RSA-OAEP-SHA256 of the plaintext, as OpenBao. */
static int rsa_encrypt(const struct kms_key_policy *p, const struct kms_key_version *kv,
                       const uint8_t *pt, size_t ptlen, char **out, struct kms_err *err)
{
    uint8_t *raw = NULL;
    size_t rawlen = 0;
    int rc = -1;

    if (kms_asym_rsa_oaep(p->type, kv, true, pt, ptlen, &raw, &rawlen, err) != 0)
        goto out;
    *out = ct_format(kv->version, raw, rawlen);
    if (*out == NULL) {
        kms_err_setw(err, 500, "out of memory");
        goto out;
    }
    rc = 0;
out:
    free(raw);
    return rc;
}

int kms_keyring_encrypt(const struct kms_key_policy *p, const struct kms_key_version *kv,
                        const uint8_t *context, size_t ctxlen, bool has_context, const uint8_t *aad,
                        size_t aadlen, const uint8_t *pt, size_t ptlen, char **out,
                        struct kms_err *err)
{
    enum kms_aead aead = kms_key_type_aead(p->type);
    size_t keylen = kms_key_type_key_len(p->type);
    size_t noncelen = kms_aead_nonce_len(aead);
    uint8_t key[KMS_AEAD_MAX_KEY_LEN + NONCE_KEY_LEN];
    uint8_t mac[KMS_HASH_MAX_LEN];
    uint8_t *payload = NULL;
    size_t paylen = 0;
    int rc = -1;

    *out = NULL;
    if (is_rsa(p->type)) {
        rc = rsa_encrypt(p, kv, pt, ptlen, out, err);
        goto out;
    }
    if (keylen == 0) {
        kms_err_setw(err, 500, "unsupported key type");
        goto out;
    }
    if (check_convergent_version(p, kv, err) != 0)
        goto out;
    if (p->convergent && kv->convergent_version != KMS_KEY_CONVERGENT_VERSION) {
        kms_err_setw(err, 500, "unhandled convergent version %d", kv->convergent_version);
        goto out;
    }
    if (op_key(p, kv, context, ctxlen, has_context, keylen + (p->convergent ? NONCE_KEY_LEN : 0),
               key, err) != 0)
        goto out;
    /* Bound the sizes so nonce || ct || tag and its base64 cannot overflow size_t. */
    if (ptlen > SIZE_MAX / 2 - 1024) {
        kms_err_setw(err, 500, "plaintext too large");
        goto out;
    }
    paylen = noncelen + ptlen + KMS_AEAD_TAG_LEN;
    payload = malloc(paylen);
    if (payload == NULL) {
        kms_err_setw(err, 500, "out of memory");
        goto out;
    }
    if (p->convergent) {
        /* Convergent v3: nonce = HMAC-SHA256(nonce key, plaintext), truncated. */
        if (kms_hmac(KMS_HASH_SHA2_256, key + keylen, NONCE_KEY_LEN, pt, ptlen, mac) != 0) {
            kms_err_setw(err, 500, "failed to compute convergent nonce");
            goto out;
        }
        memcpy(payload, mac, noncelen);
    } else if (kms_rand_fast(payload, noncelen) != 0) {
        kms_err_setw(err, 500, "failed to generate nonce");
        goto out;
    }
    if (kms_aead_seal(aead, key, payload, aad, aadlen, pt, ptlen, payload + noncelen) != 0) {
        kms_err_setw(err, 500, "failed to encrypt the plaintext");
        goto out;
    }
    *out = ct_format(kv->version, payload, paylen);
    if (*out == NULL) {
        kms_err_setw(err, 500, "out of memory");
        goto out;
    }
    rc = 0;
out:
    free(payload);
    kms_memzero(mac, sizeof(mac));
    kms_memzero(key, sizeof(key));
    return rc;
}

int kms_keyring_decrypt(const struct kms_key_policy *p, const struct kms_key_version *kv,
                        const char *ct, size_t len, const uint8_t *context, size_t ctxlen,
                        bool has_context, const uint8_t *aad, size_t aadlen, uint8_t **pt,
                        size_t *ptlen, struct kms_err *err)
{
    enum kms_aead aead = kms_key_type_aead(p->type);
    size_t keylen = kms_key_type_key_len(p->type);
    size_t noncelen = kms_aead_nonce_len(aead);
    uint8_t key[KMS_AEAD_MAX_KEY_LEN + NONCE_KEY_LEN];
    uint8_t *raw = NULL;
    size_t rawlen = 0;
    uint8_t *plain = NULL;
    size_t plainlen = 0;
    int64_t v = 0;
    size_t off = 0;
    size_t err_at = 0;
    int rc = -1;

    *pt = NULL;
    *ptlen = 0;
    if (keylen == 0 && !is_rsa(p->type)) {
        kms_err_setw(err, 500, "unsupported key type");
        goto out;
    }
    if (ct_header(ct, len, &v, &off, err) != 0 || ct_check_version(p, v, err) != 0)
        goto out;
    if (v != (int64_t)kv->version) {
        kms_err_setw(err, 500, "ciphertext version %" PRId64 " does not match key version %" PRIu32,
                     v, kv->version);
        goto out;
    }
    if (check_convergent_version(p, kv, err) != 0)
        goto out;
    if (kms_b64_decode_alloc(ct + off, len - off, &raw, &rawlen, &err_at) != 0) {
        kms_err_set(err, 400, "invalid ciphertext: could not decode base64");
        goto out;
    }
    if (is_rsa(p->type)) {
        if (kms_asym_rsa_oaep(p->type, kv, false, raw, rawlen, &plain, &plainlen, err) != 0)
            goto out;
        *pt = plain;
        *ptlen = plainlen;
        plain = NULL;
        rc = 0;
        goto out;
    }
    if (op_key(p, kv, context, ctxlen, has_context, keylen, key, err) != 0)
        goto out;
    if (rawlen < noncelen) {
        kms_err_set(err, 400, "invalid ciphertext length");
        goto out;
    }
    plainlen = rawlen - noncelen >= KMS_AEAD_TAG_LEN ? rawlen - noncelen - KMS_AEAD_TAG_LEN : 0;
    plain = malloc(plainlen > 0 ? plainlen : 1);
    if (plain == NULL) {
        kms_err_setw(err, 500, "out of memory");
        goto out;
    }
    /* Like Go's AEADs, a body shorter than the tag is an authentication failure. */
    if (rawlen - noncelen < KMS_AEAD_TAG_LEN ||
        kms_aead_open(aead, key, raw, aad, aadlen, raw + noncelen, rawlen - noncelen, plain) != 0) {
        if (aead == KMS_AEAD_AES128_GCM || aead == KMS_AEAD_AES256_GCM)
            kms_err_set(err, 400, "cipher: message authentication failed");
        else
            kms_err_set(err, 400, "chacha20poly1305: message authentication failed");
        goto out;
    }
    *pt = plain;
    *ptlen = plainlen;
    plain = NULL;
    rc = 0;
out:
    kms_free_wipe((void **)&plain, plainlen);
    kms_free_wipe((void **)&raw, rawlen);
    kms_memzero(key, sizeof(key));
    return rc;
}

/* ---- configuration ----------------------------------------------------------------------- */

static const char MSG_MIN_DEC_FORCED[] = "since Vault 0.3 (prior to the OpenBao fork), transit key "
                                         "numbering starts at 1; forcing minimum to 1";

int kms_keyring_config(struct kms_key_policy *p, const struct kms_key_config *cfg, char *warning,
                       size_t warnlen, struct kms_err *err)
{
    struct kms_key_policy q = *p;
    const char *warn = "";
    bool changed = false;
    int rc = -1;

    if (warning != NULL && warnlen > 0)
        warning[0] = '\0';
    if (cfg->has_min_decryption_version) {
        int64_t v = cfg->min_decryption_version;

        if (v < 0) {
            kms_err_set(err, 400, "min decryption version cannot be negative");
            goto out;
        }
        if (v == 0) {
            v = 1;
            warn = MSG_MIN_DEC_FORCED;
        }
        if (v != (int64_t)q.min_decryption_version) {
            if (v > (int64_t)q.latest_version) {
                kms_err_set(err, 400,
                            "cannot set min decryption version of %" PRId64
                            ", latest key version is %" PRIu32,
                            v, q.latest_version);
                goto out;
            }
            q.min_decryption_version = (uint32_t)v;
            changed = true;
        }
    }
    if (cfg->has_min_encryption_version) {
        int64_t v = cfg->min_encryption_version;

        if (v < 0) {
            kms_err_set(err, 400, "min encryption version cannot be negative");
            goto out;
        }
        if (v != (int64_t)q.min_encryption_version) {
            if (v > (int64_t)q.latest_version) {
                kms_err_set(err, 400,
                            "cannot set min encryption version of %" PRId64
                            ", latest key version is %" PRIu32,
                            v, q.latest_version);
                goto out;
            }
            q.min_encryption_version = (uint32_t)v;
            changed = true;
        }
    }
    /* Checked on the final picture, after both floors were applied. */
    if (q.min_encryption_version > 0 && q.min_encryption_version < q.min_decryption_version) {
        kms_err_set(err, 400,
                    "cannot set min encryption/decryption values; min encryption version of "
                    "%" PRIu32 " must be greater than or equal to min decryption version of "
                    "%" PRIu32,
                    q.min_encryption_version, q.min_decryption_version);
        goto out;
    }
    if (cfg->has_deletion_allowed && cfg->deletion_allowed != q.deletion_allowed) {
        q.deletion_allowed = cfg->deletion_allowed;
        changed = true;
    }
    if (q.min_decryption_version == 0) {
        q.min_decryption_version = 1;
        changed = true;
    }
    /* One-way latches: false never clears a value that is already true. */
    if (cfg->has_exportable && cfg->exportable && !q.exportable) {
        q.exportable = true;
        changed = true;
    }
    if (cfg->has_allow_plaintext_backup && cfg->allow_plaintext_backup &&
        !q.allow_plaintext_backup) {
        q.allow_plaintext_backup = true;
        changed = true;
    }
    if (cfg->has_auto_rotate_period) {
        int64_t period = cfg->auto_rotate_period;

        if (period != 0 && period < 3600) {
            kms_err_set(err, 400, "auto rotate period must be 0 to disable or at least an hour");
            goto out;
        }
        if (period != q.auto_rotate_period) {
            q.auto_rotate_period = period;
            changed = true;
        }
    }
    /* OpenBao only compares against the trim floor when something is about to be persisted. */
    if (changed) {
        if (q.min_available_version > q.min_encryption_version) {
            kms_err_set(err, 400,
                        "min encryption version should not be less than min available version");
            goto out;
        }
        if (q.min_available_version > q.min_decryption_version) {
            kms_err_set(err, 400,
                        "min decryption version should not be less then min available version");
            goto out;
        }
    }
    *p = q;
    if (warning != NULL && warnlen > 0)
        snprintf(warning, warnlen, "%s", warn);
    rc = 0;
out:
    return rc;
}

int kms_keyring_trim(struct kms_key_policy *p, bool has_value, int64_t min_available,
                     struct kms_err *err)
{
    if (!has_value)
        return kms_err_set(err, 400, "missing min_available_version");
    if (min_available < (int64_t)p->min_available_version)
        return kms_err_set(err, 400, "minimum available version cannot be decremented");
    if (p->min_encryption_version == 0)
        return kms_err_set(err, 400,
                           "minimum available version cannot be set when minimum "
                           "encryption version is not set");
    if (p->min_decryption_version == 0)
        return kms_err_set(err, 400,
                           "minimum available version cannot be set when minimum "
                           "decryption version is not set");
    if (min_available > (int64_t)p->min_encryption_version)
        return kms_err_set(err, 400,
                           "minimum available version cannot be greater than minmum "
                           "encryption version");
    if (min_available > (int64_t)p->min_decryption_version)
        return kms_err_set(err, 400,
                           "minimum available version cannot be greater than minimum "
                           "decryption version");
    if (min_available < 0)
        return kms_err_set(err, 400, "minimum available version cannot be negative");
    if (min_available == 0)
        return kms_err_set(err, 400, "minimum available version should be positive");
    p->min_available_version = (uint32_t)min_available;
    return 0;
}
