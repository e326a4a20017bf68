"""Last good keys on disk (`keys.cache_dir`): written atomically and privately, loaded
at start-up so that a restart during an issuer outage still verifies tokens."""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ext_authz.keys.cache import CachedJwks, store_id
from ext_authz.keys.disk import DiskCacheError, DiskKeyCache
from ext_authz.keys.events import KeyEvent, KeyOrigin
from ext_authz.keys.manager import KeyManager
from ext_authz.keys.store import KeyStatus
from ext_authz.policy.model import Policy
from tests.support.doubles import FixedClock
from tests.support.jwks_server import JwksServer, jwks_server
from tests.support.keys import KEYS_UNAVAILABLE, Checker, Remote, eventually, make_policy
from tests.support.tokens import CORP, NOW, mint

TTL = 300.0
DAY = 86_400.0


def token_at(now: float, **claims: Any) -> str:
    return mint(CORP, iat=int(now) - 60, nbf=int(now) - 60, exp=int(now) + 600, **claims)


@pytest.fixture
def server() -> Iterator[JwksServer]:
    with jwks_server(CORP.jwks()) as running:
        yield running


def disk_policy(tmp_path: Path, server: JwksServer, **keys: str) -> Policy:
    settings = {"cache_dir": "key-cache", **keys}
    return make_policy(tmp_path, [Remote("corp", CORP.iss, server)], settings)


class Managers:
    def __init__(self) -> None:
        self.started: list[KeyManager] = []

    def start(
        self,
        policy: Policy,
        clock: FixedClock,
        events: list[KeyEvent] | None = None,
        wait: bool = True,
    ) -> KeyManager:
        manager = KeyManager(
            clock=clock, tick=0.02, on_event=events.append if events is not None else None
        )
        self.started.append(manager)
        manager.start(policy.issuers)
        if wait:
            assert manager.wait_attempted(10)
        return manager


@pytest.fixture
def managers() -> Iterator[Managers]:
    made = Managers()
    yield made
    for manager in made.started:
        manager.stop()


def cache_file(tmp_path: Path, policy: Policy) -> Path:
    return tmp_path / "key-cache" / f"jwks-{store_id(policy.issuers['corp'].source)}.json"


def test_the_last_good_key_set_is_written_atomically_and_privately(
    tmp_path: Path, server: JwksServer, managers: Managers
) -> None:
    policy = disk_policy(tmp_path, server)
    managers.start(policy, FixedClock(NOW))
    path = cache_file(tmp_path, policy)
    eventually(path.exists, what="the key set written on a worker thread")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left
    entry = CachedJwks.loads(path.read_text())
    assert (entry.issuer, entry.source, entry.fetched_at, entry.ttl) == (
        CORP.iss,
        server.jwks_uri,
        NOW,
        TTL,
    )
    assert json.loads(entry.jwks) == CORP.jwks()


def test_a_restart_during_an_outage_still_verifies(
    tmp_path: Path, server: JwksServer, managers: Managers
) -> None:
    policy = disk_policy(tmp_path, server, fetch_timeout="0.5s")
    first = managers.start(policy, FixedClock(NOW))
    first.stop()
    # the issuer goes down; twelve hours later the server restarts
    server.behaviour.delay = 3.0
    clock = FixedClock(NOW + 12 * 3600)
    events: list[KeyEvent] = []
    manager = managers.start(policy, clock, events, wait=False)
    assert manager.wait_ready(0.4)  # ready from disk, before the fetch has timed out
    assert manager.current("corp").status is KeyStatus.STALE
    check = Checker(policy, manager, clock)
    assert check(token_at(clock.now())) == "allow"
    assert manager.wait_attempted(5)
    report = manager.report()["corp"]
    assert (report.source, report.last_result, report.fetched_at) == (
        KeyOrigin.DISK,
        "timeout",
        NOW,
    )
    assert [(e.result, e.source) for e in events] == [
        ("ok", KeyOrigin.DISK),
        ("timeout", KeyOrigin.NETWORK),
    ]
    assert check(token_at(clock.now())) == "allow"
    # the stored fetch time still bounds how long the keys are served
    clock.advance(DAY + TTL - 12 * 3600 - 1)
    assert check(token_at(clock.now())) == "allow"
    clock.advance(2)
    assert check(token_at(clock.now())) == KEYS_UNAVAILABLE


