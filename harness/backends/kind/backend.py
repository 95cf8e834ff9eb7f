"""The kind backend: cluster life cycle, Calico, the probe image and the external hosts.

``create_kind_backend`` checks every tool and image first (seconds), then creates
or reuses the cluster, puts the probe image on its nodes, installs Calico and waits
for it. Whatever goes wrong on the way, including Ctrl-C, a cluster it created is
deleted again; a cluster it did not create is never deleted.

kind runs through :class:`harness.kube.kind.KindCli` (every command with a time
limit); pytest-kind-ng provides the options (``--cluster-name``, ``--keep-cluster``,
``--kubeconfig``, ``--kind-image``, ``--kind-bin``, ``--kind-kubectl-bin``) and its
``.pytest-kind/<name>`` directory convention. The Python client and every kubectl
call name the cluster's kubeconfig and its kind context.

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
import tempfile
from pathlib import Path
from typing import Any

from harness.backends.base import BackendInfo, OptionSource
from harness.backends.cluster.backend import ClusterBackend
from harness.backends.cluster.enforcement import PolicySupport, calico_support
from harness.backends.kind import cluster_name
from harness.backends.shield import interrupts_held
from harness.core.errors import BackendError, BackendUnavailable, HarnessError
from harness.core.progress import Progress
from harness.core.topology import ExternalHost
from harness.kube.api import KubeApi
from harness.kube.calico import (
    V1_MODE_CRD,
    CalicoRelease,
    DenyAction,
    Timeouts,
    deny_action_manifest,
    deny_action_of,
    install_calico,
    load_recipes,
    parse_minor,
    resolve_release,
    upgrade_calico,
    wait_until_available,
)
from harness.kube.externals import ExternalHosts
from harness.kube.kind import ClusterAccess, KindCli
from harness.kube.naming import NamespaceMap
from harness.kube.progress import heartbeat, reporter
from harness.kube.resources import FELIX_CONFIGURATION
from harness.kube.tools import (
    ImageTransfer,
    KindTools,
    check_images,
    check_kind_tools,
    image_is_local,
    image_transfer,
    kubectl_client_version,
    last_line,
    run,
    save_command,
    url_problem,
)
from harness.kube.versions import clusters_dir, kubernetes_version_of, load_versions
from harness.kube.views import InstallationView, TigeraStatusView, ready_nodes

log = logging.getLogger("harness.kube")

KIND_CONFIG = "kind-calico.yaml"
#: The node label that ``clusters/kind-calico.yaml`` sets: the cluster was made by the harness.
CLUSTER_LABEL = "netpol-harness.io/cluster"
CLUSTER_LABEL_VALUE = "kind-calico"
#: Seconds for one kubectl call of the Calico install (it downloads a manifest).
KUBECTL_TIMEOUT = 300.0
#: Seconds for pulling the probe image into the local Docker, and for saving it.
PULL_TIMEOUT = 600.0
SAVE_TIMEOUT = 300.0
#: Namespaces the cluster's own components run in: Kubernetes' (kube-system,
#: kube-public, kube-node-lease), kind's storage provisioner (local-path-storage) and
#: Calico's (tigera-operator from tigera-operator.yaml; calico-system and
#: calico-apiserver, created by the operator). A scenario namespace of one of these
#: names gets a namespace of its own on the cluster (see harness/kube/naming.py).
SYSTEM_NAMESPACES = (
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
    "tigera-operator",
    "calico-system",
    "calico-apiserver",
)


class KindCalicoTarget:
    """The cluster as Calico's installer sees it: kubectl and a few status reads,
    all through the same kubeconfig and context."""

    def __init__(self, kubectl: Path, access: ClusterAccess, kube: KubeApi) -> None:
        self.kubectl_path = kubectl
        self.access = access
        self.kube = kube

    def command(self, *args: str) -> list[str]:
        return self.access.kubectl(self.kubectl_path, *args)

    def kubectl(self, *args: str) -> str:
        result = run(self.command(*args), KUBECTL_TIMEOUT)
        if result.returncode != 0:
            raise BackendError(
                f"`kubectl {' '.join(args)}` failed (exit code {result.returncode}): "
                f"{result.stderr.strip()[-800:] or result.stdout.strip()[-800:]}"
            )
        return result.stdout

    def tigera_statuses(self) -> list[TigeraStatusView]:
        return self.kube.tigera_statuses()

    def installation(self) -> InstallationView | None:
        return self.kube.installation()

    def node_readiness(self) -> tuple[int, int]:
        return ready_nodes(self.kube.nodes())

    def crd_mode(self) -> str:
        return "v1" if self.kube.crd_exists(V1_MODE_CRD) else "v3"

    def diagnostics(self) -> str:
        parts = []
        for args in (
            ("get", "tigerastatus", "-o", "wide"),
            ("get", "installations.operator.tigera.io", "default", "-o", "jsonpath={.status}"),
            ("get", "pods", "-A", "-o", "wide"),
        ):
            result = run(self.command(*args), 30)
            parts.append(f"$ kubectl {' '.join(args)}\n{(result.stdout or result.stderr).strip()[-3000:]}")
        return "\n".join(parts)

    def installed_version(self) -> str | None:
        """``status.calicoVersion`` of the operator's Installation, None without one
        (no Calico, or one not yet available)."""
        installation = self.kube.installation()
        return installation.calico_version or None if installation is not None else None


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
    installed through the operator, or one that never became available). A CNI is
    installed or upgraded only in a cluster the harness made (``owned``), and never
    downgraded. Installing is idempotent: a half-installed cluster is installed again."""
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


