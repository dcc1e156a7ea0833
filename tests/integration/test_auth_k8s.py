"""Kubernetes ServiceAccount login against a real kmsd (reference auth-audit.md §1, §8 cases
1-13): the exact login response, the JWT attack matrix of issue 3 §6 (each refused with the
right status and message), role and config endpoints, JWKS keys (inline and
`kubectl get --raw /openid/v1/jwks` saved to a file), sys/auth.

Tokens are minted by a fake cluster issuer (auth_helpers.Issuer) exactly like projected
ServiceAccount tokens; kmsd is configured only through its Vault-compatible API.
"""

import json
import os
import re
import tempfile
import time
import unittest

from kmsd_harness import KmsdTestCase, UUID4_RE
from auth_helpers import (ISSUER, KEY, MOUNT, ORG, Issuer, b64u, hs256, login, make_role, ok,
                          setup_org, unsigned)

PD = "permission denied"
MSG_EXP = "invalid expiration time (exp) claim: token is expired"
MSG_NO_EXP = "invalid expiration time (exp) claim: token has no expiration time"
MSG_NBF = "invalid not before (nbf) claim: token not yet valid"
MSG_IAT = "invalid issued at (iat) claim: token issued in the future"
MSG_AUD = "invalid audience (aud) claim: audience claim does not match any expected audience"
MSG_ISS = "invalid issuer (iss) claim"
MSG_NAME = "service account name not authorized"
MSG_NS = "namespace not authorized"
ROLE = "developer-my-org"


