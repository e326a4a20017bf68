"""Envoy bootstrap configuration for running Envoy in front of the ext_authz server.

Every Envoy config in this repository is rendered by :func:`render_envoy_config`, so they
cannot drift: the checked-in files of :data:`PROFILES` (``config/envoy.yaml`` for Docker
Compose, ``config/envoy.local.yaml`` for loopback, the shared-keys Compose profile and the
Kubernetes ConfigMap), the demo and the end-to-end tests.
"""

from __future__ import annotations

import argparse
import ipaddress
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from ext_authz.deploy.envoy_http_service import (
    HTTP_HEALTH_PATH,
    http_service_cluster_options,
    http_service_filter,
)

EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
ROUTER_FILTER = "envoy.filters.http.router"
EXT_AUTHZ_CLUSTER = "ext_authz"
UPSTREAM_CLUSTER = "upstream"
READY_PATH = "/envoy-ready"
DEFAULT_ROUTE_CONTEXT = "default"

_HCM_TYPE = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
_EXT_AUTHZ_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
_EXT_AUTHZ_PER_ROUTE_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
)
_ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_UPSTREAM_TLS_TYPE = (
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
)
_HTTP_PROTOCOL_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_HTTP_PROTOCOL_OPTIONS_TYPE = f"type.googleapis.com/{_HTTP_PROTOCOL_OPTIONS_KEY}"
_DOWNSTREAM_CONNECTIONS_MONITOR = "envoy.resource_monitors.global_downstream_max_connections"
_DOWNSTREAM_CONNECTIONS_TYPE = (
    "type.googleapis.com/"
    "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
)

COMPOSE_EXT_AUTHZ_HOST = "ext-authz"
COMPOSE_UPSTREAM_HOST = "upstream"


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """TLS from Envoy to our server: the CA that signed the server's certificate and,
    for mTLS, Envoy's own client certificate and key (file paths as Envoy sees them)."""

    ca: str
    cert: str | None = None
    key: str | None = None
    sni: str = "ext-authz"

    def transport_socket(self) -> dict[str, Any]:
        context: dict[str, Any] = {"validation_context": {"trusted_ca": {"filename": self.ca}}}
        if self.cert is not None and self.key is not None:
            context["tls_certificates"] = [
                {
                    "certificate_chain": {"filename": self.cert},
                    "private_key": {"filename": self.key},
                }
            ]
        return {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": _UPSTREAM_TLS_TYPE,
                "sni": self.sni,
                "common_tls_context": context,
            },
        }


@dataclass(frozen=True, slots=True)
class EnvoyParams:
    """Addresses, ports and timeouts of one Envoy in front of the ext_authz server.

    ``*_dns`` selects a ``STRICT_DNS`` cluster (the address is a host name) instead of a
    ``STATIC`` one (the address must then be an IP literal). ``ext_authz_extra_ports`` adds
    endpoints on the same ext_authz host (server replicas sharing one network namespace).
    The admin interface listens on ``admin_address`` (loopback unless told otherwise).
    """

    listen_address: str = "127.0.0.1"
    listen_port: int = 10000
    admin_address: str = "127.0.0.1"
    admin_port: int = 9901
    ext_authz_address: str = "127.0.0.1"
    ext_authz_port: int = 9001
    ext_authz_extra_ports: tuple[int, ...] = ()
    ext_authz_dns: bool = False
    ext_authz_tls: UpstreamTls | None = None
    upstream_address: str = "127.0.0.1"
    upstream_port: int = 9200
    upstream_dns: bool = False
    ext_authz_timeout: float = 0.5
    connect_timeout: float = 1.0
    upstream_timeout: float = 15.0
    health_check_interval: float = 5.0
    health_check_timeout: float = 1.0
    max_downstream_connections: int = 50000
    # The decision in Envoy's own access log, from the ext_authz dynamic metadata.
    access_log: bool = True
    # Spread checks over the processes of `ext-authz serve --processes N` (one port,
    # SO_REUSEPORT: the kernel picks a process per connection): more, and recycled,
    # connections than Envoy's one HTTP/2 connection per worker thread. Harmless with
    # one process (a few more connections under load). None: Envoy's defaults.
    ext_authz_max_streams: int | None = 16
    ext_authz_max_requests_per_connection: int | None = 10_000
    # Ask the HTTP door (``ext-authz serve --http-listen``) through Envoy's
    # ``http_service`` instead of the gRPC door; ``ext_authz_port`` is then its port.
    ext_authz_http: bool = False

    def __post_init__(self) -> None:
        for name in ("listen_port", "admin_port", "ext_authz_port", "upstream_port"):
            _require_port(name, getattr(self, name))
        for port in self.ext_authz_extra_ports:
            _require_port("ext_authz_extra_ports", port)
        if len(set(self.ext_authz_ports)) != len(self.ext_authz_ports):
            raise ValueError("ext_authz_extra_ports must not repeat ext_authz_port or each other")
        for name in (
            "ext_authz_timeout",
            "connect_timeout",
            "upstream_timeout",
            "health_check_interval",
            "health_check_timeout",
        ):
            seconds = getattr(self, name)
            if not seconds > 0:
                raise ValueError(f"{name} must be positive, got {seconds}")
        if self.max_downstream_connections < 1:
            raise ValueError("max_downstream_connections must be positive")
        for name in ("ext_authz_max_streams", "ext_authz_max_requests_per_connection"):
            limit = getattr(self, name)
            if limit is not None and limit < 1:
                raise ValueError(f"{name} must be positive, got {limit}")
        _require_ip("listen_address", self.listen_address)
        _require_ip("admin_address", self.admin_address)
        if not self.ext_authz_dns:
            _require_ip("ext_authz_address", self.ext_authz_address)
        if not self.upstream_dns:
            _require_ip("upstream_address", self.upstream_address)

    @property
    def listen_url(self) -> str:
        return f"http://{_url_host(self.listen_address)}:{self.listen_port}"

    @property
    def admin_url(self) -> str:
        return f"http://{_url_host(self.admin_address)}:{self.admin_port}"

    @property
    def ext_authz_ports(self) -> tuple[int, ...]:
        """Every port of the ext_authz cluster's endpoints, ``ext_authz_port`` first."""
        return (self.ext_authz_port, *self.ext_authz_extra_ports)


