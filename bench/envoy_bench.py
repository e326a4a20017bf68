"""Measurement 3: through a real Envoy, our ext_authz server against Envoy's jwt_authn.

All setups run at once (one Envoy each, ``--concurrency 1``), answer from the same
``direct_response`` upstream and get the same RS256 token and the same load; the
closed-loop ``wrk`` runs are interleaved across setups in rounds, so drift on this
noisy machine hits every setup alike. A fixed-rate run (``bench.httpload``) gives
the latency at 1,000 requests/s; "added latency" is a setup's figure minus the
no-auth Envoy's from the same run.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.envoy_configs import PROTECTED_PREFIX, render
from bench.fixtures import BenchIssuer, make_issuers, mint, write_policy
from bench.procs import (
    LOOPBACK,
    BenchError,
    Child,
    child,
    free_port,
    python_env,
    python_module,
    wait_grpc_serving,
)
from bench.procstat import process_cpu_seconds
from bench.wrk import run_wrk
from ext_authz.demo.processes import envoy_binary, random_base_id
from ext_authz.deploy.envoy_config import READY_PATH, EnvoyParams

PATH = f"{PROTECTED_PREFIX}/42"
READY_TIMEOUT = 30.0


@dataclass(frozen=True)
class Setup:
    name: str
    envoy: str  # the bootstrap flavour: none, ext_authz or jwt_authn
    server: str | None  # "real" (python -m ext_authz serve), "trivial", or None
    log_level: str = "info"
    description: str = ""
    workers: int = 4


SETUP_NONE = Setup("none", "none", None, description="Envoy, no auth filter (reference)")
SETUP_OURS = Setup(
    "ext_authz",
    "ext_authz",
    "real",
    "info",
    "Envoy + ext_authz → our server (default INFO decision log to /dev/null)",
)
SETUP_OURS_QUIET = Setup(
    "ext_authz-warning",
    "ext_authz",
    "real",
    "warning",
    "Envoy + ext_authz → our server, --log-level warning",
)
SETUP_OURS_W2 = Setup(
    "ext_authz-w2",
    "ext_authz",
    "real",
    "info",
    "Envoy + ext_authz → our server, --workers 2 (INFO log to /dev/null)",
    workers=2,
)
SETUP_TRIVIAL = Setup(
    "ext_authz-trivial",
    "ext_authz",
    "trivial",
    "warning",
    "Envoy + ext_authz → trivial Python gRPC server (answers OK)",
)
SETUP_JWT = Setup(
    "jwt_authn", "jwt_authn", None, description="Envoy + jwt_authn (local_jwks, no token cache)"
)


@dataclass(frozen=True)
class Settings:
    setups: tuple[Setup, ...]
    wrk_rounds: int
    wrk_seconds: int
    wrk_warmup_seconds: int
    connections: int
    rate: float
    rate_seconds: float
    rate_rounds: int
    rate_connections: int
    rate_setups: tuple[str, ...]


FULL = Settings(
    setups=(SETUP_NONE, SETUP_OURS, SETUP_OURS_QUIET, SETUP_OURS_W2, SETUP_TRIVIAL, SETUP_JWT),
    wrk_rounds=2,
    wrk_seconds=6,
    wrk_warmup_seconds=2,
    connections=32,
    rate=1000.0,
    rate_seconds=5.0,
    rate_rounds=3,
    rate_connections=16,
    rate_setups=("none", "ext_authz", "ext_authz-w2", "ext_authz-trivial", "jwt_authn"),
)
QUICK = Settings(
    setups=(SETUP_NONE, SETUP_OURS, SETUP_JWT),
    wrk_rounds=1,
    wrk_seconds=5,
    wrk_warmup_seconds=1,
    connections=32,
    rate=1000.0,
    rate_seconds=4.0,
    rate_rounds=2,
    rate_connections=16,
    rate_setups=("none", "ext_authz", "jwt_authn"),
)


def load_headers(token: str) -> dict[str, str]:
    return {
        "authorization": f"Bearer {token}",
        "accept": "application/json",
        "accept-encoding": "gzip, deflate",
        "user-agent": "bench-load/1.0",
    }


@dataclass
class Running:
    setup: Setup
    envoy: Child
    server: Child | None
    params: EnvoyParams
    config_path: Path
    validation: str

    @property
    def url(self) -> str:
        return f"{self.params.listen_url}{PATH}"


def validate(config: Path) -> str:
    """``envoy --mode validate``: "OK", or the reason it refused the file."""
    cmd = [envoy_binary(), "--mode", "validate", "-c", str(config)]
    cmd += ["--base-id", str(random_base_id()), "--log-level", "error"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode == 0:
        return "OK"
    return (done.stderr or done.stdout).strip()[-800:]


def _server_cmd(setup: Setup, policy: Path, port: int) -> list[str]:
    listen = f"{LOOPBACK}:{port}"
    if setup.server == "trivial":
        return python_module("bench.trivial_server", "--listen", listen, "--mode", "sync")
    return python_module(
        "ext_authz",
        "serve",
        "--config",
        str(policy),
        "--listen",
        listen,
        "--log-level",
        setup.log_level,
        "--workers",
        str(setup.workers),
    )


def start(setup: Setup, issuer: BenchIssuer, policy: Path, work: Path, stack: ExitStack) -> Running:
    server: Child | None = None
    authz_port = free_port()
    if setup.server is not None:
        stderr = None if setup.log_level == "info" else work / f"envoy-{setup.name}-server.log"
        server = stack.enter_context(
            child(f"server-{setup.name}", _server_cmd(setup, policy, authz_port), stderr)
        )
        wait_grpc_serving(authz_port, server)
    params = EnvoyParams(
        listen_port=free_port(),
        admin_port=free_port(),
        ext_authz_port=authz_port,
        upstream_port=free_port(),
    )
    config_path = work / f"envoy-{setup.name}.yaml"
    config_path.write_text(render(setup.envoy, params, issuer), encoding="utf-8")
    verdict = validate(config_path)
    if verdict != "OK":
        raise BenchError(f"envoy refused the {setup.name} config: {verdict}")
    cmd = [envoy_binary(), "-c", str(config_path), "--base-id", str(random_base_id())]
    cmd += ["--log-level", "warn", "--concurrency", "1"]
    envoy = stack.enter_context(
        child(f"envoy-{setup.name}", cmd, work / f"envoy-{setup.name}.log", env=python_env())
    )
    return Running(setup, envoy, server, params, config_path, verdict)


def _get(client: httpx.Client, url: str, token: str | None) -> int:
    headers = {} if token is None else {"authorization": f"Bearer {token}"}
    return client.get(url, headers=headers).status_code


def wait_ready(running: Running, token: str) -> None:
    """Until Envoy is up and (for ext_authz) its cluster is healthy: the token gets a 200."""
    deadline = time.monotonic() + READY_TIMEOUT
    last = "no answer"
    with httpx.Client(trust_env=False, timeout=2.0) as client:
        while time.monotonic() < deadline:
            for proc in (running.envoy, running.server):
                if proc is not None and not proc.alive():
                    raise BenchError(proc.describe())
            try:
                if _get(client, f"{running.params.listen_url}{READY_PATH}", None) == 200:
                    status = _get(client, running.url, token)
                    if status == 200:
                        return
                    last = f"status {status}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.2)
    raise BenchError(f"{running.setup.name} not ready in {READY_TIMEOUT:g} s: {last}")


def sanity(running: Running, token: str, forged: str) -> dict[str, int]:
    """Statuses for a good token, no token and a forged one: auth must really run."""
    with httpx.Client(trust_env=False, timeout=5.0) as client:
        return {
            "good_token": _get(client, running.url, token),
            "no_token": _get(client, running.url, None),
            "forged_token": _get(client, running.url, forged),
        }


def _cpu(running: Running) -> tuple[float, float]:
    envoy_cpu = process_cpu_seconds(running.envoy.pid)
    server_cpu = process_cpu_seconds(running.server.pid) if running.server else 0.0
    return envoy_cpu, server_cpu


def wrk_once(
    wrk: str, running: Running, token: str, seconds: int, connections: int
) -> dict[str, Any]:
    envoy_before, server_before = _cpu(running)
    result = run_wrk(
        wrk, running.url, load_headers(token), seconds=seconds, connections=connections
    )
    envoy_after, server_after = _cpu(running)
    requests = max(1, int(result.get("requests", 0)))
    result["envoy_us_per_request"] = (envoy_after - envoy_before) / requests * 1e6
    result["server_us_per_request"] = (server_after - server_before) / requests * 1e6
    return result


def rate_once(running: Running, token: str, settings: Settings) -> dict[str, Any]:
    cmd = python_module(
        "bench.httpload",
        "--port",
        str(running.params.listen_port),
        "--path",
        PATH,
        "--rate",
        str(settings.rate),
        "--seconds",
        str(settings.rate_seconds),
        "--connections",
        str(settings.rate_connections),
    )
    for name, value in load_headers(token).items():
        cmd += ["--header", f"{name}: {value}"]
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=settings.rate_seconds + 90,
        env=python_env(),
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"httpload failed: {done.stderr.strip()[-800:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def summarise_wrk(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians (and totals) over the rounds of closed-loop runs of one setup."""

    def med(key: str) -> float:
        values = [float(t[key]) for t in trials if key in t]
        return float(statistics.median(values)) if values else 0.0

    return {
        "rps": med("rps"),
        "rps_all": [t["rps"] for t in trials],
        "p50_ms": med("p50_ms"),
        "p99_ms": med("p99_ms"),
        "latency_avg_ms": med("latency_avg_ms"),
        "non_2xx": sum(int(t["non_2xx"]) for t in trials),
        "socket_errors": sum(int(t["socket_errors"]) for t in trials),
        "requests": sum(int(t.get("requests", 0)) for t in trials),
        "envoy_us_per_request": med("envoy_us_per_request"),
        "wrk_us_per_request": med("wrk_us_per_request"),
        "server_us_per_request": med("server_us_per_request"),
        "raw": trials,
    }


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
        "token_bytes": len(token),
        "connections": settings.connections,
        "wrk_seconds": settings.wrk_seconds,
        "wrk_rounds": settings.wrk_rounds,
        "rate": settings.rate,
        "rate_seconds": settings.rate_seconds,
        "rate_rounds": settings.rate_rounds,
        "rate_connections": settings.rate_connections,
        "setups": {},
    }
    with ExitStack() as stack:
        running: dict[str, Running] = {}
        for setup in settings.setups:
            progress(f"  Envoy: starting '{setup.name}'")
            running[setup.name] = start(setup, issuer, policy, work, stack)
        for item in running.values():
            wait_ready(item, token)
            out["setups"][item.setup.name] = {
                "description": item.setup.description,
                "validation": item.validation,
                "sanity": sanity(item, token, forged),
                "wrk": None,
                "rate": None,
            }
        if wrk is not None:
            trials: dict[str, list[dict[str, Any]]] = {name: [] for name in running}
            for item in running.values():
                run_wrk(
                    wrk,
                    item.url,
                    load_headers(token),
                    seconds=settings.wrk_warmup_seconds,
                    connections=settings.connections,
                )
            names = list(running)
            for r in range(settings.wrk_rounds):
                shift = r % len(names)
                for name in names[shift:] + names[:shift]:
                    progress(f"  wrk round {r + 1}/{settings.wrk_rounds}: {name}")
                    trials[name].append(
                        wrk_once(
                            wrk, running[name], token, settings.wrk_seconds, settings.connections
                        )
                    )
            for name, results in trials.items():
                out["setups"][name]["wrk"] = summarise_wrk(results)
        rated = [name for name in settings.rate_setups if name in running]
        rate_trials: dict[str, list[dict[str, Any]]] = {name: [] for name in rated}
        for r in range(settings.rate_rounds):
            progress(f"  fixed rate {settings.rate:g}/s, round {r + 1}/{settings.rate_rounds}")
            shift = r % max(1, len(rated))
            for name in rated[shift:] + rated[:shift]:
                rate_trials[name].append(rate_once(running[name], token, settings))
        for name, results in rate_trials.items():
            out["setups"][name]["rate"] = _summarise_rate(results)
    return out


def _summarise_rate(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of the rounds' percentiles; statuses and counts added up."""

    def med(key: str) -> float:
        return float(statistics.median(float(t[key]) for t in trials))

    statuses: dict[str, int] = {}
    for trial in trials:
        for code, count in trial["statuses"].items():
            statuses[code] = statuses.get(code, 0) + int(count)
    return {
        "p50_ms": med("p50_ms"),
        "p90_ms": med("p90_ms"),
        "p99_ms": med("p99_ms"),
        "p999_ms": med("p999_ms"),
        "p99_all": [t["p99_ms"] for t in trials],
        "max_ms": max(float(t["max_ms"]) for t in trials),
        "achieved_rps": med("achieved_rps"),
        "completed": sum(int(t["completed"]) for t in trials),
        "failures": sum(int(t["failures"]) for t in trials),
        "statuses": statuses,
        "raw": trials,
    }
