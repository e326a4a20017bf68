"""Processes for end-to-end tests: the shared helpers of `ext_authz.demo.processes`
(the demo and the benchmarks start things the same way) and a started Envoy.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ext_authz.demo.processes import (
    ChildProcess,
    StartupError,
    envoy_binary,
    free_port,
    random_base_id,
    running,
    wait_for_grpc_serving,
    wait_for_http,
    wait_for_port,
)
from ext_authz.deploy.envoy_config import READY_PATH, EnvoyParams, render_envoy_config

__all__ = [
    "ChildProcess",
    "RunningEnvoy",
    "StartupError",
    "envoy_binary",
    "free_port",
    "running",
    "serve_cmd",
    "start_envoy",
    "wait_for_grpc_serving",
    "wait_for_http",
    "wait_for_port",
]

ENVOY_START_TIMEOUT = 30.0


def serve_cmd(policy: Path, port: int | None, *extra: str) -> list[str]:
    """`ext-authz serve` of `policy` on 127.0.0.1:`port` (None: no gRPC door), stopping
    without the shutdown delay; `extra` options follow (a later option wins)."""
    listen = f"127.0.0.1:{port}" if port is not None else "off"
    return [
        sys.executable,
        "-m",
        "ext_authz",
        "serve",
        "--config",
        str(policy),
        "--listen",
        listen,
        "--shutdown-delay",
        "0",
        "--grace",
        "5",
        *extra,
    ]


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
