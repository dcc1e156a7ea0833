"""The audit log against a real kmsd (issue 4; reference auth-audit.md §6 and §8 cases 26-30;
docs/audit.md): two lines per request sharing request.id (also the response's request_id),
the product doc's five operations with subject/key/op/key_version, nothing secret in clear
(with sys/audit-hash reproducing a logged hash), the hash chain under concurrent load, across
SIGHUP rotation, and against every kind of tampering (kmsctl and kmsd audit verify), fail-closed
behaviour on a full file system (RLIMIT_FSIZE set on the running server with prlimit), the
sys/audit endpoints, `kmsctl audit list` on files and over the API, config-file devices, and
one writer per file (a second server on a file another holds refuses to start).
"""

import json
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

from kmsd_harness import (KMSD_BIN, KmsdServer, KmsdTestCase, b64, multierror, raw_exchange,
                          wait_for)

KMSCTL_BIN = os.path.join(os.path.dirname(KMSD_BIN), "kmsctl")


def read_lines(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data == b"" or data.endswith(b"\n"), "log does not end with a newline"
    return [json.loads(line) for line in data.decode().splitlines()]


def run(argv, env=None, timeout=30):
    e = dict(os.environ)
    for k in ("KMS_ADDR", "VAULT_ADDR", "KMS_TOKEN", "VAULT_TOKEN", "KMS_AUDIT_FILE",
              "VAULT_NAMESPACE", "KMS_NAMESPACE"):
        e.pop(k, None)
    e.update(env or {})
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=e)


class AuditTestCase(KmsdTestCase):
    """A dev server writing its audit log into the test's workdir."""

    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix="kmsd-audit-")
        cls.logdir = os.path.join(cls.workdir, "audit")
        os.mkdir(cls.logdir)
        cls.log = os.path.join(cls.logdir, "audit.log")
        cls.server = KmsdServer(mode="dev", workdir=cls.workdir,
                                extra_args=["-audit-file=" + cls.log])
        try:
            cls.server.start()
        except BaseException:
            cls.server.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            shutil.rmtree(cls.workdir, ignore_errors=True)

    def lines(self):
        return read_lines(self.log)

    def wait_lines(self, path, n, timeout=15):
        """Wait until the file at path exists and holds at least n complete lines."""
        def count():
            try:
                with open(path, "rb") as f:
                    return f.read().count(b"\n") >= n
            except FileNotFoundError:
                return False
        wait_for(count, timeout, lambda: "%d audit lines in %s\n%s" % (
            n, path, self.server.log_tail()))

    def text(self):
        with open(self.log) as f:
            return f.read()

    def lines_for(self, request_id):
        return [l for l in self.lines() if l["request"]["id"] == request_id]

    def pair(self, r):
        """The request and response lines of the exchange r (found by its request_id)."""
        rid = r.json["request_id"] if r.json and "request_id" in r.json else None
        self.assertIsNotNone(rid, r.describe())
        got = self.lines_for(rid)
        self.assertEqual([l["type"] for l in got], ["request", "response"], got)
        return got

    def last_pair(self):
        ls = self.lines()
        self.assertEqual([ls[-2]["type"], ls[-1]["type"]], ["request", "response"])
        self.assertEqual(ls[-2]["request"]["id"], ls[-1]["request"]["id"])
        return ls[-2], ls[-1]

    def verify(self, *paths, tool=KMSCTL_BIN):
        argv = [tool, "audit", "verify"] + list(paths)
        return run(argv)


