"""The kind backend's decisions about clusters: which name, whether a cluster is the
harness's own, what may be done to its CNI, how the probe image gets into the
nodes, which cluster kubectl talks to, and what ``close`` leaves.

kind cannot run here, nor a Docker daemon: ``kind`` and ``docker`` are scripts that
record their arguments (and, where a test says so, answer with recorded real
output); the API server is the in-memory double, or a loopback HTTP server that the
real kubectl and the real Python client both talk to."""

from __future__ import annotations

import ast
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster_double import InMemoryCluster
from loopback_api import LoopbackApiServer, Reply, Request, json_reply

from harness.backends.base import Options
from harness.backends.kind import DEFAULT_CLUSTER_NAME, cluster_name
from harness.backends.kind.backend import (
    CLUSTER_LABEL,
    CLUSTER_LABEL_VALUE,
    CalicoStep,
    KindBackend,
    KindCalicoTarget,
    calico_step,
    harness_made,
    load_image,
    write_private,
)
from harness.backends.variants import calico_variants
from harness.core.errors import BackendError, BackendUnavailable, HarnessError
from harness.kube.calico import CalicoRecipe, CalicoRelease, Timeouts, resolve_release
from harness.kube.client import KubeClient
from harness.kube.kind import ClusterAccess, KindCli
from harness.kube.tools import CONTAINERD_SNAPSHOTTER, DockerInfo, KindTools
from harness.kube.versions import PinnedVersions
from harness.kube.views import InstallationView, TigeraStatusView, installation_view, tigera_status_view

FALSE = shutil.which("false") or "/bin/false"
REPO = Path(__file__).resolve().parents[2]
STATES = yaml.safe_load((Path(__file__).parent / "recorded" / "calico-upgrade-3.31-to-3.32.yaml").read_text())
DOCKER_29 = DockerInfo("29.4.0", "1.52", "linux", "amd64", "overlayfs", (("driver-type", CONTAINERD_SNAPSHOTTER),))
DOCKER_27_CONTAINERD = DockerInfo("27.5.1", "1.47", "linux", "amd64", "overlayfs", (("driver-type", CONTAINERD_SNAPSHOTTER),))
DOCKER_27_CLASSIC = DockerInfo("27.5.1", "1.47", "linux", "amd64", "overlay2", (("Backing Filesystem", "extfs"),))
IMAGE = "registry.k8s.io/e2e-test-images/agnhost:2.66.0"

# -- the cluster's name -------------------------------------------------------------------


def test_the_default_name_is_the_harnesss_own_not_pytest_kind_ngs() -> None:
    assert cluster_name(Options()) == DEFAULT_CLUSTER_NAME == "netpol-harness"
    assert cluster_name(Options(cluster_name="pytest-kind")) == "netpol-harness"  # pytest-kind-ng's default
    assert cluster_name(Options(cluster_name="ci")) == "ci"


def test_per_version_clusters_are_named_after_the_same_default() -> None:
    names = [v.options["cluster_name"] for v in calico_variants(["3.32", "3.33"], None)]
    assert names == [f"{DEFAULT_CLUSTER_NAME}-3-32", f"{DEFAULT_CLUSTER_NAME}-3-33"]


def test_pytest_kind_ngs_default_reads_as_the_harness_default(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        "from harness.backends.kind import cluster_name\n"
        "def test_it(pytestconfig):\n"
        "    assert pytestconfig.getoption('cluster_name') == 'pytest-kind'\n"
        "    assert cluster_name(pytestconfig) == 'netpol-harness'\n"
    )
    pytester.runpytest().assert_outcomes(passed=1)


# -- the harness's mark on its clusters ---------------------------------------------------


def test_every_node_of_the_kind_config_carries_the_mark(clusters: Path) -> None:
    config = yaml.safe_load((clusters / "kind-calico.yaml").read_text())
    assert [node.get("labels") for node in config["nodes"]] == [{CLUSTER_LABEL: CLUSTER_LABEL_VALUE}] * 3


def test_a_cluster_is_the_harnesss_when_its_nodes_carry_the_mark() -> None:
    cluster = InMemoryCluster()
    assert not harness_made(cluster)
    cluster.node_labels = {CLUSTER_LABEL: "something-else"}
    assert not harness_made(cluster)
    cluster.node_labels = {CLUSTER_LABEL: CLUSTER_LABEL_VALUE}
    assert harness_made(cluster)