def _require_port(field: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise ValueError(f"{field} must be in 1..65535, got {port}")


def _require_ip(field: str, value: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(
            f"{field} must be an IP address for a STATIC cluster or listener, got {value!r}"
        ) from None


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _duration(seconds: float) -> str:
    text = f"{seconds:.9f}".rstrip("0").rstrip(".")
    return f"{text}s"


def _socket_address(address: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": address, "port_value": port}}


def _cluster(
    name: str,
    address: str,
    ports: Sequence[int],
    *,
    dns: bool,
    connect_timeout: float,
    http2: bool,
) -> dict[str, Any]:
    protocol: dict[str, Any] = (
        {"http2_protocol_options": {}} if http2 else {"http_protocol_options": {}}
    )
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STRICT_DNS" if dns else "STATIC",
        "connect_timeout": _duration(connect_timeout),
        "lb_policy": "ROUND_ROBIN",
    }
    if dns:
        cluster["dns_lookup_family"] = "V4_PREFERRED"
    cluster["typed_extension_protocol_options"] = {
        _HTTP_PROTOCOL_OPTIONS_KEY: {
            "@type": _HTTP_PROTOCOL_OPTIONS_TYPE,
            "explicit_http_config": protocol,
        }
    }
    cluster["load_assignment"] = {
        "cluster_name": name,
        "endpoints": [
            {
                "lb_endpoints": [
                    {"endpoint": {"address": _socket_address(address, port)}} for port in ports
                ]
            }
        ],
    }
    return cluster


def _ext_authz_filter(params: EnvoyParams) -> dict[str, Any]:
    if params.ext_authz_http:
        return http_service_filter(params)
    return {
        "name": EXT_AUTHZ_FILTER,
        "typed_config": {
            "@type": _EXT_AUTHZ_TYPE,
            "grpc_service": {
                "envoy_grpc": {"cluster_name": EXT_AUTHZ_CLUSTER},
                "timeout": _duration(params.ext_authz_timeout),
            },
            "transport_api_version": "V3",
            "failure_mode_allow": False,
            "status_on_error": {"code": 503},
            "include_peer_certificate": False,
        },
    }


def _routes(params: EnvoyParams) -> list[dict[str, Any]]:
    return [
        {
            "name": "envoy-ready",
            "match": {"path": READY_PATH},
            "direct_response": {"status": 200, "body": {"inline_string": "ok"}},
            "typed_per_filter_config": {
                EXT_AUTHZ_FILTER: {"@type": _EXT_AUTHZ_PER_ROUTE_TYPE, "disabled": True}
            },
        },
        {
            "name": "default",
            "match": {"prefix": "/"},
            "route": {
                "cluster": UPSTREAM_CLUSTER,
                "timeout": _duration(params.upstream_timeout),
            },
            "typed_per_filter_config": {
                EXT_AUTHZ_FILTER: {
                    "@type": _EXT_AUTHZ_PER_ROUTE_TYPE,
                    "check_settings": {
                        "context_extensions": {"envoy_route": DEFAULT_ROUTE_CONTEXT}
                    },
                }
            },
        },
    ]


# What Envoy's access log says about the decision, read from the dynamic metadata the
# server returns (no per-allow decision line needed: `ext-authz serve --decision-log deny`).
# The path is left out: its query string may carry secrets. `subject` is left out like
# the decision log leaves it out; add "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:subject)%"
# where naming the user is wanted.
ACCESS_LOG_FORMAT: dict[str, str] = {
    "start_time": "%START_TIME%",
    "method": "%REQ(:METHOD)%",
    "status": "%RESPONSE_CODE%",
    "flags": "%RESPONSE_FLAGS%",
    "duration_ms": "%DURATION%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "authz_route": f"%DYNAMIC_METADATA({EXT_AUTHZ_FILTER}:route)%",
    "authz_issuer": f"%DYNAMIC_METADATA({EXT_AUTHZ_FILTER}:issuer)%",
    "authz_decision_id": f"%DYNAMIC_METADATA({EXT_AUTHZ_FILTER}:decision_id)%",
}
_STDOUT_ACCESS_LOG_TYPE = (
    "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
)


def _access_log() -> dict[str, Any]:
    return {
        "name": "envoy.access_loggers.stdout",
        "typed_config": {
            "@type": _STDOUT_ACCESS_LOG_TYPE,
            "log_format": {"json_format": dict(ACCESS_LOG_FORMAT)},
        },
    }


def _spread_over_processes(cluster: dict[str, Any], params: EnvoyParams) -> None:
    """HTTP/2 (the gRPC door): a stream limit opens more connections under load. Both
    doors: connections are replaced now and then. (HTTP/1.1 to the HTTP door already
    opens a connection per check in flight.)"""
    options = cluster["typed_extension_protocol_options"][_HTTP_PROTOCOL_OPTIONS_KEY]
    http2 = options["explicit_http_config"].get("http2_protocol_options")
    if params.ext_authz_max_streams is not None and http2 is not None:
        http2["max_concurrent_streams"] = params.ext_authz_max_streams
    if params.ext_authz_max_requests_per_connection is not None:
        common = options.setdefault("common_http_protocol_options", {})
        common["max_requests_per_connection"] = params.ext_authz_max_requests_per_connection


def envoy_config_dict(params: EnvoyParams) -> dict[str, Any]:
    """The Envoy v3 bootstrap for ``params``, as plain data."""
    hcm = {
        "@type": _HCM_TYPE,
        "stat_prefix": "ingress_http",
        "codec_type": "AUTO",
        "normalize_path": True,
        # Envoy, not the client, owns x-request-id (the decision id in our log), and a
        # header spelt with underscores (x_user_id) never reaches a CGI-style upstream
        # that would read it as an identity header.
        "use_remote_address": True,
        "common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST"},
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "UNESCAPE_AND_REDIRECT",
        "route_config": {
            "name": "local_routes",
            "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": _routes(params)}],
        },
        "http_filters": [
            _ext_authz_filter(params),
            {"name": ROUTER_FILTER, "typed_config": {"@type": _ROUTER_TYPE}},
        ],
    }
    ext_authz = _cluster(
        EXT_AUTHZ_CLUSTER,
        params.ext_authz_address,
        params.ext_authz_ports,
        dns=params.ext_authz_dns,
        connect_timeout=params.connect_timeout,
        http2=not params.ext_authz_http,
    )
    if params.ext_authz_http:
        http_service_cluster_options(ext_authz)
    if params.ext_authz_tls is not None:
        ext_authz["transport_socket"] = params.ext_authz_tls.transport_socket()
    _spread_over_processes(ext_authz, params)
    if params.access_log:
        hcm["access_log"] = [_access_log()]
    ext_authz["health_checks"] = [
        {
            "timeout": _duration(params.health_check_timeout),
            "interval": _duration(params.health_check_interval),
            "no_traffic_interval": _duration(params.health_check_interval),
            "unhealthy_threshold": 2,
            "healthy_threshold": 1,
            **(
                {"http_health_check": {"path": HTTP_HEALTH_PATH}}
                if params.ext_authz_http
                else {"grpc_health_check": {}}
            ),
        }
    ]
    upstream = _cluster(
        UPSTREAM_CLUSTER,
        params.upstream_address,
        (params.upstream_port,),
        dns=params.upstream_dns,
        connect_timeout=params.connect_timeout,
        http2=False,
    )
    return {
        "admin": {"address": _socket_address(params.admin_address, params.admin_port)},
        "static_resources": {
            "listeners": [
                {
                    "name": "ingress",
                    "address": _socket_address(params.listen_address, params.listen_port),
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [ext_authz, upstream],
        },
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": _DOWNSTREAM_CONNECTIONS_MONITOR,
                    "typed_config": {
                        "@type": _DOWNSTREAM_CONNECTIONS_TYPE,
                        "max_active_downstream_connections": params.max_downstream_connections,
                    },
                }
            ]
        },
    }


