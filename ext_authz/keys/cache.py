"""Where fetched key sets are shared between replicas: Redis, through aiocache's
`RedisCache` (`keys.cache: redis://...`). With `keys.cache: memory` (the default) there
is no shared store: each process keeps only its key manager's snapshots.

The request path never reads this: it reads the key manager's in-memory snapshots.
The cache holds the accepted public keys of each issuer as a JWKS document with its
fetch time and TTL (`CachedJwks`), and, with Redis, two short-lived coordination keys
per issuer: a fetch lock (redis-py's `Lock`) and the refetch bucket (`bucket.py`), a
single number updated in a WATCH/MULTI transaction.

If Redis cannot be reached, the process works as with `memory` (locks and refetches
are granted: it still fetches alone, single-flight and within its own refetch bucket),
the change is logged once, and Redis is tried again after `retry_after` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiocache.serializers import BaseSerializer  # type: ignore[import-untyped]
from redis.exceptions import RedisError, WatchError

from ext_authz import strict_json
from ext_authz.clock import Clock
from ext_authz.keys.bucket import BucketRule
from ext_authz.keys.redis_url import CacheUrlError, RedisTarget, parse_cache_url
from ext_authz.keys.source import KeySource

log = logging.getLogger("ext_authz.keys")

T = TypeVar("T")
ENTRY_VERSION = 1
MAX_ENTRY_CHARS = 8 * 1024 * 1024
KEY_PREFIX = "ext-authz:keys:v1"
OP_TIMEOUT = 1.0
RETRY_AFTER = 15.0

BUCKET_RETRIES = 5  # WATCH/MULTI attempts before a contended bucket counts as empty


class _Granted:
    """The fetch lock while Redis is not in use: this process coordinates alone."""

    async def release(self) -> None:
        return None


GRANTED = _Granted()


class CacheEntryError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class CachedJwks:
    """An issuer's accepted public keys as a JWKS document, with when it was fetched."""

    issuer: str  # the issuer's `iss`
    source: str  # the configured jwks_uri or discovery URL
    jwks: str  # JSON text: {"keys": [...]}, public members only
    fetched_at: float  # wall clock
    ttl: float

    @property
    def fresh_until(self) -> float:
        return self.fetched_at + self.ttl

    def expires_at(self, max_stale: float) -> float:
        """Stale keys are served until here; after that they are dropped."""
        return self.fetched_at + self.ttl + max_stale

    def refresh_at(self, share: float) -> float:
        return self.fetched_at + self.ttl * share

    def belongs_to(self, source: KeySource) -> bool:
        return self.issuer == source.issuer and self.source == source.url

    def dumps(self) -> str:
        return json.dumps(
            {
                "version": ENTRY_VERSION,
                "issuer": self.issuer,
                "source": self.source,
                "fetched_at": self.fetched_at,
                "ttl": self.ttl,
                "jwks": self.jwks,
            },
            separators=(",", ":"),
        )

    @classmethod
    def loads(cls, text: str) -> CachedJwks:
        if len(text) > MAX_ENTRY_CHARS:
            raise CacheEntryError("cached key set is too large")
        try:
            data: Any = strict_json.loads(text)
        except ValueError:
            raise CacheEntryError("cached key set is not JSON") from None
        if not isinstance(data, dict) or data.get("version") != ENTRY_VERSION:
            raise CacheEntryError("cached key set has an unknown format")
        issuer, source, jwks = data.get("issuer"), data.get("source"), data.get("jwks")
        fetched_at, ttl = data.get("fetched_at"), data.get("ttl")
        if not (isinstance(issuer, str) and isinstance(source, str) and isinstance(jwks, str)):
            raise CacheEntryError("cached key set lacks its issuer, source or keys")
        fetched_at, ttl = _finite(fetched_at), _finite(ttl)
        if fetched_at is None or ttl is None or ttl <= 0:
            raise CacheEntryError("cached key set has no valid fetch time or TTL")
        return cls(issuer, source, jwks, fetched_at, ttl)


