/*
 * test_token.c - auth/token endpoints through the whole pipeline (auth-audit.md §3): create with
 * every parameter and its refusals, lookup / lookup-self / lookup-accessor, renew / renew-self /
 * renew-accessor with an injected token-store clock, revoke / revoke-self / revoke-accessor
 * (children go with their parent), num_uses and expiry; plus sys/policy CRUD and its effect
 * on the ACL, and sys/auth enable / read / list / disable.
 */
#include "tests/engine/auth/auth_util.h"

/* Create a token as root with `body`; copies client_token and accessor out. */
static json_t *create_token(struct kt *t, const char *path, const char *body, char *tok, char *acc)
{
    json_t *b = at_req(t, 200, "POST", path, body);
    if (tok != NULL) {
        snprintf(tok, KMS_TOKEN_MAX_LEN, "%s", at_auth_str(b, "client_token"));
    }
    if (acc != NULL) {
        snprintf(acc, 64, "%s", at_auth_str(b, "accessor"));
    }
    return b;
}

static void put_policy(struct kt *t, const char *name, const char *hcl)
{
    char target[128];
    json_t *body = json_pack("{s:s}", "policy", hcl);
    char *text = json_dumps(body, 0);
    snprintf(target, sizeof(target), "/v1/sys/policy/%s", name);
    json_decref(at_req(t, 204, "POST", target, text));
    free(text);
    json_decref(body);
}

static void test_create_defaults_and_lookup(void **state)
{
    struct kt *t = *state;
    char tok[KMS_TOKEN_MAX_LEN];
    char acc[64];
    put_policy(t, "p1", "path \"transit/*\" { capabilities = [\"read\"] }");
    json_t *b = create_token(t, "/v1/auth/token/create",
                             "{\"policies\":[\"P1\",\"p1\",\"ghost\"],\"ttl\":\"1h\","
                             "\"display_name\":\"My App!\",\"meta\":{\"team\":\"blue\","
                             "\"app\":\"web\"},\"num_uses\":5,\"explicit_max_ttl\":7200}",
                             tok, acc);
    assert_true(strncmp(tok, "s.", 2) == 0);
    assert_int_equal(strlen(tok), 26);
    assert_int_equal(strlen(acc), 24);
    static const char *const pols[] = {"default", "ghost", "p1", NULL};
    at_strings_are(at_auth(b, "policies"), pols);
    at_strings_are(at_auth(b, "token_policies"), pols);
    assert_int_equal(json_integer_value(at_auth(b, "lease_duration")), 3600);
    assert_true(json_is_true(at_auth(b, "renewable")));
    assert_true(json_is_false(at_auth(b, "orphan")));
    assert_string_equal(at_auth_str(b, "token_type"), "service");
    assert_int_equal(json_integer_value(at_auth(b, "num_uses")), 5);
    assert_string_equal(json_string_value(json_object_get(at_auth(b, "metadata"), "team")), "blue");
    assert_string_equal(at_warning(b, 0), "Policy \"ghost\" does not exist");
    assert_null(json_object_get(b, "data") ? json_object_get(json_object_get(b, "data"), "x")
                                           : NULL);
    json_decref(b);

    /* lookup-self shows every field with Vault's types; the default policy grants read on it,
     * not update, so a POST needs more than default */
    json_decref(at_as(t, tok, NULL, 403, "POST", "/v1/auth/token/lookup-self", NULL));
    int64_t uses[2];
    for (int i = 0; i < 2; i++) {
        b = at_as(t, tok, NULL, 200, "GET", "/v1/auth/token/lookup-self", NULL);
        assert_string_equal(at_str(b, "id"), tok);
        assert_string_equal(at_str(b, "accessor"), acc);
        assert_string_equal(at_str(b, "display_name"), "token-My-App");
        assert_string_equal(at_str(b, "path"), "auth/token/create");
        assert_string_equal(at_str(b, "type"), "service");
        assert_true(json_is_integer(kt_data(b, "creation_time")));
        assert_int_equal(json_integer_value(kt_data(b, "creation_ttl")), 3600);
        assert_int_equal(json_integer_value(kt_data(b, "explicit_max_ttl")), 7200);
        assert_true(json_is_string(kt_data(b, "expire_time")));
        assert_true(json_is_string(kt_data(b, "issue_time")));
        assert_true(json_is_true(kt_data(b, "renewable")));
        assert_true(json_is_false(kt_data(b, "orphan")));
        assert_true(json_integer_value(kt_data(b, "ttl")) > 3590);
        /* every use of a limited token counts, the lookups included */
        uses[i] = json_integer_value(kt_data(b, "num_uses"));
        json_t *meta = kt_data(b, "meta");
        assert_string_equal(json_string_value(json_object_get(meta, "app")), "web");
        assert_string_equal(json_string_value(json_object_get(meta, "team")), "blue");
        at_strings_are(kt_data(b, "policies"), pols);
        json_decref(b);
    }

    assert_true(uses[0] == 5 || uses[0] == 4);
    assert_int_equal(uses[1], uses[0] - 1);

    /* lookup of another token (root) and by accessor (no id) */
    char body[256];
    snprintf(body, sizeof(body), "{\"token\":\"%s\"}", tok);
    b = at_req(t, 200, "POST", "/v1/auth/token/lookup", body);
    assert_string_equal(at_str(b, "id"), tok);
    json_decref(b);
    snprintf(body, sizeof(body), "{\"accessor\":\"%s\"}", acc);
    b = at_req(t, 200, "POST", "/v1/auth/token/lookup-accessor", body);
    assert_string_equal(at_str(b, "id"), "");
    assert_string_equal(at_str(b, "display_name"), "token-My-App");
    json_decref(b);
    at_fail(t, 400, "POST", "/v1/auth/token/lookup", "{}", "missing token");
    at_fail(t, 403, "POST", "/v1/auth/token/lookup", "{\"token\":\"s.nosuchtokennosuchtoken00\"}",
            "bad token");
    at_fail(t, 400, "POST", "/v1/auth/token/lookup-accessor", "{}", "missing accessor");
    at_fail(t, 400, "POST", "/v1/auth/token/lookup-accessor", "{\"accessor\":\"nope\"}",
            "invalid accessor");
}

