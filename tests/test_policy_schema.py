"""The policy's JSON Schema: checked in, current, and in agreement with the loader."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from ext_authz.policy.schema import policy_json_schema

ROOT = Path(__file__).resolve().parents[1]
CHECKED_IN = ROOT / "config" / "policy.schema.json"
BRIEF = ROOT.parent / "shared" / "BRIEF.md"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(CHECKED_IN.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_checked_in_schema_is_current() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "ext_authz", "schema"], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(printed) == policy_json_schema()
    assert json.loads(CHECKED_IN.read_text(encoding="utf-8")) == policy_json_schema(), (
        "regenerate with: python -m ext_authz schema > config/policy.schema.json"
    )


@pytest.mark.parametrize("path", ["config/policy.example.yaml", "config/policy.shared-keys.yaml"])
def test_shipped_policies_validate(validator: jsonschema.Draft202012Validator, path: str) -> None:
    document = yaml.safe_load((ROOT / path).read_text(encoding="utf-8"))
    assert not list(validator.iter_errors(document))


def test_brief_example_validates(validator: jsonschema.Draft202012Validator) -> None:
    if not BRIEF.exists():
        pytest.skip(f"the product brief is not at {BRIEF}")
    text = BRIEF.read_text(encoding="utf-8")
    block = text.split("```yaml", 1)[1].split("```", 1)[0]
    assert not list(validator.iter_errors(yaml.safe_load(block)))


BROKEN: dict[str, tuple[str, Any]] = {
    "typo_in_match": ("routes.0.match", {"pth": "/x"}),
    "duration_word": ("issuers.corp.leeway", "soon"),
    "hmac_algorithm": ("issuers.corp.algorithms", ["HS256"]),
    "allow_not_anonymous": ("routes.0.allow", "everyone"),
    "deny_string": ("routes.0.deny", "true"),
}


@pytest.mark.parametrize(("where", "value"), list(BROKEN.values()), ids=list(BROKEN))
def test_schema_refuses_what_the_loader_refuses(
    validator: jsonschema.Draft202012Validator, where: str, value: Any
) -> None:
    document = {
        "issuers": {"corp": {"issuer": "https://a.test", "jwks_uri": "https://a.test/k"}},
        "routes": [{"name": "r", "match": {"path": "/"}, "deny": True}],
    }
    assert not list(validator.iter_errors(document))
    target: Any = document
    *parents, last = where.split(".")
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    target[int(last) if last.isdigit() else last] = value
    assert list(validator.iter_errors(document))


def test_durations_with_units_are_accepted(validator: jsonschema.Draft202012Validator) -> None:
    document = {
        "keys": {"default_ttl": "10m", "fetch_timeout": "250ms", "max_stale": 86400},
        "routes": [{"name": "r", "match": {"path": "/"}, "allow": "anonymous"}],
    }
    assert not list(validator.iter_errors(document))
