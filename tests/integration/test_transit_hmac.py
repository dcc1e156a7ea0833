"""Transit hmac / verify (HMAC) / hash / random, and sign refused for symmetric keys
(reference §3.12-3.16, §9 I and case 13/15)."""

import base64
import hashlib
import hmac
import unittest

from kmsd_harness import KmsdTestCase, b64, multierror


class HmacHashRandomTest(KmsdTestCase):
    def setUp(self):
        self.key = self.uniq("h")
        self.assertEqual(self.req("POST", "transit/keys/" + self.key,
                                  {"exportable": True}).status, 200)

    def hmac_key(self, version="1"):
        r = self.req("GET", "transit/export/hmac-key/%s/%s" % (self.key, version))
        self.assertEqual(r.status, 200, r.describe())
        return base64.b64decode(r.json["data"]["keys"][version])

    def test_hmac_matches_the_version_hmac_key(self):
        for alg, fn in (("sha2-256", hashlib.sha256), ("sha2-512", hashlib.sha512),
                        ("sha1", hashlib.sha1), ("sha3-256", hashlib.sha3_256)):
            r = self.req("POST", "transit/hmac/%s/%s" % (self.key, alg), {"input": b64("hello")})
            self.assertEqual(r.status, 200, r.describe())
            want = base64.b64encode(hmac.new(self.hmac_key(), b"hello", fn).digest()).decode()
            self.assertEqual(r.json["data"]["hmac"], "vault:v1:" + want)
        # the URL algorithm wins over the body
        a = self.req("POST", "transit/hmac/%s/sha2-512" % self.key,
                     {"input": b64("x"), "algorithm": "sha2-256"}).json["data"]["hmac"]
        self.assertEqual(len(base64.b64decode(a.split(":")[2])), 64)

    def test_hmac_errors(self):
        cases = [
            ({"input": b64("x"), "algorithm": "none"}, "unsupported algorithm none"),
            ({}, "missing input for HMAC"),
            ({"input": "!!"}, "unable to decode input as base64: illegal base64 data at input "
                              "byte 0"),
            ({"input": b64("x"), "key_version": 9},
             "key version does not exist; latest key version is 1"),
            ({"input": b64("x"), "key_version": -1},
             "key version does not exist (cannot be negative)"),
        ]
        for body, msg in cases:
            self.assertError(self.req("POST", "transit/hmac/" + self.key, body), 400, msg)
        # an explicit "" is no algorithm (OpenBao's FieldData.Get gives it, not the default)
        self.assertError(self.req("POST", "transit/hmac/" + self.key,
                                  {"input": b64("x"), "algorithm": ""}), 400,
                         "unsupported algorithm ")
        self.assertError(self.req("POST", "transit/hash", {"input": b64("x"), "algorithm": ""}),
                         400, "unsupported algorithm ")
        # a long non-ASCII parameter echoed in the error is cut before a whole character: the
        # answer stays JSON (it became 500 with an audit device, errors [] without one)
        r = self.req("POST", "transit/hash", {"input": b64("x"), "algorithm": "\u00e9" * 300})
        self.assertStatus(r, 400)
        self.assertTrue(r.errors[0].startswith("unsupported algorithm \u00e9\u00e9"), r.errors)
        self.assertError(self.req("POST", "transit/hmac/nope-" + self.key, {"input": b64("x")}),
                         400, "encryption key not found")

    def test_verify_hmac_and_batch(self):
        mac = self.req("POST", "transit/hmac/" + self.key,
                       {"input": b64("hello")}).json["data"]["hmac"]
        r = self.req("POST", "transit/verify/" + self.key, {"input": b64("hello"), "hmac": mac})
        self.assertEqual(r.json["data"], {"valid": True})
        r = self.req("POST", "transit/verify/" + self.key, {"input": b64("hellO"), "hmac": mac})
        self.assertEqual(r.json["data"], {"valid": False})
        r = self.req("POST", "transit/verify/" + self.key, {"batch_input": [
            {"input": b64("hello"), "hmac": mac, "reference": "a"},
            {"input": b64("nope"), "hmac": mac, "reference": "b"}]})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json["data"]["batch_results"],
                         [{"valid": True, "reference": "a"}, {"reference": "b"}])
        self.assertError(self.req("POST", "transit/verify/" + self.key,
                                  {"input": b64("x"), "hmac": "v1:xx"}),
                         400, "invalid HMAC to verify: no prefix")
        self.assertError(self.req("POST", "transit/verify/" + self.key,
                                  {"input": b64("x"), "hmac": "vault:v9:" + b64("x")}),
                         400, "invalid HMAC: version is too new")
        self.assertError(self.req("POST", "transit/verify/" + self.key, {"input": b64("x")}),
                         400, "neither a 'signature' nor an 'hmac' were given to verify")
        self.assertError(self.req("POST", "transit/verify/" + self.key,
                                  {"input": b64("x"), "hmac": mac, "signature": "s"}),
                         400, "provide one of 'signature' or 'hmac'")
        # a rotated key still verifies the old version's HMAC; a raised floor refuses it
        self.req("POST", "transit/keys/%s/rotate" % self.key)
        self.assertTrue(self.req("POST", "transit/verify/" + self.key,
                                 {"input": b64("hello"), "hmac": mac}).json["data"]["valid"])
        self.req("POST", "transit/keys/%s/config" % self.key, {"min_decryption_version": 2})
        self.assertError(self.req("POST", "transit/verify/" + self.key,
                                  {"input": b64("hello"), "hmac": mac}),
                         400, "cannot verify HMAC: version is too old (disallowed by policy)")

    def test_verify_batch_input_decoded_as_openbao(self):
        """OpenBao decodes verify's batch_input (mapstructure v2 into a slice of string maps)
        before anything else: a batch_input that is not an array is a parse error, never an
        empty success; [] is 'missing batch input to process'; an item that is not an object
        fails the request; an item with both 'signature' and 'hmac' is a signature item."""
        mac = self.req("POST", "transit/hmac/" + self.key,
                       {"input": b64("hello")}).json["data"]["hmac"]
        for bad, kind in (({"input": b64("hello"), "hmac": mac}, "map"), ("x", "string")):
            with self.subTest(batch_input=bad):
                self.assertError(
                    self.req("POST", "transit/verify/" + self.key, {"batch_input": bad}), 500,
                    multierror("failed to parse batch input: '' source data must be an array "
                               "or slice, got " + kind))
        self.assertError(self.req("POST", "transit/verify/" + self.key, {"batch_input": []}),
                         400, "missing batch input to process")
        self.assertError(
            self.req("POST", "transit/verify/" + self.key,
                     {"batch_input": [{"input": b64("hello"), "hmac": mac}, 7]}), 500,
            multierror("failed to parse batch input: decoding failed due to the following "
                       "error(s):\n\n'[1]' expected type "
                       "'transit.batchRequestVerifyItem', got unconvertible type 'json.Number'"))
        # both fields: counted as a signature item (an AES key cannot verify signatures)
        self.assertError(
            self.req("POST", "transit/verify/" + self.key,
                     {"batch_input": [{"input": b64("x"), "hmac": mac, "signature": mac}]}),
            400, "key type aes256-gcm96 does not support verification")
        # null values decode as "": a null reference echoes "", a null input verifies ""
        empty = self.req("POST", "transit/hmac/" + self.key,
                         {"input": ""}).json["data"]["hmac"]
        r = self.req("POST", "transit/verify/" + self.key, {"batch_input": [
            {"input": None, "hmac": empty, "reference": None}]})
        self.assertEqual(r.status, 200, r.describe())
        self.assertEqual(r.json["data"]["batch_results"], [{"valid": True, "reference": ""}])

    def test_hmac_request_checks_come_before_the_items(self):
        """OpenBao's hmac handler checks the key, then the requested version, then the
        algorithm, once for the whole request, and only then reads the items: a bad
        key_version fails a batch as a whole (400), not item by item."""
        for ver, msg in ((9, "key version does not exist; latest key version is 1"),
                         (-1, "key version does not exist (cannot be negative)")):
            with self.subTest(key_version=ver):
                self.assertError(
                    self.req("POST", "transit/hmac/" + self.key,
                             {"batch_input": [{"input": b64("x")}], "key_version": ver}),
                    400, msg)
                # the version is checked before the input is looked for
                self.assertError(self.req("POST", "transit/hmac/" + self.key,
                                          {"key_version": ver}), 400, msg)
        self.assertError(self.req("POST", "transit/hmac/nope-%s/sha9" % self.key,
                                  {"input": b64("x")}), 400, "encryption key not found")
        # items that are not objects fail the request; numbers are their text, null is ""
        self.assertError(
            self.req("POST", "transit/hmac/" + self.key, {"batch_input": ["eA=="]}), 500,
            multierror("failed to parse batch input: decoding failed due to the following "
                       "error(s):\n\n'[0]' expected type "
                       "'transit.batchRequestHMACItem', got unconvertible type 'string'"))
        r = self.req("POST", "transit/hmac/" + self.key, {"batch_input": [
            {"input": None, "reference": 12}]})
        self.assertEqual(r.status, 200, r.describe())
        want = self.req("POST", "transit/hmac/" + self.key, {"input": ""}).json["data"]["hmac"]
        self.assertEqual(r.json["data"]["batch_results"], [{"hmac": want, "reference": "12"}])

    def test_signatures_refused_for_symmetric_keys(self):
        self.assertError(self.req("POST", "transit/sign/" + self.key, {"input": b64("x")}),
                         400, "key type aes256-gcm96 does not support signing")
        self.assertError(self.req("POST", "transit/verify/" + self.key,
                                  {"input": b64("x"), "signature": "vault:v1:AA=="}),
                         400, "key type aes256-gcm96 does not support verification")

    def test_hash_vectors(self):
        r = self.req("POST", "transit/hash", {"input": "aGVsbG8="})
        self.assertEqual(r.json["data"]["sum"],
                         "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
        r = self.req("POST", "transit/hash", {"input": "aGVsbG8=", "format": "base64"})
        self.assertEqual(r.json["data"]["sum"], "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=")
        r = self.req("POST", "transit/hash/sha3-256", {"input": ""})
        self.assertEqual(r.json["data"]["sum"],
                         "a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a")
        self.assertError(self.req("POST", "transit/hash", {}), 400, "input missing")
        self.assertError(self.req("POST", "transit/hash", {"input": "", "format": "raw",
                                                           "algorithm": "md5"}),
                         400, 'unsupported encoding format raw; must be "hex" or "base64"')
        self.assertError(self.req("POST", "transit/hash/md5", {"input": ""}), 400,
                         "unsupported algorithm md5")

    def test_random(self):
        r = self.req("POST", "transit/random", {})
        self.assertEqual(len(base64.b64decode(r.json["data"]["random_bytes"])), 32)
        r = self.req("POST", "transit/random/64", {"format": "hex"})
        self.assertEqual(len(bytes.fromhex(r.json["data"]["random_bytes"])), 64)
        r = self.req("POST", "transit/random/all/16", {})
        self.assertEqual(len(base64.b64decode(r.json["data"]["random_bytes"])), 16)
        self.assertEqual(self.req("POST", "transit/random", {"bytes": 131072}).status, 200)
        self.assertError(self.req("POST", "transit/random", {"bytes": 131073}), 400,
                         "'bytes' should be less than 131072")
        self.assertError(self.req("POST", "transit/random", {"bytes": 0}), 400,
                         "'bytes' cannot be less than 1")
        self.assertError(self.req("POST", "transit/random/hex", {}), 400,
                         'error parsing url-set byte count: strconv.Atoi: parsing "hex": '
                         'invalid syntax')
        self.assertError(self.req("POST", "transit/random/moon/8", {}), 400,
                         'unsupported entropy source "moon"; must be "platform" or "seal", '
                         'or "all"')

    def test_parameters_outside_openbaos_schema_are_ignored_with_a_warning(self):
        # path_hmac.go has no top-level "reference", verify (path_sign_verify.go) no
        # "key_version": both are unrecognized parameters, whatever their value
        ignored = "Endpoint ignored these unrecognized parameters: [%s]"
        r = self.req("POST", "transit/hmac/" + self.key, {"input": "eA==", "reference": "r"})
        self.assertEqual(r.status, 200, r.describe())
        self.assertEqual(r.json["warnings"], [ignored % "reference"])
        mac = r.json["data"]["hmac"]
        r = self.req("POST", "transit/verify/" + self.key,
                     {"input": "eA==", "hmac": mac, "key_version": "not a number"})
        self.assertEqual(r.status, 200, r.describe())
        self.assertIs(r.json["data"]["valid"], True)
        self.assertEqual(r.json["warnings"], [ignored % "key_version"])

    def test_random_source_and_algorithm_only_from_the_path(self):
        # OpenBao's patterns capture "source"/"urlbytes" and "urlalgorithm" empty when the path
        # has none, and a capture replaces the body field of its name (framework/backend.go)
        replaced = ("Endpoint replaced the value of these parameters with the values captured "
                    "from the endpoint's path: [%s]")
        r = self.req("POST", "transit/random", {"source": "moon"})
        self.assertEqual(r.status, 200, r.describe())
        self.assertEqual(r.json["warnings"], [replaced % "source"])
        r = self.req("POST", "transit/random", {"source": "seal", "urlbytes": "4"})
        self.assertEqual(r.status, 200, r.describe())
        self.assertEqual(len(base64.b64decode(r.json["data"]["random_bytes"])), 32)
        self.assertEqual(r.json["warnings"], [replaced % "source urlbytes"])
        r = self.req("POST", "transit/random/seal", {"source": "moon", "bytes": 4})
        self.assertEqual(r.status, 200, r.describe())
        self.assertEqual(len(base64.b64decode(r.json["data"]["random_bytes"])), 4)
        self.assertEqual(r.json["warnings"], [
            "no seal/entropy augmentation available, using platform entropy source",
            replaced % "source"])
        r = self.req("POST", "transit/hash", {"input": "eA==", "urlalgorithm": "sha2-512"})
        self.assertEqual(r.status, 200, r.describe())
        self.assertEqual(len(r.json["data"]["sum"]), 64)
        self.assertEqual(r.json["warnings"], [replaced % "urlalgorithm"])


if __name__ == "__main__":
    unittest.main()
