/*
 * keys.c - `kmsctl keys …`: the KMSKey lifecycle of the product doc (`kube-dc kms keys …`)
 * over kmsd's KMSKey API (docs/kmskey.md): list, describe/get, create, rotate,
 * set-min-decryption-version, schedule-delete, cancel-delete, delete --yes.
 *
 * Output follows the product doc where it shows any (describe's header row and Status block,
 * the ROTATION cell "enabled (90d)") and kube-dc's real CLI elsewhere: the list columns, the
 * one-line confirmations of create/rotate/…, "No KMSKeys.", Ready as "True" or
 * "<status>/<reason>". `-o json|yaml` prints the KMSKey object (a KMSKeyList for list).
 */
#include "cli/cli.h"

#include <stdlib.h>
#include <string.h>

#define KEYS_USAGE                                                                                 \
    "Usage: kmsctl keys <verb> [options]\n\n"                                                      \
    "  list                                   the project's KMSKeys\n"                             \
    "  describe NAME (or get NAME)            one KMSKey and its status\n"                         \
    "  create NAME [--purpose=application|etcd|backup] [--algorithm=aes256-gcm96|\n"               \
    "         chacha20-poly1305] [--rotation=90d] [--enable-rotation]\n"                           \
    "         [--deletion-policy=retain|schedule]\n"                                               \
    "  rotate NAME                            add a key version now\n"                             \
    "  set-min-decryption-version NAME N      raise the decryption floor (irreversible)\n"         \
    "  schedule-delete NAME                   start the deletion countdown\n"                      \
    "  cancel-delete NAME                     stop it\n"                                           \
    "  delete NAME --yes                      delete the KMSKey\n\n"                               \
    "Global options: --addr URL, --token T, -n/--namespace ORG, --project P,\n"                    \
    "  -o table|json|yaml, --ca-cert FILE, --client-cert FILE --client-key FILE,\n"                \
    "  --tls-skip-verify. See docs/cli.md.\n"

#define NEED_KEYS KMS_CLI_NEED_PROJECT_TOKEN

/* ---- reading the object ------------------------------------------------------------------ */

