/*
 * kmsplugin.h - the Kubernetes KMS v2 plugin API (gRPC service v2.KeyManagementService:
 * Status, Encrypt, Decrypt) served on a unix socket, and the sidecar that serves it in front
 * of a remote Transit server (`kmsd kms-plugin`). See docs/kms-plugin.md.
 *
 * HTTP/2 is libnghttp2's server session, the messages are protobuf-c's (generated at build
 * time from kmsplugin/api.proto); this module does the gRPC framing (5-byte length prefix,
 * grpc-status/grpc-message trailers), the plugin semantics (key_id, limits, the cached
 * health probe, status codes) and the socket. What a key does is a backend's: in kmsd the
 * local keyring (engine/engines.h, kms_engines_plugin_backend), in the sidecar a remote
 * Transit server over HTTPS (kmsplugin/remote.c).
 *
 * Threads: each plugin server runs one event-loop thread for its socket and a small pool of
 * threads that call the backend, so a slow backend call never stalls the socket.
 */
#ifndef KMS_KMSPLUGIN_H
#define KMS_KMSPLUGIN_H

#include "crypto/crypto.h"

/* gRPC status codes (grpc/status.h numbering) used in answers. */
enum kms_grpc_code {
    KMS_GRPC_OK = 0,
    KMS_GRPC_CANCELLED = 1,
    KMS_GRPC_UNKNOWN = 2,
    KMS_GRPC_INVALID_ARGUMENT = 3,
    KMS_GRPC_DEADLINE_EXCEEDED = 4,
    KMS_GRPC_NOT_FOUND = 5,
    KMS_GRPC_PERMISSION_DENIED = 7,
    KMS_GRPC_RESOURCE_EXHAUSTED = 8,
    KMS_GRPC_FAILED_PRECONDITION = 9,
    KMS_GRPC_UNIMPLEMENTED = 12,
    KMS_GRPC_INTERNAL = 13,
    KMS_GRPC_UNAVAILABLE = 14,
    KMS_GRPC_UNAUTHENTICATED = 16,
};

/* kube-apiserver's limits (k8s.io/apiserver .../envelope/kmsv2/envelope.go). */
#define KMS_PLUGIN_KEY_ID_MAX 1024     /* KeyIDMaxSize: bytes of key_id */
#define KMS_PLUGIN_UID_MAX 1024        /* bytes of a request's uid (a UUID in practice) */
#define KMS_PLUGIN_CIPHERTEXT_MAX 1024 /* encryptedDEKSourceMaxSize: bytes of ciphertext */
/* kmsd's: the apiserver sends 32-byte DEK seeds; 512 bytes keeps any vault:vN: ciphertext
 * of it under KMS_PLUGIN_CIPHERTEXT_MAX. */
#define KMS_PLUGIN_PLAINTEXT_MAX 512
/* Largest gRPC request message accepted (RESOURCE_EXHAUSTED above). */
#define KMS_PLUGIN_MESSAGE_MAX (64 * 1024)
/* Longest key label: what key_id says before ":v<N>". */
#define KMS_PLUGIN_LABEL_MAX 900
/* A call's deadline when its client sent no grpc-timeout. */
#define KMS_PLUGIN_NO_DEADLINE INT64_MAX

/*
 * A key as the plugin sees it. Errors are reported with HTTP-style statuses in err (the
 * Transit API's: 400 bad input, 401/403 refused, 404 no key, 500 internal, 503 the key
 * service cannot be reached); the plugin turns them into gRPC codes (docs/kms-plugin.md).
 * Called concurrently from the plugin's threads.
 *
 * `deadline_ms` is when the client stops waiting (its grpc-timeout, on kms_plugin_mono_ms's
 * clock; KMS_PLUGIN_NO_DEADLINE when it set none, and for the health probe, whose answer
 * every caller shares). The plugin answers DEADLINE_EXCEEDED then whatever the backend does;
 * a backend that waits on the network should give up by then too (remote.c does).
 */
