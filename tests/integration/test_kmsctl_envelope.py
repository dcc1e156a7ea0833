"""`kmsctl envelope encrypt|decrypt` against a real kmsd: the product doc's wire format
NONCE(12) || AES-256-GCM CIPHERTEXT || TAG(16) with the wrapped DEK in a metadata sidecar,
interoperability both ways with the doc's Python envelope helper, tamper detection (no output
left behind), the developer role's local-DEK path, a progress bar only on a terminal, and a
200 MB file streamed in constant memory (throughput and max RSS are printed).
"""

import base64
import hashlib
import json
import os
import pty
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import unittest

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kmsd_harness import unb64
from kmsctl_helpers import (KMSCTL_BIN, ORG, PROJECT, KmsctlTestCase, doc_envelope_module)

KEY = "app-secrets"
TRANSIT_KEY = "my-org-my-project-app-secrets"
MiB = 1 << 20


def run_measured(argv, env):
    """Run argv; return (exit code, stderr, seconds, peak RSS in KiB of the program itself).

    /usr/bin/time -f %M measures it exactly. Without it, /proc/<pid>/status VmHWM is polled
    (os.wait4's ru_maxrss would include the forked Python image from before exec)."""
    t0 = time.monotonic()
    if os.access("/usr/bin/time", os.X_OK):
        with tempfile.NamedTemporaryFile() as tf:
            p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", tf.name] + argv,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
            elapsed = time.monotonic() - t0
            text = open(tf.name).read().split()
            return p.returncode, p.stderr, elapsed, int(text[-1]) if text else 1 << 30
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    peak = 0
    while p.poll() is None:
        try:
            with open("/proc/%d/status" % p.pid) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.005)
    return p.returncode, b"", time.monotonic() - t0, peak


