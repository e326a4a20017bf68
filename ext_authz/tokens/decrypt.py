"""Decrypt a compact JWE addressed to us (RFC 7516 section 5.2), after our own checks
of its header.

The framing is ours: the five segments are split and decoded once, by the one strict
base64url decoder; the header is checked against our table (`jwe_header.py`); the
content encryption key is recovered with one `cryptography` call per step
(`jwe_keys.py`); the content is decrypted by `cryptography`'s AES-GCM, or joserfc's
AES-CBC + HMAC-SHA-2 model, with the ASCII of the protected header segment as the
authenticated data.

What is refused whatever the policy's allow-lists say: `RSA1_5` (a padding oracle
by design), every `PBES2-*` (password-derived keys, attacker-chosen work factor),
compressed plaintext (`zip`), `crit`, and an IV or tag of the wrong length for the
content encryption. A header member is either a JWE header parameter or one of the
registered claims that RFC 7519 section 5.3 lets an issuer replicate in the header
(`iss`, `sub`, `aud`, ...); a replicated claim must equal the same claim inside the
token (`Decrypted.check_replicated`). A refused header has its own reason, decided
before any key is used; only a failure of the cryptography itself is
`decryption_failed` (whichever step failed, with whichever key), and clients see one
401 `invalid_token` for all of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from joserfc.errors import JoseError
from joserfc.jwe import JWERegistry

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
from ext_authz.tokens.jwe_header import (
    REPLICATED_CLAIMS,
    check_members,
    read_agreement,
)
from ext_authz.tokens.jwe_keys import CRYPTO_ERRORS, KeyMismatch, content_key

MAX_KEYS_TRIED = 4  # without a kid, this many keys of the right type at most

_NAME = re.compile(r"[A-Za-z0-9_+-]{1,32}")
_NESTED_CTY = frozenset({"jwt", "at+jwt", "application/jwt", "application/at+jwt"})
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_COMPACT_JWE = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]*){4}")
_AGREEMENT = frozenset(name for name, row in KEY_MANAGEMENT.items() if row.agreement)
# a key that does not decrypt the token: `cryptography`'s errors, or joserfc's content
# model refusing the tag or the padding
_KEY_FAILURES = (KeyMismatch, JoseError, *CRYPTO_ERRORS)

# decrypt(ciphertext, tag, cek, iv, aad) -> plaintext
ContentDecryption = Callable[[bytes, bytes, bytes, bytes, bytes], bytes]


def _aes_gcm(ciphertext: bytes, tag: bytes, cek: bytes, iv: bytes, aad: bytes) -> bytes:
    """AES-GCM as one `cryptography` call (RFC 7518 section 5.3): the same cipher as
    joserfc's GCM model, without building a `Cipher` per token."""
    return AESGCM(cek).decrypt(iv, ciphertext + tag, aad)


def _content_decryption(enc: str, registry: JWERegistry) -> ContentDecryption:
    if enc.endswith("GCM"):
        return _aes_gcm
    # the AES-CBC + HMAC-SHA-2 composite (RFC 7518 section 5.2) is joserfc's model
    return registry.get_enc(enc).decrypt


@dataclass(frozen=True, slots=True)
class DecryptionConfig:
    key_set: DecryptionKeySet
    algorithms: frozenset[str]
    encryptions: frozenset[str]
    # the content decryption of each accepted `enc`
    contents: Mapping[str, ContentDecryption]

    @classmethod
    def build(
        cls, keys: DecryptionKeySet, algorithms: frozenset[str], encryptions: frozenset[str]
    ) -> DecryptionConfig:
        algorithms = algorithms & frozenset(KEY_MANAGEMENT)
        encryptions = encryptions & frozenset(CONTENT_ENCRYPTION)
        registry = JWERegistry(algorithms=sorted(encryptions))
        contents = {enc: _content_decryption(enc, registry) for enc in sorted(encryptions)}
        return cls(keys, algorithms, encryptions, contents)


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
    agreement = read_agreement(header) if alg in _AGREEMENT else None
    # every segment decoded once, by the one strict decoder
    encrypted_key = b64url_decode(parts[1], "encrypted key")
    iv = b64url_decode(parts[2], "IV")
    ciphertext = b64url_decode(parts[3], "ciphertext")
    tag = b64url_decode(parts[4], "tag")
    content = CONTENT_ENCRYPTION[enc]
    if KEY_MANAGEMENT[alg].encrypted_key != bool(encrypted_key):
        raise Denied(DenialReason.TOKEN_MALFORMED, f"encrypted key does not fit {alg}")
    if len(iv) != content.iv_bytes:
        raise Denied(DenialReason.TOKEN_MALFORMED, f"IV length wrong for {enc}")
    if len(tag) != content.tag_bytes:
        raise Denied(DenialReason.TOKEN_MALFORMED, f"tag length wrong for {enc}")
    kid = header.get("kid")
    candidates = config.key_set.candidates(kid if isinstance(kid, str) else None, alg)
    if KEY_MANAGEMENT[alg].direct:
        candidates = [k for k in candidates if k.size == content.cek_bytes]
    if not candidates:
        raise Denied(DenialReason.DECRYPTION_KEY_UNKNOWN, f"no decryption key for {alg}")
    decrypt_content = config.contents[enc]
    aad = parts[0].encode("ascii")  # RFC 7516 section 5.2 step 14
    for key in candidates[:MAX_KEYS_TRIED]:
        try:
            cek = content_key(key, alg, enc, encrypted_key, agreement)
            plaintext = decrypt_content(ciphertext, tag, cek, iv, aad)
        except _KEY_FAILURES:
            continue  # this key does not decrypt the token; which step failed is not said
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
    check_members(header, agreement=alg in _AGREEMENT)
    return alg, enc
