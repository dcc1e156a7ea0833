"""keys/:name/csr and keys/:name/set-certificate against a real kmsd (OpenBao's
path_certificates.go): the CSR is checked with Python's `cryptography` (signature, public key
of the version, subject and extensions of the template), a certificate for it is issued by a
CA made here and set back, then read back in the key object and through
export/certificate-chain; OpenBao's refusals and statuses."""

import base64
import datetime
import json
import unittest

import hvac  # Debian's python3-hvac (/usr/bin/python3); missing fails, never skips
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from kmsd_harness import KmsdTestCase, multierror

SIGNING = ("ed25519", "ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "rsa-2048")


def name(cn, org=None):
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def make_ca(cn="kmsd test CA", issuer=None):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(name(cn)).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True))
    if issuer is None:
        cert = b.issuer_name(name(cn)).sign(key, hashes.SHA256())
    else:
        cert = b.issuer_name(issuer[1].subject).sign(issuer[0], hashes.SHA256())
    return key, cert


def issue(ca, public_key, cn="leaf", ca_flag=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca[1].subject)
         .public_key(public_key).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=1)))
    if ca_flag is not None:
        b = b.add_extension(x509.BasicConstraints(ca=ca_flag, path_length=None), critical=True)
    return b.sign(ca[0], hashes.SHA256())


def pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def spki(key):
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


