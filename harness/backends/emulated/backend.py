"""The emulated backend: pods as network namespaces, policies as nftables rules,
probes as real curl and nc processes."""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import threading
from collections.abc import Callable
from pathlib import Path

from harness.backends.base import Backend, BackendInfo, Capabilities, Deployment
from harness.backends.emulated import lifecycle
from harness.backends.emulated.dataplane import Dataplane
from harness.backends.emulated.leftovers import remove_state, write_state
from harness.backends.emulated.names import RunId
from harness.backends.emulated.network import EmulatedNetwork
from harness.backends.emulated.notes import NETWORK_GONE_NOTE, kept_notice
from harness.backends.emulated.rounds import ProbeRequest, ProbeResult
from harness.backends.emulated.ruleset import RulesetInput, ServiceRules
from harness.backends.emulated.runner import max_workers
from harness.backends.emulated.servers import EndpointServers, ServerLauncher
from harness.backends.emulated.services import (
    ServicePlan,
    dns_records,
    forward_rules,
    plan_services,
    prerouting_rules,
)
from harness.backends.emulated.system import run
from harness.backends.emulated.why import PolicyTrace
from harness.backends.shield import interrupts_held
from harness.core.cluster_policy import check_supported
from harness.core.errors import BackendError
from harness.core.files import write_atomic
from harness.core.matrix import Cell, CellSet, Observation, Outcome, ReachabilityMatrix
from harness.core.services import DNS_NAMESPACE, DNS_PORT
from harness.core.settings import ImplementationSettings, SelfTraffic
from harness.core.state import DesiredState
from harness.core.topology import ExternalHost, PortProtocol, Protocol, Topology
from harness.model.services import partial_detail

log = logging.getLogger(__name__)

_DEFAULT_TIMEOUT = 1.0


def default_probe_workers() -> int:
    """Probe processes at once unless ``--probe-workers`` says otherwise: enough to
    keep every core busy starting and running nc and curl, few enough that a
    probe never waits long for a CPU (32 per core this process may use; TCP
    probes of one source share one curl process, so this is far more probes in
    flight)."""
    return 32 * len(os.sched_getaffinity(0))


