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
namespaces stay, and so do its cluster-scoped policies (harmless to others: they
are scoped to that run's namespaces) and Calico policies. ``--sweep-leftovers``
deletes them before the run: every ``nph-`` namespace whose run annotation names
another run, and every policy object labelled and annotated with such a run
(harness.backends.cluster.objects). Only on request, since on a shared cluster
another run of the harness may still be using its own.
"""

from __future__ import annotations

from harness.backends.base import BackendInfo, OptionSource
from harness.backends.cluster.backend import ClusterBackend, new_run_id
from harness.backends.cluster.enforcement import PolicySupport, calico_support, minor_of, unknown_support
from harness.backends.shield import interrupts_held
from harness.core.errors import BackendError, BackendUnavailable, HarnessError
from harness.core.progress import Progress
from harness.kube.api import KubeApi
from harness.kube.calico import load_recipes
from harness.kube.client import KubeClient
from harness.kube.manifests import ANNOTATION_RUN
from harness.kube.naming import PREFIX, NamespaceMap
from harness.kube.probe_script import kubectl_line
from harness.kube.progress import reporter
from harness.kube.versions import clusters_dir, load_versions
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
        with interrupts_held("removing the namespaces this run created", self.progress):
            self.close_namespaces()

    def policy_support(self) -> PolicySupport:
        """Decided from what :func:`detect_cni` finds and the recipes: Calico of a minor
        version with a recipe enforces what the recipe says; anything else is not known
        to enforce any kind beyond NetworkPolicy, whatever CRDs the cluster has. Each
        CRD (and each Calico kind) must also be there, which the check asks."""
        if self._cni is None:
            self._cni = detect_cni(self.kube)
        cni, version = self._cni.get("cni", "unknown"), self._cni.get("cni_version", "")
        found = f"the cluster's CNI, from its node agent's DaemonSet: {cni} {version}".rstrip()
        if cni != "calico":
            return unknown_support(
                f"{cni} {version}".strip() if cni != "unknown" else "an unknown CNI",
                f"{found}; the harness knows which of these kinds Calico versions enforce (clusters/calico/*/recipe.yaml), "
                "not what this CNI does, and a CRD alone enforces nothing",
            )
        minor = minor_of(version)
        recipes = load_recipes(clusters_dir())
        if minor is None or minor not in recipes:
            return unknown_support(
                f"Calico {version}".strip(),
                f"{found}; no recipe in clusters/calico/ records what Calico {minor or version or '(version unknown)'} "
                f"enforces (recipes: {', '.join(sorted(recipes))})",
                calico=True,
            )
        return calico_support(version, recipes[minor], basis=found)

    def sweep_leftovers(self) -> tuple[list[str], list[str]]:
        """Delete what earlier runs of the harness left behind: namespaces (named
        ``nph-…``, annotated with a run id other than this run's) and the
        cluster-scoped and Calico policies marked with such a run id (see
        harness.backends.cluster.objects); return both, by name. Every one is tried;
        those that could not be deleted are listed in one error."""
        stale = [(ns, run) for ns in self.kube.list_namespaces() if (run := leftover_run(ns, self.run_id))]
        swept: list[str] = []
        problems: list[str] = []
        commands: list[list[str]] = []
        objects, failed = self.objects.sweep(prefixed=True)
        for problem, args in failed:
            problems.append(problem)
            commands.append(args)
        for ns, run in stale:
            name = ns.name
            if ns.meta.deletion_timestamp:
                self.progress(f"namespace {name} of run {run} is already being deleted")
                continue
            try:
                self.kube.delete_namespace(name)
            except HarnessError as err:
                problems.append(str(err))
                commands.append(["delete", "namespace", name])
                continue
            self.progress(f"deleting namespace {name}, left over by run {run}")
            swept.append(name)
        if problems:
            kubeconfig, context = self.kubectl_target()
            raise BackendError(
                "--sweep-leftovers could not delete everything earlier runs left:\n"
                + "\n".join(f"  - {problem}" for problem in problems)
                + "\ndelete it with:\n"
                + "\n".join(f"  {kubectl_line(kubeconfig, context, args)}" for args in commands)
            )
        return swept, objects


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
    if options.getoption("deny_action", None) == "reject":
        raise BackendUnavailable(
            "--deny-action reject is for kind clusters the harness creates: it changes Calico's FelixConfiguration, "
            "which on a cluster someone else runs is not the harness's to change"
        )
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
            namespaces, objects = backend.sweep_leftovers()
        except BaseException:
            kube.close()
            raise
        parts = [f"{len(namespaces)} namespace(s)"] if namespaces else []
        parts += [f"{len(objects)} policy object(s)"] if objects else []
        report(f"--sweep-leftovers: deleted {' and '.join(parts)} of earlier runs" if parts else "--sweep-leftovers: none")
    return backend
