"""The emulated backend against the reference model, on random policy sets.

A seeded generator writes NetworkPolicy manifests over a small fixed topology
(namespaces x and y, five pods, two external hosts, TCP and UDP ports, named
ports that resolve to different numbers on different pods) using every feature
of the API: pod and namespace selectors alone, together and as separate peers,
matchExpressions, numbered, named and ranged ports, protocol-only ports, ipBlocks
with exceptions (pod addresses and external hosts alike), both directions and
every form of policyTypes, under both values of each implementation-defined
setting. Most cases add cluster-scoped policies on top (a second seeded stream,
so the NetworkPolicies of each case stay what they were): ClusterNetworkPolicies
of both tiers, or AdminNetworkPolicies with a BaselineAdminNetworkPolicy, with
Accept/Allow, Deny and Pass rules in several priorities (ties included),
namespaces, pods and networks peers (pod addresses, external hosts, IPv6), and
numbered, ranged and named ports. Every cell (each pod to each endpoint on each
port it serves, itself included) is probed for real and must be what the model
computes with the addresses the backend assigned; the two implementations share
only the parsed policy objects.

``NETPOL_DIFFERENTIAL_CASES`` and ``NETPOL_DIFFERENTIAL_SEED`` run more or other
cases, e.g. ``NETPOL_DIFFERENTIAL_CASES=300 pytest tests/emulated/test_differential.py``.
"""

from __future__ import annotations

import ipaddress
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from harness.backends.base import Deployment, Options
from harness.backends.emulated import missing_requirements
from harness.core.addressing import plan_addresses
from harness.core.cluster_policy import ClusterPolicy, parse_cluster_policy
from harness.core.matrix import Observation, Outcome
from harness.core.policy import NetworkPolicy, parse_policy
from harness.core.settings import ImplementationSettings, SelfTraffic
from harness.core.topology import (
    NAMESPACE_NAME_LABEL,
    ExternalHost,
    NamespaceSpec,
    PodSpec,
    PortSpec,
    Protocol,
    Topology,
)
from harness.model import ReferenceModel
from tests.drivers import Probe, StepDriver

NEEDS = missing_requirements()
pytestmark = [
    pytest.mark.emulated,
    pytest.mark.skipif(bool(NEEDS), reason="the emulated backend needs: " + "; ".join(NEEDS)),
]

CASES = int(os.environ.get("NETPOL_DIFFERENTIAL_CASES", "20"))
SEED = int(os.environ.get("NETPOL_DIFFERENTIAL_SEED", "20240611"))
#: Seconds one probe may take, and the longer timeout that re-checks a cell that
#: disagrees (a busy machine can make an allowed probe late, never a blocked one
#: answer).
TIMEOUT = 1.0
RECHECK_TIMEOUT = 4.0

TCP, UDP = Protocol.TCP, Protocol.UDP

#: "http" is 80 on x/a and y/a but 81 on x/b; "dns" is 80/UDP on x/b and y/b only.
TOPOLOGY = Topology(
    namespaces=(NamespaceSpec("x", {"team": "red", "env": "prod"}), NamespaceSpec("y", {"team": "blue"})),
    pods=(
        PodSpec("x", "a", {"pod": "a", "role": "web"}, (PortSpec(80, TCP, "http"), PortSpec(81, TCP), PortSpec(80, UDP))),
        PodSpec("x", "b", {"pod": "b", "role": "db"}, (PortSpec(80, TCP), PortSpec(81, TCP, "http"), PortSpec(80, UDP, "dns"))),
        PodSpec("x", "c", {"pod": "c"}, (PortSpec(80, TCP), PortSpec(81, TCP), PortSpec(80, UDP))),
        PodSpec("y", "a", {"pod": "a", "role": "web"}, (PortSpec(80, TCP, "http"), PortSpec(81, TCP), PortSpec(80, UDP))),
        PodSpec("y", "b", {"pod": "b", "role": "db"}, (PortSpec(80, TCP), PortSpec(81, TCP), PortSpec(80, UDP, "dns"))),
    ),
    externals=(
        ExternalHost("ext1", ipaddress.IPv4Address("203.0.113.10"), (PortSpec(80, TCP), PortSpec(80, UDP))),
        ExternalHost("ext2", ipaddress.IPv4Address("198.51.100.20"), (PortSpec(80, TCP),)),
    ),
)

