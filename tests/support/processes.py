"""Process and port helpers for end-to-end tests: real subprocesses, ports chosen at run time.

The waiting and process handling are shared with the demo runner
(`ext_authz.demo.run`), so the demo and the tests start things the same way.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ext_authz.demo.run import (
    ChildProcess,
    StartupError,
    envoy_binary,
    random_base_id,
    wait_for_http,
    wait_for_port,
)
from ext_authz.envoy.config import READY_PATH, EnvoyParams, render_envoy_config

__all__ = [
    "ChildProcess",
    "RunningEnvoy",
    "StartupError",
    "envoy_binary",
    "free_port",
    "running",
    "start_envoy",
    "wait_for_http",
    "wait_for_port",
]

ENVOY_START_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
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
    with tempfile.TemporaryDirectory(prefix=f"e2e-{name}-") as log_dir:
        child = ChildProcess(name, cmd, log_dir=Path(log_dir), env=env, cwd=cwd)
        try:
            yield child
        finally:
            child.stop()


@dataclass(frozen=True, slots=True)
class RunningEnvoy:
    """A started Envoy: its process handle, parameters and config file."""

    process: ChildProcess
    params: EnvoyParams
    config_path: Path

    @property
    def base_url(self) -> str:
        return self.params.listen_url

    @property
    def admin_url(self) -> str:
        return self.params.admin_url

    def url(self, path: str) -> str:
        return f"{self.params.listen_url}{path}"


@contextmanager
def start_envoy(
    params: EnvoyParams,
    tmp_path: Path,
    *,
    timeout: float = ENVOY_START_TIMEOUT,
    extra_args: Sequence[str] = (),
) -> Iterator[RunningEnvoy]:
    """Start Envoy with ``render_envoy_config(params)``; ready once ``/envoy-ready`` is 200."""
    config_path = tmp_path / f"envoy-{params.listen_port}.yaml"
    config_path.write_text(render_envoy_config(params), encoding="utf-8")
    cmd = [envoy_binary(), "-c", str(config_path)]
    cmd += ["--base-id", str(random_base_id()), "--log-level", "warn", "--concurrency", "1"]
    cmd += list(extra_args)
    with running(cmd, name="envoy", env=dict(os.environ)) as process:
        wait_for_http(f"{params.listen_url}{READY_PATH}", timeout, proc=process)
        yield RunningEnvoy(process=process, params=params, config_path=config_path)
