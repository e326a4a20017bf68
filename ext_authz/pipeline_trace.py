"""What the pipeline found, phase by phase, when someone asks (`ext-authz explain`).

`Authorizer.check(request, trace=Trace())` fills a trace while it decides: each phase
it runs reports its step once, with what it checked, whether that held, and, for the
step that stopped the check, the denial reason. Nothing is re-computed here: the
steps are the pipeline's own results, so the trace cannot disagree with the verdict.
Without a trace the pipeline only tests `trace is not None` at each phase.

Conditions name what was checked (a claim name, an algorithm, a route), never a token,
a key or a claim value. (OpenTelemetry spans are another matter: `ext_authz.tracing`.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ext_authz.errors import DenialReason, Denied


class Phase:
    """The names of the pipeline's phases, in the order they run."""

    ROUTE = "route"
    ACCESS = "access"
    CREDENTIAL = "credential"
    CACHE = "cache"
    DECRYPTION = "decryption"
    NESTED = "nested token"
    TOKEN = "token"  # noqa: S105 (a phase name)
    ISSUER = "issuer"
    TOKEN_TYPE = "token type"  # noqa: S105 (a phase name)
    CLAIMS = "claims"
    SIGNATURE = "signature"
    REPLICATED = "replicated claims"
    ENCRYPTION = "encryption"
    RULES = "rules"
    HEADERS = "headers"
    DRY_RUN = "dry run"


@dataclass(frozen=True, slots=True)
class Step:
    phase: str
    held: bool
    condition: str = ""  # what was checked or found
    reason: DenialReason | None = None  # set on the step that decided a denial
    notes: tuple[str, ...] = ()  # details, one line each


@dataclass(slots=True)
class Trace:
    steps: list[Step] = field(default_factory=list)
    # the phase now running: a `Denied` raised inside it is that phase's failure
    phase: str = Phase.ROUTE

    def held(self, phase: str, condition: str = "", notes: tuple[str, ...] = ()) -> None:
        self.steps.append(Step(phase, True, condition, None, notes))

    def failed(self, denied: Denied, phase: str | None = None) -> None:
        self.steps.append(Step(phase or self.phase, False, denied.detail, denied.reason))
