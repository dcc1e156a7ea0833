"""Transit backup/:name and restore(/:name) through hvac (backup_key, restore_key) and raw HTTP:
round trips that keep versions, floors and flags, OpenBao's refusals, and a restored key whose
backup is OpenBao's keysutil JSON. ECDSA and RSA versions are Go big integers (bare JSON
integers, which Python's json reads and writes natively): a document built here with
`cryptography` keys, as OpenBao marshals one, restores and its signatures verify with
`cryptography`; kmsd's own backups give back the keys it signs with."""

import base64
import datetime
import json
import os
import unittest

import hvac  # Debian's python3-hvac (/usr/bin/python3); missing fails, never skips
import hvac.exceptions
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

import transit_local
from kmsd_harness import KmsdTestCase, b64, multierror

BAO_TYPES = {"ecdsa-p256": 1, "ecdsa-p384": 6, "ecdsa-p521": 7, "rsa-2048": 3, "rsa-3072": 9,
             "rsa-4096": 4}
CURVES = {"ecdsa-p256": ec.SECP256R1(), "ecdsa-p384": ec.SECP384R1(),
          "ecdsa-p521": ec.SECP521R1()}


def bao_entry(key, created):
    """A keysutil KeyEntry for a cryptography private key, as Go's encoding/json writes it."""
    entry = {"key": None, "hmac_key": base64.b64encode(bytes(range(32))).decode(),
             "time": created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "ec_x": None, "ec_y": None,
             "ec_d": None, "rsa_key": None, "rsa_public_key": None, "public_key": "",
             "convergent_version": 0, "creation_time": int(created.timestamp()),
             "certificate_chain": None, "external_key_ref": ""}
    if isinstance(key, ec.EllipticCurvePrivateKey):
        nums = key.private_numbers()
        entry.update(ec_x=nums.public_numbers.x, ec_y=nums.public_numbers.y,
                     ec_d=nums.private_value,
                     public_key=key.public_key().public_bytes(
                         serialization.Encoding.PEM,
                         serialization.PublicFormat.SubjectPublicKeyInfo).decode())
    else:
        nums = key.private_numbers()
        pub = nums.public_numbers
        entry["rsa_key"] = {"N": pub.n, "E": pub.e, "D": nums.d, "Primes": [nums.p, nums.q],
                            "Precomputed": {"Dp": nums.dmp1, "Dq": nums.dmq1, "Qinv": nums.iqmp,
                                            "CRTValues": []}}
        entry["rsa_public_key"] = {"N": pub.n, "E": pub.e}
    return entry


def bao_backup(name, key_type, keys):
    """OpenBao's KeyData for versions 1..len(keys), base64 as backup/ returns it."""
    created = datetime.datetime(2025, 1, 2, 3, 4, 5, 600000, tzinfo=datetime.timezone.utc)
    entries = [bao_entry(k, created + datetime.timedelta(days=i)) for i, k in enumerate(keys)]
    zero = dict(entries[0], hmac_key=None, time="0001-01-01T00:00:00Z", ec_x=None, ec_y=None,
                ec_d=None, rsa_key=None, rsa_public_key=None, public_key="", creation_time=0)
    policy = {"name": name, "keys": {str(i + 1): e for i, e in enumerate(entries)},
              "derived": False, "kdf": 0, "convergent_encryption": False, "exportable": True,
              "min_decryption_version": 1, "min_encryption_version": 0,
              "latest_version": len(keys), "archive_version": len(keys),
              "archive_min_version": 0, "min_available_version": 0, "deletion_allowed": False,
              "convergent_version": 0, "type": BAO_TYPES[key_type],
              "backup_info": {"time": "2025-02-01T00:00:00Z", "version": len(keys)},
              "restore_info": None, "allow_plaintext_backup": True, "version_template": "",
              "storage_prefix": "", "auto_rotate_period": 0, "Imported": False,
              "AllowImportedKeyRotation": False, "soft_deleted": False}
    doc = {"policy": policy, "archived_keys": {"keys": [zero] + entries}}
    return base64.b64encode(json.dumps(doc).encode()).decode()


def verify_with(pub, key_type, sig_b64, msg):
    """Raises InvalidSignature unless kmsd's default signature (sha2-256; ASN.1 ECDSA, PSS
    with the largest salt for RSA) verifies with cryptography's public key."""
    sig = base64.b64decode(sig_b64.split(":", 2)[2])
    if key_type.startswith("ecdsa"):
        pub.verify(sig, msg, ec.ECDSA(hashes.SHA256()))
    else:
        pub.verify(sig, msg, padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                         salt_length=padding.PSS.AUTO), hashes.SHA256())


