"""The kind backend: cluster life cycle (through pytest-kind-ng's ``KindCluster``),
Calico, the probe image and the external hosts.

``create_kind_backend`` checks every tool and image first (seconds), then creates
or reuses the cluster, loads the probe image, installs Calico and waits for it.
Whatever goes wrong on the way, including Ctrl-C, a cluster it created is deleted
again; a cluster it did not create is never deleted.

Clusters the harness creates are marked: ``clusters/kind-calico.yaml`` gives every
node the label ``netpol-harness.io/cluster=kind-calico``. Only a marked cluster
gets Calico installed or upgraded; an unmarked one (pytest-kind-ng's, someone's
kindnet cluster) is used only if it already runs the Calico asked for.
"""

from __future__ import annotations

import enum
import logging
import os
import re
import subprocess
from pathlib import Path
from typing import Any

from harness.backends.base import BackendInfo, OptionSource
from harness.backends.cluster.backend import ClusterBackend
from harness.backends.kind import cluster_name
from harness.core.errors import BackendError, BackendUnavailable, HarnessError
from harness.core.progress import Progress
from harness.core.topology import ExternalHost
from harness.kube.calico import (
    CalicoRelease,
    Timeouts,
    install_calico,
    load_recipes,
    resolve_release,
    upgrade_calico,
    wait_until_available,
)
from harness.kube.client import KubeClient
from harness.kube.externals import ExternalHosts
from harness.kube.naming import NamespaceMap
from harness.kube.progress import heartbeat, reporter
from harness.kube.tools import KindTools, check_images, check_kind_tools, image_is_local, last_line, run, url_problem
from harness.kube.versions import clusters_dir, kubernetes_version_of, load_versions

log = logging.getLogger("harness.kube")

KIND_CONFIG = "kind-calico.yaml"
#: The node label that ``clusters/kind-calico.yaml`` sets: the cluster was made by the harness.
CLUSTER_LABEL = "netpol-harness.io/cluster"
CLUSTER_LABEL_VALUE = "kind-calico"
#: Seconds for one kubectl call of the Calico install (it downloads a manifest).
KUBECTL_TIMEOUT = 300.0
#: Seconds for pulling the probe image into the local Docker.
PULL_TIMEOUT = 600.0


class KindCalicoTarget:
    """The cluster as Calico's installer sees it: kubectl plus two status reads."""

    def __init__(self, kubectl: Path, kubeconfig: Path, kube: KubeClient) -> None:
        self.kubectl_path = kubectl
        self.kubeconfig = kubeconfig
        self.kube = kube

    def command(self, *args: str) -> list[str]:
        return [str(self.kubectl_path), "--kubeconfig", str(self.kubeconfig), *args]

    def kubectl(self, *args: str) -> str:
        result = run(self.command(*args), KUBECTL_TIMEOUT)
        if result.returncode != 0:
            raise BackendError(
                f"`kubectl {' '.join(args)}` failed (exit code {result.returncode}): "
                f"{result.stderr.strip()[-800:] or result.stdout.strip()[-800:]}"
            )
        return result.stdout

    def tigera_statuses(self) -> dict[str, bool]:
        return self.kube.tigera_statuses()

    def node_readiness(self) -> tuple[int, int]:
        return self.kube.node_readiness()

    def diagnostics(self) -> str:
        parts = []
        for args in (("get", "tigerastatus", "-o", "wide"), ("get", "pods", "-A", "-o", "wide")):
            result = run(self.command(*args), 30)
            parts.append(f"$ kubectl {' '.join(args)}\n{(result.stdout or result.stderr).strip()[-3000:]}")
        return "\n".join(parts)

    def installed_version(self) -> str | None:
        """``status.calicoVersion`` of the operator's Installation, None without Calico."""
        result = run(
            self.command("get", "installations.operator.tigera.io", "default", "-o", "jsonpath={.status.calicoVersion}"), 30
        )
        if result.returncode != 0:
            return None
        return result.stdout.strip() or None


class CalicoStep(enum.Enum):
    """What a cluster needs before the scenarios run."""

    INSTALL = "install"
    UPGRADE = "upgrade"
    WAIT = "wait"


def release_key(version: str) -> tuple[int, ...] | None:
    """``v3.30.7`` → (3, 30, 7); None for anything else."""
    match = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)", version.strip())
    return tuple(int(part) for part in match.groups()) if match else None


