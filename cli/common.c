/*
 * common.c - what every KMS command of kmsctl shares: the global options and where their
 * defaults come from, the session (HTTP client + organization + project), the API call with
 * Vault's error and warning handling, and small file helpers.
 *
 * Design notes:
 * - Global options may appear anywhere: main hoists the command word over leading ones, each
 *   group skips them to find its verb, and every verb's option table starts with
 *   KMS_CLI_GLOBAL_OPTS.
 * - The token is looked up as the vault CLI does, with kmsctl's own login file in between:
 *   --token, KMS_TOKEN/VAULT_TOKEN/BAO_TOKEN, $KMS_TOKEN_FILE (else ~/.config/kmsctl/token),
 *   ~/.vault-token.
 * - Responses can carry plaintext and data keys, so jansson's allocations are wiped on free
 *   (installed once per session, before any JSON is built) and so is every request and
 *   response buffer this file handles.
 * - Files kmsctl writes (plaintext, tokens, envelopes) are created 0600 under a temporary
 *   name in the target directory and renamed into place, so a reader never sees half a file.
 */
#include "cli/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_ADDR "http://127.0.0.1:8200"
#define TOKEN_FILE_MAX 4096

/* ---- argv handling ----------------------------------------------------------------------- */

/* Global options that take a value (the flags --tls-skip-verify and --help do not). */
static bool global_takes_value(const char *a)
{
    static const char *const names[] = {"addr",    "address", "token",       "namespace", "n",
                                        "project", "output",  "o",           "ca-cert",   "cacert",
                                        "ca-path", "capath",  "client-cert", "client-key"};
    if (a[0] != '-' || strchr(a, '=') != NULL) {
        return false;
    }
    a += a[1] == '-' ? 2 : 1;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(a, names[i]) == 0) {
            return true;
        }
    }
    return false;
}

int kms_cli_find_verb(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            return i + 1 < argc ? i + 1 : argc;
        }
        if (a[0] != '-' || a[1] == '\0') {
            return i;
        }
        if (global_takes_value(a)) {
            i++;
        }
    }
    return argc;
}

void kms_cli_hoist_command(int argc, char **argv)
{
    if (argc < 3 || argv[1][0] != '-' || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "--version") == 0) {
        return;
    }
    int i = kms_cli_find_verb(argc, argv);
    if (i >= argc) {
        return;
    }
    char *cmd = argv[i];
    memmove(&argv[2], &argv[1], (size_t)(i - 1) * sizeof(argv[0]));
    argv[1] = cmd;
}

/* ---- errors and names -------------------------------------------------------------------- */

void kms_cli_errorf(const char *fmt, ...)
{
    va_list ap;
    fputs("Error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

bool kms_cli_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > KMS_CLI_NAME_MAX || s[0] == '-' || s[n - 1] == '-') {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
            return false;
        }
    }
    return true;
}

bool kms_cli_check_name(const char *what, const char *s)
{
    if (kms_cli_name_ok(s)) {
        return true;
    }
    kms_cli_errorf("invalid %s \"%s\": lower-case letters, digits and '-', at most %d characters",
                   what, s, KMS_CLI_NAME_MAX);
    return false;
}

/* ---- wiping allocator for jansson -------------------------------------------------------- */

static void wipe_free(void *p)
{
    if (p != NULL) {
        kms_memzero(p, malloc_usable_size(p));
        free(p);
    }
}

/* ---- session ----------------------------------------------------------------------------- */

static const char *env3(const char *a, const char *b, const char *c)
{
    const char *names[] = {a, b, c};
    for (size_t i = 0; i < 3; i++) {
        const char *v = names[i] ? getenv(names[i]) : NULL;
        if (v != NULL && v[0] != '\0') {
            return v;
        }
    }
    return NULL;
}

