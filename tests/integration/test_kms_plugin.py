"""The Kubernetes KMS v2 plugin served by kmsd itself (kmsd server -kms-plugin-socket=...).

A real kmsd, the real unix socket, and Debian's python3-grpcio as the gRPC client with stubs
generated from kmsplugin/api.proto (kms_plugin_helpers.py). Covers Status/Encrypt/Decrypt as
kube-apiserver uses them, rotation and min_decryption_version, refusals, concurrency, clients
that go away mid-call, KMSKeys of purpose etcd, and the socket's safety rules.
"""

import concurrent.futures
import grp
import json
import os
import re
import socket
import stat
import subprocess
import tempfile
import threading
import time
import unittest

import grpc

from kmsd_harness import KMSD_BIN, KmsdServer, b64
from kms_plugin_helpers import Plugin, RawH2, load_stubs, rpc_error, wait_for, wait_socket

STATUS_INTERVAL = 1  # seconds a health probe answer is reused (-kms-plugin-status-interval)
SEED = bytes(range(32))  # what the apiserver sends: a 32-byte DEK seed
# an ASan build (CI's second run): freed memory sits in ASan's quarantine, so RSS bounds are
# asserted in the normal build only (test_http_strict does the same)
SANITIZED = os.environ.get("KMS_SANITIZED") == "1"


class PluginServerCase(unittest.TestCase):
    """A dev kmsd with two plugin sockets: Transit key `etcd-k` in the root namespace, and
    KMSKey `prod/etcd` of organization `org1` (created by the tests, after start-up)."""

    @classmethod
    def setUpClass(cls):
        load_stubs()
        cls.dir = tempfile.mkdtemp(prefix="kmsd-plugin-")
        cls.sock = os.path.join(cls.dir, "transit.sock")
        cls.ksock = os.path.join(cls.dir, "kmskey.sock")
        cls.server = KmsdServer(workdir=cls.dir, extra_args=[
            "-kms-plugin-socket=" + cls.sock, "-kms-plugin-key=etcd-k",
            "-kms-plugin-socket=" + cls.ksock, "-kms-plugin-key=org1:prod/etcd",
            "-kms-plugin-status-interval=%ds" % STATUS_INTERVAL])
        try:
            cls.server.start()
            wait_socket(cls.sock)
            wait_socket(cls.ksock)
        except BaseException:
            cls.server.cleanup()
            raise
        r = cls.server.request("POST", "transit/keys/etcd-k", {})
        assert r.status == 200, r.describe()
        cls.p = Plugin(cls.sock)

    @classmethod
    def tearDownClass(cls):
        cls.p.close()
        rc = cls.server.stop()
        try:
            if rc != 0:
                raise AssertionError("kmsd did not exit cleanly (rc=%r)\n%s" % (
                    rc, cls.server.log_tail()))
            for s in (cls.sock, cls.ksock):
                if os.path.exists(s):
                    raise AssertionError("socket %s left behind after shutdown" % s)
        finally:
            cls.server.cleanup()

    def req(self, method, path, body=None, **kw):
        return self.server.request(method, path, body, **kw)

    def key_version(self, name="etcd-k"):
        r = self.req("GET", "transit/keys/" + name)
        self.assertEqual(r.status, 200, r.describe())
        return r.data["latest_version"]


