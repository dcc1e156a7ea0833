/*
 * http.c - an HTTP/1.1 server on libevent bufferevents: connections, parking, writing.
 *
 * Why not evhttp: libevent 2.1's evhttp folds every method it does not know into one
 * "unknown" type and drops the method string, so Vault's LIST verb (hvac lists keys with it)
 * could not be told apart from any other word. This layer parses HTTP/1.1 itself and enforces
 * the limits a KMS needs against hostile clients: header bytes and count, body size (413
 * before reading it), a deadline for a whole request (slow-header and slow-body clients), an
 * idle timeout, a connection cap, and back-pressure on pipelining (see below).
 *
 * The parser (kms_http_parser_*, server/http_parser.c) is socket-free and strict where
 * leniency lets a proxy and kmsd disagree on where a request ends; every refusal is a 4xx/5xx
 * with a message, and the connection is closed after it.
 *
 * Back-pressure: a client may pipeline requests and never read the answers. Requests are only
 * parsed while the connection's unsent output is below OUT_HIGH; above it the connection stops
 * reading (the kernel's buffers then push back on the client) until the output has drained to
 * OUT_LOW, so the memory a connection holds stays bounded whatever it sends.
 *
 * Parking: the event loop never waits for a disk. A request whose audit record is not yet
 * written (docs/audit.md) comes back from kms_api_start parked; its connection holds the
 * request (nothing further is parsed) and the loop goes on with other connections. The
 * connection keeps reading while parked, so a client that goes away is seen at once, and
 * parking costs no epoll_ctl(2) (disabling and re-enabling the read event cost two per
 * audited request); what a pipelining client sends meanwhile is only buffered, up to
 * PARK_IN_HIGH bytes (a read high-water mark, set while parked), and parsed once the parked
 * request is answered.
 * The audit writer wakes the request through this server's mailbox (a list under a mutex and
 * one libevent event made active from the writer thread: one wake-up of the loop per group
 * commit, however many requests it finishes), and the loop resumes it and sends its answer.
 * A request parked longer than audit_timeout, or whose connection goes away, is abandoned:
 * 500, and a handler that had not run yet never runs.
 *
 * Placing connections: every worker watches the same listening socket, and the one that wakes
 * first accepts everything pending (libevent's listener loops until EAGAIN), so a client that
 * opens a few connections at once could land them all on one worker and use one core of many.
 * A worker that accepts a socket therefore gives it to the worker with the fewest connections
 * (its own count on a tie; counts read without a lock, a hand-off counted at once) through
 * that worker's mailbox: one wake-up of the other loop per connection, none per request. The
 * receiving worker checks max_connections again with its own exact count.
 *
 * Writing: on a plain-HTTP connection with nothing queued, an answer goes into the
 * connection's `pend` buffer, and once the loop has run every callback that was ready, one
 * flush writes each such connection's answers (evbuffer_write); only what a socket does not
 * take is queued on the bufferevent. A queued answer costs two epoll_ctl(2) (the write event
 * added, then removed once drained), which were a tenth of a worker's time under small
 * requests; and writing each answer the moment it was ready woke the client's thread once per
 * answer, where answers written together find it awake (over loopback the sender pays the
 * wake-up: 20.2 -> 16.9 us of server CPU per encrypt on a 2-core VM). Anything else written to
 * a connection (a 100 Continue, an error that closes it, TLS, answers behind queued output)
 * first moves its pending answers onto the bufferevent (conn_out), so answers keep their order.
 *
 * Responses carry Content-Type application/json (unless api/ names another, as for
 * Prometheus metrics) and Cache-Control: no-store.
 */
#include "server/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define OUT_HIGH (256 * 1024)    /* stop reading a connection with this much unsent output */
#define OUT_LOW (64 * 1024)      /* and resume once it has drained to this */
#define PARK_IN_HIGH (64 * 1024) /* a parked connection buffers at most this much input */

/* ------------------------------------------------------------------------------------------ */
/* Connections                                                                                  */

struct conn {
    struct kms_http *h;
    struct conn *prev, *next;
    struct bufferevent *bev;
    /* plain HTTP: kmsd reads the socket itself (rev), the bufferevent only writes; libevent's
     * own read asks the kernel with ioctl(FIONREAD) how much is there before every read,
     * a system call per request. TLS connections read through their bufferevent (rev NULL). */
    struct event *rev;
    bool rd_want;   /* reading is enabled (conn_read_enable) */
    bool rd_full;   /* rev is off because the input reached rd_high */
    size_t rd_high; /* input bytes at which reading stops (0: no limit) */
    struct event *timer;
    struct kms_http_parser *parser;
    bool req_started; /* bytes of a request have arrived: the read deadline runs */
    bool keepalive;
    bool http10;   /* the current request is HTTP/1.0 */
    bool closing;  /* answer queued, close once it is sent */
    bool paused;   /* not reading: too much unsent output (back-pressure) */
    bool peer_eof; /* the client has sent its last byte (a half-close reads as a close) */
    char remote[INET6_ADDRSTRLEN];
    int port;
    struct kms_http_req req;   /* the request in progress (borrowed from the parser) */
    struct kms_api_call *call; /* parked on its audit record, or NULL */
    struct ha_job *job;        /* parked while an HA handler thread answers it, or NULL */
    struct conn *wnext;        /* in the mailbox (under mbox_mu) */
    bool in_mailbox;           /* under mbox_mu */
    struct evbuffer *pend;     /* answers written at the next flush (plain HTTP), or NULL */
    struct conn *fnext;        /* in the server's flush list */
    bool in_flush;
};

/* An accepted socket given to another worker (in its mailbox, under mbox_mu). */
struct handoff {
    struct handoff *next;
    evutil_socket_t fd;
    struct sockaddr_storage ss;
};

