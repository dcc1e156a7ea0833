"""Config-mode kmsd: initialisation, persistence across restarts, the seal key file, and
durability of acknowledged writes after SIGKILL (brief; decisions.md 'secrets at rest';
reference transit-api.md §1.7 health codes, §2.2 versions, §9 case 3)."""

import http.client
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import unittest

from kmsd_harness import (MSG_TOO_OLD, KmsdServer, KmsdTestCase, b64, listening_address, unb64,
                          wait_for, write_seal_key)


class ConfigServerCase(unittest.TestCase):
    """Each test owns its servers; stores live in a temp workdir per test."""

    def setUp(self):
        self.servers = []

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

    def new_server(self, **kw):
        s = KmsdServer(mode="config", **kw)
        self.servers.append(s)
        return s

    def init(self, srv):
        KmsdTestCase.init_config_server(srv)
        return srv.token

    def restart(self, srv):
        rc = srv.stop()
        self.assertEqual(rc, 0, "kmsd did not exit cleanly on SIGTERM\n" + srv.log_tail())
        srv.start()
        return srv

    def ok(self, r, status=200):
        if r.status != status:
            self.fail("expected HTTP %d\n%s" % (status, r.describe()))
        return r.data

    def expect_refusal(self, srv, timeout=10):
        """The server must exit non-zero on its own, without ever serving."""
        srv.spawn()
        rc = srv.wait_exit(timeout)
        if rc is None:
            srv.kill()
            self.fail("kmsd kept running with a bad seal key\n" + srv.log_tail())
        srv._close_log()
        self.assertNotEqual(rc, 0, srv.log_tail())
        log = srv.log_text()
        self.assertTrue(log.strip(), "no message explaining the refusal")
        return log


class InitTest(ConfigServerCase):

    def test_uninitialised_health_and_init_once(self):
        srv = self.new_server().start()
        r = srv.request("GET", "sys/health", token=None)
        self.assertEqual(r.status, 501, r.describe())
        self.assertIs(r.json["initialized"], False, r.describe())
        r = srv.request("GET", "sys/init", token=None)
        self.assertEqual((r.status, r.json), (200, {"initialized": False}), r.describe())
        r = srv.request("PUT", "sys/init", {}, token=None)
        self.assertEqual(r.status, 200, r.describe())
        self.assertEqual(sorted(r.json), ["keys", "keys_base64", "root_token"], r.describe())
        self.assertEqual(r.json["keys"], [])
        self.assertEqual(r.json["keys_base64"], [])
        root = r.json["root_token"]
        self.assertIsInstance(root, str)
        self.assertGreaterEqual(len(root), 16)
        r = srv.request("PUT", "sys/init", {}, token=None)
        self.assertEqual(r.status, 400, r.describe())
        r = srv.request("PUT", "sys/init", {}, token=root)
        self.assertEqual(r.status, 400, r.describe())
        r = srv.request("GET", "sys/health", token=None)
        self.assertEqual(r.status, 200, r.describe())
        self.assertIs(r.json["initialized"], True)
        self.assertIs(r.json["sealed"], False)
        r = srv.request("GET", "sys/init", token=None)
        self.assertEqual((r.status, r.json), (200, {"initialized": True}), r.describe())
        self.ok(srv.request("GET", "sys/mounts", token=root))
        r = srv.request("GET", "sys/mounts", token="bogus")
        self.assertEqual((r.status, r.errors), (403, ["permission denied"]), r.describe())
        # after a restart: still initialised, same root token, init still refused
        self.restart(srv)
        r = srv.request("GET", "sys/health", token=None)
        self.assertEqual(r.status, 200, r.describe())
        self.assertIs(r.json["initialized"], True)
        self.ok(srv.request("GET", "sys/mounts", token=root))
        r = srv.request("PUT", "sys/init", {}, token=None)
        self.assertEqual(r.status, 400, r.describe())
        self.assertEqual(srv.stop(), 0)

    def test_health_uninitcode_override(self):
        srv = self.new_server().start()
        r = srv.request("GET", "sys/health?uninitcode=299", token=None)
        self.assertEqual(r.status, 299, r.describe())
        self.assertEqual(srv.stop(), 0)


