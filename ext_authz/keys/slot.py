"""The check threads' side of the key manager: what they read, and the one thing they
may ask for.

- `IssuerSlot` holds an issuer's `Published` state: a frozen object that the refresh
  loop replaces in one assignment and that checks, `report()` and `statuses()` read
  without a lock.
- `RefetchGate` decides, on a check thread, whether a token naming an unknown `kid`
  may start a refetch (the issuer's token bucket, `bucket.py`), shares a running
  refetch between the checks that wait for it, caps the number of waiting checks, and
  closes for good when its manager stops, so that a check still running on a replaced
  policy gets a clean answer at once instead of waiting on a loop that is going away.

Nothing here runs on the refresh loop; the loop side (`refresher.py`) only calls
`IssuerSlot.publish`.
"""

from __future__ import annotations

import concurrent.futures
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ext_authz.clock import Clock
from ext_authz.keys.bucket import RefetchBucket, refetch_rule
from ext_authz.keys.cache import CachedJwks
from ext_authz.keys.events import KeyOrigin
from ext_authz.keys.jwks import KeySet
from ext_authz.keys.store import IssuerKeys, KeyStatus
from ext_authz.policy.model import IssuerPolicy


@dataclass(frozen=True, slots=True)
class KeyView:
    """The answers for each phase of a key set's life, made once per change, and the
    wall-clock times between them."""

    fresh: IssuerKeys
    stale: IssuerKeys
    gone: IssuerKeys
    fresh_until: float
    expires_at: float

    def at(self, now: float) -> IssuerKeys:
        if now <= self.fresh_until:
            return self.fresh
        if now <= self.expires_at:
            return self.stale
        return self.gone

    @classmethod
    def without_keys(cls, keys: IssuerKeys) -> KeyView:
        return cls(keys, keys, keys, -math.inf, -math.inf)


@dataclass(frozen=True, slots=True)
class Held:
    """The key set served, with the cache entry it came from."""

    keys: KeySet
    entry: CachedJwks
    source: KeyOrigin


@dataclass(frozen=True, slots=True)
class Published:
    """One issuer's state as the refresh loop last published it."""

    view: KeyView
    held: Held | None = None
    attempted: bool = False  # the start-up fetch finished, well or not
    last_attempt_at: float | None = None
    last_result: str | None = None
    last_error: str | None = None
    failures: int = 0
    next_due: float | None = None  # monotonic
    cache: str = "memory"


PENDING = Published(KeyView.without_keys(IssuerKeys(None, KeyStatus.PENDING)))


class IssuerSlot:
    """A remote issuer as checks see it."""

    def __init__(self, name: str, policy: IssuerPolicy, store_id: str) -> None:
        self.name = name
        self.policy = policy
        self.store_id = store_id
        self.published = PENDING

    def current(self, now: float) -> IssuerKeys:
        return self.published.view.at(now)

    def publish(self, state: Published) -> None:
        """Called by the refresh loop only; one assignment, read without locks."""
        self.published = state


StartRefetch = Callable[[], "concurrent.futures.Future[bool]"]


class RefetchGate:
    """Unknown-`kid` refetches of one key manager, decided on check threads."""

    def __init__(self, clock: Clock, max_waiters: int | None) -> None:
        self._clock = clock
        self._max_waiters = max_waiters
        self._lock = threading.Lock()
        self._closing = False
        self._waiters = 0
        self._running: dict[str, concurrent.futures.Future[bool]] = {}
        self._buckets: dict[str, RefetchBucket] = {}

    @property
    def waiters(self) -> int:
        return self._waiters

    def enter(
        self, slot: IssuerSlot, start: StartRefetch
    ) -> concurrent.futures.Future[bool] | None:
        """The refetch to wait for (started now, or already running), or None: the
        bucket is empty, every waiting place is taken, or the manager is stopping.
        After a future, the caller must call `leave()`."""
        with self._lock:
            if self._closing:
                return None
            future = self._running.get(slot.name)
            if future is None or future.done():
                bucket = self._buckets.get(slot.name)
                if bucket is None:
                    rule = refetch_rule(slot.policy.keys.refetch_cooldown)
                    bucket = self._buckets[slot.name] = RefetchBucket(rule, self._clock)
                if not bucket.take():
                    return None
                # the loop runs while the gate is open: `close()` takes this lock first
                future = start()
                self._running[slot.name] = future
            if self._max_waiters is not None and self._waiters >= self._max_waiters:
                # every other check thread already waits: answer now (unknown key)
                # rather than let unknown kids take the last thread from good tokens
                return None
            self._waiters += 1
            return future

    def leave(self) -> None:
        with self._lock:
            self._waiters -= 1

    def close(self) -> None:
        """Refuse every later refetch and release the checks waiting on running ones."""
        with self._lock:
            self._closing = True
            running = list(self._running.values())
            self._running.clear()
        for future in running:
            future.cancel()
