"""Route options: header encodings, unsafe claim values, dry-run, subject logging."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from ext_authz.authorizer import Authorizer
from ext_authz.decision import Allow, Decision, Deny
from ext_authz.envoy.server import AuthorizationService
from ext_authz.errors import DenialReason
from ext_authz.policy.loader import PolicyError, compile_policy_text
from ext_authz.policy.model import Policy
from ext_authz.request import RequestView
from tests.support.doubles import FixedClock, StaticKeys
from tests.support.tokens import CORP, NOW, mint, policy_yaml

ROUTES = """\
routes:
  - name: plain
    match: { path_prefix: /plain }
    require: { scopes: [orders:read] }
    headers:
      x-name: name
      x-groups: groups
  - name: encodings
    match: { path_prefix: /enc }
    require: {}
    headers:
      x-org-json: { claim: org, encoding: json }
      x-name-json: { claim: name, encoding: json }
      x-org-b64: { claim: org, encoding: base64url }
  - name: deny-unsafe
    match: { path_prefix: /strict }
    require: {}
    unsafe_values: deny
    headers: { x-name: name }
  - name: encode-unsafe
    match: { path_prefix: /encode }
    require: {}
    unsafe_values: encode
    headers: { x-name: name }
  - name: trial
    match: { path_prefix: /trial }
    mode: dry_run
    dry_run_header: x-would-deny
    log_subject: true
    require: { scopes: [admin] }
    headers: { x-user-id: sub }
  - name: closed-trial
    match: { path_prefix: /closed }
    mode: dry_run
    deny: true
