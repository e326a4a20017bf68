"""Named keys and tokens for the tests, minted with PyJWT (not the server's library).

Each key is generated once per test session. `mint()` builds a token whose payload
starts from `GOOD_CLAIMS` for the named issuer, so a case only states what differs:

    mint(CORP)                                   # a good corp token (RS256)
    mint(CORP, exp=NOW - 3600)                   # expired an hour ago
    mint(CORP, headers={"kid": "nope"})          # names a key nobody has
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

# The tests' "now": the authorizer gets a FixedClock at this time.
NOW = 1_800_000_000
AUDIENCE = "orders-api"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class TestIssuer:
    name: str
    iss: str
    alg: str
    kid: str
    key: PrivateKey = field(repr=False)

    def public_jwk(self) -> dict[str, Any]:
        return public_jwk(self.key, kid=self.kid, alg=self.alg)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk()]}


def public_jwk(key: PrivateKey, *, kid: str | None, alg: str | None = None) -> dict[str, Any]:
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        raw = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        raw = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        raw = OKPAlgorithm.to_jwk(public, as_dict=True)
    jwk = dict(raw)
    if kid is not None:
        jwk["kid"] = kid
    if alg is not None:
        jwk["alg"] = alg
    jwk["use"] = "sig"
    return jwk


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


CORP = TestIssuer("corp", "https://login.corp.test/", "RS256", "corp-1", rsa_key())
PARTNER = TestIssuer(
    "partner",
    "https://idp.partner.test",
    "ES256",
    "partner-1",
    ec.generate_private_key(ec.SECP256R1()),
)
EDGE = TestIssuer(
    "edge", "https://edge.test", "EdDSA", "edge-1", ed25519.Ed25519PrivateKey.generate()
)
PSS = TestIssuer("pss", "https://pss.test", "PS256", "pss-1", rsa_key())
# A key of nobody's: signs forgeries under a real kid.
ROGUE_RSA = rsa_key()


def good_claims(issuer: TestIssuer) -> dict[str, Any]:
    return {
        "iss": issuer.iss,
        "sub": f"user-of-{issuer.name}",
        "aud": AUDIENCE,
        "iat": NOW - 60,
        "nbf": NOW - 60,
        "exp": NOW + 600,
        "scope": "orders:read orders:write",
        "email": f"someone@{issuer.name}.test",
        "email_verified": True,
        "org": {"tenant": f"tenant-{issuer.name}"},
        "groups": ["staff", "buyers"],
    }


_DROP = object()


def mint(
    issuer: TestIssuer,
    *,
    key: Any = None,
    alg: str | None = None,
    headers: dict[str, Any] | None = None,
    drop: tuple[str, ...] = (),
    **claims: Any,
) -> str:
    """A token of `issuer` with `claims` overriding the good ones; `drop` removes claims."""
    payload = good_claims(issuer)
    payload.update(claims)
    for name in drop:
        payload.pop(name, None)
    header = {"kid": issuer.kid}
    header.update(headers or {})
    if header.get("kid") is None:
        header.pop("kid", None)
    # PyJWS signs the JSON as given: PyJWT's own claim checks would refuse odd shapes.
    return jwt.api_jws.encode(
        json.dumps(payload).encode(),
        key if key is not None else issuer.key,
        algorithm=alg or issuer.alg,
        headers=header,
    )


def mint_live(issuer: TestIssuer, **overrides: Any) -> str:
    """Like `mint`, but valid against the real clock (for tests of the real server)."""
    now = int(time.time())
    times: dict[str, Any] = {"iat": now - 60, "nbf": now - 60, "exp": now + 600}
    times.update({k: v for k, v in overrides.items() if k in times})
    rest = {k: v for k, v in overrides.items() if k not in times}
    return mint(issuer, **times, **rest)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(value: Any) -> str:
    return b64url(json.dumps(value).encode())


def unsigned(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """A token assembled by hand, for shapes no library will produce."""
    return f"{b64json(header)}.{b64json(payload)}.{b64url(signature)}"


def policy_yaml(*issuers: TestIssuer, extra_issuers: str = "", routes: str | None = None) -> str:
    """A policy with inline JWKS for `issuers` and the brief's routes (or `routes`)."""
    lines = ["realm: orders", "issuers:"]
    for issuer in issuers:
        lines += [
            f"  {issuer.name}:",
            f"    issuer: {json.dumps(issuer.iss)}",
            f"    audiences: [{AUDIENCE}]",
            f"    algorithms: [{issuer.alg}]",
            f"    jwks: {json.dumps(issuer.jwks())}",
        ]
    if extra_issuers:
        lines.append(extra_issuers.rstrip())
    lines.append(routes if routes is not None else DEFAULT_ROUTES)
    return "\n".join(lines) + "\n"


DEFAULT_ROUTES = """\
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
      x-user-email: email
      x-tenant-id: org.tenant
      x-groups: groups
  - name: write-orders
    match: { path_prefix: /api/orders, methods: [POST, PUT, DELETE] }
    require:
      issuers: [corp]
      scopes: [orders:write]
      claims: { email_verified: true }
    headers: { x-user-id: sub }
  - name: admin
    match: { path_prefix: /admin }
    require:
      claims: { groups: { any_of: [admins] } }
  - name: everything-else
    match: { path_prefix: / }
    deny: true
"""