class TestInProcess(PluginServerCase):

    def test_a_preface_a_byte_at_a_time_is_no_client(self):
        # the handshake deadline (10 s) runs until the whole preface and SETTINGS are in, not
        # until the first byte: one byte now and then held a connection slot for good
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.sock)
        preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        t0 = time.monotonic()
        closed = False
        try:
            # a byte every 3 s (its SETTINGS read and dropped meanwhile), until the server
            # closes the connection or 40 s have passed; the whole preface would take 72 s
            for i in range(len(preface)):
                try:
                    s.sendall(preface[i:i + 1])
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                while not closed and time.monotonic() < t0 + 3 * (i + 1):
                    s.settimeout(max(0.01, t0 + 3 * (i + 1) - time.monotonic()))
                    try:
                        closed = s.recv(4096) == b""
                    except socket.timeout:
                        pass
                    except ConnectionResetError:
                        closed = True
                if closed or time.monotonic() - t0 > 40:
                    break
        finally:
            s.close()
        self.assertTrue(closed, "still open after %.0f s" % (time.monotonic() - t0))
        self.assertEqual(self.p.status().healthz, "ok")  # others are served

    def test_uid_and_key_id_must_be_text(self):
        # the apiserver's uids are UUIDs and Go's protobuf refuses strings that are not UTF-8;
        # such a uid vanished from the audit record (JSON text), a 60 KB one filled two lines
        def raw(method):
            return self.p.channel.unary_unary("/v2.KeyManagementService/" + method,
                                              request_serializer=lambda b: b,
                                              response_deserializer=lambda b: b)

        def field(n, data):
            return bytes([n << 3 | 2, len(data)]) + data

        cases = [("Encrypt", field(1, b"seed") + field(2, b"\xff\xfe\xc0\x80"),
                  "malformed EncryptRequest message: uid is not UTF-8"),
                 ("Decrypt", field(1, b"vault:v1:AAAA") + field(2, b"ok-\xe2\x82") +
                  field(3, b"transit/keys/etcd-k:v1"),
                  "malformed DecryptRequest message: uid is not UTF-8"),
                 ("Decrypt", field(1, b"vault:v1:AAAA") + field(2, b"u") +
                  field(3, b"transit/keys/etcd-k:v1\xff"),
                  "malformed DecryptRequest message: key_id is not UTF-8")]
        for method, msg, want in cases:
            with self.subTest(want=want):
                with self.assertRaises(grpc.RpcError) as cm:
                    raw(method)(msg, timeout=10)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
                self.assertEqual(cm.exception.details(), want)
        code, details = rpc_error(self.p.encrypt, SEED, uid="u" * 1025)
        self.assertEqual((code, details), (grpc.StatusCode.INVALID_ARGUMENT,
                                           "uid is 1025 bytes; at most 1024"))
        self.assertTrue(self.p.encrypt(SEED, uid="u" * 1024).ciphertext.startswith(b"vault:"))
        # an annotation key that is not UTF-8 (the map's entry: key 1, value 2)
        entry = field(1, b"k8s.io/\xff") + field(2, b"v")
        with self.assertRaises(grpc.RpcError) as cm:
            raw("Decrypt")(field(1, b"vault:v1:AAAA") + field(3, b"transit/keys/etcd-k:v1") +
                           field(4, entry), timeout=10)
        self.assertEqual((cm.exception.code(), cm.exception.details()),
                         (grpc.StatusCode.INVALID_ARGUMENT,
                          "malformed DecryptRequest message: annotations key is not UTF-8"))

    def test_strings_with_a_nul_byte(self):
        # protobuf-c reads a string field as a C string: "abc\0xyz" was taken (compared,
        # audited) as "abc". Every string field of a request is checked at its real length
        good = self.p.encrypt(SEED)
        cases = [
            ("uid", lambda: self.p.encrypt(SEED, uid="abc\0xyz"),
             "malformed EncryptRequest message: uid contains a NUL byte"),
            ("uid, 2000 bytes with a NUL at 5", lambda: self.p.encrypt(SEED,
                                                                       uid="u" * 5 + "\0" * 1995),
             "malformed EncryptRequest message: uid contains a NUL byte"),
            ("decrypt uid", lambda: self.p.decrypt(good.ciphertext, good.key_id, uid="a\0"),
             "malformed DecryptRequest message: uid contains a NUL byte"),
            # this plugin's key_id up to the NUL
            ("key_id", lambda: self.p.decrypt(good.ciphertext, good.key_id + "\0other"),
             "malformed DecryptRequest message: key_id contains a NUL byte"),
            ("annotations key", lambda: self.p.decrypt(good.ciphertext, good.key_id,
                                                       annotations={"k8s.io\0x": b"v"}),
             "malformed DecryptRequest message: annotations key contains a NUL byte"),
        ]
        for what, fn, want in cases:
            with self.subTest(what):
                self.assertEqual(rpc_error(fn), (grpc.StatusCode.INVALID_ARGUMENT, want))
        # bytes fields (annotation values) may hold NUL bytes; the same strings without one work
        self.assertEqual(self.p.decrypt(good.ciphertext, good.key_id, uid="abcxyz",
                                        annotations={"k8s.io": b"\0\0"}).plaintext, SEED)

    def test_grpc_timeout(self):
        # the apiserver sets a deadline on every call: its grpc-timeout header is read as
        # grpc-go reads it (a malformed one: HTTP 400, INTERNAL), and a call whose deadline has
        # passed is answered DEADLINE_EXCEEDED without running
        pb, _ = load_stubs()
        enc = pb.EncryptRequest(plaintext=SEED, uid="raw-timeout").SerializeToString()
        h2 = RawH2(self.sock)
        try:
            h2.handshake()
            cases = [
                (b"5X", "Encrypt", "400", "13",
                 "malformed grpc-timeout: unknown unit (one of H, M, S, m, u, n)"),
                (b"123456789S", "Status", "400", "13",
                 "malformed grpc-timeout: too long (at most 8 digits and a unit)"),
                (b"-5S", "Encrypt", "400", "13",
                 "malformed grpc-timeout: not a number (1 to 8 digits and a unit)"),
                (b"0S", "Encrypt", "200", "4", "deadline exceeded before the call ran"),
                (b"0n", "Status", "200", "4", "deadline exceeded before the call ran"),
            ]
            streams = iter(range(1, 100, 2))
            for value, method, http, code, msg in cases:
                with self.subTest(value=value):
                    # HEADERS and DATA in one write: the whole request is in when its deadline
                    # of 0 is looked at (HEADERS alone would be answered, incomplete, by the
                    # deadline timer: test_an_unfinished_request_past_its_deadline)
                    stream = next(streams)
                    h2.call(stream, method.encode(), enc if method == "Encrypt" else b"",
                            [(b"grpc-timeout", value)])
                    a = h2.answer(stream)
                    self.assertEqual(a["frames"], [1])  # trailers-only
                    self.assertEqual(a["headers"][":status"], http)
                    self.assertEqual(a["headers"]["grpc-status"], code)
                    self.assertEqual(a["headers"]["grpc-message"], msg)
            # in time: answered as usual (the units of every client: C-core, grpc-go)
            for value in (b"10S", b"9999m", b"2999986u", b"29999999n", b"1H", b"1M"):
                with self.subTest(value=value):
                    stream = next(streams)
                    h2.call(stream, b"Encrypt", enc, [(b"grpc-timeout", value)])
                    a = h2.answer(stream)
                    self.assertEqual(a["headers"]["grpc-status"], "0")
                    self.assertEqual(pb.EncryptResponse.FromString(a["data"][5:]).key_id[:19],
                                     "transit/keys/etcd-k")
        finally:
            h2.close()
        # and through the gRPC client, which always sends one
        self.assertEqual(self.p.status(timeout=5).healthz, "ok")

    def test_an_unfinished_request_is_reset(self):
        # a call whose message never ends holds request bytes that every client of the socket
        # shares (64 MiB): it is reset (CANCEL) once it is 10 s old
        h2 = RawH2(self.sock)
        try:
            h2.handshake()
            h2.call_headers(1, b"Encrypt")
            h2.send_frame(0, 0, 1, b"\x00\x00\x00\x01\x00" + b"\x0a" * 16)  # 16 of 256 bytes
            t0 = time.monotonic()
            while True:
                f = h2.frame()
                self.assertIsNotNone(f, "the connection closed instead of resetting the call")
                t, _, stream, payload = f
                if t == 3 and stream == 1:  # RST_STREAM
                    self.assertEqual(int.from_bytes(payload, "big"), 8)  # CANCEL
                    break
                self.assertLess(time.monotonic() - t0, 40, "no RST_STREAM in 40 s")
            self.assertGreaterEqual(time.monotonic() - t0, 9)
        finally:
            h2.close()
        self.assertEqual(self.p.status().healthz, "ok")

    def test_an_unfinished_request_past_its_deadline(self):
        # a call whose message is still incomplete at its deadline is answered
        # DEADLINE_EXCEEDED then and reset (NO_ERROR: the rest is not wanted), as grpc-go
        # answers a call early; the stalled-request sweep would take 10 s
        h2 = RawH2(self.sock)
        try:
            h2.handshake()
            h2.call_headers(1, b"Encrypt", [(b"grpc-timeout", b"300m")])
            t0 = time.monotonic()
            h2.send_frame(0, 0, 1, b"\x00\x00\x00\x01\x00" + b"\x0a" * 16)  # 16 of 256 bytes
            a = h2.answer(1)
            waited = time.monotonic() - t0
            self.assertEqual(a["headers"]["grpc-status"], "4")
            self.assertEqual(a["headers"]["grpc-message"],
                             "deadline exceeded: no answer within the call's grpc-timeout")
            self.assertGreaterEqual(waited, 0.25)
            self.assertLess(waited, 5)
            t, _, stream, payload = h2.frame()
            self.assertEqual((t, stream, int.from_bytes(payload, "big")), (3, 1, 0))
            # the rest of the message, late, is dropped; the connection serves on
            h2.send_frame(0, 1, 1, b"\x0a" * 240)
            h2.call(3, b"Status", b"", [(b"grpc-timeout", b"5S")])
            self.assertEqual(h2.answer(3)["headers"]["grpc-status"], "0")
        finally:
            h2.close()

    def test_a_malformed_grpc_timeout_is_answered_at_its_headers(self):
        # as grpc-go does: the 400/INTERNAL answer comes when the HEADERS end, not when (if
        # ever) the request does, and the stream is reset (NO_ERROR: the rest is not wanted)
        h2 = RawH2(self.sock, timeout=5)
        try:
            h2.handshake()
            h2.call_headers(1, b"Encrypt", [(b"grpc-timeout", b"5X")])  # no END_STREAM
            a = h2.answer(1)  # the socket's 5 s timeout: well before the 10 s sweep
            self.assertEqual(a["frames"], [1])
            self.assertEqual(a["headers"][":status"], "400")
            self.assertEqual(a["headers"]["grpc-status"], "13")
            self.assertEqual(a["headers"]["grpc-message"],
                             "malformed grpc-timeout: unknown unit (one of H, M, S, m, u, n)")
            t, _, stream, payload = h2.frame()
            self.assertEqual((t, stream, int.from_bytes(payload, "big")), (3, 1, 0))
            # the connection serves on
            h2.call(3, b"Status", b"", [(b"grpc-timeout", b"5S")])
            self.assertEqual(h2.answer(3)["headers"]["grpc-status"], "0")
        finally:
            h2.close()

    def test_status(self):
        st = self.p.status()
        self.assertEqual(st.version, "v2")
        self.assertEqual(st.healthz, "ok")
        self.assertEqual(st.key_id, "transit/keys/etcd-k:v%d" % self.key_version())

    def test_round_trip(self):
        r = self.p.encrypt(SEED, uid="uid-1")
        self.assertTrue(r.ciphertext.startswith(b"vault:v"), r.ciphertext)
        self.assertLessEqual(len(r.ciphertext), 1024)
        self.assertEqual(r.key_id, "transit/keys/etcd-k:v%d" % self.key_version())
        self.assertEqual(len(r.annotations), 0)
        self.assertNotIn(SEED, r.ciphertext)
        d = self.p.decrypt(r.ciphertext, r.key_id, uid="uid-2")
        self.assertEqual(d.plaintext, SEED)
        # the ciphertext is an ordinary Transit ciphertext of the key: the HTTP API reads it
        h = self.req("POST", "transit/decrypt/etcd-k", {"ciphertext": r.ciphertext.decode()})
        self.assertEqual(h.status, 200, h.describe())
        self.assertEqual(h.data["plaintext"], b64(SEED))

    def test_largest_plaintext(self):
        pt = os.urandom(512)
        r = self.p.encrypt(pt)
        self.assertLessEqual(len(r.ciphertext), 1024)
        self.assertEqual(self.p.decrypt(r.ciphertext, r.key_id).plaintext, pt)

    def test_rotation(self):
        name = "rot-k"
        path = os.path.join(self.dir, "rot.sock")
        # its own server: key versions and floors of this key are changed below
        srv = KmsdServer(extra_args=["-kms-plugin-socket=" + path, "-kms-plugin-key=" + name,
                                     "-kms-plugin-status-interval=%ds" % STATUS_INTERVAL])
        try:
            srv.start()
            wait_socket(path)
            self.assertEqual(srv.request("POST", "transit/keys/" + name, {}).status, 200)
            p = Plugin(path)
            st = p.status()
            self.assertEqual(st.key_id, "transit/keys/%s:v1" % name)
            old = p.encrypt(SEED)
            self.assertEqual(old.key_id, "transit/keys/%s:v1" % name)
            self.assertEqual(srv.request("POST", "transit/keys/%s/rotate" % name, {}).status, 200)
            # Encrypt uses the new version at once; Status within one status interval
            new = p.encrypt(SEED)
            self.assertEqual(new.key_id, "transit/keys/%s:v2" % name)
            self.assertTrue(new.ciphertext.startswith(b"vault:v2:"))
            # every Status call begun more than one interval after the rotation reports v2
            rotated = time.monotonic()
            while True:
                t = time.monotonic()
                kid = p.status().key_id
                if kid == "transit/keys/%s:v2" % name:
                    break
                self.assertEqual(kid, "transit/keys/%s:v1" % name)
                self.assertLess(t, rotated + STATUS_INTERVAL,
                                "a Status begun %.2fs after the rotation still said v1"
                                % (t - rotated))
                time.sleep(0.05)
            # old ciphertexts still decrypt
            self.assertEqual(p.decrypt(old.ciphertext, old.key_id).plaintext, SEED)
            self.assertEqual(p.decrypt(new.ciphertext, new.key_id).plaintext, SEED)
            # min_decryption_version raised: v1 ciphertexts are refused, v2 ones are not
            r = srv.request("POST", "transit/keys/%s/config" % name, {"min_decryption_version": 2})
            self.assertEqual(r.status, 200, r.describe())
            code, details = rpc_error(p.decrypt, old.ciphertext, old.key_id)
            self.assertEqual(code, grpc.StatusCode.FAILED_PRECONDITION, details)
            self.assertIn("disallowed by policy (too old)", details)
            self.assertEqual(p.decrypt(new.ciphertext, new.key_id).plaintext, SEED)
            p.close()
        finally:
            rc = srv.stop()
            srv.cleanup()
        self.assertEqual(rc, 0)

    def test_status_follows_a_rotation_that_encrypt_used(self):
        # kube-apiserver keeps a new DEK seed only when Encrypt's key_id is the one Status gave
        # (rotateDEKOnKeyIDChange). After a rotation the cached Status named the old version for
        # the whole status interval (up to an hour), so an apiserver that needed a seed (one
        # restarted meanwhile) failed every try until then. An Encrypt that used another
        # version than Status reports makes the next Status probe again
        name = "rot-h"
        path = os.path.join(self.dir, "roth.sock")
        srv = KmsdServer(extra_args=["-kms-plugin-socket=" + path, "-kms-plugin-key=" + name,
                                     "-kms-plugin-status-interval=1h"])
        try:
            srv.start()
            wait_socket(path)
            self.assertEqual(srv.request("POST", "transit/keys/" + name, {}).status, 200)
            p = Plugin(path)
            self.assertEqual(p.status().key_id, "transit/keys/%s:v1" % name)
            r = srv.request("POST", "transit/keys/%s/rotate" % name, {})
            self.assertEqual(r.status, 200, r.describe())
            self.assertEqual(p.status().key_id, "transit/keys/%s:v1" % name)  # cached
            e = p.encrypt(SEED)
            self.assertEqual(e.key_id, "transit/keys/%s:v2" % name)
            st = p.status()
            self.assertEqual((st.healthz, st.key_id), ("ok", e.key_id))
            self.assertEqual(p.encrypt(SEED).key_id, st.key_id)
            p.close()
        finally:
            rc = srv.stop()
            srv.cleanup()
        self.assertEqual(rc, 0)

    def test_refusals(self):
        good = self.p.encrypt(SEED)
        cases = []
        # tampered ciphertext (a byte of the payload changed)
        ct = bytearray(good.ciphertext)
        ct[-5] = ord("A") if ct[-5] != ord("A") else ord("B")
        cases.append(("tampered", lambda: self.p.decrypt(bytes(ct), good.key_id),
                      grpc.StatusCode.INVALID_ARGUMENT, "message authentication failed"))
        cases.append(("unknown key_id", lambda: self.p.decrypt(good.ciphertext,
                                                               "transit/keys/other:v1"),
                      grpc.StatusCode.INVALID_ARGUMENT, "unknown key_id"))
        cases.append(("empty key_id", lambda: self.p.decrypt(good.ciphertext, ""),
                      grpc.StatusCode.INVALID_ARGUMENT, "unknown key_id"))
        cases.append(("key_id version mismatch",
                      lambda: self.p.decrypt(good.ciphertext, "transit/keys/etcd-k:v9"),
                      grpc.StatusCode.INVALID_ARGUMENT, "does not match key_id"))
        cases.append(("not a vault ciphertext",
                      lambda: self.p.decrypt(b"\x00\x01garbage", good.key_id),
                      grpc.StatusCode.INVALID_ARGUMENT, "invalid ciphertext"))
        cases.append(("empty ciphertext", lambda: self.p.decrypt(b"", good.key_id),
                      grpc.StatusCode.INVALID_ARGUMENT, "ciphertext is empty"))
        cases.append(("oversized ciphertext",
                      lambda: self.p.decrypt(b"vault:v1:" + b"A" * 2000, good.key_id),
                      grpc.StatusCode.INVALID_ARGUMENT, "at most 1024"))
        cases.append(("empty plaintext", lambda: self.p.encrypt(b""),
                      grpc.StatusCode.INVALID_ARGUMENT, "plaintext is empty"))
        cases.append(("oversized plaintext", lambda: self.p.encrypt(b"x" * 513),
                      grpc.StatusCode.INVALID_ARGUMENT, "at most 512"))
        cases.append(("oversized message", lambda: self.p.encrypt(b"x" * 70000),
                      grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than 65536"))
        # wrong key: a ciphertext of another Transit key, presented with this key's key_id
        self.assertEqual(self.req("POST", "transit/keys/other-k", {}).status, 200)
        r = self.req("POST", "transit/encrypt/other-k", {"plaintext": b64(SEED)})
        other = r.data["ciphertext"].encode()
        cases.append(("wrong key", lambda: self.p.decrypt(other, "transit/keys/etcd-k:v1"),
                      grpc.StatusCode.INVALID_ARGUMENT, "message authentication failed"))
        for what, fn, want, text in cases:
            with self.subTest(what):
                code, details = rpc_error(fn)
                self.assertEqual(code, want, "%s: %s" % (what, details))
                self.assertIn(text, details)
        # the refusals leave the plugin healthy
        self.assertEqual(self.p.status().healthz, "ok")
        self.assertEqual(self.p.decrypt(good.ciphertext, good.key_id).plaintext, SEED)

    def test_unknown_method(self):
        fn = self.p.channel.unary_unary("/v2.KeyManagementService/Rewrap",
                                        request_serializer=lambda b: b,
                                        response_deserializer=lambda b: b)
        code, details = rpc_error(fn, b"", timeout=5)
        self.assertEqual(code, grpc.StatusCode.UNIMPLEMENTED, details)
        fn = self.p.channel.unary_unary("/v2.KeyManagementService/Encrypt",
                                        request_serializer=lambda b: b,
                                        response_deserializer=lambda b: b)
        code, details = rpc_error(fn, b"\xff\xff\xff", timeout=5)  # not a protobuf message
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT, details)
        st = self.p.channel.unary_unary("/v2.KeyManagementService/Status",
                                        request_serializer=lambda b: b,
                                        response_deserializer=lambda b: b)
        code, details = rpc_error(st, b"\xff\xff\xff", timeout=5)
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT, details)
        self.assertIn("malformed StatusRequest message", details)
        # an unknown field is skipped, as protobuf readers do: a StatusRequest all the same
        self.assertNotEqual(st(b"\x08\x01", timeout=5), b"")

    def test_concurrent_calls(self):
        n = 200
        seeds = [os.urandom(32) for _ in range(n)]
        futs = [self.p.stub.Encrypt.future(self.pbreq_enc(s, "c%d" % i), timeout=60)
                for i, s in enumerate(seeds)]
        cts = [f.result() for f in futs]
        futs = [self.p.stub.Decrypt.future(self.pbreq_dec(c.ciphertext, c.key_id), timeout=60)
                for c in cts]
        self.assertEqual([f.result().plaintext for f in futs], seeds)
        # and over 20 separate connections at once
        def one(i):
            p = Plugin(self.sock)
            try:
                out = []
                for j in range(10):
                    c = p.encrypt(seeds[(i * 10 + j) % n])
                    out.append(p.decrypt(c.ciphertext, c.key_id).plaintext)
                return out
            finally:
                p.close()
        with concurrent.futures.ThreadPoolExecutor(20) as ex:
            res = list(ex.map(one, range(20)))
        self.assertEqual(sum(len(r) for r in res), 200)
        for i, r in enumerate(res):
            self.assertEqual(r, [seeds[(i * 10 + j) % n] for j in range(10)])

    def pbreq_enc(self, pt, uid):
        pb, _ = load_stubs()
        return pb.EncryptRequest(plaintext=pt, uid=uid)

    def pbreq_dec(self, ct, key_id):
        pb, _ = load_stubs()
        return pb.DecryptRequest(ciphertext=ct, key_id=key_id, uid="d")

    def test_client_disconnects_mid_call(self):
        good = self.p.encrypt(SEED)
        for _ in range(5):
            p = Plugin(self.sock)
            futs = [p.stub.Decrypt.future(self.pbreq_dec(good.ciphertext, good.key_id),
                                          timeout=30) for _ in range(100)]
            p.close()  # the connection goes away with calls in flight
            for f in futs:
                try:
                    f.result()
                except grpc.RpcError as e:
                    self.assertIn(e.code(), (grpc.StatusCode.CANCELLED,
                                             grpc.StatusCode.UNAVAILABLE))
        # raw: a connection that sends half a request and closes, and one that sends junk
        for data in (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04", b"GET / HTTP/1.1\r\n\r\n",
                     os.urandom(300)):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(self.sock)
            s.sendall(data)
            s.close()
        self.assertEqual(self.p.decrypt(good.ciphertext, good.key_id).plaintext, SEED)
        self.assertEqual(self.p.status().healthz, "ok")

    def test_socket_mode(self):
        st = os.lstat(self.sock)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)

    def test_kmskey_of_purpose_etcd(self):
        kp = Plugin(self.ksock)
        try:
            # before the organization and KMSKey exist: unhealthy, calls refused cleanly
            st = kp.status()
            self.assertEqual(st.version, "v2")
            self.assertNotEqual(st.healthz, "ok")
            self.assertIn("not found", st.healthz)
            code, details = rpc_error(kp.encrypt, SEED)
            self.assertEqual(code, grpc.StatusCode.NOT_FOUND, details)
            r = self.req("POST", "sys/namespaces/org1", {})
            self.assertEqual(r.status, 200, r.describe())
            # a KMSKey of another purpose is refused
            r = self.req("POST", "kms/keys/prod/etcd", {"purpose": "application"},
                         namespace="org1")
            self.assertEqual(r.status, 200, r.describe())
            code, details = rpc_error(kp.encrypt, SEED)
            self.assertEqual(code, grpc.StatusCode.FAILED_PRECONDITION, details)
            self.assertIn("purpose etcd", details)
            r = self.req("DELETE", "kms/keys/prod/etcd", namespace="org1")
            self.assertIn(r.status, (200, 204), r.describe())
            r = self.req("DELETE", "transit/keys/org1-prod-etcd", namespace="org1")
            r = self.req("POST", "kms/keys/prod/etcd", {"purpose": "etcd"}, namespace="org1")
            self.assertEqual(r.status, 200, r.describe())
            kid = "org1/transit/keys/org1-prod-etcd:v%d" % r.data["status"]["currentVersion"]
            e = kp.encrypt(SEED)
            self.assertEqual(e.key_id, kid)
            self.assertEqual(kp.decrypt(e.ciphertext, e.key_id).plaintext, SEED)
            wait_for(lambda: kp.status().healthz == "ok", STATUS_INTERVAL + 3, "healthy Status")
            # the KMSKey's rotate action moves key_id
            r = self.req("POST", "kms/keys/prod/etcd/rotate", {}, namespace="org1")
            self.assertEqual(r.status, 200, r.describe())
            e2 = kp.encrypt(SEED)
            self.assertNotEqual(e2.key_id, e.key_id)
            wait_for(lambda: kp.status().key_id == e2.key_id, STATUS_INTERVAL + 3,
                     "Status to report the rotated key")
            self.assertEqual(kp.decrypt(e.ciphertext, e.key_id).plaintext, SEED)
        finally:
            kp.close()


