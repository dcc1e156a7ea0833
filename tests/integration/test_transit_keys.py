"""Transit key lifecycle: reference transit-api.md §2.1-2.2, §3.1-3.7, §3.17 (export
refusal) and §9 cases 3, 9, 10, 11, 17."""

import time
import unittest

from kmsd_harness import SYMMETRIC_TYPES, KEY_SIZE, KmsdTestCase, unb64

ALWAYS_FIELDS = {
    "name": str, "type": str, "derived": bool, "deletion_allowed": bool,
    "exportable": bool, "allow_plaintext_backup": bool, "latest_version": int,
    "min_decryption_version": int, "min_encryption_version": int,
    "min_available_version": int, "supports_encryption": bool,
    "supports_decryption": bool, "supports_signing": bool,
    "supports_derivation": bool, "auto_rotate_period": int, "imported_key": bool,
}
AUTO_ROTATE_MSG = "auto rotate period must be 0 to disable or at least an hour"
FIELD_MSG = 'Field validation failed: error converting input for field "auto_rotate_period": %s'


class KeyCreateTest(KmsdTestCase):
    """§3.1 create."""

    def test_create_every_type(self):
        for t in SYMMETRIC_TYPES:
            with self.subTest(type=t):
                name = self.uniq(t)
                r = self.req("POST", "transit/keys/" + name, {"type": t})
                self.assertStatus(r, 200)
                self.assertIsNone(r.warnings)
                d = r.data
                self.assertEqual(d["name"], name)
                self.assertEqual(d["type"], t)
                self.assertEqual(d["latest_version"], 1)
                self.assertIs(d["supports_encryption"], True)
                self.assertIs(d["supports_decryption"], True)
                self.assertIs(d["supports_signing"], False)
                self.assertIs(d["supports_derivation"], True)
                self.assertEqual(list(d["keys"].keys()), ["1"])
                self.assertEqual(self.read_key(name)["type"], t)

    def test_create_defaults(self):
        name = self.uniq()
        r = self.req("POST", "transit/keys/" + name)
        self.assertStatus(r, 200)
        d = r.data
        expected = {
            "name": name, "type": "aes256-gcm96", "derived": False,
            "deletion_allowed": False, "exportable": False, "allow_plaintext_backup": False,
            "latest_version": 1, "min_decryption_version": 1, "min_encryption_version": 0,
            "min_available_version": 0, "supports_encryption": True,
            "supports_decryption": True, "supports_signing": False,
            "supports_derivation": True, "auto_rotate_period": 0, "imported_key": False,
        }
        for k, v in expected.items():
            self.assertIn(k, d)
            self.assertEqual(d[k], v, k)
            self.assertIs(type(d[k]), type(v), k)
        for absent in ("kdf", "kdf_mode", "convergent_encryption",
                       "convergent_encryption_version", "key_size",
                       "imported_key_allow_rotation", "backup_info", "restore_info"):
            self.assertNotIn(absent, d)
        self.assertEqual(self.read_key(name), d)

    def test_create_already_exists(self):
        name, first = self.create_key(type="chacha20-poly1305")
        r = self.req("POST", "transit/keys/" + name,
                     {"type": "aes128-gcm96", "exportable": True, "derived": True})
        self.assertStatus(r, 200)
        self.assertWarnings(r, ["key %s already existed" % name])
        self.assertEqual(r.data["type"], "chacha20-poly1305")
        self.assertIs(r.data["exportable"], False)
        self.assertIs(r.data["derived"], False)
        self.assertEqual(r.data["latest_version"], 1)
        self.assertEqual(self.read_key(name), first)

    def test_create_unknown_type(self):
        for t in ("bogus", "AES256-GCM96", "aes-256-gcm", ""):
            with self.subTest(type=t):
                name = self.uniq()
                r = self.req("POST", "transit/keys/" + name, {"type": t})
                self.assertError(r, 400, "unknown key type %s" % t)
                self.assertStatus(self.req("GET", "transit/keys/" + name), 404)

    def test_convergent_requires_derived(self):
        name = self.uniq()
        r = self.req("POST", "transit/keys/" + name, {"convergent_encryption": True})
        self.assertError(r, 400, "convergent encryption requires derivation to be enabled")
        self.assertStatus(self.req("GET", "transit/keys/" + name), 404)
        r = self.req("POST", "transit/keys/" + name,
                     {"convergent_encryption": True, "derived": False})
        self.assertError(r, 400, "convergent encryption requires derivation to be enabled")

    def test_derived_and_convergent_fields(self):
        name, d = self.create_key(derived=True)
        self.assertIs(d["derived"], True)
        self.assertEqual(d["kdf"], "hkdf_sha256")
        self.assertIs(d["convergent_encryption"], False)
        self.assertNotIn("convergent_encryption_version", d)
        self.assertNotIn("kdf_mode", d)
        name, d = self.create_key(derived=True, convergent_encryption=True)
        self.assertIs(d["derived"], True)
        self.assertEqual(d["kdf"], "hkdf_sha256")
        self.assertIs(d["convergent_encryption"], True)
        self.assertEqual(d["convergent_encryption_version"], -1)

    def test_key_size_not_valid_for_symmetric(self):
        r = self.req("POST", "transit/keys/" + self.uniq(), {"key_size": 32})
        self.assertStatus(r, 400)
        self.assertEqual(len(r.errors or []), 1, r.describe())
        self.assertTrue(r.errors[0].startswith("key_size is not valid for algorithm "),
                        r.describe())

    def test_auto_rotate_period_rules(self):
        # §9 case 10
        for bad in ("30m", "59m59s", 3599, "3599", "1s", "-1h"):
            with self.subTest(period=bad):
                name = self.uniq()
                r = self.req("POST", "transit/keys/" + name, {"auto_rotate_period": bad})
                if bad == "-1h":
                    self.assertError(r, 400, FIELD_MSG % "cannot provide negative value '-3600'")
                else:
                    self.assertError(r, 400, AUTO_ROTATE_MSG)
                self.assertStatus(self.req("GET", "transit/keys/" + name), 404)
        for good, secs in (("1h", 3600), (3600, 3600), ("3600", 3600), ("2d", 172800),
                           ("90d", 7776000), ("1h30m", 5400), (0, 0), ("0", 0),
                           ("12h", 43200)):
            with self.subTest(period=good):
                name, d = self.create_key(auto_rotate_period=good)
                self.assertEqual(d["auto_rotate_period"], secs)
                self.assertIs(type(d["auto_rotate_period"]), int)
                self.assertEqual(self.read_key(name)["auto_rotate_period"], secs)

    def test_auto_rotate_period_parsed_as_openbao(self):
        """OpenBao reads auto_rotate_period with parseutil.ParseDurationSecond over the text of
        the value (a JSON number keeps its text): "" is 0, so it turns rotation off; "d" is only
        a whole-number suffix; a JSON fraction has no unit; a negative period is refused by the
        field type (TypeDurationSecond) before the handler runs."""
        name, d = self.create_key(auto_rotate_period="2d")
        self.assertEqual(d["auto_rotate_period"], 172800)
        r = self.req("POST", "transit/keys/%s/config" % name, {"auto_rotate_period": ""})
        self.assertOK(r)
        self.assertEqual(r.data["auto_rotate_period"], 0)
        self.assertEqual(self.read_key(name)["auto_rotate_period"], 0)
        name2, d = self.create_key(auto_rotate_period="")
        self.assertEqual(d["auto_rotate_period"], 0)
        self.configure(name, auto_rotate_period="1h")
        for bad, why in (
                ("-2h", "cannot provide negative value '-7200'"),
                (-3600, "cannot provide negative value '-3600'"),
                ("1.5d", 'strconv.ParseInt: parsing "1.5": invalid syntax'),
                ("1h2d", 'strconv.ParseInt: parsing "1h2": invalid syntax'),
                (3600.5, 'time: missing unit in duration "3600.5"'),
                ("2h30", 'time: missing unit in duration "2h30"'),
                ("2 h", 'time: unknown unit " h" in duration "2 h"'),
                ("1H", 'time: unknown unit "H" in duration "1H"'),
                (True, "could not parse duration from input")):
            with self.subTest(period=bad):
                r = self.req("POST", "transit/keys/%s/config" % name, {"auto_rotate_period": bad})
                self.assertError(r, 400, FIELD_MSG % why)
                r = self.req("POST", "transit/keys/" + self.uniq(), {"auto_rotate_period": bad})
                self.assertError(r, 400, FIELD_MSG % why)
        # nothing was changed by the refusals
        self.assertEqual(self.read_key(name)["auto_rotate_period"], 3600)

    def test_external_key_ref_without_external_type(self):
        """OpenBao refuses external_key_ref unless type is external-key (unknown in kmsd), and
        creates nothing; it is a known field, so no 'ignored parameters' warning."""
        name = self.uniq()
        r = self.req("POST", "transit/keys/" + name, {"external_key_ref": "ref-1"})
        self.assertError(r, 400, "must provide type=external-key to use external_key_ref")
        self.assertStatus(self.req("GET", "transit/keys/" + name), 404)
        r = self.req("POST", "transit/keys/" + name, {"external_key_ref": ""})
        self.assertOK(r)
        self.assertIsNone(r.warnings)
        r = self.req("POST", "transit/keys/" + self.uniq(),
                     {"type": "external-key", "external_key_ref": "ref-1"})
        self.assertError(r, 400, "unknown key type external-key")

    def test_auto_rotate_checked_before_type(self):
        r = self.req("POST", "transit/keys/" + self.uniq(),
                     {"type": "bogus", "auto_rotate_period": "30m"})
        self.assertError(r, 400, AUTO_ROTATE_MSG)
        r = self.req("POST", "transit/keys/" + self.uniq(),
                     {"type": "bogus", "convergent_encryption": True})
        self.assertError(r, 400, "convergent encryption requires derivation to be enabled")