class CoverageTest(AuditTestCase):

    def test_request_id_shared_with_response_envelope(self):
        name, _ = self.create_key()
        r = self.req("POST", "transit/encrypt/" + name, {"plaintext": b64("x")})
        self.assertStatus(r, 200)
        req, resp = self.pair(r)
        self.assertEqual(req["request"]["operation"], "update")
        self.assertEqual(req["request"]["path"], "transit/encrypt/" + name)
        self.assertEqual(req["request"]["namespace"], {"id": "root"})
        self.assertEqual(req["request"]["mount_type"], "transit")
        self.assertEqual(req["request"]["remote_address"], "127.0.0.1")
        self.assertIsInstance(req["request"]["remote_port"], int)
        self.assertTrue(req["auth"]["policy_results"]["allowed"])
        self.assertEqual(resp["status"], 200)
        self.assertNotIn("error", resp)

    def test_refusals_and_failures_get_both_lines(self):
        name, _ = self.create_key()
        # bad token: 403, both lines carry the error and allowed=false
        r = self.req("POST", "transit/encrypt/" + name, {"plaintext": b64("x")},
                     token="not-a-token")
        self.assertStatus(r, 403)
        req, resp = self.last_pair()
        for l in (req, resp):
            self.assertEqual(l["error"], "permission denied")
            self.assertFalse(l["auth"]["policy_results"]["allowed"])
            self.assertEqual(l["auth"]["token_type"], "default")
            self.assertEqual(l["op"], "encrypt")
            self.assertEqual(l["key"], name)
        self.assertEqual(resp["status"], 403)
        # no token at all
        r = self.req("GET", "transit/keys/" + name, token=None)
        self.assertStatus(r, 403)
        req, resp = self.last_pair()
        self.assertFalse(resp["auth"]["policy_results"]["allowed"])
        self.assertNotIn("client_token", req["request"])
        # 404 for a path nothing serves (root token): allowed, but an error
        r = self.req("GET", "transit/nothing/here")
        self.assertStatus(r, 404)
        req, resp = self.last_pair()
        self.assertTrue(resp["auth"]["policy_results"]["allowed"])
        self.assertEqual(resp["error"], multierror("unsupported path"))
        self.assertEqual(resp["status"], 404)
        self.assertNotIn("error", req)
        # a handler error (decrypt with a bad ciphertext)
        r = self.req("POST", "transit/decrypt/" + name, {"ciphertext": "vault:v1:AAAA"})
        self.assertEqual(r.status, 400)
        req, resp = self.last_pair()
        self.assertIn("error", resp)
        self.assertEqual(resp["status"], 400)

    def test_acl_denial(self):
        name, _ = self.create_key()
        policy = 'path "transit/encrypt/%s" { capabilities = ["update"] }' % name
        r = self.req("PUT", "sys/policies/acl/audit-enc", {"policy": policy})
        self.assertIn(r.status, (200, 204), "writing the ACL policy was refused")
        r = self.req("POST", "auth/token/create", {"policies": ["audit-enc"],
                                                   "display_name": "enc-only"})
        self.assertStatus(r, 200, "token create was refused")
        tok = r.json["auth"]["client_token"]
        accessor = r.json["auth"]["accessor"]
        _, resp = self.last_pair()
        self.assertNotIn(tok, json.dumps(resp))
        self.assertTrue(resp["response"]["auth"]["client_token"].startswith("hmac-sha256:"))
        r = self.req("POST", "transit/encrypt/" + name, {"plaintext": b64("ok")}, token=tok)
        self.assertStatus(r, 200)
        r = self.req("POST", "transit/decrypt/" + name, {"ciphertext": "vault:v1:AAAA"},
                     token=tok)
        self.assertStatus(r, 403)
        req, resp = self.last_pair()
        for l in (req, resp):
            self.assertEqual(l["error"], multierror("permission denied"))
            self.assertFalse(l["auth"]["policy_results"]["allowed"])
            self.assertEqual(l["op"], "decrypt")
            self.assertIn("audit-enc", l["auth"]["policies"])
        text = self.text()
        self.assertNotIn(tok, text)
        self.assertNotIn(accessor, text)

    def test_logins(self):
        """A login (allowed, failed) gets both lines; only the response line of a failed one
        carries the error; the JWT and the issued token never appear in clear."""
        import jwt as pyjwt  # python3-jwt; missing is a failure, not a skip
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        mount = self.uniq("jwt")
        r = self.req("POST", "sys/auth/" + mount, {"type": "jwt"})
        self.assertIn(r.status, (200, 204), "enabling jwt auth was refused: " + r.describe())
        key = ec.generate_private_key(ec.SECP256R1())
        pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        r = self.req("POST", "auth/%s/config" % mount,
                     {"jwt_validation_pubkeys": [pub.decode()]})
        self.assertIn(r.status, (200, 204), r.describe())
        r = self.req("POST", "auth/%s/role/app" % mount,
                     {"role_type": "jwt", "user_claim": "sub", "bound_audiences": ["kmsd"],
                      "token_policies": ["default"]})
        self.assertIn(r.status, (200, 204), r.describe())
        now = int(time.time())
        good = pyjwt.encode({"sub": "alice@example.com", "aud": "kmsd", "iat": now,
                             "exp": now + 300}, key, algorithm="ES256")
        r = self.req("POST", "auth/%s/login" % mount, {"role": "app", "jwt": good}, token=None)
        self.assertStatus(r, 200)
        token = r.json["auth"]["client_token"]
        req, resp = self.pair(r)
        for l in (req, resp):
            self.assertEqual(l["op"], "login")
            self.assertEqual(l["resource"], "Login")
            self.assertTrue(l["request"]["data"]["jwt"].startswith("hmac-sha256:"))
            self.assertNotIn("error", l)
        self.assertTrue(resp["response"]["auth"]["client_token"].startswith("hmac-sha256:"))
        # the response line names who logged in (the request line is written before the JWT
        # is verified: nobody is known yet)
        self.assertEqual(resp["subject"], "alice@example.com", resp)
        self.assertNotIn("subject", req)
        # the token's later use names who logged in
        r = self.req("GET", "auth/token/lookup-self", token=token)
        self.assertStatus(r, 200)
        _, use = self.pair(r)
        self.assertIn("alice@example.com", use["subject"])
        bad = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
        r = self.req("POST", "auth/%s/login" % mount, {"role": "app", "jwt": bad}, token=None)
        self.assertIn(r.status, (400, 403), r.describe())
        req, resp = self.pair(r) if "request_id" in (r.json or {}) else self.last_pair()
        self.assertEqual(req["op"], "login")
        self.assertNotIn("error", req)  # the backend decides: only the response says why
        self.assertIn("error", resp)
        self.assertEqual(resp["status"], r.status)
        text = self.text()
        for secret in (good, bad, token, good.split(".")[2]):
            self.assertNotIn(secret, text)

    def test_not_audited(self):
        before = len(self.lines())
        for path in ("sys/health", "sys/seal-status", "sys/init"):
            self.req("GET", path, token=None)
        # unparsable body and unknown namespace fail before the token step: not audited
        self.req("POST", "transit/encrypt/x", b"{not json")
        self.req("GET", "transit/keys/x", namespace="no-such-ns")
        self.assertEqual(len(self.lines()), before)

    def test_keyless_transit_routes_are_mount_resources(self):
        # random and hash name no key: they are not key operations (--resource=KMSKey)
        for path in ("transit/random/16", "transit/hash"):
            r = self.req("POST", path, {"input": "aGk="} if path.endswith("hash") else {})
            self.assertStatus(r, 200)
            req, resp = self.pair(r)
            for line in (req, resp):
                self.assertEqual(line["resource"], "TransitMount", line)
                self.assertNotIn("key", line)

    def test_five_product_operations(self):
        """Product doc: encrypt, decrypt, rotate, set-min-decryption-version and delete each
        leave the calling identity, the key, the operation and the key version touched."""
        name, _ = self.create_key()
        ct = self.encrypt(name, b"one")
        _, enc = self.last_pair()
        self.decrypt(name, ct)
        _, dec = self.last_pair()
        self.rotate(name)
        _, rot = self.last_pair()
        self.configure(name, min_decryption_version=2)
        _, mdv = self.last_pair()
        self.configure(name, deletion_allowed=True)
        r = self.req("DELETE", "transit/keys/" + name)
        self.assertStatus(r, 204)
        _, dele = self.last_pair()
        expect = [(enc, "encrypt", 1), (dec, "decrypt", 1), (rot, "rotate", 2),
                  (mdv, "set-min-decryption-version", 2), (dele, "delete", [1, 2])]
        for line, op, version in expect:
            self.assertEqual(line["op"], op, line)
            self.assertEqual(line["key"], name, line)
            self.assertEqual(line["subject"], "root", line)
            self.assertEqual(line["resource"], "KMSKey", line)
            if isinstance(version, list):
                self.assertEqual(line["key_version"], version, line)
            else:
                self.assertEqual(line["key_version"], version, line)
            self.assertEqual(line["auth"]["display_name"], "root")

    def test_batch_lists_every_version(self):
        name, _ = self.create_key()
        self.rotate(name)
        body = {"batch_input": [{"plaintext": b64("a"), "key_version": 1},
                                {"plaintext": b64("b")}, {"plaintext": b64("c")}]}
        r = self.req("POST", "transit/encrypt/" + name, body)
        self.assertStatus(r, 200)
        req, resp = self.pair(r)
        self.assertEqual(resp["key_version"], [1, 2])
        self.assertEqual(resp["items"], 3)
        self.assertEqual(req["items"], 3)
        self.assertNotIn("key_version", req)
        cts = [i["ciphertext"] for i in r.data["batch_results"]]
        r = self.req("POST", "transit/decrypt/" + name,
                     {"batch_input": [{"ciphertext": c} for c in cts[1:]]})
        self.assertStatus(r, 200)
        _, resp = self.pair(r)
        self.assertEqual(resp["key_version"], [2])

    def test_rewrap_batch_numeric_reference(self):
        # rewrap reads a number given as reference as its text ("17"), which lived in the
        # batch's items and was freed before the response line was written from it (ASan:
        # heap-use-after-free in write_batch_results; release: the reference left out)
        name, _ = self.create_key()
        ct = self.encrypt(name, b"n")
        r = self.req("POST", "transit/rewrap/" + name, {"batch_input": [
            {"ciphertext": ct, "reference": 17}, {"ciphertext": ct, "reference": 2.5}]})
        self.assertStatus(r, 200)
        self.assertEqual([x["reference"] for x in r.data["batch_results"]], ["17", "2.5"])
        _, resp = self.pair(r)
        for item, text in zip(resp["response"]["data"]["batch_results"], ("17", "2.5")):
            h = self.req("POST", "sys/audit-hash/file", {"input": text})
            self.assertStatus(h, 200)
            self.assertEqual(item.get("reference"), h.data["hash"], resp)

    def test_no_secret_in_clear_and_audit_hash(self):
        name, _ = self.create_key(derived=True)
        plaintext = b64(b"the-plaintext-that-must-not-leak")
        context = b64(b"tenant-context-secret")
        r = self.req("POST", "transit/encrypt/" + name,
                     {"plaintext": plaintext, "context": context})
        self.assertStatus(r, 200)
        ct = r.data["ciphertext"]
        r = self.req("POST", "transit/decrypt/" + name, {"ciphertext": ct, "context": context})
        self.assertStatus(r, 200)
        r = self.req("POST", "transit/datakey/plaintext/" + name, {"context": context})
        self.assertStatus(r, 200)
        dk_plain, dk_ct = r.data["plaintext"], r.data["ciphertext"]
        text = self.text()
        for secret in (plaintext, context, ct, ct.split(":", 2)[2], dk_plain, dk_ct,
                       self.server.root_token):
            self.assertNotIn(secret, text)
        # sys/audit-hash reproduces the hashes the log holds
        for value in (plaintext, ct, self.server.root_token):
            r = self.req("POST", "sys/audit-hash/file", {"input": value})
            self.assertStatus(r, 200)
            self.assertEqual(r.json["hash"], r.data["hash"])
            self.assertTrue(r.data["hash"].startswith("hmac-sha256:"))
            self.assertIn(r.data["hash"], text)
        r = self.req("POST", "sys/audit-hash/file", {"input": ""})
        self.assertError(r, 400, 'the "input" parameter is empty')
        r = self.req("POST", "sys/audit-hash/nope", {"input": "x"})
        self.assertEqual(r.status, 400)
        # the audit-hash request itself: its input is hashed like any request data
        _, resp = self.last_pair()
        self.assertTrue(resp["request"]["data"]["input"].startswith("hmac-sha256:"))

    def test_devices_come_from_config_only(self):
        r = self.req("GET", "sys/audit")
        self.assertStatus(r, 200)
        self.assertEqual(r.data["file/"]["type"], "file")
        self.assertEqual(r.data["file/"]["options"]["file_path"], self.log)
        for method in ("PUT", "POST"):
            r = self.req(method, "sys/audit/other", {"type": "file",
                                                      "options": {"file_path": "/tmp/x"}})
            self.assertError(r, 400, "cannot enable audit device via API; use declarative, "
                                     "config-based audit device management instead")
        r = self.req("DELETE", "sys/audit/file")
        self.assertEqual(r.status, 400)

    def test_log_is_a_valid_chain(self):
        res = self.verify(self.log)
        self.assertEqual(res.returncode, 0, res.stderr)
        res = self.verify(self.log, tool=KMSD_BIN)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertIn("from the genesis", res.stdout)


