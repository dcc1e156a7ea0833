"""kmsctl against a real kmsd: every `kube-dc kms …` command of the product doc run as written
(with `kmsctl` for `kube-dc kms`, plus -n/--project/--addr/--token), its output compared with
the doc's layout; the doc's KMSKey YAML through `kmsctl apply -f`; exit codes; global options
and environment variables; login; TLS; and the full KMSKey lifecycle of issue 5 with a server
restart in the middle.
"""

import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import threading
import time
import unittest

import yaml

from kmsd_harness import ClosedPort, KmsdServer, KmsdTestCase, b64, unb64, wait_for
from kmsctl_helpers import (DOC_DESCRIBE, DOC_KMSKEY_YAML, KMSCTL_BIN, ORG, PROJECT,
                            KmsctlMixin, KmsctlTestCase, normalize, setup_org_namespace)
import auth_helpers


def without_age(text):
    """The rows of a `keys list` table without the AGE column, which counts up in real time
    ("0s" on one call, "1s" on the next); the column's shape is still checked."""
    rows = []
    for line in text.strip("\n").split("\n"):
        cols = line.split()
        assert cols and (cols[-1] == "AGE" or re.match(r"^\d+[smhdy]", cols[-1])), line
        rows.append(cols[:-1])
    return rows


def version_of(ct):
    m = re.match(r"^vault:v(\d+):", ct)
    return int(m.group(1)) if m else None


