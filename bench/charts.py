"""SVG bar charts of a benchmark run, drawn from the results JSON.

Two charts: requests per second through Envoy per setup (ours beside Envoy's
`jwt_authn`, Envoy with no auth and the do-nothing gRPC server), and server CPU per
check for every gRPC case. Each bar is the median; a thin line spans the rounds (min to
max) where the results have them.

Plain SVG text written here, not matplotlib: horizontal bars with labels are a few
dozen lines, the output is the same bytes for the same numbers (reviewable diffs, no
timestamps or font embedding), and `make bench` needs no plotting stack.
"""

# ruff: noqa: RUF001, RUF002

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

WIDTH = 820
PLOT_MIN = 460  # the bars' share of the width, at least
ROW = 28
BAR = 18
TOP = 58
BOTTOM = 46
CHAR_PX = 6.6  # average width of a 12 px sans-serif character
FONT = "font-family='system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif'"

OURS = "#2b6cb0"
REFERENCE = "#a0aec0"
ENVOY = "#dd6b20"
SPREAD = "#1a202c"

RPS_CHART = "envoy-rps.svg"
DOORS_CHART = "doors-rps.svg"
CPU_CHART = "grpc-cpu-per-check.svg"


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    low: float | None = None  # the spread over rounds, when known
    high: float | None = None
    colour: str = OURS


def nice_step(top: float, ticks: int = 5) -> float:
    """A 1/2/2.5/5 × 10^n step giving about `ticks` intervals up to `top`."""
    if top <= 0:
        return 1.0
    raw = top / ticks
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 2.5, 5.0):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10.0 * magnitude  # pragma: no cover - the loop always returns


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _tick(value: float, step: float) -> str:
    """An axis label with as many decimals as the step needs (2.5 → one)."""
    for digits in range(4):
        scaled = step * 10**digits
        if abs(scaled - round(scaled)) < 1e-9:
            return f"{value:,.{digits}f}"
    return f"{value:g}"


