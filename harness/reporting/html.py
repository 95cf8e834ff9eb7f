"""The HTML report: one self-contained page (inline CSS, no script, no external
asset) with every scenario's matrices in colour, the policies it applied and the
commands that reproduce its wrong cells.

Matrix cells carry the classes ``cell <outcome>`` (``cell allowed``, ``cell
blocked``, ``cell refused``...), ``cell mismatch`` for a cell that differs from the
expectation, ``cell none`` for a cell that was not probed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from harness import __version__
from harness.core.matrix import Cell, Comparison
from harness.core.topology import PortProtocol
from harness.engine.constraint_results import ConstraintStatus, Finding
from harness.engine.verdict import Status
from harness.reporting.drawing import drawn_region
from harness.reporting.records import (
    RunSummary,
    ScenarioRecord,
    StepRecord,
    constraint_tallies,
    format_duration,
    ordered,
    plural,
)

#: Wrong cells listed one by one per step; the JSON report has them all.
PAGE_CELL_LIMIT = 200

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
.name-not-resolved { background: #bc4c00; color: #fff; }
.partial { background: #1b7c83; color: #fff; }
.unsupported { background: repeating-linear-gradient(45deg, #eaeef2 0 4px, #fff 4px 8px); color: var(--muted); }
.none { background: var(--soft); color: #afb8c1; font-weight: 400; }
.mismatch { background: #d1242f; color: #fff; box-shadow: inset 0 0 0 2px #82071e; }
.changed { outline: 3px solid #0969da; outline-offset: 1px; }
.swatch.changed { background: #fff; outline-width: 2px; }
ul.wrong { margin: 4px 0; padding-left: 18px; }
ul.wrong li { margin: 2px 0 8px; }
ul.wrong pre { margin-top: 3px; }
table.wrong-cells { border-collapse: collapse; margin: 4px 0 8px; }
table.wrong-cells th, table.wrong-cells td { border-bottom: 1px solid var(--line); padding: 4px 10px 4px 0; text-align: left;
                                             vertical-align: top; font-size: 12px; }
table.wrong-cells td.why { color: var(--muted); max-width: 420px; }
.findings { color: #8250df; }
.impact { border-left: 4px solid #0969da; padding-left: 10px; margin: 10px 0; }
.audit { border-left: 4px solid #d4a72c; padding-left: 10px; margin: 10px 0; }
li.would-block { background: #fff1e5; }
li.would-allow { background: #e6f4ea; }
li.opened { background: #ffebe9; }
li.closed { background: #ddf4ff; }
details { margin: 10px 0 0; }
summary { cursor: pointer; color: var(--muted); font-weight: 600; font-size: 13px; }
.note { color: var(--muted); font-size: 12px; }
.baseline { margin-top: 12px; }
.constraints { border-left: 4px solid #8250df; padding-left: 10px; margin: 10px 0; }
.constraints table { border-collapse: collapse; margin: 4px 0 8px; }
.constraints th, .constraints td { border-bottom: 1px solid var(--line); padding: 4px 10px 4px 0; text-align: left;
                                   font-size: 12px; vertical-align: top; }
.constraint.violated { color: #a40e26; font-weight: 600; }
.constraint.passed { color: #116329; }
.constraint.not-applicable { color: var(--muted); }
ul.run-constraints li.failing { color: #a40e26; font-weight: 600; }
"""


def _id(name: str) -> str:
    return "scenario-" + re.sub(r"[^A-Za-z0-9_.-]", "-", name)


def _status(record: ScenarioRecord) -> str:
    return f'<span class="status {record.status.value}">{escape(record.status_text)}</span>'


def _cell_td(comparison: Comparison, cell: Cell, explanations: Mapping[Cell, str], changed: frozenset[Cell]) -> str:
    obs = comparison.observed.observation(cell)
    if obs is None:
        return '<td class="cell none" title="not probed">-</td>'
    where = comparison.expected.axes.index(cell)
    wrong = where is not None and bool(comparison.wrong[cell.port][where])
    why = explanations.get(cell)
    model = f"; reference model: {why}" if why else ""
    if cell in changed:
        # Differs from the baseline: outlined, whatever its colour.
        title = f"{cell}: {obs.describe()}; changed since the baseline{model}"
        kind = "mismatch" if wrong else obs.outcome.value
        return f'<td class="cell {kind} changed" title="{escape(title)}">{escape(obs.outcome.symbol)}</td>'
    if wrong:
        want = comparison.expected.observation(cell)
        want_text = want.outcome.value if want else "?"
        title = f"{cell}: expected {want_text}, observed {obs.describe()}{model}"
        return (
            f'<td class="cell mismatch" data-expected="{escape(want_text)}" data-observed="{escape(obs.outcome.value)}" '
            f'title="{escape(title)}">{escape(obs.outcome.symbol)}</td>'
        )
    title = f"{cell}: {obs.describe()}"
    return f'<td class="cell {obs.outcome.value}" title="{escape(title)}">{escape(obs.outcome.symbol)}</td>'


