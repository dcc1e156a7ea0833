/*
 * x509.c - key agreement and certificates for Transit's asymmetric keys (OpenBao's keysutil
 * DeriveKeyECDH, CreateCSR and PersistCertificateChain): derive-key's ECDH + HKDF, the CSR a
 * key version signs, and the checks of a certificate chain set on a version.
 *
 * Design notes:
 * - ECDH is OpenSSL's EVP_PKEY_derive between the version's private key and the peer's
 *   public key (the shared secret is the x coordinate, padded to the field size, as Go's
 *   crypto/ecdh); the key is then HKDF-SHA256(secret, no salt, no info) through EVP_KDF.
 * - The peer key is read as Go's certutil.ParsePublicKeyPEM reads it: one PEM block and
 *   nothing but blanks after it, a SubjectPublicKeyInfo or else a certificate's key. Its
 *   error texts are OpenBao's; where Go's parser and OpenSSL's disagree on why bytes are
 *   malformed, a generic Go-style text stands in.
 * - A CSR takes the template's subject (its DER, unchanged) and requested extensions, the
 *   version's public key, and is signed by the version with the digest Go picks for the key
 *   (ECDSA: SHA-256/384/512 by curve, RSA PKCS#1 v1.5 with SHA-256, ed25519 pure).
 * - Chains are kept as their certificates' DER, concatenated (each DER element carries its
 *   own length), and shown as PEM blocks joined by newlines, as OpenBao's key read shows them.
 * - Basic constraints are read from the extension itself (present = Go's
 *   BasicConstraintsValid), not from OpenSSL's derived CA flag, which also counts v1 roots.
 */
#include "crypto/crypto_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#define CHAIN_MAX_CERTS 16

static bool blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
            return false;
    }
    return true;
}

/* Bytes left unread in a memory BIO. */
static bool bio_rest_blank(BIO *bio)
{
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    return n <= 0 || data == NULL || blank(data, (size_t)n);
}

/* One PEM block from bio: *der (OPENSSL_free) and its type name; -1 when none decodes. */
static int pem_block(BIO *bio, char **name, unsigned char **der, long *derlen)
{
    char *header = NULL;
    *name = NULL;
    *der = NULL;
    if (PEM_read_bio(bio, name, &header, der, derlen) != 1) {
        ERR_clear_error();
        return -1;
    }
    OPENSSL_free(header);
    return 0;
}

static const char *ec_curve(enum kms_key_type t)
{
    switch (t) {
    case KMS_KEY_ECDSA_P256:
        return "P-256";
    case KMS_KEY_ECDSA_P384:
        return "P-384";
    case KMS_KEY_ECDSA_P521:
        return "P-521";
    default:
        return NULL;
    }
}

/* The curve of an EC key as OpenSSL names it ("P-256"), or "" when it has none we serve. */
static void pkey_curve(EVP_PKEY *k, char *out, size_t n)
{
    size_t len = 0;
    out[0] = '\0';
    if (EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, out, n, &len) != 1) {
        out[0] = '\0';
        return;
    }
    /* OpenSSL may answer with the SEC name */
    if (strcmp(out, "prime256v1") == 0 || strcmp(out, "secp256r1") == 0)
        snprintf(out, n, "P-256");
    else if (strcmp(out, "secp384r1") == 0)
        snprintf(out, n, "P-384");
    else if (strcmp(out, "secp521r1") == 0)
        snprintf(out, n, "P-521");
}

/* ---- derive-key: ECDH + HKDF ------------------------------------------------------------- */

#define PEER_ERR "failed to parse supplied peer public key PEM: "

