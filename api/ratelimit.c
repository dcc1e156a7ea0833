/*
 * ratelimit.c - per-token request rate limiting (a token bucket per token accessor).
 *
 * Buckets live in a striped hash table (a mutex per stripe, so workers rarely contend) with a
 * bounded number of entries per stripe; the least recently used entry of a full stripe is
 * reused. A request that finds its bucket empty is refused with 429 and a Retry-After of the
 * seconds until one token is back.
 */
#include "api/api_int.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STRIPES 256
#define PER_STRIPE 64

struct rl_entry {
    char id[64];
    double tokens;
    double last; /* monotonic seconds */
};

struct stripe {
    pthread_mutex_t lock;
    struct rl_entry e[PER_STRIPE];
    size_t n;
};

struct kms_ratelimit {
    double rate;  /* tokens per second */
    double burst; /* bucket size */
    struct stripe s[STRIPES];
};

int kms_ratelimit_create(double rate, double burst, struct kms_ratelimit **out)
{
    struct kms_ratelimit *rl = calloc(1, sizeof(*rl));
    if (rl == NULL) {
        return -1;
    }
    rl->rate = rate;
    rl->burst = burst >= 1 ? burst : 1;
    for (size_t i = 0; i < STRIPES; i++) {
        pthread_mutex_init(&rl->s[i].lock, NULL);
    }
    *out = rl;
    return 0;
}

void kms_ratelimit_destroy(struct kms_ratelimit **rlp)
{
    struct kms_ratelimit *rl = *rlp;
    if (rl == NULL) {
        return;
    }
    for (size_t i = 0; i < STRIPES; i++) {
        pthread_mutex_destroy(&rl->s[i].lock);
    }
    free(rl);
    *rlp = NULL;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int kms_ratelimit_take(struct kms_ratelimit *rl, const char *id, int *retry_after)
{
    size_t h = 5381;
    for (const char *p = id; *p != '\0'; p++) {
        h = h * 33 + (unsigned char)*p;
    }
    struct stripe *s = &rl->s[h % STRIPES];
    double now = now_seconds();
    int allowed = 1;

    pthread_mutex_lock(&s->lock);
    struct rl_entry *e = NULL;
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->e[i].id, id) == 0) {
            e = &s->e[i];
            break;
        }
    }
    if (e == NULL) {
        if (s->n < PER_STRIPE) {
            e = &s->e[s->n++];
        } else {
            e = &s->e[0];
            for (size_t i = 1; i < s->n; i++) {
                if (s->e[i].last < e->last) {
                    e = &s->e[i];
                }
            }
        }
        snprintf(e->id, sizeof(e->id), "%s", id);
        e->tokens = rl->burst;
        e->last = now;
    }
    e->tokens = fmin(rl->burst, e->tokens + (now - e->last) * rl->rate);
    e->last = now;
    if (e->tokens >= 1) {
        e->tokens -= 1;
    } else {
        allowed = 0;
        *retry_after = (int)ceil((1 - e->tokens) / rl->rate);
        if (*retry_after < 1) {
            *retry_after = 1;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return allowed;
}
