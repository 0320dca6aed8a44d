"""`jueying capacity --format markdown|html`: the capacity report for a ticket or a web page, with the trend of
healthy GPUs per day as a chart (a text sparkline and a table in Markdown; an inline SVG in HTML).

The page is self-contained like the audit report (report.py, whose escaping and CSS it shares): inline CSS and
SVG, no script, no link, no image, and a Content-Security-Policy that forbids loading anything. The datasheet
sources are printed as text, not links. Everything a node or the inventory supplied is escaped for the format.
The SVG is hand-written (a dozen elements): a plotting library would be a heavy dependency for one bar chart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jueying_cli.audit.capacity import CapacityReport, GroupCapacity, sparkline
from jueying_cli.audit.datasheets import PRECISIONS, datasheet_for
from jueying_cli.audit.report import _CSS, _h, _md, _stamp, _table
from jueying_cli.vocab import HealthClass

CLASSES = tuple(HealthClass)
_PRECISION_LABEL = {"fp64": "FP64", "fp64_tensor": "FP64 Tensor", "fp32": "FP32", "tf32": "TF32", "bf16": "BF16",
                    "fp16": "FP16", "fp8": "FP8"}
_CLASSES_HEADER = "ok/deg/drain/down/unr"


def _n(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _classes(counts: dict[HealthClass, int]) -> str:
    return "/".join(str(counts[c]) for c in CLASSES)


def _group_rows(report: CapacityReport) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    for g in [*report.groups, report.total]:
        doc = g.to_json()
        tflops, per_kw = doc["peak_tflops_dense"], doc["tflops_per_kw"]
        spare = (f"{sum(g.spare_gpus.values())} ({g.spare_gpus[HealthClass.HEALTHY]} healthy)"
                 if any(g.spare_nodes.values()) else "-")
        rows.append((g.name, _classes(g.nodes), _classes(g.gpus), spare,
                     _n(tflops.get("fp64_tensor", tflops.get("fp64")), 1), _n(tflops.get("tf32"), 1),
                     _n(tflops.get("bf16", tflops.get("fp16")), 1), _n(tflops.get("fp8"), 1),
                     f"{_n(g.power_watts / 1000, 1)}/{_n(g.power_limit_watts / 1000, 1)}",
                     _n(per_kw.get("bf16", per_kw.get("fp16")), 1), _n(g.energy_kwh, 1)))
    return rows


_GROUP_HEADERS = ("NODES " + _CLASSES_HEADER, "GPUS " + _CLASSES_HEADER, "SPARE GPUS", "FP64 TC TF", "TF32 TF",
                  "BF16 TF", "FP8 TF", "POWER kW draw/limit", "BF16 TF/kW", "ENERGY kWh")


def _throughput_rows(total: GroupCapacity) -> list[tuple[object, ...]]:
    tflops: dict[str, Any] = total.to_json()["peak_tflops_dense"]
    return [(_PRECISION_LABEL[p], _n(tflops[p], 1)) for p in PRECISIONS if p in tflops]


def _sources(report: CapacityReport) -> list[tuple[str, str, str]]:
    """(NVML name, datasheet row, source URL) for every healthy model of the report that the table knows."""
    found = []
    for name in sorted(report.total.healthy_models):
        sheet = datasheet_for(name)
        if sheet is not None:
            found.append((name, sheet.model, sheet.source))
    return found


def _unknown(report: CapacityReport) -> list[str]:
    return sorted({m for g in report.groups for m in g.to_json()["unknown_models"]})


def _problem_rows(report: CapacityReport) -> list[tuple[object, ...]]:
    return [(n.node + (" (spare)" if n.spare else ""), n.state, _classes(n.gpus), n.reason)
            for n in report.nodes if n.state != HealthClass.HEALTHY]


def _floor_lines(report: CapacityReport) -> list[str]:
    if report.floor is None:
        return []
    verdict = "holds" if report.floor_met else "DOES NOT HOLD"
    lines = [f"floor {report.floor} GPUs {verdict}: {report.schedulable_healthy} healthy schedulable now"]
    for loss in report.losses:
        if loss.largest is None:
            lines.append(f"losing a {loss.level}: the inventory names no {loss.level} for these nodes")
        else:
            lines.append(f"losing {loss.level} {loss.largest} ({loss.lost_gpus} healthy GPUs): {loss.remaining_gpus} "
                         f"left, {'above' if loss.above_floor else 'BELOW'} the floor")
    return lines


def headline(report: CapacityReport) -> str:
    t = report.total
    return (f"{t.gpus[HealthClass.HEALTHY]} of {sum(t.gpus.values())} GPU(s) healthy on "
            f"{t.nodes[HealthClass.HEALTHY]} of {sum(t.nodes.values())} node(s) in service, by {report.by}"
            + (f"; {sum(t.spare_gpus.values())} spare GPU(s)" if any(t.spare_nodes.values()) else ""))


# ------------------------------------------------------------------ Markdown


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    return ["| " + " | ".join(_md(h) for h in headers) + " |", "|" + "---|" * len(headers),
            *("| " + " | ".join(_md(c) for c in row) + " |" for row in rows), ""]


def markdown(report: CapacityReport) -> str:
    lines = [f"# jueying capacity, {_stamp(report.generated_at_unix)}", "", _md(headline(report)), "",
             f"## By {_md(report.by)}", "", *_md_table((report.by.upper(), *_GROUP_HEADERS), _group_rows(report))]
    lines += ["## Peak throughput of the healthy GPUs (dense, TFLOPS)", "",
              *_md_table(("precision", "TFLOPS"), _throughput_rows(report.total))]
    unknown = _unknown(report)
    if unknown:
        lines += [f"No datasheet figures for: {_md(', '.join(unknown))} (left out of the sums).", ""]
    floor = _floor_lines(report)
    if floor:
        lines += ["## Floor", "", *(f"- {_md(line)}" for line in floor), ""]
    lines += ["## Healthy GPUs per day" + (f" over the last {_md(report.since)}" if report.since else ""), ""]
    if report.trend:
        values = [n for _, n in report.trend]
        lines += [f"`{sparkline(values)}` {values[0]} .. {values[-1]} (min {min(values)}, max {max(values)})", "",
                  *_md_table(("day (UTC)", "healthy GPUs"), report.trend)]
    else:
        lines += ["No trend: run with `--since DURATION` (the history is kept by every collection)." if
                  report.trend is None else "No collection in that time.", ""]
    problems = _problem_rows(report)
    if problems:
        lines += ["## Nodes not healthy", "", *_md_table(("node", "state", "GPUs " + _CLASSES_HEADER, "reason"),
                                                          problems)]
    sources = _sources(report)
    if sources:
        lines += ["## Datasheets", "", *_md_table(("GPU (NVML name)", "datasheet row", "source"), sources)]
    return "\n".join(lines)


# ------------------------------------------------------------------ HTML

_SVG_W, _SVG_H, _PAD_L, _PAD_B, _PAD_T = 640, 200, 48, 28, 12


def trend_svg(trend: Sequence[tuple[str, int]]) -> str:
    """Healthy GPUs per day as an inline SVG bar chart (one bar per day with data, its value in a tooltip;
    the axis from 0 to the highest value; the first and last day labelled). Pure text: loads nothing."""
    high = max((n for _, n in trend), default=0) or 1
    inner_w, inner_h = _SVG_W - _PAD_L - 8, _SVG_H - _PAD_B - _PAD_T
    step = inner_w / max(1, len(trend))
    bar = max(1.0, step * 0.8)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="trend" width="{_SVG_W}" height="{_SVG_H}" '
             f'viewBox="0 0 {_SVG_W} {_SVG_H}" role="img" aria-label="healthy GPUs per day">',
             f'<line x1="{_PAD_L}" y1="{_PAD_T}" x2="{_PAD_L}" y2="{_PAD_T + inner_h}" stroke="#888"/>',
             f'<line x1="{_PAD_L}" y1="{_PAD_T + inner_h}" x2="{_SVG_W - 8}" y2="{_PAD_T + inner_h}" stroke="#888"/>',
             f'<text x="{_PAD_L - 4}" y="{_PAD_T + 4}" text-anchor="end" font-size="11">{high}</text>',
             f'<text x="{_PAD_L - 4}" y="{_PAD_T + inner_h}" text-anchor="end" font-size="11">0</text>']
    for i, (day, n) in enumerate(trend):
        height = inner_h * n / high
        x = _PAD_L + i * step + (step - bar) / 2
        parts.append(f'<rect class="bar" x="{x:.1f}" y="{_PAD_T + inner_h - height:.1f}" width="{bar:.1f}" '
                     f'height="{height:.1f}" fill="#2f6fb0"><title>{_h(day)}: {n} healthy GPUs</title></rect>')
    if trend:
        base = _PAD_T + inner_h + 16
        parts.append(f'<text x="{_PAD_L}" y="{base}" font-size="11">{_h(trend[0][0])}</text>')
        if len(trend) > 1:
            parts.append(f'<text x="{_SVG_W - 8}" y="{base}" text-anchor="end" font-size="11">'
                         f'{_h(trend[-1][0])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def html_page(report: CapacityReport) -> str:
    """One page, nothing fetched: no <script>, <link>, <img> or url(); a Content-Security-Policy forbids any."""
    stamp = _h(_stamp(report.generated_at_unix))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        f"<title>jueying capacity {stamp}</title>",
        f"<style>{_CSS}.trend{{display:block;margin:.5em 0}}</style></head><body>",
        f"<h1>jueying capacity, {stamp}</h1>",
        f"<p>{_h(headline(report))}</p>",
        '<h2 id="groups">By ' + _h(report.by) + "</h2>",
        *_table((report.by.upper(), *_GROUP_HEADERS), _group_rows(report)),
        '<h2 id="throughput">Peak throughput of the healthy GPUs (dense, TFLOPS)</h2>',
        *_table(("precision", "TFLOPS"), _throughput_rows(report.total)),
    ]
    unknown = _unknown(report)
    if unknown:
        parts.append(f"<p>No datasheet figures for: {_h(', '.join(unknown))} (left out of the sums).</p>")
    floor = _floor_lines(report)
    if floor:
        css = "ok" if report.floor_met else "bad"
        parts += ['<h2 id="floor">Floor</h2>', f'<ul class="{css}">', *(f"<li>{_h(line)}</li>" for line in floor),
                  "</ul>"]
    parts.append('<h2 id="trend">Healthy GPUs per day' + (f" over the last {_h(report.since)}" if report.since else "")
                 + "</h2>")
    if report.trend:
        values = [n for _, n in report.trend]
        parts += [trend_svg(report.trend),
                  f"<p>{values[0]} .. {values[-1]} healthy GPUs (min {min(values)}, max {max(values)}).</p>",
                  *_table(("day (UTC)", "healthy GPUs"), report.trend)]
    else:
        parts.append("<p>No trend: run with --since DURATION.</p>" if report.trend is None
                     else "<p>No collection in that time.</p>")
    problems = _problem_rows(report)
    if problems:
        parts += ['<h2 id="nodes">Nodes not healthy</h2>',
                  *_table(("node", "state", "GPUs " + _CLASSES_HEADER, "reason"), problems)]
    sources = _sources(report)
    if sources:
        parts += ['<h2 id="datasheets">Datasheets</h2>',
                  *_table(("GPU (NVML name)", "datasheet row", "source"), sources)]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render(report: CapacityReport, fmt: str) -> str:
    """The report as markdown or html text, every value escaped for that format."""
    return html_page(report) if fmt == "html" else markdown(report) + "\n"

