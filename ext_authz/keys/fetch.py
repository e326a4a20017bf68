"""Fetch JWKS and OpenID discovery documents over HTTP, bounded in time and size.

Sizes are counted on the bytes as they arrive, and those are the bytes that are
parsed: every request asks for `Accept-Encoding: identity` and a response that comes
with any other content coding (gzip, br, stacked codings...) is refused unread, so a
small compressed body can never inflate past `max_jwks_bytes` in memory.
"""

from __future__ import annotations

import asyncio
import enum
import re
import socket
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from ext_authz import strict_json
from ext_authz.clock import Clock, SystemClock
from ext_authz.keys.jwks import JwksError, ParsedKeySet, parse_jwks_bytes
from ext_authz.keys.source import KeySettings, KeySource, KeySourceKind
from ext_authz.keys.urls import (
    discovered_url_problem,
    key_url_problem,
    needs_resolving,
    resolved_problem,
)

_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d{1,10})\"?", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|[,\s])(no-cache|no-store)(?:$|[,\s=])", re.IGNORECASE)
MAX_DISCOVERY_BYTES = 64 * 1024


class FetchErrorKind(enum.Enum):
    """Why a fetch gave no keys: a closed set, fit for metric labels."""

    TIMEOUT = "timeout"
    HTTP_STATUS = "http_status"
    NETWORK = "network"
    TOO_LARGE = "too_large"
    INVALID_JWKS = "invalid_jwks"
    NO_USABLE_KEY = "no_usable_key"
    DISCOVERY = "discovery"
    ENCODED = "encoded"


class FetchError(Exception):
    """A fetch that gave no usable keys. The message names the failure, not the data."""

    def __init__(self, message: str, kind: FetchErrorKind) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class FetchedKeys:
    parsed: ParsedKeySet
    ttl: float  # seconds, already clamped to the issuer's bounds
    url: str  # where the JWKS came from (after discovery)


class JwksFetcher(Protocol):
    async def fetch(self, source: KeySource) -> FetchedKeys: ...

    async def aclose(self) -> None: ...


def ttl_from_cache_control(header: str | None, settings: KeySettings) -> float:
    ttl = settings.default_ttl
    if header:
        found = _MAX_AGE.search(header)
        if found:
            ttl = float(found.group(1))
        elif _NO_CACHE.search(header):
            ttl = settings.min_ttl
    return min(max(ttl, settings.min_ttl), settings.max_ttl)


@dataclass(frozen=True, slots=True)
class _Discovered:
    jwks_uri: str
    at: float  # monotonic


