"""`ext-authz explain`: the decision for one request, and why, step by step.

The verdict comes from the real `Authorizer`; the trace walks the same phases with
the same functions to say what each one found. The token itself is never printed,
and claim values only with `show_values`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ext_authz.authorizer import Authorizer
from ext_authz.clock import Clock
from ext_authz.decision import Allow, Decision, Deny
from ext_authz.denial import challenge, http_status
from ext_authz.errors import DenialReason, Denied
from ext_authz.keys.store import KeyProvider
from ext_authz.policy.claim_headers import claim_headers
from ext_authz.policy.model import Access, IssuerPolicy, Policy, Route, RouteMatch
from ext_authz.policy.routes import host_matches, prefix_matches
from ext_authz.policy.rules import claim_holds
from ext_authz.request import RequestView
from ext_authz.tokens.claims import (
    check_audience,
    check_expiry,
    check_issued_at,
    check_not_before,
    scopes_of,
)
from ext_authz.tokens.credentials import find_token
from ext_authz.tokens.decrypt import decrypt_token
from ext_authz.tokens.format import parse_signed, segment_count
from ext_authz.tokens.verify import select_key, verify_signature


@dataclass
class Explanation:
    decision: Decision
    lines: list[str] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return isinstance(self.decision, Allow)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


class _Stop(Exception):
    pass


def explain(
    policy: Policy,
    keys: KeyProvider,
    request: RequestView,
    clock: Clock,
    *,
    show_values: bool = False,
) -> Explanation:
    decision = Authorizer(lambda: policy, keys, clock).check(request)
    out = Explanation(decision)
    say = out.lines.append
    say(f"request: {request.method} {request.path} host={request.host or '-'}")
    say(_verdict(decision))
    route = _explain_routes(policy, request, say)
    if route is not None and route.access is Access.REQUIRE:
        with contextlib.suppress(_Stop):
            _explain_token(policy, keys, route, request, clock, say, show_values)
    if route is not None and route.dry_run:
        say(f"dry run: the route lets the request through (header {route.dry_run_header})")
    return out


def _verdict(decision: Decision) -> str:
    if isinstance(decision, Allow):
        if decision.dry_run is not None:
            return f"decision: allow (dry run; would deny: {decision.dry_run.value})"
        return f"decision: allow (route {decision.route})"
    line = f"decision: deny {http_status(decision)} {decision.reason.value}"
    www = challenge(decision)
    return line + (f"\n  www-authenticate: {www}" if www else "")


def _explain_routes(policy: Policy, request: RequestView, say: Any) -> Route | None:
    say("route:")
    for route in policy.routes:
        checks = _match_checks(route.match, request)
        failed = [text for text, ok in checks if not ok]
        if failed:
            say(f"  - {route.name}: no ({'; '.join(failed)})")
            continue
        held = "; ".join(text for text, _ in checks) or "matches everything"
        say(f"  - {route.name}: MATCH ({held}) -> {_access(route)}")
        return route
    say("  no route matches: deny")
    return None


def _access(route: Route) -> str:
    if route.access is Access.ANONYMOUS:
        return "allow anonymous"
    if route.access is Access.DENY:
        return "deny"
    requirement = route.requirement
    assert requirement is not None
    parts = [f"issuers {', '.join(sorted(requirement.issuers)) or '-'}"]
    if requirement.scopes:
        parts.append(f"scopes {' '.join(requirement.scopes)}")
    if requirement.claims:
        parts.append(f"claims {', '.join(rule.name for rule in requirement.claims)}")
    if requirement.encrypted:
        parts.append("encrypted token")
    return "require " + "; ".join(parts)


def _match_checks(match: RouteMatch, request: RequestView) -> list[tuple[str, bool]]:
    checks: list[tuple[str, bool]] = []
    if match.methods is not None:
        checks.append((f"method in {sorted(match.methods)}", request.method in match.methods))
    if match.path is not None:
        checks.append((f"path == {match.path}", request.path == match.path))
    if match.path_prefix is not None:
        held = prefix_matches(match.path_prefix, request.path)
        checks.append((f"path under {match.path_prefix}", held))
    if match.path_regex is not None:
        held = match.path_regex.fullmatch(request.path) is not None
        checks.append((f"path matches /{match.path_regex.pattern}/", held))
    if match.hosts is not None:
        checks.append((f"host in {list(match.hosts)}", host_matches(match.hosts, request.host)))
    for key, value in match.context_extensions:
        held = request.context_extensions.get(key) == value
        checks.append((f"context_extensions.{key} == {value}", held))
    return checks


def _fail(say: Any, step: str, denied: Denied) -> None:
    detail = f" ({denied.detail})" if denied.detail else ""
    say(f"{step}: FAILED {denied.reason.value}{detail}")
    raise _Stop


def _explain_token(
    policy: Policy,
    keys: KeyProvider,
    route: Route,
    request: RequestView,
    clock: Clock,
    say: Any,
    show_values: bool,
) -> None:
    try:
        token = find_token(request.headers, route.token_sources)
    except Denied as denied:
        _fail(say, "credential", denied)
    if token is None:
        _fail(say, "credential", Denied(DenialReason.TOKEN_MISSING, "no Authorization header"))
    assert token is not None
    say(f"credential: bearer token, {len(token)} bytes, {segment_count(token)} segments")
    encrypted = segment_count(token) == 5
    if encrypted:
        try:
            decrypted = decrypt_token(token, policy.decryption)
        except Denied as denied:
            _fail(say, "decryption", denied)
        header = decrypted.header
        say(
            f"decryption: ok (alg {header.get('alg')}, enc {header.get('enc')}, "
            f"key {decrypted.key.kid or '(no kid)'})"
        )
        try:
            inner = decrypted.nested_token()
        except Denied as denied:
            _fail(say, "nested token", denied)
        if inner is None:
            say("nested token: none, bare claims (see the decision for the outcome)")
            return
        token = inner
    try:
        signed = parse_signed(token)
    except Denied as denied:
        _fail(say, "token", denied)
    say(f"token: JWS, alg {signed.alg}, kid {signed.kid or '(none)'}")
    iss = signed.claims.get("iss")
    issuer = policy.issuers_by_iss.get(iss) if isinstance(iss, str) else None
    if issuer is None:
        reason = DenialReason.ISSUER_MISSING if iss is None else DenialReason.ISSUER_UNKNOWN
        _fail(say, "issuer", Denied(reason, "iss is not a configured issuer"))
    assert issuer is not None
    say(f"issuer: {issuer.name}")
    if signed.alg not in issuer.algorithms:
        allowed = ", ".join(sorted(issuer.algorithms))
        _fail(say, "algorithm", Denied(DenialReason.ALGORITHM_NOT_ALLOWED, f"allowed: {allowed}"))
    say(f"algorithm: {signed.alg} allowed")
    _explain_times(signed.claims, issuer, clock.now(), say)
    snapshot = keys.current(issuer.name)
    say(f"keys: {snapshot.status.value}, {len(snapshot.keys) if snapshot.keys else 0} held")
    if snapshot.keys is None:
        _fail(say, "key", Denied(DenialReason.KEYS_UNAVAILABLE))
    assert snapshot.keys is not None
    try:
        key = select_key(snapshot.keys, signed)
        say(f"key: kid {key.kid or '(none)'} ({key.kty}{' ' + key.curve if key.curve else ''})")
        verify_signature(signed, key)
    except Denied as denied:
        _fail(say, "key and signature", denied)
    say("signature: valid")
    if issuer.require_encryption and not encrypted:
        _fail(say, "encryption", Denied(DenialReason.ENCRYPTION_REQUIRED, "issuer requires JWE"))
    _explain_rules(policy, route, issuer, signed.claims, encrypted, say, show_values)


def _explain_times(claims: Mapping[str, Any], issuer: IssuerPolicy, now: float, say: Any) -> None:
    """The pipeline's own registered-claim checks, one at a time, with what they saw."""
    leeway = issuer.leeway
    try:
        try:
            exp = check_expiry(claims, now, leeway)
        except Denied as denied:
            stamp = claims.get("exp")
            if denied.reason is DenialReason.TOKEN_EXPIRED and isinstance(stamp, int | float):
                raise Denied(denied.reason, f"expired {int(now - stamp)}s ago") from None
            raise
        say(f"exp: ok (expires in {int(exp - now)}s, leeway {int(leeway)}s)")
        try:
            nbf = check_not_before(claims, now, leeway)
        except Denied as denied:
            stamp = claims.get("nbf")
            if denied.reason is DenialReason.TOKEN_NOT_YET_VALID and isinstance(stamp, int | float):
                raise Denied(denied.reason, f"valid in {int(stamp - now)}s") from None
            raise
        say("nbf: ok" if nbf is not None else "nbf: absent")
        say("iat: ok" if check_issued_at(claims, now, leeway) is not None else "iat: absent")
        if issuer.audiences is None:
            say("aud: not checked for this issuer")
        else:
            check_audience(claims, issuer.audiences)
            say(f"aud: ok (accepted: {', '.join(sorted(issuer.audiences))})")
    except Denied as denied:
        _fail(say, "claims", denied)


