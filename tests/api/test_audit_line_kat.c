/*
 * test_audit_line_kat.c - known answers for the audit hook's lines: request contexts with
 * fixed contents (token, accessor, policies, metadata, mount, namespace, path, parameters,
 * remote address, the handler's data/auth/warnings/error, versions, kmsd's names) must give
 * exactly the request and response line bodies in audit_line_kat.inc. The golden lines were
 * produced by the hook of 23be32f, which built jansson trees of the auth/request/response
 * blocks and kmsd's fields and handed them to audit/; the hook that writes the blocks straight
 * into the line must give the same bytes. Cases: a single encrypt, batches (items from the
 * context or from batch_input), wrapped and plain errors, a refused token (allowed=false and
 * the error on both lines), hmac_accessor off with an Authorization bearer token in the root
 * namespace, a login (response auth, warnings, subject), escaping (quotes, control
 * characters, non-ASCII in and outside the BMP, RFC 3339 times in clear), a kms/ KMSKey
 * (version from status, project), truncated versions, elided data, raw data, 204, and header
 * values that are not UTF-8 (left out, as jansson left them out); and an encrypt batch with
 * failed items, references to escape, an empty one and an RFC 3339 one, given as the tree and
 * as the values a handler hands with its text (kms_batch_result): the same lines; and a single
 * encrypt as such values (single_result): the lines of the tree's "encrypt".
 *
 * KAT_PRINT=1 prints the table instead of comparing (to regenerate it).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "api/api_int.h"
#include "audit/audit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SALT "0f7a9c4e-3b21-4d5e-8a6b-1c2d3e4f5a6b"
#define TIME "2026-05-01T10:00:00.123456789Z"

struct kat {
    const char *name;
    const char *req;
    const char *resp;
};

static const struct kat kats[] = {
#include "audit_line_kat.inc"
};

struct fx {
    struct kms_ctx c;
    json_t *keep; /* the tree the values of batch_results point into */
    struct kms_http_req http;
    struct kms_http_header headers[4];
    int rc;
    bool refused;
    bool hmac_accessor;
};

static json_t *J(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &e);
    if (v == NULL) {
        fail_msg("bad fixture JSON: %s: %s", e.text, text);
    }
    return v;
}

/* An audited transit encrypt by a Kubernetes service account's token in org1/. */
static void base(struct fx *f)
{
    struct kms_ctx *c = &f->c;
    memset(f, 0, sizeof(*f));
    f->hmac_accessor = true;
    f->headers[0] = (struct kms_http_header){"Content-Type", "application/json"};
    f->headers[1] = (struct kms_http_header){"X-Vault-Token", "s.SuperSecretToken123"};
    f->http.method = "POST";
    f->http.target = "/v1/org1/transit/encrypt/org1-proj-app";
    f->http.headers = f->headers;
    f->http.nheaders = 2;
    f->http.remote_addr = "10.0.3.7";
    f->http.remote_port = 51234;
    c->http = &f->http;
    c->op = KMS_OP_UPDATE;
    snprintf(c->ns.id, sizeof(c->ns.id), "Xk2p9Q");
    snprintf(c->ns.path, sizeof(c->ns.path), "org1/");
    snprintf(c->mount.path, sizeof(c->mount.path), "transit/");
    snprintf(c->mount.type, sizeof(c->mount.type), "transit");
    snprintf(c->mount.accessor, sizeof(c->mount.accessor), "transit_0fb87e75");
    snprintf(c->path, sizeof(c->path), "transit/encrypt/org1-proj-app");
    c->ncap = 1;
    c->cap_names[0] = "name";
    snprintf(c->cap_values[0], sizeof(c->cap_values[0]), "org1-proj-app");
    c->has_token = true;
    snprintf(c->token.accessor, sizeof(c->token.accessor), "accessor-abcdef");
    snprintf(c->token.display_name, sizeof(c->token.display_name), "k8s-host-org1-proj-kms-plugin");
    snprintf(c->token.subject, sizeof(c->token.subject), "system:serviceaccount:proj:kms-plugin");
    c->token.npolicies = 2;
    snprintf(c->token.policies[0], sizeof(c->token.policies[0]), "default");
    snprintf(c->token.policies[1], sizeof(c->token.policies[1]), "kms-developer");
    c->token.nmeta = 2;
    snprintf(c->token.meta_keys[0], sizeof(c->token.meta_keys[0]), "role");
    snprintf(c->token.meta_values[0], sizeof(c->token.meta_values[0]), "tcp-cluster1");
    snprintf(c->token.meta_keys[1], sizeof(c->token.meta_keys[1]), "service_account_name");
    snprintf(c->token.meta_values[1], sizeof(c->token.meta_values[1]), "cluster1-kms-plugin");
    c->token.creation_time = 1777629480; /* 2026-05-01T09:58:00Z */
    c->token.expire_time = 1777629480 + 3600;
    snprintf(c->audit.request_id, sizeof(c->audit.request_id),
             "a811fad5-095e-4c19-a9e4-c4d94c7f5d95");
    c->audit.armed = true;
    c->audit.op = "encrypt";
    c->audit.resource = "KMSKey";
    c->params = J("{\"plaintext\":\"cGxhaW50ZXh0\",\"context\":\"Y3R4\",\"n\":5,\"b\":true,"
                  "\"z\":null}");
    c->data = J("{\"ciphertext\":\"vault:v3:AAECAwQFBgcICQoLDA0ODw==\",\"key_version\":3}");
    kms_ctx_note_version(c, 3);
}

