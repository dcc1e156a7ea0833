/*
 * test_backup.c - backup/:name and restore(/:name) through the whole pipeline: round trips
 * of every key type (versions, floors and flags kept, old ciphertexts still open, old
 * signatures still verify, ECDSA and RSA versions as Go's big integers), OpenBao's refusals
 * and kmsd's own (keys that are not whole, RSA keys outside kmsd's layout), and a backup
 * document written as OpenBao's keysutil marshals it (built independently, with ciphertexts
 * made by Python's cryptography AES-GCM) that must restore and decrypt.
 */
#include "tests/engine/transit/transit_util.h"

#include "engine/transit/transit_int.h"

/* OpenBao's text for an error a handler returns (500). */
#define WRAPPED(msg) "1 error occurred:\n\t* " msg "\n\n"

/* OpenBao KeyData for aes256-gcm96 key "from-bao": version 1 key bytes 0..31 (archive only,
 * below min_decryption_version 2), version 2 key bytes 32..63; auto_rotate_period 24h. */
static const char bao_doc[] =
    "{\"policy\":{\"name\":\"from-bao\",\"keys\":{\"2\":{\"key\":\"ICEiIyQlJicoKSorLC0uLzAxMjM0NTY"
    "3ODk6Ozw9Pj8=\",\"hmac_key\":\"qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqo=\",\"time\":"
    "\"2024-03-02T11:00:00.5+01:00\",\"ec_x\":null,\"ec_y\":null,\"ec_d\":null,\"rsa_key\":null"
    ",\"rsa_public_key\":null,\"public_key\":\"\",\"convergent_version\":0,\"creation_time\":17"
    "09373600,\"certificate_chain\":null,\"external_key_ref\":\"\"}},\"derived\":false,\"kdf\":"
    "0,\"convergent_encryption\":false,\"exportable\":true,\"min_decryption_version\":2,\"mi"
    "n_encryption_version\":0,\"latest_version\":2,\"archive_version\":2,\"archive_min_vers"
    "ion\":0,\"min_available_version\":0,\"deletion_allowed\":true,\"convergent_version\":0,"
    "\"type\":0,\"backup_info\":{\"time\":\"2024-03-03T00:00:00Z\",\"version\":2},\"restore_info"
    "\":null,\"allow_plaintext_backup\":true,\"version_template\":\"\",\"storage_prefix\":\"\",\""
    "auto_rotate_period\":86400000000000,\"Imported\":false,\"AllowImportedKeyRotation\":f"
    "alse,\"soft_deleted\":false},\"archived_keys\":{\"keys\":[{\"key\":null,\"hmac_key\":null,"
    "\"time\":\"0001-01-01T00:00:00Z\",\"ec_x\":null,\"ec_y\":null,\"ec_d\":null,\"rsa_key\":null"
    ",\"rsa_public_key\":null,\"public_key\":\"\",\"convergent_version\":0,\"creation_time\":0,"
    "\"certificate_chain\":null,\"external_key_ref\":\"\"},{\"key\":\"AAECAwQFBgcICQoLDA0ODxAR"
    "EhMUFRYXGBkaGxwdHh8=\",\"hmac_key\":\"qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqo=\","
    "\"time\":\"2024-03-01T10:20:30.123456789Z\",\"ec_x\":null,\"ec_y\":null,\"ec_d\":null,\"rsa"
    "_key\":null,\"rsa_public_key\":null,\"public_key\":\"\",\"convergent_version\":0,\"creatio"
    "n_time\":1709288430,\"certificate_chain\":null,\"external_key_ref\":\"\"},{\"key\":\"ICEiI"
    "yQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=\",\"hmac_key\":\"qqqqqqqqqqqqqqqqqqqqqqqqqqq"
    "qqqqqqqqqqqqqqqo=\",\"time\":\"2024-03-02T11:00:00.5+01:00\",\"ec_x\":null,\"ec_y\":null,"
    "\"ec_d\":null,\"rsa_key\":null,\"rsa_public_key\":null,\"public_key\":\"\",\"convergent_ver"
    "sion\":0,\"creation_time\":1709373600,\"certificate_chain\":null,\"external_key_ref\":\""
    "\"}]}}";

