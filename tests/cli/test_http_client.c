/*
 * test_http_client.c - cli/http_client.c against a scripted server on a loopback port: a kept
 * connection whose answer does not come in time is never sent again (the request may be
 * running there; an HA standby forwarding a write would run it twice), and a request target
 * longer than 2 KiB goes out whole.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cli/cli.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct srv {
    int lfd;
    int port;
    int answer_first;    /* requests answered before the server goes silent */
    atomic_int requests; /* requests read, over every connection */
    size_t longest;      /* the longest request line read */
    char head[16384];    /* the last request's head */
    atomic_bool done;
    pthread_t th;
};

/* One request's head (up to the blank line); no body in these tests. 0 at EOF. */
static size_t read_head(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = read(fd, buf + n, 1);
        if (r <= 0) {
            return 0;
        }
        n++;
        if (n >= 4 && memcmp(buf + n - 4, "\r\n\r\n", 4) == 0) {
            buf[n] = '\0';
            return n;
        }
    }
    return 0;
}

static void *serve(void *arg)
{
    struct srv *s = arg;
    static char buf[16384];
    while (!atomic_load(&s->done) && s->lfd >= 0) {
        struct pollfd p = {s->lfd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0) {
            continue;
        }
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0) {
            continue;
        }
        while (!atomic_load(&s->done) && read_head(fd, buf, sizeof(buf)) > 0) {
            int n = atomic_fetch_add(&s->requests, 1) + 1;
            size_t line = (size_t)(strstr(buf, "\r\n") - buf);
            if (line > s->longest) {
                s->longest = line;
            }
            snprintf(s->head, sizeof(s->head), "%s", buf);
            if (n > s->answer_first) {
                /* silent: the client's deadline passes; hold the connection until the end,
                 * and take no new one (a request sent again would meet a refused connect) */
                close(s->lfd);
                s->lfd = -1;
                while (!atomic_load(&s->done)) {
                    usleep(10000);
                }
                break;
            }
            static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
            if (write(fd, ok, sizeof(ok) - 1) != (ssize_t)(sizeof(ok) - 1)) {
                break;
            }
        }
        close(fd);
    }
    return NULL;
}

static void srv_start(struct srv *s, int answer_first)
{
    struct sockaddr_in a;
    socklen_t al = sizeof(a);
    memset(s, 0, sizeof(*s));
    s->answer_first = answer_first;
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->lfd >= 0);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(s->lfd, 8), 0);
    assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&a, &al), 0);
    s->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&s->th, NULL, serve, s), 0);
}

static void srv_stop(struct srv *s)
{
    atomic_store(&s->done, true);
    pthread_join(s->th, NULL);
    if (s->lfd >= 0) {
        close(s->lfd);
    }
}

static struct kms_cli_http *client(const struct srv *s, int timeout_ms)
{
    char addr[64], err[256];
    struct kms_cli_http *h = NULL;
    snprintf(addr, sizeof(addr), "http://127.0.0.1:%d", s->port);
    struct kms_cli_http_opts o = {.addr = addr, .timeout_ms = timeout_ms, .keepalive = true};
    assert_int_equal(kms_cli_http_create(&o, &h, err, sizeof(err)), 0);
    return h;
}

static void test_timeout_on_a_kept_connection_is_not_sent_again(void **state)
{
    (void)state;
    struct srv s;
    struct kms_cli_resp r;
    char err[256];
    srv_start(&s, 1);
    struct kms_cli_http *h = client(&s, 300);
    assert_int_equal(kms_cli_http_do(h, "GET", "/v1/a", NULL, 0, &r, err, sizeof(err)), 0);
    assert_int_equal(r.status, 200);
    kms_cli_resp_dispose(&r);
    /* on the kept connection; the server reads it and says nothing */
    assert_int_equal(
        kms_cli_http_do(h, "POST", "/v1/transit/keys/k/rotate", "{}", 2, &r, err, sizeof(err)), -1);
    /* the read timed out and nothing was tried after it: sent again, the request would have
     * met the closed listener ("cannot connect") */
    assert_non_null(strstr(err, "cannot read the response"));
    /* the server counts the second request (it may read it after the client gave up) */
    for (int i = 0; i < 5000 && atomic_load(&s.requests) < 2; i++) {
        usleep(2000);
    }
    assert_int_equal(atomic_load(&s.requests), 2);
    kms_cli_http_destroy(&h);
    srv_stop(&s);
}

static void test_a_long_target_goes_out_whole(void **state)
{
    (void)state;
    struct srv s;
    struct kms_cli_resp r;
    char err[256];
    char path[4200];
    srv_start(&s, 100);
    struct kms_cli_http *h = client(&s, 5000);
    memcpy(path, "/v1/sys/mounts?x=", 17);
    memset(path + 17, 'a', 4000);
    path[4017] = '\0';
    assert_int_equal(kms_cli_http_do(h, "GET", path, NULL, 0, &r, err, sizeof(err)), 0);
    assert_int_equal(r.status, 200);
    kms_cli_resp_dispose(&r);
    assert_int_equal(s.longest, strlen("GET ") + 4017 + strlen(" HTTP/1.1"));
    kms_cli_http_destroy(&h);
    srv_stop(&s);
}

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(hay, needle); p != NULL; p = strstr(p + 1, needle)) {
        n++;
    }
    return n;
}

/* A caller's User-Agent (an HA standby forwarding its client's) goes out alone: kmsctl's
 * own was added as well, and the server saw two. */
static void test_a_callers_user_agent_goes_out_alone(void **state)
{
    (void)state;
    struct srv s;
    struct kms_cli_resp r;
    char err[256];
    srv_start(&s, 100);
    struct kms_cli_http *h = client(&s, 5000);
    const struct kms_cli_header with[] = {{"user-agent", "hvac/2.1"}, {"X-A", "b"}};
    assert_int_equal(
        kms_cli_http_request(h, "GET", "/v1/a", with, 2, NULL, 0, &r, err, sizeof(err)), 0);
    kms_cli_resp_dispose(&r);
    assert_int_equal(count(s.head, "User-Agent"), 0);
    assert_int_equal(count(s.head, "user-agent: hvac/2.1\r\n"), 1);
    const struct kms_cli_header without[] = {{"X-A", "b"}};
    assert_int_equal(
        kms_cli_http_request(h, "GET", "/v1/a", without, 1, NULL, 0, &r, err, sizeof(err)), 0);
    kms_cli_resp_dispose(&r);
    assert_int_equal(count(s.head, "User-Agent: kmsctl\r\n"), 1);
    kms_cli_http_destroy(&h);
    srv_stop(&s);
}

/* A Vault error body becomes one readable message: a multierror shows its message only. */
static void test_api_error_message(void **state)
{
    static const struct {
        int status;
        const char *body, *want;
    } cases[] = {
        {403, "{\"errors\":[\"1 error occurred:\\n\\t* permission denied\\n\\n\"]}",
         "permission denied"},
        {400, "{\"errors\":[\"missing plaintext to encrypt\"]}", "missing plaintext to encrypt"},
        {502, "bad gateway", "HTTP 502: bad gateway"},
    };
    char out[256];
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct kms_cli_resp r = {.status = cases[i].status};
        r.body = (char *)cases[i].body;
        r.len = strlen(cases[i].body);
        kms_cli_api_error(&r, out, sizeof(out));
        assert_string_equal(out, cases[i].want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timeout_on_a_kept_connection_is_not_sent_again),
        cmocka_unit_test(test_a_long_target_goes_out_whole),
        cmocka_unit_test(test_a_callers_user_agent_goes_out_alone),
        cmocka_unit_test(test_api_error_message),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
