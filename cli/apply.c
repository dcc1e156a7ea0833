/*
 * apply.c - `kmsctl apply -f kmskey.yaml`: the product doc's KMSKey manifest (what users would
 * `kubectl apply`), parsed with libyaml and sent as {"spec": …} to the KMSKey API.
 *
 * Design notes:
 * - YAML becomes JSON as Kubernetes' sigs.k8s.io/yaml does it (YAML 1.1 scalars): plain
 *   true/false/yes/no/on/off are booleans, ~/null/empty are null, integers and floats are
 *   numbers, quoted or !!str-tagged scalars stay strings. Aliases are refused (never
 *   expanded; an anchor alone changes nothing), and so is any tag that does not mean what
 *   the node is read as (scalar_value: !!binary, !!set, !foo, … are not read as strings).
 * - Decoding is strict, as kubectl's: a field that a KMSKey does not have (a typo such as
 *   `spec.rotaton`) refuses the whole manifest before anything is sent (kmskey.c).
 * - Several documents (`---`) apply in order; the first failure stops with exit 1.
 * - The project comes from --project, else from metadata.namespace: Kube-DC's project
 *   namespace is "<org>-<project>", so the organization prefix is removed when present (the
 *   product doc's `namespace: my-project` names the project directly), else KMS_PROJECT.
 * - The answer line is kubectl's: "kmskey.security.kube-dc.com/<name> created", "configured"
 *   when the object changed (its spec, or the fields the last apply gave: the server moved
 *   metadata.resourceVersion on), "unchanged" when it did not.
 */
#include "cli/cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#define MAX_FILES 32
#define MAX_DEPTH 64
#define API_VERSION "security.kube-dc.com/v1alpha1"

/* ---- YAML -> JSON ------------------------------------------------------------------------ */

struct yreader {
    yaml_parser_t parser;
    const char *file;
};

static void yerror(const struct yreader *r)
{
    kms_cli_errorf("%s: YAML error at line %zu: %s%s%s", r->file, r->parser.problem_mark.line + 1,
                   r->parser.problem ? r->parser.problem : "invalid document",
                   r->parser.context ? " " : "", r->parser.context ? r->parser.context : "");
}

static int next_event(struct yreader *r, yaml_event_t *ev)
{
    if (!yaml_parser_parse(&r->parser, ev)) {
        yerror(r);
        return -1;
    }
    return 0;
}

static bool is_one_of(const char *s, const char *const *list)
{
    for (size_t i = 0; list[i] != NULL; i++) {
        if (strcmp(s, list[i]) == 0) {
            return true;
        }
    }
    return false;
}

/* A plain scalar's value, as sigs.k8s.io/yaml reads it (YAML 1.1). */
static json_t *plain_value(const char *v, size_t len)
{
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
    static const char *const trues[] = {"true", "True", "TRUE", "yes", "Yes", "YES",
                                        "on",   "On",   "ON",   "y",   "Y",   NULL};
    static const char *const falses[] = {"false", "False", "FALSE", "no", "No", "NO",
                                         "off",   "Off",   "OFF",   "n",  "N",  NULL};
    if (is_one_of(v, nulls)) {
        return json_null();
    }
    if (is_one_of(v, trues)) {
        return json_true();
    }
    if (is_one_of(v, falses)) {
        return json_false();
    }
    const char *p = v + (v[0] == '-' || v[0] == '+');
    if (*p >= '0' && *p <= '9') {
        char *end = NULL;
        errno = 0;
        long long i = strtoll(v, &end, 10);
        if (end != v && *end == '\0' && errno == 0) {
            return json_integer((json_int_t)i);
        }
        double d = strtod(v, &end);
        if (end != v && *end == '\0') {
            return json_real(d);
        }
    }
    return json_stringn(v, len);
}

/*
 * Explicit tags. kmsctl reads every node as JSON, so a tag is accepted only where it means
 * what kmsctl reads the node as: !!map on a mapping, !!seq on a sequence, !!str on any scalar
 * (a string, whatever it looks like), !!int, !!float, !!bool and !!null on a scalar whose text
 * is one (quoted or not: the tag, not the quotes, gives the type). Any other tag (!!binary,
 * !!timestamp, !!set, !!omap, !!python/..., a local !foo, the non-specific !) asks for a
 * meaning kmsctl does not give it, and the manifest is refused rather than read as a string.
 */
