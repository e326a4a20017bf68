"""Which URLs keys may be fetched from: https anywhere, plain http only on loopback."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


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
