/*
 * server.c - one plugin server: a thread running a libevent loop over the unix socket (accept,
 * read into the connection's HTTP/2 session, write what it sends), and a pool of threads that
 * run the calls (the backend may wait on storage, the audit log or a remote server). A
 * finished call comes back to the loop through a locked queue and an activated event; when
 * its connection or stream is gone by then, the answer is dropped. A call whose stream the
 * client resets (RST_STREAM), or whose connection closes, before a call thread has taken it is
 * never run: it is marked cancelled and the thread that takes it answers CANCELLED at once (a
 * client opening and resetting streams in a loop, as in HTTP/2 "rapid reset", cannot make the
 * plugin decrypt what nobody waits for).
 *
 * Deadlines (grpc-timeout): each connection has a timer set to the earliest deadline of its
 * unanswered calls. When it fires, kms_h2_expire answers DEADLINE_EXCEEDED to the calls whose
 * deadline has passed, however long their call thread still takes (a remote key service, an
 * audit fsync); those still waiting for a call thread are marked so and never run, and a
 * running one's answer is dropped when it comes. The call thread checks the deadline too
 * (kms_plugin_call): not run when it has passed, never a late OK.
 *
 * Stop: the listener closes, every connection gets a GOAWAY, calls in flight finish and are
 * answered, and each connection closes once it has nothing open; after the grace time the
 * loop ends regardless.
 */
#include "kmsplugin/kmsplugin_int.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNECTIONS 1024
#define HANDSHAKE_SECONDS 10   /* a connection without its preface by then is closed */
#define WRITE_STALL_SECONDS 30 /* a client that takes none of its answers this long: closed */
#define REQUEST_SECONDS 10     /* a call whose request is not complete by then is reset */
/* Unsent bytes per connection before it stops reading (until they are out): an answer is at
 * most ~1.1 KiB, so for a client that reads its answers this only holds back its next requests
 * a moment, while one that sends requests without reading the answers holds this much of the
 * process until WRITE_STALL_SECONDS close it (at 4 MiB, 16 such connections were past the
 * sidecar's 64Mi memory limit within seconds). The answers of calls in flight come on top,
 * bounded by the streams. */
#define MAX_OUTPUT (64u << 10)
#define LINGER_SECONDS 2   /* how long a finished connection waits for the client's close */
#define GOAWAY_ACK_MS 1000 /* stop: how long the shutdown PING may go unacknowledged */
/* Calls waiting for a call thread, on all connections: beyond either, a call is refused with
 * RESOURCE_EXHAUSTED (a reset stream leaves HTTP/2's concurrent-stream count at once, so
 * without these a client resetting calls in a loop could queue them without end while the
 * call threads are busy) */
#define MAX_QUEUED_CALLS 4096
#define MAX_QUEUED_BYTES (64u << 20)

struct conn;

struct job {
    struct job *next;          /* in the pool's todo or done list */
    struct job *cprev, *cnext; /* in its connection's jobs (loop thread only) */
    /* 0, or why nobody waits for its answer any more: KMS_GRPC_CANCELLED (the client reset the
     * stream or closed the connection), KMS_GRPC_DEADLINE_EXCEEDED (answered at its deadline);
     * the first reason stays */
    atomic_int cancelled;
    struct conn *conn;
    int32_t stream_id;
    enum kms_plugin_method m;
    int64_t deadline_ms; /* KMS_PLUGIN_NO_DEADLINE: none */
    uint8_t *in;
    size_t inlen;
    int code;
    uint8_t *out;
    size_t outlen;
    char msg[400];
};

