#!/usr/bin/python3
"""Crash safety: drive mixed load against a real kmsd (config mode, fsync on), SIGKILL it at a
random moment, restart it on the same store, and check that nothing acknowledged was lost.

Each round:
  * 4 client threads run a mix of key creates, rotations, config changes (min_decryption),
    encrypts (keeping each acknowledged ciphertext with its plaintext) and KMSKey writes;
  * after a random 50-600 ms the server gets SIGKILL;
  * the server restarts on the same store and seal key, and every acknowledged write is checked:
    created keys exist, acknowledged rotations are reflected (latest_version >= acknowledged),
    acknowledged min_decryption_version floors are in place, every acknowledged ciphertext still
    decrypts to its plaintext (unless an acknowledged floor now refuses it), KMSKeys exist;
  * the audit log verifies with `kmsd audit verify`: intact, or refused with the torn last line
    named (a record cut by the kill) - never silently accepted.

Usage: crash_test.py [ROUNDS]   (default 100; `make crash-test`). Prints a summary line.
With KMS_TEST_PG_URL set (tests/pg/pgtmp.py run -- crash_test.py N) the store is that
PostgreSQL database instead of LMDB.
"""

import base64
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from kmsd_harness import KMSD_BIN, KmsdServer  # noqa: E402


class Ledger:
    """What the server acknowledged (2xx) before it died."""

    def __init__(self):
        self.lock = threading.Lock()
        self.keys = set()
        self.min_latest = {}  # key -> acknowledged latest_version
        self.floor = {}  # key -> acknowledged min_decryption_version
        self.ciphertexts = []  # (key, ciphertext, plaintext b64)
        self.kmskeys = set()


def worker(srv, token, ledger, stop, tid, rnd):
    n = 0
    while not stop.is_set():
        n += 1
        op = rnd.random()
        try:
            if op < 0.15 or not ledger.keys:
                name = "k-%d-%d-%d" % (tid, n, rnd.randrange(1 << 30))
                r = srv.request("POST", "transit/keys/" + name, {}, token=token, timeout=5)
                if r.status == 200:
                    with ledger.lock:
                        ledger.keys.add(name)
                        ledger.min_latest[name] = max(ledger.min_latest.get(name, 0), 1)
                continue
            with ledger.lock:
                name = rnd.choice(sorted(ledger.keys))
            if op < 0.30:
                r = srv.request("POST", "transit/keys/%s/rotate" % name, {}, token=token, timeout=5)
                if r.status == 200:
                    v = r.json["data"]["latest_version"]
                    with ledger.lock:
                        ledger.min_latest[name] = max(ledger.min_latest.get(name, 0), v)
            elif op < 0.38:
                r = srv.request("GET", "transit/keys/" + name, token=token, timeout=5)
                if r.status == 200:
                    latest = r.json["data"]["latest_version"]
                    floor = rnd.randint(1, latest)
                    r = srv.request("POST", "transit/keys/%s/config" % name,
                                    {"min_decryption_version": floor}, token=token, timeout=5)
                    if r.status == 200:
                        with ledger.lock:
                            ledger.floor[name] = floor
            elif op < 0.90:
                pt = base64.b64encode(os.urandom(rnd.randint(0, 64))).decode()
                r = srv.request("POST", "transit/encrypt/" + name, {"plaintext": pt},
                                token=token, timeout=5)
                if r.status == 200:
                    with ledger.lock:
                        ledger.ciphertexts.append((name, r.json["data"]["ciphertext"], pt))
            else:
                kk = "kk-%d-%d" % (tid, n)
                r = srv.request("POST", "kms/keys/proj/" + kk, {"spec": {}}, token=token,
                                namespace="crashorg", timeout=5)
                if r.status == 200:
                    with ledger.lock:
                        ledger.kmskeys.add(kk)
        except (OSError, AttributeError, ValueError, KeyError, TypeError):
            return  # the server is gone (or died mid-answer)


