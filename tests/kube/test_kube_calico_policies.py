"""Calico's projectcalico.org/v3 kinds on the kind and existing backends: staged
policies applied and proven by the probes to enforce nothing, promoted ones
enforced, GlobalNetworkPolicies scoped to the run's namespaces, v3.32.0's
server-side apply bug worked around, and a cluster that does not serve a kind
refusing it with the reason.

Real: the cluster backend, the pipeline, the probe script with curl and nc, the
library's audit scenarios. The API server is the in-memory double serving
projectcalico.org/v3 as Calico's API server does (v1 CRD mode) or through Calico's
v3 CRDs (recorded from release-v3.33), every object checked against the recorded
schema; Felix is stood in for by the reference model (tests/kube/calico_double.py).
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest
from calico_double import CalicoCluster, OnCalico, SharedOnCalico

from harness.core.errors import HarnessError
from harness.engine.pipeline import Pipeline, StepResult
from harness.engine.probing import ProbeSettings
from harness.kube.naming import SCOPE_LABEL
from harness.kube.resources import CALICO_GLOBAL_NETWORK_POLICY, STAGED_NETWORK_POLICY
from harness.scenario import Scenario, load_scenario

pytestmark = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in ("curl", "nc")), reason="needs curl and nc (apt-get install curl netcat-openbsd)"
)

REPO = Path(__file__).resolve().parents[2]
SETTINGS = ProbeSettings(timeout=0.5, deadline=3.0, interval=0.05)


def run(backend: OnCalico, scenario: Scenario) -> list[StepResult]:
    return list(Pipeline(backend, SETTINGS).run_scenario(scenario).steps)


def calico_objects(cluster: CalicoCluster, plural: str) -> dict[str, dict[str, Any]]:
    return {
        f"{m['metadata'].get('namespace', '')}/{m['metadata']['name']}".lstrip("/"): m
        for m in cluster.stored("projectcalico.org", plural)
    }


@pytest.mark.parametrize(("version", "crd_mode"), [("v3.31.7", "v1"), ("v3.32.4", "v1"), ("v3.33.1", "v3")])
def test_the_audit_scenarios_pass_with_staged_objects_really_applied(version: str, crd_mode: str) -> None:
    """Staged: applied as written (the run's mark added), every cell still allowed;
    promoted: the staged object deleted and the enforced NetworkPolicy applied."""
    cluster = CalicoCluster(version, crd_mode)
    backend = OnCalico(cluster)
    try:
        staged = run(backend, load_scenario(REPO / "scenarios" / "audit-staged-default-deny.yaml"))
        assert [s.ok for s in staged] == [True], staged[0].comparison.render()
        (sknp,) = calico_objects(cluster, "stagedkubernetesnetworkpolicies").values()
        declared = staged[0].plan.state.staged["StagedKubernetesNetworkPolicy/production/default-deny-ingress"].manifest
        assert sknp["spec"] == declared["spec"]
        assert sknp["metadata"] == {
            "name": "default-deny-ingress",
            "namespace": "production",
            "labels": {SCOPE_LABEL: "r1"},
            "annotations": {SCOPE_LABEL: "r1"},
        }
        promote = run(backend, load_scenario(REPO / "scenarios" / "audit-promote-to-enforce.yaml"))
        assert [s.ok for s in promote] == [True, True], [s.comparison.render() for s in promote]
        assert calico_objects(cluster, "stagedkubernetesnetworkpolicies") == {}  # the last scenario's, gone
        assert calico_objects(cluster, "stagednetworkpolicies") == {}
        (enforced,) = calico_objects(cluster, "networkpolicies").values()
        assert enforced["metadata"]["name"] == "db-from-web" and enforced["spec"]["selector"] == "app == 'db'"
        calls = [c for c in cluster.calls if "NetworkPolicy shop/db-from-web" in c]
        assert calls == [
            "apply StagedNetworkPolicy shop/db-from-web",
            "delete StagedNetworkPolicy shop/db-from-web",
            "apply NetworkPolicy shop/db-from-web",
        ]
    finally:
        backend.close()
        cluster.close()
    assert cluster.objects == {}


def test_on_v3_32_0_tiered_policies_are_created_since_server_side_apply_cannot(tmp_path: Path) -> None:
    """calico#12841: v3.32.0's API server answers NotFound to a server-side apply that
    would create a StagedNetworkPolicy; the backend creates it instead."""
    cluster = CalicoCluster("v3.32.0")
    manifest = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "StagedNetworkPolicy",
        "metadata": {"name": "x", "namespace": "default"},
        "spec": {"selector": "all()"},
    }
    cluster.namespaces["default"] = {"metadata": {"name": "default", "labels": {}}}
    with pytest.raises(HarnessError, match='answered 404: stagednetworkpolicies.projectcalico.org "x" not found'):
        cluster.apply_object(STAGED_NETWORK_POLICY, manifest)
    del cluster.namespaces["default"]
    backend = OnCalico(cluster)
    try:
        promote = run(backend, load_scenario(REPO / "scenarios" / "audit-promote-to-enforce.yaml"))
    finally:
        backend.close()
        cluster.close()
    assert [s.ok for s in promote] == [True, True], [s.comparison.render() for s in promote]
    calls = [c for c in cluster.calls if "db-from-web" in c]
    assert calls == [
        "create StagedNetworkPolicy shop/db-from-web",
        "delete StagedNetworkPolicy shop/db-from-web",
        "create NetworkPolicy shop/db-from-web",
    ]  # and at the end it goes with its namespace, which the run created


GLOBAL = """\
description: A staged GlobalNetworkPolicy that admits only app=web, promoted.
namespaces:
  shop:
    pods:
      web: {labels: {app: web}, ports: [80/TCP]}
      db: {labels: {app: db}, ports: [80/TCP]}
steps:
  - name: staged
    apply:
      - apiVersion: projectcalico.org/v3
        kind: StagedGlobalNetworkPolicy
        metadata: {name: only-web}
        spec:
          selector: all()
          types: [Ingress]
          ingress:
            - action: Allow
              source: {selector: app == 'web'}
    expect: {default: allowed}
  - name: enforced
    promote: [StagedGlobalNetworkPolicy/only-web]
    expect:
      default: blocked
      rules: [{from: shop/web, to: "*", result: allowed}]
"""


def test_a_global_network_policy_selects_the_runs_pods_only(tmp_path: Path) -> None:
    """``selector: all()`` in a GlobalNetworkPolicy would isolate every pod of the
    cluster; its namespaceSelector is scoped to the run's namespaces, and the
    cluster's own pods keep their traffic."""
    cluster = CalicoCluster("v3.32.4")
    cluster.add_foreign_pod("calico-apiserver", "calico-apiserver", {"k8s-app": "calico-apiserver"}, 5443)
    (tmp_path / "global.yaml").write_text(GLOBAL)
    backend = SharedOnCalico(cluster, run_id="g1")
    try:
        steps = run(backend, load_scenario(tmp_path / "global.yaml"))
        assert [s.ok for s in steps] == [True, True], [s.comparison.render() for s in steps]
        (gnp,) = calico_objects(cluster, "globalnetworkpolicies").values()
        assert gnp["metadata"]["name"] == "nph-g1-only-web"
        assert gnp["spec"]["namespaceSelector"] == f"{SCOPE_LABEL} == 'g1'"
        assert cluster.allows("nph-g1-shop/db", "calico-apiserver/calico-apiserver", "5443/TCP")
        # What the manifest as written would have done: the Calico API server isolated.
        cluster.apply_object(CALICO_GLOBAL_NETWORK_POLICY, {**gnp, "spec": {**gnp["spec"], "namespaceSelector": ""}})
        assert not cluster.allows("nph-g1-shop/db", "calico-apiserver/calico-apiserver", "5443/TCP")
    finally:
        backend.close()
        cluster.close()


def test_a_cluster_that_does_not_serve_the_kind_refuses_it(tmp_path: Path) -> None:
    """No Calico API server (and no v3 CRDs): the staged policy is refused with why."""
    cluster = CalicoCluster("v3.31.7")
    cluster.served.clear()
    backend = OnCalico(cluster)
    try:
        (step,) = run(backend, load_scenario(REPO / "scenarios" / "audit-staged-default-deny.yaml"))
    finally:
        backend.close()
        cluster.close()
    assert step.unsupported_policy.endswith(
        "StagedKubernetesNetworkPolicy/production/default-deny-ingress: kind: backend kind cannot enforce this: the "
        "cluster does not serve stagedkubernetesnetworkpolicies.projectcalico.org (projectcalico.org/v3 is not served "
        "at all): StagedKubernetesNetworkPolicy needs the Calico API server (the operator's APIServer resource, which "
        "Calico's custom-resources.yaml creates) or Calico's v3 CRDs, and Calico 3.30 or later for the staged kinds"
    ), step.unsupported_policy


def test_a_calico_policy_that_selects_the_harness_label_is_refused(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(GLOBAL.replace("selector: all()", f'selector: "!has({SCOPE_LABEL})"'))
    cluster = CalicoCluster("v3.32.4")
    backend = OnCalico(cluster)
    try:
        steps = run(backend, load_scenario(tmp_path / "s.yaml"))
    finally:
        backend.close()
        cluster.close()
    assert f"StagedGlobalNetworkPolicy/only-web: spec.selector: backend kind cannot enforce this: {SCOPE_LABEL} is" in (
        steps[0].unsupported_policy
    )
    assert cluster.objects == {}


def test_staged_names_stay_apart_from_the_enforced_kinds(tmp_path: Path) -> None:
    """A StagedNetworkPolicy and the Kubernetes NetworkPolicy of the same name are two
    objects (docs/staged-policies.md): applying one never touches the other."""
    (tmp_path / "both.yaml").write_text(
        textwrap.dedent("""\
        description: same name, two kinds
        namespaces:
          shop:
            pods:
              web: {labels: {app: web}, ports: [80/TCP]}
              db: {labels: {app: db}, ports: [80/TCP]}
        policies:
          - apiVersion: networking.k8s.io/v1
            kind: NetworkPolicy
            metadata: {name: db, namespace: shop}
            spec:
              podSelector: {matchLabels: {app: db}}
              ingress: [{from: [{podSelector: {matchLabels: {app: web}}}]}]
          - apiVersion: projectcalico.org/v3
            kind: StagedNetworkPolicy
            metadata: {name: db, namespace: shop}
            spec:
              selector: app == 'db'
              types: [Ingress]
        expect:
          default: allowed
          rules: [{from: "*", to: shop/db, result: blocked}, {from: shop/web, to: shop/db, result: allowed}]
        """)
    )
    cluster = CalicoCluster("v3.32.4")
    backend = OnCalico(cluster)
    try:
        steps = run(backend, load_scenario(tmp_path / "both.yaml"))
        assert steps[0].ok, steps[0].comparison.render()
        assert set(cluster.policies) == {("shop", "db")}
        assert set(calico_objects(cluster, "stagednetworkpolicies")) == {"shop/db"}
    finally:
        backend.close()
        cluster.close()