static const char *sget(const json_t *o, const char *a, const char *b)
{
    const json_t *v = json_object_get(o, a);
    if (b != NULL) {
        v = json_object_get(v, b);
    }
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static void rotation_cell(const json_t *k, char *out, size_t n)
{
    const json_t *rot = json_object_get(json_object_get(k, "spec"), "rotation");
    const char *iv = sget(rot, "interval", NULL);
    if (!json_is_true(json_object_get(rot, "enabled"))) {
        snprintf(out, n, "disabled");
    } else if (iv != NULL) {
        snprintf(out, n, "enabled (%s)", iv);
    } else {
        snprintf(out, n, "enabled");
    }
}

static void version_cell(const json_t *k, const char *field, char *out, size_t n)
{
    const json_t *v = json_object_get(json_object_get(k, "status"), field);
    if (json_is_integer(v)) {
        snprintf(out, n, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    } else {
        snprintf(out, n, "-");
    }
}

/* The KMSKey's condition of `type`, or NULL. */
static const json_t *condition_of(const json_t *k, const char *type)
{
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(json_object_get(k, "status"), "conditions"), i, c)
    {
        const char *t = sget(c, "type", NULL);
        if (t != NULL && strcmp(t, type) == 0) {
            return c;
        }
    }
    return NULL;
}

static void ready_cell(const json_t *k, char *out, size_t n)
{
    const json_t *c = condition_of(k, "Ready");
    if (c == NULL) {
        snprintf(out, n, "-");
        return;
    }
    const char *st = sget(c, "status", NULL);
    const char *rs = sget(c, "reason", NULL);
    if (st != NULL && strcmp(st, "True") == 0) {
        snprintf(out, n, "True");
    } else if (rs != NULL && rs[0] != '\0') {
        snprintf(out, n, "%s/%s", st ? st : "Unknown", rs);
    } else {
        snprintf(out, n, "%s", st ? st : "Unknown");
    }
}

/* A server value for human-readable output: escaped, "-" when absent. */
static const char *or_dash(const char *s)
{
    return s != NULL && s[0] != '\0' ? kms_cli_esc(s) : "-";
}

/* "<org>-<project>/<name>" as kube-dc prints a KMSKey (its Kubernetes namespace and name). */
static void qualified(const struct kms_cli_session *s, const json_t *k, const char *name, char *out,
                      size_t n)
{
    const char *ns = sget(k, "metadata", "namespace");
    if (ns != NULL) {
        snprintf(out, n, "%s/%s", ns, name);
    } else {
        snprintf(out, n, "%s-%s/%s", s->org, s->project, name);
    }
}

/* The product doc's `keys describe` layout. */
static void print_describe(const json_t *k)
{
    struct kms_cli_table *t = kms_cli_table_create(5);
    const json_t *spec = json_object_get(k, "spec");
    const json_t *status = json_object_get(k, "status");
    char rot[128], ver[32], minv[32], ready[128];
    const char *hdr[] = {"NAME", "PURPOSE", "ALGORITHM", "VERSION", "ROTATION"};

    rotation_cell(k, rot, sizeof(rot));
    version_cell(k, "currentVersion", ver, sizeof(ver));
    version_cell(k, "minDecryptionVersion", minv, sizeof(minv));
    const char *row[] = {or_dash(sget(k, "metadata", "name")), or_dash(sget(spec, "purpose", NULL)),
                         or_dash(sget(spec, "algorithm", NULL)), ver, rot};
    if (t == NULL || kms_cli_table_add(t, hdr) != 0 || kms_cli_table_add(t, row) != 0) {
        kms_cli_errorf("out of memory");
        kms_cli_table_destroy(&t);
        return;
    }
    kms_cli_table_print(t, stdout);
    kms_cli_table_destroy(&t);
    printf("\nStatus:\n");
    printf("  %-21s%s\n", "KeyId:", or_dash(sget(status, "keyId", NULL)));
    printf("  %-21s%s\n", "Current version:", ver);
    printf("  %-21s%s\n", "Min decryption ver:", minv);
    printf("  %-21s%s\n", "Last rotated:", or_dash(sget(status, "lastRotatedTime", NULL)));
    printf("  %-21s%s\n", "Next rotation:", or_dash(sget(status, "nextRotationTime", NULL)));
    /* beyond the product doc's five lines only when something needs attention */
    if (sget(status, "scheduledDeletion", NULL) != NULL) {
        printf("  %-21s%s\n",
               "Scheduled deletion:", or_dash(sget(status, "scheduledDeletion", NULL)));
    }
    ready_cell(k, ready, sizeof(ready));
    if (strcmp(ready, "True") != 0) {
        printf("  %-21s%s\n", "Ready:", kms_cli_esc(ready));
    }
    /* a root token changed the key's latches (exportable, plaintext backup, deletion) */
    const json_t *prot = condition_of(k, "Protected");
    const char *pst = sget(prot, "status", NULL);
    if (pst != NULL && strcmp(pst, "False") == 0) {
        printf("  %-21sFalse (%s)\n", "Protected:", or_dash(sget(prot, "message", NULL)));
    }
}

/* GET one KMSKey's object (the response's data). Returns 0, or the kms_cli_call status. */
static int get_key(struct kms_cli_session *s, const char *name, int quiet, json_t **out)
{
    char path[256];
    json_t *resp = NULL;
    snprintf(path, sizeof(path), "kms/keys/%s/%s", s->project, name);
    int rc = kms_cli_call(s, "GET", path, NULL, quiet, &resp);
    *out = rc == 0 ? json_incref(json_object_get(resp, "data")) : NULL;
    json_decref(resp);
    if (rc == 0 && *out == NULL) {
        kms_cli_errorf("the server's answer has no data");
        rc = -1;
    }
    return rc;
}

/* ---- verbs ------------------------------------------------------------------------------- */

/* Parse a verb's options (global + extra) with exactly npos_want positional arguments. */
static int parse_verb(const char *prog, int argc, char **argv, const struct kms_cli_opt *opts,
                      const char **pos, size_t npos_want, const char *usage_args, bool *help)
{
    size_t npos = 0;
    if (kms_cli_parse(prog, argc, argv, opts, pos, npos_want + 1, &npos) != 0) {
        fprintf(stderr, "Usage: %s %s\n", prog, usage_args);
        return KMS_CLI_EXIT_USAGE;
    }
    if (*help) {
        printf("Usage: %s %s\n\n%s", prog, usage_args, KEYS_USAGE);
        return -1;
    }
    if (npos != npos_want) {
        fprintf(stderr, "Error: %s takes %zu argument%s\nUsage: %s %s\n", prog, npos_want,
                npos_want == 1 ? "" : "s", prog, usage_args);
        return KMS_CLI_EXIT_USAGE;
    }
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    const json_t *x = *(json_t *const *)a;
    const json_t *y = *(json_t *const *)b;
    const char *nx = sget(x, "metadata", "name");
    const char *ny = sget(y, "metadata", "name");
    return strcmp(nx ? nx : "", ny ? ny : "");
}

static int cmd_list(int argc, char **argv)
{
    struct kms_cli_global g;
    struct kms_cli_session s;
    struct kms_cli_table *t = NULL;
    json_t *resp = NULL;
    json_t *items = NULL;
    json_t **sorted = NULL;
    const char *pos[1];
    char path[256];
    int status;

    memset(&g, 0, sizeof(g));
    memset(&s, 0, sizeof(s));
    const struct kms_cli_opt opts[] = {KMS_CLI_GLOBAL_OPTS(&g),
                                       {NULL, NULL, NULL, NULL, NULL, NULL, 0}};
    status = parse_verb("kmsctl keys list", argc, argv, opts, pos, 0, "", &g.help);
    if (status != 0) {
        status = status < 0 ? KMS_CLI_EXIT_OK : status;
        goto out;
    }
    if ((status = kms_cli_session_open(&g, NEED_KEYS, &s)) != 0) {
        goto out;
    }
    snprintf(path, sizeof(path), "kms/keys/%s", s.project);
    int rc = kms_cli_call(&s, "LIST", path, NULL, 404, &resp);
    if (rc != 0 && rc != 404) {
        status = KMS_CLI_EXIT_FAIL;
        goto out;
    }
    items = json_array();
    const json_t *info = json_object_get(json_object_get(resp, "data"), "key_info");
    size_t n = json_object_size(info);
    sorted = calloc(n + 1, sizeof(*sorted));
    if (items == NULL || sorted == NULL) {
        kms_cli_errorf("out of memory");
        status = KMS_CLI_EXIT_FAIL;
        goto out;
    }
    size_t i = 0;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)(uintptr_t)info, k, v)
    {
        sorted[i++] = v;
    }
    qsort(sorted, n, sizeof(*sorted), cmp_names);
    for (i = 0; i < n; i++) {
        json_array_append(items, sorted[i]);
    }
    if (s.fmt != KMS_CLI_FMT_TABLE) {
        json_t *list = json_pack("{s:s, s:s, s:O}", "apiVersion", "security.kube-dc.com/v1alpha1",
                                 "kind", "KMSKeyList", "items", items);
        status = kms_cli_print_kmskey(s.fmt, list) == 0 ? KMS_CLI_EXIT_OK : KMS_CLI_EXIT_FAIL;
        json_decref(list);
        goto out;
    }
    if (n == 0) {
        printf("No KMSKeys.\n");
        status = KMS_CLI_EXIT_OK;
        goto out;
    }
    t = kms_cli_table_create(8);
    const char *hdr[] = {"NAME",     "PURPOSE",  "ALGORITHM", "VERSION",
                         "ROTATION", "DELETION", "READY",     "AGE"};
    if (t == NULL || kms_cli_table_add(t, hdr) != 0) {
        kms_cli_errorf("out of memory");
        status = KMS_CLI_EXIT_FAIL;
        goto out;
    }
    for (i = 0; i < n; i++) {
        const json_t *it = sorted[i];
        const json_t *spec = json_object_get(it, "spec");
        char rot[128], ver[32], ready[128], age[32];
        rotation_cell(it, rot, sizeof(rot));
        version_cell(it, "currentVersion", ver, sizeof(ver));
        ready_cell(it, ready, sizeof(ready));
        kms_cli_age(sget(it, "metadata", "creationTimestamp"), age, sizeof(age));
        const char *row[] = {or_dash(sget(it, "metadata", "name")),
                             or_dash(sget(spec, "purpose", NULL)),
                             or_dash(sget(spec, "algorithm", NULL)),
                             ver,
                             rot,
                             or_dash(sget(spec, "deletionPolicy", NULL)),
                             ready,
                             age};
        if (kms_cli_table_add(t, row) != 0) {
            kms_cli_errorf("out of memory");
            status = KMS_CLI_EXIT_FAIL;
            goto out;
        }
    }
    kms_cli_table_print(t, stdout);
    status = KMS_CLI_EXIT_OK;
