"""The `keys.cache` setting: `memory`, or a Redis URL that replicas share."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

MEMORY = "memory"
DEFAULT_REDIS_PORT = 6379


@dataclass(frozen=True, slots=True)
class RedisTarget:
    host: str
    port: int
    db: int
    tls: bool
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    def display(self) -> str:
        """The URL without credentials, for logs and status output."""
        scheme = "rediss" if self.tls else "redis"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/{self.db}"


class CacheUrlError(ValueError):
    pass


def parse_cache_url(value: str) -> RedisTarget | None:
    """None for `memory`; the Redis target for `redis://[user:password@]host[:port][/db]`
    (or `rediss://` for TLS). Raises `CacheUrlError` for anything else."""
    if value == MEMORY:
        return None
    try:
        parts = urlsplit(value)
        host = parts.hostname
        port = parts.port
    except ValueError:
        raise CacheUrlError("is not a valid URL") from None
    if parts.scheme not in ("redis", "rediss"):
        raise CacheUrlError("must be 'memory' or a redis:// or rediss:// URL")
    if not host:
        raise CacheUrlError("the redis URL needs a host")
    if parts.query or parts.fragment:
        raise CacheUrlError("the redis URL takes no query or fragment")
    path = parts.path.strip("/")
    if path and not (path.isdigit() and len(path) <= 5):
        raise CacheUrlError("the redis URL path must be a database number, like /0")
    return RedisTarget(
        host=host,
        port=port if port is not None else DEFAULT_REDIS_PORT,
        db=int(path) if path else 0,
        tls=parts.scheme == "rediss",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def display_cache_url(value: str) -> str:
    try:
        target = parse_cache_url(value)
    except CacheUrlError:
        return "(invalid cache URL)"
    return MEMORY if target is None else target.display()
