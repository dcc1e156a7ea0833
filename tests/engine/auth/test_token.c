/*
 * test_token.c - auth/token endpoints through the whole pipeline (auth-audit.md §3): create with
 * every parameter and its refusals, lookup / lookup-self / lookup-accessor, renew / renew-self /
 * renew-accessor with an injected token-store clock, revoke / revoke-self / revoke-accessor
 * (children go with their parent), num_uses and expiry, revoke-orphan (children live on),
 * tidy and LIST accessors (sudo, namespaces, expiry by the injected clock, the audit lines);
 * plus sys/policy CRUD and its effect on the ACL, and sys/auth enable / read / list / disable.
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

    /* 5 uses: the refused POST took one, the first lookup another, and it shows what is left */
    assert_int_equal(uses[0], 3);
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
            "custom token ID cannot have a '.' in the value");
    at_fail(t, 400, "POST", "/v1/auth/token/create", "{\"id\":\"s.mine\"}",
            "custom token ID cannot have the 's.' prefix");
    at_fail(t, 400, "POST", "/v1/auth/token/create", "{\"id\":\"hvs.mine\"}",
            "custom token ID cannot have the 'hvs.' prefix");
    at_fail(t, 400, "POST", "/v1/auth/token/create", "{\"id\":\"my token\"}",
            "custom token ID must be 1 to 127 printable ASCII characters without spaces");
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
    /* a second time: no token has it any more, which is no error (OpenBao: 200, a warning) */
    b = at_req(t, 200, "POST", "/v1/auth/token/revoke-accessor", body);
    assert_string_equal(json_string_value(json_array_get(json_object_get(b, "warnings"), 0)),
                        "No token found with this accessor");
    json_decref(b);
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
    at_fail(t, 400, "POST", "/v1/sys/auth/a..b", "{\"type\":\"jwt\"}", "path cannot contain '..'");
    /* a path that is not clean is no route (404), as a "." or ".." segment anywhere */
    at_fail(t, 404, "POST", "/v1/sys/auth/a/../b", "{\"type\":\"jwt\"}",
            "1 error occurred:\n\t* unsupported path\n\n");
    at_fail(t, 404, "POST", "/v1/sys/auth//b", "{\"type\":\"jwt\"}",
            "1 error occurred:\n\t* unsupported path\n\n");
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

/* ---- revoke-orphan, tidy, LIST accessors ------------------------------------------------ */

#define ACL_PD "1 error occurred:\n\t* permission denied\n\n"

/* A token created as root with `policies` (a JSON array text); copied to tok. */
static void token_with(struct kt *t, const char *policies, char *tok)
{
    char body[256];
    snprintf(body, sizeof(body), "{\"policies\":%s}", policies);
    json_decref(create_token(t, "/v1/auth/token/create", body, tok, NULL));
}

/* A child token made by `parent`; copied to tok. */
static void child_of(struct kt *t, const char *parent, char *tok)
{
    json_t *b = at_as(t, parent, NULL, 200, "POST", "/v1/auth/token/create", "{}");
    snprintf(tok, KMS_TOKEN_MAX_LEN, "%s", at_auth_str(b, "client_token"));
    json_decref(b);
}

static bool is_orphan(struct kt *t, const char *tok)
{
    json_t *b = at_as(t, tok, NULL, 200, "GET", "/v1/auth/token/lookup-self", NULL);
    bool orphan = json_is_true(kt_data(b, "orphan"));
    json_decref(b);
    return orphan;
}

