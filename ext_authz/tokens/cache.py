"""Tokens already verified, so a repeated token skips the signature check.

An entry never outlives its token (`exp` plus leeway), is bound to the policy
snapshot it was verified under, and is only used while the key that verified it
is still in the issuer's current key set.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cachetools import TLRUCache

from ext_authz.clock import Clock
from ext_authz.keys.jwks import VerificationKey


class NamedIssuer(Protocol):
    @property
    def name(self) -> str: ...


@dataclass(frozen=True, slots=True, repr=False)
class VerifiedToken:
    policy: object  # the policy snapshot it was verified under, compared by identity
    issuer: NamedIssuer  # that policy's issuer
    key: VerificationKey | None  # None for unsigned claims in a JWE (symmetric, policy-bound)
    claims: Mapping[str, Any]
    valid_until: float  # wall clock
    encrypted: bool = False

    def __repr__(self) -> str:
        return f"VerifiedToken(issuer={self.issuer.name!r}, valid_until={self.valid_until})"


class VerifiedTokenCache:
    def __init__(self, clock: Clock, maxsize: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._entries: TLRUCache[str, VerifiedToken] = TLRUCache(
            maxsize=maxsize, ttu=_until, timer=clock.now
        )
        self.hits = 0
        self.misses = 0

    def get(self, token: str) -> VerifiedToken | None:
        with self._lock:
            entry = self._entries.get(token)
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def peek(self, token: str) -> VerifiedToken | None:
        """The entry for `token`, not counted as a hit or a miss."""
        with self._lock:
            return self._entries.get(token)

    def put(self, token: str, entry: VerifiedToken) -> None:
        with self._lock:
            self._entries[token] = entry

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def _until(_key: str, value: VerifiedToken, _now: float) -> float:
    return value.valid_until
