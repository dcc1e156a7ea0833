"""`kmsctl orgs` (issue 11 item 13) against a real dev kmsd: create/list/describe/delete,
idempotent create, name checks, the confirmation of delete (refused off a terminal without
--yes, asked on a pseudo-terminal), KMSKeys usable right after `orgs create` and gone with the
organization, the 403 a token without rights on sys/namespaces gets, and the README's
"First steps with kmsctl" block, run as written against a dev server.
"""

import json
import os
import pty
import re
import shutil
import subprocess
import tempfile
import unittest

import yaml

import test_kmsctl_cli as cli_tests  # a module, so its test classes do not run twice
from kmsd_harness import KmsdTestCase, b64, unb64
from kmsctl_helpers import KMSCTL_BIN, KmsctlMixin

HERE = os.path.dirname(os.path.abspath(__file__))
README = os.path.normpath(os.path.join(HERE, "..", "..", "README.md"))


class OrgsTestCase(KmsctlMixin, KmsdTestCase):
    """A dev server without any organization; kmsctl with --addr/--token only (no -n)."""

    @classmethod
    def setUpClass(cls):
        cls.make_home()
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.home, ignore_errors=True)

    def orgs(self, *args, token=None, env=None, stdin=b""):
        return self.kmsctl("orgs", *args, "--addr", self.server.addr, "--token",
                           token or self.server.token, conn=False, env=env, stdin=stdin)

    def orgs_ok(self, *args, **kw):
        r = self.orgs(*args, **kw)
        if r.rc != 0:
            self.fail("expected exit 0: %r" % r)
        return r

    def orgs_fails(self, rc, *args, **kw):
        r = self.orgs(*args, **kw)
        if r.rc != rc:
            self.fail("expected exit %d: %r" % (rc, r))
        return r

    def in_org(self, org, *args, project="p1"):
        """kmsctl ARGS in organization org and project p1."""
        return self.kmsctl("-n", org, "--project", project, "--addr", self.server.addr,
                           "--token", self.server.token, *args, conn=False)

    def namespace_exists(self, org):
        r = self.server.request("GET", "sys/namespaces/" + org)
        self.assertIn(r.status, (200, 404), r.describe())
        return r.status == 200

    def listed(self):
        return {o["name"]: o for o in json.loads(self.orgs_ok("list", "-o", "json").out)}

    def token_with(self, policies):
        r = self.server.request("POST", "auth/token/create", {"policies": policies})
        self.assertEqual(r.status, 200, r.describe())
        return r.json["auth"]["client_token"]


