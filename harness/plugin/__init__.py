"""The pytest plugin: scenario files as test items, backend selection, fixtures.

Registered through the ``pytest11`` entry point, so installing netpol-harness is
enough. Plugin state lives in ``config.stash``.
"""

from __future__ import annotations

import fnmatch
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from harness import __version__
from harness.api import PolicyTest
from harness.backends import BACKENDS, DEFAULT_BACKEND, available_backend_modules, backend_module
from harness.backends.base import Backend
from harness.backends.variants import DEFAULT_VARIANT, BackendVariant, VariantOptions, calico_variants, variant_changes
from harness.core.errors import BackendUnavailable, HarnessError, ScenarioError
from harness.core.files import display_path
from harness.engine.pipeline import ScenarioResult, ScenarioRunner
from harness.engine.probing import ProbeSettings
from harness.scenario import Scenario, load_scenario

log = logging.getLogger("harness")

# Baselines, report files and the end-of-run summary.
pytest_plugins = ["harness.reporting.plugin"]

#: pytest's option group for every netpol-harness option (``--help``).
OPTION_GROUP = ("netpol", "NetworkPolicy scenarios (netpol-harness)")

SCENARIO_SUFFIXES = (".yaml", ".yml")


class ScenarioMismatch(Exception):
    """Observed reachability differs from a scenario's intent."""

    def __init__(self, result: ScenarioResult) -> None:
        self.result = result
        super().__init__(result.render())