static void test_revoke_orphan(void **state)
{
    struct kt *t = *state;
    char parent[KMS_TOKEN_MAX_LEN], child[KMS_TOKEN_MAX_LEN], grandchild[KMS_TOKEN_MAX_LEN];
    char plain[KMS_TOKEN_MAX_LEN], upd[KMS_TOKEN_MAX_LEN], sudo[KMS_TOKEN_MAX_LEN];
    char body[256];
    put_policy(t, "maker", "path \"auth/token/create\" { capabilities = [\"update\"] }");
    put_policy(t, "orphaner", "path \"auth/token/revoke-orphan\" { capabilities = [\"update\"] }");
    put_policy(t, "orphaner-sudo",
               "path \"auth/token/revoke-orphan\" { capabilities = [\"update\", \"sudo\"] }");
    token_with(t, "[\"maker\"]", parent);
    child_of(t, parent, child);
    child_of(t, child, grandchild);
    token_with(t, "[\"x\"]", plain);
    token_with(t, "[\"orphaner\"]", upd);
    token_with(t, "[\"orphaner-sudo\"]", sudo);
    assert_false(is_orphan(t, child));

    /* no grant on the path: the ACL's 403; update without sudo: OpenBao's handler 400 (the
     * missing token is reported first) */
    snprintf(body, sizeof(body), "{\"token\":\"%s\"}", parent);
    json_t *b = at_as(t, plain, NULL, 403, "POST", "/v1/auth/token/revoke-orphan", body);
    at_err_is(b, ACL_PD);
    json_decref(b);
    b = at_as(t, upd, NULL, 400, "POST", "/v1/auth/token/revoke-orphan", "{}");
    at_err_is(b, "missing token ID");
    json_decref(b);
    b = at_as(t, upd, NULL, 400, "POST", "/v1/auth/token/revoke-orphan", body);
    at_err_is(b, "root or sudo privileges required to revoke and orphan");
    json_decref(b);
    json_decref(at_as(t, parent, NULL, 200, "GET", "/v1/auth/token/lookup-self", NULL));

    /* with sudo: 204; the parent is gone, its child lives on as an orphan, the grandchild
     * keeps its parent */
    assert_null(at_as(t, sudo, NULL, 204, "POST", "/v1/auth/token/revoke-orphan", body));
    b = at_as(t, parent, NULL, 403, "GET", "/v1/auth/token/lookup-self", NULL);
    at_err_is(b, "permission denied");
    json_decref(b);
    assert_true(is_orphan(t, child));
    assert_false(is_orphan(t, grandchild));
    /* the orphan is an ordinary token: revoking it takes its own child */
    snprintf(body, sizeof(body), "{\"token\":\"%s\"}", child);
    json_decref(at_req(t, 204, "POST", "/v1/auth/token/revoke", body));
    json_decref(at_as(t, grandchild, NULL, 403, "GET", "/v1/auth/token/lookup-self", NULL));

    /* refusals, as OpenBao words them */
    at_fail(t, 400, "POST", "/v1/auth/token/revoke-orphan", "{}", "missing token ID");
    at_fail(t, 400, "POST", "/v1/auth/token/revoke-orphan", body, "token to revoke not found");
    at_fail(t, 400, "POST", "/v1/auth/token/revoke-orphan", "{\"token\":\"s.nope\"}",
            "token to revoke not found");
    /* a token of another namespace is not visible here */
    int st = kt_call(t, "POST", "/v1/sys/namespaces/org1", "root", NULL, "{}", &b);
    assert_true(st == 200 || st == 204);
    json_decref(b);
    b = kt_ok(t, 200, "POST", "/v1/auth/token/create", "org1", "{\"policies\":[\"a\"]}");
    snprintf(body, sizeof(body), "{\"token\":\"%s\"}", at_auth_str(b, "client_token"));
    json_decref(b);
    at_fail(t, 400, "POST", "/v1/auth/token/revoke-orphan", body, "token to revoke not found");
    b = kt_ok(t, 204, "POST", "/v1/auth/token/revoke-orphan", "org1", body);
    json_decref(b);
    /* OpenBao serves no revoke-orphan/<token> (its pattern is anchored) */
    at_fail(t, 404, "POST", "/v1/auth/token/revoke-orphan/s.abc", "{}",
            "1 error occurred:\n\t* unsupported path\n\n");
    /* the parameter list is OpenBao's: only `token` */
    snprintf(body, sizeof(body), "{\"token\":\"%s\",\"increment\":5}", sudo);
    b = at_req(t, 204, "POST", "/v1/auth/token/revoke-orphan", body);
    json_decref(b);
}

static size_t count_db(struct kt *t, enum kms_db db)
{
    struct kms_txn *txn = NULL;
    size_t n = 0;
    assert_int_equal(kms_storage_txn_begin(kms_api_storage(t->api), false, &txn), 0);
    assert_int_equal(kms_storage_count(txn, db, &n), 0);
    kms_storage_txn_abort(&txn);
    return n;
}

/* Deleting a namespace removes its tokens (as OpenBao revokes them) in the same write: no
 * record is left that no lookup or tidy would ever meet again. */
