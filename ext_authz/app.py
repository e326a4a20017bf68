"""Composition root: build the pieces from a policy file and run the server."""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from ext_authz.authorizer import Authorizer
from ext_authz.clock import SystemClock
from ext_authz.envoy.server import build_server, set_serving
from ext_authz.keys.manager import KeyManager
from ext_authz.keys.store import KeyStatus
from ext_authz.policy.loader import PolicyError, load_policy
from ext_authz.policy.model import Policy
from ext_authz.tokens.cache import VerifiedTokenCache

log = logging.getLogger("ext_authz")


class PolicyHolder:
    """The current policy snapshot; a reload replaces it whole, atomically."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def __call__(self) -> Policy:
        return self.policy


@dataclass(frozen=True)
class ServeOptions:
    config: Path
    listen: str
    workers: int = 16
    grace: float = 10.0
    token_cache_size: int = 10_000


def serve(options: ServeOptions) -> int:
    """Run until SIGTERM or SIGINT. Returns the process exit code."""
    try:
        policy = load_policy(options.config)
    except PolicyError as exc:
        for problem in exc.problems:
            log.error("policy refused", extra={"problem": str(problem)})
        return 1
    clock = SystemClock()
    holder = PolicyHolder(policy)
    keys = KeyManager(clock=clock)
    cache = VerifiedTokenCache(clock, maxsize=options.token_cache_size)
    authorizer = Authorizer(holder, keys, clock, cache)
    try:
        server, health_servicer, port = build_server(
            authorizer, options.listen, realm=policy.realm, workers=options.workers
        )
    except (OSError, RuntimeError) as exc:
        log.error("cannot start the gRPC server", extra={"error": str(exc)})
        return 1
    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    keys.start(policy.issuers)
    server.start()
    log.info(
        "listening",
        extra={
            "listen": options.listen,
            "port": port,
            "issuers": len(policy.issuers),
            "routes": len(policy.routes),
        },
    )

    def become_ready() -> None:
        keys.wait_ready()
        if stopping.is_set():
            return
        failed = [n for n, s in keys.statuses().items() if s.status is KeyStatus.FAILED]
        set_serving(health_servicer, True)
        log.info("serving", extra={"issuers_without_keys": failed})

    threading.Thread(target=become_ready, name="ext-authz-ready", daemon=True).start()
    while not stopping.wait(1.0):
        pass
    set_serving(health_servicer, False)
    server.stop(options.grace).wait()
    keys.stop()
    log.info("stopped")
    return 0
