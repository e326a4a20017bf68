"""Keep every issuer's keys current from a background asyncio loop.

The gRPC worker threads read immutable `IssuerKeys` snapshots (a dict lookup and a
time comparison); this loop, on its own thread, does all fetching and cache I/O:

- at start-up, the last good key set from `keys.cache_dir` (if any), then a fetch;
- a refresh when 80% of the TTL has passed;
- after a failure, retries with capped exponential backoff and jitter, serving the
  last good keys until their TTL plus `max_stale` has passed;
- the refetch when a token names a key we do not hold: one fetch shared by every
  waiting request (single flight), at most once per `refetch_cooldown`.

Every fetch goes through the issuer's store (`cache.py`): with Redis, a replica first
looks for a key set another replica fetched, and takes a short lock before fetching so
that one replica's fetch serves all. A failed fetch never drops keys we already have.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ext_authz.clock import Clock, SystemClock
from ext_authz.keys.cache import CachedJwks, CacheEntryError, IssuerStore, KeyCache, store_id
from ext_authz.keys.disk import DiskCacheError, DiskKeyCache
from ext_authz.keys.events import RESULT_OK, IssuerReport, KeyEvent, KeyOrigin
from ext_authz.keys.fetch import FetchError, HttpJwksFetcher, JwksFetcher
from ext_authz.keys.jwks import JwksError, KeySet, ParsedKeySet, parse_jwks_bytes
from ext_authz.keys.redis_url import display_cache_url
from ext_authz.keys.store import IssuerKeys, KeyStatus
from ext_authz.policy.model import IssuerPolicy

log = logging.getLogger("ext_authz.keys")

BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0
REFRESH_AHEAD = 0.8  # refresh when this share of the TTL has passed
MIN_DELAY = 0.5  # between two attempts of one issuer, at least
REPLICA_POLL = 0.1  # how often to look for the key set a replica is fetching
RESULT_REPLICA = "replica"
RESULT_INTERNAL = "internal"

KeyEventHandler = Callable[[KeyEvent], None]
_NOT_CONFIGURED = IssuerKeys(None, KeyStatus.FAILED, last_error="issuer not configured")


class _Why(enum.Enum):
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
class _View:
    """What the request path reads: the answers for each phase of a key set's life,
    made once per change, and the times between them."""

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
    def without_keys(cls, keys: IssuerKeys) -> _View:
        return cls(keys, keys, keys, -math.inf, -math.inf)


@dataclass(frozen=True, slots=True)
class _Held:
    keys: KeySet
    entry: CachedJwks
    source: KeyOrigin


@dataclass(eq=False)
class _IssuerState:
    policy: IssuerPolicy
    id: str
    disk: DiskKeyCache | None
    view: _View
    store: IssuerStore | None = None
    held: _Held | None = None
    attempted: bool = False  # the start-up fetch finished, well or not
    last_error: str | None = None
    last_result: str | None = None
    last_attempt_at: float | None = None
    failures: int = 0
    next_due: float | None = None  # monotonic
    inherited: bool = False
    # loop side
    fetching: asyncio.Task[bool] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    logged_status: KeyStatus | None = None
    failing: bool = False
    notes: tuple[str, ...] = ()
    bad_entry: float | None = None
    disk_saved: float | None = None
    disk_failing: bool = False
    # request-thread side (under KeyManager._lock)
    refetch_future: concurrent.futures.Future[bool] | None = None
    last_refetch: float | None = None  # monotonic


class KeyManager:
    """A `KeyProvider` that fetches remote key sets and serves static ones.

    `on_event` is called (on the key thread) with a `KeyEvent` for every fetch result,
    including key sets taken from the shared cache or the disk; it must not block.
    `tick` bounds each sleep of the refresh loop: only useful with a clock that does not
    move by itself (tests). `max_refetch_waiters` caps how many request threads may wait
    on refetches at once (the server keeps one check thread free for other tokens).
    """

    def __init__(
        self,
        fetcher: JwksFetcher | None = None,
        clock: Clock | None = None,
        *,
        on_event: KeyEventHandler | None = None,
        tick: float | None = None,
        backoff_base: float = BACKOFF_BASE,
        backoff_cap: float = BACKOFF_CAP,
        cache_timeout: float = 1.0,
        cache_retry: float = 15.0,
        max_refetch_waiters: int | None = None,
    ) -> None:
        self._fetcher = fetcher
        self._clock = clock or SystemClock()
        self._on_event = on_event
        self._tick = tick
        self._max_waiters = max_refetch_waiters
        self._waiters = 0
        self._backoff = (backoff_base, backoff_cap)
        self._cache_options = (cache_timeout, cache_retry)
        self._caches: dict[str, KeyCache] = {}
        self._states: dict[str, _IssuerState] = {}
        self._static: dict[str, IssuerKeys] = {}
        self._static_iss: dict[str, str] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="ext-authz-keys", daemon=True)
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = threading.Event()
        self._attempted = threading.Event()
        self._started = False

    # lifecycle ---------------------------------------------------------------

    def start(
        self, issuers: Mapping[str, IssuerPolicy], *, inherit: KeyManager | None = None
    ) -> None:
        """Load what is on disk, then start fetching. With `inherit` (the manager of the
        policy being replaced), issuers whose key source is unchanged keep their keys
        and their refresh schedule instead of starting over."""
        for name, issuer in issuers.items():
            if not issuer.source.is_remote:
                self._static[name] = IssuerKeys(issuer.source.static_keys, KeyStatus.STATIC)
                self._static_iss[name] = issuer.issuer
                continue
            cache_dir = issuer.keys.cache_dir
            state = _IssuerState(
                policy=issuer,
                id=store_id(issuer),
                disk=DiskKeyCache(cache_dir) if cache_dir is not None else None,
                view=_View.without_keys(IssuerKeys(None, KeyStatus.PENDING)),
            )
            self._states[name] = state
            if inherit is None or not self._inherit(state, inherit):
                self._load_disk(state)
        self._thread.start()
        self._started = True
        asyncio.run_coroutine_threadsafe(self._start_tasks(), self._loop).result()
        self._check_ready()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """True once every remote issuer has keys or has had its first fetch."""
        return self._ready.wait(timeout)

    def wait_attempted(self, timeout: float | None = None) -> bool:
        """True once every remote issuer's start-up fetch has finished (well or not)."""
        return self._attempted.wait(timeout)

    def stop(self) -> None:
        if not self._started:
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        with contextlib.suppress(concurrent.futures.TimeoutError):
            future.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._started = False
        self._ready.set()
        self._attempted.set()

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()
        self._loop.close()

    async def _start_tasks(self) -> None:
        if self._fetcher is None:
            self._fetcher = HttpJwksFetcher(clock=self._clock)
        timeout, retry = self._cache_options
        for state in self._states.values():
            setting = state.policy.keys.cache
            cache = self._caches.get(setting)
            if cache is None:
                cache = KeyCache(setting, self._clock, op_timeout=timeout, retry_after=retry)
                self._caches[setting] = cache
            state.store = IssuerStore(cache, state.policy)
            state.changed = asyncio.Event()
            self._tasks.append(asyncio.create_task(self._maintain(state)))

    async def _shutdown(self) -> None:
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._fetcher is not None:
            await self._fetcher.aclose()
        for cache in self._caches.values():
            await cache.close()

    # the request path's view ---------------------------------------------------

    def current(self, issuer: str) -> IssuerKeys:
        state = self._states.get(issuer)
        if state is not None:
            return state.view.at(self._clock.now())
        return self._static.get(issuer, _NOT_CONFIGURED)

    def refetch(self, issuer: str) -> IssuerKeys | None:
        state = self._states.get(issuer)
        if state is None or not self._started:
            return None
        with self._lock:
            future = state.refetch_future
            if future is None or future.done():
                now = self._clock.monotonic()
                cooldown = state.policy.keys.refetch_cooldown
                if state.last_refetch is not None and now - state.last_refetch < cooldown:
                    return None
                state.last_refetch = now
                future = asyncio.run_coroutine_threadsafe(
                    self._single_flight(state, _Why.REFETCH), self._loop
                )
                state.refetch_future = future
            if self._max_waiters is not None and self._waiters >= self._max_waiters:
                # every other check thread is already waiting: answer now (unknown key)
                # rather than let unknown kids take the last thread from good tokens
                return None
            self._waiters += 1
        try:
            with contextlib.suppress(
                concurrent.futures.TimeoutError, concurrent.futures.CancelledError
            ):
                future.result(timeout=state.policy.keys.fetch_timeout * 2 + 1)
        finally:
            with self._lock:
                self._waiters -= 1
        return self.current(issuer)

    def statuses(self) -> dict[str, IssuerKeys]:
        names = list(self._static) + list(self._states)
        return {name: self.current(name) for name in names}

    def report(self) -> dict[str, IssuerReport]:
        """Every issuer's key state, for status output and probes."""
        now, mono = self._clock.now(), self._clock.monotonic()
        out: dict[str, IssuerReport] = {}
        for name, static in self._static.items():
            kids = tuple(static.keys.kids()) if static.keys is not None else ()
            out[name] = IssuerReport(
                name=name,
                issuer=self._static_iss[name],
                status=KeyStatus.STATIC,
                kids=kids,
                source=KeyOrigin.STATIC,
                fetched_at=None,
                fresh_until=None,
                expires_at=None,
                last_attempt_at=None,
                last_result=None,
                last_error=None,
                failures=0,
                next_refresh_at=None,
                cache="static",
            )
        for name, state in self._states.items():
            held, view = state.held, state.view
            snapshot = view.at(now)
            store = state.store
            out[name] = IssuerReport(
                name=name,
                issuer=state.policy.issuer,
                status=snapshot.status,
                kids=tuple(held.keys.kids()) if held is not None else (),
                source=held.source if held is not None else None,
                fetched_at=held.entry.fetched_at if held is not None else None,
                fresh_until=view.fresh_until if held is not None else None,
                expires_at=view.expires_at if held is not None else None,
                last_attempt_at=state.last_attempt_at,
                last_result=state.last_result,
                last_error=state.last_error,
                failures=state.failures,
                next_refresh_at=(
                    now + (state.next_due - mono) if state.next_due is not None else None
                ),
                cache=store.cache.describe() if store is not None else _cache_name(state),
                cache_dir=str(state.disk.directory) if state.disk is not None else None,
            )
        return out

    # the background loop ---------------------------------------------------------

    async def _maintain(self, state: _IssuerState) -> None:
        if state.inherited:
            await self._sleep_until_due(state)
        while True:
            why = _Why.SCHEDULED if state.attempted else _Why.STARTUP
            await self._single_flight(state, why)
            if not state.attempted:
                state.attempted = True
                self._rebuild(state)
                self._observe(state)
                self._check_ready()
            await self._sleep_until_due(state)

    async def _sleep_until_due(self, state: _IssuerState) -> None:
        while True:
            self._observe(state)
            if state.next_due is None:
                state.next_due = self._clock.monotonic() + MIN_DELAY
            wait = state.next_due - self._clock.monotonic()
            if wait <= 0:
                return
            now = self._clock.now()
            for boundary in (state.view.fresh_until, state.view.expires_at):
                if boundary > now:  # wake up to log the status change when it happens
                    wait = min(wait, boundary - now + 0.001)
            if self._tick is not None:
                wait = min(wait, self._tick)
            state.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.changed.wait(), max(wait, 0.001))

    async def _single_flight(self, state: _IssuerState, why: _Why) -> bool:
        task = state.fetching
        if task is None or task.done():
            task = asyncio.create_task(self._refresh(state, why))
            state.fetching = task
        return await asyncio.shield(task)

    async def _refresh(self, state: _IssuerState, why: _Why) -> bool:
        try:
            return await self._refresh_through_store(state, why)
        except Exception as exc:  # a bug must not kill the refresh loop
            log.exception("key refresh failed unexpectedly", extra={"issuer": state.policy.name})
            self._failed(state, RESULT_INTERNAL, f"unexpected {type(exc).__name__}")
            return False

    async def _refresh_through_store(self, state: _IssuerState, why: _Why) -> bool:
        store = state.store
        assert store is not None
        if not store.shared:
            return await self._from_network(state)
        if why is _Why.REFETCH:
            if not await store.claim_refetch(state.policy.keys.refetch_cooldown):
                # a replica refetched within the cooldown: take what it found, if newer
                return await self._adopt_shared(state, fresh_only=False)
        elif await self._adopt_shared(state, fresh_only=True):
            return True
        lease = state.policy.keys.fetch_timeout * 2 + 2
        token = await store.lock(lease)
        if token is None:
            return await self._follow_replica(state, lease)
        try:
            return await self._from_network(state)
        finally:
            await store.unlock(token)

    async def _from_network(self, state: _IssuerState) -> bool:
        assert self._fetcher is not None and state.store is not None
        issuer = state.policy
        try:
            fetched = await self._fetcher.fetch(issuer)
        except FetchError as exc:
            self._failed(state, exc.kind.value, str(exc))
            if state.store.shared:  # a replica may still reach the issuer
                await self._adopt_shared(state, fresh_only=False)
            return False
        assert issuer.source.url is not None
        entry = CachedJwks(
            issuer=issuer.issuer,
            source=issuer.source.url,
            jwks=fetched.parsed.public_jwks_json(),
            fetched_at=self._clock.now(),
            ttl=fetched.ttl,
        )
        self._accept(state, entry, fetched.parsed, KeyOrigin.NETWORK)
        await state.store.save(entry, ttl=entry.ttl + issuer.keys.max_stale)
        return True

    async def _adopt_shared(self, state: _IssuerState, *, fresh_only: bool) -> bool:
        """Take the key set in the shared cache if it is newer than ours (and, for a
        scheduled refresh, not itself due for one)."""
        assert state.store is not None
        try:
            entry = await state.store.load()
        except CacheEntryError as exc:
            self._bad_entry(state, KeyOrigin.REDIS, -1.0, str(exc))
            return False
        if entry is None or not self._usable(state, entry):
            return False
        held = state.held
        if held is not None and (entry == held.entry or entry.fetched_at < held.entry.fetched_at):
            return False
        if fresh_only and self._clock.now() >= entry.refresh_at(REFRESH_AHEAD):
            return False
        parsed = self._parse_entry(state, entry, KeyOrigin.REDIS)
        if parsed is None:
            return False
        self._accept(state, entry, parsed, KeyOrigin.REDIS)
        return True

    async def _follow_replica(self, state: _IssuerState, lease: float) -> bool:
        """Another replica holds the fetch lock: wait for the key set it publishes."""
        assert state.store is not None
        for _ in range(max(1, math.ceil(lease / REPLICA_POLL))):
            await asyncio.sleep(REPLICA_POLL)
            still_locked = await state.store.locked()
            if await self._adopt_shared(state, fresh_only=False):
                return True
            if not still_locked:
                break
        self._failed(state, RESULT_REPLICA, "the replica fetching these keys got none")
        return False

    # state changes (all on the key thread, or in start() before it runs) --------------

    def _usable(self, state: _IssuerState, entry: CachedJwks) -> bool:
        issuer = state.policy
        return entry.belongs_to(issuer) and self._clock.now() <= entry.expires_at(
            issuer.keys.max_stale
        )

    def _parse_entry(
        self, state: _IssuerState, entry: CachedJwks, source: KeyOrigin
    ) -> ParsedKeySet | None:
        try:
            parsed = parse_jwks_bytes(entry.jwks.encode("utf-8"))
        except JwksError as exc:
            self._bad_entry(state, source, entry.fetched_at, str(exc))
            return None
        if not parsed.keys.keys:
            self._bad_entry(state, source, entry.fetched_at, "no usable signature key")
            return None
        return parsed

    def _bad_entry(self, state: _IssuerState, source: KeyOrigin, stamp: float, why: str) -> None:
        if state.bad_entry == stamp:
            return
        state.bad_entry = stamp
        log.warning(
            "cached key set ignored",
            extra={"issuer": state.policy.name, "source": source.value, "why": why},
        )
        self._emit(state, "invalid_jwks", source, why)

    def _inherit(self, state: _IssuerState, previous: KeyManager) -> bool:
        for old in previous._states.values():
            held = old.held
            if old.id != state.id or held is None:
                continue
            state.held = held
            state.inherited = True
            state.attempted = True
            state.disk_saved = old.disk_saved
            self._schedule_after_success(state, held.entry)
            self._rebuild(state)
            state.logged_status = state.view.at(self._clock.now()).status
            return True
        return False

    def _load_disk(self, state: _IssuerState) -> None:
        if state.disk is None:
            return
        try:
            entry = state.disk.load(state.id)
        except DiskCacheError as exc:
            self._bad_entry(state, KeyOrigin.DISK, -1.0, str(exc))
            return
        if entry is None:
            return
        if not self._usable(state, entry):
            log.info(
                "key set on disk not used: too old or of another issuer",
                extra={"issuer": state.policy.name, "path": str(state.disk.path(state.id))},
            )
            return
        parsed = self._parse_entry(state, entry, KeyOrigin.DISK)
        if parsed is not None:
            state.disk_saved = entry.fetched_at
            self._accept(state, entry, parsed, KeyOrigin.DISK)

    def _accept(
        self, state: _IssuerState, entry: CachedJwks, parsed: ParsedKeySet, source: KeyOrigin
    ) -> None:
        issuer = state.policy
        previous = state.held
        state.held = _Held(parsed.keys, entry, source)
        state.bad_entry = None
        if source is not KeyOrigin.DISK:
            state.last_attempt_at = self._clock.now()
            state.last_result = RESULT_OK
            state.last_error = None
            if state.failing:
                log.info(
                    "key fetch recovered",
                    extra={"issuer": issuer.name, "after_failures": state.failures},
                )
            state.failing = False
            state.failures = 0
        self._schedule_after_success(state, entry)
        self._rebuild(state)
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
        if parsed.skipped != state.notes:
            state.notes = parsed.skipped
            for note in parsed.skipped:
                log.warning("key skipped", extra={"issuer": issuer.name, "why": note})
        if source is not KeyOrigin.DISK:
            self._save_disk(state, entry)
        self._emit(state, RESULT_OK, source, None)
        self._observe(state)
        state.changed.set()

    def _failed(self, state: _IssuerState, result: str, error: str) -> None:
        issuer = state.policy
        state.last_attempt_at = self._clock.now()
        state.last_result = result
        state.last_error = error
        state.failures += 1
        state.next_due = self._clock.monotonic() + retry_delay(state.failures, *self._backoff)
        self._rebuild(state)
        served = state.view.at(self._clock.now())
        fields = {
            "issuer": issuer.name,
            "result": result,
            "error": error,
            "failures": state.failures,
            "serving_keys": len(served.keys) if served.keys is not None else 0,
        }
        if not state.failing:
            state.failing = True
            log.warning("key fetch failed; retrying with backoff", extra=fields)
        else:
            log.debug("key fetch failed again", extra=fields)
        source = KeyOrigin.REDIS if result == RESULT_REPLICA else KeyOrigin.NETWORK
        self._emit(state, result, source, error)
        self._observe(state)
        state.changed.set()

    def _schedule_after_success(self, state: _IssuerState, entry: CachedJwks) -> None:
        delay = entry.refresh_at(REFRESH_AHEAD) - self._clock.now()
        state.next_due = self._clock.monotonic() + max(delay, MIN_DELAY)

    def _rebuild(self, state: _IssuerState) -> None:
        held = state.held
        error = state.last_error
        if held is None:
            status = KeyStatus.FAILED if state.attempted else KeyStatus.PENDING
            state.view = _View.without_keys(IssuerKeys(None, status, last_error=error))
            return
        entry = held.entry
        expired = "keys stale beyond max_stale" + (f"; last error: {error}" if error else "")
        state.view = _View(
            fresh=IssuerKeys(held.keys, KeyStatus.FRESH, entry.fetched_at, error),
            stale=IssuerKeys(held.keys, KeyStatus.STALE, entry.fetched_at, error),
            gone=IssuerKeys(None, KeyStatus.FAILED, entry.fetched_at, expired),
            fresh_until=entry.fresh_until,
            expires_at=entry.expires_at(state.policy.keys.max_stale),
        )

    def _observe(self, state: _IssuerState) -> None:
        """Log a status change once, when it happens (not on every retry)."""
        snapshot = state.view.at(self._clock.now())
        status = snapshot.status
        if status is state.logged_status or status is KeyStatus.PENDING:
            return
        previous, state.logged_status = state.logged_status, status
        held = state.held
        fields: dict[str, object] = {
            "issuer": state.policy.name,
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
                extra={
                    **fields,
                    "until": _iso(state.view.expires_at),
                    "error": state.last_error,
                },
            )
        else:
            log.error(
                "keys unavailable: tokens of this issuer are refused with 503",
                extra={**fields, "error": snapshot.last_error},
            )

    def _save_disk(self, state: _IssuerState, entry: CachedJwks) -> None:
        disk = state.disk
        if disk is None or state.disk_saved == entry.fetched_at:
            return
        try:
            path = disk.save(state.id, entry)
        except OSError as exc:
            if not state.disk_failing:
                state.disk_failing = True
                log.warning(
                    "cannot write the key cache file",
                    extra={"issuer": state.policy.name, "error": str(exc)},
                )
            return
        state.disk_saved = entry.fetched_at
        if state.disk_failing:
            state.disk_failing = False
            log.info("key cache file written again", extra={"path": str(path)})

    def _emit(self, state: _IssuerState, result: str, source: KeyOrigin, error: str | None) -> None:
        if self._on_event is None:
            return
        served = state.view.at(self._clock.now())
        event = KeyEvent(
            issuer=state.policy.name,
            result=result,
            keys=len(served.keys) if served.keys is not None else 0,
            source=source,
            status=served.status,
            error=error,
        )
        try:
            self._on_event(event)
        except Exception:
            log.exception("key event observer failed", extra={"issuer": state.policy.name})

    def _check_ready(self) -> None:
        states = list(self._states.values())
        if all(s.held is not None or s.attempted for s in states):
            self._ready.set()
        if all(s.attempted for s in states):
            self._attempted.set()


def _cache_name(state: _IssuerState) -> str:
    return display_cache_url(state.policy.keys.cache)


def _iso(when: float) -> str:
    if not math.isfinite(when):
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
