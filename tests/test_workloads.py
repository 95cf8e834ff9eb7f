"""Topology from workload manifests (``workloads:``), Services and names in the
scenario format, ``python -m harness init`` and ``--update-expectations``.

Everything here is real: manifest files written to a temporary directory, the
loader, the reference model, kubectl's own kustomize (when kubectl is installed),
the command line run as a process.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.backends.model import ModelBackend
from harness.core.errors import ScenarioError
from harness.core.matrix import Observation, Outcome, ReachabilityMatrix
from harness.core.services import ServicePort
from harness.core.topology import PortProtocol, PortSpec, Protocol
from harness.engine.pipeline import Pipeline
from harness.engine.verdict import Status, judge
from harness.scenario import load_scenario
from harness.scenario.update import update_expectations

ROOT = Path(__file__).resolve().parent.parent
SHOP = ROOT / "scenarios" / "workloads" / "shop"

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  replicas: 3
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api, tier: backend}}
    spec:
      containers:
        - name: api
          image: example/api
          ports: [{name: http, containerPort: 8000}, {containerPort: 53, protocol: UDP}]
      initContainers:
        - {name: proxy, image: example/proxy, restartPolicy: Always, ports: [{name: admin, containerPort: 15000}]}
        - {name: migrate, image: example/migrate, ports: [{containerPort: 9999}]}
---
apiVersion: v1
kind: Service
metadata: {name: api}
spec:
  selector: {app: api}
  ports: [{name: web, port: 80, targetPort: http}, {name: dns, port: 5353, targetPort: 53, protocol: UDP}]
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def scenario(tmp_path: Path, body: str) -> Path:
    return write(tmp_path / "scenario.yaml", "description: test\n" + textwrap.dedent(body))


def run_on_model(path: Path) -> Status:
    with ModelBackend() as backend:
        return judge(Pipeline(backend).run_scenario(load_scenario(path))).status


def test_workloads_become_pods_with_template_labels_and_container_ports(tmp_path: Path) -> None:
    write(tmp_path / "deploy" / "api.yaml", DEPLOYMENT)
    write(
        tmp_path / "deploy" / "more.yaml",
        """\
        apiVersion: v1
        kind: Namespace
        metadata: {name: prod, labels: {env: prod}}
        ---
        apiVersion: batch/v1
        kind: CronJob
        metadata: {name: report}
        spec:
          schedule: "@daily"
          jobTemplate:
            spec:
              template:
                metadata: {labels: {app: report}}
                spec: {containers: [{name: r, image: example/r}]}
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: settings}
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: idle}
        spec:
          replicas: 0
          template: {metadata: {labels: {app: idle}}, spec: {containers: [{name: i, image: x}]}}
        """,
    )
    path = scenario(tmp_path, "workloads: [{path: deploy/, namespace: prod}]\nexpect: {model: true}\n")
    loaded = load_scenario(path)
    topology = loaded.topology
    assert [ns.name for ns in topology.namespaces] == ["prod"]
    assert topology.namespace("prod").labels["env"] == "prod"
    api = topology.pod("prod/api")  # one probe pod for three replicas
    assert dict(api.labels) == {"app": "api", "tier": "backend"}
    # The native sidecar's port counts; the ordinary init container's does not.
    assert api.ports == (PortSpec(8000, Protocol.TCP, "http"), PortSpec(53, Protocol.UDP), PortSpec(15000, Protocol.TCP, "admin"))
    assert topology.pod("prod/report").ports == ()
    assert not topology.has_endpoint("prod/idle")
    service = topology.service("prod/svc:api")
    assert service.ports == (ServicePort(80, Protocol.TCP, "http", "web"), ServicePort(5353, Protocol.UDP, 53, "dns"))
    assert loaded.notes == (
        "workloads: ignored 2 manifest(s) the harness does not model: ConfigMap settings, "
        "Deployment prod/idle (replicas: 0, no pod runs)",
    )


def test_hand_declared_namespaces_pods_and_services_override_the_manifests(tmp_path: Path) -> None:
    write(tmp_path / "deploy.yaml", DEPLOYMENT.replace("metadata: {name: api}", "metadata: {name: api, namespace: prod}"))
    path = scenario(
        tmp_path,
        """\
        workloads: [deploy.yaml]
        namespaces:
          prod:
            labels: {env: production}
            pods:
              api: {labels: {app: api, hand: "yes"}, ports: [{port: 8000, name: http}]}
              client: {labels: {app: client}}
            services:
              api: {selector: {app: api}, ports: [80]}
        expect: {model: true}
        """,
    )
    topology = load_scenario(path).topology
    assert topology.namespace("prod").labels["env"] == "production"
    assert topology.pod("prod/api").labels["hand"] == "yes"
    assert [p.id for p in topology.pods] == ["prod/api", "prod/client"]
    assert topology.service("prod/svc:api").ports == (ServicePort(80),)


@pytest.mark.parametrize(
    ("manifest", "field", "words"),
    [
        ("kind: Deployment\napiVersion: apps/v1\nmetadata: {name: a}\n", "spec", "required field is missing"),
        (
            "kind: Pod\napiVersion: v1\nmetadata: {name: a}\nspec:\n  containers: [{name: c, ports: [{containerPort: 0}]}]\n",
            "spec.containers[0].ports[0].containerPort",
            "a port number 1-65535",
        ),
        (
            "kind: Pod\napiVersion: v1\nmetadata: {name: a, namespace: other}\nspec: {containers: []}\n",
            "metadata.namespace",
            "differs from the entry's namespace 'prod'",
        ),
        ("kind: Pod\napiVersion: v1\nmetadata: {name: My.Pod}\nspec: {containers: []}\n", "metadata.name", "not a DNS label"),
        (
            "kind: Service\napiVersion: v1\nmetadata: {name: s}\n"
            "spec: {selector: {a: b}, ports: [{port: 80, targetPort: Web}]}\n",
            "spec.ports[0].targetPort",
            "not a valid port name",
        ),
    ],
    ids=["no-template", "bad-port", "namespace-mismatch", "bad-name", "bad-target-port"],
)
def test_manifest_errors_name_the_file_and_the_field(tmp_path: Path, manifest: str, field: str, words: str) -> None:
    bad = write(tmp_path / "deploy" / "bad.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n---\n" + manifest)
    path = scenario(tmp_path, "workloads: [{path: deploy/bad.yaml, namespace: prod}]\nexpect: {model: true}\n")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value).startswith(f"{bad}: document 2.{field}:"), str(caught.value)
    assert words in str(caught.value)


def test_two_workloads_of_one_name_are_an_error_naming_both_files(tmp_path: Path) -> None:
    pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\nspec: {containers: []}\n"
    write(tmp_path / "d" / "one.yaml", pod)
    write(tmp_path / "d" / "two.yaml", pod.replace("kind: Pod", "kind: Pod"))
    with pytest.raises(
        ScenarioError, match="two.yaml: metadata.name: a probe pod x/a already stands for a workload of .*one.yaml"
    ):
        load_scenario(scenario(tmp_path, "workloads: [d/]\nexpect: {model: true}\n"))


def test_kustomize_entry_renders_with_kubectl_or_says_it_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "base" / "api.yaml", DEPLOYMENT)
    write(tmp_path / "base" / "kustomization.yaml", "resources: [api.yaml]\nnamespace: prod\ncommonLabels: {team: core}\n")
    path = scenario(tmp_path, "workloads: [{kustomize: base}]\nnamespaces: {prod: {pods: {client: {}}}}\nexpect: {model: true}\n")
    if shutil.which("kubectl") is not None:
        topology = load_scenario(path).topology
        # kustomize set the namespace and added its label to the pod template.
        assert topology.pod("prod/api").labels["team"] == "core"
        assert topology.service("prod/svc:api").selector["team"] == "core"
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(ScenarioError, match=r"workloads\[0\].kustomize: rendering a kustomization needs kubectl on PATH"):
        load_scenario(path)


def test_service_and_name_destinations_in_rules_and_results(tmp_path: Path) -> None:
    path = scenario(
        tmp_path,
        """\
        namespaces:
          web: {pods: {client: {labels: {app: client}}}}
          api:
            pods:
              stable: {labels: {app: api, track: stable}, ports: [{port: 8000, name: http}]}
              canary: {labels: {app: api, track: canary}, ports: [{port: 9000, name: http}]}
            services:
              api: {selector: {app: api}, ports: [{port: 80, targetPort: http}]}
              nobody: {selector: {app: none}, ports: [81]}
          kube-system:
            pods: {coredns: {labels: {k8s-app: kube-dns}, ports: [53/UDP]}}
        settings: {probe_names: true}
        policies:
          - apiVersion: networking.k8s.io/v1
            kind: NetworkPolicy
            metadata: {name: stable-only, namespace: api}
            spec:
              podSelector: {matchLabels: {track: canary}}
              policyTypes: [Ingress]
        expect:
          default: allowed
          rules:
            - {from: "*", to: api/canary, result: blocked}
            - {from: "*", to: [api/svc:api, api.api.svc.cluster.local], result: partial}
            - {from: api/stable, to: [api/svc:api, api.api], result: blocked}
            - {from: api/canary, to: [api/svc:api, api.api], result: allowed}
            - {from: "*", to: [api/svc:nobody, nobody.api], result: refused}
        """,
    )
    loaded = load_scenario(path)
    model = loaded.plans[0].model
    assert model.get("web/client", "api/svc:api", "80/TCP") is not None
    partial = model.get("web/client", "api/svc:api", "80/TCP")
    assert partial is not None and partial.outcome is Outcome.PARTIAL
    assert partial.detail == "allowed by api/stable; blocked by api/canary"
    # The DNS pod does not resolve through itself: its name cells are not probed.
    assert model.get("kube-system/coredns", "api.api", "80/TCP") is None
    assert model.get("kube-system/coredns", "api/svc:api", "80/TCP") is not None
    assert run_on_model(path) is Status.PASSED


def test_names_need_a_dns_pod(tmp_path: Path) -> None:
    path = scenario(
        tmp_path,
        """\
        namespaces:
          x:
            pods: {a: {}, b: {labels: {app: b}, ports: [80]}}
            services: {b: {selector: {app: b}, ports: [80]}}
        settings: {probe_names: true}
        expect: {model: true}
        """,
    )
    with pytest.raises(ScenarioError, match="settings.probe_names: names are resolved by the cluster DNS"):
        load_scenario(path)


def test_shop_scenario_from_manifests_passes_on_the_model() -> None:
    path = ROOT / "scenarios" / "shop-services.yaml"
    assert {p.id for p in load_scenario(path).topology.pods} >= {"shop/backend", "shop/database", "storefront/frontend"}
    assert run_on_model(path) is Status.PASSED


def test_init_prints_a_scenario_that_passes_on_the_model_as_printed(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "harness", "init", str(SHOP), "--policies", str(ROOT / "scenarios" / "policies" / "shop")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    target = ROOT / "scenarios" / "generated-shop-test.yaml"
    try:
        target.write_text(out.stdout)
        loaded = load_scenario(target)
        assert loaded.name == "shop"
        assert "workloads/shop" in out.stdout and "policies/shop/allow-dns-egress.yaml" in out.stdout
        # The model's matrix, as comments: the frontend's name lookups after the fix.
        assert "#   8001/TCP" in out.stdout
        assert run_on_model(target) is Status.PASSED
    finally:
        target.unlink(missing_ok=True)


def test_update_expectations_rewrites_rules_and_matrices_keeping_comments(tmp_path: Path) -> None:
    path = scenario(
        tmp_path,
        """\
        # my scenario
        namespaces:
          x:
            pods:
              a: {labels: {app: a}, ports: [80]}
              b: {labels: {app: b}, ports: [80]}
        steps:
          - name: rules
            expect:
              default: allowed  # what I think
              rules:
                - {from: x/a, to: x/b, result: blocked}
          - name: table
            expect:
              matrix:
                80/TCP: |4
                        x/a x/b
                    x/a  -   X
                    x/b  X   -
        """,
    )
    loaded = load_scenario(path)
    observed = {plan.name: plan.model for plan in loaded.plans}  # no policy: everything allowed
    update = update_expectations(loaded, observed)
    assert dict(update.changed) == {"rules": 1, "table": 2}
    text = path.read_text()
    assert text.startswith("description: test\n# my scenario\n")
    assert "default: allowed  # what I think" in text
    assert "- {from: x/a, to: x/b, port: 80/TCP, result: allowed}" in text
    again = load_scenario(path)
    for plan in again.plans:
        assert plan.expected == plan.model.without_commands(), plan.name
    assert not update_expectations(again, {p.name: p.model for p in again.plans}).written


def test_update_expectations_leaves_xfail_scenarios_and_non_intents_alone(tmp_path: Path) -> None:
    library = load_scenario(ROOT / "scenarios" / "pitfall-service-name-needs-dns.yaml")
    assert update_expectations(library, {}).skipped == ("an expected failure documents its wrong cells by hand",)
    path = scenario(tmp_path, "namespaces: {x: {pods: {a: {ports: [80]}, b: {ports: [80]}}}}\nexpect: {default: allowed}\n")
    loaded = load_scenario(path)
    plan = loaded.plans[0]
    errors = plan.model.with_cells({c: _error() for c in plan.model})
    update = update_expectations(loaded, {plan.name: errors})
    assert not update.written and "is no intent" in update.skipped[0]


def _error() -> Observation:
    return Observation(Outcome.ERROR, "boom")


def test_rules_match_service_columns_by_pattern(tmp_path: Path) -> None:
    path = scenario(
        tmp_path,
        """\
        namespaces:
          x:
            pods: {a: {}, b: {labels: {app: b}, ports: [8000]}}
            services: {b: {selector: {app: b}, ports: [{port: 80, targetPort: 8000}]}}
        expect:
          default: allowed
          rules: [{from: "*", to: "x/*", port: 80/TCP, result: blocked}]
        """,
    )
    plan = load_scenario(path).plans[0]
    assert plan.expected.get("x/a", "x/svc:b", PortProtocol(80, Protocol.TCP)) is not None
    assert isinstance(plan.expected, ReachabilityMatrix)
    assert run_on_model(path) is Status.FAILED  # nothing isolates x/b: the Service is open


def test_update_expectations_through_pytest_then_the_scenario_passes(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # this checkout's harness in the pytest process
    path = pytester.path / "scenarios" / "open.yaml"
    write(
        path,
        """\
        description: nothing isolates x/b, but its author believes otherwise
        namespaces:
          x:
            pods:
              a: {labels: {app: a}, ports: [80]}
              b: {labels: {app: b}, ports: [80]}
        expect:
          default: allowed
          rules:
            - {from: x/a, to: x/b, result: blocked}  # the belief
        """,
    )
    first = pytester.runpytest_subprocess(str(path), "--backend", "model", "--update-expectations", "-p", "no:cacheprovider")
    first.assert_outcomes(failed=1)  # this run still judges the old intent
    assert any("expectations updated in main (1 cell(s))" in line for line in first.outlines)
    assert "    - {from: x/a, to: x/b, port: 80/TCP, result: allowed}\n" in path.read_text()
    assert "# the belief" in path.read_text()
    pytester.runpytest_subprocess(str(path), "--backend", "model", "-p", "no:cacheprovider").assert_outcomes(passed=1)