def _explain_rules(
    policy: Policy,
    route: Route,
    issuer: IssuerPolicy,
    claims: Mapping[str, Any],
    encrypted: bool,
    say: Any,
    show_values: bool,
) -> None:
    requirement = route.requirement
    assert requirement is not None
    if issuer.name not in requirement.issuers:
        _fail(say, "route issuers", Denied(DenialReason.ISSUER_NOT_ALLOWED, issuer.name))
    say(f"route issuers: {issuer.name} accepted")
    if requirement.encrypted and not encrypted:
        _fail(say, "encryption", Denied(DenialReason.ENCRYPTION_REQUIRED, "route requires JWE"))
    held = scopes_of(claims)
    if requirement.scopes:
        missing = [s for s in requirement.scopes if s not in held]
        say(
            f"scopes: needs {' '.join(requirement.scopes)}; "
            + (f"missing {' '.join(missing)}" if missing else "all present")
        )
        if missing:
            raise _Stop
    for rule in requirement.claims:
        ok = claim_holds(rule, claims)
        say(f"claim {rule.name}: {'ok' if ok else 'does not match'}")
        if not ok:
            raise _Stop
    try:
        plan = claim_headers(route.headers, claims, policy.identity_headers, route.unsafe_values)
    except Exception as exc:
        say(f"headers: {exc}")
        raise _Stop from None
    for name, value in plan.headers:
        say(f"set header {name}: {value if show_values else f'<{len(value)} chars>'}")
    for note in plan.notes:
        say(f"left out: {note}")
    if plan.remove:
        say(f"remove headers: {', '.join(plan.remove)}")


def parse_header_args(values: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw in values:
        name, sep, value = raw.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"header {raw[:40]!r} is not 'name: value'")
        headers[name.strip().lower()] = value.strip()
    return headers


__all__ = ["Deny", "Explanation", "explain", "parse_header_args"]
