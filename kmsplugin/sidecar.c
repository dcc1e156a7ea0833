/*
 * sidecar.c - `kmsd kms-plugin`: the KMS v2 plugin next to a kube-apiserver, in front of a
 * remote Transit server (kmsd, OpenBao or Vault) reached over HTTPS (remote.c). Flags, JSON
 * log lines on stderr, the signals (SIGTERM/SIGINT drain and exit 0; SIGHUP is logged, nothing to
 * reload).
 */
#include "kmsplugin/kmsplugin_int.h"

#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>

#define DEFAULT_JWT_FILE "/var/run/secrets/kubernetes.io/serviceaccount/token"

static void usage(FILE *f)
{
    fprintf(f, "Usage: kmsd kms-plugin -listen=unix:///PATH -addr=https://HOST:8200 -key=KEY "
               "[options]\n\n"
               "Serves the Kubernetes KMS v2 plugin API on a unix socket for a kube-apiserver,\n"
               "with a Transit key of a remote kmsd (or OpenBao/Vault) server "
               "(docs/kms-plugin.md).\n\n"
               "  -listen=unix:///PATH         the socket (created 0600; see -socket-mode)\n"
               "  -addr=URL                    the key service: https://host:8200\n"
               "  -key=KEY                     <project>/<name> (a KMSKey of purpose etcd, with\n"
               "                               -namespace) or a Transit key name\n"
               "  -namespace=ORG               the organization (X-Vault-Namespace)\n"
               "  -mount=PATH                  the Transit mount (default transit)\n"
               "  -ca-cert=FILE                PEM CA bundle for the server's certificate\n"
               "  -auth-path=PATH              kubernetes auth mount (default kubernetes)\n"
               "  -role=ROLE                   its role\n"
               "  -token-file=FILE             ServiceAccount token (default the projected "
               "token)\n"
               "  -vault-token-file=FILE       use this token instead of a login (re-read on "
               "403)\n"
               "  -status-interval=DURATION    reuse a health probe answer (default 10s)\n"
               "  -timeout=DURATION            per request to the key service (default 5s)\n"
               "  -socket-mode=OCTAL           socket permissions (default 0600)\n"
               "  -socket-group=GROUP          socket group\n"
               "  -log-level=LEVEL             debug, info, warn or error\n");
}

static int min_rank = 1;

static int rank(const char *l)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(l, names[i]) == 0) {
            return i;
        }
    }
    return strcmp(l, "notice") == 0 ? 9 : 3;
}

static void slog(void *arg, const char *level, const char *msg, const char *detail)
{
    (void)arg;
    if (rank(level) < min_rank) {
        return;
    }
    char ts[40];
    int64_t sec;
    int32_t nsec;
    kms_now(&sec, &nsec);
    kms_time_rfc3339(sec, nsec, ts);
    json_t *o = json_pack("{s:s, s:s, s:s}", "time", ts, "level", level, "msg", msg);
    if (o != NULL && detail != NULL) {
        json_object_set_new(o, "detail", json_string(detail));
    }
    char *line = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    if (line != NULL) {
        fprintf(stderr, "%s\n", line);
        free(line);
    }
    json_decref(o);
}

struct sflags {
    const char *listen, *addr, *key, *ns, *mount, *ca_cert, *auth_path, *role, *jwt_file,
        *token_file, *status_interval, *timeout, *socket_mode, *socket_group, *log_level;
};

static int parse(int argc, char **argv, struct sflags *f)
{
    struct {
        const char *name;
        const char **dst;
    } table[] = {
        {"listen", &f->listen},
        {"addr", &f->addr},
        {"key", &f->key},
        {"namespace", &f->ns},
        {"mount", &f->mount},
        {"ca-cert", &f->ca_cert},
        {"auth-path", &f->auth_path},
        {"role", &f->role},
        {"token-file", &f->jwt_file},
        {"vault-token-file", &f->token_file},
        {"status-interval", &f->status_interval},
        {"timeout", &f->timeout},
        {"socket-mode", &f->socket_mode},
        {"socket-group", &f->socket_group},
        {"log-level", &f->log_level},
    };
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-') {
            fprintf(stderr, "kmsd kms-plugin: unexpected argument \"%s\"\n", a);
            return -1;
        }
        a += a[1] == '-' ? 2 : 1;
        if (strcmp(a, "h") == 0 || strcmp(a, "help") == 0) {
            usage(stdout);
            exit(0);
        }
        const char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        const char *val = eq ? eq + 1 : NULL;
        bool known = false;
        for (size_t k = 0; k < sizeof(table) / sizeof(table[0]); k++) {
            if (strlen(table[k].name) == nl && strncmp(table[k].name, a, nl) == 0) {
                if (val == NULL) {
                    if (i + 1 >= argc) {
                        fprintf(stderr, "kmsd kms-plugin: flag -%s needs a value\n", table[k].name);
                        return -1;
                    }
                    val = argv[++i];
                }
                *table[k].dst = val;
                known = true;
            }
        }
        if (!known) {
            fprintf(stderr, "kmsd kms-plugin: unknown flag \"%s\"\n", argv[i]);
            return -1;
        }
    }
    return 0;
}

/* A duration flag in milliseconds ("2500ms", "2.5s", "3"): at least 1 ms, at most INT_MAX ms
 * (24 days; the HTTP client keeps its timeout in an int). */
