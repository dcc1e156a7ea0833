/*
 * tls.c - the server's TLS context: TLS 1.2+ with forward-secret AEAD suites only, certificate
 * and key from PEM files, an optional client-certificate requirement, and a reload that swaps
 * the context for new connections while existing ones keep the old one (SSL_CTX is
 * reference-counted by every SSL made from it).
 *
 * It lives in crypto/ because this folder is the only one that includes OpenSSL; it hands the
 * server a libevent bufferevent so server/ never sees an SSL object.
 */
#include "crypto/crypto.h"

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

struct kms_tls {
    pthread_mutex_t lock;
    SSL_CTX *ctx;
    char cert[1024];
    char key[1024];
    char client_ca[1024];
    bool require_client_cert;
};

static void last_error(struct kms_err *err, const char *what, const char *path)
{
    char buf[256];
    unsigned long e = ERR_get_error();
    ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    kms_err_set(err, 500, "%s %s: %s", what, path, e ? buf : "unknown error");
}

/*
 * The key's passphrase callback: kmsd takes unencrypted keys only (there is no setting for a
 * passphrase, as in OpenBao's listener). OpenSSL's default callback would prompt on the
 * controlling terminal and block start-up, or the main loop at a SIGHUP reload, until someone
 * typed; this one notes that a passphrase was asked for and gives none.
 */
static int no_passphrase(char *buf, int size, int rwflag, void *asked)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    if (asked != NULL) {
        *(bool *)asked = true;
    }
    return -1;
}

/*
 * 0 when the context's certificate is within its validity period now; otherwise -1 with err
 * naming the file and the date ("has expired on …", "is not valid before …"). OpenSSL loads
 * such a certificate without a word, and every client that verifies it then fails.
 */
static int ctx_validity(SSL_CTX *ctx, const char *path, struct kms_err *err)
{
    X509 *x = SSL_CTX_get0_certificate(ctx);
    if (x == NULL) {
        return 0;
    }
    const ASN1_TIME *after = X509_get0_notAfter(x), *before = X509_get0_notBefore(x);
    const ASN1_TIME *at = NULL;
    const char *what = NULL;
    if (X509_cmp_current_time(after) <= 0) {
        at = after;
        what = "has expired on";
    } else if (X509_cmp_current_time(before) >= 0) {
        at = before;
        what = "is not valid before";
    }
    if (at == NULL) {
        return 0;
    }
    struct tm tm;
    char when[32] = "an unreadable date";
    if (ASN1_TIME_to_tm(at, &tm) == 1) {
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    }
    return kms_err_set(err, 500, "TLS certificate %s %s %s", path, what, when);
}

int kms_tls_check_validity(struct kms_tls *t, struct kms_err *err)
{
    pthread_mutex_lock(&t->lock);
    int rc = ctx_validity(t->ctx, t->cert, err);
    pthread_mutex_unlock(&t->lock);
    return rc;
}

/*
 * -1 when path names something other than a regular file (after symlinks). OpenSSL opens
 * what it is given: a FIFO blocked start-up, or the main loop at a SIGHUP (and with it every
 * later signal, SIGTERM included), until a writer came; a device such as /dev/zero was read
 * without end.
 */
static int regular_file(const char *what, const char *path, struct kms_err *err)
{
    struct stat sb;
    if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
        return kms_err_set(err, 500, "%s %s is not a regular file", what, path);
    }
    return 0; /* a missing file: OpenSSL says so */
}

