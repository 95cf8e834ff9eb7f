"""Repository-wide test configuration.

The plugin itself is registered through its ``pytest11`` entry point (installed by
``pip install -e .``); ``pytester`` is enabled in pyproject.toml for the plugin's
own tests. This file adds one guard over the whole test run: the emulated backend
must leave no network namespace of this process behind.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NETNS_DIR = Path("/run/netns")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    prefix = f"nph-{os.getpid()}-"
    left = sorted(p.name for p in NETNS_DIR.glob(f"{prefix}*")) if NETNS_DIR.is_dir() else []
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"network namespaces left behind by this test run: {', '.join(left)}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