def render_envoy_config(params: EnvoyParams) -> str:
    """The Envoy v3 bootstrap for ``params``, as YAML."""
    return yaml.safe_dump(envoy_config_dict(params), sort_keys=False, default_flow_style=False)


def generated_header(command: str) -> str:
    return f"# Generated by `{command}`; do not edit by hand.\n"


def render_envoy_file(params: EnvoyParams, command: str) -> str:
    """The YAML of :func:`render_envoy_config` behind a "generated by ``command``" line."""
    return generated_header(command) + render_envoy_config(params)


class _BlockStringDumper(yaml.SafeDumper):
    """Writes multi-line strings as literal blocks, so an embedded file stays readable."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockStringDumper.add_representer(str, _represent_str)


def configmap_dict(
    name: str, key: str, params: EnvoyParams, labels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A Kubernetes ConfigMap holding the bootstrap for ``params`` under ``key``."""
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = dict(labels)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": {key: render_envoy_config(params)},
    }


def render_configmap_file(
    name: str,
    key: str,
    params: EnvoyParams,
    command: str,
    labels: Mapping[str, str] | None = None,
) -> str:
    """:func:`configmap_dict` as YAML behind a "generated by ``command``" line."""
    body = yaml.dump(
        configmap_dict(name, key, params, labels),
        Dumper=_BlockStringDumper,
        sort_keys=False,
        default_flow_style=False,
        width=1000,
    )
    return generated_header(command) + body


