"""A CheckRequest over the header limit is a 400 denial, not an internal error."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ext_authz.authorizer import Authorizer
from ext_authz.envoy.request import MAX_HEADERS
from ext_authz.envoy.server import AuthorizationService
from ext_authz.policy.loader import compile_policy_text
from tests.support.doubles import FixedClock, StaticKeys
from tests.support.grpc_check import check_request, verdict
from tests.support.tokens import CORP, NOW, policy_yaml


@pytest.mark.parametrize("count", [MAX_HEADERS, MAX_HEADERS + 1])
def test_too_many_headers(tmp_path: Path, caplog: pytest.LogCaptureFixture, count: int) -> None:
    policy = compile_policy_text(policy_yaml(CORP), label="p", base_dir=tmp_path)
    service = AuthorizationService(Authorizer(lambda: policy, StaticKeys({}), FixedClock(NOW)))
    headers = {f"x-h{i}": "v" for i in range(count)}
    caplog.set_level(logging.INFO)
    result = verdict(service.Check(check_request("/healthz", **headers), None))
    if count > MAX_HEADERS:
        assert result.status == 400
        assert 'error="invalid_request"' in result.headers["www-authenticate"]
        assert "request_invalid" in {getattr(r, "reason", None) for r in caplog.records}
        assert not any(r.exc_info for r in caplog.records)
    else:
        assert result.status == 200
