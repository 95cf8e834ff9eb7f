"""``python -m harness constraints FILE SCENARIO...``: the reference model's check of
scenario files against a constraints file, without pytest, and its exit codes (0 held
and applied, 1 violated or applying nowhere, 2 unreadable input)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LIBRARY = REPO / "scenarios"
EXAMPLE = REPO / "docs" / "constraints.example.yaml"
GUARDRAIL = LIBRARY / "admin-deny-internet-egress-prod.yaml"

NO_INTERNET = """\
constraints:
  - name: no-prod-internet
    description: No production pod reaches the internet.
    no_egress_outside_cluster:
      namespaces: {matchLabels: {env: prod}}
"""
ONE_STEP = """\
description: The Admin tier guardrail alone.
namespaces:
  prod:
    labels: {env: prod}
    pods:
      api: {ports: [8080/TCP]}
      worker: {ports: [8080/TCP]}
policies:
  - apiVersion: policy.networking.k8s.io/v1alpha2
    kind: ClusterNetworkPolicy
    metadata: {name: prod-no-internet}
    spec:
      tier: Admin
      priority: 10
      subject: {namespaces: {matchLabels: {env: prod}}}
      egress:
        - {action: Deny, to: [{networks: [0.0.0.0/0]}]}
expect: {model: true}
"""


def constraints(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "harness", "constraints", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_every_constraint_holding_and_applying_exits_0(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(NO_INTERNET)
    (tmp_path / "guarded.yaml").write_text(ONE_STEP)
    done = constraints(tmp_path, "c.yaml", "guarded.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "scenario guarded (guarded.yaml): every constraint that applies holds",
        "  step main:",
        # Two pods, the two ranges either side of the pod range, one port range per protocol.
        "    held            no-prod-internet (12 cell(s))",
        "1 constraint(s) of c.yaml on 1 scenario(s): 0 scenario(s) violate one",
    ]


def test_a_violation_exits_1_with_the_step_and_the_cells(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(NO_INTERNET)
    done = constraints(tmp_path, "c.yaml", str(GUARDRAIL))
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[:5] == [
        f"scenario admin-deny-internet-egress-prod ({GUARDRAIL}): violates constraint no-prod-internet",
        "  step prod-cannot-reach-the-internet:",
        # Two prod pods; the two declared hosts and the two ranges either side of the
        # pod range (0.0.0.0/0 cuts nothing more); one port range per protocol.
        "    held            no-prod-internet (24 cell(s))",
        "  step without-the-guardrail:",
        "    VIOLATED        no-prod-internet: 24 of 24 cell(s)",
    ]
    assert "  step without-the-guardrail: 24 of 24 cell(s) checked by the reference model violate it:" in lines
    assert (
        "  prod/api → 0.0.0.0-192.167.255.255:1-65535/TCP allowed; the constraint requires blocked (outside the cluster)" in lines
    )
    assert lines[-1] == "1 constraint(s) of c.yaml on 1 scenario(s): 1 scenario(s) violate one"


def test_a_constraint_that_applies_nowhere_exits_1(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(NO_INTERNET.replace("env: prod", "env: staging"))
    (tmp_path / "guarded.yaml").write_text(ONE_STEP)
    done = constraints(tmp_path, "c.yaml", "guarded.yaml")
    assert done.returncode == 1
    assert "    not applicable  no-prod-internet" in done.stdout.splitlines()
    assert done.stderr.splitlines() == [
        "error: constraint no-prod-internet applies to no step of the 1 scenario(s): it tests nothing"
    ]


def test_directories_are_searched_like_validate_does(tmp_path: Path) -> None:
    done = constraints(tmp_path, str(EXAMPLE), str(LIBRARY))
    # The example file applies to the library: some scenarios break its no-internet rule.
    assert done.returncode == 1
    assert "error:" not in done.stderr
    summary = done.stdout.splitlines()[-1]
    assert summary.startswith(f"4 constraint(s) of {EXAMPLE} on {len(list(LIBRARY.glob('*.yaml')))} scenario(s): ")
    assert "scenario admin-deny-internet-egress-prod" in done.stdout


def test_unreadable_input_exits_2(tmp_path: Path) -> None:
    (tmp_path / "guarded.yaml").write_text(ONE_STEP)
    (tmp_path / "bad.yaml").write_text("constraints:\n  - name: x\n    description: d\n    isolated: {namespace: prod}\n")
    done = constraints(tmp_path, "bad.yaml", "guarded.yaml")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: bad.yaml: constraints[0].isolated.namespace: unknown field (expected one of namespaces, podSelector, directions)"
    ]
    done = constraints(tmp_path, "missing.yaml", "guarded.yaml")
    assert (done.returncode, done.stderr.strip()) == (2, "error: missing.yaml: file not found")
    (tmp_path / "c.yaml").write_text(NO_INTERNET)
    (tmp_path / "broken.yaml").write_text("description: broken\nnamespaces: {}\nexpect: {model: true}\n")
    done = constraints(tmp_path, "c.yaml", "broken.yaml", "guarded.yaml")
    assert done.returncode == 2
    assert (
        done.stdout.splitlines()[0]
        == "INVALID broken.yaml: namespaces: no namespace declared (expected at least one namespace with pods)"
    )
    assert "scenario guarded (guarded.yaml): every constraint that applies holds" in done.stdout
    assert done.stderr.strip() == "error: 1 scenario file(s) cannot be read"
    empty = tmp_path / "empty"
    empty.mkdir()
    done = constraints(tmp_path, "c.yaml", "empty")
    assert (done.returncode, done.stderr.strip()) == (2, "error: no scenario file in empty")
    assert "Traceback" not in done.stderr
