"""Transit crypto endpoints: reference transit-api.md §2.3-2.6, §3.8-3.11, §4 and §9
cases 1-8 and 18 (encrypt, decrypt, rewrap, datakey, batches, upsert, key versions,
rotation, the 64 KiB direct-payload limit of decisions.md, concurrency)."""

import json
import os
import threading
import time
import unittest

import transit_local as local
from kmsd_harness import (AUTH_FAILED, ENVELOPE_KEYS, MSG_MISSING_CONTEXT, MSG_TOO_OLD,
                          NONCE_SIZE, SYMMETRIC_TYPES, KmsdTestCase, b64, multierror,
                          ct_payload, ct_version, raw_exchange, unb64, wait_for)

CTX = b64("ctx")
CTX2 = b64("other context")
AD = b64("associated data")
MODES = {
    "plain": {},
    "derived": {"derived": True},
    "convergent": {"derived": True, "convergent_encryption": True},
}
OVERRIDE_WARNING = ("invalid HTTP response code override from "
                    "partial_failure_response_code, reverting to 400")


class LocalVectorsTest(unittest.TestCase):
    """The client-side model in transit_local.py reproduces reference §9 vectors A-E
    (a check of the checker; no server needed)."""

    K = bytes(range(32))

    def test_vectors(self):
        K = self.K
        self.assertEqual(local.make_ciphertext("aes256-gcm96", K, b"hello", bytes(range(12))),
                         "vault:v1:AAECAwQFBgcICQoLL2e6d6onl/81O4oEbSgjbc2dBXu7")
        self.assertEqual(local.make_ciphertext("aes256-gcm96", K, b"hello", bytes(range(12)),
                                               ad=b"ad"),
                         "vault:v1:AAECAwQFBgcICQoLL2e6d6o4IV1oBkU6J6MzbhJ0gX65")
        self.assertEqual(local.derived_key("aes256-gcm96", K, b"ctx").hex(),
                         "08f959277c527020901da82beafed559872e8b0b770de26673f4b41ce55e3885")
        self.assertEqual(local.decrypt_ciphertext(
            "aes256-gcm96", K, "vault:v1:AAECAwQFBgcICQoLG9pIFw/+G6rfAYw0aw664L3d18GN",
            context=b"ctx"), b"hello")
        self.assertEqual(local.convergent_ciphertext("aes256-gcm96", K, b"ctx", b"hello"),
                         "vault:v1:lWKSXdmbVSRfvnjOQq3bSZxF/6PpMLWQhccjS5lezPYT")
        self.assertEqual(local.convergent_ciphertext("aes256-gcm96", K, b"ctx", b""),
                         "vault:v1:0oKqhbB0VxOcseo5MmEmJkMH812iDDSvbJ7uWg==")
        self.assertEqual(local.convergent_ciphertext("aes128-gcm96", bytes(range(16)), b"ctx",
                                                     b"hello"),
                         "vault:v1:/luZusOC4aSmQ2HaRH71vSmXQwMAJO+4nyhwxfJfE2Ni")
        self.assertEqual(local.convergent_ciphertext("chacha20-poly1305", K, b"ctx", b"hello"),
                         "vault:v1:lWKSXdmbVSRfvnjOH/j4uQNFASLjRsH+q0tcAhQHO3Ez")


