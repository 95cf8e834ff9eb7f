"""A policy test written in Python: declare a topology, apply policies, probe,
assert a matrix. Used by the ``netpol`` fixture and usable from a plain script::

    from harness.api import PolicyTest
    from harness.backends.model import ModelBackend

    with PolicyTest(ModelBackend()) as test:
        test.deploy({"prod": {"pods": {"db": {"labels": {"app": "db"}, "ports": ["3306/TCP"]}}}})
        test.apply({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", ...})
        test.assert_reachability({"default": "blocked", "rules": [...]})

Every change is made on the backend at once; probing runs the same pipeline as a
scenario step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harness.backends.base import Backend, Deployment
from harness.core.calico.policy import StagedPolicy
from harness.core.cluster_policy import ClusterPolicy
from harness.core.errors import BackendError, HarnessError
from harness.core.matrix import Comparison, ReachabilityMatrix
from harness.core.plan import StepPlan
from harness.core.policy import NetworkPolicy
from harness.core.settings import ImplementationSettings
from harness.core.state import DesiredState, Manifest
from harness.core.topology import Topology
from harness.engine.pipeline import Pipeline, StepResult
from harness.engine.probing import ProbeSettings
from harness.scenario import parse_expectation, parse_manifest, parse_topology, plan_step

SOURCE = "<python>"


class ReachabilityMismatch(AssertionError):
    """Observed reachability differs from the expectation; ``str()`` is the report."""

    def __init__(self, result: StepResult) -> None:
        self.result = result
        self.comparison = result.comparison
        super().__init__(result.comparison.render(explanations=result.explanations))


class PolicyTest:
    def __init__(
        self,
        backend: Backend,
        probe_settings: ProbeSettings | None = None,
        settings: ImplementationSettings | None = None,
        pipeline: Pipeline | None = None,
    ) -> None:
        self.backend = backend
        self.pipeline = pipeline or Pipeline(backend, probe_settings)
        self.settings = settings or ImplementationSettings()
        self._state: DesiredState | None = None
        self._deployment: Deployment | None = None
        self._steps = 0

    # -- set-up ----------------------------------------------------------------------

    def deploy(self, namespaces: Topology | Mapping[str, Any], external: Mapping[str, Any] | None = None) -> Deployment:
        """Deploy a topology, given as :class:`Topology` or in the scenario format's
        ``namespaces:`` (and ``external:``) form, with no policy in force."""
        topology = namespaces if isinstance(namespaces, Topology) else parse_topology(namespaces, external, SOURCE)
        self._deployment = self.pipeline.deploy(topology, self.settings)
        self._converge(DesiredState(topology))
        return self._deployment

    @property
    def state(self) -> DesiredState:
        if self._state is None:
            raise BackendError("call deploy() before changing or probing the topology")
        return self._state

    @property
    def deployment(self) -> Deployment:
        if self._deployment is None:
            raise BackendError("call deploy() first")
        return self._deployment

    def _converge(self, state: DesiredState) -> None:
        self.backend.converge(state)
        self._state = state

    # -- changes ---------------------------------------------------------------------

    def apply(self, *manifests: Mapping[str, Any] | Manifest) -> None:
        """Apply policies of any kind a scenario applies (NetworkPolicy, the
        cluster-scoped kinds, staged Calico kinds), as manifests or parsed."""
        parsed = NetworkPolicy | ClusterPolicy | StagedPolicy
        policies = [m if isinstance(m, parsed) else parse_manifest(m, SOURCE) for m in manifests]
        for policy in policies:
            if not isinstance(policy, ClusterPolicy) and policy.namespace is not None:
                self.state.topology.namespace(policy.namespace)  # a declared namespace, or UnknownName
        self._converge(self.state.with_policies(policies))

    def delete(self, *refs: str) -> None:
        unknown = [r for r in refs if r not in self.state.refs]
        if unknown:
            raise HarnessError(f"no policy {', '.join(unknown)} is in force")
        self._converge(self.state.without_policies(refs))

    def label_namespace(self, namespace: str, changes: Mapping[str, str | None]) -> None:
        self._converge(self.state.relabel_namespace(namespace, changes))

    def label_pod(self, pod_id: str, changes: Mapping[str, str | None]) -> None:
        self._converge(self.state.relabel_pod(pod_id, changes))

    # -- probing ---------------------------------------------------------------------

    def plan(self, expect: Mapping[str, Any], ports: Sequence[str] | None = None) -> StepPlan:
        """The step that probing now runs: the state in force, the cells of ``ports``
        (default: every port served) and their expected outcomes."""
        raw = dict(expect)
        if ports is not None:
            raw["ports"] = list(ports)
        expectation = parse_expectation(raw, self.state.topology, SOURCE)
        self._steps += 1
        return plan_step(
            f"probe-{self._steps}", self.state, expectation, self.settings, SOURCE, addresses=self.deployment.addresses
        )

    def run(self, expect: Mapping[str, Any], ports: Sequence[str] | None = None) -> StepResult:
        return self.pipeline.run_step(self.plan(expect, ports))

    def probe(self, ports: Sequence[str] | None = None, expect: Mapping[str, Any] | None = None) -> ReachabilityMatrix:
        """Probe every cell (optionally only ``ports``) and return what was observed.
        Cells that differ from ``expect`` (default: the reference model) are re-probed
        until the deadline on backends that need it."""
        return self.run(expect or {"model": True}, ports).observed

    def assert_reachability(self, expect: Mapping[str, Any], ports: Sequence[str] | None = None) -> Comparison:
        """Probe and compare with ``expect`` (the scenario format's ``expect:``
        forms: rules, matrix or model). Raises :class:`ReachabilityMismatch`."""
        result = self.run(expect, ports)
        if not result.ok:
            raise ReachabilityMismatch(result)
        return result.comparison

    def reset(self) -> None:
        """Back to the deployed topology with its declared labels and no policy."""
        if self._deployment is not None:
            self._converge(DesiredState(self._deployment.topology))

    def __enter__(self) -> PolicyTest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.backend.close()
