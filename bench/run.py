"""``make bench``: run every measurement and write docs/benchmarks.md.

python -m bench.run            # everything, about 15 minutes on 2 cores (the HTTP door: ~5)
python -m bench.run --quick    # about 2 minutes, fewer cases and shorter loads
python -m bench.run --only grpc --out /tmp/bench.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import charts, envoy_bench, grpc_bench, http_bench, inproc, jwe_bench, machine, report
from bench.fixtures import make_issuers
from bench.procs import BenchError
from bench.profile import ensure_py_spy
from bench.wrk import find_wrk, wrk_version

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("inproc", "jwe", "grpc", "envoy", "http")


def progress(message: str) -> None:
    print(message, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a shorter run (about 2 minutes)")
    parser.add_argument(
        "--only", choices=SECTIONS, action="append", help="run only this section (repeatable)"
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profiles")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "benchmarks.md", help="report file"
    )
    parser.add_argument(
        "--results-dir", type=Path, default=ROOT / "bench" / "results", help="raw JSON"
    )
    args = parser.parse_args(argv)
    sections = tuple(args.only or SECTIONS)
    started = time.monotonic()
    mode = "quick" if args.quick else "full"
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": mode,
        "sections": list(sections),
    }
    progress(f"bench: {mode} run of {', '.join(sections)}")
    results["machine"] = machine.describe()
    results["idle_before"] = machine.wait_until_quiet(
        limit=10.0 if args.quick else 30.0, progress=progress
    )
    wrk_path: str | None = None
    wrk_note = "not needed for this run"
    if "envoy" in sections or "http" in sections:
        wrk_path, wrk_note = find_wrk(progress=progress)
        if wrk_path is None:
            progress(f"bench: {wrk_note}; closed-loop req/s will be skipped")
    results["wrk"] = {
        "path": wrk_path,
        "note": wrk_note,
        "summary": (
            f"{wrk_version(wrk_path)} (closed loop); bench/httpload.py (fixed rate)"
            if wrk_path
            else f"wrk unavailable ({wrk_note}); bench/httpload.py (fixed rate)"
        ),
    }
    profile = not args.quick and not args.no_profile and "grpc" in sections
    results["profile_note"] = "skipped (--quick or --no-profile)"
    if profile:
        if ensure_py_spy(progress) is None:
            profile = False
            results["profile_note"] = "py-spy could not be installed"
        results["machine"] = machine.describe()
    corp, partner = make_issuers()
    try:
        with tempfile.TemporaryDirectory(prefix="ext-authz-bench-") as tmp:
            work = Path(tmp)
            if "inproc" in sections:
                progress("1. in-process pipeline cost")
                results["inproc"] = inproc.run(
                    (corp, partner), inproc.QUICK if args.quick else inproc.FULL
                )
            if "jwe" in sections:
                progress("1b. encrypted tokens: decrypt + verify")
                (work / "jwe").mkdir()
                rows = jwe_bench.run(work / "jwe", seconds=0.3 if args.quick else 1.0)
                results["jwe"] = [
                    {
                        "case": r.case,
                        "ours_us": r.ours_us,
                        "raw_us": r.raw_us,
                        "check_us": r.check_us,
                        "reference": r.reference,
                    }
                    for r in rows
                ]
            if "grpc" in sections:
                progress("2. server CPU per check through gRPC")
                (work / "grpc").mkdir()
                results["grpc"] = grpc_bench.run(
                    corp,
                    grpc_bench.QUICK if args.quick else grpc_bench.FULL,
                    work / "grpc",
                    profile=profile,
                    progress=progress,
                )
            if "envoy" in sections:
                progress("3. through Envoy: ext_authz vs jwt_authn")
                (work / "envoy").mkdir()
                results["envoy"] = envoy_bench.run(
                    corp,
                    envoy_bench.QUICK if args.quick else envoy_bench.FULL,
                    work / "envoy",
                    wrk_path,
                    progress=progress,
                )
            if "http" in sections:
                progress("4. through Envoy: the HTTP door vs jwt_authn and the gRPC door")
                (work / "http").mkdir()
                results["http"] = http_bench.run(
                    corp,
                    http_bench.QUICK if args.quick else http_bench.FULL,
                    work / "http",
                    wrk_path,
                    progress=progress,
                )
    except BenchError as exc:
        print(f"bench: failed: {exc}", file=sys.stderr)
        return 1
    results["duration_s"] = time.monotonic() - started
    results["idle_after"] = machine.idle_share()
    end_commit = machine.project_commit()
    if end_commit != results["machine"]["commit"]:
        results["machine"]["commit"] = (
            f"{results['machine']['commit']} at the start, {end_commit} at the end "
            "(the code changed during the run)"
        )
    results["charts"] = charts.write_for_report(results, args.out)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    raw = args.results_dir / f"{stamp}-{mode}.json"
    raw.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report.render(results), encoding="utf-8")
    progress(f"bench: wrote {args.out} and {raw} in {results['duration_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
