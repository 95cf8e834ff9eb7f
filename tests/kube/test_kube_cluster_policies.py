"""Cluster-scoped admin policies on the kind and existing backends: applied as
cluster-scoped custom objects when the running Calico enforces their kind, refused
with the version and the reason when it does not, scoped to the run's namespaces,
diff-converged, and cleaned up at the end, after a failure and after a killed run.

Real: the cluster backend, the pipeline, the probe script with curl and nc, the
recipes. The API server is the in-memory double, with the CRDs recorded from the
pinned Calico releases (their schemas check every object, strictly); Felix is
stood in for by the reference model over what is stored (tests/kube/calico_double.py).
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from calico_double import CalicoCluster, OnCalico, SharedOnCalico

from harness.core.errors import BackendError, HarnessError, UnsupportedPolicy
from harness.core.matrix import Outcome
from harness.engine.pipeline import Pipeline, StepResult
from harness.engine.probing import ProbeSettings
from harness.kube.manifests import ANNOTATION_RUN
from harness.kube.naming import SCOPE_LABEL
from harness.kube.resources import BASELINE_ADMIN_NETWORK_POLICY, CLUSTER_NETWORK_POLICY
from harness.scenario import Scenario, load_scenario
from tests.drivers import StepDriver

pytestmark = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in ("curl", "nc")), reason="needs curl and nc (apt-get install curl netcat-openbsd)"
)

REPO = Path(__file__).resolve().parents[2]
SETTINGS = ProbeSettings(timeout=0.5, deadline=3.0, interval=0.05)

TOPOLOGY = """\
namespaces:
  prod:
    labels: {env: prod}
    pods:
      web: {labels: {app: web}, ports: [80/TCP]}
      db: {labels: {app: db}, ports: [80/TCP]}
  dev:
    labels: {env: dev}
    pods:
      client: {labels: {app: client}, ports: [80/TCP]}
"""
#: An Admin-tier deny of everything into every namespace: on a real cluster, unscoped,
#: it would cut off kube-system and Calico's own pods.
DENY_ALL_CNP = """\
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: deny-everything}
spec:
  tier: Admin
  priority: 10
  subject:
    namespaces: {}
  ingress:
    - name: from-anywhere
      action: Deny
      from:
        - namespaces: {}
"""
ALLOW_PROD_CNP = """\
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: prod-from-prod}
spec:
  tier: Admin
  priority: 5
  subject:
    namespaces: {matchLabels: {env: prod}}
  ingress:
    - action: Accept
      from:
        - pods:
            podSelector: {matchLabels: {app: web}}
"""
DENY_DEV_ANP = """\
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: deny-dev}
spec:
  priority: 10
  subject:
    namespaces: {matchLabels: {env: prod}}
  ingress:
    - action: Deny
      from:
        - namespaces: {matchLabels: {env: dev}}
