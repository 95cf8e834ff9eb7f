"""Shared scenario projects for the reporting tests (all on the model backend)."""

from __future__ import annotations

from pathlib import Path

import pytest

#: Extra plugin arguments of the runs under test (the reports come with harness.plugin).
PLUGIN: tuple[str, ...] = ()

#: Unrelated plugins installed alongside: the in-process runs under test would
#: import them afresh every time (pytester restores sys.modules after each run).
UNRELATED_PLUGINS = ("-p", "no:hypothesispytest", "-p", "no:benchmark", "-p", "no:pytest-kind-ng")

# Six probes: on 80/TCP web → client, api → web, api → client, client → web; on
# 8080/TCP web → api and client → api. With PEER = WEB_PEER the intent holds (only
# client → api is blocked).
SHOP = """\
description: The api accepts 8080/TCP from the web pod only.
tags: [reporting]
namespaces:
  shop:
    pods:
      web: {labels: {app: web}, ports: [80/TCP]}
      api: {labels: {app: api}, ports: [8080/TCP]}
  tools:
    pods:
      client: {labels: {app: client}, ports: [80/TCP]}
policies:
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata:
      name: api-from-web
      namespace: shop
      annotations: {note: "<b>only web</b> & friends"}
    spec:
      podSelector: {matchLabels: {app: api}}
      policyTypes: [Ingress]
      ingress:
        - from: [PEER]
          ports: [{port: 8080}]
expect:
  default: allowed
  rules:
    - {from: "*", to: shop/api, result: blocked}
    - {from: shop/web, to: shop/api, port: 8080/TCP, result: allowed}
"""

WEB_PEER = "{podSelector: {matchLabels: {app: web}}}"
# Admits the tools namespace instead of the web pod: web → api becomes blocked and
# client → api allowed, two wrong (and two changed) cells.
TOOLS_PEER = "{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: tools}}}"

# The same topology with its policy in a separate file and the reference model as
# the expectation: the intent always holds on the model backend, so only a change
# against a baseline can fail it.
SHOP_FROM_FILE = """\
description: The api's policy lives in policies/api.yaml; the model is the intent.
namespaces:
  shop:
    pods:
      web: {labels: {app: web}, ports: [80/TCP]}
      api: {labels: {app: api}, ports: [8080/TCP]}
  tools:
    pods:
      client: {labels: {app: client}, ports: [80/TCP]}
policies:
  - policies/api.yaml
expect: {model: true}
"""

API_POLICY_FILE = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-from-web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Ingress]
  ingress:
    - from: [PEER]
      ports: [{port: 8080}]
"""

OPEN = """\
description: No policy; everything reaches everything.
namespaces:
  x: {pods: {a: {ports: [80/TCP]}, b: {ports: [80/TCP]}}}
expect: {default: allowed, rules: []}
"""


class Project:
    """A pytester directory with a ``scenarios`` directory and helpers to run it."""

    WEB_PEER = WEB_PEER
    TOOLS_PEER = TOOLS_PEER

    def __init__(self, pytester: pytest.Pytester) -> None:
        self.pytester = pytester
        pytester.makeini("[pytest]\nnetpol_scenarios = scenarios\n")
        self.scenarios = pytester.mkdir("scenarios")

    @property
    def path(self) -> Path:
        return self.pytester.path

    def shop(self, peer: str = WEB_PEER, name: str = "shop") -> Path:
        path = self.scenarios / f"{name}.yaml"
        path.write_text(SHOP.replace("PEER", peer))
        return path

    def shop_from_file(self, peer: str = WEB_PEER) -> Path:
        (self.scenarios / "policies").mkdir(exist_ok=True)
        (self.scenarios / "policies" / "api.yaml").write_text(API_POLICY_FILE.replace("PEER", peer))
        path = self.scenarios / "shop-from-file.yaml"
        path.write_text(SHOP_FROM_FILE)
        return path

    def open(self) -> Path:
        path = self.scenarios / "open.yaml"
        path.write_text(OPEN)
        return path

    def run(self, *args: str, paths: tuple[str, ...] = ("scenarios",)) -> pytest.RunResult:
        return self.pytester.runpytest(*PLUGIN, *UNRELATED_PLUGINS, "--backend", "model", "-p", "no:cacheprovider", *args, *paths)

    def output(self, result: pytest.RunResult) -> str:
        return "\n".join(result.outlines)


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Project:
    # A CI job running this suite has its own step summary: the runs under test
    # must not write to it.
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    # Wide enough that the summary table keeps each scenario on one line.
    monkeypatch.setenv("COLUMNS", "160")
    return Project(pytester)
