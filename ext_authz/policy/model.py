"""The compiled policy: immutable runtime objects, built once per load.

Nothing here parses text on the request path: regexes are compiled, header names
lower-cased, claim paths split and key sets parsed when the policy is loaded.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ext_authz.keys.source import KeySource
from ext_authz.policy.path_regex import PathRegex
from ext_authz.tokens.credentials import TokenSources
from ext_authz.tokens.decrypt import DecryptionConfig

ClaimPath = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class IssuerPolicy:
    name: str
    audiences: frozenset[str] | None  # None: the audience is not checked
    algorithms: frozenset[str]
    source: KeySource  # its `iss`, where its keys come from and how they are fetched
    leeway: float
    require_encryption: bool = False
    # kids of symmetric decryption keys shared with this issuer alone: a JWE decrypted
    # with one of them may carry bare (unsigned) claims of this issuer
    unsigned_encrypted_keys: frozenset[str] = frozenset()
    token_sources: TokenSources | None = None  # None: Authorization: Bearer
    # media types (`application/at+jwt`) a token's `typ` must name; None: any
    token_types: frozenset[str] | None = None

    @property
    def issuer(self) -> str:
        """The `iss` its tokens carry."""
        return self.source.issuer


@dataclass(frozen=True, slots=True)
class RouteMatch:
    path: str | None = None  # without a trailing slash; lower-case unless case_sensitive
    path_prefix: str | None = None  # lower-case unless case_sensitive
    path_regex: PathRegex | None = None  # RE2, compiled with case_sensitive
    methods: frozenset[str] | None = None
    hosts: tuple[str, ...] | None = None  # normal form; "*.example.com" wildcards allowed
    context_extensions: tuple[tuple[str, str], ...] = ()
    case_sensitive: bool = True  # for path, path_prefix and path_regex


class Access(enum.Enum):
    ANONYMOUS = "anonymous"
    DENY = "deny"
    REQUIRE = "require"


@dataclass(frozen=True, slots=True)
class ClaimRule:
    name: str  # the dotted path as written, for logs and traces
    path: ClaimPath
    allowed: tuple[Any, ...]  # the claim must equal one of these (JSON equality)


@dataclass(frozen=True, slots=True)
class Requirement:
    issuers: frozenset[str]  # local issuer names accepted on the route
    scopes: tuple[str, ...]
    claims: tuple[ClaimRule, ...]
    encrypted: bool = False


@dataclass(frozen=True, slots=True)
class HeaderMapping:
    header: str  # lower-case
    claim: str  # dotted path as written
    path: ClaimPath
    encoding: str = "plain"  # plain | json | base64url


class UnsafeValues(enum.Enum):
    """What to do with a claim value that cannot travel as-is in a header."""

    DROP = "drop"  # leave the header out (it is removed upstream)
    DENY = "deny"  # refuse the request
    ENCODE = "encode"  # percent-encode it (RFC 3986), if it then fits


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    match: RouteMatch
    access: Access
    requirement: Requirement | None
    headers: tuple[HeaderMapping, ...]
    unsafe_values: UnsafeValues = UnsafeValues.DROP
    dry_run: bool = False
    dry_run_header: str = "x-ext-authz-dry-run"
    log_subject: bool = False
    token_sources: TokenSources | None = None  # None: Authorization: Bearer


@dataclass(frozen=True, slots=True)
class Policy:
    realm: str
    issuers: Mapping[str, IssuerPolicy]  # by local name (read-only mappings)
    issuers_by_iss: Mapping[str, IssuerPolicy]  # by the token's `iss`
    routes: tuple[Route, ...]
    identity_headers: frozenset[str]  # every header any route maps a claim into
    decryption: DecryptionConfig | None
    source: Path | None
    referenced_files: tuple[Path, ...]
    token_headers: frozenset[str] = frozenset()  # headers any route reads a token from

    @property
    def key_sources(self) -> Mapping[str, KeySource]:
        """Every issuer's key source by local name: what the key manager starts from."""
        return MappingProxyType({name: i.source for name, i in self.issuers.items()})

    @property
    def remote_issuers(self) -> tuple[IssuerPolicy, ...]:
        return tuple(i for i in self.issuers.values() if i.source.is_remote)
