"""Identity headers an upstream cannot misread: padded values are unsafe, list
rendering is unambiguous, and the dry-run header never comes from the client."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ext_authz.authorizer import Authorizer
from ext_authz.decision import Allow, Decision, Deny
from ext_authz.errors import DenialReason
from ext_authz.policy.claim_headers import Unrenderable, format_value, render
from ext_authz.policy.loader import compile_policy_text
from ext_authz.policy.model import Policy
from ext_authz.request import RequestView
from tests.support.doubles import FixedClock, StaticKeys
from tests.support.tokens import CORP, NOW, mint, policy_yaml

ROUTES = """\
routes:
  - { name: health, match: { path: /healthz }, allow: anonymous }
  - name: drop
    match: { path_prefix: /drop }
    require: {}
    headers: { x-name: name, x-groups: groups }
  - name: strict
    match: { path_prefix: /strict }
    require: {}
    unsafe_values: deny
    headers: { x-name: name }
  - name: encode
    match: { path_prefix: /encode }
    require: {}
    unsafe_values: encode
    headers: { x-name: name }
  - name: own-dry-run-name
    match: { path_prefix: /own }
    dry_run_header: x-trial
    allow: anonymous
"""


@pytest.fixture
def policy(tmp_path: Path) -> Policy:
    return compile_policy_text(policy_yaml(CORP, routes=ROUTES), label="p", base_dir=tmp_path)


@pytest.fixture
def authorizer(policy: Policy) -> Authorizer:
    keys = StaticKeys.of(policy)
    return Authorizer(lambda: policy, keys, FixedClock(NOW))


def check(authorizer: Authorizer, path: str, token: str | None = None, **headers: str) -> Decision:
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return authorizer.check(RequestView("GET", path, "api.test", headers))


# --- padding ----------------------------------------------------------------------

PADDED = ["admin ", " admin", "\tadmin", "admin\t", " "]


@pytest.mark.parametrize("value", PADDED)
def test_leading_or_trailing_whitespace_is_unsafe(value: str) -> None:
    with pytest.raises(Unrenderable, match="leading or trailing whitespace"):
        render(value)


@pytest.mark.parametrize("value", ["ad min", "a\tb"])
def test_inner_whitespace_is_kept(value: str) -> None:
    assert render(value) == value


@pytest.mark.parametrize("value", PADDED)
def test_a_padded_claim_is_dropped_denied_or_encoded(authorizer: Authorizer, value: str) -> None:
    token = mint(CORP, name=value)
    dropped = check(authorizer, "/drop", token, **{"x-name": "admin"})
    assert isinstance(dropped, Allow)
    assert "x-name" not in dict(dropped.headers) and "x-name" in dropped.remove
    denied = check(authorizer, "/strict", token)
    assert isinstance(denied, Deny) and denied.reason is DenialReason.CLAIM_VALUE_UNSAFE
    encoded = check(authorizer, "/encode", token)
    assert isinstance(encoded, Allow)
    assert dict(encoded.headers)["x-name"] == quote(value, safe="")


# --- lists ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "header"),
    [
        (["staff", "admins"], "staff, admins"),
        (["staff, admins"], '"staff, admins"'),
        (["staff,admins"], '"staff,admins"'),
        (['say "hi"'], r'"say \"hi\""'),
        ([r"a\b"], r'"a\\b"'),
        (["", "a"], '"", a'),
        ([" a", "b"], '" a", b'),
        (["a", "b "], 'a, "b "'),
        ([1, "1", True], "1, 1, true"),
    ],
)
def test_list_items_that_could_be_misread_are_quoted(value: list[Any], header: str) -> None:
    assert format_value(value) == header


def test_the_two_lists_of_the_report_render_differently(authorizer: Authorizer) -> None:
    one = check(authorizer, "/drop", mint(CORP, groups=["staff, admins"]))
    two = check(authorizer, "/drop", mint(CORP, groups=["staff", "admins"]))
    assert isinstance(one, Allow) and isinstance(two, Allow)
    assert dict(one.headers)["x-groups"] != dict(two.headers)["x-groups"]


def parse_list(header: str) -> list[str]:
    """A reader of the documented format: items joined by ', '; a quoted item is an
    RFC 9110 quoted-string."""
    items: list[str] = []
    i = 0
    while i <= len(header):
        if header.startswith('"', i):
            i += 1
            item = ""
            while header[i] != '"':
                if header[i] == "\\":
                    i += 1
                item += header[i]
                i += 1
            i += 1
        else:
            end = header.find(",", i)
            end = len(header) if end == -1 else end
            item, i = header[i:end], end
        items.append(item)
        if i == len(header):
            break
        assert header.startswith(", ", i), header
        i += 2
    return items


@given(st.lists(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126)), min_size=1))
def test_a_string_list_reads_back_exactly(value: list[str]) -> None:
    try:
        header = render(value)
    except Unrenderable:
        return  # unsafe as a whole (whitespace at an end, size): never sent as-is
    assert parse_list(header) == value


# --- the dry-run header -----------------------------------------------------------


def test_no_route_in_dry_run_still_removes_the_dry_run_headers(
    policy: Policy, authorizer: Authorizer
) -> None:
    assert not any(route.dry_run for route in policy.routes)
    spoofed = {"x-ext-authz-dry-run": "scope_missing", "x-trial": "x"}
    for decision in (
        check(authorizer, "/healthz", **spoofed),
        check(authorizer, "/drop", mint(CORP), **spoofed),
        check(authorizer, "/own", **spoofed),
    ):
        assert isinstance(decision, Allow), decision
        assert {"x-ext-authz-dry-run", "x-trial"} <= set(decision.remove)
