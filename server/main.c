/*
 * main.c - the kmsd command line and the server's life cycle: flags (Vault's dev flags,
 * single or double dash), configuration, storage, the API, the listener, signals and a clean
 * shutdown (stop accepting, finish in-flight requests, close LMDB).
 */
#include "server/server.h"

#include "engine/engines.h"
#include "kmsplugin/kmsplugin.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <jansson.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define KMSD_VERSION "0.1.0"
#define SHUTDOWN_GRACE_SECONDS 10
/* KMS plugin call threads when audit lines are fsync'd: a plugin call (unlike an HTTP request,
 * which is parked) blocks its call thread until its record is durable, so more threads share
 * each group commit; the plugin's own event loop never waits (docs/kms-plugin.md) */
#define PLUGIN_AUDIT_THREADS 32
/* workers of an HA replica when audit lines are fsync'd (its requests wait for their records
 * on their worker, but forwards and long handlers: kms_ha_may_wait) */
#define HA_AUDIT_WORKERS 32

static const char *log_level = "info";

static void json_free_wiped(void *p)
{
    if (p != NULL) {
        kms_memzero(p, malloc_usable_size(p));
        free(p);
    }
}

static int level_rank(const char *l)
{
    if (strcmp(l, "debug") == 0) {
        return 0;
    }
    if (strcmp(l, "info") == 0) {
        return 1;
    }
    if (strcmp(l, "warn") == 0) {
        return 2;
    }
    if (strcmp(l, "notice") == 0) {
        return 4; /* start-up facts (the bound address): written at every log level */
    }
    return 3;
}

void kms_log(const char *level, const char *msg, ...)
{
    if (level_rank(level) < level_rank(log_level)) {
        return;
    }
    json_t *o = json_object();
    char ts[40];
    int64_t sec;
    int32_t nsec;
    va_list ap;

    kms_now(&sec, &nsec);
    kms_time_rfc3339(sec, nsec, ts);
    json_object_set_new(o, "time", json_string(ts));
    json_object_set_new(o, "level", json_string(level));
    json_object_set_new(o, "msg", json_string(msg));
    va_start(ap, msg);
    for (;;) {
        const char *k = va_arg(ap, const char *);
        if (k == NULL) {
            break;
        }
        const char *v = va_arg(ap, const char *);
        json_t *js = json_string(v ? v : "");
        if (js == NULL) {
            /* not UTF-8 (a request path, a file name): its bad bytes shown as U+FFFD, where
             * json_string's NULL dropped the whole field */
            char *fixed = kms_utf8_fix(v);
            js = json_string(fixed != NULL ? fixed : "");
            free(fixed);
        }
        json_object_set_new(o, k, js);
    }
    va_end(ap);
    char *line = json_dumps(o, JSON_COMPACT);
    if (line != NULL) {
        fprintf(stderr, "%s\n", line);
        free(line);
    }
    json_decref(o);
}

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: kmsd <command> [options]\n\n"
            "Commands:\n"
            "  server     run the KMS server\n"
            "  kms-plugin the Kubernetes KMS v2 plugin in front of a remote server\n"
            "             (`kmsd kms-plugin -h`; docs/kms-plugin.md)\n"
            "  audit      audit log tools: `kmsd audit verify FILE|DIR...`\n"
            "  migrate    copy a store to another backend: `kmsd migrate -from=lmdb:PATH "
            "-to=postgresql:URL`\n"
            "  version    print the version\n\n"
            "Server options (one or two leading dashes; -flag=value or -flag value):\n"
            "  -dev                          in-memory-like dev server: ephemeral store, "
            "transit/ mounted,\n"
            "                                root token printed\n"
            "  -dev-root-token-id=ID         root token for dev mode (default: random)\n"
            "  -dev-listen-address=ADDR      dev listen address (default 127.0.0.1:8200)\n"
            "  -config=FILE                  JSON configuration file (see docs/config.md)\n"
            "  -log-level=LEVEL              debug, info, warn or error\n"
            "  -kms-deletion-delay=DURATION  KMSKey deletion countdown (default 30d)\n"
            "  -tls-cert-file=FILE           serve HTTPS with this PEM certificate chain\n"
            "  -tls-key-file=FILE            and this PEM private key\n"
            "  -audit-file=PATH              append the audit log to PATH (docs/audit.md)\n"
            "  -audit-fsync=MODE             batch (default), always or never\n"
            "  -kms-plugin-socket=PATH       serve the Kubernetes KMS v2 plugin API on PATH\n"
            "  -kms-plugin-key=[NS:]KEY      its key: <project>/<name> (a KMSKey of purpose\n"
            "                                etcd) or a Transit key, in namespace NS (repeat\n"
            "                                both flags for more sockets; docs/kms-plugin.md)\n"
            "  -kms-plugin-status-interval=DURATION  reuse a health probe answer (default 10s)\n");
}

struct flags {
    bool dev;
    const char *dev_root;
    const char *dev_addr;
    const char *config;
    const char *log_level;
    const char *kms_deletion_delay;
    const char *tls_cert;
    const char *tls_key;
    const char *audit_file;
    const char *audit_fsync;
    const char *plugin_sockets[KMS_CONFIG_PLUGINS_MAX];
    const char *plugin_keys[KMS_CONFIG_PLUGINS_MAX];
    size_t nplugin_sockets, nplugin_keys;
    const char *plugin_status_interval;
};

/* The repeatable -kms-plugin-socket / -kms-plugin-key flags, paired in order. */
static int plugin_flag(struct flags *f, const char *name, const char *val)
{
    bool sock = strcmp(name, "kms-plugin-socket") == 0;
    size_t *n = sock ? &f->nplugin_sockets : &f->nplugin_keys;
    if (*n >= KMS_CONFIG_PLUGINS_MAX) {
        fprintf(stderr, "kmsd: at most %d -%s flags\n", KMS_CONFIG_PLUGINS_MAX, name);
        return -1;
    }
    (sock ? f->plugin_sockets : f->plugin_keys)[(*n)++] = val;
    return 0;
}