class K8sLoginTest(KmsdTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        srv = cls.server
        cls.iss = Issuer()
        cls.attacker = Issuer(kid="attacker")
        cls.ec = Issuer(kind="ec", kid="ec-1")
        setup_org(srv, issuer=cls.iss)
        make_role(srv, ROLE, "kms-developer")
        make_role(srv, "any-aud", "kms-viewer", audience=None)
        make_role(srv, "globbed", "kms-viewer", sa="app-*", ns="team-*")
        make_role(srv, "everyone", "kms-viewer", sa="*", ns="*")
        make_role(srv, "cidr", "kms-viewer", token_bound_cidrs="10.0.0.0/8")
        make_role(srv, "by-name", "kms-viewer", alias_name_source="serviceaccount_name")
        # a mount that was enabled but never configured
        ok(srv.request("POST", "sys/auth/k8s-bare", {"type": "kubernetes"}, namespace=ORG))
        make_role(srv, ROLE, "kms-developer", mount="k8s-bare")
        # keys from a JWKS document: inline, and the kubectl output saved to a file
        cls.tmp = tempfile.mkdtemp(prefix="kmsd-jwks-")
        cls.jwks_file = os.path.join(cls.tmp, "jwks.json")
        with open(cls.jwks_file, "w") as f:
            json.dump(cls.ec.jwks(), f)
        ok(srv.request("POST", "sys/auth/k8s-jwks", {"type": "kubernetes"}, namespace=ORG))
        ok(srv.request("POST", "auth/k8s-jwks/config",
                       {"jwks": json.dumps(cls.iss.jwks()), "issuer": ISSUER}, namespace=ORG))
        make_role(srv, ROLE, "kms-developer", mount="k8s-jwks")
        # host files are named only by root-namespace configuration (the operator's)
        ok(srv.request("POST", "sys/auth/k8s-file", {"type": "kubernetes"}))
        ok(srv.request("POST", "auth/k8s-file/config", {"jwks_file": cls.jwks_file}))
        make_role(srv, ROLE, "default", org=None, mount="k8s-file")
        # a mount without issuer (legacy Secret tokens carry iss kubernetes/serviceaccount)
        ok(srv.request("POST", "sys/auth/k8s-legacy", {"type": "kubernetes"}, namespace=ORG))
        ok(srv.request("POST", "auth/k8s-legacy/config", {"pem_keys": [cls.iss.pem()]},
                       namespace=ORG))
        make_role(srv, ROLE, "kms-developer", mount="k8s-legacy", audience=None)

    # ---- helpers -------------------------------------------------------------------------
    def login(self, token, role=ROLE, mount=MOUNT):
        # the jwks_file mount lives in the root namespace
        return login(self.server, role, token, org=None if mount == "k8s-file" else ORG,
                     mount=mount)

    def refused(self, token, status=403, msg=PD, role=ROLE, mount=MOUNT):
        r = self.login(token, role=role, mount=mount)
        self.assertError(r, status, msg)
        return r

    def accepted(self, token, role=ROLE, mount=MOUNT):
        r = self.login(token, role=role, mount=mount)
        self.assertStatus(r, 200)
        return r.json["auth"]

    # ---- case 1: the response ------------------------------------------------------------
    def test_login_response_shape(self):
        r = self.login(self.iss.mint())
        self.assertStatus(r, 200)
        body = r.json
        self.assertEqual(set(body), {"request_id", "lease_id", "renewable", "lease_duration",
                                     "data", "wrap_info", "warnings", "auth"})
        self.assertIsNone(body["data"])
        self.assertIsNone(body["warnings"])
        a = body["auth"]
        self.assertEqual(list(a), ["client_token", "accessor", "policies", "token_policies",
                                   "metadata", "lease_duration", "renewable", "entity_id",
                                   "token_type", "orphan", "mfa_requirement", "num_uses"])
        ns_id = ok(self.req("GET", "sys/namespaces/" + ORG)).data["id"]
        self.assertRegex(a["client_token"], r"^s\.[0-9A-Za-z]{24}\.%s$" % ns_id)
        self.assertRegex(a["accessor"], r"^[0-9A-Za-z]{24}\.%s$" % ns_id)
        self.assertEqual(a["policies"], ["default", "kms-developer"])
        self.assertEqual(a["token_policies"], ["default", "kms-developer"])
        self.assertEqual(a["metadata"], {
            "role": ROLE, "service_account_name": "app",
            "service_account_namespace": "my-project", "service_account_secret_name": "",
            "service_account_uid": "9b1c5a52-7b0e-4f37-a3f4-3c2e5f0d1a11"})
        self.assertEqual(a["lease_duration"], 3600)
        self.assertIs(a["renewable"], True)
        self.assertRegex(a["entity_id"], UUID4_RE)
        self.assertEqual(a["token_type"], "service")
        self.assertIs(a["orphan"], True)
        self.assertIsNone(a["mfa_requirement"])
        self.assertEqual(a["num_uses"], 0)
        # display name <mount>-<ns>-<sa>; the same SA keeps its entity
        d = ok(self.req("GET", "auth/token/lookup-self", token=a["client_token"],
                        namespace=ORG), 200).data
        self.assertEqual(d["display_name"], "k8s-host-my-project-app")
        self.assertEqual(d["path"], "auth/k8s-host/login")
        self.assertEqual(d["namespace_path"], ORG + "/")
        again = self.accepted(self.iss.mint())
        self.assertEqual(again["entity_id"], a["entity_id"])
        self.assertNotEqual(again["client_token"], a["client_token"])

    def test_es256_and_jwks(self):
        # inline JWKS (RSA, kid) and a JWKS file (EC, as kubectl prints it)
        self.accepted(self.iss.mint(), mount="k8s-jwks")
        self.accepted(self.ec.mint(), mount="k8s-file")
        self.refused(self.iss.mint(), mount="k8s-file")
        # kid selects the JWKS key: an unknown kid, or a key not in the set, is refused
        self.refused(self.attacker.mint(), mount="k8s-jwks")
        self.refused(self.attacker.mint(headers={"kid": self.iss.kid}), mount="k8s-jwks")
        self.refused(self.iss.mint(headers={"kid": "unknown"}), mount="k8s-jwks")
        # the file is re-read at login: rotate to the RSA issuer's JWKS
        with open(self.jwks_file, "w") as f:
            json.dump({"keys": self.iss.jwks()["keys"] + self.ec.jwks()["keys"]}, f)
        try:
            self.accepted(self.iss.mint(), mount="k8s-file")
        finally:
            with open(self.jwks_file, "w") as f:
                json.dump(self.ec.jwks(), f)

    # ---- cases 2-5: signatures and algorithms ---------------------------------------------
    def test_attack_matrix_signatures(self):
        good = self.iss.mint()
        h, p, s = good.split(".")
        claims = self.iss.claims()
        sig = bytearray(s.encode())
        sig[5] = ord("A") if sig[5] != ord("A") else ord("B")
        tampered = dict(claims, sub="system:serviceaccount:my-project:admin")
        cases = {
            "alg none": unsigned(claims),
            "alg None": unsigned(claims, "None"),
            "alg NONE + sig": unsigned(claims, "NONE", b64u("sig")),
            "alg none + good sig": unsigned(claims, "none", s),
            "HS256 keyed with the PEM": hs256(self.iss.pem().encode(), claims),
            "HS384 keyed with the PEM": hs256(self.iss.pem().encode(), claims, "HS384"),
            "HS512 keyed with the PEM": hs256(self.iss.pem().encode(), claims, "HS512"),
            "HS256 keyed with the DER": hs256(self.iss.der(), claims),
            "wrong key": self.attacker.mint(),
            "tampered payload": h + "." + b64u(json.dumps(tampered)) + "." + s,
            "signature byte flipped": h + "." + p + "." + sig.decode(),
            "empty signature": h + "." + p + ".",
            "two parts": h + "." + p,
            "four parts": good + "." + s,
            "bad base64": h + "." + p[:-1] + "!" + "." + s,
            "padded base64": h + "." + p + "==." + s,
            "jwk/jku/x5u header": self.attacker.mint(headers={
                "jwk": self.attacker.jwks()["keys"][0], "jku": "https://evil.example/jwks",
                "x5u": "https://evil.example/c.pem", "kid": "attacker"}),
            "x5c header": self.attacker.mint(headers={"x5c": ["MIIB"]}),
            "ES256 by an unknown EC key": self.ec.mint(),
            "crit header": self.iss.mint(headers={"crit": ["exp"], "exp": 1}),
            "garbage": "not-a-jwt",
            "over 16 KiB": self.iss.sign(dict(claims, pad="x" * 17000)),
        }
        for name, token in cases.items():
            with self.subTest(name):
                self.refused(token)
        # an RS256 header over an ES256 signature, and the reverse
        eh = b64u(json.dumps({"alg": "RS256", "kid": "ec-1"}))
        es = self.ec.sign(claims).split(".")
        self.refused(eh + "." + es[1] + "." + es[2], mount="k8s-file")
        rh = b64u(json.dumps({"alg": "ES256"}))
        self.refused(rh + "." + p + "." + s)
        # and the real thing still works
        self.accepted(good)

    # ---- case 6: time claims --------------------------------------------------------------
    def test_time_claims(self):
        # The server reads the wall clock, so each case stays 30 s or more away from the 60 s
        # leeway's edge: a case at the edge would turn on which second the request lands in.
        # The exact edges (59 s in, 60 s out) are checked against an injected clock in
        # tests/auth/test_jwt.c.
        now = int(time.time())
        self.refused(self.iss.mint(now=now - 3600 - 90, exp_in=3600), msg=MSG_EXP)
        self.accepted(self.iss.mint(now=now - 3600 - 30, exp_in=3600))  # 30 s past exp
        c = self.iss.claims()
        c["nbf"] = now + 90
        self.refused(self.iss.sign(c), msg=MSG_NBF)
        c["nbf"] = now + 30
        self.accepted(self.iss.sign(c))
        c = self.iss.claims()
        c["iat"] = now + 90
        self.refused(self.iss.sign(c), msg=MSG_IAT)
        c = self.iss.claims()
        del c["exp"]
        self.refused(self.iss.sign(c), msg=MSG_NO_EXP)
        del_all = self.iss.claims()
        for k in ("exp", "iat", "nbf"):
            del del_all[k]
        self.refused(self.iss.sign(del_all), msg=MSG_NO_EXP)
        c = self.iss.claims()
        c["exp"] = str(c["exp"])
        self.refused(self.iss.sign(c))
        # order: signature, alg, iss, aud, nbf, exp, iat
        self.refused(self.iss.mint(now=now - 7200, aud=["vault"]), msg=MSG_AUD)
        c = self.iss.claims(aud=["vault"], now=now - 7200)
        c["iss"] = "https://evil.example"
        self.refused(self.iss.sign(c), msg=MSG_ISS)

    # ---- case 7: audience ---------------------------------------------------------------------
    def test_audience(self):
        self.accepted(self.iss.mint(aud=["openbao"]))
        self.accepted(self.iss.mint(aud=["https://kubernetes.default.svc", "openbao"]))
        self.accepted(self.iss.mint(aud="openbao"))  # RFC 7519 string form (upstream: 500)
        self.refused(self.iss.mint(aud=["vault"]), msg=MSG_AUD)
        self.refused(self.iss.mint(aud=[]), msg=MSG_AUD)
        c = self.iss.claims()
        del c["aud"]
        self.refused(self.iss.sign(c), msg=MSG_AUD)
        self.refused(self.iss.mint(aud=["openbao2"]), msg=MSG_AUD)
        # a role with no audience takes any
        self.accepted(self.iss.mint(aud=["anything"]), role="any-aud")
        c = self.iss.claims()
        del c["aud"]
        self.accepted(self.iss.sign(c), role="any-aud")

    def test_issuer(self):
        c = self.iss.claims()
        c["iss"] = "https://evil.example"
        self.refused(self.iss.sign(c), msg=MSG_ISS)
        del c["iss"]
        self.refused(self.iss.sign(c), msg=MSG_ISS)

    # ---- case 8: bindings ---------------------------------------------------------------------
    def test_bindings(self):
        self.refused(self.iss.mint(sa="intruder"), msg=MSG_NAME)
        self.refused(self.iss.mint(ns="kube-system"), msg=MSG_NS)
        self.refused(self.iss.mint(sa="intruder", ns="kube-system"), msg=MSG_NAME)
        self.accepted(self.iss.mint(sa="app-x", ns="team-a"), role="globbed")
        self.refused(self.iss.mint(sa="xapp", ns="team-a"), role="globbed", msg=MSG_NAME)
        self.refused(self.iss.mint(sa="app-x", ns="teams"), role="globbed", msg=MSG_NS)
        self.accepted(self.iss.mint(sa="whoever", ns="wherever"), role="everyone")

    def test_mount_tune_bounds_token_ttls(self):
        """The auth method's tuned default_lease_ttl and max_lease_ttl bound its tokens, at
        login and at every renewal, as OpenBao's CalculateTTL reads them from the mount; they
        used to be stored and shown but change nothing."""
        srv = self.server
        ok(srv.request("POST", "sys/auth/k8s-tuned", {"type": "kubernetes"}, namespace=ORG))
        ok(srv.request("POST", "auth/k8s-tuned/config",
                       {"pem_keys": [self.iss.pem()], "issuer": ISSUER}, namespace=ORG))
        make_role(srv, "plain", "kms-viewer", mount="k8s-tuned")
        make_role(srv, "long", "kms-viewer", mount="k8s-tuned", token_ttl="2h")
        ok(srv.request("POST", "sys/auth/k8s-tuned/tune",
                       {"default_lease_ttl": "5m", "max_lease_ttl": "10m"}, namespace=ORG))
        # no token_ttl: the mount's default
        r = self.login(self.iss.mint(), role="plain", mount="k8s-tuned")
        self.assertStatus(r, 200)
        self.assertEqual(r.json["auth"]["lease_duration"], 300)
        self.assertIsNone(r.json["warnings"])
        # a token_ttl above the mount's max: capped, with OpenBao's warning
        r = self.login(self.iss.mint(), role="long", mount="k8s-tuned")
        self.assertStatus(r, 200)
        self.assertEqual(r.json["auth"]["lease_duration"], 600)
        self.assertEqual(r.json["warnings"], ['TTL of "2h" exceeded the effective max_ttl of '
                                              '"10m"; TTL value is capped accordingly'])
        tok = r.json["auth"]["client_token"]
        d = ok(srv.request("GET", "auth/token/lookup-self", token=tok, namespace=ORG), 200).data
        self.assertLessEqual(d["ttl"], 600)
        # a renewal is bounded by the mount's max, measured from the token's creation
        r = ok(srv.request("POST", "auth/token/renew-self", {"increment": "1h"}, token=tok,
                           namespace=ORG), 200)
        self.assertLessEqual(r.json["auth"]["lease_duration"], 600)
        self.assertEqual(len(r.warnings), 1)
        self.assertRegex(r.warnings[0], r'^TTL of "1h" exceeded the effective max_ttl of ')
        # the tune through sys/mounts is the same setting; "system" resets it
        ok(srv.request("POST", "sys/mounts/auth/k8s-tuned/tune", {"max_lease_ttl": "20m"},
                       namespace=ORG))
        r = self.login(self.iss.mint(), role="long", mount="k8s-tuned")
        self.assertEqual(r.json["auth"]["lease_duration"], 1200)
        ok(srv.request("POST", "sys/auth/k8s-tuned/tune",
                       {"default_lease_ttl": "system", "max_lease_ttl": "system"},
                       namespace=ORG))
        r = self.login(self.iss.mint(), role="long", mount="k8s-tuned")
        self.assertEqual(r.json["auth"]["lease_duration"], 7200)
        r = self.login(self.iss.mint(), role="plain", mount="k8s-tuned")
        self.assertEqual(r.json["auth"]["lease_duration"], 3600)

    def test_malformed_body_echoes_no_secret(self):
        """A body that does not parse is refused without quoting it: the parser's "near '...'"
        text was the JWT (or token, or plaintext) itself."""
        jwt_ = self.iss.mint()
        tok = self.accepted(self.iss.mint())["client_token"]
        bodies = [
            ("auth/k8s-host/login", None, '{"role":"%s","jwt":"%s' % (ROLE, jwt_)),
            ("auth/k8s-host/login", None, '{"role":"%s","jwt":"%s"} trailing' % (ROLE, jwt_)),
            ("auth/k8s-host/login", None, '{"role":"%s","jwt":%s}' % (ROLE, jwt_)),
            ("auth/token/lookup", self.server.root_token, '{"token":"%s' % tok),
            ("transit/encrypt/" + KEY, self.server.root_token, '{"plaintext":"c2VjcmV0LXBsYWludGV4dA=='),
            # short values were quoted whole ("premature end of input near '"aHVudGVyMg=='")
            ("transit/encrypt/" + KEY, self.server.root_token, '{"plaintext":"aHVudGVyMg=='),
            ("transit/encrypt/" + KEY, self.server.root_token, '{"plaintext":aHVudGVyMg==}'),
        ]
        for path, auth, body in bodies:
            with self.subTest(body=body[:40]):
                r = self.server.request("POST", path, body, token=auth, namespace=ORG)
                self.assertStatus(r, 400)
                msg = r.errors[0]
                self.assertTrue(msg.startswith("failed to decode JSON input: "), msg)
                for secret in (jwt_, tok, "c2VjcmV0LXBsYWludGV4dA", "aHVudGVyMg"):
                    for part in secret.split("."):
                        if len(part) >= 8:
                            self.assertNotIn(part[:8], msg)
                self.assertRegex(msg, r" at line 1, column \d+$")
        # a duplicate key still names the key (never a value)
        r = self.server.request("POST", "auth/k8s-host/login",
                                '{"role":"%s","jwt":"%s","jwt":"x"}' % (ROLE, jwt_), token=None,
                                namespace=ORG)
        self.assertError(r, 400, "failed to decode JSON input: duplicate object key near "
                                 "'\"jwt\"'")

    def test_role_token_limits(self):
        """A role cannot list more policies or CIDR blocks than a token holds: more CIDRs used
        to give tokens that were refused on every use, more policies a role no login could
        use."""
        body = {"bound_service_account_names": "app", "bound_service_account_namespaces": "*",
                "audience": "openbao"}
        r = self.server.request("POST", "auth/k8s-host/role/too-many-cidrs",
                                dict(body, token_bound_cidrs=["10.%d.0.0/16" % i for i in range(8)]
                                     + ["127.0.0.0/8"]), namespace=ORG)
        self.assertError(r, 400, "too many CIDR blocks in token_bound_cidrs (at most 8)")
        r = self.server.request("POST", "auth/k8s-host/role/too-many-policies",
                                dict(body, token_policies=["p%d" % i for i in range(33)]),
                                namespace=ORG)
        self.assertError(r, 400, "too many token_policies (at most 32)")
        for name in ("too-many-cidrs", "too-many-policies"):
            self.assertStatus(self.server.request("GET", "auth/k8s-host/role/" + name,
                                                  namespace=ORG), 404)
        # at the limit: the login's token is usable from the eighth block
        make_role(self.server, "eight-cidrs", "kms-viewer", ns="*",
                  token_bound_cidrs=["10.%d.0.0/16" % i for i in range(7)] + ["127.0.0.0/8"])
        tok = self.accepted(self.iss.mint(), role="eight-cidrs")["client_token"]
        ok(self.server.request("GET", "auth/token/lookup-self", token=tok, namespace=ORG), 200)

    def test_long_binding_lists(self):
        """Every entry of a role's bindings counts, however many it lists (a login used to
        look at the first 64 only, refusing a service account bound further down)."""
        names = ["sa-%d" % i for i in range(100)] + ["app"]
        spaces = ["ns-%d" % i for i in range(100)] + ["my-project"]
        make_role(self.server, "long-lists", "kms-viewer", sa=names, ns=spaces)
        self.accepted(self.iss.mint(), role="long-lists")
        self.accepted(self.iss.mint(sa="sa-99", ns="ns-99"), role="long-lists")
        self.refused(self.iss.mint(sa="sa-100"), role="long-lists", msg=MSG_NAME)
        self.refused(self.iss.mint(ns="ns-100"), role="long-lists", msg=MSG_NS)

    # ---- case 9: request and config errors ----------------------------------------------------
    def test_request_errors(self):
        t = self.iss.mint()
        self.assertError(self.server.request("POST", "auth/k8s-host/login", {"jwt": t},
                                             token=None, namespace=ORG), 400, "missing role")
        self.assertError(self.server.request("POST", "auth/k8s-host/login", {"role": ROLE},
                                             token=None, namespace=ORG), 400, "missing jwt")
        self.assertError(self.server.request("POST", "auth/k8s-host/login",
                                             {"role": "", "jwt": t}, token=None,
                                             namespace=ORG), 400, "missing role")
        self.refused(t, role="x", status=400, msg='invalid role name "x"')
        self.refused(t, role='we"ird', status=400, msg='invalid role name "we\\"ird"')
        # role names are looked up lower-cased; metadata keeps the name as given
        a = self.accepted(t, role="Developer-My-Org")
        self.assertEqual(a["metadata"]["role"], "Developer-My-Org")
        self.refused(t, mount="k8s-bare", status=500,
                     msg="could not load backend configuration")
        # the mount exists in my-org, not in the root namespace: there the path is not a
        # login path, so the missing token is what fails (as in Vault)
        r = self.server.request("POST", "auth/k8s-host/login", {"role": ROLE, "jwt": t},
                                token=None)
        self.assertError(r, 403, PD)
        # a login is public: a bad token header does not matter
        r = self.server.request("POST", "auth/k8s-host/login", {"role": ROLE, "jwt": t},
                                token="garbage", namespace=ORG)
        self.assertStatus(r, 200)

    # ---- cases 10-11: claim shapes and hardening ---------------------------------------------
    def test_claim_shapes(self):
        uid = "0e6b1e2c-aaaa-4bbb-8ccc-000000000042"
        legacy = {"iss": "kubernetes/serviceaccount",
                  "kubernetes.io/serviceaccount/namespace": "my-project",
                  "kubernetes.io/serviceaccount/secret.name": "app-token-x7k2p",
                  "kubernetes.io/serviceaccount/service-account.name": "app",
                  "kubernetes.io/serviceaccount/service-account.uid": uid,
                  "sub": "system:serviceaccount:my-project:app"}
        self.refused(self.iss.sign(legacy), mount="k8s-legacy", msg=MSG_NO_EXP)
        a = self.accepted(self.iss.sign(dict(legacy, exp=int(time.time()) + 600)),
                          mount="k8s-legacy")
        self.assertEqual(a["metadata"]["service_account_secret_name"], "app-token-x7k2p")
        self.assertEqual(a["metadata"]["service_account_uid"], uid)
        # legacy and projected disagree: the projected claims are used
        mixed = self.iss.claims()
        mixed["kubernetes.io/serviceaccount/namespace"] = "kube-system"
        mixed["kubernetes.io/serviceaccount/service-account.name"] = "admin"
        a = self.accepted(self.iss.sign(mixed))
        self.assertEqual(a["metadata"]["service_account_namespace"], "my-project")
        # kubernetes.io without serviceaccount
        c = self.iss.claims()
        del c["kubernetes.io"]["serviceaccount"]
        self.refused(self.iss.sign(c), role="everyone", status=500,
                     msg="could not parse UID from claims")
        # sub disagreeing with the claims, or missing
        self.refused(self.iss.sign(dict(self.iss.claims(),
                                        sub="system:serviceaccount:my-project:admin")))
        self.refused(self.iss.sign(dict(self.iss.claims(), sub="app")))
        c = self.iss.claims()
        del c["sub"]
        self.refused(self.iss.sign(c))

    def test_hardening(self):
        base = json.dumps(self.iss.claims())
        dup_exp = base[:-1] + ', "exp": %d}' % (int(time.time()) + 10 ** 8)
        dup_k8s = base[:-1] + (', "kubernetes.io": {"namespace": "kube-system", '
                               '"serviceaccount": {"name": "admin", "uid": "x"}}}')
        hdr = {"alg": "RS256", "kid": self.iss.kid}
        self.refused(self.iss.sign_raw(hdr, dup_exp))
        self.refused(self.iss.sign_raw(hdr, dup_k8s))
        self.refused(self.iss.sign_raw('{"alg":"RS256","alg":"HS256"}', base))
        self.refused(self.iss.sign(dict(self.iss.claims(), EXP=1)),
                     msg='ambiguous claim: key "EXP" collides with registered claim "exp" '
                         'under case folding')
        self.refused(self.iss.sign(dict(self.iss.claims(), Aud="x")),
                     msg='ambiguous claim: key "Aud" collides with registered claim "aud" '
                         'under case folding')
        self.refused(self.iss.sign_raw(hdr, base[:-1] + ', "x": "a\\u0000b"}'))
        self.refused(self.iss.sign_raw(hdr, base[:-1] + ', "d": ' + "[" * 50 + "]" * 50 + "}"))
        # non-UTF-8 bytes in the payload
        h = b64u(json.dumps(hdr))
        p = b64u(base.encode()[:-1] + b', "x": "\xff"}')
        self.refused(h + "." + p + "." + self.iss.mint().split(".")[2])
        # a JWT with whitespace around (a file read with its newline) is fine, as go-jose
        self.accepted(self.iss.mint() + "\n")

    # ---- case 12: bound CIDRs ------------------------------------------------------------------
    def test_bound_cidrs(self):
        self.refused(self.iss.mint(), role="cidr")
        make_role(self.server, "cidr-local", "kms-viewer", token_bound_cidrs="127.0.0.0/8")
        a = self.accepted(self.iss.mint(), role="cidr-local")
        ok(self.req("GET", "auth/token/lookup-self", token=a["client_token"], namespace=ORG), 200)

    # ---- roles and config ----------------------------------------------------------------------
    def test_role_crud(self):
        srv = self.server
        r = srv.request("POST", "auth/k8s-host/role/crud",
                        {"bound_service_account_names": ["a", "b"],
                         "bound_service_account_namespaces": "ns1,ns2",
                         "policies": "p1,P2", "ttl": "1h", "max_ttl": 7200, "audience": "openbao"},
                        namespace=ORG)
        self.assertStatus(r, 204)
        d = ok(srv.request("GET", "auth/k8s-host/role/CRUD", namespace=ORG), 200).data
        self.assertEqual(d["bound_service_account_names"], ["a", "b"])
        self.assertEqual(d["bound_service_account_namespaces"], ["ns1", "ns2"])
        self.assertEqual(d["token_policies"], ["p1", "P2"])
        self.assertEqual(d["policies"], ["p1", "P2"])
        self.assertEqual(d["token_ttl"], 3600)
        self.assertEqual(d["ttl"], 3600)
        self.assertEqual(d["token_max_ttl"], 7200)
        self.assertEqual(d["audience"], "openbao")
        self.assertEqual(d["alias_name_source"], "serviceaccount_uid")
        self.assertEqual(d["token_type"], "default-service")
        self.assertNotIn("period", d)
        # update only what is sent
        self.assertStatus(srv.request("POST", "auth/k8s-host/role/crud", {"token_ttl": 60},
                                      namespace=ORG), 204)
        d = ok(srv.request("GET", "auth/k8s-host/role/crud", namespace=ORG), 200).data
        self.assertEqual(d["token_ttl"], 60)
        self.assertNotIn("ttl", d)
        self.assertEqual(d["bound_service_account_names"], ["a", "b"])
        keys = ok(srv.request("LIST", "auth/k8s-host/role", namespace=ORG), 200).data["keys"]
        self.assertIn("crud", keys)
        self.assertEqual(keys, sorted(keys))
        self.assertEqual(ok(srv.request("GET", "auth/k8s-host/role?list=true",
                                        namespace=ORG), 200).data["keys"], keys)
        self.assertStatus(srv.request("DELETE", "auth/k8s-host/role/crud", namespace=ORG), 204)
        self.assertStatus(srv.request("GET", "auth/k8s-host/role/crud", namespace=ORG), 404)
        errors = [
            ({"bound_service_account_names": "*,x", "bound_service_account_namespaces": "*"},
             'can not mix "*" with values'),
            ({"bound_service_account_names": "x", "bound_service_account_namespaces": "*,y"},
             'can not mix "*" with values'),
            ({"bound_service_account_namespaces": "x"},
             '"bound_service_account_names" can not be empty'),
            ({"bound_service_account_names": "x"},
             '"bound_service_account_namespaces" can not be empty if '
             '"bound_service_account_namespace_selector" is not set'),
            ({"bound_service_account_names": "x", "bound_service_account_namespaces": "y",
              "token_ttl": 7200, "token_max_ttl": 3600},
             "token ttl should not be greater than token max ttl"),
            ({"bound_service_account_names": "x", "bound_service_account_namespaces": "y",
              "policies": "a", "token_policies": "b"},
             'Cannot specify both "policies" and "token_policies"'),
        ]
        for body, msg in errors:
            with self.subTest(msg):
                self.assertError(srv.request("POST", "auth/k8s-host/role/bad", body,
                                             namespace=ORG), 400, msg)
        for body in ({"bound_service_account_names": "x", "bound_service_account_namespaces": "y",
                      "token_type": "batch"},
                     {"bound_service_account_names": "x",
                      "bound_service_account_namespace_selector": '{"matchLabels":{"a":"b"}}'},
                     {"bound_service_account_names": "x", "bound_service_account_namespaces": "y",
                      "alias_name_source": "nope"},
                     {"bound_service_account_names": "x", "bound_service_account_namespaces": "y",
                      "token_bound_cidrs": "not-a-cidr"}):
            self.assertStatus(srv.request("POST", "auth/k8s-host/role/bad", body,
                                          namespace=ORG), 400)
        # no audience: written, with a warning
        r = srv.request("POST", "auth/k8s-host/role/noaud",
                        {"bound_service_account_names": "x",
                         "bound_service_account_namespaces": "y"}, namespace=ORG)
        self.assertStatus(r, 200)
        self.assertEqual(len(r.warnings), 1)
        self.assertIn("audience", r.warnings[0])
        self.assertIsNone(r.json["data"])

    def test_config(self):
        srv = self.server
        self.assertStatus(srv.request("GET", "auth/k8s-bare/config", namespace=ORG), 404)
        d = ok(srv.request("GET", "auth/k8s-host/config", namespace=ORG), 200).data
        self.assertEqual(d["pem_keys"], [self.iss.pem()])
        self.assertEqual(d["issuer"], ISSUER)
        self.assertIs(d["token_reviewer_jwt_set"], False)
        self.assertNotIn("token_reviewer_jwt", d)
        ok(srv.request("POST", "sys/auth/k8s-cfg", {"type": "kubernetes"}, namespace=ORG))
        r = srv.request("POST", "auth/k8s-cfg/config",
                        {"pem_keys": [self.iss.pem()], "token_reviewer_jwt": "secret-jwt"},
                        namespace=ORG)
        self.assertStatus(r, 204)
        d = ok(srv.request("GET", "auth/k8s-cfg/config", namespace=ORG), 200).data
        self.assertIs(d["token_reviewer_jwt_set"], True)
        self.assertNotIn("secret-jwt", json.dumps(d))
        for body in ({"pem_keys": ["-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"]},
                     {"kubernetes_host": "https://k"},
                     {"jwks": "{\"keys\":[]}"},
                     {"jwks": "not json"},
                     {"jwks_file": "/nonexistent/jwks.json"}):
            self.assertStatus(srv.request("POST", "auth/k8s-cfg/config", body, namespace=ORG),
                              400)
        r = srv.request("POST", "auth/k8s-cfg/config", {"kubernetes_host": "https://k"},
                        namespace=ORG)
        self.assertIn("offline", r.errors[0])
        # an organization cannot name host files: refused whether the path exists or not,
        # with the same message, before anything is opened
        msgs = set()
        for path in (self.jwks_file, "/etc/passwd", "/nonexistent/jwks.json"):
            r = srv.request("POST", "auth/k8s-cfg/config", {"jwks_file": path}, namespace=ORG)
            self.assertStatus(r, 400)
            msgs.add(r.errors[0])
        self.assertEqual(len(msgs), 1, msgs)
        self.assertIn("root namespace", msgs.pop())
        # in the root namespace: a FIFO, a directory and a missing file get one message
        # naming no errno, and a FIFO never blocks the worker
        fifo = os.path.join(self.tmp, "fifo")
        os.mkfifo(fifo)
        ok(srv.request("POST", "sys/auth/k8s-root-cfg", {"type": "kubernetes"}))
        texts = set()
        for path in (fifo, self.tmp, "/nonexistent/jwks.json"):
            r = srv.request("POST", "auth/k8s-root-cfg/config", {"jwks_file": path}, timeout=10)
            self.assertStatus(r, 400)
            texts.add(r.errors[0].replace(path, "<path>"))
        self.assertEqual(len(texts), 1, texts)
        self.assertNotIn("No such file", texts.pop())
        # the JWKS may also be sent as a JSON object
        self.assertStatus(srv.request("POST", "auth/k8s-cfg/config", {"jwks": self.iss.jwks()},
                                      namespace=ORG), 204)

    def test_sys_auth(self):
        srv = self.server
        r = ok(srv.request("GET", "sys/auth", namespace=ORG), 200)
        self.assertIn("k8s-host/", r.data)
        self.assertIn("token/", r.data)
        self.assertEqual(r.data["k8s-host/"]["type"], "kubernetes")
        self.assertIn("k8s-host/", r.json)  # sys/ responses copy data to the top level
        self.assertNotIn("transit/", r.data)
        self.assertError(srv.request("POST", "sys/auth/x", {"type": "ldap"}, namespace=ORG),
                         400, "plugin not found in the catalog: ldap")
        self.assertError(srv.request("POST", "sys/auth/token", {"type": "kubernetes"},
                                     namespace=ORG), 400, "path is already in use at auth/token/")
        # nor below it, nor below the built-in KMSKey API: no request could reach such a mount
        self.assertError(srv.request("POST", "sys/auth/token/x", {"type": "kubernetes"},
                                     namespace=ORG), 400, "path is already in use at auth/token/")
        for path in ("kms", "kms/x"):
            self.assertError(srv.request("POST", "sys/mounts/" + path, {"type": "transit"},
                                         namespace=ORG), 400, "path is already in use at kms/")
        self.assertNotIn("token/x/", ok(srv.request("GET", "sys/auth", namespace=ORG), 200).data)
        ok(srv.request("POST", "sys/mounts/t-kms", {"type": "transit"}, namespace=ORG))
        for to in ("kms", "kms/x"):
            self.assertError(srv.request("POST", "sys/remount", {"from": "t-kms", "to": to},
                                         namespace=ORG), 400,
                             "cannot remount to destination %s/" % to)
        ok(srv.request("DELETE", "sys/mounts/t-kms", namespace=ORG))
        self.assertStatus(srv.request("POST", "sys/auth/k8s-host", {"type": "kubernetes"},
                                      namespace=ORG), 400)
        # per namespace: the root namespace has no k8s-host
        self.assertNotIn("k8s-host/", ok(srv.request("GET", "sys/auth"), 200).data)
        # disabling a mount revokes its tokens and drops its roles
        ok(srv.request("POST", "sys/auth/k8s-tmp", {"type": "kubernetes"}, namespace=ORG))
        ok(srv.request("POST", "auth/k8s-tmp/config", {"pem_keys": [self.iss.pem()]},
                       namespace=ORG))
        make_role(srv, "r", "kms-viewer", mount="k8s-tmp")
        tok = self.accepted(self.iss.mint(), role="r", mount="k8s-tmp")["client_token"]
        ok(srv.request("GET", "auth/token/lookup-self", token=tok, namespace=ORG), 200)
        self.assertStatus(srv.request("DELETE", "sys/auth/k8s-tmp", namespace=ORG), 204)
        self.assertError(srv.request("GET", "auth/token/lookup-self", token=tok, namespace=ORG),
                         403, PD)
        self.assertStatus(srv.request("DELETE", "sys/auth/k8s-tmp", namespace=ORG), 204)
        ok(srv.request("POST", "sys/auth/k8s-tmp", {"type": "kubernetes"}, namespace=ORG))
        self.assertStatus(srv.request("GET", "auth/k8s-tmp/role/r", namespace=ORG), 404)
        # sys/auth/<path> is root-protected: a login token cannot enable mounts
        tok = self.accepted(self.iss.mint())["client_token"]
        self.assertError(srv.request("POST", "sys/auth/evil", {"type": "kubernetes"},
                                     token=tok, namespace=ORG),
                         403, "1 error occurred:\n\t* permission denied\n\n")


class JwtMethodTest(KmsdTestCase):
    """The jwt method: people logging in with an OIDC token from the platform."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        srv = cls.server
        cls.idp = Issuer(issuer="https://login.kube-dc.example")
        ok(srv.request("POST", "sys/namespaces/" + ORG, {}))
        ok(srv.request("POST", "sys/auth/oidc", {"type": "jwt"}, namespace=ORG))
        ok(srv.request("POST", "auth/oidc/config",
                       {"jwt_validation_pubkeys": [cls.idp.pem()],
                        "bound_issuer": cls.idp.issuer, "default_role": "people"},
                       namespace=ORG))
        ok(srv.request("POST", "auth/oidc/role/people",
                       {"role_type": "jwt", "user_claim": "email", "bound_audiences": "kube-dc",
                        "bound_claims": {"groups": ["my-org:developers", "my-org:admins"]},
                        "groups_claim": "groups", "claim_mappings": {"name": "full_name"},
                        "token_policies": "kms-viewer", "token_ttl": "30m"},
                       namespace=ORG))

    def person(self, **over):
        c = {"iss": self.idp.issuer, "aud": "kube-dc", "sub": "u-123",
             "email": "dev@example.com", "name": "Dee Veloper",
             "groups": ["my-org:developers"], "iat": int(time.time()),
             "exp": int(time.time()) + 600}
        c.update(over)
        return self.idp.sign({k: v for k, v in c.items() if v is not None})

    def jlogin(self, token, role="people"):
        body = {"jwt": token}
        if role is not None:
            body["role"] = role
        return self.server.request("POST", "auth/oidc/login", body, token=None, namespace=ORG)

    def test_login(self):
        r = self.jlogin(self.person(), role=None)  # default_role
        self.assertStatus(r, 200)
        a = r.json["auth"]
        self.assertEqual(a["policies"], ["default", "kms-viewer"])
        self.assertEqual(a["metadata"], {"role": "people", "full_name": "Dee Veloper"})
        self.assertEqual(a["lease_duration"], 1800)
        d = ok(self.req("GET", "auth/token/lookup-self", token=a["client_token"],
                        namespace=ORG), 200).data
        self.assertEqual(d["display_name"], "oidc-dev@example.com")

    def test_long_pointer_segment_names_no_other_claim(self):
        """A JSON-pointer segment longer than kmsd reads names no claim; it used to be cut to
        255 bytes and match the claim with that shorter name."""
        long_name = "a" * 300
        ok(self.server.request("POST", "auth/oidc/role/long-pointer",
                               {"role_type": "jwt", "user_claim": "email",
                                "bound_audiences": "kube-dc",
                                "bound_claims": {"/" + long_name: "yes"},
                                "token_policies": "kms-viewer"}, namespace=ORG))
        r = self.jlogin(self.person(**{long_name[:255]: "yes"}), role="long-pointer")
        self.assertError(r, 400, 'error validating claims: claim "/%s" is missing' % long_name)

    def test_long_audience_list(self):
        """Every bound audience counts (a login used to look at the first 64 only)."""
        ok(self.server.request("POST", "auth/oidc/role/many-auds",
                               {"role_type": "jwt", "user_claim": "email",
                                "bound_audiences": ["aud-%d" % i for i in range(100)],
                                "token_policies": "kms-viewer"}, namespace=ORG))
        self.assertStatus(self.jlogin(self.person(aud="aud-99"), role="many-auds"), 200)
        self.assertError(self.jlogin(self.person(aud="aud-100"), role="many-auds"), 400,
                         "error validating token: " + MSG_AUD)

    def test_refusals(self):
        cases = [
            (self.person(aud="other"), 400,
             "error validating token: " + MSG_AUD),
            (self.person(iss="https://evil.example"), 400,
             "error validating token: " + MSG_ISS),
            (self.person(exp=int(time.time()) - 3600), 400,
             "error validating token: " + MSG_EXP),
            (self.person(groups=["other:devs"]), 400,
             'error validating claims: claim "groups" does not match any associated bound '
             'claim values'),
            (self.person(email=None), 400, 'claim "email" not found in token'),
            (self.person(email=5), 400, 'claim "email" could not be converted to string'),
            # no identity is no identity (it logged in as "oidc", like every other empty one)
            (self.person(email=""), 400, 'claim "email" is empty'),
            (Issuer().sign({"aud": "kube-dc", "exp": int(time.time()) + 60}), 400,
             "error validating token: failed to verify id token signature"),
            (hs256(self.idp.pem().encode(), {"aud": "kube-dc", "email": "x",
                                             "exp": int(time.time()) + 60}), 400,
             "error validating token: failed to verify id token signature"),
        ]
        for token, status, msg in cases:
            with self.subTest(msg):
                self.assertError(self.jlogin(token), status, msg)
        self.assertError(self.jlogin(self.person(), role="nobody"), 400,
                         'role "nobody" could not be found')
        self.assertError(self.jlogin(""), 400, "missing token")

    def test_config_and_role_errors(self):
        srv = self.server
        ok(srv.request("POST", "sys/auth/jwt2", {"type": "jwt"}, namespace=ORG))
        self.assertError(srv.request("POST", "auth/jwt2/login", {"role": "x", "jwt": "y"},
                                     token=None, namespace=ORG), 400,
                         "could not load configuration")
        self.assertError(srv.request("POST", "auth/jwt2/config", {"bound_issuer": "x"},
                                     namespace=ORG), 400,
                         "exactly one of 'jwt_validation_pubkeys', 'jwks' or 'jwks_file' must "
                         "be set")
        self.assertStatus(srv.request("POST", "auth/jwt2/config",
                                      {"oidc_discovery_url": "https://x"}, namespace=ORG), 400)
        self.assertStatus(srv.request("POST", "auth/jwt2/config",
                                      {"jwt_validation_pubkeys": [self.idp.pem()],
                                       "jwt_supported_algs": ["HS256"]}, namespace=ORG), 400)
        ok(srv.request("POST", "auth/jwt2/config", {"jwks": json.dumps(self.idp.jwks())},
                       namespace=ORG))
        self.assertError(srv.request("POST", "auth/jwt2/role/r", {"bound_audiences": "a"},
                                     namespace=ORG), 400,
                         "a user claim must be defined on the role")
        self.assertError(srv.request("POST", "auth/jwt2/role/r", {"user_claim": "sub"},
                                     namespace=ORG), 400,
                         "must have at least one bound constraint when creating/updating a role")
        # Kubernetes recipe: user_claim=sub, bound_subject
        ok(srv.request("POST", "auth/jwt2/role/sa",
                       {"user_claim": "sub", "bound_audiences": "openbao",
                        "bound_subject": "system:serviceaccount:my-project:app",
                        "token_policies": "kms-viewer"}, namespace=ORG))
        sa = self.idp.mint()
        r = srv.request("POST", "auth/jwt2/login", {"role": "sa", "jwt": sa}, token=None,
                        namespace=ORG)
        self.assertStatus(r, 200)
        d = ok(srv.request("GET", "auth/token/lookup-self",
                           token=r.json["auth"]["client_token"], namespace=ORG), 200).data
        self.assertEqual(d["display_name"], "jwt2-system:serviceaccount:my-project:app")
        other = self.idp.mint(sa="other")
        self.assertError(srv.request("POST", "auth/jwt2/login", {"role": "sa", "jwt": other},
                                     token=None, namespace=ORG), 400,
                         "error validating token: invalid subject (sub) claim")


if __name__ == "__main__":
    unittest.main()
