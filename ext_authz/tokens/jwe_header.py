"""The members a JWE protected header may hold, and their types: our own table.

A member is either a JWE header parameter (RFC 7516 section 4.1; for `ECDH-ES*` also
`epk`, `apu` and `apv`, RFC 7518 section 4.6.1) or a registered claim that RFC 7519
section 5.3 lets an issuer replicate in the header. Anything else (an unknown member,
`b64`, or `iv`/`tag`/`p2s`/`p2c`, which belong to algorithms we do not accept) is
`token_header_invalid`, and so is a member of the wrong type. Messages name the member,
never its value. `alg`, `enc`, `zip` and `crit` are checked before this, by
`decrypt.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from ext_authz import base64url
from ext_authz.errors import DenialReason, Denied


def _string(value: Any) -> bool:
    return isinstance(value, str)


def _url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("https://", "http://"))


def _object(value: Any) -> bool:
    return isinstance(value, dict)


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _audience(value: Any) -> bool:
    return isinstance(value, str) or _strings(value)


def _numeric_date(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


Check = Callable[[Any], bool]

# RFC 7516 section 4.1 (`zip` and `crit` are refused before; `alg` and `enc` checked)
JWE_PARAMETERS: Final[Mapping[str, Check]] = MappingProxyType(
    {
        "alg": _string,
        "enc": _string,
        "zip": _string,
        "crit": _strings,
        "jku": _url,
        "jwk": _object,
        "kid": _string,
        "x5u": _url,
        "x5c": _strings,
        "x5t": _string,
        "x5t#S256": _string,
        "typ": _string,
        "cty": _string,
    }
)
# RFC 7518 section 4.6.1: key agreement (the values are read by `read_agreement`)
AGREEMENT_PARAMETERS: Final[Mapping[str, Check]] = MappingProxyType(
    {"epk": _object, "apu": _string, "apv": _string}
)
# RFC 7519 section 5.3: registered claims an issuer may replicate in the JWE header
REPLICATED_CLAIMS: Final[Mapping[str, Check]] = MappingProxyType(
    {
        "iss": _string,
        "sub": _string,
        "aud": _audience,
        "exp": _numeric_date,
        "nbf": _numeric_date,
        "iat": _numeric_date,
        "jti": _string,
    }
)
_EXPECTED: dict[Check, str] = {
    _string: "a string",
    _url: "an http(s) URL",
    _object: "a JSON object",
    _strings: "a list of strings",
    _audience: "a string or a list of strings",
    _numeric_date: "a number",
}
_PLAIN = MappingProxyType({**JWE_PARAMETERS, **REPLICATED_CLAIMS})
_WITH_AGREEMENT = MappingProxyType({**_PLAIN, **AGREEMENT_PARAMETERS})


@dataclass(frozen=True, slots=True, repr=False)
class Agreement:
    """What ECDH-ES reads from the header, checked and decoded before any key is used."""

    kty: str  # ours are EC or OKP
    crv: str
    x: bytes | None
    y: bytes | None  # EC only
    apu: bytes
    apv: bytes

    def __repr__(self) -> str:
        return f"Agreement(kty={self.kty}, crv={self.crv})"


def _invalid(message: str) -> Denied:
    return Denied(DenialReason.TOKEN_HEADER_INVALID, message)


def check_members(header: Mapping[str, Any], agreement: bool) -> None:
    """Every member known for this kind of `alg` (`agreement`: ECDH-ES*), of its type."""
    known = _WITH_AGREEMENT if agreement else _PLAIN
    for name, value in header.items():
        check = known.get(name)
        if check is None:
            raise _invalid("a header member is neither a JWE parameter nor a registered claim")
        if not check(value):
            # `name` is one of the table's, never a name the token chose
            raise _invalid(f"'{name}' in the header must be {_EXPECTED[check]}")


def read_agreement(header: Mapping[str, Any]) -> Agreement:
    """`epk`, `apu` and `apv` of an ECDH-ES header (members already checked by
    `check_members`). Refused here: no `epk`, an `epk` holding a private key, a
    coordinate or party info that is not base64url. Whether the point is of our key's
    type and curve, of its size and on the curve is the key's question
    (`jwe_keys.content_key`): a token that fails it fails to decrypt."""
    epk = header.get("epk")
    if not isinstance(epk, dict):
        raise _invalid("'epk' is missing")
    if "d" in epk:
        raise _invalid("'epk' holds a private key")
    kty, crv = epk.get("kty"), epk.get("crv")
    x = _bytes(epk, "x", "'epk' member") if "x" in epk else None
    y = _bytes(epk, "y", "'epk' member") if "y" in epk else None
    apu = _bytes(header, "apu", "header member") if "apu" in header else b""
    apv = _bytes(header, "apv", "header member") if "apv" in header else b""
    # a `kty` or `crv` that is not a string matches none of our keys
    kty = kty if isinstance(kty, str) else ""
    crv = crv if isinstance(crv, str) else ""
    return Agreement(kty, crv, x, y, apu, apv)


def _bytes(where: Mapping[str, Any], name: str, what: str) -> bytes:
    value = where.get(name)
    if not isinstance(value, str):
        raise _invalid(f"{what} '{name}' must be a base64url string")
    try:
        return base64url.decode(value)
    except ValueError:
        raise _invalid(f"{what} '{name}' is not canonical base64url") from None
