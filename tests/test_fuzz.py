"""Property tests over everything that reads attacker-controlled input.

Each parser returns its result or raises its one documented exception (`Denied`,
`Unrenderable`/`UnsafeClaim`, `BadCheckRequest`), never anything else; the full
pipeline never errors internally and never allows a `require` route without one of
the known good tokens. Examples are bounded (the `bounded` profile of conftest.py);
`HYPOTHESIS_PROFILE=long` runs 20,000 per property (`make fuzz`).

Claim values include lone UTF-16 surrogates and nesting thousands of levels deep: both
once made a valid token a 500 (see the regressions at the end of this file).
"""

from __future__ import annotations

import base64
import json
import re
import string
from collections.abc import Callable
from typing import Any

import pytest
from envoy.service.auth.v3 import external_auth_pb2
from hypothesis import example, given
from hypothesis import strategies as st

from ext_authz.decision import Allow, Deny
from ext_authz.envoy.request import MAX_HEADERS, BadCheckRequest, request_view
from ext_authz.errors import DenialReason, Denied
from ext_authz.policy.claim_headers import (
    MAX_HEADER_VALUE_BYTES,
    HeaderPlan,
    Unrenderable,
    UnsafeClaim,
    claim_headers,
    render,
)
from ext_authz.policy.claims import MISSING, lookup
from ext_authz.policy.model import HeaderMapping, UnsafeValues
from ext_authz.request import RequestView
from ext_authz.tokens.credentials import MAX_AUTHORIZATION_BYTES, bearer_token
from ext_authz.tokens.format import (
    MAX_HEADER_BYTES,
    MAX_SIGNATURE_BYTES,
    MAX_TOKEN_BYTES,
    SignedToken,
    b64url_decode,
    decode_json_object,
    parse_signed,
)
from tests.support.checks import run_check
from tests.support.service import OPEN, make_stack, nested
from tests.support.tokens import CORP, PARTNER, b64url, good_claims, mint

R = DenialReason
B64URL = string.ascii_letters + string.digits + "-_"
B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")

STACK = make_stack()
GOOD = (mint(CORP), mint(PARTNER), mint(OPEN), nested(mint(CORP)))
ANONYMOUS_PATH = "/healthz"


def _anonymous(path: str) -> bool:
    """The anonymous route's `path`, as docs/policy.md spells its forms: `;` parameters
    are removed and one trailing slash is ignored."""
    path = re.sub(r";[^/]*", "", path)
    return ANONYMOUS_PATH in (path, path.removesuffix("/"))


# strategies ---------------------------------------------------------------------------

# text as JSON can carry it: lone surrogates included (JSON escapes like "\ud83d")
json_text = st.text(max_size=40) | st.text(
    alphabet=st.characters(categories=["Cs", "Ll", "Nd", "So", "Cc"]), max_size=12
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | json_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)
json_objects = st.dictionaries(st.text(max_size=12), json_values, max_size=8)


def _nest(depth: int, as_object: bool) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"a": value} if as_object else [value]
    return value


deep_values = st.builds(_nest, st.integers(100, 3000), st.booleans())
segments = st.text(alphabet=B64URL + "=+/. \n!", max_size=80)


@st.composite
def json_bytes(draw: st.DrawFn) -> bytes:
    """JSON text as bytes: valid objects, other values, duplicated members, edits."""
    kind = draw(st.sampled_from(["object", "value", "duplicate", "edited", "binary"]))
    if kind == "binary":
        return draw(st.binary(max_size=200))
    text = json.dumps(draw(json_objects if kind != "value" else json_values))
    if kind == "duplicate" and text.startswith("{") and text != "{}":
        name = json.dumps(draw(st.text(max_size=6)))
        text = "{" + f"{name}: 1, {name}: 2, " + text[1:]
    if kind == "edited" and text:
        at = draw(st.integers(0, len(text)))
        text = (
            text[:at]
            + draw(st.sampled_from(["NaN", "Infinity", "\\ud800", "}", '"', "\x00"]))
            + text[at:]
        )
    return text.encode("utf-8", "surrogatepass")