static void test_namespace_delete_removes_tokens(void **state)
{
    struct kt *t = *state;
    json_t *b = NULL;
    int st = kt_call(t, "POST", "/v1/sys/namespaces/gone", "root", NULL, "{}", &b);
    assert_true(st == 200 || st == 204);
    json_decref(b);
    size_t before = count_db(t, KMS_DB_TOKENS);
    size_t acc_before = count_db(t, KMS_DB_ACCESSORS);
    b = kt_ok(t, 200, "POST", "/v1/auth/token/create", "gone", "{\"policies\":[\"a\"]}");
    char tok[KMS_TOKEN_MAX_LEN];
    snprintf(tok, sizeof(tok), "%s",
             json_string_value(json_object_get(json_object_get(b, "auth"), "client_token")));
    json_decref(b);
    json_decref(kt_ok(t, 200, "POST", "/v1/auth/token/create", "gone",
                      "{\"policies\":[\"a\"],\"ttl\":10}"));
    assert_int_equal(count_db(t, KMS_DB_TOKENS), before + 2);
    struct kms_token tk;
    assert_int_equal(kms_auth_token_lookup(kms_api_auth(t->api), tok, &tk), 0); /* cached */
    json_decref(kt_ok(t, 204, "DELETE", "/v1/sys/namespaces/gone", NULL, NULL));
    assert_int_equal(count_db(t, KMS_DB_TOKENS), before);
    assert_int_equal(count_db(t, KMS_DB_ACCESSORS), acc_before);
    assert_int_equal(kms_auth_token_lookup(kms_api_auth(t->api), tok, &tk), KMS_STORAGE_NOTFOUND);
    /* the root namespace's own tokens are untouched */
    assert_int_equal(kms_auth_token_lookup(kms_api_auth(t->api), "root", &tk), 0);
}

static const char *const TIDY_STARTED = "Tidy operation successfully started. Any information "
                                        "from the operation will be printed to kmsd's server "
                                        "log.";

static void test_tidy(void **state)
{
    struct kt *t = *state;
    char live[KMS_TOKEN_MAX_LEN], gone[KMS_TOKEN_MAX_LEN], parent[KMS_TOKEN_MAX_LEN];
    char child[KMS_TOKEN_MAX_LEN], plain[KMS_TOKEN_MAX_LEN];
    char body[256];
    json_t *b = NULL;
    at_clock_install(t);
    int st = kt_call(t, "POST", "/v1/sys/namespaces/org1", "root", NULL, "{}", &b);
    assert_true(st == 200 || st == 204);
    json_decref(b);
    put_policy(t, "maker", "path \"auth/token/create\" { capabilities = [\"update\"] }");
    json_decref(create_token(t, "/v1/auth/token/create", "{\"policies\":[\"a\"],\"ttl\":\"1h\"}",
                             live, NULL));
    json_decref(
        create_token(t, "/v1/auth/token/create", "{\"policies\":[\"a\"],\"ttl\":10}", gone, NULL));
    token_with(t, "[\"maker\"]", parent);
    child_of(t, parent, child);
    token_with(t, "[\"x\"]", plain);
    json_decref(kt_ok(t, 200, "POST", "/v1/auth/token/create", "org1",
                      "{\"policies\":[\"a\"],\"ttl\":10}"));
    snprintf(body, sizeof(body), "{\"token\":\"%s\"}", parent);
    json_decref(at_req(t, 204, "POST", "/v1/auth/token/revoke", body));
    size_t tokens = count_db(t, KMS_DB_TOKENS), accs = count_db(t, KMS_DB_ACCESSORS);
    assert_int_equal(accs, tokens);

    /* update on auth/token/tidy is needed (not sudo) */
    b = at_as(t, plain, NULL, 403, "POST", "/v1/auth/token/tidy", NULL);
    at_err_is(b, ACL_PD);
    json_decref(b);
    /* past the short ttl: OpenBao's 202 and warning, no data; the expired token and the dead
     * child are gone with their accessor entries, org1's expired token is org1's to tidy */
    at_clock_ms += 10 * 1000;
    b = at_req(t, 202, "POST", "/v1/auth/token/tidy", NULL);
    assert_true(json_is_null(json_object_get(b, "data")));
    assert_int_equal(json_array_size(json_object_get(b, "warnings")), 1);
    assert_string_equal(at_warning(b, 0), TIDY_STARTED);
    json_decref(b);
    assert_int_equal(count_db(t, KMS_DB_TOKENS), tokens - 2);
    assert_int_equal(count_db(t, KMS_DB_ACCESSORS), accs - 2);
    json_decref(at_as(t, live, NULL, 200, "GET", "/v1/auth/token/lookup-self", NULL));
    b = kt_ok(t, 202, "PUT", "/v1/auth/token/tidy", "org1", NULL);
    assert_string_equal(at_warning(b, 0), TIDY_STARTED);
    json_decref(b);
    assert_int_equal(count_db(t, KMS_DB_TOKENS), tokens - 3);
    assert_int_equal(count_db(t, KMS_DB_ACCESSORS), accs - 3);
    /* nothing left to do: the same answer */
    b = at_req(t, 202, "POST", "/v1/auth/token/tidy", "{}");
    assert_string_equal(at_warning(b, 0), TIDY_STARTED);
    json_decref(b);
    assert_int_equal(count_db(t, KMS_DB_TOKENS), tokens - 3);
    /* only POST/PUT */
    at_fail(t, 405, "GET", "/v1/auth/token/tidy", NULL,
            "1 error occurred:\n\t* unsupported operation\n\n");
}