class KeyReadListTest(KmsdTestCase):
    """§3.2 read, §3.3 list."""

    def check_field_types(self, d):
        for field, typ in ALWAYS_FIELDS.items():
            self.assertIn(field, d)
            self.assertIs(type(d[field]), typ, "%s=%r" % (field, d[field]))

    def test_read_all_fields_typed(self):
        for t in SYMMETRIC_TYPES:
            for flags in ({}, {"derived": True},
                          {"derived": True, "convergent_encryption": True}):
                with self.subTest(type=t, flags=flags):
                    name, _ = self.create_key(type=t, **flags)
                    d = self.read_key(name)
                    self.check_field_types(d)
                    self.assertEqual(d["type"], t)
                    self.assertIsInstance(d["keys"], dict)
                    if flags:
                        self.assertEqual(d["kdf"], "hkdf_sha256")
                        self.assertIs(type(d["convergent_encryption"]), bool)
                        if flags.get("convergent_encryption"):
                            self.assertEqual(d["convergent_encryption_version"], -1)
                            self.assertIs(type(d["convergent_encryption_version"]), int)

    def test_read_soft_deleted_field(self):
        # OpenBao lists `soft_deleted` among the always-present fields (§3.2).
        name, _ = self.create_key()
        d = self.read_key(name)
        self.assertIn("soft_deleted", d)
        self.assertIs(d["soft_deleted"], False)

    def test_keys_map_unix_seconds(self):
        before = int(time.time())
        name, _ = self.create_key()
        self.rotate(name, times=3)
        after = int(time.time())
        d = self.read_key(name)
        self.assertEqual(d["latest_version"], 4)
        self.assertEqual(sorted(d["keys"], key=int), ["1", "2", "3", "4"])
        for v, ts in d["keys"].items():
            self.assertIs(type(ts), int, v)
            self.assertGreaterEqual(ts, before - 2)
            self.assertLessEqual(ts, after + 2)
        self.assertLessEqual(d["keys"]["1"], d["keys"]["4"])
        # keys lists exactly min_decryption_version..latest_version
        d = self.configure(name, min_decryption_version=3)
        self.assertEqual(sorted(d["keys"], key=int), ["3", "4"])
        self.assertEqual(sorted(self.read_key(name)["keys"], key=int), ["3", "4"])
        d = self.configure(name, min_decryption_version=1)
        self.assertEqual(sorted(d["keys"], key=int), ["1", "2", "3", "4"])

    def test_read_with_context_query(self):
        # `context` is a read parameter (query string); bad base64 -> 400 (§3.2)
        name, _ = self.create_key(derived=True)
        r = self.req("GET", "transit/keys/%s?context=%s" % (name, "Y3R4"))
        self.assertStatus(r, 200)
        r = self.req("GET", "transit/keys/%s?context=%s" % (name, "%21%21%21"))
        self.assertError(r, 400, "failed to base64-decode context")

    def test_read_unknown_key_404(self):
        r = self.req("GET", "transit/keys/" + self.uniq("nokey"))
        self.assertStatus(r, 404)
        self.assertEqual(r.json, {"errors": []}, r.describe())

    def test_list_sorted_and_empty(self):
        mount = self.uniq("lk")
        self.assertStatus(self.req("POST", "sys/mounts/" + mount, {"type": "transit"}), 204)
        r = self.req("LIST", mount + "/keys")
        self.assertStatus(r, 404)
        self.assertEqual(r.json, {"errors": []}, r.describe())
        r = self.req("GET", mount + "/keys?list=true")
        self.assertStatus(r, 404)
        self.assertEqual(r.json, {"errors": []}, r.describe())
        names = ["zeta", "alpha", "Beta", "a.b", "a-b", "a_b", "m1", "m10", "m2"]
        for n in names:
            self.create_key(n, mount=mount)
        r = self.req("LIST", mount + "/keys")
        self.assertStatus(r, 200)
        self.assertEqual(r.data["keys"], sorted(names), r.describe())
        # deleting everything makes the list 404 again
        for n in names:
            self.configure(n, mount=mount, deletion_allowed=True)
            self.assertStatus(self.req("DELETE", "%s/keys/%s" % (mount, n)), 204)
        r = self.req("LIST", mount + "/keys")
        self.assertStatus(r, 404)
        self.assertEqual(r.json, {"errors": []}, r.describe())


