"""Loading scenario files: every documented form, every class of bad input (with the
file, the field path and what was expected), and the expected matrix built from a
step's intent."""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path

import pytest

from harness.core.errors import PolicyError, ScenarioError
from harness.core.matrix import Cell, CellSet, Outcome, ReachabilityMatrix
from harness.core.plan import probe_grid
from harness.core.policy import NetworkPolicy, PolicyPort, PolicyType
from harness.core.selectors import LabelSelector
from harness.core.settings import ImplementationSettings, SelfTraffic
from harness.core.topology import NAMESPACE_NAME_LABEL, PortProtocol, PortSpec, Protocol
from harness.scenario import (
    EndpointPattern,
    EndpointSelector,
    ExpectationForm,
    PortPattern,
    Scenario,
    load_scenario,
    plan_step,
    probed_ports,
)

BASE = """\
description: loader test
namespaces:
  prod:
    labels: {env: prod}
    pods:
      db: {labels: {app: db}, ports: [3306/TCP]}
      web: {labels: {app: web}, ports: [80/TCP, 53/UDP]}
  dev:
    pods:
      web: {labels: {app: web}, ports: [80/TCP]}
"""

# x/a, x/b and y/c on 80/TCP; y/c also on 53/UDP: small enough for matrix tables.
GRID = """\
description: matrix test
namespaces:
  x:
    pods:
      a: {ports: [80/TCP]}
      b: {ports: [80/TCP]}
  y:
    pods:
      c: {ports: [80/TCP, 53/UDP]}
"""

DENY_DB = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-db, namespace: prod}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
"""

P80 = PortProtocol.parse("80/TCP")
P53U = PortProtocol.parse("53/UDP")
P3306 = PortProtocol.parse("3306/TCP")


def write(directory: Path, text: str, name: str = "scenario.yaml") -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def load(tmp_path: Path, text: str, name: str = "scenario.yaml") -> Scenario:
    return load_scenario(write(tmp_path, text, name))


def failure(tmp_path: Path, text: str, name: str = "scenario.yaml") -> ScenarioError:
    path = write(tmp_path, text, name)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    return info.value


def assert_error(err: ScenarioError, source: Path | str, field: str, *words: str) -> None:
    assert err.source == str(source), err
    assert err.field == field, err
    text = str(err)
    for word in words:
        assert word in text, f"{word!r} not in {text!r}"


def indent(text: str, spaces: int) -> str:
    return textwrap.indent(textwrap.dedent(text), " " * spaces)


# == valid forms =============================================================================


def test_rules_single_step(tmp_path: Path) -> None:
    scenario = load(
        tmp_path,
        BASE
        + """\
name: db-from-web
tags: [use-case, ingress]
policies:
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: db-from-web, namespace: prod}
    spec:
      podSelector: {matchLabels: {app: db}}
      ingress:
        - from: [{podSelector: {matchLabels: {app: web}}}]
          ports: [{port: 3306}]
expect:
  default: blocked
  rules:
    - {from: "*", to: "*", result: allowed}
    - {from: "*", to: prod/db, result: blocked}
    - from: {namespace: prod, podSelector: {matchLabels: {app: web}}}
      to: [prod/db]
      port: 3306/TCP
      result: allowed
    - {from: "dev/*", to: "*/web", port: "*/UDP", result: blocked}
""",
    )
    assert scenario.name == "db-from-web"
    assert scenario.description == "loader test"
    assert scenario.tags == ("use-case", "ingress")
    assert scenario.xfail is None
    assert scenario.path == tmp_path / "scenario.yaml"
    topology = scenario.topology
    assert [p.id for p in topology.pods] == ["prod/db", "prod/web", "dev/web"]
    assert dict(topology.namespace("prod").labels) == {"env": "prod", NAMESPACE_NAME_LABEL: "prod"}
    assert dict(topology.namespace("dev").labels) == {NAMESPACE_NAME_LABEL: "dev"}
    assert topology.pod("prod/web").ports == (PortSpec(80), PortSpec(53, Protocol.UDP))
    assert topology.port_keys() == (P53U, P80, P3306)
    (step,) = scenario.steps
    assert step.name == "main"
    assert [p.ref for p in step.changes.apply] == ["prod/db-from-web"]
    [policy] = step.changes.network_policies
    assert policy.policy_types == {PolicyType.INGRESS}
    assert step.changes.apply[0].source == str(tmp_path / "scenario.yaml")
    expect = step.expect
    assert expect.form is ExpectationForm.RULES
    assert expect.default_allowed is False
    assert expect.ports is None
    assert [r.allowed for r in expect.rules] == [True, False, True, False]
    assert expect.rules[0].port == PortPattern()
    assert expect.rules[1].destinations == (EndpointPattern("prod/db"),)
    assert expect.rules[2].sources == (EndpointSelector("prod", None, LabelSelector({"app": "web"})),)
    assert expect.rules[2].port == PortPattern(3306, Protocol.TCP)
    assert expect.rules[3].port == PortPattern(None, Protocol.UDP)


def test_name_defaults_to_the_file_name(tmp_path: Path) -> None:
    plain = load(tmp_path, BASE + "expect: {model: true}\n", "default-deny.yaml")
    assert plain.name == "default-deny"
    suffixed = load(tmp_path, BASE + "expect: {model: true}\n", "allow-dns.scenario.yaml")
    assert suffixed.name == "allow-dns"
    assert suffixed.steps[0].changes.apply == ()


def test_port_forms(tmp_path: Path) -> None:
    scenario = load(
        tmp_path,
        """\
description: ports
namespaces:
  x:
    pods:
      a:
        ports: [80/TCP, 53/UDP, 9000/SCTP, 8080, "81/tcp", {port: 8443, protocol: TCP, name: https},
                {port: 5353, protocol: UDP, name: mdns}, {port: 9090}]
      client: {}
expect: {model: true}
""",
    )
    assert scenario.topology.pod("x/a").ports == (
        PortSpec(80),
        PortSpec(53, Protocol.UDP),
        PortSpec(9000, Protocol.SCTP),
        PortSpec(8080),
        PortSpec(81),
        PortSpec(8443, Protocol.TCP, "https"),
        PortSpec(5353, Protocol.UDP, "mdns"),
        PortSpec(9090),
    )
    assert scenario.topology.pod("x/a").named_port("https", Protocol.TCP) == 8443


def test_matrix_form(tmp_path: Path) -> None:
    scenario = load(
        tmp_path,
        GRID
        + """\
expect:
  matrix:
    80/TCP: |4
             x/a x/b y/c
        x/a   .   X   .
        x/b   .   .   X
        y/c   X   X   .
    53/UDP: |4
            y/c
        y/c  .
        x/b  X
        x/a  .
""",
    )
    expect = scenario.steps[0].expect
    assert expect.form is ExpectationForm.MATRIX
    assert set(expect.matrices) == {P80, P53U}
    assert dict(expect.matrices[P80].cells) == {
        ("x/a", "x/a"): Outcome.ALLOWED,
        ("x/a", "x/b"): Outcome.BLOCKED,
        ("x/a", "y/c"): Outcome.ALLOWED,
        ("x/b", "x/a"): Outcome.ALLOWED,
        ("x/b", "x/b"): Outcome.ALLOWED,
        ("x/b", "y/c"): Outcome.BLOCKED,
        ("y/c", "x/a"): Outcome.BLOCKED,
        ("y/c", "x/b"): Outcome.BLOCKED,
        ("y/c", "y/c"): Outcome.ALLOWED,
    }
    assert dict(expect.matrices[P53U].cells) == {
        ("y/c", "y/c"): Outcome.ALLOWED,
        ("x/b", "y/c"): Outcome.BLOCKED,
        ("x/a", "y/c"): Outcome.ALLOWED,
    }


def test_matrix_form_restricted_to_some_ports(tmp_path: Path) -> None:
    scenario = load(
        tmp_path,
        GRID
        + """\
expect:
  ports: [53/UDP]
  matrix:
    53/UDP: |4
            y/c
        x/a  X
        x/b  X
        y/c  .
""",
    )
    expect = scenario.steps[0].expect
    assert expect.ports == (P53U,)
    assert probed_ports(scenario.topology, expect) == (P53U,)


def test_model_form_with_ports(tmp_path: Path) -> None:
    scenario = load(tmp_path, BASE + "expect: {model: true, ports: [80/TCP, 3306]}\n")
    expect = scenario.steps[0].expect
    assert expect.form is ExpectationForm.MODEL
    assert expect.ports == (P80, P3306)


def test_policies_from_files(tmp_path: Path) -> None:
    write(tmp_path, DENY_DB, "scenarios/policies/deny-db.yaml")
    write(
        tmp_path,
        """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all}
