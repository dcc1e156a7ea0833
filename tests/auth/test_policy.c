/*
 * test_policy.c - auth/policy_parse.c and auth/acl.c: the HCL subset and JSON forms, Vault's
 * error strings, and matching with every precedence case of reference auth-audit.md §8
 * (16-25 at ACL level), namespace prefixes, sudo, and the built-in kms-* policies against the
 * product's Permissions table.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "auth/auth_int.h"

static struct kms_policy *parse_ok(const char *text)
{
    struct kms_policy *p = NULL;
    struct kms_err err;
    if (kms_policy_parse(text, strlen(text), "", &p, &err) != 0) {
        fail_msg("parse failed: %s\n%s", err.msg, text);
    }
    return p;
}

static void parse_err(const char *text, const char *ns, const char *msg)
{
    struct kms_policy *p = NULL;
    struct kms_err err;
    memset(&err, 0, sizeof(err));
    if (kms_policy_parse(text, strlen(text), ns, &p, &err) == 0) {
        kms_policy_free(&p);
        fail_msg("parsed: %s", text);
    }
    assert_null(p);
    assert_int_equal(err.status, 400);
    if (msg != NULL) {
        assert_string_equal(err.msg, msg);
    }
}

/* An ACL from up to 4 policy texts owned by namespace ns_path. */
struct acl_fixture {
    struct kms_policy *pols[4];
    const char *names[4];
    struct kms_acl *acl;
};

static struct kms_acl *acl_of(struct acl_fixture *f, const char *ns_path, const char *a,
                              const char *b, const char *c)
{
    static const char *const n[] = {"a", "b", "c"};
    const char *texts[3] = {a, b, c};
    size_t k = 0;
    memset(f, 0, sizeof(*f));
    for (size_t i = 0; i < 3; i++) {
        if (texts[i] != NULL) {
            f->pols[k] = parse_ok(texts[i]);
            f->names[k] = n[i];
            k++;
        }
    }
    assert_int_equal(kms_acl_create((const struct kms_policy *const *)f->pols, f->names, k, ns_path,
                                    false, &f->acl),
                     0);
    return f->acl;
}

static void acl_done(struct acl_fixture *f)
{
    kms_acl_destroy(&f->acl);
    for (size_t i = 0; i < 4; i++) {
        kms_policy_free(&f->pols[i]);
    }
}

static bool allowed(const struct kms_acl *acl, const char *path, enum kms_op op)
{
    struct kms_acl_result r;
    kms_acl_check(acl, path, op, false, &r);
    return r.allowed;
}

#define ALLOW(acl, path, op) assert_true(allowed((acl), (path), (op)))
#define DENY(acl, path, op) assert_false(allowed((acl), (path), (op)))

/* ---- parser -------------------------------------------------------------------------------- */

static void test_parse_hcl(void **state)
{
    (void)state;
    struct kms_policy *p = parse_ok("# comment\n"
                                    "name = \"ignored\"\n"
                                    "path \"transit/encrypt/+\" {\n"
                                    "  capabilities = [\"update\", // inline\n"
                                    "                  \"create\",]\n"
                                    "  comment = \"why\"\n"
                                    "}\n"
                                    "/* block\n comment */\n"
                                    "path \"/transit/keys\" { capabilities = [\"list\"] }\n"
                                    "path \"a/*\" { policy = \"write\" }\n"
                                    "path \"b\" { capabilities = [\"read\", \"deny\"] }\n"
                                    "path \"c\" { capabilities = [] }\n");
    unsigned caps;
    assert_int_equal(kms_policy_npaths(p), 5);
    assert_string_equal(kms_policy_rule(p, 0, &caps), "transit/encrypt/+");
    assert_int_equal(caps, KMS_CAP_UPDATE | KMS_CAP_CREATE);
    assert_string_equal(kms_policy_rule(p, 1, &caps), "transit/keys"); /* leading '/' dropped */
    assert_int_equal(caps, KMS_CAP_LIST);
    assert_string_equal(kms_policy_rule(p, 2, &caps), "a/*");
    assert_int_equal(caps, KMS_CAP_CREATE | KMS_CAP_READ | KMS_CAP_UPDATE | KMS_CAP_DELETE |
                               KMS_CAP_LIST);
    (void)kms_policy_rule(p, 3, &caps);
    assert_int_equal(caps, KMS_CAP_DENY); /* deny wipes the others */
    (void)kms_policy_rule(p, 4, &caps);
    assert_int_equal(caps, 0);
    kms_policy_free(&p);
    assert_null(p);

    p = parse_ok("path \"x\" = { capabilities = [\"sudo\",\"patch\",\"scan\"] }\n"
                 "path \"y\" { policy = \"sudo\" }\npath \"z\" { policy = \"read\" }\n"
                 "path \"w\" { policy = \"deny\" capabilities = [\"read\"] }");
    (void)kms_policy_rule(p, 0, &caps);
    assert_int_equal(caps, KMS_CAP_SUDO | KMS_CAP_PATCH | KMS_CAP_SCAN);
    (void)kms_policy_rule(p, 1, &caps);
    assert_true(caps & KMS_CAP_SUDO);
    (void)kms_policy_rule(p, 2, &caps);
    assert_int_equal(caps, KMS_CAP_READ | KMS_CAP_LIST);
    (void)kms_policy_rule(p, 3, &caps);
    assert_int_equal(caps, KMS_CAP_DENY);
    kms_policy_free(&p);

    p = parse_ok("");
    assert_int_equal(kms_policy_npaths(p), 0);
    kms_policy_free(&p);
}

