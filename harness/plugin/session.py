"""The plugin object of a pytest run: collection of scenario files, the backend,
running each scenario through the pipeline, judging it once, and handing its
record to the reports (across pytest-xdist workers too)."""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import sys
from collections.abc import Generator
from pathlib import Path

import pytest

from harness import __version__
from harness.backends import unavailable_message
from harness.core.errors import BackendUnavailable, BaselineError, HarnessError, RevisionError, ScenarioError
from harness.core.files import display_path
from harness.core.progress import Progress
from harness.engine.baseline import check_baseline, record_baseline
from harness.engine.change import confirm, scenario_change
from harness.engine.constraint_results import ScenarioConstraints, applied_nowhere
from harness.engine.constraints import check_scenario
from harness.engine.probing import ProbeSettings
from harness.engine.verdict import JudgeSettings, Status, Verdict, judge
from harness.plugin.items import BrokenScenarioItem, ScenarioFailure, ScenarioFile, ScenarioItem, scenario_name
from harness.plugin.manager import BackendManager
from harness.plugin.options import constraints_file, scenario_dirs
from harness.reporting.junit import junit_properties
from harness.reporting.records import ScenarioRecord
from harness.scenario.constraints import ConstraintSet, load_constraints
from harness.scenario.files import SCENARIO_NAME_SUFFIXES, SCENARIO_SUFFIXES, looks_like_scenario
from harness.scenario.sources import GitRevision
from harness.scenario.update import update_expectations

log = logging.getLogger("harness")

#: The record of a scenario item, set while it runs.
record_key = pytest.StashKey[ScenarioRecord]()
#: The attribute of a test report that carries the scenario's record (as JSON):
#: it survives pytest-xdist's report serialisation, as every report attribute does.
REPORT_ATTRIBUTE = "netpol_record"


def is_worker(config: pytest.Config) -> bool:
    """A pytest-xdist worker: it runs scenarios; the controller reports them."""
    return hasattr(config, "workerinput")


def progress_of(config: pytest.Config, always: bool = False) -> Progress:
    """Progress messages go to the log, and to the terminal with -v (or always, for
    the long steps of starting a backend)."""
    show = always or config.getoption("verbose") > 0

    def progress(message: str) -> None:
        log.info(message)
        # Looked up when used: this is made in pytest_configure, before the terminal
        # reporter is registered.
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        capture = config.pluginmanager.get_plugin("capturemanager")
        if not show or reporter is None:
            return
        # Said now, on the terminal, whatever pytest captures at this moment (a
        # teardown that holds Ctrl-C says so while the user waits).
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            reporter.write_line(f"netpol: {message}")
            reporter.flush()

    return progress


