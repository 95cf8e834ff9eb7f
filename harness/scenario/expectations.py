"""From a step's declared intent to an expected reachability matrix over the cells
the step probes, computed on whole arrays (a rule is a block of rows and columns).

A rule that matches no probed cell is an error naming the rule: it tests nothing,
and a test tool must not be green without testing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.core.errors import ScenarioError
from harness.core.matrix import ALLOWED_CODE, BLOCKED_CODE, NOT_PROBED, Cell, CellSet, Codes, ReachabilityMatrix
from harness.core.topology import PortProtocol, Topology
from harness.scenario.spec import EndpointMatcher, Expectation, ExpectationForm, ExpectRule


def _mask(matchers: Sequence[EndpointMatcher], ids: Sequence[str], topology: Topology) -> np.ndarray:
    return np.array([any(m.matches(i, topology) for m in matchers) for i in ids], dtype=bool)


def _why_nothing(rule: ExpectRule, cells: CellSet, topology: Topology, sources: np.ndarray, destinations: np.ndarray) -> str:
    axes = cells.axes
    if not sources.any():
        externals = [str(m) for m in rule.sources if not any(m.matches(p.id, topology) for p in topology.pods)]
        if externals and all(topology.has_endpoint(str(m)) and "/" not in str(m) for m in externals):
            return f"{', '.join(externals)} is an external host, and sources are pods"
        return "its from: matches no pod"
    if not destinations.any():
        return "its to: matches no endpoint probed at this step"
    ports = [p for p in axes.ports if rule.port.matches(p)]
    if not ports:
        return f"no probed port matches {rule.port} (probed: {', '.join(map(str, axes.ports))})"
    return "no destination it names serves a probed port it names (or only a pod and itself, which is not probed)"


def expected_matrix(
    expectation: Expectation,
    cells: CellSet,
    topology: Topology,
    model: ReachabilityMatrix,
    source: str,
) -> ReachabilityMatrix:
    """The intended outcome of every cell of ``cells``; ``topology`` holds the
    labels in force, ``model`` the reference model's matrix of the same cells (the
    answer of the ``model`` form). ``source`` names the scenario file in errors."""
    if expectation.form is ExpectationForm.MODEL:
        return model
    axes = cells.axes
    codes: dict[PortProtocol, Codes] = {}
    if expectation.form is ExpectationForm.RULES:
        default = ALLOWED_CODE if expectation.default_allowed else BLOCKED_CODE
        codes = {p: np.full(axes.shape, default, dtype=np.int8) for p in axes.ports}
        for rule in expectation.rules:
            src = _mask(rule.sources, axes.sources, topology)
            dst = _mask(rule.destinations, axes.destinations, topology)
            block = np.outer(src, dst)
            value = rule.result.code
            hit = False
            for port in axes.ports:
                if rule.port.matches(port):
                    # Last matching rule wins (docs/scenario-format.md).
                    codes[port][block] = value
                    hit = hit or bool((block & cells.masks[port]).any())
            if not hit:
                raise ScenarioError(
                    source,
                    rule.path,
                    f"the rule ({rule.describe()}) matches no probed cell: {_why_nothing(rule, cells, topology, src, dst)}",
                    "a rule from pods to endpoints that serve the ports it names",
                )
    else:
        codes = {p: _table_codes(expectation, cells, p, source) for p in axes.ports}
    for port in axes.ports:
        codes[port][~cells.masks[port]] = NOT_PROBED
    return ReachabilityMatrix.from_codes(axes, codes)


def _table_codes(expectation: Expectation, cells: CellSet, port: PortProtocol, source: str) -> Codes:
    axes = cells.axes
    table = expectation.matrices[port]
    grid = np.full(axes.shape, NOT_PROBED, dtype=np.int8)
    for (src, dst), outcome in table.cells.items():
        cell = Cell(src, dst, port)
        where = axes.index(cell)
        probed = where is not None and bool(cells.masks[port][where])
        if outcome is None:
            if probed:
                raise ScenarioError(
                    source,
                    f"{expectation.path}.matrix.{port}",
                    f"cell {src} → {dst} is '-' but is probed",
                    "'.' or 'X'; '-' only where nothing is probed (a pod and itself)",
                )
            continue
        if where is not None:
            grid[where] = outcome.code
    missing = cells.masks[port] & (grid == NOT_PROBED)
    if missing.any():
        r, c = (int(v[0]) for v in np.nonzero(missing))
        raise ScenarioError(
            source,
            f"{expectation.path}.matrix.{port}",
            f"cell {axes.sources[r]} → {axes.destinations[c]} is probed but written '-'",
            "'.' or 'X' for every probed cell",
        )
    return grid
