/*
 * http.c - an HTTP/1.1 server on libevent bufferevents.
 *
 * Why not evhttp: libevent 2.1's evhttp folds every method it does not know into one
 * "unknown" type and drops the method string, so Vault's LIST verb (hvac lists keys with it)
 * could not be told apart from any other word. This layer parses the request line and
 * headers itself (evbuffer_readln), supports Content-Length and chunked bodies, Expect:
 * 100-continue, keep-alive and pipelining, and enforces the limits a KMS needs against
 * hostile clients: header bytes and count, body size (413 before reading it), a deadline for
 * a whole request (slow-header and slow-body clients), an idle timeout, and a connection cap.
 *
 * Requests are handed to api/ synchronously; responses carry Content-Type application/json
 * (unless api/ names another, as for Prometheus metrics) and Cache-Control: no-store.
 */
#include "server/server.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_HEADERS 100
#define MAX_METHOD 16

enum conn_state {
    ST_LINE,
    ST_HEADERS,
    ST_BODY,
    ST_CHUNK_SIZE,
    ST_CHUNK_DATA,
    ST_CHUNK_TRAILER,
    ST_CLOSING,
};

struct conn {
    struct kms_http *h;
    struct conn *prev, *next;
    struct bufferevent *bev;
    struct event *timer;
    enum conn_state st;
    bool req_started;
    char method[MAX_METHOD + 1];
    char *target;
    int minor;
    size_t nheaders;
    char *hname[MAX_HEADERS];
    char *hvalue[MAX_HEADERS];
    size_t header_bytes;
    size_t content_length;
    size_t chunk_left;
    bool chunked;
    bool keepalive;
    struct evbuffer *body;
    char remote[INET6_ADDRSTRLEN];
    int port;
};

struct kms_http {
    struct event_base *base;
    struct kms_api *api;
    struct evconnlistener *listener;
    struct kms_http_opts opts;
    struct conn *conns;
    size_t nconns;
    bool stopping;
};

static void conn_free(struct conn *c);

static void conn_reset_request(struct conn *c)
{
    free(c->target);
    c->target = NULL;
    for (size_t i = 0; i < c->nheaders; i++) {
        free(c->hname[i]);
        free(c->hvalue[i]);
    }
    c->nheaders = 0;
    c->header_bytes = 0;
    c->content_length = 0;
    c->chunk_left = 0;
    c->chunked = false;
    c->method[0] = '\0';
    c->req_started = false;
    if (c->body != NULL) {
        /* bodies may hold plaintext: wipe before release */
        size_t n = evbuffer_get_length(c->body);
        if (n > 0) {
            unsigned char *p = evbuffer_pullup(c->body, -1);
            if (p != NULL) {
                kms_memzero(p, n);
            }
            evbuffer_drain(c->body, n);
        }
    }
    c->st = ST_LINE;
}

static void arm_timer(struct conn *c, int64_t seconds)
{
    struct timeval tv = {(time_t)seconds, 0};
    evtimer_add(c->timer, &tv);
}

static const char *reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 204:
        return "No Content";
    case 207:
        return "Multi-Status";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Request Entity Too Large";
    case 414:
        return "Request-URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Status";
    }
}

static void write_response(struct conn *c, const struct kms_http_resp *r, bool head)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nCache-Control: no-store\r\n",
                        r->status, reason(r->status),
                        r->content_type[0] ? r->content_type : "application/json");
    if (r->status != 204) {
        evbuffer_add_printf(out, "Content-Length: %zu\r\n", r->body_len);
    }
    for (size_t i = 0; i < r->nextra; i++) {
        evbuffer_add_printf(out, "%s: %s\r\n", r->extra[i].name, r->extra[i].value);
    }
    if (!c->keepalive) {
        evbuffer_add_printf(out, "Connection: close\r\n");
    }
    evbuffer_add(out, "\r\n", 2);
    if (!head && r->status != 204 && r->body_len > 0) {
        evbuffer_add(out, r->body, r->body_len);
    }
}

