"""Measurement 1: the in-process cost of one check, single thread, CPU time.

Every row is CPU microseconds per call (``time.process_time``), the best of several
repeats, next to a raw ``cryptography`` RS256 verify of the same token measured in
the same run.
"""

from __future__ import annotations

import base64
import cProfile
import logging
import os
import pstats
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from envoy.service.auth.v3 import external_auth_pb2
from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey, RSAKey

from bench.fixtures import AUDIENCE, BenchIssuer, check_request, mint, mint_distinct, policy_text
from ext_authz.authorizer import Authorizer, Runtime
from ext_authz.clock import SystemClock
from ext_authz.decision import Allow
from ext_authz.decision_log import log_decision
from ext_authz.envoy.request import request_view
from ext_authz.envoy.response import check_response
from ext_authz.envoy.server import AuthorizationService
from ext_authz.log import configure
from ext_authz.memo import AnswerMemo
from ext_authz.policy.claim_headers import MAX_HEADER_VALUE_BYTES, claim_headers, unsafe_reason
from ext_authz.policy.loader import compile_policy_text
from ext_authz.policy.model import Policy
from ext_authz.request import RequestView
from ext_authz.tokens.cache import VerifiedTokenCache
from tests.support.doubles import StaticKeys

REFERENCE = "raw cryptography RS256 verify"


@dataclass(frozen=True)
class Row:
    group: str
    label: str
    us: float  # CPU microseconds per call
    calls: int
    note: str = ""


@dataclass(frozen=True)
class Settings:
    min_seconds: float  # CPU time per repeat for repeated-call rows
    repeats: int
    distinct: int  # distinct tokens per algorithm for the unseen-token rows


FULL = Settings(min_seconds=0.25, repeats=5, distinct=1500)
QUICK = Settings(min_seconds=0.08, repeats=3, distinct=400)


def best_us(
    call: Callable[[int], object],
    calls: int,
    repeats: int,
    setup: Callable[[], None] | None = None,
) -> float:
    """Best-of-``repeats`` CPU µs per call of ``call(i)`` for i in range(calls)."""
    best = float("inf")
    for _ in range(repeats):
        if setup is not None:
            setup()
        started = time.process_time()
        for i in range(calls):
            call(i)
        elapsed = time.process_time() - started
        best = min(best, elapsed / calls)
    return best * 1e6


def calibrated(call: Callable[[int], object], settings: Settings) -> tuple[float, int]:
    """Repeat one call often enough for ``settings.min_seconds`` of CPU per repeat."""
    probe = max(best_us(call, 20, 1), 0.05)
    calls = max(50, int(settings.min_seconds * 1e6 / probe))
    return best_us(call, calls, settings.repeats), calls


def _b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def raw_verifier(issuer: BenchIssuer, token: str) -> Callable[[int], object]:
    """Signature verification with ``cryptography`` alone: no parsing, no claims."""
    header_b64, payload_b64, sig_b64 = token.split(".")
    signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
    signature = _b64url_decode(sig_b64)
    public = issuer.key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        rsa_key = public

        def verify_rsa(_i: int) -> None:
            rsa_key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())

        return verify_rsa
    assert isinstance(public, ec.EllipticCurvePublicKey)
    ec_key = public
    half = len(signature) // 2

    def verify_ec(_i: int) -> None:
        r = int.from_bytes(signature[:half], "big")
        s = int.from_bytes(signature[half:], "big")
        ec_key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(hashes.SHA256()))

    return verify_ec


def pyjwt_decoder(issuer: BenchIssuer, token: str) -> Callable[[int], object]:
    public = issuer.key.public_key()

    def decode(_i: int) -> object:
        return jwt.decode(
            token, public, algorithms=[issuer.alg], audience=AUDIENCE, issuer=issuer.iss
        )

    return decode


def joserfc_decoder(issuer: BenchIssuer, token: str) -> Callable[[int], object]:
    jwk = issuer.public_jwk()
    key: RSAKey | ECKey = (
        RSAKey.import_key(jwk) if issuer.alg.startswith("RS") else ECKey.import_key(jwk)
    )
    registry = jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": issuer.iss},
        aud={"essential": True, "value": AUDIENCE},
        exp={"essential": True},
    )

    def decode(_i: int) -> object:
        decoded = jose_jwt.decode(token, key, algorithms=[issuer.alg])
        registry.validate(decoded.claims)
        return decoded

    return decode


def view_for(token: str) -> RequestView:
    return request_view(check_request(token))