def harness_made(kube: KubeApi) -> bool:
    """Whether the cluster's nodes carry the label of ``clusters/kind-calico.yaml``."""
    return any(node.meta.labels.get(CLUSTER_LABEL) == CLUSTER_LABEL_VALUE for node in kube.nodes())


def kubernetes_minor(kube: KubeApi, node_image: str) -> tuple[int, int] | None:
    """The cluster's Kubernetes minor version: the API server's, else the node image's tag."""
    for version in (_server_version(kube), kubernetes_version_of(node_image)):
        match = re.match(r"v?(\d+)\.(\d+)", version)
        if match:
            return parse_minor(f"{match.group(1)}.{match.group(2)}")
    return None


def _server_version(kube: KubeApi) -> str:
    try:
        return kube.server_version()
    except HarnessError:
        return ""


class KindBackend(ClusterBackend):
    name = "kind"

    def __init__(
        self,
        kube: KubeApi,
        kind: KindCli,
        cluster: str,
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
        deny_action: DenyAction = DenyAction.DROP,
    ) -> None:
        super().__init__(kube, NamespaceMap(reserved=SYSTEM_NAMESPACES), image, progress, adopt_existing_namespaces=True)
        #: How Felix denies on this cluster; with REJECT a refused probe is a blocked one.
        self.deny_action = deny_action
        self.rejects = deny_action is DenyAction.REJECT
        self.kind = kind
        self.cluster = cluster
        self.tools = tools
        self.target = target
        #: The release the cluster is known to run: the Installation reported it.
        self.release = release
        #: This run created the cluster: close() deletes it (unless kept).
        self.created = created
        #: The harness made the cluster (this run or an earlier one): its CNI may be changed.
        self.owned = owned
        self.keep = keep
        self.node_image = node_image
        self.kind_version = kind_version
        self.cleanup_paths = cleanup_paths
        self.externals = ExternalHosts(tools.docker, tools.kind, cluster, image, progress)
        #: Limits of the waits for Calico after an upgrade.
        self.timeouts = Timeouts()
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
        return str(self.target.access.kubeconfig), self.target.access.context

    def policy_support(self) -> PolicySupport:
        """The release the harness installed, judged by its recipe."""
        return calico_support(self.release.version, self.release.recipe)

    def info(self) -> BackendInfo:
        if not self._kubernetes_version:
            self._kubernetes_version = _server_version(self.kube) or kubernetes_version_of(self.node_image)
        return BackendInfo(
            self.name,
            "calico",
            self.release.version,
            self._kubernetes_version,
            {
                "kind_version": self.kind_version,
                "node_image": self.node_image,
                "cluster": self.cluster,
                # Only when it is not Calico's default: a report then says why refusals were blocks.
                **({"deny_action": self.deny_action.value} if self.rejects else {}),
            },
        )

    def upgrade_calico(self, to_version: str) -> None:
        """Upgrade this cluster's Calico (server-side apply of the target version's
        upgrade manifests, as its upgrade guide does) and wait until the operator
        reports the target release running and every component settled. Only on a
        cluster the harness made, and never to an older release. Until that wait
        is over, the backend still reports the release it ran before, so nothing
        labelled with the new version runs on the old one."""
        directory = clusters_dir()
        release = resolve_release(to_version, load_versions(directory), load_recipes(directory))
        installed = self.target.installed_version() or self.release.version
        step = calico_step(self.cluster, installed, release, self.owned)
        kubernetes = kubernetes_minor(self.kube, self.node_image)
        if step is CalicoStep.UPGRADE:
            upgrade_calico(self.target, release, self.progress, kubernetes, self.timeouts)
        else:
            wait_until_available(self.target, release, self.progress, self.timeouts)
        running = self.target.installed_version()
        if running != release.version:
            raise BackendError(
                f"the Calico upgrade to {release.version} ended, but installations.operator.tigera.io/default "
                f"reports {running or 'no calicoVersion'}"
            )
        self.release = release
        if self._support is not None:
            # Another version enforces other kinds (3.31 → 3.32: AdminNetworkPolicy no
            # more), and may install other CRDs: judged and asked again.
            self._support.forget(self.policy_support())

    def reproduce_note(self) -> str:
        if self.created and not self.keep:
            return (
                f"kind cluster {self.cluster} is deleted at the end of the session; to run these commands, "
                "run again with --keep-cluster"
            )
        return ""

    def close(self) -> None:
        """Delete the cluster if this run created it and it is not kept; otherwise
        remove only what the run put on it. A cluster this run did not create is
        never deleted."""
        if self._done:
            return
        self._done = True
        with interrupts_held(f"removing what this run put on kind cluster {self.cluster}", self.progress):
            self._close()

    def _close(self) -> None:
        if self.created and not self.keep:
            try:
                self.stop_externals()
            finally:
                self.kube.close()
                delete_cluster(self.kind, self.cluster, self.target.access.kubeconfig, self.progress, self.cleanup_paths)
            return
        try:
            self.close_namespaces()
        finally:
            if not self.keep:
                remove_paths(self.cleanup_paths)  # the kubeconfig written for a borrowed cluster
            elif self.created:
                # Its kubeconfig stays: the reproduce commands of the run's reports name it.
                self.progress(
                    f"kept kind cluster {self.cluster} (Calico {self.release.version}): a later run with the same "
                    "--cluster-name and --calico-version options and --keep-cluster reuses it; delete it with "
                    f"`kind delete cluster --name {self.cluster}`"
                )


