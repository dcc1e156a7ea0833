/*
 * test_sign.c - crypto/sign.c through keyring.h: ed25519 known answers (RFC 8032 section 7.1
 * and reference section 9 H, plain and derived), ECDSA verification of the RFC 6979 NIST P-256
 * and P-384 vectors (ASN.1 and JWS, Go's DER rules), RSA-2048 PKCS#1 v1.5 and PSS with a fixed
 * key (signatures made by Python's cryptography), RSA-OAEP, generation of every asymmetric
 * type, option parsing, signature headers, export encodings and the records of the new types.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "crypto/keyring.h"

/* A fixed RSA-2048 key (p, q; e = 65537) and signatures of "hello" with SHA-256 made by
 * Python's cryptography: PKCS#1 v1.5 (deterministic), PSS with a 32-byte salt and with the
 * largest salt. */
static const char RSA_P[] =
    "f3c15b36e9af22a78b16f5ea28b9e48f74c5c05f0c76088748b5d5d7fd44182e7331ab289c091973096578fe"
    "06ef9b68e0f18702bab19a94fe90eeae8bd8287b7bf9145b37ccf92b5147f144da8bae97709ce85f2f638e19"
    "57528f4f622218f4543f01015d26ebed5391a147a3872d140d41390caca5999cfd63e1c23800d099";
static const char RSA_Q[] =
    "e8891e9a1b3927c7baa1e113fb81afd516f8f3dd1d80b5071ebf99257621d3b8cfdb142fcb67a292bd6cbf96"
    "2bdca62b3806d313dee367cc8a84214431886897c714b75d854b8257db3d00b18edb05a9db5c0a72ab39bc57"
    "803d682dc21b5d00f4dbce46b18c6507465d7c7d6c214c6d1149b2adc8de9b1fb0c08e42df24ce6b";
static const char RSA_PKCS1_HELLO[] =
    "b7b775e7911daeaa9840e102010d69e5614d0741f5b3c1f9d37d3ffbb732777339ceba19ea308669172fec3b"
    "aa2752caae6b53d107f5a11c018cde02b074ed6b4851bda4cd8fb2dcf868b52324d1d1e5e8c107de4c8c0d70"
    "22911b28984b33735793736e660f9c35fe43cce379315ecde2008649309c27890b840bf205e3f6c71e219166"
    "d6498858a1d02856d62312ed8a1bff7b5f69be8856bb88db536557642848cda17e7164cb49d8be26edb91ffb"
    "3760b7b339524e06c795a4afe628a9eb55691be95b27743ee943e9f17a87722159a24ed20d0bce12c1f37064"
    "ac11a712ebdd9ad83c8d0dad008105bed4e9fc41f435a242a0e02a2983b1063d1b9cfa05";
static const char RSA_PSS32_HELLO[] =
    "922c521b66a274ce8b7c7d241b68b387fdfcfe4e626b45d45171e2feb1374e2ec76e826659b780b568f44c73"
    "e0aca528a1f3162afdd28f63ebdbcd4158cc2a1755dcee81ff7150b5d2e4a11a13ddb503922bfc4762d7b620"
    "ebc07ca7928b2d7a238cff19d2906fec9fe657b4ded2c27862faf4d8780774a6cc0ca0b87e1208526d537248"
    "9e393f5cfa951a9532efd6484063595d5937863582ec09200f48f2f93d13e279eb9420f6db398cea8b83c953"
    "2233c76dc1f4df82e38215cfb8f8d1c20d51c18a61d40daad6fd4639fc8cb51535c5f0f84dcf76ba642cc705"
    "f5ab97b909b16262bf21627f1546174bda94f4656e88ac5eadc540350c957f29ae4ab58e";
static const char RSA_PSSMAX_HELLO[] =
    "b449b3e469080e362ca4328d363e7c361c0b24e5bcd4a7b2353c0a84f2a7f3dbac989841da4ec97151115979"
    "f4c81845b9b8e140f030c485833bbd97e41e3fd2ba37bafb3f9272d2e408375b196083f32790c797f89151a9"
    "ffc1891249b9305c0f5b0dd400e250c37f8a0a2291e0ceda0dc0d0980c10d0bfecd99db368c0b7b8e295c4dc"
    "3a342cd4d5e77fab2ad81782633734cb8efca18f402324d10d0a55b7bd95ae2316a8ae24f07bd040b47fb254"
    "ca528e76681fe248e4c2b45bfe2641ca15b6081ed351e77a2e2159a224d4de9fc2050aea956a0ac3c2f04dc5"
    "a12c01526b48af83e713bc3b31672d683ff55d4093fe7b5156e429f17f8548773f888334";

static void hex(const char *h, uint8_t *out, size_t n)
{
    assert_int_equal(strlen(h), 2 * n);
    assert_int_equal(kms_hex_decode(h, 2 * n, out), 0);
}

static char *b64(const uint8_t *in, size_t n)
{
    char *s = malloc(kms_b64_encoded_len(n) + 1);
    assert_non_null(s);
    kms_b64_encode(in, n, s);
    return s;
}

static void opts(struct kms_sign_opts *o, const char *hash, const char *marshaling,
                 const char *salt, const char *sig_alg, bool prehashed)
{
    struct kms_err err;
    assert_int_equal(kms_sign_opts_parse(hash, marshaling, salt, sig_alg, prehashed, o, &err), 0);
}

/* A policy of type t at version 1, with material set by the caller. */
static void policy(enum kms_key_type t, struct kms_key_policy *p, struct kms_key_version *kv)
{
    assert_int_equal(kms_key_policy_init(p, t), 0);
    p->latest_version = 1;
    memset(kv, 0, sizeof(*kv));
    kv->version = 1;
}

static void ed25519_key(const char *seed, const char *pub, struct kms_key_policy *p,
                        struct kms_key_version *kv)
{
    policy(KMS_KEY_ED25519, p, kv);
    hex(seed, kv->key, 32);
    hex(pub, kv->key + 32, 32);
    kv->key_len = 64;
}

static bool verify(const struct kms_key_policy *p, const struct kms_key_version *kv,
                   const struct kms_sign_opts *o, const uint8_t *ctx, size_t ctxlen, const void *in,
                   size_t inlen, const char *sig)
{
    struct kms_err err;
    uint32_t v = 0;
    bool valid = true;
    kms_err_clear(&err);
    assert_int_equal(kms_keyring_signature_version(p, sig, strlen(sig), &v, &err), 0);
    assert_int_equal(v, kv->version);
    if (kms_keyring_verify(p, kv, o, ctx, ctxlen, in, inlen, sig, strlen(sig), &valid, &err) != 0) {
        fail_msg("verify error %d %s", err.status, err.msg);
    }
    return valid;
}

