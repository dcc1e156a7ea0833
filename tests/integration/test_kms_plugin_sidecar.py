"""`kmsd kms-plugin`: the KMS v2 plugin as a sidecar in front of a remote kmsd.

A real remote kmsd (config mode, so it can be stopped and started again on the same store and
port), a real sidecar process logging in with a ServiceAccount token from a fake cluster issuer
(auth_helpers.Issuer) through the kubernetes auth method, and Debian's python3-grpcio as the
client. Covers round trips, rotation and min_decryption_version through the KMSKey actions,
refusals, 200 concurrent calls, the remote going away and coming back, token renewal and
expiry, a token file re-read after a 403, TLS with -ca-cert, and SIGTERM.
"""

import concurrent.futures
import http.server
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import grpc

import auth_helpers as ah
import test_tls
from kmsd_harness import KMSD_BIN, KmsdServer, b64, listening_address
from kms_plugin_helpers import Plugin, RawH2, load_stubs, rpc_error, wait_for, wait_socket

ORG = "org1"
PROJECT = "prod"
SEED = bytes(range(32))
POLICY = """
path "transit/encrypt/org1-prod-*" { capabilities = ["update"] }
path "transit/decrypt/org1-prod-*" { capabilities = ["update"] }
"""


class Sidecar:
    """A `kmsd kms-plugin` process; its log is kept in the work directory."""

    def __init__(self, workdir, args):
        self.dir = workdir
        self.sock = os.path.join(workdir, "kms-%s.sock" % os.urandom(3).hex())
        self.log_path = self.sock + ".log"
        self.args = [KMSD_BIN, "kms-plugin", "-listen=unix://" + self.sock] + args
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_socket(self.sock)
        except AssertionError:
            self.stop()
            raise AssertionError("sidecar did not start:\n" + self.log_text())
        self.plugin = Plugin(self.sock)

    def log_text(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        if getattr(self, "plugin", None) is not None:
            self.plugin.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                rc = None
        else:
            rc = self.proc.returncode
        self.log.close()
        return rc


class SidecarCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        load_stubs()
        cls.dir = tempfile.mkdtemp(prefix="kmsd-sidecar-")
        cls.remote = KmsdServer(mode="config")
        # the audit log's remote_port tells which connection each call came on
        cls.audit = os.path.join(cls.remote.workdir, "audit.log")
        cls.remote.config.update({"audit_file": cls.audit, "audit_fsync": "never"})
        cls.remote.start()
        r = cls.remote.request("PUT", "sys/init", {}, token=None)
        assert r.status == 200, r.describe()
        cls.remote.token = r.json["root_token"]
        cls.issuer = ah.Issuer()
        ah.setup_org(cls.remote, org=ORG, mount="kubernetes", issuer=cls.issuer)
        ah.ok(cls.remote.request("PUT", "sys/policy/kms-plugin", {"policy": POLICY},
                                 namespace=ORG))
        ah.make_role(cls.remote, "kms-plugin", ["kms-plugin"], org=ORG, mount="kubernetes",
                     sa="kms-plugin", ns=PROJECT)
        cls.jwt = os.path.join(cls.dir, "sa.token")
        with open(cls.jwt, "w") as f:
            f.write(cls.issuer.mint(ns=PROJECT, sa="kms-plugin"))

    @classmethod
    def tearDownClass(cls):
        rc = cls.remote.stop()
        cls.remote.cleanup()
        shutil.rmtree(cls.dir, ignore_errors=True)
        assert rc == 0, rc

    def setUp(self):
        self.sidecars = []

    def tearDown(self):
        for s in self.sidecars:
            rc = s.stop()
            if rc != 0:
                self.fail("sidecar exit %r\n%s" % (rc, s.log_text()))
            self.assertFalse(os.path.exists(s.sock), "socket left behind")

    def ports_of(self, name):
        """The client ports of the remote's encrypt and decrypt requests on key `name`."""
        ports = []
        with open(self.audit, "rb") as f:
            for raw in f:
                line = json.loads(raw)
                req = line.get("request", {})
                if (line.get("type") == "request" and
                        req.get("path", "").rsplit("/", 1)[-1] == "%s-%s-%s" % (ORG, PROJECT, name)
                        and req.get("path", "").split("/")[1] in ("encrypt", "decrypt")):
                    ports.append(req["remote_port"])
        return ports

    def kmskey(self, name):
        r = self.remote.request("POST", "kms/keys/%s/%s" % (PROJECT, name), {"purpose": "etcd"},
                                namespace=ORG)
        self.assertEqual(r.status, 200, r.describe())
        return r.data

    def sidecar(self, name, *extra, role="kms-plugin"):
        args = ["-addr=" + self.remote.addr, "-key=%s/%s" % (PROJECT, name), "-namespace=" + ORG,
                "-auth-path=kubernetes", "-role=" + role, "-token-file=" + self.jwt,
                "-status-interval=1s", "-timeout=3s"] + list(extra)
        s = Sidecar(self.dir, args)
        self.sidecars.append(s)
        return s


class TestSidecar(SidecarCase):

    def test_round_trip_and_key_id(self):
        self.kmskey("etcd-a")
        p = self.sidecar("etcd-a").plugin
        st = p.status()
        self.assertEqual((st.version, st.healthz), ("v2", "ok"))
        self.assertEqual(st.key_id, "org1/transit/keys/org1-prod-etcd-a:v1")
        e = p.encrypt(SEED, uid="u1")
        self.assertEqual(e.key_id, st.key_id)
        self.assertTrue(e.ciphertext.startswith(b"vault:v1:"))
        self.assertEqual(p.decrypt(e.ciphertext, e.key_id).plaintext, SEED)
        # the remote's own decrypt reads what the sidecar wrote
        r = self.remote.request("POST", "transit/decrypt/org1-prod-etcd-a",
                                {"ciphertext": e.ciphertext.decode()}, namespace=ORG)
        self.assertEqual(r.data["plaintext"], b64(SEED))

    def test_rotation_and_floor(self):
        self.kmskey("etcd-r")
        p = self.sidecar("etcd-r").plugin
        old = p.encrypt(SEED)
        r = self.remote.request("POST", "kms/keys/%s/etcd-r/rotate" % PROJECT, {}, namespace=ORG)
        self.assertEqual(r.status, 200, r.describe())
        new = p.encrypt(SEED)
        self.assertEqual(new.key_id, "org1/transit/keys/org1-prod-etcd-r:v2")
        rotated = time.monotonic()
        while True:  # every Status begun more than one interval later reports v2
            t = time.monotonic()
            if p.status().key_id == new.key_id:
                break
            self.assertLess(t, rotated + 1.0, "Status still reports the old key_id")
            time.sleep(0.05)
        self.assertEqual(p.decrypt(old.ciphertext, old.key_id).plaintext, SEED)
        r = self.remote.request("POST", "kms/keys/%s/etcd-r/min-decryption-version" % PROJECT,
                                {"version": 2}, namespace=ORG)
        self.assertEqual(r.status, 200, r.describe())
        code, details = rpc_error(p.decrypt, old.ciphertext, old.key_id)
        self.assertEqual(code, grpc.StatusCode.FAILED_PRECONDITION, details)
        self.assertEqual(p.decrypt(new.ciphertext, new.key_id).plaintext, SEED)

    def test_sighup_is_logged_and_serving_goes_on(self):
        self.kmskey("etcd-hup")
        s = self.sidecar("etcd-hup")
        os.kill(s.proc.pid, signal.SIGHUP)
        wait_for(lambda: "SIGHUP: nothing to reload, still serving" in s.log_text(), 10,
                 "the sidecar to log the SIGHUP")
        self.assertIsNone(s.proc.poll(), s.log_text())
        e = s.plugin.encrypt(SEED, uid="after-hup")
        self.assertEqual(s.plugin.decrypt(e.ciphertext, e.key_id).plaintext, SEED)
        # tearDown: SIGTERM still drains, exit 0, the socket removed

    def test_mounts_given_with_slashes(self):
        # Vault lists its mounts as "transit/" and "kubernetes/": given so, every request went
        # to /v1/transit//encrypt/... (no path of kmsd's: 404) or /v1/auth/kubernetes//login,
        # and key_id said "transit//keys", another key_id than the in-process plugin's
        self.kmskey("etcd-m")
        p = self.sidecar("etcd-m", "-mount=/transit/", "-auth-path=kubernetes/").plugin
        e = p.encrypt(SEED)
        self.assertEqual(e.key_id, "org1/transit/keys/org1-prod-etcd-m:v1")
        self.assertEqual(p.decrypt(e.ciphertext, e.key_id).plaintext, SEED)
        st = p.status()
        self.assertEqual((st.healthz, st.key_id), ("ok", e.key_id))

    def test_refusals(self):
        self.kmskey("etcd-x")
        p = self.sidecar("etcd-x").plugin
        e = p.encrypt(SEED)
        ct = bytearray(e.ciphertext)
        ct[-6] = ord("A") if ct[-6] != ord("A") else ord("B")
        code, details = rpc_error(p.decrypt, bytes(ct), e.key_id)
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT, details)
        code, _ = rpc_error(p.decrypt, e.ciphertext, "transit/keys/other:v1")
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        code, _ = rpc_error(p.encrypt, b"")
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        code, _ = rpc_error(p.encrypt, b"x" * 600)
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        # a key of another project: the project-bound token is refused by the remote
        r = self.remote.request("POST", "kms/keys/other/etcd", {"purpose": "etcd"}, namespace=ORG)
        self.assertEqual(r.status, 200, r.describe())
        s = Sidecar(self.dir, ["-addr=" + self.remote.addr, "-key=other/etcd",
                               "-namespace=" + ORG, "-auth-path=kubernetes", "-role=kms-plugin",
                               "-token-file=" + self.jwt, "-status-interval=1s"])
        self.sidecars.append(s)
        code, details = rpc_error(s.plugin.encrypt, SEED)
        self.assertEqual(code, grpc.StatusCode.PERMISSION_DENIED, details)
        self.assertNotEqual(s.plugin.status().healthz, "ok")

    def test_concurrent_calls(self):
        self.kmskey("etcd-c")
        p = self.sidecar("etcd-c").plugin
        pb, _ = load_stubs()
        seeds = [os.urandom(32) for _ in range(200)]
        futs = [p.stub.Encrypt.future(pb.EncryptRequest(plaintext=s, uid=str(i)), timeout=120)
                for i, s in enumerate(seeds)]
        cts = [f.result() for f in futs]
        futs = [p.stub.Decrypt.future(pb.DecryptRequest(ciphertext=c.ciphertext, key_id=c.key_id),
                                      timeout=120) for c in cts]
        self.assertEqual([f.result().plaintext for f in futs], seeds)
        # 400 calls on the sidecar's 16 call threads: on at most 16 kept connections (twice that
        # leaves room for ones the remote closed), not one connection per call
        ports = self.ports_of("etcd-c")
        self.assertEqual(len(ports), 400)
        self.assertLessEqual(len(set(ports)), 32, "%d connections" % len(set(ports)))

    def test_calls_reuse_one_connection(self):
        self.kmskey("etcd-k")
        p = self.sidecar("etcd-k").plugin
        for i in range(30):
            e = p.encrypt(SEED)
            self.assertEqual(p.decrypt(e.ciphertext, e.key_id).plaintext, SEED)
        ports = self.ports_of("etcd-k")
        self.assertEqual(len(ports), 60)
        # one call at a time: one connection, and a second one at most when a Status call (every
        # second) overlapped a call
        self.assertLessEqual(len(set(ports)), 2, "%d connections" % len(set(ports)))

    def test_bad_login_is_unauthenticated(self):
        self.kmskey("etcd-l")
        s = self.sidecar("etcd-l", role="no-such-role")
        code, details = rpc_error(s.plugin.encrypt, SEED)
        self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED, details)
        st = s.plugin.status()
        self.assertNotEqual(st.healthz, "ok")