/* Accept -name, --name, -name=value, -name value. */
static int parse_flags(int argc, char **argv, struct flags *f)
{
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-') {
            fprintf(stderr, "kmsd: unexpected argument \"%s\"\n", a);
            return -1;
        }
        a += a[1] == '-' ? 2 : 1;
        const char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        const char *val = eq ? eq + 1 : NULL;
        struct {
            const char *name;
            const char **dst;
        } valued[] = {
            {"dev-root-token-id", &f->dev_root},
            {"dev-listen-address", &f->dev_addr},
            {"config", &f->config},
            {"log-level", &f->log_level},
            {"kms-deletion-delay", &f->kms_deletion_delay},
            {"tls-cert-file", &f->tls_cert},
            {"tls-key-file", &f->tls_key},
            {"audit-file", &f->audit_file},
            {"audit-fsync", &f->audit_fsync},
            {"kms-plugin-status-interval", &f->plugin_status_interval},
            {"kms-plugin-socket", NULL},
            {"kms-plugin-key", NULL},
        };
        if (nl == 3 && strncmp(a, "dev", 3) == 0) {
            if (val != NULL && strcmp(val, "true") != 0 && strcmp(val, "false") != 0) {
                fprintf(stderr, "kmsd: -dev takes no value\n");
                return -1;
            }
            f->dev = val == NULL || strcmp(val, "true") == 0;
            continue;
        }
        if ((nl == 4 && strncmp(a, "help", 4) == 0) || (nl == 1 && a[0] == 'h')) {
            usage(stdout);
            exit(0);
        }
        bool known = false;
        for (size_t k = 0; k < sizeof(valued) / sizeof(valued[0]); k++) {
            if (strlen(valued[k].name) == nl && strncmp(valued[k].name, a, nl) == 0) {
                if (val == NULL) {
                    if (i + 1 >= argc) {
                        fprintf(stderr, "kmsd: flag -%s needs a value\n", valued[k].name);
                        return -1;
                    }
                    val = argv[++i];
                }
                /* "-tls-cert-file= -tls-key-file=" (a template's unset variable) turned the
                 * config file's TLS off, and "-audit-file=" its audit log, without a word */
                if (val[0] == '\0' && (strcmp(valued[k].name, "tls-cert-file") == 0 ||
                                       strcmp(valued[k].name, "tls-key-file") == 0 ||
                                       strcmp(valued[k].name, "audit-file") == 0)) {
                    fprintf(stderr, "kmsd: flag -%s needs a value (it is empty)\n", valued[k].name);
                    return -1;
                }
                if (valued[k].dst != NULL) {
                    *valued[k].dst = val;
                } else if (plugin_flag(f, valued[k].name, val) != 0) {
                    return -1;
                }
                known = true;
            }
        }
        if (!known) {
            fprintf(stderr, "kmsd: unknown flag \"%s\"\n", argv[i]);
            return -1;
        }
    }
    return 0;
}

struct runtime {
    struct event_base *base;
    struct kms_tls *tls;
    struct kms_workers *workers;
    struct kms_api *api;
    struct kms_audit *audit;
    struct event *sigterm, *sigint, *sighup, *controller;
    struct kms_plugin *plugins[KMS_CONFIG_PLUGINS_MAX];
    size_t nplugins;
    /* HA on PostgreSQL: the service exists only while active (build_service, ha_teardown) */
    struct kms_ha *ha;
    const struct flags *f;
    const struct kms_config *cfg;
    struct kms_storage *st;
    const struct kms_audit_device_opts *adevs;
    size_t ndevs;
    int64_t flag_delay;
    char replica[320]; /* HA: this replica's id (its own audit chain head) */
    bool store_lost;   /* without HA: the PostgreSQL session holding the database lock ended */
    struct kms_http_body_budget body_budget; /* the workers' request bodies */
};

static void controller_report(const char *event, const char *ns_id, const char *project,
                              const char *name, const char *detail)
{
    bool failed = strstr(event, "failed") != NULL;
    if (strncmp(event, "auto-rotat", 10) == 0) {
        /* Transit's auto_rotate_period (engine/transit/autorotate.c) */
        kms_log(failed ? "error" : "info", "transit auto-rotation", "event", event, "namespace_id",
                ns_id, "key", name, "detail", detail, NULL);
        return;
    }
    kms_log(failed ? "error" : "info", "kmskey controller", "event", event, "namespace_id", ns_id,
            "project", project, "kmskey", name, "detail", detail, NULL);
}

static int controller_tick_active(void *arg, struct kms_api *api)
{
    int64_t next = 0;
    return kms_api_tick(api, *(const int64_t *)arg, &next, controller_report);
}

/* The KMSKey controller: due rotations and deletion countdowns, once a second. */
static void on_controller(evutil_socket_t fd, short what, void *arg)
{
    struct runtime *rt = arg;
    int64_t now, next = 0;
    int32_t nsec;
    (void)fd;
    (void)what;
    kms_now(&now, &nsec);
    if (rt->ha != NULL) {
        /* the KMSKey controller runs on the active replica only */
        (void)kms_ha_with_api(rt->ha, controller_tick_active, &now);
        return;
    }
    (void)kms_api_tick(rt->api, now, &next, controller_report);
    if (!rt->store_lost && kms_storage_exclusive_check(rt->st) != 0) {
        /* another kmsd may have opened the database since: nothing cached can be trusted, and
         * only a fresh start (which takes the lock again, or is refused) serves correctly */
        rt->store_lost = true;
        kms_log("error",
                "the PostgreSQL session holding the database lock ended (PostgreSQL restarted, "
                "or the session was terminated): stopping, as another kmsd may use the database "
                "now",
                NULL);
        kms_workers_stop(rt->workers);
        event_base_loopexit(rt->base, NULL);
    }
}

static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
    struct runtime *rt = arg;
    (void)what;
    kms_log("info", "shutting down", "signal", sig == SIGTERM ? "SIGTERM" : "SIGINT", NULL);
    /* workers stop accepting and finish what is in flight; main joins them after the loop */
    kms_workers_stop(rt->workers);
    for (size_t i = 0; i < rt->nplugins; i++) {
        kms_plugin_stop(rt->plugins[i]);
    }
    event_base_loopexit(rt->base, NULL);
}

/*
 * rt->audit changes only under audit_mu: on an HA replica the broker is made by each promotion
 * (build_service, outside the HA lock) and freed at each step-down (ha_teardown), and a SIGHUP
 * must reach whichever broker exists. One that was gated on "active within the lease" was
 * dropped between a promotion's build and its switch to active, or while the lease had lapsed
 * for a moment, and the broker went on writing to the renamed file.
 */
