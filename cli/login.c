/*
 * login.c - `kmsctl login`: exchange a Kubernetes ServiceAccount token or an OIDC/JWT for a
 * kmsd token (POST auth/<mount>/login {role, jwt}, as the product doc's Go and Python samples
 * do) and keep it for later commands.
 *
 * The client token goes to a 0600 file ($KMS_TOKEN_FILE, else ~/.config/kmsctl/token, or
 * --token-file), written atomically; later commands read it after --token and
 * KMS_TOKEN/VAULT_TOKEN. The token itself is never printed, except with --no-store, where it
 * is the only thing on stdout (`export KMS_TOKEN=$(kmsctl login … --no-store)`). What is shown
 * instead is what `vault login` shows beside it: accessor, duration, policies.
 */
#include "cli/cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define DEFAULT_K8S_JWT_FILE "/var/run/secrets/openbao/token"
#define JWT_MAX (64u << 10)

/* Vault's duration text: 3600 -> "1h", 5400 -> "1h30m", 0 -> "∞" (never expires). */
static void human_ttl(json_int_t s, char *out, size_t n)
{
    size_t o = 0;
    if (s <= 0) {
        snprintf(out, n, "∞");
        return;
    }
    out[0] = '\0';
    if (s >= 3600) {
        o += (size_t)snprintf(out + o, n - o, "%" JSON_INTEGER_FORMAT "h", s / 3600);
    }
    if ((s % 3600) / 60 != 0 && o < n) {
        o += (size_t)snprintf(out + o, n - o, "%" JSON_INTEGER_FORMAT "m", (s % 3600) / 60);
    }
    if (s % 60 != 0 && o < n) {
        snprintf(out + o, n - o, "%" JSON_INTEGER_FORMAT "s", s % 60);
    }
}

/* ["a" "b"], as `vault login` prints a list. */
static void policy_list(const json_t *arr, char *out, size_t n)
{
    size_t i, o = 0;
    json_t *v;
    o += (size_t)snprintf(out, n, "[");
    json_array_foreach(arr, i, v)
    {
        if (o < n && json_is_string(v)) {
            o += (size_t)snprintf(out + o, n - o, "%s\"%s\"", i ? " " : "", json_string_value(v));
        }
    }
    if (o < n) {
        snprintf(out + o, n - o, "]");
    }
}

static int default_token_path(char *out, size_t n)
{
    const char *tf = getenv("KMS_TOKEN_FILE");
    const char *home = getenv("HOME");
    if (tf != NULL && tf[0] != '\0') {
        snprintf(out, n, "%s", tf);
        return 0;
    }
    if (home == NULL || home[0] == '\0') {
        kms_cli_errorf("HOME is not set: give --token-file or set KMS_TOKEN_FILE");
        return -1;
    }
    snprintf(out, n, "%s/.config/kmsctl/token", home);
    return 0;
}

/* mkdir -p the directory part of path, new directories 0700. */
static int make_parent(const char *path)
{
    char dir[1024];
    if ((size_t)snprintf(dir, sizeof(dir), "%s", path) >= sizeof(dir)) {
        kms_cli_errorf("token file path too long");
        return -1;
    }
    char *slash = strrchr(dir, '/');
    if (slash == NULL || slash == dir) {
        return 0;
    }
    *slash = '\0';
    for (char *p = dir + 1; *p != '\0'; p++) {
        if (*p != '/') {
            continue;
        }
        *p = '\0';
        if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
            kms_cli_errorf("cannot create %s: %s", dir, strerror(errno));
            return -1;
        }
        *p = '/';
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        kms_cli_errorf("cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        kms_cli_errorf("cannot create %s in %s: %s", path, dir, strerror(ENOTDIR));
        return -1;
    }
    return 0;
}

