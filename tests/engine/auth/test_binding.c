/*
 * test_binding.c - a token bound to a project (Kubernetes logins carry the ServiceAccount's
 * namespace as `service_account_namespace`) passes its binding to every token it creates:
 * a workload whose policies allow auth/token/create cannot mint an unbound token, nor one
 * bound to another project.
 */
#include "tests/engine/engine_fixture.h"

#include <stdio.h>
#include <string.h>

#define ORG "org1"

static void token_of(json_t *b, char *out, size_t n)
{
    snprintf(out, n, "%s",
             json_string_value(json_object_get(json_object_get(b, "auth"), "client_token")));
}

static const char *meta_binding(struct kt *t, const char *tok, char *buf, size_t n)
{
    json_t *b = NULL;
    assert_int_equal(kt_call(t, "GET", "/v1/auth/token/lookup-self", tok, ORG, NULL, &b), 200);
    const char *v =
        json_string_value(json_object_get(kt_data(b, "meta"), "service_account_namespace"));
    snprintf(buf, n, "%s", v ? v : "");
    json_decref(b);
    return buf;
}

static void test_children_keep_the_binding(void **state)
{
    struct kt *t = *state;
    char parent[128], child[128], buf[64];
    json_t *b = NULL;
    assert_int_equal(kt_call(t, "POST", "/v1/sys/namespaces/" ORG, "root", NULL, "{}", NULL), 200);
    json_decref(kt_ok(t, 204, "POST", "/v1/sys/policies/acl/minter", ORG,
                      "{\"policy\":\"path \\\"auth/token/create\\\" { capabilities = "
                      "[\\\"update\\\"] }\"}"));
    json_decref(kt_ok(t, 200, "POST", "/v1/kms/keys/b/k", ORG, "{}"));
    json_decref(kt_ok(t, 200, "POST", "/v1/kms/keys/other/k", ORG, "{}"));
    b = kt_ok(t, 200, "POST", "/v1/auth/token/create", ORG,
              "{\"policies\":[\"kms-manager\",\"minter\"],"
              "\"meta\":{\"service_account_namespace\":\"b\"}}");
    token_of(b, parent, sizeof(parent));
    json_decref(b);

    /* a plain child, and one that asks for another project's binding */
    static const char *const bodies[] = {
        "{\"policies\":[\"kms-manager\"]}",
        "{\"policies\":[\"kms-manager\"],\"meta\":{\"service_account_namespace\":\"other\"}}",
        "{\"policies\":[\"kms-manager\"],\"meta\":{\"service_account_namespace\":\"\"}}",
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        assert_int_equal(kt_call(t, "POST", "/v1/auth/token/create", parent, ORG, bodies[i], &b),
                         200);
        token_of(b, child, sizeof(child));
        json_decref(b);
        assert_string_equal(meta_binding(t, child, buf, sizeof(buf)), "b");
        /* so it reaches project b's key and not the other project's */
        assert_int_equal(kt_call(t, "GET", "/v1/kms/keys/b/k", child, ORG, NULL, NULL), 200);
        assert_int_equal(kt_call(t, "GET", "/v1/kms/keys/other/k", child, ORG, NULL, NULL), 403);
        assert_int_equal(kt_call(t, "POST", "/v1/transit/encrypt/" ORG "-other-k", child, ORG,
                                 "{\"plaintext\":\"\"}", NULL),
                         403);
    }
    /* an unbound token's children stay unbound unless asked */
    b = kt_ok(t, 200, "POST", "/v1/auth/token/create", ORG, "{\"policies\":[\"kms-manager\"]}");
    token_of(b, child, sizeof(child));
    json_decref(b);
    assert_string_equal(meta_binding(t, child, buf, sizeof(buf)), "");
    assert_int_equal(kt_call(t, "GET", "/v1/kms/keys/other/k", child, ORG, NULL, NULL), 200);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_children_keep_the_binding, kt_setup, kt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