class ListPagingTest(KmsdTestCase):
    """OpenBao LIST `after` (exclusive) and `limit` (<= 0 = all), §3.3."""

    def test_after_and_limit(self):
        mount = self.uniq("pg")
        self.assertStatus(self.req("POST", "sys/mounts/" + mount, {"type": "transit"}), 204)
        names = ["k1", "k2", "k3", "k4", "k5"]
        for n in names:
            self.create_key(n, mount=mount)
        for query, expected in (("after=k2", ["k3", "k4", "k5"]),
                                ("limit=2", ["k1", "k2"]),
                                ("after=k1&limit=3", ["k2", "k3", "k4"]),
                                ("after=k25&limit=1", ["k3"]),
                                ("limit=0", names), ("limit=-1", names),
                                ("after=a", names)):
            with self.subTest(query=query):
                r = self.req("LIST", "%s/keys?%s" % (mount, query))
                self.assertStatus(r, 200)
                self.assertEqual(r.data["keys"], expected)
                r = self.req("GET", "%s/keys?list=true&%s" % (mount, query))
                self.assertStatus(r, 200)
                self.assertEqual(r.data["keys"], expected)
        r = self.req("LIST", "%s/keys?after=k5" % mount)
        self.assertStatus(r, 404)
        self.assertEqual(r.json, {"errors": []})


