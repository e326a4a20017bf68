"""The content encryption key of a JWE, recovered with one of our decryption keys
(RFC 7518 section 4): each step is one call into `cryptography`, never our own
primitive.

- `RSA-OAEP`, `RSA-OAEP-256`: RSAES-OAEP decryption (SHA-1 / SHA-256, MGF1 alike);
- `A128KW`, `A256KW`: AES key unwrap (RFC 3394);
- `ECDH-ES`: the header's ephemeral key (`epk`) imported and checked by `cryptography`
  (a point off the curve is refused there), ECDH, then the Concat KDF of section 4.6.2;
  `ECDH-ES+A128KW` / `+A256KW` unwrap the CEK with the derived key;
- `dir`: the key is the CEK.

The header's structure (`epk` an object without a private part, its coordinates and
`apu`/`apv` base64url) is checked before any key is used (`jwe_header.py`). What depends on the
key (the curve, the coordinates' size, the point, the unwrap, the padding) raises
`KeyMismatch`: this key does not decrypt the token, another one may. Which step
failed is never said.
"""

from __future__ import annotations

from collections.abc import Mapping

from cryptography.exceptions import InvalidKey, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, x25519
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

from ext_authz.algorithms import CONTENT_ENCRYPTION, COORDINATE_BYTES, KEY_MANAGEMENT
from ext_authz.keys.decryption_keys import DecryptionKey
from ext_authz.tokens.jwe_header import Agreement

_DIGESTS: Mapping[str, hashes.HashAlgorithm] = {
    "sha1": hashes.SHA1(),  # noqa: S303  RFC 7518 section 4.3: RSA-OAEP is OAEP with SHA-1
    "sha256": hashes.SHA256(),
}
_OAEP = {
    name: padding.OAEP(
        mgf=padding.MGF1(_DIGESTS[row.oaep_digest]), algorithm=_DIGESTS[row.oaep_digest], label=None
    )
    for name, row in KEY_MANAGEMENT.items()
    if row.oaep_digest is not None
}
_EC_CURVES: Mapping[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
}
X25519_BYTES = 32

# what `cryptography` raises when a key does not fit: a wrong unwrap, an OAEP padding
# error, a point off the curve, a low-order X25519 point, a wrong length
CRYPTO_ERRORS = (ValueError, InvalidTag, InvalidUnwrap, InvalidKey)


class KeyMismatch(Exception):  # a verdict on one key, not an error
    """This key does not decrypt the token; the message says nothing more."""


def content_key(
    key: DecryptionKey, alg: str, enc: str, encrypted_key: bytes, agreement: Agreement | None
) -> bytes:
    """The CEK of the token, of exactly the size `enc` needs; `KeyMismatch` if this
    key does not recover it."""
    size = CONTENT_ENCRYPTION[enc].cek_bytes
    try:
        cek = _recover(key, alg, enc, size, encrypted_key, agreement)
    except CRYPTO_ERRORS:
        raise KeyMismatch from None
    if len(cek) != size:
        raise KeyMismatch
    return cek


def _recover(
    key: DecryptionKey,
    alg: str,
    enc: str,
    size: int,
    encrypted_key: bytes,
    agreement: Agreement | None,
) -> bytes:
    row = KEY_MANAGEMENT[alg]
    oaep = _OAEP.get(alg)
    if oaep is not None:
        if not isinstance(key.private, rsa.RSAPrivateKey):
            raise KeyMismatch
        return key.private.decrypt(encrypted_key, oaep)
    if row.direct:
        return key.secret
    if row.agreement:
        if agreement is None:
            raise KeyMismatch
        shared = _agree(key, agreement)
        if row.kek_bytes is None:  # direct key agreement: the derived key is the CEK
            return _concat_kdf(shared, enc, size, agreement)
        kek = _concat_kdf(shared, alg, row.kek_bytes, agreement)
        return aes_key_unwrap(kek, encrypted_key)
    if row.wrap_bytes is None or len(key.secret) != row.wrap_bytes:
        raise KeyMismatch
    return aes_key_unwrap(key.secret, encrypted_key)


def _agree(key: DecryptionKey, agreement: Agreement) -> bytes:
    """Z, the ECDH shared secret of our key and the sender's ephemeral public key."""
    if agreement.kty != key.kty or agreement.crv != key.curve:
        raise KeyMismatch
    private = key.private
    if agreement.x is None:
        raise KeyMismatch
    if isinstance(private, ec.EllipticCurvePrivateKey):
        curve = _EC_CURVES.get(agreement.crv)
        coordinate = COORDINATE_BYTES.get(agreement.crv)
        y = agreement.y
        if curve is None or y is None or len(agreement.x) != coordinate or len(y) != coordinate:
            raise KeyMismatch
        # refuses a point that is not on the curve (ValueError)
        public = ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + agreement.x + y)
        return private.exchange(ec.ECDH(), public)
    if isinstance(private, x25519.X25519PrivateKey):
        if agreement.y is not None or len(agreement.x) != X25519_BYTES:
            raise KeyMismatch
        # a low-order point gives an all-zero secret, which `exchange` refuses (ValueError)
        return private.exchange(x25519.X25519PublicKey.from_public_bytes(agreement.x))
    raise KeyMismatch


def _concat_kdf(shared: bytes, algorithm_id: str, size: int, agreement: Agreement) -> bytes:
    """RFC 7518 section 4.6.2: SHA-256 Concat KDF (NIST SP 800-56A) over Z, with the
    OtherInfo AlgorithmID || PartyUInfo || PartyVInfo || SuppPubInfo."""
    other_info = b"".join(
        (
            _length_prefixed(algorithm_id.encode("ascii")),
            _length_prefixed(agreement.apu),
            _length_prefixed(agreement.apv),
            (size * 8).to_bytes(4, "big"),
        )
    )
    return ConcatKDFHash(hashes.SHA256(), size, other_info).derive(shared)


def _length_prefixed(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data
