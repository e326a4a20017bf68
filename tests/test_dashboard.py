"""The Grafana dashboard and the Prometheus alert rules name only what the server exports.

A real server (subprocess, remote issuer, hot reload on) is driven until every kind of
series exists: allowed and denied checks, a key fetch, an accepted and a refused
reload. Its `/metrics` is scraped, and every metric in every dashboard query and alert
expression must be among the scraped sample names, with label matchers that name the
metric's own labels and, for closed sets, values that exist.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ext_authz.decision import Allow, Deny, outcome
from ext_authz.errors import DenialReason
from ext_authz.keys.store import KeyStatus
from tests.support.grpc_check import CheckClient
from tests.support.jwks_server import jwks_server
from tests.support.processes import free_port, running, wait_for_grpc_serving
from tests.support.tokens import CORP, mint_live

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "deploy" / "grafana" / "ext-authz.json"
RULES = REPO / "deploy" / "prometheus" / "ext-authz-rules.yaml"

FUNCTIONS = {
    "sum",
    "max",
    "min",
    "avg",
    "count",
    "rate",
    "increase",
    "histogram_quantile",
    "absent",
    "label_values",
}
KEYWORDS = {"by", "without", "and", "or", "unless", "bool", "on", "ignoring", "offset"}
ADDED_BY_PROMETHEUS = {"instance", "job"}
CLOSED_VALUES = {
    "state": {s.value for s in KeyStatus},
    "reason": {r.value for r in DenialReason} | {""},
    "result": {outcome(Allow("r"))[0], "dry_run", outcome(Deny(DenialReason.TOKEN_MISSING, "x"))[0]}
    | {"ok", "error"},
}

SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
GROUPING = re.compile(r"\b(by|without|on|ignoring)\s*\(([^)]*)\)")
IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*(?=\s*(\()?)")


@dataclass(frozen=True)
class Query:
    where: str
    metrics: frozenset[str]
    matchers: tuple[tuple[str, str, str, str], ...]  # metric, label, op, value
    grouping: frozenset[str]


def parse_promql(where: str, expr: str) -> Query:
    """The metric names, label matchers and grouping labels of a PromQL expression
    (the subset the dashboard and rules use: selectors, ranges, aggregations)."""
    text = re.sub(r"\[[^\]]*\]", "", expr)  # [5m], [$__rate_interval]
    matchers = []
    for metric, body in SELECTOR.findall(text):
        for label, op, value in MATCHER.findall(body):
            matchers.append((metric, label, op, value))
    text = SELECTOR.sub(r"\1", text)
    grouping: set[str] = set()
    for _, labels in GROUPING.findall(text):
        grouping |= {label.strip() for label in labels.split(",") if label.strip()}
    text = GROUPING.sub(" ", text)
    text = re.sub(r'"[^"]*"', "", text)
    metrics = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        name = match.group(0)
        if text[match.start() - 1 : match.start()] in ("$", ".") or name in KEYWORDS:
            continue
        rest = text[match.end() :].lstrip()
        if rest.startswith("("):
            assert name in FUNCTIONS, f"{where}: unexpected function {name}"
            continue
        if name in ADDED_BY_PROMETHEUS:  # label_values(metric, instance)
            continue
        metrics.add(name)
    assert metrics, f"{where}: no metric in {expr!r}"
    return Query(where, frozenset(metrics), tuple(matchers), frozenset(grouping))


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return document


def dashboard_queries() -> list[Query]:
    document = dashboard()
    queries = []
    for panel in document["panels"]:
        for target in panel.get("targets", []):
            queries.append(parse_promql(f"panel {panel['title']!r}", target["expr"]))
    for variable in document["templating"]["list"]:
        if variable["type"] == "query":
            queries.append(parse_promql(f"variable {variable['name']}", variable["definition"]))
    return queries


def rule_queries() -> list[Query]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [
        parse_promql(f"alert {rule['alert']}", rule["expr"])
        for group in document["groups"]
        for rule in group["rules"]
    ]


# --- the files themselves -------------------------------------------------------------


def test_the_dashboard_covers_what_operators_watch() -> None:
    document = dashboard()
    assert document["uid"] == "ext-authz"
    metrics = set().union(*(q.metrics for q in dashboard_queries()))
    assert {
        "ext_authz_decisions_total",  # decisions by result and reason
        "ext_authz_check_duration_seconds_bucket",  # latency percentiles
        "ext_authz_keys_state",  # key states per issuer
        "ext_authz_key_fetches_total",  # key fetch errors
        "ext_authz_policy_reloads_total",  # reloads
        "ext_authz_token_cache_hits_total",  # token cache hit ratio
        "ext_authz_token_cache_misses_total",
    } <= metrics
    exprs = " ".join(t["expr"] for p in document["panels"] for t in p.get("targets", []))
    for quantile in ("0.5", "0.9", "0.99"):
        assert f"histogram_quantile({quantile}," in exprs
    assert "sum by (reason)" in exprs
    assert "sum by (result)" in exprs


def test_every_panel_reads_the_chosen_data_source_and_instances() -> None:
    document = dashboard()
    ids = [p["id"] for p in document["panels"]]
    assert len(ids) == len(set(ids))
    for panel in document["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert 'instance=~"$instance"' in target["expr"], panel["title"]
    cells: set[tuple[int, int]] = set()
    for panel in document["panels"]:  # no two panels overlap on the 24-column grid
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))


def test_the_rules_file_has_the_alerts_of_the_operations_guide() -> None:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    assert set(document) == {"groups"}
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"])
    exprs = {rule["alert"]: " ".join(rule["expr"].split()) for rule in rules}
    operations = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    assert 'ext_authz_keys_state{state="failed"}' in exprs["ExtAuthzIssuerKeysFailed"]
    assert 'ext_authz_keys_state{state="stale"}' in exprs["ExtAuthzIssuerKeysStale"]
    assert "ExtAuthzIssuerKeysStale" in operations
    assert (
        'increase(ext_authz_policy_reloads_total{result="error"}[10m]) > 0'
        in exprs["ExtAuthzPolicyReloadRefused"]
    )
    assert 'reason="internal_error"' in exprs["ExtAuthzInternalErrors"]
    assert "deploy/prometheus/ext-authz-rules.yaml" in operations


def test_the_promql_reader_finds_metrics_labels_and_functions() -> None:
    query = parse_promql(
        "example",
        'histogram_quantile(0.99, sum by (le, result) (rate(m_bucket{instance=~"$i", '
        'result!="allow"}[$__rate_interval]))) / on (x) other_total',
    )
    assert query.metrics == {"m_bucket", "other_total"}
    assert query.matchers == (
        ("m_bucket", "instance", "=~", "$i"),
        ("m_bucket", "result", "!=", "allow"),
    )
    assert query.grouping == {"le", "result", "x"}
    with pytest.raises(AssertionError, match="unexpected function"):
        parse_promql("bad", "topk(3, m)")


# --- against a running server ---------------------------------------------------------


@dataclass(frozen=True)
class Exported:
    samples: frozenset[str]
    labels: dict[str, frozenset[str]]  # sample name -> label names seen


def scrape(port: int) -> Exported:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", trust_env=False, timeout=5).text
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return Exported(frozenset(labels), {k: frozenset(v) for k, v in labels.items()})


def _policy(jwks_uri: str, route: str = "read-orders") -> str:
    return f"""\
