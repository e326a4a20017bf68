"""Wycheproof JWS/JWK vectors and the RFC 7520 JWS examples, through the server's own
verification code.

Each vector's key (or key set) is configured as an issuer's keys with
`keys.jwks.parse_jwks`; the token goes through `tokens.format.parse_signed` and
`tokens.verify.verify_jws` (the issuer's algorithm allow-list, `select_key`, the
signature), the functions `Authorizer` itself calls. Two allow-lists are tried, the
keys' own `alg` and every asymmetric algorithm, and must agree.

The vectors sign payloads that are not JWT claim sets (`foo`, a sentence), which
`parse_signed` refuses last, after every header and signature check has passed; the
signature is then still checked, from the same segments.

`valid` must verify and `invalid` must be refused, except for the vectors in
`KNOWN_EXCEPTIONS` (each with its reason and the refusal reason it must keep) and
`GAPS` (invalid vectors still accepted, kept as strict xfails; none today). A vector
that changes outcome fails, whichever table it is in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from ext_authz.errors import DenialReason, Denied
from ext_authz.keys.jwks import KeySet, VerificationKey, parse_jwks
from ext_authz.keys.weak_rsa import is_roca_modulus
from ext_authz.policy.schema import SIGNATURE_ALGORITHMS
from ext_authz.tokens.format import SignedToken, b64url_decode, decode_json_object, parse_signed
from ext_authz.tokens.verify import select_key, verify_jws
from tests.support import conformance
from tests.support.tokens import CORP, PSS, ROGUE_RSA

R = DenialReason
CONFORMANCE = conformance.CONFORMANCE
WYCHEPROOF = conformance.WYCHEPROOF
RFC7520 = conformance.RFC7520
WYCHEPROOF_FILES = {
    "jws": "json_web_signature_test.json",
    "jwk": "json_web_key_test.json",
    "crypto": "json_web_crypto_test.json",
}
RFC7520_FILES = (
    "jws/4_1.rsa_v15_signature.json",
    "jws/4_2.rsa-pss_signature.json",
    "jws/4_3.ecdsa_signature.json",
    "jws/4_4.hmac-sha2_integrity_protection.json",
    "jws/4_5.signature_with_detached_content.json",
    "jws/4_6.protecting_specific_header_fields.json",
    "jws/4_7.protecting_content_only.json",
    "jws/4_8.multiple_signatures.json",
    "curve25519/jws.json",
    "rfc7797/4.2.hmac-sha2_b64_false.json",
    "rfc7797/hmac-sha2_b64_false.json",
)
ACCEPTED = "accepted"
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth")


@dataclass(frozen=True)
class Vector:
    id: str  # "jws-17", "jwk-7", "crypto-46", "rfc7520/jws/4_1...json#compact"
    comment: str
    flags: tuple[str, ...]
    valid: bool
    token: str  # compact form, or the JSON serialization as text
    jwks: Mapping[str, Any]  # what the issuer is configured with

    @property
    def tc_id(self) -> int:
        return int(self.id.rsplit("-", 1)[1])


@dataclass(frozen=True)
class Known:
    reason: DenialReason  # the refusal the vector must keep getting
    why: str


HMAC = (
    "HS* with a symmetric key: we never verify with symmetric keys (skipped, and in no allow-list)"
)
EMPTY_PAYLOAD = "empty payload: a bearer token carries claims; parse_signed refuses it first"
DEFECT_PS = (
    "defective (SOURCE.md): header alg PS384 against a key bound to PS256; binding alg to "
    "the key must refuse it, as the WrongPrimitive vectors 331-340 require"
)
DEFECT_ES521 = (
    "defective (SOURCE.md): the key's alg 'ES521' is no JOSE algorithm (ES512 is): the key "
    "is skipped, and its alg would not match ES512 anyway"
)
DEFECT_B64 = "defective (SOURCE.md): '?' inside base64url; strict RFC 7515 decoding refuses it"
JSON_SERIALIZATION = "JSON serialization: only compact JWS is a bearer token"
DETACHED = "detached content (RFC 7515 appendix F): empty payload segment, refused by policy"
B64_FALSE = "RFC 7797 b64=false: unencoded payload under crit [b64], refused by policy"


def _rfc(name: str, form: str) -> str:
    return f"rfc7520/{name}#{form}"


KNOWN_EXCEPTIONS: dict[str, Known] = {
    # json_web_signature_test.json
    "jws-1": Known(R.ALGORITHM_NOT_ALLOWED, HMAC),
    "jws-259": Known(R.TOKEN_MALFORMED, EMPTY_PAYLOAD),
    "jws-264": Known(R.TOKEN_MALFORMED, EMPTY_PAYLOAD),
    "jws-268": Known(R.TOKEN_MALFORMED, EMPTY_PAYLOAD),
    "jws-272": Known(R.TOKEN_MALFORMED, EMPTY_PAYLOAD),
    "jws-320": Known(R.TOKEN_MALFORMED, EMPTY_PAYLOAD),
    "jws-325": Known(R.TOKEN_MALFORMED, EMPTY_PAYLOAD),
    "jws-346": Known(R.KEY_MISMATCH, DEFECT_PS),
    "jws-347": Known(R.KEY_UNKNOWN, DEFECT_ES521),
    "jws-348": Known(R.ALGORITHM_NOT_ALLOWED, HMAC),
    "jws-350": Known(R.KEY_MISMATCH, DEFECT_PS),
    "jws-351": Known(R.KEY_UNKNOWN, DEFECT_ES521),
    "jws-352": Known(R.ALGORITHM_NOT_ALLOWED, HMAC),
    "jws-357": Known(R.ALGORITHM_NOT_ALLOWED, HMAC),
    "jws-358": Known(R.ALGORITHM_NOT_ALLOWED, HMAC),
    "jws-359": Known(R.ALGORITHM_NOT_ALLOWED, HMAC),
    "jws-372": Known(R.TOKEN_MALFORMED, DEFECT_B64),
    "jws-373": Known(R.TOKEN_MALFORMED, DEFECT_B64),
    "jws-376": Known(R.ALGORITHM_NOT_ALLOWED, HMAC),
    "jws-377": Known(R.ALGORITHM_NOT_ALLOWED, HMAC),
    # json_web_key_test.json
    "jwk-2": Known(R.ALGORITHM_NOT_ALLOWED, HMAC),
    "jwk-13": Known(R.ALGORITHM_NOT_ALLOWED, HMAC),
    "jwk-14": Known(R.ALGORITHM_NOT_ALLOWED, HMAC),
    "jwk-15": Known(R.ALGORITHM_NOT_ALLOWED, HMAC),
    # json_web_crypto_test.json (JWS part)
    "crypto-1": Known(R.ALGORITHM_NOT_ALLOWED, HMAC),
    "crypto-48": Known(R.ALGORITHM_NOT_ALLOWED, HMAC),
    # RFC 7520 and friends: all examples are positive
    _rfc("jws/4_1.rsa_v15_signature.json", "json"): Known(R.TOKEN_MALFORMED, JSON_SERIALIZATION),
    _rfc("jws/4_1.rsa_v15_signature.json", "json_flat"): Known(
        R.TOKEN_MALFORMED, JSON_SERIALIZATION
    ),
    _rfc("jws/4_2.rsa-pss_signature.json", "json"): Known(R.TOKEN_MALFORMED, JSON_SERIALIZATION),
    _rfc("jws/4_2.rsa-pss_signature.json", "json_flat"): Known(
        R.TOKEN_MALFORMED, JSON_SERIALIZATION
    ),
    _rfc("jws/4_3.ecdsa_signature.json", "json"): Known(R.TOKEN_MALFORMED, JSON_SERIALIZATION),
    _rfc("jws/4_3.ecdsa_signature.json", "json_flat"): Known(R.TOKEN_MALFORMED, JSON_SERIALIZATION),
    _rfc("jws/4_4.hmac-sha2_integrity_protection.json", "compact"): Known(
        R.ALGORITHM_NOT_ALLOWED, HMAC
    ),
    _rfc("jws/4_4.hmac-sha2_integrity_protection.json", "json"): Known(
        R.TOKEN_MALFORMED, JSON_SERIALIZATION
    ),
    _rfc("jws/4_4.hmac-sha2_integrity_protection.json", "json_flat"): Known(
        R.TOKEN_MALFORMED, JSON_SERIALIZATION
    ),
    _rfc("jws/4_5.signature_with_detached_content.json", "compact"): Known(
        R.TOKEN_MALFORMED, DETACHED
    ),
    _rfc("jws/4_5.signature_with_detached_content.json", "json"): Known(
        R.TOKEN_MALFORMED, JSON_SERIALIZATION
    ),
    _rfc("jws/4_5.signature_with_detached_content.json", "json_flat"): Known(
        R.TOKEN_MALFORMED, JSON_SERIALIZATION
    ),
    _rfc("jws/4_6.protecting_specific_header_fields.json", "json"): Known(
        R.TOKEN_MALFORMED, JSON_SERIALIZATION
    ),
    _rfc("jws/4_6.protecting_specific_header_fields.json", "json_flat"): Known(
        R.TOKEN_MALFORMED, JSON_SERIALIZATION
    ),
    _rfc("jws/4_7.protecting_content_only.json", "json"): Known(
        R.TOKEN_MALFORMED, JSON_SERIALIZATION
    ),
    _rfc("jws/4_7.protecting_content_only.json", "json_flat"): Known(
        R.TOKEN_MALFORMED, JSON_SERIALIZATION
    ),
    _rfc("jws/4_8.multiple_signatures.json", "json"): Known(
        R.NESTED_TOKEN_INVALID, JSON_SERIALIZATION + " (its dots split it in five)"
    ),
    _rfc("curve25519/jws.json", "json"): Known(R.TOKEN_MALFORMED, JSON_SERIALIZATION),
    _rfc("curve25519/jws.json", "json_flat"): Known(R.TOKEN_MALFORMED, JSON_SERIALIZATION),
    _rfc("rfc7797/4.2.hmac-sha2_b64_false.json", "json"): Known(
        R.TOKEN_MALFORMED, JSON_SERIALIZATION
    ),
    _rfc("rfc7797/4.2.hmac-sha2_b64_false.json", "json_flat"): Known(
        R.TOKEN_MALFORMED, JSON_SERIALIZATION
    ),
    _rfc("rfc7797/hmac-sha2_b64_false.json", "compact"): Known(R.TOKEN_CRIT_UNSUPPORTED, B64_FALSE),
    _rfc("rfc7797/hmac-sha2_b64_false.json", "json"): Known(R.TOKEN_MALFORMED, JSON_SERIALIZATION),
    _rfc("rfc7797/hmac-sha2_b64_false.json", "json_flat"): Known(
        R.TOKEN_MALFORMED, JSON_SERIALIZATION
    ),
}

# Invalid vectors still accepted: real gaps, each a strict xfail with its reason until
# fixed. (jwk-7 and crypto-46, ROCA keys, were one until keys/weak_rsa.py.)
GAPS: dict[str, str] = {}
ROCA_VECTORS = {"jwk-7", "crypto-46"}

# What key hygiene must say about each invalid JWK-file key set (a skip note), so
# the set yields no key usable for the vector's token.
JWK_SKIPS: dict[int, str] = {
    1: "holds private or symmetric key material",  # MixedKeySet: the EC key stays
    3: "holds private or symmetric key material",
    4: "holds private or symmetric key material",  # DuplicateKid: both HMAC keys
    6: "'use' is not 'sig'",
    7: "ROCA, CVE-2017-15361",  # an Infineon-generated 2056-bit modulus
    8: "RSA key of 1024 bits is under 2048",
    9: "not a valid RSA key",  # e=1
    10: "holds private or symmetric key material",
    11: "holds private or symmetric key material",
    12: "holds private or symmetric key material",
    16: "holds private or symmetric key material",
    17: "holds private or symmetric key material",
    18: "holds private or symmetric key material",
    19: "'ES521' is not a supported signature algorithm",
    20: "'ES224' is not a supported signature algorithm",
    21: "'use' is not 'sig'",
    22: "not a valid EC key",  # point not on the curve
    23: "not a valid EC key",  # P-256 coordinates under crv P-384
    24: "RSA key without a valid 'n'",  # kty RSA holding an EC key
    25: "holds private or symmetric key material",
    26: "holds private or symmetric key material",
}

# Where the vector files disagree with SOURCE.md's list of defects, the test says so.
SOURCE_MD_DEFECTS = {"jws-346", "jws-347", "jws-350", "jws-351", "jws-372", "jws-373"}
SOURCE_MD_DEFECTS_REFUSED_ANYWAY = {"jws-367", "jws-370"}  # labelled invalid: HMAC, refused

# Per file: (vectors, as labelled, known exceptions, gaps). docs/security.md quotes these.
SUMMARY = {
    "jws": (401, 401 - 20, 20, 0),
    "jwk": (26, 26 - 4, 4, 0),
    "crypto": (49, 49 - 2, 2, 0),
    "rfc7520": (28, 28 - 24, 24, 0),
}


# loading ---------------------------------------------------------------------------


def _wycheproof_vectors() -> list[Vector]:
    vectors: list[Vector] = []
    for prefix, name in WYCHEPROOF_FILES.items():
        path = WYCHEPROOF / name
        if not path.is_file():
            continue
        document = json.loads(path.read_text(encoding="utf-8"))
        for group in document["testGroups"]:
            key = group.get("public") or group.get("private")
            jwks = key if "keys" in key else {"keys": [key]}
            for test in group["tests"]:
                if "jws" not in test:
                    continue  # the JWE vectors of the crypto file: another suite's
                jws = test["jws"]
                vectors.append(
                    Vector(
                        id=f"{prefix}-{test['tcId']}",
                        comment=test["comment"],
                        flags=tuple(test["flags"]),
                        valid=test["result"] == "valid",
                        token=jws if isinstance(jws, str) else json.dumps(jws),
                        jwks=jwks,
                    )
                )
    return vectors


def _public(key: Mapping[str, Any]) -> dict[str, Any]:
    """An issuer publishes the public half; symmetric keys stay as they are."""
    return {k: v for k, v in key.items() if k not in _PRIVATE_MEMBERS}


def _rfc7520_vectors() -> list[Vector]:
    vectors: list[Vector] = []
    for name in RFC7520_FILES:
        path = RFC7520 / name
        if not path.is_file():
            continue
        example = json.loads(path.read_text(encoding="utf-8"))
        raw_keys = example["input"]["key"]
        keys = raw_keys if isinstance(raw_keys, list) else [raw_keys]
        jwks = {"keys": [_public(k) for k in keys]}
        for form in ("compact", "json", "json_flat"):
            if form not in example["output"]:
                continue
            value = example["output"][form]
            vectors.append(
                Vector(
                    id=_rfc(name, form),
                    comment=str(example["title"]),
                    flags=(),
                    valid=True,
                    token=value if isinstance(value, str) else json.dumps(value),
                    jwks=jwks,
                )
            )
    return vectors


WYCHEPROOF_VECTORS = _wycheproof_vectors()
RFC7520_VECTORS = _rfc7520_vectors()
ALL_VECTORS = WYCHEPROOF_VECTORS + RFC7520_VECTORS
BY_ID = {v.id: v for v in ALL_VECTORS}


def _params(vectors: list[Vector]) -> list[Any]:
    if not vectors:
        return [pytest.param(None, id="absent")]
    params = []
    for vector in vectors:
        marks = []
        if vector.id in GAPS:
            marks.append(pytest.mark.xfail(strict=True, reason=GAPS[vector.id]))
        params.append(pytest.param(vector, marks=marks, id=vector.id))
    return params


# the server's verification path ---------------------------------------------------


def signed_token(token: str) -> SignedToken:
    """`parse_signed`, and past its last check (payload is a JSON object) when that
    is the only one that fails: the vectors' payloads are not claim sets."""
    try:
        return parse_signed(token)
    except Denied as denied:
        if denied.reason is not R.TOKEN_PAYLOAD_INVALID:
            raise
    header_b64, payload_b64, signature_b64 = token.split(".")
    header = decode_json_object(b64url_decode(header_b64, "header"), R.TOKEN_HEADER_INVALID, "h")
    signature = b64url_decode(signature_b64, "signature")
    return SignedToken(header, {}, f"{header_b64}.{payload_b64}".encode("ascii"), signature)


