/*
 * cli.h - private to cli/ (the kmsctl program): the command table's row, option parsing shared
 * by every command group, and a small blocking HTTP/1.1 client for talking to kmsd.
 *
 * A command group lives in its own file (audit.c) and exports one entry point listed in
 * main.c's table. Entry points return the process exit status: 0 success, 1 the operation
 * failed (a tampered log, an API error), 2 usage or environment errors.
 */
#ifndef KMS_CLI_H
#define KMS_CLI_H

#include "crypto/crypto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define KMS_CLI_EXIT_OK 0
#define KMS_CLI_EXIT_FAIL 1
#define KMS_CLI_EXIT_USAGE 2

struct kms_cli_cmd {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv); /* argv[0] is the command name */
};

/* Command groups. */
int kms_cli_audit(int argc, char **argv);
int kms_cli_orgs(int argc, char **argv);     /* orgs.c */
int kms_cli_keys(int argc, char **argv);     /* keys.c */
int kms_cli_get(int argc, char **argv);      /* keys.c: kubectl's `get kmskey NAME` */
int kms_cli_encrypt(int argc, char **argv);  /* crypt.c */
int kms_cli_decrypt(int argc, char **argv);  /* crypt.c */
int kms_cli_envelope(int argc, char **argv); /* envelope.c */
int kms_cli_apply(int argc, char **argv);    /* apply.c */
int kms_cli_patch(int argc, char **argv);    /* apply.c */
int kms_cli_login(int argc, char **argv);    /* login.c */

/* "kmskey", "kmskeys" or either with ".security.kube-dc.com": kubectl's names of the kind. */
bool kms_cli_kmskey_kind(const char *kind); /* apply.c */

/* ---- options (main.c) -------------------------------------------------------------------- */

/*
 * One option: "--name VALUE", "--name=VALUE", "-name VALUE" (and `alias`, e.g. "o"). A
 * string option stores into *str; a repeatable one appends to list (up to list_max); a flag
 * (no value) sets *flag.
 */
struct kms_cli_opt {
    const char *name;
    const char *alias; /* NULL or a second spelling ("o" for output) */
    const char **str;
    bool *flag;
    const char **list;
    size_t *nlist;
    size_t list_max;
};

/*
 * Parse argv[0..argc) against opts (terminated by name == NULL). Arguments that are not
 * options go to pos (up to pos_max, count in *npos); "--" ends options. Prints an error
 * naming `prog` and returns -1 on an unknown option or a missing value.
 */
int kms_cli_parse(const char *prog, int argc, char **argv, const struct kms_cli_opt *opts,
                  const char **pos, size_t pos_max, size_t *npos);

/* ---- HTTP client (http_client.c) ---------------------------------------------------------- */

struct kms_cli_http;

struct kms_cli_http_opts {
    const char *addr;  /* "http://127.0.0.1:8200" or "https://kms.example:8200" */
    const char *token; /* sent as X-Vault-Token; may be NULL */
    const char *ns;    /* sent as X-Vault-Namespace; may be NULL */
    int timeout_ms;    /* connect + whole exchange; 0 = 30 s */
    /* https:// only (crypto/tls_client.c); all may be NULL / false */
    const char *ca_cert;     /* PEM CA bundle; NULL with ca_path NULL = the system store */
    const char *ca_path;     /* directory of PEM CA certificates (every file under it) */
    const char *client_cert; /* client certificate chain (PEM), with client_key */
    const char *client_key;
    bool tls_skip_verify; /* no certificate or host check; a warning goes to stderr */
    bool keepalive;       /* keep the connection open between requests (see http_client.c) */
    size_t max_response;  /* bytes of a response kept at most; 0 = 64 MiB (kmsctl's default) */
};

struct kms_cli_resp {
    int status;
    char content_type[64]; /* the response's Content-Type ("" when absent or longer) */
    char *body;            /* NUL-terminated; free with kms_cli_resp_dispose */
    size_t len;
    char *headers; /* kms_cli_http_request only: the header lines ("Name: value\r\n"…) */
};

/* A client for one server; the options' strings are copied. */
int kms_cli_http_create(const struct kms_cli_http_opts *o, struct kms_cli_http **out, char *err,
                        size_t errlen);
