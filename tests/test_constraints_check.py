"""Checking constraints on the steps of real scenario files, by the reference model
(exhaustively, representative addresses and ports included) and on observations;
which constraints apply; the verdict a violation gives; bounded results.

Namespace prod (env=prod) holds web (app=web, 80/TCP) and db (app=db, 3306/TCP);
namespace dev holds client (80/TCP).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.backends.model import ModelBackend
from harness.core.matrix import Cell, Observation, Outcome
from harness.core.topology import PortProtocol
from harness.engine import constraints as engine_constraints
from harness.engine.constraint_results import ConstraintStatus, ScenarioConstraints, applied_nowhere
from harness.engine.constraints import KEPT_CELLS, KEPT_GROUPS, check_scenario, check_step
from harness.engine.pipeline import Pipeline
from harness.engine.verdict import Status, judge
from harness.scenario import Scenario, load_scenario
from harness.scenario.constraints import ConstraintSet, parse_constraints

LIBRARY = Path(__file__).resolve().parent.parent / "scenarios"

TOPOLOGY = """\
description: constraint checks
namespaces:
  prod:
    labels: {env: prod}
    pods:
      web: {labels: {app: web}, ports: [80/TCP]}
      db: {labels: {app: db}, ports: [3306/TCP]}
  dev:
    pods:
      client: {ports: [80/TCP]}
"""


def netpol(name: str, spec: dict[str, Any], namespace: str = "prod") -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def scenario(tmp_path: Path, policies: list[dict[str, Any]], extra: str = "", name: str = "s.yaml") -> Scenario:
    text = TOPOLOGY + extra + yaml.safe_dump({"policies": policies, "expect": {"model": True}})
    path = tmp_path / name
    path.write_text(text)
    return load_scenario(path)


def constraints(text: str) -> ConstraintSet:
    return parse_constraints(yaml.safe_load(textwrap.dedent(text)), "constraints.yaml")


NO_INTERNET = """\
constraints:
  - name: no-prod-internet
    description: No production pod reaches the internet.
    no_egress_outside_cluster:
      namespaces: {matchLabels: {env: prod}}
      except: EXCEPT
