"""kmsctl items of issue 11 against a real kmsd: terminal-safe output (8), errors that name the
object and the next step (13), strict manifests and strict server config (15), `-o yaml` that
applies back (16), one `audit list --key` for a KMSKey and its Transit key and a `keys create`
without a 404 probe (17), `kmsctl help <command>`, man pages and shell completion (19).
"""

import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import yaml

from kmsd_harness import KmsdServer
from kmsctl_helpers import (DOC_KMSKEY_YAML, KMSCTL_BIN, ORG, PROJECT, KmsctlMixin,
                            KmsctlTestCase)
from test_kmsctl_signals import wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.normpath(os.path.join(HERE, "..", ".."))
BASH_COMPLETION = os.path.join(SRC, "cli", "completion", "kmsctl.bash")
ZSH_COMPLETION = os.path.join(SRC, "cli", "completion", "_kmsctl")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u0080-\u009f\u202a-\u202e\u2066-\u2069]")


def manifest(name, extra_spec="", extra_meta="", extra_top=""):
    return ("apiVersion: security.kube-dc.com/v1alpha1\nkind: KMSKey\n"
            "metadata:\n  name: %s\n  namespace: %s\n%s"
            "spec:\n  purpose: application\n  algorithm: aes256-gcm96\n"
            "  rotation:\n    enabled: true\n    interval: 90d\n  deletionPolicy: retain\n%s%s"
            % (name, PROJECT, extra_meta, extra_spec, extra_top)).encode()


class TerminalSafetyTest(KmsctlTestCase):
    """Item 8: control characters from a claim, a manifest or the server never reach the
    terminal raw; JSON stays exact."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.work = tempfile.mkdtemp(prefix="kmsctl-esc-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.work, ignore_errors=True)
        super().tearDownClass()

    def forged_log(self):
        evil = "alice\x1b[2K\r2026-01-01T00:00:00Z  root  delete  prod-key\n\u202eevil\x07"
        line = {"type": "response", "time": "2026-04-15T02:00:11.5Z", "subject": evil,
                "op": "encrypt", "resource": "KMSKey", "key": "k\x1b]0;title\x07",
                "status": 200, "request": {"id": "r1", "namespace": {"path": "my-org/"},
                                           "operation": "update", "path": "transit/encrypt/k",
                                           "remote_address": "127.0.0.1"}}
        path = os.path.join(self.work, "audit.log")
        with open(path, "w") as f:
            f.write(json.dumps(line) + "\n")
        return path, evil

    def test_audit_list_table_escapes_subjects(self):
        path, evil = self.forged_log()
        r = self.ok("audit", "list", "--file", path, conn=False)
        self.assertIsNone(CONTROL.search(r.text), r.text)
        lines = r.text.strip("\n").split("\n")
        self.assertEqual(len(lines), 2, r.text)  # the header and exactly one row
        self.assertIn("alice\\x1b[2K\\x0d2026", lines[1])
        self.assertIn("\\x0a\\u202eevil\\x07", lines[1])
        self.assertIn("k\\x1b]0;title\\x07", lines[1])

    def test_audit_list_json_keeps_exact_strings(self):
        path, evil = self.forged_log()
        r = self.ok("audit", "list", "--file", path, "-o", "json", conn=False)
        ev = json.loads(r.out)
        self.assertEqual(ev[0]["subject"], evil)

    def test_server_error_echoing_input_is_escaped(self):
        doc = manifest("esc-key").replace(b"purpose: application",
                                          b'purpose: "x\\e[31mred\\r\\nError: fake"')
        r = self.fails(1, "apply", "-f", "-", stdin=doc)
        self.assertIsNone(CONTROL.search(r.errtext), r.errtext)
        self.assertIn("\\x1b[31mred\\x0d\\x0aError: fake", r.errtext)
        self.assertEqual(r.errtext.count("\n"), 1, r.errtext)

    def test_unknown_command_and_option_are_escaped(self):
        r = self.fails(2, "bad\x1b[31mcmd", conn=False)
        self.assertIsNone(CONTROL.search(r.errtext), r.errtext)
        self.assertIn("bad\\x1b[31mcmd", r.errtext)
        r = self.fails(2, "keys", "list", "--x\x1bz")
        self.assertIsNone(CONTROL.search(r.errtext), r.errtext)

    def test_yaml_and_json_outputs_stay_valid(self):
        self.ok("keys", "create", "esc-fmt")
        y = yaml.safe_load(self.ok("keys", "get", "esc-fmt", "-o", "yaml").out)
        j = json.loads(self.ok("keys", "get", "esc-fmt", "-o", "json").out)
        self.assertEqual(y, j)


class OutputAndLimitsTest(KmsctlTestCase):
    """F7: -o yaml for audit list, -o json|yaml for keys delete, the direct-mode size error
    past kmsctl's read cap."""

    def test_audit_list_yaml_is_the_json_events(self):
        work = tempfile.mkdtemp(prefix="kmsctl-audit-yaml-")
        self.addCleanup(shutil.rmtree, work, True)
        line = {"type": "response", "time": "2026-04-15T02:00:11.5Z", "subject": "a\x1b[2Kb",
                "op": "encrypt", "resource": "KMSKey", "key": "true", "key_version": 3,
                "status": 200, "request": {"id": "r1", "namespace": {"path": "my-org/"},
                                           "operation": "update", "path": "transit/encrypt/k",
                                           "remote_address": "127.0.0.1"}}
        path = os.path.join(work, "audit.log")
        with open(path, "w") as f:
            f.write(json.dumps(line) + "\n")
        as_json = json.loads(self.ok("audit", "list", "--file", path, "-o", "json",
                                     conn=False).out)
        r = self.ok("audit", "list", "--file", path, "-o", "yaml", conn=False)
        self.assertEqual(yaml.safe_load(r.out), as_json)
        self.assertEqual(as_json[0]["key"], "true")  # a string, quoted in the YAML
        r = self.fails(2, "audit", "list", "--file", path, "-o", "xml", conn=False)
        self.assertIn("-o is table, json or yaml", r.errtext)
        self.assertIn("table (default), json or yaml",
                      self.ok("audit", "list", "--help", conn=False).text)

    def test_keys_delete_prints_the_object(self):
        for fmt, load in (("json", json.loads), ("yaml", yaml.safe_load)):
            name = "del-" + fmt
            self.ok("keys", "create", name)
            want = load(self.ok("keys", "get", name, "-o", fmt).out)
            r = self.ok("keys", "delete", name, "--yes", "-o", fmt)
            self.assertEqual(load(r.out), want)
            self.fails(1, "keys", "describe", name)
        # a countdown: the server's answer, deletionTimestamp set
        self.ok("keys", "create", "del-sched", "--deletion-policy", "schedule")
        r = self.ok("keys", "delete", "del-sched", "--yes", "-o", "json")
        obj = json.loads(r.out)
        self.assertEqual(obj["metadata"]["name"], "del-sched")
        self.assertIn("deletionTimestamp", obj["metadata"])
        r = self.fails(1, "keys", "delete", "del-none", "--yes", "-o", "json")
        self.assertEqual(r.out, b"")
        self.assertIn("KMSKey del-none not found in project", r.errtext)

    def test_direct_mode_size_error_past_the_read_cap(self):
        self.ok("keys", "create", "huge")
        work = tempfile.mkdtemp(prefix="kmsctl-huge-")
        self.addCleanup(shutil.rmtree, work, True)
        big = os.path.join(work, "big.bin")
        with open(big, "wb") as f:
            f.truncate(40 * 1024 * 1024)
        r = self.fails(1, "encrypt", "huge", "--plaintext-file", big)
        self.assertIn("Error: plaintext exceeds the 64 KiB limit for direct encryption: %s is "
                      "40.0 MiB" % big, r.errtext)
        self.assertIn("Hint: use `kmsctl envelope encrypt huge --in %s --out %s.enc`"
                      % (big, big), r.errtext)
        self.assertNotIn("33554432", r.errtext)
        with open(big, "rb") as f:
            r = self.kmsctl("encrypt", "huge", "--plaintext-file", "-", stdin=f.read())
        self.assertEqual(r.rc, 1, r)
        self.assertIn("64 KiB", r.errtext)
        self.assertIn("stdin holds more than the 32.0 MiB", r.errtext)
        self.assertIn("kmsctl envelope encrypt huge --in - --out FILE.enc", r.errtext)
        # the server's own 413 just past 64 KiB is unchanged
        small = os.path.join(work, "small.bin")
        with open(small, "wb") as f:
            f.write(b"x" * (64 * 1024 + 1))
        r = self.fails(1, "encrypt", "huge", "--plaintext-file", small)
        self.assertIn("plaintext exceeds the 64 KiB limit", r.errtext)
        self.assertIn("kmsctl envelope encrypt huge", r.errtext)


