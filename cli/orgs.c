/*
 * orgs.c - `kmsctl orgs …`: organizations, the OpenBao namespaces directly under the root
 * namespace that hold the projects and their KMSKeys: create (the namespace and its transit/
 * engine), list, describe/get, delete.
 *
 * Design notes:
 * - Every verb talks to the root namespace, whose children the organizations are. The
 *   KMS_NAMESPACE/VAULT_NAMESPACE/BAO_NAMESPACE a user exports for the keys commands are
 *   ignored here (they would make `orgs list` list that organization's children), and an
 *   explicit -n is refused rather than guessed at.
 * - kmsd answers a POST of an existing namespace with 200 and a DELETE of a missing one with
 *   204, so each verb reads the namespace first: that is how `create` can say "already
 *   exists" and `delete` "not found". `create` still mounts transit/ in an existing
 *   organization that lacks it (one made with curl), which makes it safe to re-run.
 * - The calls here go through org_call rather than kms_cli_call: a 403 on sys/namespaces has
 *   one cause worth naming (the token is not a root-namespace token allowed there), which the
 *   generic `kmsctl login` hint would hide.
 */
#include "cli/cli.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ORGS_USAGE                                                                                 \
    "Usage: kmsctl orgs <verb> [options]\n\n"                                                      \
    "  create ORG                 create the organization (an OpenBao namespace) and\n"            \
    "                             mount its transit/ engine; an existing one is kept\n"            \
    "  list                       the organizations\n"                                             \
    "  describe ORG (or get ORG)  one organization\n"                                              \
    "  delete ORG [--yes]         delete it with every KMSKey and key in it; asks on a\n"          \
    "                             terminal, needs --yes otherwise\n\n"                             \
    "Organizations are the namespaces of the root namespace: these verbs ignore\n"                 \
    "KMS_NAMESPACE and need a root-namespace token with sudo on sys/namespaces and\n"              \
    "sys/mounts (the root token of `kmsd server -dev`). Names are DNS-1123 labels:\n"              \
    "lower-case letters, digits and '-', starting and ending with a letter or digit,\n"            \
    "at most 63 characters.\n"                                                                     \
    "Global options: --addr URL, --token T, -o table|json|yaml, --ca-cert FILE,\n"                 \
    "  --client-cert FILE --client-key FILE, --tls-skip-verify. See docs/cli.md.\n"

/* One invocation: the options every verb accepts and the ORG argument. */
struct orgs_args {
    struct kms_cli_global g;
    bool yes;
    const char *org; /* NULL for list */
};

/* Whether an organization's transit/ engine is mounted, as far as the token may tell. */
enum transit_state { TRANSIT_UNKNOWN, TRANSIT_ABSENT, TRANSIT_MOUNTED };

/* ---- calls ------------------------------------------------------------------------------- */

/*
 * One API call (`path` relative to /v1/). Returns the HTTP status with *resp the parsed body
 * (NULL when empty; caller decrefs) and msg the server's first error for a status >= 300, or
 * -1 after printing a transport error.
 */
static int org_call(struct kms_cli_session *s, const char *method, const char *path,
                    const json_t *req, json_t **resp, char *msg, size_t n)
{
    struct kms_cli_resp r;
    char full[512], err[512];
    char *body = NULL;
    int rc = -1;

    *resp = NULL;
    msg[0] = '\0';
    memset(&r, 0, sizeof(r));
    snprintf(full, sizeof(full), "/v1/%s", path);
    if (req != NULL && (body = json_dumps(req, JSON_COMPACT)) == NULL) {
        kms_cli_errorf("out of memory");
        goto out;
    }
    if (kms_cli_http_do(s->http, method, full, body, body != NULL ? strlen(body) : 0, &r, err,
                        sizeof(err)) != 0) {
        kms_cli_errorf("%s", err);
        kms_cli_hintf("is kmsd running and reachable at %s? Set --addr or KMS_ADDR (TLS: "
                      "--ca-cert or KMS_CACERT)",
                      s->addr);
        goto out;
    }
    rc = r.status;
    *resp = r.len > 0 ? json_loadb(r.body, r.len, 0, NULL) : NULL;
    if (rc >= 300) {
        kms_cli_api_error(&r, msg, n);
    }
out:
    free(body);
    kms_cli_resp_dispose(&r);
    return rc;
}

