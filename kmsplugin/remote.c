/*
 * remote.c - the sidecar's backend: a remote Transit server (kmsd, OpenBao or Vault) over
 * HTTP(S) with kmsctl's client (cli/http_client.c over crypto/tls_client.c). It logs in with a
 * Kubernetes ServiceAccount token (auth/<path>/login) or uses a token from a file, renews the
 * token when two thirds of its TTL have passed, logs in again (or re-reads the file) when the
 * token has expired or a call is refused with 403, and retries that call once; not when a login
 * gave the refused token, without a num_uses limit, less than 10 s (or half its TTL) ago (the
 * role's policies do not grant the key: a login per call would pile up tokens in the key
 * service). A server it cannot reach answers 503, which the plugin reports as UNAVAILABLE at
 * once.
 *
 * A call's Transit request is bounded by its deadline (the apiserver's grpc-timeout) as well
 * as by -timeout: the call thread gives up when its client does, and a request is not sent
 * once the deadline has passed. The token's upkeep (login, renewal) is shared by every call
 * and keeps -timeout.
 *
 * The key service's JSON answers are read with jansson, which refuses a \u0000 in a string
 * (no JSON_ALLOW_NUL), so no string taken from them (ciphertext, plaintext, token) can be cut
 * short by a NUL byte; the lengths are checked again where a string is used.
 *
 * Calls reuse connections: a call takes an idle keep-alive client from the pool (or makes
 * one), and gives it back after a complete answer; a client whose exchange failed is closed.
 * So a busy apiserver neither pays a TCP (and TLS) handshake per call nor leaves a socket in
 * TIME_WAIT per call. The pool holds at most as many clients as calls ran at once (the
 * plugin's call threads), never more than POOL_MAX. The token is sent as a header of each
 * request, so a renewed or new token needs no new connection.
 */
#include "kmsplugin/kmsplugin_int.h"

#include "cli/cli.h"
#include "crypto/keyring.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define POOL_MAX 64 /* idle kept connections at most */
/* bytes of a key service's answer kept at most (a real one is about 1.5 KiB) */
#define KMS_PLUGIN_MAX_ANSWER (64u << 10)
/* A kept connection idle longer is closed rather than reused: a firewall or load balancer on
 * the way may have dropped its flow without telling either end, and a request sent on it would
 * wait its whole timeout (kmsd itself closes idle connections after 120 s, which the client
 * sees). */
#define POOL_IDLE_MS 30000
/* A 403 on a token that a login gave less than this long (or half its TTL) ago, without a
 * num_uses limit, is answered as it is, not with another login: the key service refuses what
 * the role's policies grant, and a login per call would only leave a token per call in its
 * store, each living its whole TTL. */
#define RELOGIN_MIN_MS 10000

struct pooled {
    struct kms_cli_http *h;
    int64_t since_ms; /* monotonic: when it went idle */
};

struct remote {
    char *addr, *ns, *mount, *name, *ca_cert;
    char *auth_path, *role, *jwt_file, *token_file;
    int timeout_ms;
    int64_t idle_ms; /* POOL_IDLE_MS (KMS_TEST_HOOKS builds: $KMS_TEST_POOL_IDLE_MS) */
    kms_plugin_log_fn log;
    void *log_arg;
    pthread_mutex_t mu; /* guards the token fields */
    char *token;
    int64_t renew_at_ms; /* monotonic; 0 = never renew */
    int64_t expires_ms;  /* monotonic; 0 = no known expiry */
    int64_t margin_ms;   /* a tenth of the TTL: a token this close to expiry is not used */
    uint64_t generation; /* bumped at every new token */
    int64_t login_ms;    /* monotonic: when a login gave the token (0: from the token file) */
    bool limited_uses;   /* the login's token has a num_uses limit (a 403 may mean it ran out) */
    bool renewable;
    pthread_mutex_t pool_mu;      /* guards idle, nidle */
    struct pooled idle[POOL_MAX]; /* the most recently used last */
    size_t nidle;
};

static void rlog(struct remote *r, const char *level, const char *msg, const char *detail)
{
    if (r->log != NULL) {
        r->log(r->log_arg, level, msg, detail);
    }
}

static void free_token(struct remote *r)
{
    if (r->token != NULL) {
        kms_memzero(r->token, strlen(r->token));
        free(r->token);
        r->token = NULL;
    }
}

