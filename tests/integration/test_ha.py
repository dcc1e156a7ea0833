"""kmsd replicas on one PostgreSQL database (docs/ha.md, issue 15): real kmsd processes on
loopback port 0 with "ha_enabled" and a short lease, on a throwaway PostgreSQL 15 cluster
(tests/pg/pgtmp.py) reached over loopback TCP with SCRAM.

Exactly one replica is active; requests to any replica succeed (standbys forward them);
sys/health and sys/leader answer as Vault's do on a standby; kill -9 of the active under a
stream of encrypts and rotations hands over to a standby and everything acknowledged is there;
a SIGSTOPped active is replaced after its lease and, resumed, never answers 2xx from its stale
state; with PostgreSQL stopped the replicas answer 503 once the lease ran out and acknowledge
no write, then serve again without a restart when PostgreSQL is back; a min_decryption_version
raised through one replica holds through every replica."""

import hashlib
import hmac
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pg"))

from kmsd_harness import (KMSD_BIN, KmsdServer, KmsdTestCase, b64, unb64,  # noqa: E402
                          wait_for)
from kmsctl_helpers import KMSCTL_BIN  # noqa: E402
from pgtmp import PgCluster  # noqa: E402

PASSWORD = "pg-Secret-ha-5e1d"
LEASE_MS = 2000  # generous enough for CI's ASan run of the whole suite in parallel
HEARTBEAT_MS = 250


class BlackholeProxy:
    """A TCP proxy from a loopback port to PostgreSQL that can silently drop everything: with
    `drop` set, bytes in either direction are read and thrown away (the kernel still
    acknowledges them, as a broken middlebox would), so both ends see a live but silent peer.
    heal() closes what was cut (a NAT forgetting it) and lets new connections through. With
    `swallow` set too, a close from PostgreSQL is not passed on either: the client's side stays
    open and silent, as behind a TCP-terminating proxy (HAProxy, a cloud SQL proxy) whose
    backend is gone. With `stall` set, a session that sends its first query from then on is
    dropped from that query on (both ways, never closed): PostgreSQL let it in and then went
    silent, as a backend hung after authentication behind a proxy; clearing `stall` lets new
    sessions through and leaves the stalled ones as they are."""

    def __init__(self, port):
        self.upstream = port
        self.drop = threading.Event()
        self.swallow = threading.Event()
        self.stall = threading.Event()
        self.stalled = 0
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.pairs = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                c.close()
                continue
            with self.lock:
                self.pairs.append((c, u))
            threading.Thread(target=self._pump, args=(c, u), daemon=True).start()

    def _pump(self, c, u):
        socks = [c, u]
        stalled = False
        try:
            while not self.closed:
                r, _, _ = select.select(socks, [], [], 0.2)
                for s in r:
                    data = s.recv(65536)
                    if not data and s is u and self.swallow.is_set():
                        socks = [c]  # the client is never told
                        break
                    if not data and stalled:
                        socks = [x for x in socks if x is not s]
                        break
                    if not data:
                        return
                    if (s is c and not stalled and self.stall.is_set() and
                            data[:1] == b"Q"):  # a simple query: the session is set up
                        stalled = True
                        with self.lock:
                            self.stalled += 1
                    if not self.drop.is_set() and not stalled:
                        (u if s is c else c).sendall(data)
        except OSError:
            pass
        finally:
            c.close()
            u.close()

    def heal(self):
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for c, u in pairs:
            for s in (c, u):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self.drop.clear()

    def close(self):
        self.closed = True
        self.lsock.close()
        self.heal()


class HaCase(unittest.TestCase):
    """One throwaway cluster per class; empty tables and fresh replicas per test."""

    @classmethod
    def setUpClass(cls):
        cls.pg = PgCluster.started_with_password(PASSWORD)

    @classmethod
    def tearDownClass(cls):
        cls.pg.destroy()

    def setUp(self):
        self.servers = []
        self.seal_key = os.urandom(32)
        self.pg.psql("DROP TABLE IF EXISTS kmsd_records; DROP TABLE IF EXISTS kmsd_leader")

    def tearDown(self):
        for s in self.servers:
            if s.proc is not None and s.proc.poll() is None:
                try:
                    os.kill(s.proc.pid, signal.SIGCONT)
                except OSError:
                    pass
            s.kill()

    def run(self, result=None):
        before = (len(result.failures) + len(result.errors)) if result is not None else 0
        try:
            return super().run(result)
        finally:
            failed = result is not None and len(result.failures) + len(result.errors) > before
            for s in getattr(self, "servers", []):
                if failed:
                    sys.stderr.write("\n%s\n" % s.log_tail(40))
                s.cleanup()

    def replica(self, **cfg):
        srv = KmsdServer(mode="config", config={}, seal_key=self.seal_key)
        path = os.path.join(srv.workdir, "pg.password")
        with open(path, "w") as f:
            f.write(PASSWORD + "\n")
        os.chmod(path, 0o600)
        config = {"storage": "postgresql", "postgresql_url": self.pg.tcp_url,
                  "postgresql_password_file": path, "ha_enabled": True,
                  "ha_lease": "%dms" % LEASE_MS, "ha_heartbeat": "%dms" % HEARTBEAT_MS,
                  "ha_forward_timeout": "2s", "workers": 8, "rate_limit": 0}
        config.update(cfg)
        srv.config = config
        self.servers.append(srv)
        return srv

    def replicas(self, n=3, **cfg):
        return [self.replica(**cfg).start() for _ in range(n)]

    @staticmethod
    def health(srv, query=""):
        try:
            return srv.request("GET", "sys/health" + query, token=None, timeout=5)
        except OSError:
            return None

    def actives(self, servers):
        """The replicas that say they are active (sys/leader is_self)."""
        out = []
        for s in servers:
            if s.proc is None or s.proc.poll() is not None:
                continue
            try:
                r = s.request("GET", "sys/leader", token=None, timeout=5)
            except OSError:
                continue
            if r.status == 200 and r.json.get("is_self"):
                out.append(s)
        return out

    def wait_one_active(self, servers, timeout=20, exclude=()):
        found = []

        def one():
            found[:] = [s for s in self.actives(servers) if s not in exclude]
            return len(found) == 1
        wait_for(one, timeout, lambda: "exactly one active replica (have %d)" % len(found))
        active = found[0]

        def known():
            # every live standby has read the leader record (it does every heartbeat)
            for s in servers:
                if s is active or s.proc is None or s.proc.poll() is not None:
                    continue
                try:
                    r = s.request("GET", "sys/leader", token=None, timeout=5)
                except OSError:
                    return False
                if r.status != 200 or r.json.get("leader_address") != active.addr:
                    return False
            return True
        wait_for(known, timeout, "the standbys to know the active replica's address")
        return active

    def leadership_taken_from(self, active, servers):
        """Terminate the leader's PostgreSQL session (pg_terminate_backend) until another
        replica than `active` leads (it may take the lock again at once); that one."""
        def holder():
            return self.pg.psql(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
                "objid = (7740970209790356581::bigint & 4294967295)::oid").strip()
        for _ in range(10):
            wait_for(lambda: holder() != "", 20, "a replica to hold the leader lock")
            n = active.log_text().count("no longer the active replica")
            self.pg.psql("SELECT pg_terminate_backend(%s)" % holder())
            wait_for(lambda: active.log_text().count("no longer the active replica") > n, 20,
                     "the active to stand down")
            new = self.wait_one_active(servers)
            if new is not active:
                return new
        self.fail("the same replica took the leader lock again ten times")

    def init(self, via, actives):
        r = via.request("PUT", "sys/init", {}, token=None)
        self.assertEqual(r.status, 200, r.describe())
        token = r.json["root_token"]
        for s in self.servers:
            s.token = token
        r = via.request("POST", "sys/mounts/transit", {"type": "transit"})
        self.assertEqual(r.status, 204, r.describe())
        return token

    def ok(self, r, status=200):
        if r.status != status:
            self.fail("expected HTTP %d\n%s" % (status, r.describe()))
        return r.data


