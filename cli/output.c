/*
 * output.c - how kmsctl prints: aligned tables (Go tabwriter's layout, two spaces between
 * columns, as kube-dc's CLI prints them), pretty JSON, and YAML through libyaml's emitter in
 * kubectl's layout (block style, sequences not indented under their key).
 *
 * Table cells are stored escaped (kms_cli_escape): a value with ESC or a newline cannot forge
 * a row. JSON and YAML keep the exact bytes; their own quoting makes them safe.
 *
 * YAML scalars are emitted plain unless plain would change their type on the way back in
 * (strings such as "true", "3" or "null", which a YAML 1.1 reader like kubectl's would turn
 * into a bool, a number or null); those are double-quoted.
 */
#include "cli/cli.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <yaml.h>

#define TABLE_MAX_COLS 16
#define TABLE_MAX_ROWS 100000

int kms_cli_fmt_parse(const char *s, enum kms_cli_fmt *out)
{
    if (s == NULL || strcmp(s, "table") == 0 || strcmp(s, "wide") == 0) {
        *out = KMS_CLI_FMT_TABLE;
    } else if (strcmp(s, "json") == 0) {
        *out = KMS_CLI_FMT_JSON;
    } else if (strcmp(s, "yaml") == 0) {
        *out = KMS_CLI_FMT_YAML;
    } else {
        return -1;
    }
    return 0;
}

void kms_cli_print_json(const json_t *j)
{
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_ENCODE_ANY);
    printf("%s\n", text ? text : "null");
    free(text);
}

/* ---- YAML -------------------------------------------------------------------------------- */

/* Would a YAML 1.1 resolver read this plain scalar as something other than a string? */
static bool needs_quotes(const char *s)
{
    static const char *const special[] = {
        "",      "~",   "null", "Null", "NULL", "true", "True", "TRUE", "false", "False",
        "FALSE", "yes", "Yes",  "YES",  "no",   "No",   "NO",   "on",   "On",    "ON",
        "off",   "Off", "OFF",  "y",    "Y",    "n",    "N",    ".inf", ".nan",  "-.inf"};
    for (size_t i = 0; i < sizeof(special) / sizeof(special[0]); i++) {
        if (strcmp(s, special[i]) == 0) {
            return true;
        }
    }
    /* YAML 1.1 timestamps (2026-04-15, 2026-04-15T02:00:11Z): go-yaml and kubectl quote them */
    if (strlen(s) >= 8 && s[4] == '-' && s[0] >= '0' && s[0] <= '9' && s[1] >= '0' && s[1] <= '9' &&
        s[2] >= '0' && s[2] <= '9' && s[3] >= '0' && s[3] <= '9') {
        return true;
    }
    /* numbers: optional sign, digits with at most one '.', optional exponent; also 0x/0o */
    const char *p = s;
    if (*p == '+' || *p == '-') {
        p++;
    }
    if (*p == '.' || (*p >= '0' && *p <= '9')) {
        char *end = NULL;
        (void)strtod(p, &end);
        if (end != p && *end == '\0') {
            return true;
        }
        if (p[0] == '0' && (p[1] == 'x' || p[1] == 'o')) {
            return true;
        }
    }
    return false;
}

static int emit(yaml_emitter_t *em, yaml_event_t *ev)
{
    return yaml_emitter_emit(em, ev) ? 0 : -1;
}

static int emit_scalar(yaml_emitter_t *em, const char *text, bool quote)
{
    yaml_event_t ev;
    if (!yaml_scalar_event_initialize(
            &ev, NULL, NULL, (yaml_char_t *)(uintptr_t)text, (int)strlen(text), 1, 1,
            quote ? YAML_DOUBLE_QUOTED_SCALAR_STYLE : YAML_ANY_SCALAR_STYLE)) {
        return -1;
    }
    return emit(em, &ev);
}