def delete_cluster(kind: KindCli, cluster: str, kubeconfig: Path, progress: Progress, cleanup_paths: list[Path]) -> None:
    try:
        with heartbeat(progress, f"deleting kind cluster {cluster}"):
            try:
                kind.delete(cluster, kubeconfig)
            except HarnessError as err:
                raise BackendError(
                    f"could not delete kind cluster {cluster} ({err}); delete it with `kind delete cluster --name {cluster}`"
                ) from None
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


def first_option(options: OptionSource, name: str) -> Any:
    value = options.getoption(name, None)
    if isinstance(value, list | tuple):
        return value[0] if value else None
    return value


def preflight_report(tools: KindTools, kubectl_version: str | None, node_image: str, image: str) -> list[str]:
    """What the run will rely on, said before anything slow starts: the Docker daemon
    and its image store, how the probe image gets into the nodes, kubectl's skew."""
    info = tools.docker_info
    lines = [f"{info.describe()}: {image} goes into the nodes as {image_transfer(info).value}"]
    node = kubernetes_version_of(node_image)
    if kubectl_version and node:
        have, want = re.match(r"v?\d+\.(\d+)", kubectl_version), re.match(r"v?\d+\.(\d+)", node)
        if have and want and abs(int(have.group(1)) - int(want.group(1))) > 1:
            lines.append(
                f"warning: kubectl {kubectl_version} is more than one minor version away from the nodes' Kubernetes "
                f"{node} (kubectl supports one minor version of skew); install the kubectl pinned in clusters/versions.env"
            )
    return lines


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
    kind = KindCli(tools.kind)
    exists = name in kind.clusters()
    check_images(tools.docker, [image] if exists else [node_image, image])
    if not exists:
        problem = url_problem(release.manifest_url(release.recipe.install[0].name))
        if problem:
            raise BackendUnavailable(f"the kind backend cannot start:\n  - {problem}")
    for line in preflight_report(tools, kubectl_client_version(tools.kubectl), node_image, image):
        report(line)
    deny_action = DenyAction(options.getoption("deny_action", None) or DenyAction.DROP.value)
    return _bring_up(name, keep, kubeconfig_option, node_image, image, release, tools, exists, directory, report, deny_action)


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
    deny_action: DenyAction = DenyAction.DROP,
) -> KindBackend:
    from harness.kube.client import KubeClient

    kind = KindCli(tools.kind)
    # pytest-kind-ng's layout: .pytest-kind/<name>/kubeconfig, unless --kubeconfig says otherwise.
    state_dir = Path(".pytest-kind")
    cleanup: list[Path] = []
    if not state_dir.exists():
        cleanup.append(state_dir.resolve())
    if not (state_dir / name).exists():
        cleanup.insert(0, (state_dir / name).resolve())
    # Absolute, so that later kind and kubectl calls do not depend on the working directory.
    kubeconfig = (Path(kubeconfig_option) if kubeconfig_option else state_dir / name / "kubeconfig").resolve()
    if not kubeconfig_option and not kubeconfig.exists():
        cleanup.insert(0, kubeconfig)
    access = ClusterAccess.of(name, kubeconfig)
    created = not exists
    kube: KubeApi | None = None
    try:
        if exists:
            if not kubeconfig_option:
                # A cluster made elsewhere: its kubeconfig may not be where this run looks.
                write_private(kubeconfig, kind.kubeconfig(name))
            report(f"reusing kind cluster {name}")
        else:
            if not kubeconfig.exists():
                write_private(kubeconfig, "")
            with heartbeat(report, f"creating kind cluster {name} ({node_image}, 1 control plane + 2 workers)"):
                kind.create(name, directory / KIND_CONFIG, node_image, kubeconfig)
        kube = KubeClient(str(access.kubeconfig), context=access.context)
        target = KindCalicoTarget(tools.kubectl, access, kube)
        owned = harness_made(kube)
        if created and not owned:
            # A cluster of that name that appeared meanwhile: not this run's to delete.
            created = False
            raise BackendUnavailable(
                f"kind cluster {name} appeared while this run was creating it, without the harness's node label "
                f"{CLUSTER_LABEL}; it is left alone. Run again, or choose another --cluster-name"
            )
        # Decided before anything is loaded into the cluster: one the harness did not make stays untouched.
        installed = target.installed_version() if exists else None
        step = calico_step(name, installed, release, owned)
        load_image(kind, tools, name, image, report)
        kubernetes = kubernetes_minor(kube, node_image)
        if step is CalicoStep.INSTALL:
            install_calico(target, release, report, kubernetes)
        elif step is CalicoStep.UPGRADE:
            report(f"kind cluster {name} has Calico {installed}; upgrading to {release.version}")
            upgrade_calico(target, release, report, kubernetes)
        else:
            wait_until_available(target, release, report, Timeouts())
        configure_deny_action(kube, deny_action, name, owned, report)
        backend = KindBackend(
            kube,
            kind,
            name,
            tools,
            target,
            release,
            created=created,
            owned=owned,
            keep=keep,
            node_image=node_image,
            kind_version=kind.version(),
            image=image,
            progress=report,
            cleanup_paths=cleanup,
            deny_action=deny_action,
        )
        backend.stop_externals()  # leftovers of an interrupted run on a kept cluster
        if exists:
            # A reused cluster is the harness's (or runs the Calico asked for): cluster-scoped
            # and Calico policies that a killed run left go first. They are scoped to that
            # run's namespaces, but a BaselineAdminNetworkPolicy's name is the one every run needs.
            for swept in backend.sweep_leftover_objects(prefixed=False):
                log.info("swept %s", swept)
        return backend
    except BaseException:
        # Ctrl-C included: never leave a half-made cluster behind.
        if kube is not None:
            kube.close()
        if created:
            try:
                delete_cluster(kind, name, kubeconfig, report, cleanup)
            except BackendError as err:
                log.error("%s", err)
        else:
            remove_paths(cleanup)
        raise