/* The peer's key as certutil.ParsePublicKeyPEM gives it (400s in its words). */
static int peer_key(const char *pem, size_t pemlen, EVP_PKEY **out, struct kms_err *err)
{
    BIO *bio = NULL;
    char *name = NULL;
    unsigned char *der = NULL;
    long derlen = 0;
    const unsigned char *q;
    X509 *cert = NULL;
    int rc = -1;

    *out = NULL;
    if (pemlen > INT32_MAX || (bio = BIO_new_mem_buf(pem, (int)pemlen)) == NULL) {
        kms_err_setw(err, 500, "out of memory");
        goto out;
    }
    if (pem_block(bio, &name, &der, &derlen) != 0) {
        kms_err_set(err, 400, PEER_ERR "data does not contain any valid public keys ");
        goto out;
    }
    if (!bio_rest_blank(bio)) {
        kms_err_set(err, 400, PEER_ERR "unexpected trailing data after parsed PEM block ");
        goto out;
    }
    q = der;
    *out = d2i_PUBKEY(NULL, &q, derlen);
    if (*out == NULL || q != der + derlen) {
        EVP_PKEY_free(*out);
        *out = NULL;
        q = der;
        cert = d2i_X509(NULL, &q, derlen);
        if (cert == NULL || (*out = X509_get_pubkey(cert)) == NULL) {
            kms_err_set(err, 400, PEER_ERR "x509: malformed certificate ");
            goto out;
        }
    }
    rc = 0;
out:
    ERR_clear_error();
    X509_free(cert);
    OPENSSL_free(der);
    OPENSSL_free(name);
    BIO_free(bio);
    return rc;
}

int kms_keyring_derive_ecdh(const struct kms_key_policy *p, const struct kms_key_version *kv,
                            const char *peer_pem, size_t pemlen, uint8_t *out, size_t outlen,
                            struct kms_err *err)
{
    const char *curve = ec_curve(p->type);
    EVP_PKEY *own = NULL, *peer = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    uint8_t secret[66];
    size_t slen = sizeof(secret);
    char pc[32];
    int rc = -1;

    kms_memzero(out, outlen);
    if (curve == NULL) {
        kms_err_setw(err, 500, "unsupported base key type for ECDH key agreement");
        goto out;
    }
    if (peer_key(peer_pem, pemlen, &peer, err) != 0)
        goto out;
    if (EVP_PKEY_get_base_id(peer) != EVP_PKEY_EC) {
        if (EVP_PKEY_get_base_id(peer) == EVP_PKEY_RSA ||
            EVP_PKEY_get_base_id(peer) == EVP_PKEY_ED25519)
            kms_err_set(err, 400, "supplied peer public key is not an ECDSA key");
        else
            kms_err_set(err, 400, PEER_ERR "data does not contain any valid public keys ");
        goto out;
    }
    pkey_curve(peer, pc, sizeof(pc));
    if (strcmp(pc, "P-256") != 0 && strcmp(pc, "P-384") != 0 && strcmp(pc, "P-521") != 0) {
        kms_err_set(err, 400, PEER_ERR "x509: malformed certificate ");
        goto out;
    }
    if (strcmp(pc, curve) != 0) {
        kms_err_set(err, 400, "base private key type %s does not match peer public key curve",
                    kms_key_type_name(p->type));
        goto out;
    }
    if (kms_asym_version_pkey(p->type, kv, true, &own) != 0 ||
        (ctx = EVP_PKEY_CTX_new_from_pkey(NULL, own, NULL)) == NULL ||
        EVP_PKEY_derive_init(ctx) != 1 || EVP_PKEY_derive_set_peer(ctx, peer) != 1 ||
        EVP_PKEY_derive(ctx, secret, &slen) != 1 ||
        kms_hkdf_sha256(secret, slen, NULL, 0, NULL, 0, out, outlen) != 0) {
        kms_memzero(out, outlen);
        kms_err_setw(err, 500, "error computing the shared secret");
        goto out;
    }
    rc = 0;
out:
    ERR_clear_error();
    kms_memzero(secret, sizeof(secret));
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(own);
    EVP_PKEY_free(peer);
    return rc;
}

/* ---- CSR --------------------------------------------------------------------------------- */

