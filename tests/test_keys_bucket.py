"""The refetch bucket's rule: the documented bound holds for any pattern of requests,
and a rotation after a probe, or after a flood, gets through when it says."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ext_authz.keys.bucket import REFETCH_BURST, BucketRule, RefetchBucket, refetch_rule
from tests.support.doubles import FixedClock


@given(
    gaps=st.lists(st.floats(min_value=0, max_value=20, allow_nan=False), max_size=300),
    interval=st.sampled_from([0.5, 5.0, 30.0]),
)
def test_no_window_gets_more_than_the_burst_plus_one_per_interval(
    gaps: list[float], interval: float
) -> None:
    rule = BucketRule(REFETCH_BURST, interval)
    full_at: float | None = None
    now = 0.0
    taken: list[float] = []
    for gap in gaps:
        now += gap
        granted = rule.take(full_at, now)
        if granted is not None:
            full_at = granted
            taken.append(now)
    for i, start in enumerate(taken):
        for j in range(i, len(taken)):
            window = taken[j] - start
            assert j - i + 1 <= REFETCH_BURST + window / interval + 1e-9


def test_a_full_bucket_gives_the_burst_at_once_then_one_per_interval() -> None:
    clock = FixedClock()
    bucket = RefetchBucket(refetch_rule(5.0), clock)
    assert [bucket.take() for _ in range(REFETCH_BURST + 2)] == [True] * REFETCH_BURST + [
        False,
        False,
    ]
    clock.advance(4.9)
    assert not bucket.take()
    clock.advance(0.1)
    assert bucket.take()
    assert not bucket.take()
    clock.advance(60)  # refills up to the burst, never beyond
    assert [bucket.take() for _ in range(REFETCH_BURST + 1)] == [True] * REFETCH_BURST + [False]


def test_one_probe_leaves_refetches_for_a_rotation() -> None:
    clock = FixedClock()
    bucket = RefetchBucket(refetch_rule(30.0), clock)
    assert bucket.take()  # the probe
    clock.advance(1)
    assert bucket.take()  # the rotation, a second later
