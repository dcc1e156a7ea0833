"""SIGHUP on an HA replica (docs/ha.md, docs/audit.md "Rotation") against a real kmsd built with
-DKMS_TEST_HOOKS=ON on a throwaway PostgreSQL: with KMS_TEST_HA_HOLD_PROMOTION=<path> in its
environment, a promotion whose service (and audit broker) is built waits while <path> exists
before it turns active, and creates <path>.held meanwhile.

- logrotate renames the audit file and sends SIGHUP while the replica is between the build of
  its service and its switch to active (the window a lapsed lease opens too): the broker that
  exists reopens the path, so every later record goes to the new file. The reopen used to be
  gated on "active within the lease" and was dropped, and the replica went on writing to the
  renamed file, which logrotate then compresses or deletes.
"""

import os
import signal
import subprocess
import unittest

from kmsd_harness import KMSD_BIN, b64, wait_for
from test_ha import HaCase


class HaSighupTest(HaCase):

    def test_sighup_between_build_and_active_reopens_the_file(self):
        srv = self.replica()
        logdir = os.path.join(srv.workdir, "audit")
        os.mkdir(logdir)
        log = os.path.join(logdir, "audit.log")
        srv.config["audit_file"] = log
        hold = os.path.join(srv.workdir, "hold-promotion")
        open(hold, "w").close()
        os.environ["KMS_TEST_HA_HOLD_PROMOTION"] = hold
        try:
            srv.start()
        finally:
            del os.environ["KMS_TEST_HA_HOLD_PROMOTION"]
        wait_for(lambda: os.path.exists(hold + ".held"), 20,
                 "the promotion to build its service and hold")
        self.assertTrue(os.path.exists(log), "the built audit broker opened %s" % log)
        self.assertEqual(self.actives([srv]), [])
        os.rename(log, log + ".1")
        os.kill(srv.proc.pid, signal.SIGHUP)
        wait_for(lambda: "audit log reopened" in srv.log_text(), 10,
                 "the SIGHUP to reopen the audit file while the promotion is held")
        self.assertTrue(os.path.exists(log), "the reopen made a new %s" % log)
        os.unlink(hold)
        self.wait_one_active([srv], timeout=20)
        self.init(srv, srv)
        self.ok(srv.request("POST", "transit/keys/rot"))
        self.ok(srv.request("POST", "transit/encrypt/rot", {"plaintext": b64(b"after")}))
        self.assertEqual(srv.stop(), 0)
        with open(log) as f:
            text = f.read()
        with open(log + ".1") as f:
            old = f.read()
        self.assertIn("transit/encrypt/rot", text)
        self.assertIn("sys/mounts/transit", text)
        self.assertNotIn("transit/", old)
        r = subprocess.run([KMSD_BIN, "audit", "verify", logdir], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


if __name__ == "__main__":
    unittest.main()
