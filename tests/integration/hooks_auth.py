"""The policy cache against a real kmsd built with -DKMS_TEST_HOOKS=ON. With
KMS_TEST_POLICY_HOOKS=<dir>, a policy read from the store for the ACL cache waits while
<dir>/hold exists (and shows it by creating <dir>/held), which holds a request between its
read of a policy and the publication of what it read.

- a policy narrowed while a request is reading its old text: the request may still be judged
  by the old text (it is concurrent with the write), but the old text must not be left in the
  cache, where every later request would be judged by it until kmsd restarts.
"""

import os
import threading
import unittest

from kmsd_harness import HookedServerCase, b64, wait_for

ALLOW = 'path "transit/encrypt/k" { capabilities = ["update"] }\n'
NARROWED = 'path "transit/keys/k" { capabilities = ["read"] }\n'


class PolicyCacheTest(HookedServerCase):
    hook_env = "KMS_TEST_POLICY_HOOKS"
    workdir_prefix = "kmsd-polcache-"
    # two workers: the held request blocks one, the policy write runs on the other
    server_config = {"workers": 2}

    def encrypt(self, token):
        return self.server.request("POST", "transit/encrypt/k", {"plaintext": b64(b"x")},
                                   token=token)

    def test_narrowed_policy_read_meanwhile_is_not_cached(self):
        srv = self.server
        self.assertOK(srv.request("POST", "transit/keys/k", {}))
        self.assertStatus(srv.request("POST", "sys/policies/acl/narrowed", {"policy": ALLOW}),
                          204)
        r = srv.request("POST", "auth/token/create",
                        {"policies": ["narrowed"], "no_default_policy": True})
        self.assertOK(r)
        tok = r.json["auth"]["client_token"]

        hold = os.path.join(self.hooks, "hold")
        held = os.path.join(self.hooks, "held")
        open(hold, "w").close()
        got = {}

        def first():
            got["r"] = self.encrypt(tok)

        t = threading.Thread(target=first)
        t.start()
        try:
            # the request has read the policy's text that allows encrypt, and waits
            wait_for(lambda: os.path.exists(held), 10, "the request to read the policy")
            self.assertStatus(
                srv.request("POST", "sys/policies/acl/narrowed", {"policy": NARROWED}), 204)
        finally:
            os.unlink(hold)
            t.join(30)
        self.assertFalse(t.is_alive())
        self.assertIn(got["r"].status, (200, 403))
        # every request after the write is judged by the narrowed policy
        for _ in range(3):
            self.assertStatus(self.encrypt(tok), 403)
        self.assertOK(srv.request("GET", "transit/keys/k", token=tok))


if __name__ == "__main__":
    unittest.main()
