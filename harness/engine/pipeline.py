"""The one pipeline from a plan to a result, shared by the pytest plugin,
:class:`harness.api.PolicyTest` and ``python -m harness``::

    backend.converge(plan.state)                  # the state the step declares
    observed = engine.observe(plan.expected, ...) # probe, re-probe what differs
    comparison = compare(plan.expected, observed)

Usable from a plain script::

    from harness.backends.model import ModelBackend
    from harness.engine.pipeline import Pipeline
    from harness.scenario import load_scenario

    with ModelBackend() as backend:
        result = Pipeline(backend).run_scenario(load_scenario("scenarios/default-deny-ingress.yaml"))
    print(result.render())
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from harness.backends.base import Backend, BackendInfo, Deployment
from harness.core.addressing import plan_addresses
from harness.core.errors import BackendError, UnsupportedPolicy
from harness.core.matrix import (
    ALLOWED_CODE,
    BLOCKED_CODE,
    NOT_PROBED,
    UNSUPPORTED_CODE,
    Cell,
    CellSet,
    Codes,
    Comparison,
    Mask,
    Observation,
    Outcome,
    ReachabilityMatrix,
    compare,
)
from harness.core.plan import StepPlan
from harness.core.progress import Progress, silent
from harness.core.settings import ImplementationSettings
from harness.core.state import DesiredState
from harness.core.topology import Topology
from harness.engine.probing import ProbeEngine, ProbeSettings
from harness.model import model_of
from harness.scenario import Scenario

#: Wrong cells per step that get the reference model's explanation (the ones the
#: reports list first); explaining every cell of a large failure would cost more
#: than the run.
EXPLAINED_CELLS = 200

#: Cells of a step the backend cannot enforce that carry the reason in their note
#: (the verdict quotes the first ones; the step keeps the reason too).
_NOTED_CELLS = 20


@dataclass(frozen=True, eq=False)
class StepResult:
    plan: StepPlan
    comparison: Comparison
    duration: float = 0.0
    #: The reference model's explanation of the wrong cells reported first.
    explanations: Mapping[Cell, str] = field(default_factory=dict)
    #: Observed vs the reference model (backends other than the model itself):
    #: cells where the network and Kubernetes semantics disagree.
    findings: Comparison | None = None
    #: Why the backend could not bring the network to this step's state (a policy
    #: field it cannot enforce): every cell of the step is then unsupported.
    unsupported_policy: str = ""

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def ok(self) -> bool:
        return self.comparison.ok

    @property
    def observed(self) -> ReachabilityMatrix:
        return self.comparison.observed

    @property
    def probes(self) -> int:
        return self.plan.probes

    @property
    def policies(self) -> tuple[str, ...]:
        return self.plan.state.refs

    @property
    def finding_count(self) -> int:
        return self.findings.mismatch_count if self.findings is not None else 0


@dataclass(frozen=True, eq=False)
class ScenarioResult:
    scenario: Scenario
    steps: tuple[StepResult, ...]
    backend: BackendInfo
    duration: float = 0.0
    #: The backend variant (``calico-3.31``) when a run covers several; else "".
    variant: str = ""

    @property
    def key(self) -> str:
        """The scenario's name, with the variant when there is one: names files."""
        return f"{self.scenario.name}[{self.variant}]" if self.variant else self.scenario.name

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    @property
    def probes(self) -> int:
        return sum(s.probes for s in self.steps)

    @property
    def mismatches(self) -> int:
        return sum(s.comparison.mismatch_count for s in self.steps)

    @property
    def unsupported(self) -> int:
        return sum(s.comparison.unsupported_count for s in self.steps)

    @property
    def findings(self) -> int:
        return sum(s.finding_count for s in self.steps)

    def render(self) -> str:
        """Per failing step: one line per wrong cell (with why and how to reproduce),
        then the expected, observed and comparison tables."""
        blocks = []
        for step in self.steps:
            if step.ok and not step.comparison.unsupported_count:
                continue
            head = f"scenario {self.scenario.name}, step {step.name}" if len(self.steps) > 1 else f"scenario {self.scenario.name}"
            status = "FAILED" if not step.ok else "passed with probes not run"
            policies = ", ".join(step.policies) or "none"
            blocks.append(
                f"{head}: {status} on backend {self.backend.backend}\n"
                f"policies in force: {policies}\n\n{step.comparison.render(explanations=step.explanations)}"
            )
        return "\n\n".join(blocks)