/* Answer with an error and close the connection after the write (protocol-level errors). */
static void fail_close(struct conn *c, int status, const char *msg)
{
    struct kms_http_resp r;
    memset(&r, 0, sizeof(r));
    kms_api_error_response(status, msg, &r);
    c->keepalive = false;
    write_response(c, &r, false);
    kms_http_resp_dispose(&r);
    c->st = ST_CLOSING;
    bufferevent_disable(c->bev, EV_READ);
    evtimer_del(c->timer);
}

static const char *find_header(const struct conn *c, const char *name)
{
    for (size_t i = 0; i < c->nheaders; i++) {
        if (strcasecmp(c->hname[i], name) == 0) {
            return c->hvalue[i];
        }
    }
    return NULL;
}

static void dispatch(struct conn *c)
{
    struct kms_http_header hdrs[MAX_HEADERS];
    struct kms_http_req req;
    struct kms_http_resp resp;
    size_t blen = evbuffer_get_length(c->body);

    for (size_t i = 0; i < c->nheaders; i++) {
        hdrs[i].name = c->hname[i];
        hdrs[i].value = c->hvalue[i];
    }
    memset(&req, 0, sizeof(req));
    req.method = c->method;
    req.target = c->target;
    req.headers = hdrs;
    req.nheaders = c->nheaders;
    req.body = blen ? evbuffer_pullup(c->body, -1) : NULL;
    req.body_len = blen;
    req.remote_addr = c->remote;
    req.remote_port = c->port;
    evtimer_del(c->timer);

    kms_api_handle(c->h->api, &req, &resp);
    if (c->h->stopping) {
        c->keepalive = false;
    }
    write_response(c, &resp, strcmp(c->method, "HEAD") == 0);
    kms_http_resp_dispose(&resp);
    conn_reset_request(c);
    if (!c->keepalive) {
        c->st = ST_CLOSING;
        bufferevent_disable(c->bev, EV_READ);
    } else {
        arm_timer(c, c->h->opts.idle_timeout);
    }
}

static bool is_token_char(int ch)
{
    return isalnum(ch) || strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static int parse_request_line(struct conn *c, char *line)
{
    char *sp1 = strchr(line, ' ');
    char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (sp1 == NULL || sp2 == NULL || strchr(sp2 + 1, ' ') != NULL) {
        return 400;
    }
    size_t mlen = (size_t)(sp1 - line);
    if (mlen == 0 || mlen > MAX_METHOD) {
        return mlen > MAX_METHOD ? 405 : 400;
    }
    for (size_t i = 0; i < mlen; i++) {
        if (!is_token_char((unsigned char)line[i])) {
            return 400;
        }
    }
    memcpy(c->method, line, mlen);
    c->method[mlen] = '\0';
    const char *ver = sp2 + 1;
    if (strcmp(ver, "HTTP/1.1") == 0) {
        c->minor = 1;
    } else if (strcmp(ver, "HTTP/1.0") == 0) {
        c->minor = 0;
    } else {
        return strncmp(ver, "HTTP/", 5) == 0 ? 505 : 400;
    }
    size_t tlen = (size_t)(sp2 - sp1 - 1);
    if (tlen == 0 || sp1[1] != '/') {
        return 400;
    }
    for (size_t i = 0; i < tlen; i++) {
        unsigned char ch = (unsigned char)sp1[1 + i];
        if (ch <= 0x20 || ch >= 0x7f) {
            return 400;
        }
    }
    c->target = strndup(sp1 + 1, tlen);
    return c->target ? 0 : 500;
}

static int parse_header_line(struct conn *c, char *line)
{
    if (line[0] == ' ' || line[0] == '\t') {
        return 400; /* obsolete line folding */
    }
    char *colon = strchr(line, ':');
    if (colon == NULL || colon == line) {
        return 400;
    }
    for (char *p = line; p < colon; p++) {
        if (!is_token_char((unsigned char)*p)) {
            return 400;
        }
    }
    if (c->nheaders == MAX_HEADERS) {
        return 431;
    }
    char *v = colon + 1;
    while (*v == ' ' || *v == '\t') {
        v++;
    }
    size_t vl = strlen(v);
    while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t')) {
        vl--;
    }
    for (size_t i = 0; i < vl; i++) {
        unsigned char ch = (unsigned char)v[i];
        if (ch < 0x20 && ch != '\t') {
            return 400;
        }
    }
    c->hname[c->nheaders] = strndup(line, (size_t)(colon - line));
    c->hvalue[c->nheaders] = strndup(v, vl);
    if (c->hname[c->nheaders] == NULL || c->hvalue[c->nheaders] == NULL) {
        free(c->hname[c->nheaders]);
        free(c->hvalue[c->nheaders]);
        return 500;
    }
    c->nheaders++;
    return 0;
}

