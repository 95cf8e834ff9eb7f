"""The state a scenario has brought a cluster to: labels in force and policies in
force (NetworkPolicies by ``namespace/name``, cluster-scoped policies by
``<Kind>/<name>``). Pure; the runner keeps it in step with what it asks the
backend to do."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from harness.core.cluster_policy import AnyPolicy, ClusterPolicy
from harness.core.policy import NetworkPolicy
from harness.core.topology import Topology, apply_label_changes
from harness.scenario import Step


@dataclass(frozen=True)
class ClusterState:
    topology: Topology
    policies: Mapping[str, NetworkPolicy] = field(default_factory=dict, hash=False)
    cluster_policies: Mapping[str, ClusterPolicy] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "policies", MappingProxyType(dict(self.policies)))
        object.__setattr__(self, "cluster_policies", MappingProxyType(dict(self.cluster_policies)))

    @property
    def refs(self) -> tuple[str, ...]:
        """Every policy in force, namespaced and cluster-scoped, sorted."""
        return tuple(sorted([*self.policies, *self.cluster_policies]))

    def with_policies(self, policies: Iterable[AnyPolicy]) -> ClusterState:
        merged = dict(self.policies)
        merged_cluster = dict(self.cluster_policies)
        for policy in policies:
            if isinstance(policy, ClusterPolicy):
                merged_cluster[policy.ref] = policy
            else:
                merged[policy.ref] = policy
        return replace(self, policies=merged, cluster_policies=merged_cluster)

    def without_policies(self, refs: Iterable[str]) -> ClusterState:
        remaining = dict(self.policies)
        remaining_cluster = dict(self.cluster_policies)
        for ref in refs:
            remaining.pop(ref, None)
            remaining_cluster.pop(ref, None)
        return replace(self, policies=remaining, cluster_policies=remaining_cluster)

    def with_namespace_labels(self, name: str, labels: Mapping[str, str]) -> ClusterState:
        """A namespace's labels replaced by ``labels`` (the complete new set)."""
        return replace(self, topology=self.topology.with_namespace_labels(name, labels))

    def with_pod_labels(self, pod_id: str, labels: Mapping[str, str]) -> ClusterState:
        """A pod's labels replaced by ``labels`` (the complete new set)."""
        return replace(self, topology=self.topology.with_pod_labels(pod_id, labels))

    def relabel_namespace(self, name: str, changes: Mapping[str, str | None]) -> ClusterState:
        labels = apply_label_changes(self.topology.namespace(name).labels, changes)
        return replace(self, topology=self.topology.with_namespace_labels(name, labels))

    def relabel_pod(self, pod_id: str, changes: Mapping[str, str | None]) -> ClusterState:
        labels = apply_label_changes(self.topology.pod(pod_id).labels, changes)
        return replace(self, topology=self.topology.with_pod_labels(pod_id, labels))

    def after(self, step: Step) -> ClusterState:
        """The state once a step's changes are made, in the documented order:
        delete, apply, namespace labels, pod labels."""
        state = self.without_policies(step.delete).with_policies(step.apply)
        for ns, changes in step.label_namespaces.items():
            state = state.relabel_namespace(ns, changes)
        for pod_id, changes in step.label_pods.items():
            state = state.relabel_pod(pod_id, changes)
        return state
