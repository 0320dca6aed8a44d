"""An audit's result as one value (AuditReport), and its renderings that need no terminal: JSON data, Markdown
for a ticket, and one self-contained HTML page (inline CSS, no script, no link, no image: it loads nothing).

Everything a node or a user supplied is escaped for the format it lands in: control characters shown as
escapes (render.text.safe) and then HTML's or Markdown's own special characters.
"""

from __future__ import annotations

import html
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jueying_cli.audit.attributes import ATTRIBUTES, BY_NAME, VERSION_MATRIX
from jueying_cli.audit.drift import Finding, NodeAudit
from jueying_cli.audit.history import Change
from jueying_cli.errors import BadInputError
from jueying_cli.inventory.select import fold as fold_nodeset
from jueying_cli.render.text import safe
from jueying_cli.vocab import AuditKind


@dataclass(frozen=True)
class Unanswered:
    node: str
    status: str
    error: str


@dataclass(frozen=True)
class AuditReport:
    nodes: list[NodeAudit]
    findings: list[Finding]
    unanswered: list[Unanswered]
    compared_with: str  # "baseline FILE" or "the majority of each GPU model"
    changes: list[Change] | None = None  # with --since
    since: str | None = None
    generated_at_unix: float = field(default_factory=time.time)

    @property
    def drift(self) -> list[Finding]:
        return [f for f in self.findings if f.kind == AuditKind.DRIFT]

    @property
    def identity(self) -> list[Finding]:
        return [f for f in self.findings if f.kind == AuditKind.IDENTITY]

    def nodes_with_findings(self) -> list[str]:
        return sorted({f.node for f in self.findings})

    def summary(self) -> dict[str, Any]:
        return {"nodes_selected": len(self.nodes) + len(self.unanswered), "nodes_audited": len(self.nodes),
                "nodes_unanswered": len(self.unanswered), "nodes_with_findings": len(self.nodes_with_findings()),
                "drift_findings": len(self.drift), "identity_findings": len(self.identity),
                "compared_with": self.compared_with, "since": self.since,
                "changes": None if self.changes is None else len(self.changes)}

    def matrix(self) -> dict[str, dict[str, list[tuple[str, list[str]]]]]:
        """Per GPU model, per version attribute: each value with the nodes that report it (most nodes first)."""
        models: dict[str, dict[str, dict[str, list[str]]]] = {}
        for a in self.nodes:
            per = models.setdefault(a.model, {})
            for name in VERSION_MATRIX:
                value = a.attributes.get(name)
                per.setdefault(name, {}).setdefault("-" if value is None else value, []).append(a.node)
        return {model: {name: sorted(values.items(), key=lambda kv: (-len(kv[1]), kv[0]))
                        for name, values in per.items()} for model, per in sorted(models.items())}

    def to_json(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "findings": [f.to_json() for f in self.findings],
            "nodes": [{"node": a.node, "model": a.model, "attributes": a.attributes,
                       "identity": {"hostname": a.identity.hostname, "machine_id": a.identity.machine_id,
                                    "gpu_uuids": list(a.identity.gpu_uuids),
                                    "gpu_serials": a.identity.gpu_serials}} for a in self.nodes],
            "matrix": {model: {name: [{"value": v, "nodes": len(ns), "nodeset": fold(ns)} for v, ns in values]
                               for name, values in per.items()} for model, per in self.matrix().items()},
            "changes": None if self.changes is None else [c.to_json() for c in self.changes],
            "unanswered": [{"node": u.node, "status": u.status, "error": u.error} for u in self.unanswered],
        }


def fold(names: Sequence[str]) -> str:
    """Node names folded to a node set (gpu[01-08]); listed as they are when they do not fold (odd names)."""
    if not names:
        return ""
    try:
        return fold_nodeset(names)
    except Exception:  # noqa: BLE001 - ClusterShell refuses some names an Ansible inventory allows
        return ",".join(names)


def label(attribute: str) -> str:
    attr = BY_NAME.get(attribute)
    return attr.label if attr is not None else attribute.replace("_", " ")


def _stamp(unix: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(unix))


def _by_attribute(findings: Sequence[Finding]) -> list[tuple[str, list[Finding]]]:
    order = {a.name: i for i, a in enumerate(ATTRIBUTES)}
    groups: dict[str, list[Finding]] = {}
    for f in findings:
        groups.setdefault(f.attribute, []).append(f)
    return sorted(groups.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))


def headline(report: AuditReport) -> str:
    s = report.summary()
    text = (f"{s['nodes_audited']} of {s['nodes_selected']} node(s) audited against {report.compared_with}: "
            f"{s['drift_findings']} drift and {s['identity_findings']} identity finding(s) on "
            f"{s['nodes_with_findings']} node(s)")
    if report.unanswered:
        text += f"; {len(report.unanswered)} node(s) gave no facts"
    if report.changes is not None:
        text += f"; {len(report.changes)} change(s) since {report.since}"
    return text


# ------------------------------------------------------------------ Markdown


def _md(value: object) -> str:
    """A Markdown table cell: control characters escaped, then HTML and Markdown's special characters."""
    text = html.escape(safe("-" if value is None else value), quote=False)
    for ch in "\\|`*_[]#~":
        text = text.replace(ch, "\\" + ch)
    return text