void kms_cli_http_destroy(struct kms_cli_http **h);
/* The timeout of the exchanges from now on (connect + whole exchange, as timeout_ms); 0 = 30 s.
 * The KMS plugin's sidecar bounds each call's request by the time its client still waits. */
void kms_cli_http_set_timeout(struct kms_cli_http *h, int timeout_ms);
/*
 * From the environment: KMS_ADDR or VAULT_ADDR, KMS_TOKEN or VAULT_TOKEN (else
 * ~/.vault-token), KMS_NAMESPACE or VAULT_NAMESPACE, and for https the TLS settings
 * KMS_/VAULT_ CACERT, CAPATH, CLIENT_CERT, CLIENT_KEY, SKIP_VERIFY. Returns 1 when no address
 * is set (no client), 0 with *out, -1 with err.
 */
int kms_cli_http_from_env(struct kms_cli_http **out, char *err, size_t errlen);
/* True when the client will send a token. */
bool kms_cli_http_has_token(const struct kms_cli_http *h);

/*
 * One request on a fresh connection: `path` is the request target ("/v1/sys/health?x=1"),
 * body may be NULL. Returns 0 with *out filled for any HTTP status, -1 on a transport error
 * (err says what).
 */
int kms_cli_http_do(struct kms_cli_http *h, const char *method, const char *path, const char *body,
                    size_t len, struct kms_cli_resp *out, char *err, size_t errlen);
void kms_cli_resp_dispose(struct kms_cli_resp *r);

struct kms_cli_header {
    const char *name;  /* a token, as HTTP allows */
    const char *value; /* no CR or LF */
};
/*
 * The same exchange with the caller's headers instead of the client's own (no token,
 * namespace, Accept or Content-Type added; Host, User-Agent, Connection: close unless
 * keepalive and, when body is not NULL, Content-Length are), and the response's header lines
 * in out->headers: kmsd standbys forward requests with it (server/ha.c).
 */
int kms_cli_http_request(struct kms_cli_http *h, const char *method, const char *path,
                         const struct kms_cli_header *hdrs, size_t nhdrs, const void *body,
                         size_t len, struct kms_cli_resp *out, char *err, size_t errlen) KMS_WUR;

/* Percent-encode a query value into out (n bytes, truncated). */
void kms_cli_urlencode(const char *in, char *out, size_t n);
/* The first message of a Vault {"errors":[…]} body (a "1 error occurred:" multierror shown as
 * its one message), or the body itself, into out. */
void kms_cli_api_error(const struct kms_cli_resp *r, char *out, size_t n);

/* ---- the KMS commands' shared plumbing (common.c) ----------------------------------------- */

#include <jansson.h>

/*
 * Options every KMS command (keys, encrypt, decrypt, envelope, apply, login) accepts anywhere
 * on its line. Unset ones fall back to the environment in kms_cli_session_open.
 */
struct kms_cli_global {
    const char *addr;    /* --addr, else KMS_ADDR, VAULT_ADDR, BAO_ADDR, else 127.0.0.1:8200 */
    const char *token;   /* --token, else KMS_TOKEN, VAULT_TOKEN, the login token file,
                            ~/.vault-token */
    const char *ns;      /* -n/--namespace: the organization, else KMS_NAMESPACE ... */
    const char *project; /* --project, else KMS_PROJECT */
    const char *output;  /* -o table|json|yaml */
    const char *ca_cert, *ca_path, *client_cert, *client_key;
    bool tls_skip_verify;
    bool help;
};

