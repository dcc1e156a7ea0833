/*
 * grpc.c - unary gRPC calls over one HTTP/2 server session (libnghttp2). nghttp2 does all of
 * HTTP/2; this file checks each request's :method, :path, content-type and grpc-timeout,
 * collects its DATA into one gRPC message (1-byte compressed flag, 4-byte big-endian length,
 * the message), hands complete calls to the owner and writes the answer: HEADERS, one
 * length-prefixed message in DATA, then the grpc-status trailers; or, for an error, one
 * trailers-only HEADERS frame with grpc-status and a percent-encoded grpc-message.
 *
 * Deadlines: a request's grpc-timeout sets its deadline when its HEADERS arrive (as grpc-go
 * does). A call whose deadline has passed when its request is complete is answered
 * DEADLINE_EXCEEDED and never handed over; one handed over and still unanswered at its
 * deadline is answered DEADLINE_EXCEEDED by kms_h2_expire (the owner's timer calls it), and its
 * owner's answer, if it comes, is dropped. A malformed grpc-timeout is refused as grpc-go
 * refuses it, when the request's HEADERS end: HTTP status 400, grpc-status INTERNAL,
 * "malformed grpc-timeout: ...", then RST_STREAM NO_ERROR if the request is still coming.
 */
#include "kmsplugin/kmsplugin_int.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>

#define MAX_STREAMS 1000
#define MAX_HEADER_LIST 16384
/* Request bytes buffered for calls not yet complete: per connection, and for every connection
 * of the process together. A call past either is answered RESOURCE_EXHAUSTED at its end and
 * buffers nothing more, so clients that open streams and never finish them cannot grow the
 * process without bound. */
#define MAX_BUFFERED_CONN (4u << 20)
#define MAX_BUFFERED_ALL (64u << 20)
/* Streams open on every connection of the process together (each holds about 400 bytes of
 * nghttp2's and this file's state, with or without a byte of request): past it, a new stream
 * is refused with RST_STREAM REFUSED_STREAM (a gRPC client retries it), so 1024 connections
 * of 1000 unfinished requests each cannot hold 400 MB for the 10 s before they are reset. */
#define MAX_STREAMS_ALL 16384

static atomic_size_t buffered_all;
static atomic_size_t streams_all;
#define GRPC_PREFIX 5

struct stream {
    struct stream *prev, *next; /* the session's streams (freed with it) */
    int32_t id;
    int method; /* -1: unknown :path */
    bool post;
    bool grpc_ct;     /* content-type application/grpc[+proto|;...] */
    bool too_big;     /* more DATA than a message may have */
    bool answered;    /* kms_h2_answer was called (or an error was submitted) */
    bool called;      /* handed to on_call */
    bool over_budget; /* past MAX_BUFFERED_*: answered RESOURCE_EXHAUSTED at its end */
    bool rst_after;   /* answered before its request was complete: RST_STREAM once sent */
    bool reset;       /* RST_STREAM submitted by kms_h2_reset_stalled */
    uint8_t *body;    /* the DATA received */
    size_t len, cap;
    uint8_t *resp; /* prefix + message to send */
    size_t resp_len, resp_off;
    int64_t started_ms;      /* its HEADERS (kms_plugin_mono_ms) */
    int64_t answered_ms;     /* its answer submitted (kms_plugin_mono_ms) */
    void *call;              /* on_call's handle of it, until its owner answers it */
    int64_t deadline_ms;     /* from its grpc-timeout (h->now_ms); KMS_PLUGIN_NO_DEADLINE: none */
    const char *timeout_err; /* a malformed grpc-timeout: why (refused when the HEADERS end) */
};

struct kms_h2 {
    nghttp2_session *s;
    kms_h2_call_fn on_call;
    kms_h2_cancel_fn on_cancel;
    kms_h2_send_fn send;
    void *arg;
    size_t open;
    size_t buffered;        /* the caps of the streams' request buffers */
    struct stream *streams; /* every stream struct not yet freed */
    /* Stopping (kms_h2_goaway): the shutdown notice submitted, the PING sent after it, its ACK
     * received, the final GOAWAY submitted. */
    bool notice_sent, ping_sent, ping_acked, final_sent;
    bool failed;
    bool in_recv;            /* inside nghttp2_session_mem_recv: sending waits until it returns */
    bool greeted;            /* the client's preface and first SETTINGS frame are in */
    int64_t (*now_ms)(void); /* the clock of deadlines */
    int64_t new_deadline;    /* the earliest deadline set since kms_h2_new_deadline */
};

