"""Baselines: the observed matrices of a run, saved to compare later runs with.

A baseline answers "did anything change?" rather than "is this what the author
meant?": record one on a known-good setup (a CNI version, a set of policies), then
compare every later run with it, and each cell whose outcome differs is reported.

One JSON file per scenario, ``<directory>/<scenario name>.json``, holds the
observed matrix of every step together with what produced it (backend, CNI and
its version, Kubernetes version, harness version, date) and the SHA-256 of the
scenario file. A file of another baseline format, a file recorded for another
content of the scenario file, or no file at all is a :class:`BaselineError` that
names the file and says what differs; it is never compared as if it fitted.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from harness import __version__
from harness.core.errors import BaselineError, HarnessError
from harness.core.files import write_atomic
from harness.core.matrix import (
    LEGEND,
    Cell,
    Comparison,
    Mismatch,
    Observation,
    Outcome,
    ReachabilityMatrix,
    compare,
)
from harness.engine.pipeline import ScenarioResult
from harness.scenario import Scenario

#: Version of the file layout and of what its cells mean. A harness that changes
#: either bumps it; baselines of another format are refused, not reinterpreted.
BASELINE_FORMAT = 1

#: Identifies a baseline file among other JSON files.
BASELINE_KIND = "netpol-harness baseline"

DIFF_LEGEND = "diff: . same  X changed  - not in both"

T = TypeVar("T")


def scenario_digest(path: Path) -> str:
    """SHA-256 of the scenario file as stored on disk."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as err:
        raise BaselineError(f"cannot read scenario file {path} to fingerprint it: {err.strerror or err}") from None


def baseline_path(directory: Path, scenario_name: str) -> Path:
    return directory / f"{scenario_name}.json"


# -- what a baseline holds -----------------------------------------------------------


@dataclass(frozen=True)
class BaselineStep:
    name: str
    policies: tuple[str, ...]
    observed: ReachabilityMatrix


@dataclass(frozen=True)
class Baseline:
    scenario: str
    scenario_file: str
    scenario_sha256: str
    harness_version: str
    recorded_at: str
    backend: Mapping[str, str] = field(hash=False)
    steps: tuple[BaselineStep, ...] = ()
    format: int = BASELINE_FORMAT

    def __post_init__(self) -> None:
        object.__setattr__(self, "backend", MappingProxyType(dict(self.backend)))

    @classmethod
    def from_result(cls, result: ScenarioResult, recorded_at: datetime.datetime | None = None) -> Baseline:
        when = recorded_at or datetime.datetime.now(datetime.UTC)
        scenario = result.scenario
        return cls(
            scenario=scenario.name,
            scenario_file=scenario.path.name,
            scenario_sha256=scenario_digest(scenario.path),
            harness_version=__version__,
            recorded_at=when.astimezone(datetime.UTC).isoformat(timespec="seconds"),
            backend=dict(result.backend),
            steps=tuple(BaselineStep(s.name, s.policies, _without_commands(s.observed)) for s in result.steps),
        )

    def step(self, name: str) -> BaselineStep | None:
        return next((s for s in self.steps if s.name == name), None)

    def describe(self) -> str:
        """Where and when it was recorded, in one line."""
        return f"recorded {self.recorded_at} on {backend_label(self.backend)} by netpol-harness {self.harness_version}"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": BASELINE_KIND,
            "format": self.format,
            "scenario": {"name": self.scenario, "file": self.scenario_file, "sha256": self.scenario_sha256},
            "recorded": {
                "at": self.recorded_at,
                "harness_version": self.harness_version,
                "backend": dict(self.backend),
            },
            "steps": [{"name": s.name, "policies": list(s.policies), "observed": s.observed.to_json()} for s in self.steps],
        }

    @classmethod
    def from_json(cls, data: Any, source: str) -> Baseline:
        """Parse a baseline file's content; ``source`` names the file in errors."""
        if not isinstance(data, dict) or data.get("kind") != BASELINE_KIND:
            raise BaselineError(f'{source} is not a netpol-harness baseline (no "kind": "{BASELINE_KIND}")')
        fmt = data.get("format")
        raw_recorded = data.get("recorded")
        recorded: dict[str, Any] = raw_recorded if isinstance(raw_recorded, dict) else {}
        writer = recorded.get("harness_version", "an unknown version")
        if fmt != BASELINE_FORMAT:
            raise BaselineError(
                f"{source} was written by netpol-harness {writer} in baseline format {fmt!r}; "
                f"netpol-harness {__version__} reads format {BASELINE_FORMAT} only. "
                "Record the baseline again with this version (--record-baseline)."
            )
        try:
            scenario = data["scenario"]
            steps = tuple(
                BaselineStep(
                    str(s["name"]),
                    tuple(str(p) for p in s.get("policies", [])),
                    ReachabilityMatrix.from_json(s["observed"]),
                )
                for s in data["steps"]
            )
            return cls(
                scenario=str(scenario["name"]),
                scenario_file=str(scenario.get("file", "")),
                scenario_sha256=str(scenario["sha256"]),
                harness_version=str(recorded["harness_version"]),
                recorded_at=str(recorded["at"]),
                backend={str(k): str(v) for k, v in recorded.get("backend", {}).items()},
                steps=steps,
                format=fmt,
            )
        except HarnessError as err:
            raise BaselineError(f"{source}: {err}") from None
        except (KeyError, TypeError, AttributeError) as err:
            raise BaselineError(f"{source} is damaged: missing or malformed field {err}") from None


