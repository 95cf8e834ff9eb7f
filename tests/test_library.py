"""The shipped scenario library holds on every backend that can run here.

Each scenario runs through the same pipeline and verdict the plugin uses; a
scenario marked ``xfail`` documents a pitfall and must fail exactly as documented
(its intent differs from its policy in the cells it names, and nowhere else).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.backends.base import Options
from harness.backends.model import ModelBackend
from harness.engine.pipeline import Pipeline
from harness.engine.probing import ProbeSettings
from harness.engine.verdict import Status, judge
from harness.scenario import Scenario, load_scenario

LIBRARY = Path(__file__).resolve().parent.parent / "scenarios"
FILES = sorted(LIBRARY.glob("*.yaml"))


def _check(pipeline: Pipeline, scenario: Scenario) -> None:
    verdict = judge(pipeline.run_scenario(scenario))
    expected = Status.XFAILED if scenario.xfail else Status.PASSED
    assert verdict.status is expected, verdict.message


def test_library_is_large_enough_and_documented() -> None:
    assert len(FILES) >= 40
    table = (LIBRARY / "README.md").read_text()
    for path in FILES:
        assert f"| {load_scenario(path).name} |" in table, f"{path.name} is missing from scenarios/README.md"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_scenario_on_model(path: Path) -> None:
    with ModelBackend() as backend:
        _check(Pipeline(backend), load_scenario(path))


@pytest.fixture(scope="module")
def emulated() -> Iterator[Pipeline]:
    from harness.backends.emulated import create
    from harness.core.errors import BackendUnavailable

    try:
        backend = create(Options(probe_timeout=1.0))
    except BackendUnavailable as err:
        pytest.skip(f"emulated backend unavailable here: {err}")
    with backend:
        yield Pipeline(backend, ProbeSettings(timeout=1.0, deadline=3.0))


@pytest.mark.emulated
@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_scenario_on_emulated(emulated: Pipeline, path: Path) -> None:
    _check(emulated, load_scenario(path))
