"""Keys are read one way: one strict base64url reader, one strict JSON loader, one
module importing JWKs (public and private), and the algorithm table as the only
place that knows which key fits which algorithm."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest

import ext_authz
from ext_authz import base64url
from ext_authz.algorithms import CONTENT_ENCRYPTION, KEY_MANAGEMENT, SIGNATURES
from ext_authz.keys.cache import CachedJwks, CacheEntryError
from ext_authz.keys.decryption_keys import (
    DecryptionKeyError,
    load_decryption_keys,
    parse_decryption_jwks,
)
from ext_authz.keys.generate import generate, new_key
from ext_authz.keys.jwks import JwksError, parse_jwks, parse_jwks_bytes
from ext_authz.tokens.decrypt import DecryptionConfig, decrypt_token
from tests.support.jwe_tokens import SHARED_CORP, encrypt
from tests.support.tokens import CORP

ROOT = Path(ext_authz.__file__).resolve().parent
ALGORITHM_NAMES = {*SIGNATURES, *KEY_MANAGEMENT, *CONTENT_ENCRYPTION}


def _stray_bits(value: str) -> str:
    """The same bytes under a non-canonical spelling: the last character's unused
    low bits set (a lenient decoder reads both spellings alike)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    assert len(value) % 4 in (2, 3), "a value whose last character carries unused bits"
    return value[:-1] + alphabet[alphabet.index(value[-1]) + 1]


# the reader ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["AQAB=", "AQ+B", "AQ/B", "AR", "A", "AQ AB", "é"])
def test_the_reader_refuses_what_is_not_canonical_base64url(text: str) -> None:
    with pytest.raises(ValueError, match="not canonical base64url"):
        base64url.decode(text)


def test_the_reader_reads_canonical_base64url() -> None:
    assert base64url.decode("AQAB") == b"\x01\x00\x01"
    assert base64url.decode("AQ") == b"\x01"


# public keys -------------------------------------------------------------------------------


def test_a_public_key_spelled_with_stray_bits_is_skipped() -> None:
    jwk = CORP.public_jwk()
    parsed = parse_jwks({"keys": [{**jwk, "n": _stray_bits(jwk["n"])}, jwk]})
    assert parsed.key_set.kids() == ["corp-1"]
    assert parsed.skipped == ("key 0: kid 'corp-1': RSA key whose 'n' is not canonical base64url",)


def test_a_padded_public_key_is_skipped() -> None:
    jwk = CORP.public_jwk()
    parsed = parse_jwks({"keys": [{**jwk, "n": jwk["n"] + "=" * (-len(jwk["n"]) % 4)}]})
    assert parsed.key_set.kids() == []
    assert "not canonical base64url" in parsed.skipped[0]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('{"keys": [], "keys": []}', "duplicate member 'keys'"),
        ('{"keys": [{"kty": "RSA", "e": NaN}]}', "NaN is not JSON"),
    ],
)
def test_a_key_set_document_is_strict_json(text: str, why: str) -> None:
    with pytest.raises(JwksError, match=why):
        parse_jwks_bytes(text.encode())


# our private keys ---------------------------------------------------------------------------


def test_a_padded_symmetric_decryption_key_does_not_load() -> None:
    raw = SHARED_CORP.private_jwk()
    padded = {**raw, "k": raw["k"] + "=" * (-len(raw["k"]) % 4)}
    assert padded["k"] != raw["k"]
    with pytest.raises(DecryptionKeyError, match="'k' is not canonical base64url"):
        parse_decryption_jwks({"keys": [padded]})
    parse_decryption_jwks({"keys": [raw]})  # the canonical spelling loads


def test_a_decryption_key_spelled_with_stray_bits_does_not_load() -> None:
    raw = SHARED_CORP.private_jwk()
    with pytest.raises(DecryptionKeyError, match="'k' is not canonical base64url"):
        parse_decryption_jwks({"keys": [{**raw, "k": _stray_bits(raw["k"])}]})


def test_a_decryption_key_file_is_strict_json(tmp_path: Path) -> None:
    raw = json.dumps(SHARED_CORP.private_jwk())
    path = tmp_path / "keys.json"
    path.write_text(f'{{"keys": [{raw}], "keys": []}}', encoding="utf-8")
    with pytest.raises(DecryptionKeyError, match=r"keys\.json is not valid JSON"):
        load_decryption_keys(path=path)