"""


# Egress of every prod pod limited to the pods of the cluster and the given CIDR.
def egress_to(cidr: str, ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"to": [{"ipBlock": {"cidr": cidr}}]}
    if ports:
        rule["ports"] = ports
    return netpol("egress", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [rule, {"to": [{"namespaceSelector": {}}]}]})


def check(scenario: Scenario, text: str) -> ScenarioConstraints:
    return check_scenario(constraints(text), scenario)


def cells_of(result: ScenarioConstraints, name: str) -> list[tuple[str, str, str]]:
    found = next(r for r in result.results if r.name == name)
    return [(c.source, c.destination, c.port) for s in found.steps for c in s.model.cells]


# -- outside the cluster: representative addresses ------------------------------------


def test_egress_to_one_address_nobody_declared_is_caught_by_no_internet(tmp_path: Path) -> None:
    # No external host is declared: only the representative of 8.8.8.8/32 finds it.
    s = scenario(tmp_path, [egress_to("8.8.8.8/32")])
    result = check(s, NO_INTERNET.replace("EXCEPT", "[]"))
    (outcome,) = result.results
    assert outcome.status is ConstraintStatus.VIOLATED
    assert sorted(cells_of(result, "no-prod-internet")) == sorted(
        (pod, "8.8.8.8", f"1-65535/{protocol}") for pod in ("prod/web", "prod/db") for protocol in ("TCP", "UDP", "SCTP")
    )
    # Ranges: below 8.8.8.8, 8.8.8.8, above it to the pod range, above the pod range;
    # 2 prod pods, 3 protocols with one port range each.
    assert outcome.steps[0].model.checked == 4 * 2 * 3
    first = outcome.steps[0].model.cells[0]
    assert first.outcome is Outcome.ALLOWED
    assert first.why == "egress of prod/web admitted by prod/egress egress[0] (to[0] ipBlock 8.8.8.8/32, every port)"
    assert first.line() == "prod/web → 8.8.8.8:1-65535/TCP allowed; the constraint requires blocked (outside the cluster)"


def test_egress_to_an_excepted_network_is_not_a_violation(tmp_path: Path) -> None:
    s = scenario(tmp_path, [egress_to("10.0.0.0/8")])
    (outcome,) = check(s, NO_INTERNET.replace("EXCEPT", "[{cidr: 10.0.0.0/8}]")).results
    assert outcome.status is ConstraintStatus.PASSED
    # Checked: the ranges below 10.0.0.0/8, from it to the pod range and above the pod
    # range (10.0.0.0/8 itself is excepted), for 2 pods and 3 protocols.
    assert outcome.checked == 3 * 2 * 3
    assert outcome.violations == 0
    # Excepting less of it leaves the rest of 10.0.0.0/8 a violation.
    narrower = check(s, NO_INTERNET.replace("EXCEPT", "[{cidr: 10.0.0.0/16}]"))
    assert {d for _, d, _ in cells_of(narrower, "no-prod-internet")} == {"10.1.0.0-10.255.255.255"}


def test_an_exception_on_some_ports_leaves_the_other_ports_violations(tmp_path: Path) -> None:
    s = scenario(tmp_path, [egress_to("203.0.113.0/24")])
    result = check(s, NO_INTERNET.replace("EXCEPT", "[{cidr: 203.0.113.0/24, ports: [443/TCP]}]"))
    found = cells_of(result, "no-prod-internet")
    assert {d for _, d, _ in found} == {"203.0.113.0/24"}
    assert {p for _, _, p in found} == {"1-442/TCP", "444-65535/TCP", "1-65535/UDP", "1-65535/SCTP"}


def test_policy_ports_cut_the_port_ranges(tmp_path: Path) -> None:
    s = scenario(tmp_path, [egress_to("0.0.0.0/0", [{"protocol": "UDP", "port": 53}, {"port": 8000, "endPort": 8100}])])
    found = cells_of(check(s, NO_INTERNET.replace("EXCEPT", "[]")), "no-prod-internet")
    assert {p for _, _, p in found} == {"53/UDP", "8000-8100/TCP"}
    assert {d for _, d, _ in found} == {"0.0.0.0-192.167.255.255", "192.169.0.0-255.255.255.255"}


def test_declared_external_hosts_are_checked_by_name(tmp_path: Path) -> None:
    extra = "external:\n  partner: {ip: 203.0.113.10, ports: [443/TCP]}\n"
    s = scenario(tmp_path, [egress_to("203.0.113.10/32")], extra)
    found = cells_of(check(s, NO_INTERNET.replace("EXCEPT", "[]")), "no-prod-internet")
    assert {d for _, d, _ in found} == {"partner", "203.0.113.10"}


def test_calico_nets_cut_the_ranges_once_enforced_and_staged_policies_enforce_nothing(tmp_path: Path) -> None:
    staged = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "StagedNetworkPolicy",
        "metadata": {"name": "web-out", "namespace": "prod"},
        "spec": {
            "selector": "app == 'web'",
            "types": ["Egress"],
            "egress": [{"action": "Allow", "protocol": "UDP", "destination": {"nets": ["8.8.8.8/32"], "ports": [53]}}],
        },
    }
    deny = netpol("deny-egress", {"podSelector": {}, "policyTypes": ["Egress"]})
    text = TOPOLOGY + yaml.safe_dump(
        {
            "steps": [
                {"name": "staged", "apply": [deny, staged], "expect": {"model": True}},
                {"name": "enforced", "promote": ["StagedNetworkPolicy/prod/web-out"], "expect": {"model": True}},
            ]
        }
    )
    path = tmp_path / "calico.yaml"
    path.write_text(text)
    (outcome,) = check(load_scenario(path), NO_INTERNET.replace("EXCEPT", "[]")).results
    staged_step, enforced_step = outcome.steps
    assert staged_step.applied and staged_step.violations == 0
    assert [(c.source, c.destination, c.port) for c in enforced_step.model.cells] == [("prod/web", "8.8.8.8", "53/UDP")]


def test_an_admin_tier_guardrail_holds_and_its_removal_violates() -> None:
    library = load_scenario(LIBRARY / "admin-deny-internet-egress-prod.yaml")
    (outcome,) = check(library, NO_INTERNET.replace("EXCEPT", "[]")).results
    guarded, unguarded = outcome.steps
    assert guarded.applied and guarded.violations == 0
    assert unguarded.model.count == unguarded.model.checked > 0
    assert any("prod/api-to-anywhere egress[0]" in c.why for c in unguarded.model.cells)


# -- isolation ------------------------------------------------------------------------

ISOLATED = """\
constraints:
  - name: prod-isolated
    description: Production pods admit and send only what a policy allows.
    isolated: {namespaces: prod, directions: DIRECTIONS}
