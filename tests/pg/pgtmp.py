"""A throwaway PostgreSQL 15 cluster for tests: initdb + pg_ctl in a fresh temporary
directory, owned by an unprivileged user when the tests run as root (PostgreSQL refuses to run
as root), listening on a unix socket inside that directory (and, if asked, on a loopback TCP
port chosen free). Removed afterwards, whatever happened.

From Python:

    with PgCluster() as pg:
        pg.url          # "host=/tmp/kms-pg-xxxx user=kmsd dbname=kmsd"
        pg.tcp_url      # with tcp=True: "postgresql://kmsd@127.0.0.1:PORT/kmsd"
        pg.stop(); pg.start()    # stop and start the same cluster (data kept)

From a shell (ctest runs the C storage tests this way):

    pgtmp.py run [--fsync] -- COMMAND ARGS...

starts a cluster, runs COMMAND with KMS_TEST_PG_URL set to its conninfo string, stops the
cluster, removes its directory and exits with COMMAND's status. --fsync runs PostgreSQL with
fsync on (the benchmarks: a commit waits for its WAL flush, as in production); tests run
without it. A setup step that fails
raises (exit 2): a test never silently skips PostgreSQL.
"""

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time

PG_BIN = os.environ.get("KMS_PG_BIN", "/usr/lib/postgresql/15/bin")
SUPERUSER = "kmsd"
DBNAME = "kmsd"


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    """initdb + pg_ctl in a temporary directory; see the module docstring."""

    def __init__(self, tcp=False, fsync=False, settings=None, run_as=None):
        self.tcp = tcp
        self.fsync = fsync
        self.settings = dict(settings or {})
        if run_as is None:
            run_as = "nobody" if os.geteuid() == 0 else None
        self.run_as = run_as
        self.dir = None
        self.port = None

    # -- helpers ------------------------------------------------------------------------------
    def _cmd(self, argv):
        if self.run_as is not None:
            return ["runuser", "-u", self.run_as, "--"] + argv
        return argv

    def _run(self, argv, timeout=60):
        res = subprocess.run(self._cmd(argv), cwd=self.dir, capture_output=True, text=True,
                             timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError("%s failed (%d): %s%s" % (argv[0], res.returncode, res.stdout,
                                                         res.stderr))
        return res

    @property
    def data(self):
        return os.path.join(self.dir, "data")

    @property
    def url(self):
        return "host=%s port=%d user=%s dbname=%s" % (self.dir, self.port, SUPERUSER, DBNAME)

    @property
    def tcp_url(self):
        if not self.tcp:
            raise RuntimeError("cluster started without tcp=True")
        return "postgresql://%s@127.0.0.1:%d/%s" % (SUPERUSER, self.port, DBNAME)

    # -- life cycle ---------------------------------------------------------------------------
    def create(self):
        self.dir = tempfile.mkdtemp(prefix="kms-pg-", dir="/tmp")
        if self.run_as is not None:
            pw = pwd.getpwnam(self.run_as)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.dir, 0o700)
        self._run([os.path.join(PG_BIN, "initdb"), "-D", self.data, "-U", SUPERUSER,
                   "--auth=trust", "--no-sync", "--no-instructions", "-E", "UTF8",
                   "--locale=C"])
        conf = {
            "unix_socket_directories": "'%s'" % self.dir,
            "listen_addresses": "'127.0.0.1'" if self.tcp else "''",
            "fsync": "on" if self.fsync else "off",
            "synchronous_commit": "on",
            "max_connections": "200",
            "shared_buffers": "32MB",
            "log_min_messages": "warning",
        }
        conf.update(self.settings)
        with open(os.path.join(self.data, "postgresql.auto.conf"), "a") as f:
            for k, v in conf.items():
                f.write("%s = %s\n" % (k, v))
        return self

    def start(self, timeout=30, same_port=False):
        """Start the cluster (again); a TCP port is chosen free (retried if taken meanwhile),
        or with same_port the port it had (clients that keep their URL reconnect)."""
        last = None
        for _ in range(5):
            if same_port and self.port is not None:
                pass
            elif self.port is None or self.tcp:
                self.port = _free_port() if self.tcp else 5432
            try:
                self._run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-w", "-t",
                           str(timeout), "-l", os.path.join(self.dir, "log"), "-o",
                           "-p %d" % self.port, "start"], timeout=timeout + 10)
                break
            except RuntimeError as e:
                last = e
                if not self.tcp:
                    raise RuntimeError("%s\n%s" % (e, self.log()))
        else:
            raise RuntimeError("cannot start PostgreSQL: %s\n%s" % (last, self.log()))
        self._ensure_db()
        return self

    def _ensure_db(self):
        res = subprocess.run(self._cmd([os.path.join(PG_BIN, "psql"), "-h", self.dir, "-p",
                                        str(self.port), "-U", SUPERUSER, "-d", "postgres",
                                        "-tAc", "SELECT 1 FROM pg_database WHERE datname='%s'"
                                        % DBNAME]),
                             cwd=self.dir, capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            raise RuntimeError("psql failed: %s" % res.stderr)
        if res.stdout.strip() != "1":
            self._run([os.path.join(PG_BIN, "createdb"), "-h", self.dir, "-p", str(self.port),
                       "-U", SUPERUSER, DBNAME])

    def stop(self, mode="fast"):
        if self.dir is None or not os.path.exists(os.path.join(self.data, "postmaster.pid")):
            return
        self._run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-w", "-m", mode, "stop"])

    def require_password(self, password):
        """TCP clients must log in with SCRAM as kmsd/password (the unix socket stays trust)."""
        self.psql("SET password_encryption = 'scram-sha-256'; ALTER USER %s PASSWORD '%s'"
                  % (SUPERUSER, password.replace("'", "''")))
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
        self._run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "reload"])
        # reload is asynchronous: wait (with a deadline) until a password-less login fails
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            res = subprocess.run([os.path.join(PG_BIN, "psql"), "-w", self.tcp_url, "-tAc",
                                  "SELECT 1"], capture_output=True, text=True, timeout=10,
                                 env=dict(os.environ, PGPASSWORD=""))
            if res.returncode != 0:
                return
            time.sleep(0.05)
        raise RuntimeError("pg_hba.conf reload did not take effect")

    @classmethod
    def started_with_password(cls, password):
        """A started TCP cluster whose TCP clients log in with SCRAM (require_password);
        destroyed again when that set-up fails."""
        pg = cls(tcp=True).__enter__()
        try:
            pg.require_password(password)
        except BaseException:
            pg.destroy()
            raise
        return pg

    def psql(self, sql):
        """Run sql through psql as the superuser; returns stdout (unaligned, tuples only)."""
        return self._run([os.path.join(PG_BIN, "psql"), "-h", self.dir, "-p", str(self.port),
                          "-U", SUPERUSER, "-d", DBNAME, "-v", "ON_ERROR_STOP=1", "-tAc",
                          sql]).stdout

    def log(self):
        try:
            with open(os.path.join(self.dir, "log")) as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def destroy(self):
        if self.dir is None:
            return
        try:
            self.stop(mode="immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self):
        try:
            self.create()
            self.start()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc):
        self.destroy()
        return False


def main(argv):
    opts = argv[2:argv.index("--")] if "--" in argv else None
    if len(argv) < 3 or argv[1] != "run" or opts is None or set(opts) - {"--fsync"}:
        print("usage: pgtmp.py run [--fsync] -- COMMAND ARGS...", file=sys.stderr)
        return 2
    cmd = argv[argv.index("--") + 1:]
    t0 = time.monotonic()
    try:
        pg = PgCluster(fsync="--fsync" in opts).__enter__()
    except Exception as e:  # a refused setup step fails the test
        print("pgtmp: cannot start PostgreSQL: %s" % e, file=sys.stderr)
        return 2
    try:
        print("pgtmp: PostgreSQL up in %.1f s at %s" % (time.monotonic() - t0, pg.dir),
              file=sys.stderr)
        env = dict(os.environ, KMS_TEST_PG_URL=pg.url)
        return subprocess.call(cmd, env=env)
    finally:
        pg.destroy()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
