/*
 * test_batch_render.c - encrypt and rewrap batches write batch_results straight as text, the
 * same bytes as the tree rendering (json_dumps, compact, in order: the envelope's writer is
 * byte-identical to it), with items that succeeded and items that failed; an audited batch
 * hands the hook the values too, and its response line's data is the body's data with every
 * string HMAC'd as the tree form wrote it (RFC 3339 times in clear), same key order: bad
 * base64, missing plaintexts and ciphertexts, versions above the latest or below
 * min_encryption_version/min_decryption_version, 1000 items, rewrap; batches refused as a whole
 * (empty, wrong types) keep their error body and a line without data. A single
 * encrypt's data is written as text the same way (unaudited) and is the same bytes as the
 * tree rendering too.
 */
#include "tests/engine/transit/transit_util.h"

/* The raw body of a root request. */
static char *raw(struct kt *t, const char *method, const char *target, const char *body,
                 int *status)
{
    struct kms_http_header h[1] = {{"X-Vault-Token", "root"}};
    struct kms_http_req req;
    struct kms_http_resp resp;
    memset(&req, 0, sizeof(req));
    req.method = method;
    req.target = target;
    req.headers = h;
    req.nheaders = 1;
    req.body = (const uint8_t *)body;
    req.body_len = strlen(body);
    req.remote_addr = "127.0.0.1";
    req.remote_port = 4242;
    kms_api_handle(t->api, &req, &resp);
    char *out = malloc(resp.body_len + 1);
    assert_non_null(out);
    memcpy(out, resp.body, resp.body_len);
    out[resp.body_len] = '\0';
    *status = resp.status;
    kms_http_resp_dispose(&resp);
    return out;
}

/* The body parsed and dumped again compactly: what the tree rendering would have written. */
static void same_as_tree(const char *body)
{
    json_t *doc = json_loads(body, 0, NULL);
    assert_non_null(doc);
    char *again = json_dumps(doc, JSON_COMPACT);
    size_t n = strlen(body);
    assert_true(n > 0 && body[n - 1] == '\n'); /* the envelope ends in a newline */
    assert_int_equal(strlen(again), n - 1);
    assert_memory_equal(again, body, n - 1);
    free(again);
    json_decref(doc);
}

static void check_batch(struct kt *t)
{
    int st;
    tt_create(t, "b", "{}");
    char *body = raw(t, "POST", "/v1/transit/encrypt/b",
                     "{\"batch_input\":[{\"plaintext\":\"aGVsbG8=\"},{\"plaintext\":\"d29ybGQ=\","
                     "\"reference\":\"r\\\"\\u00e9\\\\\\n<\"}]}",
                     &st);
    assert_int_equal(st, 200);
    same_as_tree(body);
    json_t *doc = json_loads(body, 0, NULL);
    json_t *res = kt_data(doc, "batch_results");
    assert_int_equal(json_array_size(res), 2);
    const char *k;
    json_t *v;
    const char *order[] = {"ciphertext", "key_version", "reference"};
    size_t i = 0;
    json_object_foreach(json_array_get(res, 0), k, v)
    {
        assert_string_equal(k, order[i++]);
    }
    assert_int_equal(i, 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(res, 1), "reference")),
                        "r\"\xc3\xa9\\\n<");
    const char *ct = json_string_value(json_object_get(json_array_get(res, 1), "ciphertext"));
    tt_decrypt_is(t, "b", ct, NULL, "d29ybGQ=");
    json_decref(doc);
    free(body);

    /* a failed item: the tree path, same shape */
    body = raw(t, "POST", "/v1/transit/encrypt/b",
               "{\"batch_input\":[{\"plaintext\":\"aGVsbG8=\"},{\"plaintext\":\"!!\"}]}", &st);
    assert_true(st == 400 || st == 200);
    same_as_tree(body);
    doc = json_loads(body, 0, NULL);
    res = kt_data(doc, "batch_results");
    assert_non_null(json_object_get(json_array_get(res, 1), "error"));
    assert_non_null(json_object_get(json_array_get(res, 0), "ciphertext"));
    json_decref(doc);
    free(body);
}

