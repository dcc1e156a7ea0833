"""Transit's auto_rotate_period on a running kmsd (transit-api.md section 5): a key whose latest
version is older than its period is rotated by the server itself, once, audited as the
server's own operation; a key whose period has not run out is left alone, and ciphertexts of
the old version still decrypt. The client side is hvac, as a user's would be.

A key is made overdue the way it happens in real life: restored from a backup whose version 1
was created years ago. The server scans at its first controller tick after start, so the test
restarts it rather than waiting for the next scheduled scan."""
import base64
import json
import os
import shutil
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from kmsd_harness import KmsdServer, KmsdTestCase, wait_for  # noqa: E402

import hvac  # noqa: E402


def audit_lines(path):
    out = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                out.append(json.loads(line))
    return out


class AutoRotateTest(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="kmsd-autorotate-")
        self.audit = os.path.join(self.dir, "audit.log")
        self.srv = KmsdServer(mode="config", workdir=self.dir, config={"audit_file": self.audit})
        self.srv.start()
        KmsdTestCase.init_config_server(self.srv)

    def tearDown(self):
        self.srv.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)

    def client(self):
        c = hvac.Client(url="http://127.0.0.1:%d" % self.srv.port, token=self.srv.token)
        self.addCleanup(c.adapter.close)
        return c

    def latest(self, c, name):
        return c.secrets.transit.read_key(name=name)["data"]["latest_version"]

    def test_overdue_key_rotates_once_after_start(self):
        c = self.client()
        c.secrets.transit.create_key(name="src", exportable=True, allow_plaintext_backup=True)
        backup = c.secrets.transit.backup_key(name="src")["data"]["backup"]
        kd = json.loads(base64.b64decode(backup))
        kd["policy"]["auto_rotate_period"] = 3600 * 10**9
        for entry in list(kd["policy"]["keys"].values()) + kd["archived_keys"]["keys"]:
            entry["time"] = "2019-06-01T00:00:00Z"
            entry["creation_time"] = 1559347200
        c.secrets.transit.restore_key(backup=base64.b64encode(json.dumps(kd).encode()).decode(),
                                      name="overdue")
        c.write("transit/keys/hourly", auto_rotate_period="1h")  # hvac 0.11 has no parameter
        old = c.secrets.transit.encrypt_data(name="overdue", plaintext=base64.b64encode(
            b"written before").decode())["data"]["ciphertext"]
        self.assertTrue(old.startswith("vault:v1:"), old)

        rc = self.srv.stop()
        self.assertEqual(rc, 0, self.srv.log_tail())
        self.srv.start()
        c = self.client()
        wait_for(lambda: self.latest(c, "overdue") == 2, 30,
                 "the server to rotate the overdue key")
        self.assertEqual(self.latest(c, "hourly"), 1)
        self.assertEqual(self.latest(c, "src"), 1)
        new = c.secrets.transit.encrypt_data(name="overdue", plaintext=base64.b64encode(
            b"written after").decode())["data"]["ciphertext"]
        self.assertTrue(new.startswith("vault:v2:"), new)
        pt = c.secrets.transit.decrypt_data(name="overdue", ciphertext=old)["data"]["plaintext"]
        self.assertEqual(base64.b64decode(pt), b"written before")
        self.assertEqual(c.secrets.transit.read_key(name="overdue")["data"][
            "auto_rotate_period"], 3600)

        def rotation_lines():
            return [e for e in audit_lines(self.audit)
                    if e.get("subject") == "system:kmsd-autorotate"]
        lines = wait_for(lambda: len(rotation_lines()) == 2 and rotation_lines(), 10,
                         "the rotation's two audit lines")
        req, resp = lines
        self.assertEqual((req["type"], resp["type"]), ("request", "response"))
        self.assertEqual(resp["op"], "rotate")
        self.assertEqual(resp["key"], "overdue")
        self.assertEqual(resp["key_version"], 2)
        self.assertEqual(resp["status"], 200)
        self.assertEqual(resp["request"]["path"], "transit/keys/overdue/rotate")
        self.assertIn("auto-rotated", self.srv.log_text())


if __name__ == "__main__":
    unittest.main()
