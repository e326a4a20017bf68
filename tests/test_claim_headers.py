"""Claims rendered into upstream header values, and the set/remove lists for a route."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from ext_authz.policy.claim_headers import (
    MAX_HEADER_VALUE_BYTES,
    Unrenderable,
    claim_headers,
    render,
)
from ext_authz.policy.loader import compile_policy_text
from ext_authz.policy.model import Policy, Route

RENDERED: dict[str, tuple[Any, str]] = {
    "string": ("alice", "alice"),
    "empty-string": ("", ""),
    "string-with-tab": ("a\tb", "a\tb"),
    "int": (42, "42"),
    "negative-int": (-7, "-7"),
    "big-int": (2**63, "9223372036854775808"),
    "float": (1.5, "1.5"),
    "float-integral": (2.0, "2.0"),
    "true": (True, "true"),
    "false": (False, "false"),
    "list-of-strings": (["admin", "ops"], "admin, ops"),
    "list-of-one": (["admin"], "admin"),
    "empty-list": ([], ""),
    "list-mixed-scalars": (["a", 1, True, 2.5], "a, 1, true, 2.5"),
    "list-with-object": ([{"b": 1, "a": "x"}], r'"{\"a\":\"x\",\"b\":1}"'),
    "list-with-list": ([[1, 2], "z"], '"[1,2]", z'),
    "object-compact-sorted": ({"b": 1, "a": [1, 2]}, '{"a":[1,2],"b":1}'),
    "object-nested": ({"org": {"id": 7, "tags": ["x"]}}, '{"org":{"id":7,"tags":["x"]}}'),
    "object-escapes-newline": ({"n": "a\nb"}, '{"n":"a\\nb"}'),
    "string-at-size-limit": ("a" * MAX_HEADER_VALUE_BYTES, "a" * MAX_HEADER_VALUE_BYTES),
}


@pytest.mark.parametrize(
    ("value", "expected"),
    [pytest.param(v, e, id=name) for name, (v, e) in RENDERED.items()],
)
def test_render(value: Any, expected: str) -> None:
    assert render(value) == expected


REFUSED: dict[str, tuple[Any, str]] = {
    "null": (None, "null"),
    "list-with-null": (["a", None], "null"),
    "not-json-value": ({1, 2}, "not a JSON value"),
    "bytes": (b"alice", "not a JSON value"),
    "carriage-return": ("alice\r", "control characters"),
    "line-feed": ("alice\nX-Admin: 1", "control characters"),
    "crlf-injection": ("alice\r\nx-role: admin", "control characters"),
    "nul": ("ali\x00ce", "control characters"),
    "delete": ("alice\x7f", "control characters"),
    "escape": ("\x1b[31m", "control characters"),
    "control-in-list-item": (["ok", "bad\n"], "control characters"),
    "over-length": ("a" * (MAX_HEADER_VALUE_BYTES + 1), "size limit"),
    "unicode-string": ("Zoë", "non-ASCII"),
    "object-unicode": ({"n": "Zoë"}, "non-ASCII"),
    "over-length-in-utf8-bytes": ("é" * (MAX_HEADER_VALUE_BYTES // 2 + 1), "size limit"),
    "over-length-list": (["a" * 5000, "b" * 5000], "size limit"),
}


@pytest.mark.parametrize(
    ("value", "why"),
    [pytest.param(v, w, id=name) for name, (v, w) in REFUSED.items()],
)
def test_render_refuses(value: Any, why: str) -> None:
    with pytest.raises(Unrenderable, match=why):
        render(value)


POLICY = textwrap.dedent(
    """\
    routes:
      - name: orders
        match: { path_prefix: /api/orders }
        allow: anonymous
        headers:
          X-User-Id: sub
          x-user-email: email
          x-tenant-id: org.tenant
          x-roles: https://example.com/roles
      - name: billing
        match: { path_prefix: /api/billing }
        allow: anonymous
        headers:
          x-billing-account: account
          x-user-id: sub
      - name: open
        match: { path_prefix: / }
        allow: anonymous
    """
)


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    base = tmp_path_factory.mktemp("claim-headers")
    return compile_policy_text(POLICY, label="t.yaml", base_dir=Path(base))


def route(policy: Policy, name: str) -> Route:
    return next(r for r in policy.routes if r.name == name)


# every mapped header, and the dry-run header of every route (removed even though no
# route of this policy is in dry-run: a client must not pass its own upstream)
ALL_IDENTITY_HEADERS = frozenset(
    {
        "x-user-id",
        "x-user-email",
        "x-tenant-id",
        "x-roles",
        "x-billing-account",
        "x-ext-authz-dry-run",
    }
)


def test_identity_headers_cover_every_route(policy: Policy) -> None:
    assert policy.identity_headers == ALL_IDENTITY_HEADERS


HEADER_CASES: dict[
    str, tuple[str, Mapping[str, Any], tuple[tuple[str, str], ...], tuple[str, ...], int]
] = {
    "all-present": (
        "orders",
        {
            "sub": "alice",
            "email": "alice@example.com",
            "org": {"tenant": "t-1"},
            "https://example.com/roles": ["admin", "ops"],
        },
        (
            ("x-user-id", "alice"),
            ("x-user-email", "alice@example.com"),
            ("x-tenant-id", "t-1"),
            ("x-roles", "admin, ops"),
        ),
        ("x-billing-account", "x-ext-authz-dry-run"),
        0,
    ),
    "some-missing": (
        "orders",
        {"sub": "alice", "org": {"region": "eu"}},
        (("x-user-id", "alice"),),
        ("x-billing-account", "x-ext-authz-dry-run", "x-roles", "x-tenant-id", "x-user-email"),
        0,
    ),
    "none-present": (
        "orders",
        {"iss": "x"},
        (),
        tuple(sorted(ALL_IDENTITY_HEADERS)),
        0,
    ),
    "other-route": (
        "billing",
        {"sub": "bob", "account": 1234, "email": "bob@example.com"},
        (("x-billing-account", "1234"), ("x-user-id", "bob")),
        ("x-ext-authz-dry-run", "x-roles", "x-tenant-id", "x-user-email"),
        0,
    ),
    "route-without-mappings": (
        "open",
        {"sub": "alice", "email": "alice@example.com"},
        (),
        tuple(sorted(ALL_IDENTITY_HEADERS)),
        0,
    ),
    "unrenderable-values": (
        "orders",
        {
            "sub": "alice",
            "email": "alice@example.com\r\nx-admin: true",
            "org": {"tenant": None},
        },
        (("x-user-id", "alice"),),
        ("x-billing-account", "x-ext-authz-dry-run", "x-roles", "x-tenant-id", "x-user-email"),
        2,
    ),
}


@pytest.mark.parametrize(
    ("route_name", "claims", "to_set", "to_remove", "note_count"),
    [pytest.param(*case, id=name) for name, case in HEADER_CASES.items()],
)
def test_claim_headers(
    policy: Policy,
    route_name: str,
    claims: Mapping[str, Any],
    to_set: tuple[tuple[str, str], ...],
    to_remove: tuple[str, ...],
    note_count: int,
) -> None:
    headers, remove, notes = claim_headers(
        route(policy, route_name).headers, claims, policy.identity_headers
    )
    assert headers == to_set
    assert remove == to_remove
    assert len(notes) == note_count
    assert not {name for name, _ in headers} & set(remove)
    assert set(remove) | {name for name, _ in headers} == ALL_IDENTITY_HEADERS


def test_notes_name_the_header_and_never_the_value(policy: Policy) -> None:
    secret = "alice@example.com\r\nx-admin: true"
    huge = "tenant-" + "z" * MAX_HEADER_VALUE_BYTES
    _, remove, notes = claim_headers(
        route(policy, "orders").headers,
        {"sub": "alice", "email": secret, "org": {"tenant": huge}},
        policy.identity_headers,
    )
    assert notes == (
        "x-user-email: claim holds control characters",
        "x-tenant-id: claim is over the header size limit",
    )
    assert "x-user-email" in remove and "x-tenant-id" in remove
    joined = "\n".join(notes)
    assert "alice@example.com" not in joined
    assert "x-admin" not in joined
    assert "zzzz" not in joined
