"""Registered-claim checks (RFC 7519 section 4.1) and reading claims by path."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from ext_authz.errors import DenialReason, Denied
from ext_authz.policy.model import ClaimPath, IssuerPolicy


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


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


def check_registered_claims(claims: Mapping[str, Any], issuer: IssuerPolicy, now: float) -> float:
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
        raise Denied(DenialReason.TOKEN_EXPIRED)
    return exp


def check_not_before(claims: Mapping[str, Any], now: float, leeway: float) -> float | None:
    nbf = numeric_date(claims, "nbf")
    if nbf is not None and now + leeway < nbf:
        raise Denied(DenialReason.TOKEN_NOT_YET_VALID)
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


def lookup(claims: Mapping[str, Any], path: ClaimPath) -> Any:
    """The claim at a dotted path (`org.tenant`), or MISSING.

    A claim whose own name contains dots (`https://example.com/roles`) is found
    when the whole path is tried as one name first.
    """
    if len(path) > 1:
        whole = ".".join(path)
        if whole in claims:
            return claims[whole]
    value: Any = claims
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return MISSING
        value = value[part]
    return value


def scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    """Scopes from `scope` (space-delimited, RFC 8693) and `scp` (list or string)."""
    found: set[str] = set()
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            found.update(value.split())
        elif isinstance(value, list):
            found.update(v for v in value if isinstance(v, str))
    return frozenset(found)


def json_equal(left: Any, right: Any) -> bool:
    """Equality as JSON sees it: `true` is not `1`, `1` is `1.0`, "1" is not 1."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left is right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(json_equal, left, right))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(json_equal(left[k], right[k]) for k in left)
    return type(left) is type(right) and bool(left == right)
