"""Markdown reports: one page per scenario, and the run summary that CI shows
(``$GITHUB_STEP_SUMMARY``)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from harness.core.matrix import LEGEND, Cell, Comparison
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

_STATUS_MARK = {
    Status.PASSED: "✅",
    Status.FAILED: "❌",
    Status.ERROR: "❌",
    Status.XPASSED: "❌",
    Status.XFAILED: "⚠️",
    Status.SKIPPED: "⏭️",
}

#: Wrong cells listed per scenario in the CI summary; the scenario's own report has them all.
SUMMARY_CELL_LIMIT = 20


def escape(text: str) -> str:
    """Text safe inside a Markdown table cell or paragraph."""
    out = text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
    for ch in "*_`<[]":
        out = out.replace(ch, "\\" + ch)
    return out


def _fence(text: str, lang: str = "text") -> str:
    # A fence longer than any backtick run inside, so the block cannot end early.
    longest = max((len(run) for run in text.split("\n") for run in _backtick_runs(run)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{lang}\n{text.rstrip()}\n{ticks}"


def _backtick_runs(line: str) -> list[str]:
    runs, current = [], ""
    for ch in line:
        if ch == "`":
            current += ch
        elif current:
            runs.append(current)
            current = ""
    if current:
        runs.append(current)
    return runs


def summary_table(records: Sequence[ScenarioRecord]) -> str:
    with_baseline = any(r.baseline is not None or r.baseline_error for r in records)
    head = ["", "scenario", "status", "backend", "probes", "mismatches"] + (["baseline"] if with_baseline else []) + ["duration"]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---:" if h in ("probes", "mismatches", "duration") else "---" for h in head) + "|",
    ]
    for r in ordered(records):
        row = [
            _STATUS_MARK[r.status],
            escape(r.name),
            r.status.value,
            escape(r.backend_label),
            str(r.probes) if r.result else "-",
            str(r.mismatches) if r.result else "-",
        ]
        if with_baseline:
            row.append(escape(r.baseline_summary or "-"))
        row.append(format_duration(r.duration))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _matrix_table(comparison: Comparison, port_index: int) -> str:
    """One port of a step as a table: observed symbols, wrong cells in bold with the
    expected symbol."""
    observed, expected = comparison.observed, comparison.expected
    port = observed.ports[port_index]
    columns = observed.columns(port)
    wrong = comparison.wrong_cells()
    lines = [
        "| from \\\\ to | " + " | ".join(escape(c) for c in columns) + " |",
        "|---|" + "|".join(":---:" for _ in columns) + "|",
    ]
    for src in observed.sources:
        cells = []
        for dst in columns:
            cell = Cell(src, dst, port)
            obs = observed.cells.get(cell)
            symbol = "-" if obs is None else obs.outcome.symbol
            if cell in wrong:
                want = expected.cells[cell].outcome.symbol if cell in expected.cells else "?"
                cells.append(f"**{escape(symbol)}** ≠ {escape(want)}")
            else:
                cells.append(escape(symbol))
        lines.append(f"| {escape(src)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _step_section(step: StepResult, several: bool) -> str:
    comparison = step.comparison
    title = f"### Step {step.name}" if several else "### Matrices"
    verdict = "as expected" if step.ok else plural(len(comparison.mismatches), "wrong cell")
    out = [
        title,
        "",
        f"{plural(step.probes, 'probe')}, {verdict}, {format_duration(step.duration)}. "
        f"Policies in force: {escape(', '.join(step.policies)) or 'none'}.",
    ]
    for i, port in enumerate(comparison.observed.ports):
        out += ["", f"**{port}**", "", _matrix_table(comparison, i)]
    out += ["", f"Symbols: {escape(LEGEND)}. A bold cell is wrong: observed ≠ expected."]
    if comparison.mismatches:
        out += ["", "Wrong cells:", ""]
        for m in comparison.mismatches:
            out.append(f"- {escape(m.line())}")
            if m.observed.command:
                out += ["", textwrap.indent(_fence(m.observed.command, "sh"), "  "), ""]
    if comparison.unsupported:
        out += ["", "Probes not run on this backend:", ""]
        out += [f"- {escape(str(c))} ({escape(comparison.observed.cells[c].detail)})" for c in comparison.unsupported]
    return "\n".join(out)


def scenario_markdown(record: ScenarioRecord) -> str:
    out = [f"# {_STATUS_MARK[record.status]} Scenario {escape(record.name)}: {record.status.value}", ""]
    if record.description:
        out += [escape(record.description), ""]
    out += [
        "| file | backend | probes | mismatches | duration |",
        "|---|---|---:|---:|---:|",
        f"| {escape(record.path)} | {escape(record.backend_label)} | {record.probes} | {record.mismatches} "
        f"| {format_duration(record.duration)} |",
    ]
    result = record.result
    if result is not None:
        several = len(result.steps) > 1
        for step in result.steps:
            out += ["", _step_section(step, several)]
        policies = applied_policies(result)
        if policies:
            out += ["", "## Policies", ""]
            for applied in policies:
                where = f" (step {escape(applied.step)})" if several else ""
                out += [f"**{escape(applied.policy.ref)}**{where}", "", _fence(applied.yaml, "yaml"), ""]
    if record.baseline_error:
        out += ["", "## Baseline", "", _fence(record.baseline_error)]
    elif record.baseline is not None:
        out += ["", "## Baseline", "", f"{escape(record.baseline.baseline.describe())}: {record.baseline.summary()}."]
        if not record.baseline.ok:
            out += ["", _fence(record.baseline.render())]
    if record.message and record.status.failing and result is None:
        out += ["", "## Failure", "", _fence(record.message)]
    return "\n".join(out).rstrip() + "\n"


def run_summary_markdown(records: Sequence[ScenarioRecord], report_dir: str = "") -> str:
    """A section for ``$GITHUB_STEP_SUMMARY``: the table, then the wrong cells of each
    failing scenario."""
    summary = RunSummary(tuple(records))
    out = [f"## netpol-harness: {summary.headline()}", ""]
    if summary.backends:
        out += [f"Backend: {escape('; '.join(summary.backends))}.", ""]
    out += [summary_table(records)]
    for r in ordered(records):
        if not r.status.failing:
            continue
        lines = [m.line() for s in (r.result.steps if r.result else ()) for m in s.comparison.mismatches]
        if r.baseline is not None and not r.baseline.ok:
            lines += [f"{c.line()} (step {step})" if len(r.baseline.steps) > 1 else c.line() for step, c in r.baseline.changes()]
        if not lines:
            lines = (r.baseline_error or r.message or r.status.value).splitlines()[:SUMMARY_CELL_LIMIT]
        shown = lines[:SUMMARY_CELL_LIMIT]
        if len(lines) > len(shown):
            shown.append(f"... and {len(lines) - len(shown)} more")
        out += [
            "",
            f"<details><summary>{escape(r.name)}: {r.status.value}</summary>",
            "",
            _fence("\n".join(shown)),
            "",
            "</details>",
        ]
    if report_dir:
        out += ["", f"Full report: `{report_dir}/index.html`."]
    return "\n".join(out) + "\n"
