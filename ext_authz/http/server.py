"""The HTTP door's server: a raw asyncio protocol on uvloop with the httptools parser.

Chosen by measurement with the real handler over granian (RSGI) and uvicorn (see
docs/benchmarks.md): the check itself is synchronous and short, so the fastest
server is the one that adds least around it. Checks run on the event loop; the one
check that would wait on the network (a refetch for an unknown `kid`) is detected
and re-run on a thread, so the loop never blocks on I/O.

HTTP/1.1 keep-alive and pipelining are handled (answers go out in request order);
the request line, header bytes, header count and body are bounded (431, 413); a
request head must arrive within `header_timeout` (slowloris) and an idle connection
is closed after `idle_timeout`; malformed HTTP is a 400 and the connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any, cast

import httptools

from ext_authz.authorizer import Authorizer, Runtime
from ext_authz.clock import Clock
from ext_authz.decision import Decision, Deny
from ext_authz.decision_log import DecisionObserver, decision_id, log_decision
from ext_authz.errors import DenialReason
from ext_authz.http.answer import decision_response, plain_response
from ext_authz.http.view import BadHttpRequest, Endpoint, endpoint_of, request_view
from ext_authz.keys.store import IssuerKeys, KeyProvider
from ext_authz.memo import AnswerMemo, Hit
from ext_authz.tokens.cache import VerifiedTokenCache
from ext_authz.tracing import CheckTracer

log = logging.getLogger("ext_authz.http")

HEALTH_PATH = "/healthz"


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_request_line: int = 8 * 1024  # bytes of the request target (431 beyond)
    max_header_bytes: int = 32 * 1024  # names and values together (431 beyond)
    max_headers: int = 100  # (431 beyond)
    max_body: int = 64 * 1024  # a check carries no body; more is a 413
    max_pipelined: int = 32  # requests queued on one connection before reading pauses
    max_connections: int = 10_000
    header_timeout: float = 10.0  # from a request's first byte to its last header
    # A keep-alive connection with no request in flight; longer than the idle timeouts of
    # the proxies' pools (Envoy as rendered 60 s, nginx 60 s, Go's 90 s, Caddy 2 min), so
    # the proxy, not the door, closes an idle connection and never sends on a closing one.
    idle_timeout: float = 300.0


class _NoWaitKeys:
    """Keys for a check on the event loop: a refetch is not done but remembered, so
    the check can be run again on a thread where waiting is allowed."""

    __slots__ = ("provider", "wanted")

    def __init__(self, provider: KeyProvider) -> None:
        self.provider = provider
        self.wanted = False

    def current(self, issuer: str) -> IssuerKeys:
        return self.provider.current(issuer)

    def refetch(self, issuer: str) -> IssuerKeys | None:
        self.wanted = True
        return None


class Checker:
    """One authorizer over the live runtime, run without waiting where it can."""

    def __init__(
        self,
        runtime: Callable[[], Runtime],
        clock: Clock | None = None,
        cache: VerifiedTokenCache | None = None,
    ) -> None:
        self._live = runtime
        self._seen: Runtime | None = None
        self._wrapped: Runtime | None = None
        self._keys: _NoWaitKeys | None = None
        self._inline = Authorizer.over(self._no_wait_runtime, clock, cache)
        self.blocking = Authorizer.over(runtime, clock, cache)

    def _no_wait_runtime(self) -> Runtime:
        live = self._live()
        if live is not self._seen or self._wrapped is None:
            self._keys = _NoWaitKeys(live.key_provider)
            self._wrapped = Runtime(live.policy, self._keys)
            self._seen = live
        return self._wrapped

    def check_now(self, request: Any) -> Decision | None:
        """The decision, or None when it needs a refetch (run `blocking` on a thread)."""
        self._no_wait_runtime()
        keys = self._keys
        assert keys is not None
        keys.wanted = False
        decision = self._inline.check(request)
        if keys.wanted:
            return None
        return decision


@dataclass(slots=True)
class _Request:
    method: str
    target: str
    headers: dict[str, str]
    counts: dict[str, int]
    keep_alive: bool


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class HttpDoor:
    """The HTTP authorization server: start(), set_serving(), stop()."""

    def __init__(
        self,
        checker: Checker,
        *,
        realm: Callable[[], str],
        observers: Sequence[DecisionObserver] | None = None,
        limits: HttpLimits | None = None,
        workers: int = 2,
        tracer: CheckTracer | None = None,
        memo: AnswerMemo[None] | None = None,
    ) -> None:
        self.checker = checker
        self.tracer = tracer
        # remembered allow decisions (rendered per endpoint on every answer)
        self.memo = memo
        self.realm = realm
        self.observers = tuple(observers) if observers is not None else (log_decision,)
        self.limits = limits or HttpLimits()
        self.serving = False
        self.stopping = False
        self.connections: set[_Connection] = set()
        self.executor = futures.ThreadPoolExecutor(
            max_workers=max(1, workers), thread_name_prefix="ext-authz-http-refetch"
        )
        self.loop = _new_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    # -- lifecycle (called from other threads) ---------------------------------------

    def bind(self, listen: str, reuse_port: bool = False) -> int:
        """Listen on HOST:PORT; returns the bound port. Raises OSError. `reuse_port` lets
        several server processes share the port (the kernel spreads connections)."""
        host, port = _host_port(listen)
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, port))
            sock.listen(1024)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._server = self.loop.run_until_complete(
            self.loop.create_server(lambda: _Connection(self), sock=sock)
        )
        bound: int = sock.getsockname()[1]
        return bound

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ext-authz-http", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._sweeper = self.loop.call_later(1.0, self._sweep)
        self.loop.run_forever()

    def set_serving(self, serving: bool) -> None:
        self.serving = serving

    def stop(self, grace: float) -> None:
        """Stop accepting, let in-flight checks finish for up to `grace` seconds, close."""
        if self._thread is None:  # never started: close the listener on this thread
            if not self.loop.is_closed():
                self.loop.run_until_complete(self._shutdown(0))
                self.loop.close()
            self.executor.shutdown(wait=False)
            return
        done = asyncio.run_coroutine_threadsafe(self._shutdown(grace), self.loop)
        with contextlib.suppress(Exception):
            done.result(grace + 5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def _shutdown(self, grace: float) -> None:
        self.stopping = True
        if self._server is not None:
            self._server.close()
        deadline = time.monotonic() + grace
        for connection in list(self.connections):
            connection.close_when_idle()
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            await self._server.wait_closed()
        await asyncio.sleep(0.01)  # let closed transports finish

    def _sweep(self) -> None:
        now = time.monotonic()
        for connection in list(self.connections):
            connection.expire(now)
        self._sweeper = self.loop.call_later(1.0, self._sweep)

    # -- checks -----------------------------------------------------------------------

    def observe(self, decision: Decision, logged_id: str, started: float) -> None:
        seconds = time.perf_counter() - started
        for observe in self.observers:
            try:
                observe(decision, logged_id, seconds)
            except Exception:
                log.exception("decision observer failed")


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def _host_port(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise OSError(f"--http-listen expects HOST:PORT, got {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104


class _Connection(asyncio.Protocol):
    def __init__(self, door: HttpDoor) -> None:
        self.door = door
        self.limits = door.limits
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.pending: deque[_Request] = deque()
        self.busy = False  # a check runs on a thread; later answers wait for it
        self.closing = False
        self.reading = True
        self.writable = True
        self.last_active = time.monotonic()
        self.head_started: float | None = self.last_active  # the first request is due
        self.broken: _Refused | None = None  # refused after the answer on a thread
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        self.header_bytes = 0
        self.header_count = 0
        self.body_bytes = 0
        self.refusal: _Refused | None = None

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if len(self.door.connections) >= self.limits.max_connections:
            self.transport.abort()
            return
        self.door.connections.add(self)
        with contextlib.suppress(OSError):
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.door.connections.discard(self)

    def pause_writing(self) -> None:
        self.writable = False
        self._pause()

    def resume_writing(self) -> None:
        self.writable = True
        self._maybe_resume()

    def data_received(self, data: bytes) -> None:
        if self.closing or self.broken is not None:
            return
        self.last_active = time.monotonic()
        if self.head_started is None:
            self.head_started = self.last_active
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrade is ignored (RFC 9110 7.8): the check is answered, then the
            # connection closes, since the bytes after it are not HTTP/1.1.
            self._refuse(None)
            return
        except httptools.HttpParserError:
            self._refuse(self.refusal or _Refused(400, "malformed_request"))
            return
        self._drain()
        if len(self.pending) >= self.limits.max_pipelined:
            self._pause()

    # -- httptools callbacks ----------------------------------------------------------

    def on_message_begin(self) -> None:
        self._reset()
        if self.head_started is None:
            self.head_started = time.monotonic()

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.limits.max_request_line:
            self.refusal = _Refused(431, "request_line_too_large")
            raise self.refusal

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        self.header_bytes += len(name) + len(value)
        if self.header_bytes > self.limits.max_header_bytes:
            self.refusal = _Refused(431, "headers_too_large")
            raise self.refusal
        if self.header_count > self.limits.max_headers:
            self.refusal = _Refused(431, "too_many_headers")
            raise self.refusal
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        if key in self.headers:
            self.headers[key] = f"{self.headers[key]},{text}"
            self.counts[key] = self.counts.get(key, 1) + 1
        else:
            self.headers[key] = text

    def on_headers_complete(self) -> None:
        self.head_started = None

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.body_bytes > self.limits.max_body:
            self.refusal = _Refused(413, "body_too_large")
            raise self.refusal

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode("latin-1")
        self.pending.append(
            _Request(
                method,
                self.url.decode("latin-1"),
                self.headers,
                self.counts,
                self.parser.should_keep_alive(),
            )
        )
        self.head_started = None

    # -- answering --------------------------------------------------------------------

    def _drain(self) -> None:
        """Answer queued requests in order until one has to wait for a thread."""
        while self.pending and not self.busy and not self.closing:
            self._answer_safely(self.pending.popleft())
        if not self.pending and not self.busy:
            self._maybe_resume()

    def _answer_safely(self, request: _Request) -> None:
        try:
            self._answer(request)
        except Exception:  # a bug here must cost one connection, never an allow
            log.exception("could not answer; closing the connection")
            self._write(plain_response(500, "internal_error", close=True), True)

    def _answer(self, request: _Request) -> None:
        started = time.perf_counter()
        close = not request.keep_alive
        head_only = request.method == "HEAD"
        found = endpoint_of(request.target)
        if found is None:
            if request.target.split("?", 1)[0] == HEALTH_PATH:
                status, message = (200, "serving") if self.door.serving else (503, "not_serving")
                self._write(plain_response(status, message, close=close), close, head_only)
            else:
                self._write(plain_response(404, "not_found", close=close), close, head_only)
            return
        endpoint, original = found
        envoy = endpoint is Endpoint.ENVOY
        try:
            view = request_view(endpoint, request.method, original, request.headers, request.counts)
        except BadHttpRequest as bad:
            realm = self.door.realm()
            decision: Decision = Deny(DenialReason.REQUEST_INVALID, realm, detail=str(bad))
            logged_id = decision_id(request.headers.get("x-request-id"))
            self.door.observe(decision, logged_id, started)
            self._write(decision_response(decision, envoy=envoy, close=close), close, head_only)
            return
        logged_id = decision_id(view.request_id)
        tracer = self.door.tracer
        memo = self.door.memo
        looked_up = memo.get(view) if memo is not None else None
        if isinstance(looked_up, Hit):  # a token seen before on this route: the same allow
            remembered = looked_up.decision
            if tracer is not None:  # a span for the hit too, with nothing below it
                tracer.check(lambda _view: remembered, view, request.headers)
            self.door.observe(remembered, logged_id, started)
            self._write(decision_response(remembered, envoy=envoy, close=close), close, head_only)
            return
        miss = looked_up
        if tracer is None:
            now = self.door.checker.check_now(view)
            if now is not None:
                if miss is not None and memo is not None:
                    memo.put(miss, now, None)
                self.door.observe(now, logged_id, started)
                self._write(decision_response(now, envoy=envoy, close=close), close, head_only)
                return
        # The check needs a key refetch (or runs inside a span, whose child spans follow
        # the thread): run it on a thread, keep later answers queued.
        self.busy = True
        self._pause()
        if tracer is None:
            waiting = self.door.loop.run_in_executor(
                self.door.executor, self.door.checker.blocking.check, view
            )
        else:
            waiting = self.door.loop.run_in_executor(
                self.door.executor,
                functools.partial(tracer.check, self.door.checker.blocking.check, view),
                request.headers,
            )

        def finished(done: asyncio.Future[Decision]) -> None:
            self.busy = False
            try:
                decision = done.result()
            except Exception:
                log.exception("check failed; denying")
                decision = Deny(DenialReason.INTERNAL_ERROR, self.door.realm())
            if miss is not None and memo is not None:
                memo.put(miss, decision, None)
            self.door.observe(decision, logged_id, started)
            self._write(decision_response(decision, envoy=envoy, close=close), close, head_only)
            if self.broken is not None:
                refusal = self.broken
                if refusal.status:
                    self._write(plain_response(refusal.status, refusal.message), True)
                self.abort()
            self._drain()

        waiting.add_done_callback(finished)

    def _write(self, data: bytes, close: bool, head_only: bool = False) -> None:
        transport = self.transport
        if transport is None or self.closing:
            return
        if head_only:
            data = data[: data.index(b"\r\n\r\n") + 4]
        transport.write(data)
        self.last_active = time.monotonic()
        if close or self.door.stopping:
            self.closing = True
            transport.close()

    def _refuse(self, refusal: _Refused | None) -> None:
        """Answer what was queued before the bad bytes, then the refusal, and close."""
        self.head_started = None
        while self.pending and not self.busy and not self.closing:
            self._answer_safely(self.pending.popleft())
        self.pending.clear()
        if self.busy:  # the thread's answer goes first, then the refusal
            self.broken = refusal or _Refused(0, "")
            return
        if refusal is None:
            self.abort()
        else:
            self._write(plain_response(refusal.status, refusal.message, close=True), True)

    def _pause(self) -> None:
        if self.reading and self.transport is not None and not self.closing:
            self.reading = False
            self.transport.pause_reading()

    def _maybe_resume(self) -> None:
        if (
            not self.reading
            and self.writable
            and not self.busy
            and self.transport is not None
            and not self.closing
        ):
            self.reading = True
            self.transport.resume_reading()

    # -- timeouts and shutdown --------------------------------------------------------

    def expire(self, now: float) -> None:
        if self.closing or self.busy:
            return
        if self.head_started is not None:
            if now - self.head_started > self.limits.header_timeout:
                self._write(plain_response(408, "request_timeout", close=True), True)
        elif now - self.last_active > self.limits.idle_timeout:
            self.abort()

    def close_when_idle(self) -> None:
        """At shutdown: close now unless an answer is owed (then close after it)."""
        if not self.busy and not self.pending:
            self.abort()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()
        self.door.connections.discard(self)


def build_http_door(
    listen: str,
    runtime: Callable[[], Runtime],
    *,
    clock: Clock | None = None,
    cache: VerifiedTokenCache | None = None,
    observers: Sequence[DecisionObserver] | None = None,
    workers: int = 2,
    limits: HttpLimits | None = None,
    reuse_port: bool = False,
    tracer: CheckTracer | None = None,
    memo: AnswerMemo[None] | None = None,
) -> tuple[HttpDoor, int]:
    """A bound (not yet started) HTTP door over the live runtime, and its port. With a
    tracer, every check runs in a span continuing the request's trace headers."""
    door = HttpDoor(
        Checker(runtime if tracer is None else tracer.traced_runtime(runtime), clock, cache),
        realm=lambda: runtime().policy.realm,
        observers=observers,
        limits=limits,
        workers=workers,
        tracer=tracer,
        memo=memo,
    )
    try:
        port = door.bind(listen, reuse_port)
    except OSError:
        door.stop(0)
        raise
    return door, port