class RestartTest(ConfigServerCase):

    def test_acceptance_scenario(self):
        """Create, rotate x3, encrypt under each version, min_decryption_version=3,
        restart: state and ciphertext policy survive; lowering to 1 works again."""
        srv = self.new_server().start()
        self.init(srv)
        self.ok(srv.request("POST", "transit/keys/acceptance", {}))
        for v in (2, 3, 4):
            d = self.ok(srv.request("POST", "transit/keys/acceptance/rotate"))
            self.assertEqual(d["latest_version"], v)
        cts = {}
        for v in (1, 2, 3, 4):
            d = self.ok(srv.request("POST", "transit/encrypt/acceptance",
                                    {"plaintext": b64("secret v%d" % v), "key_version": v}))
            self.assertTrue(d["ciphertext"].startswith("vault:v%d:" % v))
            cts[v] = d["ciphertext"]
        d = self.ok(srv.request("POST", "transit/keys/acceptance/config",
                                {"min_decryption_version": 3}))
        self.assertEqual(d["min_decryption_version"], 3)

        self.restart(srv)

        d = self.ok(srv.request("GET", "transit/keys/acceptance"))
        self.assertEqual(d["latest_version"], 4)
        self.assertEqual(d["min_decryption_version"], 3)
        self.assertEqual(d["min_available_version"], 0)
        self.assertEqual(sorted(d["keys"], key=int), ["3", "4"])
        for v in (1, 2):
            r = srv.request("POST", "transit/decrypt/acceptance", {"ciphertext": cts[v]})
            self.assertEqual((r.status, r.errors), (400, [MSG_TOO_OLD]), r.describe())
        for v in (3, 4):
            d = self.ok(srv.request("POST", "transit/decrypt/acceptance",
                                    {"ciphertext": cts[v]}))
            self.assertEqual(unb64(d["plaintext"]), ("secret v%d" % v).encode())
        d = self.ok(srv.request("POST", "transit/keys/acceptance/config",
                                {"min_decryption_version": 1}))
        self.assertEqual(sorted(d["keys"], key=int), ["1", "2", "3", "4"])
        for v in (1, 2, 3, 4):
            d = self.ok(srv.request("POST", "transit/decrypt/acceptance",
                                    {"ciphertext": cts[v]}))
            self.assertEqual(unb64(d["plaintext"]), ("secret v%d" % v).encode())

        self.restart(srv)
        d = self.ok(srv.request("GET", "transit/keys/acceptance"))
        self.assertEqual((d["latest_version"], d["min_decryption_version"]), (4, 1))
        d = self.ok(srv.request("POST", "transit/decrypt/acceptance", {"ciphertext": cts[1]}))
        self.assertEqual(unb64(d["plaintext"]), b"secret v1")
        self.assertEqual(srv.stop(), 0)

    def test_other_state_persists(self):
        srv = self.new_server().start()
        self.init(srv)
        req = srv.request
        # a namespace with its own transit mount and key; a second mount
        r = req("POST", "sys/namespaces/my-org", {})
        self.assertIn(r.status, (200, 204), r.describe())
        self.ok(req("POST", "sys/mounts/transit", {"type": "transit"}, namespace="my-org"), 204)
        self.ok(req("POST", "transit/keys/my-org-my-project-app-secrets", {},
                    namespace="my-org"))
        ns_ct = self.ok(req("POST", "transit/encrypt/my-org-my-project-app-secrets",
                            {"plaintext": b64("org data")}, namespace="my-org"))["ciphertext"]
        self.ok(req("POST", "sys/mounts/second", {"type": "transit"}), 204)
        self.ok(req("POST", "second/keys/flags", {
            "type": "xchacha20-poly1305", "derived": True, "convergent_encryption": True,
            "exportable": True, "auto_rotate_period": "90d"}))
        conv = self.ok(req("POST", "second/encrypt/flags",
                           {"plaintext": b64("same"), "context": b64("c")}))["ciphertext"]
        # trimmed key
        self.ok(req("POST", "transit/keys/trimmed", {}))
        for _ in range(3):
            self.ok(req("POST", "transit/keys/trimmed/rotate"))
        self.ok(req("POST", "transit/keys/trimmed/config",
                    {"min_decryption_version": 3, "min_encryption_version": 3,
                     "deletion_allowed": True}))
        self.ok(req("POST", "transit/keys/trimmed/trim", {"min_available_version": 3}))
        # a deleted key
        self.ok(req("POST", "transit/keys/deleted", {}))
        self.ok(req("POST", "transit/keys/deleted/config", {"deletion_allowed": True}))
        self.ok(req("DELETE", "transit/keys/deleted"), 204)
        # upsert config
        self.ok(req("POST", "second/config/keys", {"disable_upsert": True}))
        before = {
            "flags": self.ok(req("GET", "second/keys/flags")),
            "trimmed": self.ok(req("GET", "transit/keys/trimmed")),
        }

        self.restart(srv)

        self.assertEqual(self.ok(req("GET", "second/keys/flags")), before["flags"])
        self.assertEqual(self.ok(req("GET", "transit/keys/trimmed")), before["trimmed"])
        self.assertEqual(before["trimmed"]["min_available_version"], 3)
        r = req("GET", "transit/keys/deleted")
        self.assertEqual(r.status, 404, r.describe())
        self.assertEqual(self.ok(req("POST", "second/encrypt/flags",
                                     {"plaintext": b64("same"), "context": b64("c")}))
                         ["ciphertext"], conv)
        d = self.ok(req("POST", "transit/decrypt/my-org-my-project-app-secrets",
                        {"ciphertext": ns_ct}, namespace="my-org"))
        self.assertEqual(unb64(d["plaintext"]), b"org data")
        self.assertIn("my-org/", self.ok(req("LIST", "sys/namespaces"))["keys"])
        mounts = self.ok(req("GET", "sys/mounts"))
        self.assertIn("second/", mounts)
        self.assertIn("transit/", mounts)
        r = req("POST", "second/encrypt/nokey", {"plaintext": b64("x")})
        self.assertEqual((r.status, r.errors), (400, ["encryption key not found"]),
                         r.describe())
        self.assertEqual(srv.stop(), 0)


