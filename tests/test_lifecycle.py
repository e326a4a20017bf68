"""The serving process's lifecycle: a reload never holds up SIGTERM, a stop abandons a
reload still fetching keys, and denials take the realm of the policy now running."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest

from ext_authz.app import ServeOptions, Server
from tests.support.grpc_check import CheckClient
from tests.support.jwks_server import jwks_server
from tests.support.keys import Remote, write_policy
from tests.support.processes import free_port, running, serve_cmd, wait_for_grpc_serving
from tests.support.tokens import CORP, mint_live, policy_yaml

pytestmark = pytest.mark.slow

START = 30.0


def _wait(predicate: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_sigterm_during_a_reload_waiting_on_a_slow_issuer_stops_at_once(tmp_path: Path) -> None:
    with jwks_server(CORP.jwks()) as corp_idp, jwks_server(CORP.jwks()) as slow_idp:
        corp = Remote("corp", CORP.iss, corp_idp)
        policy = write_policy(tmp_path / "policy.yaml", [corp])
        port = free_port()
        cmd = serve_cmd(policy, port, "--reload-interval", "0", "--grace", "2")
        with running(cmd, name="ext-authz") as server:
            assert wait_for_grpc_serving("127.0.0.1", port, START, server)
            # the new issuer's key server answers after 40 s; its fetch waits up to 40 s
            slow_idp.behaviour.delay = 40.0
            slow = Remote("slow", "https://slow.test", slow_idp, keys={"fetch_timeout": "40s"})
            write_policy(policy, [corp, slow])
            server.proc.send_signal(signal.SIGHUP)
            assert _wait(lambda: slow_idp.count() >= 1), "the reload never asked the slow issuer"
            client = CheckClient(f"127.0.0.1:{port}")
            try:  # checks go on, on the running policy, while the reload waits
                assert client.check("/api/orders", mint_live(CORP)).status == 200
            finally:
                client.close()
            started = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            assert server.proc.wait(timeout=15) == 0
            assert time.monotonic() - started < 15
            log = server.stderr_text(1_000_000)
            assert "policy reloaded" not in log


def test_denials_take_the_realm_of_the_running_policy(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_yaml(CORP), encoding="utf-8")
    server = Server(
        ServeOptions(
            config=policy,
            listen="127.0.0.1:0",
            reload_interval=0,
            shutdown_delay=0,
            grace=1,
            decision_log="off",
        )
    )
    server.start()
    client = CheckClient(f"127.0.0.1:{server.port}")
    too_many = {f"x_h{i}": "v" for i in range(300)}  # refused before the pipeline runs
    try:
        before = client.check("/api/orders", **too_many)
        assert before.status == 400
        assert before.headers["www-authenticate"].startswith('Bearer realm="orders"')
        policy.write_text(
            policy_yaml(CORP).replace("realm: orders", "realm: renamed"), encoding="utf-8"
        )
        reloaded = threading.Thread(target=server.reload)
        reloaded.start()
        reloaded.join()
        assert _wait(lambda: server.holder.runtime.policy.realm == "renamed")
        after = client.check("/api/orders", **too_many)
        assert after.headers["www-authenticate"].startswith('Bearer realm="renamed"')
    finally:
        client.close()
        server.stop()
        server.drain()