static void expect_verify_error(const struct kms_key_policy *p, const struct kms_key_version *kv,
                                const struct kms_sign_opts *o, const char *in, const char *sig,
                                int status, const char *msg)
{
    struct kms_err err;
    bool valid = true;
    kms_err_clear(&err);
    assert_int_equal(kms_keyring_verify(p, kv, o, NULL, 0, (const uint8_t *)in, strlen(in), sig,
                                        strlen(sig), &valid, &err),
                     -1);
    assert_false(valid);
    assert_int_equal(err.status, status);
    assert_string_equal(err.msg, msg);
}

/* ---- ed25519 ----------------------------------------------------------------------------- */

static void test_ed25519_rfc8032(void **state)
{
    static const struct {
        const char *seed, *pub, *msg, *sig;
    } v[] = {
        {"9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
         "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
         "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
         "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"},
        {"4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
         "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
         "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
         "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"},
        {"c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
         "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
         "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
         "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        struct kms_key_policy p;
        struct kms_key_version kv;
        struct kms_sign_opts o;
        struct kms_err err;
        uint8_t msg[2], sig[64];
        char want[128];
        char *s = NULL, *pub = NULL;
        size_t ml = strlen(v[i].msg) / 2;
        ed25519_key(v[i].seed, v[i].pub, &p, &kv);
        hex(v[i].msg, msg, ml);
        hex(v[i].sig, sig, 64);
        /* ed25519 ignores the hash algorithm, as OpenBao */
        opts(&o, "sha2-512", "asn1", "auto", NULL, false);
        assert_int_equal(kms_keyring_sign(&p, &kv, &o, NULL, 0, msg, ml, &s, &pub, &err), 0);
        char *sb = b64(sig, 64);
        snprintf(want, sizeof(want), "vault:v1:%s", sb);
        assert_string_equal(s, want);
        assert_null(pub);
        assert_true(verify(&p, &kv, &o, NULL, 0, msg, ml, s));
        /* another message or a flipped bit: valid false, not an error */
        assert_false(verify(&p, &kv, &o, NULL, 0, "x", 1, s));
        sig[10] ^= 1;
        free(sb);
        sb = b64(sig, 64);
        snprintf(want, sizeof(want), "vault:v1:%s", sb);
        assert_false(verify(&p, &kv, &o, NULL, 0, msg, ml, want));
        /* a short signature is invalid too */
        sb[8] = '\0';
        snprintf(want, sizeof(want), "vault:v1:%s", sb);
        assert_false(verify(&p, &kv, &o, NULL, 0, msg, ml, want));
        free(sb);
        free(s);
    }
}

/* Reference section 9 H: seed 00..1f, "hello"; derived with context "ctx". */
static void test_ed25519_reference_vector_h(void **state)
{
    struct kms_key_policy p;
    struct kms_key_version kv;
    struct kms_sign_opts o;
    struct kms_err err;
    char *s = NULL, *pub = NULL;
    uint8_t pk[32];
    size_t pl = 32;
    (void)state;
    policy(KMS_KEY_ED25519, &p, &kv);
    for (int i = 0; i < 32; i++) {
        kv.key[i] = (uint8_t)i;
    }
    assert_int_equal(
        kms_hex_decode("03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8", 64, pk),
        0);
    memcpy(kv.key + 32, pk, pl);
    kv.key_len = 64;
    opts(&o, "sha2-256", "asn1", "auto", NULL, false);
    assert_int_equal(kms_keyring_public_key(&p, &kv, NULL, 0, &s, &err), 0);
    assert_string_equal(s, "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=");
    free(s);
    assert_int_equal(
        kms_keyring_sign(&p, &kv, &o, NULL, 0, (const uint8_t *)"hello", 5, &s, &pub, &err), 0);
    assert_string_equal(s, "vault:v1:4af8qUqDUSeIW5ni66cz1u5b9dxGPtg4Xrbx3KoRF8DxUXUKEPRvWzeWqRID"
                           "V49wLIXGfDNLVomlFihNSZ9xDw==");
    free(s);

    p.derived = true;
    assert_int_equal(kms_keyring_sign(&p, &kv, &o, (const uint8_t *)"ctx", 3,
                                      (const uint8_t *)"hello", 5, &s, &pub, &err),
                     0);
    assert_string_equal(s, "vault:v1:9oVdctphIoo0DCliBzASGAtiODWhxpj7Tkbt3U7I3giC6vRSmDddhNH6eYme"
                           "qVI6Pc2J+RiJcP6IJdjzepjMCw==");
    assert_string_equal(pub, "ZFDgvZzuJpHYNW6NCHNsHW6gITuqLep1KZDdRsehCvY=");
    assert_true(verify(&p, &kv, &o, (const uint8_t *)"ctx", 3, "hello", 5, s));
    assert_false(verify(&p, &kv, &o, (const uint8_t *)"ctw", 3, "hello", 5, s));
    free(s);
    free(pub);
    /* key read: "" without a context, the derived key with one */
    assert_int_equal(kms_keyring_public_key(&p, &kv, NULL, 0, &s, &err), 0);
    assert_string_equal(s, "");
    free(s);
    assert_int_equal(kms_keyring_public_key(&p, &kv, (const uint8_t *)"ctx", 3, &s, &err), 0);
    assert_string_equal(s, "ZFDgvZzuJpHYNW6NCHNsHW6gITuqLep1KZDdRsehCvY=");
    free(s);
    /* no context: OpenBao's wrapped derivation error */
    assert_int_equal(
        kms_keyring_sign(&p, &kv, &o, NULL, 0, (const uint8_t *)"hello", 5, &s, &pub, &err), -1);
    assert_int_equal(err.status, 500);
    assert_string_equal(err.msg,
                        "error deriving key: missing 'context' for key derivation; the key was "
                        "created using a derived key, which means additional, per-request "
                        "information must be included in order to perform operations with the "
                        "key");
    assert_null(s);
    assert_null(pub);
}

/* ---- ECDSA ------------------------------------------------------------------------------- */

static void ec_key(enum kms_key_type t, const char *d, const char *point, struct kms_key_policy *p,
                   struct kms_key_version *kv)
{
    size_t f = strlen(d) / 2;
    policy(t, p, kv);
    hex(d, kv->key, f);
    hex(point, kv->key + f, 1 + 2 * f);
    kv->key_len = (uint32_t)(3 * f + 1);
}

static const char P256_D[] = "c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721";
static const char P256_Q[] = "0460fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb6"
                             "7903fe1008b8bc99a41ae9e95628bc64f2f1b20c2d7e9f5177a3c294d4462299";

/* DER SEQUENCE { INTEGER r, INTEGER s } of two fixed-size big-endian values. */
static size_t der_sig(const uint8_t *r, const uint8_t *s, size_t f, uint8_t *out)
{
    size_t o = 2;
    const uint8_t *v[2] = {r, s};
    for (int i = 0; i < 2; i++) {
        size_t skip = 0;
        while (skip < f - 1 && v[i][skip] == 0) {
            skip++;
        }
        bool pad = (v[i][skip] & 0x80) != 0;
        out[o++] = 0x02;
        out[o++] = (uint8_t)(f - skip + pad);
        if (pad) {
            out[o++] = 0;
        }
        memcpy(out + o, v[i] + skip, f - skip);
        o += f - skip;
    }
    out[0] = 0x30;
    out[1] = (uint8_t)(o - 2);
    return o;
}

static char *vault_sig(const uint8_t *raw, size_t n, bool url)
{
    char *b = b64(raw, n);
    char *s = malloc(strlen(b) + 16);
    assert_non_null(s);
    if (url) {
        size_t o = 0;
        for (size_t i = 0; b[i] != '\0' && b[i] != '='; i++) {
            b[o++] = b[i] == '+' ? '-' : b[i] == '/' ? '_' : b[i];
        }
        b[o] = '\0';
    }
    snprintf(s, strlen(b) + 16, "vault:v1:%s", b);
    free(b);
    return s;
}

/* RFC 6979 A.2.5 (P-256) and A.2.6 (P-384) signatures verify, as ASN.1 and as JWS. */
static void test_ecdsa_rfc6979_verify(void **state)
{
    static const struct {
        enum kms_key_type t;
        const char *hash, *msg, *r, *s;
    } v[] = {
        {KMS_KEY_ECDSA_P256, "sha2-256", "sample",
         "efd48b2aacb6a8fd1140dd9cd45e81d69d2c877b56aaf991c34d0ea84eaf3716",
         "f7cb1c942d657c41d436c7a1b6e29f65f3e900dbb9aff4064dc4ab2f843acda8"},
        {KMS_KEY_ECDSA_P256, "sha2-256", "test",
         "f1abb023518351cd71d881567b1ea663ed3efcf6c5132b354f28d3b0b7d38367",
         "019f4113742a2b14bd25926b49c649155f267e60d3814b4c0cc84250e46f0083"},
        {KMS_KEY_ECDSA_P384, "sha2-384", "sample",
         "94edbb92a5ecb8aad4736e56c691916b3f88140666ce9fa73d64c4ea95ad133c81a648152e44acf96e36dd1e8"
         "0fabe46",
         "99ef4aeb15f178cea1fe40db2603138f130e740a19624526203b6351d0a3a94fa329c145786e679e7b82c71a3"
         "8628ac8"},
    };
    static const char p384_d[] = "6b9d3dad2e1b8c1c05b19875b6659f4de23c3b667bf297ba9aa47740787137d8"
                                 "96d5724e4c70a825f872c9ea60d2edf5";
    static const char p384_q[] =
        "04ec3a4e415b4e19a4568618029f427fa5da9a8bc4ae92e02e06aae5286b300c64def8f0ea9055866064a2"
        "54515480bc138015d9b72d7d57244ea8ef9ac0c621896708a59367f9dfb9f54ca84b3f1c9db1288b231c3a"
        "e0d4fe7344fd2533264720";
    (void)state;
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        struct kms_key_policy p;
        struct kms_key_version kv;
        struct kms_sign_opts o;
        uint8_t r[48], s[48], rs[96], der[128];
        size_t f = strlen(v[i].r) / 2;
        if (v[i].t == KMS_KEY_ECDSA_P256) {
            ec_key(v[i].t, P256_D, P256_Q, &p, &kv);
        } else {
            ec_key(v[i].t, p384_d, p384_q, &p, &kv);
        }
        hex(v[i].r, r, f);
        hex(v[i].s, s, f);
        size_t dl = der_sig(r, s, f, der);
        char *sig = vault_sig(der, dl, false);
        opts(&o, v[i].hash, "asn1", "auto", NULL, false);
        assert_true(verify(&p, &kv, &o, NULL, 0, v[i].msg, strlen(v[i].msg), sig));
        assert_false(verify(&p, &kv, &o, NULL, 0, "other", 5, sig));
        /* the same digest sent prehashed */
        {
            enum kms_hash h;
            uint8_t dg[KMS_HASH_MAX_LEN];
            struct kms_sign_opts po;
            assert_int_equal(kms_hash_parse(v[i].hash, &h), 0);
            assert_int_equal(kms_hash(h, v[i].msg, strlen(v[i].msg), dg), 0);
            opts(&po, v[i].hash, "asn1", "auto", NULL, true);
            assert_true(verify(&p, &kv, &po, NULL, 0, dg, kms_hash_len(h), sig));
        }
        free(sig);
        memcpy(rs, r, f);
        memcpy(rs + f, s, f);
        sig = vault_sig(rs, 2 * f, true);
        opts(&o, v[i].hash, "jws", "auto", NULL, false);
        assert_true(verify(&p, &kv, &o, NULL, 0, v[i].msg, strlen(v[i].msg), sig));
        free(sig);
    }
}