class OrgsLifecycleTest(OrgsTestCase):

    def test_create_list_describe_delete(self):
        r = self.orgs_ok("create", "life-org")
        self.assertIn("Created organization life-org", r.text)
        self.assertIn("kmsctl -n life-org --project PROJECT keys create NAME", r.text)
        self.assertTrue(self.namespace_exists("life-org"))
        mounts = self.server.request("GET", "sys/mounts", namespace="life-org")
        self.assertEqual(mounts.json["data"]["transit/"]["type"], "transit")

        table = self.orgs_ok("list").text.strip().split("\n")
        self.assertEqual(table[0].split(), ["NAME", "ID", "TRANSIT"])
        row = [l.split() for l in table[1:] if l.split()[0] == "life-org"]
        ns_id = self.server.request("GET", "sys/namespaces/life-org").data["id"]
        self.assertEqual(row, [["life-org", ns_id, "mounted"]])
        self.assertEqual(self.listed()["life-org"],
                         {"name": "life-org", "id": ns_id, "path": "life-org/",
                          "custom_metadata": {}, "transit_mounted": True})
        self.assertEqual(yaml.safe_load(self.orgs_ok("list", "-o", "yaml").out),
                         json.loads(self.orgs_ok("ls", "-o", "json").out))

        d = self.orgs_ok("describe", "life-org").text
        self.assertRegex(d, r"Name:\s+life-org\n")
        self.assertRegex(d, r"Namespace path:\s+life-org/\n")
        self.assertRegex(d, r"Namespace ID:\s+%s\n" % ns_id)
        self.assertRegex(d, r"Transit engine:\s+transit/ \(mounted\)\n")
        got = yaml.safe_load(self.orgs_ok("get", "life-org", "-o", "yaml").out)
        self.assertEqual(got["id"], ns_id)
        self.assertIs(got["transit_mounted"], True)

        r = self.orgs_ok("delete", "life-org", "--yes")
        self.assertEqual(r.text, "Deleted organization life-org with its KMSKeys, Transit keys "
                                 "and policies\n")
        self.assertFalse(self.namespace_exists("life-org"))
        self.assertNotIn("life-org", self.listed())
        r = self.orgs_fails(1, "describe", "life-org")
        self.assertIn("Error: organization life-org not found on %s" % self.server.addr,
                      r.errtext)
        self.assertIn("kmsctl orgs create life-org", r.errtext)
        r = self.orgs_fails(1, "delete", "life-org", "--yes")
        self.assertIn("organization life-org not found", r.errtext)

    def test_a_404_that_is_not_vaults_bare_one_is_an_error(self):
        # --addr with /v1 (kmsctl adds it: /v1/v1/sys/namespaces) answers 404 `no handler
        # for route …`; `orgs list` said "No organizations." (exit 0) and `orgs describe` that
        # the organization was not found, whatever the server holds
        self.orgs_ok("create", "seen-org")
        wrong = self.server.addr + "/v1"
        r = self.kmsctl("orgs", "list", "--addr", wrong, "--token", self.server.token,
                        conn=False)
        self.assertEqual(r.rc, 1, r)
        self.assertNotIn("No organizations", r.text)
        self.assertIn('Error: cannot list the organizations: no handler for route '
                      '"v1/sys/namespaces/". route entry not found.', r.errtext)
        r = self.kmsctl("orgs", "describe", "seen-org", "--addr", wrong, "--token",
                        self.server.token, conn=False)
        self.assertEqual(r.rc, 1, r)
        self.assertNotIn("not found on", r.errtext)
        self.assertIn('no handler for route "v1/sys/namespaces/seen-org"', r.errtext)
        # Vault's bare 404 still means what it says
        self.assertIn("seen-org", self.listed())
        r = self.orgs_fails(1, "describe", "never-made")
        self.assertIn("Error: organization never-made not found on", r.errtext)

    def test_create_is_idempotent(self):
        first = json.loads(self.orgs_ok("create", "idem-org", "-o", "json").out)
        r = self.orgs_ok("create", "idem-org")
        self.assertIn("Organization idem-org already exists", r.text)
        self.assertNotIn("Created", r.text)
        again = json.loads(self.orgs_ok("create", "idem-org", "-o", "json").out)
        self.assertEqual(first, again)
        self.assertEqual(list(self.listed()).count("idem-org"), 1)

    def test_create_completes_an_organization_made_with_curl(self):
        r = self.server.request("POST", "sys/namespaces/curl-org", {})
        self.assertEqual(r.status, 200, r.describe())
        self.assertIs(self.listed()["curl-org"]["transit_mounted"], False)
        self.assertIn("Transit engine:  not mounted", self.orgs_ok("describe", "curl-org").text)
        r = self.orgs_ok("create", "curl-org")
        # it says it mounted the engine (it said "with its transit/ engine" as if it had one)
        self.assertIn("Organization curl-org already exists (OpenBao namespace curl-org/); "
                      "mounted its transit/ engine", r.text)
        self.assertIs(self.listed()["curl-org"]["transit_mounted"], True)
        r = self.orgs_ok("create", "curl-org")
        self.assertIn("Organization curl-org already exists (OpenBao namespace curl-org/ with "
                      "its transit/ engine)", r.text)
        # the mount is a working Transit engine, as a Vault client sees it
        r = self.server.request("POST", "transit/encrypt/k", {"plaintext": b64(b"x")},
                                namespace="curl-org")
        self.assertEqual(r.status, 200, r.describe())

    def test_invalid_names_are_refused_before_anything_is_sent(self):
        for name in ["Bad_Name", "trail-", "a" * 64, "my/org", "my.org", "",
                     "root", "sys", "audit", "auth", "cubbyhole", "identity"]:
            for verb in ("create", "describe", "delete"):
                r = self.orgs_fails(2, verb, name, "--yes") if verb == "delete" else \
                    self.orgs_fails(2, verb, name)
                self.assertIn('invalid organization name "%s"' % name, r.errtext)
        r = self.kmsctl("orgs", "create", "--addr", self.server.addr, "--", "-lead", conn=False)
        self.assertEqual(r.rc, 2, r)
        self.assertIn('invalid organization name "-lead"', r.errtext)
        self.assertFalse(self.namespace_exists("a" * 63))
        self.orgs_ok("create", "a" * 63)
        self.orgs_ok("delete", "a" * 63, "--yes")

    def test_usage_errors(self):
        self.orgs_fails(2, "create")
        self.orgs_fails(2, "create", "x1", "x2")
        self.orgs_fails(2, "list", "extra")
        r = self.orgs_fails(2, "frobnicate")
        self.assertIn('unknown command "frobnicate" for "kmsctl orgs"', r.errtext)
        r = self.orgs_fails(2, "create", "yes-org", "--yes")
        self.assertIn("--yes is an option of `kmsctl orgs delete` only", r.errtext)
        self.assertFalse(self.namespace_exists("yes-org"))
        r = self.orgs_fails(2, "list", "-o", "xml")
        self.assertIn("-o must be table, json or yaml", r.errtext)

    def test_root_namespace_only(self):
        self.orgs_ok("create", "env-org")
        # the keys commands' environment does not turn `orgs` into the org's children
        env = {"KMS_NAMESPACE": "env-org", "VAULT_NAMESPACE": "env-org",
               "BAO_NAMESPACE": "env-org", "KMS_PROJECT": "p1"}
        self.assertIn("env-org", {o["name"] for o in json.loads(
            self.orgs_ok("list", "-o", "json", env=env).out)})
        self.assertIn("Name:            env-org",
                      self.orgs_ok("describe", "env-org", env=env).text)
        r = self.orgs_fails(2, "list", "-n", "env-org")
        self.assertIn("-n/--namespace does not apply to `kmsctl orgs`", r.errtext)

    def test_delete_refuses_without_yes_when_stdin_is_not_a_terminal(self):
        self.orgs_ok("create", "keep-org")
        for stdin in (b"", b"keep-org\n", b"y\n"):
            r = self.orgs_fails(2, "delete", "keep-org", stdin=stdin)
            self.assertIn("Delete organization keep-org with every KMSKey and key in it? "
                          "Re-run with --yes to confirm.", r.errtext)
            self.assertIn("Error: not confirmed", r.errtext)
            self.assertTrue(self.namespace_exists("keep-org"))

    def delete_on_terminal(self, org, answer):
        """`kmsctl orgs delete ORG` with stdin a pseudo-terminal that types `answer`."""
        master, slave = pty.openpty()
        try:
            os.write(master, answer)
            p = subprocess.run([KMSCTL_BIN, "orgs", "delete", org, "--addr", self.server.addr,
                                "--token", self.server.token], stdin=slave,
                               capture_output=True, env=self.clean_env(), timeout=60)
        finally:
            os.close(slave)
            os.close(master)
        return p

    def test_delete_asks_on_a_terminal(self):
        self.orgs_ok("create", "tty-org")
        p = self.delete_on_terminal("tty-org", b"tty-or\n")
        self.assertEqual(p.returncode, 2, p)
        err = p.stderr.decode()
        self.assertIn("Delete organization tty-org with every project, KMSKey and Transit key "
                      "in it? This cannot be undone.", err)
        self.assertIn("Type the organization's name to confirm: ", err)
        self.assertIn("Error: not confirmed: organization tty-org is kept", err)
        self.assertTrue(self.namespace_exists("tty-org"))
        p = self.delete_on_terminal("tty-org", b"tty-org\n")
        self.assertEqual(p.returncode, 0, p)
        self.assertEqual(p.stdout.decode(), "Deleted organization tty-org with its KMSKeys, "
                                            "Transit keys and policies\n")
        self.assertFalse(self.namespace_exists("tty-org"))
        # a missing organization is reported before anything is asked
        p = self.delete_on_terminal("tty-org", b"tty-org\n")
        self.assertEqual(p.returncode, 1, p)
        self.assertNotIn("Type the organization", p.stderr.decode())