/* The 403 of any call here: what was refused and which token would be allowed. */
static void denied(const struct kms_cli_session *s, const char *action, const char *org,
                   const char *method, const char *path)
{
    if (org != NULL) {
        kms_cli_errorf("permission denied: cannot %s organization %s on %s (%s %s)", action, org,
                       s->addr, method, path);
    } else {
        kms_cli_errorf("permission denied: cannot %s organizations on %s (%s %s)", action, s->addr,
                       method, path);
    }
    kms_cli_hintf("organizations are namespaces of the root namespace: this needs a valid "
                  "root-namespace token with sudo on sys/namespaces/* and sys/mounts/* (such as "
                  "the root token `kmsd server -dev` prints); give it with --token or KMS_TOKEN");
}

/*
 * Vault's bare 404 ({"errors":[]}, or no body): the namespace, or every namespace, is not
 * there. A 404 with a message is something else, such as `no handler for route
 * "v1/sys/namespaces/"` when --addr carries a path: not "no organizations".
 */
static bool bare_404(int st, const json_t *resp)
{
    return st == 404 && json_array_size(json_object_get(resp, "errors")) == 0;
}

static void org_not_found(const struct kms_cli_session *s, const char *org)
{
    kms_cli_errorf("organization %s not found on %s", org, s->addr);
    kms_cli_hintf("list the organizations with `kmsctl orgs list`, or create this one with "
                  "`kmsctl orgs create %s`",
                  org);
}

/* A session on the root namespace (see the design notes). Returns an exit status. */
static int open_root(const struct orgs_args *a, struct kms_cli_session *s)
{
    if (a->g.ns != NULL) {
        memset(s, 0, sizeof(*s));
        kms_cli_errorf("-n/--namespace does not apply to `kmsctl orgs`: organizations are the "
                       "namespaces of the root namespace (drop -n %s)",
                       a->g.ns);
        return KMS_CLI_EXIT_USAGE;
    }
    unsetenv("KMS_NAMESPACE");
    unsetenv("VAULT_NAMESPACE");
    unsetenv("BAO_NAMESPACE");
    return kms_cli_session_open(&a->g, KMS_CLI_NEED_TOKEN, s);
}

/*
 * GET sys/namespaces/ORG: 0 with *ns (caller decrefs) when it exists, 1 when it does not,
 * -1 after printing.
 */
static int read_org(struct kms_cli_session *root, const char *action, const char *org, json_t **ns)
{
    char path[128], msg[512];
    json_t *resp = NULL;
    int rc = -1;

    *ns = NULL;
    snprintf(path, sizeof(path), "sys/namespaces/%s", org);
    int st = org_call(root, "GET", path, NULL, &resp, msg, sizeof(msg));
    if (st == 200 && json_is_object(json_object_get(resp, "data"))) {
        *ns = json_incref(json_object_get(resp, "data"));
        rc = 0;
    } else if (bare_404(st, resp)) {
        rc = 1;
    } else if (st == 403) {
        denied(root, action, org, "GET", path);
    } else if (st >= 0) {
        kms_cli_errorf("cannot read organization %s: %s", org,
                       msg[0] ? msg : "the server's answer has no data");
    }
    json_decref(resp);
    return rc;
}

/*
 * Look for the organization's transit/ engine (GET sys/mounts in it) and, when `mount` is
 * non-NULL and it is missing, mount it (*mount then says whether this call did). Returns 0
 * with *state, or -1 after printing (a refusal while listing only leaves *state unknown
 * unless `mount` is given).
 */
static int org_transit(const struct orgs_args *a, const char *org, bool *mount,
                       enum transit_state *state)
{
    struct kms_cli_global g = a->g;
    struct kms_cli_session s;
    json_t *resp = NULL, *req = NULL;
    char msg[512];
    int rc = -1;

