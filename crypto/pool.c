/*
 * pool.c - handler threads: where work that may run long runs, so that an event loop goes on
 * serving its other connections (sys/health among them) meanwhile. api/dispatch.c sends a
 * request whose handler may run long here (an RSA key generation, a batch of RSA signatures,
 * a batch of more than KMS_OFFLOAD_BATCH items); server/ha.c every request an HA replica
 * answers (its storage is PostgreSQL, its standbys forward). Both hand the request back to its
 * worker through the worker's mailbox.
 *
 * Threads start on demand, up to `max`, and stay: a process that never offloads starts none
 * (idle RSS). Jobs run in the order they came. Stopping runs every job still queued, then
 * joins the threads; a job must not wait for a worker's event loop (none may be running).
 */
#include "crypto/crypto.h"

#include <pthread.h>
#include <stdlib.h>

struct job {
    void (*fn)(void *arg);
    void *arg;
    struct job *next;
};

struct kms_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *head, *tail;
    size_t max;      /* threads at most */
    size_t nthreads; /* started */
    size_t idle;     /* waiting for a job (a signalled one still counts until it wakes) */
    size_t queued;   /* jobs not yet taken */
    bool stopping;
    pthread_t *threads;
};

static void *run(void *arg)
{
    struct kms_pool *o = arg;
    pthread_mutex_lock(&o->mu);
    for (;;) {
        while (o->head == NULL && !o->stopping) {
            o->idle++;
            pthread_cond_wait(&o->cv, &o->mu);
            o->idle--;
        }
        struct job *j = o->head;
        if (j == NULL) {
            break; /* stopping, and nothing is left */
        }
        o->head = j->next;
        if (o->head == NULL) {
            o->tail = NULL;
        }
        o->queued--;
        pthread_mutex_unlock(&o->mu);
        j->fn(j->arg);
        free(j);
        pthread_mutex_lock(&o->mu);
    }
    pthread_mutex_unlock(&o->mu);
    return NULL;
}

int kms_pool_create(size_t max, struct kms_pool **out)
{
    struct kms_pool *o = calloc(1, sizeof(*o));
    *out = NULL;
    if (o == NULL || (o->threads = calloc(max > 0 ? max : 1, sizeof(pthread_t))) == NULL) {
        free(o);
        return -1;
    }
    o->max = max > 0 ? max : 1;
    pthread_mutex_init(&o->mu, NULL);
    pthread_cond_init(&o->cv, NULL);
    *out = o;
    return 0;
}

int kms_pool_submit(struct kms_pool *o, void (*fn)(void *arg), void *arg)
{
    struct job *j = malloc(sizeof(*j));
    if (j == NULL) {
        return -1;
    }
    j->fn = fn;
    j->arg = arg;
    j->next = NULL;
    pthread_mutex_lock(&o->mu);
    /* a new thread unless a waiting one is left over for this job: a thread signalled for a job
     * queued before still counts as idle until it wakes, so idle alone would leave a second
     * job behind the first while a core sits unused (a review's pool test: 12 of 20 runs) */
    if (!o->stopping && o->queued >= o->idle && o->nthreads < o->max &&
        pthread_create(&o->threads[o->nthreads], NULL, run, o) == 0) {
        o->nthreads++;
    }
    if (o->stopping || o->nthreads == 0) {
        /* no thread to run it: the caller runs the handler where it is */
        pthread_mutex_unlock(&o->mu);
        free(j);
        return -1;
    }
    if (o->tail != NULL) {
        o->tail->next = j;
    } else {
        o->head = j;
    }
    o->tail = j;
    o->queued++;
    pthread_cond_signal(&o->cv);
    pthread_mutex_unlock(&o->mu);
    return 0;
}

void kms_pool_destroy(struct kms_pool **op)
{
    struct kms_pool *o = *op;
    if (o == NULL) {
        return;
    }
    pthread_mutex_lock(&o->mu);
    o->stopping = true;
    pthread_cond_broadcast(&o->cv);
    pthread_mutex_unlock(&o->mu);
    for (size_t i = 0; i < o->nthreads; i++) {
        pthread_join(o->threads[i], NULL);
    }
    pthread_cond_destroy(&o->cv);
    pthread_mutex_destroy(&o->mu);
    free(o->threads);
    free(o);
    *op = NULL;
}
