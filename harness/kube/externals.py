"""Destinations outside the cluster (``topology.externals``) on a kind cluster.

Each external host is an agnhost porter container at its declared IPv4 address.
An address such as 203.0.113.10 is not in the ``kind`` Docker network, so the
harness creates one Docker bridge network per /24 that holds external hosts
(203.0.113.0/24), attaches every kind node to it with an address of its own, and
starts the hosts there.

These networks are created ``--internal``: Docker gives them no route off the
machine (no masquerading, no forwarding to other interfaces, and no default
gateway for the containers on them), so an external host answers the kind nodes
and nothing else, and a probe sent to one never leaves the machine.

The reply path stays on-link. A pod's packet to 203.0.113.10 leaves its node
through the interface on that network (the node has a connected route to the
/24), with the pod's address translated to the node's address on that interface by
Calico's ``natOutgoing`` (on in Calico's default IP pool; it masquerades traffic
from the pool to any address outside it). The host answers that address, which is
in its own /24, so the reply goes straight back to the node over the bridge, where
the translation is undone. Nothing is routed through the gateway, which an internal
network does not forward anyway. Egress policy is enforced at the source pod, before
that translation. The gateway of each network (the host bridge) and the node
addresses are taken from the top of the /24, below the hosts' own.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from harness.core.errors import BackendError
from harness.core.progress import Progress
from harness.core.topology import ExternalHost
from harness.kube.manifests import RUN_AS_USER, UNPRIVILEGED_PORT_SYSCTL, needs_low_ports, porter_env
from harness.kube.tools import last_line, run

LABEL = "netpol-harness.cluster"
DOCKER_TIMEOUT = 60.0


@dataclass(frozen=True)
class ExternalNetwork:
    name: str
    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    node_addresses: Mapping[str, ipaddress.IPv4Address] = field(hash=False)
    hosts: tuple[ExternalHost, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "node_addresses", MappingProxyType(dict(self.node_addresses)))


def _dns_part(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def network_name(cluster: str, subnet: ipaddress.IPv4Network) -> str:
    return f"nph-{_dns_part(cluster)}-{str(subnet.network_address).replace('.', '-')}"


def container_name(cluster: str, host: ExternalHost) -> str:
    return f"nph-{_dns_part(cluster)}-{_dns_part(host.name)}"


def plan_networks(
    cluster: str,
    externals: Sequence[ExternalHost],
    nodes: Sequence[str],
    taken: Iterable[ipaddress.IPv4Network] = (),
) -> list[ExternalNetwork]:
    """One network per /24 holding external hosts, with a gateway and one address
    per node that no host uses."""
    groups: dict[ipaddress.IPv4Network, list[ExternalHost]] = {}
    for host in externals:
        subnet = ipaddress.IPv4Network(f"{host.ip}/24", strict=False)
        if host.ip in (subnet.network_address, subnet.broadcast_address):
            raise BackendError(
                f"external host {host.name}: {host.ip} is the network or broadcast address of {subnet}; "
                "the kind backend serves external hosts on a /24, so choose another address"
            )
        groups.setdefault(subnet, []).append(host)
    taken = list(taken)
    networks = []
    for subnet, hosts in sorted(groups.items()):
        clash = [t for t in taken if t.overlaps(subnet)]
        if clash:
            raise BackendError(
                f"external host {hosts[0].name} ({hosts[0].ip}) is inside Docker network {clash[0]}, which the "
                "kind nodes already use; choose an address outside the Docker and kind networks "
                "(e.g. from 198.51.100.0/24 or 203.0.113.0/24)"
            )
        used = {h.ip for h in hosts}
        free = [ip for ip in reversed(list(subnet.hosts())) if ip not in used]
        if len(free) < len(nodes) + 1:
            raise BackendError(f"{subnet} has no room for a gateway and {len(nodes)} node address(es) beside its external hosts")
        gateway, node_ips = free[0], free[1 : len(nodes) + 1]
        addresses = dict(zip(sorted(nodes), node_ips, strict=True))
        networks.append(ExternalNetwork(network_name(cluster, subnet), subnet, gateway, addresses, tuple(hosts)))
    return networks


def network_create_command(docker: Path, cluster: str, network: ExternalNetwork) -> list[str]:
    return [
        str(docker),
        "network",
        "create",
        "--driver",
        "bridge",
        # No route off the machine: the hosts answer the nodes on the same bridge only.
        "--internal",
        "--subnet",
        str(network.subnet),
        "--gateway",
        str(network.gateway),
        "--label",
        f"{LABEL}={cluster}",
        network.name,
    ]


def network_connect_command(docker: Path, network: ExternalNetwork, node: str) -> list[str]:
    return [str(docker), "network", "connect", "--ip", str(network.node_addresses[node]), network.name, node]


def container_run_command(docker: Path, cluster: str, network: ExternalNetwork, host: ExternalHost, image: str) -> list[str]:
    """The external host: agnhost porter at the host's address, unprivileged and
    read-only, answering with the host's name."""
    args = [
        str(docker),
        "run",
        "--detach",
        "--name",
        container_name(cluster, host),
        "--label",
        f"{LABEL}={cluster}",
        "--network",
        network.name,
        "--ip",
        str(host.ip),
        "--user",
        f"{RUN_AS_USER}:{RUN_AS_USER}",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
    ]
    if needs_low_ports(host.ports):
        args += ["--sysctl", f"{UNPRIVILEGED_PORT_SYSCTL}=0"]
    for env in porter_env(host.ports, host.id):
        args += ["--env", f"{env['name']}={env['value']}"]
    return [*args, image, "porter"]


