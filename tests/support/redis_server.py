"""A real `redis-server` on 127.0.0.1: a free port, a temporary directory, no persistence.

Tests that need one are skipped, with the reason, only when the binary is missing
(Debian: `apt-get install -y redis-server`).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.support.processes import ChildProcess, free_port, running, wait_for_port

START_TIMEOUT = 10.0
MISSING = "redis-server is not installed (Debian: apt-get install -y redis-server)"


@dataclass
class RedisServer:
    port: int
    process: ChildProcess

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2.0)

    def kill(self) -> None:
        """Take the server away at once (SIGKILL), as a crash would."""
        self.process.proc.kill()
        self.process.proc.wait(timeout=10)


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip(MISSING)
    return binary


@contextmanager
def redis_server(directory: Path, port: int | None = None) -> Iterator[RedisServer]:
    """Run redis-server for the block; on `port` (to stand in for one that went away)
    or a free one."""
    binary = redis_binary()
    directory.mkdir(parents=True, exist_ok=True)
    port = port if port is not None else free_port()
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    cmd += ["--appendonly", "no", "--dir", str(directory)]
    with running(cmd, name="redis") as child:
        wait_for_port("127.0.0.1", port, START_TIMEOUT, proc=child)
        server = RedisServer(port, child)
        _wait_for_ping(server)
        yield server


def _wait_for_ping(server: RedisServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    with server.client() as client:
        while True:
            try:
                if client.ping():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {server.port} never answered PING")
            time.sleep(0.05)
