"""The answer memo: a repeated token on the same route gets last time's serialised
answer, and never one that has stopped being true."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from envoy.service.auth.v3 import external_auth_pb2

from ext_authz.authorizer import Authorizer, Runtime
from ext_authz.decision import Allow
from ext_authz.envoy.response import check_response, response_bytes, with_decision_id
from ext_authz.envoy.server import AuthorizationService
from ext_authz.errors import DenialReason
from ext_authz.memo import AnswerMemo
from ext_authz.policy.loader import compile_policy_text
from ext_authz.policy.model import Policy
from ext_authz.tokens.cache import VerifiedTokenCache
from tests.support.checks import Outcome, RecordingKeys, check
from tests.support.doubles import FixedClock
from tests.support.tokens import CORP, NOW, PARTNER, mint, policy_yaml

LEEWAY = 60


class Live:
    """A runtime a test can swap, as a reload does."""

    def __init__(self, policy: Policy, keys: RecordingKeys) -> None:
        self.runtime = Runtime(policy, keys)

    def __call__(self) -> Runtime:
        return self.runtime


class Stack:
    def __init__(self, tmp_path: Path, maxsize: int = 100, max_bytes: int = 10**8) -> None:
        self.tmp_path = tmp_path
        self.clock = FixedClock(NOW)
        policy = self.policy()
        self.keys = RecordingKeys.of(policy)
        self.live = Live(policy, self.keys)
        self.tokens = VerifiedTokenCache(self.clock)
        self.memo: AnswerMemo[bytes] = AnswerMemo(
            self.live, self.tokens, self.clock, maxsize, max_bytes
        )
        authorizer = Authorizer.over(self.live, self.clock, self.tokens)
        self.service = AuthorizationService(authorizer, "orders", memo=self.memo)

    def policy(self, routes: str | None = None) -> Policy:
        text = policy_yaml(CORP, PARTNER, routes=routes)
        return compile_policy_text(text, label="p", base_dir=self.tmp_path)

    def reload(self, routes: str | None = None) -> None:
        self.live.runtime = Runtime(self.policy(routes), self.keys)

    def check(self, **request: object) -> Outcome:
        return check(self.service, **request)


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    return Stack(tmp_path)


def test_a_repeated_token_is_answered_from_the_memo_with_the_same_answer(stack: Stack) -> None:
    token = mint(CORP)
    first = stack.check(token=token, headers={"x-request-id": "r-1"})
    verified_before = stack.tokens.hits + stack.tokens.misses
    second = stack.check(token=token, headers={"x-request-id": "r-2"})
    assert first.allowed and second.allowed
    assert stack.memo.hits == 1
    # the hit did not reach the pipeline: the verified-token cache was not asked
    assert stack.tokens.hits + stack.tokens.misses == verified_before
    assert second.upstream_headers == first.upstream_headers
    assert list(second.response.ok_response.headers_to_remove) == list(
        first.response.ok_response.headers_to_remove
    )
    # each answer carries its own decision id; the rest of the metadata is the same
    meta_1 = dict(first.response.dynamic_metadata)
    meta_2 = dict(second.response.dynamic_metadata)
    assert meta_1.pop("decision_id") == "r-1"
    assert meta_2.pop("decision_id") == "r-2"
    assert meta_1 == meta_2 == {"route": "read-orders", "issuer": "corp", "subject": "user-of-corp"}
    # and a hit is still logged as a decision
    assert second.record is not None and getattr(second.record, "route", None) == "read-orders"


def test_never_served_after_exp(stack: Stack) -> None:
    token = mint(CORP, exp=NOW + 30)
    assert stack.check(token=token).allowed
    stack.clock.advance(29 + LEEWAY)
    assert stack.check(token=token).allowed
    assert stack.memo.hits == 1
    stack.clock.advance(2)
    late = stack.check(token=token)
    assert late.status == 401 and late.reason == "token_expired"
    assert stack.memo.hits == 1


def test_never_served_for_another_route(stack: Stack) -> None:
    token = mint(CORP, scope="orders:read")  # read-orders allows it; write-orders does not
    assert stack.check(token=token, path="/api/orders/1").allowed
    assert stack.check(token=token, path="/api/orders/2").allowed  # same route: a hit
    assert stack.memo.hits == 1
    other = stack.check(token=token, path="/api/orders/1", method="POST")
    assert other.status == 403 and other.reason == "scope_missing"
    admin = stack.check(token=token, path="/admin/x")
    assert admin.status == 403
    assert stack.memo.hits == 1


def test_never_served_after_a_reload_that_changes_the_route(stack: Stack) -> None:
    token = mint(CORP)
    assert stack.check(token=token).upstream_headers["x-user-id"] == "user-of-corp"
    assert stack.check(token=token).allowed
    assert stack.memo.hits == 1
    stack.reload(
        """\
routes:
  - name: read-orders
    match: { path_prefix: /api/orders }
    require:
      scopes: [orders:admin]
"""
    )
    denied = stack.check(token=token)
    assert denied.status == 403 and denied.reason == "scope_missing"
    stack.reload(
        """\
routes:
  - name: read-orders
    match: { path_prefix: /api/orders }
    require: {}
    headers: { x-subject: sub }
