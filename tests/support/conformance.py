"""Where the conformance vectors live (`tests/data/conformance`, copied from upstream
with their licences) and what happens when they are missing: a skip on a developer's
machine, a failure in CI (`CI` set), so a broken checkout never passes as green."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

CONFORMANCE = Path(__file__).resolve().parents[1] / "data" / "conformance"
WYCHEPROOF = CONFORMANCE / "wycheproof"
RFC7520 = CONFORMANCE / "rfc7520"


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def vectors_missing(where: Path) -> NoReturn:
    """Stop the test: fail in CI, skip elsewhere."""
    message = f"conformance vectors not found under {where} (see tests/data/conformance)"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)
