/*
 * http_feed.h - drive the socket-free HTTP/1.1 parser over a byte stream, `step` bytes at a
 * time, as a connection would; shared by tests/server/test_http.c and tests/fuzz/fuzz_http.c.
 */
#ifndef KMS_TESTS_HTTP_FEED_H
#define KMS_TESTS_HTTP_FEED_H

#include "server/server.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Called for each complete request, before the parser is reset. */
typedef void (*kms_feed_request_fn)(struct kms_http_parser *p, const struct kms_http_req *req,
                                    void *ctx);

struct kms_feed_result {
    size_t nreq;
    size_t ncontinue;
    int status; /* 0, or the refusal */
    char msg[512];
    bool idle; /* no refusal, and the parser is between requests at the end */
};

/* Parse len bytes fed `step` at a time (0 = all at once) until a refusal or the end. */
static void kms_feed(const void *data, size_t len, size_t step, size_t head_max, size_t body_max,
                     kms_feed_request_fn on_request, void *ctx, struct kms_feed_result *r)
{
    struct kms_http_parser *p = NULL;
    struct evbuffer *in = evbuffer_new();
    size_t fed = 0;

    memset(r, 0, sizeof(*r));
    if (in == NULL || kms_http_parser_create(head_max, body_max, NULL, &p) != 0) {
        abort();
    }
    if (step == 0) {
        step = len;
    }
    while (r->status == 0 && fed < len) {
        size_t n = len - fed < step ? len - fed : step;
        if (evbuffer_add(in, (const char *)data + fed, n) != 0) {
            abort();
        }
        fed += n;
        for (;;) {
            enum kms_http_parse_event ev;
            struct kms_err err;
            struct kms_http_req req;
            if (kms_http_parser_run(p, in, &ev, &err) != 0) {
                r->status = err.status;
                snprintf(r->msg, sizeof(r->msg), "%s", err.msg);
                break;
            }
            if (ev == KMS_HTTP_PARSE_MORE) {
                break;
            }
            if (ev == KMS_HTTP_PARSE_CONTINUE) {
                r->ncontinue++;
                continue;
            }
            if (kms_http_parser_request(p, &req) != 0) {
                abort();
            }
            r->nreq++;
            on_request(p, &req, ctx);
            kms_http_parser_reset(p);
            if (!kms_http_parser_idle(p)) {
                abort();
            }
        }
    }
    r->idle = r->status == 0 && kms_http_parser_idle(p);
    kms_http_parser_destroy(&p);
    evbuffer_free(in);
}

#endif
