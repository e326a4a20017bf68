"""Keep every issuer's keys current, from a background asyncio loop on its own thread.

The pieces, by the thread they run on:

- check threads read each issuer's `IssuerSlot` (`slot.py`): a frozen snapshot that
  the loop replaces in one assignment, so a check is a dict lookup and a time
  comparison. The only thing a check may ask for is a refetch on an unknown `kid`,
  through the `RefetchGate` (a token bucket per issuer, single flight, a cap on
  waiting checks);
- the loop runs one `IssuerRefresher` per remote issuer (`refresher.py`): schedule,
  backoff, single flight, the shared store (`cache.py`) and the disk copy (`disk.py`,
  written on a worker thread);
- `KeyManager` wires them and owns the loop's life: `start`, `stop`, and the
  inheritance of keys across a policy reload.

At start-up the last good key set from `keys.cache_dir` (if any) is loaded, then each
issuer is fetched. `stop` first closes the gate (under its lock), so a check still
running on a replaced policy gets an immediate answer from the keys it holds instead
of an error or a wait on a loop that is going away.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Mapping

from ext_authz.clock import Clock, SystemClock
from ext_authz.keys.cache import IssuerStore, KeyCache, store_id
from ext_authz.keys.events import IssuerReport, KeyOrigin
from ext_authz.keys.fetch import HttpJwksFetcher, JwksFetcher
from ext_authz.keys.refresher import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    IssuerRefresher,
    KeyEventHandler,
    RefreshOptions,
    Why,
    retry_delay,
)
from ext_authz.keys.slot import IssuerSlot, Published, RefetchGate
from ext_authz.keys.store import IssuerKeys, KeyStatus
from ext_authz.policy.model import IssuerPolicy

__all__ = ["KeyManager", "retry_delay"]

DISK_WRITE_GRACE = 2.0  # seconds a stop waits for a key set being written to disk
_NOT_CONFIGURED = IssuerKeys(None, KeyStatus.FAILED, last_error="issuer not configured")


class _KeyLoop:
    """The manager's asyncio loop and the thread that runs it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="ext-authz-keys", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        self.loop.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


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
        self._options = RefreshOptions(
            clock=self._clock, backoff=(backoff_base, backoff_cap), tick=tick, on_event=on_event
        )
        self._cache_options = (cache_timeout, cache_retry)
        self._gate = RefetchGate(self._clock, max_refetch_waiters)
        self._slots: dict[str, IssuerSlot] = {}
        self._refreshers: dict[str, IssuerRefresher] = {}
        self._static: dict[str, IssuerKeys] = {}
        self._static_iss: dict[str, str] = {}
        self._caches: dict[str, KeyCache] = {}
        self._loop = _KeyLoop()
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = threading.Event()
        self._attempted = threading.Event()
        self._started = False

    # lifecycle ---------------------------------------------------------------------

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
            slot = IssuerSlot(name, issuer, store_id(issuer))
            refresher = IssuerRefresher(slot, self._options, self._check_ready)
            self._slots[name] = slot
            self._refreshers[name] = refresher
            previous = inherit._published_for(slot.store_id) if inherit is not None else None
            if previous is not None:
                refresher.inherit(previous)
            else:
                refresher.load_disk()
        self._loop.start()
        self._started = True
        asyncio.run_coroutine_threadsafe(self._start_tasks(), self._loop.loop).result()
        self._check_ready()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """True once every remote issuer has keys or has had its first fetch."""
        return self._ready.wait(timeout)

    def wait_attempted(self, timeout: float | None = None) -> bool:
        """True once every remote issuer's start-up fetch has finished (well or not)."""
        return self._attempted.wait(timeout)

    def stop(self) -> None:
        """Stop fetching. Checks still holding this manager keep reading its last
        snapshots; their refetches are answered at once (no new keys)."""
        if not self._started:
            return
        self._gate.close()  # before the loop stops: no refetch is started after this
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop.loop)
        with contextlib.suppress(concurrent.futures.TimeoutError):
            future.result(timeout=10)
        self._loop.stop()
        self._started = False
        self._ready.set()
        self._attempted.set()

    async def _start_tasks(self) -> None:
        if self._fetcher is None:
            self._fetcher = HttpJwksFetcher(clock=self._clock)
        timeout, retry = self._cache_options
        for refresher in self._refreshers.values():
            setting = refresher.policy.keys.cache
            cache = self._caches.get(setting)
            if cache is None:
                cache = KeyCache(setting, self._clock, op_timeout=timeout, retry_after=retry)
                self._caches[setting] = cache
            store = IssuerStore(cache, refresher.policy)
            self._tasks.append(asyncio.create_task(refresher.maintain(store, self._fetcher)))

    async def _shutdown(self) -> None:
        writes = [w for r in self._refreshers.values() if (w := r.disk_write) is not None]
        if writes:  # a key set being written to disk is kept for the next start
            await asyncio.wait(writes, timeout=DISK_WRITE_GRACE)
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._fetcher is not None:
            await self._fetcher.aclose()
        for cache in self._caches.values():
            await cache.close()

    def _published_for(self, store_id: str) -> Published | None:
        for slot in self._slots.values():
            published = slot.published
            if slot.store_id == store_id and published.held is not None:
                return published
        return None

    def _check_ready(self) -> None:
        states = [slot.published for slot in self._slots.values()]
        if all(s.held is not None or s.attempted for s in states):
            self._ready.set()
        if all(s.attempted for s in states):
            self._attempted.set()

    # check threads -------------------------------------------------------------------

    def current(self, issuer: str) -> IssuerKeys:
        slot = self._slots.get(issuer)
        if slot is not None:
            return slot.current(self._clock.now())
        return self._static.get(issuer, _NOT_CONFIGURED)

    def refetch(self, issuer: str) -> IssuerKeys | None:
        slot = self._slots.get(issuer)
        if slot is None or not self._started:
            return None
        refresher = self._refreshers[issuer]
        loop = self._loop.loop

        def start() -> concurrent.futures.Future[bool]:
            return asyncio.run_coroutine_threadsafe(refresher.single_flight(Why.REFETCH), loop)

        future = self._gate.enter(slot, start)
        if future is None:
            return None
        try:
            with contextlib.suppress(
                concurrent.futures.TimeoutError, concurrent.futures.CancelledError
            ):
                future.result(timeout=slot.policy.keys.fetch_timeout * 2 + 1)
        finally:
            self._gate.leave()
        return slot.current(self._clock.now())

    @property
    def refetch_waiters(self) -> int:
        """Check threads waiting on a refetch now."""
        return self._gate.waiters

    def statuses(self) -> dict[str, IssuerKeys]:
        names = list(self._static) + list(self._slots)
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
        for name, slot in self._slots.items():
            state = slot.published  # one read: a consistent picture
            held, view = state.held, state.view
            disk = self._refreshers[name].disk
            out[name] = IssuerReport(
                name=name,
                issuer=slot.policy.issuer,
                status=view.at(now).status,
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
                cache=state.cache,
                cache_dir=str(disk.directory) if disk is not None else None,
            )
        return out
