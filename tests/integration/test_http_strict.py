"""kmsd's own HTTP/1.1 layer against a real server on loopback (issue 11, items 4 and 6).

Back-pressure: a client pipelines 12 MB of `GET /v1/sys/health` and reads nothing. The server
must stop reading that connection (its kernel receive queue then stops moving) while its
memory stays bounded, keep serving other clients, and, once the client reads, answer every
request in order.

Strict framing: each lenient form a proxy could read differently (chunk sizes with "0x", "+"
or blanks, NUL and control bytes in fields, bare LF, whitespace before a colon, obs-fold,
conflicting lengths, CL+TE, TE in HTTP/1.0, ...) is refused with its status and the connection
is closed, so nothing smuggled after it is ever answered.
"""

import os
import select
import shutil
import socket
import ssl
import tempfile
import time
import unittest

from kmsd_harness import KmsdServer, KmsdTestCase, rx_queue, wait_for
from test_tls import make_ca, make_leaf

HEALTH = b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n\r\n"
SEAL = b"GET /v1/sys/seal-status HTTP/1.1\r\nHost: x\r\n\r\n"
FLOOD_BYTES = 12 * 1024 * 1024
RSS_BOUND_KIB = 8 * 1024  # growth allowed over the idle server (measured: 0.3 MiB; the bug: 107 MiB)
# Under AddressSanitizer freed memory sits in ASan's quarantine, so RSS says nothing about what
# kmsd keeps; there the pause (the server stops reading) and the answers' order are still
# asserted, the RSS bound only in the normal build.
SANITIZED = os.environ.get("KMS_SANITIZED") == "1"


def assert_rss_bounded(test, base, peak):
    if not SANITIZED:
        test.assertLess(peak - base, RSS_BOUND_KIB, "RSS grew from %d to %d KiB" % (base, peak))


