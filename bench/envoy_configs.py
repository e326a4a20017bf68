"""Envoy bootstraps for measurement 3, all derived from the project's own renderer.

Every setup answers from the same upstream: a ``direct_response`` (200, a small JSON
body) on the route, so the only difference between setups is the auth filter:

- ``none``: no auth filter (the latency reference);
- ``ext_authz``: the project's ext_authz filter and cluster, unchanged;
- ``jwt_authn``: Envoy's own JWT filter with the same issuer, audience and key
  (inline ``local_jwks``), the same claims to headers, and no ``jwt_cache_config``
  (so no verified-token cache).
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from bench.fixtures import AUDIENCE, BenchIssuer
from ext_authz.deploy.envoy_config import (
    EXT_AUTHZ_CLUSTER,
    EXT_AUTHZ_FILTER,
    UPSTREAM_CLUSTER,
    EnvoyParams,
    envoy_config_dict,
)

JWT_AUTHN_FILTER = "envoy.filters.http.jwt_authn"
_JWT_AUTHN_TYPE = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
UPSTREAM_BODY = '{"upstream":"direct_response","ok":true}'
PROTECTED_PREFIX = "/api/orders"
SETUPS = ("none", "ext_authz", "jwt_authn")


def _hcm(config: dict[str, Any]) -> dict[str, Any]:
    listener = config["static_resources"]["listeners"][0]
    hcm: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm


def jwt_authn_filter(issuer: BenchIssuer) -> dict[str, Any]:
    return {
        "name": JWT_AUTHN_FILTER,
        "typed_config": {
            "@type": _JWT_AUTHN_TYPE,
            "providers": {
                issuer.name: {
                    "issuer": issuer.iss,
                    "audiences": [AUDIENCE],
                    "local_jwks": {"inline_string": issuer.jwks_json()},
                    "forward": True,
                    "claim_to_headers": [
                        {"header_name": "x-user-id", "claim_name": "sub"},
                        {"header_name": "x-user-email", "claim_name": "email"},
                        {"header_name": "x-tenant-id", "claim_name": "org.tenant"},
                    ],
                }
            },
            "rules": [
                {
                    "match": {"prefix": PROTECTED_PREFIX},
                    "requires": {"provider_name": issuer.name},
                }
            ],
        },
    }


def bootstrap(setup: str, params: EnvoyParams, issuer: BenchIssuer) -> dict[str, Any]:
    """The bootstrap of ``setup`` (one of SETUPS) as plain data."""
    if setup not in SETUPS:
        raise ValueError(f"unknown setup {setup!r}")
    config = copy.deepcopy(envoy_config_dict(params))
    hcm = _hcm(config)
    routes: list[dict[str, Any]] = hcm["route_config"]["virtual_hosts"][0]["routes"]
    for route in routes:
        if "route" in route:
            del route["route"]
            route["direct_response"] = {"status": 200, "body": {"inline_string": UPSTREAM_BODY}}
    clusters: list[dict[str, Any]] = config["static_resources"]["clusters"]
    keep = {EXT_AUTHZ_CLUSTER} if setup == "ext_authz" else set()
    config["static_resources"]["clusters"] = [c for c in clusters if c["name"] in keep]
    assert all(c["name"] != UPSTREAM_CLUSTER for c in config["static_resources"]["clusters"])
    filters: list[dict[str, Any]] = hcm["http_filters"]
    router = [f for f in filters if f["name"] != EXT_AUTHZ_FILTER]
    if setup == "ext_authz":
        return config
    for route in routes:
        route.pop("typed_per_filter_config", None)
    if setup == "jwt_authn":
        hcm["http_filters"] = [jwt_authn_filter(issuer), *router]
    else:
        hcm["http_filters"] = router
    return config


def render(setup: str, params: EnvoyParams, issuer: BenchIssuer) -> str:
    header = f"# Rendered by bench.envoy_configs for the '{setup}' setup.\n"
    return header + yaml.safe_dump(
        bootstrap(setup, params, issuer), sort_keys=False, default_flow_style=False
    )