static void test_parse_json(void **state)
{
    (void)state;
    unsigned caps;
    struct kms_policy *p =
        parse_ok("{\"path\":{\"transit/encrypt/k\":{\"capabilities\":[\"update\"]},"
                 "\"transit/keys/*\":{\"policy\":\"read\"}}}");
    assert_int_equal(kms_policy_npaths(p), 2);
    assert_string_equal(kms_policy_rule(p, 0, &caps), "transit/encrypt/k");
    assert_int_equal(caps, KMS_CAP_UPDATE);
    kms_policy_free(&p);
    p = parse_ok(" {\"name\":\"x\",\"path\":[{\"a\":{\"capabilities\":[\"read\"]}},"
                 "{\"b\":[{\"capabilities\":[\"list\"]}]}]}");
    assert_int_equal(kms_policy_npaths(p), 2);
    assert_string_equal(kms_policy_rule(p, 1, &caps), "b");
    assert_int_equal(caps, KMS_CAP_LIST);
    kms_policy_free(&p);
}

static void test_parse_errors(void **state)
{
    (void)state;
    parse_err("path \"transit/x\" { capabilities = [\"foo\"] }", "",
              "failed to parse policy: path \"transit/x\": invalid capability \"foo\"");
    parse_err("path \"transit/+*\" { capabilities = [\"read\"] }", "org1/",
              "failed to parse policy: path \"org1/transit/+*\": invalid use of wildcards ('+*' "
              "is forbidden)");
    parse_err("path \"x\" {\n capabilities = [\"read\"]\n colour = \"red\"\n}", "",
              "failed to parse policy: path \"x\": invalid key \"colour\" on line 3");
    parse_err("\nfoo \"x\" { }", "", "failed to parse policy: invalid key \"foo\" on line 2");
    parse_err("path \"x\" { policy = \"admin\" }", "",
              "failed to parse policy: path \"x\": invalid policy \"admin\"");
    parse_err("path \"x\" { allowed_parameters = { \"k\" = [] } }", "",
              "failed to parse policy: path \"x\": \"allowed_parameters\" is not supported by "
              "kmsd");
    parse_err("path \"x\" { min_wrapping_ttl = \"1h\" }", "", NULL);
    parse_err("path \"x\" { capabilities = [\"read\"]", "", NULL);
    parse_err("path \"x\" { capabilities = \"read\" }", "", NULL);
    parse_err("path x { capabilities = [\"read\"] }", "", NULL);
    parse_err("path \"x { capabilities = [\"read\"] }", "", NULL);
    parse_err("path \"x\" { capabilities = [\"read\" \"list\"] }", "", NULL);
    parse_err("/* never closed", "", NULL);
    parse_err("path \"x\" { capabilities = [\"read\"] } @", "", NULL);
    parse_err("{\"path\":{\"x\":{\"capabilities\":[\"nope\"]}}}", "",
              "failed to parse policy: path \"x\": invalid capability \"nope\"");
    parse_err("{\"path\":{\"x\":{\"capabilities\":[\"read\"]}},\"path\":{}}", "", NULL);
    parse_err("{\"paths\":{}}", "", "failed to parse policy: invalid key \"paths\"");
    parse_err("{\"path\":{\"x\":{\"denied_parameters\":{}}}}", "", NULL);
    parse_err("{\"path\":5}", "", NULL);
    parse_err("{", "", NULL);
    struct kms_policy *p = NULL;
    struct kms_err err;
    assert_int_equal(kms_policy_parse("path \"a\"\0{}", 11, "", &p, &err), -1);
}