class _DecisionLogging:
    """The server's default logging (JSON lines at INFO, handed to the batched writer,
    which formats them on its own thread) sent to /dev/null, or off. `process_time`
    counts the writer thread too."""

    def __init__(self) -> None:
        self._sink = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
        self._root = logging.getLogger()
        self._saved = (list(self._root.handlers), self._root.level)
        self._stderr = sys.stderr

    def info(self) -> None:
        self.off()
        sys.stderr = self._sink
        configure("json", "info", buffered=True)

    def off(self) -> None:
        for handler in self._root.handlers:
            handler.close()
        self._root.handlers[:] = []
        self._root.setLevel(logging.WARNING)
        sys.stderr = self._stderr

    def restore(self) -> None:
        self.off()
        self._root.handlers[:], level = self._saved
        self._root.setLevel(level)
        self._sink.close()


def _expect_allow(decision: object) -> None:
    if not isinstance(decision, Allow):
        raise RuntimeError(f"benchmark token was not allowed: {decision!r}")


def measure_algorithm(
    issuer: BenchIssuer, policy: Policy, settings: Settings, logs: _DecisionLogging
) -> list[Row]:
    group = issuer.alg
    token = mint(issuer)
    clock = SystemClock()
    keys = StaticKeys.of(policy)
    view = view_for(token)
    proto = check_request(token)
    rows: list[Row] = []

    def add(label: str, call: Callable[[int], object], note: str = "") -> None:
        us, calls = calibrated(call, settings)
        rows.append(Row(group, label, us, calls, note))

    add(f"raw cryptography {issuer.alg} verify", raw_verifier(issuer, token), "signature only")
    add("PyJWT decode", pyjwt_decoder(issuer, token), "signature + exp/iss/aud")
    add("joserfc jwt.decode + claims", joserfc_decoder(issuer, token), "signature + exp/iss/aud")

    cached = Authorizer(lambda: policy, keys, clock, VerifiedTokenCache(clock))
    _expect_allow(cached.check(view))
    add("Authorizer.check, seen token", lambda _i: cached.check(view), "verified-token cache hit")

    uncached = Authorizer(lambda: policy, keys, clock, None)
    _expect_allow(uncached.check(view))
    add(
        "Authorizer.check, unseen token",
        lambda _i: uncached.check(view),
        "cache disabled: full verify every call",
    )

    distinct = mint_distinct(issuer, settings.distinct, prefix=f"inproc-{issuer.alg}")
    views = [view_for(t) for t in distinct]
    protos = [check_request(t) for t in distinct]
    holder: list[Authorizer] = []

    def fresh_cache() -> None:
        holder[:] = [Authorizer(lambda: policy, keys, clock, VerifiedTokenCache(clock))]

    fresh_cache()
    _expect_allow(holder[0].check(views[0]))
    us = best_us(lambda i: holder[0].check(views[i]), len(views), settings.repeats, fresh_cache)
    rows.append(
        Row(
            group,
            "Authorizer.check, unique tokens",
            us,
            len(views),
            "cache on: miss, verify, insert",
        )
    )

    service_cached = AuthorizationService(cached, policy.realm)
    logs.off()
    add(
        "servicer Check, seen token, log off",
        lambda _i: service_cached.answer(proto, None),
        "proto in → serialised CheckResponse out, memo off",
    )
    logs.info()
    add(
        "servicer Check, seen token, INFO log",
        lambda _i: service_cached.answer(proto, None),
        "JSON decision line to /dev/null, memo off",
    )
    tokens = VerifiedTokenCache(clock)
    memo: AnswerMemo[bytes] = AnswerMemo(lambda: Runtime(policy, keys), tokens, clock)
    service_memo = AuthorizationService(
        Authorizer(lambda: policy, keys, clock, tokens), policy.realm, memo=memo
    )
    service_memo.answer(proto, None)
    add(
        "servicer Check, seen token, memo hit, INFO log",
        lambda _i: service_memo.answer(proto, None),
        "the shipped default",
    )
    logs.off()
    add(
        "servicer Check, seen token, memo hit, log off",
        lambda _i: service_memo.answer(proto, None),
        "--decision-log off",
    )

    services: list[AuthorizationService] = []

    def fresh_servicer() -> None:
        fresh_cache()
        services[:] = [AuthorizationService(holder[0], policy.realm)]

    for level, label in ((logs.off, "log off"), (logs.info, "INFO log")):
        level()
        us = best_us(
            lambda i: services[0].answer(protos[i], None),
            len(protos),
            settings.repeats,
            fresh_servicer,
        )
        rows.append(Row(group, f"servicer Check, unique tokens, {label}", us, len(protos)))
    logs.off()
    return rows


