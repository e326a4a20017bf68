"""Child processes for the benchmarks: started in their own session, stopped by pid."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0


class BenchError(RuntimeError):
    """A component of a benchmark could not be started or misbehaved."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


class Child:
    """A subprocess whose stderr goes to ``stderr_path`` (or /dev/null when None)."""

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        stderr_path: Path | None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.cmd = list(cmd)
        self.stderr_path = stderr_path
        self._stderr: IO[bytes] | None = stderr_path.open("wb") if stderr_path else None
        self.proc = subprocess.Popen(
            self.cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr if self._stderr is not None else subprocess.DEVNULL,
            start_new_session=True,
            env=env if env is not None else python_env(),
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_tail(self, limit: int = 2000) -> str:
        if self.stderr_path is None:
            return "(stderr was sent to /dev/null)"
        if self._stderr is not None:
            self._stderr.flush()
        try:
            data = self.stderr_path.read_bytes()
        except OSError:
            return ""
        return data[-limit:].decode("utf-8", "replace")

    def describe(self) -> str:
        return (
            f"{self.name} (pid {self.pid}) exited with {self.proc.poll()}: "
            f"{' '.join(self.cmd)}\n{self.stderr_tail()}"
        )

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            if self._stderr is not None:
                self._stderr.close()


@contextmanager
def child(
    name: str,
    cmd: Sequence[str],
    stderr_path: Path | None,
    env: dict[str, str] | None = None,
) -> Iterator[Child]:
    process = Child(name, cmd, stderr_path, env)
    try:
        yield process
    finally:
        process.stop()


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def wait_grpc_serving(port: int, process: Child, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"{LOOPBACK}:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if not process.alive():
                raise BenchError(process.describe())
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"{process.name} not SERVING within {timeout:g} s")
            time.sleep(0.1)


def python_env() -> dict[str, str]:
    """The environment for Python children: this project importable, no proxies."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env
