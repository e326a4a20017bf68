"""Moved: the Envoy config renderer is a deployment tool, `ext_authz.deploy.envoy_config`
(`python -m ext_authz.deploy.envoy_config`). These names stay importable from here only
while a test still imports them from the old place."""

from __future__ import annotations

from ext_authz.deploy.envoy_config import EnvoyParams, UpstreamTls

__all__ = ["EnvoyParams", "UpstreamTls"]
