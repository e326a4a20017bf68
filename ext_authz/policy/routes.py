"""Choose the route for a request: the first whose every condition holds."""

from __future__ import annotations

from ext_authz.policy.model import Route, RouteMatch
from ext_authz.request import RequestView


def select_route(routes: tuple[Route, ...], request: RequestView) -> Route | None:
    for route in routes:
        if route_matches(route.match, request):
            return route
    return None


def route_matches(match: RouteMatch, request: RequestView) -> bool:
    if match.methods is not None and request.method not in match.methods:
        return False
    path = request.path
    if match.path is not None and path != match.path:
        return False
    if match.path_prefix is not None and not prefix_matches(match.path_prefix, path):
        return False
    if match.path_regex is not None and match.path_regex.fullmatch(path) is None:
        return False
    if match.hosts is not None and not host_matches(match.hosts, request.host):
        return False
    for key, value in match.context_extensions:
        if request.context_extensions.get(key) != value:
            return False
    return True


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
    host = host.lower()
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