/* AES-256-GCM of "hello openbao" (v1, nonce 0..11) and "second version" (v2, nonce 12..23). */
static const char bao_ct1[] = "vault:v1:AAECAwQFBgcICQoLL2e6d6rFrWvoL/Xq3lMAo8SEapd914nyNXDAgb4=";
static const char bao_ct2[] = "vault:v2:DA0ODxAREhMUFRYXkV8tWlpZIMm7J5ednbuKiG5qH2z2DvH9GGkt/9+0";

/* GET backup/<name>; returns the base64 document (caller frees). */
static char *backup_of(struct kt *t, const char *name)
{
    char target[128];
    snprintf(target, sizeof(target), "/v1/transit/backup/%s", name);
    json_t *b = tt_req(t, 200, "GET", target, NULL);
    char *s = strdup(tt_str(b, "backup"));
    json_decref(b);
    assert_true(strlen(s) > 0);
    return s;
}

/* The JSON inside a backup, Go's big integers as decimal strings (caller decrefs). */
static json_t *decode_backup(const char *b64)
{
    uint8_t *raw = NULL;
    char *q = NULL;
    size_t len = 0, at = 0, qlen = 0;
    assert_int_equal(kms_b64_decode_alloc(b64, strlen(b64), &raw, &len, &at), 0);
    /* jansson alone cannot read the big integers: quote them first */
    assert_int_equal(kms_json_quote_bigints((const char *)raw, len, &q, &qlen), 0);
    json_t *doc = json_loadb(q, qlen, 0, NULL);
    assert_non_null(doc);
    free(q);
    free(raw);
    return doc;
}

/* base64 of a document (caller frees). */
static char *encode_backup(const json_t *doc)
{
    char *text = json_dumps(doc, JSON_COMPACT);
    assert_non_null(text);
    char *b64 = malloc(kms_b64_encoded_len(strlen(text)) + 1);
    assert_non_null(b64);
    kms_b64_encode((const uint8_t *)text, strlen(text), b64);
    free(text);
    return b64;
}

static bool all_digits(const json_t *v)
{
    const char *s = json_string_value(v);
    return s != NULL && strlen(s) > 18 && strspn(s, "0123456789") == strlen(s);
}

static void restore(struct kt *t, int want, const char *target, const char *b64, const char *extra)
{
    size_t n = strlen(b64) + 256;
    char *body = malloc(n);
    assert_non_null(body);
    snprintf(body, n, "{\"backup\":\"%s\"%s%s}", b64, extra ? "," : "", extra ? extra : "");
    json_decref(tt_req(t, want, "POST", target, body));
    free(body);
}

static json_int_t key_int(struct kt *t, const char *name, const char *field)
{
    char target[128];
    snprintf(target, sizeof(target), "/v1/transit/keys/%s", name);
    json_t *b = tt_req(t, 200, "GET", target, NULL);
    json_int_t v = json_integer_value(kt_data(b, field));
    json_decref(b);
    return v;
}

static bool key_bool(struct kt *t, const char *name, const char *field)
{
    char target[128];
    snprintf(target, sizeof(target), "/v1/transit/keys/%s", name);
    json_t *b = tt_req(t, 200, "GET", target, NULL);
    bool v = json_is_true(kt_data(b, field));
    json_decref(b);
    return v;
}