def key_from_entry(key_type, entry):
    """The cryptography private key of a KeyEntry of a kmsd backup."""
    if key_type.startswith("ecdsa"):
        pub = ec.EllipticCurvePublicNumbers(entry["ec_x"], entry["ec_y"], CURVES[key_type])
        return ec.EllipticCurvePrivateNumbers(entry["ec_d"], pub).private_key()
    rk = entry["rsa_key"]
    p, q = rk["Primes"]
    pre = rk["Precomputed"]
    return rsa.RSAPrivateNumbers(p, q, rk["D"], pre["Dp"], pre["Dq"], pre["Qinv"],
                                 rsa.RSAPublicNumbers(rk["E"], rk["N"])).private_key()


class TransitBackupTest(KmsdTestCase):
    def client(self):
        cli = hvac.Client(url=self.server.addr, token=self.server.root_token)
        self.addCleanup(cli.adapter.close)
        return cli

    def test_hvac_backup_restore_round_trip(self):
        cli = self.client()
        name = self.uniq("bk")
        cli.secrets.transit.create_key(name, exportable=True, allow_plaintext_backup=True)
        cts = []
        for i in range(3):
            if i:
                cli.secrets.transit.rotate_key(name)
            cts.append(cli.secrets.transit.encrypt_data(name, b64("v%d" % i))["data"]["ciphertext"])
        cli.secrets.transit.update_key_configuration(name, min_decryption_version=2,
                                                     deletion_allowed=True)
        backup = cli.secrets.transit.backup_key(name)["data"]["backup"]
        doc = json.loads(base64.b64decode(backup))
        self.assertEqual(doc["policy"]["name"], name)
        self.assertEqual(doc["policy"]["latest_version"], 3)
        self.assertEqual(sorted(doc["policy"]["keys"]), ["2", "3"])
        self.assertEqual(len(doc["archived_keys"]["keys"]), 4)
        self.assertEqual(len(base64.b64decode(doc["policy"]["keys"]["3"]["key"])), 32)

        cli.secrets.transit.delete_key(name)
        r = cli.secrets.transit.restore_key(backup)
        self.assertEqual(r.status_code, 204)
        for i in (1, 2):
            pt = cli.secrets.transit.decrypt_data(name, cts[i])["data"]["plaintext"]
            self.assertEqual(base64.b64decode(pt), b"v%d" % i)
        key = cli.secrets.transit.read_key(name)["data"]
        self.assertEqual(key["latest_version"], 3)
        self.assertEqual(key["min_decryption_version"], 2)
        self.assertTrue(key["allow_plaintext_backup"])
        self.assertTrue(key["deletion_allowed"])

        # under another name, then over an existing key only with force
        other = self.uniq("bk-copy")
        cli.secrets.transit.restore_key(backup, name=other)
        pt = cli.secrets.transit.decrypt_data(other, cts[2])["data"]["plaintext"]
        self.assertEqual(base64.b64decode(pt), b"v2")
        with self.assertRaises(hvac.exceptions.InternalServerError) as e:
            cli.secrets.transit.restore_key(backup, name=other)
        self.assertIn('key "%s" already exists' % other, str(e.exception))
        self.assertEqual(cli.secrets.transit.restore_key(backup, name=other,
                                                         force=True).status_code, 204)

    def test_restore_name_only_from_the_path(self):
        # restore's pattern captures "name" (empty without one) over the body's, so a body name
        # is replaced and the backup's own name is restored (OpenBao path_restore.go)
        name = self.uniq("bkn")
        self.assertStatus(self.req("POST", "transit/keys/" + name,
                                   {"exportable": True, "allow_plaintext_backup": True}), 200)
        backup = self.req("GET", "transit/backup/" + name).data["backup"]
        other = self.uniq("bkn-other")
        r = self.req("POST", "transit/restore", {"backup": backup, "name": other})
        self.assertError(r, 500, multierror('key "%s" already exists' % name))
        self.assertStatus(self.req("GET", "transit/keys/" + other), 404)

    def test_restore_answers_204_with_unknown_or_replaced_fields(self):
        # restore returns no response, so OpenBao's framework adds no warnings: 204
        # (sdk/framework/backend.go only warns on a non-nil response)
        name = self.uniq("bkw")
        self.assertStatus(self.req("POST", "transit/keys/" + name,
                                   {"exportable": True, "allow_plaintext_backup": True}), 200)
        backup = self.req("GET", "transit/backup/" + name).data["backup"]
        other = self.uniq("bkw-other")
        r = self.req("POST", "transit/restore/" + other,
                     {"backup": backup, "name": "x", "bogus": 1})
        self.assertStatus(r, 204)
        self.assertEqual(r.body, b"")
        self.assertStatus(self.req("GET", "transit/keys/" + other), 200)

    def test_openbao_asymmetric_backup_restores(self):
        cli = self.client()
        t = cli.secrets.transit
        msg = b"signed by a key that came from OpenBao"
        for key_type in BAO_TYPES:
            with self.subTest(key_type=key_type):
                if key_type.startswith("ecdsa"):
                    keys = [ec.generate_private_key(CURVES[key_type]) for _ in range(2)]
                else:
                    bits = int(key_type.split("-")[1])
                    keys = [rsa.generate_private_key(65537, bits) for _ in range(2)]
                name = self.uniq("bao-" + key_type)
                self.assertEqual(t.restore_key(bao_backup(name, key_type, keys)).status_code,
                                 204)
                key = t.read_key(name)["data"]
                self.assertEqual(key["type"], key_type)
                self.assertEqual(key["latest_version"], 2)
                self.assertEqual(key["keys"]["2"]["creation_time"],
                                 "2025-01-03T03:04:05.6Z")
                for v, k in ((1, keys[0]), (2, keys[1])):
                    pem = k.public_key().public_bytes(
                        serialization.Encoding.PEM,
                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
                    self.assertEqual(key["keys"][str(v)]["public_key"], pem)
                    sig = t.sign_data(name, hash_input=b64(msg),
                                      key_version=v)["data"]["signature"]
                    self.assertTrue(sig.startswith("vault:v%d:" % v))
                    verify_with(k.public_key(), key_type, sig, msg)
                    with self.assertRaises(InvalidSignature):
                        verify_with(k.public_key(), key_type, sig, msg + b"!")
                # a signature made by cryptography with version 1's key verifies in kmsd
                if key_type.startswith("ecdsa"):
                    mine = keys[0].sign(msg, ec.ECDSA(hashes.SHA256()))
                else:
                    mine = keys[0].sign(msg, padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                                         salt_length=32), hashes.SHA256())
                self.assertTrue(t.verify_signed_data(
                    name, hash_input=b64(msg),
                    signature="vault:v1:" + base64.b64encode(mine).decode())["data"]["valid"])

    def test_kmsd_asymmetric_backup_gives_its_keys(self):
        cli = self.client()
        t = cli.secrets.transit
        msg = b"made in kmsd"
        for key_type in ("ecdsa-p384", "rsa-2048"):
            with self.subTest(key_type=key_type):
                name = self.uniq("kb-" + key_type)
                t.create_key(name, key_type=key_type, exportable=True,
                             allow_plaintext_backup=True)
                sig = t.sign_data(name, hash_input=b64(msg))["data"]["signature"]
                backup = t.backup_key(name)["data"]["backup"]
                doc = json.loads(base64.b64decode(backup))  # Go's bare big integers
                entry = doc["policy"]["keys"]["1"]
                self.assertIsNone(entry["key"])
                k = key_from_entry(key_type, entry)
                verify_with(k.public_key(), key_type, sig, msg)
                pem = t.read_key(name)["data"]["keys"]["1"]["public_key"]
                self.assertEqual(k.public_key().public_bytes(
                    serialization.Encoding.PEM,
                    serialization.PublicFormat.SubjectPublicKeyInfo).decode(), pem)
                if key_type.startswith("rsa"):
                    nums = k.private_numbers()
                    self.assertEqual(entry["rsa_key"]["Precomputed"]["Dp"],
                                     rsa.rsa_crt_dmp1(nums.d, nums.p))
                    self.assertEqual(entry["rsa_key"]["Precomputed"]["CRTValues"], [])
                    self.assertEqual(entry["rsa_public_key"], {"N": nums.public_numbers.n,
                                                               "E": 65537})
                # restored into another name, under hvac, it signs as the original
                copy = self.uniq("kb-copy")
                t.restore_key(backup, name=copy)
                sig2 = t.sign_data(copy, hash_input=b64(msg))["data"]["signature"]
                verify_with(k.public_key(), key_type, sig2, msg)
                self.assertTrue(t.verify_signed_data(name, hash_input=b64(msg),
                                                     signature=sig2)["data"]["valid"])

    def test_asymmetric_refusals(self):
        key = rsa.generate_private_key(3, 2048)
        name = self.uniq("e3")
        self.assertError(self.req("POST", "transit/restore",
                                  {"backup": bao_backup(name, "rsa-2048", [key])}), 400,
                         "invalid key material for version 1 in backup: RSA keys with a public "
                         "exponent other than 65537 are not supported")
        # a P-256 key in a P-384 policy
        key = ec.generate_private_key(ec.SECP256R1())
        doc = bao_backup(name, "ecdsa-p384", [key])
        self.assertError(self.req("POST", "transit/restore", {"backup": doc}), 400,
                         "invalid key material for version 1 in backup: invalid ecdsa-p384 key")
        self.assertStatus(self.req("GET", "transit/keys/" + name), 404)

    def test_refusals(self):
        name = self.uniq("nobk")
        self.assertEqual(self.req("POST", "transit/keys/" + name, {"exportable": True}).status,
                         200)
        self.assertError(self.req("GET", "transit/backup/" + name), 500,
                         multierror("plaintext backup is disallowed on the policy"))
        self.assertError(self.req("GET", "transit/backup/" + name + "-none"), 500,
                         multierror('key "%s-none" not found' % name))
        self.assertError(self.req("POST", "transit/restore", {}), 400,
                         "'backup' must be supplied")
        plain = self.uniq("plain")
        self.assertEqual(self.req("POST", "transit/keys/" + plain, {}).status, 200)
        self.assertError(self.req("GET", "transit/backup/" + plain), 500,
                         multierror("exporting is disallowed on the policy"))

    def test_counter_kdf_backup_restores(self):
        """A backup whose derived key has OpenBao's kdf 0 (the legacy hmac-sha256-counter KDF,
        which OpenBao's imported derived keys and pre-HKDF keys carry) restores and derives as
        OpenBao does; kmsd refused it (400) before. Convergent and ed25519 keys cannot use that
        KDF and stay refused, as does a kdf OpenBao does not have."""
        name = self.uniq("ctr")
        r = self.req("POST", "transit/keys/" + name, {"derived": True, "exportable": True,
                                                      "allow_plaintext_backup": True})
        self.assertStatus(r, 200)
        r = self.req("GET", "transit/export/encryption-key/%s/1" % name)
        self.assertStatus(r, 200)
        material = base64.b64decode(r.data["keys"]["1"])
        r = self.req("GET", "transit/backup/" + name)
        self.assertStatus(r, 200)
        doc = json.loads(base64.b64decode(r.data["backup"]))
        self.assertEqual(doc["policy"]["kdf"], 1)

        def blob(**policy):
            d = json.loads(json.dumps(doc))
            d["policy"].update(policy)
            return base64.b64encode(json.dumps(d).encode()).decode()

        again = self.uniq("rst")
        self.assertStatus(self.req("POST", "transit/restore/" + again, {"backup": blob(kdf=0)}),
                          204)
        self.assertEqual(self.read_key(again)["kdf"], "hmac-sha256-counter")
        ctx = b"ctx-1"
        ct = self.encrypt(again, b"counter", context=b64(ctx))
        self.assertEqual(transit_local.decrypt_ciphertext("aes256-gcm96", material, ct,
                                                          context=ctx, kdf="counter"),
                         b"counter")
        local = transit_local.make_ciphertext("aes256-gcm96", material, b"made here",
                                              os.urandom(12), context=ctx, kdf="counter")
        self.assertEqual(self.decrypt(again, local, context=b64(ctx)), b"made here")
        refused = "restore of keys derived with this kdf is not supported by kmsd"
        for policy in ({"kdf": 0, "convergent_encryption": True, "convergent_version": 3},
                       {"kdf": 2}):
            with self.subTest(**policy):
                self.assertError(self.req("POST", "transit/restore/" + self.uniq("no"),
                                          {"backup": blob(**policy)}), 400, refused)
        ed = self.uniq("ed")
        self.assertStatus(self.req("POST", "transit/keys/" + ed, {
            "type": "ed25519", "derived": True, "exportable": True,
            "allow_plaintext_backup": True}), 200)
        r = self.req("GET", "transit/backup/" + ed)
        self.assertStatus(r, 200)
        d = json.loads(base64.b64decode(r.data["backup"]))
        d["policy"]["kdf"] = 0
        self.assertError(self.req("POST", "transit/restore/" + self.uniq("no"), {
            "backup": base64.b64encode(json.dumps(d).encode()).decode()}), 400, refused)


if __name__ == "__main__":
    unittest.main()