    *state = TRANSIT_UNKNOWN;
    if (mount != NULL) {
        *mount = false;
    }
    g.ns = org;
    if (kms_cli_session_open(&g, KMS_CLI_NEED_TOKEN, &s) != KMS_CLI_EXIT_OK) {
        goto out;
    }
    int st = org_call(&s, "GET", "sys/mounts", NULL, &resp, msg, sizeof(msg));
    if (st == 200) {
        const json_t *data = json_object_get(resp, "data");
        const json_t *m = json_object_get(data != NULL ? data : resp, "transit/");
        *state = m != NULL ? TRANSIT_MOUNTED : TRANSIT_ABSENT;
    } else if (st == 403 && mount != NULL) {
        denied(&s, "inspect the transit/ engine of", org, "GET", "sys/mounts");
        goto out;
    } else if (st >= 0 && st != 403) {
        kms_cli_errorf("cannot list the engines of organization %s: %s", org, msg);
        goto out;
    } else if (st < 0) {
        goto out;
    }
    if (mount != NULL && *state == TRANSIT_ABSENT) {
        json_decref(resp);
        req = json_pack("{s:s, s:s}", "type", "transit", "description",
                        "organization transit engine (kmsctl orgs create)");
        st = org_call(&s, "POST", "sys/mounts/transit", req, &resp, msg, sizeof(msg));
        if (st == 403) {
            denied(&s, "mount the transit/ engine of", org, "POST", "sys/mounts/transit");
            goto out;
        }
        /* "path is already in use": someone mounted it in between, which is what we want */
        if (st >= 300 && strstr(msg, "already in use") == NULL) {
            kms_cli_errorf("cannot mount transit/ in organization %s: %s", org, msg);
            goto out;
        }
        if (st < 0) {
            goto out;
        }
        *mount = st < 300;
        *state = TRANSIT_MOUNTED;
    }
    rc = 0;
out:
    json_decref(req);
    json_decref(resp);
    kms_cli_session_close(&s);
    return rc;
}

/* ---- output ------------------------------------------------------------------------------ */

/* The object -o json|yaml prints for one organization (caller decrefs). */
static json_t *org_object(const char *name, const json_t *ns, enum transit_state transit)
{
    const json_t *meta = json_object_get(ns, "custom_metadata");
    json_t *o = json_pack("{s:s, s:s?, s:s?, s:O?}", "name", name, "id",
                          json_string_value(json_object_get(ns, "id")), "path",
                          json_string_value(json_object_get(ns, "path")), "custom_metadata",
                          json_is_object(meta) ? meta : NULL);
    if (o != NULL) {
        json_object_set_new(o, "transit_mounted",
                            transit == TRANSIT_UNKNOWN ? json_null()
                                                       : json_boolean(transit == TRANSIT_MOUNTED));
    }
    return o;
}

static int print_object(enum kms_cli_fmt fmt, json_t *o)
{
    if (o == NULL) {
        kms_cli_errorf("out of memory");
        return KMS_CLI_EXIT_FAIL;
    }
    return kms_cli_print_value(fmt, o) == 0 ? KMS_CLI_EXIT_OK : KMS_CLI_EXIT_FAIL;
}

/*
 * -o json|yaml: print the organization and return the exit status. Returns -1 for table
 * output, which the verb prints itself.
 */
static int print_structured(const struct kms_cli_session *root, const char *org, const json_t *ns,
                            enum transit_state transit)
{
    if (root->fmt == KMS_CLI_FMT_TABLE) {
        return -1;
    }
    json_t *o = org_object(org, ns, transit);
    int status = print_object(root->fmt, o);
    json_decref(o);
    return status;
}

static const char *transit_cell(enum transit_state t)
{
    return t == TRANSIT_MOUNTED ? "mounted" : t == TRANSIT_ABSENT ? "not mounted" : "unknown";
}

/* ---- verbs ------------------------------------------------------------------------------- */