class TestSidecarRemoteOutage(SidecarCase):
    """The remote kmsd stops and comes back on the same address and store."""

    def test_remote_stopped_then_back(self):
        self.kmskey("etcd-o")
        s = self.sidecar("etcd-o")
        p = s.plugin
        e = p.encrypt(SEED)
        self.assertEqual(p.status().healthz, "ok")
        port = self.remote.port
        self.assertEqual(self.remote.stop(), 0)
        try:
            # calls fail fast with UNAVAILABLE
            t0 = time.monotonic()
            code, details = rpc_error(p.decrypt, e.ciphertext, e.key_id)
            self.assertEqual(code, grpc.StatusCode.UNAVAILABLE, details)
            self.assertIn("cannot reach", details)
            self.assertLess(time.monotonic() - t0, 2.0)
            code, _ = rpc_error(p.encrypt, SEED)
            self.assertEqual(code, grpc.StatusCode.UNAVAILABLE)
            st = wait_for(lambda: (lambda s_: s_ if s_.healthz != "ok" else None)(p.status()),
                          5, "Status to turn unhealthy")
            self.assertIn("cannot reach", st.healthz)
            self.assertEqual(st.version, "v2")
        finally:
            # the same store, seal key and port
            self.remote.config["listen_address"] = "127.0.0.1:%d" % port
            self.remote.start()
        wait_for(lambda: p.status().healthz == "ok", 10, "Status to recover")
        self.assertEqual(p.decrypt(e.ciphertext, e.key_id).plaintext, SEED)
        e2 = p.encrypt(SEED)
        self.assertEqual(p.decrypt(e2.ciphertext, e2.key_id).plaintext, SEED)


