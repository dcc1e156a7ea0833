/*
 * audit.c - `kmsctl audit verify` and `kmsctl audit list`.
 *
 * list reads local files (--file, else $KMS_AUDIT_FILE; rotated copies next to the file
 * included) or, with no file given and KMS_ADDR/VAULT_ADDR plus a token set, asks the server
 * (GET /v1/sys/audit/events, a sudo path). Both paths run the same filter code
 * (audit/query.c), so local and remote answers agree.
 */
#include "cli/cli.h"
#include "audit/audit.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILES 64

static void list_usage(FILE *f)
{
    fprintf(f, "Usage: kmsctl audit list [options]\n\n"
               "Operations recorded in the audit log, oldest first (one per request).\n\n"
               "  --resource=KIND    KMSKey (key operations), Token, Mount, Namespace, Audit, ...\n"
               "  --key=NAME         one KMSKey: its KMSKey operations and its Transit key's\n"
               "                     (<org>-<project>-NAME) together, given --project or\n"
               "                     $KMS_PROJECT; also PROJECT/NAME or the Transit name\n"
               "  --project=P        the project of --key (default $KMS_PROJECT)\n"
               "  --op=OP            encrypt, decrypt, rewrap, datakey, rotate, create, delete,\n"
               "                     set-min-decryption-version, config, read, list, login, ...\n"
               "  --subject=WHO      the caller (OIDC/JWT subject or token display name)\n"
               "  --result=R         allowed | denied | error\n"
               "  -n, --namespace=NS one namespace (organization); \"root\" for the root one\n"
               "                     (also --org; $KMS_NAMESPACE is not a filter: the query\n"
               "                     goes to the root namespace, where sys/audit/events is)\n"
               "  --since=T          24h, 90m, 7d (that long ago), RFC 3339, or epoch seconds\n"
               "  --until=T          same forms; exclusive\n"
               "  --limit=N          newest N events (default 500)\n"
               "  -o, --output=FMT   table (default), json or yaml\n"
               "  --file=PATH        a local audit file (with its rotated copies) or directory;\n"
               "                     default $KMS_AUDIT_FILE; repeated, each is a log of its\n"
               "                     own (HA replicas) and the events are merged by time\n\n"
               "Without --file or $KMS_AUDIT_FILE, the events come from the server at\n"
               "--addr or $KMS_ADDR (or $VAULT_ADDR) with --token or $KMS_TOKEN (or\n"
               "$VAULT_TOKEN, the login token); that needs sudo on sys/audit/events. The global\n"
               "options (--addr, --token, --ca-cert, ...) are accepted anywhere on the line.\n");
}

static void audit_usage(FILE *f)
{
    fprintf(f, "Usage: kmsctl audit <verify|list> ...\n\n"
               "  verify FILE|DIR...   check the log's hash chain (see --help)\n"
               "  list [options]       list recorded operations (see --help)\n");
}

struct list_args {
    const char *resource, *key, *op, *subject, *result, *ns, *org, *since, *until, *limit, *output;
    const char *project;
    const char *files[MAX_FILES];
    size_t nfiles;
    bool help;
};

static void add_query(char *q, size_t n, const char *name, const char *val)
{
    char enc[1024];
    size_t o = strlen(q);
    if (val == NULL || o >= n) {
        return;
    }
    kms_cli_urlencode(val, enc, sizeof(enc));
    snprintf(q + o, n - o, "%s%s=%s", o ? "&" : "?", name, enc);
}

/*
 * One key's whole history: with a project known (--project, else KMS_PROJECT), a KMSKey name
 * becomes "<project>/<name>", which audit/query.c matches against both the KMSKey lines and
 * the Transit key "<org>-<project>-<name>" of each line's organization. A Transit name
 * (already "<org>-<project>-…") or an explicit "p/name" is passed as it is.
 */
static int key_filter(struct list_args *a, char *buf, size_t n)
{
    const char *project = a->project;
    if (project == NULL && getenv("KMS_PROJECT") != NULL && getenv("KMS_PROJECT")[0] != '\0') {
        project = getenv("KMS_PROJECT");
    }
    if (a->key == NULL || project == NULL || strchr(a->key, '/') != NULL) {
        return 0;
    }
    if (!kms_cli_check_name("project name", project)) {
        return -1;
    }
    const char *org = a->ns != NULL ? a->ns : getenv("KMS_NAMESPACE");
    if (org != NULL && org[0] != '\0') {
        char prefix[600];
        size_t ol = strlen(org);
        while (ol > 0 && org[ol - 1] == '/') {
            ol--;
        }
        snprintf(prefix, sizeof(prefix), "%.*s-%s-", (int)ol, org, project);
        for (char *p = prefix; *p != '\0'; p++) {
            *p = *p == '/' ? '-' : *p;
        }
        if (strncmp(a->key, prefix, strlen(prefix)) == 0) {
            return 0; /* the Transit name */
        }
    }
    if ((size_t)snprintf(buf, n, "%s/%s", project, a->key) >= n) {
        kms_cli_errorf("--key too long");
        return -1;
    }
    a->key = buf;
    return 0;
}