def verify(token: str, keys: KeySet, algorithms: frozenset[str]) -> str:
    """`ACCEPTED`, or the denial reason's value."""
    try:
        verify_jws(signed_token(token), algorithms, lambda signed: select_key(keys, signed))
    except Denied as denied:
        return denied.reason.value
    return ACCEPTED


def outcome_of(vector: Vector) -> str:
    """The outcome with every asymmetric algorithm allowed, checked to agree with the
    outcome under the keys' own `alg` allow-list."""
    keys = parse_jwks(vector.jwks).keys
    everything = frozenset(SIGNATURE_ALGORITHMS)
    bound = frozenset(k.alg for k in keys.keys if k.alg is not None) or everything
    permissive = verify(vector.token, keys, everything)
    strict = verify(vector.token, keys, bound)
    assert (permissive == ACCEPTED) == (strict == ACCEPTED), (permissive, strict)
    return permissive


def usable_key(keys: KeySet, token: str) -> VerificationKey | None:
    """The key the server would pick for the token's header, if any."""
    header_b64 = token.split(".", 1)[0]
    try:
        header = decode_json_object(b64url_decode(header_b64, "h"), R.TOKEN_HEADER_INVALID, "h")
        return select_key(keys, SignedToken(header, {}, b"", b""))
    except Denied:
        return None