static void fail_with(struct fx *f, int status, bool wrapped, const char *msg)
{
    f->rc = -1;
    f->c.err.status = status;
    f->c.err.wrapped = wrapped;
    snprintf(f->c.err.msg, sizeof(f->c.err.msg), "%s", msg);
}

static void case_encrypt(struct fx *f)
{
    base(f);
}

static void case_batch(struct fx *f)
{
    base(f);
    json_decref(f->c.params);
    json_decref(f->c.data);
    f->c.params = J("{\"batch_input\":[{\"plaintext\":\"YQ==\"},{\"plaintext\":\"Yg==\","
                    "\"context\":\"Yw==\",\"nonce\":\"\"},{\"plaintext\":7}]}");
    f->c.data = J("{\"batch_results\":[{\"ciphertext\":\"vault:v1:eA==\",\"key_version\":1},"
                  "{\"ciphertext\":\"vault:v2:eQ==\",\"key_version\":2},"
                  "{\"error\":\"illegal base64 data at input byte 0\"}]}");
    f->c.audit.nversions = 0;
    kms_ctx_note_version(&f->c, 2);
    kms_ctx_note_version(&f->c, 1);
    f->c.status = 400;
}

/* a batch whose item count comes from the context, with one version touched */
static void case_batch_items(struct fx *f)
{
    case_batch(f);
    f->c.items = 1000;
    f->c.status = 0;
    f->c.audit.nversions = 0;
    kms_ctx_note_version(&f->c, 1);
}

static void case_error_wrapped(struct fx *f)
{
    base(f);
    fail_with(f, 400, true, "encryption key not found");
}

static void case_error_plain(struct fx *f)
{
    base(f);
    fail_with(f, 500, false, "internal error");
}

static void case_refused(struct fx *f)
{
    base(f);
    f->refused = true;
    f->c.has_token = false;
    memset(&f->c.token, 0, sizeof(f->c.token));
    f->c.audit.op = NULL;
    f->c.audit.resource = NULL;
    json_decref(f->c.data);
    f->c.data = NULL;
    f->c.audit.nversions = 0;
    fail_with(f, 403, false, "permission denied");
}

/* an ACL denial: a valid token, allowed=false, Vault's wrapped error */
static void case_denied(struct fx *f)
{
    base(f);
    f->refused = true;
    json_decref(f->c.data);
    f->c.data = NULL;
    f->c.audit.nversions = 0;
    fail_with(f, 403, true, "permission denied");
}

static void case_bearer_root_ns(struct fx *f)
{
    base(f);
    f->hmac_accessor = false;
    f->headers[1] = (struct kms_http_header){"Authorization", "Bearer  s.BearerToken"};
    f->c.ns.id[0] = '\0';
    f->c.ns.path[0] = '\0';
    f->c.mount.accessor[0] = '\0';
    f->c.token.nmeta = 0;
    f->c.token.npolicies = 0;
    f->c.token.expire_time = 0;
    f->c.token.subject[0] = '\0';
    f->http.remote_addr = NULL;
    json_decref(f->c.params);
    f->c.params = J("{}");
}

