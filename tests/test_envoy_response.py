"""The gRPC edge: verdicts to CheckResponses, and CheckRequests to RequestViews."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf import json_format
from google.rpc import code_pb2

from ext_authz.decision import Allow, Deny
from ext_authz.envoy.request import MAX_HEADERS, BadCheckRequest, request_view
from ext_authz.envoy.response import check_response
from ext_authz.errors import DenialReason, ErrorClass

REALM = "orders"
DETAIL = "kid 'k-secret-7f3a' unknown; claim value 'hunter2'"
OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_PARAM = re.compile(r'(\w+)="([^"]*)"')


def headers_of(options: Iterable[Any]) -> dict[str, str]:
    result: dict[str, str] = {}
    for option in options:
        assert option.append_action == OVERWRITE
        assert option.header.key not in result
        result[option.header.key] = option.header.value
    return result


def challenge_params(value: str) -> dict[str, str]:
    assert value.startswith("Bearer ")
    params = dict(_PARAM.findall(value))
    assert len(params) == value.count("=")
    return params


@dataclass(frozen=True)
class DenyCase:
    reason: DenialReason
    status: int
    challenge: Mapping[str, str] | None  # the WWW-Authenticate parameters, None: no header
    error: str  # the body's "error"
    scopes: tuple[str, ...] = ()


DENY_CASES: dict[str, DenyCase] = {
    "no-token": DenyCase(DenialReason.TOKEN_MISSING, 401, {"realm": REALM}, "no_credentials"),
    "not-bearer": DenyCase(
        DenialReason.AUTHORIZATION_NOT_BEARER, 401, {"realm": REALM}, "no_credentials"
    ),
    "invalid-token-signature": DenyCase(
        DenialReason.SIGNATURE_INVALID,
        401,
        {
            "realm": REALM,
            "error": "invalid_token",
            "error_description": "the access token is not valid",
        },
        "invalid_token",
    ),
    "invalid-token-expired": DenyCase(
        DenialReason.TOKEN_EXPIRED,
        401,
        {
            "realm": REALM,
            "error": "invalid_token",
            "error_description": "the access token is not valid",
        },
        "invalid_token",
    ),
    "invalid-request-multiple": DenyCase(
        DenialReason.AUTHORIZATION_MULTIPLE,
        400,
        {
            "realm": REALM,
            "error": "invalid_request",
            "error_description": "the request's credentials are malformed",
        },
        "invalid_request",
    ),
    "insufficient-scope": DenyCase(
        DenialReason.SCOPE_MISSING,
        403,
        {
            "realm": REALM,
            "error": "insufficient_scope",
            "error_description": "the access token does not grant access to this resource",
            "scope": "orders:read orders:write",
        },
        "insufficient_scope",
        scopes=("orders:read", "orders:write"),
    ),
    "insufficient-claim-without-scopes": DenyCase(
        DenialReason.CLAIM_MISMATCH,
        403,
        {
            "realm": REALM,
            "error": "insufficient_scope",
            "error_description": "the access token does not grant access to this resource",
        },
        "insufficient_scope",
    ),
    "route-deny": DenyCase(DenialReason.ROUTE_DENY, 403, None, "forbidden"),
    "no-route": DenyCase(DenialReason.NO_ROUTE, 403, None, "forbidden"),
    "keys-unavailable": DenyCase(DenialReason.KEYS_UNAVAILABLE, 503, None, "unavailable"),
    "internal": DenyCase(DenialReason.INTERNAL_ERROR, 500, None, "internal"),
}


@pytest.mark.parametrize("case", [pytest.param(c, id=name) for name, c in DENY_CASES.items()])
def test_deny_response(case: DenyCase) -> None:
    deny = Deny(
        case.reason,
        REALM,
        route="read-orders",
        issuer="corp",
        subject="alice",
        scopes=case.scopes,
        detail=DETAIL,
    )
    response = check_response(deny, decision_id="d-1")
    assert response.WhichOneof("http_response") == "denied_response"
    denied = response.denied_response
    assert denied.status.code == case.status
    expected_grpc = code_pb2.UNAVAILABLE if case.status == 503 else code_pb2.PERMISSION_DENIED
    assert response.status.code == expected_grpc

    headers = headers_of(denied.headers)
    assert headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"
    if case.challenge is None:
        assert "www-authenticate" not in headers
    else:
        assert challenge_params(headers["www-authenticate"]) == case.challenge
        if "error" not in case.challenge:
            assert "error=" not in headers["www-authenticate"]

    body = json.loads(denied.body)
    assert body["error"] == case.error
    assert set(body) == {"error", "error_description"}
    assert case.reason.value not in denied.body

    metadata = json_format.MessageToDict(response.dynamic_metadata)
    assert metadata == {
        "route": "read-orders",
        "issuer": "corp",
        "subject": "alice",
        "decision_id": "d-1",
    }


@pytest.mark.parametrize("reason", [pytest.param(r, id=r.value) for r in DenialReason])
def test_no_denial_leaks_its_detail(reason: DenialReason) -> None:
    response = check_response(
        Deny(reason, REALM, route="r", scopes=("orders:read",), detail=DETAIL), decision_id="d"
    )
    wire = response.SerializeToString()
    assert b"k-secret-7f3a" not in wire
    assert b"hunter2" not in wire
    assert response.denied_response.status.code in {400, 401, 403, 500, 503}
    json.loads(response.denied_response.body)


@pytest.mark.parametrize(
    ("error_class", "status"),
    [
        pytest.param(ErrorClass.NO_CREDENTIALS, 401, id="no-credentials"),
        pytest.param(ErrorClass.INVALID_REQUEST, 400, id="invalid-request"),
        pytest.param(ErrorClass.INVALID_TOKEN, 401, id="invalid-token"),
        pytest.param(ErrorClass.INSUFFICIENT_SCOPE, 403, id="insufficient-scope"),
        pytest.param(ErrorClass.FORBIDDEN, 403, id="forbidden"),
        pytest.param(ErrorClass.UNAVAILABLE, 503, id="unavailable"),
        pytest.param(ErrorClass.INTERNAL, 500, id="internal"),
    ],
)
def test_every_reason_of_a_class_gets_its_status(error_class: ErrorClass, status: int) -> None:
    reasons = [r for r in DenialReason if r.error_class is error_class]
    assert reasons
    for reason in reasons:
        assert check_response(Deny(reason, REALM)).denied_response.status.code == status


def test_deny_without_route_or_identity_has_only_decision_id() -> None:
    response = check_response(Deny(DenialReason.NO_ROUTE, REALM), decision_id="d-9")
    assert json_format.MessageToDict(response.dynamic_metadata) == {"decision_id": "d-9"}


def test_allow_response() -> None:
    allow = Allow(
        route="read-orders",
        issuer="corp",
        subject="alice",
        headers=(("x-user-id", "alice"), ("x-roles", "admin, ops")),
        remove=("x-tenant-id", "x-user-email"),
        notes=("x-tenant-id: claim is null",),
    )
    response = check_response(allow, decision_id="d-2")
    assert response.status.code == code_pb2.OK
    assert response.WhichOneof("http_response") == "ok_response"
    ok = response.ok_response
    assert headers_of(ok.headers) == {"x-user-id": "alice", "x-roles": "admin, ops"}
    assert list(ok.headers_to_remove) == ["x-tenant-id", "x-user-email"]
    assert not ok.response_headers_to_add
    metadata = json_format.MessageToDict(response.dynamic_metadata)
    assert metadata == {
        "route": "read-orders",
        "issuer": "corp",
        "subject": "alice",
        "decision_id": "d-2",
    }
    assert b"claim is null" not in response.SerializeToString()


def test_anonymous_allow_response() -> None:
    response = check_response(Allow(route="health", remove=("x-user-id",)))
    assert response.status.code == code_pb2.OK
    assert len(response.ok_response.headers) == 0
    assert list(response.ok_response.headers_to_remove) == ["x-user-id"]
    assert json_format.MessageToDict(response.dynamic_metadata) == {"route": "health"}


# request_view -------------------------------------------------------------------


def check_request(
    *,
    method: str = "GET",
    path: str = "/api/orders",
    host: str = "api.example.com",
    headers: Mapping[str, str] | None = None,
    header_map: list[tuple[str, str | bytes]] | None = None,
    context_extensions: Mapping[str, str] | None = None,
    request_id: str = "",
) -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method = method
    http.path = path
    http.host = host
    http.id = request_id
    for name, value in (headers or {}).items():
        http.headers[name] = value
    for name, raw in header_map or []:
        entry = http.header_map.headers.add()
        entry.key = name
        if isinstance(raw, bytes):
            entry.raw_value = raw
        else:
            entry.value = raw
    for key, value in (context_extensions or {}).items():
        request.attributes.context_extensions[key] = value
    return request


def test_request_view_reads_http_attributes() -> None:
    view = request_view(
        check_request(
            method="post",
            path="/api/orders/7?debug=1&x=/admin#frag",
            host="API.Example.COM:8443",
            headers={"Authorization": "Bearer t", "X-Request-Id": "req-1", ":path": "/ignored"},
            context_extensions={"tier": "gold"},
        )
    )
    assert view.method == "POST"
    assert view.path == "/api/orders/7"
    assert view.host == "api.example.com:8443"
    assert view.headers["authorization"] == "Bearer t"
    assert "Authorization" not in view.headers
    assert view.request_id == "req-1"
    assert dict(view.context_extensions) == {"tier": "gold"}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("/a?b=c", "/a", id="query"),
        pytest.param("/a?", "/a", id="empty-query"),
        pytest.param("/a?b=c?d", "/a", id="two-question-marks"),
        pytest.param("/a#x", "/a", id="fragment"),
        pytest.param("/a/b", "/a/b", id="plain"),
        pytest.param("/", "/", id="root"),
    ],
)
def test_request_view_strips_query_string(path: str, expected: str) -> None:
    assert request_view(check_request(path=path)).path == expected


def test_request_view_header_map_joins_repeated_entries() -> None:
    view = request_view(
        check_request(
            header_map=[
                ("Authorization", "Bearer one"),
                ("x-forwarded-for", "10.0.0.2"),
                ("authorization", b"Bearer raw"),
                ("x-request-id", "req-2"),
            ]
        )
    )
    # only the headers the pipeline reads are kept; repeats are joined (two tokens)
    assert dict(view.headers) == {
        "authorization": "Bearer one,Bearer raw",
        "x-request-id": "req-2",
    }
    assert view.request_id == "req-2"


def test_request_view_header_map_wins_over_headers() -> None:
    view = request_view(
        check_request(
            headers={"authorization": "from-map-field"},
            header_map=[("authorization", "from-header-map")],
        )
    )
    assert dict(view.headers) == {"authorization": "from-header-map"}


@pytest.mark.parametrize(
    ("headers", "http_id", "expected"),
    [
        pytest.param({"x-request-id": "hdr"}, "attr", "hdr", id="header-first"),
        pytest.param({}, "attr", "attr", id="falls-back-to-attribute-id"),
        pytest.param({}, "", None, id="none"),
    ],
)
def test_request_view_request_id(
    headers: Mapping[str, str], http_id: str, expected: str | None
) -> None:
    assert request_view(check_request(headers=headers, request_id=http_id)).request_id == expected


def test_request_view_pseudo_headers_when_attributes_are_empty() -> None:
    view = request_view(
        check_request(
            method="",
            path="",
            host="",
            headers={":method": "delete", ":path": "/x?y", ":authority": "H.example"},
        )
    )
    assert (view.method, view.path, view.host) == ("DELETE", "/x", "h.example")


@pytest.mark.parametrize(
    "shape",
    [pytest.param("headers", id="headers"), pytest.param("header_map", id="header-map")],
)
def test_request_view_refuses_too_many_headers(shape: str) -> None:
    many = {f"x-h{i}": "v" for i in range(MAX_HEADERS + 1)}
    request = (
        check_request(headers=many)
        if shape == "headers"
        else check_request(header_map=list(many.items()))
    )
    with pytest.raises(BadCheckRequest):
        request_view(request)
    fewer = dict(list(many.items())[:MAX_HEADERS])
    assert request_view(check_request(headers=fewer)).headers == {}