def bar_chart(title: str, unit: str, bars: Sequence[Bar], note: str = "") -> str:
    """A horizontal bar chart as a standalone SVG document."""
    if not bars:
        raise ValueError("a chart needs at least one bar")
    left = int(max(len(b.label) for b in bars) * CHAR_PX) + 16
    width_px = max(WIDTH, left + PLOT_MIN)  # long labels widen the chart, never clip
    right = width_px - 70
    top_value = max(max(b.value, b.high or 0.0) for b in bars)
    step = nice_step(top_value)
    axis_max = step * math.ceil(top_value / step) if top_value > 0 else 1.0
    scale = (right - left) / axis_max
    height = TOP + ROW * len(bars) + BOTTOM
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width_px}' height='{height}' "
        f"viewBox='0 0 {width_px} {height}' role='img' aria-label='{escape(title)}'>",
        f"<title>{escape(title)}</title>",
        f"<rect width='{width_px}' height='{height}' fill='#ffffff'/>",
        f"<text x='12' y='24' {FONT} font-size='16' font-weight='600'>{escape(title)}</text>",
    ]
    if note:
        out.append(
            f"<text x='12' y='42' {FONT} font-size='11' fill='#4a5568'>{escape(note)}</text>"
        )
    axis_y = TOP + ROW * len(bars)
    tick = 0.0
    while tick <= axis_max + step / 1000:
        x = left + tick * scale
        out.append(
            f"<line x1='{x:.1f}' y1='{TOP - 4}' x2='{x:.1f}' y2='{axis_y}' "
            "stroke='#e2e8f0' stroke-width='1'/>"
        )
        out.append(
            f"<text x='{x:.1f}' y='{axis_y + 16}' {FONT} font-size='11' fill='#4a5568' "
            f"text-anchor='middle'>{_tick(tick, step)}</text>"
        )
        tick += step
    out.append(
        f"<text x='{(left + right) / 2:.1f}' y='{axis_y + 34}' {FONT} font-size='12' "
        f"fill='#2d3748' text-anchor='middle'>{escape(unit)}</text>"
    )
    for index, bar in enumerate(bars):
        y = TOP + ROW * index
        mid = y + ROW / 2
        width = max(bar.value * scale, 1.0)
        out.append(
            f"<text x='{left - 8}' y='{mid + 4:.1f}' {FONT} font-size='12' fill='#1a202c' "
            f"text-anchor='end'>{escape(bar.label)}</text>"
        )
        out.append(
            f"<rect x='{left}' y='{mid - BAR / 2:.1f}' width='{width:.1f}' height='{BAR}' "
            f"fill='{bar.colour}'><title>{escape(bar.label)}: {_number(bar.value)} "
            f"{escape(unit)}</title></rect>"
        )
        if bar.low is not None and bar.high is not None and bar.high > bar.low:
            x1, x2 = left + bar.low * scale, left + bar.high * scale
            out.append(
                f"<line x1='{x1:.1f}' y1='{mid:.1f}' x2='{x2:.1f}' y2='{mid:.1f}' "
                f"stroke='{SPREAD}' stroke-width='1.5'/>"
            )
            for x in (x1, x2):
                out.append(
                    f"<line x1='{x:.1f}' y1='{mid - 5:.1f}' x2='{x:.1f}' y2='{mid + 5:.1f}' "
                    f"stroke='{SPREAD}' stroke-width='1.5'/>"
                )
        end = left + max(width, (bar.high or 0.0) * scale)
        out.append(
            f"<text x='{end + 6:.1f}' y='{mid + 4:.1f}' {FONT} font-size='11' "
            f"fill='#1a202c'>{_number(bar.value)}</text>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _colour_of_setup(name: str, server: str | None) -> str:
    if name == "jwt_authn":
        return ENVOY
    if name == "none" or name.endswith("-trivial"):
        return REFERENCE
    return OURS if server != "trivial" else REFERENCE


def rps_bars(envoy: dict[str, Any]) -> list[Bar]:
    """Closed-loop req/s (wrk median) of every Envoy setup that has it."""
    bars = []
    for name, setup in envoy.get("setups", {}).items():
        wrk = setup.get("wrk")
        if not wrk:
            continue
        rounds = [float(x) for x in wrk.get("rps_all", [])]
        bars.append(
            Bar(
                label=f"{name}: {setup.get('description', '')}".rstrip(": "),
                value=float(wrk["rps"]),
                low=min(rounds) if len(rounds) > 1 else None,
                high=max(rounds) if len(rounds) > 1 else None,
                colour=_colour_of_setup(name, None),
            )
        )
    return bars


def door_bars(http: dict[str, Any], mode: str = "same") -> list[Bar]:
    """Closed-loop req/s of each setup of the two-doors run (`mode`: one token, `same`,
    or a distinct token per request, `distinct`)."""
    bars = []
    for name, setup in http.get("setups", {}).items():
        measured = setup.get(mode)
        if not measured or not measured.get("rps"):
            continue
        bars.append(
            Bar(
                label=f"{name}: {setup.get('description', '')}".rstrip(": "),
                value=float(measured["rps"]),
                colour=_colour_of_setup(name, "trivial" if name.endswith("-trivial") else None),
            )
        )
    return bars


def cpu_bars(grpc: dict[str, Any]) -> list[Bar]:
    """Server CPU µs per check (median trial, min–max over trials) for each gRPC case."""
    bars = []
    for row in grpc.get("results", []):
        bars.append(
            Bar(
                label=str(row["label"]),
                value=float(row["server_us"]),
                low=float(row["server_us_min"]) if "server_us_min" in row else None,
                high=float(row["server_us_max"]) if "server_us_max" in row else None,
                colour=REFERENCE if row.get("handler") == "trivial" else OURS,
            )
        )
    return bars


@dataclass(frozen=True)
class Chart:
    file: str
    title: str


def write_charts(results: dict[str, Any], out_dir: Path) -> list[Chart]:
    """Write the charts the results have data for into `out_dir`; return them in order."""
    written: list[Chart] = []
    envoy = results.get("envoy")
    if envoy:
        bars = rps_bars(envoy)
        if bars:
            title = "Requests per second through one Envoy worker (wrk, closed loop)"
            note = (
                f"{envoy.get('connections', '?')} connections, same RS256 token; "
                "median of the rounds, line: min–max. Grey: no auth / do-nothing server."
            )
            written.append(_write(out_dir, RPS_CHART, bar_chart(title, "req/s", bars, note), title))
    http = results.get("http")
    if http:
        bars = door_bars(http)
        if bars:
            title = "Both doors through one Envoy worker: req/s, one RS256 token (wrk)"
            note = (
                f"{http.get('connections', '?')} connections; HTTP door via http_service, "
                "gRPC door via ext_authz gRPC. Grey: no auth / do-nothing servers."
            )
            written.append(
                _write(out_dir, DOORS_CHART, bar_chart(title, "req/s", bars, note), title)
            )
    grpc = results.get("grpc")
    if grpc and grpc.get("results"):
        title = "Server CPU per check through gRPC, by case"
        note = (
            f"{grpc.get('concurrency', '?')} checks in flight on one channel; median trial, "
            "line: min–max over trials. Grey: do-nothing handler."
        )
        bars = cpu_bars(grpc)
        written.append(
            _write(
                out_dir, CPU_CHART, bar_chart(title, "server CPU µs per check", bars, note), title
            )
        )
    return written


def _write(out_dir: Path, name: str, svg: str, title: str) -> Chart:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / name).write_text(svg, encoding="utf-8")
    return Chart(name, title)


def markdown(charts: Iterable[dict[str, str]]) -> list[str]:
    """The report's chart section: `charts` as recorded in the results (`file` relative
    to the report, `title`)."""
    charts = list(charts)
    if not charts:
        return []
    out = ["## Charts", ""]
    for chart in charts:
        out += [f"![{chart['title']}]({chart['file']})", ""]
    return out


CHARTS_DIR = "charts"


def write_for_report(results: dict[str, Any], report: Path) -> list[dict[str, str]]:
    """Write the charts beside `report` (in `charts/`) and return them as the results
    record them, with paths relative to the report."""
    written = write_charts(results, report.parent / CHARTS_DIR)
    return [{"file": f"{CHARTS_DIR}/{c.file}", "title": c.title} for c in written]