static void test_backup_round_trip_aead(void **state)
{
    struct kt *t = *state;
    char pt[64];
    char *ct[3];
    tt_b64("round trip", pt);
    tt_create(t, "k", "{\"exportable\":true,\"allow_plaintext_backup\":true}");
    ct[0] = tt_encrypt(t, "k", pt, NULL);
    json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/k/rotate", "{}"));
    ct[1] = tt_encrypt(t, "k", pt, NULL);
    json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/k/rotate", "{}"));
    ct[2] = tt_encrypt(t, "k", pt, NULL);
    json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/k/config",
                       "{\"min_decryption_version\":2,\"min_encryption_version\":3,"
                       "\"deletion_allowed\":true,\"auto_rotate_period\":\"2h\"}"));
    char *b64 = backup_of(t, "k");

    /* OpenBao's layout: policy keys from min_decryption_version, the archive from version 0 */
    json_t *doc = decode_backup(b64);
    json_t *pol = json_object_get(doc, "policy");
    assert_string_equal(json_string_value(json_object_get(pol, "name")), "k");
    assert_int_equal(json_integer_value(json_object_get(pol, "type")), 0);
    assert_int_equal(json_integer_value(json_object_get(pol, "latest_version")), 3);
    assert_int_equal(json_integer_value(json_object_get(pol, "archive_version")), 3);
    assert_int_equal(json_integer_value(json_object_get(pol, "auto_rotate_period")),
                     7200LL * 1000000000LL);
    assert_int_equal(json_object_size(json_object_get(pol, "keys")), 2);
    assert_null(json_object_get(json_object_get(pol, "keys"), "1"));
    json_t *arch = json_object_get(json_object_get(doc, "archived_keys"), "keys");
    assert_int_equal(json_array_size(arch), 4);
    assert_true(json_is_null(json_object_get(json_array_get(arch, 0), "key")));
    assert_true(json_is_string(json_object_get(json_array_get(arch, 1), "key")));
    assert_true(
        json_equal(json_array_get(arch, 3), json_object_get(json_object_get(pol, "keys"), "3")));
    json_decref(doc);

    json_decref(tt_req(t, 204, "DELETE", "/v1/transit/keys/k", NULL));
    restore(t, 204, "/v1/transit/restore", b64, NULL);
    tt_decrypt_is(t, "k", ct[1], NULL, pt);
    tt_decrypt_is(t, "k", ct[2], NULL, pt);
    tt_decrypt_fails(t, "k", ct[0], NULL, 400,
                     "ciphertext or signature version is disallowed by policy (too old)");
    assert_int_equal(key_int(t, "k", "latest_version"), 3);
    assert_int_equal(key_int(t, "k", "min_decryption_version"), 2);
    assert_int_equal(key_int(t, "k", "min_encryption_version"), 3);
    assert_int_equal(key_int(t, "k", "auto_rotate_period"), 7200);
    assert_true(key_bool(t, "k", "exportable"));
    assert_true(key_bool(t, "k", "allow_plaintext_backup"));
    assert_true(key_bool(t, "k", "deletion_allowed"));
    /* archived versions came back too */
    json_decref(
        tt_req(t, 200, "POST", "/v1/transit/keys/k/config", "{\"min_decryption_version\":1}"));
    tt_decrypt_is(t, "k", ct[0], NULL, pt);

    /* under another name: restore/:name; a "name" in the body is replaced by the path's empty
     * capture, as in OpenBao, so the backup's own (existing) name is restored to */
    restore(t, 204, "/v1/transit/restore/copy", b64, NULL);
    tt_decrypt_is(t, "copy", ct[2], NULL, pt);
    restore(t, 500, "/v1/transit/restore", b64, "\"name\":\"copy2\"");
    for (int i = 0; i < 3; i++) {
        free(ct[i]);
    }
    free(b64);
}

