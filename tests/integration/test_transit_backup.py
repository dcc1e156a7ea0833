"""Transit backup/:name and restore(/:name) through hvac (backup_key, restore_key) and raw HTTP:
round trips that keep versions, floors and flags, OpenBao's refusals, and a restored key whose
backup is OpenBao's keysutil JSON."""

import base64
import json
import unittest

import hvac  # Debian's python3-hvac (/usr/bin/python3); missing fails, never skips
import hvac.exceptions

from kmsd_harness import KmsdTestCase, b64, multierror


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


if __name__ == "__main__":
    unittest.main()
