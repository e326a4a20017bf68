"""The Envoy config: the checked-in file matches the renderer, Envoy accepts it, and a real
Envoy fails closed when the ext_authz server cannot be reached."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from ext_authz.demo.upstream import serve_upstream
from ext_authz.envoy.config import (
    EXT_AUTHZ_FILTER,
    EnvoyParams,
    demo_command,
    envoy_config_dict,
    render_envoy_config,
    render_envoy_file,
)
from tests.support.processes import envoy_binary, free_port, start_envoy

REPO = Path(__file__).resolve().parent.parent
CHECKED_IN = REPO / "config" / "envoy.yaml"


@pytest.fixture
def upstream_port() -> Iterator[int]:
    server = serve_upstream("127.0.0.1", 0)
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=5.0) as client:
        yield client


def _stats(http: httpx.Client, admin_url: str, pattern: str) -> dict[str, int]:
    """Envoy's counters and gauges whose names match ``pattern``."""
    text = http.get(f"{admin_url}/stats", params={"filter": pattern}).text
    stats: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.isdigit():
            stats[name] = int(value)
    return stats


def test_checked_in_config_is_rendered_from_defaults() -> None:
    expected = render_envoy_file(EnvoyParams(), demo_command())
    assert CHECKED_IN.read_text(encoding="utf-8") == expected, (
        f"config/envoy.yaml is stale: regenerate it with `{demo_command()}`"
    )


def test_rendered_yaml_round_trips_to_the_config_dict() -> None:
    params = EnvoyParams(listen_port=18080, ext_authz_port=19001, upstream_port=19200)
    assert yaml.safe_load(render_envoy_config(params)) == envoy_config_dict(params)


def test_ext_authz_filter_fails_closed() -> None:
    config = envoy_config_dict(EnvoyParams())
    listener = config["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    filters = [f["name"] for f in hcm["http_filters"]]
    assert filters == [EXT_AUTHZ_FILTER, "envoy.filters.http.router"]
    ext_authz = hcm["http_filters"][0]["typed_config"]
    assert ext_authz["failure_mode_allow"] is False
    assert ext_authz["status_on_error"] == {"code": 503}


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"listen_port": 0}, id="port-zero"),
        pytest.param({"upstream_port": 70000}, id="port-too-big"),
        pytest.param({"ext_authz_timeout": 0}, id="zero-timeout"),
        pytest.param({"ext_authz_address": "authz.internal"}, id="hostname-on-static-cluster"),
    ],
)
def test_params_reject_bad_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        EnvoyParams(**kwargs)  # type: ignore[arg-type]


def test_dns_cluster_accepts_a_hostname() -> None:
    params = EnvoyParams(ext_authz_address="authz.internal", ext_authz_dns=True)
    clusters = envoy_config_dict(params)["static_resources"]["clusters"]
    assert clusters[0]["type"] == "STRICT_DNS"
    assert clusters[1]["type"] == "STATIC"


def test_envoy_validates_the_checked_in_config() -> None:
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(CHECKED_IN)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.e2e
def test_envoy_fails_closed_when_ext_authz_is_unreachable(
    tmp_path: Path, upstream_port: int, http: httpx.Client
) -> None:
    params = EnvoyParams(
        listen_port=free_port(),
        admin_port=free_port(),
        ext_authz_port=free_port(),
        upstream_port=upstream_port,
    )
    with start_envoy(params, tmp_path) as envoy:
        ready = http.get(envoy.url("/envoy-ready"))
        assert (ready.status_code, ready.text) == (200, "ok")

        denied = http.get(envoy.url("/anything"))
        assert denied.status_code == 503
        assert denied.content == b""

        stats = _stats(http, envoy.admin_url, r"ext_authz\.|upstream_rq_total")
        assert stats["http.ingress_http.ext_authz.error"] >= 1
        assert stats["http.ingress_http.ext_authz.ok"] == 0
        assert stats["http.ingress_http.ext_authz.failure_mode_allowed"] == 0
        assert stats["cluster.upstream.upstream_rq_total"] == 0
        assert envoy.process.proc.poll() is None

    echoed = http.get(
        f"http://127.0.0.1:{upstream_port}/direct/path?q=1",
        headers=[("X-Demo", "one"), ("x-demo", "two")],
    )
    assert echoed.status_code == 200
    assert echoed.headers["content-type"] == "application/json"
    body = echoed.json()
    assert set(body) == {"method", "path", "headers"}
    assert body["method"] == "GET"
    assert body["path"] == "/direct/path?q=1"
    assert body["headers"]["x-demo"] == "one, two"
    assert body["headers"]["host"] == f"127.0.0.1:{upstream_port}"


def test_echo_upstream_answers_any_method_with_a_body(
    upstream_port: int, http: httpx.Client
) -> None:
    for method in ("POST", "PURGE", "DELETE"):
        response = http.request(
            method, f"http://127.0.0.1:{upstream_port}/x", content=b"payload" * 100
        )
        assert response.status_code == 200
        assert response.json()["method"] == method

    def chunks() -> Iterator[bytes]:
        yield b"a" * 10
        yield b"b" * 5000

    streamed = http.post(f"http://127.0.0.1:{upstream_port}/stream", content=chunks())
    assert streamed.status_code == 200
    assert streamed.json()["headers"]["transfer-encoding"] == "chunked"

    head = http.head(f"http://127.0.0.1:{upstream_port}/h")
    assert head.status_code == 200
    assert head.content == b""
