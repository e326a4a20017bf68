"""Client request ids and the text log: a client's `x-request-id` becomes the decision
id only when it is a short token (both doors call `decision_id`), and a text log line
quotes any value that could end its field, so no id can forge `result=allow`."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ext_authz.decision import Allow, Deny
from ext_authz.decision_log import MAX_REQUEST_ID, decision_id, log_decision
from ext_authz.errors import DenialReason
from ext_authz.log import TextFormatter


@pytest.mark.parametrize(
    "request_id", ["abc-123", "0f1e2d3c-aaaa-bbbb-cccc-123456789abc", "a" * MAX_REQUEST_ID]
)
def test_a_short_token_is_kept(request_id: str) -> None:
    assert decision_id(request_id) == request_id


@pytest.mark.parametrize(
    "request_id",
    [
        None,
        "",
        "a" * (MAX_REQUEST_ID + 1),
        "a" * 40_000,
        "x result=allow",
        'x"y',
        "x\ny",
        "x\x00",
        "caf\u00e9",
        "a,b",
    ],
)
def test_anything_else_is_replaced_by_a_random_id(request_id: str | None) -> None:
    replaced = decision_id(request_id)
    assert replaced != request_id
    assert len(replaced) == 32
    assert replaced.isalnum()
    assert decision_id(request_id) != replaced  # fresh each time


def test_text_log_quotes_values_that_could_forge_a_field(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ext_authz.decision")
    log_decision(Deny(DenialReason.TOKEN_MISSING, "r", route="x result=allow"), "id-1", 0.001)
    log_decision(Allow("plain"), "id-2", 0.001)
    deny_line, allow_line = (TextFormatter().format(r) for r in caplog.records)
    assert 'route="x result=allow"' in deny_line
    assert deny_line.count("result=") == 2  # the quoted route and the real field
    assert "result=deny" in deny_line
    assert "route=plain" in allow_line and "decision_id=id-2" in allow_line


def test_the_grpc_door_takes_the_same_rule() -> None:
    from envoy.service.auth.v3 import external_auth_pb2

    from ext_authz.authorizer import Authorizer
    from ext_authz.envoy.server import AuthorizationService
    from ext_authz.policy.loader import compile_policy_text
    from tests.support.doubles import StaticKeys
    from tests.support.tokens import CORP, policy_yaml

    policy = compile_policy_text(policy_yaml(CORP), label="p.yaml", base_dir=Path())
    seen: list[str] = []
    service = AuthorizationService(
        Authorizer(lambda: policy, StaticKeys({})),
        observers=[lambda _decision, logged, _seconds: seen.append(logged)],
    )
    for request_id in ("req-7", "x result=allow " + "z" * 40_000):
        check = external_auth_pb2.CheckRequest()
        http = check.attributes.request.http
        http.method, http.path, http.host = "GET", "/healthz", "a.test"
        http.headers["x-request-id"] = request_id
        answer = service.Check(check, None)
        assert answer.dynamic_metadata["decision_id"] == seen[-1]
    assert seen[0] == "req-7"
    assert len(seen[1]) == 32 and " " not in seen[1]