# the vectors -------------------------------------------------------------------------


@pytest.mark.parametrize("vector", _params(WYCHEPROOF_VECTORS))
def test_wycheproof_vector(vector: Vector | None) -> None:
    if vector is None:
        conformance.vectors_missing(WYCHEPROOF)
    _check(vector)


@pytest.mark.parametrize("vector", _params(RFC7520_VECTORS))
def test_rfc7520_example(vector: Vector | None) -> None:
    if vector is None:
        conformance.vectors_missing(RFC7520)
    _check(vector)


def _check(vector: Vector) -> None:
    outcome = outcome_of(vector)
    known = KNOWN_EXCEPTIONS.get(vector.id)
    label = "valid" if vector.valid else "invalid"
    if known is None:
        assert (outcome == ACCEPTED) == vector.valid, (
            f"{vector.id} ({vector.comment}, {label}) now gives {outcome}"
        )
    else:
        assert (outcome == ACCEPTED) != vector.valid, (
            f"{vector.id} is a listed exception ({known.why}) but now passes: remove it"
        )
        assert outcome == known.reason.value, f"{vector.id} refused for another reason"


JWK_VECTORS = [v for v in WYCHEPROOF_VECTORS if v.id.startswith("jwk-")]


@pytest.mark.parametrize("vector", _params(JWK_VECTORS))
def test_jwk_vector_key_set_yields_no_usable_key_when_invalid(vector: Vector | None) -> None:
    """An invalid key set never gives the server a key for the vector's token, and
    hygiene says why; a valid one does (unless symmetric: a listed exception)."""
    if vector is None:
        conformance.vectors_missing(WYCHEPROOF)
    parsed = parse_jwks(vector.jwks)
    key = usable_key(parsed.keys, vector.token)
    if vector.valid:
        assert (key is not None) == (vector.id not in KNOWN_EXCEPTIONS)
        return
    assert key is None, f"{vector.id} ({vector.comment}) leaves key {key!r} usable"
    expected = JWK_SKIPS[vector.tc_id]
    assert any(expected in note for note in parsed.skipped), parsed.skipped
    if "MixedKeySet" in vector.flags:
        # the set is not refused whole: its asymmetric key stays, but cannot verify HS256
        assert parsed.keys.kids() == ["kid-ec-sign"]


