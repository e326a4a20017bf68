"""Registered-claim checks (RFC 7519 section 4.1) and the token type (RFC 9068).

The checks take the few rules they need (`ClaimRules`), not the policy: an issuer's
compiled policy is one such object, and this package never imports the policy's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol

from ext_authz.errors import DenialReason, Denied


class ClaimRules(Protocol):
    """What the registered-claim checks need to know about an issuer."""

    @property
    def audiences(self) -> frozenset[str] | None: ...  # None: the audience is not checked

    @property
    def leeway(self) -> float: ...

    @property
    def token_types(self) -> frozenset[str] | None: ...  # media types; None: any `typ`


def media_type(typ: str) -> str:
    """A `typ` as the media type it names (RFC 7515 section 4.1.9): compared without
    regard to case, with `application/` implied when the value holds no `/`."""
    lowered = typ.lower()
    return lowered if "/" in lowered else "application/" + lowered


def check_token_type(header: Mapping[str, Any], accepted: frozenset[str] | None) -> None:
    """The header's `typ` is one of the issuer's token types, when it names any, so an
    ID token or a logout token with the right audience is not taken for an access token."""
    if accepted is None:
        return
    typ = header.get("typ")
    if not isinstance(typ, str):
        raise Denied(DenialReason.TOKEN_TYPE_NOT_ALLOWED, "'typ' is missing or not a string")
    if media_type(typ) not in accepted:
        raise Denied(DenialReason.TOKEN_TYPE_NOT_ALLOWED, "'typ' is not a type this issuer issues")


def numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate claim: a JSON number, never a string or a boolean."""
    value = claims.get(name)
    if value is None:
        if name in claims:
            raise Denied(DenialReason.CLAIM_TYPE_INVALID, f"'{name}' is null")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Denied(DenialReason.CLAIM_TYPE_INVALID, f"'{name}' is not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise Denied(DenialReason.CLAIM_TYPE_INVALID, f"'{name}' is not finite")
    try:
        return float(value)
    except OverflowError:  # an integer such as 10**400: no date, and no float either
        raise Denied(DenialReason.CLAIM_TYPE_INVALID, f"'{name}' is out of range") from None


def check_registered_claims(claims: Mapping[str, Any], issuer: ClaimRules, now: float) -> float:
    """Check `exp`, `nbf`, `iat` and `aud`; return `exp`."""
    leeway = issuer.leeway
    exp = check_expiry(claims, now, leeway)
    check_not_before(claims, now, leeway)
    check_issued_at(claims, now, leeway)
    if issuer.audiences is not None:
        check_audience(claims, issuer.audiences)
    return exp


def check_expiry(claims: Mapping[str, Any], now: float, leeway: float) -> float:
    """`exp` is required, and now must be before it (plus the leeway); returns it."""
    exp = numeric_date(claims, "exp")
    if exp is None:
        raise Denied(DenialReason.EXPIRATION_MISSING)
    if now >= exp + leeway:
        raise Denied(DenialReason.TOKEN_EXPIRED, f"expired {int(now - exp)}s ago")
    return exp


def check_not_before(claims: Mapping[str, Any], now: float, leeway: float) -> float | None:
    nbf = numeric_date(claims, "nbf")
    if nbf is not None and now + leeway < nbf:
        raise Denied(DenialReason.TOKEN_NOT_YET_VALID, f"valid in {int(nbf - now)}s")
    return nbf


def check_issued_at(claims: Mapping[str, Any], now: float, leeway: float) -> float | None:
    iat = numeric_date(claims, "iat")
    if iat is not None and iat > now + leeway:
        raise Denied(DenialReason.TOKEN_ISSUED_IN_FUTURE)
    return iat


def check_audience(claims: Mapping[str, Any], accepted: frozenset[str]) -> None:
    aud = claims.get("aud")
    if isinstance(aud, str):
        if aud in accepted:
            return
    elif isinstance(aud, list) and all(isinstance(a, str) for a in aud):
        if any(a in accepted for a in aud):
            return
    elif aud is not None:
        raise Denied(DenialReason.AUDIENCE_MISMATCH, "'aud' is neither a string nor strings")
    raise Denied(DenialReason.AUDIENCE_MISMATCH)
