"""What the reports say about one scenario: its verdict, its steps' matrices and
wrong cells, the baseline comparison when one was made. A record is plain data
with an exact JSON form: the pytest plugin sends it from wherever the scenario ran
(a pytest-xdist worker too) to the process that writes the reports, and every
renderer (terminal, HTML, Markdown, JSON, JUnit, the CI summary) reads only it.
Free of pytest, so reports can be built from a plain script too."""

from __future__ import annotations

import datetime
import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any

import yaml

from harness import __version__
from harness.backends.base import BackendInfo
from harness.core.errors import HarnessError
from harness.core.matrix import ALLOWED_CODE, BLOCKED_CODE, Cell, CellSet, Comparison, Mismatch, ReachabilityMatrix, compare
from harness.core.state import Manifest, object_ref
from harness.core.topology import PortProtocol
from harness.engine.baseline import BaselineCheck
from harness.engine.change import ScenarioChange
from harness.engine.constraint_results import ConstraintStatus, ScenarioConstraints
from harness.engine.pipeline import ScenarioResult, StepResult
from harness.engine.verdict import STATUS_ORDER, Status, Verdict

#: Version of the per-scenario JSON report layout (3: constraint results).
REPORT_FORMAT = 3

#: Wrong (or changed) cells listed one by one in a record; the matrices hold them all.
LISTED_CELLS = 10_000
#: Longest manifest text a report shows; a longer one is cut, with a note.
MANIFEST_TEXT_LIMIT = 64 * 1024


def _cell_json(cell: Cell) -> dict[str, str]:
    return {"source": cell.source, "destination": cell.destination, "port": str(cell.port)}


def _cell_from(data: Mapping[str, Any]) -> Cell:
    return Cell(str(data["source"]), str(data["destination"]), PortProtocol.parse(str(data["port"])))