#define CORE_TAG "tag:yaml.org,2002:"

/* The tag as written in short form (!!x for the core prefix). */
static void tag_text(const char *tag, char *out, size_t n)
{
    size_t pl = sizeof(CORE_TAG) - 1;
    if (strncmp(tag, CORE_TAG, pl) == 0) {
        snprintf(out, n, "!!%s", tag + pl);
    } else {
        snprintf(out, n, "%s", tag);
    }
}

/* The core tag's name ("str", "map", …) when tag is one kmsctl knows, else NULL. */
static const char *known_tag(const char *tag)
{
    static const char *const known[] = {"str", "int", "float", "bool", "null", "map", "seq", NULL};
    size_t pl = sizeof(CORE_TAG) - 1;
    if (strncmp(tag, CORE_TAG, pl) != 0 || !is_one_of(tag + pl, known)) {
        return NULL;
    }
    return tag + pl;
}

static void tag_refused(const struct yreader *r, size_t line, const char *tag)
{
    char t[160];
    tag_text(tag, t, sizeof(t));
    kms_cli_errorf("%s: line %zu: YAML tag %s is not accepted (only !!str, !!int, !!float, "
                   "!!bool, !!null, !!map and !!seq, each on a value of its kind)",
                   r->file, line, t);
}

/* A mapping's or a sequence's tag: none, or `want` ("map", "seq"). false after an error. */
static bool collection_tag_ok(const struct yreader *r, const yaml_event_t *ev, const char *tag,
                              const char *want)
{
    size_t line = ev->start_mark.line + 1;
    if (tag == NULL) {
        return true;
    }
    const char *k = known_tag(tag);
    if (k == NULL) {
        tag_refused(r, line, tag);
        return false;
    }
    if (strcmp(k, want) != 0) {
        kms_cli_errorf("%s: line %zu: YAML tag !!%s on a %s", r->file, line, k,
                       strcmp(want, "map") == 0 ? "mapping" : "sequence");
        return false;
    }
    return true;
}

/* A scalar's value, its tag checked (see above). NULL after an error. */
static json_t *scalar_value(const struct yreader *r, const yaml_event_t *ev)
{
    const char *v = (const char *)ev->data.scalar.value;
    size_t len = ev->data.scalar.length;
    const char *tag = (const char *)ev->data.scalar.tag;
    size_t line = ev->start_mark.line + 1;
    if (tag == NULL) {
        return ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE ? json_stringn(v, len)
                                                                : plain_value(v, len);
    }
    const char *k = known_tag(tag);
    if (k == NULL) {
        tag_refused(r, line, tag);
        return NULL;
    }
    if (strcmp(k, "str") == 0) {
        return json_stringn(v, len);
    }
    if (strcmp(k, "map") == 0 || strcmp(k, "seq") == 0) {
        kms_cli_errorf("%s: line %zu: YAML tag !!%s on a scalar", r->file, line, k);
        return NULL;
    }
    json_t *val = plain_value(v, len);
    if (strcmp(k, "float") == 0 && json_is_integer(val)) {
        json_t *f = json_real((double)json_integer_value(val));
        json_decref(val);
        val = f;
    }
    bool fits = (strcmp(k, "int") == 0 && json_is_integer(val)) ||
                (strcmp(k, "float") == 0 && json_is_real(val)) ||
                (strcmp(k, "bool") == 0 && json_is_boolean(val)) ||
                (strcmp(k, "null") == 0 && json_is_null(val));
    if (!fits) {
        kms_cli_errorf("%s: line %zu: YAML tag !!%s does not fit the value \"%.40s%s\"", r->file,
                       line, k, v, len > 40 ? "..." : "");
        json_decref(val);
        return NULL;
    }
    return val;
}

