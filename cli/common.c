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
 *   The temporary names sit in a small table that a SIGINT/SIGTERM/SIGHUP/SIGPIPE handler
 *   unlinks before re-raising the signal: Ctrl-C never leaves decrypted plaintext behind.
 *   Registration happens with those signals blocked, so no file exists unregistered.
 * - Human-readable output never carries raw control characters: a subject, a key name or a
 *   server message with ESC or a newline in it is printed as \x1b / \x0a (kms_cli_escape).
 */
#include "cli/cli.h"
#include "crypto/crypto.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
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

/* "<label>: <message>" on stderr, the formatted message escaped (kms_cli_escape). */
__attribute__((format(printf, 2, 0))) static void vprint_escaped(const char *label, const char *fmt,
                                                                 va_list ap)
{
    char msg[4096];
    char esc[4 * sizeof(msg)];
    int l = vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t len = l < 0 ? 0 : (size_t)l >= sizeof(msg) ? sizeof(msg) - 1 : (size_t)l;
    kms_cli_escape(msg, len, esc, sizeof(esc));
    fprintf(stderr, "%s: %s\n", label, esc);
}

void kms_cli_errorf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprint_escaped("Error", fmt, ap);
    va_end(ap);
}

/* ---- terminal safety --------------------------------------------------------------------- */

/* Code points a terminal does not show as themselves: C1 controls, separators, bidi/format. */
static bool invisible(uint32_t cp)
{
    return (cp >= 0x80 && cp <= 0x9f) || cp == 0xad || cp == 0x61c ||
           (cp >= 0x200b && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202e) ||
           (cp >= 0x2060 && cp <= 0x206f) || cp == 0xfeff || (cp >= 0xfff9 && cp <= 0xfffb);
}

size_t kms_cli_escape(const char *in, size_t len, char *out, size_t n)
{
    const unsigned char *p = (const unsigned char *)in;
    size_t o = 0;
    if (n == 0) {
        return 0;
    }
    for (size_t i = 0; i < len;) {
        char piece[16];
        size_t pl, used = 1;
        uint32_t cp = 0;
        size_t ul = p[i] >= 0x80 ? kms_utf8_next(p + i, len - i, &cp) : 0;
        if (p[i] >= 0x20 && p[i] < 0x7f) {
            piece[0] = (char)p[i];
            pl = 1;
        } else if (ul == 0) {
            pl = (size_t)snprintf(piece, sizeof(piece), "\\x%02x", p[i]);
        } else if (invisible(cp)) {
            pl = (size_t)snprintf(piece, sizeof(piece), "\\u%04x", (unsigned)cp);
            used = ul;
        } else {
            memcpy(piece, p + i, ul);
            pl = used = ul;
        }
        if (o + pl >= n) {
            break;
        }
        memcpy(out + o, piece, pl);
        o += pl;
        i += used;
    }
    out[o] = '\0';
    return o;
}

const char *kms_cli_esc(const char *s)
{
    static char ring[16][1024];
    static unsigned next;
    char *out = ring[next++ % 16];
    if (s == NULL) {
        return "-";
    }
    kms_cli_escape(s, strlen(s), out, sizeof(ring[0]));
    return out;
}

static void escape_strings(json_t *j, int depth)
{
    const char *k;
    json_t *v;
    size_t i;
    if (depth > 64) {
        return;
    }
    if (json_is_string(j)) {
        size_t len = json_string_length(j);
        char *buf = malloc(4 * len + 1);
        if (buf != NULL) {
            size_t l = kms_cli_escape(json_string_value(j), len, buf, 4 * len + 1);
            (void)json_string_setn(j, buf, l);
            free(buf);
        }
    } else if (json_is_object(j)) {
        json_object_foreach(j, k, v)
        {
            escape_strings(v, depth + 1);
        }
    } else if (json_is_array(j)) {
        json_array_foreach(j, i, v)
        {
            escape_strings(v, depth + 1);
        }
    }
}

void kms_cli_json_escape_strings(json_t *j)
{
    escape_strings(j, 0);
}

/* ---- temporary files removed on a fatal signal ------------------------------------------- */

