/*
 * http_parser.c - the HTTP/1.1 request parser of server/http.c (kms_http_parser_*, server.h).
 *
 * Socket-free: it consumes bytes from an evbuffer and stops at each complete request, so the
 * fuzzer (fuzz_http) and the unit tests (tests/server/test_http.c) drive it without a network.
 * The target, the header fields and the body live in two blocks the parser keeps from request
 * to request (no allocation per line or field), wiped after each request. It is strict where
 * leniency lets a proxy and kmsd disagree on where a request ends (RFC 9112): lines end in
 * CRLF (no bare LF or CR), no NUL or control bytes in fields, no whitespace before a colon, no
 * obs-fold, chunk sizes are bare hex digits (no "0x", sign or blanks) with well-formed
 * extensions, one Content-Length value, never both Content-Length and Transfer-Encoding, no
 * Transfer-Encoding in HTTP/1.0, one Host. Every refusal is a 4xx/5xx with a message.
 */
#include "server/server.h"

#include <ctype.h>
#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_HEADERS 100
#define MAX_METHOD 16
#define CHUNK_LINE_MAX 1024 /* a chunk-size line with its extensions, CRLF included */

#define MSG_TOO_LARGE "failed to decode JSON input: http: request body too large"

enum parse_state {
    PS_LINE,
    PS_HEADERS,
    PS_BODY,
    PS_CHUNK_SIZE,
    PS_CHUNK_DATA,
    PS_CHUNK_CRLF,
    PS_TRAILER,
    PS_DONE,
};

struct kms_http_parser {
    size_t max_header_size;
    size_t max_body_size;
    enum parse_state st;
    char method[MAX_METHOD + 1];
    int minor;
    /* The request line's target and the kept header fields live in `head`, one block reused
     * from request to request (NUL-terminated strings at these offsets: the block may move
     * while it grows), wiped at reset: no allocation per line or field. */
    char *head;
    size_t head_cap;
    size_t head_used; /* bytes kept for this request */
    size_t head_hi;   /* bytes written since the last reset (what the reset wipes) */
    size_t target_off;
    size_t nheaders;
    size_t hname_off[MAX_HEADERS];
    size_t hvalue_off[MAX_HEADERS];
    struct kms_http_header hdrs[MAX_HEADERS];
    size_t header_bytes; /* request line, fields, blank lines before them and trailers */
    size_t left;         /* Content-Length bytes or bytes of the current chunk still to come */
    size_t body_len;
    bool chunked;
    bool keepalive;
    bool expect_continue;
    char *flat; /* the body as one block (body_len bytes), kept for the next request */
    size_t flat_cap;
    struct kms_http_body_budget *budget; /* NULL = none */
    size_t charged;                      /* this request's body bytes charged to it */
};

/* Blocks up to these sizes stay with the parser for the next request; larger ones are freed,
 * so an idle kept-alive connection holds at most 4 KiB of them (16 MiB at the default
 * max_connections), and a common request (a ~300-byte head, a body under 2 KiB) allocates
 * nothing. */
#define HEAD_KEEP (2 * 1024)
#define FLAT_KEEP (2 * 1024)

/* tchar (RFC 9110 5.6.2): ALPHA / DIGIT / "!#$%&'*+-.^_`|~" */
static const bool TOKEN_CHARS[256] = {
    ['!'] = true, ['#'] = true, ['$'] = true, ['%'] = true, ['&'] = true, ['\''] = true,
    ['*'] = true, ['+'] = true, ['-'] = true, ['.'] = true, ['^'] = true, ['_'] = true,
    ['`'] = true, ['|'] = true, ['~'] = true, ['0'] = true, ['1'] = true, ['2'] = true,
    ['3'] = true, ['4'] = true, ['5'] = true, ['6'] = true, ['7'] = true, ['8'] = true,
    ['9'] = true, ['A'] = true, ['B'] = true, ['C'] = true, ['D'] = true, ['E'] = true,
    ['F'] = true, ['G'] = true, ['H'] = true, ['I'] = true, ['J'] = true, ['K'] = true,
    ['L'] = true, ['M'] = true, ['N'] = true, ['O'] = true, ['P'] = true, ['Q'] = true,
    ['R'] = true, ['S'] = true, ['T'] = true, ['U'] = true, ['V'] = true, ['W'] = true,
    ['X'] = true, ['Y'] = true, ['Z'] = true, ['a'] = true, ['b'] = true, ['c'] = true,
    ['d'] = true, ['e'] = true, ['f'] = true, ['g'] = true, ['h'] = true, ['i'] = true,
    ['j'] = true, ['k'] = true, ['l'] = true, ['m'] = true, ['n'] = true, ['o'] = true,
    ['p'] = true, ['q'] = true, ['r'] = true, ['s'] = true, ['t'] = true, ['u'] = true,
    ['v'] = true, ['w'] = true, ['x'] = true, ['y'] = true, ['z'] = true,
};