class KeyDeleteTest(KmsdTestCase):
    """§3.4, §9 case 9."""

    def test_delete_not_allowed(self):
        name, _ = self.create_key()
        r = self.req("DELETE", "transit/keys/" + name)
        self.assertError(r, 400, "error deleting policy %s: deletion is not allowed for this key"
                         % name)
        self.assertStatus(self.req("GET", "transit/keys/" + name), 200)

    def test_delete_unknown(self):
        name = self.uniq("ghost")
        r = self.req("DELETE", "transit/keys/" + name)
        self.assertError(r, 400, "error deleting policy %s: could not delete key; not found"
                         % name)

    def test_delete_allowed(self):
        name, _ = self.create_key()
        ct = self.encrypt(name, b"gone")
        d = self.configure(name, deletion_allowed=True)
        self.assertIs(d["deletion_allowed"], True)
        r = self.req("DELETE", "transit/keys/" + name)
        self.assertStatus(r, 204)
        self.assertEqual(r.body, b"")
        r = self.req("GET", "transit/keys/" + name)
        self.assertStatus(r, 404)
        self.assertEqual(r.json, {"errors": []})
        r = self.req("POST", "transit/decrypt/" + name, {"ciphertext": ct})
        self.assertError(r, 400, "encryption key not found")
        # re-creating the name gives a brand-new key
        _, d = self.create_key(name)
        self.assertEqual(d["latest_version"], 1)
        r = self.req("POST", "transit/decrypt/" + name, {"ciphertext": ct})
        self.assertError(r, 400, "cipher: message authentication failed")

    def test_deletion_allowed_can_be_reset(self):
        name, _ = self.create_key()
        self.configure(name, deletion_allowed=True)
        d = self.configure(name, deletion_allowed=False)
        self.assertIs(d["deletion_allowed"], False)
        r = self.req("DELETE", "transit/keys/" + name)
        self.assertError(r, 400, "error deleting policy %s: deletion is not allowed for this key"
                         % name)