/* The first line of a small token file, or NULL. Caller frees with kms_free_wipe. */
static char *read_token_file(const char *path)
{
    char buf[TOKEN_FILE_MAX];
    char *t = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return NULL;
    }
    ssize_t r = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (r > 0) {
        size_t n = (size_t)r;
        buf[n] = '\0';
        n = strcspn(buf, "\r\n");
        while (n > 0 && buf[n - 1] == ' ') {
            n--;
        }
        buf[n] = '\0';
        t = n > 0 ? strdup(buf) : NULL;
    }
    kms_memzero(buf, sizeof(buf));
    return t;
}

static char *lookup_token(const struct kms_cli_global *g)
{
    char path[1024];
    const char *home = getenv("HOME");
    const char *v = g->token ? g->token : env3("KMS_TOKEN", "VAULT_TOKEN", "BAO_TOKEN");
    char *t = NULL;
    if (v != NULL) {
        return strdup(v);
    }
    const char *tf = getenv("KMS_TOKEN_FILE");
    if (tf != NULL && tf[0] != '\0') {
        t = read_token_file(tf);
    } else if (home != NULL) {
        snprintf(path, sizeof(path), "%s/.config/kmsctl/token", home);
        t = read_token_file(path);
    }
    if (t == NULL && home != NULL) {
        snprintf(path, sizeof(path), "%s/.vault-token", home);
        t = read_token_file(path);
    }
    return t;
}

int kms_cli_session_open(const struct kms_cli_global *g, unsigned need, struct kms_cli_session *s)
{
    struct kms_cli_http_opts o;
    char err[512];
    char *token = NULL;
    int rc = KMS_CLI_EXIT_USAGE;

    memset(s, 0, sizeof(*s));
    json_set_alloc_funcs(malloc, wipe_free);
    if (kms_cli_fmt_parse(g->output, &s->fmt) != 0) {
        kms_cli_errorf("-o must be table, json or yaml (not \"%s\")", g->output);
        goto out;
    }
    const char *ns = g->ns ? g->ns : env3("KMS_NAMESPACE", "VAULT_NAMESPACE", "BAO_NAMESPACE");
    if (ns != NULL) {
        size_t b = strspn(ns, "/");
        size_t n = strlen(ns + b);
        while (n > 0 && ns[b + n - 1] == '/') {
            n--;
        }
        if (n == 0 || n >= sizeof(s->ns)) {
            kms_cli_errorf("invalid namespace \"%s\"", ns);
            goto out;
        }
        memcpy(s->ns, ns + b, n);
        s->ns[n] = '\0';
        for (size_t i = 0; i <= n; i++) {
            s->org[i] = s->ns[i] == '/' ? '-' : s->ns[i];
        }
    }
    if ((need & KMS_CLI_NEED_ORG) && s->ns[0] == '\0') {
        kms_cli_errorf("no organization: give -n/--namespace ORG or set KMS_NAMESPACE");
        goto out;
    }
    const char *project = g->project ? g->project : env3("KMS_PROJECT", NULL, NULL);
    if (project != NULL) {
        if (!kms_cli_check_name("project name", project)) {
            goto out;
        }
        snprintf(s->project, sizeof(s->project), "%s", project);
    }
    if ((need & KMS_CLI_NEED_PROJECT) && s->project[0] == '\0') {
        kms_cli_errorf("no project: give --project PROJECT or set KMS_PROJECT");
        goto out;
    }
    const char *addr = g->addr ? g->addr : env3("KMS_ADDR", "VAULT_ADDR", "BAO_ADDR");
    snprintf(s->addr, sizeof(s->addr), "%s", addr ? addr : DEFAULT_ADDR);
    token = lookup_token(g);
    if ((need & KMS_CLI_NEED_TOKEN) && token == NULL) {
        kms_cli_errorf("no token: give --token, set KMS_TOKEN (or VAULT_TOKEN), or run "
                       "`kmsctl login`");
        goto out;
    }
    memset(&o, 0, sizeof(o));
    o.addr = s->addr;
    o.token = token;
    o.ns = s->ns[0] ? s->ns : NULL;
    o.ca_cert = g->ca_cert ? g->ca_cert : env3("KMS_CACERT", "VAULT_CACERT", "BAO_CACERT");
    o.ca_path = g->ca_path ? g->ca_path : env3("KMS_CAPATH", "VAULT_CAPATH", "BAO_CAPATH");
    o.client_cert = g->client_cert
                        ? g->client_cert
                        : env3("KMS_CLIENT_CERT", "VAULT_CLIENT_CERT", "BAO_CLIENT_CERT");
    o.client_key = g->client_key ? g->client_key
                                 : env3("KMS_CLIENT_KEY", "VAULT_CLIENT_KEY", "BAO_CLIENT_KEY");
    const char *skip = env3("KMS_SKIP_VERIFY", "VAULT_SKIP_VERIFY", "BAO_SKIP_VERIFY");
    o.tls_skip_verify = g->tls_skip_verify ||
                        (skip != NULL && strcmp(skip, "0") != 0 && strcmp(skip, "false") != 0);
    if ((o.client_cert == NULL) != (o.client_key == NULL)) {
        kms_cli_errorf("--client-cert and --client-key go together");
        goto out;
    }
    if (kms_cli_http_create(&o, &s->http, err, sizeof(err)) != 0) {
        kms_cli_errorf("%s", err);
        goto out;
    }
    rc = KMS_CLI_EXIT_OK;
out:
    if (token != NULL) {
        kms_free_wipe((void **)&token, strlen(token));
    }
    return rc;
}