# -- what may be done to a cluster's Calico ----------------------------------------------


@pytest.fixture
def release(versions: PinnedVersions, recipes: dict[str, CalicoRecipe]) -> CalicoRelease:
    return resolve_release("3.32", versions, recipes)


def test_the_harnesss_clusters_get_calico_installed_or_upgraded(release: CalicoRelease) -> None:
    assert calico_step("c", None, release, owned=True) is CalicoStep.INSTALL
    assert calico_step("c", "v3.31.7", release, owned=True) is CalicoStep.UPGRADE
    assert calico_step("c", release.version, release, owned=True) is CalicoStep.WAIT


def test_a_cluster_already_running_the_release_is_used_whoever_made_it(release: CalicoRelease) -> None:
    assert calico_step("theirs", release.version, release, owned=False) is CalicoStep.WAIT


def test_no_cni_is_installed_into_someone_elses_cluster(release: CalicoRelease) -> None:
    with pytest.raises(BackendUnavailable) as err:
        calico_step("pytest-kind", None, release, owned=False)
    message = str(err.value)
    assert message.startswith(
        "kind cluster pytest-kind was not created by netpol-harness (its nodes lack the label "
        "netpol-harness.io/cluster=kind-calico), and the harness installs or upgrades a CNI only in clusters it created; "
        "it has no Calico installed by the Tigera operator."
    )
    assert "Choose another --cluster-name" in message
    assert "`kind delete cluster --name pytest-kind`" in message
    assert "--backend existing" in message


def test_someone_elses_calico_is_not_upgraded(release: CalicoRelease) -> None:
    with pytest.raises(BackendUnavailable) as err:
        calico_step("theirs", "v3.31.7", release, owned=False)
    assert f"it runs Calico v3.31.7, not the {release.version} asked for" in str(err.value)
    assert "--calico-version v3.31.7" in str(err.value)


def test_calico_is_never_downgraded(release: CalicoRelease) -> None:
    with pytest.raises(BackendUnavailable) as err:
        calico_step("netpol-harness", "v3.33.1", release, owned=True)
    assert str(err.value) == (
        f"kind cluster netpol-harness runs Calico v3.33.1, newer than the {release.version} asked for, and Calico "
        "cannot be downgraded in place. Delete the cluster with `kind delete cluster --name netpol-harness` (or choose "
        "another --cluster-name) and run again"
    )


# -- the kubeconfig of a reused cluster --------------------------------------------------


def test_a_kubeconfig_is_private_from_the_first_byte(tmp_path: Path) -> None:
    previous = os.umask(0)  # nothing masks the mode away: the file must ask for 0600 itself
    try:
        fresh = tmp_path / ".pytest-kind" / "c" / "kubeconfig"
        write_private(fresh, "apiVersion: v1\n")
        stale = tmp_path / "stale"
        stale.write_text("old, longer content\n")
        stale.chmod(0o644)
        write_private(stale, "new\n")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600 and fresh.read_text() == "apiVersion: v1\n"
    assert stat.S_IMODE(stale.stat().st_mode) == 0o600 and stale.read_text() == "new\n"


# -- one cluster for kubectl and the Python client ------------------------------------------