class BackendManager:
    """Creates the selected backend on first use and closes it at the end of the run.

    With several backend variants (one per ``--calico-version``), one variant is live
    at a time: items are ordered by variant, and moving to the next one either
    upgrades the cluster in place (``--calico-upgrade``) or replaces it."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.name: str = config.getoption("netpol_backend") or config.getini("netpol_backend") or DEFAULT_BACKEND
        self.upgrade = bool(config.getoption("calico_upgrade", False))
        if self.name == "kind":
            kind = backend_module("kind")
            self.variants = calico_variants(config.getoption("calico_version", None), kind.cluster_name(config), not self.upgrade)
        else:
            self.variants = [DEFAULT_VARIANT]
        self.upgrades: list[tuple[str, str, float]] = []
        self._backend: Backend | None = None
        self._variant: BackendVariant | None = None
        self._sigterm_caught = False
        self._previous_sigterm: Any = signal.SIG_DFL

    def get(self, variant: BackendVariant = DEFAULT_VARIANT) -> Backend:
        progress = _progress(self.config, always=True)
        if self._backend is not None and self._variant != variant:
            upgrade = getattr(self._backend, "upgrade_calico", None)
            if self.upgrade and upgrade is not None and self._variant is not None:
                version = variant.options["calico_version"][0]
                progress(f"upgrading Calico in place: {self._variant.label} → {variant.label}")
                started = time.monotonic()
                upgrade(version)
                self.upgrades.append((self._variant.label, variant.label, time.monotonic() - started))
                self._variant = variant
                return self._backend
            self.close()
        if self._backend is None:
            options = self.config if variant == DEFAULT_VARIANT else VariantOptions(self.config, variant)
            self._catch_sigterm()
            # Cluster creation and CNI installation take minutes: always show progress.
            self._backend = backend_module(self.name).create(options, progress=progress)
            self._variant = variant
        return self._backend

    def start(self, variant: BackendVariant = DEFAULT_VARIANT) -> Backend:
        """:meth:`get`, ending the run with one message when the backend cannot start."""
        try:
            return self.get(variant)
        except BackendUnavailable as err:
            pytest.exit(f"backend {self.name} is not available: {err}", returncode=pytest.ExitCode.USAGE_ERROR)
        except HarnessError as err:
            pytest.exit(f"backend {self.name} could not start: {err}", returncode=pytest.ExitCode.TESTS_FAILED)

    def _catch_sigterm(self) -> None:
        """While a backend lives, SIGTERM (a CI job cancelled) unwinds like Ctrl-C, so
        that what the backend created is removed."""
        if not self._sigterm_caught and hasattr(signal, "SIGTERM"):
            self._previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)
            self._sigterm_caught = True

    def close(self) -> None:
        backend, self._backend = self._backend, None
        try:
            if backend is not None:
                backend.close()
        finally:
            if self._sigterm_caught:
                # None: a handler installed outside Python, which cannot be put back.
                signal.signal(signal.SIGTERM, self._previous_sigterm if self._previous_sigterm is not None else signal.SIG_DFL)
                self._sigterm_caught = False


manager_key = pytest.StashKey[BackendManager]()
#: (scenario name, variant label, result) of every scenario run, for cross-variant diffs.
variant_results_key = pytest.StashKey[list[tuple[str, str, ScenarioResult]]]()
result_key = pytest.StashKey[ScenarioResult]()
scenario_dirs_key = pytest.StashKey[list[Path]]()
probe_settings_key = pytest.StashKey[ProbeSettings]()


# -- options ---------------------------------------------------------------------------


def _positive_seconds(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (e.g. 1 or 0.5)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 seconds")
    return value


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup(*OPTION_GROUP)
    group.addoption(
        "--scenario",
        action="append",
        default=[],
        metavar="NAME",
        dest="netpol_scenario",
        help="run only scenarios whose name matches NAME, a glob pattern such as 'default-deny*'. "
        "May be given several times. Without a path argument, scenarios are collected from "
        "the netpol_scenarios directories.",
    )
    group.addoption(
        "--backend",
        choices=sorted(BACKENDS),
        default=None,
        dest="netpol_backend",
        help="where scenarios run: kind (a new kind cluster with Calico), existing (the cluster "
        "of the current kubeconfig), emulated (network namespaces and nftables on this host, "
        "as root), model (the reference model, no network). Default: the netpol_backend ini "
        f"value, else {DEFAULT_BACKEND}.",
    )
    group.addoption(
        "--probe-timeout",
        type=_positive_seconds,
        default=1.0,
        metavar="SECONDS",
        dest="probe_timeout",
        help="how long one probe waits for a connection or reply; a blocked probe takes this long. Default: 1.",
    )
    group.addoption(
        "--probe-deadline",
        type=_positive_seconds,
        default=10.0,
        metavar="SECONDS",
        dest="probe_deadline",
        help="on kind and existing clusters, how long cells that differ from the expectation are "
        "re-probed after a change while the CNI programs it; then the whole matrix is probed once "
        "more. The emulated and model backends answer at once. Default: 10.",
    )
    parser.addini(
        "netpol_scenarios",
        type="paths",
        default=["scenarios"],
        help="directories holding scenario files (*.yaml directly inside; subdirectories are "
        "for policy manifests). Default: scenarios.",
    )
    parser.addini("netpol_backend", default="", help="default backend when --backend is not given.")
    for module in available_backend_modules():
        add = getattr(module, "add_options", None)
        if add is not None:
            add(group)


# -- configuration and lifecycle --------------------------------------------------------


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "netpol: a NetworkPolicy scenario collected by netpol-harness")
    backend_ini = config.getini("netpol_backend")
    if backend_ini and backend_ini not in BACKENDS:
        raise pytest.UsageError(
            f"{config.inipath or 'ini file'}: netpol_backend = {backend_ini!r} is not a backend; "
            f"use one of {', '.join(sorted(BACKENDS))}"
        )
    config.stash[manager_key] = BackendManager(config)
    config.stash[variant_results_key] = []
    config.stash[probe_settings_key] = ProbeSettings(
        timeout=config.getoption("probe_timeout"), deadline=config.getoption("probe_deadline")
    )
    dirs = [Path(p) for p in config.getini("netpol_scenarios")]
    config.stash[scenario_dirs_key] = [d.resolve() for d in dirs]
    if config.getoption("netpol_scenario") and config.args_source is not pytest.Config.ArgsSource.ARGS:
        # `pytest --scenario NAME` with no path: look in the scenario directories only.
        missing = [str(d) for d in dirs if not d.is_dir()]
        if missing:
            raise pytest.UsageError(
                f"--scenario: scenario directory {', '.join(missing)} does not exist; set netpol_scenarios "
                f"in {config.inipath or 'pytest.ini/pyproject.toml'} or pass the scenario files as arguments"
            )
        config.args = [str(d) for d in dirs]


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Remove what the backend created while the run can still report a failure."""
    manager = session.config.stash.get(manager_key, None)
    if manager is None:
        return
    try:
        manager.close()
    except HarnessError as err:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"netpol-harness: cleanup failed: {err}", red=True)
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    # After an interrupted session; a no-op when sessionfinish closed the backend.
    manager = config.stash.get(manager_key, None)
    if manager is not None:
        try:
            manager.close()
        except HarnessError as err:
            sys.stderr.write(f"netpol-harness: cleanup failed: {err}\n")


