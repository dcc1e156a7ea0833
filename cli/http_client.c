/*
 * http_client.c - kmsctl's HTTP/1.1 client: one request per connection (Connection: close),
 * blocking sockets with a deadline enforced by poll(2), Content-Length or chunked bodies,
 * a cap on the response size.
 *
 * With the keepalive option (kmsd standbys forwarding to the active replica, server/ha.c) the
 * client keeps its one connection open between requests: a response is read to its end
 * (Content-Length, the last chunk, or no body for HEAD/204/304) rather than to the close. A kept
 * connection the server closed while it was idle (seen readable before the request is sent,
 * or closed before any byte of the answer came back) is replaced once by a fresh one: a server
 * that closes a connection without answering has not read a request on it.
 *
 * The byte stream goes through a small transport table (connect/send/recv/close): plain TCP
 * for http:// addresses, and TLS (crypto/tls_client.c, over the same TCP connect) for
 * https:// ones, verified against --ca-cert / VAULT_CACERT or the system store.
 */
#include "cli/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define MAX_RESPONSE (64u << 20)
#define DEFAULT_TIMEOUT_MS 30000

struct kms_cli_http;

struct conn {
    int fd;
    int64_t deadline_ms;
    const struct kms_cli_http *h;
    struct kms_tls_conn *tls;
};

struct transport {
    int (*connect)(struct conn *c, const char *host, const char *port, char *err, size_t n);
    ssize_t (*send)(struct conn *c, const void *p, size_t n);
    ssize_t (*recv)(struct conn *c, void *p, size_t n);
    void (*close)(struct conn *c);
};

struct kms_cli_http {
    const struct transport *tp;
    bool keepalive;
    bool kc_open; /* kc is a kept connection */
    struct conn kc;
    char host[256];
    char port[16];
    char prefix[256]; /* path prefix of the address, usually "" */
    char *token;
    char *ns;
    int timeout_ms;
    size_t max_response; /* bytes of a response kept at most (MAX_RESPONSE by default) */
    bool https;
    bool tls_skip_verify;
    char *ca_cert;
    char *ca_path;
    char *client_cert;
    char *client_key;
};

static void errf(char *err, size_t n, const char *fmt, ...) KMS_PRINTF(3, 4);

static void errf(char *err, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for fd to become ready for `events` before the deadline; 0 ready, -1 timeout/error. */
static int wait_fd(struct conn *c, short events)
{
    for (;;) {
        int64_t left = c->deadline_ms - mono_ms();
        if (left <= 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        struct pollfd p = {c->fd, events, 0};
        int r = poll(&p, 1, (int)(left > 1000000 ? 1000000 : left));
        if (r > 0) {
            return 0;
        }
        if (r < 0 && errno != EINTR) {
            return -1;
        }
    }
}

/* ---- plain TCP transport ----------------------------------------------------------------- */

static int tcp_connect(struct conn *c, const char *host, const char *port, char *err, size_t n)
{
    struct addrinfo hints, *res = NULL;
    int rc = -1;
    int last = 0;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int g = getaddrinfo(host, port, &hints, &res);
    if (g != 0) {
        errf(err, n, "cannot resolve %s: %s", host, gai_strerror(g));
        return -1;
    }
    for (struct addrinfo *ai = res; ai != NULL && rc != 0; ai = ai->ai_next) {
        int fd =
            socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0) {
            last = errno;
            continue;
        }
        c->fd = fd;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            rc = 0;
            break;
        }
        if (errno == EINPROGRESS && wait_fd(c, POLLOUT) == 0) {
            int soerr = 0;
            socklen_t sl = sizeof(soerr);
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0) {
                rc = 0;
                break;
            }
            last = soerr;
        } else {
            last = errno;
        }
        close(fd);
        c->fd = -1;
    }
    freeaddrinfo(res);
    if (rc != 0) {
        errf(err, n, "cannot connect to %s:%s: %s", host, port, strerror(last));
    }
    return rc;
}

