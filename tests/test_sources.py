"""File sources: the working tree and a git revision, read from real git repositories
made by each test (commits, branches, renamed and deleted policy files)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.core.errors import RevisionError, ScenarioError
from harness.scenario.sources import (
    DEFAULT_MAX_BYTES,
    FileSource,
    GitRevision,
    WorkingTree,
    relative_to_scenario,
)
from harness.scenario.yamlload import load_all, load_one

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

SCENARIO = """\
description: the database accepts its backend only
namespaces:
  prod:
    pods:
      db: {labels: {app: db}, ports: [3306/TCP]}
      backend: {labels: {app: backend}}
policies:
  - path: policies/db.yaml
expect: {model: true}
"""
POLICY_V1 = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: prod}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: backend}}}]}]
"""
POLICY_V2 = POLICY_V1.replace("app: backend", "app: frontend")


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=True)
    return done.stdout


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    """A repository whose main branch has one commit: a scenario and its policy."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    write(root / "scenarios/db.yaml", SCENARIO)
    write(root / "scenarios/policies/db.yaml", POLICY_V1)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "first")
    yield root


def test_a_revision_reads_files_as_committed_not_as_edited(repo: Path) -> None:
    policy = repo / "scenarios/policies/db.yaml"
    write(policy, POLICY_V2)
    at_head = GitRevision("HEAD", repo)
    assert at_head.read_text(policy) == POLICY_V1
    assert WorkingTree().read_text(policy) == POLICY_V2
    assert at_head.label == f"HEAD ({git(repo, 'rev-parse', 'HEAD')[:12]})"
    assert at_head.display(policy) == "HEAD:scenarios/policies/db.yaml"
    # The working tree is untouched: nothing was checked out.
    assert policy.read_text() == POLICY_V2
    assert git(repo, "status", "--porcelain").strip() == "M scenarios/policies/db.yaml"


def test_branches_and_commits(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "feature")
    write(repo / "scenarios/policies/db.yaml", POLICY_V2)
    git(repo, "commit", "-q", "-am", "frontend")
    policy = repo / "scenarios/policies/db.yaml"
    assert GitRevision("main", repo).read_text(policy) == POLICY_V1
    assert GitRevision("feature", repo).read_text(policy) == POLICY_V2
    assert GitRevision("HEAD~1", repo).read_text(policy) == POLICY_V1
    first = git(repo, "rev-parse", "main").strip()
    assert GitRevision(first[:10], repo).commit == first


def test_files_new_in_the_working_tree_are_absent_at_the_revision(repo: Path) -> None:
    new_scenario = write(repo / "scenarios/new.yaml", SCENARIO)
    git(repo, "add", "scenarios/new.yaml")  # staged or not, it is not in the commit
    write(repo / "scenarios/untracked.yaml", SCENARIO)
    base = GitRevision("main", repo)
    assert not base.exists(new_scenario) and not base.is_file(new_scenario)
    with pytest.raises(ScenarioError) as info:
        base.read_text(new_scenario)
    assert str(info.value).startswith("main:scenarios/new.yaml: file not found: it does not exist at main (")
    assert [p.name for p in base.glob(repo / "scenarios", "*.yaml")] == ["db.yaml"]
    assert [p.name for p in WorkingTree().glob(repo / "scenarios", "*.yaml")] == ["db.yaml", "new.yaml", "untracked.yaml"]


def test_deleted_and_renamed_policy_files(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "rename")
    git(repo, "mv", "scenarios/policies/db.yaml", "scenarios/policies/database.yaml")
    write(repo / "scenarios/db.yaml", SCENARIO.replace("policies/db.yaml", "policies/database.yaml"))
    write(repo / "scenarios/gone.yaml", SCENARIO)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "rename the policy file")
    git(repo, "rm", "-q", "scenarios/gone.yaml")  # deleted in the working tree, not committed

    old, new = repo / "scenarios/policies/db.yaml", repo / "scenarios/policies/database.yaml"
    main, head, tree = GitRevision("main", repo), GitRevision("HEAD", repo), WorkingTree()
    assert main.is_file(old) and not main.exists(new)
    assert head.is_file(new) and not head.exists(old)
    assert main.read_text(old) == head.read_text(new) == POLICY_V1
    assert head.is_file(repo / "scenarios/gone.yaml") and not tree.exists(repo / "scenarios/gone.yaml")
    # git sees the rename between main and the working tree.
    assert main.renames() == {new: old}
    assert main.renamed_from(new) == old and main.renamed_from(repo / "scenarios/db.yaml") is None
    assert head.renames() == {}


def test_directories_at_the_revision(repo: Path) -> None:
    base = GitRevision("main", repo)
    write(repo / "scenarios/policies/extra.yaml", POLICY_V1)
    assert base.is_dir(repo / "scenarios/policies") and not base.is_file(repo / "scenarios/policies")
    assert base.iterdir(repo / "scenarios") == (repo / "scenarios/db.yaml", repo / "scenarios/policies")
    assert base.iterdir(repo / "scenarios/policies") == (repo / "scenarios/policies/db.yaml",)
    assert base.iterdir(repo / "scenarios/db.yaml") == () and base.iterdir(repo / "missing") == ()
    assert base.is_dir(repo) and base.iterdir(repo) == (repo / "scenarios",)
    with pytest.raises(ScenarioError, match="is a directory"):
        base.read_text(repo / "scenarios")
    with pytest.raises(ScenarioError, match="is a directory"):
        WorkingTree().read_text(repo / "scenarios")


def test_paths_relative_to_the_working_directory_and_to_the_scenario(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(repo / "deploy/netpol.yaml", POLICY_V2)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "deploy")
    monkeypatch.chdir(repo / "scenarios")
    base = GitRevision("HEAD")  # the repository of the working directory
    assert base.root == Path(os.path.realpath(repo))
    scenario = Path("db.yaml")
    policy = relative_to_scenario(scenario, "policies/db.yaml")
    assert policy == Path("policies/db.yaml")
    assert base.read_text(policy) == POLICY_V1
    outside_dir = relative_to_scenario(scenario, "../deploy/netpol.yaml")
    assert outside_dir == Path("../deploy/netpol.yaml")
    assert base.read_text(outside_dir) == POLICY_V2
    assert base.repo_path(outside_dir).as_posix() == "deploy/netpol.yaml"
    assert base.display(outside_dir) == "HEAD:deploy/netpol.yaml"
    assert base.read_text(repo / "deploy/netpol.yaml") == POLICY_V2  # absolute paths too
    with pytest.raises(ScenarioError, match="outside the git repository"):
        base.read_text(Path("../../elsewhere.yaml"))
    assert not base.exists(Path("../../elsewhere.yaml"))


def test_names_are_never_patterns(repo: Path) -> None:
    for name in ("a*b.yaml", "[x].yaml", "with space.yaml", "é.yaml"):
        write(repo / "odd" / name, name)
    write(repo / "odd/aXb.yaml", "not me")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "odd names")
    base = GitRevision("HEAD", repo)
    for name in ("a*b.yaml", "[x].yaml", "with space.yaml", "é.yaml"):
        assert base.read_text(repo / "odd" / name) == name
    assert [p.name for p in base.glob(repo / "odd", "a*b.yaml")] == ["a*b.yaml", "aXb.yaml"]


def test_symbolic_links_are_followed_inside_the_repository(repo: Path) -> None:
    (repo / "scenarios/current.yaml").symlink_to("policies/db.yaml")
    (repo / "linked").symlink_to("scenarios/policies")
    (repo / "escape.yaml").symlink_to("../outside.yaml")
    (repo / "absolute.yaml").symlink_to("/etc/hostname")
    (repo / "loop.yaml").symlink_to("loop.yaml")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "links")
    write(repo / "scenarios/policies/db.yaml", POLICY_V2)  # edited after the commit
    base = GitRevision("HEAD", repo)
    assert base.read_text(repo / "scenarios/current.yaml") == POLICY_V1
    assert base.read_text(repo / "linked/db.yaml") == POLICY_V1
    assert base.is_dir(repo / "linked")
    for name in ("escape.yaml", "absolute.yaml", "loop.yaml"):
        assert not base.exists(repo / name)
        with pytest.raises(ScenarioError, match="file not found"):
            base.read_text(repo / name)


def test_submodules_are_not_files(repo: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q", "-b", "main")
    write(other / "x.yaml", "x")
    git(other, "add", "-A")
    git(other, "commit", "-q", "-m", "x")
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(other), "vendored")
    git(repo, "commit", "-q", "-m", "submodule")
    base = GitRevision("HEAD", repo)
    assert base.exists(repo / "vendored") and not base.is_file(repo / "vendored") and not base.is_dir(repo / "vendored")
    with pytest.raises(ScenarioError, match="is not a file at HEAD"):
        base.read_text(repo / "vendored")


def test_reads_are_bounded(repo: Path) -> None:
    big = write(repo / "big.yaml", "x" * 2048)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "big")
    for source in (GitRevision("HEAD", repo, max_bytes=1024), WorkingTree(max_bytes=1024)):
        with pytest.raises(ScenarioError, match="the file has 2,048 bytes, more than the limit of 1,024"):
            source.read_text(big)
    assert len(GitRevision("HEAD", repo).read_text(big)) == 2048
    assert DEFAULT_MAX_BYTES >= 1024 * 1024


def test_text_that_is_not_utf8(repo: Path) -> None:
    binary = repo / "latin1.yaml"
    binary.write_bytes("name: caf\xe9\n".encode("latin-1"))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "latin-1")
    for source in (GitRevision("HEAD", repo), WorkingTree()):
        with pytest.raises(ScenarioError, match="not UTF-8 text"):
            source.read_text(binary)


def test_what_is_read_at_a_revision_loads_as_yaml(repo: Path) -> None:
    base: FileSource = GitRevision("main", repo)
    doc = load_one(base.read_text(repo / "scenarios/db.yaml"), base.display(repo / "scenarios/db.yaml"))
    assert doc["policies"] == [{"path": "policies/db.yaml"}]
    (policy,) = load_all(base.read_text(repo / "scenarios/policies/db.yaml"), "policy")
    assert policy["metadata"] == {"name": "db", "namespace": "prod"}


# -- errors ---------------------------------------------------------------------------


def test_not_a_git_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(RevisionError, match=f"{plain} is not in a git repository"):
        GitRevision("HEAD", plain)
    with pytest.raises(RevisionError, match="is not a directory"):
        GitRevision("HEAD", tmp_path / "missing")


def test_unknown_revisions(repo: Path) -> None:
    with pytest.raises(RevisionError, match=r"unknown revision 'nope' in the git repository"):
        GitRevision("nope", repo)
    with pytest.raises(RevisionError, match="unknown revision 'HEAD~5'"):
        GitRevision("HEAD~5", repo)
    for bad in ("", "--all", "-h"):
        with pytest.raises(RevisionError, match="is not a revision"):
            GitRevision(bad, repo)
    tree = git(repo, "rev-parse", "HEAD^{tree}").strip()
    with pytest.raises(RevisionError, match="unknown revision"):
        GitRevision(tree, repo)  # a tree is not a commit


def test_a_shallow_clone_says_how_to_get_the_revision(repo: Path, tmp_path: Path) -> None:
    write(repo / "second.yaml", "2")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "second")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{repo}", str(clone)], check=True, capture_output=True)
    with pytest.raises(RevisionError, match="shallow clone.*fetch-depth: 0"):
        GitRevision("HEAD~1", clone)


def test_git_missing(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(RevisionError, match="git is not installed"):
        GitRevision("HEAD", repo)


def test_working_tree_errors(tmp_path: Path) -> None:
    tree = WorkingTree()
    with pytest.raises(ScenarioError, match="file not found"):
        tree.read_text(tmp_path / "missing.yaml")
    assert not tree.exists(tmp_path / ("x" * 5000)) and not tree.is_file(tmp_path / ("x" * 5000))
    assert tree.iterdir(tmp_path / "missing") == ()
    assert tree.label == "working tree" and tree.display(tmp_path / "a.yaml") == str(tmp_path / "a.yaml")