static pthread_mutex_t audit_mu = PTHREAD_MUTEX_INITIALIZER;

static void on_sighup(evutil_socket_t sig, short what, void *arg)
{
    struct runtime *rt = arg;
    struct kms_err err;
    (void)sig;
    (void)what;
    pthread_mutex_lock(&audit_mu);
    if (rt->audit != NULL && kms_audit_ndevices(rt->audit) > 0) {
        /* logrotate: reopen by path; the hash chain continues in the new file */
        if (kms_audit_reopen(rt->audit, &err) != 0) {
            kms_log("error", "audit log reopen failed; requests fail until it can be written",
                    "error", err.msg, NULL);
        } else {
            kms_log("info", "audit log reopened", NULL);
        }
    }
    pthread_mutex_unlock(&audit_mu);
    if (rt->tls != NULL) {
        if (kms_tls_reload(rt->tls, &err) != 0) {
            kms_log("error", "TLS reload failed; keeping the old certificate", "error", err.msg,
                    NULL);
        } else {
            kms_log("info", "TLS certificate reloaded", NULL);
        }
    }
}

static void audit_log(void *arg, const char *level, const char *msg)
{
    (void)arg;
    kms_log(level, msg, NULL);
}

/* Remove the dev store directory and its LMDB files. */
static void remove_dev_dir(const char *dir)
{
    char path[1100];
    static const char *const files[] = {"data.mdb", "lock.mdb", "kmsd.lock"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

/* Flag checks that need no file: 0, or the exit status (2) after a message. */
static int check_flags(struct flags *f, int64_t *flag_delay)
{
    *flag_delay = 0;
    if (f->log_level != NULL && !kms_config_log_level_valid(f->log_level)) {
        fprintf(stderr, "kmsd: -log-level: \"%s\" is not one of debug, info, warn, error\n",
                f->log_level);
        return 2;
    }
    enum kms_audit_fsync fs;
    if (f->audit_fsync != NULL && kms_audit_fsync_parse(f->audit_fsync, &fs) != 0) {
        fprintf(stderr, "kmsd: -audit-fsync: \"%s\" is not one of always, batch, never\n",
                f->audit_fsync);
        return 2;
    }
    if (f->kms_deletion_delay != NULL &&
        (kms_duration_parse(f->kms_deletion_delay, flag_delay) != 0 || *flag_delay < 1)) {
        fprintf(stderr, "kmsd: -kms-deletion-delay: invalid duration \"%s\"\n",
                f->kms_deletion_delay);
        return 2;
    }
    if (f->dev && f->config != NULL) {
        fprintf(stderr, "kmsd: -dev and -config cannot be combined\n");
        return 2;
    }
    if (f->nplugin_sockets != f->nplugin_keys) {
        fprintf(stderr, "kmsd: each -kms-plugin-socket needs its -kms-plugin-key (in order)\n");
        return 2;
    }
    int64_t pi = 0;
    if (f->plugin_status_interval != NULL &&
        (kms_duration_parse(f->plugin_status_interval, &pi) != 0 || pi < 1 || pi > 3600)) {
        /* the config file's kms_plugin_status_interval bounds: a healthy answer reused for
         * longer hides a rotation (and a deleted key) from the apiserver that long */
        fprintf(stderr, "kmsd: -kms-plugin-status-interval: invalid duration \"%s\" (1s to 1h)\n",
                f->plugin_status_interval);
        return 2;
    }
    if (!f->dev && f->config == NULL) {
        fprintf(stderr, "kmsd: server needs -dev or -config=FILE\n");
        usage(stderr);
        return 2;
    }
    return 0;
}

/* Process-wide hygiene before any thread or secret exists. */
static void harden_process(void)
{
    umask(077);
    json_object_seed(0); /* seed jansson's hash once, before any worker thread */
    /* request and response JSON carries plaintexts and data keys: wipe it on free */
    json_set_alloc_funcs(malloc, json_free_wiped);
    kms_api_malloc_tune();
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    struct rlimit nocore = {0, 0};
    setrlimit(RLIMIT_CORE, &nocore);
    /*
     * Locked memory for cached key material: the key cache takes at most half of the 2 MiB
     * (~256 warm keys: an entry is ~2.4 KB, a 4 KiB block of the heap), OpenSSL the other
     * half for the private keys it builds per operation; beyond that, entries come from the
     * ordinary heap and are still wiped on free. Locked pages count in RSS, so this is kept
     * small.
     */
    if (kms_secmem_init((size_t)2 << 20) != 0) {
        kms_log("warn",
                "cannot lock memory for key material (RLIMIT_MEMLOCK?); using the "
                "ordinary heap, wiped on free",
                NULL);
    }
    signal(SIGPIPE, SIG_IGN);
    /* a reload (logrotate's postrotate, `systemctl reload` as soon as Type=exec has started
     * us) while the store and the listener are still being set up has nothing to reload yet:
     * SIGHUP's default action ended the starting server; add_main_events takes it over */
    signal(SIGHUP, SIG_IGN);
    signal(SIGXFSZ, SIG_IGN); /* a file-size limit fails the audit write (EFBIG), not the server */
    /* every connection is a descriptor: the soft limit goes up to the hard one (Go does the
     * same at start-up), or a default of 1024 would cap max_connections far below its value */
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &nofile);
    }
}

/*
 * The seal key from the environment variable `name`, which is then scrubbed: its bytes are
 * overwritten in place (so /proc/<pid>/environ no longer shows them) and it is unset.
 */
static int seal_key_from_env(const char *name, const char *config, uint8_t seal[32],
                             struct kms_err *err)
{
    char *text = getenv(name);
    if (text == NULL) {
        fprintf(stderr,
                "kmsd: no seal key: set \"seal_key_file\" in %s or the environment variable %s\n",
                config, name);
        return -1;
    }
    int rc = kms_seal_key_parse(text, seal, err);
    (void)kms_env_scrub(name);
    if (rc != 0) {
        fprintf(stderr, "kmsd: seal key from %s: %s\n", name, err->msg);
        return -1;
    }
    return 0;
}