class ExternalHosts:
    """Starts and removes the external hosts of one kind cluster."""

    def __init__(self, docker: Path, kind: Path, cluster: str, image: str, progress: Progress) -> None:
        self.docker = docker
        self.kind = kind
        self.cluster = cluster
        self.image = image
        self.progress = progress
        self.current: tuple[ExternalHost, ...] = ()

    def _run(self, args: Sequence[str], what: str) -> str:
        result = run(args, DOCKER_TIMEOUT)
        if result.returncode != 0:
            raise BackendError(f"cannot {what}: {last_line(result.stderr) or last_line(result.stdout) or result.returncode}")
        return result.stdout

    def nodes(self) -> list[str]:
        return self._run([str(self.kind), "get", "nodes", "--name", self.cluster], "list the kind nodes").split()

    def docker_subnets(self) -> list[ipaddress.IPv4Network]:
        ids = self._run([str(self.docker), "network", "ls", "--quiet"], "list Docker networks").split()
        if not ids:
            return []
        out = self._run(
            [str(self.docker), "network", "inspect", "--format", "{{range .IPAM.Config}}{{.Subnet}} {{end}}", *ids],
            "inspect Docker networks",
        )
        subnets = []
        for word in out.split():
            try:
                net = ipaddress.ip_network(word, strict=False)
            except ValueError:
                continue
            if isinstance(net, ipaddress.IPv4Network):
                subnets.append(net)
        return subnets

    def start(self, externals: Sequence[ExternalHost]) -> None:
        """Serve exactly ``externals`` (removing any earlier set)."""
        if tuple(externals) == self.current:
            return
        self.stop()
        if not externals:
            return
        nodes = self.nodes()
        networks = plan_networks(self.cluster, externals, nodes, self.docker_subnets())
        self.current = tuple(externals)  # from here on, stop() has something to remove
        for network in networks:
            self.progress(
                f"external hosts: Docker network {network.name} ({network.subnet}) for {', '.join(h.name for h in network.hosts)}"
            )
            self._run(network_create_command(self.docker, self.cluster, network), f"create Docker network {network.subnet}")
            for node in nodes:
                self._run(network_connect_command(self.docker, network, node), f"attach node {node} to {network.subnet}")
            for host in network.hosts:
                self._run(
                    container_run_command(self.docker, self.cluster, network, host, self.image),
                    f"start external host {host.name} at {host.ip}",
                )

    def stop(self) -> None:
        """Remove every container and network this harness made for the cluster,
        including leftovers of an interrupted run. Safe to call twice."""
        label = f"label={LABEL}={self.cluster}"
        containers = run([str(self.docker), "ps", "--all", "--quiet", "--filter", label], DOCKER_TIMEOUT).stdout.split()
        if containers:
            run([str(self.docker), "rm", "--force", *containers], DOCKER_TIMEOUT)
        networks = run([str(self.docker), "network", "ls", "--quiet", "--filter", label], DOCKER_TIMEOUT).stdout.split()
        for network in networks:
            attached = run(
                [str(self.docker), "network", "inspect", "--format", "{{range .Containers}}{{.Name}} {{end}}", network],
                DOCKER_TIMEOUT,
            ).stdout.split()
            for node in attached:
                run([str(self.docker), "network", "disconnect", "--force", network, node], DOCKER_TIMEOUT)
            result = run([str(self.docker), "network", "rm", network], DOCKER_TIMEOUT)
            if result.returncode != 0:
                self.progress(f"could not remove Docker network {network}: {last_line(result.stderr)}")
        self.current = ()