class KeyConfigTest(KmsdTestCase):
    """§3.5 config: every message."""

    def key_with_versions(self, n):
        name, _ = self.create_key()
        if n > 1:
            self.rotate(name, times=n - 1)
        return name

    def cfg(self, name, **params):
        return self.req("POST", "transit/keys/%s/config" % name, params)

    def test_config_returns_key_object(self):
        name = self.key_with_versions(2)
        r = self.cfg(name, deletion_allowed=True)
        self.assertStatus(r, 200)
        self.assertEqual(r.data["name"], name)
        self.assertIs(r.data["deletion_allowed"], True)
        self.assertEqual(r.data["latest_version"], 2)
        self.assertIsNone(r.warnings)

    def test_unknown_key(self):
        name = self.uniq("nokey")
        r = self.cfg(name, deletion_allowed=True)
        self.assertError(r, 400, "no existing key named %s could be found" % name)

    def test_min_decryption_errors(self):
        name = self.key_with_versions(2)
        self.assertError(self.cfg(name, min_decryption_version=-1), 400,
                         "min decryption version cannot be negative")
        self.assertError(self.cfg(name, min_decryption_version=5), 400,
                         "cannot set min decryption version of 5, latest key version is 2")
        self.assertError(self.cfg(name, min_decryption_version=3), 400,
                         "cannot set min decryption version of 3, latest key version is 2")
        self.assertEqual(self.read_key(name)["min_decryption_version"], 1)

    def test_min_encryption_errors(self):
        name = self.key_with_versions(2)
        self.assertError(self.cfg(name, min_encryption_version=-1), 400,
                         "min encryption version cannot be negative")
        self.assertError(self.cfg(name, min_encryption_version=3), 400,
                         "cannot set min encryption version of 3, latest key version is 2")
        self.assertEqual(self.read_key(name)["min_encryption_version"], 0)

    def test_encryption_below_decryption(self):
        name = self.key_with_versions(3)
        r = self.cfg(name, min_decryption_version=2, min_encryption_version=1)
        self.assertError(r, 400, "cannot set min encryption/decryption values; min encryption "
                                 "version of 1 must be greater than or equal to min decryption "
                                 "version of 2")
        # rolled back: nothing changed
        d = self.read_key(name)
        self.assertEqual(d["min_decryption_version"], 1)
        self.assertEqual(d["min_encryption_version"], 0)
        # min_encryption 0 means "no floor" and never conflicts
        d = self.configure(name, min_decryption_version=3, min_encryption_version=0)
        self.assertEqual(d["min_decryption_version"], 3)
        self.assertEqual(d["min_encryption_version"], 0)
        r = self.cfg(name, min_encryption_version=2)
        self.assertError(r, 400, "cannot set min encryption/decryption values; min encryption "
                                 "version of 2 must be greater than or equal to min decryption "
                                 "version of 3")

    def test_rollback_of_other_fields_on_error(self):
        name = self.key_with_versions(2)
        r = self.cfg(name, deletion_allowed=True, exportable=True, min_decryption_version=9)
        self.assertError(r, 400, "cannot set min decryption version of 9, latest key version is 2")
        r = self.cfg(name, min_decryption_version=2, deletion_allowed=True,
                     auto_rotate_period="10m")
        self.assertError(r, 400, AUTO_ROTATE_MSG)
        d = self.read_key(name)
        self.assertIs(d["deletion_allowed"], False)
        self.assertIs(d["exportable"], False)
        self.assertEqual(d["min_decryption_version"], 1)
        self.assertEqual(d["auto_rotate_period"], 0)

    def test_auto_rotate_period(self):
        name = self.key_with_versions(1)
        self.assertError(self.cfg(name, auto_rotate_period="30m"), 400, AUTO_ROTATE_MSG)
        self.assertError(self.cfg(name, auto_rotate_period=60), 400, AUTO_ROTATE_MSG)
        self.assertEqual(self.configure(name, auto_rotate_period="2d")["auto_rotate_period"],
                         172800)
        self.assertEqual(self.configure(name, auto_rotate_period="1h")["auto_rotate_period"],
                         3600)
        self.assertEqual(self.configure(name, auto_rotate_period=0)["auto_rotate_period"], 0)

    def test_min_decryption_zero_warning(self):
        name = self.key_with_versions(2)
        self.configure(name, min_decryption_version=2)
        for expect_min in (1, 1):  # changes 2 -> 1, then no change; warning both times
            r = self.cfg(name, min_decryption_version=0)
            self.assertStatus(r, 200)
            self.assertEqual(r.data["min_decryption_version"], expect_min)
            self.assertIsInstance(r.warnings, list, r.describe())
            self.assertEqual(len(r.warnings), 1, r.describe())
            self.assertTrue(r.warnings[0].endswith("forcing minimum to 1"), r.describe())
            self.assertIn(r.warnings[0], (
                "since Vault 0.3 (prior to the OpenBao fork), transit key numbering starts "
                "at 1; forcing minimum to 1",
                "since Vault 0.3, transit key numbering starts at 1; forcing minimum to 1"))

    def test_exportable_latches(self):
        name = self.key_with_versions(1)
        self.assertIs(self.configure(name, exportable=False)["exportable"], False)
        self.assertIs(self.configure(name, exportable=True)["exportable"], True)
        self.assertIs(self.configure(name, exportable=False)["exportable"], True)
        self.assertIs(self.read_key(name)["exportable"], True)
        self.assertIs(self.configure(name, allow_plaintext_backup=True)
                      ["allow_plaintext_backup"], True)
        self.assertIs(self.configure(name, allow_plaintext_backup=False)
                      ["allow_plaintext_backup"], True)

    def test_min_versions_against_min_available(self):
        name = self.key_with_versions(4)
        self.configure(name, min_encryption_version=3, min_decryption_version=3)
        r = self.req("POST", "transit/keys/%s/trim" % name, {"min_available_version": 3})
        self.assertStatus(r, 200)
        self.assertEqual(r.data["min_available_version"], 3)
        self.assertError(self.cfg(name, min_decryption_version=2, min_encryption_version=2), 400,
                         "min encryption version should not be less than min available version")
        self.assertError(self.cfg(name, min_decryption_version=2), 400,
                         "min decryption version should not be less then min available version")
        self.assertError(self.cfg(name, min_encryption_version=0), 400,
                         "min encryption version should not be less than min available version")
        d = self.read_key(name)
        self.assertEqual((d["min_decryption_version"], d["min_encryption_version"],
                          d["min_available_version"]), (3, 3, 3))
        # no change requested -> the min_available checks don't run
        d = self.configure(name, min_decryption_version=3)
        self.assertEqual(d["min_decryption_version"], 3)


