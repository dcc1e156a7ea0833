#!/usr/bin/python3
"""Regenerate tests/auth/jwt_vectors.h: fixed keys and compact JWTs for test_jwt.c.

The unit tests must not depend on OpenSSL (only crypto/ may include it) nor on the clock, so
tokens are signed once here with fixed iat/nbf/exp and the C tests pass their own `now`.
Run with /usr/bin/python3 (Debian's python3-jwt and python3-cryptography):

    /usr/bin/python3 tests/auth/gen_jwt_vectors.py > tests/auth/jwt_vectors.h
"""

import base64
import hashlib
import hmac
import json
import sys

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

IAT = 1700000000
EXP = IAT + 3600
ISS = "https://kubernetes.default.svc.cluster.local"
UID = "77c81ad7-1bea-4d94-9ca5-f5d7f3632331"


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pem_pub(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def der_pub(key):
    return key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def jwk(key, kid):
    nums = key.public_key().public_numbers()
    if isinstance(key, rsa.RSAPrivateKey):
        n = nums.n.to_bytes((nums.n.bit_length() + 7) // 8, "big")
        e = nums.e.to_bytes((nums.e.bit_length() + 7) // 8, "big")
        return {"use": "sig", "kty": "RSA", "kid": kid, "alg": "RS256", "n": b64u(n), "e": b64u(e)}
    size = 32 if nums.curve.name == "secp256r1" else 48
    return {"use": "sig", "kty": "EC", "kid": kid,
            "crv": "P-256" if size == 32 else "P-384",
            "x": b64u(nums.x.to_bytes(size, "big")), "y": b64u(nums.y.to_bytes(size, "big"))}


def claims(**over):
    c = {"aud": ["openbao"], "exp": EXP, "iat": IAT, "nbf": IAT, "iss": ISS,
         "sub": "system:serviceaccount:my-project:app",
         "kubernetes.io": {"namespace": "my-project",
                           "pod": {"name": "app-7d4b9", "uid": "0b7c7d4e-0000-4000-8000-000000000001"},
                           "serviceaccount": {"name": "app", "uid": UID}}}
    for k, v in over.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    return c


def raw_token(header, payload_text, signer):
    """Sign an already serialised payload (lets us emit duplicate keys)."""
    if isinstance(header, dict):
        header = json.dumps(header, separators=(",", ":"))
    h = b64u(header.encode())
    p = b64u(payload_text.encode())
    sig = signer((h + "." + p).encode())
    return h + "." + p + "." + b64u(sig)


def rs_signer(key, alg="RS256"):
    h = {"RS256": hashes.SHA256(), "RS384": hashes.SHA384(), "RS512": hashes.SHA512()}[alg]
    return lambda m: key.sign(m, padding.PKCS1v15(), h)


def es_signer(key, h):
    def sign(m):
        der = key.sign(m, ec.ECDSA(h))
        r, s = utils.decode_dss_signature(der)
        size = (key.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return sign


def main():
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    p256 = ec.generate_private_key(ec.SECP256R1())
    p384 = ec.generate_private_key(ec.SECP384R1())
    rsa_small = rsa.generate_private_key(public_exponent=65537, key_size=1024)

    vec = {}
    vec["PEM_RSA"] = pem_pub(rsa_key)
    vec["PEM_RSA_OTHER"] = pem_pub(rsa_other)
    vec["PEM_P256"] = pem_pub(p256)
    vec["PEM_P384"] = pem_pub(p384)
    vec["PEM_RSA_1024"] = pem_pub(rsa_small)
    vec["PEM_RSA_PRIVATE"] = rsa_other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    vec["PEM_RSA_PKCS1"] = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.PKCS1).decode()
    vec["JWKS"] = json.dumps({"keys": [jwk(rsa_key, "rsa-1"), jwk(p256, "ec-1"),
                                       {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}]})

    c = claims()
    for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"):
        vec["JWT_" + alg] = jwt.encode(c, rsa_key, algorithm=alg, headers={"kid": "rsa-1"})
    vec["JWT_ES256"] = jwt.encode(c, p256, algorithm="ES256", headers={"kid": "ec-1"})
    vec["JWT_ES384"] = jwt.encode(c, p384, algorithm="ES384")
    vec["JWT_ES512_HDR"] = raw_token({"alg": "ES512", "typ": "JWT"}, json.dumps(c),
                                     es_signer(p384, hashes.SHA384()))
    vec["JWT_WRONG_KEY"] = jwt.encode(c, rsa_other, algorithm="RS256")
    vec["JWT_UNKNOWN_KID"] = jwt.encode(c, rsa_other, algorithm="RS256",
                                        headers={"kid": "attacker"})
    vec["JWT_JWK_HEADER"] = jwt.encode(c, rsa_other, algorithm="RS256",
                                       headers={"jwk": jwk(rsa_other, "x"),
                                                "jku": "https://attacker.example/jwks",
                                                "x5u": "https://attacker.example/cert"})
    vec["JWT_CRIT"] = jwt.encode(c, rsa_key, algorithm="RS256", headers={"crit": ["exp"]})
    # alg confusion: HS256 keyed with the PEM text and with the DER bytes of the RSA key
    for name, secret, alg, hf in (("JWT_HS256_PEM", vec["PEM_RSA"].encode(), "HS256", hashlib.sha256),
                                  ("JWT_HS384_PEM", vec["PEM_RSA"].encode(), "HS384", hashlib.sha384),
                                  ("JWT_HS512_PEM", vec["PEM_RSA"].encode(), "HS512", hashlib.sha512),
                                  ("JWT_HS256_DER", der_pub(rsa_key), "HS256", hashlib.sha256),
                                  ("JWT_HS256_EC", vec["PEM_P256"].encode(), "HS256", hashlib.sha256)):
        vec[name] = raw_token({"alg": alg, "typ": "JWT"}, json.dumps(c),
                              lambda m, s=secret, h=hf: hmac.new(s, m, h).digest())
    for i, alg in enumerate(("none", "None", "NONE", "nOnE")):
        h = b64u(json.dumps({"alg": alg, "typ": "JWT"}).encode())
        p = b64u(json.dumps(c).encode())
        vec["JWT_NONE_%d" % i] = h + "." + p + "."
        vec["JWT_NONE_SIG_%d" % i] = h + "." + p + "." + b64u(b"not-a-signature")
    # RS256 header over an ES256 signature, ES256 header over an RSA signature
    vec["JWT_RS_ON_EC"] = raw_token({"alg": "RS256"}, json.dumps(c), es_signer(p256, hashes.SHA256()))
    vec["JWT_ES_ON_RSA"] = raw_token({"alg": "ES256"}, json.dumps(c), rs_signer(rsa_key))

    good = vec["JWT_RS256"]
    h, p, s = good.split(".")
    sig = bytearray(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))
    sig[10] ^= 1
    vec["JWT_SIG_FLIPPED"] = h + "." + p + "." + b64u(bytes(sig))
    tampered = dict(c)
    tampered["sub"] = "system:serviceaccount:my-project:admin"
    vec["JWT_TAMPERED"] = h + "." + b64u(json.dumps(tampered).encode()) + "." + s
    vec["JWT_TWO_PARTS"] = h + "." + p
    vec["JWT_FOUR_PARTS"] = good + "." + s
    vec["JWT_PADDED"] = h + "." + p + "=." + s
    vec["JWT_BAD_B64"] = h + "." + p[:-2] + "*!" + "." + s
    vec["JWT_EMPTY_SIG"] = h + "." + p + "."
    vec["JWT_WHITESPACE"] = "  " + h + ".\n" + p + "." + s + "\n"

    sign = rs_signer(rsa_key)
    body = json.dumps(c)
    vec["JWT_DUP_EXP"] = raw_token({"alg": "RS256"}, body[:-1] + ',"exp":%d}' % (EXP + 99999), sign)
    vec["JWT_DUP_K8S"] = raw_token(
        {"alg": "RS256"},
        body[:-1] + ',"kubernetes.io":{"namespace":"kube-system","serviceaccount":'
                    '{"name":"admin","uid":"x"}}}', sign)
    vec["JWT_DUP_HDR"] = raw_token('{"alg":"RS256","alg":"RS256"}', body, sign)
    vec["JWT_CLAIM_EXP_UPPER"] = jwt.encode(dict(c, EXP=EXP + 99999), rsa_key, algorithm="RS256")
    vec["JWT_CLAIM_AUD_MIXED"] = jwt.encode(dict(c, Aud="other"), rsa_key, algorithm="RS256")
    vec["JWT_NUL"] = raw_token({"alg": "RS256"}, body[:-1] + ',"x":"a\\u0000b"}', sign)
    vec["JWT_NON_UTF8"] = raw_token({"alg": "RS256"}, body, sign)  # replaced below
    hp = b64u(json.dumps({"alg": "RS256"}).encode())
    pp = b64u(body.encode()[:-1] + b',"x":"\xff\xfe"}')
    vec["JWT_NON_UTF8"] = hp + "." + pp + "." + b64u(sign((hp + "." + pp).encode()))
    deep = "[" * 40 + "]" * 40
    vec["JWT_DEEP"] = raw_token({"alg": "RS256"}, body[:-1] + ',"deep":%s}' % deep, sign)
    vec["JWT_BIG"] = jwt.encode(dict(c, pad="x" * 17000), rsa_key, algorithm="RS256")

    vec["JWT_SUB_MISMATCH"] = jwt.encode(claims(sub="system:serviceaccount:my-project:other"),
                                         rsa_key, algorithm="RS256")
    vec["JWT_NO_SUB"] = jwt.encode(claims(sub=None), rsa_key, algorithm="RS256")
    vec["JWT_NO_EXP"] = jwt.encode(claims(exp=None), rsa_key, algorithm="RS256")
    vec["JWT_NO_TIMES"] = jwt.encode(claims(exp=None, iat=None, nbf=None), rsa_key,
                                     algorithm="RS256")
    vec["JWT_AUD_STRING"] = jwt.encode(claims(aud="openbao"), rsa_key, algorithm="RS256")
    vec["JWT_AUD_OTHER"] = jwt.encode(claims(aud=["https://kubernetes.default.svc"]), rsa_key,
                                      algorithm="RS256")
    vec["JWT_NO_AUD"] = jwt.encode(claims(aud=None), rsa_key, algorithm="RS256")
    vec["JWT_ISS_OTHER"] = jwt.encode(claims(iss="https://evil.example"), rsa_key, algorithm="RS256")
    vec["JWT_EXP_STRING"] = jwt.encode(claims(exp=str(EXP)), rsa_key, algorithm="RS256")
    vec["JWT_WRONG_NS"] = jwt.encode(
        claims(sub="system:serviceaccount:other-ns:app",
               **{"kubernetes.io": {"namespace": "other-ns",
                                    "serviceaccount": {"name": "app", "uid": UID}}}),
        rsa_key, algorithm="RS256")
    vec["JWT_WRONG_SA"] = jwt.encode(
        claims(sub="system:serviceaccount:my-project:intruder",
               **{"kubernetes.io": {"namespace": "my-project",
                                    "serviceaccount": {"name": "intruder", "uid": UID}}}),
        rsa_key, algorithm="RS256")
    vec["JWT_BOTH_WRONG"] = jwt.encode(
        claims(sub="system:serviceaccount:other-ns:intruder",
               **{"kubernetes.io": {"namespace": "other-ns",
                                    "serviceaccount": {"name": "intruder", "uid": UID}}}),
        rsa_key, algorithm="RS256")
    vec["JWT_NO_SERVICEACCOUNT"] = jwt.encode(
        claims(**{"kubernetes.io": {"namespace": "my-project"}}), rsa_key, algorithm="RS256")
    legacy = {"iss": "kubernetes/serviceaccount",
              "kubernetes.io/serviceaccount/namespace": "my-project",
              "kubernetes.io/serviceaccount/secret.name": "app-token-x7k2p",
              "kubernetes.io/serviceaccount/service-account.name": "app",
              "kubernetes.io/serviceaccount/service-account.uid": UID,
              "sub": "system:serviceaccount:my-project:app"}
    vec["JWT_LEGACY_NO_EXP"] = jwt.encode(legacy, rsa_key, algorithm="RS256")
    vec["JWT_LEGACY_EXP"] = jwt.encode(dict(legacy, exp=EXP, iat=IAT), rsa_key, algorithm="RS256")
    mixed = claims()
    mixed["kubernetes.io/serviceaccount/namespace"] = "kube-system"
    mixed["kubernetes.io/serviceaccount/service-account.name"] = "admin"
    vec["JWT_MIXED_FORMS"] = jwt.encode(mixed, rsa_key, algorithm="RS256")

    out = sys.stdout
    out.write("/* Generated by tests/auth/gen_jwt_vectors.py; do not edit. */\n")
    out.write("#ifndef KMS_TEST_JWT_VECTORS_H\n#define KMS_TEST_JWT_VECTORS_H\n\n")
    out.write("#define VEC_IAT %d\n#define VEC_EXP %d\n#define VEC_ISS \"%s\"\n#define VEC_UID \"%s\"\n\n"
              % (IAT, EXP, ISS, UID))
    for name, val in vec.items():
        out.write("static const char %s[] =\n" % name)
        for i in range(0, len(val), 90):
            out.write("    %s\n" % json.dumps(val[i:i + 90]))
        out.write("    ;\n")
    out.write("\n#endif\n")


if __name__ == "__main__":
    main()
