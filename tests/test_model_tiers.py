"""The reference model's Admin and Baseline tiers, one rule of docs/cluster-policies.md
at a time, on concrete cells; then against a plain per-cell evaluation of the same
rules on random mixes of cluster-scoped and namespaced policies.

Namespaces x (env=prod) and y (env=dev) hold pods a (app=web) and b (app=db), each
serving 80/TCP (named http on the a pods) and 53/UDP (named dns); external host
``net`` at 203.0.113.10 serves 80/TCP.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable, Sequence
from typing import Any

import pytest

from harness.core.addressing import plan_addresses
from harness.core.cluster_policy import Action, ClusterPolicy, PeerForm, Tier, in_tier_order, parse_cluster_policy
from harness.core.policy import NetworkPolicy, PolicyType
from harness.core.settings import ImplementationSettings, SelfTraffic
from harness.core.topology import ExternalHost, NamespaceSpec, PodSpec, PortProtocol, PortSpec, Protocol, Topology
from harness.model import ReferenceModel
from tests.manifests import cnp, netpol

TCP80 = PortProtocol(80, Protocol.TCP)
UDP53 = PortProtocol(53, Protocol.UDP)
TOPOLOGY = Topology(
    namespaces=(NamespaceSpec("x", {"env": "prod"}), NamespaceSpec("y", {"env": "dev"})),
    pods=tuple(
        PodSpec(
            ns, pod, {"app": app}, (PortSpec(80, Protocol.TCP, "http" if pod == "a" else None), PortSpec(53, Protocol.UDP, "dns"))
        )
        for ns in "xy"
        for pod, app in (("a", "web"), ("b", "db"))
    ),
    externals=(ExternalHost("net", ipaddress.IPv4Address("203.0.113.10"), (PortSpec(80),)),),
)
ADDRESSES = plan_addresses(TOPOLOGY)
PODS = [p.id for p in TOPOLOGY.pods]


def ns(name: str) -> dict[str, Any]:
    return {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": name}}}


def model(
    policies: Iterable[NetworkPolicy] = (), cluster: Iterable[ClusterPolicy] = (), settings: ImplementationSettings | None = None
) -> ReferenceModel:
    return ReferenceModel(TOPOLOGY, policies, ADDRESSES, settings, cluster)


def allowed(m: ReferenceModel, source: str, destination: str, port: PortProtocol = TCP80) -> bool:
    return m.allowed(source, destination, port)


DENY_INGRESS_FROM_Y = cnp("deny-from-y", "Admin", 10, ns("x"), ingress=[{"action": "Deny", "from": [ns("y")]}])
NP_ALLOW_ALL_TO_X = netpol("x", "allow-all", {"podSelector": {}, "ingress": [{}]})
NP_DENY_Y = netpol("y", "deny-all", {"podSelector": {}, "policyTypes": ["Ingress"]})


def test_an_admin_deny_overrides_a_networkpolicy_allow() -> None:
    m = model([NP_ALLOW_ALL_TO_X], [DENY_INGRESS_FROM_Y])
    assert not allowed(m, "y/a", "x/a") and not allowed(m, "y/b", "x/b")
    assert allowed(m, "x/b", "x/a")
    assert allowed(m, "x/a", "y/b")  # y's ingress is not the subject


def test_an_admin_accept_overrides_networkpolicy_isolation() -> None:
    accept = cnp("accept-from-x", "Admin", 10, ns("y"), ingress=[{"action": "Accept", "from": [ns("x")]}])
    m = model([NP_DENY_Y], [accept])
    assert allowed(m, "x/a", "y/a") and allowed(m, "x/b", "y/b")
    assert not allowed(m, "y/a", "y/b")  # the NetworkPolicy's default deny


def test_a_pass_goes_to_networkpolicies_then_to_the_baseline() -> None:
    passing = cnp("pass-all", "Admin", 5, {"namespaces": {}}, ingress=[{"action": "Pass", "from": [{"namespaces": {}}]}])
    deny_below = cnp(
        "deny-everything", "Admin", 6, {"namespaces": {}}, ingress=[{"action": "Deny", "from": [{"namespaces": {}}]}]
    )
    baseline = cnp("baseline-deny", "Baseline", 1, ns("y"), ingress=[{"action": "Deny", "from": [{"namespaces": {}}]}])
    m = model([NP_ALLOW_ALL_TO_X], [passing, deny_below, baseline])
    # x is isolated by a NetworkPolicy that allows everything: Pass skips the Admin Deny.
    assert allowed(m, "y/a", "x/a")
    # y is not isolated: after the Pass, the Baseline tier decides.
    assert not allowed(m, "x/a", "y/a")
    # Without the Pass, the Admin Deny below it applies everywhere.
    m = model([NP_ALLOW_ALL_TO_X], [deny_below, baseline])
    assert not allowed(m, "y/a", "x/a")


def test_networkpolicy_isolation_is_final_the_baseline_never_applies() -> None:
    baseline_accept = cnp("open", "Baseline", 1, ns("y"), ingress=[{"action": "Accept", "from": [{"namespaces": {}}]}])
    m = model([NP_DENY_Y], [baseline_accept])
    assert not allowed(m, "x/a", "y/a")


def test_a_networkpolicy_overrides_a_baseline_deny() -> None:
    baseline = cnp("default-deny", "Baseline", 1, {"namespaces": {}}, ingress=[{"action": "Deny", "from": [{"namespaces": {}}]}])
    allow_web = netpol("y", "web", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}]})
    m = model([allow_web], [baseline])
    assert allowed(m, "x/a", "y/a")  # y/a is isolated by an allowing NetworkPolicy
    assert not allowed(m, "x/a", "y/b") and not allowed(m, "y/a", "x/b")


def test_baseline_accept_and_pass_and_no_match_allow() -> None:
    rules = [
        {"action": "Accept", "from": [ns("x")], "protocols": [{"tcp": {"destinationPort": {"number": 80}}}]},
        {"action": "Pass", "from": [ns("x")], "protocols": [{"udp": {"destinationPort": {"number": 53}}}]},
        {"action": "Deny", "from": [{"namespaces": {}}]},
    ]
    m = model([], [cnp("baseline", "Baseline", 1, ns("y"), ingress=rules)])
    assert allowed(m, "x/a", "y/a", TCP80) and allowed(m, "x/a", "y/a", UDP53)
    assert not allowed(m, "y/b", "y/a", TCP80)
    assert allowed(m, "y/a", "x/a")  # x is not a subject: nothing matches


def test_lower_priority_values_decide_first() -> None:
    deny = cnp("deny", "Admin", 50, ns("x"), ingress=[{"action": "Deny", "from": [ns("y")]}])
    accept_later = cnp("accept", "Admin", 60, ns("x"), ingress=[{"action": "Accept", "from": [ns("y")]}])
    accept_first = cnp("accept", "Admin", 40, ns("x"), ingress=[{"action": "Accept", "from": [ns("y")]}])
    assert not allowed(model([], [deny, accept_later]), "y/a", "x/a")
    assert allowed(model([], [deny, accept_first]), "y/a", "x/a")


def test_equal_priorities_are_taken_by_name() -> None:
    a = cnp("a-accept", "Admin", 10, ns("x"), ingress=[{"action": "Accept", "from": [ns("y")]}])
    b = cnp("b-deny", "Admin", 10, ns("x"), ingress=[{"action": "Deny", "from": [ns("y")]}])
    assert allowed(model([], [b, a]), "y/a", "x/a")
    assert [p.name for p in in_tier_order([b, a], Tier.ADMIN)] == ["a-accept", "b-deny"]


def test_rules_are_taken_in_the_order_written() -> None:
    accept, deny = {"action": "Accept", "from": [ns("y")]}, {"action": "Deny", "from": [ns("y")]}
    assert allowed(model([], [cnp("p", "Admin", 1, ns("x"), ingress=[accept, deny])]), "y/a", "x/a")
    assert not allowed(model([], [cnp("p", "Admin", 1, ns("x"), ingress=[deny, accept])]), "y/a", "x/a")


def test_directions_are_decided_separately() -> None:
    # An Admin Accept on the source's egress does not open the destination's ingress.
    egress_accept = cnp("out", "Admin", 1, ns("x"), egress=[{"action": "Accept", "to": [ns("y")]}])
    m = model([NP_DENY_Y], [egress_accept])
    assert not allowed(m, "x/a", "y/a")
    # An Admin Deny on egress blocks whatever the destination's ingress says.
    egress_deny = cnp("out", "Admin", 1, ns("x"), egress=[{"action": "Deny", "to": [ns("y")]}])
    ingress_accept = cnp("in", "Admin", 1, ns("y"), ingress=[{"action": "Accept", "from": [ns("x")]}])
    assert not allowed(model([], [egress_deny, ingress_accept]), "x/a", "y/a")
    assert allowed(model([], [egress_deny, ingress_accept]), "y/a", "x/a")


def test_networks_match_pods_and_external_hosts_whatever_ipblock_matches_pods_says() -> None:
    deny_all = cnp("no-out", "Admin", 1, ns("x"), egress=[{"action": "Deny", "to": [{"networks": ["0.0.0.0/0"]}]}])
    for matches_pods in (True, False):
        m = model([], [deny_all], ImplementationSettings(ipblock_matches_pods=matches_pods))
        assert not allowed(m, "x/a", "y/a") and not allowed(m, "x/a", "x/b") and not allowed(m, "x/a", "net")
    ipv6_only = cnp("no-out", "Admin", 1, ns("x"), egress=[{"action": "Deny", "to": [{"networks": ["::/0"]}]}])
    assert allowed(model([], [ipv6_only]), "x/a", "net")


def test_pass_to_pods_before_denying_the_internet() -> None:
    """The upstream advice on networks: Pass pod traffic first, then Deny 0.0.0.0/0."""
    rules = [{"action": "Pass", "to": [{"namespaces": {}}]}, {"action": "Deny", "to": [{"networks": ["0.0.0.0/0"]}]}]
    egress_to_net = netpol(
        "x", "internet", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}
    )
    m = model([egress_to_net], [cnp("no-internet", "Admin", 1, ns("x"), egress=rules)])
    assert allowed(m, "x/a", "y/a") and not allowed(m, "x/a", "net")


def test_ports_numbers_and_named_ports() -> None:
    rules = [
        {"action": "Accept", "from": [ns("y")], "protocols": [{"destinationNamedPort": "http"}]},
        {"action": "Accept", "from": [ns("y")], "protocols": [{"udp": {"destinationPort": {"range": {"start": 50, "end": 60}}}}]},
        {"action": "Deny", "from": [ns("y")]},
    ]
    m = model([], [cnp("ports", "Admin", 1, ns("x"), ingress=rules)])
    # "http" is 80/TCP on x/a; x/b has no port of that name.
    assert allowed(m, "y/a", "x/a", TCP80) and not allowed(m, "y/a", "x/b", TCP80)
    assert allowed(m, "y/a", "x/b", UDP53)


def test_egress_named_ports_resolve_on_each_destination_and_never_on_external_hosts() -> None:
    rules = [
        {"action": "Accept", "to": [{"namespaces": {}}], "protocols": [{"destinationNamedPort": "http"}]},
        {"action": "Deny", "to": [{"namespaces": {}}]},
    ]
    m = model([], [cnp("out", "Admin", 1, ns("x"), egress=rules)])
    assert allowed(m, "x/b", "y/a") and not allowed(m, "x/b", "y/b")
    assert allowed(m, "x/b", "net")  # namespaces peers never match an external host


def test_v1alpha1_kinds_mean_the_same() -> None:
    anp = parse_cluster_policy(
        {
            "apiVersion": "policy.networking.k8s.io/v1alpha1",
            "kind": "AdminNetworkPolicy",
            "metadata": {"name": "pass-y"},
            "spec": {
                "priority": 1,
                "subject": ns("x"),
                "ingress": [{"action": "Pass", "from": [ns("y")]}, {"action": "Allow", "from": [{"namespaces": {}}]}],
            },
        }
    )
    banp = parse_cluster_policy(
        {
            "apiVersion": "policy.networking.k8s.io/v1alpha1",
            "kind": "BaselineAdminNetworkPolicy",
            "metadata": {"name": "default"},
            "spec": {"subject": ns("x"), "ingress": [{"action": "Deny", "from": [ns("y")]}]},
        }
    )
    m = model([], [anp, banp])
    assert not allowed(m, "y/a", "x/a")  # passed, not isolated, baseline Deny
    assert allowed(m, "x/b", "x/a")  # Allow


def test_self_traffic_follows_the_settings() -> None:
    deny_self = cnp("deny", "Admin", 1, ns("x"), ingress=[{"action": "Deny", "from": [ns("x")]}])
    assert allowed(model([], [deny_self]), "x/a", "x/a")
    assert not allowed(model([], [deny_self], ImplementationSettings(self_traffic=SelfTraffic.POLICY)), "x/a", "x/a")


def test_explain_names_the_rule_that_decided() -> None:
    passing = cnp(
        "pass-dev",
        "Admin",
        5,
        ns("x"),
        ingress=[
            {"name": "to-np", "action": "Pass", "from": [ns("y")], "protocols": [{"udp": {"destinationPort": {"number": 53}}}]}
        ],
    )
    m = model(
        [
            NP_DENY_Y,
            netpol(
                "x", "web-only", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}
            ),
        ],
        [DENY_INGRESS_FROM_Y, passing],
    )
    assert (
        m.explain("y/a", "x/a", TCP80)
        == "egress of y/a not isolated; ingress of x/a denied by ClusterNetworkPolicy/deny-from-y ingress[0] "
        "(Deny, Admin tier, priority 10)"
    )
    assert m.explain("y/a", "x/a", UDP53) == (
        "egress of y/a not isolated; ingress of x/a isolated by x/web-only "
        '(passed on by ClusterNetworkPolicy/pass-dev ingress[0] "to-np" (Pass, Admin tier, priority 5)), no rule allows it'
    )
    baseline = cnp(
        "default",
        "Baseline",
        3,
        {"namespaces": {}},
        egress=[{"name": "no-internet", "action": "Deny", "to": [{"networks": ["203.0.113.0/24"]}]}],
    )
    m = model([], [baseline])
    assert (
        m.explain("x/a", "net", TCP80)
        == 'egress of x/a denied by ClusterNetworkPolicy/default egress[0] "no-internet" (Deny, Baseline tier, priority 3)'
    )
    assert m.explain("x/a", "y/a", TCP80) == "egress of x/a not isolated; ingress of y/a not isolated"


def test_node_and_domain_name_peers_match_no_declared_endpoint() -> None:
    """No endpoint of a scenario is a node or has a domain name: such a Deny
    decides no cell, and the rule after it does (backends that cannot enforce
    these peers refuse them: test_cluster_policy_scenarios.py)."""
    peers = [{"nodes": {}}, {"domainNames": ["example.com"]}]
    for peer in peers:
        policy = cnp("out", "Admin", 1, ns("x"), egress=[{"action": "Deny", "to": [peer]}, {"action": "Deny", "to": [ns("y")]}])
        assert policy.egress[0].peers[0].form in (PeerForm.NODES, PeerForm.DOMAIN_NAMES)
        m = model([], [policy])
        assert allowed(m, "x/a", "net") and allowed(m, "x/a", "x/b")
        assert not allowed(m, "x/a", "y/a")
        assert m.explain("x/a", "y/a", TCP80).startswith("egress of x/a denied by ClusterNetworkPolicy/out egress[1]")


# -- against a plain evaluation --------------------------------------------------------


def plain_side(
    direction: PolicyType,
    subject: PodSpec,
    peer: PodSpec | ExternalHost,
    key: PortProtocol,
    policies: Sequence[NetworkPolicy],
    cluster: Sequence[ClusterPolicy],
    settings: ImplementationSettings,
) -> bool:
    """One side of one cell, written from docs/cluster-policies.md with loops only."""
    labels = {n.name: n.labels for n in TOPOLOGY.namespaces}
    destination = subject if direction is PolicyType.INGRESS else peer

    def cluster_rule_matches(rule: Any) -> bool:
        if rule.ports is not None and not any(port.matches(key, destination) for port in rule.ports):
            return False
        for p in rule.peers:
            if p.form is PeerForm.NETWORKS:
                if any(ADDRESSES[peer.id] in n for n in p.networks):
                    return True
            elif isinstance(peer, PodSpec) and p.pods.matches(labels[peer.namespace], peer.labels):
                return True
        return False

    def tier(which: Tier) -> Action | None:
        for policy in sorted((p for p in cluster if p.tier is which), key=lambda p: (p.priority, p.name)):
            if policy.subject.matches(labels[subject.namespace], subject.labels):
                for rule in policy.rules(direction):
                    if cluster_rule_matches(rule):
                        return rule.action
        return None

    admin = tier(Tier.ADMIN)
    if admin is Action.ACCEPT:
        return True
    if admin is Action.DENY:
        return False
    selecting = [
        p
        for p in policies
        if p.namespace == subject.namespace and direction in p.policy_types and p.pod_selector.matches(subject.labels)
    ]
    if selecting:
        # The NetworkPolicy tier: the reference model's own rules, checked on a model
        # without cluster policies (tested on its own in test_model_semantics.py).
        plain = ReferenceModel(TOPOLOGY, policies, ADDRESSES, settings)
        ingress, egress = plain.sides(key)
        if direction is PolicyType.INGRESS:
            return bool(ingress[plain.pod_index[subject.id], plain.pod_index[peer.id]])
        return bool(egress[plain.pod_index[subject.id], plain.dest_index[peer.id]])
    return tier(Tier.BASELINE) is not Action.DENY


def random_cluster_policy(rng: random.Random, name: str) -> ClusterPolicy:
    def selection() -> dict[str, Any]:
        return rng.choice(
            [
                {"namespaces": {}},
                ns(rng.choice("xy")),
                {"namespaces": {"matchLabels": {"env": rng.choice(["prod", "dev"])}}},
                {"pods": {"podSelector": {"matchLabels": {"app": rng.choice(["web", "db"])}}}},
                {"pods": {"namespaceSelector": {"matchLabels": {"env": "prod"}}, "podSelector": {}}},
            ]
        )

    def protocols() -> dict[str, Any]:
        choice = rng.randrange(5)
        if choice == 0:
            return {}
        if choice == 1:
            return {"protocols": [{"tcp": {"destinationPort": {"number": 80}}}]}
        if choice == 2:
            return {"protocols": [{"udp": {"destinationPort": {"range": {"start": 50, "end": 60}}}}]}
        if choice == 3:
            return {"protocols": [{"destinationNamedPort": rng.choice(["http", "dns"])}]}
        return {"protocols": [{"tcp": {"destinationPort": {"number": 81}}}, {"udp": {"destinationPort": {"number": 53}}}]}

    tier = rng.choice(["Admin", "Baseline"])
    actions = ["Accept", "Deny", "Pass"]
    spec: dict[str, Any] = {"tier": tier, "priority": rng.randrange(4), "subject": selection()}
    spec["ingress"] = [{"action": rng.choice(actions), "from": [selection()], **protocols()} for _ in range(rng.randrange(3))]
    egress = []
    for _ in range(rng.randrange(3)):
        extra = protocols()
        if rng.random() < 0.4 and "destinationNamedPort" not in str(extra):
            peer: dict[str, Any] = {"networks": [rng.choice(["0.0.0.0/0", "192.168.1.0/24", "203.0.113.10/32", "::/0"])]}
        else:
            peer = selection()
        egress.append({"action": rng.choice(actions), "to": [peer], **extra})
    spec["egress"] = egress
    return parse_cluster_policy(
        {
            "apiVersion": "policy.networking.k8s.io/v1alpha2",
            "kind": "ClusterNetworkPolicy",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


def random_netpol(rng: random.Random, name: str) -> NetworkPolicy:
    spec: dict[str, Any] = {"podSelector": rng.choice([{}, {"matchLabels": {"app": "web"}}])}
    spec["ingress"] = (
        [{"from": [{"namespaceSelector": {"matchLabels": {"env": rng.choice(["prod", "dev"])}}}]}] if rng.random() < 0.5 else []
    )
    spec["policyTypes"] = rng.choice([["Ingress"], ["Egress"], ["Ingress", "Egress"]])
    if "Egress" in spec["policyTypes"] and rng.random() < 0.5:
        spec["egress"] = [{"to": [{"podSelector": {}}]}]
    return netpol(rng.choice("xy"), name, spec)


@pytest.mark.parametrize("seed", range(40))
def test_the_vectorised_model_agrees_with_a_plain_evaluation(seed: int) -> None:
    rng = random.Random(seed)
    cluster = [random_cluster_policy(rng, f"c{i}") for i in range(rng.randint(1, 4))]
    policies = [random_netpol(rng, f"n{i}") for i in range(rng.randint(0, 2))]
    settings = ImplementationSettings(self_traffic=SelfTraffic.POLICY)
    m = ReferenceModel(TOPOLOGY, policies, ADDRESSES, settings, cluster)
    for key in (TCP80, UDP53, PortProtocol(81, Protocol.TCP)):
        for source in TOPOLOGY.pods:
            for destination in TOPOLOGY.endpoints():
                expected = plain_side(PolicyType.EGRESS, source, destination, key, policies, cluster, settings)
                if isinstance(destination, PodSpec):
                    expected = expected and plain_side(PolicyType.INGRESS, destination, source, key, policies, cluster, settings)
                assert m.allowed(source.id, destination.id, key) is expected, (source.id, destination.id, str(key))