class SealKeyTest(ConfigServerCase):

    def prepared_store(self, key):
        srv = self.new_server(seal_key=key).start()
        self.init(srv)
        self.ok(srv.request("POST", "transit/keys/sealed", {}))
        ct = self.ok(srv.request("POST", "transit/encrypt/sealed",
                                 {"plaintext": b64("under seal")}))["ciphertext"]
        self.assertEqual(srv.stop(), 0)
        return srv, ct

    def check_store(self, srv, ct):
        d = self.ok(srv.request("POST", "transit/decrypt/sealed", {"ciphertext": ct}))
        self.assertEqual(unb64(d["plaintext"]), b"under seal")

    def test_wrong_seal_key_refused(self):
        key = os.urandom(32)
        srv, ct = self.prepared_store(key)
        seal_path = srv.effective_config["seal_key_file"]
        write_seal_key(seal_path, os.urandom(32))
        log = self.expect_refusal(srv)
        self.assertIn("seal", log.lower(), "the refusal should say the seal key is wrong")
        # the failed attempt did not damage the store
        write_seal_key(seal_path, key)
        srv.start()
        self.check_store(srv, ct)
        self.assertEqual(srv.stop(), 0)

    def test_seal_key_file_mode_refused(self):
        key = os.urandom(32)
        srv, ct = self.prepared_store(key)
        seal_path = srv.effective_config["seal_key_file"]
        for mode in (0o644, 0o640, 0o604):
            with self.subTest(mode=oct(mode)):
                os.chmod(seal_path, mode)
                log = self.expect_refusal(srv)
                low = log.lower()
                self.assertTrue(seal_path in log or "mode" in low or "permission" in low
                                or "0600" in low or "readable" in low,
                                "the refusal should name the file or its mode:\n" + log)
        os.chmod(seal_path, 0o600)
        srv.start()
        self.check_store(srv, ct)
        self.assertEqual(srv.stop(), 0)

    def test_fresh_store_with_world_readable_key_refused(self):
        srv = self.new_server()
        path = os.path.join(srv.workdir, "seal.key")
        write_seal_key(path, os.urandom(32), mode=0o644)
        self.expect_refusal(srv)

    def test_hex_seal_key_equivalent(self):
        key = os.urandom(32)
        srv, ct = self.prepared_store(key)
        seal_path = srv.effective_config["seal_key_file"]
        write_seal_key(seal_path, key.hex())
        srv.start()
        self.check_store(srv, ct)
        self.assertEqual(srv.stop(), 0)
        write_seal_key(seal_path, key.hex().upper())
        srv.start()
        self.check_store(srv, ct)
        self.assertEqual(srv.stop(), 0)

    def test_bad_seal_key_length_refused(self):
        for bad in (os.urandom(16), os.urandom(33), b"zz" * 32, b"ab" * 31):
            with self.subTest(size=len(bad)):
                srv = self.new_server(seal_key=bad)
                self.expect_refusal(srv)


