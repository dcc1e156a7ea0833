/*
 * server.h - kmsd's process layer: configuration, the HTTP/1.1 listener on libevent, and the
 * `kmsd` command line. Private to the server/ folder and main.c.
 */
#ifndef KMS_SERVER_H
#define KMS_SERVER_H

#include "api/api.h"
#include "audit/audit.h"

#include <event2/event.h>
#include <stdatomic.h>

/* One KMS plugin socket of the server (docs/kms-plugin.md): "kms_plugins" in the file. */
#define KMS_CONFIG_PLUGINS_MAX 8
struct kms_config_plugin {
    char socket[108]; /* unix socket path */
    char key[512];    /* "<project>/<name>" (a KMSKey) or a Transit key name */
    char ns[256];     /* namespace ("" = root) */
    unsigned mode;    /* socket permission bits; 0 = 0600 */
    char group[64];   /* group of the socket ("" = the process's) */
};

struct kms_config {
    char listen_address[256]; /* "127.0.0.1:8200" */
    char storage[16];         /* "lmdb" | "postgresql" */
    char storage_path[1024];
    size_t storage_map_size;   /* LMDB map size in bytes */
    char postgresql_url[2048]; /* libpq conninfo or URI (may hold a password: never logged) */
    char postgresql_password_file[1024];
    char postgresql_password_env[128]; /* environment variable holding the password */
    char seal_key_file[1024];
    char seal_key_env[128]; /* environment variable holding the seal key */
    char log_level[16];
    char tls_cert_file[1024];
    char tls_key_file[1024];
    char tls_client_ca_file[1024];
    bool tls_require_client_cert;
    size_t max_header_size; /* bytes of request line + headers */
    size_t max_connections;
    size_t max_request_bytes_in_flight; /* request bodies held by all workers; 0 = 8 bodies */
    int64_t read_timeout;               /* seconds a client may take to send a request */
    int64_t idle_timeout;               /* seconds a keep-alive connection may stay idle */
    size_t workers;                     /* event-loop threads; 0 = one per core */
    size_t key_cache_size;              /* unsealed Transit keys kept in memory */
    size_t rate_limit;                  /* requests per second per token; 0 = off */
    size_t rate_limit_burst;            /* 0 = twice rate_limit */
    struct kms_api_limits limits;
    int64_t kms_deletion_delay; /* KMSKey deletion countdown, seconds */
    /* audit (docs/audit.md): the "file" device, and more from "audit_devices" */
    char audit_file[KMS_AUDIT_PATH_MAX];
    char audit_fsync[16]; /* always | batch | never */
    char audit_mode[8];   /* octal, "0600"; "0000" keeps an existing file's mode */
    bool audit_hmac_accessor;
    int64_t audit_timeout; /* seconds a request waits for its audit line to be durable */
    struct kms_audit_device_opts audit_devices[KMS_AUDIT_MAX_DEVICES];
    size_t naudit_devices;
    bool unauthenticated_metrics_access; /* GET sys/metrics without a token (OpenBao's name) */
    struct kms_config_plugin kms_plugins[KMS_CONFIG_PLUGINS_MAX];
    size_t nkms_plugins;
    int64_t kms_plugin_status_interval; /* seconds a plugin health probe answer is reused */
    /* high availability on PostgreSQL (docs/ha.md) */
    bool ha_enabled;
    char api_addr[256];         /* advertised "http(s)://host:port"; "" = from the bound address */
    char ha_replica_id[128];    /* "" = api_addr */
    int64_t ha_lease;           /* milliseconds */
    int64_t ha_heartbeat;       /* milliseconds */
    int64_t ha_forward_timeout; /* milliseconds a standby waits for the active's answer */
    int64_t ha_forward_long_timeout; /* ... to a request that may run long (not a quick one) */
    bool ha_redirect;                /* standbys answer 307 to the active instead of forwarding */
    char ha_forward_ca_cert[1024];   /* CA bundle for an https:// api_addr ("" = system store) */
    bool dev;
    bool dev_nosync;
};

