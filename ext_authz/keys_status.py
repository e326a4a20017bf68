"""`ext-authz keys status --config PATH`: every issuer's keys as a server started now
would see them.

It loads the policy and runs the key manager once, as `serve` does at start-up: the
last good key sets from `keys.cache_dir`, a key set another replica put in the shared
cache, or a fetch from the issuer. Then it prints, per issuer, the key ids, their
age and origin, the last fetch result, the next refresh, and whether the keys are
fresh, stale or missing.

Exit status: 0 when every issuer has keys, 1 when the policy does not load, 2 when
some issuer has no keys.

It lives beside the command line, not in `keys/`: it loads a policy, and `keys/`
never imports the policy.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TextIO

from ext_authz.clock import Clock, SystemClock
from ext_authz.keys.events import RESULT_OK, IssuerReport, KeyOrigin
from ext_authz.keys.manager import KeyManager
from ext_authz.keys.store import KeyStatus
from ext_authz.policy.loader import PolicyError, load_policy

EXIT_OK = 0
EXIT_POLICY = 1
EXIT_NO_KEYS = 2
DEFAULT_TIMEOUT = 60.0


def keys_status(
    config: Path,
    *,
    out: TextIO | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    clock: Clock | None = None,
    quiet_logs: bool = True,
) -> int:
    if quiet_logs:
        from ext_authz.log import configure

        configure("text", "error")
    stream = out if out is not None else sys.stdout
    try:
        policy = load_policy(config)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_POLICY
    clock = clock or SystemClock()
    manager = KeyManager(clock=clock)
    manager.start(policy.key_sources)
    try:
        manager.wait_attempted(timeout)
        reports = manager.report()
    finally:
        manager.stop()
    now = clock.now()
    for report in reports.values():
        stream.write(format_report(report, now))
    missing = [r.name for r in reports.values() if r.status is KeyStatus.FAILED]
    if missing:
        stream.write(f"\nno keys for: {', '.join(missing)}\n")
        return EXIT_NO_KEYS
    return EXIT_OK


def format_report(report: IssuerReport, now: float) -> str:
    lines = [f"{report.name}: {report.status.value}"]

    def row(label: str, value: str) -> None:
        lines.append(f"  {label + ':':<14} {value}")

    if report.source is KeyOrigin.STATIC:
        row("keys", _kids(report.kids))
        return "\n".join(lines) + "\n"
    row("issuer", report.issuer)
    row("keys", _kids(report.kids))
    if report.fetched_at is not None and report.source is not None:
        row(
            "fetched",
            f"{_when(report.fetched_at, now)}, from {report.source.value}",
        )
    if report.fresh_until is not None:
        row("fresh until", _when(report.fresh_until, now))
    if report.expires_at is not None:
        row("served until", _when(report.expires_at, now))
    if report.last_result is None:
        row("last fetch", "none yet")
    elif report.last_result == RESULT_OK:
        assert report.last_attempt_at is not None
        row("last fetch", f"ok ({_relative(report.last_attempt_at - now)})")
    else:
        failures = f"; {report.failures} failed in a row" if report.failures > 1 else ""
        row("last fetch", f"{report.last_result}: {report.last_error}{failures}")
    if report.next_refresh_at is not None:
        row("next refresh", _relative(report.next_refresh_at - now))
    cache = report.cache
    if report.cache_dir is not None:
        cache += f"; on disk in {report.cache_dir}"
    row("cache", cache)
    return "\n".join(lines) + "\n"


def _kids(kids: tuple[str, ...]) -> str:
    return ", ".join(kids) if kids else "(none)"


def _when(at: float, now: float) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
    return f"{stamp} ({_relative(at - now)})"


def _relative(delta: float) -> str:
    span = _span(abs(delta))
    if abs(delta) < 1:
        return "now"
    return f"in {span}" if delta > 0 else f"{span} ago"


def _span(seconds: float) -> str:
    total = int(seconds)
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    shown = [f"{value}{unit}" for value, unit in parts if value][:2]
    return "".join(shown) or "0s"