/* A file's contents without surrounding white space (tokens, JWTs); malloc'd, NULL on error. */
static char *read_secret_file(const char *path, struct kms_err *err)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        kms_err_set(err, 401, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = calloc(1, 65537);
    size_t n = buf != NULL ? fread(buf, 1, 65536, f) : 0;
    fclose(f);
    if (buf == NULL) {
        kms_err_set(err, 500, "out of memory");
        return NULL;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ')) {
        buf[--n] = '\0';
    }
    if (n == 0) {
        kms_free_wipe((void **)&buf, 65537);
        kms_err_set(err, 401, "%s is empty", path);
        return NULL;
    }
    return buf;
}

/* An idle kept client from the pool, or a new one; NULL with err set. */
static struct kms_cli_http *pool_take(struct remote *r, struct kms_err *err)
{
    struct kms_cli_http *h = NULL;
    struct kms_cli_http *stale[POOL_MAX];
    size_t nstale = 0;
    int64_t now = kms_plugin_mono_ms();
    pthread_mutex_lock(&r->pool_mu);
    /* the oldest first: those idle too long leave the pool */
    while (nstale < r->nidle && now - r->idle[nstale].since_ms > r->idle_ms) {
        stale[nstale] = r->idle[nstale].h;
        nstale++;
    }
    if (nstale > 0) {
        memmove(r->idle, r->idle + nstale, (r->nidle - nstale) * sizeof(r->idle[0]));
        r->nidle -= nstale;
    }
    if (r->nidle > 0) {
        h = r->idle[--r->nidle].h;
    }
    pthread_mutex_unlock(&r->pool_mu);
    for (size_t i = 0; i < nstale; i++) {
        kms_cli_http_destroy(&stale[i]);
    }
    if (h != NULL) {
        return h;
    }
    struct kms_cli_http_opts o;
    char e[512];
    memset(&o, 0, sizeof(o));
    o.addr = r->addr;
    o.timeout_ms = r->timeout_ms;
    o.ca_cert = r->ca_cert;
    o.keepalive = true;
    /* a key service's answer is about 1.5 KiB: a broken one (or a proxy's page) streaming
     * more was kept up to kmsctl's 64 MiB a call, past the sidecar's 64 MiB memory limit */
    o.max_response = KMS_PLUGIN_MAX_ANSWER;
    if (kms_cli_http_create(&o, &h, e, sizeof(e)) != 0) {
        kms_err_set(err, 500, "%s", e);
        return NULL;
    }
    return h;
}

/* A client whose last exchange was answered goes back to the pool (closed if it is full). */
static void pool_give(struct remote *r, struct kms_cli_http *h)
{
    pthread_mutex_lock(&r->pool_mu);
    if (r->nidle < POOL_MAX) {
        r->idle[r->nidle].h = h;
        r->idle[r->nidle].since_ms = kms_plugin_mono_ms();
        r->nidle++;
        h = NULL;
    }
    pthread_mutex_unlock(&r->pool_mu);
    kms_cli_http_destroy(&h);
}

/* A value that can go into a header line as it is: printable ASCII, no CR or LF. */
static bool header_safe(const char *s)
{
    for (; *s != '\0'; s++) {
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e) {
            return false;
        }
    }
    return true;
}

/* A string member of a JSON object, or NULL when it is missing, not a string or holds a NUL
 * byte (jansson refuses \u0000 when it parses; checked here all the same). */
static const char *json_text(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    const char *s = json_string_value(v);
    return s != NULL && strlen(s) == json_string_length(v) ? s : NULL;
}

/* The key service's JSON answer; NULL with err (502) when it is not JSON. jansson's own text
 * is not passed on: it quotes the input near the error, which may be a plaintext. */
static json_t *answer_json(struct remote *r, const struct kms_cli_resp *resp, struct kms_err *err)
{
    json_error_t je;
    json_t *j = json_loadb(resp->body, resp->len, 0, &je);
    if (j == NULL) {
        if (json_error_code(&je) == json_error_null_character) {
            kms_err_set(err, 502,
                        "the key service %s answered malformed JSON: a string with a NUL byte "
                        "(\\u0000)",
                        r->addr);
        } else {
            kms_err_set(err, 502, "the key service %s answered malformed JSON (line %d, column %d)",
                        r->addr, je.line, je.column);
        }
    }
    return j;
}

