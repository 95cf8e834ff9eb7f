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
"""

from __future__ import annotations

from harness.backends.base import OptionSource
from harness.kube.client import KubeClient
from harness.kube.cluster import ClusterBackend, new_run_id
from harness.kube.naming import NamespaceMap
from harness.kube.progress import Progress, reporter
from harness.kube.versions import load_versions


class ExistingBackend(ClusterBackend):
    name = "existing"

    def __init__(self, kube: KubeClient, image: str, progress: Progress, kubernetes_version: str, run_id: str) -> None:
        super().__init__(kube, NamespaceMap(run_id), image, progress, adopt_existing_namespaces=False, run_id=run_id)
        self.kubernetes_version = kubernetes_version
        self._cni: dict[str, str] | None = None

    def describe(self) -> dict[str, str]:
        if self._cni is None:
            self._cni = detect_cni(self.kube)
        return {
            "backend": self.name,
            **self._cni,
            "kubernetes_version": self.kubernetes_version,
            "context": self.kube.context or "",
        }

    def close(self) -> None:
        self.close_namespaces()


def detect_cni(kube: KubeClient) -> dict[str, str]:
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
    return ExistingBackend(kube, image, report, version, run_id)