static const EVP_MD *csr_md(enum kms_key_type t)
{
    switch (t) {
    case KMS_KEY_ED25519:
        return NULL;
    case KMS_KEY_ECDSA_P384:
        return EVP_sha384();
    case KMS_KEY_ECDSA_P521:
        return EVP_sha512();
    default:
        return EVP_sha256();
    }
}

static char *pem_string(BIO *bio)
{
    char *data = NULL;
    long len = BIO_get_mem_data(bio, &data);
    char *s;
    if (len < 0 || data == NULL || (s = malloc((size_t)len + 1)) == NULL)
        return NULL;
    memcpy(s, data, (size_t)len);
    s[len] = '\0';
    return s;
}

/* The template CSR (400 "could not decode PEM CSR" or a parse error); *out NULL for "". */
static int csr_template(const char *pem, X509_REQ **out, struct kms_err *err)
{
    BIO *bio = NULL;
    char *name = NULL;
    unsigned char *der = NULL;
    long derlen = 0;
    const unsigned char *q;
    int rc = -1;

    *out = NULL;
    if (pem == NULL || pem[0] == '\0')
        return 0;
    if ((bio = BIO_new_mem_buf(pem, -1)) == NULL) {
        kms_err_setw(err, 500, "out of memory");
        goto out;
    }
    if (pem_block(bio, &name, &der, &derlen) != 0) {
        kms_err_set(err, 400, "could not decode PEM CSR");
        goto out;
    }
    q = der;
    *out = d2i_X509_REQ(NULL, &q, derlen);
    if (*out == NULL || q != der + derlen) {
        X509_REQ_free(*out);
        *out = NULL;
        kms_err_set(err, 400, "x509: malformed certificate request");
        goto out;
    }
    rc = 0;
out:
    ERR_clear_error();
    OPENSSL_free(der);
    OPENSSL_free(name);
    BIO_free(bio);
    return rc;
}

int kms_keyring_csr(const struct kms_key_policy *p, const struct kms_key_version *kv,
                    const char *tmpl_pem, char **out, struct kms_err *err)
{
    X509_REQ *tmpl = NULL, *req = NULL;
    STACK_OF(X509_EXTENSION) *exts = NULL;
    EVP_PKEY *k = NULL;
    BIO *bio = NULL;
    int rc = -1;

    *out = NULL;
    if (csr_template(tmpl_pem, &tmpl, err) != 0)
        goto out;
    if (kv == NULL) {
        rc = 0;
        goto out;
    }
    if (kms_asym_version_pkey(p->type, kv, true, &k) != 0 || (req = X509_REQ_new()) == NULL ||
        X509_REQ_set_version(req, X509_REQ_VERSION_1) != 1 || X509_REQ_set_pubkey(req, k) != 1) {
        kms_err_setw(err, 500, "could not create the csr: could not create the CSR");
        goto out;
    }
    if (tmpl != NULL) {
        exts = X509_REQ_get_extensions(tmpl);
        if (X509_REQ_set_subject_name(req, X509_REQ_get_subject_name(tmpl)) != 1 ||
            (exts != NULL && sk_X509_EXTENSION_num(exts) > 0 &&
             X509_REQ_add_extensions(req, exts) != 1)) {
            kms_err_setw(err, 500, "could not create the csr: could not create the CSR");
            goto out;
        }
    }
    if (X509_REQ_sign(req, k, csr_md(p->type)) <= 0 || (bio = BIO_new(BIO_s_mem())) == NULL ||
        PEM_write_bio_X509_REQ(bio, req) != 1 || (*out = pem_string(bio)) == NULL) {
        kms_err_setw(err, 500, "could not create the csr: could not create the CSR");
        goto out;
    }
    rc = 0;
out:
    ERR_clear_error();
    BIO_free(bio);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    EVP_PKEY_free(k);
    X509_REQ_free(req);
    X509_REQ_free(tmpl);
    return rc;
}

