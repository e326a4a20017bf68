"""Encrypted tokens: decrypt + verify per second, next to the raw primitives.

For RSA-OAEP-256/A256GCM and ECDH-ES+A256KW/A256GCM, each row is CPU time per call on
one thread: the server's whole path for a nested JWE (decrypt with joserfc, then the
inner RS256 JWS verified exactly as a bare one, no token cache), and the same work done
with raw `cryptography` calls (key unwrap or agreement, AES-GCM, RS256 verify), measured
in the same run as the reference.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap
from joserfc.jwk import ECKey, RSAKey
from jwcrypto import jwe, jwk

from ext_authz.authorizer import Authorizer
from ext_authz.clock import SystemClock
from ext_authz.decision import Allow
from ext_authz.keys.generate import generate
from ext_authz.keys.store import StaticKeys
from ext_authz.policy.loader import compile_policy_text
from ext_authz.request import RequestView
from tests.support.tokens import CORP, mint_live


@dataclass(frozen=True)
class JweRow:
    case: str
    ours_us: float
    raw_us: float

    @property
    def ours_per_second(self) -> float:
        return 1e6 / self.ours_us

    @property
    def ratio(self) -> float:
        return self.raw_us / self.ours_us


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _cpu_us(call: Callable[[], object], seconds: float) -> float:
    """Best of three runs of `seconds` each, in CPU microseconds per call."""
    best = float("inf")
    for _ in range(3):
        calls = 0
        start = time.process_time()
        while True:
            call()
            calls += 1
            elapsed = time.process_time() - start
            if elapsed >= seconds:
                break
        best = min(best, elapsed / calls * 1e6)
    return best


def _encrypt(inner: str, public: dict[str, Any], alg: str) -> str:
    header = {"alg": alg, "enc": "A256GCM", "kid": public["kid"], "cty": "JWT"}
    token = jwe.JWE(inner.encode(), json.dumps(header))
    token.add_recipient(jwk.JWK(**public))
    return str(token.serialize(compact=True))


def _raw_rs256(token: str, public: rsa.RSAPublicKey) -> None:
    head, body, sig = token.split(".")
    public.verify(_b64(sig), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())


def _raw_rsa_oaep(token: str, private: rsa.RSAPrivateKey, inner_key: rsa.RSAPublicKey) -> None:
    header, ek, iv, ct, tag = token.split(".")
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    cek = private.decrypt(_b64(ek), oaep)
    inner = AESGCM(cek).decrypt(_b64(iv), _b64(ct) + _b64(tag), header.encode())
    _raw_rs256(inner.decode(), inner_key)


def _concat_kdf(shared: bytes, alg: str, bits: int, apu: bytes, apv: bytes) -> bytes:
    def field(data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + data

    other = field(alg.encode()) + field(apu) + field(apv) + bits.to_bytes(4, "big")
    return hashlib.sha256(b"\x00\x00\x00\x01" + shared + other).digest()[: bits // 8]


def _raw_ecdh_kw(
    token: str, private: ec.EllipticCurvePrivateKey, inner_key: rsa.RSAPublicKey
) -> None:
    header_b64, ek, iv, ct, tag = token.split(".")
    header = json.loads(_b64(header_b64))
    epk = header["epk"]
    numbers = ec.EllipticCurvePublicNumbers(
        int.from_bytes(_b64(epk["x"]), "big"), int.from_bytes(_b64(epk["y"]), "big"), ec.SECP256R1()
    )
    shared = private.exchange(ec.ECDH(), numbers.public_key())
    kek = _concat_kdf(shared, "ECDH-ES+A256KW", 256, b"", b"")
    cek = aes_key_unwrap(kek, _b64(ek))
    inner = AESGCM(cek).decrypt(_b64(iv), _b64(ct) + _b64(tag), header_b64.encode())
    _raw_rs256(inner.decode(), inner_key)


def run(workdir: Path, seconds: float = 1.0) -> list[JweRow]:
    keys_file = workdir / "decrypt.jwks.json"
    generate(keys_file, "RSA-OAEP-256", kid="rsa")
    public = {
        k["kid"]: k for k in generate(keys_file, "ECDH-ES+A256KW", kid="ec", append=True)["keys"]
    }
    private = {k["kid"]: k for k in json.loads(keys_file.read_text())["keys"]}
    policy = compile_policy_text(
        f"""\
issuers:
  corp:
    issuer: "{CORP.iss}"
    audiences: [orders-api]
    algorithms: [RS256]
    jwks: {json.dumps(CORP.jwks())}
decryption:
  jwks_file: {keys_file.name}
  algorithms: [RSA-OAEP-256, ECDH-ES+A256KW]
  encryptions: [A256GCM]
routes:
  - name: all
    match: {{ path_prefix: / }}
    require: {{ scopes: [orders:read] }}
    headers: {{ x-user-id: sub }}
""",
        label="bench",
        base_dir=workdir,
    )
    corp_keys = policy.issuers["corp"].source.static_keys
    assert corp_keys is not None
    keys = StaticKeys({"corp": corp_keys})
    authorizer = Authorizer(lambda: policy, keys, SystemClock())  # no token cache
    inner_public = CORP.key.public_key()
    assert isinstance(inner_public, rsa.RSAPublicKey)
    rsa_private = RSAKey.import_key(private["rsa"]).private_key
    ec_private = ECKey.import_key(private["ec"]).private_key
    assert isinstance(rsa_private, rsa.RSAPrivateKey)
    assert isinstance(ec_private, ec.EllipticCurvePrivateKey)
    cases: list[tuple[str, str, str, Callable[[str], None]]] = [
        (
            "RSA-OAEP-256 + A256GCM",
            "RSA-OAEP-256",
            "rsa",
            lambda t: _raw_rsa_oaep(t, rsa_private, inner_public),
        ),
        (
            "ECDH-ES+A256KW + A256GCM (P-256)",
            "ECDH-ES+A256KW",
            "ec",
            lambda t: _raw_ecdh_kw(t, ec_private, inner_public),
        ),
    ]
    rows = []
    for case, alg, kid, raw in cases:
        token = _encrypt(mint_live(CORP), public[kid], alg)
        view = RequestView("GET", "/x", "h", {"authorization": f"Bearer {token}"})
        assert isinstance(authorizer.check(view), Allow)
        raw(token)  # the reference path must work on the same token

        def ours(view: RequestView = view) -> object:
            return authorizer.check(view)

        def reference(token: str = token, raw: Callable[[str], None] = raw) -> None:
            raw(token)

        rows.append(JweRow(case, _cpu_us(ours, seconds), _cpu_us(reference, seconds)))
    return rows


def markdown(rows: list[JweRow]) -> str:
    lines = [
        "| nested JWE (inner RS256) | ours: decrypt + verify | per second "
        "| raw `cryptography` | raw / ours |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.case} | {row.ours_us:.0f} µs | {row.ours_per_second:,.0f} | "
            f"{row.raw_us:.0f} µs | {row.ratio:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(markdown(run(Path(tmp))))
