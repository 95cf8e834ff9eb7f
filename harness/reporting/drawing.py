"""Which part of a large matrix a report draws: all of it up to a size, beyond that
only the rows and columns that hold a wrong cell (the JSON report has every cell),
so a page of a thousand pods stays readable."""

from __future__ import annotations

from harness.core.matrix import Comparison, labels_where
from harness.core.topology import PortProtocol

#: Largest grid (rows × columns) drawn whole.
MAX_DRAWN_CELLS = 2500
#: Most rows and columns drawn around the wrong cells of a larger grid.
MAX_DRAWN_AXIS = 50


def drawn_region(comparison: Comparison, port: PortProtocol) -> tuple[list[str], list[str], str]:
    """(rows, columns, note): what to draw of ``port``'s grid, and a note saying
    what was left out ("" when it is drawn whole; no columns when nothing is)."""
    expected = comparison.expected
    rows = list(expected.sources)
    columns = list(expected.columns(port))
    size = len(rows) * len(columns)
    if size <= MAX_DRAWN_CELLS:
        return rows, columns, ""
    wrong = comparison.wrong[port]
    shape = f"{len(rows)}×{len(columns)}"
    if not wrong.any():
        return [], [], f"{port}: {shape} cells, all as expected (too many to draw; every cell is in the JSON report)."
    hit_rows = set(labels_where(expected.sources, wrong.any(axis=1)))
    hit_cols = set(labels_where(expected.destinations, wrong.any(axis=0)))
    rows = [r for r in rows if r in hit_rows][:MAX_DRAWN_AXIS]
    columns = [c for c in columns if c in hit_cols][:MAX_DRAWN_AXIS]
    return (
        rows,
        columns,
        f"{shape} cells; only {len(rows)} row(s) and {len(columns)} column(s) with wrong cells are drawn "
        f"(at most {MAX_DRAWN_AXIS} of each; every cell is in the JSON report).",
    )
