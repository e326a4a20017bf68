"""Render claims into upstream header values, safely.

Encodings (per header, `encoding:` in the policy):
- `plain` (default): strings as they are, numbers and booleans as JSON, arrays as
  items joined by ", " (an item that is empty, holds ',', '"' or '\\', or has
  whitespace at either end is an RFC 9110 quoted-string), objects as compact JSON;
- `json`: the claim as compact JSON, always (strings get their quotes);
- `base64url`: the UTF-8 of the `json` form, base64url without padding.

A value is unsafe to send as-is when it holds control characters (CR, LF, NUL, …),
non-ASCII characters, whitespace at either end, or is over the size limit. What then
happens is the route's `unsafe_values` choice: `drop` the header (default; it is
removed upstream), `deny` the request, or `encode` it (RFC 3986 percent-encoding of its
UTF-8; with `encode` every value holding a '%' is encoded too, so upstream can always
percent-decode).
Notes name the header and the problem, never the value.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import quote

from ext_authz.policy.claims import MISSING, lookup
from ext_authz.policy.model import HeaderMapping, UnsafeValues

MAX_HEADER_VALUE_BYTES = 8 * 1024
INVALID_UNICODE = "claim is not valid Unicode"
_TOO_LONG = "claim is over the header size limit"


class Unrenderable(ValueError):
    """The claim has no header form (null, not a JSON value) or is unsafe as-is."""


class UnsafeClaim(Unrenderable):
    """Raised when a route denies requests whose mapped claims are unsafe."""

    def __init__(self, header: str, why: str) -> None:
        super().__init__(f"{header}: {why}")
        self.header = header


class HeaderPlan(NamedTuple):
    headers: tuple[tuple[str, str], ...]
    remove: tuple[str, ...]
    notes: tuple[str, ...]


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def format_value(value: Any, encoding: str = "plain") -> str:
    """The header text of a claim, before any safety check."""
    try:
        return _format(value, encoding)
    except RecursionError:
        raise Unrenderable("claim is nested too deeply") from None
    except UnicodeEncodeError:
        raise Unrenderable(INVALID_UNICODE) from None


def _format(value: Any, encoding: str) -> str:
    if value is None:
        raise Unrenderable("claim is null")
    if not _is_json(value):
        raise Unrenderable("claim is not a JSON value")
    if encoding == "json":
        return _compact(value)
    if encoding == "base64url":
        return base64.urlsafe_b64encode(_compact(value).encode()).rstrip(b"=").decode()
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, list):
        if any(item is None for item in value):
            raise Unrenderable("claim is null")
        return ", ".join(
            _list_item(_compact(item) if isinstance(item, dict | list) else _format(item, "plain"))
            for item in value
        )
    return _compact(value)


_NEEDS_QUOTES = re.compile(r'[,"\\]|^\s|\s\Z|^\Z')


def _list_item(text: str) -> str:
    """An item as it is, or as an RFC 9110 quoted-string when it could be misread:
    empty, holding ',', '"' or '\\', or with whitespace at either end."""
    if _NEEDS_QUOTES.search(text) is None:
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _is_json(value: Any) -> bool:
    if value is None or isinstance(value, str | bool | int | float):
        return True
    if isinstance(value, list):
        return all(_is_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return False


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def unsafe_reason(text: str) -> str | None:
    if _CONTROL.search(text) is not None:
        return "claim holds control characters"
    if text[:1].isspace() or text[-1:].isspace():
        # header parsers trim it: "admin " would arrive as "admin"
        return "claim has leading or trailing whitespace"
    if text.isascii():
        return None if len(text) <= MAX_HEADER_VALUE_BYTES else _TOO_LONG
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate, as cut-off UTF-16 text leaves
        return INVALID_UNICODE
    if size > MAX_HEADER_VALUE_BYTES:
        return _TOO_LONG
    return "claim holds non-ASCII characters"


def render(value: Any, encoding: str = "plain") -> str:
    """The header value, or `Unrenderable` when it cannot be sent as-is."""
    text = format_value(value, encoding)
    why = unsafe_reason(text)
    if why is not None:
        raise Unrenderable(why)
    return text


def _encode(text: str) -> tuple[str | None, str]:
    """The percent-encoded value, or None and why it cannot be sent."""
    try:
        encoded = quote(text, safe="")
    except UnicodeEncodeError:
        return None, INVALID_UNICODE
    if len(encoded) > MAX_HEADER_VALUE_BYTES:
        return None, "claim is over the header size limit once encoded"
    return encoded, ""


def claim_headers(
    mappings: tuple[HeaderMapping, ...],
    claims: Mapping[str, Any],
    identity_headers: frozenset[str],
    unsafe: UnsafeValues = UnsafeValues.DROP,
) -> HeaderPlan:
    """Headers to set, headers to remove, and notes on headers left out.

    Every identity header of the policy that is not set is removed, so that a client
    can never pass its own value through under one of those names.
    """
    to_set: list[tuple[str, str]] = []
    notes: list[str] = []
    for mapping in mappings:
        value = lookup(claims, mapping.path)
        if value is MISSING:
            continue
        try:
            text = format_value(value, mapping.encoding)
        except Unrenderable as why:
            notes.append(f"{mapping.header}: {why}")
            continue
        why_unsafe = unsafe_reason(text)
        if (
            unsafe is UnsafeValues.ENCODE
            and why_unsafe != INVALID_UNICODE
            and (why_unsafe or "%" in text)
        ):
            encoded, why_not = _encode(text)
            if encoded is not None:
                to_set.append((mapping.header, encoded))
                continue
            why_unsafe = why_not
        if why_unsafe is None:
            to_set.append((mapping.header, text))
        elif unsafe is UnsafeValues.DENY:
            raise UnsafeClaim(mapping.header, why_unsafe)
        else:
            notes.append(f"{mapping.header}: {why_unsafe}")
    set_names = {name for name, _ in to_set}
    remove = tuple(sorted(identity_headers - set_names))
    return HeaderPlan(tuple(to_set), remove, tuple(notes))