static inline bool is_token_char(int ch)
{
    return ch >= 0 && ch < 256 && TOKEN_CHARS[ch];
}

/* field-vchar / SP / HTAB (RFC 9110 5.5): no control characters, no DEL */
static bool is_field_char(int ch)
{
    return ch == '\t' || (ch >= 0x20 && ch != 0x7f);
}

/* Wipe the first `used` bytes of a reusable block; free it when it grew past `keep`. */
static void *block_recycle(void *b, size_t used, size_t *cap, size_t keep)
{
    kms_memzero(b, used);
    if (*cap > keep) {
        free(b);
        *cap = 0;
        return NULL;
    }
    return b;
}

/* Make room for `more` bytes after the first `used` of a block; when it moves, the first
 * `written` bytes of the old one (used and any line read past them) are wiped. */
static int block_reserve(char **b, size_t *cap, size_t used, size_t written, size_t more)
{
    if (more <= *cap - used) {
        return 0;
    }
    if (more > SIZE_MAX / 2 - used) {
        return -1;
    }
    size_t ncap = *cap < 256 ? 256 : *cap;
    while (ncap < used + more) {
        ncap *= 2;
    }
    char *nb = malloc(ncap);
    if (nb == NULL) {
        return -1;
    }
    if (*b != NULL) {
        memcpy(nb, *b, used);
        kms_memzero(*b, written > used ? written : used);
        free(*b);
    }
    *b = nb;
    *cap = ncap;
    return 0;
}

void kms_http_parser_reset(struct kms_http_parser *p)
{
    /* the head holds credentials (X-Vault-Token), the body may hold plaintext */
    p->head = block_recycle(p->head, p->head_hi, &p->head_cap, HEAD_KEEP);
    p->head_used = 0;
    p->head_hi = 0;
    p->target_off = 0;
    p->flat = block_recycle(p->flat, p->body_len, &p->flat_cap, FLAT_KEEP);
    if (p->charged > 0) {
        atomic_fetch_sub(&p->budget->used, p->charged);
        p->charged = 0;
    }
    p->nheaders = 0;
    p->method[0] = '\0';
    p->minor = 1;
    p->header_bytes = 0;
    p->left = 0;
    p->body_len = 0;
    p->chunked = false;
    p->keepalive = false;
    p->expect_continue = false;
    p->st = PS_LINE;
}

int kms_http_parser_create(size_t max_header_size, size_t max_body_size,
                           struct kms_http_body_budget *budget, struct kms_http_parser **out)
{
    struct kms_http_parser *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return -1;
    }
    p->max_header_size = max_header_size;
    p->max_body_size = max_body_size;
    p->budget = budget;
    p->minor = 1;
    p->st = PS_LINE;
    *out = p;
    return 0;
}

size_t kms_http_parser_take_charge(struct kms_http_parser *p)
{
    size_t n = p->charged;
    p->charged = 0;
    return n;
}

void kms_http_body_budget_release(struct kms_http_body_budget *b, size_t n)
{
    if (b != NULL && n > 0) {
        atomic_fetch_sub(&b->used, n);
    }
}