/* Body framing and connection semantics once all headers are in. */
static int headers_done(struct conn *c)
{
    const char *te = NULL;
    bool have_cl = false;
    size_t cl = 0;

    for (size_t i = 0; i < c->nheaders; i++) {
        if (strcasecmp(c->hname[i], "Content-Length") == 0) {
            const char *v = c->hvalue[i];
            size_t n = 0;
            if (*v == '\0') {
                return 400;
            }
            for (; *v != '\0'; v++) {
                if (!isdigit((unsigned char)*v) || n > (SIZE_MAX - 9) / 10) {
                    return 400;
                }
                n = n * 10 + (size_t)(*v - '0');
            }
            if (have_cl && n != cl) {
                return 400;
            }
            have_cl = true;
            cl = n;
        } else if (strcasecmp(c->hname[i], "Transfer-Encoding") == 0) {
            if (te != NULL) {
                return 400;
            }
            te = c->hvalue[i];
        }
    }
    if (te != NULL && have_cl) {
        return 400; /* request smuggling guard */
    }
    if (te != NULL && strcasecmp(te, "chunked") != 0) {
        return 501;
    }
    const char *conn = find_header(c, "Connection");
    if (c->minor == 0) {
        c->keepalive = conn != NULL && strcasecmp(conn, "keep-alive") == 0;
    } else {
        c->keepalive = conn == NULL || strcasecmp(conn, "close") != 0;
    }
    if (c->h->stopping) {
        c->keepalive = false;
    }
    if (have_cl && cl > c->h->opts.max_body_size) {
        return 413;
    }
    const char *expect = find_header(c, "Expect");
    if (expect != NULL) {
        if (strcasecmp(expect, "100-continue") != 0) {
            return 417;
        }
        if (c->minor == 1 && (cl > 0 || te != NULL)) {
            evbuffer_add_printf(bufferevent_get_output(c->bev), "HTTP/1.1 100 Continue\r\n\r\n");
        }
    }
    if (te != NULL) {
        c->chunked = true;
        c->st = ST_CHUNK_SIZE;
    } else {
        c->content_length = cl;
        c->st = ST_BODY;
    }
    return 0;
}

static void fail_status(struct conn *c, int status)
{
    const char *msg;
    switch (status) {
    case 413:
        msg = "failed to decode JSON input: http: request body too large";
        break;
    case 431:
        msg = "request header fields too large";
        break;
    case 405:
        msg = "";
        break;
    case 417:
        msg = "unsupported Expect header";
        break;
    case 501:
        msg = "unsupported transfer encoding";
        break;
    case 505:
        msg = "HTTP version not supported";
        break;
    default:
        msg = "malformed HTTP request";
        break;
    }
    fail_close(c, status, msg);
}

