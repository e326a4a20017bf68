"""CheckRequest → RequestView: the one place the pipeline's input is read from protobuf."""

from __future__ import annotations

from typing import Any

from ext_authz.request import RequestView

MAX_HEADERS = 200


class BadCheckRequest(ValueError):
    pass


def request_view(check_request: Any) -> RequestView:
    """Read the HTTP attributes Envoy sends. Envoy lower-cases header names; `:path`
    carries the query string, which route matching does not look at."""
    attributes = check_request.attributes
    http = attributes.request.http
    headers: dict[str, str] = {}
    if len(http.header_map.headers):
        if len(http.header_map.headers) > MAX_HEADERS:
            raise BadCheckRequest("too many headers")
        for entry in http.header_map.headers:
            name = entry.key.lower()
            value = entry.value or entry.raw_value.decode("utf-8", "replace")
            headers[name] = f"{headers[name]},{value}" if name in headers else value
    else:
        if len(http.headers) > MAX_HEADERS:
            raise BadCheckRequest("too many headers")
        headers = {name.lower(): value for name, value in http.headers.items()}
    path = http.path or headers.get(":path", "")
    path = path.split("?", 1)[0].split("#", 1)[0]
    method = http.method or headers.get(":method", "")
    host = (http.host or headers.get(":authority", "")).lower()
    request_id = headers.get("x-request-id") or http.id or None
    return RequestView(
        method=method.upper(),
        path=path,
        host=host,
        headers=headers,
        context_extensions=dict(attributes.context_extensions),
        request_id=request_id,
    )