static int parse_ms(const char *flag, const char *v, int64_t dflt_ms, int64_t *out)
{
    *out = dflt_ms;
    if (v != NULL && (kms_duration_parse_ms(v, out) != 0 || *out < 1 || *out > INT_MAX)) {
        fprintf(stderr, "kmsd kms-plugin: -%s: invalid duration \"%s\" (1ms to 24 days)\n", flag,
                v);
        return -1;
    }
    return 0;
}

int kms_plugin_sidecar_main(int argc, char **argv)
{
    struct sflags f;
    struct kms_plugin_backend b;
    struct kms_plugin_opts po;
    struct kms_plugin_remote_opts ro;
    struct kms_plugin *p = NULL;
    struct kms_err err;
    int64_t interval, timeout; /* milliseconds */
    unsigned mode = 0;

    memset(&f, 0, sizeof(f));
    kms_err_clear(&err);
    if (parse(argc, argv, &f) != 0) {
        usage(stderr);
        return 2;
    }
    if (f.listen == NULL || f.addr == NULL || f.key == NULL) {
        fprintf(stderr, "kmsd kms-plugin: -listen, -addr and -key are required\n");
        usage(stderr);
        return 2;
    }
    if (strncmp(f.listen, "unix://", 7) != 0 || f.listen[7] != '/') {
        fprintf(stderr, "kmsd kms-plugin: -listen must be unix:///absolute/path\n");
        return 2;
    }
    if (f.log_level != NULL) {
        /* "notice" is the rank of the lines always written (rank() gives it 9): taken as a
         * level, it hid every warning and error */
        if ((rank(f.log_level) == 3 && strcmp(f.log_level, "error") != 0) ||
            rank(f.log_level) > 3) {
            fprintf(stderr,
                    "kmsd kms-plugin: -log-level: \"%s\" is not one of debug, info, "
                    "warn, error\n",
                    f.log_level);
            return 2;
        }
        min_rank = rank(f.log_level);
    }
    if (parse_ms("status-interval", f.status_interval, 10000, &interval) != 0 ||
        parse_ms("timeout", f.timeout, 5000, &timeout) != 0) {
        return 2;
    }
    if (f.socket_mode != NULL) {
        char *end = NULL;
        unsigned long m = strtoul(f.socket_mode, &end, 8);
        if (f.socket_mode[0] == '\0' || *end != '\0' || m == 0 || m > 0777) {
            fprintf(stderr, "kmsd kms-plugin: -socket-mode: \"%s\" is not an octal mode\n",
                    f.socket_mode);
            return 2;
        }
        mode = (unsigned)m;
    }
    if (f.token_file == NULL && f.role == NULL) {
        fprintf(stderr, "kmsd kms-plugin: give -role (a kubernetes login with -token-file) or "
                        "-vault-token-file\n");
        return 2;
    }
    if (strncmp(f.addr, "https://", 8) != 0) {
        slog(NULL, "warn", "kms plugin: the key service is reached without TLS", f.addr);
    }
    umask(077);
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    signal(SIGPIPE, SIG_IGN);
    json_object_seed(0);
    /* SIGTERM/SIGINT/SIGHUP are taken by sigwait below: blocked before any thread starts */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    memset(&ro, 0, sizeof(ro));
    ro.addr = f.addr;
    ro.ns = f.ns;
    ro.mount = f.mount;
    ro.key = f.key;
    ro.ca_cert = f.ca_cert;
    ro.auth_path = f.auth_path;
    ro.role = f.role;
    ro.jwt_file = f.jwt_file != NULL ? f.jwt_file : DEFAULT_JWT_FILE;
    ro.token_file = f.token_file;
    ro.timeout_ms = (int)timeout;
    ro.log = slog;
    if (kms_plugin_remote_backend(&ro, &b, &err) != 0) {
        fprintf(stderr, "kmsd kms-plugin: %s\n", err.msg);
        return 2;
    }
    memset(&po, 0, sizeof(po));
    po.socket_path = f.listen + 7;
    po.socket_mode = mode;
    po.socket_group = f.socket_group;
    po.status_ttl_ms = interval;
    po.grace_ms = 10000;
    po.threads = 16; /* each call waits on the network */
    po.log = slog;
    if (kms_plugin_start(&po, &b, &p, &err) != 0) {
        fprintf(stderr, "kmsd kms-plugin: %s\n", err.msg);
        return 1;
    }
    char detail[1200];
    snprintf(detail, sizeof(detail), "socket=%s key_id=%s:v<N> addr=%s", po.socket_path, b.label,
             f.addr);
    slog(NULL, "notice", "kms plugin listening", detail);
    int sig = 0;
    /* SIGHUP (a reload sent as to kmsd, a closed terminal) once ended the sidecar without its
     * drain, leaving its socket behind: there is nothing to reload (the JWT is read at each
     * login, the -vault-token-file again after a 403), so it is logged and serving goes on */
    while (sigwait(&set, &sig) == 0 && sig == SIGHUP) {
        slog(NULL, "info", "kms plugin: SIGHUP: nothing to reload, still serving",
             "the JWT is read at each login, -vault-token-file again after a 403");
    }
    slog(NULL, "info", "kms plugin: shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    kms_plugin_stop(p);
    kms_plugin_join(&p);
    slog(NULL, "info", "kms plugin stopped", NULL);
    return 0;
}
