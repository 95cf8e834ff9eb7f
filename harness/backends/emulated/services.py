"""Services and the cluster DNS on the emulated network, as kube-proxy and kubelet
set them up on a node.

* **Cluster IPs, DNAT before policy.** Each Service gets a cluster IP in the
  Service range (:func:`harness.core.services.plan_cluster_ips`); the node's table
  has a ``nat`` chain on the ``prerouting`` hook at ``priority dstnat`` that
  rewrites traffic to a cluster IP and Service port to a backing pod and its target
  port, as kube-proxy's nftables mode does (kubernetes/kubernetes
  pkg/proxy/nftables/README.md). So the ``forward`` chain, where the policies are,
  sees the pod's address and the target port, and a named port in a policy is
  matched on the number the pod gives it.
* **Which backend, deterministically.** kube-proxy picks a backend at random for
  each new connection (``numgen random mod N``, pkg/proxy/nftables/proxier.go). The
  harness instead gives every (Service port, backend) two blocks of
  :data:`SOURCE_PORT_BLOCK` source ports of its own (one for probes through the
  cluster IP, one for probes by name, which run at the same time), from
  :data:`FIRST_SOURCE_PORT` up (above Linux's default ephemeral range, 32768-60999,
  and skipping every block holding a port an endpoint serves), and the DNAT maps the
  probe's source port to its backend: a probe of the Service from a port of a block
  always reaches the backend of that block. curl is given the block
  (``--local-port FROM-TO``) and takes the first port it can bind, since the port of
  an earlier connection it closed first stays in TIME_WAIT for a minute; nc the
  block's first port (UDP leaves nothing behind). So each backend is probed once through
  the Service, and a Service whose backends disagree is ``partial``, every time.
  Traffic from any other source port (a command typed by hand) is spread at random,
  as kube-proxy does. The NAT bindings of earlier rulesets are flushed with every
  load (:mod:`harness.backends.emulated.conntrack`), as kube-proxy deletes the
  conntrack entries of endpoints that went away.
* **No endpoints.** A packet still addressed to a cluster IP after the DNAT (a
  Service without backends, or a port it does not have) is rejected in
  ``forward`` before any policy, as kube-proxy's ``reject`` does: the client sees
  the connection refused.
* **The cluster DNS.** Every pod's resolver points at :data:`CLUSTER_DNS_IP`, DNAT-ed
  to the cluster DNS pod (the first pod of kube-system labelled k8s-app=kube-dns
  that serves 53/UDP), whose server answers the Services' names
  (``<service>.<namespace>.svc.cluster.local``) and the pods' (``<a-b-c-d>.<namespace>.pod.cluster.local``).
  The resolver configuration is what kubelet writes for ``dnsPolicy: ClusterFirst``
  (kubernetes/kubernetes pkg/kubelet/network/dns/dns.go: the cluster DNS as the
  nameserver, the search list ``<namespace>.svc.cluster.local svc.cluster.local
  cluster.local``, ``ndots:5``), plus ``timeout:1 attempts:1``, so that a blocked
  query fails within a probe's wait instead of glibc's default five seconds, twice.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from harness.core.errors import BackendError
from harness.core.services import (
    CLUSTER_DNS_IP,
    CLUSTER_DOMAIN,
    DNS_PORT,
    Backend,
    ServicePort,
    ServiceSpec,
    dns_pod,
    plan_cluster_ips,
)
from harness.core.topology import PodSpec, PortProtocol, Protocol, Topology

IPv4 = ipaddress.IPv4Address

#: The first source port given to a (Service port, backend); above the kernel's
#: default ephemeral range, so that no connection of the kernel's choosing uses it.
FIRST_SOURCE_PORT = 61000
#: Source ports per block: how many TCP probes of one backend from one pod may run
#: within a minute before a port leaves TIME_WAIT.
SOURCE_PORT_BLOCK = 8
_LAST_SOURCE_PORT = 65535


def source_block(port: int) -> int | None:
    """The first port of the block ``port`` belongs to (None below the blocks)."""
    if port < FIRST_SOURCE_PORT:
        return None
    return FIRST_SOURCE_PORT + (port - FIRST_SOURCE_PORT) // SOURCE_PORT_BLOCK * SOURCE_PORT_BLOCK


_L4 = {Protocol.TCP: "tcp", Protocol.UDP: "udp", Protocol.SCTP: "sctp"}
_DNS_TCP = PortProtocol(53, Protocol.TCP)


@dataclass(frozen=True)
class Route:
    """One Service port: its cluster IP, and each backend with the first ports of
    the source port blocks that reach it (through the cluster IP, by name)."""

    service: ServiceSpec
    port: ServicePort
    address: IPv4
    backends: tuple[tuple[Backend, int, int], ...]


@dataclass(frozen=True)
class ServicePlan:
    """Cluster IPs, DNAT routes and the cluster DNS of one state."""

    addresses: Mapping[str, IPv4] = field(default_factory=dict)  # Service id → cluster IP
    routes: Mapping[tuple[str, PortProtocol], Route] = field(default_factory=dict)
    dns: PodSpec | None = None
    dns_address: IPv4 | None = None

    def route(self, service: ServiceSpec, key: PortProtocol) -> Route | None:
        return self.routes.get((service.id, key))


def plan_services(topology: Topology, addresses: Mapping[str, IPv4]) -> ServicePlan:
    """The routes of ``topology``'s Services (labels in force) over the pods at ``addresses``."""
    served = {p.port for ep in topology.endpoints() for p in ep.ports}
    taken = {source_block(port) for port in served}
    next_port = FIRST_SOURCE_PORT
    cluster_ips = plan_cluster_ips(topology.services, topology.namespaces)
    routes: dict[tuple[str, PortProtocol], Route] = {}
    for service in topology.services:
        for port in service.ports:
            backends = []
            for backend in service.backends(port.key, topology.pods):
                pair = []
                for _ in range(2):
                    while next_port in taken:
                        next_port += SOURCE_PORT_BLOCK
                    if next_port + SOURCE_PORT_BLOCK - 1 > _LAST_SOURCE_PORT:
                        blocks = (_LAST_SOURCE_PORT - FIRST_SOURCE_PORT + 1) // SOURCE_PORT_BLOCK
                        raise BackendError(
                            f"the Services have more backends than the {blocks // 2} the emulated backend can probe "
                            f"deterministically (two blocks of {SOURCE_PORT_BLOCK} source ports each)"
                        )
                    pair.append(next_port)
                    next_port += SOURCE_PORT_BLOCK
                backends.append((backend, pair[0], pair[1]))
            routes[(service.id, port.key)] = Route(service, port, cluster_ips[service.id], tuple(backends))
    resolver = dns_pod(topology.pods)
    dns_address = addresses.get(resolver.id) if resolver is not None else None
    return ServicePlan(cluster_ips, routes, resolver, dns_address)