class KubectlKindNamesTest(KmsctlTestCase):
    """`kmsctl get` and `kmsctl patch` take the KMSKey kind as kubectl resolves it: the CRD's
    short name `kkey` (deploy/kubernetes/crd-kmskey.yaml; docs/operations.md shows `kubectl
    get kkey -n my-project`), the group and version forms, in any case (`kubectl get KMSKey`).
    `kkey` and `KMSKey` were refused with exit 2."""

    def test_get_and_patch_take_every_name_kubectl_takes(self):
        self.ok("keys", "create", "kinds")
        want = self.ok("keys", "get", "kinds", "-o", "yaml").out
        listed = self.ok("keys", "list", "-o", "json").out
        for kind in ("kkey", "KMSKey", "KMSKeys", "Kkey", "kmskeys.security.kube-dc.com",
                     "kmskey.v1alpha1.security.kube-dc.com", "KMSKey.security.kube-dc.com"):
            with self.subTest(kind=kind):
                self.assertEqual(self.ok("get", kind, "kinds", "-o", "yaml").out, want)
                self.assertEqual(self.ok("get", kind + "/kinds", "-o", "yaml").out, want)
                self.assertEqual(self.ok("get", kind, "-o", "json").out, listed)
        r = self.ok("patch", "kkey", "kinds", "-p",
                    '{"spec":{"rotation":{"enabled":true,"interval":"30d"}}}')
        self.assertEqual(r.text, "kmskey.security.kube-dc.com/kinds patched\n")
        r = self.ok("patch", "KMSKey/kinds", "-p", '{"spec":{"rotation":null}}')
        self.assertEqual(r.text, "kmskey.security.kube-dc.com/kinds patched\n")
        # other kinds, and near misses, stay refused
        for kind in ("kkeys", "secret", "kmskey.example.com", "kmskeyx", "kmskey.", "k"):
            with self.subTest(refused=kind):
                r = self.fails(2, "get", kind, "kinds")
                self.assertIn("kmsctl get reads KMSKeys", r.errtext)
                self.fails(2, "patch", kind, "kinds", "-p", '{"spec":{}}')


