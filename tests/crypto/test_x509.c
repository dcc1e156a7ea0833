/*
 * test_x509.c - crypto/x509.c: derive-key's ECDH + HKDF against the NIST SP 800-56A CAVS
 * ECC CDH vector for P-256 (COUNT 0: the shared secret Z) followed by HKDF-SHA256 (no salt,
 * no info; expected keys computed with Python's cryptography from that Z), the peer-key
 * refusals, and a CSR from a version that OpenSSL verifies under the version's public key.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "crypto/crypto_int.h"
#include "crypto/keyring.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

static void hex(const char *h, uint8_t *out, size_t n)
{
    assert_int_equal(strlen(h), 2 * n);
    assert_int_equal(kms_hex_decode(h, 2 * n, out), 0);
}

/* NIST CAVS KAS ECC CDH primitive, P-256, COUNT = 0 (dIUT, QIUT; QCAVS as PEM). */
static const char D_IUT[] = "7d7dc5f71eb29ddaf80d6214632eeae03d9058af1fb6d22ed80badb62bc1a534";
static const char Q_IUT[] = "04ead218590119e8876b29146ff89ca61770c4edbbf97d38ce385ed281d8a6b230"
                            "28af61281fd35e2fa7002523acc85a429cb06ee6648325389f59edfce1405141";
static const char Q_CAVS_PEM[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEcAxI939WWExcxjLKZWQNuRtrrM46\n"
    "Tfa0LOfMg4gz0ofbceUJ4/2bBg3bILpcUdzFlI1G+/ZA3+BEF4LKuF+krA==\n"
    "-----END PUBLIC KEY-----\n";
/* HKDF-SHA256(Z = 46fc6210...97bd7b, no salt, no info), 32 and 16 bytes */
static const char HKDF32[] = "349857d71da561c98a27571c30290bccac2cd89d6318d7738f5bfe289a6fbf47";
static const char HKDF16[] = "349857d71da561c98a27571c30290bcc";

static void p256_version(struct kms_key_policy *p, struct kms_key_version *kv)
{
    memset(kv, 0, sizeof(*kv));
    assert_int_equal(kms_key_policy_init(p, KMS_KEY_ECDSA_P256), 0);
    kv->version = 1;
    hex(D_IUT, kv->key, 32);
    hex(Q_IUT, kv->key + 32, 65);
    kv->key_len = 97;
}

static void test_ecdh_known_answer(void **state)
{
    (void)state;
    struct kms_key_policy p;
    struct kms_key_version kv;
    struct kms_err err;
    uint8_t out[32], want[32];
    p256_version(&p, &kv);
    assert_int_equal(
        kms_keyring_derive_ecdh(&p, &kv, Q_CAVS_PEM, strlen(Q_CAVS_PEM), out, 32, &err), 0);
    hex(HKDF32, want, 32);
    assert_memory_equal(out, want, 32);
    assert_int_equal(
        kms_keyring_derive_ecdh(&p, &kv, Q_CAVS_PEM, strlen(Q_CAVS_PEM), out, 16, &err), 0);
    hex(HKDF16, want, 16);
    assert_memory_equal(out, want, 16);
}

static void test_ecdh_refusals(void **state)
{
    (void)state;
    struct kms_key_policy p;
    struct kms_key_version kv;
    struct kms_err err;
    uint8_t out[32];
    char buf[512];
    p256_version(&p, &kv);
    memset(&err, 0, sizeof(err));
    assert_int_equal(kms_keyring_derive_ecdh(&p, &kv, "x", 1, out, 32, &err), -1);
    assert_int_equal(err.status, 400);
    assert_string_equal(err.msg, "failed to parse supplied peer public key PEM: data does not "
                                 "contain any valid public keys ");
    snprintf(buf, sizeof(buf), "%sextra", Q_CAVS_PEM);
    assert_int_equal(kms_keyring_derive_ecdh(&p, &kv, buf, strlen(buf), out, 32, &err), -1);
    assert_string_equal(err.msg, "failed to parse supplied peer public key PEM: unexpected "
                                 "trailing data after parsed PEM block ");
    /* blanks after the block are fine */
    snprintf(buf, sizeof(buf), "%s \n\n", Q_CAVS_PEM);
    assert_int_equal(kms_keyring_derive_ecdh(&p, &kv, buf, strlen(buf), out, 32, &err), 0);
    /* the peer key on another curve: the base's own P-384 policy does not match */
    p.type = KMS_KEY_ECDSA_P384;
    assert_int_equal(
        kms_keyring_derive_ecdh(&p, &kv, Q_CAVS_PEM, strlen(Q_CAVS_PEM), out, 32, &err), -1);
    assert_int_equal(err.status, 400);
    assert_string_equal(err.msg,
                        "base private key type ecdsa-p384 does not match peer public key curve");
    for (size_t i = 0; i < sizeof(out); i++) {
        assert_int_equal(out[i], 0); /* wiped on failure */
    }
}

static void test_csr_verifies(void **state)
{
    (void)state;
    struct kms_key_policy p;
    struct kms_key_version kv;
    struct kms_err err;
    char *csr = NULL;
    p256_version(&p, &kv);
    assert_int_equal(kms_keyring_csr(&p, &kv, "", &csr, &err), 0);
    BIO *bio = BIO_new_mem_buf(csr, -1);
    X509_REQ *req = PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL);
    assert_non_null(req);
    EVP_PKEY *pub = NULL;
    assert_int_equal(kms_asym_version_pkey(p.type, &kv, false, &pub), 0);
    assert_int_equal(X509_REQ_verify(req, pub), 1);
    assert_int_equal(EVP_PKEY_eq(X509_REQ_get0_pubkey(req), pub), 1);
    EVP_PKEY_free(pub);
    X509_REQ_free(req);
    BIO_free(bio);
    free(csr);
    assert_int_equal(kms_keyring_csr(&p, &kv, "nope", &csr, &err), -1);
    assert_int_equal(err.status, 400);
    assert_string_equal(err.msg, "could not decode PEM CSR");
    assert_null(csr);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ecdh_known_answer),
        cmocka_unit_test(test_ecdh_refusals),
        cmocka_unit_test(test_csr_verifies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