"""


def scenario(tmp_path: Path, name: str, body: str) -> Scenario:
    path = tmp_path / f"scenario-{name}.yaml"  # apart from the policy files beside it
    path.write_text(f"description: {name}\n" + TOPOLOGY + textwrap.dedent(body))
    return load_scenario(path)


@pytest.fixture
def calico() -> Iterator[CalicoCluster]:
    cluster = CalicoCluster("v3.32.4")
    yield cluster
    cluster.close()


def run(backend: OnCalico, scenario: Scenario) -> list[StepResult]:
    return list(Pipeline(backend, SETTINGS).run_scenario(scenario).steps)


def stored(cluster: CalicoCluster, plural: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in cluster.stored("policy.networking.k8s.io", plural)}


def test_a_cluster_network_policy_is_applied_scoped_and_enforced(calico: CalicoCluster, tmp_path: Path) -> None:
    """On Calico 3.32 the Admin-tier deny is applied as a cluster-scoped object with
    the run's mark and its selections scoped to the run's namespaces: the scenario's
    pods are cut off as the intent says, and the cluster's own pods are not."""
    calico.add_foreign_pod("kube-system", "coredns", {"k8s-app": "kube-dns"}, 53)
    (tmp_path / "deny.yaml").write_text(DENY_ALL_CNP)
    backend = OnCalico(calico)
    steps = run(
        backend,
        scenario(
            tmp_path,
            "deny-all",
            """\
            policies: [deny.yaml]
            expect: {default: blocked}
            """,
        ),
    )
    assert all(step.ok for step in steps), steps[0].comparison.render()
    applied = stored(calico, "clusternetworkpolicies")["deny-everything"]
    assert applied["metadata"]["labels"] == {SCOPE_LABEL: "r1"}
    assert applied["metadata"]["annotations"] == {ANNOTATION_RUN: "r1"}
    assert applied["spec"]["subject"] == {"namespaces": {"matchLabels": {SCOPE_LABEL: "r1"}}}
    assert applied["spec"]["ingress"][0]["from"] == [{"namespaces": {"matchLabels": {SCOPE_LABEL: "r1"}}}]
    assert calico.namespaces["prod"]["metadata"]["labels"][SCOPE_LABEL] == "r1"
    # The cluster's own pods are neither its subject nor its peers: untouched...
    assert calico.allows("prod/web", "kube-system/coredns", "53/TCP")
    assert calico.allows("kube-system/coredns", "prod/web", "80/TCP")
    assert not calico.allows("dev/client", "prod/web", "80/TCP")
    # ...and what the manifest as written would have done to them.
    unscoped = {**applied, "spec": {**applied["spec"], "subject": {"namespaces": {}}}}
    unscoped["spec"]["ingress"] = [{"name": "from-anywhere", "action": "Deny", "from": [{"namespaces": {}}]}]
    calico.apply_object(CLUSTER_NETWORK_POLICY, unscoped)
    assert not calico.allows("prod/web", "kube-system/coredns", "53/TCP")
    assert not calico.allows("kube-system/coredns", "prod/web", "80/TCP")
    backend.close()


def test_each_version_applies_the_kinds_it_enforces_and_refuses_the_others(tmp_path: Path) -> None:
    (tmp_path / "anp.yaml").write_text(DENY_DEV_ANP)
    (tmp_path / "cnp.yaml").write_text(ALLOW_PROD_CNP)
    anp = scenario(
        tmp_path,
        "anp",
        """\
        policies: [anp.yaml]
        expect:
          default: allowed
          rules: [{from: dev/client, to: "prod/*", result: blocked}]
        """,
    )
    cnp = scenario(tmp_path, "cnp", "policies: [cnp.yaml]\nexpect: {default: allowed}\n")
    for version, enforced, refused in (("v3.31.7", anp, cnp), ("v3.32.4", cnp, anp), ("v3.33.1", cnp, anp)):
        cluster = CalicoCluster(version)
        backend = OnCalico(cluster)
        try:
            (ok,) = run(backend, enforced)
            assert ok.ok and not ok.unsupported_policy, (version, ok.comparison.render())
            (step,) = run(backend, refused)
        finally:
            backend.close()
            cluster.close()
        assert step.unsupported_policy
        kind = refused.plans[0].state.cluster_policy_list[0].kind.value
        assert f"Calico {version} does not enforce {kind}" in step.unsupported_policy, step.unsupported_policy
        assert f"as clusters/calico/{version[1:5]}/recipe.yaml records" in step.unsupported_policy
        assert {step.comparison.observed[c].outcome for c in step.comparison.observed.cellset} == {Outcome.UNSUPPORTED}


def test_the_version_decides_before_the_crds_a_cluster_still_has(tmp_path: Path) -> None:
    """After 3.31 → 3.32 the v1alpha1 CRDs stay on the cluster, but 3.32 converts no
    AdminNetworkPolicy any more: refused, with the version."""
    cluster = CalicoCluster("v3.31.7")
    cluster.upgrade("v3.32.4")
    assert "adminnetworkpolicies.policy.networking.k8s.io" in cluster.crds
    driver = StepDriver(OnCalico(cluster))
    driver.deploy(scenario(tmp_path, "t", "expect: {default: allowed}\n").topology)
    (tmp_path / "anp.yaml").write_text(DENY_DEV_ANP)
    policy = scenario(tmp_path, "anp", "policies: [anp.yaml]\nexpect: {default: allowed}\n").plans[0].state
    with pytest.raises(
        UnsupportedPolicy, match=r"AdminNetworkPolicy/deny-dev: kind: backend kind cannot enforce this: Calico v3.32.4"
    ):
        driver.backend.converge(policy)
    assert cluster.objects == {}
    driver.backend.close()
    cluster.close()