out:
    kms_cli_table_destroy(&t);
    free(sorted);
    json_decref(items);
    json_decref(resp);
    kms_cli_session_close(&s);
    return status;
}

static int cmd_describe(int argc, char **argv)
{
    struct kms_cli_global g;
    struct kms_cli_session s;
    json_t *k = NULL;
    const char *pos[2];
    int status;

    memset(&g, 0, sizeof(g));
    memset(&s, 0, sizeof(s));
    const struct kms_cli_opt opts[] = {KMS_CLI_GLOBAL_OPTS(&g),
                                       {NULL, NULL, NULL, NULL, NULL, NULL, 0}};
    status = parse_verb("kmsctl keys describe", argc, argv, opts, pos, 1, "NAME", &g.help);
    if (status != 0) {
        status = status < 0 ? KMS_CLI_EXIT_OK : status;
        goto out;
    }
    if (!kms_cli_check_name("KMSKey name", pos[0])) {
        status = KMS_CLI_EXIT_USAGE;
        goto out;
    }
    if ((status = kms_cli_session_open(&g, NEED_KEYS, &s)) != 0) {
        goto out;
    }
    int rc = get_key(&s, pos[0], 404, &k);
    if (rc == 404) {
        kms_cli_key_not_found(&s, pos[0]);
    }
    if (rc != 0) {
        status = KMS_CLI_EXIT_FAIL;
        goto out;
    }
    if (s.fmt != KMS_CLI_FMT_TABLE) {
        status = kms_cli_print_kmskey(s.fmt, k) == 0 ? KMS_CLI_EXIT_OK : KMS_CLI_EXIT_FAIL;
        goto out;
    }
    print_describe(k);
    status = KMS_CLI_EXIT_OK;
out:
    json_decref(k);
    kms_cli_session_close(&s);
    return status;
}

