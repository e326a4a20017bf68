"""One server with both doors, a real Envoy in front of each (gRPC ext_authz and
http_service), a real echo upstream and JWKS server, all on 127.0.0.1.

The shared table of `door_cases` runs through both Envoys and against the HTTP door's
`/forward-auth` and `/auth-request` endpoints directly: every door gives every request
the same answer. Then what only a real proxy shows: identity headers set and spoofed
ones gone at the upstream, challenges and bodies at the client, underscore spellings
refused, and the server down meaning 503, never an allow.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest

from ext_authz.demo.upstream import serve_upstream
from ext_authz.deploy.envoy_config import EnvoyParams
from tests.support.door_cases import (
    CASES,
    Case,
    raw_request,
    send,
    server_cmd,
    through_proxy,
    token_for,
    upstream_saw,
    write_policy,
)
from tests.support.jwks_server import jwks_server
from tests.support.processes import (
    ChildProcess,
    free_port,
    running,
    start_envoy,
    wait_for_grpc_serving,
    wait_for_http,
)
from tests.support.tokens import CORP, mint_live

pytestmark = pytest.mark.e2e

START_TIMEOUT = 30.0


@dataclass
class Stack:
    grpc_envoy: int
    http_envoy: int
    door: int
    server: ChildProcess
    upstream_port: int


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp_path = tmp_path_factory.mktemp("proxies-envoy")
    upstream = serve_upstream("127.0.0.1", 0)
    try:
        with jwks_server(CORP.jwks()) as corp:
            policy = write_policy(tmp_path, corp.jwks_uri)
            grpc_port, http_port = free_port(), free_port()
            cmd = server_cmd(policy, grpc_port=grpc_port, http_port=http_port)
            with running(cmd, name="ext-authz") as server:
                assert wait_for_grpc_serving("127.0.0.1", grpc_port, START_TIMEOUT, server)
                wait_for_http(f"http://127.0.0.1:{http_port}/healthz", START_TIMEOUT, proc=server)
                grpc_params = EnvoyParams(
                    listen_port=free_port(),
                    admin_port=free_port(),
                    ext_authz_port=grpc_port,
                    upstream_port=upstream.server_address[1],
                )
                http_params = replace(
                    grpc_params,
                    listen_port=free_port(),
                    admin_port=free_port(),
                    ext_authz_port=http_port,
                    ext_authz_http=True,
                )
                with (
                    start_envoy(grpc_params, tmp_path) as grpc_envoy,
                    start_envoy(http_params, tmp_path) as http_envoy,
                ):
                    yield Stack(
                        grpc_envoy.params.listen_port,
                        http_envoy.params.listen_port,
                        http_port,
                        server,
                        upstream.server_address[1],
                    )
    finally:
        upstream.shutdown()
        upstream.server_close()


def ask_door_directly(stack: Stack, endpoint: str, case: Case) -> int:
    """The HTTP door's endpoint asked the way Traefik/Caddy or nginx would ask it."""
    headers: dict[str, str] = {}
    token = token_for(case)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if endpoint == "/forward-auth":
        headers |= {
            "X-Forwarded-Method": case.method,
            "X-Forwarded-Host": case.host,
            "X-Forwarded-Proto": "http",
            "X-Forwarded-Uri": case.path,
        }
    else:
        headers |= {
            "X-Original-Method": case.method,
            "X-Original-URI": case.path,
            "X-Original-Host": case.host,
        }
    return send(stack.door, raw_request("GET", endpoint, "authz.local", headers)).status


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_door_gives_the_same_answer(stack: Stack, case: Case) -> None:
    answers = {
        "envoy-grpc": through_proxy(stack.grpc_envoy, case).status,
        "envoy-http": through_proxy(stack.http_envoy, case).status,
        "forward-auth": ask_door_directly(stack, "/forward-auth", case),
        "auth-request": ask_door_directly(stack, "/auth-request", case),
    }
    assert answers == dict.fromkeys(answers, case.status)


def test_allow_sets_identity_headers_and_drops_spoofed_ones(stack: Stack) -> None:
    for port in (stack.http_envoy, stack.grpc_envoy):
        token = mint_live(CORP, drop=("email",))
        response = send(
            port,
            raw_request(
                "GET",
                "/api/orders",
                "shop.test",
                {
                    "Authorization": f"Bearer {token}",
                    "X-User-Id": "admin",
                    "X-User-Email": "boss@corp.test",
                    "X-Tenant-Id": "other",
                },
            ),
        )
        headers = upstream_saw(response)["headers"]
        assert headers["x-user-id"] == "user-of-corp"
        assert headers["x-tenant-id"] == "tenant-corp"
        assert "x-user-email" not in headers
        assert "x-envoy-auth-headers-to-remove" not in headers


