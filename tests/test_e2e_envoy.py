"""End to end: a real Envoy in front of the real server, a real upstream and real
JWKS servers, all on 127.0.0.1 with ports chosen at run time.

Tokens come from two issuers with different key types: `corp` (RS256, `jwks_uri`)
and `partner` (ES256, OIDC discovery). The echo upstream reports the headers it got,
so the tests see exactly what an upstream service would.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ext_authz.demo.upstream import serve_upstream
from ext_authz.deploy.envoy_config import EnvoyParams
from tests.support.jwks_server import JwksServer, jwks_server
from tests.support.processes import (
    ChildProcess,
    free_port,
    running,
    serve_cmd,
    start_envoy,
    wait_for_grpc_serving,
)
from tests.support.tokens import CORP, PARTNER, ROGUE_RSA
from tests.support.tokens import mint_live as mint

pytestmark = pytest.mark.e2e

START_TIMEOUT = 30.0


@dataclass
class Stack:
    envoy_url: str
    server: ChildProcess
    partner_iss: str
    client: httpx.Client

    def get(self, path: str, token: str | None = None, **headers: str) -> httpx.Response:
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        return self.client.get(f"{self.envoy_url}{path}", headers=headers)

    def upstream_headers(self, response: httpx.Response) -> dict[str, str]:
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        headers: dict[str, str] = body["headers"]
        return headers


def write_policy(tmp_path: Path, corp_jwks: str, partner_issuer: str, *, catch_all: bool) -> Path:
    tail = (
        "  - name: everything-else\n    match: { path_prefix: / }\n    deny: true\n"
        if catch_all
        else ""
    )
    text = f"""\
realm: orders
issuers:
  corp:
    issuer: "{CORP.iss}"
    jwks_uri: {corp_jwks}
    audiences: [orders-api]
    algorithms: [RS256]
  partner:
    issuer: "{partner_issuer}"
    discovery: true
    audiences: [orders-api]
    algorithms: [ES256]