struct conn {
    struct kms_plugin *p;
    struct conn *prev, *next;
    struct bufferevent *bev;
    struct kms_h2 *h2;
    size_t pending;      /* jobs of this connection not yet back */
    struct job *jobs;    /* those jobs (conn_close cancels them all) */
    bool greeted;        /* the client's preface is in: the handshake deadline is off */
    int64_t deadline_ms; /* of the handshake (kms_plugin_mono_ms) */
    bool dead;           /* socket closed: freed when pending reaches 0 */
    bool lingering;      /* everything sent, write side shut: waiting for the client's close */
    struct event *deadline_ev; /* at the earliest deadline of its calls (kms_h2_expire) */
    int64_t armed_ms;          /* when it fires; KMS_PLUGIN_NO_DEADLINE: not armed */
};

struct kms_plugin {
    struct kms_plugin_core core;
    struct kms_plugin_opts o;
    char *socket_path;
    char *socket_group;
    /* the socket file this plugin bound: removed at the end only if it is still that file (a
     * kmsd started meanwhile on the same path has replaced it with its own) */
    bool sock_known;
    dev_t sock_dev;
    ino_t sock_ino;
    struct event_base *base;
    struct evconnlistener *listener;
    struct event *done_ev, *stop_ev, *grace_ev, *final_ev;
    pthread_t loop_thread;
    bool loop_started;
    struct conn *conns;
    size_t nconns;
    bool stopping;
    time_t full_logged;     /* the last "connections full" warning */
    struct event *rest_ev;  /* accept(2) failing: the listener rests 100 ms */
    struct event *sweep_ev; /* every second: calls whose request stalled are reset */
    time_t rest_logged;
    /* the pool */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *todo, *todo_tail;
    size_t nqueued, queued_bytes; /* the jobs in todo and their request bytes */
    struct job *done;
    bool quit;
    pthread_t *threads;
    size_t nthreads;
};

static void plog(struct kms_plugin *p, const char *level, const char *msg, const char *detail)
{
    if (p->o.log != NULL) {
        p->o.log(p->o.log_arg, level, msg, detail);
    }
}

static void job_free(struct job *j)
{
    kms_free_wipe((void **)&j->in, j->inlen);
    kms_free_wipe((void **)&j->out, j->outlen);
    free(j);
}

/* ---- the pool ------------------------------------------------------------------------------ */

static void *pool_main(void *arg)
{
    struct kms_plugin *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (p->todo == NULL && !p->quit) {
            pthread_cond_wait(&p->cv, &p->mu);
        }
        struct job *j = p->todo;
        if (j == NULL) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        p->todo = j->next;
        if (p->todo == NULL) {
            p->todo_tail = NULL;
        }
        p->nqueued--;
        p->queued_bytes -= j->inlen;
        pthread_mutex_unlock(&p->mu);
        kms_plugin_metrics_queued(-1);

        int why = atomic_load(&j->cancelled);
        if (why != 0) {
            j->code = why; /* nobody waits for the answer: not run */
            snprintf(j->msg, sizeof(j->msg), "%s",
                     why == KMS_GRPC_DEADLINE_EXCEEDED ? "deadline exceeded before the call ran"
                                                       : "the call was cancelled");
            kms_plugin_metrics_refused(j->m, why);
        } else {
            j->code = kms_plugin_call(&p->core, j->m, j->in, j->inlen, j->deadline_ms, &j->out,
                                      &j->outlen, j->msg, sizeof(j->msg));
        }
        kms_free_wipe((void **)&j->in, j->inlen);
        j->inlen = 0;

        pthread_mutex_lock(&p->mu);
        j->next = p->done;
        p->done = j;
        pthread_mutex_unlock(&p->mu);
        event_active(p->done_ev, EV_READ, 0);
    }
}

/* ---- connections --------------------------------------------------------------------------- */