static void test_root_lookup_self_and_bearer(void **state)
{
    struct kt *t = *state;
    json_t *b = at_req(t, 200, "GET", "/v1/auth/token/lookup-self", NULL);
    assert_string_equal(at_str(b, "id"), "root");
    assert_string_equal(at_str(b, "path"), "auth/token/root");
    assert_true(json_is_null(kt_data(b, "expire_time")));
    assert_true(json_is_null(kt_data(b, "meta")));
    assert_int_equal(json_integer_value(kt_data(b, "ttl")), 0);
    assert_null(kt_data(b, "renewable"));
    assert_null(kt_data(b, "issue_time"));
    assert_true(json_is_true(kt_data(b, "orphan")));
    static const char *const root[] = {"root", NULL};
    at_strings_are(kt_data(b, "policies"), root);
    json_decref(b);
    b = at_req(t, 200, "POST", "/v1/auth/token/lookup-self", NULL);
    assert_string_equal(at_str(b, "id"), "root");
    json_decref(b);
    /* the token may come as a bearer token; lookup-self reports it as sent */
    struct kms_http_header h[] = {{"Authorization", "Bearer   root"}};
    assert_int_equal(at_raw(t, "GET", "/v1/auth/token/lookup-self", h, 1, "127.0.0.1", NULL, &b),
                     200);
    assert_string_equal(at_str(b, "id"), "root");
    json_decref(b);
    /* no token, or a bad one: 403 with the plain message */
    b = at_as(t, NULL, NULL, 403, "GET", "/v1/auth/token/lookup-self", NULL);
    at_err_is(b, "permission denied");
    json_decref(b);
    b = at_as(t, "s.bogus", NULL, 403, "GET", "/v1/auth/token/lookup-self", NULL);
    at_err_is(b, "permission denied");
    json_decref(b);
}