class KeyRotateTest(KmsdTestCase):
    """§3.6 rotate."""

    def test_rotate_refuses_external_key_ref(self):
        # OpenBao's pathRotateWrite: refused before anything rotates (kmsd warned and rotated)
        name, _ = self.create_key()
        self.assertError(self.req("POST", "transit/keys/%s/rotate" % name,
                                  {"external_key_ref": "cfg:key"}), 400,
                         "cannot use external_key_ref on key of type aes256-gcm96")
        self.assertEqual(self.read_key(name)["latest_version"], 1)
        r = self.req("POST", "transit/keys/%s/rotate" % name, {"external_key_ref": ""})
        self.assertStatus(r, 200)
        self.assertEqual(r.data["latest_version"], 2)
        self.assertFalse(r.warnings, r.describe())

    def test_rotate(self):
        for t in SYMMETRIC_TYPES:
            with self.subTest(type=t):
                name, d0 = self.create_key(type=t)
                ct1 = self.encrypt(name, b"v1")
                r = self.req("POST", "transit/keys/%s/rotate" % name)
                self.assertStatus(r, 200)
                d = r.data
                self.assertEqual(d["name"], name)
                self.assertEqual(d["type"], t)
                self.assertEqual(d["latest_version"], 2)
                self.assertEqual(sorted(d["keys"], key=int), ["1", "2"])
                ct2 = self.encrypt(name, b"v2")
                self.assertTrue(ct2.startswith("vault:v2:"), ct2)
                self.assertEqual(self.decrypt(name, ct1), b"v1")
                self.assertEqual(self.decrypt(name, ct2), b"v2")
                d = self.rotate(name, times=3)
                self.assertEqual(d["latest_version"], 5)
                self.assertEqual(self.read_key(name)["latest_version"], 5)

    def test_rotate_unknown_key(self):
        r = self.req("POST", "transit/keys/%s/rotate" % self.uniq("nokey"))
        self.assertError(r, 400, "key not found")

    def test_rotate_keeps_flags(self):
        name, _ = self.create_key(derived=True, convergent_encryption=True, exportable=True,
                                  auto_rotate_period="1h")
        self.configure(name, deletion_allowed=True, min_encryption_version=1)
        d = self.rotate(name)
        self.assertEqual(d["latest_version"], 2)
        for k, v in (("derived", True), ("convergent_encryption", True), ("exportable", True),
                     ("deletion_allowed", True), ("auto_rotate_period", 3600),
                     ("min_encryption_version", 1), ("min_decryption_version", 1)):
            self.assertEqual(d[k], v, k)


