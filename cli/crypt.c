/*
 * crypt.c - `kmsctl encrypt` and `kmsctl decrypt`: direct mode (≤ 64 KiB) of the product doc,
 * straight to the organization's Transit engine: transit/encrypt/<org>-<project>-<name> and
 * transit/decrypt/<…> in namespace <org>.
 *
 * Behaviour copied from kube-dc's CLI: exactly one of the inline value or the file (`-` is
 * stdin); plaintext is always sent base64-encoded (binary-safe); a ciphertext is trimmed and
 * must start with "vault:v" before anything is sent; --out defaults to stdout, where a newline
 * is added when the bytes do not end in one, and a file is written 0600.
 *
 * Encrypt first reads the KMSKey: Transit's encrypt creates a missing key (upsert), and a typo
 * in NAME must not quietly mint a stray key outside any KMSKey's lifecycle.
 */
#include "cli/cli.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Plaintext read from a file or stdin: the request body limit, well above the 64 KiB cap. */
#define PLAINTEXT_READ_MAX (32u << 20)
#define CIPHERTEXT_READ_MAX (64u << 20)

int kms_cli_transit_key(struct kms_cli_session *s, const char *name, char *out, size_t n)
{
    char path[256];
    json_t *resp = NULL;
    snprintf(path, sizeof(path), "kms/keys/%s/%s", s->project, name);
    int rc = kms_cli_call_either(s, "GET", path, NULL, 404, 403, &resp);
    json_decref(resp);
    if (rc == 404) {
        kms_cli_key_not_found(s, name);
        return -1;
    }
    /* 403: the caller may use the key without reading its KMSKey; let Transit decide (and
       speak: docs/cli.md promises such tokens skip the check, not an error and a hint) */
    if (rc != 0 && rc != 403) {
        return -1;
    }
    if ((size_t)snprintf(out, n, "%s-%s-%s", s->org, s->project, name) >= n) {
        kms_cli_errorf("the Transit key name is too long");
        return -1;
    }
    return 0;
}

/* kube-dc's writeOutput: stdout gets a trailing newline when missing; files are 0600. */
static int write_output(const char *out, const uint8_t *data, size_t len)
{
    if (out == NULL || out[0] == '\0' || strcmp(out, "-") == 0) {
        if (kms_cli_write_file(NULL, data, len) != 0) {
            return -1;
        }
        if (len == 0 || data[len - 1] != '\n') {
            putchar('\n');
        }
        return fflush(stdout) == 0 ? 0 : -1;
    }
    return kms_cli_write_file(out, data, len);
}

/*
 * A plaintext file over what direct mode sends at all: the limit the user meets is the
 * server's 64 KiB (max_plaintext_size), and the way on is envelope encryption, as for the 413.
 */
static void plaintext_too_big(const char *name, const char *file, size_t max)
{
    char size[32], cap[32];
    struct stat st;
    bool in = strcmp(file, "-") == 0;
    kms_cli_human_bytes((double)max, cap, sizeof(cap));
    if (!in && stat(file, &st) == 0 && S_ISREG(st.st_mode)) {
        kms_cli_human_bytes((double)st.st_size, size, sizeof(size));
        kms_cli_errorf("plaintext exceeds the 64 KiB limit for direct encryption: %s is %s, over "
                       "the %s kmsctl sends directly whatever the server's max_plaintext_size",
                       file, size, cap);
    } else {
        kms_cli_errorf("plaintext exceeds the 64 KiB limit for direct encryption: %s holds more "
                       "than the %s kmsctl sends directly whatever the server's "
                       "max_plaintext_size",
                       in ? "stdin" : file, cap);
    }
    kms_cli_hintf("use `kmsctl envelope encrypt %s --in %s --out %s.enc` for payloads over the "
                  "direct-mode limit",
                  name, in ? "-" : file, in ? "FILE" : file);
}

