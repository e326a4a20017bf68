"""The Compose stack, live: build the image, bring docker-compose.yml up and send the demo's
three requests through Envoy (allowed, 401, 403), tokens minted in the demo-issuer
container with the command docs/deployment.md gives; then the same through the
shared-keys profile, whose replicas must leave their keys in Redis.

Skipped, with the reason, where no Docker engine and Compose plugin answer. Each stack gets
a project name and host ports of its own, and is taken down (volumes too) afterwards.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from testcontainers.compose import DockerCompose

from tests.support.compose import (
    COMPOSE_FILE,
    HTTP_PORT_VARIABLE,
    ISSUER_SERVICE,
    MINT_SCRIPT,
    REPO,
    SHARED_KEYS_HTTP_PORT_VARIABLE,
    SHARED_KEYS_PROFILE,
    docker_unavailable_reason,
)
from tests.support.processes import free_port

pytestmark = pytest.mark.e2e

FIRST_ALLOW_TIMEOUT = 60.0
_LOG_TAIL = 6000


@pytest.fixture(scope="module")
def docker_engine() -> None:
    reason = docker_unavailable_reason()
    if reason is not None:
        pytest.skip(f"Compose stack not tested: {reason}")


def _tail(text: str) -> str:
    return text[-_LOG_TAIL:]


def _logs(compose: DockerCompose) -> str:
    try:
        stdout, stderr = compose.get_logs()
    except subprocess.CalledProcessError as exc:
        return f"(docker compose logs failed: {exc})"
    return _tail(stdout + stderr)


@contextmanager
def compose_stack(monkeypatch: pytest.MonkeyPatch, profiles: list[str]) -> Iterator[DockerCompose]:
    """``docker compose up --build --wait`` for ``profiles``; ``down --volumes`` afterwards."""
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", f"ext-authz-test-{secrets.token_hex(4)}")
    monkeypatch.setenv(HTTP_PORT_VARIABLE, str(free_port()))
    monkeypatch.setenv(SHARED_KEYS_HTTP_PORT_VARIABLE, str(free_port()))
    compose = DockerCompose(
        context=REPO,
        compose_file_name=COMPOSE_FILE.name,
        build=True,
        wait=True,
        profiles=profiles,
    )
    try:
        compose.start()
    except subprocess.CalledProcessError as exc:
        failure = exc.stderr.decode(errors="replace") if exc.stderr else str(exc)
        logs = _logs(compose)
        compose.stop()
        pytest.fail(f"docker compose up failed:\n{_tail(failure)}\n--- logs ---\n{logs}")
    try:
        yield compose
    finally:
        compose.stop()


def mint(compose: DockerCompose, query: str) -> str:
    """A corp token from the demo issuer, minted inside its container as the docs do it."""
    stdout, stderr, code = compose.exec_in_container(
        ["python", "-c", MINT_SCRIPT, query], service_name=ISSUER_SERVICE
    )
    assert code == 0, stderr
    token = stdout.strip()
    assert token.count(".") == 2, f"not a compact JWS: {stdout!r} {stderr!r}"
    return token


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def check_the_three_demo_requests(compose: DockerCompose, port: int) -> None:
    read = mint(compose, "sub=alice&scope=orders:read")
    profile = mint(compose, "sub=alice&scope=profile")
    url = f"http://127.0.0.1:{port}/api/orders"
    with httpx.Client(trust_env=False, timeout=10.0) as client:
        # The server's first key fetch may race the issuer's start; it retries on its own.
        deadline = time.monotonic() + FIRST_ALLOW_TIMEOUT
        while True:
            allowed = client.get(url, headers=_bearer(read))
            if allowed.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        assert allowed.status_code == 200, f"{allowed.status_code} {allowed.text}\n{_logs(compose)}"
        seen = allowed.json()["headers"]
        assert seen["x-user-id"] == "alice"
        assert seen["x-tenant-id"] == "acme"

        missing = client.get(url)
        assert missing.status_code == 401, missing.text
        assert missing.headers["www-authenticate"].startswith("Bearer ")

        forbidden = client.get(url, headers=_bearer(profile))
        assert forbidden.status_code == 403, forbidden.text
        assert 'error="insufficient_scope"' in forbidden.headers["www-authenticate"]


@pytest.mark.usefixtures("docker_engine")
def test_compose_stack_answers_the_demo_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    with compose_stack(monkeypatch, profiles=[]) as compose:
        check_the_three_demo_requests(compose, int(os.environ[HTTP_PORT_VARIABLE]))


@pytest.mark.usefixtures("docker_engine")
def test_shared_keys_profile_answers_and_keeps_keys_in_redis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with compose_stack(monkeypatch, profiles=[SHARED_KEYS_PROFILE]) as compose:
        check_the_three_demo_requests(compose, int(os.environ[SHARED_KEYS_HTTP_PORT_VARIABLE]))
        stdout, stderr, code = compose.exec_in_container(["redis-cli", "dbsize"], "redis")
        assert code == 0, stderr
        assert int(stdout.strip()) > 0, "the shared-keys replicas stored nothing in Redis"