static void process(struct conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    const struct kms_http_opts *o = &c->h->opts;

    while (c->st != ST_CLOSING) {
        size_t avail = evbuffer_get_length(in);
        if (avail > 0 && !c->req_started) {
            c->req_started = true;
            arm_timer(c, o->read_timeout);
        }
        if (c->st == ST_LINE || c->st == ST_HEADERS || c->st == ST_CHUNK_TRAILER) {
            size_t n = 0;
            char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
            if (line == NULL) {
                if (c->header_bytes + evbuffer_get_length(in) > o->max_header_size) {
                    fail_status(c, c->st == ST_LINE ? 414 : 431);
                }
                return;
            }
            c->header_bytes += n + 2;
            if (c->header_bytes > o->max_header_size) {
                free(line);
                fail_status(c, c->st == ST_LINE ? 414 : 431);
                return;
            }
            int st = 0;
            if (c->st == ST_LINE) {
                if (n == 0) {
                    c->header_bytes = 0; /* tolerate blank lines between requests */
                    free(line);
                    continue;
                }
                st = parse_request_line(c, line);
                if (st == 0) {
                    c->st = ST_HEADERS;
                }
            } else if (n == 0) {
                if (c->st == ST_CHUNK_TRAILER) {
                    free(line);
                    dispatch(c);
                    continue;
                }
                st = headers_done(c);
            } else if (c->st == ST_HEADERS) {
                st = parse_header_line(c, line);
            }
            free(line);
            if (st != 0) {
                fail_status(c, st);
                return;
            }
            continue;
        }
        if (c->st == ST_BODY) {
            if (avail < c->content_length) {
                return;
            }
            evbuffer_remove_buffer(in, c->body, c->content_length);
            dispatch(c);
            continue;
        }
        if (c->st == ST_CHUNK_SIZE) {
            size_t n = 0;
            char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
            if (line == NULL) {
                if (evbuffer_get_length(in) > 1024) {
                    fail_status(c, 400);
                }
                return;
            }
            char *end = NULL;
            errno = 0;
            unsigned long long sz = strtoull(line, &end, 16);
            bool bad = end == line || errno != 0 || (*end != '\0' && *end != ';' && *end != ' ');
            free(line);
            if (bad) {
                fail_status(c, 400);
                return;
            }
            if (sz > o->max_body_size ||
                evbuffer_get_length(c->body) + (size_t)sz > o->max_body_size) {
                fail_status(c, 413);
                return;
            }
            c->chunk_left = (size_t)sz;
            c->st = sz == 0 ? ST_CHUNK_TRAILER : ST_CHUNK_DATA;
            continue;
        }
        if (c->st == ST_CHUNK_DATA) {
            if (avail < c->chunk_left + 2) {
                return;
            }
            evbuffer_remove_buffer(in, c->body, c->chunk_left);
            char crlf[2];
            evbuffer_remove(in, crlf, 2);
            if (crlf[0] != '\r' || crlf[1] != '\n') {
                fail_status(c, 400);
                return;
            }
            c->st = ST_CHUNK_SIZE;
            continue;
        }
    }
}

static void on_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    process(arg);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    if (c->st == ST_CLOSING && evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
        conn_free(c);
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        return; /* TLS handshake done */
    }
    conn_free(arg);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    (void)fd;
    (void)what;
    if (c->req_started && c->st != ST_CLOSING) {
        fail_close(c, 408, "request timed out");
        return;
    }
    conn_free(c);
}

static void conn_free(struct conn *c)
{
    struct kms_http *h = c->h;
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        h->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    h->nconns--;
    conn_reset_request(c);
    evbuffer_free(c->body);
    event_free(c->timer);
    bufferevent_free(c->bev);
    free(c);
    if (h->stopping && h->nconns == 0) {
        event_base_loopexit(h->base, NULL);
    }
}