/* Build the node whose first event is *ev (consumed). NULL after printing an error. */
static json_t *read_node(struct yreader *r, yaml_event_t *ev, int depth)
{
    json_t *node = NULL;
    yaml_event_t child;

    if (depth > MAX_DEPTH) {
        kms_cli_errorf("%s: YAML nested too deeply", r->file);
        yaml_event_delete(ev);
        return NULL;
    }
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        if (memchr(ev->data.scalar.value, '\0', ev->data.scalar.length) != NULL) {
            /* names are C strings from here on: "a\0b" would act on "a" */
            kms_cli_errorf("%s: line %zu: a NUL byte in a YAML value", r->file,
                           ev->start_mark.line + 1);
            break;
        }
        node = scalar_value(r, ev);
        break;
    case YAML_ALIAS_EVENT:
        /* refused, never expanded: no alias bomb ("billion laughs") can grow the document */
        kms_cli_errorf("%s: line %zu: YAML aliases (*%s) are not supported", r->file,
                       ev->start_mark.line + 1, (const char *)ev->data.alias.anchor);
        break;
    case YAML_SEQUENCE_START_EVENT:
        if (!collection_tag_ok(r, ev, (const char *)ev->data.sequence_start.tag, "seq")) {
            break;
        }
        node = json_array();
        for (;;) {
            if (next_event(r, &child) != 0) {
                goto fail;
            }
            if (child.type == YAML_SEQUENCE_END_EVENT) {
                yaml_event_delete(&child);
                break;
            }
            json_t *item = read_node(r, &child, depth + 1);
            if (item == NULL || json_array_append_new(node, item) != 0) {
                goto fail;
            }
        }
        break;
    case YAML_MAPPING_START_EVENT:
        if (!collection_tag_ok(r, ev, (const char *)ev->data.mapping_start.tag, "map")) {
            break;
        }
        node = json_object();
        for (;;) {
            if (next_event(r, &child) != 0) {
                goto fail;
            }
            if (child.type == YAML_MAPPING_END_EVENT) {
                yaml_event_delete(&child);
                break;
            }
            if (child.type != YAML_SCALAR_EVENT) {
                kms_cli_errorf("%s: line %zu: mapping keys must be plain strings", r->file,
                               child.start_mark.line + 1);
                yaml_event_delete(&child);
                goto fail;
            }
            size_t line = child.start_mark.line + 1;
            if (memchr(child.data.scalar.value, '\0', child.data.scalar.length) != NULL) {
                kms_cli_errorf("%s: line %zu: a NUL byte in a YAML key", r->file, line);
                yaml_event_delete(&child);
                goto fail;
            }
            /* a key is its text; a tag on it is checked like a value's */
            json_t *kv = child.data.scalar.tag != NULL ? scalar_value(r, &child) : json_null();
            if (kv == NULL) {
                yaml_event_delete(&child);
                goto fail;
            }
            json_decref(kv);
            char *key = strdup((const char *)child.data.scalar.value);
            yaml_event_delete(&child);
            if (key != NULL && json_object_get(node, key) != NULL) {
                /* kubectl refuses a repeated key too; the last one would win silently */
                kms_cli_errorf("%s: line %zu: key \"%s\" appears twice in one mapping", r->file,
                               line, key);
                free(key);
                goto fail;
            }
            if (key == NULL || next_event(r, &child) != 0) {
                free(key);
                goto fail;
            }
            json_t *val = read_node(r, &child, depth + 1);
            int set = val != NULL ? json_object_set_new(node, key, val) : -1;
            free(key);
            if (set != 0) {
                goto fail;
            }
        }
        break;
    default:
        kms_cli_errorf("%s: unexpected YAML event", r->file);
        break;
    }
    yaml_event_delete(ev);
    return node;
fail:
    yaml_event_delete(ev);
    json_decref(node);
    return NULL;
}

