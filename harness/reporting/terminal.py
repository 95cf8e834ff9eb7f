"""The table printed at the end of a run: one row per scenario, within the
terminal's width (80 columns fit)."""

from __future__ import annotations

import io
from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.engine.verdict import Status
from harness.reporting.records import RunSummary, ScenarioRecord, constraint_tallies, format_duration, ordered

_STATUS_STYLE = {
    Status.PASSED: "green",
    Status.FAILED: "bold red",
    Status.ERROR: "bold red",
    Status.XPASSED: "bold red",
    Status.XFAILED: "yellow",
    Status.SKIPPED: "dim",
}


def summary_table(records: Sequence[ScenarioRecord], width: int = 80) -> tuple[Table, str]:
    """One row per scenario, failures first, and the line printed under it. The
    backend is a column only when scenarios ran on several; otherwise that line
    names it. Columns for unsupported cells, CNI findings and baselines appear
    when some scenario has them."""
    summary = RunSummary(tuple(records))
    labels = summary.backends
    with_unsupported = any(r.unsupported for r in records)
    with_findings = any(r.findings for r in records)
    with_baseline = any(r.baseline is not None for r in records)
    with_constraints = any(r.constraints is not None for r in records)
    backend_column = len(labels) > 1
    caption = summary.headline()
    if labels and not backend_column:
        caption += f" on {labels[0]}"
    table = Table(box=box.SIMPLE_HEAD, show_footer=True, pad_edge=False, width=None)
    # The short columns keep their width; the scenario name takes what is left and
    # folds only beyond that (names are what one searches for).
    table.add_column("scenario", footer="total", overflow="fold", ratio=1, min_width=12)
    table.add_column("status", no_wrap=True)
    if backend_column:
        table.add_column("backend", overflow="fold", max_width=24)
    table.add_column("probes", justify="right", footer=str(summary.probes), no_wrap=True)
    table.add_column("wrong", justify="right", footer=str(summary.mismatches), no_wrap=True)
    if with_unsupported:
        table.add_column("unsup.", justify="right", footer=str(summary.unsupported), no_wrap=True)
    if with_findings:
        table.add_column("cni≠model", justify="right", footer=str(summary.findings), no_wrap=True)
    if with_baseline:
        table.add_column("baseline", overflow="fold", max_width=18)
    if with_constraints:
        table.add_column("constraints", no_wrap=True)
    table.add_column("time", justify="right", footer=format_duration(summary.duration), no_wrap=True)
    for r in ordered(records):
        # Text, not str: rich would read "[calico-3.31]" in a name as markup.
        row: list[str | Text] = [Text(r.name), Text(r.status.value, style=_STATUS_STYLE[r.status])]
        if backend_column:
            row.append(Text(r.backend_label))
        row.append(str(r.probes) if r.ran else "-")
        row.append(Text(str(r.mismatches), style="bold red" if r.mismatches and r.status.failing else "") if r.ran else "-")
        if with_unsupported:
            row.append(Text(str(r.unsupported), style="yellow" if r.unsupported else "") if r.ran else "-")
        if with_findings:
            row.append(Text(str(r.findings), style="magenta" if r.findings else "") if r.ran else "-")
        if with_baseline:
            text = r.baseline_summary or "-"
            row.append(Text(text, style="" if text in ("same", "-") else "bold red"))
        if with_constraints:
            text = r.constraints_text or "-"
            row.append(Text(text, style="bold red" if text.endswith("violated") else ""))
        row.append(format_duration(r.duration))
        table.add_row(*row)
    return table, caption


def render_summary(records: Sequence[ScenarioRecord], width: int, color: bool) -> str:
    """The table as text ``width`` columns wide; ANSI colours only when ``color``."""
    out = io.StringIO()
    console = Console(
        file=out,
        width=max(width, 60),
        force_terminal=color,
        no_color=not color,
        color_system="standard" if color else None,
        highlight=False,
        emoji=False,
        legacy_windows=False,
    )
    table, caption = summary_table(records, console.width)
    table.expand = False
    console.print(table)
    console.print(Text(caption), soft_wrap=False)
    # Rich pads every line to the full width; logs read better without the padding.
    lines = [line.rstrip() for line in out.getvalue().splitlines()]
    return "\n".join(lines).strip("\n") + "\n"


def constraint_lines(records: Sequence[ScenarioRecord]) -> list[tuple[str, bool]]:
    """The run's constraints, one line each, and whether the line is a failure: a
    constraint some scenario violates, or one that applies to no step of any."""
    tallies = constraint_tallies(records)
    if not tallies:
        return []
    source = next(r.constraints.source for r in records if r.constraints is not None)
    lines = [(f"netpol constraints of {source}:", False)]
    lines += [(f"  {t.line()}", bool(t.violated) or t.applies_nowhere) for t in tallies]
    return lines
