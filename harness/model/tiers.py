"""The Admin and Baseline tiers of the reference model: what ClusterNetworkPolicies
(and v1alpha1 AdminNetworkPolicies / BaselineAdminNetworkPolicies) decide, one
boolean matrix per tier, direction and port.

Within a tier, policies are taken by priority (then name, see
:func:`~harness.core.cluster_policy.in_tier_order`) and each policy's rules in the
order written; the first rule that matches a cell decides it: Accept or Deny is
final, Pass hands the cell to the next tier. A cell no rule matches is left to
the next tier too. How the tiers and NetworkPolicies combine is in
:class:`~harness.model.reference.ReferenceModel` and docs/cluster-policies.md.

Matrices follow the model's layout: ingress ``[destination pod, source pod]``
(the subject is the destination), egress ``[source pod, destination]`` with
destinations pods then external hosts (the subject is the source).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from harness.core.cluster_policy import (
    Action,
    ClusterPeer,
    ClusterPolicy,
    ClusterRule,
    PeerForm,
    PodSet,
    Tier,
    in_tier_order,
)
from harness.core.policy import PolicyType
from harness.core.topology import ExternalHost, PodSpec, PortProtocol

Mask = npt.NDArray[np.bool_]


class Selections(Protocol):
    """What the tiers need from the model: pods and destinations, and masks."""

    @property
    def pods(self) -> tuple[PodSpec, ...]: ...

    @property
    def destinations(self) -> tuple[PodSpec | ExternalHost, ...]: ...

    def pod_set(self, selection: PodSet) -> Mask:
        """Pods (by index) that a subject or a namespaces/pods peer selects."""
        ...

    def network_peer(self, peer: ClusterPeer) -> tuple[Mask, Mask]:
        """(pods, external hosts) whose address is in one of ``peer.networks``."""
        ...


@dataclass(frozen=True)
class Decision:
    """The rule that decided a cell in a tier."""

    policy: ClusterPolicy
    direction: PolicyType
    index: int

    @property
    def action(self) -> Action:
        return self.policy.rules(self.direction)[self.index].action

    def describe(self) -> str:
        return self.policy.describe_rule(self.direction, self.index)


class ClusterTiers:
    """The decisions of the Admin and Baseline tiers over one model's endpoints."""

    def __init__(self, model: Selections, policies: Sequence[ClusterPolicy]) -> None:
        self.model = model
        self.tiers = {tier: in_tier_order(policies, tier) for tier in Tier}
        self.by_ref = {policy.ref: policy for policy in policies}
        self._subjects: dict[PodSet, Mask] = {}
        self._peers: dict[ClusterPeer, tuple[Mask, Mask]] = {}
        self._cache: dict[tuple[Tier, PolicyType, PortProtocol], tuple[Mask, Mask]] = {}

    @property
    def empty(self) -> bool:
        return not any(self.tiers.values())

    # -- masks ---------------------------------------------------------------------

    def _subject(self, policy: ClusterPolicy) -> Mask:
        found = self._subjects.get(policy.subject)
        if found is None:
            found = self._subjects[policy.subject] = self.model.pod_set(policy.subject)
        return found

    def _peer(self, peer: ClusterPeer) -> tuple[Mask, Mask]:
        found = self._peers.get(peer)
        if found is None:
            if peer.form is PeerForm.NETWORKS:
                found = self.model.network_peer(peer)
            elif peer.form in (PeerForm.NODES, PeerForm.DOMAIN_NAMES):
                # No endpoint of a scenario is a node or has a domain name (pods
                # and external hosts are addressed by IP), so these match none of
                # the cells. Backends that cannot enforce them refuse them before
                # anything is applied (support.py): they never pass unenforced.
                externals = len(self.model.destinations) - len(self.model.pods)
                found = (np.zeros(len(self.model.pods), bool), np.zeros(externals, bool))
            else:
                assert peer.pods is not None  # the parser sets it for these forms
                found = (self.model.pod_set(peer.pods), np.zeros(len(self.model.destinations) - len(self.model.pods), bool))
            self._peers[peer] = found
        return found

    def _ports(self, rule: ClusterRule, key: PortProtocol, endpoints: Sequence[PodSpec | ExternalHost]) -> Mask:
        """Which endpoints (destinations of the traffic) the rule's ports admit ``key`` on."""
        if rule.ports is None:
            return np.ones(len(endpoints), bool)
        if all(port.name is None for port in rule.ports):
            return np.full(len(endpoints), any(port.matches(key, None) for port in rule.ports), bool)
        return np.array([any(port.matches(key, ep) for port in rule.ports) for ep in endpoints], dtype=bool)

    def _axes(self, policy: ClusterPolicy, rule: ClusterRule, direction: PolicyType, key: PortProtocol) -> tuple[Mask, Mask]:
        """(rows, columns) of the cells the rule matches on ``key``."""
        rows = self._subject(policy)
        pods, externals = self._peer_union(rule)
        if direction is PolicyType.INGRESS:
            # The subject is the destination: named ports resolve on it.
            return rows & self._ports(rule, key, self.model.pods), pods
        columns = np.concatenate([pods, externals])
        return rows, columns & self._ports(rule, key, self.model.destinations)

    def _peer_union(self, rule: ClusterRule) -> tuple[Mask, Mask]:
        pods = np.zeros(len(self.model.pods), bool)
        externals = np.zeros(len(self.model.destinations) - len(self.model.pods), bool)
        for peer in rule.peers:
            p, e = self._peer(peer)
            pods |= p
            externals |= e
        return pods, externals

    # -- decisions -----------------------------------------------------------------

    def decide(self, tier: Tier, direction: PolicyType, key: PortProtocol) -> tuple[Mask, Mask]:
        """(accepted, denied): the cells the tier decides finally. Cells in neither
        were passed on or matched no rule; both go to the next tier."""
        cached = self._cache.get((tier, direction, key))
        if cached is not None:
            return cached
        columns = len(self.model.pods) if direction is PolicyType.INGRESS else len(self.model.destinations)
        shape = (len(self.model.pods), columns)
        decided = np.zeros(shape, bool)
        accepted = np.zeros(shape, bool)
        denied = np.zeros(shape, bool)
        for policy in self.tiers[tier]:
            if not self._subject(policy).any():
                continue
            for rule in policy.rules(direction):
                rows, cols = self._axes(policy, rule, direction, key)
                if not rows.any() or not cols.any():
                    continue
                matched = np.outer(rows, cols)
                if rule.action is Action.ACCEPT:
                    accepted |= matched & ~decided
                elif rule.action is Action.DENY:
                    denied |= matched & ~decided
                decided |= matched  # Pass: decided for this tier, left to the next
        result = self._cache[(tier, direction, key)] = (accepted, denied)
        return result

    def decision(self, tier: Tier, direction: PolicyType, row: int, column: int, key: PortProtocol) -> Decision | None:
        """The rule of ``tier`` that matches one cell first, if any."""
        for policy in self.tiers[tier]:
            for index, rule in enumerate(policy.rules(direction)):
                rows, cols = self._axes(policy, rule, direction, key)
                if rows[row] and cols[column]:
                    return Decision(policy, direction, index)
        return None
