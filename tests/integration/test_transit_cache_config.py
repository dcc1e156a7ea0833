"""Transit cache-config against a real kmsd (OpenBao's path_cache_config.go) through hvac's
generic read/write: OpenBao's validation and text, the size read back per mount and across a
restart, and the size bounding the mount's key cache (kmsd_key_cache_requests_total in
sys/metrics: with size 10 a second pass over 20 keys finds at most 10 of them)."""

import re
import unittest

import hvac  # Debian's python3-hvac (/usr/bin/python3); missing fails, never skips
import hvac.exceptions

from kmsd_harness import KmsdTestCase, b64


class TransitCacheConfigTest(KmsdTestCase):
    server_mode = "config"

    def client(self):
        cli = hvac.Client(url=self.server.addr, token=self.server.token)
        self.addCleanup(cli.adapter.close)
        return cli

    def cache_counts(self):
        r = self.req("GET", "sys/metrics?format=prometheus")
        self.assertEqual(r.status, 200, r.describe())
        text = r.body.decode()
        hit = int(re.search(r'kmsd_key_cache_requests_total\{result="hit"\} (\d+)', text)[1])
        miss = int(re.search(r'kmsd_key_cache_requests_total\{result="miss"\} (\d+)', text)[1])
        return hit, hit + miss

    def pass_over(self, cli, mount, names):
        h0, l0 = self.cache_counts()
        for n in names:
            cli.secrets.transit.encrypt_data(n, b64(b"x"), mount_point=mount)
        h1, l1 = self.cache_counts()
        return h1 - h0, l1 - l0

    def test_validation_read_back_and_restart(self):
        cli = self.client()
        mount = "cc-" + self.uniq("m")
        cli.sys.enable_secrets_engine("transit", path=mount)
        self.assertEqual(cli.read(mount + "/cache-config")["data"], {"size": 0})
        for bad in (1, 9, -1):
            with self.assertRaises(hvac.exceptions.InvalidRequest) as e:
                cli.write(mount + "/cache-config", size=bad)
            self.assertIn("size must be 0 or a value greater or equal to 10", str(e.exception))
        self.assertEqual(cli.write(mount + "/cache-config", size=10)["data"], {"size": 10})
        self.assertEqual(cli.read(mount + "/cache-config")["data"], {"size": 10})
        self.assertEqual(cli.read("transit/cache-config")["data"]["size"], 0)

        rc = self.server.stop()
        self.assertEqual(rc, 0, self.server.log_tail())
        self.server.start()
        cli = self.client()
        self.assertEqual(cli.read(mount + "/cache-config")["data"], {"size": 10})

    def test_size_bounds_the_cache(self):
        cli = self.client()
        mount = "cb-" + self.uniq("m")
        cli.sys.enable_secrets_engine("transit", path=mount)
        names = ["k%d" % i for i in range(20)]
        for n in names:
            cli.secrets.transit.create_key(n, mount_point=mount)
        self.pass_over(cli, mount, names)
        shared_hits, lookups = self.pass_over(cli, mount, names)
        self.assertGreaterEqual(lookups, 20)
        self.assertEqual(shared_hits, lookups)  # the shared cache holds them all
        per_request = lookups // 20

        cli.write(mount + "/cache-config", size=10)
        self.pass_over(cli, mount, names)
        own_hits, _ = self.pass_over(cli, mount, names)
        self.assertLessEqual(own_hits, 10 * per_request)

        cli.write(mount + "/cache-config", size=50)
        self.pass_over(cli, mount, names)
        hits, lookups = self.pass_over(cli, mount, names)
        self.assertEqual(hits, lookups)


if __name__ == "__main__":
    unittest.main()
