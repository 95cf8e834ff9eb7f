"""Calico's staged policies: what the harness accepts, what it rejects (naming the file,
the policy and the field), what enforcing them changes, and their translation into
NetworkPolicies, checked cell by cell against a direct reading of Calico's semantics.

The three sample manifests are recorded from Calico's documentation
(tigera/docs ``calico_versioned_docs/version-3.30/network-policy/staged-network-policies.mdx``);
the first two are renamed without their ``default.`` tier prefix, which the harness
does not accept (see docs/staged-policies.md).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.core.addressing import plan_addresses
from harness.core.calico.conversion import model_policies, to_network_policies
from harness.core.calico.enforcement import Effect, EnforcedPolicies, enforce, kubernetes_key, promote
from harness.core.calico.labels import (
    LABEL_NAME,
    LABEL_NAMESPACE,
    LABEL_ORCHESTRATOR,
    LABEL_SERVICE_ACCOUNT,
    NAMESPACE_PREFIX,
)
from harness.core.calico.policy import (
    CalicoPolicy,
    CalicoRule,
    EnforcedKind,
    PolicyKey,
    StagedAction,
    StagedKind,
    StagedPolicy,
    check_unique,
    is_staged,
    parse_staged_policy,
    rename_namespaces,
)
from harness.core.errors import HarnessError, PolicyError
from harness.core.policy import NetworkPolicy, PolicyType, parse_policy
from harness.core.topology import (
    ExternalHost,
    NamespaceSpec,
    PodSpec,
    PortProtocol,
    PortSpec,
    Protocol,
    Topology,
)
from harness.model import ReferenceModel

SOURCE = "policies/staged.yaml"

DOCS_SAMPLES = """
apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata:
  name: allow-tcp-6379
spec:
  tier: default
  selector: role == 'database'
  types:
    - Ingress
    - Egress
  ingress:
    - action: Allow
      protocol: TCP
      source:
        selector: role == 'frontend'
      destination:
        ports:
          - 6379
  egress:
    - action: Allow
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata:
  name: allow-tcp-6379
  namespace: default
spec:
  tier: default
  selector: role == 'database'
  types:
    - Ingress
    - Egress
  ingress:
    - action: Allow
      protocol: TCP
      source:
        selector: role == 'frontend'
      destination:
        ports:
          - 6379
  egress:
    - action: Allow
---
apiVersion: projectcalico.org/v3
kind: StagedKubernetesNetworkPolicy
metadata:
  name: test-network-policy
  namespace: default
spec:
  podSelector:
    matchLabels:
      role: db
  policyTypes:
    - Ingress
    - Egress
  ingress:
    - from:
        - ipBlock:
            cidr: 172.17.0.0/16
            except:
              - 172.17.1.0/24
        - namespaceSelector:
            matchLabels:
              project: myproject
        - podSelector:
            matchLabels:
              role: frontend
      ports:
        - protocol: TCP
          port: 6379
  egress:
    - to:
        - ipBlock:
            cidr: 10.0.0.0/24
      ports:
        - protocol: TCP
          port: 5978
