"""Route path regexes on RE2, as Envoy's: matching time is linear in the path
whatever the pattern, so no request can stall the checks with a crafted path.

RE2 has no backreferences or look-around, and writes Python's `\\Z` as `\\z`; a
pattern it cannot compile is refused when the policy loads.
"""

from __future__ import annotations

from typing import Protocol

import re2  # type: ignore[import-untyped]


class PathRegex(Protocol):
    @property
    def pattern(self) -> str: ...

    def fullmatch(self, text: str) -> object | None: ...


def compile_path_regex(pattern: str, *, case_sensitive: bool = True) -> PathRegex:
    """The compiled pattern, or `ValueError` with RE2's reason."""
    options = re2.Options()
    options.log_errors = False
    options.case_sensitive = case_sensitive
    try:
        compiled: PathRegex = re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else b"rejected"
        text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        raise ValueError(f"not a valid regular expression (RE2 syntax): {text}") from None
    return compiled