static void check_single(struct kt *t)
{
    int st;
    tt_create(t, "s", "{}");
    for (int round = 0; round < 2; round++) {
        char *body = raw(t, "POST", "/v1/transit/encrypt/s", "{\"plaintext\":\"aGVsbG8=\"}", &st);
        assert_int_equal(st, 200);
        same_as_tree(body);
        json_t *doc = json_loads(body, 0, NULL);
        json_t *data = json_object_get(doc, "data");
        const char *order[] = {"ciphertext", "key_version"};
        const char *k;
        json_t *v;
        size_t i = 0;
        json_object_foreach(data, k, v)
        {
            assert_string_equal(k, order[i++]);
        }
        assert_int_equal(i, 2);
        assert_int_equal(json_integer_value(json_object_get(data, "key_version")), round + 1);
        tt_decrypt_is(t, "s", json_string_value(json_object_get(data, "ciphertext")), NULL,
                      "aGVsbG8=");
        json_decref(doc);
        free(body);
        json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/s/rotate", "{}"));
    }
}

/* The audit line of the request with this request id and type (NULL when none). */
static json_t *audit_line(const struct kt *t, const char *rid, const char *type)
{
    FILE *f = fopen(t->audit_path, "r");
    assert_non_null(f);
    size_t cap = 1 << 20;
    char *line = malloc(cap);
    assert_non_null(line);
    json_t *found = NULL;
    while (found == NULL && fgets(line, (int)cap, f) != NULL) {
        json_t *v = json_loads(line, 0, NULL);
        const char *id = json_string_value(json_object_get(json_object_get(v, "request"), "id"));
        const char *ty = json_string_value(json_object_get(v, "type"));
        if (id != NULL && ty != NULL && strcmp(id, rid) == 0 && strcmp(ty, type) == 0) {
            found = v;
        } else {
            json_decref(v);
        }
    }
    free(line);
    fclose(f);
    return found;
}

/* A copy of data with every string leaf as the audit device writes a string leaf of data:
 * HMAC'd with its salt, RFC 3339 times in clear (the rule the tree form applied). */
static json_t *hashed(struct kt *t, const json_t *v)
{
    struct kms_audit_device_opts o;
    kms_audit_device_get(t->audit, 0, &o);
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        if (kms_audit_is_rfc3339(s, n)) {
            return json_string(s);
        }
        char mac[KMS_AUDIT_HMAC_LEN + 1];
        assert_int_equal(kms_audit_hash_input(t->audit, o.name, s, n, mac), 0);
        return json_string(mac);
    }
    if (json_is_array(v)) {
        json_t *a = json_array();
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e)
        {
            json_array_append_new(a, hashed(t, e));
        }
        return a;
    }
    if (json_is_object(v)) {
        json_t *o2 = json_object();
        const char *k;
        json_t *e;
        json_object_foreach((json_t *)v, k, e)
        {
            json_object_set_new(o2, k, hashed(t, e));
        }
        return o2;
    }
    return json_deep_copy(v);
}

/*
 * An audited batch: the body is the tree rendering, and the response line's data is that
 * body's data with every string HMAC'd, in the same key order (what the hook wrote from the
 * tree before the handler handed it values), whatever mix of items succeeded or failed.
 */
