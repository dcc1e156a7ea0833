"""Prometheus scraping of GET /v1/sys/metrics (docs/operations.md, "Metrics").

After real traffic (key creation, encrypt and decrypt, batches, refused requests, allowed and
denied Kubernetes logins) the text format is checked twice: by `promtool check metrics` from
Debian's prometheus package (a missing promtool fails the test: `make deps` installs it) and
by the grouping rules of the text exposition format that promtool does not enforce (one
# HELP/# TYPE per family, a family's samples together, no series twice; a histogram series
is its _bucket lines with le ascending up to +Inf, then _sum, then _count equal to the +Inf
bucket).

`unauthenticated_metrics_access` (OpenBao's listener telemetry option): true answers without
a token, false (the default) keeps the token requirement; either way sys/metrics is refused
in an organization namespace (400, as in OpenBao) and is never written to the audit log.
"""

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import unittest

from auth_helpers import Issuer, login, make_role, ok, setup_org
from kmsd_harness import KmsdServer, b64, wait_for

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pg"))
from pgtmp import PgCluster  # noqa: E402

ORG = "scrape-org"
NS_REFUSED = "operation unavailable in namespaces"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def promtool():
    path = shutil.which("promtool")
    if path is None:
        raise AssertionError("promtool not found: install Debian's prometheus package "
                             "(`make deps` does)")
    return path