void kms_http_parser_destroy(struct kms_http_parser **pp)
{
    struct kms_http_parser *p = *pp;
    if (p == NULL) {
        return;
    }
    kms_http_parser_reset(p);
    free(p->head);
    free(p->flat);
    free(p);
    *pp = NULL;
}

bool kms_http_parser_idle(const struct kms_http_parser *p)
{
    return p->st == PS_LINE && p->header_bytes == 0;
}

bool kms_http_parser_keepalive(const struct kms_http_parser *p)
{
    return p->keepalive;
}

bool kms_http_parser_http10(const struct kms_http_parser *p)
{
    return p->minor == 0;
}

int kms_http_parser_request(struct kms_http_parser *p, struct kms_http_req *req)
{
    if (p->st != PS_DONE) {
        return -1;
    }
    for (size_t i = 0; i < p->nheaders; i++) {
        p->hdrs[i].name = p->head + p->hname_off[i];
        p->hdrs[i].value = p->head + p->hvalue_off[i];
    }
    memset(req, 0, sizeof(*req));
    req->method = p->method;
    req->target = p->head + p->target_off;
    req->headers = p->hdrs;
    req->nheaders = p->nheaders;
    req->body = p->body_len > 0 ? (const uint8_t *)p->flat : NULL;
    req->body_len = p->body_len;
    return 0;
}

/*
 * Move the first n bytes of `in` to dst, wiping them where they lay before `in` drops them:
 * they may be a token or plaintext, and evbuffer_remove would free its chains unwiped.
 */
static int take_wiped(struct evbuffer *in, char *dst, size_t n)
{
    while (n > 0) {
        struct evbuffer_iovec v[8];
        int k = evbuffer_peek(in, (ev_ssize_t)n, NULL, v, 8);
        size_t got = 0;
        for (int i = 0; i < k && i < 8 && got < n; i++) {
            size_t take = v[i].iov_len < n - got ? v[i].iov_len : n - got;
            memcpy(dst + got, v[i].iov_base, take);
            kms_memzero(v[i].iov_base, take);
            got += take;
        }
        if (got == 0 || evbuffer_drain(in, got) != 0) {
            return -1;
        }
        dst += got;
        n -= got;
    }
    return 0;
}

/*
 * Take one CRLF-terminated line off `in` into the parser's head block, after the bytes kept
 * so far, NUL-terminated without the CRLF: *line points at it until the head grows again
 * (the caller keeps it by adding *len + 1 to head_used). The line, CRLF included, may be at
 * most `limit` bytes, else it is refused with `toolong`. Returns 1 with *line and *len, 0
 * while the line is incomplete, -1 with err.
 */
static int read_line(struct kms_http_parser *p, struct evbuffer *in, size_t limit, int toolong,
                     const char *what, char **line, size_t *len, struct kms_err *err)
{
    size_t n;
    const char *lf = NULL;
    struct evbuffer_iovec first;
    /* most lines lie in the first chain: one memchr instead of a search through the buffer */
    if (evbuffer_peek(in, -1, NULL, &first, 1) >= 1 && first.iov_len > 0) {
        lf = memchr(first.iov_base, '\n', first.iov_len);
    }
    if (lf != NULL) {
        n = (size_t)(lf - (const char *)first.iov_base);
    } else {
        size_t eol_len = 0;
        struct evbuffer_ptr pos = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
        if (pos.pos < 0) {
            /* no LF yet: everything buffered belongs to this line */
            if (evbuffer_get_length(in) >= limit) {
                return kms_err_set(err, toolong, "%s too long", what);
            }
            return 0;
        }
        n = (size_t)pos.pos;
    }
    if (n + 1 > limit) {
        return kms_err_set(err, toolong, "%s too long", what);
    }
    if (block_reserve(&p->head, &p->head_cap, p->head_used, p->head_hi, n + 1) != 0) {
        return kms_err_set(err, 500, "out of memory");
    }
    char *buf = p->head + p->head_used;
    if (p->head_used + n + 1 > p->head_hi) {
        p->head_hi = p->head_used + n + 1;
    }
    if (take_wiped(in, buf, n + 1) != 0) {
        return kms_err_set(err, 500, "cannot read the request");
    }
    /* a lone LF or CR is where proxies and servers disagree on line ends: refuse both */
    if (n == 0 || buf[n - 1] != '\r') {
        return kms_err_set(err, 400, "malformed HTTP request: %s ends in a bare LF", what);
    }
    n--;
    buf[n] = '\0';
    if (memchr(buf, '\0', n) != NULL) {
        return kms_err_set(err, 400, "malformed HTTP request: NUL byte in %s", what);
    }
    if (memchr(buf, '\r', n) != NULL) {
        return kms_err_set(err, 400, "malformed HTTP request: bare CR in %s", what);
    }
    *line = buf;
    *len = n;
    return 1;
}