class ErrorMessagesTest(KmsctlTestCase):
    """Item 13: errors say which organization/project/key and what to do next."""

    def test_unknown_organization(self):
        r = self.fails(1, "keys", "list", "-n", "no-such-org")
        self.assertIn('organization "no-such-org" not found', r.errtext)
        self.assertIn("-n/--namespace or KMS_NAMESPACE", r.errtext)
        self.assertIn("sys/namespaces/no-such-org", r.errtext)

    def test_missing_key_names_project_and_org_and_fix(self):
        r = self.fails(1, "keys", "describe", "ghost")
        self.assertIn("KMSKey ghost not found in project %s of organization %s"
                      % (PROJECT, ORG), r.errtext)
        self.assertIn("kmsctl keys create ghost", r.errtext)
        self.assertIn("kmsctl keys list", r.errtext)

    def test_missing_key_same_message_for_every_verb(self):
        # F5: the verbs that went through the server's own 404 text (the actions) or the raw
        # fallback (patch) say what describe says, Hint included
        want = self.fails(1, "keys", "describe", "ghost").err
        self.assertIn(b"Hint: ", want)
        for args in (("keys", "rotate", "ghost"), ("keys", "set-min-decryption-version",
                                                   "ghost", "2"),
                     ("keys", "schedule-delete", "ghost"), ("keys", "cancel-delete", "ghost"),
                     ("keys", "get", "ghost"), ("get", "kmskey", "ghost", "-o", "yaml"),
                     ("keys", "delete", "ghost", "--yes"),
                     ("encrypt", "ghost", "--plaintext", "x"),
                     ("patch", "kmskey", "ghost", "-p", '{"spec":{"rotation":"1h"}}')):
            r = self.fails(1, *args)
            self.assertEqual(r.err, want, args)

    def test_invalid_names_state_the_whole_rule_as_the_server_does(self):
        # F6: "trail-" is made of the allowed characters; the message must say why it is not a
        # name, and the server's 400 for the same name says the same (it was a bare 404)
        rule = ("must be a DNS-1123 label: lower-case letters, digits and '-', starting and "
                "ending with a letter or digit, at most 63 characters")
        for name in ("trail-", "-lead", "a_b", "App", "n" * 64):
            r = self.fails(2, "keys", "create", "--", name)
            self.assertIn('Error: invalid KMSKey name "%s": %s\n' % (name, rule), r.errtext)
            for path in ("kms/keys/%s/%s" % (PROJECT, name),
                         "kms/keys/%s/%s/rotate" % (PROJECT, name)):
                resp = self.server.request("POST", path, {}, namespace=ORG)
                self.assertEqual(resp.status, 400, resp.describe())
                self.assertEqual(resp.errors, ['invalid KMSKey name "%s": %s' % (name, rule)])
        r = self.fails(2, "keys", "list", "--project", "trail-")
        self.assertIn('Error: invalid project name "trail-": %s\n' % rule, r.errtext)
        resp = self.server.request("POST", "kms/keys/trail-/k", {}, namespace=ORG)
        self.assertEqual(resp.errors, ['invalid project name "trail-": %s' % rule])
        r = self.fails(2, "orgs", "create", "trail-")
        self.assertIn('Error: invalid organization name "trail-": %s\n' % rule, r.errtext)
        # a dot segment is still no path of kmsd's (docs/api.md: 404 unsupported path)
        for path in ("kms/keys/%s/../rotate" % PROJECT, "kms/keys/%s/./rotate" % PROJECT):
            resp = self.server.request("POST", path, {}, namespace=ORG)
            self.assertEqual(resp.status, 404, resp.describe())

    def test_permission_denied_names_path_and_org(self):
        r = self.fails(1, "keys", "list", token="not-a-token")
        self.assertIn("permission denied", r.errtext)
        self.assertIn("kms/keys/%s" % PROJECT, r.errtext)
        self.assertIn('organization "%s"' % ORG, r.errtext)
        self.assertIn("kmsctl login", r.errtext)

    def test_unreachable_server(self):
        r = self.kmsctl("keys", "list", conn=False,
                        env={"KMS_NAMESPACE": ORG, "KMS_PROJECT": PROJECT,
                             "KMS_ADDR": "http://127.0.0.1:1", "KMS_TOKEN": "x"})
        self.assertEqual(r.rc, 1, r)
        self.assertIn("http://127.0.0.1:1", r.errtext)
        self.assertIn("KMS_ADDR", r.errtext)

    def transit_only_token(self, key):
        # docs/auth.md's token not bound to a project: exact Transit key names, no KMSKey read
        transit = "%s-%s-%s" % (ORG, PROJECT, key)
        rules = "".join('path "transit/%s/%s" { capabilities = ["update"] }\n' % (op, transit)
                        for op in ("encrypt", "decrypt"))
        r = self.server.request("PUT", "sys/policies/acl/enc-only-" + key, {"policy": rules},
                                namespace=ORG)
        self.assertIn(r.status, (200, 204), r.describe())
        r = self.server.request("POST", "auth/token/create",
                                {"policies": ["enc-only-" + key], "no_default_policy": True},
                                namespace=ORG)
        self.assertEqual(r.status, 200, r.describe())
        tok = r.json["auth"]["client_token"]
        r = self.server.request("GET", "kms/keys/%s/%s" % (PROJECT, key), namespace=ORG,
                                token=tok)
        self.assertEqual(r.status, 403, r.describe())
        return tok

    def test_kmskey_check_skipped_silently_for_a_transit_only_token(self):
        # F2: the 403 of the KMSKey check is not reported; only Transit's own answer is
        self.ok("keys", "create", "enc-only")
        tok = self.transit_only_token("enc-only")
        r = self.ok("encrypt", "enc-only", "--plaintext", "hello", token=tok)
        self.assertTrue(r.out.startswith(b"vault:v1:"), r)
        self.assertEqual(r.err, b"", r)
        ct = r.out.strip()
        r = self.ok("decrypt", "enc-only", "--ciphertext", ct.decode(), token=tok)
        self.assertEqual(r.out, b"hello\n", r)
        src = os.path.join(self.home, "enc-only.bin")
        with open(src, "wb") as f:
            f.write(b"x" * 1000)
        r = self.ok("envelope", "encrypt", "enc-only", "--in", src, "--out", src + ".enc",
                    token=tok)
        self.assertEqual(r.err, b"", r)
        # a refusal of the encrypt itself is one error, Transit's
        r = self.fails(1, "encrypt", "app-other", "--plaintext", "hello", token=tok)
        self.assertEqual(r.errtext.count("Error:"), 1, r)
        self.assertIn("transit/encrypt/%s-%s-app-other" % (ORG, PROJECT), r.errtext)

    def test_no_token_at_all_is_one_usage_error(self):
        # F4: every command that needs a token says so the same way (exit 2), as orgs does,
        # instead of a "permission denied ... invalid, expired" from a request sent without one
        empty = tempfile.mkdtemp(prefix="kmsctl-no-token-")
        self.addCleanup(shutil.rmtree, empty, True)
        src = os.path.join(empty, "in.bin")
        with open(src, "wb") as f:
            f.write(b"data")
        env = {"HOME": empty, "KMS_ADDR": self.server.addr, "KMS_NAMESPACE": ORG,
               "KMS_PROJECT": PROJECT}
        commands = [("keys", "list"), ("keys", "describe", "k"), ("keys", "create", "k"),
                    ("keys", "rotate", "k"), ("keys", "set-min-decryption-version", "k", "2"),
                    ("keys", "schedule-delete", "k"), ("keys", "cancel-delete", "k"),
                    ("keys", "delete", "k", "--yes"), ("get", "kmskey", "k"),
                    ("encrypt", "k", "--plaintext", "x"),
                    ("decrypt", "k", "--ciphertext", "vault:v1:AAAA"),
                    ("envelope", "encrypt", "k", "--in", src, "--out", src + ".enc"),
                    ("envelope", "decrypt", "k", "--in", src, "--out", src + ".dec"),
                    ("apply", "-f", "-"), ("patch", "kmskey", "k", "-p", "{}"),
                    ("orgs", "list"), ("audit", "list")]
        for args in commands:
            r = self.fails(2, *args, conn=False, env=env, stdin=manifest("k"))
            self.assertIn("Error: no token: give --token, set KMS_TOKEN (or VAULT_TOKEN), or "
                          "run `kmsctl login`", r.errtext, args)
            self.assertNotIn("permission denied", r.errtext, args)
            self.assertNotIn("invalid, expired", r.errtext, args)

    def test_no_transit_engine_yet(self):
        org = "empty-org"
        resp = self.server.request("POST", "sys/namespaces/" + org, {})
        self.assertEqual(resp.status, 200, resp.describe())
        r = self.fails(1, "decrypt", "k", "--ciphertext", "vault:v1:AAAA", "-n", org)
        self.assertIn('organization "%s" has no transit/ engine' % org, r.errtext)
        self.assertIn("kmsctl keys create", r.errtext)


