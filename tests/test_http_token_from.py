"""Tokens from a named header or cookie (`token_from` on a route or an issuer), as
jwt_authn's `from_headers`/`from_cookies`: found where the policy says, refused when
two credentials arrive, never read from the query string; through both doors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ext_authz.authorizer import Authorizer
from ext_authz.decision import Allow, Deny
from ext_authz.errors import DenialReason, Denied
from ext_authz.policy.loader import PolicyError, compile_policy_text
from ext_authz.policy.model import Policy
from ext_authz.request import RequestView
from ext_authz.tokens.credentials import BEARER, HeaderSource, TokenSources, find_token
from tests.support.doubles import FixedClock, StaticKeys
from tests.support.tokens import CORP, NOW, PARTNER, mint

SOURCES = TokenSources((HeaderSource("x-auth-token", "Token "),), ("session",))


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-auth-token": "Token a.b.c"}, "a.b.c"),
        ({"x-auth-token": "token  a.b.c "}, "a.b.c"),
        ({"x-auth-token": "Other a.b.c"}, None),  # not this source's form: no credential
        ({"cookie": "theme=dark; session=a.b.c; lang=en"}, "a.b.c"),
        ({"cookie": 'session="a.b.c"'}, "a.b.c"),
        ({"cookie": "sessionx=a.b.c"}, None),
        ({"authorization": "Bearer a.b.c"}, None),  # not listed: not read
        ({}, None),
    ],
)
def test_found_where_the_sources_say(headers: dict[str, str], expected: str | None) -> None:
    assert find_token(headers, SOURCES) == expected


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"x-auth-token": "Token a.b.c", "cookie": "session=d.e.f"}, "authorization_multiple"),
        ({"cookie": "session=a.b.c; session=a.b.c"}, "authorization_multiple"),
        ({"cookie": "session=a.b.c,session=d.e.f"}, "authorization_multiple"),
        ({"x-auth-token": "Token a.b.c,d.e.f"}, "authorization_multiple"),
        ({"x-auth-token": "Token a b"}, "authorization_malformed"),
        ({"cookie": "session="}, "authorization_malformed"),
        ({"cookie": "session=<script>"}, "authorization_malformed"),
        ({"x-auth-token": "Token " + "a" * 20_000}, "token_too_large"),
    ],
)
def test_refused(headers: dict[str, str], reason: str) -> None:
    with pytest.raises(Denied) as denied:
        find_token(headers, SOURCES)
    assert denied.value.reason.value == reason


def test_bearer_listed_with_a_cookie_is_two_credentials_when_both_come() -> None:
    sources = TokenSources((BEARER,), ("session",))
    assert find_token({"authorization": "Bearer a.b.c"}, sources) == "a.b.c"
    with pytest.raises(Denied):
        find_token({"authorization": "Bearer a.b.c", "cookie": "session=a.b.c"}, sources)


def policy(tmp_path: Path, route_extra: str = "", issuer_extra: str = "") -> Policy:
    text = f"""\
realm: r
issuers:
  corp:
    issuer: {json.dumps(CORP.iss)}
    audiences: [orders-api]
    jwks: {json.dumps(CORP.jwks())}
{issuer_extra}
  partner:
    issuer: {json.dumps(PARTNER.iss)}
    audiences: [orders-api]
    jwks: {json.dumps(PARTNER.jwks())}
routes:
  - name: app
    match: {{ path_prefix: /app }}
    require: {{ issuers: [corp] }}
{route_extra}
  - name: both
    match: {{ path_prefix: /both }}
    require: {{}}
"""
    return compile_policy_text(text, label="p.yaml", base_dir=tmp_path)


def decide(policy: Policy, path: str, headers: dict[str, str]) -> Allow | Deny:
    keys = StaticKeys.of(policy)
    view = RequestView(method="GET", path=path, host="a", headers=headers)
    return Authorizer(lambda: policy, keys, FixedClock(NOW)).check(view)


def test_route_token_from_replaces_the_authorization_header(tmp_path: Path) -> None:
    p = policy(tmp_path, route_extra="    token_from: { cookies: [session] }")
    token = mint(CORP)
    assert isinstance(decide(p, "/app", {"cookie": f"session={token}"}), Allow)
    denied = decide(p, "/app", {"authorization": f"Bearer {token}"})
    assert isinstance(denied, Deny) and denied.reason is DenialReason.TOKEN_MISSING
    assert isinstance(decide(p, "/both", {"authorization": f"Bearer {token}"}), Allow)
    assert p.token_headers == frozenset({"cookie"})


def test_issuer_token_from_applies_to_routes_accepting_it(tmp_path: Path) -> None:
    p = policy(
        tmp_path,
        issuer_extra="    token_from: { headers: [{ name: X-Corp-Token }] }",
    )
    corp, partner = mint(CORP), mint(PARTNER)
    assert isinstance(decide(p, "/app", {"x-corp-token": corp}), Allow)
    # /both accepts corp (its header) and partner (Authorization: Bearer)
    assert isinstance(decide(p, "/both", {"x-corp-token": corp}), Allow)
    assert isinstance(decide(p, "/both", {"authorization": f"Bearer {partner}"}), Allow)
    two = decide(p, "/both", {"x-corp-token": corp, "authorization": f"Bearer {partner}"})
    assert isinstance(two, Deny) and two.reason is DenialReason.AUTHORIZATION_MULTIPLE
    assert p.token_headers == frozenset({"x-corp-token"})


def test_query_string_is_never_a_source(tmp_path: Path) -> None:
    with pytest.raises(PolicyError):
        policy(tmp_path, route_extra="    token_from: { query: [access_token] }")


def test_both_doors_read_a_cookie_token(tmp_path: Path) -> None:
    from envoy.service.auth.v3 import external_auth_pb2

    from ext_authz.authorizer import Runtime
    from ext_authz.envoy.server import AuthorizationService
    from ext_authz.http.server import build_http_door
    from tests.support.http_wire import Wire, request

    p = policy(tmp_path, route_extra="    token_from: { cookies: [session] }")
    keys = StaticKeys.of(p)
    token = mint(CORP)
    check = external_auth_pb2.CheckRequest()
    http = check.attributes.request.http
    http.method, http.path, http.host = "GET", "/app", "a"
    http.headers["cookie"] = f"theme=x; session={token}"
    service = AuthorizationService(Authorizer(lambda: p, keys, FixedClock(NOW)), observers=[])
    assert service.Check(check, None).HasField("ok_response")
    door, port = build_http_door(
        "127.0.0.1:0", lambda: Runtime(p, keys), clock=FixedClock(NOW), observers=[]
    )
    door.start()
    try:
        wire = Wire(port)
        wire.send(request("GET", "/envoy/app", {"Cookie": f"session={token}"}))
        assert wire.read()[0].status == 200
        wire.close()
    finally:
        door.stop(1)


def test_token_from_must_name_somewhere(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="at least one header or cookie"):
        policy(tmp_path, route_extra="    token_from: {}")
