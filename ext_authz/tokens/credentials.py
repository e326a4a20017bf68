"""Find the token in a request: `Authorization: Bearer` (RFC 6750 section 2.1) by
default, or a named header or cookie where a route or issuer says so."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ext_authz.errors import DenialReason, Denied

MAX_AUTHORIZATION_BYTES = 16 * 1024 + 64

# RFC 6750 b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_SCHEME = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+)(?: +(.*))?", re.DOTALL)


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token from `Authorization: Bearer <token>`, or None when there is none.

    Envoy joins repeated headers with commas; a comma cannot occur in a token, so a
    comma means two credentials, which is refused rather than guessed at.
    """
    value = headers.get("authorization")
    if value is None:
        return None
    if len(value) > MAX_AUTHORIZATION_BYTES:
        raise Denied(DenialReason.TOKEN_TOO_LARGE, "authorization header over the size limit")
    value = value.strip(" \t")
    if not value:
        raise Denied(DenialReason.AUTHORIZATION_MALFORMED, "empty authorization header")
    if "," in value:
        raise Denied(DenialReason.AUTHORIZATION_MULTIPLE, "more than one credential")
    found = _SCHEME.fullmatch(value)
    if found is None:
        raise Denied(DenialReason.AUTHORIZATION_MALFORMED, "not 'scheme credentials'")
    scheme, credentials = found.group(1), found.group(2)
    if scheme.lower() != "bearer":
        raise Denied(DenialReason.AUTHORIZATION_NOT_BEARER, "authorization scheme is not Bearer")
    if credentials is None or not _B64TOKEN.fullmatch(credentials):
        raise Denied(DenialReason.AUTHORIZATION_MALFORMED, "bearer credentials are not a token")
    return credentials


# -- tokens from a named header or cookie (a route's or issuer's `token_from`) ----------

# What a compact JWS/JWE may hold: base64url segments and dots.
_COMPACT = re.compile(r"[A-Za-z0-9\-_.]+")


@dataclass(frozen=True, slots=True)
class HeaderSource:
    name: str  # lower-case
    prefix: str = ""  # e.g. "Token "; a value without it is not a credential


@dataclass(frozen=True, slots=True)
class TokenSources:
    """Where a route reads its token, like jwt_authn's `from_headers`/`from_cookies`.
    Never the query string. Two credentials in one request are refused (400)."""

    headers: tuple[HeaderSource, ...] = ()
    cookies: tuple[str, ...] = ()

    @property
    def header_names(self) -> frozenset[str]:
        names = {source.name for source in self.headers}
        if self.cookies:
            names.add("cookie")
        return frozenset(names)


BEARER = HeaderSource("authorization", "Bearer ")


def merge_sources(sources: list[TokenSources]) -> TokenSources:
    headers: list[HeaderSource] = []
    cookies: list[str] = []
    for source in sources:
        headers += [h for h in source.headers if h not in headers]
        cookies += [c for c in source.cookies if c not in cookies]
    return TokenSources(tuple(headers), tuple(cookies))


def _checked(value: str, where: str) -> str:
    if len(value) > MAX_AUTHORIZATION_BYTES:
        raise Denied(DenialReason.TOKEN_TOO_LARGE, f"{where} over the size limit")
    if "," in value:
        raise Denied(DenialReason.AUTHORIZATION_MULTIPLE, f"more than one credential in {where}")
    if not _COMPACT.fullmatch(value):
        raise Denied(DenialReason.AUTHORIZATION_MALFORMED, f"{where} does not hold a token")
    return value


def _from_header(headers: Mapping[str, str], source: HeaderSource) -> str | None:
    if source == BEARER:
        return bearer_token(headers)
    value = headers.get(source.name)
    if value is None:
        return None
    value = value.strip(" \t")
    if source.prefix:
        if value[: len(source.prefix)].lower() != source.prefix.lower():
            return None
        value = value[len(source.prefix) :].strip(" \t")
    if not value:
        raise Denied(DenialReason.AUTHORIZATION_MALFORMED, f"empty {source.name} header")
    return _checked(value, f"header {source.name}")


def _from_cookies(headers: Mapping[str, str], names: tuple[str, ...]) -> list[str]:
    header = headers.get("cookie")
    if header is None:
        return []
    if len(header) > 4 * MAX_AUTHORIZATION_BYTES:
        raise Denied(DenialReason.TOKEN_TOO_LARGE, "cookie header over the size limit")
    found = []
    # Envoy and our door join repeated Cookie headers with ',', browsers use "; ".
    for pair in header.replace(",", ";").split(";"):
        name, sep, value = pair.strip(" \t").partition("=")
        if sep and name in names:
            value = value.strip(" \t")
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            found.append(_checked(value, f"cookie {name}"))
    return found


def find_token(headers: Mapping[str, str], sources: TokenSources | None) -> str | None:
    """The token from `sources` (None: `Authorization: Bearer`), or None when there is
    none. Raises `Denied` for a malformed credential or for more than one."""
    if sources is None:
        return bearer_token(headers)
    found: list[str] = []
    for source in sources.headers:
        token = _from_header(headers, source)
        if token is not None:
            found.append(token)
    if sources.cookies:
        found += _from_cookies(headers, sources.cookies)
    if len(found) > 1:
        raise Denied(DenialReason.AUTHORIZATION_MULTIPLE, "more than one credential")
    return found[0] if found else None