/* ASN.1 signatures are read like Go's encoding/asn1 reads them. */
static void test_ecdsa_asn1_rules(void **state)
{
    struct kms_key_policy p;
    struct kms_key_version kv;
    struct kms_sign_opts o;
    uint8_t r[32], s[32], der[160], bad[160];
    (void)state;
    ec_key(KMS_KEY_ECDSA_P256, P256_D, P256_Q, &p, &kv);
    opts(&o, "sha2-256", "asn1", "auto", NULL, false);
    hex("efd48b2aacb6a8fd1140dd9cd45e81d69d2c877b56aaf991c34d0ea84eaf3716", r, 32);
    hex("f7cb1c942d657c41d436c7a1b6e29f65f3e900dbb9aff4064dc4ab2f843acda8", s, 32);
    size_t dl = der_sig(r, s, 32, der);
    char *sig;

    /* bytes after the SEQUENCE */
    memcpy(bad, der, dl);
    bad[dl] = 0;
    sig = vault_sig(bad, dl + 1, false);
    expect_verify_error(&p, &kv, &o, "sample", sig, 400, "supplied signature contains extra data");
    free(sig);
    /* an element after r and s inside the SEQUENCE is ignored (valid) */
    memcpy(bad, der, dl);
    bad[1] = (uint8_t)(bad[1] + 3);
    bad[dl] = 0x02;
    bad[dl + 1] = 0x01;
    bad[dl + 2] = 0x05;
    sig = vault_sig(bad, dl + 3, false);
    assert_true(verify(&p, &kv, &o, NULL, 0, "sample", 6, sig));
    free(sig);
    /* not a SEQUENCE, truncated, a non-minimal integer: invalid */
    memcpy(bad, der, dl);
    bad[0] = 0x31;
    sig = vault_sig(bad, dl, false);
    expect_verify_error(&p, &kv, &o, "sample", sig, 400, "supplied signature is invalid");
    free(sig);
    sig = vault_sig(der, dl - 1, false);
    expect_verify_error(&p, &kv, &o, "sample", sig, 400, "supplied signature is invalid");
    free(sig);
    {
        /* r = 00 00 ef...: a leading zero that is not needed */
        size_t o2 = 0;
        bad[o2++] = 0x30;
        bad[o2++] = (uint8_t)(dl - 2 + 1);
        bad[o2++] = 0x02;
        bad[o2++] = (uint8_t)(der[3] + 1);
        bad[o2++] = 0x00;
        memcpy(bad + o2, der + 4, dl - 4);
        sig = vault_sig(bad, dl + 1, false);
        expect_verify_error(&p, &kv, &o, "sample", sig, 400, "supplied signature is invalid");
        free(sig);
    }
    /* a negative r is well-formed but can only be invalid */
    memcpy(bad, der, dl);
    memmove(bad + 5, bad + 6, dl - 6); /* drop r's 00 pad: r turns negative */
    bad[1] = (uint8_t)(bad[1] - 1);
    bad[3] = (uint8_t)(bad[3] - 1);
    sig = vault_sig(bad, dl - 1, false);
    assert_false(verify(&p, &kv, &o, NULL, 0, "sample", 6, sig));
    free(sig);
    /* base64 errors name no detail */
    expect_verify_error(&p, &kv, &o, "sample", "vault:v1:###", 400,
                        "invalid base64 signature value");
}