struct kms_http {
    struct event_base *base;
    struct kms_api *api;
    struct evconnlistener *listener;
    struct kms_http_opts opts;
    struct conn *conns;
    struct sniff *sniffs; /* TLS listener: accepted sockets waiting for their first byte */
    size_t nconns;
    atomic_bool stopping; /* stopped accepting (peers read it: they hand it nothing) */
    int64_t audit_timeout_ms;
    /* connection placement: nconns plus sockets handed to this server, read by its peers */
    atomic_size_t load;
    struct kms_http *const *peers; /* every worker's server, this one included */
    size_t npeers;
    /* parked requests whose audit record is finished, posted by the audit writers */
    pthread_mutex_t mbox_mu;
    struct conn *mbox;
    struct handoff *handoffs;
    struct event *mbox_ev;
    /* plain-HTTP connections with answers in `pend`, written by flush_ev's callback once the
     * loop has run every callback that was ready */
    struct conn *flush;
    struct event *flush_ev;
    /* accept(2) failing (out of descriptors): the listener rests accept_pause_ms */
    struct event *accept_ev;
    int64_t accept_pause_ms;
    int64_t accept_logged_ms; /* monotonic, of the last log line about it */
};

/*
 * An HA replica's request that may hold its thread long (kms_ha_may_wait: a standby's forward
 * to the active, a key generation or a batch on the active) runs on the replica's handler
 * threads on its own copy of the request while the connection is parked, and the thread wakes
 * the worker through the mailbox. A connection that goes away meanwhile leaves the job to its
 * thread, which frees it (ha_job_mu orders the two).
 */
struct ha_job {
    struct kms_ha *ha;
    struct conn *c; /* NULL once its connection gave up on it (under ha_job_mu) */
    bool done;      /* resp is filled (under ha_job_mu) */
    struct kms_http_req *req;
    size_t req_len;
    struct kms_http_resp resp;
    /* req's body bytes charged to the bodies' budget: the copy outlives the connection's
     * parser, which gave its charge to the job (ha_park) */
    struct kms_http_body_budget *budget;
    size_t charged;
};
static pthread_mutex_t ha_job_mu = PTHREAD_MUTEX_INITIALIZER;

/* Waiting for its audit record, its handler thread or an HA handler thread. */
static bool parked(const struct conn *c)
{
    return c->call != NULL || c->job != NULL;
}

static void conn_free(struct conn *c);
static void accept_here(struct kms_http *h, evutil_socket_t fd, const struct sockaddr_storage *ss);
static void refuse_busy(struct kms_http *h, evutil_socket_t fd);

/* Reading on or off, and its high-water mark, whichever way the connection reads. */
static void conn_read_enable(struct conn *c)
{
    if (c->rev == NULL) {
        bufferevent_enable(c->bev, EV_READ);
        return;
    }
    if (!c->rd_want && !c->rd_full) {
        event_add(c->rev, NULL);
    }
    c->rd_want = true;
}

static void conn_read_disable(struct conn *c)
{
    if (c->rev == NULL) {
        bufferevent_disable(c->bev, EV_READ);
        return;
    }
    if (c->rd_want && !c->rd_full) {
        event_del(c->rev);
    }
    c->rd_want = false;
}

static void conn_read_limit(struct conn *c, size_t high)
{
    if (c->rev == NULL) {
        bufferevent_setwatermark(c->bev, EV_READ, 0, high);
        return;
    }
    c->rd_high = high;
    if (c->rd_full && (high == 0 || evbuffer_get_length(bufferevent_get_input(c->bev)) < high)) {
        c->rd_full = false;
        if (c->rd_want) {
            event_add(c->rev, NULL);
        }
    }
}

/* The bufferevent's output, with c's pending answers moved onto it first (they come before
 * anything written there from now on). */
static struct evbuffer *conn_out(struct conn *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (c->pend != NULL && evbuffer_get_length(c->pend) > 0) {
        evbuffer_add_buffer(out, c->pend);
    }
    return out;
}

/* evbuffer_write, but what the socket took is wiped before it is drained: answers carry
 * plaintexts and data keys, and a drained chain is freed as it is. */
static void write_wiped(struct evbuffer *b, evutil_socket_t fd)
{
    struct evbuffer_iovec v[32];
    struct iovec iov[32];
    int nv = evbuffer_peek(b, -1, NULL, v, 32);
    nv = nv > 32 ? 32 : nv;
    for (int i = 0; i < nv; i++) {
        iov[i].iov_base = v[i].iov_base;
        iov[i].iov_len = v[i].iov_len;
    }
    ssize_t n = nv > 0 ? writev(fd, iov, nv) : 0;
    if (n <= 0) {
        return; /* an error is met again by the bufferevent's own write */
    }
    size_t left = (size_t)n;
    for (int i = 0; i < nv && left > 0; i++) {
        size_t k = v[i].iov_len < left ? v[i].iov_len : left;
        kms_memzero(v[i].iov_base, k);
        left -= k;
    }
    evbuffer_drain(b, (size_t)n);
}

/* Send c's pending answers; what the socket does not take goes to the bufferevent. */
static void flush_conn(struct conn *c)
{
    if (c->pend == NULL || evbuffer_get_length(c->pend) == 0) {
        return;
    }
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (evbuffer_get_length(out) == 0) {
        write_wiped(c->pend, bufferevent_getfd(c->bev));
    }
    if (evbuffer_get_length(c->pend) > 0) {
        evbuffer_add_buffer(out, c->pend);
    }
}

/* Once every callback that was ready has run: write the answers they produced. */
static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    struct kms_http *h = arg;
    (void)fd;
    (void)what;
    while (h->flush != NULL) {
        struct conn *c = h->flush;
        h->flush = c->fnext;
        c->fnext = NULL;
        c->in_flush = false;
        flush_conn(c);
    }
    kms_audit_wake_deferred();
}

static void arm_flush(void *arg)
{
    struct kms_http *h = arg;
    event_active(h->flush_ev, 0, 0);
}

void kms_http_loop_begin(struct kms_http *h)
{
    if (h->opts.ha == NULL && h->flush_ev != NULL) {
        kms_audit_defer_wakeups(arm_flush, h);
    }
}

void kms_http_loop_end(struct kms_http *h)
{
    (void)h;
    kms_audit_defer_wakeups(NULL, NULL);
}

/* Take c off the flush list (before it is freed). */
static void flush_remove(struct conn *c)
{
    if (!c->in_flush) {
        return;
    }
    for (struct conn **pp = &c->h->flush; *pp != NULL; pp = &(*pp)->fnext) {
        if (*pp == c) {
            *pp = c->fnext;
            break;
        }
    }
    c->fnext = NULL;
    c->in_flush = false;
}

