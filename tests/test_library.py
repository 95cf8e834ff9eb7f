"""The shipped scenario library holds on every backend that can run here.

Each scenario runs through the same runner the plugin uses; a scenario marked
``xfail`` documents a pitfall and must fail (its intent differs from its policy).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.backends.base import Backend, Options
from harness.backends.model import ModelBackend
from harness.engine.pipeline import ScenarioRunner
from harness.engine.probing import ProbeSettings
from harness.scenario import Scenario, load_scenario

LIBRARY = Path(__file__).resolve().parent.parent / "scenarios"
FILES = sorted(LIBRARY.glob("*.yaml"))


def _check(backend: Backend, scenario: Scenario) -> None:
    result = ScenarioRunner(backend, ProbeSettings(timeout=1.0, deadline=3.0)).run(scenario)
    backend.reset()
    if scenario.xfail:
        assert not result.ok, f"{scenario.name} is marked xfail but its intent holds: {scenario.xfail}"
    else:
        assert result.ok, result.render()


def test_library_is_large_enough_and_documented() -> None:
    assert len(FILES) >= 40
    table = (LIBRARY / "README.md").read_text()
    for path in FILES:
        assert f"| {load_scenario(path).name} |" in table, f"{path.name} is missing from scenarios/README.md"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_scenario_on_model(path: Path) -> None:
    with ModelBackend() as backend:
        _check(backend, load_scenario(path))


@pytest.fixture(scope="module")
def emulated() -> Iterator[Backend]:
    from harness.backends.emulated import create
    from harness.core.errors import BackendUnavailable

    try:
        backend = create(Options(probe_timeout=1.0))
    except BackendUnavailable as err:
        pytest.skip(f"emulated backend unavailable here: {err}")
    with backend:
        yield backend


@pytest.mark.emulated
@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_scenario_on_emulated(emulated: Backend, path: Path) -> None:
    _check(emulated, load_scenario(path))