/* method SP request-target SP HTTP-version (RFC 9112 3), origin-form targets only. */
static int parse_request_line(struct kms_http_parser *p, char *line, size_t n, struct kms_err *err)
{
    const char *sp1 = memchr(line, ' ', n);
    const char *sp2 = sp1 != NULL ? memchr(sp1 + 1, ' ', n - (size_t)(sp1 + 1 - line)) : NULL;
    if (sp1 == NULL || sp2 == NULL || memchr(sp2 + 1, ' ', n - (size_t)(sp2 + 1 - line))) {
        return kms_err_set(err, 400, "malformed HTTP request: bad request line");
    }
    size_t mlen = (size_t)(sp1 - line);
    if (mlen == 0) {
        return kms_err_set(err, 400, "malformed HTTP request: empty method");
    }
    for (size_t i = 0; i < mlen; i++) {
        if (!is_token_char((unsigned char)line[i])) {
            return kms_err_set(err, 400, "malformed HTTP request: invalid method");
        }
    }
    if (mlen > MAX_METHOD) {
        return kms_err_set(err, 405, "%s", "");
    }
    memcpy(p->method, line, mlen);
    p->method[mlen] = '\0';

    const char *ver = sp2 + 1;
    size_t vlen = n - (size_t)(ver - line);
    if (vlen == 8 && memcmp(ver, "HTTP/1.1", 8) == 0) {
        p->minor = 1;
    } else if (vlen == 8 && memcmp(ver, "HTTP/1.0", 8) == 0) {
        p->minor = 0;
    } else if (vlen == 8 && memcmp(ver, "HTTP/", 5) == 0 && isdigit((unsigned char)ver[5]) &&
               ver[6] == '.' && isdigit((unsigned char)ver[7])) {
        return kms_err_set(err, 505, "HTTP version not supported");
    } else {
        return kms_err_set(err, 400, "malformed HTTP request: bad HTTP version");
    }

    char *t = (char *)sp1 + 1;
    size_t tlen = (size_t)(sp2 - t);
    for (size_t i = 0; i < tlen; i++) {
        unsigned char ch = (unsigned char)t[i];
        if (ch <= 0x20 || ch >= 0x7f) {
            return kms_err_set(err, 400, "malformed HTTP request: invalid byte in the target");
        }
    }
    /* absolute-form (RFC 9112 3.2.2: a server must accept it): the path of the URI */
    size_t scheme = tlen > 7 && strncasecmp(t, "http://", 7) == 0    ? 7
                    : tlen > 8 && strncasecmp(t, "https://", 8) == 0 ? 8
                                                                     : 0;
    if (scheme > 0) {
        /* the authority ends at the first '/', '?' or '#' (RFC 3986 3.2) */
        size_t a = scheme;
        while (a < tlen && t[a] != '/' && t[a] != '?' && t[a] != '#') {
            a++;
        }
        char *path = a < tlen ? t + a : NULL;
        if (path == NULL || *path != '/') {
            return kms_err_set(err, 400, "malformed HTTP request: the target has no path");
        }
        tlen -= (size_t)(path - t);
        t = path;
    }
    if (tlen == 0 || t[0] != '/') {
        return kms_err_set(err, 400, "malformed HTTP request: the target must start with /");
    }
    t[tlen] = '\0'; /* the line is kept: the target ends where the version began */
    p->target_off = (size_t)(t - p->head);
    return 0;
}

