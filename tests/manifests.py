"""Policies for tests, written as their manifests and parsed as a scenario's are."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.core.cluster_policy import ClusterPolicy, parse_cluster_policy
from harness.core.policy import NetworkPolicy, parse_policy


def netpol(namespace: str, name: str, spec: Mapping[str, Any]) -> NetworkPolicy:
    """A NetworkPolicy ``namespace/name`` with ``spec``."""
    return parse_policy(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": dict(spec),
        }
    )


def cnp(name: str, tier: str, priority: int, subject: Mapping[str, Any], source: str = "<inline>", **rules: Any) -> ClusterPolicy:
    """A ClusterNetworkPolicy (v1alpha2) of ``tier`` and ``priority`` over ``subject``,
    with ``ingress=[...]`` and ``egress=[...]`` rules; ``source`` is the file it is
    said to come from."""
    return parse_cluster_policy(
        {
            "apiVersion": "policy.networking.k8s.io/v1alpha2",
            "kind": "ClusterNetworkPolicy",
            "metadata": {"name": name},
            "spec": {"tier": tier, "priority": priority, "subject": dict(subject), **rules},
        },
        source,
    )