int kms_cli_login(int argc, char **argv)
{
    struct kms_cli_global g;
    struct kms_cli_session s;
    const char *method = NULL, *mount = NULL, *role = NULL, *jwt = NULL, *jwt_file = NULL;
    const char *token_file = NULL;
    bool no_store = false;
    const char *pos[1];
    size_t npos = 0;
    uint8_t *jbuf = NULL;
    size_t jlen = 0;
    json_t *req = NULL, *resp = NULL;
    char path[512], tpath[1024];
    int status = KMS_CLI_EXIT_USAGE;

    memset(&g, 0, sizeof(g));
    memset(&s, 0, sizeof(s));
    const struct kms_cli_opt opts[] = {
        KMS_CLI_GLOBAL_OPTS(&g),
        {"method", NULL, &method, NULL, NULL, NULL, 0},
        {"mount", "path", &mount, NULL, NULL, NULL, 0},
        {"role", NULL, &role, NULL, NULL, NULL, 0},
        {"jwt", NULL, &jwt, NULL, NULL, NULL, 0},
        {"jwt-file", NULL, &jwt_file, NULL, NULL, NULL, 0},
        {"token-file", NULL, &token_file, NULL, NULL, NULL, 0},
        {"no-store", NULL, NULL, &no_store, NULL, NULL, 0},
        {NULL, NULL, NULL, NULL, NULL, NULL, 0},
    };
    static const char usage[] =
        "Usage: kmsctl login [--method=kubernetes|jwt] [--mount=PATH] --role=ROLE\n"
        "                    [--jwt=TOKEN | --jwt-file=FILE|-] [--token-file=FILE] [--no-store]\n"
        "                    [-n ORG] [--addr URL]\n\n"
        "  kubernetes (default): mount k8s-host, JWT from " DEFAULT_K8S_JWT_FILE "\n"
        "  jwt:                  mount jwt, --jwt or --jwt-file required\n"
        "The token is kept in --token-file, $KMS_TOKEN_FILE or ~/.config/kmsctl/token (0600);\n"
        "--no-store prints it on stdout instead.\n";
    if (kms_cli_parse("kmsctl login", argc - 1, argv + 1, opts, pos, 0, &npos) != 0) {
        fputs(usage, stderr);
        goto out;
    }
    if (g.help) {
        fputs(usage, stdout);
        status = KMS_CLI_EXIT_OK;
        goto out;
    }
    bool k8s;
    if (method == NULL || strcmp(method, "kubernetes") == 0 || strcmp(method, "k8s") == 0) {
        k8s = true;
    } else if (strcmp(method, "jwt") == 0 || strcmp(method, "oidc") == 0) {
        k8s = false;
    } else {
        kms_cli_errorf("--method is kubernetes or jwt (not \"%s\")", method);
        goto out;
    }
    if (role == NULL || role[0] == '\0') {
        kms_cli_errorf("--role is required");
        goto out;
    }
    if (jwt != NULL && jwt_file != NULL) {
        kms_cli_errorf("give --jwt or --jwt-file, not both");
        goto out;
    }
    if (jwt == NULL && jwt_file == NULL) {
        if (!k8s) {
            kms_cli_errorf("--jwt or --jwt-file is required with --method=jwt");
            goto out;
        }
        jwt_file = DEFAULT_K8S_JWT_FILE;
    }
    if (mount == NULL) {
        mount = k8s ? "k8s-host" : "jwt";
    }
    while (mount[0] == '/') {
        mount++;
    }
    if (mount[0] == '\0' || strstr(mount, "..") != NULL || strchr(mount, '?') != NULL) {
        kms_cli_errorf("invalid --mount \"%s\"", mount);
        goto out;
    }
    if (!no_store) {
        if (token_file != NULL) {
            snprintf(tpath, sizeof(tpath), "%s", token_file);
        } else if (default_token_path(tpath, sizeof(tpath)) != 0) {
            goto out;
        }
    }
    status = KMS_CLI_EXIT_FAIL;
    /* where the token goes is checked before the server issues one: a token that cannot be
       stored is a live credential nobody holds, until its TTL runs out */
    if (!no_store && kms_cli_fd_path(tpath) < 0) {
        char target[4096];
        bool special;
        if (make_parent(tpath) != 0 ||
            kms_cli_out_target(tpath, target, sizeof(target), &special) != 0) {
            goto out;
        }
    }
    if (jwt_file != NULL) {
        if (kms_cli_read_file(jwt_file, JWT_MAX, &jbuf, &jlen) != 0) {
            if (strcmp(jwt_file, DEFAULT_K8S_JWT_FILE) == 0) {
                kms_cli_hintf("that is the projected ServiceAccount token of a pod (the product "
                              "doc's bao-token volume); elsewhere give the JWT with --jwt-file "
                              "FILE (- for stdin) or --jwt TOKEN");
            }
            goto out;
        }
    } else {
        jlen = strlen(jwt);
        jbuf = (uint8_t *)strdup(jwt);
        if (jbuf == NULL) {
            kms_cli_errorf("out of memory");
            goto out;
        }
    }
    while (jlen > 0 && (jbuf[jlen - 1] == '\n' || jbuf[jlen - 1] == '\r' || jbuf[jlen - 1] == ' ' ||
                        jbuf[jlen - 1] == '\t')) {
        jbuf[--jlen] = '\0';
    }
    if (jlen == 0) {
        kms_cli_errorf("the JWT is empty");
        goto out;
    }
    if ((status = kms_cli_session_open(&g, 0, &s)) != 0) {
        goto out;
    }
    status = KMS_CLI_EXIT_FAIL;
    req = json_pack("{s:s, s:s}", "role", role, "jwt", (const char *)jbuf);
    if (req == NULL) {
        kms_cli_errorf("out of memory");
        goto out;
    }
    size_t ml = strlen(mount);
    while (ml > 0 && mount[ml - 1] == '/') {
        ml--;
    }
    snprintf(path, sizeof(path), "auth/%.*s/login", (int)ml, mount);
    if (kms_cli_call(&s, "POST", path, req, 0, &resp) != 0) {
        goto out;
    }
    json_t *auth = json_object_get(resp, "auth");
    const char *tok = json_string_value(json_object_get(auth, "client_token"));
    if (tok == NULL || tok[0] == '\0') {
        kms_cli_errorf("the server's answer has no auth.client_token");
        goto out;
    }
    if (no_store) {
        printf("%s\n", tok);
        status = KMS_CLI_EXIT_OK;
        goto out;
    }
    if (make_parent(tpath) != 0 || kms_cli_write_file(tpath, tok, strlen(tok)) != 0) {
        goto out;
    }
    json_object_del(auth, "client_token");
    if (s.fmt != KMS_CLI_FMT_TABLE) {
        json_object_set_new(auth, "token_file", json_string(tpath));
        status = kms_cli_print_value(s.fmt, auth) == 0 ? KMS_CLI_EXIT_OK : KMS_CLI_EXIT_FAIL;
        goto out;
    }
    char ttl[64], pol[1024], tpol[1024], ipol[1024];
    human_ttl(json_integer_value(json_object_get(auth, "lease_duration")), ttl, sizeof(ttl));
    policy_list(json_object_get(auth, "policies"), pol, sizeof(pol));
    policy_list(json_object_get(auth, "token_policies"), tpol, sizeof(tpol));
    policy_list(json_object_get(auth, "identity_policies"), ipol, sizeof(ipol));
    printf("Success! You are now authenticated. The token was stored in %s\n"
           "and is used by kmsctl until it expires.\n\n",
           kms_cli_esc(tpath));
    struct kms_cli_table *t = kms_cli_table_create(2);
    const char *rows[][2] = {
        {"Key", "Value"},
        {"---", "-----"},
        {"token_accessor", json_string_value(json_object_get(auth, "accessor"))},
        {"token_duration", ttl},
        {"token_renewable", json_is_true(json_object_get(auth, "renewable")) ? "true" : "false"},
        {"token_policies", tpol},
        {"identity_policies", ipol},
        {"policies", pol},
    };
    for (size_t i = 0; t != NULL && i < sizeof(rows) / sizeof(rows[0]); i++) {
        (void)kms_cli_table_add(t, rows[i]);
    }
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(auth, "metadata"), k, v)
    {
        char key[256];
        snprintf(key, sizeof(key), "token_meta_%s", k);
        const char *row[2] = {key, json_is_string(v) ? json_string_value(v) : ""};
        if (t != NULL) {
            (void)kms_cli_table_add(t, row);
        }
    }
    if (t != NULL) {
        kms_cli_table_print(t, stdout);
    }
    kms_cli_table_destroy(&t);
    status = KMS_CLI_EXIT_OK;
out:
    json_decref(req);
    json_decref(resp);
    if (jbuf != NULL) {
        kms_free_wipe((void **)&jbuf, jlen + 1);
    }
    kms_cli_session_close(&s);
    return status;
}
