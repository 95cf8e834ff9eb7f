"""A policy test written in Python: declare a topology, apply policies, probe,
assert a matrix. Used by the ``netpol`` fixture and usable from a plain script::

    from harness.api import PolicyTest
    from harness.backends.model import ModelBackend

    with PolicyTest(ModelBackend()) as test:
        test.deploy({"prod": {"pods": {"db": {"labels": {"app": "db"}, "ports": ["3306/TCP"]}}}})
        test.apply({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", ...})
        test.assert_reachability({"default": "blocked", "rules": [...]})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harness.backends.base import Backend, Deployment
from harness.core.cluster_policy import AnyPolicy, ClusterPolicy, is_cluster_policy, parse_cluster_policy
from harness.core.errors import BackendError, HarnessError
from harness.core.matrix import Comparison, ReachabilityMatrix, compare
from harness.core.policy import NetworkPolicy, parse_policy
from harness.core.settings import ModelSettings
from harness.core.state import ClusterState
from harness.core.topology import Topology
from harness.engine.probing import ProbeEngine, ProbeSettings
from harness.scenario import parse_expectation, parse_topology, probed_ports
from harness.scenario.expectations import expected_matrix, plan_probes


class ReachabilityMismatch(AssertionError):
    """Observed reachability differs from the expectation; ``str()`` is the report."""

    def __init__(self, comparison: Comparison) -> None:
        self.comparison = comparison
        super().__init__(comparison.render())


class PolicyTest:
    def __init__(
        self,
        backend: Backend,
        probe_settings: ProbeSettings | None = None,
        model_settings: ModelSettings | None = None,
    ) -> None:
        self.backend = backend
        self.engine = ProbeEngine(backend, probe_settings)
        self.model_settings = model_settings or ModelSettings()
        self._state: ClusterState | None = None
        self._deployment: Deployment | None = None

    # -- set-up ----------------------------------------------------------------------

    def deploy(self, namespaces: Topology | Mapping[str, Any], external: Mapping[str, Any] | None = None) -> Deployment:
        """Deploy a topology, given as :class:`Topology` or in the scenario format's
        ``namespaces:`` (and ``external:``) form."""
        topology = namespaces if isinstance(namespaces, Topology) else parse_topology(namespaces, external)
        self.backend.use_settings(self.model_settings)
        self._deployment = self.backend.deploy(topology)
        self._state = ClusterState(topology)
        return self._deployment

    @property
    def state(self) -> ClusterState:
        if self._state is None:
            raise BackendError("call deploy() before changing or probing the topology")
        return self._state

    @property
    def deployment(self) -> Deployment:
        if self._deployment is None:
            raise BackendError("call deploy() first")
        return self._deployment

    # -- changes ---------------------------------------------------------------------

    def apply(self, *manifests: Mapping[str, Any] | AnyPolicy) -> None:
        policies = [m if isinstance(m, NetworkPolicy | ClusterPolicy) else _parse(m) for m in manifests]
        for policy in policies:
            if isinstance(policy, NetworkPolicy):
                self.state.topology.namespace(policy.namespace)  # a declared namespace, or UnknownName
        self.backend.apply_policies(policies)
        self._state = self.state.with_policies(policies)

    def delete(self, *refs: str) -> None:
        unknown = [r for r in refs if r not in self.state.policies and r not in self.state.cluster_policies]
        if unknown:
            raise HarnessError(f"no policy {', '.join(unknown)} is in force")
        self.backend.delete_policies(refs)
        self._state = self.state.without_policies(refs)

    def label_namespace(self, namespace: str, changes: Mapping[str, str | None]) -> None:
        self._state = self.state.relabel_namespace(namespace, changes)
        self.backend.set_namespace_labels(namespace, self.state.topology.namespace(namespace).labels)

    def label_pod(self, pod_id: str, changes: Mapping[str, str | None]) -> None:
        self._state = self.state.relabel_pod(pod_id, changes)
        self.backend.set_pod_labels(pod_id, self.state.topology.pod(pod_id).labels)

    # -- probing ---------------------------------------------------------------------

    def _expected(self, expect: Mapping[str, Any], ports: Sequence[str] | None) -> ReachabilityMatrix:
        raw = dict(expect)
        if ports is not None:
            raw["ports"] = list(ports)
        topology = self.state.topology
        expectation = parse_expectation(raw, topology)
        plan = plan_probes(topology, probed_ports(topology, expectation))
        return expected_matrix(
            expectation,
            plan,
            topology,
            self.state.policies.values(),
            self.deployment.addresses,
            self.model_settings,
            self.state.cluster_policies.values(),
        )

    def _observe(self, expected: ReachabilityMatrix) -> ReachabilityMatrix:
        """Probe the cells of ``expected``, re-probing those that differ from it."""
        return self.engine.observe(expected, self.state.topology)

    def probe(self, ports: Sequence[str] | None = None, expect: Mapping[str, Any] | None = None) -> ReachabilityMatrix:
        """Probe every cell (optionally only ``ports``) and return what was observed.
        Cells that differ from ``expect`` (default: the reference model) are re-probed
        until the deadline on backends that need it."""
        return self._observe(self._expected(expect or {"model": True}, ports))

    def assert_reachability(self, expect: Mapping[str, Any], ports: Sequence[str] | None = None) -> Comparison:
        """Probe and compare with ``expect`` (the scenario format's ``expect:``
        forms: rules, matrix or model). Raises :class:`ReachabilityMismatch`."""
        expected = self._expected(expect, ports)
        comparison = compare(expected, self._observe(expected))
        if not comparison.ok:
            raise ReachabilityMismatch(comparison)
        return comparison

    def reset(self) -> None:
        self.backend.reset()
        self._state = None
        self._deployment = None

    def __enter__(self) -> PolicyTest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.backend.close()


def _parse(manifest: Mapping[str, Any]) -> AnyPolicy:
    if is_cluster_policy(manifest):
        return parse_cluster_policy(manifest, "<python>")
    return parse_policy(manifest, "<python>")