static void test_ecdsa_sign_roundtrips(void **state)
{
    static const enum kms_key_type types[] = {KMS_KEY_ECDSA_P256, KMS_KEY_ECDSA_P384,
                                              KMS_KEY_ECDSA_P521};
    static const size_t jws_len[] = {64, 96, 132};
    (void)state;
    for (size_t i = 0; i < 3; i++) {
        struct kms_key_policy p;
        struct kms_key_version kv;
        struct kms_sign_opts o;
        struct kms_err err;
        char *s = NULL;
        uint8_t *raw = NULL;
        size_t rl = 0;
        assert_int_equal(kms_key_policy_init(&p, types[i]), 0);
        p.latest_version = 1;
        assert_int_equal(kms_key_version_generate(&p, 1, &kv), 0);
        assert_int_equal(kv.key_len, 3 * (jws_len[i] / 2) + 1);
        opts(&o, "sha3-512", "asn1", "auto", NULL, false);
        assert_int_equal(
            kms_keyring_sign(&p, &kv, &o, NULL, 0, (const uint8_t *)"msg", 3, &s, NULL, &err), 0);
        assert_true(verify(&p, &kv, &o, NULL, 0, "msg", 3, s));
        free(s);
        opts(&o, "sha2-256", "jws", "auto", NULL, false);
        assert_int_equal(
            kms_keyring_sign(&p, &kv, &o, NULL, 0, (const uint8_t *)"msg", 3, &s, NULL, &err), 0);
        assert_null(strchr(s + 9, '='));
        assert_int_equal(kms_b64url_decode_alloc(s + 9, strlen(s + 9), &raw, &rl), 0);
        assert_int_equal(rl, jws_len[i]);
        assert_true(verify(&p, &kv, &o, NULL, 0, "msg", 3, s));
        free(raw);
        free(s);
    }
}

/* ---- RSA --------------------------------------------------------------------------------- */

static void rsa_key(struct kms_key_policy *p, struct kms_key_version *kv)
{
    policy(KMS_KEY_RSA2048, p, kv);
    hex(RSA_P, kv->key, 128);
    hex(RSA_Q, kv->key + 128, 128);
    kv->key_len = 256;
}

static char *hex_sig(const char *h)
{
    uint8_t raw[256];
    hex(h, raw, 256);
    return vault_sig(raw, 256, false);
}

static void test_rsa_known_answers(void **state)
{
    struct kms_key_policy p;
    struct kms_key_version kv;
    struct kms_sign_opts o;
    struct kms_err err;
    char *s = NULL;
    char *want;
    (void)state;
    rsa_key(&p, &kv);
    /* PKCS#1 v1.5 is deterministic: kmsd's signature is cryptography's, byte for byte */
    opts(&o, "sha2-256", "asn1", "auto", "pkcs1v15", false);
    assert_int_equal(
        kms_keyring_sign(&p, &kv, &o, NULL, 0, (const uint8_t *)"hello", 5, &s, NULL, &err), 0);
    want = hex_sig(RSA_PKCS1_HELLO);
    assert_string_equal(s, want);
    assert_true(verify(&p, &kv, &o, NULL, 0, "hello", 5, want));
    assert_false(verify(&p, &kv, &o, NULL, 0, "hellO", 5, want));
    free(want);
    free(s);

    /* PSS with a 32-byte salt: auto-detected, "hash" (= 32 for SHA-256) and 32 verify */
    want = hex_sig(RSA_PSS32_HELLO);
    opts(&o, "sha2-256", "asn1", "auto", "pss", false);
    assert_true(verify(&p, &kv, &o, NULL, 0, "hello", 5, want));
    opts(&o, "sha2-256", "asn1", "hash", "", false);
    assert_true(verify(&p, &kv, &o, NULL, 0, "hello", 5, want));
    opts(&o, "sha2-256", "asn1", "32", NULL, false);
    assert_true(verify(&p, &kv, &o, NULL, 0, "hello", 5, want));
    opts(&o, "sha2-256", "asn1", "20", NULL, false);
    assert_false(verify(&p, &kv, &o, NULL, 0, "hello", 5, want));
    /* a PSS signature is no PKCS#1 v1.5 one */
    opts(&o, "sha2-256", "asn1", "auto", "pkcs1v15", false);
    assert_false(verify(&p, &kv, &o, NULL, 0, "hello", 5, want));
    free(want);
    /* the largest salt (Go's "auto" when signing): 256 - 2 - 32 = 222 */
    want = hex_sig(RSA_PSSMAX_HELLO);
    opts(&o, "sha2-256", "asn1", "auto", NULL, false);
    assert_true(verify(&p, &kv, &o, NULL, 0, "hello", 5, want));
    opts(&o, "sha2-256", "asn1", "222", NULL, false);
    assert_true(verify(&p, &kv, &o, NULL, 0, "hello", 5, want));
    opts(&o, "sha2-256", "asn1", "hash", NULL, false);
    assert_false(verify(&p, &kv, &o, NULL, 0, "hello", 5, want));
    free(want);

    /* kmsd's own PSS signatures: auto signs with the largest salt */
    opts(&o, "sha2-512", "asn1", "auto", NULL, false);
    assert_int_equal(
        kms_keyring_sign(&p, &kv, &o, NULL, 0, (const uint8_t *)"m", 1, &s, NULL, &err), 0);
    assert_true(verify(&p, &kv, &o, NULL, 0, "m", 1, s));
    opts(&o, "sha2-512", "asn1", "190", NULL, false); /* 256 - 2 - 64 */
    assert_true(verify(&p, &kv, &o, NULL, 0, "m", 1, s));
    free(s);

    /* salt lengths above the key's maximum, unknown schemes */
    opts(&o, "sha2-256", "asn1", "223", NULL, false);
    assert_int_equal(
        kms_keyring_sign(&p, &kv, &o, NULL, 0, (const uint8_t *)"m", 1, &s, NULL, &err), -1);
    assert_int_equal(err.status, 400);
    assert_string_equal(err.msg, "requested salt length 223 is invalid");
    expect_verify_error(&p, &kv, &o, "m", "vault:v1:AAAA", 400,
                        "requested salt length 223 is invalid");
    opts(&o, "sha2-256", "asn1", "auto", "bogus", false);
    assert_int_equal(
        kms_keyring_sign(&p, &kv, &o, NULL, 0, (const uint8_t *)"m", 1, &s, NULL, &err), -1);
    assert_int_equal(err.status, 500);
    assert_string_equal(err.msg, "unsupported rsa signature algorithm bogus");

    /* prehashed: the digest itself; a wrong length is Go's error */
    {
        uint8_t dg[32];
        assert_int_equal(kms_hash(KMS_HASH_SHA2_256, "hello", 5, dg), 0);
        opts(&o, "sha2-256", "asn1", "auto", "pkcs1v15", true);
        assert_int_equal(kms_keyring_sign(&p, &kv, &o, NULL, 0, dg, 32, &s, NULL, &err), 0);
        want = hex_sig(RSA_PKCS1_HELLO);
        assert_string_equal(s, want);
        free(want);
        free(s);
        assert_int_equal(kms_keyring_sign(&p, &kv, &o, NULL, 0, dg, 31, &s, NULL, &err), -1);
        assert_string_equal(err.msg, "crypto/rsa: input must be hashed message");
        /* hash none: raw PKCS#1 v1.5 without a DigestInfo, verifiable the same way */
        opts(&o, "none", "asn1", "auto", "pkcs1v15", true);
        assert_int_equal(kms_keyring_sign(&p, &kv, &o, NULL, 0, dg, 32, &s, NULL, &err), 0);
        assert_true(verify(&p, &kv, &o, NULL, 0, dg, 32, s));
        assert_false(verify(&p, &kv, &o, NULL, 0, dg, 31, s));
        free(s);
    }
}