/* Wrap an accepted socket (plain or TLS bufferevent) into a connection. */
static void conn_start(struct kms_http *h, evutil_socket_t fd, struct bufferevent *bev,
                       const struct sockaddr_storage *ss)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (c == NULL || bev == NULL) {
        free(c);
        if (bev != NULL) {
            bufferevent_free(bev);
        } else {
            evutil_closesocket(fd);
        }
        return;
    }
    c->h = h;
    c->bev = bev;
    c->timer = evtimer_new(h->base, on_timeout, c);
    c->body = evbuffer_new();
    if (c->timer == NULL || c->body == NULL) {
        bufferevent_free(c->bev);
        if (c->timer != NULL) {
            event_free(c->timer);
        }
        if (c->body != NULL) {
            evbuffer_free(c->body);
        }
        free(c);
        return;
    }
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &in->sin_addr, c->remote, sizeof(c->remote));
        c->port = ntohs(in->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, c->remote, sizeof(c->remote));
        c->port = ntohs(in6->sin6_port);
    }
    c->next = h->conns;
    if (h->conns != NULL) {
        h->conns->prev = c;
    }
    h->conns = c;
    h->nconns++;
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    arm_timer(c, h->opts.idle_timeout);
}

/*
 * On a TLS listener, look at the first byte before starting TLS: a TLS ClientHello starts
 * with 0x16; anything else is most likely plain HTTP, which gets a clear plain-text 400 (as
 * Go's net/http answers) instead of a handshake failure the client cannot read.
 */
struct sniff {
    struct kms_http *h;
    evutil_socket_t fd;
    struct sockaddr_storage ss;
    struct event *ev;
};

static void on_sniff(evutil_socket_t fd, short what, void *arg)
{
    struct sniff *sn = arg;
    struct kms_http *h = sn->h;
    unsigned char first = 0;
    ssize_t n = (what & EV_READ) ? recv(fd, &first, 1, MSG_PEEK) : -1;
    event_free(sn->ev);
    h->nconns--;
    if (n == 1 && first == 0x16) {
        h->nconns++;
        struct bufferevent *bev = kms_tls_bufferevent(h->opts.tls, h->base, fd);
        h->nconns--;
        conn_start(h, fd, bev, &sn->ss);
    } else {
        if (n == 1) {
            /* consume what the client sent so that closing does not turn into a reset */
            char sink[4096];
            ssize_t r = recv(fd, sink, sizeof(sink), MSG_DONTWAIT);
            (void)r;
            static const char plain[] =
                "HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: "
                "close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";
            ssize_t w = send(fd, plain, sizeof(plain) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
            (void)w;
            shutdown(fd, SHUT_WR);
        }
        evutil_closesocket(fd);
    }
    free(sn);
    if (h->stopping && h->nconns == 0) {
        event_base_loopexit(h->base, NULL);
    }
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    struct kms_http *h = arg;
    struct sockaddr_storage ss;
    (void)l;

    if (h->nconns >= h->opts.max_connections) {
        static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: "
                                   "application/json\r\nContent-Length: 40\r\nConnection: "
                                   "close\r\n\r\n{\"errors\":[\"too many open connections\"]}\n";
        if (h->opts.tls == NULL) {
            ssize_t w = send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
            (void)w;
        }
        evutil_closesocket(fd);
        return;
    }
    memset(&ss, 0, sizeof(ss));
    memcpy(&ss, sa, (size_t)salen < sizeof(ss) ? (size_t)salen : sizeof(ss));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (h->opts.tls == NULL) {
        conn_start(h, fd, bufferevent_socket_new(h->base, fd, BEV_OPT_CLOSE_ON_FREE), &ss);
        return;
    }
    struct sniff *sn = calloc(1, sizeof(*sn));
    if (sn == NULL) {
        evutil_closesocket(fd);
        return;
    }
    sn->h = h;
    sn->fd = fd;
    sn->ss = ss;
    sn->ev = event_new(h->base, fd, EV_READ, on_sniff, sn);
    if (sn->ev == NULL) {
        free(sn);
        evutil_closesocket(fd);
        return;
    }
    struct timeval tv = {(time_t)h->opts.read_timeout, 0};
    h->nconns++; /* counted while waiting for its first byte */
    event_add(sn->ev, &tv);
}

static int parse_address(const char *address, struct sockaddr_storage *ss, int *sslen)
{
    char host[256];
    const char *colon = strrchr(address, ':');
    if (colon == NULL || (size_t)(colon - address) >= sizeof(host)) {
        return -1;
    }
    memcpy(host, address, (size_t)(colon - address));
    host[colon - address] = '\0';
    char *h = host;
    size_t hl = strlen(h);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h[hl - 1] = '\0';
        h++;
    }
    char *end = NULL;
    long port = strtol(colon + 1, &end, 10);
    if (*(colon + 1) == '\0' || *end != '\0' || port < 0 || port > 65535) {
        return -1;
    }
    if (strcmp(h, "") == 0 || strcmp(h, "localhost") == 0) {
        h = strcmp(h, "") == 0 ? "0.0.0.0" : "127.0.0.1";
    }
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, h, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        *sslen = sizeof(*in);
        return 0;
    }
    if (inet_pton(AF_INET6, h, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *sslen = sizeof(*in6);
        return 0;
    }
    return -1;
}

