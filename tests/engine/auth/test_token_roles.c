/*
 * test_token_roles.c - token store roles through the whole pipeline: auth/token/roles CRUD
 * (defaults, sanitised lists, legacy fields, every write refusal), and auth/token/create/:role
 * applying the role as OpenBao's handleCreateCommon does (policy lists and their refusals,
 * orphan, period, explicit max TTL, num_uses, renewable, bound CIDRs, path suffix, the role on
 * lookup), renewal through the role with an injected clock, entity aliases, the existence
 * check's create capability, and namespace scope.
 */
#include "tests/engine/auth/auth_util.h"

static void put_policy(struct kt *t, const char *ns, const char *name, const char *hcl)
{
    char target[128];
    json_t *body = json_pack("{s:s}", "policy", hcl);
    char *text = json_dumps(body, 0);
    snprintf(target, sizeof(target), "/v1/sys/policy/%s", name);
    json_decref(kt_ok(t, 204, "POST", target, ns, text));
    free(text);
    json_decref(body);
}

static json_t *role_read(struct kt *t, const char *name)
{
    char target[128];
    snprintf(target, sizeof(target), "/v1/auth/token/roles/%s", name);
    return at_req(t, 200, "GET", target, NULL);
}

/* Create against a role as `token` (NULL = root); copies the client token to tok. */
static json_t *role_create(struct kt *t, const char *token, const char *role, int want,
                           const char *body, char *tok)
{
    char target[128];
    snprintf(target, sizeof(target), "/v1/auth/token/create/%s", role);
    json_t *b = at_as(t, token ? token : "root", NULL, want, "POST", target, body);
    if (tok != NULL) {
        snprintf(tok, KMS_TOKEN_MAX_LEN, "%s", at_auth_str(b, "client_token"));
    }
    return b;
}