class ConcurrencyTest(AuditTestCase):

    def test_concurrent_encrypts(self):
        name, _ = self.create_key()
        before = len(self.lines())
        threads, each = 8, 50
        ids, errors = [], []
        lock = threading.Lock()

        def worker(n):
            import http.client
            conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
            body = json.dumps({"plaintext": b64("payload-%d" % n)})
            for _ in range(each):
                conn.request("POST", "/v1/transit/encrypt/" + name, body,
                             {"X-Vault-Token": self.server.root_token})
                resp = conn.getresponse()
                data = resp.read()
                with lock:
                    if resp.status != 200:
                        errors.append(data)
                    else:
                        ids.append(json.loads(data)["request_id"])
            conn.close()

        ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(errors, [])
        lines = self.lines()[before:]  # every line parsed as JSON: none interleaved
        self.assertEqual(len(lines), 2 * threads * each)
        by_id = {}
        for l in lines:
            by_id.setdefault(l["request"]["id"], []).append(l["type"])
        self.assertEqual(set(by_id), set(ids))
        for rid, types in by_id.items():
            self.assertEqual(types, ["request", "response"], rid)
        seqs = [l["seq"] for l in self.lines()]
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)))
        res = self.verify(self.log)
        self.assertEqual(res.returncode, 0, res.stderr)

    def test_64_connections_records_equal_operations(self):
        """64 connections at once, each a mix of operations without effects (encrypt,
        decrypt, parked on their response line) and with effects (rotate, parked on their
        request line first): every operation has exactly its two lines, in one valid chain."""
        import http.client
        name, _ = self.create_key()
        before = len(self.lines())
        conns, each = 64, 6
        ids, errors = [], []
        lock = threading.Lock()
        start = threading.Barrier(conns)

        def worker(n):
            conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=60)
            hdrs = {"X-Vault-Token": self.server.root_token}
            start.wait()
            ct = None
            for i in range(each):
                if i % 3 == 2:
                    path, body = "/v1/transit/keys/%s/rotate" % name, "{}"
                elif ct is not None and i % 3 == 1:
                    path, body = "/v1/transit/decrypt/" + name, json.dumps({"ciphertext": ct})
                else:
                    path = "/v1/transit/encrypt/" + name
                    body = json.dumps({"plaintext": b64("c%d-%d" % (n, i))})
                conn.request("POST", path, body, hdrs)
                resp = conn.getresponse()
                data = resp.read()
                with lock:
                    if resp.status not in (200, 204):
                        errors.append((resp.status, data))
                        continue
                    doc = json.loads(data) if data else {}
                    if "request_id" in doc:
                        ids.append(doc["request_id"])
                    else:
                        ids.append(None)
                    if path.startswith("/v1/transit/encrypt/"):
                        ct = doc["data"]["ciphertext"]
            conn.close()

        ts = [threading.Thread(target=worker, args=(i,)) for i in range(conns)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(errors, [])
        lines = self.lines()[before:]
        self.assertEqual(len(lines), 2 * conns * each)
        by_id = {}
        for l in lines:
            by_id.setdefault(l["request"]["id"], []).append(l["type"])
        self.assertEqual(len(by_id), conns * each)
        self.assertTrue({i for i in ids if i is not None} <= set(by_id))
        for rid, types in by_id.items():
            self.assertEqual(types, ["request", "response"], rid)
        seqs = [l["seq"] for l in self.lines()]
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)))
        res = self.verify(self.log)
        self.assertEqual(res.returncode, 0, res.stderr)

    def test_sighup_rotation_under_load(self):
        name, _ = self.create_key()
        stop = threading.Event()
        count = [0]
        failures = []

        lock = threading.Lock()

        def worker():
            while not stop.is_set():
                r = self.req("POST", "transit/encrypt/" + name, {"plaintext": b64("r")})
                with lock:
                    if r.status != 200:
                        failures.append(r.describe())
                    count[0] += 1

        rotated = []
        before = len(self.lines())
        ts = [threading.Thread(target=worker) for _ in range(4)]
        for t in ts:
            t.start()
        for i in range(3):
            # each file gets requests: wait for the (re)opened log to hold some lines
            self.wait_lines(self.log, 20)
            dst = "%s.%d" % (self.log, 10 - i)  # names that do not sort in chain order
            os.rename(self.log, dst)
            rotated.append(dst)
            self.server.proc.send_signal(signal.SIGHUP)
        self.wait_lines(self.log, 20)
        stop.set()
        for t in ts:
            t.join()
        self.assertEqual(failures, [])
        total = sum(len(read_lines(p)) for p in rotated + [self.log])
        self.assertEqual(total - before, 2 * count[0])
        # the set verifies as one chain, whatever the file names; so does the directory
        res = self.verify(*(rotated + [self.log]))
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertIn("from the genesis", res.stdout)
        res = self.verify(self.logdir, tool=KMSD_BIN)
        self.assertEqual(res.returncode, 0, res.stderr)
        # kmsctl audit list --file finds the rotated copies next to the live file
        res = run([KMSCTL_BIN, "audit", "list", "--file", self.log, "--key", name,
                   "--limit", "100000", "-o", "json"])
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(len(json.loads(res.stdout)), count[0] + 1)  # + the key's creation


