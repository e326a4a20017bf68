"""JSON decoding that refuses what lenient parsers quietly accept.

A repeated member is an error (parsers disagree on which copy wins, which is how a
signed document can say two things), and so are `NaN` and `Infinity` (not JSON).
"""

from __future__ import annotations

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
