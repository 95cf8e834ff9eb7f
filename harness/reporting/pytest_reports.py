"""The reports of a pytest run, made from the scenario records the plugin hands
over (``pytest_netpol_record``): report files, the CI step summary, the
end-of-run table and the differences between CNI versions. In a pytest-xdist run
this lives in the controller, which receives every worker's records."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.core.errors import HarnessError
from harness.engine.variants import variant_changes
from harness.reporting.directory import ReportDirectory
from harness.reporting.markdown import STEP_SUMMARY_ENV, run_summary_markdown
from harness.reporting.records import RunSummary, ScenarioRecord
from harness.reporting.terminal import constraint_lines, render_summary


class ReportingPlugin:
    def __init__(self, config: pytest.Config, reporting: bool) -> None:
        """``reporting``: this process reports (not a pytest-xdist worker)."""
        self.config = config
        self.reporting = reporting
        self.records: list[ScenarioRecord] = []
        self.upgrades: list[tuple[str, str, float]] = []
        self.problems: list[str] = []
        report = config.getoption("netpol_report_dir", None)
        self.reports = ReportDirectory(Path(report)) if report and reporting else None
        if self.reports is not None:
            try:
                self.reports.prepare()
            except HarnessError as err:
                raise pytest.UsageError(f"--report-dir: {err}") from None

    @pytest.hookimpl
    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        return [f"netpol reports: {self.reports.path}"] if self.reports is not None else []

    @pytest.hookimpl
    def pytest_netpol_record(self, config: pytest.Config, record: ScenarioRecord) -> None:
        self.records.append(record)
        if self.reports is not None:
            try:
                self.reports.write_scenario(record)
            except HarnessError as err:
                self.problems.append(str(err))

    @pytest.hookimpl
    def pytest_netpol_upgrade(self, config: pytest.Config, before: str, after: str, seconds: float) -> None:
        self.upgrades.append((before, after, seconds))

    @pytest.hookimpl
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.reporting:
            return
        if self.reports is not None:
            try:
                self.reports.write_index(RunSummary(tuple(self.records)))
            except HarnessError as err:
                self.problems.append(str(err))
        step_summary = os.environ.get(STEP_SUMMARY_ENV)
        if step_summary and self.records:
            report_dir = str(self.reports.path) if self.reports is not None else ""
            try:
                with open(step_summary, "a", encoding="utf-8") as out:
                    out.write(run_summary_markdown(self.records, report_dir))
            except OSError as err:
                self.problems.append(f"cannot append to ${STEP_SUMMARY_ENV} ({step_summary}): {err.strerror or err}")

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
        if not self.reporting or config.get_verbosity() < -1:
            return
        self._variants(terminalreporter)
        if self.records:
            writer = config.get_terminal_writer()
            terminalreporter.write_sep("=", "netpol-harness summary")
            terminalreporter.write(render_summary(self.records, writer.fullwidth, writer.hasmarkup))
            for line, failing in constraint_lines(self.records):
                terminalreporter.write_line(line, red=failing, bold=failing)
            if self.reports is not None:
                terminalreporter.write_line(f"netpol report: {self.reports.index}")
            recorded = [r.baseline_recorded for r in self.records if r.baseline_recorded]
            if recorded:
                where = Path(recorded[0]).parent
                terminalreporter.write_line(f"netpol baseline: {len(recorded)} scenario(s) recorded in {where}")
        for problem in self.problems:
            terminalreporter.write_line(f"netpol report problem: {problem}", yellow=True)

    def _variants(self, terminalreporter: pytest.TerminalReporter) -> None:
        """What changed from one CNI version to the next, and how long upgrades took."""
        labels: list[str] = []
        for r in self.records:
            if r.variant and r.variant not in labels:
                labels.append(r.variant)
        if len(labels) < 2:
            return
        by_scenario: dict[str, dict[str, ScenarioRecord]] = {}
        for r in self.records:
            base = r.name.removesuffix(f"[{r.variant}]")
            by_scenario.setdefault(base, {})[r.variant] = r
        terminalreporter.section("netpol-harness: differences between CNI versions")
        for before, after, seconds in self.upgrades:
            terminalreporter.write_line(f"upgraded in place {before} → {after} in {seconds:.0f}s")
        compared = 0
        changes = []
        for name, records in sorted(by_scenario.items()):
            ran = [label for label in labels if label in records and records[label].ran]
            for before, after in zip(ran, ran[1:], strict=False):
                compared += 1
                changes += variant_changes(
                    name,
                    before,
                    [(s.name, s.comparison.observed) for s in records[before].steps],
                    after,
                    [(s.name, s.comparison.observed) for s in records[after].steps],
                )
        for change in changes:
            terminalreporter.write_line(change.line())
        verdict = f"{len(changes)} cell(s) differ" if changes else "no cell differs"
        terminalreporter.write_line(f"{verdict} across {compared} scenario/version pair(s) of {', '.join(labels)}")
