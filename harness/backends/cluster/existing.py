"""The ``existing`` backend: a cluster that someone else runs.

Only what the harness creates is touched: namespaces named
``nph-<run id>-<scenario namespace>`` (policies that select namespaces by
``kubernetes.io/metadata.name`` are rewritten to match, see
:mod:`harness.kube.naming`), their pods and their policies. They are deleted when
the run ends, after success, failure or Ctrl-C. External hosts are not available:
a shared cluster has no place to start them, so probes to them are reported as
unsupported. The cluster must allow the safe sysctl
``net.ipv4.ip_unprivileged_port_start`` for pods that serve ports below 1024, and
pods/exec for the harness's user.

A run that is killed outright (SIGKILL, a lost machine) cannot clean up; its
namespaces stay. ``--sweep-leftovers`` deletes them before the run: every
``nph-`` namespace whose run annotation names another run. Only on request, since
on a shared cluster another run of the harness may still be using its own.
"""

from __future__ import annotations

from harness.backends.base import BackendInfo, OptionSource
from harness.backends.cluster.backend import ClusterBackend, new_run_id
from harness.core.errors import BackendError, HarnessError
from harness.core.progress import Progress
from harness.kube.api import KubeApi
from harness.kube.client import KubeClient
from harness.kube.manifests import ANNOTATION_RUN
from harness.kube.naming import PREFIX, NamespaceMap
from harness.kube.probe_script import kubectl_line
from harness.kube.progress import reporter
from harness.kube.versions import load_versions
from harness.kube.views import NamespaceView


class ExistingBackend(ClusterBackend):
    name = "existing"

    def __init__(self, kube: KubeApi, image: str, progress: Progress, kubernetes_version: str, run_id: str) -> None:
        super().__init__(kube, NamespaceMap(run_id), image, progress, adopt_existing_namespaces=False, run_id=run_id)
        self.kubernetes_version = kubernetes_version
        self._cni: dict[str, str] | None = None

    def info(self) -> BackendInfo:
        if self._cni is None:
            self._cni = detect_cni(self.kube)
        return BackendInfo(
            self.name,
            self._cni.get("cni", ""),
            self._cni.get("cni_version", ""),
            self.kubernetes_version,
            {"context": self.kube.context or ""},
        )

    def close(self) -> None:
        self.close_namespaces()

    def sweep_leftovers(self) -> list[str]:
        """Delete the namespaces that earlier runs of the harness left behind (named
        ``nph-…``, annotated with a run id other than this run's); return their names.
        Every one is tried; those that could not be deleted are listed in one error."""
        stale = [(ns, run) for ns in self.kube.list_namespaces() if (run := leftover_run(ns, self.run_id))]
        swept: list[str] = []
        left: list[str] = []
        problems: list[str] = []
        for ns, run in stale:
            name = ns.name
            if ns.meta.deletion_timestamp:
                self.progress(f"namespace {name} of run {run} is already being deleted")
                continue
            try:
                self.kube.delete_namespace(name)
            except HarnessError as err:
                problems.append(str(err))
                left.append(name)
                continue
            self.progress(f"deleting namespace {name}, left over by run {run}")
            swept.append(name)
        if problems:
            kubeconfig, context = self.kubectl_target()
            raise BackendError(
                "--sweep-leftovers could not delete every namespace left by earlier runs:\n"
                + "\n".join(f"  - {problem}" for problem in problems)
                + "\ndelete them with:\n"
                + "\n".join(f"  {kubectl_line(kubeconfig, context, ['delete', 'namespace', name])}" for name in left)
            )
        return swept


def leftover_run(namespace: NamespaceView, current_run: str) -> str | None:
    """The run id of a namespace that another run of the harness created, else None
    (a namespace that is not the harness's, or one of this run's). Both marks must
    agree: the name ``nph-<run id>-…`` and the annotation with that run id."""
    run = namespace.meta.annotations.get(ANNOTATION_RUN, "")
    if not run or run == current_run or not namespace.name.startswith(f"{PREFIX}-{run}-"):
        return None
    return run


def detect_cni(kube: KubeApi) -> dict[str, str]:
    """Which CNI the cluster runs, from the image tag of its node agent's DaemonSet."""
    images = kube.daemonset_images(("calico-node", "cilium"), ("calico-system", "kube-system"))
    for daemonset, cni in (("calico-node", "calico"), ("cilium", "cilium")):
        if daemonset in images:
            tag = images[daemonset].split("@", 1)[0].rpartition(":")[2]
            return {"cni": cni, "cni_version": tag}
    return {"cni": "unknown", "cni_version": ""}


def create_existing_backend(options: OptionSource, progress: Progress | None = None) -> ExistingBackend:
    report = reporter(progress)
    image = load_versions().agnhost_image
    kube = KubeClient(options.getoption("kubeconfig", None))
    try:
        version = kube.server_version(timeout=10)
    except BaseException:
        kube.close()
        raise
    run_id = new_run_id()
    report(
        f"using the cluster of context {kube.context or '(current)'} at {kube.server} (Kubernetes {version}); "
        f"namespaces of this run are named nph-{run_id}-<namespace>"
    )
    backend = ExistingBackend(kube, image, report, version, run_id)
    if options.getoption("sweep_leftovers", False):
        try:
            swept = backend.sweep_leftovers()
        except BaseException:
            kube.close()
            raise
        report(f"--sweep-leftovers: deleted {len(swept)} namespace(s) of earlier runs" if swept else "--sweep-leftovers: none")
    return backend
