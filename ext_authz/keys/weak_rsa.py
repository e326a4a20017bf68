"""Recognise RSA moduli made by the flawed Infineon generator (ROCA, CVE-2017-15361).

Such primes have the form k*M + (65537^a mod M) for a primorial M, so for every small
prime p dividing M, the modulus n reduced mod p lies in the subgroup that 65537
generates mod p. A random modulus passes that test for all these primes with
negligible probability; a ROCA modulus always does.
"""

from __future__ import annotations

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
