"""The token store against a real kmsd (reference auth-audit.md §3, §5 and §8 cases 13-15):
lookup-self keys and JSON types, renew-self arithmetic and warnings, periodic tokens,
renewal going back to the role, revoke-self, create / lookup / accessors, child revocation,
expiry, and namespace scoping of tokens; revoke-orphan, tidy and LIST accessors with their
audit lines. Uses hvac where a client would.
"""

import json
import time
import unittest

import hvac  # Debian's python3-hvac (/usr/bin/python3); missing fails, never skips
import hvac.exceptions

from kmsd_harness import KmsdTestCase, UUID4_RE, raw_exchange, wait_for
from auth_helpers import ORG, Issuer, login_token, make_role, ok, setup_org

PD = "permission denied"
ACL_PD = "1 error occurred:\n\t* permission denied\n\n"
UNSUPPORTED = "1 error occurred:\n\t* unsupported path\n\n"
RFC3339 = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$"


class TokenTest(KmsdTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        srv = cls.server
        cls.iss = Issuer()
        setup_org(srv, issuer=cls.iss)
        make_role(srv, "dev", "kms-developer")
        make_role(srv, "hour", "kms-viewer", token_ttl="1h", token_max_ttl="2h")
        make_role(srv, "short", "kms-viewer", token_ttl=2, token_max_ttl=3)
        make_role(srv, "periodic", "kms-viewer", token_period="3s")
        make_role(srv, "temp", "kms-viewer")
        ok(srv.request("POST", "sys/namespaces/other-org", {}))
        ok(srv.request("POST", "sys/namespaces/team", {}, namespace=ORG))
        ok(srv.request("POST", "sys/mounts/transit", {"type": "transit"}, namespace="other-org"))
        ok(srv.request("POST", "sys/mounts/transit", {"type": "transit"},
                       namespace=ORG + "/team"))
        for ns in (ORG, "other-org", ORG + "/team"):
            ok(srv.request("POST", "transit/keys/k", {}, namespace=ns))
        # the key a my-project workload may use in my-org (Kubernetes logins are bound to
        # their project's keys, `<org>-<project>-*`)
        ok(srv.request("POST", "transit/keys/%s-my-project-k" % ORG, {}, namespace=ORG))

    def login(self, role="dev"):
        return login_token(self.server, role, self.iss.mint())

    def as_(self, token, method, path, body=None, namespace=ORG):
        return self.server.request(method, path, body, token=token, namespace=namespace)

    def wait_expired(self, tok, t0, lives, timeout=15):
        """Poll lookup-self until the token is refused. t0 is a monotonic time taken before
        the token was issued, so a refusal answered sooner than `lives` seconds after t0 is a
        token that died early; the expiry must come within `timeout` seconds."""
        def refused():
            r = self.as_(tok, "GET", "auth/token/lookup-self")
            answered = time.monotonic()
            if r.status == 200:
                return None
            self.assertError(r, 403, PD)
            self.assertGreaterEqual(answered - t0, lives, "the token died early")
            return r
        wait_for(refused, timeout, "the token to expire", interval=0.1)

    # ---- case 14: lookup-self ------------------------------------------------------------
    def test_self_calls_name_the_token_that_was_checked(self):
        """An empty first X-Vault-Token, a second one and a Bearer token: the token check takes
        the first X-Vault-Token header (empty, so the Bearer token), as Go's Header.Get does;
        lookup-self's id and renew-self's client_token name that token, not the second
        X-Vault-Token (they echoed an unchecked string the audit log never saw)."""
        tok = self.login()
        fake = "s.NotTheCheckedToken000000"

        def call(method, path, body):
            raw = ("%s /v1/%s HTTP/1.1\r\nHost: x\r\nX-Vault-Namespace: %s\r\n"
                   "X-Vault-Token: \r\nX-Vault-Token: %s\r\nAuthorization: Bearer %s\r\n"
                   "Content-Type: application/json\r\nContent-Length: %d\r\n"
                   "Connection: close\r\n\r\n%s" % (method, path, ORG, fake, tok, len(body),
                                                        body)).encode()
            head, _, payload = raw_exchange(self.server.port, raw).partition(b"\r\n\r\n")
            self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
            return json.loads(payload)

        self.assertEqual(call("GET", "auth/token/lookup-self", "")["data"]["id"], tok)
        renewed = call("POST", "auth/token/renew-self", '{"increment": 60}')
        self.assertEqual(renewed["auth"]["client_token"], tok)

    def test_lookup_self_types(self):
        tok = self.login()
        d = ok(self.as_(tok, "GET", "auth/token/lookup-self"), 200).data
        types = {"accessor": str, "creation_time": int, "creation_ttl": int,
                 "display_name": str, "entity_id": str, "expire_time": str,
                 "explicit_max_ttl": int, "id": str, "issue_time": str, "meta": dict,
                 "num_uses": int, "orphan": bool, "path": str, "policies": list,
                 "renewable": bool, "ttl": int, "type": str}
        for k, t in types.items():
            self.assertIn(k, d)
            self.assertIsInstance(d[k], t, k)
            if t is int:
                self.assertNotIsInstance(d[k], bool, k)
        self.assertEqual(d["id"], tok)
        self.assertEqual(d["type"], "service")
        self.assertEqual(d["creation_ttl"], 3600)
        self.assertTrue(3590 <= d["ttl"] <= 3600)
        self.assertRegex(d["expire_time"], RFC3339)
        self.assertRegex(d["issue_time"], RFC3339)
        self.assertRegex(d["entity_id"], UUID4_RE)
        self.assertEqual(d["role"], "dev")
        self.assertEqual(d["namespace_path"], ORG + "/")
        self.assertEqual(d["policies"], ["default", "kms-developer"])
        self.assertIs(d["orphan"], True)
        # POST works as well; the default policy grants only read, as Vault's
        self.assertError(self.as_(tok, "POST", "auth/token/lookup-self", {}), 403, ACL_PD)
        # the root token: no lease
        d = ok(self.req("GET", "auth/token/lookup-self"), 200).data
        self.assertIsNone(d["expire_time"])
        self.assertIsNone(d["meta"])
        self.assertEqual(d["ttl"], 0)
        self.assertEqual(d["policies"], ["root"])
        self.assertEqual(d["path"], "auth/token/root")
        self.assertNotIn("renewable", d)
        self.assertNotIn("issue_time", d)
        d = ok(self.req("POST", "auth/token/lookup-self", {}), 200).data
        self.assertEqual(d["display_name"], "root")

    def test_hvac_is_authenticated(self):
        tok = self.login()
        cli = hvac.Client(url=self.server.addr, token=tok, namespace=ORG)
        self.assertTrue(cli.is_authenticated())
        self.assertEqual(cli.auth.token.lookup_self()["data"]["id"], tok)
        r = cli.auth.token.renew_self(increment="30m")
        self.assertEqual(r["auth"]["lease_duration"], 1800)
        cli.auth.token.revoke_self()
        self.assertFalse(cli.is_authenticated())
        cli.adapter.close()
        bad = hvac.Client(url=self.server.addr, token="nope")
        self.assertFalse(bad.is_authenticated())
        bad.adapter.close()

    # ---- case 13: TTLs ---------------------------------------------------------------------
    def test_renew_capped_with_warning(self):
        tok = self.login("hour")
        d = ok(self.as_(tok, "GET", "auth/token/lookup-self"), 200).data
        self.assertEqual(d["creation_ttl"], 3600)
        r = ok(self.as_(tok, "POST", "auth/token/renew-self", {"increment": 10000}), 200)
        a = r.json["auth"]
        self.assertIn(a["lease_duration"], (7199, 7200))
        self.assertEqual(len(r.warnings), 1)
        self.assertRegex(r.warnings[0], r'^TTL of "2h46m40s" exceeded the effective max_ttl of '
                                        r'"(2h|1h59m59s)"; TTL value is capped accordingly$')
        self.assertEqual(a["client_token"], tok)
        self.assertEqual(a["policies"], ["default", "kms-viewer"])
        self.assertIs(a["orphan"], True)
        r = ok(self.as_(tok, "POST", "auth/token/renew-self", {"increment": "10m"}), 200)
        self.assertEqual(r.json["auth"]["lease_duration"], 600)
        self.assertIsNone(r.warnings)
        d = ok(self.as_(tok, "GET", "auth/token/lookup-self"), 200).data
        self.assertIn("last_renewal_time", d)
        self.assertIs(type(d["last_renewal_time"]), int)
        # no increment: the role's token_ttl again
        r = ok(self.as_(tok, "POST", "auth/token/renew-self", {}), 200)
        self.assertEqual(r.json["auth"]["lease_duration"], 3600)

    def test_max_ttl_then_expiry(self):
        t0 = time.monotonic()
        tok = self.login("short")
        r = ok(self.as_(tok, "POST", "auth/token/renew-self", {"increment": 60}), 200)
        self.assertLessEqual(r.json["auth"]["lease_duration"], 3)
        self.assertIn("exceeded the effective max_ttl", r.warnings[0])
        # the renewal cannot carry it past max_ttl (3 s): it expires, and not before its ttl
        self.wait_expired(tok, t0, 3)
        # expired: 403 at once, everywhere
        self.assertError(self.as_(tok, "GET", "auth/token/lookup-self"), 403, PD)
        self.assertError(self.as_(tok, "POST", "auth/token/renew-self", {}), 403, PD)
        self.assertError(self.as_(tok, "POST", "transit/encrypt/k", {"plaintext": ""}), 403, PD)

    def test_periodic(self):
        tok = self.login("periodic")
        d = ok(self.as_(tok, "GET", "auth/token/lookup-self"), 200).data
        self.assertEqual(d["period"], 3)
        self.assertLessEqual(d["ttl"], 3)
        first_expiry = d["expire_time"]

        def renewed_later():
            # renew until the whole-second expire_time moves (within the 3 s period)
            r = ok(self.as_(tok, "POST", "auth/token/renew-self", {"increment": 3600}), 200)
            self.assertEqual(r.json["auth"]["lease_duration"], 3)  # reset to the period
            d = ok(self.as_(tok, "GET", "auth/token/lookup-self"), 200).data
            return d["expire_time"] > first_expiry

        wait_for(renewed_later, 10, "a renewal to move expire_time", interval=0.2)

    def test_role_deleted_then_renew_fails(self):
        tok = self.login("temp")
        ok(self.req("DELETE", "auth/k8s-host/role/temp", namespace=ORG))
        try:
            self.assertError(self.as_(tok, "POST", "auth/token/renew-self", {}), 400,
                             "failed to renew entry: role temp does not exist during renewal")
        finally:
            make_role(self.server, "temp", "kms-viewer")

    # ---- revoke, create, accessors ---------------------------------------------------------
    def test_revoke_self(self):
        tok = self.login()
        r = self.as_(tok, "POST", "auth/token/revoke-self", {})
        self.assertStatus(r, 204)
        self.assertEqual(r.body, b"")
        for method, path in (("GET", "auth/token/lookup-self"), ("POST", "transit/encrypt/k"),
                             ("POST", "auth/token/revoke-self")):
            self.assertError(self.as_(tok, method, path, {}), 403, PD)
        # the root token has no lease to renew
        self.assertError(self.req("POST", "auth/token/renew-self", {}), 400,
                         "lease is not renewable")

    def test_create_lookup_accessors(self):
        r = ok(self.req("POST", "auth/token/create",
                        {"policies": ["kms-viewer"], "meta": {"team": "ci"}, "ttl": "10m",
                         "display_name": "ci bot!"}, namespace=ORG), 200)
        a = r.json["auth"]
        self.assertIs(a["orphan"], False)
        self.assertEqual(a["policies"], ["default", "kms-viewer"])
        self.assertEqual(a["metadata"], {"team": "ci"})
        self.assertEqual(a["lease_duration"], 600)
        tok, acc = a["client_token"], a["accessor"]
        d = ok(self.req("POST", "auth/token/lookup", {"token": tok}, namespace=ORG), 200).data
        self.assertEqual(d["id"], tok)
        self.assertEqual(d["display_name"], "token-ci-bot")
        self.assertEqual(d["path"], "auth/token/create")
        self.assertEqual(d["meta"], {"team": "ci"})
        d = ok(self.req("POST", "auth/token/lookup-accessor", {"accessor": acc},
                        namespace=ORG), 200).data
        self.assertEqual(d["id"], "")
        self.assertEqual(d["accessor"], acc)
        # tokens are per namespace: not visible from the root namespace
        self.assertError(self.req("POST", "auth/token/lookup", {"token": tok}), 403,
                         "bad token")
        self.assertError(self.req("POST", "auth/token/lookup-accessor", {"accessor": acc}),
                         400, "invalid accessor")
        ok(self.as_(tok, "POST", "transit/encrypt/k", {"plaintext": ""}), 200)
        self.assertStatus(self.req("POST", "auth/token/revoke-accessor", {"accessor": acc},
                                   namespace=ORG), 204)
        self.assertError(self.as_(tok, "GET", "auth/token/lookup-self"), 403, PD)
        # revoked already: no error, OpenBao's warning (lookup-accessor: 400 invalid accessor)
        r = ok(self.req("POST", "auth/token/revoke-accessor", {"accessor": acc},
                        namespace=ORG), 200)
        self.assertEqual(r.warnings, ["No token found with this accessor"])
        self.assertError(self.req("POST", "auth/token/lookup-accessor", {"accessor": acc},
                                  namespace=ORG), 400, "invalid accessor")
        # unknown policies only warn; batch tokens are refused
        r = ok(self.req("POST", "auth/token/create", {"policies": ["nope"]}, namespace=ORG), 200)
        self.assertEqual(r.warnings, ['Policy "nope" does not exist'])
        self.assertStatus(self.req("POST", "auth/token/create", {"type": "batch"},
                                   namespace=ORG), 400)

    def test_create_by_non_root_and_children(self):
        ok(self.req("POST", "sys/policies/acl/token-maker",
                    {"policy": 'path "auth/token/create" { capabilities = ["update"] }'},
                    namespace=ORG))
        r = ok(self.req("POST", "auth/token/create",
                        {"policies": ["token-maker", "kms-viewer"], "ttl": "1h"},
                        namespace=ORG), 200)
        parent = r.json["auth"]["client_token"]
        r = ok(self.as_(parent, "POST", "auth/token/create", {"policies": ["kms-viewer"]}), 200)
        child = r.json["auth"]["client_token"]
        self.assertIs(r.json["auth"]["orphan"], False)
        r = ok(self.as_(parent, "POST", "auth/token/create", {}), 200)
        self.assertEqual(r.json["auth"]["policies"], ["default", "kms-viewer", "token-maker"])
        self.assertError(self.as_(parent, "POST", "auth/token/create",
                                  {"policies": ["kms-manager"]}), 400,
                         "child policies must be subset of parent")
        self.assertError(self.as_(parent, "POST", "auth/token/create", {"no_parent": True}), 400,
                         "root or sudo privileges required to create orphan token")
        self.assertError(self.as_(parent, "POST", "auth/token/create", {"id": "custom"}), 400,
                         "root or sudo privileges required to specify token id")
        self.assertError(self.as_(parent, "POST", "auth/token/create-orphan", {}), 403, ACL_PD)
        ok(self.as_(child, "GET", "auth/token/lookup-self"), 200)
        # revoking the parent revokes its children
        self.assertStatus(self.as_(parent, "POST", "auth/token/revoke-self", {}), 204)
        self.assertError(self.as_(child, "GET", "auth/token/lookup-self"), 403, PD)
        # root may set an id and make orphans
        r = ok(self.req("POST", "auth/token/create-orphan",
                        {"id": "my-own-id", "policies": ["kms-viewer"]}, namespace=ORG), 200)
        self.assertTrue(r.json["auth"]["client_token"].startswith("my-own-id."))
        self.assertIs(r.json["auth"]["orphan"], True)

    def test_child_of_token_without_default(self):
        """A token kept off `default` (no_default_policy) cannot give it to its children: as in
        OpenBao, an inherited set stays as it is, `default` is added to a subset only when the
        parent has it, and asking for it is a policy the parent does not hold."""
        ok(self.req("POST", "sys/policies/acl/nodef-maker",
                    {"policy": 'path "auth/token/create" { capabilities = ["update"] }'},
                    namespace=ORG))
        r = ok(self.req("POST", "auth/token/create",
                        {"policies": ["nodef-maker", "kms-viewer"], "no_default_policy": True},
                        namespace=ORG), 200)
        parent = r.json["auth"]["client_token"]
        self.assertEqual(r.json["auth"]["policies"], ["kms-viewer", "nodef-maker"])
        r = ok(self.as_(parent, "POST", "auth/token/create", {}), 200)
        self.assertEqual(r.json["auth"]["policies"], ["kms-viewer", "nodef-maker"])
        r = ok(self.as_(parent, "POST", "auth/token/create", {"policies": ["kms-viewer"]}), 200)
        self.assertEqual(r.json["auth"]["policies"], ["kms-viewer"])
        self.assertError(self.as_(parent, "POST", "auth/token/create",
                                  {"policies": ["default"]}), 400,
                         "child policies must be subset of parent")
        self.assertError(self.as_(parent, "POST", "auth/token/create",
                                  {"policies": ["kms-viewer", "default"]}), 400,
                         "child policies must be subset of parent")
        # a parent with default: its children get it unless they ask not to
        r = ok(self.req("POST", "auth/token/create", {"policies": ["nodef-maker"]},
                        namespace=ORG), 200)
        parent = r.json["auth"]["client_token"]
        r = ok(self.as_(parent, "POST", "auth/token/create", {"policies": ["nodef-maker"]}), 200)
        self.assertEqual(r.json["auth"]["policies"], ["default", "nodef-maker"])
        r = ok(self.as_(parent, "POST", "auth/token/create",
                        {"policies": ["nodef-maker", "default"], "no_default_policy": True}), 200)
        self.assertEqual(r.json["auth"]["policies"], ["nodef-maker"])
        # from a parent namespace (sudo): only the policies named, which are the child
        # namespace's; the caller's own names mean nothing there
        ok(self.req("POST", "sys/policies/acl/ns-maker",
                    {"policy": 'path "+/auth/token/create" { capabilities = ["update", "sudo"] }'}))
        r = ok(self.req("POST", "auth/token/create", {"policies": ["ns-maker"]}), 200)
        above = r.json["auth"]["client_token"]
        r = ok(self.as_(above, "POST", "auth/token/create", {}), 200)
        self.assertEqual(r.json["auth"]["policies"], ["default"])
        r = ok(self.as_(above, "POST", "auth/token/create", {"policies": ["kms-viewer"]}), 200)
        self.assertEqual(r.json["auth"]["policies"], ["default", "kms-viewer"])

    def test_denied_request_uses_the_token(self):
        """num_uses counts every request the token makes, refused ones too (OpenBao decrements
        "even in the case of an error"): a limited-use token cannot probe paths for free."""
        r = ok(self.req("POST", "auth/token/create",
                        {"policies": ["kms-viewer"], "num_uses": 3}, namespace=ORG), 200)
        tok = r.json["auth"]["client_token"]
        key = ORG + "-my-project-k"
        # 1 and 2: the ACL refuses (a viewer may neither decrypt nor delete)
        self.assertError(self.as_(tok, "POST", "transit/decrypt/" + key,
                                  {"ciphertext": "vault:v1:AAAA"}), 403, ACL_PD)
        self.assertError(self.as_(tok, "DELETE", "transit/keys/" + key), 403, ACL_PD)
        # 3: allowed, the last use: lookup-self shows what is left after it, as OpenBao
        # does (-1: revoked as the request ends)
        r = ok(self.as_(tok, "GET", "auth/token/lookup-self"), 200)
        self.assertEqual(r.json["data"]["num_uses"], -1)
        self.assertError(self.as_(tok, "GET", "auth/token/lookup-self"), 403, PD)

    def test_lookup_self_shows_the_uses_left(self):
        r = ok(self.req("POST", "auth/token/create",
                        {"policies": ["kms-viewer"], "num_uses": 3}, namespace=ORG), 200)
        tok = r.json["auth"]["client_token"]
        self.assertEqual(r.json["auth"]["num_uses"], 3)
        seen = [ok(self.as_(tok, "GET", "auth/token/lookup-self"), 200).json["data"]["num_uses"]
                for _ in range(3)]
        self.assertEqual(seen, [2, 1, -1])
        self.assertError(self.as_(tok, "GET", "auth/token/lookup-self"), 403, PD)
        # an unlimited token stays at 0
        r = ok(self.req("POST", "auth/token/create", {"policies": ["kms-viewer"]},
                        namespace=ORG), 200)
        self.assertEqual(ok(self.as_(r.json["auth"]["client_token"], "GET",
                                     "auth/token/lookup-self"), 200).json["data"]["num_uses"], 0)

    def test_a_limited_use_root_policy_token_runs_out_too(self):
        """A token root creates without policies carries the root policy; with num_uses it is a
        break-glass token of N requests (OpenBao's UseToken spends a use of every token, root
        policy or not). Its uses were never counted: it worked for good."""
        r = ok(self.req("POST", "auth/token/create", {"num_uses": 2}), 200)
        self.assertEqual(r.json["auth"]["policies"], ["root"])
        tok = r.json["auth"]["client_token"]
        self.assertEqual(ok(self.as_(tok, "GET", "auth/token/lookup-self"),
                            200).json["data"]["num_uses"], 1)
        ok(self.as_(tok, "GET", "sys/mounts"), 200)  # the last use, on another path
        self.assertError(self.as_(tok, "GET", "sys/mounts"), 403, PD)
        self.assertError(self.as_(tok, "GET", "auth/token/lookup-self"), 403, PD)

    def test_expired_token_is_403_at_once(self):
        t0 = time.monotonic()
        r = ok(self.req("POST", "auth/token/create", {"ttl": 1, "policies": ["kms-viewer"]},
                        namespace=ORG), 200)
        tok = r.json["auth"]["client_token"]
        # a ttl of 1 s lives 1 s from its creation (not to the end of a whole second)
        r = self.as_(tok, "GET", "auth/token/lookup-self")
        if time.monotonic() - t0 < 1:
            ok(r, 200)
        self.wait_expired(tok, t0, 1)
        self.assertError(self.req("POST", "auth/token/lookup", {"token": tok}, namespace=ORG),
                         403, "bad token")

    # ---- case 15: namespace scope ------------------------------------------------------------
    def test_namespace_scope(self):
        tok = self.login()  # a my-org token, bound to its project (my-project)
        key = ORG + "-my-project-k"  # a key its project owns by name
        ok(self.as_(tok, "POST", "transit/encrypt/" + key, {"plaintext": ""}), 200)
        ok(self.server.request("POST", "/v1/%s/transit/encrypt/%s" % (ORG, key), {"plaintext": ""},
                               token=tok), 200)
        for ns in ("other-org", None, ORG + "/team"):
            with self.subTest(ns=ns):
                self.assertEqual(self.as_(tok, "POST", "transit/encrypt/" + key, {"plaintext": ""},
                                          namespace=ns).status, 403)
        # a child-namespace token in its parent
        r = ok(self.req("POST", "auth/token/create", {"policies": ["kms-viewer"]},
                        namespace=ORG + "/team"), 200)
        child_tok = r.json["auth"]["client_token"]
        ok(self.as_(child_tok, "POST", "transit/encrypt/k", {"plaintext": ""},
                    namespace=ORG + "/team"), 200)
        self.assertEqual(self.as_(child_tok, "POST", "transit/encrypt/k", {"plaintext": ""},
                                  namespace=ORG).status, 403)
        # the root token works in every namespace
        for ns in (ORG, "other-org", ORG + "/team"):
            ok(self.req("POST", "transit/encrypt/k", {"plaintext": ""}, namespace=ns), 200)
        # case 23: a root-namespace policy with a leading '+'
        ok(self.req("POST", "sys/policies/acl/ctrl",
                    {"policy": 'path "+/transit/encrypt/k" { capabilities = ["update"] }'}))
        r = ok(self.req("POST", "auth/token/create", {"policies": ["ctrl"]}), 200)
        ctrl = r.json["auth"]["client_token"]
        self.assertNotIn(".", ctrl[2:])
        ok(self.as_(ctrl, "POST", "transit/encrypt/k", {"plaintext": ""}), 200)
        ok(self.as_(ctrl, "POST", "transit/encrypt/k", {"plaintext": ""},
                    namespace="other-org"), 200)
        self.assertError(self.as_(ctrl, "POST", "transit/encrypt/k", {"plaintext": ""},
                                  namespace=None), 403, ACL_PD)
        self.assertError(self.as_(ctrl, "POST", "transit/encrypt/k", {"plaintext": ""},
                                  namespace=ORG + "/team"), 403, ACL_PD)



TIDY_STARTED = ("Tidy operation successfully started. Any information from the operation will "
                "be printed to kmsd's server log.")


class TokenAdminTest(KmsdTestCase):
    """revoke-orphan, tidy and LIST accessors through hvac (Debian's python3-hvac: the orphaning
    call is `revoke_and_orphan_children` there), with an audit file: every call audited,
    tokens and accessors only as HMACs."""

    server_audit_file = True

    def ns(self):
        """A fresh namespace: its tokens are the test's own."""
        name = self.uniq("tok")
        ok(self.req("POST", "sys/namespaces/" + name, {}))
        return name

    def hvac(self, token=None, namespace=None):
        cli = hvac.Client(url=self.server.addr, token=token or self.server.token,
                          namespace=namespace)
        self.addCleanup(cli.adapter.close)
        return cli

    def create(self, ns, token=None, **body):
        r = ok(self.server.request("POST", "auth/token/create", body, namespace=ns,
                                   **({"token": token} if token else {})), 200)
        return r.json["auth"]["client_token"], r.json["auth"]["accessor"]

    def policy(self, ns, name, hcl):
        ok(self.req("POST", "sys/policies/acl/" + name, {"policy": hcl}, namespace=ns))

    def lookup_self(self, tok, ns):
        return self.server.request("GET", "auth/token/lookup-self", token=tok, namespace=ns)

    def tokens_in_store(self):
        r = ok(self.req("GET", "sys/metrics?format=prometheus"), 200)
        for line in r.body.decode().splitlines():
            if line.startswith("kmsd_tokens "):
                return int(line.split()[1])
        raise AssertionError("no kmsd_tokens in sys/metrics")

    def audit_lines(self):
        with open(self.audit, "rb") as f:
            return [json.loads(line) for line in f.read().decode().splitlines()]

    def assert_audited(self, path, secrets, status):
        """The request and the response line of `path` are in the audit file (waited for),
        the response with `status`, and no secret is anywhere in it in clear."""
        def lines():
            ls = [l for l in self.audit_lines()
                  if (l.get("request") or {}).get("path") == path]
            return ls if any(l["type"] == "response" for l in ls) else None
        ls = wait_for(lines, 10, "the audit lines of " + path)
        self.assertIn("request", [l["type"] for l in ls])
        self.assertIn(status, [l.get("status") for l in ls if l["type"] == "response"])
        with open(self.audit, "rb") as f:
            text = f.read().decode()
        for i, s in enumerate(secrets):
            self.assertFalse(s in text, "secret %d of %s in clear in the audit log" % (i, path))
        return ls

    def test_revoke_orphan(self):
        ns = self.ns()
        self.policy(ns, "maker", 'path "auth/token/create" { capabilities = ["update"] }')
        self.policy(ns, "orphaner",
                    'path "auth/token/revoke-orphan" { capabilities = ["update"] }')
        parent, pacc = self.create(ns, policies=["maker"], ttl="1h")
        child, cacc = self.create(ns, token=parent)
        grandchild, _ = self.create(ns, token=child)
        self.assertIs(ok(self.lookup_self(child, ns), 200).data["orphan"], False)

        # no grant on the path: the ACL's 403; update without sudo: OpenBao's 400
        plain, _ = self.create(ns, policies=["default"])
        with self.assertRaises(hvac.exceptions.Forbidden) as cm:
            self.hvac(plain, ns).auth.token.revoke_and_orphan_children(parent)
        self.assertEqual(cm.exception.errors, [ACL_PD])
        upd, _ = self.create(ns, policies=["orphaner"])
        with self.assertRaises(hvac.exceptions.InvalidRequest) as cm:
            self.hvac(upd, ns).auth.token.revoke_and_orphan_children(parent)
        self.assertEqual(cm.exception.errors,
                         ["root or sudo privileges required to revoke and orphan"])
        ok(self.lookup_self(parent, ns), 200)

        r = self.hvac(namespace=ns).auth.token.revoke_and_orphan_children(parent)
        self.assertEqual(r.status_code, 204)
        self.assertError(self.lookup_self(parent, ns), 403, PD)
        # the child survives without its parent link; its own child keeps its link
        self.assertIs(ok(self.lookup_self(child, ns), 200).data["orphan"], True)
        self.assertIs(ok(self.lookup_self(grandchild, ns), 200).data["orphan"], False)
        # a second time: the token is gone
        with self.assertRaises(hvac.exceptions.InvalidRequest) as cm:
            self.hvac(namespace=ns).auth.token.revoke_and_orphan_children(parent)
        self.assertEqual(cm.exception.errors, ["token to revoke not found"])
        # nor the path form (OpenBao serves none; a token in a URL is logged in clear)
        self.assertError(self.req("POST", "auth/token/revoke-orphan/s.not-a-token", {},
                                  namespace=ns), 404, UNSUPPORTED)
        self.assert_audited("auth/token/revoke-orphan", [parent, child, pacc, cacc], 204)

    def test_tidy_removes_expired(self):
        ns = self.ns()
        live, lacc = self.create(ns, policies=["default"], ttl="1h")
        dead, dacc = self.create(ns, policies=["default"], ttl=1)
        cli = self.hvac(namespace=ns)
        # expiry is lazy: wait until the list (which removes nothing) leaves the token out,
        # without a lookup of it (a lookup would remove it on the way)
        wait_for(lambda: dacc not in cli.auth.token.list_accessors()["data"]["keys"], 15,
                 "the 1 s token to expire")
        before = self.tokens_in_store()
        seen = self.server.log_text().count('"msg":"token tidy finished"')
        r = cli.auth.token.tidy()
        self.assertEqual(r.status_code, 202)
        self.assertIsNone(r.json()["data"])
        self.assertEqual(r.json()["warnings"], [TIDY_STARTED])
        # done when it answers: the expired record and its accessor entry are gone, nothing else
        self.assertEqual(self.tokens_in_store(), before - 1)
        # its counts are in the server log
        self.server.wait_log('"msg":"token tidy finished"', seen + 1)
        line = [l for l in self.server.log_text().splitlines() if "token tidy finished" in l][-1]
        self.assertEqual(json.loads(line)["path"], ns + "/auth/token/tidy")
        self.assertIn("tokens scanned 2, expired removed 1, revoked with a parent removed 0",
                      json.loads(line)["detail"])
        self.assertError(self.req("POST", "auth/token/lookup-accessor", {"accessor": dacc},
                                  namespace=ns), 400, "invalid accessor")
        ok(self.lookup_self(live, ns), 200)
        self.assertEqual(cli.auth.token.list_accessors()["data"]["keys"], [lacc])
        # update on the path is needed; no sudo
        plain, _ = self.create(ns, policies=["default"])
        with self.assertRaises(hvac.exceptions.Forbidden):
            self.hvac(plain, ns).auth.token.tidy()
        self.assert_audited("auth/token/tidy", [live, dead, lacc, dacc], 202)

    def test_list_accessors(self):
        ns = self.ns()
        cli = self.hvac(namespace=ns)
        # none: 404 with an empty errors list, as every list
        with self.assertRaises(hvac.exceptions.InvalidPath) as cm:
            cli.auth.token.list_accessors()
        self.assertEqual(cm.exception.errors, [])
        toks = [self.create(ns, policies=["default"], ttl="1h") for _ in range(3)]
        gone, gacc = toks.pop()
        ok(self.req("POST", "auth/token/revoke", {"token": gone}, namespace=ns))
        want = sorted(acc for _, acc in toks)
        r = cli.auth.token.list_accessors()
        self.assertEqual(r["data"], {"keys": want})
        r = ok(self.req("GET", "auth/token/accessors?list=true", namespace=ns), 200)
        self.assertEqual(r.data["keys"], want)
        # another namespace's tokens are not listed
        self.assertTrue(set(want).isdisjoint(self.hvac().auth.token.list_accessors()
                                             ["data"]["keys"]))
        # sudo-only: list alone is the ACL's 403
        self.policy(ns, "lister", 'path "auth/token/accessors" { capabilities = ["list"] }')
        self.policy(ns, "lister-sudo",
                    'path "auth/token/accessors" { capabilities = ["list", "sudo"] }')
        lister, lister_acc = self.create(ns, policies=["lister"])
        with self.assertRaises(hvac.exceptions.Forbidden) as cm:
            self.hvac(lister, ns).auth.token.list_accessors()
        self.assertEqual(cm.exception.errors, [ACL_PD])
        sudo, sudo_acc = self.create(ns, policies=["lister-sudo"])
        r = self.hvac(sudo, ns).auth.token.list_accessors()
        self.assertEqual(r["data"]["keys"], sorted(want + [lister_acc, sudo_acc]))
        self.assert_audited("auth/token/accessors/",
                            [t for t, _ in toks] + want + [gone, gacc, lister, sudo], 200)


if __name__ == "__main__":
    unittest.main()


class LongJwtAliasTest(KmsdTestCase):
    """A JWT's user claim may be long (an email, a URL): the login succeeds and keeps one
    entity per alias (long aliases name their entity record by digest)."""

    def test_long_user_claims(self):
        import time
        import jwt as pyjwt  # python3-jwt; missing is a failure, not a skip
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        mount = self.uniq("jwt")
        r = self.req("POST", "sys/auth/" + mount, {"type": "jwt"})
        self.assertIn(r.status, (200, 204), r.describe())
        key = ec.generate_private_key(ec.SECP256R1())
        pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        r = self.req("POST", "auth/%s/config" % mount, {"jwt_validation_pubkeys": [pub.decode()]})
        self.assertIn(r.status, (200, 204), r.describe())
        r = self.req("POST", "auth/%s/role/app" % mount,
                     {"role_type": "jwt", "user_claim": "email", "bound_audiences": ["kmsd"],
                      "token_policies": ["default"]})
        self.assertIn(r.status, (200, 204), r.describe())

        def login(email):
            now = int(time.time())
            t = pyjwt.encode({"email": email, "aud": "kmsd", "iat": now, "exp": now + 300}, key,
                             algorithm="ES256")
            r = self.req("POST", "auth/%s/login" % mount, {"role": "app", "jwt": t}, token=None)
            self.assertStatus(r, 200)
            return r.json["auth"]["entity_id"]

        long_a = "a" * 1000 + "@example.com"
        long_b = "a" * 1000 + "@example.org"
        ids = {e: login(e) for e in ("short@example.com", "b" * 200, long_a, long_b)}
        self.assertEqual(len(set(ids.values())), 4)
        for e, eid in ids.items():
            self.assertEqual(login(e), eid)  # the same alias, the same entity