def _number(raw: object) -> float | None:
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "replace")
    try:
        return float(raw) if isinstance(raw, str) else None
    except ValueError:
        return None


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


class EntrySerializer(BaseSerializer):  # type: ignore[misc]
    """aiocache carries `CachedJwks` entries: written as their JSON text, read back and
    checked (`CachedJwks.loads` raises `CacheEntryError` on anything else)."""

    def dumps(self, value: CachedJwks) -> str:
        return value.dumps()

    def loads(self, value: str | bytes | None) -> CachedJwks | None:
        if value is None:
            return None
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise CacheEntryError("cached key set is not UTF-8") from None
        return CachedJwks.loads(value)


def store_id(source: KeySource) -> str:
    """A stable name for an issuer's key set, the same in every replica and across
    restarts: derived from its `iss` and key URL, not from the local issuer name."""
    material = f"{source.issuer}\n{source.url or ''}".encode()
    return hashlib.sha256(material).hexdigest()[:32]


class KeyCache:
    """One cache backend, shared by the issuers configured with the same `keys.cache`."""

    def __init__(
        self,
        setting: str,
        clock: Clock,
        *,
        op_timeout: float = OP_TIMEOUT,
        retry_after: float = RETRY_AFTER,
    ) -> None:
        self._clock = clock
        self._op_timeout = op_timeout
        self._retry_after = retry_after
        self._redis: Any = None
        self._target: RedisTarget | None = None
        self._problem: str | None = None  # why Redis is not in use, while it is not
        self._retry_at: float | None = None  # monotonic
        self._errors: tuple[type[BaseException], ...] = (OSError, TimeoutError, RedisError)
        try:
            self._target = parse_cache_url(setting)
        except CacheUrlError as exc:
            self._problem = f"invalid cache setting: {exc}"
            log.error("key cache setting refused; using memory", extra={"error": str(exc)})
            return
        if self._target is not None:
            self._redis = _open_redis(self._target, op_timeout)

    @property
    def shared(self) -> bool:
        """Whether Redis is in use now (or due for another try)."""
        return self._redis is not None and (
            self._retry_at is None or self._clock.monotonic() >= self._retry_at
        )

    def describe(self) -> str:
        if self._target is None:
            return "memory" if self._problem is None else f"memory ({self._problem})"
        if self._problem is not None:
            return f"memory (fallback: {self._target.display()} {self._problem})"
        return self._target.display()

    async def get(self, key: str) -> CachedJwks | None:
        """The entry at `key`; None when absent or without Redis. Raises
        `CacheEntryError` if it is corrupt."""
        _, value = await self._on_redis("get", lambda r: r.get(key))
        return value if isinstance(value, CachedJwks) else None

    async def put(self, key: str, entry: CachedJwks, ttl: float) -> None:
        await self._on_redis("set", lambda r: r.set(key, entry, ttl=float(ttl)))

    async def lock(self, key: str, lease: float) -> Any:
        """redis-py's lock on `key`, held for at most `lease` seconds; None while another
        process holds it. Without Redis: granted."""

        async def attempt(redis: Any) -> Any:
            lock = redis.client.lock(
                key, timeout=lease, blocking=False, thread_local=False, raise_on_release_error=False
            )
            return lock if await lock.acquire() else None

        used, lock = await self._on_redis("lock", attempt)
        return lock if used else GRANTED

    async def unlock(self, lock: Any) -> None:
        await self._on_redis("unlock", lambda _redis: lock.release())

    async def exists(self, key: str) -> bool:
        used, found = await self._on_redis("exists", lambda r: r.client.exists(key))
        return bool(found) if used else False

    async def take(self, key: str, rule: BucketRule) -> bool:
        """Take one refetch from the bucket at `key`, on the clock's wall time (shared
        by every replica). Without Redis: granted (the local bucket still applies)."""

        async def attempt(redis: Any) -> bool:
            now = self._clock.now()
            async with redis.client.pipeline(transaction=True) as pipe:
                for _ in range(BUCKET_RETRIES):
                    try:
                        await pipe.watch(key)
                        taken = rule.take(_finite(_number(await pipe.get(key))), now)
                        if taken is None:
                            await pipe.reset()
                            return False
                        pipe.multi()
                        pipe.set(key, repr(taken), px=max(1, math.ceil((taken - now) * 1000)))
                        await pipe.execute()
                        return True
                    except WatchError:
                        continue
            return False

        used, taken = await self._on_redis("take", attempt)
        return bool(taken) if used else True

    async def close(self) -> None:
        if self._redis is not None:
            with contextlib.suppress(*self._errors):
                await self._redis.client.aclose()

    async def _on_redis(
        self, op: str, call: Callable[[Any], Awaitable[T]]
    ) -> tuple[bool, T | None]:
        if not self.shared:
            return False, None
        try:
            async with asyncio.timeout(self._op_timeout * 3):  # a lock or bucket: a few trips
                result = await call(self._redis)
        except self._errors as exc:
            self._went_down(op, exc)
            return False, None
        self._came_back()
        return True, result

    def _went_down(self, op: str, exc: BaseException) -> None:
        self._retry_at = self._clock.monotonic() + self._retry_after
        if self._problem is None:
            self._problem = "unreachable"
            log.warning(
                "shared key cache unreachable; using the in-memory cache",
                extra={
                    "cache": self.describe(),
                    "operation": op,
                    "error": f"{type(exc).__name__}: {str(exc)[:200]}",
                    "retry_after": self._retry_after,
                },
            )

    def _came_back(self) -> None:
        if self._problem is not None and self._target is not None:
            self._problem = None
            self._retry_at = None
            log.info("shared key cache reachable again", extra={"cache": self.describe()})