static const int fatal_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGQUIT};
static char tmp_paths[KMS_CLI_TMP_MAX][4096];
static volatile sig_atomic_t tmp_used[KMS_CLI_TMP_MAX];
static bool handlers_installed;

/* Async-signal-safe: unlink, then die of the same signal (SA_RESETHAND restored SIG_DFL). */
static void on_fatal_signal(int sig)
{
    int e = errno;
    for (size_t i = 0; i < KMS_CLI_TMP_MAX; i++) {
        if (tmp_used[i]) {
            unlink(tmp_paths[i]);
            tmp_used[i] = 0;
        }
    }
    raise(sig);
    errno = e;
}

static void install_handlers(void)
{
    struct sigaction sa, old;
    if (handlers_installed) {
        return;
    }
    handlers_installed = true;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_fatal_signal;
    sa.sa_flags = (int)SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof(fatal_signals) / sizeof(fatal_signals[0]); i++) {
        sigaddset(&sa.sa_mask, fatal_signals[i]);
    }
    for (size_t i = 0; i < sizeof(fatal_signals) / sizeof(fatal_signals[0]); i++) {
        /* a signal the caller ignores (nohup, a background job's SIGINT) stays ignored */
        if (sigaction(fatal_signals[i], NULL, &old) == 0 && old.sa_handler != SIG_IGN) {
            (void)sigaction(fatal_signals[i], &sa, NULL);
        }
    }
}

static void block_fatal(sigset_t *old)
{
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof(fatal_signals) / sizeof(fatal_signals[0]); i++) {
        sigaddset(&set, fatal_signals[i]);
    }
    sigprocmask(SIG_BLOCK, &set, old);
}