static int cmd_create(int argc, char **argv)
{
    struct kms_cli_global g;
    struct kms_cli_session s;
    const char *purpose = NULL, *algorithm = NULL, *rotation = NULL, *policy = NULL;
    bool enable_rotation = false;
    json_t *k = NULL, *resp = NULL, *spec = NULL, *req = NULL;
    const char *pos[2];
    char path[256], q[640], rot[128];
    int status;

    memset(&g, 0, sizeof(g));
    memset(&s, 0, sizeof(s));
    const struct kms_cli_opt opts[] = {
        KMS_CLI_GLOBAL_OPTS(&g),
        {"purpose", NULL, &purpose, NULL, NULL, NULL, 0},
        {"algorithm", NULL, &algorithm, NULL, NULL, NULL, 0},
        {"rotation", NULL, &rotation, NULL, NULL, NULL, 0},
        {"enable-rotation", NULL, NULL, &enable_rotation, NULL, NULL, 0},
        {"deletion-policy", NULL, &policy, NULL, NULL, NULL, 0},
        {NULL, NULL, NULL, NULL, NULL, NULL, 0},
    };
    status = parse_verb("kmsctl keys create", argc, argv, opts, pos, 1,
                        "NAME [--purpose=P] [--algorithm=A] [--rotation=90d] [--enable-rotation] "
                        "[--deletion-policy=retain|schedule]",
                        &g.help);
    if (status != 0) {
        status = status < 0 ? KMS_CLI_EXIT_OK : status;
        goto out;
    }
    if (!kms_cli_check_name("KMSKey name", pos[0])) {
        status = KMS_CLI_EXIT_USAGE;
        goto out;
    }
    if (enable_rotation && (rotation == NULL || rotation[0] == '\0')) {
        kms_cli_errorf("--rotation interval is required when rotation is enabled");
        status = KMS_CLI_EXIT_USAGE;
        goto out;
    }
    if ((status = kms_cli_session_open(&g, NEED_KEYS, &s)) != 0) {
        goto out;
    }
    status = KMS_CLI_EXIT_FAIL;
    spec = json_pack("{s:s, s:s, s:s}", "purpose", purpose ? purpose : "application", "algorithm",
                     algorithm ? algorithm : "aes256-gcm96", "deletionPolicy",
                     policy ? policy : "retain");
    if (spec != NULL && rotation != NULL && rotation[0] != '\0') {
        json_object_set_new(spec, "rotation",
                            json_pack("{s:b, s:s}", "enabled", 1, "interval", rotation));
    } else if (spec != NULL) {
        json_object_set_new(spec, "rotation", json_pack("{s:b}", "enabled", 0));
    }
    /* create_only: the server refuses (409) to reconfigure an existing key, so `create` needs
     * no existence probe (which left a 404 entry in the audit log for a project's first key) */
    req = json_pack("{s:O, s:b}", "spec", spec, "create_only", 1);
    if (req == NULL) {
        kms_cli_errorf("out of memory");
        goto out;
    }
    snprintf(path, sizeof(path), "kms/keys/%s/%s", s.project, pos[0]);
    int rc = kms_cli_call(&s, "POST", path, req, 409, &resp);
    if (rc == 409) {
        kms_cli_errorf("KMSKey %s already exists in project %s of organization %s", pos[0],
                       s.project, kms_cli_org_label(&s));
        kms_cli_hintf("change it with `kmsctl apply -f FILE` (see `kmsctl keys get %s -o yaml`)",
                      pos[0]);
        goto out;
    }
    if (rc != 0) {
        goto out;
    }
    const json_t *obj = json_object_get(resp, "data");
    if (s.fmt != KMS_CLI_FMT_TABLE) {
        status = kms_cli_print_kmskey(s.fmt, obj) == 0 ? KMS_CLI_EXIT_OK : KMS_CLI_EXIT_FAIL;
        goto out;
    }
    const json_t *ospec = json_object_get(obj, "spec");
    const json_t *orot = json_object_get(ospec, "rotation");
    if (json_is_true(json_object_get(orot, "enabled"))) {
        snprintf(rot, sizeof(rot), "%s", or_dash(sget(orot, "interval", NULL)));
    } else {
        snprintf(rot, sizeof(rot), "disabled");
    }
    qualified(&s, obj, pos[0], q, sizeof(q));
    printf("Created KMSKey %s (purpose=%s algorithm=%s rotation=%s deletionPolicy=%s)\n",
           kms_cli_esc(q), or_dash(sget(ospec, "purpose", NULL)),
           or_dash(sget(ospec, "algorithm", NULL)), rot,
           or_dash(sget(ospec, "deletionPolicy", NULL)));
    printf("Watch progress: kmsctl keys describe %s\n", pos[0]);
    status = KMS_CLI_EXIT_OK;
out:
    json_decref(req);
    json_decref(spec);
    json_decref(resp);
    json_decref(k);
    kms_cli_session_close(&s);
    return status;
}