static void test_role_crud_and_defaults(void **state)
{
    struct kt *t = *state;
    json_decref(at_req(t, 404, "LIST", "/v1/auth/token/roles", NULL));
    json_decref(at_req(t, 404, "GET", "/v1/auth/token/roles/r1", NULL));
    json_decref(at_req(t, 204, "POST", "/v1/auth/token/roles/r1", "{}"));
    json_t *b = role_read(t, "r1");
    static const char *const none[] = {NULL};
    at_strings_are(kt_data(b, "allowed_policies"), none);
    at_strings_are(kt_data(b, "disallowed_policies"), none);
    at_strings_are(kt_data(b, "allowed_policies_glob"), none);
    at_strings_are(kt_data(b, "disallowed_policies_glob"), none);
    assert_string_equal(at_str(b, "name"), "r1");
    assert_true(json_is_false(kt_data(b, "orphan")));
    assert_true(json_is_true(kt_data(b, "renewable")));
    assert_string_equal(at_str(b, "path_suffix"), "");
    assert_string_equal(at_str(b, "token_type"), "default-service");
    assert_true(json_is_null(kt_data(b, "allowed_entity_aliases")));
    assert_true(json_is_false(kt_data(b, "token_no_default_policy")));
    assert_int_equal(json_integer_value(kt_data(b, "period")), 0);
    assert_int_equal(json_integer_value(kt_data(b, "token_period")), 0);
    assert_int_equal(json_integer_value(kt_data(b, "explicit_max_ttl")), 0);
    assert_int_equal(json_integer_value(kt_data(b, "token_explicit_max_ttl")), 0);
    assert_null(kt_data(b, "token_bound_cidrs"));
    assert_null(kt_data(b, "bound_cidrs"));
    assert_null(kt_data(b, "token_num_uses"));
    json_decref(b);

    /* lists are trimmed, lower-cased, deduplicated and sorted; root leaves only root */
    json_decref(at_req(t, 204, "POST", "/v1/auth/token/roles/r1",
                       "{\"allowed_policies\":\" B ,a,b,,A\",\"disallowed_policies\":[\"X\",\"x\"],"
                       "\"allowed_policies_glob\":[\"Dev-*\",\"ROOT\"],"
                       "\"allowed_entity_aliases\":\"Web-*,web-*\",\"orphan\":true,"
                       "\"renewable\":false,\"path_suffix\":\"v1.2\",\"token_period\":\"1h\","
                       "\"token_explicit_max_ttl\":7200,\"token_num_uses\":3,"
                       "\"token_bound_cidrs\":\"10.0.0.0/8, 127.0.0.1\","
                       "\"token_no_default_policy\":true,\"token_type\":\"service\"}"));
    b = role_read(t, "r1");
    static const char *const ab[] = {"a", "b", NULL};
    static const char *const x[] = {"x", NULL};
    static const char *const root[] = {"root", NULL};
    static const char *const web[] = {"web-*", NULL};
    static const char *const cidrs[] = {"10.0.0.0/8", "127.0.0.1", NULL};
    at_strings_are(kt_data(b, "allowed_policies"), ab);
    at_strings_are(kt_data(b, "disallowed_policies"), x);
    at_strings_are(kt_data(b, "allowed_policies_glob"), root);
    at_strings_are(kt_data(b, "allowed_entity_aliases"), web);
    at_strings_are(kt_data(b, "token_bound_cidrs"), cidrs);
    assert_true(json_is_true(kt_data(b, "orphan")));
    assert_true(json_is_false(kt_data(b, "renewable")));
    assert_string_equal(at_str(b, "path_suffix"), "v1.2");
    assert_int_equal(json_integer_value(kt_data(b, "token_period")), 3600);
    assert_int_equal(json_integer_value(kt_data(b, "period")), 0);
    assert_int_equal(json_integer_value(kt_data(b, "token_explicit_max_ttl")), 7200);
    assert_int_equal(json_integer_value(kt_data(b, "token_num_uses")), 3);
    assert_string_equal(at_str(b, "token_type"), "service");
    assert_true(json_is_true(kt_data(b, "token_no_default_policy")));
    json_decref(b);

    /* an update changes only what it names */
    json_decref(at_req(t, 204, "PUT", "/v1/auth/token/roles/r1", "{\"orphan\":false}"));
    b = role_read(t, "r1");
    assert_true(json_is_false(kt_data(b, "orphan")));
    at_strings_are(kt_data(b, "allowed_policies"), ab);
    assert_int_equal(json_integer_value(kt_data(b, "token_period")), 3600);
    json_decref(b);

    /* legacy names read back as written and feed the token_ values */
    json_decref(
        at_req(t, 204, "POST", "/v1/auth/token/roles/Legacy",
               "{\"period\":60,\"explicit_max_ttl\":\"2h\",\"bound_cidrs\":[\"::1/128\"]}"));
    b = role_read(t, "Legacy");
    assert_int_equal(json_integer_value(kt_data(b, "period")), 60);
    assert_int_equal(json_integer_value(kt_data(b, "token_period")), 60);
    assert_int_equal(json_integer_value(kt_data(b, "explicit_max_ttl")), 7200);
    assert_int_equal(json_integer_value(kt_data(b, "token_explicit_max_ttl")), 7200);
    static const char *const v6[] = {"::1/128", NULL};
    at_strings_are(kt_data(b, "bound_cidrs"), v6);
    at_strings_are(kt_data(b, "token_bound_cidrs"), v6);
    json_decref(b);
    /* both names: the token_ one wins, with a warning each */
    b = at_req(t, 200, "POST", "/v1/auth/token/roles/both",
               "{\"period\":60,\"token_period\":120,\"bound_cidrs\":\"10.0.0.1\","
               "\"token_bound_cidrs\":\"10.0.0.2\",\"explicit_max_ttl\":5,"
               "\"token_explicit_max_ttl\":6}");
    assert_string_equal(at_warning(b, 0), "Both 'token_period' and deprecated 'period' value "
                                          "supplied, ignoring the deprecated value");
    assert_string_equal(at_warning(b, 1), "Both 'token_bound_cidrs' and deprecated 'bound_cidrs' "
                                          "value supplied, ignoring the deprecated value");
    assert_string_equal(at_warning(b, 2),
                        "Both 'token_explicit_max_ttl' and deprecated 'explicit_max_ttl' value "
                        "supplied, ignoring the deprecated value");
    json_decref(b);
    b = role_read(t, "both");
    assert_int_equal(json_integer_value(kt_data(b, "period")), 0);
    assert_int_equal(json_integer_value(kt_data(b, "token_period")), 120);
    assert_int_equal(json_integer_value(kt_data(b, "token_explicit_max_ttl")), 6);
    assert_null(kt_data(b, "bound_cidrs"));
    json_decref(b);

    /* names are case-sensitive; list shows every role, sorted */
    json_decref(at_req(t, 404, "GET", "/v1/auth/token/roles/legacy", NULL));
    b = at_req(t, 200, "LIST", "/v1/auth/token/roles", NULL);
    static const char *const names[] = {"Legacy", "both", "r1", NULL};
    at_strings_are(kt_data(b, "keys"), names);
    json_decref(b);
    b = at_req(t, 200, "GET", "/v1/auth/token/roles?list=true", NULL);
    at_strings_are(kt_data(b, "keys"), names);
    json_decref(b);
    json_decref(at_req(t, 204, "DELETE", "/v1/auth/token/roles/r1", NULL));
    json_decref(at_req(t, 204, "DELETE", "/v1/auth/token/roles/r1", NULL));
    json_decref(at_req(t, 404, "GET", "/v1/auth/token/roles/r1", NULL));
}

