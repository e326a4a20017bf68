"""The `keys:` section: the shared cache URL and the disk cache directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from ext_authz.keys.redis_url import RedisTarget, display_cache_url, parse_cache_url
from ext_authz.policy.loader import PolicyError, compile_policy_text

ISSUER = """\
issuers:
  corp:
    issuer: https://login.example.com/
    jwks_uri: https://login.example.com/jwks.json
"""
ROUTES = """\
routes:
  - name: all
    match: { path_prefix: / }
    deny: true
"""


@pytest.mark.parametrize(
    ("value", "target"),
    [
        ("memory", None),
        ("redis://127.0.0.1", RedisTarget("127.0.0.1", 6379, 0, False)),
        ("redis://cache.internal:6380/3", RedisTarget("cache.internal", 6380, 3, False)),
        ("rediss://:s3cret@cache.internal/1", RedisTarget("cache.internal", 6379, 1, True)),
        ("redis://[::1]:7000/0", RedisTarget("::1", 7000, 0, False)),
    ],
)
def test_accepted_cache_settings(tmp_path: Path, value: str, target: RedisTarget | None) -> None:
    policy = compile_policy_text(
        ISSUER + f"keys:\n  cache: {value!r}\n" + ROUTES, label="p", base_dir=tmp_path
    )
    assert policy.issuers["corp"].source.settings.cache == value
    parsed = parse_cache_url(value)
    if target is None:
        assert parsed is None
    else:
        assert parsed is not None
        assert (parsed.host, parsed.port, parsed.db, parsed.tls) == (
            target.host,
            target.port,
            target.db,
            target.tls,
        )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("http://cache:6379", "must be 'memory' or a redis:// or rediss:// URL"),
        ("Memory", "must be 'memory' or a redis:// or rediss:// URL"),
        ("redis://", "the redis URL needs a host"),
        ("redis://cache/zero", "the redis URL path must be a database number"),
        ("redis://cache?db=1", "the redis URL takes no query or fragment"),
        ("redis://cache:99999", "is not a valid URL"),
    ],
)
def test_refused_cache_settings(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        compile_policy_text(
            ISSUER + f"keys:\n  cache: {value!r}\n" + ROUTES, label="policy.yaml", base_dir=tmp_path
        )
    (problem,) = caught.value.problems
    assert (problem.line, problem.field) == (6, "keys.cache")
    assert message in problem.message


def test_the_cache_is_set_once_for_all_issuers_not_per_issuer(tmp_path: Path) -> None:
    issuer_keys = "    keys: { cache: 'redis://cache' }\n"
    with pytest.raises(PolicyError) as caught:
        compile_policy_text(ISSUER + issuer_keys + ROUTES, label="policy.yaml", base_dir=tmp_path)
    (problem,) = caught.value.problems
    assert (problem.field, problem.message) == ("issuers.corp.keys.cache", "unknown field")


def test_cache_dir_is_relative_to_the_policy_file(tmp_path: Path) -> None:
    relative = compile_policy_text(
        ISSUER + "keys:\n  cache_dir: state/keys\n" + ROUTES, label="p", base_dir=tmp_path
    )
    settings = relative.issuers["corp"].source.settings
    assert settings.cache_dir == (tmp_path / "state" / "keys").resolve()
    absolute = compile_policy_text(
        ISSUER + "keys:\n  cache_dir: /var/cache/ext-authz\n" + ROUTES, label="p", base_dir=tmp_path
    )
    assert absolute.issuers["corp"].source.settings.cache_dir == Path("/var/cache/ext-authz")
    default = compile_policy_text(ISSUER + ROUTES, label="p", base_dir=tmp_path)
    assert default.issuers["corp"].source.settings.cache_dir is None
    assert default.issuers["corp"].source.settings.cache == "memory"


def test_per_issuer_overrides_inherit_the_rest(tmp_path: Path) -> None:
    text = (
        ISSUER
        + "    keys: { refetch_cooldown: 2s, max_stale: 1h }\n"
        + "keys:\n  default_ttl: 5m\n  max_stale: 2d\n  cache: redis://cache\n"
        + ROUTES
    )
    settings = (
        compile_policy_text(text, label="p", base_dir=tmp_path).issuers["corp"].source.settings
    )
    assert (settings.refetch_cooldown, settings.max_stale, settings.default_ttl) == (
        2.0,
        3600.0,
        300.0,
    )
    assert settings.cache == "redis://cache"


def test_credentials_never_shown() -> None:
    value = "rediss://app:pa%40ss@cache.internal:6380/2"
    target = parse_cache_url(value)
    assert target is not None
    assert (target.username, target.password) == ("app", "pa@ss")
    assert display_cache_url(value) == "rediss://cache.internal:6380/2"
    assert "pa@ss" not in repr(target)