/* After a trim the archive starts at min_available_version, as OpenBao's does. */
static void test_backup_trimmed(void **state)
{
    struct kt *t = *state;
    char pt[64];
    tt_b64("trimmed", pt);
    tt_create(t, "tr", "{\"exportable\":true,\"allow_plaintext_backup\":true}");
    json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/tr/rotate", "{}"));
    char *ct2 = tt_encrypt(t, "tr", pt, NULL);
    json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/tr/rotate", "{}"));
    json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/tr/rotate", "{}"));
    json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/tr/config",
                       "{\"min_decryption_version\":3,\"min_encryption_version\":4}"));
    json_decref(
        tt_req(t, 200, "POST", "/v1/transit/keys/tr/trim", "{\"min_available_version\":2}"));
    char *b64 = backup_of(t, "tr");
    json_t *doc = decode_backup(b64);
    json_t *pol = json_object_get(doc, "policy");
    json_t *arch = json_object_get(json_object_get(doc, "archived_keys"), "keys");
    assert_int_equal(json_array_size(arch), 3);
    assert_int_equal(json_integer_value(json_object_get(pol, "archive_min_version")), 2);
    assert_true(
        json_equal(json_array_get(arch, 2), json_object_get(json_object_get(pol, "keys"), "4")));
    json_decref(doc);
    restore(t, 204, "/v1/transit/restore/tr2", b64, NULL);
    assert_int_equal(key_int(t, "tr2", "min_available_version"), 2);
    json_decref(
        tt_req(t, 200, "POST", "/v1/transit/keys/tr2/config", "{\"min_decryption_version\":2}"));
    tt_decrypt_is(t, "tr2", ct2, NULL, pt);
    free(ct2);
    free(b64);
}

static void test_backup_round_trip_hmac_ed25519(void **state)
{
    struct kt *t = *state;
    tt_create(t, "h",
              "{\"type\":\"hmac\",\"key_size\":48,\"exportable\":true,"
              "\"allow_plaintext_backup\":true}");
    json_t *b = tt_req(t, 200, "POST", "/v1/transit/hmac/h", "{\"input\":\"aGVsbG8=\"}");
    char *mac = strdup(tt_str(b, "hmac"));
    json_decref(b);
    char *hb = backup_of(t, "h");
    json_t *doc = decode_backup(hb);
    json_t *pol = json_object_get(doc, "policy");
    assert_int_equal(json_integer_value(json_object_get(pol, "type")), 10);
    assert_int_equal(json_integer_value(json_object_get(pol, "key_size")), 48);
    json_t *e = json_object_get(json_object_get(pol, "keys"), "1");
    assert_string_equal(json_string_value(json_object_get(e, "key")),
                        json_string_value(json_object_get(e, "hmac_key")));
    json_decref(doc);
    restore(t, 204, "/v1/transit/restore/h2", hb, NULL);
    b = tt_req(t, 200, "POST", "/v1/transit/hmac/h2", "{\"input\":\"aGVsbG8=\"}");
    assert_string_equal(tt_str(b, "hmac"), mac);
    json_decref(b);
    assert_int_equal(key_int(t, "h2", "key_size"), 48);

    tt_create(t, "ed",
              "{\"type\":\"ed25519\",\"exportable\":true,\"allow_plaintext_backup\":true}");
    b = tt_req(t, 200, "POST", "/v1/transit/sign/ed", "{\"input\":\"aGVsbG8=\"}");
    char *sig = strdup(tt_str(b, "signature"));
    json_decref(b);
    char *eb = backup_of(t, "ed");
    restore(t, 204, "/v1/transit/restore/ed2", eb, NULL);
    /* ed25519 signatures are deterministic: the same key signs the same bytes */
    b = tt_req(t, 200, "POST", "/v1/transit/sign/ed2", "{\"input\":\"aGVsbG8=\"}");
    assert_string_equal(tt_str(b, "signature"), sig);
    json_decref(b);
    free(sig);
    free(eb);
    free(mac);
    free(hb);
}

/* POST sign/<name>; returns the signature (caller frees). */
static char *sign_of(struct kt *t, const char *name, const char *extra)
{
    char target[128], body[256];
    snprintf(target, sizeof(target), "/v1/transit/sign/%s", name);
    snprintf(body, sizeof(body), "{\"input\":\"aGVsbG8=\"%s}", extra);
    json_t *b = tt_req(t, 200, "POST", target, body);
    char *s = strdup(tt_str(b, "signature"));
    json_decref(b);
    return s;
}

