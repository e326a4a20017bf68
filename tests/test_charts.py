"""The benchmark charts: SVG drawn from a results JSON in `make bench`'s format
(tests/golden/bench-results.json: a quick gRPC run and an Envoy section)."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from bench import charts, report

FIXTURE = Path(__file__).resolve().parent / "golden" / "bench-results.json"
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def results() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(FIXTURE.read_text(encoding="utf-8"))
    return document


def bars_of(svg: Path) -> dict[str, tuple[float, str]]:
    """label -> (bar width, fill) of every bar in a chart written by bench.charts."""
    root = ET.parse(svg).getroot()  # noqa: S314 - our own file
    bars = {}
    for rect in root.iter(f"{SVG}rect"):
        title = rect.find(f"{SVG}title")
        if title is None or title.text is None:
            continue  # the background
        label = title.text.rsplit(": ", 1)[0]
        bars[label] = (float(rect.attrib["width"]), rect.attrib["fill"])
    return bars


def test_the_rps_chart_has_a_bar_per_envoy_setup_to_scale(
    results: dict[str, Any], tmp_path: Path
) -> None:
    written = charts.write_charts(results, tmp_path)
    assert [c.file for c in written] == [charts.RPS_CHART, charts.CPU_CHART]
    bars = bars_of(tmp_path / charts.RPS_CHART)
    setups = results["envoy"]["setups"]
    labels = {name: f"{name}: {s['description']}" for name, s in setups.items()}
    assert set(bars) == set(labels.values())
    ours, jwt = bars[labels["ext_authz"]], bars[labels["jwt_authn"]]
    expected = setups["jwt_authn"]["wrk"]["rps"] / setups["ext_authz"]["wrk"]["rps"]
    assert jwt[0] / ours[0] == pytest.approx(expected, rel=0.01)
    assert ours[1] == charts.OURS
    assert jwt[1] == charts.ENVOY
    assert bars[labels["none"]][1] == charts.REFERENCE
    assert bars[labels["ext_authz-trivial"]][1] == charts.REFERENCE
    # the axis reaches past the biggest round, so no bar or spread leaves the plot
    root = ET.parse(tmp_path / charts.RPS_CHART).getroot()  # noqa: S314
    width = float(root.attrib["width"])
    for line in root.iter(f"{SVG}line"):
        assert float(line.attrib["x2"]) <= width


def test_the_cpu_chart_has_every_grpc_case_with_its_spread(
    results: dict[str, Any], tmp_path: Path
) -> None:
    charts.write_charts(results, tmp_path)
    bars = bars_of(tmp_path / charts.CPU_CHART)
    rows = results["grpc"]["results"]
    assert set(bars) == {row["label"] for row in rows}
    assert any("traced (OTLP)" in label for label in bars)
    widths = {row["label"]: row["server_us"] for row in rows}
    first, second = rows[0]["label"], rows[2]["label"]
    assert bars[first][0] / bars[second][0] == pytest.approx(
        widths[first] / widths[second], rel=0.01
    )
    trivial = [row["label"] for row in rows if row["handler"] == "trivial"]
    assert trivial
    assert all(bars[label][1] == charts.REFERENCE for label in trivial)
    text = (tmp_path / charts.CPU_CHART).read_text(encoding="utf-8")
    spreads = text.count("stroke-width='1.5'")
    with_spread = sum(1 for r in rows if r["server_us_max"] > r["server_us_min"])
    assert spreads == 3 * with_spread  # a span and two end ticks each


def test_the_same_results_give_the_same_bytes(results: dict[str, Any], tmp_path: Path) -> None:
    charts.write_charts(results, tmp_path / "a")
    charts.write_charts(copy.deepcopy(results), tmp_path / "b")
    for name in (charts.RPS_CHART, charts.CPU_CHART):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_labels_are_escaped() -> None:
    svg = charts.bar_chart("a < b & c", "µs", [charts.Bar("<script>&", 3.0, 1.0, 4.0)])
    root = ET.fromstring(svg)  # noqa: S314
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "<script>&" in texts
    assert "a < b & c" in texts


def test_sections_without_data_draw_no_chart(results: dict[str, Any], tmp_path: Path) -> None:
    del results["envoy"]
    assert [c.file for c in charts.write_charts(results, tmp_path)] == [charts.CPU_CHART]
    assert charts.write_charts({"grpc": {"results": []}}, tmp_path / "none") == []
    with pytest.raises(ValueError, match="at least one bar"):
        charts.bar_chart("empty", "req/s", [])


@pytest.mark.parametrize(
    ("top", "step"),
    [(48_203, 10_000), (15_836, 5_000), (552, 200), (7.5, 2), (0.3, 0.1), (1, 0.2), (0, 1)],
)
def test_axis_steps_are_round_numbers(top: float, step: float) -> None:
    assert charts.nice_step(top) == pytest.approx(step)


def test_the_report_embeds_the_charts_and_the_tracing_cost(
    results: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "docs" / "benchmarks.md"
    results["charts"] = charts.write_for_report(results, out)
    assert results["charts"] == [
        {"file": "charts/envoy-rps.svg", "title": charts.write_charts(results, tmp_path)[0].title},
        {
            "file": "charts/grpc-cpu-per-check.svg",
            "title": "Server CPU per check through gRPC, by case",
        },
    ]
    text = report.render(results)
    for chart in results["charts"]:
        assert f"![{chart['title']}]({chart['file']})" in text
        assert (out.parent / chart["file"]).is_file()
    assert text.index("## Charts") < text.index("## 2. Server CPU per check")
    assert "### Tracing on" in text
    row = next(line for line in text.splitlines() if line.startswith("| seen token, log info"))
    traced = next(r for r in results["grpc"]["results"] if r["name"] == "sync-seen-info-traced")
    plain = next(r for r in results["grpc"]["results"] if r["name"] == "sync-seen-info")
    assert f"**{traced['server_us'] - plain['server_us']:+.0f}**" in row


@pytest.mark.parametrize(
    ("value", "step", "label"),
    [(0, 10_000, "0"), (40_000, 10_000, "40,000"), (7.5, 2.5, "7.5"), (0.3, 0.1, "0.3")],
)
def test_axis_labels_have_the_decimals_the_step_needs(
    value: float, step: float, label: str
) -> None:
    assert charts._tick(value, step) == label


def test_the_doors_chart_has_a_bar_per_setup_with_its_rps(tmp_path: Path) -> None:
    http = {
        "connections": 32,
        "setups": {
            "jwt_authn": {"description": "Envoy + jwt_authn", "same": {"rps": 8000.0}},
            "http": {"description": "HTTP door", "same": {"rps": 7000.0}},
            "http-trivial": {"description": "do-nothing HTTP", "same": {"rps": 7200.0}},
            "grpc": {"description": "gRPC door", "same": {}},  # not measured: no bar
        },
    }
    bars = charts.door_bars(http)
    assert [(bar.label.split(":")[0], bar.value) for bar in bars] == [
        ("jwt_authn", 8000.0),
        ("http", 7000.0),
        ("http-trivial", 7200.0),
    ]
    assert bars[0].colour == charts.ENVOY and bars[2].colour == charts.REFERENCE
    written = charts.write_charts({"http": http}, tmp_path)
    assert [chart.file for chart in written] == [charts.DOORS_CHART]
    svg = (tmp_path / charts.DOORS_CHART).read_text(encoding="utf-8")
    assert "7,000" in svg and "8,000" in svg
