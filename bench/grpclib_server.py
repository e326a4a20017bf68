"""A bench-only Authorization server on grpclib that answers OK without looking at the
request: the do-nothing floor of another Python gRPC stack (HTTP/2 in Python by `h2`,
on uvloop), next to grpcio's in the gRPC table.

It lives in its own module because grpclib ships its own copy of the gRPC Health
protos, which cannot be registered in one process beside grpcio-health-checking's.

    python -m bench.grpclib_server --listen 127.0.0.1:9101
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import uvloop
from envoy.service.auth.v3 import external_auth_pb2
from google.rpc import code_pb2
from grpclib.const import Cardinality, Handler
from grpclib.health.service import Health
from grpclib.server import Server, Stream

CHECK = "/envoy.service.auth.v3.Authorization/Check"


class TrivialAuthorization:
    """grpclib's service protocol (`__mapping__`), without generated stubs."""

    def __init__(self) -> None:
        self._ok = external_auth_pb2.CheckResponse()
        self._ok.status.code = code_pb2.OK

    async def check(self, stream: Stream[Any, Any]) -> None:
        await stream.recv_message()
        await stream.send_message(self._ok)

    def __mapping__(self) -> Mapping[str, Handler]:
        return {
            CHECK: Handler(
                self.check,
                Cardinality.UNARY_UNARY,
                external_auth_pb2.CheckRequest,
                external_auth_pb2.CheckResponse,
            )
        }


async def serve(host: str, port: int) -> int:
    server = Server([TrivialAuthorization(), Health()])
    await server.start(host, port, reuse_port=False)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    server.close()
    await server.wait_closed()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.grpclib_server")
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    args = parser.parse_args(argv)
    host, _, port = str(args.listen).rpartition(":")
    return uvloop.run(serve(host, int(port)))


if __name__ == "__main__":
    sys.exit(main())
