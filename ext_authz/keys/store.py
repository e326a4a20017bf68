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


class KeyProvider(Protocol):
    def current(self, issuer: str) -> IssuerKeys:
        """The keys to verify with now. Never blocks."""
        ...

    def refetch(self, issuer: str) -> IssuerKeys | None:
        """Fetch again because a token named a key we lack. Blocks for at most the
        fetch timeout; returns None without fetching while the issuer's refetch
        cooldown runs."""
        ...