static void test_rsa_oaep(void **state)
{
    struct kms_key_policy p;
    struct kms_key_version kv;
    struct kms_err err;
    char *ct = NULL;
    uint8_t *pt = NULL;
    size_t ptlen = 0;
    uint8_t big[191];
    uint32_t ver = 0;
    (void)state;
    rsa_key(&p, &kv);
    assert_int_equal(kms_keyring_encrypt_version(&p, 0, &ver, &err), 0);
    assert_int_equal(kms_keyring_encrypt(&p, &kv, NULL, 0, false, NULL, 0,
                                         (const uint8_t *)"secret", 6, &ct, &err),
                     0);
    assert_int_equal(strncmp(ct, "vault:v1:", 9), 0);
    assert_int_equal(strlen(ct), 9 + 344); /* base64 of 256 bytes */
    assert_int_equal(kms_keyring_ciphertext_version(&p, ct, strlen(ct), &ver, &err), 0);
    assert_int_equal(
        kms_keyring_decrypt(&p, &kv, ct, strlen(ct), NULL, 0, false, NULL, 0, &pt, &ptlen, &err),
        0);
    assert_int_equal(ptlen, 6);
    assert_memory_equal(pt, "secret", 6);
    kms_free_wipe((void **)&pt, ptlen);
    /* a flipped byte of the OAEP block */
    ct[20] = ct[20] == 'A' ? 'B' : 'A';
    assert_int_equal(
        kms_keyring_decrypt(&p, &kv, ct, strlen(ct), NULL, 0, false, NULL, 0, &pt, &ptlen, &err),
        -1);
    assert_int_equal(err.status, 500);
    assert_string_equal(err.msg,
                        "failed to RSA decrypt the ciphertext: crypto/rsa: decryption error");
    free(ct);
    /* 190 bytes is RSA-2048's limit with OAEP-SHA256 */
    memset(big, 'x', sizeof(big));
    assert_int_equal(kms_keyring_encrypt(&p, &kv, NULL, 0, false, NULL, 0, big, 190, &ct, &err), 0);
    free(ct);
    assert_int_equal(kms_keyring_encrypt(&p, &kv, NULL, 0, false, NULL, 0, big, 191, &ct, &err),
                     -1);
    assert_string_equal(err.msg, "failed to RSA encrypt the plaintext: crypto/rsa: message too "
                                 "long for RSA key size");
    /* signing-only types refuse both directions with OpenBao's messages */
    policy(KMS_KEY_ED25519, &p, &kv);
    assert_int_equal(kms_keyring_encrypt_version(&p, 0, &ver, &err), -1);
    assert_string_equal(err.msg, "message encryption not supported for key type ed25519");
    assert_int_equal(kms_keyring_ciphertext_version(&p, "vault:v1:AA==", 13, &ver, &err), -1);
    assert_string_equal(err.msg, "message decryption not supported for key type ed25519");
}

/* ---- generation, options, headers, export, records --------------------------------------- */