class OrgsAndKeysTest(OrgsTestCase):

    def test_kmskeys_work_right_after_create(self):
        self.orgs_ok("create", "fresh-org")
        r = self.in_org("fresh-org", "keys", "create", "app-secrets")
        self.assertEqual(r.rc, 0, r)
        self.assertIn("Created KMSKey fresh-org-p1/app-secrets", r.text)
        r = self.in_org("fresh-org", "encrypt", "app-secrets", "--plaintext=hunter2")
        self.assertEqual(r.rc, 0, r)
        ct = r.text.strip()
        self.assertRegex(ct, r"^vault:v1:")
        r = self.in_org("fresh-org", "decrypt", "app-secrets", "--ciphertext=" + ct)
        self.assertEqual((r.rc, r.text), (0, "hunter2\n"), r)
        # the same Transit key, straight through the org's transit/ engine
        resp = self.server.request("POST", "transit/decrypt/fresh-org-p1-app-secrets",
                                   {"ciphertext": ct}, namespace="fresh-org")
        self.assertEqual(unb64(resp.data["plaintext"]), b"hunter2")

    def test_deleting_the_org_removes_its_kmskeys(self):
        self.orgs_ok("create", "gone-org")
        for project, key in (("p1", "k1"), ("p1", "k2"), ("p2", "k3")):
            r = self.in_org("gone-org", "keys", "create", key, project=project)
            self.assertEqual(r.rc, 0, r)
        ct = self.in_org("gone-org", "encrypt", "k1", "--plaintext=x").text.strip()
        self.orgs_ok("delete", "gone-org", "--yes")
        r = self.in_org("gone-org", "keys", "list")
        self.assertEqual(r.rc, 1, r)
        self.assertIn('organization "gone-org" not found', r.errtext)
        self.assertIn("kmsctl orgs create gone-org", r.errtext)

        # a new organization of the same name starts empty
        self.orgs_ok("create", "gone-org")
        for project in ("p1", "p2"):
            r = self.in_org("gone-org", "keys", "list", project=project)
            self.assertEqual((r.rc, r.text), (0, "No KMSKeys.\n"), r)
        r = self.in_org("gone-org", "keys", "describe", "k1")
        self.assertEqual(r.rc, 1, r)
        self.assertIn("KMSKey k1 not found in project p1 of organization gone-org", r.errtext)
        r = self.server.request("LIST", "transit/keys", namespace="gone-org")
        self.assertEqual(r.status, 404, r.describe())
        r = self.server.request("POST", "transit/decrypt/gone-org-p1-k1", {"ciphertext": ct},
                                namespace="gone-org")
        self.assertNotEqual(r.status, 200, r.describe())
        # and works like any other
        r = self.in_org("gone-org", "keys", "create", "k1")
        self.assertEqual(r.rc, 0, r)
        self.assertIn('"currentVersion": 1', self.in_org("gone-org", "keys", "get", "k1", "-o",
                                                         "json").text)

    def test_no_organization_points_at_orgs(self):
        r = self.kmsctl("--project", "p1", "--addr", self.server.addr, "--token",
                        self.server.token, "keys", "list", conn=False)
        self.assertEqual(r.rc, 2, r)
        self.assertIn("no organization", r.errtext)
        self.assertIn("`kmsctl orgs create ORG`", r.errtext)