static void conn_free(struct conn *c)
{
    struct kms_plugin *p = c->p;
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else if (p->conns == c) {
        p->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    free(c);
}

static void maybe_finish(struct kms_plugin *p)
{
    if (p->stopping && p->nconns == 0) {
        event_base_loopbreak(p->base);
    }
}

/* Close the socket now; the struct stays until its jobs are back. */
static void conn_close(struct conn *c)
{
    struct kms_plugin *p = c->p;
    if (c->dead) {
        return;
    }
    c->dead = true;
    for (struct job *j = c->jobs; j != NULL; j = j->cnext) {
        int none = 0; /* answers nobody will read */
        atomic_compare_exchange_strong(&j->cancelled, &none, KMS_GRPC_CANCELLED);
    }
    if (c->deadline_ev != NULL) {
        event_free(c->deadline_ev);
        c->deadline_ev = NULL;
    }
    kms_h2_destroy(&c->h2);
    if (c->bev != NULL) {
        bufferevent_free(c->bev);
        c->bev = NULL;
    }
    p->nconns--;
    if (c->pending == 0) {
        conn_free(c);
    }
    maybe_finish(p);
}

/*
 * The session is over: shut the write side and wait (briefly) for the client to close. Closing
 * at once while the client's last frames (WINDOW_UPDATE, SETTINGS ACK) sit unread would reset
 * the connection, and a client may then drop answers it has received but not yet read.
 */
static void conn_linger(struct conn *c)
{
    if (c->lingering) {
        return;
    }
    c->lingering = true;
    if (shutdown(bufferevent_getfd(c->bev), SHUT_WR) != 0) {
        conn_close(c);
        return;
    }
    struct timeval tv = {LINGER_SECONDS, 0};
    bufferevent_set_timeouts(c->bev, &tv, NULL);
    bufferevent_enable(c->bev, EV_READ);
}

/* After the session changed: close when it is over (or, when stopping, has nothing open). */
static void conn_check(struct conn *c)
{
    if (c->dead || c->lingering) {
        return;
    }
    bool unsent = evbuffer_get_length(bufferevent_get_output(c->bev)) > 0;
    if (unsent) {
        return; /* the write callback checks again once it is out */
    }
    /* stopping: a connection with no call open ends now, whether or not its client answered
     * the shutdown PING (a call it sends meanwhile is refused with the connection: nothing of
     * it ran); one with calls open waits for them (and for the final GOAWAY, kms_h2_goaway) */
    if (kms_h2_done(c->h2) ||
        (c->p->stopping && kms_h2_open_streams(c->h2) == 0 && c->pending == 0)) {
        conn_linger(c);
    }
}

static int conn_send(void *arg, const uint8_t *data, size_t len)
{
    struct conn *c = arg;
    return evbuffer_add(bufferevent_get_output(c->bev), data, len) == 0 ? 0 : -1;
}

/* A call not answered yet that nobody waits for any more (the client reset its stream, or its
 * deadline passed and it was answered DEADLINE_EXCEEDED): if no thread has taken it, it will
 * not run. */
static void conn_cancel(void *arg, int32_t stream_id, void *call, int code)
{
    struct job *j = call; /* conn_call's: still on its connection's list (on_done answers it
                           * before it is freed, and the session then forgets it) */
    (void)arg;
    (void)stream_id;
    if (j != NULL) {
        int none = 0;
        atomic_compare_exchange_strong(&j->cancelled, &none, code);
    }
}

/* Let the deadline timer fire by at_ms (a deadline; KMS_PLUGIN_NO_DEADLINE: none new). It wakes
 * at most an hour ahead (a grpc-timeout may say 99999999H) and looks again then. */
static void conn_arm(struct conn *c, int64_t at_ms)
{
    if (at_ms == KMS_PLUGIN_NO_DEADLINE || at_ms >= c->armed_ms) {
        return;
    }
    int64_t now = kms_plugin_mono_ms();
    int64_t wait = at_ms > now ? at_ms - now : 0;
    if (wait > 3600000) {
        wait = 3600000;
    }
    struct timeval tv = {(time_t)(wait / 1000), (suseconds_t)((wait % 1000) * 1000)};
    if (evtimer_add(c->deadline_ev, &tv) == 0) {
        c->armed_ms = now + wait;
    }
}

/* The deadline timer: answer the calls whose deadline has passed, wait for the next one. */
static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    (void)fd;
    (void)what;
    c->armed_ms = KMS_PLUGIN_NO_DEADLINE;
    if (c->dead || c->lingering) {
        return; /* a lingering one has sent all it will send */
    }
    int64_t next = KMS_PLUGIN_NO_DEADLINE;
    if (kms_h2_expire(c->h2, &next) != 0) {
        conn_close(c);
        return;
    }
    conn_arm(c, next);
    conn_check(c); /* last: it may free c */
}

