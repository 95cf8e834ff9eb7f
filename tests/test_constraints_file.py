"""Constraints files: every form as documented, and every kind of bad input, each
error naming the file, the field path and what was expected."""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path

import pytest
import yaml

from harness.core.errors import ScenarioError
from harness.core.policy import PolicyType
from harness.core.topology import PortProtocol, Protocol
from harness.scenario import EndpointPattern, EndpointSelector, PortPattern, parse_topology
from harness.scenario.constraints import ConstraintForm, ConstraintSet, load_constraints, parse_constraints

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "constraints.example.yaml"

ALL_FORMS = """\
constraints:
  - name: no-prod-internet
    description: No production pod reaches the internet.
    no_egress_outside_cluster:
      namespaces: {matchLabels: {env: prod}}
      except:
        - cidr: 10.0.0.0/8
        - {cidr: 203.0.113.0/24, ports: [443/TCP, "*/UDP"]}
  - name: teams-isolated
    description: Team namespaces admit only what a policy allows.
    isolated:
      namespaces: [team-*, payments]
      podSelector: {matchLabels: {tier: data}}
      directions: [ingress]
  - name: db-from-backend
    description: Only the backend reaches the database.
    rules:
      - {from: "*", to: production/db, result: blocked}
      - from: {namespace: production, podSelector: {matchLabels: {app: backend}}}
        to: production/db
        port: 3306/TCP
        result: allowed
"""


def parse(text: str) -> ConstraintSet:
    return parse_constraints(yaml.safe_load(textwrap.dedent(text)), "constraints.yaml")


def error(text: str) -> str:
    with pytest.raises(ScenarioError) as info:
        parse(text)
    return str(info.value)


def one(body: str) -> str:
    """A file with one constraint named c, ``body`` its form."""
    return "constraints:\n  - name: c\n    description: d\n" + textwrap.indent(textwrap.dedent(body), "    ")


def test_every_form_is_read_as_documented() -> None:
    constraints = parse(ALL_FORMS)
    assert constraints.names == ("no-prod-internet", "teams-isolated", "db-from-backend")
    outside, isolated, rules = constraints.constraints
    assert outside.form is ConstraintForm.NO_EGRESS_OUTSIDE_CLUSTER
    assert [str(a.network) for a in outside.allowed] == ["10.0.0.0/8", "203.0.113.0/24"]
    assert outside.allowed[0].ports == ()
    assert outside.allowed[1].ports == (PortPattern(443, Protocol.TCP), PortPattern(None, Protocol.UDP))
    assert outside.allowed[1].allows(ipaddress.IPv4Address("203.0.113.9"), PortProtocol.parse("443/TCP"))
    assert outside.allowed[1].allows(ipaddress.IPv4Address("203.0.113.9"), PortProtocol.parse("53/UDP"))
    assert not outside.allowed[1].allows(ipaddress.IPv4Address("203.0.113.9"), PortProtocol.parse("80/TCP"))
    assert not outside.allowed[1].allows(ipaddress.IPv4Address("203.0.114.1"), PortProtocol.parse("443/TCP"))
    assert outside.summary() == (
        "no pod of namespaces labelled env=prod reaches an address outside the cluster "
        "except 10.0.0.0/8; 203.0.113.0/24 on 443/TCP, */UDP"
    )
    assert isolated.form is ConstraintForm.ISOLATED
    assert isolated.directions == (PolicyType.INGRESS,)
    assert isolated.pods is not None
    assert [s.namespace for s in isolated.pods.selectors] == ["team-*", "payments"]
    assert isolated.summary() == "every pod labelled tier=data of namespaces team-*, payments is isolated for ingress"
    assert rules.form is ConstraintForm.RULES
    assert rules.rules[0].sources == (EndpointPattern("*"),)
    assert isinstance(rules.rules[1].sources[0], EndpointSelector)
    assert rules.rules[1].allowed and not rules.rules[0].allowed
    assert rules.rules[1].path == "constraints[2].rules[1]"


def test_isolation_defaults_to_both_directions_and_selectors_follow_the_labels_in_force() -> None:
    constraint = parse(one("isolated: {namespaces: {matchLabels: {env: prod}}}")).constraints[0]
    assert constraint.directions == (PolicyType.INGRESS, PolicyType.EGRESS)
    topology = parse_topology({"a": {"labels": {"env": "prod"}, "pods": {"x": {}}}, "b": {"pods": {"y": {}}}})
    assert constraint.pods is not None
    assert [constraint.pods.matches(p, topology) for p in topology.pods] == [True, False]
    relabelled = topology.with_namespace_labels("b", {"env": "prod"})
    assert [constraint.pods.matches(p, relabelled) for p in relabelled.pods] == [True, True]
    every = parse(one("isolated: {namespaces: {}}")).constraints[0]
    assert every.summary() == "every pod of every namespace is isolated for ingress and egress"