def configure_deny_action(kube: KubeApi, wanted: DenyAction, cluster: str, owned: bool, report: Progress) -> None:
    """Felix's deny action as ``--deny-action`` asks (harness.kube.calico.DenyAction).
    Only on a cluster the harness made, and only from DROP to REJECT: while Felix
    restarts to apply it, a blocked probe still times out, which counts as blocked
    under REJECT too. The other way, a refusal would be read as "refused" until Felix
    has restarted, so a cluster set to REJECT by an earlier run is not switched back."""
    current = deny_action_of(kube.felix_configuration())
    if current is wanted:
        if wanted is DenyAction.REJECT:
            report(f"kind cluster {cluster}: Felix denies with REJECT (--deny-action reject): blocked probes end at once")
        return
    delete = f"`kind delete cluster --name {cluster}`"
    if wanted is DenyAction.DROP:
        raise BackendUnavailable(
            f"kind cluster {cluster}'s Felix denies with REJECT (FelixConfiguration default, set by an earlier run with "
            f"--deny-action reject); run with --deny-action reject, or delete the cluster with {delete}"
        )
    if not owned:
        raise BackendUnavailable(
            f"kind cluster {cluster} was not created by netpol-harness (its nodes lack the label "
            f"{CLUSTER_LABEL}={CLUSTER_LABEL_VALUE}): --deny-action reject changes Calico's configuration, which the "
            "harness does only on clusters it created"
        )
    kube.apply_object(FELIX_CONFIGURATION, deny_action_manifest(wanted))
    report(
        f"kind cluster {cluster}: Felix now denies with REJECT (--deny-action reject, FelixConfiguration default): a blocked "
        "probe is refused at once and counts as blocked; production Calico drops"
    )