/* Every document of the stream as a JSON array of values (empty documents skipped). */
static int read_documents(struct yreader *r, json_t *docs)
{
    yaml_event_t ev;
    for (;;) {
        if (next_event(r, &ev) != 0) {
            return -1;
        }
        yaml_event_type_t t = ev.type;
        if (t == YAML_STREAM_END_EVENT) {
            yaml_event_delete(&ev);
            return 0;
        }
        if (t == YAML_STREAM_START_EVENT || t == YAML_DOCUMENT_END_EVENT) {
            yaml_event_delete(&ev);
            continue;
        }
        if (t == YAML_DOCUMENT_START_EVENT) {
            yaml_event_delete(&ev);
            if (next_event(r, &ev) != 0) {
                return -1;
            }
            if (ev.type == YAML_DOCUMENT_END_EVENT) {
                yaml_event_delete(&ev);
                continue;
            }
            json_t *doc = read_node(r, &ev, 0);
            if (doc == NULL) {
                return -1;
            }
            if (!json_is_null(doc)) {
                json_array_append(docs, doc);
            }
            json_decref(doc);
            continue;
        }
        yaml_event_delete(&ev);
        kms_cli_errorf("%s: unexpected YAML structure", r->file);
        return -1;
    }
}

int kms_cli_yaml_parse(const char *name, const uint8_t *text, size_t len, json_t *docs)
{
    struct yreader r;
    int rc;

    memset(&r, 0, sizeof(r));
    r.file = name;
    if (!yaml_parser_initialize(&r.parser)) {
        kms_cli_errorf("out of memory");
        return -1;
    }
    yaml_parser_set_input_string(&r.parser, text, len);
    rc = read_documents(&r, docs);
    yaml_parser_delete(&r.parser);
    return rc;
}

/* 0, or the exit status: a file that cannot be read fails (1, as for encrypt --file and
 * login --jwt-file), a manifest that is not valid YAML is a usage error (2). */
static int load_yaml(const char *file, json_t *docs)
{
    uint8_t *text = NULL;
    size_t len = 0;
    if (kms_cli_read_file(file, 4u << 20, &text, &len) != 0) {
        return KMS_CLI_EXIT_FAIL;
    }
    int rc = kms_cli_yaml_parse(strcmp(file, "-") == 0 ? "stdin" : file, text, len, docs);
    kms_free_wipe((void **)&text, len + 1);
    return rc == 0 ? 0 : KMS_CLI_EXIT_USAGE;
}

/* ---- apply ------------------------------------------------------------------------------- */

/* The project of one manifest: --project/KMS_PROJECT, checked against metadata.namespace. */
static int manifest_project(const struct kms_cli_session *s, const char *flag_project,
                            const char *mns, char *out, size_t n)
{
    char from_ns[KMS_CLI_NAME_MAX + 1] = "";
    size_t ol = strlen(s->org);
    if (mns != NULL && mns[0] != '\0') {
        const char *p = mns;
        if (strncmp(mns, s->org, ol) == 0 && mns[ol] == '-' && mns[ol + 1] != '\0') {
            p = mns + ol + 1;
        }
        if (!kms_cli_name_ok(p)) {
            kms_cli_errorf("metadata.namespace \"%s\" does not name a project of organization "
                           "%s (expected <org>-<project> or <project>)",
                           mns, s->org);
            return -1;
        }
        snprintf(from_ns, sizeof(from_ns), "%s", p);
    }
    if (flag_project != NULL) {
        if (from_ns[0] != '\0' && strcmp(from_ns, flag_project) != 0) {
            kms_cli_errorf("metadata.namespace \"%s\" is not project %s (from --project)", mns,
                           flag_project);
            return -1;
        }
        snprintf(out, n, "%s", flag_project);
        return 0;
    }
    if (from_ns[0] != '\0') {
        snprintf(out, n, "%s", from_ns);
        return 0;
    }
    if (s->project[0] != '\0') {
        snprintf(out, n, "%s", s->project);
        return 0;
    }
    kms_cli_errorf("no project: set metadata.namespace, give --project or set KMS_PROJECT");
    return -1;
}

