"""Key hygiene: which keys of a published JWKS may ever verify a token.

Each unusable key is skipped with a reason (the others of its set still work); a
document that is not a key set at all fails as a whole.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, x25519
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from ext_authz.keys.jwks import JwksError, parse_jwks, parse_jwks_bytes
from tests.support.tokens import CORP, PARTNER, ROGUE_RSA, public_jwk, rsa_key

GOOD = CORP.public_jwk()  # RSA 2048, kid corp-1, alg RS256


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _with(jwk: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = {**jwk, **changes}
    return {k: v for k, v in out.items() if v is not None}


def _private_rsa() -> dict[str, Any]:
    raw: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(ROGUE_RSA))
    raw.pop("key_ops", None)
    return {**raw, "kid": "private", "use": "sig"}


def _ec(curve: ec.EllipticCurve, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = ECAlgorithm.to_jwk(
        ec.generate_private_key(curve).public_key(), as_dict=True
    )
    return {**jwk, "kid": kid}


def _okp(public: x25519.X25519PublicKey | ed448.Ed448PublicKey, crv: str) -> dict[str, Any]:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": crv, "x": _b64(raw), "kid": crv.lower()}


@dataclass(frozen=True)
class Skipped:
    jwk: dict[str, Any]
    why: str  # part of the skip note


SKIPPED = {
    "rsa_1024": Skipped(public_jwk(rsa_key(1024), kid="weak", alg="RS256"), "under 2048"),
    "use_enc": Skipped(_with(GOOD, kid="enc", use="enc"), "'use' is not 'sig'"),
    "key_ops_without_verify": Skipped(
        _with(GOOD, kid="ops", key_ops=["encrypt"]), "does not allow 'verify'"
    ),
    "symmetric": Skipped({"kty": "oct", "kid": "hmac", "k": _b64(b"s" * 32)}, "symmetric"),
    "symmetric_without_material": Skipped({"kty": "oct", "kid": "hmac2"}, "symmetric"),
    "private_key": Skipped(_private_rsa(), "private or symmetric"),
    "unknown_kty": Skipped({"kty": "XYZ", "kid": "odd"}, "unsupported key type"),
    "missing_kty": Skipped({"kid": "none", "n": "AQAB", "e": "AQAB"}, "unsupported key type"),
    "ec_unknown_curve": Skipped(_with(PARTNER.public_jwk(), kid="k1", crv="P-256K"), "curve"),
    "ec_secp256k1": Skipped(_ec(ec.SECP256K1(), "k256"), "unsupported EC curve"),
    "okp_x25519": Skipped(_okp(x25519.X25519PrivateKey.generate().public_key(), "X25519"), "OKP"),
    "okp_ed448": Skipped(_okp(ed448.Ed448PrivateKey.generate().public_key(), "Ed448"), "OKP"),
    "alg_of_another_key_type": Skipped(_with(GOOD, kid="es-on-rsa", alg="ES256"), "does not fit"),
    "alg_symmetric": Skipped(_with(GOOD, kid="hs", alg="HS256"), "not a supported signature"),
    "alg_none": Skipped(_with(GOOD, kid="none-alg", alg="none"), "not a supported signature"),
    "alg_encryption": Skipped(_with(GOOD, kid="oaep", alg="RSA-OAEP"), "not a supported"),
    "ec_alg_of_another_curve": Skipped(
        _with(PARTNER.public_jwk(), kid="p384", alg="ES384"), "does not fit"
    ),
    "kid_not_a_string": Skipped(_with(GOOD, kid=7), "'kid' must be"),
    "kid_too_long": Skipped(_with(GOOD, kid="k" * 300), "'kid' must be"),
    "rsa_bad_modulus": Skipped(_with(GOOD, kid="bad-n", n="***"), "base64url"),
    "rsa_exponent_one": Skipped(_with(GOOD, kid="e1", e="AQ"), "not a valid RSA key"),
    "not_an_object": Skipped("a string", "not a JSON object"),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("case", list(SKIPPED))
def test_unusable_key_is_skipped_and_the_good_key_stays(case: str) -> None:
    skipped = SKIPPED[case]
    parsed = parse_jwks({"keys": [skipped.jwk, GOOD]})
    assert parsed.key_set.kids() == [CORP.kid]
    assert len(parsed.skipped) == 1
    assert skipped.why in parsed.skipped[0], parsed.skipped


def test_one_kid_with_different_keys_drops_all_of_them() -> None:
    other = public_jwk(ROGUE_RSA, kid=CORP.kid, alg="RS256")
    parsed = parse_jwks({"keys": [GOOD, other, PARTNER.public_jwk()]})
    assert parsed.key_set.kids() == [PARTNER.kid]
    assert any("several different keys share it" in note for note in parsed.skipped)


def test_one_kid_bound_to_different_algorithms_drops_both() -> None:
    parsed = parse_jwks({"keys": [GOOD, _with(GOOD, alg="PS256")]})
    assert parsed.key_set.kids() == []


def test_an_exact_repeat_is_kept_once() -> None:
    parsed = parse_jwks({"keys": [GOOD, dict(GOOD)]})
    assert parsed.key_set.kids() == [CORP.kid]
    assert parsed.skipped == ()


@pytest.mark.parametrize(
    ("alg", "fits"),
    [("RS256", True), ("PS256", False), ("RS512", False), ("ES256", False)],
)
def test_a_key_alg_binds_it(alg: str, fits: bool) -> None:
    (key,) = parse_jwks({"keys": [GOOD]}).key_set.verification_keys
    assert key.fits(alg) is fits


def test_a_key_without_alg_fits_every_algorithm_of_its_type() -> None:
    (key,) = parse_jwks({"keys": [_with(GOOD, alg=None)]}).key_set.verification_keys
    assert [a for a in ("RS256", "PS384", "ES256", "EdDSA") if key.fits(a)] == ["RS256", "PS384"]


@pytest.mark.parametrize(
    "document",
    [
        b"[]",
        b'{"keys": {}}',
        b'{"nokeys": []}',
        b'{"keys": [], "keys": []}',
        json.dumps({"keys": [GOOD] * 101}).encode(),
        b"\xff\xfe",
    ],
    ids=["array", "keys_object", "no_keys", "duplicate_member", "too_many_keys", "not_utf8"],
)
def test_a_document_that_is_not_a_key_set_fails_whole(document: bytes) -> None:
    with pytest.raises(JwksError):
        parse_jwks_bytes(document)


def test_the_cached_form_holds_only_accepted_public_keys() -> None:
    parsed = parse_jwks({"keys": [GOOD, _private_rsa(), SKIPPED["symmetric"].jwk]})
    cached = json.loads(parsed.public_jwks_json())
    assert cached == {"keys": [GOOD]}
    again = parse_jwks_bytes(parsed.public_jwks_json().encode())
    assert again.key_set.thumbprints == parsed.key_set.thumbprints
    assert again.skipped == ()
