"""Which files a run collects as scenarios, wherever the user puts them, and which
ini file it reads, however options are written. Real pytest runs (pytester, and
real processes where the command line itself matters)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import harness

REPO = Path(harness.__file__).resolve().parent.parent

OPEN = textwrap.dedent("""\
    description: no policy
    namespaces: {x: {pods: {a: {ports: [80/TCP]}, b: {ports: [80/TCP]}}}}
    expect: {default: allowed}
""")
POLICY = textwrap.dedent("""\
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: deny, namespace: x}
    spec: {podSelector: {}}
""")


def scenario(path: Path, name: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"name: {name}\n" + OPEN)
    return path


def collected(result: pytest.RunResult) -> list[str]:
    return sorted(line.split("::")[1] for line in result.outlines if "::" in line and " " not in line.strip())


@pytest.fixture
def repo(pytester: pytest.Pytester) -> pytest.Pytester:
    """A repository with a scenario directory (nested), policy files beside the
    scenarios, and scenarios elsewhere."""
    pytester.makeini("[pytest]\nnetpol_scenarios = netpol\nnetpol_backend = model\n")
    scenario(pytester.path / "netpol" / "top.yaml", "top")
    scenario(pytester.path / "netpol" / "team" / "payments" / "nested.yaml", "nested")
    (pytester.path / "netpol" / "team" / "payments" / "deny.yaml").write_text(POLICY)  # a policy, not a scenario
    (pytester.path / "netpol" / "values.yml").write_text("replicas: 3\nimage: nginx\n")  # neither
    scenario(pytester.path / "elsewhere" / "mine.yaml", "mine")
    scenario(pytester.path / "deploy" / "db.scenario.yaml", "by-suffix")
    (pytester.path / "deploy" / "db.yaml").write_text(POLICY)
    return pytester


def test_a_file_given_on_the_command_line_runs_wherever_it_is(repo: pytest.Pytester) -> None:
    result = repo.runpytest("elsewhere/mine.yaml")
    result.assert_outcomes(passed=1)
    assert "no match in any of" not in result.stdout.str() + result.stderr.str()


def test_scenario_directories_are_searched_at_any_depth_and_policy_files_are_left_alone(repo: pytest.Pytester) -> None:
    result = repo.runpytest("--collect-only", "-q", "netpol")
    assert collected(result) == ["nested", "top"]
    assert result.ret == pytest.ExitCode.OK  # deny.yaml and values.yml: no error either
    repo.runpytest("netpol").assert_outcomes(passed=2)


def test_pytest_dot_finds_every_scenario_of_the_repository(repo: pytest.Pytester) -> None:
    """``pytest .`` searches the repository as a scenario directory: the ini's
    scenario directories, the ``*.scenario.yaml`` files and any file shaped like a
    scenario; policy files and other YAML are left alone, without an error."""
    (repo.path / "docs").mkdir()
    (repo.path / "docs" / "site.yml").write_text("description: the docs\nnav: [index.md]\n")  # a scenario key, no more
    result = repo.runpytest("--collect-only", "-q", ".")
    assert collected(result) == ["by-suffix", "mine", "nested", "top"]
    repo.runpytest(".").assert_outcomes(passed=4)


def test_a_directory_given_on_the_command_line_is_searched_like_a_scenario_directory(repo: pytest.Pytester) -> None:
    result = repo.runpytest("--collect-only", "-q", "elsewhere", "deploy")
    assert collected(result) == ["by-suffix", "mine"]


def test_no_scenario_and_no_test_is_not_a_pass(repo: pytest.Pytester) -> None:
    (repo.path / "empty").mkdir()
    result = repo.runpytest("empty")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_an_option_value_after_a_space_does_not_move_the_ini_file(tmp_path: Path) -> None:
    """``--kubeconfig PATH`` with PATH outside the project: pytest alone would take
    PATH for a test path, look for its ini file from there and never read the
    project's (pytest-dev/pytest#1435); the run must be the same as with
    ``--kubeconfig=PATH``. A real process: the command line is what is under test."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\nnetpol_scenarios = netpol\nnetpol_backend = model\n")
    scenario(project / "netpol" / "open.yaml", "open")
    kubeconfig = tmp_path / "home" / ".kube" / "config"
    kubeconfig.parent.mkdir(parents=True)
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for inherited in ("NETPOL_HARNESS_ARGS_JOINED", "PYTEST_XDIST_WORKER"):  # this test's own run's, not a user's
        env.pop(inherited, None)
    outputs = []
    for words in (["--kubeconfig", str(kubeconfig)], [f"--kubeconfig={kubeconfig}"]):
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *words],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        outputs.append(done.stdout)
    for out in outputs:
        assert f"rootdir: {project}" in out
        assert "configfile: pytest.ini" in out
        assert "netpol-harness 0.1.0: backend model, scenarios in netpol" in out
        assert "1 scenario: 1 passed on model" in out