def connect(port, rcvbuf=None, sndbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if sndbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    s.settimeout(30)
    s.connect(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_until_close(s, timeout=30):
    """Everything the server sends until it closes; fails if it does not close in time."""
    s.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def responses(data):
    """Split a byte stream into (status, headers dict, body) tuples; the rest is returned."""
    out = []
    pos = 0
    while True:
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            break
        head = data[pos:end].split(b"\r\n")
        status = int(head[0].split(b" ")[1])
        hdrs = {}
        for line in head[1:]:
            k, _, v = line.partition(b":")
            hdrs[k.strip().lower()] = v.strip()
        n = int(hdrs.get(b"content-length", b"0"))
        if end + 4 + n > len(data):
            break
        out.append((status, hdrs, data[end + 4:end + 4 + n]))
        pos = end + 4 + n
    return out, data[pos:]


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


def flood_and_drain(test, srv, sock, tls):
    """Pipeline FLOOD_BYTES of requests on `sock` (non-blocking, connected to srv) without
    reading; require the server to stop reading it with bounded RSS and to keep serving
    others; then read every answer and check the order."""
    pid = srv.proc.pid
    base = rss_kib(pid)
    # every 997th request is a seal-status, so the order of the answers can be checked
    kinds = []
    parts = []
    size = 0
    while size < FLOOD_BYTES:
        seal = len(kinds) % 997 == 996
        kinds.append("seal" if seal else "health")
        parts.append(SEAL if seal else HEALTH)
        size += len(parts[-1])
    payload = memoryview(b"".join(parts))
    client_port = sock.getsockname()[1]
    blocked = (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError)
    state = {"off": 0, "peak": base, "history": []}

    def send_some():
        while state["off"] < len(payload):
            try:
                n = sock.send(payload[state["off"]:state["off"] + 65536])
            except blocked:
                return
            state["off"] += n

    def server_stopped_reading():
        send_some()
        state["peak"] = max(state["peak"], rss_kib(pid))
        history = state["history"]
        history.append(rx_queue(srv.port, client_port))
        last = history[-10:]
        if len(last) == 10 and len(set(last)) == 1 and last[0] is not None:
            if state["off"] == len(payload) and last[0] == 0:
                return "drained"  # it read everything the client sent
            if last[0] > 0 and state["off"] < len(payload):
                # bytes wait in the server's receive queue, unread, while the client cannot
                # send more (the queue's size depends on the kernel's buffer autotuning)
                return "paused"
        return None

    how = wait_for(server_stopped_reading, 60,
                   lambda: "the server's receive queue to stop moving (last %r, %d of %d "
                   "bytes sent)" % (state["history"][-10:], state["off"], len(payload)))
    test.assertEqual(how, "paused",
                     "kmsd read all %d bytes of an unread pipeline: no back-pressure "
                     "(RSS %d -> %d KiB)" % (len(payload), base, state["peak"]))
    assert_rss_bounded(test, base, state["peak"])

    # a paused connection does not hold up anyone else
    other = connect(srv.port)
    if tls is not None:
        other = tls.wrap_socket(other, server_hostname="127.0.0.1")
    other.sendall(HEALTH.replace(b"Host: x", b"Host: x\r\nConnection: close"))
    got, _ = responses(read_until_close(other, timeout=10))
    other.close()
    test.assertEqual(len(got), 1)

    # now read everything (sending the rest): every request answered in order, RSS bounded
    got = []
    buf = b""
    deadline = time.monotonic() + 120
    while len(got) < len(kinds) and time.monotonic() < deadline:
        want_write = [sock] if state["off"] < len(payload) else []
        pending = tls is not None and sock.pending()
        readable, writable, _ = select.select([sock], want_write, [], 0 if pending else 1)
        if writable:
            send_some()
        if readable or pending:
            try:
                chunk = sock.recv(1 << 20)
            except blocked:
                continue
            test.assertTrue(chunk, "the server closed after %d of %d answers"
                            % (len(got), len(kinds)))
            buf += chunk
            done, buf = responses(buf)
            got.extend(done)
            state["peak"] = max(state["peak"], rss_kib(pid))
    sock.close()
    test.assertEqual(state["off"], len(payload))
    test.assertEqual(len(got), len(kinds))
    test.assertEqual(buf, b"")
    status = {}
    for i, (st, hdrs, body) in enumerate(got):
        kind = "seal" if b'"progress"' in body else "health"
        if kind != kinds[i]:
            test.fail("answer %d is a %s answer, want %s" % (i, kind, kinds[i]))
        test.assertEqual(status.setdefault(kind, st), st, (i, body[:200]))
    assert_rss_bounded(test, base, state["peak"])


def flood_socket(port):
    # small client buffers, so the kernel cannot absorb the answers on the server's behalf
    return connect(port, rcvbuf=16384, sndbuf=65536)


class PipelineBackPressureTest(KmsdTestCase):
    """Issue 11 item 4: unauthenticated memory growth through pipelining."""

    def test_unread_pipeline_keeps_memory_bounded_and_answers_in_order(self):
        self.assertEqual(self.server.request("GET", "sys/health").status, 200)
        sock = flood_socket(self.server.port)
        sock.setblocking(False)
        flood_and_drain(self, self.server, sock, None)
        self.assertEqual(self.server.request("GET", "sys/health").status, 200)


class TLSPipelineBackPressureTest(unittest.TestCase):
    """The same over TLS (kmsd's production listener)."""

    def test_unread_pipeline_over_tls(self):
        d = tempfile.mkdtemp(prefix="kmsd-strict-tls-")
        srv = None
        try:
            ca_key, ca = make_ca(d, "ca")
            key, crt = make_leaf(d, "server", ca_key, ca, 1001)
            srv = KmsdServer(mode="config", config={"tls_cert_file": crt, "tls_key_file": key})
            srv.start()
            ctx = ssl.create_default_context(cafile=ca)
            sock = ctx.wrap_socket(flood_socket(srv.port), server_hostname="127.0.0.1")
            sock.setblocking(False)
            flood_and_drain(self, srv, sock, ctx)
            self.assertEqual(srv.stop(), 0, srv.log_tail())
        finally:
            if srv is not None:
                srv.cleanup()
            shutil.rmtree(d, ignore_errors=True)


CHUNKED = b"POST /v1/sys/mounts/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
SMUGGLED = b"GET /v1/sys/seal-status HTTP/1.1\r\nHost: x\r\n\r\n"


class StrictFramingTest(KmsdTestCase):
    """Issue 11 item 6: lenient parsing. Every case is followed by a request that must never
    be answered: the connection closes after the refusal."""

    def refused(self, raw, status, part):
        s = connect(self.server.port)
        try:
            s.sendall(raw + SMUGGLED)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = read_until_close(s)
        s.close()
        got, rest = responses(data)
        self.assertEqual(len(got), 1, (raw, data[:400]))
        self.assertEqual(rest, b"", (raw, data[:400]))
        st, hdrs, body = got[0]
        self.assertEqual(st, status, (raw, body))
        self.assertIn(part.encode(), body, raw)
        self.assertEqual(hdrs.get(b"connection"), b"close", raw)

    def test_chunk_sizes(self):
        body = b"01234567890123456789"
        for size in [b"0x14", b"+14", b" 14", b"14 ", b"-14", b"", b"1 4", b"14x"]:
            with self.subTest(size=size):
                self.refused(CHUNKED + size + b"\r\n" + body + b"\r\n0\r\n\r\n", 400,
                             "bad chunk size")
        for ext in [b"14;", b"14;=v", b"14;a=", b"14;a=\"open"]:
            with self.subTest(ext=ext):
                self.refused(CHUNKED + ext + b"\r\n" + body + b"\r\n0\r\n\r\n", 400,
                             "bad chunk extension")
        self.refused(CHUNKED + b"FFFFFFFFFFFFFFFFFFFFFFFF\r\n", 413, "request body too large")
        self.refused(CHUNKED + b"14\r\n" + body + b"XX0\r\n\r\n", 400,
                     "chunk data not followed by CRLF")
        self.refused(CHUNKED + b"0\r\nX: a\x00b\r\n\r\n", 400, "NUL byte in trailer")

    def test_header_bytes(self):
        base = b"GET /v1/sys/health HTTP/1.1\r\n"
        self.refused(base + b"X-Vault-Token: a\x00b\r\n\r\n", 400, "NUL byte in header")
        self.refused(base + b"X-A: a\x01b\r\n\r\n", 400, "control character in a header value")
        self.refused(base + b"X-A: a\x7fb\r\n\r\n", 400, "control character in a header value")
        self.refused(base + b"Host : x\r\n\r\n", 400, "whitespace before a header's colon")
        self.refused(base + b"X-A: a\r\n continued\r\n\r\n", 400, "obsolete line folding")
        self.refused(base + b"X-A: a\rb\r\n\r\n", 400, "bare CR in header")
        self.refused(base + b"X-A: a\n\r\n", 400, "header ends in a bare LF")
        self.refused(b"GET /v1/sys/health HTTP/1.1\n\n", 400, "request line ends in a bare LF")
        self.refused(b"GET /v1/sys/health HTTP/1.1\x00\r\n\r\n", 400,
                     "NUL byte in request line")
        self.refused(base + b"Host: a\r\nHost: b\r\n\r\n", 400, "repeated Host header")
        # RFC 9112 3.2, as Go's net/http: HTTP/1.1 needs a Host, HTTP/1.0 does not
        self.refused(base + b"\r\n", 400, "missing required Host header")
        s = connect(self.server.port)
        with s:
            s.sendall(b"GET /v1/sys/health HTTP/1.0\r\n\r\n")
            data = read_until_close(s)
        self.assertTrue(data.startswith(b"HTTP/1.1 200 "), data[:200])

    def test_framing_headers(self):
        post = b"POST /v1/sys/mounts/x HTTP/1.1\r\nHost: x\r\n"
        self.refused(post + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\nabc", 400,
                     "conflicting Content-Length values")
        self.refused(post + b"Content-Length: +2\r\n\r\nab", 400, "bad Content-Length")
        self.refused(post + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", 400,
                     "both Content-Length and Transfer-Encoding")
        self.refused(b"POST /v1/sys/mounts/x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"0\r\n\r\n", 400, "Transfer-Encoding in HTTP/1.0")
        self.refused(post + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                     400, "repeated Transfer-Encoding header")
        self.refused(post + b"Transfer-Encoding: chunked, chunked\r\n\r\n", 400,
                     "bad Transfer-Encoding")
        self.refused(post + b"Transfer-Encoding: gzip, chunked\r\n\r\n", 501,
                     "unsupported transfer encoding")
        self.refused(post + b"Expect: 200-ok\r\n\r\n", 417, "unsupported Expect header")

    def test_strict_forms_still_accepted(self):
        """What the RFC allows keeps working: extensions, trailers, obs-text, same lengths."""
        tok = self.server.token.encode()
        body = b'{"type":"transit"}'
        s = connect(self.server.port)
        s.sendall(b"POST /v1/sys/mounts/strict-ok HTTP/1.1\r\nHost: x\r\nX-Vault-Token: " + tok +
                  b"\r\nTransfer-Encoding: chunked\r\nX-Note: caf\xc3\xa9\r\n\r\n"
                  b"%x;name=\"v a\" ; other\r\n%s\r\n0\r\nX-Trailer: t\r\n\r\n"
                  % (len(body), body) +
                  b"PUT /v1/sys/mounts/strict-ok2 HTTP/1.1\r\nHost: x\r\nX-Vault-Token: " + tok +
                  b"\r\nContent-Length: %d\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                  % (len(body), len(body)) + body)
        got, rest = responses(read_until_close(s))
        s.close()
        self.assertEqual([g[0] for g in got], [204, 204], got)
        r = self.server.request("GET", "sys/mounts")
        self.assertIn("strict-ok/", r.data or r.json, r.describe())
        self.assertIn("strict-ok2/", r.data or r.json, r.describe())


if __name__ == "__main__":
    unittest.main()
