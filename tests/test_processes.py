"""`ext-authz serve --processes 2`: two workers on one port under one supervisor.

The real command runs as a subprocess on loopback ports chosen at run time; every
check opens its own connection (a local subchannel pool), so the kernel's
SO_REUSEPORT spreading decides which worker answers, and the decision log's
`worker` field tells which one did.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from ext_authz.supervisor import ProcessCountError, process_count, usable_cores
from tests.support.grpc_check import Verdict, check_request, verdict
from tests.support.jwks_server import jwks_server
from tests.support.keys import Remote, policy_text
from tests.support.processes import (
    ChildProcess,
    free_port,
    running,
    serve_cmd,
    wait_for_grpc_serving,
)
from tests.support.redis_server import redis_server
from tests.support.tokens import CORP, policy_yaml
from tests.support.tokens import mint_live as mint

START = 60.0
FRESH_CHECKS = 40  # all on one worker by chance: 2 ** -39

RESTRICTED_ROUTES = """\
routes:
  - name: read-orders
    match: { path_prefix: /api/orders }
    require:
      scopes: [orders:admin]
"""


def fresh_check(port: int, token: str | None, request_id: str) -> Verdict:
    """One check on a new connection of its own."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        request = check_request("/api/orders", token, x_request_id=request_id)
        return verdict(stub.Check(request, timeout=10))


def health(port: int) -> int | None:
    """The status a fresh connection gets; None when it is refused or reset (a
    connection the kernel had queued for a worker that was just killed)."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=5
            )
        except grpc.RpcError:
            return None
        return int(reply.status)


def log_lines(server: ChildProcess) -> list[dict[str, Any]]:
    lines = []
    for raw in server.stderr_path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            continue
    return lines


def wait_until(predicate: Callable[[], object], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def worker_pids(server: ChildProcess) -> dict[int, int]:
    """The current pid of each worker, from the supervisor's log."""
    pids: dict[int, int] = {}
    for line in log_lines(server):
        if line.get("msg") == "worker started":
            pids[line["worker"]] = line["pid"]
    return pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Served:
    def __init__(self, server: ChildProcess, port: int, metrics_port: int, policy: Path) -> None:
        self.server = server
        self.port = port
        self.metrics_port = metrics_port
        self.policy = policy

    def answering_workers(self, prefix: str, token: str | None, status: int) -> set[int]:
        for n in range(FRESH_CHECKS):
            assert fresh_check(self.port, token, f"{prefix}-{n}").status == status
        wanted = {f"{prefix}-{n}" for n in range(FRESH_CHECKS)}

        def logged() -> list[dict[str, Any]]:
            return [line for line in log_lines(self.server) if line.get("decision_id") in wanted]

        assert wait_until(lambda: len(logged()) == FRESH_CHECKS, 10)
        return {line["worker"] for line in logged()}

    def sample(self, name: str, **labels: str) -> float:
        text = httpx.get(
            f"http://127.0.0.1:{self.metrics_port}/metrics", trust_env=False, timeout=5
        ).text
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    total += sample.value
        return total

    def decisions(self, result: str, reason: str) -> float:
        labels = {"route": "read-orders", "result": result, "reason": reason}
        return self.sample("ext_authz_decisions_total", **labels)


@contextmanager
def two_processes(
    tmp_path: Path, text: str | None = None, extra: tuple[str, ...] = ()
) -> Iterator[Served]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(text if text is not None else policy_yaml(CORP), encoding="utf-8")
    port, metrics_port = free_port(), free_port()
    cmd = [
        *serve_cmd(policy, port),
        "--metrics-listen",
        f"127.0.0.1:{metrics_port}",
        "--processes",
        "2",
        "--reload-interval",
        "0",
        "--shutdown-delay",
        "0",
        "--grace",
        "5",
        *extra,
    ]
    with running(cmd, name="ext-authz-processes") as server:
        assert wait_for_grpc_serving("127.0.0.1", port, START, server), server.stderr_text()
        assert wait_until(lambda: len(worker_pids(server)) == 2, 10)
        yield Served(server, port, metrics_port, policy)


@pytest.mark.slow
def test_two_processes_answer_on_one_port_are_counted_together_and_stop_on_sigterm(
    tmp_path: Path,
) -> None:
    with two_processes(tmp_path) as served:
        token = mint(CORP)
        assert served.answering_workers("a", token, 200) == {0, 1}
        assert served.answering_workers("d", None, 401) == {0, 1}
        assert served.decisions("allow", "") == FRESH_CHECKS
        assert served.decisions("deny", "token_missing") == FRESH_CHECKS
        # figures read at scrape time reach the one endpoint too (within a second)
        assert wait_until(lambda: served.sample("ext_authz_keys", issuer="corp") == 1, 5)
        assert wait_until(
            lambda: (
                served.sample("ext_authz_answer_memo_hits_total", door="grpc")
                + served.sample("ext_authz_answer_memo_misses_total", door="grpc")
                == FRESH_CHECKS
            ),
            5,
        )
        pids = list(worker_pids(served.server).values())
        assert all(alive(pid) for pid in pids)
        served.server.proc.send_signal(signal.SIGTERM)
        assert served.server.proc.wait(timeout=30) == 0
        assert not any(alive(pid) for pid in pids)


