"""A route's requirements, checked against a verified identity."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ext_authz.errors import DenialReason, Denied
from ext_authz.policy.claims import MISSING, json_equal, lookup, scopes_of
from ext_authz.policy.model import ClaimRule, Requirement


def enforce(
    requirement: Requirement, issuer_name: str, claims: Mapping[str, Any], encrypted: bool = False
) -> None:
    if issuer_name not in requirement.issuers:
        raise Denied(DenialReason.ISSUER_NOT_ALLOWED, f"issuer '{issuer_name}' not on this route")
    if requirement.encrypted and not encrypted:
        raise Denied(DenialReason.ENCRYPTION_REQUIRED, "route requires an encrypted token")
    if requirement.scopes:
        held = scopes_of(claims)
        missing = [s for s in requirement.scopes if s not in held]
        if missing:
            raise Denied(DenialReason.SCOPE_MISSING, "missing scopes: " + " ".join(missing))
    for rule in requirement.claims:
        if not claim_holds(rule, claims):
            raise Denied(DenialReason.CLAIM_MISMATCH, f"claim '{rule.name}' does not match")


def claim_holds(rule: ClaimRule, claims: Mapping[str, Any]) -> bool:
    """The claim equals an allowed value; a list claim holds when it contains one
    (so `groups: {any_of: [admins]}` works on a `groups` array)."""
    value = lookup(claims, rule.path)
    if value is MISSING:
        return False
    if any(json_equal(value, allowed) for allowed in rule.allowed):
        return True
    if isinstance(value, list):
        return any(
            json_equal(item, allowed)
            for item in value
            for allowed in rule.allowed
            if not isinstance(allowed, list)
        )
    return False
