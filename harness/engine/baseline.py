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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from harness import __version__
from harness.core.errors import BaselineError, HarnessError
from harness.core.files import write_atomic
from harness.core.matrix import (
    LEGEND,
    LISTED_CELLS,
    UNSUPPORTED_CODE,
    Axes,
    Cell,
    CellSet,
    Mask,
    Observation,
    ReachabilityMatrix,
    labels_where,
    render_grid,
)
from harness.core.topology import PortProtocol
from harness.engine.pipeline import ScenarioResult
from harness.scenario import Scenario

#: Version of the file layout and of what its cells mean. A harness that changes
#: either bumps it; baselines of another format are refused, not reinterpreted.
BASELINE_FORMAT = 2

#: Identifies a baseline file among other JSON files.
BASELINE_KIND = "netpol-harness baseline"

DIFF_LEGEND = "diff: = same  ! changed  - not in either"

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
            backend=result.backend.as_dict(),
            steps=tuple(BaselineStep(s.name, s.policies, s.observed.without_commands()) for s in result.steps),
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


@dataclass(frozen=True, eq=False)
class StepDiff:
    """One step against its baseline, both drawn on the union of their axes.
    Cells unsupported on either side are no change."""

    name: str
    baseline: ReachabilityMatrix
    observed: ReachabilityMatrix
    changed: Mapping[PortProtocol, Mask] = field(repr=False)
    baseline_policies: tuple[str, ...] = ()
    policies: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not any(m.any() for m in self.changed.values())

    @cached_property
    def change_count(self) -> int:
        return sum(int(m.sum()) for m in self.changed.values())

    def iter_changes(self) -> Iterator[CellChange]:
        for cell in CellSet(self.baseline.axes, self.changed):
            yield CellChange(cell, self.baseline.observation(cell), self.observed.observation(cell))

    @cached_property
    def changes(self) -> tuple[CellChange, ...]:
        return tuple(self.iter_changes())

    def render(self) -> str:
        lines = [f"{self.change_count} changed cell(s):"]
        for i, change in enumerate(self.iter_changes()):
            if i >= LISTED_CELLS:
                lines.append(f"... and {self.change_count - LISTED_CELLS} more (all in the reports)")
                break
            lines.append(change.line())
            if change.observed is not None and change.observed.command:
                lines.append(f"    reproduce: {change.observed.command}")
        blocks = ["\n".join(lines)]
        for port in self.baseline.ports:
            changed = self.changed[port]
            if not changed.any():
                continue
            rows = labels_where(self.baseline.sources, changed.any(axis=1))[:40]
            cols = labels_where(self.baseline.destinations, changed.any(axis=0))[:40]
            note = " (rows and columns with a changed cell)"
            blocks.append(render_grid(f"baseline {port}{note}", rows, cols, lambda s, d, p=port: self.baseline.symbol(s, d, p)))
            blocks.append(render_grid(f"observed {port}{note}", rows, cols, lambda s, d, p=port: self.observed.symbol(s, d, p)))
            blocks.append(render_grid(f"diff {port}{note}", rows, cols, lambda s, d, p=port: self._diff_symbol(s, d, p)))
        blocks.append(LEGEND + "\n" + DIFF_LEGEND)
        if self.baseline_policies != self.policies:
            blocks.append(
                f"policies in force: baseline {', '.join(self.baseline_policies) or 'none'}; "
                f"now {', '.join(self.policies) or 'none'}"
            )
        return "\n\n".join(blocks)

    def _diff_symbol(self, source: str, destination: str, port: PortProtocol) -> str:
        cell = Cell(source, destination, port)
        where = self.baseline.axes.index(cell)
        if where is None:
            return "-"
        if bool(self.changed[port][where]):
            return "!"
        probed = self.baseline.observation(cell) is not None or self.observed.observation(cell) is not None
        return "=" if probed else "-"


def _union(a: tuple[T, ...], b: tuple[T, ...]) -> tuple[T, ...]:
    """``a`` then what ``b`` adds, in order: the axes of two matrices together."""
    return a + tuple(x for x in b if x not in a)


def diff_step(name: str, baseline: BaselineStep, observed: ReachabilityMatrix, policies: tuple[str, ...]) -> StepDiff:
    base = baseline.observed
    axes = Axes(
        _union(base.sources, observed.sources),
        _union(base.destinations, observed.destinations),
        _union(base.ports, observed.ports),
    )
    b, o = base.on_axes(axes), observed.on_axes(axes)
    changed = {}
    for port in axes.ports:
        was, now = b.codes(port), o.codes(port)
        unsupported = (was == UNSUPPORTED_CODE) | (now == UNSUPPORTED_CODE)
        changed[port] = (was != now) & ~unsupported
    return StepDiff(name, b, o, MappingProxyType(changed), baseline.policies, policies)


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
        return sum(s.change_count for s in self.steps)

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
        result.backend.as_dict(),
        tuple(steps),
        missing,
        tuple(new_steps),
    )


@dataclass(frozen=True, eq=False)
class BaselineCheck:
    """A run against its baseline: the comparison, or why none could be made
    (``error``: missing, unreadable, another format). Read by the verdict."""

    diff: BaselineDiff | None = None
    error: str = ""

    def problem(self) -> str:
        """What fails the scenario ("" when nothing changed): no usable baseline, a
        baseline recorded for another content of the scenario file, or changed cells."""
        if self.error:
            return self.error
        if self.diff is not None and not self.diff.ok:
            return self.diff.render()
        return ""

    def summary(self) -> str:
        """A few words for tables: ``same``, ``3 cells changed``, ``not compared``."""
        if self.error or self.diff is None:
            return "not compared"
        return self.diff.summary()


def check_baseline(result: ScenarioResult, directory: Path) -> BaselineCheck:
    """Compare a run with its baseline in ``directory``."""
    try:
        baseline = load_baseline(directory, result.scenario, result.key)
        return BaselineCheck(diff_against(baseline, baseline_path(directory, result.key), result))
    except BaselineError as err:
        return BaselineCheck(error=str(err))