class Pipeline:
    """Runs step plans on one backend, across scenarios: it knows what the backend
    last converged to, so that a change is observed only once it is in force."""

    def __init__(self, backend: Backend, probe_settings: ProbeSettings | None = None, progress: Progress = silent) -> None:
        self.backend = backend
        self.engine = ProbeEngine(backend, probe_settings)
        self.progress = progress
        self.deployment: Deployment | None = None
        self._shape: tuple[object, ...] | None = None
        self._settings: ImplementationSettings | None = None
        #: The reference model's matrix of the last state converged to, and its state.
        self._last: tuple[DesiredState, ReachabilityMatrix] | None = None

    # -- deploying ----------------------------------------------------------------

    def deploy(self, topology: Topology, settings: ImplementationSettings) -> Deployment:
        """Deploy ``topology``; when its shape is the one deployed, the backend
        reuses what runs and the state left by the previous scenario is taken into
        account by the next step."""
        if self._shape != topology.shape() or self._settings != settings:
            self._last = None if self._shape != topology.shape() else self._last
        self.deployment = self.backend.deploy(topology, settings)
        self._shape = topology.shape()
        self._settings = settings
        return self.deployment

    # -- one step -----------------------------------------------------------------

    def run_step(self, plan: StepPlan) -> StepResult:
        started = time.monotonic()
        deterministic = self.backend.capabilities.deterministic
        try:
            self.backend.converge(plan.state)
        except UnsupportedPolicy as err:
            # Refused before anything changed: the network keeps its last state, and
            # no cell of this step is observed under the policies it declares.
            observed = _unsupported(plan.expected, str(err))
            return StepResult(plan, compare(plan.expected, observed), time.monotonic() - started, unsupported_policy=str(err))
        settle = None if deterministic else self._flips(plan)
        self.progress(f"{_label(plan)}: probing {plan.probes} cell(s)")
        observed = self.engine.observe(plan.expected, settle, self.progress)
        comparison = compare(plan.expected, observed)
        self._last = (plan.state, plan.model)
        explanations = self._explain(plan, comparison) if not comparison.ok else {}
        findings = None if self.backend.name == "model" else self._findings(plan, observed)
        return StepResult(plan, comparison, time.monotonic() - started, MappingProxyType(explanations), findings)

    def return_to_clean(self, topology: Topology, cells: CellSet) -> None:
        """Converge to ``topology`` with no policy and, on a backend that programs
        changes asynchronously, wait until every cell of ``cells`` the previous
        state blocked is seen allowed: the next scenario's policies must not meet
        the last one's still in force."""
        clean = DesiredState(topology)
        self.backend.converge(clean)
        if self.backend.capabilities.deterministic or self._last is None or not self._last[0].refs:
            self._last = None if self._last is None else (clean, self._last[1])
            return
        previous = self._last[1].on_axes(cells.axes)
        masks = {}
        for port in cells.axes.ports:
            masks[port] = (
                cells.masks[port]
                & (previous.codes(port) == BLOCKED_CODE)
                & (port.protocol in self.backend.capabilities.protocols)
            )
        blocked = CellSet(cells.axes, masks)
        if blocked:
            codes = {
                p: np.where(blocked.masks[p], np.int8(ALLOWED_CODE), np.int8(NOT_PROBED)).astype(np.int8)
                for p in cells.axes.ports
            }
            expected = ReachabilityMatrix.from_codes(cells.axes, codes)
            self.progress(f"waiting for {len(blocked)} cell(s) the previous policies blocked to be allowed again")
            observed = self.engine.observe(expected, expected, self.progress)
            still = compare(expected, observed)
            if not still.ok:
                first = ", ".join(str(m.cell) for m in still.mismatches[:5])
                raise BackendError(
                    f"the cluster did not return to its no-policy state within {self.engine.settings.deadline:g}s: "
                    f"{still.mismatch_count} cell(s) the previous policies blocked are still not allowed ({first}). "
                    "A policy of an earlier scenario is still in force; no verdict is given on top of it."
                )
        self._last = None

    def _flips(self, plan: StepPlan) -> ReachabilityMatrix | None:
        """The cells whose outcome the step's change flips, by the reference model,
        with the outcome they flip to."""
        if self._last is None:
            return None
        before = self._last[1].on_axes(plan.model.axes)
        codes = {}
        any_flip = False
        for port in plan.model.ports:
            now, then = plan.model.codes(port), before.codes(port)
            flips = (now != NOT_PROBED) & (then != NOT_PROBED) & (now != then)
            any_flip = any_flip or bool(flips.any())
            codes[port] = _where(flips, now)
        return ReachabilityMatrix.from_codes(plan.model.axes, codes) if any_flip else None

    def _explain(self, plan: StepPlan, comparison: Comparison) -> dict[Cell, str]:
        model = model_of(plan.state, self._addresses(plan), plan.settings)
        out = {}
        for i, mismatch in enumerate(comparison.iter_mismatches()):
            if i >= EXPLAINED_CELLS:
                break
            cell = mismatch.cell
            if plan.topology.service_destination(cell.destination) is not None:
                verdict = plan.model[cell].outcome.value  # partial, refused, name-not-resolved too
            else:
                verdict = "allowed" if model.allowed(cell.source, cell.destination, cell.port) else "blocked"
            out[cell] = f"{verdict}: {model.explain(cell.source, cell.destination, cell.port)}"
        return out

    def _addresses(self, plan: StepPlan) -> Mapping[str, ipaddress.IPv4Address]:
        deployed = self.deployment.addresses if self.deployment is not None else None
        return deployed if deployed else plan_addresses(plan.topology)

    def _findings(self, plan: StepPlan, observed: ReachabilityMatrix) -> Comparison:
        """Where the network and the reference model disagree on an allowed or
        blocked cell, with the model computed on the addresses the backend gave."""
        model_matrix = plan.model
        planned = plan_addresses(plan.topology)
        addresses = self._addresses(plan)
        if dict(addresses) != planned:
            model_matrix = model_of(plan.state, addresses, plan.settings).reachability(plan.cells)
        # Only allowed/blocked observations are compared: an error or a refusal is
        # not the CNI's verdict.
        codes = {}
        for port in observed.ports:
            got = observed.codes(port)
            codes[port] = np.where(
                (got == ALLOWED_CODE) | (got == BLOCKED_CODE), model_matrix.codes(port), np.int8(NOT_PROBED)
            ).astype(np.int8)
        return compare(ReachabilityMatrix.from_codes(model_matrix.axes, codes), observed)

    # -- a whole scenario ---------------------------------------------------------

    def run_scenario(self, scenario: Scenario, variant: str = "") -> ScenarioResult:
        started = time.monotonic()
        self.progress(f"{scenario.name}: deploying {len(scenario.topology.pods)} pod(s)")
        self.deploy(scenario.topology, scenario.settings.implementation)
        if scenario.plans and not self.backend.capabilities.deterministic:
            self.return_to_clean(scenario.topology, scenario.plans[0].cells)
        results = tuple(self.run_step(plan) for plan in scenario.plans)
        return ScenarioResult(scenario, results, self.backend.info(), time.monotonic() - started, variant)


def _where(mask: Mask, codes: Codes | int) -> Codes:
    """``codes`` where ``mask`` holds, not probed elsewhere."""
    return np.where(mask, codes, np.int8(NOT_PROBED)).astype(np.int8)


def _unsupported(expected: ReachabilityMatrix, reason: str) -> ReachabilityMatrix:
    """Every cell of ``expected`` observed as unsupported, the first ones with ``reason``."""
    codes = {p: np.where(expected.codes(p) != NOT_PROBED, np.int8(UNSUPPORTED_CODE), np.int8(NOT_PROBED)) for p in expected.ports}
    notes: dict[Cell, Observation] = {}
    for cell in expected.cellset:
        if len(notes) >= _NOTED_CELLS:
            break
        notes[cell] = Observation(Outcome.UNSUPPORTED, reason)
    return ReachabilityMatrix.from_codes(expected.axes, codes, notes)


def _label(plan: StepPlan) -> str:
    origin = plan.state.origin
    return f"{origin.scenario}/{plan.name}" if origin is not None else plan.name
