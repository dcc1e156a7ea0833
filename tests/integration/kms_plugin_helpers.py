"""Helpers for the KMS plugin tests: a gRPC client built from kmsd's own kmsplugin/api.proto.

The stubs are generated at test time with Debian's python3-grpc-tools (grpc_tools.protoc)
into a temporary directory, from the same .proto file protoc-c compiles into kmsd, and the
calls go through Debian's python3-grpcio: the real gRPC client over the real unix socket.
"""

import atexit
import importlib
import os
import shutil
import socket
import sys
import tempfile
import time

import grpc  # python3-grpcio
from grpc_tools import protoc  # python3-grpc-tools

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "kmsplugin"))

_stub_dir = None
pb = None
pb_grpc = None


def load_stubs():
    """Generate api_pb2 / api_pb2_grpc from kmsplugin/api.proto (once per process)."""
    global _stub_dir, pb, pb_grpc
    if pb is not None:
        return pb, pb_grpc
    _stub_dir = tempfile.mkdtemp(prefix="kms-plugin-stubs-")
    atexit.register(shutil.rmtree, _stub_dir, True)
    rc = protoc.main(["grpc_tools.protoc", "-I" + PROTO_DIR, "--python_out=" + _stub_dir,
                      "--grpc_python_out=" + _stub_dir, os.path.join(PROTO_DIR, "api.proto")])
    if rc != 0:
        raise AssertionError("grpc_tools.protoc failed on kmsplugin/api.proto (rc=%d)" % rc)
    sys.path.insert(0, _stub_dir)
    pb = importlib.import_module("api_pb2")
    pb_grpc = importlib.import_module("api_pb2_grpc")
    return pb, pb_grpc


class Plugin:
    """A gRPC channel to a plugin socket, with the three calls."""

    def __init__(self, path, options=None):
        load_stubs()
        self.path = path
        self.channel = grpc.insecure_channel("unix://" + path, options=options or [])
        self.stub = pb_grpc.KeyManagementServiceStub(self.channel)

    def close(self):
        self.channel.close()

    def status(self, timeout=10):
        return self.stub.Status(pb.StatusRequest(), timeout=timeout)

    def encrypt(self, plaintext, uid="it-encrypt", timeout=10):
        return self.stub.Encrypt(pb.EncryptRequest(plaintext=plaintext, uid=uid), timeout=timeout)

    def decrypt(self, ciphertext, key_id, uid="it-decrypt", annotations=None, timeout=10):
        return self.stub.Decrypt(pb.DecryptRequest(ciphertext=ciphertext, uid=uid, key_id=key_id,
                                                   annotations=annotations or {}),
                                 timeout=timeout)


def rpc_error(fn, *args, **kw):
    """Run a call that must fail; returns (code, details)."""
    try:
        r = fn(*args, **kw)
    except grpc.RpcError as e:
        return e.code(), e.details()
    raise AssertionError("the call succeeded (%r); an error was expected" % (r,))