static void test_create_options(void **state)
{
    struct kt *t = *state;
    char tok[KMS_TOKEN_MAX_LEN];
    /* a child of root with no policies inherits root's */
    json_t *b = create_token(t, "/v1/auth/token/create", "{}", tok, NULL);
    static const char *const root[] = {"root", NULL};
    at_strings_are(at_auth(b, "policies"), root);
    json_decref(b);
    /* no_default_policy */
    b = create_token(t, "/v1/auth/token/create",
                     "{\"policies\":[\"a\"],\"no_default_policy\":true}", NULL, NULL);
    static const char *const only_a[] = {"a", NULL};
    at_strings_are(at_auth(b, "policies"), only_a);
    json_decref(b);
    /* orphans: create-orphan and no_parent */
    b = create_token(t, "/v1/auth/token/create-orphan", "{\"policies\":[\"a\"]}", tok, NULL);
    assert_true(json_is_true(at_auth(b, "orphan")));
    json_decref(b);
    b = at_as(t, tok, NULL, 200, "GET", "/v1/auth/token/lookup-self", NULL);
    assert_string_equal(at_str(b, "path"), "auth/token/create-orphan");
    json_decref(b);
    b = create_token(t, "/v1/auth/token/create", "{\"policies\":[\"a\"],\"no_parent\":true}", NULL,
                     NULL);
    assert_true(json_is_true(at_auth(b, "orphan")));
    json_decref(b);
    /* periodic token: lease = period, shown by lookup */
    b = create_token(t, "/v1/auth/token/create", "{\"policies\":[\"a\"],\"period\":\"10m\"}", tok,
                     NULL);
    assert_int_equal(json_integer_value(at_auth(b, "lease_duration")), 600);
    json_decref(b);
    b = at_as(t, tok, NULL, 200, "GET", "/v1/auth/token/lookup-self", NULL);
    assert_int_equal(json_integer_value(kt_data(b, "period")), 600);
    json_decref(b);
    /* a custom id (root only), once */
    b = create_token(t, "/v1/auth/token/create", "{\"id\":\"my-own-token\",\"policies\":[\"a\"]}",
                     tok, NULL);
    assert_string_equal(tok, "my-own-token");
    json_decref(b);
    at_fail(t, 400, "POST", "/v1/auth/token/create", "{\"id\":\"my-own-token\"}",
            "cannot create a token with a duplicate ID");
    at_fail(t, 400, "POST", "/v1/auth/token/create", "{\"id\":\"a.b\"}",
            "custom token ID cannot have the 's.' prefix or contain a '.'");
    /* non-renewable tokens */
    b = create_token(t, "/v1/auth/token/create", "{\"policies\":[\"a\"],\"renewable\":false}", tok,
                     NULL);
    json_decref(b);
    b = at_as(t, tok, NULL, 400, "POST", "/v1/auth/token/renew-self", "{}");
    at_err_is(b, "lease is not renewable");
    json_decref(b);
    /* refusals */
    at_fail(t, 400, "POST", "/v1/auth/token/create", "{\"type\":\"batch\"}",
            "batch tokens are not supported by kmsd; use \"service\"");
    at_fail(t, 400, "POST", "/v1/auth/token/create", "{\"type\":\"weird\"}",
            "unsupported token type \"weird\"");
    at_fail(t, 400, "POST", "/v1/auth/token/create", "{\"ttl\":-5}",
            "ttl, explicit_max_ttl, period and num_uses cannot be negative");
    at_fail(t, 400, "POST", "/v1/auth/token/create", "{\"num_uses\":-1}",
            "ttl, explicit_max_ttl, period and num_uses cannot be negative");
    at_fail(t, 400, "POST", "/v1/auth/token/create", "{\"meta\":{\"a\":1}}",
            "meta values must be strings");
    at_fail(t, 400, "POST", "/v1/auth/token/create",
            "{\"meta\":{\"a\":\"1\",\"b\":\"1\",\"c\":\"1\",\"d\":\"1\",\"e\":\"1\",\"f\":\"1\","
            "\"g\":\"1\",\"h\":\"1\",\"i\":\"1\"}}",
            "too many meta entries (at most 8)");
    char many[2048];
    size_t o = (size_t)snprintf(many, sizeof(many), "{\"policies\":[");
    for (int i = 0; i < 33; i++) {
        o += (size_t)snprintf(many + o, sizeof(many) - o, "%s\"p%d\"", i ? "," : "", i);
    }
    snprintf(many + o, sizeof(many) - o, "]}");
    at_fail(t, 400, "POST", "/v1/auth/token/create", many, "too many policies (at most 32)");
    /* the legacy `lease` is the ttl */
    b = create_token(t, "/v1/auth/token/create", "{\"policies\":[\"a\"],\"lease\":\"2m\"}", NULL,
                     NULL);
    assert_int_equal(json_integer_value(at_auth(b, "lease_duration")), 120);
    json_decref(b);
}

