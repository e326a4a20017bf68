"""An HTTP authorization request → `RequestView`: pure, no I/O.

Three endpoints, one per proxy convention, say where the original request is:

- ``/envoy`` + the original path (Envoy ``http_service`` with ``path_prefix: /envoy``):
  the method is the request's method, the host its ``Host``.
- ``/forward-auth`` (Traefik, Caddy, HAProxy, APISIX): ``X-Forwarded-Method``,
  ``X-Forwarded-Host`` and ``X-Forwarded-Uri``.
- ``/auth-request`` (nginx): ``X-Original-Method`` and ``X-Original-URI``; the host
  from ``X-Original-Host``, else ``Host``.

A request that lacks what its endpoint needs, or carries it twice, is refused
(`BadHttpRequest`, a 400): never guessed at, never an allow. The original path is
normalised the way the shipped Envoy config has Envoy normalise it before a gRPC
check (RFC 3986 dot segments, unreserved escapes decoded, ``%2F``/``%5C`` and ``\\``
read as ``/``, repeated slashes merged), so a route matches the same requests
through either door whatever the proxy forwards verbatim.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import Enum

from ext_authz.request import RequestView

ENVOY_PREFIX = "/envoy"
MAX_PATH_BYTES = 8192


class BadHttpRequest(ValueError):
    """The authorization request cannot describe an original request."""


class Endpoint(Enum):
    ENVOY = "envoy"
    FORWARD_AUTH = "forward-auth"
    AUTH_REQUEST = "auth-request"


_ENDPOINTS = {"/forward-auth": Endpoint.FORWARD_AUTH, "/auth-request": Endpoint.AUTH_REQUEST}
_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}")
_HOST = re.compile(r"[A-Za-z0-9.\-_~!$&'()*+;=:\[\]%]{1,255}")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_SLASHES = re.compile(r"/{2,}")
# What a request target's path may hold (RFC 3986 pchar, '/', '%' escapes, and '\\',
# which is read as '/').
_PATH_CHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/%\\]*")


def endpoint_of(target: str) -> tuple[Endpoint, str] | None:
    """The endpoint a request target names and, for ``/envoy``, the original target."""
    if target.startswith(ENVOY_PREFIX):
        rest = target[len(ENVOY_PREFIX) :]
        if rest.startswith("/"):
            return Endpoint.ENVOY, rest
        if rest == "" or rest.startswith("?"):
            return Endpoint.ENVOY, "/" + rest
        return None
    endpoint = _ENDPOINTS.get(target.split("?", 1)[0])
    return None if endpoint is None else (endpoint, "")


def _unescape(found: re.Match[str]) -> str:
    byte = int(found.group(1), 16)
    if byte in _UNRESERVED:
        return chr(byte)
    if byte in (0x2F, 0x5C):  # %2F and %5C: Envoy's UNESCAPE_AND_REDIRECT
        return "/"
    return "%" + found.group(1).upper()


def normalise_path(target: str) -> str:
    """The path of an origin-form request target, normalised; the query is dropped."""
    path = target.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        raise BadHttpRequest("the original URI is not an absolute path")
    if len(path) > MAX_PATH_BYTES:
        raise BadHttpRequest("the original path is too long")
    if not _PATH_CHARS.fullmatch(path):
        raise BadHttpRequest("the original path holds characters a URI may not")
    if "%" in path:
        if path.count("%") != len(_ESCAPE.findall(path)):
            raise BadHttpRequest("the original path has a broken percent escape")
        path = _ESCAPE.sub(_unescape, path)
    path = path.replace("\\", "/")
    return _remove_dot_segments(_SLASHES.sub("/", path))


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4 for an absolute path; a trailing '.' or '..' keeps a slash."""
    if "." not in path:
        return path
    out: list[str] = []
    segments = path.split("/")[1:]
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                out.append("")
        elif segment == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)


def _single(headers: Mapping[str, str], name: str, counts: Mapping[str, int]) -> str:
    value = headers.get(name)
    if value is None or not value.strip():
        raise BadHttpRequest(f"missing {name}")
    if counts.get(name, 1) > 1:
        raise BadHttpRequest(f"{name} sent more than once")
    return value.strip()


def _method(value: str) -> str:
    if not _METHOD.fullmatch(value):
        raise BadHttpRequest("the original method is not an HTTP method")
    return value.upper()


def _host(value: str) -> str:
    if "," in value:
        raise BadHttpRequest("more than one host")
    host = value.strip().lower()
    if host and not _HOST.fullmatch(host):
        raise BadHttpRequest("the original host is not a host")
    return host


def request_view(
    endpoint: Endpoint,
    method: str,
    original_target: str,
    headers: Mapping[str, str],
    counts: Mapping[str, int],
) -> RequestView:
    """The original request as the pipeline sees it.

    ``headers`` has lower-case names, repeated headers joined with ``,``; ``counts``
    tells how often each name that appeared more than once was sent.
    """
    if endpoint is Endpoint.ENVOY:
        original_method = method
        target = original_target
        host = _host(headers.get("host", ""))
    elif endpoint is Endpoint.FORWARD_AUTH:
        original_method = _single(headers, "x-forwarded-method", counts)
        target = _single(headers, "x-forwarded-uri", counts)
        host = _host(_single(headers, "x-forwarded-host", counts))
    else:
        original_method = _single(headers, "x-original-method", counts)
        target = _single(headers, "x-original-uri", counts)
        if "x-original-host" in headers:
            host = _host(_single(headers, "x-original-host", counts))
        else:
            host = _host(headers.get("host", ""))
    if counts.get("host", 1) > 1:
        raise BadHttpRequest("more than one host")
    return RequestView(
        method=_method(original_method),
        path=normalise_path(target),
        host=host,
        headers=headers,
        request_id=headers.get("x-request-id"),
    )