def test_appending_to_a_file_that_is_not_a_key_set_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ValueError, match="is not a JWKS"):
        generate(path, "A256KW", kid=None, curve="P-256", rsa_bits=2048, enc="A256GCM", append=True)


def test_a_cached_entry_is_strict_json() -> None:
    entry = CachedJwks("https://issuer", "https://issuer/jwks", '{"keys":[]}', 1.0, 60.0)
    text = entry.dumps()
    assert CachedJwks.loads(text) == entry
    with pytest.raises(CacheEntryError, match="not JSON"):
        CachedJwks.loads(text[:-1] + ',"ttl":60}')  # a repeated member
    with pytest.raises(CacheEntryError, match="not JSON"):
        CachedJwks.loads(text.replace('"ttl":60.0', '"ttl":Infinity'))


def test_json_nested_too_deeply_is_a_clear_error_everywhere_keys_read_it(tmp_path: Path) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(CacheEntryError, match="not JSON"):
        CachedJwks.loads(deep)
    with pytest.raises(JwksError, match="nested too deeply"):
        parse_jwks_bytes(deep.encode())
    path = tmp_path / "keys.json"
    path.write_text(deep, encoding="utf-8")
    with pytest.raises(DecryptionKeyError, match="nested too deeply"):
        load_decryption_keys(path=path)


# the algorithm table ---------------------------------------------------------------------


def _without(raw: dict[str, Any], member: str) -> dict[str, Any]:
    return {name: value for name, value in raw.items() if name != member}


def _generated(alg: str, enc: str, curve: str) -> dict[str, Any]:
    return new_key(alg, kid=f"{alg}-{enc}-{curve}", curve=curve, rsa_bits=2048, enc=enc)


CASES = [
    (alg, enc, curve)
    for alg, row in KEY_MANAGEMENT.items()
    for enc in (CONTENT_ENCRYPTION if row.direct else ["A256GCM"])
    for curve in (["P-256", "X25519"] if "EC" in row.kty else ["P-256"])
]


ECDH = {"ECDH-ES", "ECDH-ES+A128KW", "ECDH-ES+A256KW"}
# what a key without `alg` fits, by key type (and size, for oct keys): RFC 7518
FITS = {
    ("RSA", 0): {"RSA-OAEP", "RSA-OAEP-256"},
    ("EC", 0): ECDH,
    ("OKP", 0): ECDH,
    ("oct", 16): {"A128KW", "dir"},
    ("oct", 32): {"A256KW", "dir"},
    ("oct", 64): {"dir"},
}


@pytest.mark.parametrize(("alg", "enc", "curve"), CASES)
def test_every_key_management_algorithm_gets_a_key_that_decrypts(
    alg: str, enc: str, curve: str
) -> None:
    """`keys generate` reads the table: each algorithm's key loads, fits the
    algorithms of its key type, and decrypts a token of another library."""
    private = _generated(alg, enc, curve)
    keys = parse_decryption_jwks({"keys": [private]})
    (key,) = keys.decryption_keys
    assert {name for name in KEY_MANAGEMENT if key.fits(name)} == {alg}
    (unbound,) = parse_decryption_jwks({"keys": [_without(private, "alg")]}).decryption_keys
    size = key.size if key.kty == "oct" else 0
    assert {name for name in KEY_MANAGEMENT if unbound.fits(name)} == FITS[key.kty, size]
    config = DecryptionConfig.build(keys, frozenset({alg}), frozenset({enc}))
    token = encrypt(b'{"sub":"x"}', private, alg, enc)
    assert decrypt_token(token, config).plaintext == b'{"sub":"x"}'


def _names_in(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in ALGORITHM_NAMES
    ]


def test_keys_and_tokens_name_no_algorithm_outside_the_table() -> None:
    """Adding an algorithm touches one table (`algorithms.py`, and the schema's
    `Literal`, held equal to it): `keys/` and `tokens/` only read the table. A default
    argument (`enc="A256GCM"` of `keys generate`) is a choice, not a table."""
    found = {}
    for package in ("keys", "tokens"):
        for path in sorted((ROOT / package).glob("*.py")):
            names = [(line, name) for line, name in _names_in(path) if not _is_default(path, line)]
            if names:
                found[f"{package}/{path.name}"] = names
    assert not found


def _is_default(path: Path, line: int) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            defaults = [*node.args.defaults, *node.args.kw_defaults]
            if any(d is not None and d.lineno == line for d in defaults):
                return True
    return False
