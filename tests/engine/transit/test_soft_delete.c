/*
 * test_soft_delete.c - keys/:name/soft-delete and soft-delete-restore (OpenBao's
 * pathPolicySoftDelete(Restore)): the key object with soft_deleted, the repeat warnings, 204
 * for an absent key, and every use of the key refused with "refusing to use soft-deleted
 * key" at OpenBao's status for that endpoint, while read, list and config still work; the
 * flag survives a restart and travels in a backup.
 */
#include "tests/engine/transit/transit_util.h"

#define WRAPPED(msg) "1 error occurred:\n\t* " msg "\n\n"
#define SD "refusing to use soft-deleted key"

static bool soft_deleted(struct kt *t, const char *name)
{
    char target[128];
    snprintf(target, sizeof(target), "/v1/transit/keys/%s", name);
    json_t *b = tt_req(t, 200, "GET", target, NULL);
    json_t *v = kt_data(b, "soft_deleted");
    assert_true(json_is_boolean(v));
    bool r = json_is_true(v);
    json_decref(b);
    return r;
}

static void test_soft_delete_and_restore(void **state)
{
    struct kt *t = *state;
    char pt[16];
    tt_b64("hello", pt);
    /* absent keys: nothing to do, 204 as OpenBao's nil response */
    json_decref(tt_req(t, 204, "DELETE", "/v1/transit/keys/none/soft-delete", NULL));
    json_decref(tt_req(t, 204, "POST", "/v1/transit/keys/none/soft-delete-restore", "{}"));

    tt_create(t, "sd", "{\"exportable\":true,\"allow_plaintext_backup\":true}");
    char *ct = tt_encrypt(t, "sd", pt, NULL);
    assert_false(soft_deleted(t, "sd"));
    json_t *b = tt_req(t, 200, "DELETE", "/v1/transit/keys/sd/soft-delete", NULL);
    assert_true(json_is_true(kt_data(b, "soft_deleted")));
    assert_string_equal(tt_str(b, "name"), "sd");
    assert_string_equal(tt_warning(b), "");
    json_decref(b);
    b = tt_req(t, 200, "DELETE", "/v1/transit/keys/sd/soft-delete", NULL);
    assert_string_equal(tt_warning(b), "key was already marked as soft deleted");
    json_decref(b);
    assert_true(soft_deleted(t, "sd"));

    /* refused: OpenBao's statuses per endpoint */
    char body[256];
    tt_fail(t, 400, "POST", "/v1/transit/encrypt/sd", "{\"plaintext\":\"aGVsbG8=\"}", SD);
    snprintf(body, sizeof(body), "{\"ciphertext\":\"%s\"}", ct);
    tt_fail(t, 400, "POST", "/v1/transit/decrypt/sd", body, SD);
    tt_fail(t, 400, "POST", "/v1/transit/rewrap/sd", body, SD);
    tt_fail(t, 400, "POST", "/v1/transit/datakey/plaintext/sd", "{}", SD);
    tt_fail(t, 400, "POST", "/v1/transit/hmac/sd", "{\"input\":\"aGVsbG8=\"}", SD);
    tt_fail(t, 400, "POST", "/v1/transit/verify/sd",
            "{\"input\":\"aGVsbG8=\",\"hmac\":\"vault:v1:AAAA\"}", SD);
    tt_fail(t, 500, "POST", "/v1/transit/keys/sd/rotate", "{}", WRAPPED(SD));
    tt_fail(t, 500, "GET", "/v1/transit/export/encryption-key/sd", NULL, WRAPPED(SD));
    tt_fail(t, 500, "GET", "/v1/transit/backup/sd", NULL, WRAPPED(SD));
    /* a batch: the items carry the error, the request is a user error (400) */
    b = tt_req(t, 400, "POST", "/v1/transit/encrypt/sd",
               "{\"batch_input\":[{\"plaintext\":\"aGVsbG8=\"}]}");
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(kt_data(b, "batch_results"), 0), "error")),
        SD);
    json_decref(b);

    /* still readable, listed, configurable */
    b = tt_req(t, 200, "LIST", "/v1/transit/keys", NULL);
    assert_int_equal(json_array_size(kt_data(b, "keys")), 1);
    json_decref(b);
    json_decref(
        tt_req(t, 200, "POST", "/v1/transit/keys/sd/config", "{\"deletion_allowed\":true}"));

    /* survives a restart */
    kt_reopen(t);
    assert_true(soft_deleted(t, "sd"));
    tt_fail(t, 400, "POST", "/v1/transit/encrypt/sd", "{\"plaintext\":\"aGVsbG8=\"}", SD);

    b = tt_req(t, 200, "POST", "/v1/transit/keys/sd/soft-delete-restore", "{}");
    assert_false(json_is_true(kt_data(b, "soft_deleted")));
    assert_string_equal(tt_warning(b), "");
    json_decref(b);
    b = tt_req(t, 200, "POST", "/v1/transit/keys/sd/soft-delete-restore", "{}");
    assert_string_equal(tt_warning(b), "key was already restored");
    json_decref(b);
    tt_decrypt_is(t, "sd", ct, NULL, pt);
    json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/sd/rotate", "{}"));
    free(ct);

    /* deletion works on a soft-deleted key */
    json_decref(tt_req(t, 200, "DELETE", "/v1/transit/keys/sd/soft-delete", NULL));
    json_decref(tt_req(t, 204, "DELETE", "/v1/transit/keys/sd", NULL));
}