class TestStreamLimits(PluginServerCase):
    """Many streams on many connections: what nghttp2 and the plugin keep per stream is bounded
    for the whole process, not only the request bytes (a server of its own: the limits are the
    process's)."""

    def rss_kib(self):
        with open("/proc/%d/status" % self.server.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    @staticmethod
    def synced(h, token):
        """A PING and its ACK: the server has processed every frame sent before it."""
        h.send_frame(6, 0, 0, token)
        while True:
            f = h.frame()
            if f is None:
                raise AssertionError("the server closed the connection")
            if f[0] == 6 and f[1] & 1 and f[3] == token:
                return

    def test_unfinished_streams_are_capped_for_the_process(self):
        # 17 connections of 1000 requests that never end (HEADERS only): once 16384 streams are
        # open in the process, a new one is refused with RST_STREAM REFUSED_STREAM (7), which
        # gRPC clients retry, rather than kept (~400 bytes each: 1024 connections of 1000 held
        # 380 MB, past the shipped sidecar's memory limit)
        conns = []
        try:
            for i in range(17):
                h = RawH2(self.sock)
                conns.append(h)
                h.handshake()
                h.s.sendall(b"".join(h.headers_frame(2 * k + 1, b"Encrypt") for k in range(1000)))
                self.synced(h, b"sync%04d" % i)
            fresh = RawH2(self.sock)
            conns.append(fresh)
            fresh.handshake()
            fresh.call(1, b"Status", b"")
            a = fresh.answer(1)
            self.assertEqual(a["rst"], 7, a)  # REFUSED_STREAM
            for h in conns[:-1]:
                h.close()
            # the streams of the closed connections are gone: calls are served again
            n = [1]

            def served():
                n[0] += 2
                fresh.call(n[0], b"Status", b"")
                return fresh.answer(n[0])["headers"].get("grpc-status") == "0"
            wait_for(served, 10, "a Status call served after the connections closed")
        finally:
            for h in conns:
                h.close()

    def test_finished_streams_are_not_kept(self):
        # 100 connections of 1000 finished streams each (refused at once: HTTP 415): nghttp2
        # kept up to 1000 closed streams a connection for RFC 7540 priorities (~280 bytes each,
        # 28 MB here; 280 MB with 1024 connections); none are kept now
        lit = RawH2.literal
        block = (lit(b":method", b"GET") + lit(b":scheme", b"http") + lit(b":path", b"/x") +
                 lit(b":authority", b"l"))
        conns = []
        try:
            before = self.rss_kib()
            for _ in range(100):
                h = RawH2(self.sock)
                conns.append(h)
                h.handshake()
                h.s.sendall(b"".join(h.frame_bytes(1, 5, 2 * k + 1, block) for k in range(1000)))
                ended = 0
                while ended < 1000:
                    f = h.frame()
                    self.assertIsNotNone(f, "the server closed the connection")
                    if f[0] == 1 and f[1] & 1:
                        ended += 1
            grown = self.rss_kib() - before
            if not SANITIZED:  # (ASan's quarantine keeps freed memory: RSS tells nothing)
                self.assertLess(grown, 12 * 1024, "kmsd grew by %d KiB" % grown)
        finally:
            for h in conns:
                h.close()

    def test_a_client_that_reads_no_answers_holds_little(self):
        # 4 connections that send requests (each answered at once, UNIMPLEMENTED) and read
        # none of the answers: kmsd stops reading a connection once 64 KiB of answers wait on
        # it. It stopped at 4 MiB: each such connection held 4 MiB of kmsd for the 30 s of
        # the write timeout (16 of them passed the sidecar's memory limit, then 64Mi) and took
        # ~28 MB of requests first
        lit = RawH2.literal
        block = (lit(b":method", b"POST") + lit(b":scheme", b"http") + lit(b":path", b"/x") +
                 lit(b":authority", b"l") + lit(b"content-type", b"application/grpc"))
        head = len(block).to_bytes(3, "big") + bytes([1, 5])  # HEADERS, END_STREAM|END_HEADERS
        conns, taken = [], []
        try:
            before = self.rss_kib()
            for _ in range(4):
                h = RawH2(self.sock)
                conns.append(h)
                h.handshake()
                h.s.settimeout(2)  # kmsd has stopped reading once a send waits this long
                sid, sent = 1, 0
                try:
                    while sent < 40 << 20:
                        burst = b"".join(head + (sid + 2 * k).to_bytes(4, "big") + block
                                         for k in range(2000))
                        h.s.sendall(burst)
                        sid += 4000
                        sent += len(burst)
                except socket.timeout:
                    pass
                taken.append(sent)
            grown = self.rss_kib() - before
            for sent in taken:
                self.assertLess(sent, 4 << 20, "kmsd took %d bytes of requests" % sent)
            if not SANITIZED:  # (as above)
                self.assertLess(grown, 8 * 1024, "kmsd grew by %d KiB" % grown)
        finally:
            for h in conns:
                h.close()
        wait_for(lambda: self.p.status().version == "v2", 10, "a Status call served")


def audit_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class TestOperations(unittest.TestCase):
    """Config-mode kmsd with an audit log: plugin calls audited and counted, SIGTERM drains."""

    def start(self, fsync="batch"):
        self.dir = tempfile.mkdtemp(prefix="kmsd-plugin-ops-")
        self.sock = os.path.join(self.dir, "kms.sock")
        self.audit = os.path.join(self.dir, "audit.log")
        self.srv = KmsdServer(mode="config", workdir=self.dir, config={
            "audit_file": self.audit, "audit_fsync": fsync,
            "kms_plugins": [{"socket": self.sock, "key": "etcd-k", "socket_mode": "0660",
                             "socket_group": "nogroup"}],
            "kms_plugin_status_interval": "1s"})
        self.srv.start()
        r = self.srv.request("PUT", "sys/init", {}, token=None)
        self.assertEqual(r.status, 200, r.describe())
        self.srv.token = r.json["root_token"]
        self.assertEqual(self.srv.request("POST", "sys/mounts/transit", {"type": "transit"}).status,
                         204)
        self.assertEqual(self.srv.request("POST", "transit/keys/etcd-k", {}).status, 200)
        wait_socket(self.sock)
        self.p = Plugin(self.sock)

    def tearDown(self):
        if getattr(self, "p", None) is not None:
            self.p.close()
        if getattr(self, "srv", None) is not None:
            self.srv.stop()
            self.srv.cleanup()

    def test_audit_and_metrics(self):
        self.start()
        st = os.lstat(self.sock)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o660)
        self.assertEqual(st.st_gid, grp.getgrnam("nogroup").gr_gid)
        seed = os.urandom(32)
        e = self.p.encrypt(seed, uid="apiserver-uid-1")
        self.assertEqual(self.p.decrypt(e.ciphertext, e.key_id, uid="apiserver-uid-2").plaintext,
                         seed)
        rpc_error(self.p.decrypt, e.ciphertext[:-4] + b"AAAA", e.key_id, uid="apiserver-uid-3")
        # refused by the gRPC layer before it runs: counted, not timed, not audited
        code, _ = rpc_error(self.p.encrypt, b"x" * 70000, uid="apiserver-uid-4")
        self.assertEqual(code, grpc.StatusCode.RESOURCE_EXHAUSTED)
        # refused by the plugin before Transit is asked: audited as Transit's refusals are
        code, _ = rpc_error(self.p.encrypt, b"", uid="apiserver-uid-5")
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        code, _ = rpc_error(self.p.decrypt, e.ciphertext, "transit/keys/other:v1",
                            uid="apiserver-uid-6")
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        lines = wait_for(lambda: (lambda ls: ls if len(ls) == 5 else None)(
            [l for l in audit_lines(self.audit)
             if str(l.get("op", "")).startswith("kms-plugin-")
             and l.get("client_uid", "").startswith("apiserver-uid-")
             and l["type"] == "response"]), 10, "plugin audit lines")
        by_uid = {l["client_uid"]: l for l in lines}
        self.assertEqual(set(by_uid), {"apiserver-uid-%d" % i for i in (1, 2, 3, 5, 6)})
        empty, foreign = by_uid["apiserver-uid-5"], by_uid["apiserver-uid-6"]
        self.assertEqual((empty["op"], empty["status"]), ("kms-plugin-encrypt", 400))
        self.assertIn("plaintext is empty", empty["error"])
        self.assertEqual((foreign["op"], foreign["status"]), ("kms-plugin-decrypt", 400))
        self.assertIn("unknown key_id", foreign["error"])
        self.assertNotIn("key_version", foreign)
        enc, dec, bad = (by_uid["apiserver-uid-%d" % i] for i in (1, 2, 3))
        for l in (enc, dec, bad):
            self.assertEqual(l["subject"], "system:kms-plugin")
            self.assertEqual(l["key"], "etcd-k")
        self.assertEqual(enc["op"], "kms-plugin-encrypt")
        self.assertEqual(enc["request"]["path"], "transit/encrypt/etcd-k")
        self.assertEqual(enc["key_version"], 1)
        self.assertEqual(enc["status"], 200)
        self.assertEqual(dec["op"], "kms-plugin-decrypt")
        self.assertEqual(dec["key_version"], 1)
        self.assertEqual(bad["op"], "kms-plugin-decrypt")
        self.assertEqual(bad["status"], 400)  # as the HTTP transit/decrypt call's
        self.assertIn("authentication failed", bad["error"])
        # request lines too, and nothing secret anywhere in the log
        reqs = [l for l in audit_lines(self.audit) if l.get("op") == "kms-plugin-encrypt"
                and l["type"] == "request"]
        self.assertTrue(reqs)
        with open(self.audit, "rb") as f:
            text = f.read()
        for secret in (seed, b64(seed).encode(), seed.hex().encode()):
            self.assertNotIn(secret, text)
        r = subprocess.run([KMSD_BIN, "audit", "verify", self.audit], capture_output=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        # metrics
        r = self.srv.request("GET", "sys/metrics?format=prometheus")
        self.assertEqual(r.status, 200, r.describe())
        body = r.body.decode()
        m = re.search(r'kmsd_kms_plugin_calls_total\{method="Encrypt",code="OK"\} (\d+)', body)
        self.assertIsNotNone(m, body[-3000:])
        self.assertGreaterEqual(int(m.group(1)), 1)
        self.assertRegex(body, r'kmsd_kms_plugin_calls_total\{method="Decrypt",'
                               r'code="INVALID_ARGUMENT"\} 2\b')
        self.assertRegex(body, r'kmsd_kms_plugin_call_duration_seconds_count\{method="Decrypt"\} 3\b')
        self.assertRegex(body, r'kmsd_kms_plugin_calls_total\{method="Encrypt",'
                               r'code="RESOURCE_EXHAUSTED"\} 1\b')
        self.assertRegex(body, r'kmsd_kms_plugin_calls_queued 0\b')

    def test_sigterm_drains(self):
        # every answer waits for its audit line's group-commit fsync: calls are still in
        # flight when SIGTERM comes, and the drain ends well within the 10 s grace
        self.start(fsync="batch")
        e = self.p.encrypt(SEED)
        futs = [self.p.stub.Decrypt.future(load_stubs()[0].DecryptRequest(
            ciphertext=e.ciphertext, key_id=e.key_id, uid="drain-%d" % i), timeout=60)
            for i in range(200)]
        wait_for(lambda: any(f.done() for f in futs), 30, "a first call to finish",
                 interval=0.001)
        in_flight = sum(1 for f in futs if not f.done())
        self.srv.proc.send_signal(15)
        self.assertGreater(in_flight, 0, "every call had finished before SIGTERM")
        ok = 0
        for f in futs:
            try:
                self.assertEqual(f.result().plaintext, SEED)
                ok += 1
            except grpc.RpcError as err:
                # a call the server had not taken before it said GOAWAY
                self.assertEqual(err.code(), grpc.StatusCode.UNAVAILABLE, err.details())
        rc = self.srv.wait_exit(20)
        self.assertEqual(rc, 0, self.srv.log_tail())
        self.assertFalse(os.path.exists(self.sock), "socket left behind")
        self.assertNotIn("grace time over", self.srv.log_text())
        # every call that was answered is in the audit log, and no call was cut off
        done = [l for l in audit_lines(self.audit) if l.get("op") == "kms-plugin-decrypt"
                and l["type"] == "response" and l.get("client_uid", "").startswith("drain-")]
        started = [l for l in audit_lines(self.audit) if l.get("op") == "kms-plugin-decrypt"
                   and l["type"] == "request" and l.get("client_uid", "").startswith("drain-")]
        self.assertGreaterEqual(ok, 1)
        if os.environ.get("KMS_PLUGIN_DEBUG"):
            print("drain: %d in flight at SIGTERM, %d answered, %d refused with UNAVAILABLE"
                  % (in_flight, ok, len(futs) - ok))
        self.assertEqual(len(done), len(started))
        self.assertEqual(len(done), ok)

    def test_sigterm_with_a_client_that_never_acks_the_ping(self):
        """SIGTERM sends each connection a shutdown notice and a PING, and the final GOAWAY
        once the PING is acknowledged. A client that never acknowledges it gets the final
        GOAWAY a second later anyway (before, it could open calls until the 10 s grace), its
        call in flight is still answered, and kmsd exits without waiting out the grace."""
        self.start(fsync="never")
        self.assertEqual(self.p.status().healthz, "ok")
        self.p.close()  # the gRPC client's own connection would acknowledge its PING
        self.p = None
        h2 = RawH2(self.sock)
        h2.handshake()
        # a Status call on stream 1, its message not sent yet: a call in flight
        h2.call_headers(1, b"Status")
        t0 = time.monotonic()
        self.srv.proc.send_signal(15)
        goaways, pings = [], 0
        while len(goaways) < 2:
            f = h2.frame()
            self.assertIsNotNone(f, "the connection closed before the final GOAWAY")
            t, flags, _, payload = f
            if t == 7:
                goaways.append((time.monotonic() - t0,
                                int.from_bytes(payload[:4], "big") & 0x7fffffff))
            pings += t == 6 and not flags & 1  # never acknowledged here
        self.assertEqual(pings, 1)
        # the notice (last stream 2^31-1), then, a second on, the final one naming stream 1
        self.assertEqual([g[1] for g in goaways], [0x7fffffff, 1], goaways)
        self.assertGreaterEqual(goaways[1][0], 0.9)
        self.assertLess(goaways[1][0], 5)
        # the call in flight is still answered
        h2.send_frame(0, 1, 1, b"\x00\x00\x00\x00\x00")  # an empty StatusRequest, END_STREAM
        ended = False
        while not ended:
            f = h2.frame()
            self.assertIsNotNone(f, "the connection closed before the call was answered")
            t, flags, stream, _ = f
            ended = stream == 1 and t in (0, 1) and bool(flags & 1)
        h2.close()
        rc = self.srv.wait_exit(20)
        waited = time.monotonic() - t0
        self.assertEqual(rc, 0, self.srv.log_tail())
        self.assertNotIn("grace time over", self.srv.log_text())
        self.assertLess(waited, 9)  # not the 10 s grace
        self.srv.cleanup()
        self.srv = None


class TestSocketSafety(unittest.TestCase):
    """What kmsd does with a file already at the socket path."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="kmsd-plugin-sock-")
        self.path = os.path.join(self.dir, "p.sock")

    def run_kmsd(self, extra):
        return KmsdServer(workdir=self.dir, extra_args=["-kms-plugin-socket=" + self.path,
                                                        "-kms-plugin-key=k"] + extra)

    def test_stale_socket_replaced(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(self.path)
        s.close()  # the file stays; nobody answers on it
        srv = self.run_kmsd([])
        try:
            srv.start()
            wait_socket(self.path)
            self.assertEqual(srv.request("POST", "transit/keys/k", {}).status, 200)
            p = Plugin(self.path)
            self.assertEqual(p.status().healthz, "ok")
            p.close()
        finally:
            self.assertEqual(srv.stop(), 0)
            srv.cleanup()

    def refused(self, expect):
        proc = subprocess.run([KMSD_BIN, "server", "-dev", "-dev-listen-address=127.0.0.1:0",
                               "-kms-plugin-socket=" + self.path, "-kms-plugin-key=k"],
                              capture_output=True, timeout=30)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn(expect, proc.stderr.decode())

    def test_regular_file_not_removed(self):
        with open(self.path, "w") as f:
            f.write("precious")
        self.refused("not a socket")
        with open(self.path) as f:
            self.assertEqual(f.read(), "precious")

    def test_live_socket_not_taken(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(self.path)
        s.listen(1)
        try:
            self.refused("another process is serving it")
            self.assertTrue(stat.S_ISSOCK(os.lstat(self.path).st_mode))
        finally:
            s.close()

    def test_replaced_socket_left_alone(self):
        # a kmsd started on the same path while this one drains (a rolling restart) has put
        # its own socket there: this one's exit must not remove it
        srv = self.run_kmsd([])
        try:
            srv.start()
            wait_socket(self.path)
            os.unlink(self.path)
            other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.addCleanup(other.close)
            other.bind(self.path)
            other.listen(1)
        finally:
            self.assertEqual(srv.stop(), 0)
            srv.cleanup()
        self.assertTrue(stat.S_ISSOCK(os.lstat(self.path).st_mode), "the new socket was removed")

    def test_own_socket_removed(self):
        srv = self.run_kmsd([])
        try:
            srv.start()
            wait_socket(self.path)
        finally:
            self.assertEqual(srv.stop(), 0)
            srv.cleanup()
        self.assertFalse(os.path.exists(self.path))

    def test_long_path_and_too_many_refused(self):
        longp = os.path.join(self.dir, "x" * 120 + ".sock")
        proc = subprocess.run([KMSD_BIN, "server", "-dev", "-dev-listen-address=127.0.0.1:0",
                               "-kms-plugin-socket=" + longp, "-kms-plugin-key=k"],
                              capture_output=True, timeout=30)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("too long", proc.stderr.decode())
        self.assertFalse(os.path.exists(longp[:107]))
        # eight in the config file and one more by flag: refused, not dropped
        srv = KmsdServer(mode="config", workdir=self.dir, config={"kms_plugins": [
            {"socket": "%s/p%d.sock" % (self.dir, i), "key": "k"} for i in range(8)]},
            extra_args=["-kms-plugin-socket=%s/flag.sock" % self.dir, "-kms-plugin-key=k"])
        try:
            srv.spawn()
            rc = srv.wait_exit(30)
            self.assertIsNotNone(rc, "kmsd kept running with 9 plugins")
            self.assertNotEqual(rc, 0)
            self.assertIn("at most 8 kms plugins", srv.log_text())
        finally:
            srv.cleanup()

    def test_socket_open_to_every_user_refused(self):
        # 0666 or 0777: any local user could connect and Decrypt the cluster's DEK seeds
        for mode in ("0666", "0602"):
            with self.subTest(mode):
                srv = KmsdServer(mode="config", workdir=self.dir, config={"kms_plugins": [
                    {"socket": self.dir + "/open.sock", "key": "k", "socket_mode": mode}]})
                try:
                    srv.spawn()
                    rc = srv.wait_exit(30)
                    self.assertIsNotNone(rc, "kmsd kept running with socket_mode " + mode)
                    self.assertNotEqual(rc, 0)
                    self.assertIn("lets every local user call the plugin", srv.log_text())
                    self.assertFalse(os.path.exists(self.dir + "/open.sock"))
                finally:
                    srv.cleanup()

    def test_silent_connection_closed(self):
        # a connection that sends nothing (not even the HTTP/2 preface) is closed after the
        # handshake timeout (10 s), so idle sockets cannot hold the 1024 connection slots
        srv = self.run_kmsd([])
        try:
            srv.start()
            wait_socket(self.path)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.addCleanup(s.close)
            s.connect(self.path)
            s.settimeout(30)
            t0 = time.monotonic()
            data = s.recv(65536)  # the server's SETTINGS frame
            while data:
                data = s.recv(65536)
            self.assertGreater(time.monotonic() - t0, 5)
            # a client that talks is served as before
            self.assertEqual(srv.request("POST", "transit/keys/k", {}).status, 200)
            p = Plugin(self.path)
            self.assertEqual(p.status().healthz, "ok")
            p.close()
        finally:
            self.assertEqual(srv.stop(), 0)
            srv.cleanup()

    def test_wedged_socket_not_taken(self):
        # a server that listens but never accepts, its backlog full: refused at once, no hang
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(self.path)
        s.listen(0)
        fillers = []
        try:
            while True:
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                c.setblocking(False)
                fillers.append(c)
                try:
                    c.connect(self.path)
                except BlockingIOError:
                    break
                self.assertLess(len(fillers), 1000, "the backlog never filled")
            self.refused("another process is serving it")
        finally:
            for c in fillers:
                c.close()
            s.close()

    def test_flag_pairs(self):
        proc = subprocess.run([KMSD_BIN, "server", "-dev", "-kms-plugin-socket=" + self.path],
                              capture_output=True, timeout=30)
        self.assertEqual(proc.returncode, 2)
        self.assertIn("-kms-plugin-key", proc.stderr.decode())

    def test_status_interval_flag_bounds(self):
        # the config file takes kms_plugin_status_interval from 1 to 3600 s; the flag took any
        # length (1000000h: a healthy Status reused for 114 years, a rotation never reported
        # unless an Encrypt happened to use the new version)
        for v in ("1000000h", "3601s", "500ms", "0s"):
            with self.subTest(v):
                proc = subprocess.Popen([KMSD_BIN, "server", "-dev", "-kms-plugin-socket=" +
                                         self.path, "-kms-plugin-key=etcd-k",
                                         "-kms-plugin-status-interval=" + v],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                try:
                    _, err = proc.communicate(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.terminate()  # a dev server that started: it removes its store
                    _, err = proc.communicate(timeout=30)
                    self.fail("kmsd started with -kms-plugin-status-interval=" + v)
                self.assertEqual(proc.returncode, 2, err.decode())
                self.assertIn("invalid duration \"%s\" (1s to 1h)" % v, err.decode())


if __name__ == "__main__":
    unittest.main()