/* Dev mode: an ephemeral store in a fresh directory (devdir) and a random seal key. */
static int prepare_dev(struct flags *f, struct kms_config *cfg, uint8_t seal[32], char *devdir,
                       size_t devdir_len, struct kms_storage_opts *sopts)
{
    const char *addr = f->dev_addr ? f->dev_addr : getenv("VAULT_DEV_LISTEN_ADDRESS");
    if (f->dev_root == NULL) {
        f->dev_root = getenv("VAULT_DEV_ROOT_TOKEN_ID");
    }
    snprintf(cfg->listen_address, sizeof(cfg->listen_address), "%s",
             addr ? addr : "127.0.0.1:8200");
    const char *tmp = getenv("TMPDIR");
    snprintf(devdir, devdir_len, "%s/kmsd-dev-XXXXXX", tmp && strlen(tmp) < 40 ? tmp : "/tmp");
    if (mkdtemp(devdir) == NULL) {
        fprintf(stderr, "kmsd: cannot create a dev store in %s: %s\n", devdir, strerror(errno));
        devdir[0] = '\0';
        return -1;
    }
    snprintf(cfg->storage_path, sizeof(cfg->storage_path), "%s", devdir);
    if (kms_rand_bytes(seal, 32) != 0) {
        fprintf(stderr, "kmsd: cannot generate a seal key\n");
        return -1;
    }
    sopts->nosync = true;
    return 0;
}

/* Config mode: the file, then the seal key from its file or the environment. */
static int prepare_config(const struct flags *f, struct kms_config *cfg, uint8_t seal[32])
{
    struct kms_err err;
    kms_err_clear(&err);
    if (kms_config_load(f->config, cfg, &err) != 0) {
        fprintf(stderr, "kmsd: %s\n", err.msg);
        return -1;
    }
    if (f->log_level == NULL) {
        log_level = cfg->log_level;
    }
    if (strcmp(cfg->storage, "postgresql") == 0) {
        if (cfg->postgresql_url[0] == '\0') {
            fprintf(stderr,
                    "kmsd: config %s: \"postgresql_url\" is required with \"storage\": "
                    "\"postgresql\"\n",
                    f->config);
            return -1;
        }
    } else {
        /* PostgreSQL settings without "storage": "postgresql" were ignored: a replica meant to
         * share one database served keys of its own from a local store */
        const char *pgkey = cfg->postgresql_url[0] != '\0'             ? "postgresql_url"
                            : cfg->postgresql_password_file[0] != '\0' ? "postgresql_password_file"
                            : cfg->postgresql_password_env[0] != '\0'  ? "postgresql_password_env"
                                                                       : NULL;
        if (pgkey != NULL) {
            fprintf(stderr,
                    "kmsd: config %s: \"%s\" is set but \"storage\" is \"%s\": add "
                    "\"storage\": \"postgresql\" to use PostgreSQL, or remove \"%s\"\n",
                    f->config, pgkey, cfg->storage, pgkey);
            return -1;
        }
        if (cfg->storage_path[0] == '\0') {
            fprintf(stderr, "kmsd: config %s: \"storage_path\" is required\n", f->config);
            return -1;
        }
    }
    if (cfg->seal_key_file[0] != '\0') {
        /* the file wins; a key in the environment too is scrubbed all the same, or it stayed
         * in /proc/<pid>/environ for the life of the process */
        const char *name = cfg->seal_key_env[0] ? cfg->seal_key_env : "KMSD_SEAL_KEY";
        if (kms_env_scrub(name)) {
            fprintf(stderr,
                    "kmsd: warning: %s is set but \"seal_key_file\" is used; %s was cleared\n",
                    name, name);
        }
        if (kms_seal_key_load_file(cfg->seal_key_file, seal, &err) != 0) {
            fprintf(stderr, "kmsd: %s\n", err.msg);
            return -1;
        }
        return 0;
    }
    return seal_key_from_env(cfg->seal_key_env[0] ? cfg->seal_key_env : "KMSD_SEAL_KEY", f->config,
                             seal, &err);
}

/*
 * The PostgreSQL password, when the config names where it is: a file (its first line) or an
 * environment variable (scrubbed and unset once read, as the seal key's). Without either,
 * libpq finds it itself (the URL, PGPASSWORD, a pgpass file). Never logged.
 */
static int postgresql_password(const struct kms_config *cfg, char *pw, size_t cap,
                               struct kms_storage_opts *sopts)
{
    if (strcmp(cfg->storage, "postgresql") != 0) {
        return 0;
    }
    if (cfg->postgresql_password_file[0] != '\0') {
        /* read(2) straight into pw, no stdio buffer left holding a copy; O_NONBLOCK: a FIFO
         * at the path would wait for a writer (start-up hung, silent), and is refused */
        const char *path = cfg->postgresql_password_file;
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        struct stat sb;
        size_t n = 0;
        ssize_t r = 0;
        if (fd < 0) {
            fprintf(stderr, "kmsd: cannot open postgresql_password_file %s: %s\n", path,
                    strerror(errno));
            return -1;
        }
        if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
            fprintf(stderr, "kmsd: postgresql_password_file %s is not a regular file\n", path);
            close(fd);
            return -1;
        }
        while (n < cap && (r = read(fd, pw + n, cap - n)) != 0) {
            if (r < 0 && errno == EINTR) {
                continue;
            }
            if (r < 0) {
                fprintf(stderr, "kmsd: cannot read postgresql_password_file %s: %s\n", path,
                        strerror(errno));
                close(fd);
                kms_memzero(pw, cap);
                return -1;
            }
            n += (size_t)r;
        }
        close(fd);
        if (n >= cap) {
            fprintf(stderr, "kmsd: postgresql_password_file %s is larger than %zu bytes\n", path,
                    cap - 2);
            kms_memzero(pw, cap);
            return -1;
        }
        pw[n] = '\0';
        pw[strcspn(pw, "\r\n")] = '\0';
        sopts->pg_password = pw;
    } else if (cfg->postgresql_password_env[0] != '\0') {
        char *text = getenv(cfg->postgresql_password_env);
        if (text == NULL || strlen(text) >= cap) {
            fprintf(stderr, "kmsd: the environment variable %s (postgresql_password_env) is %s\n",
                    cfg->postgresql_password_env, text == NULL ? "not set" : "too long");
            return -1;
        }
        snprintf(pw, cap, "%s", text);
        (void)kms_env_scrub(cfg->postgresql_password_env);
        sopts->pg_password = pw;
    }
    return 0;
}

