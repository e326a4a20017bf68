"""Choose the route for a request: the first whose every condition holds.

Matching reads the request in one normal form (`RequestTarget`), so that a spelling
an upstream treats as the same resource cannot slip past the route meant for it:
- the path loses its `;` parameters (`/admin;jsessionid=x` is `/admin`, as servlet
  containers read it), and is refused when longer than `MAX_PATH_LENGTH`;
- the host is lower-case, without trailing dots or an empty port (`Example.COM.:` is
  `example.com`); a Host of several comma-joined values is refused.
Per route, `path` and `path_regex` ignore one trailing slash, and `case_sensitive:
false` ignores case in every path condition.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import NamedTuple

from ext_authz.errors import DenialReason, Denied
from ext_authz.policy.model import Route, RouteMatch
from ext_authz.request import RequestView

MAX_PATH_LENGTH = 8192
_PATH_PARAMETERS = re.compile(r";[^/]*")


class RequestTarget(NamedTuple):
    """The request as route matching reads it."""

    method: str
    path: str  # `;` parameters removed
    host: str  # normal form, see `normal_host`
    context_extensions: Mapping[str, str]


class RouteChoice(NamedTuple):
    route: Route | None
    target: RequestTarget


def request_target(request: RequestView) -> RequestTarget:
    """The normal form of the request, or `Denied(REQUEST_INVALID)`."""
    path, host = _normal_forms(request)
    return RequestTarget(request.method, path, host, request.context_extensions)


def _normal_forms(request: RequestView) -> tuple[str, str]:
    path, host = request.path, request.host
    if len(path) > MAX_PATH_LENGTH:
        raise Denied(DenialReason.REQUEST_INVALID, f"path longer than {MAX_PATH_LENGTH}")
    if "," in host:
        raise Denied(DenialReason.REQUEST_INVALID, "several Host values")
    if ";" in path:
        path = _PATH_PARAMETERS.sub("", path)
    # `normal_host`, with its common case inline: this runs on every check
    host = normal_host(host) if host.endswith((".", ":")) or ".:" in host else host.lower()
    return path, host


def choose_route(routes: tuple[Route, ...], request: RequestView) -> RouteChoice:
    """The first route that matches, with the normal form it was matched on.
    Raises `Denied(REQUEST_INVALID)` for a request no route can be judged on."""
    target = request_target(request)
    for route in routes:
        if route_matches(route.match, target):
            return RouteChoice(route, target)
    return RouteChoice(None, target)


def select_route(routes: tuple[Route, ...], request: RequestView) -> Route | None:
    """`choose_route` without the normal form, for the hot path."""
    path, host = _normal_forms(request)
    method, extensions = request.method, request.context_extensions
    for route in routes:
        if _matches(route.match, method, path, host, extensions):
            return route
    return None


def normal_path(path: str) -> str:
    return _PATH_PARAMETERS.sub("", path) if ";" in path else path


def normal_host(host: str) -> str:
    """Lower-case, without an empty port (`name:`) or trailing dots (`name.`,
    `name.:80`). An IPv6 literal keeps its brackets."""
    if not host.endswith((".", ":")) and ".:" not in host:
        return host.lower()  # the common case, already normal but for case
    host = host.lower()
    if host.startswith("["):
        end = host.find("]")
        if end != -1 and host[end + 1 :] == ":":
            return host[: end + 1]
        return host
    name, sep, port = host.rpartition(":")
    if not sep or ":" in name:
        return host.rstrip(".")
    name = name.rstrip(".")
    return f"{name}:{port}" if port else name


def trim_slash(path: str) -> str:
    return path[:-1] if len(path) > 1 and path.endswith("/") else path


def route_matches(match: RouteMatch, target: RequestTarget) -> bool:
    return _matches(match, *target)


def _matches(
    match: RouteMatch, method: str, path: str, host: str, extensions: Mapping[str, str]
) -> bool:
    """Every condition of `match` holds (the hot path: `conditions` names the same
    checks one by one, for `explain`)."""
    if match.methods is not None and method not in match.methods:
        return False
    if not (
        match.path is None and match.path_prefix is None and match.path_regex is None
    ) and not _path_holds(match, path if match.case_sensitive else path.lower()):
        return False
    if match.hosts is not None and not host_matches(match.hosts, host):
        return False
    for key, value in match.context_extensions:  # noqa: SIM110 (a loop is faster than all())
        if extensions.get(key) != value:
            return False
    return True


def conditions(match: RouteMatch, target: RequestTarget) -> Iterator[tuple[str, bool]]:
    """Each condition `match` sets, in order, as (condition name, whether it holds);
    `describe` words a condition for `explain`."""
    if match.methods is not None:
        yield "methods", target.method in match.methods
    if not (match.path is None and match.path_prefix is None and match.path_regex is None):
        path = target.path if match.case_sensitive else target.path.lower()
        name = "path" if match.path else "path_prefix" if match.path_prefix else "path_regex"
        yield name, _path_holds(match, path)
    if match.hosts is not None:
        yield "hosts", host_matches(match.hosts, target.host)
    for key, value in match.context_extensions:
        yield f"context_extensions.{key}", target.context_extensions.get(key) == value


def _path_holds(match: RouteMatch, path: str) -> bool:
    """The one path condition of `match` (path, path_prefix or path_regex) holds."""
    if match.path is not None:
        return trim_slash(path) == match.path
    if match.path_prefix is not None:
        return prefix_matches(match.path_prefix, path)
    regex = match.path_regex
    assert regex is not None
    if regex.fullmatch(path) is not None:
        return True
    trimmed = trim_slash(path)
    return trimmed != path and regex.fullmatch(trimmed) is not None


def describe(match: RouteMatch, condition: str) -> str:
    """What a condition named by `conditions` asks, in words."""
    case = "" if match.case_sensitive else " (any case)"
    if condition == "methods":
        return f"method in {sorted(match.methods or ())}"
    if condition == "path":
        return f"path == {match.path}{case}"
    if condition == "path_prefix":
        return f"path under {match.path_prefix}{case}"
    if condition == "path_regex":
        assert match.path_regex is not None
        return f"path matches /{match.path_regex.pattern}/{case}"
    if condition == "hosts":
        return f"host in {list(match.hosts or ())}"
    key = condition.removeprefix("context_extensions.")
    return f"{condition} == {dict(match.context_extensions).get(key)}"


def match_conditions(match: RouteMatch, target: RequestTarget) -> list[tuple[str, bool]]:
    """Every condition of `match`, worded, with whether it holds (for `explain`)."""
    return [(describe(match, name), held) for name, held in conditions(match, target)]


def prefix_matches(prefix: str, path: str) -> bool:
    """Segment-aware: `/api/orders` matches `/api/orders` and `/api/orders/7`,
    never `/api/orders-admin`. A prefix ending in '/' is a plain prefix."""
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + "/")


def strip_port(host: str) -> str:
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit() and ":" not in name:
        return name
    return host


def host_matches(patterns: tuple[str, ...], host: str) -> bool:
    """`host` in normal form against patterns in normal form (see the loader)."""
    bare = strip_port(host)
    for pattern in patterns:
        if pattern.startswith("*."):
            suffix = pattern[1:]
            candidate = host if ":" in suffix else bare
            if candidate.endswith(suffix) and len(candidate) > len(suffix):
                return True
        elif pattern in (host, bare):
            return True
    return False
