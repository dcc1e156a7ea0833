/*
 * envelope.c - `kmsctl envelope encrypt|decrypt`: the product doc's envelope encryption for
 * data of any size, streamed through fixed buffers so many-GiB files need constant memory.
 *
 * Format (the product doc's wire format, the one Kube-DC's etcd backups use):
 *   <out>            NONCE (12 B) || AES-256-GCM CIPHERTEXT || TAG (16 B)
 *   <out>.meta.json  {"schemaVersion": 1, "transitKey", "transitKeyVersion",
 *                     "algorithm": "AES-256-GCM", "nonce" (base64), "wrappedDek" ("vault:vN:…"),
 *                     "createdAt", "source", "sha256" (hex, of the plaintext), "plaintextSize"}
 * The body is exactly what the doc's Python helper's `nonce + AESGCM(dek).encrypt(nonce,
 * plaintext, None)` produces, so either side opens the other's files given the wrapped DEK.
 *
 * Design notes:
 * - A fresh 256-bit DEK per file comes from transit/datakey/plaintext/<key>: the server
 *   returns it in the clear and wrapped by the KMSKey. Tokens without datakey rights (the
 *   developer role) get a local random DEK wrapped by transit/encrypt, which is what the
 *   product doc's helpers do. The clear copy lives in one stack buffer only until the cipher
 *   context holds its key schedule, then it is wiped.
 * - Encrypted and decrypted output goes to a temporary 0600 file beside the target (an unnamed
 *   O_TMPFILE one where possible, so even SIGKILL leaves nothing) and is linked and renamed
 *   into place only after success; any failure removes it, so a partial or unauthenticated
 *   file is never left under the requested name.
 * - Decryption releases plaintext before the tag at the end is checked. Into a file that is
 *   harmless (the temporary file is deleted on failure). To stdout (--out -) it is not, so
 *   there the input must be a regular file and is read twice: once to verify the tag and the
 *   sha256, once to decrypt; the second pass checks again and fails loudly if the file changed.
 * - The last 16 bytes of the input are the tag, so decryption holds back 16 bytes of each read
 *   until it knows more data follows; that also lets it read from a pipe.
 * - A progress bar is drawn on stderr only when stderr is a terminal (and not --no-progress).
 */
#include "cli/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1u << 20)
#define NONCE_LEN 12
#define TAG_LEN KMS_AEAD_TAG_LEN
#define DEK_LEN 32
#define META_MAX (1u << 20)
#define ALG_NAME "AES-256-GCM"
#define PROGRESS_EVERY_MS 100

struct env_args {
    struct kms_cli_global g;
    const char *in, *out, *meta;
    bool no_progress;
};

/* ---- progress ---------------------------------------------------------------------------- */

struct progress {
    bool on;
    const char *label;
    uint64_t total; /* 0 = unknown */
    uint64_t done;
    int64_t start_ms, last_ms;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void progress_start(struct progress *p, bool enabled, const char *label, uint64_t total)
{
    memset(p, 0, sizeof(*p));
    p->on = enabled && isatty(STDERR_FILENO);
    p->label = label;
    p->total = total;
    p->start_ms = mono_ms();
}

static void progress_draw(struct progress *p, bool final)
{
    char done[32], total[32], rate[32];
    int64_t now = mono_ms();
    if (!p->on || (!final && now - p->last_ms < PROGRESS_EVERY_MS)) {
        return;
    }
    p->last_ms = now;
    double secs = (double)(now - p->start_ms) / 1000.0;
    kms_cli_human_bytes((double)p->done, done, sizeof(done));
    kms_cli_human_bytes(secs > 0 ? (double)p->done / secs : 0, rate, sizeof(rate));
    if (p->total > 0) {
        char bar[31];
        unsigned pct = (unsigned)(p->done * 100 / p->total);
        size_t fill = (size_t)(p->done * 30 / p->total);
        memset(bar, '#', fill);
        memset(bar + fill, '.', 30 - fill);
        bar[30] = '\0';
        kms_cli_human_bytes((double)p->total, total, sizeof(total));
        fprintf(stderr, "\r%-10s %3u%% [%s] %s / %s  %s/s   ", p->label, pct > 100 ? 100 : pct, bar,
                done, total, rate);
    } else {
        fprintf(stderr, "\r%-10s %s  %s/s   ", p->label, done, rate);
    }
    if (final) {
        fputc('\n', stderr);
    }
}

static void progress_add(struct progress *p, size_t n)
{
    p->done += n;
    progress_draw(p, false);
}

/* ---- I/O --------------------------------------------------------------------------------- */

/* Read until n bytes or end of input; returns the count, or -1 (errno). */
static ssize_t read_full(int fd, uint8_t *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            return -1;
        }
        if (r == 0) {
            break;
        }
        got += (size_t)r;
    }
    return (ssize_t)got;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static bool is_dash(const char *p)
{
    return p != NULL && strcmp(p, "-") == 0;
}