/*
 * --context is sent as Transit's `context`, which OpenBao base64-decodes and, when that fails,
 * refuses with Go's bare "illegal base64 data at input byte N" (exit 1, no field named). Check
 * it the same way here so the error names the option and nothing is sent: a usage error.
 */
static int check_context(const char *context)
{
    uint8_t *raw = NULL;
    size_t rawlen = 0, at = 0;
    if (context == NULL) {
        return 0;
    }
    if (kms_b64_decode_alloc(context, strlen(context), &raw, &rawlen, &at) != 0) {
        kms_cli_errorf("--context must be base64 (standard alphabet, padded): illegal base64 "
                       "data at input byte %zu",
                       at);
        return KMS_CLI_EXIT_USAGE;
    }
    kms_free_wipe((void **)&raw, rawlen);
    return 0;
}

/* Exactly one of the inline value and the file; the bytes into *buf (caller wipes/frees).
 * `name` (the KMSKey, for encrypt's hint) is NULL for a ciphertext. */
static int read_input(const char *what, const char *name, const char *inline_val, const char *file,
                      size_t max, uint8_t **buf, size_t *len)
{
    if ((inline_val != NULL && inline_val[0] != '\0') == (file != NULL && file[0] != '\0')) {
        if (inline_val != NULL && inline_val[0] == '\0' && file == NULL) {
            /* as in kube-dc's CLI an empty value counts as not given: say so */
            kms_cli_errorf("--%s is empty; for an empty %s use --%s-file=/dev/null", what, what,
                           what);
        } else {
            kms_cli_errorf("provide exactly one of --%s or --%s-file", what, what);
        }
        return KMS_CLI_EXIT_USAGE;
    }
    if (inline_val != NULL && inline_val[0] != '\0') {
        *len = strlen(inline_val);
        *buf = (uint8_t *)strdup(inline_val);
        if (*buf == NULL) {
            kms_cli_errorf("out of memory");
            return KMS_CLI_EXIT_FAIL;
        }
        return 0;
    }
    if (name == NULL) {
        return kms_cli_read_file(file, max, buf, len) == 0 ? 0 : KMS_CLI_EXIT_FAIL;
    }
    int r = kms_cli_read_file_max(file, max, buf, len);
    if (r == 1) {
        plaintext_too_big(name, file, max);
    }
    return r == 0 ? 0 : KMS_CLI_EXIT_FAIL;
}

