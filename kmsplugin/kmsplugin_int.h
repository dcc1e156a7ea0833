/*
 * kmsplugin_int.h - private to kmsplugin/: the plugin calls over protobuf messages (calls.c),
 * the requests decoded with their string fields' lengths (wire.proto), the HTTP/2 + gRPC session
 * (grpc.c), the unix socket (socket.c), metrics (metrics.c) and the remote Transit backend of
 * the sidecar (remote.c).
 */
#ifndef KMS_KMSPLUGIN_INT_H
#define KMS_KMSPLUGIN_INT_H

#include "kmsplugin/kmsplugin.h"

#include "wire.pb-c.h"

#include <pthread.h>
#include <stdatomic.h>

enum kms_plugin_method {
    KMS_PLUGIN_STATUS,
    KMS_PLUGIN_ENCRYPT,
    KMS_PLUGIN_DECRYPT,
    KMS_PLUGIN_NMETHODS,
};

/* The method a gRPC :path names; -1 when none. */
int kms_plugin_method_of(const char *path, size_t len);
const char *kms_plugin_method_name(enum kms_plugin_method m);

/* The backend and the health probe's cached answer; one per plugin server. */
struct kms_plugin_core {
    struct kms_plugin_backend b;
    int64_t status_ttl_ms;
    int64_t (*now_ms)(void); /* the clock of deadlines: kms_plugin_mono_ms, or a test's */
    pthread_mutex_t mu;      /* guards the fields below */
    int64_t status_until;    /* monotonic ms until which the answer below is reused */
    bool status_known;
    bool healthy;
    char healthz[320];
    char key_id[KMS_PLUGIN_KEY_ID_MAX + 1];
    /* The key version key_id names (0: no healthy answer yet), and whether an Encrypt has used
     * another one since (the key was rotated): the next Status then probes again, whatever the
     * TTL. Atomic: Encrypt never waits for a probe that holds mu. */
    _Atomic uint32_t status_version;
    atomic_bool status_stale;
};

void kms_plugin_core_init(struct kms_plugin_core *c, const struct kms_plugin_backend *b,
                          int64_t status_ttl_ms);
void kms_plugin_core_dispose(struct kms_plugin_core *c);

/*
 * One call: `in` is the request message (protobuf). Returns the gRPC code; on KMS_GRPC_OK
 * *out is the packed response message (malloc'd, wiped by the caller with kms_free_wipe),
 * otherwise msg holds the grpc-message text. Counts the call in the metrics. A call whose
 * deadline (on c->now_ms; KMS_PLUGIN_NO_DEADLINE: none) has passed when it starts is not
 * run, and one that ends after it answers DEADLINE_EXCEEDED whatever it did.
 */
int kms_plugin_call(struct kms_plugin_core *c, enum kms_plugin_method m, const uint8_t *in,
                    size_t len, int64_t deadline_ms, uint8_t **out, size_t *outlen, char *msg,
                    size_t msglen);

/* ---- the requests with their string fields' lengths (calls.c, wire.proto) ------------------ */

/*
 * An EncryptRequest or DecryptRequest decoded with wire.proto (api.proto's twin with `bytes`
 * for `string`: protobuf-c keeps no length of a string, so one with a NUL byte in it would be
 * read cut short), each string field (uid, key_id, the annotations' keys) checked at its real
 * length: UTF-8 without a NUL byte. The message (v2wire__*_request__free_unpacked), or NULL
 * with why "" when it is not protobuf, else the field at fault ("uid contains a NUL byte",
 * "annotations key is not UTF-8").
 */
V2wire__EncryptRequest *kms_plugin_encrypt_request(const uint8_t *in, size_t len, char *why,
                                                   size_t n);
V2wire__DecryptRequest *kms_plugin_decrypt_request(const uint8_t *in, size_t len, char *why,
                                                   size_t n);

/* ---- gRPC over an HTTP/2 server session (grpc.c) ------------------------------------------ */

struct kms_h2;

/* A complete call the session hands to its owner; answered later with kms_h2_answer.
 * deadline_ms: from the request's grpc-timeout, on the session's clock (kms_h2_set_clock);
 * KMS_PLUGIN_NO_DEADLINE when it had none. Returns the owner's handle of the call (NULL: none),
 * given back to on_cancel so that the owner finds it at once; the session holds it until the
 * call is answered (kms_h2_answer) and never dereferences it. */
typedef void *(*kms_h2_call_fn)(void *arg, struct kms_h2 *h, int32_t stream_id,
                                enum kms_plugin_method m, uint8_t *msg, size_t len,
                                int64_t deadline_ms);
/* Bytes the session wants sent. Returns 0, or -1 to fail the session. */
typedef int (*kms_h2_send_fn)(void *arg, const uint8_t *data, size_t len);
/* A call handed over and not answered yet will not be answered by its owner after all: the
 * client closed its stream (RST_STREAM; code KMS_GRPC_CANCELLED), or its deadline passed and
 * the session answered DEADLINE_EXCEEDED itself (kms_h2_expire; KMS_GRPC_DEADLINE_EXCEEDED).
 * Its answer would be dropped, so it need not run. call: what on_call returned for it. */
typedef void (*kms_h2_cancel_fn)(void *arg, int32_t stream_id, void *call, int code);

/*
 * A grpc-timeout header value as the gRPC HTTP/2 protocol and grpc-go read it: 1 to 8 ASCII
 * digits and a unit, H M S m u n (hours to nanoseconds). 0 with *ms (the timeout in
 * milliseconds, rounded up: 1n is 1 ms, 0S is 0), or -1 with *why (a static text, "unknown
 * unit", ...).
 */
