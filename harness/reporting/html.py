"""The HTML report: one self-contained page (inline CSS, no script, no external
asset) with every scenario's matrices in colour, the policies it applied and the
commands that reproduce its wrong cells.

Matrix cells carry the classes ``cell <outcome>`` (``cell allowed``, ``cell
blocked``, ``cell refused``...), ``cell mismatch`` for a cell that differs from the
expectation, ``cell none`` for a cell that was not probed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from html import escape

from harness import __version__
from harness.core.matrix import Cell, Comparison
from harness.core.topology import PortProtocol
from harness.engine.pipeline import StepResult
from harness.reporting.records import (
    RunSummary,
    ScenarioRecord,
    Status,
    applied_policies,
    format_duration,
    ordered,
    plural,
)

#: Larger port matrices are drawn only around their wrong cells (the JSON report has
#: every cell); a page of thousands of pods would otherwise be unusable.
MAX_DRAWN_CELLS = 2500

CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --soft: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px 48px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--fg); background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 0; display: flex; gap: 10px; align-items: center; flex-wrap: wrap; }
h3 { font-size: 15px; margin: 18px 0 6px; }
h4 { font-size: 13px; margin: 12px 0 4px; }
a { color: #0969da; text-decoration: none; }
a:hover { text-decoration: underline; }
code, pre, .cell, .matrix th { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; margin: 4px 0;
      overflow-x: auto; font-size: 12px; line-height: 1.4; }
.run { color: var(--muted); margin: 0 0 16px; }
table.summary { border-collapse: collapse; margin: 8px 0 16px; min-width: 60%; }
table.summary th, table.summary td { border-bottom: 1px solid var(--line); padding: 5px 12px 5px 0; text-align: left; }
table.summary th { color: var(--muted); font-weight: 600; font-size: 12px; }
table.summary td.num, table.summary th.num { text-align: right; }
.status { display: inline-block; font-size: 12px; font-weight: 600; padding: 1px 8px; border-radius: 10px; border: 1px solid; }
.status.passed { background: #dafbe1; color: #116329; border-color: #8fd8a3; }
.status.failed, .status.error, .status.xpassed { background: #ffebe9; color: #a40e26; border-color: #ff9492; }
.status.xfailed { background: #fff8c5; color: #7d4e00; border-color: #e7cf6e; }
.status.skipped { background: var(--soft); color: var(--muted); border-color: var(--line); }
.legend { display: flex; flex-wrap: wrap; gap: 6px 16px; align-items: center; color: var(--muted); font-size: 12px;
          margin: 0 0 20px; }
.legend span.item { display: inline-flex; align-items: center; gap: 5px; }
.swatch { display: inline-block; width: 14px; height: 14px; border-radius: 3px; }
section.scenario { border: 1px solid var(--line); border-radius: 8px; padding: 14px 18px; margin: 0 0 18px; }
section.scenario.failing { border-left: 5px solid #a40e26; }
.description { margin: 6px 0 2px; }
.meta { color: var(--muted); font-size: 12px; margin: 2px 0 0; }
.matrices { display: flex; flex-wrap: wrap; gap: 10px 28px; align-items: flex-start; }
.matrix-wrap { overflow-x: auto; max-width: 100%; }
table.matrix { border-collapse: separate; border-spacing: 3px; }
table.matrix caption { text-align: left; font-weight: 600; font-size: 12px; color: var(--muted); padding: 0 3px; }
table.matrix th { font-size: 11px; font-weight: 500; color: var(--muted); white-space: nowrap; padding: 0 4px; }
table.matrix thead th { vertical-align: bottom; }
table.matrix tbody th { text-align: right; }
table.matrix th.corner { font-style: italic; }
.cell { min-width: 30px; height: 24px; text-align: center; font-size: 15px; font-weight: 700; border-radius: 3px;
        padding: 0 4px; }
.allowed { background: #2da44e; color: #fff; }
.blocked { background: #8c959f; color: #fff; }
.refused { background: #57606a; color: #fff; }
.wrong-responder { background: #8250df; color: #fff; }
.error { background: #9a6700; color: #fff; }
.unsupported { background: repeating-linear-gradient(45deg, #eaeef2 0 4px, #fff 4px 8px); color: var(--muted); }
.none { background: var(--soft); color: #afb8c1; font-weight: 400; }
.mismatch { background: #d1242f; color: #fff; box-shadow: inset 0 0 0 2px #82071e; }
.changed { outline: 3px solid #0969da; outline-offset: 1px; }
.swatch.changed { background: #fff; outline-width: 2px; }
ul.wrong { margin: 4px 0; padding-left: 18px; }
ul.wrong li { margin: 2px 0 8px; }
ul.wrong pre { margin-top: 3px; }
details { margin: 10px 0 0; }
summary { cursor: pointer; color: var(--muted); font-weight: 600; font-size: 13px; }
.note { color: var(--muted); font-size: 12px; }
.baseline { margin-top: 12px; }
"""