static void test_create_by_non_root(void **state)
{
    struct kt *t = *state;
    char parent[KMS_TOKEN_MAX_LEN];
    char sudo[KMS_TOKEN_MAX_LEN];
    put_policy(t, "creator", "path \"auth/token/create*\" { capabilities = [\"update\"] }");
    put_policy(t, "admin", "path \"auth/token/create*\" { capabilities = [\"update\", \"sudo\"] }");
    json_decref(
        create_token(t, "/v1/auth/token/create", "{\"policies\":[\"creator\"]}", parent, NULL));
    json_decref(create_token(t, "/v1/auth/token/create", "{\"policies\":[\"admin\"]}", sudo, NULL));
    /* a subset of the parent's policies (default always allowed) */
    json_t *b = at_as(t, parent, NULL, 200, "POST", "/v1/auth/token/create",
                      "{\"policies\":[\"creator\",\"default\"]}");
    assert_true(json_is_false(at_auth(b, "orphan")));
    json_decref(b);
    static const struct {
        const char *body;
        const char *msg;
    } refused[] = {
        {"{\"policies\":[\"admin\"]}", "child policies must be subset of parent"},
        {"{\"id\":\"custom\"}", "root or sudo privileges required to specify token id"},
        {"{\"no_parent\":true}", "root or sudo privileges required to create orphan token"},
        {"{\"period\":60}", "root or sudo privileges required to create periodic token"},
        {"{\"policies\":[\"root\"]}",
         "root tokens may not be created without parent token being root"},
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        b = at_as(t, parent, NULL, 400, "POST", "/v1/auth/token/create", refused[i].body);
        at_err_is(b, refused[i].msg);
        json_decref(b);
    }
    b = at_as(t, parent, NULL, 400, "POST", "/v1/auth/token/create-orphan", "{}");
    at_err_is(b, "root or sudo privileges required to create orphan token");
    json_decref(b);
    /* sudo on the path: orphans, periods and any policy */
    b = at_as(t, sudo, NULL, 200, "POST", "/v1/auth/token/create-orphan",
              "{\"policies\":[\"creator\"],\"period\":60}");
    assert_true(json_is_true(at_auth(b, "orphan")));
    json_decref(b);
    /* no policy on the path at all: ACL denial */
    char plain[KMS_TOKEN_MAX_LEN];
    json_decref(create_token(t, "/v1/auth/token/create", "{\"policies\":[\"x\"]}", plain, NULL));
    b = at_as(t, plain, NULL, 403, "POST", "/v1/auth/token/create", "{}");
    at_err_is(b, "1 error occurred:\n\t* permission denied\n\n");
    json_decref(b);
}

