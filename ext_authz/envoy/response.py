"""Decision → CheckResponse: the one place verdicts become protobuf.

Denials follow RFC 6750 section 3: a challenge without an error code when no
credentials were sent, `invalid_request` (400), `invalid_token` (401) and
`insufficient_scope` (403, with the scopes the route needs). The body is generic;
the precise reason stays in the decision log.
"""

from __future__ import annotations

import json

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2
from google.rpc import code_pb2, status_pb2

from ext_authz.decision import Allow, Decision, Deny
from ext_authz.errors import ErrorClass

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD

_STATUS = {
    ErrorClass.NO_CREDENTIALS: 401,
    ErrorClass.INVALID_REQUEST: 400,
    ErrorClass.INVALID_TOKEN: 401,
    ErrorClass.INSUFFICIENT_SCOPE: 403,
    ErrorClass.FORBIDDEN: 403,
    ErrorClass.UNAVAILABLE: 503,
    ErrorClass.INTERNAL: 500,
}
_DESCRIPTION = {
    ErrorClass.NO_CREDENTIALS: "authentication required",
    ErrorClass.INVALID_REQUEST: "the request's credentials are malformed",
    ErrorClass.INVALID_TOKEN: "the access token is not valid",
    ErrorClass.INSUFFICIENT_SCOPE: "the access token does not grant access to this resource",
    ErrorClass.FORBIDDEN: "access to this resource is denied",
    ErrorClass.UNAVAILABLE: "authorization is temporarily unavailable",
    ErrorClass.INTERNAL: "authorization failed",
}
_ERROR_CODE = {
    ErrorClass.INVALID_REQUEST: "invalid_request",
    ErrorClass.INVALID_TOKEN: "invalid_token",
    ErrorClass.INSUFFICIENT_SCOPE: "insufficient_scope",
}


def http_status(decision: Deny) -> int:
    return _STATUS[decision.reason.error_class]


def challenge(decision: Deny) -> str | None:
    """The WWW-Authenticate value, or None where a challenge does not apply."""
    kind = decision.reason.error_class
    if kind not in (*_ERROR_CODE, ErrorClass.NO_CREDENTIALS):
        return None
    parts = [f'Bearer realm="{decision.realm}"']
    code = _ERROR_CODE.get(kind)
    if code is not None:
        parts.append(f'error="{code}"')
        parts.append(f'error_description="{_DESCRIPTION[kind]}"')
    if kind is ErrorClass.INSUFFICIENT_SCOPE and decision.scopes:
        parts.append(f'scope="{" ".join(decision.scopes)}"')
    return ", ".join(parts)


def error_body(decision: Deny) -> str:
    kind = decision.reason.error_class
    body = {"error": _ERROR_CODE.get(kind, kind.value), "error_description": _DESCRIPTION[kind]}
    return json.dumps(body, separators=(",", ":"))


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
