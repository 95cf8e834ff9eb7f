"""Representative addresses and ports: what the reference model is asked about so
that every IPv4 address outside the cluster and every port is covered without
enumerating them.

Policies tell destination addresses apart only by CIDR membership: a NetworkPolicy's
``ipBlock`` (``cidr`` and ``except``), a Calico policy's ``nets``/``notNets`` (which
the model reads as ipBlocks, harness/core/calico/conversion.py), a cluster policy's
``networks`` peer. Two addresses inside exactly the same CIDRs are matched by the
same peers, so the ends of every CIDR mentioned cut IPv4 into ranges whose
addresses are all treated alike, and one address per range answers for the whole
range. Selectors never match an address outside the cluster.

Ports likewise: a rule names a port, a range (``endPort``; a cluster policy's
``start``-``end``) or every port of a protocol, so the ends of every range cut each
protocol's 1-65535 into ranges treated alike. A named port resolves to a number a
pod declares, so when a policy uses one, the ports pods declare are ends too.

Representative hosts and ports are for the model only: nothing ever sends a packet
to them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from harness.core.cluster_policy import ClusterPolicy
from harness.core.policy import NetworkPolicy, PolicyType
from harness.core.topology import POD_CIDR, ExternalHost, PortProtocol, Protocol, Topology

_IPV4_END = 1 << 32
_PORT_END = 65536


@dataclass(frozen=True, order=True)
class AddressRange:
    """The IPv4 addresses ``first``..``last`` (inclusive), all treated alike by the
    policies the range was cut for."""

    first: ipaddress.IPv4Address
    last: ipaddress.IPv4Address

    @property
    def size(self) -> int:
        return int(self.last) - int(self.first) + 1

    def __str__(self) -> str:
        """``8.8.8.8``, ``10.0.0.0/8`` when the range is one CIDR, else ``first-last``."""
        if self.first == self.last:
            return str(self.first)
        networks = list(ipaddress.summarize_address_range(self.first, self.last))
        return str(networks[0]) if len(networks) == 1 else f"{self.first}-{self.last}"

    @property
    def endpoint_id(self) -> str:
        """The name of its representative host in a model: brackets and no ``/``, so it
        never collides with a declared external host or reads as a pod."""
        return f"[{self.first}]" if self.first == self.last else f"[{self.first}-{self.last}]"

    def host(self) -> ExternalHost:
        """A host at the range's first address, serving nothing: a column of a model."""
        return ExternalHost(self.endpoint_id, self.first)


@dataclass(frozen=True, order=True)
class PortRange:
    """Ports ``first``..``last`` (inclusive) of one protocol, treated alike."""

    protocol: Protocol
    first: int
    last: int

    @property
    def key(self) -> PortProtocol:
        """The representative port: the first of the range."""
        return PortProtocol(self.first, self.protocol)

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def __str__(self) -> str:
        if self.first == self.last:
            return f"{self.first}/{self.protocol.value}"
        return f"{self.first}-{self.last}/{self.protocol.value}"


def policy_networks(
    policies: Iterable[NetworkPolicy], cluster_policies: Iterable[ClusterPolicy]
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Every CIDR the policies match addresses with."""
    out: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for policy in policies:
        for rule in (*policy.ingress, *policy.egress):
            for peer in rule.peers:
                if peer.ip_block is not None:
                    out.append(peer.ip_block.cidr)
                    out.extend(peer.ip_block.excepts)
    for cluster_policy in cluster_policies:
        for direction in PolicyType:
            for cluster_rule in cluster_policy.rules(direction):
                for cluster_peer in cluster_rule.peers:
                    out.extend(cluster_peer.networks)
    return out


def address_ranges(
    networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network], inside: ipaddress.IPv4Network = POD_CIDR
) -> tuple[AddressRange, ...]:
    """IPv4 outside ``inside`` (the cluster's pod range), cut at the ends of every
    network of ``networks`` (IPv6 ones cut nothing: every address here is IPv4)."""
    ends = {0, _IPV4_END, int(inside.network_address), int(inside.broadcast_address) + 1}
    for network in networks:
        if isinstance(network, ipaddress.IPv4Network):
            ends.add(int(network.network_address))
            ends.add(int(network.broadcast_address) + 1)
    points = sorted(ends)
    ranges = []
    for start, stop in zip(points, points[1:], strict=False):
        first = ipaddress.IPv4Address(start)
        if first not in inside:
            ranges.append(AddressRange(first, ipaddress.IPv4Address(stop - 1)))
    return tuple(ranges)


def policy_port_ranges(
    policies: Iterable[NetworkPolicy], cluster_policies: Iterable[ClusterPolicy], topology: Topology
) -> list[tuple[Protocol, int, int]]:
    """Every port range the policies' rules name, as ``(protocol, first, last)``; the
    ports pods declare when a rule names a port by name."""
    out: list[tuple[Protocol, int, int]] = []
    named = False
    for policy in policies:
        for rule in (*policy.ingress, *policy.egress):
            for entry in rule.ports:
                if isinstance(entry.port, str):
                    named = True
                elif entry.port is not None:
                    out.append((entry.protocol, entry.port, entry.end_port if entry.end_port is not None else entry.port))
    for cluster_policy in cluster_policies:
        for direction in PolicyType:
            for cluster_rule in cluster_policy.rules(direction):
                for port in cluster_rule.ports or ():
                    if port.name is not None:
                        named = True
                    elif port.protocol is not None and port.start <= port.end:
                        out.append((port.protocol, port.start, port.end))
    if named:
        out.extend((spec.protocol, spec.port, spec.port) for pod in topology.pods for spec in pod.ports)
    return out


def port_ranges(ranges: Iterable[tuple[Protocol, int, int]]) -> tuple[PortRange, ...]:
    """Every port of every protocol, cut at the ends of ``ranges``: TCP, UDP and SCTP,
    each 1-65535 in ranges treated alike."""
    ends: dict[Protocol, set[int]] = {protocol: {1, _PORT_END} for protocol in Protocol}
    for protocol, first, last in ranges:
        ends[protocol].add(max(1, first))
        ends[protocol].add(min(_PORT_END, last + 1))
    out = []
    for protocol in Protocol:
        points = sorted(ends[protocol])
        out += [PortRange(protocol, start, stop - 1) for start, stop in zip(points, points[1:], strict=False)]
    return tuple(out)
