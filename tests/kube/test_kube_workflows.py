"""The GitHub Actions workflows: they parse, run what the README says, and take
every version from clusters/versions.env."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from harness.kube.calico import supported_minors


@pytest.fixture(scope="module")
def workflows(repo):
    found = {}
    for path in sorted((repo / ".github" / "workflows").glob("*.yml")):
        data = yaml.safe_load(path.read_text())
        # YAML 1.1 reads the key `on` as true.
        data["on"] = data.pop(True, data.get("on"))
        found[path.stem] = (data, path.read_text())
    return found


def steps(job):
    return job["steps"]


def run_text(job):
    return "\n".join(step.get("run", "") for step in steps(job))


def test_both_workflows_exist_and_parse(workflows):
    assert {"ci", "e2e"} <= set(workflows)
    for data, _ in workflows.values():
        assert data["jobs"]
        for job in data["jobs"].values():
            assert job["timeout-minutes"] > 0
            assert job["runs-on"].startswith("ubuntu-")


def test_ci_runs_on_every_push_and_pull_request(workflows):
    data, _ = workflows["ci"]
    assert set(data["on"]) == {"push", "pull_request"}
    assert data["on"]["push"] is None and data["on"]["pull_request"] is None  # no branch filter
    (job,) = data["jobs"].values()
    assert "bash .ci/run" in run_text(job)
    assert re.search(r"apt-get install .*\bsocat\b", run_text(job))


def test_actions_are_pinned_to_a_release(workflows):
    for data, _ in workflows.values():
        for job in data["jobs"].values():
            for step in steps(job):
                if "uses" in step:
                    assert re.fullmatch(r"[\w-]+/[\w-]+@(v\d+(\.\d+)*|[0-9a-f]{40})", step["uses"]), step["uses"]


def test_e2e_covers_at_least_two_calico_minors_that_the_harness_supports(workflows, versions, recipes):
    data, _ = workflows["e2e"]
    job = data["jobs"]["kind-calico"]
    minors = job["strategy"]["matrix"]["calico"]
    assert len(minors) >= 2
    assert job["strategy"]["fail-fast"] is False
    assert sorted(minors) == supported_minors(versions, recipes)


def test_e2e_takes_every_version_from_versions_env(workflows, versions):
    data, text = workflows["e2e"]
    job = data["jobs"]["kind-calico"]
    script = run_text(job)
    assert "clusters/versions.env" in script and "$GITHUB_ENV" in script
    assert "releases/download/${KIND_VERSION}/kind-linux-amd64" in script
    assert "dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/amd64/kubectl" in script
    assert script.count("sha256sum --check") == 2
    # No version number is written into the workflow itself.
    for value in versions.values.values():
        if re.search(r"\d", value):
            assert value not in text, value
    assert not re.search(r"\bv\d+\.\d+\.\d+\b", text)


def test_e2e_prepares_the_runner_for_a_multi_node_cluster(workflows):
    data, _ = workflows["e2e"]
    script = run_text(data["jobs"]["kind-calico"])
    assert "fs.inotify.max_user_watches=524288" in script
    assert "fs.inotify.max_user_instances=512" in script


def test_e2e_runs_the_readme_command_with_a_report_dir(workflows, repo):
    readme = (repo / "README.md").read_text()
    documented = re.search(r"^pytest scenarios/ --backend kind --calico-version \S+", readme, re.MULTILINE)
    assert documented, "README.md shows how to run the library on kind"
    data, _ = workflows["e2e"]
    script = run_text(data["jobs"]["kind-calico"])
    command = re.search(r"^\s*(pytest .*)$", script, re.MULTILINE).group(1)
    expected = documented.group(0).rsplit(" ", 1)[0] + ' "$CALICO_VERSION" --report-dir reports'
    assert command.startswith(expected)
    assert "set -o pipefail" in script  # tee must not hide pytest's exit code


def test_e2e_publishes_reports_and_a_summary_even_on_failure(workflows):
    data, _ = workflows["e2e"]
    job = data["jobs"]["kind-calico"]
    upload = next(s for s in steps(job) if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()"
    assert upload["with"]["path"].startswith("reports")
    summary = next(s for s in steps(job) if "GITHUB_STEP_SUMMARY" in s.get("run", ""))
    assert summary["if"] == "always()"


def test_e2e_upgrades_one_cluster_between_the_two_newest_pinned_minors(workflows, versions, recipes, repo, tmp_path):
    data, _ = workflows["e2e"]
    job = data["jobs"]["calico-upgrade"]
    script = run_text(job)
    command = re.search(r"^\s*(pytest .*\\\n.*)$", script, re.MULTILINE).group(1)
    assert (
        'pytest scenarios/ --backend kind --calico-version "$CALICO_FROM" --calico-version "$CALICO_TO" --calico-upgrade'
        in command
    )
    assert "--report-dir reports" in command and "set -o pipefail" in script
    assert "releases/download/${KIND_VERSION}/kind-linux-amd64" in script and script.count("sha256sum --check") == 2
    # The step that picks the versions, run for real against clusters/versions.env.
    pick = next(s["run"] for s in steps(job) if "CALICO_FROM" in s.get("run", "") and "GITHUB_ENV" in s["run"])
    env_file = tmp_path / "github_env"
    subprocess.run(["bash", "-c", pick], cwd=repo, env={"GITHUB_ENV": str(env_file), "PATH": "/usr/bin:/bin"}, check=True)
    picked = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert [picked["CALICO_FROM"], picked["CALICO_TO"]] == supported_minors(versions, recipes)[-2:]
    assert picked["KIND_VERSION"] == versions.kind_version


def test_e2e_upgrade_job_publishes_the_differences_even_on_failure(workflows):
    data, _ = workflows["e2e"]
    job = data["jobs"]["calico-upgrade"]
    summary = next(s for s in steps(job) if "GITHUB_STEP_SUMMARY" in s.get("run", ""))
    assert summary["if"] == "always()"
    assert "differences between CNI versions" in summary["run"]
    upload = next(s for s in steps(job) if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()" and upload["with"]["path"].startswith("reports")
