"""hvac against a real kmsd: token roles (create_or_update_token_role, read/list/delete,
create_token with role_name), sys.move_backend with its migration status, and
sys.tune_mount_configuration read back by read_mount_configuration, in the root namespace
and in an organisation namespace.
"""

import base64
import unittest

import hvac  # Debian's python3-hvac (/usr/bin/python3); missing fails, never skips
import hvac.exceptions

from kmsd_harness import KmsdTestCase


class TokenRolesHvac(KmsdTestCase):
    def client(self, token=None, namespace=None):
        return hvac.Client(url=self.server.addr,
                           token=self.server.root_token if token is None else token,
                           namespace=namespace)

    def test_role_crud_and_create(self):
        cli = self.client()
        cli.sys.create_or_update_policy("app-read", 'path "transit/keys" { capabilities = ["list"] }')
        cli.auth.token.create_or_update_role(
            "app", allowed_policies=["app-read", "team-x"], orphan=True, path_suffix="rev-1")
        role = cli.auth.token.read_role("app")["data"]
        self.assertEqual(role["allowed_policies"], ["app-read", "team-x"])
        self.assertTrue(role["orphan"])
        self.assertTrue(role["renewable"])
        self.assertEqual(role["path_suffix"], "rev-1")
        self.assertEqual(role["token_type"], "default-service")
        self.assertIn("app", cli.auth.token.list_roles()["data"]["keys"])

        out = cli.auth.token.create(role_name="app", policies=["app-read"], ttl="1h")
        auth = out["auth"]
        self.assertEqual(auth["policies"], ["app-read", "default"])
        self.assertTrue(auth["orphan"])
        self.assertEqual(auth["lease_duration"], 3600)
        look = cli.auth.token.lookup(auth["client_token"])["data"]
        self.assertEqual(look["role"], "app")
        self.assertEqual(look["path"], "auth/token/create/app/rev-1")

        # outside the role's allowed policies: hvac raises InvalidRequest with OpenBao's text
        with self.assertRaises(hvac.exceptions.InvalidRequest) as cm:
            cli.auth.token.create(role_name="app", policies=["other"])
        self.assertIn("must be subset of the role's allowed policies", str(cm.exception))
        with self.assertRaises(hvac.exceptions.InvalidRequest) as cm:
            cli.auth.token.create(role_name="nosuch")
        self.assertIn("unknown role nosuch", str(cm.exception))

        # token_* fields through a plain write, read back as written
        cli.write("auth/token/roles/periodic", token_period="10m", token_num_uses=4,
                  token_bound_cidrs=["127.0.0.1/32"], renewable=True)
        role = cli.auth.token.read_role("periodic")["data"]
        self.assertEqual(role["token_period"], 600)
        self.assertEqual(role["token_num_uses"], 4)
        self.assertEqual(role["token_bound_cidrs"], ["127.0.0.1/32"])
        auth = cli.auth.token.create(role_name="periodic")["auth"]
        self.assertEqual(auth["lease_duration"], 600)
        self.assertEqual(auth["num_uses"], 4)
        child = self.client(token=auth["client_token"])
        self.assertEqual(child.auth.token.lookup_self()["data"]["period"], 600)

        cli.auth.token.delete_role("periodic")
        with self.assertRaises(hvac.exceptions.InvalidPath):
            cli.auth.token.read_role("periodic")

    def test_roles_in_a_namespace(self):
        self.client().sys.create_namespace("org-roles")
        org = self.client(namespace="org-roles")
        org.auth.token.create_or_update_role("dev", allowed_policies=["kms-developer"])
        auth = org.auth.token.create(role_name="dev")["auth"]
        self.assertEqual(auth["policies"], ["default", "kms-developer"])
        self.assertTrue(auth["client_token"].endswith("." + auth["accessor"].split(".")[1]))
        with self.assertRaises(hvac.exceptions.InvalidPath):
            self.client().auth.token.read_role("dev")

    def test_move_backend_keeps_keys(self):
        cli = self.client()
        cli.sys.enable_secrets_engine("transit", path="mv-src")
        cli.secrets.transit.create_key("k", mount_point="mv-src")
        ct = cli.secrets.transit.encrypt_data(
            "k", base64.b64encode(b"hello").decode(), mount_point="mv-src")["data"]["ciphertext"]
        resp = cli.sys.move_backend("mv-src", "mv-dst")
        mid = resp["data"]["migration_id"]
        status = cli.read("sys/remount/status/" + mid)["data"]["migration_info"]
        self.assertEqual(status, {"source_mount": "mv-src/", "target_mount": "mv-dst/",
                                  "status": "success"})
        pt = cli.secrets.transit.decrypt_data("k", ct, mount_point="mv-dst")["data"]["plaintext"]
        self.assertEqual(base64.b64decode(pt), b"hello")
        self.assertIn("mv-dst/", cli.sys.list_mounted_secrets_engines()["data"])
        self.assertNotIn("mv-src/", cli.sys.list_mounted_secrets_engines()["data"])
        with self.assertRaises(hvac.exceptions.InvalidRequest) as cm:
            cli.sys.move_backend("mv-dst", "sys/x")
        self.assertIn("cannot remount to destination", str(cm.exception))

    def test_tune_reads_back(self):
        cli = self.client()
        cli.sys.enable_secrets_engine("transit", path="tuned")
        cli.sys.tune_mount_configuration("tuned", default_lease_ttl="30m", max_lease_ttl="2h",
                                         description="tuned transit",
                                         listing_visibility="hidden",
                                         audit_non_hmac_request_keys=["plaintext"],
                                         options={"team": "blue"})
        cfg = cli.sys.read_mount_configuration("tuned")["data"]
        self.assertEqual(cfg["default_lease_ttl"], 1800)
        self.assertEqual(cfg["max_lease_ttl"], 7200)
        self.assertEqual(cfg["description"], "tuned transit")
        self.assertEqual(cfg["listing_visibility"], "hidden")
        self.assertEqual(cfg["audit_non_hmac_request_keys"], ["plaintext"])
        self.assertEqual(cfg["options"], {"team": "blue"})
        with self.assertRaises(hvac.exceptions.InvalidRequest) as cm:
            cli.sys.tune_mount_configuration("tuned", default_lease_ttl="3h")
        self.assertIn("would be less than backend default lease TTL", str(cm.exception))

    def test_auth_method_config_and_tune(self):
        cli = self.client()
        cli.sys.enable_auth_method("kubernetes", path="k8s-tuned", description="cluster",
                                   config={"default_lease_ttl": "20m", "max_lease_ttl": "1h"})
        cfg = cli.sys.read_auth_method_tuning("k8s-tuned")["data"]
        self.assertEqual((cfg["default_lease_ttl"], cfg["max_lease_ttl"], cfg["description"]),
                         (1200, 3600, "cluster"))
        cli.sys.tune_auth_method("k8s-tuned", max_lease_ttl="2h", listing_visibility="unauth",
                                 audit_non_hmac_request_keys=["role"])
        cfg = cli.sys.read_auth_method_tuning("k8s-tuned")["data"]
        self.assertEqual((cfg["default_lease_ttl"], cfg["max_lease_ttl"], cfg["listing_visibility"],
                          cfg["audit_non_hmac_request_keys"], cfg["token_type"]),
                         (1200, 7200, "unauth", ["role"], "default-service"))
        listed = cli.sys.list_auth_methods()["data"]["k8s-tuned/"]
        self.assertEqual(listed["config"]["max_lease_ttl"], 7200)
        with self.assertRaises(hvac.exceptions.InvalidRequest) as cm:
            cli.sys.tune_auth_method("k8s-tuned", default_lease_ttl="3h")
        self.assertIn("would be less than backend default lease TTL", str(cm.exception))


if __name__ == "__main__":
    unittest.main()