@st.composite
def structured_jws(draw: st.DrawFn) -> str:
    """A compact JWS with random (mostly plausible) header, payload and signature."""
    header = draw(json_objects)
    header.setdefault(
        "alg", draw(st.sampled_from(["RS256", "ES256", "EdDSA", "none", "HS256", ""]))
    )
    if draw(st.booleans()):
        header["kid"] = draw(st.sampled_from([CORP.kid, PARTNER.kid, "x"]) | st.text(max_size=20))
    payload = good_claims(CORP) | draw(json_objects) if draw(st.booleans()) else draw(json_objects)
    signature = draw(st.binary(max_size=300))
    parts = [
        b64url(json.dumps(header).encode()),
        b64url(json.dumps(payload).encode()),
        b64url(signature),
    ]
    return ".".join(parts)


@st.composite
def mutated_tokens(draw: st.DrawFn) -> str:
    """A good token, edited the ways a forger would."""
    token = draw(st.sampled_from(GOOD))
    kind = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "segments", "case"]))
    at = draw(st.integers(0, len(token) - 1))
    if kind == "flip":
        return token[:at] + draw(st.sampled_from(B64URL + ".=")) + token[at + 1 :]
    if kind == "delete":
        return token[:at] + token[at + draw(st.integers(1, 40)) :]
    if kind == "insert":
        return (
            token[:at] + draw(st.text(alphabet=B64URL + ".", min_size=1, max_size=8)) + token[at:]
        )
    if kind == "truncate":
        return token[:at]
    if kind == "case":
        return token[:at] + token[at:].swapcase()
    parts = token.split(".")
    choice = draw(st.sampled_from(["swap", "duplicate", "drop", "empty", "foreign"]))
    i = draw(st.integers(0, len(parts) - 1))
    j = draw(st.integers(0, len(parts) - 1))
    if choice == "swap":
        parts[i], parts[j] = parts[j], parts[i]
    elif choice == "duplicate":
        parts.insert(i, parts[j])
    elif choice == "drop":
        del parts[i]
    elif choice == "empty":
        parts[i] = ""
    else:
        other = draw(st.sampled_from(GOOD)).split(".")
        parts[i] = other[min(i, len(other) - 1)]
    return ".".join(parts)


tokens = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=B64URL + ".", max_size=400),
    structured_jws(),
    mutated_tokens(),
    st.sampled_from(GOOD),
)


@st.composite
def authorization_values(draw: st.DrawFn) -> str:
    scheme = draw(
        st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "Bearerx", "", "Bearer\t"])
    )
    separator = draw(st.sampled_from([" ", "  ", "", "\t", ", "]))
    value = f"{scheme}{separator}{draw(tokens)}"
    if draw(st.booleans()):
        value = (
            draw(st.sampled_from(["", " ", "\t"])) + value + draw(st.sampled_from(["", " ", ","]))
        )
    return value


header_names = st.sampled_from(
    ["authorization", "x-user-id", "x-request-id", "cookie", ":path", ":method", ":authority"]
) | st.text(alphabet=string.ascii_letters + "-:", min_size=1, max_size=20)
paths = st.sampled_from(
    ["/api/orders", "/api/orders/7", "/api/orders-admin", "/healthz", "/healthz/", "/admin", "/"]
) | st.text(max_size=40)
paths_with_query = st.builds(lambda p, q: p + q, paths, st.sampled_from(["", "?a=1", "#f", "?x#y"]))