def pytest_report_header(config: pytest.Config) -> str:
    manager = config.stash[manager_key]
    dirs = ", ".join(str(d) for d in config.stash[scenario_dirs_key])
    return f"netpol-harness {__version__}: backend {manager.name}, scenarios in {dirs}"


# -- collection -------------------------------------------------------------------------


def _is_scenario_file(path: Path, config: pytest.Config) -> bool:
    if path.suffix not in SCENARIO_SUFFIXES:
        return False
    if path.name.endswith((".scenario.yaml", ".scenario.yml")):
        return True
    return path.parent.resolve() in config.stash[scenario_dirs_key]


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if _is_scenario_file(file_path, parent.config):
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


class ScenarioFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        try:
            scenario = load_scenario(display_path(self.path))
        except ScenarioError as err:
            # Reported against this file; the other scenarios still run.
            yield BrokenScenarioItem.from_parent(self, name=self.path.stem, error=err)
            return
        for variant in self.config.stash[manager_key].variants:
            name = f"{scenario.name}[{variant.label}]" if variant.label else scenario.name
            item = ScenarioItem.from_parent(self, name=name, scenario=scenario, variant=variant)
            item.add_marker(pytest.mark.netpol)
            for tag in scenario.tags:
                item.extra_keyword_matches.add(tag)
            if scenario.xfail:
                item.add_marker(pytest.mark.xfail(reason=scenario.xfail, strict=True, raises=ScenarioMismatch))
            yield item


class ScenarioItem(pytest.Item):
    def __init__(self, *, scenario: Scenario, variant: BackendVariant = DEFAULT_VARIANT, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scenario = scenario
        self.variant = variant

    def runtest(self) -> None:
        backend = self.config.stash[manager_key].start(self.variant)
        runner = ScenarioRunner(backend, self.config.stash[probe_settings_key], _progress(self.config))
        try:
            result = runner.run(self.scenario)
        finally:
            backend.reset()
        result = replace(result, variant=self.variant.label)
        self.stash[result_key] = result
        self.config.stash[variant_results_key].append((self.scenario.name, self.variant.label, result))
        if not result.ok:
            raise ScenarioMismatch(result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ScenarioMismatch | HarnessError):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo, style))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"scenario {self.scenario.name}: {self.scenario.description}"