static void stream_free(struct kms_h2 *h, struct stream *st)
{
    if (st == NULL) {
        return;
    }
    if (st->prev != NULL) {
        st->prev->next = st->next;
    } else {
        h->streams = st->next;
    }
    if (st->next != NULL) {
        st->next->prev = st->prev;
    }
    h->open--;
    atomic_fetch_sub(&streams_all, 1);
    h->buffered -= st->cap;
    atomic_fetch_sub(&buffered_all, st->cap);
    kms_free_wipe((void **)&st->body, st->cap);
    kms_free_wipe((void **)&st->resp, st->resp_len);
    free(st);
}

static ssize_t on_send(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *ud)
{
    struct kms_h2 *h = ud;
    (void)s;
    (void)flags;
    if (h->send(h->arg, data, len) != 0) {
        h->failed = true;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return (ssize_t)len;
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    struct kms_h2 *h = ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) {
        return 0;
    }
    if (atomic_fetch_add(&streams_all, 1) >= MAX_STREAMS_ALL) {
        /* refused before anything is kept for it: no stream struct, so every callback ignores
         * the rest of it, and nghttp2 closes it once the RST_STREAM is out */
        atomic_fetch_sub(&streams_all, 1);
        return nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id,
                                         NGHTTP2_REFUSED_STREAM) == 0
                   ? 0
                   : NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    struct stream *st = calloc(1, sizeof(*st));
    if (st == NULL) {
        atomic_fetch_sub(&streams_all, 1);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* RST_STREAM this one */
    }
    st->id = f->hd.stream_id;
    st->method = -1;
    st->started_ms = kms_plugin_mono_ms();
    st->deadline_ms = KMS_PLUGIN_NO_DEADLINE;
    if (nghttp2_session_set_stream_user_data(s, st->id, st) != 0) {
        free(st);
        atomic_fetch_sub(&streams_all, 1);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    st->next = h->streams;
    if (h->streams != NULL) {
        h->streams->prev = st;
    }
    h->streams = st;
    h->open++;
    return 0;
}

int kms_grpc_timeout_parse(const uint8_t *v, size_t len, int64_t *ms, const char **why)
{
    /* grpc-go's order of checks: the length, the unit, the digits */
    if (len < 2) {
        *why = "too short (1 to 8 digits and a unit)";
        return -1;
    }
    if (len > 9) {
        *why = "too long (at most 8 digits and a unit)";
        return -1;
    }
    int64_t unit_ns;
    switch (v[len - 1]) {
    case 'H':
        unit_ns = 3600000000000;
        break;
    case 'M':
        unit_ns = 60000000000;
        break;
    case 'S':
        unit_ns = 1000000000;
        break;
    case 'm':
        unit_ns = 1000000;
        break;
    case 'u':
        unit_ns = 1000;
        break;
    case 'n':
        unit_ns = 1;
        break;
    default:
        *why = "unknown unit (one of H, M, S, m, u, n)";
        return -1;
    }
    int64_t n = 0;
    for (size_t i = 0; i + 1 < len; i++) {
        if (v[i] < '0' || v[i] > '9') {
            *why = "not a number (1 to 8 digits and a unit)";
            return -1;
        }
        n = n * 10 + (v[i] - '0');
    }
    /* at most 99999999 units: 99999999 H is 3.6e14 ms, far inside int64; in whole ms, rounded
     * up so that no timeout is cut short */
    *ms = unit_ns >= 1000000 ? n * (unit_ns / 1000000) : (n * unit_ns + 999999) / 1000000;
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    struct kms_h2 *h = ud;
    (void)flags;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) {
        return 0;
    }
    struct stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (st == NULL) {
        return 0;
    }
    if (namelen == 5 && memcmp(name, ":path", 5) == 0) {
        st->method = kms_plugin_method_of((const char *)value, valuelen);
    } else if (namelen == 7 && memcmp(name, ":method", 7) == 0) {
        st->post = valuelen == 4 && memcmp(value, "POST", 4) == 0;
    } else if (namelen == 12 && memcmp(name, "content-type", 12) == 0) {
        /* "application/grpc", "application/grpc+proto", "application/grpc;..." */
        st->grpc_ct = valuelen >= 16 && memcmp(value, "application/grpc", 16) == 0 &&
                      (valuelen == 16 || value[16] == '+' || value[16] == ';');
    } else if (namelen == 12 && memcmp(name, "grpc-timeout", 12) == 0) {
        /* given twice: the last one counts, a malformed one anywhere refuses (grpc-go) */
        int64_t ms = 0;
        const char *why = NULL;
        if (kms_grpc_timeout_parse(value, valuelen, &ms, &why) != 0) {
            st->timeout_err = why;
        } else {
            int64_t now = h->now_ms();
            st->deadline_ms = ms < KMS_PLUGIN_NO_DEADLINE - now ? now + ms : KMS_PLUGIN_NO_DEADLINE;
            if (st->deadline_ms < h->new_deadline) {
                h->new_deadline = st->deadline_ms;
            }
        }
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t stream_id, const uint8_t *data,
                         size_t len, void *ud)
{
    (void)flags;
    struct kms_h2 *h = ud;
    struct stream *st = nghttp2_session_get_stream_user_data(s, stream_id);
    if (st == NULL || st->too_big || st->over_budget) {
        return 0;
    }
    if (st->len + len > (size_t)KMS_PLUGIN_MESSAGE_MAX + GRPC_PREFIX) {
        st->too_big = true; /* answered RESOURCE_EXHAUSTED at the end of the stream */
        return 0;
    }
    if (st->len + len > st->cap) {
        size_t cap = st->cap ? st->cap : 256;
        while (cap < st->len + len) {
            cap *= 2;
        }
        size_t more = cap - st->cap;
        if (h->buffered + more > MAX_BUFFERED_CONN ||
            atomic_fetch_add(&buffered_all, more) + more > MAX_BUFFERED_ALL) {
            if (h->buffered + more <= MAX_BUFFERED_CONN) {
                atomic_fetch_sub(&buffered_all, more);
            }
            st->over_budget = true;
            return 0;
        }
        h->buffered += more;
        uint8_t *grown = malloc(cap);
        if (grown == NULL) {
            h->buffered -= more;
            atomic_fetch_sub(&buffered_all, more);
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        if (st->len > 0) {
            memcpy(grown, st->body, st->len);
        }
        kms_free_wipe((void **)&st->body, st->cap);
        st->body = grown;
        st->cap = cap;
    }
    memcpy(st->body + st->len, data, len);
    st->len += len;
    return 0;
}

/* grpc-message: percent-encoded outside printable ASCII and '%' (the gRPC HTTP/2 spec). */
static void pct_encode(const char *in, char *out, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t j = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p != '\0' && j + 4 < n; p++) {
        if (*p >= 0x20 && *p <= 0x7e && *p != '%') {
            out[j++] = (char)*p;
        } else {
            out[j++] = '%';
            out[j++] = hex[*p >> 4];
            out[j++] = hex[*p & 15];
        }
    }
    out[j] = '\0';
}

#define NV(n, v)                                                                                   \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NO_COPY_NAME     \
    }

