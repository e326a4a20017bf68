"""A bench-only Authorization server that answers OK without looking at the request.

It separates the gRPC layer's cost from the handler's: ``--mode sync`` hosts it on
grpcio's thread-pool server with the real server's options and pool size, ``--mode
aio`` on ``grpc.aio``. Both also serve gRPC Health (SERVING at once).

    python -m bench.trivial_server --listen 127.0.0.1:9101 --mode sync
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from collections.abc import Sequence
from concurrent import futures
from types import FrameType
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2
from grpc_health.v1 import _async as health_async
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVER_OPTIONS = [("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 1024 * 1024)]
WORKERS = 16


def ok_response() -> Any:
    response = external_auth_pb2.CheckResponse()
    response.status.code = code_pb2.OK
    return response


class TrivialService(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self._ok = ok_response()

    def Check(self, request: Any, context: Any) -> Any:
        return self._ok


class AioTrivialService(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self._ok = ok_response()

    async def Check(self, request: Any, context: Any) -> Any:
        return self._ok


def serve_sync(listen: str, workers: int = WORKERS) -> int:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="trivial-check"),
        options=SERVER_OPTIONS,
    )
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(TrivialService(), server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if server.add_insecure_port(listen) == 0:
        print(f"cannot listen on {listen}", file=sys.stderr)
        return 1
    stopping = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    while not stopping.wait(1.0):
        pass
    server.stop(1.0).wait()
    return 0


async def _serve_aio(listen: str) -> int:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(AioTrivialService(), server)
    health_servicer = health_async.HealthServicer()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if server.add_insecure_port(listen) == 0:
        print(f"cannot listen on {listen}", file=sys.stderr)
        return 1
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await server.start()
    await stopping.wait()
    await server.stop(1.0)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.trivial_server")
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    parser.add_argument("--mode", choices=["sync", "aio"], default="sync")
    parser.add_argument("--workers", type=int, default=WORKERS, help="sync thread-pool size")
    args = parser.parse_args(argv)
    if args.mode == "sync":
        return serve_sync(args.listen, args.workers)
    return asyncio.run(_serve_aio(args.listen))


if __name__ == "__main__":
    sys.exit(main())