def _id(name: str) -> str:
    return "scenario-" + re.sub(r"[^A-Za-z0-9_.-]", "-", name)


def _status(record: ScenarioRecord) -> str:
    return f'<span class="status {record.status.value}">{record.status.value}</span>'


def _cell_td(comparison: Comparison, cell: Cell, wrong: frozenset[Cell], changed: frozenset[Cell]) -> str:
    obs = comparison.observed.cells.get(cell)
    if obs is None:
        return '<td class="cell none" title="not probed">-</td>'
    if cell in changed:
        # Differs from the baseline: outlined, whatever its colour.
        title = f"{cell}: {obs.describe()}; changed since the baseline"
        kind = "mismatch" if cell in wrong else obs.outcome.value
        return f'<td class="cell {kind} changed" title="{escape(title)}">{escape(obs.outcome.symbol)}</td>'
    if cell in wrong:
        want = comparison.expected.cells.get(cell)
        want_text = want.outcome.value if want else "?"
        title = f"{cell}: expected {want_text}, observed {obs.describe()}"
        return (
            f'<td class="cell mismatch" data-expected="{escape(want_text)}" data-observed="{escape(obs.outcome.value)}" '
            f'title="{escape(title)}">{escape(obs.outcome.symbol)}</td>'
        )
    title = f"{cell}: {obs.describe()}"
    return f'<td class="cell {obs.outcome.value}" title="{escape(title)}">{escape(obs.outcome.symbol)}</td>'


def _matrix(comparison: Comparison, port: PortProtocol, changed: frozenset[Cell]) -> str:
    observed = comparison.observed
    wrong = comparison.wrong_cells()
    rows = list(observed.sources)
    columns = list(observed.columns(port))
    note = ""
    if len(rows) * len(columns) > MAX_DRAWN_CELLS:
        here = [c for c in wrong if c.port == port]
        size = f"{len(rows)}×{len(columns)}"
        if not here:
            return (
                f'<div class="matrix-wrap"><p class="note"><b>{escape(str(port))}</b>: {size} cells, all as expected '
                "(too many to draw; every cell is in the scenario's JSON report).</p></div>"
            )
        bad_rows = {c.source for c in here}
        bad_cols = {c.destination for c in here}
        rows = [r for r in rows if r in bad_rows]
        columns = [c for c in columns if c in bad_cols]
        note = (
            f'<p class="note">{size} cells; only the {len(rows)} row(s) and {len(columns)} column(s) with wrong '
            "cells are drawn (every cell is in the scenario's JSON report).</p>"
        )
    head = "".join(f'<th scope="col">{escape(c)}</th>' for c in columns)
    body = []
    for src in rows:
        tds = "".join(_cell_td(comparison, Cell(src, dst, port), wrong, changed) for dst in columns)
        body.append(f'<tr><th scope="row">{escape(src)}</th>{tds}</tr>')
    return (
        f'<div class="matrix-wrap"><table class="matrix"><caption>{escape(str(port))}</caption>'
        f'<thead><tr><th class="corner">from \\ to</th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>{note}</div>'
    )


def _step(step: StepResult, several: bool, changed: frozenset[Cell]) -> str:
    comparison = step.comparison
    verdict = "as expected" if step.ok else plural(len(comparison.mismatches), "wrong cell")
    title = f"Step {escape(step.name)}: " if several else ""
    out = [
        f"<h3>{title}{plural(step.probes, 'probe')}, {verdict}</h3>",
        f'<p class="meta">policies in force: {escape(", ".join(step.policies)) or "none"} · {format_duration(step.duration)}</p>',
        '<div class="matrices">' + "".join(_matrix(comparison, p, changed) for p in comparison.observed.ports) + "</div>",
    ]
    if comparison.mismatches:
        items = []
        for m in comparison.mismatches:
            cmd = f"<pre>{escape(m.observed.command)}</pre>" if m.observed.command else ""
            items.append(f"<li>{escape(m.line())}{cmd}</li>")
        out.append(f'<h4>Wrong cells and how to reproduce them</h4><ul class="wrong">{"".join(items)}</ul>')
    if comparison.unsupported:
        items = [f"<li>{escape(str(c))}: {escape(comparison.observed.cells[c].detail)}</li>" for c in comparison.unsupported]
        out.append(f'<h4>Probes not run on this backend</h4><ul class="wrong">{"".join(items)}</ul>')
    return "\n".join(out)


