/*
 * mkstore.c - kmsd-mkstore builds benchmark stores offline, through the real code path: the
 * store is opened with kms_storage_open (nosync: nothing needs to be durable while building),
 * initialised with kms_api_dev_bootstrap (root token, transit/ mounted), and filled with
 * crafted requests handed to kms_api_handle, exactly as the HTTP layer would hand them:
 *
 *   - `-keys=N` encrypt upserts of distinct names k0000000 … k(N-1) (one key each),
 *   - `-versions=V` a key "rotated" created and rotated until it has V versions,
 *   - always a key "bench" with one version (the fresh-store baseline).
 *
 *   kmsd-mkstore -dir=DIR [-keys=1000000] [-versions=10000] [-map-size=BYTES]
 *                [-seal-key-file=FILE] [-root-token=ID]
 *
 * DIR must not hold a store yet. The seal key is random, written as hex to FILE (default
 * DIR.seal.key, mode 0600). On success it prints shell assignments for run.sh:
 *
 *   storage_path=DIR seal_key_file=FILE map_size=BYTES root_token=ID keys=N versions=V
 *   build_seconds=S data_bytes=B
 *
 * Before writing it checks the free space of DIR's file system against an estimate of the
 * store's size (measured per key, see KEY_BYTES) and refuses when it would not fit.
 */
#include "engine/engines.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

/* Upper estimate of LMDB bytes per upserted key (policy + one version, sealed, B-tree overhead). */
#define KEY_BYTES 1536
/* and per extra version of one key */
#define VERSION_BYTES 512

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char PLAINTEXT64_B64[] = /* base64 of 64 bytes */
    "a21zZC1iZW5jaC1wbGFpbnRleHQtNjQtYnl0ZXMtb2YtZGF0YS0wMTIzNDU2Nzg5YWJjZGVmZ2hpamtsbW5vcA==";

/* One request through the whole pipeline; returns the HTTP status. */
static int call(struct kms_api *api, const char *method, const char *target, const char *token,
                const char *body, char *errbuf, size_t errlen)
{
    struct kms_http_header hdrs[2] = {
        {"X-Vault-Token", token},
        {"Content-Type", "application/json"},
    };
    struct kms_http_req req;
    struct kms_http_resp resp;
    memset(&req, 0, sizeof(req));
    req.method = method;
    req.target = target;
    req.headers = hdrs;
    req.nheaders = 2;
    req.body = (const uint8_t *)body;
    req.body_len = body ? strlen(body) : 0;
    req.remote_addr = "127.0.0.1";
    req.remote_port = 1;
    kms_api_handle(api, &req, &resp);
    int status = resp.status;
    if ((status < 200 || status > 299) && errbuf != NULL) {
        snprintf(errbuf, errlen, "%.*s", (int)(resp.body_len < 400 ? resp.body_len : 400),
                 resp.body ? resp.body : "");
    }
    kms_http_resp_dispose(&resp);
    return status;
}

static int write_seal_key(const char *path, const uint8_t key[32])
{
    char hex[65];
    kms_hex_encode(key, 32, hex);
    hex[64] = '\n';
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        return -1;
    }
    ssize_t w = write(fd, hex, sizeof(hex));
    if (fchmod(fd, 0600) != 0 || close(fd) != 0 || w != (ssize_t)sizeof(hex)) {
        return -1;
    }
    kms_memzero(hex, sizeof(hex));
    return 0;
}

static const char *flag(const char *arg, const char *name)
{
    const char *a = arg + (arg[0] == '-' && arg[1] == '-' ? 2 : arg[0] == '-' ? 1 : 0);
    size_t n = strlen(name);
    return strncmp(a, name, n) == 0 && a[n] == '=' ? a + n + 1 : NULL;
}

static void usage(void)
{
    fprintf(stderr, "usage: kmsd-mkstore -dir=DIR [-keys=N] [-versions=V] [-map-size=BYTES]\n"
                    "                    [-seal-key-file=FILE] [-root-token=ID]\n");
}

