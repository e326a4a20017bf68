"""Route selection: each case is a small policy's routes and a request, and the route
that must be chosen (None: no route matches, which the authorizer turns into a deny)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ext_authz.policy.loader import PolicyError, compile_policy_text
from ext_authz.policy.model import Route
from ext_authz.policy.routes import prefix_matches, select_route, strip_port
from ext_authz.request import RequestView


def compile_routes(tmp_path: Path, routes: str) -> tuple[Route, ...]:
    text = "routes:\n" + textwrap.indent(textwrap.dedent(routes), "  ")
    return compile_policy_text(text, label="t.yaml", base_dir=tmp_path).routes


def request(
    path: str,
    method: str = "GET",
    host: str = "api.example.com",
    context_extensions: Mapping[str, str] | None = None,
) -> RequestView:
    return RequestView(
        method=method,
        path=path,
        host=host,
        headers={},
        context_extensions=dict(context_extensions or {}),
    )


@dataclass(frozen=True)
class Case:
    routes: str
    path: str
    expected: str | None
    method: str = "GET"
    host: str = "api.example.com"
    context_extensions: Mapping[str, str] = field(default_factory=dict)


EXACT = "- { name: exact, match: { path: /api/orders }, allow: anonymous }\n"
PREFIX = "- { name: prefix, match: { path_prefix: /api/orders }, allow: anonymous }\n"
SLASH_PREFIX = "- { name: slash, match: { path_prefix: /api/ }, allow: anonymous }\n"
ROOT = "- { name: root, match: { path_prefix: / }, allow: anonymous }\n"
REGEX = "- { name: regex, match: { path_regex: '/api/orders/[0-9]+' }, allow: anonymous }\n"
METHODS = "- { name: reads, match: { path_prefix: /, methods: [GET, HEAD] }, allow: anonymous }\n"
HOSTS = (
    "- name: hosts\n"
    "  match: { path_prefix: /, hosts: [api.example.com, 'admin.example.com:8443'] }\n"
    "  allow: anonymous\n"
)
WILDCARD = (
    "- { name: wildcard, match: { path_prefix: /, hosts: ['*.example.com'] }, allow: anonymous }\n"
)
MIXED_CASE_HOST = (
    "- { name: mixed, match: { path_prefix: /, hosts: [API.Example.COM] }, allow: anonymous }\n"
)
EXTENSIONS = (
    "- name: ext\n"
    "  match: { path_prefix: /, context_extensions: { tier: gold, zone: eu } }\n"
    "  allow: anonymous\n"
)
ORDERED = (
    "- { name: first, match: { path_prefix: /api }, deny: true }\n"
    "- { name: second, match: { path: /api/orders }, allow: anonymous }\n"
    "- { name: last, match: { path_prefix: / }, allow: anonymous }\n"
)
ALL_CONDITIONS = (
    "- name: all\n"
    "  match:\n"
    "    path_prefix: /api\n"
    "    methods: [POST]\n"
    "    hosts: [api.example.com]\n"
    "    context_extensions: { tier: gold }\n"
    "  allow: anonymous\n"
)


CASES: dict[str, Case] = {
    # exact path
    "exact-equal": Case(EXACT, "/api/orders", "exact"),
    "exact-trailing-slash": Case(EXACT, "/api/orders/", "exact"),
    "exact-child": Case(EXACT, "/api/orders/7", None),
    "exact-case-sensitive": Case(EXACT, "/API/orders", None),
    # segment-aware prefix
    "prefix-itself": Case(PREFIX, "/api/orders", "prefix"),
    "prefix-child": Case(PREFIX, "/api/orders/7", "prefix"),
    "prefix-trailing-slash": Case(PREFIX, "/api/orders/", "prefix"),
    "prefix-sibling-with-dash": Case(PREFIX, "/api/orders-admin", None),
    "prefix-sibling-longer-word": Case(PREFIX, "/api/ordersx/7", None),
    "prefix-parent": Case(PREFIX, "/api", None),
    "slash-prefix-child": Case(SLASH_PREFIX, "/api/x", "slash"),
    "slash-prefix-without-slash": Case(SLASH_PREFIX, "/api", None),
    "slash-prefix-sibling": Case(SLASH_PREFIX, "/apix/1", None),
    "root-prefix-root": Case(ROOT, "/", "root"),
    "root-prefix-anything": Case(ROOT, "/a/b/c", "root"),
    # path_regex is a full match
    "regex-full": Case(REGEX, "/api/orders/42", "regex"),
    "regex-extra-suffix": Case(REGEX, "/api/orders/42/items", None),
    "regex-extra-prefix": Case(REGEX, "/v1/api/orders/42", None),
    "regex-no-digits": Case(REGEX, "/api/orders/", None),
    # methods
    "method-listed": Case(METHODS, "/x", "reads", method="HEAD"),
    "method-not-listed": Case(METHODS, "/x", None, method="POST"),
    "method-lower-case-request": Case(METHODS, "/x", None, method="get"),
    # hosts
    "host-exact": Case(HOSTS, "/", "hosts", host="api.example.com"),
    "host-request-with-port": Case(HOSTS, "/", "hosts", host="api.example.com:8080"),
    "host-pattern-with-port": Case(HOSTS, "/", "hosts", host="admin.example.com:8443"),
    "host-pattern-with-other-port": Case(HOSTS, "/", None, host="admin.example.com:9443"),
    "host-pattern-with-port-no-port": Case(HOSTS, "/", None, host="admin.example.com"),
    "host-request-upper-case": Case(HOSTS, "/", "hosts", host="API.EXAMPLE.COM"),
    "host-pattern-upper-case": Case(MIXED_CASE_HOST, "/", "mixed", host="api.example.com"),
    "host-other": Case(HOSTS, "/", None, host="www.example.com"),
    "host-suffix-of-other": Case(HOSTS, "/", None, host="evilapi.example.com"),
    "host-empty": Case(HOSTS, "/", None, host=""),
    "wildcard-subdomain": Case(WILDCARD, "/", "wildcard", host="a.example.com"),
    "wildcard-deep-subdomain": Case(WILDCARD, "/", "wildcard", host="a.b.example.com"),
    "wildcard-with-port": Case(WILDCARD, "/", "wildcard", host="a.example.com:8443"),
    "wildcard-upper-case": Case(WILDCARD, "/", "wildcard", host="A.Example.Com"),
    "wildcard-apex": Case(WILDCARD, "/", None, host="example.com"),
    "wildcard-apex-with-port": Case(WILDCARD, "/", None, host="example.com:443"),
    "wildcard-lookalike": Case(WILDCARD, "/", None, host="badexample.com"),
    "wildcard-other-domain": Case(WILDCARD, "/", None, host="a.example.com.evil.net"),
    # context extensions
    "extensions-all-present": Case(
        EXTENSIONS, "/", "ext", context_extensions={"tier": "gold", "zone": "eu", "x": "y"}
    ),
    "extensions-one-missing": Case(EXTENSIONS, "/", None, context_extensions={"tier": "gold"}),
    "extensions-value-differs": Case(
        EXTENSIONS, "/", None, context_extensions={"tier": "silver", "zone": "eu"}
    ),
    "extensions-none": Case(EXTENSIONS, "/", None),
    # order and combinations
    "first-match-wins": Case(ORDERED, "/api/orders", "first"),
    "falls-through-to-last": Case(ORDERED, "/other", "last"),
    "all-conditions-hold": Case(
        ALL_CONDITIONS, "/api/x", "all", method="POST", context_extensions={"tier": "gold"}
    ),
    "all-but-method": Case(
        ALL_CONDITIONS, "/api/x", None, method="GET", context_extensions={"tier": "gold"}
    ),
    "all-but-host": Case(
        ALL_CONDITIONS,
        "/api/x",
        None,
        method="POST",
        host="other.example.com",
        context_extensions={"tier": "gold"},
    ),
    "all-but-extension": Case(ALL_CONDITIONS, "/api/x", None, method="POST"),
    "all-but-path": Case(
        ALL_CONDITIONS, "/apix", None, method="POST", context_extensions={"tier": "gold"}
    ),
}


@pytest.mark.parametrize("case", [pytest.param(c, id=name) for name, c in CASES.items()])
def test_select_route(tmp_path: Path, case: Case) -> None:
    routes = compile_routes(tmp_path, case.routes)
    chosen = select_route(
        routes,
        request(case.path, case.method, case.host, case.context_extensions),
    )
    assert (chosen.name if chosen is not None else None) == case.expected


def test_no_route_matches_returns_none(tmp_path: Path) -> None:
    routes = compile_routes(tmp_path, EXACT + METHODS.replace("path_prefix: /", "path: /x"))
    assert select_route(routes, request("/y")) is None


@pytest.mark.parametrize(
    ("prefix", "path", "expected"),
    [
        pytest.param("/api/orders", "/api/orders", True, id="equal"),
        pytest.param("/api/orders", "/api/orders/7", True, id="child"),
        pytest.param("/api/orders", "/api/orders-admin", False, id="sibling"),
        pytest.param("/api/", "/api/", True, id="slash-equal"),
        pytest.param("/api/", "/api", False, id="slash-shorter"),
        pytest.param("/", "/anything", True, id="root"),
    ],
)
def test_prefix_matches(prefix: str, path: str, expected: bool) -> None:
    assert prefix_matches(prefix, path) is expected


@pytest.mark.parametrize(
    ("host", "bare"),
    [
        pytest.param("api.example.com", "api.example.com", id="no-port"),
        pytest.param("api.example.com:8443", "api.example.com", id="port"),
        pytest.param("[::1]:8080", "[::1]", id="ipv6-port"),
        pytest.param("[::1]", "[::1]", id="ipv6"),
        pytest.param("api.example.com:http", "api.example.com:http", id="non-numeric-port"),
    ],
)
def test_strip_port(host: str, bare: str) -> None:
    assert strip_port(host) == bare


def test_wildcard_host_with_port_is_refused_or_matches(tmp_path: Path) -> None:
    routes_yaml = (
        "- name: w\n"
        "  match: { path_prefix: /, hosts: ['*.example.com:8443'] }\n"
        "  deny: true\n"
        "- { name: open, match: { path_prefix: / }, allow: anonymous }\n"
    )
    try:
        routes = compile_routes(tmp_path, routes_yaml)
    except PolicyError:
        return
    chosen = select_route(routes, request("/", host="a.example.com:8443"))
    assert chosen is not None and chosen.name == "w"
