"""The demo's encrypted token: a decryption key for the server, a policy that names it,
and a nested JWE (the issuer's signed JWT, encrypted to that key).

The key is made fresh for every run (`ext-authz keys generate`'s code) and lives in the
run's temporary directory; the server reads it through the derived policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from joserfc import jwe
from joserfc.jwk import RSAKey

from ext_authz.keys.generate import generate

DEMO_KEY_ALG = "RSA-OAEP-256"
DEMO_ENC = "A256GCM"
DEMO_KID = "demo-enc"
KEY_FILE = "demo-decryption.jwks.json"
POLICY_FILE = "demo-policy.yaml"


@dataclass(frozen=True, slots=True)
class DemoEncryption:
    """The server's demo decryption key (public half) and the policy that loads it."""

    public_jwk: dict[str, Any]
    policy: Path

    def encrypt(self, signed_token: str) -> str:
        """`signed_token` as the plaintext of a compact JWE to the demo key (`cty: JWT`)."""
        key = RSAKey.import_key(self.public_jwk)
        header = {"alg": DEMO_KEY_ALG, "enc": DEMO_ENC, "kid": DEMO_KID, "cty": "JWT"}
        return jwe.encrypt_compact(header, signed_token, key, algorithms=[DEMO_KEY_ALG, DEMO_ENC])


def _absolute_key_files(document: dict[str, Any], base: Path) -> None:
    """Key files named relative to the original policy, made absolute for the copy."""
    issuers = document.get("issuers")
    if isinstance(issuers, dict):
        for issuer in issuers.values():
            if isinstance(issuer, dict) and isinstance(issuer.get("jwks_file"), str):
                issuer["jwks_file"] = str((base / issuer["jwks_file"]).resolve())


def prepare(policy: Path, workdir: Path) -> DemoEncryption | None:
    """Write a decryption key and a copy of `policy` that adds it under `decryption:`
    into `workdir`. None when the policy configures decryption itself (its own keys,
    which the demo does not hold) or is not a YAML mapping (the server will say why)."""
    try:
        document = yaml.safe_load(policy.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(document, dict) or "decryption" in document:
        return None
    public = generate(workdir / KEY_FILE, DEMO_KEY_ALG, kid=DEMO_KID, enc=DEMO_ENC)
    _absolute_key_files(document, policy.resolve().parent)
    document["decryption"] = {
        "jwks_file": str((workdir / KEY_FILE).resolve()),
        "algorithms": [DEMO_KEY_ALG],
        "encryptions": [DEMO_ENC],
    }
    derived = workdir / POLICY_FILE
    derived.write_text(
        f"# {policy} with the demo's decryption key added by `ext-authz demo run`\n"
        + yaml.safe_dump(document, sort_keys=False),
        encoding="utf-8",
    )
    return DemoEncryption(public["keys"][0], derived)
