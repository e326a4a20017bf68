"""The real server's handler hosted on ``grpc.aio`` instead of the thread-pool server.

Everything but the gRPC host is the production code: the policy loader, the key
manager, the verified-token cache, the answer memo, the ``Authorizer`` and
``AuthorizationService`` (its synchronous ``answer`` is called directly inside the
coroutine, with no thread hop, and returns the serialised response). It exists so the
sync-vs-aio choice is measured with the real handler.

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
from envoy.service.auth.v3 import external_auth_pb2
from grpc_health.v1 import _async as health_async
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ext_authz.authorizer import Authorizer, Runtime
from ext_authz.clock import SystemClock
from ext_authz.envoy.server import AUTHORIZATION_SERVICE, AuthorizationService
from ext_authz.keys.manager import KeyManager
from ext_authz.log import configure
from ext_authz.memo import DEFAULT_SIZE as DEFAULT_MEMO_SIZE
from ext_authz.memo import AnswerMemo
from ext_authz.policy.loader import PolicyError, load_policy
from ext_authz.tokens.cache import VerifiedTokenCache

SERVER_OPTIONS = [("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 1024 * 1024)]
TOKEN_CACHE_SIZE = 10_000


class AioAuthorizationService:
    """Envoy's Authorization service on the event loop, delegating to the sync handler."""

    def __init__(self, inner: AuthorizationService) -> None:
        self._inner = inner

    async def check(self, request: Any, context: Any) -> bytes:
        return self._inner.answer(request, context)

    def handlers(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            AUTHORIZATION_SERVICE,
            {
                "Check": grpc.unary_unary_rpc_method_handler(
                    self.check,
                    request_deserializer=external_auth_pb2.CheckRequest.FromString,
                    response_serializer=None,
                )
            },
        )


async def serve(config: Path, listen: str, memo_size: int = DEFAULT_MEMO_SIZE) -> int:
    try:
        policy = load_policy(config)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    clock = SystemClock()
    keys = KeyManager(clock=clock)
    cache = VerifiedTokenCache(clock, maxsize=TOKEN_CACHE_SIZE)
    runtime = Runtime(policy, keys)
    authorizer = Authorizer.over(lambda: runtime, clock, cache)
    memo: AnswerMemo[bytes] | None = None
    if memo_size > 0:
        memo = AnswerMemo(lambda: runtime, cache, clock, memo_size)
    authorization = AuthorizationService(authorizer, policy.realm, memo=memo)
    server = grpc.aio.server(options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers((AioAuthorizationService(authorization).handlers(),))
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
    keys.start(policy.key_sources)
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
    parser.add_argument("--memo-size", type=int, default=DEFAULT_MEMO_SIZE)
    args = parser.parse_args(argv)
    configure(args.log_format, args.log_level, buffered=True)  # as `ext-authz serve`
    return asyncio.run(serve(args.config, args.listen, args.memo_size))


if __name__ == "__main__":
    sys.exit(main())
