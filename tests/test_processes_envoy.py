"""Envoy in front of `ext-authz serve --processes 2`: recycled connections spread the
checks over both workers, and Envoy's access log carries the decision from the
dynamic metadata (route, issuer, decision id)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from ext_authz.demo.upstream import serve_upstream
from ext_authz.deploy.envoy_config import EnvoyParams
from tests.support.processes import (
    free_port,
    running,
    serve_cmd,
    start_envoy,
    wait_for_grpc_serving,
)
from tests.support.tokens import CORP, policy_yaml
from tests.support.tokens import mint_live as mint
from tests.test_processes import log_lines, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REQUESTS = 60  # over connections of 3 checks each: 20 connections, 2 ** -19 on one worker


def json_lines(path: Path) -> list[dict[str, Any]]:
    out = []
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            out.append(json.loads(raw))
        except ValueError:
            continue
    return out


def test_envoy_spreads_checks_over_two_processes_and_logs_the_decision(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_yaml(CORP), encoding="utf-8")
    port = free_port()
    cmd = [
        *serve_cmd(policy, port),
        "--processes",
        "2",
        "--shutdown-delay",
        "0",
        "--grace",
        "2",
    ]
    upstream = serve_upstream("127.0.0.1", 0)
    try:
        with running(cmd, name="ext-authz-processes") as server:
            assert wait_for_grpc_serving("127.0.0.1", port, 60, server)
            params = replace(
                EnvoyParams(
                    listen_port=free_port(),
                    admin_port=free_port(),
                    ext_authz_port=port,
                    upstream_port=upstream.server_address[1],
                ),
                ext_authz_max_requests_per_connection=3,
            )
            assert params.access_log
            with (
                start_envoy(params, tmp_path) as envoy,
                httpx.Client(trust_env=False, timeout=10) as client,
            ):
                token = mint(CORP)
                for _ in range(REQUESTS):
                    response = client.get(
                        envoy.url("/api/orders"), headers={"authorization": f"Bearer {token}"}
                    )
                    assert response.status_code == 200
                assert client.get(envoy.url("/api/orders")).status_code == 401

                # Envoy gives each request its id (x-request-id), which becomes the
                # decision id in the server's decision line and in Envoy's access log
                def decided() -> dict[str, dict[str, Any]]:
                    return {
                        line["decision_id"]: line
                        for line in log_lines(server)
                        if line.get("msg") == "decision"
                    }

                def access_log() -> list[dict[str, Any]]:  # leaving out Envoy's ready probes
                    lines = json_lines(envoy.process.stdout_path)
                    return [line for line in lines if line.get("authz_decision_id")]

                assert wait_until(lambda: len(decided()) >= REQUESTS + 1, 10), len(decided())
                assert wait_until(lambda: len(access_log()) >= REQUESTS + 1, 10), access_log()[:2]
                decisions = decided()
                assert len(decisions) == len(access_log()) == REQUESTS + 1
                allowed = [d for d in decisions.values() if d["result"] == "allow"]
                assert len(allowed) == REQUESTS
                assert {d["worker"] for d in allowed} == {0, 1}
                for line in access_log():
                    decision = decisions[line["authz_decision_id"]]
                    assert line["request_id"] == line["authz_decision_id"]
                    assert line["authz_route"] == decision["route"] == "read-orders"
                    assert line["status"] == decision["status"]
                    if line["status"] == 200:
                        assert line["authz_issuer"] == "corp"
                assert token not in envoy.process.stdout_path.read_text(encoding="utf-8")
    finally:
        upstream.shutdown()
        upstream.server_close()
