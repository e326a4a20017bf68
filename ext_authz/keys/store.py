"""What the request path asks of keys: an immutable snapshot per issuer.

The check path never waits on the network except for the one bounded refetch on
an unknown `kid` (`KeyProvider.refetch`), which is rate-limited per issuer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from ext_authz.keys.jwks import KeySet


class KeyStatus(enum.Enum):
    STATIC = "static"  # from the policy file: always there
    PENDING = "pending"  # first fetch not finished
    FRESH = "fresh"  # fetched, within its TTL
    STALE = "stale"  # refresh overdue or failing; last good keys still served
    FAILED = "failed"  # no keys: never fetched, or stale beyond max_stale


@dataclass(frozen=True, slots=True)
class IssuerKeys:
    key_set: KeySet | None  # None: nothing to verify with (503)
    status: KeyStatus
    fetched_at: float | None = None  # wall clock of the last good fetch
    last_error: str | None = None

    @property
    def keys(self) -> KeySet | None:
        """Compatibility name of `key_set`."""
        return self.key_set


class KeyProvider(Protocol):
    def current(self, issuer: str) -> IssuerKeys:
        """The keys to verify with now. Never blocks."""
        ...

    def refetch(self, issuer: str) -> IssuerKeys | None:
        """Fetch again because a token named a key we lack. Blocks for at most the
        fetch timeout; returns None without fetching while the issuer's refetch
        cooldown runs."""
        ...


class StaticKeys:
    """A key provider over fixed key sets. Nothing of the server uses it: the test double
    is `tests.support.doubles.StaticKeys`; this copy stays only while `bench/inproc.py`
    imports it from here (`tests/test_no_test_doubles_shipped.py` names it)."""

    def __init__(self, keys: dict[str, KeySet]) -> None:
        self._keys = {name: IssuerKeys(ks, KeyStatus.STATIC) for name, ks in keys.items()}

    def current(self, issuer: str) -> IssuerKeys:
        return self._keys.get(issuer, IssuerKeys(None, KeyStatus.FAILED))

    def refetch(self, issuer: str) -> IssuerKeys | None:
        return None