def _matrix(step: StepRecord, port: PortProtocol, changed: frozenset[Cell]) -> str:
    comparison = step.comparison
    rows, columns, note_text = drawn_region(comparison, port)
    if not columns:
        return f'<div class="matrix-wrap"><p class="note">{escape(note_text)}</p></div>'
    note = f'<p class="note">{escape(note_text)}</p>' if note_text else ""
    head = "".join(f'<th scope="col">{escape(c)}</th>' for c in columns)
    body = []
    for src in rows:
        tds = "".join(_cell_td(comparison, Cell(src, dst, port), step.explanations, changed) for dst in columns)
        body.append(f'<tr><th scope="row">{escape(src)}</th>{tds}</tr>')
    return (
        f'<div class="matrix-wrap"><table class="matrix"><caption>{escape(str(port))}</caption>'
        f'<thead><tr><th class="corner">from \\ to</th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>{note}</div>'
    )


def _step(step: StepRecord, several: bool, changed: frozenset[Cell]) -> str:
    comparison = step.comparison
    verdict = "as expected" if step.ok else plural(comparison.mismatch_count, "wrong cell")
    title = f"Step {escape(step.name)}: " if several else ""
    out = [
        f"<h3>{title}{plural(step.probes, 'probe')}, {verdict}</h3>",
        f'<p class="meta">policies in force: {escape(", ".join(step.policies)) or "none"} · {format_duration(step.duration)}</p>',
        '<div class="matrices">' + "".join(_matrix(step, p, changed) for p in comparison.expected.ports) + "</div>",
    ]
    if not comparison.ok:
        rows = []
        for i, m in enumerate(comparison.iter_mismatches()):
            if i >= PAGE_CELL_LIMIT:
                rows.append(
                    f'<tr><td colspan="4" class="note">... and {comparison.mismatch_count - PAGE_CELL_LIMIT} more '
                    "(every cell is in the scenario's JSON report)</td></tr>"
                )
                break
            cmd = f"<pre>{escape(m.observed.command)}</pre>" if m.observed.command else ""
            why = step.explanations.get(m.cell, "")
            rows.append(
                f"<tr><td>{escape(str(m.cell))}</td><td>expected {escape(m.expected.value)}, observed "
                f'{escape(m.observed.describe())}</td><td class="why">{escape(why)}</td><td>{cmd}</td></tr>'
            )
        out.append(
            '<h4>Wrong cells and how to reproduce them</h4><table class="wrong-cells"><thead><tr><th>cell</th>'
            "<th>outcome</th><th>why (reference model)</th><th>reproduce</th></tr></thead><tbody>"
            + "".join(rows)
            + "</tbody></table>"
        )
    if comparison.unsupported_count:
        items = [
            f"<li>{escape(str(c))}: {escape(comparison.observed[c].detail)}</li>"
            for c in comparison.unsupported[:PAGE_CELL_LIMIT]
        ]
        out.append(
            f"<h4>{plural(comparison.unsupported_count, 'probe')} not run on this backend</h4>"
            f'<ul class="wrong">{"".join(items)}</ul>'
        )
    audit = step.audit
    if audit is not None:
        declared = ", as the step declares" if audit.declared and not audit.undeclared else ""
        cells = [
            *(f'<li class="would-block">would block {escape(str(c))}</li>' for c in audit.would_block[:PAGE_CELL_LIMIT]),
            *(f'<li class="would-allow">would allow {escape(str(c))}</li>' for c in audit.would_allow[:PAGE_CELL_LIMIT]),
            *(f'<li class="mismatch-line">not as declared: {escape(line)}</li>' for line in audit.undeclared),
        ]
        out.append(
            f'<div class="audit"><h4>Audit: {escape(", ".join(audit.staged))} staged, enforcing nothing</h4>'
            f'<p class="meta">enforcing them would block {plural(len(audit.would_block), "cell")} and allow '
            f"{plural(len(audit.would_allow), 'cell')} (reference model){declared}</p>"
            f'<ul class="wrong">{"".join(cells)}</ul></div>'
        )
    findings = step.findings
    if findings is not None and not findings.ok:
        items = [
            f"<li>{escape(str(m.cell))}: reference model {escape(m.expected.value)}, "
            f"observed {escape(m.observed.outcome.value)}</li>"
            for m in findings.mismatches[:PAGE_CELL_LIMIT]
        ]
        out.append(
            f'<h4 class="findings">CNI findings: {plural(findings.mismatch_count, "cell")} where the network and '
            f'Kubernetes semantics differ</h4><ul class="wrong findings">{"".join(items)}</ul>'
        )
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
    if record.xfail:
        meta.append("expected to fail: " + escape(record.xfail))
    if record.reason and record.status is not Status.PASSED:
        meta.append(escape(record.reason))
    out.append(f'<p class="meta">{" · ".join(meta)}</p>')
    body = _scenario_body(record)
    if record.status in (Status.PASSED, Status.SKIPPED):
        # What went as expected stays folded, so the page opens on what did not.
        out.append(f"<details><summary>Matrices and policies</summary>{body}</details>")
    else:
        out.append(body)
    out.append("</section>")
    return "\n".join(out)