/* The accessor of `tok` (lookup-self). */
static void accessor_of(struct kt *t, const char *tok, char *acc)
{
    json_t *b = at_as(t, tok, NULL, 200, "GET", "/v1/auth/token/lookup-self", NULL);
    snprintf(acc, 64, "%s", at_str(b, "accessor"));
    json_decref(b);
}

static void test_list_accessors(void **state)
{
    struct kt *t = *state;
    char a[KMS_TOKEN_MAX_LEN], brief[KMS_TOKEN_MAX_LEN], lister[KMS_TOKEN_MAX_LEN];
    char sudo[KMS_TOKEN_MAX_LEN];
    char racc[64], aacc[64], bacc[64], oacc[64];
    json_t *b = NULL;
    at_clock_install(t);
    int st = kt_call(t, "POST", "/v1/sys/namespaces/org1", "root", NULL, "{}", &b);
    assert_true(st == 200 || st == 204);
    json_decref(b);
    /* an empty list: 404 with no error, as OpenBao's lists */
    b = kt_ok(t, 404, "LIST", "/v1/auth/token/accessors", "org1", NULL);
    assert_int_equal(json_array_size(json_object_get(b, "errors")), 0);
    assert_non_null(json_object_get(b, "errors"));
    json_decref(b);

    accessor_of(t, "root", racc);
    json_decref(
        create_token(t, "/v1/auth/token/create", "{\"policies\":[\"a\"],\"ttl\":\"1h\"}", a, aacc));
    json_decref(
        create_token(t, "/v1/auth/token/create", "{\"policies\":[\"a\"],\"ttl\":5}", brief, bacc));
    b = kt_ok(t, 200, "POST", "/v1/auth/token/create", "org1", "{\"policies\":[\"a\"]}");
    snprintf(oacc, sizeof(oacc), "%s", at_auth_str(b, "accessor"));
    json_decref(b);
    /* exactly the live accessors of the namespace, sorted; LIST, GET ?list=true, trailing / */
    const char *want[4] = {racc, aacc, bacc, NULL};
    for (size_t i = 0; i < 3; i++) {
        for (size_t j = i + 1; j < 3; j++) {
            if (strcmp(want[j], want[i]) < 0) {
                const char *x = want[i];
                want[i] = want[j];
                want[j] = x;
            }
        }
    }
    static const char *const forms[][2] = {{"LIST", "/v1/auth/token/accessors"},
                                           {"GET", "/v1/auth/token/accessors?list=true"},
                                           {"LIST", "/v1/auth/token/accessors/"}};
    for (size_t i = 0; i < 3; i++) {
        b = at_req(t, 200, forms[i][0], forms[i][1], NULL);
        at_strings_are(kt_data(b, "keys"), want);
        json_decref(b);
    }
    const char *org_want[] = {oacc, NULL};
    b = kt_ok(t, 200, "LIST", "/v1/auth/token/accessors", "org1", NULL);
    at_strings_are(kt_data(b, "keys"), org_want);
    json_decref(b);
    /* an expired token is not listed (nor removed: that is tidy's) */
    at_clock_ms += 5 * 1000;
    size_t tokens = count_db(t, KMS_DB_TOKENS);
    const char *live_want[3] = {strcmp(racc, aacc) < 0 ? racc : aacc,
                                strcmp(racc, aacc) < 0 ? aacc : racc, NULL};
    b = at_req(t, 200, "LIST", "/v1/auth/token/accessors", NULL);
    at_strings_are(kt_data(b, "keys"), live_want);
    json_decref(b);
    assert_int_equal(count_db(t, KMS_DB_TOKENS), tokens);

    /* sudo-only (OpenBao's root path "accessors*"): list alone is the ACL's 403 */
    put_policy(t, "lister", "path \"auth/token/accessors\" { capabilities = [\"list\"] }");
    put_policy(t, "lister-sudo",
               "path \"auth/token/accessors\" { capabilities = [\"list\", \"sudo\"] }");
    token_with(t, "[\"lister\"]", lister);
    token_with(t, "[\"lister-sudo\"]", sudo);
    b = at_as(t, lister, NULL, 403, "LIST", "/v1/auth/token/accessors", NULL);
    at_err_is(b, ACL_PD);
    json_decref(b);
    b = at_as(t, sudo, NULL, 200, "LIST", "/v1/auth/token/accessors", NULL);
    assert_int_equal(json_array_size(kt_data(b, "keys")), 4);
    json_decref(b);
    b = at_as(t, "root", NULL, 404, "GET", "/v1/auth/token/accessors", NULL);
    json_decref(b);
}