static void test_generate_every_type(void **state)
{
    static const struct {
        enum kms_key_type t;
        uint32_t len;
        const char *pem;
    } v[] = {
        {KMS_KEY_ED25519, 64, NULL},
        {KMS_KEY_ECDSA_P256, 97, "-----BEGIN PUBLIC KEY-----\n"},
        {KMS_KEY_ECDSA_P384, 145, "-----BEGIN PUBLIC KEY-----\n"},
        {KMS_KEY_ECDSA_P521, 199, "-----BEGIN PUBLIC KEY-----\n"},
        {KMS_KEY_RSA2048, 256, "-----BEGIN PUBLIC KEY-----\n"},
        {KMS_KEY_RSA3072, 384, "-----BEGIN PUBLIC KEY-----\n"},
        {KMS_KEY_RSA4096, 512, "-----BEGIN PUBLIC KEY-----\n"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        struct kms_key_policy p;
        struct kms_key_version kv, kv2, back;
        struct kms_sign_opts o;
        struct kms_err err;
        uint8_t rec[KMS_KEY_VERSION_ENC_MAX];
        char *s = NULL, *pub = NULL;
        assert_int_equal(kms_key_policy_init(&p, v[i].t), 0);
        p.latest_version = 2;
        assert_int_equal(kms_key_version_generate(&p, 1, &kv), 0);
        assert_int_equal(kms_key_version_generate(&p, 2, &kv2), 0);
        assert_int_equal(kv.key_len, v[i].len);
        assert_false(kms_ct_eq(kv.key, kv2.key, kv.key_len));
        /* the version record round-trips (format 2) */
        size_t n = kms_key_version_encode(&kv, rec);
        assert_int_equal(rec[0], 2);
        assert_int_equal(n, 52 + v[i].len);
        assert_int_equal(kms_key_version_decode(rec, n, &back), 0);
        assert_memory_equal(&kv, &back, sizeof(kv));
        assert_int_equal(kms_key_version_decode(rec, n - 1, &back), -1);
        /* signs and verifies; another version's key does not verify it */
        opts(&o, "sha2-256", "asn1", "auto", NULL, false);
        assert_int_equal(
            kms_keyring_sign(&p, &kv, &o, NULL, 0, (const uint8_t *)"m", 1, &s, NULL, &err), 0);
        assert_true(verify(&p, &kv, &o, NULL, 0, "m", 1, s));
        kv2.version = 1;
        assert_false(verify(&p, &kv2, &o, NULL, 0, "m", 1, s));
        free(s);
        assert_int_equal(kms_keyring_public_key(&p, &kv, NULL, 0, &pub, &err), 0);
        if (v[i].pem != NULL) {
            assert_int_equal(strncmp(pub, v[i].pem, strlen(v[i].pem)), 0);
            assert_int_equal(pub[strlen(pub) - 1], '\n');
        } else {
            assert_int_equal(strlen(pub), 44);
        }
        free(pub);
        kms_memzero(&kv, sizeof(kv));
        kms_memzero(&kv2, sizeof(kv2));
        kms_memzero(&back, sizeof(back));
    }
}

static void test_opts_parse(void **state)
{
    struct kms_sign_opts o;
    struct kms_err err;
    (void)state;
    assert_int_equal(kms_sign_opts_parse("md5", "asn1", "auto", NULL, false, &o, &err), -1);
    assert_string_equal(err.msg, "invalid hash algorithm \"md5\"");
    /* the hash is checked first */
    assert_int_equal(kms_sign_opts_parse("md5", "der", "x", NULL, false, &o, &err), -1);
    assert_string_equal(err.msg, "invalid hash algorithm \"md5\"");
    assert_int_equal(kms_sign_opts_parse("sha1", "der", "x", NULL, false, &o, &err), -1);
    assert_string_equal(err.msg, "invalid marshaling type \"der\"");
    assert_int_equal(kms_sign_opts_parse("sha1", "jws", "x", NULL, false, &o, &err), -1);
    assert_string_equal(err.msg, "salt length neither 'auto', 'hash', nor an int: x");
    assert_int_equal(kms_sign_opts_parse("sha1", "jws", "", NULL, false, &o, &err), -1);
    assert_string_equal(err.msg, "salt length neither 'auto', 'hash', nor an int: ");
    assert_int_equal(kms_sign_opts_parse("sha1", "jws", "-2", NULL, false, &o, &err), -1);
    assert_string_equal(err.msg, "salt length is invalid: -2");
    assert_int_equal(kms_sign_opts_parse("none", "asn1", "HASH", "pkcs1v15", true, &o, &err), 0);
    assert_true(o.hash_none && o.prehashed && !o.jws);
    assert_int_equal(o.salt_length, -1);
    assert_string_equal(o.sig_alg, "pkcs1v15");
    assert_int_equal(kms_sign_opts_parse("sha3-224", "jws", "+7", NULL, false, &o, &err), 0);
    assert_true(o.jws && o.hash == KMS_HASH_SHA3_224);
    assert_int_equal(o.salt_length, 7);
    assert_int_equal(kms_sign_opts_parse("sha2-256", "asn1", "Auto", NULL, false, &o, &err), 0);
    assert_int_equal(o.salt_length, 0);
}

/*
 * The request's key cache: keys of two policies with the same version numbers and of two
 * versions of one policy never stand in for each other, whether a slot is free or the cache
 * is full (more keys than slots are built per call).
 */
static void test_sign_cache(void **state)
{
    static const enum kms_key_type types[] = {KMS_KEY_ED25519, KMS_KEY_ECDSA_P256, KMS_KEY_RSA2048};
    (void)state;
    for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
        struct kms_key_policy pa, pb;
        struct kms_key_version a1, a2, b1;
        struct kms_sign_opts o, oc;
        struct kms_err err;
        char *sa1 = NULL, *sa2 = NULL, *sb1 = NULL, *again = NULL;
        const uint8_t m[] = "m";

        assert_int_equal(kms_key_policy_init(&pa, types[t]), 0);
        assert_int_equal(kms_key_policy_init(&pb, types[t]), 0);
        assert_string_not_equal(pa.uuid, pb.uuid);
        pa.latest_version = 2;
        pb.latest_version = 1;
        assert_int_equal(kms_key_version_generate(&pa, 1, &a1), 0);
        assert_int_equal(kms_key_version_generate(&pa, 2, &a2), 0);
        assert_int_equal(kms_key_version_generate(&pb, 1, &b1), 0);
        opts(&o, "sha2-256", "asn1", "auto", "", false);
        opts(&oc, "sha2-256", "asn1", "auto", "", false);
        assert_null(o.cache);
        assert_int_equal(kms_sign_cache_create(&oc.cache), 0);
        assert_int_equal(kms_keyring_sign(&pa, &a1, &oc, NULL, 0, m, 1, &sa1, NULL, &err), 0);
        assert_int_equal(kms_keyring_sign(&pb, &b1, &oc, NULL, 0, m, 1, &sb1, NULL, &err), 0);
        assert_int_equal(kms_keyring_sign(&pa, &a2, &oc, NULL, 0, m, 1, &sa2, NULL, &err), 0);
        /* every private slot is taken now: the public keys of verify fill the last one and
         * then go uncached */
        for (int round = 0; round < 2; round++) {
            const struct kms_sign_opts *use = round == 0 ? &oc : &o;
            assert_true(verify(&pa, &a1, use, NULL, 0, m, 1, sa1));
            assert_true(verify(&pb, &b1, use, NULL, 0, m, 1, sb1));
            assert_true(verify(&pa, &a2, use, NULL, 0, m, 1, sa2));
            assert_false(verify(&pa, &a1, use, NULL, 0, m, 1, sb1));
            assert_false(verify(&pb, &b1, use, NULL, 0, m, 1, sa1));
        }
        /* a cached private key signs again with the right key */
        assert_int_equal(kms_keyring_sign(&pb, &b1, &oc, NULL, 0, m, 1, &again, NULL, &err), 0);
        assert_true(verify(&pb, &b1, &o, NULL, 0, m, 1, again));
        assert_false(verify(&pa, &a1, &o, NULL, 0, m, 1, again));
        kms_sign_cache_destroy(&oc.cache);
        assert_null(oc.cache);
        kms_sign_cache_destroy(&oc.cache);
        free(again);
        free(sa1);
        free(sa2);
        free(sb1);
        kms_memzero(&a1, sizeof(a1));
        kms_memzero(&a2, sizeof(a2));
        kms_memzero(&b1, sizeof(b1));
    }
}

