"""The pytest plugin: scenario files as test items, backend selection, fixtures,
reports.

Registered through the ``pytest11`` entry point, so installing netpol-harness is
enough. This module declares the options and hooks and registers two plugin
objects that own the run's state: :class:`~harness.plugin.session.NetpolPlugin`
(collection, the backend, running and judging scenarios) and
:class:`~harness.reporting.pytest_reports.ReportingPlugin` (reports, in the
process that reports: with pytest-xdist, the controller).
"""

from __future__ import annotations

import pytest

from harness.plugin import hookspecs
from harness.plugin.early_args import restart_if_misread
from harness.plugin.fixtures import netpol, netpol_backend
from harness.plugin.items import plugin_key
from harness.plugin.options import OPTION_GROUP, add_options, check_ini
from harness.plugin.session import NetpolPlugin, is_worker
from harness.reporting.pytest_reports import ReportingPlugin

__all__ = ["OPTION_GROUP", "netpol", "netpol_backend", "plugin_key"]


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    # The first hook after every plugin's options are known (see early_args).
    restart_if_misread(early_config, parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "netpol: a NetworkPolicy scenario collected by netpol-harness")
    check_ini(config)
    plugin = NetpolPlugin(config)
    config.stash[plugin_key] = plugin
    config.pluginmanager.register(plugin, "netpol-harness")
    config.pluginmanager.register(ReportingPlugin(config, reporting=not is_worker(config)), "netpol-harness-reports")
    if config.getoption("netpol_scenario") and config.args_source is not pytest.Config.ArgsSource.ARGS:
        # `pytest --scenario NAME` with no path: look in the scenario directories only.
        missing = [str(d) for d in plugin.scenario_dirs if not d.is_dir()]
        if missing:
            raise pytest.UsageError(
                f"--scenario: scenario directory {', '.join(missing)} does not exist; set netpol_scenarios "
                f"in {config.inipath or 'pytest.ini/pyproject.toml'} or pass the scenario files as arguments"
            )
        config.args = [str(d) for d in plugin.scenario_dirs]