/* HCL and JSON give the same ACL (case 25). */
static void test_hcl_json_same(void **state)
{
    (void)state;
    struct acl_fixture h;
    struct acl_fixture j;
    acl_of(&h, "",
           "path \"transit/*\" { capabilities = [\"deny\"] }\n"
           "path \"transit/encrypt/+\" { capabilities = [\"update\"] }\n"
           "path \"transit/keys\" { capabilities = [\"list\"] }",
           NULL, NULL);
    acl_of(&j, "",
           "{\"path\":{\"transit/*\":{\"capabilities\":[\"deny\"]},"
           "\"transit/encrypt/+\":{\"capabilities\":[\"update\"]},"
           "\"transit/keys\":{\"capabilities\":[\"list\"]}}}",
           NULL, NULL);
    static const char *const paths[] = {"transit/encrypt/k", "transit/decrypt/k",   "transit/keys/",
                                        "transit/keys/k",    "transit/encrypt/k/x", "other"};
    static const enum kms_op ops[] = {KMS_OP_READ, KMS_OP_LIST, KMS_OP_UPDATE, KMS_OP_CREATE};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        for (size_t o = 0; o < 4; o++) {
            assert_int_equal(allowed(h.acl, paths[i], ops[o]), allowed(j.acl, paths[i], ops[o]));
        }
    }
    ALLOW(h.acl, "transit/encrypt/k", KMS_OP_UPDATE);
    ALLOW(h.acl, "transit/keys/", KMS_OP_LIST);
    acl_done(&h);
    acl_done(&j);
}

/* ---- precedence (§8 16-24) ----------------------------------------------------------------- */

static void test_case16_deny_glob_vs_exact(void **state)
{
    (void)state;
    struct acl_fixture f;
    acl_of(&f, "", "path \"transit/*\" { capabilities = [\"deny\"] }",
           "path \"transit/encrypt/k\" { capabilities = [\"update\"] }", NULL);
    ALLOW(f.acl, "transit/encrypt/k", KMS_OP_UPDATE);
    DENY(f.acl, "transit/decrypt/k", KMS_OP_UPDATE);
    acl_done(&f);
    /* and the documented consequence: a secret/ glob deny + secret/foo read -> readable */
    acl_of(&f, "", "path \"secret/*\" { capabilities = [\"deny\"] }",
           "path \"secret/foo\" { capabilities = [\"read\"] }", NULL);
    ALLOW(f.acl, "secret/foo", KMS_OP_READ);
    DENY(f.acl, "secret/bar", KMS_OP_READ);
    acl_done(&f);
}

static void test_case17_same_pattern_deny_wins(void **state)
{
    (void)state;
    struct acl_fixture f;
    acl_of(&f, "", "path \"transit/encrypt/k\" { capabilities = [\"update\"] }",
           "path \"transit/encrypt/k\" { capabilities = [\"deny\"] }", NULL);
    DENY(f.acl, "transit/encrypt/k", KMS_OP_UPDATE);
    acl_done(&f);
    /* deny first, allow after: still deny */
    acl_of(&f, "", "path \"transit/encrypt/k\" { capabilities = [\"deny\"] }",
           "path \"transit/encrypt/k\" { capabilities = [\"update\"] }", NULL);
    DENY(f.acl, "transit/encrypt/k", KMS_OP_UPDATE);
    acl_done(&f);
    /* merged allows OR together and name their granting policies */
    acl_of(&f, "", "path \"transit/encrypt/k\" { capabilities = [\"update\"] }",
           "path \"transit/encrypt/k\" { capabilities = [\"create\", \"update\"] }", NULL);
    struct kms_acl_result r;
    kms_acl_check(f.acl, "transit/encrypt/k", KMS_OP_CREATE, false, &r);
    assert_true(r.allowed);
    assert_int_equal(r.ngranting, 1);
    assert_string_equal(r.granting[0], "b");
    kms_acl_check(f.acl, "transit/encrypt/k", KMS_OP_UPDATE, false, &r);
    assert_int_equal(r.ngranting, 2);
    acl_done(&f);
}