static ssize_t tcp_send(struct conn *c, const void *p, size_t n)
{
    for (;;) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w >= 0 || (errno != EAGAIN && errno != EINTR)) {
            return w;
        }
        if (wait_fd(c, POLLOUT) != 0) {
            return -1;
        }
    }
}

static ssize_t tcp_recv(struct conn *c, void *p, size_t n)
{
    for (;;) {
        ssize_t r = recv(c->fd, p, n, 0);
        if (r >= 0 || (errno != EAGAIN && errno != EINTR)) {
            return r;
        }
        if (wait_fd(c, POLLIN) != 0) {
            return -1;
        }
    }
}

static void tcp_close(struct conn *c)
{
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
}

static const struct transport tcp = {tcp_connect, tcp_send, tcp_recv, tcp_close};

/* ---- TLS transport ----------------------------------------------------------------------- */

static int tls_connect(struct conn *c, const char *host, const char *port, char *err, size_t n)
{
    struct kms_err e;
    struct kms_tls_client_opts o;
    if (tcp_connect(c, host, port, err, n) != 0) {
        return -1;
    }
    memset(&o, 0, sizeof(o));
    o.ca_file = c->h->ca_cert;
    o.ca_path = c->h->ca_path;
    o.cert_file = c->h->client_cert;
    o.key_file = c->h->client_key;
    o.server_name = host;
    o.insecure = c->h->tls_skip_verify;
    kms_err_clear(&e);
    if (kms_tls_client_connect(c->fd, &o, c->deadline_ms, &c->tls, &e) != 0) {
        errf(err, n, "%s:%s: %s", host, port, e.msg);
        tcp_close(c);
        return -1;
    }
    return 0;
}

static ssize_t tls_send(struct conn *c, const void *p, size_t n)
{
    return kms_tls_client_write(c->tls, p, n);
}

static ssize_t tls_recv(struct conn *c, void *p, size_t n)
{
    return kms_tls_client_read(c->tls, p, n);
}

static void tls_close(struct conn *c)
{
    kms_tls_client_close(&c->tls);
    tcp_close(c);
}

static const struct transport tls = {tls_connect, tls_send, tls_recv, tls_close};

/* ---- client ------------------------------------------------------------------------------ */

/* "http://host:port/prefix", "[::1]:8200", "host" (port 8200 by default, as Vault's). */
static int parse_addr(struct kms_cli_http *h, const char *addr, char *err, size_t n)
{
    const char *p = addr;
    if (strncmp(p, "http://", 7) == 0) {
        p += 7;
    } else if (strncmp(p, "https://", 8) == 0) {
        p += 8;
        h->https = true;
    } else if (strstr(p, "://") != NULL) {
        errf(err, n, "%s: unsupported scheme", addr);
        return -1;
    }
    const char *slash = strchr(p, '/');
    size_t hl = slash ? (size_t)(slash - p) : strlen(p);
    const char *hp = p;
    const char *colon = NULL;
    if (hl > 0 && hp[0] == '[') {
        const char *close = memchr(hp, ']', hl);
        if (close == NULL) {
            errf(err, n, "%s: bad IPv6 address", addr);
            return -1;
        }
        snprintf(h->host, sizeof(h->host), "%.*s", (int)(close - hp - 1), hp + 1);
        if (close + 1 < hp + hl && close[1] == ':') {
            colon = close + 1;
        }
    } else {
        colon = memchr(hp, ':', hl);
        size_t l = colon ? (size_t)(colon - hp) : hl;
        snprintf(h->host, sizeof(h->host), "%.*s", (int)l, hp);
    }
    if (colon != NULL) {
        snprintf(h->port, sizeof(h->port), "%.*s", (int)(hp + hl - colon - 1), colon + 1);
    } else {
        snprintf(h->port, sizeof(h->port), "8200");
    }
    if (h->host[0] == '\0' || h->port[0] == '\0') {
        errf(err, n, "%s: no host or port", addr);
        return -1;
    }
    if (slash != NULL) {
        size_t pl = strlen(slash);
        while (pl > 0 && slash[pl - 1] == '/') {
            pl--;
        }
        snprintf(h->prefix, sizeof(h->prefix), "%.*s", (int)pl, slash);
    }
    return 0;
}