class TamperTest(unittest.TestCase):
    """kmsctl and kmsd audit verify on copies of a real log."""

    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix="kmsd-audit-t-")
        cls.log = os.path.join(cls.workdir, "audit.log")
        srv = KmsdServer(mode="dev", workdir=cls.workdir, extra_args=["-audit-file=" + cls.log])
        try:
            srv.start()
            for i in range(6):
                srv.request("POST", "transit/encrypt/tk", {"plaintext": b64("v%d" % i)})
            rc = srv.stop()
            assert rc == 0, srv.log_tail()
        finally:
            srv.cleanup()
        with open(cls.log, "rb") as f:
            cls.orig = f.read().splitlines(keepends=True)
        assert len(cls.orig) == 12

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.workdir, ignore_errors=True)

    def tampered(self, lines, name):
        path = os.path.join(self.workdir, name)
        with open(path, "wb") as f:
            f.write(b"".join(lines))
        return path

    def expect_bad(self, lines, line_no, name):
        path = self.tampered(lines, name)
        for tool in (KMSCTL_BIN, KMSD_BIN):
            res = run([tool, "audit", "verify", path])
            self.assertEqual(res.returncode, 1, "%s accepted %s\n%s" % (tool, name, res.stdout))
            self.assertIn("%s:%d:" % (path, line_no), res.stderr)

    def test_intact(self):
        res = run([KMSCTL_BIN, "audit", "verify", self.log])
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertIn("12 records", res.stdout)

    def test_edit(self):
        lines = list(self.orig)
        lines[4] = lines[4].replace(b'"op":"encrypt"', b'"op":"decrypt"')
        self.assertNotEqual(lines[4], self.orig[4])
        self.expect_bad(lines, 5, "edit.log")
        lines = list(self.orig)
        lines[-1] = lines[-1].replace(b'"status":200', b'"status":403')
        self.expect_bad(lines, 12, "edit-last.log")

    def test_delete(self):
        self.expect_bad(self.orig[:6] + self.orig[7:], 7, "delete.log")

    def test_insert(self):
        self.expect_bad(self.orig[:8] + [self.orig[2]] + self.orig[8:], 9, "insert.log")

    def test_reorder(self):
        lines = list(self.orig)
        lines[3], lines[5] = lines[5], lines[3]
        self.expect_bad(lines, 4, "reorder.log")

    def test_torn_last_line(self):
        lines = list(self.orig)
        lines[-1] = lines[-1][:len(lines[-1]) // 2]
        self.expect_bad(lines, 12, "torn.log")

    def test_torn_last_line_of_a_file_a_writer_holds(self):
        """A verify of the live log reads it while kmsd appends: an unterminated last line in a
        file a running kmsd holds (its flock) is a write in progress, not damage; it is left
        unchecked with a note. Without the lock, or in a file before the last, it is torn."""
        import fcntl
        lines = list(self.orig)
        lines[-1] = lines[-1][:len(lines[-1]) // 2]
        path = self.tampered(lines, "live.log")
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running kmsd's device does
            for tool in (KMSCTL_BIN, KMSD_BIN):
                res = run([tool, "audit", "verify", "--genesis", path])
                self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
                self.assertIn("ok: 11 records", res.stdout)
                self.assertIn("note: the last line (%d bytes so far) is being written by a "
                              "running kmsd" % len(lines[-1]), res.stderr)
            # a held file that is not the last of the set: its torn line is damage
            later = self.tampered([], "live.log.later")
            res = run([KMSCTL_BIN, "audit", "verify", path, later])
            self.assertEqual(res.returncode, 1, res.stdout + res.stderr)
            self.assertIn("%s:12: torn last line" % path, res.stderr)
        finally:
            os.close(fd)
        res = run([KMSCTL_BIN, "audit", "verify", path])
        self.assertEqual(res.returncode, 1, res.stdout + res.stderr)
        self.assertIn("%s:12: torn last line" % path, res.stderr)

    def test_rotated_file_with_a_broken_first_line(self):
        """A rotated set (three files, named as logrotate names them) whose middle file's first
        line is damaged: its chain fields (a hex digit of its hash made invalid), or its seq
        edited. The report names that line; the files were ordered by first seq, so the middle
        file went last and the break was reported at the next file's first line."""
        def damage_hash(line):
            i = line.rindex(b'"}')
            return line[:i - 1] + b"g" + line[i:]

        def edit_seq(line):
            return line.replace(b'"seq":5,', b'"seq":50,')

        for name, damage in (("hash", damage_hash), ("seq", edit_seq)):
            d = os.path.join(self.workdir, "rotated-" + name)
            os.mkdir(d)
            parts = {"audit.log.2": self.orig[0:4], "audit.log.1": list(self.orig[4:8]),
                     "audit.log": self.orig[8:12]}
            parts["audit.log.1"][0] = damage(parts["audit.log.1"][0])
            self.assertNotEqual(parts["audit.log.1"][0], self.orig[4])
            for fname, lines in parts.items():
                with open(os.path.join(d, fname), "wb") as f:
                    f.write(b"".join(lines))
            for tool in (KMSCTL_BIN, KMSD_BIN):
                res = run([tool, "audit", "verify", d])
                self.assertEqual(res.returncode, 1, res.stdout)
                self.assertIn("%s:1:" % os.path.join(d, "audit.log.1"), res.stderr)
                self.assertIn("4 good lines before it", res.stderr)
            # intact again, the set verifies whatever the order of the arguments
            with open(os.path.join(d, "audit.log.1"), "wb") as f:
                f.write(b"".join(self.orig[4:8]))
            res = run([KMSCTL_BIN, "audit", "verify", os.path.join(d, "audit.log"),
                       os.path.join(d, "audit.log.1"), os.path.join(d, "audit.log.2")])
            self.assertEqual(res.returncode, 0, res.stderr)
            self.assertIn("12 records in 3 file(s)", res.stdout)

    def test_log_through_a_pipe(self):
        """A rotated copy read through a pipe (`<(zcat audit.log.1.gz)`, /dev/stdin) is read once,
        by the verifier: ordering the files by first seq read its first lines ahead and left the
        verifier the rest, so an intact log failed as edited (or lines went unchecked)."""
        rest = self.tampered(self.orig[5:], "rest.log")
        for tool in (KMSCTL_BIN, KMSD_BIN):
            res = subprocess.run([tool, "audit", "verify", "--genesis", "/dev/stdin"],
                                 input=b"".join(self.orig), capture_output=True, timeout=30)
            self.assertEqual(res.returncode, 0, res.stderr)
            self.assertIn(b"12 records in 1 file(s)", res.stdout)
            res = subprocess.run([tool, "audit", "verify", "--genesis", "/dev/stdin", rest],
                                 input=b"".join(self.orig[:5]), capture_output=True, timeout=30)
            self.assertEqual(res.returncode, 0, res.stderr)
            self.assertIn(b"12 records in 2 file(s)", res.stdout)
        # still checked: an edited line through the pipe is named
        lines = list(self.orig)
        lines[2] = lines[2].replace(b'"type":"request"', b'"type":"response"')
        self.assertNotEqual(lines[2], self.orig[2])
        res = subprocess.run([KMSCTL_BIN, "audit", "verify", "/dev/stdin"],
                             input=b"".join(lines), capture_output=True, timeout=30)
        self.assertEqual(res.returncode, 1, res.stdout)
        self.assertIn(b"/dev/stdin:3:", res.stderr)
        # kmsctl audit list reads every event from it
        res = subprocess.run([KMSCTL_BIN, "audit", "list", "--file", "/dev/stdin", "-o", "json"],
                             input=b"".join(self.orig), capture_output=True, timeout=30)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(len(json.loads(res.stdout)), 6, res.stdout)

    def test_removed_head_needs_genesis(self):
        path = self.tampered(self.orig[2:], "nohead.log")
        res = run([KMSCTL_BIN, "audit", "verify", path])
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertIn("earlier records not given", res.stdout)
        res = run([KMSCTL_BIN, "audit", "verify", "--genesis", path])
        self.assertEqual(res.returncode, 1)
        self.assertIn("%s:1:" % path, res.stderr)

    def test_usage_errors(self):
        res = run([KMSCTL_BIN, "audit", "verify"])
        self.assertEqual(res.returncode, 2)
        res = run([KMSCTL_BIN, "audit", "verify", os.path.join(self.workdir, "missing")])
        self.assertEqual(res.returncode, 2)


class FailClosedTest(AuditTestCase):
    """A full file system: RLIMIT_FSIZE on the running server (kmsd ignores SIGXFSZ)."""

    def set_limit(self, extra):
        # only the soft limit: raising a hard limit again needs CAP_SYS_RESOURCE
        size = os.path.getsize(self.log)
        pid = self.server.proc.pid
        _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (size + extra, hard))
        return size

    def clear_limit(self):
        pid = self.server.proc.pid
        _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))

    def test_request_line_failure_stops_everything(self):
        name = self.uniq("full")
        size = self.set_limit(100)
        try:
            r = self.req("POST", "transit/keys/" + name, {})
            self.assertError(r, 500, "internal error")
            r = self.req("POST", "transit/encrypt/" + name, {"plaintext": b64("x")})
            self.assertError(r, 500, "internal error")
            r = self.req("GET", "sys/health", token=None)  # not audited: still answers
            self.assertEqual(r.status, 200)
            self.assertEqual(os.path.getsize(self.log), size)  # nothing torn left behind
        finally:
            self.clear_limit()
        r = self.req("GET", "transit/keys/" + name)
        self.assertStatus(r, 404)  # the create never ran (nor did the encrypt's upsert)
        res = self.verify(self.log)
        self.assertEqual(res.returncode, 0, res.stderr)

    def test_response_line_failure_withholds_the_result(self):
        name, _ = self.create_key()
        self.encrypt(name, b"warm-up")
        req_line, resp_line = [json.dumps(l, separators=(",", ":")) for l in self.last_pair()]
        before = self.lines()
        # room for this request's request line, not for its response line
        size = self.set_limit(len(req_line) + 40)
        try:
            r = self.req("POST", "transit/encrypt/" + name, {"plaintext": b64("warm-up")})
            self.assertError(r, 500, "internal error")
            self.assertNotIn(b"vault:v", r.body)
        finally:
            self.clear_limit()
        # an encrypt's request line is not waited for on its own: it shares the response
        # line's write when they are queued together (then neither is in the file) or is
        # written just before it; either way no response line records a result
        ls = self.lines()
        self.assertLessEqual(len(ls), len(before) + 1)
        if len(ls) == len(before) + 1:
            self.assertEqual(ls[-1]["type"], "request")
        res = self.verify(self.log)
        self.assertEqual(res.returncode, 0, res.stderr)
        # and the server carries on once there is space again
        self.encrypt(name, b"after")


