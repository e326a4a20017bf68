"""Our own private keys for tokens encrypted to us (JWE), loaded and checked once.

Unlike an issuer's public key set, this file is ours: any key in it that cannot be
used is a load error that stops the process, never a key silently skipped.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

from ext_authz.algorithms import KEY_MANAGEMENT_ALGORITHMS
from ext_authz.keys.weak_rsa import has_close_primes, is_roca_modulus

MIN_RSA_BITS = 2048
MAX_DECRYPTION_KEYS = 20
_EC_CURVES = frozenset({"P-256", "P-384", "P-521"})
_OKP_CURVES = frozenset({"X25519"})
_OCT_BYTES = frozenset({16, 32, 64})

PrivateKey = RSAKey | ECKey | OKPKey | OctKey


class DecryptionKeyError(ValueError):
    """A decryption key set that cannot be used; the message never holds key material."""


@dataclass(frozen=True, slots=True, repr=False)
class DecryptionKey:
    kid: str | None
    kty: str
    curve: str | None
    alg: str | None
    size: int  # RSA modulus bits, or oct key bytes; 0 for EC/OKP
    key: PrivateKey

    def fits(self, alg: str) -> bool:
        """Whether this key may unwrap, agree or directly be the key for `alg`."""
        if self.alg is not None and self.alg != alg:
            return False
        if alg in ("RSA-OAEP", "RSA-OAEP-256"):
            return self.kty == "RSA"
        if alg.startswith("ECDH-ES"):
            return self.kty in ("EC", "OKP")
        if alg == "A128KW":
            return self.kty == "oct" and self.size == 16
        if alg == "A256KW":
            return self.kty == "oct" and self.size == 32
        if alg == "dir":
            return self.kty == "oct"
        return False

    @property
    def symmetric(self) -> bool:
        return self.kty == "oct"

    def __repr__(self) -> str:
        return f"DecryptionKey(kid={self.kid!r}, kty={self.kty}, alg={self.alg})"


@dataclass(frozen=True, slots=True)
class DecryptionKeySet:
    keys: tuple[DecryptionKey, ...]
    by_kid: Mapping[str, DecryptionKey] = field(default_factory=dict)

    def candidates(self, kid: str | None, alg: str) -> list[DecryptionKey]:
        if kid is not None:
            key = self.by_kid.get(kid)
            return [key] if key is not None and key.fits(alg) else []
        return [k for k in self.keys if k.fits(alg)]


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
        return json.loads(raw)
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
    kid = raw.get("kid")
    if kid is not None and (not isinstance(kid, str) or not kid or len(kid) > 256):
        raise DecryptionKeyError(f"{where}: 'kid' must be a non-empty string")
    if kid:
        where = f"decryption key {kid!r}"
    if raw.get("use") not in (None, "enc"):
        raise DecryptionKeyError(f"{where}: 'use' must be 'enc'")
    ops = raw.get("key_ops")
    if ops is not None and (
        not isinstance(ops, list) or not {"decrypt", "unwrapKey", "deriveKey"} & set(ops)
    ):
        raise DecryptionKeyError(f"{where}: 'key_ops' does not allow decryption")
    alg = raw.get("alg")
    kty = raw.get("kty")
    curve = raw.get("crv") if isinstance(raw.get("crv"), str) else None
    size = 0
    key: PrivateKey
    try:
        if kty == "RSA":
            if "d" not in raw:
                raise DecryptionKeyError(f"{where}: an RSA decryption key needs its private part")
            modulus = int.from_bytes(_b64_bytes(raw.get("n")), "big")
            size = modulus.bit_length()
            if size < MIN_RSA_BITS:
                raise DecryptionKeyError(f"{where}: RSA keys need at least {MIN_RSA_BITS} bits")
            if is_roca_modulus(modulus):
                raise DecryptionKeyError(f"{where}: RSA modulus from a weak generator (ROCA)")
            if has_close_primes(modulus):
                raise DecryptionKeyError(
                    f"{where}: RSA modulus with close primes (CVE-2022-26320): it factors at once"
                )
            key = RSAKey.import_key(dict(raw))
        elif kty == "EC":
            if curve not in _EC_CURVES:
                raise DecryptionKeyError(f"{where}: unsupported EC curve")
            if "d" not in raw:
                raise DecryptionKeyError(f"{where}: an EC decryption key needs its private part")
            key = ECKey.import_key(dict(raw))
        elif kty == "OKP":
            if curve not in _OKP_CURVES:
                raise DecryptionKeyError(f"{where}: OKP decryption keys must be X25519")
            if "d" not in raw:
                raise DecryptionKeyError(f"{where}: an OKP decryption key needs its private part")
            key = OKPKey.import_key(dict(raw))
        elif kty == "oct":
            size = len(_b64_bytes(raw.get("k")))
            if size not in _OCT_BYTES:
                raise DecryptionKeyError(f"{where}: symmetric keys are 16, 32 or 64 bytes")
            key = OctKey.import_key(dict(raw))
        else:
            raise DecryptionKeyError(f"{where}: unsupported key type")
    except DecryptionKeyError:
        raise
    except (JoseError, ValueError, TypeError, KeyError):
        raise DecryptionKeyError(f"{where}: not a valid {kty} private key") from None
    decryption_key = DecryptionKey(kid, str(kty), curve, alg, size, key)
    if alg is not None:
        if alg not in KEY_MANAGEMENT_ALGORITHMS:
            raise DecryptionKeyError(f"{where}: 'alg' is not a supported key management algorithm")
        if not decryption_key.fits(alg):
            raise DecryptionKeyError(f"{where}: 'alg' {alg} does not fit a {kty} key")
    return decryption_key


def _b64_bytes(value: object) -> bytes:
    if not isinstance(value, str) or len(value) > 4096:
        raise DecryptionKeyError("key member is not base64url")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError:
        raise DecryptionKeyError("key member is not base64url") from None