/* The --tls-skip-verify warning goes out once per run: `orgs list` opens a client per
 * organization, and a repeated warning reads as several problems. */
static bool skip_verify_warned;

int kms_cli_http_create(const struct kms_cli_http_opts *o, struct kms_cli_http **out, char *err,
                        size_t errlen)
{
    struct kms_cli_http *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        errf(err, errlen, "out of memory");
        return -1;
    }
    h->tp = &tcp;
    h->keepalive = o->keepalive;
    h->kc.fd = -1;
    h->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : DEFAULT_TIMEOUT_MS;
    h->max_response =
        o->max_response > 0 && o->max_response < MAX_RESPONSE ? o->max_response : MAX_RESPONSE;
    h->tls_skip_verify = o->tls_skip_verify;
    err[0] = '\0';
    if (parse_addr(h, o->addr, err, errlen) != 0 ||
        (o->token != NULL && o->token[0] != '\0' && (h->token = strdup(o->token)) == NULL) ||
        (o->ns != NULL && o->ns[0] != '\0' && (h->ns = strdup(o->ns)) == NULL) ||
        (o->ca_cert != NULL && (h->ca_cert = strdup(o->ca_cert)) == NULL) ||
        (o->ca_path != NULL && (h->ca_path = strdup(o->ca_path)) == NULL) ||
        (o->client_cert != NULL && (h->client_cert = strdup(o->client_cert)) == NULL) ||
        (o->client_key != NULL && (h->client_key = strdup(o->client_key)) == NULL)) {
        if (err[0] == '\0') {
            errf(err, errlen, "out of memory");
        }
        kms_cli_http_destroy(&h);
        return -1;
    }
    if (h->https) {
        h->tp = &tls;
        if (h->tls_skip_verify && !skip_verify_warned) {
            skip_verify_warned = true;
            fprintf(stderr, "WARNING: TLS certificate verification is disabled "
                            "(--tls-skip-verify): the server's identity is NOT checked and the "
                            "connection can be intercepted\n");
        }
    }
    *out = h;
    return 0;
}

void kms_cli_http_destroy(struct kms_cli_http **hp)
{
    struct kms_cli_http *h = *hp;
    if (h == NULL) {
        return;
    }
    if (h->kc_open) {
        h->tp->close(&h->kc);
    }
    if (h->token != NULL) {
        kms_memzero(h->token, strlen(h->token));
        free(h->token);
    }
    free(h->ns);
    free(h->ca_cert);
    free(h->ca_path);
    free(h->client_cert);
    free(h->client_key);
    free(h);
    *hp = NULL;
}

void kms_cli_http_set_timeout(struct kms_cli_http *h, int timeout_ms)
{
    h->timeout_ms = timeout_ms > 0 ? timeout_ms : DEFAULT_TIMEOUT_MS;
}

bool kms_cli_http_has_token(const struct kms_cli_http *h)
{
    return h->token != NULL;
}

/* ~/.vault-token, as the vault CLI's token helper leaves it. */
static char *token_file(void)
{
    const char *home = getenv("HOME");
    char path[1024];
    char buf[256];
    if (home == NULL) {
        return NULL;
    }
    snprintf(path, sizeof(path), "%s/.vault-token", home);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return NULL;
    }
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ')) {
        n--;
    }
    buf[n] = '\0';
    char *t = n > 0 ? strdup(buf) : NULL;
    kms_memzero(buf, sizeof(buf));
    return t;
}

static const char *env2(const char *a, const char *b)
{
    const char *v = getenv(a);
    if (v == NULL || v[0] == '\0') {
        v = getenv(b);
    }
    return v != NULL && v[0] != '\0' ? v : NULL;
}