def socket_answers(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_socket(path, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path) and socket_answers(path):
            return
        time.sleep(0.02)
    raise AssertionError("nothing answers on %s after %.0fs" % (path, timeout))


def wait_for(pred, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("timed out after %.1fs waiting for %s (last: %r)" % (timeout, what, last))


class RawH2:
    """A hand-driven HTTP/2 client on a plugin socket, for what a gRPC client never does
    (ignore a PING, leave a request unfinished, send its own grpc-timeout): frames out with
    HPACK literals only; the server's header blocks are decoded with Debian's python3-hpack."""

    def __init__(self, path, timeout=30):
        import hpack  # python3-hpack
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.buf = b""
        self.decoder = hpack.Decoder()
        self.block = {}  # stream -> header block bytes until END_HEADERS
        self.headers = {}  # stream -> [(name, value)] of the server's HEADERS, in order

    @staticmethod
    def frame_bytes(ftype, flags, stream, payload=b""):
        return (len(payload).to_bytes(3, "big") + bytes([ftype, flags]) +
                stream.to_bytes(4, "big") + payload)

    def send_frame(self, ftype, flags, stream, payload=b""):
        self.s.sendall(self.frame_bytes(ftype, flags, stream, payload))

    @staticmethod
    def literal(name, value):  # HPACK: literal header field without indexing
        return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value

    def frame(self):
        """(type, flags, stream, payload), or None once the server closed the connection."""
        while len(self.buf) < 9 or len(self.buf) < 9 + int.from_bytes(self.buf[:3], "big"):
            more = self.s.recv(65536)
            if not more:
                return None
            self.buf += more
        n = int.from_bytes(self.buf[:3], "big")
        f = (self.buf[3], self.buf[4], int.from_bytes(self.buf[5:9], "big") & 0x7fffffff,
             self.buf[9:9 + n])
        self.buf = self.buf[9 + n:]
        t, flags, stream, payload = f
        if t in (1, 9):  # HEADERS, CONTINUATION: every block decoded in order (HPACK's table)
            if t == 1:
                if flags & 0x8:  # PADDED
                    payload = payload[1:len(payload) - payload[0]]
                if flags & 0x20:  # PRIORITY
                    payload = payload[5:]
            self.block[stream] = self.block.get(stream, b"") + payload
            if flags & 0x4:  # END_HEADERS
                self.headers.setdefault(stream, []).extend(
                    self.decoder.decode(self.block.pop(stream)))
        return f

    def answer(self, stream):
        """Frames until `stream` ends (END_STREAM or RST_STREAM): a dict with `headers` (the
        server's header fields, trailers included, name -> last value), `data` (the DATA
        payload), `rst` (the RST_STREAM error code, or None) and `frames` (the types)."""
        data, rst, types, ended = b"", None, [], False
        while True:
            f = self.frame()
            if f is None:
                raise AssertionError("the server closed the connection; stream %d unanswered"
                                     % stream)
            t, flags, st, payload = f
            if st != stream:
                continue
            types.append(t)
            if t == 0:
                data += payload
            if t == 3:
                rst = int.from_bytes(payload, "big")
            ended = ended or t == 3 or (t in (0, 1) and flags & 1)
            if ended and stream not in self.block:  # a block's CONTINUATION frames are in
                break
        return {"headers": dict(self.headers.get(stream, [])), "data": data, "rst": rst,
                "frames": types}

    def handshake(self):
        """The preface and an empty SETTINGS; the server's SETTINGS acknowledged."""
        self.s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        self.send_frame(4, 0, 0)
        while True:
            t, flags, _, _ = self.frame()
            if t == 4 and not flags & 1:
                self.send_frame(4, 1, 0)
                return

    def headers_frame(self, stream, method, extra=()):
        lit = self.literal
        return self.frame_bytes(1, 4, stream, lit(b":method", b"POST") + lit(b":scheme", b"http") +
                                lit(b":path", b"/v2.KeyManagementService/" + method) +
                                lit(b":authority", b"localhost") +
                                lit(b"content-type", b"application/grpc") +
                                lit(b"te", b"trailers") + b"".join(lit(n, v) for n, v in extra))

    def call_headers(self, stream, method, extra=()):
        """HEADERS of a call of `method` (Status, Encrypt, Decrypt), the message to follow;
        `extra`: more (name, value) header fields, such as (b"grpc-timeout", b"500m")."""
        self.s.sendall(self.headers_frame(stream, method, extra))

    def call(self, stream, method, message, extra=()):
        """A whole call in one write: HEADERS, the message in one DATA frame with END_STREAM."""
        self.s.sendall(self.headers_frame(stream, method, extra) + self.frame_bytes(
            0, 1, stream, b"\x00" + len(message).to_bytes(4, "big") + message))

    def close(self):
        self.s.close()