enum action { ACT_ROTATE, ACT_MIN_VERSION, ACT_SCHEDULE, ACT_CANCEL };

static int cmd_action(enum action act, int argc, char **argv)
{
    static const char *const progs[] = {"kmsctl keys rotate",
                                        "kmsctl keys set-min-decryption-version",
                                        "kmsctl keys schedule-delete", "kmsctl keys cancel-delete"};
    static const char *const routes[] = {"rotate", "min-decryption-version", "schedule-delete",
                                         "cancel-delete"};
    struct kms_cli_global g;
    struct kms_cli_session s;
    json_t *resp = NULL, *req = NULL;
    const char *pos[3];
    char path[256], q[640];
    long long version = 0;
    int status;

    memset(&g, 0, sizeof(g));
    memset(&s, 0, sizeof(s));
    const struct kms_cli_opt opts[] = {KMS_CLI_GLOBAL_OPTS(&g),
                                       {NULL, NULL, NULL, NULL, NULL, NULL, 0}};
    status = parse_verb(progs[act], argc, argv, opts, pos, act == ACT_MIN_VERSION ? 2 : 1,
                        act == ACT_MIN_VERSION ? "NAME VERSION" : "NAME", &g.help);
    if (status != 0) {
        status = status < 0 ? KMS_CLI_EXIT_OK : status;
        goto out;
    }
    if (!kms_cli_check_name("KMSKey name", pos[0])) {
        status = KMS_CLI_EXIT_USAGE;
        goto out;
    }
    if (act == ACT_MIN_VERSION) {
        char *end = NULL;
        version = strtoll(pos[1], &end, 10);
        if (end == pos[1] || *end != '\0' || version < 1 || version > 4294967295LL) {
            kms_cli_errorf("version must be an integer >= 1");
            status = KMS_CLI_EXIT_USAGE;
            goto out;
        }
        req = json_pack("{s:I}", "version", (json_int_t)version);
    }
    if ((status = kms_cli_session_open(&g, NEED_KEYS, &s)) != 0) {
        goto out;
    }
    status = KMS_CLI_EXIT_FAIL;
    snprintf(path, sizeof(path), "kms/keys/%s/%s/%s", s.project, pos[0], routes[act]);
    if (kms_cli_call(&s, "POST", path, req, 0, &resp) != 0) {
        goto out;
    }
    const json_t *obj = json_object_get(resp, "data");
    if (s.fmt != KMS_CLI_FMT_TABLE) {
        status = kms_cli_print_kmskey(s.fmt, obj) == 0 ? KMS_CLI_EXIT_OK : KMS_CLI_EXIT_FAIL;
        goto out;
    }
    const json_t *st = json_object_get(obj, "status");
    const char *key_id = sget(st, "keyId", NULL);
    const char *transit =
        or_dash(key_id && strncmp(key_id, "transit/keys/", 13) == 0 ? key_id + 13 : key_id);
    qualified(&s, obj, pos[0], q, sizeof(q));
    const char *eq = kms_cli_esc(q);
    switch (act) {
    case ACT_ROTATE:
        printf("Rotated KMSKey %s (transit key %s)\n", eq, transit);
        break;
    case ACT_MIN_VERSION:
        printf("Set min decryption version=%" JSON_INTEGER_FORMAT " for %s (transit key %s)\n",
               json_integer_value(json_object_get(st, "minDecryptionVersion")), eq, transit);
        break;
    case ACT_SCHEDULE:
        printf("Scheduled deletion for %s (deletionPolicy=%s)\n", eq,
               or_dash(sget(obj, "spec", "deletionPolicy")));
        if (sget(st, "scheduledDeletion", NULL) != NULL) {
            printf("The key is destroyed at %s\n", or_dash(sget(st, "scheduledDeletion", NULL)));
        }
        printf("Cancel before the countdown elapses: kmsctl keys cancel-delete %s\n", pos[0]);
        break;
    case ACT_CANCEL: {
        /* the server's warning (printed above) when no countdown was running */
        const char *w = json_string_value(json_array_get(json_object_get(resp, "warnings"), 0));
        printf("%s scheduled deletion for %s (deletionPolicy=%s)\n",
               w != NULL && strstr(w, "nothing to cancel") != NULL ? "No" : "Cancelled", eq,
               or_dash(sget(obj, "spec", "deletionPolicy")));
        break;
    }
    }
    status = KMS_CLI_EXIT_OK;
out:
    json_decref(req);
    json_decref(resp);
    kms_cli_session_close(&s);
    return status;
}

