"""The one process helper the demo, the tests and the benchmarks start children with
(`ext_authz.demo.processes`): output kept or dropped, a stop that always ends the
child, waits that give up early with the child's stderr."""

from __future__ import annotations

import ast
import sys
import time
from pathlib import Path

import pytest

from bench.procs import BenchError, Child, wait_grpc_serving
from ext_authz.demo.processes import (
    ChildProcess,
    StartupError,
    free_port,
    running,
    wait_for_port,
)

REPO = Path(__file__).resolve().parent.parent
PRINTS = "import sys; print('out'); print('err', file=sys.stderr); sys.stdout.flush()"


def test_with_a_log_dir_both_streams_are_kept(tmp_path: Path) -> None:
    child = ChildProcess("p", [sys.executable, "-c", PRINTS], log_dir=tmp_path)
    assert child.proc.wait(10) == 0
    assert child.stop() == 0
    # read after the stop: the files stay, the handles are closed
    assert (child.stdout_text(), child.stderr_text()) == ("out\n", "err\n")
    assert child.stderr_path == tmp_path / "p.stderr.log"


def test_without_one_stdout_is_dropped_and_stderr_goes_where_asked(tmp_path: Path) -> None:
    child = ChildProcess("p", [sys.executable, "-c", PRINTS], stderr_path=tmp_path / "e.log")
    child.proc.wait(10)
    child.stop()
    assert child.stdout_text() == ""
    assert (tmp_path / "e.log").read_text(encoding="utf-8") == "err\n"
    assert list(tmp_path.iterdir()) == [tmp_path / "e.log"]


def test_a_child_that_ignores_sigterm_is_killed() -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ignoring', flush=True); time.sleep(60)"
    )
    with running([sys.executable, "-c", code], name="stubborn") as child:
        deadline = time.monotonic() + 10
        while "ignoring" not in child.stdout_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        wait = child.stop(timeout=0.5)
    assert wait == -9
    assert child.exited()


def test_a_wait_gives_up_as_soon_as_the_child_exits_and_shows_its_stderr() -> None:
    code = "import sys; print('cannot bind', file=sys.stderr); sys.exit(3)"
    expected = r"early exited with code 3(.|\n)*cannot bind"
    with (
        running([sys.executable, "-c", code], name="early") as child,
        pytest.raises(StartupError, match=expected),
    ):
        wait_for_port("127.0.0.1", free_port(), 30.0, proc=child)


def test_the_benchmarks_children_are_the_same_processes(tmp_path: Path) -> None:
    child = Child("bench", [sys.executable, "-c", "import sys; sys.exit(4)"], None)
    try:
        child.proc.wait(10)
        assert not child.alive()
        assert child.stderr_tail() == "(stderr was sent to /dev/null)"
        with pytest.raises(BenchError, match=r"bench \(pid \d+\) exited with 4"):
            wait_grpc_serving(free_port(), child, timeout=5.0)
    finally:
        child.stop()


def test_only_the_helper_starts_long_running_children() -> None:
    """Nothing else in the project calls `subprocess.Popen` (the profiler, which reads
    py-spy's piped output, aside)."""
    found = []
    for folder in ("ext_authz", "tests", "bench"):
        for path in sorted((REPO / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and node.attr == "Popen":
                    found.append(path.relative_to(REPO).as_posix())
    assert sorted(set(found)) == ["bench/profile.py", "ext_authz/demo/processes.py"]