def calico_step(cluster: str, installed: str | None, release: CalicoRelease, owned: bool) -> CalicoStep:
    """Install, upgrade or just wait, given the Calico a cluster runs (None: none
    installed through the operator). A CNI is installed or upgraded only in a
    cluster the harness made (``owned``), and never downgraded."""
    if installed == release.version:
        return CalicoStep.WAIT
    delete = f"`kind delete cluster --name {cluster}`"
    if not owned:
        unmarked = (
            f"kind cluster {cluster} was not created by netpol-harness (its nodes lack the label "
            f"{CLUSTER_LABEL}={CLUSTER_LABEL_VALUE}), and the harness installs or upgrades a CNI only in clusters it created"
        )
        if installed is None:
            raise BackendUnavailable(
                f"{unmarked}; it has no Calico installed by the Tigera operator. Choose another --cluster-name "
                f"(the harness then creates that cluster), delete this one with {delete}, or test it as it is with "
                f"--backend existing --kubeconfig <the file `kind get kubeconfig --name {cluster}` prints>"
            )
        raise BackendUnavailable(
            f"{unmarked}; it runs Calico {installed}, not the {release.version} asked for. Use it as it is with "
            f"--calico-version {installed}, choose another --cluster-name, or delete it with {delete}"
        )
    if installed is None:
        return CalicoStep.INSTALL
    have, want = release_key(installed), release_key(release.version)
    if have is not None and want is not None and have > want:
        raise BackendUnavailable(
            f"kind cluster {cluster} runs Calico {installed}, newer than the {release.version} asked for, and Calico "
            f"cannot be downgraded in place. Delete the cluster with {delete} (or choose another --cluster-name) "
            "and run again"
        )
    return CalicoStep.UPGRADE


def harness_made(kube: KubeClient) -> bool:
    """Whether the cluster's nodes carry the label of ``clusters/kind-calico.yaml``."""
    return any(
        ((node.get("metadata") or {}).get("labels") or {}).get(CLUSTER_LABEL) == CLUSTER_LABEL_VALUE for node in kube.nodes()
    )


class KindBackend(ClusterBackend):
    name = "kind"

    def __init__(
        self,
        kube: KubeClient,
        cluster: Any,
        tools: KindTools,
        target: KindCalicoTarget,
        release: CalicoRelease,
        *,
        created: bool,
        owned: bool,
        keep: bool,
        node_image: str,
        kind_version: str,
        image: str,
        progress: Progress,
        cleanup_paths: list[Path],
    ) -> None:
        super().__init__(kube, NamespaceMap(), image, progress, adopt_existing_namespaces=True)
        self.cluster = cluster
        self.tools = tools
        self.target = target
        self.release = release
        #: This run created the cluster: close() deletes it (unless kept).
        self.created = created
        #: The harness made the cluster (this run or an earlier one): its CNI may be changed.
        self.owned = owned
        self.keep = keep
        self.node_image = node_image
        self.kind_version = kind_version
        self.cleanup_paths = cleanup_paths
        self.externals = ExternalHosts(tools.docker, tools.kind, cluster.name, image, progress)
        self._kubernetes_version = ""
        self._done = False

    @property
    def serves_externals(self) -> bool:
        return True

    def start_externals(self, externals: Any) -> None:
        hosts: tuple[ExternalHost, ...] = tuple(externals)
        self.externals.start(hosts)

    def stop_externals(self) -> None:
        self.externals.stop()

    def kubectl_target(self) -> tuple[str | None, str | None]:
        return str(self.target.kubeconfig), f"kind-{self.cluster.name}"

    def info(self) -> BackendInfo:
        if not self._kubernetes_version:
            try:
                self._kubernetes_version = self.kube.server_version()
            except HarnessError:
                self._kubernetes_version = kubernetes_version_of(self.node_image)
        return BackendInfo(
            self.name,
            "calico",
            self.release.version,
            self._kubernetes_version,
            {"kind_version": self.kind_version, "node_image": self.node_image, "cluster": str(self.cluster.name)},
        )

    def upgrade_calico(self, to_version: str) -> None:
        """Upgrade this cluster's Calico (server-side apply of the target version's
        manifests, as Calico's upgrade guide does) and wait until it is available.
        Only on a cluster the harness made, and never to an older release."""
        directory = clusters_dir()
        release = resolve_release(to_version, load_versions(directory), load_recipes(directory))
        step = calico_step(str(self.cluster.name), self.release.version, release, self.owned)
        if step is CalicoStep.UPGRADE:
            upgrade_calico(self.target, release, self.progress)
        else:
            wait_until_available(self.target, release, self.progress, Timeouts())
        self.release = release

    def close(self) -> None:
        """Delete the cluster if this run created it and it is not kept; otherwise
        remove only what the run put on it. A cluster this run did not create is
        never deleted."""
        if self._done:
            return
        self._done = True
        if self.created and not self.keep:
            try:
                self.stop_externals()
            finally:
                self.kube.close()
                delete_cluster(self.cluster, self.progress, self.cleanup_paths)
            return
        try:
            self.close_namespaces()
        finally:
            if not self.keep:
                remove_paths(self.cleanup_paths)  # the kubeconfig written for a borrowed cluster
            elif self.created:
                # Its kubeconfig stays: the reproduce commands of the run's reports name it.
                self.progress(
                    f"kept kind cluster {self.cluster.name} (Calico {self.release.version}): a later run with the same "
                    "--cluster-name and --calico-version options and --keep-cluster reuses it; delete it with "
                    f"`kind delete cluster --name {self.cluster.name}`"
                )


