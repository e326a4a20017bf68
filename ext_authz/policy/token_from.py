"""`token_from` of routes and issuers → the `TokenSources` each route reads.

A route's own `token_from` wins; otherwise a route that requires a token reads from
every place its accepted issuers name (an issuer without `token_from` contributes
`Authorization: Bearer`); with no `token_from` anywhere the route reads only
`Authorization: Bearer`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from ext_authz.policy.model import IssuerPolicy, Route
from ext_authz.policy.schema import TokenFromModel
from ext_authz.tokens.credentials import BEARER, HeaderSource, TokenSources, merge_sources


def token_sources(model: TokenFromModel | None) -> TokenSources | None:
    if model is None:
        return None
    return TokenSources(
        tuple(HeaderSource(h.name.lower(), h.prefix) for h in model.headers),
        tuple(model.cookies),
    )


def route_token_sources(routes: list[Route], issuers: Mapping[str, IssuerPolicy]) -> list[Route]:
    out = []
    for route in routes:
        if route.token_sources is None and route.requirement is not None:
            accepted = [issuers[n] for n in sorted(route.requirement.issuers) if n in issuers]
            if any(i.token_sources is not None for i in accepted):
                merged = merge_sources(
                    [i.token_sources or TokenSources((BEARER,)) for i in accepted]
                )
                route = replace(route, token_sources=merged)
        out.append(route)
    return out


def token_header_names(routes: Iterable[Route]) -> frozenset[str]:
    names: set[str] = set()
    for route in routes:
        if route.token_sources is not None:
            names |= route.token_sources.header_names
    return frozenset(names - {"authorization"})