static void case_no_times(struct fx *f)
{
    base(f);
    f->c.token.creation_time = 0;
    f->c.token.expire_time = 0;
    f->c.token.accessor[0] = '\0';
    f->http.remote_addr = "";
    json_decref(f->c.params);
    f->c.params = NULL;
    f->c.mount.path[0] = '\0';
}

static void case_login(struct fx *f)
{
    base(f);
    f->c.has_token = false;
    memset(&f->c.token, 0, sizeof(f->c.token));
    f->headers[1] = f->headers[0];
    f->http.nheaders = 1;
    snprintf(f->c.mount.path, sizeof(f->c.mount.path), "auth/k8s-host/");
    snprintf(f->c.mount.type, sizeof(f->c.mount.type), "kubernetes");
    f->c.mount.accessor[0] = '\0';
    snprintf(f->c.path, sizeof(f->c.path), "auth/k8s-host/login");
    f->c.ncap = 0;
    f->c.audit.op = "login";
    f->c.audit.resource = "Login";
    f->c.audit.subject = "system:serviceaccount:proj:kms-plugin";
    f->c.audit.nversions = 0;
    json_decref(f->c.params);
    json_decref(f->c.data);
    f->c.data = NULL;
    f->c.params = J("{\"jwt\":\"eyJhbGciOiJSUzI1NiJ9.e30.c2ln\",\"role\":\"tcp-cluster1\"}");
    f->c.auth = J("{\"client_token\":\"s.NewToken\",\"accessor\":\"acc-new\","
                  "\"policies\":[\"default\"],\"token_policies\":[\"default\"],"
                  "\"metadata\":{\"role\":\"tcp-cluster1\"},\"lease_duration\":3600,"
                  "\"renewable\":true,\"entity_id\":\"\",\"token_type\":\"service\","
                  "\"orphan\":true,\"mfa_requirement\":null,\"num_uses\":0}");
    f->c.warnings = J("[\"role has no bound audiences\"]");
}

/* subject from the issued token's display name */
static void case_login_display_name(struct fx *f)
{
    case_login(f);
    f->c.audit.subject = NULL;
    json_object_set_new(f->c.auth, "display_name", json_string("k8s-host-proj-kms-plugin"));
    f->hmac_accessor = false;
}

static void case_escapes(struct fx *f)
{
    base(f);
    snprintf(f->c.token.display_name, sizeof(f->c.token.display_name),
             "quo\"te\\back\nline\ttab\x01\x7f/slash");
    snprintf(f->c.token.meta_values[0], sizeof(f->c.token.meta_values[0]),
             "caf\xc3\xa9 \xe2\x98\x83 \xf0\x9d\x84\x9e");
    snprintf(f->c.token.meta_keys[1], sizeof(f->c.token.meta_keys[1]), "k\xc3\xbc\"y");
    snprintf(f->c.path, sizeof(f->c.path), "transit/encrypt/\xe2\x82\xac-key");
    snprintf(f->c.cap_values[0], sizeof(f->c.cap_values[0]), "\xe2\x82\xac-key");
    f->http.remote_addr = "::1";
    json_decref(f->c.params);
    f->c.params = J("{\"s\":\"\\u00fc\\n\",\"t\":\"2026-05-01T10:00:00Z\","
                    "\"bad_t\":\"2026-02-30T10:00:00Z\",\"o\":{\"a\":[\"x\",1,null,true,"
                    "{\"deep\":\"y\"},[]],\"e\":{}},\"k\\\"q\":\"\",\"f\":2.5}");
    json_decref(f->c.data);
    f->c.data = J("{\"keys\":{\"1\":1777629480,\"2\":\"2026-05-01T09:58:00.5+02:00\"},"
                  "\"name\":\"\\u20ac-key\",\"type\":\"aes256-gcm96\"}");
    f->c.warnings = J("[\"w\\\"1\",\"\\u00e9\"]");
    f->c.audit.op = "read";
}