class BreakGlassTest(KmsctlTestCase):
    """A root token changes a KMSKey's Transit key behind it: describe and the status say so."""

    def test_describe_names_latches_root_turned_on(self):
        self.ok("keys", "create", "guarded")
        r = self.ok("keys", "describe", "guarded")
        self.assertNotIn("Protected", r.text)
        resp = self.server.request("POST", "transit/keys/%s-%s-guarded/config" % (ORG, PROJECT),
                                   {"exportable": True}, namespace=ORG)
        self.assertEqual(resp.status, 200, resp.describe())
        r = self.ok("keys", "describe", "guarded")
        self.assertIn("  Protected:           False (the Transit key was changed outside its "
                      "KMSKey: it is exportable)\n", r.text)
        self.assertNotIn("Ready:", r.text)  # the key still works
        st = yaml.safe_load(self.ok("get", "kmskey", "guarded", "-o", "yaml").out)["status"]
        prot = [c for c in st["conditions"] if c["type"] == "Protected"]
        self.assertEqual([(c["status"], c["reason"]) for c in prot],
                         [("False", "ChangedOutsideKMSKey")])


class StrictManifestTest(KmsctlTestCase):
    """Items 15 and 16: unknown fields are refused and named; -o yaml/json applies back."""

    def assert_absent(self, name):
        r = self.fails(1, "keys", "describe", name)
        self.assertIn("not found", r.errtext)

    def test_misspelt_spec_field_is_refused(self):
        doc = manifest("typo-key").replace(b"  rotation:", b"  rotaton:")
        r = self.fails(2, "apply", "-f", "-", stdin=doc)
        self.assertIn('strict decoding error: unknown field "spec.rotaton"', r.errtext)
        self.assert_absent("typo-key")

    def test_unknown_fields_at_every_level_are_named(self):
        doc = manifest("typo-all", extra_spec="  rotation2: x\n",
                       extra_meta="  lables:\n    a: b\n", extra_top="sepc: {}\n")
        doc = doc.replace(b"    interval: 90d", b"    interval: 90d\n    intreval: 30d")
        r = self.fails(2, "apply", "-f", "-", stdin=doc)
        for f in ("metadata.lables", "spec.rotation.intreval", "spec.rotation2", "sepc"):
            self.assertIn('unknown field "%s"' % f, r.errtext)
        self.assert_absent("typo-all")

    def test_a_refused_later_document_leaves_the_earlier_ones_unsent(self):
        # docs/cli.md: a manifest that decoding refuses (an unknown field, another kind, a
        # metadata.namespace against --project) is refused before anything is sent, exit 2;
        # with several documents (one file or several -f) the earlier ones were applied first
        pod = b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n"
        other_ns = manifest("whole-4").replace(b"namespace: %s" % PROJECT.encode(),
                                               b"namespace: other")
        self.assertNotEqual(other_ns, manifest("whole-4"))
        for i, (doc, want) in enumerate((
                (manifest("whole-2").replace(b"  rotation:", b"  rotaton:"),
                 'document 2 (KMSKey whole-2): strict decoding error: unknown field '
                 '"spec.rotaton"'),
                (pod, "document 2: kmsctl applies security.kube-dc.com/v1alpha1 KMSKey "
                      "objects only (got v1 Pod)"),
                (other_ns, 'metadata.namespace "other" is not project %s' % PROJECT))):
            first = "whole-first-%d" % i
            r = self.fails(2, "apply", "-f", "-", "--project", PROJECT,
                           stdin=manifest(first) + b"---\n" + doc)
            self.assertIn(want, r.errtext)
            self.assertEqual(r.out, b"")
            self.assert_absent(first)
        # the same across files: -f good.yaml -f bad.yaml sends neither
        bad = os.path.join(self.home, "bad.yaml")
        with open(bad, "wb") as f:
            f.write(pod)
        r = self.fails(2, "apply", "-f", "-", "-f", bad, stdin=manifest("whole-files"))
        self.assertIn("document 2: kmsctl applies", r.errtext)
        self.assert_absent("whole-files")
        # a refusal by the server is not decoding: the documents before it stay applied
        r = self.fails(1, "apply", "-f", "-", stdin=manifest("whole-ok") + b"---\n" +
                       manifest("whole-bad").replace(b"purpose: application", b"purpose: x") +
                       b"---\n" + manifest("whole-after"))
        self.assertIn("kmskey.security.kube-dc.com/whole-ok created", r.text)
        self.assertIn('spec.purpose: Unsupported value: "x"', r.errtext)
        # and which document it was, since the server's error names none
        self.assertIn("Hint: stopped at document 2 of 3 (KMSKey whole-bad): the 1 before it "
                      "were applied, the 1 after it were not sent", r.errtext)
        self.assert_absent("whole-after")

    def test_unreadable_file_fails_as_for_encrypt(self):
        # a file that cannot be read is a failure (exit 1), as for `encrypt --plaintext-file` and
        # `login --jwt-file`; a manifest that is not valid YAML is a usage error (exit 2)
        missing = os.path.join(tempfile.gettempdir(), "kmsctl-no-such-%d.yaml" % os.getpid())
        for args in (("apply", "-f", missing),
                     ("apply", "-f", "-", "-f", missing),
                     ("patch", "kmskey", "x", "--patch-file", missing),
                     ("encrypt", "x", "--plaintext-file", missing)):
            r = self.fails(1, *args, stdin=manifest("readable-first"))
            self.assertIn("Error: cannot open %s: No such file or directory" % missing,
                          r.errtext, args)
        self.assert_absent("readable-first")
        r = self.fails(2, "apply", "-f", "-", stdin=b"spec: [unclosed\n")
        self.assertIn("stdin", r.errtext)

    def test_server_warns_of_unknown_rotation_field(self):
        # the raw API (curl, hvac) is not strict; it drops an unknown field with Kubernetes'
        # Warn-mode warning, in rotation too: "enable" (for "enabled") left rotation off and
        # said nothing
        r = self.server.request("POST", "kms/keys/%s/rot-typo" % PROJECT,
                                {"spec": {"rotation": {"enable": True, "interval": "90d"}}},
                                namespace=ORG)
        self.assertEqual(r.status, 200, r.describe())
        self.assertIn('unknown field "spec.rotation.enable"', r.json.get("warnings") or [])
        self.assertEqual(r.json["data"]["spec"]["rotation"], {"enabled": False,
                                                              "interval": "90d"})

    def test_object_meta_fields_are_accepted(self):
        doc = manifest("meta-ok", extra_meta="  labels:\n    team: a\n  annotations:\n"
                                             "    note: b\n")
        r = self.ok("apply", "-f", "-", stdin=doc)
        self.assertEqual(r.text, "kmskey.security.kube-dc.com/meta-ok created\n")

    def test_get_yaml_applies_back(self):
        self.ok("keys", "create", "rt-key", "--rotation=90d")
        out = self.ok("keys", "get", "rt-key", "-o", "yaml").out
        obj = yaml.safe_load(out)
        self.assertEqual(set(obj), {"apiVersion", "kind", "metadata", "spec", "status"})
        self.assertLessEqual(set(obj["metadata"]),
                             {"name", "namespace", "uid", "creationTimestamp", "generation",
                              "resourceVersion"})
        # made by `keys create`, never applied: as `kubectl get -o yaml | kubectl apply -f -`
        # on an object made by `kubectl create`, the first apply records what it gave (the
        # object changes: "configured", its spec and generation do not); the next is a no-op
        r = self.ok("apply", "-f", "-", stdin=out)
        self.assertEqual(r.text, "kmskey.security.kube-dc.com/rt-key configured\n")
        self.assertEqual(yaml.safe_load(self.ok("keys", "get", "rt-key", "-o", "yaml").out)
                         ["metadata"]["generation"], obj["metadata"]["generation"])
        r = self.ok("apply", "-f", "-", stdin=out)
        self.assertEqual(r.text, "kmskey.security.kube-dc.com/rt-key unchanged\n")
        r = self.ok("apply", "-f", "-", stdin=out.replace(b"interval: 90d", b"interval: 30d"))
        self.assertEqual(r.text, "kmskey.security.kube-dc.com/rt-key configured\n")
        out = self.ok("keys", "get", "rt-key", "-o", "json").out
        r = self.ok("apply", "-f", "-", stdin=out)
        self.assertEqual(r.text, "kmskey.security.kube-dc.com/rt-key unchanged\n")

    def test_get_yaml_of_an_applied_doc_manifest_is_unchanged(self):
        # F3: `get -o yaml` spells out the defaults the product doc's manifest leaves out
        # (exportable: false); applying them back is no change, nor is the manifest again
        doc = DOC_KMSKEY_YAML.replace("app-secrets", "rt-doc").encode()
        bare = (b"apiVersion: security.kube-dc.com/v1alpha1\nkind: KMSKey\n"
                b"metadata:\n  name: rt-bare\n  namespace: my-project\nspec: {}\n")
        for name, text in (("rt-doc", doc), ("rt-bare", bare)):
            r = self.ok("apply", "-f", "-", stdin=text)
            self.assertEqual(r.text, "kmskey.security.kube-dc.com/%s created\n" % name)
            meta = yaml.safe_load(self.ok("keys", "get", name, "-o", "yaml").out)["metadata"]
            for fmt in ("yaml", "json", "yaml"):
                out = self.ok("keys", "get", name, "-o", fmt).out
                r = self.ok("apply", "-f", "-", stdin=out)
                self.assertEqual(r.text, "kmskey.security.kube-dc.com/%s unchanged\n" % name,
                                 (name, fmt))
                r = self.ok("apply", "-f", "-", stdin=text)
                self.assertEqual(r.text, "kmskey.security.kube-dc.com/%s unchanged\n" % name,
                                 (name, fmt))
            self.assertEqual(yaml.safe_load(self.ok("keys", "get", name, "-o", "yaml").out)
                             ["metadata"]["resourceVersion"], meta["resourceVersion"])
        # a default given where the last apply gave another value still counts: dropping it
        # later resets the field, as kubectl's last-applied configuration does
        sched = doc.replace(b"deletionPolicy: retain", b"deletionPolicy: schedule")
        self.assertIn(b"configured", self.ok("apply", "-f", "-", stdin=sched).out)
        self.assertIn(b"configured", self.ok("apply", "-f", "-", stdin=doc).out)
        self.ok("patch", "kmskey", "rt-doc", "-p", '{"spec":{"deletionPolicy":"schedule"}}')
        no_dp = doc.replace(b"  deletionPolicy: retain\n", b"")
        self.assertIn(b"configured", self.ok("apply", "-f", "-", stdin=no_dp).out)
        self.assertEqual(yaml.safe_load(self.ok("keys", "get", "rt-doc", "-o", "yaml").out)
                         ["spec"]["deletionPolicy"], "retain")

    def test_list_yaml_items_carry_manifest_fields_only(self):
        self.ok("keys", "create", "rt-list")
        lst = yaml.safe_load(self.ok("keys", "list", "-o", "yaml").out)
        for it in lst["items"]:
            self.assertNotIn("organization", it["metadata"])
            self.assertNotIn("project", it["metadata"])


