"""kmsd on the PostgreSQL storage backend (docs/ha.md, docs/config.md): a real kmsd in config
mode on a throwaway PostgreSQL 15 cluster (tests/pg/pgtmp.py) reached over loopback TCP with
SCRAM authentication. Keys, versions, floors and tokens survive a restart; PostgreSQL only
ever holds sealed values; the password comes from a file or an environment variable and is
never printed; a bad configuration stops kmsd with a message."""

import os
import select
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pg"))

from kmsd_harness import KMSD_BIN, KmsdServer, KmsdTestCase, b64, unb64  # noqa: E402
from pgtmp import PG_BIN, PgCluster  # noqa: E402

PASSWORD = "pg-Secret-7f3a9c"


class PgCase(unittest.TestCase):
    """One throwaway cluster per class (SCRAM over loopback TCP), an empty table per test."""

    @classmethod
    def setUpClass(cls):
        cls.pg = PgCluster.started_with_password(PASSWORD)

    @classmethod
    def tearDownClass(cls):
        cls.pg.destroy()

    def setUp(self):
        self.servers = []
        self.pg.psql("DROP TABLE IF EXISTS kmsd_records")

    def tearDown(self):
        for s in self.servers:
            s.cleanup()

    def run(self, result=None):
        before = (len(result.failures) + len(result.errors)) if result is not None else 0
        out = super().run(result)
        if result is not None and len(result.failures) + len(result.errors) > before:
            for s in getattr(self, "servers", []):
                sys.stderr.write("\n%s\n" % s.log_tail(40))
        return out

    def new_server(self, password_file=True, **cfg):
        srv = KmsdServer(mode="config", config={})
        config = {"storage": "postgresql", "postgresql_url": self.pg.tcp_url}
        if password_file:
            path = os.path.join(srv.workdir, "pg.password")
            with open(path, "w") as f:
                f.write(PASSWORD + "\n")
            os.chmod(path, 0o600)
            config["postgresql_password_file"] = path
        config.update(cfg)
        srv.config = config
        self.servers.append(srv)
        return srv

    def ok(self, r, status=200):
        if r.status != status:
            self.fail("expected HTTP %d\n%s" % (status, r.describe()))
        return r.data

    def expect_refusal(self, srv):
        srv.spawn()
        rc = srv.wait_exit(30)
        if rc is None:
            srv.kill()
            self.fail("kmsd kept running\n" + srv.log_tail())
        srv._close_log()
        self.assertNotEqual(rc, 0, srv.log_tail())
        return srv.log_text()