static int remote_events(struct kms_cli_http *h, const struct list_args *a, int64_t since,
                         int64_t until, json_t **events, bool *truncated)
{
    char q[4096] = "";
    char path[4200];
    char num[32];
    char err[512];
    struct kms_cli_resp resp;
    int rc = -1;

    add_query(q, sizeof(q), "resource", a->resource);
    add_query(q, sizeof(q), "key", a->key);
    add_query(q, sizeof(q), "op", a->op);
    add_query(q, sizeof(q), "subject", a->subject);
    add_query(q, sizeof(q), "result", a->result);
    add_query(q, sizeof(q), "namespace", a->ns);
    if (since != 0) {
        snprintf(num, sizeof(num), "%lld", (long long)since);
        add_query(q, sizeof(q), "since", num);
    }
    if (until != 0) {
        snprintf(num, sizeof(num), "%lld", (long long)until);
        add_query(q, sizeof(q), "until", num);
    }
    add_query(q, sizeof(q), "limit", a->limit);
    snprintf(path, sizeof(path), "/v1/sys/audit/events%s", q);
    if (kms_cli_http_do(h, "GET", path, NULL, 0, &resp, err, sizeof(err)) != 0) {
        kms_cli_errorf("%s", err);
        return -1;
    }
    if (resp.status != 200) {
        kms_cli_api_error(&resp, err, sizeof(err));
        kms_cli_errorf("the server refused the audit query: %s", err);
        if (resp.status == 403) {
            kms_cli_hintf("sys/audit/events needs a token with sudo on that path in the root "
                          "namespace; or read the log file itself with --file");
        }
        goto out;
    }
    json_t *body = json_loadb(resp.body, resp.len, 0, NULL);
    json_t *data = json_object_get(body, "data");
    json_t *ev = json_object_get(data, "events");
    if (!json_is_array(ev)) {
        json_decref(body);
        fprintf(stderr, "kmsctl: unexpected answer from the server\n");
        goto out;
    }
    *events = json_incref(ev);
    *truncated = json_is_true(json_object_get(data, "truncated"));
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(body, "warnings"), i, w)
    {
        if (json_is_string(w)) {
            fprintf(stderr, "Warning: %s\n", kms_cli_esc(json_string_value(w)));
        }
    }
    json_decref(body);
    rc = 0;
out:
    kms_cli_resp_dispose(&resp);
    return rc;
}

/* An event's "time" (RFC 3339, fraction of any length) as nanoseconds since the epoch. */
static int64_t event_time(json_t *ev)
{
    const char *t = json_string_value(json_object_get(ev, "time"));
    char whole[32];
    int64_t sec = 0, ns = 0;

    if (t == NULL || strlen(t) < 19) {
        return 0;
    }
    snprintf(whole, sizeof(whole), "%.19sZ", t);
    if (kms_audit_time_arg(whole, 0, &sec) != 0) {
        return 0;
    }
    if (t[19] == '.') {
        int64_t scale = 100000000;
        for (const char *p = t + 20; *p >= '0' && *p <= '9' && scale > 0; p++, scale /= 10) {
            ns += (*p - '0') * scale;
        }
    }
    return sec * 1000000000 + ns;
}

struct timed_event {
    int64_t t;
    size_t order; /* ties keep their order: stable */
    json_t *ev;
};

static int timed_cmp(const void *x, const void *y)
{
    const struct timed_event *a = x, *b = y;
    if (a->t != b->t) {
        return a->t < b->t ? -1 : 1;
    }
    return a->order < b->order ? -1 : a->order > b->order;
}

/*
 * The events of the local logs. One --file is one log (its rotated copies included); several
 * --file are several logs, such as the audit files of HA replicas (one chain each, docs/ha.md),
 * each read on its own and merged by time, the newest `limit` kept.
 */