/* One HTTP exchange on a pooled connection, within timeout_ms; the body is JSON. *resp is
 * always disposed by the caller. */
static int exchange(struct remote *r, const char *token, const char *method, const char *path,
                    const char *body, int timeout_ms, struct kms_cli_resp *resp,
                    struct kms_err *err)
{
    struct kms_cli_header hd[4];
    size_t n = 0;
    char e[512];
    memset(resp, 0, sizeof(*resp));
    /* the token and namespace are header-safe: checked where they are read (login_locked,
     * kms_plugin_remote_backend) */
    hd[n++] = (struct kms_cli_header){"Accept", "application/json"};
    if (token != NULL && token[0] != '\0') {
        hd[n++] = (struct kms_cli_header){"X-Vault-Token", token};
    }
    if (r->ns != NULL) {
        hd[n++] = (struct kms_cli_header){"X-Vault-Namespace", r->ns};
    }
    if (body != NULL) {
        hd[n++] = (struct kms_cli_header){"Content-Type", "application/json"};
    }
    struct kms_cli_http *h = pool_take(r, err);
    if (h == NULL) {
        return -1;
    }
    kms_cli_http_set_timeout(h, timeout_ms);
    if (kms_cli_http_request(h, method, path, hd, n, body, body != NULL ? strlen(body) : 0, resp, e,
                             sizeof(e)) != 0) {
        kms_cli_http_destroy(&h);
        return kms_err_set(err, 503, "cannot reach %s: %s", r->addr, e);
    }
    free(resp->headers); /* only the status and the body are used */
    resp->headers = NULL;
    pool_give(r, h);
    return 0;
}

/* An error answer of the server as err (its first message). */
static int server_error(struct kms_cli_resp *resp, struct kms_err *err)
{
    char msg[400];
    kms_cli_api_error(resp, msg, sizeof(msg));
    return kms_err_set(err, resp->status, "%s", msg[0] ? msg : "error from the key service");
}

/* Log in (or read the token file); on success the token fields are set. Caller holds mu. */
static int login_locked(struct remote *r, struct kms_err *err)
{
    struct kms_cli_resp resp;
    free_token(r);
    r->renew_at_ms = r->expires_ms = r->margin_ms = r->login_ms = 0;
    r->renewable = false;
    if (r->token_file != NULL) {
        r->token = read_secret_file(r->token_file, err);
        if (r->token == NULL) {
            return -1;
        }
        if (!header_safe(r->token)) {
            /* not kept: the file is read again at the next call */
            free_token(r);
            return kms_err_set(err, 401, "%s holds characters a token cannot have", r->token_file);
        }
        r->generation++;
        return 0;
    }
    char *jwt = read_secret_file(r->jwt_file, err);
    if (jwt == NULL) {
        return -1;
    }
    /* json_pack refuses a string that is not UTF-8: such a file is no JWT (a login refused),
     * not "out of memory" (an INTERNAL answer to every call) */
    if (!kms_utf8_valid(jwt, strlen(jwt))) {
        kms_free_wipe((void **)&jwt, 65537);
        return kms_err_set(err, 401, "%s holds bytes a JWT cannot have (not UTF-8)", r->jwt_file);
    }
    json_t *b = json_pack("{s:s, s:s}", "role", r->role, "jwt", jwt);
    kms_free_wipe((void **)&jwt, 65537);
    char *body = b != NULL ? json_dumps(b, JSON_COMPACT) : NULL;
    json_decref(b);
    if (body == NULL) {
        return kms_err_set(err, 500, "out of memory");
    }
    char path[600];
    snprintf(path, sizeof(path), "/v1/auth/%s/login", r->auth_path);
    int rc = exchange(r, NULL, "POST", path, body, r->timeout_ms, &resp, err);
    kms_memzero(body, strlen(body));
    free(body);
    if (rc != 0) {
        kms_cli_resp_dispose(&resp);
        return -1;
    }
    if (resp.status != 200) {
        server_error(&resp, err);
        kms_cli_resp_dispose(&resp);
        if (err->status == 400 || err->status == 403) {
            err->status = 401; /* the login was refused: UNAUTHENTICATED */
        }
        return -1;
    }
    json_t *j = json_loadb(resp.body, resp.len, 0, NULL);
    kms_memzero(resp.body, resp.len);
    kms_cli_resp_dispose(&resp);
    json_t *auth = json_object_get(j, "auth");
    const char *tok = json_text(auth, "client_token");
    json_int_t ttl = json_integer_value(json_object_get(auth, "lease_duration"));
    if (tok == NULL || !header_safe(tok) || (r->token = strdup(tok)) == NULL) {
        json_decref(j);
        return kms_err_set(err, 500, "the login answer has no usable client token");
    }
    r->renewable = json_is_true(json_object_get(auth, "renewable"));
    r->limited_uses = json_integer_value(json_object_get(auth, "num_uses")) > 0;
    int64_t now = kms_plugin_mono_ms();
    if (ttl > 0) {
        r->expires_ms = now + (int64_t)ttl * 1000;
        r->renew_at_ms = now + (int64_t)ttl * 1000 * 2 / 3;
        r->margin_ms = (int64_t)ttl * 100;
    }
    r->login_ms = now;
    r->generation++;
    json_decref(j);
    rlog(r, "info", "kms plugin: logged in to the key service", r->addr);
    return 0;
}