def two_cluster_kubeconfig(directory: Path, ours: LoopbackApiServer, other: LoopbackApiServer) -> Path:
    """A kubeconfig whose current context is another cluster, as after the user
    switched contexts: the harness must still reach kind-netpol-harness."""
    path = directory / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "kind-netpol-harness", "cluster": {"server": ours.url}},
                    {"name": "staging", "cluster": {"server": other.url}},
                ],
                "users": [{"name": "u", "user": {"token": "not-a-token"}}],
                "contexts": [
                    {"name": "kind-netpol-harness", "context": {"cluster": "kind-netpol-harness", "user": "u"}},
                    {"name": "staging", "context": {"cluster": "staging", "user": "u"}},
                ],
                "current-context": "staging",
            }
        )
    )
    return path


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl")
def test_kubectl_and_the_python_client_talk_to_the_kind_context_whatever_the_current_one(tmp_path: Path) -> None:
    ours, other = LoopbackApiServer(), LoopbackApiServer()
    listing = json_reply({"kind": "NamespaceList", "apiVersion": "v1", "metadata": {}, "items": []})
    version = json_reply({"major": "1", "minor": "36", "gitVersion": "v1.36.4"})

    def answer(request: Request) -> Reply:
        return version if request.path.startswith("/version") else listing

    ours.answer = other.answer = answer
    try:
        access = ClusterAccess.of("netpol-harness", two_cluster_kubeconfig(tmp_path, ours, other))
        kube = KubeClient(str(access.kubeconfig), context=access.context)
        target = KindCalicoTarget(Path(shutil.which("kubectl") or "kubectl"), access, kube)
        assert target.command("get", "pods")[1:5] == ["--kubeconfig", str(access.kubeconfig), "--context", "kind-netpol-harness"]
        target.kubectl("get", "--raw", "/api/v1/namespaces")
        kube.list_namespaces()
        kube.close()
        assert [r.path for r in ours.requests if r.path.startswith("/api/")] == ["/api/v1/namespaces", "/api/v1/namespaces"]
        assert other.requests == []
    finally:
        ours.close()
        other.close()


# -- getting the probe image into the nodes ----------------------------------------------

#: What `kind load` printed on a Docker 29 runner with the containerd image store, for a
#: pulled multi-platform image (kubernetes-sigs/kind#4066, the issue's description).
CTR_NOT_FOUND = (
    'ERROR: failed to load image: command "docker exec --privileged -i kind-control-plane ctr --namespace=k8s.io images '
    'import --all-platforms --digests --snapshotter=overlayfs -" failed with error: exit status 1\n'
    "Command Output: ctr: content digest sha256:44b2c602cb838fd6a647d6d48cf0e6f56227351b2903263d60637ebd26545a8d: not found\n"
)


def recorder(path: Path, log: Path, script: str = "") -> Path:
    path.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\n{script}\n')
    path.chmod(0o755)
    return path


@pytest.fixture
def tools(tmp_path: Path) -> tuple[Path, Path]:
    """A `docker` whose `image save` writes the archive it is asked for and whose
    `image inspect` finds the image, and a `kind` that records its arguments."""
    log = tmp_path / "calls.log"
    docker = recorder(
        tmp_path / "docker",
        log,
        'case "$1 $2" in "image save") while [ "$1" != --output ]; do shift; done; echo archive > "$2" ;; esac\n'
        'case "$1" in load) exit 0 ;; esac',
    )
    kind = recorder(tmp_path / "kind", log, 'case "$1 $2" in "load image-archive") test -s "$3" || exit 9 ;; esac')
    return docker, kind


def kind_tools(docker: Path, kind: Path, info: DockerInfo) -> KindTools:
    return KindTools(kind, Path(FALSE), docker, info)


def calls(tmp_path: Path) -> list[str]:
    return (tmp_path / "calls.log").read_text().splitlines()


def test_the_probe_image_goes_in_as_a_single_platform_archive(tmp_path: Path, tools: tuple[Path, Path]) -> None:
    docker, kind = tools
    messages: list[str] = []
    load_image(KindCli(kind), kind_tools(docker, kind, DOCKER_29), "netpol-harness", IMAGE, messages.append)
    save, load = calls(tmp_path)[1:]
    archive = re.search(r"--output (\S+)", save)
    assert archive is not None
    assert save == f"image save --platform linux/amd64 --output {archive.group(1)} {IMAGE}"
    assert load == f"load image-archive {archive.group(1)} --name netpol-harness"
    assert not Path(archive.group(1)).exists() and not Path(archive.group(1)).parent.exists()  # nothing left behind
    assert "loading registry.k8s.io/e2e-test-images/agnhost:2.66.0 (linux/amd64) into kind cluster netpol-harness" in messages


def test_the_classic_store_saves_its_one_platform(tmp_path: Path, tools: tuple[Path, Path]) -> None:
    docker, kind = tools
    load_image(KindCli(kind), kind_tools(docker, kind, DOCKER_27_CLASSIC), "c", IMAGE, lambda m: None)
    save = calls(tmp_path)[1]
    assert save.startswith("image save --output ") and "--platform" not in save


