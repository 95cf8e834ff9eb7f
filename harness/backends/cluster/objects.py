"""The policies of a state that are not Kubernetes NetworkPolicies, on a cluster:
the network-policy-api's cluster-scoped kinds and Calico's ``projectcalico.org/v3``
kinds (enforced and staged), applied, deleted and cleaned up as the backend does
NetworkPolicies and namespaces.

- **Apply.** Each is rendered for the cluster (:mod:`harness.kube.naming`: real
  namespaces and names, the run's mark, cluster-scoped selections scoped to the run's
  namespaces) and sent with server-side apply, field manager ``netpol-harness``,
  strict field validation. On Calico v3.32.0, whose API server cannot create a tiered
  policy with server-side apply (calico#12841), a new tiered policy is created and a
  changed one deleted and created again (:data:`~harness.backends.cluster.enforcement.SSA_CANNOT_CREATE_TIERED`).
- **Diff.** A step sends only what changed from the last state converged to:
  deletes of what is gone, applies of what is new or different.
- **Never taken over.** An object of the same name that the run did not make (a
  BaselineAdminNetworkPolicy ``default`` of someone else: it is a singleton) is
  never replaced: the step is refused before anything changes.
- **Cleaned up.** Every object carries the label and the annotation
  ``netpol-harness.io/run: <run id>``. At the end (success, failure, Ctrl-C: the
  backend's close) every object the run applied is deleted, except those in
  namespaces the run created, which go with them; what could not be deleted is
  listed with the ``kubectl delete`` that removes it. Objects of runs that were killed
  outright are found by that label (both marks must agree) and swept: on kind at the
  start of every run, on existing with ``--sweep-leftovers``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from harness.backends.cluster.enforcement import PolicySupport
from harness.core.calico.policy import CalicoPolicy, StagedPolicy
from harness.core.cluster_policy import ClusterPolicy
from harness.core.errors import HarnessError, UnsupportedPolicy
from harness.core.progress import Progress
from harness.core.state import DesiredState
from harness.kube.api import KubeApi
from harness.kube.manifests import ANNOTATION_RUN
from harness.kube.naming import PREFIX, SCOPE_LABEL, NamespaceMap, ReservedLabel, scope_label_use
from harness.kube.resources import (
    CALICO_GLOBAL_NETWORK_POLICY,
    CALICO_NETWORK_POLICY,
    POLICY_RESOURCES,
    STAGED_GLOBAL_NETWORK_POLICY,
    STAGED_NETWORK_POLICY,
    ApiResource,
    resource_of,
)
from harness.kube.views import ObjectMeta

#: The kinds whose creation by server-side apply Calico v3.32.0 refuses (the four
#: storage.go files projectcalico/calico#12906 fixes).
TIERED = frozenset({CALICO_NETWORK_POLICY, CALICO_GLOBAL_NETWORK_POLICY, STAGED_NETWORK_POLICY, STAGED_GLOBAL_NETWORK_POLICY})

Declared = ClusterPolicy | CalicoPolicy | StagedPolicy


@dataclass(frozen=True)
class PlacedObject:
    """One object of a state, as it goes on the cluster."""

    ref: str
    resource: ApiResource
    namespace: str | None  # on the cluster; None for a cluster-scoped kind
    name: str  # on the cluster
    source: str
    manifest: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False, repr=False)
    declared: Declared | None = field(default=None, hash=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "manifest", MappingProxyType(dict(self.manifest)))

    @property
    def key(self) -> tuple[ApiResource, str | None, str]:
        return (self.resource, self.namespace, self.name)

    def describe(self) -> str:
        return self.resource.describe(self.namespace, self.name)

    def delete_args(self) -> list[str]:
        """kubectl arguments that delete it."""
        args = ["delete", self.resource.kubectl]
        if self.namespace is not None:
            args += ["-n", self.namespace]
        return [*args, self.name]


def declared_objects(state: DesiredState) -> list[tuple[str, Declared]]:
    """Every object of ``state`` that is not a Kubernetes NetworkPolicy, by reference."""
    out: list[tuple[str, Declared]] = list(state.cluster_policies.items())
    out += list(state.calico.items())
    out += list(state.staged.items())
    return out


def render(ref: str, declared: Declared, names: NamespaceMap) -> PlacedObject:
    """``declared`` as it goes on this cluster; :class:`ReservedLabel` when the
    scenario selects the label the harness marks the run with."""
    manifest = declared.manifest
    resource = resource_of(manifest.get("apiVersion"), manifest.get("kind"))
    used = scope_label_use(manifest)
    if used is not None:
        raise ReservedLabel(used)
    if isinstance(declared, ClusterPolicy):
        placed = names.translate_cluster_policy(manifest)
    else:
        placed = names.translate_calico_policy(manifest)
    meta = placed["metadata"]
    namespace = str(meta["namespace"]) if resource.namespaced else None
    return PlacedObject(ref, resource, namespace, str(meta["name"]), declared.source, placed, declared)


class ClusterObjects:
    """The run's objects of :data:`~harness.kube.resources.POLICY_RESOURCES` on one cluster."""

    def __init__(self, kube: KubeApi, names: NamespaceMap, run_id: str, progress: Progress, backend: str = "cluster") -> None:
        self.kube = kube
        self.names = names
        self.run_id = run_id
        self.progress = progress
        self.backend = backend
        #: What this run applied and has not deleted, by reference.
        self.applied: dict[str, PlacedObject] = {}

    # -- one step ---------------------------------------------------------------------

    def render(self, state: DesiredState) -> dict[str, PlacedObject]:
        out = {}
        for ref, declared in declared_objects(state):
            try:
                out[ref] = render(ref, declared, self.names)
            except ReservedLabel as err:
                raise UnsupportedPolicy(self.backend, declared.source or "<inline>", ref, err.path, err.reason) from None
        return out

    def refuse_takeovers(self, wanted: Mapping[str, PlacedObject], created: Collection[str]) -> None:
        """Before anything changes: an object the step would apply whose name is taken
        on the cluster by one the run did not make is refused (in a namespace the run
        created, nobody else's can be)."""
        mine = {placed.key for placed in self.applied.values()}
        for ref, placed in wanted.items():
            if placed.key in mine or (placed.namespace is not None and placed.namespace in created):
                continue
            found = self.kube.read_object(placed.resource, placed.namespace, placed.name)
            if found is None or found.annotations.get(ANNOTATION_RUN) == self.run_id:
                continue
            owner = found.annotations.get(ANNOTATION_RUN)
            whose = f"run {owner} of the harness" if owner else "someone else (it has no mark of the harness)"
            singleton = (
                " (a BaselineAdminNetworkPolicy is a singleton, always named default)"
                if placed.resource.kind == "BaselineAdminNetworkPolicy"
                else ""
            )
            raise UnsupportedPolicy(
                self.backend,
                placed.source or "<inline>",
                ref,
                "metadata.name",
                f"the cluster already has a {placed.describe()}{singleton}, made by {whose}; the harness never replaces "
                "an object it did not make",
            )

    def delete_gone(self, wanted: Mapping[str, PlacedObject]) -> None:
        for ref, placed in list(self.applied.items()):
            if ref not in wanted or wanted[ref].key != placed.key:
                self._delete(placed)
                del self.applied[ref]

    def apply_changed(self, wanted: Mapping[str, PlacedObject], support: PolicySupport) -> None:
        for ref, placed in wanted.items():
            old = self.applied.get(ref)
            if old is not None and dict(old.manifest) == dict(placed.manifest):
                continue
            if placed.resource in TIERED and not support.apply_creates_tiered:
                # calico#12841: server-side apply cannot create it; a create does, and a
                # changed one is made again so that no field of the old one stays.
                if old is not None:
                    self._delete(old)
                self.kube.create_object(placed.resource, placed.manifest)
            else:
                self.kube.apply_object(placed.resource, placed.manifest)
            self.applied[ref] = placed

    def _delete(self, placed: PlacedObject) -> None:
        if not self.kube.delete_object(placed.resource, placed.namespace, placed.name):
            self.progress(f"{placed.describe()} was not there to delete")

    # -- the end of a run -------------------------------------------------------------

    def remove(self, created: Collection[str]) -> list[str]:
        """Delete every object the run applied, except those in namespaces it
        created (deleted with them); the problems, one per object that stays."""
        problems = []
        for ref, placed in list(self.applied.items()):
            if placed.namespace is not None and placed.namespace in created:
                del self.applied[ref]
                continue
            try:
                self.kube.delete_object(placed.resource, placed.namespace, placed.name)
            except HarnessError as err:
                problems.append(str(err))
                continue
            del self.applied[ref]
        return problems

    def leftover_args(self) -> list[list[str]]:
        """kubectl arguments that delete what :meth:`remove` could not."""
        return [placed.delete_args() for placed in self.applied.values()]

    def sweep(
        self, resources: Sequence[ApiResource] = POLICY_RESOURCES, prefixed: bool = False
    ) -> tuple[list[str], list[tuple[str, list[str]]]]:
        """Delete the objects of runs other than this one: labelled and annotated
        with the same other run id (and, with ``prefixed``, named like that run's
        objects on a shared cluster). Returns what was deleted and, for what could
        not be, (problem, kubectl arguments)."""
        swept: list[str] = []
        failed: list[tuple[str, list[str]]] = []
        for resource in resources:
            try:
                found = self.kube.list_objects(resource, SCOPE_LABEL)
            except HarnessError as err:
                failed.append((str(err), ["get", resource.kubectl, "-A", "-l", SCOPE_LABEL]))
                continue
            for meta in found:
                run = leftover_run(meta, resource, self.run_id, prefixed)
                if run is None:
                    continue
                namespace = meta.namespace or None
                what = resource.describe(namespace, meta.name)
                args = ["delete", resource.kubectl, *(["-n", namespace] if namespace else []), meta.name]
                try:
                    self.kube.delete_object(resource, namespace, meta.name)
                except HarnessError as err:
                    failed.append((str(err), args))
                    continue
                self.progress(f"deleting {what}, left over by run {run}")
                swept.append(what)
        return swept, failed


def leftover_run(meta: ObjectMeta, resource: ApiResource, current_run: str, prefixed: bool) -> str | None:
    """The run id of an object another run of the harness made, else None. The
    label and the annotation must name the same run; on a shared cluster
    (``prefixed``) a cluster-scoped object must also be named like that run's
    objects (``nph-<run id>-…``; a BaselineAdminNetworkPolicy is always ``default``)."""
    run = meta.labels.get(SCOPE_LABEL, "")
    if not run or run == current_run or meta.annotations.get(ANNOTATION_RUN) != run:
        return None
    if prefixed and not resource.namespaced and resource.kind != "BaselineAdminNetworkPolicy":
        if not meta.name.startswith(f"{PREFIX}-{run}-"):
            return None
    if prefixed and resource.namespaced and not meta.namespace.startswith(f"{PREFIX}-{run}-"):
        return None
    return run
