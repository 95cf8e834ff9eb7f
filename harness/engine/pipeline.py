"""Run a scenario on a backend: deploy, apply each step's changes, probe, compare.

Usable from a plain script::

    from harness.backends.model import ModelBackend
    from harness.engine.pipeline import ScenarioRunner
    from harness.scenario import load_scenario

    with ModelBackend() as backend:
        result = ScenarioRunner(backend).run(load_scenario("scenarios/default-deny.yaml"))
    print(result.render())
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from harness.backends.base import Backend, Deployment
from harness.core.matrix import Comparison, ReachabilityMatrix, compare
from harness.core.progress import Progress
from harness.core.state import ClusterState
from harness.engine.probing import ProbeEngine, ProbeSettings
from harness.scenario import Scenario, Step, probed_ports
from harness.scenario.expectations import expected_matrix, plan_probes


@dataclass(frozen=True)
class StepResult:
    name: str
    comparison: Comparison
    policies: tuple[str, ...]
    duration: float
    probes: int

    @property
    def ok(self) -> bool:
        return self.comparison.ok

    @property
    def observed(self) -> ReachabilityMatrix:
        return self.comparison.observed


@dataclass(frozen=True)
class ScenarioResult:
    scenario: Scenario
    steps: tuple[StepResult, ...]
    backend: dict[str, str] = field(hash=False)
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
        return sum(len(s.comparison.mismatches) for s in self.steps)

    def render(self) -> str:
        """The failure report: per failing step, the three tables and one line per
        wrong cell with its reproduce command."""
        blocks = []
        for step in self.steps:
            if step.ok and not step.comparison.unsupported:
                continue
            head = f"scenario {self.scenario.name}, step {step.name}" if len(self.steps) > 1 else f"scenario {self.scenario.name}"
            status = "FAILED" if not step.ok else "passed with probes not run"
            policies = ", ".join(step.policies) or "none"
            blocks.append(
                f"{head}: {status} on backend {self.backend.get('backend', '?')}\n"
                f"policies in force: {policies}\n\n{step.comparison.render()}"
            )
        return "\n\n".join(blocks)


class ScenarioRunner:
    def __init__(
        self,
        backend: Backend,
        probe_settings: ProbeSettings | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.backend = backend
        self.engine = ProbeEngine(backend, probe_settings)
        self.progress = progress or (lambda message: None)

    def run(self, scenario: Scenario) -> ScenarioResult:
        started = time.monotonic()
        self.backend.use_settings(scenario.settings.model)
        self.progress(f"{scenario.name}: deploying {len(scenario.topology.pods)} pod(s)")
        deployment = self.backend.deploy(scenario.topology)
        state = ClusterState(scenario.topology)
        results = []
        for step in scenario.steps:
            state = self._change(state, step)
            results.append(self._probe(scenario, step, state, deployment))
        return ScenarioResult(scenario, tuple(results), self.backend.describe(), time.monotonic() - started)

    def _change(self, state: ClusterState, step: Step) -> ClusterState:
        """Make a step's changes on the backend; return the state they lead to."""
        new = state.after(step)
        if step.delete:
            self.backend.delete_policies(step.delete)
        if step.apply:
            self.backend.apply_policies(step.apply)
        for ns in step.label_namespaces:
            self.backend.set_namespace_labels(ns, new.topology.namespace(ns).labels)
        for pod_id in step.label_pods:
            self.backend.set_pod_labels(pod_id, new.topology.pod(pod_id).labels)
        return new

    def _probe(self, scenario: Scenario, step: Step, state: ClusterState, deployment: Deployment) -> StepResult:
        started = time.monotonic()
        topology = state.topology
        plan = plan_probes(topology, probed_ports(topology, step.expect), scenario.settings.probe_self)
        expected = expected_matrix(
            step.expect,
            plan,
            topology,
            state.policies.values(),
            deployment.addresses,
            scenario.settings.model,
            state.cluster_policies.values(),
        )
        self.backend.begin_step(str(scenario.path), step.name)
        self.progress(f"{scenario.name}/{step.name}: probing {len(plan.cells)} cell(s)")
        observed = self.engine.observe(expected, topology, self.progress)
        return StepResult(
            step.name,
            compare(expected, observed),
            state.refs,
            time.monotonic() - started,
            len(plan.cells),
        )
