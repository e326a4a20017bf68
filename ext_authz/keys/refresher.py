"""The refresh loop's side of the key manager: one `IssuerRefresher` per remote issuer,
run only on the manager's asyncio loop.

It keeps the issuer's keys current:

- a refresh when 80% of the TTL has passed;
- after a failure, retries with capped exponential backoff and jitter, serving the
  last good keys until their TTL plus `max_stale` has passed;
- every fetch (scheduled, or a refetch a check asked for) is one task at a time
  (single flight): a refetch during a refresh shares it.

Every fetch goes through the issuer's store (`cache.py`): with Redis, a replica first
looks for a key set another replica fetched, takes the fetch lock before fetching so
that one replica's fetch serves all, and takes each refetch from the fleet's bucket.
A failed fetch never drops keys we already have. The disk copy is written on a worker
thread (`asyncio.to_thread`), so its `fsync` never holds up this or another issuer.

After every change the refresher publishes a frozen `Published` to the issuer's slot;
that is all the check threads ever see of it.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from ext_authz.clock import Clock
from ext_authz.keys.bucket import refetch_rule
from ext_authz.keys.cache import CachedJwks, CacheEntryError, IssuerStore
from ext_authz.keys.disk import DiskCacheError, DiskKeyCache
from ext_authz.keys.events import RESULT_OK, KeyEvent, KeyOrigin
from ext_authz.keys.fetch import FetchError, JwksFetcher
from ext_authz.keys.jwks import JwksError, ParsedKeySet, parse_jwks_bytes
from ext_authz.keys.redis_url import display_cache_url
from ext_authz.keys.slot import Held, IssuerSlot, KeyView, Published
from ext_authz.keys.store import IssuerKeys, KeyStatus

log = logging.getLogger("ext_authz.keys")

BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0
REFRESH_AHEAD = 0.8  # refresh when this share of the TTL has passed
MIN_DELAY = 0.5  # between two attempts of one issuer, at least
REPLICA_POLL = 0.1  # how often to look for the key set a replica is fetching
RESULT_REPLICA = "replica"
RESULT_INTERNAL = "internal"

KeyEventHandler = Callable[[KeyEvent], None]


class Why(enum.Enum):
    STARTUP = "startup"
    SCHEDULED = "scheduled"
    REFETCH = "refetch"


def retry_delay(
    failures: int,
    base: float = BACKOFF_BASE,
    cap: float = BACKOFF_CAP,
    rng: random.Random | None = None,
) -> float:
    """Seconds before the next attempt after `failures` failures in a row: doubling from
    `base` up to `cap`, then a random point in the upper half (so replicas spread)."""
    ceiling = min(cap, base * 2.0 ** min(max(failures - 1, 0), 32))
    return (rng or _RNG).uniform(ceiling / 2, ceiling)


_RNG = random.Random()  # noqa: S311  (jitter, not secrets)


@dataclass(frozen=True, slots=True)
class RefreshOptions:
    clock: Clock
    backoff: tuple[float, float] = (BACKOFF_BASE, BACKOFF_CAP)
    tick: float | None = None  # bounds each sleep: for clocks that do not move alone
    on_event: KeyEventHandler | None = None


class IssuerRefresher:
    """Loop side of one remote issuer. Apart from the constructor and `load_disk` /
    `inherit` (called in `KeyManager.start` before the loop runs it), every method runs
    on the key manager's loop."""

    def __init__(
        self,
        slot: IssuerSlot,
        options: RefreshOptions,
        on_attempted: Callable[[], None],
    ) -> None:
        self.slot = slot
        self.policy = slot.policy
        self._options = options
        self._clock = options.clock
        self._on_attempted = on_attempted
        cache_dir = self.policy.keys.cache_dir
        self._disk = DiskKeyCache(cache_dir) if cache_dir is not None else None
        self.store: IssuerStore | None = None
        self.fetcher: JwksFetcher | None = None
        self._held: Held | None = None
        self._view = KeyView.without_keys(IssuerKeys(None, KeyStatus.PENDING))
        self._attempted = False
        self._inherited = False
        self._last_error: str | None = None
        self._last_result: str | None = None
        self._last_attempt_at: float | None = None
        self._failures = 0
        self._next_due: float | None = None  # monotonic
        self._fetching: asyncio.Task[bool] | None = None
        self._changed: asyncio.Event | None = None
        self._logged_status: KeyStatus | None = None
        self._failing = False
        self._notes: tuple[str, ...] = ()
        self._bad_entry: float | None = None
        self._disk_saved: float | None = None
        self._disk_failing = False
        self._disk_pending: CachedJwks | None = None
        self._disk_task: asyncio.Task[None] | None = None

    @property
    def disk(self) -> DiskKeyCache | None:
        return self._disk

    @property
    def disk_write(self) -> asyncio.Task[None] | None:
        """The disk write in progress, if any (a stop lets it finish)."""
        task = self._disk_task
        return task if task is not None and not task.done() else None

    # before the loop runs ---------------------------------------------------------------

    def inherit(self, previous: Published) -> None:
        """Take the keys and refresh schedule of the replaced manager's issuer."""
        held = previous.held
        assert held is not None
        self._held = held
        self._inherited = True
        self._attempted = True
        self._disk_saved = held.entry.fetched_at
        self._schedule_after_success(held.entry)
        self._rebuild()
        self._logged_status = self._view.at(self._clock.now()).status

    def load_disk(self) -> None:
        if self._disk is None:
            return
        try:
            entry = self._disk.load(self.slot.store_id)
        except DiskCacheError as exc:
            self._bad(KeyOrigin.DISK, -1.0, str(exc))
            return
        if entry is None:
            return
        if not self._usable(entry):
            log.info(
                "key set on disk not used: too old or of another issuer",
                extra={
                    "issuer": self.policy.name,
                    "path": str(self._disk.path(self.slot.store_id)),
                },
            )
            return
        parsed = self._parse_entry(entry, KeyOrigin.DISK)
        if parsed is not None:
            self._disk_saved = entry.fetched_at
            self._accept(entry, parsed, KeyOrigin.DISK)

    # on the loop -----------------------------------------------------------------------

    async def maintain(self, store: IssuerStore, fetcher: JwksFetcher) -> None:
        self.store, self.fetcher = store, fetcher
        self._changed = asyncio.Event()
        self._publish()
        if self._inherited:
            await self._sleep_until_due()
        while True:
            await self.single_flight(Why.SCHEDULED if self._attempted else Why.STARTUP)
            if not self._attempted:
                self._attempted = True
                self._rebuild()
                self._observe()
                self._publish()
                self._on_attempted()
            await self._sleep_until_due()

    async def single_flight(self, why: Why) -> bool:
        task = self._fetching
        if task is None or task.done():
            task = asyncio.create_task(self._refresh(why))
            self._fetching = task
        return await asyncio.shield(task)

    async def _sleep_until_due(self) -> None:
        changed = self._changed
        assert changed is not None
        while True:
            self._observe()
            if self._next_due is None:
                self._next_due = self._clock.monotonic() + MIN_DELAY
                self._publish()
            wait = self._next_due - self._clock.monotonic()
            if wait <= 0:
                return
            now = self._clock.now()
            for boundary in (self._view.fresh_until, self._view.expires_at):
                if boundary > now:  # wake up to log the status change when it happens
                    wait = min(wait, boundary - now + 0.001)
            if self._options.tick is not None:
                wait = min(wait, self._options.tick)
            changed.clear()
            try:
                async with asyncio.timeout(max(wait, 0.001)):
                    await changed.wait()
            except TimeoutError:
                pass

    async def _refresh(self, why: Why) -> bool:
        try:
            return await self._refresh_through_store(why)
        except Exception as exc:  # a bug must not kill the refresh loop
            log.exception("key refresh failed unexpectedly", extra={"issuer": self.policy.name})
            self._failed(RESULT_INTERNAL, f"unexpected {type(exc).__name__}")
            return False
        finally:
            self._publish()

    async def _refresh_through_store(self, why: Why) -> bool:
        store = self.store
        assert store is not None
        if not store.shared:
            return await self._from_network()
        if why is Why.REFETCH:
            # a replica may have fetched since: its key set costs the issuer nothing
            if await self._adopt_shared(fresh_only=False):
                return True
            if not await store.take_refetch(refetch_rule(self.policy.keys.refetch_cooldown)):
                return False  # the fleet's bucket is empty
        elif await self._adopt_shared(fresh_only=True):
            return True
        lease = self.policy.keys.fetch_timeout * 2 + 2
        lock = await store.lock(lease)
        if lock is None:
            return await self._follow_replica(lease)
        try:
            return await self._from_network()
        finally:
            await store.unlock(lock)

    async def _from_network(self) -> bool:
        store, fetcher = self.store, self.fetcher
        assert store is not None and fetcher is not None
        issuer = self.policy
        try:
            fetched = await fetcher.fetch(issuer)
        except FetchError as exc:
            self._failed(exc.kind.value, str(exc))
            if store.shared:  # a replica may still reach the issuer
                await self._adopt_shared(fresh_only=False)
            return False
        assert issuer.source.url is not None
        entry = CachedJwks(
            issuer=issuer.issuer,
            source=issuer.source.url,
            jwks=fetched.parsed.public_jwks_json(),
            fetched_at=self._clock.now(),
            ttl=fetched.ttl,
        )
        self._accept(entry, fetched.parsed, KeyOrigin.NETWORK)
        if store.shared:
            await store.save(entry, ttl=entry.ttl + issuer.keys.max_stale)
        return True

    async def _adopt_shared(self, *, fresh_only: bool) -> bool:
        """Take the key set in the shared cache if it is newer than ours (and, for a
        scheduled refresh, not itself due for one)."""
        assert self.store is not None
        try:
            entry = await self.store.load()
        except CacheEntryError as exc:
            self._bad(KeyOrigin.REDIS, -1.0, str(exc))
            return False
        if entry is None or not self._usable(entry):
            return False
        held = self._held
        if held is not None and (entry == held.entry or entry.fetched_at < held.entry.fetched_at):
            return False
        if fresh_only and self._clock.now() >= entry.refresh_at(REFRESH_AHEAD):
            return False
        parsed = self._parse_entry(entry, KeyOrigin.REDIS)
        if parsed is None:
            return False
        self._accept(entry, parsed, KeyOrigin.REDIS)
        return True

    async def _follow_replica(self, lease: float) -> bool:
        """Another replica holds the fetch lock: wait for the key set it publishes."""
        assert self.store is not None
        for _ in range(max(1, math.ceil(lease / REPLICA_POLL))):
            await asyncio.sleep(REPLICA_POLL)
            still_locked = await self.store.locked()
            if await self._adopt_shared(fresh_only=False):
                return True
            if not still_locked:
                break
        if await self._holding_the_shared_set():
            return False  # the replica found what we hold already: nothing failed
        self._failed(RESULT_REPLICA, "the replica fetching these keys got none")
        return False

    async def _holding_the_shared_set(self) -> bool:
        assert self.store is not None
        held = self._held
        if held is None:
            return False
        try:
            entry = await self.store.load()
        except CacheEntryError:
            return False
        return entry is not None and entry.fetched_at <= held.entry.fetched_at

    # state changes ---------------------------------------------------------------------

    def _usable(self, entry: CachedJwks) -> bool:
        return entry.belongs_to(self.policy) and self._clock.now() <= entry.expires_at(
            self.policy.keys.max_stale
        )

    def _parse_entry(self, entry: CachedJwks, source: KeyOrigin) -> ParsedKeySet | None:
        try:
            parsed = parse_jwks_bytes(entry.jwks.encode("utf-8"))
        except JwksError as exc:
            self._bad(source, entry.fetched_at, str(exc))
            return None
        if not parsed.keys.keys:
            self._bad(source, entry.fetched_at, "no usable signature key")
            return None
        return parsed

    def _bad(self, source: KeyOrigin, stamp: float, why: str) -> None:
        if self._bad_entry == stamp:
            return
        self._bad_entry = stamp
        log.warning(
            "cached key set ignored",
            extra={"issuer": self.policy.name, "source": source.value, "why": why},
        )
        self._emit("invalid_jwks", source, why)

    def _accept(self, entry: CachedJwks, parsed: ParsedKeySet, source: KeyOrigin) -> None:
        issuer = self.policy
        previous = self._held
        self._held = Held(parsed.keys, entry, source)
        self._bad_entry = None
        if source is not KeyOrigin.DISK:
            self._last_attempt_at = self._clock.now()
            self._last_result = RESULT_OK
            self._last_error = None
            if self._failing:
                log.info(
                    "key fetch recovered",
                    extra={"issuer": issuer.name, "after_failures": self._failures},
                )
            self._failing = False
            self._failures = 0
        self._schedule_after_success(entry)
        self._rebuild()
        kids = set(parsed.keys.kids())
        if previous is not None and set(previous.keys.kids()) != kids:
            old = set(previous.keys.kids())
            log.info(
                "key set changed",
                extra={
                    "issuer": issuer.name,
                    "added": sorted(kids - old),
                    "removed": sorted(old - kids),
                    "source": source.value,
                },
            )
        if parsed.skipped != self._notes:
            self._notes = parsed.skipped
            for note in parsed.skipped:
                log.warning("key skipped", extra={"issuer": issuer.name, "why": note})
        self._publish()
        if source is not KeyOrigin.DISK:
            self._queue_disk_save(entry)
        self._emit(RESULT_OK, source, None)
        self._observe()
        if self._changed is not None:
            self._changed.set()

    def _failed(self, result: str, error: str) -> None:
        self._last_attempt_at = self._clock.now()
        self._last_result = result
        self._last_error = error
        self._failures += 1
        self._next_due = self._clock.monotonic() + retry_delay(
            self._failures, *self._options.backoff
        )
        self._rebuild()
        self._publish()
        served = self._view.at(self._clock.now())
        fields = {
            "issuer": self.policy.name,
            "result": result,
            "error": error,
            "failures": self._failures,
            "serving_keys": len(served.keys) if served.keys is not None else 0,
        }
        if not self._failing:
            self._failing = True
            log.warning("key fetch failed; retrying with backoff", extra=fields)
        else:
            log.debug("key fetch failed again", extra=fields)
        source = KeyOrigin.REDIS if result == RESULT_REPLICA else KeyOrigin.NETWORK
        self._emit(result, source, error)
        self._observe()
        if self._changed is not None:
            self._changed.set()

    def _schedule_after_success(self, entry: CachedJwks) -> None:
        delay = entry.refresh_at(REFRESH_AHEAD) - self._clock.now()
        self._next_due = self._clock.monotonic() + max(delay, MIN_DELAY)

    def _rebuild(self) -> None:
        held, error = self._held, self._last_error
        if held is None:
            status = KeyStatus.FAILED if self._attempted else KeyStatus.PENDING
            self._view = KeyView.without_keys(IssuerKeys(None, status, last_error=error))
            return
        entry = held.entry
        expired = "keys stale beyond max_stale" + (f"; last error: {error}" if error else "")
        self._view = KeyView(
            fresh=IssuerKeys(held.keys, KeyStatus.FRESH, entry.fetched_at, error),
            stale=IssuerKeys(held.keys, KeyStatus.STALE, entry.fetched_at, error),
            gone=IssuerKeys(None, KeyStatus.FAILED, entry.fetched_at, expired),
            fresh_until=entry.fresh_until,
            expires_at=entry.expires_at(self.policy.keys.max_stale),
        )

    def _publish(self) -> None:
        store = self.store
        self.slot.publish(
            Published(
                view=self._view,
                held=self._held,
                attempted=self._attempted,
                last_attempt_at=self._last_attempt_at,
                last_result=self._last_result,
                last_error=self._last_error,
                failures=self._failures,
                next_due=self._next_due,
                cache=(
                    store.cache.describe()
                    if store is not None
                    else display_cache_url(self.policy.keys.cache)
                ),
            )
        )

    def _observe(self) -> None:
        """Log a status change once, when it happens (not on every retry)."""
        snapshot = self._view.at(self._clock.now())
        status = snapshot.status
        if status is self._logged_status or status is KeyStatus.PENDING:
            return
        previous, self._logged_status = self._logged_status, status
        held = self._held
        fields: dict[str, object] = {
            "issuer": self.policy.name,
            "status": status.value,
            "previous": previous.value if previous is not None else None,
        }
        if status is KeyStatus.FRESH and held is not None:
            log.info(
                "keys fresh",
                extra={**fields, "kids": held.keys.kids(), "source": held.source.value},
            )
        elif status is KeyStatus.STALE:
            log.warning(
                "keys stale; serving the last good keys",
                extra={**fields, "until": _iso(self._view.expires_at), "error": self._last_error},
            )
        else:
            log.error(
                "keys unavailable: tokens of this issuer are refused with 503",
                extra={**fields, "error": snapshot.last_error},
            )

    def _queue_disk_save(self, entry: CachedJwks) -> None:
        if self._disk is None or self._disk_saved == entry.fetched_at:
            return
        self._disk_pending = entry
        if self._disk_task is None or self._disk_task.done():
            self._disk_task = asyncio.create_task(self._write_disk(self._disk))

    async def _write_disk(self, disk: DiskKeyCache) -> None:
        """Write the latest accepted entry on a worker thread, one write at a time."""
        while self._disk_pending is not None:
            entry, self._disk_pending = self._disk_pending, None
            try:
                path = await asyncio.to_thread(disk.save, self.slot.store_id, entry)
            except OSError as exc:
                if not self._disk_failing:
                    self._disk_failing = True
                    log.warning(
                        "cannot write the key cache file",
                        extra={"issuer": self.policy.name, "error": str(exc)},
                    )
                continue
            self._disk_saved = entry.fetched_at
            if self._disk_failing:
                self._disk_failing = False
                log.info("key cache file written again", extra={"path": str(path)})

    def _emit(self, result: str, source: KeyOrigin, error: str | None) -> None:
        handler = self._options.on_event
        if handler is None:
            return
        served = self._view.at(self._clock.now())
        event = KeyEvent(
            issuer=self.policy.name,
            result=result,
            keys=len(served.keys) if served.keys is not None else 0,
            source=source,
            status=served.status,
            error=error,
        )
        try:
            handler(event)
        except Exception:
            log.exception("key event observer failed", extra={"issuer": self.policy.name})


def _iso(when: float) -> str:
    if not math.isfinite(when):
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
