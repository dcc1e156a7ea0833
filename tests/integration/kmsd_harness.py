"""Test harness for the kmsd integration suite.

Starts a real kmsd on 127.0.0.1:0 (dev mode or config mode), reads back the address it
bound from its "kmsd listening" log line (so parallel test files never race for a port, and
every restart gets a fresh one), waits until /v1/sys/health answers, captures its
stdout/stderr in a temporary log that is shown when a test fails, and stops it with SIGTERM
(asserting a clean exit).  Requests go
through a raw http.client helper that can send any verb, any headers and raw bytes,
so the wire contract (reference transit-api.md) can be checked byte for byte.

Run the files with /usr/bin/python3 (Debian's hvac and cryptography live there).
KMSD_BIN selects the binary; the default is ../../build/kmsd from this folder.
"""

import base64
import collections
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
KMSD_BIN = os.environ.get("KMSD_BIN") or os.path.normpath(
    os.path.join(HERE, "..", "..", "build", "kmsd"))

ROOT_TOKEN = "kmsd-it-root-token"
START_TIMEOUT = 30.0  # a deadline, not a wait: a loaded 2-core machine under ASan can need more than 5 s
STOP_TIMEOUT = 10.0

ENVELOPE_KEYS = ["request_id", "lease_id", "renewable", "lease_duration", "data",
                 "wrap_info", "warnings", "auth"]
UUID4_RE = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

SYMMETRIC_TYPES = ["aes128-gcm96", "aes256-gcm96", "chacha20-poly1305",
                   "xchacha20-poly1305"]
NONCE_SIZE = {"aes128-gcm96": 12, "aes256-gcm96": 12, "chacha20-poly1305": 12,
              "xchacha20-poly1305": 24}
KEY_SIZE = {"aes128-gcm96": 16, "aes256-gcm96": 32, "chacha20-poly1305": 32,
            "xchacha20-poly1305": 32}
AUTH_FAILED = {"aes128-gcm96": "cipher: message authentication failed",
               "aes256-gcm96": "cipher: message authentication failed",
               "chacha20-poly1305": "chacha20poly1305: message authentication failed",
               "xchacha20-poly1305": "chacha20poly1305: message authentication failed"}

MSG_MISSING_CONTEXT = (
    "missing 'context' for key derivation; the key was created using a derived key, "
    "which means additional, per-request information must be included in order to "
    "perform operations with the key")
MSG_TOO_OLD = "ciphertext or signature version is disallowed by policy (too old)"


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


def unb64(text):
    return base64.b64decode(text, validate=True)


def multierror(msg):
    """The 500-wrapped / routed error layout of reference §1.5."""
    return "1 error occurred:\n\t* %s\n\n" % msg


def rx_queue(local_port, remote_port):
    """Bytes waiting in the kernel receive queue of the loopback socket local->remote."""
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if (int(local.split(":")[1], 16) == local_port and
                    int(remote.split(":")[1], 16) == remote_port):
                return int(fields[4].split(":")[1], 16)
    return None


def request_in_thread(server, method, path, body):
    """server.request on a thread of its own: (the thread, a dict that gets "r", the answer, or
    "e", the exception, once it ends). For a request a test holds while it checks others."""
    out = {}

    def go():
        try:
            out["r"] = server.request(method, path, body, timeout=120)
        except Exception as e:  # judged by the test
            out["e"] = e
    t = threading.Thread(target=go)
    t.start()
    return t, out


