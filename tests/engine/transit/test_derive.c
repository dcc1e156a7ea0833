/*
 * test_derive.c - derive-key/:name (OpenBao's path_derive_key.go): ECDH is symmetric, so the
 * key derived from A's version with B's public key equals the key derived from B's with A's
 * (each side's ciphertexts open on the other, for every curve and derived type); the derived
 * key is an imported key with every flag off; an existing name gets a new version; OpenBao's
 * refusals and statuses in its order; soft-deleted keys; nothing half-written on failure.
 */
#include "tests/engine/transit/transit_util.h"

#define WRAPPED(msg) "1 error occurred:\n\t* " msg "\n\n"

/* The public key PEM of version v of key `name`, as a JSON string literal (escaped). */
static char *pub_json(struct kt *t, const char *name, int v)
{
    char target[128], ver[16];
    snprintf(target, sizeof(target), "/v1/transit/keys/%s", name);
    snprintf(ver, sizeof(ver), "%d", v);
    json_t *b = tt_req(t, 200, "GET", target, NULL);
    json_t *pem = json_object_get(json_object_get(kt_data(b, "keys"), ver), "public_key");
    assert_true(json_is_string(pem));
    char *s = json_dumps(pem, JSON_ENCODE_ANY);
    json_decref(b);
    return s;
}

#define WRAPPED(msg) "1 error occurred:\n\t* " msg "\n\n"

static void derive(struct kt *t, int want, const char *name, const char *base, const char *peer,
                   const char *extra, const char *msg)
{
    char target[128];
    char body[8192];
    snprintf(target, sizeof(target), "/v1/transit/derive-key/%s", name);
    snprintf(body, sizeof(body), "{\"base_key_name\":\"%s\",\"peer_public_key\":%s%s%s}", base,
             peer, extra && extra[0] ? "," : "", extra ? extra : "");
    if (msg != NULL) {
        tt_fail(t, want, "POST", target, body, msg);
    } else {
        json_decref(tt_req(t, want, "POST", target, body));
    }
}

static void test_symmetric_every_curve_and_type(void **state)
{
    struct kt *t = *state;
    static const char *const curves[] = {"ecdsa-p256", "ecdsa-p384", "ecdsa-p521"};
    static const char *const types[] = {"aes128-gcm96", "aes256-gcm96", "chacha20-poly1305",
                                        "xchacha20-poly1305"};
    char pt[16];
    tt_b64("agreed", pt);
    for (size_t i = 0; i < 3; i++) {
        char a[32], b[32], body[64];
        snprintf(a, sizeof(a), "a%zu", i);
        snprintf(b, sizeof(b), "b%zu", i);
        snprintf(body, sizeof(body), "{\"type\":\"%s\"}", curves[i]);
        tt_create(t, a, body);
        tt_create(t, b, body);
        char *pa = pub_json(t, a, 1), *pb = pub_json(t, b, 1);
        for (size_t j = 0; j < 4; j++) {
            char da[64], db[64], extra[64];
            snprintf(da, sizeof(da), "d-%s-%zu", a, j);
            snprintf(db, sizeof(db), "d-%s-%zu", b, j);
            snprintf(extra, sizeof(extra), "\"derived_key_type\":\"%s\"", types[j]);
            derive(t, 204, da, a, pb, extra, NULL);
            derive(t, 204, db, b, pa, extra, NULL);
            char *ct = tt_encrypt(t, da, pt, NULL);
            assert_true(strncmp(ct, "vault:v1:", 9) == 0);
            tt_decrypt_is(t, db, ct, NULL, pt);
            free(ct);
            ct = tt_encrypt(t, db, pt, NULL);
            tt_decrypt_is(t, da, ct, NULL, pt);
            free(ct);
            char target[128];
            snprintf(target, sizeof(target), "/v1/transit/keys/%s", da);
            json_t *k = tt_req(t, 200, "GET", target, NULL);
            assert_string_equal(tt_str(k, "type"), types[j]);
            assert_true(json_is_true(kt_data(k, "imported_key")));
            assert_true(json_is_false(kt_data(k, "imported_key_allow_rotation")));
            assert_true(json_is_false(kt_data(k, "exportable")));
            assert_true(json_is_false(kt_data(k, "allow_plaintext_backup")));
            assert_true(json_is_false(kt_data(k, "deletion_allowed")));
            assert_int_equal(json_integer_value(kt_data(k, "latest_version")), 1);
            json_decref(k);
            /* imported without allow_rotation: rotation refused, as for any import */
            snprintf(target, sizeof(target), "/v1/transit/keys/%s/rotate", da);
            char msg[160];
            snprintf(msg, sizeof(msg),
                     "1 error occurred:\n\t* imported key %s does not allow rotation within "
                     "Vault\n\n",
                     da);
            tt_fail(t, 500, "POST", target, "{}", msg);
        }
        /* a different peer gives a different key */
        char *ct = tt_encrypt(t, "d-a0-0", pt, NULL);
        if (i > 0) {
            tt_decrypt_fails(t, "d-b1-0", ct, NULL, 400, "cipher: message authentication failed");
        }
        free(ct);
        free(pa);
        free(pb);
    }
}

