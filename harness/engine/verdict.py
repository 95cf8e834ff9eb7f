"""One verdict per scenario, made by one pure function from the comparison (and
the baseline, when one is given). The pytest plugin turns it into pytest's
outcome; the reports, JUnit properties and the CI summary read it."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from harness.core.matrix import compare, mismatch_lines
from harness.engine.baseline import BaselineCheck
from harness.engine.constraint_results import ScenarioConstraints
from harness.engine.pipeline import ScenarioResult, StepResult


class Status(enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    XFAILED = "xfailed"
    XPASSED = "xpassed"
    SKIPPED = "skipped"

    @property
    def failing(self) -> bool:
        """Counts against the run (an expected failure that did not happen is a failure)."""
        return self in (Status.FAILED, Status.ERROR, Status.XPASSED)


#: Order in reports: what needs attention first.
STATUS_ORDER = (Status.FAILED, Status.ERROR, Status.XPASSED, Status.XFAILED, Status.SKIPPED, Status.PASSED)


@dataclass(frozen=True)
class Verdict:
    """``reason`` is one line (for tables and skip/xfail reasons); ``message`` the
    full text: what is wrong first, one line per cell, then the matrices."""

    status: Status
    reason: str = ""
    message: str = ""

    @property
    def failing(self) -> bool:
        return self.status.failing


@dataclass(frozen=True)
class JudgeSettings:
    """``strict_unsupported``: any cell the backend cannot probe fails the scenario."""

    strict_unsupported: bool = False


def judge(
    result: ScenarioResult,
    baseline: BaselineCheck | None = None,
    settings: JudgeSettings | None = None,
    problems: Sequence[str] = (),
    constraints: ScenarioConstraints | None = None,
) -> Verdict:
    """The scenario's status. In order: its intent (or, for an expected failure,
    exactly the documented wrong cells), its unsupported cells, its baseline, and
    ``problems`` of the run (a baseline that could not be written): any of them
    makes it fail. A violated constraint fails it whatever the rest says (an
    expected failure or a skip too), and its text comes first: the reader sees
    which constraint is broken before any wrong cell."""
    settings = settings or JudgeSettings()
    scenario = result.scenario
    backend = result.backend.backend
    blocks: list[str] = []
    status = Status.PASSED
    reason = ""
    if scenario.xfail is not None:
        status, reason, text = _expected_failure(result)
        blocks.append(text)
    elif not result.ok:
        status = Status.FAILED
        reason = f"{result.mismatches} wrong cell(s) on backend {backend}"
        blocks.append(f"{scenario.name}: {reason}\n\n{result.render()}")
    audit = _audit(result)
    if audit:
        if status is not Status.FAILED:
            reason = audit.splitlines()[0]
        status = Status.FAILED
        blocks.append(audit)
    unsupported = result.unsupported
    if unsupported and status is Status.PASSED:
        if settings.strict_unsupported:
            status = Status.FAILED
            reason = f"{unsupported} of {result.probes} cell(s) cannot be probed on backend {backend} (--strict-unsupported)"
            blocks.append(f"{scenario.name}: {reason}\n\n{result.render()}")
        elif unsupported == result.probes:
            status = Status.SKIPPED
            notes = sorted({result_note for step in result.steps for result_note in _notes(step)})
            reason = f"every one of the {result.probes} cell(s) is unsupported on backend {backend}: {'; '.join(notes)}"
    if baseline is not None:
        problem = baseline.problem()
        if problem:
            if status is not Status.FAILED:
                reason = problem.splitlines()[0]
            status = Status.FAILED
            blocks.append(problem)
    for problem in problems:
        if status is not Status.FAILED:
            reason = problem.splitlines()[0]
        status = Status.FAILED
        blocks.append(problem)
    if constraints is not None and constraints.violated:
        # The other failure, if any, stays in the reason; an expected failure's
        # reason or a skip's does not: they no longer describe the verdict.
        also = f"; {reason}" if status is Status.FAILED and reason else ""
        status = Status.FAILED
        reason = constraints.reason() + also
        blocks.insert(0, constraints.render(scenario.name))
    return Verdict(status, reason, "\n\n".join(b for b in blocks if b))


def _audit(result: ScenarioResult) -> str:
    """What enforcing staged policies would give, where a step declares it
    (``expect_when_enforced:``) and the model disagrees: "" when none does."""
    parts = []
    for step in result.steps:
        plan = step.plan
        if plan.expected_when_enforced is None or plan.enforced is None:
            continue
        against = compare(plan.expected_when_enforced, plan.enforced)
        if not against.ok:
            head = f"step {step.name}: " if len(result.steps) > 1 else ""
            lines = mismatch_lines(against.iter_mismatches(), against.mismatch_count, {})
            parts.append(f"{head}enforcing the staged policies would not give what expect_when_enforced declares:\n{lines}")
    if not parts:
        return ""
    total = sum(1 for _ in parts)
    return (
        f"{result.scenario.name}: {total} step(s) would not be as declared once the staged policies are enforced\n\n"
        + "\n\n".join(parts)
    )


def _notes(step: StepResult) -> list[str]:
    if step.unsupported_policy:
        return [step.unsupported_policy]
    comparison = step.comparison
    return [comparison.observed[c].detail for c in comparison.unsupported[:20]]


def _expected_failure(result: ScenarioResult) -> tuple[Status, str, str]:
    """A pitfall scenario holds when every step's observations are exactly the
    documented ones: the documented cells wrong, every other cell right."""
    scenario = result.scenario
    assert scenario.xfail is not None
    why = scenario.xfail.reason
    if result.ok:
        return (
            Status.XPASSED,
            "the documented expected failure did not happen: every cell is as the intent says",
            f"{scenario.name}: expected to fail ({why}), but every probed cell is as the intent says. "
            "If the policies were fixed, remove xfail from the scenario.",
        )
    undocumented = []
    for step in result.steps:
        plan = step.plan
        if plan.documented is None:
            if not step.ok:
                undocumented.append((step.name, step.comparison))
            continue
        against = compare(plan.documented, step.observed)
        if not against.ok:
            undocumented.append((step.name, against))
    if not undocumented:
        return Status.XFAILED, why, f"{scenario.name}: expected failure, exactly as documented: {why}\n\n{result.render()}"
    total = sum(c.mismatch_count for _, c in undocumented)
    several = len(result.steps) > 1
    parts = [
        f"{scenario.name}: the expected failure is not the documented one: {total} cell(s) differ from what "
        "xfail documents (the policies' actual matrix). Any other difference than the documented cells, one "
        "more or one fewer, fails the scenario."
    ]
    for name, comparison in undocumented:
        head = f"step {name}: " if several else ""
        parts.append(head + mismatch_lines(comparison.iter_mismatches(), comparison.mismatch_count, {}))
    parts.append(result.render())
    return Status.FAILED, f"{total} cell(s) differ from the documented expected failure", "\n\n".join(parts)
