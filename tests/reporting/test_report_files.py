"""--report-dir, JUnit properties, $GITHUB_STEP_SUMMARY and the terminal table."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness.backends.model import ModelBackend
from harness.engine.pipeline import Pipeline
from harness.engine.verdict import judge
from harness.reporting.drawing import MAX_DRAWN_CELLS
from harness.reporting.html import index_html
from harness.reporting.records import RunSummary, ScenarioRecord
from harness.scenario import load_scenario

if TYPE_CHECKING:
    from tests.reporting.conftest import Project

WRONG_WEB = "shop/web → shop/api:8080/TCP expected allowed, observed blocked"
WRONG_CLIENT = "tools/client → shop/api:8080/TCP expected blocked, observed allowed"


def mismatch_cells(step: dict[str, Any]) -> set[tuple[str, str, str, str, str]]:
    return {(m["source"], m["destination"], m["port"], m["expected"], m["observed"]) for m in step["mismatches"]}


def symbol(matrix: dict[str, Any], port: str, source: str, destination: str) -> str:
    """One cell of a matrix in its JSON form (rows of symbols, one per destination)."""
    return str(matrix["ports"][port][matrix["sources"].index(source)][matrix["destinations"].index(destination)])


@pytest.fixture
def failing_run(project: Project) -> tuple[Project, pytest.RunResult]:
    """shop fails on two cells, open passes, broken cannot be loaded."""
    project.shop(project.TOOLS_PEER)
    project.open()
    (project.scenarios / "broken.yaml").write_text("description: [unclosed\nnamespaces: {}\n")
    result = project.run("--report-dir", "out", "--junitxml", "junit.xml")
    result.assert_outcomes(passed=1, failed=2)
    return project, result


def test_report_dir_has_json_and_markdown_per_scenario_and_one_page(failing_run: tuple[Project, pytest.RunResult]) -> None:
    project, result = failing_run
    out = project.path / "out"
    names = sorted(p.name for p in out.iterdir())
    # A file that could not be loaded is named after the file, with a hash of its node id.
    assert [n for n in names if not n.startswith("broken-")] == ["index.html", "open.json", "open.md", "shop.json", "shop.md"]
    assert len([n for n in names if re.fullmatch(r"broken-[0-9a-f]{8}\.(json|md)", n)]) == 2
    result.stdout.fnmatch_lines(["netpol report: out/index.html"])


def test_json_report_holds_status_counts_cells_and_commands(failing_run: tuple[Project, pytest.RunResult]) -> None:
    project, _ = failing_run
    shop = json.loads((project.path / "out" / "shop.json").read_text())
    assert shop["status"] == "failed"
    assert shop["scenario"]["name"] == "shop" and shop["scenario"]["file"] == "scenarios/shop.yaml"
    assert shop["scenario"]["tags"] == ["reporting"]
    assert shop["backend"]["backend"] == "model"
    assert (shop["probes"], shop["mismatches"]) == (6, 2)
    (step,) = shop["steps"]
    assert step["policies"] == ["shop/api-from-web"]
    assert mismatch_cells(step) == {
        ("shop/web", "shop/api", "8080/TCP", "allowed", "blocked"),
        ("tools/client", "shop/api", "8080/TCP", "blocked", "allowed"),
    }
    commands = {m["command"] for m in step["mismatches"]}
    assert commands == {
        "python -m harness explain scenarios/shop.yaml --step main shop/web shop/api 8080/TCP",
        "python -m harness explain scenarios/shop.yaml --step main tools/client shop/api 8080/TCP",
    }
    assert symbol(step["observed"], "80/TCP", "shop/api", "tools/client") == "."
    assert symbol(step["expected"], "8080/TCP", "shop/web", "shop/api") == "."
    assert symbol(step["observed"], "8080/TCP", "shop/web", "shop/api") == "X"
    # Each wrong cell comes with the reference model's reason.
    explained = {m["source"]: m["model"] for m in step["mismatches"]}
    assert explained["shop/web"].startswith("blocked: egress of shop/web not isolated; ingress of shop/api isolated by")

    passed = json.loads((project.path / "out" / "open.json").read_text())
    assert (passed["status"], passed["probes"], passed["mismatches"]) == ("passed", 2, 0)
    assert passed["steps"][0]["mismatches"] == []

    (broken_file,) = (project.path / "out").glob("broken-*.json")
    broken = json.loads(broken_file.read_text())
    assert broken["status"] == "error" and broken["steps"] == [] and broken["probes"] == 0
    assert "invalid scenario" in broken["message"] and "invalid YAML" in broken["message"]


def test_markdown_report_has_the_summary_and_matrix_tables(failing_run: tuple[Project, pytest.RunResult]) -> None:
    project, _ = failing_run
    md = (project.path / "out" / "shop.md").read_text()
    assert md.startswith("# ❌ Scenario shop: failed\n")
    assert "| file | backend | probes | wrong | unsupported | duration |" in md
    assert "| scenarios/shop.yaml | model (reference-model 0.1.0) | 6 | 2 | 0 |" in md
    # The 8080/TCP table: one column (the api), wrong cells in bold with the expected symbol.
    table = md.split("**8080/TCP**\n\n")[1].split("\n\n")[0].splitlines()
    assert table == [
        "| from \\\\ to | shop/api |",
        "|---|:---:|",
        "| shop/web | **X** ≠ . |",
        "| shop/api | - |",
        "| tools/client | **.** ≠ X |",
    ]
    assert f"- {WRONG_WEB}" in md
    assert "python -m harness explain scenarios/shop.yaml --step main shop/web shop/api 8080/TCP" in md
    assert "note: <b>only web</b> & friends" in md  # inside a fenced YAML block, kept as written


def test_html_report_colours_each_cell_and_escapes_policies(failing_run: tuple[Project, pytest.RunResult]) -> None:
    project, _ = failing_run
    page = (project.path / "out" / "index.html").read_text()
    classes = re.findall(r'<td class="(cell [^"]*)"', page)
    # shop: 4 cells on 80/TCP allowed, 2 wrong on 8080/TCP; open: 2 allowed; the
    # diagonal and non-serving cells are drawn as not probed.
    assert classes.count("cell mismatch") == 2
    assert classes.count("cell allowed") == 6
    assert classes.count("cell blocked") == 0
    assert 'data-expected="allowed" data-observed="blocked"' in page
    assert "&lt;b&gt;only web&lt;/b&gt; &amp; friends" in page and "<b>only web</b>" not in page
    assert "python -m harness explain scenarios/shop.yaml --step main tools/client shop/api 8080/TCP" in page
    assert "<td>tools/client → shop/api:8080/TCP</td><td>expected blocked, observed allowed</td>" in page
    assert "invalid scenario" in page  # the broken file's message
    # Self-contained: no external stylesheet, script, image or font.
    assert not re.search(r"<(link|script|img|iframe)\b", page)
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    assert "url(" not in page


def test_junit_xml_carries_mismatch_lines_and_matrix_properties(failing_run: tuple[Project, pytest.RunResult]) -> None:
    project, _ = failing_run
    root = ET.parse(project.path / "junit.xml").getroot()
    cases = {c.get("name"): c for c in root.iter("testcase")}
    shop = cases["shop"]
    failure = shop.find("failure")
    assert failure is not None
    # pytest may shorten the message attribute (9.2 does) and keeps its start: the
    # wrong cells come first, the matrices after them, and the element text has it all.
    message, text = failure.get("message") or "", failure.text or ""
    assert message.startswith("shop: 2 wrong cell(s) on backend model")
    assert WRONG_WEB in text and WRONG_CLIENT in text
    assert text.index(WRONG_WEB) < text.index("expected 8080/TCP") and text.index(WRONG_CLIENT) < text.index("expected 8080/TCP")
    # What the message keeps is where the element text starts (pytest 9.2 ends a
    # shortened message with "[+N more lines; full report in element text]").
    kept = message.split("\n[+")[0].split("\n\nexpected ")[0]
    assert text.startswith(kept)
    props = {p.get("name"): p.get("value") for p in shop.iter("property")}
    assert props["netpol.probes"] == "6"
    assert props["netpol.mismatches"] == "2"
    assert props["netpol.backend"] == "model (reference-model 0.1.0)"
    assert props["netpol.allowed"] == "5" and props["netpol.blocked"] == "1"
    open_props = {p.get("name"): p.get("value") for p in cases["open"].iter("property")}
    assert (open_props["netpol.probes"], open_props["netpol.mismatches"]) == ("2", "0")


def test_step_summary_is_appended(project: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    summary = tmp_path / "step-summary.md"
    summary.write_text("# earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    project.shop(project.TOOLS_PEER)
    project.open()
    project.run().assert_outcomes(passed=1, failed=1)
    text = summary.read_text()
    assert text.startswith("# earlier step\n## netpol-harness: 2 scenarios: 1 failed, 1 passed\n")
    assert "| ❌ | shop | failed | model (reference-model 0.1.0) | 6 | 2 |" in text
    assert "| ✅ | open | passed | model (reference-model 0.1.0) | 2 | 0 |" in text
    failing = text.split("<details><summary>shop: 2 wrong cell(s) on backend model</summary>")[1].split("</details>")[0]
    assert WRONG_WEB in failing and WRONG_CLIENT in failing
    assert "open: passed" not in text

    project.run().assert_outcomes(passed=1, failed=1)
    assert summary.read_text().count("## netpol-harness:") == 2


def test_terminal_summary_lists_every_scenario_without_colour_when_not_a_tty(project: Project) -> None:
    project.shop(project.TOOLS_PEER)
    project.open()
    path = project.shop(name="shop-xfail", peer=project.TOOLS_PEER)
    documented = '  wrong_cells: ["shop/web → shop/api:8080/TCP", "tools/client → shop/api:8080/TCP"]\n'
    path.write_text("xfail:\n  reason: admits the wrong peer\n" + documented + path.read_text())
    result = project.run()
    result.assert_outcomes(passed=1, failed=1, xfailed=1)
    out = result.stdout.str()
    assert "\x1b[" not in out
    result.stdout.re_match_lines(
        [
            r"=+ netpol-harness summary =+",
            r" scenario +status +probes +wrong +time",
            r" shop +failed +6 +2 +\d+\.\d\ds",
            r" shop-xfail +xfailed +6 +2 +\d+\.\d\ds",
            r" open +passed +2 +0 +\d+\.\d\ds",
            r" total +14 +4 +\d+\.\d\ds",
            r"3 scenarios: 1 failed, 1 xfailed, 1 passed on model \(reference-model 0\.1\.0\)",
        ]
    )
    # Every line of the table fits in 80 columns.
    table = out.split("netpol-harness summary")[1].split("3 scenarios")[0]
    assert max(len(line) for line in table.splitlines()[1:]) <= 80


def test_terminal_summary_is_coloured_when_colour_is_on(project: Project) -> None:
    project.shop(project.TOOLS_PEER)
    result = project.run("--color=yes")
    assert re.search(r"\x1b\[[0-9;]*m *failed", result.stdout.str())


def test_narrow_terminal_names_the_common_backend_below_the_table(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    project.shop()
    result = project.run()
    result.stdout.re_match_lines(
        [r" shop +passed +6 +0 +\d+\.\d\ds", r"1 scenario: 1 passed on model \(reference-model 0\.1\.0\)"]
    )


def test_no_summary_and_no_step_summary_when_no_scenario_ran(
    project: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    summary = tmp_path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    project.pytester.makepyfile(test_plain="def test_nothing():\n    assert True\n")
    result = project.run(paths=("test_plain.py",))
    result.assert_outcomes(passed=1)
    assert "netpol-harness summary" not in result.stdout.str()
    assert not summary.exists()


def test_report_dir_without_scenarios_still_has_an_index(project: Project) -> None:
    project.pytester.makepyfile(test_plain="def test_nothing():\n    assert True\n")
    project.run("--report-dir", "out", paths=("test_plain.py",)).assert_outcomes(passed=1)
    assert "no scenario ran" in (project.path / "out" / "index.html").read_text()


def test_report_dir_that_is_a_file_is_a_usage_error(project: Project) -> None:
    project.shop()
    (project.path / "out").write_text("not a directory")
    result = project.run("--report-dir", "out")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--report-dir: cannot create the report directory out*"])


def test_large_matrices_are_drawn_around_their_wrong_cells(tmp_path: Path) -> None:
    # 60 pods in one namespace, one port: 60 × 59 probed cells, over the drawing limit.
    pods = "\n".join(f"      p{i:02d}: {{labels: {{app: p{i:02d}}}, ports: [80/TCP]}}" for i in range(60))
    scenario = tmp_path / "many.yaml"
    scenario.write_text(
        "description: many pods\nnamespaces:\n  big:\n    pods:\n"
        + pods
        + "\nexpect:\n  default: allowed\n  rules:\n    - {from: big/p07, to: big/p42, result: blocked}\n"
    )
    with ModelBackend() as backend:
        result = Pipeline(backend).run_scenario(load_scenario(scenario))
    assert 60 * 59 > MAX_DRAWN_CELLS and result.mismatches == 1
    page = index_html(RunSummary((ScenarioRecord.of("many.yaml::many", result, judge(result)),)))
    cells = re.findall(r'<td class="(cell [^"]*)"', page)
    assert cells == ["cell mismatch"]
    assert '<th scope="row">big/p07</th>' in page and '<th scope="col">big/p42</th>' in page
    assert "60×60 cells; only 1 row(s) and 1 column(s) with wrong cells are drawn" in page
