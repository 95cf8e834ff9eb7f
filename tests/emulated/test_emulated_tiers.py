"""The compiler of cluster policy tiers to nftables chains (harness/backends/emulated/tiers.py),
rendered as text: no root needed. That the chains do on real packets what the
reference model says is tests/emulated/test_differential.py's business."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import pytest

from harness.backends.emulated.ruleset import RulesetInput, render_ruleset, render_self_rulesets
from harness.core.cluster_policy import ClusterPolicy
from harness.core.errors import UnsupportedPolicy
from harness.core.policy import NetworkPolicy
from harness.core.settings import ImplementationSettings
from harness.core.state import DesiredState
from harness.core.topology import ExternalHost, NamespaceSpec, PodSpec, PortSpec, Protocol, Topology
from tests.manifests import cnp, netpol

pytestmark = pytest.mark.emulated

IP = ipaddress.IPv4Address
TOPOLOGY = Topology(
    namespaces=(NamespaceSpec("x", {"env": "prod"}), NamespaceSpec("y")),
    pods=(
        PodSpec("x", "a", {"app": "web"}, (PortSpec(80, Protocol.TCP, "http"),)),
        PodSpec("x", "b", {"app": "db"}, (PortSpec(8080, Protocol.TCP, "http"), PortSpec(53, Protocol.UDP, "dns"))),
        PodSpec("y", "a", {"app": "web"}, (PortSpec(80),)),
    ),
    externals=(ExternalHost("api", IP("203.0.113.10"), (PortSpec(443),)),),
)
ADDRESSES = {"x/a": IP("192.168.1.1"), "x/b": IP("192.168.1.2"), "y/a": IP("192.168.2.1"), "api": IP("203.0.113.10")}
INTERFACES = {"x/a": "veth0", "x/b": "veth1", "y/a": "veth2", "api": "veth3"}
PROD: dict[str, Any] = {"namespaces": {"matchLabels": {"env": "prod"}}}
EVERYWHERE: dict[str, Any] = {"namespaces": {}}


def data(policies: tuple[NetworkPolicy, ...], cluster: tuple[ClusterPolicy, ...]) -> RulesetInput:
    return RulesetInput("nph-1-abcd", TOPOLOGY, ADDRESSES, INTERFACES, policies, True, cluster)


def render(*cluster: ClusterPolicy, policies: tuple[NetworkPolicy, ...] = ()) -> str:
    return render_ruleset(data(policies, cluster))


def chain(ruleset: str, name: str) -> list[str]:
    """The rules of chain ``name``, comments removed and log statements shortened
    to ``log <prefix kind and number>`` (``log t0``: the first tier rule's drop)."""
    lines = ruleset.split(f"chain {name} {{\n", 1)[1].split("\t}\n", 1)[0].splitlines()
    return [re.sub(r'log prefix "nph \d+ (\w+)" group 1', r"log \1", line.strip().split(' comment "')[0]) for line in lines]


def test_admin_rules_in_priority_order_then_the_next_tier() -> None:
    deny = cnp(
        "deny-y",
        "Admin",
        20,
        PROD,
        ingress=[{"action": "Deny", "from": [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}]}],
    )
    passing = cnp(
        "pass-web",
        "Admin",
        10,
        PROD,
        ingress=[{"action": "Pass", "from": [{"pods": {"podSelector": {"matchLabels": {"app": "web"}}}}]}],
    )
    baseline = cnp("default", "Baseline", 1, EVERYWHERE, ingress=[{"action": "Deny", "from": [EVERYWHERE]}])
    ruleset = render(deny, passing, baseline)
    # The Pass (priority 10) before the Deny (20); a Pass logs the first packet of a
    # flow (every UDP datagram) so that explanations can say what passed it on.
    assert chain(ruleset, "ingress-x/b") == [
        "ip saddr { 192.168.1.1, 192.168.2.1 } meta l4proto udp log p1 goto ingress-x/b.next",
        "ip saddr { 192.168.1.1, 192.168.2.1 } ct state new log p1 goto ingress-x/b.next",
        "ip saddr { 192.168.1.1, 192.168.2.1 } goto ingress-x/b.next",
        "ip saddr { 192.168.2.1 } log t2 drop",
        "goto ingress-x/b.next",
    ]
    assert chain(ruleset, "ingress-x/b.next") == ["ip saddr { 192.168.1.1, 192.168.1.2, 192.168.2.1 } log t0 drop"]
    # y is selected by the Baseline tier only: its chain is the Baseline rules.
    assert chain(ruleset, "ingress-y/a") == ["ip saddr { 192.168.1.1, 192.168.1.2, 192.168.2.1 } log t0 drop"]
    assert 'oifname vmap { "veth0" : jump ingress-x/a, "veth1" : jump ingress-x/b, "veth2" : jump ingress-y/a }' in ruleset


