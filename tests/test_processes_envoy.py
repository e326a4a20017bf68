"""Envoy in front of `ext-authz serve --processes 2`: recycled connections spread the
checks over both workers, and Envoy's access log carries the decision from the
dynamic metadata (route, issuer, decision id)."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from ext_authz.demo.run import wait_for_grpc_serving
from ext_authz.demo.upstream import serve_upstream
from ext_authz.envoy.config import EnvoyParams
from tests.support.processes import free_port, running, start_envoy
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
        sys.executable,
        "-m",
        "ext_authz",
        "serve",
        "--config",
        str(policy),
        "--listen",
        f"127.0.0.1:{port}",
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
                ids = [f"spread-{n}" for n in range(REQUESTS)]
                for request_id in ids:
                    response = client.get(
                        envoy.url("/api/orders"),
                        headers={"authorization": f"Bearer {token}", "x-request-id": request_id},
                    )
                    assert response.status_code == 200
                denied = client.get(envoy.url("/api/orders"), headers={"x-request-id": "no-token"})
                assert denied.status_code == 401

                def decided() -> dict[str, int]:
                    return {
                        line["decision_id"]: line["worker"]
                        for line in log_lines(server)
                        if line.get("msg") == "decision"
                    }

                assert wait_until(lambda: set(ids) <= set(decided()), 10)
                assert {decided()[i] for i in ids} == {0, 1}

                def access_log() -> dict[str, dict[str, Any]]:
                    lines = json_lines(envoy.process.stdout_path)
                    return {str(line.get("request_id")): line for line in lines}

                assert wait_until(lambda: "no-token" in access_log(), 10)
                logged = access_log()
                allowed = logged[ids[0]]
                assert allowed["authz_route"] == "read-orders"
                assert allowed["authz_issuer"] == "corp"
                assert allowed["authz_decision_id"] == ids[0]
                assert allowed["status"] == 200
                assert logged["no-token"]["status"] == 401
                assert logged["no-token"]["authz_route"] == "read-orders"
                assert token not in envoy.process.stdout_path.read_text(encoding="utf-8")
    finally:
        upstream.shutdown()
        upstream.server_close()
