"""ACL policies against a real kmsd (reference auth-audit.md §4 and §8 cases 16-25): policy
CRUD with Vault's strings, the precedence cases end to end, the product's Permissions table
(every cell both ways, through real ServiceAccount logins) and narrowing a role to one
project's keys with an ordinary policy.
"""

import base64
import json
import unittest

from kmsd_harness import KmsdTestCase, b64, unb64
from auth_helpers import KEY, ORG, Issuer, login_token, make_role, ok, setup_org

ACL_PD = "1 error occurred:\n\t* permission denied\n\n"
PATH_ENC = 'path "transit/encrypt/+" {\n  capabilities = ["update"]\n}\n'


class PolicyCrudTest(KmsdTestCase):

    def test_write_read_forms(self):
        r = self.req("POST", "sys/policies/acl/enc", {"policy": PATH_ENC})
        self.assertStatus(r, 204)
        d = ok(self.req("GET", "sys/policies/acl/enc"), 200).data
        self.assertEqual(d, {"name": "enc", "policy": PATH_ENC})
        d = ok(self.req("GET", "sys/policy/enc"), 200).data
        self.assertEqual(d, {"name": "enc", "rules": PATH_ENC})
        # JSON form and base64 text
        js = json.dumps({"path": {"transit/decrypt/+": {"capabilities": ["update"]}}})
        self.assertStatus(self.req("PUT", "sys/policy/dec", {"policy": js}), 204)
        self.assertStatus(self.req("POST", "sys/policies/acl/enc64",
                                   {"policy": base64.b64encode(PATH_ENC.encode()).decode()}), 204)
        self.assertEqual(ok(self.req("GET", "sys/policies/acl/enc64"), 200).data["policy"],
                         PATH_ENC)
        # the deprecated `rules` on sys/policy
        r = self.req("POST", "sys/policy/legacy", {"rules": PATH_ENC})
        self.assertStatus(r, 200)
        self.assertEqual(r.warnings, ["'rules' is deprecated, please use 'policy' instead"])
        # names are lower-cased, with a warning
        r = self.req("POST", "sys/policies/acl/MixedCase", {"policy": PATH_ENC})
        self.assertStatus(r, 200)
        self.assertEqual(r.warnings, ["policy name was converted to mixedcase"])
        self.assertStatus(self.req("GET", "sys/policies/acl/mixedcase"), 200)
        self.assertStatus(self.req("GET", "sys/policies/acl/MIXEDCASE"), 200)
        # the same decisions from the three forms (case 25)
        for name in ("enc", "enc64"):
            r = ok(self.req("POST", "auth/token/create", {"policies": [name, "dec"]}), 200)
            t = r.json["auth"]["client_token"]
            self.req("POST", "transit/keys/k25", {})
            self.assertStatus(self.req("POST", "transit/encrypt/k25", {"plaintext": ""},
                                       token=t), 200)
            self.assertError(self.req("POST", "transit/rewrap/k25", {"ciphertext": "x"},
                                      token=t), 403, ACL_PD)

    def test_errors(self):
        cases = [
            ("sys/policies/acl/x", {"policy": ""}, "'policy' parameter not supplied or empty"),
            ("sys/policies/acl/x", {}, "'policy' parameter not supplied or empty"),
            ("sys/policies/acl/x", {"policy": 'path "a" { capabilities = ["fly"] }'},
             'failed to parse policy: path "a": invalid capability "fly"'),
            ("sys/policies/acl/x", {"policy": 'path "a/+*" { capabilities = ["read"] }'},
             "failed to parse policy: path \"a/+*\": invalid use of wildcards ('+*' is "
             "forbidden)"),
            ("sys/policies/acl/x", {"policy": 'path "a" { capabilities = ["read"]\n bad = 1 }'},
             'failed to parse policy: path "a": invalid key "bad" on line 2'),
            ("sys/policies/acl/root", {"policy": PATH_ENC}, 'cannot update "root" policy'),
            ("sys/policies/acl/kms-manager", {"policy": PATH_ENC},
             'cannot update "kms-manager" policy'),
            ("sys/policy/kms-viewer", {"policy": PATH_ENC}, 'cannot update "kms-viewer" policy'),
        ]
        for path, body, msg in cases:
            with self.subTest(msg):
                self.assertError(self.req("POST", path, body), 400, msg)
        self.assertError(self.req("DELETE", "sys/policies/acl/default"), 400,
                         "cannot delete default policy")
        self.assertError(self.req("DELETE", "sys/policy/root"), 400, "cannot delete root policy")
        self.assertError(self.req("DELETE", "sys/policies/acl/kms-developer"), 400,
                         "cannot delete kms-developer policy")
        self.assertStatus(self.req("DELETE", "sys/policies/acl/never-was"), 204)
        self.assertStatus(self.req("GET", "sys/policies/acl/never-was"), 404)
        # namespaced patterns are reported with their namespace
        ok(self.req("POST", "sys/namespaces/nsx", {}))
        self.assertError(self.req("POST", "sys/policies/acl/x",
                                  {"policy": 'path "t/+*" { capabilities = ["read"] }'},
                                  namespace="nsx"), 400,
                         "failed to parse policy: path \"nsx/t/+*\": invalid use of wildcards "
                         "('+*' is forbidden)")

    def test_names_are_trimmed(self):
        """Names are trimmed as well as lower-cased (OpenBao's policy store), as a token's
        policy list is: " Trimmed " is the policy `trimmed`, not a second one no token could
        ever hold, and " root" is root."""
        r = self.req("POST", "sys/policies/acl/%20Trimmed%20", {"policy": PATH_ENC})
        self.assertStatus(r, 200)
        self.assertEqual(r.warnings, ["policy name was converted to trimmed"])
        d = ok(self.req("GET", "sys/policies/acl/trimmed"), 200).data
        self.assertEqual(d, {"name": "trimmed", "policy": PATH_ENC})
        self.assertEqual(ok(self.req("GET", "sys/policies/acl/%20trimmed"), 200).data["name"],
                         "trimmed")
        keys = ok(self.req("LIST", "sys/policies/acl"), 200).data["keys"]
        self.assertIn("trimmed", keys)
        self.assertEqual([k for k in keys if k != k.strip()], [])
        self.assertError(self.req("POST", "sys/policies/acl/%20root", {"policy": PATH_ENC}), 400,
                         'cannot update "root" policy')
        self.assertError(self.req("POST", "sys/policy/kms-viewer%20", {"policy": PATH_ENC}), 400,
                         'cannot update "kms-viewer" policy')
        self.assertError(self.req("DELETE", "sys/policies/acl/default%20"), 400,
                         "cannot delete default policy")
        self.assertError(self.req("POST", "sys/policies/acl/%20", {"policy": PATH_ENC}), 400,
                         "policy name must be provided in the URL")
        self.assertStatus(self.req("DELETE", "sys/policies/acl/%20TRIMMED"), 204)
        self.assertStatus(self.req("GET", "sys/policies/acl/trimmed"), 404)

    def test_list_and_builtins(self):
        ok(self.req("POST", "sys/policies/acl/zz-listed", {"policy": PATH_ENC}))
        keys = ok(self.req("LIST", "sys/policies/acl"), 200).data["keys"]
        for name in ("default", "kms-developer", "kms-manager", "kms-viewer", "root",
                     "zz-listed"):
            self.assertIn(name, keys)
        self.assertEqual(keys, sorted(keys))
        self.assertEqual(ok(self.req("GET", "sys/policies/acl?list=true"), 200).data["keys"],
                         keys)
        r = ok(self.req("GET", "sys/policy"), 200)
        self.assertEqual(r.data["keys"], keys)
        self.assertEqual(r.data["policies"], keys)
        self.assertEqual(r.json["policies"], keys)
        # built-ins in every namespace; root only in the root namespace
        ok(self.req("POST", "sys/namespaces/nsl", {}))
        keys = ok(self.req("LIST", "sys/policies/acl", namespace="nsl"), 200).data["keys"]
        self.assertEqual(keys, ["default", "kms-developer", "kms-manager", "kms-viewer"])
        d = ok(self.req("GET", "sys/policies/acl/kms-developer", namespace="nsl"), 200).data
        self.assertIn('path "transit/decrypt/+"', d["policy"])
        self.assertEqual(ok(self.req("GET", "sys/policy/root"), 200).data,
                         {"name": "root", "rules": ""})
        self.assertStatus(self.req("GET", "sys/policy/root", namespace="nsl"), 404)
        # default is editable (and back)
        orig = ok(self.req("GET", "sys/policies/acl/default"), 200).data["policy"]
        self.assertIn('path "auth/token/lookup-self"', orig)
        r = ok(self.req("POST", "auth/token/create", {"policies": ["zz-listed"]}), 200)
        t = r.json["auth"]["client_token"]
        self.assertStatus(self.req("GET", "auth/token/lookup-self", token=t), 200)
        ok(self.req("POST", "sys/policies/acl/default",
                    {"policy": 'path "sys/nothing" { capabilities = ["read"] }'}))
        try:
            self.assertError(self.req("GET", "auth/token/lookup-self", token=t), 403, ACL_PD)
        finally:
            ok(self.req("POST", "sys/policies/acl/default", {"policy": orig}))
        self.assertStatus(self.req("GET", "auth/token/lookup-self", token=t), 200)
        # policy endpoints need policy: a plain token gets 403
        self.assertError(self.req("GET", "sys/policies/acl/default", token=t), 403, ACL_PD)