routes:
  - name: health
    match: {{ path: /healthz }}
    allow: anonymous
  - name: read-orders
    match: {{ path_prefix: /api/orders, methods: [GET, HEAD] }}
    require:
      issuers: [corp, partner]
      scopes: [orders:read]
    headers:
      x-user-id: sub
      x-user-email: email
      x-tenant-id: org.tenant
      x-user-name: name
  - name: write-orders
    match: {{ path_prefix: /api/orders, methods: [POST, PUT, DELETE] }}
    require:
      issuers: [corp]
      scopes: [orders:write]
      claims: {{ email_verified: true }}
    headers: {{ x-user-id: sub }}
  - name: strict-headers
    match: {{ path_prefix: /strict }}
    require: {{}}
    unsafe_values: deny
    headers: {{ x-user-name: name }}
  - name: encoded-headers
    match: {{ path_prefix: /encoded }}
    require: {{}}
    unsafe_values: encode
    headers: {{ x-user-name: name }}
  - name: trial
    match: {{ path_prefix: /trial }}
    mode: dry_run
    require: {{ scopes: [admin] }}
    headers: {{ x-user-id: sub }}
  - name: blocked
    match: {{ path_prefix: /internal }}
    deny: true
{tail}"""
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def server_cmd(policy: Path, port: int) -> list[str]:
    return serve_cmd(policy, port, "--grace", "2")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp_path = tmp_path_factory.mktemp("e2e")
    upstream = serve_upstream("127.0.0.1", 0)
    try:
        with jwks_server(CORP.jwks()) as corp, jwks_server(PARTNER.jwks()) as partner:
            policy = write_policy(tmp_path, corp.jwks_uri, partner.base_url, catch_all=False)
            authz_port = free_port()
            with running(server_cmd(policy, authz_port), name="ext-authz") as server:
                assert wait_for_grpc_serving("127.0.0.1", authz_port, START_TIMEOUT, server)
                params = EnvoyParams(
                    listen_port=free_port(),
                    admin_port=free_port(),
                    ext_authz_port=authz_port,
                    upstream_port=upstream.server_address[1],
                )
                with (
                    start_envoy(params, tmp_path) as envoy,
                    httpx.Client(trust_env=False, timeout=10) as client,
                ):
                    yield Stack(envoy.base_url, server, partner.base_url, client)
    finally:
        upstream.shutdown()
        upstream.server_close()


def partner_token(stack: Stack, **claims: Any) -> str:
    return mint(PARTNER, iss=stack.partner_iss, **claims)


def test_corp_rs256_token_allowed_with_claim_headers(stack: Stack) -> None:
    headers = stack.upstream_headers(stack.get("/api/orders/42", mint(CORP)))
    assert headers["x-user-id"] == "user-of-corp"
    assert headers["x-user-email"] == "someone@corp.test"
    assert headers["x-tenant-id"] == "tenant-corp"


def test_partner_es256_token_via_discovery_allowed(stack: Stack) -> None:
    headers = stack.upstream_headers(stack.get("/api/orders", partner_token(stack)))
    assert headers["x-user-id"] == "user-of-partner"
    assert headers["x-tenant-id"] == "tenant-partner"


def test_spoofed_identity_headers_are_replaced_or_removed(stack: Stack) -> None:
    response = stack.get(
        "/api/orders", mint(CORP, drop=("email",)), **{"x-user-id": "admin", "x-user-email": "x"}
    )
    headers = stack.upstream_headers(response)
    assert headers["x-user-id"] == "user-of-corp"
    assert "x-user-email" not in headers


def test_anonymous_route_strips_identity_headers(stack: Stack) -> None:
    headers = stack.upstream_headers(
        stack.get("/healthz", **{"x-user-id": "admin", "x-tenant-id": "t"})
    )
    assert "x-user-id" not in headers
    assert "x-tenant-id" not in headers


def test_claim_with_crlf_is_never_injected(stack: Stack) -> None:
    token = mint(CORP, name="Ann\r\nx-admin: true")
    headers = stack.upstream_headers(stack.get("/api/orders", token, **{"x-user-name": "spoof"}))
    assert "x-user-name" not in headers
    assert "x-admin" not in headers
    assert headers["x-user-id"] == "user-of-corp"


def test_unsafe_claim_denied_where_the_route_says_deny(stack: Stack) -> None:
    assert stack.get("/strict/1", mint(CORP, name="Ann\x00")).status_code == 403
    assert stack.get("/strict/1", mint(CORP, name="Ann")).status_code == 200


def test_unsafe_claim_percent_encoded_where_the_route_says_encode(stack: Stack) -> None:
    headers = stack.upstream_headers(stack.get("/encoded/1", mint(CORP, name="Zoë\n")))
    assert headers["x-user-name"] == "Zo%C3%AB%0A"


def test_dry_run_route_allows_with_the_would_be_reason(stack: Stack) -> None:
    headers = stack.upstream_headers(
        stack.get("/trial/x", mint(CORP), **{"x-ext-authz-dry-run": "spoofed"})
    )
    assert headers["x-ext-authz-dry-run"] == "scope_missing"
    assert "x-user-id" not in headers
    allowed = stack.upstream_headers(stack.get("/trial/x", mint(CORP, scope="admin")))
    assert "x-ext-authz-dry-run" not in allowed
    assert allowed["x-user-id"] == "user-of-corp"


def test_missing_token_is_401_with_a_bare_challenge(stack: Stack) -> None:
    response = stack.get("/api/orders")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="orders"'
    assert response.json()["error"] != "invalid_token"


@pytest.mark.parametrize(
    "token_of",
    [
        pytest.param(lambda s: mint(CORP, exp=1_000_000_000), id="expired"),
        pytest.param(lambda s: mint(CORP, aud="billing-api"), id="wrong_audience"),
        pytest.param(lambda s: mint(CORP, iss="https://evil.test/"), id="unknown_issuer"),
        pytest.param(lambda s: mint(CORP, key=ROGUE_RSA), id="bad_signature"),
        pytest.param(lambda s: mint(CORP, headers={"kid": "rotated-away"}), id="unknown_kid"),
        pytest.param(lambda s: "e30.e30.", id="garbage"),
    ],
)
def test_bad_tokens_are_401_invalid_token(stack: Stack, token_of: Any) -> None:
    response = stack.get("/api/orders", token_of(stack))
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="orders", error="invalid_token"')
    assert response.json()["error"] == "invalid_token"


def test_missing_scope_is_403_insufficient_scope(stack: Stack) -> None:
    response = stack.get("/api/orders", mint(CORP, scope="profile"))
    assert response.status_code == 403
    challenge = response.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="orders:read"' in challenge


def test_issuer_not_accepted_on_route_is_401(stack: Stack) -> None:
    response = stack.client.post(
        f"{stack.envoy_url}/api/orders",
        headers={"authorization": f"Bearer {partner_token(stack)}"},
    )
    assert response.status_code == 401


def test_deny_route_and_unmatched_path_are_403(stack: Stack) -> None:
    assert stack.get("/internal/x", mint(CORP)).status_code == 403
    unmatched = stack.get("/nothing-here", mint(CORP))
    assert unmatched.status_code == 403
    assert "www-authenticate" not in unmatched.headers


def test_two_credentials_are_400_invalid_request(stack: Stack) -> None:
    response = stack.client.get(
        f"{stack.envoy_url}/api/orders",
        headers=[("authorization", f"Bearer {mint(CORP)}"), ("authorization", "Bearer x")],
    )
    assert response.status_code == 400
    assert 'error="invalid_request"' in response.headers["www-authenticate"]


def test_decision_log_names_reasons_and_never_tokens(stack: Stack) -> None:
    token = mint(CORP, scope="profile", sub="log-probe")
    assert stack.get("/api/orders", token).status_code == 403
    deadline = time.monotonic() + 5  # log lines are written in batches, every 0.2 s
    while True:
        lines = [json.loads(line) for line in stack.server.stderr_text(1_000_000).splitlines()]
        decisions = [entry for entry in lines if entry.get("msg") == "decision"]
        if any(e.get("reason") == "scope_missing" for e in decisions):
            break
        assert time.monotonic() < deadline, "no scope_missing decision logged"
        time.sleep(0.1)
    log_text = stack.server.stderr_text(1_000_000)
    for secret in (token, token.split(".")[2], token.split(".")[1], "log-probe"):
        assert secret not in log_text


# --- start-up with a broken issuer, and shutdown --------------------------------------


@pytest.fixture
def broken_corp(tmp_path: Path) -> Iterator[tuple[JwksServer, JwksServer, Path]]:
    with jwks_server(CORP.jwks()) as corp, jwks_server(PARTNER.jwks()) as partner:
        corp.behaviour.status = 500
        policy = write_policy(tmp_path, corp.jwks_uri, partner.base_url, catch_all=True)
        yield corp, partner, policy


def test_issuer_down_at_start_serves_503_for_it_and_others_still_work(
    tmp_path: Path, broken_corp: tuple[JwksServer, JwksServer, Path]
) -> None:
    _corp, partner, policy = broken_corp
    upstream = serve_upstream("127.0.0.1", 0)
    port = free_port()
    try:
        with running(server_cmd(policy, port), name="ext-authz") as server:
            assert wait_for_grpc_serving("127.0.0.1", port, START_TIMEOUT, server)
            params = EnvoyParams(
                listen_port=free_port(),
                admin_port=free_port(),
                ext_authz_port=port,
                upstream_port=upstream.server_address[1],
            )
            with start_envoy(params, tmp_path) as envoy, httpx.Client(trust_env=False) as client:
                corp_response = client.get(
                    f"{envoy.base_url}/api/orders",
                    headers={"authorization": f"Bearer {mint(CORP)}"},
                )
                assert corp_response.status_code == 503
                partner_response = client.get(
                    f"{envoy.base_url}/api/orders",
                    headers={"authorization": f"Bearer {mint(PARTNER, iss=partner.base_url)}"},
                )
                assert partner_response.status_code == 200
            assert "keys unavailable" in server.stderr_text(1_000_000)
    finally:
        upstream.shutdown()
        upstream.server_close()


def test_sigterm_exits_zero(broken_corp: tuple[JwksServer, JwksServer, Path]) -> None:
    _corp, _partner, policy = broken_corp
    port = free_port()
    with running(server_cmd(policy, port), name="ext-authz") as server:
        assert wait_for_grpc_serving("127.0.0.1", port, START_TIMEOUT, server)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=15) == 0
        assert "stopped" in server.stderr_text(1_000_000)


def test_bad_policy_stops_the_server_with_line_and_field(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("issuers: {}\nroutes:\n  - name: a\n    match: { path: x }\n    deny: true\n")
    with running(server_cmd(policy, free_port()), name="ext-authz") as server:
        assert server.proc.wait(timeout=15) == 1
        assert "policy.yaml:4: routes[0].match.path: must start with '/'" in server.stderr_text()


def test_health_command_follows_the_server(
    broken_corp: tuple[JwksServer, JwksServer, Path],
) -> None:
    import subprocess

    _corp, _partner, policy = broken_corp
    port = free_port()
    health = [sys.executable, "-m", "ext_authz", "health", "--target", f"127.0.0.1:{port}"]
    assert subprocess.run(health, capture_output=True, check=False).returncode == 1
    with running(server_cmd(policy, port), name="ext-authz") as server:
        assert wait_for_grpc_serving("127.0.0.1", port, START_TIMEOUT, server)
        result = subprocess.run(health, capture_output=True, text=True, check=False)
        assert result.returncode == 0
        assert "SERVING" in result.stdout
