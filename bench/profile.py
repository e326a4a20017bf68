"""Sampling profiles of a server process with py-spy, summarised by where the GIL goes.

py-spy runs in ``--gil`` mode: each sample is the stack of the thread holding the GIL,
so the samples show where the server's Python-level CPU goes. The share of samples
over the wall time is the share of time the GIL was held at all; the rest of the
server's CPU is gRPC C-core and kernel work done without the GIL.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RATE = 250  # samples per second

# The handler's parts: first match wins, looking anywhere in the stack.
HANDLER_PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("handler: decision log", ("log_decision (ext_authz/", "decision_line (ext_authz/")),
    ("handler: signature verify", ("verify_signature (ext_authz/",)),
    ("handler: token parse + claims", ("parse_signed (ext_authz/", "check_registered_claims (")),
    ("handler: verified-token cache", ("VerifiedTokenCache.",)),
    ("handler: Authorizer.check, rest", ("Authorizer.check (ext_authz/",)),
    ("handler: request_view", ("request_view (ext_authz/",)),
    ("handler: answer memo", ("AnswerMemo.",)),
    ("handler: check_response", ("check_response (ext_authz/", "response_bytes (ext_authz/")),
    (
        "handler: servicer Check, rest",
        ("AuthorizationService.answer (ext_authz/", ".check (bench/", ".Check (bench/"),
    ),
)
# Outside the handler: by the innermost frame only.
LEAF_PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("gRPC Python server layer", ("grpc/", "cygrpc")),
    ("locks and condition variables", ("(threading.py",)),
    ("thread pool", ("concurrent/futures/",)),
    ("event loop callbacks (grpc.aio's Cython code has no Python frames)", ("asyncio/",)),
    ("event loop waiting in epoll", ("selectors.py",)),
)
OTHER = "other"


def py_spy_binary() -> str | None:
    candidate = Path(sys.executable).parent / "py-spy"
    if candidate.is_file():
        return str(candidate)
    return shutil.which("py-spy")


def ensure_py_spy(progress: Any = print) -> str | None:
    """py-spy's path; installs it into this environment with pip if it is missing."""
    found = py_spy_binary()
    if found is not None:
        return found
    progress("  py-spy not found: installing it with pip into this environment")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "py-spy"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        progress(f"  could not install py-spy; profiles skipped: {done.stderr.strip()[-300:]}")
        return None
    return py_spy_binary()


class Sampled:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.wall = 0.0
        self.error: str | None = None

    def summary(self) -> dict[str, Any]:
        if self.error is not None:
            return {"error": self.error}
        return summarise(self.path, self.wall)


@contextmanager
def profiled(pid: int, out: Path) -> Iterator[Sampled]:
    """Sample ``pid`` with py-spy (GIL holder only) for the duration of the block."""
    sampled = Sampled(out)
    binary = py_spy_binary()
    if binary is None:
        sampled.error = "py-spy is not installed"
        yield sampled
        return
    cmd = [binary, "record", "--pid", str(pid), "--gil", "--nonblocking"]
    cmd += ["--rate", str(RATE), "--format", "raw", "--output", str(out)]
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    started = time.perf_counter()
    try:
        yield sampled
    finally:
        sampled.wall = time.perf_counter() - started
        spy.send_signal(signal.SIGINT)
        try:
            _, err = spy.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            _, err = spy.communicate()
        if not out.is_file():
            sampled.error = f"py-spy wrote no profile: {err.strip()[-300:]}"


_LINE_NO = re.compile(r":\d+\)")


def _frames(stack: str) -> list[str]:
    return [_LINE_NO.sub(")", frame) for frame in stack.split(";")]


def categorise(frames: list[str]) -> str:
    for name, needles in HANDLER_PARTS:
        for needle in needles:
            if any(needle in frame for frame in frames):
                return name
    leaf = frames[-1]
    for name, needles in LEAF_PARTS:
        if any(needle in leaf for needle in needles):
            return name
    return OTHER


def summarise(path: Path, wall: float, top: int = 12) -> dict[str, Any]:
    categories: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = _frames(stack)
        total += count
        categories[categorise(frames)] += count
        leaves[frames[-1]] += count
    return {
        "samples": total,
        "wall_s": wall,
        "gil_held_share": total / (wall * RATE) if wall > 0 else 0.0,
        "categories": [
            {"name": name, "share": count / total} for name, count in categories.most_common()
        ]
        if total
        else [],
        "top_self": [
            {"frame": frame, "share": count / total} for frame, count in leaves.most_common(top)
        ]
        if total
        else [],
    }
