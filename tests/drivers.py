"""Driving a real backend step by step from a test.

Backends only converge to desired states; a test reads better as a sequence of
changes ("apply this policy", "relabel that pod", "probe these cells"). A
:class:`StepDriver` keeps the state those changes lead to and converges the
backend to it after each one, exactly as the pipeline does between steps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from harness.backends.base import Backend, Deployment
from harness.core.matrix import ALLOWED, Cell, CellSet, Observation, ReachabilityMatrix
from harness.core.settings import ImplementationSettings
from harness.core.state import DesiredState, Manifest
from harness.core.topology import Endpoint, PodSpec, PortProtocol, Topology


@dataclass(frozen=True)
class Probe:
    """One cell, with the declared endpoints it goes between."""

    source: PodSpec
    destination: Endpoint
    port: PortProtocol

    @property
    def cell(self) -> Cell:
        return Cell(self.source.id, self.destination.id, self.port)


class StepDriver:
    def __init__(self, backend: Backend, settings: ImplementationSettings | None = None) -> None:
        self.backend = backend
        self.settings = settings or ImplementationSettings()
        self.declared: Topology | None = None
        self.state: DesiredState | None = None

    # -- the changes a step makes ------------------------------------------------------

    def deploy(self, topology: Topology, settings: ImplementationSettings | None = None) -> Deployment:
        if settings is not None:
            self.settings = settings
        deployment = self.backend.deploy(topology, self.settings)
        self.declared = topology
        self._converge(DesiredState(topology))
        return deployment

    def use_settings(self, settings: ImplementationSettings) -> None:
        """Other implementation settings for what is deployed, keeping the state in force."""
        self.settings = settings
        if self.declared is not None:
            state = self._current()
            self.backend.deploy(self.declared, settings)
            self._converge(state)

    def _current(self) -> DesiredState:
        assert self.state is not None, "deploy() first"
        return self.state

    def _converge(self, state: DesiredState) -> None:
        self.backend.converge(state)
        self.state = state

    def apply_policies(self, policies: Sequence[Manifest]) -> None:
        self._converge(self._current().with_policies(policies))

    def delete_policies(self, refs: Sequence[str]) -> None:
        self._converge(self._current().without_policies(refs))

    def set_namespace_labels(self, namespace: str, labels: Mapping[str, str]) -> None:
        state = self._current()
        self._converge(replace(state, topology=state.topology.with_namespace_labels(namespace, labels)))

    def set_pod_labels(self, pod_id: str, labels: Mapping[str, str]) -> None:
        state = self._current()
        self._converge(replace(state, topology=state.topology.with_pod_labels(pod_id, labels)))

    def reset(self) -> None:
        """The declared labels again, and no policy."""
        if self.declared is not None:
            self._converge(DesiredState(self.declared))

    # -- probing -----------------------------------------------------------------------

    def probe(self, probes: Sequence[Probe], timeout: float) -> dict[Probe, Observation]:
        matrix = self.backend.probe(CellSet.from_cells(p.cell for p in probes), timeout)
        return {p: matrix[p.cell] for p in probes}

    def reproduce_command(self, probe: Probe) -> str:
        # Every backend that probes has one, but it is not part of the shared interface.
        command: Any = getattr(self.backend, "reproduce_command")  # noqa: B009
        return str(command(probe.cell))

    def describe(self) -> dict[str, str]:
        return self.backend.info().as_dict()

    def close(self) -> None:
        self.backend.close()

    def __getattr__(self, name: str) -> Any:
        # Everything else is the backend's own (its network, its servers...).
        return getattr(self.backend, name)


def expecting(cells: Sequence[Cell], observation: Observation | None = None) -> ReachabilityMatrix:
    """A matrix of ``cells`` all expected to have ``observation`` (allowed)."""
    axes = CellSet.from_cells(cells).axes
    return ReachabilityMatrix(axes.sources, axes.destinations, axes.ports, dict.fromkeys(cells, observation or ALLOWED))
