"""Cluster-scoped policies of the network-policy-api as typed, immutable objects.

One set of types serves both API versions, because they mean the same thing:

* ``policy.networking.k8s.io/v1alpha2`` ClusterNetworkPolicy (network-policy-api
  v0.2.0): ``spec.tier`` Admin or Baseline, ``spec.priority``, rules with
  ``Accept``/``Deny``/``Pass`` and ``protocols``;
* ``policy.networking.k8s.io/v1alpha1`` AdminNetworkPolicy (the Admin tier) and
  BaselineAdminNetworkPolicy (the Baseline tier, a singleton without priority)
  (v0.1.8): rules with ``Allow``/``Deny``/``Pass`` and ``ports``. ``Allow`` is
  ``Accept`` under its earlier name.

How they are evaluated is documented in docs/cluster-policies.md; the parser is in
:mod:`harness.core.cluster_policy.parser`.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.core.policy import NetworkPolicy, PolicyType
from harness.core.selectors import LabelSelector
from harness.core.topology import ExternalHost, PodSpec, PortProtocol, Protocol

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

GROUP = "policy.networking.k8s.io"


class ClusterPolicyKind(enum.Enum):
    CLUSTER_NETWORK_POLICY = "ClusterNetworkPolicy"
    ADMIN_NETWORK_POLICY = "AdminNetworkPolicy"
    BASELINE_ADMIN_NETWORK_POLICY = "BaselineAdminNetworkPolicy"

    @property
    def api_version(self) -> str:
        version = "v1alpha2" if self is ClusterPolicyKind.CLUSTER_NETWORK_POLICY else "v1alpha1"
        return f"{GROUP}/{version}"

    @property
    def is_v1alpha1(self) -> bool:
        return self is not ClusterPolicyKind.CLUSTER_NETWORK_POLICY

    def action_word(self, action: Action) -> str:
        """The action as this kind spells it (v1alpha1 says Allow for Accept)."""
        if action is Action.ACCEPT and self.is_v1alpha1:
            return "Allow"
        return action.value


class Tier(enum.Enum):
    """Admin tier before NetworkPolicies, Baseline tier after them."""

    ADMIN = "Admin"
    BASELINE = "Baseline"


class Action(enum.Enum):
    ACCEPT = "Accept"
    DENY = "Deny"
    PASS = "Pass"


class PeerForm(enum.Enum):
    """The field a peer sets (exactly one per peer)."""

    NAMESPACES = "namespaces"
    PODS = "pods"
    NETWORKS = "networks"
    NODES = "nodes"
    DOMAIN_NAMES = "domainNames"


@dataclass(frozen=True)
class PodSet:
    """Pods matching ``pod_selector`` in namespaces matching ``namespace_selector``:
    a policy's subject, or a ``namespaces``/``pods`` peer. ``pod_selector`` None is
    the ``namespaces`` form: every pod of those namespaces."""

    namespace_selector: LabelSelector
    pod_selector: LabelSelector | None = None

    def matches(self, namespace_labels: Mapping[str, str], pod_labels: Mapping[str, str]) -> bool:
        if not self.namespace_selector.matches(namespace_labels):
            return False
        return self.pod_selector is None or self.pod_selector.matches(pod_labels)


@dataclass(frozen=True)
class ClusterPeer:
    """One entry of ``from``/``to``: ``pods`` for the namespaces and pods forms,
    ``networks`` for CIDRs (they match pod addresses too), ``nodes`` or
    ``domain_names`` for the experimental forms."""

    form: PeerForm
    pods: PodSet | None = None
    networks: tuple[IPNetwork, ...] = ()
    nodes: LabelSelector | None = None
    domain_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClusterPort:
    """One ``protocols`` entry (v1alpha2) or ``ports`` entry (v1alpha1): a port or an
    inclusive range of one protocol, or a named container port (``name``; its
    protocol is the container port's, so ``protocol`` is None)."""

    protocol: Protocol | None
    start: int = 0
    end: int = 0
    name: str | None = None

    def matches(self, key: PortProtocol, destination: PodSpec | ExternalHost | None) -> bool:
        """Whether traffic to ``key`` on ``destination`` matches. A named port is
        resolved on the destination pod; an external host has none."""
        if self.name is not None:
            return isinstance(destination, PodSpec) and destination.named_port(self.name, key.protocol) == key.port
        return self.protocol is key.protocol and self.start <= key.port <= self.end


@dataclass(frozen=True)
class ClusterRule:
    """A rule: ``peers`` is never empty (the API requires one); ``ports`` None means
    every port and protocol (``protocols``/``ports`` absent)."""

    action: Action
    peers: tuple[ClusterPeer, ...]
    ports: tuple[ClusterPort, ...] | None = None
    name: str = ""


@dataclass(frozen=True)
class ClusterPolicy:
    kind: ClusterPolicyKind
    name: str
    tier: Tier
    #: 0-1000, lower first. A BaselineAdminNetworkPolicy has none (it is a
    #: singleton) and gets 0.
    priority: int
    subject: PodSet
    ingress: tuple[ClusterRule, ...] = ()
    egress: tuple[ClusterRule, ...] = ()
    source: str = ""
    manifest: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False, repr=False)

    @property
    def ref(self) -> str:
        """``<Kind>/<name>``: cluster-scoped, so no namespace (and never equal to a
        NetworkPolicy's ``namespace/name``, whose namespace is lowercase)."""
        return f"{self.kind.value}/{self.name}"

    @property
    def api_version(self) -> str:
        return self.kind.api_version

    def rules(self, direction: PolicyType) -> tuple[ClusterRule, ...]:
        return self.ingress if direction is PolicyType.INGRESS else self.egress

    def describe_rule(self, direction: PolicyType, index: int) -> str:
        """``ClusterNetworkPolicy/x egress[1] "deny-internet" (Deny, Admin tier, priority 10)``."""
        rule = self.rules(direction)[index]
        named = f' "{rule.name}"' if rule.name else ""
        where = f"{self.tier.value} tier"
        if self.kind is not ClusterPolicyKind.BASELINE_ADMIN_NETWORK_POLICY:
            where += f", priority {self.priority}"
        return f"{self.ref} {direction.value.lower()}[{index}]{named} ({self.kind.action_word(rule.action)}, {where})"


#: What a scenario step applies: namespaced or cluster-scoped.
AnyPolicy = NetworkPolicy | ClusterPolicy


def in_tier_order(policies: Iterable[ClusterPolicy], tier: Tier) -> list[ClusterPolicy]:
    """The policies of ``tier`` in evaluation order: by priority, lower first.

    Upstream leaves the order of policies with equal priority to the
    implementation; the harness orders them by name (then kind), so the model and
    the emulated backend agree and a scenario's result is reproducible.
    """
    return sorted((p for p in policies if p.tier is tier), key=lambda p: (p.priority, p.name, p.kind.value))