class TestSidecarTokens(SidecarCase):

    def role(self, name, **ttl):
        ah.make_role(self.remote, name, ["kms-plugin"], org=ORG, mount="kubernetes",
                     sa="kms-plugin", ns=PROJECT, **ttl)

    def logins(self, s):
        return s.log_text().count("logged in to the key service")

    def test_token_expiry_relogin(self):
        self.kmskey("etcd-t")
        self.role("short", token_ttl=2, token_max_ttl=2)
        s = self.sidecar("etcd-t", role="short")
        e = s.plugin.encrypt(SEED)
        self.assertEqual(self.logins(s), 1)
        # past the token's expiry every call still works: the sidecar logged in again
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            self.assertEqual(s.plugin.decrypt(e.ciphertext, e.key_id).plaintext, SEED)
            time.sleep(0.2)
        self.assertGreaterEqual(self.logins(s), 2)

    def test_token_renewed_before_expiry(self):
        self.kmskey("etcd-n")
        self.role("renewing", token_ttl=3, token_max_ttl=3600)
        s = self.sidecar("etcd-n", role="renewing")
        e = s.plugin.encrypt(SEED)
        deadline = time.monotonic() + 7
        while time.monotonic() < deadline:
            self.assertEqual(s.plugin.decrypt(e.ciphertext, e.key_id).plaintext, SEED)
            time.sleep(0.2)
        # one login; the token lived on through renew-self
        self.assertEqual(self.logins(s), 1, s.log_text())
        self.assertNotIn("renewal failed", s.log_text())

    def test_a_refused_fresh_login_is_not_repeated_per_call(self):
        # a key the role's policies do not grant (another project's): every call is refused
        # with 403. Each call logged in again before retrying, and each login left a token in
        # the key service for its whole TTL (1 h by default): a kube-apiserver retrying its
        # reads piled up thousands. A token a login gave less than 10 s ago is not replaced
        r = self.remote.request("POST", "kms/keys/other/etcd-d", {"purpose": "etcd"},
                                namespace=ORG)
        self.assertEqual(r.status, 200, r.describe())
        s = Sidecar(self.dir, ["-addr=" + self.remote.addr, "-key=other/etcd-d",
                               "-namespace=" + ORG, "-auth-path=kubernetes", "-role=kms-plugin",
                               "-token-file=" + self.jwt])
        self.sidecars.append(s)
        for _ in range(5):
            code, details = rpc_error(s.plugin.encrypt, SEED)
            self.assertEqual(code, grpc.StatusCode.PERMISSION_DENIED, details)
        self.assertEqual(self.logins(s), 1, s.log_text())
        self.assertNotIn("refused the token", s.log_text())
        # a token with a num_uses limit that ran out is still replaced at its 403, however new
        self.kmskey("etcd-u")
        self.role("two-uses", token_num_uses=2)
        u = self.sidecar("etcd-u", role="two-uses")
        for _ in range(3):
            e = u.plugin.encrypt(SEED)
        self.assertEqual(u.plugin.decrypt(e.ciphertext, e.key_id).plaintext, SEED)
        self.assertEqual(self.logins(u), 2, u.log_text())

    def test_token_file_with_a_line_break_is_refused(self):
        """A token file whose token has a line break in it: nothing is sent (the rest of the
        file would become request headers); the call is UNAUTHENTICATED."""
        self.kmskey("etcd-x")
        tfile = os.path.join(self.dir, "split.token")
        with open(tfile, "w") as f:
            f.write("hvs.first-half\r\nX-Vault-Namespace: root\n")
        s = Sidecar(self.dir, ["-addr=" + self.remote.addr, "-key=%s/etcd-x" % PROJECT,
                               "-namespace=" + ORG, "-vault-token-file=" + tfile,
                               "-status-interval=1s"])
        self.sidecars.append(s)
        code, details = rpc_error(s.plugin.encrypt, SEED)
        self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED, details)
        self.assertIn("characters a token cannot have", details)
        self.assertEqual(self.ports_of("etcd-x"), [])  # no request reached the key service
        # such a token is not kept: a corrected file is read at the next call
        r = self.remote.request("POST", "auth/token/create",
                                {"policies": ["kms-plugin"], "ttl": "1h"}, namespace=ORG)
        self.assertEqual(r.status, 200, r.describe())
        with open(tfile, "w") as f:
            f.write(r.json["auth"]["client_token"] + "\n")
        e = s.plugin.encrypt(SEED)
        self.assertEqual(s.plugin.decrypt(e.ciphertext, e.key_id).plaintext, SEED)

    def test_token_file_reread_after_403(self):
        self.kmskey("etcd-f")

        def new_token():
            r = self.remote.request("POST", "auth/token/create",
                                    {"policies": ["kms-plugin"], "ttl": "1h"}, namespace=ORG)
            self.assertEqual(r.status, 200, r.describe())
            return r.json["auth"]["client_token"]

        tfile = os.path.join(self.dir, "vault.token")
        t1 = new_token()
        with open(tfile, "w") as f:
            f.write(t1 + "\n")
        s = Sidecar(self.dir, ["-addr=" + self.remote.addr, "-key=%s/etcd-f" % PROJECT,
                               "-namespace=" + ORG, "-vault-token-file=" + tfile,
                               "-status-interval=1s"])
        self.sidecars.append(s)
        e = s.plugin.encrypt(SEED)
        r = self.remote.request("POST", "auth/token/revoke", {"token": t1}, namespace=ORG)
        self.assertIn(r.status, (200, 204), r.describe())
        with open(tfile, "w") as f:
            f.write(new_token() + "\n")
        # the old token answers 403: the file is read again and the call retried
        self.assertEqual(s.plugin.decrypt(e.ciphertext, e.key_id).plaintext, SEED)
        self.assertIn("refused the token", s.log_text())
        self.assertNotIn(t1, s.log_text())