spec: {podSelector: {}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: prod}
spec: {podSelector: {matchLabels: {app: web}}, egress: [{ports: [{port: 53, protocol: UDP}]}]}
""",
        "shared/bundle.yaml",
    )
    scenario = load(
        tmp_path,
        BASE
        + """\
policies:
  - policies/deny-db.yaml
  - {path: ../shared/bundle.yaml, namespace: dev}
expect: {model: true}
""",
        "scenarios/s.yaml",
    )
    apply = scenario.steps[0].changes.apply
    assert [p.ref for p in apply] == ["prod/deny-db", "dev/deny-all", "prod/web-egress"]
    assert apply[0].source == str(tmp_path / "scenarios" / "policies" / "deny-db.yaml")
    bundle = tmp_path / "shared" / "bundle.yaml"  # `..` resolved by name
    assert apply[1].source == f"{bundle} (document 1)"
    assert apply[2].source == f"{bundle} (document 2)"
    assert apply[1].manifest["metadata"]["namespace"] == "dev"
    second = apply[2]
    assert isinstance(second, NetworkPolicy)
    assert second.policy_types == {PolicyType.INGRESS, PolicyType.EGRESS}
    assert second.egress[0].ports == (PolicyPort(Protocol.UDP, 53),)


def test_inline_and_path_policies_together(tmp_path: Path) -> None:
    write(tmp_path, DENY_DB, "deny-db.yaml")
    scenario = load(
        tmp_path,
        BASE
        + """\
policies:
  - {path: deny-db.yaml}
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: deny-dev, namespace: dev}
    spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
expect: {model: true}
""",
    )
    assert [p.ref for p in scenario.steps[0].changes.apply] == ["prod/deny-db", "dev/deny-dev"]


def test_external_hosts(tmp_path: Path) -> None:
    scenario = load(
        tmp_path,
        BASE
        + """\
external:
  payments-api: {ip: 203.0.113.10, ports: [443/TCP, {port: 80, name: http}]}
  dns.example: {ip: 198.51.100.53, ports: [53/UDP]}
expect:
  rules:
    - {from: "prod/*", to: [payments-api, dns.example], result: blocked}
""",
    )
    externals = scenario.topology.externals
    assert [e.id for e in externals] == ["payments-api", "dns.example"]
    assert externals[0].ip == ipaddress.IPv4Address("203.0.113.10")
    assert externals[0].ports == (PortSpec(443), PortSpec(80, Protocol.TCP, "http"))
    assert scenario.topology.port_keys() == (P53U, P80, PortProtocol.parse("443/TCP"), P3306)
    rule = scenario.steps[0].expect.rules[0]
    assert rule.destinations == (EndpointPattern("payments-api"), EndpointPattern("dns.example"))


def test_settings_and_xfail(tmp_path: Path) -> None:
    scenario = load(
        tmp_path,
        BASE
        + """\
settings: {self_traffic: policy, ipblock_matches_pods: false, probe_self: true}
xfail:
  reason: >-
    The two peers are ORed.
  wrong_cells: ["dev/web → prod/db:3306/TCP", "prod/web -> prod/db:3306/TCP"]
expect: {default: allowed, rules: [{from: "*", to: prod/db, result: blocked}]}
""",
    )
    assert scenario.settings.implementation == ImplementationSettings(SelfTraffic.POLICY, ipblock_matches_pods=False)
    assert scenario.settings.probe_self is True
    assert scenario.xfail is not None and scenario.xfail.reason == "The two peers are ORed."
    p3306 = PortProtocol.parse("3306/TCP")
    documented = {Cell("dev/web", "prod/db", p3306), Cell("prod/web", "prod/db", p3306)}
    assert scenario.xfail.wrong_cells == {"main": documented}
    # The matrix the policies are documented to produce: the intent, with those two flipped.
    (plan,) = scenario.plans
    assert plan.documented is not None
    flipped = {c for c in plan.cells if plan.documented[c].outcome is not plan.expected[c].outcome}
    assert flipped == documented


def test_settings_default_to_calico(tmp_path: Path) -> None:
    scenario = load(tmp_path, BASE + "settings: {}\nexpect: {model: true}\n")
    assert scenario.settings.implementation == ImplementationSettings(SelfTraffic.ALLOWED, ipblock_matches_pods=True)
    assert scenario.settings.probe_self is False


MULTI_STEP = (
    BASE
    + """\
steps:
  - name: isolate
    apply:
      - apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: deny-db, namespace: prod}
        spec: {podSelector: {matchLabels: {app: db}}, policyTypes: [Ingress]}
      - apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: db-from-api, namespace: prod}
        spec:
          podSelector: {matchLabels: {app: db}}
          ingress: [{from: [{namespaceSelector: {matchLabels: {team: payments}}, podSelector: {matchLabels: {app: api}}}]}]
    expect:
      rules:
        - {from: "*", to: prod/db, result: blocked}
  - name: relabel
    label_namespaces: {dev: {team: payments}, prod: {env: null}}
    label_pods: {dev/web: {app: api, tier: front}}
    expect:
      rules:
        - {from: "*", to: prod/db, result: blocked}
        - {from: {podSelector: {matchLabels: {app: api}}}, to: prod/db, result: allowed}
  - delete: [prod/deny-db, prod/db-from-api]
    expect: {model: true}
"""
)


def test_multi_step(tmp_path: Path) -> None:
    scenario = load(tmp_path, MULTI_STEP)
    first, second, third = scenario.steps
    assert (first.name, second.name, third.name) == ("isolate", "relabel", "step-3")
    assert [p.ref for p in first.changes.apply] == ["prod/deny-db", "prod/db-from-api"]
    assert first.changes.delete == () and dict(first.changes.label_pods) == {}
    assert second.changes.apply == ()
    assert {k: dict(v) for k, v in second.changes.label_namespaces.items()} == {
        "dev": {"team": "payments"},
        "prod": {"env": None},
    }
    assert {k: dict(v) for k, v in second.changes.label_pods.items()} == {"dev/web": {"app": "api", "tier": "front"}}
    assert third.changes.delete == ("prod/deny-db", "prod/db-from-api")
    assert third.expect.form is ExpectationForm.MODEL
    # The declared topology keeps its original labels; steps carry the changes.
    assert dict(scenario.topology.pod("dev/web").labels) == {"app": "web"}


def test_a_policy_can_be_reapplied_after_delete(tmp_path: Path) -> None:
    policy = indent(DENY_DB, 8).lstrip()
    scenario = load(
        tmp_path,
        BASE
        + f"""\
steps:
  - apply:
      - {policy}
    expect: {{model: true}}
  - delete: [prod/deny-db]
    apply:
      - {policy}
    expect: {{model: true}}
""",
    )
    assert [s.changes.delete for s in scenario.steps] == [(), ("prod/deny-db",)]


# == bad input ===============================================================================


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    err = failure(tmp_path, "description: x\nnamespaces:\n  prod:\n\tpods: {}\n")
    assert_error(err, tmp_path / "scenario.yaml", "line 4, column 1", "invalid YAML")


def test_yaml_unclosed_flow_mapping(tmp_path: Path) -> None:
    err = failure(tmp_path, BASE + "expect: {rules: [\n")
    assert err.field.startswith("line "), err
    assert "invalid YAML" in str(err)


def test_duplicate_namespace_key(tmp_path: Path) -> None:
    err = failure(
        tmp_path,
        """\
description: x
namespaces:
  prod:
    pods: {db: {ports: [80/TCP]}}
  prod:
    pods: {web: {ports: [80/TCP]}}
expect: {model: true}
""",
    )
    assert_error(err, tmp_path / "scenario.yaml", "line 5, column 3", "duplicate key 'prod' (first at line 3)")


def test_duplicate_pod_key(tmp_path: Path) -> None:
    err = failure(
        tmp_path,
        """\
description: x
namespaces:
  prod:
    pods: {db: {ports: [80/TCP]}, db: {ports: [81/TCP]}}
