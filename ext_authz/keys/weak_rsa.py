"""Recognise RSA moduli that are public knowledge in all but name.

ROCA (CVE-2017-15361), the flawed Infineon generator:

Such primes have the form k*M + (65537^a mod M) for a primorial M, so for every small
prime p dividing M, the modulus n reduced mod p lies in the subgroup that 65537
generates mod p. A random modulus passes that test for all these primes with
negligible probability; a ROCA modulus always does.

Close primes (CVE-2022-26320): see `has_close_primes`.
"""

from __future__ import annotations

import math

_GENERATOR = 65537
_PRIMES = (
    3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79,
    83, 89, 97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
)  # fmt: skip


def _subgroup(p: int) -> frozenset[int]:
    members = set()
    value = 1
    while value not in members:
        members.add(value)
        value = value * _GENERATOR % p
    return frozenset(members)


_SUBGROUPS = tuple((p, _subgroup(p)) for p in _PRIMES)


def is_roca_modulus(n: int) -> bool:
    return all(n % p in members for p, members in _SUBGROUPS)


# Fermat's method finds p and q within this many steps when |p - q| is under about
# n^(1/4) * sqrt(2 * steps): primes generated close together (CVE-2022-26320, Rambus
# SafeZone, Canon and Fujifilm printers) fall to it in the first step or two.
FERMAT_STEPS = 100


def has_close_primes(n: int, steps: int = FERMAT_STEPS) -> bool:
    """Whether Fermat factorisation splits `n` within `steps` steps (a perfect square
    or an even modulus counts too): such a modulus is no secret."""
    if n % 2 == 0:
        return True
    a = math.isqrt(n)
    if a * a == n:
        return True
    a += 1
    for _ in range(steps):
        b_squared = a * a - n
        b = math.isqrt(b_squared)
        if b * b == b_squared:
            return True
        a += 1
    return False
