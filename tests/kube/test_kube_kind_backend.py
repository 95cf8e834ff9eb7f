"""The kind backend's decisions about clusters: which name, whether a cluster is
the harness's own, what may be done to its CNI, and what ``close`` leaves. kind
itself cannot run here: ``kind`` is a script that records its arguments, and the
API server is the in-memory double; pytest-kind-ng's KindCluster is the real one."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
import yaml
from cluster_double import InMemoryCluster  # the helper module beside this file

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
    write_private,
)
from harness.backends.variants import calico_variants
from harness.core.errors import BackendUnavailable
from harness.kube.calico import resolve_release
from harness.kube.tools import KindTools

FALSE = shutil.which("false")

# -- the cluster's name -------------------------------------------------------------------


def test_the_default_name_is_the_harnesss_own_not_pytest_kind_ngs():
    assert cluster_name(Options()) == DEFAULT_CLUSTER_NAME == "netpol-harness"
    assert cluster_name(Options(cluster_name="pytest-kind")) == "netpol-harness"  # pytest-kind-ng's default
    assert cluster_name(Options(cluster_name="ci")) == "ci"


def test_per_version_clusters_are_named_after_the_same_default():
    names = [v.options["cluster_name"] for v in calico_variants(["3.30", "3.31"], None)]
    assert names == [f"{DEFAULT_CLUSTER_NAME}-3-30", f"{DEFAULT_CLUSTER_NAME}-3-31"]


def test_pytest_kind_ngs_default_reads_as_the_harness_default(pytester):
    pytester.makepyfile(
        "from harness.backends.kind import cluster_name\n"
        "def test_it(pytestconfig):\n"
        "    assert pytestconfig.getoption('cluster_name') == 'pytest-kind'\n"
        "    assert cluster_name(pytestconfig) == 'netpol-harness'\n"
    )
    pytester.runpytest().assert_outcomes(passed=1)


# -- the harness's mark on its clusters ---------------------------------------------------


def test_every_node_of_the_kind_config_carries_the_mark(clusters):
    config = yaml.safe_load((clusters / "kind-calico.yaml").read_text())
    assert [node.get("labels") for node in config["nodes"]] == [{CLUSTER_LABEL: CLUSTER_LABEL_VALUE}] * 3


def test_a_cluster_is_the_harnesss_when_its_nodes_carry_the_mark():
    cluster = InMemoryCluster()
    assert not harness_made(cluster)
    cluster.node_labels = {CLUSTER_LABEL: "something-else"}
    assert not harness_made(cluster)
    cluster.node_labels = {CLUSTER_LABEL: CLUSTER_LABEL_VALUE}
    assert harness_made(cluster)


# -- what may be done to a cluster's Calico ----------------------------------------------


@pytest.fixture
def release(versions, recipes):
    return resolve_release("3.30", versions, recipes)


def test_the_harnesss_clusters_get_calico_installed_or_upgraded(release):
    assert calico_step("c", None, release, owned=True) is CalicoStep.INSTALL
    assert calico_step("c", "v3.29.7", release, owned=True) is CalicoStep.UPGRADE
    assert calico_step("c", release.version, release, owned=True) is CalicoStep.WAIT


def test_a_cluster_already_running_the_release_is_used_whoever_made_it(release):
    assert calico_step("theirs", release.version, release, owned=False) is CalicoStep.WAIT


def test_no_cni_is_installed_into_someone_elses_cluster(release):
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


def test_someone_elses_calico_is_not_upgraded(release):
    with pytest.raises(BackendUnavailable) as err:
        calico_step("theirs", "v3.29.7", release, owned=False)
    assert f"it runs Calico v3.29.7, not the {release.version} asked for" in str(err.value)
    assert "--calico-version v3.29.7" in str(err.value)


def test_calico_is_never_downgraded(release):
    with pytest.raises(BackendUnavailable) as err:
        calico_step("netpol-harness", "v3.31.7", release, owned=True)
    assert str(err.value).startswith(
        f"kind cluster netpol-harness runs Calico v3.31.7, newer than the {release.version} asked for, and Calico "
        "cannot be downgraded in place."
    )


# -- the kubeconfig of a reused cluster --------------------------------------------------


def test_a_kubeconfig_is_private_from_the_first_byte(tmp_path):
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


# -- close -------------------------------------------------------------------------------


@pytest.fixture
def kind_log(tmp_path, monkeypatch):
    """A `kind` that records its arguments, in a fresh working directory (KindCluster
    writes .pytest-kind/<name> there)."""
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "kind.log"
    kind = tmp_path / "kind"
    kind.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    kind.chmod(0o755)
    return kind, log


def make_backend(kind: Path, release, *, created: bool, keep: bool, owned: bool = True, messages=None):
    from pytest_kind import KindCluster

    name = "netpol-harness-3-30"
    cluster = KindCluster(name, kind_path=kind, kubectl_path=Path(FALSE))
    tools = KindTools(kind, Path(FALSE), Path(FALSE))  # docker: every call fails, so there is nothing to remove
    kube = InMemoryCluster()
    state = Path(".pytest-kind").resolve()
    backend = KindBackend(
        kube,  # type: ignore[arg-type]
        cluster,
        tools,
        KindCalicoTarget(Path(FALSE), state / name / "kubeconfig", kube),  # type: ignore[arg-type]
        release,
        created=created,
        owned=owned,
        keep=keep,
        node_image="kindest/node:v1.33.4",
        kind_version="v0.30.0",
        image="registry.k8s.io/e2e-test-images/agnhost:2.66.0",
        progress=(messages if messages is not None else []).append,
        cleanup_paths=[state / name, state],
    )
    return backend, kube


@pytest.mark.skipif(FALSE is None, reason="needs false")
def test_a_cluster_the_run_did_not_create_is_never_deleted(kind_log, release):
    kind, log = kind_log
    for keep in (False, True):
        backend, kube = make_backend(kind, release, created=False, keep=keep)
        backend.close()
        backend.close()
        assert kube.closed
    assert not log.exists(), "kind was never called"


@pytest.mark.skipif(FALSE is None, reason="needs false")
def test_a_created_cluster_is_deleted_unless_kept(kind_log, release):
    kind, log = kind_log
    messages: list[str] = []
    backend, _ = make_backend(kind, release, created=True, keep=True, messages=messages)
    backend.close()
    assert not log.exists()
    assert messages[-1] == (
        f"kept kind cluster netpol-harness-3-30 (Calico {release.version}): a later run with the same --cluster-name "
        "and --calico-version options and --keep-cluster reuses it; delete it with "
        "`kind delete cluster --name netpol-harness-3-30`"
    )
    assert Path(".pytest-kind/netpol-harness-3-30").is_dir()  # its kubeconfig's place stays, for reproduce commands

    backend, _ = make_backend(kind, release, created=True, keep=False)
    backend.close()
    assert log.read_text().split()[:3] == ["delete", "cluster", "--name=netpol-harness-3-30"]
    assert not Path(".pytest-kind").exists()


@pytest.mark.skipif(FALSE is None, reason="needs false")
def test_calico_is_upgraded_in_place_only_on_the_harnesss_cluster_and_only_forward(kind_log, release):
    kind, _ = kind_log
    theirs, _ = make_backend(kind, release, created=False, keep=False, owned=False)
    with pytest.raises(BackendUnavailable, match="installs or upgrades a CNI only in clusters it created"):
        theirs.upgrade_calico("3.31")
    ours, _ = make_backend(kind, release, created=True, keep=True)
    with pytest.raises(BackendUnavailable, match="cannot be downgraded in place"):
        ours.upgrade_calico("3.29")
    assert ours.release == release
    theirs.close()
    ours.close()
