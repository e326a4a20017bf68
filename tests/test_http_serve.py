"""`ext-authz serve --http-listen` as a process: the HTTP door alone (`--listen off`) or
next to the gRPC door, with the same hot reload, metrics, decision log and shutdown."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.processes import free_port, running, wait_for_grpc_serving, wait_for_http
from tests.support.tokens import CORP, mint_live

START_TIMEOUT = 30.0

POLICY = """\
realm: orders
issuers:
  corp:
    issuer: {iss}
    audiences: [orders-api]
    algorithms: [RS256]
    jwks: {jwks}
routes:
  - name: orders
    match: {{ path_prefix: /api/orders }}
    {access}
  - name: everything-else
    match: {{ path_prefix: / }}
    deny: true
"""


def write(path: Path, access: str) -> None:
    text = POLICY.format(iss=json.dumps(CORP.iss), jwks=json.dumps(CORP.jwks()), access=access)
    path.write_text(text, encoding="utf-8")


def cmd(policy: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ext_authz", "serve", "--config", str(policy), *extra]


def check(port: int, token: str | None = None) -> httpx.Response:
    headers = {"X-Original-Method": "GET", "X-Original-URI": "/api/orders/1"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    with httpx.Client(trust_env=False, timeout=5) as client:
        return client.get(f"http://127.0.0.1:{port}/auth-request", headers=headers)


def test_http_door_alone_reloads_counts_logs_and_shuts_down(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    write(policy, "require: { scopes: [orders:read] }")
    door, metrics = free_port(), free_port()
    args = cmd(
        policy,
        "--listen",
        "off",
        "--http-listen",
        f"127.0.0.1:{door}",
        "--metrics-listen",
        f"127.0.0.1:{metrics}",
        "--reload-interval",
        "0.2",
        "--shutdown-delay",
        "1.5",
    )
    with running(args, name="ext-authz") as server:
        wait_for_http(f"http://127.0.0.1:{door}/healthz", START_TIMEOUT, proc=server)
        token = mint_live(CORP)
        for _ in range(3):  # one miss, then two answers from the HTTP door's memo
            assert check(door, token).status_code == 200
        assert check(door).status_code == 401
        with httpx.Client(trust_env=False, timeout=5) as client:
            before = client.get(f"http://127.0.0.1:{metrics}/metrics").text
        assert 'ext_authz_answer_memo_hits_total{door="http"} 2.0' in before
        assert 'ext_authz_answer_memo_misses_total{door="http"} 1.0' in before
        assert 'door="grpc"' not in before  # --listen off: no gRPC door, no gRPC memo
        write(policy, "deny: true")  # hot reload: the same file, a stricter route
        deadline = time.monotonic() + 10
        while check(door, mint_live(CORP)).status_code != 403:
            assert time.monotonic() < deadline, "the HTTP door never saw the new policy"
            time.sleep(0.2)
        with httpx.Client(trust_env=False, timeout=5) as client:
            exposition = client.get(f"http://127.0.0.1:{metrics}/metrics").text
        assert 'ext_authz_decisions_total{reason="",result="allow",route="orders"}' in exposition
        assert 'reason="route_deny",result="deny",route="orders"' in exposition
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # within --shutdown-delay: still answering, no longer ready
        with httpx.Client(trust_env=False, timeout=5) as client:
            assert client.get(f"http://127.0.0.1:{door}/healthz").status_code == 503
        assert check(door, mint_live(CORP)).status_code == 403
        assert server.proc.wait(15) == 0
        log = server.stderr_text(limit=200_000)
    decisions = [json.loads(x) for x in log.splitlines() if '"msg":"decision"' in x]
    assert {d["result"] for d in decisions} >= {"allow", "deny"}
    assert all(mint_live(CORP)[:20] not in line for line in log.splitlines())


def test_both_doors_serve_one_policy(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    write(policy, "require: { scopes: [orders:read] }")
    grpc_port, door = free_port(), free_port()
    args = cmd(policy, "--listen", f"127.0.0.1:{grpc_port}", "--http-listen", f"127.0.0.1:{door}")
    with running(args, name="ext-authz") as server:
        assert wait_for_grpc_serving("127.0.0.1", grpc_port, START_TIMEOUT, server)
        wait_for_http(f"http://127.0.0.1:{door}/healthz", START_TIMEOUT, proc=server)
        assert check(door, mint_live(CORP)).status_code == 200


@pytest.mark.parametrize("listen", ["127.0.0.1:notaport", "256.0.0.1:1"])
def test_a_bad_http_listen_address_stops_start_up(tmp_path: Path, listen: str) -> None:
    policy = tmp_path / "policy.yaml"
    write(policy, "deny: true")
    with running(cmd(policy, "--listen", "off", "--http-listen", listen), name="bad") as server:
        assert server.proc.wait(30) == 1
        assert "cannot start" in server.stderr_text()


def test_no_door_at_all_is_refused() -> None:
    from ext_authz.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["serve", "--config", "policy.yaml", "--listen", "off"])
    assert exited.value.code == 2