class KeyTrimTest(KmsdTestCase):
    """§3.7 trim: every message, in the reference's order."""

    def trim(self, name, body):
        return self.req("POST", "transit/keys/%s/trim" % name, body)

    def key_with_versions(self, n):
        name, _ = self.create_key()
        if n > 1:
            self.rotate(name, times=n - 1)
        return name

    def test_unknown_key(self):
        self.assertError(self.trim(self.uniq("nokey"), {"min_available_version": 1}), 400,
                         "invalid key name")

    def test_missing_param(self):
        name = self.key_with_versions(2)
        self.assertError(self.trim(name, {}), 400, "missing min_available_version")

    def test_encryption_version_not_set(self):
        name = self.key_with_versions(3)
        self.configure(name, min_decryption_version=2)
        self.assertError(self.trim(name, {"min_available_version": 1}), 400,
                         "minimum available version cannot be set when minimum encryption "
                         "version is not set")
        # decrement is checked before "not set"
        self.assertError(self.trim(name, {"min_available_version": -1}), 400,
                         "minimum available version cannot be decremented")

    def test_greater_than_min_encryption(self):
        name = self.key_with_versions(3)
        self.configure(name, min_decryption_version=2, min_encryption_version=2)
        self.assertError(self.trim(name, {"min_available_version": 3}), 400,
                         "minimum available version cannot be greater than minmum encryption "
                         "version")

    def test_greater_than_min_decryption(self):
        name = self.key_with_versions(3)
        self.configure(name, min_decryption_version=2, min_encryption_version=3)
        self.assertError(self.trim(name, {"min_available_version": 3}), 400,
                         "minimum available version cannot be greater than minimum decryption "
                         "version")

    def test_negative_and_zero(self):
        name = self.key_with_versions(3)
        self.configure(name, min_decryption_version=2, min_encryption_version=2)
        # -1 < current min_available (0): "decremented" wins over "negative"
        self.assertError(self.trim(name, {"min_available_version": -1}), 400,
                         "minimum available version cannot be decremented")
        self.assertError(self.trim(name, {"min_available_version": 0}), 400,
                         "minimum available version should be positive")

    def test_trim_success_and_decrement(self):
        name = self.key_with_versions(3)
        ct1 = self.encrypt(name, b"one", key_version=1)
        ct2 = self.encrypt(name, b"two", key_version=2)
        self.configure(name, min_decryption_version=2, min_encryption_version=2)
        r = self.trim(name, {"min_available_version": 2})
        self.assertStatus(r, 200)
        d = r.data
        self.assertEqual(d["min_available_version"], 2)
        self.assertEqual(d["latest_version"], 3)
        self.assertEqual(sorted(d["keys"], key=int), ["2", "3"])
        # same value again is allowed, lower is not
        self.assertStatus(self.trim(name, {"min_available_version": 2}), 200)
        self.assertError(self.trim(name, {"min_available_version": 1}), 400,
                         "minimum available version cannot be decremented")
        # §9 case 3: lowering min_decryption below the trimmed floor fails
        self.assertError(self.req("POST", "transit/keys/%s/config" % name,
                                  {"min_decryption_version": 1}), 400,
                         "min decryption version should not be less then min available version")
        r = self.decrypt_resp(name, ct1)
        self.assertError(r, 400, "ciphertext or signature version is disallowed by policy (too old)")
        self.assertEqual(self.decrypt(name, ct2), b"two")
        self.assertEqual(self.read_key(name)["min_available_version"], 2)


