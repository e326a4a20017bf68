"""The Envoy configs: every checked-in file matches the renderer, Envoy accepts each of them,
and a real Envoy fails closed when the ext_authz server cannot be reached."""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ext_authz.demo.upstream import serve_upstream
from ext_authz.deploy.envoy_config import (
    COMPOSE_EXT_AUTHZ_HOST,
    COMPOSE_UPSTREAM_HOST,
    EXT_AUTHZ_CLUSTER,
    EXT_AUTHZ_FILTER,
    PROFILES,
    READY_PATH,
    UPSTREAM_CLUSTER,
    EnvoyParams,
    EnvoyProfile,
    envoy_config_dict,
    main,
    render_envoy_config,
)
from tests.support.pki import make_pki
from tests.support.processes import envoy_binary, free_port, start_envoy

REPO = Path(__file__).resolve().parent.parent
ALL_PROFILES = [pytest.param(profile, id=name) for name, profile in PROFILES.items()]


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


def _envoy_yaml(profile: EnvoyProfile) -> str:
    """The Envoy bootstrap in ``profile``'s checked-in file (unwrapping a ConfigMap)."""
    text = (REPO / profile.out).read_text(encoding="utf-8")
    if profile.configmap is None:
        return text
    configmap = yaml.safe_load(text)
    assert configmap["kind"] == "ConfigMap"
    assert configmap["metadata"]["name"] == profile.configmap
    envoy_yaml = configmap["data"][profile.configmap_key]
    assert isinstance(envoy_yaml, str)
    return envoy_yaml


def _clusters(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in config["static_resources"]["clusters"]}


def _endpoints(cluster: dict[str, Any]) -> list[tuple[str, int]]:
    addresses = [
        lb["endpoint"]["address"]["socket_address"]
        for group in cluster["load_assignment"]["endpoints"]
        for lb in group["lb_endpoints"]
    ]
    return [(a["address"], a["port_value"]) for a in addresses]


@pytest.mark.parametrize("profile", ALL_PROFILES)
def test_checked_in_file_is_rendered_from_its_profile(profile: EnvoyProfile) -> None:
    checked_in = REPO / profile.out
    assert checked_in.is_file(), f"{profile.out} is missing: create it with `{profile.command}`"
    assert checked_in.read_text(encoding="utf-8") == profile.render(), (
        f"{profile.out} is stale: regenerate it with `{profile.command}` "
        "(or every file with `python -m ext_authz.deploy.envoy_config --write-all`)"
    )
    assert yaml.safe_load(_envoy_yaml(profile)) == envoy_config_dict(profile.params)


@pytest.mark.parametrize("profile", ALL_PROFILES)
def test_envoy_validates_every_checked_in_config(profile: EnvoyProfile, tmp_path: Path) -> None:
    config = tmp_path / "envoy.yaml"
    text = _envoy_yaml(profile)
    tls = profile.params.ext_authz_tls
    if tls is not None:  # Envoy opens the files: point them at real ones
        pki = make_pki(tmp_path)
        (tmp_path / "envoy.pem").write_bytes(pki.client_cert)
        (tmp_path / "envoy.key").write_bytes(pki.client_key)
        for path, real in ((tls.ca, pki.ca), (tls.cert, "envoy.pem"), (tls.key, "envoy.key")):
            assert path is not None
            text = text.replace(path, str(tmp_path / real))
    config.write_text(text, encoding="utf-8")
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"{profile.out}:\n{result.stderr[-4000:]}"