static int cmd_delete(int argc, char **argv)
{
    struct kms_cli_global g;
    struct kms_cli_session s;
    bool yes = false;
    json_t *resp = NULL, *last = NULL;
    const char *pos[2];
    char path[256], q[640];
    int status;

    memset(&g, 0, sizeof(g));
    memset(&s, 0, sizeof(s));
    const struct kms_cli_opt opts[] = {
        KMS_CLI_GLOBAL_OPTS(&g),
        {"yes", "y", NULL, &yes, NULL, NULL, 0},
        {NULL, NULL, NULL, NULL, NULL, NULL, 0},
    };
    status = parse_verb("kmsctl keys delete", argc, argv, opts, pos, 1, "NAME --yes", &g.help);
    if (status != 0) {
        status = status < 0 ? KMS_CLI_EXIT_OK : status;
        goto out;
    }
    if (!kms_cli_check_name("KMSKey name", pos[0])) {
        status = KMS_CLI_EXIT_USAGE;
        goto out;
    }
    if (!yes) {
        fprintf(stderr, "Delete %s? Re-run with --yes to confirm.\n", pos[0]);
        kms_cli_errorf("not confirmed");
        status = KMS_CLI_EXIT_USAGE;
        goto out;
    }
    if ((status = kms_cli_session_open(&g, NEED_KEYS, &s)) != 0) {
        goto out;
    }
    status = KMS_CLI_EXIT_FAIL;
    /* -o json|yaml prints the KMSKey as orgs delete prints the organization: a retained key's
     * DELETE answers 204, so the object is the one read just before */
    int rc = s.fmt != KMS_CLI_FMT_TABLE ? get_key(&s, pos[0], 404, &last) : 0;
    if (rc == 0) {
        snprintf(path, sizeof(path), "kms/keys/%s/%s", s.project, pos[0]);
        rc = kms_cli_call(&s, "DELETE", path, NULL, 404, &resp);
    }
    if (rc == 404) {
        kms_cli_key_not_found(&s, pos[0]);
    }
    if (rc != 0) {
        goto out;
    }
    const json_t *obj = json_object_get(resp, "data");
    if (s.fmt != KMS_CLI_FMT_TABLE) {
        status = kms_cli_print_kmskey(s.fmt, obj != NULL ? obj : last) == 0 ? KMS_CLI_EXIT_OK
                                                                            : KMS_CLI_EXIT_FAIL;
        goto out;
    }
    qualified(&s, obj, pos[0], q, sizeof(q));
    if (obj != NULL && sget(obj, "status", "scheduledDeletion") != NULL) {
        /* deletionPolicy schedule: the object stays until the countdown destroys the key */
        printf("Deleted %s (the KMSKey and its Transit key are destroyed at %s)\n", kms_cli_esc(q),
               or_dash(sget(obj, "status", "scheduledDeletion")));
    } else {
        printf("Deleted %s\n", kms_cli_esc(q));
    }
    status = KMS_CLI_EXIT_OK;
out:
    json_decref(last);
    json_decref(resp);
    kms_cli_session_close(&s);
    return status;
}

