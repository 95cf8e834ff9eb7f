"""Fixtures: the backend of the run, and a policy test written in Python."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.api import PolicyTest
from harness.backends.base import Backend
from harness.plugin.items import plugin_key


@pytest.fixture(scope="session")
def netpol_backend(pytestconfig: pytest.Config) -> Backend:
    """The backend chosen with --backend, created once per run."""
    return pytestconfig.stash[plugin_key].manager.start().backend


@pytest.fixture
def netpol(pytestconfig: pytest.Config) -> Iterator[PolicyTest]:
    """Declare a topology, apply policies, probe and assert a matrix from Python.

    The backend is brought back to the deployed topology with no policy after the test."""
    plugin = pytestconfig.stash[plugin_key]
    pipeline = plugin.manager.start()
    test = PolicyTest(pipeline.backend, plugin.probe_settings, pipeline=pipeline)
    yield test
    test.reset()