static size_t check_audited_lines(struct kt *t, const char *target, const char *body_in,
                                  int want_status, size_t want_items)
{
    int st;
    char *body = raw(t, "POST", target, body_in, &st);
    assert_int_equal(st, want_status);
    same_as_tree(body);
    json_t *doc = json_loads(body, 0, NULL);
    assert_non_null(doc);
    const char *rid = json_string_value(json_object_get(doc, "request_id"));
    assert_non_null(rid);
    json_t *line = audit_line(t, rid, "response");
    assert_non_null(line);
    json_t *got = json_object_get(json_object_get(line, "response"), "data");
    json_t *data = json_object_get(doc, "data");
    assert_int_equal(json_array_size(json_object_get(data, "batch_results")), want_items);
    json_t *want = hashed(t, data);
    char *gt = json_dumps(got, JSON_COMPACT);
    char *wt = json_dumps(want, JSON_COMPACT);
    assert_non_null(gt);
    assert_non_null(wt);
    assert_string_equal(gt, wt);
    assert_int_equal(json_integer_value(json_object_get(line, "status")), want_status);
    free(gt);
    free(wt);
    size_t failed = 0;
    for (size_t k = 0; k < want_items; k++) {
        failed += json_object_get(json_array_get(json_object_get(data, "batch_results"), k),
                                  "error") != NULL;
    }
    json_decref(want);
    json_decref(line);
    json_decref(doc);
    free(body);
    return failed;
}

/* A batch refused as a whole: the error body, and a response line with the error and no
 * data. */
static void check_refused(struct kt *t, const char *body_in, int want_status, const char *want)
{
    int st;
    char *body = raw(t, "POST", "/v1/transit/encrypt/m", body_in, &st);
    assert_int_equal(st, want_status);
    json_t *doc = json_loads(body, 0, NULL);
    assert_non_null(doc);
    assert_non_null(strstr(kt_err(doc), want));
    assert_null(json_object_get(doc, "data"));
    json_decref(doc);
    free(body);
    FILE *f = fopen(t->audit_path, "r");
    assert_non_null(f);
    size_t cap = 1 << 20;
    char *line = malloc(cap);
    assert_non_null(line);
    json_t *last = NULL;
    while (fgets(line, (int)cap, f) != NULL) {
        json_decref(last);
        last = json_loads(line, 0, NULL);
    }
    fclose(f);
    free(line);
    assert_string_equal(json_string_value(json_object_get(last, "type")), "response");
    assert_non_null(strstr(json_string_value(json_object_get(last, "error")), want));
    assert_null(json_object_get(json_object_get(last, "response"), "data"));
    json_decref(last);
}