LABEL_VALUES = {
    "pod": ["a", "b", "c"],
    "role": ["web", "db"],
    "team": ["red", "blue"],
    "env": ["prod"],
    NAMESPACE_NAME_LABEL: ["x", "y"],
}
POD_KEYS = ["pod", "role"]
NAMESPACE_KEYS = ["team", "env", NAMESPACE_NAME_LABEL]


# -- the generator -----------------------------------------------------------------


def random_selector(rng: random.Random, keys: Sequence[str]) -> dict[str, Any]:
    """A label selector over ``keys``: empty, matchLabels, matchExpressions or both."""
    form = rng.choice(["empty", "labels", "labels", "expressions", "both"])
    selector: dict[str, Any] = {}
    if form in ("labels", "both"):
        chosen = rng.sample(keys, rng.choice([1, 1, 2]))
        selector["matchLabels"] = {key: rng.choice(LABEL_VALUES[key]) for key in chosen}
    if form in ("expressions", "both"):
        expressions = []
        for _ in range(rng.randint(1, 2)):
            key = rng.choice(keys)
            operator = rng.choice(["In", "NotIn", "Exists", "DoesNotExist"])
            expression: dict[str, Any] = {"key": key, "operator": operator}
            if operator in ("In", "NotIn"):
                expression["values"] = rng.sample(LABEL_VALUES[key], rng.randint(1, len(LABEL_VALUES[key])))
            expressions.append(expression)
        selector["matchExpressions"] = expressions
    return selector


