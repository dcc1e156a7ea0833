"""SIGHUP on an HA replica (docs/ha.md, docs/audit.md "Rotation") against a real kmsd built with
-DKMS_TEST_HOOKS=ON on a throwaway PostgreSQL: with KMS_TEST_HA_HOLD_PROMOTION=<path> in its
environment, a promotion whose service (and audit broker) is built waits while <path> exists
before it turns active, and creates <path>.held meanwhile.

- logrotate renames the audit file and sends SIGHUP while the replica is between the build of
  its service and its switch to active (the window a lapsed lease opens too): the broker that
  exists reopens the path, so every later record goes to the new file. The reopen used to be
  gated on "active within the lease" and was dropped, and the replica went on writing to the
  renamed file, which logrotate then compresses or deletes.

With KMS_TEST_HANDLER_HOOKS=<dir> (api/dispatch.c), a handler that may run long (an RSA key
creation) waits before it runs while <dir>/hold exists, and creates <dir>/held meanwhile:

- an HA replica answers every request on its handler threads (kms_ha_submit), its connection
  parked meanwhile, so one worker goes on serving while a request waits: a held RSA key
  creation, sent to the active or forwarded by a standby, leaves sys/health and an encrypt
  answered through both replicas, each with a single worker. They used to wait on it (the
  standby's worker in the forward, the active's in the handler).
- a client that goes away while its request waits leaves the request to its thread: it
  finishes (the key exists) and the replica goes on serving.
"""

import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import unittest

from kmsd_harness import KMSD_BIN, b64, request_in_thread, wait_for
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