class DocCommandsTest(KmsctlTestCase):
    """The product doc's commands, in the doc's order, on KMSKey app-secrets of my-project."""

    # archive-2026 (deletionPolicy=schedule) is listed by later tests: with the base class's
    # 3 s countdown a slow run (ASan) saw the controller destroy it between two listings.
    # Expiry itself is LifecycleTest's.
    server_args = ["-kms-deletion-delay=1h"]

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.work = tempfile.mkdtemp(prefix="kmsctl-doc-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.work, ignore_errors=True)
        super().tearDownClass()

    def apply_refused(self, d, i, text):
        """`kmsctl apply` of manifest text (written to d/m<i>.yaml) refused with exit 2 before
        anything is sent (the address is a closed port): (path, result)."""
        path = os.path.join(d, "m%d.yaml" % i)
        with open(path, "w") as f:
            f.write(text)
        with ClosedPort() as nowhere:
            r = self.fails(2, "apply", "-f", path, "-n", ORG, "--addr", nowhere.url, conn=False)
        return path, r

    def describe_obj(self, name, project=PROJECT):
        r = self.ok("keys", "describe", name, "-o", "json", "--project", project)
        return json.loads(r.out)

    def test_deletion_actions_keep_concurrent_applies(self):
        """schedule-delete and cancel-delete read, change and store the KMSKey as one step with
        every other write: an apply that lands meanwhile is never overwritten with the spec
        they read (it was: a stale rotation interval came back). Changing deletionPolicy moves
        generation on; asking for what already holds stores nothing."""
        path = "kms/keys/%s/raced" % PROJECT
        r = self.server.request("POST", path, {"spec": {"purpose": "application",
                                                        "rotation": {"enabled": True,
                                                                     "interval": "7d"}}},
                                namespace=ORG)
        self.assertEqual(r.status, 200, r.body)
        meta = r.json["data"]["metadata"]
        r = self.server.request("POST", path + "/schedule-delete", {}, namespace=ORG)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json["data"]["metadata"]["generation"], meta["generation"] + 1)
        again = self.server.request("POST", path + "/schedule-delete", {}, namespace=ORG)
        self.assertEqual(again.json["data"]["metadata"], r.json["data"]["metadata"])
        r = self.server.request("POST", path + "/cancel-delete", {}, namespace=ORG)
        self.assertEqual(r.json["data"]["metadata"]["generation"], meta["generation"] + 2)

        stop = threading.Event()
        errors = []

        def toggler():
            i = 0
            while not stop.is_set():
                action = "/schedule-delete" if i % 2 == 0 else "/cancel-delete"
                t = self.server.request("POST", path + action, {}, namespace=ORG)
                if t.status != 200:
                    errors.append((action, t.status, t.body))
                    return
                i += 1

        th = threading.Thread(target=toggler)
        th.start()
        try:
            for i in range(150):
                interval = "%dd" % (8 + i % 2)
                w = self.server.request("POST", path, {"spec": {"rotation": {
                    "enabled": True, "interval": interval}}}, namespace=ORG)
                self.assertEqual(w.status, 200, w.body)
                got = self.server.request("GET", path, namespace=ORG)
                # only this loop changes the interval: what it wrote is what anyone reads
                self.assertEqual(got.json["data"]["spec"]["rotation"]["interval"], interval,
                                 "write %d lost" % i)
        finally:
            stop.set()
            th.join()
        self.assertEqual(errors, [])

    def test_1_create_variants(self):
        # kube-dc kms keys create app-secrets  (default: application, aes256-gcm96, no rotation)
        r = self.ok("keys", "create", "app-secrets", "--project", "plain-project")
        self.assertEqual(r.text, "Created KMSKey my-org-plain-project/app-secrets "
                                 "(purpose=application algorithm=aes256-gcm96 rotation=disabled "
                                 "deletionPolicy=retain)\n"
                                 "Watch progress: kmsctl keys describe app-secrets\n")
        o = self.describe_obj("app-secrets", "plain-project")
        self.assertEqual(o["spec"]["rotation"], {"enabled": False})
        # kube-dc kms keys create app-secrets --rotation=90d
        r = self.ok("keys", "create", "app-secrets", "--rotation=90d")
        self.assertIn("rotation=90d", r.text)
        o = self.describe_obj("app-secrets")
        self.assertEqual(o["spec"]["rotation"], {"enabled": True, "interval": "90d"})
        self.assertEqual(o["status"]["keyId"], "transit/keys/my-org-my-project-app-secrets")
        # kube-dc kms keys create archive-2026 --purpose=backup --deletion-policy=schedule
        r = self.ok("keys", "create", "archive-2026", "--purpose=backup",
                    "--deletion-policy=schedule")
        self.assertIn("purpose=backup", r.text)
        self.assertIn("deletionPolicy=schedule", r.text)
        o = self.describe_obj("archive-2026")
        self.assertEqual(o["spec"]["purpose"], "backup")
        self.assertIsNotNone(o["status"]["scheduledDeletion"])
        # create refuses an existing name instead of reconfiguring it
        r = self.fails(1, "keys", "create", "app-secrets", "--purpose=etcd")
        self.assertIn("already exists", r.errtext)
        # the server's validation message comes through with exit 1
        r = self.fails(1, "keys", "create", "bad-purpose", "--purpose=nope")
        self.assertIn('spec.purpose: Unsupported value: "nope"', r.errtext)
        r = self.fails(1, "keys", "create", "bad-interval", "--rotation=90x")
        self.assertIn("spec.rotation.interval: Invalid value", r.errtext)
        # --enable-rotation needs an interval (kube-dc's message)
        r = self.fails(2, "keys", "create", "x", "--enable-rotation")
        self.assertIn("--rotation interval is required when rotation is enabled", r.errtext)

    def test_2_inspect(self):
        self.ok("keys", "rotate", "app-secrets")
        self.ok("keys", "rotate", "app-secrets")
        # kube-dc kms keys describe app-secrets: the doc's layout, key for key
        r = self.ok("keys", "describe", "app-secrets")
        self.assertEqual(normalize(r.text), normalize(DOC_DESCRIBE))
        lines = r.text.split("\n")
        self.assertTrue(lines[0].startswith("NAME"))
        self.assertEqual(lines[2], "")
        self.assertEqual(lines[3], "Status:")
        self.assertEqual(lines[4], "  KeyId:               "
                                   "transit/keys/my-org-my-project-app-secrets")
        # Next rotation = Last rotated + 90 days
        stamps = re.findall(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r.text)
        self.assertEqual(len(stamps), 2, r.text)
        t0 = time.mktime(time.strptime(stamps[0], "%Y-%m-%dT%H:%M:%SZ"))
        t1 = time.mktime(time.strptime(stamps[1], "%Y-%m-%dT%H:%M:%SZ"))
        self.assertEqual(t1 - t0, 90 * 86400, stamps)
        # `keys get` is an alias
        self.assertEqual(self.ok("keys", "get", "app-secrets").text, r.text)
        # kube-dc kms keys list: the real CLI's columns, sorted by name
        r = self.ok("keys", "list")
        rows = [l.split() for l in r.text.strip().split("\n")]
        self.assertEqual(rows[0], ["NAME", "PURPOSE", "ALGORITHM", "VERSION", "ROTATION",
                                   "DELETION", "READY", "AGE"])
        byname = {row[0]: row for row in rows[1:]}
        self.assertEqual(byname["app-secrets"][:8],
                         ["app-secrets", "application", "aes256-gcm96", "3", "enabled", "(90d)",
                          "retain", "True"])
        self.assertEqual(byname["archive-2026"][:7],
                         ["archive-2026", "backup", "aes256-gcm96", "1", "disabled", "schedule",
                          "False/DeletionScheduled"])
        self.assertRegex(byname["app-secrets"][-1], r"^\d+[smhdy]")
        self.assertEqual([row[0] for row in rows[1:]], sorted(byname))
        # an empty project
        self.assertEqual(self.ok("keys", "list", "--project", "empty").text, "No KMSKeys.\n")
        # kubectl get kmskey app-secrets -o yaml, as written with kmsctl (it was "unknown
        # command"): the object `keys get -o yaml` prints; get kmskeys is `keys list`
        want = self.ok("keys", "get", "app-secrets", "-o", "yaml").out
        self.assertEqual(self.ok("get", "kmskey", "app-secrets", "-o", "yaml").out, want)
        self.assertEqual(yaml.safe_load(want)["status"]["keyId"],
                         "transit/keys/my-org-my-project-app-secrets")
        self.assertEqual(self.ok("-o", "yaml", "get", "kmskey/app-secrets").out, want)
        self.assertEqual(self.ok("get", "kmskey.security.kube-dc.com", "app-secrets", "-o",
                                 "yaml").out, want)
        self.assertEqual(self.ok("get", "kmskeys", "-o", "json").out,
                         self.ok("keys", "list", "-o", "json").out)
        r = self.fails(1, "get", "kmskey", "nope")
        self.assertIn("KMSKey nope not found in project my-project", r.errtext)
        r = self.fails(2, "get", "secret", "app-secrets")
        self.assertIn('kmsctl get reads KMSKeys: kmsctl get kmskey NAME (or get kmskeys), not '
                      '"secret"', r.errtext)
        self.fails(2, "get")
        self.fails(2, "get", "kmskey", "a", "b")
        # its help is get's, whatever follows the kind
        for args in (("get", "--help"), ("get", "kmskey", "--help"), ("help", "get", "kmskey")):
            self.assertTrue(self.ok(*args, conn=False).text.startswith(
                "Usage: kmsctl get kmskey NAME"), args)

    def test_3b_out_targets(self):
        # --out follows a symbolic link (the file it names is replaced, the link stays), writes
        # into a FIFO or a device instead of replacing it with a regular file (as root,
        # --out /dev/null made /dev/null a file), and refuses a directory
        d = tempfile.mkdtemp(prefix="out-", dir=self.work)
        real, link, fifo = (os.path.join(d, n) for n in ("real.enc", "link.enc", "fifo"))
        with open(real, "w") as f:
            f.write("old")
        os.symlink(real, link)
        self.ok("encrypt", "app-secrets", "--plaintext=x", "--out", link)
        self.assertTrue(os.path.islink(link))
        with open(real) as f:
            self.assertTrue(f.read().startswith("vault:v"))
        os.mkfifo(fifo)
        got = []
        reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()))
        reader.start()
        self.ok("encrypt", "app-secrets", "--plaintext=x", "--out", fifo)
        reader.join(30)
        self.assertTrue(stat.S_ISFIFO(os.lstat(fifo).st_mode))
        self.assertTrue(got and got[0].startswith(b"vault:v"), got)
        r = self.fails(1, "encrypt", "app-secrets", "--plaintext=x", "--out", d)
        self.assertIn("is a directory", r.errtext)
        # /dev/stdout is the descriptor the shell set up: a pipe works, and a file opened for
        # appending (>>) keeps what it held (it was renamed over, or the link refused)
        r = self.ok("encrypt", "app-secrets", "--plaintext=x", "--out", "/dev/stdout")
        self.assertTrue(r.out.startswith(b"vault:v"), r)
        appended = os.path.join(d, "appended.txt")
        with open(appended, "w") as f:
            f.write("line1\n")
        argv = [KMSCTL_BIN, "-n", ORG, "--project", PROJECT, "--addr", self.server.addr,
                "--token", self.server.token, "encrypt", "app-secrets", "--plaintext=x",
                "--out", "/dev/stdout"]
        with open(appended, "ab") as out:
            p = subprocess.run(argv, stdout=out, stderr=subprocess.PIPE, timeout=60,
                               env=self.clean_env())
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(appended) as f:
            lines = f.read().splitlines()
        self.assertEqual(lines[0], "line1")
        self.assertTrue(lines[1].startswith("vault:v"), lines)
        # an envelope never writes plaintext it has not authenticated into a pipe or device
        src = os.path.join(d, "src")
        with open(src, "wb") as f:
            f.write(b"data")
        r = self.fails(1, "envelope", "encrypt", "app-secrets", "--in", src, "--out", fifo)
        self.assertIn("is not a regular file", r.errtext)
        self.assertTrue(stat.S_ISFIFO(os.lstat(fifo).st_mode))

    def test_3c_hostile_input_refused_before_sending(self):
        # a NUL in a YAML name acted on the name before it ("app-secrets\0-staging" scheduled
        # app-secrets for deletion); a repeated key let the last value win; a CR/LF in the
        # namespace or the token went into a request header. All exit 2, nothing sent.
        d = tempfile.mkdtemp(prefix="yaml-", dir=self.work)
        head = "apiVersion: security.kube-dc.com/v1alpha1\nkind: KMSKey\nmetadata:\n"
        cases = [(head + '  name: "app-secrets\\0-staging"\n  namespace: %s\nspec:\n'
                  "  deletionPolicy: schedule\n" % PROJECT, "a NUL byte in a YAML value"),
                 (head + "  name: dup\n  namespace: %s\nspec:\n  purpose: application\n"
                  "  purpose: etcd\n" % PROJECT, 'key "purpose" appears twice')]
        for i, (text, want) in enumerate(cases):
            _, r = self.apply_refused(d, i, text)
            self.assertIn(want, r.errtext)
        r = self.fails(2, "keys", "list", "-n", ORG + "\r\nX-Evil: 1", "--project", PROJECT)
        self.assertIn("invalid namespace", r.errtext)
        r = self.fails(2, "keys", "list", "--project", PROJECT,
                       "--token", self.server.token + "\r\nX-Evil: 1")
        self.assertIn("the token holds a control character", r.errtext)
        self.assertNotIn(self.server.token, r.errtext)

    def test_3d_yaml_tags_and_aliases_refused(self):
        # kmsctl reads a manifest as JSON: a tag asking for another meaning (!!binary: base64
        # bytes, !!python/object: a constructor, !foo: an application type, !!set: a set) was
        # read as the plain string; now it is refused, naming the tag and its line, and so is a
        # core tag that does not fit its value. An alias is refused, never expanded (no alias
        # bomb). Exit 2, nothing sent (the address is a closed port).
        d = tempfile.mkdtemp(prefix="yaml-tags-", dir=self.work)
        head = ("apiVersion: security.kube-dc.com/v1alpha1\nkind: KMSKey\nmetadata:\n"
                "  name: tagged\n  namespace: %s\nspec:\n" % PROJECT)
        refused = ("is not accepted (only !!str, !!int, !!float, !!bool, !!null, !!map and !!seq, "
                   "each on a value of its kind)")
        cases = [
            ("  purpose: !!binary YXBwbGljYXRpb24=\n", "line 7: YAML tag !!binary " + refused),
            ("  purpose: !!python/object:os.system application\n",
             "line 7: YAML tag !!python/object:os.system " + refused),
            ("  purpose: !foo application\n", "line 7: YAML tag !foo " + refused),
            ("  purpose: ! application\n", "line 7: YAML tag ! " + refused),
            ("  rotation: !!set {enabled: true}\n", "line 7: YAML tag !!set " + refused),
            ("  rotation: !!omap [{enabled: true}]\n", "line 7: YAML tag !!omap " + refused),
            ("  rotation:\n    interval: !!timestamp 2026-01-01\n",
             "line 8: YAML tag !!timestamp " + refused),
            ("  !!binary cHVycG9zZQ==: application\n", "line 7: YAML tag !!binary " + refused),
            ("  exportable: !!bool maybe\n", 'line 7: YAML tag !!bool does not fit the value '
                                            '"maybe"'),
            ("  exportable: !!int '1.5'\n", 'line 7: YAML tag !!int does not fit the value '
                                           '"1.5"'),
            ("  rotation: !!str {enabled: true}\n", "line 7: YAML tag !!str on a mapping"),
            ("  purpose: !!seq application\n", "line 7: YAML tag !!seq on a scalar"),
            ("  rotation: &r {enabled: true}\n  deletionPolicy: *r\n",
             "line 8: YAML aliases (*r) are not supported"),
        ]
        # the billion laughs: refused at the first alias, before anything grows
        laughs = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
            "%s: &%s [%s]\n" % (c, c, ", ".join(["*" + p] * 9))
            for p, c in zip("abcdefgh", "bcdefghi"))
        files = [(head + body, want) for body, want in cases] + [
            (laughs, "line 2: YAML aliases (*a) are not supported")]
        for i, (text, want) in enumerate(files):
            path, r = self.apply_refused(d, i, text)
            self.assertEqual(r.errtext, "Error: %s: %s\n" % (path, want))
        # kmsctl patch reads its patch the same way
        with ClosedPort() as nowhere:
            r = self.fails(2, "patch", "kmskey", "tagged", "-p",
                           "spec: {purpose: !!binary YXBwbGljYXRpb24=}", "-n", ORG, "--project",
                           PROJECT, "--addr", nowhere.url, conn=False)
        self.assertIn("--patch: line 1: YAML tag !!binary is not accepted", r.errtext)

    def test_3_encrypt_decrypt(self):
        # kube-dc kms encrypt app-secrets --plaintext="hunter2"  ->  vault:v3:...
        r = self.ok("encrypt", "app-secrets", "--plaintext=hunter2")
        self.assertRegex(r.text, r"^vault:v3:[A-Za-z0-9+/=]+\n$")
        ct = r.text.strip()
        # it is a real Transit ciphertext: the raw API decrypts it
        d = self.server.request("POST", "transit/decrypt/my-org-my-project-app-secrets",
                                {"ciphertext": ct}, namespace=ORG)
        self.assertEqual(unb64(d.data["plaintext"]), b"hunter2")
        # kube-dc kms encrypt app-secrets --plaintext-file=./token.txt > token.enc
        with open(os.path.join(self.work, "token.txt"), "w") as f:
            f.write("hunter2")
        r = self.ok("encrypt", "app-secrets", "--plaintext-file=./token.txt", cwd=self.work)
        with open(os.path.join(self.work, "token.enc"), "wb") as f:
            f.write(r.out)
        # kube-dc kms decrypt app-secrets --ciphertext-file=./token.enc  ->  hunter2
        r = self.ok("decrypt", "app-secrets", "--ciphertext-file=./token.enc", cwd=self.work)
        self.assertEqual(r.text, "hunter2\n")
        # inline ciphertext, stdin (`-`), and a ciphertext made by the raw API
        self.assertEqual(self.ok("decrypt", "app-secrets", "--ciphertext=" + ct).text,
                         "hunter2\n")
        self.assertEqual(self.ok("decrypt", "app-secrets", "--ciphertext-file", "-",
                                 stdin=(ct + "\n").encode()).text, "hunter2\n")
        api_ct = self.server.request("POST", "transit/encrypt/my-org-my-project-app-secrets",
                                     {"plaintext": b64("from the api")},
                                     namespace=ORG).data["ciphertext"]
        self.assertEqual(self.ok("decrypt", "app-secrets", "--ciphertext=" + api_ct).text,
                         "from the api\n")
        # binary plaintext from stdin, --out written 0600, bytes exact (no newline added)
        blob = bytes(range(256)) * 4
        r = self.ok("encrypt", "app-secrets", "--plaintext-file", "-", stdin=blob)
        out = os.path.join(self.work, "plain.bin")
        self.ok("decrypt", "app-secrets", "--ciphertext=" + r.text.strip(), "--out", out)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), blob)
        self.assertEqual(stat.S_IMODE(os.stat(out).st_mode), 0o600)
        r = self.ok("encrypt", "app-secrets", "--plaintext=x", "--out", out + ".enc")
        self.assertEqual(r.out, b"")
        with open(out + ".enc") as f:
            self.assertTrue(f.read().startswith("vault:v3:"))
        # decrypt refuses non-Transit input before any request (the address is unreachable)
        with ClosedPort() as nowhere:
            r = self.fails(2, "decrypt", "app-secrets", "--ciphertext=hunter2", "-n", ORG,
                           "--project", PROJECT, "--addr", nowhere.url, conn=False)
        self.assertIn("ciphertext must be in OpenBao 'vault:v<n>:...' form", r.errtext)
        # exactly one input
        r = self.fails(2, "encrypt", "app-secrets")
        self.assertIn("provide exactly one of --plaintext or --plaintext-file", r.errtext)
        self.fails(2, "encrypt", "app-secrets", "--plaintext=a", "--plaintext-file=b")
        # an empty inline value counts as not given (kube-dc's CLI), and says so
        r = self.fails(2, "encrypt", "app-secrets", "--plaintext=")
        self.assertIn("--plaintext is empty; for an empty plaintext use "
                      "--plaintext-file=/dev/null", r.errtext)
        r = self.ok("encrypt", "app-secrets", "--plaintext-file=/dev/null")
        self.assertTrue(r.out.startswith(b"vault:v"))
        # the direct-mode limit: 64 KiB passes, one byte more is refused by the server
        self.ok("encrypt", "app-secrets", "--plaintext-file", "-", stdin=b"a" * 65536)
        r = self.fails(1, "encrypt", "app-secrets", "--plaintext-file", "-", stdin=b"a" * 65537)
        self.assertIn("64 KiB", r.errtext)
        self.assertIn("kmsctl envelope encrypt", r.errtext)
        # a typo in the name does not mint a Transit key
        r = self.fails(1, "encrypt", "app-secretz", "--plaintext=x")
        self.assertIn("KMSKey app-secretz not found in project my-project", r.errtext)
        self.assertEqual(self.server.request(
            "GET", "transit/keys/my-org-my-project-app-secretz", namespace=ORG).status, 404)
        # ... and a typo in decrypt's name says which key is missing and where to look
        # (it printed Transit's bare "Error: encryption key not found")
        r = self.fails(1, "decrypt", "app-secretz", "--ciphertext=" + ct)
        self.assertIn('Error: Transit key my-org-my-project-app-secretz not found in '
                      'organization "my-org" (encryption key not found)\n', r.errtext)
        self.assertIn("Hint: check the KMSKey name, --project and -n/--namespace: "
                      "`kmsctl keys list --project my-project`", r.errtext)
        self.assertEqual(r.out, b"")

    def test_4_rotate_and_floor(self):
        old = self.ok("encrypt", "app-secrets", "--plaintext=old secret").text.strip()
        v = version_of(old)
        # kube-dc kms keys rotate app-secrets
        r = self.ok("keys", "rotate", "app-secrets")
        self.assertEqual(r.text, "Rotated KMSKey my-org-my-project/app-secrets "
                                 "(transit key my-org-my-project-app-secrets)\n")
        new = self.ok("encrypt", "app-secrets", "--plaintext=new secret").text.strip()
        self.assertEqual(version_of(new), v + 1)
        # old ciphertexts still decrypt after a rotation
        self.assertEqual(self.ok("decrypt", "app-secrets", "--ciphertext=" + old).text,
                         "old secret\n")
        # kube-dc kms keys set-min-decryption-version app-secrets N: no prompt, irreversible
        r = self.ok("keys", "set-min-decryption-version", "app-secrets", str(v + 1), stdin=b"")
        self.assertEqual(r.text, "Set min decryption version=%d for my-org-my-project/app-secrets"
                                 " (transit key my-org-my-project-app-secrets)\n" % (v + 1))
        r = self.fails(1, "decrypt", "app-secrets", "--ciphertext=" + old)
        self.assertIn("Error:", r.errtext)
        self.assertEqual(self.ok("decrypt", "app-secrets", "--ciphertext=" + new).text,
                         "new secret\n")
        o = self.describe_obj("app-secrets")
        self.assertEqual(o["status"]["minDecryptionVersion"], v + 1)
        # the trimmed versions are gone: lowering the floor cannot bring them back
        k = self.server.request("GET", "transit/keys/my-org-my-project-app-secrets",
                                namespace=ORG).data
        self.assertEqual(sorted(int(x) for x in k["keys"]), [v + 1])
        r = self.fails(2, "keys", "set-min-decryption-version", "app-secrets", "zero")
        self.assertIn("version must be an integer >= 1", r.errtext)
        self.fails(2, "keys", "set-min-decryption-version", "app-secrets")

    def test_5_delete(self):
        # kube-dc kms keys schedule-delete app-secrets
        r = self.ok("keys", "create", "doomed")
        r = self.ok("keys", "schedule-delete", "doomed")
        lines = r.text.split("\n")
        self.assertEqual(lines[0], "Scheduled deletion for my-org-my-project/doomed "
                                   "(deletionPolicy=schedule)")
        self.assertIn("Cancel before the countdown elapses: kmsctl keys cancel-delete doomed",
                      r.text)
        d = self.ok("keys", "describe", "doomed").text
        self.assertRegex(d, r"\n  Scheduled deletion:  \d{4}-")
        self.assertIn("\n  Ready:               False/DeletionScheduled\n", d)
        # kube-dc kms keys cancel-delete app-secrets
        r = self.ok("keys", "cancel-delete", "doomed")
        self.assertEqual(r.text, "Cancelled scheduled deletion for my-org-my-project/doomed "
                                 "(deletionPolicy=retain)\n")
        # again, with nothing scheduled: said so, not "Cancelled"
        r = self.ok("keys", "cancel-delete", "doomed")
        self.assertEqual(r.text, "No scheduled deletion for my-org-my-project/doomed "
                                 "(deletionPolicy=retain)\n")
        self.assertIn("had no deletion scheduled: nothing to cancel", r.errtext)
        self.assertEqual(normalize(self.ok("keys", "describe", "doomed").text).count("\n"), 8)
        # keys delete needs --yes
        r = self.fails(2, "keys", "delete", "doomed")
        self.assertIn("Re-run with --yes to confirm", r.errtext)
        r = self.ok("keys", "delete", "doomed", "--yes")
        self.assertEqual(r.text, "Deleted my-org-my-project/doomed\n")
        self.fails(1, "keys", "describe", "doomed")
        # retain: the Transit key survives its KMSKey
        self.assertEqual(self.server.request("GET", "transit/keys/my-org-my-project-doomed",
                                             namespace=ORG).status, 200)
        r = self.fails(1, "keys", "delete", "doomed", "--yes")
        self.assertIn("KMSKey doomed not found in project my-project", r.errtext)

    def test_6_output_formats(self):
        j = json.loads(self.ok("keys", "describe", "app-secrets", "-o", "json").out)
        y = yaml.safe_load(self.ok("keys", "describe", "app-secrets", "-o", "yaml").out)
        self.assertEqual(j["kind"], "KMSKey")
        self.assertEqual(j["apiVersion"], "security.kube-dc.com/v1alpha1")
        self.assertEqual(y, j)
        self.assertIsInstance(y["metadata"]["creationTimestamp"], str)
        lst = json.loads(self.ok("keys", "list", "-o", "json").out)
        self.assertEqual(lst["kind"], "KMSKeyList")
        names = [i["metadata"]["name"] for i in lst["items"]]
        self.assertEqual(names, sorted(names))
        self.assertIn("app-secrets", names)
        self.assertEqual(yaml.safe_load(self.ok("keys", "list", "-o", "yaml").out)["items"],
                         lst["items"])
        c = yaml.safe_load(self.ok("keys", "create", "fmt-key", "-o", "yaml").out)
        self.assertEqual(c["metadata"]["name"], "fmt-key")
        self.assertEqual(c["status"]["currentVersion"], 1)
        r = self.fails(2, "keys", "list", "-o", "xml")
        self.assertIn("-o must be table, json or yaml", r.errtext)

    def test_7_apply_doc_yaml(self):
        path = os.path.join(self.work, "kmskey.yaml")
        with open(path, "w") as f:
            f.write(DOC_KMSKEY_YAML.replace("app-secrets", "applied"))
        # kubectl apply -f kmskey.yaml  ->  kmsctl apply -f kmskey.yaml
        r = self.ok("apply", "-f", "kmskey.yaml", "-n", ORG, "--addr", self.server.addr,
                    "--token", self.server.token, conn=False, cwd=self.work)
        self.assertEqual(r.text, "kmskey.security.kube-dc.com/applied created\n")
        o = self.describe_obj("applied")
        self.assertEqual(o["spec"]["rotation"], {"enabled": True, "interval": "90d"})
        self.assertEqual(o["metadata"]["namespace"], "my-org-my-project")
        self.assertEqual(o["status"]["conditions"][0]["status"], "True")
        r = self.ok("apply", "-f", path)
        self.assertEqual(r.text, "kmskey.security.kube-dc.com/applied unchanged\n")
        # the Kube-DC project namespace form, from stdin, changing the interval
        text = DOC_KMSKEY_YAML.replace("app-secrets", "applied").replace(
            "namespace: my-project", "namespace: my-org-my-project").replace("90d", "30d")
        r = self.ok("apply", "-f", "-", stdin=text.encode())
        self.assertEqual(r.text, "kmskey.security.kube-dc.com/applied configured\n")
        self.assertEqual(self.describe_obj("applied")["spec"]["rotation"]["interval"], "30d")
        # kubectl's apply: a field the last apply set and this manifest leaves out goes back
        # to its default (rotation off, deletionPolicy retain); it was kept, and "unchanged"
        sched = DOC_KMSKEY_YAML.replace("app-secrets", "applied").replace(
            "deletionPolicy: retain", "deletionPolicy: schedule")
        self.assertEqual(self.ok("apply", "-f", "-", stdin=sched.encode()).text,
                         "kmskey.security.kube-dc.com/applied configured\n")
        bare = DOC_KMSKEY_YAML.replace("app-secrets", "applied").split("  rotation:")[0]
        r = self.ok("apply", "-f", "-", stdin=bare.encode())
        self.assertEqual(r.text, "kmskey.security.kube-dc.com/applied configured\n")
        o = self.describe_obj("applied")
        self.assertFalse(o["spec"]["rotation"].get("enabled", False), o["spec"])
        self.assertEqual(o["spec"]["deletionPolicy"], "retain")
        self.assertNotIn("last_applied", o)
        # a field set by patch and never applied stays, as kubectl keeps it
        self.ok("patch", "kmskey", "applied", "-p", '{"spec":{"rotation":{"interval":"7d",'
                                                    '"enabled":true}}}')
        r = self.ok("apply", "-f", "-", stdin=bare.encode())
        self.assertEqual(r.text, "kmskey.security.kube-dc.com/applied unchanged\n")
        self.assertEqual(self.describe_obj("applied")["spec"]["rotation"],
                         {"enabled": True, "interval": "7d"})
        # the patched values now given by an apply: the spec stays, what the last apply gave
        # changes (the next apply that drops rotation stops it), so the object changed and
        # kubectl says "configured" (resourceVersion moves, generation does not); then the
        # same manifest again is "unchanged" and stores nothing
        before = self.describe_obj("applied")["metadata"]
        same = bare + "  rotation:\n    enabled: true\n    interval: 7d\n"
        r = self.ok("apply", "-f", "-", stdin=same.encode())
        self.assertEqual(r.text, "kmskey.security.kube-dc.com/applied configured\n")
        after = self.describe_obj("applied")["metadata"]
        self.assertEqual(after["generation"], before["generation"])
        self.assertIsInstance(after["resourceVersion"], str)
        self.assertNotEqual(after["resourceVersion"], before["resourceVersion"])
        r = self.ok("apply", "-f", "-", stdin=same.encode())
        self.assertEqual(r.text, "kmskey.security.kube-dc.com/applied unchanged\n")
        self.assertEqual(self.describe_obj("applied")["metadata"], after)
        r = self.ok("apply", "-f", "-", stdin=bare.encode())
        self.assertEqual(r.text, "kmskey.security.kube-dc.com/applied configured\n")
        self.assertFalse(self.describe_obj("applied")["spec"]["rotation"].get("enabled", False))
        # a deletion asked for is not undone by an apply that leaves deletionPolicy out
        sched = DOC_KMSKEY_YAML.replace("app-secrets", "doomed-apply").replace(
            "deletionPolicy: retain", "deletionPolicy: schedule")
        self.ok("apply", "-f", "-", stdin=sched.encode())
        self.assertEqual(self.server.request("DELETE", "kms/keys/%s/doomed-apply" % PROJECT,
                                             namespace=ORG).status, 200)
        self.ok("apply", "-f", "-", stdin=sched.replace("  deletionPolicy: schedule\n",
                                                        "").encode())
        o = self.describe_obj("doomed-apply")
        self.assertEqual(o["spec"]["deletionPolicy"], "schedule")
        self.assertIn("deletionTimestamp", o["metadata"])
        self.assertIn("scheduledDeletion", o["status"])
        # the spec fields at the top level count as applied too (the API's other form)
        path = "kms/keys/%s/top-applied" % PROJECT
        r = self.server.request("POST", path, {"apply": True, "purpose": "application",
                                               "rotation": {"enabled": True, "interval": "7d"}},
                                namespace=ORG)
        self.assertEqual(r.status, 200, r.body)
        r = self.server.request("POST", path, {"apply": True, "spec": {"purpose": "application"}},
                                namespace=ORG)
        self.assertEqual(r.status, 200, r.body)
        self.assertFalse(self.describe_obj("top-applied")["spec"]["rotation"]["enabled"])
        # several documents
        multi = "\n---\n".join(DOC_KMSKEY_YAML.replace("app-secrets", n) for n in ("m1", "m2"))
        r = self.ok("apply", "-f", "-", stdin=multi.encode())
        self.assertEqual(r.text, "kmskey.security.kube-dc.com/m1 created\n"
                                 "kmskey.security.kube-dc.com/m2 created\n")
        # refusals: other kinds and broken YAML are usage errors, bad specs the server's 400
        r = self.fails(2, "apply", "-f", "-", stdin=b"apiVersion: v1\nkind: Secret\n"
                                                    b"metadata: {name: x}\n")
        self.assertIn("KMSKey objects only", r.errtext)
        self.fails(2, "apply", "-f", "-", stdin=b"kind: [unclosed\n")
        r = self.fails(1, "apply", "-f", "-",
                       stdin=DOC_KMSKEY_YAML.replace("application", "gaming").encode())
        self.assertIn('spec.purpose: Unsupported value: "gaming"', r.errtext)
        r = self.fails(2, "apply", "-f", "-", "--project", "other", stdin=DOC_KMSKEY_YAML.encode())
        self.assertIn("is not project other", r.errtext)
        r = self.fails(1, "apply", "-f", "-", stdin=DOC_KMSKEY_YAML.replace(
            "app-secrets", "applied").replace("aes256-gcm96", "chacha20-poly1305").encode())
        self.assertIn("immutable", r.errtext)
        self.fails(2, "apply")
        # core tags that mean what kmsctl reads the node as are accepted (quoted or not: the
        # tag gives the type), and an anchor without an alias changes nothing
        tagged = ("apiVersion: !!str security.kube-dc.com/v1alpha1\nkind: KMSKey\n"
                  "metadata: !!map\n  name: tagged\n  namespace: %s\n  labels: !!null\n"
                  "spec: !!map\n  purpose: !!str application\n"
                  "  rotation: &rot !!map {enabled: !!bool 'true', interval: !!str 30d}\n"
                  "  exportable: !!bool false\n" % PROJECT)
        r = self.ok("apply", "-f", "-", stdin=tagged.encode())
        self.assertEqual(r.text, "kmskey.security.kube-dc.com/tagged created\n")
        o = self.describe_obj("tagged")
        self.assertEqual(o["spec"]["rotation"], {"enabled": True, "interval": "30d"})
        self.assertEqual(o["spec"]["exportable"], False)


    def test_8_patch_doc_rotation(self):
        # kubectl patch kmskey app-secrets --type=merge -p '<the doc's YAML>'
        self.ok("keys", "create", "patched")
        doc_patch = "\nspec:\n  rotation:\n    enabled: true\n    interval: 90d\n"
        r = self.ok("patch", "kmskey", "patched", "--type=merge", "-p", doc_patch)
        self.assertEqual(r.text, "kmskey.security.kube-dc.com/patched patched\n")
        o = self.describe_obj("patched")
        self.assertEqual(o["spec"]["rotation"], {"enabled": True, "interval": "90d"})
        self.assertEqual(o["spec"]["purpose"], "application")  # untouched fields stay
        r = self.ok("patch", "kmskey/patched", "-p", doc_patch)
        self.assertEqual(r.text, "kmskey.security.kube-dc.com/patched patched (no change)\n")
        # JSON works too; null removes a field (RFC 7386): rotation back to its default
        self.ok("patch", "kmskeys", "patched", "-p", '{"spec":{"rotation":null}}')
        self.assertFalse(self.describe_obj("patched")["spec"].get("rotation", {}).get(
            "enabled", False))
        self.ok("patch", "kmskey", "patched", "-p", '{"spec":{"deletionPolicy":"schedule"}}')
        self.assertEqual(self.describe_obj("patched")["spec"]["deletionPolicy"], "schedule")
        # refusals: what kubectl refuses, and what a KMSKey does not have
        r = self.fails(2, "patch", "kmskey", "patched", "-p", "spec: {rotaton: {enabled: true}}")
        self.assertIn('unknown field "spec.rotaton"', r.errtext)
        r = self.fails(2, "patch", "kmskey", "patched", "--type=json", "-p", "[]")
        self.assertIn("--type=json is not supported", r.errtext)
        r = self.fails(2, "patch", "kmskey", "patched", "-p", "metadata: {name: other}")
        self.assertIn("spec only", r.errtext)
        self.fails(2, "patch", "secret", "patched", "-p", "spec: {}")
        self.fails(2, "patch", "kmskey", "patched")
        r = self.fails(1, "patch", "kmskey", "patched", "-p", "spec: {algorithm: chacha20-poly1305}")
        self.assertIn("immutable", r.errtext)
        self.fails(1, "patch", "kmskey", "nope", "-p", "spec: {deletionPolicy: retain}")