@dataclass(frozen=True)
class AppliedPolicy:
    """A manifest a step applied, as plain data (key order kept); None when it is
    larger than a report shows (:data:`MANIFEST_TEXT_LIMIT` characters as JSON)."""

    ref: str
    manifest: Mapping[str, Any] | None
    size: int = 0

    @classmethod
    def of(cls, policy: Manifest) -> AppliedPolicy:
        plain = _plain(policy.manifest)
        size = len(json.dumps(plain, ensure_ascii=False))
        return cls(object_ref(policy), plain if size <= MANIFEST_TEXT_LIMIT else None, size)

    @property
    def yaml(self) -> str:
        """The manifest as YAML, as the reports show it."""
        if self.manifest is None:
            return f"# {self.ref}: the manifest is {self.size:,} characters long, more than a report shows\n"
        dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        return yaml.dump(self.manifest, Dumper=dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _plain(value: Any) -> Any:
    # Manifests may hold read-only mappings; YAML's safe dumper wants dicts and lists.
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class AuditRecord:
    """Audit mode: what enforcing the step's staged policies would change, by the
    reference model (``would_block``: allowed now, blocked once enforced), and where
    that differs from the step's ``expect_when_enforced:``."""

    staged: tuple[str, ...]
    would_block: tuple[Cell, ...] = ()
    would_allow: tuple[Cell, ...] = ()
    #: Cells where enforcing would not give what the step declares, as lines.
    undeclared: tuple[str, ...] = ()
    declared: bool = False

    @classmethod
    def of(cls, step: StepResult) -> AuditRecord | None:
        plan = step.plan
        if plan.enforced is None:
            return None
        now, then = plan.model, plan.enforced
        block = CellSet(now.axes, {p: (now.codes(p) == ALLOWED_CODE) & (then.codes(p) == BLOCKED_CODE) for p in now.ports})
        allow = CellSet(now.axes, {p: (now.codes(p) == BLOCKED_CODE) & (then.codes(p) == ALLOWED_CODE) for p in now.ports})
        undeclared: tuple[str, ...] = ()
        if plan.expected_when_enforced is not None:
            against = compare(plan.expected_when_enforced, then)
            undeclared = tuple(m.line() for m in against.mismatches[:LISTED_CELLS])
        return cls(
            tuple(plan.state.staged),
            tuple(itertools.islice(block, LISTED_CELLS)),
            tuple(itertools.islice(allow, LISTED_CELLS)),
            undeclared,
            plan.expected_when_enforced is not None,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "staged": list(self.staged),
            "would_block": [_cell_json(c) for c in self.would_block],
            "would_allow": [_cell_json(c) for c in self.would_allow],
            "declared": self.declared,
            "undeclared": list(self.undeclared),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AuditRecord:
        return cls(
            tuple(str(s) for s in data.get("staged", [])),
            tuple(_cell_from(c) for c in data.get("would_block", [])),
            tuple(_cell_from(c) for c in data.get("would_allow", [])),
            tuple(str(u) for u in data.get("undeclared", [])),
            bool(data.get("declared", False)),
        )


@dataclass(frozen=True, eq=False)
class StepRecord:
    name: str
    comparison: Comparison
    duration: float = 0.0
    policies: tuple[str, ...] = ()
    applied: tuple[AppliedPolicy, ...] = ()
    #: The reference model's explanation of the wrong cells reported first.
    explanations: Mapping[Cell, str] = field(default_factory=dict)
    #: The reference model's outcome of the cells observed allowed or blocked, on
    #: backends other than the model: where it differs, a CNI finding.
    model: ReachabilityMatrix | None = None
    audit: AuditRecord | None = None

    @classmethod
    def of(cls, step: StepResult) -> StepRecord:
        findings = step.findings
        return cls(
            step.name,
            step.comparison,
            step.duration,
            step.policies,
            tuple(AppliedPolicy.of(p) for p in step.plan.changes.apply),
            MappingProxyType(dict(step.explanations)),
            findings.expected if findings is not None else None,
            AuditRecord.of(step),
        )

    @property
    def ok(self) -> bool:
        return self.comparison.ok

    @property
    def probes(self) -> int:
        return self.comparison.probes

    @property
    def mismatches(self) -> tuple[Mismatch, ...]:
        return self.comparison.mismatches

    @cached_property
    def findings(self) -> Comparison | None:
        """Observed vs the reference model (None on the model backend)."""
        return compare(self.model, self.comparison.observed) if self.model is not None else None

    @property
    def finding_count(self) -> int:
        return self.findings.mismatch_count if self.findings is not None else 0

    def to_json(self) -> dict[str, Any]:
        comparison = self.comparison
        mismatches = []
        for i, m in enumerate(comparison.iter_mismatches()):
            if i >= LISTED_CELLS:
                break
            entry: dict[str, Any] = {
                **_cell_json(m.cell),
                "expected": m.expected.value,
                "observed": m.observed.outcome.value,
                "detail": m.observed.detail,
                "command": m.observed.command,
                "line": m.line(),
            }
            if m.cell in self.explanations:
                entry["model"] = self.explanations[m.cell]
            mismatches.append(entry)
        data: dict[str, Any] = {
            "name": self.name,
            "ok": self.ok,
            "duration": round(self.duration, 6),
            "probes": self.probes,
            "policies": list(self.policies),
            "applied": [{"ref": a.ref, "manifest": a.manifest, "size": a.size} for a in self.applied],
            "mismatch_count": comparison.mismatch_count,
            "mismatches": mismatches,
            "unsupported_count": comparison.unsupported_count,
            "unsupported": [
                {**_cell_json(c), "detail": comparison.observed[c].detail} for c in comparison.unsupported[:LISTED_CELLS]
            ],
            "expected": comparison.expected.to_json(),
            "observed": comparison.observed.to_json(),
            "explanations": [{**_cell_json(c), "text": t} for c, t in sorted(self.explanations.items())],
        }
        if self.audit is not None:
            data["audit"] = self.audit.to_json()
        if self.model is not None and self.findings is not None:
            data["findings"] = {
                "count": self.finding_count,
                "model": self.model.to_json(),
                "cells": [
                    {**_cell_json(m.cell), "model": m.expected.value, "observed": m.observed.outcome.value}
                    for m in self.findings.mismatches[:LISTED_CELLS]
                ],
            }
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StepRecord:
        expected = ReachabilityMatrix.from_json(data["expected"])
        observed = ReachabilityMatrix.from_json(data["observed"])
        findings = data.get("findings")
        return cls(
            str(data["name"]),
            compare(expected, observed),
            float(data.get("duration", 0.0)),
            tuple(str(p) for p in data.get("policies", [])),
            tuple(AppliedPolicy(str(a["ref"]), a.get("manifest"), int(a.get("size", 0))) for a in data.get("applied", [])),
            MappingProxyType({_cell_from(e): str(e["text"]) for e in data.get("explanations", [])}),
            ReachabilityMatrix.from_json(findings["model"]) if findings else None,
            AuditRecord.from_json(data["audit"]) if "audit" in data else None,
        )


@dataclass(frozen=True)
class BaselineRecord:
    """The comparison with a baseline, as the reports show it."""

    summary: str
    error: str = ""
    file: str = ""
    described: str = ""  # "recorded <when> on <backend> by netpol-harness <version>"
    changed: int = 0
    text: str = ""  # the full comparison, when something changed
    changes: tuple[tuple[str, Cell, str], ...] = ()  # (step, cell, line)
    several_steps: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, check: BaselineCheck) -> BaselineRecord:
        diff = check.diff
        if diff is None:
            return cls("not compared", error=check.error, text=check.error)
        changes: list[tuple[str, Cell, str]] = []
        for step in diff.steps:
            for change in step.iter_changes():
                if len(changes) >= LISTED_CELLS:
                    break
                changes.append((step.name, change.cell, change.line()))
        base = diff.baseline
        extra = {
            "recorded_at": base.recorded_at,
            "harness_version": base.harness_version,
            "backend": dict(base.backend),
            "scenario_changed": diff.scenario_changed,
            "missing_steps": list(diff.missing_steps),
            "new_steps": list(diff.new_steps),
        }
        return cls(
            diff.summary(),
            file=str(diff.path),
            described=base.describe(),
            changed=diff.changed_cells,
            text=diff.render() if not diff.ok else "",
            changes=tuple(changes),
            several_steps=len(diff.steps) > 1,
            extra=MappingProxyType(extra),
        )

    @property
    def ok(self) -> bool:
        return not self.error and not self.text

    def changed_cells(self, step: str) -> frozenset[Cell]:
        return frozenset(cell for name, cell, _ in self.changes if name == step)

    def to_json(self) -> dict[str, Any]:
        if self.error:
            return {"error": self.error}
        return {
            "file": self.file,
            **dict(self.extra),
            "described": self.described,
            "summary": self.summary,
            "changed": self.changed,
            "text": self.text,
            "several_steps": self.several_steps,
            "changes": [{"step": step, **_cell_json(cell), "line": line} for step, cell, line in self.changes],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BaselineRecord:
        if "error" in data:
            return cls("not compared", error=str(data["error"]), text=str(data["error"]))
        keys = ("recorded_at", "harness_version", "backend", "scenario_changed", "missing_steps", "new_steps")
        return cls(
            str(data["summary"]),
            file=str(data.get("file", "")),
            described=str(data.get("described", "")),
            changed=int(data.get("changed", 0)),
            text=str(data.get("text", "")),
            changes=tuple((str(c["step"]), _cell_from(c), str(c["line"])) for c in data.get("changes", [])),
            several_steps=bool(data.get("several_steps", False)),
            extra=MappingProxyType({k: data[k] for k in keys if k in data}),
        )


@dataclass(frozen=True, eq=False)
class ScenarioRecord:
    """One scenario of a run.

    ``steps`` is empty when the scenario stopped before it was probed (an invalid
    file, a backend error); ``message`` then says why."""

    nodeid: str
    name: str
    path: str
    status: Status
    reason: str = ""
    message: str = ""
    duration: float = 0.0
    description: str = ""
    tags: tuple[str, ...] = ()
    xfail: str = ""
    backend: BackendInfo | None = None
    variant: str = ""
    steps: tuple[StepRecord, ...] = ()
    baseline: BaselineRecord | None = None
    #: Where this run recorded the scenario's baseline ("" when it did not).
    baseline_recorded: str = ""
    #: The change since ``--netpol-base`` (harness.engine.change.ScenarioChange.to_json()).
    impact: Mapping[str, Any] | None = None
    #: Every constraint of the run's constraints file on this scenario.
    constraints: ScenarioConstraints | None = None

    @classmethod
    def of(
        cls,
        nodeid: str,
        result: ScenarioResult,
        verdict: Verdict,
        baseline: BaselineCheck | None = None,
        recorded: str = "",
        change: ScenarioChange | None = None,
        constraints: ScenarioConstraints | None = None,
    ) -> ScenarioRecord:
        scenario = result.scenario
        return cls(
            nodeid=nodeid,
            name=result.key,
            path=str(scenario.path),
            status=verdict.status,
            reason=verdict.reason,
            message=verdict.message,
            duration=result.duration,
            description=scenario.description,
            tags=scenario.tags,
            xfail=scenario.xfail.reason if scenario.xfail else "",
            backend=result.backend,
            variant=result.variant,
            steps=tuple(StepRecord.of(s) for s in result.steps),
            baseline=BaselineRecord.of(baseline) if baseline is not None else None,
            baseline_recorded=recorded,
            impact=change.to_json() if change is not None else None,
            constraints=constraints,
        )

    @property
    def ran(self) -> bool:
        """Whether the scenario got as far as probing."""
        return bool(self.steps)

    @property
    def probes(self) -> int:
        return sum(s.probes for s in self.steps)

    @property
    def mismatches(self) -> int:
        return sum(s.comparison.mismatch_count for s in self.steps)

    @property
    def unsupported(self) -> int:
        return sum(s.comparison.unsupported_count for s in self.steps)

    @property
    def findings(self) -> int:
        return sum(s.finding_count for s in self.steps)

    @property
    def backend_label(self) -> str:
        return self.backend.label() if self.backend is not None else "-"

    @property
    def baseline_summary(self) -> str:
        return self.baseline.summary if self.baseline is not None else ""

    @property
    def status_text(self) -> str:
        """The status, with the unsupported cells of a pass: never a plain "passed"
        for a scenario some of whose cells were not probed."""
        if self.status is Status.PASSED and self.unsupported:
            return f"passed, {self.unsupported} unsupported"
        return self.status.value

    @property
    def constraints_text(self) -> str:
        """For tables: ``1 violated``, ``3 held``, ``n/a`` (none applies), "" without constraints."""
        if self.constraints is None:
            return ""
        statuses = [r.status for r in self.constraints.results]
        violated = statuses.count(ConstraintStatus.VIOLATED)
        if violated:
            return f"{violated} violated"
        held = statuses.count(ConstraintStatus.PASSED)
        return f"{held} held" if held else "n/a"

    def wrong_cells(self) -> list[tuple[StepRecord, Cell]]:
        return [(s, m.cell) for s in self.steps for m in s.comparison.iter_mismatches()]

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": REPORT_FORMAT,
            "harness_version": __version__,
            "nodeid": self.nodeid,
            "scenario": {
                "name": self.name,
                "file": self.path,
                "description": self.description,
                "tags": list(self.tags),
                "xfail": self.xfail or None,
            },
            "status": self.status.value,
            "reason": self.reason,
            "duration": round(self.duration, 6),
            "backend": self.backend.as_dict() if self.backend is not None else {},
            "variant": self.variant,
            "probes": self.probes,
            "mismatches": self.mismatches,
            "unsupported": self.unsupported,
            "findings": self.findings,
            "steps": [s.to_json() for s in self.steps],
            "message": self.message,
        }
        if self.baseline is not None:
            data["baseline"] = self.baseline.to_json()
        if self.baseline_recorded:
            data["baseline_recorded"] = self.baseline_recorded
        if self.impact is not None:
            data["impact"] = dict(self.impact)
        if self.constraints is not None:
            data["constraints"] = self.constraints.to_json()
        return data

    @classmethod
    def from_json(cls, data: Any) -> ScenarioRecord:
        """The record :meth:`to_json` wrote. Raises :class:`HarnessError` on other data."""
        try:
            if data.get("format") != REPORT_FORMAT:
                raise ValueError(f"report format {data.get('format')!r}, expected {REPORT_FORMAT}")
            scenario = data["scenario"]
            backend = data.get("backend") or {}
            return cls(
                nodeid=str(data["nodeid"]),
                name=str(scenario["name"]),
                path=str(scenario["file"]),
                status=Status(data["status"]),
                reason=str(data.get("reason", "")),
                message=str(data.get("message", "")),
                duration=float(data.get("duration", 0.0)),
                description=str(scenario.get("description") or ""),
                tags=tuple(str(t) for t in scenario.get("tags", [])),
                xfail=str(scenario.get("xfail") or ""),
                backend=BackendInfo.from_dict({str(k): str(v) for k, v in backend.items()}) if backend else None,
                variant=str(data.get("variant", "")),
                steps=tuple(StepRecord.from_json(s) for s in data.get("steps", [])),
                baseline=BaselineRecord.from_json(data["baseline"]) if "baseline" in data else None,
                baseline_recorded=str(data.get("baseline_recorded", "")),
                impact=data.get("impact"),
                constraints=ScenarioConstraints.from_json(data["constraints"]) if "constraints" in data else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError, HarnessError) as err:
            raise HarnessError(f"not a netpol-harness scenario record: {err!r}") from None


@dataclass(frozen=True)
class ConstraintTally:
    """One constraint across a run: the scenarios that violate it, how many it held
    on, how many it did not apply to. One that applies to none tests nothing."""

    name: str
    description: str
    violated: tuple[str, ...] = ()
    held: int = 0
    not_applicable: int = 0

    @property
    def applies_nowhere(self) -> bool:
        return not self.violated and not self.held

    def line(self) -> str:
        """``no-prod-internet: violated by 1 scenario (prod-egress), held on 4, not applicable to 2``."""
        if self.applies_nowhere:
            return (
                f"{self.name}: applies to no step of the {plural(self.not_applicable, 'scenario')} of this run, "
                "so it tests nothing: the run fails"
            )
        parts = []
        if self.violated:
            parts.append(f"violated by {plural(len(self.violated), 'scenario')} ({', '.join(self.violated)})")
        if self.held:
            parts.append(f"held on {plural(self.held, 'scenario')}")
        if self.not_applicable:
            parts.append(f"not applicable to {self.not_applicable}")
        return f"{self.name}: {', '.join(parts)}"


def constraint_tallies(records: Iterable[ScenarioRecord]) -> tuple[ConstraintTally, ...]:
    """Every constraint of the run's records, in file order, with its tally."""
    tallies: dict[str, ConstraintTally] = {}
    for record in ordered(records):
        if record.constraints is None:
            continue
        for result in record.constraints.results:
            tally = tallies.get(result.name, ConstraintTally(result.name, result.description))
            status = result.status
            tallies[result.name] = ConstraintTally(
                tally.name,
                tally.description,
                (*tally.violated, record.name) if status is ConstraintStatus.VIOLATED else tally.violated,
                tally.held + (status is ConstraintStatus.PASSED),
                tally.not_applicable + (status is ConstraintStatus.NOT_APPLICABLE),
            )
    return tuple(tallies.values())


def ordered(records: Iterable[ScenarioRecord]) -> list[ScenarioRecord]:
    """Failures first, then the rest; within a status by node id, so that a run
    split over workers lists them as a serial run does."""
    return sorted(records, key=lambda r: (STATUS_ORDER.index(r.status), r.nodeid))


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
    def unsupported(self) -> int:
        return sum(r.unsupported for r in self.records)

    @property
    def findings(self) -> int:
        return sum(r.findings for r in self.records)

    @property
    def duration(self) -> float:
        return sum(r.duration for r in self.records)

    @property
    def backends(self) -> list[str]:
        seen: list[str] = []
        for r in ordered(self.records):
            if r.backend is not None and r.backend_label not in seen:
                seen.append(r.backend_label)
        return seen

    def headline(self) -> str:
        """``12 scenarios: 1 failed, 2 xfailed, 9 passed (1 with 24 unsupported cells)``."""
        if not self.records:
            return "no scenario ran"
        parts = []
        for status, n in self.counts.items():
            if not n:
                continue
            text = f"{n} {status.value}"
            if status is Status.PASSED:
                partial = [r for r in self.records if r.status is Status.PASSED and r.unsupported]
                if partial:
                    cells = sum(r.unsupported for r in partial)
                    text += f" ({len(partial)} with {plural(cells, 'unsupported cell')})"
            parts.append(text)
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
