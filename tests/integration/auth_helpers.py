"""Shared pieces of the test_auth_* suites: a fake ServiceAccount issuer that mints projected
tokens like a kube-apiserver does, and the Vault-API calls that wire kmsd to it (namespace,
transit mount, kubernetes auth mount with pem_keys or a JWKS, roles).

Everything is configured through kmsd's Vault-compatible HTTP API with the root token, as an
operator (or the Kube-DC controller) would do it.
"""

import base64
import hashlib
import hmac
import json
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ISSUER = "https://kubernetes.default.svc.cluster.local"
ORG = "my-org"
MOUNT = "k8s-host"
KEY = "my-org-my-project-app-secrets"


def b64u(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


class Issuer:
    """A cluster's ServiceAccount token issuer (RSA by default, or P-256)."""

    def __init__(self, kind="rsa", kid="kmsd-test-1", issuer=ISSUER):
        if kind == "rsa":
            self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.alg = "RS256"
        else:
            self.key = ec.generate_private_key(ec.SECP256R1())
            self.alg = "ES256"
        self.kid = kid
        self.issuer = issuer

    def pem(self):
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def der(self):
        return self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    def jwks(self):
        """What `kubectl get --raw /openid/v1/jwks` returns."""
        nums = self.key.public_key().public_numbers()
        if self.alg == "RS256":
            n = nums.n.to_bytes((nums.n.bit_length() + 7) // 8, "big")
            e = nums.e.to_bytes((nums.e.bit_length() + 7) // 8, "big")
            k = {"use": "sig", "kty": "RSA", "kid": self.kid, "alg": "RS256",
                 "n": b64u(n), "e": b64u(e)}
        else:
            k = {"use": "sig", "kty": "EC", "kid": self.kid, "crv": "P-256", "alg": "ES256",
                 "x": b64u(nums.x.to_bytes(32, "big")), "y": b64u(nums.y.to_bytes(32, "big"))}
        return {"keys": [k]}

    def claims(self, ns="my-project", sa="app", aud=("openbao",), exp_in=3600, now=None,
               uid="9b1c5a52-7b0e-4f37-a3f4-3c2e5f0d1a11"):
        now = int(time.time()) if now is None else now
        return {
            "aud": list(aud) if isinstance(aud, (list, tuple)) else aud,
            "exp": now + exp_in,
            "iat": now,
            "nbf": now,
            "iss": self.issuer,
            "sub": "system:serviceaccount:%s:%s" % (ns, sa),
            "kubernetes.io": {
                "namespace": ns,
                "node": {"name": "worker-1", "uid": "3f0d0c36-1111-4222-8333-444455556666"},
                "pod": {"name": "%s-7d4b9c-x2x8z" % sa,
                        "uid": "0b7c7d4e-0000-4000-8000-000000000001"},
                "serviceaccount": {"name": sa, "uid": uid},
                "warnafter": now + exp_in - 600,
            },
        }

    def sign(self, claims, headers=None, alg=None):
        h = {"kid": self.kid}
        h.update(headers or {})
        return jwt.encode(claims, self.key, algorithm=alg or self.alg, headers=h)

    def mint(self, headers=None, **kw):
        return self.sign(self.claims(**kw), headers=headers)

    def sign_raw(self, header, payload_text):
        """Sign hand-written JSON (duplicate keys and the like)."""
        h = b64u(header if isinstance(header, str) else json.dumps(header))
        p = b64u(payload_text)
        msg = (h + "." + p).encode()
        if self.alg == "RS256":
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.asymmetric import padding
            sig = self.key.sign(msg, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise NotImplementedError
        return h + "." + p + "." + b64u(sig)


def hs256(secret, claims, alg="HS256"):
    """A token HMAC-signed with `secret` (bytes), e.g. the issuer's public key."""
    hfun = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    h = b64u(json.dumps({"alg": alg, "typ": "JWT"}))
    p = b64u(json.dumps(claims))
    sig = hmac.new(secret, (h + "." + p).encode(), hfun).digest()
    return h + "." + p + "." + b64u(sig)


def unsigned(claims, alg="none", sig=""):
    h = b64u(json.dumps({"alg": alg, "typ": "JWT"}))
    return h + "." + b64u(json.dumps(claims)) + "." + sig


def ok(resp, *statuses):
    statuses = statuses or (200, 204)
    if resp.status not in statuses:
        raise AssertionError("expected %s: %s" % (statuses, resp.describe()))
    return resp


def setup_org(srv, org=ORG, mount=MOUNT, issuer=None, config=None, transit=True):
    """Namespace `org`, its transit/ mount and a kubernetes auth mount configured offline."""
    ok(srv.request("POST", "sys/namespaces/" + org, {}))
    if transit:
        ok(srv.request("POST", "sys/mounts/transit", {"type": "transit"}, namespace=org))
    ok(srv.request("POST", "sys/auth/" + mount, {"type": "kubernetes"}, namespace=org))
    cfg = {"kubernetes_host": "https://kubernetes.default.svc"}
    if issuer is not None:
        cfg.update({"pem_keys": [issuer.pem()], "issuer": issuer.issuer})
    cfg.update(config or {})
    ok(srv.request("POST", "auth/%s/config" % mount, cfg, namespace=org))


def make_role(srv, name, policies, org=ORG, mount=MOUNT, sa="app", ns="my-project",
              audience="openbao", **extra):
    body = {"bound_service_account_names": sa, "bound_service_account_namespaces": ns,
            "token_policies": policies}
    if audience is not None:
        body["audience"] = audience
    body.update(extra)
    return ok(srv.request("POST", "auth/%s/role/%s" % (mount, name), body, namespace=org))


def login(srv, role, token, org=ORG, mount=MOUNT):
    return srv.request("POST", "auth/%s/login" % mount, {"role": role, "jwt": token},
                       token=None, namespace=org)


def login_token(srv, role, token, org=ORG, mount=MOUNT):
    r = ok(login(srv, role, token, org, mount), 200)
    return r.json["auth"]["client_token"]