class ExitCodesAndGlobalsTest(KmsctlTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        r = cls.server.request("POST", "kms/keys/%s/k1" % PROJECT, {"spec": {}}, namespace=ORG)
        assert r.status == 200, r.describe()

    def test_exit_codes(self):
        self.fails(2, conn=False)
        self.fails(2, "frobnicate", conn=False)
        self.fails(2, "keys", conn=False)
        self.fails(2, "keys", "explode", "k1")
        self.fails(2, "keys", "describe")
        self.fails(2, "keys", "describe", "k1", "extra")
        self.fails(2, "keys", "list", "--bogus")
        self.fails(2, "keys", "describe", "Not_A_Name")
        r = self.fails(2, "keys", "list", "--addr", self.server.addr, conn=False)
        self.assertIn("no organization", r.errtext)
        r = self.fails(2, "keys", "list", "-n", ORG, "--addr", self.server.addr, conn=False)
        self.assertIn("no project", r.errtext)
        # the server said no: its message, exit 1
        r = self.fails(1, "keys", "list", token="not-a-token")
        self.assertRegex(r.errtext, r'^Error: permission denied: LIST kms/keys/my-project in '
                                    r'organization "my-org"\nHint: .*kmsctl login')
        r = self.fails(1, "keys", "describe", "nope")
        self.assertTrue(r.errtext.startswith(
            "Error: KMSKey nope not found in project my-project of organization my-org\n"),
            r.errtext)
        r = self.fails(1, "keys", "rotate", "nope")
        self.assertIn("KMSKey nope not found in project my-project", r.errtext)
        r = self.fails(1, "keys", "list", "-n", "no-such-org", "--project", PROJECT,
                       "--addr", self.server.addr, "--token", self.server.token, conn=False)
        self.assertIn("namespace not found", r.errtext)
        # transport failure
        with ClosedPort() as nowhere:
            r = self.fails(1, "keys", "list", "-n", ORG, "--project", PROJECT, "--token", "x",
                           "--addr", nowhere.url, conn=False)
        self.assertIn("cannot connect", r.errtext)
        for args in (["help"], ["--help"], ["keys", "--help"], ["envelope", "--help"],
                     ["encrypt", "--help"], ["version"]):
            self.ok(*args, conn=False)

    def test_context_that_is_not_base64_is_a_usage_error(self):
        # Transit's own answer ("illegal base64 data at input byte 0", exit 1) names no field:
        # kmsctl says which option is wrong, before anything is sent
        with ClosedPort() as nowhere:
            for verb, arg in (("encrypt", "--plaintext=x"),
                              ("decrypt", "--ciphertext=vault:v1:AAAA")):
                r = self.fails(2, verb, "k1", arg, "--context=%%%", "-n", ORG,
                               "--project", PROJECT, "--addr", nowhere.url, conn=False)
                self.assertIn("Error: --context must be base64 (standard alphabet, padded): "
                              "illegal base64 data at input byte 0", r.errtext)
                r = self.fails(2, verb, "k1", arg, "--context=YWJj=", "-n", ORG,
                               "--project", PROJECT, "--addr", nowhere.url, conn=False)
                self.assertIn("illegal base64 data at input byte 4", r.errtext)
        # valid base64 is passed through as before
        r = self.ok("encrypt", "k1", "--plaintext=x", "--context=YWJj")
        self.assertEqual(self.ok("decrypt", "k1", "--ciphertext=" + r.text.strip(),
                                 "--context=YWJj").text, "x\n")

    def test_global_flags_anywhere_and_environment(self):
        srv = self.server
        flags = ["-n", ORG, "--project", PROJECT, "--addr", srv.addr, "--token", srv.token]
        want = without_age(self.ok("keys", "list").text)
        self.assertIn("k1", [row[0] for row in want])
        for argv in (flags + ["keys", "list"], ["keys"] + flags + ["list"],
                     ["keys", "list"] + flags,
                     ["--namespace=" + ORG, "keys", "--project=" + PROJECT, "list",
                      "--addr=" + srv.addr, "--token=" + srv.token]):
            self.assertEqual(without_age(self.ok(*argv, conn=False).text), want, argv)
        env = {"KMS_ADDR": srv.addr, "KMS_TOKEN": srv.token, "KMS_NAMESPACE": ORG,
               "KMS_PROJECT": PROJECT}
        self.assertEqual(without_age(self.ok("keys", "list", env=env, conn=False).text), want)
        env = {"VAULT_ADDR": srv.addr, "VAULT_TOKEN": srv.token, "VAULT_NAMESPACE": ORG,
               "KMS_PROJECT": PROJECT}
        self.assertEqual(without_age(self.ok("keys", "list", env=env, conn=False).text), want)
        env = {"BAO_ADDR": srv.addr, "VAULT_TOKEN": srv.token, "KMS_NAMESPACE": ORG,
               "KMS_PROJECT": PROJECT}
        self.assertEqual(without_age(self.ok("keys", "list", env=env, conn=False).text), want)
        # flags win over the environment
        env = {"KMS_ADDR": "http://127.0.0.1:1", "KMS_TOKEN": "bad", "KMS_NAMESPACE": "nope",
               "KMS_PROJECT": "nope"}
        self.assertEqual(without_age(self.ok("keys", "list", env=env).text), want)
        # token files: KMS_TOKEN_FILE, then ~/.vault-token
        tf = os.path.join(self.home, "tok")
        with open(tf, "w") as f:
            f.write(srv.token + "\n")
        env = {"KMS_ADDR": srv.addr, "KMS_NAMESPACE": ORG, "KMS_PROJECT": PROJECT,
               "KMS_TOKEN_FILE": tf}
        self.assertEqual(without_age(self.ok("keys", "list", env=env, conn=False).text), want)
        with open(os.path.join(self.home, ".vault-token"), "w") as f:
            f.write(srv.token)
        try:
            env.pop("KMS_TOKEN_FILE")
            self.assertEqual(without_age(self.ok("keys", "list", env=env, conn=False).text), want)
        finally:
            os.unlink(os.path.join(self.home, ".vault-token"))
        # no token left anywhere: said before any request, as a usage error
        r = self.fails(2, "keys", "list", env=env, conn=False)
        self.assertIn("Error: no token:", r.errtext)
        # a token file that is a FIFO (or a directory) is no token file: kmsctl hung on the
        # FIFO's open, silently, until something wrote to it
        fifo = os.path.join(self.home, "tok-fifo")
        os.mkfifo(fifo)
        try:
            for path in (fifo, self.home):
                r = self.fails(2, "keys", "list", env=dict(env, KMS_TOKEN_FILE=path),
                               conn=False, timeout=20)
                self.assertIn("Error: no token:", r.errtext)
        finally:
            os.unlink(fifo)


class LoginTest(KmsctlTestCase):
    """kmsctl login with a Kubernetes ServiceAccount token and with an OIDC JWT; the stored
    token then drives the other commands under the product's roles."""

    @classmethod
    def setUpClass(cls):
        cls.make_home()
        cls.server = KmsdServer(mode="dev")
        try:
            cls.server.start()
            srv = cls.server
            cls.issuer = auth_helpers.Issuer()
            auth_helpers.setup_org(srv, issuer=cls.issuer, transit=False)
            auth_helpers.make_role(srv, "developer-my-org", "kms-developer")
            auth_helpers.make_role(srv, "viewer-my-org", "kms-viewer", sa="front")
            cls.idp = auth_helpers.Issuer(issuer="https://login.kube-dc.example")
            auth_helpers.ok(srv.request("POST", "sys/auth/jwt", {"type": "jwt"}, namespace=ORG))
            auth_helpers.ok(srv.request("POST", "auth/jwt/config",
                                        {"jwt_validation_pubkeys": [cls.idp.pem()],
                                         "bound_issuer": cls.idp.issuer}, namespace=ORG))
            auth_helpers.ok(srv.request("POST", "auth/jwt/role/people",
                                        {"role_type": "jwt", "user_claim": "email",
                                         "bound_audiences": "kube-dc",
                                         "token_policies": "kms-developer", "token_ttl": "30m"},
                                        namespace=ORG))
            r = srv.request("POST", "kms/keys/%s/app-secrets" % PROJECT, {}, namespace=ORG)
            assert r.status == 200, r.describe()
        except BaseException:
            cls.server.cleanup()
            raise

    def env(self):
        return {"KMS_ADDR": self.server.addr, "KMS_NAMESPACE": ORG, "KMS_PROJECT": PROJECT}

    def test_kubernetes_login(self):
        jwt_file = os.path.join(self.home, "sa-token")
        with open(jwt_file, "w") as f:
            f.write(self.issuer.mint())
        r = self.ok("login", "--method=kubernetes", "--mount=k8s-host",
                    "--role=developer-my-org", "--jwt-file=" + jwt_file, env=self.env(),
                    conn=False)
        path = os.path.join(self.home, ".config", "kmsctl", "token")
        self.assertIn("The token was stored in %s" % path, r.text)
        self.assertRegex(r.text, r"token_policies\s+\[\"default\" \"kms-developer\"\]")
        self.assertRegex(r.text, r"token_duration\s+\S+")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode), 0o700)
        with open(path) as f:
            tok = f.read()
        self.assertNotIn(tok, r.text)
        # later commands use the stored token: a developer encrypts and decrypts …
        ct = self.ok("encrypt", "app-secrets", "--plaintext=hunter2", env=self.env(),
                     conn=False).text.strip()
        self.assertEqual(self.ok("decrypt", "app-secrets", "--ciphertext=" + ct,
                                 env=self.env(), conn=False).text, "hunter2\n")
        self.assertIn("app-secrets", self.ok("keys", "list", env=self.env(), conn=False).text)
        # … but may not rotate (the server says no: exit 1)
        r = self.fails(1, "keys", "rotate", "app-secrets", env=self.env(), conn=False)
        self.assertIn("permission denied", r.errtext)
        # KMS_TOKEN still wins over the file
        env = dict(self.env(), KMS_TOKEN="bogus")
        self.fails(1, "keys", "list", env=env, conn=False)
        # a viewer encrypts but cannot decrypt
        with open(jwt_file, "w") as f:
            f.write(self.issuer.mint(sa="front"))
        vt = self.ok("login", "--role=viewer-my-org", "--jwt-file=" + jwt_file, "--no-store",
                     env=self.env(), conn=False).text.strip()
        self.assertTrue(vt)
        env = dict(self.env(), KMS_TOKEN=vt)
        ct = self.ok("encrypt", "app-secrets", "--plaintext=x", env=env, conn=False).text
        r = self.fails(1, "decrypt", "app-secrets", "--ciphertext=" + ct.strip(), env=env,
                       conn=False)
        self.assertRegex(r.errtext, r'^Error: permission denied: POST transit/decrypt/'
                                    r'my-org-my-project-app-secrets in organization "my-org"\n'
                                    r'Hint: ')
        # a wrong role or a bad JWT: exit 1 with the server's message
        r = self.fails(1, "login", "--role=nope", "--jwt-file=" + jwt_file, env=self.env(),
                       conn=False)
        self.assertIn("Error:", r.errtext)
        # a JWT the role refuses: the hint is about the JWT, not about a token to log in with
        with open(jwt_file, "w") as f:
            f.write(self.issuer.mint(aud=("someone-else",)))
        r = self.fails(1, "login", "--role=developer-my-org", "--jwt-file=" + jwt_file,
                       "--no-store", env=self.env(), conn=False)
        self.assertIn("Hint: the role refused this JWT", r.errtext)
        self.assertNotIn("kmsctl login --role=ROLE", r.errtext)
        # a mount that does not exist gets the same bare 403 from the server (as OpenBao):
        # the hint names that cause too (it blamed the JWT alone)
        r = self.fails(1, "login", "--mount=k8s-hots", "--role=developer-my-org",
                       "--jwt-file=" + jwt_file, "--no-store", env=self.env(), conn=False)
        self.assertIn('or no auth method is enabled at auth/k8s-hots/ in organization "my-org": '
                      'check --mount and -n/--namespace\n', r.errtext)
        self.assertEqual(r.out, b"")
        self.fails(2, "login", "--jwt-file=" + jwt_file, env=self.env(), conn=False)
        self.fails(2, "login", "--method=ldap", "--role=x", env=self.env(), conn=False)

    def test_other_project_refusal_names_the_binding(self):
        """A Kubernetes login's token is bound to its ServiceAccount's project: its 403 for
        another project's KMSKeys or Transit key used to say the token was "invalid, expired
        or its policies do not allow this" (the policies do allow it); the hint now names the
        project the token is bound to. A refusal by the policies keeps its own hint."""
        with open(os.path.join(self.home, "sa-token-bound"), "w") as f:
            f.write(self.issuer.mint())
        tok = self.ok("login", "--role=developer-my-org", "--no-store",
                      "--jwt-file=" + os.path.join(self.home, "sa-token-bound"),
                      env=self.env(), conn=False).text.strip()
        env = dict(self.env(), KMS_TOKEN=tok)
        want = ('Hint: this token is bound to project "my-project" (a Kubernetes login is '
                'bound to its ServiceAccount\'s namespace, docs/auth.md "Project-bound '
                'tokens"): it reaches only that project\'s KMSKeys and Transit keys, not '
                'project "other"\'s; use --project my-project, or a token of project other\n')
        for args in (("keys", "list"), ("keys", "describe", "app-secrets"),
                     ("encrypt", "app-secrets", "--plaintext=x"),
                     ("decrypt", "app-secrets", "--ciphertext=vault:v1:AAAA")):
            with self.subTest(args=args):
                r = self.fails(1, *args, "--project", "other", env=env, conn=False)
                self.assertIn("Error: permission denied: ", r.errtext)
                self.assertTrue(r.errtext.endswith(want), r.errtext)
        # its own project, refused by the policies: the general hint
        r = self.fails(1, "keys", "rotate", "app-secrets", env=env, conn=False)
        self.assertIn("its policies do not allow this", r.errtext)
        self.assertNotIn("bound to project", r.errtext)

    def test_default_jwt_file_missing(self):
        # the doc's `kmsctl login --role=developer-my-org` off a pod: the projected token is
        # not there; the error says where the JWT comes from instead (no request is made)
        if os.path.exists("/var/run/secrets/openbao/token"):
            self.skipTest("this machine has a projected token")
        with ClosedPort() as nowhere:
            r = self.fails(1, "login", "--role=developer-my-org", "--no-store", "-n", ORG,
                           "--addr", nowhere.url, conn=False)
        self.assertIn("Error: cannot open /var/run/secrets/openbao/token: ", r.errtext)
        self.assertIn("\nHint: that is the projected ServiceAccount token of a pod", r.errtext)
        self.assertIn("give the JWT with --jwt-file FILE (- for stdin) or --jwt TOKEN\n",
                      r.errtext)

    def test_token_file_checked_before_login(self):
        """A --token-file that cannot be written (a directory, a dangling link, under a
        regular file) is refused before the login request: the server used to issue the
        token, and then kmsctl could not store it, leaving a live token nobody holds."""
        base = tempfile.mkdtemp(dir=self.home)
        os.symlink(os.path.join(base, "missing", "tok"), os.path.join(base, "dangling"))
        with open(os.path.join(base, "file"), "w") as f:
            f.write("x")
        cases = [(base, "Error: cannot write %s: it is a directory" % base),
                 (os.path.join(base, "dangling"),
                  "Error: cannot follow the link %s/dangling" % base),
                 (os.path.join(base, "file", "tok"),
                  "Error: cannot create %s/file/tok in %s/file: Not a directory" % (base, base))]
        with ClosedPort() as nowhere:
            for path, want in cases:
                r = self.fails(1, "login", "--role=developer-my-org", "--jwt=x.y.z",
                               "--token-file=" + path, "-n", ORG, "--addr", nowhere.url,
                               conn=False)
                self.assertIn(want, r.errtext)
                self.assertNotIn("cannot connect", r.errtext)

    def test_jwt_login(self):
        tok = self.idp.sign({"iss": self.idp.issuer, "aud": "kube-dc", "sub": "u-1",
                             "email": "dev@example.com", "iat": int(time.time()),
                             "exp": int(time.time()) + 600})
        tf = os.path.join(self.home, "jwt-login-token")
        r = self.ok("login", "--method=jwt", "--mount=jwt", "--role=people", "--jwt=" + tok,
                    "--token-file=" + tf, env=self.env(), conn=False)
        self.assertRegex(r.text, r"token_duration\s+30m\n")
        self.assertEqual(stat.S_IMODE(os.stat(tf).st_mode), 0o600)
        env = dict(self.env(), KMS_TOKEN_FILE=tf)
        self.assertIn("app-secrets", self.ok("keys", "list", env=env, conn=False).text)
        j = json.loads(self.ok("login", "--method=jwt", "--role=people", "--jwt-file", "-",
                               "--token-file=" + tf, "-o", "json", stdin=tok.encode(),
                               env=self.env(), conn=False).out)
        self.assertEqual(j["policies"], ["default", "kms-developer"])
        self.assertNotIn("client_token", j)
        self.fails(2, "login", "--method=jwt", "--role=people", env=self.env(), conn=False)


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def make_cert(d, name, ca=None, san="IP:127.0.0.1,DNS:localhost"):
    key, crt = os.path.join(d, name + ".key"), os.path.join(d, name + ".crt")
    if ca is None:
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=" + name)
    else:
        csr, ext = os.path.join(d, name + ".csr"), os.path.join(d, name + ".ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=%s\n" % san)
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", key, "-out", csr, "-subj", "/CN=" + name)
        openssl("x509", "-req", "-in", csr, "-CA", ca[1], "-CAkey", ca[0], "-set_serial",
                str(abs(hash(name)) % 100000 + 1), "-days", "2", "-out", crt, "-extfile", ext)
    os.chmod(key, 0o600)
    return key, crt


