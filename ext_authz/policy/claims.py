"""Reading a verified token's claims for the policy: a claim by its dotted path, the
scopes a token holds, and JSON equality (`json_equal`, from `ext_authz.strict_json`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ext_authz.policy.model import ClaimPath
from ext_authz.strict_json import json_equal


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()

__all__ = ["MISSING", "json_equal", "lookup", "scopes_of"]


def lookup(claims: Mapping[str, Any], path: ClaimPath) -> Any:
    """The claim at a dotted path (`org.tenant`), or MISSING.

    A claim whose own name contains dots (`https://example.com/roles`) is found
    when the whole path is tried as one name first.
    """
    if len(path) > 1:
        whole = ".".join(path)
        if whole in claims:
            return claims[whole]
    value: Any = claims
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return MISSING
        value = value[part]
    return value


def scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    """Scopes from `scope` (space-delimited, RFC 8693) and `scp` (list or string)."""
    found: set[str] = set()
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            found.update(value.split())
        elif isinstance(value, list):
            found.update(v for v in value if isinstance(v, str))
    return frozenset(found)
