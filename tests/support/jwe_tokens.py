"""Named decryption keys and JWE tokens for the tests, built with jwcrypto.

The server decrypts with joserfc; these tokens come from a different implementation,
so a test passes only when the two agree on the wire format. The inner JWS of a
nested token comes from `tests.support.tokens.mint()` (PyJWT):

    encrypt_nested(mint(CORP), RSA_ENC.public_jwk(), "RSA-OAEP-256", "A256GCM")
    encrypt_claims(good_claims(CORP), SHARED_CORP.public_jwk(), "A256KW", "A256GCM")

A key's `kid` goes into the JWE header unless the call says `kid=None` or another kid.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jwcrypto import jwe, jwk

from tests.support.tokens import AUDIENCE, TestIssuer, policy_yaml

KEY_MANAGEMENT_ALGORITHMS = (
    "RSA-OAEP",
    "RSA-OAEP-256",
    "ECDH-ES",
    "ECDH-ES+A128KW",
    "ECDH-ES+A256KW",
    "A128KW",
    "A256KW",
    "dir",
)
CONTENT_ENCRYPTIONS = ("A128GCM", "A256GCM", "A128CBC-HS256", "A256CBC-HS512")
ECDH_ALGORITHMS = ("ECDH-ES", "ECDH-ES+A128KW", "ECDH-ES+A256KW")
# the content encryption key (and so a `dir` key) size, in bytes, per `enc`
CEK_BYTES = {"A128GCM": 16, "A256GCM": 32, "A128CBC-HS256": 32, "A256CBC-HS512": 64}


@dataclass(frozen=True)
class DecryptionTestKey:
    """One of our decryption keys: the server holds the private JWK, clients the public."""

    name: str
    kid: str
    key: jwk.JWK = field(repr=False)
    alg: str | None = None  # written into the JWKS entry when set

    @property
    def kty(self) -> str:
        return str(self.key.get("kty"))

    def private_jwk(self) -> dict[str, Any]:
        """The entry of this key in our decryption JWKS."""
        entry: dict[str, Any] = dict(self.key.export(private_key=True, as_dict=True))
        entry["kid"] = self.kid
        entry["use"] = "enc"
        if self.alg is not None:
            entry["alg"] = self.alg
        else:
            entry.pop("alg", None)
        return entry

    def public_jwk(self) -> dict[str, Any]:
        """What a client encrypts to; for a symmetric key, the shared secret itself."""
        if self.kty == "oct":
            return self.private_jwk()
        entry: dict[str, Any] = dict(self.key.export_public(as_dict=True))
        entry["kid"] = self.kid
        entry["use"] = "enc"
        return entry


def _rsa(name: str, kid: str, bits: int = 2048) -> DecryptionTestKey:
    return DecryptionTestKey(name, kid, jwk.JWK.generate(kty="RSA", size=bits))


def _ec(name: str, kid: str, crv: str) -> DecryptionTestKey:
    kty = "OKP" if crv.startswith("X") else "EC"
    return DecryptionTestKey(name, kid, jwk.JWK.generate(kty=kty, crv=crv))


def _oct(name: str, kid: str, size: int, alg: str | None) -> DecryptionTestKey:
    return DecryptionTestKey(name, kid, jwk.JWK.generate(kty="oct", size=size * 8), alg)


RSA_ENC = _rsa("rsa", "enc-rsa-1")
RSA_ENC_2 = _rsa("rsa_2", "enc-rsa-2")  # the rotation's second key
EC_P256 = _ec("p256", "enc-p256", "P-256")
EC_P384 = _ec("p384", "enc-p384", "P-384")
X25519_ENC = _ec("x25519", "enc-x25519", "X25519")
KW128 = _oct("kw128", "enc-kw128", 16, "A128KW")
KW256 = _oct("kw256", "enc-kw256", 32, "A256KW")
DIR128 = _oct("dir128", "enc-dir128", 16, "dir")
DIR256 = _oct("dir256", "enc-dir256", 32, "dir")
DIR512 = _oct("dir512", "enc-dir512", 64, "dir")
# symmetric keys shared with one issuer each, for bare (unsigned) encrypted claims
SHARED_CORP = _oct("shared_corp", "shared-corp", 32, "A256KW")
SHARED_PARTNER = _oct("shared_partner", "shared-partner", 32, "A256KW")
# keys of nobody's: a client that encrypts to them reaches no key of ours
ROGUE_RSA_ENC = _rsa("rogue_rsa", "enc-rsa-1")  # same kid as RSA_ENC, other key
ROGUE_KW256 = _oct("rogue_kw256", "enc-kw256", 32, "A256KW")
PASSWORD = DecryptionTestKey("password", "pbes2", jwk.JWK.from_password("correct horse battery"))

DIR_KEYS = {16: DIR128, 32: DIR256, 64: DIR512}
ECDH_KEYS = (EC_P256, EC_P384, X25519_ENC)
# every key of the shared test policy (at most 20, the server's limit)
POLICY_KEYS = (
    RSA_ENC,
    EC_P256,
    EC_P384,
    X25519_ENC,
    KW128,
    KW256,
    DIR128,
    DIR256,
    DIR512,
    SHARED_CORP,
    SHARED_PARTNER,
)


def dir_key(enc: str) -> DecryptionTestKey:
    """The `dir` key whose size is the content encryption key of `enc`."""
    return DIR_KEYS[CEK_BYTES[enc]]


def decryption_jwks(*keys: DecryptionTestKey) -> dict[str, Any]:
    """Our private decryption JWKS holding `keys`."""
    return {"keys": [key.private_jwk() for key in keys]}


def write_decryption_jwks(path: Path, *keys: DecryptionTestKey) -> Path:
    """Write our private decryption JWKS to `path`, for a policy's `jwks_file`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(decryption_jwks(*keys), indent=2))
    return path


