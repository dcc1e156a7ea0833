"""derive-key/:name against a real kmsd (OpenBao's path_derive_key.go): Python's
`cryptography` holds its own EC key, does ECDH with the public key of kmsd's base key version
and HKDF-SHA256 (no salt, no info), and checks that ciphertexts kmsd makes with the derived
key open with the key derived here (vault:v1: nonce || ciphertext || tag), and the other way
round; then OpenBao's refusals and statuses."""

import base64
import json
import os
import unittest

import hvac  # Debian's python3-hvac (/usr/bin/python3); missing fails, never skips
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

import transit_local
from kmsd_harness import KmsdTestCase, b64, multierror

CURVES = {"ecdsa-p256": ec.SECP256R1, "ecdsa-p384": ec.SECP384R1, "ecdsa-p521": ec.SECP521R1}
KEY_SIZE = {"aes128-gcm96": 16, "aes256-gcm96": 32, "chacha20-poly1305": 32,
            "xchacha20-poly1305": 32}


def pem_pub(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def local_derive(own, kmsd_pub_pem, size):
    peer = serialization.load_pem_public_key(kmsd_pub_pem.encode())
    secret = own.exchange(ec.ECDH(), peer)
    return HKDF(algorithm=hashes.SHA256(), length=size, salt=None, info=None).derive(secret)


class TransitDeriveKeyTest(KmsdTestCase):
    server_audit_file = True

    def derive(self, name, status=204, **body):
        r = self.req("POST", "transit/derive-key/%s" % name, body)
        self.assertStatus(r, status)
        return r

    def base_key(self, key_type="ecdsa-p256", rotations=0):
        name, _ = self.create_key(type=key_type)
        for _ in range(rotations):
            self.assertStatus(self.req("POST", "transit/keys/%s/rotate" % name), 200)
        return name

    def pub_of(self, name, version):
        return self.read_key(name)["keys"][str(version)]["public_key"]

    def check_both_ways(self, derived, key_type, key):
        pt = os.urandom(40)
        r = self.req("POST", "transit/encrypt/%s" % derived, {"plaintext": b64(pt)})
        self.assertStatus(r, 200)
        ct = r.data["ciphertext"]
        self.assertTrue(ct.startswith("vault:v1:"), ct)
        payload = base64.b64decode(ct[len("vault:v1:"):])
        self.assertEqual(transit_local.open_(key_type, key, payload), pt)
        # and a ciphertext made here opens in kmsd
        nonce = os.urandom(transit_local.NONCE_SIZE[key_type])
        mine = transit_local.make_ciphertext(key_type, key, b"from python", nonce)
        r = self.req("POST", "transit/decrypt/%s" % derived, {"ciphertext": mine})
        self.assertStatus(r, 200)
        self.assertEqual(base64.b64decode(r.data["plaintext"]), b"from python")

    def test_ecdh_hkdf_matches_cryptography_every_curve(self):
        for key_type, curve in CURVES.items():
            with self.subTest(curve=key_type):
                base = self.base_key(key_type)
                own = ec.generate_private_key(curve())
                derived = self.uniq("derived")
                self.derive(derived, base_key_name=base, peer_public_key=pem_pub(own))
                key = local_derive(own, self.pub_of(base, 1), 32)
                k = self.read_key(derived)
                self.assertEqual(k["type"], "aes256-gcm96")
                self.assertTrue(k["imported_key"])
                self.assertFalse(k["imported_key_allow_rotation"])
                self.assertFalse(k["exportable"])
                self.assertFalse(k["allow_plaintext_backup"])
                self.assertFalse(k["derived"])
                self.assertEqual(k["latest_version"], 1)
                self.check_both_ways(derived, "aes256-gcm96", key)

    def test_every_derived_key_type(self):
        base = self.base_key("ecdsa-p384")
        own = ec.generate_private_key(ec.SECP384R1())
        for key_type, size in KEY_SIZE.items():
            with self.subTest(type=key_type):
                derived = self.uniq("dt")
                # the type is taken in any case, as OpenBao's strings.ToLower
                self.derive(derived, base_key_name=base, peer_public_key=pem_pub(own),
                            derived_key_type=key_type.upper(), key_derivation_algorithm="ecdh")
                self.assertEqual(self.read_key(derived)["type"], key_type)
                self.check_both_ways(derived, key_type, local_derive(own, self.pub_of(base, 1),
                                                                     size))

    def test_base_key_version(self):
        base = self.base_key("ecdsa-p256", rotations=2)  # versions 1..3
        own = ec.generate_private_key(ec.SECP256R1())
        for version, expect in ((0, 3), (1, 1), (2, 2), (3, 3)):
            with self.subTest(version=version):
                derived = self.uniq("v")
                self.derive(derived, base_key_name=base, peer_public_key=pem_pub(own),
                            base_key_version=version)
                self.check_both_ways(derived, "aes256-gcm96",
                                     local_derive(own, self.pub_of(base, expect), 32))
        pem = pem_pub(own)
        # DeriveKeyECDH's errors: OpenBao's handler returns them without a response (500)
        self.assertError(self.derive("x", 500, base_key_name=base, peer_public_key=pem,
                                     base_key_version=-1),
                         500, multierror("requested version of the base key is negative"))
        self.assertError(self.derive("x", 500, base_key_name=base, peer_public_key=pem,
                                     base_key_version=4),
                         500, multierror("requested version of the base key is higher than the "
                                         "latest key version"))
        self.assertStatus(self.req("POST", "transit/keys/%s/config" % base,
                                   {"min_decryption_version": 3,
                                    "min_encryption_version": 3}), 200)
        self.assertStatus(self.req("POST", "transit/keys/%s/trim" % base,
                                   {"min_available_version": 2}), 200)
        self.assertError(self.derive("x", 500, base_key_name=base, peer_public_key=pem,
                                     base_key_version=1),
                         500, multierror("requested version of the base key is less than the "
                                         "minimum available key version"))
        self.assertError(self.derive("x", 500, base_key_name=base, peer_public_key=pem,
                                     base_key_version=2), 500, multierror("no such key version"))
        self.assertStatus(self.req("GET", "transit/keys/x"), 404)

    def test_existing_name_gets_a_new_version(self):
        base = self.base_key("ecdsa-p256")
        own1 = ec.generate_private_key(ec.SECP256R1())
        own2 = ec.generate_private_key(ec.SECP256R1())
        derived = self.uniq("again")
        self.derive(derived, base_key_name=base, peer_public_key=pem_pub(own1))
        self.derive(derived, base_key_name=base, peer_public_key=pem_pub(own2),
                    derived_key_type="chacha20-poly1305")
        k = self.read_key(derived)
        # OpenBao's ImportPolicy adds a version to the existing key, which keeps its type
        self.assertEqual(k["type"], "aes256-gcm96")
        self.assertEqual(k["latest_version"], 2)
        key2 = local_derive(own2, self.pub_of(base, 1), 32)
        pt = b"second"
        ct = self.req("POST", "transit/encrypt/%s" % derived, {"plaintext": b64(pt)}).data[
            "ciphertext"]
        self.assertTrue(ct.startswith("vault:v2:"))
        self.assertEqual(transit_local.open_("aes256-gcm96", key2,
                                             base64.b64decode(ct[len("vault:v2:"):])), pt)
        # a size that does not fit the existing key, and a signing key, refuse the import
        self.assertError(self.derive(derived, 500, base_key_name=base,
                                     peer_public_key=pem_pub(own2),
                                     derived_key_type="aes128-gcm96"),
                         500, multierror("error importing key: invalid key size 16 bytes for "
                                         "key type aes256-gcm96"))
        self.assertError(self.derive(base, 500, base_key_name=base,
                                     peer_public_key=pem_pub(own2)),
                         500, multierror("error importing key: error parsing public key: not "
                                         "in PEM format"))
        self.assertEqual(self.read_key(base)["latest_version"], 1)
        self.assertEqual(self.read_key(derived)["latest_version"], 2)

    def test_refusals(self):
        base = self.base_key("ecdsa-p256")
        pem = pem_pub(ec.generate_private_key(ec.SECP256R1()))
        cases = [
            ({"key_derivation_algorithm": "x25519", "peer_public_key": pem,
              "base_key_name": base}, "key derivation algorithm x25519 not supported"),
            ({"base_key_name": base}, "peer public key not provided"),
            ({"peer_public_key": pem, "base_key_name": base, "derived_key_type": "hmac"},
             "unknown key type hmac"),
            ({"peer_public_key": pem, "base_key_name": base, "derived_key_type": "ed25519"},
             "unknown key type ed25519"),
            ({"peer_public_key": pem, "base_key_name": "nope"}, "specified base key not found"),
            ({"peer_public_key": pem}, "specified base key not found"),
            ({"peer_public_key": "not a pem", "base_key_name": base},
             "failed to parse supplied peer public key PEM: data does not contain any valid "
             "public keys "),
            ({"peer_public_key": pem + "trailing", "base_key_name": base},
             "failed to parse supplied peer public key PEM: unexpected trailing data after "
             "parsed PEM block "),
            ({"peer_public_key": pem_pub(ec.generate_private_key(ec.SECP384R1())),
              "base_key_name": base},
             "base private key type ecdsa-p256 does not match peer public key curve"),
            ({"peer_public_key": pem_pub(ed25519.Ed25519PrivateKey.generate()),
              "base_key_name": base}, "supplied peer public key is not an ECDSA key"),
            ({"peer_public_key": pem_pub(rsa.generate_private_key(65537, 2048)),
              "base_key_name": base}, "supplied peer public key is not an ECDSA key"),
        ]
        peer_errors = ("failed to parse supplied", "base private key type",
                       "supplied peer public key is not")
        for body, msg in cases:
            with self.subTest(msg=msg):
                name = self.uniq("refused")
                if msg.startswith(peer_errors):  # DeriveKeyECDH's, as above
                    self.assertError(self.derive(name, 500, **body), 500, multierror(msg))
                else:
                    self.assertError(self.derive(name, 400, **body), 400, msg)
                self.assertStatus(self.req("GET", "transit/keys/%s" % name), 404)
        for key_type in ("aes256-gcm96", "ed25519", "rsa-2048", "hmac"):
            with self.subTest(base=key_type):
                params = {"type": key_type}
                if key_type == "hmac":
                    params["key_size"] = 32
                other, _ = self.create_key(**params)
                self.assertError(self.derive("x", 400, base_key_name=other, peer_public_key=pem),
                                 400, "base key type %s does not support key agreement"
                                 % key_type)

    def test_soft_deleted_base_and_target(self):
        base = self.base_key("ecdsa-p256")
        own = ec.generate_private_key(ec.SECP256R1())
        target = self.uniq("target")
        self.derive(target, base_key_name=base, peer_public_key=pem_pub(own))
        self.assertStatus(self.req("DELETE", "transit/keys/%s/soft-delete" % target), 200)
        self.assertError(self.derive(target, 500, base_key_name=base,
                                     peer_public_key=pem_pub(own)),
                         500, multierror("error importing key: refusing to use soft-deleted "
                                         "key"))
        self.assertStatus(self.req("DELETE", "transit/keys/%s/soft-delete" % base), 200)
        self.assertError(self.derive(self.uniq("n"), 400, base_key_name=base,
                                     peer_public_key=pem_pub(own)),
                         400, "refusing to use soft-deleted key")
        self.assertStatus(self.req("POST", "transit/keys/%s/soft-delete-restore" % base), 200)
        self.derive(self.uniq("n"), base_key_name=base, peer_public_key=pem_pub(own))

    def test_hvac_write_and_audit_keeps_no_secret(self):
        client = hvac.Client(url=self.server.addr, token=self.server.root_token)
        self.addCleanup(client.adapter.close)
        base = self.base_key("ecdsa-p521")
        own = ec.generate_private_key(ec.SECP521R1())
        derived = self.uniq("hv")
        # hvac has no derive-key method: its generic write, as an application would call it
        resp = client.write("transit/derive-key/%s" % derived, base_key_name=base,
                            peer_public_key=pem_pub(own), derived_key_type="aes128-gcm96")
        self.assertEqual(resp.status_code, 204)
        key = local_derive(own, self.pub_of(base, 1), 16)
        self.check_both_ways(derived, "aes128-gcm96", key)
        with open(self.audit, encoding="utf-8") as f:
            text = f.read()
        lines = [json.loads(x) for x in text.splitlines()]
        mine = [x for x in lines if x["request"]["path"] == "transit/derive-key/" + derived]
        self.assertEqual([x["type"] for x in mine], ["request", "response"])
        self.assertEqual({x["op"] for x in mine}, {"derive-key"})
        self.assertTrue(mine[0]["request"]["data"]["peer_public_key"].startswith("hmac-sha256:"))
        self.assertTrue(mine[0]["request"]["data"]["base_key_name"].startswith("hmac-sha256:"))
        for secret in (key.hex(), base64.b64encode(key).decode(), pem_pub(own)[30:90]):
            self.assertNotIn(secret, text)
            self.assertNotIn(secret, self.server.log_text())


if __name__ == "__main__":
    unittest.main()
