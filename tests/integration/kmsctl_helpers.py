"""Shared pieces of the test_kmsctl* suites: where the kmsctl binary is, how to run it against
a test server with a clean environment, and the product doc's texts (the KMSKey YAML, the
`keys describe` output, the Python envelope helper) that the tests hold kmsctl to.

KMSCTL_BIN selects the binary; the default is ../../build/kmsctl from this folder.  A missing
binary fails the tests rather than skipping them.
"""

import os
import re
import subprocess
import tempfile

from kmsd_harness import KmsdServer, KmsdTestCase

HERE = os.path.dirname(os.path.abspath(__file__))
KMSCTL_BIN = os.environ.get("KMSCTL_BIN") or os.path.normpath(
    os.path.join(HERE, "..", "..", "build", "kmsctl"))

ORG = "my-org"
PROJECT = "my-project"

# The product doc's manifest (section "Create a key / Via kubectl"), verbatim.
DOC_KMSKEY_YAML = """\
apiVersion: security.kube-dc.com/v1alpha1
kind: KMSKey
metadata:
  name: app-secrets
  namespace: my-project
spec:
  purpose: application
  algorithm: aes256-gcm96
  rotation:
    enabled: true
    interval: 90d
  deletionPolicy: retain
"""

# The product doc's `kube-dc kms keys describe app-secrets` output (section "Inspect"),
# without its leading "# " comment markers.
DOC_DESCRIBE = """\
NAME PURPOSE ALGORITHM VERSION ROTATION
app-secrets application aes256-gcm96 3 enabled (90d)

Status:
KeyId: transit/keys/my-org-my-project-app-secrets
Current version: 3
Min decryption ver: 1
Last rotated: 2026-04-15T02:00:11Z
Next rotation: 2026-07-14T02:00:11Z
"""

RFC3339_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")

# The product doc's Python envelope helper (section "Envelope encryption"), verbatim except
# that _client() takes a ready token instead of the Kubernetes login, and ADDR/TOKEN are
# filled in by the test.
DOC_PY_ENVELOPE = '''\
import base64, os
import hvac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ADDR = "https://bao.kube-dc.cloud"
NAMESPACE = "my-org"
# Transit mount is at the root of the Org namespace.
# Key name follows "<org>-<project>-<KMSKey name>".
KEY_NAME = "my-org-my-project-app-secrets"
ROLE = "developer-my-org"
TOKEN = None

def _client():
    cli = hvac.Client(url=ADDR, namespace=NAMESPACE)
    cli.token = TOKEN
    return cli

def encrypt_envelope(plaintext: bytes) -> tuple[bytes, str]:
    cli = _client()
    dek = os.urandom(32)
    wrapped = cli.write(
        f"transit/encrypt/{KEY_NAME}",
        plaintext=base64.b64encode(dek).decode(),
    )["data"]["ciphertext"]
    nonce = os.urandom(12)
    ct = AESGCM(dek).encrypt(nonce, plaintext, None)
    return nonce + ct, wrapped  # wire: nonce || ciphertext || tag

def decrypt_envelope(blob: bytes, wrapped: str) -> bytes:
    cli = _client()
    dek = base64.b64decode(
        cli.write(f"transit/decrypt/{KEY_NAME}", ciphertext=wrapped)["data"]["plaintext"]
    )
    return AESGCM(dek).decrypt(blob[:12], blob[12:], None)
'''


def normalize(text):
    """Whitespace-insensitive, timestamp-insensitive form of a CLI output."""
    lines = []
    for line in text.strip("\n").split("\n"):
        lines.append(RFC3339_RE.sub("<T>", " ".join(line.split())))
    return "\n".join(lines)


def doc_envelope_module(addr, token):
    ns = {}
    exec(compile(DOC_PY_ENVELOPE.replace('"https://bao.kube-dc.cloud"', repr(addr)),
                 "doc_envelope_helper", "exec"), ns)
    ns["TOKEN"] = token
    return ns


class Result:
    def __init__(self, argv, rc, out, err):
        self.argv, self.rc, self.out, self.err = argv, rc, out, err

    @property
    def text(self):
        return self.out.decode("utf-8", "replace")

    @property
    def errtext(self):
        return self.err.decode("utf-8", "replace")

    def __repr__(self):
        return "kmsctl %s -> rc=%d\nstdout: %r\nstderr: %r" % (
            " ".join(self.argv), self.rc, self.out[:2000], self.err[:2000])


class KmsctlMixin:
    """Runs kmsctl with HOME in a private directory and no KMS_/VAULT_/BAO_ variables set,
    so only what a test passes reaches the binary."""

    home = None

    @classmethod
    def make_home(cls):
        if not os.access(KMSCTL_BIN, os.X_OK):
            raise AssertionError("kmsctl binary not found or not executable: %s "
                                 "(build it, or set KMSCTL_BIN)" % KMSCTL_BIN)
        cls.home = tempfile.mkdtemp(prefix="kmsctl-it-home-")

    @classmethod
    def clean_env(cls, extra=None):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("KMS_", "VAULT_", "BAO_"))}
        env["HOME"] = cls.home
        env.update(extra or {})
        return env

    def kmsctl(self, *args, stdin=None, env=None, cwd=None, conn=True, server=None,
               token=None, timeout=60):
        """Run `kmsctl ARGS`, with conn preceded by the connection flags
        -n/--project/--addr/--token (what a user would set once in the environment)."""
        srv = server or self.server
        argv = list(args)
        if conn:
            # before the command (kmsctl finds the command word after global options), so
            # that a test's own -n/--project later on the line wins
            argv = ["-n", ORG, "--project", PROJECT, "--addr", srv.addr,
                    "--token", token or srv.token] + argv
        p = subprocess.run([KMSCTL_BIN] + argv, input=stdin, capture_output=True,
                           env=self.clean_env(env), cwd=cwd or self.home, timeout=timeout)
        return Result(argv, p.returncode, p.stdout, p.stderr)

    def ok(self, *args, **kw):
        r = self.kmsctl(*args, **kw)
        if r.rc != 0:
            self.fail("expected exit 0: %r" % r)
        return r

    def fails(self, rc, *args, **kw):
        r = self.kmsctl(*args, **kw)
        if r.rc != rc:
            self.fail("expected exit %d: %r" % (rc, r))
        return r


def start_dev_server(extra_args=None):
    srv = KmsdServer(mode="dev", extra_args=extra_args or [])
    srv.start()
    return srv


def setup_org_namespace(srv, org=ORG):
    r = srv.request("POST", "sys/namespaces/" + org, {})
    if r.status != 200:
        raise AssertionError("creating namespace %s: %s" % (org, r.describe()))


class KmsctlTestCase(KmsctlMixin, KmsdTestCase):
    """A dev server (with a short KMSKey deletion countdown) and namespace my-org."""

    server_args = ["-kms-deletion-delay=3s"]

    @classmethod
    def setUpClass(cls):
        cls.make_home()
        cls.server = KmsdServer(mode="dev", extra_args=cls.server_args)
        try:
            cls.server.start()
            setup_org_namespace(cls.server)
        except BaseException:
            cls.server.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        import shutil
        shutil.rmtree(cls.home, ignore_errors=True)