static SSL_CTX *build_ctx(const struct kms_tls *t, struct kms_err *err)
{
    bool asked = false;
    if (regular_file("TLS certificate", t->cert, err) != 0 ||
        regular_file("TLS key", t->key, err) != 0 ||
        (t->client_ca[0] != '\0' && regular_file("TLS client CA", t->client_ca, err) != 0)) {
        return NULL;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        kms_err_set(err, 500, "cannot create a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* SSL_OP_CLEANSE_PLAINTEXT: a record's decrypted bytes (tokens, plaintexts) are wiped once
     * read, not left in OpenSSL's read buffer until the next record overwrites them */
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TICKET |
                                 SSL_OP_CLEANSE_PLAINTEXT);
    /* no session state per client: with tickets off, OpenSSL cached every session (and sent
     * TLS 1.3 clients a stateful ticket for it), ~1 KiB each up to 20,480, never resumed */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 0);
    if (SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20") != 1) {
        kms_err_set(err, 500, "cannot set TLS cipher suites");
        goto fail;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, t->cert) != 1) {
        last_error(err, "cannot load TLS certificate", t->cert);
        goto fail;
    }
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    SSL_CTX_set_default_passwd_cb_userdata(ctx, &asked);
    int loaded = SSL_CTX_use_PrivateKey_file(ctx, t->key, SSL_FILETYPE_PEM);
    SSL_CTX_set_default_passwd_cb_userdata(ctx, NULL);
    if (loaded != 1 && asked) {
        ERR_clear_error();
        kms_err_set(err, 500, "TLS key %s is encrypted: kmsd needs an unencrypted PEM key", t->key);
        goto fail;
    }
    if (loaded != 1) {
        last_error(err, "cannot load TLS key", t->key);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        kms_err_set(err, 500, "TLS key %s does not match certificate %s", t->key, t->cert);
        goto fail;
    }
    if (t->client_ca[0] != '\0') {
        if (SSL_CTX_load_verify_locations(ctx, t->client_ca, NULL) != 1) {
            last_error(err, "cannot load TLS client CA", t->client_ca);
            goto fail;
        }
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(t->client_ca);
        if (names != NULL) {
            SSL_CTX_set_client_CA_list(ctx, names);
        }
        SSL_CTX_set_verify(
            ctx, SSL_VERIFY_PEER | (t->require_client_cert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
            NULL);
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

int kms_tls_create(const char *cert, const char *key, const char *client_ca,
                   bool require_client_cert, struct kms_tls **out, struct kms_err *err)
{
    struct kms_tls *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        return kms_err_set(err, 500, "out of memory");
    }
    snprintf(t->cert, sizeof(t->cert), "%s", cert);
    snprintf(t->key, sizeof(t->key), "%s", key);
    snprintf(t->client_ca, sizeof(t->client_ca), "%s", client_ca ? client_ca : "");
    t->require_client_cert = require_client_cert;
    if (require_client_cert && t->client_ca[0] == '\0') {
        free(t);
        return kms_err_set(err, 400, "requiring client certificates needs a client CA file");
    }
    t->ctx = build_ctx(t, err);
    if (t->ctx == NULL) {
        free(t);
        return -1;
    }
    pthread_mutex_init(&t->lock, NULL);
    *out = t;
    return 0;
}

int kms_tls_reload(struct kms_tls *t, struct kms_err *err)
{
    SSL_CTX *fresh = build_ctx(t, err);
    if (fresh == NULL) {
        return -1; /* keep serving with the old certificate */
    }
    /* an expired (or not yet valid) certificate would fail every client that verifies it:
     * the old one, whatever its state, is no worse */
    if (ctx_validity(fresh, t->cert, err) != 0) {
        SSL_CTX_free(fresh);
        return -1;
    }
    pthread_mutex_lock(&t->lock);
    SSL_CTX *old = t->ctx;
    t->ctx = fresh;
    pthread_mutex_unlock(&t->lock);
    SSL_CTX_free(old);
    return 0;
}

struct bufferevent *kms_tls_bufferevent(struct kms_tls *t, struct event_base *base, int fd)
{
    pthread_mutex_lock(&t->lock);
    SSL *ssl = SSL_new(t->ctx);
    pthread_mutex_unlock(&t->lock);
    if (ssl == NULL) {
        return NULL;
    }
    struct bufferevent *bev = bufferevent_openssl_socket_new(
        base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        SSL_free(ssl);
        return NULL;
    }
    /* a peer that vanishes without close_notify is not an error worth a log line */
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
}

void kms_tls_destroy(struct kms_tls **tp)
{
    struct kms_tls *t = *tp;
    if (t == NULL) {
        return;
    }
    SSL_CTX_free(t->ctx);
    pthread_mutex_destroy(&t->lock);
    free(t);
    *tp = NULL;
}
