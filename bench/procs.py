"""Child processes for the benchmarks, on the helpers the demo and the tests use
(`ext_authz.demo.processes`): started in their own session, stopped by pid."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ext_authz.demo.processes import (
    LOOPBACK,
    ChildProcess,
    StartupError,
    free_port,
    wait_for_grpc_serving,
)

__all__ = [
    "LOOPBACK",
    "BenchError",
    "Child",
    "child",
    "free_port",
    "python_env",
    "python_module",
    "wait_grpc_serving",
]

START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0


class BenchError(RuntimeError):
    """A component of a benchmark could not be started or misbehaved."""


class Child(ChildProcess):
    """A benchmark's child: stdout to /dev/null, stderr to `stderr_path` (or /dev/null,
    where a case measures the server's default logging)."""

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        stderr_path: Path | None,
        env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            name, cmd, stderr_path=stderr_path, env=env if env is not None else python_env()
        )
        self._stderr_kept = stderr_path is not None

    def alive(self) -> bool:
        return not self.exited()

    def stderr_tail(self, limit: int = 2000) -> str:
        if not self._stderr_kept:
            return "(stderr was sent to /dev/null)"
        return self.stderr_text(limit)

    def describe(self) -> str:
        return (
            f"{self.name} (pid {self.pid}) exited with {self.proc.poll()}: "
            f"{' '.join(self.cmd)}\n{self.stderr_tail()}"
        )


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
        process.stop(STOP_TIMEOUT)


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def wait_grpc_serving(port: int, process: Child, timeout: float = START_TIMEOUT) -> None:
    try:
        serving = wait_for_grpc_serving(LOOPBACK, port, timeout, proc=process)
    except StartupError:
        raise BenchError(process.describe()) from None
    if not serving:
        raise BenchError(f"{process.name} not SERVING within {timeout:g} s")


def python_env() -> dict[str, str]:
    """The environment for Python children: this project importable, no proxies."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env
