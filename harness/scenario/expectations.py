"""From a step's declared intent to an expected reachability matrix.

Which cells are probed (the plan) is decided here too, so that every form of
expectation and every backend agree on the grid.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from harness.core.cluster_policy import ClusterPolicy
from harness.core.matrix import Cell, Observation, Outcome, ReachabilityMatrix
from harness.core.policy import NetworkPolicy
from harness.core.settings import ModelSettings
from harness.core.topology import PortProtocol, Topology
from harness.model import ReferenceModel
from harness.scenario.loader import Expectation, ExpectationForm, ExpectRule


@dataclass(frozen=True)
class ProbePlan:
    """The grid of one step: rows, columns, ports and the cells actually probed."""

    sources: tuple[str, ...]
    destinations: tuple[str, ...]
    ports: tuple[PortProtocol, ...]
    cells: tuple[Cell, ...]


def plan_probes(topology: Topology, ports: Iterable[PortProtocol], probe_self: bool = False) -> ProbePlan:
    """Every pod to every endpoint serving each port; a pod's traffic to itself only
    when ``probe_self`` (CNIs differ on it, as the upstream suite notes)."""
    ports = tuple(ports)
    sources = tuple(p.id for p in topology.pods)
    serving = {key: {ep.id for ep in topology.serving(key)} for key in ports}
    destinations = tuple(ep.id for ep in topology.endpoints() if any(ep.id in s for s in serving.values()))
    cells = tuple(
        Cell(src, dst, key)
        for key in ports
        for src in sources
        for dst in destinations
        if dst in serving[key] and (probe_self or src != dst)
    )
    return ProbePlan(sources, destinations, ports, cells)


def _rule_matches(rule: ExpectRule, cell: Cell, topology: Topology) -> bool:
    return (
        rule.port.matches(cell.port)
        and any(m.matches(cell.source, topology) for m in rule.sources)
        and any(m.matches(cell.destination, topology) for m in rule.destinations)
    )


def expected_matrix(
    expectation: Expectation,
    plan: ProbePlan,
    topology: Topology,
    policies: Iterable[NetworkPolicy],
    addresses: Mapping[str, ipaddress.IPv4Address],
    settings: ModelSettings,
    cluster_policies: Iterable[ClusterPolicy] = (),
) -> ReachabilityMatrix:
    """The intended matrix for ``plan``, with ``topology`` holding the labels in force."""
    cells: dict[Cell, Observation] = {}
    if expectation.form is ExpectationForm.MODEL:
        model = ReferenceModel(topology, policies, addresses, settings, cluster_policies)
        return model.matrix(plan.cells, plan.sources, plan.destinations, plan.ports)
    if expectation.form is ExpectationForm.RULES:
        for cell in plan.cells:
            allowed = expectation.default_allowed
            # Last matching rule wins (docs/scenario-format.md).
            for rule in expectation.rules:
                if _rule_matches(rule, cell, topology):
                    allowed = rule.allowed
            cells[cell] = Observation(Outcome.from_bool(allowed))
    else:
        for cell in plan.cells:
            table = expectation.matrices[cell.port]
            cells[cell] = Observation(Outcome.from_bool(table.cells[(cell.source, cell.destination)]))
    return ReachabilityMatrix(plan.sources, plan.destinations, plan.ports, cells)