expect: {model: true}
""",
    )
    assert_error(err, tmp_path / "scenario.yaml", "line 4, column 35", "duplicate key 'db'")


@pytest.mark.parametrize("scalar", ["!!timestamp yesterday", "!!timestamp 2001-02-30", "!!binary 'not base64!'"])
def test_odd_yaml_scalars_are_yaml_errors(tmp_path: Path, scalar: str) -> None:
    err = failure(tmp_path, BASE + f"xfail: {scalar}\nexpect: {{model: true}}\n")
    assert err.source == str(tmp_path / "scenario.yaml")
    assert "invalid YAML" in str(err)


def test_date_like_values_stay_text(tmp_path: Path) -> None:
    scenario = load(tmp_path, BASE.replace("{app: db}", "{app: db, release: 2026-01-01}") + "expect: {model: true}\n")
    assert scenario.topology.pod("prod/db").labels["release"] == "2026-01-01"


def test_empty_file(tmp_path: Path) -> None:
    err = failure(tmp_path, "# nothing here\n")
    assert_error(err, tmp_path / "scenario.yaml", "", "the file is empty", "docs/scenario-format.md")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario(tmp_path / "absent.yaml")
    assert_error(info.value, tmp_path / "absent.yaml", "", "file not found")


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("description: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert_error(info.value, path, "", "cannot read file")


POLICY_INLINE = """\
policies:
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: deny-db, namespace: prod}
    spec: {podSelector: {}}