static void test_renew_with_clock(void **state)
{
    struct kt *t = *state;
    char tok[KMS_TOKEN_MAX_LEN];
    char acc[64];
    char body[256];
    at_clock_install(t);
    json_decref(create_token(t, "/v1/auth/token/create",
                             "{\"policies\":[\"a\"],\"ttl\":\"1h\",\"explicit_max_ttl\":\"2h\"}",
                             tok, acc));
    /* half an hour later: renew-self for the default ttl */
    at_clock_ms += 1800 * 1000;
    json_t *b = at_as(t, tok, NULL, 200, "POST", "/v1/auth/token/renew-self", "{}");
    assert_int_equal(json_integer_value(at_auth(b, "lease_duration")), 3600);
    assert_string_equal(at_auth_str(b, "client_token"), tok);
    json_decref(b);
    b = at_as(t, tok, NULL, 200, "GET", "/v1/auth/token/lookup-self", NULL);
    assert_true(json_is_string(kt_data(b, "last_renewal")));
    assert_true(json_is_integer(kt_data(b, "last_renewal_time")));
    json_decref(b);
    /* at 1h20 an increment of 1h is capped at the explicit max, with Vault's warning */
    at_clock_ms += 3000 * 1000;
    b = at_as(t, tok, NULL, 200, "POST", "/v1/auth/token/renew-self", "{\"increment\":\"1h\"}");
    assert_int_equal(json_integer_value(at_auth(b, "lease_duration")), 2400);
    assert_string_equal(at_warning(b, 0), "TTL of \"1h\" exceeded the effective max_ttl of "
                                          "\"40m\"; TTL value is capped accordingly");
    json_decref(b);
    b = at_as(t, tok, NULL, 400, "POST", "/v1/auth/token/renew-self", "{\"increment\":-1}");
    at_err_is(b, "increment cannot be negative");
    json_decref(b);
    /* renew by token and by accessor (admin calls) */
    snprintf(body, sizeof(body), "{\"token\":\"%s\",\"increment\":60}", tok);
    b = at_req(t, 200, "POST", "/v1/auth/token/renew", body);
    assert_int_equal(json_integer_value(at_auth(b, "lease_duration")), 60);
    json_decref(b);
    snprintf(body, sizeof(body), "{\"accessor\":\"%s\",\"increment\":120}", acc);
    b = at_req(t, 200, "POST", "/v1/auth/token/renew-accessor", body);
    assert_int_equal(json_integer_value(at_auth(b, "lease_duration")), 120);
    assert_string_equal(at_auth_str(b, "client_token"), "");
    json_decref(b);
    at_fail(t, 403, "POST", "/v1/auth/token/renew", "{\"token\":\"s.nope\"}", "bad token");
    at_fail(t, 400, "POST", "/v1/auth/token/renew-accessor", "{\"accessor\":\"x\"}",
            "invalid accessor");
    /* 121 s later the token is gone */
    at_clock_ms += 121 * 1000;
    b = at_as(t, tok, NULL, 403, "GET", "/v1/auth/token/lookup-self", NULL);
    at_err_is(b, "permission denied");
    json_decref(b);

    /* a periodic token renews to its period, forever */
    json_decref(create_token(t, "/v1/auth/token/create", "{\"policies\":[\"a\"],\"period\":300}",
                             tok, NULL));
    for (int i = 0; i < 3; i++) {
        at_clock_ms += 299 * 1000;
        b = at_as(t, tok, NULL, 200, "POST", "/v1/auth/token/renew-self", "{\"increment\":9999}");
        assert_int_equal(json_integer_value(at_auth(b, "lease_duration")), 300);
        json_decref(b);
    }
    at_clock_ms += 301 * 1000;
    json_decref(at_as(t, tok, NULL, 403, "GET", "/v1/auth/token/lookup-self", NULL));
}

static void test_num_uses(void **state)
{
    struct kt *t = *state;
    char tok[KMS_TOKEN_MAX_LEN];
    json_decref(create_token(t, "/v1/auth/token/create", "{\"policies\":[\"a\"],\"num_uses\":2}",
                             tok, NULL));
    json_decref(at_as(t, tok, NULL, 200, "GET", "/v1/auth/token/lookup-self", NULL));
    json_decref(at_as(t, tok, NULL, 200, "GET", "/v1/auth/token/lookup-self", NULL));
    json_t *b = at_as(t, tok, NULL, 403, "GET", "/v1/auth/token/lookup-self", NULL);
    at_err_is(b, "permission denied");
    json_decref(b);
}

static void test_revoke(void **state)
{
    struct kt *t = *state;
    char parent[KMS_TOKEN_MAX_LEN];
    char child[KMS_TOKEN_MAX_LEN];
    char orphan[KMS_TOKEN_MAX_LEN];
    char acc[64];
    char body[256];
    put_policy(t, "maker", "path \"auth/token/create\" { capabilities = [\"update\"] }");
    json_decref(
        create_token(t, "/v1/auth/token/create", "{\"policies\":[\"maker\"]}", parent, NULL));
    json_t *b = at_as(t, parent, NULL, 200, "POST", "/v1/auth/token/create", "{}");
    snprintf(child, sizeof(child), "%s", at_auth_str(b, "client_token"));
    json_decref(b);
    json_decref(create_token(t, "/v1/auth/token/create-orphan", "{}", orphan, acc));
    /* revoke-self takes the children with it */
    b = at_as(t, parent, NULL, 204, "POST", "/v1/auth/token/revoke-self", NULL);
    assert_null(b);
    json_decref(at_as(t, parent, NULL, 403, "GET", "/v1/auth/token/lookup-self", NULL));
    b = at_as(t, child, NULL, 403, "GET", "/v1/auth/token/lookup-self", NULL);
    at_err_is(b, "permission denied");
    json_decref(b);
    /* revoke-accessor */
    snprintf(body, sizeof(body), "{\"accessor\":\"%s\"}", acc);
    json_decref(at_req(t, 204, "POST", "/v1/auth/token/revoke-accessor", body));
    json_decref(at_as(t, orphan, NULL, 403, "GET", "/v1/auth/token/lookup-self", NULL));
    at_fail(t, 400, "POST", "/v1/auth/token/revoke-accessor", body, "invalid accessor");
    /* revoke by token; an unknown token is not an error */
    json_decref(create_token(t, "/v1/auth/token/create", "{\"policies\":[\"a\"]}", child, NULL));
    snprintf(body, sizeof(body), "{\"token\":\"%s\"}", child);
    json_decref(at_req(t, 204, "POST", "/v1/auth/token/revoke", body));
    json_decref(at_as(t, child, NULL, 403, "GET", "/v1/auth/token/lookup-self", NULL));
    json_decref(at_req(t, 204, "POST", "/v1/auth/token/revoke", body));
    at_fail(t, 400, "POST", "/v1/auth/token/revoke", "{}", "missing token");
}