void kms_cli_session_close(struct kms_cli_session *s)
{
    kms_cli_http_destroy(&s->http);
}

/* ---- API calls --------------------------------------------------------------------------- */

static void print_warnings(const json_t *body)
{
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(body, "warnings"), i, w)
    {
        if (json_is_string(w)) {
            fprintf(stderr, "Warning: %s\n", json_string_value(w));
        }
    }
}

/* Vault's bare 404: {"errors":[]} (or no body at all). */
static bool empty_errors(const struct kms_cli_resp *r)
{
    json_t *j = r->len > 0 ? json_loadb(r->body, r->len, 0, NULL) : NULL;
    bool empty = r->len == 0 || json_array_size(json_object_get(j, "errors")) == 0;
    json_decref(j);
    return empty;
}

int kms_cli_call(struct kms_cli_session *s, const char *method, const char *path, const json_t *req,
                 int quiet_status, json_t **resp)
{
    struct kms_cli_resp r;
    char full[2048];
    char err[1024];
    char *body = NULL;
    size_t blen = 0;
    int rc = -1;

    *resp = NULL;
    memset(&r, 0, sizeof(r));
    if ((size_t)snprintf(full, sizeof(full), "/v1/%s", path) >= sizeof(full)) {
        kms_cli_errorf("request path too long");
        goto out;
    }
    if (req != NULL) {
        body = json_dumps(req, JSON_COMPACT);
        if (body == NULL) {
            kms_cli_errorf("out of memory");
            goto out;
        }
        blen = strlen(body);
    }
    if (kms_cli_http_do(s->http, method, full, body, blen, &r, err, sizeof(err)) != 0) {
        kms_cli_errorf("%s", err);
        goto out;
    }
    if (r.status >= 200 && r.status < 300) {
        if (r.len > 0) {
            json_error_t je;
            *resp = json_loadb(r.body, r.len, 0, &je);
            if (*resp == NULL) {
                kms_cli_errorf("the server's answer is not JSON (HTTP %d)", r.status);
                goto out;
            }
            print_warnings(*resp);
        }
        rc = 0;
        goto out;
    }
    rc = r.status;
    /* quiet only for the "nothing there" answer: a 404 with a message (an unknown namespace,
       a missing mount) is a real error the user must see */
    if (r.status == quiet_status && r.status == 404 && !empty_errors(&r)) {
        rc = -1;
    }
    if (r.status != quiet_status || rc == -1) {
        kms_cli_api_error(&r, err, sizeof(err));
        if (r.status == 404 && strstr(err, "HTTP 404") == err) {
            snprintf(err, sizeof(err), "not found (HTTP 404 on %s)", path);
        }
        /* Vault's multierror form: "1 error occurred:\n\t* msg\n\n" */
        const char *m = strstr(err, "\t* ");
        if (strncmp(err, "1 error occurred:", 17) == 0 && m != NULL) {
            size_t l = strcspn(m + 3, "\n");
            fprintf(stderr, "Error: %.*s\n", (int)l, m + 3);
        } else {
            fprintf(stderr, "Error: %s\n", err);
        }
    }
out:
    if (body != NULL) {
        kms_free_wipe((void **)&body, blen);
    }
    if (r.body != NULL) {
        kms_memzero(r.body, r.len);
    }
    kms_cli_resp_dispose(&r);
    return rc;
}