/* ---- certificate chains ------------------------------------------------------------------ */

/* Basic constraints as Go reads them: *valid when the extension is there, *ca its cA. */
static void basic_constraints(X509 *x, bool *valid, bool *ca)
{
    int crit = 0;
    BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(x, NID_basic_constraints, &crit, NULL);
    *valid = bc != NULL;
    *ca = bc != NULL && bc->ca != 0;
    BASIC_CONSTRAINTS_free(bc);
}

/* Go's x509.PublicKeyAlgorithm name of a certificate's key. */
static const char *go_key_alg(EVP_PKEY *k)
{
    switch (k != NULL ? EVP_PKEY_get_base_id(k) : 0) {
    case EVP_PKEY_RSA:
        return "RSA";
    case EVP_PKEY_DSA:
        return "DSA";
    case EVP_PKEY_EC:
        return "ECDSA";
    case EVP_PKEY_ED25519:
        return "Ed25519";
    default:
        return "0";
    }
}

static bool alg_fits(enum kms_key_type t, EVP_PKEY *k)
{
    int id = k != NULL ? EVP_PKEY_get_base_id(k) : 0;
    if (t == KMS_KEY_ED25519)
        return id == EVP_PKEY_ED25519;
    if (ec_curve(t) != NULL)
        return id == EVP_PKEY_EC;
    return id == EVP_PKEY_RSA;
}

#define PERSIST "failed to persist certificate chain: "

int kms_keyring_cert_chain_check(const struct kms_key_policy *p, const struct kms_key_version *kv,
                                 const char *pem, uint8_t **der, size_t *derlen,
                                 struct kms_err *err)
{
    X509 *certs[CHAIN_MAX_CERTS] = {NULL};
    size_t n = 0, total = 0, len;
    const char *s = pem;
    BIO *bio = NULL;
    EVP_PKEY *own = NULL, *leafkey = NULL;
    uint8_t *buf = NULL;
    bool valid, ca;
    int rc = -1;

