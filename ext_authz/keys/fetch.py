"""Fetch JWKS and OpenID discovery documents over HTTP, bounded in time and size."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from ext_authz.keys.jwks import JwksError, ParsedKeySet, parse_jwks_bytes
from ext_authz.keys.urls import key_url_problem
from ext_authz.policy.model import IssuerPolicy, KeySourceKind

_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d{1,10})\"?", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|[,\s])(no-cache|no-store)(?:$|[,\s=])", re.IGNORECASE)
MAX_DISCOVERY_BYTES = 64 * 1024


class FetchError(Exception):
    """A fetch that gave no usable keys. The message names the failure, not the data."""


@dataclass(frozen=True, slots=True)
class FetchedKeys:
    parsed: ParsedKeySet
    ttl: float  # seconds, already clamped to the issuer's bounds
    url: str


class JwksFetcher(Protocol):
    async def fetch(self, issuer: IssuerPolicy) -> FetchedKeys: ...

    async def aclose(self) -> None: ...


def ttl_from_cache_control(header: str | None, issuer: IssuerPolicy) -> float:
    settings = issuer.keys
    ttl = settings.default_ttl
    if header:
        found = _MAX_AGE.search(header)
        if found:
            ttl = float(found.group(1))
        elif _NO_CACHE.search(header):
            ttl = settings.min_ttl
    return min(max(ttl, settings.min_ttl), settings.max_ttl)


class HttpJwksFetcher:
    """Fetches with httpx. Redirects are not followed; responses are size-capped."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._client = httpx.AsyncClient(
            transport=transport,
            follow_redirects=False,
            headers={"accept": "application/json", "user-agent": "ext-authz"},
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def fetch(self, issuer: IssuerPolicy) -> FetchedKeys:
        source = issuer.source
        assert source.url is not None
        jwks_url = source.url
        if source.kind is KeySourceKind.DISCOVERY:
            jwks_url = await self._discover(issuer, source.url)
        body, cache_control = await self._get(
            jwks_url, issuer.keys.max_jwks_bytes, issuer.keys.fetch_timeout
        )
        try:
            parsed = parse_jwks_bytes(body)
        except JwksError as exc:
            raise FetchError(f"bad JWKS: {exc}") from None
        if not parsed.keys.keys:
            raise FetchError("JWKS has no usable signature key")
        return FetchedKeys(parsed, ttl_from_cache_control(cache_control, issuer), jwks_url)

    async def _discover(self, issuer: IssuerPolicy, url: str) -> str:
        body, _ = await self._get(url, MAX_DISCOVERY_BYTES, issuer.keys.fetch_timeout)
        try:
            document: Any = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise FetchError("discovery document is not JSON") from None
        if not isinstance(document, dict):
            raise FetchError("discovery document is not a JSON object")
        if document.get("issuer") != issuer.issuer:
            raise FetchError("discovery document names another issuer")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise FetchError("discovery document has no jwks_uri")
        problem = key_url_problem(jwks_uri)
        if problem:
            raise FetchError(f"discovered jwks_uri {problem}")
        return jwks_uri

    async def _get(self, url: str, limit: int, timeout: float) -> tuple[bytes, str | None]:
        try:
            async with self._client.stream("GET", url, timeout=timeout) as response:
                if response.status_code != 200:
                    raise FetchError(f"HTTP {response.status_code} from key endpoint")
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > limit:
                    raise FetchError(f"response larger than {limit} bytes")
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise FetchError(f"response larger than {limit} bytes")
                    chunks.append(chunk)
                return b"".join(chunks), response.headers.get("cache-control")
        except httpx.TimeoutException:
            raise FetchError("timed out") from None
        except httpx.HTTPError as exc:
            raise FetchError(f"HTTP error: {type(exc).__name__}") from None
