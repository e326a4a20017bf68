"""Read a compact token's structure before any cryptography touches it.

These checks are ours, not the JOSE library's, because a gateway must be stricter
than a library: sizes are bounded before decoding, base64url must be canonical,
JSON may not repeat a member or use NaN, `crit` is refused (we implement no
extensions), and JSON serialization is not a bearer token format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ext_authz import base64url, strict_json
from ext_authz.errors import DenialReason, Denied
from ext_authz.strict_json import DuplicateMember

MAX_TOKEN_BYTES = 16 * 1024
MAX_HEADER_BYTES = 4 * 1024  # decoded protected header
MAX_SIGNATURE_BYTES = 1024  # decoded; RSA-8192 signatures are 1024 bytes

_ALG = re.compile(r"[A-Za-z0-9+-]{1,32}")


@dataclass(frozen=True, slots=True, repr=False)
class SignedToken:
    """A compact JWS, split and decoded but not yet verified."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes

    @property
    def alg(self) -> str:
        return str(self.header["alg"])

    @property
    def kid(self) -> str | None:
        kid = self.header.get("kid")
        return kid if isinstance(kid, str) else None

    def __repr__(self) -> str:
        return f"SignedToken(alg={self.alg!r}, kid={'set' if self.kid else 'none'})"


def segment_count(token: str) -> int:
    return token.count(".") + 1


def parse_signed(token: str) -> SignedToken:
    """Split and decode a compact JWS. Raises `Denied` with the precise reason."""
    if len(token) > MAX_TOKEN_BYTES:
        raise Denied(DenialReason.TOKEN_TOO_LARGE, f"token over {MAX_TOKEN_BYTES} bytes")
    parts = token.split(".")
    if len(parts) == 5:
        raise Denied(DenialReason.NESTED_TOKEN_INVALID, "a JWE where a JWS is expected")
    if len(parts) != 3:
        raise Denied(DenialReason.TOKEN_MALFORMED, f"{len(parts)} segments, a JWS has 3")
    header_b64, payload_b64, signature_b64 = parts
    if not header_b64 or not payload_b64:
        raise Denied(DenialReason.TOKEN_MALFORMED, "empty header or payload")
    # An empty signature (as `alg: none` has) is decoded to b"" and never verifies.
    header_raw = b64url_decode(header_b64, "header")
    if len(header_raw) > MAX_HEADER_BYTES:
        raise Denied(DenialReason.TOKEN_HEADER_INVALID, "header over the size limit")
    header = decode_json_object(header_raw, DenialReason.TOKEN_HEADER_INVALID, "header")
    check_signature_header(header)
    signature = b64url_decode(signature_b64, "signature")
    if len(signature) > MAX_SIGNATURE_BYTES:
        raise Denied(DenialReason.TOKEN_MALFORMED, "signature over the size limit")
    claims = decode_json_object(
        b64url_decode(payload_b64, "payload"), DenialReason.TOKEN_PAYLOAD_INVALID, "payload"
    )
    signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
    return SignedToken(header, claims, signing_input, signature)


def check_signature_header(header: dict[str, Any]) -> None:
    alg = header.get("alg")
    if not isinstance(alg, str) or not _ALG.fullmatch(alg):
        raise Denied(DenialReason.TOKEN_HEADER_INVALID, "'alg' missing or not a short string")
    if "crit" in header:
        raise Denied(DenialReason.TOKEN_CRIT_UNSUPPORTED, "'crit' names extensions we do not use")
    for forbidden in ("b64", "zip", "enc"):
        if forbidden in header:
            raise Denied(DenialReason.TOKEN_HEADER_INVALID, f"'{forbidden}' in a JWS header")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise Denied(DenialReason.TOKEN_HEADER_INVALID, "'kid' is not a string")


def b64url_decode(segment: str, what: str) -> bytes:
    """Strict, canonical base64url without padding (RFC 7515 section 2), read by
    joserfc's decoder: no padding, no `+` or `/`, no stray bits in the last character."""
    try:
        return base64url.decode(segment)
    except ValueError:
        raise Denied(DenialReason.TOKEN_MALFORMED, f"{what} is not canonical base64url") from None


def decode_json_object(raw: bytes, reason: DenialReason, what: str) -> dict[str, Any]:
    try:
        value = strict_json.loads(raw.decode("utf-8"))
    except DuplicateMember:
        raise Denied(DenialReason.TOKEN_DUPLICATE_MEMBER, f"{what} repeats a member") from None
    except (ValueError, UnicodeDecodeError):  # strict_json.TooDeep is a ValueError
        raise Denied(reason, f"{what} is not UTF-8 JSON") from None
    if not isinstance(value, dict):
        raise Denied(reason, f"{what} is not a JSON object")
    return value