static void test_namespace_scope(void **state)
{
    struct kt *t = *state;
    char tok[KMS_TOKEN_MAX_LEN];
    json_t *b = NULL;
    int st = kt_call(t, "POST", "/v1/sys/namespaces/org1", "root", NULL, "{}", &b);
    assert_true(st == 200 || st == 204);
    json_decref(b);
    b = kt_ok(t, 200, "POST", "/v1/auth/token/create", "org1", "{\"policies\":[\"a\"]}");
    snprintf(tok, sizeof(tok), "%s", at_auth_str(b, "client_token"));
    json_decref(b);
    /* the token carries its namespace and works only there */
    b = at_as(t, tok, "org1", 200, "GET", "/v1/auth/token/lookup-self", NULL);
    assert_string_equal(at_str(b, "namespace_path"), "org1/");
    json_decref(b);
    json_decref(at_as(t, tok, NULL, 403, "GET", "/v1/auth/token/lookup-self", NULL));
    /* root's admin calls do not see another namespace's tokens */
    char body[256];
    snprintf(body, sizeof(body), "{\"token\":\"%s\"}", tok);
    at_fail(t, 403, "POST", "/v1/auth/token/lookup", body, "bad token");
    /* root policy cannot be handed out inside a namespace */
    b = kt_ok(t, 400, "POST", "/v1/auth/token/create", "org1", "{\"policies\":[\"root\"]}");
    at_err_is(b, "root tokens may not be created within a namespace");
    json_decref(b);
}

