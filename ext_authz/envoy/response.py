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


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + _varint(len(payload)) + payload


def response_bytes(decision: Decision) -> bytes:
    """The serialised `CheckResponse` for `decision`, without a decision id: the part
    an answer memo may keep."""
    return bytes(check_response(decision, None).SerializeToString())


def with_decision_id(response: bytes, decision_id: str) -> bytes:
    """`response` plus `dynamic_metadata.decision_id`.

    Protobuf merges a message field that occurs twice and appends map entries, so a
    second `dynamic_metadata` (field 4) holding one `fields` entry (a `Struct` map
    entry: key 1, `Value` 2 with `string_value` 3) adds the id to the metadata already
    serialised: the same message `check_response(decision, decision_id)` builds."""
    raw = decision_id.encode("utf-8")
    size = len(raw)
    if size <= _SHORT_ID:  # every length below fits one varint byte: the usual case
        return b"".join((response, _SHORT_HEAD[size], raw))
    value = _field(0x1A, raw)  # Value.string_value
    entry = _field(0x0A, b"decision_id") + _field(0x12, value)  # map entry: key, value
    return response + _field(0x22, _field(0x0A, entry))  # CheckResponse.dynamic_metadata


_SHORT_ID = 100  # the largest id whose enclosing lengths all stay below 128


def _short_head(size: int) -> bytes:
    """Everything `with_decision_id` puts before an id of `size` bytes (< 128 - 27)."""
    value = 2 + size  # tag and length of Value.string_value, then the id
    entry = 13 + 2 + value  # key field ("decision_id"), then tag and length of the Value
    fields = 2 + entry  # Struct.fields: tag and length of the map entry
    head = bytes((0x22, fields, 0x0A, entry, 0x0A, 11)) + b"decision_id"
    return head + bytes((0x12, value, 0x1A, size))


_SHORT_HEAD = tuple(_short_head(size) for size in range(_SHORT_ID + 1))


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
