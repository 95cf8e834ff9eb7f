"""What a change does to a scenario: every step of it as it is in the working tree
against the same step as it was at a git revision (files read with git, nothing
checked out), by the reference model; optionally confirmed with the
observations of a probing backend; and the gate on openings no expectation
declares.

The computation of one step is :func:`harness.engine.impact.compute_impact`; this
module pairs the revisions' scenarios and steps, reads the changed lines of the
policy files, and decides which opened cells a scenario acknowledges: an opened
cell is *declared* when the step's intent (written as rules or a matrix) says it is
allowed. An intent of ``model: true`` declares nothing: it says "whatever the
policies do", so every opening under it is undeclared.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.core.addressing import plan_addresses
from harness.core.errors import HarnessError, ScenarioError
from harness.core.matrix import ALLOWED_CODE, Cell, Outcome
from harness.core.plan import StepPlan
from harness.engine.impact import Change, FileDiff, ImpactSide, StepImpact, compute_impact, policy_diffs
from harness.engine.pipeline import ScenarioResult
from harness.model import model_of
from harness.scenario import ExpectationForm, Scenario, load_scenario
from harness.scenario.files import SCENARIO_SUFFIXES, looks_like_scenario
from harness.scenario.sources import FileSource, GitRevision, WorkingTree

#: Undeclared opened cells listed in a gate's message; the reports list them all.
LISTED_UNDECLARED = 20


class Status(enum.Enum):
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    NEW = "new"
    REMOVED = "removed"
    ERROR = "error"


@dataclass(frozen=True)
class Confirmation:
    """How many of a step's opened and closed cells real traffic saw in their new
    state, on which backend; ``contradicted`` lists those it saw otherwise."""

    backend: str
    opened: int
    closed: int
    contradicted: tuple[Cell, ...] = ()


@dataclass(frozen=True)
class StepChange:
    name: str
    impact: StepImpact
    #: Opened cells the step's intent does not declare allowed.
    undeclared: tuple[Cell, ...] = ()
    confirmation: Confirmation | None = None


@dataclass(frozen=True)
class ScenarioChange:
    path: str
    name: str
    status: Status
    base: str  # the revision, as the user named it
    steps: tuple[StepChange, ...] = ()
    diffs: tuple[FileDiff, ...] = ()
    error: str = ""
    #: At the base, the scenario's file was at this other path (renamed since).
    renamed_from: str = ""

    @property
    def opened(self) -> int:
        return sum(s.impact.opened for s in self.steps)

    @property
    def closed(self) -> int:
        return sum(s.impact.closed for s in self.steps)

    @property
    def undeclared(self) -> int:
        return sum(len(s.undeclared) for s in self.steps)

    def gate_message(self) -> str:
        """Why ``--fail-on-opened`` fails this scenario ("" when it does not)."""
        if not self.undeclared:
            return ""
        lines = [
            f"{self.name}: the change since {self.base} opens {self.undeclared} path(s) that no expectation of the "
            "scenario declares allowed. If the opening is intended, declare it in the scenario's intent "
            "(an expect rule with result: allowed) in the same change."
        ]
        listed = 0
        for step in self.steps:
            if not step.undeclared:
                continue
            where = f"step {step.name}: " if len(self.steps) > 1 else ""
            for group in step.impact.groups:
                if group.change is Change.OPENED:
                    lines.append(f"  {where}{group.summary()}")
                    rule = group.expect_rule()
                    if rule is not None:
                        lines.append(f"    declare it with: {_flow(rule)}")
            for cell in step.undeclared:
                if listed >= LISTED_UNDECLARED:
                    break
                lines.append(f"  {where}{cell} opened, not declared")
                listed += 1
        if self.undeclared > listed:
            lines.append(f"  ... and {self.undeclared - listed} more")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "name": self.name,
            "status": self.status.value,
            "base": self.base,
            "renamed_from": self.renamed_from or None,
            "error": self.error or None,
            "opened": self.opened,
            "closed": self.closed,
            "undeclared_openings": self.undeclared,
            "steps": [
                {
                    "name": s.name,
                    **s.impact.to_json(),
                    "undeclared": [{"source": c.source, "destination": c.destination, "port": str(c.port)} for c in s.undeclared],
                    "confirmation": None
                    if s.confirmation is None
                    else {
                        "backend": s.confirmation.backend,
                        "opened": s.confirmation.opened,
                        "closed": s.confirmation.closed,
                        "contradicted": [str(c) for c in s.confirmation.contradicted],
                    },
                }
                for s in self.steps
            ],
            "diffs": [
                {"base": d.base_path, "head": d.head_path, "added": d.added, "removed": d.removed, "diff": d.text()}
                for d in self.diffs
            ],
        }


def _flow(rule: dict[str, Any]) -> str:
    parts = []
    for key, value in rule.items():
        text = "[" + ", ".join(value) + "]" if isinstance(value, list) else str(value)
        parts.append(f"{key}: {text}")
    return "{" + ", ".join(parts) + "}"


def _side(plan: StepPlan) -> ImpactSide:
    state = plan.state
    model = model_of(state, plan_addresses(state.topology), plan.settings)
    names = {ref: str(key) for ref, key in state.modelled.origins.items() if ref != key.ref}
    return ImpactSide(model, plan.cells.axes.ports, _probes_self(plan), names)


def _probes_self(plan: StepPlan) -> bool:
    axes = plan.cells.axes
    for i, source in enumerate(axes.sources):
        column = axes.column(source)
        if column is not None and any(bool(plan.cells.masks[p][i, column]) for p in axes.ports):
            return True
    return False


def _undeclared(scenario: Scenario, index: int, impact: StepImpact) -> tuple[Cell, ...]:
    plan = scenario.plans[index]
    declares = scenario.steps[index].expect.form is not ExpectationForm.MODEL
    out = []
    for cell in impact.cells(Change.OPENED):
        if declares:
            where = plan.expected.axes.index(cell)
            if where is not None and int(plan.expected.codes(cell.port)[where]) == ALLOWED_CODE:
                continue
        out.append(cell)
    return tuple(out)


def scenario_change(
    path: Path,
    base: GitRevision,
    head: Scenario | None = None,
    base_name: str | None = None,
    head_files: FileSource | None = None,
) -> ScenarioChange:
    """The change of the scenario at ``path`` since ``base``. ``head`` is the
    scenario as loaded from the working tree (loaded here when not given)."""
    head_files = head_files or WorkingTree()
    shown = str(path)
    if head is None:
        try:
            head = load_scenario(path, head_files)
        except ScenarioError as err:
            return ScenarioChange(shown, path.stem, Status.ERROR, base_name or base.revision, error=str(err))
    label = base_name or base.revision
    old_path = None if base.is_file(path) else base.renamed_from(path)
    base_path = old_path or path
    if not base.is_file(base_path):
        new = tuple(StepChange(p.name, compute_impact(None, _side(p))) for p in head.plans)
        return ScenarioChange(shown, head.name, Status.NEW, label, new)
    try:
        before = load_scenario(base_path, base)
    except ScenarioError as err:
        return ScenarioChange(shown, head.name, Status.ERROR, label, error=f"at {label}: {err}")
    previous = {p.name: p for p in before.plans}
    steps: list[StepChange] = []
    for i, plan in enumerate(head.plans):
        old = previous.get(plan.name)
        impact = compute_impact(_side(old) if old is not None else None, _side(plan))
        steps.append(StepChange(plan.name, impact, _undeclared(head, i, impact)))
    edits = [e for s in steps for e in s.impact.edits]
    diffs = policy_diffs(edits, lambda shown_path: _read(base, shown_path, label), lambda f: _read(head_files, f, ""))
    changed = any(s.impact.changed or s.impact.new for s in steps) or bool(edits)
    return ScenarioChange(
        shown,
        head.name,
        Status.CHANGED if changed else Status.UNCHANGED,
        label,
        tuple(steps),
        tuple(diffs.values()),
        renamed_from=str(old_path) if old_path is not None else "",
    )


def _read(files: FileSource, shown: str, revision: str) -> str | None:
    """A policy file's text by the name the loader gave it (``REV:path`` at a revision)."""
    if isinstance(files, GitRevision):
        prefix = f"{files.revision}:"
        path = files.root / shown.removeprefix(prefix)
    else:
        path = Path(shown)
    try:
        return files.read_text(path) if files.is_file(path) else None
    except ScenarioError:
        return None