static void test_policy_crud(void **state)
{
    struct kt *t = *state;
    const char *hcl =
        "# keys\npath \"transit/keys/*\" {\n  capabilities = [\"read\", \"list\"]\n}\n";
    put_policy(t, "reader", hcl);
    json_t *b = at_req(t, 200, "GET", "/v1/sys/policy/reader", NULL);
    assert_string_equal(at_str(b, "name"), "reader");
    assert_string_equal(at_str(b, "rules"), hcl);
    json_decref(b);
    b = at_req(t, 200, "GET", "/v1/sys/policies/acl/reader", NULL);
    assert_string_equal(at_str(b, "policy"), hcl);
    assert_null(kt_data(b, "rules"));
    json_decref(b);
    /* names are lower-cased with a warning; base64 text is decoded */
    char b64[256];
    const char *json_pol = "{\"path\":{\"transit/encrypt/k\":{\"capabilities\":[\"update\"]}}}";
    kms_b64_encode((const uint8_t *)json_pol, strlen(json_pol), b64);
    char body[512];
    snprintf(body, sizeof(body), "{\"policy\":\"%s\"}", b64);
    b = at_req(t, 200, "POST", "/v1/sys/policies/acl/Writer", body);
    assert_string_equal(at_warning(b, 0), "policy name was converted to writer");
    json_decref(b);
    b = at_req(t, 200, "GET", "/v1/sys/policies/acl/writer", NULL);
    assert_string_equal(at_str(b, "policy"), json_pol);
    json_decref(b);
    /* the deprecated `rules` on sys/policy */
    b = at_req(t, 200, "PUT", "/v1/sys/policy/legacy",
               "{\"rules\":\"path \\\"a/*\\\" { capabilities = [\\\"read\\\"] }\"}");
    assert_string_equal(at_warning(b, 0), "'rules' is deprecated, please use 'policy' instead");
    json_decref(b);
    /* lists: sys/policy has keys and policies, sys/policies/acl keys; root listed in root */
    b = at_req(t, 200, "GET", "/v1/sys/policy", NULL);
    json_t *keys = kt_data(b, "keys");
    assert_true(json_equal(keys, kt_data(b, "policies")));
    bool seen_root = false, seen_default = false, seen_writer = false;
    size_t i;
    json_t *v;
    json_array_foreach(keys, i, v)
    {
        seen_root = seen_root || strcmp(json_string_value(v), "root") == 0;
        seen_default = seen_default || strcmp(json_string_value(v), "default") == 0;
        seen_writer = seen_writer || strcmp(json_string_value(v), "writer") == 0;
    }
    assert_true(seen_root && seen_default && seen_writer);
    json_decref(b);
    b = at_req(t, 200, "LIST", "/v1/sys/policies/acl", NULL);
    assert_true(json_array_size(kt_data(b, "keys")) >= 5);
    assert_null(kt_data(b, "policies"));
    json_decref(b);
    b = at_req(t, 200, "LIST", "/v1/sys/policy", NULL);
    assert_non_null(kt_data(b, "policies"));
    json_decref(b);
    /* built-ins */
    at_fail(t, 400, "POST", "/v1/sys/policy/root", "{\"policy\":\"path \\\"a\\\" {}\"}",
            "cannot update \"root\" policy");
    at_fail(t, 400, "DELETE", "/v1/sys/policy/default", NULL, "cannot delete default policy");
    b = at_req(t, 200, "GET", "/v1/sys/policy/default", NULL);
    assert_non_null(strstr(at_str(b, "rules"), "auth/token/lookup-self"));
    json_decref(b);
    /* errors */
    at_fail(t, 400, "POST", "/v1/sys/policy/bad", "{}", "'policy' parameter not supplied or empty");
    at_fail(t, 400, "POST", "/v1/sys/policy/bad",
            "{\"policy\":\"path \\\"a\\\" { capabilities = [\\\"fly\\\"] }\"}",
            "failed to parse policy: path \"a\": invalid capability \"fly\"");
    at_fail(t, 400, "POST", "/v1/sys/policy/bad",
            "{\"policy\":\"path \\\"a+*\\\" { capabilities = [\\\"read\\\"] }\"}",
            "failed to parse policy: path \"a+*\": invalid use of wildcards ('+*' is forbidden)");
    at_fail(t, 400, "POST", "/v1/sys/policy/bad", "{\"policy\":\"path \\\"a\\\" {\"}",
            "failed to parse policy: At 1:11: expected a key, got: EOF");
    at_fail(t, 400, "POST", "/v1/sys/policy/bad", "{\"policy\":\"cGF0aAA=\"}",
            "failed to parse policy: At 1:1: illegal char");
    char longname[200];
    memset(longname, 'n', 150);
    longname[150] = '\0';
    char target[256];
    snprintf(target, sizeof(target), "/v1/sys/policy/%s", longname);
    at_fail(t, 400, "POST", target, "{\"policy\":\"path \\\"a\\\" {}\"}",
            "policy name too long (at most 127 bytes)");
    json_decref(at_req(t, 404, "GET", "/v1/sys/policy/nope", NULL));
    /* delete */
    json_decref(at_req(t, 204, "DELETE", "/v1/sys/policy/reader", NULL));
    json_decref(at_req(t, 404, "GET", "/v1/sys/policy/reader", NULL));
    json_decref(at_req(t, 204, "DELETE", "/v1/sys/policies/acl/Writer", NULL));
    json_decref(at_req(t, 404, "GET", "/v1/sys/policies/acl/writer", NULL));
}

static void test_policy_drives_acl(void **state)
{
    struct kt *t = *state;
    char tok[KMS_TOKEN_MAX_LEN];
    json_decref(at_req(t, 200, "POST", "/v1/transit/keys/k", "{}"));
    put_policy(t, "enc", "path \"transit/encrypt/k\" { capabilities = [\"update\"] }");
    json_decref(create_token(t, "/v1/auth/token/create", "{\"policies\":[\"enc\"]}", tok, NULL));
    json_decref(at_as(t, tok, NULL, 200, "POST", "/v1/transit/encrypt/k", "{\"plaintext\":\"\"}"));
    json_t *b = at_as(t, tok, NULL, 403, "POST", "/v1/transit/decrypt/k", "{\"ciphertext\":\"x\"}");
    at_err_is(b, "1 error occurred:\n\t* permission denied\n\n");
    json_decref(b);
    /* the default policy grants the token's own endpoints */
    json_decref(at_as(t, tok, NULL, 200, "GET", "/v1/auth/token/lookup-self", NULL));
    /* a policy change applies to existing tokens at once */
    put_policy(t, "enc", "path \"transit/decrypt/k\" { capabilities = [\"update\"] }");
    json_decref(at_as(t, tok, NULL, 403, "POST", "/v1/transit/encrypt/k", "{\"plaintext\":\"\"}"));
    json_decref(at_req(t, 204, "DELETE", "/v1/sys/policy/enc", NULL));
    json_decref(
        at_as(t, tok, NULL, 403, "POST", "/v1/transit/decrypt/k", "{\"ciphertext\":\"x\"}"));
}