int kms_cli_encrypt(int argc, char **argv)
{
    struct kms_cli_global g;
    struct kms_cli_session s;
    const char *plaintext = NULL, *file = NULL, *context = NULL, *out = NULL;
    const char *pos[2];
    size_t npos = 0;
    uint8_t *pt = NULL;
    size_t ptlen = 0;
    char *b64 = NULL;
    size_t b64len = 0;
    json_t *req = NULL, *resp = NULL;
    char key[512], path[640];
    int status = KMS_CLI_EXIT_USAGE;

    memset(&g, 0, sizeof(g));
    memset(&s, 0, sizeof(s));
    const struct kms_cli_opt opts[] = {
        KMS_CLI_GLOBAL_OPTS(&g),
        {"plaintext", NULL, &plaintext, NULL, NULL, NULL, 0},
        {"plaintext-file", NULL, &file, NULL, NULL, NULL, 0},
        {"context", NULL, &context, NULL, NULL, NULL, 0},
        {"out", NULL, &out, NULL, NULL, NULL, 0},
        {NULL, NULL, NULL, NULL, NULL, NULL, 0},
    };
    static const char usage[] =
        "Usage: kmsctl encrypt NAME (--plaintext=TEXT | --plaintext-file=FILE|-) "
        "[--context=B64] [--out=FILE|-]\n";
    if (kms_cli_parse("kmsctl encrypt", argc - 1, argv + 1, opts, pos, 2, &npos) != 0) {
        fputs(usage, stderr);
        goto out;
    }
    if (g.help) {
        fputs(usage, stdout);
        status = KMS_CLI_EXIT_OK;
        goto out;
    }
    if (npos != 1) {
        kms_cli_errorf("encrypt takes the KMSKey name");
        fputs(usage, stderr);
        goto out;
    }
    if (!kms_cli_check_name("KMSKey name", pos[0])) {
        goto out;
    }
    if ((status = check_context(context)) != 0) {
        goto out;
    }
    if ((status = read_input("plaintext", pos[0], plaintext, file, PLAINTEXT_READ_MAX, &pt,
                             &ptlen)) != 0) {
        goto out;
    }
    if ((status = kms_cli_session_open(&g, KMS_CLI_NEED_PROJECT_TOKEN, &s)) != 0) {
        goto out;
    }
    status = KMS_CLI_EXIT_FAIL;
    if (kms_cli_transit_key(&s, pos[0], key, sizeof(key)) != 0) {
        goto out;
    }
    b64len = kms_b64_encoded_len(ptlen);
    b64 = malloc(b64len + 1);
    if (b64 == NULL) {
        kms_cli_errorf("out of memory");
        goto out;
    }
    kms_b64_encode(pt, ptlen, b64);
    req = json_pack("{s:s}", "plaintext", b64);
    if (req == NULL ||
        (context != NULL && json_object_set_new(req, "context", json_string(context)) != 0)) {
        kms_cli_errorf("out of memory");
        goto out;
    }
    snprintf(path, sizeof(path), "transit/encrypt/%s", key);
    int rc = kms_cli_call(&s, "POST", path, req, 0, &resp);
    if (rc == 413) {
        fprintf(stderr,
                "Hint: use `kmsctl envelope encrypt %s --in FILE --out FILE.enc` for "
                "payloads over the direct-mode limit\n",
                pos[0]);
    }
    if (rc != 0) {
        goto out;
    }
    const char *ct =
        json_string_value(json_object_get(json_object_get(resp, "data"), "ciphertext"));
    if (ct == NULL) {
        kms_cli_errorf("the server's answer has no ciphertext");
        goto out;
    }
    if (write_output(out, (const uint8_t *)ct, strlen(ct)) != 0) {
        goto out;
    }
    status = KMS_CLI_EXIT_OK;
out:
    json_decref(resp);
    json_decref(req);
    if (b64 != NULL) {
        kms_free_wipe((void **)&b64, b64len + 1);
    }
    if (pt != NULL) {
        kms_free_wipe((void **)&pt, ptlen + 1);
    }
    kms_cli_session_close(&s);
    return status;
}

/* Go's %q of at most the first 16 bytes, as kube-dc quotes a refused ciphertext. */
static void quote16(const char *in, size_t len, char *out, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < len && i < 16 && o + 5 < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c >= 0x20 && c < 0x7f) {
            out[o++] = (char)c;
        } else {
            o += (size_t)snprintf(out + o, n - o, "\\x%02x", c);
        }
    }
    out[o] = '\0';
}

