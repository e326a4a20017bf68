"""Decrypt a compact JWE addressed to us, after our own checks of its header.

What is refused whatever the policy's allow-lists say: `RSA1_5` (a padding oracle
by design), every `PBES2-*` (password-derived keys, attacker-chosen work factor),
compressed plaintext (`zip`), `crit`, and an IV or tag of the wrong length for the
content encryption. A header member is either a JWE header parameter or one of the
registered claims that RFC 7519 section 5.3 lets an issuer replicate in the header
(`iss`, `sub`, `aud`, ...); a replicated claim must equal the same claim inside the
token (`Decrypted.check_replicated`). A refused header has its own reason; only a
failure of the cryptography itself is `decryption_failed`, and clients see one 401
`invalid_token` for all of them.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from joserfc import jwe
from joserfc.errors import (
    DecodeError,
    InvalidEncryptedKeyError,
    InvalidExchangeKeyError,
    InvalidHeaderValueError,
    InvalidKeyCurveError,
    InvalidKeyLengthError,
    KeyParameterError,
    MissingHeaderError,
    UnsupportedHeaderError,
)
from joserfc.jwe import JWERegistry
from joserfc.registry import HeaderParameter, HeaderRegistryDict

from ext_authz.algorithms import CONTENT_ENCRYPTION, KEY_MANAGEMENT
from ext_authz.errors import DenialReason, Denied
from ext_authz.keys.decryption_keys import DecryptionKey, DecryptionKeySet
from ext_authz.strict_json import json_equal
from ext_authz.tokens.format import (
    MAX_HEADER_BYTES,
    MAX_TOKEN_BYTES,
    b64url_decode,
    decode_json_object,
)

MAX_KEYS_TRIED = 4  # without a kid, this many keys of the right type at most

_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")
_NAME = re.compile(r"[A-Za-z0-9_+-]{1,32}")
_NESTED_CTY = frozenset({"jwt", "at+jwt", "application/jwt", "application/at+jwt"})
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_COMPACT_JWE = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]*){4}")


def _is_audience(value: Any) -> None:
    if isinstance(value, str):
        return
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("must be a string or a list of strings")


def _is_numeric_date(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")


# RFC 7519 section 5.3: registered claims an issuer may replicate in the JWE header
REPLICATED_CLAIMS: HeaderRegistryDict = {
    "iss": HeaderParameter("Issuer (replicated claim)", "str"),
    "sub": HeaderParameter("Subject (replicated claim)", "str"),
    "aud": HeaderParameter("Audience (replicated claim)", _is_audience),
    "exp": HeaderParameter("Expiration Time (replicated claim)", _is_numeric_date),
    "nbf": HeaderParameter("Not Before (replicated claim)", _is_numeric_date),
    "iat": HeaderParameter("Issued At (replicated claim)", _is_numeric_date),
    "jti": HeaderParameter("JWT ID (replicated claim)", "str"),
}
# the cryptography failed with this key, or the token's `epk` does not fit its type or
# curve: another key may still fit
_KEY_ERRORS = (
    DecodeError,
    InvalidEncryptedKeyError,
    InvalidExchangeKeyError,
    InvalidKeyCurveError,
    InvalidKeyLengthError,
    KeyParameterError,
)


@dataclass(frozen=True, slots=True)
class DecryptionConfig:
    keys: DecryptionKeySet
    algorithms: frozenset[str]
    encryptions: frozenset[str]
    registry: JWERegistry

    @classmethod
    def build(
        cls, keys: DecryptionKeySet, algorithms: frozenset[str], encryptions: frozenset[str]
    ) -> DecryptionConfig:
        algorithms = algorithms & frozenset(KEY_MANAGEMENT)
        encryptions = encryptions & frozenset(CONTENT_ENCRYPTION)
        registry = JWERegistry(
            header_registry=REPLICATED_CLAIMS, algorithms=sorted(algorithms | encryptions)
        )
        return cls(keys, algorithms, encryptions, registry)


@dataclass(frozen=True, slots=True, repr=False)
class Decrypted:
    header: dict[str, Any]
    plaintext: bytes
    key: DecryptionKey

    def nested_token(self) -> str | None:
        """The inner compact JWS, or None when the plaintext is bare claims."""
        cty = self.header.get("cty")
        declared = isinstance(cty, str) and cty.lower() in _NESTED_CTY
        try:
            text = self.plaintext.decode("ascii").strip()
        except UnicodeDecodeError:
            text = ""
        if _COMPACT_JWS.fullmatch(text):
            return text
        if _COMPACT_JWE.fullmatch(text):
            raise Denied(DenialReason.NESTED_TOKEN_INVALID, "a JWE inside a JWE")
        if declared:
            raise Denied(DenialReason.NESTED_TOKEN_INVALID, "cty says JWT, plaintext is not a JWS")
        return None

    @property
    def replicated(self) -> tuple[str, ...]:
        """The names of the claims replicated in the header."""
        return tuple(name for name in REPLICATED_CLAIMS if name in self.header)

    def check_replicated(self, claims: Mapping[str, Any]) -> None:
        """Claims replicated in the header (RFC 7519 section 5.3) must say what the
        token's own claims say: the header is not the issuer's to vary."""
        for name in REPLICATED_CLAIMS:
            if name in self.header and (
                name not in claims or not json_equal(self.header[name], claims[name])
            ):
                raise Denied(
                    DenialReason.REPLICATED_CLAIM_MISMATCH,
                    f"'{name}' in the JWE header differs from the token's claim",
                )

    def __repr__(self) -> str:
        return f"Decrypted(alg={self.header.get('alg')}, enc={self.header.get('enc')})"


def decrypt_token(token: str, config: DecryptionConfig | None) -> Decrypted:
    if len(token) > MAX_TOKEN_BYTES:
        raise Denied(DenialReason.TOKEN_TOO_LARGE, f"token over {MAX_TOKEN_BYTES} bytes")
    if config is None:
        raise Denied(DenialReason.TOKEN_ENCRYPTED_UNSUPPORTED, "no decryption keys configured")
    parts = token.split(".")
    if len(parts) != 5:
        raise Denied(DenialReason.TOKEN_MALFORMED, f"{len(parts)} segments, a JWE has 5")
    header_raw = b64url_decode(parts[0], "header")
    if len(header_raw) > MAX_HEADER_BYTES:
        raise Denied(DenialReason.TOKEN_HEADER_INVALID, "header over the size limit")
    header = decode_json_object(header_raw, DenialReason.TOKEN_HEADER_INVALID, "header")
    alg, enc = _check_header(header, config)
    # the ciphertext (the bulk of the token) is decoded once, by the JWE library, with
    # the same strict decoder; here only its alphabet is checked
    if not _SEGMENT.fullmatch(parts[3]) or len(parts[3]) % 4 == 1:
        raise Denied(DenialReason.TOKEN_MALFORMED, "ciphertext is not base64url")
    encrypted_key, iv, tag = (b64url_decode(p, "segment") for p in (parts[1], parts[2], parts[4]))
    content = CONTENT_ENCRYPTION[enc]
    if KEY_MANAGEMENT[alg].encrypted_key != bool(encrypted_key):
        raise Denied(DenialReason.TOKEN_MALFORMED, f"encrypted key does not fit {alg}")
    if len(iv) != content.iv_bytes:
        raise Denied(DenialReason.TOKEN_MALFORMED, f"IV length wrong for {enc}")
    if len(tag) != content.tag_bytes:
        raise Denied(DenialReason.TOKEN_MALFORMED, f"tag length wrong for {enc}")
    kid = header.get("kid")
    candidates = config.keys.candidates(kid if isinstance(kid, str) else None, alg)
    if alg == "dir":
        candidates = [k for k in candidates if k.size == content.cek_bytes]
    if not candidates:
        raise Denied(DenialReason.DECRYPTION_KEY_UNKNOWN, f"no decryption key for {alg}")
    for key in candidates[:MAX_KEYS_TRIED]:
        plaintext = _attempt(token, key, config.registry)
        if plaintext is not None:
            return Decrypted(header, plaintext, key)
    raise Denied(DenialReason.DECRYPTION_FAILED)


def _check_header(header: dict[str, Any], config: DecryptionConfig) -> tuple[str, str]:
    alg = header.get("alg")
    enc = header.get("enc")
    if not isinstance(alg, str) or not isinstance(enc, str):
        raise Denied(DenialReason.TOKEN_HEADER_INVALID, "'alg' and 'enc' must be strings")
    if not _NAME.fullmatch(alg) or not _NAME.fullmatch(enc):
        raise Denied(DenialReason.TOKEN_HEADER_INVALID, "'alg' or 'enc' is not an algorithm name")
    if "crit" in header:
        raise Denied(DenialReason.TOKEN_CRIT_UNSUPPORTED)
    if "zip" in header:
        raise Denied(DenialReason.TOKEN_COMPRESSED, "compressed plaintext is refused")
    if alg not in config.algorithms:
        raise Denied(DenialReason.ENCRYPTION_NOT_ALLOWED, f"alg {alg}")
    if enc not in config.encryptions:
        raise Denied(DenialReason.ENCRYPTION_NOT_ALLOWED, f"enc {enc}")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise Denied(DenialReason.TOKEN_HEADER_INVALID, "'kid' is not a string")
    return alg, enc


def _attempt(token: str, key: DecryptionKey, registry: JWERegistry) -> bytes | None:
    """The plaintext, or None when this key does not decrypt the token."""
    try:
        result = jwe.decrypt_compact(token, key.key, registry=registry)
    except UnsupportedHeaderError:
        raise Denied(
            DenialReason.TOKEN_HEADER_INVALID,
            "a header member is neither a JWE parameter nor a registered claim",
        ) from None
    except (InvalidHeaderValueError, MissingHeaderError):
        # the message names a registered member, never the token's value
        raise Denied(
            DenialReason.TOKEN_HEADER_INVALID, "a header member has the wrong type"
        ) from None
    except binascii.Error:  # the library's strict base64url decoder, on the ciphertext
        raise Denied(
            DenialReason.TOKEN_MALFORMED, "ciphertext is not canonical base64url"
        ) from None
    except (*_KEY_ERRORS, ValueError):
        # the cryptography failed with this key (`cryptography` raises ValueError for an
        # `epk` that is not a point of the key's curve): another key may still fit
        return None
    plaintext = result.plaintext
    return plaintext if isinstance(plaintext, bytes) else None