static void count_conn(struct kms_http *h)
{
    h->nconns++;
    atomic_fetch_add_explicit(&h->load, 1, memory_order_relaxed);
}

static void uncount_conn(struct kms_http *h)
{
    h->nconns--;
    atomic_fetch_sub_explicit(&h->load, 1, memory_order_relaxed);
}

static void arm_timer(struct conn *c, int64_t seconds)
{
    struct timeval tv = {(time_t)seconds, 0};
    evtimer_add(c->timer, &tv);
}

/*
 * A parked call waits at most audit_timeout for its audit line, counted from now: libevent
 * counts a timeout from the time it cached when this loop pass began, and a handler that ran
 * long in this pass (before its line was queued) would otherwise find its wait already over
 * and answer 500 while its line was being written as a success. A call whose handler runs on
 * a handler thread has no audit wait yet: its thread wakes it.
 */
static void arm_audit_timer(struct conn *c)
{
    if (kms_api_running(c->call)) {
        return;
    }
    struct timeval tv = {(time_t)(c->h->audit_timeout_ms / 1000),
                         (suseconds_t)(c->h->audit_timeout_ms % 1000) * 1000};
    (void)event_base_update_cache_time(c->h->base);
    evtimer_add(c->timer, &tv);
}

static const char *reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 102:
        return "Processing";
    case 103:
        return "Early Hints";
    case 200:
        return "OK";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 207:
        return "Multi-Status";
    case 307:
        return "Temporary Redirect";
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
    case 417:
        return "Expectation Failed";
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
        return NULL;
    }
}

/* The reason phrase of status; a code without a name reads "status code <code>" (buf), as
 * Go's server writes it. */
static const char *reason_text(int status, char *buf, size_t n)
{
    const char *r = reason(status);
    if (r == NULL) {
        snprintf(buf, n, "status code %d", status);
        r = buf;
    }
    return r;
}

/* An answer's head, and its body when it fits, gathered for one evbuffer_add (the printf
 * family cost a tenth of a microsecond a request). */
struct headbuf {
    struct evbuffer *out;
    size_t n;
    char b[1024];
};

static void hb_put(struct headbuf *h, const char *s, size_t len)
{
    if (len > sizeof(h->b) - h->n) {
        evbuffer_add(h->out, h->b, h->n);
        h->n = 0;
        if (len > sizeof(h->b)) {
            evbuffer_add(h->out, s, len);
            return;
        }
    }
    memcpy(h->b + h->n, s, len);
    h->n += len;
}

/* a string literal, its length counted by the compiler */
#define HB_LIT(h, lit) hb_put((h), (lit), sizeof(lit) - 1)

static void hb_str(struct headbuf *h, const char *s)
{
    hb_put(h, s, strlen(s));
}

static void hb_uint(struct headbuf *h, size_t v)
{
    char d[21];
    hb_put(h, d, kms_u64_dec(v, d));
}

/* "HTTP/1.1 <code> <reason>\r\n" */
static void hb_status(struct headbuf *h, int status)
{
    char rb[32];
    HB_LIT(h, "HTTP/1.1 ");
    hb_uint(h, (size_t)status);
    HB_LIT(h, " ");
    hb_str(h, reason_text(status, rb, sizeof(rb)));
    HB_LIT(h, "\r\n");
}

/* A body handed to an evbuffer by reference: wiped and freed once sent or dropped. */
static void body_sent(const void *data, size_t len, void *arg)
{
    void *p = (void *)(uintptr_t)data;
    (void)arg;
    kms_free_wipe(&p, len);
}

/* r's body may be taken (r->body NULL after): a big one goes out by reference. */
static void write_response(struct conn *c, struct evbuffer *out, struct kms_http_resp *r, bool head)
{
    struct headbuf h = {.out = out, .n = 0};
    int status = r->status;
    if (status < 100 || status > 999) {
        status = 500; /* api/ never sets one; a status line has three digits */
    }
    if (status <= 199 && status != 101) {
        /* an informational code (a batch's partial_failure_response_code may ask for one):
         * as Go's server does, it goes out as an interim response and the answer as 200;
         * never an interim one to an HTTP/1.0 client (RFC 9110 15.2) */
        if (!c->http10) {
            hb_status(&h, status);
            HB_LIT(&h, "\r\n");
        }
        status = 200;
    }
    /* no body may follow these (RFC 9110 6.4.1): Go drops it too */
    bool bodyless = status == 101 || status == 204 || status == 304;
    hb_status(&h, status);
    HB_LIT(&h, "Content-Type: ");
    hb_str(&h, r->content_type[0] ? r->content_type : "application/json");
    HB_LIT(&h, "\r\nCache-Control: no-store\r\n");
    if (!bodyless) {
        HB_LIT(&h, "Content-Length: ");
        hb_uint(&h, r->body_len);
        HB_LIT(&h, "\r\n");
    }
    for (size_t i = 0; i < r->nextra; i++) {
        hb_str(&h, r->extra[i].name);
        HB_LIT(&h, ": ");
        hb_str(&h, r->extra[i].value);
        HB_LIT(&h, "\r\n");
    }
    if (!c->keepalive) {
        HB_LIT(&h, "Connection: close\r\n");
    } else if (c->http10) {
        HB_LIT(&h, "Connection: keep-alive\r\n");
    }
    HB_LIT(&h, "\r\n");
    if (!head && !bodyless && r->body_len > 0) {
        char *block = NULL;
        if (out != c->pend && (block = malloc(h.n + r->body_len)) != NULL) {
            /* the bufferevent writes it (TLS, answers behind queued output): the head and the
             * body as one block it takes by reference and wipes once written (a chain of
             * copied bytes is freed unwiped), one chain so that TLS sends one record (the
             * body in a chain of its own made two: https encrypt 72k -> 57k req/s) */
            memcpy(block, h.b, h.n);
            memcpy(block + h.n, r->body, r->body_len);
            size_t len = h.n + r->body_len;
            kms_memzero(h.b, h.n);
            h.n = 0;
            if (evbuffer_add_reference(out, block, len, body_sent, NULL) != 0) {
                evbuffer_add(out, block, len);
                kms_free_wipe((void **)&block, len);
            }
        } else if (r->body_len > sizeof(h.b) - h.n) {
            /* a big body (a batch, an export, a backup) is not copied: c->pend takes it by
             * reference, write_wiped wipes what it sends and body_sent the rest */
            if (h.n > 0) {
                evbuffer_add(out, h.b, h.n);
                h.n = 0;
            }
            if (evbuffer_add_reference(out, r->body, r->body_len, body_sent, NULL) == 0) {
                r->body = NULL;
                r->body_len = 0;
            } else {
                evbuffer_add(out, r->body, r->body_len);
            }
        } else {
            hb_put(&h, r->body, r->body_len);
        }
    }
    if (h.n > 0) {
        evbuffer_add(out, h.b, h.n);
        kms_memzero(h.b, h.n); /* a small body's copy on this stack */
    }
}

