"""Key sets shared by replicas through a real Redis (`keys.cache: redis://...`).

Each test starts its own `redis-server` on a free port with a temporary directory,
and real loopback JWKS servers. "Replicas" are key managers with their own Redis
connections, or real `python -m ext_authz serve` processes.
"""

from __future__ import annotations

import logging
import random
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from ext_authz.keys.bucket import REFETCH_BURST
from ext_authz.keys.cache import KEY_PREFIX, store_id
from ext_authz.keys.events import KeyEvent, KeyOrigin
from ext_authz.keys.manager import KeyManager
from ext_authz.keys.store import KeyStatus
from ext_authz.policy.model import Policy
from tests.support.doubles import FixedClock
from tests.support.jwks_server import JwksServer, jwks_server
from tests.support.keys import (
    KEY_UNKNOWN,
    Checker,
    Remote,
    eventually,
    make_policy,
    write_policy,
)
from tests.support.processes import free_port, running, wait_for_grpc_serving
from tests.support.redis_server import RedisServer, redis_server
from tests.support.tokens import CORP, NOW, ROGUE_RSA, mint, mint_live, public_jwk

TTL = 300.0


def token_at(now: float, **claims: Any) -> str:
    return mint(CORP, iat=int(now) - 60, nbf=int(now) - 60, exp=int(now) + 600, **claims)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def server() -> Iterator[JwksServer]:
    with jwks_server(CORP.jwks()) as running_server:
        yield running_server


def shared_policy(tmp_path: Path, server: JwksServer, cache: str, **keys: str) -> Policy:
    return make_policy(tmp_path, [Remote("corp", CORP.iss, server)], {"cache": cache, **keys})


