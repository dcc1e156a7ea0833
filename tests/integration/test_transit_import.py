"""Transit BYOK import against a real kmsd (OpenBao's path_wrapping_key.go / path_import.go):
the import ciphertext is built here with Python's `cryptography` (RSA-OAEP of an ephemeral
AES-256 key under the fetched wrapping key, then AES-KWP of the key material), and the
imported keys are checked both ways against the same material held locally: kmsd's
ciphertexts open here, ciphertexts made here open in kmsd, signatures cross-verify."""

import base64
import hashlib
import hmac as hm
import json
import os
import unittest

import hvac  # Debian's python3-hvac (/usr/bin/python3); missing fails, never skips
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

import transit_local
from kmsd_harness import KmsdTestCase, b64

HASHES = {"SHA1": hashes.SHA1, "SHA224": hashes.SHA224, "SHA256": hashes.SHA256,
          "SHA384": hashes.SHA384, "SHA512": hashes.SHA512}
EXISTING = ("the import path cannot be used with an existing key; use import-version to "
            "rotate an existing imported key")


def wrapped(msg):
    return "1 error occurred:\n\t* %s\n\n" % msg


class TransitImportTest(KmsdTestCase):
    def wrapping_key(self, mount="transit"):
        r = self.req("GET", "%s/wrapping_key" % mount)
        self.assertStatus(r, 200)
        self.assertEqual(list(r.data.keys()), ["public_key"])
        return serialization.load_pem_public_key(r.data["public_key"].encode())

    def ciphertext(self, material, hash_name="SHA256", mount="transit", eph=None):
        pub = self.wrapping_key(mount)
        eph = eph if eph is not None else os.urandom(32)
        h = HASHES[hash_name.upper()]
        wrapped_eph = pub.encrypt(eph, padding.OAEP(mgf=padding.MGF1(algorithm=h()),
                                                    algorithm=h(), label=None))
        self.assertEqual(len(wrapped_eph), 512)
        return base64.b64encode(wrapped_eph + aes_key_wrap_with_padding(eph, material)).decode()

    def import_key(self, name, material, status=204, **params):
        body = {"ciphertext": self.ciphertext(material, params.get("hash_function", "SHA256"))}
        body.update(params)
        r = self.req("POST", "transit/keys/%s/import" % name, body)
        self.assertStatus(r, status)
        return r

    def test_wrapping_key_is_rsa4096_and_kept(self):
        a = self.wrapping_key()
        self.assertEqual(a.key_size, 4096)
        b = self.wrapping_key()
        self.assertEqual(a.public_numbers(), b.public_numbers())
        # hvac reads it too
        c = hvac.Client(url=self.server.addr, token=self.server.root_token)
        self.addCleanup(c.adapter.close)
        got = c.read("transit/wrapping_key")
        self.assertEqual(serialization.load_pem_public_key(
            got["data"]["public_key"].encode()).public_numbers(), a.public_numbers())

    def test_wrapping_key_per_mount_and_removed_with_mount(self):
        r = self.req("POST", "sys/mounts/transit-imp", {"type": "transit"})
        self.assertStatus(r, 204)
        first = self.wrapping_key("transit-imp").public_numbers()
        self.assertNotEqual(first, self.wrapping_key().public_numbers())
        self.assertStatus(self.req("DELETE", "sys/mounts/transit-imp"), 204)
        self.assertStatus(self.req("POST", "sys/mounts/transit-imp", {"type": "transit"}), 204)
        self.assertNotEqual(first, self.wrapping_key("transit-imp").public_numbers())

    def test_aead_import_both_ways(self):
        for key_type in ("aes256-gcm96", "aes128-gcm96", "chacha20-poly1305",
                         "xchacha20-poly1305"):
            for hash_name in ("SHA256", "SHA1", "sha512"):
                with self.subTest(type=key_type, hash=hash_name):
                    name = self.uniq("imp")
                    material = os.urandom(transit_local.KEY_SIZE[key_type])
                    self.import_key(name, material, type=key_type, hash_function=hash_name)
                    key = self.read_key(name)
                    self.assertEqual(key["type"], key_type)
                    self.assertTrue(key["imported_key"])
                    self.assertFalse(key["imported_key_allow_rotation"])
                    ct = self.encrypt(name, b"from kmsd")
                    self.assertEqual(transit_local.decrypt_ciphertext(key_type, material, ct),
                                     b"from kmsd")
                    local = transit_local.make_ciphertext(
                        key_type, material, b"from here",
                        os.urandom(transit_local.NONCE_SIZE[key_type]))
                    self.assertEqual(self.decrypt(name, local), b"from here")

    def test_derived_import(self):
        # OpenBao's ImportPolicy leaves KDF at 0: an imported derived key derives with the
        # legacy hmac-sha256-counter KDF (32 bytes; aes128 takes the first 16), not HKDF, and
        # its ciphertexts cross between kmsd and OpenBao both ways
        for key_type in ("aes256-gcm96", "aes128-gcm96", "chacha20-poly1305",
                         "xchacha20-poly1305"):
            with self.subTest(type=key_type):
                name = self.uniq("imp")
                material = os.urandom(transit_local.KEY_SIZE[key_type])
                self.import_key(name, material, type=key_type, derived=True)
                key = self.read_key(name)
                self.assertEqual(key["kdf"], "hmac-sha256-counter")
                self.assertEqual(key["kdf_mode"], "hmac-sha256-counter")
                ctx = b"tenant-7"
                ct = self.encrypt(name, b"derived", context=b64(ctx))
                self.assertEqual(transit_local.decrypt_ciphertext(
                    key_type, material, ct, context=ctx, kdf="counter"), b"derived")
                with self.assertRaises(Exception):  # not the HKDF key
                    transit_local.decrypt_ciphertext(key_type, material, ct, context=ctx)
                local = transit_local.make_ciphertext(
                    key_type, material, b"from here",
                    os.urandom(transit_local.NONCE_SIZE[key_type]), context=ctx, kdf="counter")
                self.assertEqual(self.decrypt(name, local, context=b64(ctx)), b"from here")
                # a backup says kdf 0, and a restore of it derives the same way
                self.configure(name, exportable=True, allow_plaintext_backup=True)
                r = self.req("GET", "transit/backup/" + name)
                self.assertStatus(r, 200)
                blob = r.data["backup"]
                self.assertEqual(json.loads(base64.b64decode(blob))["policy"]["kdf"], 0)
                again = self.uniq("rst")
                self.assertStatus(self.req("POST", "transit/restore/" + again,
                                           {"backup": blob}), 204)
                self.assertEqual(self.read_key(again)["kdf"], "hmac-sha256-counter")
                self.assertEqual(self.decrypt(again, ct, context=b64(ctx)), b"derived")
        # a key created (not imported) with derivation keeps HKDF
        made = self.uniq("made")
        self.assertStatus(self.req("POST", "transit/keys/" + made, {"derived": True}), 200)
        self.assertEqual(self.read_key(made)["kdf"], "hkdf_sha256")
        self.assertNotIn("kdf_mode", self.read_key(made))

    def test_rotation_refused_unless_allowed(self):
        name = self.uniq("imp")
        self.import_key(name, os.urandom(32))
        r = self.req("POST", "transit/keys/%s/rotate" % name)
        self.assertError(r, 500, wrapped("imported key %s does not allow rotation within Vault"
                                         % name))
        other = self.uniq("imp")
        material = os.urandom(32)
        self.import_key(other, material, allow_rotation=True)
        self.assertTrue(self.read_key(other)["imported_key_allow_rotation"])
        old = self.encrypt(other, b"v1")
        data = self.rotate(other)
        self.assertEqual(data["latest_version"], 2)
        self.assertFalse(data["imported_key"])
        self.assertEqual(self.decrypt(other, old), b"v1")

    def test_backup_restore_keeps_the_rotation_rule(self):
        # backup wrote Imported/AllowImportedKeyRotation as false and restore ignored them: a
        # BYOK key that may not rotate became rotatable (and auto-rotated) once restored
        for allow in (False, True):
            with self.subTest(allow_rotation=allow):
                name = self.uniq("imp")
                self.import_key(name, os.urandom(32), allow_rotation=allow)
                self.configure(name, exportable=True, allow_plaintext_backup=True)
                r = self.req("GET", "transit/backup/" + name)
                self.assertStatus(r, 200)
                blob = r.data["backup"]
                doc = json.loads(base64.b64decode(blob))
                self.assertTrue(doc["policy"]["Imported"])
                self.assertEqual(doc["policy"]["AllowImportedKeyRotation"], allow)
                again = self.uniq("rst")
                r = self.req("POST", "transit/restore/" + again, {"backup": blob})
                self.assertIn(r.status, (200, 204), r.describe())
                key = self.read_key(again)
                self.assertTrue(key["imported_key"])
                self.assertEqual(key["imported_key_allow_rotation"], allow)
                r = self.req("POST", "transit/keys/%s/rotate" % again)
                if allow:
                    self.assertStatus(r, 200)
                else:
                    self.assertError(r, 500, wrapped(
                        "imported key %s does not allow rotation within Vault" % again))
                    self.assertEqual(self.read_key(again)["latest_version"], 1)

    def test_import_version(self):
        name = self.uniq("imp")
        v1, v2 = os.urandom(32), os.urandom(32)
        self.import_key(name, v1)
        r = self.req("POST", "transit/keys/%s/import_version" % name,
                     {"ciphertext": self.ciphertext(v2)})
        self.assertStatus(r, 204)
        self.assertEqual(self.read_key(name)["latest_version"], 2)
        ct = self.encrypt(name, b"second")
        self.assertTrue(ct.startswith("vault:v2:"))
        self.assertEqual(transit_local.decrypt_ciphertext("aes256-gcm96", v2, ct), b"second")
        local = transit_local.make_ciphertext("aes256-gcm96", v1, b"first", os.urandom(12))
        self.assertEqual(self.decrypt(name, local), b"first")
        r = self.req("POST", "transit/keys/%s/import_version" % name,
                     {"ciphertext": self.ciphertext(v2), "version": 1})
        self.assertError(r, 500, wrapped("provided type does not support importing key "
                                         "versions"))
        # a generated key and an unknown key are refused
        gen, _ = self.create_key()
        r = self.req("POST", "transit/keys/%s/import_version" % gen,
                     {"ciphertext": self.ciphertext(v2)})
        self.assertError(r, 500, wrapped("the import_version endpoint can only be used with an "
                                         "imported key"))
        r = self.req("POST", "transit/keys/nope-%s/import_version" % name,
                     {"ciphertext": self.ciphertext(v2)})
        self.assertError(r, 500, wrapped("no key found with name nope-%s; to import a new key, "
                                         "use the import/ endpoint" % name))

    def test_hmac_import(self):
        name = self.uniq("imp")
        material = os.urandom(48)
        self.import_key(name, material, type="hmac")
        key = self.read_key(name)
        self.assertEqual(key["key_size"], 48)
        r = self.req("POST", "transit/hmac/%s" % name, {"input": b64(b"msg")})
        self.assertStatus(r, 200)
        mac = hm.new(material, b"msg", hashlib.sha256).digest()
        self.assertEqual(r.data["hmac"], "vault:v1:" + base64.b64encode(mac).decode())

    def test_signing_key_import(self):
        keys = {
            "ed25519": ed25519.Ed25519PrivateKey.generate(),
            "ecdsa-p256": ec.generate_private_key(ec.SECP256R1()),
            "ecdsa-p384": ec.generate_private_key(ec.SECP384R1()),
            "ecdsa-p521": ec.generate_private_key(ec.SECP521R1()),
            "rsa-2048": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        }
        for key_type, priv in keys.items():
            with self.subTest(type=key_type):
                name = self.uniq("imp")
                der = priv.private_bytes(serialization.Encoding.DER,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())
                self.import_key(name, der, type=key_type)
                r = self.req("POST", "transit/sign/%s" % name, {"input": b64(b"signed")})
                self.assertStatus(r, 200)
                sig = base64.b64decode(r.data["signature"].split(":", 2)[2])
                if key_type == "ed25519":
                    priv.public_key().verify(sig, b"signed")
                    mine = priv.sign(b"local")
                elif key_type.startswith("rsa"):
                    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                      salt_length=padding.PSS.AUTO)
                    priv.public_key().verify(sig, b"signed", pss, hashes.SHA256())
                    mine = priv.sign(b"local", padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                                           salt_length=32), hashes.SHA256())
                    # and RSA-OAEP encryption by kmsd opens with the local key
                    r = self.req("POST", "transit/encrypt/%s" % name, {"plaintext": b64(b"oaep")})
                    self.assertStatus(r, 200)
                    raw = base64.b64decode(r.data["ciphertext"].split(":", 2)[2])
                    self.assertEqual(priv.decrypt(raw, padding.OAEP(
                        mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(),
                        label=None)), b"oaep")
                else:
                    priv.public_key().verify(sig, b"signed", ec.ECDSA(hashes.SHA256()))
                    mine = priv.sign(b"local", ec.ECDSA(hashes.SHA256()))
                r = self.req("POST", "transit/verify/%s" % name,
                             {"input": b64(b"local"),
                              "signature": "vault:v1:" + base64.b64encode(mine).decode()})
                self.assertStatus(r, 200)
                self.assertTrue(r.data["valid"])
        # material of another type, curve or size is refused with OpenBao's messages
        # (keysutil's parseFromKey)
        for have, want, msg in [
                ("ed25519", "ecdsa-p256", "invalid key type: expected ecdsa-p256, got "
                                          "ed25519.PrivateKey"),
                ("rsa-2048", "ecdsa-p256", "invalid key type: expected ecdsa-p256, got "
                                           "*rsa.PrivateKey"),
                ("ecdsa-p256", "rsa-2048", "invalid key type: expected rsa-2048, got "
                                           "*ecdsa.PrivateKey"),
                ("ecdsa-p384", "ecdsa-p256", "invalid curve: expected P-256, got P-384"),
                ("ecdsa-p256", "ecdsa-p521", "invalid curve: expected P-521, got P-256"),
                ("rsa-2048", "rsa-3072", "invalid key size: expected 384 bytes, got 256 bytes"),
                ("rsa-2048", "ed25519", "invalid key type: expected ed25519, got "
                                        "*rsa.PrivateKey")]:
            with self.subTest(have=have, want=want):
                der = keys[have].private_bytes(serialization.Encoding.DER,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption())
                r = self.import_key(self.uniq("imp"), der, status=500, type=want)
                self.assertEqual(r.errors, [wrapped("error importing key: " + msg)])

    def test_refusals(self):
        name, _ = self.create_key()
        r = self.import_key(name, os.urandom(32), status=500)
        self.assertEqual(r.errors, [wrapped(EXISTING)])

        fresh = self.uniq("imp")
        good = self.ciphertext(os.urandom(32))
        cases = [
            ({"ciphertext": good, "hash_function": "MD5"}, 400, "unknown hash function: MD5"),
            ({"ciphertext": good, "type": "aes512"}, 400, "unknown key type: aes512"),
            ({"ciphertext": "%%%"}, 500, wrapped("illegal base64 data at input byte 0")),
            ({"ciphertext": b64(b"short")}, 500, wrapped("provided ciphertext is too short")),
            # the right wrapping key, the wrong OAEP hash
            ({"ciphertext": good, "hash_function": "SHA384"}, 500,
             wrapped("crypto/rsa: decryption error")),
            ({"ciphertext": good, "convergent_encryption": True}, 500,
             wrapped("import cannot be used on keys with convergent encryption enabled")),
            # not in OpenBao's schema: present at all (d.Raw), whatever the value, refuses
            ({"ciphertext": good, "convergent_encryption": "not a bool"}, 500,
             wrapped("import cannot be used on keys with convergent encryption enabled")),
            ({"ciphertext": good, "auto_rotate_period": "2h"}, 500,
             wrapped("allow_rotation must be set to true if auto-rotation is enabled")),
            ({"ciphertext": good, "type": "aes128-gcm96"}, 500,
             wrapped("error importing key: invalid key size 32 bytes for key type "
                     "aes128-gcm96")),
            ({}, 500, wrapped("provided type does not support public_key import")),
        ]
        for body, status, msg in cases:
            with self.subTest(body=sorted(body)):
                r = self.req("POST", "transit/keys/%s/import" % fresh, body)
                self.assertError(r, status, msg)
        # a tampered KWP part
        raw = bytearray(base64.b64decode(good))
        raw[-1] ^= 1
        r = self.req("POST", "transit/keys/%s/import" % fresh,
                     {"ciphertext": base64.b64encode(bytes(raw)).decode()})
        self.assertError(r, 500, wrapped("kwp: unwrap failed"))
        # an ephemeral key that is not 256 bits
        r = self.req("POST", "transit/keys/%s/import" % fresh,
                     {"ciphertext": self.ciphertext(os.urandom(32), eph=os.urandom(16))})
        self.assertError(r, 500, wrapped("expected ephemeral AES key to be 256-bit"))
        # nothing was created along the way
        self.assertStatus(self.req("GET", "transit/keys/%s" % fresh), 404)

    def test_byok_export(self):
        from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding
        dst, _ = self.create_key(type="rsa-3072", exportable=True)
        src, _ = self.create_key(type="aes256-gcm96", exportable=True)
        self.rotate(src)
        pem = self.req("GET", "transit/export/signing-key/%s/1?format=pem" % dst)
        self.assertStatus(pem, 200)
        dst_priv = serialization.load_pem_private_key(pem.data["keys"]["1"].encode(), None)
        for hash_name, version, want in (("SHA256", None, ["1", "2"]), ("SHA512", "v2", ["2"]),
                                         ("SHA1", "latest", ["2"])):
            with self.subTest(hash=hash_name, version=version):
                path = "transit/byok-export/%s/%s" % (dst, src)
                if version:
                    path += "/" + version
                r = self.req("GET", path + "?hash=" + hash_name)
                self.assertStatus(r, 200)
                self.assertEqual(r.data["name"], src)
                self.assertEqual(r.data["type"], "aes256-gcm96")
                self.assertEqual(sorted(r.data["keys"]), want)
                for ver, blob in r.data["keys"].items():
                    raw = base64.b64decode(blob)
                    h = HASHES[hash_name]
                    eph = dst_priv.decrypt(raw[:384], padding.OAEP(
                        mgf=padding.MGF1(algorithm=h()), algorithm=h(), label=None))
                    got = aes_key_unwrap_with_padding(eph, raw[384:])
                    ex = self.req("GET", "transit/export/encryption-key/%s/%s" % (src, ver))
                    self.assertEqual(base64.b64encode(got).decode(), ex.data["keys"][ver])
        # a signing key travels as PKCS#8 and imports elsewhere
        ed, _ = self.create_key(type="ed25519", exportable=True)
        r = self.req("GET", "transit/byok-export/%s/%s" % (dst, ed))
        raw = base64.b64decode(r.data["keys"]["1"])
        eph = dst_priv.decrypt(raw[:384], padding.OAEP(mgf=padding.MGF1(hashes.SHA256()),
                                                       algorithm=hashes.SHA256(), label=None))
        key = serialization.load_der_private_key(aes_key_unwrap_with_padding(eph, raw[384:]),
                                                 None)
        pub = self.req("GET", "transit/export/public-key/%s/1" % ed).data["keys"]["1"]
        self.assertEqual(base64.b64encode(key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode(), pub)
        # refusals
        plain, _ = self.create_key()
        cases = [
            ("transit/byok-export/nope/%s" % src, 500,
             wrapped("no such destination key to export to")),
            ("transit/byok-export/%s/nope" % dst, 500, wrapped("no such source key for export")),
            ("transit/byok-export/%s/%s" % (dst, plain), 400, "key is not exportable"),
            ("transit/byok-export/%s/%s/x" % (dst, src), 400, "invalid key version"),
            ("transit/byok-export/%s/%s/9" % (dst, src), 400,
             "version does not exist or cannot be found"),
            ("transit/byok-export/%s/%s?hash=MD5" % (dst, src), 500,
             wrapped("unknown hash function: MD5")),
            ("transit/byok-export/%s/%s" % (src, src), 500,
             wrapped("key wrapping (requring message signing) is not supported for key type "
                     "aes256-gcm96")),
            ("transit/byok-export/%s/%s" % (ed, src), 500,
             wrapped("unsupported key type in use; must be a rsa key")),
        ]
        for path, status, msg in cases:
            with self.subTest(path=path):
                self.assertError(self.req("GET", path), status, msg)


if __name__ == "__main__":
    unittest.main()