def wait_for(predicate, timeout, what, interval=0.05):
    """Poll predicate() until it returns a true value and return that value; fail with
    `what` (a string, or a callable giving one) when `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (
                timeout, what() if callable(what) else what))
        time.sleep(interval)


class ClosedPort:
    """A loopback port where nothing listens, for as long as the context lasts: the socket is
    bound (so no other process can take the port) but never listens, so connecting to it is
    refused at once."""

    def __enter__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        return self

    def __exit__(self, *exc):
        self.sock.close()
        return False


def listening_address(log_text):
    """The host:port of the "kmsd listening" JSON log line, or None before it is written."""
    for line in log_text.splitlines():
        line = line.strip()
        if not line.startswith("{") or "kmsd listening" not in line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line still being written
        if rec.get("msg") == "kmsd listening" and rec.get("address"):
            return rec["address"]
    return None


class Response:
    """One HTTP exchange: status, headers, raw body, parsed JSON (or None)."""

    def __init__(self, method, path, req_headers, req_body, status, reason, headers, body):
        self.method = method
        self.path = path
        self.req_headers = req_headers
        self.req_body = req_body
        self.status = status
        self.reason = reason
        self.headers = headers          # list of (name, value) as received
        self.body = body                # bytes
        self.json = None
        self.ordered_keys = None        # top-level key order of a JSON object body
        if body:
            try:
                pairs = json.loads(body.decode("utf-8"),
                                   object_pairs_hook=collections.OrderedDict)
                self.json = pairs
                if isinstance(pairs, dict):
                    self.ordered_keys = list(pairs.keys())
            except (ValueError, UnicodeDecodeError):
                self.json = None

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    @property
    def data(self):
        if isinstance(self.json, dict):
            return self.json.get("data")
        return None

    @property
    def errors(self):
        if isinstance(self.json, dict):
            return self.json.get("errors")
        return None

    @property
    def warnings(self):
        if isinstance(self.json, dict):
            return self.json.get("warnings")
        return None

    def describe(self, limit=1500):
        req_body = self.req_body
        if isinstance(req_body, (bytes, bytearray)):
            if len(req_body) > 300:
                req_body = req_body[:300] + b"...(%d bytes)" % len(self.req_body)
            req_body = req_body.decode("utf-8", "replace")
        body = self.body[:limit].decode("utf-8", "replace")
        if len(self.body) > limit:
            body += "...(%d bytes)" % len(self.body)
        hdrs = ", ".join("%s: %s" % kv for kv in self.req_headers.items()
                         if kv[0].lower() != "x-vault-token")
        return "%s %s [%s] body=%r\n  -> %s %s %r" % (
            self.method, self.path, hdrs, req_body, self.status, self.reason, body)

    def __repr__(self):
        return "<Response %s>" % self.describe(300)


def raw_exchange(port, raw, timeout=30, half_close=False):
    """Send raw bytes to 127.0.0.1:port on a fresh connection; every byte until the server
    closes it. half_close: shut the sending side after them (as `nc -N` or a pipe does)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk


def raw_request(host, port, method, path, body=None, headers=None, timeout=60):
    """Send one request on a fresh connection and return a Response.

    body: None, bytes, str, or any JSON-serialisable object (encoded as JSON).
    The method is sent verbatim (LIST, PATCH, FOO all work).  If the server stops
    reading the body early (413) the response is still read.
    """
    headers = dict(headers or {})
    if body is not None and not isinstance(body, (bytes, bytearray, str)):
        body = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    elif isinstance(body, str):
        body = body.encode()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        try:
            conn.request(method, path, body=body, headers=headers)
        except (BrokenPipeError, ConnectionResetError):
            pass  # server answered (e.g. 413) and closed before reading everything
        resp = conn.getresponse()
        data = resp.read()
        return Response(method, path, headers, body, resp.status, resp.reason,
                        resp.getheaders(), data)
    finally:
        conn.close()


_DEFAULT = object()