/* A trailers-only answer; with another HTTP status than 200, a plain one unless msg is given. */
static int submit_error(struct kms_h2 *h, struct stream *st, int http_status, int code,
                        const char *msg)
{
    char status[8], codes[8], enc[600];
    snprintf(status, sizeof(status), "%d", http_status);
    snprintf(codes, sizeof(codes), "%d", code);
    pct_encode(msg != NULL ? msg : "", enc, sizeof(enc));
    nghttp2_nv nva[] = {
        NV(":status", status),
        NV("content-type", "application/grpc"),
        NV("grpc-status", codes),
        NV("grpc-message", enc),
    };
    st->answered = true;
    st->answered_ms = kms_plugin_mono_ms();
    size_t n = http_status == 200 || msg != NULL ? 4 : 1;
    if (n == 4 && enc[0] == '\0') {
        n = 3;
    }
    return nghttp2_submit_response(h->s, st->id, nva, n, NULL);
}

static ssize_t read_resp(nghttp2_session *s, int32_t stream_id, uint8_t *buf, size_t len,
                         uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    struct stream *st = src->ptr;
    (void)ud;
    size_t left = st->resp_len - st->resp_off;
    size_t n = left < len ? left : len;
    memcpy(buf, st->resp + st->resp_off, n);
    st->resp_off += n;
    if (st->resp_off == st->resp_len) {
        *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        nghttp2_nv tr[] = {NV("grpc-status", "0")};
        if (nghttp2_submit_trailer(s, stream_id, tr, 1) != 0) {
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
    }
    return (ssize_t)n;
}

/* A call of a known method refused here, before it could run: counted in the call metrics. */
static int refuse(struct kms_h2 *h, struct stream *st, int code, const char *msg)
{
    if (st->method >= 0) {
        kms_plugin_metrics_refused((enum kms_plugin_method)st->method, code);
    }
    return submit_error(h, st, 200, code, msg);
}

/* The checks of a request's HEADERS alone: 1 when they refuse it (answered: HTTP 415 for what
 * is not a gRPC POST, 400 for a malformed grpc-timeout, as grpc-go answers them), 0 when they
 * pass, -1 when the answer could not be submitted. */
static int headers_refused(struct kms_h2 *h, struct stream *st)
{
    if (!st->post || !st->grpc_ct) {
        return submit_error(h, st, 415, KMS_GRPC_INTERNAL, NULL) != 0 ? -1 : 1;
    }
    if (st->timeout_err != NULL) {
        /* as grpc-go answers it: HTTP 400 with grpc-status INTERNAL */
        char m[128];
        snprintf(m, sizeof(m), "malformed grpc-timeout: %s", st->timeout_err);
        if (st->method >= 0) {
            kms_plugin_metrics_refused((enum kms_plugin_method)st->method, KMS_GRPC_INTERNAL);
        }
        return submit_error(h, st, 400, KMS_GRPC_INTERNAL, m) != 0 ? -1 : 1;
    }
    return 0;
}

/* The end of a request stream: check it and hand the call over, or answer the error. */
static int request_done(struct kms_h2 *h, struct stream *st)
{
    int rc = headers_refused(h, st);
    if (rc != 0) {
        return rc < 0 ? -1 : 0;
    }
    if (st->method < 0) {
        return refuse(h, st, KMS_GRPC_UNIMPLEMENTED,
                      "unknown method: this server serves v2.KeyManagementService");
    }
    if (st->too_big) {
        return refuse(h, st, KMS_GRPC_RESOURCE_EXHAUSTED,
                      "request message larger than 65536 bytes");
    }
    if (st->over_budget) {
        return refuse(h, st, KMS_GRPC_RESOURCE_EXHAUSTED,
                      "too many request bytes buffered for unfinished calls; retry");
    }
    if (st->len < GRPC_PREFIX) {
        return refuse(h, st, KMS_GRPC_INTERNAL, "protocol error: no request message in the stream");
    }
    uint32_t mlen = (uint32_t)st->body[1] << 24 | (uint32_t)st->body[2] << 16 |
                    (uint32_t)st->body[3] << 8 | st->body[4];
    if (st->body[0] != 0) {
        return refuse(h, st, KMS_GRPC_UNIMPLEMENTED,
                      "compressed messages are not supported (grpc-encoding identity)");
    }
    if ((size_t)mlen != st->len - GRPC_PREFIX) {
        return refuse(h, st, KMS_GRPC_INTERNAL,
                      "protocol error: a unary call carries exactly one message");
    }
    if (st->deadline_ms != KMS_PLUGIN_NO_DEADLINE && h->now_ms() >= st->deadline_ms) {
        return refuse(h, st, KMS_GRPC_DEADLINE_EXCEEDED, "deadline exceeded before the call ran");
    }
    uint8_t *msg = malloc(mlen ? mlen : 1);
    if (msg == NULL) {
        return refuse(h, st, KMS_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    }
    memcpy(msg, st->body + GRPC_PREFIX, mlen);
    kms_memzero(st->body, st->len);
    st->called = true;
    st->call = h->on_call(h->arg, h, st->id, (enum kms_plugin_method)st->method, msg, mlen,
                          st->deadline_ms);
    return 0;
}

/* The PING sent after the shutdown notice: its ACK means every stream begun before is here. */
static const uint8_t stop_ping[8] = {'k', 'm', 's', 'd', 's', 't', 'o', 'p'};

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    struct kms_h2 *h = ud;
    if (f->hd.type == NGHTTP2_SETTINGS && !(f->hd.flags & NGHTTP2_FLAG_ACK)) {
        h->greeted = true;
        return 0;
    }
    if (f->hd.type == NGHTTP2_PING && (f->hd.flags & NGHTTP2_FLAG_ACK) && h->ping_sent &&
        memcmp(f->ping.opaque_data, stop_ping, sizeof stop_ping) == 0) {
        h->ping_acked = true; /* the final GOAWAY goes once this input is processed */
        return 0;
    }
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST &&
        !(f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        /* the HEADERS of a request whose message is to follow: what they alone refuse is
         * answered now, as grpc-go does, and the stream reset once the answer is out (no more
         * of the request is wanted; on_frame_send) */
        struct stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
        if (st == NULL || st->answered) {
            return 0;
        }
        int rc = headers_refused(h, st);
        if (rc < 0) {
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        st->rst_after = rc > 0;
        return 0;
    }
    if ((f->hd.type != NGHTTP2_DATA && f->hd.type != NGHTTP2_HEADERS) ||
        !(f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        return 0;
    }
    struct stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (st == NULL || st->answered) {
        return 0;
    }
    if (request_done(h, st) != 0) {
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t stream_id, uint32_t error_code, void *ud)
{
    struct kms_h2 *h = ud;
    (void)error_code;
    struct stream *st = nghttp2_session_get_stream_user_data(s, stream_id);
    if (st != NULL) {
        if (st->called && !st->answered && h->on_cancel != NULL) {
            /* reset by the client while its call waits */
            h->on_cancel(h->arg, stream_id, st->call, KMS_GRPC_CANCELLED);
        }
        nghttp2_session_set_stream_user_data(s, stream_id, NULL);
        stream_free(h, st);
    }
    return 0;
}

/* The shutdown notice is out: now the PING (nghttp2 sends PINGs ahead of a queued GOAWAY). An
 * answer given before its request was complete is out: now the RST_STREAM. */
static int on_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    struct kms_h2 *h = ud;
    if (f->hd.type == NGHTTP2_HEADERS && (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        struct stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
        if (st != NULL && st->rst_after) {
            st->rst_after = false;
            if (nghttp2_session_get_stream_remote_close(s, st->id) != 0) {
                return 0; /* the request ended meanwhile: nothing to reset */
            }
            if (nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR) != 0) {
                return NGHTTP2_ERR_CALLBACK_FAILURE;
            }
        }
        return 0;
    }
    if (f->hd.type == NGHTTP2_GOAWAY && h->notice_sent && !h->ping_sent && !h->final_sent) {
        h->ping_sent = true;
        if (nghttp2_submit_ping(s, NGHTTP2_FLAG_NONE, stop_ping) != 0) {
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
    }
    return 0;
}

int kms_h2_create(kms_h2_call_fn on_call, kms_h2_cancel_fn on_cancel, kms_h2_send_fn send,
                  void *arg, struct kms_h2 **out)
{
    nghttp2_session_callbacks *cbs = NULL;
    nghttp2_option *opt = NULL;
    struct kms_h2 *h = calloc(1, sizeof(*h));
    *out = NULL;
    if (h == NULL || nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&opt) != 0) {
        goto fail;
    }
    h->on_call = on_call;
    h->on_cancel = on_cancel;
    h->send = send;
    h->arg = arg;
    h->now_ms = kms_plugin_mono_ms;
    h->new_deadline = KMS_PLUGIN_NO_DEADLINE;
    nghttp2_session_callbacks_set_send_callback(cbs, on_send);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_option_set_max_send_header_block_length(opt, MAX_HEADER_LIST);
    /* nghttp2 keeps closed streams for RFC 7540 priorities (up to the concurrent-stream limit
     * per connection, ~280 bytes each): gRPC has no use for them, and 1024 connections of 1000
     * finished calls each held 280 MB */
    nghttp2_option_set_no_closed_streams(opt, 1);
    if (nghttp2_session_server_new2(&h->s, cbs, h, opt) != 0) {
        goto fail;
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, MAX_STREAMS},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST},
    };
    if (nghttp2_submit_settings(h->s, NGHTTP2_FLAG_NONE, iv, 2) != 0) {
        goto fail;
    }
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    *out = h;
    return 0;
fail:
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    kms_h2_destroy(&h);
    return -1;
}

void kms_h2_destroy(struct kms_h2 **hp)
{
    struct kms_h2 *h = *hp;
    if (h == NULL) {
        return;
    }
    if (h->s != NULL) {
        nghttp2_session_del(h->s); /* calls no on_stream_close: the list below frees them */
    }
    while (h->streams != NULL) {
        stream_free(h, h->streams);
    }
    free(h);
    *hp = NULL;
}

void kms_h2_set_clock(struct kms_h2 *h, int64_t (*now_ms)(void))
{
    h->now_ms = now_ms;
}

static int flush(struct kms_h2 *h)
{
    if (h->in_recv) {
        return 0;
    }
    if (nghttp2_session_send(h->s) != 0 || h->failed) {
        return -1;
    }
    return 0;
}

/* The final GOAWAY names the last stream received so far; it is sent before any more input
 * is read, so no stream it leaves out has been handed over as a call. */
static int submit_final_goaway(struct kms_h2 *h)
{
    h->final_sent = true;
    return nghttp2_submit_goaway(h->s, NGHTTP2_FLAG_NONE,
                                 nghttp2_session_get_last_proc_stream_id(h->s), NGHTTP2_NO_ERROR,
                                 NULL, 0);
}

int kms_h2_recv(struct kms_h2 *h, const uint8_t *in, size_t len)
{
    h->in_recv = true;
    ssize_t n = nghttp2_session_mem_recv(h->s, in, len);
    h->in_recv = false;
    if (n < 0 || (size_t)n != len || h->failed) {
        return -1;
    }
    if (h->ping_acked && !h->final_sent && submit_final_goaway(h) != 0) {
        return -1;
    }
    return flush(h);
}

int kms_h2_answer(struct kms_h2 *h, int32_t stream_id, int code, const uint8_t *resp,
                  size_t resp_len, const char *msg)
{
    struct stream *st = nghttp2_session_get_stream_user_data(h->s, stream_id);
    if (st != NULL) {
        st->call = NULL; /* the owner is done with it: its handle may go */
    }
    if (st == NULL || st->answered) {
        return 0; /* the client went away (RST_STREAM or closed connection) */
    }
    if (code != KMS_GRPC_OK) {
        if (submit_error(h, st, 200, code, msg) != 0) {
            return -1;
        }
        return flush(h);
    }
    st->resp = malloc(resp_len + GRPC_PREFIX);
    if (st->resp == NULL) {
        if (submit_error(h, st, 200, KMS_GRPC_RESOURCE_EXHAUSTED, "out of memory") != 0) {
            return -1;
        }
        return flush(h);
    }
    st->resp[0] = 0;
    st->resp[1] = (uint8_t)(resp_len >> 24);
    st->resp[2] = (uint8_t)(resp_len >> 16);
    st->resp[3] = (uint8_t)(resp_len >> 8);
    st->resp[4] = (uint8_t)resp_len;
    if (resp_len > 0) {
        memcpy(st->resp + GRPC_PREFIX, resp, resp_len);
    }
    st->resp_len = resp_len + GRPC_PREFIX;
    st->answered = true;
    st->answered_ms = kms_plugin_mono_ms();
    nghttp2_nv nva[] = {NV(":status", "200"), NV("content-type", "application/grpc")};
    nghttp2_data_provider prd;
    prd.source.ptr = st;
    prd.read_callback = read_resp;
    if (nghttp2_submit_response(h->s, stream_id, nva, 2, &prd) != 0) {
        return -1;
    }
    return flush(h);
}

/*
 * A graceful GOAWAY in two steps (RFC 9113 6.8). First a shutdown notice (last stream 2^31-1:
 * no new calls, every call already sent is still served), then a PING; once its ACK is back,
 * every stream the client began before it saw the notice has arrived, and the final GOAWAY
 * names the last one. Naming the last stream at once would catch calls still on the wire: the
 * client cancels those with RST_STREAM, which on a stream the server never saw is a connection
 * error (nghttp2 ends the session), and the answers of every call being served are lost.
 */
void kms_h2_goaway(struct kms_h2 *h)
{
    if (h->notice_sent || h->final_sent) {
        return;
    }
    h->notice_sent = true;
    if (nghttp2_submit_shutdown_notice(h->s) != 0) {
        (void)submit_final_goaway(h); /* cannot do it gracefully: the last stream now */
    }
    (void)flush(h);
}

int kms_h2_goaway_final(struct kms_h2 *h)
{
    if (!h->notice_sent || h->final_sent) {
        return 0;
    }
    if (submit_final_goaway(h) != 0) {
        return -1;
    }
    return flush(h);
}

size_t kms_h2_open_streams(const struct kms_h2 *h)
{
    return h->open;
}

int kms_h2_reset_stalled(struct kms_h2 *h, int64_t before_ms)
{
    for (struct stream *st = h->streams; st != NULL; st = st->next) {
        if (st->reset) {
            continue;
        }
        /* a request not complete in time; or an answer not out in time, the client keeping its
         * flow-control window shut (or the answer not sent at all): the stream would stay open,
         * its buffers held, as long as the connection lives */
        bool request = !st->called && !st->answered && st->started_ms < before_ms;
        bool answer = st->answered && st->answered_ms < before_ms;
        if (request || answer) {
            st->answered = true; /* nothing more for it; its buffers go when it closes */
            st->reset = true;
            if (nghttp2_submit_rst_stream(h->s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL) != 0) {
                return -1;
            }
        }
    }
    return flush(h);
}

int kms_h2_expire(struct kms_h2 *h, int64_t *next_ms)
{
    static const char late[] = "deadline exceeded: no answer within the call's grpc-timeout";
    int64_t now = h->now_ms();
    *next_ms = KMS_PLUGIN_NO_DEADLINE;
    for (struct stream *st = h->streams; st != NULL; st = st->next) {
        if (st->answered || st->deadline_ms == KMS_PLUGIN_NO_DEADLINE) {
            continue;
        }
        if (st->deadline_ms > now) {
            if (st->deadline_ms < *next_ms) {
                *next_ms = st->deadline_ms;
            }
            continue;
        }
        if (st->called) {
            /* the call waits for a call thread or runs: it is not run, or its answer dropped,
             * and counted by whoever takes it */
            if (h->on_cancel != NULL) {
                h->on_cancel(h->arg, st->id, st->call, KMS_GRPC_DEADLINE_EXCEEDED);
            }
            if (submit_error(h, st, 200, KMS_GRPC_DEADLINE_EXCEEDED, late) != 0) {
                return -1;
            }
            continue;
        }
        /* its request is still incomplete: the answer, then RST_STREAM NO_ERROR, as grpc-go
         * ends a call it answers early (RFC 9113 8.1: the rest of the request is not wanted).
         * The reset is submitted once the answer is out (on_frame_send): nghttp2 drops what is
         * still queued for a stream being reset */
        if (refuse(h, st, KMS_GRPC_DEADLINE_EXCEEDED, late) != 0) {
            return -1;
        }
        st->rst_after = true;
    }
    return flush(h);
}

int64_t kms_h2_new_deadline(struct kms_h2 *h)
{
    int64_t d = h->new_deadline;
    h->new_deadline = KMS_PLUGIN_NO_DEADLINE;
    return d;
}

bool kms_h2_greeted(const struct kms_h2 *h)
{
    return h->greeted;
}

bool kms_h2_done(const struct kms_h2 *h)
{
    return nghttp2_session_want_read(h->s) == 0 && nghttp2_session_want_write(h->s) == 0;
}
