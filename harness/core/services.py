"""ClusterIP Services and cluster DNS names, as a scenario declares them.

A Service is a destination of its own: its cell ``production/svc:db`` on a Service
port is traffic to the Service's cluster IP, which kube-proxy DNATs to one of the
backing pods before any policy sees the packet (kubernetes/kubernetes
pkg/proxy/nftables/README.md: DNAT in ``prerouting`` at ``priority dstnat``,
filtering after it sees "traffic addressed to endpoint IPs"). So policies are
evaluated on the backing pod and the target port, never on the Service.

The backing pods of a Service port are the pods of its namespace whose labels
match its selector and that have the target port: a number always resolves, a
name resolves to the container port of that name and protocol, and a pod without
one is no endpoint of that port (``FindPort`` in kubernetes/kubernetes
pkg/api/v1/pod/util.go, used by the EndpointSlice controller).

A name destination ``db.production`` is the same Service reached by its DNS name
(``<service>.<namespace>.svc.cluster.local``, the cluster DNS specification); the
name must first be resolved by the cluster DNS, so the source's query to a DNS pod
on 53/UDP is traffic that policies judge like any other.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from harness.core.topology import NamespaceSpec, PodSpec, PortProtocol, Protocol, frozen_labels

#: The Service range of kind (kubeadm's default ``serviceSubnet``): cluster IPs
#: the harness plans live here, outside the pod range.
SERVICE_CIDR = ipaddress.IPv4Network("10.96.0.0/12")
#: The cluster IP of the cluster DNS Service (kubeadm's default: the tenth
#: address of the Service range), which every pod's resolver points at.
CLUSTER_DNS_IP = ipaddress.IPv4Address("10.96.0.10")
CLUSTER_DOMAIN = "cluster.local"
#: Where the cluster DNS pods run and the label they carry (CoreDNS as kubeadm
#: and kind deploy it), which is what DNS egress rules of policies select.
DNS_NAMESPACE = "kube-system"
DNS_LABEL = ("k8s-app", "kube-dns")
DNS_PORT = PortProtocol(53, Protocol.UDP)
#: How a Service destination is written: ``<namespace>/svc:<name>``.
SERVICE_MARK = "svc:"


@dataclass(frozen=True)
class ServicePort:
    """One port of a Service: ``port`` on the cluster IP, forwarded to ``target``
    (a number, or the name of a container port) on the backing pods."""

    port: int
    protocol: Protocol = Protocol.TCP
    target: int | str = 0
    name: str | None = None

    def __post_init__(self) -> None:
        if self.target == 0:
            object.__setattr__(self, "target", self.port)  # the API server's default

    @property
    def key(self) -> PortProtocol:
        return PortProtocol(self.port, self.protocol)

    def describe(self) -> str:
        target = f" → {self.target}" if self.target != self.port else ""
        return f"{self.key}{target}"


@dataclass(frozen=True)
class Backend:
    """A pod behind a Service port, with the port number the traffic reaches."""

    pod: PodSpec
    port: int
    protocol: Protocol = Protocol.TCP

    @property
    def key(self) -> PortProtocol:
        return PortProtocol(self.port, self.protocol)


@dataclass(frozen=True)
class ServiceSpec:
    namespace: str
    name: str
    selector: Mapping[str, str] = field(default_factory=frozen_labels, hash=False)
    ports: tuple[ServicePort, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "selector", frozen_labels(self.selector))

    @property
    def id(self) -> str:
        """The destination through the cluster IP: ``production/svc:db``."""
        return f"{self.namespace}/{SERVICE_MARK}{self.name}"

    @property
    def short_name(self) -> str:
        """The destination by DNS name, as an application writes it: ``db.production``."""
        return f"{self.name}.{self.namespace}"

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.namespace}.svc.{CLUSTER_DOMAIN}"

    def port(self, key: PortProtocol) -> ServicePort | None:
        return next((p for p in self.ports if p.key == key), None)

    def selects(self, pod: PodSpec) -> bool:
        return pod.namespace == self.namespace and all(pod.labels.get(k) == v for k, v in self.selector.items())

    def backends(self, key: PortProtocol, pods: tuple[PodSpec, ...]) -> tuple[Backend, ...]:
        """The pods behind port ``key`` with the number each is reached on, in
        the order of ``pods``."""
        spec = self.port(key)
        if spec is None:
            return ()
        found = []
        for pod in pods:
            if not self.selects(pod):
                continue
            number = spec.target if isinstance(spec.target, int) else pod.named_port(spec.target, spec.protocol)
            if number is not None:
                found.append(Backend(pod, number, spec.protocol))
        return tuple(found)


def fqdn_to_short(name: str) -> str:
    """``db.production.svc.cluster.local`` (with or without the final dot) →
    ``db.production``; any other text unchanged."""
    suffix = f".svc.{CLUSTER_DOMAIN}"
    text = name.removesuffix(".")
    return text[: -len(suffix)] if text.endswith(suffix) and text.count(".") == 4 else name


def is_dns_pod(pod: PodSpec) -> bool:
    """A cluster DNS pod: in kube-system, labelled k8s-app=kube-dns, serving 53/UDP."""
    return (
        pod.namespace == DNS_NAMESPACE
        and pod.labels.get(DNS_LABEL[0]) == DNS_LABEL[1]
        and any(p.key == DNS_PORT for p in pod.ports)
    )


def dns_pod(pods: tuple[PodSpec, ...]) -> PodSpec | None:
    """The pod that answers the cluster's DNS queries: the first cluster DNS pod
    (with the labels in force). kube-proxy would pick one at random per query;
    the harness always sends them to the first, so a name resolves the same way
    every time."""
    return next((p for p in pods if is_dns_pod(p)), None)


def plan_cluster_ips(
    services: tuple[ServiceSpec, ...], namespaces: tuple[NamespaceSpec, ...]
) -> dict[str, ipaddress.IPv4Address]:
    """A stable cluster IP per Service id: the services of the i-th namespace in
    10.96.(i+1).0/24, from .10 upwards, as pods are planned in the pod range (10.96.0.10
    stays the cluster DNS's)."""
    index = {ns.name: i for i, ns in enumerate(namespaces)}
    counters: dict[str, int] = {}
    base = int(SERVICE_CIDR.network_address)
    out: dict[str, ipaddress.IPv4Address] = {}
    for service in services:
        i = index.get(service.namespace, len(index))
        j = counters.get(service.namespace, 0)
        counters[service.namespace] = j + 1
        out[service.id] = ipaddress.IPv4Address(base + (i + 1) * 256 + 10 + j)
    return out
