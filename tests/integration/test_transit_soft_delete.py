"""Transit keys/:name/soft-delete and soft-delete-restore against a real kmsd, through hvac
(its raw adapter for the two paths hvac has no method for, its transit methods for the rest):
the key object with soft_deleted, OpenBao's repeat warnings, and the key refused for every use
with "refusing to use soft-deleted key" at OpenBao's statuses until it is restored."""

import base64
import unittest

import hvac  # Debian's python3-hvac (/usr/bin/python3); missing fails, never skips
import hvac.exceptions

from kmsd_harness import KmsdTestCase, b64, multierror

SD = "refusing to use soft-deleted key"


class TransitSoftDeleteTest(KmsdTestCase):
    def client(self):
        cli = hvac.Client(url=self.server.addr, token=self.server.root_token)
        self.addCleanup(cli.adapter.close)
        return cli

    def test_hvac_soft_delete_round_trip(self):
        cli = self.client()
        t = cli.secrets.transit
        name = self.uniq("sd")
        t.create_key(name, exportable=True, allow_plaintext_backup=True)
        ct = t.encrypt_data(name, b64(b"kept"))["data"]["ciphertext"]

        # hvac's JSON adapter answers a 200 as the parsed body
        r = cli.adapter.delete("/v1/transit/keys/%s/soft-delete" % name)
        self.assertTrue(r["data"]["soft_deleted"])
        self.assertFalse(r.get("warnings"))
        r = cli.adapter.delete("/v1/transit/keys/%s/soft-delete" % name)
        self.assertEqual(r["warnings"], ["key was already marked as soft deleted"])
        self.assertTrue(t.read_key(name)["data"]["soft_deleted"])
        self.assertIn(name, t.list_keys()["data"]["keys"])

        for call in (lambda: t.encrypt_data(name, b64(b"x")),
                     lambda: t.decrypt_data(name, ct),
                     lambda: t.rewrap_data(name, ct),
                     lambda: t.generate_data_key(name, "plaintext"),
                     lambda: t.generate_hmac(name, b64(b"x"))):
            with self.assertRaises(hvac.exceptions.InvalidRequest) as e:
                call()
            self.assertIn(SD, str(e.exception))
        for call in (lambda: t.rotate_key(name),
                     lambda: t.backup_key(name),
                     lambda: t.export_key(name, "encryption-key")):
            with self.assertRaises(hvac.exceptions.InternalServerError) as e:
                call()
            self.assertIn(SD, str(e.exception))
        self.assertError(self.req("POST", "transit/keys/%s/rotate" % name), 500,
                         multierror(SD))

        r = cli.write("transit/keys/%s/soft-delete-restore" % name)
        self.assertFalse(r["data"]["soft_deleted"])
        r = cli.write("transit/keys/%s/soft-delete-restore" % name)
        self.assertEqual(r["warnings"], ["key was already restored"])
        pt = t.decrypt_data(name, ct)["data"]["plaintext"]
        self.assertEqual(base64.b64decode(pt), b"kept")

    def test_signing_key_and_absent_key(self):
        cli = self.client()
        t = cli.secrets.transit
        name = self.uniq("sd-ec")
        t.create_key(name, key_type="ecdsa-p256")
        sig = t.sign_data(name, hash_input=b64(b"m"))["data"]["signature"]
        cli.adapter.delete("/v1/transit/keys/%s/soft-delete" % name)
        with self.assertRaises(hvac.exceptions.InternalServerError) as e:
            t.sign_data(name, hash_input=b64(b"m"))
        self.assertIn(SD, str(e.exception))
        with self.assertRaises(hvac.exceptions.InvalidRequest) as e:
            t.verify_signed_data(name, hash_input=b64(b"m"), signature=sig)
        self.assertIn(SD, str(e.exception))
        cli.write("transit/keys/%s/soft-delete-restore" % name)
        self.assertTrue(t.verify_signed_data(name, hash_input=b64(b"m"),
                                             signature=sig)["data"]["valid"])
        # an absent key: nothing to do, 204
        r = self.req("DELETE", "transit/keys/%s/soft-delete" % self.uniq("none"))
        self.assertEqual(r.status, 204, r.describe())
        r = self.req("POST", "transit/keys/%s/soft-delete-restore" % self.uniq("none"), {})
        self.assertEqual(r.status, 204, r.describe())


if __name__ == "__main__":
    unittest.main()
