"""The real server's handler hosted on ``grpc.aio`` instead of the thread-pool server.

Everything but the gRPC host is the production code: the policy loader, the key
manager, the verified-token cache, the ``Authorizer`` and ``AuthorizationService``
(its synchronous ``Check`` is called directly inside the coroutine, with no thread
hop). It exists so the sync-vs-aio choice is measured with the real handler.

    python -m bench.aio_server --config policy.yaml --listen 127.0.0.1:9102
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from grpc_health.v1 import _async as health_async
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ext_authz.app import PolicyHolder
from ext_authz.authorizer import Authorizer
from ext_authz.clock import SystemClock
from ext_authz.envoy.server import AUTHORIZATION_SERVICE, AuthorizationService
from ext_authz.keys.manager import KeyManager
from ext_authz.log import configure
from ext_authz.policy.loader import PolicyError, load_policy
from ext_authz.tokens.cache import VerifiedTokenCache

SERVER_OPTIONS = [("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 1024 * 1024)]
TOKEN_CACHE_SIZE = 10_000


class AioAuthorizationService(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    """Envoy's Authorization service on the event loop, delegating to the sync handler."""

    def __init__(self, inner: AuthorizationService) -> None:
        self._inner = inner

    async def Check(self, request: Any, context: Any) -> Any:
        return self._inner.Check(request, context)


async def serve(config: Path, listen: str) -> int:
    try:
        policy = load_policy(config)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    clock = SystemClock()
    keys = KeyManager(clock=clock)
    authorizer = Authorizer(
        PolicyHolder(policy), keys, clock, VerifiedTokenCache(clock, maxsize=TOKEN_CACHE_SIZE)
    )
    server = grpc.aio.server(options=SERVER_OPTIONS)
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
        AioAuthorizationService(AuthorizationService(authorizer, policy.realm)), server
    )
    health_servicer = health_async.HealthServicer()
    for service in ("", AUTHORIZATION_SERVICE):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if server.add_insecure_port(listen) == 0:
        print(f"cannot listen on {listen}", file=sys.stderr)
        return 1
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    keys.start(policy.issuers)
    await server.start()
    await loop.run_in_executor(None, keys.wait_ready)
    for service in ("", AUTHORIZATION_SERVICE):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    await stopping.wait()
    await server.stop(1.0)
    keys.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.aio_server")
    parser.add_argument("--config", required=True, type=Path, help="the policy file")
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    parser.add_argument("--log-format", choices=["json", "text"], default="json")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    configure(args.log_format, args.log_level)
    return asyncio.run(serve(args.config, args.listen))


if __name__ == "__main__":
    sys.exit(main())