static bool verify_of(struct kt *t, const char *name, const char *sig)
{
    char target[128], body[1400];
    snprintf(target, sizeof(target), "/v1/transit/verify/%s", name);
    snprintf(body, sizeof(body), "{\"input\":\"aGVsbG8=\",\"signature\":\"%s\"}", sig);
    json_t *b = tt_req(t, 200, "POST", target, body);
    bool v = json_is_true(kt_data(b, "valid"));
    json_decref(b);
    return v;
}

/* The public key of version `ver` as key read shows it (caller frees). */
static char *public_key_of(struct kt *t, const char *name, const char *ver)
{
    char target[128];
    snprintf(target, sizeof(target), "/v1/transit/keys/%s", name);
    json_t *b = tt_req(t, 200, "GET", target, NULL);
    const char *pk =
        json_string_value(json_object_get(json_object_get(kt_data(b, "keys"), ver), "public_key"));
    assert_non_null(pk);
    char *s = strdup(pk);
    json_decref(b);
    return s;
}

static void test_backup_round_trip_ecdsa_rsa(void **state)
{
    struct kt *t = *state;
    static const struct {
        const char *type;
        int bao;
    } types[] = {{"ecdsa-p256", 1}, {"ecdsa-p384", 6}, {"ecdsa-p521", 7},
                 {"rsa-2048", 3},   {"rsa-3072", 9},   {"rsa-4096", 4}};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        char name[32], copy[40], target[96], body[160];
        bool ec = types[i].type[0] == 'e';
        snprintf(name, sizeof(name), "k-%s", types[i].type);
        snprintf(copy, sizeof(copy), "%s-copy", name);
        snprintf(body, sizeof(body),
                 "{\"type\":\"%s\",\"exportable\":true,\"allow_plaintext_backup\":true}",
                 types[i].type);
        tt_create(t, name, body);
        char *sig1 = sign_of(t, name, "");
        snprintf(target, sizeof(target), "/v1/transit/keys/%s/rotate", name);
        json_decref(tt_req(t, 200, "POST", target, "{}"));
        char *sig2 = sign_of(t, name, "");
        char *pub1 = public_key_of(t, name, "1");
        char *pub2 = public_key_of(t, name, "2");
        char *b64 = backup_of(t, name);

        /* the versions as keysutil keeps them: Go big integers, no "key" */
        json_t *doc = decode_backup(b64);
        json_t *pol = json_object_get(doc, "policy");
        assert_int_equal(json_integer_value(json_object_get(pol, "type")), types[i].bao);
        json_t *e = json_object_get(json_object_get(pol, "keys"), "2");
        assert_true(json_is_null(json_object_get(e, "key")));
        assert_int_equal(json_string_length(json_object_get(e, "hmac_key")), 44);
        if (ec) {
            assert_true(all_digits(json_object_get(e, "ec_x")));
            assert_true(all_digits(json_object_get(e, "ec_y")));
            assert_true(all_digits(json_object_get(e, "ec_d")));
            assert_true(json_is_null(json_object_get(e, "rsa_key")));
            assert_string_equal(json_string_value(json_object_get(e, "public_key")), pub2);
        } else {
            json_t *rk = json_object_get(e, "rsa_key");
            json_t *pre = json_object_get(rk, "Precomputed");
            assert_true(all_digits(json_object_get(rk, "N")));
            assert_true(all_digits(json_object_get(rk, "D")));
            assert_int_equal(json_integer_value(json_object_get(rk, "E")), 65537);
            assert_int_equal(json_array_size(json_object_get(rk, "Primes")), 2);
            assert_true(all_digits(json_array_get(json_object_get(rk, "Primes"), 1)));
            assert_true(all_digits(json_object_get(pre, "Dp")));
            assert_true(all_digits(json_object_get(pre, "Dq")));
            assert_true(all_digits(json_object_get(pre, "Qinv")));
            assert_true(json_is_array(json_object_get(pre, "CRTValues")));
            assert_int_equal(json_array_size(json_object_get(pre, "CRTValues")), 0);
            assert_true(json_equal(json_object_get(rk, "N"),
                                   json_object_get(json_object_get(e, "rsa_public_key"), "N")));
            assert_true(json_is_null(json_object_get(e, "ec_d")));
        }
        json_decref(doc);

        /* restored under another name: the same public keys, the old signatures verify */
        snprintf(target, sizeof(target), "/v1/transit/restore/%s", copy);
        restore(t, 204, target, b64, NULL);
        char *cp1 = public_key_of(t, copy, "1");
        char *cp2 = public_key_of(t, copy, "2");
        assert_string_equal(cp1, pub1);
        assert_string_equal(cp2, pub2);
        assert_true(verify_of(t, copy, sig1));
        assert_true(verify_of(t, copy, sig2));
        char *sig3 = sign_of(t, copy, "");
        assert_true(verify_of(t, name, sig3));
        /* and the copy's backup is the same key again */
        char *again = backup_of(t, copy);
        snprintf(target, sizeof(target), "/v1/transit/restore/%s", name);
        restore(t, 204, target, again, "\"force\":true");
        assert_true(verify_of(t, name, sig3));
        free(again);
        free(sig3);
        free(cp2);
        free(cp1);
        free(b64);
        free(pub2);
        free(pub1);
        free(sig2);
        free(sig1);
    }
}