/* field-name ":" OWS field-value OWS (RFC 9112 5); kept when `store`, else only checked. */
static int parse_field_line(struct kms_http_parser *p, char *line, size_t n, bool store,
                            struct kms_err *err)
{
    if (line[0] == ' ' || line[0] == '\t') {
        return kms_err_set(err, 400, "malformed HTTP request: obsolete line folding");
    }
    char *colon = memchr(line, ':', n);
    if (colon == NULL) {
        return kms_err_set(err, 400, "malformed HTTP request: header line without a colon");
    }
    if (colon == line) {
        return kms_err_set(err, 400, "malformed HTTP request: empty header name");
    }
    for (const char *c = line; c < colon; c++) {
        if (*c == ' ' || *c == '\t') {
            return kms_err_set(err, 400,
                               "malformed HTTP request: whitespace before a header's colon");
        }
        if (!is_token_char((unsigned char)*c)) {
            return kms_err_set(err, 400, "malformed HTTP request: invalid header name");
        }
    }
    char *v = colon + 1;
    char *end = line + n;
    while (v < end && (*v == ' ' || *v == '\t')) {
        v++;
    }
    while (end > v && (end[-1] == ' ' || end[-1] == '\t')) {
        end--;
    }
    for (const char *c = v; c < end; c++) {
        if (!is_field_char((unsigned char)*c)) {
            return kms_err_set(err, 400,
                               "malformed HTTP request: control character in a header value");
        }
    }
    if (!store) {
        return 0;
    }
    if (p->nheaders == MAX_HEADERS) {
        return kms_err_set(err, 431, "request header fields too large");
    }
    /* kept in place: the name ends at its colon, the value at its trailing OWS */
    *colon = '\0';
    *end = '\0';
    p->hname_off[p->nheaders] = (size_t)(line - p->head);
    p->hvalue_off[p->nheaders] = (size_t)(v - p->head);
    p->nheaders++;
    return 0;
}

/* Next element of a comma-separated list (RFC 9110 5.6.1) into [*s, *e); false at the end. */
static bool list_next(const char **cur, const char **s, const char **e)
{
    const char *c = *cur;
    if (*c == '\0') {
        return false;
    }
    const char *comma = strchr(c, ',');
    const char *stop = comma != NULL ? comma : c + strlen(c);
    while (c < stop && (*c == ' ' || *c == '\t')) {
        c++;
    }
    const char *t = stop;
    while (t > c && (t[-1] == ' ' || t[-1] == '\t')) {
        t--;
    }
    *s = c;
    *e = t;
    *cur = comma != NULL ? comma + 1 : stop;
    return true;
}

static bool list_has(const char *value, const char *token)
{
    const char *cur = value, *s, *e;
    size_t tl = strlen(token);
    while (list_next(&cur, &s, &e)) {
        if ((size_t)(e - s) == tl && strncasecmp(s, token, tl) == 0) {
            return true;
        }
    }
    return false;
}

/* Transfer-Encoding: exactly one coding, "chunked"; 501 names other codings. */
static int check_transfer_encoding(const char *te, struct kms_err *err)
{
    const char *cur = te, *s, *e;
    size_t nchunked = 0, nother = 0;
    while (list_next(&cur, &s, &e)) {
        if (s == e) {
            continue; /* empty list elements are ignored (RFC 9110 5.6.1) */
        }
        for (const char *c = s; c < e; c++) {
            if (!is_token_char((unsigned char)*c)) {
                return kms_err_set(err, 400, "malformed HTTP request: bad Transfer-Encoding");
            }
        }
        if (e - s == 7 && strncasecmp(s, "chunked", 7) == 0) {
            nchunked++;
        } else {
            nother++;
        }
    }
    if (nother > 0) {
        return kms_err_set(err, 501, "unsupported transfer encoding");
    }
    if (nchunked != 1) {
        return kms_err_set(err, 400, "malformed HTTP request: bad Transfer-Encoding");
    }
    return 0;
}