class HaTest(HaCase):

    def test_one_active_and_standbys_forward(self):
        servers = self.replicas(3)
        active = self.wait_one_active(servers)
        standbys = [s for s in servers if s is not active]
        # never two for a few heartbeats (sampled one replica after the other)
        for _ in range(5):
            self.assertLessEqual(len(self.actives(servers)), 1)
            time.sleep(HEARTBEAT_MS / 1000)
        active = self.wait_one_active(servers)
        # a standby's health: 429, standby true; standbyok and standbycode as Vault
        sb = standbys[0]
        r = self.health(sb)
        self.assertEqual(r.status, 501, r.describe())  # not initialised yet
        self.init(sb, active)  # through a standby: forwarded
        r = self.health(sb)
        self.assertEqual(r.status, 429, r.describe())
        self.assertTrue(r.json["standby"])
        self.assertTrue(r.json["initialized"])
        self.assertEqual(self.health(sb, "?standbyok=true").status, 200)
        self.assertEqual(self.health(sb, "?standbycode=472").status, 472)
        self.assertEqual(self.health(sb, "?standbyok=maybe").status, 400)
        self.assertEqual(self.health(sb, "?standbycode=99").status, 400)
        r = self.health(active)
        self.assertEqual(r.status, 200, r.describe())
        self.assertFalse(r.json["standby"])
        self.assertEqual(r.json["cluster_id"], self.health(sb).json["cluster_id"])
        # sys/leader everywhere names the active's address
        for s in servers:
            r = s.request("GET", "sys/leader", token=None)
            self.assertEqual(r.status, 200, r.describe())
            self.assertTrue(r.json["ha_enabled"])
            self.assertEqual(r.json["is_self"], s is active)
            self.assertEqual(r.json["leader_address"], active.addr)
        # every request through every replica succeeds
        self.ok(sb.request("POST", "transit/keys/fwd"))
        cts = []
        for i, s in enumerate(servers * 2):
            r = s.request("POST", "transit/encrypt/fwd", {"plaintext": b64(b"p%d" % i)})
            cts.append(self.ok(r)["ciphertext"])
        for i, ct in enumerate(cts):
            s = servers[(i + 1) % 3]
            r = s.request("POST", "transit/decrypt/fwd", {"ciphertext": ct})
            self.assertEqual(unb64(self.ok(r)["plaintext"]), b"p%d" % i)
        # errors come back as they are, with their status, and the token is forwarded
        r = standbys[1].request("POST", "transit/decrypt/fwd", {"ciphertext": "vault:v9:AAAA"})
        self.assertEqual(r.status, 400, r.describe())
        r = standbys[1].request("GET", "transit/keys/fwd", token="not-a-token")
        self.assertEqual(r.status, 403, r.describe())
        r = standbys[1].request("LIST", "transit/keys")
        self.assertEqual(self.ok(r)["keys"], ["fwd"])
        # metrics keep their content type through the standby
        r = standbys[0].request("GET", "sys/metrics?format=prometheus")
        self.assertEqual(r.status, 200, r.describe())
        self.assertIn("text/plain", r.header("Content-Type"))
        # a clean stop of the active hands over without waiting out its lease
        t0 = time.monotonic()
        self.assertEqual(active.stop(), 0)
        new = self.wait_one_active(standbys, timeout=10)
        self.assertLess(time.monotonic() - t0, LEASE_MS / 1000 + 1.5)
        self.assertIn("active replica", new.log_text())
        r = new.request("POST", "transit/decrypt/fwd", {"ciphertext": cts[0]})
        self.assertEqual(unb64(self.ok(r)["plaintext"]), b"p0")

    def test_health_and_seal_status_fields(self):
        """sys/health answers with the same fields on the active as on a standby, Vault's
        (performance_standby among them: the active's answer had none), sys/seal-status
        names the storage the replicas use (storage_type said lmdb on PostgreSQL), and
        sys/leader has performance_standby_last_remote_wal as Vault's always has."""
        servers = self.replicas(2)
        a = self.wait_one_active(servers)
        b = [s for s in servers if s is not a][0]
        self.init(b, a)
        ha = a.request("GET", "sys/health", token=None)
        hb = b.request("GET", "sys/health", token=None)
        self.assertEqual((ha.status, hb.status), (200, 429), hb.describe())
        self.assertEqual(sorted(ha.json), sorted(hb.json))
        self.assertIs(ha.json["performance_standby"], False)
        self.assertIs(hb.json["performance_standby"], False)
        for s in servers:
            r = s.request("GET", "sys/seal-status", token=None)
            self.assertEqual(r.status, 200, r.describe())
            self.assertEqual(r.json["storage_type"], "postgresql", r.describe())
            # sys/leader: Vault's fields, performance_standby_last_remote_wal among them
            r = s.request("GET", "sys/leader", token=None)
            self.assertEqual(r.json["performance_standby_last_remote_wal"], 0, r.describe())
            self.assertIs(r.json["performance_standby"], False, r.describe())

    def test_redirect_mode(self):
        servers = self.replicas(2, ha_redirect=True)
        active = self.wait_one_active(servers)
        sb = [s for s in servers if s is not active][0]
        self.init(active, active)
        r = sb.request("GET", "transit/keys?list=true")
        self.assertEqual(r.status, 307, r.describe())
        self.assertEqual(r.reason, "Temporary Redirect")
        self.assertEqual(r.header("Location"), active.addr + "/v1/transit/keys?list=true")

    def test_kill9_active_under_load(self):
        servers = self.replicas(3)
        active = self.wait_one_active(servers)
        self.init(active, active)
        self.ok(active.request("POST", "transit/keys/load"))
        acked = []         # (plaintext, ciphertext) answered 2xx
        rotations = [0]    # rotations answered 2xx
        stop = threading.Event()

        def stream(idx):
            n = 0
            while not stop.is_set():
                s = servers[(idx + n) % 3]
                n += 1
                if s.proc.poll() is not None:
                    continue
                pt = b"load-%d-%d" % (idx, n)
                try:
                    if n % 25 == 0:
                        r = s.request("POST", "transit/keys/load/rotate", timeout=5)
                        if 200 <= r.status < 300:
                            rotations[0] += 1
                        continue
                    r = s.request("POST", "transit/encrypt/load", {"plaintext": b64(pt)},
                                  timeout=5)
                except OSError:
                    continue
                if 200 <= r.status < 300:
                    acked.append((pt, r.json["data"]["ciphertext"]))
        threads = [threading.Thread(target=stream, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: len(acked) > 50, 20, "encrypts before the kill")
            before = len(acked)
            t_kill = time.monotonic()
            active.kill()  # SIGKILL
            others = [s for s in servers if s is not active]
            new = self.wait_one_active(others, timeout=15)
            failover = time.monotonic() - t_kill
            wait_for(lambda: len(acked) > before + 50, 20, "encrypts after the takeover")
        finally:
            stop.set()
            for t in threads:
                t.join()
        sys.stderr.write("\nfailover (kill -9 to a standby reporting itself active on sys/leader): "
                         "%.2fs\n" % failover)
        self.assertLess(failover, 10)
        for pt, ct in acked:
            r = new.request("POST", "transit/decrypt/load", {"ciphertext": ct})
            self.assertEqual(unb64(self.ok(r)["plaintext"]), pt)
        key = self.ok(new.request("GET", "transit/keys/load"))
        self.assertGreaterEqual(key["latest_version"], 1 + rotations[0])

    def test_sigstop_active_is_replaced_and_acknowledges_nothing_when_resumed(self):
        servers = self.replicas(3)
        old = self.wait_one_active(servers)
        self.init(old, old)
        self.ok(old.request("POST", "transit/keys/st"))
        ct1 = self.ok(old.request("POST", "transit/encrypt/st",
                                  {"plaintext": b64(b"one")}))["ciphertext"]
        self.ok(old.request("POST", "transit/keys/st/rotate"))
        # warm the old active's caches for the key, then freeze it
        r = old.request("POST", "transit/decrypt/st", {"ciphertext": ct1})
        self.assertEqual(unb64(self.ok(r)["plaintext"]), b"one")
        os.kill(old.proc.pid, signal.SIGSTOP)
        t_stop = time.monotonic()
        others = [s for s in servers if s is not old]
        new = self.wait_one_active(others, timeout=20)
        took = time.monotonic() - t_stop
        self.assertGreaterEqual(took, LEASE_MS / 1000 * 0.9)
        self.ok(new.request("POST", "transit/keys/st/config", {"min_decryption_version": 2}))
        os.kill(old.proc.pid, signal.SIGCONT)
        # from the moment it runs again, the old active never answers from its stale state
        deadline = time.monotonic() + 3 * LEASE_MS / 1000
        seen = set()
        while time.monotonic() < deadline:
            try:
                r = old.request("POST", "transit/decrypt/st", {"ciphertext": ct1}, timeout=5)
            except OSError:
                continue
            seen.add(r.status)
            self.assertFalse(200 <= r.status < 300,
                             "the resumed old active answered from stale state\n" + r.describe())
        self.assertTrue(seen <= {400, 503}, seen)
        # and it is a standby again, forwarding to the new active
        wait_for(lambda: (self.health(old) or r).status == 429, 10, "old active standing by")
        r = old.request("POST", "transit/decrypt/st", {"ciphertext": ct1})
        self.assertEqual(r.status, 400, r.describe())
        self.assertEqual(self.actives(servers), [new])

    def test_postgresql_down_then_back(self):
        servers = self.replicas(2)
        active = self.wait_one_active(servers)
        self.init(active, active)
        self.ok(active.request("POST", "transit/keys/pgd"))
        ct = self.ok(active.request("POST", "transit/encrypt/pgd",
                                    {"plaintext": b64(b"x")}))["ciphertext"]
        # the probes Kubernetes runs all along (docs/ha.md's liveness probe)
        probe = "sys/health?standbyok=true&uninitcode=200"
        for s in servers:
            self.assertEqual(s.request("GET", probe, token=None).status, 200)
        self.pg.stop()
        t_down = time.monotonic()
        try:
            # no write is acknowledged while PostgreSQL is down
            n = 0
            while time.monotonic() < t_down + 2 * LEASE_MS / 1000:
                n += 1
                for s in servers:
                    try:
                        r = s.request("POST", "transit/keys/down%d" % n, timeout=5)
                    except OSError:
                        continue
                    self.assertFalse(200 <= r.status < 300, r.describe())
            # past the lease: 503 everywhere, for reads as well
            for s in servers:
                for path, body in (("transit/decrypt/pgd", {"ciphertext": ct}),
                                   ("transit/keys/pgd2", None)):
                    r = s.request("POST", path, body, timeout=5)
                    self.assertEqual(r.status, 503, r.describe())
                    self.assertTrue(r.errors, r.describe())
                # the liveness probe of docs/ha.md still passes: a standby answers from
                # what it last read (a 500 would make Kubernetes restart every replica)
                r = s.request("GET", probe, token=None, timeout=5)
                self.assertEqual(r.status, 200, r.describe())
                self.assertTrue(r.json["initialized"], r.describe())
        finally:
            self.pg.start(same_port=True)
        # back without a restart
        new = self.wait_one_active(servers, timeout=20)
        r = new.request("POST", "transit/decrypt/pgd", {"ciphertext": ct})
        self.assertEqual(unb64(self.ok(r)["plaintext"]), b"x")
        other = [s for s in servers if s is not new][0]
        # the standby learns the new leader's address within a heartbeat or two
        wait_for(lambda: other.request("POST", "transit/keys/after").status == 200, 10,
                 "a write through the standby")
        for s in servers:
            self.assertEqual(s.proc.poll(), None)
        r = new.request("LIST", "transit/keys")
        self.assertEqual(sorted(self.ok(r)["keys"]), ["after", "pgd"])

    def test_write_stuck_on_a_lock_fails_within_a_lease(self):
        """A write statement waiting on a lock another session holds fails within a quarter
        of a lease (the leader's write transactions' lock_timeout) instead of holding the
        replica: the request
        gets an error, nothing of it commits, the replica stays active and serves reads
        meanwhile, and writes work again once the lock is gone."""
        servers = self.replicas(1)
        active = self.wait_one_active(servers)
        self.init(active, active)
        self.ok(active.request("POST", "transit/keys/before"))
        from pgtmp import PG_BIN, SUPERUSER, DBNAME
        holder = subprocess.Popen(
            self.pg._cmd([os.path.join(PG_BIN, "psql"), "-h", self.pg.dir, "-p",
                          str(self.pg.port), "-U", SUPERUSER, "-d", DBNAME, "-qtA"]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            # reads go on (SHARE mode); every INSERT, UPDATE and DELETE waits for the lock
            holder.stdin.write("BEGIN; LOCK TABLE kmsd_records IN SHARE MODE; "
                               "SELECT 'locked';\n")
            holder.stdin.flush()
            self.assertEqual(holder.stdout.readline().strip(), "locked")
            for _ in range(2):
                t0 = time.monotonic()
                r = active.request("POST", "transit/keys/stuck", timeout=60)
                waited = time.monotonic() - t0
                self.assertEqual(r.status, 500, r.describe())
                self.assertTrue(r.errors, r.describe())
                self.assertLess(waited, 30)  # a quarter of a lease, not the lock holder's whim
                # still the active replica, serving what needs no write
                r = active.request("GET", "sys/leader", token=None)
                self.assertTrue(r.json["is_self"], r.describe())
                r = active.request("POST", "transit/encrypt/before", {"plaintext": b64(b"x")})
                self.ok(r)
            # a replica starting meanwhile waits for the table (its schema statements need it)
            # instead of giving up after a quarter of a lease: the lock timeouts are the leader's
            # write transactions' own, not its session's
            second = self.replica()
            outcome = []

            def start_second():
                try:
                    second.start()
                    outcome.append("started")
                except BaseException as e:  # reported below
                    outcome.append(e)
            starter = threading.Thread(target=start_second)
            starter.start()
            # its set-up statements wait on the held table for longer than the leader's lock
            # timeout (0.5 s), seen in PostgreSQL itself (nothing else waits on a lock now)
            wait_for(lambda: int(self.pg.psql(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND now() - query_start > interval '1 second'").strip()) >= 1, 30,
                "the starting replica's statements waiting on the lock for 1 s")
        finally:
            if holder.poll() is None:
                holder.stdin.write("ROLLBACK;\n\\q\n")
                holder.stdin.flush()
            holder.wait(30)
            holder.stdin.close()
            holder.stdout.close()
        starter.join(30)
        self.assertEqual(outcome, ["started"], second.log_tail())
        self.assertEqual(active.request("GET", "transit/keys/stuck").status, 404)
        self.ok(active.request("POST", "transit/keys/after"))
        r = active.request("LIST", "transit/keys")
        self.assertEqual(sorted(self.ok(r)["keys"]), ["after", "before"])
        self.assertIs(self.wait_one_active(servers + [second]), active)
        self.assertNotIn("no longer the active replica", active.log_text())

    def test_min_decryption_version_through_every_replica(self):
        servers = self.replicas(3)
        active = self.wait_one_active(servers)
        sb = [s for s in servers if s is not active]
        self.init(sb[0], active)
        self.ok(sb[0].request("POST", "transit/keys/floor"))
        ct1 = self.ok(sb[1].request("POST", "transit/encrypt/floor",
                                    {"plaintext": b64(b"v1")}))["ciphertext"]
        self.ok(active.request("POST", "transit/keys/floor/rotate"))
        for s in servers:  # every replica (through the active's cache) decrypts v1
            r = s.request("POST", "transit/decrypt/floor", {"ciphertext": ct1})
            self.assertEqual(unb64(self.ok(r)["plaintext"]), b"v1")
        self.ok(sb[1].request("POST", "transit/keys/floor/config",
                              {"min_decryption_version": 2}))
        for s in servers:
            r = s.request("POST", "transit/decrypt/floor", {"ciphertext": ct1})
            self.assertEqual(r.status, 400, r.describe())
            r = s.request("GET", "transit/keys/floor")
            self.assertEqual(self.ok(r)["min_decryption_version"], 2)


class HaControllerTest(HaCase):

    def test_scheduled_rotation_once_across_failover(self):
        """The KMSKey controller runs on the active replica only, and a new active takes the
        schedule over from PostgreSQL: no rotation is repeated across a kill -9."""
        servers = self.replicas(3)
        active = self.wait_one_active(servers)
        sb = [s for s in servers if s is not active]
        self.init(sb[0], active)
        r = sb[0].request("POST", "sys/namespaces/org1", {})
        self.assertIn(r.status, (200, 204), r.describe())
        r = sb[1].request("POST", "kms/keys/prod/k1", {"rotation": "4s"}, namespace="org1")
        self.assertIn(r.status, (200, 201), r.describe())

        def version(via):
            r = via.request("GET", "kms/keys/prod/k1", namespace="org1", timeout=5)
            if r.status != 200:
                return 0
            return (r.json.get("data") or r.json)["status"]["currentVersion"]
        wait_for(lambda: version(sb[0]) >= 2, 20, "a scheduled rotation on the first active")
        at_kill = version(active)
        active.kill()
        new = self.wait_one_active(sb, timeout=15)
        wait_for(lambda: version(new) >= at_kill + 2, 30,
                 "scheduled rotations on the new active")
        r = new.request("GET", "transit/keys/org1-prod-k1", namespace="org1")
        created = self.ok(r)["keys"]
        versions = sorted(int(v) for v in created)
        self.assertEqual(versions, list(range(1, len(versions) + 1)))
        times = [int(created[str(v)]) for v in versions]
        gaps = [b - a for a, b in zip(times, times[1:])]
        # 4 s apart (whole seconds, one controller tick of jitter): a rotation repeated by the
        # new active would show up as a gap of 0 or 1
        sys.stderr.write("\nrotation times %s, gaps %s\n" % (times, gaps))
        self.assertTrue(all(g >= 2 for g in gaps), (times, gaps))


class HaPartitionTest(HaCase):

    def test_a_session_silent_after_login_is_given_up_within_a_lease(self):
        """PostgreSQL lets the replica's session in and then answers none of its set-up
        statements (a backend hung behind a proxy that keeps the TCP session up): the replica
        gives up within a lease and says so, where it waited on its first SET for as long as
        TCP would (the silent session is never closed). Once sessions go through again, it
        starts and becomes active."""
        proxy = BlackholeProxy(self.pg.port)
        self.addCleanup(proxy.close)
        proxy.stall.set()
        srv = self.replica(postgresql_url="postgresql://kmsd@127.0.0.1:%d/kmsd" % proxy.port)
        srv.spawn()
        rc = srv.wait_exit(30)
        self.assertIsNotNone(rc, "kmsd still waiting on a silent PostgreSQL session after 30 s")
        self.assertEqual(rc, 1, srv.log_tail())
        self.assertIn("no answer within the lease (%d ms)" % LEASE_MS, srv.log_text())
        self.assertGreaterEqual(proxy.stalled, 1)
        proxy.stall.clear()
        srv.start()
        self.wait_one_active([srv], timeout=30)

    def replicas_behind_proxies(self, n):
        """n started replicas, each reaching PostgreSQL through its own BlackholeProxy."""
        proxies = [BlackholeProxy(self.pg.port) for _ in range(n)]
        self.addCleanup(lambda: [p.close() for p in proxies])
        servers = [self.replica(postgresql_url="postgresql://kmsd@127.0.0.1:%d/kmsd" % p.port)
                   .start() for p in proxies]
        return proxies, servers

    def test_partitioned_active_never_overlaps(self):
        """The active's PostgreSQL traffic silently dropped: it stops answering at its lease,
        PostgreSQL ends its session, a standby takes over after waiting out the lease, and
        nothing the cut-off replica answers after that reflects its stale state."""
        proxies, servers = self.replicas_behind_proxies(3)
        old = self.wait_one_active(servers)
        proxy = proxies[servers.index(old)]
        self.init(old, old)
        self.ok(old.request("POST", "transit/keys/part"))
        ct1 = self.ok(old.request("POST", "transit/encrypt/part",
                                  {"plaintext": b64(b"one")}))["ciphertext"]
        self.ok(old.request("POST", "transit/keys/part/rotate"))
        r = old.request("POST", "transit/decrypt/part", {"ciphertext": ct1})
        self.assertEqual(unb64(self.ok(r)["plaintext"]), b"one")  # cached on the old active

        answers = []  # (sent, received, status) of decrypts sent straight to the old active
        stop = threading.Event()

        def probe():
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    r = old.request("POST", "transit/decrypt/part", {"ciphertext": ct1},
                                    timeout=10)
                    answers.append((t0, time.monotonic(), r.status))
                except OSError:
                    pass
                time.sleep(0.02)
        th = threading.Thread(target=probe)
        proxy.drop.set()
        t_cut = time.monotonic()
        th.start()
        try:
            others = [s for s in servers if s is not old]
            new = self.wait_one_active(others, timeout=30)
            t_new = time.monotonic()
            self.ok(new.request("POST", "transit/keys/part/config",
                                {"min_decryption_version": 2}))
            t_floor = time.monotonic()
            wait_for(lambda: any(a[0] > t_floor + LEASE_MS / 1000 for a in answers), 20,
                     "answers from the cut-off replica after the floor was raised")
        finally:
            stop.set()
            th.join()
        sys.stderr.write("\ncut-off replica: %d answers, statuses %s; takeover after %.2fs\n" % (
            len(answers), sorted(set(a[2] for a in answers)), t_new - t_cut))
        # it stopped answering 2xx within its lease of the cut
        late = [a for a in answers if 200 <= a[2] < 300 and a[0] > t_cut + LEASE_MS / 1000]
        self.assertEqual(late, [], "2xx from the cut-off replica after its lease")
        # nothing it answered after the new active's raise was a stale 2xx
        stale = [a for a in answers if a[0] > t_floor and 200 <= a[2] < 300]
        self.assertEqual(stale, [])
        self.assertGreater(t_new - t_cut, LEASE_MS / 1000)
        # healed: the old replica comes back as a standby and forwards
        proxy.heal()
        wait_for(lambda: old.request("POST", "transit/decrypt/part",
                                     {"ciphertext": ct1}).status == 400, 30,
                 "the old active forwarding to the new one")
        self.assertEqual(self.actives(servers), [new])

    def test_cut_off_standby_answers_health_at_once(self):
        """A standby whose PostgreSQL traffic is silently dropped answers sys/health from what
        it last saw, within a probe's timeout (Kubernetes' default is 1 s): it read the store
        on every health request, which then took a lease (a pooled connection's statement) or
        a connect timeout (a new one) to fail, and the liveness probe failed meanwhile."""
        proxies, servers = self.replicas_behind_proxies(2)
        active = self.wait_one_active(servers)
        standby = [s for s in servers if s is not active][0]
        self.init(active, active)
        wait_for(lambda: getattr(self.health(standby), "status", None) == 429, 10,
                 "the standby to see the store initialised")
        proxies[servers.index(standby)].drop.set()
        for _ in range(4):
            t0 = time.monotonic()
            r = self.health(standby)
            took = time.monotonic() - t0
            self.assertIsNotNone(r, "no health answer from the cut-off standby")
            self.assertEqual(r.status, 429, r.describe())
            self.assertTrue(r.json["initialized"], r.describe())
            self.assertLess(took, 1.0, "sys/health took %.2f s on the cut-off standby" % took)
            r = self.health(standby, "?standbyok=true")
            self.assertEqual(r.status, 200, r.describe())
        # the active, still reachable, goes on serving
        self.ok(active.request("GET", "sys/mounts"))

    def test_standby_cut_off_from_postgresql_keeps_forwarding(self):
        """A standby whose PostgreSQL traffic alone is silently dropped keeps forwarding to
        the active, which serves on: it forgot the active once its leader record read failed
        and answered every request 503 'no active kmsd replica' (about 6 s after the cut)
        while its readiness probe (standbyok=true) kept it behind the Service."""
        proxies, servers = self.replicas_behind_proxies(2)
        active = self.wait_one_active(servers)
        standby = [s for s in servers if s is not active][0]
        self.init(active, active)
        self.ok(active.request("POST", "transit/keys/cut"))
        self.ok(standby.request("POST", "transit/encrypt/cut", {"plaintext": b64(b"before")}))
        proxies[servers.index(standby)].drop.set()
        standby.wait_log("cannot read the leader record", timeout=30)
        # two more leader reads fail meanwhile (each takes up to a lease, or a connect timeout)
        deadline = time.monotonic() + 3 * LEASE_MS / 1000
        n = 0
        while time.monotonic() < deadline or n < 5:
            n += 1
            r = standby.request("POST", "transit/encrypt/cut", {"plaintext": b64(b"%d" % n)})
            ct = self.ok(r)["ciphertext"]
            r = active.request("POST", "transit/decrypt/cut", {"ciphertext": ct})
            self.assertEqual(unb64(self.ok(r)["plaintext"]), b"%d" % n)
        r = standby.request("GET", "sys/leader", token=None)
        self.assertEqual(r.json["leader_address"], active.addr, r.describe())
        self.assertEqual(self.actives(servers), [active])

    def test_standby_behind_a_proxy_whose_backend_vanished_takes_over(self):
        """A standby reaches PostgreSQL through a TCP-terminating proxy that acknowledges its
        bytes and never passes on that PostgreSQL closed the session: its try for the leader
        lock (and any leader statement on the write connection) must still give up within a
        lease. It waited forever, so once the path worked again and the active died, the
        standby never took over."""
        proxies, servers = self.replicas_behind_proxies(2)
        active = self.wait_one_active(servers)
        standby = [s for s in servers if s is not active][0]
        self.init(active, active)
        proxy = proxies[servers.index(standby)]
        proxy.swallow.set()
        proxy.drop.set()
        # PostgreSQL ends the standby's silent write session (idle_session_timeout, a lease);
        # the proxy keeps its client side open
        wait_for(lambda: self.write_session_gone(proxy), 20,
                 "PostgreSQL to end the standby's write session")
        os.kill(active.proc.pid, signal.SIGKILL)
        proxy.drop.clear()  # new connections go through again
        self.wait_one_active([standby], timeout=6 * LEASE_MS / 1000)

    def write_session_gone(self, proxy):
        """No session through the proxy is a standby's write session (the one that tries for
        the leader lock) any more."""
        ports = []
        with proxy.lock:
            for _, u in proxy.pairs:
                try:
                    ports.append(u.getsockname()[1])
                except OSError:
                    pass
        if not ports:
            return True
        live = self.pg.psql("SELECT count(*) FROM pg_stat_activity WHERE client_port IN (%s) "
                            "AND query LIKE 'SELECT pg_try_advisory_lock%%'"
                            % ",".join(str(p) for p in ports)).strip()
        return live == "0"

    @staticmethod
    def probing(server, paths, took, stop):
        """Threads (for the caller to start) that GET each of paths from server until stop is
        set, appending each request's seconds to took."""
        def probe(path):
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    server.request("GET", path, timeout=30)
                except OSError:
                    pass
                took.append(time.monotonic() - t0)
        return [threading.Thread(target=probe, args=(p,)) for p in paths]

    def test_cut_off_active_steps_down_within_leases(self):
        """The active's PostgreSQL traffic silently dropped while clients keep it busy: it
        stands by within a few leases, and no request to it (health probes included) waits
        longer. A new read connection waited for libpq's 10 s connect_timeout, and the
        step-down waited for the requests holding one, every other request behind it."""
        proxies, servers = self.replicas_behind_proxies(2)
        old = self.wait_one_active(servers)
        self.init(old, old)
        self.ok(old.request("POST", "transit/keys/cut"))
        took = []
        stop = threading.Event()

        threads = self.probing(old, ("sys/health", "transit/keys/cut", "sys/mounts",
                                     "transit/keys"), took, stop)
        proxies[servers.index(old)].drop.set()
        t_cut = time.monotonic()
        for th in threads:
            th.start()
        try:
            wait_for(lambda: "standing by: no longer the active replica" in old.log_text(), 30,
                     "the cut-off active to stand by")
            t_down = time.monotonic()
        finally:
            stop.set()
            for th in threads:
                th.join()
        sys.stderr.write("\ncut-off active: stood by after %.2fs, slowest request %.2fs\n" % (
            t_down - t_cut, max(took)))
        self.assertLess(t_down - t_cut, 5 * LEASE_MS / 1000)
        self.assertLess(max(took), 5 * LEASE_MS / 1000)

    def test_cut_off_while_reads_run_steps_down_within_leases(self):
        """The active's PostgreSQL traffic silently dropped while sixteen clients' reads run
        (the test above cuts it before they start): a read transaction whose last statement
        was answered ends with a ROLLBACK, which waited with no deadline, for as long as TCP
        lets it (forever here: the proxy acknowledges every byte). The request held the
        service, the step-down waited for it, and every request behind the step-down, health
        probes included, hung with it."""
        proxies, servers = self.replicas_behind_proxies(2)
        old = self.wait_one_active(servers)
        self.init(old, old)
        self.ok(old.request("POST", "transit/keys/cut"))
        took = []
        stop = threading.Event()

        threads = self.probing(old, ["transit/keys/cut", "sys/mounts"] * 8, took, stop)
        for th in threads:
            th.start()
        try:
            wait_for(lambda: len(took) > 200, 30, "reads before the cut")
            proxies[servers.index(old)].drop.set()
            t_cut = time.monotonic()
            n = len(took)
            wait_for(lambda: "standing by: no longer the active replica" in old.log_text(), 30,
                     "the cut-off active to stand by")
            t_down = time.monotonic()
            # health answers at once again (the standby's own answer)
            wait_for(lambda: getattr(self.health(old), "status", None) == 429, 10,
                     "the standby's health answer")
        finally:
            stop.set()
            proxies[servers.index(old)].heal()
            for th in threads:
                th.join()
        sys.stderr.write("\ncut-off active under reads: stood by after %.2fs, slowest request "
                         "after the cut %.2fs\n" % (t_down - t_cut, max(took[n:])))
        self.assertLess(t_down - t_cut, 5 * LEASE_MS / 1000)


class HaConsistencyTest(HaCase):
    """Issue 15 item 4: after a 2xx trim, delete, token revoke and revoke-accessor made
    through one replica, every replica sees it at once (forwarded), and again after a kill -9
    of the active."""

    def check_everywhere(self, servers, cts, tokens):
        for s in servers:
            # trimmed versions are gone for good; the kept one decrypts
            for v in (1, 2):
                r = s.request("POST", "transit/decrypt/cons", {"ciphertext": cts[v]})
                self.assertEqual(r.status, 400, r.describe())
            r = s.request("POST", "transit/decrypt/cons", {"ciphertext": cts[3]})
            self.assertEqual(unb64(self.ok(r)["plaintext"]), b"v3")
            r = s.request("GET", "transit/keys/cons")
            self.assertEqual(self.ok(r)["min_available_version"], 3)
            self.assertEqual(sorted(self.ok(r)["keys"]), ["3", "4"])
            # the deleted key is absent
            r = s.request("GET", "transit/keys/gone")
            self.assertEqual(r.status, 404, r.describe())
            r = s.request("LIST", "transit/keys")
            self.assertEqual(self.ok(r)["keys"], ["cons"])
            # revoked tokens (by token and by accessor) are refused; the kept one works
            for t in tokens[:2]:
                r = s.request("GET", "auth/token/lookup-self", token=t)
                self.assertEqual(r.status, 403, r.describe())
            self.ok(s.request("GET", "auth/token/lookup-self", token=tokens[2]))

    def test_writes_seen_by_every_replica_and_after_failover(self):
        servers = self.replicas(3)
        active = self.wait_one_active(servers)
        sb = [s for s in servers if s is not active]
        self.init(sb[0], active)
        # a key with four versions and a ciphertext under each (made through the standbys)
        self.ok(sb[0].request("POST", "transit/keys/cons"))
        for _ in range(3):
            self.ok(sb[1].request("POST", "transit/keys/cons/rotate"))
        cts = {}
        for v in range(1, 5):
            r = sb[v % 2].request("POST", "transit/encrypt/cons",
                                  {"plaintext": b64(b"v%d" % v), "key_version": v})
            cts[v] = self.ok(r)["ciphertext"]
        # every replica decrypts every version before the trim
        for s in servers:
            r = s.request("POST", "transit/decrypt/cons", {"ciphertext": cts[1]})
            self.assertEqual(unb64(self.ok(r)["plaintext"]), b"v1")
        self.ok(sb[0].request("POST", "transit/keys/cons/config",
                              {"min_decryption_version": 3, "min_encryption_version": 4}))
        r = sb[1].request("POST", "transit/keys/cons/trim", {"min_available_version": 3})
        self.assertTrue(200 <= r.status < 300, r.describe())
        # a key deleted through a standby
        self.ok(sb[0].request("POST", "transit/keys/gone"))
        self.ok(sb[1].request("POST", "transit/keys/gone/config", {"deletion_allowed": True}))
        r = sb[0].request("DELETE", "transit/keys/gone")
        self.assertEqual(r.status, 204, r.describe())
        # tokens: one revoked by token, one by accessor (through different standbys), one kept
        made = []
        for _ in range(3):
            r = sb[0].request("POST", "auth/token/create", {"policies": ["default"]})
            self.assertEqual(r.status, 200, r.describe())
            auth = r.json["auth"]
            made.append((auth["client_token"], auth["accessor"]))
        r = sb[0].request("POST", "auth/token/revoke", {"token": made[0][0]})
        self.assertEqual(r.status, 204, r.describe())
        r = sb[1].request("POST", "auth/token/revoke-accessor", {"accessor": made[1][1]})
        self.assertEqual(r.status, 204, r.describe())
        tokens = [t for t, _ in made]
        self.check_everywhere(servers, cts, tokens)
        # kill -9 of the active: the new active loads it all from PostgreSQL
        active.kill()
        survivors = [s for s in servers if s is not active]
        self.wait_one_active(survivors, timeout=20)
        self.check_everywhere(survivors, cts, tokens)


class HaMemoryTest(HaCase):

    def test_no_key_left_in_a_replica_that_stood_down(self):
        """An active replica whose PostgreSQL session was terminated stands down and frees its
        service; the raw AES key it used is then nowhere in its memory. Its workers' cipher
        contexts (crypto/aead.c) kept it (14 copies in one run) for as long as it stood by."""
        import base64
        from hooks_offload import process_memory
        servers = self.replicas(2)
        a = self.wait_one_active(servers)
        b = [s for s in servers if s is not a][0]
        self.init(a, a)
        self.ok(a.request("POST", "transit/keys/mem", {"exportable": True}))
        for i in range(40):  # on every worker of the active, most likely
            self.ok(a.request("POST", "transit/encrypt/mem", {"plaintext": b64(b"m%d" % i)}))
        r = a.request("GET", "transit/export/encryption-key/mem/1")
        key = base64.b64decode(self.ok(r)["keys"]["1"])
        self.assertGreater(process_memory(a.proc.pid).count(key), 0)
        self.assertIs(self.leadership_taken_from(a, servers), b)
        self.assertEqual(process_memory(a.proc.pid).count(key), 0)


class HaConnectionsTest(HaCase):

    def test_a_replica_that_stood_down_keeps_no_read_connections(self):
        """The read connections an active replica opened for a burst of concurrent reads are
        closed when it stands down. They stayed open, idle, for as long as it stood by, so that
        after hand-overs every replica held the connections of its busiest time as active:
        with PostgreSQL's default max_connections (100) and HA's 32 workers and 32 handler
        threads, three replicas could take every connection, and the active, or a standby
        taking over, was refused (`too many clients`)."""
        servers = []
        for i in range(2):
            srv = self.replica(postgresql_url=self.pg.tcp_url + "?application_name=r%d" % i)
            servers.append(srv.start())
        a = self.wait_one_active(servers)
        b = [s for s in servers if s is not a][0]
        name = {s: "r%d" % i for i, s in enumerate(servers)}
        self.init(a, a)
        self.ok(a.request("POST", "transit/keys/burst"))

        def conns(s):
            return int(self.pg.psql("SELECT count(*) FROM pg_stat_activity WHERE "
                                    "application_name = '%s'" % name[s]).strip())
        # concurrent reads until the active holds a pool of read connections
        stop = threading.Event()

        def reader():
            while not stop.is_set():
                try:
                    a.request("GET", "transit/keys/burst", timeout=10)
                except OSError:
                    pass
        threads = [threading.Thread(target=reader) for _ in range(16)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: conns(a) >= 6, 30, "the active to open read connections")
        finally:
            stop.set()
            for t in threads:
                t.join()
        self.assertIs(self.leadership_taken_from(a, servers), b)
        # a standby uses its write connection (the lock's tries) and one read connection (the
        # leader record)
        wait_for(lambda: conns(a) <= 2, 10, lambda: "the standby to close its idle read "
                 "connections (has %d)" % conns(a))


class HaForwardTest(HaCase):

    def audit_remote(self, path, audit_file):
        """remote_address of every response entry of `path` in an audit file."""
        out = []
        with open(audit_file) as f:
            for line in f:
                e = json.loads(line)
                if e.get("type") == "response" and e["request"].get("path") == path:
                    out.append(e["request"].get("remote_address"))
        return out

    def test_client_address_headers_and_namespace_health(self):
        servers = []
        for _ in range(2):
            srv = self.replica()
            srv.config["audit_file"] = os.path.join(srv.workdir, "audit.log")
            servers.append(srv.start())
        a = self.wait_one_active(servers)
        b = [s for s in servers if s is not a][0]
        self.init(b, a)
        secret = hmac.new(self.seal_key, b"kmsd ha forwarding v1", hashlib.sha256).hexdigest()
        pt = {"plaintext": b64(b"who")}
        # through the standby, with a forged client address and secret: both dropped, the
        # active records the standby's client (loopback), not 10.9.9.9
        self.ok(b.request("POST", "transit/encrypt/x1", pt, headers={
            "X-Forwarded-For": "10.9.9.9", "X-Kmsd-Forward-Auth": "0" * 64}))
        # straight to the active with the replicas' secret: the address is taken
        self.ok(a.request("POST", "transit/encrypt/x2", pt, headers={
            "X-Kmsd-Forwarded": "test", "X-Kmsd-Forward-Auth": secret,
            "X-Forwarded-For": "10.1.2.3"}))
        # straight to the active with a wrong secret, or none: ignored (the last digit
        # changed to another one: appending "0" alone matched the real secret 1 time in 16)
        wrong = secret[:-1] + ("1" if secret[-1] == "0" else "0")
        self.assertNotEqual(wrong, secret)
        self.ok(a.request("POST", "transit/encrypt/x3", pt, headers={
            "X-Kmsd-Forwarded": "test", "X-Kmsd-Forward-Auth": wrong,
            "X-Forwarded-For": "10.5.5.5"}))
        self.ok(a.request("POST", "transit/encrypt/x4", pt, headers={
            "X-Forwarded-For": "10.6.6.6"}))
        # a client's own X-Kmsd-Forwarded (without the secret) does not stop the standby
        # from forwarding it
        self.ok(b.request("POST", "transit/encrypt/x1", pt, headers={
            "X-Kmsd-Forwarded": "evil"}))
        # many requests through the standby on its kept connections, in order
        for i in range(20):
            r = b.request("POST", "transit/encrypt/x1", {"plaintext": b64(b"n%d" % i)})
            ct = self.ok(r)["ciphertext"]
            r = b.request("POST", "transit/decrypt/x1", {"ciphertext": ct})
            self.assertEqual(unb64(self.ok(r)["plaintext"]), b"n%d" % i)
        audit = a.config["audit_file"]
        wait_for(lambda: len(self.audit_remote("transit/encrypt/x4", audit)) == 1, 10,
                 "the audit lines of the active")
        self.assertEqual(set(self.audit_remote("transit/encrypt/x1", audit)), {"127.0.0.1"})
        self.assertEqual(self.audit_remote("transit/encrypt/x2", audit), ["10.1.2.3"])
        self.assertEqual(self.audit_remote("transit/encrypt/x3", audit), ["127.0.0.1"])
        self.assertEqual(self.audit_remote("transit/encrypt/x4", audit), ["127.0.0.1"])
        # the active's response headers come back through the standby (X-Vault-Namespace echo)
        r = b.request("LIST", "transit/keys", namespace="root")
        self.assertEqual(r.status, 200, r.describe())
        self.assertEqual(r.header("X-Vault-Namespace"), "root")
        # a standby's sys/health with a namespace answers as the active does: root is the
        # standby answer (header echoed); another namespace is the active's own answer
        r = b.request("GET", "sys/health", token=None, namespace="root")
        self.assertEqual(r.status, 429, r.describe())
        self.assertEqual(r.header("X-Vault-Namespace"), "root")
        for ns, token in (("nope", None), ("nope", a.token)):
            ra = a.request("GET", "sys/health", token=token, namespace=ns)
            rb = b.request("GET", "sys/health", token=token, namespace=ns)
            self.assertEqual((rb.status, rb.json), (ra.status, ra.json), rb.describe())
            self.assertIn(ra.status, (403, 404))
        self.ok(a.request("POST", "sys/namespaces/team", {}))
        ra = a.request("GET", "sys/health", token=None, namespace="team")
        rb = b.request("GET", "sys/health", token=None, namespace="team")
        self.assertEqual((rb.status, rb.json), (ra.status, ra.json), rb.describe())
        self.assertEqual(ra.status, 400, ra.describe())

    def test_batch_with_an_informational_code_through_a_standby(self):
        """A batch whose partial_failure_response_code is 1xx: the active sends that as an
        interim response and answers 200; the standby's forward read the interim head as the
        answer, waited for a body until ha_forward_timeout and answered 503 `cannot be
        reached`, after the active had carried the batch out."""
        servers = self.replicas(2, ha_forward_timeout="20s")
        a = self.wait_one_active(servers)
        b = [s for s in servers if s is not a][0]
        self.init(b, a)
        self.ok(b.request("POST", "transit/keys/pf"))
        body = {"batch_input": [{"plaintext": b64(b"good")}, {"plaintext": "not base64!"}],
                "partial_failure_response_code": 102}
        for _ in range(2):  # the kept connection carries the next request as well
            t0 = time.monotonic()
            r = b.request("POST", "transit/encrypt/pf", body, timeout=30)
            self.assertLess(time.monotonic() - t0, 10, r.describe())
            self.assertEqual(r.status, 200, r.describe())
            items = r.json["data"]["batch_results"]
            self.assertEqual(len(items), 2, r.describe())
            self.assertIn("ciphertext", items[0])
            self.assertIn("error", items[1])
            r = b.request("POST", "transit/decrypt/pf", {"ciphertext": items[0]["ciphertext"]})
            self.assertEqual(unb64(self.ok(r)["plaintext"]), b"good")

    def test_forged_leader_record_not_followed(self):
        # someone who can write to the database but has no seal key points the leader record
        # at a listener of theirs: no standby sends it a request (nor the token in it), the
        # standby says why in its log, and the active puts its own record back
        servers = [self.replica().start() for _ in range(2)]
        a = self.wait_one_active(servers)
        b = [s for s in servers if s is not a][0]
        self.init(b, a)
        pt = {"plaintext": b64(b"not for the trap")}
        self.ok(b.request("POST", "transit/encrypt/f", pt))
        trap = socket.socket()
        self.addCleanup(trap.close)
        trap.bind(("127.0.0.1", 0))
        trap.listen(64)
        trap.setblocking(False)
        trap_addr = "http://127.0.0.1:%d" % trap.getsockname()[1]
        stop = threading.Event()

        def tamper():
            while not stop.is_set():
                self.pg.psql("UPDATE kmsd_leader SET api_addr = '%s'" % trap_addr)
                stop.wait(0.01)
        t = threading.Thread(target=tamper)
        t.start()
        statuses = set()
        try:
            wait_for(lambda: "fails its MAC check" in b.log_text(), 30,
                     "the standby to refuse the forged leader record")
            wait_for(lambda: "publishing it again" in a.log_text(), 30,
                     "the active to put its leader record back")
            for _ in range(20):
                r = b.request("POST", "transit/encrypt/f", pt)
                statuses.add(r.status)
                self.assertIn(r.status, (200, 503), r.describe())
        finally:
            stop.set()
            t.join()
        with self.assertRaises(BlockingIOError, msg="a replica connected to the forged address"):
            trap.accept()
        # the tampering over, the active's record stands and the standby forwards again
        wait_for(lambda: self.health(b) is not None and b.request(
            "GET", "sys/leader", token=None).json.get("leader_address") == a.addr, 30,
            "the standby to follow the active's record again")
        self.ok(b.request("POST", "transit/encrypt/f", pt))


class HaAuditTest(HaCase):

    def audited_pair(self, in_dir=False):
        """Two started replicas, replica-0 and replica-1, each auditing to its own file (in a
        directory of its own with in_dir); returns them, the active one and the standby."""
        servers = []
        for i in range(2):
            srv = self.replica()
            d = os.path.join(srv.workdir, "audit") if in_dir else srv.workdir
            if in_dir:
                os.mkdir(d)
            srv.config["audit_file"] = os.path.join(d, "audit.log")
            srv.config["ha_replica_id"] = "replica-%d" % i
            servers.append(srv.start())
        a = self.wait_one_active(servers)
        return servers, a, [s for s in servers if s is not a][0]

    def test_each_replica_keeps_its_own_audit_chain(self):
        servers, a, b = self.audited_pair()
        self.init(b, a)
        self.ok(b.request("POST", "transit/keys/aud"))
        self.ok(b.request("POST", "transit/encrypt/aud", {"plaintext": b64(b"on a")}))
        # a clean stop: b takes over and audits into its own file
        self.assertEqual(a.stop(), 0)
        self.wait_one_active([b], timeout=10)
        self.ok(b.request("POST", "transit/encrypt/aud", {"plaintext": b64(b"on b")}))
        # a comes back as a standby, b stops: a serves again and continues its own chain
        a.start()
        self.assertEqual(b.stop(), 0)
        self.wait_one_active([a], timeout=10)
        self.ok(a.request("POST", "transit/encrypt/aud", {"plaintext": b64(b"on a again")}))
        self.assertEqual(a.stop(), 0)
        files = [s.config["audit_file"] for s in servers]
        texts = []
        for f in files:
            with open(f) as fh:
                texts.append(fh.read())
        self.assertIn("transit/encrypt/aud", texts[0])
        self.assertIn("transit/encrypt/aud", texts[1])
        for f in files:
            r = subprocess.run([KMSD_BIN, "audit", "verify", "--genesis", f],
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r = subprocess.run([KMSD_BIN, "audit", "verify", "--each", "--genesis"] + files,
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stdout.count("ok: "), 2, r.stdout)
        # one chain head record per replica in storage, none shared
        heads = self.pg.psql("SELECT count(*) FROM kmsd_records WHERE db = 0 AND "
                             "position('audit/file/head/replica-'::bytea IN key) = 1").strip()
        self.assertEqual(heads, "2")
        shared = self.pg.psql("SELECT count(*) FROM kmsd_records WHERE db = 0 AND "
                              "key = 'audit/file/head'::bytea").strip()
        self.assertEqual(shared, "0")
        # kmsctl audit list over both replicas' logs: one timeline, merged by time
        r = subprocess.run([KMSCTL_BIN, "audit", "list", "--file", files[0], "--file", files[1],
                            "--op", "encrypt", "-o", "json"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        events = json.loads(r.stdout)
        self.assertEqual(len(events), 3, events)
        stamps = [e["time"] for e in events]
        self.assertEqual(stamps, sorted(stamps, key=lambda t: (t[:19], float("0." + (
            t[20:-1] or "0")))), stamps)
        alone = subprocess.run([KMSCTL_BIN, "audit", "list", "--file", files[0], "--op",
                                "encrypt", "-o", "json"], capture_output=True, text=True)
        self.assertEqual(len(json.loads(alone.stdout)), 2, alone.stdout + alone.stderr)
        # a tampered replica file is caught by --each, naming it
        with open(files[1], "r+") as f:
            data = f.read().replace("transit/encrypt/aud", "transit/encrypt/AUD", 1)
            f.seek(0)
            f.write(data)
        r = subprocess.run([KMSD_BIN, "audit", "verify", "--each"] + files,
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(files[1], r.stderr)

    def test_remote_audit_list_says_it_is_one_replica_log(self):
        """`kmsctl audit list` without --file asks the server (sys/audit/events), whose answer
        is the active replica's own log: after a hand-over the operations the other replica
        answered are not in it. The answer says so (a warning, printed by kmsctl), instead of
        passing for the whole history (the product doc's `audit list --since=24h`)."""
        _, a, b = self.audited_pair()
        self.init(a, a)
        self.ok(a.request("POST", "transit/keys/hist"))
        self.assertEqual(a.stop(), 0)
        self.wait_one_active([b], timeout=10)
        self.ok(b.request("POST", "transit/keys/hist/rotate"))
        env = dict(os.environ, KMS_ADDR=b.addr, KMS_TOKEN=b.token)
        for k in ("VAULT_ADDR", "VAULT_TOKEN", "KMS_AUDIT_FILE", "KMS_NAMESPACE"):
            env.pop(k, None)
        r = subprocess.run([KMSCTL_BIN, "audit", "list", "--key", "hist", "-o", "json"],
                           capture_output=True, text=True, env=env, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual([e["op"] for e in json.loads(r.stdout)], ["rotate"], r.stdout)
        self.assertIn("Warning: the audit log of HA replica %s only" % b.config["ha_replica_id"],
                      r.stderr)
        # both logs together hold the whole history
        r = subprocess.run([KMSCTL_BIN, "audit", "list", "--key", "hist", "-o", "json",
                            "--file", a.config["audit_file"], "--file", b.config["audit_file"]],
                           capture_output=True, text=True, env=env, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual([e["op"] for e in json.loads(r.stdout)], ["create", "rotate"], r.stdout)

    def test_chain_continues_after_an_unclean_step_down_and_a_rotation(self):
        """The active is frozen (SIGSTOP) until the other replica takes over; resumed, it steps
        down past its lease, when nothing commits, so its chain head cannot be stored. Its file
        is rotated while it stands by (logrotate's rename; a standby has no file open), and it
        is promoted again: its new file continues the chain from the head it wrote, not from the
        older head in storage (none here), so the rotated set verifies from the genesis."""
        _, a, b = self.audited_pair(in_dir=True)
        self.init(a, a)
        self.ok(a.request("POST", "transit/keys/rot"))
        for i in range(3):
            self.ok(a.request("POST", "transit/encrypt/rot", {"plaintext": b64(b"%d" % i)}))
        os.kill(a.proc.pid, signal.SIGSTOP)
        self.wait_one_active([b], timeout=20)
        os.kill(a.proc.pid, signal.SIGCONT)
        wait_for(lambda: "standing by: no longer the active replica" in a.log_text(), 20,
                 "the old active to step down")
        self.ok(b.request("POST", "transit/encrypt/rot", {"plaintext": b64(b"on b")}))
        log = a.config["audit_file"]
        os.rename(log, log + ".1")
        self.assertEqual(b.stop(), 0)
        self.wait_one_active([a], timeout=20)
        self.ok(a.request("POST", "transit/encrypt/rot", {"plaintext": b64(b"on a again")}))
        self.assertEqual(a.stop(), 0)
        r = subprocess.run([KMSD_BIN, "audit", "verify", "--genesis", os.path.dirname(log)],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("in 2 file(s)", r.stdout)


class HaConfigTest(HaCase):

    def test_lease_settings_checked(self):
        srv = self.replica(ha_lease="300ms", ha_heartbeat="200ms")
        srv.spawn()
        self.assertNotEqual(srv.wait_exit(30), 0)
        self.assertIn("ha_lease", srv.log_text())
        srv = self.replica(ha_lease="soon")
        srv.spawn()
        self.assertNotEqual(srv.wait_exit(30), 0)
        self.assertIn("not a duration", srv.log_text())

    def test_api_addr_from_environment(self):
        os.environ["KMSD_API_ADDR"] = "http://kmsd-0.kmsd-peers.kms.svc:8200"
        try:
            srv = self.replica().start()
        finally:
            del os.environ["KMSD_API_ADDR"]
        wait_for(lambda: self.actives([srv]) == [srv], 10, "the replica active")
        r = srv.request("GET", "sys/leader", token=None)
        self.assertEqual(r.json["leader_address"], "http://kmsd-0.kmsd-peers.kms.svc:8200")
        listen = self.replica(listen_address="0.0.0.0:0")
        listen.spawn()
        self.assertNotEqual(listen.wait_exit(30), 0)
        self.assertIn("needs \"api_addr\"", listen.log_text())

    def test_one_api_addr_for_two_replicas_is_said(self):
        """Two replicas configured with one api_addr (a load balancer's address, as Vault's
        api_addr often is): the standby cannot forward (the active's record names its own
        address) and answers 503; after ten leases it says why in its log, once. It said
        nothing."""
        shared = "http://kmsd.example.internal:8200"
        lease = {"ha_lease": "600ms", "ha_heartbeat": "150ms"}  # said after ten leases
        a = self.replica(api_addr=shared, **lease).start()
        wait_for(lambda: self.actives([a]) == [a], 10, "the first replica active")
        b = self.replica(api_addr=shared, **lease).start()
        r = b.request("GET", "sys/leader", token=None)
        self.assertFalse(r.json["is_self"], r.describe())
        r = b.request("LIST", "transit/keys")
        self.assertEqual(r.status, 503, r.describe())
        said = "the active replica advertises this replica's own api_addr"
        wait_for(lambda: said in b.log_text(), 20,
                 "the standby to say that two replicas share its api_addr")
        self.assertNotIn(said, a.log_text())
        wait_for(lambda: b.log_text().count(said) == 1 and self.actives([a]) == [a], 5,
                 "one message")

    def test_lmdb_ignores_ha(self):
        """ha_enabled only means something on PostgreSQL: an LMDB kmsd serves alone."""
        srv = KmsdServer(mode="config", config={"ha_enabled": True})
        self.servers.append(srv)
        srv.start()
        KmsdTestCase.init_config_server(srv)
        r = srv.request("GET", "sys/health", token=None)
        self.assertEqual(r.status, 200, r.describe())
        self.assertFalse(r.json["standby"])


if __name__ == "__main__":
    unittest.main()