def test_keys_on_disk_older_than_max_stale_are_not_used(
    tmp_path: Path, server: JwksServer, managers: Managers
) -> None:
    policy = disk_policy(tmp_path, server)
    managers.start(policy, FixedClock(NOW)).stop()
    server.behaviour.status = 503
    clock = FixedClock(NOW + TTL + DAY + 1)
    manager = managers.start(policy, clock)
    assert manager.current("corp").status is KeyStatus.FAILED
    assert Checker(policy, manager, clock)(token_at(clock.now())) == KEYS_UNAVAILABLE


def test_a_fresh_fetch_replaces_the_keys_from_disk(
    tmp_path: Path, server: JwksServer, managers: Managers
) -> None:
    policy = disk_policy(tmp_path, server)
    managers.start(policy, FixedClock(NOW)).stop()
    clock = FixedClock(NOW + 3600)
    manager = managers.start(policy, clock)
    report = manager.report()["corp"]
    assert (report.source, report.status, report.fetched_at) == (
        KeyOrigin.NETWORK,
        KeyStatus.FRESH,
        NOW + 3600,
    )
    eventually(
        lambda: CachedJwks.loads(cache_file(tmp_path, policy).read_text()).fetched_at == NOW + 3600,
        what="the new key set on disk",
    )


@pytest.mark.parametrize("damage", ["writable_by_others", "not_json", "another_issuer", "no_keys"])
def test_a_damaged_or_foreign_file_is_ignored(
    tmp_path: Path,
    server: JwksServer,
    managers: Managers,
    damage: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = disk_policy(tmp_path, server)
    managers.start(policy, FixedClock(NOW)).stop()
    path = cache_file(tmp_path, policy)
    entry = CachedJwks.loads(path.read_text())
    if damage == "writable_by_others":
        path.chmod(0o666)
    elif damage == "not_json":
        path.write_text("{")
    elif damage == "another_issuer":
        path.write_text(CachedJwks("https://evil.test", *_rest(entry)).dumps())
    else:
        path.write_text(
            CachedJwks(entry.issuer, entry.source, '{"keys":[]}', entry.fetched_at, TTL).dumps()
        )
    server.behaviour.status = 503
    caplog.set_level(logging.INFO, logger="ext_authz.keys")
    manager = managers.start(policy, FixedClock(NOW + 60))
    assert manager.current("corp").key_set is None
    ignored = ("cached key set ignored", "key set on disk not used: too old or of another issuer")
    assert any(r.getMessage() in ignored for r in caplog.records)


def _rest(entry: CachedJwks) -> tuple[str, str, float, float]:
    return entry.source, entry.jwks, entry.fetched_at, entry.ttl


def test_a_cache_dir_that_cannot_be_written_does_not_stop_serving(
    tmp_path: Path, server: JwksServer, managers: Managers, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "key-cache").write_text("a file where the directory should be")
    policy = disk_policy(tmp_path, server)
    clock = FixedClock(NOW)
    manager = managers.start(policy, clock)
    assert manager.current("corp").status is KeyStatus.FRESH
    clock.advance(0.8 * TTL + 1)
    eventually(lambda: server.count() == 2)
    eventually(lambda: manager.report()["corp"].fetched_at == clock.now())
    warnings = [r for r in caplog.records if r.getMessage() == "cannot write the key cache file"]
    assert len(warnings) == 1


def test_disk_cache_refuses_a_symlink(tmp_path: Path) -> None:
    disk = DiskKeyCache(tmp_path)
    entry = CachedJwks(CORP.iss, "https://x.test/jwks", '{"keys":[]}', NOW, TTL)
    target = disk.save("real", entry)
    os.symlink(target, disk.path("link"))
    assert disk.load("real") == entry
    with pytest.raises(DiskCacheError):
        disk.load("link")
    assert disk.load("absent") is None