/* Check one document; on success *name and *spec point into it. Returns 0 or exit 2. */
static int check_manifest(const json_t *doc, size_t idx, const char **name, const json_t **spec)
{
    const char *av = json_string_value(json_object_get(doc, "apiVersion"));
    const char *kind = json_string_value(json_object_get(doc, "kind"));
    const json_t *meta = json_object_get(doc, "metadata");
    if (!json_is_object(doc)) {
        kms_cli_errorf("document %zu is not a mapping", idx + 1);
        return -1;
    }
    if (kind == NULL || strcmp(kind, "KMSKey") != 0 || av == NULL ||
        strncmp(av, "security.kube-dc.com/", 21) != 0) {
        kms_cli_errorf("document %zu: kmsctl applies %s KMSKey objects only (got %s %s)", idx + 1,
                       API_VERSION, av ? av : "(no apiVersion)", kind ? kind : "(no kind)");
        return -1;
    }
    if (strcmp(av, API_VERSION) != 0) {
        kms_cli_errorf("document %zu: unsupported apiVersion %s (want %s)", idx + 1, av,
                       API_VERSION);
        return -1;
    }
    char unknown[1024];
    if (kms_cli_kmskey_strict(doc, unknown, sizeof(unknown)) != 0) {
        const char *n = json_string_value(json_object_get(meta, "name"));
        kms_cli_errorf("document %zu (KMSKey %s): strict decoding error: %s", idx + 1,
                       n ? n : "(no name)", unknown);
        kms_cli_hintf("a KMSKey has apiVersion, kind, metadata, spec {purpose, algorithm, "
                      "rotation {enabled, interval}, deletionPolicy, exportable} and status; "
                      "see docs/kmskey.md");
        return -1;
    }
    *name = json_string_value(json_object_get(meta, "name"));
    if (*name == NULL) {
        kms_cli_errorf("document %zu: metadata.name is required", idx + 1);
        return -1;
    }
    if (!kms_cli_check_name("metadata.name", *name)) {
        return -1;
    }
    *spec = json_object_get(doc, "spec");
    if (*spec != NULL && !json_is_object(*spec) && !json_is_null(*spec)) {
        kms_cli_errorf("document %zu: spec must be a mapping", idx + 1);
        return -1;
    }
    return 0;
}

static int apply_one(struct kms_cli_session *s, const char *flag_project, const json_t *doc,
                     size_t idx)
{
    const char *name = NULL;
    const json_t *spec = NULL;
    json_t *cur = NULL, *req = NULL, *resp = NULL;
    char project[KMS_CLI_NAME_MAX + 1];
    char path[256];
    int status = KMS_CLI_EXIT_USAGE;

    if (check_manifest(doc, idx, &name, &spec) != 0 ||
        manifest_project(
            s, flag_project,
            json_string_value(json_object_get(json_object_get(doc, "metadata"), "namespace")),
            project, sizeof(project)) != 0) {
        goto out;
    }
    status = KMS_CLI_EXIT_FAIL;
    snprintf(path, sizeof(path), "kms/keys/%s/%s", project, name);
    int g = kms_cli_call(s, "GET", path, NULL, 404, &cur);
    if (g != 0 && g != 404) {
        goto out;
    }
    req = json_object();
    json_t *sp = json_is_object(spec) ? json_deep_copy(spec) : json_object();
    /* "apply": the server resets what the previous apply set and this manifest leaves out */
    if (req == NULL || sp == NULL || json_object_set_new(req, "spec", sp) != 0 ||
        json_object_set_new(req, "apply", json_true()) != 0) {
        kms_cli_errorf("out of memory");
        goto out;
    }
    if (kms_cli_call(s, "POST", path, req, 0, &resp) != 0) {
        goto out;
    }
    const char *what = "created";
    if (g == 0) {
        /* kubectl's "configured": the object changed (its spec, or what the last apply gave) */
        const char *before = json_string_value(json_object_get(
            json_object_get(json_object_get(cur, "data"), "metadata"), "resourceVersion"));
        const char *after = json_string_value(json_object_get(
            json_object_get(json_object_get(resp, "data"), "metadata"), "resourceVersion"));
        what = strcmp(before ? before : "", after ? after : "") == 0 ? "unchanged" : "configured";
    }
    if (s->fmt != KMS_CLI_FMT_TABLE) {
        status = kms_cli_print_kmskey(s->fmt, json_object_get(resp, "data")) == 0
                     ? KMS_CLI_EXIT_OK
                     : KMS_CLI_EXIT_FAIL;
        goto out;
    }
    printf("kmskey.security.kube-dc.com/%s %s\n", name, what);
    status = KMS_CLI_EXIT_OK;
out:
    json_decref(cur);
    json_decref(req);
    json_decref(resp);
    return status;
}