static void case_kms_key(struct fx *f)
{
    base(f);
    snprintf(f->c.mount.path, sizeof(f->c.mount.path), "kms/");
    snprintf(f->c.mount.type, sizeof(f->c.mount.type), "kms");
    snprintf(f->c.path, sizeof(f->c.path), "kms/projects/p1/keys/k1/rotate");
    f->c.ncap = 2;
    f->c.cap_names[0] = "project";
    snprintf(f->c.cap_values[0], sizeof(f->c.cap_values[0]), "p1");
    f->c.cap_names[1] = "name";
    snprintf(f->c.cap_values[1], sizeof(f->c.cap_values[1]), "k1");
    f->c.audit.op = "rotate";
    f->c.audit.nversions = 0;
    json_decref(f->c.params);
    f->c.params = J("{}");
    json_decref(f->c.data);
    f->c.data = J("{\"metadata\":{\"name\":\"k1\"},\"status\":{\"currentVersion\":4,"
                  "\"minDecryptionVersion\":2}}");
}

static void case_kms_min_version(struct fx *f)
{
    case_kms_key(f);
    f->c.audit.op = "set-min-decryption-version";
}

static void case_truncated(struct fx *f)
{
    base(f);
    for (uint32_t v = 1; v <= KMS_CTX_MAX_VERSIONS + 3; v++) {
        kms_ctx_note_version(&f->c, v);
    }
    f->c.audit.op = "delete";
    f->c.op = KMS_OP_DELETE;
    json_decref(f->c.data);
    f->c.data = NULL;
}

static void case_elided(struct fx *f)
{
    base(f);
    f->c.audit.elide_data = true;
    f->c.audit.op = NULL;
    f->c.audit.resource = "Audit";
    f->c.op = KMS_OP_READ;
    f->c.ncap = 0;
    snprintf(f->c.mount.path, sizeof(f->c.mount.path), "sys/");
    snprintf(f->c.mount.type, sizeof(f->c.mount.type), "system");
    snprintf(f->c.mount.accessor, sizeof(f->c.mount.accessor), "system_12345678");
    snprintf(f->c.path, sizeof(f->c.path), "sys/audit/events");
    json_decref(f->c.data);
    f->c.data = J("{\"events\":[{\"op\":\"encrypt\"}],\"truncated\":false}");
    f->c.audit.nversions = 0;
}

static void case_raw(struct fx *f)
{
    base(f);
    json_decref(f->c.data);
    f->c.data = NULL;
    f->c.raw = J("{\"initialized\":true,\"sealed\":false,\"version\":\"0.1.0\"}");
    f->c.status = 429;
    f->c.audit.nversions = 0;
}

static void case_no_content(struct fx *f)
{
    base(f);
    json_decref(f->c.data);
    f->c.data = NULL;
    f->c.audit.nversions = 0;
    f->c.op = KMS_OP_DELETE;
    f->c.audit.op = NULL;
}

/* header values that are not UTF-8: jansson refused them, so the fields were left out */
static void case_not_utf8(struct fx *f)
{
    base(f);
    f->headers[1] = (struct kms_http_header){"X-Vault-Token", "s.bad\xff"};
    f->http.remote_addr = "10.0.0.\xfe";
    snprintf(f->c.token.policies[1], sizeof(f->c.token.policies[1]), "p\xc3");
    snprintf(f->c.token.meta_keys[0], sizeof(f->c.token.meta_keys[0]), "r\xff");
}

/* the same metadata key twice: the first position, the last value (jansson's set) */
static void case_meta_dup(struct fx *f)
{
    base(f);
    f->c.token.nmeta = 3;
    snprintf(f->c.token.meta_keys[2], sizeof(f->c.token.meta_keys[2]), "role");
    snprintf(f->c.token.meta_values[2], sizeof(f->c.token.meta_values[2]), "second");
}

/* an audited encrypt batch with items that failed, references to escape, an empty one (its
 * HMAC taken once per line) and one that is an RFC 3339 time (in clear), as the tree */