def load_image(kind: KindCli, tools: KindTools, cluster: str, image: str, report: Progress) -> None:
    """Put the probe image on every node from the local Docker (pulled once there
    first), as an archive of the nodes' platform only (see ImageTransfer), instead
    of every node pulling it; with a daemon that can make no such archive, the
    nodes pull it."""
    if not image_is_local(tools.docker, image):
        with heartbeat(report, f"pulling {image}"):
            result = run([str(tools.docker), "pull", image], PULL_TIMEOUT)
        if result.returncode != 0:
            raise BackendUnavailable(f"cannot pull {image}: {last_line(result.stderr) or result.returncode}")
    transfer = image_transfer(tools.docker_info)
    if transfer is ImageTransfer.NODES_PULL:
        report(
            f"{tools.docker_info.describe()} cannot save one platform of an image (docker image save --platform needs "
            f"API 1.48): the nodes pull {image} themselves"
        )
        return
    with tempfile.TemporaryDirectory(prefix="netpol-harness-image-") as scratch:
        archive = Path(scratch) / "probe-image.tar"
        command = save_command(tools.docker, image, archive, transfer, tools.docker_info.platform)
        assert command is not None  # NODES_PULL returned above
        with heartbeat(report, f"loading {image} ({tools.docker_info.platform}) into kind cluster {cluster}"):
            result = run(command, SAVE_TIMEOUT)
            if result.returncode != 0:
                said = last_line(result.stderr) or last_line(result.stdout) or f"exit code {result.returncode}"
                raise BackendError(f"`{' '.join(command[1:])}` failed: {said}")
            kind.load_archive(cluster, archive)
