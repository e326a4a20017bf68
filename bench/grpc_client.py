"""Load driver for measurement 2: a ``grpc.aio`` client with many checks in flight.

Run in its own process with a plan of trials (JSON: concurrency, warm-up, and per
trial a server's address and pid, a token file and a count). For each trial it sends
a warm-up, then exactly ``count`` checks over one channel (one HTTP/2 connection, as
Envoy's ext_authz client uses; or ``connections`` channels, each its own connection,
for servers of several processes), and reads the server's CPU time (all threads of
the process and its children, from /proc) just before and just after. Requests are
serialized CheckRequests shaped like Envoy's, built before the clock starts. The
results are a JSON list on stdout.

    python -m bench.grpc_client --plan plan.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2
from google.rpc import code_pb2

from bench.fixtures import check_request
from bench.procstat import context_switches, percentile, process_tree, tree_cpu_split

CHECK_METHOD = "/envoy.service.auth.v3.Authorization/Check"
CALL_TIMEOUT = 10.0


def serialized_requests(tokens: Sequence[str]) -> list[bytes]:
    out: list[bytes] = []
    for i, token in enumerate(tokens):
        request_id = f"00000000-0000-4000-8000-{i:012d}"
        out.append(check_request(token, request_id).SerializeToString())
    return out


async def _drive(
    target: str, requests: Sequence[bytes], count: int, concurrency: int, connections: int = 1
) -> dict[str, Any]:
    # a local subchannel pool: each channel opens a connection of its own
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(target, options=options) for _ in range(connections)]
    try:
        calls = [
            channel.unary_unary(
                CHECK_METHOD,
                request_serializer=None,
                response_deserializer=external_auth_pb2.CheckResponse.FromString,
            )
            for channel in channels
        ]
        latencies: list[float] = []
        outcome = {"ok": 0, "denied": 0, "errors": 0}
        cursor = [0]

        async def worker(n: int) -> None:
            call = calls[n % len(calls)]
            while cursor[0] < count:
                i = cursor[0]
                cursor[0] += 1
                started = time.perf_counter()
                try:
                    reply = await call(requests[i % len(requests)], timeout=CALL_TIMEOUT)
                except grpc.aio.AioRpcError:
                    outcome["errors"] += 1
                    continue
                latencies.append(time.perf_counter() - started)
                if reply.status.code == code_pb2.OK:
                    outcome["ok"] += 1
                else:
                    outcome["denied"] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(min(concurrency, count))))
        wall = time.perf_counter() - started
    finally:
        for channel in channels:
            await channel.close()
    latencies.sort()
    return {
        "wall_s": wall,
        "p50_ms": percentile(latencies, 0.50) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        **outcome,
    }


async def measure(
    target: str,
    pid: int,
    requests: Sequence[bytes],
    warmup: Sequence[bytes],
    count: int,
    concurrency: int,
    connections: int = 1,
) -> dict[str, Any]:
    if warmup:
        await _drive(target, warmup, len(warmup), concurrency, connections)
    pids = process_tree(pid)
    user_before, system_before = tree_cpu_split(pids)
    switches_before = sum(context_switches(p) for p in pids)
    client_before = time.process_time()
    result = await _drive(target, requests, count, concurrency, connections)
    user_after, system_after = tree_cpu_split(pids)
    switches = sum(context_switches(p) for p in pids) - switches_before
    client_cpu = time.process_time() - client_before
    user, system = user_after - user_before, system_after - system_before
    server_cpu = user + system
    result.update(
        checks=count,
        concurrency=concurrency,
        distinct_requests=len(requests),
        server_cpu_s=server_cpu,
        client_cpu_s=client_cpu,
        server_us_per_check=server_cpu / count * 1e6,
        server_user_us_per_check=user / count * 1e6,
        server_system_us_per_check=system / count * 1e6,
        server_cpu_share=server_cpu / result["wall_s"],
        context_switches_per_check=switches / count,
        client_us_per_check=client_cpu / count * 1e6,
        checks_per_s=count / result["wall_s"],
    )
    return result


def _tokens(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="ascii").splitlines() if line]


async def run_plan(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every trial of ``plan`` in order, each against its own server."""
    concurrency = int(plan["concurrency"])
    warm_tokens = _tokens(Path(plan["warmup_tokens"]))
    warm_requests = serialized_requests(warm_tokens)
    warmup = [warm_requests[i % len(warm_requests)] for i in range(int(plan["warmup"]))]
    built: dict[str, list[bytes]] = {}
    results: list[dict[str, Any]] = []
    trials = plan["trials"]
    for n, trial in enumerate(trials, 1):
        target = str(trial["target"])
        if not target.startswith("127.0.0.1:"):
            raise ValueError("only 127.0.0.1 targets are allowed")
        path = str(trial["tokens"])
        if path not in built:
            built[path] = serialized_requests(_tokens(Path(path)))
        print(f"    trial {n}/{len(trials)}: {trial['key']}", file=sys.stderr, flush=True)
        result = await measure(
            target,
            int(trial["pid"]),
            built[path],
            warmup,
            int(trial["count"]),
            concurrency,
            int(trial.get("connections", 1)),
        )
        result["key"] = trial["key"]
        results.append(result)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_client")
    parser.add_argument("--plan", required=True, type=Path, help="the trials, as JSON")
    args = parser.parse_args(argv)
    plan = json.loads(args.plan.read_text(encoding="utf-8"))
    results = asyncio.run(run_plan(plan))
    json.dump(results, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
