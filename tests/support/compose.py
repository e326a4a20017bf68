"""What the Compose tests share: the file, its services and the token-minting one-liner.

``MINT_SCRIPT`` is the program that docs/deployment.md tells users to run in the
demo-issuer container, and the one the live stack test runs there, so the documented
commands are the tested ones.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
DEPLOYMENT_DOC = REPO / "docs" / "deployment.md"
KUBERNETES_DIR = REPO / "deploy" / "kubernetes"

SHARED_KEYS_PROFILE = "shared-keys"
ISSUER_SERVICE = "demo-issuer"
HTTP_PORT_VARIABLE = "EXT_AUTHZ_HTTP_PORT"
SHARED_KEYS_HTTP_PORT_VARIABLE = "EXT_AUTHZ_SHARED_KEYS_HTTP_PORT"

MINT_SCRIPT = (
    "import json, sys, urllib.request as r; "
    'print(json.load(r.urlopen("http://127.0.0.1:9100/corp/token?" + sys.argv[1]))'
    '["access_token"])'
)


def load_compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def option(command: list[str], name: str) -> str:
    """The value that follows ``name`` in ``command``."""
    assert name in command, f"{name} missing from {command}"
    index = command.index(name)
    assert index + 1 < len(command), f"{name} has no value in {command}"
    return command[index + 1]


def host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host, int(port)


def docker_unavailable_reason(timeout: float = 30.0) -> str | None:
    """Why a Compose stack cannot run here, or None when a Docker engine and Compose answer."""
    docker = shutil.which("docker")
    if docker is None:
        return "no docker command on PATH"
    try:
        info = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"`docker info` did not answer within {timeout:g} s"
    if info.returncode != 0:
        detail = (info.stderr.strip().splitlines() or ["no output"])[-1]
        return f"no Docker engine answers (`docker info` exited {info.returncode}: {detail})"
    compose = subprocess.run(
        [docker, "compose", "version"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if compose.returncode != 0:
        return "the Docker Compose plugin is not installed (`docker compose version` failed)"
    return None
