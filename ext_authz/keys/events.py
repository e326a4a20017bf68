"""What the key manager tells observers: one event per fetch result, and a report per
issuer for status output and health."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ext_authz.keys.store import KeyStatus

RESULT_OK = "ok"


class KeyOrigin(enum.Enum):
    """Where a key set came from."""

    NETWORK = "network"  # fetched from the issuer by this process
    REDIS = "redis"  # fetched by a replica (or earlier) and shared through the cache
    DISK = "disk"  # the last good set kept in `keys.cache_dir`
    STATIC = "static"  # from the policy file


@dataclass(frozen=True, slots=True)
class KeyEvent:
    """One fetch result. `result` is "ok" or the failure kind ("timeout", "http_status",
    "network", "too_large", "encoded", "invalid_jwks", "no_usable_key", "discovery", "replica",
    "internal"); `keys` is the number of keys served after it (0: none)."""

    issuer: str  # the local issuer name
    result: str
    keys: int
    source: KeyOrigin
    status: KeyStatus
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.result == RESULT_OK


@dataclass(frozen=True, slots=True)
class IssuerReport:
    """An issuer's key state for people (`ext-authz keys status`) and probes.
    Times are wall-clock seconds since the epoch."""

    name: str
    issuer: str
    status: KeyStatus
    kids: tuple[str, ...]
    source: KeyOrigin | None  # where the served keys came from
    fetched_at: float | None  # when the served keys were fetched
    fresh_until: float | None  # their TTL ends here
    expires_at: float | None  # stale keys are served until here (TTL + max_stale)
    last_attempt_at: float | None
    last_result: str | None  # "ok" or a failure kind, as in `KeyEvent.result`
    last_error: str | None
    failures: int  # consecutive failed attempts
    next_refresh_at: float | None
    cache: str  # "memory", a redis URL without credentials, or the fallback in use
    cache_dir: str | None = None