@st.composite
def check_requests(draw: st.DrawFn) -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method = draw(
        st.sampled_from(["GET", "get", "POST", "DELETE", "HEAD", ""]) | st.text(max_size=8)
    )
    http.path = draw(paths_with_query)
    http.host = draw(st.sampled_from(["api.test", "API.TEST:443", ""]) | st.text(max_size=30))
    headers = draw(st.lists(st.tuples(header_names, st.text(max_size=80)), max_size=8))
    if draw(st.booleans()):
        headers.append(("authorization", draw(authorization_values())))
    if draw(st.integers(0, 19)) == 0:
        headers += [(f"x-filler-{i}", "v") for i in range(draw(st.integers(150, 260)))]
    if draw(st.booleans()):
        for name, value in headers:
            entry = http.header_map.headers.add()
            entry.key = name
            if draw(st.booleans()):
                entry.raw_value = draw(st.binary(max_size=20)) + value.encode()
            else:
                entry.value = value
    else:
        for name, value in headers:
            http.headers[name] = value
    if draw(st.booleans()):
        http.id = draw(st.text(max_size=20))
    for key, value in draw(
        st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=2)
    ).items():
        request.attributes.context_extensions[key] = value
    return request


# the parsers -----------------------------------------------------------------------------


def only(exception: type[Exception], call: Callable[[], Any]) -> Any:
    """The call's result, or None when it raised `exception` (anything else fails)."""
    try:
        return call()
    except exception:
        return None


@given(
    st.dictionaries(header_names, st.text(max_size=100), max_size=6),
    st.none() | authorization_values(),
)
@example({}, "Bearer " + "a" * MAX_AUTHORIZATION_BYTES)
def test_bearer_token_returns_a_token_or_denies(
    headers: dict[str, str], authorization: str | None
) -> None:
    headers = {k.lower(): v for k, v in headers.items()}
    if authorization is not None:
        headers["authorization"] = authorization
    token = only(Denied, lambda: bearer_token(headers))
    if "authorization" not in headers:
        assert token is None
    elif token is not None:
        assert B64TOKEN.fullmatch(token)
        assert token in headers["authorization"]
        assert len(headers["authorization"]) <= MAX_AUTHORIZATION_BYTES


@given(segments)
@example("")
@example("QQ")
@example("QR")
@example("QQ==")
def test_b64url_decode_is_strict_and_canonical(segment: str) -> None:
    raw = only(Denied, lambda: b64url_decode(segment, "segment"))
    if raw is not None:
        assert b64url(raw) == segment


@given(st.binary(max_size=300))
def test_b64url_decode_reads_what_base64url_writes(data: bytes) -> None:
    encoded = base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    assert b64url_decode(encoded, "segment") == data


@given(json_bytes())
@example(b'{"a": 1, "a": 2}')
@example(b"[" * 5000)
@example(b'{"exp": NaN}')
@example(b"\xff\xfe{}")
def test_decode_json_object_returns_an_object_or_denies(raw: bytes) -> None:
    refusal: DenialReason | None = None
    try:
        value = decode_json_object(raw, R.TOKEN_PAYLOAD_INVALID, "payload")
    except Denied as denied:
        refusal = denied.reason
    if refusal is not None:
        assert refusal in (R.TOKEN_PAYLOAD_INVALID, R.TOKEN_DUPLICATE_MEMBER)
        return
    assert isinstance(value, dict)
    assert value == json.loads(raw)


@given(tokens)
@example("a" * (MAX_TOKEN_BYTES + 1))
@example("e30.e30.")
@example(".".join(["e30"] * 5))
def test_parse_signed_returns_a_token_or_denies(token: str) -> None:
    signed = only(Denied, lambda: parse_signed(token))
    if signed is None:
        return
    assert isinstance(signed, SignedToken)
    assert len(token) <= MAX_TOKEN_BYTES
    assert isinstance(signed.alg, str)
    assert signed.kid is None or isinstance(signed.kid, str)
    assert len(signed.signature) <= MAX_SIGNATURE_BYTES
    assert len(json.dumps(signed.header)) <= MAX_HEADER_BYTES * 6  # escapes may grow it
    assert "crit" not in signed.header
    assert repr(signed).startswith("SignedToken(")


paths_into = st.lists(
    st.text(max_size=6) | st.sampled_from(["org", "tenant", "a.b", ""]), min_size=1, max_size=4
)