static void check_audited(struct kt *t)
{
    tt_create(t, "m", "{}");
    /* good items, bad base64, a missing plaintext, references to escape, one empty, one an
     * RFC 3339 time (in clear), non-ASCII */
    assert_int_equal(
        check_audited_lines(
            t, "/v1/transit/encrypt/m",
            "{\"batch_input\":[{\"plaintext\":\"aGVsbG8=\",\"reference\":\"r\\\"\\u00e9\\\\\\n<\"},"
            "{\"plaintext\":\"!!\"},{\"plaintext\":\"aGVsbG8=\"},"
            "{\"reference\":\"2026-05-01T10:00:00Z\"},"
            "{\"plaintext\":\"d29ybGQ=\",\"reference\":\"\\ud834\\udd1e\"}]}",
            400, 5),
        2);
    /* the same with partial_failure_response_code */
    assert_int_equal(
        check_audited_lines(t, "/v1/transit/encrypt/m",
                            "{\"batch_input\":[{\"plaintext\":\"aGVsbG8=\"},{\"plaintext\":\"!\"}],"
                            "\"partial_failure_response_code\":207}",
                            207, 2),
        1);
    /* every item failed: no version exists above the latest */
    assert_true(
        check_audited_lines(t, "/v1/transit/encrypt/m",
                            "{\"batch_input\":[{\"plaintext\":\"aGVsbG8=\",\"key_version\":9},"
                            "{\"plaintext\":\"aGVsbG8=\",\"key_version\":9,\"reference\":\"x\"}]}",
                            400, 2) == 2);
    /* all good, after a rotation: versions 1 and 2 */
    json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/m/rotate", "{}"));
    assert_int_equal(
        check_audited_lines(t, "/v1/transit/encrypt/m",
                            "{\"batch_input\":[{\"plaintext\":\"aGVsbG8=\",\"key_version\":1},"
                            "{\"plaintext\":\"aGVsbG8=\"},{\"plaintext\":\"\"}]}",
                            200, 3),
        0);
    /* a 1000-item batch with every tenth item's base64 bad */
    size_t cap = 1000 * 64 + 64, o = 0;
    char *big = malloc(cap);
    assert_non_null(big);
    o += (size_t)snprintf(big + o, cap - o, "{\"batch_input\":[");
    for (int i = 0; i < 1000; i++) {
        o += (size_t)snprintf(big + o, cap - o, "%s{\"plaintext\":\"%s\",\"reference\":\"%d\"}",
                              i ? "," : "", i % 10 == 3 ? "a?b=" : "aGVsbG8gd29ybGQ=", i);
    }
    snprintf(big + o, cap - o, "]}");
    assert_int_equal(check_audited_lines(t, "/v1/transit/encrypt/m", big, 400, 1000), 100);
    free(big);
    /* rewrap batches: always 200, item errors inside */
    json_t *e = tt_req(t, 200, "POST", "/v1/transit/encrypt/m", "{\"plaintext\":\"aGVsbG8=\"}");
    const char *ct = json_string_value(kt_data(e, "ciphertext"));
    assert_non_null(ct);
    char rw[512];
    snprintf(rw, sizeof(rw),
             "{\"batch_input\":[{\"ciphertext\":\"%s\",\"reference\":\"a\"},"
             "{\"ciphertext\":\"vault:v1:!!\"},{\"reference\":\"c\"}]}",
             ct);
    assert_int_equal(check_audited_lines(t, "/v1/transit/rewrap/m", rw, 200, 3), 2);
    /* a version-1 ciphertext once min_decryption_version is 2: that item fails (rewrap), and
     * an encrypt asking for version 1 fails too */
    char ct1[256];
    json_t *e1 = tt_req(t, 200, "POST", "/v1/transit/encrypt/m",
                        "{\"plaintext\":\"aGVsbG8=\",\"key_version\":1}");
    snprintf(ct1, sizeof(ct1), "%s", json_string_value(kt_data(e1, "ciphertext")));
    json_decref(e1);
    json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/m/config",
                       "{\"min_decryption_version\":2,\"min_encryption_version\":2}"));
    snprintf(rw, sizeof(rw),
             "{\"batch_input\":[{\"ciphertext\":\"%s\",\"reference\":\"old\"},"
             "{\"ciphertext\":\"%s\",\"reference\":\"new\"}]}",
             ct1, ct);
    assert_int_equal(check_audited_lines(t, "/v1/transit/rewrap/m", rw, 200, 2), 1);
    assert_int_equal(
        check_audited_lines(t, "/v1/transit/encrypt/m",
                            "{\"batch_input\":[{\"plaintext\":\"aGVsbG8=\",\"key_version\":1},"
                            "{\"plaintext\":\"aGVsbG8=\"}]}",
                            400, 2),
        1);
    json_decref(e);
    /* refused as a whole: nothing rendered from items */
    check_refused(t, "{\"batch_input\":[]}", 400, "missing batch input to process");
    check_refused(t, "{\"batch_input\":[{\"plaintext\":5}]}", 500,
                  "'[0].plaintext' expected type 'string'");
    check_refused(t, "{\"batch_input\":[{\"plaintext\":\"aGVsbG8=\"},7]}", 500,
                  "[1] expected a map, got 'json.Number'");
}

static void test_batch_text_unaudited(void **state)
{
    check_batch(*state);
    check_single(*state);
}

static void test_batch_text_audited(void **state)
{
    struct kt *t = *state;
    check_batch(t);
    assert_true(kt_audit_contains(t, "\"batch_results\":[{\"ciphertext\":\"hmac-sha256:"));
    check_single(t);
    check_audited(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_batch_text_unaudited, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_batch_text_audited, kt_setup_audited, kt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