/* debug | info | warn | error (the -log-level flag and "log_level"). */
bool kms_config_log_level_valid(const char *s);
/* Defaults for every field (docs/config.md). */
void kms_config_default(struct kms_config *cfg);
/* Load a JSON config file over cfg; unknown keys and bad types are errors naming the key. */
int kms_config_load(const char *path, struct kms_config *cfg, struct kms_err *err) KMS_WUR;
/* Overwrite an environment variable's value in place and unset it, so a secret read from it
 * (a seal key, a PostgreSQL password) no longer shows in /proc/<pid>/environ; false when it was
 * not set. */
bool kms_env_scrub(const char *name);
/*
 * The audit devices cfg asks for: "file" from audit_file (or `file_flag`, the -audit-file
 * flag, which wins) with audit_fsync (or `fsync_flag`), audit_mode and audit_hmac_accessor,
 * then the "audit_devices" entries. *n = 0 when auditing is off.
 */
int kms_config_audit_devices(const struct kms_config *cfg, const char *file_flag,
                             const char *fsync_flag, struct kms_audit_device_opts *out, size_t *n,
                             struct kms_err *err) KMS_WUR;

struct kms_http;
struct kms_ha;

/*
 * Request body bytes held by every parser that shares it (a process's workers): a body that
 * grows past a small kept block is charged as its bytes arrive and released when its request
 * ends; a charge past `limit` (0 = no limit) is refused, so connections that send large bodies
 * slowly, before any token is checked, cannot take all the process's memory.
 */
struct kms_http_body_budget {
    _Atomic size_t used;
    size_t limit;
};

struct kms_http_opts {
    struct kms_tls *tls; /* NULL = plain HTTP */
    struct kms_ha *ha;   /* non-NULL: requests go through kms_ha_handle, not the API */
    size_t max_header_size;
    size_t max_body_size;
    struct kms_http_body_budget *body_budget; /* shared by the workers; NULL = none */
    size_t max_connections;
    int64_t read_timeout;
    int64_t idle_timeout;
    /* where the listener reports trouble (accept failing); NULL = nowhere */
    void (*log)(const char *level, const char *msg, const char *error, const char *pause);
};

/*
 * Bind and listen on `address` ("host:port"; port 0 picks a free one); the bound address is
 * written to bound. The socket is non-blocking; a port already in use is an error.
 */
int kms_http_listen(const char *address, int *fd, char *bound, size_t boundlen,
                    struct kms_err *err) KMS_WUR;
/* Serve requests arriving on listen_fd (owned: closed with the server) through api on base. */
int kms_http_create(struct event_base *base, struct kms_api *api, int listen_fd,
                    const struct kms_http_opts *opts, struct kms_http **out,
                    struct kms_err *err) KMS_WUR;
/*
 * Let the n servers (one per worker, all on one listening socket, all outliving one another's
 * loops) place accepted connections on whichever of them has the fewest. Call before their
 * loops run; `all` must stay valid until they are destroyed.
 */
void kms_http_share_accepts(struct kms_http *const *all, size_t n);
/* Stop accepting; in-flight requests finish; connections close once idle. */
void kms_http_stop_accepting(struct kms_http *h);
/* On the thread that runs h's loop: before the loop runs, and after it ended. The audit writers
 * are then woken once per pass of the loop (kms_audit_defer_wakeups), except on an HA replica,
 * whose requests wait for their lines on the worker. */
void kms_http_loop_begin(struct kms_http *h);
void kms_http_loop_end(struct kms_http *h);
/* Number of open connections, with those handed to it and not yet started (any thread). */
size_t kms_http_connections(const struct kms_http *h);
void kms_http_destroy(struct kms_http **h);

/*
 * The HTTP/1.1 request parser, socket-free (server/http.c; driven by the connections, the
 * fuzzer and tests/server/test_http.c). It takes bytes off an evbuffer and stops at each
 * complete request; bytes of the next pipelined request stay in the evbuffer.
 */
struct kms_http_parser;
struct evbuffer;