class TLSTest(KmsctlMixin, unittest.TestCase):
    """kmsctl over HTTPS: --ca-cert / VAULT_CACERT, host checks, client certificates."""

    @classmethod
    def setUpClass(cls):
        cls.make_home()
        cls.dir = tempfile.mkdtemp(prefix="kmsctl-tls-")
        cls.ca = make_cert(cls.dir, "ca")
        cls.key, cls.crt = make_cert(cls.dir, "server", cls.ca)
        cls.client = make_cert(cls.dir, "client", cls.ca, san="DNS:client")
        cls.other_ca = make_cert(cls.dir, "other-ca")
        cls.server = KmsdServer(mode="dev", extra_args=[
            "-tls-cert-file=" + cls.crt, "-tls-key-file=" + cls.key])
        cls.server.start()
        cls.url = "https://127.0.0.1:%d" % cls.server.port

    @classmethod
    def tearDownClass(cls):
        rc = cls.server.stop()
        cls.server.cleanup()
        shutil.rmtree(cls.dir, ignore_errors=True)
        shutil.rmtree(cls.home, ignore_errors=True)
        assert rc == 0, rc

    def run_tls(self, *args, rc=0, env=None, url=None):
        argv = list(args) + ["-n", ORG, "--project", PROJECT, "--token", self.server.token,
                             "--addr", url or self.url]
        return self.fails(rc, *argv, env=env, conn=False)

    def test_ca_path(self):
        """--ca-path / VAULT_CAPATH read as OpenBao's CLI reads them: every file under the
        directory, its PEM certificates trusted, anything else skipped. It went to OpenSSL's
        lookup directory, which wants `openssl rehash` names: a directory of .pem files
        verified nothing, and one that did not exist said so only as a failed verification."""
        def orgs_list(rc, *extra, env=None):
            return self.fails(rc, "orgs", "list", "--token", self.server.token, "--addr",
                              self.url, *extra, env=env, conn=False)
        good = os.path.join(self.dir, "capath-good")
        os.makedirs(os.path.join(good, "sub"))
        with open(self.ca[1], "rb") as f:
            ca_pem = f.read()
        with open(os.path.join(good, "sub", "company-ca.pem"), "wb") as f:
            # a key block and text around the certificate are skipped, as OpenBao skips them
            f.write(b"our CA\n-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n" +
                    ca_pem)
        with open(os.path.join(good, "README"), "w") as f:
            f.write("not a certificate\n")
        shutil.copy(self.other_ca[1], os.path.join(good, "other.crt"))
        os.symlink("sub/company-ca.pem", os.path.join(good, "link.pem"))
        os.symlink("/nonexistent-kmsctl-ca", os.path.join(good, "dangling.pem"))
        orgs_list(0, "--ca-path", good)
        orgs_list(0, env={"VAULT_CAPATH": good})
        orgs_list(0, env={"KMS_CAPATH": good})
        # with --ca-cert too, both are trusted (OpenBao adds every source it is given)
        orgs_list(0, "--ca-cert", self.other_ca[1], "--ca-path", good)
        # a directory of other CAs only: the server is not trusted
        other = os.path.join(self.dir, "capath-other")
        os.makedirs(other)
        shutil.copy(self.other_ca[1], os.path.join(other, "other.crt"))
        r = orgs_list(1, "--ca-path", other)
        self.assertIn("TLS certificate verification failed", r.errtext)
        # a directory that is not there, not a directory, or holds no certificate: said so
        missing = os.path.join(self.dir, "no-such-dir")
        r = orgs_list(1, "--ca-path", missing)
        self.assertIn("cannot read the CA directory %s: No such file or directory" % missing,
                      r.errtext)
        r = orgs_list(1, env={"VAULT_CAPATH": self.ca[1]})
        self.assertIn("the CA directory %s is not a directory" % self.ca[1], r.errtext)
        empty = os.path.join(self.dir, "capath-empty")
        os.makedirs(empty)
        with open(os.path.join(empty, "notes.txt"), "w") as f:
            f.write("nothing here\n")
        r = orgs_list(1, "--ca-path", empty)
        self.assertIn("no CA certificate (PEM) found in the CA directory %s" % empty, r.errtext)

    def test_tls(self):
        # the namespace, over HTTPS with Python's own client
        import http.client
        import ssl
        ctx = ssl.create_default_context(cafile=self.ca[1])
        c = http.client.HTTPSConnection("127.0.0.1", self.server.port, context=ctx, timeout=10)
        c.request("POST", "/v1/sys/namespaces/" + ORG, body="{}",
                  headers={"X-Vault-Token": self.server.token})
        resp = c.getresponse()
        resp.read()
        self.assertEqual(resp.status, 200)
        c.close()
        r = self.run_tls("keys", "create", "tls-key", "--ca-cert", self.ca[1])
        self.assertIn("Created KMSKey my-org-my-project/tls-key", r.text)
        ct = self.run_tls("encrypt", "tls-key", "--plaintext=over tls", "--ca-cert",
                          self.ca[1]).text.strip()
        self.assertEqual(self.run_tls("decrypt", "tls-key", "--ciphertext=" + ct,
                                      env={"VAULT_CACERT": self.ca[1]}).text, "over tls\n")
        # by host name too (the certificate names localhost)
        self.run_tls("keys", "list", "--ca-cert", self.ca[1],
                     url="https://localhost:%d" % self.server.port)
        # no CA: the system store does not know this one
        r = self.run_tls("keys", "list", rc=1)
        self.assertIn("TLS certificate verification failed", r.errtext)
        r = self.run_tls("keys", "list", "--ca-cert", self.other_ca[1], rc=1)
        self.assertIn("TLS certificate verification failed", r.errtext)
        # the wrong name: a leaf for another host, signed by the trusted CA
        k2, c2 = make_cert(self.dir, "elsewhere", self.ca, san="DNS:elsewhere.example")
        srv2 = KmsdServer(mode="dev", extra_args=["-tls-cert-file=" + c2, "-tls-key-file=" + k2])
        srv2.start()
        try:
            r = self.fails(1, "keys", "list", "-n", ORG, "--project", PROJECT, "--token", "t",
                           "--addr", "https://127.0.0.1:%d" % srv2.port, "--ca-cert", self.ca[1],
                           conn=False)
            self.assertRegex(r.errtext, "TLS certificate verification failed: "
                                        "(IP address|hostname) mismatch")
        finally:
            srv2.stop()
            srv2.cleanup()
        # --tls-skip-verify works and says so loudly
        r = self.run_tls("keys", "list", "--tls-skip-verify")
        self.assertIn("WARNING: TLS certificate verification is disabled", r.errtext)
        # once per run, also for `orgs list`, which opens a client per organization (it was
        # printed once more for each)
        for org in ("tls-org-a", "tls-org-b"):
            self.fails(0, "orgs", "create", org, "--token", self.server.token, "--addr",
                       self.url, "--tls-skip-verify", conn=False)
        r = self.fails(0, "orgs", "list", "--token", self.server.token, "--addr", self.url,
                       "--tls-skip-verify", conn=False)
        self.assertIn("tls-org-b", r.text)
        self.assertEqual(r.errtext.count("WARNING: TLS certificate verification is disabled"),
                         1, r.errtext)
        # plain http to the TLS port is a clear failure, not a hang
        self.run_tls("keys", "list", rc=1, url="http://127.0.0.1:%d" % self.server.port)

    def test_client_certificate(self):
        srv = KmsdServer(mode="config", config={
            "tls_cert_file": self.crt, "tls_key_file": self.key,
            "tls_client_ca_file": self.ca[1], "tls_require_client_cert": True})
        srv.start()
        try:
            url = "https://127.0.0.1:%d" % srv.port
            base = ["keys", "list", "-n", ORG, "--project", PROJECT, "--token", "t", "--addr",
                    url, "--ca-cert", self.ca[1]]
            r = self.fails(1, *base, conn=False)
            self.assertNotIn("verification failed", r.errtext)
            # with the certificate the TLS layer lets us in; the server then refuses the
            # token (this store is not initialised), which proves the handshake passed
            r = self.kmsctl(*(base + ["--client-cert", self.client[1], "--client-key",
                                      self.client[0]]), conn=False)
            self.assertEqual(r.rc, 1, r)
            self.assertNotIn("TLS", r.errtext)
            self.fails(2, *(base + ["--client-cert", self.client[1]]), conn=False)
        finally:
            srv.stop()
            srv.cleanup()