int kms_cli_apply(int argc, char **argv)
{
    struct kms_cli_global g;
    struct kms_cli_session s;
    const char *files[MAX_FILES];
    size_t nfiles = 0;
    const char *pos[1];
    size_t npos = 0;
    json_t *docs = NULL;
    int status = KMS_CLI_EXIT_USAGE;

    memset(&g, 0, sizeof(g));
    memset(&s, 0, sizeof(s));
    const struct kms_cli_opt opts[] = {
        KMS_CLI_GLOBAL_OPTS(&g),
        {"filename", "f", NULL, NULL, files, &nfiles, MAX_FILES},
        {NULL, NULL, NULL, NULL, NULL, NULL, 0},
    };
    static const char usage[] = "Usage: kmsctl apply -f kmskey.yaml [-f more.yaml] [--project P] "
                                "[-n ORG] [-o json|yaml]\n";
    if (kms_cli_parse("kmsctl apply", argc - 1, argv + 1, opts, pos, 0, &npos) != 0) {
        fputs(usage, stderr);
        goto out;
    }
    if (g.help) {
        fputs(usage, stdout);
        status = KMS_CLI_EXIT_OK;
        goto out;
    }
    if (nfiles == 0) {
        kms_cli_errorf("must specify -f");
        fputs(usage, stderr);
        goto out;
    }
    docs = json_array();
    for (size_t i = 0; i < nfiles; i++) {
        int lrc = load_yaml(files[i], docs);
        if (lrc != 0) {
            status = lrc;
            goto out;
        }
    }
    if (json_array_size(docs) == 0) {
        kms_cli_errorf("no objects passed to apply");
        goto out;
    }
    if ((status = kms_cli_session_open(&g, KMS_CLI_NEED_ORG | KMS_CLI_NEED_TOKEN, &s)) != 0) {
        goto out;
    }
    const char *flag_project = g.project;
    /* every document is checked before the first is sent (docs/cli.md: a manifest decoding
       refuses sends nothing): a typo in document 3 must not leave 1 and 2 applied behind an
       exit 2. Only a refusal by the server stops an apply part-way. */
    for (size_t i = 0; i < json_array_size(docs); i++) {
        const json_t *doc = json_array_get(docs, i);
        const char *name = NULL;
        const json_t *spec = NULL;
        char project[KMS_CLI_NAME_MAX + 1];
        if (check_manifest(doc, i, &name, &spec) != 0 ||
            manifest_project(
                &s, flag_project,
                json_string_value(json_object_get(json_object_get(doc, "metadata"), "namespace")),
                project, sizeof(project)) != 0) {
            status = KMS_CLI_EXIT_USAGE;
            goto out;
        }
    }
    size_t ndocs = json_array_size(docs);
    for (size_t i = 0; i < ndocs; i++) {
        status = apply_one(&s, flag_project, json_array_get(docs, i), i);
        if (status != KMS_CLI_EXIT_OK) {
            if (ndocs > 1) {
                /* the server's error names no document: say which one it was, and what
                 * was applied before it (kubectl names the object it could not apply) */
                const char *name = json_string_value(
                    json_object_get(json_object_get(json_array_get(docs, i), "metadata"), "name"));
                fprintf(stderr,
                        "Hint: stopped at document %zu of %zu (KMSKey %s): the %zu before it "
                        "were applied, the %zu after it were not sent\n",
                        i + 1, ndocs, kms_cli_esc(name != NULL ? name : "?"), i, ndocs - i - 1);
            }
            goto out;
        }
    }
out:
    json_decref(docs);
    kms_cli_session_close(&s);
    return status;
}

/* ---- patch ------------------------------------------------------------------------------- */

/* RFC 7386 JSON merge patch of target (may be NULL) with patch: a new value. */
static json_t *merge_patch(const json_t *target, const json_t *patch)
{
    if (!json_is_object(patch)) {
        return json_deep_copy(patch);
    }
    json_t *out = json_is_object(target) ? json_deep_copy(target) : json_object();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)patch, k, v)
    {
        if (out == NULL) {
            break;
        }
        if (json_is_null(v)) {
            json_object_del(out, k);
            continue;
        }
        json_t *m = merge_patch(json_object_get(out, k), v);
        if (m == NULL || json_object_set_new(out, k, m) != 0) {
            json_decref(out);
            out = NULL;
        }
    }
    return out;
}