def test_a_missing_crd_is_refused_before_anything_is_applied(calico: CalicoCluster, tmp_path: Path) -> None:
    calico.crds.discard("clusternetworkpolicies.policy.networking.k8s.io")
    (tmp_path / "cnp.yaml").write_text(ALLOW_PROD_CNP)
    backend = OnCalico(calico)
    (step,) = run(backend, scenario(tmp_path, "cnp", "policies: [cnp.yaml]\nexpect: {default: allowed}\n"))
    backend.close()
    assert step.unsupported_policy
    assert step.unsupported_policy.endswith(
        "ClusterNetworkPolicy/prod-from-prod: kind: backend kind cannot enforce this: the CustomResourceDefinition "
        "clusternetworkpolicies.policy.networking.k8s.io is not installed on the cluster; Calico v3.32.4 installs it "
        "with v1_crd_projectcalico_org.yaml"
    )


def test_named_ports_are_refused_where_calico_reads_them_as_every_port() -> None:
    """Calico 3.31 converts an AdminNetworkPolicy namedPort as no port at all: the
    library's named-port conformance scenario is unsupported there, with the field."""
    cluster = CalicoCluster("v3.31.7")
    backend = OnCalico(cluster)
    steps = run(backend, load_scenario(REPO / "scenarios" / "conformance-anp-admin-named-ports.yaml"))
    backend.close()
    cluster.close()
    reason = steps[0].unsupported_policy or ""
    assert ".ports[0].namedPort: backend kind cannot enforce this: Calico v3.31.7 does not convert named ports" in reason, reason
    assert cluster.objects == {}


def test_steps_send_only_what_changed_and_delete_what_is_gone(calico: CalicoCluster, tmp_path: Path) -> None:
    (tmp_path / "deny.yaml").write_text(DENY_ALL_CNP)
    (tmp_path / "allow.yaml").write_text(ALLOW_PROD_CNP)
    multi = scenario(
        tmp_path,
        "multi",
        """\
        steps:
          - name: both
            apply: [deny.yaml, allow.yaml]
            expect:
              default: blocked
              rules: [{from: prod/web, to: "prod/*", result: allowed}]
          - name: relabel-only
            label_namespaces: {dev: {env: prod}}
            expect:
              default: blocked
              rules: [{from: prod/web, to: "prod/*", result: allowed}, {from: prod/web, to: dev/client, result: allowed}]
          - name: without-the-deny
            delete: [ClusterNetworkPolicy/deny-everything]
            expect: {default: allowed}
        """,
    )
    backend = OnCalico(calico)
    steps = run(backend, multi)
    assert [s.ok for s in steps] == [True, True, True], [s.comparison.render() for s in steps]
    applies = [c for c in calico.calls if c.startswith(("apply ClusterNetworkPolicy", "delete ClusterNetworkPolicy"))]
    assert applies == [
        "apply ClusterNetworkPolicy deny-everything",
        "apply ClusterNetworkPolicy prod-from-prod",
        "delete ClusterNetworkPolicy deny-everything",
    ]
    assert set(stored(calico, "clusternetworkpolicies")) == {"prod-from-prod"}
    # The relabelled namespace kept the run's mark.
    assert calico.namespaces["dev"]["metadata"]["labels"][SCOPE_LABEL] == "r1"
    backend.close()
    assert calico.objects == {}


