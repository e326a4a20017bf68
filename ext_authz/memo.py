"""Finished allow answers, remembered per (credential, route, policy).

A token seen before on the same route gets the same answer as last time: the same
headers set and removed, the same metadata. The memo keeps that answer as the front
door rendered it (for gRPC, the serialised `CheckResponse` without its decision id),
so a hit skips token parsing, claim lookup, header rendering and protobuf building.

An entry is served only while all of these hold:

- the policy is the one it was decided under (any reload, even of an identical file,
  empties the memo: a new policy object is a new generation);
- the request selects the same route (the route is part of the key), and carries the
  same credential: the `Authorization` header, or, on a route with `token_from`,
  every header the route reads a token from (`Cookie` included) exactly as sent;
- the token has not expired (`exp` plus the issuer's leeway, on the checking clock);
- the key that verified the token is still in the issuer's current key set (a key the
  issuer withdrew, or keys past their `max_stale`, end the entry, as they end the
  verified-token cache's entry).

Denials are not remembered. Most are already cheap (no token, no route, a malformed
header: decided before any cryptography), and the expensive ones are unsafe to keep:
a bad signature or an unknown issuer costs an attacker nothing to vary, so remembering
them would let junk tokens push real answers out of the bounded memo, and several
(unknown key, keys unavailable, not yet valid) change with time or a key refetch.
Dry-run allows are denials let through and are not remembered either.

Memory is bounded by `maxsize` entries and by `max_bytes` of kept headers and answers
(tokens may be up to 16 KiB): when full, expired entries go first, then the oldest.
A hit is one dict read (no lock, no reordering): the memo is for speed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from ext_authz.authorizer import Runtime
from ext_authz.clock import Clock
from ext_authz.decision import Allow, Decision
from ext_authz.errors import Denied
from ext_authz.keys.jwks import VerificationKey
from ext_authz.policy.model import Access, Policy
from ext_authz.policy.routes import select_route
from ext_authz.request import RequestView
from ext_authz.tokens.cache import VerifiedTokenCache
from ext_authz.tokens.credentials import TokenSources, find_token

T = TypeVar("T")

DEFAULT_SIZE = 10_000
DEFAULT_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True, repr=False)
class _Entry(Generic[T]):
    policy: Policy  # checked on every hit: a check running across a reload may refile
    decision: Allow
    answer: T
    issuer: str
    key: VerificationKey | None  # None: unsigned claims in a JWE (bound to the policy)
    valid_until: float
    size: int  # bytes of header and answer, for the byte bound


# The credential part of a key: the Authorization header, or every header a route with
# `token_from` reads (name, value), since the same token elsewhere, or a second
# credential next to it, changes the answer.
Credential = str | tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True, repr=False)
class Miss:
    """What a miss saw, so the answer decided next is filed under the same generation."""

    policy: Policy
    route: str
    credential: Credential
    headers: Mapping[str, str]  # the credential headers, for finding the token again
    sources: TokenSources | None


@dataclass(frozen=True, slots=True, repr=False)
class Hit(Generic[T]):
    decision: Allow
    answer: T


class AnswerMemo(Generic[T]):
    def __init__(
        self,
        runtime: Callable[[], Runtime],
        tokens: VerifiedTokenCache,
        clock: Clock,
        maxsize: int = DEFAULT_SIZE,
        max_bytes: int = DEFAULT_BYTES,
    ) -> None:
        self._runtime = runtime
        self._tokens = tokens
        self._clock = clock
        self._maxsize = maxsize
        self._max_bytes = max_bytes
        self._bytes = 0
        self._lock = threading.Lock()
        self._policy: Policy | None = None
        self._entries: dict[tuple[Credential, str], _Entry[T]] = {}
        self.hits = 0
        self.misses = 0

    def get(self, request: RequestView) -> Hit[T] | Miss | None:
        """A remembered answer, or a `Miss` to file the coming answer with, or None
        when this request's answer is never remembered (no credential, not a `require`
        route)."""
        runtime = self._runtime()
        policy = runtime.policy
        try:
            route = select_route(policy.routes, request)
        except Denied:  # a request no route can be judged on: the pipeline says why
            return None
        if route is None or route.access is not Access.REQUIRE:
            return None
        sources = route.token_sources
        if sources is None:  # Authorization: Bearer, the usual case
            authorization = request.headers.get("authorization")
            if authorization is None:
                return None
            credential: Credential = authorization
            read = {"authorization": authorization}
        else:  # every header the route may read a token from, as sent
            read = {n: v for n in _names(sources) if (v := request.headers.get(n)) is not None}
            if not read:
                return None
            credential = tuple(sorted(read.items()))
        key = (credential, route.name)
        if self._policy is not policy:  # a reload: every answer is decided again
            with self._lock:
                if self._policy is not policy:
                    self._policy = policy
                    self._entries = {}
                    self._bytes = 0
        entry = self._entries.get(key)
        if entry is not None and entry.policy is policy and entry.valid_until > self._clock.now():
            if entry.key is None:
                self.hits += 1
                return Hit(entry.decision, entry.answer)
            held = runtime.key_provider.current(entry.issuer).key_set
            if held is not None and held.holds(entry.key):
                self.hits += 1
                return Hit(entry.decision, entry.answer)
            with self._lock:
                gone = self._entries.pop(key, None)
                if gone is not None:
                    self._bytes -= gone.size
        self.misses += 1
        return Miss(policy, route.name, credential, read, sources)

    def put(self, miss: Miss, decision: Decision, answer: T) -> None:
        """Remember `answer` if `decision` is a plain allow decided under the policy
        the miss saw, for the token the verified-token cache holds."""
        if not isinstance(decision, Allow) or decision.dry_run is not None:
            return
        if decision.route != miss.route or decision.issuer is None:
            return
        try:
            token = find_token(miss.headers, miss.sources)  # as the pipeline found it
        except Denied:
            return
        if token is None:
            return
        verified = self._tokens.peek(token)
        if verified is None or verified.policy is not miss.policy:
            return
        if verified.issuer.name != decision.issuer:
            return
        size = sum(map(len, miss.headers.values())) + len(miss.route) + _size(answer) + _OVERHEAD
        entry = _Entry(
            miss.policy,
            decision,
            answer,
            verified.issuer.name,
            verified.key,
            verified.valid_until,
            size,
        )
        key = (miss.credential, miss.route)
        with self._lock:
            if self._policy is not miss.policy:
                return
            entries = self._entries
            old = entries.pop(key, None)
            if old is not None:
                self._bytes -= old.size
            if len(entries) >= self._maxsize or self._bytes + size > self._max_bytes:
                self._make_room(entries, size)
            entries[key] = entry
            self._bytes += size

    def _make_room(self, entries: dict[tuple[Credential, str], _Entry[T]], size: int) -> None:
        """Drop the expired entries, then the oldest down to 90 % of either bound, so
        that the scan runs once per tenth of the memo's room, not once per entry."""
        now = self._clock.now()
        expired = [key for key, entry in entries.items() if entry.valid_until <= now]
        for key in expired:
            self._bytes -= entries.pop(key).size
        keep = self._maxsize - max(1, self._maxsize // 10)
        keep_bytes = self._max_bytes - max(size, self._max_bytes // 10)
        # the oldest first, in one pass over the front of the dict (popping them one at
        # a time would walk the growing run of freed slots again for each)
        left, held = len(entries), self._bytes
        oldest = []
        for key, entry in entries.items():
            if left <= keep and held <= keep_bytes:
                break
            oldest.append(key)
            left -= 1
            held -= entry.size
        for key in oldest:
            del entries[key]
        self._bytes = held

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """Bytes of headers and answers kept (an estimate of the memory they hold)."""
        return self._bytes


_OVERHEAD = 200  # the entry, its key tuple and the dict slot, roughly
_NAMES: dict[TokenSources, tuple[str, ...]] = {}


def _names(sources: TokenSources) -> tuple[str, ...]:
    """The header names `sources` reads (`cookie` for cookies), computed once."""
    names = _NAMES.get(sources)
    if names is None:
        if len(_NAMES) > 1024:  # policies come and go with reloads
            _NAMES.clear()
        names = _NAMES[sources] = tuple(sorted(sources.header_names))
    return names


def _size(answer: object) -> int:
    return len(answer) if isinstance(answer, bytes | str) else 0