"""


def staged(
    kind: str = "StagedNetworkPolicy", spec: Any = None, *, name: Any = "p", namespace: Any = "x", **top: Any
) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if name is not None:
        meta["name"] = name
    if namespace is not None:
        meta["namespace"] = namespace
    doc: dict[str, Any] = {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": meta, "spec": spec or {}}
    doc.update(top)
    return doc


def calico(spec: Mapping[str, Any], *, glob: bool = False, name: str = "p", namespace: str = "x") -> StagedPolicy:
    kind = "StagedGlobalNetworkPolicy" if glob else "StagedNetworkPolicy"
    return parse_staged_policy(staged(kind, dict(spec), name=name, namespace=None if glob else namespace), SOURCE)


def rejection(manifest: Any, default_namespace: str | None = None) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        parse_staged_policy(manifest, SOURCE, default_namespace)
    return info.value


# -- accepted -----------------------------------------------------------------------


def test_the_documented_samples_parse() -> None:
    sgnp, snp, sknp = (parse_staged_policy(doc, SOURCE) for doc in yaml.safe_load_all(DOCS_SAMPLES))
    assert (sgnp.kind, sgnp.namespace, sgnp.name, sgnp.action) == (
        StagedKind.STAGED_GLOBAL_NETWORK_POLICY,
        None,
        "allow-tcp-6379",
        StagedAction.SET,
    )
    assert sgnp.target == PolicyKey(EnforcedKind.CALICO_GLOBAL_NETWORK_POLICY, None, "allow-tcp-6379")
    assert str(sgnp.target) == "GlobalNetworkPolicy allow-tcp-6379"
    assert str(snp) == "StagedNetworkPolicy default/allow-tcp-6379"
    assert str(snp.target) == "projectcalico.org/v3 NetworkPolicy default/allow-tcp-6379"
    assert isinstance(snp.enforced, CalicoPolicy)
    assert snp.enforced.types == {PolicyType.INGRESS, PolicyType.EGRESS}
    (rule,) = snp.enforced.ingress
    assert rule.protocol is Protocol.TCP and [(p.first, p.last) for p in rule.ports] == [(6379, 6379)]
    assert rule.peer.selector is not None and rule.peer.selector.matches({"role": "frontend"})
    assert snp.enforced.egress == (CalicoRule(),)  # Allow everything
    assert sknp.target == PolicyKey(EnforcedKind.KUBERNETES_NETWORK_POLICY, "default", "test-network-policy")
    assert isinstance(sknp.enforced, NetworkPolicy)
    # The wrapped spec means exactly the NetworkPolicy it would become.
    as_netpol = yaml.safe_load(DOCS_SAMPLES.split("---")[2])
    as_netpol.update(apiVersion="networking.k8s.io/v1", kind="NetworkPolicy")
    assert sknp.enforced == parse_policy(as_netpol, SOURCE)
    assert all(is_staged(d) for d in yaml.safe_load_all(DOCS_SAMPLES))
    assert not is_staged(as_netpol)


def test_the_enforced_manifest_is_the_staged_object_without_staging() -> None:
    manifest = staged(
        spec={"stagedAction": "Set", "selector": "app == 'db'", "ingress": [{"action": "Allow"}]},
        name="db",
        namespace=None,
    )
    manifest["metadata"].update(labels={"team": "a"}, annotations={"why": "audit"}, uid="123", resourceVersion="9")
    policy = parse_staged_policy(manifest, SOURCE, default_namespace="shop")
    assert policy.namespace == "shop" and policy.manifest["metadata"]["namespace"] == "shop"
    assert policy.enforced_manifest() == {
        "apiVersion": "projectcalico.org/v3",
        "kind": "NetworkPolicy",
        "metadata": {"name": "db", "namespace": "shop", "labels": {"team": "a"}, "annotations": {"why": "audit"}},
        "spec": {"selector": "app == 'db'", "ingress": [{"action": "Allow"}]},
    }
    sknp = parse_staged_policy(staged("StagedKubernetesNetworkPolicy", {"podSelector": {}}, name="k"), SOURCE)
    assert sknp.enforced_manifest() == {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "k", "namespace": "x"},
        "spec": {"podSelector": {}},
    }
    gnp = parse_staged_policy(staged("StagedGlobalNetworkPolicy", {"selector": "all()"}, name="g", namespace=None), SOURCE)
    enforced = gnp.enforced_manifest()
    assert enforced is not None and enforced["kind"] == "GlobalNetworkPolicy" and "namespace" not in enforced["metadata"]


def test_a_staged_delete_has_no_enforced_form() -> None:
    for kind, spec in (
        ("StagedNetworkPolicy", {"stagedAction": "Delete", "tier": "default"}),
        ("StagedGlobalNetworkPolicy", {"stagedAction": "Delete"}),
        ("StagedKubernetesNetworkPolicy", {"stagedAction": "Delete", "podSelector": {}}),
    ):
        policy = parse_staged_policy(staged(kind, spec, namespace=None if "Global" in kind else "x"), SOURCE)
        assert policy.action is StagedAction.DELETE and policy.enforced is None and policy.enforced_manifest() is None


def test_calico_types_default_differently_from_kubernetes() -> None:
    egress_only = {"egress": [{"action": "Allow"}]}
    enforced = calico(egress_only).enforced
    assert isinstance(enforced, CalicoPolicy) and enforced.types == {PolicyType.EGRESS}
    empty = calico({}).enforced
    assert isinstance(empty, CalicoPolicy) and empty.types == {PolicyType.INGRESS}
    both = calico({"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]}).enforced
    assert isinstance(both, CalicoPolicy) and both.types == {PolicyType.INGRESS, PolicyType.EGRESS}
    # A StagedKubernetesNetworkPolicy defaults as Kubernetes does: Ingress always.
    k8s = parse_staged_policy(staged("StagedKubernetesNetworkPolicy", {"egress": [{}]}), SOURCE).enforced
    assert isinstance(k8s, NetworkPolicy) and k8s.policy_types == {PolicyType.INGRESS, PolicyType.EGRESS}


def test_accepted_forms_of_ports_protocols_and_selectors() -> None:
    policy = calico(
        {
            "selector": "",
            "order": 10.5,
            "performanceHints": ["AssumeNeededOnEveryNode"],
            "serviceAccountSelector": "",
            "ingress": [
                {"action": "Allow", "protocol": 6, "destination": {"ports": [80, "8000:8100", "http", "443"]}},
                {"action": "Allow", "protocol": "17", "source": {"nets": ["10.0.0.1"], "notNets": []}},
                {"action": "Allow", "protocol": "SCTP", "source": {"selector": "", "namespaceSelector": "all()"}},
                {"action": "Allow", "metadata": {"annotations": {"why": "x"}}},
            ],
        }
    ).enforced
    assert isinstance(policy, CalicoPolicy) and policy.selector.is_all and policy.order == 10.5
    web, dns, sctp, anything = policy.ingress
    assert web.protocol is Protocol.TCP
    assert [(p.first, p.last, p.name) for p in web.ports] == [
        (80, 80, None),
        (8000, 8100, None),
        (None, None, "http"),
        (443, 443, None),
    ]
    assert dns.protocol is Protocol.UDP and dns.peer.nets == (ipaddress.ip_network("10.0.0.1/32"),)
    assert sctp.peer.selector is None and sctp.peer.namespace_selector is not None  # "" is no selector at all
    assert anything == CalicoRule()


# -- rejected ------------------------------------------------------------------------


def rule_error(rule: Mapping[str, Any], direction: str = "ingress") -> PolicyError:
    return rejection(staged(spec={direction: [dict(rule)]}))


REJECTED_RULES: list[tuple[dict[str, Any], str, str]] = [
    ({"action": "Deny"}, "spec.ingress[0].action", "action Deny is not supported"),
    ({"action": "Pass"}, "spec.ingress[0].action", "action Pass is not supported"),
    ({"action": "allow"}, "spec.ingress[0].action", "got 'allow'"),
    ({}, "spec.ingress[0].action", "got None"),
    ({"action": "Allow", "protocol": "ICMP"}, "spec.ingress[0].protocol", "protocol ICMP is not supported"),
    ({"action": "Allow", "protocol": "tcp"}, "spec.ingress[0].protocol", "unknown protocol 'tcp'"),
    ({"action": "Allow", "protocol": 1}, "spec.ingress[0].protocol", "protocol 1 is not supported"),
    ({"action": "Allow", "protocol": 300}, "spec.ingress[0].protocol", "outside 1-255"),
    ({"action": "Allow", "ipVersion": 4}, "spec.ingress[0].ipVersion", "not supported by the harness"),
    ({"action": "Allow", "notProtocol": "TCP"}, "spec.ingress[0].notProtocol", "negated protocol"),
    ({"action": "Allow", "http": {"methods": ["GET"]}}, "spec.ingress[0].http", "application layer policy"),
    ({"action": "Allow", "destination": {"ports": [80]}}, "spec.ingress[0].protocol", "ports need a protocol"),
    ({"action": "Allow", "protocol": "TCP", "source": {"ports": [80]}}, "spec.ingress[0].source.ports", "source ports"),
    ({"action": "Allow", "source": {"notSelector": "a == 'b'"}}, "spec.ingress[0].source.notSelector", "negated selector"),
    ({"action": "Allow", "protocol": "TCP", "destination": {"notPorts": [1]}}, "spec.ingress[0].destination.notPorts", "negated"),
    ({"action": "Allow", "source": {"serviceAccounts": {"names": ["x"]}}}, "spec.ingress[0].source.serviceAccounts", "service"),
    ({"action": "Allow", "source": {"services": {"name": "x"}}}, "spec.ingress[0].source.services", "no Kubernetes Services"),
    ({"action": "Allow", "source": {"selectr": "a == 'b'"}}, "spec.ingress[0].source.selectr", "unknown field"),
    ({"action": "Allow", "destination": {"selector": "a == 'b'"}}, "spec.ingress[0].destination.selector", "selected pod"),
    (
        {"action": "Allow", "source": {"selector": "a == 'b'", "nets": ["10.0.0.0/8"]}},
        "spec.ingress[0].source",
        "by label and address at once",
    ),
    ({"action": "Allow", "source": {"nets": ["10.0.0.0/8", "fd00::/8"]}}, "spec.ingress[0].source", "mixes IPv4 and IPv6"),
    ({"action": "Allow", "source": {"notNets": ["0.0.0.0/0"]}}, "spec.ingress[0].source.notNets[0]", "matches no traffic"),
    ({"action": "Allow", "source": {"nets": ["10.0.0.0/33"]}}, "spec.ingress[0].source.nets[0]", "is not a CIDR"),
    ({"action": "Allow", "source": {"nets": "10.0.0.0/8"}}, "spec.ingress[0].source.nets", "got str"),
    ({"action": "Allow", "source": {"selector": "a starts with 'b'"}}, "spec.ingress[0].source.selector", "cannot model"),
    ({"action": "Allow", "source": {"selector": "a = 'b'"}}, "spec.ingress[0].source.selector", "invalid selector: expected =="),
    ({"action": "Allow", "source": {"namespaceSelector": "global()"}}, "spec.ingress[0].source.namespaceSelector", "global()"),
    (
        {"action": "Allow", "protocol": "TCP", "destination": {"ports": ["90:80"]}},
        "spec.ingress[0].destination.ports[0]",
        "starts",
    ),
    ({"action": "Allow", "protocol": "TCP", "destination": {"ports": [0]}}, "spec.ingress[0].destination.ports[0]", "outside"),
    (
        {"action": "Allow", "protocol": "TCP", "destination": {"ports": ["70000"]}},
        "spec.ingress[0].destination.ports[0]",
        "outside",
    ),
    (
        {"action": "Allow", "protocol": "TCP", "destination": {"ports": ["Web_1"]}},
        "spec.ingress[0].destination.ports[0]",
        "port name",
    ),
    (
        {"action": "Allow", "protocol": "TCP", "destination": {"ports": [True]}},
        "spec.ingress[0].destination.ports[0]",
        "got True",
    ),
]


@pytest.mark.parametrize(("rule", "field", "message"), REJECTED_RULES)
def test_rejected_rules_name_the_field(rule: dict[str, Any], field: str, message: str) -> None:
    err = rule_error(rule)
    assert err.source == SOURCE and err.policy == "x/p" and err.kind == "StagedNetworkPolicy"
    assert err.field == field
    assert message in err.detail
    assert str(err).startswith(f"{SOURCE}: {field}: StagedNetworkPolicy x/p: ")


def test_egress_rules_have_no_source_side() -> None:
    err = rule_error({"action": "Allow", "source": {"selector": "a == 'b'"}}, "egress")
    assert err.field == "spec.egress[0].source.selector" and "on an egress rule the source is the selected pod" in err.detail
    err = rule_error({"action": "Allow", "protocol": "TCP", "source": {"ports": [1]}}, "egress")
    assert err.field == "spec.egress[0].source.ports"
    ok = parse_staged_policy(staged(spec={"egress": [{"action": "Allow", "protocol": "UDP", "destination": {"ports": [53]}}]}))
    assert isinstance(ok.enforced, CalicoPolicy) and ok.enforced.egress[0].ports[0].first == 53


REJECTED_SPECS: list[tuple[str, dict[str, Any], str, str]] = [
    ("StagedNetworkPolicy", {"tier": "security"}, "spec.tier", "tier 'security' is not supported"),
    ("StagedNetworkPolicy", {"namespaceSelector": "a == 'b'"}, "spec.namespaceSelector", "StagedGlobalNetworkPolicy only"),
    ("StagedNetworkPolicy", {"doNotTrack": False}, "spec.doNotTrack", "StagedGlobalNetworkPolicy only"),
    ("StagedNetworkPolicy", {"serviceAccountSelector": "a == 'b'"}, "spec.serviceAccountSelector", "service account"),
    ("StagedNetworkPolicy", {"selector": "a == "}, "spec.selector", "invalid selector"),
    ("StagedNetworkPolicy", {"selector": "global()"}, "spec.selector", "global()"),
    ("StagedNetworkPolicy", {"types": ["Ingress", "Ingress"]}, "spec.types[1]", "given twice"),
    ("StagedNetworkPolicy", {"types": ["ingress"]}, "spec.types[0]", "unknown type"),
    ("StagedNetworkPolicy", {"order": "1"}, "spec.order", "got '1'"),
    ("StagedNetworkPolicy", {"performanceHints": ["Fast"]}, "spec.performanceHints[0]", "unknown hint"),
    ("StagedNetworkPolicy", {"ingress": {"action": "Allow"}}, "spec.ingress", "a list"),
    ("StagedNetworkPolicy", {"stagedAction": "Learn"}, "spec.stagedAction", "policy recommendations"),
    ("StagedNetworkPolicy", {"stagedAction": "delete"}, "spec.stagedAction", "got 'delete'"),
    ("StagedNetworkPolicy", {"stagedAction": "Delete", "selector": "all()"}, "spec.selector", "takes no other field"),
    ("StagedNetworkPolicy", {"stagedAction": "Delete", "tier": "t"}, "spec.tier", "not supported"),
    ("StagedNetworkPolicy", {"egres": []}, "spec.egres", "unknown field"),
    ("StagedGlobalNetworkPolicy", {"doNotTrack": True}, "spec.doNotTrack", "host endpoints"),
    ("StagedGlobalNetworkPolicy", {"preDNAT": True}, "spec.preDNAT", "host endpoints"),
    (
        "StagedKubernetesNetworkPolicy",
        {"stagedAction": "Delete", "podSelector": {"matchLabels": {"a": "b"}}},
        "spec.podSelector",
        "no other",
    ),
    ("StagedKubernetesNetworkPolicy", {"selector": "a == 'b'"}, "spec.selector", "unknown field"),
    (
        "StagedKubernetesNetworkPolicy",
        {"podSelector": {"matchLabels": {"a": "b c"}}},
        "spec.podSelector.matchLabels.a",
        "invalid",
    ),
    (
        "StagedKubernetesNetworkPolicy",
        {"podSelector": {}, "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]},
        "spec.ingress[0].ports[0].endPort",
        "smaller than port",
    ),
]


@pytest.mark.parametrize(("kind", "spec", "field", "message"), REJECTED_SPECS)
def test_rejected_specs_name_the_field(kind: str, spec: dict[str, Any], field: str, message: str) -> None:
    err = rejection(staged(kind, spec, namespace=None if "Global" in kind else "x"))
    assert err.kind == kind and err.field == field
    assert message in str(err), str(err)


def test_rejected_metadata_and_envelope() -> None:
    err = rejection(staged(name="default.allow-db"))
    assert err.field == "metadata.name" and "tier prefix" in err.detail
    assert rejection(staged(name="Allow")).field == "metadata.name"
    assert rejection(staged("StagedKubernetesNetworkPolicy", {"stagedAction": "Delete"}, name="a_b")).field == "metadata.name"
    err = rejection(staged("StagedGlobalNetworkPolicy", namespace="x"))
    assert err.field == "metadata.namespace" and "has no namespace" in err.detail
    err = rejection(staged(namespace=None))
    assert err.field == "metadata.namespace" and "no namespace given" in err.detail
    assert rejection(staged(namespace="X")).field == "metadata.namespace"
    assert rejection(staged(apiVersion="projectcalico.org/v1")).field == "apiVersion"
    assert rejection(staged(kind="NetworkPolicy")).field == "kind"
    assert rejection(staged(status={})).field == "status"
    assert rejection(staged(spec=None) | {"spec": []}).field == "spec"
    err = rejection({"kind": "StagedNetworkPolicy", "apiVersion": "projectcalico.org/v3"})
    assert err.field == "metadata" and err.policy == "<unnamed>"


def test_selectors_that_expand_too_far_together_are_rejected() -> None:
    wide = " && ".join(f"(k{i} == '1' || j{i} == '1')" for i in range(6))  # 64 alternatives: accepted alone
    two = "team == 'a' || env == 'prod'"
    calico({"selector": wide, "ingress": [{"action": "Allow", "source": {"selector": wide}}]})
    err = rule_error({"action": "Allow", "source": {"selector": wide, "namespaceSelector": two}})
    assert err.field == "spec.ingress[0].source" and "cannot model these selectors together" in err.detail
    err = rejection(staged("StagedGlobalNetworkPolicy", {"selector": wide, "namespaceSelector": two}, namespace=None))
    assert err.field == "spec.selector" and "more than 64 alternatives" in err.detail


def test_the_same_staged_object_twice_is_an_error() -> None:
    first, second = calico({}, name="a"), calico({"selector": "b == 'c'"}, name="a")
    with pytest.raises(PolicyError, match="given twice"):
        check_unique([first, second])
    # Same name, different kinds or namespaces: different objects.
    check_unique([first, calico({}, name="a", namespace="y"), calico({}, glob=True, name="a")])


def test_namespaces_renamed_for_a_shared_cluster() -> None:
    manifest = staged(
        spec={
            "selector": "app == 'db' && projectcalico.org/namespace == 'x'",
            "ingress": [
                {
                    "action": "Allow",
                    "source": {
                        "selector": "pcns.kubernetes.io/metadata.name in {'y', 'z'} || app == 'x'",
                        "namespaceSelector": "projectcalico.org/name == 'y' || kubernetes.io/metadata.name != 'z'",
                    },
                },
                {"action": "Allow", "source": {"namespaceSelector": "team == 'x'"}},
            ],
        }
    )
    renamed = rename_namespaces(manifest, lambda ns: f"nph-1-{ns}")
    assert renamed["metadata"]["namespace"] == "nph-1-x"
    spec = renamed["spec"]
    assert spec["selector"] == '(app == "db" && projectcalico.org/namespace == "nph-1-x")'
    assert spec["ingress"][0]["source"] == {
        "selector": '(pcns.kubernetes.io/metadata.name in {"nph-1-y", "nph-1-z"} || app == "x")',
        "namespaceSelector": '(projectcalico.org/name == "nph-1-y" || kubernetes.io/metadata.name != "nph-1-z")',
    }
    assert spec["ingress"][1]["source"] == {"namespaceSelector": "team == 'x'"}  # untouched, as written
    assert manifest["metadata"]["namespace"] == "x"  # the input is not changed
    parse_staged_policy(renamed, SOURCE)  # still valid
    enforced = rename_namespaces({**manifest, "kind": "NetworkPolicy"}, lambda ns: f"nph-1-{ns}")
    assert enforced["spec"] == spec  # the enforced kind has the same spec, renamed the same way
    with pytest.raises(HarnessError, match="policy of Calico's spec, not 'projectcalico.org/v3' 'StagedKubernetesNetworkPolicy'"):
        rename_namespaces(staged("StagedKubernetesNetworkPolicy"), str.upper)


# -- enforcement ---------------------------------------------------------------------


def netpol(name: str, namespace: str = "x", spec: Mapping[str, Any] | None = None) -> NetworkPolicy:
    return parse_policy(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": dict(spec or {"podSelector": {}}),
        }
    )


def sknp(name: str, spec: Mapping[str, Any], namespace: str = "x") -> StagedPolicy:
    return parse_staged_policy(staged("StagedKubernetesNetworkPolicy", dict(spec), name=name, namespace=namespace), SOURCE)


def test_enforcing_adds_replaces_and_removes_by_kind_and_name() -> None:
    deny = netpol("deny")
    current = EnforcedPolicies(kubernetes={deny.ref: deny})
    replace_deny = sknp("deny", {"podSelector": {"matchLabels": {"app": "db"}}})
    add = sknp("new", {"podSelector": {}})
    remove = sknp("deny", {"stagedAction": "Delete"}, namespace="x")
    calico_same_name = calico({"selector": "all()"}, name="deny")  # another object than the NetworkPolicy
    delete_absent = calico({"stagedAction": "Delete"}, name="gone")

    result, changes = enforce(current, [replace_deny, add, calico_same_name, delete_absent])
    assert [c.effect for c in changes] == [Effect.REPLACE, Effect.ADD, Effect.ADD, Effect.NOTHING]
    assert result.kubernetes["x/deny"] == replace_deny.enforced and result.kubernetes["x/new"] == add.enforced
    assert result.calico[calico_same_name.target] == calico_same_name.enforced
    assert [str(k) for k in result.keys()] == [
        "NetworkPolicy x/deny",
        "NetworkPolicy x/new",
        "projectcalico.org/v3 NetworkPolicy x/deny",
    ]
    assert str(changes[0]) == "StagedKubernetesNetworkPolicy x/deny would replace NetworkPolicy x/deny"
    assert (
        str(changes[3])
        == "StagedNetworkPolicy x/gone would delete projectcalico.org/v3 NetworkPolicy x/gone, which is not in force"
    )
    # Staging changed nothing that is enforced.
    assert dict(current.kubernetes) == {"x/deny": deny} and not current.calico

    removed, (change,) = enforce(current, [remove])
    assert change.effect is Effect.REMOVE and not removed.kubernetes


def test_promote_then_delete_a_calico_policy() -> None:
    promoted = promote(EnforcedPolicies(), calico({"selector": "app == 'db'"}, name="db"))
    assert list(promoted.calico) == [PolicyKey(EnforcedKind.CALICO_NETWORK_POLICY, "x", "db")]
    after, (change,) = enforce(promoted, [calico({"stagedAction": "Delete"}, name="db")])
    assert change.effect is Effect.REMOVE and not after.calico


def test_enforce_refuses_two_staged_objects_of_one_name() -> None:
    with pytest.raises(PolicyError, match="given twice"):
        enforce(EnforcedPolicies(), [sknp("a", {}), sknp("a", {"stagedAction": "Delete"})])


# -- translation into NetworkPolicies --------------------------------------------------

NAMESPACES = (
    NamespaceSpec("x", {"team": "a", "env": "prod"}),
    NamespaceSpec("y", {"team": "b", "env": "prod"}),
    NamespaceSpec("z", {"team": "a"}),
)
SERVED = (PortSpec(80, Protocol.TCP, "http"), PortSpec(81, Protocol.TCP), PortSpec(53, Protocol.UDP, "dns"))
PODS = tuple(
    PodSpec(ns.name, name, labels, SERVED)
    for ns in NAMESPACES
    for name, labels in (("db", {"app": "db"}), ("web", {"app": "web", "tier": "front"}), ("job", {}))
)
EXTERNAL = ExternalHost("api", ipaddress.IPv4Address("203.0.113.10"), (PortSpec(80, Protocol.TCP), PortSpec(53, Protocol.UDP)))
TOPOLOGY = Topology(NAMESPACES, PODS, (EXTERNAL,))
ADDRESSES = plan_addresses(TOPOLOGY)
PORTS = (PortProtocol(80, Protocol.TCP), PortProtocol(81, Protocol.TCP), PortProtocol(53, Protocol.UDP))


def model_for(*staged_policies: StagedPolicy, kubernetes: Sequence[NetworkPolicy] = ()) -> ReferenceModel:
    enforced, _ = enforce(EnforcedPolicies(kubernetes={p.ref: p for p in kubernetes}), staged_policies)
    return ReferenceModel(TOPOLOGY, model_policies(enforced, TOPOLOGY).policies, ADDRESSES)


def reachers(model: ReferenceModel, destination: str, port: str = "80/TCP") -> set[str]:
    return {p.id for p in PODS if p.id != destination and model.allowed(p.id, destination, port)}


ALL = {p.id for p in PODS}


def test_a_namespaced_policy_confines_its_selectors_to_its_namespace() -> None:
    model = model_for(
        calico({"selector": "app == 'db'", "ingress": [{"action": "Allow", "source": {"selector": "app == 'web'"}}]})
    )
    assert reachers(model, "x/db") == {"x/web"}
    assert reachers(model, "y/db") == ALL - {"y/db"}  # not selected: another namespace


def test_a_namespace_selector_reaches_other_namespaces_by_their_labels() -> None:
    model = model_for(
        calico({"selector": "app == 'db'", "ingress": [{"action": "Allow", "source": {"namespaceSelector": "team == 'a'"}}]}),
        calico(
            {"selector": "app == 'web'", "ingress": [{"action": "Allow", "source": {"namespaceSelector": "all()"}}]}, name="w"
        ),
        calico(
            {
                "selector": "has(tier)",
                "ingress": [
                    {"action": "Allow", "source": {"namespaceSelector": f"{LABEL_NAME} == 'z'", "selector": "!has(app)"}}
                ],
            },
            name="t",
            namespace="y",
        ),
    )
    assert reachers(model, "x/db") == {p.id for p in PODS if p.namespace in ("x", "z")} - {"x/db"}
    assert reachers(model, "x/web") == ALL - {"x/web"}
    assert reachers(model, "y/web") == {"z/job"}
    assert model.allowed("x/db", "api", "80/TCP")  # egress is not isolated


def test_no_selector_admits_every_address_but_all_only_endpoints() -> None:
    anywhere = calico({"selector": "app == 'db'", "egress": [{"action": "Allow"}]}, name="any")
    endpoints = calico(
        {"selector": "app == 'web'", "egress": [{"action": "Allow", "destination": {"selector": "all()"}}]}, name="e"
    )
    global_endpoints = calico(
        {"selector": "app == 'web'", "egress": [{"action": "Allow", "destination": {"selector": "all()"}}]}, glob=True
    )
    model = model_for(anywhere, endpoints)
    assert model.allowed("x/db", "api", "80/TCP") and model.allowed("x/db", "y/web", "80/TCP")
    assert not model.allowed("x/web", "api", "80/TCP")  # all() is every endpoint, not every address
    assert model.allowed("x/web", "x/job", "80/TCP") and not model.allowed("x/web", "y/job", "80/TCP")
    model = model_for(global_endpoints)
    assert model.allowed("x/web", "y/job", "80/TCP") and not model.allowed("z/web", "api", "53/UDP")


def test_a_global_policy_selects_in_every_namespace_its_namespace_selector_admits() -> None:
    policy = calico({"selector": "app == 'db'", "namespaceSelector": "env == 'prod'", "ingress": []}, glob=True, name="iso")
    converted = to_network_policies(policy.enforced, TOPOLOGY)  # type: ignore[arg-type]
    assert [p.ref for p in converted] == ["x/calico-global.iso", "y/calico-global.iso"]
    model = model_for(policy)
    assert reachers(model, "x/db") == set() and reachers(model, "y/db") == set()
    assert reachers(model, "z/db") == ALL - {"z/db"}
    # Labels in force decide: relabelled, z is selected too.
    relabelled = TOPOLOGY.with_namespace_labels("z", {"env": "prod"})
    assert len(to_network_policies(policy.enforced, relabelled)) == 3  # type: ignore[arg-type]


def test_disjunctions_become_several_policies_and_peers() -> None:
    policy = calico(
        {
            "selector": "app == 'db' || !has(app)",
            "ingress": [{"action": "Allow", "source": {"selector": "app == 'web' || (has(app) && app != 'web')"}}],
        }
    )
    converted = to_network_policies(policy.enforced, TOPOLOGY)  # type: ignore[arg-type]
    assert [p.name for p in converted] == ["calico.p.1", "calico.p.2"]
    assert len(converted[0].ingress[0].peers) == 2
    model = model_for(policy)
    assert reachers(model, "x/db") == {"x/web"} and reachers(model, "x/job") == {"x/web", "x/db"}


def test_nets_and_not_nets_become_ip_blocks() -> None:
    x_web = str(ADDRESSES["x/web"])
    model = model_for(
        calico(
            {
                "selector": "app == 'db'",
                "ingress": [{"action": "Allow", "source": {"nets": ["192.168.0.0/16"], "notNets": [f"{x_web}/32"]}}],
            }
        ),
        calico(
            {"selector": "app == 'web'", "egress": [{"action": "Allow", "destination": {"notNets": ["203.0.113.0/24"]}}]},
            name="e",
        ),
        calico(
            {
                "selector": "!has(app)",
                "ingress": [{"action": "Allow", "source": {"nets": ["192.168.0.0/16"], "notNets": ["192.0.0.0/8"]}}],
            },
            name="n",
        ),
    )
    assert reachers(model, "x/db") == ALL - {"x/db", "x/web"}
    assert not model.allowed("x/web", "api", "80/TCP") and model.allowed("x/web", "y/db", "80/TCP")
    assert reachers(model, "x/job") == set()  # the only net is inside a notNet


def test_ports_protocols_and_named_ports() -> None:
    model = model_for(
        calico(
            {
                "selector": "app == 'db'",
                "ingress": [
                    {"action": "Allow", "protocol": "TCP", "destination": {"ports": ["http"]}},
                    {"action": "Allow", "protocol": "UDP"},
                ],
            }
        )
    )
    assert reachers(model, "x/db", "80/TCP") == ALL - {"x/db"}
    assert reachers(model, "x/db", "81/TCP") == set()
    assert reachers(model, "x/db", "53/UDP") == ALL - {"x/db"}
    ranged = model_for(
        calico(
            {"selector": "app == 'db'", "ingress": [{"action": "Allow", "protocol": "TCP", "destination": {"ports": ["81:90"]}}]}
        )
    )
    assert reachers(ranged, "x/db", "81/TCP") == ALL - {"x/db"} and reachers(ranged, "x/db", "80/TCP") == set()


def test_calico_labels_of_pods_and_namespaces() -> None:
    model = model_for(
        calico(
            {
                "selector": f"{LABEL_ORCHESTRATOR} == 'k8s' && app == 'db'",
                "ingress": [
                    {"action": "Allow", "source": {"selector": f"{LABEL_NAMESPACE} in {{'y'}} && {NAMESPACE_PREFIX}team == 'b'"}}
                ],
            },
            glob=True,
        ),
        calico({"selector": f"{LABEL_SERVICE_ACCOUNT} != 'default'"}, glob=True, name="none"),
    )
    assert reachers(model, "z/db") == {"y/web", "y/job", "y/db"} - {"z/db"}


def test_a_translated_name_that_collides_is_an_error() -> None:
    clash = netpol("calico.p")
    enforced, _ = enforce(EnforcedPolicies(kubernetes={clash.ref: clash}), [calico({})])
    with pytest.raises(HarnessError, match="rename one of them"):
        model_policies(enforced, TOPOLOGY)


def test_origins_name_the_enforced_objects() -> None:
    deny = netpol("deny")
    enforced, _ = enforce(EnforcedPolicies(kubernetes={deny.ref: deny}), [calico({}, glob=True, name="g")])
    translated = model_policies(enforced, TOPOLOGY)
    assert {ref: str(key) for ref, key in translated.origins.items()} == {
        "x/deny": "NetworkPolicy x/deny",
        "x/calico-global.g": "GlobalNetworkPolicy g",
        "y/calico-global.g": "GlobalNetworkPolicy g",
        "z/calico-global.g": "GlobalNetworkPolicy g",
    }
    assert translated.origins["x/deny"] == kubernetes_key(deny)


# -- differential: translated NetworkPolicies against Calico's semantics read directly --


def endpoint_labels(pod: PodSpec) -> dict[str, str]:
    """A pod's labels as Calico's selectors see them."""
    ns = TOPOLOGY.namespace(pod.namespace)
    labels = {NAMESPACE_PREFIX + k: v for k, v in ns.labels.items()}
    labels[NAMESPACE_PREFIX + LABEL_NAME] = ns.name
    labels[f"pcsa.{LABEL_NAME}"] = "default"
    labels.update(pod.labels)
    labels.update({LABEL_NAMESPACE: pod.namespace, LABEL_ORCHESTRATOR: "k8s", LABEL_SERVICE_ACCOUNT: "default"})
    return labels


def namespace_labels(name: str) -> dict[str, str]:
    return {**TOPOLOGY.namespace(name).labels, LABEL_NAME: name}


def selects(policy: CalicoPolicy, pod: PodSpec) -> bool:
    if policy.key.namespace is not None and pod.namespace != policy.key.namespace:
        return False
    if policy.namespace_selector is not None and not policy.namespace_selector.matches(namespace_labels(pod.namespace)):
        return False
    return policy.selector.matches(endpoint_labels(pod))


def peer_matches(policy: CalicoPolicy, rule: CalicoRule, peer: PodSpec | ExternalHost) -> bool:
    match = rule.peer
    if match.nets or match.not_nets:
        ip = ipaddress.ip_address(ADDRESSES[peer.id])
        inside = not match.nets or any(ip in n for n in match.nets)
        return inside and not any(ip in n for n in match.not_nets)
    if match.selector is None and match.namespace_selector is None:
        return True
    if not isinstance(peer, PodSpec):
        return False
    if match.namespace_selector is not None:
        if not match.namespace_selector.matches(namespace_labels(peer.namespace)):
            return False
    elif policy.key.namespace is not None and peer.namespace != policy.key.namespace:
        return False
    return match.selector is None or match.selector.matches(endpoint_labels(peer))


def port_matches(rule: CalicoRule, key: PortProtocol, destination: PodSpec | ExternalHost) -> bool:
    if rule.protocol is None:
        return True
    if rule.protocol is not key.protocol:
        return False
    if not rule.ports:
        return True
    for port in rule.ports:
        if port.name is not None:
            if isinstance(destination, PodSpec) and destination.named_port(port.name, key.protocol) == key.port:
                return True
        elif port.first is not None and port.last is not None and port.first <= key.port <= port.last:
            return True
    return False


def side_allows(
    policies: Sequence[CalicoPolicy], subject: PodSpec, other: PodSpec | ExternalHost, key: PortProtocol, egress: bool
) -> bool:
    direction = PolicyType.EGRESS if egress else PolicyType.INGRESS
    applying = [p for p in policies if direction in p.types and selects(p, subject)]
    if not applying:
        return True
    destination = other if egress else subject
    for policy in applying:
        for rule in policy.egress if egress else policy.ingress:
            if peer_matches(policy, rule, other) and port_matches(rule, key, destination):
                return True
    return False


def calico_allows(
    policies: Sequence[CalicoPolicy], source: PodSpec, destination: PodSpec | ExternalHost, key: PortProtocol
) -> bool:
    if not side_allows(policies, source, destination, key, egress=True):
        return False
    return not isinstance(destination, PodSpec) or side_allows(policies, destination, source, key, egress=False)


KEYS = ("app", "tier", LABEL_NAMESPACE, f"{NAMESPACE_PREFIX}team", LABEL_ORCHESTRATOR)
VALUES = ("db", "web", "front", "x", "y", "a", "b", "k8s")
NS_KEYS = ("team", "env", LABEL_NAME)
NS_VALUES = ("a", "b", "prod", "x", "z")


def selector_texts(keys: Sequence[str], values: Sequence[str]) -> st.SearchStrategy[str]:
    atom = st.one_of(
        st.builds(lambda k, v: f"{k} == '{v}'", st.sampled_from(keys), st.sampled_from(values)),
        st.builds(lambda k, v: f"{k} != '{v}'", st.sampled_from(keys), st.sampled_from(values)),
        st.builds(
            lambda k, vs, neg: f"{k} {'not in' if neg else 'in'} {{{', '.join(repr(v) for v in sorted(vs))}}}",
            st.sampled_from(keys),
            st.sets(st.sampled_from(values), max_size=2),
            st.booleans(),
        ),
        st.builds(lambda k: f"has({k})", st.sampled_from(keys)),
        st.builds(lambda k: f"!has({k})", st.sampled_from(keys)),
        st.just("all()"),
    )
    return st.recursive(
        atom,
        lambda inner: st.one_of(
            st.builds(lambda a, b: f"({a}) && ({b})", inner, inner),
            st.builds(lambda a, b: f"({a}) || ({b})", inner, inner),
            st.builds(lambda a: f"!({a})", inner),
        ),
        max_leaves=4,
    )


NETS = ("192.168.0.0/16", "192.168.1.0/24", "192.168.2.0/24", f"{ADDRESSES['y/web']}/32", "203.0.113.0/24", "10.0.0.0/8")


@st.composite
def entities(draw: st.DrawFn) -> dict[str, Any]:
    form = draw(st.sampled_from(["any", "selector", "namespace", "both", "nets", "notNets", "netsAndNot"]))
    selector: dict[str, Any] = {}
    if form == "selector" or form == "both":
        selector["selector"] = draw(selector_texts(KEYS, VALUES))
    if form == "namespace" or form == "both":
        selector["namespaceSelector"] = draw(selector_texts(NS_KEYS, NS_VALUES))
    if form in ("nets", "netsAndNot"):
        selector["nets"] = draw(st.lists(st.sampled_from(NETS), min_size=1, max_size=2, unique=True))
    if form in ("notNets", "netsAndNot"):
        selector["notNets"] = draw(st.lists(st.sampled_from(NETS), min_size=1, max_size=2, unique=True))
    return selector


@st.composite
def rules(draw: st.DrawFn, direction: str) -> dict[str, Any]:
    rule: dict[str, Any] = {"action": "Allow"}
    protocol = draw(st.sampled_from([None, "TCP", "UDP"]))
    peer_side = "source" if direction == "ingress" else "destination"
    rule[peer_side] = draw(entities())
    if protocol is not None:
        rule["protocol"] = protocol
        ports = draw(st.lists(st.sampled_from([80, 81, 53, "80:81", "http", "dns"]), max_size=2))
        if ports:
            rule.setdefault("destination", {})["ports"] = ports
    return rule


@st.composite
def calico_policies(draw: st.DrawFn, index: int) -> StagedPolicy:
    glob = draw(st.booleans())
    spec: dict[str, Any] = {"selector": draw(selector_texts(KEYS, VALUES))}
    if glob and draw(st.booleans()):
        spec["namespaceSelector"] = draw(selector_texts(NS_KEYS, NS_VALUES))
    spec["ingress"] = draw(st.lists(rules("ingress"), max_size=2))
    spec["egress"] = draw(st.lists(rules("egress"), max_size=2))
    if draw(st.booleans()):
        spec["types"] = draw(st.sampled_from([["Ingress"], ["Egress"], ["Ingress", "Egress"]]))
    namespace = draw(st.sampled_from(["x", "y", "z"]))
    return calico(spec, glob=glob, name=f"p{index}", namespace=namespace)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.integers(1, 3).flatmap(lambda n: st.tuples(*(calico_policies(i) for i in range(n)))))
def test_translation_has_calico_verdicts_on_every_cell(staged_policies: tuple[StagedPolicy, ...]) -> None:
    model = model_for(*staged_policies)
    enforced = [p.enforced for p in staged_policies]
    assert all(isinstance(p, CalicoPolicy) for p in enforced)
    calico_policies_in_force = [p for p in enforced if isinstance(p, CalicoPolicy)]
    for key in PORTS:
        for source in PODS:
            for destination in TOPOLOGY.serving(key):
                if destination.id == source.id:
                    continue
                want = calico_allows(calico_policies_in_force, source, destination, key)
                assert model.allowed(source.id, destination.id, key) is want, (source.id, destination.id, str(key))


def test_a_kind_that_is_not_a_string_is_no_staged_kind_and_is_rejected_by_name() -> None:
    # Found by the loader's fuzz test: a list as kind used to end in a TypeError.
    manifest = staged(["StagedNetworkPolicy"])  # type: ignore[arg-type]
    assert not is_staged(manifest)
    err = rejection(manifest)
    assert err.field == "kind" and "['StagedNetworkPolicy']" in str(err)