class KmsdServer:
    """A kmsd process on a loopback port the kernel picks (127.0.0.1:0); `port` is read back
    from the process after every start.

    mode "dev":    kmsd server -dev -dev-listen-address=... -dev-root-token-id=...
    mode "config": kmsd server -config=FILE; `config` is merged into the JSON config,
                   storage_path and seal_key_file default to files in workdir.
    """

    def __init__(self, mode="dev", config=None, workdir=None, seal_key=None,
                 root_token=ROOT_TOKEN, extra_args=None):
        self.mode = mode
        self.root_token = root_token
        self.extra_args = list(extra_args or [])
        self.own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="kmsd-it-")
        self.config = dict(config or {})
        self.seal_key = seal_key
        self.proc = None
        self.port = None
        self.log_path = None
        self.log_file = None
        self.start_count = 0
        self.token = root_token  # default token sent by request()

    # ---- process control -------------------------------------------------
    def _argv(self):
        if self.mode == "dev":
            return [KMSD_BIN, "server", "-dev",
                    "-dev-listen-address=127.0.0.1:0",
                    "-dev-root-token-id=%s" % self.root_token] + self.extra_args
        cfg = {
            "listen_address": "127.0.0.1:0",
            "storage_path": os.path.join(self.workdir, "store"),
            "seal_key_file": os.path.join(self.workdir, "seal.key"),
        }
        cfg.update(self.config)
        if not os.path.exists(cfg["storage_path"]):
            os.makedirs(cfg["storage_path"], mode=0o700)
        if self.seal_key is not None:
            write_seal_key(cfg["seal_key_file"], self.seal_key)
            self.seal_key = None  # written once; tests may tamper with the file later
        elif not os.path.exists(cfg["seal_key_file"]):
            write_seal_key(cfg["seal_key_file"], os.urandom(32))
        path = os.path.join(self.workdir, "kmsd.json")
        with open(path, "w") as f:
            json.dump(cfg, f, indent=2)
        self.config_path = path
        self.effective_config = cfg
        return [KMSD_BIN, "server", "-config=%s" % path] + self.extra_args

    def spawn(self):
        """Start the process without waiting for it to answer."""
        if not os.access(KMSD_BIN, os.X_OK):
            # a missing server is a failure, never a silent skip
            raise AssertionError("kmsd binary not found or not executable: %s "
                                 "(build it, or set KMSD_BIN)" % KMSD_BIN)
        self.port = None  # known once the new process reports the address it bound
        self.start_count += 1
        self.log_path = os.path.join(self.workdir, "kmsd-%d.log" % self.start_count)
        self.log_file = open(self.log_path, "wb")
        argv = self._argv()
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log_file,
                                     stderr=subprocess.STDOUT, cwd=self.workdir,
                                     start_new_session=True)
        return self.proc

    def start(self):
        self.spawn()
        deadline = time.monotonic() + START_TIMEOUT
        last_err = None
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError("kmsd exited during start-up with %d\n%s\n%s" % (
                    rc, " ".join(self.argv), self.log_tail()))
            if self.port is None:
                addr = listening_address(self.log_text())
                if addr is None:
                    time.sleep(0.02)
                    continue
                host, _, port = addr.rpartition(":")
                if host != "127.0.0.1" or not port.isdigit() or int(port) == 0:
                    self.kill()
                    raise AssertionError("kmsd reported listening on %r, not on a loopback "
                                         "port\n%s" % (addr, self.log_tail()))
                self.port = int(port)
            try:
                r = raw_request("127.0.0.1", self.port, "GET", "/v1/sys/health", timeout=2)
                if r.status:
                    return self
            except OSError as e:
                last_err = e
            time.sleep(0.05)
        self.kill()
        if self.port is None:
            raise AssertionError("kmsd did not log \"kmsd listening\" with its address within "
                                 "%.0fs\n%s" % (START_TIMEOUT, self.log_tail()))
        raise AssertionError("kmsd did not answer /v1/sys/health within %.0fs (%s)\n%s" % (
            START_TIMEOUT, last_err, self.log_tail()))

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        """SIGTERM and wait; returns the exit code (None if it had to be killed)."""
        if self.proc is None:
            return None
        rc = self.proc.poll()
        if rc is None:
            self.proc.send_signal(signal.SIGTERM)
            rc = self.wait_exit(STOP_TIMEOUT)
            if rc is None:
                self.proc.kill()
                self.proc.wait()
        self._close_log()
        return rc

    def stop_and_check(self, testcase=None):
        rc = self.stop()
        if rc != 0:
            msg = "kmsd did not exit cleanly on SIGTERM (rc=%r)\n%s" % (rc, self.log_tail())
            if testcase is not None:
                testcase.fail(msg)
            raise AssertionError(msg)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._close_log()

    def _close_log(self):
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None

    def cleanup(self):
        self.kill()
        # a dev server killed (not stopped) cannot remove its ephemeral store: the test does,
        # for every start of this server (each has its own log)
        for n in range(1, self.start_count + 1):
            log = os.path.join(self.workdir, "kmsd-%d.log" % n)
            try:
                with open(log, errors="replace") as f:
                    text = f.read()
            except OSError:
                continue
            for m in re.finditer(r"The store is ephemeral \((/[^)]*/kmsd-dev-[A-Za-z0-9]+)\)",
                                 text):
                shutil.rmtree(m.group(1), ignore_errors=True)
        if self.own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_text(self):
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        if self.log_file is not None:
            self.log_file.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def log_tail(self, lines=60):
        text = self.log_text().splitlines()
        return "---- kmsd log %s (last %d lines) ----\n%s\n---- end of log ----" % (
            self.log_path, lines, "\n".join(text[-lines:]))

    @property
    def addr(self):
        if self.port is None:
            raise AssertionError("kmsd has no address yet (not started, or still starting)")
        return "http://127.0.0.1:%d" % self.port

    def wait_log(self, text, count=1, timeout=10):
        """Wait until `text` occurs at least `count` times in this run's log; fails on timeout."""
        return wait_for(lambda: self.log_text().count(text) >= count, timeout,
                        lambda: "%d x %r in the kmsd log\n%s" % (count, text, self.log_tail()))

    # ---- requests ----------------------------------------------------------
    def request(self, method, path, body=None, token=_DEFAULT, namespace=None,
                headers=None, timeout=60):
        """path: absolute ("/v1/...") or relative to /v1/.  token=None sends none."""
        if not path.startswith("/"):
            path = "/v1/" + path
        hdrs = {}
        if token is _DEFAULT:
            token = self.token
        if token is not None:
            hdrs["X-Vault-Token"] = token
        if namespace is not None:
            hdrs["X-Vault-Namespace"] = namespace
        hdrs.update(headers or {})
        port = self.port
        if port is None:
            # between a restart's spawn and its "kmsd listening" line there is no address
            raise ConnectionRefusedError("kmsd is not listening yet")
        return raw_request("127.0.0.1", port, method, path, body, hdrs, timeout)