"""

# (YAML appended to BASE, field, words): every class of error in a single-step scenario.
SINGLE_STEP_ERRORS = [
    # unknown fields
    pytest.param("expects: {model: true}\n", "expects", ["unknown field", "expect"], id="unknown-top-field"),
    pytest.param(
        "expect: {model: true, default_result: blocked}\n", "expect.default_result", ["unknown field"], id="unknown-expect-field"
    ),
    pytest.param(
        "expect: {rules: [{form: '*', to: '*', result: allowed}]}\n",
        "expect.rules[0].form",
        ["unknown field", "from"],
        id="unknown-rule-field",
    ),
    pytest.param(
        "expect: {rules: [{from: '*', to: {pods: web}, result: allowed}]}\n",
        "expect.rules[0].to.pods",
        ["unknown field", "podSelector"],
        id="unknown-endpoint-selector-field",
    ),
    pytest.param(
        "settings: {probe_selff: true}\nexpect: {model: true}\n",
        "settings.probe_selff",
        ["unknown field", "probe_self"],
        id="unknown-settings-field",
    ),
    pytest.param(
        "external: {api: {address: 203.0.113.1}}\nexpect: {model: true}\n",
        "external.api.address",
        ["unknown field"],
        id="unknown-external-field",
    ),
    pytest.param(
        "policies: [{path: p.yaml, ns: prod}]\nexpect: {model: true}\n",
        "policies[0].ns",
        ["unknown field", "namespace"],
        id="unknown-policy-ref-field",
    ),
    # wrong types
    pytest.param("expect: {rules: {from: '*'}}\n", "expect.rules", ["got a mapping", "a list"], id="rules-not-list"),
    pytest.param(
        "expect: {rules: [{from: '*', to: '*', result: 'yes'}]}\n",
        "expect.rules[0].result",
        ["got string 'yes'", "allowed or blocked"],
        id="result-string",
    ),
    pytest.param(
        "expect: {rules: [{from: '*', to: '*', result: true}]}\n",
        "expect.rules[0].result",
        ["got boolean True", "allowed or blocked"],
        id="result-boolean",
    ),
    pytest.param(
        "expect: {rules: [{from: '*', to: '*'}]}\n", "expect.rules[0].result", ["required field is missing"], id="result-missing"
    ),
    pytest.param(
        "expect: {default: deny, rules: []}\n", "expect.default", ["got string 'deny'", "allowed or blocked"], id="default-wrong"
    ),
    pytest.param("expect: {model: false}\n", "expect.model", ["got boolean False", "true"], id="model-false"),
    pytest.param("expect: [model]\n", "expect", ["got a list", "a mapping"], id="expect-not-mapping"),
    pytest.param(
        "settings: {probe_self: 'yes'}\nexpect: {model: true}\n",
        "settings.probe_self",
        ["got string 'yes'", "true or false"],
        id="probe-self-string",
    ),
    pytest.param(
        "settings: {self_traffic: always}\nexpect: {model: true}\n",
        "settings.self_traffic",
        ["got string 'always'", "allowed or policy"],
        id="self-traffic-unknown",
    ),
    pytest.param(
        "settings: {ipblock_matches_pods: 1}\nexpect: {model: true}\n",
        "settings.ipblock_matches_pods",
        ["got number 1", "true or false"],
        id="ipblock-setting-number",
    ),
    pytest.param("settings: [probe_self]\nexpect: {model: true}\n", "settings", ["got a list"], id="settings-list"),
    pytest.param("tags: use-case\nexpect: {model: true}\n", "tags", ["got string 'use-case'", "a list"], id="tags-string"),
    pytest.param("tags: [ok, 3]\nexpect: {model: true}\n", "tags[1]", ["got number 3"], id="tag-number"),
    pytest.param("xfail: 5\nexpect: {model: true}\n", "xfail", ["got number 5"], id="xfail-number"),
    pytest.param(
        "name: 'bad name!'\nexpect: {model: true}\n", "name", ["'bad name!' is not a valid scenario name"], id="name-invalid"
    ),
    pytest.param("steps: {main: {}}\n", "steps", ["got a mapping", "a list"], id="steps-mapping"),
    pytest.param("steps: []\n", "steps", ["empty list", "at least one step"], id="steps-empty"),
    pytest.param("steps: [[]]\n", "steps[0]", ["got a list", "a mapping"], id="step-not-mapping"),
    pytest.param("steps: [{name: one}]\n", "steps[0].expect", ["required field is missing"], id="step-without-expect"),
    pytest.param(
        "policies: {path: p.yaml}\nexpect: {model: true}\n", "policies", ["got a mapping", "a list"], id="policies-mapping"
    ),
    pytest.param(
        "policies: [5]\nexpect: {model: true}\n", "policies[0]", ["got number 5", "a mapping"], id="policy-entry-number"
    ),
    # structure
    pytest.param("", "expect", ["required field is missing"], id="expect-missing"),
    pytest.param("expect: {}\n", "expect", ["found none of rules, matrix, model", "exactly one"], id="no-form"),
    pytest.param("expect: {model: true, rules: []}\n", "expect", ["found rules and model", "exactly one"], id="two-forms"),
    pytest.param(
        "expect: {model: true, default: blocked}\n", "expect.default", ["default goes with rules only"], id="default-with-model"
    ),
    pytest.param(
        "steps: [{expect: {model: true}}]\nexpect: {model: true}\n",
        "expect",
        ["inside its steps", "either policies + expect, or steps"],
        id="steps-and-expect",
    ),
    pytest.param("steps: [{expect: {model: true}}]\n" + POLICY_INLINE, "policies", ["inside its steps"], id="steps-and-policies"),
    # unknown endpoints referenced by an expectation
    pytest.param(
        "expect: {rules: [{from: '*', to: prod/cache, result: blocked}]}\n",
        "expect.rules[0].to",
        ["'prod/cache' matches no pod or external host", "prod/db"],
        id="unknown-pod",
    ),
    pytest.param(
        "expect: {rules: [{from: [prod/web, 'staging/*'], to: '*', result: blocked}]}\n",
        "expect.rules[0].from[1]",
        ["'staging/*' matches no pod"],
        id="unknown-namespace-pattern",
    ),
    pytest.param(
        "expect: {rules: [{from: {namespace: staging}, to: '*', result: blocked}]}\n",
        "expect.rules[0].from.namespace",
        ["'staging' matches no namespace", "prod, dev"],
        id="unknown-namespace-selector-form",
    ),
    pytest.param(
        "expect: {rules: [{from: '*', to: [], result: blocked}]}\n",
        "expect.rules[0].to",
        ["empty list"],
        id="endpoint-empty-list",
    ),
    pytest.param(
        "expect: {rules: [{from: {}, to: '*', result: blocked}]}\n",
        "expect.rules[0].from",
        ["empty selector"],
        id="endpoint-empty-selector",
    ),
    pytest.param(
        "expect: {rules: [{from: '', to: '*', result: blocked}]}\n",
        "expect.rules[0].from",
        ["a mapping"],
        id="endpoint-empty-string",
    ),
    pytest.param(
        "expect: {rules: [{from: 5, to: '*', result: blocked}]}\n", "expect.rules[0].from", ["got number 5"], id="endpoint-number"
    ),
    # invalid selectors
    pytest.param(
        "expect: {rules: [{from: {podSelector: {matchExpressions: [{key: app, operator: Equal, values: [x]}]}},"
        " to: '*', result: blocked}]}\n",
        "expect.rules[0].from.podSelector.matchExpressions[0].operator",
        ["unknown operator 'Equal'", "NotIn"],
        id="selector-bad-operator",
    ),
    pytest.param(
        "expect: {rules: [{from: '*', to: {namespaceSelector: {matchLabels: {env: 'bad value'}}}, result: blocked}]}\n",
        "expect.rules[0].to.namespaceSelector.matchLabels.env",
        ["label value 'bad value' is invalid"],
        id="selector-bad-label-value",
    ),
    pytest.param(
        "expect: {rules: [{from: {podSelector: {matchExpressions: [{key: app, operator: Exists, values: [x]}]}},"
        " to: '*', result: blocked}]}\n",
        "expect.rules[0].from.podSelector.matchExpressions[0].values",
        ["takes no values"],
        id="selector-exists-with-values",
    ),
    # ports in expectations
    pytest.param(
        "expect: {rules: [{from: '*', to: '*', port: 80/ICMP, result: blocked}]}\n",
        "expect.rules[0].port",
        ["'80/ICMP' is not a port pattern", "*/UDP"],
        id="rule-port-protocol",
    ),
    pytest.param(
        "expect: {rules: [{from: '*', to: '*', port: 0, result: blocked}]}\n",
        "expect.rules[0].port",
        ["port 0 is outside 1-65535"],
        id="rule-port-zero",
    ),
    pytest.param(
        "expect: {rules: [{from: '*', to: '*', port: http, result: blocked}]}\n",
        "expect.rules[0].port",
        ["'http' is not a port pattern"],
        id="rule-port-name",
    ),
    pytest.param(
        "expect: {rules: [{from: '*', to: '*', port: [80], result: blocked}]}\n",
        "expect.rules[0].port",
        ["got a list"],
        id="rule-port-list",
    ),
    pytest.param(
        "expect: {model: true, ports: [8080/TCP]}\n",
        "expect.ports[0]",
        ["no pod or external host serves 8080/TCP", "3306/TCP"],
        id="probed-port-not-served",
    ),
    pytest.param(
        "expect: {model: true, ports: [eighty]}\n", "expect.ports[0]", ["a port such as 80/TCP"], id="probed-port-invalid"
    ),
    pytest.param("expect: {model: true, ports: []}\n", "expect.ports", ["empty list"], id="probed-ports-empty"),
    pytest.param("expect: {model: true, ports: 80/TCP}\n", "expect.ports", ["a list"], id="probed-ports-string"),
    # policies
    pytest.param(
        "policies: [missing.yaml]\nexpect: {model: true}\n",
        "policies[0].path",
        ["missing.yaml does not exist"],
        id="policy-file-missing",
    ),
    pytest.param("policies: [{path: 5}]\nexpect: {model: true}\n", "policies[0].path", ["got number 5"], id="policy-path-number"),
    pytest.param(
        POLICY_INLINE + "  - apiVersion: networking.k8s.io/v1\n    kind: NetworkPolicy\n"
        "    metadata: {name: deny-db, namespace: prod}\n    spec: {podSelector: {}}\nexpect: {model: true}\n",
        "policies",
        ["NetworkPolicy prod/deny-db is given twice"],
        id="duplicate-policy",
    ),
]


@pytest.mark.parametrize(("body", "field", "words"), SINGLE_STEP_ERRORS)
def test_single_step_errors(tmp_path: Path, body: str, field: str, words: list[str]) -> None:
    err = failure(tmp_path, BASE + body)
    assert_error(err, tmp_path / "scenario.yaml", field, *words)


# (whole scenario text, field, words): errors in the topology.
TOPOLOGY_ERRORS = [
    pytest.param("description: x\nexpect: {model: true}\n", "namespaces", ["required field is missing"], id="namespaces-missing"),
    pytest.param(
        "namespaces: {x: {pods: {a: {}}}}\nexpect: {model: true}\n",
        "description",
        ["required field is missing"],
        id="description-missing",
    ),
    pytest.param(
        "description: 42\nnamespaces: {x: {pods: {a: {}}}}\nexpect: {model: true}\n",
        "description",
        ["got number 42"],
        id="description-number",
    ),
    pytest.param(
        "description: x\nnamespaces: [x]\nexpect: {model: true}\n",
        "namespaces",
        ["got a list", "a mapping"],
        id="namespaces-list",
    ),
    pytest.param(
        "description: x\nnamespaces: {}\nexpect: {model: true}\n", "namespaces", ["no namespace declared"], id="namespaces-empty"
    ),
    pytest.param(
        "description: x\nnamespaces: {x: {}, y: {pods: {}}}\nexpect: {model: true}\n",
        "namespaces",
        ["no pod declared"],
        id="no-pods",
    ),
    pytest.param(
        "description: x\nnamespaces: {Prod: {pods: {a: {}}}}\nexpect: {model: true}\n",
        "namespaces.Prod",
        ["'Prod' is not a valid namespace name", "lowercase DNS label"],
        id="namespace-name-uppercase",
    ),
    pytest.param(
        "description: x\nnamespaces: {prod.eu: {pods: {a: {}}}}\nexpect: {model: true}\n",
        "namespaces.prod.eu",
        ["is not a valid namespace name"],
        id="namespace-name-dot",
    ),
    pytest.param(
        "description: x\nnamespaces: {x: {label: {a: b}, pods: {a: {}}}}\nexpect: {model: true}\n",
        "namespaces.x.label",
        ["unknown field", "labels"],
        id="namespace-unknown-field",
    ),
    pytest.param(
        "description: x\nnamespaces: {x: {pods: {DB: {}}}}\nexpect: {model: true}\n",
        "namespaces.x.pods.DB",
        ["'DB' is not a valid pod name"],
        id="pod-name-uppercase",
    ),
    pytest.param(
        "description: x\nnamespaces: {x: {pods: [a]}}\nexpect: {model: true}\n",
        "namespaces.x.pods",
        ["got a list"],
        id="pods-list",
    ),
    pytest.param(
        "description: x\nnamespaces: {x: {pods: {a: {lables: {}}}}}\nexpect: {model: true}\n",
        "namespaces.x.pods.a.lables",
        ["unknown field", "labels"],
        id="pod-unknown-field",
    ),
    pytest.param(
        "description: x\nnamespaces: {x: {labels: {bad key: v}, pods: {a: {}}}}\nexpect: {model: true}\n",
        "namespaces.x.labels.bad key",
        ["label key 'bad key' is invalid"],
        id="namespace-label-key",
    ),
    pytest.param(
        "description: x\nnamespaces: {x: {pods: {a: {labels: {app: 8080}}}}}\nexpect: {model: true}\n",
        "namespaces.x.pods.a.labels.app",
        ["must be a string"],
        id="pod-label-number",
    ),
    pytest.param(
        'description: x\nnamespaces: {x: {pods: {a: {labels: {app: "web\\n"}}}}}\nexpect: {model: true}\n',
        "namespaces.x.pods.a.labels.app",
        ["is invalid"],
        id="pod-label-trailing-newline",
    ),
    pytest.param(
        "description: x\nnamespaces: {x: {pods: {a: {labels: [app]}}}}\nexpect: {model: true}\n",
        "namespaces.x.pods.a.labels",
        ["got a list"],
        id="pod-labels-list",
    ),
    # bad ports
    pytest.param(
        "description: x\nnamespaces: {x: {pods: {a: {ports: [80/TCPX]}}}}\nexpect: {model: true}\n",
        "namespaces.x.pods.a.ports[0]",
        ["'80/TCPX' is not a port", "80/TCP, 53/UDP"],
        id="port-protocol",
    ),
    pytest.param(
        "description: x\nnamespaces: {x: {pods: {a: {ports: [80/TCP, 0/TCP]}}}}\nexpect: {model: true}\n",
        "namespaces.x.pods.a.ports[1]",
        ["port 0", "outside 1-65535"],
        id="port-zero",
    ),
    pytest.param(
        "description: x\nnamespaces: {x: {pods: {a: {ports: [70000]}}}}\nexpect: {model: true}\n",
        "namespaces.x.pods.a.ports[0]",
        ["outside 1-65535"],
        id="port-too-big",
    ),
    pytest.param(
        "description: x\nnamespaces: {x: {pods: {a: {ports: [http]}}}}\nexpect: {model: true}\n",
        "namespaces.x.pods.a.ports[0]",
        ["'http' is not a port"],
        id="port-name-only",
    ),
    pytest.param(
        "description: x\nnamespaces: {x: {pods: {a: {ports: [true]}}}}\nexpect: {model: true}\n",
        "namespaces.x.pods.a.ports[0]",
        ["got boolean True", "a mapping"],
        id="port-boolean",
    ),
    pytest.param(
        "description: x\nnamespaces: {x: {pods: {a: {ports: 80/TCP}}}}\nexpect: {model: true}\n",
        "namespaces.x.pods.a.ports",
        ["a list"],
        id="ports-string",
    ),
    pytest.param(
        "description: x\nnamespaces: {x: {pods: {a: {ports: [{port: '80'}]}}}}\nexpect: {model: true}\n",
        "namespaces.x.pods.a.ports[0].port",
        ["got string '80'", "a port number 1-65535"],
        id="port-mapping-string-number",
    ),
    pytest.param(
        "description: x\nnamespaces: {x: {pods: {a: {ports: [{protocol: TCP}]}}}}\nexpect: {model: true}\n",
        "namespaces.x.pods.a.ports[0].port",
        ["required field is missing"],
        id="port-mapping-no-port",
    ),
    pytest.param(
        "description: x\nnamespaces: {x: {pods: {a: {ports: [{port: 80, protocol: ICMP}]}}}}\nexpect: {model: true}\n",
        "namespaces.x.pods.a.ports[0].protocol",
        ["got string 'ICMP'", "TCP, UDP or SCTP"],
        id="port-mapping-protocol",
    ),
    pytest.param(
        "description: x\nnamespaces: {x: {pods: {a: {ports: [{port: 80, name: HTTP}]}}}}\nexpect: {model: true}\n",
        "namespaces.x.pods.a.ports[0].name",
        ["'HTTP' is not a valid port name"],
        id="port-name-uppercase",
    ),
    pytest.param(
        "description: x\nnamespaces: {x: {pods: {a: {ports: [{port: 80, name: web--api}]}}}}\nexpect: {model: true}\n",
        "namespaces.x.pods.a.ports[0].name",
        ["not a valid port name"],
        id="port-name-double-dash",
    ),
    pytest.param(
        "description: x\nnamespaces: {x: {pods: {a: {ports: [{port: 80, proto: TCP}]}}}}\nexpect: {model: true}\n",
        "namespaces.x.pods.a.ports[0].proto",
        ["unknown field"],
        id="port-unknown-field",
    ),
    # duplicates
    pytest.param(
        "description: x\nnamespaces: {x: {pods: {a: {ports: [3306/TCP, 80/TCP, 3306/TCP]}}}}\nexpect: {model: true}\n",
        "namespaces.x.pods.a.ports[2]",
        ["3306/TCP is declared twice", "ports[0]"],
        id="duplicate-port",
    ),
    pytest.param(
        "description: x\nnamespaces: {x: {pods: {a: {ports: [80/TCP, 80]}}}}\nexpect: {model: true}\n",
        "namespaces.x.pods.a.ports[1]",
        ["80/TCP is declared twice"],
        id="duplicate-port-two-forms",
    ),
    pytest.param(
        "description: x\nnamespaces: {x: {pods: {a: {ports: [{port: 80, name: http}, "
        "{port: 8080, name: http}]}}}}\nexpect: {model: true}\n",
        "namespaces.x.pods.a.ports[1].name",
        ["port name 'http' is used twice"],
        id="duplicate-port-name",
    ),
    pytest.param(
        "description: x\nnamespaces: {x: {pods: {a: {ports: [{port: 53, protocol: UDP, name: dns}, "
        "{port: 53, protocol: TCP, name: dns}]}}}}\nexpect: {model: true}\n",
        "namespaces.x.pods.a.ports[1].name",
        ["port name 'dns' is used twice", "ports[0]"],
        id="duplicate-port-name-across-protocols",
    ),
    # external hosts
    pytest.param(
        "description: x\nnamespaces: {x: {pods: {a: {}}}}\nexternal: {api: {ip: 192.168.3.4}}\nexpect: {model: true}\n",
        "external.api.ip",
        ["inside the pod range 192.168.0.0/16", "outside the cluster"],
        id="external-in-pod-range",
    ),
    pytest.param(
        "description: x\nnamespaces: {x: {pods: {a: {}}}}\nexternal: {api: {ip: 127.0.0.1}}\nexpect: {model: true}\n",
        "external.api.ip",
        ["cannot be a host address"],
        id="external-loopback",
    ),
    pytest.param(
        "description: x\nnamespaces: {x: {pods: {a: {}}}}\nexternal: {api: {ip: 240.0.0.1}}\nexpect: {model: true}\n",
        "external.api.ip",
        ["cannot be a host address"],
        id="external-reserved",
    ),
    pytest.param(
        "description: x\nnamespaces: {x: {pods: {a: {}}}}\nexternal: {api: {ip: 203.0.113.300}}\nexpect: {model: true}\n",
        "external.api.ip",
        ["an IPv4 address"],
        id="external-bad-ip",
    ),
    pytest.param(
        "description: x\nnamespaces: {x: {pods: {a: {}}}}\nexternal: {api: {ip: true}}\nexpect: {model: true}\n",
        "external.api.ip",
        ["an IPv4 address"],
        id="external-ip-boolean",
    ),
    pytest.param(
        "description: x\nnamespaces: {x: {pods: {a: {}}}}\nexternal: {api: {ip: 3405803786}}\nexpect: {model: true}\n",
        "external.api.ip",
        ["an IPv4 address"],
        id="external-ip-number",
    ),
    pytest.param(
        "description: x\nnamespaces: {x: {pods: {a: {}}}}\nexternal: {api: {ports: [443/TCP]}}\nexpect: {model: true}\n",
        "external.api.ip",
        ["required field is missing"],
        id="external-ip-missing",
    ),
    pytest.param(
        "description: x\nnamespaces: {x: {pods: {a: {}}}}\nexternal: {API: {ip: 203.0.113.1}}\nexpect: {model: true}\n",
        "external.API",
        ["'API' is not a valid name"],
        id="external-name-uppercase",
    ),
    pytest.param(
        "description: x\nnamespaces: {x: {pods: {a: {}}}}\nexternal: {x/a: {ip: 203.0.113.1}}\nexpect: {model: true}\n",
        "external.x/a",
        ["is not a valid name", "no '/'"],
        id="external-name-slash",
    ),
    pytest.param(
        "description: x\nnamespaces: {x: {pods: {a: {}}}}\n"
        "external: {one: {ip: 203.0.113.1}, two: {ip: 203.0.113.1}}\nexpect: {model: true}\n",
        "external.two.ip",
        ["203.0.113.1 is already used by external.one"],
        id="external-duplicate-ip",
    ),
]


@pytest.mark.parametrize(("text", "field", "words"), TOPOLOGY_ERRORS)
def test_topology_errors(tmp_path: Path, text: str, field: str, words: list[str]) -> None:
    err = failure(tmp_path, text)
    assert_error(err, tmp_path / "scenario.yaml", field, *words)


def test_top_level_not_a_mapping(tmp_path: Path) -> None:
    err = failure(tmp_path, "- description: x\n")
    assert_error(err, tmp_path / "scenario.yaml", "", "got a list", "a mapping")


# -- matrix tables ------------------------------------------------------------------------------

MATRIX_ERRORS = [
    pytest.param(
        """\
    80/TCP: |4
             x/a x/b
        x/a   .   X
        x/b   .   .
        y/c   X   X
    53/UDP: |4
            y/c
        x/a  .
        x/b  .
        y/c  .
