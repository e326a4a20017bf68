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
from ext_authz.policy.claim_headers import UnsafeClaim, claim_headers
from ext_authz.policy.model import Access, IssuerPolicy, Policy, Route
from ext_authz.policy.routes import select_route
from ext_authz.policy.rules import enforce
from ext_authz.request import RequestView
from ext_authz.tokens.cache import VerifiedToken, VerifiedTokenCache
from ext_authz.tokens.claims import check_registered_claims
from ext_authz.tokens.credentials import find_token
from ext_authz.tokens.decrypt import Decrypted, decrypt_token
from ext_authz.tokens.format import SignedToken, decode_json_object, parse_signed, segment_count
from ext_authz.tokens.verify import select_key, verify_signature
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
    keys: KeyProvider


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

    def check(self, request: RequestView) -> Decision:
        """Decide. Never raises: an unexpected error is a logged deny."""
        runtime = self._runtime()
        try:
            return self._decide(runtime, request)
        except Exception:
            log.exception("internal error while deciding; denying")
            return Deny(DenialReason.INTERNAL_ERROR, runtime.policy.realm)

    def _decide(self, runtime: Runtime, request: RequestView) -> Decision:
        policy = runtime.policy
        route = select_route(policy.routes, request)
        if route is None:
            return Deny(DenialReason.NO_ROUTE, policy.realm)
        if route.access is Access.DENY:
            decision: Decision = Deny(DenialReason.ROUTE_DENY, policy.realm, route=route.name)
        elif route.access is Access.ANONYMOUS:
            decision = Allow(route.name, remove=tuple(sorted(policy.identity_headers)))
        else:
            decision = self._require(runtime, route, request)
        if route.dry_run and isinstance(decision, Deny):
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

    def _require(self, runtime: Runtime, route: Route, request: RequestView) -> Decision:
        policy = runtime.policy
        requirement = route.requirement
        assert requirement is not None
        identity: Identity | None = None
        try:
            token = find_token(request.headers, route.token_sources)
            if token is None:
                raise Denied(DenialReason.TOKEN_MISSING)
            identity = self.authenticate(policy, token, runtime.keys)
            enforce(requirement, identity.issuer.name, identity.claims, identity.encrypted)
            plan = claim_headers(
                route.headers, identity.claims, policy.identity_headers, route.unsafe_values
            )
        except UnsafeClaim as unsafe:
            assert identity is not None
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
        return Allow(
            route.name,
            issuer=identity.issuer.name,
            subject=identity.subject,
            headers=plan.headers,
            remove=plan.remove,
            notes=plan.notes,
            log_subject=route.log_subject,
        )

    def authenticate(self, policy: Policy, token: str, keys: KeyProvider) -> Identity:
        """Verify a bearer token (JWS, or JWE around a JWS) against the policy's issuers.
        Raises `Denied`."""
        cache = self._cache
        if cache is not None:
            hit = cache.get(token)
            if hit is not None and hit.policy is policy and self._still_valid(hit, keys):
                return Identity(hit.issuer, hit.claims, hit.encrypted)
        encrypted = segment_count(token) == 5
        if encrypted:
            with phase("token.decrypt"):
                decrypted = decrypt_token(token, policy.decryption)
            inner = decrypted.nested_token()
            if inner is None:
                identity, exp = self._unsigned_claims(policy, decrypted)
                key = None
            else:
                identity, key, exp = self._verify_signed(policy, inner, keys, encrypted=True)
        else:
            identity, key, exp = self._verify_signed(policy, token, keys, encrypted=False)
            if identity.issuer.require_encryption:
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
        current = keys.current(hit.issuer.name).keys
        return current is not None and current.holds(hit.key)

    def _verify_signed(
        self, policy: Policy, token: str, keys: KeyProvider, *, encrypted: bool
    ) -> tuple[Identity, VerificationKey, float]:
        signed = parse_signed(token)
        issuer = self._issuer_of(policy, signed.claims)
        if signed.alg not in issuer.algorithms:
            raise Denied(DenialReason.ALGORITHM_NOT_ALLOWED, f"alg {signed.alg}")
        exp = check_registered_claims(signed.claims, issuer, self._clock.now())
        key = self._key_for(issuer, signed, keys)
        verify_signature(signed, key)
        return Identity(issuer, signed.claims, encrypted), key, exp

    def _unsigned_claims(self, policy: Policy, decrypted: Decrypted) -> tuple[Identity, float]:
        """Bare claims inside a JWE: accepted only from the issuer that alone shares the
        symmetric key the token was encrypted with."""
        claims = decode_json_object(
            decrypted.plaintext, DenialReason.TOKEN_PAYLOAD_INVALID, "plaintext"
        )
        issuer = self._issuer_of(policy, claims)
        kid = decrypted.key.kid
        if not decrypted.key.symmetric or kid is None or kid not in issuer.unsigned_encrypted_keys:
            raise Denied(DenialReason.UNSIGNED_ENCRYPTED_CLAIMS, "encrypted claims are not signed")
        exp = check_registered_claims(claims, issuer, self._clock.now())
        return Identity(issuer, claims, True), exp

    @staticmethod
    def _issuer_of(policy: Policy, claims: Mapping[str, Any]) -> IssuerPolicy:
        iss = claims.get("iss")
        if iss is None:
            raise Denied(DenialReason.ISSUER_MISSING)
        if not isinstance(iss, str):
            raise Denied(DenialReason.CLAIM_TYPE_INVALID, "'iss' is not a string")
        issuer = policy.issuers_by_iss.get(iss)
        if issuer is None:
            raise Denied(DenialReason.ISSUER_UNKNOWN)
        return issuer

    @staticmethod
    def _key_for(issuer: IssuerPolicy, signed: SignedToken, keys: KeyProvider) -> VerificationKey:
        snapshot = keys.current(issuer.name)
        if snapshot.keys is not None:
            try:
                return select_key(snapshot.keys, signed)
            except Denied as denied:
                if denied.reason is not DenialReason.KEY_UNKNOWN or not issuer.source.is_remote:
                    raise
                first_miss: Denied | None = denied
        else:
            first_miss = None
        if not issuer.source.is_remote:
            raise Denied(DenialReason.KEYS_UNAVAILABLE, "no keys")
        refreshed = keys.refetch(issuer.name)
        if refreshed is not None and refreshed.keys is not None:
            return select_key(refreshed.keys, signed)
        if first_miss is not None:
            raise first_miss
        raise Denied(DenialReason.KEYS_UNAVAILABLE, f"issuer '{issuer.name}' has no keys")