/* A Host value of the bytes a host[:port] may hold (RFC 3986 reg-name, IP literal, port; the
 * set Go's net/http accepts): no spaces, quotes, slashes or control bytes. */
static bool host_valid(const char *v)
{
    for (; *v != '\0'; v++) {
        unsigned char ch = (unsigned char)*v;
        if (!isalnum(ch) && strchr("!$%&'()*+,-.:;=[]_~", ch) == NULL) {
            return false;
        }
    }
    return true;
}

/* Body framing and connection semantics once all header fields are in (RFC 9112 6). */
static int headers_done(struct kms_http_parser *p, struct kms_err *err)
{
    const char *te = NULL;
    const char *expect = NULL;
    bool have_cl = false;
    bool close = false, keep = false;
    size_t cl = 0, nhost = 0;

    for (size_t i = 0; i < p->nheaders; i++) {
        const char *name = p->head + p->hname_off[i];
        const char *v = p->head + p->hvalue_off[i];
        if (strcasecmp(name, "Content-Length") == 0) {
            size_t val = 0;
            if (*v == '\0') {
                return kms_err_set(err, 400, "malformed HTTP request: bad Content-Length");
            }
            for (; *v != '\0'; v++) {
                if (!isdigit((unsigned char)*v)) {
                    return kms_err_set(err, 400, "malformed HTTP request: bad Content-Length");
                }
                /* saturate: anything past the body cap is refused as too large below */
                if (val <= p->max_body_size) {
                    val = val * 10 + (size_t)(*v - '0');
                }
            }
            if (val > p->max_body_size) {
                val = SIZE_MAX;
            }
            if (have_cl && val != cl) {
                return kms_err_set(err, 400,
                                   "malformed HTTP request: conflicting Content-Length values");
            }
            have_cl = true;
            cl = val;
        } else if (strcasecmp(name, "Transfer-Encoding") == 0) {
            if (te != NULL) {
                return kms_err_set(err, 400,
                                   "malformed HTTP request: repeated Transfer-Encoding header");
            }
            te = v;
        } else if (strcasecmp(name, "Host") == 0) {
            if (++nhost > 1) {
                return kms_err_set(err, 400, "malformed HTTP request: repeated Host header");
            }
            if (!host_valid(v)) {
                return kms_err_set(err, 400, "malformed HTTP request: malformed Host header");
            }
        } else if (strcasecmp(name, "Connection") == 0) {
            close = close || list_has(v, "close");
            keep = keep || list_has(v, "keep-alive");
        } else if (strcasecmp(name, "Expect") == 0) {
            if (expect != NULL) {
                return kms_err_set(err, 417, "unsupported Expect header");
            }
            expect = v;
        }
    }
    if (te != NULL) {
        /* a proxy may frame such a request by one header and kmsd by the other */
        if (have_cl) {
            return kms_err_set(err, 400,
                               "malformed HTTP request: both Content-Length and "
                               "Transfer-Encoding");
        }
        if (p->minor == 0) {
            return kms_err_set(err, 400, "malformed HTTP request: Transfer-Encoding in HTTP/1.0");
        }
        if (check_transfer_encoding(te, err) != 0) {
            return -1;
        }
    }
    p->keepalive = p->minor == 0 ? keep && !close : !close;
    if (have_cl && cl > p->max_body_size) {
        return kms_err_set(err, 413, MSG_TOO_LARGE);
    }
    if (nhost == 0 && p->minor == 1) {
        /* RFC 9112 3.2: a server MUST answer 400 to an HTTP/1.1 request without Host (Go's
         * net/http, which OpenBao runs on, does) */
        return kms_err_set(err, 400, "malformed HTTP request: missing required Host header");
    }
    if (expect != NULL) {
        if (strcasecmp(expect, "100-continue") != 0) {
            return kms_err_set(err, 417, "unsupported Expect header");
        }
        p->expect_continue = p->minor == 1 && (cl > 0 || te != NULL);
    }
    if (te != NULL) {
        p->chunked = true;
        p->st = PS_CHUNK_SIZE;
    } else {
        p->left = cl;
        p->st = cl > 0 ? PS_BODY : PS_DONE;
    }
    return 0;
}

