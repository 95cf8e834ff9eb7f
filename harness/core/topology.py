"""What a scenario declares: namespaces, pods, the ports they serve, external hosts.

These are declarations only. Where a pod actually runs (its IP, its network
namespace, its Kubernetes object) is a backend's business and lives in
:class:`harness.backends.base.Deployment`.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, TypeGuard

from harness.core.errors import HarnessError, UnknownName

if TYPE_CHECKING:
    from harness.core.services import ServiceSpec

#: Label every namespace carries on a real cluster (set by the API server).
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"

#: Pod range of the kind + Calico cluster (Calico's default IP pool) and of the
#: emulated backend, so that a scenario's ipBlocks mean the same on both.
POD_CIDR = ipaddress.IPv4Network("192.168.0.0/16")


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")


def is_dns_label(name: object) -> TypeGuard[str]:
    """A Kubernetes namespace or pod name: up to 63 lowercase letters, digits and '-'."""
    return isinstance(name, str) and len(name) <= 63 and bool(_DNS_LABEL.match(name))


def is_dns_subdomain(name: object) -> TypeGuard[str]:
    """A Kubernetes object name or label prefix: dot-separated DNS labels, up to 253."""
    return isinstance(name, str) and len(name) <= 253 and bool(_DNS_SUBDOMAIN.match(name))


_IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?\Z")


def check_port_name(name: object) -> str | None:
    """Why ``name`` is not a valid container port name (an IANA service name), or None."""
    if (
        not isinstance(name, str)
        or len(name) > 15
        or not _IANA_SVC_NAME.match(name)
        or "--" in name
        or not re.search("[a-z]", name)
    ):
        return f"{name!r} is not a valid port name"
    return None


PORT_NAME_FORM = "an IANA service name: up to 15 lowercase letters, digits and '-', with at least one letter"


class Protocol(enum.Enum):
    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"

    def __str__(self) -> str:
        return self.value

    def __lt__(self, other: object) -> bool:
        # Ports sort by number, then protocol (80/TCP before 80/UDP).
        if not isinstance(other, Protocol):
            return NotImplemented
        return self.value < other.value

    # Members are singletons compared by identity, so identity is a valid hash; it
    # is computed in C, where Enum's own hashes the name in Python, and every cell
    # of every matrix is hashed through its port's protocol.
    __hash__ = object.__hash__


def frozen_labels(labels: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """An immutable, key-sorted copy of ``labels``."""
    return MappingProxyType(dict(sorted((labels or {}).items())))


@dataclass(frozen=True, order=True)
class PortProtocol:
    """A port number with its protocol: one matrix of a scenario (``80/TCP``)."""

    port: int
    protocol: Protocol

    def __str__(self) -> str:
        return f"{self.port}/{self.protocol.value}"

    @classmethod
    def parse(cls, text: str) -> PortProtocol:
        """Parse ``"80/TCP"`` (protocol defaults to TCP: ``"80"``)."""
        number, _, proto = str(text).partition("/")
        try:
            port = int(number)
            protocol = Protocol(proto.upper() or "TCP")
        except ValueError:
            raise HarnessError(f"{text!r} is not a port such as 80/TCP, 53/UDP or 9000/SCTP") from None
        if not 1 <= port <= 65535:
            raise HarnessError(f"port {port} in {text!r} is outside 1-65535")
        return cls(port, protocol)


@dataclass(frozen=True)
class PortSpec:
    """A port a pod serves. ``name`` makes it usable as a named port in policies."""

    port: int
    protocol: Protocol = Protocol.TCP
    name: str | None = None

    @property
    def key(self) -> PortProtocol:
        return PortProtocol(self.port, self.protocol)


@dataclass(frozen=True)
class NamespaceSpec:
    name: str
    labels: Mapping[str, str] = field(default_factory=frozen_labels, hash=False)

    def __post_init__(self) -> None:
        labels = dict(self.labels)
        # A real API server always sets this label; declaring it is optional.
        labels[NAMESPACE_NAME_LABEL] = self.name
        object.__setattr__(self, "labels", frozen_labels(labels))


@dataclass(frozen=True)
class PodSpec:
    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=frozen_labels, hash=False)
    ports: tuple[PortSpec, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", frozen_labels(self.labels))

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}"

    def named_port(self, name: str, protocol: Protocol) -> int | None:
        """The number behind a named container port, as a CNI resolves it."""
        for spec in self.ports:
            if spec.name == name and spec.protocol is protocol:
                return spec.port
        return None


@dataclass(frozen=True)
class ExternalHost:
    """A destination outside the cluster (egress and ipBlock scenarios).

    Its endpoint id is its bare name (no ``/``), so it never collides with a pod.
    """

    name: str
    ip: ipaddress.IPv4Address
    ports: tuple[PortSpec, ...] = ()

    @property
    def id(self) -> str:
        return self.name


Endpoint = PodSpec | ExternalHost


@dataclass(frozen=True)
class Topology:
    """Namespaces, pods, external hosts and Services of a scenario, in declaration
    order. Services are destinations only (:mod:`harness.core.services`): they are
    not endpoints, since nothing runs at a cluster IP."""

    namespaces: tuple[NamespaceSpec, ...] = ()
    pods: tuple[PodSpec, ...] = ()
    externals: tuple[ExternalHost, ...] = ()
    services: tuple[ServiceSpec, ...] = ()

    # Lookups by name, built on first use (a topology is immutable).

    @cached_property
    def _namespace_index(self) -> dict[str, NamespaceSpec]:
        return {ns.name: ns for ns in self.namespaces}

    @cached_property
    def _endpoint_index(self) -> dict[str, Endpoint]:
        return {ep.id: ep for ep in self.endpoints()}

    @cached_property
    def _pods_by_namespace(self) -> dict[str, tuple[PodSpec, ...]]:
        grouped: dict[str, list[PodSpec]] = {}
        for pod in self.pods:
            grouped.setdefault(pod.namespace, []).append(pod)
        return {ns: tuple(pods) for ns, pods in grouped.items()}

    def namespace(self, name: str) -> NamespaceSpec:
        found = self._namespace_index.get(name)
        if found is None:
            raise UnknownName(f"no namespace {name!r} is declared; namespaces: {', '.join(n.name for n in self.namespaces)}")
        return found

    def pod(self, pod_id: str) -> PodSpec:
        found = self._endpoint_index.get(pod_id)
        if not isinstance(found, PodSpec):
            raise UnknownName(f"no pod {pod_id!r} is declared; pods: {_listing(p.id for p in self.pods)}")
        return found

    def endpoint(self, endpoint_id: str) -> Endpoint:
        found = self._endpoint_index.get(endpoint_id)
        if found is None:
            known = _listing(ep.id for ep in self.endpoints())
            raise UnknownName(f"no pod or external host {endpoint_id!r} is declared; endpoints: {known}")
        return found

    def has_endpoint(self, endpoint_id: str) -> bool:
        return endpoint_id in self._endpoint_index

    def endpoints(self) -> Iterator[Endpoint]:
        yield from self.pods
        yield from self.externals

    def pods_in(self, namespace: str) -> tuple[PodSpec, ...]:
        return self._pods_by_namespace.get(namespace, ())

    def port_keys(self) -> tuple[PortProtocol, ...]:
        """Every port/protocol some endpoint or Service serves, sorted."""
        keys = {p.key for ep in self.endpoints() for p in ep.ports}
        keys |= {p.key for svc in self.services for p in svc.ports}
        return tuple(sorted(keys))

    # -- Services -----------------------------------------------------------------------

    @cached_property
    def _service_index(self) -> dict[str, tuple[ServiceSpec, bool]]:
        """Destination id → (Service, reached by DNS name)."""
        index: dict[str, tuple[ServiceSpec, bool]] = {}
        for svc in self.services:
            index[svc.id] = (svc, False)
            index[svc.short_name] = (svc, True)
        return index

    def service_destination(self, destination: str) -> tuple[ServiceSpec, bool] | None:
        """The Service a destination id stands for (``production/svc:db`` through
        its cluster IP, ``db.production`` by its DNS name), or None."""
        return self._service_index.get(destination)

    def service(self, service_id: str) -> ServiceSpec:
        found = self._service_index.get(service_id)
        if found is None:
            raise UnknownName(f"no Service {service_id!r} is declared; Services: {_listing(s.id for s in self.services)}")
        return found[0]

    def destination_ids(self, key: PortProtocol, names: bool = False) -> tuple[str, ...]:
        """Every destination of ``key``'s matrix: the endpoints serving it, then
        the Services with that port (and, with ``names``, the same Services by
        DNS name)."""
        ids = [ep.id for ep in self.serving(key)]
        with_port = [svc for svc in self.services if svc.port(key) is not None]
        ids += [svc.id for svc in with_port]
        if names:
            ids += [svc.short_name for svc in with_port]
        return tuple(ids)

    def is_destination(self, destination: str) -> bool:
        return destination in self._endpoint_index or destination in self._service_index

    def serving(self, key: PortProtocol) -> tuple[Endpoint, ...]:
        """Endpoints that serve ``key``: the columns of that port's matrix."""
        return self._serving.get(key, ())

    @cached_property
    def _serving(self) -> dict[PortProtocol, tuple[Endpoint, ...]]:
        grouped: dict[PortProtocol, list[Endpoint]] = {}
        for ep in self.endpoints():
            for key in dict.fromkeys(p.key for p in ep.ports):
                grouped.setdefault(key, []).append(ep)
        return {key: tuple(eps) for key, eps in grouped.items()}

    def shape(self) -> tuple[object, ...]:
        """What a backend must build, without labels: two topologies of the same
        shape can share one deployment (labels are reset between scenarios)."""
        return (
            tuple(ns.name for ns in self.namespaces),
            tuple((p.id, p.ports) for p in self.pods),
            self.externals,
        )

    def with_services(self, services: tuple[ServiceSpec, ...]) -> Topology:
        return replace(self, services=services)

    # -- changes made by multi-step scenarios -------------------------------------

    def with_namespace_labels(self, name: str, labels: Mapping[str, str]) -> Topology:
        self.namespace(name)
        namespaces = tuple(NamespaceSpec(ns.name, labels) if ns.name == name else ns for ns in self.namespaces)
        return replace(self, namespaces=namespaces)

    def with_pod_labels(self, pod_id: str, labels: Mapping[str, str]) -> Topology:
        self.pod(pod_id)
        pods = tuple(replace(p, labels=labels) if p.id == pod_id else p for p in self.pods)
        return replace(self, pods=pods)


def _listing(names: Iterator[str] | list[str], limit: int = 20) -> str:
    """Names for a message: the first ``limit`` and how many more."""
    items = list(names)
    text = ", ".join(items[:limit])
    return text + (f" and {len(items) - limit} more" if len(items) > limit else "")


def apply_label_changes(current: Mapping[str, str], changes: Mapping[str, str | None]) -> dict[str, str]:
    """``kubectl label`` semantics: a value sets a label, ``None`` removes it."""
    result = dict(current)
    for key, value in changes.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result