"""


@pytest.fixture
def policy(tmp_path: Path) -> Policy:
    return compile_policy_text(policy_yaml(CORP, routes=ROUTES), label="p", base_dir=tmp_path)


@pytest.fixture
def authorizer(policy: Policy) -> Authorizer:
    keys = StaticKeys.of(policy)
    return Authorizer(lambda: policy, keys, FixedClock(NOW))


def check(authorizer: Authorizer, path: str, token: str | None, **headers: str) -> Decision:
    all_headers = dict(headers)
    if token is not None:
        all_headers["authorization"] = f"Bearer {token}"
    return authorizer.check(RequestView("GET", path, "api.test", all_headers))


def allowed_headers(decision: Decision) -> dict[str, str]:
    assert isinstance(decision, Allow), decision
    return dict(decision.headers)


def test_plain_encoding_of_lists(authorizer: Authorizer) -> None:
    headers = allowed_headers(check(authorizer, "/plain", mint(CORP, name="Ann")))
    assert headers == {"x-name": "Ann", "x-groups": "staff, buyers"}


def test_json_and_base64url_encodings(authorizer: Authorizer) -> None:
    headers = allowed_headers(check(authorizer, "/enc", mint(CORP, name="Ann")))
    assert json.loads(headers["x-org-json"]) == {"tenant": "tenant-corp"}
    assert headers["x-name-json"] == '"Ann"'
    padded = headers["x-org-b64"] + "=" * (-len(headers["x-org-b64"]) % 4)
    assert json.loads(base64.urlsafe_b64decode(padded)) == {"tenant": "tenant-corp"}


def test_base64url_carries_non_ascii_safely(authorizer: Authorizer) -> None:
    headers = allowed_headers(check(authorizer, "/enc", mint(CORP, org={"n": "Zoë\r\n"})))
    assert headers["x-org-b64"].isascii()
    assert "x-org-json" not in headers  # json keeps the non-ASCII: dropped by default


UNSAFE = {
    "crlf": "Ann\r\nx-admin: true",
    "nul": "Ann\x00",
    "non_ascii": "Zoë",
    "too_long": "a" * 9000,
}


@pytest.mark.parametrize("value", list(UNSAFE.values()), ids=list(UNSAFE))
def test_unsafe_value_dropped_by_default(authorizer: Authorizer, value: str) -> None:
    decision = check(authorizer, "/plain", mint(CORP, name=value), **{"x-name": "spoof"})
    assert isinstance(decision, Allow)
    assert "x-name" not in dict(decision.headers)
    assert "x-name" in decision.remove
    assert decision.notes and decision.notes[0].startswith("x-name: ")
    assert value not in " ".join(decision.notes)


@pytest.mark.parametrize("value", list(UNSAFE.values()), ids=list(UNSAFE))
def test_unsafe_value_denied_when_route_says_deny(authorizer: Authorizer, value: str) -> None:
    decision = check(authorizer, "/strict", mint(CORP, name=value))
    assert isinstance(decision, Deny)
    assert decision.reason is DenialReason.CLAIM_VALUE_UNSAFE
    assert value not in decision.detail


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Zoë", "Zo%C3%AB"),
        ("Ann\r\nx: y", "Ann%0D%0Ax%3A%20y"),
        ("100%", "100%25"),
        ("plain", "plain"),
    ],
)
def test_unsafe_value_percent_encoded_when_route_says_encode(
    authorizer: Authorizer, value: str, expected: str
) -> None:
    assert allowed_headers(check(authorizer, "/encode", mint(CORP, name=value))) == {
        "x-name": expected
    }


def test_encode_still_drops_what_cannot_fit(authorizer: Authorizer) -> None:
    decision = check(authorizer, "/encode", mint(CORP, name="é" * 1500))
    assert isinstance(decision, Allow)
    assert decision.headers == ()


def test_dry_run_allows_with_the_would_be_reason(authorizer: Authorizer) -> None:
    decision = check(authorizer, "/trial", mint(CORP), **{"x-would-deny": "spoofed"})
    assert isinstance(decision, Allow)
    assert decision.dry_run is DenialReason.SCOPE_MISSING
    assert dict(decision.headers) == {"x-would-deny": "scope_missing"}
    assert "x-user-id" in decision.remove  # no identity is injected by a would-be denial


def test_dry_run_without_token_and_on_deny_routes(authorizer: Authorizer) -> None:
    no_token = check(authorizer, "/trial", None)
    assert isinstance(no_token, Allow)
    assert no_token.dry_run is DenialReason.TOKEN_MISSING
    closed = check(authorizer, "/closed", None)
    assert isinstance(closed, Allow)
    assert closed.dry_run is DenialReason.ROUTE_DENY


def test_dry_run_header_is_stripped_from_other_routes(authorizer: Authorizer) -> None:
    decision = check(authorizer, "/plain", mint(CORP), **{"x-would-deny": "spoofed"})
    assert isinstance(decision, Allow)
    assert "x-would-deny" in decision.remove


def test_dry_run_allowing_request_is_a_plain_allow(authorizer: Authorizer) -> None:
    decision = check(authorizer, "/trial", mint(CORP, scope="admin"))
    assert isinstance(decision, Allow)
    assert decision.dry_run is None
    assert dict(decision.headers) == {"x-user-id": "user-of-corp"}


def _decision_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        {k: getattr(r, k, None) for k in ("result", "reason", "subject", "route")}
        for r in caplog.records
        if r.name == "ext_authz.decision"
    ]


def test_decision_log_names_subject_only_where_the_route_opts_in(
    authorizer: Authorizer, caplog: pytest.LogCaptureFixture
) -> None:
    from envoy.service.auth.v3 import external_auth_pb2

    service = AuthorizationService(authorizer)
    caplog.set_level(logging.INFO, logger="ext_authz.decision")
    for path in ("/trial", "/plain"):
        request = external_auth_pb2.CheckRequest()
        http = request.attributes.request.http
        http.method, http.path, http.host = "GET", path, "api.test"
        http.headers["authorization"] = f"Bearer {mint(CORP, sub='who-am-i')}"
        service.Check(request, None)
    trial, plain = _decision_records(caplog)
    assert trial == {
        "result": "dry_run",
        "reason": "scope_missing",
        "subject": "who-am-i",
        "route": "trial",
    }
    assert plain["subject"] is None
    assert plain["result"] == "allow"


def test_dry_run_header_may_not_be_a_mapped_header(tmp_path: Path) -> None:
    routes = (
        "routes:\n  - name: r\n    match: { path: /r }\n    mode: dry_run\n"
        "    dry_run_header: x-user\n    require: {}\n    headers: { x-user: sub }\n"
    )
    with pytest.raises(PolicyError, match="dry_run_header"):
        compile_policy_text(policy_yaml(CORP, routes=routes), label="p", base_dir=tmp_path)