""",
        "expect.matrix.80/TCP",
        ["wrong columns: missing y/c"],
        id="missing-column",
    ),
    pytest.param(
        """\
    80/TCP: |4
             x/a x/b y/c y/d
        x/a   .   X   .   .
        x/b   .   .   X   .
        y/c   X   X   .   .
    53/UDP: |4
            y/c
        x/a  .
        x/b  .
        y/c  .
""",
        "expect.matrix.80/TCP",
        ["wrong columns: unknown y/d"],
        id="extra-column",
    ),
    pytest.param(
        """\
    80/TCP: |4
             x/a x/b y/c
        x/a   .   X   .
        x/b   .   .   X
        y/c   X   X   .
        y/d   X   X   .
    53/UDP: |4
            y/c
        x/a  .
        x/b  .
        y/c  .
""",
        "expect.matrix.80/TCP",
        ["wrong rows: unknown y/d", "one row per pod"],
        id="extra-row",
    ),
    pytest.param(
        """\
    80/TCP: |4
             x/a x/b y/c
        x/a   .   X   .
        y/c   X   X   .
    53/UDP: |4
            y/c
        x/a  .
        x/b  .
        y/c  .
""",
        "expect.matrix.80/TCP",
        ["wrong rows: missing x/b"],
        id="missing-row",
    ),
    pytest.param(
        """\
    80/TCP: |4
             x/a x/b y/c
        x/a   .   X   .
        x/b   .   ?   X
        y/c   X   X   .
    53/UDP: |4
            y/c
        x/a  .
        x/b  .
        y/c  .