class PrecedenceTest(KmsdTestCase):
    """§8 16-24 end to end: tokens with two policies A and B, in the root namespace."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        for k in ("k", "k2"):
            ok(cls.server.request("POST", "transit/keys/" + k, {}))
        r = ok(cls.server.request("POST", "transit/encrypt/k", {"plaintext": b64("x")}), 200)
        cls.ct = r.data["ciphertext"]

    def token(self, *rules):
        names = []
        for i, rule in enumerate(rules):
            name = self.uniq("p%d" % i)
            ok(self.req("POST", "sys/policies/acl/" + name, {"policy": rule}))
            names.append(name)
        r = ok(self.req("POST", "auth/token/create",
                        {"policies": names, "no_default_policy": True}), 200)
        return r.json["auth"]["client_token"]

    def enc(self, t, key="k"):
        return self.req("POST", "transit/encrypt/" + key, {"plaintext": b64("x")}, token=t)

    def dec(self, t, key="k"):
        return self.req("POST", "transit/decrypt/" + key, {"ciphertext": self.ct}, token=t)

    def test_16_deny_glob_vs_exact(self):
        t = self.token('path "transit/*" { capabilities = ["deny"] }',
                       'path "transit/encrypt/k" { capabilities = ["update"] }')
        self.assertStatus(self.enc(t), 200)
        self.assertError(self.dec(t), 403, ACL_PD)

    def test_17_same_pattern_deny(self):
        t = self.token('path "transit/encrypt/k" { capabilities = ["update"] }',
                       'path "transit/encrypt/k" { capabilities = ["deny"] }')
        self.assertError(self.enc(t), 403, ACL_PD)

    def test_18_plus_beats_star(self):
        t = self.token('path "transit/encrypt/+" { capabilities = ["update"] }',
                       'path "transit/encrypt/*" { capabilities = ["deny"] }')
        self.assertStatus(self.enc(t), 200)

    def test_19_later_glob_wins(self):
        t = self.token('path "transit/+/k" { capabilities = ["update"] }',
                       'path "transit/encrypt/*" { capabilities = ["deny"] }')
        self.assertError(self.enc(t), 403, ACL_PD)
        self.assertStatus(self.dec(t), 200)

    def test_20_prefix_glob(self):
        t = self.token('path "transit/keys/k*" { capabilities = ["read"] }')
        self.assertStatus(self.req("GET", "transit/keys/k2", token=t), 200)
        r = self.req("GET", "transit/keys/k/x", token=t)  # allowed; then no such route
        self.assertNotEqual(r.status, 403)
        self.assertError(self.req("GET", "transit/keys/j", token=t), 403, ACL_PD)

    def test_21_update_cannot_create(self):
        name = self.uniq("k21")
        t = self.token('path "transit/encrypt/%s" { capabilities = ["update"] }' % name)
        self.assertError(self.enc(t, name), 403, ACL_PD)
        ok(self.req("POST", "transit/keys/" + name, {}))
        self.assertStatus(self.enc(t, name), 200)

    def test_22_list(self):
        for rule in ('path "transit/keys/" { capabilities = ["list"] }',
                     'path "transit/keys" { capabilities = ["list"] }',
                     'path "transit/keys/*" { capabilities = ["list"] }'):
            with self.subTest(rule):
                t = self.token(rule)
                a = self.req("LIST", "transit/keys", token=t)
                b = self.req("GET", "transit/keys?list=true", token=t)
                c = self.req("LIST", "transit/keys/", token=t)
                for r in (a, b, c):
                    self.assertStatus(r, 200)
                self.assertEqual(a.data, b.data)
                self.assertError(self.req("GET", "transit/keys/k", token=t), 403, ACL_PD)

    def test_24_nonexistent_path(self):
        t = self.token('path "transit/*" { capabilities = ["read"] }')
        self.assertError(self.req("GET", "nothing/here", token=t), 403, ACL_PD)
        self.assertStatus(self.req("GET", "nothing/here"), 404)
        # a bad token is a plain 403, an ACL denial the multierror form
        self.assertError(self.req("GET", "nothing/here", token="bogus"), 403, "permission denied")

    def test_sudo_paths(self):
        t = self.token('path "sys/mounts/*" { capabilities = ["create", "update"] }',
                       'path "sys/auth/*" { capabilities = ["update", "sudo"] }')
        self.assertError(self.req("POST", "sys/mounts/t2", {"type": "transit"}, token=t), 403,
                         ACL_PD)
        self.assertStatus(self.req("POST", "sys/auth/k2", {"type": "kubernetes"}, token=t), 204)


class PermissionsTableTest(KmsdTestCase):
    """The product doc's Permissions table, every cell both ways, through real logins.

    | Role            | KMSKey CRD | Encrypt | Decrypt | Rotate | Delete | min-decrypt-version |
    | Project Manager | full       | yes     | yes     | yes    | yes    | yes                 |
    | Developer       | read       | yes     | yes     | -      | -      | -                   |
    | Viewer          | read       | yes     | -       | -      | -      | -                   |
    """

    TABLE = {
        "manager": {"kms_write": True, "encrypt": True, "decrypt": True, "rotate": True,
                    "delete": True, "min_version": True},
        "developer": {"kms_write": False, "encrypt": True, "decrypt": True, "rotate": False,
                      "delete": False, "min_version": False},
        "viewer": {"kms_write": False, "encrypt": True, "decrypt": False, "rotate": False,
                   "delete": False, "min_version": False},
    }

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        srv = cls.server
        cls.iss = Issuer()
        setup_org(srv, issuer=cls.iss)
        for role in cls.TABLE:
            make_role(srv, "%s-my-org" % role, "kms-" + role, sa=role)
        make_role(srv, "narrow-my-org", "my-project-only", sa="narrow")
        ok(srv.request("POST", "sys/policies/acl/my-project-only",
                       {"policy": 'path "transit/encrypt/my-org-my-project-*" {\n'
                                  '  capabilities = ["update"]\n}\n'
                                  'path "transit/decrypt/my-org-my-project-*" {\n'
                                  '  capabilities = ["update"]\n}\n'}, namespace=ORG))
        for key in (KEY, "my-org-other-project-db"):
            ok(srv.request("POST", "transit/keys/" + key, {}, namespace=ORG))
        r = ok(srv.request("POST", "transit/encrypt/" + KEY, {"plaintext": b64("hunter2")},
                           namespace=ORG), 200)
        cls.ct = r.data["ciphertext"]
        ok(srv.request("POST", "kms/keys/my-project/kk", {}, namespace=ORG))

    def as_role(self, role):
        return login_token(self.server, "%s-my-org" % role, self.iss.mint(sa=role))

    def call(self, tok, method, path, body=None):
        return self.server.request(method, path, body, token=tok, namespace=ORG)

    def check(self, role, cell, resp, ok_status=None):
        want = self.TABLE[role][cell] if cell in self.TABLE[role] else True
        if want:
            if ok_status is not None:
                self.assertStatus(resp, ok_status, "%s may %s" % (role, cell))
            elif resp.status == 403 or resp.status >= 500:
                self.fail("%s may %s\n%s" % (role, cell, resp.describe()))
        else:
            self.assertError(resp, 403, ACL_PD)

    def test_table(self):
        for role in self.TABLE:
            with self.subTest(role=role):
                tok = self.as_role(role)
                # KMSKey CRD: everyone reads, only the manager writes
                self.check(role, "kms_read", self.call(tok, "GET", "kms/keys/my-project/kk"), 200)
                self.check(role, "kms_read", self.call(tok, "LIST", "kms/keys/my-project"), 200)
                self.check(role, "kms_read", self.call(tok, "GET", "transit/keys/" + KEY), 200)
                self.check(role, "kms_read", self.call(tok, "LIST", "transit/keys"), 200)
                self.check(role, "kms_write", self.call(tok, "POST",
                                                        "kms/keys/my-project/" + role, {}))
                self.check(role, "kms_write", self.call(tok, "POST",
                                                        "transit/keys/my-org-my-project-new-" + role, {}), 200)
                # encrypt / decrypt
                self.check(role, "encrypt", self.call(tok, "POST", "transit/encrypt/" + KEY,
                                                      {"plaintext": b64("hunter2")}), 200)
                r = self.call(tok, "POST", "transit/decrypt/" + KEY, {"ciphertext": self.ct})
                self.check(role, "decrypt", r, 200)
                if r.status == 200:
                    self.assertEqual(unb64(r.data["plaintext"]), b"hunter2")
                # encrypt never auto-creates a key below the manager
                self.check(role, "kms_write", self.call(tok, "POST",
                                                        "transit/encrypt/my-org-my-project-auto-" + role,
                                                        {"plaintext": b64("x")}), 200)
                # rotate (raw Transit and KMSKey)
                self.check(role, "rotate", self.call(tok, "POST",
                                                     "transit/keys/%s/rotate" % KEY, {}), 200)
                self.check(role, "rotate", self.call(tok, "POST",
                                                     "kms/keys/my-project/kk/rotate", {}))
                # min-decryption-version
                self.check(role, "min_version",
                           self.call(tok, "POST", "transit/keys/%s/config" % KEY,
                                     {"min_decryption_version": 1}), 200)
                self.check(role, "min_version",
                           self.call(tok, "POST", "kms/keys/my-project/kk/min-decryption-version",
                                     {"version": 1}))
                # delete
                victim = "my-org-my-project-victim-" + role
                ok(self.server.request("POST", "transit/keys/" + victim, {}, namespace=ORG))
                ok(self.server.request("POST", "transit/keys/%s/config" % victim,
                                       {"deletion_allowed": True}, namespace=ORG))
                self.check(role, "delete", self.call(tok, "DELETE", "transit/keys/" + victim),
                           204)
                ok(self.server.request("POST", "kms/keys/my-project/del-" + role, {},
                                       namespace=ORG))
                self.check(role, "delete", self.call(tok, "DELETE",
                                                     "kms/keys/my-project/del-" + role))
                # nothing outside the table
                for method, path in (("GET", "transit/export/encryption-key/" + KEY),
                                     ("POST", "sys/mounts/other"),
                                     ("GET", "sys/policies/acl/kms-manager"),
                                     ("POST", "auth/k8s-host/role/evil")):
                    self.assertError(self.call(tok, method, path, {"type": "transit"}), 403,
                                     ACL_PD)
                # and nothing in another organisation or the root namespace
                self.assertEqual(self.server.request(
                    "POST", "transit/encrypt/" + KEY, {"plaintext": ""}, token=tok).status, 403)

    def test_narrowed_role(self):
        tok = login_token(self.server, "narrow-my-org", self.iss.mint(sa="narrow"))
        r = ok(self.call(tok, "POST", "transit/encrypt/" + KEY, {"plaintext": b64("p")}), 200)
        ok(self.call(tok, "POST", "transit/decrypt/" + KEY,
                     {"ciphertext": r.data["ciphertext"]}), 200)
        self.assertError(self.call(tok, "POST", "transit/encrypt/my-org-other-project-db",
                                   {"plaintext": b64("p")}), 403, ACL_PD)
        self.assertError(self.call(tok, "GET", "transit/keys/" + KEY), 403, ACL_PD)
        self.assertError(self.call(tok, "POST", "transit/keys/%s/rotate" % KEY, {}), 403,
                         ACL_PD)


if __name__ == "__main__":
    unittest.main()
