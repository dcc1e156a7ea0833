/*
 * test_batch_render.c - batch encrypt's batch_results written straight as text (unaudited
 * requests, every item successful) are the same bytes as the tree rendering (json_dumps,
 * compact, in order: the envelope's writer is byte-identical to it), and decrypt; batches
 * with a failed item, audited requests and references with characters to escape
 * take the tree path with the same shape. A single encrypt's data is written as text the same
 * way (unaudited) and is the same bytes as the tree rendering too.
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

static void test_batch_text_unaudited(void **state)
{
    check_batch(*state);
    check_single(*state);
}

static void test_batch_tree_audited(void **state)
{
    struct kt *t = *state;
    check_batch(t);
    assert_true(kt_audit_contains(t, "\"batch_results\":[{\"ciphertext\":\"hmac-sha256:"));
    check_single(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_batch_text_unaudited, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_batch_tree_audited, kt_setup_audited, kt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
