"""Transit signing and hmac keys against a real kmsd with hvac (reference §2.1, §2.7-2.9,
§3.13, §3.14, §3.17): for every signing type create / sign / verify / export / rotate, and
cross-checks with Python's `cryptography`: kmsd's signatures verify with the exported public
key, signatures made with the exported private key verify in kmsd, RSA-OAEP both ways, and
hmac keys' HMACs match the exported key."""

import base64
import hashlib
import hmac
import unittest

import hvac  # Debian's python3-hvac (/usr/bin/python3); missing fails, never skips
import hvac.exceptions
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, utils

from kmsd_harness import KmsdTestCase, b64

SIGNING_TYPES = ("ed25519", "ecdsa-p256", "ecdsa-p384", "ecdsa-p521",
                 "rsa-2048", "rsa-3072", "rsa-4096")
EC_SIZES = {"ecdsa-p256": 32, "ecdsa-p384": 48, "ecdsa-p521": 66}


def raw_sig(signature, jws=False):
    payload = signature.split(":", 2)[2]
    if jws:
        return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    return base64.b64decode(payload)


def vault_sig(raw, version=1):
    return "vault:v%d:%s" % (version, base64.b64encode(raw).decode())


class SigningKeysTest(KmsdTestCase):

    def test_a_null_batch_item_is_an_empty_item(self):
        """mapstructure leaves a null item an empty map: it fails on its own (no input),
        the other items are signed; a boolean item fails the request, named 'bool'."""
        name = self.uniq("nullsign")
        self.create_key(name, type="ed25519")
        r = self.req("POST", "transit/sign/" + name,
                     {"batch_input": [None, {"input": b64("m")}]})
        self.assertStatus(r, 200)
        res = r.data["batch_results"]
        self.assertIn("error", res[0])
        self.assertNotIn("signature", res[0])
        self.assertTrue(res[1]["signature"].startswith("vault:v1:"))
        r = self.req("POST", "transit/sign/" + name, {"batch_input": [True]})
        self.assertStatus(r, 500)
        self.assertIn("failed to parse batch input: decoding failed due to the following "
                      "error(s):\n\n'[0]' expected type 'transit.batchRequestSignItem', got "
                      "unconvertible type 'bool'", r.errors[0])
    def test_batch_values_null_and_numbers_decode_as_openbao(self):
        """sign's items are decoded by mapstructure into string maps: a null value is the
        empty string (a null context is no context), a number is its text."""
        name = self.uniq("nullctx")
        self.create_key(name, type="ed25519")
        r = self.req("POST", "transit/sign/" + name, {"batch_input": [
            {"input": b64("m"), "context": None, "reference": None},
            {"input": b64("m"), "reference": 42}]})
        self.assertStatus(r, 200)
        res = r.data["batch_results"]
        self.assertTrue(res[0]["signature"].startswith("vault:v1:"), res)
        self.assertEqual(res[0]["reference"], "")
        self.assertEqual(res[1]["reference"], "42")
        r = self.req("POST", "transit/verify/" + name, {"batch_input": [
            {"input": b64("m"), "signature": res[0]["signature"], "context": None}]})
        self.assertStatus(r, 200)
        self.assertIs(r.data["batch_results"][0]["valid"], True)

    def client(self):
        c = hvac.Client(url=self.server.addr, token=self.server.root_token)
        self.addCleanup(c.adapter.close)
        return c

    def export(self, kind, name, version="1", fmt=None):
        path = "transit/export/%s/%s/%s" % (kind, name, version)
        if fmt:
            path += "?format=" + fmt
        r = self.req("GET", path)
        self.assertStatus(r, 200)
        return r.data["keys"][version]

    def public_key(self, key_type, name):
        text = self.export("public-key", name)
        if key_type == "ed25519":
            return ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(text))
        return serialization.load_pem_public_key(text.encode())

    def private_key(self, key_type, name):
        text = self.export("signing-key", name)
        if key_type == "ed25519":
            raw = base64.b64decode(text)
            self.assertEqual(len(raw), 64)  # Go's form: seed || public key
            return ed25519.Ed25519PrivateKey.from_private_bytes(raw[:32])
        header = "RSA PRIVATE KEY" if key_type.startswith("rsa") else "EC PRIVATE KEY"
        self.assertTrue(text.startswith("-----BEGIN %s-----\n" % header), text[:40])
        return serialization.load_pem_private_key(text.encode(), password=None)

    def check_with_cryptography(self, key_type, pub, msg, sig, **opts):
        """Raises InvalidSignature unless sig (kmsd's raw signature) verifies."""
        if key_type == "ed25519":
            pub.verify(sig, msg)
        elif key_type.startswith("ecdsa"):
            if opts.get("jws"):
                n = EC_SIZES[key_type]
                self.assertEqual(len(sig), 2 * n)
                sig = utils.encode_dss_signature(int.from_bytes(sig[:n], "big"),
                                                 int.from_bytes(sig[n:], "big"))
            pub.verify(sig, msg, ec.ECDSA(opts.get("hash", hashes.SHA256())))
        elif opts.get("pkcs1v15"):
            pub.verify(sig, msg, padding.PKCS1v15(), opts.get("hash", hashes.SHA256()))
        else:
            pub.verify(sig, msg, padding.PSS(padding.MGF1(opts.get("hash", hashes.SHA256())),
                                             padding.PSS.AUTO), opts.get("hash", hashes.SHA256()))

    def test_every_signing_type_end_to_end(self):
        t = self.client().secrets.transit
        msg = b"signed by kmsd"
        for key_type in SIGNING_TYPES:
            with self.subTest(key_type=key_type):
                name = self.uniq(key_type)
                t.create_key(name, key_type=key_type, exportable=True)
                key = t.read_key(name)["data"]
                self.assertEqual(key["type"], key_type)
                self.assertTrue(key["supports_signing"])
                self.assertEqual(key["supports_encryption"], key_type.startswith("rsa"))
                self.assertEqual(set(key["keys"]["1"]),
                                 {"name", "public_key", "certificate_chain", "creation_time"})

                r = t.sign_data(name, hash_input=b64(msg))
                sig = r["data"]["signature"]
                self.assertEqual(r["data"]["key_version"], 1)
                self.assertTrue(t.verify_signed_data(name, hash_input=b64(msg),
                                                     signature=sig)["data"]["valid"])
                self.assertFalse(t.verify_signed_data(name, hash_input=b64(msg + b"!"),
                                                      signature=sig)["data"]["valid"])

                # kmsd's signature verifies with cryptography and the exported public key,
                # which is also the one key read shows
                pub = self.public_key(key_type, name)
                self.check_with_cryptography(key_type, pub, msg, raw_sig(sig))
                with self.assertRaises(InvalidSignature):
                    self.check_with_cryptography(key_type, pub, msg + b"!", raw_sig(sig))
                read_pub = key["keys"]["1"]["public_key"]
                if key_type == "ed25519":
                    self.assertEqual(base64.b64decode(read_pub), pub.public_bytes(
                        serialization.Encoding.Raw, serialization.PublicFormat.Raw))
                else:
                    self.assertEqual(serialization.load_pem_public_key(
                        read_pub.encode()).public_numbers(), pub.public_numbers())

                # a signature made by cryptography with the exported private key verifies
                priv = self.private_key(key_type, name)
                if key_type == "ed25519":
                    mine = priv.sign(msg)
                elif key_type.startswith("ecdsa"):
                    mine = priv.sign(msg, ec.ECDSA(hashes.SHA256()))
                else:
                    mine = priv.sign(msg, padding.PSS(padding.MGF1(hashes.SHA256()),
                                                      padding.PSS.DIGEST_LENGTH), hashes.SHA256())
                self.assertTrue(t.verify_signed_data(name, hash_input=b64(msg),
                                                     signature=vault_sig(mine))["data"]["valid"])

                # rotate: a new version signs, the old signature still verifies
                t.rotate_key(name)
                key = t.read_key(name)["data"]
                self.assertEqual(sorted(key["keys"]), ["1", "2"])
                self.assertNotEqual(key["keys"]["1"]["public_key"], key["keys"]["2"]["public_key"])
                sig2 = t.sign_data(name, hash_input=b64(msg))["data"]["signature"]
                self.assertTrue(sig2.startswith("vault:v2:"))
                for s in (sig, sig2):
                    self.assertTrue(t.verify_signed_data(name, hash_input=b64(msg),
                                                         signature=s)["data"]["valid"])
                # raising the floor retires version 1's signatures
                t.update_key_configuration(name, min_decryption_version=2)
                with self.assertRaises(hvac.exceptions.InvalidRequest) as cm:
                    t.verify_signed_data(name, hash_input=b64(msg), signature=sig)
                self.assertIn("disallowed by policy (too old)", str(cm.exception))

    def test_ecdsa_jws_and_hashes(self):
        t = self.client().secrets.transit
        msg = b"jws"
        for key_type, alg, h in (("ecdsa-p256", "sha2-256", hashes.SHA256()),
                                 ("ecdsa-p384", "sha2-384", hashes.SHA384()),
                                 ("ecdsa-p521", "sha2-512", hashes.SHA512())):
            name = self.uniq(key_type)
            t.create_key(name, key_type=key_type)
            sig = t.sign_data(name, hash_input=b64(msg), hash_algorithm=alg,
                              marshaling_algorithm="jws")["data"]["signature"]
            self.assertNotIn("=", sig)
            self.check_with_cryptography(key_type, self.public_key(key_type, name), msg,
                                         raw_sig(sig, jws=True), jws=True, hash=h)
            self.assertTrue(t.verify_signed_data(name, hash_input=b64(msg), signature=sig,
                                                 hash_algorithm=alg,
                                                 marshaling_algorithm="jws")["data"]["valid"])
            # prehashed: kmsd signs the digest it is given
            digest = hashlib.new(alg.replace("sha2-", "sha"), msg).digest()
            sig = t.sign_data(name, hash_input=b64(digest), hash_algorithm=alg,
                              prehashed=True)["data"]["signature"]
            self.check_with_cryptography(key_type, self.public_key(key_type, name), msg,
                                         raw_sig(sig), hash=h)

    def test_rsa_schemes_and_oaep(self):
        t = self.client().secrets.transit
        name = self.uniq("rsa")
        t.create_key(name, key_type="rsa-2048", exportable=True)
        pub = self.public_key("rsa-2048", name)
        priv = self.private_key("rsa-2048", name)
        msg = b"rsa message"
        sig = t.sign_data(name, hash_input=b64(msg), signature_algorithm="pkcs1v15",
                          hash_algorithm="sha2-384")["data"]["signature"]
        self.check_with_cryptography("rsa-2048", pub, msg, raw_sig(sig), pkcs1v15=True,
                                     hash=hashes.SHA384())
        # PKCS#1 v1.5 is deterministic: cryptography computes the same signature
        self.assertEqual(raw_sig(sig), priv.sign(msg, padding.PKCS1v15(), hashes.SHA384()))
        # PSS with salt_length=hash, checked by cryptography with that exact salt length
        r = self.req("POST", "transit/sign/" + name, {"input": b64(msg), "salt_length": "hash"})
        self.assertStatus(r, 200)
        pub.verify(raw_sig(r.data["signature"]), msg,
                   padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
        # OAEP: kmsd -> cryptography and cryptography -> kmsd
        ct = t.encrypt_data(name, plaintext=b64(b"oaep"))["data"]["ciphertext"]
        oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
        self.assertEqual(priv.decrypt(raw_sig(ct), oaep), b"oaep")
        theirs = vault_sig(pub.encrypt(b"from cryptography", oaep))
        r = t.decrypt_data(name, ciphertext=theirs)
        self.assertEqual(base64.b64decode(r["data"]["plaintext"]), b"from cryptography")
        # export formats: PKCS#8 PEM and DER are the same key
        pem = self.export("signing-key", name, fmt="pem")
        self.assertTrue(pem.startswith("-----BEGIN PRIVATE KEY-----\n"))
        der = base64.b64decode(self.export("signing-key", name, fmt="der"))
        self.assertEqual(serialization.load_der_private_key(der, None).private_numbers(),
                         priv.private_numbers())

    def test_hmac_keys(self):
        name = self.uniq("hmac")
        r = self.req("POST", "transit/keys/" + name,
                     {"type": "hmac", "key_size": 48, "exportable": True})
        self.assertStatus(r, 200)
        self.assertEqual(r.data["key_size"], 48)
        self.assertNotIn("keys", r.data)
        key = base64.b64decode(self.export("hmac-key", name))
        self.assertEqual(len(key), 48)
        t = self.client().secrets.transit
        mac = t.generate_hmac(name, hash_input=b64("hello"), algorithm="sha2-512")["data"]["hmac"]
        want = hmac.new(key, b"hello", hashlib.sha512).digest()
        self.assertEqual(mac, vault_sig(want))
        self.assertTrue(t.verify_signed_data(name, hash_input=b64("hello"), hmac=mac,
                                             hash_algorithm="sha2-512")["data"]["valid"])
        t.rotate_key(name)
        self.assertEqual(len(base64.b64decode(self.export("hmac-key", name, version="2"))), 48)
        self.assertError(self.req("POST", "transit/sign/" + name, {"input": b64("x")}), 400,
                         "key type hmac does not support signing")

    def test_refusals_as_openbao(self):
        t = self.client().secrets.transit
        name = self.uniq("aes")
        t.create_key(name)
        with self.assertRaises(hvac.exceptions.InvalidRequest) as cm:
            t.sign_data(name, hash_input=b64("x"))
        self.assertIn("key type aes256-gcm96 does not support signing", str(cm.exception))
        self.assertError(self.req("POST", "transit/keys/" + self.uniq(), {"type": "hmac"}), 500,
                         "1 error occurred:\n\t* invalid key size for HMAC key, must be between "
                         "32 and 512 bytes\n\n")
        ed = self.uniq("ed")
        t.create_key(ed, key_type="ed25519")
        self.assertError(self.req("GET", "transit/export/signing-key/" + ed), 400,
                         "private key material is not exportable")
        self.assertError(self.req("POST", "transit/sign/%s/sha2-256" % ed,
                                  {"input": b64("x"), "key_version": 3}), 500,
                         "1 error occurred:\n\t* requested version for signing is higher than "
                         "the latest key version\n\n")


if __name__ == "__main__":
    unittest.main()