class OrgsPermissionTest(OrgsTestCase):

    HINT = ("this needs a valid root-namespace token with sudo on sys/namespaces/* and "
            "sys/mounts/*")

    def test_token_without_rights_gets_a_clear_403(self):
        self.orgs_ok("create", "guarded")
        for token in (self.token_with(["default"]), "not-a-token"):
            r = self.orgs_fails(1, "create", "intruder", token=token)
            self.assertIn("permission denied: cannot create organization intruder on %s"
                          % self.server.addr, r.errtext)
            self.assertIn(self.HINT, r.errtext)
            self.assertIn("--token or KMS_TOKEN", r.errtext)
            self.assertNotIn("kmsctl login", r.errtext)
            r = self.orgs_fails(1, "list", token=token)
            self.assertIn("permission denied: cannot list organizations", r.errtext)
            self.assertIn(self.HINT, r.errtext)
            r = self.orgs_fails(1, "delete", "guarded", "--yes", token=token)
            self.assertIn("permission denied: cannot delete organization guarded", r.errtext)
            r = self.orgs_fails(1, "describe", "guarded", token=token)
            self.assertIn("permission denied: cannot read organization guarded", r.errtext)
        self.assertFalse(self.namespace_exists("intruder"))
        self.assertTrue(self.namespace_exists("guarded"))

    def test_namespace_rights_without_sudo_on_mounts(self):
        # may create namespaces but not mount engines: the organization exists, the message
        # says what is missing and how to finish
        self.server.request("PUT", "sys/policy/ns-only", {
            "policy": 'path "sys/namespaces/*" { capabilities = ["create", "read", "update"] }'})
        token = self.token_with(["ns-only"])
        r = self.orgs_fails(1, "create", "half-org", token=token)
        self.assertIn("permission denied: cannot", r.errtext)
        self.assertIn("organization half-org", r.errtext)
        self.assertIn("the organization half-org exists now", r.errtext)
        self.assertTrue(self.namespace_exists("half-org"))
        r = self.orgs_ok("create", "half-org")
        self.assertIn("Organization half-org already exists (OpenBao namespace half-org/); "
                      "mounted its transit/ engine", r.text)
        self.assertIs(self.listed()["half-org"]["transit_mounted"], True)


