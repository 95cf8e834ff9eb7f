"""What changed from one backend variant (a CNI version) to the next, cell by cell."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from harness.core.matrix import NOT_PROBED, Cell, CellSet, Observation, ReachabilityMatrix


@dataclass(frozen=True)
class VariantChange:
    """One cell whose observation differs between two variants."""

    scenario: str
    step: str
    cell: Cell
    before: Observation
    after: Observation
    before_label: str
    after_label: str

    def line(self) -> str:
        return (
            f"{self.scenario}/{self.step}: {self.cell} {self.before_label} {self.before.describe()}, "
            f"{self.after_label} {self.after.describe()}"
        )


def variant_changes(
    scenario: str,
    before_label: str,
    before: Iterable[tuple[str, ReachabilityMatrix]],
    after_label: str,
    after: Iterable[tuple[str, ReachabilityMatrix]],
) -> list[VariantChange]:
    """Cells of the same step whose outcome differs between two variants' runs
    (``before``/``after``: step name and observed matrix, in step order)."""
    changes = []
    after_steps = dict(after)
    for step, matrix in before:
        other = after_steps.get(step)
        if other is None:
            continue
        theirs = other.on_axes(matrix.axes)
        for port in matrix.ports:
            mine, them = matrix.codes(port), theirs.codes(port)
            differ = (mine != NOT_PROBED) & (them != NOT_PROBED) & (mine != them)
            for cell in CellSet(matrix.axes, {p: differ if p == port else np.zeros_like(differ) for p in matrix.ports}):
                changes.append(VariantChange(scenario, step, cell, matrix[cell], theirs[cell], before_label, after_label))
    return changes