static int emit_value(yaml_emitter_t *em, const json_t *j, int depth)
{
    yaml_event_t ev;
    char num[64];
    if (depth > 64) {
        return -1;
    }
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *v;
        if (!yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE) ||
            emit(em, &ev) != 0) {
            return -1;
        }
        json_object_foreach((json_t *)(uintptr_t)j, k, v)
        {
            if (emit_scalar(em, k, needs_quotes(k)) != 0 || emit_value(em, v, depth + 1) != 0) {
                return -1;
            }
        }
        yaml_mapping_end_event_initialize(&ev);
        return emit(em, &ev);
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *v;
        if (!yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_SEQUENCE_STYLE) ||
            emit(em, &ev) != 0) {
            return -1;
        }
        json_array_foreach(j, i, v)
        {
            if (emit_value(em, v, depth + 1) != 0) {
                return -1;
            }
        }
        yaml_sequence_end_event_initialize(&ev);
        return emit(em, &ev);
    }
    case JSON_STRING:
        return emit_scalar(em, json_string_value(j), needs_quotes(json_string_value(j)));
    case JSON_INTEGER:
        snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(j));
        return emit_scalar(em, num, false);
    case JSON_REAL:
        snprintf(num, sizeof(num), "%.17g", json_real_value(j));
        return emit_scalar(em, num, false);
    case JSON_TRUE:
        return emit_scalar(em, "true", false);
    case JSON_FALSE:
        return emit_scalar(em, "false", false);
    case JSON_NULL:
        return emit_scalar(em, "null", false);
    }
    return -1;
}

int kms_cli_print_yaml(const json_t *j)
{
    yaml_emitter_t em;
    yaml_event_t ev;
    int rc = -1;

    if (!yaml_emitter_initialize(&em)) {
        return -1;
    }
    yaml_emitter_set_output_file(&em, stdout);
    yaml_emitter_set_unicode(&em, 1);
    yaml_emitter_set_width(&em, -1);
    yaml_emitter_set_indent(&em, 2);
    if (!yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING) || emit(&em, &ev) != 0 ||
        !yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1) || emit(&em, &ev) != 0 ||
        emit_value(&em, j, 0) != 0 || !yaml_document_end_event_initialize(&ev, 1) ||
        emit(&em, &ev) != 0 || !yaml_stream_end_event_initialize(&ev) || emit(&em, &ev) != 0 ||
        !yaml_emitter_flush(&em)) {
        kms_cli_errorf("cannot write YAML%s%s", em.problem ? ": " : "",
                       em.problem ? em.problem : "");
        goto out;
    }
    rc = 0;
out:
    yaml_emitter_delete(&em);
    return rc;
}

int kms_cli_print_value(enum kms_cli_fmt fmt, const json_t *j)
{
    if (fmt == KMS_CLI_FMT_YAML) {
        return kms_cli_print_yaml(j);
    }
    kms_cli_print_json(j);
    return 0;
}

/* ---- tables ------------------------------------------------------------------------------ */

struct kms_cli_table {
    size_t ncols;
    size_t nrows;
    size_t cap;
    char **cells; /* nrows * ncols */
};

struct kms_cli_table *kms_cli_table_create(size_t ncols)
{
    struct kms_cli_table *t = NULL;
    if (ncols == 0 || ncols > TABLE_MAX_COLS || (t = calloc(1, sizeof(*t))) == NULL) {
        return NULL;
    }
    t->ncols = ncols;
    return t;
}

int kms_cli_table_add(struct kms_cli_table *t, const char *const *cells)
{
    if (t->nrows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        if (cap > TABLE_MAX_ROWS) {
            return -1;
        }
        char **nc = realloc(t->cells, cap * t->ncols * sizeof(*nc));
        if (nc == NULL) {
            return -1;
        }
        t->cells = nc;
        t->cap = cap;
    }
    char **row = t->cells + t->nrows * t->ncols;
    for (size_t i = 0; i < t->ncols; i++) {
        const char *c = cells[i] ? cells[i] : "";
        size_t cap = 4 * strlen(c) + 1;
        row[i] = malloc(cap);
        if (row[i] != NULL) {
            kms_cli_escape(c, strlen(c), row[i], cap);
        }
        if (row[i] == NULL) {
            for (size_t k = 0; k < i; k++) {
                free(row[k]);
            }
            return -1;
        }
    }
    t->nrows++;
    return 0;
}

