"""Hooks netpol-harness calls, for other plugins (and its own reports) to listen to."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from harness.reporting.records import ScenarioRecord


@pytest.hookspec
def pytest_netpol_record(config: pytest.Config, record: ScenarioRecord) -> None:
    """A scenario has been judged. Called once per scenario in the process that
    reports (with pytest-xdist, the controller: the record travels from the worker
    with the test report), with the record every report is made from."""


@pytest.hookspec
def pytest_netpol_upgrade(config: pytest.Config, before: str, after: str, seconds: float) -> None:
    """The CNI of a cluster was upgraded in place from variant ``before`` to ``after``."""