class OrgsHelpTest(OrgsTestCase):

    def test_help(self):
        top = self.ok("help", conn=False).text
        self.assertRegex(top, r"\n  orgs +organizations: create, list, describe, delete\n")
        h = self.ok("help", "orgs", conn=False)
        self.assertEqual(h.out, self.ok("orgs", "--help", conn=False).out)
        self.assertTrue(h.text.startswith("Usage: kmsctl orgs <verb> [options]\n"))
        for verb in ("create ORG", "list", "describe ORG (or get ORG)", "delete ORG [--yes]"):
            self.assertIn("  " + verb, h.text)
        self.assertIn("Usage: kmsctl orgs delete ORG [--yes]",
                      self.ok("help", "orgs", "delete", conn=False).text)
        r = self.fails(2, "orgs", conn=False)
        self.assertIn("Usage: kmsctl orgs", r.errtext)

    def complete(self, *words):
        return cli_tests.HelpManCompletionTest.complete(self, *words)

    def test_bash_completion(self):
        self.assertEqual(self.complete("kmsctl", "or"), ["orgs"])
        self.assertEqual(self.complete("kmsctl", "orgs", "de"), ["describe", "delete"])
        self.assertEqual(self.complete("kmsctl", "orgs", "delete", "x", "--y"), ["--yes"])
        self.assertEqual(self.complete("kmsctl", "help", "or"), ["orgs"])


class ReadmeFirstStepsTest(OrgsTestCase):
    """The README's first steps, run line for line by bash against a dev server. Only the
    address and the printed root token are filled in (the dev server here listens on a port
    of its own); `build/` is the directory of the kmsctl under test."""

    def section(self, title):
        with open(README) as f:
            text = f.read()
        m = re.search(r"^## %s\n(.*?)(?=^## )" % re.escape(title), text, re.M | re.S)
        self.assertIsNotNone(m, "README has no section %r" % title)
        return re.findall(r"```sh\n(.*?)```", m.group(1), re.S)

    def test_setup_is_make_run_and_make_test(self):
        (block,) = self.section("Set-up (Debian 12, as root)")
        self.assertEqual([l.split("#")[0].strip() for l in block.strip().split("\n")],
                         ["make run", "make test"])

    def test_first_steps_run_as_written(self):
        blocks = self.section("First steps with kmsctl")
        self.assertEqual(len(blocks), 2, blocks)
        steps = blocks[0]
        for line in ("kmsctl orgs create my-org", "kmsctl keys create app-secrets"):
            self.assertIn("\n%s\n" % line, steps)
        self.assertIn("export KMS_NAMESPACE=my-org KMS_PROJECT=my-project\n", steps)
        script = "\n".join(blocks)
        # the two things `make run` prints, and nothing else, are filled in
        self.assertEqual(script.count("http://127.0.0.1:8200"), 1)
        self.assertEqual(script.count("<printed root token>"), 1)
        script = script.replace("http://127.0.0.1:8200", self.server.addr)
        script = script.replace("<printed root token>", self.server.token)

        work = tempfile.mkdtemp(prefix="kmsctl-readme-")
        try:
            os.symlink(os.path.dirname(os.path.abspath(KMSCTL_BIN)),
                       os.path.join(work, "build"))
            env = self.clean_env({"PATH": "/usr/bin:/bin"})
            p = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=work,
                               env=env, capture_output=True, timeout=120)
            out = p.stdout.decode()
            self.assertEqual(p.returncode, 0, (out, p.stderr.decode()))
            self.assertEqual(p.stderr.decode(), "")
            lines = out.split("\n")
            self.assertEqual(lines[0], "Created organization my-org (OpenBao namespace my-org/ "
                                       "with its transit/ engine)")
            self.assertIn("Created KMSKey my-org-my-project/app-secrets (purpose=application "
                          "algorithm=aes256-gcm96 rotation=disabled deletionPolicy=retain)",
                          lines)
            cts = [l for l in lines if re.fullmatch(r"vault:v1:[A-Za-z0-9+/=]+", l)]
            self.assertEqual(len(cts), 1, out)
            with open(os.path.join(work, "secret.enc")) as f:
                self.assertEqual(f.read(), cts[0] + "\n")
            self.assertEqual(lines[lines.index(cts[0]) + 1], "hunter2")
            # the curl block: the same Transit key answers a plain Vault client
            curl = json.loads(lines[lines.index(cts[0]) + 2])
            r = self.server.request("POST", "transit/decrypt/my-org-my-project-app-secrets",
                                    {"ciphertext": curl["data"]["ciphertext"]},
                                    namespace="my-org")
            self.assertEqual(unb64(r.data["plaintext"]), b"hunter2")
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
