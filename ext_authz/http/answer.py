"""Decision → HTTP/1.1 response bytes: the one place the HTTP door renders verdicts.

Allow is ``200`` with each identity header set; on ``/envoy`` it also lists, in
``x-envoy-auth-headers-to-remove``, every identity header it does not set (Envoy's
HTTP ext_authz client removes those from the upstream request). Deny carries the
status, ``WWW-Authenticate`` challenge and JSON body of `ext_authz.denial`, the same
as the gRPC door.
"""

from __future__ import annotations

from ext_authz.decision import Allow, Decision
from ext_authz.denial import challenge, error_body, http_status

REMOVE_HEADER = "x-envoy-auth-headers-to-remove"
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def response_bytes(
    status: int,
    headers: list[tuple[str, str]],
    body: bytes = b"",
    *,
    close: bool = False,
) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    lines.append(f"content-length: {len(body)}")
    if close:
        lines.append("connection: close")
    head = "\r\n".join(lines) + "\r\n\r\n"
    return head.encode("utf-8") + body  # a realm may hold non-ASCII text


def decision_answer(decision: Decision, *, envoy: bool) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body of the answer to `decision`."""
    if isinstance(decision, Allow):
        headers = list(decision.headers)
        if envoy and decision.remove:
            headers.append((REMOVE_HEADER, ",".join(decision.remove)))
        return 200, headers, b""
    headers = [("content-type", "application/json"), ("cache-control", "no-store")]
    www_authenticate = challenge(decision)
    if www_authenticate is not None:
        headers.append(("www-authenticate", www_authenticate))
    return http_status(decision), headers, error_body(decision).encode("utf-8")


def decision_response(decision: Decision, *, envoy: bool, close: bool = False) -> bytes:
    status, headers, body = decision_answer(decision, envoy=envoy)
    return response_bytes(status, headers, body, close=close)


def plain_response(status: int, message: str, *, close: bool = False) -> bytes:
    """A response to something that is not a check (unknown path, malformed HTTP)."""
    body = f'{{"error":"{message}"}}'.encode()
    headers = [("content-type", "application/json"), ("cache-control", "no-store")]
    return response_bytes(status, headers, body, close=close)
