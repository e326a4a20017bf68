"""Our own private keys for tokens encrypted to us (JWE), loaded and checked once.

Unlike an issuer's public key set, this file is ours: any key in it that cannot be
used is a load error that stops the process, never a key silently skipped. Each key's
`cryptography` object (or its bytes, for a symmetric key) is made here, once, for the
JWE code (`tokens/jwe_keys.py`) to use as is on every token.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519
from joserfc.jwk import OctKey

from ext_authz import strict_json
from ext_authz.algorithms import CONTENT_ENCRYPTION, ECDH_CURVES, KEY_MANAGEMENT
from ext_authz.keys.jwk import (
    JoseKey,
    JwkRefused,
    import_jwk,
    member_bytes,
    read_kid,
    rsa_modulus_bits,
)

MAX_DECRYPTION_KEYS = 20
# an oct key wraps a content key (A*KW) or is one (`dir`): its size is one of theirs
_OCT_BYTES = frozenset(
    [row.wrap_bytes for row in KEY_MANAGEMENT.values() if row.wrap_bytes is not None]
    + [row.cek_bytes for row in CONTENT_ENCRYPTION.values()]
)


PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | x25519.X25519PrivateKey


class DecryptionKeyError(ValueError):
    """A decryption key set that cannot be used; the message never holds key material."""


@dataclass(frozen=True, slots=True, repr=False)
class DecryptionKey:
    kid: str | None
    kty: str
    curve: str | None
    alg: str | None
    size: int  # RSA modulus bits, or oct key bytes; 0 for EC/OKP
    key: JoseKey
    private: PrivateKey | None = None  # RSA, EC, OKP: `cryptography`'s private key
    secret: bytes = b""  # oct: the key's bytes

    def fits(self, alg: str) -> bool:
        """Whether this key may unwrap, agree or directly be the key for `alg`."""
        if self.alg is not None and self.alg != alg:
            return False
        row = KEY_MANAGEMENT.get(alg)
        if row is None or self.kty not in row.kty:
            return False
        return row.wrap_bytes is None or self.size == row.wrap_bytes

    @property
    def symmetric(self) -> bool:
        return self.kty == "oct"

    def __repr__(self) -> str:
        return f"DecryptionKey(kid={self.kid!r}, kty={self.kty}, alg={self.alg})"


@dataclass(frozen=True, slots=True)
class DecryptionKeySet:
    decryption_keys: tuple[DecryptionKey, ...]
    by_kid: Mapping[str, DecryptionKey] = field(default_factory=dict)

    def candidates(self, kid: str | None, alg: str) -> list[DecryptionKey]:
        if kid is not None:
            key = self.by_kid.get(kid)
            return [key] if key is not None and key.fits(alg) else []
        return [k for k in self.decryption_keys if k.fits(alg)]


def load_decryption_keys(
    *,
    path: Path | None = None,
    inline: Mapping[str, Any] | None = None,
    env: str | None = None,
) -> DecryptionKeySet:
    if path is not None:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise DecryptionKeyError(f"cannot read {path.name}: {exc.strerror}") from None
        document = _json(raw, path.name)
    elif env is not None:
        value = os.environ.get(env)
        if not value:
            raise DecryptionKeyError(f"environment variable {env} is not set")
        document = _json(value.encode(), f"${env}")
    else:
        document = inline
    return parse_decryption_jwks(document)


def _json(raw: bytes, where: str) -> Any:
    try:
        return strict_json.loads(raw)
    except strict_json.TooDeep as exc:
        raise DecryptionKeyError(f"{where}: {exc}") from None
    except (ValueError, UnicodeDecodeError):
        raise DecryptionKeyError(f"{where} is not valid JSON") from None


def parse_decryption_jwks(document: object) -> DecryptionKeySet:
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise DecryptionKeyError("a decryption JWKS is a JSON object with a 'keys' array")
    raw_keys = document["keys"]
    if not raw_keys:
        raise DecryptionKeyError("the decryption JWKS holds no key")
    if len(raw_keys) > MAX_DECRYPTION_KEYS:
        raise DecryptionKeyError(f"at most {MAX_DECRYPTION_KEYS} decryption keys")
    keys = [_parse_key(index, raw) for index, raw in enumerate(raw_keys)]
    by_kid: dict[str, DecryptionKey] = {}
    for key in keys:
        if key.kid is not None:
            if key.kid in by_kid:
                raise DecryptionKeyError(f"kid {key.kid!r} is used by two decryption keys")
            by_kid[key.kid] = key
    return DecryptionKeySet(tuple(keys), by_kid)


def _parse_key(index: int, raw: object) -> DecryptionKey:
    where = f"decryption key {index}"
    if not isinstance(raw, Mapping):
        raise DecryptionKeyError(f"{where} is not a JSON object")
    try:
        kid = read_kid(raw)
        if kid:
            where = f"decryption key {kid!r}"
        return _decryption_key(raw, kid)
    except JwkRefused as refused:
        raise DecryptionKeyError(f"{where}: {refused}") from None


def _decryption_key(raw: Mapping[str, Any], kid: str | None) -> DecryptionKey:
    if raw.get("use") not in (None, "enc"):
        raise JwkRefused("'use' must be 'enc'")
    ops = raw.get("key_ops")
    if ops is not None and (
        not isinstance(ops, list) or not {"decrypt", "unwrapKey", "deriveKey"} & set(ops)
    ):
        raise JwkRefused("'key_ops' does not allow decryption")
    alg = raw.get("alg")
    kty = raw.get("kty")
    curve = raw.get("crv") if isinstance(raw.get("crv"), str) else None
    size = 0
    if kty == "RSA":
        if "d" not in raw:
            raise JwkRefused("an RSA decryption key needs its private part")
        size = rsa_modulus_bits(raw)
    elif kty in ("EC", "OKP"):
        if curve not in ECDH_CURVES[kty]:
            raise JwkRefused(f"unsupported {kty} curve for key agreement")
        if "d" not in raw:
            raise JwkRefused(f"an {kty} decryption key needs its private part")
    elif kty == "oct":
        size = len(member_bytes(raw, "k"))
        if size not in _OCT_BYTES:
            *smaller, largest = sorted(_OCT_BYTES)
            raise JwkRefused(
                f"symmetric keys are {', '.join(map(str, smaller))} or {largest} bytes"
            )
    else:
        raise JwkRefused("unsupported key type")
    key = import_jwk(raw)
    decryption_key = DecryptionKey(kid, str(kty), curve, alg, size, key, *_prepared(key))
    if alg is not None:
        if alg not in KEY_MANAGEMENT:
            raise JwkRefused("'alg' is not a supported key management algorithm")
        if not decryption_key.fits(alg):
            raise JwkRefused(f"'alg' {alg} does not fit a {kty} key")
    return decryption_key


def _prepared(key: JoseKey) -> tuple[PrivateKey | None, bytes]:
    """The `cryptography` private key, or the secret bytes, that the key imported to."""
    if isinstance(key, OctKey):
        return None, key.raw_value
    private = key.private_key
    if isinstance(private, PrivateKey):
        return private, b""
    raise JwkRefused("not a private key for decryption")