class RoundTripTest(KmsdTestCase):
    """§9 cases 1 and 2 (with the 64 KiB product limit instead of 1 MiB)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.keys = {}
        for t in SYMMETRIC_TYPES:
            for mode, flags in MODES.items():
                name = "rt-%s-%s" % (t, mode)
                body = dict(flags, type=t)
                r = cls.server.request("POST", "transit/keys/" + name, body)
                assert r.status == 200, r.describe()
                cls.keys[(t, mode)] = name

    def test_round_trips(self):
        plaintexts = [b"", b"hello", os.urandom(65536)]
        for (t, mode), name in self.keys.items():
            for ad in (None, AD):
                for pt in plaintexts:
                    with self.subTest(type=t, mode=mode, ad=bool(ad), size=len(pt)):
                        params = {}
                        if mode != "plain":
                            params["context"] = CTX
                        if ad:
                            params["associated_data"] = ad
                        r = self.req("POST", "transit/encrypt/" + name,
                                     dict(params, plaintext=b64(pt)))
                        self.assertStatus(r, 200)
                        self.assertEqual(sorted(r.data), ["ciphertext", "key_version"])
                        self.assertEqual(r.data["key_version"], 1)
                        ct = r.data["ciphertext"]
                        self.assertTrue(ct.startswith("vault:v1:"), ct)
                        self.assertEqual(len(ct_payload(ct)), len(pt) + NONCE_SIZE[t] + 16)
                        r = self.req("POST", "transit/decrypt/" + name,
                                     dict(params, ciphertext=ct))
                        self.assertStatus(r, 200)
                        self.assertEqual(list(r.data), ["plaintext"])
                        self.assertEqual(unb64(r.data["plaintext"]), pt)
                        if pt == b"":
                            self.assertEqual(r.data["plaintext"], "")

    def test_payload_overhead(self):
        for t in SYMMETRIC_TYPES:
            with self.subTest(type=t):
                ct = self.encrypt(self.keys[(t, "plain")], b"x" * 100)
                self.assertEqual(len(ct_payload(ct)), 100 + (40 if t.startswith("x") else 28))

    def test_associated_data_must_match(self):
        for (t, mode), name in self.keys.items():
            with self.subTest(type=t, mode=mode):
                params = {"context": CTX} if mode != "plain" else {}
                ct = self.encrypt(name, b"with ad", associated_data=AD, **params)
                r = self.decrypt_resp(name, ct, **params)
                self.assertError(r, 400, AUTH_FAILED[t])
                r = self.decrypt_resp(name, ct, associated_data=b64("other"), **params)
                self.assertError(r, 400, AUTH_FAILED[t])
                ct2 = self.encrypt(name, b"no ad", **params)
                r = self.decrypt_resp(name, ct2, associated_data=AD, **params)
                self.assertError(r, 400, AUTH_FAILED[t])

    def test_random_nonces_differ(self):
        for t in SYMMETRIC_TYPES:
            for mode in ("plain", "derived"):
                with self.subTest(type=t, mode=mode):
                    name = self.keys[(t, mode)]
                    params = {"context": CTX} if mode != "plain" else {}
                    cts = [self.encrypt(name, b"same", **params) for _ in range(4)]
                    self.assertEqual(len(set(cts)), 4)
                    nonces = {ct_payload(c)[:NONCE_SIZE[t]] for c in cts}
                    self.assertEqual(len(nonces), 4)

    def test_convergent_identical(self):
        for t in SYMMETRIC_TYPES:
            with self.subTest(type=t):
                name = self.keys[(t, "convergent")]
                a = self.encrypt(name, b"same", context=CTX)
                b = self.encrypt(name, b"same", context=CTX)
                self.assertEqual(a, b)
                c = self.encrypt(name, b"same", context=CTX2)
                self.assertNotEqual(a, c)
                d = self.encrypt(name, b"different", context=CTX)
                self.assertNotEqual(a, d)
                e = self.encrypt(name, b"same", context=CTX, associated_data=AD)
                f = self.encrypt(name, b"same", context=CTX, associated_data=AD)
                self.assertEqual(e, f)
                self.assertNotEqual(a, e)
                # AD feeds only the AEAD, not the nonce (§2.5)
                n = NONCE_SIZE[t]
                self.assertEqual(ct_payload(a)[:n], ct_payload(e)[:n])
                # batch gives the same ciphertext as single
                r = self.req("POST", "transit/encrypt/" + name,
                             {"batch_input": [{"plaintext": b64("same"), "context": CTX}]})
                self.assertStatus(r, 200)
                self.assertEqual(r.data["batch_results"][0]["ciphertext"], a)

    def test_derived_wrong_context_fails(self):
        for t in SYMMETRIC_TYPES:
            for mode in ("derived", "convergent"):
                with self.subTest(type=t, mode=mode):
                    name = self.keys[(t, mode)]
                    ct = self.encrypt(name, b"ctx bound", context=CTX)
                    r = self.decrypt_resp(name, ct, context=CTX2)
                    self.assertError(r, 400, AUTH_FAILED[t])
                    self.assertEqual(self.decrypt(name, ct, context=CTX), b"ctx bound")

    def test_nonce_ignored_with_warning(self):
        # §8 #4: a client nonce is never used; it is an unrecognised parameter
        for mode in ("plain", "convergent"):
            with self.subTest(mode=mode):
                name = self.keys[("aes256-gcm96", mode)]
                params = {"context": CTX} if mode != "plain" else {}
                nonce = b64(b"\x00" * 12)
                r = self.req("POST", "transit/encrypt/" + name,
                             dict(params, plaintext=b64("n"), nonce=nonce))
                self.assertStatus(r, 200)
                self.assertWarnings(r, ["Endpoint ignored these unrecognized parameters: "
                                        "[nonce]"])
                self.assertNotEqual(ct_payload(r.data["ciphertext"])[:12], b"\x00" * 12)
                if mode == "convergent":
                    self.assertEqual(r.data["ciphertext"],
                                     self.encrypt(name, b"n", context=CTX))

    def test_context_ignored_on_non_derived(self):
        name = self.keys[("aes256-gcm96", "plain")]
        ct = self.encrypt(name, b"ignored", context=CTX)
        self.assertEqual(self.decrypt(name, ct), b"ignored")
        self.assertEqual(self.decrypt(name, ct, context=CTX2), b"ignored")


def item_key_orders(resp):
    """The key order of each batch_results item, as sent."""
    doc = json.loads(resp.body.decode(), object_pairs_hook=lambda pairs: pairs)
    data = dict(doc)["data"]
    return [[k for k, _ in item] for item in dict(data)["batch_results"]]


class BatchItemOrderTest(KmsdTestCase):
    """OpenBao's batch items are Go structs, written in declaration order (reference 1.4):
    an error comes before the reference, a signature before its key_version."""

    def test_encrypt_rewrap_decrypt_items(self):
        name, _ = self.create_key()
        r = self.req("POST", "transit/encrypt/" + name, {"batch_input": [
            {"plaintext": b64("a"), "reference": "x"}, {"plaintext": "!!", "reference": "y"}]})
        self.assertStatus(r, 400)
        self.assertEqual(item_key_orders(r), [["ciphertext", "key_version", "reference"],
                                              ["error", "reference"]])
        ct = r.data["batch_results"][0]["ciphertext"]
        r = self.req("POST", "transit/rewrap/" + name, {"batch_input": [
            {"ciphertext": ct}, {"ciphertext": "nope"}]})
        self.assertStatus(r, 200)  # a rewrap batch is always 200
        self.assertEqual(item_key_orders(r), [["ciphertext", "key_version", "reference"],
                                              ["error", "reference"]])
        r = self.req("POST", "transit/decrypt/" + name, {"batch_input": [
            {"ciphertext": ct}, {"ciphertext": "nope"}]})
        self.assertStatus(r, 400)
        self.assertEqual(item_key_orders(r), [["plaintext", "reference"],
                                              ["plaintext", "error", "reference"]])

    def test_sign_items(self):
        name, _ = self.create_key(type="ed25519")
        r = self.req("POST", "transit/sign/" + name, {"batch_input": [
            {"input": b64("a")}, {"input": "!!"}]})
        self.assertStatus(r, 200)  # a sign batch is always 200
        self.assertEqual(item_key_orders(r), [["signature", "key_version", "reference"],
                                              ["key_version", "error", "reference"]])


class InteropTest(KmsdTestCase):
    """Ciphertexts match the algorithms of §2.3-2.5, checked with exported key material."""

    def export(self, name):
        r = self.req("GET", "transit/export/encryption-key/%s/1" % name)
        self.assertStatus(r, 200)
        return unb64(r.data["keys"]["1"])

    def test_plain_keys(self):
        for t in SYMMETRIC_TYPES:
            with self.subTest(type=t):
                name, _ = self.create_key(type=t, exportable=True)
                key = self.export(name)
                for ad in (None, b"ad"):
                    kw = {"associated_data": b64(ad)} if ad else {}
                    ct = self.encrypt(name, b"interop", **kw)
                    self.assertEqual(local.decrypt_ciphertext(t, key, ct, ad=ad), b"interop")
                    mine = local.make_ciphertext(t, key, b"from client",
                                                 os.urandom(NONCE_SIZE[t]), ad=ad)
                    self.assertEqual(self.decrypt(name, mine, **kw), b"from client")

    def test_derived_keys(self):
        for t in SYMMETRIC_TYPES:
            with self.subTest(type=t):
                name, _ = self.create_key(type=t, exportable=True, derived=True)
                key = self.export(name)
                ct = self.encrypt(name, b"derived", context=CTX)
                self.assertEqual(local.decrypt_ciphertext(t, key, ct, context=b"ctx"),
                                 b"derived")
                mine = local.make_ciphertext(t, key, b"client derived",
                                             os.urandom(NONCE_SIZE[t]), context=b"ctx")
                self.assertEqual(self.decrypt(name, mine, context=CTX), b"client derived")

    def test_convergent_keys(self):
        for t in SYMMETRIC_TYPES:
            with self.subTest(type=t):
                name, _ = self.create_key(type=t, exportable=True, derived=True,
                                          convergent_encryption=True)
                key = self.export(name)
                for pt in (b"", b"hello", os.urandom(1000)):
                    for ad in (None, b"ad"):
                        kw = {"associated_data": b64(ad)} if ad else {}
                        ct = self.encrypt(name, pt, context=CTX, **kw)
                        self.assertEqual(ct, local.convergent_ciphertext(t, key, b"ctx", pt,
                                                                         ad=ad))


class CiphertextMutationTest(KmsdTestCase):
    """§2.3 decrypt check order, §9 case 5."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        for t in SYMMETRIC_TYPES:
            r = cls.server.request("POST", "transit/keys/mut-" + t, {"type": t})
            assert r.status == 200, r.describe()

    def test_mutations(self):
        for t in SYMMETRIC_TYPES:
            name = "mut-" + t
            ct = self.encrypt(name, b"hello")
            payload = ct_payload(ct)
            ns = NONCE_SIZE[t]
            flipped = bytearray(payload)
            flipped[-1] ^= 1
            flipped_ct = bytearray(payload)
            flipped_ct[ns] ^= 0x80
            cases = [
                ("hello", "invalid ciphertext: no prefix"),
                ("", "missing ciphertext to decrypt"),
                ("vault:", "invalid ciphertext: no prefix"),
                ("vault:v1", "invalid ciphertext: wrong number of fields"),
                ("vault:vX:" + b64(payload), "invalid ciphertext: version number could not be decoded"),
                ("vault:v:" + b64(payload), "invalid ciphertext: version number could not be decoded"),
                ("vault:v99:" + b64(payload), "invalid ciphertext: version is too new"),
                ("vault:v1:!!!!", "invalid ciphertext: could not decode base64"),
                ("vault:v1:" + b64(payload)[:-1], "invalid ciphertext: could not decode base64"),
                ("vault:v1:" + b64(b"\x00" * (ns - 1)), "invalid ciphertext length"),
                ("vault:v1:", "invalid ciphertext length"),
                ("vault:v1:" + b64(payload[:ns]), AUTH_FAILED[t]),
                ("vault:v1:" + b64(payload[:ns + 15]), AUTH_FAILED[t]),
                ("vault:v1:" + b64(bytes(flipped)), AUTH_FAILED[t]),
                ("vault:v1:" + b64(bytes(flipped_ct)), AUTH_FAILED[t]),
            ]
            for bad, msg in cases:
                with self.subTest(type=t, ciphertext=bad[:40]):
                    r = self.decrypt_resp(name, bad)
                    self.assertError(r, 400, msg)

    def test_version_forms_accepted(self):
        # v0 means v1; Go atoi accepts "+1" and "01" (§2.3)
        name = "mut-aes256-gcm96"
        ct = self.encrypt(name, b"versions")
        body = ct.split(":", 2)[2]
        for v in ("0", "1", "01", "+1"):
            with self.subTest(version=v):
                self.assertEqual(self.decrypt(name, "vault:v%s:%s" % (v, body)), b"versions")

    def test_version_edge_cases(self):
        name = "mut-aes256-gcm96"
        r = self.decrypt_resp(name, "vault:v99")
        self.assertError(r, 400, "invalid ciphertext: wrong number of fields")
        r = self.decrypt_resp(name, "vault:v-1:AAAA")
        self.assertIn(r.errors, ([MSG_TOO_OLD], ["invalid ciphertext: version number could not be decoded"]),
                      r.describe())
        self.assertStatus(r, 400)

    def test_missing_ciphertext(self):
        r = self.req("POST", "transit/decrypt/mut-aes256-gcm96", {})
        self.assertError(r, 400, "missing ciphertext to decrypt")

    def test_decrypt_unknown_key(self):
        ct = self.encrypt("mut-aes256-gcm96", b"x")
        r = self.req("POST", "transit/decrypt/" + self.uniq("nokey"), {"ciphertext": ct})
        self.assertError(r, 400, "encryption key not found")