/* Whether an output path is standard output: "-", /dev/stdout, /dev/fd/1, /proc/self/fd/1. */
static bool to_stdout(const char *p)
{
    return p != NULL && (is_dash(p) || kms_cli_fd_path(p) == STDOUT_FILENO);
}

/* The output: a temporary file beside `path` (renamed by finish_output), or stdout. */
struct output {
    const char *path;
    char target[4096]; /* path, its link followed */
    char tmp[4096];
    int fd;
};

static int open_output(struct output *o, const char *path)
{
    bool special = false;
    memset(o, 0, sizeof(*o));
    o->path = path;
    o->fd = -1;
    if (is_dash(path)) {
        o->fd = STDOUT_FILENO;
        return 0;
    }
    /* a device or a pipe would be replaced by the renamed file (as root, /dev/null); asked
       first, as /dev/stdout on a pipe is a link to "pipe:[N]", which does not resolve */
    bool fd_path = kms_cli_fd_path(path) >= 0;
    if (!fd_path && kms_cli_out_target(path, o->target, sizeof(o->target), &special) != 0) {
        return -1;
    }
    if (fd_path || special) {
        kms_cli_errorf("--out %s is not a regular file; use --out - for standard output", path);
        return -1;
    }
    o->path = o->target;
    o->fd = kms_cli_tmpfile_for(o->target, o->tmp, sizeof(o->tmp));
    if (o->fd < 0) {
        o->tmp[0] = '\0';
        kms_cli_errorf("cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int finish_output(struct output *o)
{
    if (is_dash(o->path)) {
        return 0;
    }
    /* fsynced, the data is on disk: a close error after that changes nothing */
    if (fsync(o->fd) != 0 || kms_cli_tmp_install(o->fd, o->tmp, sizeof(o->tmp), o->path) != 0) {
        kms_cli_errorf("cannot write %s: %s", o->path, strerror(errno));
        return -1;
    }
    close(o->fd);
    o->fd = -1;
    return 0;
}

/* Drop a failed output: the temporary file disappears, nothing reaches o->path. */
static void abort_output(struct output *o)
{
    if (o->fd >= 0 && !is_dash(o->path)) {
        close(o->fd);
    }
    o->fd = -1;
    if (o->tmp[0] != '\0') {
        unlink(o->tmp);
        kms_cli_tmp_release(o->tmp);
        o->tmp[0] = '\0';
    }
}

/*
 * The sidecar's temporary file, made before any data is read: a --meta that cannot be written
 * (a directory, a dangling link, a missing or read-only directory) fails the run before the
 * body replaces an existing --out. *fd = -1 for "-", /dev/stdout, a FIFO or a device, which
 * are written directly at the end. 0, or -1 after printing why.
 */
static int open_sidecar(const char *metapath, char *target, size_t tn, char *tmp, size_t n, int *fd)
{
    bool special = false;
    *fd = -1;
    tmp[0] = '\0';
    if (is_dash(metapath) || kms_cli_fd_path(metapath) >= 0) {
        return 0;
    }
    if (kms_cli_out_target(metapath, target, tn, &special) != 0) {
        return -1;
    }
    if (special) {
        return 0;
    }
    *fd = kms_cli_tmpfile_for(target, tmp, n);
    if (*fd < 0) {
        tmp[0] = '\0';
        kms_cli_errorf("cannot create %s: %s", metapath, strerror(errno));
        return -1;
    }
    return 0;
}

static int open_input(const char *path, int *fd, uint64_t *size, bool *regular)
{
    struct stat st;
    *fd = is_dash(path) ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0) {
        kms_cli_errorf("cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    *regular = fstat(*fd, &st) == 0 && S_ISREG(st.st_mode);
    *size = *regular ? (uint64_t)st.st_size : 0;
    return 0;
}

static void close_input(const char *path, int *fd)
{
    if (*fd >= 0 && !is_dash(path)) {
        close(*fd);
    }
    *fd = -1;
}

/* ---- the data key ------------------------------------------------------------------------ */

/* Decode a base64 DEK of exactly DEK_LEN bytes into dek. */
static int decode_dek(const char *b64, uint8_t dek[DEK_LEN])
{
    uint8_t tmp[DEK_LEN + 8];
    size_t n = 0, at = 0;
    int rc = -1;
    if (b64 != NULL && kms_b64_decoded_max(strlen(b64)) <= sizeof(tmp) &&
        kms_b64_decode(b64, strlen(b64), tmp, &n, &at) == 0 && n == DEK_LEN) {
        memcpy(dek, tmp, DEK_LEN);
        rc = 0;
    }
    kms_memzero(tmp, sizeof(tmp));
    return rc;
}

/*
 * The product doc's own helpers make the DEK locally and wrap it with transit/encrypt. kmsctl
 * does the same when the token may not call datakey (the developer and viewer roles may
 * encrypt but not generate data keys): a random DEK into dek, *resp = the encrypt answer,
 * whose data carries "ciphertext" and "key_version" as datakey's does.
 */
static int wrap_local_dek(struct kms_cli_session *s, const char *key, uint8_t dek[DEK_LEN],
                          json_t **resp)
{
    char b64[64];
    char path[640];
    json_t *req = NULL;
    int rc = -1;

    json_decref(*resp);
    *resp = NULL;
    if (kms_rand_bytes(dek, DEK_LEN) != 0) {
        kms_cli_errorf("cannot generate a data key");
        goto out;
    }
    kms_b64_encode(dek, DEK_LEN, b64);
    req = json_pack("{s:s}", "plaintext", b64);
    if (req == NULL) {
        kms_cli_errorf("out of memory");
        goto out;
    }
    snprintf(path, sizeof(path), "transit/encrypt/%s", key);
    if (kms_cli_call(s, "POST", path, req, 0, resp) != 0) {
        goto out;
    }
    rc = 0;
out:
    kms_memzero(b64, sizeof(b64));
    json_decref(req);
    return rc;
}

/* ---- encrypt ----------------------------------------------------------------------------- */

static int env_encrypt(struct env_args *a, const char *name)
{
    struct kms_cli_session s;
    struct output o;
    struct progress pr;
    struct kms_aead_stream *st = NULL;
    struct kms_hash_stream *hs = NULL;
    json_t *req = NULL, *resp = NULL, *meta = NULL;
    uint8_t *buf = NULL;
    uint8_t dek[DEK_LEN];
    uint8_t nonce[NONCE_LEN], tag[TAG_LEN], digest[32];
    char key[512], path[640], metapath[4096], nonce64[32], hex[65], now[40];
    char mtarget[4096], mtmp[4096] = "";
    char *metatext = NULL;
    int in = -1, mfd = -1;
    uint64_t size = 0;
    bool regular = false;
    int status = KMS_CLI_EXIT_USAGE;

    memset(&s, 0, sizeof(s));
    memset(&o, 0, sizeof(o));
    o.fd = -1;
    if (a->in == NULL || a->out == NULL) {
        kms_cli_errorf("envelope encrypt needs --in FILE|- and --out FILE");
        goto out;
    }
    if (a->meta == NULL && is_dash(a->out)) {
        kms_cli_errorf("--out - needs --meta FILE for the wrapped data key");
        goto out;
    }
    /* the body and the sidecar in one stream cannot be told apart again */
    if (is_dash(a->out) && to_stdout(a->meta)) {
        kms_cli_errorf("--out - and --meta %s would both go to standard output; give --meta FILE",
                       a->meta);
        goto out;
    }
    snprintf(metapath, sizeof(metapath), "%s%s", a->meta ? a->meta : a->out,
             a->meta ? "" : ".meta.json");
    /* the same file under two spellings ("./x", a link, a hard link) would have the sidecar
       replace the body just written, or the body or sidecar replace the plaintext input */
    if (kms_cli_same_file(metapath, a->out) || kms_cli_same_file(a->in, a->out) ||
        kms_cli_same_file(a->in, metapath)) {
        kms_cli_errorf("--in, --out and --meta must be different files");
        goto out;
    }
    if ((status = kms_cli_session_open(&a->g, KMS_CLI_NEED_PROJECT_TOKEN, &s)) != 0) {
        goto out;
    }
    status = KMS_CLI_EXIT_FAIL;
    if (open_input(a->in, &in, &size, &regular) != 0 ||
        kms_cli_transit_key(&s, name, key, sizeof(key)) != 0) {
        goto out;
    }
    buf = malloc(CHUNK);
    req = json_pack("{s:i}", "bits", 256);
    if (buf == NULL || req == NULL) {
        kms_cli_errorf("out of memory");
        goto out;
    }
    snprintf(path, sizeof(path), "transit/datakey/plaintext/%s", key);
    int dk = kms_cli_call(&s, "POST", path, req, 403, &resp);
    if (dk == 403 && wrap_local_dek(&s, key, dek, &resp) != 0) {
        goto out;
    }
    if (dk != 0 && dk != 403) {
        goto out;
    }
    const json_t *data = json_object_get(resp, "data");
    const char *wrapped = json_string_value(json_object_get(data, "ciphertext"));
    json_int_t kver = json_integer_value(json_object_get(data, "key_version"));
    if (wrapped == NULL || strncmp(wrapped, "vault:v", 7) != 0 ||
        (dk == 0 && decode_dek(json_string_value(json_object_get(data, "plaintext")), dek) != 0)) {
        kms_cli_errorf("the server's datakey answer is malformed");
        goto out;
    }
    json_object_del((json_t *)(uintptr_t)data, "plaintext"); /* wiped by the allocator */
    if (kms_rand_bytes(nonce, sizeof(nonce)) != 0 ||
        kms_aead_stream_create(KMS_AEAD_AES256_GCM, true, dek, nonce, NULL, 0, &st) != 0 ||
        kms_hash_stream_create(KMS_HASH_SHA2_256, &hs) != 0) {
        kms_memzero(dek, sizeof(dek));
        kms_cli_errorf("cannot start the cipher");
        goto out;
    }
    kms_memzero(dek, sizeof(dek));
    if (open_output(&o, a->out) != 0 ||
        open_sidecar(metapath, mtarget, sizeof(mtarget), mtmp, sizeof(mtmp), &mfd) != 0) {
        goto out;
    }
    if (write_all(o.fd, nonce, sizeof(nonce)) != 0) {
        kms_cli_errorf("cannot write %s: %s", a->out, strerror(errno));
        goto out;
    }
    progress_start(&pr, !a->no_progress, "encrypting", size);
    uint64_t total = 0;
    for (;;) {
        ssize_t n = read_full(in, buf, CHUNK);
        if (n < 0) {
            kms_cli_errorf("cannot read %s: %s", a->in, strerror(errno));
            goto out;
        }
        if (n == 0) {
            break;
        }
        if (kms_hash_stream_update(hs, buf, (size_t)n) != 0 ||
            kms_aead_stream_update(st, buf, (size_t)n, buf) != 0) {
            kms_cli_errorf("encryption failed");
            goto out;
        }
        if (write_all(o.fd, buf, (size_t)n) != 0) {
            kms_cli_errorf("cannot write %s: %s", a->out, strerror(errno));
            goto out;
        }
        total += (uint64_t)n;
        progress_add(&pr, (size_t)n);
    }
    if (kms_aead_stream_seal_final(st, tag) != 0 || kms_hash_stream_final(hs, digest) != 0) {
        kms_cli_errorf("encryption failed");
        goto out;
    }
    if (write_all(o.fd, tag, sizeof(tag)) != 0) {
        kms_cli_errorf("cannot write %s: %s", a->out, strerror(errno));
        goto out;
    }
    progress_draw(&pr, true);
    int64_t sec;
    int32_t nsec;
    kms_now(&sec, &nsec);
    kms_time_rfc3339(sec, 0, now);
    kms_b64_encode(nonce, sizeof(nonce), nonce64);
    kms_hex_encode(digest, sizeof(digest), hex);
    meta = json_pack("{s:i, s:s, s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:I}", "schemaVersion", 1,
                     "transitKey", key, "transitKeyVersion", kver, "algorithm", ALG_NAME, "nonce",
                     nonce64, "wrappedDek", wrapped, "createdAt", now, "source",
                     is_dash(a->in) ? "stdin" : a->in, "sha256", hex, "plaintextSize",
                     (json_int_t)total);
    char *text = meta ? json_dumps(meta, JSON_INDENT(2)) : NULL;
    size_t ml = text ? strlen(text) : 0;
    metatext = text ? malloc(ml + 2) : NULL;
    if (metatext == NULL) {
        free(text);
        kms_cli_errorf("out of memory");
        goto out;
    }
    memcpy(metatext, text, ml);
    free(text);
    metatext[ml++] = '\n';
    metatext[ml] = '\0';
    /* the sidecar is complete on disk before the body replaces anything: a sidecar that
       cannot be written fails the run while an existing --out is still untouched */
    if (mfd >= 0 && (write_all(mfd, (const uint8_t *)metatext, ml) != 0 || fsync(mfd) != 0)) {
        kms_cli_errorf("cannot write %s: %s", metapath, strerror(errno));
        goto out;
    }
    if (finish_output(&o) != 0) {
        goto out;
    }
    /* a body without its wrapped key is useless: until the sidecar is in place, a signal or
       an error removes it again */
    bool guarded = !is_dash(a->out) && kms_cli_tmp_guard(a->out) == 0;
    int mrc = 0;
    if (mfd >= 0) {
        mrc = kms_cli_tmp_install(mfd, mtmp, sizeof(mtmp), mtarget);
        if (mrc != 0) {
            kms_cli_errorf("cannot write %s: %s", metapath, strerror(errno));
        }
    } else {
        mrc = kms_cli_write_file(metapath, metatext, ml); /* /dev/stdout, a FIFO, a device */
    }
    if (mrc != 0 && !is_dash(a->out)) {
        unlink(a->out);
    }
    if (guarded) {
        kms_cli_tmp_release(a->out);
    }
    if (mrc != 0) {
        goto out;
    }
    /* not into a sidecar on stdout, which would then not parse */
    fprintf(is_dash(a->out) || to_stdout(a->meta) ? stderr : stdout,
            "Encrypted %s (%llu bytes) to %s with %s v%lld; wrapped data key in %s\n",
            is_dash(a->in) ? "stdin" : kms_cli_esc(a->in), (unsigned long long)total,
            kms_cli_esc(a->out), key, (long long)kver, kms_cli_esc(metapath));
    status = KMS_CLI_EXIT_OK;
out:
    if (status != KMS_CLI_EXIT_OK) {
        abort_output(&o);
    }
    if (mfd >= 0) {
        close(mfd);
    }
    if (mtmp[0] != '\0') {
        unlink(mtmp);
        kms_cli_tmp_release(mtmp);
    }
    kms_memzero(dek, sizeof(dek));
    kms_aead_stream_destroy(&st);
    kms_hash_stream_destroy(&hs);
    if (buf != NULL) {
        kms_free_wipe((void **)&buf, CHUNK);
    }
    free(metatext);
    json_decref(meta);
    json_decref(req);
    json_decref(resp);
    close_input(a->in, &in);
    kms_cli_session_close(&s);
    return status;
}

/* ---- decrypt ----------------------------------------------------------------------------- */

struct sidecar {
    json_t *j;
    const char *transit_key;
    const char *wrapped;
    const char *sha256; /* may be NULL (a sidecar written by hand) */
    uint8_t nonce[NONCE_LEN];
    bool has_nonce;
    bool has_size;
    uint64_t size;
};

static int read_sidecar(const char *path, struct sidecar *sc)
{
    uint8_t *text = NULL;
    size_t len = 0;
    json_error_t je;
    int rc = -1;

    memset(sc, 0, sizeof(*sc));
    if (kms_cli_read_file(path, META_MAX, &text, &len) != 0) {
        return -1;
    }
    sc->j = json_loadb((const char *)text, len, 0, &je);
    if (!json_is_object(sc->j)) {
        kms_cli_errorf("%s: not a JSON object (%s)", path, je.text);
        goto out;
    }
    json_t *sv = json_object_get(sc->j, "schemaVersion");
    const char *alg = json_string_value(json_object_get(sc->j, "algorithm"));
    const char *nonce = json_string_value(json_object_get(sc->j, "nonce"));
    json_t *size = json_object_get(sc->j, "plaintextSize");
    sc->transit_key = json_string_value(json_object_get(sc->j, "transitKey"));
    sc->wrapped = json_string_value(json_object_get(sc->j, "wrappedDek"));
    sc->sha256 = json_string_value(json_object_get(sc->j, "sha256"));
    if (sv != NULL && json_integer_value(sv) != 1) {
        kms_cli_errorf("%s: unsupported schemaVersion (kmsctl reads version 1)", path);
        goto out;
    }
    if (alg != NULL && strcasecmp(alg, ALG_NAME) != 0) {
        kms_cli_errorf("%s: unsupported algorithm %s (kmsctl reads %s)", path, alg, ALG_NAME);
        goto out;
    }
    if (sc->wrapped == NULL || strncmp(sc->wrapped, "vault:v", 7) != 0) {
        kms_cli_errorf("%s: wrappedDek must be in OpenBao 'vault:v<n>:...' form", path);
        goto out;
    }
    if (sc->sha256 != NULL && strlen(sc->sha256) != 64) {
        kms_cli_errorf("%s: sha256 must be 64 hex characters", path);
        goto out;
    }
    if (nonce != NULL) {
        uint8_t tmp[32];
        size_t n = 0, at = 0;
        if (kms_b64_decoded_max(strlen(nonce)) > sizeof(tmp) ||
            kms_b64_decode(nonce, strlen(nonce), tmp, &n, &at) != 0 || n != NONCE_LEN) {
            kms_cli_errorf("%s: nonce must be 12 bytes of base64", path);
            goto out;
        }
        memcpy(sc->nonce, tmp, NONCE_LEN);
        sc->has_nonce = true;
    }
    if (json_is_integer(size) && json_integer_value(size) >= 0) {
        sc->has_size = true;
        sc->size = (uint64_t)json_integer_value(size);
    }
    rc = 0;
out:
    kms_free_wipe((void **)&text, len + 1);
    return rc;
}

/*
 * One pass over the body after the nonce: decrypt, hash, and write to out_fd (-1 = discard).
 * Returns 0 when the tag, the size and the sha256 all match; -1 after printing otherwise.
 */
static int decrypt_pass(int in, const char *inname, int out_fd, const char *outname,
                        const uint8_t dek[DEK_LEN], const uint8_t nonce[NONCE_LEN],
                        const struct sidecar *sc, uint8_t *buf, struct progress *pr,
                        uint64_t *plain_total)
{
    struct kms_aead_stream *st = NULL;
    struct kms_hash_stream *hs = NULL;
    uint8_t digest[32];
    char hex[65];
    size_t held = 0;
    uint64_t total = 0;
    int rc = -1;

    if (kms_aead_stream_create(KMS_AEAD_AES256_GCM, false, dek, nonce, NULL, 0, &st) != 0 ||
        kms_hash_stream_create(KMS_HASH_SHA2_256, &hs) != 0) {
        kms_cli_errorf("cannot start the cipher");
        goto out;
    }
    for (;;) {
        ssize_t n = read_full(in, buf + held, CHUNK);
        if (n < 0) {
            kms_cli_errorf("cannot read %s: %s", inname, strerror(errno));
            goto out;
        }
        size_t have = held + (size_t)n;
        if (n == 0) {
            if (have != TAG_LEN) {
                kms_cli_errorf("%s is truncated: it is shorter than nonce + tag", inname);
                goto out;
            }
            break;
        }
        size_t body = have > TAG_LEN ? have - TAG_LEN : 0;
        if (sc->has_size && total + body > sc->size) {
            /* more than the sidecar's size is already known to fail: stop now rather than
               decrypt (and write) an endless or padded input to its end */
            kms_cli_errorf("%s is longer than its metadata says (plaintextSize %llu): "
                           "corrupted, or not the file of this metadata",
                           inname, (unsigned long long)sc->size);
            goto out;
        }
        if (body > 0) {
            if (kms_aead_stream_update(st, buf, body, buf) != 0 ||
                kms_hash_stream_update(hs, buf, body) != 0) {
                kms_cli_errorf("decryption failed");
                goto out;
            }
            if (out_fd >= 0 && write_all(out_fd, buf, body) != 0) {
                kms_cli_errorf("cannot write %s: %s", outname, strerror(errno));
                goto out;
            }
            total += body;
            progress_add(pr, body);
        }
        memmove(buf, buf + body, have - body);
        held = have - body;
    }
    if (kms_aead_stream_open_final(st, buf) != 0) {
        kms_cli_errorf("message authentication failed: %s does not decrypt with this data key "
                       "(corrupted, truncated, or not the file of this metadata)",
                       inname);
        goto out;
    }
    if (kms_hash_stream_final(hs, digest) != 0) {
        kms_cli_errorf("decryption failed");
        goto out;
    }
    kms_hex_encode(digest, sizeof(digest), hex);
    if (sc->sha256 != NULL && strcasecmp(hex, sc->sha256) != 0) {
        kms_cli_errorf("the decrypted data's sha256 %s does not match the metadata's %s", hex,
                       sc->sha256);
        goto out;
    }
    if (sc->has_size && sc->size != total) {
        kms_cli_errorf("the decrypted data is %llu bytes, the metadata says %llu",
                       (unsigned long long)total, (unsigned long long)sc->size);
        goto out;
    }
    *plain_total = total;
    rc = 0;
out:
    kms_aead_stream_destroy(&st);
    kms_hash_stream_destroy(&hs);
    return rc;
}

static int env_decrypt(struct env_args *a, const char *name)
{
    struct kms_cli_session s;
    struct sidecar sc;
    struct output o;
    struct progress pr;
    json_t *req = NULL, *resp = NULL;
    uint8_t *buf = NULL;
    uint8_t dek[DEK_LEN];
    uint8_t nonce[NONCE_LEN];
    char key[512], path[640], metapath[4096];
    int in = -1;
    uint64_t size = 0, total = 0;
    bool regular = false;
    int status = KMS_CLI_EXIT_USAGE;

    memset(&s, 0, sizeof(s));
    memset(&sc, 0, sizeof(sc));
    memset(&o, 0, sizeof(o));
    o.fd = -1;
    kms_memzero(dek, sizeof(dek));
    if (a->in == NULL || a->out == NULL) {
        kms_cli_errorf("envelope decrypt needs --in FILE|- and --out FILE|-");
        goto out;
    }
    if (a->meta == NULL && is_dash(a->in)) {
        kms_cli_errorf("--in - needs --meta FILE");
        goto out;
    }
    if (is_dash(a->in) && is_dash(a->meta)) {
        kms_cli_errorf("--in - and --meta - cannot both read standard input; give --meta FILE");
        goto out;
    }
    if (is_dash(a->in) && is_dash(a->out)) {
        kms_cli_errorf("--out - needs a regular --in file (it is read twice so that no "
                       "unauthenticated plaintext reaches stdout)");
        goto out;
    }
    snprintf(metapath, sizeof(metapath), "%s%s", a->meta ? a->meta : a->in,
             a->meta ? "" : ".meta.json");
    /* writing over the sidecar would lose the wrapped key of the file just decrypted */
    if (kms_cli_same_file(a->in, a->out) || kms_cli_same_file(metapath, a->out)) {
        kms_cli_errorf("--out must not be --in or its --meta file");
        goto out;
    }
    if ((status = kms_cli_session_open(&a->g, KMS_CLI_NEED_PROJECT_TOKEN, &s)) != 0) {
        goto out;
    }
    status = KMS_CLI_EXIT_FAIL;
    if (read_sidecar(metapath, &sc) != 0 || open_input(a->in, &in, &size, &regular) != 0) {
        goto out;
    }
    if (is_dash(a->out) && !regular) {
        kms_cli_errorf("--out - needs a regular --in file (it is read twice so that no "
                       "unauthenticated plaintext reaches stdout)");
        status = KMS_CLI_EXIT_USAGE;
        goto out;
    }
    if ((size_t)snprintf(key, sizeof(key), "%s-%s-%s", s.org, s.project, name) >= sizeof(key)) {
        kms_cli_errorf("the Transit key name is too long");
        goto out;
    }
    if (sc.transit_key != NULL && strcmp(sc.transit_key, key) != 0) {
        kms_cli_errorf("%s was written for Transit key %s, not %s (KMSKey %s of project %s)",
                       metapath, sc.transit_key, key, name, s.project);
        goto out;
    }
    buf = malloc(CHUNK + TAG_LEN);
    req = json_pack("{s:s}", "ciphertext", sc.wrapped);
    if (buf == NULL || req == NULL) {
        kms_cli_errorf("out of memory");
        goto out;
    }
    snprintf(path, sizeof(path), "transit/decrypt/%s", key);
    int dc = kms_cli_call(&s, "POST", path, req, 0, &resp);
    if (dc == 400 && sc.transit_key == NULL) {
        /* Transit's own answer ("cipher: message authentication failed") names no key */
        kms_cli_hintf("the wrapped data key in %s does not open with Transit key %s (KMSKey %s "
                      "of project %s): it was wrapped by another key, project or organization, "
                      "or it is damaged",
                      metapath, key, name, s.project);
    }
    if (dc != 0) {
        goto out;
    }
    json_t *data = json_object_get(resp, "data");
    if (decode_dek(json_string_value(json_object_get(data, "plaintext")), dek) != 0) {
        kms_cli_errorf("the wrapped data key does not unwrap to a 256-bit key");
        goto out;
    }
    json_object_del(data, "plaintext");
    ssize_t hn = read_full(in, nonce, sizeof(nonce));
    if (hn < 0) {
        kms_cli_errorf("cannot read %s: %s", a->in, strerror(errno));
        goto out;
    }
    if ((size_t)hn < sizeof(nonce)) {
        kms_cli_errorf("%s is truncated: it is shorter than nonce + tag", a->in);
        goto out;
    }
    if (sc.has_nonce && !kms_ct_eq(nonce, sc.nonce, NONCE_LEN)) {
        kms_cli_errorf("%s does not belong to %s (the nonces differ)", a->in, metapath);
        goto out;
    }
    uint64_t body = size > NONCE_LEN + TAG_LEN ? size - NONCE_LEN - TAG_LEN : 0;
    if (is_dash(a->out)) {
        /* verify first, then decrypt again to stdout */
        progress_start(&pr, !a->no_progress, "verifying", body);
        if (decrypt_pass(in, a->in, -1, NULL, dek, nonce, &sc, buf, &pr, &total) != 0) {
            goto out;
        }
        progress_draw(&pr, true);
        if (lseek(in, NONCE_LEN, SEEK_SET) != NONCE_LEN) {
            kms_cli_errorf("cannot rewind %s: %s", a->in, strerror(errno));
            goto out;
        }
    }
    if (open_output(&o, a->out) != 0) {
        goto out;
    }
    progress_start(&pr, !a->no_progress, "decrypting", body);
    if (decrypt_pass(in, a->in, o.fd, a->out, dek, nonce, &sc, buf, &pr, &total) != 0) {
        if (is_dash(a->out)) {
            kms_cli_errorf("%s changed while it was being decrypted: discard what was written "
                           "to stdout",
                           a->in);
        }
        goto out;
    }
    kms_memzero(dek, sizeof(dek));
    progress_draw(&pr, true);
    if (finish_output(&o) != 0) {
        goto out;
    }
    fprintf(is_dash(a->out) ? stderr : stdout, "Decrypted %s to %s (%llu bytes, tag%s verified)\n",
            is_dash(a->in) ? "stdin" : kms_cli_esc(a->in),
            is_dash(a->out) ? "stdout" : kms_cli_esc(a->out), (unsigned long long)total,
            sc.sha256 ? " and sha256" : "");
    status = KMS_CLI_EXIT_OK;
out:
    if (status != KMS_CLI_EXIT_OK) {
        abort_output(&o);
    }
    kms_memzero(dek, sizeof(dek));
    kms_memzero(nonce, sizeof(nonce));
    if (buf != NULL) {
        kms_free_wipe((void **)&buf, CHUNK + TAG_LEN);
    }
    json_decref(sc.j);
    json_decref(req);
    json_decref(resp);
    close_input(a->in, &in);
    kms_cli_session_close(&s);
    return status;
}

int kms_cli_envelope(int argc, char **argv)
{
    static const char usage[] =
        "Usage: kmsctl envelope encrypt NAME --in FILE|- --out FILE [--meta FILE]\n"
        "       kmsctl envelope decrypt NAME --in FILE|- --out FILE|- [--meta FILE]\n\n"
        "  --meta FILE     the metadata sidecar with the wrapped data key\n"
        "                  (default <out>.meta.json when encrypting, <in>.meta.json when\n"
        "                  decrypting)\n"
        "  --no-progress   no progress bar (it is drawn only when stderr is a terminal)\n\n"
        "The output is NONCE(12) || AES-256-GCM CIPHERTEXT || TAG(16), as the product doc's\n"
        "envelope helpers write it; a fresh 256-bit data key per file comes from\n"
        "transit/datakey (a token without datakey rights makes it locally and wraps it\n"
        "with transit/encrypt) and is kept only wrapped (wrappedDek \"vault:vN:...\").\n"
        "--in - when decrypting needs --meta FILE.\n";
    struct env_args a;
    const char *pos[2];
    size_t npos = 0;

    memset(&a, 0, sizeof(a));
    int v = kms_cli_find_verb(argc, argv);
    if (v >= argc) {
        bool help = false;
        for (int i = 1; i < argc; i++) {
            help = help || strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0;
        }
        fputs(usage, help ? stdout : stderr);
        return help ? KMS_CLI_EXIT_OK : KMS_CLI_EXIT_USAGE;
    }
    const char *verb = argv[v];
    bool enc = strcmp(verb, "encrypt") == 0;
    if (!enc && strcmp(verb, "decrypt") != 0) {
        fprintf(stderr, "Error: unknown command \"%s\" for \"kmsctl envelope\"\n\n%s",
                kms_cli_esc(verb), usage);
        return KMS_CLI_EXIT_USAGE;
    }
    memmove(&argv[v], &argv[v + 1], (size_t)(argc - v - 1) * sizeof(argv[0]));
    argc -= 2;
    argv++;
    const struct kms_cli_opt opts[] = {
        KMS_CLI_GLOBAL_OPTS(&a.g),
        {"in", NULL, &a.in, NULL, NULL, NULL, 0},
        {"out", NULL, &a.out, NULL, NULL, NULL, 0},
        {"meta", NULL, &a.meta, NULL, NULL, NULL, 0},
        {"no-progress", NULL, NULL, &a.no_progress, NULL, NULL, 0},
        {NULL, NULL, NULL, NULL, NULL, NULL, 0},
    };
    if (kms_cli_parse(enc ? "kmsctl envelope encrypt" : "kmsctl envelope decrypt", argc, argv, opts,
                      pos, 2, &npos) != 0) {
        fputs(usage, stderr);
        return KMS_CLI_EXIT_USAGE;
    }
    if (a.g.help) {
        fputs(usage, stdout);
        return KMS_CLI_EXIT_OK;
    }
    if (npos != 1) {
        kms_cli_errorf("envelope %s takes the KMSKey name", verb);
        fputs(usage, stderr);
        return KMS_CLI_EXIT_USAGE;
    }
    if (!kms_cli_check_name("KMSKey name", pos[0])) {
        return KMS_CLI_EXIT_USAGE;
    }
    return enc ? env_encrypt(&a, pos[0]) : env_decrypt(&a, pos[0]);
}