def write_seal_key(path, key, mode=0o600):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(key if isinstance(key, bytes) else key.encode())
    os.chmod(path, mode)


class KmsdTestCase(unittest.TestCase):
    """Base class: one server per test class (dev mode unless overridden)."""

    server_mode = "dev"
    server_config = None
    # True: the server writes an audit file, cls.audit, in its work directory
    server_audit_file = False
    server = None
    _seq = 0

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.server = KmsdServer(mode=cls.server_mode, config=cls.server_config)
        if cls.server_audit_file:
            cls.audit = os.path.join(cls.server.workdir, "audit.log")
            cls.server.extra_args.append("-audit-file=" + cls.audit)
        try:
            cls.server.start()
            if cls.server_mode == "config":
                cls.init_config_server(cls.server)
        except BaseException:
            cls.server.cleanup()
            raise

    @classmethod
    def init_config_server(cls, server):
        r = server.request("PUT", "sys/init", {}, token=None)
        if r.status != 200:
            raise AssertionError("sys/init failed: " + r.describe())
        server.token = r.json["root_token"]
        r = server.request("GET", "sys/mounts")
        mounts = (r.json or {}).get("data") or r.json or {}
        if "transit/" not in mounts:
            r = server.request("POST", "sys/mounts/transit", {"type": "transit"})
            if r.status != 204:
                raise AssertionError("mounting transit/ failed: " + r.describe())

    @classmethod
    def tearDownClass(cls):
        srv = cls.server
        cls.server = None
        if srv is not None:
            try:
                rc = srv.stop()
                if rc != 0:
                    raise AssertionError("kmsd did not exit cleanly on SIGTERM (rc=%r)\n%s"
                                         % (rc, srv.log_tail()))
            finally:
                srv.cleanup()
        super().tearDownClass()

    def run(self, result=None):
        before = (len(result.failures) + len(result.errors)) if result is not None else 0
        out = super().run(result)
        if result is not None and len(result.failures) + len(result.errors) > before:
            srv = type(self).server
            if srv is not None:
                sys.stderr.write("\n%s\n" % srv.log_tail(40))
        return out

    # ---- helpers -----------------------------------------------------------
    @classmethod
    def uniq(cls, prefix="k"):
        KmsdTestCase._seq += 1
        return "%s-%d-%s" % (prefix, KmsdTestCase._seq, uuid.uuid4().hex[:6])

    def req(self, method, path, body=None, **kw):
        return self.server.request(method, path, body, **kw)

    def assertStatus(self, resp, status, msg=None):
        if resp.status != status:
            self.fail("expected HTTP %d, got %d%s\n%s" % (
                status, resp.status, (" (" + msg + ")") if msg else "", resp.describe()))

    def assertOK(self, resp):
        self.assertStatus(resp, 200)
        return resp.data

    def assertError(self, resp, status, message):
        """Error body {"errors":[message]} with the given status (reference §1.5)."""
        self.assertStatus(resp, status)
        if resp.json is None or list(resp.json.keys()) != ["errors"]:
            self.fail("expected an error body {\"errors\":[...]}\n%s" % resp.describe())
        if resp.errors != [message]:
            self.fail("expected errors %r, got %r\n%s" % ([message], resp.errors,
                                                          resp.describe()))

    def assertWarnings(self, resp, warnings):
        if resp.warnings != warnings:
            self.fail("expected warnings %r, got %r\n%s" % (warnings, resp.warnings,
                                                            resp.describe()))

    # transit shortcuts (mount defaults to transit)
    def create_key(self, name=None, mount="transit", namespace=None, **params):
        name = name or self.uniq()
        r = self.req("POST", "%s/keys/%s" % (mount, name), params, namespace=namespace)
        self.assertStatus(r, 200)
        return name, r.data

    def read_key(self, name, mount="transit", namespace=None):
        r = self.req("GET", "%s/keys/%s" % (mount, name), namespace=namespace)
        self.assertStatus(r, 200)
        return r.data

    def rotate(self, name, mount="transit", times=1):
        data = None
        for _ in range(times):
            r = self.req("POST", "%s/keys/%s/rotate" % (mount, name))
            self.assertStatus(r, 200)
            data = r.data
        return data

    def configure(self, name, mount="transit", **params):
        r = self.req("POST", "%s/keys/%s/config" % (mount, name), params)
        self.assertStatus(r, 200)
        return r.data

    def encrypt(self, name, plaintext=b"hello", mount="transit", namespace=None, **params):
        body = {"plaintext": b64(plaintext)}
        body.update(params)
        r = self.req("POST", "%s/encrypt/%s" % (mount, name), body, namespace=namespace)
        self.assertStatus(r, 200)
        return r.data["ciphertext"]

    def decrypt(self, name, ciphertext, mount="transit", namespace=None, **params):
        body = {"ciphertext": ciphertext}
        body.update(params)
        r = self.req("POST", "%s/decrypt/%s" % (mount, name), body, namespace=namespace)
        self.assertStatus(r, 200)
        return unb64(r.data["plaintext"])

    def decrypt_resp(self, name, ciphertext, mount="transit", **params):
        body = {"ciphertext": ciphertext}
        body.update(params)
        return self.req("POST", "%s/decrypt/%s" % (mount, name), body)


