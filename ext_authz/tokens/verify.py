"""Pick the verification key for a token and check its signature.

Each signature is one call into `cryptography` with the issuer's key, imported once
when the key set was loaded; this module only maps a JOSE `alg` onto that call
(RFC 7518 section 3: the padding and hash, and for ECDSA the fixed-size `r || s`
onto the DER form `cryptography` reads). A tested table of our own rather than the
JOSE library's algorithm objects, because these run on every new token and the
library's per-call key checks cost about a third of an RS256 verify. Nothing from
the token header is trusted to find a key except `kid`, and only among the issuer's
configured keys: `jwk`, `jku`, `x5u` and `x5c` are never read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ext_authz.algorithms import COORDINATE_BYTES, SIGNATURES, SignatureAlgorithm
from ext_authz.errors import DenialReason, Denied
from ext_authz.keys.jwks import KeySet, VerificationKey
from ext_authz.tokens.format import SignedToken

# (public key, signing input, signature); raises on a bad signature
_Verify = Callable[[Any, bytes, bytes], None]


_HASHES: Final[dict[int, type[hashes.HashAlgorithm]]] = {
    256: hashes.SHA256,
    384: hashes.SHA384,
    512: hashes.SHA512,
}


def _pkcs1(digest: hashes.HashAlgorithm) -> _Verify:
    pad = padding.PKCS1v15()

    def verify(public: Any, data: bytes, signature: bytes) -> None:
        public.verify(signature, data, pad, digest)

    return verify


def _pss(digest: hashes.HashAlgorithm) -> _Verify:
    # RFC 7518 section 3.5: MGF1 with the same hash, a salt as long as the hash
    pad = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)

    def verify(public: Any, data: bytes, signature: bytes) -> None:
        public.verify(signature, data, pad, digest)

    return verify


def _ecdsa(digest: hashes.HashAlgorithm, coordinate_bytes: int) -> _Verify:
    scheme = ec.ECDSA(digest)

    def verify(public: Any, data: bytes, signature: bytes) -> None:
        # RFC 7518 section 3.4: exactly two big-endian integers of the curve's size
        if len(signature) != 2 * coordinate_bytes:
            raise InvalidSignature
        r = int.from_bytes(signature[:coordinate_bytes], "big")
        s = int.from_bytes(signature[coordinate_bytes:], "big")
        public.verify(encode_dss_signature(r, s), data, scheme)

    return verify


def _eddsa(public: Any, data: bytes, signature: bytes) -> None:
    public.verify(signature, data)


def _verifier(row: SignatureAlgorithm) -> _Verify:
    if row.scheme == "eddsa":
        return _eddsa
    digest = _HASHES[row.hash_bits]()
    if row.scheme == "pkcs1":
        return _pkcs1(digest)
    if row.scheme == "pss":
        return _pss(digest)
    if row.scheme == "ecdsa":
        assert row.curve is not None
        return _ecdsa(digest, COORDINATE_BYTES[row.curve])
    raise ValueError(f"no verifier for scheme {row.scheme}")


# Only asymmetric algorithms are in the table: `none` and HS* never verify anything.
# `EdDSA` (deprecated by RFC 9864 in favour of `Ed25519`, which issuers do not send
# yet) runs with Ed25519 keys only (see `ext_authz.algorithms`).
_VERIFIERS: Final[dict[str, _Verify]] = {name: _verifier(row) for name, row in SIGNATURES.items()}


def verify_jws(
    token: SignedToken,
    algorithms: frozenset[str],
    select: Callable[[SignedToken], VerificationKey],
) -> VerificationKey:
    """The signature check of the pipeline: the issuer allows the token's `alg`, a key
    is chosen (`select`: `select_key` over a key set, or the server's refetching
    lookup) and the signature verifies with it. Returns the key; raises `Denied`."""
    if token.alg not in algorithms:
        raise Denied(DenialReason.ALGORITHM_NOT_ALLOWED, f"alg {token.alg}")
    key = select(token)
    verify_signature(token, key)
    return key


def select_key(keys: KeySet, token: SignedToken) -> VerificationKey:
    """The key named by `kid`, or the only key that fits `alg` when there is no `kid`."""
    alg = token.alg
    kid = token.kid
    if kid is not None:
        key = keys.by_kid.get(kid)
        if key is None:
            raise Denied(DenialReason.KEY_UNKNOWN, "no key with this kid")
        if not key.fits(alg):
            raise Denied(DenialReason.KEY_MISMATCH, f"key does not fit alg {alg}")
        return key
    candidates = [k for k in keys.verification_keys if k.fits(alg)]
    if len(candidates) != 1:
        raise Denied(DenialReason.KEY_UNKNOWN, f"no kid, and {len(candidates)} keys fit alg {alg}")
    return candidates[0]


def verify_signature(token: SignedToken, key: VerificationKey) -> None:
    verify = _VERIFIERS.get(token.alg)
    if verify is None or not key.fits(token.alg):
        raise Denied(DenialReason.KEY_MISMATCH, f"key does not fit alg {token.alg}")
    try:
        verify(key.public, token.signing_input, token.signature)
    except (InvalidSignature, ValueError, TypeError):
        raise Denied(DenialReason.SIGNATURE_INVALID) from None
