"""`ext-authz explain`: the decision for one request, and why, step by step.

The verdict and every step come from one run of the real `Authorizer` with a trace
(`ext_authz.pipeline_trace`): this module only renders what the pipeline reported, so the
explanation cannot drift from the server's decision. The token itself is never
printed, and header values only with `show_values`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ext_authz.authorizer import Authorizer
from ext_authz.clock import Clock
from ext_authz.decision import Allow, Decision, Deny
from ext_authz.denial import challenge, http_status
from ext_authz.keys.store import KeyProvider
from ext_authz.pipeline_trace import Phase, Step, Trace
from ext_authz.policy.model import Access, Policy, Route
from ext_authz.request import RequestView


@dataclass
class Explanation:
    decision: Decision
    trace: Trace = field(default_factory=Trace)
    lines: list[str] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return isinstance(self.decision, Allow)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def explain(
    policy: Policy,
    keys: KeyProvider,
    request: RequestView,
    clock: Clock,
    *,
    show_values: bool = False,
) -> Explanation:
    trace = Trace()
    decision = Authorizer(lambda: policy, keys, clock).check(request, trace=trace)
    out = Explanation(decision, trace)
    say = out.lines.append
    say(f"request: {request.method} {request.path} host={request.host or '-'}")
    say(_verdict(decision))
    routes = {route.name: route for route in policy.routes}
    for step in trace.steps:
        if step.phase == Phase.ROUTE:
            _route(step, routes, say)
        elif (
            step.held
            and step.phase == Phase.HEADERS
            and show_values
            and isinstance(decision, Allow)
        ):
            for name, value in decision.headers:
                say(f"set header {name}: {value}")
            say_notes(step.notes, say, skip_prefix="set header ")
        elif step.held and step.phase == Phase.HEADERS:
            say_notes(step.notes, say)
        elif step.held:
            say(f"{step.phase}: {step.condition or 'ok'}")
            say_notes(step.notes, say)
        else:
            assert step.reason is not None
            detail = f" ({step.condition})" if step.condition else ""
            say(f"{step.phase}: FAILED {step.reason.value}{detail}")
    return out


def say_notes(notes: tuple[str, ...], say: Callable[[str], None], skip_prefix: str = "") -> None:
    for note in notes:
        if not (skip_prefix and note.startswith(skip_prefix)):
            say(note)


def _route(step: Step, routes: dict[str, Route], say: Callable[[str], None]) -> None:
    say("route:")
    for note in step.notes:
        say(f"  - {note}")
    if step.held:
        say(f"    -> {_access(routes[step.condition])}")
    else:
        say("  no route matches: deny")


def _verdict(decision: Decision) -> str:
    if isinstance(decision, Allow):
        if decision.dry_run is not None:
            return f"decision: allow (dry run; would deny: {decision.dry_run.value})"
        return f"decision: allow (route {decision.route})"
    line = f"decision: deny {http_status(decision)} {decision.reason.value}"
    www = challenge(decision)
    return line + (f"\n  www-authenticate: {www}" if www else "")


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


def parse_header_args(values: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw in values:
        name, sep, value = raw.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"header {raw[:40]!r} is not 'name: value'")
        headers[name.strip().lower()] = value.strip()
    return headers


__all__ = ["Deny", "Explanation", "explain", "parse_header_args"]