""",
        "expect.matrix.80/TCP line 3",
        ["cell x/b → x/b is '?'", "'.' (allowed), 'X' (blocked) or '-' (not probed: a pod and itself)"],
        id="wrong-symbol",
    ),
    pytest.param(
        """\
    80/TCP: |4
             x/a x/b y/c
        x/a   .   X
        x/b   .   .   X
        y/c   X   X   .
    53/UDP: |4
            y/c
        x/a  .
        x/b  .
        y/c  .
""",
        "expect.matrix.80/TCP line 2",
        ["row x/a has 2 cells for 3 columns"],
        id="short-row",
    ),
    pytest.param(
        """\
    80/TCP: |4
             x/a x/b y/c
        x/a   .   X   .
        x/b   .   .   X
        x/a   .   .   X
        y/c   X   X   .
    53/UDP: |4
            y/c
        x/a  .
        x/b  .
        y/c  .
""",
        "expect.matrix.80/TCP line 4",
        ["source x/a appears twice"],
        id="duplicate-row",
    ),
    pytest.param(
        """\
    80/TCP: |4
             x/a x/b x/a
        x/a   .   X   .
    53/UDP: |4
            y/c
        x/a  .
        x/b  .
        y/c  .
""",
        "expect.matrix.80/TCP",
        ["a destination appears twice"],
        id="duplicate-column",
    ),
    pytest.param(
        """\
    80/TCP: "x/a x/b y/c"
    53/UDP: |4
            y/c
        x/a  .
        x/b  .
        y/c  .
""",
        "expect.matrix.80/TCP",
        ["a header line and at least one row"],
        id="header-only",
    ),
    pytest.param(
        """\
    80/TCP: |4
             x/a x/b y/c
        x/a   .   X   .
        x/b   .   .   X
        y/c   X   X   .
""",
        "expect.matrix",
        ["no table for 53/UDP", "one table per probed port"],
        id="missing-table",
    ),
    pytest.param(
        """\
    80/TCP: [x/a]
""",
        "expect.matrix.80/TCP",
        ["got a list", "a table"],
        id="table-not-text",
    ),
    pytest.param(
        """\
    eighty: |4
          x/a
        x/a .
""",
        "expect.matrix.eighty",
        ["'eighty' is not a port"],
        id="table-key-not-a-port",
    ),
]


@pytest.mark.parametrize(("tables", "field", "words"), MATRIX_ERRORS)
def test_matrix_errors(tmp_path: Path, tables: str, field: str, words: list[str]) -> None:
    err = failure(tmp_path, GRID + "expect:\n  matrix:\n" + textwrap.indent(textwrap.dedent(tables), "    "))
    assert_error(err, tmp_path / "scenario.yaml", field, *words)


def test_matrix_table_for_an_unprobed_port(tmp_path: Path) -> None:
    err = failure(
        tmp_path,
        GRID
        + """\
expect:
  ports: [53/UDP]
  matrix:
    53/UDP: |4
            y/c
        x/a  .
        x/b  .
        y/c  .
    80/TCP: |4
             x/a x/b y/c
        x/a   .   X   .
        x/b   .   .   X
        y/c   X   X   .
""",
    )
    assert_error(err, tmp_path / "scenario.yaml", "expect.matrix.80/TCP", "80/TCP is not probed in this step")


def test_matrix_default_is_refused(tmp_path: Path) -> None:
    err = failure(tmp_path, GRID + "expect:\n  default: blocked\n  matrix: {}\n")
    assert_error(err, tmp_path / "scenario.yaml", "expect.default", "default goes with rules only")


# -- policies in files ----------------------------------------------------------------------


def test_policy_file_with_another_kind(tmp_path: Path) -> None:
    policy_file = write(
        tmp_path,
        DENY_DB
        + """\
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: prod}
spec: {ports: [{port: 3306}]}
""",
        "mixed.yaml",
    )
    err = failure(tmp_path, BASE + "policies: [mixed.yaml]\nexpect: {model: true}\n")
    assert_error(err, f"{policy_file} (document 2)", "kind", "expected a NetworkPolicy, got Service")
    # The error also says where the scenario refers to the file.
    assert str(err).endswith(f"; the file is policies[0] of {tmp_path / 'scenario.yaml'}")


def test_policy_path_too_long_for_the_file_system(tmp_path: Path) -> None:
    err = failure(tmp_path, BASE + f"policies: [{'a' * 300}.yaml]\nexpect: {{model: true}}\n")
    assert_error(err, tmp_path / "scenario.yaml", "policies[0].path", "does not exist")


def test_policy_path_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    err = failure(tmp_path, BASE + "policies: [policies]\nexpect: {model: true}\n")
    assert_error(err, tmp_path / "scenario.yaml", "policies[0].path", "policies is a directory", "a YAML file")


def test_policy_file_that_is_empty(tmp_path: Path) -> None:
    write(tmp_path, "# no manifest\n---\n", "empty.yaml")
    err = failure(tmp_path, BASE + "policies: [{path: empty.yaml}]\nexpect: {model: true}\n")
    assert_error(err, tmp_path / "scenario.yaml", "policies[0].path", "empty.yaml holds no manifest")


def test_policy_file_with_yaml_error(tmp_path: Path) -> None:
    policy_file = write(tmp_path, "apiVersion: networking.k8s.io/v1\nkind: [NetworkPolicy\n", "broken.yaml")
    err = failure(tmp_path, BASE + "policies: [broken.yaml]\nexpect: {model: true}\n")
    assert err.source == str(policy_file)
    assert err.field.startswith("line ") and "invalid YAML" in str(err)


def test_policy_file_with_duplicate_key(tmp_path: Path) -> None:
    policy_file = write(tmp_path, DENY_DB + "spec: {podSelector: {}}\n", "dup.yaml")
    err = failure(tmp_path, BASE + "policies: [dup.yaml]\nexpect: {model: true}\n")
    assert_error(err, policy_file, "line 7, column 1", "duplicate key 'spec' (first at line 4)")


def test_invalid_policy_in_a_file_names_file_policy_and_field(tmp_path: Path) -> None:
    policy_file = write(
        tmp_path, DENY_DB.replace("policyTypes: [Ingress]", "ingress: [{ports: [{port: HTTP}]}]"), "policies/deny-db.yaml"
    )
    with pytest.raises(PolicyError) as info:
        load_scenario(write(tmp_path, BASE + "policies: [policies/deny-db.yaml]\nexpect: {model: true}\n"))
    assert_error(
        info.value, policy_file, "spec.ingress[0].ports[0].port", "NetworkPolicy prod/deny-db", "'HTTP' is not a valid port name"
    )
    assert info.value.policy == "prod/deny-db"


def test_invalid_policy_in_a_multi_document_file(tmp_path: Path) -> None:
    policy_file = write(
        tmp_path,
        DENY_DB + "---\n" + DENY_DB.replace("deny-db", "second").replace("policyTypes: [Ingress]", "policyTypes: [Ingres]"),
        "bundle.yaml",
    )
    with pytest.raises(PolicyError) as info:
        load_scenario(write(tmp_path, BASE + "policies: [bundle.yaml]\nexpect: {model: true}\n"))
    assert_error(
        info.value,
        f"{policy_file} (document 2)",
        "spec.policyTypes[0]",
        "NetworkPolicy prod/second",
        "unknown policy type 'Ingres'",
    )


def test_policy_file_without_namespace_and_no_default(tmp_path: Path) -> None:
    policy_file = write(tmp_path, DENY_DB.replace(", namespace: prod", ""), "deny-db.yaml")
    with pytest.raises(PolicyError) as info:
        load_scenario(write(tmp_path, BASE + "policies: [deny-db.yaml]\nexpect: {model: true}\n"))
    assert_error(info.value, policy_file, "metadata.namespace", "no namespace given", "namespace: next to the policy")


def test_invalid_inline_policy_names_the_scenario_field(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_scenario(
            write(
                tmp_path,
                BASE
                + """\
