"""Find the bearer token in a request (RFC 6750 section 2.1, header form only)."""

from __future__ import annotations

import re
from collections.abc import Mapping

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
