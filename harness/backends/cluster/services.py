"""A scenario's Services on a Kubernetes cluster: created as ClusterIP Services,
awaited until their EndpointSlices list the backends the harness expects, and
probed through the cluster IP (or by name) from inside the source pod.

* The Service objects (:func:`harness.kube.manifests.service_manifest`) carry the
  scenario's selector and ports; the API server allocates the cluster IP, which is
  read back from the object it returns.
* Ready means what kube-proxy acts on: for each Service port, the ready endpoints
  of the Service's EndpointSlices (``kubernetes.io/service-name=<name>``; an endpoint
  whose ``conditions.ready`` is unset counts as ready, as the discovery.k8s.io/v1
  API says), on the port entry named like the Service port, are exactly the
  expected backends' pod addresses and target ports
  (:meth:`harness.core.services.ServiceSpec.backends`, FindPort's rule).
* kube-proxy picks a backend at random per connection, so one probe of a cluster
  IP says nothing of the other backends. A Service cell is probed
  :data:`PROBES_PER_BACKEND` times per backend (at most :data:`MAX_PROBES`); who
  answered tells which backend admitted it. All answered by backends: allowed; all
  timed out: blocked; some of each (or refused): partial, with the pods that
  answered. An answer from the source itself (kube-proxy may send a pod to itself)
  does not count. The engine re-probes what differs from the expectation until
  ``--probe-deadline``, which makes a missed backend ever less likely.
* By name, a cell resolves ``<service>.<namespace>`` through the pod's own resolver,
  the cluster's DNS. On a shared cluster (``existing``), the scenario's kube-system is
  a renamed namespace of stand-ins, not the cluster's DNS, so name cells are
  unsupported there.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from harness.core.errors import BackendError, HarnessError
from harness.core.matrix import Cell, Observation, Outcome
from harness.core.probe_clients import classify
from harness.core.progress import Progress
from harness.core.services import ServiceSpec
from harness.core.topology import PortProtocol, Protocol, Topology
from harness.kube.api import KubeApi
from harness.kube.manifests import service_manifest
from harness.kube.naming import NamespaceMap
from harness.kube.probe_script import ProbeResult
from harness.kube.views import EndpointSliceView
from harness.kube.waiting import wait_until

#: Probes of a Service cell per backend, and at most.
PROBES_PER_BACKEND = 4
MAX_PROBES = 16
#: Seconds the EndpointSlices of the Services get to list their backends.
ENDPOINTS_TIMEOUT = 120.0

IPv4 = ipaddress.IPv4Address


@dataclass(frozen=True)
class ServiceTarget:
    """What one Service cell probes: the address (a cluster IP or a name) and
    port, how many times, and who may answer."""

    address: str
    port: int
    count: int
    backends: tuple[str, ...]  # pod ids
    #: ``address`` is ``<service>.<namespace>``, resolved by the pod's resolver.
    by_name: bool = False


def expected_endpoints(
    service: ServiceSpec, topology: Topology, addresses: Mapping[str, IPv4]
) -> dict[PortProtocol, set[tuple[str, int]]]:
    """Service port → {(pod address, target port)} of its backends."""
    return {
        port.key: {(str(addresses[b.pod.id]), b.port) for b in service.backends(port.key, topology.pods) if b.pod.id in addresses}
        for port in service.ports
    }


def ready_endpoints(slices: Sequence[EndpointSliceView], service: ServiceSpec) -> dict[PortProtocol, set[tuple[str, int]]]:
    """What the EndpointSlices say, per Service port: the ready addresses with the
    endpoint port of the entry named like the Service port."""
    found: dict[PortProtocol, set[tuple[str, int]]] = {port.key: set() for port in service.ports}
    for piece in slices:
        if piece.address_type != "IPv4":
            continue
        addresses = [address for endpoint in piece.endpoints if endpoint.ready for address in endpoint.addresses]
        for port in service.ports:
            for entry in piece.ports:
                if entry.name == (port.name or "") and entry.protocol == port.protocol.value and entry.port is not None:
                    found[port.key].update((address, entry.port) for address in addresses)
    return found


class ClusterServices:
    """The Services one cluster backend made, their cluster IPs, and their probes."""

    def __init__(self, kube: KubeApi, names: NamespaceMap, run_id: str, progress: Progress, poll: float) -> None:
        self.kube = kube
        self.names = names
        self.run_id = run_id
        self.progress = progress
        self.poll = poll
        self.timeout = ENDPOINTS_TIMEOUT
        #: Service id → its cluster IP.
        self.cluster_ips: dict[str, IPv4] = {}
        #: (real namespace, name) → the Service as created.
        self.made: dict[tuple[str, str], ServiceSpec] = {}

    # -- objects -----------------------------------------------------------------------

    def sync(self, topology: Topology, addresses: Mapping[str, IPv4]) -> None:
        """Create the topology's Services (and delete those of an earlier topology),
        then wait until their EndpointSlices list the expected backends."""
        wanted = {(self.names.real(s.namespace), s.name): s for s in topology.services}
        for key, made in list(self.made.items()):
            if wanted.get(key) != made:
                self.kube.delete_service(*key)
                del self.made[key]
                self.cluster_ips.pop(made.id, None)
        for key, service in wanted.items():
            if key in self.made:
                continue
            if self.kube.read_service(*key) is not None:
                self.kube.delete_service(*key)  # left by an earlier run in a namespace it did not create
            created = self.kube.create_service(service_manifest(service, key[0], self.run_id))
            self.made[key] = service
            ip = created.cluster_ip
            try:
                self.cluster_ips[service.id] = IPv4(ip)
            except ValueError:
                raise BackendError(f"Service {key[0]}/{key[1]} has no IPv4 cluster IP ({ip!r})") from None
        if topology.services:
            self.wait_for_endpoints(topology, addresses)

    def wait_for_endpoints(self, topology: Topology, addresses: Mapping[str, IPv4]) -> None:
        late: list[str] = []

        def listed() -> tuple[bool, str]:
            late.clear()
            for service in topology.services:
                real = self.names.real(service.namespace)
                seen = ready_endpoints(self.kube.list_endpoint_slices(real, service.name), service)
                for key, want in expected_endpoints(service, topology, addresses).items():
                    if seen.get(key, set()) != want:
                        late.append(f"{service.id} {key} (listed {sorted(seen.get(key, set()))}, expected {sorted(want)})")
            return not late, f"waiting for {', '.join(late[:3])}"

        wait_until(
            listed,
            limit=self.timeout,
            poll=self.poll,
            progress=self.progress,
            message=f"waiting for the EndpointSlices of {len(topology.services)} Service(s)",
            diagnostics=lambda: "\n".join(f"  {line}" for line in late),
        )

    def remove(self) -> list[str]:
        """Delete the Services made (those in namespaces the run created go with
        them anyway). Returns what could not be deleted."""
        problems = []
        for key in list(self.made):
            try:
                self.kube.delete_service(*key)
                del self.made[key]
            except HarnessError as err:
                problems.append(str(err))
        self.cluster_ips = {}
        return problems

    # -- probing -------------------------------------------------------------------------

    def target(self, cell: Cell, topology: Topology) -> ServiceTarget | Observation:
        found = topology.service_destination(cell.destination)
        if found is None:
            return Observation(Outcome.ERROR, f"{cell.destination} is not a Service")
        service, by_name = found
        if cell.port.protocol is Protocol.SCTP:
            # agnhost connect, the SCTP client, does not say which backend answered.
            return Observation(Outcome.UNSUPPORTED, "SCTP Service cells: the SCTP client does not say which backend answered")
        backends = tuple(b.pod.id for b in service.backends(cell.port, topology.pods) if b.pod.id != cell.source)
        count = max(1, min(MAX_PROBES, PROBES_PER_BACKEND * len(backends)))
        if by_name:
            if not self.names.identity:
                return Observation(
                    Outcome.UNSUPPORTED,
                    "names resolve through the cluster's own DNS, which on a shared cluster is not the scenario's "
                    "kube-system (its namespaces are renamed): probe names on kind",
                )
            name = f"{service.name}.{self.names.real(service.namespace)}"
            return ServiceTarget(name, cell.port.port, count, backends, by_name=True)
        ip = self.cluster_ips.get(service.id)
        if ip is None:
            return Observation(Outcome.ERROR, f"Service {service.id} was not created: call deploy() with this topology first")
        return ServiceTarget(str(ip), cell.port.port, count, backends)


def probe_reply(result: ProbeResult, protocol: Protocol, timeout: float) -> tuple[Outcome, str, str]:
    """One probe of a Service: its outcome, detail and who answered (the identity
    the responder sent; "" unless it answered). Any reply counts as an answer here;
    :func:`combine` checks the responder against the Service's backends."""
    responder = result.stdout.decode(errors="replace").strip()
    outcome, detail = classify(
        protocol, responder, timeout, result.exit_code, result.stdout, result.stderr, result.elapsed, math.inf
    )
    return outcome, detail, responder if outcome is Outcome.ALLOWED else ""


