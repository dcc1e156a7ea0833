/*
 * tls_client.c - the client side of TLS for kmsctl: a handshake over a socket the caller
 * already connected, certificate verification against a CA file or directory (or the system
 * store) with a host name or IP address check, an optional client certificate, then
 * read/write/close.
 *
 * Design notes:
 * - It lives in crypto/ because this folder is the only one that includes OpenSSL; the CLI
 *   sees an opaque connection and plain byte reads and writes.
 * - The socket may be non-blocking: every call waits with poll(2) for WANT_READ/WANT_WRITE up
 *   to the deadline fixed at connect time, so one deadline covers the whole HTTP exchange.
 * - TLS 1.2 or later only. SNI is sent for names, not for IP literals; SSL_set1_host checks
 *   DNS names and IP addresses alike (OpenSSL 3 treats an IP literal as an iPAddress SAN).
 * - A peer that closes without close_notify reads as end of stream: HTTP framing above
 *   (Content-Length, chunked) already detects a truncated body.
 */
#include "crypto/crypto.h"

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

struct kms_tls_conn {
    SSL_CTX *ctx;
    SSL *ssl;
    int fd;
    int64_t deadline_ms;
    bool up; /* handshake done and no fatal error since: close_notify may be sent */
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for the socket after WANT_READ/WANT_WRITE; 0 ready, -1 on timeout (errno set). */
static int wait_io(struct kms_tls_conn *c, int sslerr)
{
    for (;;) {
        int64_t left = c->deadline_ms - mono_ms();
        if (left <= 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        struct pollfd p = {c->fd, sslerr == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN, 0};
        int r = poll(&p, 1, (int)(left > 1000000 ? 1000000 : left));
        if (r > 0) {
            return 0;
        }
        if (r < 0 && errno != EINTR) {
            return -1;
        }
    }
}

static void ssl_error(struct kms_err *err, const char *what)
{
    char buf[256];
    unsigned long e = ERR_get_error();
    ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    kms_err_set(err, 0, "%s: %s", what, e ? buf : "unknown error");
}

static bool is_ip_literal(const char *host)
{
    ASN1_OCTET_STRING *ip = a2i_IPADDRESS(host);
    bool yes = ip != NULL;
    ASN1_OCTET_STRING_free(ip);
    return yes;
}

/*
 * A CA directory as OpenBao's CLI reads VAULT_CAPATH: every file under it (sub-directories
 * too; a symbolic link is read as the file it names), each certificate in its PEM blocks
 * trusted, any other block or file content skipped. OpenSSL's own lookup directory would
 * want `openssl rehash` names (<hash>.0), and a plain directory of .pem files verified
 * nothing. A directory that cannot be read, or holds no certificate, is an error at once
 * rather than a failed verification later.
 */
static _Thread_local struct {
    X509_STORE *store;
    size_t added;
    int failed_errno;
    char failed[PATH_MAX];
} ca_walk;

static int ca_walk_file(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)ftw;
    if (type == FTW_DNR || type == FTW_NS) {
        ca_walk.failed_errno = errno != 0 ? errno : EACCES;
        snprintf(ca_walk.failed, sizeof(ca_walk.failed), "%s", path);
        return 1;
    }
    struct stat target;
    bool file = (type == FTW_F && S_ISREG(st->st_mode)) ||
                (type == FTW_SL && stat(path, &target) == 0 && S_ISREG(target.st_mode));
    if (!file) {
        return 0; /* a directory (walked), a dangling link, a link to one, a socket... */
    }
    BIO *bio = BIO_new_file(path, "r");
    if (bio == NULL) {
        ERR_clear_error();
        ca_walk.failed_errno = errno != 0 ? errno : EACCES;
        snprintf(ca_walk.failed, sizeof(ca_walk.failed), "%s", path);
        return 1;
    }
    char *name = NULL, *header = NULL;
    unsigned char *data = NULL;
    long len = 0;
    while (PEM_read_bio(bio, &name, &header, &data, &len) == 1) {
        if (strcmp(name, PEM_STRING_X509) == 0 || strcmp(name, PEM_STRING_X509_OLD) == 0) {
            const unsigned char *p = data;
            X509 *x = d2i_X509(NULL, &p, len);
            if (x != NULL && X509_STORE_add_cert(ca_walk.store, x) == 1) {
                ca_walk.added++;
            }
            X509_free(x);
        }
        OPENSSL_free(name);
        OPENSSL_free(header);
        OPENSSL_free(data);
        name = header = NULL;
        data = NULL;
    }
    ERR_clear_error(); /* the end of the file, or text that is no PEM: both end this file */
    BIO_free(bio);
    return 0;
}

static int load_ca_dir(SSL_CTX *ctx, const char *dir, struct kms_err *err)
{
    struct stat st;
    if (stat(dir, &st) != 0) {
        kms_err_set(err, 0, "cannot read the CA directory %s: %s", dir, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        kms_err_set(err, 0, "the CA directory %s is not a directory", dir);
        return -1;
    }
    memset(&ca_walk, 0, sizeof(ca_walk));
    ca_walk.store = SSL_CTX_get_cert_store(ctx);
    errno = 0;
    int rc = nftw(dir, ca_walk_file, 16, FTW_PHYS);
    if (rc != 0) {
        kms_err_set(err, 0, "cannot read %s in the CA directory: %s",
                    ca_walk.failed[0] ? ca_walk.failed : dir,
                    strerror(ca_walk.failed_errno != 0 ? ca_walk.failed_errno : errno));
        return -1;
    }
    if (ca_walk.added == 0) {
        kms_err_set(err, 0, "no CA certificate (PEM) found in the CA directory %s", dir);
        return -1;
    }
    return 0;
}

static int build_ctx(const struct kms_tls_client_opts *o, SSL_CTX **out, struct kms_err *err)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    int rc = -1;
    if (ctx == NULL) {
        kms_err_set(err, 0, "cannot create a TLS context");
        goto out;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* a decrypted record (an answer's plaintext, data key) is wiped once read: crypto/tls.c */
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_CLEANSE_PLAINTEXT);
    if (o->insecure) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (o->ca_file != NULL || o->ca_path != NULL) {
            if (o->ca_file != NULL && SSL_CTX_load_verify_file(ctx, o->ca_file) != 1) {
                ssl_error(err, "cannot load the CA certificates");
                goto out;
            }
            if (o->ca_path != NULL && load_ca_dir(ctx, o->ca_path, err) != 0) {
                goto out;
            }
        } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
            ssl_error(err, "cannot load the system CA certificates");
            goto out;
        }
    }
    if ((o->cert_file != NULL) != (o->key_file != NULL)) {
        kms_err_set(err, 0, "a client certificate needs both the certificate and its key");
        goto out;
    }
    if (o->cert_file != NULL) {
        if (SSL_CTX_use_certificate_chain_file(ctx, o->cert_file) != 1) {
            ssl_error(err, "cannot load the client certificate");
            goto out;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, o->key_file, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(ctx) != 1) {
            ssl_error(err, "cannot load the client key");
            goto out;
        }
    }
    *out = ctx;
    ctx = NULL;
    rc = 0;
out:
    SSL_CTX_free(ctx);
    return rc;
}

