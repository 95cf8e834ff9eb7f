"""--record-baseline and --baseline through pytest, on the model backend."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

import pytest

from harness.engine.baseline import BASELINE_FORMAT

if TYPE_CHECKING:
    from tests.reporting.conftest import Project

WEB_TO_API = "shop/web → shop/api:8080/TCP baseline allowed, observed blocked"
CLIENT_TO_API = "tools/client → shop/api:8080/TCP baseline blocked, observed allowed"


def test_record_writes_one_file_per_scenario_and_says_so(project: Project) -> None:
    project.shop()
    project.open()
    result = project.run("--record-baseline", "bl")
    result.assert_outcomes(passed=2)
    assert sorted(p.name for p in (project.path / "bl").iterdir()) == ["open.json", "shop.json"]
    data = json.loads((project.path / "bl" / "shop.json").read_text())
    assert data["scenario"]["name"] == "shop"
    observed = data["steps"][0]["observed"]
    row = observed["ports"]["8080/TCP"][observed["sources"].index("tools/client")]
    assert row[observed["destinations"].index("shop/api")] == "X"
    result.stdout.fnmatch_lines(["netpol baseline: 2 scenario(s) recorded in bl"])


def test_unchanged_run_passes_against_its_baseline(project: Project) -> None:
    project.shop()
    project.run("--record-baseline", "bl").assert_outcomes(passed=1)
    result = project.run("--baseline", "bl")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*shop*passed*same*"])


def test_policy_changed_in_the_scenario_file_fails_naming_the_changed_cells(project: Project) -> None:
    project.shop()
    project.run("--record-baseline", "bl").assert_outcomes(passed=1)
    project.shop(project.TOOLS_PEER)

    result = project.run("--baseline", "bl", "--junitxml", "junit.xml")
    result.assert_outcomes(failed=1)
    out = project.output(result)
    # The intent check and the baseline check both report; the baseline part names
    # exactly the two changed cells and shows the three tables.
    assert "shop/web → shop/api:8080/TCP expected allowed, observed blocked" in out
    # Counted in the failure report only: under CI, pytest's short summary repeats
    # the whole message untruncated.
    report = out.split("short test summary info")[0]
    changed = [line for line in report.splitlines() if " baseline " in line and " observed " in line]
    assert len(changed) == 2, "\n".join(changed)
    assert changed[0].startswith(WEB_TO_API)
    assert changed[1] == CLIENT_TO_API
    assert "2 changed cell(s):" in out
    for title in ("baseline 8080/TCP", "observed 8080/TCP", "diff 8080/TCP"):
        assert title in out
    assert "the scenario file scenarios/shop.yaml changed since the baseline was recorded" in out
    # The JUnit failure carries the changed cells too (in its text: pytest may shorten
    # the message attribute, which starts with the wrong cells).
    case = ET.parse(project.path / "junit.xml").getroot().find(".//testcase")
    assert case is not None
    failure = case.find("failure")
    assert failure is not None
    assert CLIENT_TO_API in (failure.text or "")
    assert (failure.get("message") or "").startswith("shop: 2 wrong cell(s) on backend model")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["netpol.baseline"] == "scenario edited, 2 cells changed"
    assert props["netpol.baseline.changed"] == "2"


def test_changed_policy_file_fails_only_on_the_baseline(project: Project) -> None:
    # expect: {model: true} always holds on the model backend: the baseline is the
    # only thing that can notice the policy now admits another peer.
    project.shop_from_file()
    project.run("--record-baseline", "bl").assert_outcomes(passed=1)
    project.shop_from_file(project.TOOLS_PEER)
    result = project.run("--baseline", "bl")
    result.assert_outcomes(failed=1)
    out = project.output(result)
    assert "scenario shop-from-file differs from its baseline bl/shop-from-file.json" in out
    assert "changed since the baseline was recorded" not in out
    assert "expected allowed" not in out
    assert WEB_TO_API in out and CLIENT_TO_API in out
    result.stdout.fnmatch_lines(["*shop-from-file*failed*2 cells changed*"])


def test_missing_baseline_fails_the_scenario_with_how_to_record(project: Project) -> None:
    project.shop()
    project.open()
    project.run("--record-baseline", "bl", paths=("scenarios/open.yaml",)).assert_outcomes(passed=1)
    result = project.run("--baseline", "bl")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "no baseline for scenario shop: bl/shop.json does not exist. Record one with --record-baseline bl.",
            "*shop*failed*not compared*",
        ]
    )


def test_baseline_from_another_harness_version_fails_with_both_versions(project: Project) -> None:
    project.shop()
    project.run("--record-baseline", "bl").assert_outcomes(passed=1)
    path = project.path / "bl" / "shop.json"
    data = json.loads(path.read_text())
    data["format"] += 1
    data["recorded"]["harness_version"] = "7.1.0"
    path.write_text(json.dumps(data))
    result = project.run("--baseline", "bl")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"bl/shop.json was written by netpol-harness 7.1.0 in baseline format {BASELINE_FORMAT + 1}; *"])


def test_baseline_directory_must_exist(project: Project) -> None:
    project.shop()
    result = project.run("--baseline", "nowhere")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--baseline nowhere: no such directory; record baselines first with --record-baseline nowhere*"]
    )


def test_comparing_and_recording_in_one_run_updates_the_baseline(project: Project) -> None:
    project.shop_from_file()
    project.run("--record-baseline", "bl").assert_outcomes(passed=1)
    project.shop_from_file(project.TOOLS_PEER)
    project.run("--baseline", "bl", "--record-baseline", "bl").assert_outcomes(failed=1)
    project.run("--baseline", "bl").assert_outcomes(passed=1)


def test_expected_failure_stays_expected_until_its_matrix_changes(project: Project) -> None:
    path = project.shop(project.TOOLS_PEER)
    documented = '  wrong_cells: ["shop/web → shop/api:8080/TCP", "tools/client → shop/api:8080/TCP"]\n'
    path.write_text("xfail:\n  reason: the policy admits the wrong peer\n" + documented + path.read_text())
    project.run("--record-baseline", "bl").assert_outcomes(xfailed=1)
    project.run("--baseline", "bl").assert_outcomes(xfailed=1)
    data = json.loads((project.path / "bl" / "shop.json").read_text())
    observed = data["steps"][0]["observed"]
    row, column = observed["sources"].index("shop/web"), observed["destinations"].index("tools/client")
    text = observed["ports"]["80/TCP"][row]
    observed["ports"]["80/TCP"][row] = text[:column] + "X" + text[column + 1 :]
    (project.path / "bl" / "shop.json").write_text(json.dumps(data))
    result = project.run("--baseline", "bl")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["shop/web → tools/client:80/TCP baseline blocked, observed allowed"])
