"""`ext-authz explain`: the trace for a table of requests matches golden files.

Set UPDATE_GOLDEN=1 to rewrite the files after an intended change, then review the diff.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ext_authz.authorizer import Authorizer
from ext_authz.clock import FixedClock
from ext_authz.decision import Deny
from ext_authz.explain import explain, parse_header_args
from ext_authz.keys.store import StaticKeys
from ext_authz.policy.loader import compile_policy_text
from ext_authz.policy.model import Policy
from ext_authz.request import RequestView
from tests.support.tokens import CORP, NOW, PARTNER, ROGUE_RSA, mint, policy_yaml

GOLDEN = Path(__file__).parent / "golden" / "explain"

ROUTES = """\
routes:
  - name: health
    match: { path: /healthz }
    allow: anonymous
  - name: read-orders
    match: { path_prefix: /api/orders, methods: [GET, HEAD] }
    require:
      scopes: [orders:read]
    headers:
      x-user-id: sub
      x-tenant-id: org.tenant
      x-nickname: nickname
  - name: write-orders
    match: { path_prefix: /api/orders, methods: [POST] }
    require:
      issuers: [corp]
      scopes: [orders:write]
      claims: { email_verified: true }
  - name: trial
    match: { path_prefix: /trial, hosts: ["*.example.com"] }
    mode: dry_run
    require: { scopes: [admin] }
  - name: everything-else
    match: { path_prefix: / }
    deny: true