def _finding(finding: Finding, head: str) -> str:
    items = []
    for cell in finding.cells[:PAGE_CELL_LIMIT]:
        notes = []
        if cell.observed:
            notes.append(f"observed: {escape(cell.observed)}" + ("" if cell.model_agrees else " (the reference model blocks it)"))
        if cell.why:
            notes.append(f"reference model: {escape(cell.why)}")
        note = f'<br><span class="note">{"<br>".join(notes)}</span>' if notes else ""
        command = f"<pre>{escape(cell.command)}</pre>" if cell.command else ""
        items.append(f"<li>{escape(cell.line())}{note}{command}</li>")
    rest = finding.count - min(len(finding.cells), PAGE_CELL_LIMIT)
    if rest > 0:
        groups = "".join(f"<li>{escape(g.line().strip())}</li>" for g in finding.groups)
        items.append(f'<li class="note">... and {rest} more, by group:<ul>{groups}</ul></li>')
    return f'<h4>{escape(head)}</h4><ul class="wrong">{"".join(items)}</ul>'


def _constraints(record: ScenarioRecord) -> str:
    """The scenario's constraint results, and the cells of each violated one."""
    checks = record.constraints
    if checks is None:
        return ""
    rows = []
    for result in checks.results:
        status = result.status
        css = status.value.replace(" ", "-")
        if status is ConstraintStatus.VIOLATED:
            cells = f"{result.violations} violating of {result.checked} checked"
        elif status is ConstraintStatus.PASSED:
            cells = f"{result.checked} checked"
        else:
            cells = "selects nothing at any step"
        rows.append(
            f'<tr><td>{escape(result.name)}</td><td class="constraint {css}">{escape(status.value)}</td>'
            f'<td>{escape(cells)}</td><td class="note">{escape(result.summary)}</td></tr>'
        )
    out = [
        f'<div class="constraints"><h4>Constraints of {escape(checks.source)}</h4>'
        "<table><thead><tr><th>constraint</th><th>result</th><th>cells</th><th>asserts</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    ]
    several = len(record.steps) > 1
    for result in checks.violated:
        out.append(f'<p class="constraint violated">violates constraint {escape(result.name)}: {escape(result.description)}</p>')
        for step in result.steps:
            where = f"step {step.step}: " if several else ""
            if step.model.count:
                out.append(
                    _finding(step.model, f"{where}{step.model.count} of {step.model.checked} cell(s) by the reference model")
                )
            if step.observed is not None and step.observed.count:
                head = f"{where}{step.observed.count} of {step.observed.checked} probed cell(s), with real traffic"
                out.append(_finding(step.observed, head))
    out.append("</div>")
    return "\n".join(out)


def _scenario_body(record: ScenarioRecord) -> str:
    # A violated constraint first: it is what the reader must see before any matrix.
    out = [_constraints(record)]
    several = len(record.steps) > 1
    baseline = record.baseline
    for s in record.steps:
        changed = baseline.changed_cells(s.name) if baseline is not None else frozenset()
        out.append(_step(s, several, changed))
    applied = [(s.name, a) for s in record.steps for a in s.applied]
    if applied:
        blocks = []
        for step_name, policy in applied:
            where = f" <span class='note'>applied in step {escape(step_name)}</span>" if several else ""
            blocks.append(f"<h4>{escape(policy.ref)}{where}</h4><pre>{escape(policy.yaml)}</pre>")
        out.append(f"<details><summary>Policies applied ({len(applied)})</summary>{''.join(blocks)}</details>")
    impact = record.impact
    if impact is not None:
        out.append(_impact(impact))
    if baseline is not None and baseline.error:
        out.append(f'<div class="baseline"><h4>Baseline not compared</h4><pre>{escape(baseline.error)}</pre></div>')
    elif baseline is not None:
        out.append(
            f'<div class="baseline"><h4>Baseline: {escape(baseline.summary)}</h4>'
            f'<p class="meta">{escape(baseline.file)}, {escape(baseline.described)}</p>'
        )
        if baseline.text:
            lines = "".join(
                f"<li>{escape(line)}{' (step ' + escape(step) + ')' if baseline.several_steps else ''}</li>"
                for step, _, line in baseline.changes[:PAGE_CELL_LIMIT]
            )
            if lines:
                out.append(f'<ul class="wrong">{lines}</ul>')
            out.append(f"<details><summary>Baseline comparison</summary><pre>{escape(baseline.text)}</pre></details>")
        out.append("</div>")
    if record.message and record.status.failing:
        if not record.ran:
            out.append(f"<h4>Failure</h4><pre>{escape(record.message)}</pre>")
        else:
            out.append(f"<details><summary>Failure as reported</summary><pre>{escape(record.message)}</pre></details>")
    return "\n".join(out)


def _impact(impact: Mapping[str, Any]) -> str:
    """The change since the base revision: opened groups in red, closed in blue."""
    head = (
        f"Change since {escape(str(impact.get('base')))}: {escape(str(impact.get('status')))}, "
        f"{impact.get('opened', 0)} opened, {impact.get('closed', 0)} closed"
    )
    if impact.get("undeclared_openings"):
        head += f", {impact['undeclared_openings']} opening(s) no expectation declares"
    items = []
    for step in impact.get("steps", []):
        for group in step.get("groups", [])[:PAGE_CELL_LIMIT]:
            kind = "opened" if group.get("change") == "opened" else "closed"
            items.append(f'<li class="{kind}">{kind}: {escape(str(group.get("summary", "")))}</li>')
        confirmation = step.get("confirmation")
        if confirmation:
            items.append(
                f"<li>confirmed with real traffic on {escape(str(confirmation['backend']))}: "
                f"{confirmation['opened']} opened, {confirmation['closed']} closed</li>"
            )
    diffs = "".join(
        f"<details><summary>{escape(str(d.get('head') or d.get('base')))}: +{d.get('added')} −{d.get('removed')}</summary>"
        f"<pre>{escape(str(d.get('diff', '')))}</pre></details>"
        for d in impact.get("diffs", [])
    )
    return f'<div class="impact"><h4>{head}</h4><ul class="wrong">{"".join(items)}</ul>{diffs}</div>'


def _summary_table(records: Sequence[ScenarioRecord]) -> str:
    with_baseline = any(r.baseline is not None for r in records)
    with_unsupported = any(r.unsupported for r in records)
    with_constraints = any(r.constraints is not None for r in records)
    head = "<tr><th>scenario</th><th>status</th><th>backend</th><th class='num'>probes</th><th class='num'>wrong</th>"
    head += "<th class='num'>unsupported</th>" if with_unsupported else ""
    head += "<th>baseline</th>" if with_baseline else ""
    head += "<th>constraints</th>" if with_constraints else ""
    head += "<th class='num'>duration</th></tr>"
    rows = []
    for r in ordered(records):
        cells = [
            f'<td><a href="#{_id(r.name)}">{escape(r.name)}</a></td>',
            f"<td>{_status(r)}</td>",
            f"<td>{escape(r.backend_label)}</td>",
            f"<td class='num'>{r.probes if r.ran else '-'}</td>",
            f"<td class='num'>{r.mismatches if r.ran else '-'}</td>",
        ]
        if with_unsupported:
            cells.append(f"<td class='num'>{r.unsupported if r.ran else '-'}</td>")
        if with_baseline:
            cells.append(f"<td>{escape(r.baseline_summary or '-')}</td>")
        if with_constraints:
            cells.append(f"<td>{escape(r.constraints_text or '-')}</td>")
        cells.append(f"<td class='num'>{format_duration(r.duration)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="summary"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _run_constraints(records: Sequence[ScenarioRecord]) -> str:
    """Each constraint across the run; one that applies nowhere fails the run."""
    tallies = constraint_tallies(records)
    if not tallies:
        return ""
    items = "".join(
        f'<li class="{"failing" if t.violated or t.applies_nowhere else ""}">{escape(t.line())}</li>' for t in tallies
    )
    return f'<div class="constraints"><h4>Constraints</h4><ul class="run-constraints">{items}</ul></div>'


def _legend() -> str:
    items = [
        ("allowed", ". allowed"),
        ("blocked", "X blocked"),
        ("refused", "R refused"),
        ("wrong-responder", "W wrong responder"),
        ("name-not-resolved", "N name not resolved"),
        ("partial", "P partial (a Service's pods disagree)"),
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
{_run_constraints(records)}
{_legend()}
{sections}
</body>
</html>
"""
