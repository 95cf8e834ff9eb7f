"""The reference model's answer for Service and DNS-name cells.

A Service cell is judged on its backing pods, on the port each is reached at
after the DNAT (``harness.core.services``): each backend other than the source
itself is allowed, blocked, or refused (allowed by the policies, but the pod does
not serve the target port). All alike, the cell has that outcome; otherwise it is
``partial``, with the pods listed. A Service without backends refuses the
connection, as kube-proxy's ``reject`` for Services without endpoints does
(kubernetes/kubernetes pkg/proxy/nftables/proxier.go, ``reject-chain``).

A name cell first needs the name resolved: the source's query to the cluster DNS
pod on 53/UDP must be allowed by the source's egress and the DNS pod's ingress,
else the cell is ``name-not-resolved``; then it is the Service cell.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.core.matrix import Observation, Outcome
from harness.core.services import DNS_LABEL, DNS_NAMESPACE, DNS_PORT, Backend, ServiceSpec, dns_pod
from harness.core.topology import PortProtocol

if TYPE_CHECKING:
    from harness.model.reference import ReferenceModel


def backend_outcome(model: ReferenceModel, source: str, backend: Backend) -> Outcome:
    """What the policies (and the pod's ports) do with traffic from ``source`` to one backend."""
    key = backend.key
    if not model.allowed_matrix(key)[model.pod_index[source], model.dest_index[backend.pod.id]]:
        return Outcome.BLOCKED
    if not any(p.key == key for p in backend.pod.ports):
        return Outcome.REFUSED
    return Outcome.ALLOWED


def service_backends(model: ReferenceModel, service: ServiceSpec, key: PortProtocol, source: str) -> tuple[Backend, ...]:
    """The backends a probe from ``source`` is judged on: all but the source itself."""
    return tuple(b for b in service.backends(key, model.pods) if b.pod.id != source)


def service_observation(model: ReferenceModel, source: str, service: ServiceSpec, key: PortProtocol) -> Observation:
    every = service.backends(key, model.pods)
    if not every:
        return Observation(Outcome.REFUSED, f"{service.id} has no endpoints on {key}")
    backends = service_backends(model, service, key, source)
    outcomes = {b.pod.id: backend_outcome(model, source, b) for b in backends}
    kinds = set(outcomes.values())
    if len(kinds) == 1:
        return Observation(kinds.pop())
    if not kinds:
        return Observation(Outcome.ERROR, f"{source} is the only endpoint of {service.id}")
    return Observation(Outcome.PARTIAL, partial_detail(outcomes))


def partial_detail(outcomes: dict[str, Outcome]) -> str:
    """``allowed by x/a, x/b; blocked by x/c``: the backends by outcome."""
    groups: dict[Outcome, list[str]] = {}
    for pod, outcome in outcomes.items():
        groups.setdefault(outcome, []).append(pod)
    return "; ".join(f"{outcome.value} by {', '.join(pods)}" for outcome, pods in groups.items())


def resolution(model: ReferenceModel, source: str) -> Observation | None:
    """Why ``source`` cannot resolve names, or None when it can."""
    resolver = dns_pod(model.pods)
    if resolver is None:
        return Observation(
            Outcome.NAME_NOT_RESOLVED,
            f"no cluster DNS pod (a pod of {DNS_NAMESPACE} labelled {DNS_LABEL[0]}={DNS_LABEL[1]} serving {DNS_PORT})",
        )
    if model.allowed_matrix(DNS_PORT)[model.pod_index[source], model.dest_index[resolver.id]]:
        return None
    why = model.explain(source, resolver.id, DNS_PORT)
    return Observation(Outcome.NAME_NOT_RESOLVED, f"the DNS query to {resolver.id} on {DNS_PORT} is blocked: {why}")


def destination_observation(model: ReferenceModel, source: str, destination: str, key: PortProtocol) -> Observation:
    """The outcome of a Service or name destination (which must be one)."""
    found = model.topology.service_destination(destination)
    if found is None:
        raise KeyError(destination)
    service, by_name = found
    if by_name:
        failed = resolution(model, source)
        if failed is not None:
            return failed
    return service_observation(model, source, service, key)


def explain_destination(model: ReferenceModel, source: str, destination: str, key: PortProtocol) -> str:
    """Why, in the words of :meth:`ReferenceModel.explain`, backend by backend."""
    found = model.topology.service_destination(destination)
    if found is None:
        raise KeyError(destination)
    service, by_name = found
    parts = []
    if by_name:
        failed = resolution(model, source)
        if failed is not None:
            return failed.detail
        resolver = dns_pod(model.pods)
        assert resolver is not None
        parts.append(f"{service.short_name} resolves through {resolver.id}")
    backends = service_backends(model, service, key, source)
    if not backends:
        return "; ".join([*parts, f"{service.id} has no endpoints on {key}"])
    for backend in backends:
        outcome = backend_outcome(model, source, backend).value
        why = model.explain(source, backend.pod.id, backend.key)
        parts.append(f"via {backend.pod.id}:{backend.key} {outcome}: {why}")
    return "; ".join(parts)
