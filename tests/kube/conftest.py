"""Shared helpers for the tests of the kind/existing backends and the cluster recipes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from loopback_api import LoopbackApiServer

from harness.kube.calico import CalicoRecipe, load_recipes
from harness.kube.versions import PinnedVersions, load_versions

REPO = Path(__file__).resolve().parents[2]
CLUSTERS = REPO / "clusters"


@pytest.fixture(scope="session")
def versions() -> PinnedVersions:
    return load_versions(CLUSTERS)


@pytest.fixture(scope="session")
def recipes() -> dict[str, CalicoRecipe]:
    return load_recipes(CLUSTERS)


@pytest.fixture(scope="session")
def clusters() -> Path:
    return CLUSTERS


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture
def server() -> Iterator[LoopbackApiServer]:
    """A loopback HTTP server in the place of an API server; the test sets its answers."""
    api = LoopbackApiServer()
    yield api
    api.close()