enum kms_http_parse_event {
    KMS_HTTP_PARSE_MORE,     /* everything usable consumed: feed more bytes */
    KMS_HTTP_PARSE_CONTINUE, /* headers in, body expected, the client asked for 100 Continue */
    KMS_HTTP_PARSE_REQUEST,  /* one whole request is in: kms_http_parser_request */
};

/* Limits: request line + fields + trailers in bytes, and the body; the bodies' shared budget
 * (NULL = none), which must outlive the parser. Destroy with _destroy. */
int kms_http_parser_create(size_t max_header_size, size_t max_body_size,
                           struct kms_http_body_budget *budget,
                           struct kms_http_parser **out) KMS_WUR;
void kms_http_parser_destroy(struct kms_http_parser **p);
/* The current request's body charge, taken over by the caller (which holds a copy of the body
 * beyond the request's end: an HA handler thread's job) and no longer released by the parser;
 * give it back with kms_http_body_budget_release. */
size_t kms_http_parser_take_charge(struct kms_http_parser *p);
void kms_http_body_budget_release(struct kms_http_body_budget *b, size_t n);
/*
 * Consume bytes of `in`. 0 with *ev set, or -1 with err: the status to answer (400 malformed,
 * 405 method too long, 413 body too large, 414/431 head too large, 417 Expect, 501 transfer
 * coding, 503 the bodies' budget spent, 505 version) and a message for the client; the connection
 * must then be closed. After KMS_HTTP_PARSE_REQUEST it keeps answering REQUEST until
 * kms_http_parser_reset.
 */
int kms_http_parser_run(struct kms_http_parser *p, struct evbuffer *in,
                        enum kms_http_parse_event *ev, struct kms_err *err) KMS_WUR;
/*
 * The complete request (method, target, headers, body; remote address left empty), borrowed
 * until kms_http_parser_reset. -1 when no request is complete, or out of memory.
 */
int kms_http_parser_request(struct kms_http_parser *p, struct kms_http_req *req) KMS_WUR;
/* Whether the connection may stay open after this request (HTTP version and Connection). */
bool kms_http_parser_keepalive(const struct kms_http_parser *p);
/* Whether the request was HTTP/1.0 (its kept-alive answer then says Connection: keep-alive). */
bool kms_http_parser_http10(const struct kms_http_parser *p);
/* True between requests, before any byte of the next one was consumed. */
bool kms_http_parser_idle(const struct kms_http_parser *p);
/* Forget the request (the body is wiped) and wait for the next one. */
void kms_http_parser_reset(struct kms_http_parser *p);

struct kms_workers;

/*
 * Start n worker threads, each with its own event loop watching one shared listening socket
 * on `address` (port 0 picks a free port, written to bound). `grace` is the
 * seconds a stopping worker waits for requests in flight.
 */
int kms_workers_start(struct kms_api *api, const char *address, const struct kms_http_opts *opts,
                      size_t n, int64_t grace, struct kms_workers **out, char *bound,
                      size_t boundlen, struct kms_err *err) KMS_WUR;
/* Ask every worker to stop accepting and finish (returns at once; thread-safe). */
void kms_workers_stop(struct kms_workers *pool);
/* Connections worker i holds now (any thread; i < the pool's size). */
size_t kms_workers_connections(const struct kms_workers *pool, size_t i);
/* Wait for every worker to end, then free them. */
void kms_workers_join(struct kms_workers **pool);

/*
 * High availability (server/ha.c, docs/ha.md): replicas on one PostgreSQL database, one
 * active. The service (API and audit broker) exists only while this replica is active:
 * `build` creates it fresh from the store at each promotion, `teardown` frees it when the
 * replica steps down (no request is using it then).
 */