int kms_cli_decrypt(int argc, char **argv)
{
    struct kms_cli_global g;
    struct kms_cli_session s;
    const char *ciphertext = NULL, *file = NULL, *context = NULL, *out = NULL;
    const char *pos[2];
    size_t npos = 0;
    uint8_t *raw = NULL;
    size_t rawlen = 0;
    uint8_t *pt = NULL;
    size_t ptlen = 0, ptcap = 0;
    json_t *req = NULL, *resp = NULL;
    char path[640], q[80];
    int status = KMS_CLI_EXIT_USAGE;

    memset(&g, 0, sizeof(g));
    memset(&s, 0, sizeof(s));
    const struct kms_cli_opt opts[] = {
        KMS_CLI_GLOBAL_OPTS(&g),
        {"ciphertext", NULL, &ciphertext, NULL, NULL, NULL, 0},
        {"ciphertext-file", NULL, &file, NULL, NULL, NULL, 0},
        {"context", NULL, &context, NULL, NULL, NULL, 0},
        {"out", NULL, &out, NULL, NULL, NULL, 0},
        {NULL, NULL, NULL, NULL, NULL, NULL, 0},
    };
    static const char usage[] =
        "Usage: kmsctl decrypt NAME (--ciphertext=vault:vN:... | --ciphertext-file=FILE|-) "
        "[--context=B64] [--out=FILE|-]\n";
    if (kms_cli_parse("kmsctl decrypt", argc - 1, argv + 1, opts, pos, 2, &npos) != 0) {
        fputs(usage, stderr);
        goto out;
    }
    if (g.help) {
        fputs(usage, stdout);
        status = KMS_CLI_EXIT_OK;
        goto out;
    }
    if (npos != 1) {
        kms_cli_errorf("decrypt takes the KMSKey name");
        fputs(usage, stderr);
        goto out;
    }
    if (!kms_cli_check_name("KMSKey name", pos[0])) {
        goto out;
    }
    if ((status = check_context(context)) != 0) {
        goto out;
    }
    if ((status = read_input("ciphertext", NULL, ciphertext, file, CIPHERTEXT_READ_MAX, &raw,
                             &rawlen)) != 0) {
        goto out;
    }
    status = KMS_CLI_EXIT_USAGE;
    /* strings.TrimSpace */
    size_t b = 0, e = rawlen;
    while (b < e && (raw[b] == ' ' || raw[b] == '\t' || raw[b] == '\n' || raw[b] == '\r' ||
                     raw[b] == '\v' || raw[b] == '\f')) {
        b++;
    }
    while (e > b && (raw[e - 1] == ' ' || raw[e - 1] == '\t' || raw[e - 1] == '\n' ||
                     raw[e - 1] == '\r' || raw[e - 1] == '\v' || raw[e - 1] == '\f')) {
        e--;
    }
    raw[e] = '\0';
    const char *ct = (const char *)raw + b;
    if (e - b < 7 || strncmp(ct, "vault:v", 7) != 0) {
        quote16(ct, e - b, q, sizeof(q));
        kms_cli_errorf("ciphertext must be in OpenBao 'vault:v<n>:...' form (got \"%s\"...)", q);
        goto out;
    }
    if ((status = kms_cli_session_open(&g, KMS_CLI_NEED_PROJECT_TOKEN, &s)) != 0) {
        goto out;
    }
    status = KMS_CLI_EXIT_FAIL;
    req = json_pack("{s:s}", "ciphertext", ct);
    if (req == NULL ||
        (context != NULL && json_object_set_new(req, "context", json_string(context)) != 0)) {
        kms_cli_errorf("out of memory");
        goto out;
    }
    snprintf(path, sizeof(path), "transit/decrypt/%s-%s-%s", s.org, s.project, pos[0]);
    if (kms_cli_call(&s, "POST", path, req, 0, &resp) != 0) {
        goto out;
    }
    const char *p64 =
        json_string_value(json_object_get(json_object_get(resp, "data"), "plaintext"));
    size_t at = 0;
    if (p64 == NULL) {
        kms_cli_errorf("the server's answer has no plaintext");
        goto out;
    }
    ptcap = kms_b64_decoded_max(strlen(p64)) + 1;
    pt = malloc(ptcap);
    if (pt == NULL || kms_b64_decode(p64, strlen(p64), pt, &ptlen, &at) != 0) {
        kms_cli_errorf("decrypt: bad base64 in the server's answer");
        goto out;
    }
    if (write_output(out, pt, ptlen) != 0) {
        goto out;
    }
    status = KMS_CLI_EXIT_OK;
out:
    json_decref(resp);
    json_decref(req);
    if (pt != NULL) {
        kms_free_wipe((void **)&pt, ptcap);
    }
    if (raw != NULL) {
        kms_free_wipe((void **)&raw, rawlen + 1);
    }
    kms_cli_session_close(&s);
    return status;
}