/* ---- files ------------------------------------------------------------------------------- */

int kms_cli_read_file(const char *path, size_t max, uint8_t **out, size_t *len)
{
    bool in = strcmp(path, "-") == 0;
    int fd = in ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
    uint8_t *buf = NULL;
    size_t cap = 0, n = 0;
    int rc = -1;

    *out = NULL;
    *len = 0;
    if (fd < 0) {
        kms_cli_errorf("cannot open %s: %s", path, strerror(errno));
        goto out;
    }
    for (;;) {
        if (n + 1 >= cap) {
            size_t ncap = cap ? cap * 2 : 4096;
            if (ncap > max + 2) {
                ncap = max + 2;
            }
            uint8_t *nb = malloc(ncap);
            if (nb == NULL) {
                kms_cli_errorf("out of memory");
                goto out;
            }
            if (buf != NULL) {
                memcpy(nb, buf, n);
                kms_free_wipe((void **)&buf, cap);
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + n, cap - n - 1);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            kms_cli_errorf("cannot read %s: %s", in ? "stdin" : path, strerror(errno));
            goto out;
        }
        if (r == 0) {
            break;
        }
        n += (size_t)r;
        if (n > max) {
            kms_cli_errorf("%s is larger than %zu bytes", in ? "stdin" : path, max);
            goto out;
        }
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    buf = NULL;
    rc = 0;
out:
    if (buf != NULL) {
        kms_free_wipe((void **)&buf, cap);
    }
    if (!in && fd >= 0) {
        close(fd);
    }
    return rc;
}

int kms_cli_tmpfile_for(const char *path, char *tmp, size_t n)
{
    if ((size_t)snprintf(tmp, n, "%s.XXXXXX", path) >= n) {
        errno = ENAMETOOLONG;
        return -1;
    }
    mode_t old = umask(077);
    int fd = mkostemp(tmp, O_CLOEXEC);
    umask(old);
    if (fd >= 0 && fchmod(fd, 0600) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        errno = e;
        return -1;
    }
    return fd;
}

static int write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return -1;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

int kms_cli_write_file(const char *path, const void *data, size_t len)
{
    char tmp[4096];
    int rc = -1;
    if (path == NULL || strcmp(path, "-") == 0) {
        if (write_all(STDOUT_FILENO, data, len) != 0) {
            kms_cli_errorf("cannot write to stdout: %s", strerror(errno));
            return -1;
        }
        return 0;
    }
    int fd = kms_cli_tmpfile_for(path, tmp, sizeof(tmp));
    if (fd < 0) {
        kms_cli_errorf("cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    if (write_all(fd, data, len) != 0 || fsync(fd) != 0) {
        kms_cli_errorf("cannot write %s: %s", path, strerror(errno));
        goto out;
    }
    if (close(fd) != 0) {
        fd = -1;
        kms_cli_errorf("cannot write %s: %s", path, strerror(errno));
        goto out;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        kms_cli_errorf("cannot create %s: %s", path, strerror(errno));
        goto out;
    }
    tmp[0] = '\0';
    rc = 0;
out:
    if (fd >= 0) {
        close(fd);
    }
    if (tmp[0] != '\0') {
        unlink(tmp);
    }
    return rc;
}
