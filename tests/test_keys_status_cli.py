"""`ext-authz keys status`: what a server started now would have, issuer by issuer."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ext_authz.keys_status import EXIT_NO_KEYS, EXIT_OK, EXIT_POLICY, keys_status
from tests.support.doubles import FixedClock
from tests.support.jwks_server import JwksServer, jwks_server
from tests.support.keys import Remote, policy_text
from tests.support.redis_server import redis_server
from tests.support.tokens import CORP, NOW, PARTNER


@pytest.fixture
def server() -> Iterator[JwksServer]:
    with jwks_server(CORP.jwks()) as running:
        yield running


def write(tmp_path: Path, server: JwksServer, **keys: str) -> Path:
    text = policy_text([Remote("corp", CORP.iss, server)], keys)
    inline = (
        f"  ci:\n    issuer: {json.dumps(PARTNER.iss)}\n    jwks: {json.dumps(PARTNER.jwks())}\n"
    )
    text = text.replace("issuers:\n", "issuers:\n" + inline, 1)
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def status(config: Path, clock: FixedClock) -> tuple[int, str]:
    out = io.StringIO()
    code = keys_status(config, out=out, timeout=10, clock=clock, quiet_logs=False)
    return code, out.getvalue()


def test_fresh_keys_from_the_issuer(tmp_path: Path, server: JwksServer) -> None:
    code, text = status(write(tmp_path, server), FixedClock(NOW))
    assert code == EXIT_OK
    assert text == (
        "ci: static\n"
        "  keys:          partner-1\n"
        "corp: fresh\n"
        "  issuer:        https://login.corp.test/\n"
        "  keys:          corp-1\n"
        "  fetched:       2027-01-15T08:00:00Z (now), from network\n"
        "  fresh until:   2027-01-15T08:05:00Z (in 5m)\n"
        "  served until:  2027-01-16T08:05:00Z (in 1d5m)\n"
        "  last fetch:    ok (now)\n"
        "  next refresh:  in 4m\n"
        "  cache:         memory\n"
    )


def test_an_issuer_without_keys_exits_2(tmp_path: Path, server: JwksServer) -> None:
    server.behaviour.status = 503
    code, text = status(write(tmp_path, server), FixedClock(NOW))
    assert code == EXIT_NO_KEYS
    assert "corp: failed\n" in text
    assert "  keys:          (none)\n" in text
    assert "  last fetch:    http_status: HTTP 503 from key endpoint\n" in text
    assert text.endswith("\nno keys for: corp\n")


def test_stale_keys_from_the_cache_dir_during_an_outage(tmp_path: Path, server: JwksServer) -> None:
    config = write(tmp_path, server, cache_dir="cache")
    assert status(config, FixedClock(NOW))[0] == EXIT_OK
    server.behaviour.status = 500
    code, text = status(config, FixedClock(NOW + 7200))
    assert code == EXIT_OK
    assert "corp: stale\n" in text
    assert "  fetched:       2027-01-15T08:00:00Z (2h ago), from disk\n" in text
    assert "  last fetch:    http_status: HTTP 500 from key endpoint\n" in text
    assert f"  cache:         memory; on disk in {tmp_path / 'cache'}\n" in text


def test_keys_from_the_shared_cache(tmp_path: Path, server: JwksServer) -> None:
    with redis_server(tmp_path / "redis") as redis:
        config = write(tmp_path, server, cache=redis.url)
        assert status(config, FixedClock(NOW))[0] == EXIT_OK
        code, text = status(config, FixedClock(NOW + 60))
        assert server.count() == 1
    assert code == EXIT_OK
    assert "  fetched:       2027-01-15T08:00:00Z (1m ago), from redis\n" in text
    assert f"  cache:         {redis.url}\n" in text


def test_a_policy_that_does_not_load_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "policy.yaml"
    config.write_text("keys: { cache: 'http://not-redis' }\nroutes: []\n")
    assert keys_status(config, quiet_logs=False) == EXIT_POLICY
    assert "keys.cache: must be 'memory' or a redis:// or rediss:// URL" in capsys.readouterr().err
