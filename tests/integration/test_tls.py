"""HTTPS listener: hvac with a CA file, TLS versions, plain HTTP on the TLS port, SIGHUP
certificate reload without dropping connections, client certificates; and the Prometheus
metrics endpoint."""

import base64
import http.client
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import unittest

import hvac

from kmsd_harness import KMSD_BIN, KmsdServer


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def make_ca(d, name):
    key, crt = os.path.join(d, name + ".key"), os.path.join(d, name + ".crt")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=" + name)
    return key, crt


def make_leaf(d, name, ca_key, ca_crt, serial, days=2):
    key, csr, crt = (os.path.join(d, name + ext) for ext in (".key", ".csr", ".crt"))
    ext = os.path.join(d, name + ".ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", key, "-out", csr, "-subj", "/CN=" + name)
    openssl("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-set_serial",
            str(serial), "-days", str(days), "-out", crt, "-extfile", ext)
    os.chmod(key, 0o600)
    return key, crt


def https(port, ca, path="/v1/sys/health", cert=None, token=None, conn=None):
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(*cert)
    c = conn or http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    headers = {"X-Vault-Token": token} if token else {}
    c.request("GET", path, headers=headers)
    r = c.getresponse()
    return c, r.status, r.getheader("Content-Type"), r.read()


class TLSTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="kmsd-tls-")
        cls.ca_key, cls.ca = make_ca(cls.dir, "ca")
        cls.key, cls.crt = make_leaf(cls.dir, "server", cls.ca_key, cls.ca, 1001)
        cls.server = KmsdServer(mode="config", config={
            "tls_cert_file": cls.crt, "tls_key_file": cls.key})
        cls.server.start()
        ctx = ssl.create_default_context(cafile=cls.ca)
        c = http.client.HTTPSConnection("127.0.0.1", cls.server.port, context=ctx, timeout=10)
        c.request("PUT", "/v1/sys/init", body="{}")
        r = c.getresponse()
        import json
        cls.token = json.loads(r.read())["root_token"]
        c.request("POST", "/v1/sys/mounts/transit", body='{"type":"transit"}',
                  headers={"X-Vault-Token": cls.token})
        assert c.getresponse().status == 204

    @classmethod
    def tearDownClass(cls):
        rc = cls.server.stop()
        cls.server.cleanup()
        assert rc == 0, rc

    def url(self):
        return "https://127.0.0.1:%d" % self.server.port

    def test_hvac_with_ca_file(self):
        c = hvac.Client(url=self.url(), token=self.token, verify=self.ca)
        self.assertTrue(c.is_authenticated())
        c.secrets.transit.create_key("tls-k")
        ct = c.secrets.transit.encrypt_data("tls-k", base64.b64encode(b"hunter2").decode())
        pt = c.secrets.transit.decrypt_data("tls-k", ct["data"]["ciphertext"])
        self.assertEqual(base64.b64decode(pt["data"]["plaintext"]), b"hunter2")

    def test_untrusted_server_refused_by_client(self):
        c = hvac.Client(url=self.url(), token=self.token, verify=True)
        with self.assertRaises(Exception):
            c.sys.read_health_status(method="GET")

    def test_plain_http_gets_clear_answer(self):
        s = socket.create_connection(("127.0.0.1", self.server.port), timeout=5)
        s.sendall(b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        self.assertTrue(data.startswith(b"HTTP/1.0 400"), data)
        self.assertIn(b"Client sent an HTTP request to an HTTPS server.", data)

    def test_old_tls_versions_refused(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.ca)
        # a client that really offers TLS 1.0/1.1 (security level 0, so this OpenSSL does not
        # refuse on our side); if it cannot, the test fails rather than skip
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        with self.assertRaises((ssl.SSLError, ConnectionResetError)) as cm:
            with socket.create_connection(("127.0.0.1", self.server.port), timeout=5) as s:
                with ctx.wrap_socket(s, server_hostname="127.0.0.1"):
                    pass
        if isinstance(cm.exception, ssl.SSLError):
            # the server's protocol_version alert, not a client-side refusal to offer
            self.assertIn("PROTOCOL_VERSION", str(cm.exception).upper())
        ctx13 = ssl.create_default_context(cafile=self.ca)
        ctx13.minimum_version = ssl.TLSVersion.TLSv1_2
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=5) as s:
            with ctx13.wrap_socket(s, server_hostname="127.0.0.1") as t:
                self.assertIn(t.version(), ("TLSv1.2", "TLSv1.3"))

    def test_sighup_reloads_certificate_keeping_connections(self):
        conn, status, _, _ = https(self.server.port, self.ca)
        self.assertEqual(status, 200)
        # issue a new certificate (new serial) over the same files, then SIGHUP
        key2, crt2 = make_leaf(self.dir, "server2", self.ca_key, self.ca, 2002)
        os.replace(key2, self.key)
        os.replace(crt2, self.crt)
        reloads = self.server.log_text().count("TLS certificate reloaded")
        self.server.proc.send_signal(signal.SIGHUP)
        self.server.wait_log("TLS certificate reloaded", reloads + 1)
        # the old keep-alive connection still works
        _, status, _, _ = https(self.server.port, self.ca, conn=conn)
        self.assertEqual(status, 200)
        conn.close()
        # a new connection sees the new certificate
        ctx = ssl.create_default_context(cafile=self.ca)
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=5) as s:
            with ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
                der = t.getpeercert(binary_form=True)
        out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-serial"],
                             input=der, capture_output=True, check=True).stdout
        self.assertIn(b"07D2", out.upper())  # 2002

    def test_broken_certificate_on_reload_keeps_old(self):
        with open(self.crt, "rb") as f:
            good = f.read()
        with open(self.crt, "w") as f:
            f.write("not a certificate\n")
        try:
            failures = self.server.log_text().count("TLS reload failed")
            self.server.proc.send_signal(signal.SIGHUP)
            self.server.wait_log("TLS reload failed", failures + 1)
            _, status, _, _ = https(self.server.port, self.ca)
            self.assertEqual(status, 200)
        finally:
            with open(self.crt, "wb") as f:
                f.write(good)

    def test_expired_certificate_on_reload_keeps_old(self):
        """A SIGHUP with an expired certificate (and its matching key) over the files swapped
        it in and logged "TLS certificate reloaded": every client that verifies failed."""
        with open(self.crt, "rb") as f:
            good_crt = f.read()
        with open(self.key, "rb") as f:
            good_key = f.read()
        key2, crt2 = make_leaf(self.dir, "expired", self.ca_key, self.ca, 3003, days=-1)
        os.replace(key2, self.key)
        os.replace(crt2, self.crt)
        try:
            failures = self.server.log_text().count("TLS reload failed")
            self.server.proc.send_signal(signal.SIGHUP)
            self.server.wait_log("TLS reload failed", failures + 1)
            self.assertIn("TLS certificate %s has expired on " % self.crt,
                          self.server.log_text())
            _, status, _, _ = https(self.server.port, self.ca)  # verifies: the old one
            self.assertEqual(status, 200)
        finally:
            with open(self.key, "wb") as f:
                f.write(good_key)
            with open(self.crt, "wb") as f:
                f.write(good_crt)

    def test_fifo_certificate_on_reload_keeps_old_and_the_loop(self):
        """A FIFO at the certificate's path blocked the SIGHUP reload in open(2) on the main
        loop until a writer came: no reload, no SIGTERM handled after it."""
        saved = self.crt + ".saved"
        os.replace(self.crt, saved)
        os.mkfifo(self.crt, 0o600)
        try:
            failures = self.server.log_text().count("TLS reload failed")
            self.server.proc.send_signal(signal.SIGHUP)
            self.server.wait_log("TLS reload failed", failures + 1)
            self.assertIn("TLS certificate %s is not a regular file" % self.crt,
                          self.server.log_text())
            _, status, _, _ = https(self.server.port, self.ca)
            self.assertEqual(status, 200)
        finally:
            try:  # a reader blocked on the FIFO (the bug) gets its writer, then EOF
                os.close(os.open(self.crt, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
            os.replace(saved, self.crt)

    def test_no_session_state_kept_per_client(self):
        # each handshake left a session in OpenSSL's server cache (TLS 1.3 sent a stateful
        # ticket for it), about 1 KiB each up to 20,480 of them, and none was ever resumed:
        # any client could grow the server by ~20 MiB with handshakes alone
        for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
            ctx = ssl.create_default_context(cafile=self.ca)
            ctx.maximum_version = version
            with ctx.wrap_socket(socket.create_connection(("127.0.0.1", self.server.port)),
                                 server_hostname="127.0.0.1") as t:
                t.sendall(b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n\r\n")
                self.assertIn(b"200 OK", t.recv(4096))
                self.assertFalse(t.session.has_ticket, version)
                self.assertEqual(t.session.id, b"", version)

        def rss():
            with open("/proc/%d/status" % self.server.proc.pid) as f:
                return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))

        ctx = ssl.create_default_context(cafile=self.ca)

        def handshakes(n):
            for _ in range(n):
                with ctx.wrap_socket(socket.create_connection(("127.0.0.1", self.server.port)),
                                     server_hostname="127.0.0.1"):
                    pass  # the handshake alone cached a session

        handshakes(200)  # warm the allocator
        before = rss()
        handshakes(3000)
        grown = rss() - before
        # the RSS bound in the normal build only: ASan's quarantine keeps freed memory (the
        # ticket and session-id checks above hold in both)
        if os.environ.get("KMS_SANITIZED") != "1":
            self.assertLess(grown, 1024, "RSS grew %d KiB over 3000 TLS connections" % grown)

    def test_server_ends_its_connections_with_close_notify(self):
        """A connection kmsd closes (Connection: close here, an idle timeout or an error alike)
        ends with TLS close_notify, as Go's server does: a client reading to the end sees a
        clean end of stream, not OpenSSL's 'unexpected eof' (ssl.SSLEOFError in Python)."""
        ctx = ssl.create_default_context(cafile=self.ca)
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", self.server.port),
                                                      timeout=10),
                             server_hostname="127.0.0.1") as t:
            t.sendall(b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = t.recv(65536)  # raises ssl.SSLEOFError without close_notify
                if not chunk:
                    break
                data += chunk
            self.assertTrue(data.startswith(b"HTTP/1.1 200 OK"), data)

    def test_prometheus_metrics(self):
        _, status, ctype, body = https(self.server.port, self.ca,
                                       "/v1/sys/metrics?format=prometheus", token=self.token)
        self.assertEqual(status, 200)
        self.assertTrue(ctype.startswith("text/plain"), ctype)
        text = body.decode()
        self.assertIn("# TYPE kmsd_requests_total counter", text)
        self.assertIn('kmsd_requests_total{route="system:health",code="200"}', text)
        self.assertIn("kmsd_request_duration_seconds_bucket", text)
        self.assertIn("kmsd_transit_keys", text)
        _, status, _, _ = https(self.server.port, self.ca, "/v1/sys/metrics?format=prometheus")
        self.assertEqual(status, 403)


class HandshakeTimeoutTest(unittest.TestCase):
    """A TLS handshake gets read_timeout, as a request does (it had idle_timeout, 120 s: a
    slowloris four times cheaper over TLS); once done, the connection idles for idle_timeout."""

    HELLO_START = b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03"  # a ClientHello's start

    def server(self, serial, read_timeout):
        """A started TLS kmsd with this read_timeout (idle_timeout 120), and its CA file."""
        d = tempfile.mkdtemp(prefix="kmsd-tls-hs-")
        self.addCleanup(shutil.rmtree, d, True)
        ca_key, ca = make_ca(d, "ca")
        key, crt = make_leaf(d, "server", ca_key, ca, serial)
        srv = KmsdServer(mode="config", config={"tls_cert_file": crt, "tls_key_file": key,
                                                "read_timeout": read_timeout,
                                                "idle_timeout": 120})
        srv.start()
        return srv, ca

    def test_stalled_handshake_closed_at_read_timeout(self):
        srv, ca = self.server(1201, 1)
        try:
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
            try:
                # the start of a ClientHello, and then nothing
                s.sendall(self.HELLO_START)
                try:
                    got = s.recv(4096)  # the server's close (or an alert): not a timeout
                except ConnectionResetError:
                    got = b""
                self.assertNotIn(b"HTTP/", got)
            except socket.timeout:
                self.fail("a stalled TLS handshake was still open after 20 s (read_timeout 1)")
            finally:
                s.close()
            # a finished handshake is idle, not reading: it outlives read_timeout
            ctx = ssl.create_default_context(cafile=ca)
            c = http.client.HTTPSConnection("127.0.0.1", srv.port, context=ctx, timeout=10)
            c.connect()
            time.sleep(2.5)  # lets read_timeout pass; nothing else to wait for
            _, status, _, _ = https(srv.port, ca, conn=c)
            self.assertEqual(status, 501)  # answered (the server is not initialized)
            c.close()
        finally:
            self.assertEqual(srv.stop(), 0)
            srv.cleanup()

    def test_first_byte_and_handshake_share_read_timeout(self):
        # the wait for the first byte and the handshake after it had a read_timeout each: a
        # client that sent its first byte late held the connection for nearly twice as long
        srv, _ = self.server(1202, 2)
        try:
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
            t0 = time.monotonic()
            try:
                time.sleep(1.5)  # the client's own slowness, not a wait for the server
                s.sendall(self.HELLO_START)
                try:
                    s.recv(4096)  # returns at the server's close
                except ConnectionResetError:
                    pass
                took = time.monotonic() - t0
            finally:
                s.close()
            # closed at read_timeout (2 s) from the accept; a fresh one after the first byte
            # closed it at 3.5 s
            self.assertLess(took, 2.9, "closed %.2f s after the connect" % took)
            self.assertGreaterEqual(took, 1.5)
        finally:
            self.assertEqual(srv.stop(), 0)
            srv.cleanup()


class ClientCertTest(unittest.TestCase):
    def test_client_certificate_required(self):
        d = tempfile.mkdtemp(prefix="kmsd-mtls-")
        ca_key, ca = make_ca(d, "ca")
        key, crt = make_leaf(d, "server", ca_key, ca, 1)
        ckey, ccrt = make_leaf(d, "client", ca_key, ca, 2)
        srv = KmsdServer(mode="config", config={
            "tls_cert_file": crt, "tls_key_file": key, "tls_client_ca_file": ca,
            "tls_require_client_cert": True})
        srv.start()
        try:
            _, status, _, _ = https(srv.port, ca, cert=(ccrt, ckey))
            self.assertEqual(status, 501)  # uninitialised, but TLS accepted
            with self.assertRaises((ssl.SSLError, ConnectionResetError, BrokenPipeError,
                                    http.client.RemoteDisconnected)):
                https(srv.port, ca)
        finally:
            self.assertEqual(srv.stop(), 0)
            srv.cleanup()

    def test_client_certificate_settings_without_tls_refused(self):
        # without tls_cert_file the listener speaks plain HTTP: a config asking for client
        # certificates started all the same and let every client in without one
        d = tempfile.mkdtemp(prefix="kmsd-mtls-")
        _, ca = make_ca(d, "ca")
        for cfg, name in (({"tls_client_ca_file": ca, "tls_require_client_cert": True},
                           "tls_require_client_cert"),
                          ({"tls_client_ca_file": ca}, "tls_client_ca_file")):
            with self.subTest(name=name):
                srv = KmsdServer(mode="config", config=cfg)
                srv.spawn()
                try:
                    rc = srv.wait_exit(20)
                    srv._close_log()
                    log = srv.log_text()
                    self.assertEqual(rc, 1, log)
                    self.assertNotIn("kmsd listening", log)
                    self.assertIn('"%s" needs "tls_cert_file" and "tls_key_file"' % name, log)
                finally:
                    srv.cleanup()
        shutil.rmtree(d, ignore_errors=True)


class EncryptedKeyTest(unittest.TestCase):
    """kmsd takes unencrypted keys only. An encrypted one made OpenSSL prompt for a passphrase
    on the controlling terminal: start-up hung at "Enter PEM pass phrase:", and a SIGHUP
    reload blocked the main loop (no more SIGTERM) until someone typed."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="kmsd-tls-enc-")
        ca_key, self.ca = make_ca(self.dir, "ca")
        self.key, self.crt = make_leaf(self.dir, "server", ca_key, self.ca, 7)
        self.enc = os.path.join(self.dir, "server-enc.key")
        openssl("pkey", "-in", self.key, "-out", self.enc, "-aes256", "-passout", "pass:pw")
        self.pid = None

    def tearDown(self):
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            os.close(self.fd)
        shutil.rmtree(self.dir, ignore_errors=True)

    def spawn_on_a_terminal(self, key):
        """kmsd with a pseudo-terminal as its controlling terminal, stdout and stderr."""
        import pty
        store = os.path.join(self.dir, "store")
        seal = os.path.join(self.dir, "seal.key")
        if not os.path.exists(seal):
            fd = os.open(seal, os.O_WRONLY | os.O_CREAT, 0o600)
            os.write(fd, os.urandom(32))
            os.close(fd)
        cfg = os.path.join(self.dir, "kmsd.json")
        with open(cfg, "w") as f:
            import json
            json.dump({"listen_address": "127.0.0.1:0", "storage_path": store,
                       "seal_key_file": seal, "tls_cert_file": self.crt, "tls_key_file": key}, f)
        self.out = b""
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            try:
                os.execv(KMSD_BIN, [KMSD_BIN, "server", "-config=" + cfg])
            finally:
                os._exit(127)

    def read_until(self, cond, timeout=20):
        import select
        deadline = time.monotonic() + timeout
        while not cond() and time.monotonic() < deadline:
            r, _, _ = select.select([self.fd], [], [], 0.1)
            if r:
                try:
                    self.out += os.read(self.fd, 4096)
                except OSError:  # the terminal's other end closed: kmsd exited
                    return
        return cond()

    def exited(self, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.read_until(lambda: False, 0.05)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid != 0:
                self.pid = None
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
        return None

    def test_encrypted_key_refused_at_start(self):
        self.spawn_on_a_terminal(self.enc)
        rc = self.exited()
        self.assertEqual(rc, 1, self.out)
        self.assertIn(b"TLS key %s is encrypted" % self.enc.encode(), self.out)
        self.assertNotIn(b"pass phrase", self.out)

    def test_encrypted_key_on_reload_keeps_the_old_one(self):
        self.spawn_on_a_terminal(self.key)
        self.assertTrue(self.read_until(lambda: b"kmsd listening" in self.out), self.out)
        with open(self.enc, "rb") as f:
            enc = f.read()
        with open(self.key, "wb") as f:
            f.write(enc)
        os.kill(self.pid, signal.SIGHUP)
        self.assertTrue(self.read_until(lambda: b"TLS reload failed" in self.out), self.out)
        self.assertIn(b"is encrypted", self.out)
        self.assertNotIn(b"pass phrase", self.out)
        port = int(re.search(rb'"address":"127\.0\.0\.1:(\d+)"', self.out).group(1))
        conn, status, _, _ = https(port, self.ca)
        conn.close()
        self.assertEqual(status, 501)  # still serving with the old certificate
        os.kill(self.pid, signal.SIGTERM)
        self.assertEqual(self.exited(), 0, self.out)

class StopTest(unittest.TestCase):
    def test_silent_connection_does_not_hold_the_stop(self):
        # a TCP connection that has sent no byte yet (a tcpSocket probe, a load balancer's
        # check) waits on a TLS listener for its first byte; SIGTERM left it open, so every
        # stop took the whole 10 s grace (on plain HTTP it closes at once)
        d = tempfile.mkdtemp(prefix="kmsd-tls-stop-")
        ca_key, ca = make_ca(d, "ca")
        key, crt = make_leaf(d, "server", ca_key, ca, 3)
        srv = KmsdServer(mode="config", config={"tls_cert_file": crt, "tls_key_file": key})
        srv.start()
        try:
            silent = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
            # the server has accepted it: a request on another connection is answered after
            conn, status, _, _ = https(srv.port, ca)
            conn.close()
            self.assertEqual(status, 501)
            start = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            rc = srv.wait_exit(30)
            took = time.monotonic() - start
            self.assertEqual(rc, 0, srv.log_tail())
            self.assertLess(took, 5, "the stop waited for the silent connection (%.1f s)" % took)
            self.assertEqual(silent.recv(1), b"")  # closed by the server
            silent.close()
        finally:
            srv.cleanup()
            shutil.rmtree(d, ignore_errors=True)

if __name__ == "__main__":
    unittest.main()