int kms_tls_client_connect(int fd, const struct kms_tls_client_opts *o, int64_t deadline_ms,
                           struct kms_tls_conn **out, struct kms_err *err)
{
    struct kms_tls_conn *c = calloc(1, sizeof(*c));
    int rc = -1;

    *out = NULL;
    if (c == NULL) {
        kms_err_set(err, 0, "out of memory");
        goto out;
    }
    c->fd = fd;
    c->deadline_ms = deadline_ms;
    if (build_ctx(o, &c->ctx, err) != 0) {
        goto out;
    }
    c->ssl = SSL_new(c->ctx);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, fd) != 1) {
        ssl_error(err, "cannot create a TLS session");
        goto out;
    }
    if (o->server_name != NULL && o->server_name[0] != '\0') {
        if (!is_ip_literal(o->server_name) &&
            SSL_set_tlsext_host_name(c->ssl, o->server_name) != 1) {
            ssl_error(err, "cannot set the TLS server name");
            goto out;
        }
        if (!o->insecure && SSL_set1_host(c->ssl, o->server_name) != 1) {
            ssl_error(err, "cannot set the host name to verify");
            goto out;
        }
    }
    for (;;) {
        ERR_clear_error();
        int r = SSL_connect(c->ssl);
        if (r == 1) {
            break;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            if (wait_io(c, e) != 0) {
                kms_err_set(err, 0, "TLS handshake: %s", strerror(errno));
                goto out;
            }
            continue;
        }
        long v = SSL_get_verify_result(c->ssl);
        if (v != X509_V_OK) {
            kms_err_set(err, 0, "TLS certificate verification failed: %s",
                        X509_verify_cert_error_string(v));
            ERR_clear_error();
        } else if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
            kms_err_set(err, 0, "TLS handshake: %s",
                        errno != 0 ? strerror(errno) : "the server closed the connection");
        } else {
            ssl_error(err, "TLS handshake failed");
        }
        goto out;
    }
    c->up = true;
    *out = c;
    c = NULL;
    rc = 0;
out:
    kms_tls_client_close(&c);
    return rc;
}

ssize_t kms_tls_client_read(struct kms_tls_conn *c, void *buf, size_t n)
{
    int want = n > INT_MAX ? INT_MAX : (int)n;
    for (;;) {
        ERR_clear_error();
        int r = SSL_read(c->ssl, buf, want);
        if (r > 0) {
            return r;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_ZERO_RETURN) {
            return 0;
        }
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            if (wait_io(c, e) != 0) {
                return -1;
            }
            continue;
        }
        if (e == SSL_ERROR_SYSCALL && errno == 0) {
            return 0;
        }
        if (errno == 0) {
            errno = EPROTO;
        }
        c->up = false;
        ERR_clear_error();
        return -1;
    }
}

ssize_t kms_tls_client_write(struct kms_tls_conn *c, const void *buf, size_t n)
{
    int want = n > INT_MAX ? INT_MAX : (int)n;
    for (;;) {
        ERR_clear_error();
        int r = SSL_write(c->ssl, buf, want);
        if (r > 0) {
            return r;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            if (wait_io(c, e) != 0) {
                return -1;
            }
            continue;
        }
        if (errno == 0) {
            errno = EPROTO;
        }
        c->up = false;
        ERR_clear_error();
        return -1;
    }
}

void kms_tls_client_set_deadline(struct kms_tls_conn *c, int64_t deadline_ms)
{
    c->deadline_ms = deadline_ms;
}

void kms_tls_client_close(struct kms_tls_conn **cp)
{
    struct kms_tls_conn *c = *cp;
    if (c == NULL) {
        return;
    }
    if (c->ssl != NULL) {
        if (c->up) {
            /* best effort close_notify; never wait for the peer's */
            (void)SSL_shutdown(c->ssl);
        }
        SSL_free(c->ssl);
    }
    SSL_CTX_free(c->ctx);
    ERR_clear_error();
    free(c);
    *cp = NULL;
}