/* A backup of `name` changed by `edit` must be refused (400, msg). */
static void restore_edited(struct kt *t, const char *name, void (*edit)(json_t *entry),
                           const char *msg)
{
    char *b64 = backup_of(t, name);
    json_t *doc = decode_backup(b64);
    json_t *pol = json_object_get(doc, "policy");
    edit(json_object_get(json_object_get(pol, "keys"), "1"));
    edit(json_array_get(json_object_get(json_object_get(doc, "archived_keys"), "keys"), 1));
    char *bad = encode_backup(doc);
    size_t n = strlen(bad) + 64;
    char *body = malloc(n);
    assert_non_null(body);
    snprintf(body, n, "{\"backup\":\"%s\"}", bad);
    tt_fail(t, 400, "POST", "/v1/transit/restore/edited", body, msg);
    free(body);
    free(bad);
    json_decref(doc);
    free(b64);
}

static void other_ec_d(json_t *e)
{
    json_object_set_new(e, "ec_d", json_integer(12345));
}

static void public_only_ec(json_t *e)
{
    json_object_set_new(e, "ec_d", json_null());
}

static void public_only_rsa(json_t *e)
{
    json_object_set_new(e, "rsa_key", json_null());
}

static void rsa_e3(json_t *e)
{
    json_object_set_new(json_object_get(e, "rsa_key"), "E", json_integer(3));
}

static void rsa_three_primes(json_t *e)
{
    json_array_append_new(json_object_get(json_object_get(e, "rsa_key"), "Primes"),
                          json_string("3"));
}

static void rsa_other_qinv(json_t *e)
{
    json_t *pre = json_object_get(json_object_get(e, "rsa_key"), "Precomputed");
    json_object_set(pre, "Qinv", json_object_get(pre, "Dp"));
}

static void test_restore_refuses_bad_asymmetric(void **state)
{
    struct kt *t = *state;
    tt_create(t, "ec",
              "{\"type\":\"ecdsa-p256\",\"exportable\":true,\"allow_plaintext_backup\":true}");
    tt_create(t, "rsa",
              "{\"type\":\"rsa-2048\",\"exportable\":true,\"allow_plaintext_backup\":true}");
    restore_edited(t, "ec", other_ec_d,
                   "invalid key material for version 1 in backup: invalid ecdsa-p256 key");
    restore_edited(t, "ec", public_only_ec,
                   "restore of public-key-only versions is not supported by kmsd (version 1)");
    restore_edited(t, "rsa", public_only_rsa,
                   "restore of public-key-only versions is not supported by kmsd (version 1)");
    restore_edited(t, "rsa", rsa_e3,
                   "invalid key material for version 1 in backup: RSA keys with a public "
                   "exponent other than 65537 are not supported");
    restore_edited(t, "rsa", rsa_three_primes,
                   "invalid key material for version 1 in backup: RSA keys must have two "
                   "primes of half the modulus each");
    restore_edited(t, "rsa", rsa_other_qinv,
                   "invalid key material for version 1 in backup: invalid RSA key");
    /* nothing was written by the refused restores */
    tt_fail(t, 500, "GET", "/v1/transit/backup/edited", NULL, WRAPPED("key \"edited\" not found"));
}

