"""The state a step brings a cluster to, and the changes that lead there.

:class:`DesiredState` is what a backend converges to: the topology with the labels
in force and the policies in force. :class:`StepChanges` is what a scenario step
declares (delete, apply, relabel); :meth:`DesiredState.after` applies it. Both are
pure and immutable; the scenario loader computes every step's state once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from harness.core.policy import NetworkPolicy
from harness.core.topology import Topology, apply_label_changes

LabelChanges = Mapping[str, str | None]


@dataclass(frozen=True)
class StateOrigin:
    """Where a state is declared: for reproduce commands and progress messages."""

    source: str  # the scenario file, as shown to the user
    scenario: str
    step: str


@dataclass(frozen=True)
class StepChanges:
    """What one step changes, in the documented order: delete policies (by
    ``namespace/name``), apply policies, then relabel namespaces and pods (a value
    sets a label, None removes it)."""

    apply: tuple[NetworkPolicy, ...] = ()
    delete: tuple[str, ...] = ()
    label_namespaces: Mapping[str, LabelChanges] = field(default_factory=dict, hash=False)
    label_pods: Mapping[str, LabelChanges] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "label_namespaces", _frozen_changes(self.label_namespaces))
        object.__setattr__(self, "label_pods", _frozen_changes(self.label_pods))

    @property
    def empty(self) -> bool:
        return not (self.apply or self.delete or self.label_namespaces or self.label_pods)


def _frozen_changes(changes: Mapping[str, LabelChanges]) -> Mapping[str, LabelChanges]:
    return MappingProxyType({key: MappingProxyType(dict(value)) for key, value in changes.items()})


@dataclass(frozen=True)
class DesiredState:
    """Labels and policies in force. ``policies`` is keyed by ``namespace/name``
    and ordered by it; ``origin`` does not take part in comparisons."""

    topology: Topology
    policies: Mapping[str, NetworkPolicy] = field(default_factory=dict, hash=False)
    origin: StateOrigin | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "policies", MappingProxyType(dict(sorted(self.policies.items()))))

    @property
    def policy_list(self) -> tuple[NetworkPolicy, ...]:
        return tuple(self.policies.values())

    @property
    def refs(self) -> tuple[str, ...]:
        return tuple(self.policies)

    def with_policies(self, policies: Iterable[NetworkPolicy]) -> DesiredState:
        merged = dict(self.policies)
        merged.update((p.ref, p) for p in policies)
        return replace(self, policies=merged)

    def without_policies(self, refs: Iterable[str]) -> DesiredState:
        remaining = dict(self.policies)
        for ref in refs:
            remaining.pop(ref, None)
        return replace(self, policies=remaining)

    def relabel_namespace(self, name: str, changes: LabelChanges) -> DesiredState:
        labels = apply_label_changes(self.topology.namespace(name).labels, changes)
        return replace(self, topology=self.topology.with_namespace_labels(name, labels))

    def relabel_pod(self, pod_id: str, changes: LabelChanges) -> DesiredState:
        labels = apply_label_changes(self.topology.pod(pod_id).labels, changes)
        return replace(self, topology=self.topology.with_pod_labels(pod_id, labels))

    def after(self, changes: StepChanges, origin: StateOrigin | None = None) -> DesiredState:
        """The state once ``changes`` are made, in the documented order."""
        state = self.without_policies(changes.delete).with_policies(changes.apply)
        for ns, label_changes in changes.label_namespaces.items():
            state = state.relabel_namespace(ns, label_changes)
        for pod_id, label_changes in changes.label_pods.items():
            state = state.relabel_pod(pod_id, label_changes)
        return replace(state, origin=origin if origin is not None else self.origin)