static void api_log(const char *level, const char *msg, const char *path, const char *error)
{
    /* a failed request's error; an engine's report (auth/token/tidy) has a detail */
    kms_log(level, msg, "path", path, strcmp(level, "error") == 0 ? "error" : "detail", error,
            NULL);
}

/* The audit broker and the engines over rt->st: at start-up, or at each promotion (HA). */
static int build_service(struct runtime *rt, struct kms_api **api, struct kms_err *err)
{
    struct kms_audit_opts auopts;
    struct kms_api_opts aopts;

    memset(&auopts, 0, sizeof(auopts));
    auopts.devices = rt->adevs;
    auopts.ndevices = rt->ndevs;
    auopts.timeout_ms = rt->cfg->audit_timeout * 1000;
    auopts.log = audit_log;
    auopts.replica = rt->replica[0] != '\0' ? rt->replica : NULL;
    pthread_mutex_lock(&audit_mu);
    int made = kms_audit_create(rt->st, &auopts, &rt->audit, err);
    pthread_mutex_unlock(&audit_mu);
    if (made != 0) {
        return -1;
    }
    memset(&aopts, 0, sizeof(aopts));
    aopts.audit = rt->audit;
    aopts.limits = rt->cfg->limits;
    aopts.version = KMSD_VERSION;
    aopts.log = api_log;
    aopts.rate_limit = rt->f->dev ? 0 : (double)rt->cfg->rate_limit;
    aopts.rate_limit_burst = (double)rt->cfg->rate_limit_burst;
    struct kms_engines_opts eopts = {
        .kms_deletion_delay = rt->flag_delay > 0 ? rt->flag_delay : rt->cfg->kms_deletion_delay,
        .key_cache_size = rt->cfg->key_cache_size,
        .unauthenticated_metrics_access = rt->cfg->unauthenticated_metrics_access,
    };
    if (kms_engines_create(rt->st, &aopts, &eopts, api, err) != 0) {
        pthread_mutex_lock(&audit_mu);
        kms_audit_destroy(&rt->audit);
        pthread_mutex_unlock(&audit_mu);
        return -1;
    }
    return 0;
}

static void ha_log(const char *level, const char *msg, const char *replica, const char *detail)
{
    kms_log(level, msg, "replica", replica, "detail", detail, NULL);
}

static int ha_build(void *arg, struct kms_api **api, struct kms_err *err)
{
    return build_service(arg, api, err);
}

static void ha_teardown(void *arg, struct kms_api **api)
{
    struct runtime *rt = arg;
    kms_api_destroy(api);
    pthread_mutex_lock(&audit_mu);
    kms_audit_destroy(&rt->audit);
    pthread_mutex_unlock(&audit_mu);
}

/*
 * Storage, audit broker and the engines; the dev store is bootstrapped (root in `root`).
 * With ha_enabled the service is not built here but by each promotion (kms_ha_create).
 */
static int open_services(const struct flags *f, const struct kms_config *cfg,
                         const uint8_t seal[32], const struct kms_storage_opts *sopts,
                         int64_t flag_delay, struct runtime *rt, struct kms_storage **st,
                         struct kms_audit_device_opts *adevs, size_t *ndevs, char *root,
                         size_t root_len)
{
    struct kms_err err;
    struct kms_storage_opts so = *sopts;

    kms_err_clear(&err);
    so.map_size = cfg->storage_map_size;
    bool pg = !f->dev && strcmp(cfg->storage, "postgresql") == 0;
    bool ha = pg && cfg->ha_enabled;
    so.backend = pg ? KMS_STORAGE_POSTGRESQL : KMS_STORAGE_LMDB;
    /* without leadership: one kmsd per database (docs/ha.md) */
    so.pg_exclusive = pg && !ha;
    so.pg_ha_lease_ms = ha ? cfg->ha_lease : 0;
    if (kms_storage_open(pg ? cfg->postgresql_url : cfg->storage_path, seal, &so, st, &err) != 0) {
        goto fail;
    }
    if (kms_config_audit_devices(cfg, f->audit_file, f->audit_fsync, adevs, ndevs, &err) != 0) {
        goto fail;
    }
    rt->f = f;
    rt->cfg = cfg;
    rt->st = *st;
    rt->adevs = adevs;
    rt->ndevs = *ndevs;
    rt->flag_delay = flag_delay;
    if (ha) {
        struct kms_ha_opts ho = {
            .st = *st,
            .version = KMSD_VERSION,
            .lease_ms = cfg->ha_lease,
            .heartbeat_ms = cfg->ha_heartbeat,
            .margin_ms = cfg->ha_lease / 4,
            .forward_timeout_ms = cfg->ha_forward_timeout,
            .forward_long_timeout_ms = cfg->ha_forward_long_timeout > cfg->ha_forward_timeout
                                           ? cfg->ha_forward_long_timeout
                                           : cfg->ha_forward_timeout,
            .redirect = cfg->ha_redirect,
            .forward_ca_cert = cfg->ha_forward_ca_cert[0] != '\0' ? cfg->ha_forward_ca_cert : NULL,
            .build = ha_build,
            .teardown = ha_teardown,
            .arg = rt,
            .log = ha_log,
        };
        if (cfg->nkms_plugins > 0 || f->nplugin_sockets > 0) {
            kms_err_set(&err, 400, "KMS plugin sockets cannot be combined with ha_enabled yet");
            goto fail;
        }
        static const char label[] = "kmsd ha forwarding v1";
        uint8_t fs[32];
        if (kms_hmac(KMS_HASH_SHA2_256, seal, 32, label, sizeof(label) - 1, fs) != 0) {
            kms_err_set(&err, 500, "cannot derive the forwarding secret");
            goto fail;
        }
        kms_hex_encode(fs, sizeof(fs), ho.forward_secret);
        kms_memzero(fs, sizeof(fs));
        int hc = kms_ha_create(&ho, &rt->ha, &err);
        kms_memzero(ho.forward_secret, sizeof(ho.forward_secret));
        if (hc != 0) {
            goto fail;
        }
        return 0;
    }
    if (build_service(rt, &rt->api, &err) != 0) {
        goto fail;
    }
    if (f->dev && kms_api_dev_bootstrap(rt->api, f->dev_root, root, root_len, &err) != 0) {
        goto fail;
    }
    return 0;
fail:
    fprintf(stderr, "kmsd: %s\n", err.msg);
    return -1;
}