int kms_http_listen(const char *address, int *fd_out, char *bound, size_t boundlen,
                    struct kms_err *err)
{
    struct sockaddr_storage ss;
    int sslen = 0;
    int one = 1;

    if (parse_address(address, &ss, &sslen) != 0) {
        return kms_err_set(err, 400, "invalid listen address \"%s\" (want host:port)", address);
    }
    /*
     * One listening socket for all workers, without SO_REUSEPORT: a second server on the same
     * port must fail with "address in use" instead of silently sharing the connections.
     */
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, (struct sockaddr *)&ss, (socklen_t)sslen) != 0 || listen(fd, 1024) != 0) {
        int e = errno;
        if (fd >= 0) {
            close(fd);
        }
        return kms_err_set(err, 500, "cannot listen on %s: %s", address, strerror(e));
    }
    struct sockaddr_storage got;
    socklen_t gl = sizeof(got);
    char host[INET6_ADDRSTRLEN] = "";
    if (getsockname(fd, (struct sockaddr *)&got, &gl) == 0) {
        if (got.ss_family == AF_INET) {
            struct sockaddr_in *in = (struct sockaddr_in *)&got;
            inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
            snprintf(bound, boundlen, "%s:%d", host, ntohs(in->sin_port));
        } else {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&got;
            inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
            snprintf(bound, boundlen, "[%s]:%d", host, ntohs(in6->sin6_port));
        }
    }
    *fd_out = fd;
    return 0;
}

int kms_http_create(struct event_base *base, struct kms_api *api, int listen_fd,
                    const struct kms_http_opts *opts, struct kms_http **out, struct kms_err *err)
{
    struct kms_http *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        close(listen_fd);
        return kms_err_set(err, 500, "out of memory");
    }
    h->base = base;
    h->api = api;
    h->opts = *opts;
    h->listener = evconnlistener_new(base, on_accept, h, LEV_OPT_CLOSE_ON_FREE, -1, listen_fd);
    if (h->listener == NULL) {
        close(listen_fd);
        free(h);
        return kms_err_set(err, 500, "cannot watch the listening socket");
    }
    *out = h;
    return 0;
}

void kms_http_stop_accepting(struct kms_http *h)
{
    h->stopping = true;
    if (h->listener != NULL) {
        evconnlistener_free(h->listener);
        h->listener = NULL;
    }
    /* idle connections close now; busy ones after their current request */
    struct conn *c = h->conns;
    while (c != NULL) {
        struct conn *next = c->next;
        if (c->st == ST_LINE && !c->req_started) {
            conn_free(c);
        } else {
            c->keepalive = false;
        }
        c = next;
    }
    if (h->nconns == 0) {
        event_base_loopexit(h->base, NULL);
    }
}

size_t kms_http_connections(const struct kms_http *h)
{
    return h->nconns;
}

void kms_http_destroy(struct kms_http **hp)
{
    struct kms_http *h = *hp;
    if (h == NULL) {
        return;
    }
    h->stopping = false; /* no loopexit from here */
    while (h->conns != NULL) {
        conn_free(h->conns);
    }
    if (h->listener != NULL) {
        evconnlistener_free(h->listener);
    }
    free(h);
    *hp = NULL;
}
