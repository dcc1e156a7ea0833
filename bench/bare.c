/*
 * bare.c - kmsd-bare, the ceiling for `make bench`: the cheapest HTTP/1.1 server with kmsd's
 * threading model, answering every request with a fixed JSON body the size of an encrypt
 * response. Whatever kmsd does on top of this (its own HTTP parser, the API pipeline, token
 * lookup, LMDB, crypto, JSON, audit) shows up as the gap between the two.
 *
 * Same model as server/workers.c: one thread per core, each with its own event_base watching
 * its own duplicate of one listening socket (the worker that wins accept() keeps the
 * connection), keep-alive, TCP_NODELAY on accepted sockets. -reuseport gives each worker its
 * own SO_REUSEPORT listener instead (kmsd's model before it moved to one shared socket), so the
 * two can be compared.
 * Requests are parsed by libevent's evhttp (request line, headers, Content-Length body read
 * in full before the callback), which is at least as cheap as kmsd's parser. With
 * -tls-cert-file/-tls-key-file the listener speaks TLS through bufferevent_openssl with the
 * same SSL_CTX settings as crypto/tls.c.
 *
 *   kmsd-bare [-listen=127.0.0.1:8300] [-workers=N] [-reuseport]
 *             [-tls-cert-file=F -tls-key-file=F]
 *
 * Prints "kmsd-bare listening on ADDR (N workers)" once every listener is bound; stops on
 * SIGTERM/SIGINT.
 */
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* kmsd's answer to a single 64-byte encrypt, byte for byte (324 bytes). */
static const char BODY[] =
    "{\"request_id\":\"19d8e754-2468-4b34-8e95-90a6940eb052\",\"lease_id\":\"\",\"renewable\":"
    "false,"
    "\"lease_duration\":0,\"data\":{\"ciphertext\":\"vault:v1:"
    "6hWk4ccVE4YsWzxBRNt350JmAL5Tz6zqkyvhHh1Q"
    "615wAlmSgFCEWf04WSfAR6/hOG+C7uHpVtVE7JYiy0MTegK6gCivk7KbmTa0BfUee8zRU8iv6TGlOkBqAWs=\","
    "\"key_version\":1},\"wrap_info\":null,\"warnings\":null,\"auth\":null}\n";

struct worker {
    struct event_base *base;
    struct evhttp *http;
    pthread_t thread;
};

static SSL_CTX *tls_ctx;

static void on_request(struct evhttp_request *req, void *arg)
{
    (void)arg;
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    struct evbuffer *buf = evhttp_request_get_output_buffer(req);
    evhttp_add_header(out, "Content-Type", "application/json");
    evhttp_add_header(out, "Cache-Control", "no-store");
    evbuffer_add(buf, BODY, sizeof(BODY) - 1); /* copied, as kmsd copies its body */
    evhttp_send_reply(req, 200, "OK", NULL);
}

/* Every accepted connection gets a plain or a TLS bufferevent (evhttp sets its fd). */
static struct bufferevent *on_bev(struct event_base *base, void *arg)
{
    (void)arg;
    if (tls_ctx == NULL) {
        return bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    SSL *ssl = SSL_new(tls_ctx);
    if (ssl == NULL) {
        return NULL;
    }
    struct bufferevent *bev = bufferevent_openssl_socket_new(
        base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
    if (bev != NULL) {
        bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    }
    return bev;
}

static void *run(void *arg)
{
    struct worker *w = arg;
    event_base_dispatch(w->base);
    return NULL;
}

static int parse_address(const char *address, struct sockaddr_in *in)
{
    char host[64];
    const char *colon = strrchr(address, ':');
    if (colon == NULL || (size_t)(colon - address) >= sizeof(host)) {
        return -1;
    }
    memcpy(host, address, (size_t)(colon - address));
    host[colon - address] = '\0';
    memset(in, 0, sizeof(*in));
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)(int)strtol(colon + 1, NULL, 10));
    return inet_pton(AF_INET, host[0] ? host : "0.0.0.0", &in->sin_addr) == 1 ? 0 : -1;
}

