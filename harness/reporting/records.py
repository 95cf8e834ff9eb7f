"""What the reports say about one scenario: its outcome as pytest saw it, the
runner's result (matrices, mismatches) when it got that far, and the baseline
comparison when one was made. Free of pytest, so reports can be built from a
plain script too."""

from __future__ import annotations

import datetime
import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from harness import __version__
from harness.core.cluster_policy import AnyPolicy
from harness.core.matrix import Cell
from harness.engine.baseline import BaselineDiff, backend_label
from harness.engine.pipeline import ScenarioResult, StepResult

#: Version of the per-scenario JSON report layout.
REPORT_FORMAT = 1


class Status(enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    XFAILED = "xfailed"
    XPASSED = "xpassed"
    SKIPPED = "skipped"

    @property
    def failing(self) -> bool:
        """Counts against the run (an XPASS of a strict xfail is a failure)."""
        return self in (Status.FAILED, Status.ERROR, Status.XPASSED)


#: Order in reports: what needs attention first.
STATUS_ORDER = (Status.FAILED, Status.ERROR, Status.XPASSED, Status.XFAILED, Status.SKIPPED, Status.PASSED)


@dataclass(frozen=True)
class ScenarioRecord:
    """One scenario of a run.

    ``result`` is None when the scenario stopped before it was probed (an invalid
    file, a backend error); ``message`` then says why. ``baseline`` is the
    comparison with the baseline, ``baseline_error`` why none could be made.
    """

    name: str
    path: str
    status: Status
    result: ScenarioResult | None = None
    message: str = ""
    duration: float = 0.0
    baseline: BaselineDiff | None = None
    baseline_error: str = ""

    @property
    def probes(self) -> int:
        return self.result.probes if self.result else 0

    @property
    def mismatches(self) -> int:
        return self.result.mismatches if self.result else 0

    @property
    def backend(self) -> Mapping[str, str]:
        return self.result.backend if self.result else {}

    @property
    def backend_label(self) -> str:
        return backend_label(self.backend) if self.result else "-"

    @property
    def description(self) -> str:
        return self.result.scenario.description if self.result else ""

    @property
    def baseline_summary(self) -> str:
        if self.baseline_error:
            return "not compared"
        return self.baseline.summary() if self.baseline else ""

    def wrong_cells(self) -> list[tuple[StepResult, Cell]]:
        if self.result is None:
            return []
        return [(s, m.cell) for s in self.result.steps for m in s.comparison.mismatches]

    def to_json(self) -> dict[str, Any]:
        scenario: dict[str, Any] = {"name": self.name, "file": self.path}
        if self.result is not None:
            sc = self.result.scenario
            scenario.update(description=sc.description, tags=list(sc.tags), xfail=sc.xfail)
        data: dict[str, Any] = {
            "format": REPORT_FORMAT,
            "harness_version": __version__,
            "scenario": scenario,
            "status": self.status.value,
            "duration": round(self.duration, 6),
            "backend": dict(self.backend),
            "probes": self.probes,
            "mismatches": self.mismatches,
            "steps": [step_json(s) for s in self.result.steps] if self.result else [],
            "message": self.message,
        }
        if self.baseline is not None or self.baseline_error:
            data["baseline"] = baseline_json(self.baseline, self.baseline_error)
        return data


def step_json(step: StepResult) -> dict[str, Any]:
    comparison = step.comparison
    return {
        "name": step.name,
        "ok": step.ok,
        "duration": round(step.duration, 6),
        "probes": step.probes,
        "policies": list(step.policies),
        "mismatches": [
            {
                "source": m.cell.source,
                "destination": m.cell.destination,
                "port": str(m.cell.port),
                "expected": m.expected.value,
                "observed": m.observed.outcome.value,
                "detail": m.observed.detail,
                "command": m.observed.command,
                "line": m.line(),
            }
            for m in comparison.mismatches
        ],
        "unsupported": [
            {"source": c.source, "destination": c.destination, "port": str(c.port), "detail": comparison.observed.cells[c].detail}
            for c in comparison.unsupported
        ],
        "expected": comparison.expected.to_json(),
        "observed": comparison.observed.to_json(),
    }


def baseline_json(diff: BaselineDiff | None, error: str) -> dict[str, Any]:
    if diff is None:
        return {"error": error}
    base = diff.baseline
    return {
        "file": str(diff.path),
        "recorded_at": base.recorded_at,
        "harness_version": base.harness_version,
        "backend": dict(base.backend),
        "scenario_changed": diff.scenario_changed,
        "missing_steps": list(diff.missing_steps),
        "new_steps": list(diff.new_steps),
        "changed": diff.changed_cells,
        "changes": [
            {
                "step": step,
                "source": c.cell.source,
                "destination": c.cell.destination,
                "port": str(c.cell.port),
                "baseline": c.baseline.outcome.value if c.baseline else None,
                "observed": c.observed.outcome.value if c.observed else None,
                "line": c.line(),
            }
            for step, c in diff.changes()
        ],
    }


def ordered(records: Iterable[ScenarioRecord]) -> list[ScenarioRecord]:
    """Failures first, then the rest, each group in run order."""
    records = list(records)
    return sorted(records, key=lambda r: STATUS_ORDER.index(r.status))


@dataclass(frozen=True)
class RunSummary:
    """Counts and context of a whole run, for headings."""

    records: tuple[ScenarioRecord, ...]
    #: When the summary was made, at the end of the run.
    finished: datetime.datetime = field(default_factory=lambda: datetime.datetime.now(datetime.UTC))

    @property
    def counts(self) -> dict[Status, int]:
        counts = {s: 0 for s in STATUS_ORDER}
        for r in self.records:
            counts[r.status] += 1
        return counts

    @property
    def failing(self) -> int:
        return sum(1 for r in self.records if r.status.failing)

    @property
    def probes(self) -> int:
        return sum(r.probes for r in self.records)

    @property
    def mismatches(self) -> int:
        return sum(r.mismatches for r in self.records)

    @property
    def duration(self) -> float:
        return sum(r.duration for r in self.records)

    @property
    def backends(self) -> list[str]:
        seen: list[str] = []
        for r in self.records:
            if r.result is not None and r.backend_label not in seen:
                seen.append(r.backend_label)
        return seen

    def headline(self) -> str:
        """``12 scenarios: 1 failed, 2 xfailed, 9 passed``."""
        if not self.records:
            return "no scenario ran"
        parts = [f"{n} {s.value}" for s, n in self.counts.items() if n]
        noun = "scenario" if len(self.records) == 1 else "scenarios"
        return f"{len(self.records)} {noun}: {', '.join(parts)}"


def plural(count: int, noun: str) -> str:
    """``1 probe``, ``3 probes``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes}m {rest:02d}s"


# -- policies as the scenario applied them -------------------------------------------


@dataclass(frozen=True)
class AppliedPolicy:
    step: str
    policy: AnyPolicy

    @property
    def yaml(self) -> str:
        return manifest_yaml(self.policy)


def applied_policies(result: ScenarioResult) -> list[AppliedPolicy]:
    """Every manifest the scenario applies, with the step that applies it."""
    return [AppliedPolicy(step.name, policy) for step in result.scenario.steps for policy in step.apply]


def manifest_yaml(policy: AnyPolicy) -> str:
    """The manifest as the user wrote it, as YAML (key order kept)."""
    return yaml.safe_dump(_plain(policy.manifest), sort_keys=False, default_flow_style=False, allow_unicode=True)


def _plain(value: Any) -> Any:
    # Manifests may hold read-only mappings; YAML's safe dumper wants dicts and lists.
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(v) for v in value]
    return value