static void http_log(const char *level, const char *msg, const char *error, const char *pause)
{
    kms_log(level, msg, "error", error, "pause", pause, NULL);
}

/* TLS (flags win over the file) and the worker threads on the listen address. */
static int start_listener(const struct flags *f, struct kms_config *cfg,
                          const struct kms_audit_device_opts *adevs, size_t ndevs,
                          struct runtime *rt, char *bound, size_t bound_len, size_t *nworkers)
{
    struct kms_err err;
    struct kms_http_opts hopts;

    kms_err_clear(&err);
    /* a longer path was cut to fit and another file (or none) was read under its name */
    if ((f->tls_cert != NULL && strlen(f->tls_cert) >= sizeof(cfg->tls_cert_file)) ||
        (f->tls_key != NULL && strlen(f->tls_key) >= sizeof(cfg->tls_key_file))) {
        fprintf(stderr, "kmsd: -%s: path longer than %zu bytes\n",
                f->tls_cert != NULL && strlen(f->tls_cert) >= sizeof(cfg->tls_cert_file)
                    ? "tls-cert-file"
                    : "tls-key-file",
                sizeof(cfg->tls_cert_file) - 1);
        return -1;
    }
    if (f->tls_cert != NULL) {
        snprintf(cfg->tls_cert_file, sizeof(cfg->tls_cert_file), "%s", f->tls_cert);
    }
    if (f->tls_key != NULL) {
        snprintf(cfg->tls_key_file, sizeof(cfg->tls_key_file), "%s", f->tls_key);
    }
    if ((cfg->tls_cert_file[0] != '\0') != (cfg->tls_key_file[0] != '\0')) {
        fprintf(stderr, "kmsd: TLS needs both a certificate file and a key file\n");
        return -1;
    }
    if (cfg->tls_cert_file[0] == '\0' &&
        (cfg->tls_client_ca_file[0] != '\0' || cfg->tls_require_client_cert)) {
        /* without a certificate the listener speaks plain HTTP: no client is ever checked */
        fprintf(stderr,
                "kmsd: \"%s\" needs \"tls_cert_file\" and \"tls_key_file\": without them "
                "the listener speaks plain HTTP and checks no client certificate\n",
                cfg->tls_require_client_cert ? "tls_require_client_cert" : "tls_client_ca_file");
        return -1;
    }
    if (cfg->tls_cert_file[0] != '\0' &&
        kms_tls_create(cfg->tls_cert_file, cfg->tls_key_file, cfg->tls_client_ca_file,
                       cfg->tls_require_client_cert, &rt->tls, &err) != 0) {
        fprintf(stderr, "kmsd: %s\n", err.msg);
        return -1;
    }
    /* served all the same (a start refused over it would take the listener down until the
     * file is fixed), but said: every client that verifies it fails */
    if (rt->tls != NULL && kms_tls_check_validity(rt->tls, &err) != 0) {
        kms_log("warn", "TLS certificate out of its validity period", "error", err.msg, NULL);
    }
    /* by default eight bodies of max_request_size at once (the config check keeps one) */
    atomic_store(&rt->body_budget.used, 0);
    rt->body_budget.limit = cfg->max_request_bytes_in_flight != 0
                                ? cfg->max_request_bytes_in_flight
                                : 8 * cfg->limits.max_request_size;
    memset(&hopts, 0, sizeof(hopts));
    hopts.tls = rt->tls;
    hopts.ha = rt->ha;
    hopts.max_header_size = cfg->max_header_size;
    hopts.max_body_size = cfg->limits.max_request_size;
    hopts.body_budget = &rt->body_budget;
    hopts.max_connections = cfg->max_connections;
    hopts.read_timeout = cfg->read_timeout;
    hopts.idle_timeout = cfg->idle_timeout;
    hopts.log = http_log;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    *nworkers = cfg->workers ? cfg->workers : (size_t)(cores > 0 ? cores : 1);
    /* one per core whatever the audit mode: a request waiting for its audit record is parked,
     * and its worker serves other connections meanwhile (server/http.c). An HA replica's
     * requests go through kms_ha_handle, which waits for their audit records on its worker
     * (all but forwards and long handlers: kms_ha_may_wait): there more workers still share
     * each audit fsync */
    bool audit_syncs = false;
    for (size_t i = 0; i < ndevs; i++) {
        audit_syncs = audit_syncs || adevs[i].fsync != KMS_AUDIT_FSYNC_NEVER;
    }
    if (cfg->workers == 0 && rt->ha != NULL && audit_syncs && *nworkers < HA_AUDIT_WORKERS) {
        *nworkers = HA_AUDIT_WORKERS;
    }
    if (kms_workers_start(rt->api, cfg->listen_address, &hopts, *nworkers, SHUTDOWN_GRACE_SECONDS,
                          &rt->workers, bound, bound_len, &err) != 0) {
        fprintf(stderr, "kmsd: %s\n", err.msg);
        return -1;
    }
    return 0;
}

/*
 * Stand for leadership, advertising api_addr: $KMSD_API_ADDR or $VAULT_API_ADDR, else the
 * configured one, else the bound address
 * (which must then be a specific one: 0.0.0.0 cannot be reached by the other replicas).
 */
static int start_ha(const struct kms_config *cfg, struct runtime *rt, const char *bound)
{
    char addr[320];
    struct kms_err err;

    kms_err_clear(&err);
    const char *env = getenv("KMSD_API_ADDR");
    if (env == NULL || env[0] == '\0') {
        env = getenv("VAULT_API_ADDR"); /* Vault's name for the same setting */
    }
    if (env != NULL && env[0] != '\0') {
        snprintf(addr, sizeof(addr), "%s", env);
    } else if (cfg->api_addr[0] != '\0') {
        snprintf(addr, sizeof(addr), "%s", cfg->api_addr);
    } else if (strncmp(bound, "0.0.0.0:", 8) == 0 || strncmp(bound, "[::]:", 5) == 0) {
        fprintf(stderr, "kmsd: ha_enabled needs \"api_addr\" when listening on %s\n", bound);
        return -1;
    } else {
        snprintf(addr, sizeof(addr), "%s://%s", rt->tls != NULL ? "https" : "http", bound);
    }
    if (strncmp(addr, "http://", 7) != 0 && strncmp(addr, "https://", 8) != 0) {
        fprintf(stderr, "kmsd: \"api_addr\" must start with http:// or https://\n");
        return -1;
    }
    snprintf(rt->replica, sizeof(rt->replica), "%s",
             cfg->ha_replica_id[0] != '\0' ? cfg->ha_replica_id : addr);
    if (kms_ha_start(rt->ha, addr, rt->replica, &err) != 0) {
        fprintf(stderr, "kmsd: %s\n", err.msg);
        return -1;
    }
    return 0;
}