def _target(address: IPv4, port: int) -> str:
    return f"{address} . {port}"


def prerouting_rules(plan: ServicePlan, addresses: Mapping[str, IPv4]) -> list[str]:
    """The DNAT rules of the ``prerouting`` nat chain."""
    rules = []
    if plan.dns is not None and plan.dns_address is not None:
        for key in (DNS_PORT, _DNS_TCP):
            l4 = _L4[key.protocol]
            rules.append(
                f"ip daddr {CLUSTER_DNS_IP} {l4} dport {key.port} dnat ip to {plan.dns_address}:{key.port}"
                f' comment "cluster DNS {key}"'
            )
    for route in plan.routes.values():
        if not route.backends:
            continue  # rejected in forward
        l4 = _L4[route.port.protocol]
        match = f"ip daddr {route.address} {l4} dport {route.port.port}"
        by_port = ", ".join(
            f"{sport}-{sport + SOURCE_PORT_BLOCK - 1} : {_target(addresses[b.pod.id], b.port)}"
            for b, *sports in route.backends
            for sport in sports
        )
        spread = ", ".join(f"{i} : {_target(addresses[b.pod.id], b.port)}" for i, (b, *_) in enumerate(route.backends))
        where = f"{route.service.id} {route.port.key}"
        rules.append(f'{match} dnat ip to {l4} sport map {{ {by_port} }} comment "{where} by source port"')
        rules.append(f'{match} dnat ip to numgen random mod {len(route.backends)} map {{ {spread} }} comment "{where} at random"')
    return rules


def forward_rules(plan: ServicePlan) -> list[str]:
    """What ``forward`` does before the policies: reject what is still addressed to
    a cluster IP (no endpoints, or a port the Service does not have)."""
    ips = sorted({*plan.addresses.values(), *([CLUSTER_DNS_IP] if plan.addresses or plan.dns else [])})
    if not ips:
        return []
    return ["ip daddr { " + ", ".join(map(str, ips)) + ' } reject comment "a cluster IP without an endpoint"']


def dns_records(topology: Topology, plan: ServicePlan, addresses: Mapping[str, IPv4]) -> dict[str, str]:
    """Name → address: each Service's ``<name>.<namespace>.svc.cluster.local`` and
    each pod's ``<a-b-c-d>.<namespace>.pod.cluster.local``."""
    records = {svc.fqdn: str(plan.addresses[svc.id]) for svc in topology.services}
    for pod in topology.pods:
        address = addresses.get(pod.id)
        if address is not None:
            records[f"{str(address).replace('.', '-')}.{pod.namespace}.pod.{CLUSTER_DOMAIN}"] = str(address)
    return records


def resolv_conf(namespace: str) -> str:
    """The resolver configuration of a pod of ``namespace``."""
    search = f"{namespace}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}"
    return f"nameserver {CLUSTER_DNS_IP}\nsearch {search}\noptions ndots:5 timeout:1 attempts:1\n"


#: The name service switch of a probe: host names from the cluster DNS only, as in
#: a pod (whose /etc/hosts names only itself), whatever the host's own says.
NSSWITCH = "passwd: files\ngroup: files\nhosts: dns\n"