/* The rows of kms_cli_global to splice at the start of a command's option table. */
#define KMS_CLI_GLOBAL_OPTS(g)                                                                     \
    {"addr", "address", &(g)->addr, NULL, NULL, NULL, 0},                                          \
        {"token", NULL, &(g)->token, NULL, NULL, NULL, 0},                                         \
        {"namespace", "n", &(g)->ns, NULL, NULL, NULL, 0},                                         \
        {"project", NULL, &(g)->project, NULL, NULL, NULL, 0},                                     \
        {"output", "o", &(g)->output, NULL, NULL, NULL, 0},                                        \
        {"ca-cert", "cacert", &(g)->ca_cert, NULL, NULL, NULL, 0},                                 \
        {"ca-path", "capath", &(g)->ca_path, NULL, NULL, NULL, 0},                                 \
        {"client-cert", NULL, &(g)->client_cert, NULL, NULL, NULL, 0},                             \
        {"client-key", NULL, &(g)->client_key, NULL, NULL, NULL, 0},                               \
        {"tls-skip-verify", NULL, NULL, &(g)->tls_skip_verify, NULL, NULL, 0},                     \
    {                                                                                              \
        "help", "h", NULL, &(g)->help, NULL, NULL, 0                                               \
    }

enum kms_cli_fmt { KMS_CLI_FMT_TABLE, KMS_CLI_FMT_JSON, KMS_CLI_FMT_YAML };

/* What a session needs before it may open: an organization, a project. */
#define KMS_CLI_NEED_ORG 1u
#define KMS_CLI_NEED_PROJECT 2u
#define KMS_CLI_NEED_TOKEN 4u
#define KMS_CLI_ROOT_NS 8u /* requests go to the root namespace (no X-Vault-Namespace) */
/* A project's KMSKeys and Transit keys (keys, encrypt, decrypt, envelope, patch): with no token
 * at all the command stops with "no token" (exit 2) instead of sending a request without one. */
#define KMS_CLI_NEED_PROJECT_TOKEN (KMS_CLI_NEED_ORG | KMS_CLI_NEED_PROJECT | KMS_CLI_NEED_TOKEN)

#define KMS_CLI_NAME_MAX 63

/* One command's connection to kmsd plus the resolved organization and project. */
struct kms_cli_session {
    struct kms_cli_http *http;
    enum kms_cli_fmt fmt;
    char ns[256];  /* the organization namespace as given ("" when none) */
    char org[256]; /* its name in Transit key names ('/' -> '-') */
    char project[KMS_CLI_NAME_MAX + 1];
    char addr[512];
};

/*
 * If the command word is preceded by global options (`kmsctl -n org keys list`), move it to
 * argv[1] so main's table lookup finds it; the options stay, in order, after it.
 */
void kms_cli_hoist_command(int argc, char **argv);
/*
 * The index of a group's verb in argv[1..argc): the first word that is not a global option or
 * its value. Returns argc when there is none.
 */
int kms_cli_find_verb(int argc, char **argv);

/*
 * Resolve the globals (flags, then the environment), check what `need` asks for and connect
 * the HTTP client. Returns KMS_CLI_EXIT_OK, or KMS_CLI_EXIT_USAGE after printing why.
 * Release with kms_cli_session_close even on failure (s is zeroed first).
 */
int kms_cli_session_open(const struct kms_cli_global *g, unsigned need, struct kms_cli_session *s);
void kms_cli_session_close(struct kms_cli_session *s);

/*
 * One API call: `path` is relative to /v1/ ("kms/keys/p/n"), req (may be NULL) is sent as
 * JSON. On a 2xx answer returns 0 with *resp set to the whole parsed body (NULL for an empty
 * 204; caller decrefs); the response's warnings are printed to stderr. Otherwise returns the
 * HTTP status (or -1 on a transport error) with *resp NULL; unless `quiet_status` equals the
 * status, the server's message is printed as "Error: <msg>". A quiet 404 must be Vault's bare
 * {"errors":[]}: a 404 with a message ("namespace not found") is printed and returns -1.
 * Request and response bytes are
 * wiped after use (they may carry plaintext and data keys).
 */
int kms_cli_call(struct kms_cli_session *s, const char *method, const char *path, const json_t *req,
                 int quiet_status, json_t **resp);
/* kms_cli_call with two statuses that are returned without a word (404 and 403 of a check the
 * caller may skip); the same rule for a 404 with a message. */
int kms_cli_call_either(struct kms_cli_session *s, const char *method, const char *path,
                        const json_t *req, int quiet_a, int quiet_b, json_t **resp);

/*
 * The Transit key behind KMSKey `name` of the session's project ("<org>-<project>-<name>")
 * into out, after checking that the KMSKey exists (404 -> error; 403 -> assumed without a
 * word, the caller may hold Transit rights without KMSKey read: the Transit call's own answer
 * is the one reported). Returns 0, or -1 after printing. (crypt.c)
 */