# the tables themselves ------------------------------------------------------------------


def _require_vectors() -> None:
    if not WYCHEPROOF_VECTORS or not RFC7520_VECTORS:
        conformance.vectors_missing(CONFORMANCE)


def test_every_listed_vector_exists() -> None:
    _require_vectors()
    listed = set(KNOWN_EXCEPTIONS) | set(GAPS) | SOURCE_MD_DEFECTS
    assert listed <= set(BY_ID), sorted(listed - set(BY_ID))
    jwk_ids = {v.tc_id for v in JWK_VECTORS if not v.valid}
    assert set(JWK_SKIPS) == jwk_ids - {int(g.split("-")[1]) for g in GAPS if g.startswith("jwk")}
    assert set(BY_ID) >= ROCA_VECTORS


def test_source_md_defects_are_listed_with_their_reason() -> None:
    _require_vectors()
    assert {d for d in SOURCE_MD_DEFECTS if d in KNOWN_EXCEPTIONS} == SOURCE_MD_DEFECTS
    for tc in SOURCE_MD_DEFECTS:
        assert KNOWN_EXCEPTIONS[tc].why.startswith("defective (SOURCE.md)")
    # 367 and 370 duplicate the valid 357 but are labelled invalid: refused as HMAC
    for tc in SOURCE_MD_DEFECTS_REFUSED_ANYWAY:
        assert BY_ID[tc].token == BY_ID["jws-357"].token
        assert not BY_ID[tc].valid
        assert outcome_of(BY_ID[tc]) == R.ALGORITHM_NOT_ALLOWED.value


