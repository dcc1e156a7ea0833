"""Hostile clients at the HTTP layer: slow headers and bodies (slowloris), oversized headers
and bodies, too many connections, idle connections, malformed framing, pipelining, and the
per-token rate limit. Each case also checks that the server keeps answering others."""

import base64
import json
import os
import resource
import socket
import time
import unittest

from kmsd_harness import KmsdServer, raw_request, wait_for


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_all(s, timeout=10):
    s.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return data


def status_of(data):
    line = data.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


class HostileHTTPTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = KmsdServer(mode="config", config={
            "read_timeout": 2, "idle_timeout": 2, "max_request_size": 1 << 20,
            "max_header_size": 8192, "max_connections": 40, "workers": 1,
            "rate_limit": 0})
        cls.srv.start()
        r = cls.srv.request("PUT", "sys/init", {}, token=None)
        cls.srv.token = r.json["root_token"]

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        cls.srv.cleanup()
        assert rc == 0, rc

    def healthy_quickly(self):
        t0 = time.monotonic()
        r = raw_request("127.0.0.1", self.srv.port, "GET", "/v1/sys/health", timeout=3)
        self.assertEqual(r.status, 200)
        self.assertLess(time.monotonic() - t0, 1.0)

    def test_slowloris_headers_are_cut_off_and_others_served(self):
        socks = []
        for _ in range(20):
            s = connect(self.srv.port)
            s.sendall(b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\nX-a: ")
            socks.append(s)
        stop = time.monotonic() + 10
        closed = 0
        # keep dribbling one byte per 0.5 s (so the idle timer never fires); the request
        # deadline (2 s) must still cut every one of them off
        while time.monotonic() < stop and closed < len(socks):
            self.healthy_quickly()
            for s in socks:
                try:
                    s.sendall(b"a")
                except OSError:
                    pass
            time.sleep(0.5)
            closed = 0
            for s in socks:
                s.setblocking(False)
                try:
                    if s.recv(4096) is not None:
                        closed += 1
                except BlockingIOError:
                    pass
                except OSError:
                    closed += 1
                s.setblocking(True)
        self.assertEqual(closed, len(socks), "slow clients were not disconnected")
        for s in socks:
            s.close()
        self.healthy_quickly()

    def test_slow_body_is_cut_off(self):
        s = connect(self.srv.port)
        s.sendall(b"POST /v1/sys/init HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        t0 = time.monotonic()
        data = read_all(s, timeout=6)
        s.close()
        self.assertEqual(status_of(data), 408, data[:200])
        self.assertLess(time.monotonic() - t0, 5)

    def test_oversized_headers(self):
        s = connect(self.srv.port)
        s.sendall(b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\nX-big: " + b"a" * 20000 + b"\r\n\r\n")
        data = read_all(s)
        s.close()
        self.assertEqual(status_of(data), 431, data[:200])
        s = connect(self.srv.port)
        s.sendall(b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n" + b"".join(
            b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n")
        self.assertEqual(status_of(read_all(s)), 431)
        s.close()
        self.healthy_quickly()

    def test_oversized_body_refused_before_reading(self):
        s = connect(self.srv.port)
        s.sendall(b"POST /v1/transit/keys/x HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n")
        data = read_all(s)
        s.close()
        self.assertEqual(status_of(data), 413)
        self.assertIn(b"request body too large", data)
        s = connect(self.srv.port)
        s.sendall(b"POST /v1/transit/keys/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"200000\r\n")
        self.assertEqual(status_of(read_all(s)), 413)
        s.close()

    def test_malformed_framing(self):
        cases = [
            (b"GARBAGE\r\n\r\n", 400),
            (b"GET /v1/sys/health HTTP/2.0\r\n\r\n", 505),
            (b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
             b"Transfer-Encoding: chunked\r\n\r\n", 400),
            (b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
             400),
            (b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
            (b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
            (b"POST /v1/sys/init HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        ]
        for raw, want in cases:
            s = connect(self.srv.port)
            s.sendall(raw)
            data = read_all(s)
            s.close()
            self.assertEqual(status_of(data), want, (raw, data[:200]))
        self.healthy_quickly()

    def test_pipelining_and_chunked_and_expect_continue(self):
        s = connect(self.srv.port)
        s.sendall(b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /v1/sys/seal-status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = read_all(s)
        s.close()
        self.assertEqual(data.count(b"HTTP/1.1 200 OK"), 2, data)
        self.assertLess(data.index(b'"replication_dr_mode"'), data.index(b'"progress"'))
        body = json.dumps({"type": "transit"}).encode()
        s = connect(self.srv.port)
        s.sendall(b"POST /v1/sys/mounts/chunky HTTP/1.1\r\nHost: x\r\nX-Vault-Token: %s\r\n"
                  b"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n"
                  b"Connection: close\r\n\r\n" % self.srv.token.encode())
        first = s.recv(4096)
        self.assertTrue(first.startswith(b"HTTP/1.1 100 Continue"), first)
        s.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        data = first + read_all(s)
        s.close()
        self.assertIn(b"HTTP/1.1 204", data)

    def test_pipelined_answers_leave_together(self):
        # The answers produced in one pass of the event loop are written together (server/http.c,
        # "Writing"): 20 requests sent in one segment come back in a few segments, not 20.
        s = connect(self.srv.port)
        s.sendall(b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n\r\n" * 20)
        data = b""
        s.settimeout(10)
        while data.count(b"HTTP/1.1 200 OK") < 20:
            chunk = s.recv(65536)
            self.assertTrue(chunk, data[-200:])
            data += chunk
        info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 192)
        segs_in = int.from_bytes(info[140:144], "little")  # tcpi_segs_in (linux/tcp.h)
        s.close()
        self.assertEqual(data.count(b"HTTP/1.1 200 OK"), 20)
        # the SYN-ACK, an ACK or two, the answers: one write of ~6 KB is one loopback segment
        self.assertLessEqual(segs_in, 8, "20 answers arrived in %d segments" % segs_in)

    def test_interim_answer_after_pipelined_ones(self):
        # a 100 Continue for the second request must follow the first request's answer, which
        # is still waiting for the loop's flush when the 100 is written
        body = json.dumps({"type": "transit"}).encode()
        s = connect(self.srv.port)
        s.sendall(b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"POST /v1/sys/mounts/pipelined HTTP/1.1\r\nHost: x\r\nX-Vault-Token: %s\r\n"
                  b"Content-Length: %d\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
                  % (self.srv.token.encode(), len(body)))
        data = b""
        s.settimeout(10)
        while b"100 Continue" not in data:
            chunk = s.recv(65536)
            self.assertTrue(chunk, data)
            data += chunk
        self.assertTrue(data.startswith(b"HTTP/1.1 200 OK"), data[:100])
        self.assertLess(data.index(b"HTTP/1.1 200 OK"), data.index(b"HTTP/1.1 100 Continue"))
        s.sendall(body)
        data += read_all(s)
        s.close()
        self.assertEqual(data.count(b"HTTP/1.1 200 OK"), 1, data)
        self.assertIn(b"HTTP/1.1 204", data[data.index(b"100 Continue"):])

    def test_idle_connection_closed(self):
        s = connect(self.srv.port)
        t0 = time.monotonic()
        data = read_all(s, timeout=6)
        s.close()
        self.assertEqual(data, b"")
        self.assertLess(time.monotonic() - t0, 5)

    def test_connection_cap(self):
        socks = [connect(self.srv.port) for _ in range(40)]
        refusals = []

        def refused():
            # accepted in order, so this one normally finds all 40 counted; if the server
            # had not counted them yet it is served (then closed when idle) and we retry
            extra = connect(self.srv.port)
            data = read_all(extra, timeout=5)
            extra.close()
            refusals.append(data)
            return status_of(data) == 503

        wait_for(refused, 20, lambda: "a 503 past the connection cap: %r" % refusals[-3:])
        self.assertIn(b"too many open connections", refusals[-1])
        for s in socks:
            s.close()

        def served():
            try:
                return raw_request("127.0.0.1", self.srv.port, "GET", "/v1/sys/health",
                                   timeout=3).status == 200
            except OSError:
                return False

        wait_for(served, 10, "the server to see the capped connections close")
        self.healthy_quickly()


def server_side_state(server_port, client_port):
    """The TCP state (/proc/net/tcp, hex: 01 established) of the server's end of a loopback
    connection, or None once it is gone."""
    with open("/proc/net/tcp") as f:
        for line in f.read().splitlines()[1:]:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if (int(local.split(":")[1], 16) == server_port and
                    int(remote.split(":")[1], 16) == client_port):
                return fields[3]
    return None


class SlowReaderTest(unittest.TestCase):
    """A client that never reads an answer larger than the socket buffers: its connection is
    closed once no byte of it has been taken for idle_timeout (a closing connection had no
    timer and kept its answer, up to a whole batch, forever)."""

    def test_answer_never_read_is_dropped_after_idle_timeout(self):
        srv = KmsdServer(mode="config", config={"idle_timeout": 1, "workers": 1,
                                                "rate_limit": 0})
        srv.start()
        try:
            srv.token = srv.request("PUT", "sys/init", {}, token=None).json["root_token"]
            self.assertEqual(srv.request("POST", "sys/mounts/transit",
                                         {"type": "transit"}).status, 204)
            self.assertEqual(srv.request("POST", "transit/keys/big", {}).status, 200)
            with open("/proc/sys/net/ipv4/tcp_wmem") as f:
                wmem = int(f.read().split()[2])
            # an answer at least twice what the kernel can buffer for the server
            n = 2 * wmem // 40000 + 1
            items = [{"plaintext": base64.b64encode(os.urandom(40000)).decode()}
                     for _ in range(n)]
            body = json.dumps({"batch_input": items}).encode()
            raw = ("POST /v1/transit/encrypt/big HTTP/1.1\r\nHost: x\r\nX-Vault-Token: %s\r\n"
                   "Connection: close\r\nContent-Length: %d\r\n\r\n"
                   % (srv.token, len(body))).encode() + body
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(30)
            s.connect(("127.0.0.1", srv.port))
            try:
                s.sendall(raw)
                client_port = s.getsockname()[1]
                wait_for(lambda: server_side_state(srv.port, client_port) not in ("01", None)
                         or server_side_state(srv.port, client_port) is None, 30,
                         "the server to close a connection whose answer is not read")
                # others are served meanwhile and after
                r = raw_request("127.0.0.1", srv.port, "GET", "/v1/sys/health", timeout=5)
                self.assertEqual(r.status, 200)
                # what the client gets is a cut answer, not a whole one
                data = read_all(s, timeout=30)
                self.assertEqual(status_of(data), 200)
                self.assertLess(len(data), len(body))
            finally:
                s.close()
        finally:
            self.assertEqual(srv.stop(), 0)
            srv.cleanup()


class FreshConnectionTest(unittest.TestCase):
    """A connection that sends nothing has read_timeout for its first request, as every
    request has; idle_timeout is the wait between requests (a fresh plain-HTTP connection had
    idle_timeout, 120 s by default: a slowloris four times cheaper than a slow request)."""

    def test_silent_connection_closed_at_read_timeout_kept_alive_one_idles(self):
        srv = KmsdServer(mode="config", config={"read_timeout": 1, "idle_timeout": 120,
                                                "workers": 1, "rate_limit": 0})
        srv.start()
        try:
            s = connect(srv.port)
            t0 = time.monotonic()
            data = read_all(s, timeout=30)  # returns at the server's close
            took = time.monotonic() - t0
            s.close()
            self.assertEqual(data, b"")  # closed without an answer, as Go does
            self.assertLess(took, 20, "a silent connection was open %.1f s" % took)
            # a connection that has been answered idles for idle_timeout, not read_timeout
            k = connect(srv.port)
            try:
                req = b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n\r\n"
                k.sendall(req)
                first = k.recv(65536)
                self.assertEqual(status_of(first), 501)  # not initialised, answered
                time.sleep(2.5)  # lets read_timeout pass; nothing else to wait for
                k.sendall(req)
                self.assertEqual(status_of(k.recv(65536)), 501)
            finally:
                k.close()
        finally:
            self.assertEqual(srv.stop(), 0)
            srv.cleanup()


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


class DescriptorExhaustionTest(unittest.TestCase):
    """Out of file descriptors, accept(2) fails while the listening socket stays readable: the
    listener must rest instead of spinning the workers (and libevent printing a warning per
    failure, ~35 MB/s of log), and serve the waiting connections once descriptors are free."""

    def test_listener_rests_while_out_of_descriptors(self):
        srv = KmsdServer(mode="config", config={"workers": 2, "rate_limit": 0})
        srv.start()
        held = []
        try:
            pid = srv.proc.pid
            # a limit just above what the server holds now: 10 more connections fit
            limit = len(os.listdir("/proc/%d/fd" % pid)) + 10
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, limit))
            for _ in range(40):  # the last ~30 wait in the backlog: accept(2) fails for them
                held.append(socket.create_connection(("127.0.0.1", srv.port), timeout=10))
            wait_for(lambda: "cannot accept connections; pausing" in srv.log_text(), 30,
                     lambda: "the listener to report EMFILE\n" + srv.log_tail())
            log_before = len(srv.log_text())
            t0 = cpu_ticks(pid)
            time.sleep(2.0)  # lets time pass to measure the CPU spent meanwhile
            spent = (cpu_ticks(pid) - t0) / os.sysconf("SC_CLK_TCK")
            # spinning, both workers took ~2 s of CPU here; resting, nearly none
            self.assertLess(spent, 0.5, "%.2f s of CPU in 2 s while out of descriptors" % spent)
            grown = srv.log_text()[log_before:]
            self.assertLessEqual(grown.count("cannot accept"), 4, grown[-2000:])
            self.assertNotIn("Error from accept() call", srv.log_text())
            # descriptors back: the connections waiting in the backlog are served
            for s in held[:-1]:
                s.close()
            waiting = held[-1]
            waiting.sendall(b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n\r\n")
            waiting.settimeout(30)
            self.assertEqual(status_of(waiting.recv(4096)), 501)  # served: not initialized
        finally:
            for s in held:
                s.close()
            self.assertEqual(srv.stop(), 0)
            srv.cleanup()


class RateLimitTest(unittest.TestCase):
    def test_per_token_limit(self):
        srv = KmsdServer(mode="config", config={"rate_limit": 5, "rate_limit_burst": 5})
        srv.start()
        try:
            root = srv.request("PUT", "sys/init", {}, token=None).json["root_token"]

            def lookup():
                return srv.request("GET", "auth/token/lookup-self", token=root)

            # the burst of 5 is served; sending faster than 5/s must then hit the limit
            # (each try is well under 200 ms, so refills cannot keep up for long)
            first = [lookup().status for _ in range(5)]
            self.assertEqual(first, [200] * 5)
            tries = []

            def limited():
                r = lookup()
                tries.append(r.status)
                return r if r.status == 429 else None

            r = wait_for(limited, 10, lambda: "a 429 after the burst; got %r" % tries[-10:],
                         interval=0)
            self.assertEqual(r.json["errors"], ["rate limit quota exceeded"])
            self.assertGreaterEqual(int(r.header("Retry-After")), 1)
            # other clients (no token, public paths) are not affected
            self.assertEqual(srv.request("GET", "sys/health", token=None).status, 200)
            # and the token is served again once the bucket refills
            wait_for(lambda: lookup().status == 200, 10, "the bucket to refill", interval=0.1)
        finally:
            self.assertEqual(srv.stop(), 0)
            srv.cleanup()

    def test_dev_mode_has_no_limit(self):
        srv = KmsdServer(mode="dev")
        srv.start()
        try:
            statuses = {srv.request("GET", "auth/token/lookup-self").status for _ in range(50)}
            self.assertEqual(statuses, {200})
        finally:
            self.assertEqual(srv.stop(), 0)
            srv.cleanup()


if __name__ == "__main__":
    unittest.main()