def combine(
    cell: Cell,
    target: ServiceTarget,
    results: Sequence[ProbeResult | None],
    command: str,
    timeout: float,
    rejects: bool = False,
) -> Observation:
    """One Service cell's observation from its probes' results (see the module).
    ``rejects``: Felix denies with REJECT, so a probe refused while the Service has
    backends (kube-proxy sent it to one) was refused by a policy: blocked. Without
    backends, kube-proxy's own rejection stays a refusal."""
    answered: dict[str, int] = {}
    backends = set(target.backends)
    outcomes: list[Outcome] = []
    problems: list[str] = []
    for result in results:
        if result is None:
            problems.append("a probe printed no result")
            continue
        outcome, detail, responder = probe_reply(result, cell.port.protocol, timeout)
        if outcome is Outcome.ALLOWED:
            if responder == cell.source:
                continue  # kube-proxy sent the pod to itself: says nothing of the others
            if responder not in backends:
                return Observation(Outcome.WRONG_RESPONDER, f"answered by {responder}", command)
            answered[responder] = answered.get(responder, 0) + 1
            outcomes.append(Outcome.ALLOWED)
        elif outcome is Outcome.REFUSED and rejects and backends:
            outcomes.append(Outcome.BLOCKED)
        elif outcome in (Outcome.BLOCKED, Outcome.REFUSED, Outcome.NAME_NOT_RESOLVED):
            outcomes.append(outcome)
        else:
            problems.append(f"{outcome.value}: {detail}")
    if problems:
        return Observation(Outcome.ERROR, "; ".join(sorted(set(problems))), command)
    if not outcomes:
        return Observation(Outcome.ERROR, f"every probe reached {cell.source} itself", command)
    kinds = set(outcomes)
    who = ", ".join(f"{pod} ({n} of {len(outcomes)})" for pod, n in sorted(answered.items()))
    if kinds == {Outcome.ALLOWED}:
        return Observation(Outcome.ALLOWED, f"answered by {who}", command)
    if len(kinds) == 1:
        return Observation(kinds.pop(), f"{len(outcomes)} probe(s)", command)
    if Outcome.NAME_NOT_RESOLVED in kinds:
        return Observation(Outcome.ERROR, "the name resolved for some probes and not for others", command)
    counts = ", ".join(
        f"{outcomes.count(o)} {o.value}" for o in (Outcome.ALLOWED, Outcome.BLOCKED, Outcome.REFUSED) if o in kinds
    )
    return Observation(Outcome.PARTIAL, f"{counts}; answered by {who or 'no backend'}", command)