/* Renew the token (auth/token/renew-self); a failure leaves it to expire. Caller holds mu. */
static void renew_locked(struct remote *r)
{
    struct kms_cli_resp resp;
    struct kms_err err;
    kms_err_clear(&err);
    if (exchange(r, r->token, "POST", "/v1/auth/token/renew-self", "{}", r->timeout_ms, &resp,
                 &err) != 0 ||
        resp.status != 200) {
        kms_cli_resp_dispose(&resp);
        r->renew_at_ms = 0; /* try a fresh login when it expires */
        rlog(r, "warn", "kms plugin: token renewal failed; logging in again at expiry",
             err.msg[0] ? err.msg : "refused");
        return;
    }
    json_t *j = json_loadb(resp.body, resp.len, 0, NULL);
    kms_cli_resp_dispose(&resp);
    json_int_t ttl =
        json_integer_value(json_object_get(json_object_get(j, "auth"), "lease_duration"));
    json_decref(j);
    int64_t now = kms_plugin_mono_ms();
    if (ttl > 0) {
        r->expires_ms = now + (int64_t)ttl * 1000;
        r->renew_at_ms = now + (int64_t)ttl * 1000 * 2 / 3;
        r->margin_ms = (int64_t)ttl * 100;
    } else {
        r->renew_at_ms = 0;
    }
}

/* Take the token lock by deadline_ms (monotonic; KMS_PLUGIN_NO_DEADLINE: however long it
 * takes); 0, or -1 when the deadline came first. */