class LifecycleTest(KmsctlMixin, unittest.TestCase):
    """Issue 5 §5: create with a 2 s rotation → rotated by schedule → set the floor → old
    ciphertext refused → schedule-delete → cancel → schedule-delete → hard delete at expiry,
    with restarts of a persistent (config-mode) server in the middle."""

    @classmethod
    def setUpClass(cls):
        cls.make_home()
        cls.server = KmsdServer(mode="config", config={"kms_deletion_delay": "3s"})
        try:
            cls.server.start()
            KmsdTestCase.init_config_server(cls.server)
            setup_org_namespace(cls.server)
        except BaseException:
            cls.server.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        srv = cls.server
        try:
            rc = srv.stop()
            assert rc == 0, "kmsd did not exit cleanly: %r\n%s" % (rc, srv.log_tail())
        finally:
            srv.cleanup()
            shutil.rmtree(cls.home, ignore_errors=True)

    def version(self):
        return json.loads(self.ok("keys", "describe", "life", "-o", "json").out)[
            "status"]["currentVersion"]

    def wait_version(self, above, timeout=8):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = self.version()
            if v > above:
                return v
            time.sleep(0.25)
        self.fail("no scheduled rotation past v%d within %ds\n%s" % (
            above, timeout, self.server.log_tail()))

    def wait_gone(self, name, timeout=15):
        """Poll `keys describe NAME` until the controller has destroyed the KMSKey (exit 1)."""
        def gone():
            r = self.kmsctl("keys", "describe", name)
            return r if r.rc == 1 else None
        return wait_for(gone, timeout, lambda: "the controller to destroy KMSKey %s\n%s" % (
            name, self.server.log_tail()), interval=0.25)

    def restart(self):
        rc = self.server.stop()
        self.assertEqual(rc, 0, self.server.log_tail())
        self.server.start()

    def test_lifecycle(self):
        r = self.ok("keys", "create", "life", "--rotation=2s")
        self.assertIn("rotation=2s", r.text)
        v1 = self.ok("encrypt", "life", "--plaintext=written at v1").text.strip()
        self.assertEqual(version_of(v1), 1)
        # rotation by schedule, seen through kmsctl
        v = self.wait_version(1)
        # restart: the schedule is rebuilt from storage and keeps rotating
        self.restart()
        v = self.wait_version(v)
        self.assertIn("enabled (2s)", self.ok("keys", "describe", "life").text)
        self.assertEqual(self.ok("decrypt", "life", "--ciphertext=" + v1).text, "written at v1\n")
        # raise the floor to the current version: the v1 ciphertext is refused from now on
        cur = self.version()
        self.ok("keys", "set-min-decryption-version", "life", str(cur))
        r = self.fails(1, "decrypt", "life", "--ciphertext=" + v1)
        self.assertIn("Error:", r.errtext)
        fresh = self.ok("encrypt", "life", "--plaintext=fresh").text.strip()
        self.assertGreaterEqual(version_of(fresh), cur)
        # schedule-delete → cancel-delete → schedule-delete
        self.ok("keys", "schedule-delete", "life")
        self.assertIn("False/DeletionScheduled", self.ok("keys", "list").text)
        self.ok("keys", "cancel-delete", "life")
        self.assertNotIn("Scheduled deletion", self.ok("keys", "describe", "life").text)
        # a cancelled countdown never fires: a witness scheduled after the cancel (same 3 s
        # delay) is destroyed by the controller; by then the cancelled deadline has passed too
        self.ok("keys", "create", "witness")
        self.ok("keys", "schedule-delete", "witness")
        self.wait_gone("witness")
        self.ok("keys", "describe", "life")
        self.ok("keys", "schedule-delete", "life")
        # the countdown survives a restart, then the controller destroys key and object
        self.restart()
        r = self.wait_gone("life")
        self.assertIn("KMSKey life not found in project my-project", r.errtext)
        self.assertEqual(self.server.request("GET", "transit/keys/my-org-my-project-life",
                                             namespace=ORG).status, 404)
        self.fails(1, "decrypt", "life", "--ciphertext=" + fresh)
        self.assertEqual(self.ok("keys", "list").text, "No KMSKeys.\n")


if __name__ == "__main__":
    unittest.main()