struct kms_plugin_backend {
    /* key_id = "<label>:v<version>"; the label names the key, never anything secret */
    char label[KMS_PLUGIN_LABEL_MAX + 1];
    void *arg;
    /* Wrap pt under the key's latest version: *ct = "vault:v<N>:..." (malloc'd, NUL-ended),
     * *version = N. `uid` is the apiserver's request id ("" for the health probe). */
    int (*encrypt)(void *arg, const uint8_t *pt, size_t ptlen, const char *uid, int64_t deadline_ms,
                   char **ct, uint32_t *version, struct kms_err *err);
    /* Unwrap ct (a vault:v<N>: ciphertext of this key, N = version); *pt malloc'd, freed by
     * the caller with kms_free_wipe. */
    int (*decrypt)(void *arg, const char *ct, size_t ctlen, uint32_t version, const char *uid,
                   int64_t deadline_ms, uint8_t **pt, size_t *ptlen, struct kms_err *err);
    /* A call the plugin refused before asking encrypt or decrypt (an empty or oversized
     * plaintext or ciphertext, another key's key_id, a ciphertext of another version): `why`
     * is the answer's message (never secret). The backend records it as it records its calls
     * (the in-process plugin: an audit record with status 400). Returns 0, or -1 with err
     * when it cannot be recorded: the call then fails INTERNAL, as an HTTP request whose
     * audit line cannot be written fails 500. May be NULL (nothing to record: the sidecar's
     * server never saw the call). */
    int (*refused)(void *arg, bool decrypt, const char *uid, const char *why, struct kms_err *err);
    void (*destroy)(void *arg); /* may be NULL */
};

/* Where the plugin reports start-up, drain and trouble; never secrets. May be NULL. */
typedef void (*kms_plugin_log_fn)(void *arg, const char *level, const char *msg,
                                  const char *detail);

struct kms_plugin_opts {
    const char *socket_path;  /* the unix socket to create */
    unsigned socket_mode;     /* permission bits; 0 = 0600 */
    const char *socket_group; /* group name or number to chown the socket to; NULL = none */
    size_t threads;           /* backend call threads; 0 = 8 */
    int64_t status_ttl_ms;    /* how long a health probe's answer is reused; 0 = 10 s */
    int64_t grace_ms;         /* on stop: how long calls in flight may take; 0 = 10 s */
    kms_plugin_log_fn log;
    void *log_arg;
};

struct kms_plugin;

/*
 * Create the socket (a stale socket file nobody answers on is replaced; any other file, or
 * a socket another process serves, is an error) and start serving on it. The backend is
 * taken over (destroyed with the plugin, or here on failure).
 */
int kms_plugin_start(const struct kms_plugin_opts *o, const struct kms_plugin_backend *b,
                     struct kms_plugin **out, struct kms_err *err) KMS_WUR;
/* Stop accepting; calls in flight finish within the grace time (thread-safe, returns at once). */
void kms_plugin_stop(struct kms_plugin *p);
/* Wait for the plugin's threads to end, remove the socket file and free everything. */
void kms_plugin_join(struct kms_plugin **p);

/* ---- metrics ------------------------------------------------------------------------------- */

/*
 * Prometheus text for every plugin call of this process (all sockets): calls by method and
 * gRPC code, latency histogram by method. Appended to *buf (malloc'd, grown; *len updated).
 * Returns 0, or -1 when out of memory.
 */
int kms_plugin_metrics_text(char **buf, size_t *len, size_t *cap);

/* ---- key specifications --------------------------------------------------------------------- */

/*
 * A KEY as the flags take it: "<project>/<name>" names a KMSKey (in an organization
 * namespace), any other name a Transit key of the `transit/` mount. *is_kmskey tells which;
 * project and name receive the parts (project "" for a Transit key). -1 with err (400) when
 * the text is neither.
 */
int kms_plugin_key_parse(const char *key, bool *is_kmskey, char *project, size_t project_len,
                         char *name, size_t name_len, struct kms_err *err) KMS_WUR;
/*
 * The Transit key a KEY ends up in: a KMSKey's is "<org>-<project>-<name>", the org being the
 * namespace path with '/' turned into '-' (docs/kmskey.md); a Transit key's is its name.
 */
int kms_plugin_transit_name(const char *ns_path, bool is_kmskey, const char *project,
                            const char *name, char *out, size_t n, struct kms_err *err) KMS_WUR;

/* ---- the request path without a socket (the fuzzer and tests) ---------------------------------
 */

/*
 * Feed `len` bytes of client HTTP/2 to a fresh server session over backend b (borrowed) and
 * run every complete call on the calling thread; then the calls still incomplete whose
 * deadline (grpc-timeout) has passed are answered DEADLINE_EXCEEDED. *out receives what the
 * server wrote (malloc'd; may be NULL). Deadlines are read on now_ms (NULL: kms_plugin_mono_ms;
 * tests and the fuzzer give their own clock). 0 when the session stayed healthy, 1 when it
 * was closed with an error, -1 when out of memory.
 */
int kms_plugin_session_run(const struct kms_plugin_backend *b, int64_t (*now_ms)(void),
                           const uint8_t *in, size_t len, uint8_t **out, size_t *outlen) KMS_WUR;

/* ---- the sidecar (kmsd kms-plugin) ------------------------------------------------------------
 */

/* `kmsd kms-plugin -listen=unix:///... -addr=https://... -key=KEY ...`: argv after the command. */
int kms_plugin_sidecar_main(int argc, char **argv);

#endif
