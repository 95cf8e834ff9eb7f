"""Cluster-scoped policies in scenarios: the loader takes the three kinds inline and
from files, refers to them as ``Kind/name`` in ``delete``, keeps one API version per
scenario, and names the file and field of a bad one; the state keeps them next to
NetworkPolicies; backends refuse what they cannot enforce instead of ignoring it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from harness.backends.model import ModelBackend
from harness.core.cluster_policy import (
    BACKEND_PEER_FORMS,
    ClusterPolicy,
    PeerForm,
    check_supported,
    parse_cluster_policy,
    priority_ties,
    unsupported_fields,
)
from harness.core.errors import HarnessError, PolicyError, ScenarioError, UnsupportedPolicy
from harness.core.matrix import Cell, CellSet, Outcome
from harness.core.policy import NetworkPolicy
from harness.core.settings import ImplementationSettings
from harness.core.state import DesiredState
from harness.core.topology import PortProtocol
from harness.engine.pipeline import Pipeline
from harness.scenario import load_scenario, parse_topology

TOPOLOGY = """\
description: cluster policies
namespaces:
  prod:
    labels: {env: prod}
    pods:
      web: {labels: {app: web}, ports: [80/TCP]}
  dev:
    pods:
      web: {labels: {app: web}, ports: [80/TCP]}
"""

DENY_DEV = """\
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: deny-dev}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchLabels: {env: prod}}}
  ingress:
    - action: Deny
      from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: dev}}}]