class InputValidationTest(KmsdTestCase):
    """Single-request user errors of §3.8/§3.9 (base64, derived context, §9 case 6)."""

    def test_missing_plaintext(self):
        name = self.uniq("nopt")
        r = self.req("POST", "transit/encrypt/" + name, {})
        self.assertError(r, 400, "missing plaintext to encrypt")
        # nothing was upserted
        self.assertStatus(self.req("GET", "transit/keys/" + name), 404)

    def test_bad_plaintext_base64(self):
        name, _ = self.create_key()
        for bad, pos in (("aGVsbG8", 4), ("abc", 0), ("!!!!", 0), ("aGVs*G8=", 4),
                         ("aGVsbG8=x", 8)):
            with self.subTest(plaintext=bad):
                r = self.req("POST", "transit/encrypt/" + name, {"plaintext": bad})
                self.assertError(r, 400, "illegal base64 data at input byte %d" % pos)

    def test_plaintext_base64_lenient_forms(self):
        # CR/LF are skipped (Go StdEncoding, §2.10)
        name, _ = self.create_key()
        r = self.req("POST", "transit/encrypt/" + name, {"plaintext": "aGVs\r\nbG8="})
        self.assertStatus(r, 200)
        self.assertEqual(self.decrypt(name, r.data["ciphertext"]), b"hello")

    def test_derived_missing_context(self):
        name, _ = self.create_key(derived=True)
        ct = self.encrypt(name, b"x", context=CTX)
        r = self.req("POST", "transit/encrypt/" + name, {"plaintext": b64("x")})
        self.assertError(r, 400, MSG_MISSING_CONTEXT)
        r = self.decrypt_resp(name, ct)
        self.assertError(r, 400, MSG_MISSING_CONTEXT)
        r = self.req("POST", "transit/rewrap/" + name, {"ciphertext": ct})
        self.assertError(r, 400, MSG_MISSING_CONTEXT)
        r = self.req("POST", "transit/datakey/plaintext/" + name, {})
        self.assertError(r, 400, MSG_MISSING_CONTEXT)

    def test_bad_context_base64(self):
        name, _ = self.create_key(derived=True)
        r = self.req("POST", "transit/encrypt/" + name,
                     {"plaintext": b64("x"), "context": "!!!!"})
        self.assertError(r, 400, "illegal base64 data at input byte 0")
        ct = self.encrypt(name, b"x", context=CTX)
        r = self.decrypt_resp(name, ct, context="Y3R4!")
        self.assertError(r, 400, "illegal base64 data at input byte 4")
        r = self.req("POST", "transit/datakey/wrapped/" + name, {"context": "!!!!"})
        self.assertError(r, 400, "failed to base64-decode context")

    def test_bad_associated_data_base64(self):
        name, _ = self.create_key()
        # an *internal* error in the reference (§2.6): 500-wrapped when single
        r = self.req("POST", "transit/encrypt/" + name,
                     {"plaintext": b64("x"), "associated_data": "!!!!"})
        self.assertError(r, 500, multierror(
            "unable to get associated_data/additional_data from factory[0]: "
            "illegal base64 data at input byte 0"))


    def test_bad_associated_data_base64_other_paths(self):
        # same internal error on decrypt, datakey and as a batch item error (§2.6, §4)
        name, _ = self.create_key()
        msg = ("unable to get associated_data/additional_data from factory[0]: "
               "illegal base64 data at input byte 0")
        ct = self.encrypt(name, b"x")
        r = self.decrypt_resp(name, ct, associated_data="!!!!")
        self.assertError(r, 500, multierror(msg))
        r = self.req("POST", "transit/datakey/wrapped/" + name, {"associated_data": "!!!!"})
        self.assertError(r, 500, multierror(msg))
        r = self.req("POST", "transit/encrypt/" + name, {"batch_input": [
            {"plaintext": b64("x"), "associated_data": "!!!!"}, {"plaintext": b64("y")}]})
        self.assertStatus(r, 500)   # internal error only -> 500 (§4)
        self.assertEqual(r.data["batch_results"][0], {"error": msg, "reference": ""})
        r = self.req("POST", "transit/decrypt/" + name, {"batch_input": [
            {"ciphertext": ct, "associated_data": "!!!!"}, {"ciphertext": ct}]})
        self.assertStatus(r, 500)
        self.assertEqual(r.data["batch_results"][0],
                         {"plaintext": "", "error": msg, "reference": ""})


