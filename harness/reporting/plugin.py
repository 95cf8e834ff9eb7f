"""pytest hooks for baselines, report files, JUnit properties, the CI step summary
and the end-of-run table.

Options: ``--record-baseline DIR``, ``--baseline DIR``, ``--report-dir DIR``.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.core.errors import BaselineError, HarnessError
from harness.core.files import display_path
from harness.core.matrix import Outcome
from harness.engine.baseline import BaselineDiff, backend_label, baseline_failure, check_baseline, record_baseline
from harness.engine.pipeline import ScenarioResult
from harness.plugin import OPTION_GROUP, BrokenScenarioItem, ScenarioItem, ScenarioMismatch, result_key
from harness.reporting.directory import ReportDirectory
from harness.reporting.markdown import run_summary_markdown
from harness.reporting.records import RunSummary, ScenarioRecord, Status
from harness.reporting.terminal import render_summary

STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


@dataclass(frozen=True)
class BaselineOutcome:
    diff: BaselineDiff | None
    error: str = ""


@dataclass
class ReportState:
    """What this run collects for its reports (kept in ``config.stash``)."""

    record_dir: Path | None
    baseline_dir: Path | None
    reports: ReportDirectory | None
    records: list[ScenarioRecord] = field(default_factory=list)
    recorded: int = 0
    problems: list[str] = field(default_factory=list)
    summary: RunSummary | None = None


state_key = pytest.StashKey[ReportState]()
baseline_outcome_key = pytest.StashKey[BaselineOutcome]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup(*OPTION_GROUP)
    group.addoption(
        "--record-baseline",
        metavar="DIR",
        default=None,
        dest="netpol_record_baseline",
        help="write every scenario's observed matrices to DIR/<scenario>.json, with the backend, CNI and "
        "Kubernetes versions, the harness version, the date and the scenario file's hash.",
    )
    group.addoption(
        "--baseline",
        metavar="DIR",
        default=None,
        dest="netpol_baseline",
        help="compare every scenario's observed matrices with the baseline in DIR and fail the scenario on "
        "any changed cell (also when the baseline is missing or was recorded for another version of the "
        "scenario file or in another baseline format). May name the same DIR as --record-baseline to "
        "compare first and then record.",
    )
    group.addoption(
        "--report-dir",
        metavar="DIR",
        default=None,
        dest="netpol_report_dir",
        help="write DIR/<scenario>.json and DIR/<scenario>.md per scenario and DIR/index.html, a "
        "self-contained page with coloured matrices, the policies and the reproduce commands.",
    )


def pytest_configure(config: pytest.Config) -> None:
    record = config.getoption("netpol_record_baseline", None)
    compare = config.getoption("netpol_baseline", None)
    report = config.getoption("netpol_report_dir", None)
    baseline_dir = Path(compare) if compare else None
    if baseline_dir is not None and not baseline_dir.is_dir():
        raise pytest.UsageError(
            f"--baseline {compare}: no such directory; record baselines first with --record-baseline {compare}"
        )
    record_dir = Path(record) if record else None
    if record_dir is not None and record_dir.exists() and not record_dir.is_dir():
        raise pytest.UsageError(f"--record-baseline {record}: exists and is not a directory")
    reports = ReportDirectory(Path(report)) if report else None
    if reports is not None:
        try:
            reports.prepare()
        except HarnessError as err:
            raise pytest.UsageError(f"--report-dir: {err}") from None
    config.stash[state_key] = ReportState(record_dir, baseline_dir, reports)


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = config.stash.get(state_key, None)
    if state is None:
        return []
    lines = []
    if state.baseline_dir is not None:
        lines.append(f"netpol baseline: comparing with {state.baseline_dir}")
    if state.record_dir is not None:
        lines.append(f"netpol baseline: recording in {state.record_dir}")
    if state.reports is not None:
        lines.append(f"netpol reports: {state.reports.path}")
    return lines


# -- while a scenario runs ---------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    # The scenario item stores its result before it raises ScenarioMismatch, so the
    # result is there whether the intent held or not.
    try:
        outcome = yield
    except ScenarioMismatch as err:
        _after_scenario(item, str(err))
        raise
    _after_scenario(item, "")
    return outcome


def _after_scenario(item: pytest.Item, failure: str) -> None:
    """JUnit properties, baseline comparison and recording. Raises the baseline's
    verdict, with ``failure`` (the scenario's own report) first in the message."""
    result = item.stash.get(result_key, None)
    if result is None:
        return
    item.user_properties.extend(junit_properties(result))
    state = item.config.stash[state_key]
    error: HarnessError | None = None
    if state.baseline_dir is not None:
        try:
            diff = check_baseline(result, state.baseline_dir)
        except BaselineError as err:
            item.stash[baseline_outcome_key] = BaselineOutcome(None, str(err))
            item.user_properties.append(("netpol.baseline", "not compared"))
            error = BaselineError(f"{failure}\n\n{err}" if failure else str(err))
        else:
            item.stash[baseline_outcome_key] = BaselineOutcome(diff)
            item.user_properties.append(("netpol.baseline", diff.summary()))
            item.user_properties.append(("netpol.baseline.changed", diff.changed_cells))
            error = baseline_failure(diff, failure)
    if state.record_dir is not None:
        try:
            record_baseline(result, state.record_dir)
            state.recorded += 1
        except BaselineError as err:
            error = error or err
    if error is not None:
        raise error


def junit_properties(result: ScenarioResult) -> list[tuple[str, object]]:
    """The matrix in numbers, for JUnit XML ``<properties>`` and other report plugins."""
    observed = [s.observed for s in result.steps]
    props: list[tuple[str, object]] = [
        ("netpol.backend", backend_label(result.backend)),
        ("netpol.steps", len(result.steps)),
        ("netpol.probes", result.probes),
        ("netpol.mismatches", result.mismatches),
        ("netpol.allowed", sum(m.count(Outcome.ALLOWED) for m in observed)),
        ("netpol.blocked", sum(m.count(Outcome.BLOCKED) for m in observed)),
        ("netpol.unsupported", sum(len(s.comparison.unsupported) for s in result.steps)),
    ]
    for key in ("cni", "cni_version", "kubernetes_version"):
        if result.backend.get(key):
            props.append((f"netpol.{key}", result.backend[key]))
    return props


# -- after each scenario -----------------------------------------------------------------


def _is_scenario(item: pytest.Item) -> bool:
    return isinstance(item, ScenarioItem | BrokenScenarioItem)


def _status(report: pytest.TestReport) -> Status:
    expected_failure = hasattr(report, "wasxfail")
    if report.skipped:
        return Status.XFAILED if expected_failure else Status.SKIPPED
    if report.passed:
        return Status.XPASSED if expected_failure else Status.PASSED
    if report.when != "call":
        return Status.ERROR
    if report.longreprtext.startswith("[XPASS(strict)]"):
        return Status.XPASSED
    return Status.FAILED


def _record(item: pytest.Item, report: pytest.TestReport) -> ScenarioRecord:
    result = item.stash.get(result_key, None)
    baseline = item.stash.get(baseline_outcome_key, None)
    status = _status(report)
    return ScenarioRecord(
        name=item.name,
        path=str(display_path(item.path)),
        status=status,
        result=result,
        message=report.longreprtext if report.failed or status is Status.XFAILED else "",
        duration=result.duration if result is not None else report.duration,
        baseline=baseline.diff if baseline else None,
        baseline_error=baseline.error if baseline else "",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if _is_scenario(item) and (report.when == "call" or (report.when == "setup" and not report.passed)):
        state = item.config.stash[state_key]
        record = _record(item, report)
        state.records.append(record)
        if state.reports is not None:
            try:
                state.reports.write_scenario(item.nodeid, record)
            except HarnessError as err:
                state.problems.append(str(err))
    return report


# -- end of the run ----------------------------------------------------------------------


def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash.get(state_key, None)
    if state is None:
        return
    state.summary = RunSummary(tuple(state.records))
    if state.reports is not None:
        try:
            state.reports.write_index(state.summary)
        except HarnessError as err:
            state.problems.append(str(err))
    step_summary = os.environ.get(STEP_SUMMARY_ENV)
    if step_summary and state.records:
        report_dir = str(state.reports.path) if state.reports is not None else ""
        try:
            with open(step_summary, "a", encoding="utf-8") as out:
                out.write(run_summary_markdown(state.records, report_dir))
        except OSError as err:
            state.problems.append(f"cannot append to ${STEP_SUMMARY_ENV} ({step_summary}): {err.strerror or err}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    state = config.stash.get(state_key, None)
    if state is None or config.get_verbosity() < -1:
        return
    if state.records:
        writer = config.get_terminal_writer()
        terminalreporter.write_sep("=", "netpol-harness summary")
        terminalreporter.write(render_summary(state.records, writer.fullwidth, writer.hasmarkup))
        if state.reports is not None:
            terminalreporter.write_line(f"netpol report: {state.reports.index}")
        if state.record_dir is not None:
            terminalreporter.write_line(f"netpol baseline: {state.recorded} scenario(s) recorded in {state.record_dir}")
    for problem in state.problems:
        terminalreporter.write_line(f"netpol report problem: {problem}", yellow=True)