@dataclass(frozen=True, slots=True)
class EnvoyProfile:
    """One checked-in Envoy config: its parameters, its file and how it is wrapped.

    ``out`` is relative to the repository root. With ``configmap`` set, the file is a
    Kubernetes ConfigMap of that name holding the bootstrap under ``configmap_key``.
    """

    name: str
    params: EnvoyParams
    out: str
    summary: str
    configmap: str | None = None
    configmap_key: str = "envoy.yaml"
    configmap_labels: tuple[tuple[str, str], ...] = ()

    @property
    def command(self) -> str:
        """The command line that writes this profile's checked-in file."""
        return shlex.join(
            [
                "python",
                "-m",
                "ext_authz.deploy.envoy_config",
                "--profile",
                self.name,
                "--out",
                self.out,
            ]
        )

    def render(self, command: str | None = None) -> str:
        """The file's text, headed by ``command`` (default: :attr:`command`)."""
        header_command = self.command if command is None else command
        if self.configmap is not None:
            return render_configmap_file(
                self.configmap,
                self.configmap_key,
                self.params,
                header_command,
                dict(self.configmap_labels),
            )
        return render_envoy_file(self.params, header_command)


_COMPOSE = EnvoyParams(
    listen_address="0.0.0.0",  # noqa: S104  (inside its container; published on loopback)
    ext_authz_address=COMPOSE_EXT_AUTHZ_HOST,
    ext_authz_dns=True,
    upstream_address=COMPOSE_UPSTREAM_HOST,
    upstream_dns=True,
)


