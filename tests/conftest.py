"""Hypothesis profiles: bounded by default, long with `HYPOTHESIS_PROFILE=long`
(`make fuzz`)."""

from __future__ import annotations

import os

import pytest
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


# Tests that start real processes (Envoy, the server, Redis, proxies) or took over 2 s
# on a 2-core machine are marked `slow`; `make test-fast` leaves them out. Mark a new
# slow test with `@pytest.mark.slow`, or name its module here when all of it is slow.
SLOW_MODULE_PREFIXES = (
    "test_e2e_",
    "test_operations",
    "test_compose_",
    "test_keys_redis",
    "test_reload_under_load",
)
SLOW_TESTS = frozenset(
    {
        "test_wycheproof_summary",
        "test_rfc7520_summary",
        "test_lookup_finds_a_value_or_missing_and_never_raises",
        "test_parse_signed_returns_a_token_or_denies",
        "test_decode_json_object_returns_an_object_or_denies",
        "test_claim_headers_sets_safe_values_and_removes_every_other_identity_header",
        "test_token_exactly_at_the_size_limit_is_parsed",
        "test_an_outage_shorter_than_max_stale_denies_no_cached_key",
        "test_a_thousand_random_kids_cost_one_jwks_request_per_cooldown",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.path.name
        name = getattr(item, "originalname", item.name)
        if module.startswith(SLOW_MODULE_PREFIXES) or name in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
