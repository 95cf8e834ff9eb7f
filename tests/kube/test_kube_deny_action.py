"""``--deny-action reject`` on harness-owned kind clusters: Felix's deny action set in
the FelixConfiguration (both dataplanes' fields, checked against the FelixConfiguration
CRD recorded from Calico), only from DROP to REJECT and only where the harness made
the cluster, never on existing; and the classifier counting a refused probe as
blocked only under that setting.

Real: the probe script with curl and nc, the kernel refusing a connection where
nothing listens (what an ICMP port unreachable makes of a connect), the cluster
backend and the pipeline. The API server and Felix are the double's
(tests/kube/calico_double.py)."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest
from calico_double import CalicoCluster, OnCalico

from harness.backends import existing as existing_backend
from harness.backends.base import Options
from harness.backends.kind.backend import CLUSTER_LABEL, CLUSTER_LABEL_VALUE, configure_deny_action
from harness.core.errors import BackendUnavailable
from harness.core.matrix import Outcome
from harness.engine.pipeline import Pipeline
from harness.engine.probing import ProbeSettings
from harness.kube.calico import DenyAction, deny_action_manifest, deny_action_of
from harness.kube.resources import FELIX_CONFIGURATION
from harness.scenario import load_scenario

pytestmark = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in ("curl", "nc")), reason="needs curl and nc (apt-get install curl netcat-openbsd)"
)

TIMEOUT = 2.0
SCENARIO = """\
description: a default deny of ingress in prod
namespaces:
  prod:
    pods:
      web: {labels: {app: web}, ports: [80/TCP, 53/UDP]}
      db: {labels: {app: db}, ports: [80/TCP]}
policies:
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: deny-db, namespace: prod}
    spec: {podSelector: {matchLabels: {app: db}}, policyTypes: [Ingress]}
expect:
  default: allowed
  rules: [{from: "*", to: prod/db, result: blocked}]
"""


def run(cluster: CalicoCluster, rejects: bool, tmp_path: Path) -> list[tuple[str, Outcome, str, float]]:
    path = tmp_path / "deny.yaml"
    path.write_text(SCENARIO)
    backend = OnCalico(cluster)
    backend.rejects = rejects
    try:
        (step,) = (
            Pipeline(backend, ProbeSettings(timeout=TIMEOUT, deadline=1.0, interval=0.05)).run_scenario(load_scenario(path)).steps
        )
    finally:
        backend.close()
    observed = step.comparison.observed
    return [
        (str(cell), observed[cell].outcome, observed[cell].detail, observed[cell].elapsed)
        for cell in observed.cellset
        if cell.destination == "prod/db"
    ]


def test_under_reject_a_blocked_probe_ends_at_once_and_counts_as_blocked(tmp_path: Path) -> None:
    cluster = CalicoCluster("v3.32.4")
    cluster.deny_action = "Reject"
    try:
        cells = run(cluster, rejects=True, tmp_path=tmp_path)
    finally:
        cluster.close()
    assert [(cell, outcome) for cell, outcome, _, _ in cells] == [("prod/web → prod/db:80/TCP", Outcome.BLOCKED)]
    _, _, detail, elapsed = cells[0]
    assert detail.startswith("rejected, ") and detail.endswith(
        "Calico's deny action is REJECT on this cluster (--deny-action reject), so a refusal is the policy's"
    )
    assert elapsed < TIMEOUT / 2  # refused at once, not waited out


def test_without_the_setting_a_refusal_stays_a_refusal(tmp_path: Path) -> None:
    """The classifier knows from the backend's setting only: the same refusal on a
    backend that was not told is "refused", and the step fails instead of passing."""
    cluster = CalicoCluster("v3.32.4")
    cluster.deny_action = "Reject"
    try:
        cells = run(cluster, rejects=False, tmp_path=tmp_path)
    finally:
        cluster.close()
    assert [outcome for _, outcome, _, _ in cells] == [Outcome.REFUSED]


def test_under_drop_a_blocked_probe_times_out_as_before(tmp_path: Path) -> None:
    cluster = CalicoCluster("v3.32.4")
    try:
        cells = run(cluster, rejects=True, tmp_path=tmp_path)  # the transition: Felix has not restarted yet
    finally:
        cluster.close()
    assert [(outcome, detail) for _, outcome, detail, _ in cells] == [(Outcome.BLOCKED, "timeout")]


def test_the_felix_configuration_is_set_on_a_cluster_the_harness_made() -> None:
    cluster = CalicoCluster("v3.31.7")
    messages: list[str] = []
    configure_deny_action(cluster, DenyAction.REJECT, "nph", owned=True, report=messages.append)
    # Accepted by the FelixConfiguration CRD's schema (pattern ^(?i)(Drop|Reject)?$), both dataplanes set.
    stored = cluster.objects[(FELIX_CONFIGURATION.group, FELIX_CONFIGURATION.plural, None, "default")]
    assert stored["spec"] == {"iptablesFilterDenyAction": "Reject", "nftablesFilterDenyAction": "Reject"}
    assert deny_action_of(cluster.felix_configuration()) is DenyAction.REJECT
    assert "production Calico drops" in messages[-1]
    calls = len(cluster.calls)
    configure_deny_action(cluster, DenyAction.REJECT, "nph", owned=True, report=messages.append)
    assert len(cluster.calls) == calls  # already so: nothing sent
    cluster.close()


def test_a_cluster_is_never_switched_back_to_drop_nor_changed_when_not_the_harnesss() -> None:
    rejecting = CalicoCluster("v3.31.7")
    rejecting.apply_object(FELIX_CONFIGURATION, deny_action_manifest(DenyAction.REJECT))
    with pytest.raises(BackendUnavailable, match="denies with REJECT .* run with --deny-action reject, or delete the cluster"):
        configure_deny_action(rejecting, DenyAction.DROP, "nph", owned=True, report=print)
    someones = CalicoCluster("v3.31.7")
    with pytest.raises(BackendUnavailable, match=f"lack the label {CLUSTER_LABEL}={CLUSTER_LABEL_VALUE}"):
        configure_deny_action(someones, DenyAction.REJECT, "theirs", owned=False, report=print)
    assert someones.felix_configuration() is None
    configure_deny_action(someones, DenyAction.DROP, "theirs", owned=False, report=print)  # the default: nothing to do
    rejecting.close()
    someones.close()


def test_never_on_existing() -> None:
    with pytest.raises(BackendUnavailable, match="--deny-action reject is for kind clusters the harness creates"):
        existing_backend.create(Options(deny_action="reject"))


def test_the_option_defaults_to_drop(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        textwrap.dedent("""\
        def test_it(pytestconfig):
            assert pytestconfig.getoption("deny_action") == "drop"
        """)
    )
    pytester.runpytest().assert_outcomes(passed=1)
    assert "--deny-action={drop,reject}" in pytester.runpytest("--help").stdout.str()