class StrictServerConfigTest(unittest.TestCase):
    """Item 15: kmsd refuses enum-like settings it does not know, naming the value."""

    def refused(self, cfg, *needles):
        srv = KmsdServer(mode="config", config=cfg)
        try:
            srv.spawn()
            rc = srv.wait_exit(10)
            self.assertIsNotNone(rc, "kmsd started with %r" % cfg)
            self.assertNotEqual(rc, 0)
            log = srv.log_text()
            for n in needles:
                self.assertIn(n, log)
        finally:
            srv.cleanup()

    def test_log_level_typo(self):
        self.refused({"log_level": "verbose"}, '"log_level"', '"verbose"', '"debug", "info", '
                     '"warn", "error"')

    def test_audit_fsync_without_audit_file(self):
        self.refused({"audit_fsync": "sometimes"}, '"sometimes"', '"always", "batch", "never"')

    def test_audit_mode(self):
        self.refused({"audit_mode": "rw"}, '"audit_mode"', '"rw"', "octal")

    def test_unknown_key(self):
        self.refused({"log_levle": "info"}, 'unknown setting "log_levle"')

    def test_valid_values_start(self):
        srv = KmsdServer(mode="config", config={"log_level": "debug", "audit_fsync": "never"})
        try:
            srv.start()
        finally:
            srv.cleanup()