policies:
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: bad-ports, namespace: prod}
    spec:
      podSelector: {}
      ingress: [{ports: [{port: 80, endPort: 79}]}]
expect: {model: true}
""",
            )
        )
    err = info.value
    assert_error(
        err,
        tmp_path / "scenario.yaml",
        "policies[0].spec.ingress[0].ports[0].endPort",
        "NetworkPolicy prod/bad-ports",
        "endPort 79 is smaller than port 80",
    )
    assert err.policy == "prod/bad-ports"
    assert str(err).count("NetworkPolicy prod/bad-ports") == 1


def test_invalid_inline_policy_in_a_step(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_scenario(
            write(
                tmp_path,
                BASE
                + """\
steps:
  - expect: {model: true}
  - apply:
      - apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: p, namespace: prod}
        spec: {podSelector: {matchLabels: {app: [db]}}}
    expect: {model: true}
""",
            )
        )
    assert_error(
        info.value,
        tmp_path / "scenario.yaml",
        "steps[1].apply[0].spec.podSelector.matchLabels.app",
        "NetworkPolicy prod/p",
        "must be a string",
    )


def test_policy_for_an_undeclared_namespace(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_scenario(
            write(tmp_path, BASE + POLICY_INLINE.replace("namespace: prod", "namespace: staging") + "expect: {model: true}\n")
        )
    assert_error(
        info.value,
        tmp_path / "scenario.yaml",
        "metadata.namespace",
        "namespace 'staging' is not declared in the scenario",
        "dev, prod",
    )


# -- multi-step errors ------------------------------------------------------------------------

STEP_ERRORS = [
    pytest.param(
        """\
steps:
  - expect: {model: true}
  - expect: {rules: [{from: '*', to: prod/cache, result: blocked}]}
""",
        "steps[1].expect.rules[0].to",
        ["'prod/cache' matches no pod or external host"],
        id="unknown-pod-in-step",
    ),
    pytest.param(
        """\
steps:
  - {name: one, expect: {model: true}}
  - {name: one, expect: {model: true}}
""",
        "steps[1].name",
        ["step name 'one' is used twice"],
        id="duplicate-step-name",
    ),
    pytest.param(
        """\
steps:
  - {aply: [], expect: {model: true}}
""",
        "steps[0].aply",
        ["unknown field", "apply"],
        id="unknown-step-field",
    ),
    pytest.param(
        """\
steps:
  - {delete: [prod/deny-db], expect: {model: true}}
""",
        "steps[0].delete[0]",
        ["no policy prod/deny-db is in force at this step", "(none applied yet)"],
        id="delete-before-apply",
    ),
    pytest.param(
        """\
steps:
  - apply:
      - {apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: a, namespace: prod}, spec: {}}
    expect: {model: true}
  - {delete: [prod/a], expect: {model: true}}
  - {delete: [prod/a], expect: {model: true}}
""",
        "steps[2].delete[0]",
        ["no policy prod/a is in force"],
        id="delete-twice",
    ),
    pytest.param(
        """\
steps:
  - apply:
      - {apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: a, namespace: prod}, spec: {}}
    expect: {model: true}
  - {delete: [dev/a], expect: {model: true}}
""",
        "steps[1].delete[0]",
        ["no policy dev/a is in force", "one of prod/a"],
        id="delete-wrong-namespace",
    ),
    pytest.param(
        """\
steps:
  - {delete: prod/a, expect: {model: true}}
""",
        "steps[0].delete",
        ["a list"],
        id="delete-not-a-list",
    ),
    pytest.param(
        """\
steps:
  - {label_pods: {prod/cache: {app: cache}}, expect: {model: true}}
""",
        "steps[0].label_pods.prod/cache",
        ["pod 'prod/cache' is not declared"],
        id="label-unknown-pod",
    ),
    pytest.param(
        """\
steps:
  - {label_pods: {db: {app: cache}}, expect: {model: true}}
""",
        "steps[0].label_pods.db",
        ["pod 'db' is not declared", "namespace/pod"],
        id="label-pod-without-namespace",
    ),
    pytest.param(
        """\
steps:
  - {label_namespaces: {staging: {team: a}}, expect: {model: true}}
""",
        "steps[0].label_namespaces.staging",
        ["namespace 'staging' is not declared", "dev, prod"],
        id="label-unknown-namespace",
    ),
    pytest.param(
        """\
steps:
  - {label_namespaces: {prod: {kubernetes.io/metadata.name: other}}, expect: {model: true}}
""",
        "steps[0].label_namespaces.prod.kubernetes.io/metadata.name",
        ["set by the API server"],
        id="label-namespace-name",
    ),
    pytest.param(
        """\
steps:
  - {label_pods: {prod/db: {app: 'not valid'}}, expect: {model: true}}
""",
        "steps[0].label_pods.prod/db.app",
        ["label value 'not valid' is invalid", "null to remove"],
        id="label-invalid-value",
    ),
    pytest.param(
        """\
steps:
  - {label_pods: {prod/db: [app]}, expect: {model: true}}
""",
        "steps[0].label_pods.prod/db",
        ["got a list"],
        id="label-changes-list",
    ),
    pytest.param(
        """\
steps:
  - {label_pods: null, expect: {model: true}}
""",
        "steps[0].label_pods",
        ["got nothing", "a mapping"],
        id="label-pods-null",
    ),
    pytest.param(
        """\
steps:
  - {apply: [missing.yaml], expect: {model: true}}
""",
        "steps[0].apply[0].path",
        ["missing.yaml does not exist"],
        id="step-policy-file-missing",
    ),
    pytest.param(
        """\
steps:
  - {name: '', expect: {model: true}}
""",
        "steps[0].name",
        ["a step name"],
        id="step-name-empty",
    ),
]


@pytest.mark.parametrize(("body", "field", "words"), STEP_ERRORS)
def test_step_errors(tmp_path: Path, body: str, field: str, words: list[str]) -> None:
    err = failure(tmp_path, BASE + body)
    assert_error(err, tmp_path / "scenario.yaml", field, *words)


# == from intent to expected matrix ============================================================


def _plan_and_expect(scenario: Scenario, step_index: int = 0) -> tuple[CellSet, ReachabilityMatrix]:
    """The cells a step probes and its expected matrix, as the loader planned them."""
    plan = scenario.plans[step_index]
    return plan.cells, plan.expected


def _allowed(matrix: ReachabilityMatrix, port: PortProtocol) -> set[tuple[str, str]]:
    return {(c.source, c.destination) for c, o in matrix.cells.items() if c.port == port and o.outcome is Outcome.ALLOWED}


def test_plan_probes_rows_columns_and_cells(tmp_path: Path) -> None:
    scenario = load(
        tmp_path,
        BASE
        + """\
external:
  api: {ip: 203.0.113.10, ports: [443/TCP]}
expect: {model: true}
""",
    )
    topology = scenario.topology
    plan = probe_grid(topology, [P80, P53U])
    assert plan.axes.sources == ("prod/db", "prod/web", "dev/web")
    assert plan.axes.destinations == ("prod/web", "dev/web")  # prod/db and api serve neither port
    assert plan.axes.ports == (P80, P53U)
    assert tuple(plan) == (
        Cell("prod/db", "prod/web", P80),
        Cell("prod/db", "dev/web", P80),
        Cell("prod/web", "dev/web", P80),
        Cell("dev/web", "prod/web", P80),
        Cell("prod/db", "prod/web", P53U),
        Cell("dev/web", "prod/web", P53U),
    )
    with_self = probe_grid(topology, [P53U], probe_self=True)
    assert tuple(with_self) == (
        Cell("prod/db", "prod/web", P53U),
        Cell("prod/web", "prod/web", P53U),
        Cell("dev/web", "prod/web", P53U),
    )
    everything = probe_grid(topology, topology.port_keys())
    assert everything.axes.destinations == ("prod/db", "prod/web", "dev/web", "api")
    assert Cell("dev/web", "api", PortProtocol.parse("443/TCP")) in everything
    assert len(everything) == 2 + 4 + 2 + 3  # 3306, 80, 53/UDP, 443


RULES_TOPOLOGY = GRID.replace("description: matrix test", "description: rules")


def test_last_matching_rule_wins(tmp_path: Path) -> None:
    general_first = load(
        tmp_path,
        RULES_TOPOLOGY
        + """\