class BatchTest(KmsdTestCase):
    """§4 batch semantics, §9 case 7."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        for name, body in (("bk", {}), ("bk-derived", {"derived": True})):
            r = cls.server.request("POST", "transit/keys/" + name, body)
            assert r.status == 200, r.describe()

    def enc(self, body, name="bk"):
        return self.req("POST", "transit/encrypt/" + name, body)

    def dec(self, body, name="bk"):
        return self.req("POST", "transit/decrypt/" + name, body)

    def assertEnvelope(self, r):
        self.assertIsInstance(r.json, dict, r.describe())
        self.assertNotIn("errors", r.json, r.describe())
        self.assertEqual([k for k in r.ordered_keys if k != "mount_type"], ENVELOPE_KEYS,
                         r.describe())

    def test_all_ok_order_and_references(self):
        pts = [("r%d" % i).encode() * (i + 1) for i in range(20)]
        items = [{"plaintext": b64(p), "reference": "ref-%d" % i} for i, p in enumerate(pts)]
        items[3].pop("reference")
        r = self.enc({"batch_input": items})
        self.assertStatus(r, 200)
        self.assertEnvelope(r)
        res = r.data["batch_results"]
        self.assertEqual(len(res), 20)
        for i, item in enumerate(res):
            self.assertEqual(item["reference"], "" if i == 3 else "ref-%d" % i)
            self.assertNotIn("error", item)
            self.assertEqual(item["key_version"], 1)
            self.assertTrue(item["ciphertext"].startswith("vault:v1:"))
        self.assertEqual(list(r.data), ["batch_results"])
        # decrypt batch in reverse order keeps that order
        dec_items = [{"ciphertext": x["ciphertext"], "reference": "d%d" % i}
                     for i, x in reversed(list(enumerate(res)))]
        r = self.dec({"batch_input": dec_items})
        self.assertStatus(r, 200)
        out = r.data["batch_results"]
        self.assertEqual([o["reference"] for o in out], ["d%d" % i for i in reversed(range(20))])
        self.assertEqual([unb64(o["plaintext"]) for o in out], list(reversed(pts)))
        for o in out:
            self.assertNotIn("error", o)

    def test_batch_overrides_single_params(self):
        r = self.enc({"plaintext": b64("single"),
                      "batch_input": [{"plaintext": b64("batched")}]})
        self.assertStatus(r, 200)
        self.assertEqual(list(r.data), ["batch_results"])
        ct = r.data["batch_results"][0]["ciphertext"]
        self.assertEqual(self.decrypt("bk", ct), b"batched")

    def test_top_level_reference_is_ignored_param(self):
        r = self.enc({"reference": "top", "batch_input": [{"plaintext": b64("x")}]})
        self.assertStatus(r, 200)
        self.assertEqual(r.data["batch_results"][0]["reference"], "")
        self.assertWarnings(r, ["Endpoint ignored these unrecognized parameters: [reference]"])

    def test_encrypt_mixed_400_with_results(self):
        items = [{"plaintext": b64("ok"), "reference": "a"},
                 {"plaintext": "aGVsbG8", "reference": "b"},
                 {"plaintext": b64("ok2")}]
        r = self.enc({"batch_input": items})
        self.assertStatus(r, 400)
        self.assertEnvelope(r)
        self.assertEqual(r.header("Content-Type"), "application/json")
        res = r.data["batch_results"]
        self.assertEqual(len(res), 3)
        self.assertEqual(res[1], {"error": "illegal base64 data at input byte 4",
                                  "reference": "b"})
        self.assertEqual(sorted(res[0]), ["ciphertext", "key_version", "reference"])
        self.assertEqual(res[0]["reference"], "a")
        self.assertEqual(res[2]["reference"], "")
        self.assertEqual(self.decrypt("bk", res[2]["ciphertext"]), b"ok2")

    def test_partial_failure_override(self):
        items = [{"plaintext": b64("ok")}, {"plaintext": "!!!!"}]
        r = self.enc({"batch_input": items, "partial_failure_response_code": 207})
        self.assertStatus(r, 207)
        self.assertEnvelope(r)
        self.assertIsNone(r.warnings)
        self.assertEqual(r.data["batch_results"][1]["error"],
                         "illegal base64 data at input byte 0")
        # all failed: override ignored
        r = self.enc({"batch_input": [{"plaintext": "!!!!"}, {"plaintext": "abc"}],
                      "partial_failure_response_code": 207})
        self.assertStatus(r, 400)
        self.assertEnvelope(r)
        # out of range -> warning, 400
        # below 100 too: not a status an HTTP server can send (Go's panics on it)
        for code in (0, 600, -1, 1, 42, 99):
            with self.subTest(code=code):
                r = self.enc({"batch_input": items, "partial_failure_response_code": code})
                self.assertStatus(r, 400)
                self.assertEnvelope(r)
                self.assertWarnings(r, [OVERRIDE_WARNING])
        # no failure: override irrelevant
        r = self.enc({"batch_input": [{"plaintext": b64("x")}],
                      "partial_failure_response_code": 207})
        self.assertStatus(r, 200)

    def test_associated_data_on_a_non_aead_key_leaves_the_batch_status_alone(self):
        """transit-api.md §4's quirk (OpenBao and Vault): an item rejected for
        associated_data on a non-AEAD key carries its error, but does not make the batch a
        400; a real user error next to it still does."""
        name = self.uniq("rsa")
        self.create_key(name, type="rsa-2048")
        msg = "'[0].associated_data' provided for non-AEAD cipher suite rsa-2048"
        r = self.enc({"batch_input": [{"plaintext": b64("a"), "associated_data": b64("ad")},
                                      {"plaintext": b64("b")}]}, name=name)
        self.assertStatus(r, 200)
        res = r.data["batch_results"]
        self.assertEqual(res[0]["error"], msg)
        self.assertNotIn("error", res[1])
        ct = res[1]["ciphertext"]
        r = self.dec({"batch_input": [{"ciphertext": ct, "associated_data": b64("ad")},
                                      {"ciphertext": ct}]}, name=name)
        self.assertStatus(r, 200)
        res = r.data["batch_results"]
        self.assertEqual(res[0]["error"], msg)
        self.assertEqual(res[1]["plaintext"], b64("b"))
        # the quirk checks associated_data before the ciphertext, as OpenBao does
        r = self.dec({"batch_input": [{"ciphertext": "garbage", "associated_data": b64("ad")}]},
                     name=name)
        self.assertStatus(r, 200)
        self.assertEqual(r.data["batch_results"][0]["error"], msg)
        # with a user error beside it: 400
        r = self.enc({"batch_input": [{"plaintext": b64("a"), "associated_data": b64("ad")},
                                      {"plaintext": "!!!!"}]}, name=name)
        self.assertStatus(r, 400)
        # a single request is still refused
        r = self.enc({"plaintext": b64("a"), "associated_data": b64("ad")}, name=name)
        self.assertError(r, 400, "'[0].associated_data' provided for non-AEAD cipher suite "
                         "rsa-2048")

    def test_a_null_item_is_an_empty_item(self):
        """mapstructure leaves a null batch item empty, so it fails as an item without
        plaintext (or ciphertext); the other items are served."""
        r = self.enc({"batch_input": [None, {"plaintext": b64("x")}]})
        self.assertStatus(r, 400)
        res = r.data["batch_results"]
        self.assertEqual(res[0]["error"], "missing plaintext to encrypt")
        ct = res[1]["ciphertext"]
        r = self.dec({"batch_input": [{"ciphertext": ct}, None]})
        self.assertStatus(r, 400)
        res = r.data["batch_results"]
        self.assertEqual(res[0]["plaintext"], b64("x"))
        self.assertEqual(res[1]["error"], "missing ciphertext to decrypt")

    def test_partial_failure_override_with_a_code_that_has_no_body(self):
        """1..599 is accepted (OpenBao), but 1xx, 204 and 304 answers carry no body: as Go's
        server does, a 1xx (but 101) goes out as an interim response followed by the answer
        as 200, and 101, 204 and 304 go out without the body. The connection stays framed:
        the next request on it is answered (101: closed)."""
        items = [{"plaintext": b64("ok")}, {"plaintext": "!!!!"}]
        body = json.dumps({"batch_input": items, "partial_failure_response_code": 0})

        def exchange(code):
            req = body.replace('"partial_failure_response_code": 0',
                               '"partial_failure_response_code": %d' % code).encode()
            head = ("POST /v1/transit/encrypt/bk HTTP/1.1\r\nHost: x\r\nX-Vault-Token: %s\r\n"
                    "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                    % (self.server.token, len(req))).encode()
            health = b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            return raw_exchange(self.server.port, head + req + health)

        def take(data):
            """One response off the front: (status line, headers dict, body, rest)."""
            headpart, sep, rest = data.partition(b"\r\n\r\n")
            self.assertEqual(sep, b"\r\n\r\n", data)
            lines = headpart.decode().split("\r\n")
            hdrs = dict(l.split(": ", 1) for l in lines[1:])
            n = int(hdrs.get("Content-Length", "0"))
            return lines[0], hdrs, rest[:n], rest[n:]

        for code in (100, 103, 199):
            with self.subTest(code=code):
                status, hdrs, b, rest = take(exchange(code))
                # Go's reason phrases; a code without one reads "status code N"
                self.assertEqual(status, "HTTP/1.1 %d %s" % (code, {
                    100: "Continue", 103: "Early Hints"}.get(code, "status code %d" % code)))
                self.assertEqual(hdrs, {})
                self.assertEqual(b, b"")
                status, hdrs, b, rest = take(rest)
                self.assertEqual(status, "HTTP/1.1 200 OK")
                res = json.loads(b)["data"]["batch_results"]
                self.assertEqual(res[1]["error"], "illegal base64 data at input byte 0")
                self.assertTrue(res[0]["ciphertext"].startswith("vault:v1:"))
                status, hdrs, b, rest = take(rest)
                self.assertEqual(status, "HTTP/1.1 200 OK")  # sys/health, framed
                self.assertEqual(json.loads(b)["initialized"], True)
                self.assertEqual(rest, b"")
        for code in (204, 304):
            with self.subTest(code=code):
                status, hdrs, b, rest = take(exchange(code))
                self.assertTrue(status.startswith("HTTP/1.1 %d " % code), status)
                self.assertNotIn("Content-Length", hdrs)
                status, hdrs, b, rest = take(rest)
                self.assertEqual(status, "HTTP/1.1 200 OK")
                self.assertEqual(json.loads(b)["initialized"], True)
        # never an interim 1xx to an HTTP/1.0 client (RFC 9110 15.2): just the answer
        req = body.replace('"partial_failure_response_code": 0',
                           '"partial_failure_response_code": 103').encode()
        data = raw_exchange(self.server.port,
                            ("POST /v1/transit/encrypt/bk HTTP/1.0\r\nX-Vault-Token: %s\r\n"
                             "Content-Length: %d\r\n\r\n" % (self.server.token, len(req))).encode()
                            + req)
        status, hdrs, b, rest = take(data)
        self.assertEqual(status, "HTTP/1.1 200 OK")
        self.assertIn("batch_results", json.loads(b)["data"])
        status, hdrs, b, rest = take(exchange(101))
        self.assertEqual(status, "HTTP/1.1 101 Switching Protocols")  # Go's reason phrase
        self.assertEqual(hdrs.get("Connection"), "close")
        self.assertNotIn("Content-Length", hdrs)
        self.assertEqual(rest, b"")  # nothing more on a connection that switched

    def test_decrypt_mixed(self):
        ct = self.encrypt("bk", b"good")
        items = [{"ciphertext": ct, "reference": "1"},
                 {"ciphertext": "vault:v1:AAAA", "reference": "2"},
                 {"ciphertext": "garbage", "reference": "3"},
                 {"ciphertext": "", "reference": "4"}]
        r = self.dec({"batch_input": items})
        self.assertStatus(r, 400)
        self.assertEnvelope(r)
        res = r.data["batch_results"]
        self.assertEqual(unb64(res[0]["plaintext"]), b"good")
        self.assertEqual(res[0]["reference"], "1")
        self.assertNotIn("error", res[0])
        self.assertEqual(res[1], {"plaintext": "", "error": "invalid ciphertext length",
                                  "reference": "2"})
        self.assertEqual(res[2], {"plaintext": "", "error": "invalid ciphertext: no prefix",
                                  "reference": "3"})
        self.assertEqual(res[3], {"plaintext": "", "error": "missing ciphertext to decrypt",
                                  "reference": "4"})
        r = self.dec({"batch_input": items, "partial_failure_response_code": 207})
        self.assertStatus(r, 207)
        r = self.dec({"batch_input": items[1:], "partial_failure_response_code": 207})
        self.assertStatus(r, 400)

    def test_decrypt_item_without_ciphertext_key(self):
        # §8 #11: Vault behaviour, a per-item error
        ct = self.encrypt("bk", b"good")
        r = self.dec({"batch_input": [{"ciphertext": ct}, {"reference": "nokey"}]})
        self.assertStatus(r, 400)
        res = r.data["batch_results"]
        self.assertEqual(unb64(res[0]["plaintext"]), b"good")
        self.assertEqual(res[1]["reference"], "nokey")
        self.assertEqual(res[1]["error"], "missing ciphertext to decrypt")

    def test_encrypt_item_without_plaintext_key(self):
        # §8 #11 (Vault behaviour, kmsd docs/api.md): a per-item error
        r = self.enc({"batch_input": [{"plaintext": b64("ok")}, {"reference": "np"}]})
        self.assertStatus(r, 400)
        res = r.data["batch_results"]
        self.assertEqual(self.decrypt("bk", res[0]["ciphertext"]), b"ok")
        self.assertEqual(res[1], {"error": "missing plaintext to encrypt", "reference": "np"})

    def test_top_level_key_version_fallback(self):
        # kmsd docs/api.md divergence: item key_version, else the top-level one
        name, _ = self.create_key()
        self.rotate(name, times=2)
        r = self.req("POST", "transit/encrypt/" + name, {"key_version": 2, "batch_input": [
            {"plaintext": b64("a")}, {"plaintext": b64("b"), "key_version": 3}]})
        self.assertStatus(r, 200)
        self.assertEqual([x["key_version"] for x in r.data["batch_results"]], [2, 3])

    def test_empty_batch(self):
        for op in ("encrypt", "decrypt", "rewrap"):
            with self.subTest(op=op):
                r = self.req("POST", "transit/%s/bk" % op, {"batch_input": []})
                self.assertError(r, 400, "missing batch input to process")

    def test_context_on_some_items(self):
        msg = "context should be set either in all the request blocks or in none"
        r = self.enc({"batch_input": [{"plaintext": b64("a"), "context": CTX},
                                      {"plaintext": b64("b")}]}, name="bk-derived")
        self.assertError(r, 400, msg)
        r = self.enc({"batch_input": [{"plaintext": b64("a")},
                                      {"plaintext": b64("b"), "context": CTX}]}, name="bk")
        self.assertError(r, 400, msg)
        ct = self.encrypt("bk-derived", b"x", context=CTX)
        r = self.dec({"batch_input": [{"ciphertext": ct, "context": CTX},
                                      {"ciphertext": ct}]}, name="bk-derived")
        self.assertError(r, 400, msg)
        r = self.req("POST", "transit/rewrap/bk-derived",
                     {"batch_input": [{"ciphertext": ct}, {"ciphertext": ct, "context": CTX}]})
        self.assertError(r, 400, msg)

    def test_derived_batch(self):
        items = [{"plaintext": b64("p%d" % i), "context": b64("c%d" % i)} for i in range(5)]
        items.append({"plaintext": b64("bad ctx"), "context": "!!!!"})
        r = self.enc({"batch_input": items}, name="bk-derived")
        self.assertStatus(r, 400)
        res = r.data["batch_results"]
        self.assertEqual(res[5]["error"], "illegal base64 data at input byte 0")
        dec = [{"ciphertext": res[i]["ciphertext"], "context": b64("c%d" % i)}
               for i in range(5)]
        dec.append({"ciphertext": res[0]["ciphertext"], "context": b64("c1")})
        r = self.dec({"batch_input": dec}, name="bk-derived")
        self.assertStatus(r, 400)
        out = r.data["batch_results"]
        for i in range(5):
            self.assertEqual(unb64(out[i]["plaintext"]), ("p%d" % i).encode())
        self.assertEqual(out[5]["error"], "cipher: message authentication failed")
        self.assertEqual(out[5]["plaintext"], "")

    def test_batch_key_version_and_ad(self):
        name, _ = self.create_key()
        self.rotate(name, times=2)
        items = [{"plaintext": b64("v1"), "key_version": 1},
                 {"plaintext": b64("v2"), "key_version": 2, "associated_data": AD},
                 {"plaintext": b64("latest")},
                 {"plaintext": b64("v9"), "key_version": 9}]
        r = self.req("POST", "transit/encrypt/" + name, {"batch_input": items})
        self.assertStatus(r, 400)
        res = r.data["batch_results"]
        self.assertEqual([x.get("key_version") for x in res[:3]], [1, 2, 3])
        self.assertEqual([ct_version(x["ciphertext"]) for x in res[:3]], [1, 2, 3])
        self.assertEqual(res[3], {"error": "requested version for encryption is higher than "
                                           "the latest key version", "reference": ""})
        r = self.req("POST", "transit/decrypt/" + name, {"batch_input": [
            {"ciphertext": res[0]["ciphertext"]},
            {"ciphertext": res[1]["ciphertext"], "associated_data": AD},
            {"ciphertext": res[2]["ciphertext"]}]})
        self.assertStatus(r, 200)
        self.assertEqual([unb64(x["plaintext"]) for x in r.data["batch_results"]],
                         [b"v1", b"v2", b"latest"])

    def test_rewrap_batch_always_200(self):
        name, _ = self.create_key()
        ct = self.encrypt(name, b"rewrap me")
        self.rotate(name)
        items = [{"ciphertext": ct, "reference": "x"},
                 {"ciphertext": "garbage", "reference": "y"},
                 {"ciphertext": "vault:v9:AAAA"}]
        r = self.req("POST", "transit/rewrap/" + name,
                     {"batch_input": items, "partial_failure_response_code": 207})
        self.assertStatus(r, 200)
        res = r.data["batch_results"]
        self.assertEqual(res[0]["reference"], "x")
        self.assertEqual(res[0]["key_version"], 2)
        self.assertTrue(res[0]["ciphertext"].startswith("vault:v2:"))
        self.assertNotIn("error", res[0])
        self.assertEqual(res[1], {"error": "invalid ciphertext: no prefix", "reference": "y"})
        self.assertEqual(res[2], {"error": "invalid ciphertext: version is too new",
                                  "reference": ""})
        self.assertEqual(self.decrypt(name, res[0]["ciphertext"]), b"rewrap me")

    def test_malformed_batch_input(self):
        # §3.8: not an array / item not an object / wrong field type -> 500w
        for bad in ("notalist", [1, 2], [{"plaintext": 5}]):
            with self.subTest(batch_input=bad):
                r = self.enc({"batch_input": bad})
                self.assertStatus(r, 500)
                self.assertEqual(len(r.errors or []), 1, r.describe())
                self.assertTrue(r.errors[0].startswith(
                    "1 error occurred:\n\t* failed to parse batch input: "), r.describe())
        r = self.enc({"batch_input": [{"plaintext": 5}]})
        self.assertIn("'[0].plaintext' expected type 'string', got unconvertible type",
                      r.errors[0])

    def test_associated_data_decoded_where_openbao_decodes_it(self):
        """OpenBao decodes associated_data inside Encrypt/DecryptWithFactory, after the key
        version, the ciphertext's base64 and the key derivation: those user errors (400) come
        before a bad associated_data (500), single or in a batch."""
        name = self.uniq("adord")
        self.create_key(name)
        dname = self.uniq("adordd")
        self.create_key(dname, derived=True)
        fac = multierror("unable to get associated_data/additional_data from factory[0]: "
                         "illegal base64 data at input byte 0")
        for path, key, body, status, msg in (
                ("encrypt", name, {"plaintext": b64("x"), "key_version": 9}, 400,
                 "requested version for encryption is higher than the latest key version"),
                ("encrypt", dname, {"plaintext": b64("x")}, 400, MSG_MISSING_CONTEXT),
                ("encrypt", name, {"plaintext": b64("x")}, 500, fac),
                ("decrypt", name, {"ciphertext": "vault:v1:!!!!"}, 400,
                 "invalid ciphertext: could not decode base64"),
                ("decrypt", dname, {"ciphertext": "vault:v1:" + b64(b"\0" * 30)}, 400,
                 MSG_MISSING_CONTEXT),
                ("decrypt", name, {"ciphertext": "vault:v1:AAAA"}, 500, fac)):
            body = dict(body, associated_data="!!")
            with self.subTest(path=path, key=key, body=body):
                self.assertError(self.req("POST", "transit/%s/%s" % (path, key), body), status,
                                 msg)
        r = self.req("POST", "transit/encrypt/" + name, {"batch_input": [
            {"plaintext": b64("x"), "associated_data": "!!", "key_version": 9},
            {"plaintext": b64("x")}]})
        self.assertStatus(r, 400)
        self.assertEqual(r.data["batch_results"][0]["error"],
                         "requested version for encryption is higher than the latest key "
                         "version")

    def test_batch_decoders_words_and_rewrap_numbers(self):
        """encrypt and decrypt read batch_input with OpenBao's own decoder (its words: %T
        names, every field error one a line); rewrap with mapstructure, which takes a JSON
        number in a string field as its text."""
        name = self.uniq("dec")
        self.create_key(name)
        for path, body, msg in (
                ("encrypt", {"batch_input": {"plaintext": b64("x")}},
                 "source data must be an array or slice, got map[string]interface {}"),
                ("encrypt", {"batch_input": [{"plaintext": b64("x")}, 7]},
                 "[1] expected a map, got 'json.Number'"),
                ("encrypt", {"batch_input": [{"plaintext": b64("x"), "key_version": 1.5}]},
                 'error decoding json.Number into [0].key_version: strconv.ParseInt: '
                 'parsing "1.5": invalid syntax'),
                ("decrypt", {"batch_input": [{"ciphertext": "x", "reference": 1},
                                             {"ciphertext": "x", "context": True}]},
                 "'[0].reference' expected type 'string', got unconvertible type "
                 "'json.Number'\n'[1].context' expected type 'string', got unconvertible "
                 "type 'bool'"),
                # mapstructure.Decode joins the items' errors and says so
                ("rewrap", {"batch_input": ["x"]},
                 "decoding failed due to the following error(s):\n\n"
                 "'[0]' expected a map or struct, got \"string\"")):
            with self.subTest(path=path, body=body):
                self.assertError(self.req("POST", "transit/%s/%s" % (path, name), body), 500,
                                 multierror("failed to parse batch input: " + msg))
        ct = self.encrypt(name, b"n")
        r = self.req("POST", "transit/rewrap/" + name, {"batch_input": [
            {"ciphertext": ct, "reference": 17}, {"ciphertext": 5}]})
        self.assertOK(r)
        res = r.data["batch_results"]
        self.assertEqual(res[0]["reference"], "17")
        self.assertTrue(res[0]["ciphertext"].startswith("vault:v1:"), res)
        self.assertEqual(res[1], {"error": "invalid ciphertext: no prefix", "reference": ""})


class UpsertTest(KmsdTestCase):
    """§3.8 upsert, §9 case 8."""

    def test_upsert_default(self):
        name = self.uniq("up")
        r = self.req("POST", "transit/encrypt/" + name, {"plaintext": b64("u")})
        self.assertStatus(r, 200)
        self.assertIsNone(r.warnings)
        self.assertEqual(r.data["key_version"], 1)
        d = self.read_key(name)
        self.assertEqual(d["type"], "aes256-gcm96")
        self.assertIs(d["derived"], False)
        self.assertEqual(self.decrypt(name, r.data["ciphertext"]), b"u")

    def test_upsert_types_and_flags(self):
        for t in SYMMETRIC_TYPES:
            with self.subTest(type=t):
                name = self.uniq("up")
                ct = self.encrypt(name, b"t", type=t)
                self.assertEqual(self.read_key(name)["type"], t)
                self.assertEqual(len(ct_payload(ct)), 1 + NONCE_SIZE[t] + 16)
        name = self.uniq("upd")
        ct = self.encrypt(name, b"d", context=CTX)
        d = self.read_key(name)
        self.assertIs(d["derived"], True)
        self.assertIs(d["convergent_encryption"], False)
        self.assertEqual(self.decrypt(name, ct, context=CTX), b"d")
        name = self.uniq("upc")
        ct = self.encrypt(name, b"c", context=CTX, convergent_encryption=True,
                          type="chacha20-poly1305")
        d = self.read_key(name)
        self.assertIs(d["convergent_encryption"], True)
        self.assertEqual(d["type"], "chacha20-poly1305")
        self.assertEqual(self.encrypt(name, b"c", context=CTX), ct)
        # batch upsert: derived from context on the items
        name = self.uniq("upb")
        r = self.req("POST", "transit/encrypt/" + name,
                     {"batch_input": [{"plaintext": b64("1"), "context": CTX}]})
        self.assertStatus(r, 200)
        self.assertIs(self.read_key(name)["derived"], True)

    def test_upsert_errors(self):
        name = self.uniq("upe")
        r = self.req("POST", "transit/encrypt/" + name,
                     {"plaintext": b64("x"), "convergent_encryption": True})
        self.assertError(r, 400, "convergent encryption requires derivation to be enabled, "
                                 "so context is required")
        for t in ("ecdsa-p256", "ecdsa-p384", "ecdsa-p521"):
            r = self.req("POST", "transit/encrypt/" + name, {"plaintext": b64("x"), "type": t})
            self.assertError(r, 400, "key type %s not supported for this operation" % t)
        for t in ("rsa-2048", "ed25519", "hmac", "bogus"):
            r = self.req("POST", "transit/encrypt/" + name, {"plaintext": b64("x"), "type": t})
            self.assertError(r, 400, "unknown key type %s" % t)
        self.assertStatus(self.req("GET", "transit/keys/" + name), 404)

    def test_existing_key_ignores_type(self):
        name, _ = self.create_key(type="aes128-gcm96")
        r = self.req("POST", "transit/encrypt/" + name,
                     {"plaintext": b64("x"), "type": "chacha20-poly1305"})
        self.assertStatus(r, 200)
        self.assertIsNone(r.warnings)
        self.assertEqual(self.read_key(name)["type"], "aes128-gcm96")
        r = self.req("POST", "transit/encrypt/" + name,
                     {"plaintext": b64("x"), "type": "ecdsa-p256"})
        self.assertStatus(r, 200)

    def test_disable_upsert(self):
        mount = self.uniq("noup")
        self.assertStatus(self.req("POST", "sys/mounts/" + mount, {"type": "transit"}), 204)
        r = self.req("GET", mount + "/config/keys")
        self.assertStatus(r, 200)
        self.assertEqual(r.data, {"disable_upsert": False})
        r = self.req("POST", mount + "/config/keys", {"disable_upsert": True})
        self.assertStatus(r, 200)
        self.assertEqual(r.data, {"disable_upsert": True})
        name = self.uniq()
        r = self.req("POST", "%s/encrypt/%s" % (mount, name), {"plaintext": b64("x")})
        self.assertError(r, 400, "encryption key not found")
        self.assertStatus(self.req("GET", "%s/keys/%s" % (mount, name)), 404)
        self.create_key(name, mount=mount)
        self.assertEqual(self.decrypt(name, self.encrypt(name, b"ok", mount=mount),
                                      mount=mount), b"ok")
        # the root transit/ mount still upserts
        self.encrypt(self.uniq("still"), b"x")


class KeyVersionTest(KmsdTestCase):
    """§9 case 4: key_version on encrypt, datakey and rewrap."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        r = cls.server.request("POST", "transit/keys/kv", {})
        assert r.status == 200
        for _ in range(2):
            r = cls.server.request("POST", "transit/keys/kv/rotate")
            assert r.status == 200

    def ops(self, version):
        ct1 = self.encrypt("kv", b"src", key_version=1)
        yield "encrypt", self.req("POST", "transit/encrypt/kv",
                                  {"plaintext": b64("x"), "key_version": version})
        yield "datakey", self.req("POST", "transit/datakey/plaintext/kv",
                                  {"key_version": version})
        yield "rewrap", self.req("POST", "transit/rewrap/kv",
                                 {"ciphertext": ct1, "key_version": version})

    def test_versions(self):
        for version, expect in ((0, 3), (3, 3), (2, 2), (1, 1)):
            for op, r in self.ops(version):
                with self.subTest(op=op, version=version):
                    self.assertStatus(r, 200)
                    self.assertEqual(r.data["key_version"], expect)
                    self.assertEqual(ct_version(r.data["ciphertext"]), expect)
        for version, msg in ((4, "requested version for encryption is higher than the latest "
                                 "key version"),
                             (-1, "requested version for encryption is negative")):
            for op, r in self.ops(version):
                with self.subTest(op=op, version=version):
                    self.assertError(r, 400, msg)

    def test_min_encryption_version(self):
        name, _ = self.create_key()
        self.rotate(name, times=2)
        self.configure(name, min_encryption_version=2)
        r = self.req("POST", "transit/encrypt/" + name, {"plaintext": b64("x"), "key_version": 1})
        self.assertError(r, 400, "requested version for encryption is less than the minimum "
                                 "encryption key version")
        r = self.req("POST", "transit/datakey/wrapped/" + name, {"key_version": 1})
        self.assertError(r, 400, "requested version for encryption is less than the minimum "
                                 "encryption key version")
        self.assertEqual(ct_version(self.encrypt(name, b"x", key_version=2)), 2)
        self.assertEqual(ct_version(self.encrypt(name, b"x", key_version=0)), 3)
        self.assertEqual(ct_version(self.encrypt(name, b"x")), 3)

    def test_version_below_min_decryption(self):
        name, _ = self.create_key()
        self.rotate(name, times=2)
        self.configure(name, min_decryption_version=2)
        r = self.req("POST", "transit/encrypt/" + name, {"plaintext": b64("x"), "key_version": 1})
        self.assertError(r, 400, "no such key version")


