"""The key manager against real loopback JWKS servers that the tests break.

Time is a `FixedClock`: TTLs, staleness, cooldowns and backoff move only when a test
advances it. The refresh loop looks at the clock every `TICK` seconds, so a test that
advances the clock sees the background refresh happen without sleeping through a TTL.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ext_authz.keys.bucket import REFETCH_BURST
from ext_authz.keys.events import KeyEvent, KeyOrigin
from ext_authz.keys.fetch import FetchedKeys, HttpJwksFetcher, ttl_from_cache_control
from ext_authz.keys.manager import KeyManager, retry_delay
from ext_authz.keys.source import KeySource
from ext_authz.keys.store import KeyStatus
from ext_authz.policy.model import Policy
from tests.support import tokens
from tests.support.doubles import FixedClock
from tests.support.jwks_server import JwksServer, jwks_server
from tests.support.keys import (
    KEY_UNKNOWN,
    KEYS_UNAVAILABLE,
    Checker,
    Remote,
    eventually,
    make_policy,
)
from tests.support.tokens import CORP, NOW, PARTNER, ROGUE_RSA, mint, public_jwk, rsa_key

TICK = 0.02
TTL = 300.0  # the test server's Cache-Control: max-age=300
DAY = 86_400.0
COOLDOWN = 5.0  # the default refetch_cooldown: one refetch earned back this often


def token_at(now: float, *, issuer: tokens.TestIssuer = CORP, **overrides: Any) -> str:
    """A good token of `issuer` for a clock reading `now`."""
    times = {"iat": int(now) - 60, "nbf": int(now) - 60, "exp": int(now) + 600}
    return mint(issuer, **{**times, **overrides})


def corp_remote(server: JwksServer, **keys: str) -> Remote:
    return Remote("corp", CORP.iss, server, keys=keys)


@pytest.fixture
def server() -> Iterator[JwksServer]:
    with jwks_server(CORP.jwks()) as running:
        yield running


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


class Started:
    """A started manager, stopped at the end of the test."""

    def __init__(self) -> None:
        self.managers: list[KeyManager] = []

    def __call__(
        self,
        policy: Policy,
        clock: FixedClock,
        *,
        inherit: KeyManager | None = None,
        on_event: Callable[[KeyEvent], None] | None = None,
        backoff_cap: float = 60.0,
        max_refetch_waiters: int | None = None,
    ) -> KeyManager:
        manager = KeyManager(
            clock=clock,
            tick=TICK,
            on_event=on_event,
            backoff_cap=backoff_cap,
            max_refetch_waiters=max_refetch_waiters,
        )
        self.managers.append(manager)
        manager.start(policy.issuers, inherit=inherit)
        assert manager.wait_ready(10)
        return manager


@pytest.fixture
def start() -> Iterator[Started]:
    started = Started()
    yield started
    for manager in started.managers:
        manager.stop()


# first fetch -----------------------------------------------------------------------


def test_first_fetch_makes_keys_fresh(
    tmp_path: Path, server: JwksServer, clock: FixedClock, start: Started
) -> None:
    manager = start(make_policy(tmp_path, [corp_remote(server)]), clock)
    snapshot = manager.current("corp")
    assert snapshot.status is KeyStatus.FRESH
    assert snapshot.key_set is not None
    assert snapshot.key_set.kids() == [CORP.kid]
    assert server.count() == 1


def test_discovery_finds_the_jwks_once(
    tmp_path: Path, server: JwksServer, clock: FixedClock, start: Started
) -> None:
    remote = Remote("corp", CORP.iss, server, discovery=True)
    manager = start(make_policy(tmp_path, [remote]), clock)
    assert manager.current("corp").status is KeyStatus.FRESH
    manager.refetch("corp")
    assert server.count() == 2
    # the discovered jwks_uri is remembered: one request per refresh, not two
    assert server.count("/.well-known/openid-configuration") == 1


def test_discovery_naming_another_issuer_is_refused(
    tmp_path: Path, server: JwksServer, clock: FixedClock, start: Started
) -> None:
    server.behaviour.issuer = "https://someone-else.test"
    remote = Remote("corp", CORP.iss, server, discovery=True)
    manager = start(make_policy(tmp_path, [remote]), clock)
    snapshot = manager.current("corp")
    assert snapshot.key_set is None
    assert snapshot.status is KeyStatus.FAILED
    assert server.count() == 0


@pytest.mark.parametrize(
    ("status", "body", "reset", "kind"),
    [
        (500, None, False, "http_status"),
        (200, b"<html>not json</html>", False, "invalid_jwks"),
        (200, b'{"keys": "nope"}', False, "invalid_jwks"),
        (200, b'{"keys": [], "keys": []}', False, "invalid_jwks"),
        (200, b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', False, "no_usable_key"),
        (200, b"x" * 300_000, False, "too_large"),
        (200, None, True, "network"),
    ],
    ids=[
        "http_500",
        "not_json",
        "keys_not_array",
        "duplicate_members",
        "no_usable_key",
        "oversized",
        "connection_reset",
    ],
)
def test_failed_first_fetch_is_ready_without_keys(
    tmp_path: Path,
    server: JwksServer,
    clock: FixedClock,
    start: Started,
    status: int,
    body: bytes | None,
    reset: bool,
    kind: str,
) -> None:
    server.behaviour.status = status
    server.behaviour.body = body
    server.behaviour.reset = reset
    events: list[KeyEvent] = []
    manager = start(make_policy(tmp_path, [corp_remote(server)]), clock, on_event=events.append)
    snapshot = manager.current("corp")
    assert snapshot.key_set is None
    assert snapshot.status is KeyStatus.FAILED
    assert snapshot.last_error
    assert [(e.result, e.key_count, e.source) for e in events] == [(kind, 0, KeyOrigin.NETWORK)]
    assert manager.report()["corp"].last_result == kind


def test_timeout_is_a_failed_fetch_not_a_hang(
    tmp_path: Path, server: JwksServer, clock: FixedClock, start: Started
) -> None:
    server.behaviour.delay = 5.0
    started = time.monotonic()
    manager = start(make_policy(tmp_path, [corp_remote(server, fetch_timeout="0.3s")]), clock)
    assert time.monotonic() - started < 3.0
    assert manager.current("corp").last_error == "timed out"
    assert manager.report()["corp"].last_result == "timeout"


# refresh, rotation, stale keys --------------------------------------------------------


def test_background_refresh_at_80_percent_of_the_ttl(
    tmp_path: Path, server: JwksServer, clock: FixedClock, start: Started
) -> None:
    manager = start(make_policy(tmp_path, [corp_remote(server)]), clock)
    report = manager.report()["corp"]
    assert report.next_refresh_at == pytest.approx(NOW + 0.8 * TTL)
    clock.advance(0.8 * TTL - 1)
    time.sleep(20 * TICK)
    assert server.count() == 1
    clock.advance(2)
    eventually(lambda: server.count() == 2, what="the refresh at 80% of the TTL")
    eventually(lambda: manager.report()["corp"].fetched_at == clock.now())
    assert manager.current("corp").status is KeyStatus.FRESH


def test_rotation_is_picked_up_without_restart(
    tmp_path: Path, server: JwksServer, clock: FixedClock, start: Started
) -> None:
    policy = make_policy(tmp_path, [corp_remote(server)])
    manager = start(policy, clock)
    check = Checker(policy, manager, clock)
    old_token = token_at(clock.now())
    assert check(old_token) == "allow"
    # the issuer rotates: a new key is published next to the old one
    rotated = public_jwk(ROGUE_RSA, kid="corp-2", alg="RS256")
    server.behaviour.jwks = {"keys": [CORP.public_jwk(), rotated]}
    new_token = token_at(clock.now(), key=ROGUE_RSA, headers={"kid": "corp-2"})
    assert check(new_token) == "allow"  # after one refetch
    assert server.count() == 2
    # then the old key is withdrawn: tokens under it stop verifying after the next
    # refresh, even ones the verified-token cache holds
    server.behaviour.jwks = {"keys": [rotated]}
    assert check(old_token) == "allow"
    clock.advance(0.8 * TTL + 1)
    eventually(lambda: server.count() == 3, what="the scheduled refresh")
    eventually(lambda: manager.current("corp").key_set is not None)
    eventually(lambda: manager.report()["corp"].kids == ("corp-2",))
    assert check(old_token) == KEY_UNKNOWN
    assert check(token_at(clock.now())) == KEY_UNKNOWN
    assert check(token_at(clock.now(), key=ROGUE_RSA, headers={"kid": "corp-2"})) == "allow"


def test_failed_refresh_keeps_the_last_good_keys(
    tmp_path: Path, server: JwksServer, clock: FixedClock, start: Started
) -> None:
    manager = start(make_policy(tmp_path, [corp_remote(server)]), clock)
    server.behaviour.status = 503
    clock.advance(31)
    snapshot = manager.refetch("corp")
    assert snapshot is not None
    assert snapshot.key_set is not None
    assert snapshot.key_set.kids() == [CORP.kid]
    assert snapshot.last_error == "HTTP 503 from key endpoint"
    # past its TTL the set is stale but still served, for max_stale more
    clock.advance(400)
    assert manager.current("corp").status is KeyStatus.STALE
    clock.advance(DAY)
    assert manager.current("corp").key_set is None
    assert manager.current("corp").status is KeyStatus.FAILED


OUTAGES: dict[str, dict[str, Any]] = {
    "http_503": {"status": 503},
    "timeout": {"delay": 1.0},
    "connection_reset": {"reset": True},
    "not_json": {"body": b"<html>maintenance</html>"},
    "no_usable_key": {"jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "x"}]}},
    "rsa_1024_only": {"jwks": {"keys": [public_jwk(rsa_key(1024), kid="corp-1", alg="RS256")]}},
    "alg_not_for_signatures": {"jwks": {"keys": [public_jwk(ROGUE_RSA, kid="x", alg="HS256")]}},
    "duplicate_members": {"body": b'{"keys": [], "keys": []}'},
}


@pytest.mark.parametrize("outage", list(OUTAGES))
def test_an_outage_shorter_than_max_stale_denies_no_cached_key(
    tmp_path: Path, server: JwksServer, clock: FixedClock, start: Started, outage: str
) -> None:
    policy = make_policy(tmp_path, [corp_remote(server, fetch_timeout="0.5s")])
    manager = start(policy, clock, backoff_cap=600.0)
    check = Checker(policy, manager, clock)
    for name, value in OUTAGES[outage].items():
        setattr(server.behaviour, name, value)
    # the outage runs from just after the last good fetch to just before the keys'
    # TTL plus max_stale: every retry fails, every token under a cached key passes
    elapsed = 0.0
    for step in (0.8 * TTL + 1, 600.0, 3600.0, 6 * 3600.0, 8 * 3600.0, 8 * 3600.0):
        clock.advance(step)
        elapsed += step
        eventually(
            lambda: manager.report()["corp"].last_attempt_at == clock.now(),
            what="a retry during the outage",
        )
        assert manager.report()["corp"].last_result != "ok"
        assert manager.current("corp").last_error
        assert check(token_at(clock.now())) == "allow", f"denied {elapsed}s into the outage"
    assert elapsed < DAY + TTL
    assert manager.current("corp").status is KeyStatus.STALE
    clock.advance(DAY + TTL - elapsed - 1)
    assert check(token_at(clock.now())) == "allow"
    # beyond max_stale there is nothing to verify with: 503, never an allow
    clock.advance(2)
    assert check(token_at(clock.now())) == KEYS_UNAVAILABLE


def test_the_outage_ends_and_keys_are_fresh_again(
    tmp_path: Path, server: JwksServer, clock: FixedClock, start: Started
) -> None:
    manager = start(make_policy(tmp_path, [corp_remote(server)]), clock)
    server.behaviour.status = 503
    clock.advance(TTL + 60)
    eventually(lambda: manager.report()["corp"].failures >= 1)
    assert manager.current("corp").status is KeyStatus.STALE
    server.behaviour.status = 200
    clock.advance(120)
    eventually(lambda: manager.current("corp").status is KeyStatus.FRESH)
    report = manager.report()["corp"]
    assert (report.failures, report.last_result, report.last_error) == (0, "ok", None)


def test_an_issuer_without_keys_gets_503_and_others_are_unaffected(
    tmp_path: Path,
    server: JwksServer,
    clock: FixedClock,
    start: Started,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.behaviour.status = 503
    with jwks_server(PARTNER.jwks()) as partner_server:
        remotes = [corp_remote(server), Remote("partner", PARTNER.iss, partner_server, "ES256")]
        policy = make_policy(tmp_path, remotes)
        manager = start(policy, clock)
        check = Checker(policy, manager, clock)
        assert check(token_at(clock.now())) == KEYS_UNAVAILABLE
        assert check(token_at(clock.now(), issuer=PARTNER)) == "allow"
        assert manager.current("corp").status is KeyStatus.FAILED
        assert manager.current("partner").status is KeyStatus.FRESH
        for _ in range(3):
            clock.advance(61)
            eventually(lambda: manager.report()["corp"].last_attempt_at == clock.now())
            assert check(token_at(clock.now())) == KEYS_UNAVAILABLE
    unavailable = [r for r in caplog.records if r.getMessage().startswith("keys unavailable")]
    assert len(unavailable) == 1


# unknown kid: single flight and cooldown ------------------------------------------


def test_refetch_flood_costs_the_burst_then_one_request_per_cooldown(
    tmp_path: Path, server: JwksServer, clock: FixedClock, start: Started
) -> None:
    manager = start(make_policy(tmp_path, [corp_remote(server)]), clock)
    server.behaviour.delay = 0.2
    before = server.count()
    threads = [threading.Thread(target=manager.refetch, args=("corp",)) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert server.count() - before == 1  # fifty checks, one fetch: single flight
    for _ in range(200):
        manager.refetch("corp")
    assert server.count() - before == REFETCH_BURST  # then the bucket is empty
    clock.advance(COOLDOWN - 0.5)
    manager.refetch("corp")
    assert server.count() - before == REFETCH_BURST
    clock.advance(0.5)  # one refetch earned back
    for _ in range(20):
        manager.refetch("corp")
    assert server.count() - before == REFETCH_BURST + 1


def test_requests_waiting_on_a_refetch_all_get_its_result(
    tmp_path: Path, server: JwksServer, clock: FixedClock, start: Started
) -> None:
    policy = make_policy(tmp_path, [corp_remote(server)])
    manager = start(policy, clock)
    check = Checker(policy, manager, clock)
    rotated = public_jwk(ROGUE_RSA, kid="corp-2", alg="RS256")
    server.behaviour.jwks = {"keys": [rotated]}
    server.behaviour.delay = 0.3
    tokens = [
        token_at(clock.now(), key=ROGUE_RSA, headers={"kid": "corp-2"}, jti=str(i))
        for i in range(20)
    ]
    with ThreadPoolExecutor(max_workers=20) as pool:
        assert set(pool.map(check, tokens)) == {"allow"}
    assert server.count() == 2


def test_refetch_waiters_are_capped_so_good_tokens_keep_a_thread(
    tmp_path: Path, server: JwksServer, clock: FixedClock, start: Started
) -> None:
    """With every check thread but one waiting on a slow refetch, further unknown-kid
    requests are answered at once (no key) instead of taking the last thread."""
    manager = start(make_policy(tmp_path, [corp_remote(server)]), clock, max_refetch_waiters=3)
    server.behaviour.delay = 1.0
    results: list[bool] = []
    lock = threading.Lock()

    def waiter() -> None:
        answer = manager.refetch("corp")
        with lock:
            results.append(answer is not None)

    waiting = [threading.Thread(target=waiter) for _ in range(3)]
    for thread in waiting:
        thread.start()
    deadline = time.monotonic() + 5
    while manager.refetch_waiters < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    assert manager.refetch("corp") is None  # the fourth does not wait
    assert time.monotonic() - started < 0.5
    for thread in waiting:
        thread.join()
    assert results == [True, True, True]
    assert server.count() == 2


def test_a_refetch_during_a_scheduled_refresh_shares_it(
    tmp_path: Path, server: JwksServer, clock: FixedClock, start: Started
) -> None:
    manager = start(make_policy(tmp_path, [corp_remote(server)]), clock)
    server.behaviour.delay = 0.3
    clock.advance(0.8 * TTL)
    eventually(lambda: server.count() == 2, what="the scheduled refresh to start")
    snapshot = manager.refetch("corp")
    assert snapshot is not None
    assert snapshot.fetched_at == clock.now()
    assert server.count() == 2


def test_a_thousand_random_kids_cost_the_burst_then_one_request_per_cooldown(
    tmp_path: Path, server: JwksServer, clock: FixedClock, start: Started
) -> None:
    """The documented bound: at most REFETCH_BURST + T / refetch_cooldown fetches in
    any T seconds, however many tokens with made-up kids arrive."""
    policy = make_policy(tmp_path, [corp_remote(server)])
    manager = start(policy, clock)
    check = Checker(policy, manager, clock)
    server.behaviour.delay = 0.1  # so that requests pile up behind each refetch
    rng = random.Random(7)

    def flood() -> list[str]:
        tokens = [
            token_at(clock.now(), key=ROGUE_RSA, headers={"kid": f"{rng.getrandbits(64):x}"})
            for _ in range(1000)
        ]
        with ThreadPoolExecutor(max_workers=32) as pool:
            return list(pool.map(check, tokens))

    before = server.count()
    assert set(flood()) == {KEY_UNKNOWN}
    assert server.count() - before == REFETCH_BURST
    clock.advance(COOLDOWN / 2)
    assert set(flood()) == {KEY_UNKNOWN}
    assert server.count() - before == REFETCH_BURST
    elapsed = COOLDOWN / 2
    for _ in range(4):
        clock.advance(COOLDOWN)
        elapsed += COOLDOWN
        assert set(flood()) == {KEY_UNKNOWN}
        assert server.count() - before == REFETCH_BURST + int(elapsed // COOLDOWN)
    assert check(token_at(clock.now())) == "allow"


def test_a_rotation_right_after_a_probe_is_let_through_at_once(
    tmp_path: Path, server: JwksServer, clock: FixedClock, start: Started
) -> None:
    """One token with a made-up kid, then the issuer rotates and signs with the new
    key within the same second: the new token is verified, not refused for 30 s."""
    policy = make_policy(tmp_path, [corp_remote(server)])
    manager = start(policy, clock)
    check = Checker(policy, manager, clock)
    assert check(token_at(clock.now(), key=ROGUE_RSA, headers={"kid": "probe"})) == KEY_UNKNOWN
    rotated = public_jwk(ROGUE_RSA, kid="corp-2", alg="RS256")
    server.behaviour.jwks = {"keys": [CORP.public_jwk(), rotated]}
    clock.advance(1)
    assert check(token_at(clock.now(), key=ROGUE_RSA, headers={"kid": "corp-2"})) == "allow"
    assert server.count() == 3  # start-up, the probe, the rotation


def test_a_rotation_during_a_flood_waits_at_most_one_cooldown(
    tmp_path: Path, server: JwksServer, clock: FixedClock, start: Started
) -> None:
    policy = make_policy(tmp_path, [corp_remote(server)])
    manager = start(policy, clock)
    check = Checker(policy, manager, clock)
    for i in range(50):  # the flood empties the bucket
        assert check(token_at(clock.now(), key=ROGUE_RSA, headers={"kid": f"x{i}"})) == KEY_UNKNOWN
    rotated = public_jwk(ROGUE_RSA, kid="corp-2", alg="RS256")
    server.behaviour.jwks = {"keys": [CORP.public_jwk(), rotated]}
    new_token = token_at(clock.now(), key=ROGUE_RSA, headers={"kid": "corp-2"})
    assert check(new_token) == KEY_UNKNOWN
    clock.advance(COOLDOWN)
    assert check(new_token) == "allow"


# stopping while checks run ------------------------------------------------------------


class SlowClose:
    """The real fetcher, whose close takes a while: the window in which a check still
    on the old policy may ask the stopping manager for a refetch."""

    def __init__(self, close_delay: float) -> None:
        self.real = HttpJwksFetcher()
        self.close_delay = close_delay
        self.closing = threading.Event()

    async def fetch(self, source: KeySource) -> FetchedKeys:
        return await self.real.fetch(source)

    async def aclose(self) -> None:
        self.closing.set()
        await asyncio.sleep(self.close_delay)
        await self.real.aclose()


def test_a_refetch_on_a_stopping_manager_is_answered_at_once(
    tmp_path: Path, server: JwksServer, clock: FixedClock
) -> None:
    policy = make_policy(tmp_path, [corp_remote(server, fetch_timeout="2s")])
    fetcher = SlowClose(close_delay=1.0)
    manager = KeyManager(fetcher, clock, tick=TICK)
    manager.start(policy.issuers)
    assert manager.wait_ready(10)
    check = Checker(policy, manager, clock)
    server.behaviour.delay = 1.5
    answers: list[tuple[str, float]] = []
    errors: list[BaseException] = []

    def old_runtime_check(i: int) -> None:
        token = token_at(clock.now(), key=ROGUE_RSA, headers={"kid": f"gone-{i}"})
        started = time.monotonic()
        try:
            answers.append((check(token), time.monotonic() - started))
        except BaseException as exc:  # pragma: no cover - the failure being tested
            errors.append(exc)

    stopper = threading.Thread(target=manager.stop)
    waiting = threading.Thread(target=old_runtime_check, args=(0,))
    waiting.start()  # waits on a slow refetch when the stop begins
    eventually(lambda: manager.refetch_waiters == 1, what="a check waiting on a refetch")
    stopper.start()
    assert fetcher.closing.wait(5)
    during = [threading.Thread(target=old_runtime_check, args=(i,)) for i in range(1, 6)]
    for thread in during:
        thread.start()
    for thread in (*during, waiting, stopper):
        thread.join(10)
    after = time.monotonic()
    old_runtime_check(99)
    assert time.monotonic() - after < 0.5
    assert errors == []
    assert [outcome for outcome, _ in answers] == [KEY_UNKNOWN] * 7
    assert max(seconds for _, seconds in answers) < 1.0  # not the 1.5 s fetch, nor 5 s
    # a good token of the old policy is still verified with the keys held
    assert check(token_at(clock.now())) == "allow"


# logging, events, backoff ------------------------------------------------------------


def test_each_state_change_is_logged_once_not_every_retry(
    tmp_path: Path,
    server: JwksServer,
    clock: FixedClock,
    start: Started,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ext_authz.keys")
    manager = start(make_policy(tmp_path, [corp_remote(server)]), clock)
    server.behaviour.status = 503
    clock.advance(0.8 * TTL - 61)
    for _ in range(10):
        clock.advance(61)
        eventually(lambda: manager.report()["corp"].last_attempt_at == clock.now())
    assert manager.report()["corp"].failures == 10
    server.behaviour.status = 200
    clock.advance(61)
    eventually(lambda: manager.current("corp").status is KeyStatus.FRESH)
    messages = [r.getMessage() for r in caplog.records if r.name == "ext_authz.keys"]
    assert messages.count("key fetch failed; retrying with backoff") == 1
    assert messages.count("keys stale; serving the last good keys") == 1
    assert messages.count("key fetch recovered") == 1
    assert messages.count("keys fresh") == 2  # at start-up, and after the outage


@pytest.mark.parametrize(
    ("failures", "low", "high"),
    [
        (1, 0.5, 1.0),
        (2, 1.0, 2.0),
        (3, 2.0, 4.0),
        (6, 16.0, 32.0),
        (7, 30.0, 60.0),
        (50, 30.0, 60.0),
    ],
)
def test_retry_delay_doubles_up_to_the_cap_with_jitter(
    failures: int, low: float, high: float
) -> None:
    rng = random.Random(1)
    delays = [retry_delay(failures, 1.0, 60.0, rng) for _ in range(200)]
    assert all(low <= d <= high for d in delays)
    assert len({round(d, 6) for d in delays}) > 100  # jittered, not one fixed value


def test_events_report_every_fetch_result(
    tmp_path: Path, server: JwksServer, clock: FixedClock, start: Started
) -> None:
    events: list[KeyEvent] = []
    manager = start(make_policy(tmp_path, [corp_remote(server)]), clock, on_event=events.append)
    server.behaviour.status = 502
    clock.advance(31)
    manager.refetch("corp")
    assert [(e.issuer, e.result, e.key_count, e.source, e.status) for e in events] == [
        ("corp", "ok", 1, KeyOrigin.NETWORK, KeyStatus.FRESH),
        ("corp", "http_status", 1, KeyOrigin.NETWORK, KeyStatus.FRESH),
    ]
    assert events[1].error == "HTTP 502 from key endpoint"
    assert not events[1].ok


def test_a_failing_observer_does_not_stop_key_fetching(
    tmp_path: Path, server: JwksServer, clock: FixedClock, start: Started
) -> None:
    def broken(event: KeyEvent) -> None:
        raise RuntimeError("observer bug")

    manager = start(make_policy(tmp_path, [corp_remote(server)]), clock, on_event=broken)
    assert manager.current("corp").status is KeyStatus.FRESH
    clock.advance(0.8 * TTL + 1)
    eventually(lambda: server.count() == 2)


def test_a_reload_inherits_keys_instead_of_starting_over(
    tmp_path: Path, server: JwksServer, clock: FixedClock, start: Started
) -> None:
    policy = make_policy(tmp_path, [corp_remote(server)])
    first = start(policy, clock)
    second = start(make_policy(tmp_path, [corp_remote(server)]), clock, inherit=first)
    first.stop()
    assert second.current("corp").status is KeyStatus.FRESH
    assert second.report()["corp"].next_refresh_at == pytest.approx(NOW + 0.8 * TTL)
    time.sleep(10 * TICK)
    assert server.count() == 1
    clock.advance(0.8 * TTL + 1)
    eventually(lambda: server.count() == 2, what="the inherited refresh schedule")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, 600.0),
        ("max-age=120", 120.0),
        ("public, max-age=7200, must-revalidate", 7200.0),
        ("max-age=5", 60.0),
        ("max-age=999999999", 86_400.0),
        ("no-store", 60.0),
        ("private", 600.0),
    ],
)
def test_ttl_from_cache_control(
    tmp_path: Path, server: JwksServer, header: str | None, expected: float
) -> None:
    issuer = make_policy(tmp_path, [corp_remote(server)]).issuers["corp"]
    assert ttl_from_cache_control(header, issuer.source.settings) == expected