static void test_role_write_refusals(void **state)
{
    struct kt *t = *state;
    static const struct {
        const char *body;
        const char *msg;
    } refused[] = {
        {"{\"path_suffix\":\"v1\"}",
         "given role path suffix contains invalid characters; must match \\w[\\w-.]+\\w"},
        {"{\"path_suffix\":\"abc/../x\"}",
         "error registering path suffix: path cannot contain parent references"},
        {"{\"token_type\":null}", "Invalid 'token_type' value: null"},
        {"{\"token_type\":\"bogus\"}", "invalid 'token_type' value \"bogus\""},
        {"{\"token_type\":\"default\"}", "invalid 'token_type' value \"default\""},
        {"{\"token_type\":\"batch\"}", "batch tokens are not supported by kmsd; use \"service\""},
        {"{\"token_type\":\"default-batch\"}",
         "batch tokens are not supported by kmsd; use \"service\""},
        {"{\"token_num_uses\":-1}",
         "error parsing role fields: 'token_num_uses' cannot be negative"},
        {"{\"token_period\":-1}", "error parsing role fields: 'token_period' cannot be negative"},
        {"{\"token_bound_cidrs\":[\"10.0.0.0/33\"]}",
         "error parsing role fields: error parsing address \"10.0.0.0/33\": Unable to convert "
         "\"10.0.0.0/33\" to an IPv4 or IPv6 address, or a UNIX Socket"},
        {"{\"bound_cidrs\":\"nope\"}",
         "error parsing bound_cidrs: error parsing address \"nope\": Unable to convert \"nope\" "
         "to an IPv4 or IPv6 address, or a UNIX Socket"},
        {"{\"allowed_policies\":[1]}", "allowed_policies must be a list of strings"},
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        at_fail(t, 400, "POST", "/v1/auth/token/roles/bad", refused[i].body, refused[i].msg);
    }
    /* nothing was stored by a refused write */
    json_decref(at_req(t, 404, "GET", "/v1/auth/token/roles/bad", NULL));
    /* an unanchored match, as Go's MatchString: a longer suffix with a valid run passes */
    json_decref(at_req(t, 204, "POST", "/v1/auth/token/roles/ok", "{\"path_suffix\":\"rev-1\"}"));
    json_t *b =
        at_req(t, 200, "POST", "/v1/auth/token/roles/big", "{\"token_explicit_max_ttl\":\"800h\"}");
    assert_string_equal(at_warning(b, 0),
                        "Given explicit max TTL of 2880000 is greater than system/mount allowed "
                        "value of 2764800 seconds; until this is fixed attempting to create tokens "
                        "against this role will result in an error");
    json_decref(b);
}