/* Stop reading and close once the queued output is sent. */
static void conn_close_after_write(struct conn *c)
{
    c->closing = true;
    conn_read_disable(c);
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    evtimer_del(c->timer);
}

/* The client sent its last byte and every request it sent in full is answered: send the
 * answers, then close. */
static void peer_done(struct conn *c)
{
    flush_remove(c);
    flush_conn(c);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
        conn_free(c);
        return;
    }
    conn_close_after_write(c);
}

/* Answer with an error and close the connection after the write (protocol-level errors). */
static void fail_close(struct conn *c, int status, const char *msg)
{
    struct kms_http_resp r;
    memset(&r, 0, sizeof(r));
    kms_api_error_response(status, msg, &r);
    c->keepalive = false;
    write_response(c, conn_out(c), &r, false);
    kms_http_resp_dispose(&r);
    conn_close_after_write(c);
}

/* From an audit writer thread: the parked request of c can go on. */
static void wake(void *arg)
{
    struct conn *c = arg;
    struct kms_http *h = c->h;
    pthread_mutex_lock(&h->mbox_mu);
    bool first = h->mbox == NULL;
    c->wnext = h->mbox;
    h->mbox = c;
    c->in_mailbox = true;
    pthread_mutex_unlock(&h->mbox_mu);
    if (first) {
        event_active(h->mbox_ev, 0, 0); /* one wake-up of the loop per batch */
    }
}

/* Take c out of the mailbox if a wake-up put it there (its call is already abandoned). */
static void mailbox_remove(struct conn *c)
{
    struct kms_http *h = c->h;
    pthread_mutex_lock(&h->mbox_mu);
    if (c->in_mailbox) {
        for (struct conn **pp = &h->mbox; *pp != NULL; pp = &(*pp)->wnext) {
            if (*pp == c) {
                *pp = c->wnext;
                break;
            }
        }
        c->in_mailbox = false;
    }
    pthread_mutex_unlock(&h->mbox_mu);
}

static void ha_job_free(struct ha_job *j)
{
    kms_free_wipe((void **)&j->resp.body, j->resp.body_len);
    kms_free_wipe((void **)&j->req, j->req_len);
    kms_http_body_budget_release(j->budget, j->charged);
    free(j);
}

/* On an HA handler thread. */
static void ha_job_run(void *arg)
{
    struct ha_job *j = arg;
    kms_ha_handle(j->ha, j->req, &j->resp);
    pthread_mutex_lock(&ha_job_mu);
    struct conn *c = j->c;
    j->done = true;
    if (c != NULL) {
        wake(c); /* under ha_job_mu: the connection and its server are still there */
    }
    pthread_mutex_unlock(&ha_job_mu);
    if (c == NULL) {
        ha_job_free(j); /* nobody waits for its answer */
    }
}

/* Park c's request on an HA handler thread; false when it cannot be (run it here). */
static bool ha_park(struct conn *c)
{
    struct ha_job *j = calloc(1, sizeof(*j));
    if (j == NULL || (j->req = kms_http_req_copy(&c->req, &j->req_len)) == NULL) {
        free(j);
        return false;
    }
    j->ha = c->h->opts.ha;
    j->c = c;
    c->job = j;
    if (kms_ha_submit(j->ha, ha_job_run, j) != 0) {
        c->job = NULL;
        ha_job_free(j);
        return false;
    }
    /* the body's charge goes with the copy: the job runs on when its client has gone (a
     * reset frees the connection, and its parser gave the charge back), and nobody's budget
     * held the copies of such requests, queued for a handler thread or forwarded by a standby
     * (no token checked before). Set here, after the submit: only this thread frees the job
     * before ha_abandon, which comes later on it */
    j->budget = c->h->opts.body_budget;
    j->charged = kms_http_parser_take_charge(c->parser);
    return true;
}

/* Give up on c's HA job (its connection is going): its thread frees it, or here if done. */
static void ha_abandon(struct conn *c)
{
    pthread_mutex_lock(&ha_job_mu);
    struct ha_job *j = c->job;
    c->job = NULL;
    j->c = NULL;
    bool done = j->done;
    pthread_mutex_unlock(&ha_job_mu);
    mailbox_remove(c);
    if (done) {
        ha_job_free(j);
    }
}

static void release_charge(void *arg, size_t n)
{
    kms_http_body_budget_release(arg, n);
}

/* Give up on c's parked request (no wake-up after this); resp (may be NULL) gets its 500. */
static void abandon(struct conn *c, struct kms_http_resp *resp)
{
    /* the body's charge ends with the call: a handler thread may run on with the request's
     * own copy after the connection is gone (api/dispatch.c after_request_line) */
    kms_api_on_end(c->call, release_charge, c->h->opts.body_budget,
                   kms_http_parser_take_charge(c->parser));
    kms_api_abandon(c->call, resp);
    c->call = NULL;
    mailbox_remove(c);
}

