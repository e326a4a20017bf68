"""What every front door must agree on: one policy and one table of requests with the
answer each must get, whichever proxy and door carries it (Envoy gRPC, Envoy
http_service, nginx auth_request, Caddy forward_auth, or the endpoints asked directly).

Paths are sent byte for byte (dot segments, doubled slashes, escapes), so the table
also proves the HTTP door normalises a path the way Envoy does before a gRPC check.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.http_wire import Wire, WireResponse
from tests.support.tokens import CORP, mint_live

IDENTITY_HEADERS = ("x-user-id", "x-user-email", "x-tenant-id")
ALL_IDENTITY = (*IDENTITY_HEADERS, "x-ext-authz-dry-run")


def policy_text(corp_jwks_uri: str) -> str:
    return f"""\
realm: orders
issuers:
  corp:
    issuer: "{CORP.iss}"
    jwks_uri: {corp_jwks_uri}
    audiences: [orders-api]
    algorithms: [RS256]
routes:
  - name: health
    match: {{ path: /healthz }}
    allow: anonymous
  - name: admin-host
    match: {{ path_prefix: /api, hosts: [admin.test] }}
    deny: true
  - name: read-orders
    match: {{ path_prefix: /api/orders, methods: [GET, HEAD] }}
    require: {{ scopes: [orders:read] }}
    headers:
      x-user-id: sub
      x-user-email: email
      x-tenant-id: org.tenant
  - name: write-orders
    match: {{ path_prefix: /api/orders, methods: [POST, PUT, DELETE] }}
    require: {{ scopes: [orders:write] }}
    headers: {{ x-user-id: sub }}
  - name: internal
    match: {{ path_prefix: /internal }}
    deny: true
  - name: everything-else
    match: {{ path_prefix: / }}
    deny: true
"""


def write_policy(tmp_path: Path, corp_jwks_uri: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(policy_text(corp_jwks_uri), encoding="utf-8")
    return path


def server_cmd(policy: Path, *, grpc_port: int | None, http_port: int | None) -> list[str]:
    cmd = [sys.executable, "-m", "ext_authz", "serve", "--config", str(policy)]
    cmd += ["--listen", f"127.0.0.1:{grpc_port}" if grpc_port else "off"]
    if http_port:
        cmd += ["--http-listen", f"127.0.0.1:{http_port}"]
    return [*cmd, "--grace", "2", "--shutdown-delay", "0"]


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    status: int  # what the client gets
    token: str | None = "good"  # "good", "read-only", or None
    host: str = "shop.test"


CASES = (
    Case("allow", "GET", "/api/orders", 200),
    Case("allow-with-query", "GET", "/api/orders/7?page=2&x=%2F", 200),
    Case("head", "HEAD", "/api/orders", 200),
    Case("no-token", "GET", "/api/orders", 401, token=None),
    Case("scope", "DELETE", "/api/orders/7", 403, token="read-only"),
    Case("method-not-routed", "PATCH", "/api/orders", 403),
    Case("anonymous", "POST", "/healthz", 200, token=None),
    Case("dot-segment", "GET", "/api/./orders", 200),
    Case("double-slash", "GET", "//api//orders", 200),
    Case("escaped-unreserved", "GET", "/api/%6Frders", 200),
    Case("dot-dot-into-allow", "GET", "/internal/../api/orders", 200),
    Case("dot-dot-into-deny", "GET", "/api/orders/../../internal/x", 403),
    Case("escaped-dot-dot", "GET", "/api/orders/%2E%2E/%2e%2e/internal", 403),
    Case("case-differs", "GET", "/API/orders", 403),
    Case("prefix-is-segment-aware", "GET", "/api/orders-admin", 403),
    Case("host-route", "GET", "/api/orders", 403, host="admin.test"),
    Case("host-case-and-port", "GET", "/api/orders", 403, host="ADMIN.test:8080"),
)


def token_for(case: Case) -> str | None:
    if case.token == "good":
        return mint_live(CORP)
    if case.token == "read-only":
        return mint_live(CORP, scope="orders:read")
    return None


def raw_request(method: str, path: str, host: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def send(port: int, raw: bytes, head_only: bool = False) -> WireResponse:
    wire = Wire(port, timeout=10)
    try:
        wire.send(raw)
        return wire.read(head_only=head_only)[0]
    finally:
        wire.close()


def through_proxy(port: int, case: Case, extra: dict[str, str] | None = None) -> WireResponse:
    headers = dict(extra or {})
    token = token_for(case)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return send(
        port, raw_request(case.method, case.path, case.host, headers), case.method == "HEAD"
    )


def upstream_saw(response: WireResponse) -> dict[str, Any]:
    """What the echo upstream received (method, path, headers with lower-case names)."""
    assert response.status == 200, (response.status, response.body[:500])
    seen: dict[str, Any] = json.loads(response.body)
    seen["headers"] = {k.lower(): v for k, v in seen["headers"].items()}
    return seen