def _open_redis(target: RedisTarget, op_timeout: float) -> Any:
    from aiocache import RedisCache  # type: ignore[import-untyped]

    pool_options: dict[str, Any] = {"socket_timeout": op_timeout}
    if target.username:
        pool_options["username"] = target.username
    return RedisCache(
        serializer=EntrySerializer(),
        endpoint=target.host,
        port=target.port,
        db=target.db,
        password=target.password,
        ssl=target.tls,
        timeout=op_timeout,
        create_connection_timeout=op_timeout,
        connection_pool_kwargs=pool_options,
    )


class IssuerStore:
    """One issuer's view of a `KeyCache`: its key set and its coordination keys."""

    def __init__(self, cache: KeyCache, source: KeySource) -> None:
        self.cache = cache
        self.id = store_id(source)
        self._jwks_key = f"{KEY_PREFIX}:jwks:{self.id}"
        self._lock_key = f"{KEY_PREFIX}:lock:{self.id}"
        self._bucket_key = f"{KEY_PREFIX}:refetch-bucket:{self.id}"

    @property
    def shared(self) -> bool:
        return self.cache.shared

    async def load(self) -> CachedJwks | None:
        """The stored entry; None when absent. Raises `CacheEntryError` if it is corrupt."""
        return await self.cache.get(self._jwks_key)

    async def save(self, entry: CachedJwks, ttl: float) -> None:
        await self.cache.put(self._jwks_key, entry, ttl)

    async def lock(self, lease: float) -> Any:
        """A held lock if this process may fetch now; None while a replica fetches."""
        return await self.cache.lock(self._lock_key, lease)

    async def unlock(self, lock: Any) -> None:
        await self.cache.unlock(lock)

    async def locked(self) -> bool:
        return await self.cache.exists(self._lock_key)

    async def take_refetch(self, rule: BucketRule) -> bool:
        """Whether this process may refetch on an unknown key now, across replicas."""
        return await self.cache.take(self._bucket_key, rule)
