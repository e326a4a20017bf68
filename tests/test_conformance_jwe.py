"""Conformance: the Wycheproof JWE vectors and the RFC 7520 JWE examples, through
`decrypt_token` with every algorithm and content encryption we support allowed.

Each vector's own key is loaded with `parse_decryption_jwks`, exactly as a policy's
decryption JWKS would be. Outcomes:
- `valid`: decrypted, and the plaintext is the vector's `pt`;
- `invalid`: refused, by a `Denied` or by a `DecryptionKeyError` when loading the key;
- a known exception: a `valid` vector we refuse by policy. Each is listed below with
  its reason and the exact refusal expected, so the list cannot grow silently: a
  listed exception that starts to decrypt fails, and so does any unlisted vector whose
  outcome changes. Anything other than `Denied` escaping `decrypt_token` fails too.

The data (copied into `tests/data/conformance`, with its licences) and its known
problems are described in `wycheproof/SOURCE.md` and `rfc7520/SOURCE.md` next to the
files. A missing file skips the suite, or fails it when `CI` is set.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ext_authz.errors import DenialReason, Denied
from ext_authz.keys.decryption_keys import DecryptionKeyError, parse_decryption_jwks
from ext_authz.policy.schema import CONTENT_ENCRYPTIONS, KEY_MANAGEMENT_ALGORITHMS
from ext_authz.tokens.decrypt import DecryptionConfig, decrypt_token
from tests.support import conformance

R = DenialReason
WYCHEPROOF = conformance.WYCHEPROOF / "json_web_encryption_test.json"
WYCHEPROOF_SOURCE = conformance.WYCHEPROOF / "SOURCE.md"
RFC7520 = conformance.RFC7520


@dataclass(frozen=True)
class KeyRefused:
    """The vector's key does not load; `fragment` is part of the loader's message."""

    fragment: str


@dataclass(frozen=True)
class Known:
    """A vector labelled valid that we refuse by policy."""

    why: str
    refusal: DenialReason | KeyRefused


@dataclass(frozen=True)
class Outcome:
    plaintext: bytes | None = None
    header: Mapping[str, Any] | None = None
    nested: str | None = None
    denied: DenialReason | None = None
    key_error: str | None = None

    @property
    def accepted(self) -> bool:
        return self.plaintext is not None

    def __str__(self) -> str:
        if self.denied is not None:
            return f"denied {self.denied.value}"
        if self.key_error is not None:
            return f"key refused: {self.key_error}"
        return "accepted"


def decrypt(keys: list[Any], token: str) -> Outcome:
    """Load `keys` as our decryption JWKS and decrypt `token` with all we support."""
    try:
        key_set = parse_decryption_jwks({"keys": keys})
    except DecryptionKeyError as exc:
        return Outcome(key_error=str(exc))
    config = DecryptionConfig.build(
        key_set, frozenset(KEY_MANAGEMENT_ALGORITHMS), frozenset(CONTENT_ENCRYPTIONS)
    )
    try:
        decrypted = decrypt_token(token, config)
        nested = decrypted.nested_token()
    except Denied as denied:
        return Outcome(denied=denied.reason)
    return Outcome(decrypted.plaintext, decrypted.header, nested)


def assert_refused_as(outcome: Outcome, known: Known) -> None:
    assert not outcome.accepted, f"known exception now accepted ({known.why}): update the list"
    if isinstance(known.refusal, KeyRefused):
        assert outcome.key_error is not None, f"{outcome}, expected the key to be refused"
        assert known.refusal.fragment in outcome.key_error, outcome
    else:
        assert outcome.denied is known.refusal, f"{outcome}, expected {known.refusal.value}"


# Wycheproof ----------------------------------------------------------------------

_A192_ENC = "A192GCM / A192CBC-HS384 content encryption is not supported"
_A192_KW = "AES-192 key wrapping is not supported: the key (alg ECDH-ES+A192KW) does not load"
_A192_KEY = "AES-192 keys are not supported: an oct key is 16, 32 or 64 bytes"
_GCMKW = "AES-GCM key wrapping (A*GCMKW) is not supported: a key with that alg does not load"
_RSA1_5 = "RSA1_5 is refused (PKCS#1 v1.5 padding oracle): a key with alg RSA1_5 does not load"
_DIR_ALG_IS_ENC = (
    "the dir key's alg is its content encryption (A128GCM); a key's alg must be a key "
    "management algorithm, so the key does not load"
)
_ZIP = "compressed plaintext (zip: DEF) is refused"
_UNSUPPORTED_ALG = KeyRefused("'alg' is not a supported key management algorithm")

WYCHEPROOF_EXCEPTIONS: dict[int, Known] = {
    28: Known(_A192_ENC, R.ENCRYPTION_NOT_ALLOWED),
    31: Known(_A192_ENC, R.ENCRYPTION_NOT_ALLOWED),
    53: Known(_A192_ENC, R.ENCRYPTION_NOT_ALLOWED),
    56: Known(_A192_ENC, R.ENCRYPTION_NOT_ALLOWED),
    60: Known(_A192_KW, _UNSUPPORTED_ALG),
    61: Known(_A192_KW, _UNSUPPORTED_ALG),
    70: Known(_A192_KEY, KeyRefused("16, 32 or 64 bytes")),
    71: Known(_GCMKW, _UNSUPPORTED_ALG),
    72: Known(_A192_KEY, KeyRefused("16, 32 or 64 bytes")),
    73: Known(_GCMKW, _UNSUPPORTED_ALG),
    74: Known(_GCMKW, _UNSUPPORTED_ALG),
    75: Known(_GCMKW, _UNSUPPORTED_ALG),
    77: Known(_A192_ENC, R.ENCRYPTION_NOT_ALLOWED),
    80: Known(_A192_ENC, R.ENCRYPTION_NOT_ALLOWED),
    83: Known(_A192_ENC, R.ENCRYPTION_NOT_ALLOWED),
    86: Known(_A192_ENC, R.ENCRYPTION_NOT_ALLOWED),
    89: Known(_A192_ENC, R.ENCRYPTION_NOT_ALLOWED),
    92: Known(_A192_ENC, R.ENCRYPTION_NOT_ALLOWED),
    100: Known(_RSA1_5, _UNSUPPORTED_ALG),
    101: Known(_RSA1_5, _UNSUPPORTED_ALG),
    102: Known(_RSA1_5, _UNSUPPORTED_ALG),
    103: Known(_RSA1_5, _UNSUPPORTED_ALG),
    104: Known(_RSA1_5, _UNSUPPORTED_ALG),
    105: Known(_RSA1_5, _UNSUPPORTED_ALG),
    112: Known(_RSA1_5, _UNSUPPORTED_ALG),
    128: Known(f"RFC 7520 figure 81: {_RSA1_5}", _UNSUPPORTED_ALG),
    132: Known(f"RFC 7520 figure 136: {_DIR_ALG_IS_ENC}", _UNSUPPORTED_ALG),
    133: Known(f"RFC 7520 figure 148: {_GCMKW}", _UNSUPPORTED_ALG),
    135: Known(f"RFC 7520 figure 170: {_ZIP}", R.TOKEN_COMPRESSED),
}
# what the file holds, and what we make of it (the snapshot in SOURCE.md)
WYCHEPROOF_EXPECTED = {"valid accepted": 36, "invalid refused": 74, "known exceptions": 29}


@dataclass(frozen=True)
class Vector:
    tc_id: int
    comment: str
    result: str
    flags: tuple[str, ...]
    token: str
    enc: str
    pt: str | None
    key: Any

    @property
    def id(self) -> str:
        return f"tc{self.tc_id}-{self.comment}"


def wycheproof_vectors() -> list[Vector]:
    data = json.loads(WYCHEPROOF.read_text(encoding="utf-8"))
    vectors = [
        Vector(
            test["tcId"],
            test["comment"],
            test["result"],
            tuple(test["flags"]),
            test["jwe"] if isinstance(test["jwe"], str) else json.dumps(test["jwe"]),
            test["enc"],
            test.get("pt"),
            group["private"],
        )
        for group in data["testGroups"]
        for test in group["tests"]
    ]
    assert len(vectors) == data["numberOfTests"]
    return vectors


def _wycheproof_params() -> list[Any]:
    if not WYCHEPROOF.is_file():
        return [pytest.param(None, id="absent")]
    return [pytest.param(v, id=v.id) for v in wycheproof_vectors()]


def wycheproof_outcome(vector: Vector) -> Outcome:
    keys = vector.key.get("keys", [vector.key])
    return decrypt(keys, vector.token)


def check_wycheproof(vector: Vector, outcome: Outcome) -> str:
    """Assert the vector's expected outcome; return its summary category."""
    assert vector.result in ("valid", "invalid"), vector.result
    known = WYCHEPROOF_EXCEPTIONS.get(vector.tc_id)
    if known is not None:
        assert vector.result == "valid", "only vectors labelled valid can be exceptions"
        assert_refused_as(outcome, known)
        return "known exceptions"
    if vector.result == "invalid":
        assert not outcome.accepted, "an invalid vector was accepted"
        return "invalid refused"
    assert outcome.accepted, f"a valid vector was refused: {outcome}"
    assert vector.pt is not None
    assert outcome.plaintext == bytes.fromhex(vector.pt)
    assert outcome.header is not None
    assert outcome.header["enc"] == vector.enc
    return "valid accepted"


