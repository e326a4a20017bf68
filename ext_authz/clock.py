"""Time as a seam: the pipeline asks a clock (tests hand it a fixed one:
`tests.support.doubles.FixedClock`)."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (wall clock: compared with `exp`, `nbf`, `iat`)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for TTLs and cooldowns)."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()