def test_an_older_daemon_with_the_containerd_store_lets_the_nodes_pull(tmp_path: Path, tools: tuple[Path, Path]) -> None:
    docker, kind = tools
    messages: list[str] = []
    load_image(KindCli(kind), kind_tools(docker, kind, DOCKER_27_CONTAINERD), "c", IMAGE, messages.append)
    assert calls(tmp_path) == [f"image inspect --format {{{{.Id}}}} {IMAGE}"]  # no save, no kind load
    assert messages[-1].endswith(f"the nodes pull {IMAGE} themselves")


def test_a_failed_load_reports_kinds_words(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    docker = recorder(tmp_path / "docker", log, 'case "$1 $2" in "image save") echo x > "$6" ;; esac')
    kind = recorder(tmp_path / "kind", log, f"cat >&2 <<'EOF'\n{CTR_NOT_FOUND}EOF\nexit 1")
    with pytest.raises(BackendError) as err:
        load_image(KindCli(kind), kind_tools(docker, kind, DOCKER_29), "c", IMAGE, lambda m: None)
    assert str(err.value).startswith("`kind load image-archive ")
    assert str(err.value).endswith(
        "(loading the image archive): Command Output: ctr: content digest "
        "sha256:44b2c602cb838fd6a647d6d48cf0e6f56227351b2903263d60637ebd26545a8d: not found"
    )


def test_no_code_path_loads_an_image_with_kind_load_docker_image() -> None:
    # kind load docker-image imports with ctr --all-platforms (kind
    # pkg/cluster/nodeutils/util.go) and fails on pulled multi-platform images with
    # the containerd store; the harness builds that command nowhere.
    for path in (REPO / "harness").rglob("*.py"):
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                assert "docker-image" not in node.value, f"{path}:{node.lineno}"
            if isinstance(node, ast.Attribute):
                assert node.attr != "load_docker_image", f"{path}:{node.lineno}"
    for path in (REPO / "harness").rglob("*.sh"):
        assert "docker-image" not in path.read_text(), path


# -- close and upgrade ----------------------------------------------------------------


class OperatorCluster(InMemoryCluster):
    """The in-memory double with a Tigera operator that goes through ``states``."""

    def __init__(self, states: list[dict[str, Any]]) -> None:
        super().__init__()
        self.states = states
        self.index = -1

    def tigera_statuses(self) -> list[TigeraStatusView]:
        self.index = min(self.index + 1, len(self.states) - 1)
        return [tigera_status_view(raw) for raw in self.states[self.index]["tigerastatuses"]]

    def installation(self, name: str = "default") -> InstallationView | None:
        return installation_view(self.states[max(0, self.index)]["installation"])

    def crd_exists(self, name: str) -> bool:
        return name == "felixconfigurations.crd.projectcalico.org"


@pytest.fixture
def kind_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A `kind` and a `kubectl` that record their arguments, in a fresh working directory."""
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "kind.log"
    return recorder(tmp_path / "kind", log), recorder(tmp_path / "kubectl", tmp_path / "kubectl.log")


def make_backend(
    kind: Path,
    kubectl: Path,
    release: CalicoRelease,
    *,
    created: bool,
    keep: bool,
    owned: bool = True,
    messages: list[str] | None = None,
    kube: InMemoryCluster | None = None,
) -> tuple[KindBackend, InMemoryCluster]:
    name = "netpol-harness-3-31"
    state = Path(".pytest-kind").resolve()
    (state / name).mkdir(parents=True, exist_ok=True)
    kube = kube or InMemoryCluster()
    access = ClusterAccess.of(name, state / name / "kubeconfig")
    backend = KindBackend(
        kube,
        KindCli(kind),
        name,
        KindTools(kind, kubectl, Path(FALSE), DOCKER_29),  # docker: every call fails, so there is nothing to remove
        KindCalicoTarget(kubectl, access, kube),
        release,
        created=created,
        owned=owned,
        keep=keep,
        node_image="kindest/node:v1.35.8",
        kind_version="v0.33.0",
        image=IMAGE,
        progress=(messages if messages is not None else []).append,
        cleanup_paths=[state / name, state],
    )
    backend.timeouts = Timeouts(tigerastatus_created=2, calico_available=2, nodes_ready=2, poll=0.01)
    return backend, kube


@pytest.fixture
def old(versions: PinnedVersions, recipes: dict[str, CalicoRecipe]) -> CalicoRelease:
    return resolve_release("3.31", versions, recipes)


def test_a_cluster_the_run_did_not_create_is_never_deleted(kind_log: tuple[Path, Path], old: CalicoRelease) -> None:
    kind, kubectl = kind_log
    for keep in (False, True):
        backend, kube = make_backend(kind, kubectl, old, created=False, keep=keep)
        backend.close()
        backend.close()
        assert kube.closed
    assert not Path("kind.log").exists(), "kind was never called"


def test_a_created_cluster_is_deleted_unless_kept(kind_log: tuple[Path, Path], old: CalicoRelease) -> None:
    kind, kubectl = kind_log
    messages: list[str] = []
    backend, _ = make_backend(kind, kubectl, old, created=True, keep=True, messages=messages)
    backend.close()
    assert not Path("kind.log").exists()
    assert messages[-1] == (
        f"kept kind cluster netpol-harness-3-31 (Calico {old.version}): a later run with the same --cluster-name "
        "and --calico-version options and --keep-cluster reuses it; delete it with "
        "`kind delete cluster --name netpol-harness-3-31`"
    )
    assert Path(".pytest-kind/netpol-harness-3-31").is_dir()  # its kubeconfig's place stays, for reproduce commands

    backend, _ = make_backend(kind, kubectl, old, created=True, keep=False)
    backend.close()
    kubeconfig = Path(".pytest-kind/netpol-harness-3-31/kubeconfig").resolve()
    assert Path("kind.log").read_text().splitlines() == [f"delete cluster --name netpol-harness-3-31 --kubeconfig {kubeconfig}"]
    assert not Path(".pytest-kind").exists()


def test_calico_is_upgraded_in_place_only_on_the_harnesss_cluster_and_only_forward(
    kind_log: tuple[Path, Path], old: CalicoRelease
) -> None:
    kind, kubectl = kind_log
    theirs, _ = make_backend(kind, kubectl, old, created=False, keep=False, owned=False)
    with pytest.raises(BackendUnavailable, match="installs or upgrades a CNI only in clusters it created"):
        theirs.upgrade_calico("3.32")
    ours, _ = make_backend(kind, kubectl, old, created=True, keep=True)
    with pytest.raises(BackendUnavailable, match="cannot be downgraded in place"):
        ours.upgrade_calico("v3.31.2")
    with pytest.raises(HarnessError, match="no install recipe for Calico 3.30"):
        ours.upgrade_calico("3.30")
    assert ours.release == old
    theirs.close()
    ours.close()


def test_an_upgrade_counts_only_once_the_operator_reports_the_new_release(
    kind_log: tuple[Path, Path], old: CalicoRelease, tmp_path: Path
) -> None:
    kind, kubectl = kind_log
    cluster = OperatorCluster([STATES["states"][0], *STATES["states"]])
    backend, _ = make_backend(kind, kubectl, old, created=True, keep=True, kube=cluster)
    assert backend.info().cni_version == "v3.31.7"
    backend.upgrade_calico("3.32")
    assert backend.info().cni_version == backend.release.version == "v3.32.4"
    # Every kubectl call named the cluster's kubeconfig and context.
    kubeconfig = Path(".pytest-kind/netpol-harness-3-31/kubeconfig").resolve()
    for line in (tmp_path / "kubectl.log").read_text().splitlines():
        assert line.startswith(
            f"--kubeconfig {kubeconfig} --context kind-netpol-harness-3-31 apply --server-side --force-conflicts"
        )
    backend.close()


def test_a_failed_upgrade_leaves_the_backend_on_the_old_release(kind_log: tuple[Path, Path], old: CalicoRelease) -> None:
    kind, kubectl = kind_log
    cluster = OperatorCluster([STATES["states"][0], STATES["degraded_after_upgrade"]])
    backend, _ = make_backend(kind, kubectl, old, created=True, keep=True, kube=cluster)
    with pytest.raises(BackendError, match="goldmane: Degraded"):
        backend.upgrade_calico("3.32")
    # Nothing labelled with the new version can run on it: it still says what it runs.
    assert backend.release == old and backend.info().cni_version == "v3.31.7"
    backend.close()
