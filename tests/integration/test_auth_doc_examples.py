"""The product doc's Python examples (KMS page: "Via a workload (Python)" and "Python envelope
helper"), run with their real Kubernetes login against kmsd.

The two programs below are the doc's code as published (the saved page lost its blank lines
and indentation; both are restored as standard Python). When they run, exactly two things
change, as in a pod:
  * ADDR is the test server's address;
  * the projected token path /var/run/secrets/openbao/token names a temp file holding a
    ServiceAccount JWT minted by a fake cluster issuer (audience openbao).
The login line `cli.auth.kubernetes.login(role=ROLE, jwt=..., mount_point="k8s-host")` runs
unchanged. The server is configured only through the Vault-compatible API: namespace
my-org, its transit/ mount, the k8s-host kubernetes auth mount with pem_keys, and the role
developer-my-org bound to the ServiceAccount with audience openbao and token_policies
kms-developer (the product's Developer role).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import hvac  # Debian's python3-hvac (/usr/bin/python3); missing fails, never skips
import hvac.exceptions

from kmsd_harness import KmsdTestCase, unb64
from auth_helpers import KEY, ORG, Issuer, make_role, ok, setup_org

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
    return nonce + ct, wrapped  # wire: nonce || ciphertext || tag

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
DOC_TOKEN_PATH = '"/var/run/secrets/openbao/token"'
LOGIN_LINES = ('cli.auth.kubernetes.login(role=ROLE, jwt=jwt, mount_point="k8s-host")',
               'cli.auth.kubernetes.login(role=ROLE, jwt=f.read(), mount_point="k8s-host")')

# Calls the envelope helpers on a blob far above the 64 KiB direct limit.
BIG_BLOB_RUNNER = r'''
import runpy, sys
ns = runpy.run_path(sys.argv[1], run_name="doc_example")
blob = bytes(range(256)) * 4096          # 1 MiB
ct, wrapped = ns["encrypt_envelope"](blob)
assert wrapped.startswith("vault:v"), wrapped
assert len(ct) == len(blob) + 28, len(ct)
assert ns["decrypt_envelope"](ct, wrapped) == blob
print("wrapped:", wrapped)
print("big envelope ok")
'''


class DocExamplesWithLoginTest(KmsdTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        srv = cls.server
        cls.iss = Issuer()
        setup_org(srv, issuer=cls.iss)  # my-org, transit/, auth/k8s-host/ with pem_keys
        make_role(srv, "developer-my-org", "kms-developer", sa="app", ns="my-project",
                  audience="openbao")
        ok(srv.request("POST", "transit/keys/" + KEY, {}, namespace=ORG))
        cls.tmp = tempfile.mkdtemp(prefix="kmsd-doc-auth-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def program(self, code):
        """The doc's code with ADDR and the token path set; the login line untouched."""
        self.assertEqual(code.count(DOC_ADDR_LINE), 1)
        self.assertEqual(code.count(DOC_TOKEN_PATH), 1)
        self.assertEqual(sum(code.count(l) for l in LOGIN_LINES), 1)
        token_file = os.path.join(self.tmp, "token")
        with open(token_file, "w") as f:
            f.write(self.iss.mint())  # the projected token, audience openbao
        code = code.replace(DOC_ADDR_LINE, 'ADDR = "%s"' % self.server.addr)
        code = code.replace(DOC_TOKEN_PATH, repr(token_file))
        path = os.path.join(self.tmp, "example-%s.py" % self.uniq("p"))
        with open(path, "w") as f:
            f.write(code)
        return path

    def run_python(self, *argv):
        env = dict(os.environ)
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        for k in ("VAULT_ADDR", "VAULT_TOKEN", "VAULT_NAMESPACE"):
            env.pop(k, None)
        p = subprocess.run([sys.executable] + list(argv), capture_output=True, text=True,
                           timeout=60, env=env, cwd=self.tmp)
        if p.returncode != 0:
            self.fail("example failed (rc=%d)\nstdout:\n%s\nstderr:\n%s" % (
                p.returncode, p.stdout, p.stderr))
        return p.stdout

    def test_direct_mode(self):
        out = self.run_python(self.program(DOC_DIRECT_MODE)).splitlines()
        self.assertEqual(len(out), 2, out)
        self.assertTrue(out[0].startswith("ciphertext: vault:v"), out)
        self.assertEqual(out[1], "plaintext: hunter2")
        # made with my-org's key
        ct = out[0].split(" ", 1)[1]
        r = ok(self.req("POST", "transit/decrypt/" + KEY, {"ciphertext": ct}, namespace=ORG),
               200)
        self.assertEqual(unb64(r.data["plaintext"]), b"hunter2")

    def test_envelope_helper(self):
        out = self.run_python(self.program(DOC_ENVELOPE_HELPER))
        self.assertEqual(out, "b'the whole novel in one bytestring'\n")

    def test_envelope_helper_large_blob(self):
        runner = os.path.join(self.tmp, "big_runner.py")
        with open(runner, "w") as f:
            f.write(BIG_BLOB_RUNNER)
        out = self.run_python(runner, self.program(DOC_ENVELOPE_HELPER)).splitlines()
        self.assertEqual(out[-1], "big envelope ok")

    def test_hvac_admin_setup(self):
        # the admin snippet of docs/auth.md, with hvac's own admin calls
        addr, root = self.server.addr, self.server.root_token
        admin = hvac.Client(url=addr, token=root)
        admin.sys.create_namespace("hvac-org")
        org = hvac.Client(url=addr, token=root, namespace="hvac-org")
        org.sys.enable_secrets_engine("transit", path="transit")
        org.sys.enable_auth_method("kubernetes", path="k8s-host")
        org.write("auth/k8s-host/config", jwks=json.dumps(self.iss.jwks()),
                  issuer=self.iss.issuer)
        org.write("auth/k8s-host/role/developer-hvac-org", bound_service_account_names="app",
                  bound_service_account_namespaces="my-project", audience="openbao",
                  token_policies="kms-developer,only-a")
        # a workload token reaches its own project's keys only: <org>-<project>-<name>
        k = "hvac-org-my-project-"
        org.sys.create_or_update_policy(
            "only-a", 'path "transit/keys/%sa" { capabilities = ["create", "update"] }' % k)
        self.assertIn("only-a", org.sys.list_policies()["data"]["policies"])
        self.assertIn("k8s-host/", org.sys.list_auth_methods()["data"])
        org.secrets.transit.create_key(k + "b")
        app = hvac.Client(url=addr, namespace="hvac-org")
        app.auth.kubernetes.login(role="developer-hvac-org", jwt=self.iss.mint(),
                                  mount_point="k8s-host")
        self.assertTrue(app.is_authenticated())
        app.secrets.transit.create_key(k + "a")
        ct = app.secrets.transit.encrypt_data(k + "b", plaintext="aGk=")["data"]["ciphertext"]
        self.assertEqual(app.secrets.transit.decrypt_data(k + "b", ciphertext=ct)["data"]
                         ["plaintext"], "aGk=")
        with self.assertRaises(hvac.exceptions.Forbidden):
            app.secrets.transit.rotate_key(k + "b")
        with self.assertRaises(hvac.exceptions.Forbidden):
            app.secrets.transit.create_key(k + "c")
        for c in (admin, org, app):
            c.adapter.close()

    def test_login_is_required(self):
        # the same program with a token from a ServiceAccount the role does not bind fails
        code = self.program(DOC_DIRECT_MODE)
        with open(os.path.join(self.tmp, "token"), "w") as f:
            f.write(self.iss.mint(sa="someone-else"))
        env = dict(os.environ)
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        p = subprocess.run([sys.executable, code], capture_output=True, text=True, timeout=60,
                           env=env, cwd=self.tmp)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("service account name not authorized", p.stderr)


if __name__ == "__main__":
    unittest.main()