@given(json_objects, paths_into)
@example({"a.b": 1, "a": {"b": 2}}, ["a", "b"])
@example({"a": [1, 2]}, ["a", "0"])
def test_lookup_finds_a_value_or_missing_and_never_raises(
    claims: dict[str, Any], path: list[str]
) -> None:
    value = lookup(claims, tuple(path))
    if value is MISSING:
        return
    whole = ".".join(path)
    if len(path) > 1 and whole in claims:
        assert value == claims[whole]
        return
    walked: Any = claims
    for part in path:
        walked = walked[part]
    assert value == walked


def _safe_header_value(text: str) -> bool:
    return (
        text.isascii()
        and not any((ord(ch) < 0x20 and ch != "\t") or ord(ch) == 0x7F for ch in text)
        and len(text.encode()) <= MAX_HEADER_VALUE_BYTES
    )


@given(
    json_values | deep_values | st.sets(st.integers(), max_size=2) | st.binary(max_size=4),
    st.sampled_from(["plain", "json", "base64url"]),
)
@example("line\r\nx-injected: 1", "plain")
@example("x" * (MAX_HEADER_VALUE_BYTES + 1), "plain")
@example([None], "plain")
@example(float("nan"), "plain")
def test_render_gives_a_safe_header_value_or_unrenderable(value: Any, encoding: str) -> None:
    text = only(Unrenderable, lambda: render(value, encoding))
    if text is not None:
        assert _safe_header_value(text)


mappings = st.lists(
    st.builds(
        lambda header, path, encoding: HeaderMapping(header, ".".join(path), tuple(path), encoding),
        st.sampled_from(["x-user-id", "x-user-email", "x-tenant-id", "x-groups", "x-a"]),
        paths_into,
        st.sampled_from(["plain", "json", "base64url"]),
    ),
    max_size=5,
    unique_by=lambda m: m.header,
)


@given(
    mappings,
    json_objects | st.dictionaries(st.sampled_from(["sub", "email", "org"]), deep_values),
    st.frozensets(st.sampled_from(["x-user-id", "x-user-email", "x-tenant-id", "x-groups", "x-z"])),
    st.sampled_from(list(UnsafeValues)),
)
def test_claim_headers_sets_safe_values_and_removes_every_other_identity_header(
    maps: list[HeaderMapping],
    claims: dict[str, Any],
    identity: frozenset[str],
    unsafe: UnsafeValues,
) -> None:
    identity = identity | {m.header for m in maps}
    refused: str | None = None
    try:
        plan = claim_headers(tuple(maps), claims, identity, unsafe)
    except UnsafeClaim as unsafe_claim:
        refused = unsafe_claim.header
    if refused is not None:
        assert unsafe is UnsafeValues.DENY
        assert refused in identity
        return
    assert isinstance(plan, HeaderPlan)
    set_names = [name for name, _ in plan.headers]
    assert len(set_names) == len(set(set_names))
    assert set(set_names) | set(plan.remove) == identity
    assert not set(set_names) & set(plan.remove)
    for _, value in plan.headers:
        assert _safe_header_value(value)


@given(check_requests())
def test_request_view_reads_any_check_request_or_refuses_it(
    request: external_auth_pb2.CheckRequest,
) -> None:
    try:
        view = request_view(request)
    except BadCheckRequest:
        http = request.attributes.request.http
        assert max(len(http.header_map.headers), len(http.headers)) > MAX_HEADERS
        return
    assert isinstance(view, RequestView)
    assert all(name == name.lower() for name in view.headers)
    assert "?" not in view.path and "#" not in view.path
    assert view.method == view.method.upper()
    assert view.host == view.host.lower()


# the whole pipeline ------------------------------------------------------------------------


def _allowed_token(headers: dict[str, str]) -> str | None:
    try:
        return bearer_token(headers)
    except Denied:
        return None


