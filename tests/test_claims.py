"""Registered claims (exp, nbf, iat, aud), reading claims by path, scopes and JSON equality."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from typing import Any

import pytest

from ext_authz.errors import DenialReason, Denied
from ext_authz.policy.claims import MISSING, json_equal, lookup, scopes_of
from ext_authz.policy.loader import compile_policy_text
from ext_authz.policy.model import IssuerPolicy, Policy
from ext_authz.tokens.claims import check_registered_claims

NOW = 1_700_000_000.0
LEEWAY = 60.0
HOUR = 3600.0


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    text = textwrap.dedent(
        """\
        issuers:
          corp:
            issuer: https://login.example.com/
            jwks_uri: https://login.example.com/jwks.json
            audiences: [orders-api, billing-api]
            leeway: 60s
          any-audience:
            issuer: https://other.example.com/
            jwks_uri: https://other.example.com/jwks.json
            leeway: 0
        routes:
          - { name: r, match: { path_prefix: / }, deny: true }
        """
    )
    return compile_policy_text(text, label="t.yaml", base_dir=tmp_path_factory.mktemp("claims"))


@pytest.fixture
def corp(policy: Policy) -> IssuerPolicy:
    issuer = policy.issuers["corp"]
    assert issuer.leeway == LEEWAY
    return issuer


def claims(**overrides: Any) -> dict[str, Any]:
    """A valid claim set for `corp` at NOW; `name=MISSING` drops a claim."""
    base: dict[str, Any] = {
        "iss": "https://login.example.com/",
        "sub": "alice",
        "aud": "orders-api",
        "exp": NOW + HOUR,
        "nbf": NOW - 10,
        "iat": NOW - 10,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not MISSING}


REGISTERED: dict[str, tuple[Mapping[str, Any], DenialReason | None]] = {
    "valid": (claims(), None),
    "valid-integer-times": (claims(exp=int(NOW) + 3600, nbf=int(NOW), iat=int(NOW)), None),
    "no-nbf-no-iat": (claims(nbf=MISSING, iat=MISSING), None),
    # exp
    "exp-missing": (claims(exp=MISSING), DenialReason.EXPIRATION_MISSING),
    "exp-null": (claims(exp=None), DenialReason.CLAIM_TYPE_INVALID),
    "exp-numeric-string": (claims(exp="1800000000"), DenialReason.CLAIM_TYPE_INVALID),
    "exp-true": (claims(exp=True), DenialReason.CLAIM_TYPE_INVALID),
    "exp-infinite": (claims(exp=float("inf")), DenialReason.CLAIM_TYPE_INVALID),
    "exp-nan": (claims(exp=float("nan")), DenialReason.CLAIM_TYPE_INVALID),
    "exp-list": (claims(exp=[NOW + HOUR]), DenialReason.CLAIM_TYPE_INVALID),
    "exp-integer-beyond-float": (claims(exp=10**400), DenialReason.CLAIM_TYPE_INVALID),
    "exp-negative-integer-beyond-float": (claims(exp=-(10**400)), DenialReason.CLAIM_TYPE_INVALID),
    "nbf-integer-beyond-float": (claims(nbf=10**400), DenialReason.CLAIM_TYPE_INVALID),
    "iat-integer-beyond-float": (claims(iat=10**400), DenialReason.CLAIM_TYPE_INVALID),
    "expired-past-leeway": (claims(exp=NOW - LEEWAY - 1), DenialReason.TOKEN_EXPIRED),
    "expired-exactly-at-leeway": (claims(exp=NOW - LEEWAY), DenialReason.TOKEN_EXPIRED),
    "expired-within-leeway": (claims(exp=NOW - LEEWAY + 1), None),
    "expires-now-within-leeway": (claims(exp=NOW), None),
    # nbf
    "nbf-future-beyond-leeway": (claims(nbf=NOW + LEEWAY + 1), DenialReason.TOKEN_NOT_YET_VALID),
    "nbf-future-within-leeway": (claims(nbf=NOW + LEEWAY - 1), None),
    "nbf-string": (claims(nbf="0"), DenialReason.CLAIM_TYPE_INVALID),
    # iat
    "iat-future-beyond-leeway": (
        claims(iat=NOW + LEEWAY + 1),
        DenialReason.TOKEN_ISSUED_IN_FUTURE,
    ),
    "iat-future-within-leeway": (claims(iat=NOW + LEEWAY), None),
    "iat-bool": (claims(iat=False), DenialReason.CLAIM_TYPE_INVALID),
    # aud
    "aud-string": (claims(aud="billing-api"), None),
    "aud-list-with-one-accepted": (claims(aud=["other", "orders-api"]), None),
    "aud-other-string": (claims(aud="other-api"), DenialReason.AUDIENCE_MISMATCH),
    "aud-substring": (claims(aud="orders"), DenialReason.AUDIENCE_MISMATCH),
    "aud-superstring": (claims(aud="orders-api-v2"), DenialReason.AUDIENCE_MISMATCH),
    "aud-case-differs": (claims(aud="Orders-API"), DenialReason.AUDIENCE_MISMATCH),
    "aud-number": (claims(aud=42), DenialReason.AUDIENCE_MISMATCH),
    "aud-missing": (claims(aud=MISSING), DenialReason.AUDIENCE_MISMATCH),
    "aud-null": (claims(aud=None), DenialReason.AUDIENCE_MISMATCH),
    "aud-empty-list": (claims(aud=[]), DenialReason.AUDIENCE_MISMATCH),
    "aud-list-with-number": (claims(aud=["orders-api", 7]), DenialReason.AUDIENCE_MISMATCH),
    "aud-object": (claims(aud={"orders-api": True}), DenialReason.AUDIENCE_MISMATCH),
    "aud-nested-list": (claims(aud=[["orders-api"]]), DenialReason.AUDIENCE_MISMATCH),
}


@pytest.mark.parametrize(
    ("token_claims", "reason"),
    [pytest.param(c, r, id=name) for name, (c, r) in REGISTERED.items()],
)
def test_check_registered_claims(
    corp: IssuerPolicy, token_claims: Mapping[str, Any], reason: DenialReason | None
) -> None:
    if reason is None:
        assert check_registered_claims(token_claims, corp, NOW) == float(token_claims["exp"])
        return
    with pytest.raises(Denied) as denied:
        check_registered_claims(token_claims, corp, NOW)
    assert denied.value.reason is reason


@pytest.mark.parametrize(
    ("token_claims", "reason"),
    [
        pytest.param(claims(aud=MISSING), None, id="aud-missing"),
        pytest.param(claims(aud=42), None, id="aud-number"),
        pytest.param(claims(exp=NOW), DenialReason.TOKEN_EXPIRED, id="no-leeway-expired-at-exp"),
        pytest.param(claims(exp=NOW + 1), None, id="no-leeway-one-second-left"),
        pytest.param(claims(nbf=NOW + 1), DenialReason.TOKEN_NOT_YET_VALID, id="no-leeway-nbf"),
    ],
)
def test_issuer_without_audiences_and_leeway(
    policy: Policy, token_claims: Mapping[str, Any], reason: DenialReason | None
) -> None:
    issuer = policy.issuers["any-audience"]
    assert issuer.audiences is None
    if reason is None:
        check_registered_claims(token_claims, issuer, NOW)
        return
    with pytest.raises(Denied) as denied:
        check_registered_claims(token_claims, issuer, NOW)
    assert denied.value.reason is reason


def test_denial_detail_names_the_claim_not_its_value(corp: IssuerPolicy) -> None:
    with pytest.raises(Denied) as denied:
        check_registered_claims(claims(exp="1800000000"), corp, NOW)
    assert "exp" in denied.value.detail
    assert "1800000000" not in str(denied.value)


NESTED = {
    "sub": "alice",
    "org": {"tenant": "t-1", "unit": {"code": 7}},
    "https://example.com/roles": ["admin"],
    "a.b": "whole-name",
    "a": {"b": "nested"},
    "empty": {},
    "null": None,
    "list": [{"x": 1}],
}

LOOKUPS: dict[str, tuple[tuple[str, ...], Any]] = {
    "top-level": (("sub",), "alice"),
    "two-levels": (("org", "tenant"), "t-1"),
    "three-levels": (("org", "unit", "code"), 7),
    "object-value": (("org", "unit"), {"code": 7}),
    "name-with-dots": (("https://example", "com/roles"), ["admin"]),
    "whole-name-before-nested": (("a", "b"), "whole-name"),
    "null-value-is-present": (("null",), None),
    "missing-top": (("email",), MISSING),
    "missing-nested": (("org", "region"), MISSING),
    "through-a-string": (("sub", "x"), MISSING),
    "through-a-list": (("list", "0", "x"), MISSING),
    "through-null": (("null", "x"), MISSING),
    "empty-object": (("empty", "x"), MISSING),
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [pytest.param(p, e, id=name) for name, (p, e) in LOOKUPS.items()],
)
def test_lookup(path: tuple[str, ...], expected: Any) -> None:
    found = lookup(NESTED, path)
    if expected is MISSING:
        assert found is MISSING
    else:
        assert found is not MISSING
        assert found == expected


SCOPES: dict[str, tuple[Mapping[str, Any], frozenset[str]]] = {
    "scope-string": (
        {"scope": "orders:read  orders:write"},
        frozenset({"orders:read", "orders:write"}),
    ),
    "scp-list": ({"scp": ["orders:read", "profile"]}, frozenset({"orders:read", "profile"})),
    "scp-string": ({"scp": "orders:read profile"}, frozenset({"orders:read", "profile"})),
    "both": ({"scope": "a", "scp": ["b"]}, frozenset({"a", "b"})),
    "scp-list-non-strings-ignored": ({"scp": ["a", 1, None, ["b"]]}, frozenset({"a"})),
    "scope-number": ({"scope": 5}, frozenset()),
    "scope-list-under-scope": ({"scope": ["a", "b"]}, frozenset({"a", "b"})),
    "none": ({"sub": "alice"}, frozenset()),
    "empty-string": ({"scope": ""}, frozenset()),
    "tabs-and-newlines": ({"scope": "a\tb\nc"}, frozenset({"a", "b", "c"})),
}


@pytest.mark.parametrize(
    ("token_claims", "expected"),
    [pytest.param(c, e, id=name) for name, (c, e) in SCOPES.items()],
)
def test_scopes_of(token_claims: Mapping[str, Any], expected: frozenset[str]) -> None:
    assert scopes_of(token_claims) == expected


JSON_EQUALITY: dict[str, tuple[Any, Any, bool]] = {
    "true-vs-1": (True, 1, False),
    "1-vs-true": (1, True, False),
    "false-vs-0": (False, 0, False),
    "true-vs-true": (True, True, True),
    "true-vs-false": (True, False, False),
    "1-vs-1.0": (1, 1.0, True),
    "1.5-vs-1.5": (1.5, 1.5, True),
    "string-1-vs-1": ("1", 1, False),
    "1-vs-string-1": (1, "1", False),
    "string-vs-string": ("a", "a", True),
    "string-case": ("a", "A", False),
    "null-vs-null": (None, None, True),
    "null-vs-false": (None, False, False),
    "null-vs-empty-string": (None, "", False),
    "empty-list-vs-empty-object": ([], {}, False),
    "nested-equal": ({"a": [1, {"b": True}]}, {"a": [1.0, {"b": True}]}, True),
    "nested-bool-vs-int": ({"a": [1, {"b": True}]}, {"a": [1, {"b": 1}]}, False),
    "nested-extra-key": ({"a": 1}, {"a": 1, "b": 2}, False),
    "nested-key-differs": ({"a": 1}, {"b": 1}, False),
    "list-order": ([1, 2], [2, 1], False),
    "list-length": ([1], [1, 1], False),
    "list-vs-scalar": (["a"], "a", False),
    "list-string-vs-int": (["1"], [1], False),
}


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [pytest.param(a, b, e, id=name) for name, (a, b, e) in JSON_EQUALITY.items()],
)
def test_json_equal(left: Any, right: Any, expected: bool) -> None:
    assert json_equal(left, right) is expected
    assert json_equal(right, left) is expected