class NetpolPlugin:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.probe_settings = ProbeSettings(
            timeout=config.getoption("probe_timeout"), deadline=config.getoption("probe_deadline")
        )
        self.judge_settings = JudgeSettings(strict_unsupported=bool(config.getoption("netpol_strict_unsupported")))
        self.manager = BackendManager(config, self.probe_settings, progress_of(config), progress_of(config, always=True))
        #: What the backend had to say once closed (networks it kept), shown last.
        self.closing_notes: list[str] = []
        self.scenario_dirs = scenario_dirs(config)
        self.explicit = [Path(a.split("::")[0]).resolve() for a in config.args if not a.startswith("-")]
        self.record_dir, self.baseline_dir = self._baseline_dirs()
        self.base = self._base_revision()
        self.constraints = self._constraints()
        #: The constraint results of every scenario reported (in the process that reports).
        self.constraint_checks: list[ScenarioConstraints] = []
        #: Records made in this process and not yet reported, by node id: a report
        #: made here is read from these; one from a pytest-xdist worker, from its JSON.
        self.unreported: dict[str, ScenarioRecord] = {}
        self.fail_on_opened = bool(config.getoption("netpol_fail_on_opened"))
        if self.fail_on_opened and self.base is None:
            raise pytest.UsageError("--fail-on-opened: give the revision to compare with, --netpol-base REF")
        if len(self.manager.variants) > 1 and config.getoption("numprocesses", None):
            raise pytest.UsageError(
                "several --calico-version values run one cluster at a time, in order: run them without -n (pytest-xdist)"
            )

    def _baseline_dirs(self) -> tuple[Path | None, Path | None]:
        record = self.config.getoption("netpol_record_baseline", None)
        compare = self.config.getoption("netpol_baseline", None)
        baseline_dir = Path(compare) if compare else None
        if baseline_dir is not None and not baseline_dir.is_dir():
            raise pytest.UsageError(
                f"--baseline {compare}: no such directory; record baselines first with --record-baseline {compare}"
            )
        record_dir = Path(record) if record else None
        if record_dir is not None and record_dir.exists() and not record_dir.is_dir():
            raise pytest.UsageError(f"--record-baseline {record}: exists and is not a directory")
        return record_dir, baseline_dir

    def _constraints(self) -> ConstraintSet | None:
        found = constraints_file(self.config)
        if found is None:
            return None
        path, where = found
        try:
            return load_constraints(path, str(display_path(path)))
        except HarnessError as err:
            raise pytest.UsageError(f"{where}: {err}") from None

    def _base_revision(self) -> GitRevision | None:
        ref = self.config.getoption("netpol_base", None)
        if ref is None:
            return None
        try:
            return GitRevision(ref, Path(self.config.invocation_params.dir))
        except RevisionError as err:
            raise pytest.UsageError(f"--netpol-base {ref}: {err}") from None

    # -- collection -------------------------------------------------------------------

    def is_scenario_file(self, path: Path) -> bool:
        """A YAML file given on the command line, named ``*.scenario.yaml``, or found
        (at any depth) in a scenario directory or a directory given on the command
        line, and shaped like a scenario (not a policy manifest beside it)."""
        if path.suffix not in SCENARIO_SUFFIXES:
            return False
        resolved = path.resolve()
        if resolved in self.explicit or path.name.endswith(SCENARIO_NAME_SUFFIXES):
            return True
        roots = [*self.scenario_dirs, *(d for d in self.explicit if d.is_dir())]
        return any(resolved.is_relative_to(d) for d in roots) and looks_like_scenario(path)

    @pytest.hookimpl
    def pytest_collect_file(self, file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
        if self.is_scenario_file(file_path):
            return ScenarioFile.from_parent(parent, path=file_path)
        return None

    @pytest.hookimpl
    def pytest_collection_modifyitems(self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
        _flag_duplicate_names(items)
        order = {v: i for i, v in enumerate(self.manager.variants)}
        # All scenarios of one backend variant before the next: one cluster at a time.
        items.sort(key=lambda item: order.get(item.variant, 0) if isinstance(item, ScenarioItem) else 0)
        patterns: list[str] = config.getoption("netpol_scenario")
        if not patterns:
            return
        known = [n for n in map(scenario_name, items) if n is not None]
        unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in known)]
        if unmatched:
            listing = ", ".join(sorted(known)) or "none"
            raise pytest.UsageError(
                f"--scenario {', '.join(unmatched)}: no scenario of that name was collected. Known scenarios: {listing}"
            )
        keep, drop = [], []
        for item in items:
            name = scenario_name(item)
            if name is None or any(fnmatch.fnmatchcase(name, p) for p in patterns):
                keep.append(item)
            else:
                drop.append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep

    @pytest.hookimpl
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Start the backend before the first scenario, so that a missing tool stops the
        run at once with one message instead of failing every scenario."""
        if session.config.option.collectonly:
            return
        first = next((item for item in session.items if isinstance(item, ScenarioItem)), None)
        if first is None:
            return
        try:
            self.manager.get(first.variant)
        except BackendUnavailable as err:
            raise pytest.UsageError(unavailable_message(self.manager.name, err)) from None
        except HarnessError as err:
            raise pytest.UsageError(f"backend {self.manager.name} could not start: {err}") from None

    # -- running ------------------------------------------------------------------------

    def run_item(self, item: ScenarioItem) -> None:
        """Run, judge, record; then end the test as the verdict says."""
        pipeline = self.manager.start(item.variant)
        try:
            result = pipeline.run_scenario(item.scenario, item.variant.label)
        except HarnessError as err:
            # The backend failed under the scenario: no verdict on what was not observed
            # (the constraints are still checked by the model, for the reports).
            message = f"{item.scenario.name}: the {self.manager.name} backend failed: {err}"
            verdict = Verdict(Status.ERROR, str(err).splitlines()[0] if str(err) else type(err).__name__, message)
            checks = check_scenario(self.constraints, item.scenario) if self.constraints is not None else None
            item.stash[record_key] = _error_record(item, verdict, checks)
            raise ScenarioFailure(message) from None
        if self.config.getoption("netpol_update_expectations", False):
            update = update_expectations(item.scenario, {step.name: step.comparison.observed for step in result.steps})
            progress_of(self.config, always=True)(update.summary())
        baseline = check_baseline(result, self.baseline_dir) if self.baseline_dir is not None else None
        problems = []
        recorded = ""
        if self.record_dir is not None:
            try:
                recorded = str(record_baseline(result, self.record_dir))
            except BaselineError as err:
                problems.append(str(err))
        change = None
        if self.base is not None:
            change = scenario_change(item.path, self.base, item.scenario, self.base.revision)
            if pipeline.backend.name != "model":
                change = confirm(change, result)
            if self.fail_on_opened and change.undeclared:
                problems.append(change.gate_message())
        checks = check_scenario(self.constraints, item.scenario, result) if self.constraints is not None else None
        verdict = judge(result, baseline, self.judge_settings, problems, checks)
        record = ScenarioRecord.of(item.nodeid, result, verdict, baseline, recorded, change, checks)
        item.stash[record_key] = record
        item.user_properties.extend(junit_properties(record))
        if verdict.status is Status.XFAILED:
            pytest.xfail(verdict.reason)
        if verdict.status is Status.SKIPPED:
            pytest.skip(verdict.reason)
        if verdict.failing:
            raise ScenarioFailure(verdict.message or verdict.reason)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if not isinstance(item, ScenarioItem | BrokenScenarioItem):
            return report
        # One record per scenario: from its call, or from its setup when that failed
        # (then there is no call).
        if not (report.when == "call" or (report.when == "setup" and report.failed)):
            return report
        record = item.stash.get(record_key, None)
        if isinstance(item, BrokenScenarioItem):
            text = f"invalid scenario: {item.error}"
            record = _error_record(item, Verdict(Status.ERROR, text, text))
        elif record is None and report.failed and call.excinfo is not None:
            # Not the harness's own error: keep what happened for the reports.
            text = str(call.excinfo.getrepr(style="short"))
            record = _error_record(item, Verdict(Status.ERROR, call.excinfo.exconly().splitlines()[0], text))
        if record is not None:
            # The JSON travels with the report (to the pytest-xdist controller, or any
            # plugin that serializes reports); in this process the record itself is kept.
            setattr(report, REPORT_ATTRIBUTE, record.to_json())
            if not is_worker(self.config):
                self.unreported[report.nodeid] = record
        return report

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = getattr(report, REPORT_ATTRIBUTE, None)
        if data is None or is_worker(self.config):
            return
        record = self.unreported.pop(report.nodeid, None) or ScenarioRecord.from_json(data)
        if record.constraints is not None:
            self.constraint_checks.append(record.constraints)
        self.config.hook.pytest_netpol_record(config=self.config, record=record)

    # -- the end of the run -------------------------------------------------------------

    @pytest.hookimpl
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Remove what the backend created while the run can still report a failure;
        fail the run when a constraint applies to no step of any scenario (the
        reports say which)."""
        if self.constraint_checks and applied_nowhere(self.constraint_checks) and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        try:
            self.closing_notes.extend(self.manager.close())
        except HarnessError as err:
            if reporter is not None:
                reporter.write_line(f"netpol-harness: cleanup failed: {err}", red=True)
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
        for note in self.closing_notes:
            terminalreporter.write_line(f"netpol-harness: {note}", yellow=True)

    @pytest.hookimpl
    def pytest_unconfigure(self, config: pytest.Config) -> None:
        # After an interrupted session; a no-op when sessionfinish closed the backend.
        try:
            for note in self.manager.close():
                sys.stderr.write(f"netpol-harness: {note}\n")
        except HarnessError as err:
            sys.stderr.write(f"netpol-harness: cleanup failed: {err}\n")

    @pytest.hookimpl
    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        dirs = ", ".join(str(display_path(d)) for d in self.scenario_dirs)
        lines = [f"netpol-harness {__version__}: backend {self.manager.name}, scenarios in {dirs}"]
        if self.baseline_dir is not None:
            lines.append(f"netpol baseline: comparing with {self.baseline_dir}")
        if self.record_dir is not None:
            lines.append(f"netpol baseline: recording in {self.record_dir}")
        if self.constraints is not None:
            lines.append(f"netpol constraints: {self.constraints.source} ({len(self.constraints)} constraint(s))")
        return lines