/*
 * The names kubectl resolves to the KMSKey CRD: its singular, plural and short name (`kkey`,
 * deploy/kubernetes/crd-kmskey.yaml), bare or with the group (and version), in any case
 * (`kubectl get KMSKey` works too).
 */
bool kms_cli_kmskey_kind(const char *kind)
{
    static const char *const names[] = {"kmskey", "kmskeys", "kkey", NULL};
    static const char *const groups[] = {"", ".security.kube-dc.com",
                                         ".v1alpha1.security.kube-dc.com", NULL};
    for (size_t i = 0; names[i] != NULL; i++) {
        size_t n = strlen(names[i]);
        if (strncasecmp(kind, names[i], n) != 0) {
            continue;
        }
        for (size_t j = 0; groups[j] != NULL; j++) {
            if (strcasecmp(kind + n, groups[j]) == 0) {
                return true;
            }
        }
    }
    return false;
}

/* "kmskey NAME", "kmskey/NAME", "kmskeys NAME", "kmskey.security.kube-dc.com/NAME". */
static const char *patch_target(const char **pos, size_t npos)
{
    char kind[64];
    const char *slash = npos == 1 ? strchr(pos[0], '/') : NULL;
    if (npos == 1 && slash != NULL && (size_t)(slash - pos[0]) < sizeof(kind)) {
        snprintf(kind, sizeof(kind), "%.*s", (int)(slash - pos[0]), pos[0]);
        return kms_cli_kmskey_kind(kind) ? slash + 1 : NULL;
    }
    if (npos == 2 && kms_cli_kmskey_kind(pos[0])) {
        return pos[1];
    }
    return NULL;
}