static void test_sys_auth(void **state)
{
    struct kt *t = *state;
    json_t *b = at_req(t, 200, "GET", "/v1/sys/auth", NULL);
    assert_string_equal(json_string_value(json_object_get(kt_data(b, "token/"), "type")), "token");
    assert_null(kt_data(b, "k8s/"));
    json_decref(b);
    json_decref(at_req(t, 204, "POST", "/v1/sys/auth/k8s",
                       "{\"type\":\"kubernetes\",\"description\":\"cluster one\"}"));
    at_fail(t, 400, "POST", "/v1/sys/auth/oidc/", "{\"type\":\"jwt\"}",
            "cannot write to a path ending in '/'");
    json_decref(at_req(t, 204, "POST", "/v1/sys/auth/oidc", "{\"type\":\"jwt\"}"));
    b = at_req(t, 200, "GET", "/v1/sys/auth", NULL);
    json_t *m = kt_data(b, "k8s/");
    assert_string_equal(json_string_value(json_object_get(m, "type")), "kubernetes");
    assert_string_equal(json_string_value(json_object_get(m, "description")), "cluster one");
    assert_int_equal(
        strncmp(json_string_value(json_object_get(m, "accessor")), "auth_kubernetes_", 16), 0);
    assert_string_equal(json_string_value(json_object_get(kt_data(b, "oidc/"), "type")), "jwt");
    json_decref(b);
    b = at_req(t, 200, "GET", "/v1/sys/auth/k8s", NULL);
    assert_string_equal(at_str(b, "type"), "kubernetes");
    assert_true(json_is_string(kt_data(b, "uuid")));
    assert_string_equal(json_string_value(json_object_get(kt_data(b, "config"), "token_type")),
                        "default-service");
    json_decref(b);
    at_fail(t, 400, "GET", "/v1/sys/auth/nope", NULL, "No auth engine at auth/nope/");
    at_fail(t, 400, "POST", "/v1/sys/auth/x", "{}", "backend type must be specified as a string");
    at_fail(t, 400, "POST", "/v1/sys/auth/x", "{\"type\":\"ldap\"}",
            "plugin not found in the catalog: ldap");
    at_fail(t, 400, "POST", "/v1/sys/auth/token", "{\"type\":\"jwt\"}",
            "path is already in use at auth/token/");
    at_fail(t, 400, "POST", "/v1/sys/auth/a/../b", "{\"type\":\"jwt\"}",
            "path cannot contain '..'");
    b = at_req(t, 400, "POST", "/v1/sys/auth/k8s", "{\"type\":\"jwt\"}");
    assert_non_null(strstr(kt_err(b), "auth/k8s/"));
    json_decref(b);
    /* disable; disabling a missing mount succeeds too */
    json_decref(at_req(t, 204, "DELETE", "/v1/sys/auth/oidc", NULL));
    json_decref(at_req(t, 204, "DELETE", "/v1/sys/auth/oidc", NULL));
    at_fail(t, 400, "GET", "/v1/sys/auth/oidc", NULL, "No auth engine at auth/oidc/");
    /* sys/auth is sudo-protected */
    char tok[KMS_TOKEN_MAX_LEN];
    put_policy(t, "authadm",
               "path \"sys/auth/*\" { capabilities = [\"create\", \"update\", "
               "\"read\", \"delete\"] }");
    json_decref(
        create_token(t, "/v1/auth/token/create", "{\"policies\":[\"authadm\"]}", tok, NULL));
    json_decref(
        at_as(t, tok, NULL, 403, "POST", "/v1/sys/auth/other", "{\"type\":\"kubernetes\"}"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_defaults_and_lookup, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_root_lookup_self_and_bearer, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_create_options, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_create_by_non_root, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_renew_with_clock, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_num_uses, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_revoke, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_namespace_scope, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_policy_crud, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_policy_drives_acl, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_sys_auth, kt_setup, kt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