def test_summary() -> None:
    """The counts quoted in docs/security.md."""
    _require_vectors()
    for prefix, (total, as_labelled, exceptions, gaps) in SUMMARY.items():
        mine = [
            v
            for v in ALL_VECTORS
            if v.id.startswith(f"{prefix}-" if prefix != "rfc7520" else "rfc7520/")
        ]
        assert len(mine) == total, prefix
        assert sum(v.id in KNOWN_EXCEPTIONS for v in mine) == exceptions, prefix
        assert sum(v.id in GAPS for v in mine) == gaps, prefix
        assert total - exceptions - gaps == as_labelled, prefix


# ROCA: an independent check of keys/weak_rsa.py ---------------------------------------

_ROCA_PRIMES = tuple(p for p in range(3, 168) if all(p % d for d in range(2, p)))


def _powers_of_65537(prime: int) -> frozenset[int]:
    seen = {1}
    value = 65537 % prime
    while value not in seen:
        seen.add(value)
        value = value * 65537 % prime
    return frozenset(seen)


_ROCA_SUBGROUPS = {p: _powers_of_65537(p) for p in _ROCA_PRIMES}


def roca_fingerprint(modulus: int) -> bool:
    """Whether `modulus` has the structure of Infineon's weak RSA keys (CVE-2017-15361):
    modulo each small prime, it is a power of 65537. A random modulus almost never is."""
    return all(modulus % p in group for p, group in _ROCA_SUBGROUPS.items())


def _modulus(jwk: Mapping[str, Any]) -> int:
    return int.from_bytes(b64url_decode(str(jwk["n"]), "n"), "big")


def test_roca_check_agrees_with_an_independent_one_on_every_vector_key() -> None:
    """The server's `is_roca_modulus` and the check above, written apart, flag the same
    moduli: exactly the two ROCA vectors' keys, and none of the others nor ours."""
    _require_vectors()
    flagged: set[str] = set()
    moduli = 0
    for vector in WYCHEPROOF_VECTORS + RFC7520_VECTORS:
        for jwk in vector.jwks["keys"]:
            if jwk.get("kty") == "RSA" and isinstance(jwk.get("n"), str):
                modulus = _modulus(jwk)
                moduli += 1
                assert is_roca_modulus(modulus) == roca_fingerprint(modulus), vector.id
                if roca_fingerprint(modulus):
                    flagged.add(vector.id)
    assert flagged == ROCA_VECTORS
    assert moduli > 300
    for key in (CORP.key, PSS.key, ROGUE_RSA):
        assert isinstance(key, rsa.RSAPrivateKey)
        assert not is_roca_modulus(key.public_key().public_numbers().n)
