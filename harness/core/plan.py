"""What one step runs, decided once: the state to converge to, the cells to
probe with their expected outcomes, and the reference model's answer for the same
cells. Built by the scenario loader (or by :class:`harness.api.PolicyTest`);
nothing downstream recomputes it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from harness.core.matrix import Axes, CellSet, ReachabilityMatrix
from harness.core.services import dns_pod
from harness.core.settings import ImplementationSettings
from harness.core.state import DesiredState, StepChanges
from harness.core.topology import PortProtocol, Topology


def probe_grid(topology: Topology, ports: Iterable[PortProtocol], probe_self: bool = False, names: bool = False) -> CellSet:
    """Every pod to every endpoint serving each port, on axes of every pod (rows)
    and every endpoint serving one of ``ports`` (columns); a pod's traffic to itself
    only when ``probe_self`` (CNIs differ on it, as the upstream suite notes).

    Each Service is a column on its ports (then, with ``names``, once more by its
    DNS name). A pod is not probed to a Service whose only backend it is (its
    traffic would come back to itself, where CNIs differ, as above), nor is the
    cluster DNS pod probed by name (it does not resolve through itself)."""
    ports = tuple(ports)
    serving = {key: set(topology.destination_ids(key, names)) for key in ports}
    every = set().union(*serving.values()) if serving else set()
    sources = tuple(p.id for p in topology.pods)
    order = [ep.id for ep in topology.endpoints()] + [s.id for s in topology.services]
    if names:
        order += [s.short_name for s in topology.services]
    destinations = tuple(d for d in order if d in every)
    axes = Axes(sources, destinations, ports)
    self_pairs = [(i, axes.column(src)) for i, src in enumerate(sources) if axes.column(src) is not None]
    resolver = dns_pod(topology.pods)
    masks = {}
    for key in ports:
        columns = np.array([d in serving[key] for d in destinations], dtype=bool)
        mask = np.broadcast_to(columns, axes.shape).copy()
        if not probe_self and self_pairs:
            rows, cols = zip(*self_pairs, strict=True)
            mask[list(rows), list(cols)] = False
        for svc in topology.services:
            backends = svc.backends(key, topology.pods)
            by_ip, by_name = axes.column(svc.id), axes.column(svc.short_name)
            if len(backends) == 1:
                row = axes.row(backends[0].pod.id)
                for col in (by_ip, by_name):
                    if row is not None and col is not None:
                        mask[row, col] = False
            if by_name is not None and resolver is not None and axes.row(resolver.id) is not None:
                mask[axes.row(resolver.id), by_name] = False
        masks[key] = mask
    return CellSet(axes, masks)


@dataclass(frozen=True, eq=False)
class StepPlan:
    """One step of a scenario, ready to run.

    ``expected`` holds every cell to probe with the outcome the step's intent
    declares; ``model`` the reference model's outcome for the same cells (with the
    addresses the harness plans); ``documented``, for a scenario marked as an
    expected failure, the matrix its policies are documented to produce instead.

    With staged policies in force (audit mode), ``enforced`` is the model's matrix
    once they are enforced, and ``expected_when_enforced`` what the step declares
    that enforcing them gives (``expect_when_enforced:``), when it does."""

    name: str
    state: DesiredState
    expected: ReachabilityMatrix
    model: ReachabilityMatrix
    settings: ImplementationSettings
    changes: StepChanges = StepChanges()
    documented: ReachabilityMatrix | None = None
    enforced: ReachabilityMatrix | None = None
    expected_when_enforced: ReachabilityMatrix | None = None

    @property
    def cells(self) -> CellSet:
        return self.expected.cellset

    @property
    def probes(self) -> int:
        return len(self.expected)

    @property
    def topology(self) -> Topology:
        return self.state.topology
