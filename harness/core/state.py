"""The state a step brings a cluster to, and the changes that lead there.

:class:`DesiredState` is what a backend converges to: the topology with the labels
in force, the Kubernetes NetworkPolicies in force, the Calico policies in force
(promoted from staged ones) and the staged policies, which are stored but never
enforced. :class:`StepChanges` is what a scenario step declares (delete, apply,
promote, relabel); :meth:`DesiredState.after` applies it. Both are pure and
immutable; the scenario loader computes every step's state once.

References name an object in ``delete:`` and ``promote:``: a Kubernetes
NetworkPolicy is ``namespace/name``; other kinds are prefixed with their kind,
``ClusterNetworkPolicy/name``, ``AdminNetworkPolicy/name``,
``StagedNetworkPolicy/namespace/name``, ``StagedGlobalNetworkPolicy/name``,
``projectcalico.org/NetworkPolicy/namespace/name``...
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from types import MappingProxyType

from harness.core.calico.conversion import ModelPolicies, model_policies
from harness.core.calico.enforcement import EnforcedPolicies, enforce
from harness.core.calico.policy import CalicoPolicy, EnforcedKind, PolicyKey, StagedPolicy
from harness.core.cluster_policy import ClusterPolicy
from harness.core.errors import HarnessError
from harness.core.policy import NetworkPolicy
from harness.core.topology import Topology, apply_label_changes

LabelChanges = Mapping[str, str | None]
#: What a step may apply.
Manifest = NetworkPolicy | ClusterPolicy | StagedPolicy


def object_ref(obj: NetworkPolicy | ClusterPolicy | StagedPolicy | CalicoPolicy) -> str:
    """How ``delete:`` and ``promote:`` name an object (see the module docstring)."""
    if isinstance(obj, NetworkPolicy | ClusterPolicy):
        return obj.ref
    if isinstance(obj, StagedPolicy):
        return f"{obj.kind.value}/{obj.ref}"
    return calico_ref(obj.key)


def calico_ref(key: PolicyKey) -> str:
    kind = "GlobalNetworkPolicy" if key.kind is EnforcedKind.CALICO_GLOBAL_NETWORK_POLICY else "NetworkPolicy"
    return f"projectcalico.org/{kind}/{key.ref}"


@dataclass(frozen=True)
class StateOrigin:
    """Where a state is declared: for reproduce commands and progress messages."""

    source: str  # the scenario file, as shown to the user
    scenario: str
    step: str


@dataclass(frozen=True)
class StepChanges:
    """What one step changes, in the documented order: delete objects (by
    reference), apply manifests, promote staged policies to their enforced form,
    then relabel namespaces and pods (a value sets a label, None removes it)."""

    apply: tuple[Manifest, ...] = ()
    delete: tuple[str, ...] = ()
    label_namespaces: Mapping[str, LabelChanges] = field(default_factory=dict, hash=False)
    label_pods: Mapping[str, LabelChanges] = field(default_factory=dict, hash=False)
    promote: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "label_namespaces", _frozen_changes(self.label_namespaces))
        object.__setattr__(self, "label_pods", _frozen_changes(self.label_pods))

    @property
    def empty(self) -> bool:
        return not (self.apply or self.delete or self.promote or self.label_namespaces or self.label_pods)

    @property
    def network_policies(self) -> tuple[NetworkPolicy, ...]:
        return tuple(m for m in self.apply if isinstance(m, NetworkPolicy))


def _frozen_changes(changes: Mapping[str, LabelChanges]) -> Mapping[str, LabelChanges]:
    return MappingProxyType({key: MappingProxyType(dict(value)) for key, value in changes.items()})


def _frozen(mapping: Mapping[str, object]) -> Mapping[str, object]:
    return MappingProxyType(dict(sorted(mapping.items())))


@dataclass(frozen=True)
class DesiredState:
    """Labels and policies in force, each kind keyed by its reference and ordered
    by it; ``origin`` does not take part in comparisons."""

    topology: Topology
    policies: Mapping[str, NetworkPolicy] = field(default_factory=dict, hash=False)
    #: The network-policy-api's cluster-scoped kinds (Admin and Baseline tiers).
    cluster_policies: Mapping[str, ClusterPolicy] = field(default_factory=dict, hash=False)
    calico: Mapping[str, CalicoPolicy] = field(default_factory=dict, hash=False)
    staged: Mapping[str, StagedPolicy] = field(default_factory=dict, hash=False)
    origin: StateOrigin | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name in ("policies", "cluster_policies", "calico", "staged"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    @property
    def policy_list(self) -> tuple[NetworkPolicy, ...]:
        """The Kubernetes NetworkPolicies in force."""
        return tuple(self.policies.values())

    @property
    def refs(self) -> tuple[str, ...]:
        """Every object in force, staged ones included, by reference."""
        return (*self.policies, *self.cluster_policies, *self.calico, *self.staged)

    @cached_property
    def modelled(self) -> ModelPolicies:
        """What is enforced, as NetworkPolicies (Calico policies translated): what the
        reference model and the emulated backend evaluate. Staged policies are not in it."""
        return model_policies(self.enforced, self.topology)

    @property
    def effective_policies(self) -> tuple[NetworkPolicy, ...]:
        return self.modelled.policies

    @property
    def enforced(self) -> EnforcedPolicies:
        return EnforcedPolicies(self.policies, {p.key: p for p in self.calico.values()})

    def when_enforced(self) -> DesiredState:
        """This state with every staged policy enforced, as a team does when moving
        from audit to enforce (and none left staged)."""
        enforced, _ = enforce(self.enforced, self.staged.values())
        return self._with_enforced(enforced, {})

    def _with_enforced(self, enforced: EnforcedPolicies, staged: Mapping[str, StagedPolicy]) -> DesiredState:
        calico = {calico_ref(key): policy for key, policy in enforced.calico.items()}
        return replace(self, policies=dict(enforced.kubernetes), calico=calico, staged=staged)

    @property
    def cluster_policy_list(self) -> tuple[ClusterPolicy, ...]:
        return tuple(self.cluster_policies.values())

    def with_policies(self, policies: Iterable[Manifest]) -> DesiredState:
        merged = dict(self.policies)
        cluster = dict(self.cluster_policies)
        staged = dict(self.staged)
        for policy in policies:
            if isinstance(policy, NetworkPolicy):
                merged[policy.ref] = policy
            elif isinstance(policy, ClusterPolicy):
                cluster[policy.ref] = policy
            else:
                staged[object_ref(policy)] = policy
        return replace(self, policies=merged, cluster_policies=cluster, staged=staged)

    def without_policies(self, refs: Iterable[str]) -> DesiredState:
        refs = set(refs)
        return replace(
            self,
            policies={k: v for k, v in self.policies.items() if k not in refs},
            cluster_policies={k: v for k, v in self.cluster_policies.items() if k not in refs},
            calico={k: v for k, v in self.calico.items() if k not in refs},
            staged={k: v for k, v in self.staged.items() if k not in refs},
        )

    def promoted(self, refs: Iterable[str]) -> DesiredState:
        """Each staged policy of ``refs`` replaced by its enforced form."""
        state = self
        for ref in refs:
            staged = state.staged.get(ref)
            if staged is None:
                raise HarnessError(f"no staged policy {ref} is in force")
            enforced, _ = enforce(state.enforced, [staged])
            state = state._with_enforced(enforced, {k: v for k, v in state.staged.items() if k != ref})
        return state

    def relabel_namespace(self, name: str, changes: LabelChanges) -> DesiredState:
        labels = apply_label_changes(self.topology.namespace(name).labels, changes)
        return replace(self, topology=self.topology.with_namespace_labels(name, labels))

    def relabel_pod(self, pod_id: str, changes: LabelChanges) -> DesiredState:
        labels = apply_label_changes(self.topology.pod(pod_id).labels, changes)
        return replace(self, topology=self.topology.with_pod_labels(pod_id, labels))

    def after(self, changes: StepChanges, origin: StateOrigin | None = None) -> DesiredState:
        """The state once ``changes`` are made, in the documented order."""
        state = self.without_policies(changes.delete).with_policies(changes.apply).promoted(changes.promote)
        for ns, label_changes in changes.label_namespaces.items():
            state = state.relabel_namespace(ns, label_changes)
        for pod_id, label_changes in changes.label_pods.items():
            state = state.relabel_pod(pod_id, label_changes)
        return replace(state, origin=origin if origin is not None else self.origin)