static void case_batch_mixed_tree(struct fx *f)
{
    base(f);
    json_decref(f->c.params);
    json_decref(f->c.data);
    f->c.params = J("{\"batch_input\":[{\"plaintext\":\"YQ==\",\"reference\":\"r\\\"1\\u00e9\\n\"},"
                    "{\"plaintext\":\"!!\"},{\"plaintext\":\"Yg==\"},"
                    "{\"plaintext\":\"\",\"reference\":\"2026-05-01T10:00:00Z\"},"
                    "{\"plaintext\":\"Yw==\",\"key_version\":2,\"reference\":\"\\ud834\\udd1e\"}],"
                    "\"partial_failure_response_code\":207}");
    f->c.data = J(
        "{\"batch_results\":["
        "{\"ciphertext\":\"vault:v1:eA==\",\"key_version\":1,\"reference\":\"r\\\"1\\u00e9\\n\"},"
        "{\"error\":\"illegal base64 data at input byte 0\",\"reference\":\"\"},"
        "{\"ciphertext\":\"vault:v1:eQ==\",\"key_version\":1,\"reference\":\"\"},"
        "{\"error\":\"missing plaintext to encrypt\",\"reference\":\"2026-05-01T10:00:00Z\"},"
        "{\"ciphertext\":\"vault:v2:eg==\",\"key_version\":2,\"reference\":\"\\ud834\\udd1e\"}]}");
    f->c.audit.nversions = 0;
    kms_ctx_note_version(&f->c, 1);
    kms_ctx_note_version(&f->c, 2);
    f->c.items = 5;
    f->c.status = 207;
}

/* the same batch as the values a handler hands the hook with its text (no tree): the same
 * lines */
static void case_batch_mixed_values(struct fx *f)
{
    case_batch_mixed_tree(f);
    json_t *res = json_object_get(f->c.data, "batch_results");
    size_t n = json_array_size(res);
    f->c.batch_results = calloc(n, sizeof(*f->c.batch_results));
    assert_non_null(f->c.batch_results);
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(res, i);
        struct kms_batch_result *r = &f->c.batch_results[i];
        json_t *ct = json_object_get(o, "ciphertext");
        json_t *err = json_object_get(o, "error");
        json_t *ref = json_object_get(o, "reference");
        r->ciphertext = json_string_value(ct);
        r->ciphertext_len = json_string_length(ct);
        r->key_version = (uint32_t)json_integer_value(json_object_get(o, "key_version"));
        r->reference = json_string_value(ref);
        r->reference_len = json_string_length(ref);
        r->error = json_string_value(err);
        r->error_len = json_string_length(err);
    }
    f->c.nbatch_results = n;
    f->c.data_json = json_dumps(f->c.data, JSON_COMPACT);
    f->c.data_json_len = strlen(f->c.data_json);
    f->keep = f->c.data;
    f->c.data = NULL;
}

/* a single encrypt as the values its handler hands the hook with its text (no tree): the
 * lines of "encrypt" */
static void case_encrypt_values(struct fx *f)
{
    base(f);
    json_t *ct = json_object_get(f->c.data, "ciphertext");
    f->c.batch_results = calloc(1, sizeof(*f->c.batch_results));
    assert_non_null(f->c.batch_results);
    f->c.batch_results[0].ciphertext = json_string_value(ct);
    f->c.batch_results[0].ciphertext_len = json_string_length(ct);
    f->c.batch_results[0].key_version =
        (uint32_t)json_integer_value(json_object_get(f->c.data, "key_version"));
    f->c.batch_results[0].reference = "";
    f->c.nbatch_results = 1;
    f->c.single_result = true;
    f->c.data_json = json_dumps(f->c.data, JSON_COMPACT);
    f->c.data_json_len = strlen(f->c.data_json);
    f->keep = f->c.data;
    f->c.data = NULL;
}