/* Signals (stop, reload) and the controller's one-second timer on the main loop. */
static void add_main_events(struct runtime *rt)
{
    rt->sigterm = evsignal_new(rt->base, SIGTERM, on_stop_signal, rt);
    rt->sigint = evsignal_new(rt->base, SIGINT, on_stop_signal, rt);
    rt->sighup = evsignal_new(rt->base, SIGHUP, on_sighup, rt);
    rt->controller = event_new(rt->base, -1, EV_PERSIST, on_controller, rt);
    struct timeval tick = {1, 0};
    evtimer_add(rt->controller, &tick);
    evsignal_add(rt->sigterm, NULL);
    evsignal_add(rt->sigint, NULL);
    evsignal_add(rt->sighup, NULL);
}

static void print_dev_banner(const char *devdir, bool tls, const char *bound, const char *root)
{
    const char *scheme = tls ? "https" : "http";
    printf("==> kmsd server started! Log data will stream in below:\n\n"
           "WARNING! dev mode is enabled! The store is ephemeral (%s) and is removed\n"
           "at shutdown; the seal key exists only in memory.\n\n"
           "You may need to set the following environment variables:\n\n"
           "    $ export VAULT_ADDR='%s://%s'\n"
           "    $ export VAULT_TOKEN='%s'\n\n"
           "Api Address: %s://%s\n"
           "Root Token: %s\n\n"
           "Development mode should NOT be used in production installations!\n",
           devdir, scheme, bound, root, scheme, bound, root);
    fflush(stdout);
}

static void plugin_log(void *arg, const char *level, const char *msg, const char *detail)
{
    (void)arg;
    kms_log(level, msg, "detail", detail, NULL);
}

/*
 * The KMS plugin sockets: the config file's "kms_plugins", then the flag pairs (KEY may be
 * "NS:KEY"). Each serves the local keyring through kms_engines_plugin_backend.
 */
static int start_plugins(const struct flags *f, struct kms_config *cfg, struct runtime *rt)
{
    struct kms_err err;
    int64_t interval = cfg->kms_plugin_status_interval;
    int64_t flag_interval = 0;
    if (f->plugin_status_interval != NULL &&
        kms_duration_parse(f->plugin_status_interval, &flag_interval) == 0 && flag_interval > 0) {
        interval = flag_interval; /* checked by check_flags */
    }
    if (cfg->nkms_plugins + f->nplugin_sockets > KMS_CONFIG_PLUGINS_MAX) {
        fprintf(stderr,
                "kmsd: at most %d kms plugins (the config file's and -kms-plugin-socket's "
                "together)\n",
                KMS_CONFIG_PLUGINS_MAX);
        return -1;
    }
    for (size_t i = 0; i < f->nplugin_sockets; i++) {
        struct kms_config_plugin *o = &cfg->kms_plugins[cfg->nkms_plugins++];
        memset(o, 0, sizeof(*o));
        const char *key = f->plugin_keys[i];
        const char *colon = strchr(key, ':');
        size_t nsl = colon != NULL ? (size_t)(colon - key) : 0;
        if (colon != NULL) {
            key = colon + 1;
        }
        /* never cut short: a shortened path or key would serve something else than asked */
        if (strlen(f->plugin_sockets[i]) >= sizeof(o->socket) || nsl >= sizeof(o->ns) ||
            strlen(key) >= sizeof(o->key)) {
            fprintf(stderr,
                    "kmsd: -kms-plugin-socket %s / -kms-plugin-key: too long (socket path at "
                    "most %zu bytes, namespace %zu, key %zu)\n",
                    f->plugin_sockets[i], sizeof(o->socket) - 1, sizeof(o->ns) - 1,
                    sizeof(o->key) - 1);
            return -1;
        }
        snprintf(o->ns, sizeof(o->ns), "%.*s", (int)nsl, f->plugin_keys[i]);
        snprintf(o->socket, sizeof(o->socket), "%s", f->plugin_sockets[i]);
        snprintf(o->key, sizeof(o->key), "%s", key);
    }
    if (cfg->nkms_plugins > 0) {
        kms_metrics_set_extra(kms_plugin_metrics_text); /* in sys/metrics */
    }
    /* a call waits for its audit line's fsync on its call thread: more threads share each fsync */
    size_t threads = 8;
    for (size_t i = 0; i < kms_audit_ndevices(rt->audit); i++) {
        struct kms_audit_device_opts ao;
        kms_audit_device_get(rt->audit, i, &ao);
        if (ao.fsync != KMS_AUDIT_FSYNC_NEVER) {
            threads = PLUGIN_AUDIT_THREADS;
        }
    }
    for (size_t i = 0; i < cfg->nkms_plugins; i++) {
        const struct kms_config_plugin *o = &cfg->kms_plugins[i];
        struct kms_plugin_backend b;
        struct kms_plugin_opts po;
        kms_err_clear(&err);
        memset(&po, 0, sizeof(po));
        po.socket_path = o->socket;
        po.socket_mode = o->mode;
        po.socket_group = o->group[0] != '\0' ? o->group : NULL;
        po.threads = threads;
        po.status_ttl_ms = interval * 1000;
        po.grace_ms = SHUTDOWN_GRACE_SECONDS * 1000;
        po.log = plugin_log;
        if (kms_engines_plugin_backend(rt->api, o->ns, o->key, &b, &err) != 0 ||
            kms_plugin_start(&po, &b, &rt->plugins[rt->nplugins], &err) != 0) {
            fprintf(stderr, "kmsd: kms plugin %s: %s\n", o->socket, err.msg);
            return -1;
        }
        rt->nplugins++;
        kms_log("notice", "kms plugin listening", "socket", o->socket, "key_id", b.label, NULL);
    }
    return 0;
}