"""


def test_without_policies_every_cell_of_an_isolated_namespace_violates(tmp_path: Path) -> None:
    s = scenario(tmp_path, [])
    (ingress,) = check(s, ISOLATED.replace("DIRECTIONS", "[ingress]")).results
    step = ingress.steps[0]
    # Into prod/web and prod/db from the two other pods, on every port (one range per protocol).
    assert step.model.checked == 2 * 2 * 3
    assert step.model.count == step.model.checked
    assert step.model.cells[0].why == "egress of prod/web not isolated; ingress of prod/db not isolated"
    (egress,) = check(s, ISOLATED.replace("DIRECTIONS", "[egress]")).results
    # From prod/web and prod/db to the two other pods and the two ranges outside the cluster.
    assert egress.steps[0].model.checked == 2 * 4 * 3 == egress.steps[0].model.count


def test_a_default_deny_isolates_and_so_does_an_explicit_allow_all(tmp_path: Path) -> None:
    deny = netpol("deny", {"podSelector": {}, "policyTypes": ["Ingress"]})
    (result,) = check(scenario(tmp_path, [deny]), ISOLATED.replace("DIRECTIONS", "[ingress, egress]")).results
    # Ingress is isolated by the default deny; nothing isolates egress.
    assert result.status is ConstraintStatus.VIOLATED
    assert {c.required for c in result.steps[0].model.cells} == {"egress isolation (only what a policy rule admits)"}
    allow_all = netpol("allow-all", {"podSelector": {}, "ingress": [{}]})
    (outcome,) = check(scenario(tmp_path, [allow_all], name="allow.yaml"), ISOLATED.replace("DIRECTIONS", "[ingress]")).results
    assert outcome.status is ConstraintStatus.PASSED
    assert outcome.checked == 12


def test_cluster_policy_tiers_decide_isolation(tmp_path: Path) -> None:
    baseline_deny = {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": "baseline-deny"},
        "spec": {
            "tier": "Baseline",
            "priority": 100,
            "subject": {"namespaces": {"matchLabels": {"env": "prod"}}},
            "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}],
        },
    }
    s = scenario(tmp_path, [baseline_deny])
    assert check(s, ISOLATED.replace("DIRECTIONS", "[ingress]")).results[0].status is ConstraintStatus.PASSED
    admin_accept = {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": "from-dev"},
        "spec": {
            "tier": "Admin",
            "priority": 10,
            "subject": {"namespaces": {"matchLabels": {"env": "prod"}}},
            "ingress": [{"action": "Accept", "from": [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "dev"}}}]}],
        },
    }
    s = scenario(tmp_path, [admin_accept], name="accept.yaml")
    (outcome,) = check(s, ISOLATED.replace("DIRECTIONS", "[ingress]")).results
    # dev/client gets in by an Accept: explicit. prod/web ↔ prod/db get in by default.
    assert {(c.source, c.destination) for c in outcome.steps[0].model.cells} == {("prod/web", "prod/db"), ("prod/db", "prod/web")}


# -- rules ----------------------------------------------------------------------------

RULES = """\
constraints:
  - name: db-from-web
    description: Only web reaches the database, and it does.
    rules:
      - {from: "*", to: "*/db", result: blocked}
      - {from: prod/web, to: prod/db, port: 3306/TCP, result: allowed}