int kms_cli_keys(int argc, char **argv)
{
    int v = kms_cli_find_verb(argc, argv);
    if (v >= argc) {
        bool help = false;
        for (int i = 1; i < argc; i++) {
            help = help || strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0;
        }
        fputs(KEYS_USAGE, help ? stdout : stderr);
        return help ? KMS_CLI_EXIT_OK : KMS_CLI_EXIT_USAGE;
    }
    const char *verb = argv[v];
    /* drop the verb, keep every option around it */
    memmove(&argv[v], &argv[v + 1], (size_t)(argc - v - 1) * sizeof(argv[0]));
    argc--;
    argv++;
    argc--;
    if (strcmp(verb, "list") == 0 || strcmp(verb, "ls") == 0) {
        return cmd_list(argc, argv);
    }
    if (strcmp(verb, "describe") == 0 || strcmp(verb, "get") == 0) {
        return cmd_describe(argc, argv);
    }
    if (strcmp(verb, "create") == 0) {
        return cmd_create(argc, argv);
    }
    if (strcmp(verb, "rotate") == 0) {
        return cmd_action(ACT_ROTATE, argc, argv);
    }
    if (strcmp(verb, "set-min-decryption-version") == 0) {
        return cmd_action(ACT_MIN_VERSION, argc, argv);
    }
    if (strcmp(verb, "schedule-delete") == 0) {
        return cmd_action(ACT_SCHEDULE, argc, argv);
    }
    if (strcmp(verb, "cancel-delete") == 0) {
        return cmd_action(ACT_CANCEL, argc, argv);
    }
    if (strcmp(verb, "delete") == 0 || strcmp(verb, "rm") == 0) {
        return cmd_delete(argc, argv);
    }
    fprintf(stderr, "Error: unknown command \"%s\" for \"kmsctl keys\"\n\n%s", kms_cli_esc(verb),
            KEYS_USAGE);
    return KMS_CLI_EXIT_USAGE;
}