static void runtime_free(struct runtime *rt)
{
    for (size_t i = 0; i < rt->nplugins; i++) {
        kms_plugin_join(&rt->plugins[i]);
    }
    rt->nplugins = 0;
    if (rt->workers != NULL) {
        kms_workers_stop(rt->workers);
        kms_workers_join(&rt->workers);
    }
    struct event **evs[] = {&rt->sigterm, &rt->sigint, &rt->sighup, &rt->controller};
    for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++) {
        if (*evs[i] != NULL) {
            event_free(*evs[i]);
            *evs[i] = NULL;
        }
    }
    kms_ha_destroy(&rt->ha); /* after the workers: a clean release of the leader lock */
    kms_tls_destroy(&rt->tls);
    if (rt->base) {
        event_base_free(rt->base);
        rt->base = NULL;
    }
    kms_api_destroy(&rt->api);
    kms_audit_destroy(&rt->audit); /* after the workers: nothing is in flight any more */
}

int kms_server_main(int argc, char **argv)
{
    struct flags f;
    struct kms_config cfg;
    struct kms_storage *st = NULL;
    struct runtime rt;
    struct kms_storage_opts sopts;
    struct kms_audit_device_opts adevs[KMS_AUDIT_MAX_DEVICES];
    size_t ndevs = 0, nworkers = 0;
    uint8_t seal[32];
    char pgpw[1024] = "";
    char devdir[64] = "";
    char bound[300] = "";
    char root[KMS_API_TOKEN_MAX] = "";
    int64_t flag_delay = 0;
    int rc = 1;

    memset(&f, 0, sizeof(f));
    memset(&rt, 0, sizeof(rt));
    memset(seal, 0, sizeof(seal));
    kms_config_default(&cfg);
    if (parse_flags(argc, argv, &f) != 0) {
        usage(stderr);
        return 2;
    }
    int fc = check_flags(&f, &flag_delay);
    if (fc != 0) {
        return fc;
    }
    if (f.log_level != NULL) {
        log_level = f.log_level;
    }
    harden_process();
    memset(&sopts, 0, sizeof(sopts));
    sopts.create = true;
    if ((f.dev ? prepare_dev(&f, &cfg, seal, devdir, sizeof(devdir), &sopts)
               : prepare_config(&f, &cfg, seal)) != 0) {
        goto out;
    }
    if (!f.dev && postgresql_password(&cfg, pgpw, sizeof(pgpw), &sopts) != 0) {
        goto out;
    }
    int opened = open_services(&f, &cfg, seal, &sopts, flag_delay, &rt, &st, adevs, &ndevs, root,
                               sizeof(root));
    kms_memzero(seal, sizeof(seal));
    kms_memzero(pgpw, sizeof(pgpw));
    kms_memzero(cfg.postgresql_url, sizeof(cfg.postgresql_url));
    if (opened != 0) {
        goto out;
    }
    rt.base = event_base_new();
    if (rt.base == NULL) {
        fprintf(stderr, "kmsd: cannot create the event loop\n");
        goto out;
    }
    if (start_listener(&f, &cfg, adevs, ndevs, &rt, bound, sizeof(bound), &nworkers) != 0) {
        goto out;
    }
    if (start_plugins(&f, &cfg, &rt) != 0) {
        goto out;
    }
    if (rt.ha != NULL && start_ha(&cfg, &rt, bound) != 0) {
        goto out;
    }
    add_main_events(&rt);
    if (f.dev) {
        print_dev_banner(devdir, rt.tls != NULL, bound, root);
        kms_memzero(root, sizeof(root));
    }
    char nw[24];
    snprintf(nw, sizeof(nw), "%zu", nworkers);
    /* at every log level: tools read the bound address (port 0) from this line */
    bool initialized = false;
    char cid[37];
    if (rt.api != NULL) {
        initialized = kms_api_initialized(rt.api);
    } else if (kms_api_store_status(st, &initialized, cid) != 0) {
        initialized = false;
    }
    kms_log("notice", "kmsd listening", "address", bound, "workers", nw, "mode",
            f.dev ? "dev" : "config", "initialized", initialized ? "true" : "false", "ha",
            rt.ha != NULL ? "true" : "false", NULL);

    event_base_dispatch(rt.base);
    for (size_t i = 0; i < rt.nplugins; i++) {
        kms_plugin_join(&rt.plugins[i]); /* calls in flight finish first */
    }
    rt.nplugins = 0;
    kms_workers_join(&rt.workers);
    kms_log("info", "kmsd stopped", NULL);
    rc = rt.store_lost ? 1 : 0;
out:
    kms_memzero(seal, sizeof(seal));
    kms_memzero(pgpw, sizeof(pgpw));
    kms_memzero(root, sizeof(root));
    runtime_free(&rt);
    kms_storage_close(&st);
    if (devdir[0] != '\0') {
        remove_dev_dir(devdir);
    }
    return rc;
}

static bool is_help_arg(const char *a)
{
    return strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0 || strcmp(a, "-help") == 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "server") == 0) {
        return kms_server_main(argc - 2, argv + 2);
    }
    if (strcmp(argv[1], "kms-plugin") == 0) {
        return kms_plugin_sidecar_main(argc - 2, argv + 2);
    }
    if (strcmp(argv[1], "audit") == 0) {
        if (argc >= 3 && strcmp(argv[2], "verify") == 0) {
            return kms_audit_verify_command("kmsd", argc - 3, argv + 3);
        }
        /* `kmsd audit --help` is `kmsd audit verify --help` (its one verb) */
        if (argc >= 3 && is_help_arg(argv[2])) {
            char help[] = "--help";
            char *av[] = {help, NULL};
            return kms_audit_verify_command("kmsd", 1, av);
        }
        fprintf(stderr, "Usage: kmsd audit verify [--genesis] [--anchor=sha256:HEX] [--each] [-q] "
                        "FILE|DIR...\n");
        return 2;
    }
    if (strcmp(argv[1], "migrate") == 0) {
        return kms_migrate_command(argc - 2, argv + 2);
    }
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "-version") == 0 ||
        strcmp(argv[1], "--version") == 0) {
        if (argc >= 3 && is_help_arg(argv[2])) {
            printf("Usage: kmsd version\n\nPrints kmsd's version.\n");
            return 0;
        }
        printf("kmsd v%s\n", KMSD_VERSION);
        return 0;
    }
    if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "--help") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "kmsd: unknown command \"%s\"\n", argv[1]);
    usage(stderr);
    return 2;
}
