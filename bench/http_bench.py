"""Measurement 4: the HTTP door through Envoy's ``http_service`` against Envoy's own
jwt_authn (no token cache), the gRPC door, and do-nothing servers behind each door.

Every setup runs at once (one Envoy each, ``--concurrency 1``, a ``direct_response``
upstream); closed-loop ``wrk`` runs are interleaved across setups in rounds, first with
one RS256 token sent again and again, then with a distinct token on every request (a
wrk Lua script walks a file of tokens, each setup going on where its last run stopped,
so a token recurs only after more requests than the verified-token cache holds). A
fixed-rate run gives p50/p99 at 1,000 requests/s; "added" is a setup's figure minus the
no-auth Envoy's from the same round. Server CPU per check comes from the server's CPU
time (worker processes included) over the requests it served.

    python -m bench.http_bench --trivial-listen 127.0.0.1:9102   # the do-nothing HTTP server
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench import envoy_bench
from bench.envoy_bench import Running, Setup, rate_once, sanity, validate, wait_ready
from bench.envoy_configs import render
from bench.fixtures import BenchIssuer, make_issuers, mint, mint_distinct, write_policy
from bench.http_servers import ensure_servers
from bench.procs import LOOPBACK, BenchError, Child, child, free_port, python_env, python_module
from bench.procs import wait_grpc_serving as wait_grpc
from bench.procstat import process_cpu_seconds, process_tree, tree_cpu_split
from bench.wrk import run_wrk
from ext_authz.demo.processes import envoy_binary, random_base_id, wait_for_http
from ext_authz.deploy.envoy_config import EnvoyParams

HTTP_RPS_TARGET = 0.8  # the HTTP door's req/s over jwt_authn's
HTTP_RPS_STRETCH = 1.0
HTTP_ADDED_P99_TARGET_MS = 1.0

SETUPS = (
    Setup("none", "none", None, description="Envoy, no auth filter (reference)"),
    Setup("jwt_authn", "jwt_authn", None, description="Envoy + jwt_authn (no token cache)"),
    Setup("http", "ext_authz", "real", description="Envoy http_service → HTTP door (shipped)"),
    Setup("grpc", "ext_authz", "real", description="Envoy gRPC ext_authz → gRPC door (shipped)"),
    Setup("http-trivial", "ext_authz", "trivial", description="http_service → do-nothing HTTP"),
    Setup("grpc-trivial", "ext_authz", "trivial", description="gRPC → do-nothing grpcio server"),
    Setup("http-uvicorn", "ext_authz", "uvicorn", description="http_service → the door on uvicorn"),
    Setup("http-granian", "ext_authz", "granian", description="http_service → the door on granian"),
)
HTTP_SETUPS = frozenset({"http", "http-trivial", "http-uvicorn", "http-granian"})
# The server choice: the same handler on three servers (bench/http_servers.py).
SERVER_CHOICE = ("http", "http-uvicorn", "http-granian")


@dataclass(frozen=True)
class Settings:
    setups: tuple[str, ...]
    rounds: int
    seconds: int
    warmup_seconds: int
    connections: int
    distinct_tokens: int
    rate: envoy_bench.Settings


FULL = Settings(
    setups=tuple(s.name for s in SETUPS),
    rounds=2,
    seconds=5,
    warmup_seconds=2,
    connections=32,
    distinct_tokens=24_000,
    rate=replace(
        envoy_bench.FULL,
        rate_rounds=3,
        rate_setups=("none", "jwt_authn", "http", "grpc"),
    ),
)
QUICK = Settings(
    setups=("none", "jwt_authn", "http", "grpc", "http-uvicorn", "http-granian"),
    rounds=1,
    seconds=2,
    warmup_seconds=1,
    connections=32,
    distinct_tokens=12_000,
    rate=replace(
        envoy_bench.QUICK,
        rate_seconds=2.0,
        rate_rounds=1,
        rate_setups=("none", "jwt_authn", "http"),
    ),
)

_LUA = """\
local tokens = {}
for line in io.lines("%s") do tokens[#tokens + 1] = "Bearer " .. line end
local i = %d
request = function()
  i = i + 1
  if i > #tokens then i = 1 end
  wrk.headers["authorization"] = tokens[i]
  return wrk.format("GET", "%s")
end
"""


def _server_cmd(setup: Setup, policy: Path, port: int) -> list[str]:
    listen = f"{LOOPBACK}:{port}"
    if setup.server in ("uvicorn", "granian"):
        return python_module(
            "bench.http_servers",
            "--server",
            setup.server,
            "--policy",
            str(policy),
            "--listen",
            listen,
        )
    if setup.server == "trivial":
        if setup.name in HTTP_SETUPS:
            return python_module("bench.http_bench", "--trivial-listen", listen)
        return python_module("bench.trivial_server", "--listen", listen, "--mode", "sync")
    door = ["--listen", "off", "--http-listen", listen] if setup.name in HTTP_SETUPS else []
    door = door or ["--listen", listen]
    return python_module("ext_authz", "serve", "--config", str(policy), *door)


def start(setup: Setup, issuer: BenchIssuer, policy: Path, work: Path, stack: ExitStack) -> Running:
    server: Child | None = None
    port = free_port()
    http = setup.name in HTTP_SETUPS
    if setup.server is not None:
        log = work / f"http-bench-{setup.name}-server.log" if setup.server == "trivial" else None
        server = stack.enter_context(
            child(f"server-{setup.name}", _server_cmd(setup, policy, port), log)
        )
        if http:
            wait_for_http(f"http://{LOOPBACK}:{port}/healthz", 30.0)
        else:
            wait_grpc(port, server)
    params = EnvoyParams(
        listen_port=free_port(),
        admin_port=free_port(),
        ext_authz_port=port,
        upstream_port=free_port(),
        ext_authz_http=http,
    )
    config_path = work / f"http-bench-envoy-{setup.name}.yaml"
    config_path.write_text(render(setup.envoy, params, issuer), encoding="utf-8")
    verdict = validate(config_path)
    if verdict != "OK":
        raise BenchError(f"envoy refused the {setup.name} config: {verdict}")
    cmd = [envoy_binary(), "-c", str(config_path), "--base-id", str(random_base_id())]
    cmd += ["--log-level", "warn", "--concurrency", "1"]
    envoy = stack.enter_context(
        child(f"envoy-{setup.name}", cmd, work / f"http-bench-envoy-{setup.name}.log", python_env())
    )
    return Running(setup, envoy, server, params, config_path, verdict)


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of `pid` and its live descendants (servers with worker processes)."""
    return sum(tree_cpu_split(process_tree(pid)))


def wrk_run(
    wrk: str,
    running: Running,
    seconds: int,
    connections: int,
    *,
    token: str | None = None,
    script: Path | None = None,
) -> dict[str, Any]:
    """One closed-loop run: the same `token` on every request, or the Lua `script`'s
    distinct tokens. Adds Envoy's and the server's CPU µs per request."""
    envoy_before = process_cpu_seconds(running.envoy.pid)
    server_before = tree_cpu_seconds(running.server.pid) if running.server else 0.0
    headers = envoy_bench.load_headers(token or "") if script is None else {}
    result = run_wrk(
        wrk, running.url, headers, seconds=seconds, connections=connections, script=script
    )
    requests = max(1, int(result.get("requests", 0)))
    result["envoy_us_per_request"] = (
        (process_cpu_seconds(running.envoy.pid) - envoy_before) / requests * 1e6
    )
    server_after = tree_cpu_seconds(running.server.pid) if running.server else 0.0
    result["server_us_per_request"] = (server_after - server_before) / requests * 1e6
    return result


def run(
    issuer: BenchIssuer,
    settings: Settings,
    work: Path,
    wrk: str | None,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    policy = write_policy(work, issuer)
    token = mint(issuer)
    rogue, _ = make_issuers()
    forged = mint(BenchIssuer(issuer.name, issuer.iss, issuer.alg, issuer.kid, rogue.key))
    out: dict[str, Any] = {
        "token_alg": issuer.alg,
        "connections": settings.connections,
        "seconds": settings.seconds,
        "rounds": settings.rounds,
        "distinct_tokens": settings.distinct_tokens,
        "rate": settings.rate.rate,
        "rate_rounds": settings.rate.rate_rounds,
        "setups": {},
    }
    if any(n in settings.setups for n in SERVER_CHOICE[1:]):
        problem = ensure_servers(progress)
        if problem is not None:
            progress(f"  server choice skipped: {problem}")
            out["server_choice_note"] = problem
            settings = replace(
                settings, setups=tuple(n for n in settings.setups if n not in SERVER_CHOICE[1:])
            )
    chosen = [s for s in SETUPS if s.name in settings.setups]
    with ExitStack() as stack:
        running: dict[str, Running] = {}
        for setup in chosen:
            progress(f"  HTTP door bench: starting '{setup.name}'")
            running[setup.name] = start(setup, issuer, policy, work, stack)
        for item in running.values():
            wait_ready(item, token)
            out["setups"][item.setup.name] = {
                "description": item.setup.description,
                "sanity": sanity(item, token, forged),
                "same": None,
                "distinct": None,
                "rate": None,
            }
        names = list(running)
        if wrk is not None:
            same: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
            distinct: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
            for item in running.values():
                wrk_run(wrk, item, settings.warmup_seconds, settings.connections, token=token)
            progress(f"  minting {settings.distinct_tokens} distinct tokens")
            tokens = work / "tokens.txt"
            tokens.write_text("\n".join(mint_distinct(issuer, settings.distinct_tokens)) + "\n")
            # Each setup walks the file on from where its last run stopped, so a token
            # comes back only after `distinct_tokens` requests: more than the server's
            # verified-token cache holds (10,000), never a cache hit.
            offset = dict.fromkeys(names, 0)
            for r in range(settings.rounds):
                shift = r % len(names)
                for name in names[shift:] + names[:shift]:
                    progress(f"  round {r + 1}/{settings.rounds}: {name} (same, distinct)")
                    item = running[name]
                    same[name].append(
                        wrk_run(wrk, item, settings.seconds, settings.connections, token=token)
                    )
                    script = work / f"distinct-{name}.lua"
                    start_at = offset[name] % settings.distinct_tokens
                    script.write_text(_LUA % (tokens, start_at, envoy_bench.PATH), encoding="utf-8")
                    result = wrk_run(
                        wrk, item, settings.seconds, settings.connections, script=script
                    )
                    offset[name] += int(result.get("requests", 0))
                    distinct[name].append(result)
            for name in names:
                out["setups"][name]["same"] = envoy_bench.summarise_wrk(same[name])
                out["setups"][name]["distinct"] = envoy_bench.summarise_wrk(distinct[name])
        rated = [n for n in settings.rate.rate_setups if n in running]
        rate_trials: dict[str, list[dict[str, Any]]] = {n: [] for n in rated}
        for r in range(settings.rate.rate_rounds):
            progress(f"  fixed rate {settings.rate.rate:g}/s, round {r + 1}")
            shift = r % max(1, len(rated))
            for name in rated[shift:] + rated[:shift]:
                rate_trials[name].append(rate_once(running[name], token, settings.rate))
        for name, trials in rate_trials.items():
            out["setups"][name]["rate"] = envoy_bench._summarise_rate(trials)
    return out


# -- the do-nothing HTTP authorization server (uvloop + httptools, answers 200) ----------

_OK = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


class _Trivial(asyncio.Protocol):
    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except Exception:
            self.transport.close()

    def on_message_complete(self) -> None:
        self.transport.write(_OK)


def serve_trivial(listen: str) -> None:
    import uvloop

    host, _, port = listen.rpartition(":")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Trivial, host, int(port))
        async with server:
            await server.serve_forever()

    uvloop.run(main())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_bench")
    parser.add_argument("--trivial-listen", required=True, help="HOST:PORT")
    args = parser.parse_args(argv)
    with suppress(KeyboardInterrupt):
        serve_trivial(args.trivial_listen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