class PolicyGenerator:
    """Random, valid NetworkPolicy manifests over :data:`TOPOLOGY`."""

    def __init__(self, rng: random.Random, addresses: dict[str, ipaddress.IPv4Address]) -> None:
        self.rng = rng
        #: Addresses worth hitting with ipBlocks and their exceptions.
        self.interesting = sorted(set(addresses.values()))

    def selector(self, keys: Sequence[str]) -> dict[str, Any]:
        return random_selector(self.rng, keys)

    def ip_block(self) -> dict[str, Any]:
        rng = self.rng
        if rng.random() < 0.05:
            # IPv6: matches nothing on an IPv4 network.
            return {"cidr": rng.choice(["::/0", "fd00::/64"])}
        anchor = rng.choice(self.interesting)
        prefix = rng.choice([0, 8, 16, 24, 24, 30, 32])
        cidr = ipaddress.IPv4Network(f"{anchor}/{prefix}", strict=False)
        # Host bits are accepted (as the API server does) and ignored.
        block: dict[str, Any] = {"cidr": f"{anchor}/{prefix}" if rng.random() < 0.2 else str(cidr)}
        inside = [ip for ip in self.interesting if ip in cidr]
        if prefix < 32 and rng.random() < 0.5:
            excepts = set()
            for ip in rng.sample(inside, rng.randint(1, min(2, len(inside)))):
                hole = ipaddress.IPv4Network(f"{ip}/{rng.randint(max(prefix + 1, 16), 32)}", strict=False)
                excepts.add(str(hole))
            block["except"] = sorted(excepts)
        return block

    def peer(self, policy_namespace: str) -> dict[str, Any]:
        kind = self.rng.choice(["pod", "namespace", "both", "ipBlock", "ipBlock"])
        if kind == "ipBlock":
            return {"ipBlock": self.ip_block()}
        peer: dict[str, Any] = {}
        if kind in ("pod", "both"):
            peer["podSelector"] = self.selector(POD_KEYS)
        if kind in ("namespace", "both"):
            peer["namespaceSelector"] = self.selector(NAMESPACE_KEYS)
        return peer

    def port(self) -> dict[str, Any]:
        return dict(
            self.rng.choice(
                [
                    {"port": 80},
                    {"port": 81, "protocol": "TCP"},
                    {"port": 80, "protocol": "UDP"},
                    {"protocol": "UDP"},
                    {"protocol": "TCP"},
                    {"port": "http"},
                    {"port": "dns", "protocol": "UDP"},
                    {"port": "nowhere"},
                    {"port": 80, "endPort": 81},
                    {"port": 70, "endPort": 80, "protocol": "UDP"},
                    {"port": 81, "endPort": 90},
                    {"port": 443},
                    {"protocol": "SCTP"},
                    {"port": 80, "protocol": "SCTP"},
                ]
            )
        )

    def rules(self, peer_key: str, namespace: str) -> list[dict[str, Any]]:
        rng = self.rng
        rules = []
        for _ in range(rng.choice([0, 1, 1, 1, 2, 2, 3])):
            rule: dict[str, Any] = {}
            peers = rng.choice(["absent", "empty", "some", "some", "some"])
            if peers == "empty":
                rule[peer_key] = []
            elif peers == "some":
                rule[peer_key] = [self.peer(namespace) for _ in range(rng.randint(1, 2))]
            if rng.random() < 0.6:
                rule["ports"] = [self.port() for _ in range(rng.randint(0, 2))]  # [] = every port
            rules.append(rule)
        return rules

    def policy(self, name: str) -> dict[str, Any]:
        rng = self.rng
        namespace = rng.choice(["x", "y"])
        spec: dict[str, Any] = {"podSelector": self.selector(POD_KEYS)}
        ingress = self.rules("from", namespace) if rng.random() < 0.75 else None
        egress = self.rules("to", namespace) if rng.random() < 0.6 else None
        if ingress is not None:
            spec["ingress"] = ingress
        if egress is not None:
            spec["egress"] = egress
        types = rng.choice([None, None, [], ["Ingress"], ["Egress"], ["Ingress", "Egress"], ["Egress", "Ingress"]])
        if types is not None:
            spec["policyTypes"] = types
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }

    def relabels(self) -> tuple[Relabel, ...]:
        """Label changes made after the policies are applied (none in most cases)."""
        rng = self.rng
        changes = []
        for _ in range(rng.choice([0, 0, 0, 1, 2])):
            if rng.random() < 0.6:
                pod = rng.choice(TOPOLOGY.pods)
                keys = rng.sample(POD_KEYS, rng.randint(0, len(POD_KEYS)))
                changes.append(Relabel("pod", pod.id, {key: rng.choice(LABEL_VALUES[key]) for key in keys}))
            else:
                namespace = rng.choice(TOPOLOGY.namespaces).name
                keys = rng.sample(["team", "env"], rng.randint(0, 2))
                changes.append(Relabel("namespace", namespace, {key: rng.choice(LABEL_VALUES[key]) for key in keys}))
        return tuple(changes)

    def settings(self) -> ImplementationSettings:
        rng = self.rng
        self_traffic = SelfTraffic.POLICY if rng.random() < 0.3 else SelfTraffic.ALLOWED
        return ImplementationSettings(self_traffic, ipblock_matches_pods=rng.random() < 0.7)