class TestSidecarTLS(unittest.TestCase):

    def test_https_with_ca_cert(self):
        d = tempfile.mkdtemp(prefix="kmsd-sidecar-tls-")
        ca_key, ca = test_tls.make_ca(d, "ca")
        key, crt = test_tls.make_leaf(d, "server", ca_key, ca, 7)
        audit = os.path.join(d, "audit.log")
        srv = KmsdServer(extra_args=["-tls-cert-file=" + crt, "-tls-key-file=" + key,
                                     "-audit-file=" + audit, "-audit-fsync=never"])
        sidecars = []
        try:
            srv.start()
            import http.client
            import ssl
            c = http.client.HTTPSConnection("127.0.0.1", srv.port, timeout=10,
                                            context=ssl.create_default_context(cafile=ca))
            c.request("POST", "/v1/transit/keys/tls-k", body="{}",
                      headers={"X-Vault-Token": srv.root_token})
            resp = c.getresponse()
            resp.read()
            c.close()
            self.assertEqual(resp.status, 200)
            tfile = os.path.join(d, "token")
            with open(tfile, "w") as f:
                f.write(srv.root_token)
            base = ["-addr=https://127.0.0.1:%d" % srv.port, "-key=tls-k",
                    "-vault-token-file=" + tfile, "-status-interval=1s"]
            good = Sidecar(d, base + ["-ca-cert=" + ca])
            sidecars.append(good)
            e = good.plugin.encrypt(SEED)
            self.assertEqual(e.key_id, "transit/keys/tls-k:v1")
            self.assertEqual(good.plugin.decrypt(e.ciphertext, e.key_id).plaintext, SEED)
            for _ in range(10):
                e = good.plugin.encrypt(SEED)
                self.assertEqual(good.plugin.decrypt(e.ciphertext, e.key_id).plaintext, SEED)
            # the calls share a kept TLS connection (a second one at most, if a Status call
            # overlapped one): not a handshake per call
            with open(audit, "rb") as f:
                ports = {json.loads(l)["request"]["remote_port"] for l in f
                         if json.loads(l)["request"].get("path", "").split("/")[1:2]
                         in (["encrypt"], ["decrypt"])}
            self.assertGreaterEqual(len(ports), 1)
            self.assertLessEqual(len(ports), 2, "%d connections" % len(ports))
            # without the CA the server's certificate is not trusted
            bad = Sidecar(d, base)
            sidecars.append(bad)
            code, details = rpc_error(bad.plugin.encrypt, SEED)
            self.assertEqual(code, grpc.StatusCode.UNAVAILABLE, details)
            self.assertNotEqual(bad.plugin.status().healthz, "ok")
        finally:
            for s in sidecars:
                self.assertEqual(s.stop(), 0)
            srv.stop()
            srv.cleanup()
            shutil.rmtree(d, ignore_errors=True)


