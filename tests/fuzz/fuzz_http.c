/*
 * fuzz_http.c - the HTTP/1.1 request parser of server/http.c, without sockets. The first
 * input byte picks a split size; the rest is a byte stream from a client. The stream is
 * parsed twice, all at once and in pieces of that size, and both runs must produce the same
 * requests and the same refusal (the parser may not depend on how TCP splits bytes). Every
 * request handed out must satisfy the grammar the parser promises (token method, origin-form
 * target, token field names, field values without control bytes or outer blanks, body within
 * the cap), and every refusal must carry a known status and a message.
 */
#include "tests/server/http_feed.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HEAD_MAX 512
#define BODY_MAX 1024

struct outcome {
    uint64_t digest;
    struct kms_feed_result r;
};

static void mix(uint64_t *h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        *h = (*h ^ b[i]) * 0x100000001b3ULL;
    }
    *h = (*h ^ 0xff) * 0x100000001b3ULL; /* separator */
}

static bool is_tchar(unsigned char ch)
{
    return ch > 0x20 && ch < 0x7f && strchr("\"(),/:;<=>?@[\\]{}", ch) == NULL;
}

static void check_request(const struct kms_http_req *r)
{
    size_t ml = strlen(r->method);
    if (ml == 0 || ml > 16 || r->target[0] != '/') {
        abort();
    }
    for (size_t i = 0; i < ml; i++) {
        if (!is_tchar((unsigned char)r->method[i])) {
            abort();
        }
    }
    for (const char *t = r->target; *t != '\0'; t++) {
        if ((unsigned char)*t <= 0x20 || (unsigned char)*t >= 0x7f) {
            abort();
        }
    }
    if (r->nheaders > 100 || r->body_len > BODY_MAX || (r->body_len > 0 && r->body == NULL)) {
        abort();
    }
    for (size_t i = 0; i < r->nheaders; i++) {
        const char *n = r->headers[i].name, *v = r->headers[i].value;
        size_t vl = strlen(v);
        if (n[0] == '\0') {
            abort();
        }
        for (; *n != '\0'; n++) {
            if (!is_tchar((unsigned char)*n)) {
                abort();
            }
        }
        if (vl > 0 && (v[0] == ' ' || v[0] == '\t' || v[vl - 1] == ' ' || v[vl - 1] == '\t')) {
            abort();
        }
        for (size_t j = 0; j < vl; j++) {
            unsigned char ch = (unsigned char)v[j];
            if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
                abort();
            }
        }
    }
}

static void on_request(struct kms_http_parser *p, const struct kms_http_req *req, void *ctx)
{
    uint64_t *digest = ctx;
    check_request(req);
    mix(digest, req->method, strlen(req->method));
    mix(digest, req->target, strlen(req->target));
    for (size_t i = 0; i < req->nheaders; i++) {
        mix(digest, req->headers[i].name, strlen(req->headers[i].name));
        mix(digest, req->headers[i].value, strlen(req->headers[i].value));
    }
    mix(digest, req->body, req->body_len);
    uint8_t ka = kms_http_parser_keepalive(p);
    mix(digest, &ka, 1);
}

static void run(const uint8_t *data, size_t size, size_t step, struct outcome *o)
{
    static const int known[] = {400, 405, 413, 414, 417, 431, 501, 505};
    bool ok = false;

    memset(o, 0, sizeof(*o));
    o->digest = 0xcbf29ce484222325ULL;
    kms_feed(data, size, step, HEAD_MAX, BODY_MAX, on_request, &o->digest, &o->r);
    if (o->r.status == 0) {
        return;
    }
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        ok = ok || o->r.status == known[i];
    }
    if (!ok || (o->r.status != 405 && o->r.msg[0] == '\0')) {
        abort();
    }
    mix(&o->digest, o->r.msg, strlen(o->r.msg));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct outcome whole, pieces;
    if (size < 1) {
        return 0;
    }
    size_t step = (size_t)(data[0] % 32) + 1;
    run(data + 1, size - 1, size, &whole);
    run(data + 1, size - 1, step, &pieces);
    if (whole.digest != pieces.digest || whole.r.nreq != pieces.r.nreq ||
        whole.r.ncontinue != pieces.r.ncontinue || whole.r.status != pieces.r.status ||
        whole.r.idle != pieces.r.idle) {
        abort();
    }
    return 0;
}
