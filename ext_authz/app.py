"""Composition root: build the pieces from a policy file and run the server."""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

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


class PolicyHolder:
    """A fixed policy as a callable, for an `Authorizer` over static keys."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def __call__(self) -> Policy:
        return self.policy


class RuntimeHolder:
    """The live policy and its key manager; a reload swaps both in one assignment."""

    def __init__(self, runtime: Runtime, manager: KeyManager, workers: int = 4) -> None:
        self.runtime = runtime
        self.manager = manager
        self.workers = workers
        self._lock = threading.Lock()

    def __call__(self) -> Runtime:
        return self.runtime

    def statuses(self) -> dict[str, IssuerKeys]:
        return self.manager.statuses()

    def reload(self, config: Path, metrics: Metrics | None) -> bool:
        """Load, validate and fetch keys for the new policy, then swap. A policy that
        does not load changes nothing. In-flight checks finish on the old snapshot."""
        with self._lock:
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
            self.runtime = Runtime(policy, manager)
            self.manager = manager
            old.stop()
            if metrics is not None:
                metrics.observe_reload(True)
            log.info(
                "policy reloaded",
                extra={"issuers": len(policy.issuers), "routes": len(policy.routes)},
            )
            return True


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
    manager.start(policy.issuers, inherit=inherit)
    manager.wait_ready()
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


def serve(options: ServeOptions, control: WorkerControl | None = None) -> int:
    """Run until SIGTERM or SIGINT. Returns the process exit code. Under a supervisor
    (`--processes N`), `control` carries its health verdict and reload commands."""
    if options.processes > 1:
        from ext_authz.supervisor import supervise

        return supervise(options)
    try:
        policy = load_policy(options.config)
    except PolicyError as exc:
        for problem in exc.problems:
            log.error("policy refused", extra={"problem": str(problem)})
        return 1
    try:
        credentials = tls_credentials(options)
    except StartupError as exc:
        log.error("cannot start", extra={"error": str(exc)})
        return 1
    try:
        tracer = start_tracing(options.otlp_endpoint)
    except TracingError as exc:
        log.error("cannot start", extra={"error": str(exc)})
        return 1
    clock = SystemClock()
    metrics = Metrics() if options.metrics_listen else None
    manager = key_manager(metrics, options.workers)
    holder = RuntimeHolder(Runtime(policy, manager), manager, options.workers)
    cache = VerifiedTokenCache(clock, maxsize=options.token_cache_size)
    authorizer = Authorizer.over(
        holder if tracer is None else tracer.traced_runtime(holder), clock, cache
    )
    memo: AnswerMemo[bytes] | None = (
        AnswerMemo(holder, cache, clock, options.memo_size) if options.memo_size > 0 else None
    )
    observers: list[DecisionObserver] = []
    log_line = decision_logger(options.decision_log)
    if log_line is not None:
        observers.append(log_line)
    if metrics is not None:
        observers.append(lambda decision, _id, seconds: metrics.observe_decision(decision, seconds))
    try:
        server, health_servicer, port = build_server(
            authorizer,
            options.listen,
            realm=policy.realm,
            workers=options.workers,
            credentials=credentials,
            observers=observers,
            memo=memo,
            reuse_port=options.reuse_port,
            tracer=tracer,
        )
        http_door = start_http_door(
            options.http_listen,
            holder,
            clock,
            cache,
            observers,
            reuse_port=options.reuse_port,
            tracer=tracer,
        )
        if metrics is not None and options.metrics_listen is not None:
            metrics.watch_runtime(holder.statuses, cache, memo=memo)
            if control is None:
                serve_metrics(metrics, options.metrics_listen)
            else:  # the supervisor serves the sum of its workers' metrics
                metrics.publish_runtime()
    except (OSError, RuntimeError, ValueError) as exc:
        log.error("cannot start the servers", extra={"error": str(exc)})
        return 1
    stopping = threading.Event()
    reload_requested = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            if control is None:  # a supervised worker reloads when all of them do
                reload_requested.set()
            return
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    manager.start(policy.issuers)
    server.start()
    log.info(
        "listening",
        extra={
            "listen": options.listen,
            "port": port,
            "tls": credentials is not None,
            "mtls": options.tls_client_ca is not None,
            "metrics": options.metrics_listen,
            "issuers": len(policy.issuers),
            "routes": len(policy.routes),
        },
    )

    def become_ready() -> None:
        manager.wait_ready()
        if stopping.is_set():
            return
        failed = [n for n, s in manager.statuses().items() if s.status is KeyStatus.FAILED]
        if control is not None:
            control.ready()  # the supervisor says SERVING once every worker is ready
        else:
            serving(True)
        log.info("serving", extra={"issuers_without_keys": failed})

    def serving(flag: bool) -> None:
        set_serving(health_servicer, flag)
        if http_door is not None:
            http_door.set_serving(flag)

    if control is not None:
        control.attach(serving, holder, metrics, options.config)
    threading.Thread(target=become_ready, name="ext-authz-ready", daemon=True).start()
    files = watched_files(policy)
    stamp = _stamp(files)
    poll = options.reload_interval if options.reload_interval > 0 else 1.0
    while not stopping.wait(poll):
        changed = False
        if options.reload_interval > 0:
            current = _stamp(files)
            changed = current != stamp
            stamp = current
        if changed or reload_requested.is_set():
            reload_requested.clear()
            log.info("reloading policy", extra={"trigger": "change" if changed else "SIGHUP"})
            before = stamp if options.reload_interval > 0 else _stamp(files)
            if holder.reload(options.config, metrics):
                files = watched_files(holder.runtime.policy)
                stamp = restamp(before, files)
    set_serving(health_servicer, False)
    if http_door is not None:
        http_door.set_serving(False)
    if options.shutdown_delay > 0:
        stopping.clear()
        stopping.wait(options.shutdown_delay)
    grpc_stopped = server.stop(options.grace)
    if http_door is not None:
        http_door.stop(options.grace)
    grpc_stopped.wait()
    holder.manager.stop()
    stop_tracing(tracer)
    log.info("stopped")
    return 0