int kms_cli_http_from_env(struct kms_cli_http **out, char *err, size_t errlen)
{
    struct kms_cli_http_opts o;
    char *file_token = NULL;
    const char *addr = env2("KMS_ADDR", "VAULT_ADDR");
    if (addr == NULL) {
        return 1;
    }
    memset(&o, 0, sizeof(o));
    o.addr = addr;
    o.token = env2("KMS_TOKEN", "VAULT_TOKEN");
    if (o.token == NULL) {
        file_token = token_file();
        o.token = file_token;
    }
    o.ns = env2("KMS_NAMESPACE", "VAULT_NAMESPACE");
    o.ca_cert = env2("KMS_CACERT", "VAULT_CACERT");
    o.ca_path = env2("KMS_CAPATH", "VAULT_CAPATH");
    o.client_cert = env2("KMS_CLIENT_CERT", "VAULT_CLIENT_CERT");
    o.client_key = env2("KMS_CLIENT_KEY", "VAULT_CLIENT_KEY");
    const char *skip = env2("KMS_SKIP_VERIFY", "VAULT_SKIP_VERIFY");
    o.tls_skip_verify = skip != NULL && strcmp(skip, "0") != 0 && strcmp(skip, "false") != 0;
    int rc = kms_cli_http_create(&o, out, err, errlen);
    if (file_token != NULL) {
        kms_memzero(file_token, strlen(file_token));
        free(file_token);
    }
    return rc;
}

struct rbuf {
    char *p;
    size_t len, cap;
    size_t max; /* bytes it may hold: MAX_RESPONSE, or the client's max_response */
};