def test_a_scenario_that_selects_the_harness_label_is_refused(calico: CalicoCluster, tmp_path: Path) -> None:
    (tmp_path / "sneaky.yaml").write_text(
        ALLOW_PROD_CNP.replace("matchLabels: {env: prod}", f"matchExpressions: [{{key: {SCOPE_LABEL}, operator: DoesNotExist}}]")
    )
    backend = OnCalico(calico)
    (step,) = run(backend, scenario(tmp_path, "sneaky", "policies: [sneaky.yaml]\nexpect: {default: allowed}\n"))
    backend.close()
    assert step.unsupported_policy
    assert f"spec.subject.namespaces.matchExpressions[0]: backend kind cannot enforce this: {SCOPE_LABEL} is the label" in (
        step.unsupported_policy
    )


def test_an_object_someone_else_made_is_never_taken_over(tmp_path: Path) -> None:
    """A BaselineAdminNetworkPolicy is a singleton named default: one the run did not
    make stays as it is, and the step is refused before anything changes."""
    cluster = CalicoCluster("v3.31.7")
    theirs = {
        "apiVersion": "policy.networking.k8s.io/v1alpha1",
        "kind": "BaselineAdminNetworkPolicy",
        "metadata": {"name": "default"},
        "spec": {"subject": {"namespaces": {}}, "ingress": [{"action": "Allow", "from": [{"namespaces": {}}]}]},
    }
    cluster.apply_object(BASELINE_ADMIN_NETWORK_POLICY, theirs)
    (tmp_path / "banp.yaml").write_text(
        textwrap.dedent("""\
        apiVersion: policy.networking.k8s.io/v1alpha1
        kind: BaselineAdminNetworkPolicy
        metadata: {name: default}
        spec:
          subject: {namespaces: {}}
          ingress: [{action: Deny, from: [{namespaces: {}}]}]
        """)
    )
    (tmp_path / "anp.yaml").write_text(DENY_DEV_ANP)
    backend = OnCalico(cluster)
    (step,) = run(backend, scenario(tmp_path, "banp", "policies: [anp.yaml, banp.yaml]\nexpect: {default: blocked}\n"))
    backend.close()
    cluster.close()
    assert step.unsupported_policy
    assert step.unsupported_policy.endswith(
        "BaselineAdminNetworkPolicy/default: metadata.name: backend kind cannot enforce this: the cluster already has a "
        "BaselineAdminNetworkPolicy default (a BaselineAdminNetworkPolicy is a singleton, always named default), made by "
        "someone else (it has no mark of the harness); the harness never replaces an object it did not make"
    )
    assert list(stored(cluster, "baselineadminnetworkpolicies").values()) == [theirs]
    assert stored(cluster, "adminnetworkpolicies") == {}


def test_on_a_shared_cluster_names_are_the_runs_own(tmp_path: Path) -> None:
    """existing: cluster-scoped policies are named like the run's namespaces, so runs
    never collide, and namespace names in their selectors are translated."""
    cluster = CalicoCluster("v3.32.4")
    (tmp_path / "cnp.yaml").write_text(
        ALLOW_PROD_CNP.replace("matchLabels: {env: prod}", "matchLabels: {kubernetes.io/metadata.name: prod}")
    )
    backend = SharedOnCalico(cluster, run_id="ab12")
    steps = run(
        backend,
        scenario(
            tmp_path,
            "cnp",
            """\
            policies: [cnp.yaml]
            expect: {default: allowed}
            """,
        ),
    )
    assert steps[0].ok, steps[0].comparison.render()
    applied = stored(cluster, "clusternetworkpolicies")
    assert list(applied) == ["nph-ab12-prod-from-prod"]
    assert applied["nph-ab12-prod-from-prod"]["spec"]["subject"] == {
        "namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "nph-ab12-prod", SCOPE_LABEL: "ab12"}}
    }
    backend.close()
    cluster.close()
    assert cluster.objects == {}


def test_close_removes_what_the_run_applied_even_after_an_interruption(calico: CalicoCluster, tmp_path: Path) -> None:
    """Ctrl-C in the middle of a step: the plugin closes the backend, which deletes
    the objects applied so far."""
    (tmp_path / "deny.yaml").write_text(DENY_ALL_CNP)
    (tmp_path / "allow.yaml").write_text(ALLOW_PROD_CNP)
    both = scenario(tmp_path, "both", "policies: [deny.yaml, allow.yaml]\nexpect: {default: blocked}\n")
    backend = OnCalico(calico)
    driver = StepDriver(backend)
    driver.deploy(both.topology)
    real_apply = calico.apply_object
    applied: list[str] = []

    def interrupted(resource: Any, manifest: Any) -> None:
        if applied:
            raise KeyboardInterrupt
        real_apply(resource, manifest)
        applied.append(manifest["metadata"]["name"])

    calico.apply_object = interrupted  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        backend.converge(both.plans[0].state)
    assert len(stored(calico, "clusternetworkpolicies")) == 1
    backend.close()
    assert calico.objects == {}