def markdown(report: AuditReport) -> str:
    lines = [f"# jueying audit, {_stamp(report.generated_at_unix)}", "", _md(headline(report)), ""]
    if not report.findings:
        lines += ["No drift and no identity finding.", ""]
    for attribute, found in _by_attribute(report.findings):
        lines += [f"## {_md(label(attribute))} ({len(found)})", "",
                  "| node | value | expected | from | detail |", "|---|---|---|---|---|"]
        lines += [f"| {_md(f.node)} | {_md(f.value)} | {_md(f.expected)} | {_md(f.source)} | {_md(f.detail)} |"
                  for f in found]
        lines.append("")
    for model, per in report.matrix().items():
        lines += [f"## Versions: {_md(model)}", "", "| attribute | value | nodes |", "|---|---|---|"]
        for name, values in per.items():
            lines += [f"| {_md(label(name))} | {_md(v)} | {len(ns)}: {_md(fold(ns))} |" for v, ns in values]
        lines.append("")
    if report.changes is not None:
        lines += [f"## Changes since {_md(report.since)} ({len(report.changes)})", ""]
        if report.changes:
            lines += ["| time | node | attribute | before | after |", "|---|---|---|---|---|"]
            lines += [f"| {_stamp(c.at_unix)} | {_md(c.node)} | {_md(label(c.attribute))} | {_md(c.before)} | "
                      f"{_md(c.after)} |" for c in report.changes]
        lines.append("")
    if report.unanswered:
        lines += ["## Nodes that gave no facts", "", "| node | status | reason |", "|---|---|---|"]
        lines += [f"| {_md(u.node)} | {_md(u.status)} | {_md(u.error)} |" for u in report.unanswered]
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------ HTML

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:80em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;
vertical-align:top}th{background:#f2f2f2}.ok{color:#176b2c}.bad{color:#a11}code{font-size:.95em}
.summary td:first-child{font-weight:bold}
"""


def _h(value: object) -> str:
    """HTML text: control characters escaped (visible), then &, <, >, quotes."""
    return html.escape(safe("-" if value is None else value), quote=True)


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], css: str = "") -> list[str]:
    out = [f'<table{f" class={chr(34)}{css}{chr(34)}" if css else ""}>']
    if any(headers):
        out.append("<tr>" + "".join(f"<th>{_h(h)}</th>" for h in headers) + "</tr>")
    out += ["<tr>" + "".join(f"<td>{_h(c)}</td>" for c in row) + "</tr>" for row in rows]
    out.append("</table>")
    return out


def html_page(report: AuditReport) -> str:
    """One page, nothing fetched: no <script>, <link>, <img> or url(); a Content-Security-Policy forbids any."""
    s = report.summary()
    state = ('<p class="ok">No drift and no identity finding.</p>' if not report.findings else
             f'<p class="bad">{len(report.findings)} finding(s) on {s["nodes_with_findings"]} node(s).</p>')
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        f"<title>jueying audit {_h(_stamp(report.generated_at_unix))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>jueying audit, {_h(_stamp(report.generated_at_unix))}</h1>",
        state,
        '<h2 id="summary">Summary</h2>',
        *_table(["", ""], [
            ("nodes selected", s["nodes_selected"]), ("nodes audited", s["nodes_audited"]),
            ("nodes that gave no facts", s["nodes_unanswered"]), ("compared with", report.compared_with),
            ("drift findings", s["drift_findings"]), ("identity findings", s["identity_findings"]),
            ("nodes with findings", fold(report.nodes_with_findings()) or "none"),
            *([("changes since " + (report.since or ""), s["changes"])] if report.changes is not None else []),
        ], "summary"),
        '<h2 id="findings">Findings by attribute</h2>',
    ]
    if not report.findings:
        parts.append("<p>None.</p>")
    for attribute, found in _by_attribute(report.findings):
        parts.append(f"<h3>{_h(label(attribute))} ({len(found)})</h3>")
        parts += _table(["node", "value", "expected", "from", "detail"],
                        [(f.node, f.value, f.expected, f.source, f.detail) for f in found])
    parts.append('<h2 id="versions">Versions by GPU model</h2>')
    for model, per in report.matrix().items():
        parts.append(f"<h3>{_h(model)}</h3>")
        parts += _table(["attribute", "value", "nodes", "node set"],
                        [(label(name), v, len(ns), fold(ns)) for name, values in per.items() for v, ns in values])
    if report.changes is not None:
        parts.append(f'<h2 id="changes">Changes since {_h(report.since)}</h2>')
        parts += (_table(["time", "node", "attribute", "before", "after"],
                         [(_stamp(c.at_unix), c.node, label(c.attribute), c.before, c.after) for c in report.changes])
                  if report.changes else ["<p>None.</p>"])
    if report.unanswered:
        parts.append('<h2 id="unanswered">Nodes that gave no facts</h2>')
        parts += _table(["node", "status", "reason"], [(u.node, u.status, u.error) for u in report.unanswered])
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------ output


def render(report: AuditReport, fmt: str) -> str:
    """The whole report as text in `fmt` (json, markdown or html), every value escaped for that format."""
    if fmt == "json":
        from jueying_cli.render.json import dumps, envelope

        status = "ok" if not report.unanswered else ("error" if not report.nodes else "partial")
        return dumps(envelope("audit", report.to_json(), status=status,
                              errors=[{"node": u.node, "status": u.status, "message": u.error}
                                      for u in report.unanswered])) + "\n"
    if fmt == "html":
        return html_page(report)
    return markdown(report) + "\n"


def emit(text: str, path: Path | None) -> None:
    """Write a rendered report (already escaped for its format) to stdout, or atomically to `path`: a reader
    sees the old file or the new one, never half of one."""
    if path is None:
        sys.stdout.write(text)
        return
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
    except OSError as exc:
        raise BadInputError(f"cannot write the report: {exc.strerror or exc}", path=str(path), field="-o") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
