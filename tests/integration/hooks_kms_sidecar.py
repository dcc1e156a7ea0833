"""`kmsd kms-plugin` (the sidecar) with a test hook: KMS_TEST_POOL_IDLE_MS shortens how long a
kept connection to the key service may stay idle before it is closed rather than reused (30 s
in a real build). Only a KMS_TEST_HOOKS build reads it (CI configures its trees with it)."""

import os
import time
import unittest

from test_kms_plugin_sidecar import SEED, SidecarCase


class SidecarIdleTest(SidecarCase):

    def test_a_connection_idle_too_long_is_not_reused(self):
        self.kmskey("etcd-i")
        os.environ["KMS_TEST_POOL_IDLE_MS"] = "300"
        try:
            p = self.sidecar("etcd-i").plugin
        finally:
            del os.environ["KMS_TEST_POOL_IDLE_MS"]
        for _ in range(3):  # back to back: one kept connection
            p.encrypt(SEED)
        time.sleep(0.6)  # longer than the idle limit (nothing else uses the pool meanwhile)
        p.encrypt(SEED)
        p.encrypt(SEED)
        ports = self.ports_of("etcd-i")
        self.assertEqual(len(ports), 5)
        self.assertEqual(len(set(ports[:3])), 1, ports)
        self.assertNotIn(ports[3], ports[:3])  # a new connection after the idle time
        self.assertEqual(ports[3], ports[4])  # and that one is kept


if __name__ == "__main__":
    unittest.main()