class PostgresqlStorageTest(PgCase):

    def test_state_survives_restart_and_stays_sealed(self):
        srv = self.new_server().start()
        KmsdTestCase.init_config_server(srv)
        root = srv.token
        plaintext = b"pg-plaintext-marker-0123456789"
        self.ok(srv.request("POST", "transit/keys/pgkey"), 200)
        ct1 = self.ok(srv.request("POST", "transit/encrypt/pgkey",
                                  {"plaintext": b64(plaintext)}))["ciphertext"]
        self.ok(srv.request("POST", "transit/keys/pgkey/rotate"))
        self.ok(srv.request("POST", "transit/keys/pgkey/rotate"))
        ct3 = self.ok(srv.request("POST", "transit/encrypt/pgkey",
                                  {"plaintext": b64(plaintext)}))["ciphertext"]
        self.ok(srv.request("POST", "transit/keys/pgkey/config",
                            {"min_decryption_version": 3}), 200)
        r = srv.request("POST", "auth/token/create", {"policies": ["default"]})
        self.assertEqual(r.status, 200, r.describe())
        child = r.json["auth"]["client_token"]
        # the rows are in PostgreSQL, sealed
        rows = int(self.pg.psql("SELECT count(*) FROM kmsd_records").strip())
        self.assertGreater(rows, 5)
        hits = self.pg.psql("SELECT count(*) FROM kmsd_records WHERE position('\\x%s'::bytea "
                            "IN value) > 0" % plaintext.hex()).strip()
        self.assertEqual(hits, "0")
        self.assertEqual(srv.stop(), 0)

        srv.start()
        srv.token = root
        r = srv.request("POST", "transit/decrypt/pgkey", {"ciphertext": ct3})
        self.assertEqual(unb64(self.ok(r)["plaintext"]), plaintext)
        r = srv.request("POST", "transit/decrypt/pgkey", {"ciphertext": ct1})
        self.assertEqual(r.status, 400, r.describe())
        key = self.ok(srv.request("GET", "transit/keys/pgkey"))
        self.assertEqual((key["latest_version"], key["min_decryption_version"]), (3, 3))
        r = srv.request("GET", "auth/token/lookup-self", token=child)
        self.assertEqual(r.status, 200, r.describe())
        r = srv.request("GET", "sys/health", token=None)
        self.assertEqual(r.status, 200, r.describe())
        self.assertEqual(srv.stop(), 0)
        self.assertNotIn(PASSWORD, srv.log_text())

    def test_token_admin_calls(self):
        """revoke-orphan (its scan runs in the write transaction), tidy and LIST accessors on
        this backend: the orphaned child survives, the expired token's rows go."""
        srv = self.new_server().start()
        KmsdTestCase.init_config_server(srv)
        r = srv.request("POST", "sys/policies/acl/maker",
                        {"policy": 'path "auth/token/create" { capabilities = ["update"] }'})
        self.assertEqual(r.status, 204, r.describe())

        def create(token=None, **body):
            r = srv.request("POST", "auth/token/create", body,
                            **({"token": token} if token else {}))
            self.assertEqual(r.status, 200, r.describe())
            return r.json["auth"]["client_token"], r.json["auth"]["accessor"]

        parent, _ = create(policies=["maker"])
        child, cacc = create(token=parent)
        r = srv.request("POST", "auth/token/revoke-orphan", {"token": parent})
        self.assertEqual(r.status, 204, r.describe())
        self.assertEqual(srv.request("GET", "auth/token/lookup-self", token=parent).status, 403)
        self.assertIs(self.ok(srv.request("GET", "auth/token/lookup-self", token=child))["orphan"],
                      True)
        _, dacc = create(policies=["default"], ttl=1)
        deadline = time.monotonic() + 15
        while dacc in self.ok(srv.request("LIST", "auth/token/accessors"))["keys"]:
            self.assertLess(time.monotonic(), deadline, "the 1 s token did not expire")
            time.sleep(0.1)
        rows = int(self.pg.psql("SELECT count(*) FROM kmsd_records").strip())
        r = srv.request("POST", "auth/token/tidy")
        self.assertEqual(r.status, 202, r.describe())
        # the expired token's record and its accessor entry
        self.assertEqual(int(self.pg.psql("SELECT count(*) FROM kmsd_records").strip()), rows - 2)
        self.assertIn(cacc, self.ok(srv.request("LIST", "auth/token/accessors"))["keys"])
        self.assertEqual(srv.stop(), 0)

    def test_namespace_records_on_postgresql(self):
        """On this backend too: a namespace's custom_metadata and a mount's settings are
        stored with their records and survive a restart, and deleting the namespace removes
        its tokens in the purge's transaction (a scan inside the write transaction)."""
        srv = self.new_server().start()
        KmsdTestCase.init_config_server(srv)
        r = srv.request("POST", "sys/namespaces/pgorg", {"custom_metadata": {"team": "a"}})
        self.assertEqual(r.status, 200, r.describe())
        r = srv.request("POST", "sys/mounts/transit", {"type": "transit",
                                                      "config": {"default_lease_ttl": "1h"}},
                        namespace="pgorg")
        self.assertEqual(r.status, 204, r.describe())
        rows = int(self.pg.psql("SELECT count(*) FROM kmsd_records").strip())
        r = srv.request("POST", "auth/token/create", {"policies": ["a"]}, namespace="pgorg")
        self.assertEqual(r.status, 200, r.describe())
        tok = r.json["auth"]["client_token"]
        self.assertEqual(int(self.pg.psql("SELECT count(*) FROM kmsd_records").strip()), rows + 2)
        root = srv.token
        self.assertEqual(srv.stop(), 0)
        srv.start()
        srv.token = root
        self.assertEqual(self.ok(srv.request("GET", "sys/namespaces/pgorg"))["custom_metadata"],
                         {"team": "a"})
        self.assertEqual(self.ok(srv.request("GET", "sys/mounts/transit", namespace="pgorg"))
                         ["config"]["default_lease_ttl"], 3600)
        self.assertEqual(srv.request("GET", "auth/token/lookup-self", token=tok,
                                     namespace="pgorg").status, 200)
        r = srv.request("DELETE", "sys/mounts/transit", namespace="pgorg")
        self.assertEqual(r.status, 204, r.describe())
        r = srv.request("DELETE", "sys/namespaces/pgorg")
        self.assertEqual(r.status, 204, r.describe())
        # the namespace record, its mount's and the token's two rows are gone
        self.assertEqual(int(self.pg.psql("SELECT count(*) FROM kmsd_records").strip()), rows - 2)
        self.assertEqual(srv.stop(), 0)

    def test_one_kmsd_per_database(self):
        """Until replicas have leadership, a second kmsd on the same database is refused."""
        first = self.new_server().start()
        KmsdTestCase.init_config_server(first)
        second = self.new_server()
        with open(os.path.join(first.workdir, "seal.key"), "rb") as f:
            second.seal_key = f.read()
        log = self.expect_refusal(second)
        self.assertIn("another kmsd is using this PostgreSQL database", log)
        self.assertEqual(first.stop(), 0)
        second.start()  # the lock went with the first one's session
        self.assertEqual(second.request("GET", "sys/health", token=None).status, 200)
        self.assertEqual(second.stop(), 0)

    def test_a_kmsd_whose_database_lock_ended_stops(self):
        """The session holding the database lock ends (a PostgreSQL restart, a terminated
        backend): another kmsd can open the database from then on, so the first one stops
        (exit 1) rather than go on answering from caches the other's writes make stale (it
        decrypted with a version the other had put under min_decryption_version)."""
        first = self.new_server().start()
        KmsdTestCase.init_config_server(first)
        self.ok(first.request("POST", "transit/keys/lost"))
        ct = self.ok(first.request("POST", "transit/encrypt/lost",
                                   {"plaintext": b64(b"one")}))["ciphertext"]
        self.pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE application_name = 'kmsd'")
        rc = first.wait_exit(15)
        if rc is None:
            self.fail("kmsd kept serving after its database lock was gone\n" + first.log_tail())
        self.assertEqual(rc, 1, first.log_tail())
        self.assertIn("the PostgreSQL session holding the database lock ended",
                      first.log_text())
        # a kmsd started now takes the database, with everything acknowledged before
        second = self.new_server()
        with open(os.path.join(first.workdir, "seal.key"), "rb") as f:
            second.seal_key = f.read()
        second.start()
        second.token = first.token
        r = second.request("POST", "transit/decrypt/lost", {"ciphertext": ct})
        self.assertEqual(unb64(self.ok(r)["plaintext"]), b"one")
        self.assertEqual(second.stop(), 0)

    def test_backup_with_pg_dump_as_documented(self):
        """docs/operations.md, Backup, PostgreSQL: pg_dump of kmsd_records while kmsd runs,
        restored with kmsd stopped, gives the store back as it was at the dump."""
        srv = self.new_server().start()
        KmsdTestCase.init_config_server(srv)
        self.ok(srv.request("POST", "transit/keys/bk"))
        ct = self.ok(srv.request("POST", "transit/encrypt/bk",
                                 {"plaintext": b64(b"kept")}))["ciphertext"]
        dump = os.path.join(srv.workdir, "kmsd.pgdump")
        env = dict(os.environ, PGPASSWORD=PASSWORD)
        r = subprocess.run([os.path.join(PG_BIN, "pg_dump"), "-Fc", "-t", "kmsd_records", "-f",
                            dump, self.pg.tcp_url], capture_output=True, text=True, env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.ok(srv.request("POST", "transit/keys/bk/rotate"))  # after the backup: gone
        self.assertEqual(srv.stop(), 0)
        self.pg.psql("DROP TABLE kmsd_records")
        r = subprocess.run([os.path.join(PG_BIN, "pg_restore"), "-d", self.pg.tcp_url, dump],
                           capture_output=True, text=True, env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        srv.start()
        r = srv.request("POST", "transit/decrypt/bk", {"ciphertext": ct})
        self.assertEqual(unb64(self.ok(r)["plaintext"]), b"kept")
        self.assertEqual(self.ok(srv.request("GET", "transit/keys/bk"))["latest_version"], 1)
        self.assertEqual(srv.stop(), 0)

    def test_init_started_over_as_documented(self):
        """docs/operations.md: an init whose answer was lost (root token never seen) is started
        over on a store never used: stop kmsd, TRUNCATE kmsd_records, init again."""
        srv = self.new_server()
        srv.start()
        KmsdTestCase.init_config_server(srv)
        lost = srv.token
        r = srv.request("PUT", "sys/init", {}, token=None)
        self.assertEqual(r.status, 400, r.describe())
        self.assertIn("already initialized", r.describe())
        self.assertEqual(srv.stop(), 0)
        self.pg.psql("TRUNCATE kmsd_records")
        srv.start()
        r = srv.request("GET", "sys/health", token=None)
        self.assertEqual(r.status, 501, r.describe())  # not initialised
        KmsdTestCase.init_config_server(srv)
        self.assertNotEqual(srv.token, lost)
        self.assertEqual(srv.request("GET", "auth/token/lookup-self", token=lost).status, 403)
        self.ok(srv.request("POST", "transit/keys/k", {}))
        self.assertEqual(srv.stop(), 0)

    def test_password_from_environment(self):
        srv = self.new_server(password_file=False,
                              postgresql_password_env="KMS_TEST_PG_PASSWORD")
        os.environ["KMS_TEST_PG_PASSWORD"] = PASSWORD
        try:
            srv.start()
        finally:
            del os.environ["KMS_TEST_PG_PASSWORD"]
        KmsdTestCase.init_config_server(srv)
        self.assertEqual(srv.stop(), 0)
        self.assertNotIn(PASSWORD, srv.log_text())

    def test_wrong_password_refused_and_not_printed(self):
        srv = self.new_server(password_file=False,
                              postgresql_url=self.pg.tcp_url.replace(
                                  "kmsd@", "kmsd:url-Secret-55@"))
        log = self.expect_refusal(srv)
        self.assertIn("cannot connect to PostgreSQL", log)
        self.assertIn("password authentication failed", log)
        self.assertNotIn("url-Secret-55", log)

        srv = self.new_server(password_file=False, postgresql_password_env="KMS_TEST_PG_PW2")
        os.environ["KMS_TEST_PG_PW2"] = "env-Secret-66"
        try:
            log = self.expect_refusal(srv)
        finally:
            del os.environ["KMS_TEST_PG_PW2"]
        self.assertIn("password authentication failed", log)
        self.assertNotIn("env-Secret-66", log)

    def test_password_in_a_bad_url_not_printed(self):
        """A password in the URL that is not percent-encoded ('%' or '@' in it, a common slip)
        makes libpq quote a piece of it in its error (the bad token, or the host name that
        follows the first '@'): kmsd leaves libpq's quoted parts out, for kmsd and migrate."""
        for url, piece in (
                # invalid percent-encoded token: "url%ZZsecret-71"
                (self.pg.tcp_url.replace("kmsd@", "kmsd:url%ZZsecret-71@"), "ZZsecret-71"),
                # host name "ss-Secret-82@127.0.0.1" (the password ends at the first '@')
                (self.pg.tcp_url.replace("kmsd@", "kmsd:pa@ss-Secret-82@"), "ss-Secret-82"),
                # missing "=" after "word-Secret-93" (a space in a key=value password)
                ("host=127.0.0.1 dbname=kmsd user=kmsd password=pass word-Secret-93",
                 "word-Secret-93")):
            srv = self.new_server(password_file=False, postgresql_url=url)
            log = self.expect_refusal(srv)
            self.assertIn("cannot connect to PostgreSQL", log)
            self.assertNotIn(piece, log)
            res = subprocess.run([KMSD_BIN, "migrate", "-from=postgresql:" + url,
                                  "-to=lmdb:" + os.path.join(srv.workdir, "copy")],
                                 capture_output=True, text=True, timeout=60,
                                 env=dict(os.environ, KMSD_SEAL_KEY="00" * 32))
            self.assertNotEqual(res.returncode, 0, res.stdout)
            self.assertIn("cannot connect to PostgreSQL", res.stderr)
            self.assertNotIn(piece, res.stdout + res.stderr)
        # a URL without a password keeps libpq's whole message (the password comes from a file)
        srv = self.new_server(postgresql_url=self.pg.tcp_url.replace("kmsd@", "nosuchrole@"))
        log = self.expect_refusal(srv)
        self.assertIn('for user "nosuchrole"', log)

    def test_configuration_errors(self):
        srv = self.new_server(password_file=False, postgresql_url="")
        log = self.expect_refusal(srv)
        self.assertIn('"postgresql_url" is required with "storage": "postgresql"', log)
        srv = self.new_server(password_file=False, storage="sqlite")
        log = self.expect_refusal(srv)
        self.assertIn('"storage": unsupported value "sqlite"', log)
        srv = self.new_server(password_file=False, postgresql_password_env="KMS_TEST_UNSET_PW")
        log = self.expect_refusal(srv)
        self.assertIn("KMS_TEST_UNSET_PW (postgresql_password_env) is not set", log)

    def test_config_syntax_error_quotes_no_password(self):
        """A '"' of the password in postgresql_url not escaped in the JSON config: kmsd names
        the line and column of the error, but not the text there (jansson's "near '...'"),
        which was the rest of the password."""
        srv = self.new_server(password_file=False)
        path = os.path.join(srv.workdir, "bad.json")
        with open(path, "w") as f:
            f.write('{"storage": "postgresql",\n'
                    ' "postgresql_url": "postgresql://kmsd:pa"ssSecret-47@127.0.0.1/kmsd"}\n')
        res = subprocess.run([KMSD_BIN, "server", "-config=" + path], capture_output=True,
                             text=True, timeout=30)
        self.assertNotEqual(res.returncode, 0)
        self.assertNotIn("ssSecret", res.stdout + res.stderr)
        self.assertIn("config %s: " % path, res.stderr)
        self.assertIn("(line 2, column", res.stderr)

    def test_seal_key_must_match(self):
        srv = self.new_server().start()
        KmsdTestCase.init_config_server(srv)
        self.assertEqual(srv.stop(), 0)
        other = self.new_server()
        log = self.expect_refusal(other)  # its own workdir: a different random seal key
        self.assertIn("seal key does not match this store", log)


class CommitCutProxy:
    """A TCP proxy to PostgreSQL. With `cut` set, the next COMMIT a client sends is passed on,
    PostgreSQL's answer to it is read and thrown away, and both connections are closed: the
    transaction committed, and the client never learns it (a connection broken at that moment)."""

    COMMIT = b"Q\x00\x00\x00\x0bCOMMIT\x00"  # a simple query message

    def __init__(self, port):
        self.upstream = port
        self.cut = threading.Event()
        self.fired = threading.Event()
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
                u = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                continue
            threading.Thread(target=self._pump, args=(c, u), daemon=True).start()

    def _pump(self, c, u):
        try:
            while not self.closed:
                r, _, _ = select.select([c, u], [], [], 0.2)
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        return
                    (u if s is c else c).sendall(data)
                    if s is c and self.COMMIT in data and self.cut.is_set():
                        self.cut.clear()
                        u.settimeout(10)
                        u.recv(65536)  # CommandComplete "COMMIT": it is done
                        self.fired.set()
                        return
        except OSError:
            pass
        finally:
            c.close()
            u.close()

    def close(self):
        self.closed = True
        self.lsock.close()


class LostCommitTest(PgCase):
    """A COMMIT whose answer is lost is reported as a failure, though it may have committed:
    what it changed must not go on being served from the key cache."""

    def test_key_deleted_by_a_commit_whose_answer_was_lost(self):
        proxy = CommitCutProxy(self.pg.port)
        self.addCleanup(proxy.close)
        url = self.pg.tcp_url.replace(":%d/" % self.pg.port, ":%d/" % proxy.port)
        srv = self.new_server(postgresql_url=url).start()
        KmsdTestCase.init_config_server(srv)
        self.ok(srv.request("POST", "transit/keys/gone"))
        self.ok(srv.request("POST", "transit/keys/gone/config", {"deletion_allowed": True}))
        self.ok(srv.request("POST", "transit/encrypt/gone", {"plaintext": b64(b"before")}))
        proxy.cut.set()
        r = srv.request("DELETE", "transit/keys/gone")
        self.assertTrue(proxy.fired.is_set(), "the DELETE sent no COMMIT\n" + r.describe())
        self.assertEqual(r.status, 500, r.describe())
        # until it notices its database lock is gone and stops, kmsd may answer: every
        # ciphertext it acknowledges must decrypt once the store is read again
        acked = []
        for i in range(20):
            try:
                r = srv.request("POST", "transit/encrypt/gone", {"plaintext": b64(b"after")},
                                timeout=5)
            except OSError:
                break
            if r.status == 200:
                acked.append(r.data["ciphertext"])
        rc = srv.wait_exit(15)
        self.assertEqual(rc, 1, srv.log_tail())
        again = self.new_server()
        with open(os.path.join(srv.workdir, "seal.key"), "rb") as f:
            again.seal_key = f.read()
        again.start()
        again.token = srv.token
        self.assertEqual(again.request("GET", "transit/keys/gone").status, 404,
                         "the lost COMMIT did not commit: the test proves nothing")
        for ct in acked:
            r = again.request("POST", "transit/decrypt/gone", {"ciphertext": ct})
            self.assertEqual(r.status, 200, "acknowledged %s, now:\n%s" % (ct, r.describe()))
        self.assertEqual(again.stop(), 0)

    def _cut_server(self):
        proxy = CommitCutProxy(self.pg.port)
        self.addCleanup(proxy.close)
        url = self.pg.tcp_url.replace(":%d/" % self.pg.port, ":%d/" % proxy.port)
        srv = self.new_server(postgresql_url=url).start()
        KmsdTestCase.init_config_server(srv)
        return proxy, srv

    def _cut(self, proxy, srv, method, path, body=None):
        proxy.cut.set()
        r = srv.request(method, path, body)
        self.assertTrue(proxy.fired.is_set(), "no COMMIT was sent\n" + r.describe())
        self.assertEqual(r.status, 500, r.describe())

    def _never_allowed_after(self, srv, method, path, body, token):
        """Until kmsd stops (its database lock went with the cut connection), the request is
        never allowed."""
        for i in range(20):
            try:
                r = srv.request(method, path, body, token=token, timeout=5)
            except OSError:
                break
            self.assertNotEqual(r.status, 200, "allowed from the cache:\n" + r.describe())
        self.assertEqual(srv.wait_exit(15), 1, srv.log_tail())

    def test_policy_deleted_by_a_commit_whose_answer_was_lost(self):
        proxy, srv = self._cut_server()
        self.ok(srv.request("POST", "transit/keys/pk"))
        r = srv.request("PUT", "sys/policies/acl/enc",
                        {"policy": 'path "transit/encrypt/*" { capabilities = ["update"] }'})
        self.assertEqual(r.status, 204, r.describe())
        r = srv.request("POST", "auth/token/create", {"policies": ["enc"]})
        self.ok(r)
        tok = r.json["auth"]["client_token"]
        enc = ("POST", "transit/encrypt/pk", {"plaintext": b64(b"x")})
        self.ok(srv.request(*enc, token=tok))  # the policy is cached
        self._cut(proxy, srv, "DELETE", "sys/policies/acl/enc")
        self._never_allowed_after(srv, *enc, tok)

    def test_token_revoked_by_a_commit_whose_answer_was_lost(self):
        proxy, srv = self._cut_server()
        r = srv.request("POST", "auth/token/create", {"policies": ["default"]})
        self.ok(r)
        tok = r.json["auth"]["client_token"]
        self.ok(srv.request("GET", "auth/token/lookup-self", token=tok))  # cached
        self._cut(proxy, srv, "POST", "auth/token/revoke", {"token": tok})
        self._never_allowed_after(srv, "GET", "auth/token/lookup-self", None, tok)


    def test_mount_removed_by_a_commit_whose_answer_was_lost(self):
        proxy, srv = self._cut_server()
        r = srv.request("POST", "sys/mounts/t2", {"type": "transit"})
        self.assertEqual(r.status, 204, r.describe())
        self.ok(srv.request("POST", "t2/keys/mk"))
        enc = ("POST", "t2/encrypt/mk", {"plaintext": b64(b"x")})
        self.ok(srv.request(*enc))  # the key is cached
        self._cut(proxy, srv, "DELETE", "sys/mounts/t2")
        self._never_allowed_after(srv, *enc, srv.token)

class MigrateTest(PgCase):
    """kmsd migrate: LMDB -> PostgreSQL -> LMDB, record for record, still sealed."""

    def migrate(self, *args, env=None):
        res = subprocess.run([KMSD_BIN, "migrate"] + list(args), capture_output=True, text=True,
                             timeout=120, env=dict(os.environ, **(env or {})))
        self.assertNotIn(PASSWORD, res.stdout + res.stderr)
        return res

    def test_lmdb_to_postgresql_and_back(self):
        # a kmsd on LMDB with state worth keeping
        lm = KmsdServer(mode="config")
        self.servers.append(lm)
        lm.start()
        KmsdTestCase.init_config_server(lm)
        root = lm.token
        self.ok(lm.request("POST", "transit/keys/mig"))
        self.ok(lm.request("POST", "transit/keys/mig/rotate"))
        cts = [self.ok(lm.request("POST", "transit/encrypt/mig",
                                  {"plaintext": b64(b"migrated %d" % i)}))["ciphertext"]
               for i in range(3)]
        self.ok(lm.request("POST", "transit/keys/mig/config", {"min_decryption_version": 2}))
        self.assertEqual(lm.stop(), 0)
        store = lm.effective_config["storage_path"]
        seal_file = lm.effective_config["seal_key_file"]
        pw_file = os.path.join(lm.workdir, "pg.password")
        with open(pw_file, "w") as f:
            f.write(PASSWORD + "\n")

        res = self.migrate("-from=lmdb:" + store, "-to=postgresql:" + self.pg.tcp_url,
                           "-seal-key-file=" + seal_file, "-postgresql-password-file=" + pw_file)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertRegex(res.stdout, r"copied \d+ records from lmdb:.* to postgresql:postgresql")

        # a second migration into the now non-empty database is refused
        res = self.migrate("-from=lmdb:" + store, "-to=postgresql:" + self.pg.tcp_url,
                           "-seal-key-file=" + seal_file, "-postgresql-password-file=" + pw_file)
        self.assertNotEqual(res.returncode, 0)
        self.assertIn("the target store is not empty", res.stderr)

        # kmsd on PostgreSQL with the same seal key serves the migrated state
        with open(seal_file, "rb") as f:
            seal = f.read()
        pgs = self.new_server()
        pgs.seal_key = seal
        pgs.start()
        pgs.token = root
        for i, ct in enumerate(cts):
            r = pgs.request("POST", "transit/decrypt/mig", {"ciphertext": ct})
            self.assertEqual(unb64(self.ok(r)["plaintext"]), b"migrated %d" % i)
        key = self.ok(pgs.request("GET", "transit/keys/mig"))
        self.assertEqual((key["latest_version"], key["min_decryption_version"]), (2, 2))

        # the database is in use: migrating out of it is refused until kmsd stops
        back = os.path.join(pgs.workdir, "back")
        res = self.migrate("-from=postgresql:" + self.pg.tcp_url, "-to=lmdb:" + back,
                           "-postgresql-password-file=" + pw_file, env={"KMSD_SEAL_KEY":
                                                                        seal.hex()})
        self.assertNotEqual(res.returncode, 0)
        self.assertIn("another kmsd is using this PostgreSQL database", res.stderr)
        self.assertEqual(pgs.stop(), 0)
        res = self.migrate("-from=postgresql:" + self.pg.tcp_url, "-to=lmdb:" + back,
                           "-postgresql-password-file=" + pw_file, env={"KMSD_SEAL_KEY":
                                                                        seal.hex()})
        self.assertEqual(res.returncode, 0, res.stderr)

        # and a kmsd on the new LMDB store serves it too
        lm2 = KmsdServer(mode="config", config={"storage_path": back}, seal_key=seal)
        self.servers.append(lm2)
        lm2.start()
        lm2.token = root
        r = lm2.request("POST", "transit/decrypt/mig", {"ciphertext": cts[2]})
        self.assertEqual(unb64(self.ok(r)["plaintext"]), b"migrated 2")
        self.assertEqual(lm2.stop(), 0)

    def test_refusals(self):
        lm = KmsdServer(mode="config")
        self.servers.append(lm)
        lm.start()
        self.assertEqual(lm.stop(), 0)
        store = lm.effective_config["storage_path"]
        other = os.path.join(lm.workdir, "other.key")
        with open(other, "w") as f:
            f.write("00" * 32)
        os.chmod(other, 0o600)
        res = self.migrate("-from=lmdb:" + store, "-to=lmdb:" + store + "-copy",
                           "-seal-key-file=" + other)
        self.assertNotEqual(res.returncode, 0)
        self.assertIn("source store %s: seal key does not match this store" % store, res.stderr)
        res = self.migrate("-from=sqlite:x", "-to=lmdb:/tmp/y")
        self.assertEqual(res.returncode, 2)
        self.assertIn("-from must be lmdb:PATH or postgresql:URL", res.stderr)
        res = self.migrate("-from=lmdb:" + store)
        self.assertEqual(res.returncode, 2)
        self.assertIn("Usage: kmsd migrate", res.stderr)
        res = self.migrate("-from=lmdb:" + store, "-to=lmdb:" + store + "-copy",
                           env={"KMSD_SEAL_KEY": ""})
        self.assertNotEqual(res.returncode, 0)
        self.assertIn("seal key from KMSD_SEAL_KEY", res.stderr)


if __name__ == "__main__":
    unittest.main()