/* ---- kubectl's get ------------------------------------------------------------------------ */

#define GET_USAGE                                                                                  \
    "Usage: kmsctl get kmskey NAME [-o table|json|yaml]   (as `keys get NAME`)\n"                  \
    "       kmsctl get kmskeys [-o table|json|yaml]       (as `keys list`)\n\n"                    \
    "kubectl's read verb for KMSKeys, as the product doc uses it:\n"                               \
    "`kmsctl get kmskey app-secrets -o yaml` prints the whole object, as\n"                        \
    "`kubectl get kmskey app-secrets -o yaml` does. The kind is kmskey, kmskeys or\n"              \
    "kkey (the CRD's short name), also with the group (kmskey.security.kube-dc.com)\n"             \
    "and in any case, and may carry the name (kmskey/NAME).\n"                                     \
    "Global options: --addr URL, --token T, -n/--namespace ORG, --project P,\n"                    \
    "  -o table|json|yaml, --ca-cert FILE, --client-cert FILE --client-key FILE,\n"                \
    "  --tls-skip-verify. See docs/cli.md.\n"

/*
 * `kmsctl get KIND [NAME]` becomes `kmsctl keys get NAME` (`keys list` without a name), every
 * option kept where it was. KIND may carry the name ("kmskey/NAME"), as in `kmsctl patch`.
 */
int kms_cli_get(int argc, char **argv)
{
    char keys[] = "keys", get[] = "get", list[] = "list";
    int k = kms_cli_find_verb(argc, argv);
    bool help = false;
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        help = help || strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0;
    }
    if (help || k >= argc) {
        if (!help) {
            kms_cli_errorf("kmsctl get takes the kind: kmsctl get kmskey NAME (or get kmskeys)");
        }
        fputs(GET_USAGE, help ? stdout : stderr);
        return help ? KMS_CLI_EXIT_OK : KMS_CLI_EXIT_USAGE;
    }
    char kind[64];
    const char *slash = strchr(argv[k], '/');
    size_t klen = slash != NULL ? (size_t)(slash - argv[k]) : strlen(argv[k]);
    if (klen >= sizeof(kind)) {
        klen = sizeof(kind) - 1;
    }
    snprintf(kind, sizeof(kind), "%.*s", (int)klen, argv[k]);
    if (!kms_cli_kmskey_kind(kind) || (slash != NULL && slash[1] == '\0')) {
        kms_cli_errorf("kmsctl get reads KMSKeys: kmsctl get kmskey NAME (or get kmskeys), not "
                       "\"%s\"",
                       argv[k]);
        fputs(GET_USAGE, stderr);
        return KMS_CLI_EXIT_USAGE;
    }
    /* "keys" VERB, then argv[1..] with the kind dropped (or replaced by the name it carries) */
    char **av = calloc((size_t)argc + 2, sizeof(*av));
    if (av == NULL) {
        kms_cli_errorf("out of memory");
        return KMS_CLI_EXIT_FAIL;
    }
    int n = 0;
    av[n++] = keys;
    for (int i = 1; i < argc; i++) {
        if (i != k) {
            av[n++] = argv[i];
        } else if (slash != NULL) {
            av[n++] = (char *)(slash + 1);
        }
    }
    bool named = kms_cli_find_verb(n, av) < n;
    memmove(&av[2], &av[1], (size_t)(n - 1) * sizeof(av[0]));
    av[1] = named ? get : list;
    n++;
    av[n] = NULL;
    int rc = kms_cli_keys(n, av);
    free(av);
    return rc;
}
