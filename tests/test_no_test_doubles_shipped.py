"""Test doubles live in `tests/support/doubles.py`, never in the shipped package: the
server neither defines nor imports a clock that stands still or keys that never
change, and nothing under `ext_authz/` imports the tests or the benchmarks."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import ext_authz
from tests.support import doubles

ROOT = Path(ext_authz.__file__).resolve().parent
# the names tests give their doubles
DOUBLE = re.compile(r"(Fake|Fixed|Stub|Mock|Dummy|Static|Recording|Scripted)[A-Z]\w*")
# still defined for a caller outside the tests: remove once `bench/inproc.py` imports
# `tests.support.doubles.StaticKeys`
LEFT_FOR_BENCH: set[tuple[str, str]] = set()


def _shipped() -> list[tuple[str, ast.Module]]:
    return [
        (path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(encoding="utf-8")))
        for path in sorted(ROOT.rglob("*.py"))
    ]


def test_no_shipped_module_defines_a_test_double() -> None:
    ours = {
        name
        for name, value in vars(doubles).items()
        if isinstance(value, type) and value.__module__ == doubles.__name__
    }
    assert {"FixedClock", "StaticKeys"} <= ours
    found = {
        (where, node.name)
        for where, tree in _shipped()
        for node in tree.body
        if isinstance(node, ast.ClassDef) and (node.name in ours or DOUBLE.fullmatch(node.name))
    }
    assert found == LEFT_FOR_BENCH


def test_no_shipped_module_imports_the_tests_or_the_benchmarks() -> None:
    found = []
    for where, tree in _shipped():
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            found += [(where, n) for n in names if n.split(".")[0] in ("tests", "bench")]
    assert not found


def test_the_fixed_clock_moves_only_when_told_to() -> None:
    clock = doubles.FixedClock(100.0)
    assert (clock.now(), clock.monotonic()) == (100.0, 1000.0)
    clock.advance(2.5)
    assert (clock.now(), clock.monotonic()) == (102.5, 1002.5)
