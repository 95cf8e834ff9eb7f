"""harness.engine.baseline without pytest: recording, reading, refusing, comparing."""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from harness import __version__
from harness.backends.model import ModelBackend
from harness.core.errors import BaselineError
from harness.core.matrix import Cell, Outcome
from harness.core.topology import PortProtocol
from harness.engine.baseline import (
    BASELINE_FORMAT,
    BaselineCheck,
    BaselineDiff,
    check_baseline,
    load_baseline,
    record_baseline,
)
from harness.engine.pipeline import Pipeline, ScenarioResult
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
        return Pipeline(backend).run_scenario(load_scenario(path))


def compared(path: Path, directory: Path) -> tuple[BaselineCheck, BaselineDiff]:
    """The run of ``path`` against the baseline in ``directory``, which must exist."""
    check = check_baseline(run(path), directory)
    assert check.diff is not None, check.error
    return check, check.diff


def set_cell(step: dict[str, Any], port: str, source: str, destination: str, symbol: str) -> None:
    """Change one cell of a recorded matrix (rows of symbols, one per destination)."""
    observed = step["observed"]
    row, column = observed["sources"].index(source), observed["destinations"].index(destination)
    text = observed["ports"][port][row]
    observed["ports"][port][row] = text[:column] + symbol + text[column + 1 :]


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
    observed = step["observed"]
    assert observed["sources"] == ["x/a", "x/b", "x/c"] and observed["destinations"] == ["x/a", "x/b", "x/c"]
    # One symbol per cell: x/b accepts x/a only; a pod and itself is not probed.
    assert observed["ports"]["80/TCP"] == ["-..", ".-.", ".X-"]
    assert observed["notes"] == []  # no reproduce commands: they are machine-specific
    assert list(observed["ports"]) == ["53/UDP", "80/TCP"]
    assert not list((tmp_path / "baselines").glob(".*.tmp"))


def test_unchanged_run_matches_its_baseline(scenario: Path, tmp_path: Path) -> None:
    record_baseline(run(scenario), tmp_path)
    check, diff = compared(scenario, tmp_path)
    assert diff.ok and diff.changed_cells == 0 and diff.summary() == "same"
    assert check.problem() == "" and check.summary() == "same"


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

    check, diff = compared(scenario, tmp_path / "bl")
    assert not diff.scenario_changed
    assert [(c.cell, c.baseline.outcome, c.observed.outcome) for _, c in diff.changes()] == [  # type: ignore[union-attr]
        (Cell("x/a", "x/b", TCP80), Outcome.ALLOWED, Outcome.BLOCKED),
        (Cell("x/c", "x/b", TCP80), Outcome.BLOCKED, Outcome.ALLOWED),
    ]
    text = check.problem()
    assert text.startswith("scenario from-file differs from its baseline")
    assert "x/a → x/b:80/TCP baseline allowed, observed blocked" in text
    assert "x/c → x/b:80/TCP baseline blocked, observed allowed" in text
    assert "2 changed cell(s):" in text
    for title in ("baseline 80/TCP", "observed 80/TCP", "diff 80/TCP"):
        assert title in text
    # The diff grid is drawn around the changed cells and marks exactly them ('!').
    diff_grid = text.split("diff 80/TCP (rows and columns with a changed cell)\n")[1].split("\n\n")[0].splitlines()
    assert diff_grid[1:] == ["x/a  !", "x/c  !"]
    assert "53/UDP" not in text  # ports without a changed cell are left out


def test_edited_scenario_file_is_reported_as_outdated_with_its_changes(scenario: Path, tmp_path: Path) -> None:
    record_baseline(run(scenario), tmp_path)
    old_hash = hashlib.sha256(scenario.read_bytes()).hexdigest()
    scenario.write_text(SCENARIO.replace("FROM", "c"))
    new_hash = hashlib.sha256(scenario.read_bytes()).hexdigest()
    check, diff = compared(scenario, tmp_path)
    assert diff.scenario_changed and diff.changed_cells == 2
    text = check.problem()
    assert text.startswith("scenario b-from-a differs from its baseline")
    assert f"the scenario file {scenario} changed since the baseline was recorded" in text
    assert f"sha256 {old_hash[:12]}… in the baseline, {new_hash[:12]}… now" in text
    assert str(tmp_path / "b-from-a.json") in text
    assert "x/c → x/b:80/TCP baseline blocked, observed allowed" in text


def test_an_edit_that_changes_no_cell_still_needs_a_new_baseline(scenario: Path, tmp_path: Path) -> None:
    record_baseline(run(scenario), tmp_path)
    scenario.write_text(scenario.read_text().replace("from a only", "from pod a only"))
    check, diff = compared(scenario, tmp_path)
    assert diff.changed_cells == 0 and not diff.ok
    assert "no cell changed" in check.problem()
    assert check.summary() == "scenario edited"


def test_missing_baseline_says_where_it_looked_and_how_to_record(scenario: Path, tmp_path: Path) -> None:
    check = check_baseline(run(scenario), tmp_path / "empty")
    assert check.diff is None and check.summary() == "not compared"
    assert (
        check.problem()
        == check.error
        == (
            f"no baseline for scenario b-from-a: {tmp_path / 'empty' / 'b-from-a.json'} does not exist. "
            f"Record one with --record-baseline {tmp_path / 'empty'}."
        )
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
    set_cell(data["steps"][0], "80/TCP", "x/c", "x/b", ".")
    path.write_text(json.dumps(data))
    _, diff = compared(scenario, tmp_path)
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
    step = data["steps"][0]
    # Recorded where UDP could not be probed; and one TCP cell the run no longer has.
    for source in ("x/b", "x/c"):
        set_cell(step, "53/UDP", source, "x/a", "U")
    set_cell(step, "80/TCP", "x/b", "x/c", "-")
    path.write_text(json.dumps(data))
    _, diff = compared(scenario, tmp_path)
    assert [c.line() for _, c in diff.changes()] == ["x/b → x/c:80/TCP baseline not probed, observed allowed"]


def test_steps_missing_on_either_side_are_named(scenario: Path, tmp_path: Path) -> None:
    path = record_baseline(run(scenario), tmp_path)
    data = json.loads(path.read_text())
    data["steps"][0]["name"] = "earlier"
    path.write_text(json.dumps(data))
    check, diff = compared(scenario, tmp_path)
    assert diff.missing_steps == ("earlier",) and diff.new_steps == ("main",)
    assert "steps in the baseline that this run does not have: earlier" in check.problem()
    assert "steps of this run that the baseline does not have: main" in check.problem()