def decryption_yaml(
    *,
    keys: Sequence[DecryptionTestKey] = (),
    jwks_file: str | None = None,
    jwks_env: str | None = None,
    algorithms: Sequence[str] = KEY_MANAGEMENT_ALGORITHMS,
    encryptions: Sequence[str] = CONTENT_ENCRYPTIONS,
) -> str:
    """The policy's `decryption:` section: inline `keys`, a `jwks_file` or a `jwks_env`."""
    lines = ["decryption:"]
    if keys:
        lines.append(f"  jwks: {json.dumps(decryption_jwks(*keys))}")
    if jwks_file is not None:
        lines.append(f"  jwks_file: {json.dumps(jwks_file)}")
    if jwks_env is not None:
        lines.append(f"  jwks_env: {json.dumps(jwks_env)}")
    lines.append(f"  algorithms: {json.dumps(list(algorithms))}")
    lines.append(f"  encryptions: {json.dumps(list(encryptions))}")
    return "\n".join(lines) + "\n"


def issuer_yaml(
    issuer: TestIssuer,
    *,
    require_encryption: bool = False,
    unsigned_encrypted_keys: Sequence[str] = (),
) -> str:
    """One issuer entry, like `policy_yaml` writes it, plus the JWE options."""
    lines = [
        f"  {issuer.name}:",
        f"    issuer: {json.dumps(issuer.iss)}",
        f"    audiences: [{AUDIENCE}]",
        f"    algorithms: [{issuer.alg}]",
        f"    jwks: {json.dumps(issuer.jwks())}",
    ]
    if require_encryption:
        lines.append("    require_encryption: true")
    if unsigned_encrypted_keys:
        lines.append(f"    unsigned_encrypted_keys: {json.dumps(list(unsigned_encrypted_keys))}")
    return "\n".join(lines)


def jwe_policy_yaml(
    *issuers: TestIssuer,
    decryption: str | None,
    require_encryption: Collection[str] = (),
    unsigned_keys: Mapping[str, Sequence[str]] | None = None,
    routes: str | None = None,
) -> str:
    """`policy_yaml` with a `decryption:` section and per-issuer JWE options.

    `require_encryption` names issuers; `unsigned_keys` maps an issuer name to the kids
    of the symmetric keys it alone shares with us."""
    unsigned = unsigned_keys or {}
    blocks = [
        issuer_yaml(
            issuer,
            require_encryption=issuer.name in require_encryption,
            unsigned_encrypted_keys=unsigned.get(issuer.name, ()),
        )
        for issuer in issuers
    ]
    text = policy_yaml(extra_issuers="\n".join(blocks), routes=routes)
    return text + (decryption or "")