static int rbuf_add(struct rbuf *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 8192;
        while (cap < b->len + n + 1) {
            cap *= 2;
        }
        if (cap > b->max + 1) {
            if (b->len + n + 1 > b->max + 1) {
                return -1;
            }
            cap = b->max + 1;
        }
        /* not realloc: the old block may hold a token, plaintext or a data key */
        char *np = malloc(cap);
        if (np == NULL) {
            return -1;
        }
        if (b->p != NULL) {
            memcpy(np, b->p, b->len);
            kms_memzero(b->p, b->cap);
            free(b->p);
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

/* Decode a chunked body in place; returns the decoded length or -1. */
static ssize_t dechunk(char *p, size_t n)
{
    size_t in = 0, out = 0;
    for (;;) {
        char *end = NULL;
        if (in >= n) {
            return -1;
        }
        unsigned long sz = strtoul(p + in, &end, 16);
        char *crlf = memmem(p + in, n - in, "\r\n", 2);
        if (end == p + in || crlf == NULL) {
            return -1;
        }
        in = (size_t)(crlf - p) + 2;
        if (sz == 0) {
            return (ssize_t)out;
        }
        if (sz > n - in) {
            return -1;
        }
        memmove(p + out, p + in, sz);
        out += sz;
        in += sz + 2;
    }
}

static int parse_response(struct rbuf *b, bool head, bool want_headers, struct kms_cli_resp *out,
                          char *err, size_t n)
{
    char *hend = b->p ? strstr(b->p, "\r\n\r\n") : NULL;
    int status = 0;
    if (hend == NULL || strncmp(b->p, "HTTP/1.", 7) != 0 || b->len < 12) {
        errf(err, n, "malformed HTTP response");
        return -1;
    }
    /* "HTTP/1.x NNN": exactly three digits */
    for (int i = 9; i < 12; i++) {
        status = b->p[i] >= '0' && b->p[i] <= '9' ? status * 10 + (b->p[i] - '0') : -1000;
    }
    if (status < 100 || status > 599) {
        errf(err, n, "malformed HTTP status line");
        return -1;
    }
    *hend = '\0';
    char *first_eol = strstr(b->p, "\r\n");
    if (want_headers && first_eol != NULL && first_eol < hend) {
        /* the header lines as they came, each ending in CRLF */
        size_t hl = (size_t)(hend - first_eol);
        if ((out->headers = malloc(hl + 1)) == NULL) {
            errf(err, n, "out of memory");
            return -1;
        }
        memcpy(out->headers, first_eol + 2, hl - 2);
        memcpy(out->headers + hl - 2, "\r\n", 3);
    }
    bool chunked = false;
    long clen = -1;
    for (char *line = strstr(b->p, "\r\n"); line != NULL && line < hend;
         line = strstr(line + 2, "\r\n")) {
        char *h = line + 2;
        if (strncasecmp(h, "Content-Length:", 15) == 0) {
            clen = strtol(h + 15, NULL, 10);
        } else if (strncasecmp(h, "Content-Type:", 13) == 0) {
            const char *v = h + 13;
            size_t vl;
            while (*v == ' ' || *v == '\t') {
                v++;
            }
            vl = strcspn(v, "\r");
            if (vl < sizeof(out->content_type)) {
                memcpy(out->content_type, v, vl);
                out->content_type[vl] = '\0';
            }
        } else if (strncasecmp(h, "Transfer-Encoding:", 18) == 0 &&
                   strstr(h + 18, "chunked") != NULL) {
            chunked = true;
        }
    }
    char *body = hend + 4;
    size_t blen = b->len - (size_t)(body - b->p);
    if (head || status == 204 || status == 304) {
        blen = 0;
    } else if (chunked) {
        ssize_t d = dechunk(body, blen);
        if (d < 0) {
            errf(err, n, "malformed chunked body");
            return -1;
        }
        blen = (size_t)d;
    } else if (clen >= 0) {
        if ((size_t)clen > blen) {
            errf(err, n, "connection closed before the whole body arrived");
            return -1;
        }
        blen = (size_t)clen;
    }
    out->status = status;
    out->body = malloc(blen + 1);
    if (out->body == NULL) {
        errf(err, n, "out of memory");
        return -1;
    }
    memcpy(out->body, body, blen);
    out->body[blen] = '\0';
    out->len = blen;
    return 0;
}

/*
 * Drop the interim (1xx but 101) responses at the start of b: a server may send one before its
 * answer (kmsd does for a batch whose partial_failure_response_code asks for 1xx, then answers
 * 200), and with no Content-Length of its own it read as a response whose body ends with the
 * connection: a kept-alive exchange then waited for the whole timeout, and an HA standby that
 * forwarded such a batch answered 503 after the active had carried it out.
 */
static void drop_interim(struct rbuf *b)
{
    for (;;) {
        const char *hend = b->p != NULL ? strstr(b->p, "\r\n\r\n") : NULL;
        if (hend == NULL || b->len < 12 || strncmp(b->p, "HTTP/1.", 7) != 0 || b->p[9] != '1' ||
            b->p[10] < '0' || b->p[10] > '9' || b->p[11] < '0' || b->p[11] > '9' ||
            (b->p[10] == '0' && b->p[11] == '1')) {
            return;
        }
        size_t hl = (size_t)(hend - b->p) + 4;
        memmove(b->p, b->p + hl, b->len - hl);
        kms_memzero(b->p + b->len - hl, hl);
        b->len -= hl;
        b->p[b->len] = '\0';
    }
}

/* Find a header's value in the head [p, hend): its start, and *vl its length; NULL if absent. */
static const char *head_value(const char *p, const char *hend, const char *name, size_t *vl)
{
    size_t nl = strlen(name);
    for (const char *l = strstr(p, "\r\n"); l != NULL && l < hend; l = strstr(l + 2, "\r\n")) {
        const char *hp = l + 2;
        if (hp + nl < hend && strncasecmp(hp, name, nl) == 0 && hp[nl] == ':') {
            const char *v = hp + nl + 1;
            while (*v == ' ' || *v == '\t') {
                v++;
            }
            *vl = strcspn(v, "\r");
            return v;
        }
    }
    return NULL;
}

/*
 * Is the response in b complete (keep-alive reading)? 1 yes, 0 not yet, -1 malformed, -2
 * larger than b->max (its head or its announced body). Sets
 * *close_after when the connection cannot carry another request (Connection: close, HTTP/1.0,
 * a body delimited by the close).
 */
static int resp_complete(const struct rbuf *b, bool head, bool *close_after)
{
    const char *hend = b->p != NULL ? strstr(b->p, "\r\n\r\n") : NULL;
    size_t vl = 0;
    if (hend == NULL) {
        return b->len > b->max ? -2 : 0;
    }
    if (b->len < 12 || strncmp(b->p, "HTTP/1.", 7) != 0) {
        return -1;
    }
    const char *v = head_value(b->p, hend, "Connection", &vl);
    if (b->p[7] == '0' || (v != NULL && vl == 5 && strncasecmp(v, "close", 5) == 0)) {
        *close_after = true;
    }
    int status = 0;
    for (int i = 9; i < 12; i++) {
        status = b->p[i] >= '0' && b->p[i] <= '9' ? status * 10 + (b->p[i] - '0') : -1000;
    }
    const char *body = hend + 4;
    size_t have = b->len - (size_t)(body - b->p);
    if (head || status == 204 || status == 304) {
        return 1;
    }
    v = head_value(b->p, hend, "Transfer-Encoding", &vl);
    if (v != NULL) {
        /* walk the chunks: complete after the last chunk and the (empty) trailer */
        size_t i = 0;
        for (;;) {
            const char *eol = memmem(body + i, have - i, "\r\n", 2);
            if (eol == NULL) {
                return 0;
            }
            char *end = NULL;
            unsigned long sz = strtoul(body + i, &end, 16);
            if (end == body + i) {
                return -1;
            }
            i = (size_t)(eol - body) + 2;
            if (sz == 0) {
                const char *t = memmem(body + i - 2, have - i + 2, "\r\n\r\n", 4);
                return t != NULL ? 1 : 0;
            }
            if (sz > b->max || i + sz + 2 > have) {
                return sz > b->max ? -2 : 0;
            }
            i += sz + 2;
        }
    }
    v = head_value(b->p, hend, "Content-Length", &vl);
    if (v != NULL) {
        char *end = NULL;
        unsigned long long cl = strtoull(v, &end, 10);
        if (end == v) {
            return -1;
        }
        if (cl > b->max) {
            return -2;
        }
        return have >= cl ? 1 : 0;
    }
    *close_after = true; /* the body ends with the connection */
    return 0;
}

/*
 * One exchange on a fresh connection. With hdrs == NULL the client's own headers go out
 * (X-Vault-Token, X-Vault-Namespace, Content-Type when there is a body); otherwise exactly
 * hdrs, and Content-Length whenever body != NULL. Host always, User-Agent unless hdrs has
 * one.
 */
static int exchange(struct kms_cli_http *h, const char *method, const char *path,
                    const struct kms_cli_header *hdrs, size_t nhdrs, const char *body, size_t len,
                    struct kms_cli_resp *out, char *err, size_t errlen)
{
    struct conn c = {-1, mono_ms() + h->timeout_ms, h, NULL};
    struct rbuf req = {NULL, 0, 0, MAX_RESPONSE};
    struct rbuf resp = {NULL, 0, 0, h->max_response};
    char line[2048];
    char buf[16384];
    int rc = -1;

    memset(out, 0, sizeof(*out));
    err[0] = '\0';
    /* the target as long as it is (an HA standby forwards whatever a client sent) */
    int ln;
    if (rbuf_add(&req, method, strlen(method)) != 0 || rbuf_add(&req, " ", 1) != 0 ||
        rbuf_add(&req, h->prefix, strlen(h->prefix)) != 0 ||
        rbuf_add(&req, path, strlen(path)) != 0) {
        goto oom;
    }
    /* the caller's own User-Agent wins (an HA standby forwards its client's): two would
     * reach the server otherwise */
    bool own_agent = false;
    for (size_t i = 0; hdrs != NULL && i < nhdrs; i++) {
        own_agent = own_agent || strcasecmp(hdrs[i].name, "User-Agent") == 0;
    }
    ln = snprintf(line, sizeof(line),
                  " HTTP/1.1\r\nHost: %s:%s\r\n%s"
                  "%s%s",
                  h->host, h->port, own_agent ? "" : "User-Agent: kmsctl\r\n",
                  h->keepalive ? "" : "Connection: close\r\n",
                  hdrs == NULL ? "Accept: application/json\r\n" : "");
    if (ln < 0 || (size_t)ln >= sizeof(line) || rbuf_add(&req, line, (size_t)ln) != 0) {
        errf(err, errlen, "request line too long");
        goto out;
    }
    for (size_t i = 0; hdrs != NULL && i < nhdrs; i++) {
        if (rbuf_add(&req, hdrs[i].name, strlen(hdrs[i].name)) != 0 ||
            rbuf_add(&req, ": ", 2) != 0 ||
            rbuf_add(&req, hdrs[i].value, strlen(hdrs[i].value)) != 0 ||
            rbuf_add(&req, "\r\n", 2) != 0) {
            goto oom;
        }
    }
    if (hdrs == NULL && h->token != NULL &&
        (rbuf_add(&req, "X-Vault-Token: ", 15) != 0 ||
         rbuf_add(&req, h->token, strlen(h->token)) != 0 || rbuf_add(&req, "\r\n", 2) != 0)) {
        goto oom;
    }
    if (hdrs == NULL && h->ns != NULL) {
        ln = snprintf(line, sizeof(line), "X-Vault-Namespace: %s\r\n", h->ns);
        if (rbuf_add(&req, line, (size_t)ln) != 0) {
            goto oom;
        }
    }
    if (body != NULL) {
        ln = snprintf(line, sizeof(line), "%sContent-Length: %zu\r\n",
                      hdrs == NULL ? "Content-Type: application/json\r\n" : "", len);
        if (rbuf_add(&req, line, (size_t)ln) != 0) {
            goto oom;
        }
    }
    if (rbuf_add(&req, "\r\n", 2) != 0 || (body != NULL && rbuf_add(&req, body, len) != 0)) {
        goto oom;
    }
    bool head = strcmp(method, "HEAD") == 0;
    bool close_after = !h->keepalive;
    for (int attempt = 0;; attempt++) {
        bool reused = false;
        if (h->kc_open) {
            /* a kept connection with something to read while idle was closed by the server */
            struct pollfd p = {h->kc.fd, POLLIN, 0};
            if (poll(&p, 1, 0) != 0) {
                h->tp->close(&h->kc);
                h->kc_open = false;
            } else {
                c = h->kc;
                h->kc_open = false;
                reused = true;
            }
        }
        c.deadline_ms = mono_ms() + h->timeout_ms;
        if (reused && c.tls != NULL) {
            kms_tls_client_set_deadline(c.tls, c.deadline_ms);
        }
        if (!reused && h->tp->connect(&c, h->host, h->port, err, errlen) != 0) {
            goto out;
        }
        bool sent = true;
        bool closed = false; /* the server closed (or reset) the connection: no timeout */
        for (size_t off = 0; off < req.len;) {
            ssize_t w = h->tp->send(&c, req.p + off, req.len - off);
            if (w <= 0) {
                errf(err, errlen, "cannot send the request: %s", strerror(errno));
                closed = errno == EPIPE || errno == ECONNRESET;
                sent = false;
                break;
            }
            off += (size_t)w;
        }
        int done = 0;
        while (sent) {
            if (h->keepalive && (done = resp_complete(&resp, head, &close_after)) != 0) {
                break;
            }
            ssize_t r = h->tp->recv(&c, buf, sizeof(buf));
            if (r == 0) {
                close_after = true;
                closed = true;
                done = resp.len > 0 ? 1 : 0;
                if (done == 0) {
                    errf(err, errlen, "the server closed the connection without an answer");
                }
                break;
            }
            if (r < 0) {
                closed = errno == ECONNRESET;
                errf(err, errlen, "cannot read the response: %s", strerror(errno));
                break;
            }
            if (rbuf_add(&resp, buf, (size_t)r) != 0) {
                errf(err, errlen, "response larger than %zu bytes", h->max_response);
                goto out;
            }
            drop_interim(&resp);
        }
        if (done == 1) {
            break;
        }
        if (done == -2) {
            errf(err, errlen, "response larger than %zu bytes", h->max_response);
            goto out;
        }
        if (done < 0) {
            errf(err, errlen, "malformed HTTP response");
            goto out;
        }
        /* a kept connection the server had closed (it closes only idle ones, so it never read
         * this request): once more on a new one. Never after a timeout: the request may be
         * running there (a slow server), and a write must not run twice */
        if (reused && closed && resp.len == 0 && attempt == 0) {
            h->tp->close(&c);
            continue;
        }
        goto out;
    }
    rc = parse_response(&resp, head, hdrs != NULL, out, err, errlen);
    if (rc != 0) {
        kms_cli_resp_dispose(out);
    }
    if (rc == 0 && !close_after) {
        h->kc = c; /* kept for the next request */
        h->kc_open = true;
        c.fd = -1;
        c.tls = NULL;
    }
    goto out;
oom:
    errf(err, errlen, "out of memory");
out:
    h->tp->close(&c);
    if (req.p != NULL) {
        kms_memzero(req.p, req.len); /* holds the token */
    }
    free(req.p);
    if (resp.p != NULL) {
        kms_memzero(resp.p, resp.cap); /* may hold plaintext or a data key */
    }
    free(resp.p);
    kms_memzero(buf, sizeof(buf));
    return rc;
}

int kms_cli_http_do(struct kms_cli_http *h, const char *method, const char *path, const char *body,
                    size_t len, struct kms_cli_resp *out, char *err, size_t errlen)
{
    return exchange(h, method, path, NULL, 0, body, len, out, err, errlen);
}

int kms_cli_http_request(struct kms_cli_http *h, const char *method, const char *path,
                         const struct kms_cli_header *hdrs, size_t nhdrs, const void *body,
                         size_t len, struct kms_cli_resp *out, char *err, size_t errlen)
{
    static const struct kms_cli_header none[1] = {{"", ""}};
    return exchange(h, method, path, hdrs != NULL ? hdrs : none, hdrs != NULL ? nhdrs : 0, body,
                    len, out, err, errlen);
}

void kms_cli_resp_dispose(struct kms_cli_resp *r)
{
    free(r->body);
    free(r->headers);
    r->headers = NULL;
    r->body = NULL;
    r->len = 0;
}

void kms_cli_urlencode(const char *in, char *out, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *in != '\0' && o + 4 < n; in++) {
        unsigned char ch = (unsigned char)*in;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '.' || ch == '~') {
            out[o++] = (char)ch;
        } else {
            out[o++] = '%';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    out[o] = '\0';
}

void kms_cli_api_error(const struct kms_cli_resp *r, char *out, size_t n)
{
    json_t *j = r->body != NULL ? json_loadb(r->body, r->len, 0, NULL) : NULL;
    json_t *e = json_array_get(json_object_get(j, "errors"), 0);
    if (json_is_string(e)) {
        const char *msg = json_string_value(e);
        /* Vault's multierror form "1 error occurred:\n\t* msg\n\n" is shown as msg */
        const char *m = strstr(msg, "\t* ");
        if (strncmp(msg, "1 error occurred:", 17) == 0 && m != NULL) {
            snprintf(out, n, "%.*s", (int)strcspn(m + 3, "\n"), m + 3);
        } else {
            snprintf(out, n, "%s", msg);
        }
    } else {
        snprintf(out, n, "HTTP %d%s%s", r->status, r->len ? ": " : "", r->body ? r->body : "");
    }
    json_decref(j);
}
