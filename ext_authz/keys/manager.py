"""Keep every issuer's keys current from a background asyncio loop.

The gRPC worker threads read immutable `IssuerKeys` snapshots (a dict lookup);
this loop, on its own thread, does all fetching: the first fetch at start-up, a
refresh before the TTL runs out, retries with capped exponential backoff and
jitter after a failure, and the rate-limited refetch when a token names a key we
do not hold. A failed fetch never drops keys we already have.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from ext_authz.clock import Clock, SystemClock
from ext_authz.keys.fetch import FetchError, HttpJwksFetcher, JwksFetcher
from ext_authz.keys.jwks import KeySet
from ext_authz.keys.store import IssuerKeys, KeyStatus
from ext_authz.policy.model import IssuerPolicy

log = logging.getLogger("ext_authz.keys")

BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0
REFRESH_AHEAD = 0.8  # refresh when this share of the TTL has passed


@dataclass(slots=True)
class _IssuerState:
    issuer: IssuerPolicy
    keys: KeySet | None = None
    fetched_at: float | None = None  # wall clock
    fresh_until: float | None = None  # wall clock
    last_error: str | None = None
    first_attempt_done: bool = False
    last_refetch: float | None = None  # monotonic
    inflight: concurrent.futures.Future[bool] | None = None
    reported: KeyStatus | None = None


class KeyManager:
    """A `KeyProvider` that fetches remote key sets and serves static ones."""

    def __init__(self, fetcher: JwksFetcher | None = None, clock: Clock | None = None) -> None:
        self._fetcher = fetcher
        self._clock = clock or SystemClock()
        self._states: dict[str, _IssuerState] = {}
        self._static: dict[str, IssuerKeys] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="ext-authz-keys", daemon=True)
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = threading.Event()
        self._started = False

    # lifecycle ---------------------------------------------------------------

    def start(self, issuers: Mapping[str, IssuerPolicy]) -> None:
        for name, issuer in issuers.items():
            if issuer.source.is_remote:
                self._states[name] = _IssuerState(issuer)
            else:
                self._static[name] = IssuerKeys(issuer.source.static_keys, KeyStatus.STATIC)
        self._thread.start()
        self._started = True
        asyncio.run_coroutine_threadsafe(self._start_tasks(), self._loop).result()
        if not self._states:
            self._ready.set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """True once every remote issuer has had its first fetch (good or failed)."""
        return self._ready.wait(timeout)

    def stop(self) -> None:
        if not self._started:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._started = False

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()
        self._loop.close()

    async def _start_tasks(self) -> None:
        if self._fetcher is None:
            self._fetcher = HttpJwksFetcher()
        for state in self._states.values():
            self._tasks.append(asyncio.create_task(self._maintain(state)))

    async def _shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._fetcher is not None:
            await self._fetcher.aclose()

    # the request path's view ---------------------------------------------------

    def current(self, issuer: str) -> IssuerKeys:
        static = self._static.get(issuer)
        if static is not None:
            return static
        state = self._states.get(issuer)
        if state is None:
            return IssuerKeys(None, KeyStatus.FAILED, last_error="issuer not configured")
        return self._snapshot(state)

    def _snapshot(self, state: _IssuerState) -> IssuerKeys:
        if state.keys is None or state.fetched_at is None:
            status = KeyStatus.FAILED if state.first_attempt_done else KeyStatus.PENDING
            return IssuerKeys(None, status, last_error=state.last_error)
        now = self._clock.now()
        if now - state.fetched_at > state.issuer.keys.max_stale:
            return IssuerKeys(None, KeyStatus.FAILED, state.fetched_at, "keys older than max_stale")
        fresh = state.fresh_until is not None and now <= state.fresh_until
        status = KeyStatus.FRESH if fresh else KeyStatus.STALE
        return IssuerKeys(state.keys, status, state.fetched_at, state.last_error)

    def refetch(self, issuer: str) -> IssuerKeys | None:
        state = self._states.get(issuer)
        if state is None:
            return None
        with self._lock:
            future = state.inflight
            if future is None or future.done():
                now = self._clock.monotonic()
                cooldown = state.issuer.keys.refetch_cooldown
                if state.last_refetch is not None and now - state.last_refetch < cooldown:
                    return None
                state.last_refetch = now
                future = asyncio.run_coroutine_threadsafe(self._fetch(state), self._loop)
                state.inflight = future
        with contextlib.suppress(
            concurrent.futures.TimeoutError, concurrent.futures.CancelledError
        ):
            future.result(timeout=state.issuer.keys.fetch_timeout * 2 + 1)
        return self._snapshot(state)

    def statuses(self) -> dict[str, IssuerKeys]:
        names = list(self._static) + list(self._states)
        return {name: self.current(name) for name in names}

    # the background loop ---------------------------------------------------------

    async def _maintain(self, state: _IssuerState) -> None:
        failures = 0
        while True:
            ok = await self._fetch(state)
            if not state.first_attempt_done:
                state.first_attempt_done = True
                self._report(state)
                if all(s.first_attempt_done for s in self._states.values()):
                    self._ready.set()
            if ok:
                failures = 0
                assert state.fresh_until is not None and state.fetched_at is not None
                delay = (state.fresh_until - state.fetched_at) * REFRESH_AHEAD
            else:
                failures += 1
                ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(failures, 16))
                delay = random.uniform(ceiling / 2, ceiling)  # noqa: S311
            await asyncio.sleep(max(delay, 0.05))

    async def _fetch(self, state: _IssuerState) -> bool:
        assert self._fetcher is not None
        issuer = state.issuer
        try:
            fetched = await self._fetcher.fetch(issuer)
        except FetchError as exc:
            state.last_error = str(exc)
            self._report(state)
            return False
        except Exception as exc:  # a fetcher bug must not kill the refresh loop
            state.last_error = f"unexpected {type(exc).__name__}"
            log.exception("key fetch failed unexpectedly", extra={"issuer": issuer.name})
            self._report(state)
            return False
        for note in fetched.parsed.skipped:
            log.warning("key skipped", extra={"issuer": issuer.name, "why": note})
        now = self._clock.now()
        state.keys = fetched.parsed.keys
        state.fetched_at = now
        state.fresh_until = now + fetched.ttl
        state.last_error = None
        self._report(state)
        return True

    def _report(self, state: _IssuerState) -> None:
        """Log a key state change once, not every retry."""
        if not state.first_attempt_done:
            return
        snapshot = self._snapshot(state)
        if snapshot.status is state.reported and snapshot.status is not KeyStatus.FRESH:
            return
        previous, state.reported = state.reported, snapshot.status
        fields = {
            "issuer": state.issuer.name,
            "status": snapshot.status.value,
            "previous": previous.value if previous else None,
            "keys": len(snapshot.keys) if snapshot.keys else 0,
        }
        if snapshot.status is KeyStatus.FRESH:
            if previous is not KeyStatus.FRESH:
                log.info("keys fetched", extra=fields)
            else:
                log.debug("keys refreshed", extra=fields)
        else:
            log.warning(
                "keys unavailable" if snapshot.keys is None else "serving last good keys",
                extra={**fields, "error": state.last_error},
            )
