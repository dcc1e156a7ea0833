/*
 * test_http.c - unit tests for the HTTP/1.1 request parser in server/http.c, driven without
 * sockets: request lines, header fields, limits, Content-Length and chunked bodies, trailers,
 * Expect: 100-continue, keep-alive, pipelining, and every refusal of lenient framing (RFC
 * 9112) with its status.
 *
 * Every input is parsed twice, all at once and one byte at a time, and both runs must give
 * the same requests and the same refusal: the parser may not depend on how TCP splits bytes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/server/http_feed.h"

#define MAX_REQS 8
#define HEAD_MAX 1024
#define BODY_MAX 4096

struct parsed {
    char method[32];
    char target[256];
    char headers[2048]; /* "name=value\n" for each field */
    char body[BODY_MAX + 1];
    size_t body_len;
    bool keepalive;
};

struct result {
    struct parsed req[MAX_REQS];
    struct kms_feed_result r;
};

static void record(struct kms_http_parser *p, const struct kms_http_req *req, void *ctx)
{
    struct result *res = ctx;
    assert_true(res->r.nreq <= MAX_REQS);
    struct parsed *o = &res->req[res->r.nreq - 1];
    snprintf(o->method, sizeof(o->method), "%s", req->method);
    snprintf(o->target, sizeof(o->target), "%s", req->target);
    size_t off = 0;
    for (size_t i = 0; i < req->nheaders; i++) {
        int w = snprintf(o->headers + off, sizeof(o->headers) - off, "%s=%s\n",
                         req->headers[i].name, req->headers[i].value);
        assert_true(w > 0 && (size_t)w < sizeof(o->headers) - off);
        off += (size_t)w;
    }
    assert_true(req->body_len <= BODY_MAX);
    if (req->body_len > 0) {
        memcpy(o->body, req->body, req->body_len);
    }
    o->body_len = req->body_len;
    o->keepalive = kms_http_parser_keepalive(p);
}

static void same(const struct result *a, const struct result *b)
{
    assert_int_equal(a->r.nreq, b->r.nreq);
    assert_int_equal(a->r.ncontinue, b->r.ncontinue);
    assert_int_equal(a->r.status, b->r.status);
    assert_string_equal(a->r.msg, b->r.msg);
    assert_int_equal(a->r.idle, b->r.idle);
    for (size_t i = 0; i < a->r.nreq; i++) {
        assert_string_equal(a->req[i].method, b->req[i].method);
        assert_string_equal(a->req[i].target, b->req[i].target);
        assert_string_equal(a->req[i].headers, b->req[i].headers);
        assert_int_equal(a->req[i].body_len, b->req[i].body_len);
        assert_memory_equal(a->req[i].body, b->req[i].body, a->req[i].body_len);
        assert_int_equal(a->req[i].keepalive, b->req[i].keepalive);
    }
}

/* Parse whole and byte by byte; both must agree. Returns the whole-input result. */
static const struct kms_feed_result *parse_n(const char *data, size_t len, size_t head_max,
                                             const struct parsed **reqs)
{
    static struct result whole, bytewise;
    memset(&whole, 0, sizeof(whole));
    memset(&bytewise, 0, sizeof(bytewise));
    kms_feed(data, len, 1, head_max, BODY_MAX, record, &bytewise, &bytewise.r);
    kms_feed(data, len, 0, head_max, BODY_MAX, record, &whole, &whole.r);
    same(&whole, &bytewise);
    if (reqs != NULL) {
        *reqs = whole.req;
    }
    return &whole.r;
}

static const struct parsed *rq; /* the requests of the last PARSE */

#define PARSE(lit) parse_n(lit, sizeof(lit) - 1, HEAD_MAX, &rq)

/* An input refused with `status` and a message containing `part`. */
struct refusal {
    const char *raw;
    size_t len;
    int status;
    const char *part;
};

#define R(lit, status, part)                                                                       \
    {                                                                                              \
        lit, sizeof(lit) - 1, status, part                                                         \
    }

static void refused(const struct refusal *c)
{
    const struct kms_feed_result *r = parse_n(c->raw, c->len, HEAD_MAX, NULL);
    if (r->status != c->status || strstr(r->msg, c->part) == NULL || r->nreq != 0) {
        fail_msg("input %.*s: got %d \"%s\" after %zu requests, want %d \"...%s...\"", (int)c->len,
                 c->raw, r->status, r->msg, r->nreq, c->status, c->part);
    }
}

static void refused_all(const struct refusal *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        refused(&cases[i]);
    }
}

#define REFUSED_ALL(table) refused_all(table, sizeof(table) / sizeof(table[0]))

/* ---- request line ---- */