static size_t skip_ws(const char *s, size_t i, size_t n)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t')) {
        i++;
    }
    return i;
}

/* token / quoted-string starting at i; returns the index after it, or 0 when malformed. */
static size_t skip_ext_value(const char *s, size_t i, size_t n)
{
    if (i < n && s[i] == '"') {
        for (i++; i < n; i++) {
            unsigned char ch = (unsigned char)s[i];
            if (ch == '"') {
                return i + 1;
            }
            if (ch == '\\') {
                if (++i == n || !is_field_char((unsigned char)s[i])) {
                    return 0;
                }
            } else if (!is_field_char(ch)) {
                return 0;
            }
        }
        return 0;
    }
    size_t start = i;
    while (i < n && is_token_char((unsigned char)s[i])) {
        i++;
    }
    return i > start ? i : 0;
}

/*
 * chunk-size [ chunk-ext ] (RFC 9112 7.1): 1*HEXDIG, then *( BWS ";" BWS name [ BWS "=" BWS
 * value ] ). Extensions are checked and ignored.
 */
static int parse_chunk_line(struct kms_http_parser *p, const char *line, size_t n, size_t *size,
                            struct kms_err *err)
{
    size_t i = 0, sz = 0;
    bool big = false;
    while (i < n && isxdigit((unsigned char)line[i])) {
        int ch = tolower((unsigned char)line[i]);
        if (sz > p->max_body_size) {
            big = true; /* stop before the value can overflow */
        } else {
            sz = sz * 16 + (size_t)(isdigit(ch) ? ch - '0' : ch - 'a' + 10);
        }
        i++;
    }
    if (i == 0) {
        return kms_err_set(err, 400, "malformed HTTP request: bad chunk size");
    }
    while (i < n) {
        i = skip_ws(line, i, n);
        if (i == n || line[i] != ';') {
            return kms_err_set(err, 400, "malformed HTTP request: bad chunk size");
        }
        i = skip_ws(line, i + 1, n);
        size_t start = i;
        while (i < n && is_token_char((unsigned char)line[i])) {
            i++;
        }
        if (i == start) {
            return kms_err_set(err, 400, "malformed HTTP request: bad chunk extension");
        }
        size_t j = skip_ws(line, i, n);
        if (j < n && line[j] == '=') {
            i = skip_ext_value(line, skip_ws(line, j + 1, n), n);
            if (i == 0) {
                return kms_err_set(err, 400, "malformed HTTP request: bad chunk extension");
            }
        }
    }
    if (big || sz > p->max_body_size - p->body_len) {
        return kms_err_set(err, 413, MSG_TOO_LARGE);
    }
    *size = sz;
    return 0;
}

/*
 * Charge a body grown to `len` bytes to the shared budget; -1 when that would take it past its
 * limit (nothing charged then). Bodies that fit the kept block cost nothing new and are free.
 */
static int charge_body(struct kms_http_parser *p, size_t len)
{
    if (p->budget == NULL || len <= FLAT_KEEP || len <= p->charged) {
        return 0;
    }
    size_t more = len - p->charged;
    size_t before = atomic_fetch_add(&p->budget->used, more);
    if (p->budget->limit > 0 && before + more > p->budget->limit) {
        atomic_fetch_sub(&p->budget->used, more);
        return -1;
    }
    p->charged = len;
    return 0;
}

/*
 * Move up to p->left body bytes from in to the end of the flat body; *done once the last one is
 * in. The bytes are wiped where they lay in `in` (they may be plaintext) before it drops them.
 */