static int query_logs(const struct list_args *a, const struct kms_audit_filter *f, json_t **events,
                      bool *truncated, struct kms_err *err)
{
    struct timed_event *all = NULL;
    size_t n = 0, cap = 0, limit;
    json_t *merged = NULL;
    int rc = -1;

    *events = NULL;
    *truncated = false;
    for (size_t i = 0; i < a->nfiles; i++) {
        char **paths = NULL;
        size_t npaths = 0;
        json_t *one = NULL;
        bool trunc = false;
        size_t j;
        json_t *ev;

        if (kms_audit_files_expand(&a->files[i], 1, true, &paths, &npaths, err) != 0 ||
            kms_audit_query((const char *const *)paths, npaths, f, &one, &trunc, err) != 0) {
            kms_audit_files_free(&paths, npaths);
            goto out;
        }
        kms_audit_files_free(&paths, npaths);
        *truncated = *truncated || trunc;
        json_array_foreach(one, j, ev)
        {
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 256;
                struct timed_event *na = realloc(all, ncap * sizeof(*na));
                if (na == NULL) {
                    json_decref(one);
                    kms_err_set(err, 500, "out of memory");
                    goto out;
                }
                all = na;
                cap = ncap;
            }
            all[n].t = event_time(ev);
            all[n].order = n;
            all[n].ev = json_incref(ev);
            n++;
        }
        json_decref(one);
    }
    if (n > 0) {
        qsort(all, n, sizeof(*all), timed_cmp);
    }
    limit = f->limit ? f->limit : KMS_AUDIT_LIST_DEFAULT_LIMIT;
    merged = json_array();
    if (merged == NULL) {
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    for (size_t i = n > limit ? n - limit : 0; i < n; i++) {
        json_array_append(merged, all[i].ev);
    }
    *truncated = *truncated || n > limit;
    *events = merged;
    rc = 0;
out:
    for (size_t i = 0; i < n; i++) {
        json_decref(all[i].ev);
    }
    free(all);
    return rc;
}