static int cmd_create(struct orgs_args *a)
{
    struct kms_cli_session root;
    json_t *ns = NULL, *resp = NULL;
    enum transit_state transit;
    char path[128], msg[512];
    int status;

    if ((status = open_root(a, &root)) != KMS_CLI_EXIT_OK) {
        goto out;
    }
    status = KMS_CLI_EXIT_FAIL;
    int found = read_org(&root, "create", a->org, &ns);
    if (found < 0) {
        goto out;
    }
    if (found == 1) {
        snprintf(path, sizeof(path), "sys/namespaces/%s", a->org);
        int st = org_call(&root, "POST", path, NULL, &resp, msg, sizeof(msg));
        if (st == 403) {
            denied(&root, "create", a->org, "POST", path);
        } else if (st >= 300) {
            kms_cli_errorf("cannot create organization %s: %s", a->org, msg);
        }
        if (st != 200) {
            goto out;
        }
        ns = json_incref(json_object_get(resp, "data"));
    }
    bool mounted_now = false;
    if (org_transit(a, a->org, &mounted_now, &transit) != 0) {
        if (found == 1) {
            kms_cli_hintf("the organization %s exists now; `kmsctl orgs create %s` again with a "
                          "token allowed to mount engines finishes it",
                          a->org, a->org);
        }
        goto out;
    }
    if ((status = print_structured(&root, a->org, ns, transit)) >= 0) {
        goto out;
    }
    if (found == 1) {
        printf("Created organization %s (OpenBao namespace %s/ with its transit/ engine)\n", a->org,
               a->org);
    } else if (mounted_now) {
        /* a namespace made another way (curl, bao namespace create) gets its engine now */
        printf("Organization %s already exists (OpenBao namespace %s/); mounted its transit/ "
               "engine\n",
               a->org, a->org);
    } else {
        printf("Organization %s already exists (OpenBao namespace %s/ with its transit/ engine)\n",
               a->org, a->org);
    }
    printf("Next: kmsctl -n %s --project PROJECT keys create NAME   (or export "
           "KMS_NAMESPACE=%s)\n",
           a->org, a->org);
    status = KMS_CLI_EXIT_OK;
out:
    json_decref(resp);
    json_decref(ns);
    kms_cli_session_close(&root);
    return status;
}

static int cmd_list(struct orgs_args *a)
{
    struct kms_cli_session root;
    struct kms_cli_table *t = NULL;
    json_t *resp = NULL, *items = NULL;
    char msg[512];
    size_t i;
    json_t *k;
    int status;

    if ((status = open_root(a, &root)) != KMS_CLI_EXIT_OK) {
        goto out;
    }
    status = KMS_CLI_EXIT_FAIL;
    int st = org_call(&root, "LIST", "sys/namespaces", NULL, &resp, msg, sizeof(msg));
    if (st == 403) {
        denied(&root, "list", NULL, "LIST", "sys/namespaces");
    } else if (st >= 300 && !bare_404(st, resp)) {
        kms_cli_errorf("cannot list the organizations: %s", msg);
    }
    if (st < 0 || (st >= 300 && !bare_404(st, resp))) {
        goto out;
    }
    const json_t *data = json_object_get(resp, "data");
    const json_t *info = json_object_get(data, "key_info");
    items = json_array();
    t = kms_cli_table_create(3);
    const char *hdr[] = {"NAME", "ID", "TRANSIT"};
    if (items == NULL || t == NULL || kms_cli_table_add(t, hdr) != 0) {
        kms_cli_errorf("out of memory");
        goto out;
    }
    /* kmsd lists the names sorted, each with a trailing '/' */
    json_array_foreach(json_object_get(data, "keys"), i, k)
    {
        const char *key = json_string_value(k);
        char name[256];
        enum transit_state transit;
        if (key == NULL || snprintf(name, sizeof(name), "%s", key) >= (int)sizeof(name)) {
            continue;
        }
        name[strcspn(name, "/")] = '\0';
        const json_t *ns = json_object_get(info, key);
        if (org_transit(a, name, NULL, &transit) != 0) {
            goto out;
        }
        const char *row[] = {kms_cli_esc(name),
                             kms_cli_esc(json_string_value(json_object_get(ns, "id"))),
                             transit_cell(transit)};
        if (json_array_append_new(items, org_object(name, ns, transit)) != 0 ||
            kms_cli_table_add(t, row) != 0) {
            kms_cli_errorf("out of memory");
            goto out;
        }
    }
    if (root.fmt != KMS_CLI_FMT_TABLE) {
        status = print_object(root.fmt, items);
        goto out;
    }
    if (json_array_size(items) == 0) {
        printf("No organizations. Create one with `kmsctl orgs create NAME`.\n");
    } else {
        kms_cli_table_print(t, stdout);
    }
    status = KMS_CLI_EXIT_OK;
out:
    kms_cli_table_destroy(&t);
    json_decref(items);
    json_decref(resp);
    kms_cli_session_close(&root);
    return status;
}

