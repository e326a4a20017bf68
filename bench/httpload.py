"""Open-loop, rate-limited HTTP/1.1 load: latency at a fixed request rate.

Requests are scheduled at exact times (``rate`` per second, for ``seconds``) and
handed to a pool of keep-alive connections; a request's latency runs from its
scheduled time to the end of its response, so time spent waiting for a free
connection counts (no coordinated omission). Bounded in count and time; loopback
only. Run in its own process; prints one JSON object.

    python -m bench.httpload --port 10000 --path /api/orders/42 --rate 1000 \
        --seconds 10 --header 'authorization: Bearer ...'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from bench.procstat import percentile

HOST = "127.0.0.1"
RESPONSE_TIMEOUT = 5.0
MAX_HEADER_BYTES = 64 * 1024


class ConnectionBroken(Exception):
    pass


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > MAX_HEADER_BYTES:
        raise ConnectionBroken("response head too large")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        lowered = name.strip().lower()
        if lowered == "content-length":
            length = int(value.strip())
        elif lowered == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def run_load(
    port: int,
    path: str,
    headers: Sequence[tuple[str, str]],
    rate: float,
    seconds: float,
    connections: int,
) -> dict[str, Any]:
    lines = [f"GET {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    total = int(rate * seconds)
    queue: asyncio.Queue[float | None] = asyncio.Queue()
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    failures = [0]

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while True:
                scheduled = await queue.get()
                if scheduled is None:
                    return
                try:
                    writer.write(request)
                    status = await asyncio.wait_for(_read_response(reader), RESPONSE_TIMEOUT)
                except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
                    failures[0] += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(HOST, port)
                    continue
                latencies.append(time.perf_counter() - scheduled)
                statuses[status] += 1
        finally:
            writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(connections)]
    await asyncio.sleep(0.2)
    interval = 1.0 / rate
    started = time.perf_counter()
    sent = 0
    while sent < total:
        now = time.perf_counter()
        due = min(total, int((now - started) / interval) + 1)
        while sent < due:
            queue.put_nowait(started + sent * interval)
            sent += 1
        next_at = started + sent * interval
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.wait_for(asyncio.gather(*workers), RESPONSE_TIMEOUT * 4)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rate": rate,
        "seconds": seconds,
        "connections": connections,
        "scheduled": total,
        "completed": len(latencies),
        "failures": failures[0],
        "achieved_rps": len(latencies) / elapsed,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "p50_ms": percentile(latencies, 0.50) * 1e3,
        "p90_ms": percentile(latencies, 0.90) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        "p999_ms": percentile(latencies, 0.999) * 1e3,
        "max_ms": (latencies[-1] if latencies else 0.0) * 1e3,
    }


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected 'name: value', got {text!r}")
    return name.strip(), value.strip()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.httpload")
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    parser.add_argument("--path", default="/")
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--header", type=_header, action="append", default=[])
    args = parser.parse_args(argv)
    if not 0 < args.rate <= 20_000 or not 0 < args.seconds <= 60:
        parser.error("rate must be in (0, 20000] and seconds in (0, 60]")
    result = asyncio.run(
        run_load(args.port, args.path, args.header, args.rate, args.seconds, args.connections)
    )
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