def test_what_could_not_be_deleted_is_listed_with_the_command_that_removes_it(
    calico: CalicoCluster, tmp_path: Path, server: Any
) -> None:
    from loopback_api import RESET

    from harness.kube.client import KubeClient

    server.answer = lambda request: RESET
    calico.broken = KubeClient(str(server.kubeconfig(tmp_path)))
    calico.broken_calls = {"delete ClusterNetworkPolicy deny-everything"}
    (tmp_path / "deny.yaml").write_text(DENY_ALL_CNP)
    backend = OnCalico(calico)
    steps = run(backend, scenario(tmp_path, "deny", "policies: [deny.yaml]\nexpect: {default: blocked}\n"))
    assert steps[0].ok
    with pytest.raises(BackendError) as err:
        backend.close()
    text = str(err.value)
    assert "cannot delete ClusterNetworkPolicy deny-everything: no answer from the API server" in text
    assert text.endswith(
        "left on the cluster; remove it with:\n"
        f"  kubectl --kubeconfig {calico.kubeconfig} --context {calico.context} "
        "delete clusternetworkpolicies.policy.networking.k8s.io deny-everything"
    )
    calico.broken.close()


def test_a_kind_cluster_sweeps_what_killed_runs_left(calico: CalicoCluster) -> None:
    """Objects of another run (both marks agree) go; this run's, unmarked ones and
    ones whose marks disagree stay."""

    def cnp(name: str, label: str | None, annotation: str | None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name}
        if label:
            meta["labels"] = {SCOPE_LABEL: label}
        if annotation:
            meta["annotations"] = {ANNOTATION_RUN: annotation}
        return {
            "apiVersion": "policy.networking.k8s.io/v1alpha2",
            "kind": "ClusterNetworkPolicy",
            "metadata": meta,
            "spec": {"tier": "Admin", "priority": 1, "subject": {"namespaces": {}}},
        }

    for name, label, annotation in (
        ("old", "dead1", "dead1"),
        ("mine", "r1", "r1"),
        ("someones", None, None),
        ("disagree", "dead2", "other"),
    ):
        calico.apply_object(CLUSTER_NETWORK_POLICY, cnp(name, label, annotation))
    messages: list[str] = []
    backend = OnCalico(calico, progress=messages.append)
    assert backend.sweep_leftover_objects(prefixed=False) == ["ClusterNetworkPolicy old"]
    assert set(stored(calico, "clusternetworkpolicies")) == {"mine", "someones", "disagree"}
    assert "deleting ClusterNetworkPolicy old, left over by run dead1" in messages
    backend.close()


STAND_IN = '''
"""--backend kind on the API double: the cluster backend on a CalicoCluster that
runs the release --calico-version names (tests/kube/calico_double.py)."""
from pathlib import Path

from calico_double import CLUSTERS, CalicoCluster, OnCalico

from harness.kube.calico import load_recipes, resolve_release
from harness.kube.versions import load_versions


def cluster_name(options):
    return options.getoption("cluster_name") or "netpol-harness"


def create(options, progress=None):
    release = resolve_release(options.getoption("calico_version")[0], load_versions(CLUSTERS), load_recipes(CLUSTERS))
    return OnCalico(CalicoCluster(release.version), progress=progress)
'''