class ExportTest(KmsdTestCase):
    """§3.17 export (refusal for non-exportable keys; §9 case 11)."""

    def test_export_refused_for_non_exportable(self):
        name, _ = self.create_key()
        for t in ("encryption-key", "hmac-key"):
            with self.subTest(type=t):
                for suffix in ("", "/latest", "/1"):
                    r = self.req("GET", "transit/export/%s/%s%s" % (t, name, suffix))
                    self.assertError(r, 400, "private key material is not exportable")

    def test_export_exportable(self):
        for t in SYMMETRIC_TYPES:
            with self.subTest(type=t):
                name, _ = self.create_key(type=t, exportable=True)
                self.rotate(name)
                r = self.req("GET", "transit/export/encryption-key/" + name)
                self.assertStatus(r, 200)
                self.assertEqual(r.data["name"], name)
                self.assertEqual(r.data["type"], t)
                self.assertEqual(sorted(r.data["keys"]), ["1", "2"])
                for v, k in r.data["keys"].items():
                    self.assertEqual(len(unb64(k)), KEY_SIZE[t])
                self.assertNotEqual(r.data["keys"]["1"], r.data["keys"]["2"])
                r = self.req("GET", "transit/export/encryption-key/%s/latest" % name)
                self.assertStatus(r, 200)
                self.assertEqual(list(r.data["keys"]), ["2"])
                r = self.req("GET", "transit/export/hmac-key/%s/1" % name)
                self.assertStatus(r, 200)
                self.assertEqual(list(r.data["keys"]), ["1"])
                self.assertEqual(len(unb64(r.data["keys"]["1"])), 32)

    def test_export_errors(self):
        name, _ = self.create_key(exportable=True)
        self.rotate(name)
        r = self.req("GET", "transit/export/bogus-key/" + name)
        self.assertError(r, 400, "invalid export type: bogus-key")
        r = self.req("GET", "transit/export/encryption-key/%s/x" % name)
        self.assertError(r, 400, "invalid key version")
        r = self.req("GET", "transit/export/encryption-key/%s/9" % name)
        self.assertError(r, 400, "version does not exist or cannot be found")
        self.configure(name, min_decryption_version=2)
        r = self.req("GET", "transit/export/encryption-key/%s/1" % name)
        self.assertError(r, 400, "version for export is below minimum decryption version")
        r = self.req("GET", "transit/export/encryption-key/" + self.uniq("nokey"))
        self.assertStatus(r, 404)


class NullValueTest(KmsdTestCase):
    """A JSON null is OpenBao's zero value of the field, set (mapstructure decodes nil to the
    zero and the framework's GetOk reports it present), not an absent field with its default
    (sdk/framework/field_data.go getPrimitive)."""

    def test_null_is_the_zero_value(self):
        r = self.req("POST", "transit/keys/" + self.uniq("n"), {"type": None})
        self.assertError(r, 400, "unknown key type ")
        r = self.req("POST", "transit/random", {"bytes": None})
        self.assertError(r, 400, "'bytes' cannot be less than 1")
        r = self.req("POST", "transit/random", {"format": None})
        self.assertError(r, 400, 'unsupported encoding format ""; must be "hex" or "base64"')
        name = self.uniq("n")
        self.assertStatus(self.req("POST", "transit/keys/" + name, {}), 200)
        r = self.req("POST", "transit/datakey/wrapped/" + name, {"bits": None})
        self.assertError(r, 400, "invalid bit length")
        # GetOk("plaintext") is set: the empty plaintext is encrypted
        r = self.req("POST", "transit/encrypt/" + name, {"plaintext": None})
        self.assertStatus(r, 200)
        r = self.req("POST", "transit/decrypt/" + name, {"ciphertext": r.data["ciphertext"]})
        self.assertStatus(r, 200)
        self.assertEqual(r.data["plaintext"], "")
        r = self.req("POST", "transit/hmac/" + name, {"input": None})
        self.assertStatus(r, 200)
        self.assertTrue(r.data["hmac"].startswith("vault:v1:"), r.describe())
        # min_decryption_version present as 0: forced to 1 with OpenBao's warning
        for _ in range(2):
            self.assertStatus(self.req("POST", "transit/keys/%s/rotate" % name), 200)
        self.configure(name, min_decryption_version=3)
        r = self.req("POST", "transit/keys/%s/config" % name, {"min_decryption_version": None})
        self.assertStatus(r, 200)
        self.assertEqual(r.data["min_decryption_version"], 1)
        self.assertEqual(r.warnings, ["since Vault 0.3 (prior to the OpenBao fork), transit key "
                                      "numbering starts at 1; forcing minimum to 1"])
        # a null duration is absent (getPrimitive's nil case), and so is a null batch_input
        r = self.req("POST", "transit/keys/%s/config" % name, {"auto_rotate_period": None})
        self.assertStatus(r, 200)
        self.assertEqual(r.data["auto_rotate_period"], 0)
        r = self.req("POST", "transit/encrypt/" + name, {"plaintext": "eA==",
                                                          "batch_input": None})
        self.assertStatus(r, 200)
        self.assertIn("ciphertext", r.data)
        # a null body field beside a path capture is not "replaced" (raw[k] != nil)
        r = self.req("POST", "transit/keys/%s/rotate" % name, {"name": None})
        self.assertStatus(r, 200)
        self.assertIsNone(r.warnings)


if __name__ == "__main__":
    unittest.main()
