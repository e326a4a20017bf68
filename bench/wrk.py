"""Closed-loop load with ``wrk``: find it (or install it with apt-get), run it, parse it."""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.procs import BenchError

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def find_wrk(install: bool = True, progress: Any = print) -> tuple[str | None, str]:
    """wrk's path and a note; tries ``apt-get install -y wrk`` (as root) when missing."""
    found = shutil.which("wrk")
    if found is not None:
        return found, "found on PATH"
    if not install:
        return None, "wrk is not installed"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None, "wrk is not installed and apt-get cannot be used here (needs root)"
    progress("  wrk not found: apt-get install -y wrk")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    quiet = {"capture_output": True, "text": True, "env": env, "check": False}
    done = subprocess.run(["apt-get", "install", "-y", "wrk"], timeout=300, **quiet)  # type: ignore[call-overload]
    if done.returncode != 0:
        subprocess.run(["apt-get", "update"], timeout=300, **quiet)  # type: ignore[call-overload]
        done = subprocess.run(["apt-get", "install", "-y", "wrk"], timeout=300, **quiet)  # type: ignore[call-overload]
    found = shutil.which("wrk")
    if found is None:
        tail = str(done.stderr).strip()[-300:]
        return None, f"wrk is not installed and apt-get install failed: {tail}"
    return found, "installed with apt-get"


def wrk_version(binary: str) -> str:
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0] if first else "unknown"


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if match is None:
        raise ValueError(f"unexpected wrk duration {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse(output: str) -> dict[str, Any]:
    """The figures of wrk's report (run with ``--latency``)."""
    result: dict[str, Any] = {"non_2xx": 0, "socket_errors": 0}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if rps is None:
        raise ValueError(f"no Requests/sec in wrk output:\n{output}")
    result["rps"] = float(rps.group(1))
    total = re.search(r"(\d+) requests in ([\d.]+\w+)", output)
    if total is not None:
        result["requests"] = int(total.group(1))
    latency = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", output)
    if latency is not None:
        result["latency_avg_ms"] = _ms(latency.group(1))
        result["latency_max_ms"] = _ms(latency.group(3))
    for pct in ("50", "75", "90", "99"):
        found = re.search(rf"^\s+{pct}%\s+(\S+)", output, re.MULTILINE)
        if found is not None:
            result[f"p{pct}_ms"] = _ms(found.group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non2xx is not None:
        result["non_2xx"] = int(non2xx.group(1))
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if errors is not None:
        result["socket_errors"] = sum(int(g) for g in errors.groups())
    return result


def run_wrk(
    binary: str,
    url: str,
    headers: Mapping[str, str],
    *,
    seconds: float,
    connections: int,
    threads: int = 1,
    script: Path | None = None,
) -> dict[str, Any]:
    """One closed-loop run: `headers` on every request, or requests made by the Lua
    `script` (which then sets its own headers)."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError("load goes to 127.0.0.1 only")
    cmd = [binary, "-t", str(threads), "-c", str(connections), "-d", f"{int(seconds)}s"]
    cmd += ["--latency", "--timeout", "5s"]
    if script is not None:
        cmd += ["-s", str(script)]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    cmd.append(url)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    result = parse(done.stdout)
    wrk_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result.update(seconds=seconds, connections=connections, threads=threads)
    result["wrk_us_per_request"] = wrk_cpu / max(1, int(result.get("requests", 0))) * 1e6
    return result
