"""The table printed at the end of a run: one row per scenario."""

from __future__ import annotations

import io
from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.reporting.records import RunSummary, ScenarioRecord, Status, format_duration, ordered

_STATUS_STYLE = {
    Status.PASSED: "green",
    Status.FAILED: "bold red",
    Status.ERROR: "bold red",
    Status.XPASSED: "bold red",
    Status.XFAILED: "yellow",
    Status.SKIPPED: "dim",
}


def summary_table(records: Sequence[ScenarioRecord], width: int = 120) -> tuple[Table, str]:
    """One row per scenario, failures first, and the line printed under it. When
    every scenario ran on the same backend and a backend column would not fit in
    ``width``, that line names the backend instead."""
    with_baseline = any(r.baseline is not None or r.baseline_error for r in records)
    summary = RunSummary(tuple(records))
    labels = {r.backend_label for r in records if r.result is not None}
    rows = [_row(r, with_baseline) for r in ordered(records)]
    headers = ["scenario", "status", "backend", "probes", "mismatches"] + (["baseline"] if with_baseline else []) + ["duration"]
    # Natural width of each column, plus three characters of padding between columns.
    natural = [max([len(h)] + [len(str(row[i])) for row in rows]) for i, h in enumerate(headers)]
    backend_column = len(labels) > 1 or sum(natural) + 3 * len(natural) <= width
    caption = summary.headline()
    if not backend_column and labels:
        caption += f" on {labels.pop()}"
    table = Table(box=box.SIMPLE_HEAD, show_footer=True, pad_edge=False)
    # The short columns keep their width; the scenario name takes what is left and
    # folds only beyond that (names are what one searches for).
    others = sum(w for i, w in enumerate(natural) if i and (backend_column or i != 2))
    room = width - others - 3 * (len(natural) - (0 if backend_column else 1))
    table.add_column("scenario", footer="total", overflow="fold", min_width=max(12, min(natural[0], room)))
    table.add_column("status", no_wrap=True)
    if backend_column:
        table.add_column("backend", overflow="fold")
    table.add_column("probes", justify="right", footer=str(summary.probes), no_wrap=True)
    table.add_column("mismatches", justify="right", footer=str(summary.mismatches), no_wrap=True)
    if with_baseline:
        table.add_column("baseline", overflow="fold")
    table.add_column("duration", justify="right", footer=format_duration(summary.duration), no_wrap=True)
    for row in rows:
        table.add_row(*(cell for i, cell in enumerate(row) if backend_column or i != 2))
    return table, caption


def _row(r: ScenarioRecord, with_baseline: bool) -> list[str | Text]:
    cells: list[str | Text] = [
        r.name,
        Text(r.status.value, style=_STATUS_STYLE[r.status]),
        r.backend_label,
        str(r.probes) if r.result else "-",
        Text(str(r.mismatches), style="bold red" if r.mismatches and r.status.failing else "") if r.result else "-",
    ]
    if with_baseline:
        text = r.baseline_summary or "-"
        cells.append(Text(text, style="" if text in ("same", "-") else "bold red"))
    cells.append(format_duration(r.duration))
    return cells


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
    console.print(table)
    console.print(caption, soft_wrap=True)
    # Rich pads every line to the full width; logs read better without the padding.
    lines = [line.rstrip() for line in out.getvalue().splitlines()]
    return "\n".join(lines).strip("\n") + "\n"