static void test_versions_and_existing_names(void **state)
{
    struct kt *t = *state;
    char pt[16];
    tt_b64("v", pt);
    tt_create(t, "a", "{\"type\":\"ecdsa-p256\"}");
    tt_create(t, "b", "{\"type\":\"ecdsa-p256\"}");
    json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/a/rotate", "{}"));
    char *pb = pub_json(t, "b", 1), *pa1 = pub_json(t, "a", 1), *pa2 = pub_json(t, "a", 2);
    /* 0 and absent = latest (2) */
    derive(t, 204, "x0", "a", pb, "\"base_key_version\":0", NULL);
    derive(t, 204, "x1", "a", pb, "\"base_key_version\":1", NULL);
    derive(t, 204, "y1", "b", pa1, NULL, NULL);
    derive(t, 204, "y2", "b", pa2, NULL, NULL);
    char *ct = tt_encrypt(t, "x0", pt, NULL);
    tt_decrypt_is(t, "y2", ct, NULL, pt);
    free(ct);
    ct = tt_encrypt(t, "x1", pt, NULL);
    tt_decrypt_is(t, "y1", ct, NULL, pt);
    free(ct);
    /* DeriveKeyECDH's errors: OpenBao's handler returns them without a response (500) */
    derive(t, 500, "z", "a", pb, "\"base_key_version\":-1",
           WRAPPED("requested version of the base key is negative"));
    derive(t, 500, "z", "a", pb, "\"base_key_version\":3",
           WRAPPED("requested version of the base key is higher than the latest key version"));
    derive(t, 400, "z", "a", pb, "\"base_key_version\":\"x\"", NULL);

    /* the derived name exists: a new version of that key (OpenBao's ImportPolicy) */
    derive(t, 204, "x1", "a", pb,
           "\"base_key_version\":2,\"derived_key_type\":\"chacha20-poly1305\"", NULL);
    json_t *k = tt_req(t, 200, "GET", "/v1/transit/keys/x1", NULL);
    assert_int_equal(json_integer_value(kt_data(k, "latest_version")), 2);
    assert_string_equal(tt_str(k, "type"), "aes256-gcm96");
    json_decref(k);
    ct = tt_encrypt(t, "x1", pt, NULL);
    assert_true(strncmp(ct, "vault:v2:", 9) == 0);
    ct[7] = '1'; /* the same payload as y2's version 1 */
    tt_decrypt_is(t, "y2", ct, NULL, pt);
    free(ct);
    derive(t, 500, "x1", "a", pb, "\"derived_key_type\":\"aes128-gcm96\"",
           WRAPPED("error importing key: invalid key size 16 bytes for key type aes256-gcm96"));
    /* an hmac key takes 32 bytes as a new version */
    tt_create(t, "h", "{\"type\":\"hmac\",\"key_size\":64}");
    derive(t, 204, "h", "a", pb, NULL, NULL);
    k = tt_req(t, 200, "GET", "/v1/transit/keys/h", NULL);
    assert_int_equal(json_integer_value(kt_data(k, "latest_version")), 2);
    json_decref(k);
    /* signing keys cannot take it */
    derive(t, 500, "b", "a", pb, NULL,
           WRAPPED("error importing key: error parsing public key: not in PEM format"));
    tt_create(t, "ed", "{\"type\":\"ed25519\",\"derived\":true}");
    derive(t, 500, "ed", "a", pb, NULL,
           WRAPPED("error importing key: unable to import only public key for derived Ed25519 "
                   "key: imported key should not be an Ed25519 key pair but is instead an HKDF "
                   "key"));
    k = tt_req(t, 200, "GET", "/v1/transit/keys/b", NULL);
    assert_int_equal(json_integer_value(kt_data(k, "latest_version")), 1);
    json_decref(k);
    free(pb);
    free(pa1);
    free(pa2);
}