static void test_create_policy_lists(void **state)
{
    struct kt *t = *state;
    char tok[KMS_TOKEN_MAX_LEN];
    json_decref(at_req(t, 204, "POST", "/v1/auth/token/roles/app",
                       "{\"allowed_policies\":[\"app-read\",\"app-write\"],"
                       "\"allowed_policies_glob\":[\"team-*\"],"
                       "\"disallowed_policies\":[\"app-write\"],"
                       "\"disallowed_policies_glob\":[\"*-admin\"]}"));
    /* no policies asked: the role's allowed ones plus default, minus nothing disallowed...
     * app-write is listed in both, so the allowed set itself is refused */
    json_t *b = role_create(t, NULL, "app", 400, "{}", NULL);
    at_err_is(b, "token policy \"app-write\" is disallowed by this role");
    json_decref(b);
    b = role_create(t, NULL, "app", 200, "{\"policies\":[\"App-Read\",\"team-blue\"]}", tok);
    static const char *const got[] = {"app-read", "default", "team-blue", NULL};
    at_strings_are(at_auth(b, "policies"), got);
    json_decref(b);
    b = role_create(t, NULL, "app", 400, "{\"policies\":[\"other\"]}", NULL);
    at_err_is(b, "token policies ([\"default\" \"other\"]) must be subset of the role's allowed "
                 "policies ([\"app-read\" \"app-write\" \"default\"]) or glob policies "
                 "([\"team-*\"])");
    json_decref(b);
    b = role_create(t, NULL, "app", 400, "{\"policies\":[\"team-admin\"]}", NULL);
    at_err_is(b, "token policy \"team-admin\" is disallowed by this role");
    json_decref(b);
    /* no_default_policy drops default after the checks */
    b = role_create(t, NULL, "app", 200, "{\"policies\":[\"app-read\"],\"no_default_policy\":true}",
                    NULL);
    static const char *const only[] = {"app-read", NULL};
    at_strings_are(at_auth(b, "policies"), only);
    json_decref(b);

    /* default disallowed (or token_no_default_policy): never added */
    json_decref(at_req(t, 204, "POST", "/v1/auth/token/roles/nodef",
                       "{\"allowed_policies\":\"p\",\"disallowed_policies\":\"default\"}"));
    b = role_create(t, NULL, "nodef", 200, "{}", NULL);
    static const char *const p[] = {"p", NULL};
    at_strings_are(at_auth(b, "policies"), p);
    json_decref(b);
    json_decref(at_req(t, 204, "POST", "/v1/auth/token/roles/nodef2",
                       "{\"allowed_policies\":\"p\",\"token_no_default_policy\":true}"));
    b = role_create(t, NULL, "nodef2", 200, "{}", NULL);
    at_strings_are(at_auth(b, "policies"), p);
    json_decref(b);

    /* a role escapes the subset rule: a caller holding only the create right gets the
     * role's policies, which it does not hold itself */
    char creator[KMS_TOKEN_MAX_LEN];
    put_policy(t, NULL, "creator",
               "path \"auth/token/create/app\" { capabilities = [\"update\"] }");
    b = at_req(t, 200, "POST", "/v1/auth/token/create", "{\"policies\":[\"creator\"]}");
    snprintf(creator, sizeof(creator), "%s", at_auth_str(b, "client_token"));
    json_decref(b);
    b = role_create(t, creator, "app", 200, "{\"policies\":[\"team-red\"]}", NULL);
    static const char *const red[] = {"default", "team-red", NULL};
    at_strings_are(at_auth(b, "policies"), red);
    json_decref(b);
    /* without lists the ordinary subset rule applies */
    json_decref(at_req(t, 204, "POST", "/v1/auth/token/roles/plain", "{}"));
    put_policy(t, NULL, "creator2", "path \"auth/token/create/*\" { capabilities = [\"update\"] }");
    b = at_req(t, 200, "POST", "/v1/auth/token/create", "{\"policies\":[\"creator2\"]}");
    snprintf(creator, sizeof(creator), "%s", at_auth_str(b, "client_token"));
    json_decref(b);
    b = role_create(t, creator, "plain", 400, "{\"policies\":[\"team-red\"]}", NULL);
    at_err_is(b, "child policies must be subset of parent");
    json_decref(b);
    b = role_create(t, creator, "nosuch", 400, "{}", NULL);
    at_err_is(b, "unknown role nosuch");
    json_decref(b);
}