int kms_cli_tmp_guard(const char *path)
{
    sigset_t old;
    int rc = -1;
    if (strlen(path) >= sizeof(tmp_paths[0])) {
        return -1;
    }
    install_handlers();
    block_fatal(&old);
    for (size_t i = 0; i < KMS_CLI_TMP_MAX; i++) {
        if (!tmp_used[i]) {
            memcpy(tmp_paths[i], path, strlen(path) + 1);
            tmp_used[i] = 1;
            rc = 0;
            break;
        }
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    return rc;
}

void kms_cli_tmp_release(const char *path)
{
    for (size_t i = 0; i < KMS_CLI_TMP_MAX; i++) {
        if (tmp_used[i] && strcmp(tmp_paths[i], path) == 0) {
            tmp_used[i] = 0;
            return;
        }
    }
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
    /* the whole rule, in the server's words (engine/kmskey NAME_RULE) */
    kms_cli_errorf("invalid %s \"%s\": must be a DNS-1123 label: lower-case letters, digits and "
                   "'-', starting and ending with a letter or digit, at most %d characters",
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
    struct stat st;
    /* O_NONBLOCK: a FIFO put there would otherwise hang every command without a word; only
       a regular file is a token file */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        return NULL;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
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

/* A control character (CR, LF, NUL's neighbours, DEL): it would end up in a request header. */
static bool has_control(const char *v)
{
    for (const unsigned char *p = (const unsigned char *)v; *p != '\0'; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            return true;
        }
    }
    return false;
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
        if (n == 0 || n >= sizeof(s->ns) || has_control(ns)) {
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
        kms_cli_errorf("no organization: give -n/--namespace ORG or set KMS_NAMESPACE (the "
                       "OpenBao namespace that holds your projects)");
        kms_cli_hintf("`kmsctl orgs list` shows the organizations; `kmsctl orgs create ORG` "
                      "makes one");
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
        kms_cli_errorf("no project: give --project PROJECT or set KMS_PROJECT (organization "
                       "%s)",
                       s->ns[0] ? s->ns : "not set either");
        goto out;
    }
    const char *addr = g->addr ? g->addr : env3("KMS_ADDR", "VAULT_ADDR", "BAO_ADDR");
    if (addr != NULL && has_control(addr)) {
        kms_cli_errorf("invalid address \"%s\"", addr);
        goto out;
    }
    snprintf(s->addr, sizeof(s->addr), "%s", addr ? addr : DEFAULT_ADDR);
    token = lookup_token(g);
    if ((need & KMS_CLI_NEED_TOKEN) && token == NULL) {
        kms_cli_errorf("no token: give --token, set KMS_TOKEN (or VAULT_TOKEN), or run "
                       "`kmsctl login`");
        goto out;
    }
    if (token != NULL && has_control(token)) {
        /* never printed: it is a secret, only what is wrong with it */
        kms_cli_errorf("the token holds a control character (a line break?); it would be sent "
                       "as part of a request header");
        goto out;
    }
    memset(&o, 0, sizeof(o));
    o.addr = s->addr;
    o.token = token;
    o.ns = s->ns[0] && !(need & KMS_CLI_ROOT_NS) ? s->ns : NULL;
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
            fprintf(stderr, "Warning: %s\n", kms_cli_esc(json_string_value(w)));
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

void kms_cli_hintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprint_escaped("Hint", fmt, ap);
    va_end(ap);
}

const char *kms_cli_org_label(const struct kms_cli_session *s)
{
    return s->ns[0] != '\0' ? s->ns : "(root namespace)";
}

void kms_cli_key_not_found(const struct kms_cli_session *s, const char *name)
{
    kms_cli_errorf("KMSKey %s not found in project %s of organization %s", name, s->project,
                   kms_cli_org_label(s));
    kms_cli_hintf("list the project's KMSKeys with `kmsctl keys list --project %s`, or create "
                  "this one with `kmsctl keys create %s --project %s`",
                  s->project, name, s->project);
}

/*
 * The KMSKey a 404 on kms/keys/<project>/<name>[/action] of the session's project is about,
 * into name: the server's "KMSKey N not found in project P" (an action) or a bare 404 (a GET
 * without a quiet status, as patch's). False for other 404s (no transit/ mount, ...).
 */
static bool missing_kmskey(const struct kms_cli_session *s, const char *path, const char *msg,
                           char *name, size_t n)
{
    size_t pl = strlen(s->project);
    if (strncmp(path, "kms/keys/", 9) != 0 || pl == 0 || strncmp(path + 9, s->project, pl) != 0 ||
        path[9 + pl] != '/') {
        return false;
    }
    const char *nm = path + 9 + pl + 1;
    size_t len = strcspn(nm, "/");
    if (len == 0 || len >= n ||
        (strncmp(msg, "not found (HTTP 404", 19) != 0 &&
         (strncmp(msg, "KMSKey ", 7) != 0 || strstr(msg, " not found in project ") == NULL))) {
        return false;
    }
    memcpy(name, nm, len);
    name[len] = '\0';
    return true;
}

/*
 * The project a token is bound to (its `service_account_namespace`, docs/auth.md
 * "Project-bound tokens"), asked with auth/token/lookup-self, which every token may call.
 * False for an unbound token, or when the lookup fails (the caller keeps its general hint).
 */
static bool token_project(const struct kms_cli_session *s, char *out, size_t n)
{
    struct kms_cli_resp r;
    char err[256];
    json_t *body = NULL;
    bool found = false;

    memset(&r, 0, sizeof(r));
    if (kms_cli_http_do(s->http, "GET", "/v1/auth/token/lookup-self", NULL, 0, &r, err,
                        sizeof(err)) != 0 ||
        r.status != 200) {
        goto out;
    }
    body = json_loadb(r.body, r.len, 0, NULL);
    const char *p = json_string_value(json_object_get(
        json_object_get(json_object_get(body, "data"), "meta"), "service_account_namespace"));
    if (p != NULL && p[0] != '\0' && strlen(p) < n) {
        snprintf(out, n, "%s", p);
        found = true;
    }
out:
    json_decref(body);
    if (r.body != NULL) {
        kms_memzero(r.body, r.len); /* it holds the token itself ("id") */
    }
    kms_cli_resp_dispose(&r);
    return found;
}

/*
 * Print the server's refusal with what it refers to and what to do next: the message alone
 * ("namespace not found", "permission denied") names neither the organization nor the fix.
 */
static void explain_api_error(const struct kms_cli_session *s, const char *method, const char *path,
                              int status, const char *msg)
{
    char name[KMS_CLI_NAME_MAX + 1];
    char bound[KMS_CLI_NAME_MAX + 1];
    if (status == 404 && strstr(msg, "namespace not found") != NULL) {
        kms_cli_errorf("organization \"%s\" not found on %s (namespace not found)",
                       kms_cli_org_label(s), s->addr);
        kms_cli_hintf("check -n/--namespace or KMS_NAMESPACE (`kmsctl orgs list`); create the "
                      "organization with `kmsctl orgs create %s` and a root-namespace token "
                      "(POST %s/v1/sys/namespaces/%s)",
                      s->ns, s->addr, s->ns);
    } else if (status == 403 && strncmp(path, "auth/", 5) == 0 && strlen(path) > 11 &&
               strcmp(path + strlen(path) - 6, "/login") == 0) {
        /* a refused login: the JWT does not fit the role, no token is involved; or nothing is
           mounted there, which OpenBao answers with the same bare 403 */
        int mlen = (int)(strlen(path) - 11);
        kms_cli_errorf("%s: %s %s in organization \"%s\"", msg, method, path, kms_cli_org_label(s));
        kms_cli_hintf("the role refused this JWT: its issuer, audience, expiry and subject (the "
                      "ServiceAccount and its namespace, or the bound claims) must match the "
                      "role's configuration (docs/auth.md); or no auth method is enabled at "
                      "auth/%.*s/ in organization \"%s\": check --mount and -n/--namespace",
                      mlen, path + 5, kms_cli_org_label(s));
    } else if (status == 403 &&
               (strncmp(path, "kms/", 4) == 0 || strncmp(path, "transit/", 8) == 0) &&
               token_project(s, bound, sizeof(bound)) && strcmp(bound, s->project) != 0) {
        /* the policies allow it, the project binding does not: "invalid, expired or its
           policies" would send the user after the wrong cause */
        kms_cli_errorf("%s: %s %s in organization \"%s\"", msg, method, path, kms_cli_org_label(s));
        kms_cli_hintf("this token is bound to project \"%s\" (a Kubernetes login is bound to its "
                      "ServiceAccount's namespace, docs/auth.md \"Project-bound tokens\"): it "
                      "reaches only that project's KMSKeys and Transit keys, not project "
                      "\"%s\"'s; use --project %s, or a token of project %s",
                      bound, s->project[0] != '\0' ? s->project : "(none given)", bound,
                      s->project[0] != '\0' ? s->project : "PROJECT");
    } else if (status == 403) {
        kms_cli_errorf("%s: %s %s in organization \"%s\"", msg, method, path, kms_cli_org_label(s));
        kms_cli_hintf("the token (--token, KMS_TOKEN or the `kmsctl login` file) is invalid, "
                      "expired or its policies do not allow this; log in again with a role "
                      "that does: kmsctl login --role=ROLE");
    } else if (status == 404 && missing_kmskey(s, path, msg, name, sizeof(name))) {
        /* every verb (rotate, schedule-delete, patch, ...) as describe says it */
        kms_cli_key_not_found(s, name);
    } else if (status == 404 && strstr(msg, "no handler for route") != NULL &&
               strncmp(path, "transit/", 8) == 0) {
        kms_cli_errorf("organization \"%s\" has no transit/ engine (%s)", kms_cli_org_label(s),
                       msg);
        kms_cli_hintf("create a KMSKey first (`kmsctl keys create NAME` mounts transit/ in the "
                      "organization), or check -n/--namespace");
    } else if (status == 400 && strcmp(msg, "encryption key not found") == 0 &&
               strncmp(path, "transit/", 8) == 0 && strrchr(path, '/') != NULL) {
        /* decrypt names no KMSKey check of its own: Transit's bare message names no key */
        kms_cli_errorf("Transit key %s not found in organization \"%s\" (%s)",
                       strrchr(path, '/') + 1, kms_cli_org_label(s), msg);
        kms_cli_hintf("check the KMSKey name, --project and -n/--namespace: `kmsctl keys list "
                      "--project %s` lists the project's KMSKeys; decrypt with the KMSKey "
                      "that encrypted the data",
                      s->project[0] != '\0' ? s->project : "PROJECT");
    } else {
        kms_cli_errorf("%s", msg);
    }
}

int kms_cli_call(struct kms_cli_session *s, const char *method, const char *path, const json_t *req,
                 int quiet_status, json_t **resp)
{
    return kms_cli_call_either(s, method, path, req, quiet_status, quiet_status, resp);
}

int kms_cli_call_either(struct kms_cli_session *s, const char *method, const char *path,
                        const json_t *req, int quiet_a, int quiet_b, json_t **resp)
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
        kms_cli_hintf("is kmsd running and reachable at %s? Set --addr or KMS_ADDR (TLS: "
                      "--ca-cert or KMS_CACERT)",
                      s->addr);
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
    bool quiet = r.status == quiet_a || r.status == quiet_b;
    /* quiet only for the "nothing there" answer: a 404 with a message (an unknown namespace,
       a missing mount) is a real error the user must see */
    if (quiet && r.status == 404 && !empty_errors(&r)) {
        rc = -1;
    }
    if (!quiet || rc == -1) {
        kms_cli_api_error(&r, err, sizeof(err));
        if (r.status == 404 && strstr(err, "HTTP 404") == err) {
            snprintf(err, sizeof(err), "not found (HTTP 404 on %s)", path);
        }
        explain_api_error(s, method, path, r.status, err);
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

void kms_cli_human_bytes(double b, char *out, size_t n)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    size_t u = 0;
    while (b >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
        b /= 1024;
        u++;
    }
    snprintf(out, n, u == 0 ? "%.0f %s" : "%.1f %s", b, units[u]);
}

/* kms_cli_read_file; past max, 1 without a word when quiet_too_big (the caller says why). */
static int read_capped(const char *path, size_t max, uint8_t **out, size_t *len, bool quiet_too_big)
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
        if (n > max && quiet_too_big) {
            rc = 1;
            goto out;
        }
        if (n > max) {
            char human[32];
            kms_cli_human_bytes((double)max, human, sizeof(human));
            kms_cli_errorf("%s is larger than %s", in ? "stdin" : path, human);
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

int kms_cli_read_file(const char *path, size_t max, uint8_t **out, size_t *len)
{
    return read_capped(path, max, out, len, false);
}

int kms_cli_read_file_max(const char *path, size_t max, uint8_t **out, size_t *len)
{
    return read_capped(path, max, out, len, true);
}

/* The directory part of path ("." for a bare name) into dir; false if it does not fit. */
static bool dir_of(const char *path, char *dir, size_t n)
{
    const char *slash = strrchr(path, '/');
    int w;
    if (slash == NULL) {
        w = snprintf(dir, n, ".");
    } else if (slash == path) {
        w = snprintf(dir, n, "/");
    } else {
        w = snprintf(dir, n, "%.*s", (int)(slash - path), path);
    }
    return w >= 0 && (size_t)w < n;
}

int kms_cli_tmpfile_for(const char *path, char *tmp, size_t n)
{
    sigset_t oldset;
    char dir[4096];
    int fd = -1, e = 0;
    if ((size_t)snprintf(tmp, n, "%s.XXXXXX", path) >= n || n > sizeof(tmp_paths[0])) {
        errno = ENAMETOOLONG;
        return -1;
    }
    /* an unnamed file in the target's directory: whatever kills the process (SIGKILL, the OOM
       killer, a crash) takes it along, so no partial output is ever left under any name;
       kms_cli_tmp_install names it once it is complete. Linking it needs /proc. */
    bool unnamed = access("/proc/self/fd", X_OK) == 0;
#ifdef KMS_TEST_HOOKS
    /* the named fallback (file systems without O_TMPFILE, no /proc), for the signal tests */
    unnamed = unnamed && getenv("KMSCTL_TEST_NAMED_TMPFILE") == NULL;
#endif
    if (unnamed && dir_of(path, dir, sizeof(dir))) {
        fd = open(dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
        if (fd >= 0 && fchmod(fd, 0600) == 0) {
            tmp[0] = '\0';
            return fd;
        }
        if (fd >= 0) {
            close(fd); /* and try a named file, which reports the error if it persists */
        }
    }
    install_handlers();
    /* no window in which the file exists but the signal handler does not know it */
    block_fatal(&oldset);
    mode_t old = umask(077);
    fd = mkostemp(tmp, O_CLOEXEC);
    e = errno;
    umask(old);
    errno = 0;
    if (fd >= 0 && (fchmod(fd, 0600) != 0 || kms_cli_tmp_guard(tmp) != 0)) {
        e = errno != 0 ? errno : EMFILE;
        close(fd);
        unlink(tmp);
        fd = -1;
    }
    sigprocmask(SIG_SETMASK, &oldset, NULL);
    errno = e;
    return fd;
}

/* Give the unnamed file fd the free name "<path>.XXXXXX" (into tmp), registered for removal
 * on a fatal signal. 0, or -1 (errno). */
static int link_unnamed(int fd, const char *path, char *tmp, size_t n)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    char proc[64];
    sigset_t oldset;
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
    for (int attempt = 0; attempt < 32; attempt++) {
        uint8_t r[6];
        size_t len = (size_t)snprintf(tmp, n, "%s.XXXXXX", path);
        if (len >= n || kms_rand_bytes(r, sizeof(r)) != 0) {
            errno = len >= n ? ENAMETOOLONG : EIO;
            tmp[0] = '\0';
            return -1;
        }
        for (size_t i = 0; i < sizeof(r); i++) {
            tmp[len - sizeof(r) + i] = alphabet[r[i] % (sizeof(alphabet) - 1)];
        }
        install_handlers();
        block_fatal(&oldset);
        int rc = linkat(AT_FDCWD, proc, AT_FDCWD, tmp, AT_SYMLINK_FOLLOW);
        int e = errno;
        if (rc == 0 && kms_cli_tmp_guard(tmp) != 0) {
            unlink(tmp);
            rc = -1;
            e = EMFILE;
        }
        sigprocmask(SIG_SETMASK, &oldset, NULL);
        if (rc == 0) {
            return 0;
        }
        if (e != EEXIST) {
            tmp[0] = '\0';
            errno = e;
            return -1;
        }
    }
    tmp[0] = '\0';
    errno = EEXIST;
    return -1;
}

int kms_cli_tmp_install(int fd, char *tmp, size_t n, const char *path)
{
    if (tmp[0] == '\0' && link_unnamed(fd, path, tmp, n) != 0) {
        return -1;
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        kms_cli_tmp_release(tmp);
        tmp[0] = '\0';
        errno = e;
        return -1;
    }
    kms_cli_tmp_release(tmp);
    tmp[0] = '\0';
    /* the rename is durable only once the directory is synced: without this a power cut
       after kmsctl said it was done could bring back the old file, or no file at all.
       Best effort: some file systems refuse fsync on a directory */
    char dir[4096];
    int dfd = dir_of(path, dir, sizeof(dir)) ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    return 0;
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

int kms_cli_fd_path(const char *path)
{
    static const char *const prefixes[] = {"/dev/fd/", "/proc/self/fd/"};
    if (strcmp(path, "/dev/stdout") == 0) {
        return STDOUT_FILENO;
    }
    if (strcmp(path, "/dev/stderr") == 0) {
        return STDERR_FILENO;
    }
    for (size_t i = 0; i < 2; i++) {
        size_t pl = strlen(prefixes[i]);
        int64_t fd;
        if (strncmp(path, prefixes[i], pl) == 0 && kms_int_parse(path + pl, &fd) && fd >= 0 &&
            fd <= INT_MAX) {
            return (int)fd;
        }
    }
    return -1;
}

int kms_cli_out_target(const char *path, char *resolved, size_t n, bool *special)
{
    struct stat st;
    *special = false;
    if ((size_t)snprintf(resolved, n, "%s", path) >= n) {
        kms_cli_errorf("cannot create %s: %s", path, strerror(ENAMETOOLONG));
        return -1;
    }
    if (lstat(path, &st) != 0) {
        return 0; /* a new file (or an error the create reports) */
    }
    if (S_ISLNK(st.st_mode)) {
        /* the kernel's protected_symlinks rule, whatever the sysctl says (realpath and the
           rename into the link's target would bypass it): in a sticky world-writable
           directory (/tmp), another user's link is a trap set for whoever writes there */
        struct stat dst;
        char dir[4096];
        if (dir_of(path, dir, sizeof(dir)) && stat(dir, &dst) == 0 &&
            (dst.st_mode & S_ISVTX) != 0 && (dst.st_mode & S_IWOTH) != 0 &&
            st.st_uid != geteuid() && st.st_uid != dst.st_uid) {
            kms_cli_errorf("refusing to follow the link %s: it belongs to another user (uid %u) "
                           "in the world-writable sticky directory %s",
                           path, (unsigned)st.st_uid, dir);
            return -1;
        }
        char *real = realpath(path, NULL);
        if (real == NULL) {
            kms_cli_errorf("cannot follow the link %s: %s", path, strerror(errno));
            return -1;
        }
        bool fits = (size_t)snprintf(resolved, n, "%s", real) < n;
        free(real);
        if (!fits || stat(resolved, &st) != 0) {
            kms_cli_errorf("cannot follow the link %s", path);
            return -1;
        }
    }
    if (S_ISDIR(st.st_mode)) {
        kms_cli_errorf("cannot write %s: it is a directory", path);
        return -1;
    }
    *special = !S_ISREG(st.st_mode); /* a device (character or block), a FIFO, a socket */
    return 0;
}

/* path with its directory part resolved (realpath of the whole path when it exists), or the
 * path itself when even its directory does not resolve. */
static void canonical_path(const char *path, char *out, size_t n)
{
    char dir[4096];
    char *real = realpath(path, NULL);
    snprintf(out, n, "%s", path);
    if (real != NULL) {
        snprintf(out, n, "%s", real);
        free(real);
        return;
    }
    const char *slash = strrchr(path, '/');
    const char *base = slash != NULL ? slash + 1 : path;
    real = dir_of(path, dir, sizeof(dir)) ? realpath(dir, NULL) : NULL;
    if (real != NULL) {
        snprintf(out, n, "%s/%s", strcmp(real, "/") == 0 ? "" : real, base);
        free(real);
    }
}

bool kms_cli_same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    char ca[4200], cb[4200];
    if (a == NULL || b == NULL || strcmp(a, "-") == 0 || strcmp(b, "-") == 0) {
        return false;
    }
    if (strcmp(a, b) == 0) {
        return true;
    }
    if (stat(a, &sa) == 0 && stat(b, &sb) == 0) {
        return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    }
    canonical_path(a, ca, sizeof(ca));
    canonical_path(b, cb, sizeof(cb));
    return strcmp(ca, cb) == 0;
}

int kms_cli_write_file(const char *path, const void *data, size_t len)
{
    char tmp[4096];
    char target[4096];
    bool special;
    int rc = -1;
    if (path == NULL || strcmp(path, "-") == 0) {
        if (write_all(STDOUT_FILENO, data, len) != 0) {
            kms_cli_errorf("cannot write to stdout: %s", strerror(errno));
            return -1;
        }
        return 0;
    }
    int dfd = kms_cli_fd_path(path);
    if (dfd >= 0) {
        /* /dev/stdout and the like: the descriptor itself, as the shell set it up (opening
         * the path again would miss its O_APPEND, and renaming onto its file would replace it) */
        if (write_all(dfd, data, len) != 0) {
            kms_cli_errorf("cannot write %s: %s", path, strerror(errno));
            return -1;
        }
        return 0;
    }
    if (kms_cli_out_target(path, target, sizeof(target), &special) != 0) {
        return -1;
    }
    if (special) {
        int sfd = open(target, O_WRONLY | O_CLOEXEC);
        if (sfd < 0 || write_all(sfd, data, len) != 0) {
            kms_cli_errorf("cannot write %s: %s", path, strerror(errno));
            if (sfd >= 0) {
                close(sfd);
            }
            return -1;
        }
        close(sfd);
        return 0;
    }
    path = target;
    int fd = kms_cli_tmpfile_for(path, tmp, sizeof(tmp));
    if (fd < 0) {
        kms_cli_errorf("cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    if (write_all(fd, data, len) != 0 || fsync(fd) != 0) {
        kms_cli_errorf("cannot write %s: %s", path, strerror(errno));
        goto out;
    }
    if (kms_cli_tmp_install(fd, tmp, sizeof(tmp), path) != 0) {
        kms_cli_errorf("cannot create %s: %s", path, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (fd >= 0) {
        close(fd);
    }
    if (tmp[0] != '\0') {
        unlink(tmp);
        kms_cli_tmp_release(tmp);
    }
    return rc;
}
