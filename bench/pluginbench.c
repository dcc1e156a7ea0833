/*
 * pluginbench.c - load generator for the KMS v2 plugin socket (`make bench`, bench/plugin.sh):
 * C connections (one thread each, libnghttp2 client sessions), each keeping D unary gRPC calls
 * in flight, for S seconds. Decrypt calls decrypt one ciphertext made by an Encrypt first (as
 * the apiserver decrypts its DEK seeds). Prints one line:
 *   BENCH op=decrypt calls=N seconds=S rps=R p50_us=.. p99_us=.. max_us=.. errors=E
 *
 *   kmsd-pluginbench -socket=PATH [-op=encrypt|decrypt|status] [-seconds=5] [-conns=4]
 *                    [-depth=16]
 */
#include "api.pb-c.h"

#include <nghttp2/nghttp2.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_SAMPLES (4u << 20)

static const char *sock_path;
static const char *op = "decrypt";
static double seconds = 5;
static int nconns = 4, depth = 16;
static uint8_t *req_msg; /* prefix + message, the same for every call */
static size_t req_len;
static const char *method_path;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

struct call {
    int64_t t0;
    size_t off;
    bool ok;
    uint8_t *resp; /* the response message, for the one Encrypt made before a decrypt run */
    size_t resp_len;
};

struct worker {
    pthread_t th;
    int fd;
    nghttp2_session *s;
    int64_t end_us;
    int inflight;
    uint64_t calls, errors;
    uint32_t *lat; /* microseconds */
    size_t nlat;
    bool keep; /* keep the response bytes (setup call) */
    struct call *last;
};

static ssize_t on_send(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *ud)
{
    struct worker *w = ud;
    (void)s;
    (void)flags;
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(w->fd, data + off, len - off);
        if (n <= 0) {
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        off += (size_t)n;
    }
    return (ssize_t)len;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    (void)flags;
    (void)ud;
    struct call *c = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (c != NULL && namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        c->ok = valuelen == 1 && value[0] == '0';
    }
    return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                   void *ud)
{
    struct worker *w = ud;
    (void)flags;
    struct call *c = nghttp2_session_get_stream_user_data(s, id);
    if (c != NULL && w->keep) {
        uint8_t *g = realloc(c->resp, c->resp_len + len);
        if (g == NULL) {
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        memcpy(g + c->resp_len, data, len);
        c->resp = g;
        c->resp_len += len;
    }
    return 0;
}

static int on_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
    struct worker *w = ud;
    struct call *c = nghttp2_session_get_stream_user_data(s, id);
    if (c == NULL) {
        return 0;
    }
    int64_t us = now_us() - c->t0;
    w->inflight--;
    w->calls++;
    if (!c->ok || code != 0) {
        w->errors++;
    }
    if (w->nlat < MAX_SAMPLES / (size_t)nconns) {
        w->lat[w->nlat++] = (uint32_t)(us > UINT32_MAX ? UINT32_MAX : us);
    }
    if (w->keep) {
        free(w->last);
        w->last = c;
    } else {
        free(c);
    }
    return 0;
}

static ssize_t read_req(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                        nghttp2_data_source *src, void *ud)
{
    struct call *c = src->ptr;
    (void)s;
    (void)id;
    (void)ud;
    size_t n = req_len - c->off < len ? req_len - c->off : len;
    memcpy(buf, req_msg + c->off, n);
    c->off += n;
    if (c->off == req_len) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    }
    return (ssize_t)n;
}

#define NV(n, v)                                                                                   \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE             \
    }

static int submit(struct worker *w)
{
    struct call *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return -1;
    }
    nghttp2_nv nva[] = {NV(":method", "POST"),
                        NV(":scheme", "http"),
                        NV(":path", method_path),
                        NV(":authority", "localhost"),
                        NV("content-type", "application/grpc"),
                        NV("te", "trailers")};
    nghttp2_data_provider prd;
    prd.source.ptr = c;
    prd.read_callback = read_req;
    c->t0 = now_us();
    if (nghttp2_submit_request(w->s, NULL, nva, sizeof(nva) / sizeof(nva[0]), &prd, c) < 0) {
        free(c);
        return -1;
    }
    w->inflight++;
    return 0;
}

static int connect_to(struct worker *w)
{
    struct sockaddr_un sa;
    nghttp2_session_callbacks *cbs;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock_path);
    w->fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (w->fd < 0 || connect(w->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        perror("connect");
        return -1;
    }
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_send_callback(cbs, on_send);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_close);
    int rc = nghttp2_session_client_new(&w->s, cbs, w);
    nghttp2_session_callbacks_del(cbs);
    if (rc != 0) {
        return -1;
    }
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1000}};
    return nghttp2_submit_settings(w->s, NGHTTP2_FLAG_NONE, iv, 1) == 0 ? 0 : -1;
}

