"""`ext-authz explain`: the trace for a table of requests matches golden files.

Set UPDATE_GOLDEN=1 to rewrite the files after an intended change, then review the diff.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from ext_authz.authorizer import Authorizer
from ext_authz.decision import Deny
from ext_authz.explain import explain, parse_header_args
from ext_authz.policy.loader import compile_policy_text
from ext_authz.policy.model import Policy
from ext_authz.request import RequestView
from tests.support.doubles import FixedClock, StaticKeys
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
    keys = StaticKeys.of(policy)
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
    keys = StaticKeys.of(policy)
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


@st.composite
def policies(draw: st.DrawFn) -> str:
    """A policy text: the two issuers with drawn checks, and drawn routes."""
    lines = ["realm: orders", "issuers:"]
    for issuer in (CORP, PARTNER):
        lines += [
            f"  {issuer.name}:",
            f'    issuer: "{issuer.iss}"',
            f"    algorithms: [{issuer.alg}]",
            f"    jwks: {json.dumps(issuer.jwks())}",
            f"    leeway: {draw(st.sampled_from([0, 60]))}",
        ]
        if draw(st.booleans()):
            lines.append("    audiences: [orders-api]")
        if draw(st.booleans()):
            lines.append(f"    typ: {draw(st.sampled_from(['[at+jwt]', '[at+jwt, JWT]']))}")
    lines.append("routes:")
    lines += ["  - name: health", "    match: { path: /healthz }", "    allow: anonymous"]
    for index in range(draw(st.integers(1, 3))):
        prefix = draw(st.sampled_from(["/api/orders", "/api", "/trial", "/"]))
        methods = draw(st.sampled_from(["", ", methods: [GET]", ", methods: [POST, DELETE]"]))
        lines += [f"  - name: r{index}", f"    match: {{ path_prefix: {prefix}{methods} }}"]
        access = draw(st.sampled_from(["require", "require", "require", "deny", "anonymous"]))
        if access == "deny":
            lines.append("    deny: true")
            continue
        if access == "anonymous":
            lines.append("    allow: anonymous")
            continue
        scopes = draw(
            st.lists(st.sampled_from(["orders:read", "orders:write", "admin"]), unique=True)
        )
        require = [f"scopes: {json.dumps(scopes)}"]
        issuers = draw(st.sampled_from([None, ["corp"], ["partner"], ["corp", "partner"]]))
        if issuers is not None:
            require.append(f"issuers: {json.dumps(issuers)}")
        if draw(st.booleans()):
            require.append("claims: { email_verified: true }")
        lines.append(f"    require: {{ {', '.join(require)} }}")
        lines.append("    headers: { x-user-id: sub, x-nickname: nickname }")
        if draw(st.booleans()):
            lines.append("    mode: dry_run")
        lines.append(f"    unsafe_values: {draw(st.sampled_from(['drop', 'deny']))}")
    if draw(st.booleans()):
        lines += ["  - name: rest", "    match: { path_prefix: / }", "    deny: true"]
    return "\n".join(lines) + "\n"


_DROP: Any = object()
# per claim: the good value (None: the issuer's own), then the faults one may carry
FAULTS: dict[str, tuple[Any, list[Any]]] = {
    "iss": (None, [PARTNER.iss, "https://nobody.test", 7, [CORP.iss], _DROP]),
    "exp": (NOW + 600, [NOW - 3600, NOW - 30, "soon", 10**400, True, _DROP]),
    "nbf": (NOW - 60, [NOW + 3600, None]),
    "iat": (NOW - 60, [NOW + 3600, -(10**400)]),
    "aud": ("orders-api", ["billing", ["x", "orders-api"], 42, _DROP]),
}
FREE: dict[str, list[Any]] = {
    "scope": ["orders:read orders:write", "orders:read admin", "orders:read", "profile", _DROP],
    "email_verified": [True, False, "true"],
    "nickname": ["nick", "a\r\nb", 12],
}


def _rarely(draw: st.DrawFn) -> bool:
    """True about one time in six: faults are drawn rarely, so that most tokens get far
    enough into the pipeline for later steps to decide."""
    return draw(st.integers(0, 5)) == 0


@st.composite
def requests(draw: st.DrawFn) -> RequestView:
    issuer = draw(st.sampled_from([CORP, PARTNER]))
    overrides: dict[str, Any] = {}
    for name, (good, faults) in FAULTS.items():
        default = issuer.iss if good is None else good
        overrides[name] = draw(st.sampled_from(faults)) if _rarely(draw) else default
    overrides |= {name: draw(st.sampled_from(values)) for name, values in FREE.items()}
    drop = tuple(name for name, value in overrides.items() if value is _DROP)
    claims = {name: value for name, value in overrides.items() if value is not _DROP}
    header: dict[str, Any] = {"typ": draw(st.sampled_from(["at+jwt", "JWT", "application/AT+JWT"]))}
    header["kid"] = draw(st.sampled_from([None, "nope"])) if _rarely(draw) else issuer.kid
    key = ROGUE_RSA if issuer is CORP and _rarely(draw) else None
    token = mint(issuer, key=key, headers=header, drop=drop, **claims)
    path = draw(st.sampled_from(["/healthz", "/api/orders", "/api/orders/7", "/trial/1", "/x"]))
    method = draw(st.sampled_from(["GET", "POST", "DELETE"]))
    host = draw(st.sampled_from(["api.example.com", "other.test"]))
    return req(path, None if _rarely(draw) else token, method, host)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("explain-generated")


@given(request=requests(), text=policies())
def test_explain_and_the_server_agree(request: RequestView, text: str, workdir: Path) -> None:
    policy = compile_policy_text(text, label="policy.yaml", base_dir=workdir)
    keys = StaticKeys.of(policy)
    server = Authorizer(lambda: policy, keys, FixedClock(NOW)).check(request)
    result = explain(policy, keys, request, FixedClock(NOW))
    assert result.decision == server
    failures = [step for step in result.trace.steps if not step.held]
    phases = [step.phase for step in result.trace.steps]
    assert len(phases) == len(set(phases)), "a phase reported twice"
    failed_lines = [line for line in result.text().splitlines() if ": FAILED " in line]
    reason = server.reason if isinstance(server, Deny) else server.dry_run
    event(f"{type(server).__name__} {reason.value if reason else ''}")
    if reason is None:
        assert failures == []
        assert failed_lines == []
        return
    assert len(failures) == 1
    assert failures[0].reason is reason
    if failures[0].phase != "route":
        assert len(failed_lines) == 1 and f"FAILED {reason.value}" in failed_lines[0]


def test_a_refused_header_value_is_shown_as_the_failure() -> None:
    routes = ROUTES.replace(
        "      x-nickname: nickname\n", "      x-nickname: nickname\n    unsafe_values: deny\n"
    )
    text = policy_yaml(CORP, routes=routes)
    policy = compile_policy_text(text, label="policy.yaml", base_dir=Path("."))
    keys = StaticKeys.of(policy)
    request = req("/api/orders", mint(CORP, nickname="a\r\nb"))
    result = explain(policy, keys, request, FixedClock(NOW))
    assert isinstance(result.decision, Deny)
    failed = [line for line in result.text().splitlines() if ": FAILED " in line]
    assert failed == [
        "headers: FAILED claim_value_unsafe (x-nickname: claim holds control characters)"
    ]
