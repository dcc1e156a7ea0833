/*
 * apibench.c - kmsd-apibench times the API pipeline alone: kms_api_handle called in-process in
 * a loop, no sockets, no HTTP parsing. Subtracting it from a wrk figure tells how much of a
 * request's cost is the HTTP layer and how much is the pipeline (token lookup, routing, JSON,
 * LMDB, crypto, envelope); it is also the easiest thing to profile (perf, callgrind).
 *
 *   kmsd-apibench [-dir=DIR -root-token=T] [-op=encrypt|decrypt|batch] [-key=bench]
 *                 [-nkeys=N [-warm]] [-key-cache-size=N] [-seconds=3 | -requests=N]
 *                 [-batch=1000]
 *                 [-audit=FILE [-audit-fsync=batch|always|never]]
 *   kmsd-apibench -op=sign|verify -type=ed25519|ecdsa-p256|… [-batch=1] [-seconds=3]
 *
 * -op=sign / -op=verify create a signing key "bench-<type>" of -type (throw-away store only)
 * and sign, or verify a signature made once, over a 32-byte input: one item per request with
 * -batch=1, else a batch_input of -batch items (items/s = requests/s x batch). ECDSA and RSA
 * hash the input with sha2-256 (the default); every verify must answer valid.
 *
 * -audit=FILE records every request in an audit file (removed at the end), so the cost of
 * building, HMAC-ing, chaining and writing the two lines shows up in the figure.
 *
 * -key=NAME uses that key instead of "bench"; -nkeys=N (encrypt only) names a random key
 * k0000000 … k<N-1> per request, as kmsd-mkstore made them (key-cache misses, B-tree walks);
 * -key-cache-size=N sets key_cache_size (default 10,000), e.g. to N to hold every key.
 * -warm encrypts once under each of the N keys before the clock starts, so a cache that holds
 * them all is timed in its steady state (every request a hit on a cold entry), not filling.
 *
 * -requests=N runs exactly N requests (after one warm-up request), for instruction counts
 * under valgrind --tool=callgrind (Ir / N = instructions per request).
 *
 * Without -dir it makes a throw-away store in $TMPDIR (nosync) with a key "bench". With -dir
 * it opens an existing store made by kmsd-mkstore (seal key from DIR.seal.key, root token from
 * -root-token=). One thread. Prints:
 *
 *   API op=encrypt requests=N seconds=S us_per_request=U items_per_s=I
 */
#include "audit/audit.h"
#include "engine/engines.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char PT64[] =
    "a21zZC1iZW5jaC1wbGFpbnRleHQtNjQtYnl0ZXMtb2YtZGF0YS0wMTIzNDU2Nzg5YWJjZGVmZ2hpamtsbW5vcA==";

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* base64 of the 32 bytes every sign/verify request signs */
static const char IN32[] = "a21zZC1iZW5jaC1zaWduLWlucHV0LTMyLWJ5dGVzISE=";

/* The first "vault:v…" string of a JSON answer, copied into out; -1 without one. */
static int vault_string(const char *json, char *out, size_t cap)
{
    const char *s = json != NULL ? strstr(json, "vault:v") : NULL;
    const char *e = s != NULL ? strchr(s, '"') : NULL;

    if (e == NULL || (size_t)(e - s) >= cap)
        return -1;
    memcpy(out, s, (size_t)(e - s));
    out[e - s] = '\0';
    return 0;
}

/* A body of one item (batch <= 1) or a batch_input of `batch` copies of it; caller frees. */
static char *items_body(const char *item, long batch)
{
    size_t il = strlen(item), cap = (size_t)(batch > 1 ? batch : 1) * (il + 3) + 32;
    char *b = malloc(cap);
    size_t o;

    if (b == NULL)
        return NULL;
    if (batch <= 1) {
        snprintf(b, cap, "{%s}", item);
        return b;
    }
    o = (size_t)snprintf(b, cap, "{\"batch_input\":[");
    for (long i = 0; i < batch; i++)
        o += (size_t)snprintf(b + o, cap - o, "%s{%s}", i ? "," : "", item);
    snprintf(b + o, cap - o, "]}");
    return b;
}