class RotationTest(KmsdTestCase):
    """§2.2, §9 case 3."""

    def test_rotation_and_min_decryption(self):
        name, _ = self.create_key()
        cts = {1: self.encrypt(name, b"one")}
        for v in (2, 3):
            d = self.rotate(name)
            self.assertEqual(d["latest_version"], v)
            cts[v] = self.encrypt(name, ("v%d" % v).encode())
            self.assertEqual(ct_version(cts[v]), v)
        self.assertEqual(self.decrypt(name, cts[1]), b"one")
        d = self.configure(name, min_decryption_version=2)
        self.assertEqual(sorted(d["keys"], key=int), ["2", "3"])
        self.assertError(self.decrypt_resp(name, cts[1]), 400, MSG_TOO_OLD)
        self.assertError(self.decrypt_resp(name, "vault:v0:" + cts[1].split(":", 2)[2]), 400,
                         MSG_TOO_OLD)
        self.assertEqual(self.decrypt(name, cts[2]), b"v2")
        r = self.req("POST", "transit/rewrap/" + name, {"ciphertext": cts[1]})
        self.assertError(r, 400, MSG_TOO_OLD)
        d = self.configure(name, min_decryption_version=1)
        self.assertEqual(sorted(d["keys"], key=int), ["1", "2", "3"])
        self.assertEqual(self.decrypt(name, cts[1]), b"one")
        # trim to 2 after min_encryption_version=2: v1 is gone for good
        self.configure(name, min_encryption_version=2, min_decryption_version=2)
        r = self.req("POST", "transit/keys/%s/trim" % name, {"min_available_version": 2})
        self.assertStatus(r, 200)
        r = self.req("POST", "transit/keys/%s/config" % name, {"min_decryption_version": 1})
        self.assertError(r, 400, "min decryption version should not be less then min available "
                                 "version")
        self.assertError(self.decrypt_resp(name, cts[1]), 400, MSG_TOO_OLD)
        self.assertEqual(self.decrypt(name, cts[3]), b"v3")


