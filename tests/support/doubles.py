"""Test doubles for the server's seams: a clock that moves only when told to and a key
provider over fixed key sets. They live here, not in the shipped package: nothing of
the server uses them (`tests/test_no_test_doubles_shipped.py`)."""

from __future__ import annotations

from collections.abc import Mapping

from ext_authz.keys.jwks import KeySet
from ext_authz.keys.store import IssuerKeys, KeyStatus
from ext_authz.policy.model import Policy


class FixedClock:
    """A clock that only moves when told to."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self._now = now
        self._mono = 1000.0

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._mono += seconds


def static_key_sets(policy: Policy) -> dict[str, KeySet]:
    """The static keys (`jwks_file`, inline `jwks`) of the policy's issuers, by issuer."""
    return {
        name: issuer.source.static_keys
        for name, issuer in policy.issuers.items()
        if issuer.source.static_keys is not None
    }


class StaticKeys:
    """A `KeyProvider` over fixed key sets: every issuer's keys are static, a refetch
    finds nothing new."""

    def __init__(self, key_sets: Mapping[str, KeySet]) -> None:
        self._keys = {name: IssuerKeys(ks, KeyStatus.STATIC) for name, ks in key_sets.items()}

    @classmethod
    def of(cls, policy: Policy) -> StaticKeys:
        """The static keys (`jwks_file`, inline `jwks`) of the policy's issuers."""
        return cls(static_key_sets(policy))

    def current(self, issuer: str) -> IssuerKeys:
        return self._keys.get(issuer, IssuerKeys(None, KeyStatus.FAILED))

    def refetch(self, issuer: str) -> IssuerKeys | None:
        return None