/* The answer to the current request is ready: send it, and get ready for the next one. */
static void complete(struct conn *c, struct kms_http_resp *resp)
{
    if (c->h->stopping || resp->status == 101) {
        /* after a 101 the client expects another protocol: nothing more on this one */
        c->keepalive = false;
    }
    bool head = strcmp(c->req.method, "HEAD") == 0;
    struct kms_http *h = c->h;
    if (c->pend == NULL && h->opts.tls == NULL && h->flush_ev != NULL) {
        c->pend = evbuffer_new(); /* NULL: this connection's answers take the bufferevent */
    }
    if (c->pend != NULL && c->keepalive &&
        evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
        /* nothing queued: written with the other answers of this pass of the loop */
        write_response(c, c->pend, resp, head);
        if (!c->in_flush) {
            if (h->flush == NULL) {
                event_active(h->flush_ev, 0, 0);
            }
            c->in_flush = true;
            c->fnext = h->flush;
            h->flush = c;
        }
    } else {
        write_response(c, conn_out(c), resp, head);
    }
    kms_http_resp_dispose(resp);
    kms_http_parser_reset(c->parser);
    memset(&c->req, 0, sizeof(c->req));
    c->req_started = false;
    if (!c->keepalive) {
        conn_close_after_write(c);
    } else {
        arm_timer(c, c->h->opts.idle_timeout);
    }
}

/* Run the current request; true when it is parked (its audit record, a handler thread). */
static bool dispatch(struct conn *c)
{
    struct kms_http_resp resp;

    evtimer_del(c->timer);
    if (kms_http_parser_request(c->parser, &c->req) != 0) {
        fail_close(c, 500, "out of memory");
        return false;
    }
    c->req.remote_addr = c->remote;
    c->req.remote_port = c->port;
    c->keepalive = kms_http_parser_keepalive(c->parser) && !c->h->stopping;
    c->http10 = kms_http_parser_http10(c->parser);

    if (c->h->opts.ha != NULL) {
        /* HA replicas (docs/ha.md): sys/leader and sys/health here; a forward or a long
         * handler on the replica's handler threads (struct ha_job); the rest here too, through
         * the blocking pipeline (a hand-off would cost a cached key's encrypt more than the
         * request: 110k -> 49k req/s) */
        if (kms_ha_answer_now(c->h->opts.ha, &c->req, &resp)) {
            complete(c, &resp);
            return false;
        }
        if (kms_ha_may_wait(c->h->opts.ha, &c->req) && ha_park(c)) {
            conn_read_limit(c, PARK_IN_HIGH);
            return true;
        }
        kms_ha_handle(c->h->opts.ha, &c->req, &resp);
        complete(c, &resp);
        return false;
    }
    if (kms_api_start(c->h->api, &c->req, &resp, wake, c, &c->call) == 1) {
        /* parked: hold this connection (parse nothing more, buffer at most PARK_IN_HIGH
         * bytes) until the writer wakes it */
        conn_read_limit(c, PARK_IN_HIGH);
        arm_audit_timer(c);
        return true;
    }
    complete(c, &resp);
    return false;
}

static void process(struct conn *c);

/* After a parked request is answered: read and parse again. */
static void unpark(struct conn *c)
{
    if (c->closing) {
        return;
    }
    conn_read_limit(c, 0); /* no syscall unless it had stopped reading */
    if (!c->paused && !c->peer_eof) {
        conn_read_enable(c);
    }
    process(c); /* requests already buffered do not wait for new bytes */
}

/* Go on with a parked call whose audit lines are finished (woken, or settled at its timeout). */
static void resume(struct conn *c)
{
    struct kms_http_resp resp;
    evtimer_del(c->timer);
    if (kms_api_resume(c->call, &resp) == 1) {
        /* parked again (its response line now, or its handler on a handler thread) */
        arm_audit_timer(c);
        return;
    }
    c->call = NULL;
    complete(c, &resp);
    unpark(c);
}

/* Send the answer of c's finished HA job. */
static void ha_resume(struct conn *c)
{
    pthread_mutex_lock(&ha_job_mu);
    struct ha_job *j = c->job;
    bool done = j->done;
    if (done) {
        c->job = NULL;
    }
    pthread_mutex_unlock(&ha_job_mu);
    if (!done) {
        return; /* only its thread wakes it, once done */
    }
    struct kms_http_resp resp = j->resp;
    j->resp.body = NULL;
    j->resp.body_len = 0;
    ha_job_free(j);
    complete(c, &resp);
    unpark(c);
}

static void on_mailbox(evutil_socket_t fd, short what, void *arg)
{
    struct kms_http *h = arg;
    (void)fd;
    (void)what;
    pthread_mutex_lock(&h->mbox_mu);
    struct conn *list = h->mbox;
    h->mbox = NULL;
    for (struct conn *c = list; c != NULL; c = c->wnext) {
        c->in_mailbox = false;
    }
    struct handoff *given = h->handoffs;
    h->handoffs = NULL;
    pthread_mutex_unlock(&h->mbox_mu);
    while (given != NULL) {
        struct handoff *g = given;
        given = g->next;
        /* the giver's count goes before accept_here counts it again: counted twice for a
         * moment, this server could look full to a peer choosing where to put the next one */
        atomic_fetch_sub_explicit(&h->load, 1, memory_order_relaxed);
        if (h->stopping) {
            evutil_closesocket(g->fd);
        } else if (h->nconns >= h->opts.max_connections) {
            refuse_busy(h, g->fd); /* two givers chose it at once: the cap is exact here */
        } else {
            accept_here(h, g->fd, &g->ss);
        }
        free(g);
    }
    while (list != NULL) {
        struct conn *c = list;
        list = c->wnext;
        if (c->call != NULL) {
            resume(c);
        } else if (c->job != NULL) {
            ha_resume(c);
        }
    }
}

static void process(struct conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    const struct kms_http_opts *o = &c->h->opts;

    while (!c->closing && !parked(c)) {
        size_t unsent =
            evbuffer_get_length(out) + (c->pend != NULL ? evbuffer_get_length(c->pend) : 0);
        if (kms_http_parser_idle(c->parser) && unsent > OUT_HIGH) {
            /* the client is not reading its answers: stop taking requests until it does */
            (void)conn_out(c); /* all of it on the bufferevent, whose drain resumes reading */
            c->paused = true;
            conn_read_disable(c);
            bufferevent_setwatermark(c->bev, EV_WRITE, OUT_LOW, 0);
            return;
        }
        if (evbuffer_get_length(in) > 0 && !c->req_started) {
            c->req_started = true;
            arm_timer(c, o->read_timeout);
        }
        enum kms_http_parse_event ev;
        struct kms_err err;
        if (kms_http_parser_run(c->parser, in, &ev, &err) != 0) {
            fail_close(c, err.status, err.msg);
            return;
        }
        if (ev == KMS_HTTP_PARSE_MORE) {
            if (c->peer_eof) {
                peer_done(c); /* no more bytes will come: a part of a request is dropped */
            }
            return;
        }
        if (ev == KMS_HTTP_PARSE_CONTINUE) {
            evbuffer_add_printf(conn_out(c), "HTTP/1.1 100 Continue\r\n\r\n");
            continue;
        }
        if (dispatch(c)) {
            return;
        }
    }
}