def _error_record(item: pytest.Item, verdict: Verdict, constraints: ScenarioConstraints | None = None) -> ScenarioRecord:
    name = item.scenario.name if isinstance(item, ScenarioItem) else item.name
    if isinstance(item, ScenarioItem) and item.variant.label:
        name = f"{name}[{item.variant.label}]"
    description = item.scenario.description if isinstance(item, ScenarioItem) else ""
    return ScenarioRecord(
        nodeid=item.nodeid,
        name=name,
        path=str(display_path(item.path)),
        status=verdict.status,
        reason=verdict.reason,
        message=verdict.message,
        description=description,
        constraints=constraints,
    )


def _flag_duplicate_names(items: list[pytest.Item]) -> None:
    first: dict[tuple[str, object], ScenarioItem] = {}
    for i, item in enumerate(items):
        if not isinstance(item, ScenarioItem):
            continue
        other = first.get((item.scenario.name, item.variant))
        if other is None:
            first[(item.scenario.name, item.variant)] = item
            continue
        error = ScenarioError(
            str(display_path(item.path)),
            "name",
            f"scenario name {item.scenario.name!r} is also used by {display_path(other.path)}",
            "a name unique across the scenario directories",
        )
        items[i] = BrokenScenarioItem.from_parent(item.parent, name=item.name, error=error)  # type: ignore[arg-type]
