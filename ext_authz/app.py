"""Composition root: build the pieces from a policy file and run the server."""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import grpc

from ext_authz.authorizer import Authorizer, Runtime
from ext_authz.clock import SystemClock
from ext_authz.decision_log import DecisionObserver, decision_logger
from ext_authz.envoy.server import build_server, set_serving
from ext_authz.http.door import start_http_door
from ext_authz.keys.events import KeyEvent
from ext_authz.keys.manager import KeyManager
from ext_authz.keys.store import IssuerKeys, KeyStatus
from ext_authz.memo import DEFAULT_SIZE as DEFAULT_MEMO_SIZE
from ext_authz.memo import AnswerMemo
from ext_authz.metrics import Metrics, serve_metrics
from ext_authz.policy.loader import PolicyError, load_policy
from ext_authz.policy.model import Policy
from ext_authz.tokens.cache import VerifiedTokenCache
from ext_authz.tracing import TracingError, start_tracing, stop_tracing

if TYPE_CHECKING:
    from ext_authz.supervisor import WorkerControl

log = logging.getLogger("ext_authz")

# A reload (and start-up's readiness) waits at most this long for new issuers' first
# keys; past it the policy is swapped in and those issuers answer 503 until keys arrive.
READY_TIMEOUT = 30.0


@dataclass(frozen=True)
class ServeOptions:
    config: Path
    listen: str
    workers: int = 4
    grace: float = 10.0
    shutdown_delay: float = 1.0
    token_cache_size: int = 10_000
    metrics_listen: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    reload_interval: float = 2.0
    decision_log: str = "all"  # all | deny | off
    memo_size: int = DEFAULT_MEMO_SIZE  # remembered allow answers (0: none)
    processes: int = 1  # more than 1: a supervisor runs that many serving processes
    reuse_port: bool = False  # set by the supervisor for its workers
    otlp_endpoint: str | None = None
    http_listen: str | None = None  # HOST:PORT of the HTTP door (off when None)


class StartupError(Exception):
    pass


def tls_credentials(options: ServeOptions) -> grpc.ServerCredentials | None:
    """Server credentials from the TLS options; any unreadable file is fatal."""
    if options.tls_cert is None and options.tls_key is None:
        if options.tls_client_ca is not None:
            raise StartupError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if options.tls_cert is None or options.tls_key is None:
        raise StartupError("--tls-cert and --tls-key go together")

    def read(path: Path, what: str) -> bytes:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise StartupError(f"cannot read the {what} {path}: {exc.strerror}") from None
        if b"-----BEGIN" not in data:
            raise StartupError(f"the {what} {path} is not PEM")
        return data

    cert = read(options.tls_cert, "TLS certificate")
    key = read(options.tls_key, "TLS key")
    client_ca = read(options.tls_client_ca, "client CA") if options.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


class RuntimeHolder:
    """The live policy and its key manager; a reload swaps both in one assignment."""

    def __init__(self, runtime: Runtime, manager: KeyManager, workers: int = 4) -> None:
        self.runtime = runtime
        self.manager = manager
        self.workers = workers
        self._reloading = threading.Lock()  # one reload at a time
        self._swap = threading.Lock()  # the swap, and closing: held for an instant
        self._closed = False

    def __call__(self) -> Runtime:
        return self.runtime

    def statuses(self) -> dict[str, IssuerKeys]:
        return self.manager.statuses()

    def reload(self, config: Path, metrics: Metrics | None) -> bool:
        """Load, validate and fetch keys for the new policy, then swap. A policy that
        does not load changes nothing. In-flight checks finish on the old snapshot. A
        reload still fetching keys when the holder is closed is abandoned."""
        with self._reloading:
            if self._closed:
                return False
            try:
                policy = load_policy(config)
            except PolicyError as exc:
                for problem in exc.problems:
                    log.error("policy reload refused", extra={"problem": str(problem)})
                if metrics is not None:
                    metrics.observe_reload(False)
                return False
            old = self.manager
            manager = start_keys(policy, metrics, inherit=old, workers=self.workers)
            with self._swap:
                swapped = not self._closed
                if swapped:
                    self.runtime = Runtime(policy, manager)
                    self.manager = manager
            if not swapped:
                manager.stop()
                log.info("policy reload abandoned: the server is stopping")
                return False
            old.stop()
            if metrics is not None:
                metrics.observe_reload(True)
            log.info(
                "policy reloaded",
                extra={"issuers": len(policy.issuers), "routes": len(policy.routes)},
            )
            return True

    def close(self) -> None:
        """Stop the live key manager; a reload still running is abandoned, never
        swapped in. Returns at once, whatever a reload is waiting for."""
        with self._swap:
            self._closed = True
            manager = self.manager
        manager.stop()