static int cmd_list(int argc, char **argv)
{
    struct list_args a;
    struct kms_cli_global g;
    struct kms_cli_session s;
    struct kms_audit_filter f;
    struct kms_err kerr;
    json_t *events = NULL;
    bool truncated = false;
    char **paths = NULL;
    size_t npaths = 0;
    const char *pos[1];
    size_t npos = 0;
    int64_t since = 0, until = 0;
    enum kms_cli_fmt fmt = KMS_CLI_FMT_TABLE;
    char keybuf[512];
    int64_t now;
    int32_t nsec;
    int status = KMS_CLI_EXIT_USAGE;

    memset(&a, 0, sizeof(a));
    memset(&g, 0, sizeof(g));
    memset(&s, 0, sizeof(s));
    memset(&f, 0, sizeof(f));
    const struct kms_cli_opt opts[] = {
        KMS_CLI_GLOBAL_OPTS(&g),
        {"resource", NULL, &a.resource, NULL, NULL, NULL, 0},
        {"key", NULL, &a.key, NULL, NULL, NULL, 0},
        {"op", NULL, &a.op, NULL, NULL, NULL, 0},
        {"subject", "actor", &a.subject, NULL, NULL, NULL, 0},
        {"result", NULL, &a.result, NULL, NULL, NULL, 0},
        {"org", NULL, &a.org, NULL, NULL, NULL, 0},
        {"since", NULL, &a.since, NULL, NULL, NULL, 0},
        {"until", NULL, &a.until, NULL, NULL, NULL, 0},
        {"limit", NULL, &a.limit, NULL, NULL, NULL, 0},
        {"file", NULL, NULL, NULL, a.files, &a.nfiles, MAX_FILES},
        {NULL, NULL, NULL, NULL, NULL, NULL, 0},
    };
    if (kms_cli_parse("kmsctl audit list", argc, argv, opts, pos, 0, &npos) != 0) {
        list_usage(stderr);
        goto out;
    }
    /* the global -n/--project/-o/-h are this command's filters and format */
    a.ns = a.org != NULL ? a.org : g.ns;
    a.project = g.project;
    a.output = g.output;
    a.help = g.help;
    if (a.help) {
        list_usage(stdout);
        status = KMS_CLI_EXIT_OK;
        goto out;
    }
    kms_now(&now, &nsec);
    if ((a.since != NULL && kms_audit_time_arg(a.since, now, &since) != 0) ||
        (a.until != NULL && kms_audit_time_arg(a.until, now, &until) != 0)) {
        kms_cli_errorf("--since/--until take 24h, 90m, 7d, RFC 3339 or epoch seconds");
        goto out;
    }
    /* an empty window would print an empty table as if nothing had happened in it */
    if (a.since != NULL && a.until != NULL && since >= until) {
        char from[40], to[40];
        kms_time_rfc3339(since, 0, from);
        kms_time_rfc3339(until, 0, to);
        kms_cli_errorf("--since %s (%s) is not before --until %s (%s, exclusive): no event can "
                       "match",
                       a.since, from, a.until, to);
        goto out;
    }
    if (a.result != NULL && strcmp(a.result, "allowed") != 0 && strcmp(a.result, "denied") != 0 &&
        strcmp(a.result, "error") != 0) {
        kms_cli_errorf("--result is allowed, denied or error");
        goto out;
    }
    if (kms_cli_fmt_parse(a.output, &fmt) != 0) {
        kms_cli_errorf("-o is table, json or yaml");
        goto out;
    }
    if (a.limit != NULL) {
        char *end = NULL;
        long long v = strtoll(a.limit, &end, 10);
        if (end == a.limit || *end != '\0' || v < 1 || v > KMS_AUDIT_LIST_MAX_LIMIT) {
            kms_cli_errorf("--limit is 1..%d", KMS_AUDIT_LIST_MAX_LIMIT);
            goto out;
        }
        f.limit = (size_t)v;
    }
    if (key_filter(&a, keybuf, sizeof(keybuf)) != 0) {
        goto out;
    }
    if (a.nfiles == 0 && getenv("KMS_AUDIT_FILE") != NULL && getenv("KMS_AUDIT_FILE")[0]) {
        a.files[a.nfiles++] = getenv("KMS_AUDIT_FILE");
    }
    if (a.nfiles == 0) {
        /* sys/audit/events is a root-namespace path: the organization, if any, is a filter */
        if ((status = kms_cli_session_open(&g, KMS_CLI_NEED_TOKEN | KMS_CLI_ROOT_NS, &s)) != 0) {
            kms_cli_hintf("or read a log file: --file PATH or $KMS_AUDIT_FILE");
            goto out;
        }
        status = KMS_CLI_EXIT_USAGE;
        if (remote_events(s.http, &a, since, until, &events, &truncated) != 0) {
            status = KMS_CLI_EXIT_FAIL;
            goto out;
        }
    } else {
        f.since = since;
        f.until = until;
        f.resource = a.resource;
        f.key = a.key;
        f.op = a.op;
        f.subject = a.subject;
        f.result = a.result;
        f.ns = a.ns;
        if (query_logs(&a, &f, &events, &truncated, &kerr) != 0) {
            kms_cli_errorf("%s", kerr.msg);
            status = KMS_CLI_EXIT_FAIL;
            goto out;
        }
    }
    if (fmt == KMS_CLI_FMT_JSON) {
        char *text = json_dumps(events, JSON_INDENT(2));
        printf("%s\n", text ? text : "[]");
        free(text);
    } else if (fmt == KMS_CLI_FMT_YAML) {
        /* the same array as a YAML sequence (the other commands' emitter: exact strings) */
        if (kms_cli_print_yaml(events) != 0) {
            status = KMS_CLI_EXIT_FAIL;
            goto out;
        }
    } else {
        /* subjects come from token claims: a control character must not forge a row */
        kms_cli_json_escape_strings(events);
        kms_audit_events_print_table(events, stdout);
    }
    if (truncated) {
        fprintf(stderr, "kmsctl: more events match; showing the newest %zu (raise --limit)\n",
                json_array_size(events));
    }
    status = KMS_CLI_EXIT_OK;
out:
    json_decref(events);
    kms_audit_files_free(&paths, npaths);
    kms_cli_session_close(&s);
    return status;
}

int kms_cli_audit(int argc, char **argv)
{
    /* the verb may come after global options (kmsctl --addr URL audit list) */
    int v = kms_cli_find_verb(argc, argv);
    if (v >= argc || strcmp(argv[v], "help") == 0) {
        bool help = v < argc;
        for (int i = 1; i < argc; i++) {
            help = help || strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0;
        }
        audit_usage(help ? stdout : stderr);
        return help ? KMS_CLI_EXIT_OK : KMS_CLI_EXIT_USAGE;
    }
    const char *verb = argv[v];
    memmove(&argv[v], &argv[v + 1], (size_t)(argc - v - 1) * sizeof(argv[0]));
    argc--;
    if (strcmp(verb, "verify") == 0) {
        return kms_audit_verify_command("kmsctl", argc - 1, argv + 1);
    }
    if (strcmp(verb, "list") == 0) {
        return cmd_list(argc - 1, argv + 1);
    }
    fprintf(stderr, "kmsctl audit: unknown verb \"%s\"\n", kms_cli_esc(verb));
    audit_usage(stderr);
    return KMS_CLI_EXIT_USAGE;
}