static int cmd_describe(struct orgs_args *a)
{
    struct kms_cli_session root;
    json_t *ns = NULL;
    enum transit_state transit;
    int status;

    if ((status = open_root(a, &root)) != KMS_CLI_EXIT_OK) {
        goto out;
    }
    status = KMS_CLI_EXIT_FAIL;
    int found = read_org(&root, "read", a->org, &ns);
    if (found == 1) {
        org_not_found(&root, a->org);
    }
    if (found != 0 || org_transit(a, a->org, NULL, &transit) != 0) {
        goto out;
    }
    if ((status = print_structured(&root, a->org, ns, transit)) >= 0) {
        goto out;
    }
    printf("%-17s%s\n", "Name:", a->org);
    printf("%-17s%s\n",
           "Namespace path:", kms_cli_esc(json_string_value(json_object_get(ns, "path"))));
    printf("%-17s%s\n", "Namespace ID:", kms_cli_esc(json_string_value(json_object_get(ns, "id"))));
    printf("%-17s%s\n", "Transit engine:",
           transit == TRANSIT_MOUNTED  ? "transit/ (mounted)"
           : transit == TRANSIT_ABSENT ? "not mounted (`kmsctl orgs create` or the first "
                                         "`keys create` mounts it)"
                                       : "unknown (the token may not list its engines)");
    printf("%-17skmsctl -n %s --project PROJECT keys list\n", "KMSKeys:", a->org);
    status = KMS_CLI_EXIT_OK;
out:
    json_decref(ns);
    kms_cli_session_close(&root);
    return status;
}

/* On a terminal: the organization's name typed back. True when it matches. */
static bool confirm_on_terminal(const char *org)
{
    char line[256];
    fprintf(stderr,
            "Delete organization %s with every project, KMSKey and Transit key in it? This "
            "cannot be undone.\nType the organization's name to confirm: ",
            org);
    fflush(stderr);
    if (fgets(line, sizeof(line), stdin) == NULL) {
        return false;
    }
    line[strcspn(line, "\r\n")] = '\0';
    return strcmp(line, org) == 0;
}

static int cmd_delete(struct orgs_args *a)
{
    struct kms_cli_session root;
    json_t *ns = NULL, *resp = NULL;
    char path[128], msg[512];
    int status;

    memset(&root, 0, sizeof(root));
    /* without a terminal to ask on, only --yes confirms: a script must say so */
    if (!a->yes && !isatty(STDIN_FILENO)) {
        fprintf(stderr,
                "Delete organization %s with every KMSKey and key in it? Re-run with --yes to "
                "confirm.\n",
                a->org);
        kms_cli_errorf("not confirmed");
        status = KMS_CLI_EXIT_USAGE;
        goto out;
    }
    if ((status = open_root(a, &root)) != KMS_CLI_EXIT_OK) {
        goto out;
    }
    status = KMS_CLI_EXIT_FAIL;
    int found = read_org(&root, "delete", a->org, &ns);
    if (found == 1) {
        org_not_found(&root, a->org);
    }
    if (found != 0) {
        goto out;
    }
    if (!a->yes && !confirm_on_terminal(a->org)) {
        kms_cli_errorf("not confirmed: organization %s is kept", a->org);
        status = KMS_CLI_EXIT_USAGE;
        goto out;
    }
    snprintf(path, sizeof(path), "sys/namespaces/%s", a->org);
    int st = org_call(&root, "DELETE", path, NULL, &resp, msg, sizeof(msg));
    if (st == 403) {
        denied(&root, "delete", a->org, "DELETE", path);
    } else if (st >= 300) {
        kms_cli_errorf("cannot delete organization %s: %s", a->org, msg);
        if (strstr(msg, "child namespaces") != NULL) {
            kms_cli_hintf("delete its child namespaces first (LIST %s/v1/%s/sys/namespaces)",
                          root.addr, a->org);
        }
    }
    if (st < 0 || st >= 300) {
        goto out;
    }
    if ((status = print_structured(&root, a->org, ns, TRANSIT_UNKNOWN)) >= 0) {
        goto out;
    }
    printf("Deleted organization %s with its KMSKeys, Transit keys and policies\n", a->org);
    status = KMS_CLI_EXIT_OK;
out:
    json_decref(resp);
    json_decref(ns);
    kms_cli_session_close(&root);
    return status;
}

