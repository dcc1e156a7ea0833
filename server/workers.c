/*
 * workers.c - one event loop per worker thread, all serving the same address.
 *
 * Each worker owns an event_base and watches its own duplicate of one listening socket; the
 * worker that wins accept() gives the connection to the worker with the fewest (server/http.c,
 * kms_http_share_accepts), and no lock is shared on the request path. (SO_REUSEPORT is not
 * used: it would let a second kmsd silently share the port; one socket makes that an
 * "address in use" error.) The API below (api/) is safe to call from every worker at once.
 * Stopping is asynchronous: each worker is told through its own loop (libevent's pthread
 * notification), stops accepting, finishes its requests in flight and ends its loop;
 * kms_workers_join waits for all of them (every loop, then every server).
 */
#include "server/server.h"

#include <event2/thread.h>
#include <fcntl.h>
#include <unistd.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct worker {
    struct kms_workers *pool;
    struct event_base *base;
    struct kms_http *http;
    struct event *stop_ev;
    struct event *hardstop;
    pthread_t thread;
    bool started;
};

struct kms_workers {
    size_t n;
    int64_t grace;
    struct worker *w;
    struct kms_http **https; /* the workers' servers, which hand connections to each other */
};

static void on_hardstop(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    (void)fd;
    (void)what;
    event_base_loopexit(w->base, NULL);
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    struct timeval tv = {(time_t)w->pool->grace, 0};
    (void)fd;
    (void)what;
    evtimer_add(w->hardstop, &tv);
    kms_http_stop_accepting(w->http); /* ends the loop once the last connection closes */
}

static void *run(void *arg)
{
    struct worker *w = arg;
    kms_http_loop_begin(w->http);
    event_base_dispatch(w->base);
    kms_http_loop_end(w->http);
    return NULL;
}

static void worker_dispose(struct worker *w)
{
    kms_http_destroy(&w->http);
    if (w->stop_ev != NULL) {
        event_free(w->stop_ev);
    }
    if (w->hardstop != NULL) {
        event_free(w->hardstop);
    }
    if (w->base != NULL) {
        event_base_free(w->base);
    }
    memset(w, 0, sizeof(*w));
}

int kms_workers_start(struct kms_api *api, const char *address, const struct kms_http_opts *opts,
                      size_t n, int64_t grace, struct kms_workers **out, char *bound,
                      size_t boundlen, struct kms_err *err)
{
    struct kms_workers *pool = NULL;
    int rc = -1;
    int lfd = -1;

    if (evthread_use_pthreads() != 0) {
        return kms_err_set(err, 500, "libevent has no pthread support");
    }
    pool = calloc(1, sizeof(*pool));
    if (pool == NULL || (pool->w = calloc(n, sizeof(*pool->w))) == NULL ||
        (pool->https = calloc(n, sizeof(*pool->https))) == NULL) {
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    pool->n = n;
    pool->grace = grace;
    if (kms_http_listen(address, &lfd, bound, boundlen, err) != 0) {
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        struct worker *w = &pool->w[i];
        w->pool = pool;
        w->base = event_base_new();
        if (w->base == NULL) {
            kms_err_set(err, 500, "cannot create an event loop");
            goto out;
        }
        int fd = fcntl(lfd, F_DUPFD_CLOEXEC, 0);
        if (fd < 0) {
            kms_err_set(err, 500, "cannot share the listening socket");
            goto out;
        }
        if (kms_http_create(w->base, api, fd, opts, &w->http, err) != 0) {
            goto out;
        }
        w->stop_ev = event_new(w->base, -1, 0, on_stop, w);
        w->hardstop = evtimer_new(w->base, on_hardstop, w);
        if (w->stop_ev == NULL || w->hardstop == NULL) {
            kms_err_set(err, 500, "cannot create worker events");
            goto out;
        }
        pool->https[i] = w->http;
    }
    kms_http_share_accepts(pool->https, n);
    for (size_t i = 0; i < n; i++) {
        if (pthread_create(&pool->w[i].thread, NULL, run, &pool->w[i]) != 0) {
            kms_err_set(err, 500, "cannot start worker thread %zu", i);
            kms_workers_stop(pool);
            goto out;
        }
        pool->w[i].started = true;
    }
    *out = pool;
    pool = NULL;
    rc = 0;
out:
    if (lfd >= 0) {
        close(lfd); /* every worker holds its own duplicate */
    }
    if (pool != NULL) {
        kms_workers_join(&pool);
    }
    return rc;
}

void kms_workers_stop(struct kms_workers *pool)
{
    for (size_t i = 0; i < pool->n; i++) {
        if (pool->w[i].stop_ev != NULL) {
            event_active(pool->w[i].stop_ev, 0, 0);
        }
    }
}

size_t kms_workers_connections(const struct kms_workers *pool, size_t i)
{
    return kms_http_connections(pool->w[i].http);
}

void kms_workers_join(struct kms_workers **poolp)
{
    struct kms_workers *pool = *poolp;
    if (pool == NULL) {
        return;
    }
    /* every loop ends before any server goes: a running worker may still hand one a socket */
    for (size_t i = 0; pool->w != NULL && i < pool->n; i++) {
        if (pool->w[i].started) {
            pthread_join(pool->w[i].thread, NULL);
        }
    }
    for (size_t i = 0; pool->w != NULL && i < pool->n; i++) {
        worker_dispose(&pool->w[i]);
    }
    free(pool->https);
    free(pool->w);
    free(pool);
    *poolp = NULL;
}
