"""The decision pipeline: route → credential → token → claims → policy → verdict.

Pure and synchronous: it reads the current policy snapshot and key snapshots and
returns an `Allow` or a `Deny`. The only wait is the rate-limited refetch when a
token names a key the issuer's snapshot lacks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ext_authz.clock import Clock, SystemClock
from ext_authz.decision import Allow, Decision, Deny
from ext_authz.errors import DenialReason, Denied
from ext_authz.keys.jwks import VerificationKey
from ext_authz.keys.store import KeyProvider
from ext_authz.pipeline_trace import Phase, Step, Trace
from ext_authz.policy.claim_headers import UnsafeClaim, claim_headers
from ext_authz.policy.model import Access, IssuerPolicy, Policy, Requirement, Route
from ext_authz.policy.routes import match_conditions, request_target, select_route
from ext_authz.policy.rules import enforce
from ext_authz.request import RequestView
from ext_authz.tokens.cache import VerifiedToken, VerifiedTokenCache
from ext_authz.tokens.claims import check_registered_claims, check_token_type
from ext_authz.tokens.credentials import find_token
from ext_authz.tokens.decrypt import Decrypted, decrypt_token
from ext_authz.tokens.format import SignedToken, decode_json_object, parse_signed, segment_count
from ext_authz.tokens.verify import select_key, verify_jws
from ext_authz.tracing import phase

log = logging.getLogger("ext_authz.authorizer")


@dataclass(frozen=True, slots=True, repr=False)
class Identity:
    issuer: IssuerPolicy
    claims: Mapping[str, Any]
    encrypted: bool = False

    def __repr__(self) -> str:
        return f"Identity(issuer={self.issuer.name!r}, encrypted={self.encrypted})"

    @property
    def subject(self) -> str | None:
        """`sub` when it is a string that can travel (metadata, logs), else None."""
        sub = self.claims.get("sub")
        if not isinstance(sub, str) or len(sub) > 1024:
            return None
        try:
            sub.encode("utf-8")
        except UnicodeEncodeError:
            return None
        return sub


@dataclass(frozen=True, slots=True)
class Runtime:
    """A policy and the key provider serving its issuers: swapped together on reload,
    so a check runs start to finish on one consistent pair."""

    policy: Policy
    key_provider: KeyProvider


class Authorizer:
    def __init__(
        self,
        policy: Callable[[], Policy],
        keys: KeyProvider,
        clock: Clock | None = None,
        cache: VerifiedTokenCache | None = None,
    ) -> None:
        self._runtime: Callable[[], Runtime] = lambda: Runtime(policy(), keys)
        self._clock = clock or SystemClock()
        self._cache = cache

    @classmethod
    def over(
        cls,
        runtime: Callable[[], Runtime],
        clock: Clock | None = None,
        cache: VerifiedTokenCache | None = None,
    ) -> Authorizer:
        """An authorizer reading policy and keys together from `runtime`."""
        authorizer = cls.__new__(cls)
        authorizer._runtime = runtime
        authorizer._clock = clock or SystemClock()
        authorizer._cache = cache
        return authorizer

    def token_headers(self) -> frozenset[str]:
        """Headers the current policy may read a token from, besides Authorization."""
        return self._runtime().policy.token_headers

    def check(self, request: RequestView, trace: Trace | None = None) -> Decision:
        """Decide. Never raises: an unexpected error is a logged deny. With a `trace`,
        each phase also reports what it found there (see `ext_authz.pipeline_trace`)."""
        runtime = self._runtime()
        try:
            return self._decide(runtime, request, trace)
        except Exception:
            log.exception("internal error while deciding; denying")
            if trace is not None:
                trace.failed(Denied(DenialReason.INTERNAL_ERROR))
            return Deny(DenialReason.INTERNAL_ERROR, runtime.policy.realm)

    def _decide(self, runtime: Runtime, request: RequestView, trace: Trace | None) -> Decision:
        policy = runtime.policy
        try:
            route = select_route(policy.routes, request)
        except Denied as bad:  # a request no route can be judged on
            if trace is not None:
                trace.steps.append(Step(Phase.ROUTE, False, bad.detail, bad.reason, ()))
            return Deny(bad.reason, policy.realm, detail=bad.detail)
        if trace is not None:
            _trace_route(trace, policy, route, request)
        if route is None:
            return Deny(DenialReason.NO_ROUTE, policy.realm)
        if route.access is Access.DENY:
            decision: Decision = Deny(DenialReason.ROUTE_DENY, policy.realm, route=route.name)
            if trace is not None:
                trace.failed(Denied(DenialReason.ROUTE_DENY, "the route denies"), Phase.ACCESS)
        elif route.access is Access.ANONYMOUS:
            decision = Allow(route.name, remove=tuple(sorted(policy.identity_headers)))
            if trace is not None:
                trace.held(Phase.ACCESS, "anonymous", _removed(decision.remove))
        else:
            decision = self._require(runtime, route, request, trace)
        if route.dry_run and isinstance(decision, Deny):
            if trace is not None:
                trace.held(Phase.DRY_RUN, f"let through, header {route.dry_run_header}")
            return self._dry_run(policy, route, decision)
        return decision

    @staticmethod
    def _dry_run(policy: Policy, route: Route, denied: Deny) -> Allow:
        """A dry-run route lets the request through, telling upstream what would have
        happened; no claim is injected, and identity headers are still stripped."""
        return Allow(
            route.name,
            issuer=denied.issuer,
            subject=denied.subject,
            headers=((route.dry_run_header, denied.reason.value),),
            remove=tuple(sorted(policy.identity_headers - {route.dry_run_header})),
            dry_run=denied.reason,
            log_subject=route.log_subject,
        )

    def _require(
        self, runtime: Runtime, route: Route, request: RequestView, trace: Trace | None
    ) -> Decision:
        policy = runtime.policy
        requirement = route.requirement
        assert requirement is not None
        identity: Identity | None = None
        try:
            if trace is not None:
                trace.phase = Phase.CREDENTIAL
            token = find_token(request.headers, route.token_sources)
            if token is None:
                raise Denied(DenialReason.TOKEN_MISSING, "no Authorization header")
            if trace is not None:
                size = f"bearer token, {len(token)} bytes, {segment_count(token)} segments"
                trace.held(Phase.CREDENTIAL, size)
            identity = self.authenticate(policy, token, runtime.key_provider, trace)
            if trace is not None:
                trace.phase = Phase.RULES
            enforce(requirement, identity.issuer.name, identity.claims, identity.encrypted)
            if trace is not None:
                trace.held(Phase.RULES, _requirement_text(requirement))
                trace.phase = Phase.HEADERS
            plan = claim_headers(
                route.headers, identity.claims, policy.identity_headers, route.unsafe_values
            )
        except UnsafeClaim as unsafe:
            assert identity is not None
            if trace is not None:
                trace.failed(Denied(DenialReason.CLAIM_VALUE_UNSAFE, str(unsafe)))
            return Deny(
                DenialReason.CLAIM_VALUE_UNSAFE,
                policy.realm,
                route=route.name,
                issuer=identity.issuer.name,
                subject=identity.subject,
                detail=str(unsafe),
                log_subject=route.log_subject,
            )
        except Denied as denied:
            if trace is not None:
                trace.failed(denied)
            return Deny(
                denied.reason,
                policy.realm,
                route=route.name,
                issuer=identity.issuer.name if identity else None,
                subject=identity.subject if identity else None,
                scopes=requirement.scopes,
                detail=denied.detail,
                log_subject=route.log_subject,
            )
        if trace is not None:
            trace.held(Phase.HEADERS, "", _header_notes(plan.headers, plan.notes, plan.remove))
        return Allow(
            route.name,
            issuer=identity.issuer.name,
            subject=identity.subject,
            headers=plan.headers,
            remove=plan.remove,
            notes=plan.notes,
            log_subject=route.log_subject,
        )

    def authenticate(
        self, policy: Policy, token: str, keys: KeyProvider, trace: Trace | None = None
    ) -> Identity:
        """Verify a bearer token (JWS, or JWE around a JWS) against the policy's issuers.
        Raises `Denied`."""
        cache = self._cache
        if cache is not None:
            hit = cache.get(token)
            if hit is not None and hit.policy is policy and self._still_valid(hit, keys):
                issuer = policy.issuers[hit.issuer.name]
                if trace is not None:
                    trace.held(Phase.CACHE, f"verified before, issuer {issuer.name}")
                return Identity(issuer, hit.claims, hit.encrypted)
        encrypted = segment_count(token) == 5
        if encrypted:
            if trace is not None:
                trace.phase = Phase.DECRYPTION
            with phase("token.decrypt"):
                decrypted = decrypt_token(token, policy.decryption)
            if trace is not None:
                trace.held(Phase.DECRYPTION, _decrypted_text(decrypted))
                trace.phase = Phase.NESTED
            inner = decrypted.nested_token()
            if trace is not None:
                trace.held(Phase.NESTED, "a signed JWT" if inner else "bare claims")
            if inner is None:
                identity, exp = self._unsigned_claims(policy, decrypted, trace)
                key = None
            else:
                identity, key, exp = self._verify_signed(policy, inner, keys, trace, encrypted=True)
            if trace is not None:
                trace.phase = Phase.REPLICATED
            decrypted.check_replicated(identity.claims)
            if trace is not None and decrypted.replicated:
                trace.held(Phase.REPLICATED, "equal: " + ", ".join(decrypted.replicated))
        else:
            identity, key, exp = self._verify_signed(policy, token, keys, trace, encrypted=False)
            if identity.issuer.require_encryption:
                if trace is not None:
                    trace.phase = Phase.ENCRYPTION
                raise Denied(DenialReason.ENCRYPTION_REQUIRED, "issuer requires encrypted tokens")
        if cache is not None:
            cache.put(
                token,
                VerifiedToken(
                    policy,
                    identity.issuer,
                    key,
                    identity.claims,
                    exp + identity.issuer.leeway,
                    encrypted,
                ),
            )
        return identity

    @staticmethod
    def _still_valid(hit: VerifiedToken, keys: KeyProvider) -> bool:
        if hit.key is None:  # unsigned claims: the decryption key is part of the policy
            return True
        current = keys.current(hit.issuer.name).key_set
        return current is not None and current.holds(hit.key)

    def _verify_signed(
        self,
        policy: Policy,
        token: str,
        keys: KeyProvider,
        trace: Trace | None,
        *,
        encrypted: bool,
    ) -> tuple[Identity, VerificationKey, float]:
        if trace is not None:
            trace.phase = Phase.TOKEN
        signed = parse_signed(token)
        if trace is not None:
            trace.held(Phase.TOKEN, f"JWS, alg {signed.alg}, kid {signed.kid or '(none)'}")
        issuer = self._issuer_of(policy, signed.claims, trace)
        exp = self._check_claims(signed.header, signed.claims, issuer, trace)
        if trace is not None:
            trace.phase = Phase.SIGNATURE
        key = verify_jws(signed, issuer.algorithms, lambda s: self._key_for(issuer, s, keys))
        if trace is not None:
            status = keys.current(issuer.name).status.value
            trace.held(Phase.SIGNATURE, f"{_key_text(signed.alg, key)}; keys {status}")
        return Identity(issuer, signed.claims, encrypted), key, exp

    def _unsigned_claims(
        self, policy: Policy, decrypted: Decrypted, trace: Trace | None
    ) -> tuple[Identity, float]:
        """Bare claims inside a JWE: accepted only from the issuer that alone shares the
        symmetric key the token was encrypted with."""
        if trace is not None:
            trace.phase = Phase.TOKEN
        claims = decode_json_object(
            decrypted.plaintext, DenialReason.TOKEN_PAYLOAD_INVALID, "plaintext"
        )
        issuer = self._issuer_of(policy, claims, trace)
        kid = decrypted.key.kid
        if not decrypted.key.symmetric or kid is None or kid not in issuer.unsigned_encrypted_keys:
            if trace is not None:
                trace.phase = Phase.SIGNATURE
            raise Denied(DenialReason.UNSIGNED_ENCRYPTED_CLAIMS, "encrypted claims are not signed")
        if trace is not None:
            trace.held(Phase.SIGNATURE, f"none: the issuer's own shared key {kid}")
        exp = self._check_claims(decrypted.header, claims, issuer, trace)
        return Identity(issuer, claims, True), exp

    def _check_claims(
        self,
        header: Mapping[str, Any],
        claims: Mapping[str, Any],
        issuer: IssuerPolicy,
        trace: Trace | None,
    ) -> float:
        """The token type, then the registered claims; returns `exp`."""
        if trace is not None:
            trace.phase = Phase.TOKEN_TYPE
        check_token_type(header, issuer.token_types)
        if trace is not None:
            if issuer.token_types is not None:
                trace.held(Phase.TOKEN_TYPE, "typ " + ", ".join(sorted(issuer.token_types)))
            trace.phase = Phase.CLAIMS
        now = self._clock.now()
        exp = check_registered_claims(claims, issuer, now)
        if trace is not None:
            trace.held(Phase.CLAIMS, _claims_text(claims, issuer, exp, now))
        return exp

    @staticmethod
    def _issuer_of(
        policy: Policy, claims: Mapping[str, Any], trace: Trace | None = None
    ) -> IssuerPolicy:
        if trace is not None:
            trace.phase = Phase.ISSUER
        iss = claims.get("iss")
        if iss is None:
            raise Denied(DenialReason.ISSUER_MISSING)
        if not isinstance(iss, str):
            raise Denied(DenialReason.CLAIM_TYPE_INVALID, "'iss' is not a string")
        issuer = policy.issuers_by_iss.get(iss)
        if issuer is None:
            raise Denied(DenialReason.ISSUER_UNKNOWN, "iss is not a configured issuer")
        if trace is not None:
            trace.held(Phase.ISSUER, issuer.name)
        return issuer

    @staticmethod
    def _key_for(issuer: IssuerPolicy, signed: SignedToken, keys: KeyProvider) -> VerificationKey:
        snapshot = keys.current(issuer.name)
        if snapshot.key_set is not None:
            try:
                return select_key(snapshot.key_set, signed)
            except Denied as denied:
                if denied.reason is not DenialReason.KEY_UNKNOWN or not issuer.source.is_remote:
                    raise
                first_miss: Denied | None = denied
        else:
            first_miss = None
        if not issuer.source.is_remote:
            raise Denied(DenialReason.KEYS_UNAVAILABLE, "no keys")
        refreshed = keys.refetch(issuer.name)
        if refreshed is not None and refreshed.key_set is not None:
            return select_key(refreshed.key_set, signed)
        if first_miss is not None:
            raise first_miss
        raise Denied(DenialReason.KEYS_UNAVAILABLE, f"issuer '{issuer.name}' has no keys")


# what a traced check reports (only built when a trace is asked for) ------------------


def _trace_route(trace: Trace, policy: Policy, chosen: Route | None, request: RequestView) -> None:
    target = request_target(request)
    notes: list[str] = []
    if (target.path, target.host) != (request.path, request.host):
        notes.append(f"matched as: path {target.path} host={target.host or '-'}")
    for route in policy.routes:
        checks = match_conditions(route.match, target)
        if route is chosen:
            held = "; ".join(text for text, _ in checks) or "matches everything"
            notes.append(f"{route.name}: MATCH ({held})")
            trace.held(Phase.ROUTE, route.name, tuple(notes))
            return
        failed = "; ".join(text for text, ok in checks if not ok)
        notes.append(f"{route.name}: no ({failed})")
    trace.steps.append(
        Step(Phase.ROUTE, False, "no route matches", DenialReason.NO_ROUTE, tuple(notes))
    )


def _removed(remove: tuple[str, ...]) -> tuple[str, ...]:
    return (f"remove headers: {', '.join(remove)}",) if remove else ()


def _requirement_text(requirement: Requirement) -> str:
    parts = [f"issuers {', '.join(sorted(requirement.issuers))}"]
    if requirement.encrypted:
        parts.append("encrypted")
    if requirement.scopes:
        parts.append(f"scopes {' '.join(requirement.scopes)}")
    for rule in requirement.claims:
        parts.append(f"claim {rule.name}")
    return "; ".join(parts) + ": all hold"


def _header_notes(
    headers: tuple[tuple[str, str], ...], notes: tuple[str, ...], remove: tuple[str, ...]
) -> tuple[str, ...]:
    lines = [f"set header {name}: <{len(value)} chars>" for name, value in headers]
    lines += [f"left out: {note}" for note in notes]
    return (*lines, *_removed(remove))


def _decrypted_text(decrypted: Decrypted) -> str:
    header = decrypted.header
    kid = decrypted.key.kid or "(no kid)"
    return f"alg {header.get('alg')}, enc {header.get('enc')}, key {kid}"


def _claims_text(claims: Mapping[str, Any], issuer: IssuerPolicy, exp: float, now: float) -> str:
    parts = [f"exp in {int(exp - now)}s (leeway {int(issuer.leeway)}s)"]
    parts += [f"{name} ok" if name in claims else f"{name} absent" for name in ("nbf", "iat")]
    if issuer.audiences is None:
        parts.append("aud not checked")
    else:
        parts.append(f"aud ok (accepted: {', '.join(sorted(issuer.audiences))})")
    return "; ".join(parts)


def _key_text(alg: str, key: VerificationKey) -> str:
    curve = f" {key.curve}" if key.curve else ""
    return f"valid, alg {alg}, key {key.kid or '(no kid)'} ({key.kty}{curve})"
