"""The Admin and Baseline tiers of cluster-scoped policies, as nft matches for the
chains of :mod:`harness.backends.emulated.ruleset`.

Compiled from the policies (never from the reference model's answer). The
ruleset gives a pod that some cluster policy selects in a direction one entry
chain for that direction, holding, in evaluation order (policies by priority
then name, rules as written):

* the Admin tier: Accept admits (through a logging admit chain), Deny drops
  (logged), Pass ``goto``\\ s the next-tier chain (``<chain>.next``), skipping the
  Admin rules after it; after the last Admin rule the packet goes there too;
* the next tier: the pod's NetworkPolicy rules when NetworkPolicies isolate it
  in that direction (they decide, ending in a logged ``drop``); otherwise the
  Baseline tier: Deny drops, Accept admits, Pass ``return``\\ s, and a packet no
  rule matches falls off the end (allowed).

This module computes which rules apply to a pod and the matches of each:
namespaces and pods peers are the pods' addresses; networks are their IPv4
CIDRs, which match pods and external hosts alike (IPv6 networks match nothing:
the emulated network is IPv4 only). Ports: a rule without ports matches every
protocol; a number or range becomes ``th dport``; a named port is resolved on the
destination pod: the pod itself for ingress, each destination pod for egress.
Node and domain-name peers never get here: the backend refuses them first.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from harness.core.cluster_policy import Action, ClusterPeer, ClusterPolicy, ClusterRule, PeerForm, Tier, in_tier_order
from harness.core.errors import BackendError
from harness.core.policy import PolicyType
from harness.core.topology import PodSpec, Protocol, Topology

IPv4 = ipaddress.IPv4Address
Net4 = ipaddress.IPv4Network

_L4 = {Protocol.TCP: "tcp", Protocol.UDP: "udp", Protocol.SCTP: "sctp"}
#: The chain of the tier after the Admin tier, by the entry chain's name.
NEXT_SUFFIX = ".next"


@dataclass(frozen=True)
class TierRule:
    """One rule of a cluster policy that selects a pod, with the nft match parts
    (each ending in a space) of the packets it matches; none when its peers stand
    for no address."""

    policy: ClusterPolicy
    direction: PolicyType
    index: int
    matches: tuple[str, ...]

    @property
    def action(self) -> Action:
        return self.policy.rules(self.direction)[self.index].action

    def describe(self) -> str:
        """As the reference model names the rule that decided a cell."""
        return self.policy.describe_rule(self.direction, self.index)


def _set(items: Iterable[str]) -> str:
    return "{ " + ", ".join(items) + " }"


def _address(net: Net4) -> str:
    return str(net.network_address) if net.prefixlen == 32 else str(net)


def _comment(text: str) -> str:
    return ' comment "' + text.replace('"', "'")[:120] + '"'


class TierCompiler:
    """Compiles the cluster policies in force for the pods of one ruleset."""

    def __init__(
        self,
        topology: Topology,
        pods: Sequence[PodSpec],
        addresses: Mapping[str, IPv4],
        policies: Sequence[ClusterPolicy],
    ) -> None:
        self.topology = topology
        self.pods = list(pods)
        self.addresses = addresses
        self.tiers = {tier: in_tier_order(policies, tier) for tier in Tier}
        self._namespace_labels = {ns.name: ns.labels for ns in topology.namespaces}

    def _selected(self, policy: ClusterPolicy, pod: PodSpec) -> bool:
        return policy.subject.matches(self._namespace_labels[pod.namespace], pod.labels)

    @property
    def empty(self) -> bool:
        return not any(self.tiers.values())

    def rules(self, tier: Tier, direction: PolicyType, pod: PodSpec) -> list[TierRule]:
        """The rules of ``tier`` whose policy selects ``pod``, in evaluation order."""
        found = []
        for policy in self.tiers[tier]:
            if not self._selected(policy, pod):
                continue
            for index, rule in enumerate(policy.rules(direction)):
                found.append(TierRule(policy, direction, index, tuple(self._matches(rule, direction, pod))))
        return found

    # -- matching ----------------------------------------------------------------------

    def _peer_networks(self, peer: ClusterPeer) -> list[Net4]:
        if peer.form is PeerForm.NETWORKS:
            return [n for n in peer.networks if isinstance(n, Net4)]
        if peer.form in (PeerForm.NAMESPACES, PeerForm.PODS):
            assert peer.pods is not None  # the parser sets it for these forms
            selection = peer.pods
            return [
                Net4(f"{self.addresses[p.id]}/32")
                for p in self.pods
                if selection.matches(self._namespace_labels[p.namespace], p.labels)
            ]
        raise BackendError(f"the emulated backend cannot enforce {peer.form.value} peers")

    def _matches(self, rule: ClusterRule, direction: PolicyType, pod: PodSpec) -> list[str]:
        """The match parts (each ending in a space) of the nft rules for ``rule``;
        none when its peers stand for no address."""
        networks = list(ipaddress.collapse_addresses(n for peer in rule.peers for n in self._peer_networks(peer)))
        if not networks:
            return []
        field_ = "ip saddr" if direction is PolicyType.INGRESS else "ip daddr"
        peers = f"{field_} {_set(_address(n) for n in networks)} "
        if rule.ports is None:
            return [peers]
        lines = []
        pairs: dict[Protocol, set[tuple[IPv4, int]]] = {}
        for port in rule.ports:
            if port.name is None:
                assert port.protocol is not None  # numbers and ranges have one
                span = str(port.start) if port.start == port.end else f"{port.start}-{port.end}"
                if port.start <= port.end:  # v1alpha1 takes start > end: no port matches
                    lines.append(f"{peers}meta l4proto {_L4[port.protocol]} th dport {span} ")
            elif direction is PolicyType.INGRESS:
                for spec in pod.ports:
                    if spec.name == port.name:
                        lines.append(f"{peers}meta l4proto {_L4[spec.protocol]} th dport {spec.port} ")
            else:
                for destination in self.pods:
                    address = self.addresses[destination.id]
                    if not any(address in n for n in networks):
                        continue
                    for spec in destination.ports:
                        if spec.name == port.name:
                            pairs.setdefault(spec.protocol, set()).add((address, spec.port))
        for protocol, found in sorted(pairs.items(), key=lambda item: item[0].value):
            elements = _set(f"{ip} . {number}" for ip, number in sorted(found))
            lines.append(f"meta l4proto {_L4[protocol]} ip daddr . th dport {elements} ")
        return lines