static void *conn_call(void *arg, struct kms_h2 *h, int32_t stream_id, enum kms_plugin_method m,
                       uint8_t *msg, size_t len, int64_t deadline_ms)
{
    struct conn *c = arg;
    struct kms_plugin *p = c->p;
    struct job *j = calloc(1, sizeof(*j));
    if (j == NULL) {
        kms_free_wipe((void **)&msg, len);
        if (kms_h2_answer(h, stream_id, KMS_GRPC_RESOURCE_EXHAUSTED, NULL, 0, "out of memory") !=
            0) {
            /* the session then fails when it next sends */
        }
        return NULL;
    }
    j->conn = c;
    j->stream_id = stream_id;
    j->m = m;
    j->in = msg;
    j->inlen = len;
    j->deadline_ms = deadline_ms;
    atomic_init(&j->cancelled, 0);
    pthread_mutex_lock(&p->mu);
    if (p->nqueued >= MAX_QUEUED_CALLS || p->queued_bytes + len > MAX_QUEUED_BYTES) {
        pthread_mutex_unlock(&p->mu);
        job_free(j);
        kms_plugin_metrics_refused(m, KMS_GRPC_RESOURCE_EXHAUSTED);
        if (kms_h2_answer(h, stream_id, KMS_GRPC_RESOURCE_EXHAUSTED, NULL, 0,
                          "too many calls waiting for a call thread; retry") != 0) {
            /* the session then fails when it next sends */
        }
        return NULL;
    }
    p->nqueued++;
    p->queued_bytes += len;
    j->cprev = NULL;
    j->cnext = c->jobs;
    if (c->jobs != NULL) {
        c->jobs->cprev = j;
    }
    c->jobs = j;
    c->pending++;
    kms_plugin_metrics_queued(1);
    if (p->todo_tail != NULL) {
        p->todo_tail->next = j;
    } else {
        p->todo = j;
    }
    p->todo_tail = j;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return j;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len = evbuffer_get_length(in);
    if (c->lingering) {
        evbuffer_drain(in, len); /* read and dropped until the client closes */
        return;
    }
    uint8_t *data = evbuffer_pullup(in, -1);
    if (len > 0 && (data == NULL || kms_h2_recv(c->h2, data, len) != 0)) {
        conn_close(c);
        return;
    }
    evbuffer_drain(in, len);
    conn_arm(c, kms_h2_new_deadline(c->h2));
    if (!c->greeted) {
        if (kms_h2_greeted(c->h2)) {
            /* a client: idle from now on is fine, as long as it takes its answers */
            c->greeted = true;
            struct timeval wtv = {WRITE_STALL_SECONDS, 0};
            bufferevent_set_timeouts(bev, NULL, &wtv);
        } else if (kms_plugin_mono_ms() > c->deadline_ms) {
            conn_close(c); /* bytes, but no preface in time (one byte at a time, say) */
            return;
        }
    }
    if (evbuffer_get_length(bufferevent_get_output(bev)) > MAX_OUTPUT) {
        bufferevent_disable(bev, EV_READ); /* a client that does not read its answers */
    }
    conn_check(c);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    bufferevent_enable(bev, EV_READ);
    conn_check(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    (void)bev;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
        conn_close(c); /* calls in flight finish; their answers are dropped */
    }
}