class AuditKeyFilterTest(KmsctlMixin, unittest.TestCase):
    """Item 17: one --key filter shows a KMSKey's operations and its Transit key's; keys
    create leaves no 404 error entry."""

    @classmethod
    def setUpClass(cls):
        cls.make_home()
        cls.dir = tempfile.mkdtemp(prefix="kmsctl-audit-")
        cls.log = os.path.join(cls.dir, "audit.log")
        cls.server = KmsdServer(mode="dev", extra_args=["-audit-file=" + cls.log,
                                                        "-kms-deletion-delay=1s"])
        try:
            cls.server.start()
            r = cls.server.request("POST", "sys/namespaces/" + ORG, {})
            if r.status != 200:
                raise AssertionError(r.describe())
        except BaseException:
            cls.server.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.server.cleanup()
        shutil.rmtree(cls.dir, ignore_errors=True)
        shutil.rmtree(cls.home, ignore_errors=True)

    def events(self, *args):
        r = self.ok("audit", "list", "--file", self.log, "-o", "json", *args, conn=False)
        return json.loads(r.out)

    def test_one_filter_shows_both_names(self):
        self.ok("keys", "create", "hist")
        self.ok("encrypt", "hist", "--plaintext", "x")
        self.ok("keys", "rotate", "hist")
        transit = "%s-%s-hist" % (ORG, PROJECT)
        want = {("create", "hist"), ("encrypt", transit), ("rotate", "hist")}

        def have(*args):
            return {(e["op"], e["key"]) for e in self.events(*args)}
        wait_for(lambda: want <= have("--key", transit), "the audit lines")
        for args in (("--key", "hist", "--project", PROJECT), ("--key", PROJECT + "/hist"),
                     ("--key", transit)):
            got = have(*args)
            self.assertLessEqual(want, got, args)
            self.assertLessEqual({k for _, k in got}, {"hist", transit}, args)
        # KMS_PROJECT works as --project does
        r = self.ok("audit", "list", "--file", self.log, "-o", "json", "--key", "hist",
                    conn=False, env={"KMS_PROJECT": PROJECT})
        self.assertLessEqual(want, {(e["op"], e["key"]) for e in json.loads(r.out)})
        # another project's key of the same name is not included
        self.ok("keys", "create", "hist", "--project", "other-proj")
        wait_for(lambda: any(e["op"] == "create" for e in self.events(
            "--key", "other-proj/hist")), "other-proj's line")
        got = self.events("--key", "hist", "--project", PROJECT)
        self.assertEqual(sum(1 for e in got if e["op"] == "create"), 1, got)

    def test_one_filter_shows_the_controllers_operations(self):
        # F1: the controller's scheduled rotations and countdown deletions carry the Transit
        # name as "key" plus "project"; one --key filter (file or server) must list them
        self.ok("keys", "create", "auto-rot", "--rotation", "1s")
        self.ok("keys", "create", "auto-gone", "--deletion-policy", "schedule")
        self.ok("keys", "schedule-delete", "auto-gone")
        rot = "%s-%s-auto-rot" % (ORG, PROJECT)
        gone = "%s-%s-auto-gone" % (ORG, PROJECT)

        def controller(events):
            return {(e["op"], e["key"]) for e in events
                    if e.get("subject") == "system:kmsd-controller"}
        want = {("rotate", rot), ("delete", gone)}
        wait_for(lambda: want <= controller(self.events("--key", rot)) |
                 controller(self.events("--key", gone)), "the controller's lines", timeout=30)
        for name, transit, op in (("auto-rot", rot, "rotate"), ("auto-gone", gone, "delete")):
            for args in (("--key", name, "--project", PROJECT), ("--key", PROJECT + "/" + name)):
                got = self.events(*args)
                self.assertIn((op, transit), controller(got), args)
                self.assertIn("create", {e["op"] for e in got}, args)
            # the server's filter is the same code
            r = self.server.request("GET", "sys/audit/events?key=%s/%s" % (PROJECT, name))
            self.assertEqual(r.status, 200, r.describe())
            self.assertIn((op, transit), controller(r.data["events"]), name)
            r = self.ok("audit", "list", "--key", name, "-o", "json", conn=False,
                        env={"KMS_ADDR": self.server.addr, "KMS_TOKEN": self.server.token,
                             "KMS_NAMESPACE": ORG, "KMS_PROJECT": PROJECT})
            self.assertIn((op, transit), controller(json.loads(r.out)), name)
        # another project's filter does not pick them up
        self.assertEqual(controller(self.events("--key", "other-proj/auto-rot")), set())

    def test_table_names_the_project_of_a_kmskey(self):
        """The product doc's `audit list --resource=KMSKey` table showed a KMSKey operation's
        KEY as the bare name, so `app-secrets` of two projects read the same; it is now
        `<project>/<name>` (what --key takes), and the JSON events carry `project`. Transit
        lines keep the Transit key's own name, which holds the project already."""
        for project in ("tbl-a", "tbl-b"):
            self.ok("keys", "create", "same-name", "--project", project)
            self.ok("encrypt", "same-name", "--plaintext", "x", "--project", project)
        wait_for(lambda: len(self.events("--key", "tbl-b/same-name")) >= 2, "the audit lines")
        for where in (["--file", self.log], []):
            with self.subTest(remote=not where):
                r = self.ok("audit", "list", "--resource=KMSKey", "--since=24h", *where,
                            conn=False, env={"KMS_ADDR": self.server.addr,
                                             "KMS_TOKEN": self.server.token})
                rows = [l.split() for l in r.text.splitlines()]
                self.assertEqual(rows[0][3], "KEY")
                keys = {(row[2], row[3]) for row in rows[1:]}
                self.assertLessEqual({("create", "tbl-a/same-name"),
                                      ("create", "tbl-b/same-name"),
                                      ("encrypt", "%s-tbl-a-same-name" % ORG),
                                      ("encrypt", "%s-tbl-b-same-name" % ORG)}, keys, r.text)
                self.assertNotIn(("create", "same-name"), keys)
        ev = [e for e in self.events("--key", "tbl-a/same-name") if e["op"] == "create"]
        self.assertEqual([(e["key"], e.get("project")) for e in ev], [("same-name", "tbl-a")])

    def test_apply_of_a_change_is_config(self):
        doc = manifest("reconf")
        self.ok("apply", "-f", "-", stdin=doc)
        self.ok("apply", "-f", "-", stdin=doc.replace(b"90d", b"30d"))
        key = PROJECT + "/reconf"
        wait_for(lambda: len(self.events("--key", key, "--op", "config")) == 1,
                 "the reconfiguring apply's line")
        self.assertEqual(len(self.events("--key", key, "--op", "create")), 1)

    def test_create_leaves_no_error_entry(self):
        # not even the first key of a project (the client sends create_only, never a probe)
        before = len(self.events("--result", "error"))
        self.ok("keys", "create", "probe-first", "--project", "fresh-proj")
        wait_for(lambda: self.events("--key", "fresh-proj/probe-first"), "the create line")
        self.ok("keys", "create", "probe-second", "--project", "fresh-proj")
        wait_for(lambda: self.events("--key", "fresh-proj/probe-second"), "the create line")
        errors = self.events("--result", "error")
        self.assertEqual(len(errors), before, errors)
        # an existing name is refused (409) and not reconfigured; the refusal is audited as
        # what it is, one error entry
        r = self.fails(1, "keys", "create", "probe-second", "--project", "fresh-proj",
                       "--purpose", "backup")
        self.assertIn("KMSKey probe-second already exists in project fresh-proj", r.errtext)
        wait_for(lambda: len(self.events("--result", "error")) == before + 1,
                 "the refused create's error entry")
        r = self.ok("keys", "describe", "probe-second", "--project", "fresh-proj", "-o", "json")
        self.assertEqual(json.loads(r.out)["spec"]["purpose"], "application")


