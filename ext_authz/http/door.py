"""Wiring of the HTTP door into `ext-authz serve`: one call from the composition root."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from ext_authz.authorizer import Runtime
from ext_authz.clock import Clock
from ext_authz.decision_log import DecisionObserver
from ext_authz.http.server import HttpDoor, build_http_door
from ext_authz.memo import AnswerMemo
from ext_authz.tokens.cache import VerifiedTokenCache
from ext_authz.tracing import CheckTracer

log = logging.getLogger("ext_authz.http")


def start_http_door(
    listen: str | None,
    runtime: Callable[[], Runtime],
    clock: Clock,
    cache: VerifiedTokenCache,
    observers: Sequence[DecisionObserver],
    reuse_port: bool = False,
    tracer: CheckTracer | None = None,
    memo: AnswerMemo[None] | None = None,
) -> HttpDoor | None:
    """Bind and start the HTTP door on `listen` (None: no HTTP door). It answers
    `/healthz` with 503 until `set_serving(True)`. Raises OSError when it cannot bind."""
    if not listen:
        return None
    door, port = build_http_door(
        listen,
        runtime,
        clock=clock,
        cache=cache,
        observers=observers,
        reuse_port=reuse_port,
        tracer=tracer,
        memo=memo,
    )
    door.start()
    log.info("http door listening", extra={"http_listen": listen, "port": port})
    return door