static void test_signature_headers(void **state)
{
    struct kms_key_policy p;
    struct kms_key_version kv;
    struct kms_err err;
    uint32_t v = 0;
    static const struct {
        const char *sig, *msg;
    } bad[] = {
        {"vault:x", "invalid signature: no prefix"},
        {"vault:v3", "invalid signature: wrong number of fields"},
        {"vault:vx:AA==", "invalid signature: version number could not be decoded"},
        {"vault:v:AA==", "invalid signature: version number could not be decoded"},
        {"vault:v6:AA==", "invalid signature: version is too new"},
        {"vault:v1:AA==", "ciphertext or signature version is disallowed by policy (too old)"},
        {"vault:v0:AA==", "ciphertext or signature version is disallowed by policy (too old)"},
        {"vault:v-1:AA==", "ciphertext or signature version is disallowed by policy (too old)"},
    };
    (void)state;
    policy(KMS_KEY_ECDSA_P256, &p, &kv);
    p.latest_version = 5;
    p.min_decryption_version = 2;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(
            kms_keyring_signature_version(&p, bad[i].sig, strlen(bad[i].sig), &v, &err), -1);
        assert_int_equal(err.status, 400);
        assert_string_equal(err.msg, bad[i].msg);
    }
    assert_int_equal(kms_keyring_signature_version(&p, "vault:v+02:AA==", 15, &v, &err), 0);
    assert_int_equal(v, 2);
    /* signing versions: OpenBao's messages and floors */
    p.min_encryption_version = 3;
    assert_int_equal(kms_keyring_sign_version(&p, 0, &v, &err), 0);
    assert_int_equal(v, 5);
    assert_int_equal(kms_keyring_sign_version(&p, -1, &v, &err), -1);
    assert_string_equal(err.msg, "requested version for signing is negative");
    assert_int_equal(kms_keyring_sign_version(&p, 6, &v, &err), -1);
    assert_string_equal(err.msg, "requested version for signing is higher than the latest key "
                                 "version");
    assert_int_equal(kms_keyring_sign_version(&p, 2, &v, &err), -1);
    assert_string_equal(err.msg, "requested version for signing is less than the minimum "
                                 "encryption key version");
    p.min_encryption_version = 0;
    assert_int_equal(kms_keyring_sign_version(&p, 1, &v, &err), -1);
    assert_string_equal(err.msg, "no such key version");
}

static void test_export_encodings(void **state)
{
    struct kms_key_policy p;
    struct kms_key_version kv;
    struct kms_err err;
    char *s = NULL;
    static const struct {
        enum kms_export_type t;
        enum kms_export_format f;
        const char *prefix;
        bool newline;
    } rsa[] = {
        {KMS_EXPORT_SIGNING_KEY, KMS_FORMAT_DEFAULT, "-----BEGIN RSA PRIVATE KEY-----\n", true},
        {KMS_EXPORT_ENCRYPTION_KEY, KMS_FORMAT_PEM, "-----BEGIN PRIVATE KEY-----\n", true},
        {KMS_EXPORT_SIGNING_KEY, KMS_FORMAT_DER, "MIIE", false},
        {KMS_EXPORT_PUBLIC_KEY, KMS_FORMAT_DEFAULT, "-----BEGIN PUBLIC KEY-----\n", true},
        {KMS_EXPORT_PUBLIC_KEY, KMS_FORMAT_DER, "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A", false},
    };
    (void)state;
    rsa_key(&p, &kv);
    for (size_t i = 0; i < sizeof(rsa) / sizeof(rsa[0]); i++) {
        assert_int_equal(kms_keyring_export(&p, &kv, rsa[i].t, rsa[i].f, &s, &err), 0);
        assert_int_equal(strncmp(s, rsa[i].prefix, strlen(rsa[i].prefix)), 0);
        assert_int_equal(s[strlen(s) - 1] == '\n', rsa[i].newline);
        kms_free_wipe((void **)&s, strlen(s) + 1);
    }
    assert_int_equal(kms_keyring_export(&p, &kv, KMS_EXPORT_SIGNING_KEY, KMS_FORMAT_RAW, &s, &err),
                     -1);
    assert_true(err.wrapped && err.status == 500);
    assert_string_equal(err.msg,
                        "unknown key format for rsa key; supported values are ``, `der`, or `pem`");

    ec_key(KMS_KEY_ECDSA_P256, P256_D, P256_Q, &p, &kv);
    assert_int_equal(
        kms_keyring_export(&p, &kv, KMS_EXPORT_SIGNING_KEY, KMS_FORMAT_DEFAULT, &s, &err), 0);
    assert_int_equal(strncmp(s, "-----BEGIN EC PRIVATE KEY-----\n", 31), 0);
    assert_string_equal(s + strlen(s) - 28, "-----END EC PRIVATE KEY-----");
    kms_free_wipe((void **)&s, strlen(s) + 1);
    /* SEC1 of the RFC 6979 key: version 1, the scalar, the curve, the point */
    assert_int_equal(kms_keyring_export(&p, &kv, KMS_EXPORT_PUBLIC_KEY, KMS_FORMAT_DER, &s, &err),
                     0);
    assert_string_equal(s, "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEYP7UuiVanTHJYet0xjVtaMBJuJI7Yfps"
                           "5mliLmDyn7Z5A/4QCLi8maQa6elWKLxk8vGyDC1+n1F3o8KU1EYimQ==");
    kms_free_wipe((void **)&s, strlen(s) + 1);
    assert_int_equal(kms_keyring_export(&p, &kv, KMS_EXPORT_PUBLIC_KEY, KMS_FORMAT_RAW, &s, &err),
                     -1);
    assert_string_equal(err.msg,
                        "unknown key format for ec key; supported values are ``, `der`, or `pem`");

    ed25519_key("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
                "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", &p, &kv);
    assert_int_equal(kms_keyring_export(&p, &kv, KMS_EXPORT_PUBLIC_KEY, KMS_FORMAT_RAW, &s, &err),
                     0);
    assert_string_equal(s, "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=");
    kms_free_wipe((void **)&s, strlen(s) + 1);
    assert_int_equal(kms_keyring_export(&p, &kv, KMS_EXPORT_SIGNING_KEY, KMS_FORMAT_DER, &s, &err),
                     0);
    /* PKCS#8: 302e020100300506032b657004220420 || seed */
    assert_string_equal(s, "MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g");
    kms_free_wipe((void **)&s, strlen(s) + 1);
    assert_int_equal(
        kms_keyring_export(&p, &kv, KMS_EXPORT_SIGNING_KEY, KMS_FORMAT_DEFAULT, &s, &err), 0);
    assert_int_equal(strlen(s), 88); /* base64 of seed || public key */
    kms_free_wipe((void **)&s, strlen(s) + 1);
    assert_int_equal(kms_keyring_export(&p, &kv, KMS_EXPORT_PUBLIC_KEY, KMS_FORMAT_PEM, &s, &err),
                     0);
    assert_string_equal(s, "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvP"
                           "apiMlrwIaaPcHURo=\n-----END PUBLIC KEY-----");
    kms_free_wipe((void **)&s, strlen(s) + 1);
    assert_int_equal(kms_keyring_export(&p, &kv, KMS_EXPORT_HMAC_KEY, KMS_FORMAT_PEM, &s, &err),
                     -1);
    assert_string_equal(err.msg, "unknown format for HMAC key; supported values are `` or `raw`");
}

