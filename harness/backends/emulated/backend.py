"""The emulated backend: pods as network namespaces, policies as nftables rules,
probes as real curl and nc processes."""

from __future__ import annotations

import logging
import platform
import threading

from harness.backends.base import Backend, BackendInfo, Capabilities, Deployment
from harness.backends.emulated import lifecycle
from harness.backends.emulated.leftovers import remove_state, write_state
from harness.backends.emulated.names import RunId
from harness.backends.emulated.network import EmulatedNetwork
from harness.backends.emulated.probes import ProbeCommand, observation, probe_command
from harness.backends.emulated.ruleset import RulesetInput, remove_table, render_ruleset, render_self_rulesets
from harness.backends.emulated.runner import Job, max_workers, run_jobs
from harness.backends.emulated.servers import EndpointServers
from harness.backends.emulated.system import run
from harness.core.errors import BackendError
from harness.core.matrix import Cell, CellSet, Observation, Outcome, ReachabilityMatrix
from harness.core.settings import ImplementationSettings, SelfTraffic
from harness.core.state import DesiredState
from harness.core.topology import ExternalHost, Protocol, Topology

log = logging.getLogger(__name__)

DEFAULT_PROBE_WORKERS = 512
_DEFAULT_TIMEOUT = 1.0


class EmulatedBackend(Backend):
    name = "emulated"
    # Rules are live when `nft -f` returns, servers are ready before deploy()
    # returns, and every packet that opens or continues a flow is checked against
    # the rules in force (only reply traffic is accepted by connection state), so
    # there is no programming delay to wait out: a cell that differs from the
    # expectation will differ on every re-probe.
    capabilities = Capabilities(
        deterministic=True,
        protocols=frozenset({Protocol.TCP, Protocol.UDP}),
        unsupported_note="SCTP is not available in this kernel",
    )

    def __init__(self, probe_workers: int = DEFAULT_PROBE_WORKERS) -> None:
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
        self._declared: Topology | None = None  # as deployed, with declared labels
        self._state: DesiredState | None = None  # labels and policies in force
        self._rendered: tuple[DesiredState, ImplementationSettings] | None = None
        self._timeout = _DEFAULT_TIMEOUT
        self._self_tables = False  # pod namespaces hold self-traffic tables
        self.ruleset = ""  # the last ruleset loaded, for diagnostics
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
                if self._declared.shape() == topology.shape():
                    self._declared = topology
                    self._converge(DesiredState(topology))
                    return Deployment(topology, self._network.addresses)
                self._teardown()
            run_id = RunId.new()
            network = EmulatedNetwork(run_id, topology)
            # Record what is about to exist before creating it, so that a crash at any
            # point leaves something the next run can find.
            write_state(run_id, network.all_netns)
            self._network = network
            self._declared = topology
            try:
                network.build()
                self._converge(DesiredState(topology))
                self._servers = EndpointServers(run_id.log_dir)
                self._servers.start({ep.id: ep for ep in topology.endpoints()}, network.netns)
            except BaseException:
                self._teardown()
                raise
            log.info("emulated network %s: %d pods, %d external hosts", run_id, len(topology.pods), len(topology.externals))
            return Deployment(topology, network.addresses)

    def close(self) -> None:
        with self._lock:
            self._teardown()
        lifecycle.unregister(self)

    def _teardown(self) -> None:
        servers, self._servers = self._servers, None
        network, self._network = self._network, None
        self._declared = None
        self._state = None
        self._rendered = None
        self._self_tables = False
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

    def _converge(self, state: DesiredState) -> None:
        """Render the whole ruleset from ``state`` and load it in one transaction
        (unless exactly this state is already loaded)."""
        network = self.network
        if self._declared is None or state.topology.shape() != self._declared.shape():
            raise BackendError("the emulated backend has another topology deployed: call deploy() with this one first")
        unknown = [p.ref for p in state.policy_list if p.namespace not in {ns.name for ns in state.topology.namespaces}]
        if unknown:
            raise BackendError(f"NetworkPolicy {', '.join(unknown)}: namespace not part of the deployed topology")
        self._state = state
        if self._rendered == (state, self.settings):
            return
        data = RulesetInput(
            table=network.run.table,
            topology=state.topology,
            addresses=network.addresses,
            interfaces=network.interfaces,
            policies=state.policy_list,
            ipblock_matches_pods=self.settings.ipblock_matches_pods,
        )
        self.ruleset = render_ruleset(data)
        network.load_ruleset(self.ruleset)
        if self.settings.self_traffic is SelfTraffic.POLICY:
            network.load_endpoint_rulesets(render_self_rulesets(data))
            self._self_tables = True
        elif self._self_tables:
            network.load_endpoint_rulesets({pod.id: remove_table(network.run.table) for pod in data.topology.pods})
            self._self_tables = False
        network.run.log_dir.mkdir(parents=True, exist_ok=True)
        (network.run.log_dir / "ruleset.nft").write_text(self.ruleset)
        self._rendered = (state, self.settings)

    # -- probing ------------------------------------------------------------------------

    def _command(self, cell: Cell, timeout: float) -> ProbeCommand | Observation:
        network = self.network
        topology = self._declared
        netns = network.netns.get(cell.source)
        if topology is None or netns is None or cell.source not in network.addresses:
            return Observation(Outcome.ERROR, f"source {cell.source} is not a deployed pod")
        address = network.addresses.get(cell.destination)
        if address is None:
            if not topology.has_endpoint(cell.destination):
                return Observation(Outcome.ERROR, f"destination {cell.destination} is not deployed")
            destination = topology.endpoint(cell.destination)
            if not isinstance(destination, ExternalHost):
                return Observation(Outcome.ERROR, f"destination {cell.destination} is not deployed")
            address = destination.ip  # an address no emulated host may own
        if cell.port.protocol not in self.capabilities.protocols:
            # The probe engine never asks (it observes these as unsupported itself).
            return Observation(Outcome.ERROR, f"cannot probe {cell.port.protocol}: {self.capabilities.unsupported_note}")
        return probe_command(netns, cell.port.protocol, str(address), cell.port.port, cell.destination, timeout)

    def probe(self, cells: CellSet, timeout: float) -> ReachabilityMatrix:
        with self._lock:
            self._timeout = timeout
            results: dict[Cell, Observation] = {}
            commands: list[tuple[Cell, ProbeCommand]] = []
            for cell in cells:
                command = self._command(cell, timeout)
                if isinstance(command, Observation):
                    results[cell] = command
                else:
                    commands.append((cell, command))
            jobs = [Job(c.netns, c.argv, c.stdin, c.limit) for _, c in commands]
            for (cell, command), done in zip(commands, run_jobs(jobs, self.probe_workers), strict=True):
                if done.error:
                    results[cell] = Observation(Outcome.ERROR, done.error, command.shell)
                else:
                    results[cell] = observation(command, done.returncode, done.stdout, done.stderr, done.elapsed)
            return ReachabilityMatrix.empty(cells.axes).with_cells(results)

    def reproduce_command(self, cell: Cell) -> str:
        with self._lock:
            command = self._command(cell, self._timeout)
        if isinstance(command, Observation):
            return f"# {command.detail}"
        return command.shell

    def info(self) -> BackendInfo:
        version = run(["nft", "--version"], "asking nft for its version").split()
        return BackendInfo(
            self.name,
            "nftables",
            version[1] if len(version) > 1 else " ".join(version),
            details={"kernel": platform.release()},
        )
