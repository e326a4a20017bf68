"""The gRPC server: Envoy's Authorization service and the standard Health service.

Checks are served by grpcio's synchronous server on a thread pool (cheaper per
check than grpc.aio here: see docs/benchmarks.md); each check reads immutable
snapshots, while key fetching runs on the key manager's own asyncio loop. The handler
returns the serialised response (grpcio sends bytes as they are), so an answer from
the memo is never rebuilt. grpcio's sync server runs every handler on the pool, a
memo hit included: its polling thread cannot run one inline (the handler waits for
the request on that very thread).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ext_authz.authorizer import Authorizer
from ext_authz.decision import Decision, Deny
from ext_authz.decision_log import DecisionObserver, decision_id, log_decision
from ext_authz.envoy.request import BadCheckRequest, request_view
from ext_authz.envoy.response import response_bytes, with_decision_id
from ext_authz.errors import DenialReason
from ext_authz.memo import AnswerMemo, Hit, Miss
from ext_authz.tracing import CheckTracer, envoy_trace_headers

AUTHORIZATION_SERVICE = "envoy.service.auth.v3.Authorization"

log = logging.getLogger("ext_authz.server")


class AuthorizationService(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    def __init__(
        self,
        authorizer: Authorizer,
        realm: str | Callable[[], str] = "ext-authz",
        observers: Sequence[DecisionObserver] | None = None,
        tracer: CheckTracer | None = None,
        memo: AnswerMemo[bytes] | None = None,
    ) -> None:
        self._authorizer = authorizer
        # the realm of a denial the pipeline never saw: the live policy's, when given
        self._realm = realm if callable(realm) else (lambda: realm)
        self._observers = tuple(observers) if observers is not None else (log_decision,)
        self._memo = memo
        self._tracer = tracer

    def Check(
        self, request: external_auth_pb2.CheckRequest, context: Any
    ) -> external_auth_pb2.CheckResponse:
        return external_auth_pb2.CheckResponse.FromString(self.answer(request, context))

    def answer(self, request: external_auth_pb2.CheckRequest, _context: Any) -> bytes:
        """The serialised `CheckResponse`: what the server sends (no second encoding)."""
        started = time.perf_counter()
        request_id: str | None = None
        decision: Decision
        response: bytes | None = None
        miss: Miss | None = None
        try:
            view = request_view(request, self._authorizer.token_headers())
            request_id = view.request_id
            tracer = self._tracer
            found = self._memo.get(view) if self._memo is not None else None
            if isinstance(found, Hit):
                decision, response = found.decision, found.answer
                if tracer is not None:  # a span for the hit too, with nothing below it
                    remembered = found.decision
                    tracer.check(lambda _view: remembered, view, envoy_trace_headers(request))
            else:
                miss = found
                if tracer is None:
                    decision = self._authorizer.check(view)
                else:
                    headers = envoy_trace_headers(request)
                    decision = tracer.check(self._authorizer.check, view, headers)
        except BadCheckRequest as bad:
            decision = Deny(DenialReason.REQUEST_INVALID, self._realm(), detail=str(bad))
        except Exception:
            log.exception("could not read the check request; denying")
            decision = Deny(DenialReason.INTERNAL_ERROR, self._realm())
        logged_id = decision_id(request_id)
        seconds = time.perf_counter() - started
        for observe in self._observers:
            try:
                observe(decision, logged_id, seconds)
            except Exception:
                log.exception("decision observer failed")
        if response is None:
            response = response_bytes(decision)
            if miss is not None and self._memo is not None:
                self._memo.put(miss, decision, response)
        return with_decision_id(response, logged_id)

    def method_handlers(self) -> grpc.GenericRpcHandler:
        """Envoy's Authorization service, answering with the bytes `answer` builds."""
        return grpc.method_handlers_generic_handler(
            AUTHORIZATION_SERVICE,
            {
                "Check": grpc.unary_unary_rpc_method_handler(
                    self.answer,
                    request_deserializer=external_auth_pb2.CheckRequest.FromString,
                    response_serializer=None,  # already bytes
                )
            },
        )


def build_server(
    authorizer: Authorizer,
    listen: str,
    *,
    realm: str | Callable[[], str] = "ext-authz",
    workers: int = 4,
    credentials: grpc.ServerCredentials | None = None,
    observers: Sequence[DecisionObserver] | None = None,
    memo: AnswerMemo[bytes] | None = None,
    reuse_port: bool = False,
    tracer: CheckTracer | None = None,
) -> tuple[grpc.Server, health.HealthServicer, int]:
    """A started-ready (not yet started) server, its health servicer and bound port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ext-authz-check"),
        options=[
            ("grpc.so_reuseport", 1 if reuse_port else 0),
            ("grpc.max_receive_message_length", 1024 * 1024),
        ],
    )
    server.add_generic_rpc_handlers(
        (AuthorizationService(authorizer, realm, observers, tracer, memo).method_handlers(),)
    )
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    for service in ("", AUTHORIZATION_SERVICE):
        health_servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if listen == "off":  # the HTTP door alone serves checks
        return server, health_servicer, 0
    if credentials is None:
        port = server.add_insecure_port(listen)
    else:
        port = server.add_secure_port(listen, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    return server, health_servicer, port


def set_serving(health_servicer: health.HealthServicer, serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for service in ("", AUTHORIZATION_SERVICE):
        health_servicer.set(service, status)