@pytest.mark.parametrize("vector", _wycheproof_params())
def test_wycheproof_vector(vector: Vector | None) -> None:
    if vector is None:
        conformance.vectors_missing(WYCHEPROOF)
    check_wycheproof(vector, wycheproof_outcome(vector))


def test_wycheproof_summary() -> None:
    if not WYCHEPROOF.is_file():
        conformance.vectors_missing(WYCHEPROOF)
    vectors = wycheproof_vectors()
    by_id = {v.tc_id: v for v in vectors}
    assert len(by_id) == len(vectors), "tcIds repeat"
    assert set(WYCHEPROOF_EXCEPTIONS) <= set(by_id), "an exception names no vector"
    counts = dict.fromkeys(WYCHEPROOF_EXPECTED, 0)
    for vector in vectors:
        counts[check_wycheproof(vector, wycheproof_outcome(vector))] += 1
    print(f"wycheproof JWE: {counts}")
    assert counts == WYCHEPROOF_EXPECTED


def test_wycheproof_file_is_the_documented_snapshot() -> None:
    """The outcomes above are for the snapshot whose sha256 SOURCE.md records."""
    if not WYCHEPROOF.is_file() or not WYCHEPROOF_SOURCE.is_file():
        conformance.vectors_missing(WYCHEPROOF)
    pattern = rf"\b([0-9a-f]{{64}})\s+{re.escape(WYCHEPROOF.name)}"
    recorded = re.search(pattern, WYCHEPROOF_SOURCE.read_text(encoding="utf-8"))
    assert recorded is not None
    assert hashlib.sha256(WYCHEPROOF.read_bytes()).hexdigest() == recorded.group(1)