@given(authorization_values(), st.sampled_from(["/api/orders", "/api/orders/1", "/admin"]))
def test_authorizer_never_allows_a_require_route_without_a_good_token(
    authorization: str, path: str
) -> None:
    headers = {"authorization": authorization}
    decision = STACK.authorizer.check(RequestView("GET", path, "api.test", headers))
    assert isinstance(decision, Allow | Deny)
    if isinstance(decision, Deny):
        assert decision.reason is not R.INTERNAL_ERROR
    else:
        assert _allowed_token(headers) in GOOD


@given(check_requests())
def test_check_answers_every_request_and_only_allows_good_tokens_or_anonymous(
    request: external_auth_pb2.CheckRequest,
) -> None:
    outcome = run_check(STACK.service, request)
    try:
        view = request_view(request)
    except BadCheckRequest:  # too many headers: refused (today as an internal error)
        assert not outcome.allowed
        assert outcome.status in (400, 413, 431, 500)
        return
    assert outcome.response.HasField("ok_response") != outcome.response.HasField("denied_response")
    if outcome.allowed:
        assert _anonymous(view.path) or _allowed_token(dict(view.headers)) in GOOD
    else:
        assert outcome.status in (400, 401, 403)
        assert outcome.reason is not None and outcome.reason != R.INTERNAL_ERROR.value


def test_the_good_tokens_are_allowed() -> None:
    """The properties above are not vacuous: each good token does pass."""
    for token in GOOD:
        assert STACK.check(token=token).status == 200


# regressions found by fuzzing -------------------------------------------------------------


def _signed_with(claims_json: str) -> str:
    import jwt

    return jwt.api_jws.encode(
        claims_json.encode(), CORP.key, algorithm="RS256", headers={"kid": CORP.kid}
    )


def _claims_json(**raw: str) -> str:
    """good_claims(CORP) as JSON text, with members replaced by raw JSON fragments."""
    claims = good_claims(CORP) | {name: f"@{name}@" for name in raw}
    text = json.dumps(claims)
    for name, fragment in raw.items():
        text = text.replace(json.dumps(f"@{name}@"), fragment)
    return text


def test_regression_lone_surrogate_in_a_mapped_claim_is_unrenderable() -> None:
    """A lone UTF-16 surrogate (JSON "\\ud83d", what JavaScript IdPs emit when they cut
    a string inside an emoji) once made render() raise UnicodeEncodeError."""
    for encoding in ("plain", "json", "base64url"):
        with pytest.raises(Unrenderable):
            render("Zo\ud83d", encoding)


def test_regression_lone_surrogate_in_a_mapped_claim_is_dropped_not_an_internal_error() -> None:
    """...and so a 500 for a valid token on a route mapping the claim."""
    outcome = STACK.check(token=_signed_with(_claims_json(email='"Zo\\ud83d"')))
    assert outcome.status == 200, outcome
    assert "x-user-email" not in outcome.upstream_headers
    assert "x-user-email" in outcome.response.ok_response.headers_to_remove


def test_regression_lone_surrogate_in_sub_is_a_deny_not_an_exception() -> None:
    """...and, in `sub`, an exception out of AuthorizationService.Check (the dynamic
    metadata cannot hold it): now the subject is simply left out."""
    token = _signed_with(_claims_json(sub='"u\\ud83d"', scope='"profile"'))
    outcome = STACK.check(token=token)
    assert (outcome.status, outcome.reason) == (403, R.SCOPE_MISSING.value)
    assert "subject" not in outcome.response.dynamic_metadata


def test_regression_deeply_nested_claim_is_unrenderable() -> None:
    """A claim nested ~900 levels deep (3 KB of JSON) once made render() raise
    RecursionError."""
    deep = json.loads("[" * 900 + "]" * 900)
    with pytest.raises(Unrenderable):
        render(deep)


def test_regression_deeply_nested_claim_is_dropped_not_an_internal_error() -> None:
    token = _signed_with(_claims_json(email="[" * 900 + "]" * 900))
    assert len(token) < MAX_TOKEN_BYTES
    outcome = STACK.check(token=token)
    assert outcome.status == 200, outcome
    assert "x-user-email" not in outcome.upstream_headers
