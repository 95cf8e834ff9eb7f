"""Markdown reports: one page per scenario, and the run summary that CI shows
(``$GITHUB_STEP_SUMMARY``)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from harness.core.matrix import LEGEND, Cell, Comparison
from harness.core.topology import PortProtocol
from harness.engine.constraint_results import ConstraintResult, ConstraintStatus, Finding
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

_STATUS_MARK = {
    Status.PASSED: "✅",
    Status.FAILED: "❌",
    Status.ERROR: "❌",
    Status.XPASSED: "❌",
    Status.XFAILED: "⚠️",
    Status.SKIPPED: "⏭️",
}

#: Where GitHub Actions reads the job's step summary (Markdown appended to it).
STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"

#: Wrong cells listed per scenario in the CI summary; the scenario's own report has them all.
SUMMARY_CELL_LIMIT = 20
#: Wrong cells listed one by one in a scenario's Markdown page.
PAGE_CELL_LIMIT = 200


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
    with_baseline = any(r.baseline is not None for r in records)
    with_unsupported = any(r.unsupported for r in records)
    with_findings = any(r.findings for r in records)
    with_constraints = any(r.constraints is not None for r in records)
    head = ["", "scenario", "status", "backend", "probes", "wrong"]
    head += (["unsupported"] if with_unsupported else []) + (["CNI ≠ model"] if with_findings else [])
    head += (["baseline"] if with_baseline else []) + (["constraints"] if with_constraints else []) + ["duration"]
    numeric = ("probes", "wrong", "unsupported", "CNI ≠ model", "duration")
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---:" if h in numeric else "---" for h in head) + "|",
    ]
    for r in ordered(records):
        row = [
            _STATUS_MARK[r.status],
            escape(r.name),
            escape(r.status_text),
            escape(r.backend_label),
            str(r.probes) if r.ran else "-",
            str(r.mismatches) if r.ran else "-",
        ]
        if with_unsupported:
            row.append(str(r.unsupported) if r.ran else "-")
        if with_findings:
            row.append(str(r.findings) if r.ran else "-")
        if with_baseline:
            row.append(escape(r.baseline_summary or "-"))
        if with_constraints:
            row.append(escape(r.constraints_text or "-"))
        row.append(format_duration(r.duration))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _matrix_table(comparison: Comparison, port: PortProtocol) -> str:
    """One port of a step as a table: observed symbols, wrong cells in bold with the
    expected symbol."""
    observed, expected = comparison.observed, comparison.expected
    rows, columns, note = drawn_region(comparison, port)
    if not columns:
        return note
    lines = [
        "| from \\\\ to | " + " | ".join(escape(c) for c in columns) + " |",
        "|---|" + "|".join(":---:" for _ in columns) + "|",
    ]
    wrong = comparison.wrong[port]
    for src in rows:
        cells = []
        for dst in columns:
            cell = Cell(src, dst, port)
            symbol = observed.symbol(src, dst, port)
            where = expected.axes.index(cell)
            if where is not None and bool(wrong[where]):
                cells.append(f"**{escape(symbol)}** ≠ {escape(expected.symbol(src, dst, port))}")
            else:
                cells.append(escape(symbol))
        lines.append(f"| {escape(src)} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    return f"{table}\n\n{note}" if note else table


def _step_section(step: StepRecord, several: bool) -> str:
    comparison = step.comparison
    title = f"### Step {step.name}" if several else "### Matrices"
    verdict = "as expected" if step.ok else plural(comparison.mismatch_count, "wrong cell")
    out = [
        title,
        "",
        f"{plural(step.probes, 'probe')}, {verdict}, {format_duration(step.duration)}. "
        f"Policies in force: {escape(', '.join(step.policies)) or 'none'}.",
    ]
    for port in comparison.expected.ports:
        out += ["", f"**{port}**", "", _matrix_table(comparison, port)]
    out += ["", f"Symbols: {escape(LEGEND)}. A bold cell is wrong: observed ≠ expected."]
    if not comparison.ok:
        out += ["", "Wrong cells:", ""]
        for i, m in enumerate(comparison.iter_mismatches()):
            if i >= PAGE_CELL_LIMIT:
                out.append(f"- ... and {comparison.mismatch_count - PAGE_CELL_LIMIT} more (all in the JSON report)")
                break
            out.append(f"- {escape(m.line())}")
            why = step.explanations.get(m.cell)
            if why:
                out.append(f"  - reference model: {escape(why)}")
            if m.observed.command:
                out += ["", textwrap.indent(_fence(m.observed.command, "sh"), "  "), ""]
    if comparison.unsupported_count:
        out += ["", f"{plural(comparison.unsupported_count, 'probe')} not run on this backend:", ""]
        out += [f"- {escape(str(c))} ({escape(comparison.observed[c].detail)})" for c in comparison.unsupported[:PAGE_CELL_LIMIT]]
    audit = step.audit
    if audit is not None:
        out += [
            "",
            f"Audit: staged {escape(', '.join(audit.staged))} enforce nothing now. Enforcing them would block "
            f"{plural(len(audit.would_block), 'cell')} and allow {plural(len(audit.would_allow), 'cell')} (reference model)"
            + (", as the step declares." if audit.declared and not audit.undeclared else "."),
        ]
        out += [f"- would block: {escape(str(c))}" for c in audit.would_block[:PAGE_CELL_LIMIT]]
        out += [f"- would allow: {escape(str(c))}" for c in audit.would_allow[:PAGE_CELL_LIMIT]]
        if audit.undeclared:
            out += ["", "Not as `expect_when_enforced` declares:", ""] + [f"- {escape(line)}" for line in audit.undeclared]
    findings = step.findings
    if findings is not None and not findings.ok:
        count = plural(findings.mismatch_count, "cell")
        out += ["", f"CNI findings: {count} where the network and Kubernetes semantics (the reference model) differ:", ""]
        out += [
            f"- {escape(str(m.cell))}: model {m.expected.value}, observed {m.observed.outcome.value}"
            for m in findings.mismatches[:PAGE_CELL_LIMIT]
        ]
    return "\n".join(out)


_CONSTRAINT_MARK = {
    ConstraintStatus.PASSED: "✅ held",
    ConstraintStatus.VIOLATED: "❌ violated",
    ConstraintStatus.NOT_APPLICABLE: "not applicable",
}


def _finding_cells(finding: Finding) -> list[str]:
    out = []
    for cell in finding.cells[:PAGE_CELL_LIMIT]:
        out.append(f"- {escape(cell.line())}")
        if cell.observed:
            agreement = "" if cell.model_agrees else " (the reference model blocks it)"
            out.append(f"  - observed: {escape(cell.observed)}{agreement}")
        if cell.why:
            out.append(f"  - reference model: {escape(cell.why)}")
    rest = finding.count - min(len(finding.cells), PAGE_CELL_LIMIT)
    if rest > 0:
        out.append(f"- ... and {rest} more, by group:")
        out += [f"  - {escape(g.line().strip())}" for g in finding.groups]
    return out


def _constraint_cells(result: ConstraintResult, several: bool) -> str:
    """The cells that violate a constraint, step by step."""
    out: list[str] = []
    for step in result.steps:
        head = f"Step {escape(step.step)}: " if several else ""
        if step.model.count:
            out += ["", f"{head}{step.model.count} of {step.model.checked} cell(s) checked by the reference model:", ""]
            out += _finding_cells(step.model)
        if step.observed is not None and step.observed.count:
            out += ["", f"{head}{step.observed.count} of {step.observed.checked} probed cell(s), with real traffic:", ""]
            out += _finding_cells(step.observed)
    return "\n".join(out)


def constraints_section(record: ScenarioRecord) -> str:
    """The scenario's constraint results: a table, then the cells of each violated one."""
    checks = record.constraints
    if checks is None:
        return ""
    out = [
        "## Constraints",
        "",
        f"From {escape(checks.source)}.",
        "",
        "| constraint | result | cells |",
        "|---|---|---|",
    ]
    for result in checks.results:
        if result.status is ConstraintStatus.NOT_APPLICABLE:
            cells = "selects nothing at any step"
        elif result.status is ConstraintStatus.VIOLATED:
            cells = f"{result.violations} violating of {result.checked} checked"
        else:
            cells = f"{result.checked} checked"
        out.append(f"| {escape(result.name)} | {_CONSTRAINT_MARK[result.status]} | {cells} |")
    several = len(record.steps) > 1
    for result in checks.violated:
        out += ["", f"**{escape(result.name)}**: {escape(result.description)} It asserts: {escape(result.summary)}."]
        out.append(_constraint_cells(result, several))
    return "\n".join(out)


