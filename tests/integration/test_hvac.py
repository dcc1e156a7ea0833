"""hvac (the Python client the product doc uses) against kmsd: reference transit-api.md
§6 and the product doc's Python examples (direct mode and envelope helper).

The two examples below are the product doc's code, copied verbatim (the doc page lost
its indentation when it was saved; it is restored here as standard 4-space Python); the
doc's own text of them is kept in product_doc_python.txt next to this file, and
test_examples_are_the_doc_text holds the two together.
Only two things change when they run, as in a real pod without Kubernetes auth yet:
  * ADDR is replaced by the test server's address;
  * the `cli.auth.kubernetes.login(...)` line becomes `cli.token = <the token read>`.
The projected SA token file /var/run/secrets/openbao/token the examples open is
simulated: the runner redirects that one path to a temp file holding kmsd's root token.
Everything else, including NAMESPACE = "my-org" and the key name, is unchanged; the test
creates namespace my-org, mounts transit/ in it and creates the key first.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import hvac  # Debian's python3-hvac (/usr/bin/python3); missing fails, never skips
import hvac.exceptions

from kmsd_harness import KmsdTestCase, b64, unb64

DOC_DIRECT_MODE = '''\
# requirements.txt
# hvac>=2.1.0
import base64
import hvac

ADDR = "https://bao.kube-dc.cloud"
NAMESPACE = "my-org"
# Transit mount is at the root of the Org namespace.
# Key name follows "<org>-<project>-<KMSKey name>".
KEY_NAME = "my-org-my-project-app-secrets"
ROLE = "developer-my-org"

cli = hvac.Client(url=ADDR, namespace=NAMESPACE)

# Authenticate via the projected SA token
with open("/var/run/secrets/openbao/token") as f:
    jwt = f.read()
cli.auth.kubernetes.login(role=ROLE, jwt=jwt, mount_point="k8s-host")

# Encrypt
plain = b"hunter2"
resp = cli.write(
    f"transit/encrypt/{KEY_NAME}",
    plaintext=base64.b64encode(plain).decode(),
)
ct = resp["data"]["ciphertext"]
print("ciphertext:", ct)

# Decrypt
resp = cli.write(f"transit/decrypt/{KEY_NAME}", ciphertext=ct)
plain = base64.b64decode(resp["data"]["plaintext"])
print("plaintext:", plain.decode())
'''

DOC_ENVELOPE_HELPER = '''\
# requirements.txt
# hvac>=2.1.0
# cryptography>=42.0.0
import base64, os
import hvac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ADDR = "https://bao.kube-dc.cloud"
NAMESPACE = "my-org"
# Transit mount is at the root of the Org namespace.
# Key name follows "<org>-<project>-<KMSKey name>".
KEY_NAME = "my-org-my-project-app-secrets"
ROLE = "developer-my-org"

def _client():
    cli = hvac.Client(url=ADDR, namespace=NAMESPACE)
    with open("/var/run/secrets/openbao/token") as f:
        cli.auth.kubernetes.login(role=ROLE, jwt=f.read(), mount_point="k8s-host")
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
    return nonce + ct, wrapped # wire: nonce || ciphertext || tag

def decrypt_envelope(blob: bytes, wrapped: str) -> bytes:
    cli = _client()
    dek = base64.b64decode(
        cli.write(f"transit/decrypt/{KEY_NAME}", ciphertext=wrapped)["data"]["plaintext"]
    )
    return AESGCM(dek).decrypt(blob[:12], blob[12:], None)

if __name__ == "__main__":
    payload = b"the whole novel in one bytestring"
    ct, wrapped = encrypt_envelope(payload)
    print(decrypt_envelope(ct, wrapped))
'''

DOC_ADDR_LINE = 'ADDR = "https://bao.kube-dc.cloud"'
DOC_LOGIN_DIRECT = 'cli.auth.kubernetes.login(role=ROLE, jwt=jwt, mount_point="k8s-host")'
DOC_LOGIN_ENVELOPE = ('cli.auth.kubernetes.login(role=ROLE, jwt=f.read(), '
                      'mount_point="k8s-host")')

# Runs an example file with the SA token path redirected to a temp file.
RUNNER = r'''
import builtins, runpy, sys
_real_open = builtins.open
_TOKEN_PATH = "/var/run/secrets/openbao/token"
_token_file = sys.argv[2]
def _open(file, *args, **kwargs):
    if file == _TOKEN_PATH:
        file = _token_file
    return _real_open(file, *args, **kwargs)
builtins.open = _open
path, mode = sys.argv[1], sys.argv[3]
sys.argv = [path]
if mode == "main":
    runpy.run_path(path, run_name="__main__")
else:
    # call the helper functions on a payload far above the 64 KiB direct limit
    ns = runpy.run_path(path, run_name="doc_example")
    blob = bytes(range(256)) * 4096          # 1 MiB
    ct, wrapped = ns["encrypt_envelope"](blob)
    assert wrapped.startswith("vault:v"), wrapped
    assert len(ct) == len(blob) + 28, len(ct)
    assert ns["decrypt_envelope"](ct, wrapped) == blob
    print("wrapped:", wrapped)
    print("big envelope ok")
'''

DOC_KEY = "my-org-my-project-app-secrets"


def substitute(code, addr, login_line):
    assert code.count(DOC_ADDR_LINE) == 1
    assert code.count(login_line) == 1
    code = code.replace(DOC_ADDR_LINE, 'ADDR = "%s"' % addr)
    token_expr = "jwt" if "jwt=jwt" in login_line else "f.read()"
    return code.replace(login_line, "cli.token = %s" % token_expr)


class HvacTest(KmsdTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        srv = cls.server
        r = srv.request("POST", "sys/namespaces/my-org", {})
        assert r.status in (200, 204), r.describe()
        r = srv.request("POST", "sys/mounts/transit", {"type": "transit"}, namespace="my-org")
        assert r.status == 204, r.describe()
        r = srv.request("POST", "transit/keys/" + DOC_KEY, {}, namespace="my-org")
        assert r.status == 200, r.describe()

    def client(self, token=None, namespace=None):
        return hvac.Client(url=self.server.addr,
                           token=self.server.root_token if token is None else token,
                           namespace=namespace)

    # ---- the product doc's examples -------------------------------------------
    def run_example(self, code, mode="main"):
        tmp = tempfile.mkdtemp(prefix="kmsd-doc-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "example.py")
        with open(path, "w") as f:
            f.write(code)
        token_file = os.path.join(tmp, "token")
        with open(token_file, "w") as f:
            f.write(self.server.root_token)
        runner = os.path.join(tmp, "runner.py")
        with open(runner, "w") as f:
            f.write(RUNNER)
        env = dict(os.environ)
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        env.pop("VAULT_ADDR", None)
        env.pop("VAULT_TOKEN", None)
        p = subprocess.run([sys.executable, runner, path, token_file, mode],
                           capture_output=True, text=True, timeout=60, env=env, cwd=tmp)
        if p.returncode != 0:
            self.fail("example failed (rc=%d)\nstdout:\n%s\nstderr:\n%s" % (
                p.returncode, p.stdout, p.stderr))
        return p.stdout

    def test_examples_are_the_doc_text(self):
        """The embedded examples are the product doc's code (whitespace aside)."""
        here = os.path.dirname(os.path.abspath(__file__))
        with open(os.path.join(here, "product_doc_python.txt")) as f:
            doc = [ln.strip() for ln in f.read().splitlines() if ln.strip()]
        for code in (DOC_DIRECT_MODE, DOC_ENVELOPE_HELPER):
            lines = [ln.strip() for ln in code.splitlines() if ln.strip()]
            self.assertTrue(any(doc[i:i + len(lines)] == lines for i in range(len(doc))),
                            "example differs from the product doc:\n" + code)

    def test_doc_direct_mode(self):
        code = substitute(DOC_DIRECT_MODE, self.server.addr, DOC_LOGIN_DIRECT)
        out = self.run_example(code).splitlines()
        self.assertEqual(len(out), 2, out)
        self.assertTrue(out[0].startswith("ciphertext: vault:v1:"), out)
        self.assertEqual(out[1], "plaintext: hunter2")
        ct = out[0].split(" ", 1)[1]
        # made with the my-org key, not a root-namespace key of the same name
        r = self.req("POST", "transit/decrypt/" + DOC_KEY, {"ciphertext": ct},
                     namespace="my-org")
        self.assertStatus(r, 200)
        self.assertEqual(unb64(r.data["plaintext"]), b"hunter2")
        self.assertStatus(self.req("GET", "transit/keys/" + DOC_KEY), 404)

    def test_doc_envelope_helper(self):
        code = substitute(DOC_ENVELOPE_HELPER, self.server.addr, DOC_LOGIN_ENVELOPE)
        out = self.run_example(code)
        self.assertEqual(out, "b'the whole novel in one bytestring'\n")

    def test_doc_envelope_helper_large_blob(self):
        code = substitute(DOC_ENVELOPE_HELPER, self.server.addr, DOC_LOGIN_ENVELOPE)
        out = self.run_example(code, mode="functions").splitlines()
        self.assertEqual(out[-1], "big envelope ok")
        wrapped = out[0].split(" ", 1)[1]
        r = self.req("POST", "transit/decrypt/" + DOC_KEY, {"ciphertext": wrapped},
                     namespace="my-org")
        self.assertStatus(r, 200)
        self.assertEqual(len(unb64(r.data["plaintext"])), 32)

    def test_doc_after_rotation(self):
        # "After rotation ... the vault:vN: prefix bumps; existing ciphertexts decrypt fine"
        cli = self.client(namespace="my-org")
        old = cli.write("transit/encrypt/" + DOC_KEY, plaintext=b64("before"))
        name = self.uniq("doc-rot")
        cli.secrets.transit.create_key(name)
        ct1 = cli.secrets.transit.encrypt_data(name, plaintext=b64("v1"))["data"]["ciphertext"]
        cli.secrets.transit.rotate_key(name)
        ct2 = cli.secrets.transit.encrypt_data(name, plaintext=b64("v2"))["data"]["ciphertext"]
        self.assertTrue(ct1.startswith("vault:v1:"))
        self.assertTrue(ct2.startswith("vault:v2:"))
        for ct, pt in ((ct1, b"v1"), (ct2, b"v2")):
            r = cli.secrets.transit.decrypt_data(name, ciphertext=ct)
            self.assertEqual(unb64(r["data"]["plaintext"]), pt)
        r = cli.write("transit/decrypt/" + DOC_KEY, ciphertext=old["data"]["ciphertext"])
        self.assertEqual(unb64(r["data"]["plaintext"]), b"before")

    # ---- hvac transit API --------------------------------------------------------
    def test_key_lifecycle(self):
        cli = self.client()
        t = cli.secrets.transit
        name = self.uniq("hv")
        r = t.create_key(name, key_type="chacha20-poly1305", exportable=False)
        self.assertIsInstance(r, dict, r)
        self.assertEqual(r["data"]["type"], "chacha20-poly1305")
        r = t.read_key(name)
        self.assertEqual(r["data"]["name"], name)
        self.assertEqual(r["data"]["latest_version"], 1)
        keys = t.list_keys()["data"]["keys"]
        self.assertIn(name, keys)
        self.assertEqual(keys, sorted(keys))
        self.assertEqual(cli.list("transit/keys")["data"]["keys"], keys)
        r = t.rotate_key(name)
        self.assertIsInstance(r, dict, r)
        self.assertEqual(r["data"]["latest_version"], 2)
        r = t.update_key_configuration(name, min_decryption_version=2, deletion_allowed=True)
        self.assertIsInstance(r, dict, r)
        self.assertEqual(r["data"]["min_decryption_version"], 2)
        self.assertIs(r["data"]["deletion_allowed"], True)
        r = t.delete_key(name)
        self.assertEqual(r.status_code, 204)
        with self.assertRaises(hvac.exceptions.InvalidPath) as cm:
            t.read_key(name)
        self.assertEqual(cm.exception.errors, [])
        self.assertIsNone(cli.read("transit/keys/" + name))

    def test_crypto_calls(self):
        cli = self.client()
        t = cli.secrets.transit
        name = self.uniq("hvc")
        t.create_key(name)
        r = t.encrypt_data(name, plaintext=b64("hvac data"))
        ct = r["data"]["ciphertext"]
        self.assertTrue(ct.startswith("vault:v1:"))
        r = t.decrypt_data(name, ciphertext=ct)
        self.assertEqual(unb64(r["data"]["plaintext"]), b"hvac data")
        t.rotate_key(name)
        r = t.rewrap_data(name, ciphertext=ct)
        self.assertTrue(r["data"]["ciphertext"].startswith("vault:v2:"))
        self.assertEqual(unb64(t.decrypt_data(name, ciphertext=r["data"]["ciphertext"])
                               ["data"]["plaintext"]), b"hvac data")
        r = t.encrypt_data(name, plaintext=b64("pinned"), key_version=1)
        self.assertTrue(r["data"]["ciphertext"].startswith("vault:v1:"))
        for bits, size in ((128, 16), (256, 32), (512, 64)):
            r = t.generate_data_key(name, key_type="plaintext", bits=bits)
            key = unb64(r["data"]["plaintext"])
            self.assertEqual(len(key), size)
            d = t.decrypt_data(name, ciphertext=r["data"]["ciphertext"])
            self.assertEqual(unb64(d["data"]["plaintext"]), key)
        r = t.generate_data_key(name, key_type="wrapped")
        self.assertNotIn("plaintext", r["data"])
        # hvac always sends `plaintext`; with batch_input it must be ignored
        r = t.encrypt_data(name, plaintext="", batch_input=[
            {"plaintext": b64("a"), "reference": "1"}, {"plaintext": b64("b")}])
        res = r["data"]["batch_results"]
        self.assertEqual([x["reference"] for x in res], ["1", ""])
        r = t.decrypt_data(name, ciphertext="", batch_input=[
            {"ciphertext": x["ciphertext"]} for x in res])
        self.assertEqual([unb64(x["plaintext"]) for x in r["data"]["batch_results"]],
                         [b"a", b"b"])

    def test_derived_context(self):
        t = self.client().secrets.transit
        name = self.uniq("hvd")
        t.create_key(name, derived=True, convergent_encryption=True)
        a = t.encrypt_data(name, plaintext=b64("x"), context=b64("c"))["data"]["ciphertext"]
        b = t.encrypt_data(name, plaintext=b64("x"), context=b64("c"))["data"]["ciphertext"]
        self.assertEqual(a, b)
        r = t.generate_data_key(name, key_type="plaintext", context=b64("c"))
        self.assertEqual(len(unb64(r["data"]["plaintext"])), 32)

    def test_exceptions(self):
        cli = self.client()
        t = cli.secrets.transit
        name = self.uniq("hve")
        t.create_key(name)
        with self.assertRaises(hvac.exceptions.InvalidRequest) as cm:
            t.decrypt_data(name, ciphertext="garbage")
        self.assertEqual(cm.exception.errors, ["invalid ciphertext: no prefix"])
        with self.assertRaises(hvac.exceptions.InvalidRequest) as cm:
            t.export_key(name, key_type="encryption-key")
        self.assertEqual(cm.exception.errors, ["private key material is not exportable"])
        with self.assertRaises(hvac.exceptions.InvalidRequest) as cm:
            t.delete_key(name)
        self.assertEqual(cm.exception.errors, [
            "error deleting policy %s: deletion is not allowed for this key" % name])
        with self.assertRaises(hvac.exceptions.InvalidPath) as cm:
            t.read_key(self.uniq("missing"))
        self.assertEqual(cm.exception.errors, [])
        with self.assertRaises(hvac.exceptions.InvalidPath):
            cli.secrets.transit.read_key(name, mount_point="no-such-mount")
        with self.assertRaises(hvac.exceptions.Forbidden) as cm:
            self.client(token="not-a-token").secrets.transit.read_key(name)
        self.assertEqual(cm.exception.errors, ["permission denied"])
        with self.assertRaises(hvac.exceptions.InvalidPath) as cm:
            self.client(namespace="no-such-org").secrets.transit.read_key(name)
        self.assertEqual(cm.exception.errors, ["namespace not found"])
        with self.assertRaises(hvac.exceptions.InternalServerError):
            t.encrypt_data(name, plaintext="", batch_input=[1])
        # a partial-failure batch (400) raises as well (§6)
        with self.assertRaises(hvac.exceptions.InvalidRequest):
            t.encrypt_data(name, plaintext="", batch_input=[
                {"plaintext": b64("ok")}, {"plaintext": "!!!!"}])

    def test_sys_calls(self):
        cli = self.client()
        health = cli.sys.read_health_status(method="GET")
        self.assertIs(health["initialized"], True)
        self.assertIs(health["sealed"], False)
        ns = self.uniq("hvns")
        cli.sys.create_namespace(ns)
        listed = cli.sys.list_namespaces()
        self.assertIn(ns + "/", listed["data"]["keys"])
        mount = self.uniq("hvmount")
        # hvac sends description/config/options/... as JSON null
        r = cli.sys.enable_secrets_engine("transit", path=mount)
        self.assertEqual(r.status_code, 204)
        mounts = cli.sys.list_mounted_secrets_engines()
        self.assertEqual(mounts[mount + "/"]["type"], "transit")
        self.assertEqual(mounts["data"][mount + "/"]["type"], "transit")
        cli.secrets.transit.create_key("k", mount_point=mount)
        ct = cli.secrets.transit.encrypt_data("k", plaintext=b64("m"), mount_point=mount)
        self.assertTrue(ct["data"]["ciphertext"].startswith("vault:v1:"))
        r = cli.sys.disable_secrets_engine(mount)
        self.assertEqual(r.status_code, 204)
        self.assertNotIn(mount + "/", cli.sys.list_mounted_secrets_engines()["data"])
        r = cli.sys.delete_namespace(ns)
        self.assertIn(r.status_code if hasattr(r, "status_code") else 200, (200, 204))

    def test_is_authenticated(self):
        self.assertIs(self.client().is_authenticated(), True)
        self.assertIs(self.client(token="not-a-token").is_authenticated(), False)

    def test_namespace_client(self):
        cli = self.client(namespace="my-org")
        t = cli.secrets.transit
        r = t.read_key(DOC_KEY)
        self.assertEqual(r["data"]["name"], DOC_KEY)
        self.assertIs(r["data"]["deletion_allowed"], False)
        self.assertIn(DOC_KEY, t.list_keys()["data"]["keys"])
        ct = t.encrypt_data(DOC_KEY, plaintext=b64("ns"))["data"]["ciphertext"]
        self.assertEqual(unb64(t.decrypt_data(DOC_KEY, ciphertext=ct)["data"]["plaintext"]),
                         b"ns")
        # root-namespace client cannot see the my-org key
        with self.assertRaises(hvac.exceptions.InvalidPath):
            self.client().secrets.transit.read_key(DOC_KEY)


if __name__ == "__main__":
    unittest.main()
