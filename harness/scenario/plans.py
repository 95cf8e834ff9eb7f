"""A scenario's steps turned into :class:`~harness.core.plan.StepPlan` objects, once:
the state each step brings, the cells it probes, the intended outcome of each and
the reference model's. The loader calls :func:`plan_steps`; so does
:class:`harness.api.PolicyTest` for the steps it builds from Python."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import replace

from harness.core.addressing import plan_addresses
from harness.core.errors import HarnessError, ScenarioError
from harness.core.matrix import ALLOWED_CODE, BLOCKED_CODE, Cell, ReachabilityMatrix
from harness.core.plan import StepPlan, probe_grid
from harness.core.settings import ImplementationSettings
from harness.core.state import DesiredState, StateOrigin
from harness.core.topology import PortProtocol, Topology
from harness.model import model_of
from harness.scenario.expectations import expected_matrix
from harness.scenario.spec import Expectation, ExpectedFailure, Scenario, Step


def probed_ports(topology: Topology, expectation: Expectation) -> tuple[PortProtocol, ...]:
    return expectation.ports if expectation.ports is not None else topology.port_keys()


def plan_step(
    name: str,
    state: DesiredState,
    expectation: Expectation,
    settings: ImplementationSettings,
    source: str,
    *,
    probe_self: bool = False,
    probe_names: bool = False,
    addresses: Mapping[str, ipaddress.IPv4Address] | None = None,
    where: str = "",
) -> StepPlan:
    """One step's plan. Raises :class:`ScenarioError` (``source``, at field
    ``where``) when the step probes no cell or a rule of its intent matches none."""
    topology = state.topology
    cells = probe_grid(topology, probed_ports(topology, expectation), probe_self, probe_names)
    if not cells:
        raise ScenarioError(
            source,
            where or expectation.path,
            "this step probes no cell: no endpoint serves a probed port, or the only pairs are a pod and itself",
            "pods that serve ports, and at least one other pod to probe them from",
        )
    try:
        model = model_of(state, addresses or plan_addresses(topology), settings)
    except HarnessError as err:
        raise ScenarioError(source, where or expectation.path, str(err)) from None
    model_matrix = model.reachability(cells)
    expected = expected_matrix(expectation, cells, topology, model_matrix, source)
    return StepPlan(name, state, expected, model_matrix, settings)


def plan_steps(scenario: Scenario) -> tuple[StepPlan, ...]:
    """Every step's plan, in order: each state is the previous one after the step's
    changes."""
    source = str(scenario.path)
    addresses = plan_addresses(scenario.topology)
    state = DesiredState(scenario.topology)
    plans = []
    several = len(scenario.steps) > 1
    for i, step in enumerate(scenario.steps):
        state = state.after(step.changes, StateOrigin(source, scenario.name, step.name))
        plan = plan_step(
            step.name,
            state,
            step.expect,
            scenario.settings.implementation,
            source,
            probe_self=scenario.settings.probe_self,
            probe_names=scenario.settings.probe_names,
            addresses=addresses,
            where=f"steps[{i}]" if several else "",
        )
        plan = replace(plan, changes=step.changes)
        if state.staged:
            enforced, declared = _audit(plan, step, addresses, source)
            plan = replace(plan, enforced=enforced, expected_when_enforced=declared)
        if scenario.xfail is not None:
            plan = replace(plan, documented=_documented(scenario.xfail, step, plan, source, i if several else None))
        plans.append(plan)
    if scenario.xfail is not None and all(p.documented is None for p in plans):
        raise ScenarioError(
            source,
            "xfail",
            "the expected failure documents no cell that differs from the intent",
            "wrong_cells listing the cells the policies get wrong, or actual: the matrix they produce",
        )
    return tuple(plans)


def _audit(
    plan: StepPlan, step: Step, addresses: Mapping[str, ipaddress.IPv4Address], source: str
) -> tuple[ReachabilityMatrix, ReachabilityMatrix | None]:
    """What enforcing the step's staged policies would give, by the model, and what
    the step declares it gives."""
    enforced_state = plan.state.when_enforced()
    try:
        enforced = model_of(enforced_state, addresses, plan.settings).reachability(plan.cells)
    except HarnessError as err:
        raise ScenarioError(source, plan.name, f"the staged policies cannot be modelled enforced: {err}") from None
    declared = None
    if step.expect_when_enforced is not None:
        declared = expected_matrix(step.expect_when_enforced, plan.cells, enforced_state.topology, enforced, source)
    return enforced, declared


def _documented(xfail: ExpectedFailure, step: Step, plan: StepPlan, source: str, index: int | None) -> ReachabilityMatrix | None:
    """The matrix the policies are documented to produce at this step: the intent
    with the documented wrong cells flipped, or the ``actual`` expectation. None
    when the step is documented to be right."""
    where = "xfail" if index is None else f"xfail (step {step.name})"
    if step.name in xfail.actual:
        actual = xfail.actual[step.name]
        documented = expected_matrix(actual, plan.cells, plan.topology, plan.model, source)
        return None if documented == plan.expected else documented
    cells = xfail.wrong_cells.get(step.name)
    if not cells:
        return None
    flips = {}
    for cell in sorted(cells):
        want = plan.expected.observation(cell)
        if want is None:
            raise ScenarioError(
                source,
                f"{where}.wrong_cells",
                f"{cell} is not probed at this step",
                f"a probed cell such as {next(iter(plan.cells))}",
            )
        flips[cell] = want.outcome.code
    codes = {p: plan.expected.codes(p).copy() for p in plan.expected.ports}
    for cell, code in flips.items():
        where_ = plan.expected.axes.index(cell)
        assert where_ is not None
        model_code = int(plan.model.codes(cell.port)[where_])
        if model_code not in (ALLOWED_CODE, BLOCKED_CODE, code):
            # A Service or name cell: what differs is the model's outcome
            # (partial, refused, name not resolved), not the other of two.
            codes[cell.port][where_] = model_code
        else:
            codes[cell.port][where_] = BLOCKED_CODE if code == ALLOWED_CODE else ALLOWED_CODE
    return ReachabilityMatrix.from_codes(plan.expected.axes, codes)


def parse_cell(text: str) -> Cell | None:
    """``x/a → y/b:80/TCP`` (or ``->``), as the harness prints a cell; None when
    ``text`` is not one."""
    arrow = "→" if "→" in text else "->"
    source, sep, rest = text.partition(arrow)
    destination, colon, port = rest.strip().rpartition(":")
    if not sep or not colon:
        return None
    try:
        key = PortProtocol.parse(port.strip())
    except HarnessError:
        return None
    if not source.strip() or not destination.strip():
        return None
    return Cell(source.strip(), destination.strip(), key)
