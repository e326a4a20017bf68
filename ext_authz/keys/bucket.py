"""The budget for refetches on an unknown `kid`: a token bucket per issuer.

A bucket holds `REFETCH_BURST` refetches and gains one back every `refetch_cooldown`
seconds. So a real rotation right after a probe with a made-up `kid` still gets its
refetch at once, while a flood of random `kid` values costs the issuer at most
`REFETCH_BURST + T / refetch_cooldown` fetches in any window of `T` seconds (per
process, or for the whole fleet when the Redis store is configured).

The bucket is kept as one number, the time at which it is next full (the generic cell
rate algorithm): cheap to keep in memory and to update atomically in Redis. Time comes
from the `Clock` seam, so tests move it by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

from ext_authz.clock import Clock

REFETCH_BURST = 3


@dataclass(frozen=True, slots=True)
class BucketRule:
    burst: int
    interval: float  # seconds to earn one refetch back

    def take(self, full_at: float | None, now: float) -> float | None:
        """The bucket's new full-at time if a refetch may start at `now`, else None.
        `full_at` None (or in the past) is a full bucket."""
        start = now if full_at is None or full_at < now else full_at
        if start - now > (self.burst - 1) * self.interval:
            return None
        return start + self.interval


def refetch_rule(refetch_cooldown: float) -> BucketRule:
    return BucketRule(REFETCH_BURST, refetch_cooldown)


class RefetchBucket:
    """One issuer's bucket in this process, on the clock's monotonic time. Not
    thread-safe: its owner holds a lock around `take`."""

    def __init__(self, rule: BucketRule, clock: Clock) -> None:
        self.rule = rule
        self._clock = clock
        self._full_at: float | None = None

    def take(self) -> bool:
        taken = self.rule.take(self._full_at, self._clock.monotonic())
        if taken is None:
            return False
        self._full_at = taken
        return True