static void test_create_role_properties(void **state)
{
    struct kt *t = *state;
    char tok[KMS_TOKEN_MAX_LEN];
    char creator[KMS_TOKEN_MAX_LEN];
    json_decref(at_req(t, 204, "POST", "/v1/auth/token/roles/svc",
                       "{\"orphan\":true,\"renewable\":false,\"path_suffix\":\"rev-2\","
                       "\"token_period\":600,\"token_explicit_max_ttl\":\"2h\","
                       "\"token_num_uses\":5,\"allowed_policies\":\"svc\"}"));
    /* no sudo needed for what the role grants: orphan and period */
    put_policy(t, NULL, "creator", "path \"auth/token/create/+\" { capabilities = [\"update\"] }");
    json_t *b = at_req(t, 200, "POST", "/v1/auth/token/create", "{\"policies\":[\"creator\"]}");
    snprintf(creator, sizeof(creator), "%s", at_auth_str(b, "client_token"));
    json_decref(b);
    b = role_create(t, creator, "svc", 200, "{\"no_parent\":false,\"num_uses\":9}", tok);
    assert_true(json_is_true(at_auth(b, "orphan")));
    assert_true(json_is_false(at_auth(b, "renewable")));
    assert_int_equal(json_integer_value(at_auth(b, "lease_duration")), 600);
    assert_int_equal(json_integer_value(at_auth(b, "num_uses")), 5);
    json_decref(b);
    char body[256];
    snprintf(body, sizeof(body), "{\"token\":\"%s\"}", tok);
    b = at_req(t, 200, "POST", "/v1/auth/token/lookup", body);
    assert_string_equal(at_str(b, "role"), "svc");
    assert_string_equal(at_str(b, "path"), "auth/token/create/svc/rev-2");
    assert_int_equal(json_integer_value(kt_data(b, "period")), 600);
    assert_int_equal(json_integer_value(kt_data(b, "explicit_max_ttl")), 7200);
    assert_true(json_is_true(kt_data(b, "orphan")));
    json_decref(b);
    /* a period asked by the caller still needs sudo; root gets the lesser of both */
    b = role_create(t, creator, "svc", 400, "{\"period\":60}", NULL);
    at_err_is(b, "root or sudo privileges required to create periodic token");
    json_decref(b);
    b = role_create(t, NULL, "svc", 200,
                    "{\"period\":60,\"explicit_max_ttl\":\"3h\",\"num_uses\":2}", tok);
    assert_string_equal(at_warning(b, 0), "Explicit max TTL specified both during creation call "
                                          "and in role; using the lesser value of 7200 seconds");
    assert_string_equal(at_warning(b, 1), "Period specified both during creation call and in "
                                          "role; using the lesser value of 60 seconds");
    assert_int_equal(json_integer_value(at_auth(b, "lease_duration")), 60);
    assert_int_equal(json_integer_value(at_auth(b, "num_uses")), 2);
    json_decref(b);

    /* a non-orphan role: the child has a parent and revoking the parent revokes it */
    char child[KMS_TOKEN_MAX_LEN];
    json_decref(at_req(t, 204, "POST", "/v1/auth/token/roles/kid", "{}"));
    b = role_create(t, creator, "kid", 200, "{}", child);
    assert_true(json_is_false(at_auth(b, "orphan")));
    json_decref(b);
    json_decref(at_as(t, child, NULL, 200, "GET", "/v1/auth/token/lookup-self", NULL));
    json_decref(at_as(t, creator, NULL, 204, "POST", "/v1/auth/token/revoke-self", NULL));
    json_decref(at_as(t, child, NULL, 403, "GET", "/v1/auth/token/lookup-self", NULL));
}

static void test_bound_cidrs_and_limits(void **state)
{
    struct kt *t = *state;
    char tok[KMS_TOKEN_MAX_LEN];
    json_decref(at_req(t, 204, "POST", "/v1/auth/token/roles/net",
                       "{\"token_bound_cidrs\":[\"10.1.0.0/16\"]}"));
    json_decref(role_create(t, NULL, "net", 200, "{}", tok));
    struct kms_http_header h[] = {{"X-Vault-Token", tok}};
    json_t *b = NULL;
    assert_int_equal(at_raw(t, "GET", "/v1/auth/token/lookup-self", h, 1, "10.1.2.3", NULL, &b),
                     200);
    static const char *const cidr[] = {"10.1.0.0/16", NULL};
    at_strings_are(kt_data(b, "bound_cidrs"), cidr);
    json_decref(b);
    assert_int_equal(at_raw(t, "GET", "/v1/auth/token/lookup-self", h, 1, "10.2.0.1", NULL, &b),
                     403);
    json_decref(b);

    /* a limited-use token cannot create children at all */
    char limited[KMS_TOKEN_MAX_LEN];
    b = at_req(t, 200, "POST", "/v1/auth/token/create", "{\"num_uses\":3}");
    snprintf(limited, sizeof(limited), "%s", at_auth_str(b, "client_token"));
    json_decref(b);
    b = role_create(t, limited, "net", 400, "{}", NULL);
    at_err_is(b, "restricted use token cannot generate child tokens");
    json_decref(b);

    /* entity aliases: only with a role, only listed ones, and kmsd has no identity store */
    json_decref(at_req(t, 204, "POST", "/v1/auth/token/roles/ent",
                       "{\"allowed_entity_aliases\":[\"web-*\"]}"));
    at_fail(t, 400, "POST", "/v1/auth/token/create", "{\"entity_alias\":\"web-1\"}",
            "'entity_alias' is only allowed in combination with token role");
    b = role_create(t, NULL, "ent", 400, "{\"entity_alias\":\"db-1\"}", NULL);
    at_err_is(b, "invalid 'entity_alias' value");
    json_decref(b);
    b = role_create(t, NULL, "ent", 400, "{\"entity_alias\":\"WEB-1\"}", NULL);
    at_err_is(b, "entity aliases are not supported by kmsd (no identity store)");
    json_decref(b);
}