class EnvelopeTest(KmsctlTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.work = tempfile.mkdtemp(prefix="kmsctl-env-")
        r = cls.server.request("POST", "kms/keys/%s/%s" % (PROJECT, KEY), {}, namespace=ORG)
        assert r.status == 200, r.describe()
        # rotate once so ciphertexts carry v2, as a real key's would after a while
        r = cls.server.request("POST", "kms/keys/%s/%s/rotate" % (PROJECT, KEY), {},
                               namespace=ORG)
        assert r.status == 200, r.describe()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.work, ignore_errors=True)
        super().tearDownClass()

    def path(self, name):
        return os.path.join(self.work, name)

    def write(self, name, data):
        with open(self.path(name), "wb") as f:
            f.write(data)
        return self.path(name)

    def read(self, name):
        with open(self.path(name), "rb") as f:
            return f.read()

    def meta(self, name):
        with open(self.path(name)) as f:
            return json.load(f)

    def unwrap(self, wrapped):
        r = self.server.request("POST", "transit/decrypt/" + TRANSIT_KEY,
                                {"ciphertext": wrapped}, namespace=ORG)
        self.assertEqual(r.status, 200, r.describe())
        return unb64(r.data["plaintext"])

    def test_format_and_roundtrips(self):
        for size in (0, 1, MiB - 1, MiB, MiB + 17, 3 * MiB + 5):
            data = os.urandom(size)
            src = self.write("in-%d" % size, data)
            enc, dec = self.path("in-%d.enc" % size), self.path("in-%d.dec" % size)
            r = self.ok("envelope", "encrypt", KEY, "--in", src, "--out", enc)
            self.assertIn("Encrypted", r.text)
            blob = self.read("in-%d.enc" % size)
            with open(enc + ".meta.json") as f:
                meta = json.load(f)
            # the sidecar: Kube-DC's backup metadata shape
            self.assertEqual(meta["schemaVersion"], 1)
            self.assertEqual(meta["transitKey"], TRANSIT_KEY)
            self.assertEqual(meta["transitKeyVersion"], 2)
            self.assertEqual(meta["algorithm"], "AES-256-GCM")
            self.assertTrue(meta["wrappedDek"].startswith("vault:v2:"))
            self.assertEqual(meta["sha256"], hashlib.sha256(data).hexdigest())
            self.assertEqual(meta["plaintextSize"], size)
            self.assertEqual(meta["source"], src)
            self.assertRegex(meta["createdAt"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
            # the wire format: NONCE(12) || ciphertext || TAG(16), opened by plain AESGCM
            self.assertEqual(len(blob), 12 + size + 16)
            self.assertEqual(base64.b64decode(meta["nonce"]), blob[:12])
            dek = self.unwrap(meta["wrappedDek"])
            self.assertEqual(len(dek), 32)
            self.assertEqual(AESGCM(dek).decrypt(blob[:12], blob[12:], None), data)
            for p in (enc, enc + ".meta.json"):
                self.assertEqual(stat.S_IMODE(os.stat(p).st_mode), 0o600)
            r = self.ok("envelope", "decrypt", KEY, "--in", enc, "--out", dec)
            self.assertEqual(self.read("in-%d.dec" % size), data)
            self.assertEqual(stat.S_IMODE(os.stat(dec).st_mode), 0o600)
        # a fresh DEK and nonce per file
        a = self.ok("envelope", "encrypt", KEY, "--in", src, "--out", self.path("a.enc"))
        b = self.ok("envelope", "encrypt", KEY, "--in", src, "--out", self.path("b.enc"))
        ma = self.meta("a.enc.meta.json")
        mb = self.meta("b.enc.meta.json")
        self.assertNotEqual(ma["wrappedDek"], mb["wrappedDek"])
        self.assertNotEqual(ma["nonce"], mb["nonce"])
        self.assertNotEqual(self.unwrap(ma["wrappedDek"]), self.unwrap(mb["wrappedDek"]))

    def test_pipes(self):
        data = os.urandom(2 * MiB + 3)
        meta = self.path("pipe.meta")
        # stdin in, explicit --meta
        self.ok("envelope", "encrypt", KEY, "--in", "-", "--out", self.path("pipe.enc"),
                "--meta", meta, stdin=data)
        self.assertEqual(self.meta("pipe.meta")["source"], "stdin")
        # stdout out (verified before anything is written), summary on stderr
        r = self.ok("envelope", "decrypt", KEY, "--in", self.path("pipe.enc"), "--meta", meta,
                    "--out", "-")
        self.assertEqual(r.out, data)
        self.assertIn("Decrypted", r.errtext)
        # stdin body into a file
        r = self.ok("envelope", "decrypt", KEY, "--in", "-", "--meta", meta, "--out",
                    self.path("pipe.dec"), stdin=self.read("pipe.enc"))
        self.assertEqual(self.read("pipe.dec"), data)
        # stdout encryption needs --meta; stdin -> stdout decryption is refused
        self.fails(2, "envelope", "encrypt", KEY, "--in", "-", "--out", "-", stdin=b"x")
        self.fails(2, "envelope", "decrypt", KEY, "--in", "-", "--meta", meta, "--out", "-",
                   stdin=self.read("pipe.enc"))
        self.fails(2, "envelope", "encrypt", KEY, "--in", self.path("pipe.enc"))
        self.fails(2, "envelope", "frobnicate", KEY)
        # /dev/stdout on a pipe (a link to "pipe:[N]") is refused as on a file or a terminal,
        # not as "cannot follow the link /dev/stdout: No such file or directory"
        for target in ("/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"):
            r = self.fails(1, "envelope", "decrypt", KEY, "--in", self.path("pipe.enc"),
                           "--meta", meta, "--out", target)
            self.assertIn("--out %s is not a regular file; use --out - for standard output"
                          % target, r.errtext)
            self.assertEqual(r.out, b"")

    def test_same_file_under_another_name_is_refused(self):
        """--out, --meta and --in naming one file through "./x", a directory link or a hard
        link: the sidecar overwrote the body just written (exit 0, the data gone), the
        sidecar replaced the plaintext input, or a decrypt replaced its own sidecar."""
        data = os.urandom(1000)
        src = self.write("same-src", data)
        os.makedirs(self.path("same-dir"), exist_ok=True)
        link = self.path("same-link")
        if not os.path.islink(link):
            os.symlink("same-dir", link)
        hard = self.path("same-hard")
        if os.path.exists(hard):
            os.unlink(hard)
        os.link(src, hard)
        out = self.path("same-dir/x.enc")
        cases = [
            ("--in", src, "--out", out, "--meta", os.path.join(link, "x.enc")),
            ("--in", "-", "--out", out, "--meta", self.work + "/./same-dir/x.enc"),
            ("--in", src, "--out", out, "--meta", hard),
            ("--in", hard, "--out", src),
        ]
        for case in cases:
            r = self.fails(2, "envelope", "encrypt", KEY, *case, stdin=data)
            self.assertIn("--in, --out and --meta must be different files", r.errtext)
            self.assertFalse(os.path.exists(out), case)
            self.assertEqual(self.read("same-src"), data, case)
        # decrypting over the sidecar would lose the wrapped key of the body
        self.ok("envelope", "encrypt", KEY, "--in", src, "--out", out)
        sidecar = out + ".meta.json"
        with open(sidecar, "rb") as f:
            before = f.read()
        for target in (os.path.join(link, "x.enc.meta.json"), out, os.path.join(link, "x.enc")):
            r = self.fails(2, "envelope", "decrypt", KEY, "--in", out, "--out", target)
            self.assertIn("--out must not be --in or its --meta file", r.errtext)
        with open(sidecar, "rb") as f:
            self.assertEqual(f.read(), before)
        r = self.ok("envelope", "decrypt", KEY, "--in", out, "--out", "-")
        self.assertEqual(r.out, data)

    def test_unwritable_sidecar_keeps_the_existing_output(self):
        """Re-encrypting over last night's backup with a --meta that cannot be written (a
        directory, a dangling link, a missing directory): the body replaced the old file,
        then the failed sidecar write deleted it, so the run left neither."""
        d = tempfile.mkdtemp(dir=self.work)
        src = os.path.join(d, "src")
        with open(src, "wb") as f:
            f.write(os.urandom(5000))
        out = os.path.join(d, "backup.enc")
        self.ok("envelope", "encrypt", KEY, "--in", src, "--out", out)
        with open(out, "rb") as f:
            old = f.read()
        os.mkdir(os.path.join(d, "adir"))
        os.symlink(os.path.join(d, "nowhere", "x"), os.path.join(d, "dangling"))
        for meta, want in ((os.path.join(d, "adir"), "it is a directory"),
                           (os.path.join(d, "dangling"), "cannot follow the link"),
                           (os.path.join(d, "missing", "m.json"), "No such file or directory")):
            r = self.fails(1, "envelope", "encrypt", KEY, "--in", src, "--out", out,
                           "--meta", meta)
            self.assertIn(want, r.errtext)
            with open(out, "rb") as f:
                self.assertEqual(f.read(), old, meta)
            self.assertEqual(sorted(os.listdir(d)),
                             ["adir", "backup.enc", "backup.enc.meta.json", "dangling", "src"])
        # and the old pair still opens
        r = self.ok("envelope", "decrypt", KEY, "--in", out, "--out", "-")
        with open(src, "rb") as f:
            self.assertEqual(r.out, f.read())

    def test_renames_are_synced(self):
        """After renaming a finished file into place kmsctl fsyncs its directory: without it
        a power cut after "Encrypted ..." could bring back the old file or none at all (the
        user may already have deleted the plaintext). Seen through strace."""
        strace = shutil.which("strace")
        self.assertIsNotNone(strace, "strace is missing: `make deps` installs it")
        d = tempfile.mkdtemp(dir=self.work)
        src = os.path.join(d, "src")
        with open(src, "wb") as f:
            f.write(b"durable")
        trace = os.path.join(self.work, os.path.basename(d) + ".strace")

        def renamed_then_synced(*args):
            argv = [strace, "-f", "-qq", "-e", "trace=rename,renameat,renameat2,openat,fsync",
                    "-o", trace, KMSCTL_BIN, "-n", ORG, "--project", PROJECT, "--addr",
                    self.server.addr, "--token", self.server.token] + list(args)
            extra = {}
            if os.environ.get("KMS_SANITIZED") == "1":
                # LeakSanitizer cannot run under ptrace; the rest of ASan can
                extra["ASAN_OPTIONS"] = os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
            p = subprocess.run(argv, capture_output=True, env=self.clean_env(extra))
            self.assertEqual(p.returncode, 0, p.stderr)  # strace refused (ptrace) is a failure
            with open(trace) as f:
                lines = f.read().splitlines()
            renames = [i for i, ln in enumerate(lines) if "rename" in ln and " = 0" in ln]
            self.assertTrue(renames, lines)
            for i in renames:
                rest = lines[i + 1:]
                opened = [ln for ln in rest if "O_DIRECTORY" in ln and '"%s"' % d in ln]
                self.assertTrue(opened, ("no directory opened after", lines[i], lines))
                fd = opened[0].rsplit("= ", 1)[1].strip()
                self.assertTrue(any(re.search(r"fsync\(%s\)\s+= 0" % fd, ln) for ln in rest),
                                ("no fsync of the directory after", lines[i], lines))
            return len(renames)

        ct = self.ok("encrypt", KEY, "--plaintext-file", src).text.strip()
        with open(os.path.join(d, "ct"), "w") as f:
            f.write(ct)
        self.assertEqual(renamed_then_synced("decrypt", KEY, "--ciphertext-file",
                                             os.path.join(d, "ct"), "--out",
                                             os.path.join(d, "pt")), 1)
        # the body and its sidecar
        self.assertEqual(renamed_then_synced("envelope", "encrypt", KEY, "--in", src, "--out",
                                             os.path.join(d, "e.enc")), 2)
        self.assertEqual(renamed_then_synced("envelope", "decrypt", KEY, "--in",
                                             os.path.join(d, "e.enc"), "--out",
                                             os.path.join(d, "e.out")), 1)

    def test_foreign_link_in_a_sticky_directory_is_not_followed(self):
        """Another user's symbolic link in a world-writable sticky directory (/tmp) is not
        followed, as the kernel's protected_symlinks has it: kmsctl resolved --out with
        realpath and renamed its output onto the link's target, so `nobody` could have root's
        `decrypt --out /tmp/x` replace any file (the kernel's check never saw an open)."""
        # `make test` runs as root (README); the link needs another owner than kmsctl's user
        self.assertEqual(os.geteuid(), 0, "this test runs as root, as `make test` does")
        d = tempfile.mkdtemp(dir=self.work)
        sticky = os.path.join(d, "tmp")
        os.mkdir(sticky)
        os.chmod(sticky, 0o1777)
        victim = os.path.join(d, "victim")
        with open(victim, "w") as f:
            f.write("precious")
        trap = os.path.join(sticky, "out")
        os.symlink(victim, trap)
        os.lchown(trap, 65534, 65534)
        src = os.path.join(d, "src")
        with open(src, "wb") as f:
            f.write(b"data")
        ct = os.path.join(d, "ct")
        with open(ct, "w") as f:
            f.write(self.ok("encrypt", KEY, "--plaintext-file", src).text.strip())
        self.ok("envelope", "encrypt", KEY, "--in", src, "--out", os.path.join(d, "e.enc"))
        want = ("refusing to follow the link %s: it belongs to another user (uid 65534) in the "
                "world-writable sticky directory %s" % (trap, sticky))
        for args in (("decrypt", KEY, "--ciphertext-file", ct, "--out", trap),
                     ("envelope", "decrypt", KEY, "--in", os.path.join(d, "e.enc"), "--out",
                      trap),
                     ("envelope", "encrypt", KEY, "--in", src, "--out",
                      os.path.join(d, "f.enc"), "--meta", trap)):
            r = self.fails(1, *args)
            self.assertIn(want, r.errtext)
            with open(victim) as f:
                self.assertEqual(f.read(), "precious", args)
        # one's own link there is followed, as documented
        os.lchown(trap, 0, 0)
        self.ok("decrypt", KEY, "--ciphertext-file", ct, "--out", trap)
        with open(victim, "rb") as f:
            self.assertEqual(f.read(), b"data")

    def test_sidecar_on_stdout(self):
        """--meta - (or /dev/stdout) with a file --out: the sidecar alone on stdout, the
        summary on stderr; the summary used to land in the sidecar (`> m.json` then did not
        parse). --out - with --meta - wrote body and sidecar into one stream, exit 0; and
        --in - with --meta - both read stdin: both are refused. No file named "-" appears."""
        d = tempfile.mkdtemp(dir=self.work)
        data = os.urandom(3000)
        src = os.path.join(d, "src")
        with open(src, "wb") as f:
            f.write(data)
        for meta in ("-", "/dev/stdout"):
            enc = os.path.join(d, "e.enc")
            r = self.ok("envelope", "encrypt", KEY, "--in", src, "--out", enc, "--meta", meta,
                        cwd=d)
            self.assertIn("Encrypted", r.errtext)
            m = json.loads(r.out)
            self.assertEqual(m["plaintextSize"], len(data))
            with open(os.path.join(d, "m.json"), "wb") as f:
                f.write(r.out)
            r = self.ok("envelope", "decrypt", KEY, "--in", enc, "--meta",
                        os.path.join(d, "m.json"), "--out", "-")
            self.assertEqual(r.out, data)
        r = self.fails(2, "envelope", "encrypt", KEY, "--in", src, "--out", "-", "--meta", "-",
                       cwd=d)
        self.assertIn("--out - and --meta - would both go to standard output", r.errtext)
        self.assertEqual(r.out, b"")
        r = self.fails(2, "envelope", "decrypt", KEY, "--in", "-", "--meta", "-", "--out",
                       os.path.join(d, "x"), stdin=b"{}", cwd=d)
        self.assertIn("--in - and --meta - cannot both read standard input", r.errtext)
        self.assertEqual(sorted(os.listdir(d)), ["e.enc", "m.json", "src"])

    def test_python_helper_interop(self):
        helper = doc_envelope_module(self.server.addr, self.server.token)
        payload = b"the whole novel in one bytestring " * 5000
        # kmsctl -> the doc's decrypt_envelope(blob, wrapped)
        src = self.write("novel.txt", payload)
        self.ok("envelope", "encrypt", KEY, "--in", src, "--out", self.path("novel.enc"))
        meta = self.meta("novel.enc.meta.json")
        self.assertEqual(helper["decrypt_envelope"](self.read("novel.enc"), meta["wrappedDek"]),
                         payload)
        # the doc's encrypt_envelope -> a sidecar -> kmsctl envelope decrypt
        blob, wrapped = helper["encrypt_envelope"](payload)
        self.write("py.enc", blob)
        with open(self.path("py.enc.meta.json"), "w") as f:
            json.dump({"schemaVersion": 1, "transitKey": TRANSIT_KEY,
                       "transitKeyVersion": int(wrapped.split(":")[1][1:]),
                       "algorithm": "AES-256-GCM",
                       "nonce": base64.b64encode(blob[:12]).decode(), "wrappedDek": wrapped,
                       "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "source": "python", "sha256": hashlib.sha256(payload).hexdigest()}, f)
        r = self.ok("envelope", "decrypt", KEY, "--in", self.path("py.enc"), "--out",
                    self.path("py.dec"))
        self.assertIn("tag and sha256 verified", r.text)
        self.assertEqual(self.read("py.dec"), payload)
        # the minimal sidecar: just the wrapped DEK the doc keeps "next to the ciphertext"
        with open(self.path("py.min.json"), "w") as f:
            json.dump({"wrappedDek": wrapped}, f)
        self.ok("envelope", "decrypt", KEY, "--in", self.path("py.enc"), "--meta",
                self.path("py.min.json"), "--out", self.path("py.dec2"))
        self.assertEqual(self.read("py.dec2"), payload)

    def test_tampering_leaves_no_output(self):
        data = os.urandom(MiB + 100)
        src = self.write("t.bin", data)
        enc = self.path("t.enc")
        self.ok("envelope", "encrypt", KEY, "--in", src, "--out", enc)
        blob = self.read("t.enc")
        meta = self.meta("t.enc.meta.json")

        def attempt(body, m, out="t.out", rc=1):
            self.write("x.enc", body)
            with open(self.path("x.enc.meta.json"), "w") as f:
                json.dump(m, f)
            r = self.fails(rc, "envelope", "decrypt", KEY, "--in", self.path("x.enc"), "--out",
                           self.path(out) if out != "-" else "-")
            leftovers = [n for n in os.listdir(self.work) if n.startswith(out)]
            self.assertEqual(leftovers, [], r)
            return r

        flipped = bytearray(blob)
        flipped[500000] ^= 1
        r = attempt(bytes(flipped), meta)
        self.assertIn("message authentication failed", r.errtext)
        r = attempt(bytes(flipped), meta, out="-")
        self.assertEqual(r.out, b"")  # nothing reaches stdout before verification
        attempt(blob[:-1], meta)                       # truncated tag
        attempt(blob[:20], meta)                       # almost nothing left
        attempt(blob + b"x", meta)                     # trailing garbage
        tag = bytearray(blob)
        tag[-1] ^= 0x80
        attempt(bytes(tag), meta)                      # the tag itself
        r = attempt(blob, dict(meta, sha256="0" * 64))  # the sidecar lies about the data
        self.assertIn("sha256", r.errtext)
        r = attempt(blob, dict(meta, nonce=base64.b64encode(b"\0" * 12).decode()))
        self.assertIn("nonces differ", r.errtext)
        other = self.server.request("POST", "transit/datakey/wrapped/" + TRANSIT_KEY,
                                    {"bits": 256}, namespace=ORG).data["ciphertext"]
        attempt(blob, dict(meta, wrappedDek=other))     # another DEK
        # a hand-written sidecar (no transitKey) whose DEK another key wrapped: Transit's
        # answer names no key, so kmsctl says which one it tried
        self.server.request("POST", "kms/keys/%s/other-key" % PROJECT, {}, namespace=ORG)
        foreign = self.server.request("POST", "transit/datakey/wrapped/%s-%s-other-key"
                                      % (ORG, PROJECT), {"bits": 256},
                                      namespace=ORG).data["ciphertext"]
        hand = {k: v for k, v in meta.items() if k != "transitKey"}
        r = attempt(blob, dict(hand, wrappedDek=foreign))
        self.assertIn("Hint: the wrapped data key in %s does not open with Transit key %s "
                      "(KMSKey %s of project %s): it was wrapped by another key, project or "
                      "organization, or it is damaged"
                      % (self.path("x.enc.meta.json"), TRANSIT_KEY, KEY, PROJECT), r.errtext)
        r = attempt(blob, dict(meta, transitKey="my-org-my-project-other"))
        self.assertIn("was written for Transit key my-org-my-project-other", r.errtext)
        attempt(blob, dict(meta, wrappedDek="not-a-vault-ciphertext"))
        attempt(blob, dict(meta, algorithm="ChaCha20-Poly1305"))
        # an existing file under the output name is left alone on failure
        self.write("keep.out", b"precious")
        self.write("x.enc", bytes(flipped))
        with open(self.path("x.enc.meta.json"), "w") as f:
            json.dump(meta, f)
        self.fails(1, "envelope", "decrypt", KEY, "--in", self.path("x.enc"), "--out",
                   self.path("keep.out"))
        self.assertEqual(self.read("keep.out"), b"precious")
        # an unknown KMSKey never gets a data key minted
        r = self.fails(1, "envelope", "encrypt", "nope", "--in", src, "--out",
                       self.path("nope.enc"))
        self.assertIn("KMSKey nope not found", r.errtext)
        self.assertFalse(os.path.exists(self.path("nope.enc")))

    def test_endless_input_stops_at_the_sidecar_size(self):
        """A body followed by endless data (a wrong pipe, a padded or tampered file) was
        decrypted and written to the temporary file until the input ended, filling the disk:
        the sidecar's plaintextSize already said it could not be right. Now the run stops as
        soon as the input is longer than that, with nothing left behind."""
        src = self.write("endless.bin", os.urandom(MiB))
        enc = self.path("endless.enc")
        self.ok("envelope", "encrypt", KEY, "--in", src, "--out", enc)
        out = self.path("endless-out")
        argv = [KMSCTL_BIN, "-n", ORG, "--project", PROJECT, "--addr", self.server.addr,
                "--token", self.server.token, "envelope", "decrypt", KEY, "--in", "-", "--meta",
                enc + ".meta.json", "--out", out, "--no-progress"]
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, env=self.clean_env())
        sent = 0
        zeros = bytes(MiB)
        try:
            p.stdin.write(self.read("endless.enc"))
            # at most 256 MiB more: the old kmsctl would take all of it (and more)
            while sent < 256 * MiB:
                p.stdin.write(zeros)
                sent += MiB
        except BrokenPipeError:
            pass
        try:
            p.stdin.close()
        except BrokenPipeError:
            pass
        err = p.stderr.read().decode()
        p.stderr.close()
        self.assertEqual(p.wait(timeout=60), 1, err)
        self.assertLess(sent, 256 * MiB, err)
        self.assertIn("Error: - is longer than its metadata says (plaintextSize %d)" % MiB, err)
        self.assertEqual([n for n in os.listdir(self.work) if n.startswith("endless-out")], [])

    def test_developer_role_local_dek(self):
        # kms-developer may encrypt/decrypt but not call datakey: kmsctl then makes the DEK
        # itself and wraps it with transit/encrypt, as the doc's helpers do
        r = self.server.request("POST", "auth/token/create", {"policies": ["kms-developer"]},
                                namespace=ORG)
        self.assertEqual(r.status, 200, r.describe())
        dev = r.json["auth"]["client_token"]
        dk = self.server.request("POST", "transit/datakey/plaintext/" + TRANSIT_KEY,
                                 {"bits": 256}, namespace=ORG, token=dev)
        self.assertEqual(dk.status, 403)
        data = os.urandom(100000)
        src = self.write("dev.bin", data)
        self.ok("envelope", "encrypt", KEY, "--in", src, "--out", self.path("dev.enc"), token=dev)
        meta = self.meta("dev.enc.meta.json")
        self.assertTrue(meta["wrappedDek"].startswith("vault:v2:"))
        self.assertEqual(meta["transitKeyVersion"], 2)
        self.ok("envelope", "decrypt", KEY, "--in", self.path("dev.enc"), "--out",
                self.path("dev.dec"), token=dev)
        self.assertEqual(self.read("dev.dec"), data)

    def test_progress_bar_only_on_a_tty(self):
        src = self.write("p.bin", os.urandom(3 * MiB))
        args = ["-n", ORG, "--project", PROJECT, "--addr", self.server.addr, "--token",
                self.server.token, "envelope", "encrypt", KEY, "--in", src, "--out",
                self.path("p.enc")]
        r = self.ok(*args, conn=False)
        self.assertEqual(r.err, b"")
        master, slave = pty.openpty()
        try:
            p = subprocess.run([KMSCTL_BIN] + args, stdout=subprocess.PIPE, stderr=slave,
                               env=self.clean_env(), timeout=60)
            os.close(slave)
            slave = None
            self.assertEqual(p.returncode, 0)
            out = b""
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
        finally:
            if slave is not None:
                os.close(slave)
            os.close(master)
        self.assertIn(b"encrypting", out)
        self.assertIn(b"100% [", out)
        self.assertIn(b"3.0 MiB / 3.0 MiB", out)
        self.assertNotIn(b"encrypting", p.stdout)

    def test_large_file_constant_memory(self):
        size = 200 * MiB
        src = self.path("large.bin")
        block = os.urandom(MiB)
        h = hashlib.sha256()
        with open(src, "wb") as f:
            for _ in range(size // MiB):
                f.write(block)
                h.update(block)
        digest = h.hexdigest()
        results = {}
        for verb, args in (("encrypt", ["--in", src, "--out", self.path("large.enc")]),
                           ("decrypt", ["--in", self.path("large.enc"), "--out",
                                        self.path("large.dec")])):
            argv = [KMSCTL_BIN, "-n", ORG, "--project", PROJECT, "--addr", self.server.addr,
                    "--token", self.server.token, "envelope", verb, KEY] + args
            rc, err, elapsed, maxrss = run_measured(argv, self.clean_env())
            self.assertEqual(rc, 0, err)
            results[verb] = (elapsed, maxrss)
            # constant memory: the 1 MiB buffer plus the process, never the file
            self.assertLess(maxrss, 32 * 1024, "%s max RSS %d KiB" % (verb, maxrss))
        self.assertEqual(self.meta("large.enc.meta.json")["sha256"], digest)
        self.assertEqual(os.path.getsize(self.path("large.enc")), size + 28)
        with open(self.path("large.dec"), "rb") as f:
            h2 = hashlib.sha256()
            for chunk in iter(lambda: f.read(MiB), b""):
                h2.update(chunk)
        self.assertEqual(h2.hexdigest(), digest)
        sys.stderr.write("\n  envelope 200 MiB: encrypt %.2fs (%.0f MiB/s, max RSS %.1f MiB), "
                         "decrypt %.2fs (%.0f MiB/s, max RSS %.1f MiB)\n" % (
                             results["encrypt"][0], 200 / results["encrypt"][0],
                             results["encrypt"][1] / 1024, results["decrypt"][0],
                             200 / results["decrypt"][0], results["decrypt"][1] / 1024))
        for n in ("large.bin", "large.enc", "large.dec"):
            os.unlink(self.path(n))


if __name__ == "__main__":
    unittest.main()
