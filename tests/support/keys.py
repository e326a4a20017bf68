"""Policies with remote issuers served by real loopback JWKS servers, and the small
helpers the key tests share (a bounded wait, a check of one token)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ext_authz.authorizer import Authorizer
from ext_authz.clock import Clock
from ext_authz.decision import Allow, Decision
from ext_authz.errors import DenialReason
from ext_authz.keys.store import KeyProvider
from ext_authz.policy.loader import compile_policy_text
from ext_authz.policy.model import Policy
from ext_authz.request import RequestView
from ext_authz.tokens.cache import VerifiedTokenCache
from tests.support.jwks_server import JwksServer
from tests.support.tokens import AUDIENCE


@dataclass
class Remote:
    """An issuer whose keys come from `server` (by `jwks_uri`, or by discovery)."""

    name: str
    iss: str
    server: JwksServer
    alg: str = "RS256"
    discovery: bool = False
    keys: Mapping[str, str] = field(default_factory=dict)  # per-issuer overrides


def policy_text(remotes: list[Remote], keys: Mapping[str, str] | None = None) -> str:
    lines = ["realm: keys-test", "issuers:"]
    for remote in remotes:
        lines += [f"  {remote.name}:"]
        if remote.discovery:
            lines += [f"    issuer: {json.dumps(remote.server.base_url)}", "    discovery: true"]
        else:
            lines += [f"    issuer: {json.dumps(remote.iss)}"]
            lines += [f"    jwks_uri: {remote.server.jwks_uri}"]
        lines += [f"    audiences: [{AUDIENCE}]", f"    algorithms: [{remote.alg}]"]
        if remote.keys:
            lines.append("    keys:")
            lines += [f"      {k}: {json.dumps(v)}" for k, v in remote.keys.items()]
    if keys:
        lines.append("keys:")
        lines += [f"  {k}: {json.dumps(v)}" for k, v in keys.items()]
    lines += [
        "routes:",
        "  - name: api",
        "    match: { path_prefix: / }",
        "    require: {}",
    ]
    return "\n".join(lines) + "\n"


def make_policy(
    tmp_path: Path, remotes: list[Remote], keys: Mapping[str, str] | None = None
) -> Policy:
    return compile_policy_text(policy_text(remotes, keys), label="keys.yaml", base_dir=tmp_path)


def write_policy(path: Path, remotes: list[Remote], keys: Mapping[str, str] | None = None) -> Path:
    path.write_text(policy_text(remotes, keys), encoding="utf-8")
    return path


def eventually(
    condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Wait (bounded) for something the key thread does on its own."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


class Checker:
    """Runs tokens through the real authorizer (with its verified-token cache) over a
    key provider, and answers "allow" or the denial reason."""

    def __init__(self, policy: Policy, keys: KeyProvider, clock: Clock) -> None:
        self.cache = VerifiedTokenCache(clock)
        self.authorizer = Authorizer(lambda: policy, keys, clock, self.cache)

    def __call__(self, token: str) -> str:
        view = RequestView("GET", "/orders", "api.test", {"authorization": f"Bearer {token}"})
        return outcome(self.authorizer.check(view))


def outcome(decision: Decision) -> str:
    if isinstance(decision, Allow):
        return "allow"
    return decision.reason.value


KEYS_UNAVAILABLE = DenialReason.KEYS_UNAVAILABLE.value
KEY_UNKNOWN = DenialReason.KEY_UNKNOWN.value
