"""The non-blocking audit path (issue 12; docs/audit.md "Durability, failure and the fsync
modes") against a real kmsd built with -DKMS_TEST_HOOKS=ON, whose audit writer takes orders
from files in $KMS_TEST_AUDIT_HOOKS: `hold` (the writer waits before its next fdatasync while
the file exists, and shows it by creating `held`), `delay` (milliseconds slept before each
fdatasync) and `fail` (the next write fails half-way when the file is empty or names a string
the batch contains), `syncfail` (while it exists every fdatasync fails with EIO); a device
whose name is a directory in the hooks dir takes its files from there.

- requests parked behind a held fsync do not stop their worker: with one worker, sys/health
  answers while they wait, and they all complete, in one group commit, when the fsync ends;
- a write that fails mid-group fails every request parked on that group with 500, and none of
  them had an effect (the key creates among them never ran) or left a line;
- a response group that fails after a change was committed: 500, the change stays, the log
  ends in the durable request line;
- audit_timeout: a request parked longer fails 500, and a change that was waiting for its
  request line never happens;
- a failed fdatasync breaks the device until it is reopened (Linux forgets the pages it could
  not write, so a later fsync would not cover them): every request fails with 500 meanwhile,
  and after the log is rotated and SIGHUP sent the chain goes on in the new file;
- two devices, one hung in its fsync: requests the other device recorded are answered at
  audit_timeout instead of failing, and the hung one gets every line once it comes back;
- a parked connection keeps reading: a client that closes it is seen while the fsync is still
  held (its change, waiting for its request line, is abandoned and never happens), a client
  that half-closes after an encrypt that ran still gets its answer once the line is durable,
  and
  requests pipelined behind a parked one (more than the 64 KiB a parked connection buffers)
  are answered after it, in order.
"""

import http.client
import json
import os
import signal
import socket
import threading
import time
import unittest

from kmsd_harness import KMSD_BIN, HookedServerCase, b64, rx_queue, wait_for

KMSCTL_BIN = os.path.join(os.path.dirname(KMSD_BIN), "kmsctl")


def read_lines(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data == b"" or data.endswith(b"\n"), "log does not end with a newline"
    return [json.loads(line) for line in data.decode().splitlines()]


class HookedServer(HookedServerCase):
    """One config-mode kmsd with one worker, an audit file in batch mode and the hooks dir;
    a subclass adds `extra_config`."""

    hook_env = "KMS_TEST_AUDIT_HOOKS"
    hook_files = ("hold", "fail", "delay", "syncfail")
    audit_log = True
    extra_config = {}

    @classmethod
    def setUpClass(cls):
        cls.server_config = dict({"audit_fsync": "batch"}, **cls.extra_config)
        super().setUpClass()

    # ---- hooks -----------------------------------------------------------------------------
    def hook(self, name, text=""):
        with open(os.path.join(self.hooks, name), "w") as f:
            f.write(text)

    def unhook(self, *names):
        for n in names:
            try:
                os.unlink(os.path.join(self.hooks, n))
            except FileNotFoundError:
                pass

    def wait_held(self):
        wait_for(lambda: os.path.exists(os.path.join(self.hooks, "held")), 30,
                 lambda: "the audit writer to reach the held fsync\n" + self.server.log_tail())

    def metric(self, name):
        r = self.req("GET", "sys/metrics?format=prometheus")
        self.assertEqual(r.status, 200, r.describe())
        for line in r.body.decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError("no metric %s" % name)

    def wait_pending(self, n):
        wait_for(lambda: self.metric("kmsd_audit_pending_lines") >= n, 30,
                 lambda: "%d audit lines pending (have %s)" % (
                     n, self.metric("kmsd_audit_pending_lines")))

    def wait_drained(self):
        wait_for(lambda: self.metric("kmsd_audit_pending_lines") == 0, 30,
                 lambda: "the audit queue to drain")

    def lines(self):
        return read_lines(self.log)

    def verify(self, *files):
        import subprocess
        res = subprocess.run([KMSCTL_BIN, "audit", "verify"] + list(files or [self.log]),
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)

    # ---- concurrent clients ----------------------------------------------------------------
    def send_all(self, requests):
        """Send each (method, path, body) on its own connection at once, in threads; returns
        the threads and a list that gets (index, status, body) as answers arrive."""
        results = []
        lock = threading.Lock()

        def one(i, method, path, body):
            conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=120)
            try:
                conn.request(method, "/v1/" + path, json.dumps(body),
                             {"X-Vault-Token": self.server.token})
                resp = conn.getresponse()
                data = resp.read()
                with lock:
                    results.append((i, resp.status, data))
            except Exception as e:  # a failure is an answer the test sees
                with lock:
                    results.append((i, -1, repr(e).encode()))
            finally:
                conn.close()

        ts = [threading.Thread(target=one, args=(i,) + tuple(r)) for i, r in enumerate(requests)]
        for t in ts:
            t.start()
        return ts, results


