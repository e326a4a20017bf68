"""Operating the server: metrics, hot reload, TLS and mTLS, shutdown under load.

Every test runs the real server as a subprocess on loopback ports chosen at run time.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ext_authz.app import _stamp, restamp
from tests.support.grpc_check import CheckClient
from tests.support.jwks_server import jwks_server
from tests.support.pki import Pki, make_pki
from tests.support.processes import (
    ChildProcess,
    free_port,
    running,
    serve_cmd,
    wait_for_grpc_serving,
)
from tests.support.tokens import CORP, ROGUE_RSA, policy_yaml, public_jwk
from tests.support.tokens import mint_live as mint

START = 30.0


# --- metrics -----------------------------------------------------------------------


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", trust_env=False, timeout=5).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_count_a_known_mix_of_decisions(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_yaml(CORP), encoding="utf-8")
    port, metrics_port = free_port(), free_port()
    cmd = serve_cmd(policy, port, "--metrics-listen", f"127.0.0.1:{metrics_port}")
    with running(cmd, name="ext-authz") as server:
        assert wait_for_grpc_serving("127.0.0.1", port, START, server)
        client = CheckClient(f"127.0.0.1:{port}")
        token = mint(CORP)
        try:
            for _ in range(3):
                assert client.check("/api/orders", token).status == 200
            for _ in range(2):
                assert client.check("/api/orders").status == 401
            assert client.check("/api/orders", mint(CORP, scope="profile")).status == 403
            assert client.check("/internal").status == 403
        finally:
            client.close()
        samples = scrape(metrics_port)

    def decisions(route: str, result: str, reason: str) -> float:
        labels = (("reason", reason), ("result", result), ("route", route))
        return samples.get(("ext_authz_decisions_total", labels), 0.0)

    assert decisions("read-orders", "allow", "") == 3
    assert decisions("read-orders", "deny", "token_missing") == 2
    assert decisions("read-orders", "deny", "scope_missing") == 1
    assert decisions("everything-else", "deny", "route_deny") == 1
    assert samples[("ext_authz_check_duration_seconds_count", (("result", "allow"),))] == 3
    # the repeated allows come from the answer memo, before the token cache
    assert samples[("ext_authz_answer_memo_hits_total", (("door", "grpc"),))] == 2
    assert samples[("ext_authz_token_cache_hits_total", ())] == 0
    assert samples[("ext_authz_keys", (("issuer", "corp"),))] == 1
    assert samples[("ext_authz_keys_state", (("issuer", "corp"), ("state", "static")))] == 1
    assert any(name == "ext_authz_build_info" for name, _ in samples)
    label_values = {value for _, labels in samples for _, value in labels}
    assert not any(token_part in label_values for token_part in token.split("."))


# --- hot reload --------------------------------------------------------------------


def wait_until(predicate: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_policy_edit_changes_decisions_and_a_broken_edit_changes_nothing(
    tmp_path: Path,
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_yaml(CORP), encoding="utf-8")
    port, metrics_port = free_port(), free_port()
    cmd = serve_cmd(
        policy,
        port,
        "--reload-interval",
        "0.2",
        "--metrics-listen",
        f"127.0.0.1:{metrics_port}",
    )
    with running(cmd, name="ext-authz") as server:
        assert wait_for_grpc_serving("127.0.0.1", port, START, server)
        client = CheckClient(f"127.0.0.1:{port}")
        try:
            assert client.check("/internal").status == 403
            opened = policy_yaml(CORP).replace(
                "routes:\n",
                "routes:\n  - name: opened\n    match: { path: /internal }\n    allow: anonymous\n",
                1,
            )
            policy.write_text(opened, encoding="utf-8")
            assert wait_until(lambda: client.check("/internal").status == 200)
            # a broken edit: the running policy stays
            policy.write_text(opened + "  - name: broken\n    match: { pth: / }\n", "utf-8")
            error_key = ("ext_authz_policy_reloads_total", (("result", "error"),))
            assert wait_until(lambda: scrape(metrics_port).get(error_key, 0) >= 1)
            assert client.check("/internal").status == 200
            assert client.check("/api/orders", mint(CORP)).status == 200
            samples = scrape(metrics_port)
            assert samples[("ext_authz_policy_reloads_total", (("result", "ok"),))] == 1
            # the log writer batches lines (every 0.2 s): wait for the refusal's line
            assert wait_until(lambda: "policy.yaml:" in server.stderr_text(1_000_000))
            # SIGHUP reloads too
            policy.write_text(policy_yaml(CORP), encoding="utf-8")
            server.proc.send_signal(signal.SIGHUP)
            assert wait_until(lambda: client.check("/internal").status == 403)
        finally:
            client.close()


# --- TLS and mTLS ------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def static_policy(tmp_path: Path) -> Path:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_yaml(CORP), encoding="utf-8")
    return policy


def _tls_server(policy: Path, pki: Pki, mtls: bool) -> tuple[list[str], int]:
    port = free_port()
    extra = ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
    if mtls:
        extra += ["--tls-client-ca", str(pki.ca)]
    return serve_cmd(policy, port, *extra), port


def _wait_tls(port: int, creds: grpc.ChannelCredentials, server: ChildProcess) -> None:
    deadline = time.monotonic() + START
    while time.monotonic() < deadline:
        assert server.proc.poll() is None, server.stderr_text()
        client = CheckClient(f"127.0.0.1:{port}", creds)
        try:
            client.check("/healthz")
            return
        except grpc.RpcError:
            time.sleep(0.2)
        finally:
            client.close()
    raise AssertionError("TLS server never answered")


def test_tls_client_connects_and_plaintext_does_not(static_policy: Path, pki: Pki) -> None:
    cmd, port = _tls_server(static_policy, pki, mtls=False)
    with running(cmd, name="ext-authz") as server:
        creds = grpc.ssl_channel_credentials(root_certificates=pki.ca_pem)
        _wait_tls(port, creds, server)
        client = CheckClient(f"127.0.0.1:{port}", creds)
        assert client.check("/api/orders", mint(CORP)).status == 200
        client.close()
        plain = CheckClient(f"127.0.0.1:{port}")
        with pytest.raises(grpc.RpcError):
            plain.check("/healthz")
        plain.close()


def test_mtls_requires_a_client_certificate(static_policy: Path, pki: Pki) -> None:
    cmd, port = _tls_server(static_policy, pki, mtls=True)
    with running(cmd, name="ext-authz") as server:
        with_cert = grpc.ssl_channel_credentials(
            root_certificates=pki.ca_pem,
            private_key=pki.client_key,
            certificate_chain=pki.client_cert,
        )
        _wait_tls(port, with_cert, server)
        without = CheckClient(
            f"127.0.0.1:{port}", grpc.ssl_channel_credentials(root_certificates=pki.ca_pem)
        )
        with pytest.raises(grpc.RpcError):
            without.check("/healthz")
        without.close()


@pytest.mark.parametrize(
    "flags",
    [
        ["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"],
        ["--tls-cert", "CERT"],
        ["--tls-client-ca", "CERT"],
    ],
    ids=["unreadable", "cert_without_key", "ca_without_cert"],
)
def test_bad_tls_options_stop_the_process(static_policy: Path, pki: Pki, flags: list[str]) -> None:
    flags = [str(pki.server_cert) if f == "CERT" else f for f in flags]
    port = free_port()
    with running(serve_cmd(static_policy, port, *flags), name="ext-authz") as server:
        assert server.proc.wait(timeout=20) == 1
        assert "cannot start" in server.stderr_text()


# --- lifecycle ---------------------------------------------------------------------


def test_sigterm_under_load_loses_no_in_flight_check(tmp_path: Path) -> None:
    """Checks blocked on a slow key refetch when SIGTERM arrives still get answered."""
    rotated = public_jwk(ROGUE_RSA, kid="corp-2", alg="RS256")
    with jwks_server(CORP.jwks()) as idp:
        policy = tmp_path / "policy.yaml"
        remote = re.sub(r"(?m)^    jwks: .*$", f"    jwks_uri: {idp.jwks_uri}", policy_yaml(CORP))
        policy.write_text(remote, encoding="utf-8")
        port = free_port()
        # enough check threads for all twenty to wait on the one refetch
        cmd = serve_cmd(policy, port, "--workers", "24")
        with running(cmd, name="ext-authz") as server:
            assert wait_for_grpc_serving("127.0.0.1", port, START, server)
            idp.behaviour.jwks = {"keys": [CORP.public_jwk(), rotated]}
            idp.behaviour.delay = 1.5
            token = mint(CORP, key=ROGUE_RSA, headers={"kid": "corp-2"})
            results: list[int | str] = []
            lock = threading.Lock()

            def one() -> None:
                client = CheckClient(f"127.0.0.1:{port}")
                try:
                    status: int | str = client.check("/api/orders", token).status
                except grpc.RpcError as exc:
                    status = str(exc.code())
                finally:
                    client.close()
                with lock:
                    results.append(status)

            threads = [threading.Thread(target=one) for _ in range(20)]
            for thread in threads:
                thread.start()
            time.sleep(0.5)
            server.proc.send_signal(signal.SIGTERM)
            for thread in threads:
                thread.join(timeout=20)
            assert server.proc.wait(timeout=20) == 0
        assert results == [200] * 20


def test_envoy_talks_mtls_to_the_server(static_policy: Path, pki: Pki, tmp_path: Path) -> None:
    """The Envoy side of mTLS, rendered by the same config code as every Envoy config:
    with its client certificate checks go through; without one, Envoy fails closed."""
    from ext_authz.demo.upstream import serve_upstream
    from ext_authz.deploy.envoy_config import EnvoyParams, UpstreamTls
    from tests.support.processes import start_envoy

    (tmp_path / "envoy.pem").write_bytes(pki.client_cert)
    (tmp_path / "envoy.key").write_bytes(pki.client_key)
    cmd, port = _tls_server(static_policy, pki, mtls=True)
    upstream = serve_upstream("127.0.0.1", 0)
    try:
        with running(cmd, name="ext-authz") as server:
            with_cert = grpc.ssl_channel_credentials(
                root_certificates=pki.ca_pem,
                private_key=pki.client_key,
                certificate_chain=pki.client_cert,
            )
            _wait_tls(port, with_cert, server)
            for tls, expected in (
                (
                    UpstreamTls(
                        str(pki.ca),
                        str(tmp_path / "envoy.pem"),
                        str(tmp_path / "envoy.key"),
                        "localhost",
                    ),
                    200,
                ),
                (UpstreamTls(str(pki.ca), sni="localhost"), 503),
            ):
                params = EnvoyParams(
                    listen_port=free_port(),
                    admin_port=free_port(),
                    ext_authz_port=port,
                    ext_authz_tls=tls,
                    upstream_port=upstream.server_address[1],
                )
                with start_envoy(params, tmp_path) as envoy:
                    response = httpx.get(
                        envoy.url("/api/orders"),
                        headers={"authorization": f"Bearer {mint(CORP)}"},
                        trust_env=False,
                        timeout=10,
                    )
                    assert response.status_code == expected, response.text
    finally:
        upstream.shutdown()
        upstream.server_close()


def test_an_edit_during_a_reload_is_seen_by_the_next_poll(tmp_path: Path) -> None:
    policy, keys = tmp_path / "policy.yaml", tmp_path / "keys.json"
    policy.write_text("first", encoding="utf-8")
    before = _stamp([policy])
    policy.write_text("edited while the reload ran", encoding="utf-8")  # after the load
    keys.write_text("{}", encoding="utf-8")  # a file the new policy starts to reference
    after = restamp(before, [policy, keys])
    assert after[0] == before[0]  # so the next poll differs and reloads again
    assert _stamp([policy, keys]) != after
    assert after[1] == _stamp([keys])[0]