int main(int argc, char **argv)
{
    const char *dir = NULL, *seal_file = NULL, *root_id = NULL;
    unsigned long long nkeys = 1000000, nversions = 10000, map_size = 0;
    char seal_buf[1100];
    const char *v;

    for (int i = 1; i < argc; i++) {
        if ((v = flag(argv[i], "dir")) != NULL) {
            dir = v;
        } else if ((v = flag(argv[i], "keys")) != NULL) {
            nkeys = strtoull(v, NULL, 10);
        } else if ((v = flag(argv[i], "versions")) != NULL) {
            nversions = strtoull(v, NULL, 10);
        } else if ((v = flag(argv[i], "map-size")) != NULL) {
            map_size = strtoull(v, NULL, 10);
        } else if ((v = flag(argv[i], "seal-key-file")) != NULL) {
            seal_file = v;
        } else if ((v = flag(argv[i], "root-token")) != NULL) {
            root_id = v;
        } else {
            usage();
            return 2;
        }
    }
    if (dir == NULL || strlen(dir) > 1000) {
        usage();
        return 2;
    }
    if (seal_file == NULL) {
        snprintf(seal_buf, sizeof(seal_buf), "%s.seal.key", dir);
        seal_file = seal_buf;
    }

    /* Disk space: estimate, and size the LMDB map to twice the estimate (sparse file). */
    unsigned long long need =
        (unsigned long long)(nkeys + 16) * KEY_BYTES + nversions * VERSION_BYTES + (8u << 20);
    if (map_size == 0) {
        map_size = need * 2 < (1ull << 30) ? (1ull << 30) : need * 2;
        map_size = (map_size + 4095) / 4096 * 4096;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "kmsd-mkstore: cannot create %s: %s\n", dir, strerror(errno));
        return 1;
    }
    char probe[1100];
    snprintf(probe, sizeof(probe), "%s/data.mdb", dir);
    if (access(probe, F_OK) == 0) {
        fprintf(stderr, "kmsd-mkstore: %s already holds a store; remove it first\n", dir);
        return 1;
    }
    struct statvfs sv;
    if (statvfs(dir, &sv) != 0) {
        fprintf(stderr, "kmsd-mkstore: statvfs %s: %s\n", dir, strerror(errno));
        return 1;
    }
    unsigned long long avail = (unsigned long long)sv.f_bavail * sv.f_frsize;
    if (avail < need + need / 4) {
        fprintf(stderr,
                "kmsd-mkstore: %s has %llu MB free; a store of %llu keys and a %llu-version key "
                "needs about %llu MB\n",
                dir, avail >> 20, nkeys, nversions, need >> 20);
        return 1;
    }

    uint8_t seal[32];
    struct kms_err err;
    struct kms_storage *st = NULL;
    struct kms_api *api = NULL;
    struct kms_storage_opts sopts = {.map_size = (size_t)map_size, .nosync = true, .create = true};
    struct kms_api_opts aopts;
    char root[KMS_API_TOKEN_MAX];
    char target[128], ebuf[512];
    int rc = 1;

    kms_err_clear(&err);
    if (kms_rand_bytes(seal, sizeof(seal)) != 0 || write_seal_key(seal_file, seal) != 0) {
        fprintf(stderr, "kmsd-mkstore: cannot write the seal key to %s\n", seal_file);
        return 1;
    }
    if (kms_storage_open(dir, seal, &sopts, &st, &err) != 0) {
        fprintf(stderr, "kmsd-mkstore: %s\n", err.msg);
        return 1;
    }
    kms_memzero(seal, sizeof(seal));
    memset(&aopts, 0, sizeof(aopts));
    kms_api_limits_default(&aopts.limits);
    aopts.version = "bench";
    if (kms_engines_create(st, &aopts, NULL, &api, &err) != 0 ||
        kms_api_dev_bootstrap(api, root_id, root, sizeof(root), &err) != 0) {
        fprintf(stderr, "kmsd-mkstore: %s\n", err.msg);
        goto out;
    }

    double t0 = now_s();
    char body[256];
    snprintf(body, sizeof(body), "{\"plaintext\":\"%s\"}", PLAINTEXT64_B64);
    if (call(api, "POST", "/v1/transit/encrypt/bench", root, body, ebuf, sizeof(ebuf)) != 200) {
        fprintf(stderr, "kmsd-mkstore: encrypt upsert of \"bench\" failed: %s\n", ebuf);
        goto out;
    }
    double tp = t0;
    for (unsigned long long i = 0; i < nkeys; i++) {
        snprintf(target, sizeof(target), "/v1/transit/encrypt/k%07llu", i);
        int s = call(api, "POST", target, root, body, ebuf, sizeof(ebuf));
        if (s != 200) {
            fprintf(stderr, "kmsd-mkstore: %s -> %d %s\n", target, s, ebuf);
            goto out;
        }
        if ((i + 1) % 100000 == 0 || i + 1 == nkeys) {
            double t = now_s();
            fprintf(
                stderr, "kmsd-mkstore: %llu/%llu keys (%.0f upserts/s)\n", i + 1, nkeys,
                (i + 1 == nkeys && (i + 1) % 100000 != 0 ? (double)((i + 1) % 100000) : 100000.0) /
                    (t - tp));
            tp = t;
        }
    }
    if (nversions > 0) {
        if (call(api, "POST", "/v1/transit/keys/rotated", root, "{}", ebuf, sizeof(ebuf)) / 100 !=
            2) {
            fprintf(stderr, "kmsd-mkstore: create \"rotated\" failed: %s\n", ebuf);
            goto out;
        }
        for (unsigned long long vv = 2; vv <= nversions; vv++) {
            int s = call(api, "POST", "/v1/transit/keys/rotated/rotate", root, "{}", ebuf,
                         sizeof(ebuf));
            if (s / 100 != 2) {
                fprintf(stderr, "kmsd-mkstore: rotation to v%llu -> %d %s\n", vv, s, ebuf);
                goto out;
            }
            if (vv % 2000 == 0 || vv == nversions) {
                fprintf(stderr, "kmsd-mkstore: \"rotated\" at v%llu/%llu\n", vv, nversions);
            }
        }
    }
    double secs = now_s() - t0;
    kms_api_destroy(&api);
    kms_storage_close(&st);
    struct stat sb;
    unsigned long long data_bytes =
        stat(probe, &sb) == 0 ? (unsigned long long)sb.st_blocks * 512 : 0;
    printf("storage_path=%s\nseal_key_file=%s\nmap_size=%llu\nroot_token=%s\nkeys=%llu\n"
           "versions=%llu\nbuild_seconds=%.1f\ndata_bytes=%llu\n",
           dir, seal_file, map_size, root, nkeys, nversions, secs, data_bytes);
    fflush(stdout);
    rc = 0;
out:
    kms_memzero(root, sizeof(root));
    kms_api_destroy(&api);
    kms_storage_close(&st);
    return rc;
}
