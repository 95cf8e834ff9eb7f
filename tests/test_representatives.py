"""Representative addresses and ports: the ranges the policies' CIDRs and ports cut,
and, on random policies, that the reference model gives every address and port of a
range the verdict it gives the range's representative."""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.core.addressing import plan_addresses
from harness.core.cluster_policy import parse_cluster_policy
from harness.core.policy import parse_policy
from harness.core.topology import POD_CIDR, ExternalHost, NamespaceSpec, PodSpec, PortProtocol, PortSpec, Protocol, Topology
from harness.model import ReferenceModel
from harness.model.representatives import (
    AddressRange,
    PortRange,
    address_ranges,
    policy_networks,
    policy_port_ranges,
    port_ranges,
)

IP = ipaddress.IPv4Address
NET = ipaddress.IPv4Network


def egress(*rules: dict[str, Any], name: str = "out") -> Any:
    return parse_policy(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": "x"},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": list(rules)},
        }
    )


def test_cidr_ends_cut_the_addresses_outside_the_pod_range() -> None:
    ranges = address_ranges([NET("8.8.8.8/32"), NET("10.0.0.0/8"), NET("192.168.5.0/24"), ipaddress.ip_network("fd00::/8")])
    assert [str(r) for r in ranges] == [
        "0.0.0.0-8.8.8.7",
        "8.8.8.8",
        "8.8.8.9-9.255.255.255",
        "10.0.0.0/8",
        "11.0.0.0-192.167.255.255",
        "192.169.0.0-255.255.255.255",
    ]
    # Nothing inside the pod range: 192.168.5.0/24 cuts only what is already the cluster.
    assert not any(
        int(r.first) <= int(POD_CIDR.broadcast_address) and int(r.last) >= int(POD_CIDR.network_address) for r in ranges
    )
    assert sum(r.size for r in ranges) == 2**32 - POD_CIDR.num_addresses
    host = ranges[1].host()
    assert (host.id, host.ip, host.ports) == ("[8.8.8.8]", IP("8.8.8.8"), ())
    assert ranges[0].endpoint_id == "[0.0.0.0-8.8.8.7]"
    assert "/" not in "".join(r.endpoint_id for r in ranges)


def test_without_cidrs_two_ranges_stand_for_everything_outside_the_cluster() -> None:
    assert address_ranges([]) == (
        AddressRange(IP("0.0.0.0"), IP("192.167.255.255")),
        AddressRange(IP("192.169.0.0"), IP("255.255.255.255")),
    )


def test_port_ends_cut_each_protocol() -> None:
    ranges = port_ranges([(Protocol.TCP, 53, 53), (Protocol.TCP, 8000, 8100), (Protocol.UDP, 1, 1), (Protocol.UDP, 65535, 65535)])
    by_protocol = {p: [str(r) for r in ranges if r.protocol is p] for p in Protocol}
    assert by_protocol[Protocol.TCP] == ["1-52/TCP", "53/TCP", "54-7999/TCP", "8000-8100/TCP", "8101-65535/TCP"]
    assert by_protocol[Protocol.UDP] == ["1/UDP", "2-65534/UDP", "65535/UDP"]
    assert by_protocol[Protocol.SCTP] == ["1-65535/SCTP"]
    assert PortRange(Protocol.TCP, 54, 7999).key == PortProtocol(54, Protocol.TCP)


