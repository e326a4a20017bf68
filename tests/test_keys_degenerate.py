"""Degenerate public keys: Ed25519 keys of small order, and RSA moduli whose primes are
close enough for Fermat's method (CVE-2022-26320). Both are refused in issuers' key
sets, and the RSA ones in our own decryption keys, next to the ROCA check.

The close-prime keys are real RSA keys built in the test with `cryptography`'s
private-numbers API; the small-order forgery is a real token that verifies under a
small-order key with no private key at all.
"""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from ext_authz.keys.decryption_keys import DecryptionKeyError, parse_decryption_jwks
from ext_authz.keys.jwks import parse_jwks
from ext_authz.keys.weak_ed25519 import is_small_order_ed25519
from ext_authz.keys.weak_rsa import has_close_primes
from ext_authz.policy.loader import compile_policy_text
from tests.support.doubles import FixedClock, StaticKeys
from tests.support.keys import KEY_UNKNOWN, Checker
from tests.support.tokens import AUDIENCE, CORP, EDGE, NOW, b64json, b64url, public_jwk

# The eight points of small order, as canonical encodings (libsodium's list; the
# order-4 and order-8 points once with each sign of x).
SMALL_ORDER = {
    "identity": "0100000000000000000000000000000000000000000000000000000000000000",
    "order_2": "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "order_4": "0000000000000000000000000000000000000000000000000000000000000000",
    "order_4_neg": "0000000000000000000000000000000000000000000000000000000000000080",
    "order_8_a": "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "order_8_a_neg": "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "order_8_b": "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "order_8_b_neg": "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
}
# the same points written with y + p (non-canonical)
NON_CANONICAL = {
    "y_p": "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "y_p_plus_1": "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "identity_neg": "0100000000000000000000000000000000000000000000000000000000000080",
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def ed25519_jwk(public_hex: str, kid: str = "weak") -> dict[str, Any]:
    x = _b64(bytes.fromhex(public_hex))
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}


# close primes ------------------------------------------------------------------------


def _is_probable_prime(n: int, rng: random.Random) -> bool:
    if n < 2:
        return False
    for small in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % small == 0:
            return n == small
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for _ in range(24):
        x = pow(rng.randrange(2, n - 1), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _next_prime(n: int) -> int:
    rng = random.Random(n)
    candidate = n | 1
    while not _is_probable_prime(candidate, rng):
        candidate += 2
    return candidate


def close_prime_key(gap_bits: int) -> rsa.RSAPrivateKey:
    """An RSA-2048 key whose second prime is the first prime after p + 2^gap_bits."""
    p = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_numbers().p
    q = _next_prime(p + (1 << gap_bits))
    e = 65537
    d = pow(e, -1, (p - 1) * (q - 1))
    numbers = rsa.RSAPrivateNumbers(
        p=p,
        q=q,
        d=d,
        dmp1=rsa.rsa_crt_dmp1(d, p),
        dmq1=rsa.rsa_crt_dmq1(d, q),
        iqmp=rsa.rsa_crt_iqmp(p, q),
        public_numbers=rsa.RSAPublicNumbers(e, p * q),
    )
    return numbers.private_key()


@pytest.fixture(scope="module")
def close_key() -> rsa.RSAPrivateKey:
    return close_prime_key(400)  # |p - q| about 2^400: Fermat's first step splits it


def test_fermat_splits_close_primes_and_spares_ordinary_keys(
    close_key: rsa.RSAPrivateKey,
) -> None:
    assert has_close_primes(close_key.public_key().public_numbers().n)
    assert has_close_primes(close_prime_key(16).public_key().public_numbers().n)
    for _ in range(3):
        ordinary = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        assert not has_close_primes(ordinary.public_key().public_numbers().n)
    # beyond the bounded steps: |p - q| of 2^530 needs thousands of steps
    assert not has_close_primes(close_prime_key(530).public_key().public_numbers().n)


def test_a_close_prime_rsa_key_in_an_issuer_key_set_is_skipped(
    close_key: rsa.RSAPrivateKey,
) -> None:
    weak = public_jwk(close_key, kid="close", alg="RS256")
    parsed = parse_jwks({"keys": [weak, CORP.public_jwk()]})
    assert parsed.key_set.kids() == [CORP.kid]
    assert parsed.skipped == ("key 0: kid 'close': RSA modulus with close primes (CVE-2022-26320)",)


def test_a_close_prime_rsa_decryption_key_does_not_load(close_key: rsa.RSAPrivateKey) -> None:
    private: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(close_key))
    private.pop("key_ops", None)
    private.update(kid="ours", use="enc", alg="RSA-OAEP-256")
    with pytest.raises(DecryptionKeyError, match=r"close primes \(CVE-2022-26320\)") as raised:
        parse_decryption_jwks({"keys": [private]})
    assert private["d"] not in str(raised.value)
    # an ordinary key of the same shape loads
    ordinary: dict[str, Any] = json.loads(
        RSAAlgorithm.to_jwk(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    )
    ordinary.pop("key_ops", None)
    ordinary.update(kid="ours", use="enc", alg="RSA-OAEP-256")
    assert len(parse_decryption_jwks({"keys": [ordinary]}).decryption_keys) == 1


# small-order Ed25519 ----------------------------------------------------------------


@pytest.mark.parametrize("point", list(SMALL_ORDER) + list(NON_CANONICAL))
def test_a_small_order_ed25519_key_is_skipped(point: str) -> None:
    encoding = {**SMALL_ORDER, **NON_CANONICAL}[point]
    assert is_small_order_ed25519(bytes.fromhex(encoding))
    parsed = parse_jwks({"keys": [ed25519_jwk(encoding), EDGE.public_jwk()]})
    assert parsed.key_set.kids() == [EDGE.kid]
    assert parsed.skipped == (
        "key 0: kid 'weak': Ed25519 public key of small order verifies forgeries",
    )


def test_ordinary_ed25519_keys_are_kept() -> None:
    parsed = parse_jwks({"keys": [EDGE.public_jwk()]})
    assert parsed.key_set.kids() == [EDGE.kid]
    assert parsed.skipped == ()


def test_a_token_forged_without_a_private_key_under_a_small_order_key_is_refused(
    tmp_path: Path,
) -> None:
    """With the identity point as the key, R = identity and S = 0 verify any claims."""
    policy = compile_policy_text(
        "issuers:\n  edge:\n"
        f"    issuer: {json.dumps(EDGE.iss)}\n"
        f"    jwks: {json.dumps(EDGE.jwks())}\n"
        f"    audiences: [{AUDIENCE}]\n    algorithms: [EdDSA]\n"
        "routes:\n  - name: api\n    match: { path_prefix: / }\n    require: {}\n",
        label="p.yaml",
        base_dir=tmp_path,
    )
    published = {"keys": [ed25519_jwk(SMALL_ORDER["identity"], kid="edge-weak")]}
    keys = StaticKeys({"edge": parse_jwks(published).key_set})
    header = {"alg": "EdDSA", "typ": "JWT", "kid": "edge-weak"}
    claims = {
        "iss": EDGE.iss,
        "sub": "admin",
        "aud": AUDIENCE,
        "iat": NOW - 60,
        "nbf": NOW - 60,
        "exp": NOW + 600,
    }
    signature = bytes.fromhex(SMALL_ORDER["identity"]) + bytes(32)  # R = identity, S = 0
    forged = f"{b64json(header)}.{b64json(claims)}.{b64url(signature)}"
    assert Checker(policy, keys, FixedClock(NOW))(forged) == KEY_UNKNOWN