class ClusterPolicyGenerator:
    """Random, valid cluster-scoped policy manifests over :data:`TOPOLOGY`: one API
    version per case, as on a real cluster."""

    def __init__(self, rng: random.Random, addresses: dict[str, ipaddress.IPv4Address]) -> None:
        self.rng = rng
        self.interesting = sorted(set(addresses.values()))
        self.v1alpha1 = False  # the API version of the case being generated

    def selection(self) -> dict[str, Any]:
        """A subject, or a namespaces/pods peer."""
        rng = self.rng
        if rng.random() < 0.5:
            return {"namespaces": random_selector(rng, NAMESPACE_KEYS)}
        pods: dict[str, Any] = {"podSelector": random_selector(rng, POD_KEYS)}
        # v1alpha1 requires namespaceSelector; v1alpha2 defaults it to every namespace.
        if self.v1alpha1 or rng.random() < 0.7:
            pods["namespaceSelector"] = random_selector(rng, NAMESPACE_KEYS)
        return {"pods": pods}

    def networks(self) -> list[str]:
        rng = self.rng
        chosen = set()
        for _ in range(rng.randint(1, 2)):
            if rng.random() < 0.1:
                chosen.add(rng.choice(["::/0", "fd00::/64"]))  # matches nothing on an IPv4 network
                continue
            anchor = rng.choice(self.interesting)
            prefix = rng.choice([0, 8, 16, 24, 24, 31, 32])
            network = ipaddress.IPv4Network(f"{anchor}/{prefix}", strict=False)
            # Host bits are accepted (netip.ParsePrefix keeps them) and ignored.
            chosen.add(f"{anchor}/{prefix}" if rng.random() < 0.2 else str(network))
        return sorted(chosen)

    def ports(self, v1alpha1: bool) -> list[dict[str, Any]]:
        rng = self.rng
        entries: list[dict[str, Any]] = []
        for _ in range(rng.randint(1, 2)):
            protocol = rng.choice(["TCP", "TCP", "UDP", "SCTP"])
            form = rng.choice(["number", "number", "range", "named"])
            if form == "named":
                name = rng.choice(["http", "dns", "nowhere"])
                entries.append({"namedPort": name} if v1alpha1 else {"destinationNamedPort": name})
            elif form == "range":
                start = rng.choice([70, 80, 81])
                end = start + rng.choice([1, 10])
                if v1alpha1:
                    entries.append({"portRange": {"protocol": protocol, "start": start, "end": end}})
                else:
                    entries.append({protocol.lower(): {"destinationPort": {"range": {"start": start, "end": end}}}})
            else:
                number = rng.choice([80, 81, 443])
                if v1alpha1:
                    entries.append({"portNumber": {"protocol": protocol, "port": number}})
                else:
                    entries.append({protocol.lower(): {"destinationPort": {"number": number}}})
        return entries

    def rules(self, peer_key: str, actions: Sequence[str], v1alpha1: bool) -> list[dict[str, Any]]:
        rng = self.rng
        rules = []
        for number in range(rng.choice([0, 1, 1, 2, 2, 3])):
            rule: dict[str, Any] = {"action": rng.choice(actions)}
            if rng.random() < 0.3:
                rule["name"] = f"rule-{number}"
            peers = []
            for _ in range(rng.randint(1, 2)):
                use_networks = peer_key == "to" and rng.random() < 0.35
                peers.append({"networks": self.networks()} if use_networks else self.selection())
            rule[peer_key] = peers
            if rng.random() < 0.5:
                ports = self.ports(v1alpha1)
                has_networks = any("networks" in peer for peer in peers)
                if has_networks:
                    # The CEL rule: no named ports with a networks peer.
                    ports = [p for p in ports if "namedPort" not in p and "destinationNamedPort" not in p]
                if ports:
                    rule["ports" if v1alpha1 else "protocols"] = ports
            rules.append(rule)
        return rules

    def policies(self) -> list[dict[str, Any]]:
        rng = self.rng
        v1alpha1 = self.v1alpha1 = rng.random() < 0.3
        manifests = []
        for i in range(rng.randint(1, 3)):
            if v1alpha1:
                baseline = i == 0 and rng.random() < 0.5
                kind = "BaselineAdminNetworkPolicy" if baseline else "AdminNetworkPolicy"
                actions = ["Allow", "Deny"] if baseline else ["Allow", "Deny", "Pass"]
                spec: dict[str, Any] = {} if baseline else {"priority": rng.choice([1, 5, 5, 10])}
                name = "default" if baseline else f"anp{i}"
            else:
                kind = "ClusterNetworkPolicy"
                actions = ["Accept", "Deny", "Pass"]
                spec = {"tier": rng.choice(["Admin", "Baseline"]), "priority": rng.choice([1, 5, 5, 10])}
                name = f"cnp{i}"
            spec["subject"] = self.selection()
            ingress = self.rules("from", actions, v1alpha1)
            egress = self.rules("to", actions, v1alpha1)
            if ingress:
                spec["ingress"] = ingress
            if egress:
                spec["egress"] = egress
            version = "v1alpha1" if v1alpha1 else "v1alpha2"
            manifests.append(
                {"apiVersion": f"policy.networking.k8s.io/{version}", "kind": kind, "metadata": {"name": name}, "spec": spec}
            )
        return manifests


@dataclass(frozen=True)
class Relabel:
    """Replace the labels of a pod (``x/a``) or a namespace (``x``)."""

    kind: str
    target: str
    labels: dict[str, str]

    def apply(self, backend: StepDriver) -> None:
        if self.kind == "pod":
            backend.set_pod_labels(self.target, self.labels)
        else:
            backend.set_namespace_labels(self.target, self.labels)

    def applied_to(self, topology: Topology) -> Topology:
        if self.kind == "pod":
            return topology.with_pod_labels(self.target, self.labels)
        return topology.with_namespace_labels(self.target, self.labels)