/* accept(2) failed (out of descriptors: the process shares them with the HTTP side): rest
 * 100 ms instead of spinning on a socket that stays readable; a warning at most every 10 s */
static void on_accept_error(struct evconnlistener *l, void *arg)
{
    struct kms_plugin *p = arg;
    int e = EVUTIL_SOCKET_ERROR();
    if (e == EINTR || e == ECONNABORTED || e == EPROTO) {
        return;
    }
    time_t now = time(NULL);
    if (now - p->rest_logged >= 10) {
        p->rest_logged = now;
        plog(p, "error", "kms plugin: cannot accept connections; pausing", strerror(e));
    }
    evconnlistener_disable(l);
    struct timeval tv = {0, 100000};
    evtimer_add(p->rest_ev, &tv);
}

/* Reset the calls whose request began REQUEST_SECONDS ago and is still not complete: a KMS
 * request is at most 64 KiB, sent at once; unfinished ones hold the buffer budget that all
 * clients of the socket share. Likewise the calls answered REQUEST_SECONDS ago whose answer is
 * still not out (the client keeps its flow-control window shut). */
static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    struct kms_plugin *p = arg;
    (void)fd;
    (void)what;
    int64_t before_ms = kms_plugin_mono_ms() - REQUEST_SECONDS * 1000;
    for (struct conn *c = p->conns, *next; c != NULL; c = next) {
        next = c->next;
        if (c->dead || c->lingering || c->h2 == NULL) {
            continue;
        }
        if (kms_h2_reset_stalled(c->h2, before_ms) != 0) {
            conn_close(c);
        } else {
            conn_check(c);
        }
    }
}

static void on_rest_over(evutil_socket_t fd, short what, void *arg)
{
    struct kms_plugin *p = arg;
    (void)fd;
    (void)what;
    if (p->listener != NULL && !p->stopping) {
        evconnlistener_enable(p->listener);
    }
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    struct kms_plugin *p = arg;
    (void)l;
    (void)sa;
    (void)salen;
    if (p->stopping || p->nconns >= MAX_CONNECTIONS) {
        evutil_closesocket(fd);
        time_t now = time(NULL);
        if (!p->stopping && now - p->full_logged >= 10) {
            p->full_logged = now;
            plog(p, "warn",
                 "kms plugin: connection refused: 1024 connections open (idle clients of the "
                 "socket use them up)",
                 p->socket_path);
        }
        return;
    }
    struct conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        evutil_closesocket(fd);
        return;
    }
    c->p = p;
    c->armed_ms = KMS_PLUGIN_NO_DEADLINE;
    c->bev = bufferevent_socket_new(p->base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->deadline_ev = evtimer_new(p->base, on_deadline, c);
    if (c->bev == NULL || c->deadline_ev == NULL ||
        kms_h2_create(conn_call, conn_cancel, conn_send, c, &c->h2) != 0) {
        if (c->bev != NULL) {
            bufferevent_free(c->bev);
        } else {
            evutil_closesocket(fd);
        }
        if (c->deadline_ev != NULL) {
            event_free(c->deadline_ev);
        }
        free(c);
        return;
    }
    c->next = p->conns;
    if (p->conns != NULL) {
        p->conns->prev = c;
    }
    p->conns = c;
    p->nconns++;
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    struct timeval hs = {HANDSHAKE_SECONDS, 0};
    struct timeval wtv = {WRITE_STALL_SECONDS, 0};
    bufferevent_set_timeouts(c->bev, &hs, &wtv); /* until the client's preface */
    c->deadline_ms = kms_plugin_mono_ms() + HANDSHAKE_SECONDS * 1000;
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    /* the server's SETTINGS frame */
    if (kms_h2_recv(c->h2, NULL, 0) != 0) {
        conn_close(c);
    }
}