def delete_cluster(cluster: Any, progress: Progress, cleanup_paths: list[Path]) -> None:
    try:
        with heartbeat(progress, f"deleting kind cluster {cluster.name}"):
            try:
                cluster.delete()
            except (subprocess.CalledProcessError, OSError) as err:
                command = f"kind delete cluster --name {cluster.name}"
                raise BackendError(f"could not delete kind cluster {cluster.name} ({err}); delete it with `{command}`") from None
    finally:
        # `kind delete cluster --name` needs none of these files.
        remove_paths(cleanup_paths)


def remove_paths(paths: list[Path]) -> None:
    """Files first, then directories if empty: what the harness created on disk."""
    for path in paths:
        if path.is_file():
            path.unlink(missing_ok=True)
    for path in paths:
        if path.is_dir():
            try:
                path.rmdir()
            except OSError:
                pass  # not empty: something else lives there too


def write_private(path: Path, text: str) -> None:
    """Write a file that only its owner can read, from the first byte on (a
    kubeconfig holds the cluster's credentials)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        os.fchmod(fd, 0o600)  # a file that was already there keeps its mode through open()
        out.write(text)


def existing_clusters(kind: Path) -> list[str]:
    result = run([str(kind), "get", "clusters"], 30)
    if result.returncode != 0:
        raise BackendUnavailable(f"`kind get clusters` failed: {last_line(result.stderr) or result.returncode}")
    return result.stdout.split()


def kind_binary_version(kind: Path) -> str:
    match = re.search(r"v\d+\.\d+\.\d+\S*", run([str(kind), "version"], 30).stdout)
    return match.group(0) if match else "unknown"


def first_option(options: OptionSource, name: str) -> Any:
    value = options.getoption(name, None)
    if isinstance(value, list | tuple):
        return value[0] if value else None
    return value


def create_kind_backend(options: OptionSource, progress: Progress | None = None) -> KindBackend:
    report = reporter(progress)
    try:
        directory = clusters_dir()
        versions = load_versions(directory)
        release = resolve_release(first_option(options, "calico_version"), versions, load_recipes(directory))
    except BackendUnavailable:
        raise
    except HarnessError as err:
        raise BackendUnavailable(str(err)) from None
    name = cluster_name(options)
    keep = bool(options.getoption("keep_cluster", False))
    kubeconfig_option = options.getoption("kubeconfig", None)
    node_image = options.getoption("kind_image", None) or versions.node_image(release.minor)
    image = versions.agnhost_image

    # Seconds, not minutes: every tool and image is checked before anything slow starts.
    tools = check_kind_tools(
        options.getoption("kind_bin", None),
        options.getoption("kind_kubectl_bin", None),
        versions.kind_version,
        versions.kubectl_version,
    )
    exists = name in existing_clusters(tools.kind)
    check_images(tools.docker, [image] if exists else [node_image, image])
    if not exists:
        problem = url_problem(release.manifest_url(release.recipe.install[0]))
        if problem:
            raise BackendUnavailable(f"the kind backend cannot start:\n  - {problem}")
    return _bring_up(name, keep, kubeconfig_option, node_image, image, release, tools, exists, directory, report)


def _bring_up(
    name: str,
    keep: bool,
    kubeconfig_option: str | None,
    node_image: str,
    image: str,
    release: CalicoRelease,
    tools: KindTools,
    exists: bool,
    directory: Path,
    report: Progress,
) -> KindBackend:
    from pytest_kind import KindCluster

    state_dir = Path(".pytest-kind")
    cleanup: list[Path] = []
    if not state_dir.exists():
        cleanup.append(state_dir.resolve())
    if not (state_dir / name).exists():
        cleanup.insert(0, (state_dir / name).resolve())
    cluster = KindCluster(
        name,
        Path(kubeconfig_option) if kubeconfig_option else None,
        image=node_image,
        kind_path=tools.kind,
        kubectl_path=tools.kubectl,
    )
    # Absolute, so that later kind and kubectl calls do not depend on the working directory.
    kubeconfig = Path(cluster.kubeconfig_path).resolve()
    cluster.kubeconfig_path = kubeconfig
    if not kubeconfig_option and not kubeconfig.exists():
        cleanup.insert(0, kubeconfig)
    created = not exists
    kube: KubeClient | None = None
    try:
        if exists and not kubeconfig_option:
            # A cluster made elsewhere: its kubeconfig may not be where pytest-kind-ng looks.
            result = run([str(tools.kind), "get", "kubeconfig", "--name", name], 30)
            if result.returncode != 0:
                raise BackendUnavailable(f"cannot get the kubeconfig of kind cluster {name}: {last_line(result.stderr)}")
            write_private(kubeconfig, result.stdout)
        message = (
            f"reusing kind cluster {name}"
            if exists
            else f"creating kind cluster {name} ({node_image}, 1 control plane + 2 workers)"
        )
        with heartbeat(report, message):
            try:
                cluster.create(directory / KIND_CONFIG)
            except subprocess.CalledProcessError as err:
                raise BackendError(f"`kind create cluster` failed (exit code {err.returncode}); its output is above") from None
        kube = KubeClient(str(kubeconfig), context=f"kind-{name}")
        target = KindCalicoTarget(tools.kubectl, kubeconfig, kube)
        owned = harness_made(kube)
        if created and not owned:
            # pytest-kind-ng reuses a cluster of that name that appeared meanwhile: not this run's to delete.
            created = False
            raise BackendUnavailable(
                f"kind cluster {name} appeared while this run was creating it, without the harness's node label "
                f"{CLUSTER_LABEL}; it is left alone. Run again, or choose another --cluster-name"
            )
        # Decided before anything is loaded into the cluster: one the harness did not make stays untouched.
        installed = target.installed_version() if exists else None
        step = calico_step(name, installed, release, owned)
        load_image(cluster, tools, image, report)
        if step is CalicoStep.INSTALL:
            install_calico(target, release, report)
        elif step is CalicoStep.UPGRADE:
            report(f"kind cluster {name} has Calico {installed}; upgrading to {release.version}")
            upgrade_calico(target, release, report)
        else:
            wait_until_available(target, release, report, Timeouts())
        backend = KindBackend(
            kube,
            cluster,
            tools,
            target,
            release,
            created=created,
            owned=owned,
            keep=keep,
            node_image=node_image,
            kind_version=kind_binary_version(tools.kind),
            image=image,
            progress=report,
            cleanup_paths=cleanup,
        )
        backend.stop_externals()  # leftovers of an interrupted run on a kept cluster
        return backend
    except BaseException:
        # Ctrl-C included: never leave a half-made cluster behind.
        if kube is not None:
            kube.close()
        if created:
            try:
                delete_cluster(cluster, report, cleanup)
            except BackendError as err:
                log.error("%s", err)
        else:
            remove_paths(cleanup)
        raise


def load_image(cluster: Any, tools: KindTools, image: str, report: Progress) -> None:
    """Put the probe image on every node from the local Docker (pulled once there
    first), instead of every node pulling it."""
    if not image_is_local(tools.docker, image):
        with heartbeat(report, f"pulling {image}"):
            result = run([str(tools.docker), "pull", image], PULL_TIMEOUT)
        if result.returncode != 0:
            raise BackendUnavailable(f"cannot pull {image}: {last_line(result.stderr) or result.returncode}")
    with heartbeat(report, f"loading {image} into kind cluster {cluster.name}"):
        try:
            cluster.load_docker_image(image)
        except subprocess.CalledProcessError as err:
            raise BackendError(f"`kind load docker-image {image}` failed (exit code {err.returncode})") from None