class TransitCertificatesTest(KmsdTestCase):
    def csr(self, key, status=200, **body):
        r = self.req("POST", "transit/keys/%s/csr" % key, body)
        self.assertStatus(r, status)
        return r

    def version_public(self, key, version):
        pub = self.req("GET", "transit/export/public-key/%s/%d" % (key, version),
                       {"format": "pem"})
        self.assertStatus(pub, 200)
        text = pub.data["keys"][str(version)]
        if not text.startswith("-----"):  # ed25519: the raw key in base64
            return ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(text))
        return serialization.load_pem_public_key(text.encode())

    def test_csr_every_signing_type_verifies(self):
        for key_type in SIGNING:
            with self.subTest(type=key_type):
                key, _ = self.create_key(type=key_type)
                r = self.csr(key)
                self.assertEqual(sorted(r.data), ["csr", "name", "type"])
                self.assertEqual(r.data["name"], key)
                self.assertEqual(r.data["type"], key_type)
                self.assertTrue(r.data["csr"].startswith("-----BEGIN CERTIFICATE REQUEST-----"))
                self.assertTrue(r.data["csr"].endswith("-----END CERTIFICATE REQUEST-----\n"))
                req = x509.load_pem_x509_csr(r.data["csr"].encode())
                self.assertTrue(req.is_signature_valid)
                self.assertEqual(spki(req.public_key()), spki(self.version_public(key, 1)))
                self.assertEqual(len(req.subject), 0)

    def test_csr_template_and_version(self):
        key, _ = self.create_key(type="ecdsa-p384")
        self.assertStatus(self.req("POST", "transit/keys/%s/rotate" % key), 200)
        other = ec.generate_private_key(ec.SECP256R1())
        tmpl = (x509.CertificateSigningRequestBuilder()
                .subject_name(name("svc.example.org", "Example"))
                .add_extension(x509.SubjectAlternativeName(
                    [x509.DNSName("svc.example.org"), x509.DNSName("alt.example.org")]),
                    critical=False)
                .sign(other, hashes.SHA256()))
        tpem = tmpl.public_bytes(serialization.Encoding.PEM).decode()
        for version, body in ((2, {}), (1, {"version": 1}), (2, {"version": 2})):
            with self.subTest(version=version):
                r = self.csr(key, csr=tpem, **body)
                req = x509.load_pem_x509_csr(r.data["csr"].encode())
                self.assertTrue(req.is_signature_valid)
                self.assertEqual(req.subject, tmpl.subject)
                self.assertEqual(spki(req.public_key()), spki(self.version_public(key, version)))
                self.assertNotEqual(spki(req.public_key()), spki(other.public_key()))
                san = req.extensions.get_extension_for_class(x509.SubjectAlternativeName)
                self.assertEqual(san.value.get_values_for_type(x509.DNSName),
                                 ["svc.example.org", "alt.example.org"])
                self.assertIsInstance(req.signature_hash_algorithm, hashes.SHA384)

    def test_csr_refusals(self):
        key, _ = self.create_key(type="ecdsa-p256")
        aes, _ = self.create_key()
        derived, _ = self.create_key(type="ed25519", derived=True)
        self.assertError(self.csr("nope", 400), 400, "key with provided name 'nope' not found")
        self.assertError(self.csr(aes, 400), 400, "key type 'aes256-gcm96' does not support "
                                                  "signing")
        self.assertError(self.csr(derived, 400), 400,
                         "operation not supported for keys with derivation enabled")
        self.assertError(self.csr(key, 400, csr="garbage"), 400, "could not decode PEM CSR")
        self.assertError(self.csr(key, 400, version=2), 400,
                         "could not create the csr: no such key version")
        self.assertError(self.csr(key, 400, version=0), 400,
                         "could not create the csr: no such key version")
        self.assertStatus(self.req("DELETE", "transit/keys/%s/soft-delete" % key), 200)
        self.assertError(self.csr(key, 400), 400,
                         "could not create the csr: refusing to use soft-deleted key")

    def set_cert(self, key, chain, status=200, **body):
        body["certificate_chain"] = chain
        r = self.req("POST", "transit/keys/%s/set-certificate" % key, body)
        self.assertStatus(r, status)
        return r

    def test_set_certificate_round_trip(self):
        root = make_ca("root")
        inter = make_ca("intermediate", issuer=root)
        for key_type in SIGNING:
            with self.subTest(type=key_type):
                key, _ = self.create_key(type=key_type)
                self.assertStatus(self.req("POST", "transit/keys/%s/rotate" % key), 200)
                req = x509.load_pem_x509_csr(self.csr(key, version=1).data["csr"].encode())
                leaf = issue(inter, req.public_key(), ca_flag=False)
                chain = pem(leaf) + pem(inter[1]) + pem(root[1])
                r = self.set_cert(key, chain, version=1)
                self.assertEqual(r.data, {"name": key, "type": key_type,
                                          "certificate_chain": chain})
                want = "\n".join(pem(c).strip() for c in (leaf, inter[1], root[1]))
                k = self.read_key(key)
                self.assertEqual(k["keys"]["1"]["certificate_chain"], want)
                self.assertEqual(k["keys"]["2"]["certificate_chain"], "")
                r = self.req("GET", "transit/export/certificate-chain/%s/1" % key)
                self.assertStatus(r, 200)
                self.assertEqual(r.data["keys"], {"1": want})
                self.assertError(self.req("GET", "transit/export/certificate-chain/%s/2" % key),
                                 500, multierror("selected key version does not have a "
                                                 "certificate chain imported"))
                # latest by default; a leaf alone is a chain too; setting again replaces it
                req2 = x509.load_pem_x509_csr(self.csr(key).data["csr"].encode())
                leaf2 = issue(root, req2.public_key())
                self.set_cert(key, pem(leaf2))
                self.assertEqual(self.read_key(key)["keys"]["2"]["certificate_chain"],
                                 pem(leaf2).strip())
                leaf3 = issue(root, req.public_key(), cn="again")
                self.set_cert(key, pem(leaf3) + pem(root[1]), version=1)
                self.assertEqual(self.read_key(key)["keys"]["1"]["certificate_chain"],
                                 pem(leaf3).strip() + "\n" + pem(root[1]).strip())

    def test_chains_follow_the_versions(self):
        root = make_ca()
        key, _ = self.create_key(type="ecdsa-p256")
        for _ in range(2):
            self.assertStatus(self.req("POST", "transit/keys/%s/rotate" % key), 200)
        for v in (1, 2, 3):
            req = x509.load_pem_x509_csr(self.csr(key, version=v).data["csr"].encode())
            self.set_cert(key, pem(issue(root, req.public_key(), cn="v%d" % v)), version=v)
        self.assertStatus(self.req("POST", "transit/keys/%s/config" % key,
                                   {"min_decryption_version": 3, "min_encryption_version": 3,
                                    "deletion_allowed": True}), 200)
        self.assertStatus(self.req("POST", "transit/keys/%s/trim" % key,
                                   {"min_available_version": 3}), 200)
        self.assertEqual(list(self.read_key(key)["keys"]), ["3"])
        self.assertIn("BEGIN CERTIFICATE", self.read_key(key)["keys"]["3"]["certificate_chain"])
        # a key of the same name made after a delete has no chains
        self.assertStatus(self.req("DELETE", "transit/keys/%s" % key), 204)
        self.create_key(key, type="ecdsa-p256")
        for _ in range(2):
            self.assertStatus(self.req("POST", "transit/keys/%s/rotate" % key), 200)
        self.assertEqual({v["certificate_chain"] for v in self.read_key(key)["keys"].values()},
                         {""})

    def test_set_certificate_refusals(self):
        root = make_ca()
        key, _ = self.create_key(type="ecdsa-p256")
        rkey, _ = self.create_key(type="rsa-2048")
        aes, _ = self.create_key()
        req = x509.load_pem_x509_csr(self.csr(key).data["csr"].encode())
        leaf = issue(root, req.public_key())
        stranger = issue(root, ec.generate_private_key(ec.SECP256R1()).public_key())
        cases = [
            ("nope", pem(leaf), {}, 400, "key with provided name 'nope' not found"),
            (aes, pem(leaf), {}, 400, "key type 'aes256-gcm96' does not support signing"),
            (key, "", {}, 400, "provided certificate chain did not contain any valid PEM "
                               "encoded certificate"),
            (key, "junk", {}, 400, "could not decode a PEM block in the certificate chain"),
            (key, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", {}, 400,
             "could not parse a certificate in the certificate chain: x509: malformed "
             "certificate"),
            (key, pem(root[1]), {}, 400, "failed to persist certificate chain: certificate in "
                                         "the first element is not a valid leaf certificate"),
            (key, pem(leaf) + pem(leaf), {}, 400, "failed to persist certificate chain: "
                                                  "certificate in the last element is not a "
                                                  "valid CA certificate"),
            (key, pem(leaf) + pem(leaf) + pem(root[1]), {}, 400,
             "failed to persist certificate chain: could not validate if there is only one "
             "leaf certificate in the provided chain"),
            (key, pem(leaf), {"version": 5}, 400,
             "failed to persist certificate chain: no such key version"),
            (rkey, pem(leaf), {}, 400,
             "failed to persist certificate chain: could not validate key match between leaf "
             "certificate key and key entry in transit: provided leaf certificate public key "
             "algorithm 'ECDSA' does not match the transit key type 'rsa-2048'"),
            (key, pem(stranger), {}, 500,
             multierror("failed to persist certificate chain: leaf certificate public key does "
                        "not match the selected key version")),
        ]
        for target, chain, extra, status, msg in cases:
            with self.subTest(msg=msg):
                self.assertError(self.set_cert(target, chain, status, **extra), status, msg)
        self.assertEqual(self.read_key(key)["keys"]["1"]["certificate_chain"], "")
        # other PEM blocks are ignored, as OpenBao's parser does
        keypem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).decode()
        self.set_cert(key, pem(leaf) + keypem)
        self.assertEqual(self.read_key(key)["keys"]["1"]["certificate_chain"], pem(leaf).strip())

    def test_chains_travel_in_backups(self):
        root = make_ca()
        key, _ = self.create_key(type="ecdsa-p384", exportable=True, allow_plaintext_backup=True)
        self.assertStatus(self.req("POST", "transit/keys/%s/rotate" % key), 200)
        req = x509.load_pem_x509_csr(self.csr(key, version=2).data["csr"].encode())
        leaf = issue(root, req.public_key())
        self.set_cert(key, pem(leaf) + pem(root[1]), version=2)
        r = self.req("GET", "transit/backup/%s" % key)
        self.assertStatus(r, 200)
        doc = json.loads(base64.b64decode(r.data["backup"]))
        entries = doc["policy"]["keys"]
        self.assertIsNone(entries["1"]["certificate_chain"])
        # Go's [][]byte: each certificate's DER in base64
        self.assertEqual([base64.b64decode(x) for x in entries["2"]["certificate_chain"]],
                         [leaf.public_bytes(serialization.Encoding.DER),
                          root[1].public_bytes(serialization.Encoding.DER)])
        copy = self.uniq("restored")
        self.assertStatus(self.req("POST", "transit/restore/%s" % copy,
                                   {"backup": r.data["backup"]}), 204)
        k = self.read_key(copy)
        self.assertEqual(k["keys"]["1"]["certificate_chain"], "")
        self.assertEqual(k["keys"]["2"]["certificate_chain"],
                         pem(leaf).strip() + "\n" + pem(root[1]).strip())
        # a chain that does not parse is refused, and nothing is written
        entries["2"]["certificate_chain"] = [base64.b64encode(b"0\x03\x02\x01\x00").decode()]
        bad = base64.b64encode(json.dumps(doc).encode()).decode()
        other = self.uniq("bad")
        self.assertError(self.req("POST", "transit/restore/%s" % other, {"backup": bad}), 400,
                         "invalid certificate chain for version 2 in backup")
        self.assertStatus(self.req("GET", "transit/keys/%s" % other), 404)

    def test_hvac_generic_calls_and_restart(self):
        client = hvac.Client(url=self.server.addr, token=self.server.root_token)
        self.addCleanup(client.adapter.close)
        key, _ = self.create_key(type="ed25519")
        # hvac has no csr/set-certificate methods: its generic write, as an application would
        got = client.write("transit/keys/%s/csr" % key,
                           csr=x509.CertificateSigningRequestBuilder()
                           .subject_name(name("hvac")).sign(ed25519.Ed25519PrivateKey.generate(),
                                                            None)
                           .public_bytes(serialization.Encoding.PEM).decode())
        req = x509.load_pem_x509_csr(got["data"]["csr"].encode())
        self.assertTrue(req.is_signature_valid)
        self.assertEqual(req.subject, name("hvac"))
        root = make_ca()
        leaf = issue(root, req.public_key(), cn="hvac")
        got = client.write("transit/keys/%s/set-certificate" % key,
                           certificate_chain=pem(leaf) + pem(root[1]))
        self.assertEqual(got["data"]["certificate_chain"], pem(leaf) + pem(root[1]))
        read = client.secrets.transit.read_key(key)
        self.assertEqual(read["data"]["keys"]["1"]["certificate_chain"],
                         pem(leaf).strip() + "\n" + pem(root[1]).strip())


if __name__ == "__main__":
    unittest.main()