static int call(struct kms_api *api, const char *target, const char *token, const char *body,
                size_t body_len, char **out)
{
    struct kms_http_header hdrs[3] = {
        {"Host", "127.0.0.1:8200"},
        {"X-Vault-Token", token},
        {"Content-Type", "application/json"},
    };
    struct kms_http_req req;
    struct kms_http_resp resp;
    memset(&req, 0, sizeof(req));
    req.method = "POST";
    req.target = target;
    req.headers = hdrs;
    req.nheaders = 3;
    req.body = (const uint8_t *)body;
    req.body_len = body_len;
    req.remote_addr = "127.0.0.1";
    req.remote_port = 40000;
    kms_api_handle(api, &req, &resp);
    int s = resp.status;
    if (out != NULL) {
        *out = resp.body ? strndup(resp.body, resp.body_len) : NULL;
    }
    kms_http_resp_dispose(&resp);
    return s;
}

int main(int argc, char **argv)
{
    const char *dir = NULL, *op = "encrypt", *root_id = NULL, *key = "bench", *type = NULL;
    long nkeys = 0;
    long cache_size = 0;
    bool warm = false;
    double seconds = 3;
    long batch = 1000, nreq = 0;
    const char *audit_file = NULL, *audit_fsync = "batch";
    kms_api_malloc_tune(); /* as kmsd does */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i] + (argv[i][0] == '-') + (argv[i][1] == '-');
        if (strncmp(a, "dir=", 4) == 0) {
            dir = a + 4;
        } else if (strncmp(a, "op=", 3) == 0) {
            op = a + 3;
        } else if (strncmp(a, "seconds=", 8) == 0) {
            seconds = atof(a + 8);
        } else if (strncmp(a, "key=", 4) == 0) {
            key = a + 4;
        } else if (strncmp(a, "nkeys=", 6) == 0) {
            nkeys = strtol(a + 6, NULL, 10);
        } else if (strcmp(a, "warm") == 0) {
            warm = true;
        } else if (strncmp(a, "key-cache-size=", 15) == 0) {
            cache_size = strtol(a + 15, NULL, 10);
        } else if (strncmp(a, "requests=", 9) == 0) {
            nreq = strtol(a + 9, NULL, 10);
        } else if (strncmp(a, "batch=", 6) == 0) {
            batch = strtol(a + 6, NULL, 10);
        } else if (strncmp(a, "type=", 5) == 0) {
            type = a + 5;
        } else if (strncmp(a, "audit=", 6) == 0) {
            audit_file = a + 6;
        } else if (strncmp(a, "audit-fsync=", 12) == 0) {
            audit_fsync = a + 12;
        } else if (strncmp(a, "root-token=", 11) == 0) {
            root_id = a + 11;
        } else {
            fprintf(
                stderr,
                "usage: kmsd-apibench [-dir=DIR -root-token=T] "
                "[-op=encrypt|decrypt|batch] [-key=NAME] [-nkeys=N [-warm]] [-key-cache-size=N] "
                "[-seconds=S | -requests=N] [-batch=N] "
                "[-audit=FILE [-audit-fsync=batch|always|never]]\n"
                "       kmsd-apibench -op=sign|verify -type=TYPE [-batch=N] "
                "[-seconds=S | -requests=N]\n");
            return 2;
        }
    }
    bool sigop = strcmp(op, "sign") == 0 || strcmp(op, "verify") == 0;
    if (sigop && (type == NULL || dir != NULL || nkeys > 0 || strlen(type) > 32)) {
        fprintf(stderr, "kmsd-apibench: -op=%s needs -type=, a throw-away store, no -nkeys\n", op);
        return 2;
    }
    char tmp[256] = "";
    uint8_t seal[32];
    struct kms_err err;
    struct kms_storage *st = NULL;
    struct kms_api *api = NULL;
    struct kms_audit *audit = NULL;
    struct kms_storage_opts sopts = {.map_size = 0, .nosync = true, .create = true};
    struct kms_api_opts aopts;
    char root[KMS_API_TOKEN_MAX];
    int rc = 1;

    kms_err_clear(&err);
    if (dir == NULL) {
        const char *t = getenv("TMPDIR");
        snprintf(tmp, sizeof(tmp), "%s/kmsd-apibench-XXXXXX", t && strlen(t) < 200 ? t : "/tmp");
        if (mkdtemp(tmp) == NULL || kms_rand_bytes(seal, sizeof(seal)) != 0) {
            return 1;
        }
        dir = tmp;
    } else {
        char sf[1100];
        snprintf(sf, sizeof(sf), "%s.seal.key", dir);
        if (root_id == NULL || kms_seal_key_load_file(sf, seal, &err) != 0) {
            fprintf(stderr, "kmsd-apibench: -dir needs -root-token and %s: %s\n", sf, err.msg);
            return 1;
        }
    }
    if (kms_storage_open(dir, seal, &sopts, &st, &err) != 0) {
        fprintf(stderr, "kmsd-apibench: %s\n", err.msg);
        return 1;
    }
    kms_memzero(seal, sizeof(seal));
    memset(&aopts, 0, sizeof(aopts));
    kms_api_limits_default(&aopts.limits);
    aopts.version = "bench";

    if (audit_file != NULL) {
        struct kms_audit_device_opts dev;
        struct kms_audit_opts ao;
        kms_audit_device_opts_default(&dev);
        snprintf(dev.path, sizeof(dev.path), "%s", audit_file);
        if (kms_audit_fsync_parse(audit_fsync, &dev.fsync) != 0) {
            fprintf(stderr, "kmsd-apibench: bad -audit-fsync\n");
            goto out;
        }
        memset(&ao, 0, sizeof(ao));
        ao.devices = &dev;
        ao.ndevices = 1;
        if (kms_audit_create(st, &ao, &audit, &err) != 0) {
            fprintf(stderr, "kmsd-apibench: %s\n", err.msg);
            goto out;
        }
        aopts.audit = audit;
    }
    struct kms_engines_opts eopts;
    memset(&eopts, 0, sizeof(eopts));
    eopts.key_cache_size = cache_size > 0 ? (size_t)cache_size : 0;
    if (kms_engines_create(st, &aopts, &eopts, &api, &err) != 0) {
        fprintf(stderr, "kmsd-apibench: %s\n", err.msg);
        goto out;
    }
    if (tmp[0] != '\0') {
        if (kms_api_dev_bootstrap(api, NULL, root, sizeof(root), &err) != 0) {
            fprintf(stderr, "kmsd-apibench: %s\n", err.msg);
            goto out;
        }
    } else {
        snprintf(root, sizeof(root), "%s", root_id);
    }

    char single[256];
    snprintf(single, sizeof(single), "{\"plaintext\":\"%s\"}", PT64);
    char *enc_resp = NULL;
    char enc_target[300], dec_target[300];
    snprintf(enc_target, sizeof(enc_target), "/v1/transit/encrypt/%s", key);
    snprintf(dec_target, sizeof(dec_target), "/v1/transit/decrypt/%s", key);
    if (call(api, enc_target, root, single, strlen(single), &enc_resp) != 200 || enc_resp == NULL) {
        fprintf(stderr, "kmsd-apibench: first encrypt failed: %s\n", enc_resp ? enc_resp : "");
        goto out;
    }
    const char *ct = strstr(enc_resp, "vault:v");
    const char *ct_end = ct ? strchr(ct, '"') : NULL;
    char dec[512];
    snprintf(dec, sizeof(dec), "{\"ciphertext\":\"%.*s\"}", ct && ct_end ? (int)(ct_end - ct) : 0,
             ct ? ct : "");
    free(enc_resp);

    size_t item = strlen(PT64) + 18;
    size_t cap = (size_t)batch * (item + 1) + 32;
    char *bbody = malloc(cap);
    if (bbody == NULL) {
        goto out;
    }
    size_t o = (size_t)snprintf(bbody, cap, "{\"batch_input\":[");
    for (long i = 0; i < batch; i++) {
        o += (size_t)snprintf(bbody + o, cap - o, "%s{\"plaintext\":\"%s\"}", i ? "," : "", PT64);
    }
    o += (size_t)snprintf(bbody + o, cap - o, "]}");

    const char *target = strcmp(op, "decrypt") == 0 ? dec_target : enc_target;
    char rnd_target[64];
    unsigned long long lcg = 0x9e3779b97f4a7c15ull;
    const char *body = strcmp(op, "decrypt") == 0 ? dec : strcmp(op, "batch") == 0 ? bbody : single;
    long items = strcmp(op, "batch") == 0 ? batch : 1;
    char *sbody = NULL;
    char sig_target[128];
    if (sigop) {
        char path[128], it[1400], sig[1200], *r = NULL;
        char kbody[80];
        snprintf(path, sizeof(path), "/v1/transit/keys/bench-%s", type);
        snprintf(kbody, sizeof(kbody), "{\"type\":\"%s\"}", type);
        snprintf(sig_target, sizeof(sig_target), "/v1/transit/sign/bench-%s", type);
        snprintf(it, sizeof(it), "\"input\":\"%s\"", IN32);
        int s1 = call(api, path, root, kbody, strlen(kbody), NULL);
        char one[1500];
        snprintf(one, sizeof(one), "{%s}", it);
        if (s1 != 200 || call(api, sig_target, root, one, strlen(one), &r) != 200 ||
            vault_string(r, sig, sizeof(sig)) != 0) {
            fprintf(stderr, "kmsd-apibench: creating or signing with a %s key failed: %s\n", type,
                    r ? r : "");
            free(r);
            free(bbody);
            goto out;
        }
        free(r);
        if (strcmp(op, "verify") == 0) {
            snprintf(it, sizeof(it), "\"input\":\"%s\",\"signature\":\"%s\"", IN32, sig);
            snprintf(sig_target, sizeof(sig_target), "/v1/transit/verify/bench-%s", type);
        }
        sbody = items_body(it, batch);
        r = NULL;
        /* one checked request: every it signed, or verified as valid */
        if (sbody == NULL || call(api, sig_target, root, sbody, strlen(sbody), &r) != 200 ||
            r == NULL || strstr(r, "\"error\"") != NULL || strstr(r, "\"valid\":false") != NULL ||
            (strcmp(op, "verify") == 0 && strstr(r, "\"valid\":true") == NULL)) {
            fprintf(stderr, "kmsd-apibench: %s -> %s\n", sig_target, r ? r : "");
            free(r);
            free(sbody);
            free(bbody);
            goto out;
        }
        free(r);
        target = sig_target;
        body = sbody;
        items = batch > 1 ? batch : 1;
    }
    size_t blen = strlen(body);

    for (long k = 0; warm && nkeys > 0 && strcmp(op, "encrypt") == 0 && k < nkeys; k++) {
        snprintf(rnd_target, sizeof(rnd_target), "/v1/transit/encrypt/k%07ld", k);
        if (call(api, rnd_target, root, body, blen, NULL) != 200) {
            fprintf(stderr, "kmsd-apibench: warming %s failed\n", rnd_target);
            free(sbody);
            free(bbody);
            goto out;
        }
    }
    long n = 0;
    double t0 = now_s(), t = t0;
    while (nreq > 0 ? n < nreq : t - t0 < seconds) {
        for (int k = 0; k < (nreq > 0 ? 1 : 16); k++, n++) {
            if (nkeys > 0 && strcmp(op, "encrypt") == 0) {
                lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
                snprintf(rnd_target, sizeof(rnd_target), "/v1/transit/encrypt/k%07llu",
                         (lcg >> 33) % (unsigned long long)nkeys);
                target = rnd_target;
            }
            int s = call(api, target, root, body, blen, NULL);
            if (s != 200) {
                fprintf(stderr, "kmsd-apibench: %s -> %d\n", target, s);
                free(sbody);
                free(bbody);
                goto out;
            }
        }
        t = now_s();
    }
    free(sbody);
    free(bbody);
    double el = t - t0;
    if (sigop)
        printf("API op=%s type=%s batch=%ld requests=%ld seconds=%.2f us_per_request=%.2f "
               "items_per_s=%.0f\n",
               op, type, items, n, el, el * 1e6 / (double)n, (double)n * (double)items / el);
    else
        printf("API op=%s requests=%ld seconds=%.2f us_per_request=%.2f items_per_s=%.0f\n", op, n,
               el, el * 1e6 / (double)n, (double)n * (double)items / el);
    rc = 0;
out:
    kms_memzero(root, sizeof(root));
    kms_api_destroy(&api);
    kms_audit_destroy(&audit);
    if (audit_file != NULL) {
        unlink(audit_file);
    }
    kms_storage_close(&st);
    if (tmp[0] != '\0') {
        char p[300];
        snprintf(p, sizeof(p), "%s/data.mdb", tmp);
        unlink(p);
        snprintf(p, sizeof(p), "%s/lock.mdb", tmp);
        unlink(p);
        rmdir(tmp);
    }
    return rc;
}
