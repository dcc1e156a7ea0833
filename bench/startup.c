/*
 * startup.c - kmsd-startup measures kmsd's start-up time to the first healthy answer and its
 * idle resident set size.
 *
 *   kmsd-startup [-runs=10] [-addr=127.0.0.1:18290] [-settle-ms=300] -- KMSD ARGS...
 *
 * Each run: take the time, fork and exec the command (stdout and stderr to /dev/null), then
 * poll GET /v1/sys/health on -addr as fast as possible (a fresh connection per attempt, 50 µs
 * apart) until it answers "HTTP/1.1 200"; that moment minus the start is the run's start-up
 * time. Then wait -settle-ms, read VmRSS from /proc/PID/status (idle RSS), send SIGTERM and
 * reap the child. The command must listen on -addr.
 *
 * Prints one line:  startup_ms min=… median=… max=… rss_kb min=… median=… runs=N
 * Exit status 1 when a run never became healthy within 5 s.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* One health probe: 1 when the answer is a 200. */
static int probe(const struct sockaddr_in *sin)
{
    static const char req[] = "GET /v1/sys/health HTTP/1.1\r\nHost: bench\r\n"
                              "Connection: close\r\n\r\n";
    char buf[64];
    int ok = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return 0;
    }
    if (connect(fd, (const struct sockaddr *)sin, sizeof(*sin)) == 0 &&
        send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) == (ssize_t)(sizeof(req) - 1)) {
        size_t got = 0;
        while (got < 12) {
            ssize_t n = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
            if (n <= 0) {
                break;
            }
            got += (size_t)n;
        }
        buf[got] = '\0';
        ok = got >= 12 && strncmp(buf, "HTTP/1.1 200", 12) == 0;
    }
    close(fd);
    return ok;
}

static long rss_kb(pid_t pid)
{
    char path[64], line[256];
    long kb = -1;
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
        }
    }
    fclose(f);
    return kb;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int cmp_l(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int runs = 10, settle = 300;
    const char *addr = "127.0.0.1:18290";
    int i = 1;
    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (strncmp(argv[i], "-runs=", 6) == 0) {
            runs = (int)strtol(argv[i] + 6, NULL, 10);
        } else if (strncmp(argv[i], "-addr=", 6) == 0) {
            addr = argv[i] + 6;
        } else if (strncmp(argv[i], "-settle-ms=", 11) == 0) {
            settle = (int)strtol(argv[i] + 11, NULL, 10);
        } else {
            break;
        }
    }
    if (i >= argc || strcmp(argv[i], "--") != 0 || i + 1 >= argc || runs < 1 || runs > 1000) {
        fprintf(stderr, "usage: kmsd-startup [-runs=N] [-addr=HOST:PORT] [-settle-ms=MS] -- "
                        "COMMAND ARGS...\n");
        return 2;
    }
    char **cmd = argv + i + 1;
    struct sockaddr_in sin;
    char host[64];
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || (size_t)(colon - addr) >= sizeof(host)) {
        return 2;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)(int)strtol(colon + 1, NULL, 10));
    if (inet_pton(AF_INET, host, &sin.sin_addr) != 1) {
        return 2;
    }
    if (probe(&sin)) {
        fprintf(stderr, "kmsd-startup: something already answers on %s\n", addr);
        return 1;
    }

    double *ms = calloc((size_t)runs, sizeof(double));
    long *rss = calloc((size_t)runs, sizeof(long));
    if (ms == NULL || rss == NULL) {
        return 1;
    }
    for (int r = 0; r < runs; r++) {
        double t0 = now_ms();
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) {
            int dn = open("/dev/null", O_RDWR);
            dup2(dn, 1);
            dup2(dn, 2);
            execv(cmd[0], cmd);
            _exit(127);
        }
        int healthy = 0;
        const struct timespec gap = {0, 50000};
        while (now_ms() - t0 < 5000) {
            if (probe(&sin)) {
                healthy = 1;
                break;
            }
            int st;
            if (waitpid(pid, &st, WNOHANG) == pid) {
                fprintf(stderr, "kmsd-startup: %s exited before answering\n", cmd[0]);
                return 1;
            }
            nanosleep(&gap, NULL);
        }
        ms[r] = now_ms() - t0;
        if (healthy) {
            struct timespec s = {settle / 1000, (long)(settle % 1000) * 1000000L};
            nanosleep(&s, NULL);
            rss[r] = rss_kb(pid);
        }
        kill(pid, SIGTERM);
        int st;
        waitpid(pid, &st, 0);
        if (!healthy) {
            fprintf(stderr, "kmsd-startup: no healthy answer on %s within 5 s\n", addr);
            return 1;
        }
    }
    qsort(ms, (size_t)runs, sizeof(double), cmp_d);
    qsort(rss, (size_t)runs, sizeof(long), cmp_l);
    printf("startup_ms min=%.2f median=%.2f max=%.2f rss_kb min=%ld median=%ld runs=%d\n", ms[0],
           (ms[(runs - 1) / 2] + ms[runs / 2]) / 2, ms[runs - 1], rss[0],
           (rss[(runs - 1) / 2] + rss[runs / 2]) / 2, runs);
    return 0;
}
