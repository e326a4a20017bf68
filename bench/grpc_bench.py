"""Measurement 2: server CPU per check through gRPC, for each server model and case.

Every case has its own server process, all started up front. One client process
(``bench.grpc_client``) runs the trials, interleaved in rounds so that drift on this
shared machine hits every case alike, and divides each server's CPU time (utime +
stime of all its threads, from /proc) by the number of checks of the trial.
"""

from __future__ import annotations

import json
import statistics
import subprocess
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.fixtures import BenchIssuer, mint, mint_distinct, write_policy
from bench.otlp_sink import otlp_sink
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
from bench.profile import RATE, profiled

CLIENT_TIMEOUT = 420.0


@dataclass(frozen=True)
class Case:
    name: str
    model: str  # "sync" (grpcio thread pool), "aio" (grpc.aio) or "grpclib" (trivial only)
    handler: str  # "trivial" or "real"
    log_level: str  # the server's --log-level; decision lines are INFO
    tokens: str  # "seen" or "unseen"
    workers: int = 16  # thread-pool size of the sync servers
    args: tuple[str, ...] = ()  # more server options (real handler)
    note: str = ""  # what `args` change, for the label
    processes: int = 1  # `ext-authz serve --processes`
    connections: int = 1  # client connections (several processes need several)
    tracing: bool = False  # --otlp-endpoint: a span per check, exported over OTLP/HTTP

    @property
    def label(self) -> str:
        pool = f", {self.workers} threads" if self.model == "sync" else ""
        if self.processes > 1:
            pool += f", {self.processes} processes"
        conns = f", {self.connections} connections" if self.connections > 1 else ""
        if self.model == "grpclib":
            return f"grpclib (h2 on uvloop), trivial handler (answers OK){conns}"
        if self.handler == "trivial":
            return f"{self.model}{pool}, trivial handler (answers OK){conns}"
        note = f", {self.note}" if self.note else ""
        traced = ", traced (OTLP)" if self.tracing else ""
        return (
            f"{self.model}{pool}, real handler, {self.tokens} token, log {self.log_level}"
            f"{note}{traced}{conns}"
        )


@dataclass(frozen=True)
class Settings:
    rounds: int  # each case is measured once per round; rounds interleave the cases
    seen_checks: int
    unseen_checks: int
    concurrency: int
    warmup: int
    cases: tuple[Case, ...]
    profile_cases: tuple[str, ...]


SHIPPED_WORKERS = 4  # `ext-authz serve --workers` default


def _case(
    model: str,
    handler: str,
    level: str,
    tokens: str,
    workers: int = SHIPPED_WORKERS,
    *,
    tag: str = "",
    args: tuple[str, ...] = (),
    note: str = "",
    processes: int = 1,
    connections: int = 1,
) -> Case:
    name = f"{model}-{handler}" if handler == "trivial" else f"{model}-{tokens}-{level}"
    if workers != SHIPPED_WORKERS:
        name += f"-w{workers}"
    if tag:
        name += f"-{tag}"
    if processes > 1:
        name += f"-p{processes}"
    if connections > 1:
        name += f"-c{connections}"
    return Case(name, model, handler, level, tokens, workers, args, note, processes, connections)


MEMO_OFF = ("--memo-size", "0")
SPREAD = 8  # client connections for the --processes comparison


