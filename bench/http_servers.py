"""The HTTP door's handler on three servers, to choose the server by measurement.

``raw`` is the shipped server (a raw asyncio protocol on uvloop with httptools:
``ext-authz serve --http-listen``); ``uvicorn`` (ASGI, uvloop + httptools) and ``granian``
(RSGI) host the very same pieces: endpoint and request view, the checker over the
policy, the decision log, the answer. Bench-only; not part of the product.

    python -m bench.http_servers --server uvicorn --policy policy.yaml --listen 127.0.0.1:9103
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from ext_authz.authorizer import Runtime
from ext_authz.clock import SystemClock
from ext_authz.decision import Decision, Deny
from ext_authz.decision_log import decision_id, log_decision
from ext_authz.errors import DenialReason
from ext_authz.http.answer import decision_answer
from ext_authz.http.server import Checker
from ext_authz.http.view import BadHttpRequest, Endpoint, endpoint_of, request_view
from ext_authz.log import configure
from ext_authz.memo import AnswerMemo, Hit
from ext_authz.policy.loader import load_policy
from ext_authz.tokens.cache import VerifiedTokenCache
from tests.support.doubles import StaticKeys

SERVERS = ("raw", "uvicorn", "granian")
PACKAGES = ("uvicorn", "granian")


def ensure_servers(progress: Any = print) -> str | None:
    """None when uvicorn and granian import (installed with pip if missing), else why not."""
    missing = [p for p in PACKAGES if importlib.util.find_spec(p) is None]
    if not missing:
        return None
    progress(f"  {', '.join(missing)} not found: installing with pip into this environment")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", *missing],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        return f"could not install {', '.join(missing)}: {done.stderr.strip()[-300:]}"
    return None


POLICY_ENV = "EXT_AUTHZ_BENCH_POLICY"


class Handler:
    """The door's per-request work, independent of the server hosting it."""

    def __init__(self, policy_path: str) -> None:
        policy = load_policy(policy_path)
        runtime = Runtime(policy, StaticKeys.of(policy))
        self.realm = policy.realm
        clock = SystemClock()
        cache = VerifiedTokenCache(clock, maxsize=10_000)
        self.checker = Checker(lambda: runtime, clock, cache)
        # the shipped door's answer memo, so that every server hosts the same work
        self.memo: AnswerMemo[None] = AnswerMemo(lambda: runtime, cache, clock)

    def answer(
        self, method: str, target: str, headers: dict[str, str], counts: dict[str, int]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        started = time.perf_counter()
        found = endpoint_of(target)
        if found is None:
            return (200 if target == "/healthz" else 404), [], b""
        endpoint, original = found
        decision: Decision | None
        try:
            view = request_view(endpoint, method, original, headers, counts)
            looked_up = self.memo.get(view)
            if isinstance(looked_up, Hit):
                decision = looked_up.decision
            else:
                decision = self.checker.check_now(view)
                if decision is None:
                    decision = self.checker.blocking.check(view)
                if looked_up is not None:
                    self.memo.put(looked_up, decision, None)
            logged = decision_id(view.request_id)
        except BadHttpRequest as bad:
            decision = Deny(DenialReason.REQUEST_INVALID, self.realm, detail=str(bad))
            logged = decision_id(None)
        log_decision(decision, logged, time.perf_counter() - started)
        return decision_answer(decision, envoy=endpoint is Endpoint.ENVOY)


def _headers(pairs: Any) -> tuple[dict[str, str], dict[str, int]]:
    headers: dict[str, str] = {}
    counts: dict[str, int] = {}
    for raw_name, raw_value in pairs:
        name = raw_name.decode("latin-1").lower() if isinstance(raw_name, bytes) else raw_name
        value = raw_value.decode("latin-1") if isinstance(raw_value, bytes) else raw_value
        if name in headers:
            headers[name] = f"{headers[name]},{value}"
            counts[name] = counts.get(name, 1) + 1
        else:
            headers[name] = value
    return headers, counts


_handler: Handler | None = None


def _get() -> Handler:
    global _handler
    if _handler is None:
        configure("json", "info", buffered=True)
        _handler = Handler(os.environ[POLICY_ENV])
    return _handler


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    handler = _get()
    target = scope["raw_path"].decode("latin-1")
    if scope["query_string"]:
        target += "?" + scope["query_string"].decode("latin-1")
    headers, counts = _headers(scope["headers"])
    status, out, body = handler.answer(scope["method"], target, headers, counts)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in out],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RsgiApp:
    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        handler = _get()
        target = scope.path + (f"?{scope.query_string}" if scope.query_string else "")
        headers, counts = _headers(scope.headers.items())
        status, out, body = handler.answer(scope.method, target, headers, counts)
        protocol.response_bytes(status, out, body)


rsgi_app = RsgiApp()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_servers")
    parser.add_argument("--server", choices=SERVERS[1:], required=True)
    parser.add_argument("--policy", required=True)
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    args = parser.parse_args(argv)
    os.environ[POLICY_ENV] = args.policy
    host, _, port = args.listen.rpartition(":")
    if args.server == "uvicorn":
        uvicorn: Any = importlib.import_module("uvicorn")
        uvicorn.run(
            asgi_app,
            host=host,
            port=int(port),
            loop="uvloop",
            http="httptools",
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        return 0
    granian: Any = importlib.import_module("granian")
    granian.Granian(
        "bench.http_servers:rsgi_app",
        address=host,
        port=int(port),
        interface="rsgi",
        workers=1,
        log_enabled=False,
    ).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
