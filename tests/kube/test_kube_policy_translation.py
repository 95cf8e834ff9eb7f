"""Every cluster-scoped admin policy and Calico policy of the scenario library, as
the kind and existing backends put it on a cluster (real names, the run's mark,
selections scoped to the run's namespaces):

- is accepted by the CRD its Calico version installs, recorded from that release
  (defaulting and strict validation against the schema; tests/kube/crd_schema.py);
- means, for the scenario's endpoints, exactly what the scenario's policies mean:
  the reference model over the cluster (renamed namespaces carrying the scope label,
  and namespaces of the cluster's own, with pods) gives every cell of the scenario
  the outcome it gives over the scenario, step by step;
- leaves the cluster's own pods alone: traffic between them stays allowed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest
from crd_schema import RecordedCrd, recorded

from harness.backends.cluster.objects import PlacedObject, declared_objects, render
from harness.backends.kind.backend import SYSTEM_NAMESPACES
from harness.core.calico.policy import CalicoPolicy, parse_staged_policy
from harness.core.cluster_policy import ClusterPolicy, parse_cluster_policy
from harness.core.policy import NetworkPolicy, parse_policy
from harness.core.settings import ImplementationSettings
from harness.core.state import DesiredState, calico_ref
from harness.core.topology import NamespaceSpec, PodSpec, PortSpec, Topology
from harness.kube.naming import NamespaceMap
from harness.model import ReferenceModel
from harness.scenario import Scenario, load_scenario

REPO = Path(__file__).resolve().parents[2]
#: The recorded CRDs of each kind: the release whose manifests carry it.
CRDS: dict[tuple[str, str], RecordedCrd] = {
    (crd.group, crd.kind): crd
    for folder in ("calico-v3.31.7", "calico-release-v3.32", "calico-release-v3.33-v3")
    for crd in recorded(folder).values()
}
#: Namespaces and pods of the cluster's own (kind's kube-system, Calico's).
FOREIGN = (
    PodSpec("kube-system", "coredns", {"k8s-app": "kube-dns"}, (PortSpec(53),)),
    PodSpec("calico-system", "calico-kube-controllers", {"k8s-app": "calico-kube-controllers"}, (PortSpec(9094),)),
    PodSpec("calico-apiserver", "calico-apiserver", {"k8s-app": "calico-apiserver"}, (PortSpec(5443),)),
)


def library() -> Iterator[Scenario]:
    for path in sorted((REPO / "scenarios").glob("*.yaml")):
        scenario = load_scenario(path)
        if any(declared_objects(plan.state) for plan in scenario.plans):
            yield scenario


SCENARIOS = list(library())
MAPS = {
    "kind": lambda: NamespaceMap(reserved=SYSTEM_NAMESPACES, scope="r1"),
    "existing": lambda: NamespaceMap("ab12", scope="ab12"),
}


def test_the_library_has_what_these_tests_are_about() -> None:
    kinds = {p.manifest["kind"] for s in SCENARIOS for plan in s.plans for p in placed(plan.state, MAPS["kind"]())}
    assert {"ClusterNetworkPolicy", "AdminNetworkPolicy", "BaselineAdminNetworkPolicy"} <= kinds
    assert {"StagedNetworkPolicy", "StagedKubernetesNetworkPolicy", "NetworkPolicy"} <= kinds


def placed(state: DesiredState, names: NamespaceMap) -> list[PlacedObject]:
    return [render(ref, declared, names) for ref, declared in declared_objects(state)]


@pytest.mark.parametrize("backend", sorted(MAPS))
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_what_goes_on_the_cluster_is_accepted_by_the_recorded_crds(scenario: Scenario, backend: str) -> None:
    for plan in scenario.plans:
        for obj in placed(plan.state, MAPS[backend]()):
            crd = CRDS[(obj.resource.group, obj.resource.kind)]
            assert crd.problems(obj.manifest, obj.resource.version) == [], (plan.name, obj.describe())
            assert (crd.plural, crd.namespaced) == (obj.resource.plural, obj.resource.namespaced)


def on_the_cluster(state: DesiredState, names: NamespaceMap) -> tuple[DesiredState, dict[str, str]]:
    """The state as the cluster holds it once the backend has converged to it (the
    enforced kinds only), and scenario endpoint id → cluster endpoint id."""
    topology = state.topology
    namespaces = [NamespaceSpec(names.real(ns.name), names.namespace_labels(ns.labels)) for ns in topology.namespaces]
    namespaces += [NamespaceSpec(ns) for ns in sorted({p.namespace for p in FOREIGN})]
    pods = [PodSpec(names.real(p.namespace), p.name, p.labels, p.ports) for p in topology.pods] + list(FOREIGN)
    ids = {p.id: f"{names.real(p.namespace)}/{p.name}" for p in topology.pods}
    ids |= {e.id: e.id for e in topology.externals}
    policies: dict[str, NetworkPolicy] = {}
    for ref, policy in state.policies.items():
        translated = names.translate_policy(policy.manifest)
        policies[ref] = parse_policy(translated, "cluster")
    cluster: dict[str, ClusterPolicy] = {}
    calico: dict[str, CalicoPolicy] = {}
    for obj in placed(state, names):
        kind = obj.manifest["kind"]
        if isinstance(obj.declared, ClusterPolicy):
            cluster[obj.ref] = parse_cluster_policy(obj.manifest, "cluster")
        elif kind in ("NetworkPolicy", "GlobalNetworkPolicy"):
            staged = "StagedGlobalNetworkPolicy" if kind == "GlobalNetworkPolicy" else "StagedNetworkPolicy"
            enforced = parse_staged_policy({**obj.manifest, "kind": staged}, "cluster").enforced
            assert isinstance(enforced, CalicoPolicy)
            calico[calico_ref(enforced.key)] = enforced
    real = Topology(tuple(namespaces), tuple(pods), topology.externals)
    return DesiredState(real, policies, cluster, calico), ids


Addresses = dict[str, ipaddress.IPv4Address]


def addresses(topology: Topology, ids: dict[str, str]) -> tuple[Addresses, Addresses]:
    """The same address for a scenario endpoint and its counterpart on the cluster."""
    scenario: Addresses = {}
    for i, pod in enumerate(topology.pods):
        scenario[pod.id] = ipaddress.IPv4Address(f"192.168.{i // 200}.{10 + i % 200}")
    for external in topology.externals:
        scenario[external.id] = external.ip
    cluster = {ids[k]: v for k, v in scenario.items()}
    for j, pod in enumerate(FOREIGN):
        cluster[pod.id] = ipaddress.IPv4Address(f"192.168.250.{10 + j}")
    return scenario, cluster


@pytest.mark.parametrize("backend", sorted(MAPS))
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_on_the_cluster_every_policy_means_what_it_means_in_the_scenario(scenario: Scenario, backend: str) -> None:
    settings = ImplementationSettings()
    for plan in scenario.plans:
        names = MAPS[backend]()
        real, ids = on_the_cluster(plan.state, names)
        scenario_addresses, cluster_addresses = addresses(plan.state.topology, ids)
        want = ReferenceModel(
            plan.state.topology, plan.state.effective_policies, scenario_addresses, settings, plan.state.cluster_policy_list
        )
        got = ReferenceModel(real.topology, real.effective_policies, cluster_addresses, settings, real.cluster_policy_list)
        checked = 0
        for cell in plan.expected.cellset:
            if cell.source not in ids or cell.destination not in ids:
                continue  # Services and names: judged on their backends, the same pods
            assert got.allowed(ids[cell.source], ids[cell.destination], cell.port) == want.allowed(
                cell.source, cell.destination, cell.port
            ), (plan.name, str(cell))
            checked += 1
        assert checked, plan.name
        for source in FOREIGN:
            for destination in FOREIGN:
                for port in destination.ports:
                    assert got.allowed(source.id, destination.id, port.key), (plan.name, source.id, destination.id)