def promtool_check(text):
    """promtool's verdict on `text`: (exit code, everything it printed)."""
    p = subprocess.run([promtool(), "check", "metrics"], input=text.encode(),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def parse_labels(text):
    labels = []
    pos = 0
    while pos < len(text):
        m = LABEL_RE.match(text, pos)
        if m is None:
            raise AssertionError("bad label set {%s}" % text)
        labels.append((m.group(1), m.group(2)))
        pos = m.end()
    return labels


def grouping_problems(text):
    """Every breach of the text format's grouping rules in `text` (empty list: none)."""
    problems = []
    declared = {}           # family -> type
    closed = set()          # families whose block has ended
    series = set()
    current = None          # family whose block we are in
    hist = {}               # histogram series key -> state
    hist_order = []

    def family_of(name):
        if name in declared:
            return name
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[:-len(suffix)]
            if name.endswith(suffix) and declared.get(base) == "histogram":
                return base
        return None

    if not text.endswith("\n"):
        problems.append("the text does not end with a newline")
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            parts = line.split(" ", 3)
            fam = parts[2]
            if line.startswith("# HELP "):
                if fam in declared or fam in closed or fam == current:
                    problems.append("line %d: second # HELP for %s" % (n, fam))
                if current is not None:
                    closed.add(current)
                current = fam
                continue
            if fam != current:
                problems.append("line %d: # TYPE %s without its # HELP just before" % (n, fam))
            if fam in declared:
                problems.append("line %d: second # TYPE for %s" % (n, fam))
            declared[fam] = parts[3] if len(parts) > 3 else ""
            continue
        if line.startswith("#") or line == "":
            problems.append("line %d: unexpected line %r" % (n, line))
            continue
        m = SAMPLE_RE.match(line)
        if m is None:
            problems.append("line %d: not a sample: %r" % (n, line))
            continue
        name, labels, value = m.group(1), parse_labels(m.group(3) or ""), m.group(4)
        fam = family_of(name)
        if fam is None:
            problems.append("line %d: %s has no # TYPE" % (n, name))
            continue
        if fam != current:
            problems.append("line %d: %s outside its family's block (in %s)" % (n, name, current))
        key = (name, tuple(sorted(labels)))
        if key in series:
            problems.append("line %d: series %s%s twice" % (n, name, dict(labels)))
        series.add(key)
        try:
            v = float(value)
        except ValueError:
            problems.append("line %d: value %r is not a number" % (n, value))
            continue
        if declared[fam] != "histogram":
            if declared[fam] == "counter" and (v < 0 or math.isnan(v)):
                problems.append("line %d: counter %s is %s" % (n, name, value))
            continue
        rest = tuple(sorted((k, lv) for k, lv in labels if k != "le"))
        h = hist.get(rest)
        if name == fam + "_bucket":
            le = dict(labels).get("le")
            if le is None:
                problems.append("line %d: bucket without le" % n)
                continue
            if h is None:
                h = {"les": [], "counts": [], "sum": False, "count": None, "line": n}
                hist[rest] = h
                hist_order.append(rest)
            elif h["sum"] or h["count"] is not None:
                problems.append("line %d: bucket after _sum/_count of %s" % (n, dict(rest)))
            if hist_order[-1] != rest:
                problems.append("line %d: buckets of %s interleaved with another series"
                                % (n, dict(rest)))
            bound = float("inf") if le == "+Inf" else float(le)
            if h["les"] and bound <= h["les"][-1]:
                problems.append("line %d: le=%s not above the previous bucket" % (n, le))
            if h["counts"] and v < h["counts"][-1]:
                problems.append("line %d: bucket counts not cumulative" % n)
            h["les"].append(bound)
            h["counts"].append(v)
        elif name == fam + "_sum":
            if h is None or not h["les"] or h["les"][-1] != float("inf"):
                problems.append("line %d: _sum of %s before its +Inf bucket" % (n, dict(rest)))
            elif h["sum"] or h["count"] is not None:
                problems.append("line %d: _sum of %s out of place" % (n, dict(rest)))
            else:
                h["sum"] = True
        elif name == fam + "_count":
            if h is None or not h["sum"]:
                problems.append("line %d: _count of %s before its _sum" % (n, dict(rest)))
            elif h["count"] is not None:
                problems.append("line %d: second _count of %s" % (n, dict(rest)))
            else:
                h["count"] = v
                if v != h["counts"][-1]:
                    problems.append("line %d: _count %s differs from the +Inf bucket %s"
                                    % (n, value, h["counts"][-1]))
        else:
            problems.append("line %d: %s is not a histogram sample name" % (n, name))
    for rest, h in hist.items():
        if h["count"] is None:
            problems.append("histogram series %s (line %d) has no _count"
                            % (dict(rest), h["line"]))
    return problems


def samples(text):
    """{(name, frozenset(labels)): value} of every sample line."""
    out = {}
    for line in text.splitlines():
        m = SAMPLE_RE.match(line)
        if m and not line.startswith("#"):
            out[(m.group(1), frozenset(parse_labels(m.group(3) or "")))] = float(m.group(4))
    return out


def value(text, name, **labels):
    return samples(text).get((name, frozenset(labels.items())), 0.0)


class GroupingCheckerTest(unittest.TestCase):
    """The checker itself finds what promtool 2.42 lets through."""

    GOOD = ("# HELP a_total A.\n# TYPE a_total counter\na_total{r=\"x\"} 1\n"
            "# HELP h H.\n# TYPE h histogram\n"
            "h_bucket{r=\"x\",le=\"0.5\"} 1\nh_bucket{r=\"x\",le=\"+Inf\"} 2\n"
            "h_sum{r=\"x\"} 1.5\nh_count{r=\"x\"} 2\n")

    def test_good_text(self):
        self.assertEqual(grouping_problems(self.GOOD), [])

    def test_breaches(self):
        bad = {
            "interleaved family": self.GOOD + "a_total{r=\"y\"} 1\n",
            "duplicate series": self.GOOD.replace("a_total{r=\"x\"} 1\n",
                                                  "a_total{r=\"x\"} 1\na_total{r=\"x\"} 2\n"),
            "second HELP": self.GOOD + "# HELP a_total A.\n",
            "le descending": self.GOOD.replace("le=\"0.5\"", "le=\"+Inf\"", 1),
            "no +Inf": self.GOOD.replace("h_bucket{r=\"x\",le=\"+Inf\"} 2\n", ""),
            "count first": self.GOOD.replace("h_sum{r=\"x\"} 1.5\nh_count{r=\"x\"} 2\n",
                                             "h_count{r=\"x\"} 2\nh_sum{r=\"x\"} 1.5\n"),
            "count differs": self.GOOD.replace("h_count{r=\"x\"} 2", "h_count{r=\"x\"} 3"),
        }
        for what, text in bad.items():
            with self.subTest(what):
                self.assertNotEqual(grouping_problems(text), [], text)


class MetricsScrapeBase(unittest.TestCase):
    server_config = {}

    @classmethod
    def setUpClass(cls):
        promtool()  # no promtool: every test of the class fails, none is skipped
        cfg = dict(cls.server_config)
        cls.srv = KmsdServer(mode="config", config=cfg)
        cls.audit_path = os.path.join(cls.srv.workdir, "audit.log")
        cls.srv.config["audit_file"] = cls.audit_path
        try:
            cls.srv.start()
            r = cls.srv.request("PUT", "sys/init", {}, token=None)
            if r.status != 200:
                raise AssertionError("sys/init: " + r.describe())
            cls.srv.token = r.json["root_token"]
            ok(cls.srv.request("POST", "sys/mounts/transit", {"type": "transit"}))
            cls.issuer = Issuer()
            setup_org(cls.srv, org=ORG, issuer=cls.issuer)
            make_role(cls.srv, "app", ["default"], org=ORG)
            cls.traffic()
        except BaseException:
            cls.srv.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            rc = cls.srv.stop()
            if rc != 0:
                raise AssertionError("kmsd did not exit cleanly (rc=%r)\n%s"
                                     % (rc, cls.srv.log_tail()))
        finally:
            cls.srv.cleanup()

    @classmethod
    def traffic(cls):
        """Encrypt, decrypt, a batch, errors and logins, in the root namespace and ORG."""
        srv = cls.srv
        ok(srv.request("POST", "transit/keys/scrape", {}), 200)
        cts = []
        for i in range(5):
            r = ok(srv.request("POST", "transit/encrypt/scrape",
                               {"plaintext": b64("metrics %d" % i)}), 200)
            cts.append(r.json["data"]["ciphertext"])
        for ct in cts:
            ok(srv.request("POST", "transit/decrypt/scrape", {"ciphertext": ct}), 200)
        ok(srv.request("POST", "transit/encrypt/scrape",
                       {"batch_input": [{"plaintext": b64("b%d" % i)} for i in range(3)]}), 200)
        ok(srv.request("POST", "transit/decrypt/scrape", {"ciphertext": "vault:v1:AAAA"}), 400)
        ok(srv.request("POST", "transit/decrypt/missing-key", {"ciphertext": "vault:v1:AAAA"}), 400)
        ok(srv.request("GET", "transit/keys/scrape", token="not-a-token"), 403)
        ok(srv.request("GET", "no-such-mount/x"), 404)
        ok(srv.request("POST", "transit/keys/scrape", {}, namespace=ORG), 200)
        # two allowed logins, one refused for its role binding, one for its signature
        for _ in range(2):
            ok(login(srv, "app", cls.issuer.mint(), org=ORG), 200)
        ok(login(srv, "app", cls.issuer.mint(sa="intruder"), org=ORG), 403)
        ok(login(srv, "app", Issuer().mint(), org=ORG), 403)

    def scrape(self, token=None, namespace=None, fmt="prometheus", path="sys/metrics"):
        q = "?format=%s" % fmt if fmt else ""
        return self.srv.request("GET", path + q, token=token, namespace=namespace)

    def assertScrapeValid(self, r):
        self.assertEqual(r.status, 200, r.describe())
        self.assertEqual(r.header("Content-Type"), CONTENT_TYPE)
        text = r.body.decode("utf-8")
        rc, out = promtool_check(text)
        self.assertEqual((rc, out), (0, ""), "promtool check metrics:\n%s\n---\n%s" % (out, text))
        self.assertEqual(grouping_problems(text), [], text)
        return text

    def assertTraffic(self, text):
        req = "kmsd_requests_total"
        self.assertGreaterEqual(
            value(text, req, route="transit:encrypt/:name", code="200"), 6, text)
        self.assertGreaterEqual(
            value(text, req, route="transit:decrypt/:name", code="200"), 5, text)
        self.assertGreaterEqual(
            value(text, req, route="transit:decrypt/:name", code="400"), 1, text)
        self.assertGreaterEqual(value(text, req, route="unmatched", code="404"), 1, text)
        self.assertGreaterEqual(value(text, "kmsd_batch_items_total",
                                      route="transit:encrypt/:name"), 3, text)
        self.assertGreaterEqual(value(text, "kmsd_logins_total", result="allowed"), 2, text)
        self.assertGreaterEqual(value(text, "kmsd_logins_total", result="denied"), 2, text)
        self.assertGreaterEqual(value(text, "kmsd_request_duration_seconds_count",
                                      route="transit:encrypt/:name"), 6, text)
        self.assertGreaterEqual(value(text, "kmsd_transit_keys"), 2, text)

    def assertNamespaceRefused(self, token):
        for kw in ({"namespace": ORG}, {"path": ORG + "/sys/metrics"}):
            with self.subTest(**kw):
                r = self.scrape(token=token, **kw)
                self.assertEqual(r.status, 400, r.describe())
                self.assertEqual(r.errors, [NS_REFUSED], r.describe())

    def assertNotAudited(self):
        # the traffic's own lines are durable before each answer; wait for the last one
        def audit_text():
            with open(self.audit_path, encoding="utf-8") as f:
                text = f.read()
            return text if "auth/k8s-host/login" in text else None
        text = wait_for(audit_text, 10, "the traffic's audit lines in " + self.audit_path)
        for line in text.splitlines():
            rec = json.loads(line)
            path = (rec.get("request") or {}).get("path", "")
            self.assertFalse(path.endswith("sys/metrics"), line)


class UnauthenticatedMetricsTest(MetricsScrapeBase):
    server_config = {"unauthenticated_metrics_access": True}

    def test_scrape_without_token(self):
        text = self.assertScrapeValid(self.scrape())
        self.assertTraffic(text)

    def test_scrape_with_token_same_format(self):
        self.assertScrapeValid(self.scrape(token=self.srv.token))
        self.assertScrapeValid(self.scrape(token="not-a-token"))

    def test_json_without_token(self):
        r = self.scrape(fmt=None)
        self.assertEqual(r.status, 200, r.describe())
        self.assertTrue(any(s.startswith("kmsd_requests_total{") for s in r.data["samples"]),
                        r.describe())

    def test_org_namespace_refused(self):
        self.assertNamespaceRefused(None)
        self.assertNamespaceRefused(self.srv.token)

    def test_only_metrics_is_opened(self):
        for path in ("sys/mounts", "sys/audit", "transit/keys/scrape"):
            with self.subTest(path=path):
                self.assertEqual(self.srv.request("GET", path, token=None).status, 403)

    def test_not_audited(self):
        for _ in range(3):
            self.assertEqual(self.scrape().status, 200)
        self.assertNotAudited()


class TokenMetricsTest(MetricsScrapeBase):
    """The default: a token is needed (the explicit false of the next class is the same)."""

    def test_scrape_needs_token(self):
        for token in (None, "not-a-token"):
            with self.subTest(token=token):
                r = self.scrape(token=token)
                self.assertEqual(r.status, 403, r.describe())
                self.assertEqual(r.errors, ["permission denied"], r.describe())

    def test_scrape_with_token(self):
        text = self.assertScrapeValid(self.scrape(token=self.srv.token))
        self.assertTraffic(text)

    def test_org_namespace_refused(self):
        self.assertNamespaceRefused(self.srv.token)

    def test_not_audited(self):
        self.assertEqual(self.scrape(token=self.srv.token).status, 200)
        self.assertNotAudited()


class ExplicitFalseMetricsTest(TokenMetricsTest):
    server_config = {"unauthenticated_metrics_access": False}


class PostgresqlCountsTest(unittest.TestCase):
    """On PostgreSQL the store gauges count rows: every scrape ran four count(*) queries (a
    million tokens, ~40 ms), so a client scraping in a loop, with no token under
    unauthenticated_metrics_access, kept a database backend counting full time. The counts are
    now reused for 100 times as long as counting took."""

    PASSWORD = "pg-Secret-metrics-1"
    ROWS = 300000

    def test_counts_are_not_recounted_at_every_scrape(self):
        pg = PgCluster.started_with_password(self.PASSWORD)
        srv = KmsdServer(mode="config", config={})
        try:
            pw = os.path.join(srv.workdir, "pg.password")
            with open(pw, "w") as f:
                f.write(self.PASSWORD + "\n")
            os.chmod(pw, 0o600)
            srv.config = {"storage": "postgresql", "postgresql_url": pg.tcp_url,
                          "postgresql_password_file": pw, "unauthenticated_metrics_access": True}
            srv.start()
            self.assertEqual(srv.request("PUT", "sys/init", {}, token=None).status, 200)
            # token records (db 5) that only count(*) reads
            pg.psql("INSERT INTO kmsd_records (db, key, value) SELECT 5, "
                    "int4send(g), '\\x00'::bytea FROM generate_series(1, %d) g" % self.ROWS)
            pg.psql("ALTER SYSTEM SET log_statement = 'all'")
            pg.psql("SELECT pg_reload_conf()")
            log = os.path.join(pg.dir, "log")

            def logged(text):
                with open(log, errors="replace") as f:
                    return f.read().count(text)
            marker = "SELECT 'metrics-scrape-marker'"
            wait_for(lambda: pg.psql(marker) and logged(marker) > 0, 10, "statement logging")
            before = logged("count(*)")

            def tokens():
                r = srv.request("GET", "sys/metrics?format=prometheus", token=None)
                self.assertEqual(r.status, 200, r.describe())
                return value(r.body.decode(), "kmsd_tokens")
            self.assertGreaterEqual(tokens(), self.ROWS)  # the first scrape counts
            for _ in range(19):
                tokens()
            # at 40 ms a million rows, the first count is reused for ~1 s: 19 scrapes fit in it
            # (a second round at most on a loaded machine); every scrape counted: 80
            self.assertLessEqual(logged("count(*)") - before, 8)
            # the counts follow the store, a while later
            pg.psql("DELETE FROM kmsd_records WHERE db = 5 AND key = int4send(1)")
            wait_for(lambda: tokens() < self.ROWS + 1 or None, 30, "kmsd_tokens to drop")
        finally:
            try:
                srv.stop()
            finally:
                srv.cleanup()
                pg.destroy()


class NoAuditDeviceTest(unittest.TestCase):
    """docs/operations.md: the audit families are there with an audit device only. A server
    without one (every dev server not given -audit-file) keeps an audit broker of no devices,
    and used to answer five families of zeros that describe no log."""

    def test_no_audit_families_without_a_device(self):
        srv = KmsdServer(mode="dev")
        try:
            srv.start()
            r = srv.request("GET", "sys/metrics?format=prometheus")
            self.assertEqual(r.status, 200, r.describe())
            text = r.body.decode()
            self.assertIn("\nkmsd_transit_keys ", text)
            self.assertNotIn("kmsd_audit_", text)
            r = srv.request("GET", "sys/metrics")
            self.assertEqual(r.status, 200, r.describe())
            samples = r.json["data"]["samples"]
            self.assertTrue(any(s.startswith("kmsd_tokens ") for s in samples), samples)
            self.assertEqual([s for s in samples if s.startswith("kmsd_audit_")], [])
        finally:
            srv.stop()
            srv.cleanup()


class ConfigValueTest(unittest.TestCase):
    def test_not_a_boolean(self):
        srv = KmsdServer(mode="config", config={"unauthenticated_metrics_access": "yes"})
        try:
            srv.spawn()
            rc = srv.wait_exit(10)
            self.assertNotEqual(rc, None, "kmsd kept running with a string value")
            self.assertNotEqual(rc, 0)
            wait_for(lambda: "\"unauthenticated_metrics_access\" must be true or false"
                     in srv.log_text(), 5, lambda: "the config error\n" + srv.log_tail())
        finally:
            srv.cleanup()


if __name__ == "__main__":
    unittest.main()