def _scenario(record: ScenarioRecord) -> str:
    classes = "scenario failing" if record.status.failing else "scenario"
    out = [
        f'<section class="{classes}" id="{_id(record.name)}">',
        f"<h2>{_status(record)} {escape(record.name)}</h2>",
    ]
    if record.description:
        out.append(f'<p class="description">{escape(record.description)}</p>')
    meta = [escape(record.path), escape(record.backend_label), format_duration(record.duration)]
    if record.result is not None and record.result.scenario.xfail:
        meta.append("expected to fail: " + escape(record.result.scenario.xfail))
    out.append(f'<p class="meta">{" · ".join(meta)}</p>')
    body = _scenario_body(record)
    if record.status in (Status.PASSED, Status.SKIPPED):
        # What went as expected stays folded, so the page opens on what did not.
        out.append(f"<details><summary>Matrices and policies</summary>{body}</details>")
    else:
        out.append(body)
    out.append("</section>")
    return "\n".join(out)


def _scenario_body(record: ScenarioRecord) -> str:
    out = []
    result = record.result
    if result is not None:
        several = len(result.steps) > 1
        changes = record.baseline.changes() if record.baseline is not None else []
        out += [_step(s, several, frozenset(c.cell for name, c in changes if name == s.name)) for s in result.steps]
        policies = applied_policies(result)
        if policies:
            blocks = []
            for applied in policies:
                where = f" <span class='note'>applied in step {escape(applied.step)}</span>" if several else ""
                blocks.append(f"<h4>{escape(applied.policy.ref)}{where}</h4><pre>{escape(applied.yaml)}</pre>")
            out.append(f"<details><summary>Policies applied ({len(policies)})</summary>{''.join(blocks)}</details>")
    if record.baseline_error:
        out.append(f'<div class="baseline"><h4>Baseline not compared</h4><pre>{escape(record.baseline_error)}</pre></div>')
    elif record.baseline is not None:
        diff = record.baseline
        out.append(
            f'<div class="baseline"><h4>Baseline: {escape(diff.summary())}</h4>'
            f'<p class="meta">{escape(str(diff.path))}, {escape(diff.baseline.describe())}</p>'
        )
        if not diff.ok:
            several = len(diff.steps) > 1
            lines = "".join(
                f"<li>{escape(c.line())}{' (step ' + escape(step) + ')' if several else ''}</li>" for step, c in diff.changes()
            )
            if lines:
                out.append(f'<ul class="wrong">{lines}</ul>')
            out.append(f"<details><summary>Baseline comparison</summary><pre>{escape(diff.render())}</pre></details>")
        out.append("</div>")
    if record.message and record.status.failing:
        if result is None:
            out.append(f"<h4>Failure</h4><pre>{escape(record.message)}</pre>")
        else:
            out.append(f"<details><summary>Failure as reported by pytest</summary><pre>{escape(record.message)}</pre></details>")
    return "\n".join(out)


def _summary_table(records: Sequence[ScenarioRecord]) -> str:
    with_baseline = any(r.baseline is not None or r.baseline_error for r in records)
    head = "<tr><th>scenario</th><th>status</th><th>backend</th><th class='num'>probes</th><th class='num'>mismatches</th>"
    head += "<th>baseline</th>" if with_baseline else ""
    head += "<th class='num'>duration</th></tr>"
    rows = []
    for r in ordered(records):
        cells = [
            f'<td><a href="#{_id(r.name)}">{escape(r.name)}</a></td>',
            f"<td>{_status(r)}</td>",
            f"<td>{escape(r.backend_label)}</td>",
            f"<td class='num'>{r.probes if r.result else '-'}</td>",
            f"<td class='num'>{r.mismatches if r.result else '-'}</td>",
        ]
        if with_baseline:
            cells.append(f"<td>{escape(r.baseline_summary or '-')}</td>")
        cells.append(f"<td class='num'>{format_duration(r.duration)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="summary"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _legend() -> str:
    items = [
        ("allowed", ". allowed"),
        ("blocked", "X blocked"),
        ("refused", "R refused"),
        ("wrong-responder", "W wrong responder"),
        ("error", "E probe error"),
        ("unsupported", "U not supported here"),
        ("none", "- not probed"),
        ("mismatch", "observed ≠ expected (the symbol is what was observed)"),
        ("changed", "changed since the baseline"),
    ]
    spans = "".join(f'<span class="item"><span class="swatch {cls}"></span>{escape(text)}</span>' for cls, text in items)
    return f'<div class="legend">{spans}</div>'


def index_html(summary: RunSummary, title: str = "netpol-harness report") -> str:
    records = summary.records
    when = summary.finished.strftime("%Y-%m-%d %H:%M UTC")
    backends = "; ".join(summary.backends) or "no backend"
    run = (
        f"{escape(summary.headline())} · {plural(summary.probes, 'probe')}, {plural(summary.mismatches, 'wrong cell')} · "
        f"{escape(backends)} · netpol-harness {escape(__version__)} · {when}"
    )
    sections = "\n".join(_scenario(r) for r in ordered(records))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{CSS}</style>
</head>
<body>
<h1>{escape(title)}</h1>
<p class="run">{run}</p>
{_summary_table(records)}
{_legend()}
{sections}
</body>
</html>
"""
