#!/usr/bin/python3
"""Regenerate tests/engine/auth/login_vectors.h: keys and compact JWTs for the login tests.

Logins are checked against the wall clock (kms_now), so the tokens that must be accepted
expire in 2100 (and were issued in 2023); the refused ones are expired, not yet valid or
issued in the future by the same fixed dates. Nothing here depends on when the tests run.
Run with /usr/bin/python3 (Debian's python3-jwt and python3-cryptography):

    /usr/bin/python3 tests/engine/auth/gen_login_vectors.py > tests/engine/auth/login_vectors.h
"""

import base64
import hashlib
import hmac
import json
import sys

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

IAT = 1700000000          # 2023-11-14
EXP = 4102444800          # 2100-01-01
PAST_EXP = IAT + 3600     # expired long ago
FUTURE = 4000000000       # 2096: not yet valid / issued in the future
K8S_ISS = "https://kubernetes.default.svc.cluster.local"
JWT_ISS = "https://issuer.example"
UID = "77c81ad7-1bea-4d94-9ca5-f5d7f3632331"


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pem_pub(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def jwk(key, kid):
    nums = key.public_key().public_numbers()
    if isinstance(key, rsa.RSAPrivateKey):
        n = nums.n.to_bytes((nums.n.bit_length() + 7) // 8, "big")
        e = nums.e.to_bytes((nums.e.bit_length() + 7) // 8, "big")
        return {"use": "sig", "kty": "RSA", "kid": kid, "alg": "RS256", "n": b64u(n), "e": b64u(e)}
    return {"use": "sig", "kty": "EC", "kid": kid, "crv": "P-256",
            "x": b64u(nums.x.to_bytes(32, "big")), "y": b64u(nums.y.to_bytes(32, "big"))}


def k8s(ns="my-project", sa="app", uid=UID, **over):
    c = {"aud": ["openbao"], "exp": EXP, "iat": IAT, "nbf": IAT, "iss": K8S_ISS,
         "sub": "system:serviceaccount:%s:%s" % (ns, sa),
         "kubernetes.io": {"namespace": ns,
                           "pod": {"name": "app-7d4b9", "uid": "0b7c7d4e-0000-4000-8000-000000000001"},
                           "serviceaccount": {"name": sa, "uid": uid}}}
    if uid is None:
        del c["kubernetes.io"]["serviceaccount"]["uid"]
    for k, v in over.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    return c


def oidc(**over):
    c = {"aud": ["kmsd"], "exp": EXP, "iat": IAT, "nbf": IAT, "iss": JWT_ISS, "sub": "user-1",
         "email": "user1@example.com", "groups": ["blue", "green"],
         "org": {"team": "platform", "level": 3}, "env": "prod-eu"}
    for k, v in over.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    return c


def unsigned(claims, alg):
    h = b64u(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    return h + "." + b64u(json.dumps(claims).encode()) + "."


def hs(claims, secret):
    h = b64u(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    p = b64u(json.dumps(claims).encode())
    sig = hmac.new(secret, (h + "." + p).encode(), hashlib.sha256).digest()
    return h + "." + p + "." + b64u(sig)


def main():
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    p256 = ec.generate_private_key(ec.SECP256R1())

    def rs(c):
        return jwt.encode(c, rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})

    vec = {}
    vec["LV_PEM_RSA"] = pem_pub(rsa_key)
    vec["LV_PEM_P256"] = pem_pub(p256)
    vec["LV_PEM_OTHER"] = pem_pub(rsa_other)
    vec["LV_JWKS"] = json.dumps({"keys": [jwk(rsa_key, "rsa-1"), jwk(p256, "ec-1")]})

    vec["K8S_GOOD"] = rs(k8s())
    vec["K8S_GOOD_ES256"] = jwt.encode(k8s(), p256, algorithm="ES256", headers={"kid": "ec-1"})
    vec["K8S_APP_X"] = rs(k8s(sa="app-x"))
    vec["K8S_XAPP"] = rs(k8s(sa="xapp"))
    vec["K8S_OTHER_NS"] = rs(k8s(ns="other-ns"))
    vec["K8S_BOTH_WRONG"] = rs(k8s(ns="other-ns", sa="intruder"))
    vec["K8S_NO_UID"] = rs(k8s(uid=None))
    vec["K8S_SUB_MISMATCH"] = rs(k8s(sub="system:serviceaccount:my-project:admin"))
    vec["K8S_EXPIRED"] = rs(k8s(exp=PAST_EXP))
    vec["K8S_NBF_FUTURE"] = rs(k8s(nbf=FUTURE))
    vec["K8S_IAT_FUTURE"] = rs(k8s(iat=FUTURE))
    vec["K8S_NO_EXP"] = rs(k8s(exp=None))
    vec["K8S_ISS_OTHER"] = rs(k8s(iss="https://evil.example"))
    vec["K8S_AUD_OTHER"] = rs(k8s(aud=["https://kubernetes.default.svc"]))
    vec["K8S_AUD_STRING"] = rs(k8s(aud="openbao"))
    vec["K8S_NO_AUD"] = rs(k8s(aud=None))
    vec["K8S_WRONG_KEY"] = jwt.encode(k8s(), rsa_other, algorithm="RS256")
    vec["K8S_NONE"] = unsigned(k8s(), "none")
    vec["K8S_HS256"] = hs(k8s(), pem_pub(rsa_key).encode())
    legacy = {"iss": "kubernetes/serviceaccount", "exp": EXP, "iat": IAT,
              "kubernetes.io/serviceaccount/namespace": "my-project",
              "kubernetes.io/serviceaccount/secret.name": "app-token-x7k2p",
              "kubernetes.io/serviceaccount/service-account.name": "app",
              "kubernetes.io/serviceaccount/service-account.uid": UID,
              "sub": "system:serviceaccount:my-project:app"}
    vec["K8S_LEGACY"] = rs(legacy)

    vec["OIDC_GOOD"] = rs(oidc())
    vec["OIDC_GOOD_ES256"] = jwt.encode(oidc(), p256, algorithm="ES256", headers={"kid": "ec-1"})
    vec["OIDC_EXPIRED"] = rs(oidc(exp=PAST_EXP))
    vec["OIDC_NBF_FUTURE"] = rs(oidc(nbf=FUTURE))
    vec["OIDC_NO_EXP"] = rs(oidc(exp=None))
    vec["OIDC_ISS_OTHER"] = rs(oidc(iss="https://evil.example"))
    vec["OIDC_AUD_OTHER"] = rs(oidc(aud=["other"]))
    vec["OIDC_NO_AUD"] = rs(oidc(aud=None))
    vec["OIDC_SUB_OTHER"] = rs(oidc(sub="user-2"))
    vec["OIDC_WRONG_KEY"] = jwt.encode(oidc(), rsa_other, algorithm="RS256")
    vec["OIDC_NONE"] = unsigned(oidc(), "none")
    vec["OIDC_HS256"] = hs(oidc(), pem_pub(rsa_key).encode())

    out = sys.stdout
    out.write("/* Generated by tests/engine/auth/gen_login_vectors.py; do not edit. */\n")
    out.write("#ifndef KMS_TEST_LOGIN_VECTORS_H\n#define KMS_TEST_LOGIN_VECTORS_H\n\n")
    out.write("#define LV_UID \"%s\"\n#define LV_K8S_ISS \"%s\"\n#define LV_JWT_ISS \"%s\"\n\n"
              % (UID, K8S_ISS, JWT_ISS))
    out.write("/* clang-format off */\n")
    for name, val in vec.items():
        out.write("static const char %s[] =\n" % name)
        for i in range(0, len(val), 90):
            out.write("    %s\n" % json.dumps(val[i:i + 90]))
        out.write("    ;\n")
    out.write("/* clang-format on */\n")
    out.write("\n#endif\n")


if __name__ == "__main__":
    main()