class HookedServerCase(KmsdTestCase):
    """One config-mode server per class, from a KMS_TEST_HOOKS build, started with the
    environment variable `hook_env` naming a fresh directory, cls.hooks, where the test puts
    the files that hold or fail a step (`hook_files`, removed after each test and at the end).
    Subclasses give `server_config` (merged over one worker, no rate limit), `audit_log`
    (True: an audit file, cls.log, in the work directory) and may change the configuration in
    more_config(cfg)."""

    hook_env = None
    hook_files = ("hold", "held")
    workdir_prefix = "kmsd-hooks-"
    audit_log = False

    @classmethod
    def setUpClass(cls):
        unittest.TestCase.setUpClass()
        cls.workdir = tempfile.mkdtemp(prefix=cls.workdir_prefix)
        cls.hooks = os.path.join(cls.workdir, "hooks")
        os.mkdir(cls.hooks)
        cfg = {"workers": 1, "rate_limit": 0}
        if cls.audit_log:
            cls.log = os.path.join(cls.workdir, "audit.log")
            cfg["audit_file"] = cls.log
        cfg.update(cls.server_config or {})
        cls.more_config(cfg)
        os.environ[cls.hook_env] = cls.hooks
        try:
            cls.server = KmsdServer(mode="config", config=cfg, workdir=cls.workdir)
            try:
                cls.server.start()
                cls.init_config_server(cls.server)
            except BaseException:
                cls.server.cleanup()
                shutil.rmtree(cls.workdir, ignore_errors=True)
                raise
        finally:
            del os.environ[cls.hook_env]

    @classmethod
    def more_config(cls, cfg):
        pass

    @classmethod
    def unhook_all(cls):
        for f in cls.hook_files:
            try:
                os.unlink(os.path.join(cls.hooks, f))
            except FileNotFoundError:
                pass

    @classmethod
    def tearDownClass(cls):
        cls.unhook_all()
        try:
            super().tearDownClass()
        finally:
            shutil.rmtree(cls.workdir, ignore_errors=True)

    def tearDown(self):
        self.unhook_all()


def ct_version(ciphertext):
    m = re.match(r"^vault:v(\d+):", ciphertext)
    return int(m.group(1)) if m else None


def ct_payload(ciphertext):
    return unb64(ciphertext.split(":", 2)[2])
