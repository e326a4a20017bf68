"""One JWK, public or private, read and imported: what an issuer's key set (`jwks.py`)
and our own decryption keys (`decryption_keys.py`) share.

Members are read with the one strict base64url reader and checked before joserfc
imports the key, so a weak RSA modulus never becomes a key object. Every refusal is a
`JwkRefused` whose message names the member, never its value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

from ext_authz import base64url
from ext_authz.keys.weak_ed25519 import is_small_order_ed25519
from ext_authz.keys.weak_rsa import has_close_primes, is_roca_modulus

MIN_RSA_BITS = 2048
MAX_KID_LENGTH = 256
MAX_MEMBER_CHARS = 2048  # base64url characters: an RSA modulus of up to 12,288 bits

JoseKey = RSAKey | ECKey | OKPKey | OctKey

_IMPORTERS: dict[str, type[RSAKey] | type[ECKey] | type[OKPKey] | type[OctKey]] = {
    "RSA": RSAKey,
    "EC": ECKey,
    "OKP": OKPKey,
    "oct": OctKey,
}


class JwkRefused(ValueError):
    """This key cannot be used; the message never holds key material."""


def read_kid(raw: Mapping[str, Any]) -> str | None:
    kid = raw.get("kid")
    if kid is not None and (not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH):
        raise JwkRefused(f"'kid' must be a non-empty string of at most {MAX_KID_LENGTH} characters")
    return kid


def member_bytes(raw: Mapping[str, Any], member: str) -> bytes:
    """A key member's bytes (`n`, `x`, `k`...), read before the key is imported."""
    kty = raw.get("kty")
    value = raw.get(member)
    if not isinstance(value, str) or not value or len(value) > MAX_MEMBER_CHARS:
        raise JwkRefused(f"{kty} key without a valid '{member}'")
    try:
        return base64url.decode(value)
    except ValueError:
        raise JwkRefused(f"{kty} key whose '{member}' is not canonical base64url") from None


def rsa_modulus_bits(raw: Mapping[str, Any]) -> int:
    """The size of an RSA key's modulus, once it is known to be neither small nor weak
    (ROCA, CVE-2017-15361; close primes, CVE-2022-26320)."""
    modulus = int.from_bytes(member_bytes(raw, "n"), "big")
    bits = modulus.bit_length()
    if bits < MIN_RSA_BITS:
        raise JwkRefused(f"RSA key of {bits} bits is under {MIN_RSA_BITS}")
    if is_roca_modulus(modulus):
        raise JwkRefused("RSA modulus from a weak generator (ROCA, CVE-2017-15361)")
    if has_close_primes(modulus):
        raise JwkRefused("RSA modulus with close primes (CVE-2022-26320)")
    return bits


def refuse_small_order_ed25519(raw: Mapping[str, Any]) -> None:
    if is_small_order_ed25519(member_bytes(raw, "x")):
        raise JwkRefused("Ed25519 public key of small order verifies forgeries")


def import_jwk(raw: Mapping[str, Any]) -> JoseKey:
    """joserfc's key object for `raw` (its `kty` already checked by the caller)."""
    kty = raw.get("kty")
    importer = _IMPORTERS.get(kty) if isinstance(kty, str) else None
    if importer is None:
        raise JwkRefused("unsupported key type")
    try:
        return importer.import_key(dict(raw))
    except (JoseError, ValueError, TypeError, KeyError):
        raise JwkRefused(f"not a valid {kty} key") from None
