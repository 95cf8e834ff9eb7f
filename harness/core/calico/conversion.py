"""Calico policies in force as NetworkPolicies with the same verdicts, for the
reference model and the emulated backend.

The translation follows how Calico compiles its policies
(projectcalico/calico ``libcalico-go/lib/backend/syncersv1/updateprocessors``,
v3.30 to v3.32): a namespaced policy selects ``projectcalico.org/namespace ==
<its namespace> && (selector)``; a rule selector of a namespaced policy is confined to
that namespace unless the rule has a namespaceSelector; a namespaceSelector is read
against the namespace's labels (and ``projectcalico.org/name``), with ``all()``
meaning every namespace; a rule side with no selector and no nets matches every
address, while ``all()`` matches every endpoint only. Selectors are expanded into
alternatives (:func:`harness.core.calico.selector.to_requirements`), each a
podSelector and a namespaceSelector; a GlobalNetworkPolicy becomes one NetworkPolicy
per namespace whose labels it selects, so the translation depends on the namespace
labels in force and is redone per step.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from harness.core.calico.enforcement import EnforcedPolicies, kubernetes_key
from harness.core.calico.labels import endpoint_selector, split_requirements
from harness.core.calico.policy import CalicoPolicy, CalicoRule, EnforcedKind, EntityMatch, PolicyKey
from harness.core.calico.selector import All, to_requirements
from harness.core.errors import HarnessError
from harness.core.policy import IPBlock, IPNetwork, NetworkPolicy, Peer, PolicyPort, PolicyType, Rule
from harness.core.topology import Topology


@dataclass(frozen=True)
class ModelPolicies:
    """NetworkPolicies with the verdicts of the policies in force; ``origins`` maps
    each one's ``namespace/name`` to the enforced object it stands for."""

    policies: tuple[NetworkPolicy, ...]
    origins: Mapping[str, PolicyKey] = field(default_factory=dict, hash=False)


def _ip_peers(match: EntityMatch) -> tuple[Peer, ...]:
    """``nets`` minus ``notNets`` (or everything minus ``notNets``) as ipBlocks."""
    nets = match.nets
    if not nets:
        version = match.not_nets[0].version
        nets = (ipaddress.ip_network("0.0.0.0/0") if version == 4 else ipaddress.ip_network("::/0"),)
    peers = []
    for net in nets:
        if any(_within(net, hole) for hole in match.not_nets):
            continue  # the whole net is excluded
        # CIDRs are nested or disjoint: the holes that matter lie strictly inside.
        holes = tuple(hole for hole in match.not_nets if _within(hole, net))
        peers.append(Peer(ip_block=IPBlock(net, holes)))
    return tuple(peers)


def _within(inner: IPNetwork, outer: IPNetwork) -> bool:
    return inner.version == outer.version and inner.prefixlen >= outer.prefixlen and inner.network_address in outer


def _rule_peers(match: EntityMatch, namespace: str | None) -> tuple[Peer, ...] | None:
    """A rule side's peers; None means every address, ``()`` nothing."""
    if match.nets or match.not_nets:
        return _ip_peers(match)
    if match.selector is None and match.namespace_selector is None:
        return None
    selector = match.selector.root if match.selector is not None else All()
    namespace_selector = match.namespace_selector.root if match.namespace_selector is not None else None
    node = endpoint_selector(selector, namespace_selector, namespace)
    peers = []
    for conjunction in to_requirements(node):
        parts = split_requirements(conjunction)
        if parts is not None:
            peers.append(Peer(pod_selector=parts[0], namespace_selector=parts[1]))
    return tuple(dict.fromkeys(peers))


def _rules(rules: tuple[CalicoRule, ...], namespace: str | None) -> tuple[Rule, ...]:
    out = []
    for rule in rules:
        peers = _rule_peers(rule.peer, namespace)
        if peers == ():
            continue  # admits nothing; an empty peer list would mean everything
        if rule.protocol is None:
            ports: tuple[PolicyPort, ...] = ()
        elif not rule.ports:
            ports = (PolicyPort(rule.protocol),)
        else:
            ports = tuple(p.to_policy_port(rule.protocol) for p in rule.ports)
        out.append(Rule(peers or (), ports))
    return tuple(out)


def converted_name(key: PolicyKey, index: int, count: int) -> str:
    """Name of a NetworkPolicy standing for (part of) a Calico policy."""
    prefix = "calico-global" if key.kind is EnforcedKind.CALICO_GLOBAL_NETWORK_POLICY else "calico"
    return f"{prefix}.{key.name}" + (f".{index + 1}" if count > 1 else "")


def to_network_policies(policy: CalicoPolicy, topology: Topology) -> tuple[NetworkPolicy, ...]:
    """NetworkPolicies with the verdicts of ``policy`` on ``topology`` (labels in
    force): one per namespace and alternative of the policy's selector."""
    namespace = policy.key.namespace
    node = endpoint_selector(
        policy.selector.root, policy.namespace_selector.root if policy.namespace_selector is not None else None, namespace
    )
    alternatives = [parts for conj in to_requirements(node) if (parts := split_requirements(conj)) is not None]
    ingress = _rules(policy.ingress, namespace) if PolicyType.INGRESS in policy.types else ()
    egress = _rules(policy.egress, namespace) if PolicyType.EGRESS in policy.types else ()
    out = []
    for ns in topology.namespaces:
        if namespace is not None and ns.name != namespace:
            continue
        selectors = list(dict.fromkeys(pod for pod, ns_sel in alternatives if ns_sel.matches(ns.labels)))
        for i, pod_selector in enumerate(selectors):
            out.append(
                NetworkPolicy(
                    namespace=ns.name,
                    name=converted_name(policy.key, i, len(selectors)),
                    pod_selector=pod_selector,
                    policy_types=policy.types,
                    ingress=ingress,
                    egress=egress,
                    source=policy.source,
                    manifest=policy.manifest,
                )
            )
    return tuple(out)


def model_policies(policies: EnforcedPolicies, topology: Topology) -> ModelPolicies:
    """Every policy in force as NetworkPolicies for the reference model."""
    out: list[NetworkPolicy] = list(policies.kubernetes.values())
    origins: dict[str, PolicyKey] = {p.ref: kubernetes_key(p) for p in out}
    for key in sorted(policies.calico, key=PolicyKey.sort_key):
        for converted in to_network_policies(policies.calico[key], topology):
            if converted.ref in origins:
                raise HarnessError(
                    f"{key} stands for a NetworkPolicy named {converted.ref} for the model, which "
                    f"{origins[converted.ref]} already is: rename one of them"
                )
            origins[converted.ref] = key
            out.append(converted)
    return ModelPolicies(tuple(out), MappingProxyType(origins))