def _impact_lines(impact: Mapping[str, Any]) -> str:
    lines = [
        f"{escape(str(impact.get('status')))}: {impact.get('opened', 0)} cell(s) opened, {impact.get('closed', 0)} closed"
        + (
            f", **{impact['undeclared_openings']} opening(s) no expectation declares**"
            if impact.get("undeclared_openings")
            else ""
        )
        + ".",
        "",
    ]
    for step in impact.get("steps", []):
        for group in step.get("groups", [])[:PAGE_CELL_LIMIT]:
            mark = "🔴 opened" if group.get("change") == "opened" else "🔵 closed"
            lines.append(f"- {mark}: {escape(str(group.get('summary', '')))}")
    for diff in impact.get("diffs", []):
        lines += ["", _fence(str(diff.get("diff", "")), "diff")]
    return "\n".join(lines)


def scenario_markdown(record: ScenarioRecord) -> str:
    out = [f"# {_STATUS_MARK[record.status]} Scenario {escape(record.name)}: {escape(record.status_text)}", ""]
    if record.description:
        out += [escape(record.description), ""]
    if record.reason and record.status is not Status.PASSED:
        out += [f"**{escape(record.status.value)}**: {escape(record.reason)}", ""]
    out += [
        "| file | backend | probes | wrong | unsupported | duration |",
        "|---|---|---:|---:|---:|---:|",
        f"| {escape(record.path)} | {escape(record.backend_label)} | {record.probes} | {record.mismatches} "
        f"| {record.unsupported} | {format_duration(record.duration)} |",
    ]
    constraints = constraints_section(record)
    if constraints:
        # Before the matrices: a violated constraint is what a reader must see first.
        out += ["", constraints]
    several = len(record.steps) > 1
    for step in record.steps:
        out += ["", _step_section(step, several)]
    applied = [(s.name, a) for s in record.steps for a in s.applied]
    if applied:
        out += ["", "## Policies", ""]
        for step_name, policy in applied:
            where = f" (step {escape(step_name)})" if several else ""
            out += [f"**{escape(policy.ref)}**{where}", "", _fence(policy.yaml, "yaml"), ""]
    if record.impact is not None:
        out += ["", "## Change since " + escape(str(record.impact.get("base"))), "", _impact_lines(record.impact)]
    if record.baseline is not None:
        baseline = record.baseline
        if baseline.error:
            out += ["", "## Baseline", "", _fence(baseline.error)]
        else:
            out += ["", "## Baseline", "", f"{escape(baseline.described)}: {escape(baseline.summary)}."]
            if baseline.text:
                out += ["", _fence(baseline.text)]
    if record.message and record.status.failing and not record.ran:
        out += ["", "## Failure", "", _fence(record.message)]
    return "\n".join(out).rstrip() + "\n"