class HttpJwksFetcher:
    """Fetches with httpx. Redirects are not followed; responses are size-capped and every
    request has a total deadline of the issuer's `fetch_timeout`.

    A discovered `jwks_uri` is remembered until a JWKS fetch through it fails or
    `max_ttl` passes, so a refresh is one request, not two."""

    def __init__(
        self, transport: httpx.AsyncBaseTransport | None = None, clock: Clock | None = None
    ) -> None:
        self._client = httpx.AsyncClient(
            transport=transport,
            follow_redirects=False,
            headers={
                "accept": "application/json",
                "accept-encoding": "identity",
                "user-agent": "ext-authz",
            },
            trust_env=False,
        )
        self._clock = clock or SystemClock()
        self._discovered: dict[str, _Discovered] = {}

    async def aclose(self) -> None:
        await self._client.aclose()

    async def fetch(self, source: KeySource) -> FetchedKeys:
        assert source.url is not None
        if source.kind is not KeySourceKind.DISCOVERY:
            return await self._fetch_jwks(source.settings, source.url)
        known = self._discovered.get(source.url)
        if known is None or self._clock.monotonic() - known.at > source.settings.max_ttl:
            jwks_uri = await self._discover(source, source.url)
            known = _Discovered(jwks_uri, self._clock.monotonic())
        try:
            fetched = await self._fetch_jwks(source.settings, known.jwks_uri)
        except FetchError:
            self._discovered.pop(source.url, None)
            raise
        self._discovered[source.url] = known
        return fetched

    async def _fetch_jwks(self, settings: KeySettings, url: str) -> FetchedKeys:
        body, cache_control = await self._get(url, settings.max_jwks_bytes, settings.fetch_timeout)
        try:
            parsed = parse_jwks_bytes(body)
        except JwksError as exc:
            raise FetchError(f"bad JWKS: {exc}", FetchErrorKind.INVALID_JWKS) from None
        if not parsed.key_set.verification_keys:
            raise FetchError("JWKS has no usable signature key", FetchErrorKind.NO_USABLE_KEY)
        return FetchedKeys(parsed, ttl_from_cache_control(cache_control, settings), url)

    async def _discover(self, source: KeySource, url: str) -> str:
        timeout = source.settings.fetch_timeout
        body, _ = await self._get(url, MAX_DISCOVERY_BYTES, timeout)
        kind = FetchErrorKind.DISCOVERY
        try:
            document: Any = strict_json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise FetchError("discovery document is not JSON", kind) from None
        if not isinstance(document, dict):
            raise FetchError("discovery document is not a JSON object", kind)
        if document.get("issuer") != source.issuer:
            raise FetchError("discovery document names another issuer", kind)
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise FetchError("discovery document has no jwks_uri", kind)
        problem = key_url_problem(jwks_uri) or discovered_url_problem(url, jwks_uri)
        if problem:
            raise FetchError(f"discovered jwks_uri {problem}", kind)
        if needs_resolving(url, jwks_uri):
            await self._check_resolved(jwks_uri, timeout)
        return jwks_uri

    async def _check_resolved(self, url: str, timeout: float) -> None:
        """Refuse a discovered host that resolves to a non-public address. (httpx
        resolves again when it connects: a name that changes its answer in between
        is not caught here; pin `jwks_uri` in the policy where that matters.)"""
        parts = urlsplit(url)
        kind = FetchErrorKind.DISCOVERY
        try:
            async with asyncio.timeout(timeout):
                infos = await asyncio.get_running_loop().getaddrinfo(
                    parts.hostname, parts.port or 443, type=socket.SOCK_STREAM
                )
        except (OSError, TimeoutError):
            raise FetchError("discovered jwks_uri host does not resolve", kind) from None
        problem = resolved_problem(str(info[4][0]) for info in infos)
        if problem:
            raise FetchError(f"discovered jwks_uri {problem}", kind)

    async def _get(self, url: str, limit: int, timeout: float) -> tuple[bytes, str | None]:
        try:
            async with asyncio.timeout(timeout):
                return await self._read(url, limit, timeout)
        except (httpx.TimeoutException, TimeoutError):
            raise FetchError("timed out", FetchErrorKind.TIMEOUT) from None
        except httpx.HTTPError as exc:
            raise FetchError(f"HTTP error: {type(exc).__name__}", FetchErrorKind.NETWORK) from None

    async def _read(self, url: str, limit: int, timeout: float) -> tuple[bytes, str | None]:
        too_large = FetchError(f"response larger than {limit} bytes", FetchErrorKind.TOO_LARGE)
        async with self._client.stream("GET", url, timeout=timeout) as response:
            if response.status_code != 200:
                raise FetchError(
                    f"HTTP {response.status_code} from key endpoint", FetchErrorKind.HTTP_STATUS
                )
            coding = _content_coding(response.headers.get_list("content-encoding"))
            if coding is not None:
                raise FetchError(
                    f"response is {coding}-encoded although identity was asked for",
                    FetchErrorKind.ENCODED,
                )
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise too_large
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_raw():  # never inflated
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
            return b"".join(chunks), response.headers.get("cache-control")


def _content_coding(values: list[str]) -> str | None:
    """The first content coding other than identity, or None (for metric-safe errors,
    only a short token of it)."""
    for value in values:
        for coding in value.split(","):
            name = coding.strip().lower()
            if name and name != "identity":
                return name[:16] if re.fullmatch(r"[a-z0-9._+-]{1,16}", name) else "unknown"
    return None
