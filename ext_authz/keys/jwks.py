"""Turn a JWKS document into an immutable set of signature verification keys.

Every key is checked before it can verify anything: unusable keys are skipped with a
reason (never an exception that would drop the whole set), so one odd key published
by an identity provider does not take its other keys down with it.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey

from ext_authz.algorithms import SIGNATURE_ALGORITHMS
from ext_authz.keys.weak_ed25519 import is_small_order_ed25519
from ext_authz.keys.weak_rsa import has_close_primes, is_roca_modulus
from ext_authz.strict_json import unique_members

MIN_RSA_BITS = 2048
MAX_KEYS = 100
MAX_KID_LENGTH = 256
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")

# The key type (and curve) each signature algorithm needs.
_ALG_KEY: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", "Ed25519"),
}
_EC_CURVES = frozenset({"P-256", "P-384", "P-521"})
_OKP_SIGNATURE_CURVES = frozenset({"Ed25519"})
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

JoseKey = RSAKey | ECKey | OKPKey


class JwksError(ValueError):
    """The document is not a usable key set at all."""


@dataclass(frozen=True, slots=True, repr=False)
class VerificationKey:
    """A public key that may verify signatures, with what it is bound to."""

    kid: str | None
    kty: str
    curve: str | None
    alg: str | None
    key: JoseKey
    thumbprint: str

    def fits(self, alg: str) -> bool:
        """Whether this key may verify a signature made with `alg`."""
        if self.alg is not None and self.alg != alg:
            return False
        needed = _ALG_KEY.get(alg)
        if needed is None:
            return False
        kty, curve = needed
        return self.kty == kty and (curve is None or self.curve == curve)

    def __repr__(self) -> str:
        return f"VerificationKey(kid={self.kid!r}, kty={self.kty}, alg={self.alg})"


@dataclass(frozen=True, slots=True)
class KeySet:
    keys: tuple[VerificationKey, ...] = ()
    by_kid: Mapping[str, VerificationKey] = field(default_factory=dict)
    thumbprints: frozenset[str] = frozenset()

    @classmethod
    def of(cls, keys: list[VerificationKey]) -> KeySet:
        return cls(
            tuple(keys),
            {k.kid: k for k in keys if k.kid is not None},
            frozenset(k.thumbprint for k in keys),
        )

    def holds(self, key: VerificationKey) -> bool:
        return key.thumbprint in self.thumbprints

    def __len__(self) -> int:
        return len(self.keys)

    def kids(self) -> list[str]:
        return [k.kid or "(no kid)" for k in self.keys]


@dataclass(frozen=True, slots=True)
class ParsedKeySet:
    keys: KeySet
    skipped: tuple[str, ...]
    # the accepted keys as published (public members only: keys holding private
    # members are skipped), in the order of `keys.keys`
    documents: tuple[Mapping[str, Any], ...] = ()

    def public_jwks_json(self) -> str:
        """The accepted keys as a JWKS document: what is cached, never the raw response."""
        return json.dumps({"keys": [dict(d) for d in self.documents]}, separators=(",", ":"))


def parse_jwks(document: object) -> ParsedKeySet:
    """Parse a JWKS (already decoded JSON). Raises `JwksError` if it is not a key set."""
    if not isinstance(document, Mapping):
        raise JwksError("a JWKS must be a JSON object")
    raw_keys = document.get("keys")
    if not isinstance(raw_keys, list):
        raise JwksError("a JWKS must have a 'keys' array")
    if len(raw_keys) > MAX_KEYS:
        raise JwksError(f"a JWKS may hold at most {MAX_KEYS} keys")
    accepted: list[tuple[VerificationKey, Mapping[str, Any]]] = []
    skipped: list[str] = []
    for index, raw in enumerate(raw_keys):
        try:
            accepted.append((_parse_key(raw), raw))
        except _Skip as skip:
            skipped.append(f"key {index}: {skip}")
    accepted, dup_notes = _drop_conflicting_kids(accepted)
    skipped.extend(dup_notes)
    return ParsedKeySet(
        KeySet.of([key for key, _ in accepted]),
        tuple(skipped),
        tuple(raw for _, raw in accepted),
    )


def parse_jwks_bytes(data: bytes) -> ParsedKeySet:
    try:
        document = json.loads(data, object_pairs_hook=unique_members)
    except (ValueError, UnicodeDecodeError) as exc:
        raise JwksError(f"not valid JSON: {_short(exc)}") from None
    return parse_jwks(document)


class _Skip(Exception):
    pass


def _parse_key(raw: object) -> VerificationKey:
    if not isinstance(raw, Mapping):
        raise _Skip("not a JSON object")
    kty = raw.get("kty")
    kid = raw.get("kid")
    if kid is not None and (not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH):
        raise _Skip("'kid' must be a non-empty string of at most 256 characters")
    label = f"kid {kid!r}" if kid else "no kid"
    if raw.get("use") not in (None, "sig"):
        raise _Skip(f"{label}: 'use' is not 'sig'")
    key_ops = raw.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        raise _Skip(f"{label}: 'key_ops' does not allow 'verify'")
    if _PRIVATE_MEMBERS.intersection(raw):
        raise _Skip(f"{label}: holds private or symmetric key material, not a public key")
    alg = raw.get("alg")
    if alg is not None and alg not in SIGNATURE_ALGORITHMS:
        raise _Skip(f"{label}: 'alg' {str(alg)[:32]!r} is not a supported signature algorithm")
    curve = raw.get("crv")
    key: JoseKey
    try:
        if kty == "RSA":
            modulus = _rsa_modulus(raw.get("n"))
            bits = modulus.bit_length()
            if bits < MIN_RSA_BITS:
                raise _Skip(f"{label}: RSA key of {bits} bits is under {MIN_RSA_BITS}")
            if is_roca_modulus(modulus):
                raise _Skip(f"{label}: RSA modulus from a weak generator (ROCA, CVE-2017-15361)")
            if has_close_primes(modulus):
                raise _Skip(f"{label}: RSA modulus with close primes (CVE-2022-26320)")
            key = RSAKey.import_key(dict(raw))
            curve = None
        elif kty == "EC":
            if curve not in _EC_CURVES:
                raise _Skip(f"{label}: unsupported EC curve")
            key = ECKey.import_key(dict(raw))
        elif kty == "OKP":
            if curve not in _OKP_SIGNATURE_CURVES:
                raise _Skip(f"{label}: unsupported OKP curve for signatures")
            if is_small_order_ed25519(_b64url(raw.get("x"), "OKP", "x")):
                raise _Skip(f"{label}: Ed25519 public key of small order verifies forgeries")
            key = OKPKey.import_key(dict(raw))
        elif kty == "oct":
            raise _Skip(f"{label}: symmetric keys are never used to verify tokens")
        else:
            raise _Skip(f"{label}: unsupported key type")
    except _Skip:
        raise
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise _Skip(f"{label}: not a valid {kty} key ({type(exc).__name__})") from None
    if alg is not None and not VerificationKey(kid, str(kty), curve, None, key, "").fits(alg):
        raise _Skip(f"{label}: 'alg' {alg} does not fit a {kty} key")
    return VerificationKey(
        kid=kid,
        kty=str(kty),
        curve=curve if isinstance(curve, str) else None,
        alg=alg,
        key=key,
        thumbprint=key.thumbprint(),
    )


def _rsa_modulus(n: object) -> int:
    """The modulus, read before the key is imported (so weak keys never load)."""
    return int.from_bytes(_b64url(n, "RSA", "n"), "big")


def _b64url(value: object, kty: str, member: str) -> bytes:
    """A key member's bytes, read before the key is imported."""
    if not isinstance(value, str) or not value or len(value) > 2048:
        raise _Skip(f"{kty} key without a valid '{member}'")
    not_base64url = _Skip(f"{kty} key whose '{member}' is not base64url")
    if not _BASE64URL.fullmatch(value):
        raise not_base64url
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError:
        raise not_base64url from None


def _drop_conflicting_kids(
    keys: list[tuple[VerificationKey, Mapping[str, Any]]],
) -> tuple[list[tuple[VerificationKey, Mapping[str, Any]]], list[str]]:
    """A `kid` names one key: when entries sharing a kid differ in material or in the
    algorithm bound to them, none of them is trusted. Exact repeats are kept once."""
    by_kid: dict[str, set[tuple[str, str | None]]] = {}
    for key, _ in keys:
        if key.kid is not None:
            by_kid.setdefault(key.kid, set()).add((key.thumbprint, key.alg))
    conflicting = {kid for kid, variants in by_kid.items() if len(variants) > 1}
    notes = [
        f"kid {kid!r}: several different keys share it; all dropped" for kid in sorted(conflicting)
    ]
    kept: list[tuple[VerificationKey, Mapping[str, Any]]] = []
    seen: set[tuple[str | None, str, str | None]] = set()
    for key, raw in keys:
        if key.kid in conflicting:
            continue
        ident = (key.kid, key.thumbprint, key.alg)
        if ident in seen:
            continue
        seen.add(ident)
        kept.append((key, raw))
    return kept, notes


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:120]