TRACED_CASES = (
    Case("sync-seen-info-traced", "sync", "real", "info", "seen", SHIPPED_WORKERS, tracing=True),
    Case(
        "sync-unseen-info-traced", "sync", "real", "info", "unseen", SHIPPED_WORKERS, tracing=True
    ),
)
ALL_CASES = (
    _case("sync", "trivial", "warning", "seen"),
    _case("aio", "trivial", "warning", "seen"),
    # another Python gRPC stack's floor: HTTP/2 in Python (h2) on uvloop
    _case("grpclib", "trivial", "warning", "seen"),
    _case("sync", "real", "info", "seen"),
    _case("sync", "real", "warning", "seen"),
    _case("aio", "real", "info", "seen"),
    _case("aio", "real", "warning", "seen"),
    _case("sync", "real", "info", "unseen"),
    _case("sync", "real", "warning", "unseen"),
    _case("aio", "real", "info", "unseen"),
    _case("aio", "real", "warning", "unseen"),
    _case("sync", "trivial", "warning", "seen", workers=2),
    _case("sync", "real", "info", "seen", workers=2),
    _case("sync", "real", "info", "unseen", workers=2),
    _case("sync", "real", "info", "seen", workers=16),
    # the answer memo (on by default) and the decision log modes
    _case("sync", "real", "info", "seen", tag="nomemo", args=MEMO_OFF, note="memo off"),
    _case("aio", "real", "info", "seen", tag="nomemo", args=MEMO_OFF, note="memo off"),
    _case(
        "sync",
        "real",
        "info",
        "seen",
        tag="logdeny",
        args=("--decision-log", "deny"),
        note="--decision-log deny",
    ),
    _case(
        "sync",
        "real",
        "info",
        "seen",
        tag="logoff",
        args=("--decision-log", "off"),
        note="--decision-log off",
    ),
    _case(
        "sync",
        "real",
        "info",
        "unseen",
        tag="logoff",
        args=("--decision-log", "off"),
        note="--decision-log off",
    ),
    # check threads
    _case("sync", "real", "info", "seen", workers=1),
    _case("sync", "real", "info", "seen", workers=8),
    # --processes: one process against two, both over several connections
    _case("sync", "trivial", "warning", "seen", connections=SPREAD),
    _case("sync", "real", "info", "seen", connections=SPREAD),
    _case("sync", "real", "info", "seen", processes=2, connections=SPREAD),
    *TRACED_CASES,
)
QUICK_CASES = tuple(
    c
    for c in ALL_CASES
    if c.name
    in {
        "sync-trivial",
        "aio-trivial",
        "grpclib-trivial",
        "sync-seen-info",
        "sync-seen-warning",
        "aio-seen-info",
        "sync-unseen-info",
        "aio-unseen-info",
        "sync-seen-info-w2",
        "sync-seen-info-nomemo",
        "sync-seen-info-logoff",
        "sync-seen-info-c8",
        "sync-seen-info-p2-c8",
        "sync-trivial-c8",
        "sync-seen-info-traced",
    }
)

FULL = Settings(
    rounds=5,
    seen_checks=6_000,
    unseen_checks=2_500,
    concurrency=48,
    warmup=400,
    cases=ALL_CASES,
    profile_cases=("sync-seen-info", "sync-unseen-info", "aio-seen-info", "sync-trivial"),
)
QUICK = Settings(
    rounds=3,
    seen_checks=2_500,
    unseen_checks=1_000,
    concurrency=48,
    warmup=300,
    cases=QUICK_CASES,
    profile_cases=(),
)


def server_command(
    case: Case, policy: Path, port: int, otlp_endpoint: str | None = None
) -> list[str]:
    listen = f"{LOOPBACK}:{port}"
    if case.model == "grpclib":
        return python_module("bench.grpclib_server", "--listen", listen)
    if case.handler == "trivial":
        return python_module(
            "bench.trivial_server",
            "--listen",
            listen,
            "--mode",
            case.model,
            "--workers",
            str(case.workers),
        )
    if case.model == "sync":
        traced = ["--otlp-endpoint", otlp_endpoint] if case.tracing and otlp_endpoint else []
        return python_module(
            "ext_authz",
            "serve",
            "--config",
            str(policy),
            "--listen",
            listen,
            "--log-level",
            case.log_level,
            "--workers",
            str(case.workers),
            "--processes",
            str(case.processes),
            *case.args,
            *traced,
        )
    return python_module(
        "bench.aio_server",
        "--config",
        str(policy),
        "--listen",
        listen,
        "--log-level",
        case.log_level,
        *case.args,
    )


def _write_tokens(path: Path, tokens: Sequence[str]) -> Path:
    path.write_text("\n".join(tokens) + "\n", encoding="ascii")
    return path


@dataclass(frozen=True)
class Trial:
    case: Case
    server: Child
    port: int
    tokens: Path

    def plan_entry(self, settings: Settings) -> dict[str, Any]:
        count = settings.seen_checks if self.case.tokens == "seen" else settings.unseen_checks
        return {
            "key": self.case.name,
            "target": f"{LOOPBACK}:{self.port}",
            "pid": self.server.pid,
            "tokens": str(self.tokens),
            "count": count,
            "connections": self.case.connections,
        }


def _run_plan(
    trials: Sequence[Trial], warmup: Path, settings: Settings, work: Path, name: str
) -> list[dict[str, Any]]:
    """One client process runs every trial in order; its progress goes to our stderr."""
    plan = {
        "concurrency": settings.concurrency,
        "warmup": settings.warmup,
        "warmup_tokens": str(warmup),
        "trials": [t.plan_entry(settings) for t in trials],
    }
    plan_path = work / f"{name}.plan.json"
    plan_path.write_text(json.dumps(plan), encoding="utf-8")
    done = subprocess.run(
        python_module("bench.grpc_client", "--plan", str(plan_path)),
        stdout=subprocess.PIPE,
        text=True,
        timeout=CLIENT_TIMEOUT,
        env=python_env(),
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"gRPC client failed with exit code {done.returncode}")
    results: list[dict[str, Any]] = json.loads(done.stdout)
    for trial, result in zip(trials, results, strict=True):
        if not trial.server.alive():
            raise BenchError(trial.server.describe())
        count = trial.plan_entry(settings)["count"]
        if result["ok"] != count:
            raise BenchError(
                f"{trial.case.name}: {result['ok']} of {count} checks allowed "
                f"({result['denied']} denied, {result['errors']} errors)"
            )
    return results


