"""The HTTP door's section of docs/benchmarks.md, with its verdict rows."""

# ruff: noqa: RUF001

from __future__ import annotations

from typing import Any

from bench.http_bench import (
    HTTP_ADDED_P99_TARGET_MS,
    HTTP_RPS_STRETCH,
    HTTP_RPS_TARGET,
    SERVER_CHOICE,
)


def _f(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return out + ["| " + " | ".join(row) + " |" for row in rows]


def _ratio(setups: dict[str, Any], name: str, mode: str) -> float | None:
    ours, theirs = setups.get(name) or {}, setups.get("jwt_authn") or {}
    if not ours.get(mode) or not theirs.get(mode) or not theirs[mode]["rps"]:
        return None
    return float(ours[mode]["rps"]) / float(theirs[mode]["rps"])


def _added_p99(setups: dict[str, Any], name: str) -> float | None:
    ours, ref = setups.get(name) or {}, setups.get("none") or {}
    if not ours.get("rate") or not ref.get("rate"):
        return None
    return float(ours["rate"]["p99_ms"]) - float(ref["rate"]["p99_ms"])


def verdicts(data: dict[str, Any]) -> list[list[str]]:
    setups: dict[str, Any] = data["setups"]
    rows: list[list[str]] = []
    for mode, label in (("same", "one token"), ("distinct", "a distinct token per request")):
        ratio = _ratio(setups, "http", mode)
        if ratio is None:
            continue
        rows.append(
            [
                f"HTTP door ≥ {HTTP_RPS_TARGET:g}× jwt_authn req/s ({label})",
                f"{ratio:.2f}×",
                "**met**" if ratio >= HTTP_RPS_TARGET else "**missed**",
            ]
        )
        rows.append(
            [
                f"stretch: HTTP door ≥ {HTTP_RPS_STRETCH:g}× jwt_authn ({label})",
                f"{ratio:.2f}×",
                "**met**" if ratio >= HTTP_RPS_STRETCH else "**missed**",
            ]
        )
    added = _added_p99(setups, "http")
    if added is not None:
        rows.append(
            [
                f"HTTP door p99 added at {data['rate']:g} req/s < {HTTP_ADDED_P99_TARGET_MS:g} ms",
                f"{added:.2f} ms",
                "**met**" if added < HTTP_ADDED_P99_TARGET_MS else "**missed**",
            ]
        )
    return rows


def http_section(data: dict[str, Any] | None) -> list[str]:
    if not data:
        return []
    setups: dict[str, Any] = data["setups"]
    lines = [
        "## The HTTP door through Envoy (http_service) vs jwt_authn and the gRPC door",
        "",
        f"One Envoy per setup (`--concurrency 1`), {data['token_alg']} tokens, wrk -t1 "
        f"-c{data['connections']}, {data['rounds']} interleaved round(s) of {data['seconds']} s "
        "per setup and token mode. *one token*: the same token on every request; "
        f"*distinct*: a wrk Lua script walks {data['distinct_tokens']:,} tokens, going on where "
        "its last run stopped (a token recurs only after more requests than the "
        "verified-token cache's 10,000 entries: no cache hit). Server CPU is the auth server's "
        "CPU time over the requests it answered. The shipped defaults (decision log on).",
        "",
    ]
    targets = verdicts(data)
    if targets:
        lines += [*_table(["target", "measured", "verdict"], targets), ""]
    rows = []
    for name, setup in setups.items():
        same, distinct, rate = setup.get("same"), setup.get("distinct"), setup.get("rate")
        added = _added_p99(setups, name)
        rows.append(
            [
                f"`{name}`: {setup['description']}",
                _f(same["rps"]) if same else "–",
                f"{_ratio(setups, name, 'same'):.2f}×" if _ratio(setups, name, "same") else "–",
                _f(distinct["rps"]) if distinct else "–",
                f"{_ratio(setups, name, 'distinct'):.2f}×"
                if _ratio(setups, name, "distinct")
                else "–",
                _f(same["server_us_per_request"]) if same and setup.get("sanity") else "–",
                _f(distinct["server_us_per_request"]) if distinct else "–",
                f"{rate['p50_ms']:.2f} / {rate['p99_ms']:.2f}" if rate else "–",
                f"{added:.2f}" if added is not None and name != "none" else "–",
                ", ".join(f"{k} {v}" for k, v in setup["sanity"].items()),
            ]
        )
    lines += _table(
        [
            "setup",
            "req/s (one token)",
            "× jwt_authn",
            "req/s (distinct)",
            "× jwt_authn",
            "server µs/check (one)",
            "server µs/check (distinct)",
            f"p50 / p99 ms at {data['rate']:g}/s",
            "p99 added ms",
            "sanity (good, none, forged)",
        ],
        rows,
    )
    lines.append("")
    lines += server_choice(data)
    return lines


def server_choice(data: dict[str, Any]) -> list[str]:
    """The same handler on three servers: the measurement behind the shipped choice."""
    setups: dict[str, Any] = data["setups"]
    present = [n for n in SERVER_CHOICE if (setups.get(n) or {}).get("same")]
    if len(present) < 2:
        note = data.get("server_choice_note")
        return [f"Server choice not measured in this run{f': {note}' if note else ''}.", ""]
    raw = setups["http"]["same"] if "http" in present else None
    rows = []
    for name in present:
        same, distinct = setups[name]["same"], setups[name].get("distinct")
        rows.append(
            [
                {"http": "raw asyncio protocol, uvloop + httptools (shipped)"}.get(
                    name, setups[name]["description"]
                ),
                _f(same["rps"]),
                f"{same['rps'] / raw['rps']:.2f}×" if raw and raw["rps"] else "–",
                _f(same["server_us_per_request"]),
                _f(distinct["rps"]) if distinct else "–",
            ]
        )
    return [
        "### Choosing the HTTP server",
        "",
        "The door's handler (request view, check, decision log, answer) hosted on each "
        "server, behind the same Envoy http_service, in the same interleaved rounds. "
        "Server CPU includes worker processes.",
        "",
        *_table(
            ["server", "req/s (one token)", "× shipped", "server µs/check", "req/s (distinct)"],
            rows,
        ),
        "",
    ]