"""
    )
    allowed = stack.check(token=token)
    assert allowed.upstream_headers == {"x-subject": "user-of-corp"}
    assert stack.memo.hits == 1  # both answers were decided afresh


def test_any_reload_empties_the_memo(stack: Stack) -> None:
    token = mint(CORP)
    stack.check(token=token)
    assert len(stack.memo) == 1
    stack.reload()  # the same file again: a new generation all the same
    stack.check(token=token)
    assert stack.memo.hits == 0


def test_not_served_once_the_issuer_withdraws_the_key(stack: Stack) -> None:
    token = mint(CORP)
    assert stack.check(token=token).allowed
    stack.keys._keys.pop("corp")
    withdrawn = stack.check(token=token)
    assert not withdrawn.allowed
    assert stack.memo.hits == 0


def test_denials_and_dry_runs_are_not_remembered(stack: Stack, tmp_path: Path) -> None:
    expired = mint(CORP, exp=NOW - 3600)
    for _ in range(2):
        assert stack.check(token=expired).status == 401
    assert stack.check(token=mint(CORP), path="/admin/x").status == 403
    assert len(stack.memo) == 0
    stack.reload(
        """\
routes:
  - name: trial
    match: { path_prefix: /api }
    require: { scopes: [nobody-has-this] }
    mode: dry_run
"""
    )
    for _ in range(2):
        outcome = stack.check(token=mint(CORP))
        assert outcome.allowed and outcome.record is not None
        assert getattr(outcome.record, "result", None) == "dry_run"
    assert len(stack.memo) == 0 and stack.memo.hits == 0


def test_another_authorization_header_is_another_entry(stack: Stack) -> None:
    token = mint(CORP)
    assert stack.check(token=token).allowed
    malformed = stack.check(authorization=f"Bearer {token}, Bearer {token}")
    assert malformed.status == 400 and malformed.reason == "authorization_multiple"
    assert stack.check(token=mint(PARTNER)).upstream_headers["x-user-id"] == "user-of-partner"
    assert stack.memo.hits == 0


def test_memory_is_bounded_and_the_newest_answers_stay(tmp_path: Path) -> None:
    stack = Stack(tmp_path, maxsize=10)
    tokens = [mint(CORP, sub=f"user-{n}") for n in range(25)]
    for token in tokens:
        assert stack.check(token=token).allowed
        assert len(stack.memo) <= 10
    assert stack.check(token=tokens[-1]).allowed
    assert stack.memo.hits == 1
    assert stack.check(token=tokens[0]).allowed
    assert stack.memo.hits == 1  # the oldest made room


def test_memory_is_bounded_in_bytes_too(tmp_path: Path) -> None:
    stack = Stack(tmp_path, maxsize=1000, max_bytes=20_000)
    padding = "p" * 2000  # about 2.7 kB per token once signed and encoded
    for n in range(40):
        assert stack.check(token=mint(CORP, sub=f"user-{n}", pad=padding)).allowed
        assert stack.memo.bytes <= 20_000
    assert 3 <= len(stack.memo) < 10


def test_expired_answers_make_room_first(tmp_path: Path) -> None:
    stack = Stack(tmp_path, maxsize=10)
    for n in range(9):
        assert stack.check(token=mint(CORP, sub=f"short-{n}", exp=NOW + 5)).allowed
    keeper = mint(CORP, sub="long")
    assert stack.check(token=keeper).allowed
    stack.clock.advance(5 + LEEWAY)
    assert stack.check(token=mint(CORP, sub="new")).allowed  # full: the expired go
    assert len(stack.memo) == 2
    assert stack.check(token=keeper).allowed
    assert stack.memo.hits == 1


def test_decision_id_appended_to_a_serialised_answer_is_the_built_message() -> None:
    allow = Allow(
        "read-orders",
        issuer="corp",
        subject="s",
        headers=(("x-user-id", "s"),),
        remove=("x-tenant-id",),
    )
    for decision_id in ("", "d-1", "x" * 100, "x" * 101, "x" * 128, "é" * 200):
        joined = external_auth_pb2.CheckResponse.FromString(
            with_decision_id(response_bytes(allow), decision_id)
        )
        assert joined == check_response(allow, decision_id)


def test_a_denial_is_logged_and_answered_with_the_memo_on(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    outcome = stack.check(path="/api/orders")
    assert outcome.status == 401 and outcome.reason == DenialReason.TOKEN_MISSING.value


COOKIE_ROUTES = """\
routes:
  - name: web-app
    match: { path_prefix: /app }
    token_from:
      cookies: [session]
      headers: [{ name: Authorization, prefix: "Bearer " }]
    require: { issuers: [corp] }
    headers: { x-user-id: sub }
"""


def test_a_token_from_a_cookie_is_remembered_by_the_cookie_it_came_in(stack: Stack) -> None:
    stack.reload(COOKIE_ROUTES)
    alice, bob = mint(CORP, sub="alice"), mint(CORP, sub="bob")

    def user(cookie: str, **headers: str) -> Outcome:
        return stack.check(path="/app", headers={"cookie": cookie, **headers})

    assert user(f"session={alice}").upstream_headers == {"x-user-id": "alice"}
    assert user(f"session={alice}").upstream_headers == {"x-user-id": "alice"}
    assert stack.memo.hits == 1
    # another cookie: another answer, whatever else the request carries
    assert user(f"session={bob}").upstream_headers == {"x-user-id": "bob"}
    assert stack.memo.hits == 1


def test_a_second_credential_beside_a_remembered_one_is_still_refused(stack: Stack) -> None:
    stack.reload(COOKIE_ROUTES)
    token = mint(CORP)
    assert stack.check(path="/app", token=token).allowed
    assert stack.check(path="/app", token=token).allowed
    assert stack.memo.hits == 1
    both = stack.check(path="/app", token=token, headers={"cookie": f"session={token}"})
    assert both.status == 400 and both.reason == "authorization_multiple"
    assert stack.memo.hits == 1


def test_a_request_no_route_can_be_judged_on_is_a_400_with_the_memo_on(stack: Stack) -> None:
    # route selection refuses two Host values; the memo must leave that to the
    # pipeline, never turn it into an internal error
    joined = stack.check(token=mint(CORP), host="api.example.com,evil.test")
    assert (joined.status, joined.reason) == (400, "request_invalid")