static int lock_by(struct remote *r, int64_t deadline_ms)
{
    if (deadline_ms == KMS_PLUGIN_NO_DEADLINE) {
        pthread_mutex_lock(&r->mu);
        return 0;
    }
    int64_t left = deadline_ms - kms_plugin_mono_ms();
    if (left <= 0) {
        return pthread_mutex_trylock(&r->mu) == 0 ? 0 : -1;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts); /* pthread_mutex_timedlock's clock */
    ts.tv_sec += (time_t)(left / 1000);
    ts.tv_nsec += (long)(left % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    return pthread_mutex_timedlock(&r->mu, &ts) == 0 ? 0 : -1;
}

/*
 * The token to use (malloc'd copy) and its generation: logs in, renews or re-logs first. A call
 * waits for another call's login (each takes up to -timeout) only until its own deadline, and
 * starts none once its deadline has passed: against a key service that takes connections and
 * never answers, the 16 call threads queued for the lock each ran a login of their own in turn,
 * long after their callers had gone (80 s with the default -timeout, and as long after
 * SIGTERM before the sidecar could exit).
 */
static char *current_token(struct remote *r, int64_t deadline_ms, uint64_t *gen,
                           struct kms_err *err)
{
    char *out = NULL;
    if (lock_by(r, deadline_ms) != 0) {
        kms_err_set(err, 504, "deadline exceeded waiting for the login to the key service");
        return NULL;
    }
    int64_t now = kms_plugin_mono_ms();
    bool late = deadline_ms != KMS_PLUGIN_NO_DEADLINE && now >= deadline_ms;
    if (r->token != NULL && r->renewable && r->renew_at_ms != 0 && now >= r->renew_at_ms && !late) {
        renew_locked(r); /* two thirds of the TTL passed */
    }
    if (r->token == NULL || (r->expires_ms != 0 && now >= r->expires_ms - r->margin_ms)) {
        if (late) {
            kms_err_set(err, 504, "deadline exceeded before the login to the key service");
            goto out;
        }
        if (login_locked(r, err) != 0) { /* none yet, or (about to be) expired */
            goto out;
        }
    }
    out = strdup(r->token);
    *gen = r->generation;
    if (out == NULL) {
        kms_err_set(err, 500, "out of memory");
    }
out:
    pthread_mutex_unlock(&r->mu);
    return out;
}

/* After a 403: a new login (or the token file read again), unless another thread already got a
 * newer token. 0: retry with the token now current; 1: not worth a retry (a login gave this
 * token, without a num_uses limit, less than RELOGIN_MIN_MS or half its TTL ago); -1 with err:
 * the login failed. */
static int relogin(struct remote *r, uint64_t gen, struct kms_err *err)
{
    int rc = 0;
    pthread_mutex_lock(&r->mu);
    if (r->generation == gen) {
        /* a token with a short TTL may have died early on the server's clock: half its TTL */
        int64_t gap = RELOGIN_MIN_MS;
        if (r->expires_ms != 0 && (r->expires_ms - r->login_ms) / 2 < gap) {
            gap = (r->expires_ms - r->login_ms) / 2;
        }
        if (r->login_ms != 0 && !r->limited_uses && kms_plugin_mono_ms() - r->login_ms < gap) {
            rc = 1;
        } else {
            rlog(r, "info", "kms plugin: the key service refused the token; logging in again",
                 r->addr);
            rc = login_locked(r, err);
        }
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

/* POST body to <mount>/<op>/<name> before deadline_ms; *data = the answer's "data" (new
 * reference). */
static int transit_call(struct remote *r, const char *op, const char *body, int64_t deadline_ms,
                        json_t **data, struct kms_err *err)
{
    char path[1200];
    snprintf(path, sizeof(path), "/v1/%s/%s/%s", r->mount, op, r->name);
    for (int attempt = 0; attempt < 2; attempt++) {
        struct kms_cli_resp resp;
        uint64_t gen = 0;
        char *tok = current_token(r, deadline_ms, &gen, err);
        if (tok == NULL) {
            return -1;
        }
        /* the client's deadline bounds the request (its answer would be dropped after it) */
        int timeout = r->timeout_ms;
        bool capped = false;
        if (deadline_ms != KMS_PLUGIN_NO_DEADLINE) {
            int64_t left = deadline_ms - kms_plugin_mono_ms();
            if (left <= 0) {
                kms_memzero(tok, strlen(tok));
                free(tok);
                return kms_err_set(err, 504, "deadline exceeded before the key service was asked");
            }
            if (left < timeout) {
                timeout = (int)left;
                capped = true;
            }
        }
        int rc = exchange(r, tok, "POST", path, body, timeout, &resp, err);
        kms_memzero(tok, strlen(tok));
        free(tok);
        if (rc != 0) {
            kms_cli_resp_dispose(&resp);
            if (capped && kms_plugin_mono_ms() >= deadline_ms) {
                return kms_err_set(err, 504, "deadline exceeded waiting for the key service");
            }
            return -1;
        }
        if (resp.status == 403 && attempt == 0) {
            int again = relogin(r, gen, err);
            if (again <= 0) {
                kms_cli_resp_dispose(&resp);
                if (again < 0) {
                    return -1;
                }
                continue;
            }
            /* a fresh login's token refused: answered as it is (PERMISSION_DENIED) */
        }
        if (resp.status != 200) {
            rc = server_error(&resp, err);
            kms_cli_resp_dispose(&resp);
            return rc;
        }
        json_t *j = answer_json(r, &resp, err);
        kms_memzero(resp.body, resp.len);
        kms_cli_resp_dispose(&resp);
        if (j == NULL) {
            return -1;
        }
        *data = json_incref(json_object_get(j, "data"));
        json_decref(j);
        if (*data == NULL) {
            return kms_err_set(err, 502, "the key service answered without data");
        }
        return 0;
    }
    return kms_err_set(err, 403, "permission denied");
}

static int remote_encrypt(void *arg, const uint8_t *pt, size_t ptlen, const char *uid,
                          int64_t deadline_ms, char **ct, uint32_t *version, struct kms_err *err)
{
    struct remote *r = arg;
    json_t *data = NULL;
    (void)uid;
    *ct = NULL;
    size_t bl = kms_b64_encoded_len(ptlen);
    char *b = malloc(bl + 1);
    if (b == NULL) {
        return kms_err_set(err, 500, "out of memory");
    }
    kms_b64_encode(pt, ptlen, b);
    json_t *req = json_pack("{s:s}", "plaintext", b);
    kms_free_wipe((void **)&b, bl + 1);
    char *body = req != NULL ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (body == NULL) {
        return kms_err_set(err, 500, "out of memory");
    }
    int rc = transit_call(r, "encrypt", body, deadline_ms, &data, err);
    kms_memzero(body, strlen(body));
    free(body);
    if (rc != 0) {
        return -1;
    }
    const char *c = json_text(data, "ciphertext");
    if (c == NULL || kms_ciphertext_parse_version(c, strlen(c), version) != 0 ||
        (*ct = strdup(c)) == NULL) {
        json_decref(data);
        return kms_err_set(err, 502, "the key service answered without a vault:v<N>: ciphertext");
    }
    json_decref(data);
    return 0;
}

static int remote_decrypt(void *arg, const char *ct, size_t ctlen, uint32_t version,
                          const char *uid, int64_t deadline_ms, uint8_t **pt, size_t *ptlen,
                          struct kms_err *err)
{
    struct remote *r = arg;
    json_t *data = NULL;
    (void)uid;
    (void)version;
    (void)ctlen;
    *pt = NULL;
    *ptlen = 0;
    /* json_pack refuses a string that is not UTF-8, which answered INTERNAL "out of memory";
     * no such text is base64: refused as the key service (and the in-process plugin) refuse
     * it, without asking the key service */
    if (!kms_utf8_valid(ct, strlen(ct))) {
        return kms_err_set(err, 400, "invalid ciphertext: could not decode base64");
    }
    json_t *req = json_pack("{s:s}", "ciphertext", ct);
    char *body = req != NULL ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (body == NULL) {
        return kms_err_set(err, 500, "out of memory");
    }
    int rc = transit_call(r, "decrypt", body, deadline_ms, &data, err);
    free(body);
    if (rc != 0) {
        return -1;
    }
    const char *b = json_text(data, "plaintext");
    size_t at = 0;
    if (b == NULL || kms_b64_decode_alloc(b, strlen(b), pt, ptlen, &at) != 0) {
        json_decref(data);
        return kms_err_set(err, 502, "the key service answered without a plaintext");
    }
    json_decref(data);
    return 0;
}

static void remote_destroy(void *arg)
{
    struct remote *r = arg;
    if (r == NULL) {
        return;
    }
    free_token(r);
    for (size_t i = 0; i < r->nidle; i++) {
        kms_cli_http_destroy(&r->idle[i].h);
    }
    pthread_mutex_destroy(&r->pool_mu);
    char **s[] = {&r->addr,      &r->ns,   &r->mount,    &r->name,      &r->ca_cert,
                  &r->auth_path, &r->role, &r->jwt_file, &r->token_file};
    for (size_t i = 0; i < sizeof(s) / sizeof(s[0]); i++) {
        free(*s[i]);
    }
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* A mount path as Vault lists it ("transit/") or with a leading slash: the slashes around it
 * go, so that it names the mount in request paths ("/v1/transit//encrypt/k" is no path of
 * kmsd's) and in key_id as the in-process plugin names it. */
static void trim_slashes(char *s)
{
    if (s == NULL) {
        return;
    }
    size_t b = strspn(s, "/");
    size_t n = strlen(s + b);
    memmove(s, s + b, n + 1);
    while (n > 0 && s[n - 1] == '/') {
        s[--n] = '\0';
    }
}

static char *dup_or_null(const char *s, bool *oom)
{
    if (s == NULL || s[0] == '\0') {
        return NULL;
    }
    char *d = strdup(s);
    if (d == NULL) {
        *oom = true;
    }
    return d;
}

int kms_plugin_remote_backend(const struct kms_plugin_remote_opts *o,
                              struct kms_plugin_backend *out, struct kms_err *err)
{
    char project[128], name[256], tname[512];
    bool is_kmskey = false, oom = false;
    memset(out, 0, sizeof(*out));
    if (kms_plugin_key_parse(o->key, &is_kmskey, project, sizeof(project), name, sizeof(name),
                             err) != 0 ||
        kms_plugin_transit_name(o->ns != NULL ? o->ns : "", is_kmskey, project, name, tname,
                                sizeof(tname), err) != 0) {
        return -1;
    }
    struct remote *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        return kms_err_set(err, 500, "out of memory");
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->pool_mu, NULL);
    r->addr = dup_or_null(o->addr, &oom);
    r->ns = dup_or_null(o->ns, &oom);
    r->mount = dup_or_null(o->mount != NULL ? o->mount : "transit", &oom);
    r->name = dup_or_null(tname, &oom);
    r->ca_cert = dup_or_null(o->ca_cert, &oom);
    r->auth_path = dup_or_null(o->auth_path != NULL ? o->auth_path : "kubernetes", &oom);
    r->role = dup_or_null(o->role, &oom);
    r->jwt_file = dup_or_null(o->jwt_file, &oom);
    r->token_file = dup_or_null(o->token_file, &oom);
    r->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 5000;
    r->idle_ms = POOL_IDLE_MS;
#ifdef KMS_TEST_HOOKS
    const char *idle = getenv("KMS_TEST_POOL_IDLE_MS");
    int64_t ims = 0;
    if (idle != NULL && kms_int_parse(idle, &ims) && ims > 0) {
        r->idle_ms = ims;
    }
#endif
    r->log = o->log;
    r->log_arg = o->log_arg;
    if (oom) {
        remote_destroy(r);
        return kms_err_set(err, 500, "out of memory");
    }
    trim_slashes(r->mount);
    trim_slashes(r->auth_path);
    bool no_mount = r->mount == NULL || r->mount[0] == '\0';
    if (no_mount || r->auth_path == NULL || r->auth_path[0] == '\0') {
        remote_destroy(r);
        return kms_err_set(err, 400, "-%s: no mount path", no_mount ? "mount" : "auth-path");
    }
    if (r->ns != NULL && !header_safe(r->ns)) {
        remote_destroy(r);
        return kms_err_set(err, 400, "the namespace holds characters a header cannot carry");
    }
    /* the address and the CA file are read now: a typo in either stops the sidecar at start
     * rather than failing every call it answers (connections are made at the first call) */
    struct kms_cli_http_opts ho;
    struct kms_cli_http *h = NULL;
    char e[512];
    memset(&ho, 0, sizeof(ho));
    ho.addr = r->addr;
    const char *host =
        r->addr != NULL && strstr(r->addr, "://") != NULL ? strstr(r->addr, "://") + 3 : r->addr;
    if (host != NULL && memchr(host, '@', strcspn(host, "/")) != NULL) {
        /* the address is logged and quoted in errors: no credentials in it */
        remote_destroy(r);
        return kms_err_set(err, 400,
                           "-addr: an address with user information (user:password@) is not "
                           "taken; give -vault-token-file or log in with -role");
    }
    if (r->addr == NULL || kms_cli_http_create(&ho, &h, e, sizeof(e)) != 0) {
        kms_err_set(err, 400, "-addr: %s", r->addr == NULL ? "no address" : e);
        remote_destroy(r);
        return -1;
    }
    kms_cli_http_destroy(&h);
    FILE *ca = r->ca_cert != NULL ? fopen(r->ca_cert, "re") : NULL;
    if (r->ca_cert != NULL && ca == NULL) {
        kms_err_set(err, 400, "-ca-cert: cannot read %s: %s", r->ca_cert, strerror(errno));
        remote_destroy(r);
        return -1;
    }
    if (ca != NULL) {
        fclose(ca);
    }
    /* the same key_id as the in-process plugin for the same key */
    char nsp[300] = "";
    if (r->ns != NULL) {
        size_t nl = strlen(r->ns);
        while (nl > 0 && r->ns[nl - 1] == '/') {
            nl--;
        }
        snprintf(nsp, sizeof(nsp), "%.*s/", (int)nl, r->ns);
    }
    if ((size_t)snprintf(out->label, sizeof(out->label), "%s%s/keys/%s", nsp, r->mount, r->name) >=
        sizeof(out->label)) {
        remote_destroy(r);
        return kms_err_set(err, 400, "key name too long");
    }
    out->arg = r;
    out->encrypt = remote_encrypt;
    out->decrypt = remote_decrypt;
    out->destroy = remote_destroy;
    return 0;
}
