"""kmsctl envelope and Ctrl-C (issue 11, item 14): a SIGINT or SIGTERM in the middle of
`envelope decrypt --out FILE` or `envelope encrypt --out FILE` leaves no temporary file (the
decrypted plaintext!) and no partial output behind, and the process still dies of the signal.

The input comes through a pipe the test feeds itself, so the signal is sent at a known point:
once the temporary output file exists and holds data (polled with a deadline, no fixed sleep).
The file is found through the process's open descriptors: kmsctl writes into an unnamed
(O_TMPFILE) file where it can, so that even SIGKILL, which no handler sees, leaves nothing.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time

from kmsctl_helpers import KMSCTL_BIN, ORG, PROJECT, KmsctlTestCase

MIB = 1 << 20


def wait_for(pred, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.01)
    raise AssertionError("timed out waiting for " + what)


class EnvelopeSignalTest(KmsctlTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.work = tempfile.mkdtemp(prefix="kmsctl-sig-")
        cls.data = os.urandom(4 * MIB)
        src = os.path.join(cls.work, "src.bin")
        with open(src, "wb") as f:
            f.write(cls.data)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.work, ignore_errors=True)
        super().tearDownClass()

    def setUp(self):
        self.dir = tempfile.mkdtemp(dir=self.work)

    def spawn(self, *args, env=None):
        argv = [KMSCTL_BIN, "-n", ORG, "--project", PROJECT, "--addr", self.server.addr,
                "--token", self.server.token] + list(args)
        return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=self.clean_env(env))

    def temp_files(self, base):
        return [n for n in os.listdir(self.dir) if n.startswith(base + ".")
                and not n.endswith(".meta.json")]

    def temp_with_data(self, proc, min_size):
        """The name of the file in dir that proc has open with min_size bytes or more (an
        unnamed O_TMPFILE one reads "#INODE (deleted)")."""
        fds = "/proc/%d/fd" % proc.pid
        try:
            names = os.listdir(fds)
        except FileNotFoundError:
            return None
        for fd in names:
            try:
                target = os.readlink(os.path.join(fds, fd))
                if (target.startswith(self.dir + "/") and
                        os.stat(os.path.join(fds, fd)).st_size >= min_size):
                    return os.path.basename(target)
            except (FileNotFoundError, ProcessLookupError):
                pass
        return None

    def interrupt(self, proc, sig, base, min_size):
        tmp = wait_for(lambda: self.temp_with_data(proc, min_size),
                       "a temporary output file of %s with data" % base)
        proc.send_signal(sig)
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        proc.wait(timeout=30)
        err = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
        self.assertEqual(proc.returncode, -sig, err)
        return tmp

    def sealed(self, name):
        """src.bin enveloped with KMSKey `name`: the body and its sidecar."""
        enc = os.path.join(self.dir, "src.enc")
        self.ok("envelope", "encrypt", name, "--in", os.path.join(self.work, "src.bin"),
                "--out", enc, "--no-progress")
        with open(enc, "rb") as f:
            body = f.read()
        return body, enc + ".meta.json"

    def interrupted_decrypt(self, name, base, sig, env=None):
        """envelope decrypt KMSKey `name` of src.bin from a pipe into dir/base, sent `sig`
        once the first decrypted block is in the temporary file."""
        self.ok("keys", "create", name)
        body, meta = self.sealed(name)
        p = self.spawn("envelope", "decrypt", name, "--in", "-", "--meta", meta,
                       "--out", os.path.join(self.dir, base), "--no-progress", env=env)
        p.stdin.write(body[:12 + 2 * MIB])  # nonce and 2 MiB: the first block gets decrypted
        p.stdin.flush()
        tmp = self.interrupt(p, sig, base, MIB // 2)
        self.assertFalse(os.path.exists(os.path.join(self.dir, tmp)), tmp)
        self.assertEqual(self.temp_files(base), [])
        return tmp

    def test_sigint_during_decrypt_leaves_no_plaintext(self):
        self.interrupted_decrypt("sig-dec", "restored.bin", signal.SIGINT)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "restored.bin")))

    def test_sigterm_during_decrypt_leaves_no_plaintext(self):
        self.interrupted_decrypt("sig-dec-term", "restored.bin", signal.SIGTERM)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "restored.bin")))

    def interrupted_encrypt(self, name, sig):
        """envelope encrypt from a pipe into dir/x.enc with a new KMSKey `name`, sent `sig`
        once a MiB is in the temporary file: nothing is left in dir."""
        self.ok("keys", "create", name)
        out = os.path.join(self.dir, "x.enc")
        p = self.spawn("envelope", "encrypt", name, "--in", "-", "--out", out, "--no-progress")
        p.stdin.write(self.data[:2 * MIB])
        p.stdin.flush()
        self.interrupt(p, sig, "x.enc", MIB)
        self.assertEqual(sorted(os.listdir(self.dir)), [])

    def test_sigint_during_encrypt_leaves_nothing(self):
        self.interrupted_encrypt("sig-enc", signal.SIGINT)

    def test_sigquit_leaves_no_core_file(self):
        """Ctrl-backslash (SIGQUIT) during envelope decrypt dumped core where core files are
        enabled (ulimit -c, systemd-coredump): the data key and the plaintext in memory went
        to disk. kmsctl now turns core files off for itself, as kmsd does."""
        self.ok("keys", "create", "sig-quit")
        body, meta = self.sealed("sig-quit")
        cwd = tempfile.mkdtemp(dir=self.work)

        def cores_on():
            import resource
            resource.setrlimit(resource.RLIMIT_CORE,
                               (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        argv = [KMSCTL_BIN, "-n", ORG, "--project", PROJECT, "--addr", self.server.addr,
                "--token", self.server.token, "envelope", "decrypt", "sig-quit", "--in", "-",
                "--meta", meta, "--out", os.path.join(self.dir, "q.bin"), "--no-progress"]
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=self.clean_env(), cwd=cwd,
                             preexec_fn=cores_on)
        p.stdin.write(body[:12 + 2 * MIB])
        p.stdin.flush()
        wait_for(lambda: self.temp_with_data(p, MIB // 2), "a temporary output file with data")
        p.send_signal(signal.SIGQUIT)
        _, status = os.waitpid(p.pid, 0)
        p.returncode = -signal.SIGQUIT  # reaped here, so that Popen does not wait again
        try:
            p.stdin.close()
        except BrokenPipeError:
            pass
        self.assertTrue(os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGQUIT,
                        status)
        self.assertFalse(os.WCOREDUMP(status), "kmsctl dumped core")
        self.assertEqual(os.listdir(cwd), [])
        self.assertEqual(sorted(os.listdir(self.dir)), ["src.enc", "src.enc.meta.json"])

    def test_sigkill_during_decrypt_leaves_no_plaintext(self):
        """SIGKILL (kill -9, the OOM killer) runs no handler: a named temporary file was left
        behind, 0600 but holding the unauthenticated plaintext decrypted so far."""
        self.interrupted_decrypt("sig-dec-kill", "restored.bin", signal.SIGKILL)
        self.assertEqual(sorted(os.listdir(self.dir)), ["src.enc", "src.enc.meta.json"])

    def test_sigkill_during_encrypt_leaves_nothing(self):
        self.interrupted_encrypt("sig-enc-kill", signal.SIGKILL)

    def test_existing_output_survives_an_interrupted_decrypt(self):
        out = os.path.join(self.dir, "keep.bin")
        with open(out, "wb") as f:
            f.write(b"previous contents")
        self.interrupted_decrypt("sig-keep", "keep.bin", signal.SIGINT)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), b"previous contents")

    def test_truncated_input_error_path_leaves_nothing(self):
        self.ok("keys", "create", "sig-trunc")
        body, meta = self.sealed("sig-trunc")
        out = os.path.join(self.dir, "t.bin")
        r = self.fails(1, "envelope", "decrypt", "sig-trunc", "--in", "-", "--meta", meta,
                       "--out", out, "--no-progress", stdin=body[:12 + 3 * MIB])
        self.assertIn("message authentication failed", r.errtext)
        self.assertEqual(self.temp_files("t.bin"), [])
        self.assertFalse(os.path.exists(out))


if __name__ == "__main__":
    import unittest
    unittest.main()