"""


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    return compile_policy_text(
        policy_yaml(CORP, PARTNER, routes=ROUTES),
        label="policy.yaml",
        base_dir=tmp_path_factory.mktemp("explain"),
    )


def req(
    path: str, token: str | None = None, method: str = "GET", host: str = "api.example.com"
) -> RequestView:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return RequestView(method, path, host, headers)


CASES: dict[str, Callable[[], RequestView]] = {
    "allow_read": lambda: req("/api/orders/7", mint(CORP)),
    "allow_partner": lambda: req("/api/orders", mint(PARTNER)),
    "anonymous": lambda: req("/healthz"),
    "no_token": lambda: req("/api/orders"),
    "expired": lambda: req("/api/orders", mint(CORP, exp=NOW - 3600)),
    "wrong_audience": lambda: req("/api/orders", mint(CORP, aud="billing")),
    "unknown_issuer": lambda: req("/api/orders", mint(CORP, iss="https://nobody.test")),
    "bad_signature": lambda: req("/api/orders", mint(CORP, key=ROGUE_RSA)),
    "missing_scope": lambda: req("/api/orders", mint(CORP, scope="profile")),
    "issuer_not_on_route": lambda: req("/api/orders", mint(PARTNER), method="POST"),
    "claim_mismatch": lambda: req("/api/orders", mint(CORP, email_verified=False), "POST"),
    "unsafe_header_value": lambda: req("/api/orders", mint(CORP, nickname="a\r\nb")),
    "dry_run": lambda: req("/trial/1", mint(CORP)),
    "deny_route": lambda: req("/admin", mint(CORP)),
    # the server's reason, once: not `issuer_unknown` below a `claim_type_invalid`
    "issuer_a_number": lambda: req("/api/orders", mint(CORP, iss=7)),
    "issuer_a_list": lambda: req("/api/orders", mint(CORP, iss=[CORP.iss])),
    "exp_beyond_float": lambda: req("/api/orders", mint(CORP, exp=10**400)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_explain_matches_golden(name: str, policy: Policy) -> None:
    keys = StaticKeys(
        {n: i.source.static_keys for n, i in policy.issuers.items() if i.source.static_keys}
    )
    request = CASES[name]()
    result = explain(policy, keys, request, FixedClock(NOW))
    text = result.text()
    token = request.headers.get("authorization", "").removeprefix("Bearer ")
    if token:
        for part in token.split("."):
            assert part not in text
    golden = GOLDEN / f"{name}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8")
    assert result.allowed == text.splitlines()[1].startswith("decision: allow")


def test_header_values_only_with_show_values(policy: Policy) -> None:
    keys = StaticKeys({"corp": policy.issuers["corp"].source.static_keys})  # type: ignore[dict-item]
    request = req("/api/orders", mint(CORP, sub="secret-subject"))
    hidden = explain(policy, keys, request, FixedClock(NOW)).text()
    shown = explain(policy, keys, request, FixedClock(NOW), show_values=True).text()
    assert "secret-subject" not in hidden
    assert "set header x-user-id: secret-subject" in shown


def test_parse_header_args() -> None:
    assert parse_header_args(["X-A: 1", "b:two: three"]) == {"x-a": "1", "b": "two: three"}
    with pytest.raises(ValueError, match="not 'name: value'"):
        parse_header_args(["nonsense"])


def test_cli_exit_codes(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_yaml(CORP, routes=ROUTES), encoding="utf-8")
    base = [sys.executable, "-m", "ext_authz", "explain", "--config", str(policy)]
    allowed = subprocess.run(
        [*base, "--path", "/healthz"], capture_output=True, text=True, check=False
    )
    assert allowed.returncode == 0, allowed.stderr
    assert "decision: allow" in allowed.stdout
    denied = subprocess.run(
        [*base, "--path", "/api/orders"], capture_output=True, text=True, check=False
    )
    assert denied.returncode == 1
    assert "token_missing" in denied.stdout


# explain and the server agree, whatever the claims and the policy ------------------

TYPED_ROUTES = ROUTES.replace(
    "  - name: everything-else\n    match: { path_prefix: / }\n    deny: true\n", ""
)


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory, policy: Policy) -> list[Policy]:
    """The table's policy, and one whose corp issuer wants `at+jwt` and whose routes
    leave requests unmatched."""
    typed = policy_yaml(CORP, PARTNER, routes=TYPED_ROUTES).replace(
        f'    issuer: "{CORP.iss}"', f'    issuer: "{CORP.iss}"\n    typ: [at+jwt]', 1
    )
    base = tmp_path_factory.mktemp("explain-typed")
    return [policy, compile_policy_text(typed, label="policy.yaml", base_dir=base)]


_DROP: Any = object()
claim_values = {
    "iss": st.sampled_from([CORP.iss, PARTNER.iss, "https://nobody.test", 7, [CORP.iss], _DROP]),
    "exp": st.sampled_from([NOW + 600, NOW - 3600, NOW - 30, "soon", 10**400, True, _DROP]),
    "nbf": st.sampled_from([NOW - 60, NOW + 3600, None, _DROP]),
    "iat": st.sampled_from([NOW - 60, NOW + 3600, -(10**400), _DROP]),
    "aud": st.sampled_from(["orders-api", "billing", ["x", "orders-api"], 42, _DROP]),
    "scope": st.sampled_from(["orders:read orders:write", "orders:read admin", "profile", _DROP]),
    "email_verified": st.sampled_from([True, False, "true"]),
    "nickname": st.sampled_from(["nick", "a\r\nb", 12]),
}


@st.composite
def requests(draw: st.DrawFn) -> RequestView:
    issuer = draw(st.sampled_from([CORP, PARTNER]))
    overrides = {name: draw(values) for name, values in claim_values.items()}
    drop = tuple(name for name, value in overrides.items() if value is _DROP)
    claims = {name: value for name, value in overrides.items() if value is not _DROP}
    header: dict[str, Any] = {"typ": draw(st.sampled_from(["at+jwt", "JWT", "application/AT+JWT"]))}
    if draw(st.booleans()):
        header["kid"] = draw(st.sampled_from([issuer.kid, "nope"]))
    else:
        header["kid"] = None
    key = ROGUE_RSA if issuer is CORP and draw(st.booleans()) else None
    token = mint(issuer, key=key, headers=header, drop=drop, **claims)
    path = draw(st.sampled_from(["/healthz", "/api/orders", "/api/orders/7", "/trial/1", "/x"]))
    method = draw(st.sampled_from(["GET", "POST", "DELETE"]))
    host = draw(st.sampled_from(["api.example.com", "other.test"]))
    with_token = draw(st.integers(0, 9)) > 0
    return req(path, token if with_token else None, method, host)


@given(request=requests(), which=st.integers(0, 1))
def test_explain_and_the_server_agree(
    request: RequestView, which: int, policies: list[Policy]
) -> None:
    policy = policies[which]
    keys = StaticKeys(
        {n: i.source.static_keys for n, i in policy.issuers.items() if i.source.static_keys}
    )
    server = Authorizer(lambda: policy, keys, FixedClock(NOW)).check(request)
    result = explain(policy, keys, request, FixedClock(NOW))
    assert result.decision == server
    failures = [step for step in result.trace.steps if not step.held]
    phases = [step.phase for step in result.trace.steps]
    assert len(phases) == len(set(phases)), "a phase reported twice"
    failed_lines = [line for line in result.text().splitlines() if ": FAILED " in line]
    reason = server.reason if isinstance(server, Deny) else server.dry_run
    if reason is None:
        assert failures == []
        assert failed_lines == []
        return
    assert len(failures) == 1
    assert failures[0].reason is reason
    if failures[0].phase != "route":
        assert len(failed_lines) == 1 and f"FAILED {reason.value}" in failed_lines[0]
