"""``--backend model``: no network; the observation is the reference model's answer.

It checks a scenario's declared intent against its policies in well under a second,
which is what a policy author wants on every save, and it is the baseline the
network backends are compared with.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Callable, Mapping, Sequence

from harness import __version__
from harness.backends.base import Backend, Deployment, OptionSource, Probe
from harness.core.addressing import plan_addresses
from harness.core.cluster_policy import AnyPolicy, check_supported
from harness.core.errors import BackendError
from harness.core.matrix import Observation, Outcome
from harness.core.settings import ModelSettings
from harness.core.state import ClusterState
from harness.core.topology import Topology
from harness.model import ReferenceModel


class ModelBackend(Backend):
    name = "model"
    deterministic = True

    def __init__(self) -> None:
        self._state: ClusterState | None = None
        self._declared: Topology | None = None
        self._addresses: dict[str, ipaddress.IPv4Address] = {}
        self._settings = ModelSettings()
        self._context: tuple[str, str] | None = None

    def use_settings(self, settings: ModelSettings) -> None:
        self._settings = settings

    @property
    def state(self) -> ClusterState:
        if self._state is None:
            raise BackendError("the model backend has no topology: call deploy() first")
        return self._state

    def deploy(self, topology: Topology) -> Deployment:
        self._state = ClusterState(topology)
        self._declared = topology
        self._addresses = plan_addresses(topology)
        return Deployment(topology, self._addresses)

    def apply_policies(self, policies: Sequence[AnyPolicy]) -> None:
        check_supported(policies, self.name)
        self._state = self.state.with_policies(policies)

    def delete_policies(self, refs: Sequence[str]) -> None:
        self._state = self.state.without_policies(refs)

    def set_namespace_labels(self, namespace: str, labels: Mapping[str, str]) -> None:
        self._state = self.state.with_namespace_labels(namespace, labels)

    def set_pod_labels(self, pod_id: str, labels: Mapping[str, str]) -> None:
        self._state = self.state.with_pod_labels(pod_id, labels)

    def probe(self, probes: Sequence[Probe], timeout: float) -> dict[Probe, Observation]:
        state = self.state
        model = ReferenceModel(
            state.topology, state.policies.values(), self._addresses, self._settings, state.cluster_policies.values()
        )
        results = {}
        for probe in probes:
            allowed = model.allowed(probe.source.id, probe.destination.id, probe.port)
            detail = "" if allowed else model.explain(probe.source.id, probe.destination.id, probe.port)
            results[probe] = Observation(Outcome.from_bool(allowed), detail, self.reproduce_command(probe))
        return results

    def begin_step(self, scenario: str, step: str) -> None:
        self._context = (scenario, step)

    def reproduce_command(self, probe: Probe) -> str:
        """``python -m harness explain``: the model's verdict for this cell and why."""
        args = ["python", "-m", "harness", "explain"]
        if self._context is not None:
            args += [self._context[0], "--step", self._context[1]]
        args += [probe.source.id, probe.destination.id, str(probe.port)]
        return " ".join(shlex.quote(a) for a in args)

    def reset(self) -> None:
        if self._declared is not None:
            self._state = ClusterState(self._declared)

    def close(self) -> None:
        self._state = None

    def describe(self) -> dict[str, str]:
        return {"backend": self.name, "cni": "reference-model", "cni_version": __version__}


def create(options: OptionSource, progress: Callable[[str], None] | None = None) -> Backend:
    return ModelBackend()