"""


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def indent(text: str, spaces: int) -> str:
    return textwrap.indent(text, " " * spaces)


def test_inline_and_file_policies_and_delete_by_kind_and_name(tmp_path: Path) -> None:
    (tmp_path / "guard.yaml").write_text(
        DENY_DEV
        + "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: open, namespace: prod}\n"
        + "spec: {podSelector: {}, ingress: [{}]}\n"
    )
    path = write(
        tmp_path,
        TOPOLOGY
        + "steps:\n"
        + "  - name: guarded\n    apply: [guard.yaml]\n"
        + "    expect: {default: allowed, rules: [{from: dev/web, to: prod/web, result: blocked}]}\n"
        + "  - name: lifted\n    delete: [ClusterNetworkPolicy/deny-dev]\n    expect: {default: allowed}\n",
    )
    scenario = load_scenario(path)
    first, second = scenario.steps
    assert [p.ref for p in first.changes.apply] == ["ClusterNetworkPolicy/deny-dev", "prod/open"]
    assert isinstance(first.changes.apply[0], ClusterPolicy) and isinstance(first.changes.apply[1], NetworkPolicy)
    assert first.changes.apply[0].source == str(tmp_path / "guard.yaml (document 1)")
    state = DesiredState(scenario.topology).after(first.changes)
    assert list(state.cluster_policies) == ["ClusterNetworkPolicy/deny-dev"] and list(state.policies) == ["prod/open"]
    assert state.refs == ("prod/open", "ClusterNetworkPolicy/deny-dev")  # by kind: NetworkPolicies first
    assert state.after(second.changes).refs == ("prod/open",)
    with ModelBackend() as backend:
        result = Pipeline(backend).run_scenario(scenario)
    assert result.ok, result.render()
    assert result.steps[0].policies == ("prod/open", "ClusterNetworkPolicy/deny-dev")


def test_a_bad_inline_cluster_policy_names_the_step_field_and_kind(tmp_path: Path) -> None:
    bad = DENY_DEV.replace("priority: 10", "priority: 2000")
    path = write(tmp_path, TOPOLOGY + "policies:\n" + indent("- " + indent(bad, 2).lstrip(), 2) + "expect: {default: allowed}\n")
    with pytest.raises(PolicyError) as info:
        load_scenario(path)
    assert info.value.field == "policies[0].spec.priority"
    assert str(info.value) == (
        f"{path}: policies[0].spec.priority: ClusterNetworkPolicy deny-dev: 2000 is outside 0-1000 "
        "(expected a whole number from 0 to 1000)"
    )


def test_a_bad_cluster_policy_in_a_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "guard.yaml").write_text(DENY_DEV.replace("action: Deny", "action: Allow"))
    path = write(tmp_path, TOPOLOGY + "policies: [guard.yaml]\nexpect: {default: allowed}\n")
    with pytest.raises(PolicyError) as info:
        load_scenario(path)
    assert info.value.source == str(tmp_path / "guard.yaml")
    assert info.value.field == "spec.ingress[0].action"
    assert "'Allow'" in str(info.value) and "Accept or Deny or Pass" in str(info.value)


def test_one_api_version_per_scenario(tmp_path: Path) -> None:
    anp = """\
    apiVersion: policy.networking.k8s.io/v1alpha1
    kind: AdminNetworkPolicy
    metadata: {name: old}
    spec: {priority: 1, subject: {namespaces: {}}}
    """
    (tmp_path / "old.yaml").write_text(textwrap.dedent(anp))
    (tmp_path / "new.yaml").write_text(DENY_DEV)
    path = write(tmp_path, TOPOLOGY + "policies: [new.yaml, old.yaml]\nexpect: {default: allowed}\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert "AdminNetworkPolicy/old is policy.networking.k8s.io/v1alpha1" in str(info.value)
    assert "ClusterNetworkPolicy/deny-dev (policy.networking.k8s.io/v1alpha2)" in str(info.value)


def test_delete_of_a_cluster_policy_not_in_force(tmp_path: Path) -> None:
    path = write(tmp_path, TOPOLOGY + "steps:\n  - delete: [ClusterNetworkPolicy/nothing]\n    expect: {default: allowed}\n")
    with pytest.raises(ScenarioError, match="no policy ClusterNetworkPolicy/nothing is in force"):
        load_scenario(path)


def test_the_same_cluster_policy_twice_in_a_step(tmp_path: Path) -> None:
    (tmp_path / "guard.yaml").write_text(DENY_DEV)
    path = write(tmp_path, TOPOLOGY + "policies: [guard.yaml, guard.yaml]\nexpect: {default: allowed}\n")
    with pytest.raises(ScenarioError, match="ClusterNetworkPolicy/deny-dev is given twice"):
        load_scenario(path)


def egress_peer(peer: str) -> ClusterPolicy:
    return parse_cluster_policy(
        {
            "apiVersion": "policy.networking.k8s.io/v1alpha2",
            "kind": "ClusterNetworkPolicy",
            "metadata": {"name": "out"},
            "spec": {
                "tier": "Baseline",
                "priority": 1,
                "subject": {"namespaces": {}},
                "egress": [
                    {"action": "Accept", "to": [{"namespaces": {}}]},
                    {"action": "Accept", "to": [{"domainNames": ["example.com"]}] if peer == "domainNames" else [{"nodes": {}}]},
                ],
            },
        },
        "out.yaml",
    )


@pytest.mark.parametrize("backend", ["model", "emulated"])
@pytest.mark.parametrize("form", ["nodes", "domainNames"])
def test_peers_without_an_endpoint_here_are_refused_per_backend(backend: str, form: str) -> None:
    policy = egress_peer(form)
    [problem] = unsupported_fields(policy, backend)
    assert problem.path == f"spec.egress[1].to[0].{form}"
    with pytest.raises(UnsupportedPolicy) as info:
        check_supported([policy], backend)
    err = info.value
    assert (err.backend, err.policy, err.field) == (backend, "ClusterNetworkPolicy/out", f"spec.egress[1].to[0].{form}")
    assert str(err).startswith(
        f"out.yaml: ClusterNetworkPolicy/out: spec.egress[1].to[0].{form}: backend {backend} cannot enforce this: "
    )


def test_a_backend_states_what_it_enforces() -> None:
    policy = egress_peer("nodes")
    assert unsupported_fields(policy, "kind", supported=set(PeerForm)) == []
    assert [f.path for f in unsupported_fields(policy, "kind", supported={PeerForm.NAMESPACES})] == ["spec.egress[1].to[0].nodes"]
    with pytest.raises(HarnessError, match="no record of which cluster-policy peers backend kind enforces"):
        unsupported_fields(policy, "kind")
    assert set(BACKEND_PEER_FORMS) == {"model", "emulated"}


def test_the_model_backend_refuses_before_changing_its_state() -> None:
    deny_all = parse_cluster_policy(
        {
            "apiVersion": "policy.networking.k8s.io/v1alpha2",
            "kind": "ClusterNetworkPolicy",
            "metadata": {"name": "deny-all"},
            "spec": {
                "tier": "Admin",
                "priority": 1,
                "subject": {"namespaces": {}},
                "egress": [{"action": "Deny", "to": [{"namespaces": {}}]}, {"action": "Deny", "to": [{"nodes": {}}]}],
            },
        },
        "deny-all.yaml",
    )
    topology = parse_topology({"x": {"pods": {"a": {"ports": ["80/TCP"]}, "b": {"ports": ["80/TCP"]}}}})
    cell = Cell("x/a", "x/b", PortProtocol.parse("80/TCP"))
    with ModelBackend() as backend:
        backend.deploy(topology, ImplementationSettings())
        clean = DesiredState(topology)
        backend.converge(clean)
        with pytest.raises(UnsupportedPolicy, match=r"spec.egress\[1\].to\[0\].nodes"):
            backend.converge(clean.with_policies([deny_all]))
        # Still the clean state: the Deny of the first rule was not put in force.
        assert backend.probe(CellSet.from_cells([cell]), 1.0)[cell].outcome is Outcome.ALLOWED


def test_a_step_the_backend_cannot_enforce_is_unsupported_with_the_reason(tmp_path: Path) -> None:
    """Not ignored (which would observe the network without the policy) and not an
    error of the run: every cell of that step is unsupported, with the field and
    the reason, so the scenario is never green without testing."""
    (tmp_path / "out.yaml").write_text(
        "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: out}\n"
        "spec:\n  tier: Admin\n  priority: 1\n  subject: {namespaces: {}}\n"
        "  egress: [{action: Deny, to: [{nodes: {matchLabels: {role: control-plane}}}]}]\n"
    )
    path = write(
        tmp_path,
        TOPOLOGY
        + "steps:\n  - name: open\n    expect: {default: allowed}\n"
        + "  - name: guarded\n    apply: [out.yaml]\n    expect: {default: allowed}\n",
    )
    scenario = load_scenario(path)
    with ModelBackend() as backend:
        result = Pipeline(backend).run_scenario(scenario)
    open_step, guarded = result.steps
    assert open_step.comparison.unsupported_count == 0 and open_step.ok
    assert guarded.comparison.unsupported_count == guarded.probes == 2
    assert guarded.unsupported_policy == (
        f"{tmp_path / 'out.yaml'}: ClusterNetworkPolicy/out: spec.egress[0].to[0].nodes: backend model cannot enforce "
        "this: a scenario declares no nodes, so there is no node address for a nodes peer to match"
    )
    assert result.unsupported == 2 and result.probes == 4


def test_priority_ties_are_listed() -> None:
    def policy(name: str, tier: str, priority: int) -> ClusterPolicy:
        return parse_cluster_policy(
            {
                "apiVersion": "policy.networking.k8s.io/v1alpha2",
                "kind": "ClusterNetworkPolicy",
                "metadata": {"name": name},
                "spec": {"tier": tier, "priority": priority, "subject": {"namespaces": {}}},
            }
        )

    a, b, c, d = policy("a", "Admin", 5), policy("b", "Admin", 5), policy("c", "Baseline", 5), policy("d", "Admin", 6)
    assert [(x.name, y.name) for x, y in priority_ties([d, c, b, a])] == [("a", "b")]
