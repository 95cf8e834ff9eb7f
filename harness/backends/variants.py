"""Backend variants: the same scenarios run once per CNI version in one pytest run,
and what changed from one version to the next.

A variant is a set of backend options laid over the command line's (for kind, one
``--calico-version``). Pure: no pytest, no cluster client.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.backends.base import OptionSource
from harness.core.matrix import Cell, Observation


@dataclass(frozen=True)
class BackendVariant:
    """``label`` goes into test ids (``default-deny[calico-3.31]``); ``options``
    override the command line's backend options."""

    label: str
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)


DEFAULT_VARIANT = BackendVariant("")


def calico_variants(
    versions: Sequence[str] | None, cluster_name: str | None, separate_clusters: bool = True
) -> list[BackendVariant]:
    """One variant per ``--calico-version``; a single version needs none. With
    ``separate_clusters`` each variant gets its own cluster name, so a kept cluster is
    reused by its version; without, one cluster is upgraded from each to the next."""
    if not versions or len(versions) < 2:
        return [DEFAULT_VARIANT]
    base = cluster_name or "netpol-harness"
    variants = []
    for version in versions:
        options: dict[str, Any] = {"calico_version": [version]}
        if separate_clusters:
            options["cluster_name"] = f"{base}-" + re.sub(r"[^a-z0-9]+", "-", version.lower()).strip("-")
        variants.append(BackendVariant(f"calico-{version}", options))
    return variants


class VariantOptions:
    """An :class:`~harness.backends.base.OptionSource` with a variant's options on top."""

    def __init__(self, base: OptionSource, variant: BackendVariant) -> None:
        self.base = base
        self.variant = variant

    def getoption(self, name: str, default: Any = None) -> Any:
        if name in self.variant.options:
            return self.variant.options[name]
        return self.base.getoption(name, default)


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
    before: Iterable[tuple[str, Mapping[Cell, Observation]]],
    after_label: str,
    after: Iterable[tuple[str, Mapping[Cell, Observation]]],
) -> list[VariantChange]:
    """Cells of the same step whose outcome differs between two variants' runs
    (``before``/``after``: step name and observed cells, in step order)."""
    changes = []
    after_steps = dict(after)
    for step, cells in before:
        other = after_steps.get(step)
        if other is None:
            continue
        for cell in sorted(set(cells) & set(other)):
            if cells[cell].outcome is not other[cell].outcome:
                changes.append(VariantChange(scenario, step, cell, cells[cell], other[cell], before_label, after_label))
    return changes