def _summary(case: Case, trials: list[dict[str, Any]]) -> dict[str, Any]:
    def med(key: str) -> float:
        return float(statistics.median(t[key] for t in trials))

    us = [t["server_us_per_check"] for t in trials]
    return {
        "name": case.name,
        "label": case.label,
        "model": case.model,
        "handler": case.handler,
        "log_level": case.log_level,
        "tokens": case.tokens,
        "workers": case.workers,
        "processes": case.processes,
        "connections": case.connections,
        "note": case.note,
        "tracing": case.tracing,
        "checks": trials[0]["checks"],
        "trials": len(trials),
        "server_us": float(statistics.median(us)),
        "server_us_min": min(us),
        "server_us_max": max(us),
        "server_user_us": med("server_user_us_per_check"),
        "server_system_us": med("server_system_us_per_check"),
        "server_cpu_share": med("server_cpu_share"),
        "context_switches": med("context_switches_per_check"),
        "client_us": med("client_us_per_check"),
        "checks_per_s": med("checks_per_s"),
        "p50_ms": med("p50_ms"),
        "p99_ms": med("p99_ms"),
        "raw": trials,
    }


def run(
    issuer: BenchIssuer,
    settings: Settings,
    work: Path,
    profile: bool,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    policy = write_policy(work, issuer)
    seen = _write_tokens(work / "seen.txt", [mint(issuer)])
    warmup = _write_tokens(work / "warmup.txt", mint_distinct(issuer, 50, prefix="warm"))
    rounds = settings.rounds + (1 if profile else 0)
    progress(f"  minting {rounds * settings.unseen_checks} distinct {issuer.alg} tokens")
    unseen = [
        _write_tokens(
            work / f"unseen-{r}.txt",
            mint_distinct(issuer, settings.unseen_checks, prefix=f"grpc-{r}"),
        )
        for r in range(rounds)
    ]
    trials: dict[str, list[dict[str, Any]]] = {c.name: [] for c in settings.cases}
    profiles: list[dict[str, Any]] = []
    with ExitStack() as stack:
        sink = stack.enter_context(otlp_sink())  # where the traced servers export
        servers: dict[str, tuple[Child, int]] = {}
        for case in settings.cases:
            port = free_port()
            # Decision lines (INFO) go to /dev/null: the default-logging case.
            stderr = None if case.log_level == "info" else work / f"{case.name}.stderr.log"
            command = server_command(case, policy, port, sink.endpoint)
            server = stack.enter_context(child(case.name, command, stderr))
            servers[case.name] = (server, port)
        for server, port in servers.values():
            wait_grpc_serving(port, server)
        cases = list(settings.cases)
        plan: list[Trial] = []
        for r in range(settings.rounds):
            shift = r % len(cases)
            for case in cases[shift:] + cases[:shift]:
                server, port = servers[case.name]
                tokens = seen if case.tokens == "seen" else unseen[r]
                plan.append(Trial(case, server, port, tokens))
        progress(f"  gRPC: {len(plan)} trials ({len(cases)} servers, {settings.rounds} rounds)")
        for trial, result in zip(
            plan, _run_plan(plan, warmup, settings, work, "rounds"), strict=True
        ):
            trials[trial.case.name].append(result)
        if profile:
            for name in settings.profile_cases:
                case = next(c for c in cases if c.name == name)
                progress(f"  gRPC profile (py-spy --gil): {case.label}")
                server, port = servers[name]
                tokens = seen if case.tokens == "seen" else unseen[-1]
                one = Trial(case, server, port, tokens)
                with profiled(server.pid, work / f"{name}.pyspy.txt") as sampled:
                    (result,) = _run_plan([one], warmup, settings, work, f"profile-{name}")
                summary = sampled.summary()
                if "samples" in summary:
                    # Sampling also covered client start-up and warm-up: rescale to the trial.
                    busy = result["wall_s"] * (1 + settings.warmup / result["checks"])
                    summary["gil_held_share"] = summary["samples"] / (RATE * busy)
                result.update(name=case.name, label=case.label, profile=summary)
                profiles.append(result)
        exported = sink.summary()
    return {
        "alg": issuer.alg,
        "concurrency": settings.concurrency,
        "rounds": settings.rounds,
        "results": [_summary(c, trials[c.name]) for c in settings.cases],
        "profiles": profiles,
        "otlp_sink": exported,
    }
