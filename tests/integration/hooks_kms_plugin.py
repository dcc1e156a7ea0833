"""The in-process KMS plugin's deadlines (grpc-timeout) against calls that wait: a kmsd built
with -DKMS_TEST_HOOKS=ON whose audit writer holds its fdatasync while $KMS_TEST_AUDIT_HOOKS/hold
exists (tests/integration/hooks_audit_async.py). A plugin call answers only once its response
audit line is durable, so with the writer held every call waits on its call thread.

- a running call is answered DEADLINE_EXCEEDED at its deadline, while its call thread still
  waits (never a late OK);
- a call still waiting for a call thread at its deadline (all 32 busy) is answered then and
  never runs: no audit record, no Transit operation, once the threads are free again;
- the calls that were given time are answered OK once the writer goes on.
"""

import concurrent.futures
import json
import os
import re
import shutil
import tempfile
import time
import unittest

import grpc

from kmsd_harness import KmsdServer, wait_for
from kms_plugin_helpers import Plugin, RawH2, load_stubs, rpc_error, wait_socket

SEED = bytes(range(32))
THREADS = 32  # the plugin's call threads when an audit device fsyncs (server/main.c)


class PluginDeadlines(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        load_stubs()
        cls.dir = tempfile.mkdtemp(prefix="kmsd-plugin-hooks-")
        cls.hooks = os.path.join(cls.dir, "hooks")
        os.mkdir(cls.hooks)
        cls.sock = os.path.join(cls.dir, "kms.sock")
        cls.audit = os.path.join(cls.dir, "audit.log")
        os.environ["KMS_TEST_AUDIT_HOOKS"] = cls.hooks
        try:
            cls.srv = KmsdServer(mode="config", workdir=cls.dir, config={
                "audit_file": cls.audit, "audit_fsync": "batch",
                "kms_plugins": [{"socket": cls.sock, "key": "etcd-k"}],
                "kms_plugin_status_interval": "1s"})
            cls.srv.start()
        finally:
            del os.environ["KMS_TEST_AUDIT_HOOKS"]
        try:
            r = cls.srv.request("PUT", "sys/init", {}, token=None)
            assert r.status == 200, r.describe()
            cls.srv.token = r.json["root_token"]
            assert cls.srv.request("POST", "sys/mounts/transit", {"type": "transit"}).status == 204
            assert cls.srv.request("POST", "transit/keys/etcd-k", {}).status == 200
            wait_socket(cls.sock)
            cls.p = Plugin(cls.sock)
        except BaseException:
            cls.srv.stop()
            cls.srv.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.unhold()
        cls.p.close()
        rc = cls.srv.stop()
        cls.srv.cleanup()
        shutil.rmtree(cls.dir, ignore_errors=True)
        assert rc == 0, rc

    @classmethod
    def unhold(cls):
        try:
            os.unlink(os.path.join(cls.hooks, "hold"))
        except FileNotFoundError:
            pass

    def held(self):
        return os.path.exists(os.path.join(self.hooks, "held"))

    def metric(self, name):
        r = self.srv.request("GET", "sys/metrics?format=prometheus")
        self.assertEqual(r.status, 200, r.describe())
        m = re.search(r"^%s (\d+)" % re.escape(name), r.body.decode(), re.M)
        self.assertIsNotNone(m, name)
        return int(m.group(1))

    def audit_uids(self):
        with open(self.audit) as f:
            return [json.loads(l).get("client_uid") for l in f if l.strip()]

    def test_calls_that_wait_past_their_deadline(self):
        pb, _ = load_stubs()
        self.assertEqual(self.p.encrypt(SEED, uid="before").key_id[:19], "transit/keys/etcd-k")
        with open(os.path.join(self.hooks, "hold"), "w"):
            pass
        self.addCleanup(self.unhold)
        h2 = RawH2(self.sock)
        self.addCleanup(h2.close)
        h2.handshake()
        pool = concurrent.futures.ThreadPoolExecutor(4)
        self.addCleanup(pool.shutdown)

        # a call that runs and waits for its audit line: answered at its deadline
        t0 = time.monotonic()
        h2.call(1, b"Encrypt", pb.EncryptRequest(plaintext=SEED, uid="ran-late")
                .SerializeToString(), [(b"grpc-timeout", b"700m")])
        a = h2.answer(1)
        waited = time.monotonic() - t0
        self.assertEqual(a["headers"]["grpc-status"], "4", a)
        self.assertEqual(a["headers"]["grpc-message"],
                         "deadline exceeded: no answer within the call's grpc-timeout")
        self.assertGreaterEqual(waited, 0.6)
        self.assertLess(waited, 5)
        self.assertTrue(self.held(), "the writer is no longer held: the call could have ended")

        # every other call thread busy (each waits for its audit line), then one more call: it
        # waits for a thread, is answered at its deadline, and never runs
        pending = self.metric("kmsd_audit_pending_lines")
        fills = [self.p.stub.Encrypt.future(pb.EncryptRequest(plaintext=SEED, uid="fill-%d" % i),
                                            timeout=120) for i in range(THREADS - 1)]
        # all received and taken by the threads (each waits for its audit line, none queued)
        # before the next one
        wait_for(lambda: self.metric("kmsd_kms_plugin_calls_queued") == 0 and
                 self.metric("kmsd_audit_pending_lines") >= pending + THREADS - 1, 30,
                 "the fill calls on every call thread")
        t0 = time.monotonic()
        h2.call(3, b"Encrypt", pb.EncryptRequest(plaintext=SEED, uid="never-ran")
                .SerializeToString(), [(b"grpc-timeout", b"1S")])
        a = h2.answer(3)
        waited = time.monotonic() - t0
        self.assertEqual(a["headers"]["grpc-status"], "4", a)
        self.assertGreaterEqual(waited, 0.9)
        self.assertLess(waited, 6)
        self.assertTrue(self.held())
        # the gRPC client's own deadline: the same answer
        code, _ = rpc_error(self.p.encrypt, SEED, uid="client-deadline", timeout=0.5)
        self.assertEqual(code, grpc.StatusCode.DEADLINE_EXCEEDED)

        # the writer goes on: the calls given time are answered OK
        self.unhold()
        for f in fills:
            self.assertTrue(f.result(60).ciphertext.startswith(b"vault:v1:"))
        self.assertEqual(self.p.encrypt(SEED, uid="after", timeout=10).key_id[:19],
                         "transit/keys/etcd-k")
        uids = wait_for(lambda: (lambda u: u if "after" in u else None)(self.audit_uids()), 20,
                        "the audit lines of the last call")
        # the call that ran is audited (it ran: its answer was dropped); the one answered while
        # it waited for a thread never ran
        self.assertIn("ran-late", uids)
        self.assertEqual(sum(1 for u in uids if u and u.startswith("fill-")), 2 * (THREADS - 1))
        self.assertNotIn("never-ran", uids)
        self.assertNotIn("client-deadline", uids)
        r = self.srv.request("GET", "sys/metrics?format=prometheus")
        self.assertEqual(r.status, 200, r.describe())
        m = re.search(r'kmsd_kms_plugin_calls_total\{method="Encrypt",code="DEADLINE_EXCEEDED"\} '
                      r'(\d+)', r.body.decode())
        self.assertIsNotNone(m)
        # ran-late and never-ran; client-deadline too unless the client's reset (CANCELLED)
        # came in before the server's timer answered it
        self.assertIn(int(m.group(1)), (2, 3))


if __name__ == "__main__":
    unittest.main()
