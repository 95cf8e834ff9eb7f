"""``--backend model``: no network; the observation is the reference model's answer.

It checks a scenario's declared intent against its policies in well under a second,
which is what a policy author wants on every save, and it is the baseline the
network backends are compared with.
"""

from __future__ import annotations

import shlex

import numpy as np

from harness import __version__
from harness.backends.base import Backend, BackendInfo, Capabilities, Deployment, OptionSource
from harness.core.addressing import plan_addresses
from harness.core.cluster_policy import check_supported
from harness.core.errors import BackendError
from harness.core.matrix import Cell, CellSet, Observation, ReachabilityMatrix
from harness.core.progress import Progress
from harness.core.settings import ImplementationSettings
from harness.core.state import DesiredState
from harness.core.topology import Topology
from harness.model import model_of

#: Cells that get a reproduce command (``python -m harness explain``) in a round;
#: a large round keeps its outcomes only, and the engine explains the wrong cells.
_COMMANDS = 2000


class ModelBackend(Backend):
    name = "model"
    capabilities = Capabilities(deterministic=True)

    def __init__(self) -> None:
        self._topology: Topology | None = None
        self._state: DesiredState | None = None
        self._addresses = plan_addresses(Topology())
        self._settings = ImplementationSettings()

    def deploy(self, topology: Topology, settings: ImplementationSettings) -> Deployment:
        self._topology = topology
        self._state = DesiredState(topology)
        self._addresses = plan_addresses(topology)
        self._settings = settings
        return Deployment(topology, self._addresses)

    def converge(self, state: DesiredState) -> None:
        if self._topology is None or state.topology.shape() != self._topology.shape():
            raise BackendError("the model backend has another topology deployed: call deploy() with this one first")
        check_supported(state.cluster_policy_list, self.name)
        self._state = state

    def probe(self, cells: CellSet, timeout: float) -> ReachabilityMatrix:
        if self._state is None:
            raise BackendError("the model backend has no topology: call deploy() first")
        matrix = model_of(self._state, self._addresses, self._settings).reachability(cells)
        if len(cells) > _COMMANDS:
            return matrix
        notes = {}
        for cell in cells:
            notes[cell] = Observation(matrix[cell].outcome, "", self.reproduce_command(cell))
        return ReachabilityMatrix.from_codes(matrix.axes, {p: np.array(matrix.codes(p)) for p in matrix.ports}, notes)

    def reproduce_command(self, cell: Cell) -> str:
        """``python -m harness explain``: the model's verdict for this cell and why."""
        args = ["python", "-m", "harness", "explain"]
        origin = self._state.origin if self._state is not None else None
        if origin is None:
            return "# the reference model's verdict; no scenario file to explain it from"
        args += [origin.source, "--step", origin.step]
        args += [cell.source, cell.destination, str(cell.port)]
        return shlex.join(args)

    def close(self) -> None:
        self._state = None
        self._topology = None

    def info(self) -> BackendInfo:
        return BackendInfo(self.name, "reference-model", __version__)


def create(options: OptionSource, progress: Progress | None = None) -> Backend:
    return ModelBackend()