static void test_hmac_keys_and_records(void **state)
{
    struct kms_key_policy p, q;
    struct kms_key_version kv, back;
    struct kms_err err;
    uint8_t rec[KMS_KEY_POLICY_ENC_MAX];
    uint8_t vrec[KMS_KEY_VERSION_ENC_MAX];
    size_t n, klen = 0;
    (void)state;
    assert_int_equal(kms_key_policy_init(&p, KMS_KEY_HMAC), 0);
    assert_int_equal(kms_key_policy_check_new(&p, &err), -1);
    assert_true(err.wrapped);
    assert_string_equal(err.msg, "invalid key size for HMAC key, must be between 32 and 512 bytes");
    assert_int_equal(kms_key_version_generate(&p, 1, &kv), -1);
    p.key_size = 100;
    assert_int_equal(kms_key_policy_check_new(&p, &err), 0);
    p.latest_version = 1;
    assert_int_equal(kms_key_version_generate(&p, 1, &kv), 0);
    assert_int_equal(kv.key_len, 100);
    assert_ptr_equal(kms_key_version_hmac_key(&p, &kv, &klen), kv.key);
    assert_int_equal(klen, 100);
    /* policy format 2 carries key_size; format 1 is kept for everything else */
    n = kms_key_policy_encode(&p, rec);
    assert_int_equal(n, 75);
    assert_int_equal(rec[0], 2);
    assert_int_equal(kms_key_policy_decode(rec, n, &q), 0);
    assert_memory_equal(&p, &q, sizeof(p));
    rec[0] = 1;
    assert_int_equal(kms_key_policy_decode(rec, n, &q), -1);
    n = kms_key_version_encode(&kv, vrec);
    assert_int_equal(n, 152);
    assert_int_equal(kms_key_version_decode(vrec, n, &back), 0);
    assert_memory_equal(&kv, &back, sizeof(kv));
    /* derivation and convergence are refused for the new types, as OpenBao */
    assert_int_equal(kms_key_policy_init(&p, KMS_KEY_RSA3072), 0);
    p.derived = true;
    assert_int_equal(kms_key_policy_check_new(&p, &err), -1);
    assert_string_equal(err.msg, "key derivation and convergent encryption not supported for keys "
                                 "of type rsa-3072");
    assert_int_equal(kms_key_policy_init(&p, KMS_KEY_ED25519), 0);
    p.derived = true;
    assert_int_equal(kms_key_policy_check_new(&p, &err), 0);
    p.convergent = true;
    assert_int_equal(kms_key_policy_check_new(&p, &err), -1);
    assert_string_equal(err.msg, "convergent encryption not supported for keys of type ed25519");
    /* a stored policy that breaks those rules does not load */
    p.convergent = false;
    p.type = KMS_KEY_ECDSA_P384;
    p.latest_version = 1;
    n = kms_key_policy_encode(&p, rec);
    assert_int_equal(n, 71);
    assert_int_equal(kms_key_policy_decode(rec, n, &q), -1);
    p.derived = false;
    n = kms_key_policy_encode(&p, rec);
    assert_int_equal(kms_key_policy_decode(rec, n, &q), 0);
    kms_memzero(&kv, sizeof(kv));
    kms_memzero(&back, sizeof(back));
}

/* Records written before the asymmetric types (format 1) still load, bit for bit. */
static void test_format1_records_load(void **state)
{
    /* an aes128-gcm96 policy and a version record as the previous release wrote them */
    static const char policy_v1[] =
        "010000020000000100000000000000000000000000000000000000b48f01670000000031313131313131"
        "312d313131312d343131312d383131312d313131313131313131313131";
    uint8_t rec[128];
    uint8_t vrec[82];
    struct kms_key_policy p;
    struct kms_key_version kv, back;
    (void)state;
    size_t n = strlen(policy_v1) / 2;
    assert_int_equal(n, 71);
    assert_int_equal(kms_hex_decode(policy_v1, 2 * n, rec), 0);
    assert_int_equal(kms_key_policy_decode(rec, n, &p), 0);
    assert_int_equal(p.type, KMS_KEY_AES128_GCM96);
    assert_int_equal(p.latest_version, 2);
    assert_int_equal(p.key_size, 0);
    assert_string_equal(p.uuid, "11111111-1111-4111-8111-111111111111");
    uint8_t again[KMS_KEY_POLICY_ENC_MAX];
    assert_int_equal(kms_key_policy_encode(&p, again), 71);
    assert_memory_equal(again, rec, 71);

    memset(vrec, 0, sizeof(vrec));
    vrec[0] = 1;
    vrec[1] = 7; /* version 7 */
    for (int i = 0; i < 32; i++) {
        vrec[5 + i] = (uint8_t)i;
        vrec[37 + i] = (uint8_t)(0xa0 + i);
    }
    vrec[69] = 0x10; /* created_sec */
    assert_int_equal(kms_key_version_decode(vrec, sizeof(vrec), &kv), 0);
    assert_int_equal(kv.version, 7);
    assert_int_equal(kv.key_len, 32);
    assert_int_equal(kv.key[31], 31);
    assert_int_equal(kv.hmac_key[0], 0xa0);
    assert_int_equal(kv.created_sec, 16);
    uint8_t out[KMS_KEY_VERSION_ENC_MAX];
    assert_int_equal(kms_key_version_encode(&kv, out), 82);
    assert_memory_equal(out, vrec, 82);
    assert_int_equal(kms_key_version_decode(out, 82, &back), 0);
    kms_memzero(&kv, sizeof(kv));
    kms_memzero(&back, sizeof(back));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ed25519_rfc8032),
        cmocka_unit_test(test_ed25519_reference_vector_h),
        cmocka_unit_test(test_ecdsa_rfc6979_verify),
        cmocka_unit_test(test_ecdsa_asn1_rules),
        cmocka_unit_test(test_ecdsa_sign_roundtrips),
        cmocka_unit_test(test_rsa_known_answers),
        cmocka_unit_test(test_rsa_oaep),
        cmocka_unit_test(test_generate_every_type),
        cmocka_unit_test(test_opts_parse),
        cmocka_unit_test(test_sign_cache),
        cmocka_unit_test(test_signature_headers),
        cmocka_unit_test(test_export_encodings),
        cmocka_unit_test(test_hmac_keys_and_records),
        cmocka_unit_test(test_format1_records_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