def key_manager(metrics: Metrics | None, workers: int = 4) -> KeyManager:
    on_event = None
    if metrics is not None:
        observe = metrics.observe_key_fetch

        def on_event(event: KeyEvent) -> None:
            observe(event.issuer, event.result)

    return KeyManager(
        clock=SystemClock(), on_event=on_event, max_refetch_waiters=max(1, workers - 1)
    )


def start_keys(
    policy: Policy,
    metrics: Metrics | None,
    inherit: KeyManager | None = None,
    workers: int = 4,
) -> KeyManager:
    """A started key manager for `policy`; issuers whose key source is unchanged keep
    the keys (and refresh schedule) `inherit` holds."""
    manager = key_manager(metrics, workers)
    manager.start(policy.key_sources, inherit=inherit)
    if not manager.wait_ready(READY_TIMEOUT):
        log.warning(
            "keys not ready in time; issuers without keys get 503 until they arrive",
            extra={"timeout_s": READY_TIMEOUT},
        )
    return manager


def watched_files(policy: Policy) -> list[Path]:
    files = [p for p in (policy.source, *policy.referenced_files) if p is not None]
    return sorted(set(files))


def _stamp(paths: list[Path]) -> tuple[tuple[str, int, int, int], ...]:
    stamps = []
    for path in paths:
        try:
            info = os.stat(path)
            stamps.append((str(path), info.st_mtime_ns, info.st_size, info.st_ino))
        except OSError:
            stamps.append((str(path), -1, -1, -1))
    return tuple(stamps)


def restamp(
    before: tuple[tuple[str, int, int, int], ...], files: list[Path]
) -> tuple[tuple[str, int, int, int], ...]:
    """Stamps for the files of a policy just loaded: a file watched before keeps the
    stamp taken before the load, so an edit made while the reload ran is seen next time
    (a stamp taken after the load would hide it)."""
    earlier = {entry[0]: entry for entry in before}
    return tuple(earlier.get(entry[0], entry) for entry in _stamp(files))


class _Refused(Exception):
    """Start-up stopped; the reason is logged already."""