@dataclass(frozen=True)
class Case:
    number: int
    manifests: tuple[dict[str, Any], ...]
    settings: ImplementationSettings
    relabels: tuple[Relabel, ...] = ()
    cluster_manifests: tuple[dict[str, Any], ...] = ()

    @property
    def topology(self) -> Topology:
        """The topology with the labels in force once the relabels are made."""
        topology = TOPOLOGY
        for relabel in self.relabels:
            topology = relabel.applied_to(topology)
        return topology

    @property
    def policies(self) -> list[NetworkPolicy]:
        return [parse_policy(m, source=f"case {self.number}") for m in self.manifests]

    @property
    def cluster_policies(self) -> list[ClusterPolicy]:
        return [parse_cluster_policy(m, source=f"case {self.number}") for m in self.cluster_manifests]

    def yaml(self) -> str:
        header = (
            f"# case {self.number} (seed {SEED}): self_traffic {self.settings.self_traffic.value}, "
            f"ipblock_matches_pods {str(self.settings.ipblock_matches_pods).lower()}\n"
        )
        for relabel in self.relabels:
            header += f"# then the labels of {relabel.kind} {relabel.target} become {relabel.labels}\n"
        return header + yaml.safe_dump_all([*self.manifests, *self.cluster_manifests], sort_keys=False)


def generate_cases(count: int, seed: int) -> list[Case]:
    rng = random.Random(seed)
    generator = PolicyGenerator(rng, plan_addresses(TOPOLOGY))
    # A stream of its own, so that adding cluster policies left each case's
    # NetworkPolicies as they were.
    cluster_rng = random.Random(seed + 1)
    cluster_generator = ClusterPolicyGenerator(cluster_rng, plan_addresses(TOPOLOGY))
    cases = []
    for number in range(count):
        manifests = tuple(generator.policy(f"p{i}") for i in range(rng.randint(1, 4)))
        cluster = tuple(cluster_generator.policies()) if cluster_rng.random() < 0.7 else ()
        cases.append(Case(number, manifests, generator.settings(), generator.relabels(), cluster))
    return cases


def all_probes() -> list[Probe]:
    """Each pod to each endpoint on each port that endpoint serves, itself included."""
    return [
        Probe(source, destination, port.key)
        for source in TOPOLOGY.pods
        for destination in TOPOLOGY.endpoints()
        for port in destination.ports
    ]


# -- the comparison -----------------------------------------------------------------


@pytest.fixture(scope="module")
def deployed() -> Iterator[tuple[StepDriver, Deployment]]:
    from harness.backends import emulated

    backend = StepDriver(emulated.create(Options()))
    try:
        yield backend, backend.deploy(TOPOLOGY)
    finally:
        backend.close()


def disagreements(
    backend: StepDriver, model: ReferenceModel, probes: Sequence[Probe], timeout: float
) -> dict[Probe, tuple[Outcome, Observation]]:
    observed = backend.probe(probes, timeout)
    wrong = {}
    for probe in probes:
        expected = Outcome.from_bool(model.allowed(probe.source.id, probe.destination.id, probe.port))
        if observed[probe].outcome is not expected:
            wrong[probe] = (expected, observed[probe])
    return wrong


def unexplained(backend: StepDriver, model: ReferenceModel, probes: Sequence[Probe]) -> dict[Probe, tuple[Outcome, Observation]]:
    """Blocked cells of the last round whose drop the kernel did not report, or
    whose dropping chain does not say what the model says of that side (the same
    isolating policies, or the same cluster policy rule, and the same Pass that
    handed it on): the why must agree with the model too."""
    wrong = {}
    for probe in probes:
        trace = backend.traces.get(probe.cell)
        if model.allowed(probe.source.id, probe.destination.id, probe.port):
            continue
        drop = trace.drop if trace is not None else None
        because = model.explain(probe.source.id, probe.destination.id, probe.port)
        if drop is None or drop.text() not in because.split("; "):
            detail = f"dropped by {drop.text() if drop else 'nothing reported'}; the model: {because}"
            wrong[probe] = (Outcome.BLOCKED, Observation(Outcome.BLOCKED, detail))
    return wrong