int kms_cli_transit_key(struct kms_cli_session *s, const char *name, char *out, size_t n);

/*
 * "Error: <fmt>" on stderr. The formatted message is passed through kms_cli_escape, so text
 * from the server, a manifest or a file name cannot move the cursor or forge lines.
 */
void kms_cli_errorf(const char *fmt, ...) KMS_PRINTF(1, 2);

/* ---- terminal safety (common.c) ----------------------------------------------------------- */

/*
 * Copy in[0..len) to out (n bytes, always NUL-terminated, truncated at a character boundary)
 * with everything that is not printable written visibly: C0 controls (newline and tab too),
 * DEL and bytes that are not valid UTF-8 as \xNN; C1 controls, Unicode line/paragraph
 * separators and bidirectional/zero-width formatting characters as \uNNNN. Printable UTF-8
 * passes unchanged. Returns the length written.
 */
size_t kms_cli_escape(const char *in, size_t len, char *out, size_t n);
/*
 * kms_cli_escape of a NUL-terminated string into one of a few rotating static buffers, for
 * printf arguments of human-readable output ("(null)" -> "-"). Borrowed until the 16th
 * later call; single-threaded use only (kmsctl is).
 */
const char *kms_cli_esc(const char *s);
/* Replace every string inside j (values, not keys) with its kms_cli_escape'd form. */
void kms_cli_json_escape_strings(json_t *j);

/* ---- temporary files and signals (common.c) ----------------------------------------------- */

/*
 * Temporary files that must not outlive the process: kms_cli_tmpfile_for registers each one,
 * and SIGINT, SIGTERM, SIGHUP or SIGPIPE unlink every registered path (async-signal-safe)
 * before the signal is re-raised with its default action. Call kms_cli_tmp_release after the
 * file is renamed into place or unlinked. kms_cli_tmp_guard registers an existing path the
 * same way (a renamed output whose sidecar is not written yet). Both return -1 when the
 * table is full (KMS_CLI_TMP_MAX).
 */
#define KMS_CLI_TMP_MAX 4
int kms_cli_tmp_guard(const char *path) KMS_WUR;
void kms_cli_tmp_release(const char *path);
/* "Hint: <fmt>" on stderr (escaped): the next step after an error. */
void kms_cli_hintf(const char *fmt, ...) KMS_PRINTF(1, 2);
/* The session's organization for messages ("(root namespace)" when none). */
const char *kms_cli_org_label(const struct kms_cli_session *s);
/* "KMSKey NAME not found in project P of organization O" plus the next step. */
void kms_cli_key_not_found(const struct kms_cli_session *s, const char *name);
/* True for a KMSKey or project name: [a-z0-9-], alphanumeric at both ends, at most 63. */
bool kms_cli_name_ok(const char *s);
/* Check a name argument; prints the error and returns false when it is not one. */
bool kms_cli_check_name(const char *what, const char *s);

/*
 * Read a whole file ("-" = stdin) of at most max bytes into *out (NUL-terminated, malloc'd;
 * caller frees with kms_free_wipe(out, *len + 1)). Returns 0, or -1 after printing why.
 */
int kms_cli_read_file(const char *path, size_t max, uint8_t **out, size_t *len);
/* The same, but a file of more than max bytes returns 1 with nothing printed (and *out NULL):
 * the caller names the limit that matters to the user. */
int kms_cli_read_file_max(const char *path, size_t max, uint8_t **out, size_t *len);
/* A size for people: "812 B", "3.0 MiB" (1024-based units). */
void kms_cli_human_bytes(double b, char *out, size_t n);
/*
 * Write data to path atomically with mode 0600 (a temporary file in the same directory,
 * renamed over path), or to stdout when path is NULL or "-". Returns 0 or -1 after printing.
 */
int kms_cli_write_file(const char *path, const void *data, size_t len);
/*
 * A temporary file for path, mode 0600, in its directory; fd or -1 (errno). Where the file
 * system and /proc allow it, the file has no name (O_TMPFILE) and tmp is set to "": nothing is
 * left behind however the process dies. Otherwise it is "<path>.XXXXXX" (into tmp), registered
 * for removal on a fatal signal: unlink it and kms_cli_tmp_release it on failure.
 */