static void test_simple_get(void **state)
{
    (void)state;
    const struct kms_feed_result *r = PARSE("GET /v1/sys/health?x=1 HTTP/1.1\r\nHost: a\r\n"
                                            "X-Vault-Token:  tok \t\r\nEmpty:\r\n\r\n");
    assert_int_equal(r->status, 0);
    assert_int_equal(r->nreq, 1);
    assert_string_equal(rq[0].method, "GET");
    assert_string_equal(rq[0].target, "/v1/sys/health?x=1");
    assert_string_equal(rq[0].headers, "Host=a\nX-Vault-Token=tok\nEmpty=\n");
    assert_int_equal(rq[0].body_len, 0);
    assert_true(rq[0].keepalive);
    assert_true(r->idle);
}

/* RFC 9112 3.2.2: absolute-form is accepted; the path (and query) is the target */
static void test_absolute_form(void **state)
{
    (void)state;
    const struct kms_feed_result *r = PARSE(
        "GET http://kmsd.example:8200/v1/sys/health?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"
        "POST HTTPS://[::1]/v1/transit/encrypt/k HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert_int_equal(r->status, 0);
    assert_int_equal(r->nreq, 2);
    assert_string_equal(rq[0].target, "/v1/sys/health?x=1");
    assert_string_equal(rq[1].target, "/v1/transit/encrypt/k");
}

/* Host values a client sends: names, ports, IP literals, an empty value */
static void test_host_values_allowed(void **state)
{
    (void)state;
    const struct kms_feed_result *r = PARSE("GET /v1/a HTTP/1.1\r\nHost: [::1]:8200\r\n\r\n"
                                            "GET /v1/b HTTP/1.1\r\nHost: kmsd.example:8200\r\n\r\n"
                                            "GET /v1/c HTTP/1.1\r\nHost: a_b~c-1.x\r\n\r\n"
                                            "GET /v1/d HTTP/1.1\r\nHost:\r\n\r\n");
    assert_int_equal(r->status, 0);
    assert_int_equal(r->nreq, 4);
}

static void test_methods_verbatim(void **state)
{
    (void)state;
    const struct kms_feed_result *r = PARSE("LIST /v1/transit/keys HTTP/1.1\r\nHost: x\r\n\r\n"
                                            "PATCH /v1/x HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(r->nreq, 2);
    assert_string_equal(rq[0].method, "LIST");
    assert_string_equal(rq[1].method, "PATCH");
    static const struct refusal cases[] = {
        R("ABCDEFGHIJKLMNOPQ /v1/x HTTP/1.1\r\nHost: x\r\n\r\n", 405, ""),
        R("G(T /v1/x HTTP/1.1\r\nHost: x\r\n\r\n", 400, "invalid method"),
        R(" /v1/x HTTP/1.1\r\nHost: x\r\n\r\n", 400, "empty method"),
    };
    REFUSED_ALL(cases);
}

static void test_request_line_refusals(void **state)
{
    (void)state;
    static const struct refusal cases[] = {
        R("GARBAGE\r\n\r\n", 400, "bad request line"),
        R("GET  /v1/x HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad request line"),
        R("GET /v1/x  HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad request line"),
        R("GET /v1/x HTTP/1.1 \r\n\r\n", 400, "bad request line"),
        R("GET v1/x HTTP/1.1\r\nHost: x\r\n\r\n", 400, "must start with /"),
        R("GET http://a HTTP/1.1\r\nHost: x\r\n\r\n", 400, "the target has no path"),
        R("GET http://a?/v1/x HTTP/1.1\r\nHost: x\r\n\r\n", 400, "the target has no path"),
        R("GET http://a#/v1/x HTTP/1.1\r\nHost: x\r\n\r\n", 400, "the target has no path"),
        R("GET http:// HTTP/1.1\r\nHost: x\r\n\r\n", 400, "must start with /"),
        R("GET ftp://a/v1/x HTTP/1.1\r\nHost: x\r\n\r\n", 400, "must start with /"),
        R("GET /v1/\x7f HTTP/1.1\r\nHost: x\r\n\r\n", 400, "invalid byte in the target"),
        R("GET /v1/\x80 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "invalid byte in the target"),
        R("GET /v1/x\tHTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad request line"),
        R("GET /v1/x HTTP/2.0\r\n\r\n", 505, "version not supported"),
        R("GET /v1/x HTTP/1.2\r\n\r\n", 505, "version not supported"),
        R("GET /v1/x http/1.1\r\n\r\n", 400, "bad HTTP version"),
        R("GET /v1/x HTTP/1.10\r\n\r\n", 400, "bad HTTP version"),
        R("GET /v1/x HTTP/1\r\n\r\n", 400, "bad HTTP version"),
        /* a NUL after the version used to end the string compare early */
        R("GET /v1/x HTTP/1.1\0junk\r\n\r\n", 400, "NUL byte in request line"),
        R("GET /v1/\0x HTTP/1.1\r\nHost: x\r\n\r\n", 400, "NUL byte in request line"),
    };
    REFUSED_ALL(cases);
}

static void test_line_endings(void **state)
{
    (void)state;
    static const struct refusal cases[] = {
        R("GET /v1/x HTTP/1.1\n\n", 400, "request line ends in a bare LF"),
        R("GET /v1/x HTTP/1.1\r\nHost: a\n\r\n", 400, "header ends in a bare LF"),
        R("GET /v1/x HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400, "bare CR in header"),
        R("GET /v1/x\r HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bare CR in request line"),
        R("\n", 400, "bare LF"),
    };
    REFUSED_ALL(cases);
}

static void test_blank_lines_before_request(void **state)
{
    (void)state;
    const struct kms_feed_result *r = PARSE("\r\n\r\nGET /v1/x HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(r->nreq, 1);
    /* ...but they count against the head limit */
    char buf[HEAD_MAX + 64];
    size_t n = 0;
    while (n < HEAD_MAX) {
        memcpy(buf + n, "\r\n", 2);
        n += 2;
    }
    memcpy(buf + n, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 18);
    r = parse_n(buf, n + 18, HEAD_MAX, &rq);
    assert_int_equal(r->status, 414);
}

/* ---- header fields ---- */

static void test_header_refusals(void **state)
{
    (void)state;
    static const struct refusal cases[] = {
        R("GET /v1/x HTTP/1.1\r\nHost: x\r\nHost : a\r\n\r\n", 400,
          "whitespace before a header's colon"),
        R("GET /v1/x HTTP/1.1\r\nHost: x\r\nHost\t: a\r\n\r\n", 400,
          "whitespace before a header's colon"),
        R("GET /v1/x HTTP/1.1\r\nHost: x\r\nA: b\r\n folded\r\n\r\n", 400, "obsolete line folding"),
        R("GET /v1/x HTTP/1.1\r\nHost: x\r\n\tfolded\r\n\r\n", 400, "obsolete line folding"),
        R("GET /v1/x HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", 400, "without a colon"),
        R("GET /v1/x HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n", 400, "empty header name"),
        R("GET /v1/x HTTP/1.1\r\nHost: x\r\nA(b: v\r\n\r\n", 400, "invalid header name"),
        R("GET /v1/x HTTP/1.1\r\nHost: x\r\nA\x80: v\r\n\r\n", 400, "invalid header name"),
        /* NUL inside a value was accepted and cut the value short */
        R("GET /v1/x HTTP/1.1\r\nHost: x\r\nX-Vault-Token: a\0b\r\n\r\n", 400,
          "NUL byte in header"),
        R("GET /v1/x HTTP/1.1\r\nHost: x\r\nA: a\x01z\r\n\r\n", 400, "control character"),
        R("GET /v1/x HTTP/1.1\r\nHost: x\r\nA: a\x7fz\r\n\r\n", 400, "control character"),
        R("GET /v1/x HTTP/1.1\r\nHost: x\r\nA: a\x1b[2J\r\n\r\n", 400, "control character"),
        R("GET /v1/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "repeated Host"),
        /* RFC 9112 3.2: HTTP/1.1 needs a Host (HTTP/1.0 does not: test_keepalive) */
        R("GET /v1/x HTTP/1.1\r\n\r\n", 400, "missing required Host header"),
        R("GET /v1/x HTTP/1.1\r\nX-Host: a\r\n\r\n", 400, "missing required Host header"),
        R("GET /v1/x HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "malformed Host header"),
        R("GET /v1/x HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, "malformed Host header"),
        R("GET /v1/x HTTP/1.1\r\nHost: \"a\"\r\n\r\n", 400, "malformed Host header"),
        R("GET /v1/x HTTP/1.1\r\nHost: caf\xc3\xa9\r\n\r\n", 400, "malformed Host header"),
    };
    REFUSED_ALL(cases);
}

static void test_header_values_allowed(void **state)
{
    (void)state;
    /* obs-text and inner tabs are field content */
    const struct kms_feed_result *r =
        PARSE("GET /v1/x HTTP/1.1\r\nHost: x\r\nA: caf\xc3\xa9\tb c\r\n\r\n");
    assert_int_equal(r->status, 0);
    assert_string_equal(rq[0].headers, "Host=x\nA=caf\xc3\xa9\tb c\n");
}

static void test_header_limits(void **state)
{
    (void)state;
    char buf[8192];
    size_t n = (size_t)snprintf(buf, sizeof(buf), "GET /v1/x HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < 100; i++) { /* and Host: 101 fields */
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "H%d: v\r\n", i);
    }
    n += (size_t)snprintf(buf + n, sizeof(buf) - n, "\r\n");
    const struct kms_feed_result *r = parse_n(buf, n, sizeof(buf), &rq);
    assert_int_equal(r->status, 431);
    assert_string_equal(r->msg, "request header fields too large");

    /* 100 fields are fine */
    n = (size_t)snprintf(buf, sizeof(buf), "GET /v1/x HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < 99; i++) {
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "H%d: v\r\n", i);
    }
    n += (size_t)snprintf(buf + n, sizeof(buf) - n, "\r\n");
    r = parse_n(buf, n, sizeof(buf), &rq);
    assert_int_equal(r->status, 0);
    assert_int_equal(r->nreq, 1);

    /* byte limit: a head of exactly HEAD_MAX bytes passes, one more is refused */
    for (size_t extra = 0; extra < 2; extra++) {
        size_t want = HEAD_MAX + extra;
        n = (size_t)snprintf(buf, sizeof(buf), "GET /v1/x HTTP/1.1\r\nHost: x\r\nA: ");
        size_t pad = want - n - 4;
        memset(buf + n, 'v', pad);
        n += pad;
        memcpy(buf + n, "\r\n\r\n", 4);
        n += 4;
        assert_int_equal(n, want);
        r = parse_n(buf, n, HEAD_MAX, &rq);
        assert_int_equal(r->status, extra ? 431 : 0);
    }
    /* a request line past the limit is 414 */
    n = (size_t)snprintf(buf, sizeof(buf), "GET /");
    memset(buf + n, 'a', HEAD_MAX);
    n += HEAD_MAX;
    n += (size_t)snprintf(buf + n, sizeof(buf) - n, " HTTP/1.1\r\nHost: x\r\n\r\n");
    r = parse_n(buf, n, HEAD_MAX, &rq);
    assert_int_equal(r->status, 414);
    /* ...also before its end arrives */
    r = parse_n(buf, HEAD_MAX + 2, HEAD_MAX, &rq);
    assert_int_equal(r->status, 414);
}

static void test_keepalive(void **state)
{
    (void)state;
    const struct kms_feed_result *r =
        PARSE("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
              "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, Close\r\n\r\n"
              "GET / HTTP/1.0\r\n\r\n"
              "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
              "GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n");
    assert_int_equal(r->nreq, 5);
    assert_false(rq[0].keepalive);
    assert_false(rq[1].keepalive);
    assert_false(rq[2].keepalive);
    assert_true(rq[3].keepalive);
    assert_true(rq[4].keepalive);
}

/* ---- bodies ---- */

static void test_content_length(void **state)
{
    (void)state;
    const struct kms_feed_result *r =
        PARSE("POST /v1/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
              "POST /v1/b HTTP/1.1\r\nHost: x\r\nContent-Length: 005\r\n"
              "Content-Length: 5\r\n\r\nworld"
              "GET /v1/c HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(r->status, 0);
    assert_int_equal(r->nreq, 3);
    assert_int_equal(rq[0].body_len, 5);
    assert_memory_equal(rq[0].body, "hello", 5);
    assert_memory_equal(rq[1].body, "world", 5);
    assert_string_equal(rq[2].target, "/v1/c");
    assert_true(r->idle);

    /* a body still arriving leaves the parser mid-request */
    r = PARSE("POST /v1/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhel");
    assert_int_equal(r->nreq, 0);
    assert_int_equal(r->status, 0);
    assert_false(r->idle);
}

static void test_content_length_refusals(void **state)
{
    (void)state;
    static const struct refusal cases[] = {
        R("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400,
          "conflicting Content-Length"),
        R("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400, "bad Content-Length"),
        R("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\nA", 400, "bad Content-Length"),
        R("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x1\r\n\r\nA", 400, "bad Content-Length"),
        R("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1 1\r\n\r\nA", 400, "bad Content-Length"),
        R("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1,1\r\n\r\nA", 400, "bad Content-Length"),
        R("POST / HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n", 400, "bad Content-Length"),
        R("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4097\r\n\r\n", 413,
          "request body too large"),
        R("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999999999\r\n\r\n",
          413, "request body too large"),
        R("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999999999\r\n"
          "Content-Length: 5\r\n\r\n",
          400, "conflicting Content-Length"),
        /* CL + TE is the classic smuggling pair */
        R("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
          400, "both Content-Length and Transfer-Encoding"),
        R("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
          400, "both Content-Length and Transfer-Encoding"),
    };
    REFUSED_ALL(cases);
}

static void test_chunked(void **state)
{
    (void)state;
    const struct kms_feed_result *r =
        PARSE("POST /v1/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n"
              "5\r\nhello\r\n"
              "00001;name\r\n \r\n"
              "A;a=b;c=\"q \\\" ;\" ; d = e\r\n0123456789\r\n"
              "0\r\nX-Trailer: t\r\n\r\n"
              "GET /v1/b HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(r->status, 0);
    assert_int_equal(r->nreq, 2);
    assert_int_equal(rq[0].body_len, 16);
    assert_memory_equal(rq[0].body, "hello 0123456789", 16);
    /* trailers are checked, not kept */
    assert_string_equal(rq[0].headers, "Host=x\nTransfer-Encoding=Chunked\n");
    assert_string_equal(rq[1].target, "/v1/b");

    r = PARSE("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert_int_equal(r->nreq, 1);
    assert_int_equal(rq[0].body_len, 0);
}

static void test_chunk_size_refusals(void **state)
{
    (void)state;
#define CH "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    static const struct refusal cases[] = {
        /* issue 11: each of these was accepted */
        R(CH "0x14\r\n01234567890123456789\r\n0\r\n\r\n", 400, "bad chunk size"),
        R(CH "+14\r\n01234567890123456789\r\n0\r\n\r\n", 400, "bad chunk size"),
        R(CH " 14\r\n01234567890123456789\r\n0\r\n\r\n", 400, "bad chunk size"),
        R(CH "-1\r\n", 400, "bad chunk size"),
        R(CH "\r\n", 400, "bad chunk size"),
        R(CH "5 \r\nhello\r\n0\r\n\r\n", 400, "bad chunk size"),
        R(CH "5x\r\nhello\r\n0\r\n\r\n", 400, "bad chunk size"),
        R(CH "5\0\r\nhello\r\n0\r\n\r\n", 400, "NUL byte in chunk size line"),
        R(CH "5\n", 400, "chunk size line ends in a bare LF"),
        R(CH "5;\r\nhello\r\n0\r\n\r\n", 400, "bad chunk extension"),
        R(CH "5;=x\r\nhello\r\n0\r\n\r\n", 400, "bad chunk extension"),
        R(CH "5;a=\r\nhello\r\n0\r\n\r\n", 400, "bad chunk extension"),
        R(CH "5;a=\"x\r\nhello\r\n0\r\n\r\n", 400, "bad chunk extension"),
        R(CH "5;a=\"\x01\"\r\nhello\r\n0\r\n\r\n", 400, "bad chunk extension"),
        R(CH "5;a b\r\nhello\r\n0\r\n\r\n", 400, "bad chunk size"),
        R(CH "5;a \r\nhello\r\n0\r\n\r\n", 400, "bad chunk size"),
        /* sizes that would overflow, or pass the body cap alone or summed */
        R(CH "FFFFFFFFFFFFFFFFFFFFFFFF\r\n", 413, "request body too large"),
        R(CH "10000000000000001\r\n", 413, "request body too large"),
        R(CH "1001\r\n", 413, "request body too large"),
        /* chunk data must end in CRLF */
        R(CH "5\r\nhelloXY0\r\n\r\n", 400, "chunk data not followed by CRLF"),
        R(CH "5\r\nhello\n0\r\n\r\n", 400, "chunk data not followed by CRLF"),
        /* trailers are field lines too */
        R(CH "0\r\nX: a\0b\r\n\r\n", 400, "NUL byte in trailer"),
        R(CH "0\r\nX : a\r\n\r\n", 400, "whitespace before a header's colon"),
        R(CH "0\r\n folded\r\n\r\n", 400, "obsolete line folding"),
    };
    static char buf[8192];
    size_t n;

    REFUSED_ALL(cases);
    /* two chunks that pass the body cap together */
    n = (size_t)snprintf(buf, sizeof(buf), CH "800\r\n");
    memset(buf + n, 'a', 0x800);
    n += 0x800;
    n += (size_t)snprintf(buf + n, sizeof(buf) - n, "\r\n801\r\n");
    refused(&(struct refusal){buf, n, 413, "request body too large"});
    /* long extensions: the whole chunk line is capped */
    n = (size_t)snprintf(buf, sizeof(buf), CH "5;a=");
    memset(buf + n, 'b', 1100);
    n += 1100;
    refused(&(struct refusal){buf, n, 400, "chunk size line too long"});
#undef CH
}

static void test_transfer_encoding_refusals(void **state)
{
    (void)state;
    static const struct refusal cases[] = {
        R("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501,
          "unsupported transfer"),
        R("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501,
          "unsupported transfer"),
        R("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400,
          "bad Transfer-Encoding"),
        R("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ,\r\n\r\n", 400,
          "bad Transfer-Encoding"),
        R("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", 400,
          "bad Transfer-Encoding"),
        R("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n\r\n", 400, "bad Transfer-Encoding"),
        R("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
          "chunked\r\n\r\n",
          400, "repeated Transfer-Encoding"),
        R("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400,
          "Transfer-Encoding in HTTP/1.0"),
    };
    REFUSED_ALL(cases);
    /* empty list elements are ignored (RFC 9110 5.6.1) */
    const struct kms_feed_result *r = PARSE(
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: , chunked,\r\n\r\n1\r\nz\r\n0\r\n\r\n");
    assert_int_equal(r->nreq, 1);
}

static void test_expect_continue(void **state)
{
    (void)state;
    const struct kms_feed_result *r =
        PARSE("POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\n"
              "Content-Length: 2\r\n\r\nhi"
              "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
              "Transfer-Encoding: chunked\r\n\r\n2\r\nho\r\n0\r\n\r\n"
              /* nothing to wait for: no 100 */
              "GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n"
              "POST / HTTP/1.0\r\nExpect: 100-continue\r\n"
              "Content-Length: 1\r\n\r\nx");
    assert_int_equal(r->status, 0);
    assert_int_equal(r->nreq, 4);
    assert_int_equal(r->ncontinue, 2);
    assert_memory_equal(rq[1].body, "ho", 2);
    static const struct refusal cases[] = {
        R("POST / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n", 417, "unsupported Expect"),
        R("POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nExpect: 100-continue\r\n\r\n", 417,
          "unsupported Expect"),
    };
    REFUSED_ALL(cases);
}

static void test_refusal_then_garbage_ignored(void **state)
{
    (void)state;
    /* the request before a refusal is complete; nothing after the refusal is parsed */
    const struct kms_feed_result *r =
        PARSE("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nA : b\r\n\r\n"
              "GET /c HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(r->nreq, 1);
    assert_int_equal(r->status, 400);
}

static void test_request_before_complete(void **state)
{
    (void)state;
    struct kms_http_parser *p = NULL;
    struct kms_http_req req;
    assert_int_equal(kms_http_parser_create(HEAD_MAX, BODY_MAX, NULL, &p), 0);
    assert_true(kms_http_parser_idle(p));
    assert_int_equal(kms_http_parser_request(p, &req), -1);
    kms_http_parser_destroy(&p);
    kms_http_parser_destroy(&p); /* NULL is fine */
}

/* ---- the parser's reused blocks ---- */

#define BIG_FIELDS 3
#define BIG_VALUE 1500
#define BIG_BODY 20000

struct big_seen {
    size_t n;
    bool ok[3];
};

/* Requests 1 and 3 carry fields whose values are BIG_VALUE copies of 'a' + i, request 1 a
 * BIG_BODY body of 'x' + i % 7 and request 2 a chunked one: the head block grows (and moves)
 * while request 1's fields are kept, and both blocks are given up or reused in between. */
static void big_record(struct kms_http_parser *p, const struct kms_http_req *req, void *ctx)
{
    (void)p;
    struct big_seen *seen = ctx;
    size_t k = seen->n++;
    bool ok = k < 3;
    if (ok && (k == 0 || k == 2)) {
        ok = strcmp(req->method, k == 0 ? "POST" : "GET") == 0 &&
             strcmp(req->target, k == 0 ? "/v1/transit/encrypt/first" : "/v1/third") == 0 &&
             req->nheaders == BIG_FIELDS + 2;
        for (size_t i = 0; ok && i < BIG_FIELDS; i++) {
            const char *v = req->headers[i + 1].value;
            char name[16];
            snprintf(name, sizeof(name), "Big%zu", i);
            ok = strcmp(req->headers[i + 1].name, name) == 0 && strlen(v) == BIG_VALUE &&
                 v[0] == (char)('a' + i) && v[BIG_VALUE - 1] == (char)('a' + i) &&
                 strspn(v, (char[]){(char)('a' + i), '\0'}) == BIG_VALUE;
        }
        ok = ok && strcmp(req->headers[0].name, "Host") == 0 &&
             strcmp(req->headers[0].value, "x") == 0;
    }
    if (ok && k == 0) {
        ok = req->body_len == BIG_BODY;
        for (size_t i = 0; ok && i < BIG_BODY; i++) {
            ok = req->body[i] == (uint8_t)('x' + i % 7);
        }
    }
    if (ok && k == 1) {
        ok = strcmp(req->target, "/v1/second") == 0 && req->body_len == 9 &&
             memcmp(req->body, "abcdefghi", 9) == 0 && req->nheaders == 2;
    }
    if (ok && k == 2) {
        ok = req->body_len == 0 && req->body == NULL;
    }
    if (k < 3) {
        seen->ok[k] = ok;
    }
}

static void test_blocks_grow_and_are_reused(void **state)
{
    (void)state;
    size_t cap = 3 * (BIG_FIELDS * (BIG_VALUE + 16) + 256) + BIG_BODY;
    char *buf = malloc(cap);
    assert_non_null(buf);
    size_t n = 0;
    for (int r = 0; r < 3; r++) {
        if (r == 1) {
            n += (size_t)snprintf(buf + n, cap - n,
                                  "POST /v1/second HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                                  "chunked\r\n\r\n3\r\nabc\r\n6\r\ndefghi\r\n0\r\n\r\n");
            continue;
        }
        n += (size_t)snprintf(buf + n, cap - n, "%s HTTP/1.1\r\nHost: x\r\n",
                              r == 0 ? "POST /v1/transit/encrypt/first" : "GET /v1/third");
        for (int i = 0; i < BIG_FIELDS; i++) {
            n += (size_t)snprintf(buf + n, cap - n, "Big%d: ", i);
            memset(buf + n, 'a' + i, BIG_VALUE);
            n += BIG_VALUE;
            n += (size_t)snprintf(buf + n, cap - n, " \r\n"); /* trailing OWS is not kept */
        }
        if (r == 0) {
            n += (size_t)snprintf(buf + n, cap - n, "Content-Length: %d\r\n\r\n", BIG_BODY);
            for (size_t i = 0; i < BIG_BODY; i++) {
                buf[n++] = (char)('x' + i % 7);
            }
        } else {
            n += (size_t)snprintf(buf + n, cap - n, "Content-Length: 0\r\n\r\n");
        }
    }
    assert_true(n < cap);
    static const size_t steps[] = {0, 1, 7, 4096};
    for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
        struct big_seen seen = {0};
        struct kms_feed_result r;
        kms_feed(buf, n, steps[s], 64 * 1024, 64 * 1024, big_record, &seen, &r);
        assert_int_equal(r.status, 0);
        assert_int_equal(seen.n, 3);
        assert_true(seen.ok[0]);
        assert_true(seen.ok[1]);
        assert_true(seen.ok[2]);
        assert_true(r.idle);
    }
    free(buf);
}

/* Bytes the parser took out of the connection's input are wiped where they lay (the token in
 * a header, a chunked body's plaintext, a trailer): the input holds them by reference to this
 * test's own buffer, which must read zeros up to where the request ended. */
static void test_consumed_input_is_wiped(void **state)
{
    (void)state;
    static const char req[] = "POST /v1/transit/encrypt/k HTTP/1.1\r\nHost: x\r\n"
                              "X-Vault-Token: s.SECRET-TOKEN\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "5\r\nhunte\r\n2\r\nr2\r\n0\r\nX-Trailer: SECRET-TRAILER\r\n\r\n";
    static const char next[] = "GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n\r\n";
    char buf[sizeof(req) - 1 + sizeof(next) - 1];
    memcpy(buf, req, sizeof(req) - 1);
    memcpy(buf + sizeof(req) - 1, next, sizeof(next) - 1);

    struct evbuffer *in = evbuffer_new();
    struct kms_http_parser *p = NULL;
    assert_non_null(in);
    assert_int_equal(kms_http_parser_create(1024, 1024, NULL, &p), 0);
    assert_int_equal(evbuffer_add_reference(in, buf, sizeof(buf), NULL, NULL), 0);
    enum kms_http_parse_event ev;
    struct kms_err err;
    struct kms_http_req r;
    assert_int_equal(kms_http_parser_run(p, in, &ev, &err), 0);
    assert_int_equal(ev, KMS_HTTP_PARSE_REQUEST);
    assert_int_equal(kms_http_parser_request(p, &r), 0);
    assert_int_equal(r.body_len, 7);
    assert_memory_equal(r.body, "hunter2", 7);
    assert_string_equal(r.headers[1].value, "s.SECRET-TOKEN");
    for (size_t i = 0; i < sizeof(req) - 1; i++) {
        if (buf[i] != '\0') {
            fail_msg("input byte %zu ('%c') left in place after it was parsed", i, buf[i]);
        }
    }
    /* the next request is not touched until it is parsed */
    assert_memory_equal(buf + sizeof(req) - 1, next, sizeof(next) - 1);
    kms_http_parser_reset(p);
    kms_http_parser_destroy(&p);
    evbuffer_free(in);
}

/* Feed `n` bytes of `text` to p; the parser's answer (0, or -1 with err). */
static int feed_part(struct kms_http_parser *p, const char *text, size_t n,
                     enum kms_http_parse_event *ev, struct kms_err *err)
{
    struct evbuffer *in = evbuffer_new();
    assert_non_null(in);
    assert_int_equal(evbuffer_add(in, text, n), 0);
    int rc = kms_http_parser_run(p, in, ev, err);
    evbuffer_free(in);
    return rc;
}

/* Bodies share one budget: a body is charged as its bytes arrive (a small one, that fits the
 * kept block, never), one that would take the budget past its limit is refused with 503, and
 * a request's end, a reset or the parser's end gives its bytes back. */
static void test_body_budget(void **state)
{
    (void)state;
    static const char head[] = "POST /v1/transit/encrypt/k HTTP/1.1\r\nHost: x\r\n"
                               "Content-Length: 8000\r\n\r\n";
    char body[8000];
    memset(body, 'b', sizeof(body));
    struct kms_http_body_budget budget = {.limit = 12000};
    struct kms_http_parser *a = NULL, *b = NULL, *c = NULL;
    assert_int_equal(kms_http_parser_create(1024, 10000, &budget, &a), 0);
    assert_int_equal(kms_http_parser_create(1024, 10000, &budget, &b), 0);
    assert_int_equal(kms_http_parser_create(1024, 10000, &budget, &c), 0);
    enum kms_http_parse_event ev;
    struct kms_err err;

    /* a: the head and 6000 of its 8000 bytes, charged */
    assert_int_equal(feed_part(a, head, sizeof(head) - 1, &ev, &err), 0);
    assert_int_equal(feed_part(a, body, 6000, &ev, &err), 0);
    assert_int_equal(ev, KMS_HTTP_PARSE_MORE);
    assert_int_equal(atomic_load(&budget.used), 6000);
    /* c: a small request costs nothing */
    static const char small[] = "POST /v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
    assert_int_equal(feed_part(c, small, sizeof(small) - 1, &ev, &err), 0);
    assert_int_equal(ev, KMS_HTTP_PARSE_REQUEST);
    assert_int_equal(atomic_load(&budget.used), 6000);
    kms_http_parser_reset(c);
    /* b: 5000 bytes fit, 7000 do not: 503, and nothing of b stays charged */
    assert_int_equal(feed_part(b, head, sizeof(head) - 1, &ev, &err), 0);
    assert_int_equal(feed_part(b, body, 5000, &ev, &err), 0);
    assert_int_equal(atomic_load(&budget.used), 11000);
    assert_int_equal(feed_part(b, body, 2000, &ev, &err), -1);
    assert_int_equal(err.status, 503);
    assert_string_equal(err.msg, "too many request bytes in flight "
                                 "(max_request_bytes_in_flight): retry later");
    kms_http_parser_destroy(&b);
    assert_int_equal(atomic_load(&budget.used), 6000);
    /* a finishes: its request keeps its charge until the reset */
    assert_int_equal(feed_part(a, body, 2000, &ev, &err), 0);
    assert_int_equal(ev, KMS_HTTP_PARSE_REQUEST);
    assert_int_equal(atomic_load(&budget.used), 8000);
    kms_http_parser_reset(a);
    assert_int_equal(atomic_load(&budget.used), 0);
    /* now a whole 8000-byte body fits again */
    assert_int_equal(feed_part(c, head, sizeof(head) - 1, &ev, &err), 0);
    assert_int_equal(feed_part(c, body, sizeof(body), &ev, &err), 0);
    assert_int_equal(ev, KMS_HTTP_PARSE_REQUEST);
    kms_http_parser_destroy(&c);
    kms_http_parser_destroy(&a);
    assert_int_equal(atomic_load(&budget.used), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_get),
        cmocka_unit_test(test_absolute_form),
        cmocka_unit_test(test_host_values_allowed),
        cmocka_unit_test(test_methods_verbatim),
        cmocka_unit_test(test_request_line_refusals),
        cmocka_unit_test(test_line_endings),
        cmocka_unit_test(test_blank_lines_before_request),
        cmocka_unit_test(test_header_refusals),
        cmocka_unit_test(test_header_values_allowed),
        cmocka_unit_test(test_header_limits),
        cmocka_unit_test(test_keepalive),
        cmocka_unit_test(test_content_length),
        cmocka_unit_test(test_content_length_refusals),
        cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_chunk_size_refusals),
        cmocka_unit_test(test_transfer_encoding_refusals),
        cmocka_unit_test(test_expect_continue),
        cmocka_unit_test(test_refusal_then_garbage_ignored),
        cmocka_unit_test(test_request_before_complete),
        cmocka_unit_test(test_blocks_grow_and_are_reused),
        cmocka_unit_test(test_consumed_input_is_wiped),
        cmocka_unit_test(test_body_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
