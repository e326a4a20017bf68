"""JSON decoding that refuses what lenient parsers quietly accept.

A repeated member is an error (parsers disagree on which copy wins, which is how a
signed document can say two things), and so are `NaN` and `Infinity` (not JSON).
Values are compared as JSON compares them (`json_equal`), not as Python does.
"""

from __future__ import annotations

import json
from typing import Any


class DuplicateMember(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"duplicate member {name[:40]!r}")
        self.name = name


def unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An `object_pairs_hook` that raises `DuplicateMember` on a repeated name."""
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise DuplicateMember(name)
        result[name] = value
    return result


def no_constants(name: str) -> Any:
    """A `parse_constant` hook that refuses `NaN`, `Infinity` and `-Infinity`."""
    raise ValueError(f"{name} is not JSON")


class TooDeep(ValueError):
    def __init__(self) -> None:
        super().__init__("the JSON is nested too deeply")


# built once: `json.loads` with hooks builds a decoder on every call
_DECODER = json.JSONDecoder(object_pairs_hook=unique_members, parse_constant=no_constants)


def loads(text: str | bytes) -> Any:
    """`json.loads` with both refusals: raises `DuplicateMember` on a repeated member,
    `TooDeep` on nesting deeper than the interpreter's recursion limit, and `ValueError`
    on `NaN`/`Infinity` or text that is not JSON. Bytes must be UTF-8 (a leading BOM is
    skipped, as `json.loads` does); a text must not start with one."""
    if not isinstance(text, str):
        text = text.decode("utf-8-sig")  # UnicodeDecodeError is a ValueError
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise TooDeep from None


def json_equal(left: Any, right: Any) -> bool:
    """Equality as JSON sees it: `true` is not `1`, `1` is `1.0`, "1" is not 1."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left is right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(json_equal, left, right))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(json_equal(left[k], right[k]) for k in left)
    return type(left) is type(right) and bool(left == right)