class RewrapTest(KmsdTestCase):
    """§3.10."""

    def test_rewrap(self):
        for t in SYMMETRIC_TYPES:
            with self.subTest(type=t):
                name, _ = self.create_key(type=t)
                ct1 = self.encrypt(name, b"rewrap")
                self.rotate(name, times=2)
                r = self.req("POST", "transit/rewrap/" + name, {"ciphertext": ct1})
                self.assertStatus(r, 200)
                self.assertEqual(sorted(r.data), ["ciphertext", "key_version"])
                self.assertEqual(r.data["key_version"], 3)
                ct3 = r.data["ciphertext"]
                self.assertEqual(ct_version(ct3), 3)
                self.assertEqual(self.decrypt(name, ct3), b"rewrap")
                # already latest: still a fresh ciphertext
                r = self.req("POST", "transit/rewrap/" + name, {"ciphertext": ct3})
                self.assertStatus(r, 200)
                self.assertNotEqual(r.data["ciphertext"], ct3)
                self.assertEqual(self.decrypt(name, r.data["ciphertext"]), b"rewrap")
                # to an explicit version
                r = self.req("POST", "transit/rewrap/" + name,
                             {"ciphertext": ct3, "key_version": 2})
                self.assertStatus(r, 200)
                self.assertEqual(ct_version(r.data["ciphertext"]), 2)
                self.assertEqual(self.decrypt(name, r.data["ciphertext"]), b"rewrap")

    def test_rewrap_derived_and_convergent(self):
        name, _ = self.create_key(derived=True, convergent_encryption=True)
        ct1 = self.encrypt(name, b"conv", context=CTX)
        self.rotate(name)
        r = self.req("POST", "transit/rewrap/" + name, {"ciphertext": ct1, "context": CTX})
        self.assertStatus(r, 200)
        self.assertEqual(r.data["ciphertext"], self.encrypt(name, b"conv", context=CTX))

    def test_rewrap_errors(self):
        name, _ = self.create_key()
        r = self.req("POST", "transit/rewrap/" + name, {})
        self.assertError(r, 400, "missing ciphertext to decrypt")
        r = self.req("POST", "transit/rewrap/" + name, {"ciphertext": "nope"})
        self.assertError(r, 400, "invalid ciphertext: no prefix")
        r = self.req("POST", "transit/rewrap/" + self.uniq("nokey"),
                     {"ciphertext": self.encrypt(name, b"x")})
        self.assertError(r, 400, "encryption key not found")
        # rewrap has no associated_data: AD-bound ciphertexts cannot be rewrapped
        ct = self.encrypt(name, b"ad", associated_data=AD)
        r = self.req("POST", "transit/rewrap/" + name, {"ciphertext": ct})
        self.assertError(r, 400, "cipher: message authentication failed")

    def test_rewrap_batch_internal_error_fails_the_request(self):
        """OpenBao's rewrap keeps only user errors in the items: an RSA ciphertext that does
        not decrypt (an internal error in keysutil) fails the whole batch with 500, as a single
        rewrap does; user errors (no prefix, too new) stay per item with 200."""
        name, _ = self.create_key(type="rsa-2048")
        good = self.encrypt(name, b"rsa")
        bad = "vault:v1:" + b64(b"\x00" * 256)
        msg = multierror("failed to RSA decrypt the ciphertext: crypto/rsa: decryption error")
        self.assertError(self.req("POST", "transit/rewrap/" + name, {"ciphertext": bad}),
                         500, msg)
        r = self.req("POST", "transit/rewrap/" + name, {"batch_input": [
            {"ciphertext": good}, {"ciphertext": "nope"}, {"ciphertext": bad}]})
        self.assertError(r, 500, msg)
        r = self.req("POST", "transit/rewrap/" + name, {"batch_input": [
            {"ciphertext": good}, {"ciphertext": "nope"}, {"ciphertext": "vault:v7:AA=="}]})
        self.assertOK(r)
        res = r.data["batch_results"]
        self.assertEqual(self.decrypt(name, res[0]["ciphertext"]), b"rsa")
        self.assertEqual(res[1], {"error": "invalid ciphertext: no prefix", "reference": ""})
        self.assertEqual(res[2], {"error": "invalid ciphertext: version is too new",
                                  "reference": ""})


