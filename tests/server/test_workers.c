/*
 * test_workers.c - where the workers put the connections they accept (server/workers.c,
 * server/http.c): every worker watches one listening socket and the first to wake accepts
 * everything pending, so without placement a burst of connections could all land on one
 * worker. Each accepted socket goes to the worker with the fewest. The clients here open
 * their connections at once and send nothing (no API is behind the servers); the counts are
 * polled with a deadline, never read after a fixed sleep.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "server/server.h"

#define DEADLINE_MS 10000

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void pause_ms(long ms)
{
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

static struct kms_workers *start_capped(size_t n, size_t cap, char *bound, size_t boundlen)
{
    struct kms_http_opts opts = {
        .max_header_size = 8192,
        .max_body_size = 1 << 20,
        .max_connections = cap,
        .read_timeout = 60,
        .idle_timeout = 60,
    };
    struct kms_workers *pool = NULL;
    struct kms_err err = {0};
    int rc = kms_workers_start(NULL, "127.0.0.1:0", &opts, n, 1, &pool, bound, boundlen, &err);
    if (rc != 0) {
        fail_msg("kms_workers_start: %s", err.msg);
    }
    return pool;
}

static struct kms_workers *start(size_t n, char *bound, size_t boundlen)
{
    return start_capped(n, 4096, bound, boundlen);
}

static int dial(const char *bound)
{
    const char *colon = strrchr(bound, ':');
    assert_non_null(colon);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)strtol(colon + 1, NULL, 10));
    assert_int_equal(inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr), 1);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

static size_t total(const struct kms_workers *pool, size_t n, size_t *least, size_t *most)
{
    size_t sum = 0;
    *least = SIZE_MAX;
    *most = 0;
    for (size_t i = 0; i < n; i++) {
        size_t c = kms_workers_connections(pool, i);
        sum += c;
        *least = c < *least ? c : *least;
        *most = c > *most ? c : *most;
    }
    return sum;
}

/* Waits until the workers hold `want` connections in all; returns the spread (most - least). */
static size_t wait_total(const struct kms_workers *pool, size_t n, size_t want)
{
    size_t least = 0, most = 0;
    int64_t end = now_ms() + DEADLINE_MS;
    while (total(pool, n, &least, &most) != want) {
        if (now_ms() > end) {
            fail_msg("the workers hold %zu connections, want %zu", total(pool, n, &least, &most),
                     want);
        }
        pause_ms(2);
    }
    return most - least;
}

/* A burst of connections, opened before any worker runs an accept, is spread evenly. */
static void test_burst_spread_over_workers(void **state)
{
    (void)state;
    enum { WORKERS = 2, CONNS = 8, ROUNDS = 20 };
    char bound[64];
    struct kms_workers *pool = start(WORKERS, bound, sizeof(bound));
    for (int round = 0; round < ROUNDS; round++) {
        int fds[CONNS];
        for (int i = 0; i < CONNS; i++) {
            fds[i] = dial(bound);
        }
        /* two workers choosing at the same instant may both pick the same one: at most 2 */
        size_t spread = wait_total(pool, WORKERS, CONNS);
        if (spread > 2) {
            fail_msg("round %d: %zu of %d connections on one worker, %zu on the other", round,
                     kms_workers_connections(pool, 0), CONNS, kms_workers_connections(pool, 1));
        }
        for (int i = 0; i < CONNS; i++) {
            close(fds[i]);
        }
        (void)wait_total(pool, WORKERS, 0);
    }
    kms_workers_stop(pool);
    kms_workers_join(&pool);
    assert_null(pool);
}

/* More workers, connections arriving one by one and in bursts: every worker gets its share. */
static void test_four_workers_each_take_a_share(void **state)
{
    (void)state;
    enum { WORKERS = 4, CONNS = 64 };
    char bound[64];
    struct kms_workers *pool = start(WORKERS, bound, sizeof(bound));
    int fds[CONNS];
    for (int i = 0; i < CONNS; i++) {
        fds[i] = dial(bound);
        if (i % 8 == 0) {
            (void)wait_total(pool, WORKERS, (size_t)i + 1); /* one by one, then bursts */
        }
    }
    size_t spread = wait_total(pool, WORKERS, CONNS);
    if (spread > WORKERS) {
        fail_msg("spread %zu: %zu %zu %zu %zu", spread, kms_workers_connections(pool, 0),
                 kms_workers_connections(pool, 1), kms_workers_connections(pool, 2),
                 kms_workers_connections(pool, 3));
    }
    /* half go away (every other one): new connections fill the emptiest workers first */
    for (int i = 0; i < CONNS; i += 2) {
        close(fds[i]);
    }
    (void)wait_total(pool, WORKERS, CONNS / 2);
    for (int i = 0; i < CONNS; i += 2) {
        fds[i] = dial(bound);
    }
    spread = wait_total(pool, WORKERS, CONNS);
    assert_true(spread <= WORKERS);
    /* stopping with connections open: idle ones close, every loop ends, nothing leaks */
    kms_workers_stop(pool);
    kms_workers_join(&pool);
    assert_null(pool);
    for (int i = 0; i < CONNS; i++) {
        char b;
        assert_int_equal(recv(fds[i], &b, 1, 0), 0); /* closed by the server */
        close(fds[i]);
    }
}

/* max_connections is per worker: a connection is refused (503) only once every worker is
 * full, and a worker never holds more than the cap. */
static void test_cap_counts_every_worker(void **state)
{
    (void)state;
    enum { WORKERS = 2, CAP = 3 };
    char bound[64];
    struct kms_workers *pool = start_capped(WORKERS, CAP, bound, sizeof(bound));
    int fds[WORKERS * CAP];
    for (int i = 0; i < WORKERS * CAP; i++) {
        fds[i] = dial(bound);
        (void)wait_total(pool, WORKERS, (size_t)i + 1);
    }
    for (size_t w = 0; w < WORKERS; w++) {
        assert_int_equal(kms_workers_connections(pool, w), CAP);
    }
    int extra = dial(bound);
    char buf[512];
    size_t got = 0;
    for (;;) { /* the refusal, then the server's close */
        ssize_t n = recv(extra, buf + got, sizeof(buf) - 1 - got, 0);
        assert_true(n >= 0);
        if (n == 0) {
            break;
        }
        got += (size_t)n;
        assert_true(got < sizeof(buf) - 1);
    }
    buf[got] = '\0';
    assert_non_null(strstr(buf, "HTTP/1.1 503 "));
    assert_non_null(strstr(buf, "{\"errors\":[\"too many open connections\"]}"));
    assert_non_null(strstr(buf, "\r\nCache-Control: no-store\r\n"));
    close(extra);
    assert_int_equal(wait_total(pool, WORKERS, WORKERS * CAP), 0);
    /* one leaves: the next connection is served by the worker it left */
    close(fds[0]);
    (void)wait_total(pool, WORKERS, WORKERS * CAP - 1);
    fds[0] = dial(bound);
    assert_int_equal(wait_total(pool, WORKERS, WORKERS * CAP), 0);
    for (int i = 0; i < WORKERS * CAP; i++) {
        close(fds[i]);
    }
    (void)wait_total(pool, WORKERS, 0);
    kms_workers_stop(pool);
    kms_workers_join(&pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_spread_over_workers),
        cmocka_unit_test(test_four_workers_each_take_a_share),
        cmocka_unit_test(test_cap_counts_every_worker),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