/* values of a batch whose only item failed with an error that is not UTF-8 (left out) */
static void case_batch_values_not_utf8(struct fx *f)
{
    base(f);
    json_decref(f->c.params);
    json_decref(f->c.data);
    f->c.data = NULL;
    f->c.params = J("{\"batch_input\":[{\"plaintext\":\"!!\"}]}");
    f->c.batch_results = calloc(1, sizeof(*f->c.batch_results));
    assert_non_null(f->c.batch_results);
    f->c.batch_results[0].reference = "";
    f->c.batch_results[0].error = "bad \xff";
    f->c.batch_results[0].error_len = 5;
    f->c.nbatch_results = 1;
    f->c.data_json = strdup("{\"batch_results\":[{\"reference\":\"\"}]}");
    f->c.data_json_len = strlen(f->c.data_json);
    f->c.audit.nversions = 0;
    f->c.status = 400;
}

static const struct {
    const char *name;
    void (*make)(struct fx *f);
} cases[] = {
    {"encrypt", case_encrypt},
    {"batch", case_batch},
    {"batch items", case_batch_items},
    {"error wrapped", case_error_wrapped},
    {"error plain", case_error_plain},
    {"refused token", case_refused},
    {"denied by policy", case_denied},
    {"bearer, root namespace, hmac_accessor off", case_bearer_root_ns},
    {"no times, no accessor, no params, no mount", case_no_times},
    {"login", case_login},
    {"login display name", case_login_display_name},
    {"escapes", case_escapes},
    {"kms KMSKey", case_kms_key},
    {"kms min version", case_kms_min_version},
    {"truncated versions", case_truncated},
    {"elided data", case_elided},
    {"raw", case_raw},
    {"no content", case_no_content},
    {"not utf-8", case_not_utf8},
    {"metadata key twice", case_meta_dup},
    {"batch mixed, tree", case_batch_mixed_tree},
    {"batch mixed, values", case_batch_mixed_values},
    {"batch values, error not utf-8", case_batch_values_not_utf8},
    {"encrypt, values", case_encrypt_values},
};

static void free_fx(struct fx *f)
{
    json_decref(f->c.params);
    json_decref(f->c.data);
    json_decref(f->c.raw);
    json_decref(f->c.auth);
    json_decref(f->c.warnings);
    json_decref(f->keep);
    free(f->c.data_json);
    free(f->c.batch_results);
}

/* C string literal of s */
static void print_c(const char *s)
{
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\') {
            printf("\\%c", *p);
        } else if (*p < 0x20 || *p >= 0x7f) {
            printf("\\%03o", *p);
        } else {
            putchar(*p);
        }
    }
    putchar('"');
}

static void test_hook_lines_match_known_answers(void **state)
{
    (void)state;
    bool print = getenv("KAT_PRINT") != NULL;
    size_t nk = sizeof(kats) / sizeof(kats[0]);
    if (!print) {
        assert_int_equal(nk, sizeof(cases) / sizeof(cases[0]));
    }
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct fx *f = calloc(1, sizeof(*f));
        assert_non_null(f);
        cases[i].make(f);
        struct kms_audit_device_opts o;
        kms_audit_device_opts_default(&o);
        o.hmac_accessor = f->hmac_accessor;
        char *req = NULL, *resp = NULL;
        size_t rl = 0, pl = 0;
        assert_int_equal(kms_api_audit_format_kat(&f->c, f->rc, f->refused, &o, SALT, TIME, &req,
                                                  &rl, &resp, &pl),
                         0);
        assert_int_equal(strlen(req), rl);
        assert_int_equal(strlen(resp), pl);
        if (print) {
            printf("{");
            print_c(cases[i].name);
            printf(",\n ");
            print_c(req);
            printf(",\n ");
            print_c(resp);
            printf("},\n");
        } else {
            assert_string_equal(kats[i].name, cases[i].name);
            if (strcmp(req, kats[i].req) != 0) {
                fail_msg("%s request:\n got  %s\n want %s", cases[i].name, req, kats[i].req);
            }
            if (strcmp(resp, kats[i].resp) != 0) {
                fail_msg("%s response:\n got  %s\n want %s", cases[i].name, resp, kats[i].resp);
            }
            /* every line is a JSON object, pure ASCII */
            json_t *v = json_loads(resp, 0, NULL);
            assert_true(json_is_object(v));
            json_decref(v);
            for (const char *p = resp; *p != '\0'; p++) {
                assert_true((unsigned char)*p < 0x80);
            }
        }
        free(req);
        free(resp);
        free_fx(f);
        free(f);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hook_lines_match_known_answers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
