"""Our JWE framing (`tokens/decrypt.py`, `jwe_header.py`, `jwe_keys.py`) against two
other implementations, and against tokens built by hand to break one step each.

- Differential: every supported (alg, enc) pair, on every curve, with `apu`/`apv`,
  with and without `kid`, with replicated claims, `cty` and `typ`, and plaintexts of
  awkward lengths: tokens minted by jwcrypto decrypt to exactly their plaintext, and
  joserfc's own `jwe.decrypt_compact` says the same.
- Property: any edit of a valid token (a character, a byte of a segment, a segment cut,
  grown or taken from another token) is refused with `Denied` or gives back the very
  same plaintext; joserfc agrees on accept/refuse.
- Targeted: tokens sealed here (`seal`) whose only fault is the one named: the `epk`
  off its curve, on another curve, with a private part, an X25519 point of low order,
  a content key of the wrong length, a key wrapped for A128KW read as A256KW, bad
  CBC padding under a valid tag. Where a lax implementation would decrypt the token,
  the test seals it so that it would.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from hypothesis import given
from hypothesis import strategies as st
from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwe import JWERegistry
from joserfc.registry import HeaderParameter
from jwcrypto import jwk

from ext_authz.algorithms import (
    CONTENT_ENCRYPTION,
    CONTENT_ENCRYPTIONS,
    KEY_MANAGEMENT,
    KEY_MANAGEMENT_ALGORITHMS,
)
from ext_authz.errors import DenialReason, Denied
from ext_authz.keys.decryption_keys import DecryptionKey, parse_decryption_jwks
from ext_authz.tokens.decrypt import Decrypted, DecryptionConfig, decrypt_token
from ext_authz.tokens.jwe_header import REPLICATED_CLAIMS, Agreement
from ext_authz.tokens.jwe_keys import KeyMismatch, content_key
from tests.support.jwe_tokens import (
    DIR256,
    EC_P256,
    EC_P384,
    KW128,
    KW256,
    RSA_ENC,
    X25519_ENC,
    DecryptionTestKey,
    b64url_decode,
    b64url_encode,
    decryption_jwks,
    dir_key,
    encrypt,
)
from tests.support.tokens import CORP, NOW, good_claims, mint

R = DenialReason
EC_P521 = DecryptionTestKey("p521", "enc-p521", jwk.JWK.generate(kty="EC", crv="P-521"))
DIR128 = dir_key("A128GCM")
DIR512 = dir_key("A256CBC-HS512")
KEYS = (RSA_ENC, EC_P256, EC_P384, EC_P521, X25519_ENC, KW128, KW256, DIR128, DIR256, DIR512)
AGREEMENT_KEYS = (EC_P256, EC_P384, EC_P521, X25519_ENC)
ECDH = tuple(alg for alg in KEY_MANAGEMENT_ALGORITHMS if alg.startswith("ECDH-ES"))

CONFIG = DecryptionConfig.build(
    parse_decryption_jwks(decryption_jwks(*KEYS)),
    frozenset(KEY_MANAGEMENT_ALGORITHMS),
    frozenset(CONTENT_ENCRYPTIONS),
)
OURS: Mapping[str, DecryptionKey] = CONFIG.key_set.by_kid
# joserfc as the server used it before: every algorithm, replicated claims allowed
JOSERFC = JWERegistry(
    header_registry={name: HeaderParameter(name, lambda value: None) for name in REPLICATED_CLAIMS},
    algorithms=[*KEY_MANAGEMENT_ALGORITHMS, *CONTENT_ENCRYPTIONS],
)


def ours(token: str) -> bytes | DenialReason:
    """Our plaintext, or the reason of our refusal; any other exception fails the test."""
    try:
        return decrypt_token(token, CONFIG).plaintext
    except Denied as denied:
        return denied.reason


def joserfc_plaintext(token: str, key: DecryptionTestKey) -> bytes | None:
    try:
        plaintext = jwe.decrypt_compact(token, OURS[key.kid].key, registry=JOSERFC).plaintext
    except (JoseError, ValueError, TypeError, KeyError):
        return None
    return plaintext if isinstance(plaintext, bytes) else None


def keys_for(alg: str, enc: str) -> tuple[DecryptionTestKey, ...]:
    if alg.startswith("RSA"):
        return (RSA_ENC,)
    if alg in ECDH:
        return AGREEMENT_KEYS
    if alg == "dir":
        return (dir_key(enc),)
    return (KW128,) if alg == "A128KW" else (KW256,)


# differential: jwcrypto mints, we and joserfc decrypt ------------------------------


def _variants(alg: str) -> dict[str, tuple[bytes, dict[str, Any]]]:
    inner = mint(CORP).encode("ascii")
    claims = good_claims(CORP)
    replicated = {name: claims[name] for name in ("iss", "sub", "aud", "exp", "iat")}
    variants: dict[str, tuple[bytes, dict[str, Any]]] = {
        "nested": (inner, {"cty": "JWT"}),
        "no_kid": (inner, {"kid": None}),
        "provider": (inner, {"cty": "at+jwt", "extra_header": replicated | {"typ": "JWT"}}),
        "empty": (b"", {}),
        "one_byte": (b"x", {}),
        "one_block": (bytes(range(16)), {}),  # CBC pads a whole block
        "two_blocks": (os.urandom(32), {"cty": "application/octet-stream"}),
    }
    if alg in ECDH:
        parties = {"apu": b64url_encode(b"Alice"), "apv": b64url_encode(b"Bob")}
        variants["apu_apv"] = (inner, {"extra_header": parties})
        variants["apu_only_long"] = (inner, {"extra_header": {"apu": b64url_encode(bytes(300))}})
        variants["apu_apv_empty"] = (inner, {"extra_header": {"apu": "", "apv": ""}})
    return variants


@dataclass(frozen=True)
class Minted:
    id: str
    token: str
    plaintext: bytes
    key: DecryptionTestKey
    alg: str = ""
    enc: str = ""
    variant: str = ""


def _minted() -> list[Minted]:
    cases = []
    for alg in KEY_MANAGEMENT_ALGORITHMS:
        for enc in CONTENT_ENCRYPTIONS:
            for key in keys_for(alg, enc):
                for name, (plaintext, options) in _variants(alg).items():
                    token = encrypt(plaintext, key.public_jwk(), alg, enc, **options)
                    case_id = f"{alg}-{enc}-{key.name}-{name}"
                    cases.append(Minted(case_id, token, plaintext, key, alg, enc, name))
    return cases


MINTED = _minted()


def test_the_differential_covers_every_pair_and_curve() -> None:
    pairs = {(m.alg, m.enc) for m in MINTED}
    assert pairs == {(alg, enc) for alg in KEY_MANAGEMENT for enc in CONTENT_ENCRYPTION}
    assert {m.key.name for m in MINTED} == {k.name for k in KEYS}
    for alg in ECDH:  # every curve, with and without party info
        for key in AGREEMENT_KEYS:
            variants = {m.variant for m in MINTED if (m.alg, m.key) == (alg, key)}
            assert {"apu_apv", "apu_apv_empty", "no_kid", "provider"} <= variants


@pytest.mark.parametrize("case", MINTED, ids=[m.id for m in MINTED])
def test_tokens_minted_by_jwcrypto_decrypt_to_their_plaintext(case: Minted) -> None:
    assert ours(case.token) == case.plaintext
    assert joserfc_plaintext(case.token, case.key) == case.plaintext


def test_apu_and_apv_enter_the_key_derivation() -> None:
    """The same ephemeral key and ciphertext under other party info is another key: a
    derivation that ignored `apu`/`apv` would decrypt this."""
    token = encrypt(b"claims", EC_P256.public_jwk(), "ECDH-ES", "A128GCM")
    header = json.loads(b64url_decode(token.split(".")[0]))
    cek = ecdh_cek(EC_P256, header["epk"], "A128GCM", 16, b"", b"")  # no apu/apv
    moved = seal(header | {"apu": b64url_encode(b"Alice")}, b"claims", cek)
    assert ours(moved) is R.DECRYPTION_FAILED
    same = seal(header, b"claims", cek)
    assert ours(same) == b"claims"


# property: any edit of a valid token is refused, or changes nothing -----------------


def _sample(name: str, key: DecryptionTestKey, alg: str, enc: str) -> Minted:
    plaintext = f"{name} plaintext".encode()
    return Minted(name, encrypt(plaintext, key.public_jwk(), alg, enc), plaintext, key)


SAMPLES = [
    _sample("rsa", RSA_ENC, "RSA-OAEP-256", "A256GCM"),
    _sample("p256", EC_P256, "ECDH-ES", "A128CBC-HS256"),
    _sample("x25519", X25519_ENC, "ECDH-ES+A256KW", "A256GCM"),
    _sample("p521", EC_P521, "ECDH-ES+A128KW", "A128GCM"),
    _sample("kw128", KW128, "A128KW", "A256CBC-HS512"),
    _sample("dir", DIR128, "dir", "A128GCM"),
]
CHARACTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ é\x00"


@st.composite
def edited_tokens(draw: st.DrawFn) -> tuple[Minted, str]:
    sample = draw(st.sampled_from(SAMPLES))
    token = sample.token
    parts = token.split(".")
    how = draw(st.sampled_from(["char", "flip", "cut", "grow", "swap", "truncate", "append"]))
    if how == "char":
        at = draw(st.integers(0, len(token) - 1))
        token = token[:at] + draw(st.sampled_from(CHARACTERS)) + token[at + 1 :]
    elif how == "truncate":
        token = token[: draw(st.integers(0, len(token) - 1))]
    elif how == "append":
        token += draw(st.text(CHARACTERS, min_size=1, max_size=8))
    else:
        index = draw(st.integers(0, 4))
        data = b64url_decode(parts[index])
        if how == "flip" and data:
            at = draw(st.integers(0, len(data) - 1))
            mask = draw(st.integers(1, 255))
            data = data[:at] + bytes([data[at] ^ mask]) + data[at + 1 :]
        elif how == "cut" and data:
            data = data[: draw(st.integers(0, len(data) - 1))]
        elif how == "grow":
            data += draw(st.binary(min_size=1, max_size=24))
        elif how == "swap":
            other = draw(st.sampled_from([s for s in SAMPLES if s is not sample]))
            data = b64url_decode(other.token.split(".")[index])
        parts[index] = b64url_encode(data)
        token = ".".join(parts)
    return sample, token


@given(edited_tokens())
def test_an_edited_token_is_refused_or_unchanged(edit: tuple[Minted, str]) -> None:
    sample, token = edit
    original = sample.plaintext
    result = ours(token)
    if isinstance(result, DenialReason):
        assert joserfc_plaintext(token, sample.key) is None, (result, token)
    else:
        assert result == original
        assert token == sample.token
        assert joserfc_plaintext(token, sample.key) == original


def test_the_samples_decrypt() -> None:
    for sample in SAMPLES:
        assert ours(sample.token) == sample.plaintext
        assert joserfc_plaintext(sample.token, sample.key) == sample.plaintext


# tokens sealed by hand, each with one fault ----------------------------------------


def seal(
    header: Mapping[str, Any], plaintext: bytes, cek: bytes, encrypted_key: bytes = b""
) -> str:
    """A compact JWE under `header` whose content is encrypted with `cek` exactly as
    RFC 7518 section 5 says, whatever the header claims about the key."""
    protected = b64url_encode(json.dumps(dict(header)).encode())
    enc = str(header["enc"])
    iv = os.urandom(CONTENT_ENCRYPTION[enc].iv_bytes)
    model = JWERegistry(algorithms=[enc]).get_enc(enc)
    ciphertext, tag = model.encrypt(plaintext, cek, iv, protected.encode("ascii"))
    segments = (encrypted_key, iv, ciphertext, tag)
    return ".".join([protected, *(b64url_encode(s) for s in segments)])


def _kdf(z: bytes, algorithm_id: str, size: int, apu: bytes, apv: bytes) -> bytes:
    def field(data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + data

    other = field(algorithm_id.encode()) + field(apu) + field(apv) + (size * 8).to_bytes(4, "big")
    return ConcatKDFHash(hashes.SHA256(), size, other).derive(z)


def ecdh_cek(
    key: DecryptionTestKey,
    epk: Mapping[str, Any],
    algorithm_id: str,
    size: int,
    apu: bytes,
    apv: bytes,
) -> bytes:
    """What the recipient derives from `epk` (a test-side computation with our key)."""
    private = OURS[key.kid].private
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    point = ec.EllipticCurvePublicNumbers(
        int.from_bytes(b64url_decode(epk["x"]), "big"),
        int.from_bytes(b64url_decode(epk["y"]), "big"),
        private.curve,
    ).public_key()
    return _kdf(private.exchange(ec.ECDH(), point), algorithm_id, size, apu, apv)


def _p256_epk(**change: Any) -> dict[str, Any]:
    numbers = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    epk = {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url_encode(numbers.x.to_bytes(32, "big")),
        "y": b64url_encode(numbers.y.to_bytes(32, "big")),
    }
    return epk | change


def _off_curve(epk: dict[str, Any]) -> dict[str, Any]:
    y = int.from_bytes(b64url_decode(epk["y"]), "big")
    return epk | {"y": b64url_encode(((y + 1) % 2**256).to_bytes(32, "big"))}


def _ecdh_header(key: DecryptionTestKey, epk: Mapping[str, Any], **more: Any) -> dict[str, Any]:
    return {"alg": "ECDH-ES", "enc": "A128GCM", "kid": key.kid, "epk": dict(epk), **more}


def test_an_epk_off_the_curve_is_a_decryption_failure() -> None:
    epk = _off_curve(_p256_epk())
    token = seal(_ecdh_header(EC_P256, epk), b"claims", os.urandom(16))
    assert ours(token) is R.DECRYPTION_FAILED
    agreement = Agreement("EC", "P-256", b64url_decode(epk["x"]), b64url_decode(epk["y"]), b"", b"")
    with pytest.raises(KeyMismatch):
        content_key(OURS[EC_P256.kid], "ECDH-ES", "A128GCM", b"", agreement)


def test_an_epk_on_another_curve_than_our_key_is_a_decryption_failure() -> None:
    """A valid P-256 point sent to our P-384 key, sealed with the CEK that P-256 key
    agreement gives: only the curve check stands in the way."""
    epk = _p256_epk()
    cek = ecdh_cek(EC_P256, epk, "A128GCM", 16, b"", b"")
    assert ours(seal(_ecdh_header(EC_P256, epk), b"claims", cek)) == b"claims"
    assert ours(seal(_ecdh_header(EC_P384, epk), b"claims", cek)) is R.DECRYPTION_FAILED
    assert (
        ours(seal(_ecdh_header(EC_P384, epk | {"crv": "P-384"}), b"c", cek)) is R.DECRYPTION_FAILED
    )
    # the coordinates of another curve's size under our curve's name
    wide = epk | {"x": b64url_encode(bytes(16) + b64url_decode(epk["x"]))}
    assert ours(seal(_ecdh_header(EC_P256, wide), b"c", cek)) is R.DECRYPTION_FAILED


def test_an_epk_with_a_private_part_is_refused_before_any_key() -> None:
    epk = _p256_epk()
    cek = ecdh_cek(EC_P256, epk, "A128GCM", 16, b"", b"")
    token = seal(_ecdh_header(EC_P256, epk | {"d": b64url_encode(bytes(32))}), b"claims", cek)
    with pytest.raises(Denied) as caught:
        decrypt_token(token, CONFIG)
    assert caught.value.reason is R.TOKEN_HEADER_INVALID
    assert "'epk'" in caught.value.detail


@pytest.mark.parametrize(
    "point",
    [bytes(32), (1).to_bytes(32, "little"), (2**255 - 19).to_bytes(32, "little")],
    ids=["zero", "one", "p"],
)
def test_an_x25519_point_of_low_order_is_a_decryption_failure(point: bytes) -> None:
    """The shared secret of a low-order point is all zeros, known to anyone: sealed
    with the CEK derived from that zero secret, the token must still be refused."""
    cek = _kdf(bytes(32), "A128GCM", 16, b"", b"")
    epk = {"kty": "OKP", "crv": "X25519", "x": b64url_encode(point)}
    token = seal(_ecdh_header(X25519_ENC, epk), b"claims", cek)
    assert ours(token) is R.DECRYPTION_FAILED


def test_an_x25519_epk_of_the_wrong_size_is_a_decryption_failure() -> None:
    for size in (31, 33):
        epk = {"kty": "OKP", "crv": "X25519", "x": b64url_encode(os.urandom(size))}
        token = seal(_ecdh_header(X25519_ENC, epk), b"c", os.urandom(16))
        assert ours(token) is R.DECRYPTION_FAILED
    # an X25519 point under an EC key's kid, and an EC point under the X25519 key's
    x25519_epk = {"kty": "OKP", "crv": "X25519", "x": b64url_encode(os.urandom(32))}
    assert (
        ours(seal(_ecdh_header(EC_P256, x25519_epk), b"c", os.urandom(16))) is R.DECRYPTION_FAILED
    )
    assert (
        ours(seal(_ecdh_header(X25519_ENC, _p256_epk()), b"c", os.urandom(16)))
        is R.DECRYPTION_FAILED
    )


EPK_OF_NO_KEY: dict[str, dict[str, Any]] = {
    "kty_rsa": {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
    "kty_oct": {"kty": "oct", "k": b64url_encode(bytes(32))},
    "kty_a_number": _p256_epk(kty=2),
    "p256_point_named_okp": _p256_epk(kty="OKP"),
    "no_crv": {k: v for k, v in _p256_epk().items() if k != "crv"},
    "crv_a_number": _p256_epk(crv=256),
    "crv_unknown": _p256_epk(crv="P-192"),
    "no_x": {"kty": "EC", "crv": "P-256", "y": _p256_epk()["y"]},
    "no_y": {"kty": "EC", "crv": "P-256", "x": _p256_epk()["x"]},
    "okp_with_y": {"kty": "OKP", "crv": "X25519", "x": b64url_encode(bytes(32)), "y": "AA"},
}


@pytest.mark.parametrize("name", list(EPK_OF_NO_KEY))
def test_an_epk_that_fits_none_of_our_keys_is_a_decryption_failure(name: str) -> None:
    """Without a kid, every agreement key is tried; none takes this `epk`."""
    header = {"alg": "ECDH-ES", "enc": "A128GCM", "epk": EPK_OF_NO_KEY[name]}
    assert ours(seal(header, b"claims", os.urandom(16))) is R.DECRYPTION_FAILED


def _rsa_public() -> rsa.RSAPublicKey:
    private = OURS[RSA_ENC.kid].private
    assert isinstance(private, rsa.RSAPrivateKey)
    return private.public_key()


@pytest.mark.parametrize("size", [0, 15, 17, 24, 32, 64])
def test_a_content_key_of_the_wrong_length_is_a_decryption_failure(size: int) -> None:
    """An RSA-OAEP or A128KW key of another length than A128GCM's 16 bytes: AES would
    take 32 bytes as an AES-256 key and decrypt, so only the length check refuses it."""
    cek = os.urandom(size)
    header = {"alg": "RSA-OAEP-256", "enc": "A128GCM", "kid": RSA_ENC.kid}
    with pytest.raises(KeyMismatch):
        content_key(OURS[RSA_ENC.kid], "RSA-OAEP-256", "A128GCM", _rsa_oaep_256(cek), None)
    if size in (24, 32):  # AES takes these: sealed, a lax reader would decrypt them
        token = seal(header, b"claims", cek, _rsa_oaep_256(cek))
        assert ours(token) is R.DECRYPTION_FAILED
        kek = b64url_decode(str(KW128.private_jwk()["k"]))
        kw_header = {"alg": "A128KW", "enc": "A128GCM", "kid": KW128.kid}
        assert ours(seal(kw_header, b"c", cek, aes_key_wrap(kek, cek))) is R.DECRYPTION_FAILED


def test_a_dir_key_is_only_tried_for_its_own_content_size() -> None:
    token = seal({"alg": "dir", "enc": "A128GCM"}, b"claims", os.urandom(32))
    assert ours(token) is R.DECRYPTION_FAILED  # only the 16-byte dir key is tried
    under_kid = seal({"alg": "dir", "enc": "A128GCM", "kid": DIR256.kid}, b"c", os.urandom(16))
    assert ours(under_kid) is R.DECRYPTION_KEY_UNKNOWN
    key = OURS[DIR256.kid]
    with pytest.raises(KeyMismatch):
        content_key(key, "dir", "A128GCM", b"", None)


def test_a_key_wrapped_for_a128kw_does_not_unwrap_as_a256kw() -> None:
    token = encrypt(b"claims", KW128.public_jwk(), "A128KW", "A256GCM")
    parts = token.split(".")
    header = json.loads(b64url_decode(parts[0])) | {"alg": "A256KW", "kid": KW256.kid}
    encrypted_key = b64url_decode(parts[1])
    assert ours(seal(header, b"claims", os.urandom(32), encrypted_key)) is R.DECRYPTION_FAILED
    with pytest.raises(KeyMismatch):
        content_key(OURS[KW256.kid], "A256KW", "A256GCM", encrypted_key, None)
    with pytest.raises(KeyMismatch):  # and an A128KW key never unwraps under A256KW
        content_key(OURS[KW128.kid], "A256KW", "A256GCM", encrypted_key, None)


def _cbc_token(padded: bytes) -> str:
    """A dir A128CBC-HS256 token whose tag is right for `padded` (any bytes)."""
    cek = b64url_decode(str(DIR256.private_jwk()["k"]))
    header = b64url_encode(json.dumps({"alg": "dir", "enc": "A128CBC-HS256"}).encode())
    iv = os.urandom(16)
    ciphertext = b""
    if padded:
        encryptor = Cipher(algorithms.AES(cek[16:]), modes.CBC(iv)).encryptor()
        ciphertext = encryptor.update(padded) + encryptor.finalize()
    aad = header.encode("ascii")
    mac = HMAC(cek[:16], hashes.SHA256())
    mac.update(aad + iv + ciphertext + (len(aad) * 8).to_bytes(8, "big"))
    tag = mac.finalize()[:16]
    return ".".join([header, "", *(b64url_encode(s) for s in (iv, ciphertext, tag))])


CBC_CASES = {
    "good_padding": (b"0123456789ab" + bytes([4] * 4), b"0123456789ab"),
    "pad_byte_zero": (b"0123456789abcde\x00", R.DECRYPTION_FAILED),
    "pad_byte_17": (b"0123456789abcde\x11", R.DECRYPTION_FAILED),
    "pad_bytes_differ": (b"0123456789ab\x01\x02\x03\x04", R.DECRYPTION_FAILED),
    "no_block": (b"", R.DECRYPTION_FAILED),
}


@pytest.mark.parametrize("name", list(CBC_CASES))
def test_cbc_padding_under_a_valid_tag(name: str) -> None:
    padded, expected = CBC_CASES[name]
    assert ours(_cbc_token(padded)) == expected


def test_a_cbc_ciphertext_not_a_whole_number_of_blocks_is_a_decryption_failure() -> None:
    token = _cbc_token(bytes(16))
    header, ek, iv, ciphertext, _ = token.split(".")
    cek = b64url_decode(str(DIR256.private_jwk()["k"]))
    short = b64url_decode(ciphertext)[:-3]
    aad = header.encode("ascii")
    mac = HMAC(cek[:16], hashes.SHA256())
    mac.update(aad + b64url_decode(iv) + short + (len(aad) * 8).to_bytes(8, "big"))
    tag = mac.finalize()[:16]
    forged = ".".join([header, ek, iv, b64url_encode(short), b64url_encode(tag)])
    assert ours(forged) is R.DECRYPTION_FAILED


@pytest.mark.parametrize("enc", ["A128GCM", "A256CBC-HS512"])
def test_a_truncated_tag_is_malformed(enc: str) -> None:
    token = encrypt(b"claims", dir_key(enc).public_jwk(), "dir", enc)
    parts = token.split(".")
    tag = b64url_decode(parts[4])
    for cut in (tag[:-1], tag[: len(tag) // 2], b""):
        parts[4] = b64url_encode(cut)
        assert ours(".".join(parts)) is R.TOKEN_MALFORMED


# the header: our table, checked before any key is used ----------------------------

_RSA = {"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": RSA_ENC.kid}
_ECDH = {"alg": "ECDH-ES", "enc": "A256GCM", "kid": EC_P256.kid}
HEADER_REFUSALS: dict[str, tuple[dict[str, Any], str]] = {
    # name: (header, the member the message names, or "" for the unknown-member message)
    "b64_is_a_jws_parameter": (_RSA | {"b64": False}, ""),
    "gcmkw_iv": (_RSA | {"iv": "AAAA"}, ""),
    "gcmkw_tag": (_RSA | {"tag": "AAAA"}, ""),
    "pbes2_p2s": (_RSA | {"p2s": "AAAA"}, ""),
    "pbes2_p2c": (_RSA | {"p2c": 1000}, ""),
    "epk_without_ecdh": (_RSA | {"epk": _p256_epk()}, ""),
    "apu_without_ecdh": (_RSA | {"apu": "QQ"}, ""),
    "unknown_member": (_RSA | {"x-tenant": "t1"}, ""),
    "kid_a_number": (_RSA | {"kid": 7}, "kid"),
    "typ_a_list": (_RSA | {"typ": ["JWT"]}, "typ"),
    "cty_null": (_RSA | {"cty": None}, "cty"),
    "jku_not_a_url": (_RSA | {"jku": "file:///etc/passwd"}, "jku"),
    "x5c_a_string": (_RSA | {"x5c": "MIIB"}, "x5c"),
    "jwk_a_string": (_RSA | {"jwk": "key"}, "jwk"),
    "exp_a_string": (_RSA | {"exp": "tomorrow"}, "exp"),
    "exp_a_boolean": (_RSA | {"exp": True}, "exp"),
    "aud_of_numbers": (_RSA | {"aud": [1, 2]}, "aud"),
    "epk_missing": (_ECDH, "epk"),
    "epk_a_string": (_ECDH | {"epk": "P-256"}, "epk"),
    "epk_x_not_base64url": (_ECDH | {"epk": _p256_epk(x="a+b/")}, "x"),
    "epk_with_d": (_ECDH | {"epk": _p256_epk(d="AAAA")}, "epk"),
    "apu_not_base64url": (_ECDH | {"epk": _p256_epk(), "apu": "Alice!"}, "apu"),
    "apv_a_number": (_ECDH | {"apv": 7, "epk": _p256_epk()}, "apv"),
}


def _rsa_oaep_256(cek: bytes) -> bytes:
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    return _rsa_public().encrypt(cek, oaep)


def _sealed(header: Mapping[str, Any], plaintext: bytes = b"claims") -> str:
    """A token under `header`, sealed with the CEK our key recovers for RSA-OAEP-256
    (for ECDH-ES, a random CEK and no encrypted key)."""
    cek = os.urandom(CONTENT_ENCRYPTION[str(header["enc"])].cek_bytes)
    if header["alg"] == "ECDH-ES":
        return seal(header, plaintext, cek)
    return seal(header, plaintext, cek, _rsa_oaep_256(cek))


@pytest.mark.parametrize("name", list(HEADER_REFUSALS))
def test_a_header_outside_our_table_is_invalid(name: str) -> None:
    header, member = HEADER_REFUSALS[name]
    with pytest.raises(Denied) as caught:
        decrypt_token(_sealed(header), CONFIG)
    assert caught.value.reason is R.TOKEN_HEADER_INVALID, caught.value
    detail = caught.value.detail
    if member:
        assert f"'{member}'" in detail, detail
    else:
        assert detail == "a header member is neither a JWE parameter nor a registered claim"
    for value in ("t1", "tomorrow", "file:", "Alice", "MIIB"):
        assert value not in detail


def test_the_header_is_refused_before_any_key_is_tried() -> None:
    """An unknown member under the kid of no key: the header's reason, not the key's."""
    token = seal(
        _RSA | {"kid": "enc-nobody", "x-tenant": "t1"}, b"c", os.urandom(32), b"\x01" * 256
    )
    assert ours(token) is R.TOKEN_HEADER_INVALID


def test_every_registered_jwe_parameter_of_the_right_type_is_accepted() -> None:
    header = _RSA | {
        "typ": "JWT",
        "cty": "text/plain",
        "jku": "https://issuer.test/jwks",
        "x5u": "https://issuer.test/cert",
        "x5c": ["MIIB"],
        "x5t": "abc",
        "x5t#S256": "abc",
        "jwk": {"kty": "oct"},
        "nbf": NOW,
        "jti": "id-1",
    }
    decrypted = decrypt_token(_sealed(header), CONFIG)
    assert isinstance(decrypted, Decrypted)
    assert decrypted.plaintext == b"claims"


def test_a_header_of_up_to_4_kib_decrypts() -> None:
    """Our limit is 4 KiB of decoded header; joserfc alone stops at 1 KiB of base64url
    with an exception of its own, which escaped the decryptor as an internal error."""
    long_header = {"x5t": "a" * 2000}
    token = encrypt(b"claims", DIR128.public_jwk(), "dir", "A128GCM", extra_header=long_header)
    assert 1024 < len(token.split(".")[0]) < 4096
    assert ours(token) == b"claims"
    with pytest.raises(JoseError):
        jwe.decrypt_compact(token, OURS[DIR128.kid].key, registry=JOSERFC)