def test_the_policies_ends_come_from_ipblocks_networks_ports_and_named_ports() -> None:
    policy = egress(
        {"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}], "ports": [{"port": 443}]},
        {"to": [{"namespaceSelector": {}}], "ports": [{"port": "metrics"}, {"protocol": "UDP", "port": 5000, "endPort": 5010}]},
    )
    cluster = parse_cluster_policy(
        {
            "apiVersion": "policy.networking.k8s.io/v1alpha2",
            "kind": "ClusterNetworkPolicy",
            "metadata": {"name": "c"},
            "spec": {
                "tier": "Admin",
                "priority": 1,
                "subject": {"namespaces": {}},
                "egress": [
                    {
                        "action": "Deny",
                        "to": [{"networks": ["203.0.113.0/24"]}],
                        "protocols": [{"tcp": {"destinationPort": {"range": {"start": 20, "end": 22}}}}],
                    }
                ],
            },
        }
    )
    topology = Topology((NamespaceSpec("x"),), (PodSpec("x", "a", {}, (PortSpec(9090, Protocol.TCP, "metrics"),)),))
    assert [str(n) for n in policy_networks([policy], [cluster])] == ["10.0.0.0/8", "10.1.0.0/16", "203.0.113.0/24"]
    assert sorted(policy_port_ranges([policy], [cluster], topology)) == sorted(
        [(Protocol.TCP, 443, 443), (Protocol.UDP, 5000, 5010), (Protocol.TCP, 20, 22), (Protocol.TCP, 9090, 9090)]
    )


_cidrs = st.builds(
    lambda address, bits: str(NET((address, bits), strict=False)),
    st.integers(0, 2**32 - 1),
    st.integers(1, 32),
)
_ports = st.lists(
    st.tuples(st.sampled_from(["TCP", "UDP", "SCTP"]), st.integers(1, 65535), st.integers(0, 3000)), min_size=0, max_size=3
)


@st.composite
def _rules(draw: st.DrawFn) -> list[dict[str, Any]]:
    rules = []
    for _ in range(draw(st.integers(1, 3))):
        cidr = NET(draw(_cidrs))
        inside = [str(n) for n in draw(st.lists(_cidrs, max_size=2)) if NET(n).subnet_of(cidr) and NET(n) != cidr]
        ports = []
        for protocol, port, width in draw(_ports):
            entry: dict[str, Any] = {"protocol": protocol, "port": port}
            if width and port + width <= 65535:
                entry["endPort"] = port + width
            ports.append(entry)
        rule: dict[str, Any] = {"to": [{"ipBlock": {"cidr": str(cidr), "except": inside}}]}
        if ports:
            rule["ports"] = ports
        rules.append(rule)
    return rules


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rules=_rules(),
    addresses=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=12),
    probes=st.lists(st.tuples(st.sampled_from(list(Protocol)), st.integers(1, 65535)), min_size=1, max_size=6),
)
def test_every_address_and_port_of_a_range_gets_its_representatives_verdict(
    rules: list[dict[str, Any]], addresses: list[int], probes: list[tuple[Protocol, int]]
) -> None:
    policy = egress(*rules)
    pod = PodSpec("x", "a")
    topology = Topology((NamespaceSpec("x"),), (pod,))
    hosts = address_ranges(policy_networks([policy], []))
    ports = port_ranges(policy_port_ranges([policy], [], topology))
    outside = [IP(a) for a in addresses if IP(a) not in POD_CIDR]
    # Also the ends of every range, where an off-by-one would show.
    outside += [r.last for r in hosts]
    externals = tuple(ExternalHost(f"h{i}", ip) for i, ip in enumerate(outside)) + tuple(h.host() for h in hosts)
    full = Topology(topology.namespaces, topology.pods, externals)
    model = ReferenceModel(full, [policy], plan_addresses(full))
    column = {e.id: i + 1 for i, e in enumerate(externals)}
    probes += [(r.protocol, r.last) for r in ports]
    for protocol, number in probes:
        key = PortProtocol(number, protocol)
        port_range = next(r for r in ports if r.protocol is protocol and r.first <= number <= r.last)
        for i, ip in enumerate(outside):
            address_range = next(r for r in hosts if r.first <= ip <= r.last)
            here = model.allowed_matrix(key)[0, column[f"h{i}"]]
            representative = model.allowed_matrix(port_range.key)[0, column[address_range.endpoint_id]]
            assert here == representative, (ip, key, address_range, port_range)
