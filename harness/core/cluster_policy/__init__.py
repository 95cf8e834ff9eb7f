"""Cluster-scoped policies of kubernetes-sigs/network-policy-api: ClusterNetworkPolicy
(v1alpha2) and AdminNetworkPolicy / BaselineAdminNetworkPolicy (v1alpha1), typed,
validated as the API server does, and what each backend can enforce of them.
Evaluation order: docs/cluster-policies.md."""

from harness.core.cluster_policy.objects import (
    Action,
    AnyPolicy,
    ClusterPeer,
    ClusterPolicy,
    ClusterPolicyKind,
    ClusterPort,
    ClusterRule,
    PeerForm,
    PodSet,
    Tier,
    in_tier_order,
)
from harness.core.cluster_policy.parser import CLUSTER_POLICY_KINDS, Channel, is_cluster_policy, parse_cluster_policy
from harness.core.cluster_policy.support import (
    BACKEND_PEER_FORMS,
    UnsupportedField,
    check_supported,
    priority_ties,
    unsupported_fields,
)

__all__ = [
    "BACKEND_PEER_FORMS",
    "CLUSTER_POLICY_KINDS",
    "Action",
    "AnyPolicy",
    "Channel",
    "ClusterPeer",
    "ClusterPolicy",
    "ClusterPolicyKind",
    "ClusterPort",
    "ClusterRule",
    "PeerForm",
    "PodSet",
    "Tier",
    "UnsupportedField",
    "check_supported",
    "in_tier_order",
    "is_cluster_policy",
    "parse_cluster_policy",
    "priority_ties",
    "unsupported_fields",
]