def removed_scenarios(paths: Sequence[Path], base: GitRevision, present: Iterable[Path]) -> list[ScenarioChange]:
    """Scenario files under ``paths`` at the base that the working tree no longer has
    (nor has under another name)."""
    now = {p.resolve() for p in present}
    renamed = {old.resolve() for old in base.renames().values()}
    out = []
    for path in _walk(base, paths):
        if path.exists() or path.resolve() in now or path.resolve() in renamed:
            continue
        try:
            before = load_scenario(path, base)
        except ScenarioError:
            continue
        out.append(ScenarioChange(str(path), before.name, Status.REMOVED, base.revision))
    return out


def _walk(files: FileSource, paths: Sequence[Path]) -> Iterator[Path]:
    for root in paths:
        if files.is_file(root):
            yield root
            continue
        stack = [root]
        while stack:
            directory = stack.pop()
            for entry in files.iterdir(directory):
                if files.is_dir(entry):
                    stack.append(entry)
                elif entry.suffix in SCENARIO_SUFFIXES:
                    yield entry


def scenario_files(paths: Sequence[Path]) -> list[Path]:
    """The scenario files of the working tree under ``paths``: files as given, and
    the files of directories that look like scenarios (as collection does)."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.suffix in SCENARIO_SUFFIXES and looks_like_scenario(p))
        elif path.exists():
            out.append(path)
        else:
            raise HarnessError(f"{path} does not exist")
    return out


def confirm(change: ScenarioChange, result: ScenarioResult) -> ScenarioChange:
    """``change`` with each step's opened and closed cells checked against what the
    probes observed in the working tree's state."""
    by_name = {s.name: s for s in result.steps}
    steps = []
    for step in change.steps:
        observed = by_name.get(step.name)
        if observed is None:
            steps.append(step)
            continue
        matrix = observed.observed
        counts = {Change.OPENED: 0, Change.CLOSED: 0}
        contradicted = []
        for kind, want in ((Change.OPENED, Outcome.ALLOWED), (Change.CLOSED, Outcome.BLOCKED)):
            for cell in step.impact.cells(kind):
                seen = matrix.observation(cell)
                if seen is None or seen.outcome is Outcome.UNSUPPORTED:
                    continue
                if seen.outcome is want:
                    counts[kind] += 1
                else:
                    contradicted.append(cell)
        confirmation = Confirmation(result.backend.backend, counts[Change.OPENED], counts[Change.CLOSED], tuple(contradicted))
        steps.append(replace(step, confirmation=confirmation))
    return replace(change, steps=tuple(steps))


@dataclass(frozen=True)
class ImpactReport:
    """A whole run of ``impact``: one change per scenario."""

    base: str
    changes: tuple[ScenarioChange, ...] = field(default=())

    @property
    def opened(self) -> int:
        return sum(c.opened for c in self.changes)

    @property
    def closed(self) -> int:
        return sum(c.closed for c in self.changes)

    @property
    def undeclared(self) -> int:
        return sum(c.undeclared for c in self.changes)

    @property
    def errors(self) -> list[ScenarioChange]:
        return [c for c in self.changes if c.status is Status.ERROR]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "netpol-harness impact",
            "base": self.base,
            "opened": self.opened,
            "closed": self.closed,
            "undeclared_openings": self.undeclared,
            "scenarios": [c.to_json() for c in self.changes],
        }