/* Run calls until end_us (0: exactly `once` calls), then drain. */
static int run(struct worker *w, int once)
{
    uint8_t buf[65536];
    int submitted = 0;
    for (;;) {
        bool more = once > 0 ? submitted < once : now_us() < w->end_us;
        while (more && w->inflight < depth && (once == 0 || submitted < once)) {
            if (submit(w) != 0) {
                return -1;
            }
            submitted++;
        }
        if (nghttp2_session_send(w->s) != 0) {
            return -1;
        }
        if (!more && w->inflight == 0) {
            return 0;
        }
        ssize_t n = read(w->fd, buf, sizeof(buf));
        if (n <= 0 || nghttp2_session_mem_recv(w->s, buf, (size_t)n) != n) {
            fprintf(stderr, "pluginbench: connection lost\n");
            return -1;
        }
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    if (run(w, 0) != 0) {
        w->errors++;
    }
    return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void set_request(const uint8_t *msg, size_t len)
{
    free(req_msg);
    req_len = len + 5;
    req_msg = malloc(req_len);
    req_msg[0] = 0;
    req_msg[1] = (uint8_t)(len >> 24);
    req_msg[2] = (uint8_t)(len >> 16);
    req_msg[3] = (uint8_t)(len >> 8);
    req_msg[4] = (uint8_t)len;
    if (len > 0) {
        memcpy(req_msg + 5, msg, len);
    }
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "-socket=", 8) == 0) {
            sock_path = argv[i] + 8;
        } else if (strncmp(argv[i], "-op=", 4) == 0) {
            op = argv[i] + 4;
        } else if (strncmp(argv[i], "-seconds=", 9) == 0) {
            seconds = strtod(argv[i] + 9, NULL);
        } else if (strncmp(argv[i], "-conns=", 7) == 0) {
            nconns = (int)strtol(argv[i] + 7, NULL, 10);
        } else if (strncmp(argv[i], "-depth=", 7) == 0) {
            depth = (int)strtol(argv[i] + 7, NULL, 10);
        } else {
            fprintf(stderr,
                    "usage: %s -socket=PATH [-op=encrypt|decrypt|status] [-seconds=5] "
                    "[-conns=4] [-depth=16]\n",
                    argv[0]);
            return 2;
        }
    }
    if (sock_path == NULL || nconns < 1 || depth < 1 || seconds <= 0) {
        fprintf(stderr, "pluginbench: -socket is required\n");
        return 2;
    }
    uint8_t seed[32];
    for (size_t i = 0; i < sizeof(seed); i++) {
        seed[i] = (uint8_t)(i * 7 + 1);
    }
    V2__EncryptRequest er = V2__ENCRYPT_REQUEST__INIT;
    er.plaintext.data = seed;
    er.plaintext.len = sizeof(seed);
    er.uid = (char *)"pluginbench";
    uint8_t ebuf[256];
    size_t elen = v2__encrypt_request__pack(&er, ebuf);
    set_request(ebuf, elen);
    method_path = "/v2.KeyManagementService/Encrypt";
    if (strcmp(op, "decrypt") == 0) {
        /* one Encrypt first: its ciphertext and key_id are what every Decrypt sends */
        struct worker w0;
        memset(&w0, 0, sizeof(w0));
        w0.keep = true;
        w0.lat = calloc(16, sizeof(uint32_t));
        int d = depth;
        depth = 1;
        if (connect_to(&w0) != 0 || run(&w0, 1) != 0 || w0.errors != 0 || w0.last == NULL ||
            w0.last->resp_len < 5) {
            fprintf(stderr, "pluginbench: the first Encrypt failed\n");
            return 1;
        }
        depth = d;
        V2__EncryptResponse *resp =
            v2__encrypt_response__unpack(NULL, w0.last->resp_len - 5, w0.last->resp + 5);
        if (resp == NULL) {
            fprintf(stderr, "pluginbench: bad EncryptResponse\n");
            return 1;
        }
        V2__DecryptRequest dr = V2__DECRYPT_REQUEST__INIT;
        dr.ciphertext = resp->ciphertext;
        dr.key_id = resp->key_id;
        dr.uid = (char *)"pluginbench";
        size_t dlen = v2__decrypt_request__get_packed_size(&dr);
        uint8_t *dbuf = malloc(dlen);
        v2__decrypt_request__pack(&dr, dbuf);
        set_request(dbuf, dlen);
        free(dbuf);
        v2__encrypt_response__free_unpacked(resp, NULL);
        method_path = "/v2.KeyManagementService/Decrypt";
        nghttp2_session_del(w0.s);
        close(w0.fd);
    } else if (strcmp(op, "status") == 0) {
        set_request(NULL, 0);
        method_path = "/v2.KeyManagementService/Status";
    } else if (strcmp(op, "encrypt") != 0) {
        fprintf(stderr, "pluginbench: -op is encrypt, decrypt or status\n");
        return 2;
    }
    struct worker *ws = calloc((size_t)nconns, sizeof(*ws));
    int64_t start = now_us();
    for (int i = 0; i < nconns; i++) {
        ws[i].lat = calloc(MAX_SAMPLES / (size_t)nconns + 1, sizeof(uint32_t));
        ws[i].end_us = start + (int64_t)(seconds * 1e6);
        if (connect_to(&ws[i]) != 0) {
            return 1;
        }
        pthread_create(&ws[i].th, NULL, worker_main, &ws[i]);
    }
    uint64_t calls = 0, errors = 0;
    size_t n = 0;
    for (int i = 0; i < nconns; i++) {
        pthread_join(ws[i].th, NULL);
        calls += ws[i].calls;
        errors += ws[i].errors;
        n += ws[i].nlat;
    }
    double took = (double)(now_us() - start) / 1e6;
    uint32_t *all = malloc((n ? n : 1) * sizeof(uint32_t));
    size_t k = 0;
    for (int i = 0; i < nconns; i++) {
        memcpy(all + k, ws[i].lat, ws[i].nlat * sizeof(uint32_t));
        k += ws[i].nlat;
    }
    qsort(all, n, sizeof(uint32_t), cmp_u32);
    uint32_t p50 = n ? all[n / 2] : 0, p99 = n ? all[n * 99 / 100] : 0, mx = n ? all[n - 1] : 0;
    printf(
        "BENCH op=%s calls=%llu seconds=%.2f rps=%.0f p50_us=%u p99_us=%u max_us=%u errors=%llu\n",
        op, (unsigned long long)calls, took, (double)calls / took, p50, p99, mx,
        (unsigned long long)errors);
    return errors == 0 && calls > 0 ? 0 : 1;
}
