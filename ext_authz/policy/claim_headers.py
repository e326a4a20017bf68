"""Render claims into upstream header values, safely.

Strings go as they are, numbers and booleans as JSON, lists as comma-separated
values and objects as compact JSON. A value that cannot travel safely in an HTTP
header (control characters, over the size limit) is not injected: the header is
removed instead, and the reason is logged by name, never by value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ext_authz.policy.model import HeaderMapping
from ext_authz.tokens.claims import MISSING, lookup

MAX_HEADER_VALUE_BYTES = 8 * 1024


class Unrenderable(ValueError):
    pass


def render(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | float):
        text = json.dumps(value)
    elif isinstance(value, list):
        text = ", ".join(_render_item(item) for item in value)
    elif isinstance(value, dict):
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    elif value is None:
        raise Unrenderable("claim is null")
    else:
        raise Unrenderable("claim is not a JSON value")
    if any((ord(ch) < 0x20 and ch != "\t") or ord(ch) == 0x7F for ch in text):
        raise Unrenderable("claim holds control characters")
    if len(text.encode("utf-8")) > MAX_HEADER_VALUE_BYTES:
        raise Unrenderable("claim is over the header size limit")
    return text


def _render_item(item: Any) -> str:
    if isinstance(item, dict | list):
        return json.dumps(item, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    return render(item)


def claim_headers(
    mappings: tuple[HeaderMapping, ...],
    claims: Mapping[str, Any],
    identity_headers: frozenset[str],
) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...], tuple[str, ...]]:
    """(headers to set, headers to remove, notes on headers left out).

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
            to_set.append((mapping.header, render(value)))
        except Unrenderable as why:
            notes.append(f"{mapping.header}: {why}")
    set_names = {name for name, _ in to_set}
    remove = tuple(sorted(identity_headers - set_names))
    return tuple(to_set), remove, tuple(notes)