def test_rules_are_not_checked_against_a_topology_when_read() -> None:
    # The scenario loader rejects a pattern that matches no endpoint of its topology;
    # a constraints file has none: what a rule matches is decided at each step.
    constraint = parse(one("rules: [{from: nowhere/*, to: '*/db', result: blocked}]")).constraints[0]
    assert constraint.rules[0].sources == (EndpointPattern("nowhere/*"),)


def test_the_example_file_reads() -> None:
    constraints = load_constraints(EXAMPLE)
    assert "no-prod-internet" in constraints.names
    assert {c.form for c in constraints.constraints} == set(ConstraintForm)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n", "constraints.yaml: got a list (expected a mapping)"),
        ("foo: 1\n", "constraints.yaml: foo: unknown field (expected one of constraints)"),
        ("{}\n", "constraints.yaml: constraints: required field is missing"),
        ("constraints: []\n", "constraints.yaml: constraints: empty list (expected at least one constraint)"),
        ("constraints: {a: 1}\n", "constraints.yaml: constraints: got a mapping (expected a list)"),
        (
            "constraints: [{description: d, rules: []}]\n",
            "constraints.yaml: constraints[0].name: required field is missing",
        ),
        (
            "constraints: [{name: c, rules: []}]\n",
            "constraints.yaml: constraints[0].description: required field is missing",
        ),
        (
            "constraints: [{name: 'no internet', description: d, rules: []}]\n",
            "constraints.yaml: constraints[0].name: 'no internet' is not a valid constraint name "
            "(expected letters, digits, '-', '_' and '.', such as no-prod-internet)",
        ),
        (
            "constraints: [{name: c, description: d, isolated: {namespaces: a}, color: red}]\n",
            "constraints.yaml: constraints[0].color: unknown field "
            "(expected one of name, description, rules, isolated, no_egress_outside_cluster)",
        ),
        (
            "constraints: [{name: c, description: d}]\n",
            "constraints.yaml: constraints[0]: found none of rules, isolated, no_egress_outside_cluster "
            "(expected exactly one of rules, isolated, no_egress_outside_cluster)",
        ),
        (
            "constraints: [{name: c, description: d, rules: [], isolated: {namespaces: a}}]\n",
            "constraints.yaml: constraints[0]: found rules and isolated of rules, isolated, no_egress_outside_cluster "
            "(expected exactly one of rules, isolated, no_egress_outside_cluster)",
        ),
        (
            "constraints: [{name: c, description: d, isolated: {namespaces: a}},\n"
            "              {name: c, description: e, isolated: {namespaces: b}}]\n",
            "constraints.yaml: constraints[1].name: constraint name 'c' is also used by constraints[0] "
            "(expected a name unique in the file)",
        ),
    ],
)
def test_bad_files_name_the_field_and_what_was_expected(text: str, message: str) -> None:
    assert error(text) == message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("rules: []", "constraints[0].rules: empty list (expected rules from, to, port, result, as in a scenario's expect)"),
        (
            "rules: [{from: '*', to: '*', reslt: blocked}]",
            "constraints[0].rules[0].reslt: unknown field (expected one of from, to, port, result)",
        ),
        ("rules: [{from: '*', to: '*'}]", "constraints[0].rules[0].result: required field is missing"),
        (
            "rules: [{from: '*', to: '*', result: denied}]",
            "constraints[0].rules[0].result: got string 'denied' "
            "(expected allowed or blocked (for a Service also partial, refused, name-not-resolved))",
        ),
        (
            "rules: [{from: '*', to: '*', port: 70000/TCP, result: blocked}]",
            "constraints[0].rules[0].port: port 70000 is outside 1-65535 (expected 80/TCP, 80, */UDP or *)",
        ),
        (
            "rules: [{from: {podSelector: {matchLabels: {app: 'a b'}}}, to: '*', result: blocked}]",
            "constraints[0].rules[0].from.podSelector.matchLabels.app: label value 'a b' is invalid",
        ),
        (
            "rules: [{from: {}, to: '*', result: blocked}]",
            "constraints[0].rules[0].from: empty selector (expected namespace, namespaceSelector and/or podSelector)",
        ),
        ("isolated: {directions: [ingress]}", "constraints[0].isolated.namespaces: required field is missing"),
        (
            "isolated: {namespaces: a, direction: [ingress]}",
            "constraints[0].isolated.direction: unknown field (expected one of namespaces, podSelector, directions)",
        ),
        (
            "isolated: {namespaces: a, directions: [in]}",
            "constraints[0].isolated.directions[0]: got string 'in' (expected ingress or egress)",
        ),
        (
            "isolated: {namespaces: a, directions: []}",
            "constraints[0].isolated.directions: empty list (expected ingress, egress or both)",
        ),
        (
            "isolated: {namespaces: a, directions: [egress, egress]}",
            "constraints[0].isolated.directions[1]: egress is given twice",
        ),
        ("isolated: {namespaces: []}", "constraints[0].isolated.namespaces: empty list (expected a namespace name or pattern"),
        (
            "isolated: {namespaces: [prod, 7]}",
            "constraints[0].isolated.namespaces[1]: got number 7 (expected a namespace name or pattern",
        ),
        (
            "isolated: {namespaces: {matchLabels: {env: [prod]}}}",
            "constraints[0].isolated.namespaces.matchLabels.env: label value ['prod'] must be a string",
        ),
        (
            "isolated: {namespaces: a, podSelector: {matchExpressions: [{key: app, operator: Equals}]}}",
            "constraints[0].isolated.podSelector.matchExpressions[0].operator: unknown operator 'Equals' "
            "(expected In, NotIn, Exists or DoesNotExist)",
        ),
        (
            "no_egress_outside_cluster: {namespaces: a, except: [{cidr: 10.0.0.1/8}]}",
            "constraints[0].no_egress_outside_cluster.except[0].cidr: '10.0.0.1/8' is not an IPv4 CIDR "
            "(10.0.0.1/8 has host bits set) (expected an IPv4 CIDR such as 10.0.0.0/8)",
        ),
        (
            "no_egress_outside_cluster: {namespaces: a, except: [{cidr: 'fd00::/8'}]}",
            "constraints[0].no_egress_outside_cluster.except[0].cidr: 'fd00::/8' is IPv6: the harness models IPv4 only "
            "(expected an IPv4 CIDR such as 10.0.0.0/8)",
        ),
        (
            "no_egress_outside_cluster: {namespaces: a, except: [{cidr: internet}]}",
            "constraints[0].no_egress_outside_cluster.except[0].cidr: 'internet' is not an IPv4 CIDR",
        ),
        (
            "no_egress_outside_cluster: {namespaces: a, except: [{cidr: 192.168.4.0/24}]}",
            "constraints[0].no_egress_outside_cluster.except[0].cidr: 192.168.4.0/24 is inside the cluster's pod range "
            "192.168.0.0/16 (expected addresses outside the cluster: the constraint is about them only)",
        ),
        ("no_egress_outside_cluster: {namespaces: a, except: [{ports: [443/TCP]}]}", "except[0].cidr: required field is missing"),
        (
            "no_egress_outside_cluster: {namespaces: a, except: [{cidr: 10.0.0.0/8, ports: []}]}",
            "except[0].ports: empty list (expected ports such as 443/TCP or */UDP, or omit it for every port)",
        ),
        (
            "no_egress_outside_cluster: {namespaces: a, except: [{cidr: 10.0.0.0/8, ports: [https]}]}",
            "except[0].ports[0]: 'https' is not a port pattern (expected 80/TCP, 80, */UDP or *)",
        ),
        (
            "no_egress_outside_cluster: {namespaces: a, except: [{cidr: 10.0.0.0/8, port: 443}]}",
            "except[0].port: unknown field (expected one of cidr, ports)",
        ),
        (
            "no_egress_outside_cluster: {namespaces: a, directions: [egress]}",
            "constraints[0].no_egress_outside_cluster.directions: unknown field "
            "(expected one of namespaces, podSelector, except)",
        ),
    ],
)
def test_bad_forms_name_the_field_and_what_was_expected(body: str, message: str) -> None:
    text = error(one(body))
    assert text.startswith("constraints.yaml: ")
    assert message in text


def test_files_that_cannot_be_read_say_so(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"missing.yaml: file not found"):
        load_constraints(tmp_path / "missing.yaml", "missing.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    with pytest.raises(ScenarioError, match=r"empty.yaml: the file is empty \(expected a mapping with constraints:"):
        load_constraints(empty)
    broken = tmp_path / "broken.yaml"
    broken.write_text("constraints: [\n")
    with pytest.raises(ScenarioError, match=r"broken.yaml: line 2, column 1: invalid YAML"):
        load_constraints(broken)
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(
        "a: &a ["
        + ",".join(["x"] * 200)
        + "]\n"
        + "".join(
            f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n" for p, c in zip("abcdefg", "bcdefgh", strict=True)
        )
    )
    with pytest.raises(ScenarioError, match=r"expands to more than"):
        load_constraints(bomb)
