"""Verdicts as plain data. The gRPC edge turns them into CheckResponses."""

from __future__ import annotations

from dataclasses import dataclass

from ext_authz.errors import DenialReason


@dataclass(frozen=True, slots=True)
class Allow:
    route: str
    issuer: str | None = None
    subject: str | None = None
    headers: tuple[tuple[str, str], ...] = ()  # set on the upstream request, overwriting
    remove: tuple[str, ...] = ()  # removed from the upstream request
    notes: tuple[str, ...] = ()  # why a mapped header was left out, for the log
    dry_run: DenialReason | None = None  # the denial a dry-run route let through
    log_subject: bool = False  # the route lets the decision log name the subject


@dataclass(frozen=True, slots=True)
class Deny:
    reason: DenialReason
    realm: str
    route: str | None = None
    issuer: str | None = None
    subject: str | None = None
    scopes: tuple[str, ...] = ()  # scopes the route needs, for insufficient_scope
    detail: str = ""  # operator-facing; never token, key or claim values
    log_subject: bool = False


Decision = Allow | Deny


def outcome(decision: Decision) -> tuple[str, DenialReason | None]:
    """How a decision is reported: `allow`, `dry_run` (with the would-be reason) or
    `deny` (with its reason). Logs and metrics both use this."""
    if isinstance(decision, Allow):
        if decision.dry_run is None:
            return "allow", None
        return "dry_run", decision.dry_run
    return "deny", decision.reason