/* ---- dispatch ---------------------------------------------------------------------------- */

/*
 * Names OpenBao keeps for itself (kmsd refuses to create them, and "root" reads back as the
 * root namespace). True after printing.
 */
static bool reserved(const char *org)
{
    static const char *const names[] = {"root", "sys", "audit", "auth", "cubbyhole", "identity"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(org, names[i]) == 0) {
            kms_cli_errorf("invalid organization name \"%s\": reserved by OpenBao (root, sys, "
                           "audit, auth, cubbyhole and identity are)",
                           org);
            return true;
        }
    }
    return false;
}

static const struct orgs_verb {
    const char *name;
    const char *alias;
    const char *args; /* the usage line after the verb; "" for none */
    int (*run)(struct orgs_args *a);
} verbs[] = {
    {"create", NULL, "ORG", cmd_create},
    {"list", "ls", "", cmd_list},
    {"describe", "get", "ORG", cmd_describe},
    {"delete", "rm", "ORG [--yes]", cmd_delete},
};

int kms_cli_orgs(int argc, char **argv)
{
    struct orgs_args a;
    const char *pos[2];
    char prog[64];
    size_t npos = 0;
    const struct orgs_verb *v = NULL;

    int vi = kms_cli_find_verb(argc, argv);
    if (vi >= argc) {
        bool help = false;
        for (int i = 1; i < argc; i++) {
            help = help || strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0;
        }
        fputs(ORGS_USAGE, help ? stdout : stderr);
        return help ? KMS_CLI_EXIT_OK : KMS_CLI_EXIT_USAGE;
    }
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
        if (strcmp(argv[vi], verbs[i].name) == 0 ||
            (verbs[i].alias != NULL && strcmp(argv[vi], verbs[i].alias) == 0)) {
            v = &verbs[i];
        }
    }
    if (v == NULL) {
        fprintf(stderr, "Error: unknown command \"%s\" for \"kmsctl orgs\"\n\n%s",
                kms_cli_esc(argv[vi]), ORGS_USAGE);
        return KMS_CLI_EXIT_USAGE;
    }
    /* drop the group and the verb, keep every option around them */
    memmove(&argv[vi], &argv[vi + 1], (size_t)(argc - vi - 1) * sizeof(argv[0]));
    argc -= 2;
    argv++;
    memset(&a, 0, sizeof(a));
    snprintf(prog, sizeof(prog), "kmsctl orgs %s", v->name);
    const struct kms_cli_opt opts[] = {
        KMS_CLI_GLOBAL_OPTS(&a.g),
        {"yes", "y", NULL, &a.yes, NULL, NULL, 0},
        {NULL, NULL, NULL, NULL, NULL, NULL, 0},
    };
    size_t want = v->args[0] != '\0' ? 1 : 0;
    if (kms_cli_parse(prog, argc, argv, opts, pos, 2, &npos) != 0) {
        fprintf(stderr, "Usage: %s %s\n", prog, v->args);
        return KMS_CLI_EXIT_USAGE;
    }
    if (a.g.help) {
        printf("Usage: %s %s\n\n%s", prog, v->args, ORGS_USAGE);
        return KMS_CLI_EXIT_OK;
    }
    if (npos != want) {
        fprintf(stderr, "Error: %s takes %s\nUsage: %s %s\n", prog,
                want ? "one argument, the organization's name" : "no argument", prog, v->args);
        return KMS_CLI_EXIT_USAGE;
    }
    if (a.yes && v->run != cmd_delete) {
        kms_cli_errorf("--yes is an option of `kmsctl orgs delete` only");
        return KMS_CLI_EXIT_USAGE;
    }
    a.org = want ? pos[0] : NULL;
    if (a.org != NULL && (!kms_cli_check_name("organization name", a.org) || reserved(a.org))) {
        return KMS_CLI_EXIT_USAGE;
    }
    return v->run(&a);
}