class EmulatedBackend(Backend):
    name = "emulated"
    # Rules are live once their transaction is committed, servers are ready before deploy()
    # returns, and every packet that opens or continues a flow is checked against
    # the rules in force (only reply traffic is accepted by connection state), so
    # there is no programming delay to wait out: a cell that differs from the
    # expectation will differ on every re-probe.
    capabilities = Capabilities(
        deterministic=True,
        protocols=frozenset({Protocol.TCP, Protocol.UDP}),
        unsupported_note="SCTP is not available in this kernel",
    )

    def __init__(
        self, probe_workers: int | None = None, keep_network: bool = False, progress: Callable[[str], None] | None = None
    ) -> None:
        #: Where messages for the user go (the terminal, in a pytest run).
        self.progress = progress
        if probe_workers is None:
            probe_workers = default_probe_workers()
        if probe_workers < 1:
            raise BackendError(f"--probe-workers must be at least 1, got {probe_workers}")
        #: Probes in flight at once: as asked, within what the open-file limit allows.
        self.probe_workers = min(probe_workers, max_workers())
        if self.probe_workers < probe_workers:
            log.warning(
                "running at most %d probes at once instead of %d: the open-file limit (ulimit -n) allows no more",
                self.probe_workers,
                probe_workers,
            )
        self.settings = ImplementationSettings()
        self._lock = threading.RLock()
        self._network: EmulatedNetwork | None = None
        self._servers: EndpointServers | None = None
        #: Forks the endpoint servers of every deployment of this backend.
        self._launcher = ServerLauncher()
        self._declared: Topology | None = None  # as deployed, with declared labels
        self._state: DesiredState | None = None  # labels and policies in force
        #: The state and settings whose ruleset is loaded, so converging to them again loads nothing.
        self._rendered: tuple[DesiredState, ImplementationSettings] | None = None
        self._timeout = _DEFAULT_TIMEOUT
        self._dataplane: Dataplane | None = None
        self.ruleset = ""  # the last ruleset loaded, for diagnostics
        #: Keep each network and its servers after close() (``--keep-network``), for
        #: the reproduce commands; ``python -m harness cleanup`` removes them.
        self.keep_network = keep_network
        #: Networks left in place for the user (keep_network), oldest first.
        self.kept: list[RunId] = []
        #: What the policy chains did with each cell of the last round.
        self.traces: dict[Cell, PolicyTrace] = {}
        #: The Services' cluster IPs and routes of the state in force.
        self.services = ServicePlan()
        lifecycle.register(self)

    # -- deployment ------------------------------------------------------------------

    @property
    def network(self) -> EmulatedNetwork:
        if self._network is None:
            raise BackendError("the emulated backend has nothing deployed: call deploy(topology) first")
        return self._network

    @property
    def topology(self) -> Topology | None:
        """The deployed topology with the labels in force."""
        return self._state.topology if self._state is not None else None

    @property
    def server_pids(self) -> list[int]:
        """Process ids of the endpoint servers (for diagnostics and tests)."""
        return self._servers.pids if self._servers is not None else []

    def deploy(self, topology: Topology, settings: ImplementationSettings) -> Deployment:
        with self._lock:
            self.settings = settings
            if self._network is not None and self._declared is not None:
                reusable = self._dataplane is not None and self._dataplane.broken is None and not self.keep_network
                if reusable and self._declared.shape() == topology.shape():
                    self._declared = topology
                    self._converge(DesiredState(topology), load=False)
                    return Deployment(topology, self._network.addresses)
                self._teardown()  # another shape, a broken network, or one to keep as it is
            run_id = RunId.new()
            network = EmulatedNetwork(run_id, topology)
            # Record what is about to exist before creating it, so that a crash at any
            # point leaves something the next run can find.
            write_state(run_id, network.all_netns)
            self._network = network
            self._declared = topology
            try:
                network.build()
                network.write_resolver_files()
                self._servers = EndpointServers(run_id.log_dir, self._launcher, detached=self.keep_network)
                self._dataplane = Dataplane(network, self._servers, self.probe_workers)
                self._converge(DesiredState(topology), load=False)
                # Every kube-system pod serving 53/UDP can answer DNS: which one is the
                # cluster DNS follows the labels in force, which a reused deployment changes.
                dns = {
                    pod.id: self._records_file(network)
                    for pod in topology.pods
                    if pod.namespace == DNS_NAMESPACE and any(p.key == DNS_PORT for p in pod.ports)
                }
                self._servers.start({ep.id: ep for ep in topology.endpoints()}, network.netns, dns)
            except BaseException:
                with interrupts_held("removing the half-built emulated network", self.progress):
                    self._teardown(keep=False)  # half built: never kept
                raise
            log.info("emulated network %s: %d pods, %d external hosts", run_id, len(topology.pods), len(topology.externals))
            return Deployment(topology, network.addresses)

    def reproduce_note(self) -> str:
        if self.keep_network:
            return (
                "the emulated network is kept after the session (--keep-network): run these commands as root, "
                "then remove it with `sudo python -m harness cleanup`"
            )
        return NETWORK_GONE_NOTE

    def closing_notes(self) -> tuple[str, ...]:
        notice = kept_notice([str(run) for run in self.kept])
        return (notice,) if notice else ()

    def close(self) -> None:
        with self._lock, interrupts_held("removing the emulated network", self.progress):
            try:
                self._teardown()
            finally:
                self._launcher.close()
        lifecycle.unregister(self)

    def _teardown(self, keep: bool = True) -> None:
        """Remove the deployment, or with ``keep_network`` (and ``keep``) leave it
        running for the user, unless it was found broken."""
        if keep and self.keep_network and self._dataplane is not None and self._dataplane.broken is None:
            # A kept network holds the rules of the state in force, as the user was told.
            self._rules_in_force()
        servers, self._servers = self._servers, None
        network, self._network = self._network, None
        dataplane, self._dataplane = self._dataplane, None
        self._declared = None
        self._state = None
        self._rendered = None
        if dataplane is not None:
            dataplane.close()
        intact = dataplane is None or dataplane.broken is None
        if keep and self.keep_network and network is not None and servers is not None and intact:
            servers.release()
            write_state(network.run, network.all_netns, kept=True)
            self.kept.append(network.run)
            log.info("kept the emulated network %s and its servers", network.run)
            return
        try:
            if servers is not None:
                servers.stop()
        finally:
            if network is not None:
                self._destroy(network)

    @staticmethod
    def _destroy(network: EmulatedNetwork) -> None:
        remaining = network.destroy()
        if remaining:
            # Keep the record: the next run's cleanup_leftovers retries.
            log.warning("could not remove network namespaces %s", ", ".join(remaining))
        else:
            remove_state(network.run)

    # -- the state in force -------------------------------------------------------------

    def converge(self, state: DesiredState) -> None:
        with self._lock:
            self._converge(state)

    def _converge(self, state: DesiredState, load: bool = True) -> None:
        """Render the whole ruleset from ``state`` and load it in one transaction
        (unless exactly this state is already loaded). Without ``load`` (a deploy),
        ``state`` becomes the state in force but its ruleset is loaded only when
        something needs the rules (:meth:`_rules_in_force`): a step's converge
        almost always follows and replaces it, and every load that removes a table
        waits for the kernel's RCU grace period."""
        network = self.network
        if self._declared is None or self._dataplane is None or state.topology.shape() != self._declared.shape():
            raise BackendError("the emulated backend has another topology deployed: call deploy() with this one first")
        known = {ns.name for ns in state.topology.namespaces}
        unknown = [p.ref for p in state.policy_list if p.namespace not in known]
        if unknown:
            raise BackendError(f"NetworkPolicy {', '.join(unknown)}: namespace not part of the deployed topology")
        check_supported(state.cluster_policy_list, self.name)
        self._state = state
        if self._rendered == (state, self.settings):
            return
        services = plan_services(state.topology, network.addresses)
        self.services = services
        records = dns_records(state.topology, services, network.addresses)
        network.run.log_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self._records_file(network), json.dumps(records, indent=1, sort_keys=True))
        if not load:
            return
        data = RulesetInput(
            table=network.run.table,
            topology=state.topology,
            addresses=network.addresses,
            interfaces=network.interfaces,
            policies=state.effective_policies,
            cluster_policies=state.cluster_policy_list,
            ipblock_matches_pods=self.settings.ipblock_matches_pods,
            services=ServiceRules(tuple(prerouting_rules(services, network.addresses)), tuple(forward_rules(services))),
        )
        self.ruleset = self._dataplane.load(data, self_policy=self.settings.self_traffic is SelfTraffic.POLICY)
        self._dataplane.flush_conntrack()
        (network.run.log_dir / "ruleset.nft").write_text(self.ruleset)
        self._rendered = (state, self.settings)

    def _rules_in_force(self) -> None:
        """Load the ruleset of the state in force if a deploy deferred it."""
        if self._state is not None and self._rendered != (self._state, self.settings):
            self._converge(self._state)

    @staticmethod
    def _records_file(network: EmulatedNetwork) -> Path:
        """The cluster DNS's records (name → address), read by its server."""
        return network.run.log_dir / "dns.json"

    # -- probing ------------------------------------------------------------------------

    def _request(self, cell: Cell, timeout: float) -> ProbeRequest | Observation:
        network = self.network
        topology = self._declared
        netns = network.netns.get(cell.source)
        source_address = network.addresses.get(cell.source)
        if topology is None or netns is None or source_address is None:
            return Observation(Outcome.ERROR, f"source {cell.source} is not a deployed pod")
        if not topology.has_endpoint(cell.destination):
            return Observation(Outcome.ERROR, f"destination {cell.destination} is not deployed")
        destination = topology.endpoint(cell.destination)
        address = network.addresses.get(cell.destination)
        if address is None:
            if not isinstance(destination, ExternalHost):
                return Observation(Outcome.ERROR, f"destination {cell.destination} is not deployed")
            address = destination.ip  # an address no emulated host may own
        if cell.port.protocol not in self.capabilities.protocols:
            # The probe engine never asks (it observes these as unsupported itself).
            return Observation(Outcome.ERROR, f"cannot probe {cell.port.protocol}: {self.capabilities.unsupported_note}")
        return ProbeRequest(
            cell.source,
            netns,
            str(source_address),
            cell.destination,
            str(address),
            not isinstance(destination, ExternalHost),
            cell.port.protocol,
            cell.port.port,
            timeout,
        )

    def _requests(self, cell: Cell, timeout: float) -> list[ProbeRequest] | Observation:
        """The probes of one cell: one for an endpoint; for a Service (through its
        cluster IP or by name) one per backend other than the source, each from the
        source port that the DNAT sends to that backend (or one, refused, when it
        has none)."""
        topology = self._state.topology if self._state is not None else None
        found = topology.service_destination(cell.destination) if topology is not None else None
        if found is None:
            request = self._request(cell, timeout)
            return request if isinstance(request, Observation) else [request]
        service, by_name = found
        network = self.network
        netns = network.netns.get(cell.source)
        source_address = network.addresses.get(cell.source)
        if netns is None or source_address is None:
            return Observation(Outcome.ERROR, f"source {cell.source} is not a deployed pod")
        if cell.port.protocol not in self.capabilities.protocols:
            return Observation(Outcome.ERROR, f"cannot probe {cell.port.protocol}: {self.capabilities.unsupported_note}")
        route = self.services.route(service, cell.port)
        if route is None:
            return Observation(Outcome.ERROR, f"{service.id} has no port {cell.port}")
        address = service.short_name if by_name else str(route.address)
        dns_key = None
        if by_name:
            dns = self.services.dns_address
            dns_key = (str(source_address), str(dns if dns is not None else "0.0.0.0"), 17, DNS_PORT.port)

        def make(destination: str, is_pod: bool, sport: int | None = None, policy: tuple[str, int] = ("", 0)) -> ProbeRequest:
            return ProbeRequest(
                cell.source,
                netns,
                str(source_address),
                destination,
                address,
                is_pod,
                cell.port.protocol,
                cell.port.port,
                timeout,
                source_port=sport,
                policy_address=policy[0],
                policy_port=policy[1],
                dns_key=dns_key,
            )

        if not route.backends:
            return [make(service.id, False)]
        return [
            make(
                backend.pod.id,
                True,
                by_name_port if by_name else by_ip_port,
                (str(network.addresses[backend.pod.id]), backend.port),
            )
            for backend, by_ip_port, by_name_port in route.backends
            if backend.pod.id != cell.source
        ]

    def _command(self, cell: Cell, timeout: float) -> str | Observation:
        requests = self._requests(cell, timeout)
        if isinstance(requests, Observation):
            return requests
        return "; ".join(r.command().shell for r in requests)

    def probe(self, cells: CellSet, timeout: float) -> ReachabilityMatrix:
        """One round (:mod:`harness.backends.emulated.rounds`) after checking the
        network; each observation's detail says what the policy chains did (the
        same as data in :attr:`traces`)."""
        with self._lock:
            self._timeout = timeout
            results: dict[Cell, Observation] = {}
            requests: list[tuple[Cell, ProbeRequest]] = []
            for cell in cells:
                made = self._requests(cell, timeout)
                if isinstance(made, Observation):
                    results[cell] = made
                else:
                    requests += [(cell, request) for request in made]
            if self._dataplane is None:
                raise BackendError("the emulated backend has nothing deployed: call deploy(topology) first")
            self._rules_in_force()
            self.traces = {}
            done = self._dataplane.probe([request for _, request in requests])
            grouped: dict[Cell, list[tuple[ProbeRequest, ProbeResult]]] = {}
            for (cell, request), result in zip(requests, done, strict=True):
                grouped.setdefault(cell, []).append((request, result))
            for cell, pairs in grouped.items():
                results[cell] = _observation(pairs)
                trace = pairs[0][1].trace
                if len(pairs) == 1 and trace is not None:
                    self.traces[cell] = trace
            return ReachabilityMatrix.empty(cells.axes).with_cells(results)

    def probe_address(self, source: str, address: str, port: PortProtocol, identity: str, timeout: float) -> Observation:
        """Probe any address from pod ``source``'s namespace, as a round's probes
        are run (checks, logs, retries), expecting ``identity`` to answer: for
        diagnostics, such as an address no emulated host owns."""
        with self._lock:
            network = self.network
            if self._dataplane is None or source not in network.netns:
                raise BackendError(f"source {source} is not a deployed pod")
            self._rules_in_force()
            request = ProbeRequest(
                source,
                network.netns[source],
                str(network.addresses[source]),
                identity,
                address,
                False,
                port.protocol,
                port.port,
                timeout,
            )
            (result,) = self._dataplane.probe([request])
            return Observation(result.outcome, result.detail, result.command, result.elapsed)

    def reproduce_command(self, cell: Cell) -> str:
        with self._lock:
            command = self._command(cell, self._timeout)
        if isinstance(command, Observation):
            return f"# {command.detail}"
        return command

    def info(self) -> BackendInfo:
        return BackendInfo(self.name, "nftables", nft_version(), details={"kernel": platform.release()})