"""


def test_rules_last_match_wins_and_unmatched_cells_are_not_constrained(tmp_path: Path) -> None:
    db_from_web = netpol(
        "db",
        {
            "podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
        },
    )
    (held,) = check(scenario(tmp_path, [db_from_web]), RULES).results
    # Constrained: web → db (allowed) and client → db (blocked); web → client etc. are not.
    assert held.status is ConstraintStatus.PASSED and held.checked == 2
    deny_all = netpol("db", {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"]})
    (broken,) = check(scenario(tmp_path, [deny_all], name="deny.yaml"), RULES).results
    (cell,) = broken.steps[0].model.cells
    assert (cell.source, cell.destination, cell.port, cell.outcome, cell.required) == (
        "prod/web",
        "prod/db",
        "3306/TCP",
        Outcome.BLOCKED,
        "allowed",
    )
    assert cell.why == "egress of prod/web not isolated; ingress of prod/db isolated by prod/db, no rule allows it"
    (open_db,) = check(scenario(tmp_path, [], name="open.yaml"), RULES).results
    assert cells_of(check(scenario(tmp_path, [], name="open.yaml"), RULES), "db-from-web") == [
        ("dev/client", "prod/db", "3306/TCP")
    ]
    assert open_db.violations == 1


# -- applicability --------------------------------------------------------------------


def test_a_constraint_applies_where_it_selects_something_with_the_labels_in_force(tmp_path: Path) -> None:
    text = TOPOLOGY + textwrap.dedent("""\
        steps:
          - name: before
            expect: {model: true}
          - name: after
            label_namespaces: {dev: {env: prod}}
            expect: {model: true}
        """)
    path = tmp_path / "relabel.yaml"
    path.write_text(text)
    relabel = load_scenario(path)
    selected = """\
    constraints:
      - name: dev-as-prod
        description: dev, once labelled env=prod, is isolated.
        isolated: {namespaces: {matchLabels: {env: prod}}, podSelector: {matchExpressions: [{key: app, operator: DoesNotExist}]}}
      - name: nowhere
        description: a namespace no scenario has
        rules: [{from: "staging/*", to: "*", result: blocked}]
    """
    result = check(relabel, selected)
    moved, nowhere = result.results
    assert [s.applied for s in moved.steps] == [False, True]
    assert moved.status is ConstraintStatus.VIOLATED
    assert nowhere.status is ConstraintStatus.NOT_APPLICABLE
    assert [s.applied for s in nowhere.steps] == [False, False]
    assert applied_nowhere([result]) == ("nowhere",)
    assert applied_nowhere([result, result]) == ("nowhere",)


# -- on observations ------------------------------------------------------------------


def test_observed_cells_are_checked_and_say_whether_the_model_agrees(tmp_path: Path) -> None:
    deny = netpol("deny", {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"]})
    s = scenario(tmp_path, [deny])
    plan = s.plans[0]
    client_db = Cell("dev/client", "prod/db", plan.expected.ports[-1])
    assert plan.model[client_db].outcome is Outcome.BLOCKED
    # A network that lets client → db through, and errs on web → db: an observation
    # made by hand, as a CNI that differs from the model would give it.
    web_db = Cell("prod/web", "prod/db", client_db.port)
    observed = plan.model.with_cells(
        {
            client_db: Observation(Outcome.ALLOWED, "connected", "curl http://192.168.1.11:3306/"),
            web_db: Observation(Outcome.ERROR, "curl crashed"),
        }
    )
    rules = constraints(
        RULES.replace(
            "{from: prod/web, to: prod/db, port: 3306/TCP, result: allowed}", "{from: prod/web, to: prod/web, result: allowed}"
        )
    )
    (step,) = check_step(rules.constraints, plan, observed)
    assert step.model.count == 0  # the model says the policy holds client off
    assert step.observed is not None
    assert step.observed.checked == 1  # web → db erred: not the network's verdict
    (cell,) = step.observed.cells
    assert (cell.source, cell.destination, cell.outcome, cell.model_agrees) == ("dev/client", "prod/db", Outcome.ALLOWED, False)
    assert cell.observed == "allowed (connected)"
    assert cell.command == "curl http://192.168.1.11:3306/"
    assert "(the reference model blocks it: the network differs from Kubernetes semantics)" in step.observed.render()
    isolated = constraints(ISOLATED.replace("DIRECTIONS", "[ingress]"))
    (step,) = check_step(isolated.constraints, plan, observed)
    # Into prod/web by default (model agrees), and client → db, which no rule admits.
    seen = {(c.source, c.destination, c.model_agrees) for c in step.observed.cells} if step.observed else set()
    assert seen == {("prod/db", "prod/web", True), ("dev/client", "prod/web", True), ("dev/client", "prod/db", False)}


# -- the verdict ----------------------------------------------------------------------


def run(s: Scenario) -> Any:
    with ModelBackend() as backend:
        return Pipeline(backend).run_scenario(s)


def test_a_violation_fails_a_scenario_whose_intent_holds_and_comes_first(tmp_path: Path) -> None:
    s = scenario(tmp_path, [egress_to("8.8.8.8/32")])
    result = run(s)
    assert result.ok
    checks = check_scenario(constraints(NO_INTERNET.replace("EXCEPT", "[]")), s, result)
    assert checks.backend == ""  # the model backend: no observations to check
    verdict = judge(result, constraints=checks)
    assert verdict.status is Status.FAILED
    assert verdict.reason == "violates constraint no-prod-internet"
    lines = verdict.message.splitlines()
    assert lines[0] == "s: violates constraint no-prod-internet (constraints of constraints.yaml)"
    assert "prod/web → 8.8.8.8:1-65535/TCP allowed; the constraint requires blocked (outside the cluster)" in lines
    assert judge(result).status is Status.PASSED


def test_a_violation_fails_an_expected_failure_too(tmp_path: Path) -> None:
    library = load_scenario(LIBRARY / "pitfall-default-deny-forgets-egress.yaml")
    result = run(library)
    assert judge(result).status is Status.XFAILED
    everything = "constraints:\n  - {name: all-isolated, description: d, isolated: {namespaces: '*'}}\n"
    checks = check_scenario(constraints(everything), library, result)
    verdict = judge(result, constraints=checks)
    assert verdict.status is Status.FAILED
    assert verdict.reason == "violates constraint all-isolated"
    assert verdict.message.startswith(f"{library.name}: violates constraint all-isolated")
    # The expected failure's own text is still there, after the constraint.
    assert "expected failure, exactly as documented" in verdict.message


# -- bounded results ------------------------------------------------------------------


def test_many_violating_cells_are_kept_bounded_and_counted_by_group(tmp_path: Path) -> None:
    pods = {f"p{i:02d}": {"ports": ["80/TCP"]} for i in range(30)}
    text = yaml.safe_dump(
        {"description": "many", "namespaces": {f"n{j}": {"pods": pods} for j in range(3)}, "expect": {"model": True}}
    )
    path = tmp_path / "many.yaml"
    path.write_text(text)
    many = load_scenario(path)
    result = check(many, "constraints:\n  - {name: iso, description: d, isolated: {namespaces: '*', directions: [ingress]}}\n")
    finding = result.results[0].steps[0].model
    assert finding.count == finding.checked == 90 * 89 * 3
    assert len(finding.cells) == KEPT_CELLS
    assert all(c.why for c in finding.cells[:20]) and not any(c.why for c in finding.cells[20:])
    assert len(finding.groups) <= KEPT_GROUPS
    assert sum(g.count for g in finding.groups) == finding.count - 20  # 3 × 3 groups × 3 protocols: all kept
    text = finding.render()
    assert text.count("\n    model: ") == 20
    assert "... and 24010 more (the reports list more), by group:" in text
    # The largest groups first, the first 20 of them, the rest summed up.
    assert "  n1/* → n1/*:1-65535/TCP: 870 cell(s)" in text
    assert text.endswith("  and 6070 cell(s) in other groups")
    data = json.loads(json.dumps(result.to_json()))
    assert ScenarioConstraints.from_json(data) == result


def test_a_model_per_few_ports_gives_the_same_findings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = scenario(tmp_path, [egress_to("0.0.0.0/0", [{"protocol": "UDP", "port": 53}, {"port": 8000, "endPort": 8100}])])
    text = ISOLATED.replace("DIRECTIONS", "[ingress, egress]") + NO_INTERNET.replace("constraints:\n", "").replace("EXCEPT", "[]")
    whole = check(s, text)
    monkeypatch.setattr(engine_constraints, "MODEL_BUDGET", 1)  # one port range per model
    assert check(s, text) == whole
    assert all(r.violations > 0 for r in whole.results)


# -- Services -------------------------------------------------------------------------


def test_rules_constrain_service_columns_by_their_backends() -> None:
    library = load_scenario(LIBRARY / "service-partial-backends.yaml")
    text = """\
    constraints:
      - name: api-closed-to-web
        description: Nothing of the web namespace reaches the API Service.
        rules: [{from: "web/*", to: "api/svc:api", result: blocked}]
      - name: api-partial
        description: The frontend reaches some of the API's pods through its Service.
        rules: [{from: web/frontend, to: "api/svc:*", result: partial}]
    """
    closed, partial = check(library, text).results
    (cell,) = closed.steps[0].model.cells
    assert (cell.source, cell.destination, cell.port, cell.outcome, cell.required) == (
        "web/frontend",
        "api/svc:api",
        "80/TCP",
        Outcome.PARTIAL,
        "blocked",
    )
    assert "api/api-stable" in cell.why and "api/api-canary" in cell.why
    assert partial.status is ConstraintStatus.PASSED and partial.checked == 1


def test_whole_topology_forms_leave_service_columns_to_their_backends() -> None:
    library = load_scenario(LIBRARY / "service-partial-backends.yaml")
    plan = library.plans[0]
    service = Cell("web/frontend", "api/svc:api", PortProtocol.parse("80/TCP"))
    assert plan.model[service].outcome is Outcome.PARTIAL
    # The network lets the frontend through the Service to every backend: a Service
    # cell is no pod's ingress side, so the isolation check reads the pod cells.
    observed = plan.model.with_cells({service: Observation(Outcome.ALLOWED, "answered by api/api-canary")})
    isolated = constraints(
        "constraints:\n  - {name: api-isolated, description: d, isolated: {namespaces: api, directions: [ingress]}}\n"
    )
    (step,) = check_step(isolated.constraints, plan, observed)
    assert step.model.count == 0  # the default deny isolates every api pod
    assert step.observed is not None and step.observed.count == 0
    assert step.observed.checked == 4  # frontend and the other api pod to each api pod on 8000/TCP
