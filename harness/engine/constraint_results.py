"""What checking constraints finds, as plain data: per constraint and step, the cells
checked and the violating ones (bounded: the first cells, the rest counted by group),
found by the reference model and in the observations; their failure text and their
JSON form, which the scenario records carry to the reports
(:mod:`harness.engine.constraints` does the checking)."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from harness.core.matrix import LISTED_CELLS, Outcome


class ConstraintStatus(enum.Enum):
    PASSED = "passed"
    VIOLATED = "violated"
    NOT_APPLICABLE = "not applicable"


@dataclass(frozen=True)
class Violation:
    """One cell that breaks a constraint. ``destination`` and ``port`` are as shown:
    an endpoint or an address range outside the cluster, a port or a port range
    (every address and port of a range is treated alike by the policies in force)."""

    source: str
    destination: str
    port: str
    #: What the model (or the network) gives the cell.
    outcome: Outcome
    #: What the constraint requires of it, as words.
    required: str
    #: The reference model's explanation (the first cells only).
    why: str = ""
    #: Observed cells: what the probe saw, how to reproduce it, and whether the
    #: model finds the same violation (False: the network differs from the model).
    observed: str = ""
    command: str = ""
    model_agrees: bool = True

    def line(self) -> str:
        return f"{self.source} → {self.destination}:{self.port} {self.outcome.value}; the constraint requires {self.required}"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "source": self.source,
            "destination": self.destination,
            "port": self.port,
            "outcome": self.outcome.value,
            "required": self.required,
            "line": self.line(),
        }
        for key in ("why", "observed", "command"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        if not self.model_agrees:
            data["model_agrees"] = False
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Violation:
        return cls(
            str(data["source"]),
            str(data["destination"]),
            str(data["port"]),
            Outcome(data["outcome"]),
            str(data["required"]),
            str(data.get("why", "")),
            str(data.get("observed", "")),
            str(data.get("command", "")),
            bool(data.get("model_agrees", True)),
        )


@dataclass(frozen=True)
class Group:
    """Violating cells beyond the listed ones, counted by source namespace,
    destination (namespace or host) and port."""

    source: str
    destination: str
    port: str
    count: int

    def line(self) -> str:
        return f"  {self.source} → {self.destination}:{self.port}: {self.count} cell(s)"


@dataclass(frozen=True)
class Finding:
    """The violations found one way (by the model, or in the observations) at one step."""

    checked: int = 0
    count: int = 0
    cells: tuple[Violation, ...] = ()
    groups: tuple[Group, ...] = ()

    def render(self) -> str:
        """The first cells one per line (with why, what was seen and how to reproduce
        it), then the others counted by group."""
        lines = []
        for cell in self.cells[:LISTED_CELLS]:
            lines.append(cell.line())
            if cell.observed:
                agreement = (
                    "" if cell.model_agrees else " (the reference model blocks it: the network differs from Kubernetes semantics)"
                )
                lines.append(f"    observed: {cell.observed}{agreement}")
            if cell.why:
                lines.append(f"    model: {cell.why}")
            if cell.command:
                lines.append(f"    reproduce: {cell.command}")
        rest = self.count - min(len(self.cells), LISTED_CELLS)
        if rest > 0:
            lines.append(f"... and {rest} more (the reports list more), by group:")
            lines += [g.line() for g in self.groups[:LISTED_CELLS]]
            shown = sum(g.count for g in self.groups[:LISTED_CELLS])
            if shown < rest:
                lines.append(f"  and {rest - shown} cell(s) in other groups")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "count": self.count,
            "cells": [c.to_json() for c in self.cells],
            "groups": [{"source": g.source, "destination": g.destination, "port": g.port, "count": g.count} for g in self.groups],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Finding:
        return cls(
            int(data.get("checked", 0)),
            int(data.get("count", 0)),
            tuple(Violation.from_json(c) for c in data.get("cells", [])),
            tuple(
                Group(str(g["source"]), str(g["destination"]), str(g["port"]), int(g["count"])) for g in data.get("groups", [])
            ),
        )


@dataclass(frozen=True)
class StepCheck:
    """One constraint at one step: by the model and, on a probing backend, in the
    observations (None on the model backend)."""

    step: str
    model: Finding
    observed: Finding | None = None

    @property
    def applied(self) -> bool:
        return self.model.checked > 0

    @property
    def violations(self) -> int:
        return self.model.count + (self.observed.count if self.observed is not None else 0)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"step": self.step, "applied": self.applied, "model": self.model.to_json()}
        if self.observed is not None:
            data["observed"] = self.observed.to_json()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StepCheck:
        observed = data.get("observed")
        return cls(str(data["step"]), Finding.from_json(data["model"]), Finding.from_json(observed) if observed else None)


@dataclass(frozen=True)
class ConstraintResult:
    """One constraint on one scenario, step by step."""

    name: str
    description: str
    summary: str
    steps: tuple[StepCheck, ...] = ()

    @property
    def status(self) -> ConstraintStatus:
        if any(s.violations for s in self.steps):
            return ConstraintStatus.VIOLATED
        if any(s.applied for s in self.steps):
            return ConstraintStatus.PASSED
        return ConstraintStatus.NOT_APPLICABLE

    @property
    def violations(self) -> int:
        return sum(s.violations for s in self.steps)

    @property
    def checked(self) -> int:
        return sum(s.model.checked for s in self.steps)

    def render(self, backend: str = "") -> str:
        """The failure block of a violated constraint: its name first, then per step
        the cells the model finds and those the network showed."""
        parts = [f"violates constraint {self.name}: {self.description}\n  it asserts: {self.summary}"]
        several = len(self.steps) > 1
        for step in self.steps:
            head = f"step {step.step}: " if several else ""
            if step.model.count:
                parts.append(
                    f"{head}{step.model.count} of {step.model.checked} cell(s) checked by the reference model violate it:\n"
                    + step.model.render()
                )
            if step.observed is not None and step.observed.count:
                where = f" on backend {backend}" if backend else ""
                counted = f"{step.observed.count} of {step.observed.checked} probed cell(s)"
                parts.append(f"{head}{counted} violate it with real traffic{where}:\n" + step.observed.render())
        return "\n\n".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "summary": self.summary,
            "status": self.status.value,
            "violations": self.violations,
            "steps": [s.to_json() for s in self.steps],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ConstraintResult:
        return cls(
            str(data["name"]),
            str(data.get("description", "")),
            str(data.get("summary", "")),
            tuple(StepCheck.from_json(s) for s in data.get("steps", [])),
        )


@dataclass(frozen=True)
class ScenarioConstraints:
    """Every constraint of a file on one scenario."""

    source: str
    results: tuple[ConstraintResult, ...]
    #: The backend whose observations were checked too ("" on the model backend).
    backend: str = ""

    @property
    def violated(self) -> tuple[ConstraintResult, ...]:
        return tuple(r for r in self.results if r.status is ConstraintStatus.VIOLATED)

    def reason(self) -> str:
        """``violates constraint no-prod-internet`` (or several, by name); "" when none is."""
        names = [r.name for r in self.violated]
        if not names:
            return ""
        return f"violates constraint{'s' if len(names) > 1 else ''} {', '.join(names)}"

    def render(self, scenario: str) -> str:
        """The failure text of the violated constraints, one block each."""
        if not self.violated:
            return ""
        head = f"{scenario}: {self.reason()} (constraints of {self.source})"
        return "\n\n".join([head, *(r.render(self.backend) for r in self.violated)])

    def to_json(self) -> dict[str, Any]:
        return {"file": self.source, "backend": self.backend, "results": [r.to_json() for r in self.results]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ScenarioConstraints:
        return cls(
            str(data.get("file", "")),
            tuple(ConstraintResult.from_json(r) for r in data.get("results", [])),
            str(data.get("backend", "")),
        )


def applied_nowhere(checks: Iterable[ScenarioConstraints]) -> tuple[str, ...]:
    """Names of the constraints that apply to no step of any of ``checks`` (in file
    order): they test nothing, and a run must not pass on them silently."""
    applied: dict[str, bool] = {}
    for check in checks:
        for result in check.results:
            applied[result.name] = applied.get(result.name, False) or result.status is not ConstraintStatus.NOT_APPLICABLE
    return tuple(name for name, ok in applied.items() if not ok)