def test_networkpolicies_replace_the_baseline_tier_for_the_pods_they_isolate() -> None:
    baseline = cnp("default", "Baseline", 1, EVERYWHERE, egress=[{"action": "Deny", "to": [{"networks": ["0.0.0.0/0"]}]}])
    allow_api = netpol(
        "x",
        "to-api",
        {
            "podSelector": {"matchLabels": {"app": "web"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]}],
        },
    )
    ruleset = render(baseline, policies=(allow_api,))
    assert chain(ruleset, "egress-x/a") == ["ip daddr { 203.0.113.0/24 } goto admit-0", "log d0 drop"]
    assert chain(ruleset, "egress-x/b") == ["ip daddr { 0.0.0.0/0 } log t0 drop"]


def test_admin_accept_admits_and_without_a_next_tier_pass_returns() -> None:
    policy = cnp(
        "out",
        "Admin",
        1,
        PROD,
        egress=[
            {"action": "Pass", "to": [{"networks": ["192.168.0.0/16"]}]},
            {
                "action": "Accept",
                "to": [{"networks": ["203.0.113.10/32", "::/0"]}],
                "protocols": [{"tcp": {"destinationPort": {"number": 443}}}],
            },
            {"action": "Deny", "to": [{"networks": ["0.0.0.0/0", "::/0"]}]},
        ],
    )
    ruleset = render(policy)
    assert chain(ruleset, "egress-x/a") == [
        "ip daddr { 192.168.0.0/16 } return",
        "ip daddr { 203.0.113.10 } meta l4proto tcp th dport 443 goto admit-0",
        "ip daddr { 0.0.0.0/0 } log t0 drop",
    ]
    # The admit chain logs the flow's first packet under the rule's prefix, then returns.
    assert chain(ruleset, "admit-0") == ["meta l4proto udp log a0", "meta l4proto != udp ct state new log a0"]


def test_named_ports_resolve_on_the_subject_for_ingress_and_per_destination_for_egress() -> None:
    policy = cnp(
        "named",
        "Admin",
        1,
        {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "db"}}}},
        ingress=[{"action": "Accept", "from": [EVERYWHERE], "protocols": [{"destinationNamedPort": "dns"}]}],
        egress=[
            {
                "action": "Deny",
                "to": [EVERYWHERE],
                "protocols": [
                    {"destinationNamedPort": "http"},
                    {"udp": {"destinationPort": {"range": {"start": 50, "end": 60}}}},
                ],
            }
        ],
    )
    ruleset = render(policy)
    assert chain(ruleset, "ingress-x/b") == [
        "ip saddr { 192.168.1.1, 192.168.1.2, 192.168.2.1 } meta l4proto udp th dport 53 goto admit-0"
    ]
    assert chain(ruleset, "egress-x/b") == [
        "ip daddr { 192.168.1.1, 192.168.1.2, 192.168.2.1 } meta l4proto udp th dport 50-60 log t0 drop",
        "meta l4proto tcp ip daddr . th dport { 192.168.1.1 . 80, 192.168.1.2 . 8080 } log t0 drop",
    ]


def test_rules_whose_peers_select_nobody_are_left_out() -> None:
    policy = cnp(
        "none", "Admin", 1, PROD, ingress=[{"action": "Deny", "from": [{"namespaces": {"matchLabels": {"env": "none"}}}]}]
    )
    assert "chain ingress-x/a" not in render(policy)


def test_self_traffic_tables_hold_the_next_tier_chain() -> None:
    policy = cnp("deny", "Admin", 1, PROD, ingress=[{"action": "Pass", "from": [PROD]}])
    isolate = netpol("x", "isolate", {"podSelector": {}})
    table = render_self_rulesets(data((isolate,), (policy,)))["x/a"]
    assert chain(table, "output")[-1] == "ip saddr 192.168.1.1 ip daddr 192.168.1.1 jump ingress-x/a"
    assert chain(table, "ingress-x/a.next") == ["log d0 drop"]


def test_the_backend_refuses_peers_it_cannot_enforce_before_applying(tmp_path: Any) -> None:
    from harness.backends.emulated.backend import EmulatedBackend

    backend = EmulatedBackend()
    try:
        backend.deploy(TOPOLOGY, ImplementationSettings())
        nodes = cnp("nodes", "Admin", 1, PROD, egress=[{"action": "Deny", "to": [{"nodes": {}}]}])
        ruleset = backend.ruleset
        with pytest.raises(UnsupportedPolicy, match=r"spec.egress\[0\].to\[0\].nodes: backend emulated cannot enforce this"):
            backend.converge(DesiredState(TOPOLOGY).with_policies([nodes]))
        assert backend.ruleset == ruleset  # nothing was loaded
    finally:
        backend.close()