static void test_case18_plus_beats_star(void **state)
{
    (void)state;
    struct acl_fixture f;
    acl_of(&f, "", "path \"transit/encrypt/+\" { capabilities = [\"update\"] }",
           "path \"transit/encrypt/*\" { capabilities = [\"deny\"] }", NULL);
    ALLOW(f.acl, "transit/encrypt/k", KMS_OP_UPDATE);
    DENY(f.acl, "transit/encrypt/k/extra", KMS_OP_UPDATE); /* only the prefix rule matches */
    acl_done(&f);
    /* the transit/ glob loses to both */
    acl_of(&f, "", "path \"transit/*\" { capabilities = [\"deny\"] }",
           "path \"transit/encrypt/+\" { capabilities = [\"update\"] }", NULL);
    ALLOW(f.acl, "transit/encrypt/k", KMS_OP_UPDATE);
    acl_done(&f);
}

static void test_case19_later_glob_wins(void **state)
{
    (void)state;
    struct acl_fixture f;
    acl_of(&f, "", "path \"transit/+/k\" { capabilities = [\"update\"] }",
           "path \"transit/encrypt/*\" { capabilities = [\"deny\"] }", NULL);
    DENY(f.acl, "transit/encrypt/k", KMS_OP_UPDATE);
    ALLOW(f.acl, "transit/decrypt/k", KMS_OP_UPDATE);
    acl_done(&f);
}

static void test_case20_prefix_glob(void **state)
{
    (void)state;
    struct acl_fixture f;
    acl_of(&f, "", "path \"transit/keys/k*\" { capabilities = [\"read\"] }", NULL, NULL);
    ALLOW(f.acl, "transit/keys/k2", KMS_OP_READ);
    ALLOW(f.acl, "transit/keys/k", KMS_OP_READ);
    ALLOW(f.acl, "transit/keys/k/x", KMS_OP_READ); /* a prefix rule crosses '/' */
    DENY(f.acl, "transit/keys/j", KMS_OP_READ);
    DENY(f.acl, "transit/keys/k2", KMS_OP_UPDATE);
    acl_done(&f);
    /* longest prefix wins among prefix rules */
    acl_of(&f, "", "path \"transit/*\" { capabilities = [\"read\"] }",
           "path \"transit/keys/*\" { capabilities = [\"deny\"] }", NULL);
    DENY(f.acl, "transit/keys/k", KMS_OP_READ);
    ALLOW(f.acl, "transit/encrypt/k", KMS_OP_READ);
    acl_done(&f);
}

static void test_case21_create_vs_update(void **state)
{
    (void)state;
    struct acl_fixture f;
    acl_of(&f, "", "path \"transit/encrypt/k\" { capabilities = [\"update\"] }", NULL, NULL);
    DENY(f.acl, "transit/encrypt/k", KMS_OP_CREATE);  /* key absent: create needed */
    ALLOW(f.acl, "transit/encrypt/k", KMS_OP_UPDATE); /* key exists */
    acl_done(&f);
}