/* Finished calls, back on the loop thread. */
static void on_done(evutil_socket_t fd, short what, void *arg)
{
    struct kms_plugin *p = arg;
    (void)fd;
    (void)what;
    pthread_mutex_lock(&p->mu);
    struct job *list = p->done;
    p->done = NULL;
    pthread_mutex_unlock(&p->mu);
    while (list != NULL) {
        struct job *j = list;
        list = j->next;
        struct conn *c = j->conn;
        if (j->cprev != NULL) {
            j->cprev->cnext = j->cnext;
        } else {
            c->jobs = j->cnext;
        }
        if (j->cnext != NULL) {
            j->cnext->cprev = j->cprev;
        }
        c->pending--;
        if (c->dead) {
            if (c->pending == 0) {
                conn_free(c);
            }
        } else {
            if (kms_h2_answer(c->h2, j->stream_id, j->code, j->out, j->outlen, j->msg) != 0) {
                conn_close(c);
            } else {
                conn_check(c);
            }
        }
        job_free(j);
    }
}

static void on_grace(evutil_socket_t fd, short what, void *arg)
{
    struct kms_plugin *p = arg;
    (void)fd;
    (void)what;
    plog(p, "warn", "kms plugin: grace time over, closing connections with calls in flight",
         p->socket_path);
    event_base_loopbreak(p->base);
}

/* A second into the stop: connections whose client has not acknowledged the shutdown PING get
 * their final GOAWAY anyway (they would otherwise take new calls until the grace time). */
static void on_final(evutil_socket_t fd, short what, void *arg)
{
    struct kms_plugin *p = arg;
    (void)fd;
    (void)what;
    for (struct conn *c = p->conns, *next; c != NULL; c = next) {
        next = c->next;
        if (!c->dead && !c->lingering) { /* a lingering one has sent all it will send */
            if (kms_h2_goaway_final(c->h2) != 0) {
                conn_close(c);
            } else {
                conn_check(c);
            }
        }
    }
    maybe_finish(p);
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    struct kms_plugin *p = arg;
    (void)fd;
    (void)what;
    if (p->stopping) {
        return;
    }
    p->stopping = true;
    if (p->listener != NULL) {
        evconnlistener_free(p->listener); /* closes the socket: no new connections */
        p->listener = NULL;
    }
    evtimer_del(p->rest_ev);
    int64_t g = p->o.grace_ms > 0 ? p->o.grace_ms : 10000;
    struct timeval tv = {(time_t)(g / 1000), (suseconds_t)((g % 1000) * 1000)};
    evtimer_add(p->grace_ev, &tv);
    struct timeval ack = {GOAWAY_ACK_MS / 1000, (GOAWAY_ACK_MS % 1000) * 1000};
    evtimer_add(p->final_ev, &ack);
    for (struct conn *c = p->conns, *next; c != NULL; c = next) {
        next = c->next;
        if (!c->dead) {
            kms_h2_goaway(c->h2);
            conn_check(c);
        }
    }
    maybe_finish(p);
}

static void *loop_main(void *arg)
{
    struct kms_plugin *p = arg;
    event_base_dispatch(p->base);
    /* whatever is still open after the grace time */
    for (struct conn *c = p->conns, *next; c != NULL; c = next) {
        next = c->next;
        conn_close(c);
    }
    return NULL;
}

