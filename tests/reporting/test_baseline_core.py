"""harness.engine.baseline without pytest: recording, reading, refusing, comparing."""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path

import pytest

from harness import __version__
from harness.backends.model import ModelBackend
from harness.core.errors import BaselineError
from harness.core.matrix import Cell, Outcome
from harness.core.topology import PortProtocol
from harness.engine.baseline import (
    BASELINE_FORMAT,
    BaselineChanged,
    BaselineOutdated,
    baseline_failure,
    check_baseline,
    load_baseline,
    record_baseline,
)
from harness.engine.pipeline import ScenarioResult, ScenarioRunner
from harness.scenario import load_scenario

SCENARIO = """\
description: b accepts 80/TCP from a only.
namespaces:
  x:
    pods:
      a: {labels: {app: a}, ports: [80/TCP, 53/UDP]}
      b: {labels: {app: b}, ports: [80/TCP]}
      c: {labels: {app: c}, ports: [80/TCP]}
policies:
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: b-from-a, namespace: x}
    spec:
      podSelector: {matchLabels: {app: b}}
      ingress: [{from: [{podSelector: {matchLabels: {app: FROM}}}]}]
expect: {model: true}
"""

TCP80 = PortProtocol.parse("80/TCP")


def run(path: Path) -> ScenarioResult:
    with ModelBackend() as backend:
        return ScenarioRunner(backend).run(load_scenario(path))


@pytest.fixture
def scenario(tmp_path: Path) -> Path:
    path = tmp_path / "b-from-a.yaml"
    path.write_text(SCENARIO.replace("FROM", "a"))
    return path


def test_recorded_file_holds_matrices_and_what_produced_them(scenario: Path, tmp_path: Path) -> None:
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    written = record_baseline(run(scenario), tmp_path / "baselines")
    assert written == tmp_path / "baselines" / "b-from-a.json"
    data = json.loads(written.read_text())
    assert data["format"] == BASELINE_FORMAT
    assert data["scenario"] == {
        "name": "b-from-a",
        "file": "b-from-a.yaml",
        "sha256": hashlib.sha256(scenario.read_bytes()).hexdigest(),
    }
    assert data["recorded"]["harness_version"] == __version__
    assert data["recorded"]["backend"] == {"backend": "model", "cni": "reference-model", "cni_version": __version__}
    assert datetime.datetime.fromisoformat(data["recorded"]["at"]) >= before
    (step,) = data["steps"]
    assert step["name"] == "main" and step["policies"] == ["x/b-from-a"]
    cells = step["observed"]["ports"]["80/TCP"]
    assert cells["x/a"]["x/b"]["outcome"] == "allowed"
    assert cells["x/c"]["x/b"]["outcome"] == "blocked"
    assert "command" not in cells["x/c"]["x/b"]  # machine-specific, left out
    assert list(step["observed"]["ports"]) == ["53/UDP", "80/TCP"]
    assert not list((tmp_path / "baselines").glob(".*.tmp"))


def test_unchanged_run_matches_its_baseline(scenario: Path, tmp_path: Path) -> None:
    record_baseline(run(scenario), tmp_path)
    diff = check_baseline(run(scenario), tmp_path)
    assert diff.ok and diff.changed_cells == 0 and diff.summary() == "same"
    assert baseline_failure(diff) is None


def test_changed_policy_file_names_the_changed_cells(tmp_path: Path) -> None:
    # The scenario file stays the same; the policy file it points at changes.
    (tmp_path / "policy.yaml").write_text(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: b-from-a, namespace: x}\n"
        "spec: {podSelector: {matchLabels: {app: b}}, ingress: [{from: [{podSelector: {matchLabels: {app: a}}}]}]}\n"
    )
    scenario = tmp_path / "from-file.yaml"
    scenario.write_text(SCENARIO.split("policies:")[0] + "policies: [policy.yaml]\nexpect: {model: true}\n")
    record_baseline(run(scenario), tmp_path / "bl")
    policy = (tmp_path / "policy.yaml").read_text()
    (tmp_path / "policy.yaml").write_text(policy.replace("app: a}", "app: c}"))

    diff = check_baseline(run(scenario), tmp_path / "bl")
    assert not diff.scenario_changed
    assert [(c.cell, c.baseline.outcome, c.observed.outcome) for _, c in diff.changes()] == [  # type: ignore[union-attr]
        (Cell("x/a", "x/b", TCP80), Outcome.ALLOWED, Outcome.BLOCKED),
        (Cell("x/c", "x/b", TCP80), Outcome.BLOCKED, Outcome.ALLOWED),
    ]
    error = baseline_failure(diff)
    assert isinstance(error, BaselineChanged)
    text = str(error)
    assert "x/a → x/b:80/TCP baseline allowed, observed blocked (ingress of x/b isolated by x/b-from-a" in text
    assert "x/c → x/b:80/TCP baseline blocked, observed allowed" in text
    assert "2 changed cell(s):" in text
    for title in ("baseline 80/TCP", "observed 80/TCP", "diff 80/TCP"):
        assert title in text
    # The diff grid marks exactly the two changed cells.
    diff_grid = text.split("diff 80/TCP\n")[1].split("\n\n")[0].splitlines()
    assert diff_grid[1:] == ["x/a  -   X   .", "x/b  .   -   .", "x/c  .   X   -"]
    assert "53/UDP" not in text  # ports without a changed cell are left out


