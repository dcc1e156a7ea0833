"""What a request leaves in the live kmsd process once it is answered (docs/operations.md,
"Secrets in memory"): the plaintexts a client sends or receives, data keys and exported keys
are wiped from kmsd's buffers when the request ends, over plain HTTP and over TLS, so a
memory disclosure (a core dump, /proc/<pid>/mem, a bug that reads freed heap) finds none of
them. Each scenario ends with the secret's request or answer as the last thing the connection
carried: nothing later overwrote a freed buffer by chance.

Found before these wipes: OpenSSL kept the last record it decrypted (a request's plaintext)
in its read buffer until the next record; a decrypt's answer stayed in the freed chain of the
buffer that sent it; a batch decrypt of 1000 items left ~1000 copies of its plaintexts in
freed heap (the JSON writer's realloc, json_dumps' copy, the sent chain); an exported key and
a data key one copy each.

The process memory is read from /proc/<pid>/mem (tests run as root).
"""

import base64
import http.client
import json
import os
import shutil
import ssl
import tempfile
import time
import unittest

from hooks_offload import process_memory
from kmsd_harness import KmsdServer
from test_tls import make_ca, make_leaf


def b64(b):
    return base64.b64encode(b).decode()


class MemoryHygieneCase:
    """The scenarios, over the connection self.conn() opens."""

    tls = False

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="kmsd-mem-")
        config = {}
        if cls.tls:
            ca_key, cls.ca = make_ca(cls.dir, "ca")
            key, crt = make_leaf(cls.dir, "server", ca_key, cls.ca, 1001)
            config = {"tls_cert_file": crt, "tls_key_file": key}
        cls.server = KmsdServer(mode="config", config=config)
        cls.server.start()
        c = cls.conn()
        cls.token = cls.call(c, "PUT", "sys/init", {}, token=None)["root_token"]
        cls.call(c, "POST", "sys/mounts/transit", {"type": "transit"})
        cls.call(c, "POST", "transit/keys/k", {})
        cls.call(c, "POST", "transit/keys/x", {"exportable": True})
        c.close()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.stop()
            cls.server.cleanup()
        finally:
            shutil.rmtree(cls.dir, ignore_errors=True)

    @classmethod
    def conn(cls):
        if cls.tls:
            ctx = ssl.create_default_context(cafile=cls.ca)
            return http.client.HTTPSConnection("127.0.0.1", cls.server.port, context=ctx,
                                               timeout=60)
        return http.client.HTTPConnection("127.0.0.1", cls.server.port, timeout=60)

    @classmethod
    def call(cls, c, method, path, body=None, token=True):
        headers = {"X-Vault-Token": cls.token} if token else {}
        c.request(method, "/v1/" + path, body=None if body is None else json.dumps(body),
                  headers=headers)
        r = c.getresponse()
        text = r.read()
        assert r.status in (200, 204), (path, r.status, text)
        return json.loads(text) if text else None

    def copies(self, secret):
        """How many copies of secret the process holds once it is done with the request: the
        client may have its answer (and scan) before kmsd's worker, preempted right after
        the write, has wiped the buffer that sent it; so the count is polled down to zero
        for up to 10 s, and the last count is returned."""
        deadline = time.monotonic() + 10
        while True:
            data = process_memory(self.server.proc.pid)
            self.assertGreater(len(data), 1 << 20)
            n = data.count(secret)
            if n == 0 or time.monotonic() > deadline:
                return n
            time.sleep(0.05)

    def test_a_plaintext_sent_to_encrypt(self):
        pt = b64(b"SENT-" + os.urandom(12).hex().encode())
        c = self.conn()
        ct = self.call(c, "POST", "transit/encrypt/k", {"plaintext": pt})["data"]["ciphertext"]
        self.assertTrue(ct.startswith("vault:v1:"))
        self.assertEqual(self.copies(pt.encode()), 0)
        c.close()

    def test_a_plaintext_decrypt_answers(self):
        pt = b64(b"ANSWERED-" + os.urandom(12).hex().encode())
        c = self.conn()
        ct = self.call(c, "POST", "transit/encrypt/k", {"plaintext": pt})["data"]["ciphertext"]
        got = self.call(c, "POST", "transit/decrypt/k", {"ciphertext": ct})["data"]["plaintext"]
        self.assertEqual(got, pt)
        self.assertEqual(self.copies(pt.encode()), 0)
        c.close()
        self.assertEqual(self.copies(pt.encode()), 0)

    def test_a_batch_decrypt_of_1000_items(self):
        pt = b64(b"BATCH-" + os.urandom(12).hex().encode())
        c = self.conn()
        res = self.call(c, "POST", "transit/encrypt/k",
                        {"batch_input": [{"plaintext": pt} for _ in range(1000)]})
        items = [{"ciphertext": r["ciphertext"]} for r in res["data"]["batch_results"]]
        res = self.call(c, "POST", "transit/decrypt/k", {"batch_input": items})
        self.assertEqual({r["plaintext"] for r in res["data"]["batch_results"]}, {pt})
        self.assertEqual(self.copies(pt.encode()), 0)
        c.close()

    def test_a_data_key_and_an_exported_key(self):
        c = self.conn()
        dk = self.call(c, "POST", "transit/datakey/plaintext/k", {})["data"]["plaintext"]
        self.assertEqual(self.copies(dk.encode()), 0)
        key = self.call(c, "GET", "transit/export/encryption-key/x/1")["data"]["keys"]["1"]
        self.assertEqual(len(base64.b64decode(key)), 32)
        self.assertEqual(self.copies(key.encode()), 0)
        c.close()


class PlainHttpTest(MemoryHygieneCase, unittest.TestCase):
    tls = False


class TlsTest(MemoryHygieneCase, unittest.TestCase):
    tls = True


if __name__ == "__main__":
    unittest.main()