int kms_cli_patch(int argc, char **argv)
{
    struct kms_cli_global g;
    struct kms_cli_session s;
    const char *pos[2];
    size_t npos = 0;
    const char *patch_text = NULL, *patch_file = NULL, *type = NULL;
    uint8_t *file = NULL;
    size_t flen = 0;
    json_t *docs = NULL, *cur = NULL, *doc = NULL, *req = NULL, *resp = NULL;
    char path[256];
    int status = KMS_CLI_EXIT_USAGE;

    memset(&g, 0, sizeof(g));
    memset(&s, 0, sizeof(s));
    const struct kms_cli_opt opts[] = {
        KMS_CLI_GLOBAL_OPTS(&g),
        {"patch", "p", &patch_text, NULL, NULL, NULL, 0},
        {"patch-file", NULL, &patch_file, NULL, NULL, NULL, 0},
        {"type", NULL, &type, NULL, NULL, NULL, 0},
        {NULL, NULL, NULL, NULL, NULL, NULL, 0},
    };
    static const char usage[] =
        "Usage: kmsctl patch kmskey NAME --type=merge -p PATCH [--project P] [-n ORG] "
        "[-o json|yaml]\n"
        "       (or --patch-file FILE; PATCH is YAML or JSON, a JSON merge patch of the KMSKey)\n";
    if (kms_cli_parse("kmsctl patch", argc - 1, argv + 1, opts, pos, 2, &npos) != 0) {
        fputs(usage, stderr);
        goto out;
    }
    if (g.help) {
        fputs(usage, stdout);
        status = KMS_CLI_EXIT_OK;
        goto out;
    }
    const char *name = patch_target(pos, npos);
    if (name == NULL) {
        kms_cli_errorf("kmsctl patch takes a KMSKey: kmsctl patch kmskey NAME -p PATCH");
        fputs(usage, stderr);
        goto out;
    }
    if (!kms_cli_check_name("KMSKey name", name)) {
        goto out;
    }
    if (type != NULL && strcmp(type, "merge") != 0) {
        kms_cli_errorf("--type=%s is not supported: a KMSKey takes a JSON merge patch "
                       "(--type=merge, the default)",
                       type);
        goto out;
    }
    if ((patch_text == NULL) == (patch_file == NULL)) {
        kms_cli_errorf("give the patch with -p PATCH or --patch-file FILE (one of them)");
        fputs(usage, stderr);
        goto out;
    }
    docs = json_array();
    if (patch_file != NULL) {
        if (kms_cli_read_file(patch_file, 1u << 20, &file, &flen) != 0) {
            status = KMS_CLI_EXIT_FAIL;
            goto out;
        }
        if (kms_cli_yaml_parse(patch_file, file, flen, docs) != 0) {
            goto out;
        }
    } else if (kms_cli_yaml_parse("--patch", (const uint8_t *)patch_text, strlen(patch_text),
                                  docs) != 0) {
        goto out;
    }
    const json_t *patch = json_array_get(docs, 0);
    if (json_array_size(docs) != 1 || !json_is_object(patch)) {
        kms_cli_errorf(
            "the patch must be one mapping, such as 'spec: {rotation: {interval: 30d}}'");
        goto out;
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)patch, k, v)
    {
        if (strcmp(k, "spec") != 0) {
            kms_cli_errorf("kmsctl patch changes a KMSKey's spec only (the patch has \"%s\")",
                           kms_cli_esc(k));
            goto out;
        }
    }
    if ((status = kms_cli_session_open(&g, KMS_CLI_NEED_PROJECT_TOKEN, &s)) != 0) {
        goto out;
    }
    status = KMS_CLI_EXIT_FAIL;
    snprintf(path, sizeof(path), "kms/keys/%s/%s", s.project, name);
    if (kms_cli_call(&s, "GET", path, NULL, 0, &cur) != 0) {
        goto out;
    }
    const json_t *data = json_object_get(cur, "data");
    json_t *spec = merge_patch(json_object_get(data, "spec"), json_object_get(patch, "spec"));
    /* a field the patch removed (null) goes back to its default: the server keeps a field a
     * write leaves out, where Kubernetes would drop it from the object */
    static const char *const dflt[][2] = {{"rotation", "{\"enabled\":false}"},
                                          {"deletionPolicy", "\"retain\""},
                                          {"exportable", "false"}};
    for (size_t i = 0; json_is_object(spec) && i < sizeof(dflt) / sizeof(dflt[0]); i++) {
        if (json_object_get(json_object_get(data, "spec"), dflt[i][0]) != NULL &&
            json_object_get(spec, dflt[i][0]) == NULL) {
            json_object_set_new(spec, dflt[i][0], json_loads(dflt[i][1], JSON_DECODE_ANY, NULL));
        }
    }
    doc = json_pack("{s:s, s:s, s:{s:s}, s:o*}", "apiVersion", API_VERSION, "kind", "KMSKey",
                    "metadata", "name", name, "spec", spec);
    const char *dname = NULL;
    const json_t *dspec = NULL;
    if (doc == NULL || check_manifest(doc, 0, &dname, &dspec) != 0) {
        status = doc == NULL ? KMS_CLI_EXIT_FAIL : KMS_CLI_EXIT_USAGE;
        goto out;
    }
    req = json_is_object(dspec) ? json_pack("{s:O}", "spec", dspec) : json_pack("{s:{}}", "spec");
    if (req == NULL || kms_cli_call(&s, "POST", path, req, 0, &resp) != 0) {
        goto out;
    }
    if (s.fmt != KMS_CLI_FMT_TABLE) {
        status = kms_cli_print_kmskey(s.fmt, json_object_get(resp, "data")) == 0
                     ? KMS_CLI_EXIT_OK
                     : KMS_CLI_EXIT_FAIL;
        goto out;
    }
    json_int_t before =
        json_integer_value(json_object_get(json_object_get(data, "metadata"), "generation"));
    json_int_t after = json_integer_value(
        json_object_get(json_object_get(json_object_get(resp, "data"), "metadata"), "generation"));
    printf("kmskey.security.kube-dc.com/%s patched%s\n", name,
           before == after ? " (no change)" : "");
    status = KMS_CLI_EXIT_OK;
out:
    if (file != NULL) {
        kms_free_wipe((void **)&file, flen + 1);
    }
    json_decref(docs);
    json_decref(cur);
    json_decref(doc);
    json_decref(req);
    json_decref(resp);
    kms_cli_session_close(&s);
    return status;
}
