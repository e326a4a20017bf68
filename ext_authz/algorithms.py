"""Every JOSE algorithm the server supports, with what it needs: one table.

The policy schema, the key loaders (`keys/`) and the token code (`tokens/`) all read
these tables, and this module imports nothing of the project, so it can be read from
anywhere without an import cycle. Adding an algorithm means adding a row here (and
its name to the schema's `Literal`, which a test holds equal to these tables).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, TypeVar


@dataclass(frozen=True, slots=True)
class SignatureAlgorithm:
    name: str
    kty: str  # the key type that verifies it
    scheme: str  # RFC 7518 section 3: "pkcs1", "pss" or "ecdsa"; "eddsa" (RFC 8037)
    hash_bits: int = 0  # the SHA-2 hash of the scheme (0: EdDSA hashes internally)
    curve: str | None = None  # EC and OKP keys: the one curve it runs on


@dataclass(frozen=True, slots=True)
class KeyManagement:
    name: str
    kty: frozenset[str]  # key types that unwrap, agree or are the key
    wrap_bytes: int | None = None  # A*KW: the size of the symmetric key
    encrypted_key: bool = True  # False: `dir` and `ECDH-ES` carry no encrypted key
    direct: bool = False  # `dir`: the key is the content encryption key itself
    oaep_digest: str | None = None  # RSA-OAEP: the hash of OAEP and MGF1 ("sha1", "sha256")
    agreement: bool = False  # ECDH-ES: the key is agreed from the header's `epk`
    kek_bytes: int | None = None  # ECDH-ES+A*KW: the agreed key wraps the CEK, of this size


@dataclass(frozen=True, slots=True)
class ContentEncryption:
    name: str
    cek_bytes: int  # the content encryption key (and so a `dir` key)
    iv_bytes: int
    tag_bytes: int


_Row = TypeVar("_Row", SignatureAlgorithm, KeyManagement, ContentEncryption)


def _by_name(*rows: _Row) -> MappingProxyType[str, _Row]:
    return MappingProxyType({row.name: row for row in rows})


_RSA = frozenset({"RSA"})
_ECDH = frozenset({"EC", "OKP"})
_OCT = frozenset({"oct"})

SIGNATURES: Final = _by_name(
    SignatureAlgorithm("RS256", "RSA", "pkcs1", 256),
    SignatureAlgorithm("RS384", "RSA", "pkcs1", 384),
    SignatureAlgorithm("RS512", "RSA", "pkcs1", 512),
    SignatureAlgorithm("PS256", "RSA", "pss", 256),
    SignatureAlgorithm("PS384", "RSA", "pss", 384),
    SignatureAlgorithm("PS512", "RSA", "pss", 512),
    SignatureAlgorithm("ES256", "EC", "ecdsa", 256, "P-256"),
    SignatureAlgorithm("ES384", "EC", "ecdsa", 384, "P-384"),
    SignatureAlgorithm("ES512", "EC", "ecdsa", 512, "P-521"),
    SignatureAlgorithm("EdDSA", "OKP", "eddsa", curve="Ed25519"),
)
KEY_MANAGEMENT: Final = _by_name(
    KeyManagement("RSA-OAEP", _RSA, oaep_digest="sha1"),
    KeyManagement("RSA-OAEP-256", _RSA, oaep_digest="sha256"),
    KeyManagement("ECDH-ES", _ECDH, encrypted_key=False, agreement=True),
    KeyManagement("ECDH-ES+A128KW", _ECDH, agreement=True, kek_bytes=16),
    KeyManagement("ECDH-ES+A256KW", _ECDH, agreement=True, kek_bytes=32),
    KeyManagement("A128KW", _OCT, wrap_bytes=16),
    KeyManagement("A256KW", _OCT, wrap_bytes=32),
    KeyManagement("dir", _OCT, encrypted_key=False, direct=True),
)
CONTENT_ENCRYPTION: Final = _by_name(
    ContentEncryption("A128GCM", cek_bytes=16, iv_bytes=12, tag_bytes=16),
    ContentEncryption("A256GCM", cek_bytes=32, iv_bytes=12, tag_bytes=16),
    ContentEncryption("A128CBC-HS256", cek_bytes=32, iv_bytes=16, tag_bytes=16),
    ContentEncryption("A256CBC-HS512", cek_bytes=64, iv_bytes=16, tag_bytes=32),
)

# The size of one coordinate of a point on each NIST curve (RFC 7518 section 6.2.1.2):
# of `x` and `y` in an EC key, and of each of `r` and `s` in an ECDSA signature.
COORDINATE_BYTES: Final = MappingProxyType({"P-256": 32, "P-384": 48, "P-521": 66})

# The curves ECDH-ES key agreement runs on (our decryption keys), by key type.
ECDH_CURVES: Final = MappingProxyType(
    {"EC": frozenset({"P-256", "P-384", "P-521"}), "OKP": frozenset({"X25519"})}
)

SIGNATURE_ALGORITHMS: Final[tuple[str, ...]] = tuple(SIGNATURES)
KEY_MANAGEMENT_ALGORITHMS: Final[tuple[str, ...]] = tuple(KEY_MANAGEMENT)
CONTENT_ENCRYPTIONS: Final[tuple[str, ...]] = tuple(CONTENT_ENCRYPTION)
