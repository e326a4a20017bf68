"""`ext-authz serve --processes N`: N serving processes on the same ports, one parent.

One Python process checks on one core at a time (the GIL). The supervisor starts N
workers, each a complete server (`app.serve`) binding the same ports with
`SO_REUSEPORT`, so the kernel spreads new connections over them. The parent serves
no checks; it:

- reserves each listening port first (a bound, never listening `SO_REUSEPORT`
  socket), so `:0` resolves to one port for all and a taken port fails at once;
- starts the workers and restarts one that dies, after a backoff that doubles from
  0.5 s to 30 s while it keeps dying within a minute of its start;
- tells every worker to report gRPC health `SERVING` only while all N are ready
  (a worker that dies turns the others `NOT_SERVING` until its replacement is ready);
- watches the policy files and takes SIGHUP: it loads the policy itself first, and
  only a policy that loads is sent to the workers, so all run the new policy or all
  keep the old one;
- on SIGTERM or SIGINT, forwards SIGTERM (each worker turns `NOT_SERVING`, waits
  `--shutdown-delay`, drains for up to `--grace`) and exits 0 once all have exited;
- serves one Prometheus endpoint that adds up every worker's metrics
  (prometheus-client's multiprocess mode; the workers write to a private directory).

Workers talk to the parent over a pipe: `ready` and `reloaded` up, `serving`, `reload`
and `reload_refused` (to one worker, which counts it in the metrics) down. A worker
whose parent disappears stops by itself.

A worker (re)started while the policy file on disk does not load cannot start: it
exits, is retried with the backoff, and health stays `NOT_SERVING` until the file is
fixed, because every worker must run the same policy.

Adding a listener (another front door) is one more entry in `LISTEN_FIELDS`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable
    from multiprocessing.process import BaseProcess

    from ext_authz.app import RuntimeHolder, ServeOptions
    from ext_authz.metrics import Metrics

log = logging.getLogger("ext_authz.supervisor")

# ServeOptions fields holding a HOST:PORT every worker listens on (None or "off": none).
LISTEN_FIELDS: tuple[str, ...] = ("listen", "http_listen")
BACKOFF_FIRST = 0.5
BACKOFF_CAP = 30.0
POLL = 0.2
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


class ProcessCountError(argparse.ArgumentTypeError):
    pass


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def process_count(value: str) -> int:
    """`--processes`: a positive whole number, or `auto` (the cores this process may
    run on)."""
    if value == "auto":
        return usable_cores()
    try:
        count = int(value)
    except ValueError:
        raise ProcessCountError(f"--processes must be a number or 'auto', not {value!r}") from None
    if not 1 <= count <= 256:
        raise ProcessCountError("--processes must be between 1 and 256")
    return count


# the worker side ---------------------------------------------------------------------


class WorkerControl:
    """A worker's end of the pipe to its supervisor."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._send_lock = threading.Lock()

    def _send(self, *message: Any) -> None:
        with self._send_lock, contextlib.suppress(OSError):
            self._conn.send(message)

    def ready(self) -> None:
        self._send("ready")

    def attach(
        self,
        serving: Callable[[bool], None],
        holder: RuntimeHolder,
        metrics: Metrics | None,
        config: Path,
    ) -> None:
        """Follow the supervisor's commands on a daemon thread; `serving` sets the
        health every door reports."""
        threading.Thread(
            target=self._follow,
            args=(serving, holder, metrics, config),
            name="ext-authz-supervised",
            daemon=True,
        ).start()

    def _follow(
        self,
        serving: Callable[[bool], None],
        holder: RuntimeHolder,
        metrics: Metrics | None,
        config: Path,
    ) -> None:
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                log.error("the supervisor is gone; stopping")
                os.kill(os.getpid(), signal.SIGTERM)
                return
            if message[0] == "serving":
                serving(bool(message[1]))
            elif message[0] == "reload":
                self._send("reloaded", holder.reload(config, metrics))
            elif message[0] == "reload_refused" and metrics is not None:
                metrics.observe_reload(False)  # refused by the supervisor: counted once


def _worker_main(
    options: ServeOptions, conn: Connection, log_format: str, log_level: str, index: int
) -> None:
    from ext_authz.app import serve
    from ext_authz.log import add_static_fields, configure

    configure(log_format, log_level, buffered=True, shared=True)
    add_static_fields(worker=index)
    code = serve(options, WorkerControl(conn))
    logging.shutdown()
    os._exit(code)


# the parent side ---------------------------------------------------------------------


@dataclass
class _Slot:
    index: int
    process: BaseProcess | None = None
    conn: Connection | None = None
    ready: bool = False
    started_at: float = 0.0
    backoff: float = BACKOFF_FIRST
    start_at: float = 0.0  # monotonic time of the next start, while down
    told_serving: bool | None = None
    pending_reload: bool = False