static void test_soft_deleted_signing_and_byok(void **state)
{
    struct kt *t = *state;
    tt_create(t, "ed", "{\"type\":\"ed25519\",\"exportable\":true}");
    json_t *b = tt_req(t, 200, "POST", "/v1/transit/sign/ed", "{\"input\":\"aGVsbG8=\"}");
    char body[256];
    snprintf(body, sizeof(body), "{\"input\":\"aGVsbG8=\",\"signature\":\"%s\"}",
             tt_str(b, "signature"));
    json_decref(b);
    tt_create(t, "rsa", "{\"type\":\"rsa-2048\"}");
    json_decref(tt_req(t, 200, "DELETE", "/v1/transit/keys/ed/soft-delete", NULL));
    /* sign: the signing step's error, a wrapped 500 on a single request; 200 in a batch */
    tt_fail(t, 500, "POST", "/v1/transit/sign/ed", "{\"input\":\"aGVsbG8=\"}", WRAPPED(SD));
    b = tt_req(t, 200, "POST", "/v1/transit/sign/ed",
               "{\"batch_input\":[{\"input\":\"aGVsbG8=\",\"reference\":\"r\"}]}");
    json_t *item = json_array_get(kt_data(b, "batch_results"), 0);
    assert_string_equal(json_string_value(json_object_get(item, "error")), SD);
    assert_string_equal(json_string_value(json_object_get(item, "reference")), "r");
    json_decref(b);
    tt_fail(t, 400, "POST", "/v1/transit/verify/ed", body, SD);
    tt_fail(t, 500, "GET", "/v1/transit/byok-export/rsa/ed", NULL, WRAPPED("for source key: " SD));
    json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/ed/soft-delete-restore", "{}"));
    json_decref(tt_req(t, 200, "DELETE", "/v1/transit/keys/rsa/soft-delete", NULL));
    tt_fail(t, 500, "GET", "/v1/transit/byok-export/rsa/ed", NULL,
            WRAPPED("for destination key: " SD));
    tt_fail(t, 400, "POST", "/v1/transit/encrypt/rsa", "{\"plaintext\":\"aGVsbG8=\"}", SD);
}

/* soft_deleted travels in OpenBao's backup document */
static void test_soft_deleted_in_backup(void **state)
{
    struct kt *t = *state;
    tt_create(t, "bk", "{\"exportable\":true,\"allow_plaintext_backup\":true}");
    json_t *b = tt_req(t, 200, "GET", "/v1/transit/backup/bk", NULL);
    const char *b64 = tt_str(b, "backup");
    uint8_t *raw = NULL;
    size_t len = 0, at = 0;
    assert_int_equal(kms_b64_decode_alloc(b64, strlen(b64), &raw, &len, &at), 0);
    json_t *doc = json_loadb((const char *)raw, len, 0, NULL);
    assert_non_null(doc);
    free(raw);
    json_decref(b);
    json_t *pol = json_object_get(doc, "policy");
    assert_true(json_is_false(json_object_get(pol, "soft_deleted")));
    json_object_set_new(pol, "soft_deleted", json_true());
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    char *enc = malloc(kms_b64_encoded_len(strlen(text)) + 1);
    kms_b64_encode((const uint8_t *)text, strlen(text), enc);
    size_t n = strlen(enc) + 64;
    char *body = malloc(n);
    snprintf(body, n, "{\"backup\":\"%s\"}", enc);
    json_decref(tt_req(t, 204, "POST", "/v1/transit/restore/bk2", body));
    assert_true(soft_deleted(t, "bk2"));
    tt_fail(t, 400, "POST", "/v1/transit/encrypt/bk2", "{\"plaintext\":\"aGVsbG8=\"}", SD);
    free(body);
    free(enc);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_soft_delete_and_restore, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_soft_deleted_signing_and_byok, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_soft_deleted_in_backup, kt_setup, kt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