class ParkingTest(HookedServer):

    def test_parked_requests_leave_the_worker_free(self):
        name, _ = self.create_key()
        before = len(self.lines())
        self.hook("hold")
        first, first_res = self.send_all([("POST", "transit/encrypt/" + name,
                                           {"plaintext": b64("first")})])
        self.wait_held()  # its response line's group is in the (held) fsync
        fsyncs = self.metric("kmsd_audit_fsyncs_total")
        n = 24
        reqs = []
        for i in range(n):
            if i % 4 == 3:
                reqs.append(("POST", "transit/keys/%s/rotate" % name, {}))
            else:
                reqs.append(("POST", "transit/encrypt/" + name, {"plaintext": b64("p%d" % i)}))
        ts, results = self.send_all(reqs)
        # encrypts wait with both lines queued; rotations with their request line
        self.wait_pending(1 + 2 * (n - n // 4) + n // 4)
        # the only worker still serves other connections while all of them are parked
        for _ in range(3):
            t0 = time.monotonic()
            r = self.req("GET", "sys/health", token=None)
            self.assertEqual(r.status, 200, r.describe())
            self.assertLess(time.monotonic() - t0, 5)
        r = self.req("GET", "sys/metrics?format=prometheus")
        self.assertEqual(r.status, 200)
        self.assertEqual(results, [])  # nothing was answered before its record was durable
        self.assertEqual(first_res, [])
        self.unhook("hold")
        for t in ts + first:
            t.join()
        self.assertEqual(first_res[0][1], 200, first_res)
        self.assertEqual(len(results), n)
        for i, status, body in results:
            self.assertEqual(status, 200, (i, body))
        self.wait_drained()
        # the held group, one group for every encrypt and the rotations' request lines, then
        # the rotations' response lines (each rotation commits to the store on its own, so
        # these may take a few groups): fewer fsyncs than requests
        self.assertLess(self.metric("kmsd_audit_fsyncs_total") - fsyncs, 3 + n // 4)
        lines = self.lines()[before:]
        self.assertEqual(len(lines), 2 * (n + 1))
        by_id = {}
        for l in lines:
            by_id.setdefault(l["request"]["id"], []).append(l["type"])
        self.assertEqual(len(by_id), n + 1)
        for rid, types in by_id.items():
            self.assertEqual(types, ["request", "response"], rid)
        self.assertEqual(self.read_key(name)["latest_version"], 1 + n // 4)
        self.verify()


class FailureTest(HookedServer):

    def test_write_failure_mid_group_fails_every_parked_request(self):
        name, _ = self.create_key()
        before = self.lines()
        size = os.path.getsize(self.log)
        self.hook("hold")
        first, first_res = self.send_all([("POST", "transit/encrypt/" + name,
                                           {"plaintext": b64("first")})])
        self.wait_held()
        n = 16
        made = [self.uniq("never") for _ in range(n // 2)]
        reqs = [("POST", "transit/keys/" + k, {}) for k in made]
        reqs += [("POST", "transit/encrypt/" + name, {"plaintext": b64("g%d" % i)})
                 for i in range(n // 2)]
        ts, results = self.send_all(reqs)
        # creates wait on their request line, encrypts with both lines queued
        self.wait_pending(1 + len(made) + 2 * (n // 2))
        self.hook("fail")  # the next write (the parked group's) dies half-way
        self.unhook("hold")
        for t in ts + first:
            t.join()
        self.unhook("fail")
        self.assertEqual(first_res[0][1], 200, first_res)  # its group was already written
        for i, status, body in results:
            self.assertEqual(status, 500, (i, body))
            self.assertEqual(json.loads(body), {"errors": ["internal error"]})
            self.assertNotIn(b"vault:v", body)
        self.wait_drained()
        # nothing of the failed group is in the file (cut back whole), the chain is intact
        lines = self.lines()
        self.assertEqual(len(lines), len(before) + 2)
        with open(self.log) as f:
            text = f.read()
        for k in made:
            self.assertNotIn(k, text)
            r = self.req("GET", "transit/keys/" + k)
            self.assertEqual(r.status, 404, r.describe())  # the create never ran
        self.assertGreater(os.path.getsize(self.log), size)
        self.verify()
        self.encrypt(name, b"after")  # and the device carries on
        self.verify()

    def test_response_group_failure_after_a_committed_change(self):
        """What happens to a change already committed to the store when its response line's
        group fails: the client gets 500 and no result; the change stays (it is committed, and
        kmsd does not undo it); its request line was durable before the handler ran, so the
        log ends in the record of the attempt, without a response line."""
        name, _ = self.create_key()
        r = self.req("POST", "transit/keys/%s/rotate" % name, {})
        self.assertEqual(r.status, 200, r.describe())
        version = self.read_key(name)["latest_version"]
        n = len(self.lines())
        self.hook("fail", '"type":"response"')
        try:
            r = self.req("POST", "transit/keys/%s/rotate" % name, {})
            self.assertEqual(r.status, 500, r.describe())
            self.assertEqual(r.json, {"errors": ["internal error"]})
        finally:
            self.unhook("fail")
        lines = self.lines()
        self.assertEqual(len(lines), n + 1)
        self.assertEqual(lines[-1]["type"], "request")
        self.assertEqual(lines[-1]["op"], "rotate")
        self.assertEqual(self.read_key(name)["latest_version"], version + 1)
        self.verify()


def http_bytes(method, path, body, token):
    data = json.dumps(body).encode()
    head = ("%s /v1/%s HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Vault-Token: %s\r\n"
            "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (method, path, token, len(data)))
    return head.encode() + data


def read_response(f):
    """One HTTP/1.1 response from the file object f: (status, body)."""
    status = f.readline()
    if not status:
        raise AssertionError("connection closed before a response")
    code = int(status.split()[1])
    length = None
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.decode().partition(":")
        if k.strip().lower() == "content-length":
            length = int(v.strip())
    return code, f.read(length or 0)


class ParkedConnectionTest(HookedServer):
    extra_config = {"audit_timeout": 120}  # no request here is ended by the timeout

    def codes(self, code):
        """kmsd_requests_total of every route for one status code."""
        r = self.req("GET", "sys/metrics?format=prometheus")
        self.assertEqual(r.status, 200, r.describe())
        n = 0
        for line in r.body.decode().splitlines():
            if line.startswith("kmsd_requests_total{") and 'code="%d"' % code in line:
                n += int(float(line.split()[1]))
        return n

    def hold_writer(self):
        """The writer held in an fsync; returns the held request's thread and results."""
        name, _ = self.create_key()
        self.hook("hold")
        first, first_res = self.send_all([("POST", "transit/encrypt/" + name,
                                           {"plaintext": b64("first")})])
        self.wait_held()
        return name, first, first_res

    def test_client_closing_a_parked_connection_is_abandoned(self):
        _, first, first_res = self.hold_writer()
        fails = self.codes(500)
        fresh = self.uniq("gone")
        s = socket.create_connection(("127.0.0.1", self.server.port), timeout=30)
        try:
            # a create waits for its request line to be durable: parked behind the held fsync
            s.sendall(http_bytes("POST", "transit/keys/" + fresh, {}, self.server.token))
            self.wait_pending(1 + 1)  # the held response line, the create's request line
        finally:
            s.close()
        # seen while the fsync is still held: the request is abandoned (counted as a 500)
        wait_for(lambda: self.codes(500) > fails, 30,
                 lambda: "the closed connection's request to be abandoned")
        self.assertEqual(first_res, [])  # the fsync is still held
        r = self.req("GET", "sys/health", token=None)
        self.assertEqual(r.status, 200, r.describe())
        self.unhook("hold")
        for t in first:
            t.join()
        self.assertEqual(first_res[0][1], 200, first_res)
        self.wait_drained()
        r = self.req("GET", "transit/keys/" + fresh)
        self.assertEqual(r.status, 404, r.describe())  # its handler never ran
        self.verify()

    def test_a_half_closed_client_gets_its_parked_answer(self):
        # an encrypt has run and waits for its response line when the client shuts its
        # sending side (`nc -N`): the EOF kmsd reads meanwhile must not drop the answer
        name, first, first_res = self.hold_writer()
        fails = self.codes(500)
        s = socket.create_connection(("127.0.0.1", self.server.port), timeout=60)
        try:
            s.sendall(http_bytes("POST", "transit/encrypt/" + name, {"plaintext": b64("half")},
                                 self.server.token))
            self.wait_pending(1 + 2)  # the held response line, the encrypt's two lines
            s.shutdown(socket.SHUT_WR)
            # one worker: its answer to this comes after it has read the EOF queued before it
            r = self.req("GET", "sys/health", token=None)
            self.assertEqual(r.status, 200, r.describe())
            self.assertEqual(self.codes(500), fails)  # not abandoned
            self.assertEqual(first_res, [])  # the fsync is still held
            self.unhook("hold")
            f = s.makefile("rb")
            status, body = read_response(f)
            self.assertEqual(f.read(), b"")  # then kmsd closes the connection
            f.close()
        finally:
            s.close()
        for t in first:
            t.join()
        self.assertEqual(status, 200, body[:300])
        self.assertEqual(self.decrypt(name, json.loads(body)["data"]["ciphertext"]), b"half")
        self.wait_drained()
        self.verify()

    def test_requests_pipelined_behind_a_parked_one_answer_in_order(self):
        name, first, first_res = self.hold_writer()
        # 2 x 40 KiB of plaintext: more than the 64 KiB a parked connection buffers
        plains = [b"one", b"two", os.urandom(40 * 1024), os.urandom(40 * 1024), b"five"]
        data = b"".join(http_bytes("POST", "transit/encrypt/" + name, {"plaintext": b64(p)},
                                   self.server.token) for p in plains)
        self.assertGreater(len(data), 64 * 1024)
        s = socket.create_connection(("127.0.0.1", self.server.port), timeout=60)
        try:
            s.sendall(data)
            # the first is parked with both its lines queued; the rest wait unparsed
            self.wait_pending(1 + 2)
            s.setblocking(False)
            with self.assertRaises(BlockingIOError):
                s.recv(1)  # nothing answered before its record is durable
            s.setblocking(True)
            self.unhook("hold")
            f = s.makefile("rb")
            answers = [read_response(f) for _ in plains]
            f.close()
        finally:
            s.close()
        for t in first:
            t.join()
        self.assertEqual(first_res[0][1], 200, first_res)
        for (status, body), p in zip(answers, plains):
            self.assertEqual(status, 200, body[:300])
            ct = json.loads(body)["data"]["ciphertext"]
            self.assertEqual(self.decrypt(name, ct), p)
        self.wait_drained()
        self.verify()

    def test_a_parked_connection_stops_reading_at_its_buffer(self):
        """While a request is parked, what its client pipelines behind it is buffered up to
        64 KiB and the rest stays in the kernel (kmsd stops reading that socket); once the
        record is durable every request is answered, in order."""
        name, first, first_res = self.hold_writer()
        plain = os.urandom(16 * 1024)
        one = http_bytes("POST", "transit/encrypt/" + name, {"plaintext": b64(plain)},
                         self.server.token)
        count = (1024 * 1024) // len(one) + 1  # ~1 MiB: more than the buffer and the kernel's
        s = socket.create_connection(("127.0.0.1", self.server.port), timeout=60)
        client_port = s.getsockname()[1]
        data = one * count
        sent = [0]

        def send():
            try:
                s.sendall(data)
                sent[0] = len(data)
            except OSError:
                pass

        sender = threading.Thread(target=send)
        sender.start()
        try:
            self.wait_pending(1 + 2)  # the held response line, the parked request's two

            def stopped():
                q = rx_queue(self.server.port, client_port)
                return q is not None and q > 0

            # the server's end holds unread bytes: kmsd stopped reading (it would otherwise
            # have taken the whole MiB into memory while parked)
            wait_for(stopped, 30, lambda: "kmsd to stop reading the parked connection")
            self.unhook("hold")
            f = s.makefile("rb")
            answers = [read_response(f) for _ in range(count)]
            f.close()
            sender.join(60)
            self.assertEqual(sent[0], len(data))
        finally:
            s.close()
            sender.join(60)
        for t in first:
            t.join()
        self.assertEqual(first_res[0][1], 200, first_res)
        for status, body in answers[:1] + answers[-1:]:
            self.assertEqual(status, 200, body[:300])
            self.assertEqual(self.decrypt(name, json.loads(body)["data"]["ciphertext"]), plain)
        self.assertEqual([a[0] for a in answers], [200] * count)
        self.wait_drained()
        self.verify()


class BrokenSyncTest(HookedServer):

    def reopen(self):
        """logrotate's way: rename, SIGHUP; the chain goes on in the new file. Returns the
        old file's new name."""
        old = "%s.%s" % (self.log, self.uniq("rotated"))
        os.rename(self.log, old)
        self.server.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: os.path.exists(self.log), 10, lambda: "the reopened audit file")
        return old

    def test_a_reopen_during_the_failing_fsync_keeps_the_new_file_usable(self):
        """The operator renamed the file and sent SIGHUP while the fsync that then fails was
        still running: the old file lost what it lost, the new one did not, so the device
        goes on with it."""
        name, _ = self.create_key()
        self.wait_drained()
        mark = len(self.server.log_text())  # the class's other tests break it on purpose
        self.hook("hold")
        self.hook("syncfail")
        ts, results = self.send_all([("POST", "transit/encrypt/" + name,
                                      {"plaintext": b64("in the failing group")})])
        self.wait_held()
        old = self.reopen()
        self.unhook("hold")
        for t in ts:
            t.join(30)
        self.assertEqual(results[0][1], 500, results)
        self.unhook("syncfail")
        self.encrypt(name, b"on the new file")
        self.assertNotIn("unusable until it is reopened", self.server.log_text()[mark:])
        self.wait_drained()
        self.verify(old, self.log)

    def test_a_read_that_creates_the_wrapping_key_waits_for_its_durable_request_line(self):
        """GET transit/wrapping_key makes the key on the first read: a change, so its request
        line is durable before the handler runs (a failed fsync: the handler never ran, no
        response line was written)."""
        mount = self.uniq("wk")
        r = self.req("POST", "sys/mounts/" + mount, {"type": "transit"})
        self.assertIn(r.status, (200, 204), r.describe())
        self.wait_drained()
        self.hook("syncfail")
        r = self.req("GET", mount + "/wrapping_key")
        self.assertEqual(r.status, 500, r.describe())
        self.unhook("syncfail")
        self.wait_drained()
        mine = [l["type"] for l in self.lines() if l["request"]["path"] == mount + "/wrapping_key"]
        self.assertEqual(mine, ["request"])
        old = self.reopen()
        r = self.req("GET", mount + "/wrapping_key")
        self.assertEqual(r.status, 200, r.describe())
        self.assertIn("BEGIN PUBLIC KEY", r.json["data"]["public_key"])
        self.wait_drained()
        self.verify(old, self.log)

    def test_a_failed_fsync_breaks_the_device_until_it_is_reopened(self):
        name, _ = self.create_key()
        self.hook("syncfail")
        r = self.req("POST", "transit/encrypt/" + name, {"plaintext": b64("lost")})
        self.assertEqual(r.status, 500, r.describe())
        self.assertEqual(r.json, {"errors": ["internal error"]})
        self.server.wait_log("unusable until it is reopened")
        self.unhook("syncfail")
        # the disk works again, but lines written before the failed fsync may not be on it:
        # nothing more is acknowledged on this file, a create never runs
        fresh = self.uniq("after-eio")
        r = self.req("POST", "transit/keys/" + fresh, {})
        self.assertEqual(r.status, 500, r.describe())
        r = self.req("POST", "transit/encrypt/" + name, {"plaintext": b64("still")})
        self.assertEqual(r.status, 500, r.describe())
        self.assertEqual(self.req("GET", "sys/health", token=None).status, 200)
        self.wait_drained()
        with open(self.log) as f:
            self.assertNotIn(fresh, f.read())
        old = self.reopen()
        self.encrypt(name, b"after the reopen")
        r = self.req("GET", "transit/keys/" + fresh)
        self.assertEqual(r.status, 404, r.describe())  # the create never ran
        r = self.req("POST", "transit/keys/" + fresh, {})
        self.assertEqual(r.status, 200, r.describe())
        self.wait_drained()
        self.assertGreaterEqual(len(self.lines()), 4)
        self.verify(old, self.log)


class HungDeviceTest(HookedServer):
    """Two devices; "second" takes its hooks from hooks/second, "file" from hooks/file."""
    # "file" really fsyncs, and a request that goes on without "second" needs "file" to have
    # its lines before audit_timeout: 3 s leaves a loaded disk's slow fsync room
    extra_config = {"audit_timeout": 3}

    @classmethod
    def more_config(cls, cfg):
        cls.second = os.path.join(cls.workdir, "second.log")
        cfg["audit_devices"] = [{"name": "second", "path": cls.second, "fsync": "batch"}]
        for dev in ("second", "file"):
            os.mkdir(os.path.join(cls.hooks, dev))

    def dev_hook(self, dev, name, on):
        path = os.path.join(self.hooks, dev, name)
        if on:
            open(path, "w").close()
        elif os.path.exists(path):
            os.unlink(path)

    def tearDown(self):
        for dev in ("second", "file"):
            for name in ("hold", "fail"):
                self.dev_hook(dev, name, False)

    def test_a_hung_device_delays_what_another_recorded_and_fails_nothing_else(self):
        name, _ = self.create_key()
        self.wait_drained()
        self.dev_hook("second", "hold", True)
        t0 = time.monotonic()
        r = self.req("POST", "transit/encrypt/" + name, {"plaintext": b64("one device")})
        self.assertEqual(r.status, 200, r.describe())  # "file" has both lines
        self.assertGreaterEqual(time.monotonic() - t0, 2.9)  # it waited audit_timeout
        wait_for(lambda: os.path.exists(os.path.join(self.hooks, "second", "held")), 30,
                 lambda: "the second device's writer to reach the held fsync")
        # a change: its request line and its response line each wait audit_timeout
        fresh = self.uniq("while-hung")
        r = self.req("POST", "transit/keys/" + fresh, {})
        self.assertEqual(r.status, 200, r.describe())
        self.assertEqual(self.req("GET", "transit/keys/" + fresh).status, 200)
        # neither device records: 500, and the create that waits for its request line never
        # runs
        self.dev_hook("file", "fail", True)
        lost = self.uniq("nowhere")
        r = self.req("POST", "transit/keys/" + lost, {})
        self.assertEqual(r.status, 500, r.describe())
        self.dev_hook("file", "fail", False)
        self.assertEqual(self.req("GET", "transit/keys/" + lost).status, 404)
        main = self.lines()
        ids = [l["request"]["id"] for l in main]
        for l in main:
            self.assertEqual(ids.count(l["request"]["id"]), 2, l)  # request and response
        # the hung device comes back and writes every line it was given
        self.dev_hook("second", "hold", False)
        self.wait_drained()
        second = read_lines(self.second)
        by_id = {}
        for l in second:
            by_id.setdefault(l["request"]["id"], []).append(l["type"])
        for l in main:
            self.assertIn(l["request"]["id"], by_id)
        self.verify(self.log)
        self.verify(self.second)


class StopWhileHeldTest(HookedServer):

    def test_sigterm_with_the_writer_stuck_in_its_fsync(self):
        """A writer that never comes back from its fsync (a frozen file system) does not hang
        the shutdown: kmsd waits for it for 10 s, logs that it stops without it, exits 0."""
        name, _ = self.create_key()
        self.hook("hold")
        ts, results = self.send_all([("POST", "transit/encrypt/" + name,
                                      {"plaintext": b64("never answered")})])
        self.wait_held()
        t0 = time.monotonic()
        self.server.proc.send_signal(signal.SIGTERM)
        rc = self.server.wait_exit(90)
        waited = time.monotonic() - t0
        for t in ts:
            t.join(30)
        self.assertEqual(rc, 0, self.server.log_tail())
        self.assertGreaterEqual(waited, 9.5)  # the writer's 10 s
        self.assertIn("still blocked in a write or fsync", self.server.log_text())
        self.assertEqual(len(results), 1)
        self.assertNotEqual(results[0][1], 200, results)  # never acknowledged


class TimeoutTest(HookedServer):
    extra_config = {"audit_timeout": 1}

    def test_a_request_parked_past_audit_timeout_fails_closed(self):
        name, _ = self.create_key()
        self.hook("delay", "4000")
        fresh = self.uniq("late")
        t0 = time.monotonic()
        r = self.req("POST", "transit/keys/" + fresh, {})
        waited = time.monotonic() - t0
        self.assertEqual(r.status, 500, r.describe())
        self.assertEqual(r.json, {"errors": ["internal error"]})
        self.assertLess(waited, 3.5)  # the timeout (1 s), not the 4 s fsync
        r = self.req("GET", "sys/health", token=None)
        self.assertEqual(r.status, 200)
        self.unhook("delay")
        self.wait_drained()
        r = self.req("GET", "transit/keys/" + fresh)
        self.assertEqual(r.status, 404, r.describe())  # its handler never ran
        self.encrypt(name, b"after")
        self.verify()


class PluginCancelTest(HookedServer):
    """KMS plugin calls whose stream the client resets while they wait for a call thread are
    never run (HTTP/2 "rapid reset": opening and resetting streams in a loop must not make the
    plugin decrypt what nobody waits for)."""
    # the held calls must not fail at audit_timeout (10 s by default) while a slow run is
    # still queueing the calls behind them
    extra_config = {"audit_timeout": 120}

    @classmethod
    def more_config(cls, cfg):
        cls.sock = os.path.join(cls.workdir, "kms.sock")
        cfg["kms_plugins"] = [{"socket": cls.sock, "key": "plugin-k"}]

    def open_plugin(self):
        """The key, a gRPC client on the socket with its channel up, and a function sending
        one Encrypt call as a future."""
        from kms_plugin_helpers import Plugin, load_stubs, wait_socket
        pb, _ = load_stubs()
        r = self.req("POST", "transit/keys/plugin-k", {})
        self.assertIn(r.status, (200, 204), r.describe())
        wait_socket(self.sock)
        p = Plugin(self.sock)
        try:
            p.encrypt(b"warm", uid="warm")  # the channel is up, the key cached
            self.wait_drained()
        except BaseException:
            p.close()
            raise

        def call(uid):
            return p.stub.Encrypt.future(pb.EncryptRequest(plaintext=b"x", uid=uid),
                                         timeout=120)
        return p, call

    def test_calls_reset_while_queued_never_run(self):
        p, call = self.open_plugin()
        try:
            self.hook("hold")
            held = [call("held-%d" % i) for i in range(32)]
            self.wait_held()
            # the 32 call threads each run one of those (FIFO) and wait for its audit record:
            # the next 20 calls wait in the queue
            later = [call("cancelled-%d" % i) for i in range(20)]
            wait_for(lambda: self.metric("kmsd_kms_plugin_calls_queued") == 20, 30,
                     lambda: "20 calls queued behind the busy call threads (have %s)" %
                     self.metric("kmsd_kms_plugin_calls_queued"))
            for f in later:
                f.cancel()
            # a call sent after the resets on the same connection: once it is queued, the
            # server has read the resets before it
            marker = call("marker")
            wait_for(lambda: self.metric("kmsd_kms_plugin_calls_queued") == 21, 30,
                     lambda: "the marker call queued behind the reset ones")
            self.unhook("hold")
            for f in held + [marker]:
                self.assertTrue(f.result().ciphertext.startswith(b"vault:v1:"))
            for f in later:
                self.assertTrue(f.cancelled())
            wait_for(lambda: self.metric("kmsd_kms_plugin_calls_queued") == 0, 30,
                     lambda: "the queue to empty")
            self.wait_drained()
        finally:
            p.close()
        with open(self.log, "rb") as f:
            raw = f.read()
        for i in range(32):
            self.assertIn(b'"held-%d"' % i, raw)
        self.assertIn(b'"marker"', raw)
        self.assertEqual(raw.count(b'"client_uid":"cancelled-'), 0)  # not one of them ran
        r = self.req("GET", "sys/metrics?format=prometheus")
        self.assertIn('kmsd_kms_plugin_calls_total{method="Encrypt",code="CANCELLED"} 20',
                      r.body.decode())
        self.verify()

    def test_reset_calls_cannot_queue_without_end(self):
        """A reset stream leaves HTTP/2's concurrent-stream count at once, so a client can
        send and reset calls in a loop while the call threads are busy; they wait in the queue
        (to be dropped) up to 4096 calls, and a call past that is refused at once."""
        import grpc
        from kms_plugin_helpers import rpc_error
        p, call = self.open_plugin()
        try:
            def queued():
                return self.metric("kmsd_kms_plugin_calls_queued")

            self.hook("hold")
            held = [call("held-%d" % i) for i in range(32)]
            self.wait_held()
            # batches of 512 calls (HTTP/2 allows 1000 streams at once), each reset once the
            # server has them queued, until the queue is full. (The queue can hold a few
            # calls more than were sent in the batches: gRPC may retry a call by itself, so the
            # waits are for at least so many, not exactly.)
            want = 0
            for b in range(12):
                if queued() >= 4096:
                    break
                batch = [call("reset-%d-%d" % (b, i)) for i in range(512)]
                want = min(want + 512, 4096)
                wait_for(lambda: queued() >= want, 30,
                         lambda: "%d calls queued (have %s)" % (want, queued()))
                for f in batch:
                    f.cancel()
            self.assertEqual(queued(), 4096)
            code, details = rpc_error(p.encrypt, b"one too many", uid="too-many")
            self.assertEqual(code, grpc.StatusCode.RESOURCE_EXHAUSTED, details)
            self.assertIn("too many calls waiting for a call thread", details)
            self.assertEqual(queued(), 4096)
            self.unhook("hold")
            for f in held:
                self.assertTrue(f.result().ciphertext.startswith(b"vault:v1:"))
            wait_for(lambda: queued() == 0, 60, "the queue to empty")
            self.wait_drained()
            self.assertTrue(p.encrypt(b"after").ciphertext.startswith(b"vault:v1:"))
        finally:
            p.close()
        with open(self.log, "rb") as f:
            raw = f.read()
        self.assertEqual(raw.count(b'"client_uid":"reset-'), 0)
        self.assertEqual(raw.count(b'"client_uid":"too-many"'), 0)


if __name__ == "__main__":
    unittest.main()