expect:
  default: allowed
  rules:
    - {from: "*", to: "x/*", result: blocked}
    - {from: "x/*", to: x/a, result: allowed}
""",
        "a.yaml",
    )
    _, matrix = _plan_and_expect(general_first)
    assert _allowed(matrix, P80) == {("x/b", "x/a"), ("x/a", "y/c"), ("x/b", "y/c")}
    exception_first = load(
        tmp_path,
        RULES_TOPOLOGY
        + """\
expect:
  default: allowed
  rules:
    - {from: "x/*", to: x/a, result: allowed}
    - {from: "*", to: "x/*", result: blocked}
""",
        "b.yaml",
    )
    _, matrix = _plan_and_expect(exception_first)
    assert _allowed(matrix, P80) == {("x/a", "y/c"), ("x/b", "y/c")}


def test_default_outcome_for_unmatched_cells(tmp_path: Path) -> None:
    scenario = load(
        tmp_path,
        RULES_TOPOLOGY
        + """\
expect:
  default: blocked
  rules:
    - {from: x/a, to: y/c, port: 80/TCP, result: allowed}
""",
    )
    plan, matrix = _plan_and_expect(scenario)
    assert set(matrix.cells) == set(plan)
    assert _allowed(matrix, P80) == {("x/a", "y/c")}
    assert _allowed(matrix, P53U) == set()
    assert matrix.count(Outcome.BLOCKED) == len(plan) - 1


@pytest.mark.parametrize(
    ("port", "allowed_80", "allowed_53"),
    [
        ("'*/UDP'", set(), {("x/a", "y/c"), ("x/b", "y/c")}),
        ("'*'", {("x/a", "y/c"), ("x/b", "y/c")}, {("x/a", "y/c"), ("x/b", "y/c")}),
        ("80", {("x/a", "y/c"), ("x/b", "y/c")}, set()),
        ("80/TCP", {("x/a", "y/c"), ("x/b", "y/c")}, set()),
        ("53/UDP", set(), {("x/a", "y/c"), ("x/b", "y/c")}),
    ],
)
def test_port_patterns(tmp_path: Path, port: str, allowed_80: set[tuple[str, str]], allowed_53: set[tuple[str, str]]) -> None:
    scenario = load(
        tmp_path,
        RULES_TOPOLOGY
        + f"""\
expect:
  default: blocked
  rules:
    - {{from: "x/*", to: y/c, port: {port}, result: allowed}}
""",
    )
    _, matrix = _plan_and_expect(scenario)
    assert _allowed(matrix, P80) == allowed_80
    assert _allowed(matrix, P53U) == allowed_53


def test_rule_without_port_matches_every_port(tmp_path: Path) -> None:
    scenario = load(
        tmp_path,
        RULES_TOPOLOGY
        + """\
expect:
  default: allowed
  rules:
    - {from: y/c, to: "*", result: blocked}
""",
    )
    _, matrix = _plan_and_expect(scenario)
    assert _allowed(matrix, P80) == {("x/a", "x/b"), ("x/a", "y/c"), ("x/b", "x/a"), ("x/b", "y/c")}
    assert _allowed(matrix, P53U) == {("x/a", "y/c"), ("x/b", "y/c")}


def test_star_pattern_covers_external_hosts_but_pod_patterns_do_not(tmp_path: Path) -> None:
    scenario = load(
        tmp_path,
        GRID
        + """\
external:
  api: {ip: 203.0.113.10, ports: [80/TCP]}
expect:
  default: allowed
  rules:
    - {from: x/a, to: "*/*", result: blocked}
    - {from: x/b, to: "*", result: blocked}
""",
    )
    _, matrix = _plan_and_expect(scenario)
    assert matrix.allowed("x/a", "api", "80/TCP") is True
    assert matrix.allowed("x/a", "y/c", "80/TCP") is False
    assert matrix.allowed("x/b", "api", "80/TCP") is False
    assert matrix.allowed("y/c", "api", "80/TCP") is True


def test_selector_endpoints_use_the_labels_in_force(tmp_path: Path) -> None:
    scenario = load(tmp_path, MULTI_STEP)
    db = "prod/db"
    # Step 1: no pod is labelled app=api, the allow rule matches nothing.
    _, first = _plan_and_expect(scenario, 0)
    assert {src for src, dst in _allowed(first, P3306) if dst == db} == set()
    # Step 2: dev/web is relabelled app=api; the same rule now matches it.
    _, second = _plan_and_expect(scenario, 1)
    assert {src for src, dst in _allowed(second, P3306) if dst == db} == {"dev/web"}
    assert second.allowed("prod/web", db, P3306) is False


def test_namespace_selector_endpoint(tmp_path: Path) -> None:
    scenario = load(
        tmp_path,
        BASE
        + """\
expect:
  default: allowed
  rules:
    - {from: {namespaceSelector: {matchLabels: {env: prod}}}, to: dev/web, result: blocked}
    - {from: {namespace: "d*", podSelector: {matchExpressions: [{key: app, operator: In, values: [web]}]}},
       to: prod/web, port: 80, result: blocked}
""",
    )
    _, matrix = _plan_and_expect(scenario)
    assert matrix.allowed("prod/web", "dev/web", P80) is False
    assert matrix.allowed("prod/db", "dev/web", P80) is False
    assert matrix.allowed("dev/web", "prod/web", P80) is False
    assert matrix.allowed("prod/db", "prod/web", P80) is True
    assert matrix.allowed("dev/web", "prod/web", P53U) is True


def test_matrix_form_gives_the_table_cells_without_the_diagonal(tmp_path: Path) -> None:
    scenario = load(
        tmp_path,
        GRID
        + """\
expect:
  matrix:
    80/TCP: |4
             y/c x/b x/a
        y/c   .   X   X
        x/a   .   X   X
        x/b   X   .   .
    53/UDP: |4
            y/c
        x/a  .
        x/b  X
        y/c  X
""",
    )
    plan, matrix = _plan_and_expect(scenario)
    assert set(matrix.cells) == set(plan)
    assert Cell("x/a", "x/a", P80) not in matrix.cells
    assert _allowed(matrix, P80) == {("x/a", "y/c"), ("x/b", "x/a")}
    assert _allowed(matrix, P53U) == {("x/a", "y/c")}


def test_matrix_form_with_probe_self_keeps_the_diagonal(tmp_path: Path) -> None:
    scenario = load(
        tmp_path,
        GRID
        + """\
settings: {probe_self: true}
expect:
  ports: [80/TCP]
  matrix:
    80/TCP: |4
             x/a x/b y/c
        x/a   X   .   .
        x/b   .   .   .
        y/c   .   .   X
""",
    )
    _, matrix = _plan_and_expect(scenario)
    assert matrix.allowed("x/a", "x/a", P80) is False
    assert matrix.allowed("x/b", "x/b", P80) is True
    assert matrix.allowed("y/c", "y/c", P80) is False


def test_model_form_follows_the_policies_in_force(tmp_path: Path) -> None:
    scenario = load(tmp_path, MULTI_STEP)
    _, after_relabel = _plan_and_expect(scenario, 1)
    # db-from-api admits app=api pods from team=payments namespaces: dev/web after step 2.
    state = scenario.plans[1].state
    plan = plan_step("check", state, scenario.steps[2].expect, scenario.settings.implementation, "<test>")
    assert {src for src, dst in _allowed(plan.expected, P3306) if dst == "prod/db"} == {"dev/web"}
    assert {src for src, dst in _allowed(after_relabel, P3306) if dst == "prod/db"} == {"dev/web"}
    # Step 3 deletes both policies: everything is open again.
    plan3, lifted = _plan_and_expect(scenario, 2)
    assert lifted.count(Outcome.ALLOWED) == len(plan3)
