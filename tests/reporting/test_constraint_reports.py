"""Constraint results in every report, from a record made as the plugin makes it (the
pipeline on the model backend, the check, the verdict): the JSON record round trip
and its bound, the terminal table within 80 columns, Markdown and HTML escaping of
text the constraints file wrote, JUnit properties."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from harness.backends.model import ModelBackend
from harness.engine.constraints import KEPT_CELLS, check_scenario
from harness.engine.pipeline import Pipeline
from harness.engine.verdict import Status, judge
from harness.reporting.html import index_html
from harness.reporting.junit import junit_properties
from harness.reporting.markdown import run_summary_markdown, scenario_markdown
from harness.reporting.records import RunSummary, ScenarioRecord, constraint_tallies
from harness.reporting.terminal import constraint_lines, render_summary
from harness.scenario import load_scenario
from harness.scenario.constraints import parse_constraints

# Written as a hostile file would: markup and table separators in the description.
CONSTRAINTS = """\
constraints:
  - name: all-isolated
    description: "Every pod is <b>isolated</b> | no | exceptions"
    isolated: {namespaces: "*", directions: [ingress]}
  - name: staging-only
    description: Staging is isolated.
    isolated: {namespaces: staging}
"""


def record(tmp_path: Path, pods: int = 3) -> ScenarioRecord:
    text = yaml.safe_dump(
        {
            "description": "open namespaces",
            "namespaces": {"a": {"pods": {f"p{i}": {"ports": ["80/TCP"]} for i in range(pods)}}},
            "expect": {"default": "allowed"},
        }
    )
    path = tmp_path / "open.yaml"
    path.write_text(text)
    scenario = load_scenario(path)
    with ModelBackend() as backend:
        result = Pipeline(backend).run_scenario(scenario)
    checks = check_scenario(parse_constraints(yaml.safe_load(CONSTRAINTS), "constraints.yaml"), scenario, result)
    verdict = judge(result, constraints=checks)
    return ScenarioRecord.of("open.yaml::open", result, verdict, constraints=checks)


def test_the_record_carries_the_results_through_json(tmp_path: Path) -> None:
    made = record(tmp_path)
    assert made.status is Status.FAILED
    assert made.reason == "violates constraint all-isolated"
    assert made.constraints_text == "1 violated"
    back = ScenarioRecord.from_json(json.loads(json.dumps(made.to_json())))
    assert back.constraints == made.constraints
    assert back.to_json() == made.to_json()
    tallies = constraint_tallies([back])
    assert [t.line() for t in tallies] == [
        "all-isolated: violated by 1 scenario (open)",
        "staging-only: applies to no step of the 1 scenario of this run, so it tests nothing: the run fails",
    ]


def test_the_record_stays_bounded_however_many_cells_violate(tmp_path: Path) -> None:
    small = len(json.dumps(record(tmp_path, pods=30).to_json()["constraints"]))
    large = record(tmp_path, pods=200)  # 200 × 199 × 3 violating cells
    finding = large.constraints.results[0].steps[0].model if large.constraints else None
    assert finding is not None and finding.count == 200 * 199 * 3
    assert len(finding.cells) == KEPT_CELLS
    assert len(json.dumps(large.to_json()["constraints"])) < 2 * small


def test_the_terminal_table_and_the_tallies(tmp_path: Path) -> None:
    made = record(tmp_path)
    table = render_summary([made], 80, color=False)
    assert all(len(line) <= 80 for line in table.splitlines())
    assert "constraints" in table.splitlines()[0]
    assert "1 violated" in table
    assert constraint_lines([made]) == [
        ("netpol constraints of constraints.yaml:", False),
        ("  all-isolated: violated by 1 scenario (open)", True),
        (
            "  staging-only: applies to no step of the 1 scenario of this run, so it tests nothing: the run fails",
            True,
        ),
    ]


def test_markdown_and_html_escape_what_the_file_wrote(tmp_path: Path) -> None:
    made = record(tmp_path)
    page = scenario_markdown(made)
    section = page.split("## Constraints")[1].split("### Matrices")[0]
    assert "| all-isolated | ❌ violated | 18 violating of 18 checked |" in section
    assert "| staging-only | not applicable | selects nothing at any step |" in section
    assert "Every pod is \\<b>isolated\\</b> \\| no \\| exceptions" in section
    assert (
        "- a/p0 → a/p1:1-65535/TCP allowed; the constraint requires ingress isolation (only what a policy rule admits)" in section
    )
    assert "  - reference model: egress of a/p0 not isolated; ingress of a/p1 not isolated" in section
    summary = run_summary_markdown([made])
    assert "- ❌ staging-only: applies to no step of the 1 scenario of this run, so it tests nothing: the run fails" in summary
    html = index_html(RunSummary((made,)))
    assert "<b>isolated</b>" not in html
    assert "Every pod is &lt;b&gt;isolated&lt;/b&gt; | no | exceptions" in html
    assert '<td class="constraint violated">violated</td>' in html
    assert '<li class="failing">staging-only: applies to no step' in html
    # A violated constraint comes before the matrices of the scenario.
    assert html.index("violates constraint all-isolated") < html.index('<table class="matrix">')


def test_junit_properties_name_every_constraint(tmp_path: Path) -> None:
    props = dict(junit_properties(record(tmp_path)))
    assert props["netpol.constraints.violated"] == 1
    assert props["netpol.constraint.all-isolated"] == "violated (18 cell(s))"
    assert props["netpol.constraint.staging-only"] == "not applicable"