class Replicas:
    def __init__(self) -> None:
        self.started: list[KeyManager] = []

    def start(
        self, policy: Policy, clock: FixedClock, events: list[KeyEvent] | None = None
    ) -> KeyManager:
        manager = KeyManager(
            clock=clock, tick=0.02, on_event=events.append if events is not None else None
        )
        self.started.append(manager)
        manager.start(policy.issuers)
        return manager

    def start_together(self, policy: Policy, clock: FixedClock, count: int) -> list[KeyManager]:
        managers = [
            KeyManager(clock=clock, tick=0.02) for _ in range(count)
        ]  # each with its own Redis connections
        self.started.extend(managers)
        threads = [threading.Thread(target=m.start, args=(policy.issuers,)) for m in managers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for manager in managers:
            assert manager.wait_attempted(10)
        return managers


@pytest.fixture
def replicas() -> Iterator[Replicas]:
    made = Replicas()
    yield made
    for manager in made.started:
        manager.stop()


def test_replicas_starting_together_fetch_once(
    tmp_path: Path, server: JwksServer, redis: RedisServer, replicas: Replicas
) -> None:
    server.behaviour.delay = 0.2  # the fetch is still running when the others look
    policy = shared_policy(tmp_path, server, redis.url)
    managers = replicas.start_together(policy, FixedClock(NOW), 4)
    assert server.count() == 1
    reports = [m.report()["corp"] for m in managers]
    assert all(r.status is KeyStatus.FRESH and r.kids == (CORP.kid,) for r in reports)
    assert sorted(r.source.value for r in reports if r.source) == [
        "network",
        "redis",
        "redis",
        "redis",
    ]
    assert all(r.cache == redis.url for r in reports)


def test_a_replica_started_later_takes_the_shared_keys(
    tmp_path: Path, server: JwksServer, redis: RedisServer, replicas: Replicas
) -> None:
    policy = shared_policy(tmp_path, server, redis.url)
    clock = FixedClock(NOW)
    assert replicas.start(policy, clock).wait_attempted(10)
    clock.advance(100)
    events: list[KeyEvent] = []
    later = replicas.start(policy, clock, events)
    assert later.wait_attempted(10)
    assert server.count() == 1
    assert [(e.result, e.source) for e in events] == [("ok", KeyOrigin.REDIS)]
    assert later.report()["corp"].fetched_at == NOW
    # its refresh is due when the shared key set's is
    assert later.report()["corp"].next_refresh_at == pytest.approx(NOW + 0.8 * TTL)


def test_the_scheduled_refresh_is_one_fetch_for_all_replicas(
    tmp_path: Path, server: JwksServer, redis: RedisServer, replicas: Replicas
) -> None:
    policy = shared_policy(tmp_path, server, redis.url)
    clock = FixedClock(NOW)
    managers = replicas.start_together(policy, clock, 3)
    server.behaviour.delay = 0.2
    clock.advance(0.8 * TTL + 1)
    for manager in managers:
        eventually(lambda m=manager: m.report()["corp"].fetched_at == clock.now())  # type: ignore[misc]
    assert server.count() == 2


def test_random_kids_on_every_replica_cost_one_fleet_bucket(
    tmp_path: Path, server: JwksServer, redis: RedisServer, replicas: Replicas
) -> None:
    """The refetch bucket lives in Redis, on the clock's time: two replicas flooded with
    made-up kids cost the issuer the burst, then one fetch per cooldown, for both."""
    cooldown = 5.0
    policy = shared_policy(tmp_path, server, redis.url, refetch_cooldown=f"{cooldown:.0f}s")
    clock = FixedClock(NOW)
    managers = replicas.start_together(policy, clock, 2)
    checks = [Checker(policy, m, clock) for m in managers]
    rng = random.Random(3)
    server.behaviour.delay = 0.05

    def flood(count: int) -> set[str]:
        tokens = [
            token_at(clock.now(), key=ROGUE_RSA, headers={"kid": f"{rng.getrandbits(64):x}"})
            for _ in range(count)
        ]
        with ThreadPoolExecutor(max_workers=16) as pool:
            return set(pool.map(lambda i: checks[i % 2](tokens[i]), range(len(tokens))))

    assert flood(300) == {KEY_UNKNOWN}
    # start-up, then at most the fleet's burst (each replica's own bucket holds as
    # many again: without the shared bucket this would be up to 1 + 2 * burst)
    first = server.count()
    assert 2 <= first <= 1 + REFETCH_BURST
    clock.advance(cooldown)  # each replica's bucket earns one; the fleet's earns one
    assert flood(300) == {KEY_UNKNOWN}
    assert first <= server.count() <= first + 1
    second = server.count()
    clock.advance(cooldown / 2)
    assert flood(100) == {KEY_UNKNOWN}
    assert server.count() == second
    with redis.client() as client:
        corp = store_id(policy.issuers["corp"].source)
        bucket = client.get(f"{KEY_PREFIX}:refetch-bucket:{corp}")
    assert bucket is not None
    assert float(bucket) > clock.now()  # the time the fleet's bucket is full again


def test_the_fetch_lock_is_redis_pys_lock_and_is_released(
    tmp_path: Path, server: JwksServer, redis: RedisServer, replicas: Replicas
) -> None:
    policy = shared_policy(tmp_path, server, redis.url)
    manager = replicas.start(policy, FixedClock(NOW))
    assert manager.wait_attempted(10)
    assert server.count() == 1
    with redis.client() as client:
        assert not client.exists(f"{KEY_PREFIX}:lock:{store_id(policy.issuers['corp'].source)}")


def test_a_new_kid_fetched_by_one_replica_serves_the_other(
    tmp_path: Path, server: JwksServer, redis: RedisServer, replicas: Replicas
) -> None:
    policy = shared_policy(tmp_path, server, redis.url)
    clock = FixedClock(NOW)
    first, second = replicas.start_together(policy, clock, 2)
    rotated = public_jwk(ROGUE_RSA, kid="corp-2", alg="RS256")
    server.behaviour.jwks = {"keys": [CORP.public_jwk(), rotated]}
    token = token_at(clock.now(), key=ROGUE_RSA, headers={"kid": "corp-2"})
    assert Checker(policy, first, clock)(token) == "allow"
    assert Checker(policy, second, clock)(token) == "allow"
    assert server.count() == 2  # the second replica took the first one's refetch


def test_redis_going_away_mid_run_denies_nothing(
    tmp_path: Path,
    server: JwksServer,
    redis: RedisServer,
    replicas: Replicas,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ext_authz.keys")
    policy = shared_policy(tmp_path, server, redis.url)
    clock = FixedClock(NOW)
    manager = replicas.start(policy, clock)
    assert manager.wait_attempted(10)
    check = Checker(policy, manager, clock)
    assert check(token_at(clock.now())) == "allow"
    redis.kill()
    assert check(token_at(clock.now())) == "allow"
    # the next refresh goes to the issuer directly
    clock.advance(0.8 * TTL + 1)
    eventually(lambda: manager.report()["corp"].fetched_at == clock.now())
    assert check(token_at(clock.now())) == "allow"
    report = manager.report()["corp"]
    assert (report.status, report.source) == (KeyStatus.FRESH, KeyOrigin.NETWORK)
    assert report.cache == f"memory (fallback: {redis.url} unreachable)"
    # a rotation is still picked up by the refetch on an unknown kid
    rotated = public_jwk(ROGUE_RSA, kid="corp-2", alg="RS256")
    server.behaviour.jwks = {"keys": [CORP.public_jwk(), rotated]}
    assert check(token_at(clock.now(), key=ROGUE_RSA, headers={"kid": "corp-2"})) == "allow"
    assert check(token_at(clock.now())) == "allow"
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("shared key cache unreachable; using the in-memory cache") == 1


def test_redis_unreachable_at_start_falls_back_to_memory(
    tmp_path: Path, server: JwksServer, replicas: Replicas
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    policy = shared_policy(tmp_path, server, url)
    clock = FixedClock(NOW)
    manager = replicas.start(policy, clock)
    assert manager.wait_attempted(10)
    report = manager.report()["corp"]
    assert (report.status, report.source) == (KeyStatus.FRESH, KeyOrigin.NETWORK)
    assert report.cache == f"memory (fallback: {url} unreachable)"
    assert Checker(policy, manager, clock)(token_at(clock.now())) == "allow"


def test_redis_coming_back_is_used_again(
    tmp_path: Path, server: JwksServer, replicas: Replicas, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ext_authz.keys")
    with redis_server(tmp_path / "redis") as redis:
        port = redis.port
        policy = shared_policy(tmp_path, server, redis.url)
        clock = FixedClock(NOW)
        manager = replicas.start(policy, clock)
        assert manager.wait_attempted(10)
        redis.kill()
        clock.advance(0.8 * TTL + 1)
        eventually(lambda: manager.report()["corp"].fetched_at == clock.now())
    # a new redis-server on the same port; the manager tries Redis again after 15 s
    with redis_server(tmp_path / "redis-2", port) as again:
        clock.advance(0.8 * TTL + 1)
        eventually(lambda: manager.report()["corp"].fetched_at == clock.now())
        eventually(lambda: manager.report()["corp"].cache == again.url)
        with again.client() as client:
            assert client.exists(f"{KEY_PREFIX}:jwks:{store_id(policy.issuers['corp'].source)}")
    assert "shared key cache reachable again" in [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize(
    "value",
    [
        "not json",
        '{"version": 1}',
        '{"version": 1, "issuer": "https://evil.test", "source": "x", "jwks": "{}",'
        ' "fetched_at": 1, "ttl": 1}',
    ],
    ids=["not_json", "incomplete", "another_issuer"],
)
def test_a_bad_shared_entry_is_ignored(
    tmp_path: Path, server: JwksServer, redis: RedisServer, replicas: Replicas, value: str
) -> None:
    policy = shared_policy(tmp_path, server, redis.url)
    with redis.client() as client:
        client.set(f"{KEY_PREFIX}:jwks:{store_id(policy.issuers['corp'].source)}", value)
    manager = replicas.start(policy, FixedClock(NOW))
    assert manager.wait_attempted(10)
    report = manager.report()["corp"]
    assert (report.status, report.source) == (KeyStatus.FRESH, KeyOrigin.NETWORK)
    assert server.count() == 1


# real server processes --------------------------------------------------------------


def _serve(policy: Path, port: int) -> list[str]:
    options = ["--config", str(policy), "--listen", f"127.0.0.1:{port}", "--grace", "1"]
    return [sys.executable, "-m", "ext_authz", "serve", *options]


def _allowed(port: int, token: str) -> bool:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.host = "GET", "/orders", "api.test"
    http.headers["authorization"] = f"Bearer {token}"
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        response = stub.Check(request, timeout=10)
    return bool(response.status.code == 0 and response.HasField("ok_response"))


def test_two_server_processes_sharing_redis_fetch_once(
    tmp_path: Path, server: JwksServer, redis: RedisServer
) -> None:
    server.behaviour.delay = 0.3
    policy = write_policy(
        tmp_path / "policy.yaml", [Remote("corp", CORP.iss, server)], {"cache": redis.url}
    )
    ports = [free_port(), free_port()]
    with (
        running(_serve(policy, ports[0]), name="replica-a") as a,
        running(_serve(policy, ports[1]), name="replica-b") as b,
    ):
        for port, child in zip(ports, (a, b), strict=True):
            assert wait_for_grpc_serving("127.0.0.1", port, 30, proc=child), child.stderr_text()
        assert server.count() == 1
        token = mint_live(CORP)
        assert _allowed(ports[0], token)
        assert _allowed(ports[1], token)
        # Redis goes away: nothing is denied
        redis.kill()
        assert _allowed(ports[0], token)
        assert _allowed(ports[1], mint_live(CORP))
        assert server.count() == 1