class CrashTest(ConfigServerCase):

    def test_sigterm_under_load_is_clean(self):
        srv = self.new_server().start()
        self.init(srv)
        acked = []
        stop = threading.Event()

        def writer(tid):
            i = 0
            while not stop.is_set():
                name = "term-%d-%d" % (tid, i)
                try:
                    r = srv.request("POST", "transit/keys/" + name, {}, timeout=5)
                except (OSError, http.client.HTTPException):
                    return
                if r.status == 200:
                    acked.append(name)
                i += 1

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(3)]
        for t in threads:
            t.start()
        wait_for(lambda: len(acked) >= 20, 30, lambda: "20 acknowledged writes (have %d)\n%s"
                 % (len(acked), srv.log_tail()))
        rc = srv.stop()      # SIGTERM while requests are in flight
        stop.set()
        for t in threads:
            t.join(10)
        self.assertEqual(rc, 0, "SIGTERM under load must exit 0\n" + srv.log_tail())
        self.assertGreater(len(acked), 5)
        srv.start()
        r = srv.request("LIST", "transit/keys")
        self.assertEqual(r.status, 200, r.describe())
        missing = sorted(set(acked) - set(r.data["keys"]))
        self.assertEqual(missing, [])
        self.assertEqual(srv.stop(), 0)

    def test_sigkill_keeps_acknowledged_writes(self):
        srv = self.new_server().start()
        self.init(srv)
        acked = {}      # key name -> highest acknowledged latest_version
        cts = {}        # key name -> (ciphertext, plaintext) acknowledged
        stop = threading.Event()
        errors = []

        def writer():
            i = 0
            while not stop.is_set():
                name = "crash-%d" % i
                try:
                    r = srv.request("POST", "transit/keys/" + name, {}, timeout=5)
                    if r.status != 200:
                        errors.append(r.describe())
                        return
                    acked[name] = 1
                    for _ in range(i % 3):
                        r = srv.request("POST", "transit/keys/%s/rotate" % name, timeout=5)
                        if r.status != 200:
                            errors.append(r.describe())
                            return
                        acked[name] = r.data["latest_version"]
                    pt = ("payload %d" % i).encode()
                    r = srv.request("POST", "transit/encrypt/" + name,
                                    {"plaintext": b64(pt)}, timeout=5)
                    if r.status == 200:
                        cts[name] = (r.data["ciphertext"], pt)
                except (OSError, http.client.HTTPException):
                    return  # the server died under us: expected
                i += 1

        t = threading.Thread(target=writer)
        t.start()
        wait_for(lambda: len(cts) >= 20 or errors or not t.is_alive(), 30,
                 lambda: "20 acknowledged keys with ciphertexts (have %d)\n%s"
                 % (len(cts), srv.log_tail()))
        srv.kill()           # SIGKILL mid-stream
        stop.set()
        t.join(10)
        self.assertFalse(t.is_alive())
        self.assertEqual(errors, [])
        self.assertGreater(len(acked), 5, "too few writes before the kill to mean anything")

        srv.start()
        missing = []
        for name, version in sorted(acked.items()):
            r = srv.request("GET", "transit/keys/" + name)
            if r.status != 200:
                missing.append("%s: %s" % (name, r.describe()))
                continue
            latest = r.data["latest_version"]
            # the in-flight rotation may or may not have landed, nothing older may be lost
            if not version <= latest <= version + 1:
                missing.append("%s: acked v%d, found v%d" % (name, version, latest))
        self.assertEqual(missing, [])
        for name, (ct, pt) in cts.items():
            r = srv.request("POST", "transit/decrypt/" + name, {"ciphertext": ct})
            self.assertEqual(r.status, 200, r.describe())
            self.assertEqual(unb64(r.data["plaintext"]), pt)
        self.assertEqual(srv.stop(), 0)