# RFC 7520 ------------------------------------------------------------------------

_JSON_ONLY = "only a JSON serialization exists, and a bearer token is compact"

RFC7520_EXCEPTIONS: dict[str, Known] = {
    "5_1": Known(
        "RSA1_5 is refused (PKCS#1 v1.5 padding oracle), even with a key that has no alg",
        R.ENCRYPTION_NOT_ALLOWED,
    ),
    "5_3": Known(
        "PBES2 is refused; its password is not a 16, 32 or 64-byte key",
        KeyRefused("16, 32 or 64 bytes"),
    ),
    "5_6": Known(_DIR_ALG_IS_ENC, _UNSUPPORTED_ALG),
    "5_7": Known(_GCMKW, _UNSUPPORTED_ALG),
    "5_9": Known(_ZIP, R.TOKEN_COMPRESSED),
    "5_10": Known(f"{_JSON_ONLY} (it has aad)", R.TOKEN_MALFORMED),
    "5_11": Known(f"{_JSON_ONLY} (it has an unprotected header)", R.TOKEN_MALFORMED),
    "5_12": Known(f"{_JSON_ONLY} (it has an unprotected header)", R.TOKEN_MALFORMED),
    "5_13": Known(
        f"multiple recipients: {_JSON_ONLY}; its keys include an A256GCMKW key that does not load",
        _UNSUPPORTED_ALG,
    ),
}
RFC7520_EXPECTED = {"valid accepted": 6, "known exceptions": 9}