static void on_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    process(arg);
}

static void on_event(struct bufferevent *bev, short what, void *arg);

#define READ_MAX (16 * 1024) /* bytes read from a plain socket at once */

/* A plain socket is readable: read what is there (up to the high-water mark), as
 * bufferevent_socket would, without asking how much first. */
static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    (void)what;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t room = READ_MAX;
    if (c->rd_high > 0) {
        size_t len = evbuffer_get_length(in);
        if (len >= c->rd_high) {
            if (!c->rd_full && c->rd_want) {
                event_del(c->rev);
            }
            c->rd_full = true;
            return;
        }
        if (c->rd_high - len < room) {
            room = c->rd_high - len;
        }
    }
    /* a bufferevent keeps its input's end frozen; its own read thaws it the same way */
    struct evbuffer_iovec v[2];
    evbuffer_unfreeze(in, 0);
    int nv = evbuffer_reserve_space(in, (ev_ssize_t)room, v, 2);
    if (nv <= 0) {
        evbuffer_freeze(in, 0);
        on_event(c->bev, BEV_EVENT_READING | BEV_EVENT_ERROR, c);
        return;
    }
    struct iovec iov[2];
    size_t want = 0;
    for (int i = 0; i < nv; i++) {
        size_t take = v[i].iov_len < room - want ? v[i].iov_len : room - want;
        iov[i].iov_base = v[i].iov_base;
        iov[i].iov_len = take;
        want += take;
    }
    ssize_t n = readv(fd, iov, nv);
    if (n <= 0) {
        evbuffer_freeze(in, 0);
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        return; /* nothing committed: the reserved space stays unused */
    }
    if (n <= 0) {
        /* end of input or a reset: no more reading (the event would fire again at once) */
        conn_read_disable(c);
        on_event(c->bev, BEV_EVENT_READING | (n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR), c);
        return;
    }
    size_t left = (size_t)n;
    int used = 0;
    for (int i = 0; i < nv && left > 0; i++) {
        v[i].iov_len = iov[i].iov_len < left ? iov[i].iov_len : left;
        left -= v[i].iov_len;
        used++;
    }
    int committed = evbuffer_commit_space(in, v, used);
    evbuffer_freeze(in, 0);
    if (committed != 0) {
        on_event(c->bev, BEV_EVENT_READING | BEV_EVENT_ERROR, c);
        return;
    }
    process(c);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    size_t pending = evbuffer_get_length(bufferevent_get_output(bev));
    if (c->closing) {
        if (pending == 0) {
            conn_free(c);
        }
        return;
    }
    if (c->paused && pending <= OUT_LOW) {
        c->paused = false;
        bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
        if (!parked(c)) {
            if (!c->peer_eof) {
                conn_read_enable(c);
            }
            process(c); /* requests already buffered do not wait for new bytes */
        }
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        if (!c->req_started && !parked(c) && !c->closing) {
            arm_timer(c, c->h->opts.idle_timeout); /* TLS handshake done: now idle */
        }
        return;
    }
    if ((what & BEV_EVENT_EOF) && !(what & (BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) &&
        c->h->opts.tls == NULL && !c->closing && (c->call == NULL || kms_api_handled(c->call))) {
        /* The client has sent all it will. A half-close (shutdown(SHUT_WR), `nc -N`) reads
         * the same as a close, so what it sent in full is still answered: a parked request
         * whose handler ran, and requests already buffered. A request parked before its
         * handler is abandoned below instead (its handler never runs). Plain HTTP only: at a
         * TLS end of input libevent stops writing as well (and OpenSSL reports a TCP
         * half-close as an error), so a TLS connection is freed there, as before. */
        c->peer_eof = true;
        if (!parked(c) && !c->paused) {
            peer_done(c);
        }
        return; /* otherwise once resumed, or once the client reads what is queued */
    }
    conn_free(c);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    (void)fd;
    (void)what;
    if (c->job != NULL) {
        return; /* its HA handler thread wakes it */
    }
    if (c->call != NULL) {
        if (kms_api_running(c->call)) {
            return; /* its handler thread wakes it; no audit wait has begun */
        }
        if (kms_api_settle(c->call)) {
            /* one audit device has the lines, another is slow or hung: go on without it
             * (a wake that came meanwhile must not resume the call a second time) */
            mailbox_remove(c);
            resume(c);
            return;
        }
        /* its audit record took longer than audit_timeout: the request fails closed */
        struct kms_http_resp resp;
        abandon(c, &resp);
        complete(c, &resp);
        unpark(c);
        return;
    }
    if (c->req_started && !c->closing) {
        fail_close(c, 408, "request timed out");
        return;
    }
    conn_free(c);
}

static void conn_free(struct conn *c)
{
    struct kms_http *h = c->h;
    if (c->call != NULL) {
        abandon(c, NULL); /* nobody to answer: a handler not yet run never runs */
    }
    if (c->job != NULL) {
        ha_abandon(c);
    }
    flush_remove(c);
    flush_conn(c); /* answers made in this pass still go out, as if written at once */
    if (c->pend != NULL) {
        evbuffer_free(c->pend);
    }
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        h->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    uncount_conn(h);
    kms_http_parser_destroy(&c->parser);
    event_free(c->timer);
    if (c->rev != NULL) {
        event_free(c->rev); /* before the bufferevent closes the socket */
    }
    bufferevent_free(c->bev);
    free(c);
    if (h->stopping && h->nconns == 0) {
        event_base_loopexit(h->base, NULL);
    }
}