/* Every path is audited; tokens and accessors appear only as HMACs. */
static void test_admin_calls_audited(void **state)
{
    struct kt *t = *state;
    char parent[KMS_TOKEN_MAX_LEN], child[KMS_TOKEN_MAX_LEN], pacc[64], cacc[64];
    char body[256];
    put_policy(t, "maker", "path \"auth/token/create\" { capabilities = [\"update\"] }");
    json_decref(
        create_token(t, "/v1/auth/token/create", "{\"policies\":[\"maker\"]}", parent, pacc));
    child_of(t, parent, child);
    accessor_of(t, child, cacc);
    snprintf(body, sizeof(body), "{\"token\":\"%s\"}", parent);
    json_decref(at_req(t, 204, "POST", "/v1/auth/token/revoke-orphan", body));
    json_decref(at_req(t, 202, "POST", "/v1/auth/token/tidy", NULL));
    json_t *b = at_req(t, 200, "LIST", "/v1/auth/token/accessors", NULL);
    const char *rid = json_string_value(json_object_get(b, "request_id"));
    assert_non_null(rid);
    assert_true(kt_audit_contains(t, rid));
    json_decref(b);

    FILE *fp = fopen(t->audit_path, "r");
    assert_non_null(fp);
    char *line = NULL;
    size_t cap = 0;
    int seen_orphan = 0, seen_tidy = 0, seen_list = 0;
    while (getline(&line, &cap, fp) > 0) {
        /* neither token nor accessor in clear, on any line */
        assert_null(strstr(line, parent));
        assert_null(strstr(line, child));
        assert_null(strstr(line, pacc));
        assert_null(strstr(line, cacc));
        json_t *l = json_loads(line, 0, NULL);
        assert_non_null(l);
        json_t *req = json_object_get(l, "request");
        const char *path = json_string_value(json_object_get(req, "path"));
        bool resp = strcmp(json_string_value(json_object_get(l, "type")), "response") == 0;
        if (path != NULL && strcmp(path, "auth/token/revoke-orphan") == 0) {
            seen_orphan++;
            /* the body's token is there, as an HMAC */
            const char *tok =
                json_string_value(json_object_get(json_object_get(req, "data"), "token"));
            assert_non_null(tok);
            assert_int_equal(strncmp(tok, "hmac-sha256:", 12), 0);
        } else if (path != NULL && strcmp(path, "auth/token/tidy") == 0) {
            seen_tidy++;
            if (resp) {
                assert_non_null(strstr(line, "\"status\":202"));
            }
        } else if (path != NULL && strcmp(path, "auth/token/accessors/") == 0) {
            /* a list's path ends in '/', as Vault logs it */
            seen_list++;
            if (resp) {
                json_t *keys = json_object_get(
                    json_object_get(json_object_get(l, "response"), "data"), "keys");
                assert_true(json_array_size(keys) >= 2);
                for (size_t i = 0; i < json_array_size(keys); i++) {
                    assert_int_equal(
                        strncmp(json_string_value(json_array_get(keys, i)), "hmac-sha256:", 12), 0);
                }
            }
        }
        json_decref(l);
    }
    free(line);
    fclose(fp);
    assert_int_equal(seen_orphan, 2);
    assert_int_equal(seen_tidy, 2);
    assert_int_equal(seen_list, 2);
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
        cmocka_unit_test_setup_teardown(test_revoke_orphan, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_tidy, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_namespace_delete_removes_tokens, kt_setup,
                                        kt_teardown),
        cmocka_unit_test_setup_teardown(test_list_accessors, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_admin_calls_audited, kt_setup_audited, kt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
