"""The kmsd process itself: flags refused before anything starts, the seal key scrubbed from
the environment once read, and the bound address reported at every log level."""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

from kmsd_harness import KMSD_BIN, START_TIMEOUT, listening_address, write_seal_key


def self_signed(key, crt):
    """A P-256 key and a self-signed certificate for localhost, valid two days."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", crt, "-days",
                    "2", "-subj", "/CN=localhost"], check=True, capture_output=True)


def run_flags(*args):
    return subprocess.run([KMSD_BIN, "server"] + list(args), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=30)


def run_config(d, settings, *flags):
    """kmsd server -config=<d>/kmsd.json, the file holding `settings` on a port the kernel picks
    (run_flags' result; a start that hangs raises subprocess.TimeoutExpired after 30 s)."""
    cfg = os.path.join(d, "kmsd.json")
    with open(cfg, "w") as f:
        json.dump(dict({"listen_address": "127.0.0.1:0"}, **settings), f)
    return run_flags("-config=" + cfg, *flags)


class FlagChecks(unittest.TestCase):
    def test_bad_log_level_flag_is_refused(self):
        r = run_flags("-dev", "-dev-listen-address=127.0.0.1:0", "-log-level=verbose")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn('"verbose"', r.stderr)
        self.assertIn("debug, info, warn, error", r.stderr)

    def test_listen_port_is_digits_only(self):
        # strtol took a blank or a sign before the port: "127.0.0.1: 80" listened on port 80
        for addr in ("127.0.0.1: 80", "127.0.0.1:+0", "127.0.0.1:0 ", "127.0.0.1:", "[::1]:-1"):
            with self.subTest(addr=addr):
                r = run_flags("-dev", "-dev-listen-address=" + addr)
                self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
                self.assertIn('invalid listen address "%s" (want host:port)' % addr, r.stderr)

    def test_over_long_tls_path_flags_are_refused_not_cut(self):
        # -tls-cert-file was cut to 1023 bytes: a path naming no file started a server on
        # the certificate whose name is its first 1023 bytes
        d = tempfile.mkdtemp(prefix="kmsd-tlspath-")
        try:
            key, crt = os.path.join(d, "s.key"), os.path.join(d, "s.crt")
            self_signed(key, crt)
            deep = d
            while len(deep) < 1023 - 210:
                deep = os.path.join(deep, "x" * 200)
            os.makedirs(deep)
            cut = os.path.join(deep, "c" * (1023 - len(deep) - 1))
            self.assertEqual(len(cut), 1023)
            shutil.copy(crt, cut)
            for flag, value in (("-tls-cert-file", cut + ".missing"),
                                ("-tls-key-file", cut + ".missing")):
                with self.subTest(flag=flag):
                    other = "-tls-key-file=" + key if flag == "-tls-cert-file" else \
                        "-tls-cert-file=" + crt
                    r = run_flags("-dev", "-dev-listen-address=127.0.0.1:0",
                                  flag + "=" + value, other)
                    self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
                    self.assertIn("kmsd: %s: path longer than 1023 bytes" % flag, r.stderr)
        finally:
            shutil.rmtree(d)

    def test_bad_audit_fsync_flag_is_refused_without_audit_file(self):
        r = run_flags("-dev", "-dev-listen-address=127.0.0.1:0", "-audit-fsync=sometimes")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn('"sometimes"', r.stderr)

    def test_postgresql_settings_without_postgresql_storage_refused(self):
        # "storage" defaults to lmdb, and the PostgreSQL settings were ignored: a replica set
        # up for a shared database served keys of its own from a local store, silently
        d = tempfile.mkdtemp(prefix="kmsd-cfg-")
        try:
            key = os.path.join(d, "seal.key")
            fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
            os.write(fd, os.urandom(32))
            os.close(fd)
            for setting, value in (("postgresql_url", "postgresql://kmsd:pw-Secret-1@db/kmsd"),
                                   ("postgresql_password_file", os.path.join(d, "pg.pw"))):
                with self.subTest(setting=setting):
                    r = run_config(d, {"seal_key_file": key,
                                       "storage_path": os.path.join(d, "store"), setting: value})
                    self.assertEqual(r.returncode, 1, r.stderr)
                    self.assertIn('"%s" is set but "storage" is "lmdb": add "storage": '
                                  '"postgresql"' % setting, r.stderr)
                    self.assertNotIn("pw-Secret-1", r.stderr)
                    self.assertFalse(os.path.exists(os.path.join(d, "store")))
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def test_config_that_is_not_a_file_is_named_plainly(self):
        # -config=/etc/kmsd (the directory) said "'[' or '{' expected near end of file", and a
        # missing file ended in "(line -1)"
        d = tempfile.mkdtemp(prefix="kmsd-cfg-")
        try:
            r = run_flags("-config=" + d)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertEqual(r.stderr.strip(), "kmsd: config %s: is a directory, not a JSON file"
                             % d)
            missing = os.path.join(d, "kmsd.json")
            r = run_flags("-config=" + missing)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertEqual(r.stderr.strip(), "kmsd: config %s: unable to open %s: No such "
                             "file or directory" % (missing, missing))
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def test_empty_tls_and_audit_flags_are_refused(self):
        # "-tls-cert-file= -tls-key-file=" (an unset variable in a template) turned the config
        # file's TLS off, plain HTTP, and "-audit-file=" its audit log, both without a word
        d = tempfile.mkdtemp(prefix="kmsd-empty-")
        try:
            crt, key = os.path.join(d, "s.crt"), os.path.join(d, "s.key")
            self_signed(key, crt)
            write_seal_key(os.path.join(d, "seal.key"), os.urandom(32))
            settings = {"storage_path": os.path.join(d, "s"),
                        "seal_key_file": os.path.join(d, "seal.key"), "tls_cert_file": crt,
                        "tls_key_file": key, "audit_file": os.path.join(d, "audit.log")}
            for flags in (["-tls-cert-file=", "-tls-key-file="], ["-tls-key-file", ""],
                          ["-audit-file="]):
                with self.subTest(flags=flags):
                    try:
                        r = run_config(d, settings, *flags)
                    except subprocess.TimeoutExpired:
                        self.fail("kmsd served with %r" % flags)
                    self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                    name = flags[0].lstrip("-").rstrip("=")
                    self.assertIn("kmsd: flag -%s needs a value (it is empty)" % name, r.stderr)
                    self.assertFalse(os.path.exists(os.path.join(d, "s")))
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def test_bodies_in_flight_below_one_body_refused(self):
        d = tempfile.mkdtemp(prefix="kmsd-budget-")
        try:
            r = run_config(d, {"max_request_size": 4096, "max_request_bytes_in_flight": 1000})
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn('"max_request_bytes_in_flight" (1000) must be at least '
                          '"max_request_size" (4096)', r.stderr)
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def test_seal_key_fifo_is_refused_not_waited_on(self):
        # open(2) of a FIFO waits for a writer: kmsd hung at start, silently
        d = tempfile.mkdtemp(prefix="kmsd-fifo-")
        try:
            key = os.path.join(d, "seal.key")
            os.mkfifo(key, 0o600)
            try:
                r = run_config(d, {"seal_key_file": key, "storage_path": os.path.join(d, "store")})
            except subprocess.TimeoutExpired:  # (run killed it)
                self.fail("kmsd waited on the FIFO for 30 s")
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("seal key file %s is not a regular file" % key, r.stderr)
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def test_postgresql_password_fifo_is_refused_not_waited_on(self):
        # fopen(3) of a FIFO waited for a writer: kmsd hung at start, silently
        d = tempfile.mkdtemp(prefix="kmsd-fifo-")
        try:
            key = os.path.join(d, "seal.key")
            write_seal_key(key, "ab" * 32)
            pw = os.path.join(d, "pg.password")
            os.mkfifo(pw, 0o600)
            settings = {"seal_key_file": key, "storage": "postgresql",
                        "postgresql_url": "postgresql://kmsd@127.0.0.1:1/kmsd",
                        "postgresql_password_file": pw}
            try:
                r = run_config(d, settings)
            except subprocess.TimeoutExpired:  # (run killed it)
                self.fail("kmsd waited on the FIFO for 30 s")
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("postgresql_password_file %s is not a regular file" % pw, r.stderr)
            # a directory is refused the same way, not read as an empty password
            os.unlink(pw)
            os.mkdir(pw)
            r = run_config(d, settings)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("postgresql_password_file %s is not a regular file" % pw, r.stderr)
        finally:
            shutil.rmtree(d, ignore_errors=True)


class HelpOfEveryCommand(unittest.TestCase):
    def test_help_flag_prints_usage_on_stdout(self):
        """`kmsd C --help` prints C's usage on stdout, exit 0, as `kmsd --help`, `kmsd server
        --help` and `kmsd kms-plugin -h` do. `kmsd version --help` printed the version,
        `kmsd migrate --help` said 'unknown argument', exit 2, and `kmsd audit --help`
        printed a usage line on stderr, exit 2."""
        for args, want in ((["version", "--help"], "Usage: kmsd version"),
                           (["migrate", "--help"], "Usage: kmsd migrate -from=STORE"),
                           (["migrate", "-h"], "Usage: kmsd migrate -from=STORE"),
                           (["audit", "--help"], "Usage: kmsd audit verify"),
                           (["audit", "verify", "--help"], "Usage: kmsd audit verify"),
                           (["server", "--help"], "Usage: kmsd"),
                           (["--help"], "Usage: kmsd")):
            with self.subTest(args=args):
                r = subprocess.run([KMSD_BIN] + args, stdin=subprocess.DEVNULL,
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                self.assertTrue(r.stdout.startswith(want), r.stdout + r.stderr)
        # the commands themselves are unchanged
        r = subprocess.run([KMSD_BIN, "version"], capture_output=True, text=True, timeout=30)
        self.assertRegex(r.stdout, r"^kmsd v\S+\n$")
        for args in (["migrate"], ["audit"]):
            r = subprocess.run([KMSD_BIN] + args, stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 2, args)
        # a bare `kmsd audit` names every option `kmsd audit verify --help` lists (it left out
        # --each and -q, and called the anchor HASH where the help says sha256:HEX)
        self.assertEqual(r.stderr, "Usage: kmsd audit verify [--genesis] [--anchor=sha256:HEX] "
                                   "[--each] [-q] FILE|DIR...\n")


class Process(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="kmsd-proc-")
        self.proc = None

    def tearDown(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def start(self, config, env):
        os.makedirs(os.path.join(self.dir, "store"), mode=0o700)
        cfg = {"listen_address": "127.0.0.1:0", "storage_path": os.path.join(self.dir, "store")}
        cfg.update(config)
        path = os.path.join(self.dir, "kmsd.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        log = os.path.join(self.dir, "kmsd.log")
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([KMSD_BIN, "server", "-config=%s" % path],
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            with open(log) as f:
                text = f.read()
            addr = listening_address(text)
            if addr is not None:
                return addr
            if self.proc.poll() is not None:
                self.fail("kmsd exited: %s" % text)
            time.sleep(0.02)
        self.fail("no 'kmsd listening' line within %ss" % START_TIMEOUT)

    def test_seal_key_is_scrubbed_from_environ(self):
        key = os.urandom(32).hex()
        env = dict(os.environ)
        env["KMSD_SEAL_KEY"] = key
        self.start({}, env)
        with open("/proc/%d/environ" % self.proc.pid, "rb") as f:
            environ = f.read()
        self.assertNotIn(key.encode(), environ)
        self.assertNotIn(key[:16].encode(), environ)

    def test_seal_key_in_environ_scrubbed_when_the_file_is_used(self):
        # both given: the file wins, and the variable is cleared all the same (it stayed in
        # /proc/<pid>/environ for the life of the process)
        from kmsd_harness import write_seal_key
        keyfile = os.path.join(self.dir, "seal.key")
        write_seal_key(keyfile, os.urandom(32))
        key = os.urandom(32).hex()
        env = dict(os.environ, KMSD_SEAL_KEY=key)
        self.start({"seal_key_file": keyfile}, env)
        with open("/proc/%d/environ" % self.proc.pid, "rb") as f:
            environ = f.read()
        self.assertNotIn(key[:16].encode(), environ)
        with open(os.path.join(self.dir, "kmsd.log")) as f:
            self.assertIn("KMSD_SEAL_KEY is set but \"seal_key_file\" is used", f.read())

    def test_listening_line_at_every_log_level(self):
        env = dict(os.environ)
        env["KMSD_SEAL_KEY"] = os.urandom(32).hex()
        addr = self.start({"log_level": "error"}, env)
        self.assertTrue(addr.startswith("127.0.0.1:"))
        self.assertNotEqual(addr, "127.0.0.1:0")


if __name__ == "__main__":
    unittest.main()


class OneServerPerStore(unittest.TestCase):
    """A second kmsd on the same LMDB store is refused: each server caches keys, so the second
    went on encrypting with a key the first had deleted (a ciphertext nobody can decrypt)."""

    def test_second_server_and_migrate_refused_while_the_first_runs(self):
        from kmsd_harness import KmsdServer
        first = KmsdServer(mode="config")
        first.start()
        try:
            cfg = dict(first.effective_config, listen_address="127.0.0.1:0")
            path = os.path.join(first.workdir, "second.json")
            with open(path, "w") as f:
                json.dump(cfg, f)
            r = subprocess.run([KMSD_BIN, "server", "-config=" + path], stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=30)
            self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("another kmsd is using the store in " + cfg["storage_path"],
                          r.stdout + r.stderr)
            target = os.path.join(first.workdir, "copy")
            r = subprocess.run([KMSD_BIN, "migrate", "-from=lmdb:" + cfg["storage_path"],
                                "-to=lmdb:" + target, "-seal-key-file=" + cfg["seal_key_file"]],
                               stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=30)
            self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("another kmsd is using the store", r.stdout + r.stderr)
            # the first is unaffected
            self.assertEqual(first.request("GET", "sys/health", token=None).status, 501)
        finally:
            self.assertEqual(first.stop(), 0)
        # once it has stopped, the store opens again
        first.start()
        try:
            self.assertEqual(first.request("GET", "sys/health", token=None).status, 501)
        finally:
            self.assertEqual(first.stop(), 0)
            first.cleanup()


class DevStoreRemoved(unittest.TestCase):
    def test_dev_store_directory_is_removed_at_shutdown(self):
        # the banner names it; SIGTERM removes it (the store lock file included: it was left,
        # with the directory, after 7d73845)
        import re
        from kmsd_harness import KmsdServer
        srv = KmsdServer(mode="dev")
        srv.start()
        try:
            m = re.search(r"The store is ephemeral \(([^)]+)\)", srv.log_text())
            self.assertIsNotNone(m, srv.log_tail())
            store = m.group(1)
            self.assertTrue(os.path.isdir(store))
            self.assertTrue(os.path.exists(os.path.join(store, "kmsd.lock")))
            self.assertEqual(srv.stop(), 0)
            # checked before cleanup(), which removes what a killed dev server leaves
            self.assertFalse(os.path.exists(store),
                             os.listdir(store) if os.path.isdir(store) else "")
        finally:
            srv.cleanup()


class MigrateSourceMustBeAStore(unittest.TestCase):
    def test_migrate_from_a_directory_without_a_store_is_refused(self):
        # a mistyped -from=lmdb:DIR naming an empty directory made a new, empty store there
        # and "copied" its one seal check record to the target, exit 0
        d = tempfile.mkdtemp(prefix="kmsd-migrate-")
        try:
            src, dst = os.path.join(d, "empty"), os.path.join(d, "target")
            os.mkdir(src, 0o700)
            key = os.path.join(d, "seal.key")
            fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
            os.write(fd, os.urandom(32))
            os.close(fd)
            r = subprocess.run([KMSD_BIN, "migrate", "-from=lmdb:" + src, "-to=lmdb:" + dst,
                                "-seal-key-file=" + key], stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            self.assertIn("source store %s: no kmsd store in %s" % (src, src), r.stderr)
            self.assertEqual(os.listdir(src), [])
            self.assertFalse(os.path.exists(dst))
        finally:
            shutil.rmtree(d, ignore_errors=True)


    def test_migrate_onto_the_same_store_spelt_twice_is_named(self):
        # /a and /a/ (or a symlink): the target's open found the source's lock and said
        # "another kmsd is using the store", naming no mistake of the command line
        from kmsd_harness import KmsdServer
        srv = KmsdServer(mode="config")
        try:
            srv.start()
            self.assertEqual(srv.stop(), 0)
            store = srv.effective_config["storage_path"]
            link = os.path.join(srv.workdir, "store-link")
            os.symlink(store, link)
            for target in (store + "/", link):
                with self.subTest(target=target):
                    r = subprocess.run([KMSD_BIN, "migrate", "-from=lmdb:" + store,
                                        "-to=lmdb:" + target,
                                        "-seal-key-file=" + srv.effective_config["seal_key_file"]],
                                       stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                       timeout=30)
                    self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                    self.assertIn("-from and -to name the same store (%s)" % target, r.stderr)
        finally:
            srv.cleanup()


class ReloadWhileStarting(unittest.TestCase):
    def test_sighup_during_start_up_does_not_kill_the_server(self):
        # logrotate's `systemctl reload kmsd` can come as soon as systemd (Type=exec) has
        # started kmsd; SIGHUP's default action killed a server still opening its store. The
        # config file is a FIFO here, so the server waits, started, until the test writes it.
        d = tempfile.mkdtemp(prefix="kmsd-hup-")
        proc = log = None
        try:
            store, key, fifo = (os.path.join(d, n) for n in ("store", "seal.key", "kmsd.fifo"))
            fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
            os.write(fd, os.urandom(32))
            os.close(fd)
            os.mkfifo(fifo, 0o600)
            log = open(os.path.join(d, "kmsd.log"), "wb")
            proc = subprocess.Popen([KMSD_BIN, "server", "-config=" + fifo],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            w = os.open(fifo, os.O_WRONLY)  # returns once kmsd has opened it to read
            proc.send_signal(signal.SIGHUP)
            os.write(w, json.dumps({"listen_address": "127.0.0.1:0", "storage_path": store,
                                    "seal_key_file": key}).encode())
            os.close(w)
            deadline = time.monotonic() + START_TIMEOUT
            text = ""
            while listening_address(text) is None and proc.poll() is None:
                self.assertLess(time.monotonic(), deadline, text)
                time.sleep(0.02)
                with open(log.name) as f:
                    text = f.read()
            self.assertIsNone(proc.poll(), "kmsd ended (%s): %s" % (proc.returncode, text))
            proc.send_signal(signal.SIGTERM)
            self.assertEqual(proc.wait(timeout=30), 0)
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
            if log is not None:
                log.close()
            shutil.rmtree(d, ignore_errors=True)


class MigrateIntoAFullTarget(unittest.TestCase):
    def test_full_lmdb_target_is_named_and_can_be_sized(self):
        # an LMDB target has a map (1 GiB by default) that a larger store does not fit: the
        # copy failed with "a record does not open under the seal key, or a store failed"
        # (read as tampering) and migrate had no way to give the target a larger map
        from kmsd_harness import KmsdServer, KmsdTestCase
        srv = KmsdServer(mode="config", config={"rate_limit": 0})
        srv.start()
        try:
            KmsdTestCase.init_config_server(srv)
            meta = {"m%d" % i: "x" * 400 for i in range(5)}
            for _ in range(600):  # about 1.5 MiB of token records
                r = srv.request("POST", "auth/token/create", {"meta": meta, "ttl": "1h"})
                self.assertEqual(r.status, 200, r.describe())
            self.assertEqual(srv.stop(), 0)
            cfg = srv.effective_config

            def migrate(target, map_size):
                return subprocess.run(
                    [KMSD_BIN, "migrate", "-from=lmdb:" + cfg["storage_path"],
                     "-to=lmdb:" + os.path.join(srv.workdir, target),
                     "-seal-key-file=" + cfg["seal_key_file"],
                     "-storage-map-size=%d" % map_size],
                    stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)

            r = migrate("small", 1 << 20)
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            self.assertIn("into the target store after", r.stderr)
            self.assertIn("is it full (an LMDB target's map size, or its disk)?", r.stderr)
            self.assertNotIn("does not open under the seal key", r.stderr)
            r = migrate("large", 64 << 20)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("kmsd migrate: copied", r.stdout)
            # the larger target serves
            srv.config["storage_path"] = os.path.join(srv.workdir, "large")
            srv.start()
            self.assertEqual(srv.request("GET", "sys/health", token=None).status, 200)
            self.assertEqual(srv.stop(), 0)
        finally:
            srv.cleanup()