class DatakeyTest(KmsdTestCase):
    """§3.11."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        for name, body in (("dk", {}), ("dk-derived", {"derived": True}),
                           ("dk-x", {"type": "xchacha20-poly1305"})):
            r = cls.server.request("POST", "transit/keys/" + name, body)
            assert r.status == 200, r.describe()

    def test_plaintext_and_wrapped(self):
        for name in ("dk", "dk-x"):
            for bits, size in ((None, 32), (128, 16), (256, 32), (512, 64)):
                with self.subTest(name=name, bits=bits):
                    body = {} if bits is None else {"bits": bits}
                    r = self.req("POST", "transit/datakey/plaintext/" + name, body)
                    self.assertStatus(r, 200)
                    self.assertEqual(sorted(r.data), ["ciphertext", "key_version", "plaintext"])
                    key = unb64(r.data["plaintext"])
                    self.assertEqual(len(key), size)
                    self.assertEqual(r.data["key_version"], 1)
                    self.assertEqual(self.decrypt(name, r.data["ciphertext"]), key)
                    r = self.req("POST", "transit/datakey/wrapped/" + name, body)
                    self.assertStatus(r, 200)
                    self.assertEqual(sorted(r.data), ["ciphertext", "key_version"])
                    self.assertEqual(len(self.decrypt(name, r.data["ciphertext"])), size)
        keys = {self.req("POST", "transit/datakey/plaintext/dk").data["plaintext"]
                for _ in range(3)}
        self.assertEqual(len(keys), 3)

    def test_decrypt_gives_key_in_base64(self):
        r = self.req("POST", "transit/datakey/plaintext/dk", {})
        self.assertStatus(r, 200)
        d = self.req("POST", "transit/decrypt/dk", {"ciphertext": r.data["ciphertext"]})
        self.assertStatus(d, 200)
        self.assertEqual(d.data["plaintext"], r.data["plaintext"])

    def test_derived_and_ad(self):
        r = self.req("POST", "transit/datakey/plaintext/dk-derived", {"context": CTX})
        self.assertStatus(r, 200)
        self.assertEqual(self.decrypt("dk-derived", r.data["ciphertext"], context=CTX),
                         unb64(r.data["plaintext"]))
        r = self.req("POST", "transit/datakey/plaintext/dk", {"associated_data": AD})
        self.assertStatus(r, 200)
        self.assertEqual(self.decrypt("dk", r.data["ciphertext"], associated_data=AD),
                         unb64(r.data["plaintext"]))
        self.assertError(self.decrypt_resp("dk", r.data["ciphertext"]), 400,
                         "cipher: message authentication failed")

    def test_errors(self):
        for bits in (0, 100, 64, 1024, -256):
            with self.subTest(bits=bits):
                r = self.req("POST", "transit/datakey/plaintext/dk", {"bits": bits})
                self.assertError(r, 400, "invalid bit length")
        for seg in ("foo", "Plaintext", "wrap"):
            with self.subTest(segment=seg):
                r = self.req("POST", "transit/datakey/%s/dk" % seg, {})
                self.assertError(r, 400, "Invalid path, must be 'plaintext' or 'wrapped'")
        r = self.req("POST", "transit/datakey/plaintext/" + self.uniq("nokey"), {})
        self.assertError(r, 400, "encryption key not found")
        r = self.req("POST", "transit/datakey/plaintext/dk-derived", {"context": "!!"})
        self.assertError(r, 400, "failed to base64-decode context")
        r = self.req("GET", "transit/datakey/plaintext/dk")
        self.assertError(r, 405, "1 error occurred:\n\t* unsupported operation\n\n")


class PlaintextLimitTest(KmsdTestCase):
    """decisions.md: plaintext <= 64 KiB per item, above it 413 naming the limit."""

    def test_limit(self):
        name, _ = self.create_key()
        r = self.req("POST", "transit/encrypt/" + name, {"plaintext": b64(b"a" * 65536)})
        self.assertStatus(r, 200)
        r = self.req("POST", "transit/encrypt/" + name, {"plaintext": b64(b"a" * 65537)})
        self.assertStatus(r, 413)
        self.assertEqual(len(r.errors or []), 1, r.describe())
        self.assertIn("64 KiB", r.errors[0], r.describe())
        # a missing key is not upserted by a refused request either
        other = self.uniq("big")
        r = self.req("POST", "transit/encrypt/" + other, {"plaintext": b64(b"a" * 70000)})
        self.assertStatus(r, 413)
        self.assertIn("64 KiB", (r.errors or [""])[0], r.describe())

    def test_limit_in_batch(self):
        name, _ = self.create_key()
        r = self.req("POST", "transit/encrypt/" + name, {"batch_input": [
            {"plaintext": b64("small")}, {"plaintext": b64(b"b" * 65537)}]})
        self.assertStatus(r, 413)
        self.assertIn("64 KiB", r.body.decode(), r.describe())


class FullKeyCacheTest(KmsdTestCase):
    """Key cache entries take at most half of the secure heap: OpenSSL keeps the rest for the
    private keys it builds per operation (BN_secure_new has no fallback). With ~750 keys
    cached, RSA decrypt and sign used to fail with 500."""

    def test_rsa_and_ed25519_with_a_thousand_keys_cached(self):
        rsa = self.uniq("rsa")
        ed = self.uniq("ed")
        self.create_key(rsa, type="rsa-2048")
        self.create_key(ed, type="ed25519")
        prefix = self.uniq("fill")
        errors = []

        def fill(part):
            for i in range(part, 1000, 4):
                # the first encrypt creates the key (upsert), the second caches it
                for _ in range(2):
                    r = self.server.request("POST", "transit/encrypt/%s-%d" % (prefix, i),
                                            {"plaintext": b64("x")})
                    if r.status != 200:
                        errors.append(r.describe())

        threads = [threading.Thread(target=fill, args=(p,)) for p in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(errors, [])
        for _ in range(3):
            ct = self.encrypt(rsa, b"still there")
            self.assertEqual(self.decrypt(rsa, ct), b"still there")
            for key, body in ((rsa, {"input": b64("m"), "signature_algorithm": "pss"}),
                              (rsa, {"input": b64("m"), "signature_algorithm": "pkcs1v15"}),
                              (ed, {"input": b64("m")})):
                r = self.req("POST", "transit/sign/" + key, body)
                self.assertStatus(r, 200)
                self.assertTrue(r.data["signature"].startswith("vault:v1:"))


class ConcurrencyTest(KmsdTestCase):
    """§9 case 18: parallel rotate + encrypt; concurrent upserts of one key."""

    def test_concurrent_upsert_creates_one_key(self):
        name = self.uniq("race")
        results = [None] * 8
        barrier = threading.Barrier(8)

        def worker(i):
            barrier.wait()
            try:
                results[i] = self.server.request("POST", "transit/encrypt/" + name,
                                                 {"plaintext": b64("w%d" % i)})
            except Exception as e:  # noqa: BLE001
                results[i] = e

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        race_warning = ("Attempted creation of the key during the encrypt operation, "
                        "but it was created beforehand")
        for i, r in enumerate(results):
            self.assertNotIsInstance(r, Exception)
            self.assertStatus(r, 200)
            self.assertIn(r.warnings, (None, [race_warning]), r.describe())
            self.assertEqual(self.decrypt(name, r.data["ciphertext"]), ("w%d" % i).encode())
        self.assertEqual(self.read_key(name)["latest_version"], 1)

    # run at least this long, and until enough rotations and encryptions happened
    DURATION = 2.0
    MIN_ROTATIONS = 4
    MIN_ENCRYPTS = 21

    def test_parallel_rotate_and_encrypt(self):
        name, _ = self.create_key()
        stop = threading.Event()
        lock = threading.Lock()
        rotations = []          # latest_version reported by each rotate
        per_thread = {}         # encryptor -> [(version, ct, pt)]
        failures = []

        def rotator():
            while not stop.is_set():
                try:
                    r = self.server.request("POST", "transit/keys/%s/rotate" % name)
                except Exception as e:  # noqa: BLE001 - any transport error is a failure
                    failures.append("rotate: %r" % e)
                    return
                if r.status != 200:
                    failures.append(r.describe())
                    return
                with lock:
                    rotations.append(r.data["latest_version"])
                time.sleep(0.005)

        def encryptor(idx):
            out = per_thread.setdefault(idx, [])
            n = 0
            while not stop.is_set():
                pt = ("t%d-%d-" % (idx, n)).encode() + os.urandom(8)
                n += 1
                try:
                    r = self.server.request("POST", "transit/encrypt/" + name,
                                            {"plaintext": b64(pt)})
                except Exception as e:  # noqa: BLE001 - any transport error is a failure
                    failures.append("encrypt: %r" % e)
                    return
                if r.status != 200:
                    failures.append(r.describe())
                    return
                out.append((r.data["key_version"], r.data["ciphertext"], pt))

        threads = [threading.Thread(target=rotator) for _ in range(2)]
        threads += [threading.Thread(target=encryptor, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        started = time.monotonic()

        def enough():
            with lock:
                n_rot = len(rotations)
            n_enc = sum(len(items) for items in list(per_thread.values()))
            return failures or (time.monotonic() - started >= self.DURATION and
                                n_rot >= self.MIN_ROTATIONS and n_enc >= self.MIN_ENCRYPTS)

        try:
            wait_for(enough, 60, lambda: "%d rotations and %d encryptions" % (
                self.MIN_ROTATIONS, self.MIN_ENCRYPTS))
        finally:
            stop.set()
        for t in threads:
            t.join(30)
        self.assertEqual(failures, [])
        final = self.read_key(name)
        latest = final["latest_version"]
        self.assertGreater(len(rotations), 3)
        self.assertEqual(sorted(rotations), list(range(2, latest + 1)),
                         "rotations must produce each version exactly once, without gaps")
        self.assertEqual(sorted(final["keys"], key=int), [str(v) for v in range(1, latest + 1)])
        all_items = []
        for idx, items in per_thread.items():
            versions = [v for v, _, _ in items]
            self.assertEqual(versions, sorted(versions), "thread %d saw versions go back" % idx)
            all_items.extend(items)
        self.assertGreater(len(all_items), 20)
        for v, ct, _ in all_items:
            self.assertEqual(ct_version(ct), v)
            self.assertTrue(1 <= v <= latest)
        for i in range(0, len(all_items), 200):
            chunk = all_items[i:i + 200]
            r = self.req("POST", "transit/decrypt/" + name,
                         {"batch_input": [{"ciphertext": ct} for _, ct, _ in chunk]})
            self.assertStatus(r, 200)
            got = [unb64(x["plaintext"]) for x in r.data["batch_results"]]
            self.assertEqual(got, [pt for _, _, pt in chunk])


if __name__ == "__main__":
    unittest.main()