static void test_case22_list(void **state)
{
    (void)state;
    struct acl_fixture f;
    static const char *const rules[] = {
        "path \"transit/keys/\" { capabilities = [\"list\"] }",
        "path \"transit/keys\" { capabilities = [\"list\"] }",
        "path \"transit/keys/*\" { capabilities = [\"list\"] }",
        "path \"transit/+\" { capabilities = [\"list\"] }",
    };
    for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
        acl_of(&f, "", rules[i], NULL, NULL);
        ALLOW(f.acl, "transit/keys/", KMS_OP_LIST);
        DENY(f.acl, "transit/keys/", KMS_OP_READ);
        acl_done(&f);
    }
    /* the trimmed path is tried first for non-exact rules (OpenBao's acl.go order) */
    acl_of(&f, "", "path \"transit/k*\" { capabilities = [\"list\"] }",
           "path \"transit/keys/*\" { capabilities = [\"deny\"] }", NULL);
    ALLOW(f.acl, "transit/keys/", KMS_OP_LIST);
    DENY(f.acl, "transit/keys/x", KMS_OP_READ);
    acl_done(&f);
    /* the trimmed-slash exact match applies to list only */
    acl_of(&f, "", "path \"transit/keys\" { capabilities = [\"read\"] }", NULL, NULL);
    DENY(f.acl, "transit/keys/", KMS_OP_READ);
    acl_done(&f);
}

static void test_case23_namespaces(void **state)
{
    (void)state;
    struct acl_fixture f;
    /* a root-namespace policy with a leading '+' reaches org1's transit */
    acl_of(&f, "", "path \"+/transit/encrypt/k\" { capabilities = [\"update\"] }", NULL, NULL);
    ALLOW(f.acl, "org1/transit/encrypt/k", KMS_OP_UPDATE);
    DENY(f.acl, "transit/encrypt/k", KMS_OP_UPDATE);
    DENY(f.acl, "org1/team/transit/encrypt/k", KMS_OP_UPDATE);
    acl_done(&f);
    /* explicit namespace path in a root policy */
    acl_of(&f, "", "path \"org1/transit/encrypt/k\" { capabilities = [\"update\"] }", NULL, NULL);
    ALLOW(f.acl, "org1/transit/encrypt/k", KMS_OP_UPDATE);
    acl_done(&f);
    /* an org1 policy is prefixed with org1/: it never matches in the parent */
    acl_of(&f, "org1/", "path \"transit/encrypt/k\" { capabilities = [\"update\"] }",
           "path \"team/transit/*\" { capabilities = [\"read\"] }", NULL);
    ALLOW(f.acl, "org1/transit/encrypt/k", KMS_OP_UPDATE);
    DENY(f.acl, "transit/encrypt/k", KMS_OP_UPDATE);
    ALLOW(f.acl, "org1/team/transit/keys/k", KMS_OP_READ);
    acl_done(&f);
    /* a '+' in an org1 policy keeps its place after the prefix */
    acl_of(&f, "org1/", "path \"transit/encrypt/+\" { capabilities = [\"update\"] }", NULL, NULL);
    ALLOW(f.acl, "org1/transit/encrypt/k", KMS_OP_UPDATE);
    DENY(f.acl, "org2/transit/encrypt/k", KMS_OP_UPDATE);
    acl_done(&f);
}

static void test_case24_no_match_and_root(void **state)
{
    (void)state;
    struct acl_fixture f;
    struct kms_acl *root = NULL;
    struct kms_acl_result r;
    acl_of(&f, "", "path \"transit/*\" { capabilities = [\"read\"] }", NULL, NULL);
    DENY(f.acl, "nonexistent/path", KMS_OP_READ);
    acl_done(&f);
    assert_int_equal(kms_acl_create(NULL, NULL, 0, "", true, &root), 0);
    kms_acl_check(root, "nonexistent/path", KMS_OP_DELETE, true, &r);
    assert_true(r.allowed);
    assert_true(r.is_root);
    assert_true(r.root_privs);
    assert_string_equal(r.granting[0], "root");
    kms_acl_destroy(&root);
    /* an empty ACL denies everything */
    assert_int_equal(kms_acl_create(NULL, NULL, 0, "", false, &root), 0);
    DENY(root, "auth/token/lookup-self", KMS_OP_READ);
    kms_acl_destroy(&root);
}