static void plugin_free(struct kms_plugin *p)
{
    if (p->nthreads > 0) {
        pthread_mutex_lock(&p->mu);
        p->quit = true;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        for (size_t i = 0; i < p->nthreads; i++) {
            pthread_join(p->threads[i], NULL);
        }
    }
    free(p->threads);
    /* answers nobody will read any more */
    for (struct job *j = p->done, *next; j != NULL; j = next) {
        next = j->next;
        struct conn *c = j->conn;
        if (--c->pending == 0 && c->dead) {
            conn_free(c);
        }
        job_free(j);
    }
    for (struct job *j = p->todo, *next; j != NULL; j = next) {
        next = j->next;
        kms_plugin_metrics_queued(-1);
        struct conn *c = j->conn;
        if (--c->pending == 0 && c->dead) {
            conn_free(c);
        }
        job_free(j);
    }
    if (p->listener != NULL) {
        evconnlistener_free(p->listener);
    }
    struct event **evs[] = {&p->done_ev,  &p->stop_ev, &p->grace_ev,
                            &p->final_ev, &p->rest_ev, &p->sweep_ev};
    for (size_t i = 0; i < 6; i++) {
        if (*evs[i] != NULL) {
            event_free(*evs[i]);
        }
    }
    if (p->base != NULL) {
        event_base_free(p->base);
    }
    struct stat sst;
    if (p->socket_path != NULL && p->sock_known && lstat(p->socket_path, &sst) == 0 &&
        sst.st_dev == p->sock_dev && sst.st_ino == p->sock_ino) {
        unlink(p->socket_path);
    }
    free(p->socket_path);
    free(p->socket_group);
    kms_plugin_core_dispose(&p->core);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

int kms_plugin_start(const struct kms_plugin_opts *o, const struct kms_plugin_backend *b,
                     struct kms_plugin **out, struct kms_err *err)
{
    int fd = -1;
    *out = NULL;
    struct kms_plugin *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        if (b->destroy != NULL) {
            b->destroy(b->arg);
        }
        return kms_err_set(err, 500, "out of memory");
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    kms_plugin_core_init(&p->core, b, o->status_ttl_ms);
    p->o = *o;
    if (evthread_use_pthreads() != 0) {
        kms_err_set(err, 500, "libevent has no thread support");
        goto fail;
    }
    if (kms_plugin_socket_open(o, &fd, err) != 0) {
        goto fail;
    }
    struct stat bound;
    if (lstat(o->socket_path, &bound) == 0) {
        p->sock_known = true;
        p->sock_dev = bound.st_dev;
        p->sock_ino = bound.st_ino;
    }
    p->socket_path = strdup(o->socket_path);
    p->socket_group = o->socket_group != NULL ? strdup(o->socket_group) : NULL;
    p->o.socket_path = p->socket_path;
    p->o.socket_group = p->socket_group;
    p->base = event_base_new();
    if (p->socket_path == NULL || p->base == NULL) {
        kms_err_set(err, 500, "out of memory");
        goto fail;
    }
    p->listener = evconnlistener_new(p->base, on_accept, p, LEV_OPT_CLOSE_ON_FREE, -1, fd);
    if (p->listener == NULL) {
        kms_err_set(err, 500, "cannot listen on %s", o->socket_path);
        goto fail;
    }
    fd = -1;
    evconnlistener_set_error_cb(p->listener, on_accept_error);
    p->done_ev = event_new(p->base, -1, EV_PERSIST, on_done, p);
    p->stop_ev = event_new(p->base, -1, 0, on_stop, p);
    p->grace_ev = evtimer_new(p->base, on_grace, p);
    p->final_ev = evtimer_new(p->base, on_final, p);
    p->rest_ev = evtimer_new(p->base, on_rest_over, p);
    p->sweep_ev = event_new(p->base, -1, EV_PERSIST, on_sweep, p);
    struct timeval second = {1, 0};
    if (p->done_ev == NULL || p->stop_ev == NULL || p->grace_ev == NULL || p->final_ev == NULL ||
        p->rest_ev == NULL || p->sweep_ev == NULL || event_add(p->sweep_ev, &second) != 0) {
        kms_err_set(err, 500, "out of memory");
        goto fail;
    }
    size_t n = o->threads ? o->threads : 8;
    p->threads = calloc(n, sizeof(*p->threads));
    if (p->threads == NULL) {
        kms_err_set(err, 500, "out of memory");
        goto fail;
    }
    for (; p->nthreads < n; p->nthreads++) {
        if (pthread_create(&p->threads[p->nthreads], NULL, pool_main, p) != 0) {
            kms_err_set(err, 500, "cannot start the plugin's threads");
            goto fail;
        }
    }
    if (pthread_create(&p->loop_thread, NULL, loop_main, p) != 0) {
        kms_err_set(err, 500, "cannot start the plugin's thread");
        goto fail;
    }
    p->loop_started = true;
    *out = p;
    return 0;
fail:
    if (fd >= 0) {
        close(fd);
        unlink(o->socket_path);
    }
    plugin_free(p);
    return -1;
}

void kms_plugin_stop(struct kms_plugin *p)
{
    if (p != NULL && p->stop_ev != NULL) {
        event_active(p->stop_ev, EV_READ, 0);
    }
}

void kms_plugin_join(struct kms_plugin **pp)
{
    struct kms_plugin *p = *pp;
    if (p == NULL) {
        return;
    }
    if (p->loop_started) {
        kms_plugin_stop(p);
        pthread_join(p->loop_thread, NULL);
    }
    plugin_free(p);
    *pp = NULL;
}

/* ---- the request path without a socket ------------------------------------------------------ */

struct run {
    struct kms_plugin_core core;
    uint8_t *out;
    size_t len, cap;
    bool oom;
};

static int run_send(void *arg, const uint8_t *data, size_t len)
{
    struct run *r = arg;
    if (r->len + len > r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 4096;
        while (cap < r->len + len) {
            cap *= 2;
        }
        uint8_t *g = realloc(r->out, cap);
        if (g == NULL) {
            r->oom = true;
            return -1;
        }
        r->out = g;
        r->cap = cap;
    }
    memcpy(r->out + r->len, data, len);
    r->len += len;
    return 0;
}

static void *run_call(void *arg, struct kms_h2 *h, int32_t stream_id, enum kms_plugin_method m,
                      uint8_t *msg, size_t len, int64_t deadline_ms)
{
    struct run *r = arg;
    uint8_t *out = NULL;
    size_t outlen = 0;
    char text[400];
    int code =
        kms_plugin_call(&r->core, m, msg, len, deadline_ms, &out, &outlen, text, sizeof(text));
    kms_free_wipe((void **)&msg, len);
    if (kms_h2_answer(h, stream_id, code, out, outlen, text) != 0) {
        /* the session then fails when it next sends: kms_plugin_session_run reports 1 */
    }
    kms_free_wipe((void **)&out, outlen);
    return NULL; /* answered already */
}

int kms_plugin_session_run(const struct kms_plugin_backend *b, int64_t (*now_ms)(void),
                           const uint8_t *in, size_t len, uint8_t **out, size_t *outlen)
{
    struct run r;
    struct kms_h2 *h = NULL;
    struct kms_plugin_backend nb = *b;
    memset(&r, 0, sizeof(r));
    nb.destroy = NULL; /* borrowed */
    kms_plugin_core_init(&r.core, &nb, 0);
    *out = NULL;
    *outlen = 0;
    if (kms_h2_create(run_call, NULL, run_send, &r, &h) != 0) {
        kms_plugin_core_dispose(&r.core);
        return -1;
    }
    if (now_ms != NULL) {
        r.core.now_ms = now_ms;
        kms_h2_set_clock(h, now_ms);
    }
    int64_t next = 0;
    int rc = kms_h2_recv(h, in, len) == 0 ? 0 : 1;
    if (rc == 0) {
        rc = kms_h2_recv(h, NULL, 0) == 0 ? 0 : 1; /* what the calls answered */
    }
    if (rc == 0) {
        rc = kms_h2_expire(h, &next) == 0 ? 0 : 1; /* incomplete calls past their deadline */
    }
    kms_h2_destroy(&h);
    kms_plugin_core_dispose(&r.core);
    if (r.oom) {
        free(r.out);
        return -1;
    }
    *out = r.out;
    *outlen = r.len;
    return rc;
}
