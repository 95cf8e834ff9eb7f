"""The emulated backend: pods as network namespaces, policies as nftables rules,
probes as real curl and nc processes."""

from __future__ import annotations

import logging
import platform
import threading
from collections.abc import Mapping, Sequence

from harness.backends.base import Backend, Deployment, Probe
from harness.backends.emulated import lifecycle
from harness.backends.emulated.leftovers import remove_state, write_state
from harness.backends.emulated.names import RunId
from harness.backends.emulated.network import EmulatedNetwork
from harness.backends.emulated.probes import ProbeCommand, observation, probe_command
from harness.backends.emulated.ruleset import RulesetInput, remove_table, render_ruleset, render_self_rulesets
from harness.backends.emulated.runner import Job, max_workers, run_jobs
from harness.backends.emulated.servers import EndpointServers
from harness.backends.emulated.system import run
from harness.core.cluster_policy import AnyPolicy, check_supported
from harness.core.errors import BackendError
from harness.core.matrix import Observation, Outcome
from harness.core.policy import NetworkPolicy
from harness.core.settings import ModelSettings, SelfTraffic
from harness.core.state import ClusterState
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
    deterministic = True
    protocols = frozenset({Protocol.TCP, Protocol.UDP})
    unsupported_note = "SCTP is not available in this kernel"

    def __init__(self, probe_workers: int = DEFAULT_PROBE_WORKERS, ipblock_matches_pods: bool = True) -> None:
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
        self.ipblock_matches_pods = ipblock_matches_pods
        self.self_traffic = SelfTraffic.ALLOWED
        self._lock = threading.RLock()
        self._network: EmulatedNetwork | None = None
        self._servers: EndpointServers | None = None
        self._declared: Topology | None = None  # as deployed, with declared labels
        self._state: ClusterState | None = None  # labels and policies in force
        self._timeout = _DEFAULT_TIMEOUT
        self._self_tables = False  # pod namespaces hold self-traffic tables
        self.ruleset = ""  # the last ruleset loaded, for diagnostics
        lifecycle.register(self)

    # -- settings --------------------------------------------------------------------

    def use_settings(self, settings: ModelSettings) -> None:
        """Take a scenario's settings: ``ipblock_matches_pods`` changes the compiled
        rules (re-rendered at once if something is deployed); ``self_traffic``
        says whether a pod's traffic to itself is subject to policy."""
        with self._lock:
            changed = (settings.self_traffic, settings.ipblock_matches_pods) != (self.self_traffic, self.ipblock_matches_pods)
            self.self_traffic, self.ipblock_matches_pods = settings.self_traffic, settings.ipblock_matches_pods
            if changed and self._network is not None:
                self._reload()

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

    def deploy(self, topology: Topology) -> Deployment:
        with self._lock:
            if self._network is not None and self._declared is not None:
                if self._declared.shape() == topology.shape():
                    self._declared = topology
                    self.reset()
                    return Deployment(topology, self._network.addresses)
                self._teardown()
            run_id = RunId.new()
            network = EmulatedNetwork(run_id, topology)
            # Record what is about to exist before creating it, so that a crash at any
            # point leaves something the next run can find.
            write_state(run_id, network.all_netns)
            self._network = network
            self._declared = topology
            self._state = ClusterState(topology)
            try:
                network.build()
                self._reload()
                self._servers = EndpointServers(run_id.log_dir)
                self._servers.start({ep.id: ep for ep in topology.endpoints()}, network.netns)
            except BaseException:
                self._teardown()
                raise
            log.info("emulated network %s: %d pods, %d external hosts", run_id, len(topology.pods), len(topology.externals))
            return Deployment(topology, network.addresses)

    def reset(self) -> None:
        with self._lock:
            if self._network is None or self._declared is None:
                return
            self._state = ClusterState(self._declared)
            self._reload()

    def close(self) -> None:
        with self._lock:
            self._teardown()
        lifecycle.unregister(self)

    def _teardown(self) -> None:
        servers, self._servers = self._servers, None
        network, self._network = self._network, None
        self._declared = None
        self._state = None
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

    # -- policies and labels -----------------------------------------------------------

    def apply_policies(self, policies: Sequence[AnyPolicy]) -> None:
        check_supported(policies, self.name)
        with self._lock:
            state = self._current()
            known = {ns.name for ns in state.topology.namespaces}
            for policy in policies:
                if isinstance(policy, NetworkPolicy) and policy.namespace not in known:
                    raise BackendError(
                        f"NetworkPolicy {policy.ref}: namespace {policy.namespace} is not part of the deployed topology"
                    )
            self._state = state.with_policies(policies)
            self._reload()

    def delete_policies(self, refs: Sequence[str]) -> None:
        with self._lock:
            self._state = self._current().without_policies(refs)
            self._reload()

    def set_namespace_labels(self, namespace: str, labels: Mapping[str, str]) -> None:
        with self._lock:
            try:
                self._state = self._current().with_namespace_labels(namespace, labels)
            except KeyError:
                raise BackendError(f"namespace {namespace} is not part of the deployed topology") from None
            self._reload()

    def set_pod_labels(self, pod_id: str, labels: Mapping[str, str]) -> None:
        with self._lock:
            try:
                self._state = self._current().with_pod_labels(pod_id, labels)
            except KeyError:
                raise BackendError(f"pod {pod_id} is not part of the deployed topology") from None
            self._reload()

    def _current(self) -> ClusterState:
        if self._state is None:
            raise BackendError("the emulated backend has nothing deployed: call deploy(topology) first")
        return self._state

    def _reload(self) -> None:
        network = self.network
        state = self._current()
        data = RulesetInput(
            table=network.run.table,
            topology=state.topology,
            addresses=network.addresses,
            interfaces=network.interfaces,
            policies=tuple(state.policies.values()),
            ipblock_matches_pods=self.ipblock_matches_pods,
            cluster_policies=tuple(state.cluster_policies.values()),
        )
        self.ruleset = render_ruleset(data)
        network.load_ruleset(self.ruleset)
        if self.self_traffic is SelfTraffic.POLICY:
            network.load_endpoint_rulesets(render_self_rulesets(data))
            self._self_tables = True
        elif self._self_tables:
            network.load_endpoint_rulesets({pod.id: remove_table(network.run.table) for pod in data.topology.pods})
            self._self_tables = False
        network.run.log_dir.mkdir(parents=True, exist_ok=True)
        (network.run.log_dir / "ruleset.nft").write_text(self.ruleset)

    # -- probing ------------------------------------------------------------------------

    def _command(self, probe: Probe, timeout: float) -> ProbeCommand | Observation:
        network = self.network
        netns = network.netns.get(probe.source.id)
        if netns is None or probe.source.id not in network.addresses:
            return Observation(Outcome.ERROR, f"source {probe.source.id} is not a deployed pod")
        address = network.addresses.get(probe.destination.id)
        if address is None:
            if not isinstance(probe.destination, ExternalHost):
                return Observation(Outcome.ERROR, f"destination {probe.destination.id} is not deployed")
            address = probe.destination.ip  # an address no emulated host may own
        if probe.port.protocol not in self.protocols:
            # The probe engine never asks (it observes these as unsupported itself).
            return Observation(Outcome.ERROR, f"cannot probe {probe.port.protocol}: {self.unsupported_note}")
        return probe_command(netns, probe.port.protocol, str(address), probe.port.port, probe.destination.id, timeout)

    def probe(self, probes: Sequence[Probe], timeout: float) -> dict[Probe, Observation]:
        with self._lock:
            self._timeout = timeout
            results: dict[Probe, Observation] = {}
            commands: list[tuple[Probe, ProbeCommand]] = []
            for probe in probes:
                command = self._command(probe, timeout)
                if isinstance(command, Observation):
                    results[probe] = command
                else:
                    commands.append((probe, command))
            jobs = [Job(c.netns, c.argv, c.stdin, c.limit) for _, c in commands]
            for (probe, command), done in zip(commands, run_jobs(jobs, self.probe_workers), strict=True):
                if done.error:
                    results[probe] = Observation(Outcome.ERROR, done.error, command.shell)
                else:
                    results[probe] = observation(command, done.returncode, done.stdout, done.stderr, done.elapsed)
            return results

    def reproduce_command(self, probe: Probe) -> str:
        with self._lock:
            command = self._command(probe, self._timeout)
        if isinstance(command, Observation):
            return f"# {command.detail}"
        return command.shell

    def describe(self) -> dict[str, str]:
        version = run(["nft", "--version"], "asking nft for its version").split()
        return {
            "backend": self.name,
            "cni": "nftables",
            "cni_version": version[1] if len(version) > 1 else " ".join(version),
            "kernel": platform.release(),
        }