PROFILES: dict[str, EnvoyProfile] = {
    profile.name: profile
    for profile in (
        EnvoyProfile(
            name="local",
            params=EnvoyParams(),
            out="config/envoy.local.yaml",
            summary="everything on 127.0.0.1 (make demo, end-to-end tests)",
        ),
        EnvoyProfile(
            name="local-http",
            params=EnvoyParams(ext_authz_port=9080, ext_authz_http=True),
            out="config/envoy.local-http.yaml",
            summary="like local, asking the HTTP door (serve --http-listen) via http_service",
        ),
        EnvoyProfile(
            name="compose",
            params=_COMPOSE,
            out="config/envoy.yaml",
            summary="docker-compose.yml: Compose service names, STRICT_DNS clusters",
        ),
        EnvoyProfile(
            name="compose-tls",
            params=replace(
                _COMPOSE,
                ext_authz_tls=UpstreamTls(
                    ca="/etc/envoy/tls/ca.pem",
                    cert="/etc/envoy/tls/envoy.pem",
                    key="/etc/envoy/tls/envoy.key",
                    sni=COMPOSE_EXT_AUTHZ_HOST,
                ),
            ),
            out="config/envoy.tls.yaml",
            summary="like compose, with mTLS to the server (ext-authz serve --tls-*)",
        ),
        EnvoyProfile(
            name="compose-http",
            params=replace(_COMPOSE, ext_authz_port=9080, ext_authz_http=True),
            out="config/envoy.http.yaml",
            summary="like compose, asking the HTTP door (serve --http-listen) via http_service",
        ),
        EnvoyProfile(
            name="compose-shared-keys",
            params=replace(_COMPOSE, ext_authz_port=9002, ext_authz_extra_ports=(9003,)),
            out="config/envoy.shared-keys.yaml",
            summary="docker-compose.yml profile shared-keys: two server replicas",
        ),
        EnvoyProfile(
            name="kubernetes",
            params=EnvoyParams(
                listen_address="0.0.0.0",  # noqa: S104  (the pod's port; a Service fronts it)
                upstream_port=8080,
            ),
            out="deploy/kubernetes/envoy-configmap.yaml",
            summary="Kubernetes pod: our server and the app as sidecars on 127.0.0.1",
            configmap="orders-api-envoy",
            configmap_labels=(
                ("app.kubernetes.io/name", "orders-api"),
                ("app.kubernetes.io/component", "envoy-config"),
            ),
        ),
    )
}


def write_profiles(root: Path) -> list[Path]:
    """Write every profile's checked-in file below ``root``; return the paths written."""
    written = []
    for profile in PROFILES.values():
        path = root / profile.out
        path.write_text(profile.render(), encoding="utf-8")
        written.append(path)
    return written


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ext_authz.deploy.envoy_config",
        description="Render the Envoy bootstrap that fronts the ext_authz server.",
        epilog="profiles: "
        + "; ".join(f"{p.name} ({p.out}): {p.summary}" for p in PROFILES.values()),
    )
    parser.add_argument(
        "--profile",
        choices=list(PROFILES),
        default="local",
        help="the parameters to start from (default: %(default)s); options below override them",
    )
    parser.add_argument("--out", help="file to write (default: standard output)")
    parser.add_argument(
        "--write-all",
        action="store_true",
        help="write every profile's checked-in file (paths relative to --root)",
    )
    parser.add_argument("--root", type=Path, default=Path(), help="with --write-all")
    parser.add_argument("--listen", type=_host_port, help="Envoy listener HOST:PORT")
    parser.add_argument("--admin-port", type=int)
    parser.add_argument("--ext-authz", type=_host_port, help="ext_authz server HOST:PORT")
    parser.add_argument(
        "--ext-authz-dns",
        action="store_true",
        default=None,
        help="resolve the ext_authz host by DNS (STRICT_DNS cluster)",
    )
    parser.add_argument(
        "--http-service",
        action="store_true",
        default=None,
        help="ask the server's HTTP door through Envoy's http_service (not gRPC)",
    )
    parser.add_argument("--upstream", type=_host_port, help="upstream service HOST:PORT")
    parser.add_argument(
        "--upstream-dns",
        action="store_true",
        default=None,
        help="resolve the upstream host by DNS (STRICT_DNS cluster)",
    )
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if args.listen is not None:
        changes["listen_address"], changes["listen_port"] = args.listen
    if args.admin_port is not None:
        changes["admin_port"] = args.admin_port
    if args.ext_authz is not None:
        changes["ext_authz_address"], changes["ext_authz_port"] = args.ext_authz
    if args.ext_authz_dns is not None:
        changes["ext_authz_dns"] = args.ext_authz_dns
    if args.upstream is not None:
        changes["upstream_address"], changes["upstream_port"] = args.upstream
    if args.http_service is not None:
        changes["ext_authz_http"] = args.http_service
    if args.upstream_dns is not None:
        changes["upstream_dns"] = args.upstream_dns
    return changes


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(args_list)
    if args.write_all:
        for path in write_profiles(args.root):
            print(f"wrote {path}")
        return 0
    profile = PROFILES[args.profile]
    try:
        profile = replace(profile, params=replace(profile.params, **_overrides(args)))
    except ValueError as exc:
        parser.error(str(exc))
    command = shlex.join(["python", "-m", "ext_authz.deploy.envoy_config", *args_list])
    text = profile.render(command)
    if args.out is None:
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