static int take_body(struct kms_http_parser *p, struct evbuffer *in, bool *done,
                     struct kms_err *err)
{
    size_t avail = evbuffer_get_length(in);
    size_t n = avail < p->left ? avail : p->left;
    if (n > 0 && charge_body(p, p->body_len + n) != 0) {
        return kms_err_set(err, 503,
                           "too many request bytes in flight (max_request_bytes_in_flight): "
                           "retry later");
    }
    if (n > 0 && block_reserve(&p->flat, &p->flat_cap, p->body_len, p->body_len, n) != 0) {
        return kms_err_set(err, 500, "out of memory");
    }
    if (n > 0 && take_wiped(in, p->flat + p->body_len, n) != 0) {
        return kms_err_set(err, 500, "cannot read the request");
    }
    p->body_len += n;
    p->left -= n;
    *done = p->left == 0;
    return 0;
}

/* One line of the request head or the trailers. */
static int head_line(struct kms_http_parser *p, struct evbuffer *in, bool *got, struct kms_err *err)
{
    char *line = NULL;
    size_t n = 0;
    bool is_line = p->st == PS_LINE;
    const char *what = is_line ? "request line" : p->st == PS_HEADERS ? "header" : "trailer";

    *got = false;
    int r = read_line(p, in, p->max_header_size - p->header_bytes, is_line ? 414 : 431, what, &line,
                      &n, err);
    if (r <= 0) {
        return r;
    }
    *got = true;
    p->header_bytes += n + 2;
    if (p->st == PS_LINE) {
        /* empty lines before a request line are ignored (RFC 9112 2.2), within the cap */
        if (n > 0) {
            if (parse_request_line(p, line, n, err) != 0) {
                return -1;
            }
            p->head_used += n + 1; /* the target stays in it */
            p->st = PS_HEADERS;
        }
    } else if (n == 0) {
        if (p->st == PS_TRAILER) {
            p->st = PS_DONE;
        } else if (headers_done(p, err) != 0) {
            return -1;
        }
    } else {
        bool store = p->st == PS_HEADERS;
        if (parse_field_line(p, line, n, store, err) != 0) {
            return -1;
        }
        if (store) {
            p->head_used += n + 1;
        }
    }
    return 0;
}

int kms_http_parser_run(struct kms_http_parser *p, struct evbuffer *in,
                        enum kms_http_parse_event *ev, struct kms_err *err)
{
    char *line = NULL;
    size_t n = 0;

    *ev = KMS_HTTP_PARSE_MORE;
    for (;;) {
        if (p->st == PS_DONE) {
            *ev = KMS_HTTP_PARSE_REQUEST;
            break;
        }
        if (p->st == PS_LINE || p->st == PS_HEADERS || p->st == PS_TRAILER) {
            bool got = false;
            bool was_headers = p->st == PS_HEADERS;
            if (head_line(p, in, &got, err) != 0) {
                return -1;
            }
            if (!got) {
                break;
            }
            if (was_headers && p->st != PS_HEADERS && p->expect_continue) {
                p->expect_continue = false;
                *ev = KMS_HTTP_PARSE_CONTINUE;
                break;
            }
            continue;
        }
        if (p->st == PS_BODY || p->st == PS_CHUNK_DATA) {
            bool done = false;
            if (take_body(p, in, &done, err) != 0) {
                return -1;
            }
            if (!done) {
                break;
            }
            p->st = p->st == PS_BODY ? PS_DONE : PS_CHUNK_CRLF;
            continue;
        }
        if (p->st == PS_CHUNK_CRLF) {
            char crlf[2];
            if (evbuffer_get_length(in) < 2) {
                break;
            }
            if (take_wiped(in, crlf, 2) != 0 || crlf[0] != '\r' || crlf[1] != '\n') {
                return kms_err_set(err, 400,
                                   "malformed HTTP request: chunk data not followed by CRLF");
            }
            p->st = PS_CHUNK_SIZE;
            continue;
        }
        /* PS_CHUNK_SIZE */
        size_t sz = 0;
        int r = read_line(p, in, CHUNK_LINE_MAX, 400, "chunk size line", &line, &n, err);
        if (r < 0) {
            return -1;
        }
        if (r == 0) {
            break;
        }
        if (parse_chunk_line(p, line, n, &sz, err) != 0) {
            return -1;
        }
        p->left = sz;
        p->st = sz == 0 ? PS_TRAILER : PS_CHUNK_DATA;
    }
    return 0;
}
