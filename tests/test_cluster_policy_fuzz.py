"""Fuzzing the cluster policy parser: whatever a manifest holds, parsing it either
succeeds or raises PolicyError (a message naming the field), never another
exception; and whatever it accepts, the reference model and the emulated
backend's compiler can evaluate (or refuse, for peers they cannot enforce)."""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.backends.emulated.ruleset import RulesetInput, render_ruleset
from harness.core.addressing import plan_addresses
from harness.core.cluster_policy import PeerForm, parse_cluster_policy
from harness.core.errors import BackendError, HarnessError, PolicyError
from harness.core.topology import ExternalHost, NamespaceSpec, PodSpec, PortProtocol, PortSpec, Protocol, Topology
from harness.model import ReferenceModel
from tests.mutations import mutate

FUZZ = settings(
    max_examples=int(os.environ.get("NETPOL_FUZZ_EXAMPLES", "300")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

SELECTOR: dict[str, Any] = {
    "matchLabels": {"app": "web"},
    "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}],
}
#: Every field of both versions, so that mutations reach every part of the parser.
SEEDS: list[dict[str, Any]] = [
    {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": "seed"},
        "spec": {
            "tier": "Admin",
            "priority": 10,
            "subject": {"pods": {"namespaceSelector": SELECTOR, "podSelector": {}}},
            "ingress": [
                {
                    "name": "in",
                    "action": "Pass",
                    "from": [{"namespaces": SELECTOR}],
                    "protocols": [{"destinationNamedPort": "http"}],
                }
            ],
            "egress": [
                {
                    "action": "Deny",
                    "to": [{"networks": ["10.0.0.0/8", "::/0"]}, {"pods": {"podSelector": SELECTOR}}],
                    "protocols": [
                        {"tcp": {"destinationPort": {"number": 80}}},
                        {"udp": {"destinationPort": {"range": {"start": 50, "end": 60}}}},
                        {"sctp": {"destinationPort": {"number": 9003}}},
                    ],
                },
                {"action": "Accept", "to": [{"nodes": {}}, {"domainNames": ["*.example.com"]}]},
            ],
        },
    },
    {
        "apiVersion": "policy.networking.k8s.io/v1alpha1",
        "kind": "AdminNetworkPolicy",
        "metadata": {"name": "seed"},
        "spec": {
            "priority": 5,
            "subject": {"namespaces": {}},
            "ingress": [{"action": "Allow", "from": [{"pods": {"namespaceSelector": {}, "podSelector": SELECTOR}}]}],
            "egress": [
                {
                    "action": "Pass",
                    "to": [{"namespaces": {}}],
                    "ports": [
                        {"portNumber": {"protocol": "UDP", "port": 53}},
                        {"portRange": {"start": 8000, "end": 8080}},
                        {"namedPort": "dns"},
                    ],
                }
            ],
        },
    },
    {
        "apiVersion": "policy.networking.k8s.io/v1alpha1",
        "kind": "BaselineAdminNetworkPolicy",
        "metadata": {"name": "default"},
        "spec": {"subject": {"namespaces": {}}, "egress": [{"action": "Deny", "to": [{"networks": ["0.0.0.0/0"]}]}]},
    },
]

# fmt: off
KEYS = [
    "apiVersion", "kind", "metadata", "name", "namespace", "spec", "status", "tier", "priority", "subject", "ingress",
    "egress", "action", "from", "to", "protocols", "ports", "namespaces", "pods", "networks", "nodes", "domainNames",
    "namespaceSelector", "podSelector", "matchLabels", "matchExpressions", "key", "operator", "values", "tcp", "udp",
    "sctp", "destinationPort", "destinationNamedPort", "number", "range", "start", "end", "portNumber", "portRange",
    "namedPort", "protocol", "port",
]
STRINGS = [
    "", "Admin", "Baseline", "Accept", "Allow", "Deny", "Pass", "TCP", "UDP", "SCTP", "ICMP", "default", "http", "dns",
    "0.0.0.0/0", "::/0", "10.0.0.1/8", "10.0.0.0/08", "fe80::1%eth0/64", "::ffff:1.2.3.4/128", "*.example.com",
    "In", "Exists", "ClusterNetworkPolicy", "AdminNetworkPolicy", "BaselineAdminNetworkPolicy",
    "policy.networking.k8s.io/v1alpha2", "policy.networking.k8s.io/v1alpha1", "a" * 120,
]
# fmt: on
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.sampled_from([0, 1, 80, 1000, 1001, 65535, 65536])
    | st.floats(allow_nan=True)
    | st.sampled_from(STRINGS)
    | st.text(max_size=10)
)
keys = st.sampled_from(KEYS) | st.text(max_size=6) | st.integers(-2, 2) | st.none()
junk = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(keys, c, max_size=3), max_leaves=12)


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    return mutate(draw, draw(st.sampled_from(SEEDS)), draw(st.integers(1, 3)), junk, keys)


TOPOLOGY = Topology(
    namespaces=(NamespaceSpec("x", {"env": "prod"}), NamespaceSpec("y")),
    pods=(
        PodSpec("x", "a", {"app": "web"}, (PortSpec(80, Protocol.TCP, "http"), PortSpec(53, Protocol.UDP, "dns"))),
        PodSpec("y", "b", {"app": "db"}, (PortSpec(80),)),
    ),
    externals=(ExternalHost("net", ipaddress.IPv4Address("203.0.113.10"), (PortSpec(80),)),),
)
ADDRESSES = plan_addresses(TOPOLOGY)


@FUZZ
@given(doc=mutated())
def test_mutated_manifests_parse_or_raise_policy_error_and_evaluate(doc: Any) -> None:
    try:
        policy = parse_cluster_policy(doc, "fuzz.yaml")
    except PolicyError as err:
        assert err.source == "fuzz.yaml" and str(err)
        return
    unenforceable = any(
        peer.form in (PeerForm.NODES, PeerForm.DOMAIN_NAMES) for rule in policy.ingress + policy.egress for peer in rule.peers
    )
    try:
        model = ReferenceModel(TOPOLOGY, (), ADDRESSES, None, [policy])
    except HarnessError:
        assert unenforceable
        return
    for key in (PortProtocol(80, Protocol.TCP), PortProtocol(53, Protocol.UDP)):
        assert model.allowed_matrix(key).shape == (2, 3)
    interfaces = {ep.id: f"veth{i}" for i, ep in enumerate(TOPOLOGY.endpoints())}
    data = RulesetInput("nph-1-abcd", TOPOLOGY, ADDRESSES, interfaces, (), True, (policy,))
    try:
        ruleset = render_ruleset(data)
    except BackendError as err:
        # The model evaluates node and domain-name peers; the emulated backend refuses
        # to compile one it reaches (a run names them as unsupported before this).
        assert unenforceable and "the emulated backend cannot enforce" in str(err)
        return
    assert ruleset.startswith("table inet nph-1-abcd\n")


def test_the_seeds_are_valid() -> None:
    for seed in SEEDS:
        parse_cluster_policy(seed, "seed.yaml")