def test_edited_scenario_file_is_reported_as_outdated_with_its_changes(scenario: Path, tmp_path: Path) -> None:
    record_baseline(run(scenario), tmp_path)
    old_hash = hashlib.sha256(scenario.read_bytes()).hexdigest()
    scenario.write_text(SCENARIO.replace("FROM", "c"))
    new_hash = hashlib.sha256(scenario.read_bytes()).hexdigest()
    diff = check_baseline(run(scenario), tmp_path)
    assert diff.scenario_changed and diff.changed_cells == 2
    error = baseline_failure(diff, "the scenario's own report")
    assert isinstance(error, BaselineOutdated) and isinstance(error, BaselineError)
    text = str(error)
    assert text.startswith("the scenario's own report\n\n")
    assert f"the scenario file {scenario} changed since the baseline was recorded" in text
    assert f"sha256 {old_hash[:12]}… in the baseline, {new_hash[:12]}… now" in text
    assert str(tmp_path / "b-from-a.json") in text
    assert "x/c → x/b:80/TCP baseline blocked, observed allowed" in text


def test_an_edit_that_changes_no_cell_still_needs_a_new_baseline(scenario: Path, tmp_path: Path) -> None:
    record_baseline(run(scenario), tmp_path)
    scenario.write_text(scenario.read_text().replace("from a only", "from pod a only"))
    diff = check_baseline(run(scenario), tmp_path)
    assert diff.changed_cells == 0
    error = baseline_failure(diff)
    assert isinstance(error, BaselineOutdated)
    assert "no cell changed" in str(error)


def test_missing_baseline_says_where_it_looked_and_how_to_record(scenario: Path, tmp_path: Path) -> None:
    with pytest.raises(BaselineError) as err:
        check_baseline(run(scenario), tmp_path / "empty")
    assert str(err.value) == (
        f"no baseline for scenario b-from-a: {tmp_path / 'empty' / 'b-from-a.json'} does not exist. "
        f"Record one with --record-baseline {tmp_path / 'empty'}."
    )


def test_baseline_of_another_format_is_refused_not_read(scenario: Path, tmp_path: Path) -> None:
    path = record_baseline(run(scenario), tmp_path)
    data = json.loads(path.read_text())
    data["format"] = BASELINE_FORMAT + 1
    data["recorded"]["harness_version"] = "9.0.0"
    path.write_text(json.dumps(data))
    with pytest.raises(BaselineError) as err:
        load_baseline(tmp_path, load_scenario(scenario))
    assert str(err.value) == (
        f"{path} was written by netpol-harness 9.0.0 in baseline format {BASELINE_FORMAT + 1}; "
        f"netpol-harness {__version__} reads format {BASELINE_FORMAT} only. "
        "Record the baseline again with this version (--record-baseline)."
    )


def test_same_format_from_another_harness_version_is_compared_and_named(scenario: Path, tmp_path: Path) -> None:
    path = record_baseline(run(scenario), tmp_path)
    data = json.loads(path.read_text())
    data["recorded"]["harness_version"] = "0.0.9"
    data["steps"][0]["observed"]["ports"]["80/TCP"]["x/c"]["x/b"]["outcome"] = "allowed"
    path.write_text(json.dumps(data))
    diff = check_baseline(run(scenario), tmp_path)
    assert diff.changed_cells == 1
    text = diff.render()
    assert "by netpol-harness 0.0.9" in text and f"with netpol-harness {__version__}" in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON (line 1, column 2"),
        ('{"kind": "something else"}', 'is not a netpol-harness baseline (no "kind": "netpol-harness baseline")'),
        (f'{{"kind": "netpol-harness baseline", "format": {BASELINE_FORMAT}, "recorded": {{}}}}', "is damaged"),
    ],
)
def test_unreadable_baselines_name_the_file(scenario: Path, tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "b-from-a.json").write_text(content)
    with pytest.raises(BaselineError) as err:
        load_baseline(tmp_path, load_scenario(scenario))
    assert str(tmp_path / "b-from-a.json") in str(err.value)
    assert message in str(err.value)


def test_baseline_of_another_scenario_is_refused(scenario: Path, tmp_path: Path) -> None:
    path = record_baseline(run(scenario), tmp_path)
    data = json.loads(path.read_text())
    data["scenario"]["name"] = "someone-else"
    path.write_text(json.dumps(data))
    with pytest.raises(BaselineError, match="is the baseline of scenario someone-else, not of b-from-a"):
        load_baseline(tmp_path, load_scenario(scenario))


def test_unsupported_cells_are_not_changes_but_new_and_lost_cells_are(scenario: Path, tmp_path: Path) -> None:
    path = record_baseline(run(scenario), tmp_path)
    data = json.loads(path.read_text())
    ports = data["steps"][0]["observed"]["ports"]
    # Recorded where UDP could not be probed; and one TCP cell the run no longer has.
    for row in ports["53/UDP"].values():
        for entry in row.values():
            entry.update(outcome="unsupported", detail="no UDP here")
    del ports["80/TCP"]["x/b"]["x/c"]
    path.write_text(json.dumps(data))
    diff = check_baseline(run(scenario), tmp_path)
    (step,) = diff.steps
    assert {c.port for c in step.comparison.unsupported} == {PortProtocol.parse("53/UDP")}
    assert [c.line() for _, c in diff.changes()] == ["x/b → x/c:80/TCP baseline not probed, observed allowed"]


def test_steps_missing_on_either_side_are_named(scenario: Path, tmp_path: Path) -> None:
    path = record_baseline(run(scenario), tmp_path)
    data = json.loads(path.read_text())
    data["steps"][0]["name"] = "earlier"
    path.write_text(json.dumps(data))
    diff = check_baseline(run(scenario), tmp_path)
    assert diff.missing_steps == ("earlier",) and diff.new_steps == ("main",)
    error = baseline_failure(diff)
    assert isinstance(error, BaselineChanged)
    assert "steps in the baseline that this run does not have: earlier" in str(error)
    assert "steps of this run that the baseline does not have: main" in str(error)
