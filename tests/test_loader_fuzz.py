"""Fuzzing the scenario loader: whatever a file holds, loading it either succeeds or
raises ScenarioError (a message for the user), never another exception."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from harness.core.errors import ScenarioError
from harness.scenario import Scenario, load_scenario, parse_scenario
from harness.scenario.yamlload import load_all, load_one
from tests.mutations import mutate

#: Raise with NETPOL_FUZZ_EXAMPLES=20000 to hunt for bugs; the default keeps CI fast and stable.
FUZZ = settings(
    max_examples=int(os.environ.get("NETPOL_FUZZ_EXAMPLES", "200")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

POLICY_FILE = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-db}
spec: {podSelector: {matchLabels: {app: db}}, policyTypes: [Ingress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: dns-egress, namespace: prod}
spec:
  podSelector: {}
  egress: [{ports: [{port: 53, protocol: UDP}, {port: dns-tcp}]}]
"""

#: Uses every part of the format, so that mutations reach every parser.
VALID_SCENARIO = """\
name: fuzz-seed
description: Every feature of the scenario format.
tags: [fuzz, seed]
xfail:
  reason: documented pitfall
  actual:
    isolate: {model: true}
    relabel:
      ports: [80/TCP]
      matrix:
        80/TCP: |4
                prod/web dev/web api
            prod/db    X       X    X
            prod/web   -       .    .
            dev/web    X       .    .
settings: {self_traffic: allowed, ipblock_matches_pods: true, probe_self: false}
namespaces:
  prod:
    labels: {env: prod, team: payments}
    pods:
      db: {labels: {app: db}, ports: [5432/TCP, {port: 53, protocol: TCP, name: dns-tcp}]}
      web: {labels: {app: web, tier: front}, ports: [80/TCP, 53/UDP, 8080]}
  dev:
    pods:
      web: {labels: {app: web}, ports: [80/TCP, {port: 9000, protocol: SCTP, name: sctp}]}
external:
  api: {ip: 203.0.113.10, ports: [443/TCP, 80/TCP]}
steps:
  - name: isolate
    apply:
      - {path: policies.yaml, namespace: prod}
      - apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: web-in, namespace: prod}
        spec:
          podSelector: {matchExpressions: [{key: app, operator: In, values: [web]}]}
          policyTypes: [Ingress, Egress]
          ingress:
            - from:
                - {namespaceSelector: {matchLabels: {env: dev}}, podSelector: {matchLabels: {app: web}}}
                - {ipBlock: {cidr: 192.168.0.0/16, except: [192.168.2.0/24]}}
              ports: [{port: 80}, {port: 8000, endPort: 8080}, {protocol: UDP}]
          egress:
            - to: [{namespaceSelector: {}}, {ipBlock: {cidr: 203.0.113.0/24}}]
            - ports: [{port: http}]
    expect:
      default: allowed
      rules:
        - {from: "*", to: prod/db, result: blocked}
        - from: {namespace: prod, podSelector: {matchLabels: {app: web}}}
          to: [prod/db, api]
          port: 5432/TCP
          result: allowed
        - {from: {namespaceSelector: {matchExpressions: [{key: env, operator: DoesNotExist}]}}, to: "*",
           port: "*/UDP", result: blocked}
  - name: relabel
    label_namespaces: {dev: {env: dev, team: null}}
    label_pods: {dev/web: {app: api}, prod/web: {tier: null}}
    expect:
      ports: [80/TCP]
      matrix:
        80/TCP: |4
                prod/web dev/web api
            prod/db    .       .    .
            prod/web   .       X    .
            dev/web    X       .    X
  - delete: [prod/web-in]
    expect: {model: true}
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("fuzz")
    (directory / "policies.yaml").write_text(POLICY_FILE)
    return directory


def seed_document(workdir: Path) -> dict[str, Any]:
    doc = yaml.safe_load(VALID_SCENARIO)
    assert isinstance(doc, dict)
    return doc


def test_the_seed_is_valid(workdir: Path) -> None:
    path = workdir / "seed.yaml"
    path.write_text(VALID_SCENARIO)
    scenario = load_scenario(path)
    assert [s.name for s in scenario.steps] == ["isolate", "relabel", "step-3"]
    assert [p.ref for p in scenario.steps[0].changes.apply] == ["prod/deny-db", "prod/dns-egress", "prod/web-in"]
    assert [p.documented is not None for p in scenario.plans] == [True, True, False]


def _load_text(workdir: Path, text: str | bytes) -> Scenario | None:
    path = workdir / "fuzz.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        return load_scenario(path)
    except ScenarioError as err:
        # A user-facing error names its source and renders without failing.
        assert err.source == str(path) or err.source.startswith(str(workdir))
        assert str(err)
        return None


# -- (a) random text ---------------------------------------------------------------------------

# fmt: off
YAML_PIECES = [
    "description: x", "namespaces:", "  prod:", "    pods:", "      db:", "        ports: [80/TCP]",
    "expect: {model: true}", "steps:", "- ", "  - ", "{", "}", "[", "]", ": ", ",", "\n", "  ", "    ", "\t", "#",
    "&a ", "*a", "<<: *a", "<<: [*a, *a]", "---", "...", "%YAML 1.1", "%TAG ! tag:x,2000:", "? ", "|", "|4", ">-",
    "'", '"', "\\", "!!binary aGk=", "!!python/object:os.system", "!!set {a, b}", "!!omap [a: 1]",
    "!!timestamp 2001-02-30", "2001-12-14t21:59:43.10-05:00", "0x1F", "0o17", "1e400", "-.inf", ".nan", "~", "null",
    "yes", "on", "=", "1_000", "12:30:00", "80/TCP", "x/a", "*", "*/UDP", "matrix:", "rules:", "from: '*'", "to: x/a",
    "result: allowed", "labels: {app: web}", "\u00e9", "\ufeff", "\x85", "\u2028",
]
# fmt: on

yaml_like_text = st.lists(st.sampled_from(YAML_PIECES) | st.text(max_size=8), max_size=40).map("".join)


@FUZZ
@given(text=st.text(max_size=300))
def test_random_text_raises_only_scenario_error(workdir: Path, text: str) -> None:
    _load_text(workdir, text)


@FUZZ
@given(text=yaml_like_text)
@example(text="description: !!timestamp 2001-02-30description")  # a tagged scalar the resolver cannot read
def test_yaml_like_text_raises_only_scenario_error(workdir: Path, text: str) -> None:
    _load_text(workdir, text)


@FUZZ
@given(data=st.binary(max_size=200))
def test_random_bytes_raise_only_scenario_error(workdir: Path, data: bytes) -> None:
    _load_text(workdir, data)


@FUZZ
@given(cut=st.integers(0, len(VALID_SCENARIO)), junk=st.sampled_from(YAML_PIECES))
def test_cut_and_spliced_seed_raises_only_scenario_error(workdir: Path, cut: int, junk: str) -> None:
    _load_text(workdir, VALID_SCENARIO[:cut] + junk + VALID_SCENARIO[cut:])
    _load_text(workdir, VALID_SCENARIO[:cut])


@FUZZ
@given(text=yaml_like_text)
@example(text="kind: !!timestamp yesterday")
def test_policy_documents_raise_only_scenario_error(text: str) -> None:
    try:
        load_all(text, "fuzz-policies.yaml")
        load_one(text, "fuzz.yaml")
    except ScenarioError as err:
        assert err.source in ("fuzz-policies.yaml", "fuzz.yaml")


# -- (b) structured documents ------------------------------------------------------------------

# fmt: off
KEYS = [
    "name", "description", "tags", "xfail", "settings", "namespaces", "external", "policies", "expect", "steps",
    "labels", "pods", "ports", "port", "protocol", "ip", "path", "namespace", "apply", "delete", "label_namespaces",
    "label_pods", "default", "rules", "matrix", "model", "from", "to", "result", "podSelector", "namespaceSelector",
    "matchLabels", "matchExpressions", "key", "operator", "values", "apiVersion", "kind", "metadata", "spec",
    "policyTypes", "ingress", "egress", "ipBlock", "cidr", "except", "endPort", "self_traffic", "probe_self",
    "ipblock_matches_pods", "prod", "dev", "x/a", "prod/db", "80/TCP",
]
# fmt: on
# fmt: off
STRINGS = [
    "", "*", "x/a", "prod/db", "prod/*", "80/TCP", "53/UDP", "*/UDP", "9000/SCTP", "80", "0/TCP", "70000", "allowed",
    "blocked", "Ingress", "Egress", "In", "NotIn", "Exists", "DoesNotExist", "TCP", "UDP", "networking.k8s.io/v1",
    "NetworkPolicy", "192.168.0.0/16", "203.0.113.10", "10.0.0.0/33", "policies.yaml", "missing.yaml", "../", "/",
    "a" * 300, "web\n", "x\x00y", "policy", "http", "|", ".", "X",
]
# fmt: on

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(STRINGS)
    | st.text(max_size=12)
)
keys = st.sampled_from(KEYS) | st.text(max_size=8) | st.integers(-3, 3) | st.none() | st.booleans()
junk = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=25,
)


@st.composite
def mutated_seed(draw: st.DrawFn, seed: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = mutate(draw, seed, draw(st.integers(1, 4)), junk, keys)
    return doc


def _parse(workdir: Path, doc: Any) -> None:
    try:
        parse_scenario(doc, workdir / "fuzz.yaml")
    except ScenarioError as err:
        assert str(err)


@FUZZ
@given(doc=junk)
def test_random_documents_raise_only_scenario_error(workdir: Path, doc: Any) -> None:
    _parse(workdir, doc)


@FUZZ
@given(doc=st.dictionaries(st.sampled_from(KEYS), junk, max_size=8))
@example(  # a policy path longer than the file system accepts
    doc={"description": "x", "namespaces": {"x": {"pods": {"a": {}}}}, "policies": ["a" * 300], "expect": {"model": True}}
)
def test_random_top_level_mappings_raise_only_scenario_error(workdir: Path, doc: Any) -> None:
    _parse(workdir, doc)


@FUZZ
@given(data=st.data())
def test_mutated_seed_raises_only_scenario_error(workdir: Path, data: st.DataObject) -> None:
    doc = data.draw(mutated_seed(seed_document(workdir)))
    _parse(workdir, doc)


@FUZZ
@given(data=st.data())
def test_mutated_seed_through_yaml_raises_only_scenario_error(workdir: Path, data: st.DataObject) -> None:
    doc = data.draw(mutated_seed(seed_document(workdir)))
    try:
        text = yaml.safe_dump(doc, allow_unicode=True)
    except yaml.YAMLError:
        assume(False)
    _load_text(workdir, text)
