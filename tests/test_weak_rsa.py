"""ROCA (CVE-2017-15361) moduli are recognised; ordinary ones are not."""

from __future__ import annotations

import math
import random

from cryptography.hazmat.primitives.asymmetric import rsa

from ext_authz.keys.jwks import parse_jwks
from ext_authz.keys.weak_rsa import _PRIMES, is_roca_modulus
from tests.support.tokens import b64url

PRIMORIAL = math.prod(_PRIMES)


def roca_like(seed: int) -> int:
    """A product of two numbers of the flawed form k*M + (65537^a mod M)."""
    rng = random.Random(seed)

    def part() -> int:
        return rng.getrandbits(1100) * PRIMORIAL + pow(65537, rng.randrange(1, 10_000), PRIMORIAL)

    return part() * part()


def test_generated_keys_are_not_flagged() -> None:
    for _ in range(5):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        assert not is_roca_modulus(key.public_key().public_numbers().n)


def test_random_odd_numbers_are_not_flagged() -> None:
    rng = random.Random(7)
    assert not any(is_roca_modulus(rng.getrandbits(2048) | 1) for _ in range(2000))


def test_flawed_form_is_flagged() -> None:
    assert all(is_roca_modulus(roca_like(seed)) for seed in range(20))


def test_a_roca_key_is_skipped_from_a_jwks() -> None:
    n = roca_like(1)
    jwk = {
        "kty": "RSA",
        "kid": "roca",
        "e": "AQAB",
        "n": b64url(n.to_bytes((n.bit_length() + 7) // 8, "big")),
    }
    parsed = parse_jwks({"keys": [jwk]})
    assert not parsed.key_set.verification_keys
    assert "ROCA" in parsed.skipped[0]