struct kms_ha_opts {
    struct kms_storage *st; /* borrowed; opened with pg_ha_lease_ms = lease_ms */
    const char *version;    /* reported by a standby's sys/health (borrowed) */
    int64_t lease_ms;       /* the lease (also PostgreSQL's idle session timeout) */
    int64_t heartbeat_ms;   /* ping interval; at most a third of the lease */
    int64_t margin_ms;      /* the rule: serve while now < last answered ping + lease - margin */
    int64_t forward_timeout_ms;
    int64_t forward_long_timeout_ms; /* forwards that may run long: writes, big bodies */
    bool redirect;                   /* 307 to the active instead of forwarding */
    const char *forward_ca_cert;     /* borrowed; NULL = system store */
    /* hex HMAC-SHA256(seal key, "kmsd ha forwarding v1"): proves a forwarded request's client
     * address (X-Forwarded-For) comes from a replica ("" = never trusted) */
    char forward_secret[65];
    int (*build)(void *arg, struct kms_api **api, struct kms_err *err);
    void (*teardown)(void *arg, struct kms_api **api);
    void *arg;
    int64_t (*now_ms)(void *clock_arg); /* monotonic clock; NULL = CLOCK_MONOTONIC */
    void *clock_arg;
    /* leadership events (may be NULL) */
    void (*log)(const char *level, const char *msg, const char *replica, const char *detail);
};

/* The lease rule: may a replica whose last answered ping was sent at ping_sent serve at now? */
bool kms_ha_lease_valid(int64_t now, int64_t ping_sent, int64_t lease_ms, int64_t margin_ms);
/* Create (not yet standing for leadership); sets the store's commit guard to the lease rule. */
int kms_ha_create(const struct kms_ha_opts *o, struct kms_ha **out, struct kms_err *err) KMS_WUR;
/* Start the leadership threads, advertising api_addr under the id `replica` (both copied). */
int kms_ha_start(struct kms_ha *ha, const char *api_addr, const char *replica,
                 struct kms_err *err) KMS_WUR;
/* Answer one request: served while active within the lease, else the standby's answers and
 * forwarding (or 307). Thread-safe; always fills resp. It may wait (PostgreSQL, the audit
 * fsync, a forward, an RSA key generation): what kms_ha_may_wait names goes to
 * kms_ha_submit's threads. */
void kms_ha_handle(struct kms_ha *ha, const struct kms_http_req *req, struct kms_http_resp *resp);
/* The answers that never wait (sys/leader; sys/health unless a step-down or promotion holds
 * the service), given on the caller's thread: true when resp is filled. */
bool kms_ha_answer_now(struct kms_ha *ha, const struct kms_http_req *req,
                       struct kms_http_resp *resp);
/* True when kms_ha_handle may hold its thread long for req: the active's request whose
 * handler may run long (kms_api_may_run_long), a standby's forward of anything but a read or
 * a Transit data-plane operation on a small body. The others are answered where they come: a
 * thread hand-off costs more than they take (a cached key's encrypt). */
bool kms_ha_may_wait(struct kms_ha *ha, const struct kms_http_req *req);
/* Run fn(arg) on the replica's handler threads (up to KMS_HA_THREADS, started on demand): 0;
 * -1 when it cannot (stopping, no thread): run it where you are. */
#define KMS_HA_THREADS 32
int kms_ha_submit(struct kms_ha *ha, void (*fn)(void *arg), void *arg) KMS_WUR;
/* Run fn on the service while active within the lease (its result), else 1 without calling;
 * never waits (1 while a promotion or step-down holds the service). */
int kms_ha_with_api(struct kms_ha *ha, int (*fn)(void *arg, struct kms_api *api), void *arg);
bool kms_ha_is_active(struct kms_ha *ha);
/* Stop the threads (the handler threads finish what they were given first), stop serving,
 * free the service and release the lock cleanly. */
void kms_ha_destroy(struct kms_ha **ha);

/* `kmsd server ...` */
int kms_server_main(int argc, char **argv);

/* Structured log line on stderr: level, message, then key/value pairs (NULL-terminated). */
void kms_log(const char *level, const char *msg, ...);

/* `kmsd migrate -from=STORE -to=STORE ...` (server/migrate.c); returns the exit code. */
int kms_migrate_command(int argc, char **argv);

#endif