@dataclass(frozen=True)
class Example:
    name: str
    token: str  # the compact serialization, or else the JSON one as a client might send it
    keys: list[Any]
    plaintext: bytes
    nested: str | None  # the inner JWS of a nesting example


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _example(name: str, encrypt: Mapping[str, Any], nested: str | None = None) -> Example:
    given = encrypt["input"]
    if "key" in given:
        key = given["key"]
        keys = key if isinstance(key, list) else [key]
    else:  # PBES2: the input is a password
        keys = [{"kty": "oct", "k": _b64url(given["pwd"].encode("utf-8"))}]
    output = encrypt["output"]
    token = output.get("compact") or json.dumps(output.get("json_flat") or output["json"])
    return Example(name, token, keys, given["plaintext"].encode("utf-8"), nested)


def rfc7520_examples() -> list[Example]:
    examples = [
        _example(path.name.split(".")[0], json.loads(path.read_text(encoding="utf-8")))
        for path in sorted((RFC7520 / "jwe").glob("*.json"))
    ]
    nesting = RFC7520 / "6.nesting_signatures_and_encryption.json"
    if nesting.is_file():
        data = json.loads(nesting.read_text(encoding="utf-8"))
        examples.append(_example("6", data["encrypt"], data["sign"]["output"]["compact"]))
    x25519 = RFC7520 / "curve25519" / "ecdh-es.json"
    if x25519.is_file():
        examples.append(_example("curve25519", json.loads(x25519.read_text(encoding="utf-8"))))
    return examples


def _rfc7520_params() -> list[Any]:
    if not (RFC7520 / "jwe").is_dir():
        return [pytest.param(None, id="absent")]
    return [pytest.param(e, id=e.name) for e in rfc7520_examples()]


def check_rfc7520(example: Example, outcome: Outcome) -> str:
    known = RFC7520_EXCEPTIONS.get(example.name)
    if known is not None:
        assert_refused_as(outcome, known)
        return "known exceptions"
    assert outcome.accepted, f"a valid example was refused: {outcome}"
    assert outcome.plaintext == example.plaintext
    assert outcome.nested == example.nested
    return "valid accepted"


@pytest.mark.parametrize("example", _rfc7520_params())
def test_rfc7520_example(example: Example | None) -> None:
    if example is None:
        conformance.vectors_missing(RFC7520)
    check_rfc7520(example, decrypt(example.keys, example.token))


def test_rfc7520_summary() -> None:
    if not (RFC7520 / "jwe").is_dir():
        conformance.vectors_missing(RFC7520)
    examples = rfc7520_examples()
    names = [e.name for e in examples]
    assert len(set(names)) == len(names)
    assert set(RFC7520_EXCEPTIONS) <= set(names), "an exception names no example"
    assert "6" in names, "the nesting example holds a JWE and must be run"
    counts = dict.fromkeys(RFC7520_EXPECTED, 0)
    for example in examples:
        counts[check_rfc7520(example, decrypt(example.keys, example.token))] += 1
    print(f"RFC 7520 JWE: {counts}")
    assert counts == RFC7520_EXPECTED


# the data travels with the repository ----------------------------------------------


def test_vectors_are_in_the_repository() -> None:
    """The suites read the copies under tests/data, present in every clone."""
    root = Path(__file__).resolve().parent / "data" / "conformance"
    assert root == conformance.CONFORMANCE
    for where in (conformance.WYCHEPROOF, conformance.RFC7520):
        assert (where / "LICENSE").is_file() and (where / "SOURCE.md").is_file(), where
    assert WYCHEPROOF.is_file() and (RFC7520 / "jwe").is_dir()


def test_missing_vectors_fail_in_ci_and_skip_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="conformance vectors not found"):
        conformance.vectors_missing(tmp_path)
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        conformance.vectors_missing(tmp_path)
