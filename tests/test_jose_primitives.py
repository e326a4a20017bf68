"""The two pieces of JOSE reading on every new token that are ours rather than the
library's, held to the library's answers: the strict base64url reader, and the table
that maps a signature `alg` onto one `cryptography` call. Each is checked against
joserfc on generated input, so a divergence in either direction (ours accepting what
the library refuses, or refusing what it accepts) fails here."""

from __future__ import annotations

import binascii
import warnings
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from hypothesis import example, given, settings
from hypothesis import strategies as st
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry
from joserfc.util import urlsafe_b64decode

from ext_authz import base64url
from ext_authz.algorithms import SIGNATURES
from ext_authz.errors import DenialReason, Denied
from ext_authz.keys.jwks import KeySet, parse_jwks
from ext_authz.tokens.format import SignedToken
from ext_authz.tokens.verify import verify_signature

# base64url ---------------------------------------------------------------------------

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
texts = st.one_of(
    st.text(alphabet=_ALPHABET, max_size=40),
    st.text(alphabet=_ALPHABET + "+/= \n\t.", max_size=40),
    st.text(max_size=12),
)


def _library(text: str) -> bytes | None:
    try:
        return urlsafe_b64decode(text.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None


def _ours(text: str) -> bytes | None:
    try:
        return base64url.decode(text)
    except ValueError:
        return None


@given(texts)
@example("")
@example("QQ")
@example("QR")  # stray bits in the last character
@example("QQ==")
@example("QQ=")
@example("Q")
@example("QUJD")
@example("QUJ")
@example("QUI")  # stray bits
@example("a+b/")
@example("QU JD")
@example("QUJD\n")
@example("Ωmega")
def test_base64url_agrees_with_the_library_decoder(text: str) -> None:
    assert _ours(text) == _library(text)


@given(st.binary(max_size=200))
def test_base64url_reads_every_canonical_encoding(data: bytes) -> None:
    encoded = binascii.b2a_base64(data, newline=False).decode()
    text = encoded.rstrip("=").replace("+", "-").replace("/", "_")
    assert base64url.decode(text) == data


# signatures --------------------------------------------------------------------------

_REGISTRY = JWSRegistry(algorithms=list(SIGNATURES))
_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_CURVE = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}
_EC = {name: ec.generate_private_key(curve) for name, curve in _CURVE.items()}
_ED = ed25519.Ed25519PrivateKey.generate()


def _private(alg: str) -> Any:
    row = SIGNATURES[alg]
    if row.kty == "RSA":
        return RSAKey.import_key(_RSA)
    if row.kty == "EC":
        assert row.curve is not None
        return ECKey.import_key(_EC[row.curve])
    return OKPKey.import_key(_ED)


def _model(alg: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)  # EdDSA, deprecated by RFC 9864
        return _REGISTRY.get_alg(alg)


def _key_set(alg: str) -> KeySet:
    jwk = _private(alg).as_dict(private=False)
    parsed = parse_jwks({"keys": [{**jwk, "kid": "k", "alg": alg}]})
    assert not parsed.skipped
    return parsed.key_set


_KEYS = {alg: _key_set(alg) for alg in SIGNATURES}
_SIGNED = {alg: _model(alg).sign(b"header.payload", _private(alg)) for alg in SIGNATURES}


def _verdict_ours(alg: str, data: bytes, signature: bytes) -> bool:
    token = SignedToken({"alg": alg, "kid": "k"}, {}, data, signature)
    reason = None
    try:
        verify_signature(token, _KEYS[alg].verification_keys[0])
    except Denied as denied:
        reason = denied.reason
    assert reason in (None, DenialReason.SIGNATURE_INVALID)
    return reason is None


def _verdict_library(alg: str, data: bytes, signature: bytes) -> bool:
    try:
        return bool(_model(alg).verify(data, signature, _private(alg)))
    except ValueError:
        return False


@pytest.mark.parametrize("alg", list(SIGNATURES))
def test_a_library_signature_verifies_with_ours(alg: str) -> None:
    message = b"header.payload"
    signature = _model(alg).sign(message, _private(alg))
    assert _verdict_ours(alg, message, signature)
    assert not _verdict_ours(alg, message + b"x", signature)


@pytest.mark.parametrize("alg", list(SIGNATURES))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_signature_verdicts_agree_with_the_library(alg: str, data: st.DataObject) -> None:
    signature = _SIGNED[alg]
    change = data.draw(st.sampled_from(["flip", "truncate", "extend", "random", "message"]))
    message = b"header.payload"
    if change == "flip" and signature:
        index = data.draw(st.integers(0, len(signature) - 1))
        bit = data.draw(st.integers(0, 7))
        flipped = bytes([signature[index] ^ (1 << bit)])
        signature = signature[:index] + flipped + signature[index + 1 :]
    elif change == "truncate":
        signature = signature[: data.draw(st.integers(0, len(signature) - 1))]
    elif change == "extend":
        signature = signature + data.draw(st.binary(min_size=1, max_size=4))
    elif change == "random":
        signature = data.draw(st.binary(max_size=2 * len(signature)))
    else:
        message = data.draw(st.binary(max_size=40))
    assert _verdict_ours(alg, message, signature) == _verdict_library(alg, message, signature)


def test_an_ecdsa_signature_with_zero_padded_integers_of_another_width_is_refused() -> None:
    """ES512 carries 66-byte integers: a 64-byte pair (P-256's width) never verifies,
    whatever its value, as the library also says."""
    assert not _verdict_ours("ES512", b"header.payload", _SIGNED["ES256"])
    assert not _verdict_library("ES512", b"header.payload", _SIGNED["ES256"])


@pytest.mark.parametrize("alg", [alg for alg, row in SIGNATURES.items() if row.scheme == "pss"])
@pytest.mark.parametrize("salt", [0, 20, "max"])
def test_a_pss_signature_with_another_salt_length_is_refused(alg: str, salt: int | str) -> None:
    """RFC 7518 section 3.5: the salt is as long as the hash, nothing else verifies."""
    digests: dict[int, hashes.HashAlgorithm] = {
        256: hashes.SHA256(),
        384: hashes.SHA384(),
        512: hashes.SHA512(),
    }
    digest = digests[SIGNATURES[alg].hash_bits]
    pad = padding.PSS(
        mgf=padding.MGF1(digest),
        salt_length=padding.PSS.MAX_LENGTH if salt == "max" else int(salt),
    )
    signature = _RSA.sign(b"header.payload", pad, digest)
    assert not _verdict_ours(alg, b"header.payload", signature)
    assert not _verdict_library(alg, b"header.payload", signature)
