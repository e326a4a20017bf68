"""A whole in-process server (policy, keys, authorizer, gRPC servicer) for attack tests.

The policy trusts four issuers and holds three decryption keys of ours:

- `corp` (RS256) and `partner` (ES256), as in `tests.support.tokens`;
- `open`: no algorithm allow-list (every asymmetric algorithm), one RSA key bound to
  RS256 and one P-256 key with no `alg`;
- `other` (RS256): publishes a key under corp's `kid`, to try cross-issuer confusion;
- decryption: `enc-rsa` (RSA-OAEP-256), `enc-ec` (P-256, any ECDH-ES) and
  `shared-corp` (A256KW, shared with corp alone, so corp may send bare encrypted
  claims under it).

JWE tokens are made with jwcrypto, an implementation independent of the server's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from jwcrypto import jwe, jwk

from ext_authz.authorizer import Authorizer
from ext_authz.envoy.server import AuthorizationService
from ext_authz.keys.store import KeyProvider
from ext_authz.policy.loader import compile_policy_text
from ext_authz.policy.model import Policy
from tests.support.checks import Outcome, RecordingKeys, check
from tests.support.doubles import FixedClock
from tests.support.tokens import (
    AUDIENCE,
    CORP,
    DEFAULT_ROUTES,
    NOW,
    PARTNER,
    TestIssuer,
    public_jwk,
    rsa_key,
)

OPEN = TestIssuer("open", "https://open.test", "RS256", "open-rsa", rsa_key())
OPEN_EC_KID = "open-ec"
OPEN_EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER = TestIssuer("other", "https://other.test/", "RS256", CORP.kid, rsa_key())

ENC_RSA = jwk.JWK.generate(kty="RSA", size=2048, kid="enc-rsa", alg="RSA-OAEP-256", use="enc")
ENC_EC = jwk.JWK.generate(kty="EC", crv="P-256", kid="enc-ec", use="enc")
SHARED_CORP = jwk.JWK.generate(kty="oct", size=256, kid="shared-corp", alg="A256KW", use="enc")

DECRYPTION_ALGORITHMS = ("RSA-OAEP-256", "ECDH-ES", "ECDH-ES+A256KW", "A256KW")
CONTENT_ENCRYPTIONS = ("A256GCM", "A128CBC-HS256")


def decryption_jwks() -> dict[str, Any]:
    """Our private decryption key set."""
    return {
        "keys": [k.export(private_key=True, as_dict=True) for k in (ENC_RSA, ENC_EC, SHARED_CORP)]
    }


def _issuer_block(
    issuer: TestIssuer,
    jwks: dict[str, Any],
    *,
    algorithms: bool = True,
    extra: tuple[str, ...] = (),
) -> list[str]:
    lines = [
        f"  {issuer.name}:",
        f"    issuer: {json.dumps(issuer.iss)}",
        f"    audiences: [{AUDIENCE}]",
        f"    jwks: {json.dumps(jwks)}",
    ]
    if algorithms:
        lines.append(f"    algorithms: [{issuer.alg}]")
    return lines + [f"    {line}" for line in extra]


def open_jwks() -> dict[str, Any]:
    return {
        "keys": [
            OPEN.public_jwk(),
            public_jwk(OPEN_EC_KEY, kid=OPEN_EC_KID),
        ]
    }


def policy_text(routes: str = DEFAULT_ROUTES) -> str:
    lines = ["realm: orders", "issuers:"]
    lines += _issuer_block(CORP, CORP.jwks(), extra=("unsigned_encrypted_keys: [shared-corp]",))
    lines += _issuer_block(PARTNER, PARTNER.jwks())
    lines += _issuer_block(OPEN, open_jwks(), algorithms=False)
    lines += _issuer_block(OTHER, OTHER.jwks())
    lines.append(routes.rstrip())
    lines += [
        "decryption:",
        f"  jwks: {json.dumps(decryption_jwks())}",
        f"  algorithms: {json.dumps(list(DECRYPTION_ALGORITHMS))}",
        f"  encryptions: {json.dumps(list(CONTENT_ENCRYPTIONS))}",
    ]
    return "\n".join(lines) + "\n"


def make_policy(base_dir: Path | None = None) -> Policy:
    return compile_policy_text(policy_text(), label="policy.yaml", base_dir=base_dir or Path.cwd())


@dataclass
class Stack:
    policy: Policy
    keys: KeyProvider
    authorizer: Authorizer
    service: AuthorizationService

    def check(self, **request: Any) -> Outcome:
        return check(self.service, **request)

    @property
    def recorded(self) -> RecordingKeys:
        assert isinstance(self.keys, RecordingKeys)
        return self.keys


def make_stack(
    policy: Policy | None = None,
    keys: KeyProvider | None = None,
    clock: FixedClock | None = None,
) -> Stack:
    policy = policy or make_policy()
    provider = keys if keys is not None else RecordingKeys.of(policy)
    authorizer = Authorizer(lambda: policy, provider, clock or FixedClock(NOW))
    return Stack(policy, provider, authorizer, AuthorizationService(authorizer, policy.realm))


def encrypt(
    plaintext: bytes,
    recipient: jwk.JWK,
    alg: str,
    enc: str = "A256GCM",
    **header: Any,
) -> str:
    """A compact JWE made by jwcrypto; `header` adds protected header members."""
    protected = {"alg": alg, "enc": enc, **header}
    if "kid" not in protected and recipient.get("kid") is not None:
        protected["kid"] = recipient.get("kid")
    token = jwe.JWE(plaintext, json.dumps(protected), algs=[alg, enc])
    token.add_recipient(recipient)
    return str(token.serialize(compact=True))


def nested(inner: str, recipient: jwk.JWK = ENC_RSA, alg: str = "RSA-OAEP-256") -> str:
    """A nested JWT: the compact JWS `inner` encrypted to one of our keys."""
    return encrypt(inner.encode("ascii"), recipient, alg, cty="JWT")


def public_of(key: jwk.JWK) -> jwk.JWK:
    """What a client holds of our key: the public half, with its kid."""
    return jwk.JWK(**key.export_public(as_dict=True))