class StoreFileTest(ConfigServerCase):
    """A damaged data.mdb is refused with a message, never a crash."""

    def test_truncated_store_refused_with_a_message(self):
        # a torn copy or an interrupted restore: LMDB maps the short file all the same, and
        # the first read of a page past its end killed kmsd with SIGBUS and no word
        srv = self.new_server().start()
        self.init(srv)
        for i in range(40):
            self.ok(srv.request("POST", "transit/keys/t%d" % i, {}))
        self.assertEqual(srv.stop(), 0)
        data = os.path.join(srv.effective_config["storage_path"], "data.mdb")
        with open(data, "rb") as f:
            whole = f.read()
        self.assertGreater(len(whole), 4 * 4096)
        with open(data, "wb") as f:
            f.write(whole[:len(whole) // 2 // 4096 * 4096])
        log = self.expect_refusal(srv)
        self.assertEqual(srv.proc.returncode, 1, "killed by a signal?\n" + log)
        self.assertIn("data.mdb is truncated", log)
        self.assertIn("restore it from a backup", log)
        # the whole file opens again, with everything in it
        with open(data, "wb") as f:
            f.write(whole)
        srv.start()
        self.assertEqual(srv.request("GET", "transit/keys/t39").status, 200)
        self.assertEqual(srv.stop(), 0)

    def test_empty_store_file_refused_with_a_message(self):
        # `mdb_copy -c /var/lib/kmsd > backup.mdb` whose copy fails leaves a 0-byte backup; put
        # back as data.mdb, LMDB took it for a new store: kmsd started uninitialised on it (501,
        # sys/init handing out a new root token over no keys) and said nothing
        srv = self.new_server().start()
        self.init(srv)
        self.ok(srv.request("POST", "transit/keys/kept", {}))
        self.assertEqual(srv.stop(), 0)
        data = os.path.join(srv.effective_config["storage_path"], "data.mdb")
        with open(data, "rb") as f:
            whole = f.read()
        open(data, "wb").close()
        log = self.expect_refusal(srv)
        self.assertEqual(srv.proc.returncode, 1, "killed by a signal?\n" + log)
        self.assertIn("data.mdb is empty (0 bytes)", log)
        self.assertIn("Restore a verified backup", log)
        self.assertEqual(os.path.getsize(data), 0, "the refused file was written to")
        with open(data, "wb") as f:
            f.write(whole)
        srv.start()
        self.assertEqual(srv.request("GET", "transit/keys/kept").status, 200)
        self.assertEqual(srv.stop(), 0)

    # LMDB 0.9's on-disk layout (data format 1), to damage one live page on purpose: the page
    # header (16 bytes: number, pad, flags, lower, upper), the meta page's MDB_db records (48
    # bytes each, the root page number last) and a leaf node (data size in two halves, flags,
    # key size, the key, the data).
    PAGE = 4096

    @classmethod
    def _meta(cls, whole):
        """The current meta page's (free-page root, main root)."""
        best = None
        for m in (0, 1):
            base = m * cls.PAGE
            txnid = int.from_bytes(whole[base + 144:base + 152], "little")
            if best is None or txnid > best[0]:
                free_root = int.from_bytes(whole[base + 40 + 40:base + 40 + 48], "little")
                main_root = int.from_bytes(whole[base + 88 + 40:base + 88 + 48], "little")
                best = (txnid, free_root, main_root)
        return best[1], best[2]

    @classmethod
    def _leaf_nodes(cls, whole, pgno):
        base = pgno * cls.PAGE
        flags = int.from_bytes(whole[base + 10:base + 12], "little")
        lower = int.from_bytes(whole[base + 12:base + 14], "little")
        if flags & 0x02 == 0:
            raise AssertionError("page %d is not a leaf page (flags %#x): the store grew past "
                                 "what this test knows how to damage" % (pgno, flags))
        for i in range((lower - 16) // 2):
            at = int.from_bytes(whole[base + 16 + 2 * i:base + 18 + 2 * i], "little")
            node = base + at
            ksize = int.from_bytes(whole[node + 6:node + 8], "little")
            yield node, bytes(whole[node + 8:node + 8 + ksize])

    def _damaged_store(self, nkeys=30):
        """A store with keys made, rotated and deleted (so that LMDB has free pages), stopped;
        returns (server, data.mdb path, its bytes)."""
        srv = self.new_server().start()
        self.init(srv)
        for i in range(nkeys):
            self.ok(srv.request("POST", "transit/keys/d%d" % i, {}))
        for i in range(0, nkeys, 3):
            self.ok(srv.request("POST", "transit/keys/d%d/rotate" % i, {}))
        self.assertEqual(srv.stop(), 0)
        data = os.path.join(srv.effective_config["storage_path"], "data.mdb")
        with open(data, "rb") as f:
            whole = bytearray(f.read())
        return srv, data, whole

    def _expect_damaged(self, srv, data, damaged, pristine, words):
        with open(data, "wb") as f:
            f.write(damaged)
        log = self.expect_refusal(srv)
        self.assertEqual(srv.proc.returncode, 1, "killed by a signal?\n" + log)
        self.assertIn("data.mdb is damaged: " + words, log)
        self.assertIn("restore it from a backup", log)
        # the file as it was opens again, keys and all, and takes writes
        with open(data, "wb") as f:
            f.write(pristine)
        srv.start()
        self.assertEqual(srv.request("GET", "transit/keys/d0").status, 200)
        self.ok(srv.request("POST", "transit/keys/d0/rotate", {}))
        self.assertEqual(srv.stop(), 0)

    def test_damaged_free_page_list_refused_with_a_message(self):
        # LMDB merges a free-page record into a fixed buffer on the next write that needs a
        # page, trusting the record's count: one that lies killed kmsd with SIGSEGV (or
        # corrupted its heap) on the first key created after start
        srv, data, whole = self._damaged_store()
        free_root, _ = self._meta(whole)
        self.assertNotEqual(free_root, 2**64 - 1, "the store has no free pages to damage")
        node, key = next(self._leaf_nodes(whole, free_root))
        self.assertEqual(len(key), 8)
        damaged = bytearray(whole)
        at = node + 8 + 8  # the record's first word: its count of pages
        damaged[at:at + 8] = (2**47 - 1).to_bytes(8, "little")
        self._expect_damaged(srv, data, damaged, whole, "a free-page record counts")

    def test_damaged_leaf_page_refused_with_a_message(self):
        # a leaf page of the keys database whose upper bound no longer covers its nodes reads
        # fine, and the write that inserts into it moved a negative length (ASan:
        # negative-size-param in mdb_cursor_put; without ASan a heap corruption, glibc abort)
        srv, data, whole = self._damaged_store(nkeys=6)
        _, main_root = self._meta(whole)
        keys_root = None
        for node, key in self._leaf_nodes(whole, main_root):
            if key == b"keys":  # a named database's record: its MDB_db, root page last
                ksize = len(key)
                keys_root = int.from_bytes(whole[node + 8 + ksize + 40:node + 8 + ksize + 48],
                                           "little")
        self.assertIsNotNone(keys_root, "no keys database in the main database")
        list(self._leaf_nodes(whole, keys_root))  # the keys database is one leaf page
        damaged = bytearray(whole)
        base = keys_root * self.PAGE
        upper = int.from_bytes(whole[base + 14:base + 16], "little")
        damaged[base + 14:base + 16] = (upper + 28).to_bytes(2, "little")
        self._expect_damaged(srv, data, damaged, whole, "a leaf page of the keys database")

    def test_randomly_damaged_pages_never_crash(self):
        # one page's bytes changed at random, 40 seeded stores: each is refused with a message
        # or served (its sealed records refused one by one); none kills kmsd. Before the
        # start-up check about one store in a hundred died by SIGSEGV or SIGBUS, or had its
        # heap corrupted (glibc's SIGABRT).
        srv, data, whole = self._damaged_store()
        rng = random.Random(1)  # before the check, trial 30's store killed kmsd with SIGBUS
        npages = len(whole) // self.PAGE
        refused = served = 0
        for trial in range(40):
            damaged = bytearray(whole)
            pg = rng.randrange(0 if rng.random() < 0.2 else 2, npages)
            for _ in range(rng.choice([1, 2, 4, 16])):
                damaged[pg * self.PAGE + rng.randrange(self.PAGE)] = rng.randrange(256)
            with open(data, "wb") as f:
                f.write(damaged)
            srv.spawn()
            deadline = time.monotonic() + 30
            up = False
            while time.monotonic() < deadline and srv.proc.poll() is None:
                addr = listening_address(srv.log_text())
                if addr is not None:
                    srv.port = int(addr.rsplit(":", 1)[1])
                    up = True
                    break
                time.sleep(0.02)
            if up:
                served += 1
                for method, path in (("GET", "transit/keys/d1"),
                                     ("POST", "transit/keys/n%d" % trial),
                                     ("POST", "transit/keys/d2/rotate"), ("LIST", "transit/keys")):
                    try:
                        srv.request(method, path, {} if method == "POST" else None, timeout=30)
                    except Exception:
                        pass  # a closed connection is what a crash looks like: judged below
                if srv.proc.poll() is None:
                    srv.proc.terminate()
            rc = srv.wait_exit(30)
            if rc is None:
                srv.kill()
                self.fail("trial %d: kmsd neither served nor exited\n%s" % (trial, srv.log_tail()))
            srv._close_log()
            if rc == -signal.SIGABRT and re.search(r"mdb\.c:\d+: Assertion", srv.log_text()):
                # LMDB's own consistency check stopped the write that met the damaged branch
                # page, before anything was written, and said where: a stop, not a crash
                continue
            self.assertIn(rc, (0, 1), "trial %d (page %d): kmsd died by signal %d\n%s"
                          % (trial, pg, -rc, srv.log_tail()))
            if rc == 1 and not up:
                refused += 1
        self.assertGreater(refused, 0)
        self.assertGreater(served, 0)

    def test_reader_of_a_dead_backup_does_not_pin_the_store(self):
        # an online backup (`mdb_copy`, docs/operations.md) killed inside its read transaction
        # (its `kubectl exec` cut off) left its reader slot: LMDB then reused no page, and
        # every write grew data.mdb until the map was full and writes failed with 500
        for tool in ("mdb_copy", "mdb_stat"):
            self.assertIsNotNone(shutil.which(tool), tool + " (Debian's lmdb-utils) is needed")
        srv = self.new_server(config={"rate_limit": 0}).start()
        self.init(srv)
        for i in range(100):  # more than a pipe holds, so the copy blocks mid-transaction
            self.ok(srv.request("POST", "transit/keys/b%d" % i, {}))
        store = srv.effective_config["storage_path"]
        r, w = os.pipe()
        copy = subprocess.Popen(["mdb_copy", store], stdout=w, stderr=subprocess.DEVNULL)
        os.close(w)

        def readers():
            out = subprocess.run(["mdb_stat", "-r", store], capture_output=True, text=True,
                                 timeout=30).stdout
            return [line.split()[0] for line in out.splitlines()[2:] if line.strip()]

        wait_for(lambda: str(copy.pid) in readers(), 30, "mdb_copy's read transaction")
        copy.kill()
        copy.wait()
        os.close(r)
        deadline = time.monotonic() + 30
        i = 0
        while str(copy.pid) in readers():
            self.assertLess(time.monotonic(), deadline,
                            "the dead mdb_copy still holds a reader slot after %d writes" % i)
            self.ok(srv.request("POST", "transit/keys/b%d/rotate" % (i % 100)))
            i += 1
        self.assertEqual(srv.stop(), 0)

if __name__ == "__main__":
    unittest.main()
