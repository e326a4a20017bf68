"""Which URLs keys may be fetched from: https anywhere, plain http only on loopback.

A `jwks_uri` found in a discovery document is not chosen by the operator but by
whoever serves that document. Unless the configured discovery URL is itself on
loopback, the discovered URL must be on the same origin as the discovery URL, or an
https URL of a public host: never plain http, loopback, private, link-local or other
non-global addresses (cloud metadata, the Envoy admin port, internal services).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import SplitResult, urlsplit


def key_url_problem(url: str) -> str | None:
    """None when `url` is an acceptable key or discovery URL, else why it is not."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("https", "http") or not host:
        return "must be an absolute https:// URL"
    if parts.username or parts.password:
        return "must not carry credentials"
    if parts.fragment:
        return "must not have a fragment"
    if parts.scheme == "http" and not is_loopback_host(host):
        return "must use https (plain http is accepted only for loopback hosts)"
    return None


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_local_name(host: str) -> bool:
    """Names that mean this machine without DNS (RFC 6761 `localhost`)."""
    name = host.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


def non_global_address(host: str) -> bool:
    """Whether `host` is an IP literal outside the public internet."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global


def _origin(parts: SplitResult) -> tuple[str, str, int | None]:
    default = {"https": 443, "http": 80}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


def discovered_url_problem(configured: str, discovered: str) -> str | None:
    """None when a discovery document at `configured` may send key fetches to
    `discovered` (already accepted by `key_url_problem`), else why not. Addresses a
    host name resolves to are checked by `resolved_problem`, at fetch time."""
    issuer, target = urlsplit(configured), urlsplit(discovered)
    if is_loopback_host(issuer.hostname or "") or _origin(issuer) == _origin(target):
        return None
    if target.scheme != "https":
        return "must use https: only a loopback issuer may name a plain http URL"
    host = target.hostname or ""
    if is_local_name(host) or non_global_address(host):
        return (
            "points at a loopback, private or link-local address, another origin than the issuer's"
        )
    return None


def needs_resolving(configured: str, discovered: str) -> bool:
    """Whether the addresses of the discovered host must be checked before a fetch."""
    issuer, target = urlsplit(configured), urlsplit(discovered)
    if is_loopback_host(issuer.hostname or "") or _origin(issuer) == _origin(target):
        return False
    try:
        ipaddress.ip_address(target.hostname or "")
    except ValueError:
        return True
    return False


def resolved_problem(addresses: Iterable[str]) -> str | None:
    """None when every address a discovered host resolves to is public."""
    found = list(addresses)
    if not found:
        return "resolves to no address"
    if any(non_global_address(address.split("%", 1)[0]) for address in found):
        return "resolves to a loopback, private or link-local address"
    return None