    *der = NULL;
    *derlen = 0;
    /* strings.TrimSpace, then PEM blocks until nothing is left */
    len = strlen(s);
    while (len > 0 && blank(s, 1)) {
        s++;
        len--;
    }
    while (len > 0 && blank(s + len - 1, 1))
        len--;
    if (len > INT32_MAX || (bio = BIO_new_mem_buf(s, (int)len)) == NULL) {
        kms_err_setw(err, 500, "out of memory");
        goto out;
    }
    while (!bio_rest_blank(bio)) {
        char *name = NULL;
        unsigned char *block = NULL;
        long blen = 0;
        if (pem_block(bio, &name, &block, &blen) != 0) {
            kms_err_set(err, 400, "could not decode a PEM block in the certificate chain");
            goto out;
        }
        if (strcmp(name, "CERTIFICATE") == 0 || strcmp(name, "X509 CERTIFICATE") == 0) {
            const unsigned char *q = block;
            X509 *x = n < CHAIN_MAX_CERTS ? d2i_X509(NULL, &q, blen) : NULL;
            if (x == NULL || q != block + blen) {
                X509_free(x);
                if (n < CHAIN_MAX_CERTS)
                    kms_err_set(err, 400,
                                "could not parse a certificate in the certificate chain: "
                                "x509: malformed certificate");
                else
                    kms_err_set(err, 400,
                                "certificate chains of more than %d certificates "
                                "are not supported by kmsd",
                                CHAIN_MAX_CERTS);
                OPENSSL_free(block);
                OPENSSL_free(name);
                goto out;
            }
            certs[n++] = x;
        }
        OPENSSL_free(block);
        OPENSSL_free(name);
    }
    if (n == 0) {
        kms_err_set(err, 400,
                    "provided certificate chain did not contain any valid PEM encoded "
                    "certificate");
        goto out;
    }
    basic_constraints(certs[0], &valid, &ca);
    if (valid && ca) {
        kms_err_set(err, 400,
                    PERSIST "certificate in the first element is not a valid leaf "
                            "certificate");
        goto out;
    }
    if (n > 1) {
        basic_constraints(certs[n - 1], &valid, &ca);
        if (!valid || !ca) {
            kms_err_set(err, 400,
                        PERSIST "certificate in the last element is not a valid CA "
                                "certificate");
            goto out;
        }
        for (size_t i = 1; i + 1 < n; i++) {
            basic_constraints(certs[i], &valid, &ca);
            if (!valid || !ca) {
                kms_err_set(err, 400,
                            PERSIST "could not validate if there is only one leaf "
                                    "certificate in the provided chain");
                goto out;
            }
        }
    }
    if (kv == NULL) {
        rc = 0;
        goto out;
    }
    leafkey = X509_get_pubkey(certs[0]);
    if (!alg_fits(p->type, leafkey)) {
        kms_err_set(err, 400,
                    PERSIST "could not validate key match between leaf certificate key and key "
                            "entry in transit: provided leaf certificate public key algorithm "
                            "'%s' does not match the transit key type '%s'",
                    go_key_alg(leafkey), kms_key_type_name(p->type));
        goto out;
    }
    if (kms_asym_version_pkey(p->type, kv, false, &own) != 0) {
        kms_err_setw(err, 500, PERSIST "cannot read key version");
        goto out;
    }
    if (EVP_PKEY_eq(own, leafkey) != 1) {
        kms_err_setw(err, 500,
                     PERSIST "leaf certificate public key does not match the selected key "
                             "version");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        int l = i2d_X509(certs[i], NULL);
        if (l <= 0) {
            kms_err_setw(err, 500, PERSIST "cannot encode certificate");
            goto out;
        }
        total += (size_t)l;
    }
    if ((buf = malloc(total)) == NULL) {
        kms_err_setw(err, 500, "out of memory");
        goto out;
    }
    total = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char *w = buf + total;
        int l = i2d_X509(certs[i], &w);
        if (l <= 0) {
            kms_err_setw(err, 500, PERSIST "cannot encode certificate");
            goto out;
        }
        total += (size_t)l;
    }
    *der = buf;
    *derlen = total;
    buf = NULL;
    rc = 0;
out:
    ERR_clear_error();
    free(buf);
    EVP_PKEY_free(leafkey);
    EVP_PKEY_free(own);
    for (size_t i = 0; i < n; i++)
        X509_free(certs[i]);
    BIO_free(bio);
    return rc;
}

int kms_cert_chain_pem(const uint8_t *der, size_t derlen, char **out)
{
    BIO *bio = BIO_new(BIO_s_mem());
    const unsigned char *q = der;
    const unsigned char *end = der + derlen;
    char *all = NULL;
    size_t used = 0;
    int rc = -1;

    *out = NULL;
    if (bio == NULL || (all = malloc(1)) == NULL)
        goto out;
    all[0] = '\0';
    while (q < end) {
        X509 *x = d2i_X509(NULL, &q, end - q);
        char *data = NULL;
        long len;
        char *grown;
        if (x == NULL)
            goto out;
        (void)BIO_reset(bio);
        if (PEM_write_bio_X509(bio, x) != 1) {
            X509_free(x);
            goto out;
        }
        X509_free(x);
        len = BIO_get_mem_data(bio, &data);
        while (len > 0 && blank(data + len - 1, 1))
            len--;
        if (len <= 0 || (grown = realloc(all, used + (size_t)len + 2)) == NULL)
            goto out;
        all = grown;
        if (used > 0)
            all[used++] = '\n';
        memcpy(all + used, data, (size_t)len);
        used += (size_t)len;
        all[used] = '\0';
    }
    *out = all;
    all = NULL;
    rc = 0;
out:
    ERR_clear_error();
    free(all);
    BIO_free(bio);
    return rc;
}