class AuditHostileFilesTest(KmsctlMixin, unittest.TestCase):
    """audit verify / audit list --file on something that is not an audit log and has no
    newline (/dev/zero, a binary or sparse file): getline grew its buffer without bound, so
    kmsctl took gigabytes within seconds (the OOM killer's business) and never answered. A
    line is now read up to 64 MiB, and a longer one is named as not an audit record."""

    @classmethod
    def setUpClass(cls):
        cls.make_home()
        cls.dir = tempfile.mkdtemp(prefix="kmsctl-audit-hostile-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)
        shutil.rmtree(cls.home, ignore_errors=True)

    def run_capped(self, *args):
        """kmsctl ARGS with its address space capped at 1 GiB (so the old behaviour fails
        fast instead of taking the machine's memory), within a deadline. Under ASan, which
        reserves terabytes of shadow address space at start, without the cap: the bounded
        reader holds 64 MiB at most either way."""
        def cap():
            import resource
            resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        sanitized = os.environ.get("KMS_SANITIZED") == "1"
        return subprocess.run([KMSCTL_BIN] + list(args), capture_output=True, timeout=120,
                              env=self.clean_env(), preexec_fn=None if sanitized else cap)

    def test_no_newline_files(self):
        sparse = os.path.join(self.dir, "sparse.log")
        with open(sparse, "wb") as f:
            f.truncate(70 << 20)  # 70 MiB of NULs, no disk used
            f.seek(0, os.SEEK_END)
            f.write(b"\n")
        for path in ("/dev/zero", sparse):
            p = self.run_capped("audit", "verify", path)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn(path.encode() + b":1: line longer than 64 MiB (not a kmsd audit record)",
                          p.stdout + p.stderr)
            self.assertIn(b"NOT intact", p.stdout + p.stderr)
            p = self.run_capped("audit", "list", "--file", path)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn(b"Error: " + path.encode() +
                          b":1: line longer than 64 MiB (not a kmsd audit log)", p.stderr)
            self.assertEqual(p.stdout, b"")


class HelpManCompletionTest(KmsctlMixin, unittest.TestCase):
    """Item 19: help for every command, man pages from that help, completion scripts."""

    server = None  # no server: every command here runs with conn=False

    @classmethod
    def setUpClass(cls):
        cls.make_home()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.home, ignore_errors=True)

    def commands(self):
        text = self.ok("help", conn=False).text
        block = text.split("Commands:\n", 1)[1].split("\n\n", 1)[0]
        return [l.split()[0] for l in block.split("\n") if l.strip()]

    def keys_verbs(self):
        text = self.ok("help", "keys", conn=False).text
        verbs = re.findall(r"^  ([a-z-]+) ", text, re.M)
        return verbs + ["get"]

    def test_help_of_every_command(self):
        cmds = self.commands()
        self.assertLessEqual({"keys", "encrypt", "decrypt", "envelope", "apply", "login",
                              "audit", "version"}, set(cmds))
        for c in cmds:
            r = self.ok("help", c, conn=False)
            self.assertIn("Usage: kmsctl " + c, r.text)
        self.assertEqual(self.ok("help", "keys", conn=False).out,
                         self.ok("keys", "--help", conn=False).out)
        self.assertIn("Usage: kmsctl keys create NAME",
                      self.ok("help", "keys", "create", conn=False).text)
        self.fails(2, "help", "nope", conn=False)
        # docs/cli.md: `kmsctl help C` prints what `kmsctl C --help` prints, for every
        # command; `version --help` printed the version, `help --help` was "unknown command"
        for c in cmds + ["help"]:
            with self.subTest(command=c):
                want = self.ok("help", c, conn=False).out
                self.assertEqual(self.ok(c, "--help", conn=False).out, want)
                self.assertEqual(self.ok(c, "-h", conn=False).out, want)
        self.assertRegex(self.ok("version", conn=False).text, r"^kmsctl v\S+\n$")

    def man_dir(self):
        d = os.path.join(os.path.dirname(KMSCTL_BIN), "man")
        self.assertTrue(os.path.isfile(os.path.join(d, "kmsctl.1")),
                        "build the kms_man target (man pages go to <build>/man)")
        return d

    def render(self, page):
        r = subprocess.run(["man", "-l", page], capture_output=True, env={
            "MANWIDTH": "200", "PATH": os.environ["PATH"], "LANG": "C.UTF-8"})
        self.assertEqual(r.returncode, 0, r.stderr)
        return " ".join(r.stdout.decode().split())

    def test_man_pages_carry_the_help_text(self):
        d = self.man_dir()
        page = self.render(os.path.join(d, "kmsctl.1"))
        for c in self.commands():
            if c == "version":
                continue
            first = self.ok("help", c, conn=False).text.strip().split("\n")[0]
            self.assertIn(" ".join(first.split()), page, c)
        kmsd_help = subprocess.run([os.path.join(os.path.dirname(KMSCTL_BIN), "kmsd"), "help"],
                                   capture_output=True).stdout.decode()
        page = self.render(os.path.join(d, "kmsd.8"))
        for line in kmsd_help.strip().split("\n"):
            if line.strip():
                self.assertIn(" ".join(line.split()), page)

    def complete(self, *words):
        script = ('source %s; COMP_WORDS=(%s); COMP_CWORD=%d; _kmsctl; '
                  'printf "%%s\\n" "${COMPREPLY[@]}"'
                  % (BASH_COMPLETION, " ".join("'%s'" % w for w in words), len(words) - 1))
        r = subprocess.run(["bash", "--norc", "-c", script], capture_output=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.decode().split()

    def test_bash_completion_works(self):
        self.assertIn("keys", self.complete("kmsctl", "ke"))
        self.assertEqual(self.complete("kmsctl", "keys", "cr"), ["create"])
        self.assertEqual(self.complete("kmsctl", "-n", "org", "keys", "sched"),
                         ["schedule-delete"])
        self.assertIn("--deletion-policy", self.complete("kmsctl", "keys", "create", "--del"))
        self.assertEqual(self.complete("kmsctl", "keys", "create", "x", "--purpose", "e"),
                         ["etcd"])
        self.assertEqual(self.complete("kmsctl", "envelope", "d"), ["decrypt"])

    def test_completions_cover_every_command_verb_and_option(self):
        with open(BASH_COMPLETION) as f:
            bash = f.read()
        with open(ZSH_COMPLETION) as f:
            zsh = f.read()
        words = set(self.commands()) | set(self.keys_verbs())
        for c in self.commands():
            text = self.ok("help", c, conn=False).text
            words |= set(re.findall(r"(--[a-z][a-z-]+)", text))
        for w in sorted(words):
            self.assertRegex(bash, r"(?<![\w-])%s(?![\w-])" % re.escape(w), "bash: " + w)
            self.assertRegex(zsh, r"(?<![\w-])%s(?![\w-])" % re.escape(w), "zsh: " + w)


if __name__ == "__main__":
    unittest.main()