class HaHandlerThreadsTest(HaCase):

    def setUp(self):
        super().setUp()
        self.hooks = tempfile.mkdtemp(prefix="kmsd-ha-hooks-")
        self.addCleanup(shutil.rmtree, self.hooks, True)
        os.environ["KMS_TEST_HANDLER_HOOKS"] = self.hooks
        self.addCleanup(os.environ.pop, "KMS_TEST_HANDLER_HOOKS", None)

    def hold(self):
        open(os.path.join(self.hooks, "hold"), "w").close()

    def release(self):
        os.unlink(os.path.join(self.hooks, "hold"))

    def wait_held(self, srv):
        wait_for(lambda: os.path.exists(os.path.join(self.hooks, "held")), 30,
                 lambda: "the RSA key creation to reach the hold\n" + srv.log_tail())

    def pair_with_a_held_creation(self, a):
        """a (not yet started) started as the active with a standby b, initialised, an AES key
        "aes", and an RSA key creation held on a in a thread: (a, b, thread, its result)."""
        a.start()
        self.wait_one_active([a])
        b = self.replica(workers=2).start()
        self.wait_one_active([a, b])
        self.init(a, [a])
        self.ok(a.request("POST", "transit/keys/aes"))
        self.hold()
        t, out = request_in_thread(a, "POST", "transit/keys/rsa-held", {"type": "rsa-2048"})
        try:
            self.wait_held(a)
        except BaseException:
            self.release()
            raise
        return a, b, t, out

    def test_a_held_request_leaves_every_worker_serving(self):
        a = self.replica(workers=1).start()
        active = self.wait_one_active([a])
        b = self.replica(workers=1).start()
        self.wait_one_active([a, b])
        self.init(active, [active])
        self.ok(a.request("POST", "transit/keys/aes"))
        for via in (a, b):
            with self.subTest(sent_to="active" if via is a else "standby"):
                name = "rsa-%s" % ("a" if via is a else "b")
                self.hold()
                t, out = request_in_thread(via, "POST", "transit/keys/" + name,
                                           {"type": "rsa-2048"})
                self.wait_held(a)
                for srv in (a, b):
                    r = self.health(srv)
                    self.assertIsNotNone(r, "sys/health of %s not answered" % srv.addr)
                    self.assertIn(r.status, (200, 429), r.describe())
                    r = srv.request("POST", "transit/encrypt/aes",
                                    {"plaintext": b64(b"served meanwhile")}, timeout=10)
                    self.assertTrue(self.ok(r)["ciphertext"].startswith("vault:v1:"))
                self.assertTrue(t.is_alive(), "the creation was not held")
                self.release()
                t.join(120)
                self.assertIn("r", out, out.get("e"))
                self.ok(out["r"])
                os.unlink(os.path.join(self.hooks, "held"))
                r = b.request("GET", "transit/keys/" + name)
                self.assertEqual(self.ok(r)["type"], "rsa-2048")

    def test_a_replica_standing_down_behind_a_held_request_answers(self):
        """The active loses its leader lock while a long request (a held RSA key creation)
        runs: its step-down waits for that request, and meanwhile the replica answers as a
        standby at once: health 429, other requests forwarded to the new active. They all
        waited behind the step-down (the service's lock) until the long request was done, a
        minute for a big batch of RSA signatures, and Kubernetes' probes failed meanwhile."""
        a = self.replica(workers=2)
        a.config["audit_file"] = os.path.join(a.workdir, "audit.log")
        a, b, t, out = self.pair_with_a_held_creation(a)
        try:
            pid = self.pg.psql(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
                "objid = (7740970209790356581::bigint & 4294967295)::oid").strip()
            self.pg.psql("SELECT pg_terminate_backend(%s)" % pid)
            self.assertIs(self.wait_one_active([b]), b)
            self.assertTrue(t.is_alive(), "the creation was not held")
            # its main loop goes on: a SIGHUP reopens the audit file at once (the controller's
            # tick, on that loop, waited for the step-down to take the service's lock, and
            # with it signals, SIGTERM included)
            os.kill(a.proc.pid, signal.SIGHUP)
            wait_for(lambda: "audit log reopened" in a.log_text(), 5,
                     "the SIGHUP handled while the step-down waits")
            for _ in range(3):
                r = self.health(a)
                self.assertIsNotNone(r, "sys/health of the replica standing down not answered")
                self.assertEqual(r.status, 429, r.describe())
                # its leadership thread learns the new address once the step-down is done:
                # until then a request is refused at once (the client tries again), not held
                r = a.request("POST", "transit/encrypt/aes", {"plaintext": b64(b"x")}, timeout=5)
                self.assertEqual(r.status, 503, r.describe())
                self.assertEqual(r.errors, ["no active kmsd replica"], r.describe())
            self.assertTrue(t.is_alive(), "the creation was not held")
        finally:
            self.release()
        t.join(120)
        self.assertIn("r", out, out.get("e"))
        # its COMMIT came after the lease: refused, and nothing of it is there
        self.assertEqual(out["r"].status, 503, out["r"].describe())
        self.assertEqual(b.request("GET", "transit/keys/rsa-held").status, 404)
        wait_for(lambda: "no longer the active replica" in a.log_text(), 30, "the step-down")

    def test_a_request_that_saw_it_active_as_a_step_down_began_is_not_held(self):
        """A request finds the replica active, and a step-down begins before it takes the
        service's lock (KMS_TEST_HA_HOLD_BEFORE_LOCK widens that window: the request waits
        there). The step-down waits for a long request (a held RSA key creation); the lock
        prefers writers, so the request that came in the window waited behind the step-down
        for the whole long request. It is answered at once now, as the standby it has become
        answers (503, the client tries again)."""
        before = os.path.join(self.hooks, "before-lock")
        os.environ["KMS_TEST_HA_HOLD_BEFORE_LOCK"] = before
        try:
            a, b, t, out = self.pair_with_a_held_creation(self.replica(workers=2))
        finally:
            del os.environ["KMS_TEST_HA_HOLD_BEFORE_LOCK"]
        try:
            open(before, "w").close()
            t2, out2 = request_in_thread(a, "POST", "transit/encrypt/aes",
                                         {"plaintext": b64(b"in the window")})
            wait_for(lambda: os.path.exists(before + ".held"), 30,
                     "the encrypt to wait before the service's lock")
            pid = self.pg.psql(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
                "objid = (7740970209790356581::bigint & 4294967295)::oid").strip()
            self.pg.psql("SELECT pg_terminate_backend(%s)" % pid)
            # the step-down has begun once the replica says it is not the leader any more
            # (sys/leader is answered without the service's lock)
            wait_for(lambda: not a.request("GET", "sys/leader", token=None,
                                           timeout=5).json["is_self"], 30,
                     "the step-down to begin")
            os.unlink(before)
            wait_for(lambda: "r" in out2 or "e" in out2, 20,
                     "the encrypt answered while the step-down waits for the long request")
            self.assertIn("r", out2, out2.get("e"))
            self.assertEqual(out2["r"].status, 503, out2["r"].describe())
            self.assertTrue(t.is_alive(), "the creation was not held")
        finally:
            if os.path.exists(before):
                os.unlink(before)
            self.release()
        t.join(120)
        t2.join(30)
        self.assertIn("r", out, out.get("e"))
        self.assertEqual(out["r"].status, 503, out["r"].describe())
        self.assertIs(self.wait_one_active([a, b]), b)

    def test_a_step_down_held_by_a_request_lets_another_replica_lead(self):
        """The active's lease runs out while its PostgreSQL session lives on (the session's
        backend stopped for longer than the lease's usable part, then resumed) and a long
        request runs: the step-down waits for that request, and the heartbeat no longer
        renews the lease meanwhile, so the idle session ends one lease later and a standby
        takes over. The heartbeat went on pinging, the session kept the leader lock for as long
        as the request ran (a minute for a big batch of RSA signatures; forever behind a stuck
        audit device) and no replica served at all."""
        lease = 4000
        a = self.replica(workers=2, ha_lease="%dms" % lease).start()
        self.wait_one_active([a])
        b = self.replica(workers=2, ha_lease="%dms" % lease).start()
        self.wait_one_active([a, b])
        self.init(a, [a])
        self.hold()
        t, out = request_in_thread(a, "POST", "transit/keys/rsa-held", {"type": "rsa-2048"})
        try:
            self.wait_held(a)
            backend = int(self.pg.psql(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
                "objid = (7740970209790356581::bigint & 4294967295)::oid").strip())
            # the leader's backend stops answering past the lease's usable part (3 s after the
            # last answered ping) by two heartbeats, so that the control thread sees it run
            # out, and within the ping's own deadline (4 s after it was sent)
            os.kill(backend, signal.SIGSTOP)
            try:
                wait_for(lambda: not a.request("GET", "sys/leader", token=None,
                                               timeout=5).json["is_self"], 10,
                         "the lease to run out")
                time.sleep(0.5)
            finally:
                os.kill(backend, signal.SIGCONT)
            self.assertIs(self.wait_one_active([b], timeout=6 * lease / 1000), b)
            self.assertTrue(t.is_alive(), "the creation was not held")
        finally:
            self.release()
        t.join(120)
        self.assertIn("r", out, out.get("e"))
        self.assertEqual(out["r"].status, 503, out["r"].describe())
        self.assertEqual(b.request("GET", "transit/keys/rsa-held").status, 404)

    def test_a_long_request_through_a_standby_outlasts_the_short_forward_timeout(self):
        """A forward that may run long on the active (here an RSA key creation, held) waits for
        ha_forward_long_timeout, not ha_forward_timeout: cut off at the short bound, the standby
        answered 503 'cannot be reached' while the active went on and made the key, and a
        client that retries a 5xx made it again."""
        a = self.replica(workers=1, ha_forward_timeout="1s").start()
        self.wait_one_active([a])
        b = self.replica(workers=1, ha_forward_timeout="1s").start()
        self.wait_one_active([a, b])
        self.init(a, [a])
        self.hold()
        t, out = request_in_thread(b, "POST", "transit/keys/rsa-long", {"type": "rsa-2048"})
        self.wait_held(a)
        # a set-up step, not a condition: the creation is held past the short bound (only a
        # slow machine could make it shorter, and then the test would miss the old bug, never
        # fail the new code); a quick forward keeps the short bound meanwhile
        time.sleep(2)
        self.assertTrue(t.is_alive(), out)
        r = b.request("POST", "transit/encrypt/nokey-here", {"plaintext": b64(b"x")},
                      timeout=10)
        self.assertNotEqual(r.status, 503, r.describe())
        self.release()
        t.join(120)
        self.assertIn("r", out, out.get("e"))
        self.assertEqual(self.ok(out["r"])["type"], "rsa-2048")
        self.assertEqual(self.ok(b.request("GET", "transit/keys/rsa-long"))["type"], "rsa-2048")

    def test_a_key_named_like_a_data_plane_operation_gets_the_long_bound(self):
        """A forward was taken for a quick one (a read, or Transit's encrypt, hash, random...)
        when its path held "/hash", "/random" or "/encrypt/" anywhere: the creation of a key
        named hash-rsa or random, or the rotation of one named encrypt, had the short bound,
        and the standby answered 503 while the active made the key. Quick forwards are now
        judged by whole segments."""
        a = self.replica(workers=1, ha_forward_timeout="1s").start()
        self.wait_one_active([a])
        b = self.replica(workers=1, ha_forward_timeout="1s").start()
        self.wait_one_active([a, b])
        self.init(a, [a])
        self.ok(a.request("POST", "transit/keys/encrypt", {"type": "rsa-2048"}))
        for path, body in (("transit/keys/hash-rsa", {"type": "rsa-2048"}),
                           ("transit/keys/random", {"type": "rsa-2048"}),
                           ("transit/keys/encrypt/rotate", {})):
            with self.subTest(path=path):
                self.hold()
                t, out = request_in_thread(b, "POST", path, body)
                self.wait_held(a)
                # a set-up step, as in the test above: held past the short bound
                time.sleep(2)
                self.assertTrue(t.is_alive(), out)
                self.release()
                t.join(120)
                self.assertIn("r", out, out.get("e"))
                self.assertIn(out["r"].status, (200, 204), out["r"].describe())
                os.unlink(os.path.join(self.hooks, "held"))
        self.assertEqual(self.ok(b.request("GET", "transit/keys/random"))["type"], "rsa-2048")
        self.assertEqual(self.ok(b.request("GET", "transit/keys/encrypt"))["latest_version"], 2)
        # the data plane keeps the short bound and is still served
        self.ok(a.request("POST", "transit/keys/aes"))
        r = b.request("POST", "transit/encrypt/aes", {"plaintext": b64(b"x")}, timeout=10)
        self.assertTrue(self.ok(r)["ciphertext"].startswith("vault:v1:"))
        self.ok(b.request("POST", "transit/random/16", {}, timeout=10))

    def test_a_client_gone_while_its_request_waits(self):
        a = self.replica(workers=1).start()
        self.wait_one_active([a])
        self.init(a, [a])
        self.hold()
        raw = ("POST /v1/transit/keys/gone HTTP/1.1\r\nHost: x\r\nX-Vault-Token: %s\r\n"
               "Content-Type: application/json\r\nContent-Length: 20\r\n\r\n"
               '{"type":"rsa-2048"}\n' % a.token).encode()
        with socket.create_connection(("127.0.0.1", a.port), timeout=10) as s:
            s.sendall(raw)
            self.wait_held(a)
        self.release()
        # its thread finishes it: the key is there, and the replica serves on
        wait_for(lambda: a.request("GET", "transit/keys/gone", timeout=10).status == 200, 60,
                 "the abandoned creation to finish")
        self.ok(a.request("POST", "transit/encrypt/gone", {"plaintext": b64(b"x")}))
        self.assertEqual(a.stop(), 0)

    def test_a_gone_clients_body_stays_charged_while_its_request_runs(self):
        """max_request_bytes_in_flight: a request parked on a handler thread runs on its own
        copy of the body, and runs on after its client has gone. The body's charge was given
        back when the connection closed, so the copies of requests whose clients had gone
        (queued for a handler thread, or forwarded by a standby: no token is checked before)
        were held by nobody's budget. The charge now goes with the copy."""
        a = self.replica(workers=1, max_request_size=65536,
                         max_request_bytes_in_flight=100000).start()
        self.wait_one_active([a])
        self.init(a, [a])

        def large(body_head, token):
            body = body_head + b" " * (60000 - len(body_head) - 1) + b"}"
            head = ("POST /v1/transit/keys/%s HTTP/1.1\r\nHost: x\r\n%s"
                    "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                    % ("gone" if token else "other", "X-Vault-Token: %s\r\n" % token
                       if token else "", len(body)))
            return head.encode() + body

        def status_of_a_second_large_body():
            with socket.create_connection(("127.0.0.1", a.port), timeout=10) as s:
                s.sendall(large(b'{"type":"aes256-gcm96"', None))
                return s.recv(64)[:12]

        self.hold()
        with socket.create_connection(("127.0.0.1", a.port), timeout=10) as s:
            s.sendall(large(b'{"type":"rsa-2048"', a.token))
            self.wait_held(a)
            # gone for good: a reset (a closed connection's answer is still owed to a client
            # that only shut down its side)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # its client is gone; its copy, held on the handler thread, is still charged (for a
        # second: the replica sees the close within milliseconds, and gave the charge back)
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:
            self.assertEqual(status_of_a_second_large_body(), b"HTTP/1.1 503")
        self.release()
        wait_for(lambda: a.request("GET", "transit/keys/gone", timeout=10).status == 200, 60,
                 "the abandoned creation to finish")
        # done: its bytes are given back
        wait_for(lambda: status_of_a_second_large_body() == b"HTTP/1.1 403", 10,
                 "a large body accepted once the abandoned request was done")
        self.assertEqual(a.stop(), 0)


if __name__ == "__main__":
    unittest.main()
