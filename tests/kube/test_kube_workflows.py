"""The GitHub Actions workflows: they parse, run what the README says, take every
version from clusters/versions.env, cover every pinned Calico minor on both runner
images and the two in-place upgrades. The runner-preparation steps are run for real
with bash: the Docker step with the real docker client against a fake daemon
(tests/kube/docker_daemon.py), the kernel step with sudo, apt-get, modprobe and
uname replaced by scripts that record their arguments (the runner's are not here)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from docker_daemon import DOCKER_28_CLASSIC_STORE, DOCKER_29_CONTAINERD_STORE, FakeDockerDaemon

from harness.kube.calico import CalicoRecipe, supported_minors
from harness.kube.versions import PinnedVersions

Workflow = tuple[dict[str, Any], str]


@pytest.fixture(scope="module")
def workflows(repo: Path) -> dict[str, Workflow]:
    found = {}
    for path in sorted((repo / ".github" / "workflows").glob("*.yml")):
        data = yaml.safe_load(path.read_text())
        # YAML 1.1 reads the key `on` as true.
        data["on"] = data.pop(True, data.get("on"))
        found[path.stem] = (data, path.read_text())
    return found


@pytest.fixture(scope="module")
def runner_action(repo: Path) -> dict[str, Any]:
    action: dict[str, Any] = yaml.safe_load((repo / ".github" / "actions" / "kind-runner" / "action.yml").read_text())
    return action


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = job["steps"]
    return found


def run_text(job: dict[str, Any]) -> str:
    return "\n".join(str(step.get("run", "")) for step in steps(job))


def action_step(action: dict[str, Any], name: str) -> str:
    step: str = next(s["run"] for s in action["runs"]["steps"] if s["name"].startswith(name))
    return step


def test_both_workflows_exist_and_parse(workflows: dict[str, Workflow]) -> None:
    assert {"ci", "e2e"} <= set(workflows)
    for data, _ in workflows.values():
        assert data["jobs"]
        for job in data["jobs"].values():
            assert job["timeout-minutes"] > 0
            assert re.fullmatch(r"ubuntu-[\d.]+|\$\{\{ matrix\.os \}\}", job["runs-on"])


def test_ci_runs_on_every_push_and_pull_request(workflows: dict[str, Workflow]) -> None:
    data, _ = workflows["ci"]
    assert set(data["on"]) == {"push", "pull_request"}
    assert data["on"]["push"] is None and data["on"]["pull_request"] is None  # no branch filter
    (job,) = data["jobs"].values()
    assert "bash .ci/run" in run_text(job)
    assert re.search(r"apt-get install .*\bnetcat-openbsd\b.*\bcurl\b", run_text(job))


def test_actions_are_pinned_to_a_release_or_local(workflows: dict[str, Workflow]) -> None:
    for data, _ in workflows.values():
        for job in data["jobs"].values():
            for step in steps(job):
                if "uses" in step:
                    assert re.fullmatch(r"[\w-]+/[\w-]+@(v\d+(\.\d+)*|[0-9a-f]{40})|\./\.github/actions/[\w-]+", step["uses"])


def test_e2e_covers_every_pinned_calico_minor_on_both_runner_images(
    workflows: dict[str, Workflow], versions: PinnedVersions, recipes: dict[str, CalicoRecipe]
) -> None:
    data, _ = workflows["e2e"]
    job = data["jobs"]["kind-calico"]
    matrix = job["strategy"]["matrix"]
    assert sorted(matrix["calico"]) == supported_minors(versions, recipes)
    # ubuntu-26.04 ships Docker 29 with the containerd image store; ubuntu-24.04 the classic one.
    assert matrix["os"] == ["ubuntu-24.04", "ubuntu-26.04"]
    assert job["runs-on"] == "${{ matrix.os }}"
    assert job["strategy"]["fail-fast"] is False


def cluster_policy_scenarios(repo: Path, recipe: CalicoRecipe, version: str) -> set[str]:
    """The library's scenarios with cluster-scoped admin policies or Calico policies
    that the kind backend applies on ``version`` (the harness's own decision, with the
    CRDs there and Calico's API server serving its kinds)."""
    from harness.backends.cluster.enforcement import SupportCheck, calico_support
    from harness.backends.cluster.objects import declared_objects, render
    from harness.core.cluster_policy import ClusterPolicy
    from harness.core.errors import UnsupportedPolicy
    from harness.kube.naming import NamespaceMap
    from harness.kube.resources import POLICY_RESOURCES
    from harness.scenario import load_scenario

    served = frozenset(r.plural for r in POLICY_RESOURCES if r.group == "projectcalico.org")
    applied = set()
    for path in sorted((repo / "scenarios").glob("*.yaml")):
        scenario = load_scenario(path)
        objects = [(ref, d) for plan in scenario.plans for ref, d in declared_objects(plan.state)]
        if not objects:
            continue
        check = SupportCheck("kind", calico_support(version, recipe), lambda crd: True, lambda group, v: served)
        try:
            for ref, declared in objects:
                placed = render(ref, declared, NamespaceMap(scope="r1"))
                if isinstance(declared, ClusterPolicy):
                    check.cluster_policy(declared, placed.resource)
                else:
                    check.calico_policy(ref, declared, placed.resource)
        except UnsupportedPolicy:
            continue
        applied.add(scenario.name)
    return applied


def test_e2e_runs_the_cluster_policy_and_audit_scenarios_where_calico_enforces_them(
    workflows: dict[str, Workflow], versions: PinnedVersions, recipes: dict[str, CalicoRecipe], repo: Path
) -> None:
    """Each minor's selection is exactly the scenarios whose kinds it enforces, and a
    skipped one fails the job."""
    data, _ = workflows["e2e"]
    job = data["jobs"]["cluster-policies"]
    entries = job["strategy"]["matrix"]["include"]
    assert [e["calico"] for e in entries] == supported_minors(versions, recipes)
    library = sorted(p.stem for p in (repo / "scenarios").glob("*.yaml"))
    for entry in entries:
        words = shlex.split(entry["scenarios"])
        assert words[::2] == ["--scenario"] * (len(words) // 2)
        selected = {name for name in library if any(fnmatch.fnmatch(name, glob) for glob in words[1::2])}
        minor = entry["calico"]
        assert selected == cluster_policy_scenarios(repo, recipes[minor], versions.calico_version(minor)), minor
        assert any(name.startswith("audit-") for name in selected)
    script = run_text(job)
    assert 'pytest scenarios/ --backend kind --calico-version "$CALICO_VERSION" ${{ matrix.scenarios }}' in script
    assert "set -o pipefail" in script


def none_skipped_step(job: dict[str, Any]) -> str:
    step: str = next(s["run"] for s in steps(job) if s.get("name", "").startswith("Every one of them ran"))
    return step


@pytest.mark.parametrize(("statuses", "fails"), [(["passed", "passed"], False), (["passed", "skipped"], True), ([], True)])
def test_the_cluster_policy_job_fails_on_a_skipped_scenario(
    workflows: dict[str, Workflow], tmp_path: Path, statuses: list[str], fails: bool
) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    for i, status in enumerate(statuses):
        record = {"scenario": {"name": f"s{i}"}, "status": status, "reason": "Calico v3.32.4 does not enforce ..."}
        (reports / f"s{i}.json").write_text(json.dumps(record))
    data, _ = workflows["e2e"]
    result = subprocess.run(
        ["bash", "-c", none_skipped_step(data["jobs"]["cluster-policies"])], cwd=tmp_path, capture_output=True, text=True
    )
    assert (result.returncode != 0) == fails, result.stdout + result.stderr
    if "skipped" in statuses:
        assert "::error::s1 was skipped, but this Calico version enforces its kinds: Calico v3.32.4" in result.stdout


def test_e2e_takes_every_version_from_versions_env(
    workflows: dict[str, Workflow], runner_action: dict[str, Any], versions: PinnedVersions, repo: Path
) -> None:
    data, text = workflows["e2e"]
    for job in data["jobs"].values():
        assert {"uses": "./.github/actions/kind-runner"} in steps(job)
    install = action_step(runner_action, "Install kind and kubectl")
    assert "releases/download/${KIND_VERSION}/kind-linux-amd64" in install
    assert "dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/amd64/kubectl" in install
    assert install.count("sha256sum --check") == 2
    assert "clusters/versions.env" in action_step(runner_action, "Pinned versions") and "$GITHUB_ENV" in text + str(runner_action)
    # No pinned version is written into the workflow or the action itself.
    action_text = (repo / ".github" / "actions" / "kind-runner" / "action.yml").read_text()
    for value in versions.values.values():
        if re.search(r"\d", value):
            assert value not in text and value not in action_text, value
    assert not re.search(r"\bv\d+\.\d+\.\d+\b", text + action_text)


def test_e2e_runs_the_readme_command_with_a_report_dir(workflows: dict[str, Workflow], repo: Path) -> None:
    readme = (repo / "README.md").read_text()
    documented = re.search(r"^pytest scenarios/ --backend kind --calico-version \S+", readme, re.MULTILINE)
    assert documented, "README.md shows how to run the library on kind"
    data, _ = workflows["e2e"]
    script = run_text(data["jobs"]["kind-calico"])
    found = re.search(r"^\s*(pytest .*)$", script, re.MULTILINE)
    assert found
    expected = documented.group(0).rsplit(" ", 1)[0] + ' "$CALICO_VERSION" --report-dir reports'
    assert found.group(1).startswith(expected)
    assert "set -o pipefail" in script  # tee must not hide pytest's exit code


def test_e2e_publishes_reports_and_a_summary_even_on_failure(workflows: dict[str, Workflow]) -> None:
    data, _ = workflows["e2e"]
    for job in data["jobs"].values():
        upload = next(s for s in steps(job) if s.get("uses", "").startswith("actions/upload-artifact@"))
        assert upload["if"] == "always()"
        assert upload["with"]["path"].startswith("reports")
        summary = next(s for s in steps(job) if "GITHUB_STEP_SUMMARY" in s.get("run", ""))
        assert summary["if"] == "always()"


def test_e2e_upgrades_the_previous_minor_to_the_newest_and_3_31_to_3_32(
    workflows: dict[str, Workflow], versions: PinnedVersions, recipes: dict[str, CalicoRecipe]
) -> None:
    data, _ = workflows["e2e"]
    job = data["jobs"]["calico-upgrade"]
    pairs = [(p["from"], p["to"]) for p in job["strategy"]["matrix"]["include"]]
    minors = supported_minors(versions, recipes)
    assert pairs == [(minors[-2], minors[-1]), ("3.31", "3.32")]
    # The second is the upgrade that changes which admin policies Calico enforces.
    assert recipes["3.31"].admin_policies.kinds != recipes["3.32"].admin_policies.kinds
    script = run_text(job)
    assert re.search(
        r'pytest scenarios/ --backend kind --calico-version "\$\{\{ matrix.from \}\}" --calico-version "\$\{\{ matrix.to \}\}"'
        r" \\\n\s+--calico-upgrade --report-dir reports",
        script,
    )
    assert "set -o pipefail" in script
    summary = next(s for s in steps(job) if "GITHUB_STEP_SUMMARY" in s.get("run", ""))
    assert "differences between CNI versions" in summary["run"]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[FakeDockerDaemon]:
    fake = FakeDockerDaemon(tmp_path / "docker.sock", DOCKER_29_CONTAINERD_STORE)
    yield fake
    fake.close()


@pytest.mark.skipif(shutil.which("docker") is None, reason="needs the docker client")
@pytest.mark.parametrize(("answers", "store"), [(DOCKER_29_CONTAINERD_STORE, "containerd"), (DOCKER_28_CLASSIC_STORE, "classic")])
def test_the_job_summary_says_which_docker_and_image_store_ran(
    runner_action: dict[str, Any], daemon: FakeDockerDaemon, tmp_path: Path, answers: dict[str, Any], store: str
) -> None:
    daemon.answers = answers
    summary = tmp_path / "summary.md"
    env = {**os.environ, "DOCKER_HOST": daemon.host, "DOCKER_CONFIG": str(tmp_path), "GITHUB_STEP_SUMMARY": str(summary)}
    subprocess.run(["bash", "-c", action_step(runner_action, "Docker daemon")], env=env, check=True, timeout=60)
    version = answers["version"]
    assert summary.read_text().startswith(f"- Docker {version['Version']} (API {version['ApiVersion']}), {store} image store (")


def stub(directory: Path, name: str, log: Path, body: str) -> None:
    path = directory / name
    path.write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\n{body}\n')
    path.chmod(0o755)


@pytest.mark.parametrize("modprobe_works", [True, False])
def test_the_runners_extra_modules_go_in_before_modprobe_sctp_and_the_summary_says_so(
    runner_action: dict[str, Any], tmp_path: Path, modprobe_works: bool
) -> None:
    bin_dir, log, summary = tmp_path / "bin", tmp_path / "calls.log", tmp_path / "summary.md"
    bin_dir.mkdir()
    stub(bin_dir, "sudo", log, 'exec "$@"')
    stub(bin_dir, "sysctl", log, "")
    stub(bin_dir, "apt-get", log, "")
    stub(bin_dir, "uname", log, "echo 6.14.0-1017-azure")
    stub(bin_dir, "modprobe", log, "exit 0" if modprobe_works else "exit 1")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "GITHUB_STEP_SUMMARY": str(summary)}
    result = subprocess.run(
        ["bash", "-c", action_step(runner_action, "Kernel settings")], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    calls = [line for line in log.read_text().splitlines() if not line.startswith(("sudo", "uname"))]
    install = "apt-get install -y -qq --no-install-recommends linux-modules-extra-6.14.0-1017-azure"
    assert calls.index(install) < calls.index("modprobe sctp")
    if modprobe_works:
        assert summary.read_text() == (
            "- kernel 6.14.0-1017-azure: SCTP loaded (installed linux-modules-extra-6.14.0-1017-azure): "
            "SCTP scenarios are probed\n"
        )
    else:
        assert "SCTP cells are reported as unsupported" in summary.read_text()
        assert "::warning::SCTP not available" in result.stdout
