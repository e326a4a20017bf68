"""A denial as any HTTP client sees it: status, RFC 6750 challenge and JSON body.

Both front doors (gRPC for Envoy, plain HTTP for Envoy's http_service, nginx, Caddy
and Traefik) render a `Deny` through these functions, so a client gets the same
answer whichever door asked. Denials follow RFC 6750 section 3: a challenge without
an error code when no credentials were sent, `invalid_request` (400),
`invalid_token` (401) and `insufficient_scope` (403, with the scopes the route
needs). The body is generic; the precise reason stays in the decision log.
"""

from __future__ import annotations

import json

from ext_authz.decision import Deny
from ext_authz.errors import ErrorClass

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