def split_answers(data):
    """(status, JSON body) of each HTTP/1.1 answer in data, which must hold only whole ones."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, data[:200]
        lines = head.decode().split("\r\n")
        length = [int(l.split(":", 1)[1]) for l in lines if l.lower().startswith("content-length:")]
        n = length[0] if length else 0
        assert len(rest) >= n, "a truncated answer"
        out.append((int(lines[0].split()[1]), json.loads(rest[:n]) if n else None))
        data = rest[n:]
    return out


class HalfCloseTest(AuditTestCase):
    """A client that shuts its sending side after its requests (a half-close) gets every
    answer whose handler ran: an audited request waits for its record, and the EOF that the
    half-close delivers meanwhile must not drop the answer (the audit log has the 200)."""

    def request_bytes(self, name, plaintext, close=False):
        body = json.dumps({"plaintext": b64(plaintext)}).encode()
        head = ("POST /v1/transit/encrypt/%s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "X-Vault-Token: %s\r\nContent-Length: %d\r\n%s\r\n"
                % (name, self.server.root_token, len(body),
                   "Connection: close\r\n" if close else ""))
        return head.encode() + body

    def check(self, name, answers, plains):
        self.assertEqual(len(answers), len(plains))
        for (status, body), p in zip(answers, plains):
            self.assertEqual(status, 200, body)
            self.assertEqual(self.decrypt(name, body["data"]["ciphertext"]), p)
            got = self.lines_for(body["request_id"])
            self.assertEqual([l["type"] for l in got], ["request", "response"], got)
            self.assertEqual(got[1]["status"], 200)

    def test_one_request_then_half_close(self):
        name, _ = self.create_key()
        for close in (False, True):
            data = raw_exchange(self.server.port, self.request_bytes(name, b"half", close),
                                half_close=True)
            self.check(name, split_answers(data), [b"half"])

    def test_pipelined_requests_then_half_close(self):
        name, _ = self.create_key()
        plains = [b"p%d" % i for i in range(20)] + [os.urandom(30000) for _ in range(3)]
        data = raw_exchange(self.server.port,
                            b"".join(self.request_bytes(name, p) for p in plains),
                            half_close=True)
        self.check(name, split_answers(data), plains)
        res = self.verify(self.log)
        self.assertEqual(res.returncode, 0, res.stderr)

    def test_a_truncated_request_after_whole_ones(self):
        # the whole request is answered; the part of the next one that came before the EOF
        # is dropped without an answer, as Go's server does
        name, _ = self.create_key()
        raw = self.request_bytes(name, b"whole") + self.request_bytes(name, b"cut")[:60]
        data = raw_exchange(self.server.port, raw, half_close=True)
        self.check(name, split_answers(data), [b"whole"])


class ListTest(AuditTestCase):

    def test_list_local_and_remote(self):
        name, _ = self.create_key()
        ct = self.encrypt(name)
        self.decrypt(name, ct)
        self.rotate(name)
        self.req("POST", "transit/encrypt/" + name, {"plaintext": b64("x")}, token="bad")
        res = run([KMSCTL_BIN, "audit", "list", "--resource=KMSKey", "--since=24h",
                   "--key", name, "-o", "json"], env={"KMS_AUDIT_FILE": self.log})
        self.assertEqual(res.returncode, 0, res.stderr)
        events = json.loads(res.stdout)
        self.assertEqual([e["op"] for e in events], ["create", "encrypt", "decrypt", "rotate",
                                                     "encrypt"])
        self.assertEqual([e["result"] for e in events][-1], "denied")
        self.assertEqual(events[3]["key_version"], 2)
        self.assertEqual(events[1]["subject"], "root")
        for flags, n in ((["--op", "encrypt"], 2), (["--result", "denied"], 1),
                         (["--subject", "root"], 4), (["--limit", "2"], 2),
                         (["--since", "2000-01-01T00:00:00Z", "--until", "946771200"], 0)):
            res = run([KMSCTL_BIN, "audit", "list", "--file", self.log, "--key", name, "-o",
                       "json"] + flags)
            self.assertEqual(res.returncode, 0, res.stderr)
            self.assertEqual(len(json.loads(res.stdout)), n, flags)
        # table output
        res = run([KMSCTL_BIN, "audit", "list", "--file", self.log, "--key", name])
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertTrue(res.stdout.startswith("TIME"), res.stdout)
        self.assertIn("rotate", res.stdout)
        # remote: the same answer through GET sys/audit/events
        env = {"VAULT_ADDR": self.server.addr, "VAULT_TOKEN": self.server.root_token}
        res = run([KMSCTL_BIN, "audit", "list", "--resource=KMSKey", "--since=24h", "--key",
                   name, "-o", "json"], env=env)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual([e["op"] for e in json.loads(res.stdout)],
                         [e["op"] for e in events])
        # remote needs a token the server accepts
        env["VAULT_TOKEN"] = "bad"
        res = run([KMSCTL_BIN, "audit", "list"], env=env)
        self.assertEqual(res.returncode, 1)
        self.assertIn("permission denied", res.stderr)
        # bad arguments
        res = run([KMSCTL_BIN, "audit", "list", "--file", self.log, "--since", "yesterday"])
        self.assertEqual(res.returncode, 2)
        res = run([KMSCTL_BIN, "audit", "list", "--file", self.log, "--result", "maybe"])
        self.assertEqual(res.returncode, 2)


    def test_inverted_window_is_a_usage_error(self):
        """`--since` at or after `--until` can match nothing: kmsctl said so with an empty
        table and exit 0 (docs/audit.md's own example, `--since 2026-05-01T00:00:00Z --until
        1746144000`, was such a window: 1746144000 is 2025-05-02). Now exit 2 naming both
        ends, locally and before asking the server; a window in order still lists."""
        name, _ = self.create_key()
        remote = {"KMS_ADDR": self.server.addr, "KMS_TOKEN": self.server.root_token}
        for since, until in (("2026-05-01T00:00:00Z", "1746144000"), ("24h", "48h"),
                             ("1777593600", "2026-05-01T00:00:00Z")):
            for where, env in ((["--file", self.log], {}), ([], remote)):
                with self.subTest(since=since, until=until, remote=not where):
                    res = run([KMSCTL_BIN, "audit", "list", "--since", since, "--until", until]
                              + where, env=env)
                    self.assertEqual(res.returncode, 2, res.stdout + res.stderr)
                    self.assertEqual(res.stdout, "")
                    self.assertIn("is not before --until", res.stderr)
        res = run([KMSCTL_BIN, "audit", "list", "--file", self.log, "--key", name, "--since",
                   "2026-05-01T00:00:00Z", "--until", "2100-01-01T00:00:00Z", "-o",
                   "json"])
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual([e["op"] for e in json.loads(res.stdout)], ["create"])

    def test_remote_list_in_an_organization_with_global_options(self):
        """The product doc's `kmsctl audit list --resource=KMSKey --since=24h` with the
        environment docs/cli.md sets up (KMS_NAMESPACE=<org>): sys/audit/events is a
        root-namespace path, so the organization is never sent as X-Vault-Namespace; -n filters
        by it; global options are accepted anywhere on the line."""
        org = self.uniq("org")
        self.assertIn(self.req("POST", "sys/namespaces/" + org, {}).status, (200, 204))
        r = self.req("POST", "sys/mounts/transit", {"type": "transit"}, namespace=org)
        self.assertIn(r.status, (200, 204), r.describe())
        name = self.uniq("k")
        self.assertStatus(self.req("POST", "transit/keys/" + name, {}, namespace=org), 200)
        env = {"KMS_ADDR": self.server.addr, "KMS_TOKEN": self.server.root_token,
               "KMS_NAMESPACE": org}
        res = run([KMSCTL_BIN, "audit", "list", "--resource=KMSKey", "--since=24h", "-o",
                   "json"], env=env)
        self.assertEqual(res.returncode, 0, res.stderr)
        ops = [(e["op"], e.get("namespace")) for e in json.loads(res.stdout)]
        self.assertIn(("create", org + "/"), ops)
        for argv in (["--addr", self.server.addr, "audit", "list", "-n", org, "--token",
                      self.server.root_token, "-o", "json"],
                     ["audit", "--token", self.server.root_token, "list", "--addr",
                      self.server.addr, "--org", org, "-o", "json"]):
            with self.subTest(argv=argv[:3]):
                res = run([KMSCTL_BIN] + argv, env={})
                self.assertEqual(res.returncode, 0, res.stderr)
                events = json.loads(res.stdout)
                self.assertTrue(events)
                self.assertEqual({e["namespace"] for e in events}, {org + "/"})
        res = run([KMSCTL_BIN, "audit", "list", "--token", "x", "--bogus"], env={})
        self.assertEqual(res.returncode, 2)
        self.assertIn("unknown option", res.stderr)


class OneWriterPerFileTest(unittest.TestCase):
    """Two servers with their own stores and one audit file would each continue the chain from
    their own head and fork it: the second refuses to start (the first holds a lock on the
    file), the first keeps working, and readers of the file are not held up."""

    def test_second_server_on_the_same_file_refused(self):
        first = KmsdServer(mode="config")
        others = []
        try:
            log = os.path.join(first.workdir, "audit.log")
            first.config = {"audit_file": log}
            first.start()
            KmsdTestCase.init_config_server(first)
            r = first.request("POST", "transit/encrypt/ow", {"plaintext": b64("x")})
            self.assertEqual(r.status, 200, r.describe())
            before = read_lines(log)
            want = ("kmsd: audit device file: another kmsd is writing the audit file %s "
                    "(another process holds its lock): each server needs its own audit file"
                    % log)

            def refused(second):
                others.append(second)
                second.spawn()
                rc = second.wait_exit(30)
                self.assertIsNotNone(rc, "a second kmsd started on %s\n%s" % (
                    log, second.log_tail()))
                self.assertEqual(rc, 1, second.log_tail())
                self.assertIn(want, second.log_text())

            # another store (config mode), and a dev server (its throwaway store)
            refused(KmsdServer(mode="config", config={"audit_file": log}))
            refused(KmsdServer(mode="dev", extra_args=["-audit-file=" + log]))
            self.assertEqual(read_lines(log), before)  # not a byte from them
            # the first goes on; verify and list read the file it holds
            r = first.request("POST", "transit/encrypt/ow", {"plaintext": b64("y")})
            self.assertEqual(r.status, 200, r.describe())
            res = run([KMSCTL_BIN, "audit", "verify", "--genesis", log])
            self.assertEqual(res.returncode, 0, res.stderr)
            res = run([KMSCTL_BIN, "audit", "list", "--file", log, "-o", "json"])
            self.assertEqual(res.returncode, 0, res.stderr)
            # a SIGHUP that rotated nothing keeps the file, and the lock
            first.proc.send_signal(signal.SIGHUP)
            first.wait_log("audit log reopened")
            r = first.request("POST", "transit/encrypt/ow", {"plaintext": b64("z")})
            self.assertEqual(r.status, 200, r.describe())
            refused(KmsdServer(mode="dev", extra_args=["-audit-file=" + log]))
            # rotated: the lock moves to the new file; the renamed one is free
            os.rename(log, log + ".1")
            first.proc.send_signal(signal.SIGHUP)
            first.wait_log("audit log reopened", count=2)
            r = first.request("POST", "transit/encrypt/ow", {"plaintext": b64("w")})
            self.assertEqual(r.status, 200, r.describe())
            refused(KmsdServer(mode="dev", extra_args=["-audit-file=" + log]))
            # the first stopped, the file is free: the next server continues its chain
            self.assertEqual(first.stop(), 0, first.log_tail())
            nxt = KmsdServer(mode="dev", extra_args=["-audit-file=" + log])
            others.append(nxt)
            nxt.start()
            r = nxt.request("POST", "transit/keys/ow2", {})
            self.assertEqual(r.status, 200, r.describe())
            self.assertEqual(nxt.stop(), 0, nxt.log_tail())
            res = run([KMSCTL_BIN, "audit", "verify", "--genesis", log + ".1", log])
            self.assertEqual(res.returncode, 0, res.stderr)
        finally:
            for srv in others:
                srv.cleanup()
            first.cleanup()


class CrashThenRotationTest(unittest.TestCase):
    """A file rotated while kmsd is down after a crash: the stored head is from the last reopen
    (or clean stop), behind the lines the crashed server wrote since; the new file must go on
    from the last of them, not fork the chain at the stored head."""

    def test_file_rotated_after_a_kill_continues_the_chain(self):
        srv = KmsdServer(mode="config")
        try:
            log = os.path.join(srv.workdir, "audit.log")
            srv.config = {"audit_file": log}
            srv.start()
            KmsdTestCase.init_config_server(srv)
            self.assertEqual(srv.request("POST", "transit/keys/cr", {}).status, 200)
            # a rotation stores the head; the lines after it are only in the file
            os.rename(log, log + ".1")
            srv.proc.send_signal(signal.SIGHUP)
            srv.wait_log("audit log reopened")
            for i in range(5):
                r = srv.request("POST", "transit/encrypt/cr", {"plaintext": b64("c%d" % i)})
                self.assertEqual(r.status, 200, r.describe())
            srv.kill()  # no clean stop: the head in the store stays at the reopen
            os.rename(log, log + ".2")  # logrotate, while the server is down
            srv.start()
            r = srv.request("POST", "transit/encrypt/cr", {"plaintext": b64("after")})
            self.assertEqual(r.status, 200, r.describe())
            self.assertEqual(srv.stop(), 0, srv.log_tail())
            res = run([KMSCTL_BIN, "audit", "verify", "--genesis", log + ".1", log + ".2", log])
            self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
            self.assertIn("the last record of %s.2" % log, srv.log_text())
            first = read_lines(log)[0]
            self.assertEqual(first["seq"], read_lines(log + ".2")[-1]["seq"] + 1)
            # a clean stop stored the head: a file rotated now goes on from it, as before
            os.rename(log, log + ".3")
            srv.start()
            r = srv.request("POST", "transit/encrypt/cr", {"plaintext": b64("again")})
            self.assertEqual(r.status, 200, r.describe())
            self.assertNotIn("the last record of", srv.log_text())
            self.assertEqual(srv.stop(), 0, srv.log_tail())
            res = run([KMSCTL_BIN, "audit", "verify", "--genesis", log + ".1", log + ".2",
                       log + ".3", log])
            self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
        finally:
            srv.cleanup()


class ConfigDevicesTest(unittest.TestCase):
    """Config-file devices: two files, fsync modes, mode bits."""

    def test_two_devices_from_config(self):
        srv = KmsdServer(mode="config")
        try:
            a = os.path.join(srv.workdir, "a.log")
            b = os.path.join(srv.workdir, "b.log")
            srv.config = {"audit_file": a, "audit_fsync": "always", "audit_mode": "0640",
                          "audit_devices": [{"name": "backup", "path": b, "fsync": "never",
                                             "hmac_accessor": False}]}
            srv.start()
            KmsdTestCase.init_config_server(srv)
            r = srv.request("POST", "transit/encrypt/ck", {"plaintext": b64("x")})
            self.assertEqual(r.status, 200, r.describe())
            r = srv.request("GET", "sys/audit")
            self.assertEqual(sorted(r.json["data"]), ["backup/", "file/"])
            self.assertEqual(r.json["data"]["file/"]["options"]["fsync"], "always")
            la, lb = read_lines(a), read_lines(b)
            self.assertEqual(len(la), len(lb))
            self.assertGreaterEqual(len(la), 6)  # init is not audited; mounts, encrypt, ...
            self.assertEqual([l["request"]["id"] for l in la], [l["request"]["id"] for l in lb])
            # each device has its own salt
            enc_a = [l for l in la if l["request"]["path"] == "transit/encrypt/ck"]
            enc_b = [l for l in lb if l["request"]["path"] == "transit/encrypt/ck"]
            self.assertEqual(len(enc_a), 2)
            self.assertNotEqual(enc_a[0]["request"]["data"], enc_b[0]["request"]["data"])
            self.assertEqual(os.stat(a).st_mode & 0o777, 0o640)
            for p in (a, b):
                res = run([KMSCTL_BIN, "audit", "verify", p])
                self.assertEqual(res.returncode, 0, res.stderr)
            self.assertEqual(srv.stop(), 0, srv.log_tail())
            # restart: the chain continues in the same files
            srv.start()
            r = srv.request("POST", "transit/encrypt/ck", {"plaintext": b64("y")})
            self.assertEqual(r.status, 200, r.describe())
            self.assertEqual(read_lines(a)[-1]["seq"], len(la) + 2)
            res = run([KMSCTL_BIN, "audit", "verify", "--genesis", a])
            self.assertEqual(res.returncode, 0, res.stderr)
        finally:
            srv.cleanup()

    def test_bad_audit_config_refused(self):
        for cfg in ({"audit_file": "/tmp/x.log", "audit_fsync": "sometimes"},
                    {"audit_file": "/tmp/x.log", "audit_mode": "rw"},
                    {"audit_devices": [{"name": "x"}]},
                    {"audit_file": "/nonexistent-dir/a.log"}):
            srv = KmsdServer(mode="config", config=cfg)
            try:
                srv.spawn()
                rc = srv.wait_exit(10)
                self.assertIsNotNone(rc, "kmsd started with %r" % cfg)
                self.assertNotEqual(rc, 0)
            finally:
                srv.cleanup()


if __name__ == "__main__":
    unittest.main()