static void test_refusals(void **state)
{
    struct kt *t = *state;
    tt_create(t, "a", "{\"type\":\"ecdsa-p256\"}");
    tt_create(t, "p384", "{\"type\":\"ecdsa-p384\"}");
    tt_create(t, "ed", "{\"type\":\"ed25519\"}");
    tt_create(t, "aes", "{}");
    char *pa = pub_json(t, "a", 1), *p384 = pub_json(t, "p384", 1), *ped = pub_json(t, "ed", 1);

    tt_fail(t, 400, "POST", "/v1/transit/derive-key/n",
            "{\"key_derivation_algorithm\":\"hkdf\",\"base_key_name\":\"a\"}",
            "key derivation algorithm hkdf not supported");
    tt_fail(t, 400, "POST", "/v1/transit/derive-key/n", "{\"base_key_name\":\"a\"}",
            "peer public key not provided");
    derive(t, 400, "n", "a", pa, "\"derived_key_type\":\"rsa-2048\"", "unknown key type rsa-2048");
    derive(t, 400, "n", "none", pa, NULL, "specified base key not found");
    derive(t, 400, "n", "aes", pa, NULL,
           "base key type aes256-gcm96 does not support key agreement");
    derive(t, 400, "n", "ed", pa, NULL, "base key type ed25519 does not support key agreement");
    derive(t, 500, "n", "a", p384, NULL,
           WRAPPED("base private key type ecdsa-p256 does not match peer public key curve"));
    /* ed25519's public key in read is raw base64, not PEM */
    derive(t, 500, "n", "a", ped, NULL,
           WRAPPED("failed to parse supplied peer public key PEM: data does not contain any "
                   "valid public keys "));
    derive(t, 500, "n", "a", "\"-----BEGIN PUBLIC KEY-----\\nAAAA\\n-----END PUBLIC KEY-----\\n\"",
           NULL,
           WRAPPED("failed to parse supplied peer public key PEM: x509: malformed certificate "));
    /* nothing was written by any refusal */
    json_decref(tt_req(t, 404, "GET", "/v1/transit/keys/n", NULL));

    /* soft-deleted base: refused (kmsd; OpenBao derives); restored: works */
    json_decref(tt_req(t, 200, "DELETE", "/v1/transit/keys/p384/soft-delete", NULL));
    char *pb = NULL;
    tt_create(t, "b384", "{\"type\":\"ecdsa-p384\"}");
    pb = pub_json(t, "b384", 1);
    derive(t, 400, "n", "p384", pb, NULL, "refusing to use soft-deleted key");
    json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/p384/soft-delete-restore", "{}"));
    derive(t, 204, "n", "p384", pb, NULL, NULL);
    /* soft-deleted target: the import refuses */
    json_decref(tt_req(t, 200, "DELETE", "/v1/transit/keys/n/soft-delete", NULL));
    derive(t, 500, "n", "p384", pb, NULL,
           WRAPPED("error importing key: refusing to use soft-deleted key"));
    free(pb);
    free(pa);
    free(p384);
    free(ped);
}

static void test_audited_without_secrets(void **state)
{
    struct kt *t = *state;
    tt_create(t, "a", "{\"type\":\"ecdsa-p521\"}");
    tt_create(t, "b", "{\"type\":\"ecdsa-p521\"}");
    char *pb = pub_json(t, "b", 1);
    derive(t, 204, "audited", "a", pb, NULL, NULL);
    assert_true(kt_audit_contains(t, "\"op\":\"derive-key\""));
    /* the peer key is HMAC'd like every request string (both lines are written by now) */
    FILE *f = fopen(t->audit_path, "r");
    assert_non_null(f);
    static char text[1 << 16];
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    assert_non_null(strstr(text, "transit/derive-key/audited"));
    assert_null(strstr(text, "BEGIN PUBLIC KEY"));
    free(pb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_symmetric_every_curve_and_type, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_versions_and_existing_names, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_refusals, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_audited_without_secrets, kt_setup_audited,
                                        kt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