static void test_backup_refusals(void **state)
{
    struct kt *t = *state;
    char pt[64];
    tt_b64("x", pt);
    tt_fail(t, 500, "GET", "/v1/transit/backup/nope", NULL, WRAPPED("key \"nope\" not found"));
    tt_create(t, "plain", NULL);
    tt_fail(t, 500, "GET", "/v1/transit/backup/plain", NULL,
            WRAPPED("exporting is disallowed on the policy"));
    tt_create(t, "exp", "{\"exportable\":true}");
    tt_fail(t, 500, "GET", "/v1/transit/backup/exp", NULL,
            WRAPPED("plaintext backup is disallowed on the policy"));
    /* allow_plaintext_backup can be set later, and is a one-way latch */
    json_decref(
        tt_req(t, 200, "POST", "/v1/transit/keys/exp/config", "{\"allow_plaintext_backup\":true}"));
    json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/exp/config",
                       "{\"allow_plaintext_backup\":false}"));
    assert_true(key_bool(t, "exp", "allow_plaintext_backup"));
    char *b64 = backup_of(t, "exp");

    tt_fail(t, 400, "POST", "/v1/transit/restore", "{}", "'backup' must be supplied");
    tt_fail(t, 400, "POST", "/v1/transit/restore", "{\"backup\":\"\"}",
            "'backup' must be supplied");
    tt_fail(t, 500, "POST", "/v1/transit/restore", "{\"backup\":\"!!\"}",
            WRAPPED("illegal base64 data at input byte 0"));

    /* an existing key needs force */
    char *old = tt_encrypt(t, "exp", pt, NULL);
    size_t n = strlen(b64) + 64;
    char *body = malloc(n);
    assert_non_null(body);
    snprintf(body, n, "{\"backup\":\"%s\"}", b64);
    tt_fail(t, 500, "POST", "/v1/transit/restore", body, WRAPPED("key \"exp\" already exists"));
    tt_fail(t, 500, "POST", "/v1/transit/restore/plain", body,
            WRAPPED("key \"plain\" already exists"));
    char *pc = tt_encrypt(t, "plain", pt, NULL);
    restore(t, 204, "/v1/transit/restore/plain", b64, "\"force\":true");
    /* "plain" is now exp's key: exp's ciphertexts open under it, its own do not */
    tt_decrypt_is(t, "plain", old, NULL, pt);
    tt_decrypt_fails(t, "plain", pc, NULL, 400, "cipher: message authentication failed");
    assert_true(key_bool(t, "plain", "exportable"));
    free(pc);
    free(old);
    free(body);
    free(b64);
}

/*
 * A period no create or config could set, and a name no route could reach, are refused at
 * restore (else the key could never be read, used or deleted); a period past Go's duration is
 * refused at config, and the longest one backs up and restores exactly.
 */