int kms_cli_tmpfile_for(const char *path, char *tmp, size_t n);
/*
 * Put the complete (fsynced) temporary file fd from kms_cli_tmpfile_for in place as path: an
 * unnamed one is linked as "<path>.XXXXXX" first, then renamed over path. tmp is "" and
 * released afterwards, also on failure (-1, errno), when nothing is left but path as it was.
 * The caller still closes fd.
 */
int kms_cli_tmp_install(int fd, char *tmp, size_t n, const char *path);
/*
 * Where an --out PATH is written: a symbolic link is followed (its target is replaced, not the
 * link), into resolved (size n). *special is set for an existing character device, FIFO or
 * socket (/dev/null, /dev/stdout, a pipe): such a target is opened and written, never
 * replaced by a renamed file. 0, or -1 after printing why (a directory, a dangling link).
 */
int kms_cli_out_target(const char *path, char *resolved, size_t n, bool *special);
/*
 * Whether two paths name the same file: the same device and inode when both exist (links
 * followed, hard links included), else the same place once the directory part is resolved
 * ("./x", "d/../x" and a symbolic link to x's directory all name x). "-" and NULL name none.
 */
bool kms_cli_same_file(const char *a, const char *b);
/* The descriptor a path names (/dev/stdout 1, /dev/stderr 2, /dev/fd/N, /proc/self/fd/N), or
 * -1: such an --out is written through the descriptor itself. */
int kms_cli_fd_path(const char *path);

/* ---- rendering (output.c) ---------------------------------------------------------------- */

/* Parse -o: NULL or "table" -> table. Returns -1 for anything else. */
int kms_cli_fmt_parse(const char *s, enum kms_cli_fmt *out);
/* Pretty JSON (2-space indent) plus a newline on stdout. */
void kms_cli_print_json(const json_t *j);
/* A JSON value as a YAML document on stdout (kubectl's layout). Returns 0 or -1. */
int kms_cli_print_yaml(const json_t *j);
/* Print j as JSON or YAML according to fmt (which must not be table). */
int kms_cli_print_value(enum kms_cli_fmt fmt, const json_t *j);

/* Column-aligned text like Go's tabwriter (2 spaces between columns). */
struct kms_cli_table;
struct kms_cli_table *kms_cli_table_create(size_t ncols);
/* Append one row of ncols cells (copied). */
int kms_cli_table_add(struct kms_cli_table *t, const char *const *cells);
void kms_cli_table_print(const struct kms_cli_table *t, FILE *f);
void kms_cli_table_destroy(struct kms_cli_table **t);

/* A Kubernetes-style age ("45s", "5m", "3h", "12d") from an RFC 3339 time; "-" if unknown. */
void kms_cli_age(const char *rfc3339, char *out, size_t n);
/* Seconds since the epoch of an RFC 3339 UTC time ("2026-04-15T02:00:11Z"); -1 if invalid. */
int64_t kms_cli_parse_time(const char *rfc3339);

/* ---- the KMSKey manifest (kmskey.c) ------------------------------------------------------ */

/*
 * kubectl-style strict decoding: 0 when every field of doc is one a KMSKey manifest may
 * carry, else -1 with msg = `unknown field "spec.rotaton", unknown field "x"`.
 */
int kms_cli_kmskey_strict(const json_t *doc, char *msg, size_t n);
/* Drop from a KMSKey object every field a manifest may not carry (in place). */
void kms_cli_kmskey_clean(json_t *obj);
/* Print a KMSKey (or a KMSKeyList's items) as JSON/YAML after kms_cli_kmskey_clean. */
int kms_cli_print_kmskey(enum kms_cli_fmt fmt, const json_t *obj);

/* Parse YAML documents (the KMSKey manifests of `apply`) into JSON values appended to docs;
 * `name` labels error messages. Returns -1 after printing an error. */
int kms_cli_yaml_parse(const char *name, const uint8_t *text, size_t len, json_t *docs);

#endif