class TestSidecarFlags(unittest.TestCase):

    def test_a_bad_address_or_ca_file_stops_it_at_start(self):
        # the address was first read at the first call: a sidecar given a typo said it was
        # listening and then answered every call INTERNAL (and a CA file that is not there,
        # UNAVAILABLE), so a flag error showed only as an unhealthy plugin
        d = tempfile.mkdtemp(prefix="kmsd-sidecar-flags-")
        self.addCleanup(shutil.rmtree, d, True)
        token = os.path.join(d, "token")
        with open(token, "w") as f:
            f.write("s.token\n")
        sock = os.path.join(d, "kms.sock")
        cases = [(["-addr=ftp://kmsd.example:8200"],
                  "-addr: ftp://kmsd.example:8200: unsupported scheme"),
                 (["-addr=https://"], "-addr: https://: no host or port"),
                 # it would be in every log line and error message
                 (["-addr=https://admin:s3cret@kmsd.example:8200"],
                  "-addr: an address with user information (user:password@) is not taken"),
                 (["-addr=https://kmsd.example:8200", "-ca-cert=" + os.path.join(d, "ca.pem")],
                  "-ca-cert: cannot read %s: No such file or directory"
                  % os.path.join(d, "ca.pem")),
                 (["-addr=https://kmsd.example:8200", "-mount=/"], "-mount: no mount path"),
                 (["-addr=https://kmsd.example:8200", "-auth-path="],
                  "-auth-path: no mount path"),
                 # the rank of the lines always written: taken as a level, it hid every
                 # warning and error
                 (["-addr=https://kmsd.example:8200", "-log-level=notice"],
                  "-log-level: \"notice\" is not one of debug, info, warn, error")]
        for args, want in cases:
            with self.subTest(args=args):
                proc = subprocess.Popen([KMSD_BIN, "kms-plugin", "-listen=unix://" + sock,
                                         "-key=etcd-k", "-vault-token-file=" + token] + args,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, start_new_session=True)
                try:
                    _, err = proc.communicate(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.communicate()
                    self.fail("still running 10 s after start: the flag was not checked")
                self.assertEqual(proc.returncode, 2, err)
                self.assertIn(want, err.decode())
                self.assertNotIn("s3cret", err.decode())
                self.assertFalse(os.path.exists(sock))


class FakeKeyService:
    """A Transit server on loopback that answers what a test tells it: encrypt and decrypt
    bodies (raw text, so an answer may hold what no kmsd sends), after a delay. A client that
    closes its connection while an answer is delayed is noted, with how long it waited."""

    def __init__(self):
        self.delay = 0.0
        self.answers = {}  # "encrypt" / "decrypt" -> the JSON text answered
        self.raw = {}  # "encrypt" / "decrypt" -> (HTTP status, body bytes), answered instead
        self.gave_up = []  # seconds a client waited before it closed a delayed request
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # kept connections, as the sidecar wants them

            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                op = self.path.split("/")[3] if self.path.count("/") >= 3 else ""
                t0 = time.monotonic()
                if fake.delay > 0:
                    # wait, unless the client goes away first
                    r, _, _ = select.select([self.connection], [], [], fake.delay)
                    if r and self.connection.recv(1, socket.MSG_PEEK) == b"":
                        fake.gave_up.append(time.monotonic() - t0)
                        self.close_connection = True
                        return
                body = fake.answers.get(op, '{"errors":["unknown operation"]}').encode()
                status = 200 if op in fake.answers else 400
                if op in fake.raw:
                    status, body = fake.raw[op]
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.addr = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class TestSidecarAgainstAFakeKeyService(unittest.TestCase):
    """What a kmsd never answers, from a fake Transit server: slow answers, and strings with a
    NUL byte in them."""

    def setUp(self):
        load_stubs()
        self.dir = tempfile.mkdtemp(prefix="kmsd-sidecar-fake-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.fake = FakeKeyService()
        self.addCleanup(self.fake.close)
        self.fake.answers["encrypt"] = json.dumps({"data": {"ciphertext": "vault:v1:QUJD"}})
        self.fake.answers["decrypt"] = json.dumps({"data": {"plaintext": b64(SEED)}})
        token = os.path.join(self.dir, "token")
        with open(token, "w") as f:
            f.write("s.fake-token\n")
        self.sidecar = Sidecar(self.dir, ["-addr=" + self.fake.addr, "-key=etcd-f",
                                          "-vault-token-file=" + token, "-timeout=10s"])
        self.addCleanup(lambda: self.assertEqual(self.sidecar.stop(), 0))
        self.p = self.sidecar.plugin

    def test_the_deadline_bounds_the_wait_for_the_key_service(self):
        # the apiserver's grpc-timeout, not -timeout (10 s), bounds how long a call waits for
        # the key service: it is answered DEADLINE_EXCEEDED at its deadline, and the sidecar
        # drops the request then (its call thread is free again)
        pb, _ = load_stubs()
        self.assertEqual(self.p.encrypt(SEED, timeout=5).key_id, "transit/keys/etcd-f:v1")
        self.fake.delay = 8
        h2 = RawH2(self.sidecar.sock)
        try:
            h2.handshake()
            t0 = time.monotonic()
            h2.call(1, b"Encrypt", pb.EncryptRequest(plaintext=SEED, uid="slow")
                    .SerializeToString(), [(b"grpc-timeout", b"600m")])
            a = h2.answer(1)
            waited = time.monotonic() - t0
        finally:
            h2.close()
        self.assertEqual(a["headers"]["grpc-status"], "4", a)
        self.assertEqual(a["headers"]["grpc-message"],
                         "deadline exceeded: no answer within the call's grpc-timeout")
        self.assertGreaterEqual(waited, 0.5)
        self.assertLess(waited, 4)
        wait_for(lambda: self.fake.gave_up, 5, "the sidecar to drop its request")
        self.assertLess(self.fake.gave_up[0], 4, "the request waited for -timeout")
        # the gRPC client's own deadline: the same
        code, _ = rpc_error(self.p.decrypt, b"vault:v1:QUJD", "transit/keys/etcd-f:v1",
                            timeout=0.5)
        self.assertEqual(code, grpc.StatusCode.DEADLINE_EXCEEDED)
        # in time: served (on a new connection: the dropped ones are closed)
        self.fake.delay = 0.3
        self.assertEqual(self.p.decrypt(b"vault:v1:QUJD", "transit/keys/etcd-f:v1",
                                        timeout=5).plaintext, SEED)

    def test_an_oversized_answer_is_refused_not_kept(self):
        # a real answer is about 1.5 KiB; a broken key service or a proxy's page streaming more
        # was kept up to kmsctl's 64 MiB a call, past the shipped sidecar's memory limit
        # (16 such calls at once: 1.38 GB). Now a call keeps at most 64 KiB and fails over it.
        self.fake.raw["decrypt"] = (200, b'{"data":{"plaintext":"' + b"A" * (1 << 20) + b'"}}')
        code, msg = rpc_error(self.p.decrypt, b"vault:v1:QUJD", "transit/keys/etcd-f:v1",
                              timeout=10)
        self.assertEqual(code, grpc.StatusCode.UNAVAILABLE, msg)
        self.assertIn("response larger than 65536 bytes", msg)
        # an answer within the cap is served as before
        del self.fake.raw["decrypt"]
        self.assertEqual(self.p.decrypt(b"vault:v1:QUJD", "transit/keys/etcd-f:v1",
                                        timeout=5).plaintext, SEED)

    def test_durations_below_a_second(self):
        # -timeout and -status-interval took whole seconds: -timeout=3900ms waited 3 s, and
        # -timeout=500ms was refused as "invalid duration", though both are durations
        args = ["-addr=" + self.fake.addr, "-key=etcd-f",
                "-vault-token-file=" + os.path.join(self.dir, "token")]
        self.fake.delay = 3.3
        s = Sidecar(self.dir, args + ["-timeout=3900ms"])
        self.addCleanup(lambda: self.assertEqual(s.stop(), 0))
        self.assertEqual(s.plugin.encrypt(SEED, timeout=10).key_id, "transit/keys/etcd-f:v1")
        self.fake.delay = 0
        s2 = Sidecar(self.dir, args + ["-timeout=500ms", "-status-interval=1500ms"])
        self.addCleanup(lambda: self.assertEqual(s2.stop(), 0))
        self.assertEqual(s2.plugin.encrypt(SEED, timeout=5).key_id, "transit/keys/etcd-f:v1")

    def test_an_error_page_in_another_charset(self):
        # the body of an error answer that is not JSON (a proxy's page) is quoted in Status
        # healthz, a protobuf string: not UTF-8 (Latin-1 here), it made the whole StatusResponse
        # unreadable, to kube-apiserver's client (Go's protobuf) as to this one
        self.fake.raw["encrypt"] = (502, b"<p>Passerelle d\xe9faillante</p>\r\n")
        st = self.p.status(timeout=5)
        self.assertEqual(st.version, "v2")
        self.assertEqual(st.healthz,
                         "encrypt probe failed: HTTP 502: <p>Passerelle d?faillante</p>?")
        code, details = rpc_error(self.p.encrypt, SEED)
        self.assertEqual(code, grpc.StatusCode.UNAVAILABLE, details)

    def test_a_nul_byte_in_an_answer_is_refused(self):
        # jansson refuses \u0000 in a JSON string: a ciphertext or plaintext with a NUL byte is
        # never passed on cut short
        self.fake.answers["encrypt"] = json.dumps(
            {"data": {"ciphertext": "vault:v1:QUJD\u0000RUZH"}})
        self.fake.answers["decrypt"] = json.dumps({"data": {"plaintext": "QUJD\u0000RUZH"}})
        for what, fn in (("encrypt", lambda: self.p.encrypt(SEED)),
                         ("decrypt", lambda: self.p.decrypt(b"vault:v1:QUJD",
                                                            "transit/keys/etcd-f:v1"))):
            with self.subTest(what):
                code, details = rpc_error(fn)
                self.assertEqual(code, grpc.StatusCode.UNAVAILABLE, details)
                self.assertIn("answered malformed JSON: a string with a NUL byte (\\u0000)",
                              details)
                self.assertNotIn("QUJD", details)  # nothing of the answer is quoted

    def test_text_that_is_not_utf8_is_refused_as_in_process(self):
        # jansson's json_pack refuses a string that is not UTF-8: a Decrypt whose ciphertext
        # was not (as a damaged etcd value can be) answered INTERNAL "out of memory", where the
        # in-process plugin answers INVALID_ARGUMENT; a JWT file that is not UTF-8 likewise
        # failed every call with INTERNAL "out of memory" instead of a refused login
        code, details = rpc_error(self.p.decrypt, b"vault:v1:\xff\xfeQUJD",
                                  "transit/keys/etcd-f:v1")
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT, details)
        self.assertEqual(details, "invalid ciphertext: could not decode base64")
        jwt = os.path.join(self.dir, "jwt")
        with open(jwt, "wb") as f:
            f.write(b"eyJhbGciOiJSUzI1NiJ9.\xff\xfe.sig\n")
        s = Sidecar(self.dir, ["-addr=" + self.fake.addr, "-key=etcd-f", "-role=kms-plugin",
                               "-token-file=" + jwt])
        self.addCleanup(lambda: self.assertEqual(s.stop(), 0))
        code, details = rpc_error(s.plugin.encrypt, SEED)
        self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED, details)
        self.assertIn("holds bytes a JWT cannot have", details)

    def test_a_missing_key_is_not_found(self):
        # Transit answers a decrypt with a key that does not exist 400 "encryption key not
        # found" (kmsd, Vault); the sidecar passed it on as INVALID_ARGUMENT, as if the
        # apiserver's request were at fault, where the in-process plugin answers NOT_FOUND
        self.fake.raw["decrypt"] = (400, b'{"errors":["encryption key not found"]}')
        code, details = rpc_error(self.p.decrypt, b"vault:v1:QUJD", "transit/keys/etcd-f:v1")
        self.assertEqual(code, grpc.StatusCode.NOT_FOUND, details)
        self.assertEqual(details, "encryption key not found")
        # a request Transit refuses stays INVALID_ARGUMENT
        self.fake.raw["decrypt"] = (400, b'{"errors":["invalid ciphertext: could not decode '
                                         b'base64"]}')
        code, details = rpc_error(self.p.decrypt, b"vault:v1:QUJD", "transit/keys/etcd-f:v1")
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT, details)

    def test_calls_do_not_queue_logins_past_their_deadline(self):
        # a key service that takes connections and never answers, a login per call thread:
        # each call thread waited for the token lock and then ran a login of its own (up to
        # -timeout each), long after its caller had gone, one after the other: with 8 calls
        # of the apiserver's kind (a deadline each) the sidecar took 8 x -timeout to end after
        # SIGTERM (79 s with 16 calls and the default 5 s). Now a call waits for another's
        # login only until its deadline, and starts none after it
        jwt = os.path.join(self.dir, "jwt")
        with open(jwt, "w") as f:
            f.write("eyJhbGciOiJSUzI1NiJ9.e30.sig\n")
        self.fake.delay = 60
        s = Sidecar(self.dir, ["-addr=" + self.fake.addr, "-key=etcd-f", "-role=kms-plugin",
                               "-token-file=" + jwt, "-timeout=3s"])
        pb, _ = load_stubs()
        futs = [s.plugin.stub.Encrypt.future(pb.EncryptRequest(plaintext=SEED, uid="u%d" % i),
                                             timeout=0.5) for i in range(8)]
        for f in futs:
            try:
                f.result()
            except grpc.RpcError as e:
                self.assertEqual(e.code(), grpc.StatusCode.DEADLINE_EXCEEDED, e.details())
        t0 = time.monotonic()
        rc = s.stop()
        took = time.monotonic() - t0
        with open(s.log_path, "rb") as f:
            log = f.read().decode("utf-8", "replace")
        self.assertEqual(rc, 0, log)
        self.assertLess(took, 12, "the sidecar took %.1f s to end after SIGTERM" % took)


if __name__ == "__main__":
    unittest.main()
