"""`ext-authz keys generate`: make our decryption keys, and show the public half."""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from joserfc.jwk import ECKey, KeyParameters, OctKey, OKPKey, RSAKey

from ext_authz import strict_json
from ext_authz.algorithms import CONTENT_ENCRYPTION, ECDH_CURVES, KEY_MANAGEMENT
from ext_authz.keys.decryption_keys import parse_decryption_jwks
from ext_authz.keys.jwk import MIN_RSA_BITS


def new_key(alg: str, *, kid: str | None, curve: str, rsa_bits: int, enc: str) -> dict[str, Any]:
    kid = kid or f"enc-{secrets.token_hex(6)}"
    params: KeyParameters = {"kid": kid, "alg": alg, "use": "enc"}
    key: RSAKey | ECKey | OKPKey | OctKey
    row = KEY_MANAGEMENT.get(alg)
    if row is None:
        raise ValueError(f"unsupported algorithm {alg}")
    if "RSA" in row.kty:
        if rsa_bits < MIN_RSA_BITS:
            raise ValueError(f"RSA keys need at least {MIN_RSA_BITS} bits")
        key = RSAKey.generate_key(rsa_bits, parameters=params)
    elif curve in ECDH_CURVES["OKP"] and "OKP" in row.kty:
        key = OKPKey.generate_key("X25519", parameters=params)
    elif curve in ECDH_CURVES["EC"] and "EC" in row.kty:
        key = ECKey.generate_key(curve, parameters=params)
    elif "EC" in row.kty:
        raise ValueError(f"unsupported curve {curve}")
    elif row.wrap_bytes is not None:
        key = OctKey.generate_key(row.wrap_bytes * 8, parameters=params)
    elif enc in CONTENT_ENCRYPTION:  # `dir`: the key is the content encryption key
        key = OctKey.generate_key(CONTENT_ENCRYPTION[enc].cek_bytes * 8, parameters=params)
    else:
        raise ValueError(f"unsupported content encryption {enc}")
    return dict(key.as_dict(private=True))


def public_jwks(private: dict[str, Any]) -> dict[str, Any]:
    """The public halves of the asymmetric keys (symmetric keys have none)."""
    public = []
    for raw in private.get("keys", []):
        if raw.get("kty") == "oct":
            continue
        public.append({k: v for k, v in raw.items() if k not in {"d", "p", "q", "dp", "dq", "qi"}})
    return {"keys": public}


def generate(
    out: Path,
    alg: str,
    *,
    kid: str | None = None,
    curve: str = "P-256",
    rsa_bits: int = 2048,
    enc: str = "A256GCM",
    append: bool = False,
) -> dict[str, Any]:
    """Write (or, with `append`, extend) a private JWKS at `out`; return the new key's
    public JWKS entry set for the whole file."""
    existing: dict[str, Any] = {"keys": []}
    if out.exists():
        if not append:
            raise FileExistsError(f"{out} exists; use --append to add a key for rotation")
        existing = strict_json.loads(out.read_text(encoding="utf-8"))
        if not isinstance(existing, dict) or not isinstance(existing.get("keys"), list):
            raise ValueError(f"{out} is not a JWKS (a JSON object with a 'keys' array)")
    key = new_key(alg, kid=kid, curve=curve, rsa_bits=rsa_bits, enc=enc)
    if any(k.get("kid") == key["kid"] for k in existing.get("keys", [])):
        raise ValueError(f"kid {key['kid']!r} is already in {out}")
    document = {"keys": [*existing.get("keys", []), key]}
    parse_decryption_jwks(document)  # the file we write must load
    _write_private(out, document)
    return public_jwks(document)


def _write_private(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".keys-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