def _without_commands(matrix: ReachabilityMatrix) -> ReachabilityMatrix:
    """Reproduce commands name machine-specific things (paths, pod names); a baseline
    keeps outcomes and their reasons so it reads the same wherever it was recorded."""
    cells = {cell: Observation(obs.outcome, obs.detail) for cell, obs in matrix.cells.items()}
    return ReachabilityMatrix(matrix.sources, matrix.destinations, matrix.ports, cells)


def backend_label(backend: Mapping[str, str]) -> str:
    """``kind (calico v3.29.7, Kubernetes v1.33.1)``, ``model (reference-model 0.1.0)``."""
    name = backend.get("backend", "unknown backend")
    details = " ".join(v for v in (backend.get("cni", ""), backend.get("cni_version", "")) if v)
    k8s = backend.get("kubernetes_version", "")
    parts = [p for p in (details, f"Kubernetes {k8s}" if k8s else "") if p]
    return f"{name} ({', '.join(parts)})" if parts else name


# -- reading and writing ---------------------------------------------------------------


def write_baseline(baseline: Baseline, directory: Path, key: str | None = None) -> Path:
    """Write atomically, so an interrupted run never leaves half a baseline. ``key``
    names the file (the scenario with its backend variant, when a run has several)."""
    path = baseline_path(directory, key or baseline.scenario)
    text = json.dumps(baseline.to_json(), indent=2, ensure_ascii=False) + "\n"
    try:
        write_atomic(path, text)
    except OSError as err:
        raise BaselineError(f"cannot write baseline {path}: {err.strerror or err}") from None
    return path


def record_baseline(result: ScenarioResult, directory: Path) -> Path:
    return write_baseline(Baseline.from_result(result), directory, result.key)