/* Columns a cell takes: UTF-8 continuation bytes do not count (cells are escaped text). */
static size_t display_width(const char *s)
{
    size_t w = 0;
    for (; *s != '\0'; s++) {
        w += ((unsigned char)*s & 0xc0) != 0x80;
    }
    return w;
}

void kms_cli_table_print(const struct kms_cli_table *t, FILE *f)
{
    size_t width[TABLE_MAX_COLS] = {0};
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t c = 0; c < t->ncols; c++) {
            size_t l = display_width(t->cells[r * t->ncols + c]);
            if (l > width[c]) {
                width[c] = l;
            }
        }
    }
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t c = 0; c < t->ncols; c++) {
            const char *cell = t->cells[r * t->ncols + c];
            if (c + 1 < t->ncols) {
                fprintf(f, "%s%*s", cell, (int)(width[c] + 2 - display_width(cell)), "");
            } else {
                fprintf(f, "%s\n", cell);
            }
        }
    }
}

void kms_cli_table_destroy(struct kms_cli_table **tp)
{
    struct kms_cli_table *t = *tp;
    if (t == NULL) {
        return;
    }
    for (size_t i = 0; i < t->nrows * t->ncols; i++) {
        free(t->cells[i]);
    }
    free(t->cells);
    free(t);
    *tp = NULL;
}

/* ---- times ------------------------------------------------------------------------------- */

static bool digits(const char *p, size_t n, int *out)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return false;
        }
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return true;
}

int64_t kms_cli_parse_time(const char *s)
{
    struct tm tm;
    int y, mo, d, h, mi, se;
    if (s == NULL || strlen(s) < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' ||
        s[16] != ':' || !digits(s, 4, &y) || !digits(s + 5, 2, &mo) || !digits(s + 8, 2, &d) ||
        !digits(s + 11, 2, &h) || !digits(s + 14, 2, &mi) || !digits(s + 17, 2, &se)) {
        return -1;
    }
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = se;
    return (int64_t)timegm(&tm);
}

void kms_cli_age(const char *rfc3339, char *out, size_t n)
{
    int64_t t = kms_cli_parse_time(rfc3339);
    int64_t now;
    int32_t nsec;
    kms_now(&now, &nsec);
    if (t < 0) {
        snprintf(out, n, "-");
        return;
    }
    long long s = (long long)(now > t ? now - t : 0);
    /* k8s.io/apimachinery duration.HumanDuration, slightly simplified */
    if (s < 120) {
        snprintf(out, n, "%llds", s);
    } else if (s < 600) {
        if (s % 60 != 0) {
            snprintf(out, n, "%lldm%llds", s / 60, s % 60);
        } else {
            snprintf(out, n, "%lldm", s / 60);
        }
    } else if (s < 3 * 3600) {
        snprintf(out, n, "%lldm", s / 60);
    } else if (s < 8 * 3600) {
        long long m = (s / 60) % 60;
        if (m != 0) {
            snprintf(out, n, "%lldh%lldm", s / 3600, m);
        } else {
            snprintf(out, n, "%lldh", s / 3600);
        }
    } else if (s < 48 * 3600) {
        snprintf(out, n, "%lldh", s / 3600);
    } else if (s < 8 * 86400) {
        long long hr = (s / 3600) % 24;
        if (hr != 0) {
            snprintf(out, n, "%lldd%lldh", s / 86400, hr);
        } else {
            snprintf(out, n, "%lldd", s / 86400);
        }
    } else if (s < 2 * 365 * 86400LL) {
        snprintf(out, n, "%lldd", s / 86400);
    } else {
        snprintf(out, n, "%lldy", s / (365 * 86400LL));
    }
}