def _split(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise OSError(f"cannot listen on {listen}: not HOST:PORT")
    return host.strip("[]"), int(port)


def reserve_port(listen: str) -> tuple[socket.socket, str]:
    """Bind (never listen on) `listen` with SO_REUSEPORT; returns the socket, which
    holds the port while workers come and go, and the address with the port resolved."""
    host, port = _split(listen)
    bind_host = host or "0.0.0.0"  # noqa: S104  (an explicit operator choice)
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((bind_host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {listen}: {exc.strerror}") from None
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return sock, f"{shown}:{bound}"


class Supervisor:
    def __init__(
        self, options: ServeOptions, processes: int, log_format: str, log_level: str
    ) -> None:
        self.options = options
        self.processes = processes
        self._log = (log_format, log_level)
        self._context = multiprocessing.get_context("spawn")
        self._slots = [_Slot(i) for i in range(processes)]
        self._stopping = False
        self._reload_requested = False
        self._serving = False

    # signals -----------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self._reload_requested = True
        else:
            self._stopping = True

    # workers -----------------------------------------------------------------------

    def _start(self, slot: _Slot, options: ServeOptions) -> None:
        parent_end, child_end = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_worker_main,
            args=(options, child_end, *self._log, slot.index),
            name=f"ext-authz-worker-{slot.index}",
            daemon=False,
        )
        process.start()
        child_end.close()
        slot.process, slot.conn = process, parent_end
        slot.ready = False
        slot.told_serving = None
        slot.started_at = time.monotonic()
        log.info("worker started", extra={"worker": slot.index, "pid": process.pid})

    def _reap(self, slot: _Slot) -> None:
        """A worker exited on its own: schedule its replacement."""
        assert slot.process is not None
        code = slot.process.exitcode
        pid = slot.process.pid
        if slot.conn is not None:
            slot.conn.close()
        slot.process, slot.conn, slot.ready = None, None, False
        self._mark_dead(pid)
        if time.monotonic() - slot.started_at > 60:
            slot.backoff = BACKOFF_FIRST  # it had been up a while: not a crash loop
        slot.start_at = time.monotonic() + slot.backoff
        log.error(
            "worker exited; restarting",
            extra={"worker": slot.index, "pid": pid, "exit_code": code, "after": slot.backoff},
        )
        slot.backoff = min(slot.backoff * 2, BACKOFF_CAP)

    def _mark_dead(self, pid: int | None) -> None:
        if pid is None or MULTIPROCESS_ENV not in os.environ:
            return
        from prometheus_client import multiprocess

        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]

    def _send(self, slot: _Slot, *message: Any) -> None:
        if slot.conn is None:
            return
        with contextlib.suppress(OSError):
            slot.conn.send(message)

    def _receive(self, slot: _Slot) -> None:
        assert slot.conn is not None
        try:
            message = slot.conn.recv()
        except (EOFError, OSError):
            slot.conn.close()
            slot.conn = None
            return
        if message[0] == "ready":
            slot.ready = True
            if slot.pending_reload:  # it started on the old file: bring it up to date
                slot.pending_reload = False
                self._send(slot, "reload")
        elif message[0] == "reloaded" and not message[1]:
            log.error("a worker could not reload the policy", extra={"worker": slot.index})

    def _update_health(self) -> None:
        serving = all(s.ready and s.process is not None for s in self._slots)
        if serving != self._serving:
            log.info("all workers serving" if serving else "not all workers serving")
        self._serving = serving
        for slot in self._slots:
            if slot.conn is not None and slot.told_serving is not serving:
                self._send(slot, "serving", serving)
                slot.told_serving = serving

    # reload ------------------------------------------------------------------------

    def _reload(self, trigger: str) -> list[Path] | None:
        """Load the policy here first; send it to the workers only if it loads."""
        from ext_authz.app import watched_files
        from ext_authz.policy.loader import PolicyError, load_policy

        log.info("reloading policy", extra={"trigger": trigger})
        try:
            policy = load_policy(self.options.config)
        except PolicyError as exc:
            for problem in exc.problems:
                log.error("policy reload refused", extra={"problem": str(problem)})
            counter = next((s for s in self._slots if s.ready and s.conn is not None), None)
            if counter is not None:  # the metrics are the workers': one of them counts it
                self._send(counter, "reload_refused")
            return None
        for slot in self._slots:
            if slot.conn is not None and slot.ready:
                self._send(slot, "reload")
            elif slot.process is not None:  # still starting, perhaps on the old file
                slot.pending_reload = True
        return watched_files(policy)

    # the loop ----------------------------------------------------------------------

    def run(self) -> int:
        from ext_authz.app import (
            StartupError,
            _stamp,
            restamp,
            tls_credentials,
            watched_files,
        )
        from ext_authz.policy.loader import PolicyError, load_policy

        try:
            policy = load_policy(self.options.config)
        except PolicyError as exc:
            for problem in exc.problems:
                log.error("policy refused", extra={"problem": str(problem)})
            return 1
        try:  # what would stop every worker at start stops the supervisor instead
            tls_credentials(self.options)
        except StartupError as exc:
            log.error("cannot start", extra={"error": str(exc)})
            return 1
        _warn_unshared_keys(policy, self.processes)
        reserved: list[socket.socket] = []
        resolved: dict[str, Any] = {}
        try:
            for name in LISTEN_FIELDS:
                value = getattr(self.options, name)
                if value is None or value == "off":
                    continue
                sock, address = reserve_port(value)
                reserved.append(sock)
                resolved[name] = address
        except OSError as exc:
            for sock in reserved:
                sock.close()
            log.error("cannot start the servers", extra={"error": str(exc)})
            return 1
        worker_options = replace(
            self.options, processes=1, reuse_port=True, reload_interval=0, **resolved
        )
        metrics_dir = tempfile.mkdtemp(prefix="ext-authz-metrics-")
        os.environ[MULTIPROCESS_ENV] = metrics_dir
        metrics_server = None
        try:
            if self.options.metrics_listen is not None:
                metrics_server = serve_summed_metrics(self.options.metrics_listen, metrics_dir)
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(signum, self._on_signal)
            log.info(
                "supervising",
                extra={"processes": self.processes, **resolved, "pid": os.getpid()},
            )
            files = watched_files(policy)
            stamp = _stamp(files)
            next_poll = time.monotonic() + self.options.reload_interval
            while not self._stopping:
                now = time.monotonic()
                for slot in self._slots:
                    if slot.process is None and now >= slot.start_at:
                        self._start(slot, worker_options)
                self._update_health()
                waitables: list[Any] = []
                for slot in self._slots:
                    if slot.process is not None:
                        waitables.append(slot.process.sentinel)
                    if slot.conn is not None:
                        waitables.append(slot.conn)
                ready = multiprocessing.connection.wait(waitables, timeout=POLL)
                for slot in self._slots:
                    if slot.conn is not None and slot.conn in ready:
                        self._receive(slot)
                    if slot.process is not None and not slot.process.is_alive():
                        slot.process.join()
                        self._reap(slot)
                changed = False
                if self.options.reload_interval > 0 and time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + self.options.reload_interval
                    current = _stamp(files)
                    changed, stamp = current != stamp, current
                if changed or self._reload_requested:
                    self._reload_requested = False
                    before = stamp if self.options.reload_interval > 0 else _stamp(files)
                    new_files = self._reload("change" if changed else "SIGHUP")
                    if new_files is not None:
                        files, stamp = new_files, restamp(before, new_files)
            return self._shutdown()
        finally:
            if metrics_server is not None:
                metrics_server.shutdown()
            for sock in reserved:
                sock.close()
            shutil.rmtree(metrics_dir, ignore_errors=True)
            os.environ.pop(MULTIPROCESS_ENV, None)

    def _shutdown(self) -> int:
        log.info("stopping workers")
        running = [s.process for s in self._slots if s.process is not None]
        for process in running:
            if process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.options.shutdown_delay + self.options.grace + 5
        for process in running:
            process.join(max(0.0, deadline - time.monotonic()))
        stuck = [p for p in running if p.is_alive()]
        for process in stuck:
            log.error("worker did not stop in time; killing it", extra={"pid": process.pid})
            process.kill()
            process.join(5)
        for slot in self._slots:
            if slot.conn is not None:
                slot.conn.close()
        # a worker still starting when SIGTERM came has no handler yet and dies of it
        failed = [p.exitcode for p in running if p.exitcode not in (0, -signal.SIGTERM)]
        log.info("stopped", extra={"worker_exit_codes": [p.exitcode for p in running]})
        return 0 if not failed and not stuck else 1


def _warn_unshared_keys(policy: Any, processes: int) -> None:
    unshared = [
        issuer.name for issuer in policy.remote_issuers if issuer.source.settings.cache == "memory"
    ]
    if processes > 1 and unshared:
        log.warning(
            "each process fetches these issuers' keys itself: set keys.cache to a Redis "
            "URL to share one fetch between processes",
            extra={"issuers": unshared, "processes": processes},
        )


def serve_summed_metrics(listen: str, directory: str) -> Any:
    """`/metrics` adding up every worker's series (prometheus-client multiprocess)."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    host, port = _split(listen)
    address = host or "0.0.0.0"  # noqa: S104  (an explicit operator choice)
    server, _thread = start_http_server(port, addr=address, registry=registry)
    return server


def supervise(options: ServeOptions) -> int:
    """Run `options.processes` workers until SIGTERM or SIGINT; the exit code."""
    from ext_authz.log import configure, current_settings

    log_format, log_level = current_settings()
    configure(log_format, log_level, buffered=True, shared=True)
    return Supervisor(options, options.processes, log_format, log_level).run()