issuers:
  corp:
    issuer: {json.dumps(CORP.iss)}
    jwks_uri: {jwks_uri}
    audiences: [orders-api]
    algorithms: [RS256]
routes:
  - name: {route}
    match: {{ path_prefix: /api/orders }}
    require: {{ scopes: [orders:read] }}
  - name: everything-else
    match: {{ path_prefix: / }}
    deny: true
"""


def _wait(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the server never got there"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    tmp = tmp_path_factory.mktemp("metrics")
    with jwks_server(CORP.jwks()) as issuer:
        policy = tmp / "policy.yaml"
        policy.write_text(_policy(issuer.jwks_uri), encoding="utf-8")
        port, metrics_port = free_port(), free_port()
        cmd = [sys.executable, "-m", "ext_authz", "serve", "--config", str(policy)]
        cmd += ["--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{metrics_port}"]
        cmd += ["--reload-interval", "0.2", "--shutdown-delay", "0", "--grace", "2"]
        with running(cmd, name="ext-authz") as server:
            assert wait_for_grpc_serving("127.0.0.1", port, 30.0, server)
            client = CheckClient(f"127.0.0.1:{port}")
            try:
                token = mint_live(CORP)
                assert client.check("/api/orders", token).status == 200
                assert client.check("/api/orders", token).status == 200  # a cache hit
                assert client.check("/api/orders").status == 401
                assert client.check("/internal").status == 403
            finally:
                client.close()
            policy.write_text(_policy(issuer.jwks_uri, route="orders"), encoding="utf-8")
            _wait(lambda: 'result="ok"' in _reloads(metrics_port))
            policy.write_text("issuers: [not, a, mapping\n", encoding="utf-8")
            _wait(lambda: 'result="error"' in _reloads(metrics_port))
            yield scrape(metrics_port)


def _reloads(port: int) -> str:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", trust_env=False, timeout=5).text
    return "\n".join(line for line in text.splitlines() if "policy_reloads_total{" in line)


@pytest.mark.parametrize(
    "source", ["dashboard", "rules"], ids=["grafana dashboard", "prometheus rules"]
)
@pytest.mark.slow
def test_every_queried_metric_is_exported_with_the_labels_queried(
    exported: Exported, source: str
) -> None:
    queries = dashboard_queries() if source == "dashboard" else rule_queries()
    for query in queries:
        missing = query.metrics - exported.samples
        assert not missing, f"{query.where}: {sorted(missing)} not exported"
        known = set().union(*(exported.labels[m] for m in query.metrics))
        known |= ADDED_BY_PROMETHEUS
        if any(m.endswith("_bucket") for m in query.metrics):
            known.add("le")
        assert query.grouping <= known, f"{query.where}: groups by {query.grouping - known}"
        for metric, label, op, value in query.matchers:
            assert label in exported.labels[metric] | ADDED_BY_PROMETHEUS, (query.where, label)
            if label in CLOSED_VALUES and op in ("=", "!="):
                assert value in CLOSED_VALUES[label], (query.where, label, value)


# --- promtool, where it is installed (Debian: apt-get install prometheus) ----------------

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "1h", "$instance": ".*"}


def _alert_rules() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return {rule["alert"]: rule for group in document["groups"] for rule in group["rules"]}


def fires(at: str, alert: str, **labels: str) -> dict[str, Any]:
    """A promtool alert test: `alert` fires at `at` with `labels` (instance "a"), and
    its annotations rendered as Prometheus would."""
    rule = _alert_rules()[alert]
    labels = {"instance": "a", **labels}
    every = {**labels, **rule["labels"]}

    def render(text: str) -> str:
        return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)

    annotations = {k: render(v) for k, v in rule["annotations"].items()}
    return {
        "eval_time": at,
        "alertname": alert,
        "exp_alerts": [{"exp_labels": every, "exp_annotations": annotations}],
    }


def quiet(at: str, alert: str) -> dict[str, Any]:
    return {"eval_time": at, "alertname": alert, "exp_alerts": []}


@needs_promtool
def test_promtool_accepts_the_rules_and_every_dashboard_query(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    checked = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rules = []
    for index, panel in enumerate(dashboard()["panels"]):
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            rules.append({"record": f"dashboard:panel_{index}_{target['refId']}", "expr": expr})
    as_rules = tmp_path / "dashboard-rules.yaml"
    as_rules.write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8"
    )
    checked = subprocess.run(
        [PROMTOOL, "check", "rules", str(as_rules)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@needs_promtool
def test_the_alerts_fire_on_the_series_they_are_about(tmp_path: Path) -> None:
    """promtool's rule unit tests: each alert fires on its failure and not on health."""
    assert PROMTOOL is not None
    series = [
        {
            "series": 'ext_authz_keys_state{instance="a",issuer="corp",state="failed"}',
            "values": "1x10",
        },
        {
            "series": 'ext_authz_keys_state{instance="a",issuer="partner",state="failed"}',
            "values": "0x10",
        },
        {
            "series": 'ext_authz_keys_state{instance="a",issuer="partner",state="stale"}',
            "values": "1x40",
        },
        {
            "series": 'ext_authz_policy_reloads_total{instance="a",result="error"}',
            "values": "0 0 1 1 1",
        },
        {
            "series": 'ext_authz_decisions_total{instance="a",route="r",result="deny",'
            'reason="internal_error"}',
            "values": "0+5x10",
        },
        {
            "series": 'ext_authz_key_fetches_total{instance="a",issuer="corp",result="timeout"}',
            "values": "0+1x10",
        },
    ]
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    fires("5m", "ExtAuthzIssuerKeysFailed", issuer="corp"),
                    quiet("5m", "ExtAuthzIssuerKeysStale"),
                    fires("35m", "ExtAuthzIssuerKeysStale", issuer="partner"),
                    quiet("1m", "ExtAuthzPolicyReloadRefused"),
                    fires("4m", "ExtAuthzPolicyReloadRefused", result="error"),
                    quiet("3m", "ExtAuthzInternalErrors"),  # still inside its `for`
                    fires("9m", "ExtAuthzInternalErrors"),
                    fires("10m", "ExtAuthzKeyFetchErrors", issuer="corp"),
                    quiet("10m", "ExtAuthzSlowChecks"),
                ],
            }
        ],
    }
    test_file = tmp_path / "alerts-test.yaml"
    test_file.write_text(yaml.safe_dump(tests, sort_keys=False), encoding="utf-8")
    result = subprocess.run(
        [PROMTOOL, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
