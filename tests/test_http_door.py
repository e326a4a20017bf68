"""The HTTP door on a real loopback socket: its three endpoints, answers, limits and
timeouts, keep-alive and pipelining. The policy, keys and authorizer are the real
ones (inline keys, a fixed clock); only the proxy in front is left out here (see
test_proxies_*.py for Envoy, nginx and Caddy)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ext_authz.authorizer import Runtime
from ext_authz.decision import Decision
from ext_authz.http.server import HttpDoor, HttpLimits, build_http_door
from ext_authz.keys.jwks import KeySet
from ext_authz.keys.store import IssuerKeys, KeyStatus
from ext_authz.policy.loader import compile_policy_text
from ext_authz.policy.model import Policy
from tests.support.doubles import FixedClock, StaticKeys
from tests.support.http_wire import Wire, WireResponse, request
from tests.support.tokens import CORP, NOW, PARTNER, mint, policy_yaml

# the mapped headers and every route's dry-run header (the default name)
IDENTITY = ["x-ext-authz-dry-run", "x-groups", "x-tenant-id", "x-user-email", "x-user-id"]


class Logged:
    def __init__(self) -> None:
        self.lines: list[tuple[Decision, str]] = []

    def __call__(self, decision: Decision, decision_id: str, seconds: float) -> None:
        self.lines.append((decision, decision_id))


def make_policy(tmp_path: Path) -> Policy:
    return compile_policy_text(policy_yaml(CORP, PARTNER), label="policy.yaml", base_dir=tmp_path)


class Door:
    def __init__(self, door: HttpDoor, port: int, logged: Logged) -> None:
        self.door = door
        self.port = port
        self.logged = logged

    def ask(self, raw: bytes) -> WireResponse:
        wire = Wire(self.port)
        try:
            wire.send(raw)
            (response,) = wire.read()
            return response
        finally:
            wire.close()


def start_door(runtime: Runtime, limits: HttpLimits | None = None) -> tuple[HttpDoor, int, Logged]:
    logged = Logged()
    door, port = build_http_door(
        "127.0.0.1:0", lambda: runtime, clock=FixedClock(NOW), observers=[logged], limits=limits
    )
    door.start()
    door.set_serving(True)
    return door, port, logged


@pytest.fixture
def door(tmp_path: Path) -> Iterator[Door]:
    policy = make_policy(tmp_path)
    running, port, logged = start_door(Runtime(policy, StaticKeys.of(policy)))
    try:
        yield Door(running, port, logged)
    finally:
        running.stop(1)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- the three endpoints -----------------------------------------------------------------


def test_envoy_endpoint_allows_with_identity_headers_and_a_remove_list(door: Door) -> None:
    answer = door.ask(
        request("GET", "/envoy/api/orders/7?page=2", bearer(mint(CORP, drop=("email",))))
    )
    assert answer.status == 200
    assert answer.header("x-user-id") == "user-of-corp"
    assert answer.header("x-tenant-id") == "tenant-corp"
    # the unset identity header, and the dry-run header that no client may send
    assert answer.header("x-envoy-auth-headers-to-remove") == "x-ext-authz-dry-run,x-user-email"
    assert answer.body == b""


def test_envoy_endpoint_anonymous_route_removes_every_identity_header(door: Door) -> None:
    answer = door.ask(request("GET", "/envoy/healthz", {"X-User-Id": "admin"}))
    assert answer.status == 200
    assert answer.header("x-user-id") is None
    assert sorted((answer.header("x-envoy-auth-headers-to-remove") or "").split(",")) == IDENTITY


def test_forward_auth_reads_the_original_request_from_x_forwarded_headers(door: Door) -> None:
    headers = {
        "X-Forwarded-Method": "GET",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "shop.test",
        "X-Forwarded-Uri": "/api/orders/7?x=1",
        **bearer(mint(CORP)),
    }
    answer = door.ask(request("GET", "/forward-auth", headers))
    assert answer.status == 200
    assert answer.header("x-user-id") == "user-of-corp"
    assert answer.header("x-envoy-auth-headers-to-remove") is None
    # the original method decides the route: POST needs orders:write from corp only
    headers["X-Forwarded-Method"] = "POST"
    headers["Authorization"] = f"Bearer {mint(CORP, scope='orders:read')}"
    denied = door.ask(request("GET", "/forward-auth", headers))
    assert denied.status == 403
    assert 'error="insufficient_scope"' in (denied.header("www-authenticate") or "")


def test_auth_request_reads_x_original_headers(door: Door) -> None:
    headers = {"X-Original-Method": "GET", "X-Original-URI": "/api/orders", **bearer(mint(CORP))}
    answer = door.ask(request("GET", "/auth-request", headers))
    assert answer.status == 200
    assert answer.header("x-user-id") == "user-of-corp"
    assert (
        door.ask(request("GET", "/auth-request", {**headers, "X-Original-URI": "/other"})).status
        == 403
    )


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        ("/forward-auth", {"X-Forwarded-Method": "GET", "X-Forwarded-Host": "a.test"}),
        ("/forward-auth", {"X-Forwarded-Uri": "/healthz", "X-Forwarded-Host": "a.test"}),
        ("/forward-auth", {"X-Forwarded-Uri": "/healthz", "X-Forwarded-Method": "GET"}),
        (
            "/forward-auth",
            {"X-Forwarded-Uri": "", "X-Forwarded-Method": "GET", "X-Forwarded-Host": "a"},
        ),
        ("/auth-request", {"X-Original-Method": "GET"}),
        ("/auth-request", {"X-Original-URI": "/healthz"}),
        ("/auth-request", {"X-Original-URI": "healthz", "X-Original-Method": "GET"}),
        ("/auth-request", {"X-Original-URI": "/health%zz", "X-Original-Method": "GET"}),
        ("/auth-request", {"X-Original-URI": "/healthz", "X-Original-Method": "G ET"}),
        (
            "/auth-request",
            {"X-Original-URI": "/healthz", "X-Original-Method": "GET", "X-Original-Host": "a,b"},
        ),
    ],
)
def test_a_request_missing_what_its_endpoint_needs_is_a_400(
    door: Door, target: str, headers: dict[str, str]
) -> None:
    # /healthz is an anonymous route: a guess would have been an allow
    answer = door.ask(request("GET", target, headers))
    assert answer.status == 400
    assert json.loads(answer.body)["error"] == "invalid_request"


def test_a_header_sent_twice_is_a_400(door: Door) -> None:
    raw = (
        b"GET /forward-auth HTTP/1.1\r\nHost: a\r\nX-Forwarded-Method: GET\r\n"
        b"X-Forwarded-Host: a.test\r\nX-Forwarded-Uri: /healthz\r\nX-Forwarded-Uri: /admin\r\n\r\n"
    )
    assert door.ask(raw).status == 400
    two_hosts = b"GET /envoy/healthz HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n"
    assert door.ask(two_hosts).status == 400


def test_deny_is_the_same_answer_as_the_grpc_door(door: Door, tmp_path: Path) -> None:
    from envoy.service.auth.v3 import external_auth_pb2

    from ext_authz.authorizer import Authorizer
    from ext_authz.envoy.server import AuthorizationService

    policy = make_policy(tmp_path)
    service = AuthorizationService(
        Authorizer(lambda: policy, StaticKeys.of(policy), FixedClock(NOW)), observers=[]
    )
    for token in (None, mint(CORP, exp=NOW - 3600), mint(CORP, scope="none"), "a,b"):
        headers = {} if token is None else {"authorization": f"Bearer {token}"}
        check = external_auth_pb2.CheckRequest()
        http = check.attributes.request.http
        http.method, http.path, http.host = "GET", "/api/orders", "app.test"
        http.headers.update(headers)
        grpc_answer = service.Check(check, None).denied_response
        wire = door.ask(
            request("GET", "/envoy/api/orders", {k.title(): v for k, v in headers.items()})
        )
        assert wire.status == grpc_answer.status.code
        grpc_headers = {h.header.key: h.header.value for h in grpc_answer.headers}
        assert wire.header("www-authenticate") == grpc_headers.get("www-authenticate")
        assert wire.header("content-type") == grpc_headers["content-type"] == "application/json"
        assert wire.body.decode() == grpc_answer.body


def test_health_and_unknown_paths(door: Door) -> None:
    assert door.ask(request("GET", "/healthz")).status == 200
    door.door.set_serving(False)
    assert door.ask(request("GET", "/healthz")).status == 503
    assert door.ask(request("GET", "/envoyx/healthz")).status == 404
    assert door.ask(request("GET", "/")).status == 404


def test_head_is_answered_without_a_body(door: Door) -> None:
    wire = Wire(door.port)
    try:
        wire.send(request("HEAD", "/envoy/api/orders"))
        head = wire.read(head_only=True)[0]
        assert head.status == 401
        assert int(head.header("content-length") or 0) > 0
        assert head.body == b""
        wire.send(request("GET", "/envoy/healthz"))  # the connection is still in step
        assert wire.read(head_only=True)[0].status == 200
    finally:
        wire.close()


# -- request ids -------------------------------------------------------------------------


def test_request_id_becomes_the_decision_id_only_when_short_and_plain(door: Door) -> None:
    door.ask(request("GET", "/envoy/healthz", {"X-Request-Id": "abc-123"}))
    door.ask(request("GET", "/envoy/healthz", {"X-Request-Id": "a" * 4000}))
    door.ask(request("GET", "/envoy/healthz", {"X-Request-Id": 'x" result=allow'}))
    ids = [decision_id for _, decision_id in door.logged.lines]
    assert ids[0] == "abc-123"
    assert len(ids[1]) == 32 and ids[1] != "a" * 32
    assert '"' not in ids[2] and " " not in ids[2]


# -- keep-alive, pipelining, malformed HTTP, limits, timeouts ----------------------------


def test_keep_alive_and_pipelining_answer_in_order(door: Door) -> None:
    wire = Wire(door.port)
    try:
        token = mint(CORP)
        wire.send(
            request("GET", "/envoy/api/orders", bearer(token))
            + request("GET", "/envoy/api/orders")
            + request("GET", "/envoy/healthz")
        )
        statuses = [r.status for r in wire.read(3)]
        assert statuses == [200, 401, 200]
        wire.send(request("GET", "/envoy/api/orders", bearer(token)))
        assert wire.read()[0].status == 200
    finally:
        wire.close()


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /envoy/healthz HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n",
        b"GET /envoy/healthz HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n",
        b"GET /envoy/healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
    ],
)
def test_malformed_http_is_a_400_and_the_connection_closes(door: Door, raw: bytes) -> None:
    wire = Wire(door.port)
    try:
        wire.send(raw)
        (answer,) = wire.read()
        assert answer.status == 400
        assert wire.peer_closed()
    finally:
        wire.close()


def test_upgrade_is_ignored_and_the_connection_closes_after_the_answer(door: Door) -> None:
    wire = Wire(door.port)
    try:
        wire.send(
            b"GET /envoy/api/orders HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\n\r\n\x00\x01binary"
        )
        assert wire.read()[0].status == 401
        assert wire.peer_closed()
    finally:
        wire.close()


def test_a_good_request_before_bad_bytes_is_still_answered(door: Door) -> None:
    wire = Wire(door.port)
    try:
        wire.send(request("GET", "/envoy/healthz") + b"NOT HTTP\r\n\r\n")
        assert [r.status for r in wire.read(2)] == [200, 400]
        assert wire.peer_closed()
    finally:
        wire.close()


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (request("GET", "/envoy/" + "a" * 9000), 431),
        (request("GET", "/envoy/healthz", {"X-Big": "b" * 40_000}), 431),
        (request("GET", "/envoy/healthz", {f"X-H{i}": "v" for i in range(120)}), 431),
        (
            b"POST /envoy/healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 70000\r\n\r\n"
            + b"x" * 70_000,
            413,
        ),
    ],
)
def test_oversized_requests_are_refused(door: Door, raw: bytes, status: int) -> None:
    wire = Wire(door.port)
    try:
        wire.send(raw)
        (answer,) = wire.read()
        assert answer.status == status
        assert wire.peer_closed()
    finally:
        wire.close()


def test_slow_request_head_times_out_and_idle_connection_is_closed(tmp_path: Path) -> None:
    policy = make_policy(tmp_path)
    running, port, _ = start_door(
        Runtime(policy, StaticKeys.of(policy)), HttpLimits(header_timeout=1.0, idle_timeout=1.5)
    )
    try:
        slow = Wire(port)
        slow.send(b"GET /envoy/healthz HTTP/1.1\r\nHost: a\r\n")
        started = time.monotonic()
        (answer,) = slow.read(timeout=5)
        assert answer.status == 408
        assert time.monotonic() - started < 4
        assert slow.peer_closed()
        idle = Wire(port)
        idle.send(request("GET", "/envoy/healthz"))
        assert idle.read()[0].status == 200
        assert idle.peer_closed(timeout=5)
        silent = Wire(port)  # connected, never sends a byte
        assert silent.peer_closed(timeout=5)
        for wire in (slow, idle, silent):
            wire.close()
    finally:
        running.stop(1)


# -- a check that must wait for a key refetch runs off the event loop --------------------


class RotatingKeys:
    """Keys whose snapshot lacks corp's key until a refetch, which is slow: a check that
    waits for it must not hold up other checks on the same server."""

    def __init__(self, keys: StaticKeys) -> None:
        self.keys = keys
        self.refetched_on: list[str] = []

    def current(self, issuer: str) -> IssuerKeys:
        if issuer == "corp" and not self.refetched_on:
            return IssuerKeys(KeySet(()), KeyStatus.FRESH)
        return self.keys.current(issuer)

    def refetch(self, issuer: str) -> IssuerKeys | None:
        time.sleep(1.0)
        self.refetched_on.append(threading.current_thread().name)
        return self.keys.current(issuer)


def test_a_refetch_runs_on_a_thread_and_other_connections_go_on(tmp_path: Path) -> None:
    policy = compile_policy_text(
        policy_yaml(CORP, PARTNER)
        .replace(
            f"issuer: {json.dumps(CORP.iss)}\n",
            f"issuer: {json.dumps(CORP.iss)}\n    jwks_uri: http://127.0.0.1:9/jwks.json\n",
        )
        .replace(f"    jwks: {json.dumps(CORP.jwks())}\n", "", 1),
        label="policy.yaml",
        base_dir=tmp_path,
    )
    keys = RotatingKeys(
        StaticKeys.of(compile_policy_text(policy_yaml(CORP, PARTNER), label="p", base_dir=tmp_path))
    )
    running, port, _ = start_door(Runtime(policy, keys))
    try:
        waiting = Wire(port)
        waiting.send(request("GET", "/envoy/api/orders", bearer(mint(CORP))))
        time.sleep(0.2)
        other = Wire(port)
        started = time.monotonic()
        other.send(request("GET", "/envoy/healthz"))
        assert other.read()[0].status == 200
        assert time.monotonic() - started < 0.5  # not stuck behind the refetch
        assert waiting.read()[0].status == 200
        assert keys.refetched_on and keys.refetched_on[0].startswith("ext-authz-http-refetch")
        waiting.close()
        other.close()
    finally:
        running.stop(1)


def test_a_non_ascii_realm_is_answered(tmp_path: Path) -> None:
    text = policy_yaml(CORP, PARTNER).replace("realm: orders", "realm: 注文")
    policy = compile_policy_text(text, label="policy.yaml", base_dir=tmp_path)
    running, port, _ = start_door(Runtime(policy, StaticKeys.of(policy)))
    try:
        wire = Wire(port)
        wire.send(request("GET", "/envoy/api/orders"))
        (answer,) = wire.read()
        assert answer.status == 401
        wire.close()
    finally:
        running.stop(1)


def test_reuse_port_lets_two_doors_share_a_port(tmp_path: Path) -> None:
    policy = make_policy(tmp_path)
    runtime = Runtime(policy, StaticKeys.of(policy))
    first, port = build_http_door("127.0.0.1:0", lambda: runtime, reuse_port=True)
    try:
        second, same = build_http_door(f"127.0.0.1:{port}", lambda: runtime, reuse_port=True)
        second.stop(0)
        assert same == port
        with pytest.raises(OSError, match="in use"):
            build_http_door(f"127.0.0.1:{port}", lambda: runtime)
    finally:
        first.stop(0)


# -- the answer memo -------------------------------------------------------------------


def test_a_repeated_token_is_answered_from_the_memo_on_every_endpoint(tmp_path: Path) -> None:
    from ext_authz.memo import AnswerMemo
    from ext_authz.tokens.cache import VerifiedTokenCache

    policy = make_policy(tmp_path)
    runtime = Runtime(policy, StaticKeys.of(policy))
    clock = FixedClock(NOW)
    tokens = VerifiedTokenCache(clock)
    memo: AnswerMemo[None] = AnswerMemo(lambda: runtime, tokens, clock)
    logged = Logged()
    running, port = build_http_door(
        "127.0.0.1:0",
        lambda: runtime,
        clock=clock,
        cache=tokens,
        observers=[logged],
        memo=memo,
    )
    running.start()
    running.set_serving(True)
    door = Door(running, port, logged)
    token = mint(CORP, drop=("email",))
    try:
        first = door.ask(request("GET", "/envoy/api/orders/7", bearer(token)))
        verified = tokens.hits + tokens.misses
        again = door.ask(request("GET", "/envoy/api/orders/8", bearer(token)))
        forwarded = door.ask(
            request(
                "GET",
                "/forward-auth",
                {
                    "X-Forwarded-Method": "GET",
                    "X-Forwarded-Proto": "https",
                    "X-Forwarded-Host": "shop.test",
                    "X-Forwarded-Uri": "/api/orders/9",
                    **bearer(token),
                },
            )
        )
        other_route = door.ask(request("POST", "/envoy/api/orders", bearer(token)))
    finally:
        running.stop(1)
    assert memo.hits == 2
    assert tokens.hits + tokens.misses == verified + 1  # only the POST reached the pipeline
    for answer in (first, again, forwarded):
        assert answer.status == 200
        assert answer.header("x-user-id") == "user-of-corp"
    # each endpoint renders the remembered decision its own way
    assert again.header("x-envoy-auth-headers-to-remove") == first.header(
        "x-envoy-auth-headers-to-remove"
    )
    assert forwarded.header("x-envoy-auth-headers-to-remove") is None
    assert other_route.status == 200  # another route (write-orders): decided afresh
    assert [decision.route for decision, _ in logged.lines] == [
        "read-orders",
        "read-orders",
        "read-orders",
        "write-orders",
    ]  # a hit is still a logged decision