static void test_restore_refuses_unusable_keys(void **state)
{
    struct kt *t = *state;
    tt_create(t, "src", "{\"exportable\":true,\"allow_plaintext_backup\":true}");
    char *b64 = backup_of(t, "src");
    json_t *doc = decode_backup(b64);
    free(b64);
    const json_int_t periods[] = {-3600LL * 1000000000LL, 60LL * 1000000000LL};
    for (size_t i = 0; i < 2; i++) {
        json_object_set_new(json_object_get(doc, "policy"), "auto_rotate_period",
                            json_integer(periods[i]));
        char *bad = encode_backup(doc);
        restore(t, 400, "/v1/transit/restore/pz", bad, NULL);
        free(bad);
    }
    json_object_set_new(json_object_get(doc, "policy"), "auto_rotate_period", json_integer(0));
    const char *names[] = {"-bad", "bad.", "caf\u00e9", "a b"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        json_object_set_new(json_object_get(doc, "policy"), "name", json_string(names[i]));
        char *bad = encode_backup(doc);
        restore(t, 400, "/v1/transit/restore", bad, NULL);
        free(bad);
    }
    json_decref(tt_req(t, 404, "GET", "/v1/transit/keys/pz", NULL));
    json_t *l = tt_req(t, 200, "LIST", "/v1/transit/keys", NULL);
    assert_int_equal(json_array_size(kt_data(l, "keys")), 1); /* src only */
    json_decref(l);
    json_decref(doc);

    tt_fail(t, 400, "POST", "/v1/transit/keys/src/config",
            "{\"auto_rotate_period\":\"99999999999h\"}",
            "Field validation failed: error converting input for field \"auto_rotate_period\": "
            "time: invalid duration \"99999999999h\"");
    tt_fail(t, 400, "POST", "/v1/transit/keys/src/config", "{\"auto_rotate_period\":9223372037}",
            "Field validation failed: error converting input for field \"auto_rotate_period\": "
            "time: invalid duration \"9223372037\"");
    json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/src/config",
                       "{\"auto_rotate_period\":9223372036}"));
    b64 = backup_of(t, "src");
    restore(t, 204, "/v1/transit/restore/longest", b64, NULL);
    free(b64);
    assert_int_equal(key_int(t, "longest", "auto_rotate_period"), 9223372036LL);
}

static void test_restore_openbao_document(void **state)
{
    struct kt *t = *state;
    char b64[8192];
    char pt[64];
    assert_true(kms_b64_encoded_len(strlen(bao_doc)) < sizeof(b64));
    kms_b64_encode((const uint8_t *)bao_doc, strlen(bao_doc), b64);
    restore(t, 204, "/v1/transit/restore", b64, NULL);

    tt_decrypt_is(t, "from-bao", bao_ct2, NULL, tt_b64("second version", pt));
    tt_decrypt_fails(t, "from-bao", bao_ct1, NULL, 400,
                     "ciphertext or signature version is disallowed by policy (too old)");
    assert_int_equal(key_int(t, "from-bao", "latest_version"), 2);
    assert_int_equal(key_int(t, "from-bao", "min_decryption_version"), 2);
    assert_int_equal(key_int(t, "from-bao", "auto_rotate_period"), 86400);
    assert_true(key_bool(t, "from-bao", "deletion_allowed"));
    /* creation times from "time", the second one with a +01:00 offset */
    json_t *b = tt_req(t, 200, "GET", "/v1/transit/keys/from-bao", NULL);
    assert_int_equal(json_integer_value(json_object_get(kt_data(b, "keys"), "2")), 1709373600);
    json_decref(b);
    /* version 1 came from the archive */
    json_decref(tt_req(t, 200, "POST", "/v1/transit/keys/from-bao/config",
                       "{\"min_decryption_version\":1}"));
    tt_decrypt_is(t, "from-bao", bao_ct1, NULL, tt_b64("hello openbao", pt));
    b = tt_req(t, 200, "GET", "/v1/transit/keys/from-bao", NULL);
    assert_int_equal(json_integer_value(json_object_get(kt_data(b, "keys"), "1")), 1709288430);
    json_decref(b);
    /* and kmsd's own backup of it restores again */
    char *again = backup_of(t, "from-bao");
    restore(t, 204, "/v1/transit/restore/again", again, NULL);
    tt_decrypt_is(t, "again", bao_ct1, NULL, tt_b64("hello openbao", pt));
    free(again);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_backup_round_trip_aead, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_backup_round_trip_hmac_ed25519, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_backup_round_trip_ecdsa_rsa, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_restore_refuses_bad_asymmetric, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_backup_trimmed, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_backup_refusals, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_restore_openbao_document, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_restore_refuses_unusable_keys, kt_setup, kt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