/* Wrap an accepted socket (plain or TLS bufferevent) into a connection. */
/* first_ms: the first timer (read_timeout; for TLS what is left of it after the first byte) */
static void conn_start(struct kms_http *h, evutil_socket_t fd, struct bufferevent *bev,
                       const struct sockaddr_storage *ss, int64_t first_ms)
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
    if (h->opts.tls == NULL) {
        c->rev = event_new(h->base, fd, EV_READ | EV_PERSIST, on_readable, c);
    }
    if (c->timer == NULL || (h->opts.tls == NULL && c->rev == NULL) ||
        kms_http_parser_create(h->opts.max_header_size, h->opts.max_body_size, h->opts.body_budget,
                               &c->parser) != 0) {
        if (c->rev != NULL) {
            event_free(c->rev);
        }
        bufferevent_free(c->bev);
        if (c->timer != NULL) {
            event_free(c->timer);
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
    count_conn(h);
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    /* a client that takes none of its queued answer for idle_timeout is closed (a closing
     * connection has no other timer, and its answer may be as large as a batch) */
    struct timeval wtv = {(time_t)h->opts.idle_timeout, 0};
    bufferevent_set_timeouts(c->bev, NULL, &wtv);
    bufferevent_enable(c->bev, c->rev != NULL ? EV_WRITE : EV_READ | EV_WRITE);
    conn_read_enable(c);
    /* a TLS handshake has what is left of read_timeout once its first byte came, as a request
     * has read_timeout (Go bounds both by its read timeout): idle_timeout would make a slow
     * handshake four times cheaper than a slow request, and a fresh read_timeout twice */
    struct timeval ftv = {(time_t)(first_ms / 1000), (suseconds_t)(first_ms % 1000) * 1000};
    evtimer_add(c->timer, &ftv);
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
    struct sniff *prev, *next; /* h->sniffs: a stop closes the ones still waiting */
    int64_t accepted_ms;       /* monotonic */
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sniff_unlink(struct sniff *sn)
{
    if (sn->prev != NULL) {
        sn->prev->next = sn->next;
    } else {
        sn->h->sniffs = sn->next;
    }
    if (sn->next != NULL) {
        sn->next->prev = sn->prev;
    }
}

/* A connection that has sent no byte yet: closed (at a stop, or when the server goes). */
static void sniff_drop(struct sniff *sn)
{
    sniff_unlink(sn);
    event_free(sn->ev);
    evutil_closesocket(sn->fd);
    uncount_conn(sn->h);
    free(sn);
}

static void on_sniff(evutil_socket_t fd, short what, void *arg)
{
    struct sniff *sn = arg;
    struct kms_http *h = sn->h;
    unsigned char first = 0;
    ssize_t n = (what & EV_READ) ? recv(fd, &first, 1, MSG_PEEK) : -1;
    sniff_unlink(sn);
    event_free(sn->ev);
    uncount_conn(h);
    if (n == 1 && first == 0x16) {
        count_conn(h);
        struct bufferevent *bev = kms_tls_bufferevent(h->opts.tls, h->base, fd);
        uncount_conn(h);
        int64_t left = h->opts.read_timeout * 1000 - (mono_ms() - sn->accepted_ms);
        conn_start(h, fd, bev, &sn->ss, left > 1 ? left : 1);
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

/* A connection over the cap: a plain-HTTP client is told why; closed. */
static void refuse_busy(struct kms_http *h, evutil_socket_t fd)
{
    static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: "
                               "application/json\r\nCache-Control: no-store\r\nContent-Length: "
                               "40\r\nConnection: close\r\n\r\n"
                               "{\"errors\":[\"too many open connections\"]}\n";
    if (h->opts.tls == NULL) {
        ssize_t w = send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w;
    }
    evutil_closesocket(fd);
}

/* The server with the fewest connections among h's peers that accept (h itself on a tie). */
static struct kms_http *least_loaded(struct kms_http *h)
{
    struct kms_http *best = h;
    size_t least = atomic_load_explicit(&h->load, memory_order_relaxed);
    for (size_t i = 0; i < h->npeers; i++) {
        struct kms_http *p = h->peers[i];
        if (p == h || atomic_load_explicit(&p->stopping, memory_order_relaxed)) {
            continue;
        }
        size_t n = atomic_load_explicit(&p->load, memory_order_relaxed);
        if (n < least) {
            best = p;
            least = n;
        }
    }
    return best;
}

/* fd given to the server `to` (another worker's); -1 when out of memory (then keep it). */
static int hand_off(struct kms_http *to, evutil_socket_t fd, const struct sockaddr_storage *ss)
{
    struct handoff *g = malloc(sizeof(*g));
    if (g == NULL) {
        return -1;
    }
    g->fd = fd;
    g->ss = *ss;
    atomic_fetch_add_explicit(&to->load, 1, memory_order_relaxed);
    pthread_mutex_lock(&to->mbox_mu);
    g->next = to->handoffs;
    to->handoffs = g;
    pthread_mutex_unlock(&to->mbox_mu);
    event_active(to->mbox_ev, 0, 0);
    return 0;
}

/*
 * accept(2) failed with more than EAGAIN (libevent calls this instead of printing a warning
 * per failure). Out of descriptors (EMFILE, ENFILE) or memory, the listening socket stays
 * readable and the loop would spin on it: the listener rests 5 ms, doubling up to 1 s while
 * it keeps failing (Go's net/http does the same), and says so at most once a second. The
 * connections wait in the backlog meanwhile.
 */
static void on_accept_error(struct evconnlistener *l, void *arg)
{
    struct kms_http *h = arg;
    int e = EVUTIL_SOCKET_ERROR();
    if (e == EINTR || e == ECONNABORTED || e == EPROTO || h->accept_ev == NULL) {
        return; /* this connection only: go on */
    }
    h->accept_pause_ms = h->accept_pause_ms == 0 ? 5 : h->accept_pause_ms * 2;
    if (h->accept_pause_ms > 1000) {
        h->accept_pause_ms = 1000;
    }
    int64_t now = mono_ms();
    if (h->accept_logged_ms == 0 || now - h->accept_logged_ms >= 1000) {
        char pause[24];
        snprintf(pause, sizeof(pause), "%lldms", (long long)h->accept_pause_ms);
        if (h->opts.log != NULL) {
            h->opts.log("error", "cannot accept connections; pausing", strerror(e), pause);
        }
        h->accept_logged_ms = now;
    }
    evconnlistener_disable(l);
    struct timeval tv = {(time_t)(h->accept_pause_ms / 1000),
                         (suseconds_t)(h->accept_pause_ms % 1000) * 1000};
    event_add(h->accept_ev, &tv);
}

static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
    struct kms_http *h = arg;
    (void)fd;
    (void)what;
    if (h->listener != NULL && !h->stopping) {
        evconnlistener_enable(h->listener);
    }
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    struct kms_http *h = arg;
    struct kms_http *to = least_loaded(h);
    struct sockaddr_storage ss;
    (void)l;

    h->accept_pause_ms = 0;
    if (atomic_load_explicit(&to->load, memory_order_relaxed) >= h->opts.max_connections) {
        refuse_busy(h, fd); /* the emptiest is full: every worker is */
        return;
    }
    memset(&ss, 0, sizeof(ss));
    memcpy(&ss, sa, (size_t)salen < sizeof(ss) ? (size_t)salen : sizeof(ss));
    if (to != h && hand_off(to, fd, &ss) == 0) {
        return;
    }
    accept_here(h, fd, &ss);
}

/* Serve the accepted socket fd on h's loop. */
static void accept_here(struct kms_http *h, evutil_socket_t fd, const struct sockaddr_storage *ss)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (h->opts.tls == NULL) {
        /* a fresh connection has read_timeout for its first request, as Go's server reads
         * it (idle_timeout is the wait between requests): a client that connects and sends
         * nothing held its slot for idle_timeout, 120 s by default */
        conn_start(h, fd, bufferevent_socket_new(h->base, fd, BEV_OPT_CLOSE_ON_FREE), ss,
                   h->opts.read_timeout * 1000);
        return;
    }
    struct sniff *sn = calloc(1, sizeof(*sn));
    if (sn == NULL) {
        evutil_closesocket(fd);
        return;
    }
    sn->h = h;
    sn->fd = fd;
    sn->ss = *ss;
    sn->accepted_ms = mono_ms();
    sn->ev = event_new(h->base, fd, EV_READ, on_sniff, sn);
    if (sn->ev == NULL) {
        free(sn);
        evutil_closesocket(fd);
        return;
    }
    struct timeval tv = {(time_t)h->opts.read_timeout, 0};
    count_conn(h); /* counted while waiting for its first byte */
    sn->next = h->sniffs;
    if (h->sniffs != NULL) {
        h->sniffs->prev = sn;
    }
    h->sniffs = sn;
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
    /* digits only: strtol alone took "127.0.0.1: 80" and "+80" */
    size_t digits = strspn(colon + 1, "0123456789");
    if (digits == 0 || digits > 5 || colon[1 + digits] != '\0') {
        return -1;
    }
    long port = strtol(colon + 1, NULL, 10);
    if (port > 65535) {
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
    h->audit_timeout_ms = api != NULL ? kms_api_audit_timeout_ms(api) : 10000;
    pthread_mutex_init(&h->mbox_mu, NULL);
    h->mbox_ev = event_new(base, -1, 0, on_mailbox, h);
    h->flush_ev = event_new(base, -1, 0, on_flush, h);     /* NULL: answers take the bufferevent */
    h->accept_ev = evtimer_new(base, on_accept_resume, h); /* NULL: no rest (libevent's) */
    h->listener = evconnlistener_new(base, on_accept, h, LEV_OPT_CLOSE_ON_FREE, -1, listen_fd);
    if (h->listener != NULL) {
        evconnlistener_set_error_cb(h->listener, on_accept_error);
    }
    if (h->listener == NULL || h->mbox_ev == NULL) {
        if (h->listener != NULL) {
            evconnlistener_free(h->listener);
        } else {
            close(listen_fd);
        }
        if (h->mbox_ev != NULL) {
            event_free(h->mbox_ev);
        }
        if (h->flush_ev != NULL) {
            event_free(h->flush_ev);
        }
        if (h->accept_ev != NULL) {
            event_free(h->accept_ev);
        }
        pthread_mutex_destroy(&h->mbox_mu);
        free(h);
        return kms_err_set(err, 500, "cannot watch the listening socket");
    }
    *out = h;
    return 0;
}

void kms_http_share_accepts(struct kms_http *const *all, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        all[i]->peers = all;
        all[i]->npeers = n;
    }
}

void kms_http_stop_accepting(struct kms_http *h)
{
    h->stopping = true;
    if (h->listener != NULL) {
        evconnlistener_free(h->listener);
        h->listener = NULL;
    }
    if (h->accept_ev != NULL) {
        evtimer_del(h->accept_ev); /* a resting listener would keep the loop running */
    }
    /*
     * Idle connections close now (once their answers are sent), and so do those that have sent
     * nothing yet (a TCP probe on a TLS listener held the stop for the whole grace); busy or
     * paused ones after their current request, which dispatch answers with Connection: close.
     */
    while (h->sniffs != NULL) {
        sniff_drop(h->sniffs);
    }
    struct conn *c = h->conns;
    while (c != NULL) {
        struct conn *next = c->next;
        if (!c->req_started && !c->paused && !c->closing) {
            if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
                conn_free(c);
            } else {
                conn_close_after_write(c);
            }
        }
        c = next;
    }
    if (h->nconns == 0) {
        event_base_loopexit(h->base, NULL);
    }
}

size_t kms_http_connections(const struct kms_http *h)
{
    return atomic_load_explicit(&h->load, memory_order_relaxed);
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
    while (h->sniffs != NULL) {
        sniff_drop(h->sniffs);
    }
    if (h->listener != NULL) {
        evconnlistener_free(h->listener);
    }
    while (h->handoffs != NULL) { /* given to it after its loop ended */
        struct handoff *g = h->handoffs;
        h->handoffs = g->next;
        evutil_closesocket(g->fd);
        free(g);
    }
    event_free(h->mbox_ev);
    if (h->flush_ev != NULL) {
        event_free(h->flush_ev);
    }
    if (h->accept_ev != NULL) {
        event_free(h->accept_ev);
    }
    pthread_mutex_destroy(&h->mbox_mu);
    free(h);
    *hp = NULL;
}