static void test_renew_through_role(void **state)
{
    struct kt *t = *state;
    char tok[KMS_TOKEN_MAX_LEN];
    at_clock_install(t);
    json_decref(at_req(t, 204, "POST", "/v1/auth/token/roles/per", "{\"token_period\":100}"));
    json_decref(role_create(t, NULL, "per", 200, "{}", tok));
    at_clock_ms += 90 * 1000;
    /* the role's current period applies at renewal */
    json_decref(at_req(t, 204, "POST", "/v1/auth/token/roles/per", "{\"token_period\":300}"));
    json_t *b = at_as(t, tok, NULL, 200, "POST", "/v1/auth/token/renew-self", "{}");
    assert_int_equal(json_integer_value(at_auth(b, "lease_duration")), 300);
    json_decref(b);
    /* a deleted role stops renewals; the token itself lives on until it expires */
    json_decref(at_req(t, 204, "DELETE", "/v1/auth/token/roles/per", NULL));
    b = at_as(t, tok, NULL, 500, "POST", "/v1/auth/token/renew-self", "{}");
    assert_non_null(strstr(kt_err(b), "failed to renew entry: original token role \"per\" could "
                                      "not be found, not renewing"));
    json_decref(b);
    at_clock_ms += 301 * 1000;
    json_decref(at_as(t, tok, NULL, 403, "GET", "/v1/auth/token/lookup-self", NULL));
}

static void test_existence_and_namespaces(void **state)
{
    struct kt *t = *state;
    char upd[KMS_TOKEN_MAX_LEN];
    /* update without create: existing roles only */
    put_policy(t, NULL, "upd", "path \"auth/token/roles/*\" { capabilities = [\"update\"] }");
    json_t *b = at_req(t, 200, "POST", "/v1/auth/token/create", "{\"policies\":[\"upd\"]}");
    snprintf(upd, sizeof(upd), "%s", at_auth_str(b, "client_token"));
    json_decref(b);
    json_decref(at_as(t, upd, NULL, 403, "POST", "/v1/auth/token/roles/new", "{}"));
    json_decref(at_req(t, 204, "POST", "/v1/auth/token/roles/new", "{}"));
    json_decref(at_as(t, upd, NULL, 204, "POST", "/v1/auth/token/roles/new", "{\"orphan\":true}"));

    /* roles belong to their namespace */
    json_decref(at_req(t, 200, "POST", "/v1/sys/namespaces/org1", NULL));
    json_decref(at_req(t, 200, "POST", "/v1/sys/namespaces/org2", NULL));
    json_decref(
        kt_ok(t, 204, "POST", "/v1/auth/token/roles/r", "org1", "{\"allowed_policies\":\"p\"}"));
    json_decref(kt_ok(t, 404, "GET", "/v1/auth/token/roles/r", "org2", NULL));
    json_decref(kt_ok(t, 404, "GET", "/v1/auth/token/roles/r", NULL, NULL));
    b = kt_ok(t, 200, "LIST", "/v1/auth/token/roles", "org1", NULL);
    static const char *const r[] = {"r", NULL};
    at_strings_are(kt_data(b, "keys"), r);
    json_decref(b);
    b = kt_ok(t, 400, "POST", "/v1/auth/token/create/r", "org2", "{}");
    at_err_is(b, "unknown role r");
    json_decref(b);
    b = kt_ok(t, 200, "POST", "/v1/auth/token/create/r", "org1", "{}");
    const char *tok = at_auth_str(b, "client_token");
    assert_non_null(strstr(tok, "."));
    static const char *const pd[] = {"default", "p", NULL};
    at_strings_are(at_auth(b, "policies"), pd);
    json_decref(b);
    /* deleting the namespace removes its roles */
    json_decref(at_req(t, 204, "DELETE", "/v1/sys/namespaces/org1", NULL));
    json_decref(at_req(t, 200, "POST", "/v1/sys/namespaces/org1", NULL));
    json_decref(kt_ok(t, 404, "GET", "/v1/auth/token/roles/r", "org1", NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_role_crud_and_defaults, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_role_write_refusals, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_create_policy_lists, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_create_role_properties, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_bound_cidrs_and_limits, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_renew_through_role, kt_setup, kt_teardown),
        cmocka_unit_test_setup_teardown(test_existence_and_namespaces, kt_setup, kt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