@pytest.mark.slow
def test_one_sighup_changes_the_policy_in_both_and_a_broken_one_in_neither(
    tmp_path: Path,
) -> None:
    with two_processes(tmp_path) as served:
        token = mint(CORP)
        served.policy.write_text(policy_yaml(CORP) + "routes: [", encoding="utf-8")
        served.server.proc.send_signal(signal.SIGHUP)
        assert wait_until(
            lambda: any(
                line.get("msg") == "policy reload refused" for line in log_lines(served.server)
            )
        )
        assert served.answering_workers("old", token, 200) == {0, 1}
        refused = {"result": "error"}
        assert wait_until(lambda: served.sample("ext_authz_policy_reloads_total", **refused) == 1)

        served.policy.write_text(policy_yaml(CORP, routes=RESTRICTED_ROUTES), encoding="utf-8")
        served.server.proc.send_signal(signal.SIGHUP)

        def reloaded() -> set[int]:
            return {
                line["worker"]
                for line in log_lines(served.server)
                if line.get("msg") == "policy reloaded"
            }

        assert wait_until(lambda: reloaded() == {0, 1})
        assert served.answering_workers("new", token, 403) == {0, 1}
        assert served.sample("ext_authz_policy_reloads_total", result="ok") == 2  # per process


@pytest.mark.slow
def test_a_killed_worker_is_replaced(tmp_path: Path) -> None:
    with two_processes(tmp_path) as served:
        before = worker_pids(served.server)
        os.kill(before[0], signal.SIGKILL)
        # the other worker stops saying SERVING until the replacement is ready
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        assert wait_until(lambda: health(served.port) == not_serving, 5)
        assert wait_until(lambda: worker_pids(served.server).get(0) not in (None, before[0]))
        messages = [line.get("msg") for line in log_lines(served.server)]
        assert "worker exited; restarting" in messages
        assert wait_until(
            lambda: (
                [line.get("msg") for line in log_lines(served.server)].count("all workers serving")
                == 2
            )
        )
        assert health(served.port) == health_pb2.HealthCheckResponse.SERVING
        assert worker_pids(served.server)[1] == before[1]
        assert served.answering_workers("after", mint(CORP), 200) == {0, 1}


@pytest.mark.slow
def test_two_processes_sharing_redis_fetch_the_keys_once(tmp_path: Path) -> None:
    with jwks_server(CORP.jwks()) as issuer, redis_server(tmp_path / "redis") as redis:
        issuer.behaviour.delay = 0.3  # both workers start while the first fetch runs
        text = policy_text([Remote("corp", CORP.iss, issuer)], {"cache": redis.url})
        with two_processes(tmp_path, text) as served:
            assert issuer.count() == 1
            assert served.answering_workers("keys", mint(CORP), 200) == {0, 1}
            assert issuer.count() == 1


@pytest.mark.slow
def test_the_http_door_shares_its_port_across_the_processes_too(tmp_path: Path) -> None:
    http_port = free_port()
    extra = ("--http-listen", f"127.0.0.1:{http_port}")
    with two_processes(tmp_path, extra=extra) as served:
        token = mint(CORP)
        for n in range(FRESH_CHECKS):  # a new connection each
            with httpx.Client(trust_env=False, timeout=10) as client:
                answer = client.get(
                    f"http://127.0.0.1:{http_port}/envoy/api/orders",
                    headers={"authorization": f"Bearer {token}", "x-request-id": f"h-{n}"},
                )
            assert answer.status_code == 200

        def workers() -> set[int]:
            wanted = {f"h-{n}" for n in range(FRESH_CHECKS)}
            return {
                line["worker"]
                for line in log_lines(served.server)
                if line.get("decision_id") in wanted
            }

        assert wait_until(lambda: workers() == {0, 1}, 10)
        assert served.answering_workers("g", token, 200) == {0, 1}  # and the gRPC door


def test_a_taken_port_stops_the_supervisor_before_any_worker_starts(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_yaml(CORP), encoding="utf-8")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        serve = [sys.executable, "-m", "ext_authz", "serve", "--config", str(policy)]
        done = subprocess.run(
            [*serve, "--listen", f"127.0.0.1:{port}", "--processes", "2"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert "cannot listen on 127.0.0.1:" in done.stderr
    assert "worker started" not in done.stderr


def test_a_bad_tls_option_stops_the_supervisor_not_a_worker_loop(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_yaml(CORP), encoding="utf-8")
    serve = [sys.executable, "-m", "ext_authz", "serve", "--config", str(policy)]
    done = subprocess.run(
        [*serve, "--listen", "127.0.0.1:0", "--processes", "2", "--tls-cert", "missing.pem"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "--tls-cert and --tls-key go together" in done.stderr
    assert "worker started" not in done.stderr


def test_process_count() -> None:
    assert process_count("3") == 3
    assert process_count("auto") == usable_cores() >= 1
    for bad in ("0", "-1", "many", "1000"):
        with pytest.raises(ProcessCountError):
            process_count(bad)