def test_anonymous_route_strips_every_identity_header(stack: Stack) -> None:
    response = send(
        stack.http_envoy,
        raw_request("GET", "/healthz", "shop.test", {"X-User-Id": "admin", "X-Tenant-Id": "t"}),
    )
    headers = upstream_saw(response)["headers"]
    assert "x-user-id" not in headers
    assert "x-tenant-id" not in headers


def test_denials_carry_the_challenge_and_the_json_body(stack: Stack) -> None:
    for port in (stack.http_envoy, stack.grpc_envoy):
        missing = send(port, raw_request("GET", "/api/orders", "shop.test"))
        assert missing.status == 401
        assert missing.header("www-authenticate") == 'Bearer realm="orders"'
        assert json.loads(missing.body)["error"] == "no_credentials"
        bad = send(
            port,
            raw_request("GET", "/api/orders", "shop.test", {"Authorization": "Bearer a.b.c"}),
        )
        assert bad.status == 401
        assert 'error="invalid_token"' in (bad.header("www-authenticate") or "")
        assert json.loads(bad.body)["error"] == "invalid_token"
        scope = send(
            port,
            raw_request(
                "DELETE",
                "/api/orders",
                "shop.test",
                {"Authorization": f"Bearer {mint_live(CORP, scope='orders:read')}"},
            ),
        )
        assert scope.status == 403
        assert 'scope="orders:write"' in (scope.header("www-authenticate") or "")


def test_two_credentials_are_a_400(stack: Stack) -> None:
    token = mint_live(CORP)
    raw = (
        f"GET /api/orders HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n"
        f"Authorization: Bearer {token}\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()
    for port in (stack.http_envoy, stack.grpc_envoy):
        assert send(port, raw).status == 400


def test_underscore_spelling_of_an_identity_header_never_reaches_the_upstream(
    stack: Stack,
) -> None:
    for port in (stack.http_envoy, stack.grpc_envoy):
        response = send(
            port,
            raw_request(
                "GET",
                "/healthz",
                "shop.test",
                {"x_user_id": "admin", "Authorization": f"Bearer {mint_live(CORP)}"},
            ),
        )
        assert response.status == 400  # Envoy refuses the request outright
        allowed = send(port, raw_request("GET", "/healthz", "shop.test"))
        assert "x_user_id" not in upstream_saw(allowed)["headers"]


def decision_ids(stack: Stack, wanted: str) -> list[str]:
    deadline = time.monotonic() + 5
    ids: list[str] = []
    while time.monotonic() < deadline:
        log = stack.server.stderr_text(limit=400_000)
        ids = [
            str(json.loads(line).get("decision_id"))
            for line in log.splitlines()
            if line.startswith("{") and '"msg":"decision"' in line
        ]
        if wanted in ids:
            break
        time.sleep(0.2)
    return ids


def test_envoy_owns_the_request_id_and_the_door_takes_only_short_tokens(stack: Stack) -> None:
    send(stack.http_envoy, raw_request("GET", "/healthz", "shop.test", {"X-Request-Id": "via-1"}))
    send(stack.grpc_envoy, raw_request("GET", "/healthz", "shop.test", {"X-Request-Id": "via-2"}))
    forged = "x result=allow " + "z" * 5000
    direct = {"X-Original-Method": "GET", "X-Original-URI": "/healthz"}
    for request_id in (forged, "direct-42"):
        headers = {**direct, "X-Request-Id": request_id}
        send(stack.door, raw_request("GET", "/auth-request", "a", headers))
    ids = decision_ids(stack, "direct-42")
    assert "direct-42" in ids  # a short token from a trusted proxy is kept
    assert "via-1" not in ids and "via-2" not in ids  # Envoy replaced the client's id
    assert all(len(i) <= 128 and " " not in i for i in ids)


def test_client_sent_original_request_headers_are_not_believed(stack: Stack) -> None:
    spoof = {
        "X-Forwarded-Uri": "/healthz",
        "X-Forwarded-Method": "POST",
        "X-Original-URI": "/healthz",
        "X-Original-Method": "POST",
        "X-Forwarded-Host": "shop.test",
        "X-Original-Host": "shop.test",
    }
    for port in (stack.http_envoy, stack.grpc_envoy):
        assert send(port, raw_request("GET", "/api/orders", "shop.test", spoof)).status == 401
        token = {"Authorization": f"Bearer {mint_live(CORP)}"}
        denied = send(port, raw_request("GET", "/api/orders", "admin.test", spoof | token))
        assert denied.status == 403


def test_absolute_form_request_target_is_judged_by_its_path(stack: Stack) -> None:
    for port in (stack.http_envoy, stack.grpc_envoy):
        for path, status in (("/healthz", 200), ("/api/orders", 401)):
            raw = (
                f"GET http://shop.test{path} HTTP/1.1\r\nHost: shop.test\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
            assert send(port, raw).status == status