class _KeyKid:
    """The default of `kid=`: the kid of the key encrypted to."""


KEY_KID: Any = _KeyKid()


def encrypt(
    plaintext: bytes,
    key: Mapping[str, Any] | jwk.JWK,
    alg: str,
    enc: str,
    *,
    kid: str | None = KEY_KID,
    cty: str | None = None,
    extra_header: Mapping[str, Any] | None = None,
) -> str:
    """A compact JWE of `plaintext`, encrypted by jwcrypto to `key` (a JWK or its dict).

    Any alg/enc jwcrypto knows may be asked for, refused ones included: the server,
    not this helper, decides what it accepts."""
    recipient = key if isinstance(key, jwk.JWK) else jwk.JWK(**dict(key))
    header: dict[str, Any] = {"alg": alg, "enc": enc}
    if isinstance(kid, _KeyKid):
        key_kid = recipient.get("kid")
        if key_kid is not None:
            header["kid"] = key_kid
    elif kid is not None:
        header["kid"] = kid
    if cty is not None:
        header["cty"] = cty
    header.update(extra_header or {})
    token = jwe.JWE(plaintext, json.dumps(header), algs=[alg, enc])
    token.add_recipient(recipient)
    return str(token.serialize(compact=True))


def encrypt_nested(
    inner_jws: str,
    key_public_jwk: Mapping[str, Any] | jwk.JWK,
    alg: str,
    enc: str,
    *,
    kid: str | None = KEY_KID,
    cty: str | None = "JWT",
    extra_header: Mapping[str, Any] | None = None,
) -> str:
    """A nested JWT (RFC 7519 section 5.2): the compact JWS `inner_jws` encrypted."""
    return encrypt(
        inner_jws.encode("ascii"),
        key_public_jwk,
        alg,
        enc,
        kid=kid,
        cty=cty,
        extra_header=extra_header,
    )


def encrypt_claims(
    claims: Mapping[str, Any],
    key_public_jwk: Mapping[str, Any] | jwk.JWK,
    alg: str,
    enc: str,
    *,
    kid: str | None = KEY_KID,
    cty: str | None = None,
    extra_header: Mapping[str, Any] | None = None,
) -> str:
    """A JWE whose plaintext is the bare JSON claims: encrypted, but signed by nobody."""
    return encrypt(
        json.dumps(claims).encode(),
        key_public_jwk,
        alg,
        enc,
        kid=kid,
        cty=cty,
        extra_header=extra_header,
    )


# hand edits of the five compact segments: header, encrypted key, IV, ciphertext, tag

HEADER, ENCRYPTED_KEY, IV, CIPHERTEXT, TAG = range(5)


def b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(token: str, index: int) -> bytes:
    """One decoded segment of a compact JWE."""
    return b64url_decode(token.split(".")[index])


def with_segment(token: str, index: int, data: bytes) -> str:
    """`token` with segment `index` replaced by `data` (encoded)."""
    parts = token.split(".")
    parts[index] = b64url_encode(data)
    return ".".join(parts)


def with_header(token: str, raw_header: bytes) -> str:
    """`token` under another protected header (which also breaks the authenticated data)."""
    return with_segment(token, HEADER, raw_header)


def header_of(token: str) -> dict[str, Any]:
    value = json.loads(segment(token, HEADER))
    assert isinstance(value, dict)
    return value


def flip_last_bit(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


def json_serialization(token: str) -> str:
    """The flattened JSON serialization of a compact JWE (RFC 7516 section 7.2.2)."""
    protected, encrypted_key, iv, ciphertext, tag = token.split(".")
    return json.dumps(
        {
            "protected": protected,
            "encrypted_key": encrypted_key,
            "iv": iv,
            "ciphertext": ciphertext,
            "tag": tag,
        }
    )
