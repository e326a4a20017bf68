"""CheckRequest → RequestView: the one place the pipeline's input is read from protobuf."""

from __future__ import annotations

from typing import Any

from ext_authz.request import RequestView

MAX_HEADERS = 200
# What the pipeline reads from the request headers (Envoy sends names lower-cased).
_USED = ("authorization", "x-request-id", ":path", ":method", ":authority")


class BadCheckRequest(ValueError):
    pass


def request_view(check_request: Any, extra: frozenset[str] = frozenset()) -> RequestView:
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
            if name not in _USED and name not in extra:
                continue
            value = entry.value or entry.raw_value.decode("utf-8", "replace")
            headers[name] = f"{headers[name]},{value}" if name in headers else value
    else:
        source = http.headers
        if len(source) > MAX_HEADERS:
            raise BadCheckRequest("too many headers")
        # Only the headers the pipeline reads are copied out of the protobuf map.
        for name in (*_USED, *extra):
            value = source.get(name)
            if value is not None:
                headers[name] = value
        if "authorization" not in headers:  # a sender that did not lower-case names
            headers = {}
            for name, value in source.items():
                low = name.lower()
                if low in _USED or low in extra:
                    headers[low] = f"{headers[low]},{value}" if low in headers else value
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