def check(srv, token, ledger):
    problems = []
    for name in sorted(ledger.keys):
        r = srv.request("GET", "transit/keys/" + name, token=token)
        if r.status != 200:
            problems.append("acknowledged key %s missing (%d)" % (name, r.status))
            continue
        d = r.json["data"]
        if d["latest_version"] < ledger.min_latest.get(name, 1):
            problems.append("key %s: acknowledged version %d lost (latest %d)" % (
                name, ledger.min_latest[name], d["latest_version"]))
    by_key = {}
    for name, ct, pt in ledger.ciphertexts:
        by_key.setdefault(name, []).append((ct, pt))
    for name, items in sorted(by_key.items()):
        for i in range(0, len(items), 500):
            chunk = items[i:i + 500]
            r = srv.request("POST", "transit/decrypt/" + name,
                            {"batch_input": [{"ciphertext": ct} for ct, _ in chunk]}, token=token)
            results = (r.json or {}).get("data", {}).get("batch_results")
            if results is None:
                problems.append("batch decrypt of %s failed: %s" % (name, r.body[:200]))
                continue
            floor = None
            for (ct, pt), res in zip(chunk, results):
                if not res.get("error"):
                    if res["plaintext"] != pt:
                        problems.append("ciphertext of %s decrypted to the wrong plaintext" % name)
                    continue
                # a floor raised later (acknowledged or in flight) may refuse it legitimately
                if floor is None:
                    floor = srv.request("GET", "transit/keys/" + name,
                                        token=token).json["data"]["min_decryption_version"]
                v = int(re.match(r"vault:v(\d+):", ct).group(1))
                if v >= floor:
                    problems.append("acknowledged ciphertext of %s (v%d) no longer decrypts: %s"
                                    % (name, v, res["error"]))
    for kk in sorted(ledger.kmskeys):
        r = srv.request("GET", "kms/keys/proj/" + kk, token=token, namespace="crashorg")
        if r.status != 200:
            problems.append("acknowledged KMSKey %s missing (%d)" % (kk, r.status))
    return problems


def verify_audit(path):
    """(ok, torn) - ok when intact; torn when only the last line is reported bad."""
    p = subprocess.run([KMSD_BIN, "audit", "verify", path], capture_output=True, text=True)
    if p.returncode == 0:
        return True, False
    with open(path, "rb") as f:
        nlines = f.read().count(b"\n") + 1
    m = re.search(r":(\d+)", p.stdout + p.stderr)
    bad = int(m.group(1)) if m else -1
    return False, bad >= nlines - 1


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    work = tempfile.mkdtemp(prefix="kmsd-crash-")
    audit = os.path.join(work, "audit.log")
    config = {"rate_limit": 0, "audit_file": audit, "audit_fsync": "batch"}
    pg_url = os.environ.get("KMS_TEST_PG_URL")
    if pg_url:
        # the same rounds on the PostgreSQL backend (`pgtmp.py run -- crash_test.py N`)
        config.update({"storage": "postgresql", "postgresql_url": pg_url})
    srv = KmsdServer(mode="config", workdir=work, config=config)
    rnd = random.Random(int(os.environ.get("CRASH_SEED", "1")))
    ledger = Ledger()
    stats = {"rounds": 0, "acked_writes": 0, "torn_audit_lines": 0}
    failures = []
    try:
        srv.start()  # every restart below listens on a fresh port the harness reads back
        token = srv.request("PUT", "sys/init", {}, token=None).json["root_token"]
        srv.request("POST", "sys/mounts/transit", {"type": "transit"}, token=token)
        srv.request("POST", "sys/namespaces/crashorg", {}, token=token)
        for i in range(rounds):
            stop = threading.Event()
            threads = [threading.Thread(target=worker, args=(
                srv, token, ledger, stop, t, random.Random(rnd.random()))) for t in range(4)]
            for t in threads:
                t.start()
            time.sleep(rnd.uniform(0.05, 0.6))
            srv.proc.send_signal(signal.SIGKILL)
            srv.proc.wait()
            stop.set()
            for t in threads:
                t.join()
            srv._close_log()
            ok, torn = verify_audit(audit)
            if not ok and not torn:
                failures.append("round %d: audit log broken before its last line" % i)
            if torn:
                stats["torn_audit_lines"] += 1
            srv.start()
            problems = check(srv, token, ledger)
            for p in problems:
                failures.append("round %d: %s" % (i, p))
            stats["rounds"] += 1
            if failures:
                break
        stats["acked_writes"] = (len(ledger.keys) + sum(ledger.min_latest.values()) +
                                 len(ledger.floor) + len(ledger.kmskeys))
        stats["ciphertexts"] = len(ledger.ciphertexts)
        srv.stop()
    finally:
        srv.kill()
        if not failures:
            shutil.rmtree(work, ignore_errors=True)
    print("crash-test (%s): %d rounds, %d keys, %d acknowledged writes, %d ciphertexts checked, "
          "%d KMSKeys, %d kills left a torn audit line" % (
              "postgresql" if pg_url else "lmdb", stats["rounds"], len(ledger.keys), stats["acked_writes"],
              stats.get("ciphertexts", 0), len(ledger.kmskeys), stats["torn_audit_lines"]))
    for f in failures:
        print("FAIL", f)
    print("%d passed, %d failed" % (stats["rounds"] if not failures else stats["rounds"] - 1,
                                     1 if failures else 0))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
