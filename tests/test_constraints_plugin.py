"""Constraints in a pytest run, through pytester and the real plugin: the example
constraints file on a set of three scenarios, one of which violates "no production
pod reaches the internet"; exactly that one fails, naming the constraint and the
cells, on the model backend and with real packets on the emulated backend. Then
the reports, a constraint that applies nowhere, pytest-xdist, and bad settings."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "docs" / "constraints.example.yaml"

LOCKED_DOWN = """\
description: Production is locked down; the backend reaches the database, monitoring scrapes metrics, egress stays inside.
namespaces:
  production:
    labels: {env: prod}
    pods:
      db: {labels: {app: database}, ports: [3306/TCP]}
      backend: {labels: {app: backend}, ports: [80/TCP, 9090/TCP]}
  monitoring:
    pods:
      prometheus: {labels: {app: prometheus}, ports: [9090/TCP]}
EXTERNAL
policies:
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: default-deny, namespace: production}
    spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: db-from-backend, namespace: production}
    spec:
      podSelector: {matchLabels: {app: database}}
      ingress: [{from: [{podSelector: {matchLabels: {app: backend}}}], ports: [{port: 3306}]}]
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: metrics-from-monitoring, namespace: production}
    spec:
      podSelector: {}
      ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}], ports: [{port: 9090}]}]
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: egress-inside, namespace: production}
    spec:
      podSelector: {}
      policyTypes: [Egress]
      egress: [{to: [{namespaceSelector: {}}, {ipBlock: {cidr: 10.0.0.0/8}}]}]
MORE
expect: {model: true}
"""

# The backend may also ask Google's resolver (8.8.8.8, which no scenario declares:
# only the model's representative address finds it) and reach the partner's network
# on every port, where the constraint allows 443/TCP only: the partner's host is
# declared, so its 80/TCP is also probed with real traffic.
TO_GOOGLE = LOCKED_DOWN.replace("EXTERNAL", "external:\n  partner-api: {ip: 203.0.113.10, ports: [443/TCP, 80/TCP]}").replace(
    "MORE",
    """\
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: backend-out, namespace: production}
    spec:
      podSelector: {matchLabels: {app: backend}}
      policyTypes: [Egress]
      egress:
        - to: [{ipBlock: {cidr: 8.8.8.8/32}}]
          ports: [{protocol: UDP, port: 53}]
        - to: [{ipBlock: {cidr: 203.0.113.0/24}}]""",
)

DEV_OPEN = """\
description: A development namespace without policies.
namespaces:
  dev:
    pods:
      a: {ports: [80/TCP]}
      b: {ports: [80/TCP]}