def measure_edge(
    token: str, policy: Policy, settings: Settings, logs: _DecisionLogging
) -> list[Row]:
    """What the gRPC edge does around the pipeline, alone."""
    group = "edge"
    proto = check_request(token)
    wire = proto.SerializeToString()
    clock = SystemClock()
    authorizer = Authorizer(lambda: policy, StaticKeys.of(policy), clock, VerifiedTokenCache(clock))
    view = view_for(token)
    decision = authorizer.check(view)
    _expect_allow(decision)
    response = check_response(decision, "rid")
    rows: list[Row] = []

    def add(label: str, call: Callable[[int], object], note: str = "") -> None:
        us, calls = calibrated(call, settings)
        rows.append(Row(group, label, us, calls, note))

    add(
        "parse CheckRequest",
        lambda _i: external_auth_pb2.CheckRequest.FromString(wire),
        f"{len(wire)} bytes, upb",
    )
    add("request_view", lambda _i: request_view(proto), "proto → RequestView")
    route = next(r for r in policy.routes if r.headers)
    claims = _claims_of(token)
    add(
        "claim_headers",
        lambda _i: claim_headers(route.headers, claims, policy.identity_headers),
        f"{len(route.headers)} claims → headers, every seen-token check",
    )
    values = [str(claims.get("sub")), str(claims.get("email")), "tenant-corp"]
    add(
        "unsafe_reason, 3 values",
        lambda _i: [unsafe_reason(v) for v in values],
        "per-character generator scan",
    )
    add(
        "same checks with a regex, 3 values (what-if)",
        lambda _i: [_regex_unsafe(v) for v in values],
        "precompiled regex + isascii + length",
    )
    add("check_response (allow)", lambda _i: check_response(decision, "rid"), "3 headers set")
    add("serialize CheckResponse", lambda _i: response.SerializeToString(), "")
    logs.info()
    add(
        "log_decision at INFO",
        lambda _i: log_decision(decision, "rid", 0.001),
        "JSON line to /dev/null",
    )
    logs.off()
    add("log_decision, logging off", lambda _i: log_decision(decision, "rid", 0.001), "")
    return rows


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _regex_unsafe(text: str) -> bool:
    return (
        _CONTROL.search(text) is not None
        or not text.isascii()
        or len(text.encode("utf-8")) > MAX_HEADER_VALUE_BYTES
    )


def _claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def cprofile_top(call: Callable[[int], object], calls: int, top: int = 14) -> list[dict[str, Any]]:
    """cProfile's view of ``calls`` calls: the functions with the most own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(calls):
        call(i)
    profiler.disable()
    stats = pstats.Stats(profiler)
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in table.values()) or 1.0
    rows = []
    for (filename, line, name), (_cc, ncalls, tottime, cumtime, _callers) in table.items():
        short = filename.split("site-packages/")[-1].split("/work/main/")[-1]
        short = short.split("lib/python3")[-1] if "/lib/python3" in short else short
        rows.append(
            {
                "function": f"{name} ({short}:{line})",
                "calls_per_check": ncalls / calls,
                "own_share": tottime / total,
                "cumulative_share": cumtime / total,
            }
        )
    rows.sort(key=lambda r: r["own_share"], reverse=True)
    return rows[:top]


def profile_servicer(
    issuer: BenchIssuer, policy: Policy, settings: Settings, logs: _DecisionLogging
) -> dict[str, Any]:
    """cProfile of the servicer Check for a seen token and for unique tokens, INFO log."""
    clock = SystemClock()
    keys = StaticKeys.of(policy)
    seen = check_request(mint(issuer))
    service = AuthorizationService(
        Authorizer(lambda: policy, keys, clock, VerifiedTokenCache(clock)), policy.realm
    )
    count = max(200, settings.distinct)
    unique = [check_request(t) for t in mint_distinct(issuer, count, prefix="cprofile")]
    fresh = AuthorizationService(
        Authorizer(lambda: policy, keys, clock, VerifiedTokenCache(clock)), policy.realm
    )
    logs.info()
    try:
        service.answer(seen, None)
        return {
            "seen": cprofile_top(lambda _i: service.answer(seen, None), 4 * count),
            "unique": cprofile_top(lambda i: fresh.answer(unique[i], None), count),
        }
    finally:
        logs.off()


def run(issuers: Sequence[BenchIssuer], settings: Settings) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-inproc-") as tmp:
        policy = compile_policy_text(policy_text(*issuers), label="policy.yaml", base_dir=Path(tmp))
    logs = _DecisionLogging()
    try:
        rows: list[Row] = []
        for issuer in issuers:
            rows += measure_algorithm(issuer, policy, settings, logs)
        rows += measure_edge(mint(issuers[0]), policy, settings, logs)
        profile = profile_servicer(issuers[0], policy, settings, logs)
    finally:
        logs.restore()
    reference = next(r.us for r in rows if r.label == REFERENCE)
    return {
        "reference_label": REFERENCE,
        "reference_us": reference,
        "cprofile": profile,
        "rows": [
            {
                "group": r.group,
                "label": r.label,
                "us": r.us,
                "calls": r.calls,
                "note": r.note,
                "x_reference": r.us / reference,
            }
            for r in rows
        ],
    }
