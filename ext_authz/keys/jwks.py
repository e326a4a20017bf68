"""Turn a JWKS document into an immutable set of signature verification keys.

Every key is checked before it can verify anything: unusable keys are skipped with a
reason (never an exception that would drop the whole set), so one odd key published
by an identity provider does not take its other keys down with it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

from ext_authz import strict_json
from ext_authz.algorithms import SIGNATURES
from ext_authz.keys.jwk import (
    JwkRefused,
    import_jwk,
    read_kid,
    refuse_small_order_ed25519,
    rsa_modulus_bits,
)

MAX_KEYS = 100

# The curves some signature algorithm runs on, by key type (from the one table).
_CURVES: dict[str, frozenset[str]] = {
    kty: frozenset(row.curve for row in SIGNATURES.values() if row.kty == kty and row.curve)
    for kty in ("EC", "OKP")
}
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

    @property
    def public(self) -> Any:
        """The `cryptography` public key object that verifies (imported at load)."""
        return self.key.public_key

    def fits(self, alg: str) -> bool:
        """Whether this key may verify a signature made with `alg`."""
        if self.alg is not None and self.alg != alg:
            return False
        needed = SIGNATURES.get(alg)
        if needed is None:
            return False
        return self.kty == needed.kty and (needed.curve is None or self.curve == needed.curve)

    def __repr__(self) -> str:
        return f"VerificationKey(kid={self.kid!r}, kty={self.kty}, alg={self.alg})"


@dataclass(frozen=True, slots=True)
class KeySet:
    verification_keys: tuple[VerificationKey, ...] = ()
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
        return len(self.verification_keys)

    def kids(self) -> list[str]:
        return [k.kid or "(no kid)" for k in self.verification_keys]


@dataclass(frozen=True, slots=True)
class ParsedKeySet:
    key_set: KeySet
    skipped: tuple[str, ...]
    # the accepted keys as published (public members only: keys holding private
    # members are skipped), in the order of `key_set.verification_keys`
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
        document = strict_json.loads(data)
    except strict_json.TooDeep as exc:
        raise JwksError(str(exc)) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise JwksError(f"not valid JSON: {_short(exc)}") from None
    return parse_jwks(document)


class _Skip(Exception):
    pass


def _parse_key(raw: object) -> VerificationKey:
    if not isinstance(raw, Mapping):
        raise _Skip("not a JSON object")
    try:
        kid = read_kid(raw)
    except JwkRefused as refused:
        raise _Skip(str(refused)) from None
    label = f"kid {kid!r}" if kid else "no kid"
    try:
        return _verification_key(raw, kid)
    except JwkRefused as refused:
        raise _Skip(f"{label}: {refused}") from None


def _verification_key(raw: Mapping[str, Any], kid: str | None) -> VerificationKey:
    if raw.get("use") not in (None, "sig"):
        raise JwkRefused("'use' is not 'sig'")
    key_ops = raw.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        raise JwkRefused("'key_ops' does not allow 'verify'")
    if _PRIVATE_MEMBERS.intersection(raw):
        raise JwkRefused("holds private or symmetric key material, not a public key")
    alg = raw.get("alg")
    if alg is not None and alg not in SIGNATURES:
        raise JwkRefused(f"'alg' {str(alg)[:32]!r} is not a supported signature algorithm")
    kty = raw.get("kty")
    curve = raw.get("crv")
    if kty == "RSA":
        rsa_modulus_bits(raw)
        curve = None
    elif kty in _CURVES:
        if curve not in _CURVES[kty]:
            raise JwkRefused(
                f"unsupported {kty} curve" + (" for signatures" if kty == "OKP" else "")
            )
        if curve == "Ed25519":
            refuse_small_order_ed25519(raw)
    elif kty == "oct":
        raise JwkRefused("symmetric keys are never used to verify tokens")
    else:
        raise JwkRefused("unsupported key type")
    key = import_jwk(raw)
    assert not isinstance(key, OctKey)
    found = VerificationKey(kid, str(kty), curve if isinstance(curve, str) else None, alg, key, "")
    if alg is not None and not found.fits(alg):
        raise JwkRefused(f"'alg' {alg} does not fit a {kty} key")
    return replace(found, thumbprint=key.thumbprint())


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
