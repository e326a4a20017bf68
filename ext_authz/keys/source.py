"""What the key manager needs to know of an issuer: where its keys come from and how
they are fetched.

The policy loader builds one `KeySource` per issuer; `keys/` reads nothing else of
the policy (the policy imports `keys/`, never the reverse).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ext_authz.keys.jwks import KeySet


@dataclass(frozen=True, slots=True)
class KeySettings:
    default_ttl: float
    min_ttl: float
    max_ttl: float
    refetch_cooldown: float
    max_stale: float
    fetch_timeout: float
    max_jwks_bytes: int
    cache: str = "memory"  # or a redis:// URL: key sets shared by replicas
    cache_dir: Path | None = None  # last good key sets on disk (resolved)


class KeySourceKind(enum.Enum):
    JWKS_URI = "jwks_uri"
    DISCOVERY = "discovery"
    JWKS_FILE = "jwks_file"
    INLINE = "jwks"


@dataclass(frozen=True, slots=True)
class KeySource:
    issuer: str  # the `iss` these keys sign for (discovery checks it; it names the cache entry)
    kind: KeySourceKind
    settings: KeySettings
    url: str | None = None  # jwks_uri, or the discovery document's URL
    path: Path | None = None  # jwks_file, resolved
    static_keys: KeySet | None = None  # jwks_file and inline jwks, parsed at load

    @property
    def is_remote(self) -> bool:
        return self.kind in (KeySourceKind.JWKS_URI, KeySourceKind.DISCOVERY)


class HasKeySource(Protocol):
    """Anything that carries an issuer's key source (the policy's `IssuerPolicy`)."""

    @property
    def source(self) -> KeySource: ...


def key_source_of(item: KeySource | HasKeySource) -> KeySource:
    return item if isinstance(item, KeySource) else item.source