def run_summary_markdown(records: Sequence[ScenarioRecord], report_dir: str = "") -> str:
    """A section for ``$GITHUB_STEP_SUMMARY``: the table, then the wrong cells of each
    failing scenario."""
    summary = RunSummary(tuple(records))
    out = [f"## netpol-harness: {escape(summary.headline())}", ""]
    if summary.backends:
        out += [f"Backend: {escape('; '.join(summary.backends))}.", ""]
    out += [summary_table(records)]
    tallies = constraint_tallies(records)
    if tallies:
        out += ["", "Constraints:", ""] + [
            f"- {'❌ ' if t.violated or t.applies_nowhere else ''}{escape(t.line())}" for t in tallies
        ]
    for r in ordered(records):
        if not r.status.failing:
            continue
        lines: list[str] = []
        total = 0
        for result in r.constraints.violated if r.constraints is not None else ():
            lines.append(f"violates constraint {result.name}: {result.description}")
            total += 1  # the heading line counts as listed, so that "... and N more" counts cells
            for step in result.steps:
                for finding in (step.model, step.observed):
                    if finding is None:
                        continue
                    total += finding.count
                    for cell in finding.cells:
                        if len(lines) >= SUMMARY_CELL_LIMIT:
                            break
                        lines.append(f"  {cell.line()}")
        for s in r.steps:
            total += s.comparison.mismatch_count
            for m in s.comparison.iter_mismatches():
                if len(lines) >= SUMMARY_CELL_LIMIT:
                    break
                lines.append(m.line())
        if r.baseline is not None and r.baseline.changes:
            total += len(r.baseline.changes)
            lines += [
                f"{line} (step {step})" if r.baseline.several_steps else line
                for step, _, line in r.baseline.changes[: max(0, SUMMARY_CELL_LIMIT - len(lines))]
            ]
        if not lines:
            text = (
                (r.baseline.error if r.baseline is not None and r.baseline.error else "")
                or r.message
                or r.reason
                or r.status.value
            )
            lines = text.splitlines()[:SUMMARY_CELL_LIMIT]
            total = len(lines)
        if total > len(lines):
            lines.append(f"... and {total - len(lines)} more")
        out += [
            "",
            f"<details><summary>{escape(r.name)}: {escape(r.reason or r.status.value)}</summary>",
            "",
            _fence("\n".join(lines)),
            "",
            "</details>",
        ]
    if report_dir:
        # A path on the runner, not a link: it only exists where the job ran (upload
        # the directory as an artifact to keep it).
        out += ["", f"Full report: written to `{report_dir}/index.html` on the runner."]
    return "\n".join(out) + "\n"