class Server:
    """One serving process: the doors over the live runtime, reloads, and the drain.

    `start()` opens the doors; reloads (a watched file changed, `reload()` on SIGHUP)
    run on their own thread, so that `stop()` (SIGTERM) is acted on at once even while
    a reload waits for a slow issuer's keys; `drain()` stops taking checks, lets
    in-flight ones finish and abandons a reload still running.
    """

    def __init__(self, options: ServeOptions, control: WorkerControl | None = None) -> None:
        self.options = options
        self._control = control
        self._stopping = threading.Event()
        self._hurry = threading.Event()  # a second SIGTERM cuts the shutdown delay short
        self._reload_requested = threading.Event()
        policy = _load_or_refuse(options.config)
        try:
            credentials = tls_credentials(options)
            self._tracer = start_tracing(options.otlp_endpoint)
        except (StartupError, TracingError) as exc:
            log.error("cannot start", extra={"error": str(exc)})
            raise _Refused from None
        self._credentials = credentials
        self.policy = policy
        clock = SystemClock()
        self.metrics = Metrics() if options.metrics_listen else None
        self.manager = key_manager(self.metrics, options.workers)
        self.holder = RuntimeHolder(Runtime(policy, self.manager), self.manager, options.workers)
        cache = VerifiedTokenCache(clock, maxsize=options.token_cache_size)
        tracer = self._tracer
        authorizer = Authorizer.over(
            self.holder if tracer is None else tracer.traced_runtime(self.holder), clock, cache
        )
        memo: AnswerMemo[bytes] | None = (
            AnswerMemo(self.holder, cache, clock, options.memo_size)
            if options.memo_size > 0
            else None
        )
        observers: list[DecisionObserver] = []
        log_line = decision_logger(options.decision_log)
        if log_line is not None:
            observers.append(log_line)
        metrics = self.metrics
        if metrics is not None:
            observers.append(
                lambda decision, _id, seconds: metrics.observe_decision(decision, seconds)
            )
        holder = self.holder
        # the HTTP door's own memo: it keeps decisions, the gRPC one serialised answers
        http_memo: AnswerMemo[None] | None = (
            AnswerMemo(holder, cache, clock, options.memo_size)
            if options.memo_size > 0 and options.http_listen
            else None
        )
        try:
            self.grpc, self._health, self.port = build_server(
                authorizer,
                options.listen,
                realm=lambda: holder.runtime.policy.realm,
                workers=options.workers,
                credentials=credentials,
                observers=observers,
                memo=memo,
                reuse_port=options.reuse_port,
                tracer=tracer,
            )
            self.http_door = start_http_door(
                options.http_listen,
                holder,
                clock,
                cache,
                observers,
                reuse_port=options.reuse_port,
                tracer=tracer,
                memo=http_memo,
            )
            if metrics is not None and options.metrics_listen is not None:
                memos: dict[str, AnswerMemo[Any]] = {}
                if memo is not None and options.listen != "off":
                    memos["grpc"] = memo
                if http_memo is not None:
                    memos["http"] = http_memo
                metrics.watch_runtime(holder.statuses, cache, memos=memos)
                if control is None:
                    serve_metrics(metrics, options.metrics_listen)
                else:  # the supervisor serves the sum of its workers' metrics
                    metrics.publish_runtime()
        except (OSError, RuntimeError, ValueError) as exc:
            log.error("cannot start the servers", extra={"error": str(exc)})
            raise _Refused from None

    # -- called from the signal handlers ------------------------------------------------

    def stop(self) -> None:
        if self._stopping.is_set():
            self._hurry.set()
        self._stopping.set()

    def reload(self) -> None:
        if self._control is None:  # a supervised worker reloads when all of them do
            self._reload_requested.set()

    # -- the lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        options, policy = self.options, self.policy
        self.manager.start(policy.key_sources)
        self.grpc.start()
        log.info(
            "listening",
            extra={
                "listen": options.listen,
                "port": self.port,
                "tls": self._credentials is not None,
                "mtls": options.tls_client_ca is not None,
                "metrics": options.metrics_listen,
                "issuers": len(policy.issuers),
                "routes": len(policy.routes),
            },
        )
        if self._control is not None:
            self._control.attach(self._serving, self.holder, self.metrics, options.config)
        threading.Thread(target=self._become_ready, name="ext-authz-ready", daemon=True).start()
        threading.Thread(target=self._watch, name="ext-authz-reload", daemon=True).start()

    def wait(self) -> None:
        """Until `stop()`."""
        while not self._stopping.wait(1.0):
            pass

    def drain(self) -> None:
        options = self.options
        self._serving(False)
        if options.shutdown_delay > 0:
            self._hurry.wait(options.shutdown_delay)
        grpc_stopped = self.grpc.stop(options.grace)
        if self.http_door is not None:
            self.http_door.stop(options.grace)
        grpc_stopped.wait()
        self.holder.close()
        stop_tracing(self._tracer)
        log.info("stopped")

    def _serving(self, flag: bool) -> None:
        set_serving(self._health, flag)
        if self.http_door is not None:
            self.http_door.set_serving(flag)

    def _become_ready(self) -> None:
        manager = self.manager
        manager.wait_ready()
        if self._stopping.is_set():
            return
        failed = [n for n, s in manager.statuses().items() if s.status is KeyStatus.FAILED]
        if self._control is not None:
            self._control.ready()  # the supervisor says SERVING once every worker is ready
        else:
            self._serving(True)
        log.info("serving", extra={"issuers_without_keys": failed})

    def _watch(self) -> None:
        """Reload when a watched file changes or a reload is asked for, off the signal
        path: a reload waiting on a slow issuer never holds up SIGTERM."""
        options, holder = self.options, self.holder
        files = watched_files(self.policy)
        stamp = _stamp(files)
        poll = options.reload_interval if options.reload_interval > 0 else 1.0
        while not self._stopping.wait(poll):
            changed = False
            if options.reload_interval > 0:
                current = _stamp(files)
                changed = current != stamp
                stamp = current
            if changed or self._reload_requested.is_set():
                self._reload_requested.clear()
                trigger = "change" if changed else "SIGHUP"
                log.info("reloading policy", extra={"trigger": trigger})
                before = stamp if options.reload_interval > 0 else _stamp(files)
                if holder.reload(options.config, self.metrics):
                    files = watched_files(holder.runtime.policy)
                    stamp = restamp(before, files)


def _load_or_refuse(config: Path) -> Policy:
    try:
        return load_policy(config)
    except PolicyError as exc:
        for problem in exc.problems:
            log.error("policy refused", extra={"problem": str(problem)})
        raise _Refused from None


def serve(options: ServeOptions, control: WorkerControl | None = None) -> int:
    """Run until SIGTERM or SIGINT. Returns the process exit code. Under a supervisor
    (`--processes N`), `control` carries its health verdict and reload commands."""
    if options.processes > 1:
        from ext_authz.supervisor import supervise

        return supervise(options)
    try:
        server = Server(options, control)
    except _Refused:
        return 1

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            server.reload()
            return
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        server.stop()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    server.start()
    server.wait()
    server.drain()
    return 0