def test_the_generator_covers_the_api() -> None:
    """The default cases exercise every feature the module docstring promises."""
    text = "\n".join(case.yaml() for case in generate_cases(CASES, SEED))
    for feature in (
        "podSelector",
        "namespaceSelector",
        "matchExpressions",
        "DoesNotExist",
        "NotIn",
        "ipBlock",
        "except",
        "endPort",
        "port: http",
        "port: dns",
        "protocol: UDP",
        "protocol: SCTP",
        "ports: []",
        "::/",  # an IPv6 block
        "policyTypes",
        "egress",
        "ingress",
        "self_traffic policy",
        "ipblock_matches_pods false",
        "then the labels of pod",
        "then the labels of namespace",
        # cluster-scoped policies
        "kind: ClusterNetworkPolicy",
        "kind: AdminNetworkPolicy",
        "kind: BaselineAdminNetworkPolicy",
        "tier: Admin",
        "tier: Baseline",
        "action: Accept",
        "action: Allow",
        "action: Deny",
        "action: Pass",
        "networks:",
        "destinationNamedPort:",
        "namedPort:",
        "range:",
        "portRange:",
        "portNumber:",
        "namespaces:",
        "pods:",
    ):
        assert feature in text, feature
    cluster_cases = [case for case in generate_cases(CASES, SEED) if case.cluster_manifests]
    assert len(cluster_cases) >= CASES // 2
    # Equal priorities in one tier (the harness orders them by name).
    assert any(
        len({(m["spec"].get("tier"), m["spec"].get("priority")) for m in case.cluster_manifests}) < len(case.cluster_manifests)
        for case in cluster_cases
    )
    # Peers with both selectors, and with each alone, and an external host inside an ipBlock.
    peers = [
        peer
        for case in generate_cases(CASES, SEED)
        for manifest in case.manifests
        for direction, key in (("ingress", "from"), ("egress", "to"))
        for rule in manifest["spec"].get(direction) or []
        for peer in rule.get(key) or []
    ]
    assert {frozenset(peer) for peer in peers} >= {
        frozenset({"podSelector"}),
        frozenset({"namespaceSelector"}),
        frozenset({"podSelector", "namespaceSelector"}),
        frozenset({"ipBlock"}),
    }
    assert any(
        ipaddress.IPv4Address("203.0.113.10") in ipaddress.ip_network(peer["ipBlock"]["cidr"], strict=False)
        for peer in peers
        if "ipBlock" in peer
    )


@pytest.mark.parametrize("case", generate_cases(CASES, SEED), ids=lambda case: f"case{case.number}")
def test_emulated_backend_agrees_with_the_model(deployed: tuple[StepDriver, Deployment], case: Case) -> None:
    backend, deployment = deployed
    backend.reset()
    backend.use_settings(case.settings)
    policies = case.policies
    cluster_policies = case.cluster_policies
    backend.apply_policies([*policies, *cluster_policies])
    for relabel in case.relabels:
        relabel.apply(backend)
    assert backend.topology == case.topology
    model = ReferenceModel(case.topology, policies, deployment.addresses, case.settings, cluster_policies)
    wrong = disagreements(backend, model, all_probes(), TIMEOUT)
    if wrong:
        # Re-check with a longer timeout: a late answer on a busy machine is not a
        # disagreement, a wrong verdict is.
        wrong = disagreements(backend, model, list(wrong), RECHECK_TIMEOUT)
    if not wrong:
        wrong = unexplained(backend, model, all_probes())
    if wrong:
        cells = "\n".join(
            f"  {probe.cell}: model {expected.value}, observed {obs.outcome.value}"
            + (f" ({obs.detail})" if obs.detail else "")
            + f"\n    {obs.command}"
            for probe, (expected, obs) in sorted(wrong.items(), key=lambda item: str(item[0].cell))
        )
        addresses = ", ".join(f"{k}={v}" for k, v in deployment.addresses.items())
        pytest.fail(
            f"{len(wrong)} cell(s) differ from the model\n{cells}\naddresses: {addresses}\npolicies:\n{case.yaml()}",
            pytrace=False,
        )