@pytest.mark.parametrize("profile", ALL_PROFILES)
def test_every_profile_keeps_the_security_properties(profile: EnvoyProfile) -> None:
    config = envoy_config_dict(profile.params)
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    listener = config["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    ext_authz = hcm["http_filters"][0]["typed_config"]
    assert ext_authz["failure_mode_allow"] is False
    assert ext_authz["status_on_error"] == {"code": 503}
    assert hcm["use_remote_address"] is True
    assert hcm["common_http_protocol_options"] == {
        "headers_with_underscores_action": "REJECT_REQUEST"
    }
    http = profile.params.ext_authz_http
    if http:
        service = ext_authz["http_service"]
        assert service["server_uri"]["cluster"] == EXT_AUTHZ_CLUSTER
        assert service["path_prefix"] == "/envoy"
        assert float(service["server_uri"]["timeout"].rstrip("s")) <= 1.0
    else:
        assert ext_authz["grpc_service"]["envoy_grpc"]["cluster_name"] == EXT_AUTHZ_CLUSTER
        assert float(ext_authz["grpc_service"]["timeout"].rstrip("s")) <= 1.0

    routes = {r["name"]: r for r in hcm["route_config"]["virtual_hosts"][0]["routes"]}
    ready = routes["envoy-ready"]
    assert ready["match"] == {"path": READY_PATH}
    assert ready["typed_per_filter_config"][EXT_AUTHZ_FILTER]["disabled"] is True
    default = routes["default"]["typed_per_filter_config"][EXT_AUTHZ_FILTER]
    assert default["check_settings"]["context_extensions"] == {"envoy_route": "default"}

    authz_cluster = _clusters(config)[EXT_AUTHZ_CLUSTER]
    (health_check,) = authz_cluster["health_checks"]
    protocol = authz_cluster["typed_extension_protocol_options"]
    (options,) = protocol.values()
    if http:
        assert health_check["http_health_check"] == {"path": "/healthz"}
        assert "http_protocol_options" in options["explicit_http_config"]
    else:
        assert "grpc_health_check" in health_check
        assert "http2_protocol_options" in options["explicit_http_config"]


def test_local_profile_is_the_loopback_default() -> None:
    local = PROFILES["local"]
    assert local.params == EnvoyParams()
    assert local.out == "config/envoy.local.yaml"
    clusters = _clusters(envoy_config_dict(local.params))
    assert {c["type"] for c in clusters.values()} == {"STATIC"}
    assert _endpoints(clusters[EXT_AUTHZ_CLUSTER]) == [("127.0.0.1", 9001)]


@pytest.mark.parametrize("name", ["compose", "compose-shared-keys"])
def test_compose_profiles_resolve_service_names(name: str) -> None:
    profile = PROFILES[name]
    config = envoy_config_dict(profile.params)
    listener = config["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert ipaddress.ip_address(listener["address"]).is_unspecified
    assert listener["port_value"] == 10000
    clusters = _clusters(config)
    for cluster in clusters.values():
        assert cluster["type"] == "STRICT_DNS"
    authz_hosts = {host for host, _ in _endpoints(clusters[EXT_AUTHZ_CLUSTER])}
    assert authz_hosts == {COMPOSE_EXT_AUTHZ_HOST}
    assert _endpoints(clusters[UPSTREAM_CLUSTER]) == [(COMPOSE_UPSTREAM_HOST, 9200)]


def test_shared_keys_profile_balances_over_two_replicas() -> None:
    clusters = _clusters(envoy_config_dict(PROFILES["compose-shared-keys"].params))
    endpoints = _endpoints(clusters[EXT_AUTHZ_CLUSTER])
    assert endpoints == [(COMPOSE_EXT_AUTHZ_HOST, 9002), (COMPOSE_EXT_AUTHZ_HOST, 9003)]
    assert clusters[EXT_AUTHZ_CLUSTER]["lb_policy"] == "ROUND_ROBIN"


def test_kubernetes_profile_reaches_its_sidecars_on_loopback() -> None:
    profile = PROFILES["kubernetes"]
    assert profile.configmap is not None
    clusters = _clusters(envoy_config_dict(profile.params))
    assert {c["type"] for c in clusters.values()} == {"STATIC"}
    assert _endpoints(clusters[EXT_AUTHZ_CLUSTER]) == [("127.0.0.1", 9001)]
    assert _endpoints(clusters[UPSTREAM_CLUSTER]) == [("127.0.0.1", 8080)]


def test_write_all_reproduces_every_checked_in_file(tmp_path: Path) -> None:
    for profile in PROFILES.values():
        (tmp_path / profile.out).parent.mkdir(parents=True, exist_ok=True)
    assert main(["--write-all", "--root", str(tmp_path)]) == 0
    for profile in PROFILES.values():
        written = (tmp_path / profile.out).read_text(encoding="utf-8")
        assert written == (REPO / profile.out).read_text(encoding="utf-8"), profile.out


def test_main_writes_a_profile_with_overrides(tmp_path: Path) -> None:
    out = tmp_path / "envoy.yaml"
    argv = ["--profile", "compose", "--ext-authz", "authz.internal:7000", "--out", str(out)]
    assert main(argv) == 0
    text = out.read_text(encoding="utf-8")
    assert text.startswith(
        "# Generated by `python -m ext_authz.deploy.envoy_config --profile compose "
    )
    clusters = _clusters(yaml.safe_load(text))
    assert _endpoints(clusters[EXT_AUTHZ_CLUSTER]) == [("authz.internal", 7000)]
    assert clusters[EXT_AUTHZ_CLUSTER]["type"] == "STRICT_DNS"
    assert _endpoints(clusters[UPSTREAM_CLUSTER]) == [(COMPOSE_UPSTREAM_HOST, 9200)]


def test_main_prints_the_local_profile_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    printed = capsys.readouterr().out
    assert yaml.safe_load(printed) == envoy_config_dict(EnvoyParams())


def test_main_rejects_a_hostname_on_a_static_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--profile", "local", "--upstream", "app.internal:8080"])
    assert exited.value.code == 2
    assert "upstream_address must be an IP address" in capsys.readouterr().err


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
        pytest.param({"admin_address": "localhost"}, id="admin-hostname"),
        pytest.param({"ext_authz_extra_ports": (9001,)}, id="ext_authz_extra_ports-repeat"),
        pytest.param({"ext_authz_extra_ports": (0,)}, id="ext_authz_extra_ports-zero"),
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