static void test_priority_rules(void **state)
{
    (void)state;
    struct acl_fixture f;
    /* (a) later first wildcard wins: foo/bar/+/baz over foo/+/bar/baz */
    acl_of(&f, "", "path \"foo/bar/+/baz\" { capabilities = [\"read\"] }",
           "path \"foo/+/+/baz\" { capabilities = [\"deny\"] }", NULL);
    ALLOW(f.acl, "foo/bar/x/baz", KMS_OP_READ);
    acl_done(&f);
    /* (a) foo/a* (prefix at 5) over foo/+ (plus at 4) */
    acl_of(&f, "", "path \"foo/a*\" { capabilities = [\"read\"] }",
           "path \"foo/+\" { capabilities = [\"deny\"] }", NULL);
    ALLOW(f.acl, "foo/abc", KMS_OP_READ);
    DENY(f.acl, "foo/xbc", KMS_OP_READ);
    acl_done(&f);
    /* (b) foo/+/bar over foo/+/ba* */
    acl_of(&f, "", "path \"foo/+/bar\" { capabilities = [\"read\"] }",
           "path \"foo/+/ba*\" { capabilities = [\"deny\"] }", NULL);
    ALLOW(f.acl, "foo/x/bar", KMS_OP_READ);
    DENY(f.acl, "foo/x/baz", KMS_OP_READ);
    acl_done(&f);
    /* (c) fewer '+': foo/+/bar/baz over foo/+/+/baz */
    acl_of(&f, "", "path \"foo/+/bar/baz\" { capabilities = [\"read\"] }",
           "path \"foo/+/+/baz\" { capabilities = [\"deny\"] }", NULL);
    ALLOW(f.acl, "foo/x/bar/baz", KMS_OP_READ);
    acl_done(&f);
    /* (d) longer: foo/+/bar/ba* over foo/+/bar/b* */
    acl_of(&f, "", "path \"foo/+/bar/ba*\" { capabilities = [\"read\"] }",
           "path \"foo/+/bar/b*\" { capabilities = [\"deny\"] }", NULL);
    ALLOW(f.acl, "foo/x/bar/baz/q", KMS_OP_READ);
    DENY(f.acl, "foo/x/bar/bz", KMS_OP_READ);
    acl_done(&f);
    /* a '+' pattern without '*' needs the same number of segments */
    acl_of(&f, "", "path \"foo/+\" { capabilities = [\"read\"] }", NULL, NULL);
    DENY(f.acl, "foo/a/b", KMS_OP_READ);
    DENY(f.acl, "foo", KMS_OP_READ);
    ALLOW(f.acl, "foo/a", KMS_OP_READ);
    acl_done(&f);
    /* '+' segment pattern with a trailing glob */
    acl_of(&f, "", "path \"transit/+/k*\" { capabilities = [\"update\"] }", NULL, NULL);
    ALLOW(f.acl, "transit/encrypt/k1", KMS_OP_UPDATE);
    ALLOW(f.acl, "transit/encrypt/k1/more", KMS_OP_UPDATE);
    DENY(f.acl, "transit/encrypt/j1", KMS_OP_UPDATE);
    acl_done(&f);
}

static void test_sudo(void **state)
{
    (void)state;
    struct acl_fixture f;
    struct kms_acl_result r;
    acl_of(&f, "", "path \"sys/auth/*\" { capabilities = [\"create\", \"update\"] }",
           "path \"sys/mounts/*\" { capabilities = [\"update\", \"sudo\"] }", NULL);
    kms_acl_check(f.acl, "sys/auth/k8s", KMS_OP_UPDATE, true, &r);
    assert_false(r.allowed);
    kms_acl_check(f.acl, "sys/auth/k8s", KMS_OP_UPDATE, false, &r);
    assert_true(r.allowed);
    kms_acl_check(f.acl, "sys/mounts/transit", KMS_OP_UPDATE, true, &r);
    assert_true(r.allowed);
    assert_true(r.root_privs);
    acl_done(&f);
}

/* ---- built-ins against the product's Permissions table ----------------------------------- */

struct cell {
    const char *path;
    enum kms_op op;
    bool manager, developer, viewer;
};