expect: {default: allowed}
"""

GOOGLE_LINE = "production/backend → 8.8.8.8:53/UDP allowed; the constraint requires blocked (outside the cluster)"
GOOGLE_WHY = (
    "    model: egress of production/backend admitted by production/backend-out egress[0] "
    "(to[0] ipBlock 8.8.8.8/32, ports[0] 53/UDP)"
)
PARTNER_LINE = "production/backend → partner-api:80/TCP allowed; the constraint requires blocked (outside the cluster)"


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    # Runs in a subprocess import the harness of this checkout, not another install.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    pytester.makefile(".ini", pytest="[pytest]\nnetpol_scenarios = scenarios\nnetpol_constraints = guard/constraints.yaml\n")
    (pytester.mkdir("guard") / "constraints.yaml").write_text(EXAMPLE.read_text())
    scenarios = pytester.mkdir("scenarios")
    (scenarios / "production-locked-down.yaml").write_text(LOCKED_DOWN.replace("EXTERNAL\n", "").replace("MORE\n", ""))
    (scenarios / "production-egress-to-google.yaml").write_text(TO_GOOGLE)
    (scenarios / "dev-open.yaml").write_text(DEV_OPEN)
    return pytester


def _failure_section(result: pytest.RunResult) -> str:
    return result.stdout.str().split("short test summary info")[0]


def test_exactly_the_scenario_that_violates_the_constraint_fails_naming_it_and_its_cells(project: pytest.Pytester) -> None:
    result = project.runpytest("--backend", "model", "-p", "no:cacheprovider", "-rA")
    result.assert_outcomes(passed=2, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    # The short summary appends " - <message>" to a failure when the terminal is wide
    # enough, so each line is matched with that tail optional.
    for line in (
        "FAILED scenarios/production-egress-to-google.yaml::production-egress-to-google",
        "PASSED scenarios/production-locked-down.yaml::production-locked-down",
        "PASSED scenarios/dev-open.yaml::dev-open",
    ):
        result.stdout.re_match_lines([re.escape(line) + r"( - .*)?$"])
    failure = _failure_section(result)
    lines = failure.splitlines()
    head = next(i for i, line in enumerate(lines) if "violates constraint" in line)
    assert (
        lines[head] == "production-egress-to-google: violates constraint no-prod-internet (constraints of guard/constraints.yaml)"
    )
    assert GOOGLE_LINE in lines and GOOGLE_WHY in lines
    assert PARTNER_LINE.replace(":80/TCP", ":1-442/TCP") in lines
    # The intent itself holds: no wrong cell, and no constraint but this one is named.
    assert "wrong cell" not in failure
    assert failure.count("violates constraint ") == 2  # the heading and the block
    # The end of the run tallies each constraint.
    result.stdout.fnmatch_lines(
        [
            "netpol constraints of guard/constraints.yaml:",
            "  no-prod-internet: violated by 1 scenario (production-egress-to-google), held on 1 scenario, not applicable to 1",
            "  production-isolated-for-ingress: held on 2 scenarios, not applicable to 1",
            "  database-only-from-backend: held on 2 scenarios, not applicable to 1",
            "  monitoring-reaches-metrics: held on 2 scenarios, not applicable to 1",
        ]
    )


needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("nft", "nc", "curl", "ip")),
    reason="the emulated backend needs root and nft, nc, curl, ip",
)


@pytest.mark.emulated
@needs_root
def test_on_the_emulated_backend_the_probed_cells_violate_it_too(project: pytest.Pytester) -> None:
    before = set(_network_namespaces())
    result = project.runpytest_subprocess("--backend", "emulated", "-p", "no:cacheprovider", "--probe-timeout", "1", "-rA")
    result.assert_outcomes(passed=2, failed=1)
    failure = _failure_section(result)
    lines = failure.splitlines()
    assert GOOGLE_LINE in lines  # by the model: 8.8.8.8 is never probed
    real = next(line for line in lines if "probed cell(s) violate it with real traffic on backend emulated" in line)
    assert real.startswith("1 of ")
    index = lines.index(PARTNER_LINE)
    assert lines[index + 1].startswith("    observed: allowed")
    assert lines[index + 3].startswith("    reproduce: ip netns exec ")
    assert lines[index + 3].endswith("http://203.0.113.10:80/")
    # Nothing of this run's emulated network is left behind (other runs on the
    # machine may have networks of their own meanwhile).
    left = [n for n in set(_network_namespaces()) - before if n.endswith(("-production.backend", "-monitoring.prometheus"))]
    assert left == []


def _network_namespaces() -> list[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in listing.splitlines() if line.strip()]


def test_reports_list_each_constraint_per_scenario(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(project.path / "summary.md"))
    result = project.runpytest("--backend", "model", "-p", "no:cacheprovider", "--report-dir", "out", "--junitxml", "junit.xml")
    result.assert_outcomes(passed=2, failed=1)
    # The terminal table has a constraints column.
    result.stdout.fnmatch_lines(["*production-egress-to-google*failed*1 violated*", "*production-locked-down*passed*4 held*"])
    result.stdout.fnmatch_lines(["*dev-open*passed*n/a*"])
    record = json.loads((project.path / "out" / "production-egress-to-google.json").read_text())
    assert record["format"] == 3
    assert record["constraints"]["file"] == "guard/constraints.yaml"
    statuses = {r["name"]: r["status"] for r in record["constraints"]["results"]}
    assert statuses == {
        "no-prod-internet": "violated",
        "production-isolated-for-ingress": "passed",
        "database-only-from-backend": "passed",
        "monitoring-reaches-metrics": "passed",
    }
    (step,) = record["constraints"]["results"][0]["steps"]
    lines = [c["line"] for c in step["model"]["cells"]]
    assert GOOGLE_LINE in lines
    assert step["model"]["count"] == len(lines)
    dev = json.loads((project.path / "out" / "dev-open.json").read_text())
    assert {r["status"] for r in dev["constraints"]["results"]} == {"not applicable"}
    markdown = (project.path / "out" / "production-egress-to-google.md").read_text()
    section = markdown.split("## Constraints")[1].split("### Matrices")[0]
    assert "| no-prod-internet | ❌ violated |" in section
    assert "| production-isolated-for-ingress | ✅ held |" in section
    assert f"- {GOOGLE_LINE}" in section
    html = (project.path / "out" / "index.html").read_text()
    assert "violates constraint no-prod-internet" in html
    assert '<td class="constraint not-applicable">not applicable</td>' in html
    assert "no-prod-internet: violated by 1 scenario (production-egress-to-google)" in html
    summary = (project.path / "summary.md").read_text()
    assert "- ❌ no-prod-internet: violated by 1 scenario (production-egress-to-google), held on 1 scenario" in summary
    assert "violates constraint no-prod-internet: No production pod reaches" in summary
    cases = {c.get("name"): c for c in ET.parse(project.path / "junit.xml").getroot().iter("testcase")}
    failing = cases["production-egress-to-google"]
    props = {p.get("name"): p.get("value") for p in failing.iter("property")}
    assert props["netpol.constraints.violated"] == "1"
    assert (props["netpol.constraint.no-prod-internet"] or "").startswith("violated (")
    assert props["netpol.constraint.monitoring-reaches-metrics"] == "passed"
    failure = failing.find("failure")
    assert failure is not None
    assert (failure.get("message") or "").startswith("production-egress-to-google: violates constraint no-prod-internet")
    dev_props = {p.get("name"): p.get("value") for p in cases["dev-open"].iter("property")}
    assert dev_props["netpol.constraint.no-prod-internet"] == "not applicable"


def test_a_constraint_that_applies_to_no_scenario_fails_the_run(project: pytest.Pytester) -> None:
    result = project.runpytest("--backend", "model", "-p", "no:cacheprovider", "--scenario", "dev-open")
    result.assert_outcomes(passed=1, deselected=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["  no-prod-internet: applies to no step of the 1 scenario of this run, so it tests nothing: the run fails"]
    )


def test_under_xdist_the_controller_judges_the_run(project: pytest.Pytester) -> None:
    result = project.runpytest_subprocess("--backend", "model", "-p", "no:cacheprovider", "-n", "2")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["  no-prod-internet: violated by 1 scenario (production-egress-to-google)*"])
    alone = project.runpytest_subprocess("--backend", "model", "-p", "no:cacheprovider", "-n", "2", "scenarios/dev-open.yaml")
    alone.assert_outcomes(passed=1)
    assert alone.ret == pytest.ExitCode.TESTS_FAILED
    alone.stdout.fnmatch_lines(["*monitoring-reaches-metrics: applies to no step of the 1 scenario of this run*"])


def test_the_option_overrides_the_ini_file_and_paths_follow_pytest(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project.path / "only-dev.yaml").write_text(
        "constraints:\n  - name: dev-isolated\n    description: dev is isolated.\n    isolated: {namespaces: dev}\n"
    )
    result = project.runpytest("--backend", "model", "-p", "no:cacheprovider", "--netpol-constraints", "only-dev.yaml")
    # dev-open has no policy: dev is not isolated. The example file is not read.
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*dev-open: violates constraint dev-isolated (constraints of only-dev.yaml)*"])
    assert "no-prod-internet" not in result.stdout.str()
    # The ini path is relative to the ini file, wherever pytest starts.
    sub = project.mkdir("sub")
    monkeypatch.chdir(sub)
    result = project.runpytest("-c", "../pytest.ini", "--backend", "model", "-p", "no:cacheprovider", "../scenarios")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["netpol constraints: */guard/constraints.yaml (4 constraint(s))"])


def test_bad_settings_say_where_they_came_from(project: pytest.Pytester) -> None:
    result = project.runpytest("--backend", "model", "--netpol-constraints", "missing.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --netpol-constraints missing.yaml: missing.yaml: file not found"])
    (project.path / "guard" / "constraints.yaml").write_text(
        "constraints:\n  - name: c\n    description: d\n    isolated: {namespaces: prod, directions: [sideways]}\n"
    )
    result = project.runpytest("--backend", "model")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert (
        f"ERROR: {project.path}/pytest.ini: netpol_constraints = guard/constraints.yaml: guard/constraints.yaml: "
        "constraints[0].isolated.directions[0]: got string 'sideways' (expected ingress or egress)"
    ) in result.stderr.str().splitlines()
    project.makefile(".ini", pytest="[pytest]\nnetpol_scenarios = scenarios\nnetpol_constraints = a.yaml b.yaml\n")
    result = project.runpytest("--backend", "model")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: */pytest.ini: netpol_constraints names 2 files; give one constraints file"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