def test_the_upgrade_report_shows_3_31_to_3_32_changing_what_an_admin_network_policy_scenario_observes(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One run, one cluster upgraded in place from 3.31 to 3.32 (the real plugin, the
    real variant ordering and upgrade call, the real reports): the AdminNetworkPolicy
    is enforced on 3.31 and its cells unsupported on 3.32, with the reason, and the
    differences between the versions say so cell by cell."""
    monkeypatch.setenv("PYTHONPATH", f"{REPO}:{REPO / 'tests' / 'kube'}")  # this checkout's harness in the subprocess
    pytester.makepyfile(standin_kind=STAND_IN)
    pytester.makeconftest("import harness.backends\nharness.backends.BACKENDS['kind'] = 'standin_kind'\n")
    pytester.makeini("[pytest]\nnetpol_scenarios = scenarios\n")
    scenarios = pytester.mkdir("scenarios")
    (scenarios / "deny-dev.yaml").write_text(DENY_DEV_ANP)
    (scenarios / "admin-deny-dev.yaml").write_text(
        "description: an Admin-tier deny of dev into prod\n"
        + TOPOLOGY
        + 'policies: [deny-dev.yaml]\nexpect:\n  default: allowed\n  rules: [{from: dev/client, to: "prod/*", result: blocked}]\n'
    )
    result = pytester.runpytest_subprocess(
        "--backend",
        "kind",
        "--calico-version",
        "3.31",
        "--calico-version",
        "3.32",
        "--calico-upgrade",
        "--probe-timeout",
        "0.5",
        "--report-dir",
        "reports",
        "-v",
    )
    result.stdout.fnmatch_lines(
        [
            "*admin-deny-dev.yaml::admin-deny-dev[[]calico-3.31] PASSED*",
            "*admin-deny-dev.yaml::admin-deny-dev[[]calico-3.32] SKIPPED*",
        ]
    )
    reason = (
        "unsupported (scenarios/deny-dev.yaml: AdminNetworkPolicy/deny-dev: kind: backend kind cannot enforce this: "
        "Calico v3.32.4 does not enforce AdminNetworkPolicy (policy.networking.k8s.io/v1alpha1): it enforces "
        "ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2), as clusters/calico/3.32/recipe.yaml records from "
        "Calico's sources)"
    )
    result.stdout.fnmatch_lines(
        [
            "*netpol-harness: differences between CNI versions*",
            "upgraded in place calico-3.31 → calico-3.32 in *s",
            f"admin-deny-dev/main: prod/web → prod/db:80/TCP calico-3.31 allowed, calico-3.32 {reason}",
            f"admin-deny-dev/main: dev/client → prod/web:80/TCP calico-3.31 blocked (timeout), calico-3.32 {reason}",
            f"admin-deny-dev/main: dev/client → prod/db:80/TCP calico-3.31 blocked (timeout), calico-3.32 {reason}",
        ]
    )
    result.stdout.fnmatch_lines(["6 cell(s) differ across 1 scenario/version pair(s) of calico-3.31, calico-3.32"])
    # The scenario's own report of 3.32 says why, too.
    report = (pytester.path / "reports").glob("admin-deny-dev*3.32*.md")
    assert any("does not enforce AdminNetworkPolicy" in path.read_text() for path in report)


def test_a_namespace_label_the_harness_keeps_for_itself_is_refused_before_anything_changes(
    calico: CalicoCluster, tmp_path: Path
) -> None:
    (tmp_path / "deny.yaml").write_text(DENY_ALL_CNP)
    relabel = scenario(
        tmp_path,
        "relabel",
        f"""\
        steps:
          - name: deny
            apply: [deny.yaml]
            expect: {{default: blocked}}
          - name: sneaky-label
            label_namespaces: {{dev: {{{SCOPE_LABEL}: other}}}}
            expect: {{default: blocked}}
        """,
    )
    driver = StepDriver(OnCalico(calico))
    driver.deploy(relabel.topology)
    driver.backend.converge(relabel.plans[0].state)
    calls = len(calico.calls)
    with pytest.raises(HarnessError, match=f"namespace labels: {SCOPE_LABEL}: {SCOPE_LABEL} is the label the harness"):
        driver.backend.converge(relabel.plans[1].state)
    assert len(calico.calls) == calls
    assert calico.namespaces["dev"]["metadata"]["labels"][SCOPE_LABEL] == "r1"
    driver.backend.close()