class BrokenScenarioItem(pytest.Item):
    """A scenario file that could not be loaded: fails with the loader's message."""

    def __init__(self, *, error: ScenarioError, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.error = error

    def runtest(self) -> None:
        raise self.error

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        return f"invalid scenario: {self.error}"

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"invalid scenario {self.path.name}"


def _item_scenario_name(item: pytest.Item) -> str | None:
    if isinstance(item, ScenarioItem):
        return item.scenario.name
    if isinstance(item, BrokenScenarioItem):
        return item.name
    return None


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    _flag_duplicate_names(items)
    _order_by_variant(config, items)
    patterns: list[str] = config.getoption("netpol_scenario")
    if not patterns:
        return
    known = [n for n in map(_item_scenario_name, items) if n is not None]
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in known)]
    if unmatched:
        listing = ", ".join(sorted(known)) or "none"
        raise pytest.UsageError(
            f"--scenario {', '.join(unmatched)}: no scenario of that name was collected. Known scenarios: {listing}"
        )
    keep, drop = [], []
    for item in items:
        name = _item_scenario_name(item)
        if name is None or any(fnmatch.fnmatchcase(name, p) for p in patterns):
            keep.append(item)
        else:
            drop.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _order_by_variant(config: pytest.Config, items: list[pytest.Item]) -> None:
    """All scenarios of one backend variant before the next: one cluster at a time."""
    order = {v: i for i, v in enumerate(config.stash[manager_key].variants)}
    items.sort(key=lambda item: order.get(item.variant, 0) if isinstance(item, ScenarioItem) else 0)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the backend before the first scenario, so that a missing tool stops the
    run at once with one message instead of failing every scenario."""
    if session.config.option.collectonly:
        return
    first = next((item for item in session.items if isinstance(item, ScenarioItem)), None)
    if first is None:
        return
    manager = session.config.stash[manager_key]
    try:
        manager.get(first.variant)
    except BackendUnavailable as err:
        raise pytest.UsageError(f"backend {manager.name} is not available: {err}") from None
    except HarnessError as err:
        raise pytest.UsageError(f"backend {manager.name} could not start: {err}") from None


def _flag_duplicate_names(items: list[pytest.Item]) -> None:
    first: dict[tuple[str, BackendVariant], ScenarioItem] = {}
    for i, item in enumerate(items):
        if not isinstance(item, ScenarioItem):
            continue
        other = first.get((item.scenario.name, item.variant))
        if other is None:
            first[(item.scenario.name, item.variant)] = item
            continue
        error = ScenarioError(
            str(item.path),
            "name",
            f"scenario name {item.scenario.name!r} is also used by {other.path}",
            "a name unique across the scenario directories",
        )
        items[i] = BrokenScenarioItem.from_parent(item.parent, name=item.name, error=error)  # type: ignore[arg-type]


def _progress(config: pytest.Config, always: bool = False) -> Callable[[str], None]:
    """Progress messages go to the log, and to the terminal with -v (or always, for
    the long steps of starting a backend)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    show = always or config.getoption("verbose") > 0

    def progress(message: str) -> None:
        log.info(message)
        if show and reporter is not None:
            reporter.write_line(f"netpol: {message}")

    return progress


# -- several backend variants ----------------------------------------------------------


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """What changed from one CNI version to the next, and how long upgrades took."""
    manager = config.stash.get(manager_key, None)
    if manager is None or len(manager.variants) < 2:
        return
    by_scenario: dict[str, dict[str, ScenarioResult]] = {}
    for name, label, result in config.stash[variant_results_key]:
        by_scenario.setdefault(name, {})[label] = result
    labels = [v.label for v in manager.variants]
    terminalreporter.section("netpol-harness: differences between CNI versions")
    for before, after, seconds in manager.upgrades:
        terminalreporter.write_line(f"upgraded in place {before} → {after} in {seconds:.0f}s")
    compared = 0
    changes = []
    for name, results in by_scenario.items():
        ran = [label for label in labels if label in results]
        for before, after in zip(ran, ran[1:], strict=False):
            compared += 1
            changes += variant_changes(
                name,
                before,
                [(s.name, s.observed.cells) for s in results[before].steps],
                after,
                [(s.name, s.observed.cells) for s in results[after].steps],
            )
    for change in changes:
        terminalreporter.write_line(change.line())
    verdict = f"{len(changes)} cell(s) differ" if changes else "no cell differs"
    terminalreporter.write_line(f"{verdict} across {compared} scenario/version pair(s) of {', '.join(labels)}")


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def netpol_backend(pytestconfig: pytest.Config) -> Backend:
    """The backend chosen with --backend, created once per run."""
    return pytestconfig.stash[manager_key].start()


@pytest.fixture
def netpol(netpol_backend: Backend, pytestconfig: pytest.Config) -> Iterator[PolicyTest]:
    """Declare a topology, apply policies, probe and assert a matrix from Python.

    The backend is reset (policies removed, labels restored) after the test."""
    test = PolicyTest(netpol_backend, pytestconfig.stash[probe_settings_key])
    yield test
    netpol_backend.reset()
