"""Keys, tokens, policies and Envoy-shaped check requests shared by every measurement.

Tokens are minted with PyJWT, never with the server's own JOSE library, and are
valid against the real clock for an hour.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from envoy.service.auth.v3 import external_auth_pb2
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

AUDIENCE = "orders-api"
REALM = "orders"
HOST = "api.bench.test"
PATH = "/api/orders/42"
TOKEN_TTL = 3600
LIVE_TTL_MARGIN = 120

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class BenchIssuer:
    name: str
    iss: str
    alg: str
    kid: str
    key: PrivateKey = field(repr=False)

    def public_jwk(self) -> dict[str, Any]:
        public = self.key.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            raw = RSAAlgorithm.to_jwk(public, as_dict=True)
        else:
            raw = ECAlgorithm.to_jwk(public, as_dict=True)
        jwk = dict(raw)
        jwk.update(kid=self.kid, alg=self.alg, use="sig")
        return jwk

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk()]}

    def jwks_json(self) -> str:
        return json.dumps(self.jwks(), separators=(",", ":"))


def make_issuers() -> tuple[BenchIssuer, BenchIssuer]:
    """A fresh RS256 (2048-bit) and ES256 (P-256) issuer."""
    corp = BenchIssuer(
        "corp",
        "https://login.bench.test/",
        "RS256",
        "corp-1",
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )
    partner = BenchIssuer(
        "partner",
        "https://idp.partner.bench.test",
        "ES256",
        "partner-1",
        ec.generate_private_key(ec.SECP256R1()),
    )
    return corp, partner


def claims_for(issuer: BenchIssuer, now: int, **extra: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": issuer.iss,
        "sub": f"user-of-{issuer.name}",
        "aud": AUDIENCE,
        "iat": now - 60,
        "nbf": now - 60,
        "exp": now + TOKEN_TTL,
        "scope": "orders:read orders:write",
        "email": f"someone@{issuer.name}.bench.test",
        "email_verified": True,
        "org": {"tenant": f"tenant-{issuer.name}"},
        "groups": ["staff", "buyers"],
    }
    claims.update(extra)
    return claims


def mint(issuer: BenchIssuer, **extra: Any) -> str:
    """One token of ``issuer``, valid for an hour from now."""
    now = int(time.time())
    return jwt.encode(
        claims_for(issuer, now, **extra),
        issuer.key,
        algorithm=issuer.alg,
        headers={"kid": issuer.kid},
    )


def mint_distinct(issuer: BenchIssuer, count: int, prefix: str = "t") -> list[str]:
    """``count`` tokens of ``issuer`` that differ only in their ``jti``."""
    now = int(time.time())
    base = claims_for(issuer, now)
    tokens: list[str] = []
    for i in range(count):
        base["jti"] = f"{prefix}-{i}"
        tokens.append(
            jwt.encode(base, issuer.key, algorithm=issuer.alg, headers={"kid": issuer.kid})
        )
    return tokens


def policy_text(*issuers: BenchIssuer) -> str:
    """A policy with inline JWKS for ``issuers`` and an orders route that maps three claims."""
    lines = [f"realm: {REALM}", "issuers:"]
    for issuer in issuers:
        lines += [
            f"  {issuer.name}:",
            f"    issuer: {json.dumps(issuer.iss)}",
            f"    audiences: [{AUDIENCE}]",
            f"    algorithms: [{issuer.alg}]",
            f"    jwks: {issuer.jwks_json()}",
        ]
    lines += [
        "routes:",
        "  - name: health",
        "    match: { path: /healthz }",
        "    allow: anonymous",
        "  - name: read-orders",
        "    match: { path_prefix: /api/orders, methods: [GET, HEAD] }",
        "    require:",
        "      scopes: [orders:read]",
        "    headers:",
        "      x-user-id: sub",
        "      x-user-email: email",
        "      x-tenant-id: org.tenant",
        "  - name: everything-else",
        "    match: { path_prefix: / }",
        "    deny: true",
    ]
    return "\n".join(lines) + "\n"


def write_policy(directory: Path, *issuers: BenchIssuer) -> Path:
    path = directory / "policy.yaml"
    path.write_text(policy_text(*issuers), encoding="utf-8")
    return path


def request_headers(
    token: str, request_id: str = "4c1f0a6e-2d9b-4f57-9f0e-5b7a3c2d1e00"
) -> dict[str, str]:
    """About ten headers, as Envoy forwards them (lower-case names, pseudo-headers too)."""
    return {
        ":authority": HOST,
        ":method": "GET",
        ":path": f"{PATH}?expand=items",
        ":scheme": "http",
        "accept": "application/json",
        "accept-encoding": "gzip, deflate, br",
        "user-agent": "bench-client/1.0 (+https://example.invalid/bench)",
        "x-forwarded-proto": "http",
        "x-request-id": request_id,
        "x-envoy-expected-rq-timeout-ms": "15000",
        "authorization": f"Bearer {token}",
    }


def check_request(token: str, request_id: str | None = None) -> Any:
    """A CheckRequest shaped like the one Envoy's ext_authz filter sends."""
    rid = request_id or "4c1f0a6e-2d9b-4f57-9f0e-5b7a3c2d1e00"
    req = external_auth_pb2.CheckRequest()
    attrs = req.attributes
    attrs.source.address.socket_address.address = "127.0.0.1"
    attrs.source.address.socket_address.port_value = 53412
    attrs.destination.address.socket_address.address = "127.0.0.1"
    attrs.destination.address.socket_address.port_value = 10000
    attrs.request.time.GetCurrentTime()
    http = attrs.request.http
    http.id = "13371337133713371337"
    http.method = "GET"
    http.path = f"{PATH}?expand=items"
    http.host = HOST
    http.scheme = "http"
    http.protocol = "HTTP/1.1"
    for name, value in request_headers(token, rid).items():
        http.headers[name] = value
    attrs.context_extensions["envoy_route"] = "default"
    return req