static void test_builtin_roles(void **state)
{
    (void)state;
    static const struct cell cells[] = {
        /* KMSKey CRD: full / read / read */
        {"my-org/kms/keys/my-project/app-secrets", KMS_OP_READ, true, true, true},
        {"my-org/kms/keys/my-project/", KMS_OP_LIST, true, true, true},
        {"my-org/kms/keys/my-project/app-secrets", KMS_OP_CREATE, true, false, false},
        {"my-org/kms/keys/my-project/app-secrets", KMS_OP_UPDATE, true, false, false},
        {"my-org/kms/keys/my-project/app-secrets", KMS_OP_DELETE, true, false, false},
        {"my-org/transit/keys/my-org-my-project-app-secrets", KMS_OP_READ, true, true, true},
        {"my-org/transit/keys/", KMS_OP_LIST, true, true, true},
        {"my-org/transit/keys/my-org-my-project-app-secrets", KMS_OP_CREATE, true, false, false},
        /* encrypt: all three (create = auto-creating a key: manager only) */
        {"my-org/transit/encrypt/my-org-my-project-app-secrets", KMS_OP_UPDATE, true, true, true},
        {"my-org/transit/encrypt/my-org-my-project-app-secrets", KMS_OP_CREATE, true, false, false},
        /* decrypt: manager, developer */
        {"my-org/transit/decrypt/my-org-my-project-app-secrets", KMS_OP_UPDATE, true, true, false},
        /* rotate, delete, min-decryption-version: manager only */
        {"my-org/transit/keys/my-org-my-project-app-secrets/rotate", KMS_OP_UPDATE, true, false,
         false},
        {"my-org/transit/keys/my-org-my-project-app-secrets", KMS_OP_DELETE, true, false, false},
        {"my-org/transit/keys/my-org-my-project-app-secrets/config", KMS_OP_UPDATE, true, false,
         false},
        {"my-org/kms/keys/my-project/app-secrets/rotate", KMS_OP_UPDATE, true, false, false},
        {"my-org/kms/keys/my-project/app-secrets/min-decryption-version", KMS_OP_UPDATE, true,
         false, false},
        /* nothing beyond the table */
        {"my-org/transit/export/encryption-key/my-org-my-project-app-secrets", KMS_OP_READ, false,
         false, false},
        {"my-org/sys/mounts/transit", KMS_OP_UPDATE, false, false, false},
        {"my-org/transit/rewrap/my-org-my-project-app-secrets", KMS_OP_UPDATE, true, false, false},
        {"transit/encrypt/my-org-my-project-app-secrets", KMS_OP_UPDATE, false, false, false},
    };
    static const char *const names[] = {"kms-manager", "kms-developer", "kms-viewer"};
    for (size_t r = 0; r < 3; r++) {
        const char *text = kms_auth_policy_builtin(names[r]);
        assert_non_null(text);
        assert_true(kms_auth_policy_readonly(names[r]));
        struct acl_fixture f;
        acl_of(&f, "my-org/", text, kms_auth_policy_builtin("default"), NULL);
        for (size_t i = 0; i < sizeof(cells) / sizeof(cells[0]); i++) {
            bool want = r == 0 ? cells[i].manager : r == 1 ? cells[i].developer : cells[i].viewer;
            if (allowed(f.acl, cells[i].path, cells[i].op) != want) {
                fail_msg("%s: %s %s should be %s", names[r], kms_op_name(cells[i].op),
                         cells[i].path, want ? "allowed" : "denied");
            }
        }
        ALLOW(f.acl, "my-org/auth/token/lookup-self", KMS_OP_READ);
        ALLOW(f.acl, "my-org/auth/token/renew-self", KMS_OP_UPDATE);
        acl_done(&f);
    }
    assert_null(kms_auth_policy_builtin("nope"));
    assert_false(kms_auth_policy_readonly("default"));
    assert_true(kms_auth_policy_readonly("root"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_hcl),
        cmocka_unit_test(test_parse_json),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_hcl_json_same),
        cmocka_unit_test(test_case16_deny_glob_vs_exact),
        cmocka_unit_test(test_case17_same_pattern_deny_wins),
        cmocka_unit_test(test_case18_plus_beats_star),
        cmocka_unit_test(test_case19_later_glob_wins),
        cmocka_unit_test(test_case20_prefix_glob),
        cmocka_unit_test(test_case21_create_vs_update),
        cmocka_unit_test(test_case22_list),
        cmocka_unit_test(test_case23_namespaces),
        cmocka_unit_test(test_case24_no_match_and_root),
        cmocka_unit_test(test_priority_rules),
        cmocka_unit_test(test_sudo),
        cmocka_unit_test(test_builtin_roles),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
