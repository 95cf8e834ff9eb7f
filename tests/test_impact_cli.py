"""Change impact through the command a reviewer runs, `python -m harness impact`, and
through pytest's `--netpol-base`, on real git repositories made by each test:
commits, an edited policy file, a renamed one, a scenario new in the working tree
and one deleted since the base."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCENARIO = """\
description: The database accepts 3306/TCP from the backend only.
namespaces:
  production:
    pods:
      db: {labels: {app: db}, ports: [3306/TCP]}
      backend: {labels: {app: backend}, ports: [80/TCP]}
      frontend: {labels: {app: frontend}, ports: [80/TCP]}
policies: [policies/db.yaml]
expect:
  default: allowed
  rules:
    - {from: "*", to: production/db, result: blocked}
    - {from: production/backend, to: production/db, port: 3306/TCP, result: allowed}
"""

POLICY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-backend, namespace: production}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
    - from: [PEERS]
      ports: [{port: 3306}]
"""
BACKEND = "{podSelector: {matchLabels: {app: backend}}}"
FRONTEND = "{podSelector: {matchLabels: {app: frontend}}}"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository whose one commit holds the scenario and its policy file."""
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "config", "user.email", "ci@example.com")
    git(tmp_path, "config", "user.name", "ci")
    (tmp_path / "scenarios" / "policies").mkdir(parents=True)
    (tmp_path / "scenarios" / "db.yaml").write_text(SCENARIO)
    (tmp_path / "scenarios" / "policies" / "db.yaml").write_text(POLICY.replace("PEERS", BACKEND))
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "database policy")
    return tmp_path


def impact(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    return subprocess.run(
        [sys.executable, "-m", "harness", "impact", *args], cwd=repo, capture_output=True, text=True, env=env, timeout=120
    )


def test_an_edited_policy_prints_the_opened_cell_the_policy_and_its_changed_lines(repo: Path) -> None:
    (repo / "scenarios" / "policies" / "db.yaml").write_text(POLICY.replace("PEERS", f"{BACKEND}, {FRONTEND}"))
    done = impact(repo, "--base", "HEAD", "--impact-markdown", "impact.md", "--impact-json", "impact.json")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == (
        "netpol-harness impact: 1 of 1 scenario(s) changed since HEAD: 1 cell(s) opened, 0 closed, "
        "1 opening(s) no expectation declares"
    )
    assert "scenarios/db.yaml (db): 1 opened, 0 closed" in lines
    assert (
        "  opened production/frontend → production/db:3306/TCP: opened for 1 source; caused by "
        "production/db-from-backend (modified) now admits"
    ) in lines
    assert "  scenarios/policies/db.yaml: +1 -1" in lines
    assert f"    +    - from: [{BACKEND}, {FRONTEND}]" in lines
    markdown = (repo / "impact.md").read_text()
    assert markdown.startswith("<!-- netpol-harness impact -->\n## netpol-harness: change impact since `HEAD`\n")
    assert "| db | scenarios/db.yaml | changed | 1 | 0 | **1** |" in markdown
    assert "- 🔴 opened: production/frontend → production/db:3306/TCP: opened for 1 source" in markdown
    assert f"+    - from: [{BACKEND}, {FRONTEND}]" in markdown
    report = json.loads((repo / "impact.json").read_text())
    assert (report["opened"], report["closed"], report["undeclared_openings"]) == (1, 0, 1)
    (scenario,) = report["scenarios"]
    assert scenario["steps"][0]["undeclared"] == [
        {"source": "production/frontend", "destination": "production/db", "port": "3306/TCP"}
    ]


def test_the_gate_fails_on_an_undeclared_opening_and_passes_once_the_intent_declares_it(repo: Path) -> None:
    (repo / "scenarios" / "policies" / "db.yaml").write_text(POLICY.replace("PEERS", f"{BACKEND}, {FRONTEND}"))
    done = impact(repo, "--base", "HEAD", "--fail-on-opened")
    assert done.returncode == 1
    assert "error: 1 opening(s) no expectation declares (--fail-on-opened)" in done.stderr
    assert "    declare it with: {from: [production/frontend], to: [production/db], port: 3306/TCP, result: allowed}" in (
        done.stdout.splitlines()
    )
    # The team acknowledges the opening in the same change: the scenario's intent says so.
    scenario = repo / "scenarios" / "db.yaml"
    scenario.write_text(SCENARIO + "    - {from: production/frontend, to: production/db, port: 3306/TCP, result: allowed}\n")
    done = impact(repo, "--base", "HEAD", "--fail-on-opened")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no expectation declares" not in done.stdout


def test_a_closing_a_renamed_file_a_new_and_a_removed_scenario(repo: Path) -> None:
    (repo / "scenarios" / "open.yaml").write_text(
        "description: open\nnamespaces: {x: {pods: {a: {ports: [80/TCP]}, b: {ports: [80/TCP]}}}}\nexpect: {model: true}\n"
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "open scenario")
    # Since then: the policy file renamed and narrowed to nobody, open.yaml deleted,
    # and a new scenario.
    git(repo, "mv", "scenarios/policies/db.yaml", "scenarios/policies/database.yaml")
    (repo / "scenarios" / "policies" / "database.yaml").write_text(
        POLICY.replace("PEERS", "{podSelector: {matchLabels: {app: none}}}")
    )
    (repo / "scenarios" / "db.yaml").write_text(SCENARIO.replace("policies/db.yaml", "policies/database.yaml"))
    git(repo, "rm", "-q", "scenarios/open.yaml")
    (repo / "scenarios" / "new.yaml").write_text(
        "description: new\nnamespaces: {y: {pods: {a: {ports: [80/TCP]}, b: {ports: [80/TCP]}}}}\nexpect: {model: true}\n"
    )
    done = impact(repo, "--base", "HEAD", "--impact-json", "impact.json")
    assert done.returncode == 0, done.stderr
    report = json.loads((repo / "impact.json").read_text())
    by_file = {s["file"]: s for s in report["scenarios"]}
    assert by_file["scenarios/db.yaml"]["status"] == "changed"
    assert (by_file["scenarios/db.yaml"]["opened"], by_file["scenarios/db.yaml"]["closed"]) == (0, 1)
    (group,) = by_file["scenarios/db.yaml"]["steps"][0]["groups"]
    assert group["summary"] == (
        "production/backend → production/db:3306/TCP: closed for 1 source; "
        "caused by production/db-from-backend (modified) no longer admits"
    )
    (diff,) = by_file["scenarios/db.yaml"]["diffs"]
    assert (diff["base"], diff["head"]) == ("HEAD:scenarios/policies/db.yaml", "scenarios/policies/database.yaml")
    assert by_file["scenarios/new.yaml"]["status"] == "new"
    assert by_file["scenarios/open.yaml"]["status"] == "removed"
    assert "scenarios/new.yaml (new): new in the working tree" in done.stdout
    assert "scenarios/open.yaml (open): removed since HEAD" in done.stdout


def test_an_unknown_revision_and_a_directory_outside_git_are_clear_errors(
    repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    done = impact(repo, "--base", "no-such-branch")
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "no-such-branch" in done.stderr
    assert "Traceback" not in done.stderr
    elsewhere = tmp_path_factory.mktemp("not-a-repo")
    done = impact(elsewhere, "--base", "HEAD")
    assert done.returncode == 2
    assert "git repository" in done.stderr and "Traceback" not in done.stderr


def test_netpol_base_reports_the_change_with_every_scenario_and_fails_on_undeclared_openings(
    repo: Path, pytester: pytest.Pytester
) -> None:
    (repo / "scenarios" / "policies" / "db.yaml").write_text(POLICY.replace("PEERS", f"{BACKEND}, {FRONTEND}"))
    (repo / "pytest.ini").write_text("[pytest]\nnetpol_scenarios = scenarios\n")
    args = ("--backend", "model", "-p", "no:cacheprovider", "--report-dir", "out", "--junitxml", "junit.xml")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "scenarios", *args, "--netpol-base", "HEAD", "--fail-on-opened"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    assert done.returncode == 1
    assert "db: the change since HEAD opens 1 path(s) that no expectation of the scenario declares allowed" in done.stdout
    record = json.loads((repo / "out" / "db.json").read_text())
    assert (record["impact"]["opened"], record["impact"]["undeclared_openings"]) == (1, 1)
    page = (repo / "out" / "index.html").read_text()
    assert '<li class="opened">opened: production/frontend → production/db:3306/TCP' in page
    junit = (repo / "junit.xml").read_text()
    assert 'name="netpol.impact.opened" value="1"' in junit
    # Without the gate the same change is reported, not failed on its own account.
    (repo / "scenarios" / "db.yaml").write_text(
        SCENARIO + "    - {from: production/frontend, to: production/db, port: 3306/TCP, result: allowed}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "scenarios", *args, "--netpol-base", "HEAD"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    assert done.returncode == 0, done.stdout


def test_the_fail_on_opened_option_needs_a_base(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--backend", "model", "--fail-on-opened")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--fail-on-opened: give the revision to compare with, --netpol-base REF*"])