@functools.cache
def nft_version() -> str:
    """The installed nft's version (``v1.0.6``), asked once per process: every
    scenario's report names it."""
    version = run(["nft", "--version"], "asking nft for its version").split()
    return version[1] if len(version) > 1 else " ".join(version)


def _observation(pairs: list[tuple[ProbeRequest, ProbeResult]]) -> Observation:
    """One cell's observation from its probes: an endpoint's one, or a Service's one
    per backend. Backends that agree give their outcome; that disagree, ``partial``
    with the pods by outcome (an error or a name resolved by some probes and not
    others is an error: the probes, not the policies, differ)."""
    if len(pairs) == 1:
        _, result = pairs[0]
        return Observation(result.outcome, result.detail, result.command, result.elapsed)
    outcomes = {request.destination: result.outcome for request, result in pairs}
    kinds = set(outcomes.values())
    details = "; ".join(f"via {request.destination}: {result.describe()}" for request, result in pairs)
    command = "; ".join(result.command for _, result in pairs)
    elapsed = max(result.elapsed for _, result in pairs)
    if len(kinds) == 1:
        return Observation(kinds.pop(), details, command, elapsed)
    if Outcome.ERROR in kinds or Outcome.NAME_NOT_RESOLVED in kinds:
        return Observation(Outcome.ERROR, f"the probes of the backends differ: {details}", command, elapsed)
    return Observation(Outcome.PARTIAL, f"{partial_detail(outcomes)} ({details})", command, elapsed)