int kms_grpc_timeout_parse(const uint8_t *v, size_t len, int64_t *ms, const char **why) KMS_WUR;

/* on_cancel may be NULL (calls are answered before on_call returns). */
int kms_h2_create(kms_h2_call_fn on_call, kms_h2_cancel_fn on_cancel, kms_h2_send_fn send,
                  void *arg, struct kms_h2 **out) KMS_WUR;
void kms_h2_destroy(struct kms_h2 **h);
/* The clock deadlines are read on (default kms_plugin_mono_ms). */
void kms_h2_set_clock(struct kms_h2 *h, int64_t (*now_ms)(void));
/* Feed received bytes; 0, or -1 when the session must be closed. Sends what it can. */
int kms_h2_recv(struct kms_h2 *h, const uint8_t *in, size_t len) KMS_WUR;
/* Answer a call (drops it when the stream is gone): code OK with the packed response
 * message, else the code and message. Sends what it can. */
int kms_h2_answer(struct kms_h2 *h, int32_t stream_id, int code, const uint8_t *resp,
                  size_t resp_len, const char *msg) KMS_WUR;
/* Start a graceful GOAWAY (no new calls; those started finish): a shutdown notice and a PING,
 * then, once the PING is acknowledged, the GOAWAY naming the last call received. */
void kms_h2_goaway(struct kms_h2 *h);
/* The final GOAWAY now, for a client that has not acknowledged the PING (a second after the
 * notice: its calls sent before the notice are in by then); 0, or -1 when the session failed.
 * Nothing after kms_h2_goaway's final GOAWAY went out. */
int kms_h2_goaway_final(struct kms_h2 *h) KMS_WUR;
/* Streams open (calls received and not yet answered and sent). */
size_t kms_h2_open_streams(const struct kms_h2 *h);
/* Reset (CANCEL) the streams whose request began before before_ms (kms_plugin_mono_ms) and is
 * still not complete: their buffers count against the plugin's shared budget, so a client that
 * never finishes its requests could refuse everyone else's. Likewise the streams answered
 * before before_ms whose answer is still not all out (a client keeping its flow-control window
 * shut): they would stay open as long as the connection. 0, or -1 when the session failed. */
int kms_h2_reset_stalled(struct kms_h2 *h, int64_t before_ms) KMS_WUR;
/* Answer DEADLINE_EXCEEDED to every call not answered yet whose deadline has passed: one
 * handed over is cancelled (on_cancel, DEADLINE_EXCEEDED) and its owner's answer will be
 * dropped; one whose request is still incomplete gets RST_STREAM NO_ERROR after the answer (no
 * more of it is wanted). *next_ms = the earliest deadline still ahead (KMS_PLUGIN_NO_DEADLINE:
 * none). 0, or -1 when the session failed. */
int kms_h2_expire(struct kms_h2 *h, int64_t *next_ms) KMS_WUR;
/* The earliest deadline of the calls begun since the last call of this function
 * (KMS_PLUGIN_NO_DEADLINE: none): the owner's timer need not wake before it. */
int64_t kms_h2_new_deadline(struct kms_h2 *h);
/* Whether the client's connection preface and first SETTINGS frame have arrived. */
bool kms_h2_greeted(const struct kms_h2 *h);
/* Whether the session has nothing more to send and expects nothing more. */
bool kms_h2_done(const struct kms_h2 *h);

/* ---- the socket (socket.c) ---------------------------------------------------------------- */

/* Bind and listen on a unix socket with the mode and group of o; a stale socket file nobody
 * answers on is removed first. *fd is non-blocking. */
int kms_plugin_socket_open(const struct kms_plugin_opts *o, int *fd, struct kms_err *err) KMS_WUR;
#ifdef KMS_TEST_HOOKS
/* called between the socket's bind and its chown/chmod (a test swaps the path meanwhile) */
extern void (*kms_plugin_socket_bound_hook)(const char *path);
#endif

/* ---- the sidecar's backend (remote.c) ------------------------------------------------------ */

struct kms_plugin_remote_opts {
    const char *addr;       /* "https://kmsd.example:8200" (http:// for tests) */
    const char *ns;         /* namespace (X-Vault-Namespace); NULL = root */
    const char *mount;      /* Transit mount; NULL = "transit" */
    const char *key;        /* KEY: "<project>/<name>" or a Transit key */
    const char *ca_cert;    /* PEM CA bundle; NULL = the system store */
    const char *auth_path;  /* kubernetes auth mount; NULL = "kubernetes" */
    const char *role;       /* its role */
    const char *jwt_file;   /* the ServiceAccount token file */
    const char *token_file; /* or: a file holding a token (re-read on 403); wins over jwt_file */
    int timeout_ms;         /* per HTTP exchange; 0 = 5 s */
    kms_plugin_log_fn log;
    void *log_arg;
};

int kms_plugin_remote_backend(const struct kms_plugin_remote_opts *o,
                              struct kms_plugin_backend *out, struct kms_err *err) KMS_WUR;

/* ---- metrics (metrics.c) ------------------------------------------------------------------ */

void kms_plugin_metrics_count(enum kms_plugin_method m, int code, int64_t micros);
/* A call that never ran (refused by the gRPC layer, or cancelled by the client before a call
 * thread took it): counted under its code, not in the duration histogram. */
void kms_plugin_metrics_refused(enum kms_plugin_method m, int code);
/* Calls received and waiting for a call thread (a gauge; delta +1 or -1). */
void kms_plugin_metrics_queued(int delta);

/* Monotonic milliseconds and microseconds. */
int64_t kms_plugin_mono_ms(void);
int64_t kms_plugin_mono_us(void);

#endif
