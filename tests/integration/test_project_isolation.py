"""Project isolation inside one organization (issue 11, item 2), against a real kmsd.

Transit names are <org>-<project>-<name> and '-' is legal in both, so project "b"'s KMSKey "c-d"
and project "b-c"'s KMSKey "d" would be the same Transit key "acme-b-c-d". Two workloads log in
with Kubernetes ServiceAccount tokens from projects "b" and "b-c" of organization "acme", both
with the built-in kms-manager policy (whose globs cover every key of the organization). Neither
may read, encrypt or decrypt with, rotate, raise the floor of or delete the other's key,
through kms/ or transit/, nor take it over by creating a KMSKey with the colliding name; each
uses its own. A hand-written glob policy `transit/decrypt/acme-b-*` does not reach b-c's keys
either. Each refusal is audited as a policy refusal: both lines carry the error and
policy_results.allowed=false (kmsctl audit list --result=denied, a SIEM's allowed == false).
"""

import json
import unittest

from kmsd_harness import KmsdTestCase, b64, unb64, wait_for
from auth_helpers import Issuer, login_token, make_role, ok, setup_org

ORG = "acme"
DENIED = "1 error occurred:\n\t* permission denied\n\n"


class ProjectIsolation(KmsdTestCase):
    server_audit_file = True

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        srv = cls.server
        cls.iss = Issuer()
        setup_org(srv, org=ORG, issuer=cls.iss)
        make_role(srv, "mgr-b", ["kms-manager"], org=ORG, ns="b")
        make_role(srv, "mgr-bc", ["kms-manager"], org=ORG, ns="b-c")
        ok(srv.request("POST", "sys/policies/acl/b-glob", {"policy": (
            'path "transit/encrypt/acme-b-*" { capabilities = ["update"] }\n'
            'path "transit/decrypt/acme-b-*" { capabilities = ["update"] }\n')}, namespace=ORG))
        make_role(srv, "glob-b", ["b-glob"], org=ORG, ns="b")
        cls.tb = login_token(srv, "mgr-b", cls.iss.mint(ns="b"), org=ORG)
        cls.tbc = login_token(srv, "mgr-bc", cls.iss.mint(ns="b-c"), org=ORG)
        cls.tglob = login_token(srv, "glob-b", cls.iss.mint(ns="b"), org=ORG)
        # derive-key names a second key in its body (base_key_name): the ACL may allow the
        # path, the ownership check still covers the base key
        ok(srv.request("POST", "sys/policies/acl/derive-any", {"policy": (
            'path "transit/derive-key/*" { capabilities = ["update"] }\n')}, namespace=ORG))
        make_role(srv, "derive-b", ["kms-manager", "derive-any"], org=ORG, ns="b")
        cls.tderive = login_token(srv, "derive-b", cls.iss.mint(ns="b"), org=ORG)
        cls.owner_of = {"acme-b-c-d": cls.tbc, "acme-b-e": cls.tb}
        # each manager creates its project's KMSKey through kms/
        ok(cls.req("POST", "kms/keys/b-c/d", {"spec": {}}, cls.tbc), 200)
        ok(cls.req("POST", "kms/keys/b/e", {"spec": {}}, cls.tb), 200)

    @classmethod
    def req(cls, method, path, body=None, token=None):
        return cls.server.request(method, path, body, token=token, namespace=ORG)

    def denied(self, method, path, body, token):
        r = self.req(method, path, body, token)
        self.assertEqual(r.status, 403, r.describe())
        self.assertEqual(r.errors, [DENIED], r.describe())
        # the newest pair of lines: this request's, a policy refusal on both
        lines = wait_for(lambda: self.last_pair(path), 30, "the refusal's audit lines")
        for line in lines:
            self.assertFalse(line["auth"]["policy_results"]["allowed"], line)
            self.assertIn("permission denied", line.get("error", ""), line)

    def last_pair(self, path):
        with open(self.audit, "rb") as f:
            lines = [json.loads(x) for x in f.read().decode().splitlines()]
        if len(lines) < 2 or lines[-1]["type"] != "response":
            return None
        req, resp = lines[-2], lines[-1]
        if (req["request"]["id"] != resp["request"]["id"] or
                resp["request"]["path"].rstrip("/") != path.rstrip("/")):
            return None
        return req, resp

    def root_key(self, name):
        return ok(self.server.request("GET", "transit/keys/" + name, namespace=ORG), 200).data

    def ciphertext(self, key, token):
        r = ok(self.req("POST", "transit/encrypt/" + key, {"plaintext": b64(b"hunter2")}, token),
               200)
        return r.data["ciphertext"]

    def check_cannot_touch(self, token, project, name, transit):
        ct = self.ciphertext(transit, self.owner_of[transit])
        before = self.root_key(transit)
        for method, path, body in [
                ("GET", "kms/keys/%s/%s" % (project, name), None),
                ("LIST", "kms/keys/%s" % project, None),
                ("POST", "kms/keys/%s/%s" % (project, name), {"spec": {}}),
                ("POST", "kms/keys/%s/%s/rotate" % (project, name), None),
                ("POST", "kms/keys/%s/%s/min-decryption-version" % (project, name),
                 {"version": 1}),
                ("POST", "kms/keys/%s/%s/schedule-delete" % (project, name), None),
                ("DELETE", "kms/keys/%s/%s" % (project, name), None),
                ("GET", "transit/keys/" + transit, None),
                ("POST", "transit/encrypt/" + transit, {"plaintext": b64(b"x")}),
                ("POST", "transit/decrypt/" + transit, {"ciphertext": ct}),
                ("POST", "transit/rewrap/" + transit, {"ciphertext": ct}),
                ("POST", "transit/datakey/plaintext/" + transit, {}),
                ("POST", "transit/keys/%s/rotate" % transit, None),
                ("POST", "transit/keys/%s/config" % transit, {"min_decryption_version": 1}),
                ("POST", "transit/keys/%s/config" % transit, {"deletion_allowed": True}),
                ("POST", "transit/keys/%s/csr" % transit, {}),
                ("POST", "transit/keys/%s/set-certificate" % transit,
                 {"certificate_chain": "x"}),
                ("DELETE", "transit/keys/" + transit, None)]:
            with self.subTest(method=method, path=path):
                self.denied(method, path, body, token)
        after = self.root_key(transit)
        self.assertEqual(after["latest_version"], before["latest_version"])
        self.assertEqual(after["min_decryption_version"], before["min_decryption_version"])
        self.assertFalse(after["deletion_allowed"])

    def test_b_cannot_touch_bc(self):
        self.check_cannot_touch(self.tb, "b-c", "d", "acme-b-c-d")

    def test_bc_cannot_touch_b(self):
        self.check_cannot_touch(self.tbc, "b", "e", "acme-b-e")

    def test_colliding_kmskey_name_refused(self):
        # b's KMSKey "c-d" would be b-c's Transit key: refused, naming the owner
        r = self.req("POST", "kms/keys/b/c-d", {"spec": {}}, self.tb)
        self.assertEqual(r.status, 400, r.describe())
        self.assertEqual(r.errors, ['Transit key "acme-b-c-d" belongs to KMSKey "d" of project '
                                    '"b-c"; choose another name for this KMSKey'])
        self.assertEqual(self.req("GET", "kms/keys/b/c-d", None, self.tb).status, 404)
        # the same through a token that is bound to no project (root)
        r = self.server.request("POST", "kms/keys/b/c-d", {"spec": {}}, namespace=ORG)
        self.assertEqual(r.status, 400, r.describe())

    def test_derive_key_base_and_target_stay_in_project(self):
        pem = ("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEcAxI939WWExcxjLKZWQN"
               "uRtrrM46\nTfa0LOfMg4gz0ofbceUJ4/2bBg3bILpcUdzFlI1G+/ZA3+BEF4LKuF+krA==\n"
               "-----END PUBLIC KEY-----\n")
        # another project's key as the base, into a name of its own project
        self.denied("POST", "transit/derive-key/acme-b-derived",
                    {"base_key_name": "acme-b-c-d", "peer_public_key": pem}, self.tderive)
        # its own key as the base, into another project's name
        self.denied("POST", "transit/derive-key/acme-b-c-derived",
                    {"base_key_name": "acme-b-e", "peer_public_key": pem}, self.tderive)
        # its own names pass the ownership check (and reach the type check: an AES base)
        r = self.req("POST", "transit/derive-key/acme-b-derived",
                     {"base_key_name": "acme-b-e", "peer_public_key": pem}, self.tderive)
        self.assertEqual(r.status, 400, r.describe())
        self.assertEqual(r.errors, ["base key type aes256-gcm96 does not support key agreement"])

    def test_glob_policy_stays_in_project(self):
        ct = self.ciphertext("acme-b-c-d", self.tbc)
        self.denied("POST", "transit/decrypt/acme-b-c-d", {"ciphertext": ct}, self.tglob)
        self.denied("POST", "transit/encrypt/acme-b-c-d", {"plaintext": b64(b"x")}, self.tglob)
        own = self.ciphertext("acme-b-e", self.tglob)
        r = ok(self.req("POST", "transit/decrypt/acme-b-e", {"ciphertext": own}, self.tglob), 200)
        self.assertEqual(unb64(r.data["plaintext"]), b"hunter2")

    def test_each_uses_its_own(self):
        for token, project, name, transit in [(self.tb, "b", "e", "acme-b-e"),
                                              (self.tbc, "b-c", "d", "acme-b-c-d")]:
            with self.subTest(project=project):
                ct = self.ciphertext(transit, token)
                r = ok(self.req("POST", "transit/decrypt/" + transit, {"ciphertext": ct}, token),
                       200)
                self.assertEqual(unb64(r.data["plaintext"]), b"hunter2")
                r = ok(self.req("POST", "kms/keys/%s/%s/rotate" % (project, name), None, token),
                       200)
                v = r.data["status"]["currentVersion"]
                ok(self.req("POST", "transit/keys/%s/rotate" % transit, None, token))
                r = ok(self.req("GET", "kms/keys/%s/%s" % (project, name), None, token), 200)
                self.assertEqual(r.data["status"]["currentVersion"], v + 1)
                keys = ok(self.req("LIST", "kms/keys/" + project, None, token), 200).data["keys"]
                self.assertEqual(keys, [name])
                # LIST transit/keys shows the project's own keys only
                keys = ok(self.req("LIST", "transit/keys", None, token), 200).data["keys"]
                self.assertEqual(keys, [transit])


if __name__ == "__main__":
    unittest.main()