int main(int argc, char **argv)
{
    const char *listen_addr = "127.0.0.1:8300";
    const char *cert = NULL, *key = NULL;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    int reuseport = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        a += a[0] == '-' && a[1] == '-' ? 2 : 1;
        if (strncmp(a, "listen=", 7) == 0) {
            listen_addr = a + 7;
        } else if (strncmp(a, "workers=", 8) == 0) {
            n = strtol(a + 8, NULL, 10);
        } else if (strcmp(a, "reuseport") == 0) {
            reuseport = 1;
        } else if (strncmp(a, "tls-cert-file=", 14) == 0) {
            cert = a + 14;
        } else if (strncmp(a, "tls-key-file=", 13) == 0) {
            key = a + 13;
        } else {
            fprintf(stderr, "usage: kmsd-bare [-listen=HOST:PORT] [-workers=N] [-reuseport] "
                            "[-tls-cert-file=F -tls-key-file=F]\n");
            return 2;
        }
    }
    if (n <= 0) {
        n = sysconf(_SC_NPROCESSORS_ONLN);
    }
    signal(SIGPIPE, SIG_IGN);
    if (evthread_use_pthreads() != 0) {
        fprintf(stderr, "kmsd-bare: libevent has no pthread support\n");
        return 1;
    }
    if (cert != NULL || key != NULL) {
        tls_ctx = SSL_CTX_new(TLS_server_method());
        if (tls_ctx == NULL || cert == NULL || key == NULL) {
            fprintf(stderr, "kmsd-bare: TLS needs -tls-cert-file and -tls-key-file\n");
            return 1;
        }
        SSL_CTX_set_min_proto_version(tls_ctx, TLS1_2_VERSION);
        SSL_CTX_set_options(tls_ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                         SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TICKET);
        if (SSL_CTX_set_cipher_list(tls_ctx, "ECDHE+AESGCM:ECDHE+CHACHA20") != 1 ||
            SSL_CTX_use_certificate_chain_file(tls_ctx, cert) != 1 ||
            SSL_CTX_use_PrivateKey_file(tls_ctx, key, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(tls_ctx) != 1) {
            fprintf(stderr, "kmsd-bare: cannot load the TLS certificate or key\n");
            ERR_print_errors_fp(stderr);
            return 1;
        }
    }
    struct sockaddr_in sin;
    if (parse_address(listen_addr, &sin) != 0) {
        fprintf(stderr, "kmsd-bare: bad listen address \"%s\"\n", listen_addr);
        return 2;
    }
    /* One listening socket shared by every worker, as server/http.c's kms_http_listen. */
    int lfd = -1;
    if (!reuseport) {
        int one = 1;
        lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
            bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) != 0 || listen(lfd, 1024) != 0) {
            perror("kmsd-bare: listen");
            return 1;
        }
    }
    struct worker *w = calloc((size_t)n, sizeof(*w));
    if (w == NULL) {
        return 1;
    }
    for (long i = 0; i < n; i++) {
        w[i].base = event_base_new();
        w[i].http = w[i].base ? evhttp_new(w[i].base) : NULL;
        if (w[i].http == NULL) {
            fprintf(stderr, "kmsd-bare: cannot create worker %ld\n", i);
            return 1;
        }
        evhttp_set_gencb(w[i].http, on_request, NULL);
        evhttp_set_bevcb(w[i].http, on_bev, NULL);
        evhttp_set_timeout(w[i].http, 120);
        evhttp_set_max_body_size(w[i].http, 32 << 20);
        evhttp_set_allowed_methods(w[i].http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                                  EVHTTP_REQ_DELETE);
        struct evconnlistener *l;
        int one = 1;
        if (reuseport) {
            l = evconnlistener_new_bind(w[i].base, NULL, NULL,
                                        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                            LEV_OPT_REUSEABLE_PORT | LEV_OPT_CLOSE_ON_EXEC,
                                        1024, (struct sockaddr *)&sin, sizeof(sin));
        } else {
            int fd = fcntl(lfd, F_DUPFD_CLOEXEC, 0);
            l = fd < 0 ? NULL
                       : evconnlistener_new(w[i].base, NULL, NULL, LEV_OPT_CLOSE_ON_FREE, -1, fd);
        }
        if (l == NULL) {
            perror("kmsd-bare: listen");
            return 1;
        }
        /* Linux copies TCP_NODELAY from the listener to every accepted socket (kmsd sets it on
         * each accepted socket) */
        setsockopt(evconnlistener_get_fd(l), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (evhttp_bind_listener(w[i].http, l) == NULL) {
            fprintf(stderr, "kmsd-bare: cannot bind evhttp to the listener\n");
            return 1;
        }
    }
    for (long i = 0; i < n; i++) {
        if (pthread_create(&w[i].thread, NULL, run, &w[i]) != 0) {
            fprintf(stderr, "kmsd-bare: cannot start thread\n");
            return 1;
        }
    }
    printf("kmsd-bare listening on %s (%ld workers, %s%s)\n", listen_addr, n,
           reuseport ? "SO_REUSEPORT listeners" : "one shared listening socket",
           tls_ctx ? ", TLS" : "");
    fflush(stdout);
    for (long i = 0; i < n; i++) {
        pthread_join(w[i].thread, NULL);
    }
    return 0;
}
