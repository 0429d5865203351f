"""Rendering a conformance report: the terminal table, and the Markdown tables of docs/CONFORMANCE.md
(built from saved `--json` reports, so the documentation shows what a run produced)."""

from __future__ import annotations

from typing import Any

from .probe import LEVELS, PASS, UNSUPPORTED

MARK = {"pass": "PASS", "fail": "FAIL", "not supported": "n/s", "timeout": "TIMEOUT"}


def score_line(scores: dict[str, dict[str, int]]) -> str:
    parts = []
    for level in LEVELS:
        s = scores.get(level)
        if s:
            extra = f", {s[UNSUPPORTED]} not supported" if s[UNSUPPORTED] else ""
            parts.append(f"{level} {s[PASS]}/{s['total'] - s[UNSUPPORTED]}{extra}")
    return "; ".join(parts)


def table(report: dict[str, Any], width: int = 160) -> str:
    """The report as printed by `llm-proxy conformance`: one row per probe, then the scores."""
    rows = report["results"]
    idw = max([len(r["id"]) for r in rows] + [7])
    head = (f"probe set {report['probe_set']} · {report['format']} · {report['url']} · model {report['model']}\n"
            f"{'PROBE'.ljust(idw)}  {'LEVEL':6}  {'RESULT':7}  EVIDENCE")
    lines = [head]
    for r in rows:
        evidence = r["evidence"]
        room = max(20, width - idw - 20)
        if len(evidence) > room:
            evidence = evidence[: room - 3] + "..."
        lines.append(f"{r['id'].ljust(idw)}  {r['level']:6}  {MARK[r['status']]:7}  {evidence}")
    verdict = "OK" if report["ok"] else "FAILED (a core probe failed)"
    lines.append(f"\nscore: {score_line(report['scores'])} · {report['seconds']:.1f}s · {verdict}")
    return "\n".join(lines)


def probe_docs(probe_list: list) -> str:
    """Markdown: what each probe checks (its docstring), grouped by level."""
    out = []
    for level in LEVELS:
        rows = [p for p in probe_list if p.level == level]
        if not rows:
            continue
        out.append(f"| {level} probe | checks, and what a client breaks on |\n|---|---|")
        for p in rows:
            out.append(f"| `{p.id}` | {' '.join(p.doc.split())} |")
        out.append("")
    return "\n".join(out)


def results_matrix(reports: dict[str, dict[str, Any]]) -> str:
    """Markdown: probes down, runs across (`reports` maps a column name to a saved JSON report)."""
    names = list(reports)
    ids: list[str] = []
    for rep in reports.values():
        ids += [r["id"] for r in rep["results"] if r["id"] not in ids]
    lines = ["| probe | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for pid in ids:
        cells = []
        for name in names:
            status = next((r["status"] for r in reports[name]["results"] if r["id"] == pid), "")
            cells.append({"pass": "pass", "fail": "**fail**", "timeout": "**timeout**"}.get(status, status or "-"))
        lines.append(f"| `{pid}` | " + " | ".join(cells) + " |")
    lines.append("| score | " + " | ".join(score_line(reports[n]["scores"]) for n in names) + " |")
    return "\n".join(lines)
