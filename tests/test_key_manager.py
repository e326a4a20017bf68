"""The key manager against a real loopback JWKS server that the tests break."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ext_authz.clock import FixedClock
from ext_authz.keys.fetch import ttl_from_cache_control
from ext_authz.keys.manager import KeyManager
from ext_authz.keys.store import KeyStatus
from ext_authz.policy.loader import compile_policy_text
from ext_authz.policy.model import IssuerPolicy, Policy
from tests.support.jwks_server import JwksServer, jwks_server
from tests.support.tokens import CORP, NOW, ROGUE_RSA, public_jwk


def remote_policy(
    tmp_path: Path, server: JwksServer, *, discovery: bool = False, **keys: str
) -> Policy:
    settings = "".join(f"      {name}: {value}\n" for name, value in keys.items())
    if discovery:
        source = "    discovery: true\n"
        issuer = server.base_url
    else:
        source = f"    jwks_uri: {server.jwks_uri}\n"
        issuer = CORP.iss
    text = (
        "issuers:\n  corp:\n"
        f'    issuer: "{issuer}"\n{source}'
        "    algorithms: [RS256]\n"
        + ("    keys:\n" + settings if settings else "")
        + "routes:\n  - name: all\n    match: { path_prefix: / }\n    deny: true\n"
    )
    return compile_policy_text(text, label="p", base_dir=tmp_path)


@pytest.fixture
def server() -> Iterator[JwksServer]:
    with jwks_server(CORP.jwks()) as running:
        yield running


def start(policy: Policy, clock: FixedClock | None = None) -> KeyManager:
    manager = KeyManager(clock=clock or FixedClock(NOW))
    manager.start(policy.issuers)
    assert manager.wait_ready(10)
    return manager


def test_first_fetch_makes_keys_fresh(tmp_path: Path, server: JwksServer) -> None:
    manager = start(remote_policy(tmp_path, server))
    try:
        snapshot = manager.current("corp")
        assert snapshot.status is KeyStatus.FRESH
        assert snapshot.keys is not None
        assert snapshot.keys.kids() == [CORP.kid]
        assert server.count() == 1
    finally:
        manager.stop()


def test_discovery_finds_the_jwks(tmp_path: Path, server: JwksServer) -> None:
    manager = start(remote_policy(tmp_path, server, discovery=True))
    try:
        assert manager.current("corp").status is KeyStatus.FRESH
        assert server.count("/.well-known/openid-configuration") == 1
    finally:
        manager.stop()


def test_discovery_naming_another_issuer_is_refused(tmp_path: Path, server: JwksServer) -> None:
    server.behaviour.issuer = "https://someone-else.test"
    manager = start(remote_policy(tmp_path, server, discovery=True))
    try:
        snapshot = manager.current("corp")
        assert snapshot.keys is None
        assert snapshot.status is KeyStatus.FAILED
        assert server.count() == 0
    finally:
        manager.stop()


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, None),
        (200, b"<html>not json</html>"),
        (200, b'{"keys": "nope"}'),
        (200, b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'),
        (200, b"x" * 300_000),
    ],
    ids=["http_500", "not_json", "keys_not_array", "no_usable_key", "oversized"],
)
def test_failed_first_fetch_is_ready_without_keys(
    tmp_path: Path, server: JwksServer, status: int, body: bytes | None
) -> None:
    server.behaviour.status = status
    server.behaviour.body = body
    manager = start(remote_policy(tmp_path, server))
    try:
        snapshot = manager.current("corp")
        assert snapshot.keys is None
        assert snapshot.status is KeyStatus.FAILED
        assert snapshot.last_error
    finally:
        manager.stop()


def test_timeout_is_a_failed_fetch_not_a_hang(tmp_path: Path, server: JwksServer) -> None:
    server.behaviour.delay = 2.0
    manager = start(remote_policy(tmp_path, server, fetch_timeout="0.3s"))
    try:
        assert manager.current("corp").last_error == "timed out"
    finally:
        manager.stop()


def test_failed_refresh_keeps_the_last_good_keys(tmp_path: Path, server: JwksServer) -> None:
    clock = FixedClock(NOW)
    manager = start(remote_policy(tmp_path, server), clock)
    try:
        server.behaviour.status = 503
        clock.advance(31)
        snapshot = manager.refetch("corp")
        assert snapshot is not None
        assert snapshot.keys is not None
        assert snapshot.keys.kids() == [CORP.kid]
        assert snapshot.last_error == "HTTP 503 from key endpoint"
        # past its TTL the set is stale but still served, up to max_stale
        clock.advance(400)
        assert manager.current("corp").status is KeyStatus.STALE
        clock.advance(86_400)
        assert manager.current("corp").keys is None
    finally:
        manager.stop()


def test_rotation_new_kid_after_refetch_and_removed_key_gone(
    tmp_path: Path, server: JwksServer
) -> None:
    clock = FixedClock(NOW)
    manager = start(remote_policy(tmp_path, server), clock)
    try:
        rotated = public_jwk(ROGUE_RSA, kid="corp-2", alg="RS256")
        server.behaviour.jwks = {"keys": [rotated]}
        snapshot = manager.refetch("corp")
        assert snapshot is not None
        assert snapshot.keys is not None
        assert snapshot.keys.kids() == ["corp-2"]
    finally:
        manager.stop()


def test_refetch_flood_costs_one_request_per_cooldown(tmp_path: Path, server: JwksServer) -> None:
    clock = FixedClock(NOW)
    manager = start(remote_policy(tmp_path, server), clock)
    try:
        server.behaviour.delay = 0.2
        before = server.count()
        threads = [threading.Thread(target=manager.refetch, args=("corp",)) for _ in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for _ in range(200):
            manager.refetch("corp")
        assert server.count() - before == 1
        clock.advance(31)
        manager.refetch("corp")
        assert server.count() - before == 2
    finally:
        manager.stop()


def _issuer(tmp_path: Path, server: JwksServer) -> IssuerPolicy:
    return remote_policy(tmp_path, server).issuers["corp"]


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
    assert ttl_from_cache_control(header, _issuer(tmp_path, server)) == expected
