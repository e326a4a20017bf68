"""Hypothesis profiles: bounded by default, long with `HYPOTHESIS_PROFILE=long`
(`make fuzz`)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("bounded", max_examples=200, deadline=None)
settings.register_profile(
    "long",
    max_examples=20_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "bounded"))
