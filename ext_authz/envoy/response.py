"""Decision → CheckResponse: the one place verdicts become protobuf.

Status, challenge and body of a denial come from `ext_authz.denial`, shared with the
HTTP door.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2
from google.rpc import code_pb2, status_pb2

from ext_authz.decision import Allow, Decision
from ext_authz.denial import challenge, error_body, http_status

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def _header(name: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=name, value=value), append_action=_OVERWRITE
    )


def _metadata(
    route: str | None, issuer: str | None, subject: str | None, decision_id: str | None
) -> struct_pb2.Struct:
    metadata = struct_pb2.Struct()
    for name, value in (
        ("route", route),
        ("issuer", issuer),
        ("subject", subject),
        ("decision_id", decision_id),
    ):
        if value is not None:
            metadata[name] = value
    return metadata


def check_response(
    decision: Decision, decision_id: str | None = None
) -> external_auth_pb2.CheckResponse:
    if isinstance(decision, Allow):
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK),
            ok_response=external_auth_pb2.OkHttpResponse(
                headers=[_header(name, value) for name, value in decision.headers],
                headers_to_remove=list(decision.remove),
            ),
            dynamic_metadata=_metadata(
                decision.route, decision.issuer, decision.subject, decision_id
            ),
        )
    headers = [_header("content-type", "application/json"), _header("cache-control", "no-store")]
    www_authenticate = challenge(decision)
    if www_authenticate is not None:
        headers.append(_header("www-authenticate", www_authenticate))
    status = http_status(decision)
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(
            code=code_pb2.UNAVAILABLE if status == 503 else code_pb2.PERMISSION_DENIED
        ),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=status),
            headers=headers,
            body=error_body(decision),
        ),
        dynamic_metadata=_metadata(decision.route, decision.issuer, decision.subject, decision_id),
    )