def load_baseline(directory: Path, scenario: Scenario, key: str | None = None) -> Baseline:
    path = baseline_path(directory, key or scenario.name)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BaselineError(
            f"no baseline for scenario {scenario.name}: {path} does not exist. Record one with --record-baseline {directory}."
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise BaselineError(f"cannot read baseline {path}: {err}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise BaselineError(f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    baseline = Baseline.from_json(data, str(path))
    if baseline.scenario != scenario.name:
        raise BaselineError(f"{path} is the baseline of scenario {baseline.scenario}, not of {scenario.name}")
    return baseline


# -- comparing -------------------------------------------------------------------------


@dataclass(frozen=True)
class CellChange:
    """A cell whose outcome differs from the baseline. ``baseline`` is None for a
    cell the baseline does not have; ``observed`` is None for one this run lacks."""

    cell: Cell
    baseline: Observation | None
    observed: Observation | None

    def line(self) -> str:
        before = self.baseline.outcome.value if self.baseline else "not probed"
        after = self.observed.describe() if self.observed else "not probed"
        return f"{self.cell} baseline {before}, observed {after}"


@dataclass(frozen=True)
class StepDiff:
    """One step against its baseline. ``comparison`` is :func:`harness.core.matrix.compare`
    with the baseline as the expectation; cells unsupported on either side are
    listed in ``unsupported`` and are no change."""

    name: str
    comparison: Comparison
    changes: tuple[CellChange, ...]
    baseline_policies: tuple[str, ...]
    policies: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.changes

    def render(self) -> str:
        baseline, observed = self.comparison.expected, self.comparison.observed
        changed = {c.cell for c in self.changes}
        ports = [p for p in _union(baseline.ports, observed.ports) if any(c.port == p for c in changed)]
        blocks = []
        for port in ports:
            if port in baseline.ports:
                blocks.append(baseline.render("baseline", [port]))
            if port in observed.ports:
                blocks.append(observed.render("observed", [port]))
            blocks.append(_diff_matrix(baseline, observed, changed).render("diff", [port]))
        blocks.append(LEGEND + "\n" + DIFF_LEGEND)
        lines = []
        for change in self.changes:
            lines.append(change.line())
            if change.observed is not None and change.observed.command:
                lines.append(f"    reproduce: {change.observed.command}")
        blocks.append(f"{len(self.changes)} changed cell(s):\n" + "\n".join(lines))
        if self.baseline_policies != self.policies:
            blocks.append(
                f"policies in force: baseline {', '.join(self.baseline_policies) or 'none'}; "
                f"now {', '.join(self.policies) or 'none'}"
            )
        return "\n\n".join(blocks)


def _union(a: tuple[T, ...], b: tuple[T, ...]) -> tuple[T, ...]:
    """``a`` then what ``b`` adds, in order: the axes of two matrices together."""
    return a + tuple(x for x in b if x not in a)


def _diff_matrix(baseline: ReachabilityMatrix, observed: ReachabilityMatrix, changed: set[Cell]) -> ReachabilityMatrix:
    """A grid drawn with the matrix renderer in the comparison-table convention:
    ``.`` for a cell that is the same (drawn as allowed), ``X`` for a changed one."""
    cells = {c: Observation(Outcome.BLOCKED if c in changed else Outcome.ALLOWED) for c in {*baseline.cells, *observed.cells}}
    return ReachabilityMatrix(
        _union(baseline.sources, observed.sources),
        _union(baseline.destinations, observed.destinations),
        _union(baseline.ports, observed.ports),
        cells,
    )


def diff_step(name: str, baseline: BaselineStep, observed: ReachabilityMatrix, policies: tuple[str, ...]) -> StepDiff:
    base = compare(baseline.observed, observed)
    unsupported = set(base.unsupported)
    changes: list[CellChange] = []
    mismatches: list[Mismatch] = []
    for m in base.mismatches:
        if m.expected is Outcome.UNSUPPORTED:
            # The baseline's backend could not probe this cell: nothing to compare with.
            unsupported.add(m.cell)
            continue
        mismatches.append(m)
        changes.append(CellChange(m.cell, baseline.observed.cells[m.cell], observed.cells.get(m.cell)))
    for cell in sorted(set(observed.cells) - set(baseline.observed.cells)):
        changes.append(CellChange(cell, None, observed.cells[cell]))
    changes.sort(key=lambda c: c.cell)
    comparison = Comparison(baseline.observed, observed, tuple(mismatches), tuple(sorted(unsupported)))
    return StepDiff(name, comparison, tuple(changes), baseline.policies, policies)


@dataclass(frozen=True)
class BaselineDiff:
    """A scenario's run against its baseline."""

    baseline: Baseline
    path: Path
    scenario_path: Path
    scenario_sha256: str
    backend: Mapping[str, str] = field(hash=False)
    steps: tuple[StepDiff, ...] = ()
    missing_steps: tuple[str, ...] = ()
    new_steps: tuple[str, ...] = ()

    @property
    def scenario_changed(self) -> bool:
        return self.scenario_sha256 != self.baseline.scenario_sha256

    @property
    def changed_cells(self) -> int:
        return sum(len(s.changes) for s in self.steps)

    @property
    def ok(self) -> bool:
        return not (self.scenario_changed or self.changed_cells or self.missing_steps or self.new_steps)

    def changes(self) -> list[tuple[str, CellChange]]:
        return [(s.name, c) for s in self.steps for c in s.changes]

    def summary(self) -> str:
        """A few words for tables: ``same``, ``3 cells changed``, ``scenario edited, 1 cell changed``."""
        parts = []
        if self.scenario_changed:
            parts.append("scenario edited")
        if self.changed_cells:
            parts.append(f"{self.changed_cells} cell{'' if self.changed_cells == 1 else 's'} changed")
        if self.missing_steps or self.new_steps:
            parts.append("steps differ")
        return ", ".join(parts) or "same"

    def render(self) -> str:
        name = self.baseline.scenario
        head = [
            f"scenario {name} differs from its baseline {self.path}",
            f"baseline: {self.baseline.describe()}",
            f"this run: {backend_label(self.backend)} with netpol-harness {__version__}",
        ]
        if self.scenario_changed:
            head.append(
                f"the scenario file {self.scenario_path} changed since the baseline was recorded "
                f"(sha256 {self.baseline.scenario_sha256[:12]}… in the baseline, {self.scenario_sha256[:12]}… now): "
                "the cells below differ from the baseline of the earlier content. If the change is intended, "
                f"record the baseline again with --record-baseline {self.path.parent}."
            )
        if self.missing_steps:
            head.append(f"steps in the baseline that this run does not have: {', '.join(self.missing_steps)}")
        if self.new_steps:
            head.append(f"steps of this run that the baseline does not have: {', '.join(self.new_steps)}")
        blocks = ["\n".join(head)]
        several = len(self.steps) > 1
        for step in self.steps:
            if step.ok:
                continue
            text = step.render()
            blocks.append(f"step {step.name}:\n{text}" if several else text)
        if not self.changed_cells:
            blocks.append("no cell changed")
        return "\n\n".join(blocks)


def diff_against(baseline: Baseline, path: Path, result: ScenarioResult) -> BaselineDiff:
    steps = []
    new_steps = []
    for step in result.steps:
        recorded = baseline.step(step.name)
        if recorded is None:
            new_steps.append(step.name)
            continue
        steps.append(diff_step(step.name, recorded, step.observed, step.policies))
    run_names = {s.name for s in result.steps}
    missing = tuple(s.name for s in baseline.steps if s.name not in run_names)
    return BaselineDiff(
        baseline,
        path,
        result.scenario.path,
        scenario_digest(result.scenario.path),
        dict(result.backend),
        tuple(steps),
        missing,
        tuple(new_steps),
    )


class BaselineChanged(HarnessError):
    """Observed cells (or steps) differ from the recorded baseline."""

    def __init__(self, diff: BaselineDiff, context: str = "") -> None:
        self.diff = diff
        super().__init__(_with_context(diff.render(), context))


class BaselineOutdated(BaselineError):
    """The baseline was recorded for another content of the scenario file."""

    def __init__(self, diff: BaselineDiff, context: str = "") -> None:
        self.diff = diff
        super().__init__(_with_context(diff.render(), context))


def _with_context(text: str, context: str) -> str:
    return f"{context}\n\n{text}" if context else text


def check_baseline(result: ScenarioResult, directory: Path) -> BaselineDiff:
    """Compare a run with its baseline in ``directory``; raises :class:`BaselineError`
    when there is no usable baseline (missing, unreadable, another format)."""
    baseline = load_baseline(directory, result.scenario, result.key)
    return diff_against(baseline, baseline_path(directory, result.key), result)


def baseline_failure(diff: BaselineDiff, context: str = "") -> HarnessError | None:
    """The error that fails the scenario, or None when nothing changed. ``context``
    (e.g. the scenario's own failure report) is put first in the message."""
    if diff.scenario_changed:
        return BaselineOutdated(diff, context)
    if not diff.ok:
        return BaselineChanged(diff, context)
    return None
