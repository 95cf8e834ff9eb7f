"""``parse_policy`` accepts what the API server accepts (with its defaults) and rejects
the rest with a PolicyError naming the file, the policy, the field and what is valid."""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

import pytest

from harness.core.errors import PolicyError, ScenarioError
from harness.core.policy import PolicyPort, PolicyType, parse_policy
from harness.core.selectors import LabelSelector, Operator, Requirement
from harness.core.topology import Protocol

SOURCE = "policies/p.yaml"


def manifest(spec: Any = None, *, name: Any = "p", namespace: Any = "x", **top: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if name is not None:
        meta["name"] = name
    if namespace is not None:
        meta["namespace"] = namespace
    doc: dict[str, Any] = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta,
        "spec": {"podSelector": {}} if spec is None else spec,
    }
    doc.update(top)
    return doc


def pod_selector(selector: Any) -> dict[str, Any]:
    return manifest({"podSelector": selector})


def ingress_peer(peer: Any) -> dict[str, Any]:
    return manifest({"podSelector": {}, "ingress": [{"from": [peer]}]})


def egress_peer(peer: Any) -> dict[str, Any]:
    return manifest({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [peer]}]})


def ingress_port(port: Any) -> dict[str, Any]:
    return manifest({"podSelector": {}, "ingress": [{"ports": [port]}]})


def expression(**fields: Any) -> dict[str, Any]:
    return pod_selector({"matchExpressions": [fields]})


PORT = "spec.ingress[0].ports[0]"
EXPR = "spec.podSelector.matchExpressions[0]"
BLOCK = "spec.egress[0].to[0].ipBlock"
PORT_NAME_RULE = "IANA service name"


def case(doc: dict[str, Any], field: str, *words: str, policy: str = "x/p", id: str) -> Any:
    return pytest.param(doc, field, policy, words, id=id)


REJECTIONS = [
    # -- selectors
    case(
        expression(key="app", operator="Equals", values=["a"]),
        f"{EXPR}.operator",
        "unknown operator 'Equals'",
        "In, NotIn, Exists or DoesNotExist",
        id="bad-operator",
    ),
    case(
        expression(key="app", operator="in", values=["a"]),
        f"{EXPR}.operator",
        "'in'",
        "In, NotIn, Exists or DoesNotExist",
        id="operator-lowercase",
    ),
    case(expression(key="app", operator="In"), f"{EXPR}.values", "In needs at least one value", id="in-without-values"),
    case(
        expression(key="app", operator="NotIn", values=[]),
        f"{EXPR}.values",
        "NotIn needs at least one value",
        id="notin-empty-values",
    ),
    case(
        expression(key="app", operator="Exists", values=["a"]),
        f"{EXPR}.values",
        "Exists takes no values",
        id="exists-with-values",
    ),
    case(
        expression(key="app", operator="DoesNotExist", values=["a"]),
        f"{EXPR}.values",
        "DoesNotExist takes no values",
        id="doesnotexist-with-values",
    ),
    case(expression(operator="Exists"), f"{EXPR}.key", "label key", id="expression-without-key"),
    case(
        expression(key="bad key", operator="Exists"), f"{EXPR}.key", "label key 'bad key' is invalid", id="expression-invalid-key"
    ),
    case(
        expression(key="app", operator="In", values=["ok", "not ok"]),
        f"{EXPR}.values[1]",
        "label value 'not ok' is invalid",
        id="expression-invalid-value",
    ),
    case(expression(key="app", operator="Exists", extra=1), f"{EXPR}.extra", "unknown field", id="expression-unknown-field"),
    case(
        pod_selector({"matchLabels": {"-app": "web"}}),
        "spec.podSelector.matchLabels.-app",
        "label key '-app' is invalid",
        "starting and ending with a letter or digit",
        id="label-key-leading-dash",
    ),
    case(
        pod_selector({"matchLabels": {"a" * 64: "web"}}),
        f"spec.podSelector.matchLabels.{'a' * 64}",
        "is invalid",
        "up to 63",
        id="label-key-too-long",
    ),
    case(
        pod_selector({"matchLabels": {"Example.com/app": "web"}}),
        "spec.podSelector.matchLabels.Example.com/app",
        "invalid prefix",
        "DNS subdomain",
        id="label-key-bad-prefix",
    ),
    case(
        pod_selector({"matchLabels": {"a/b/c": "web"}}),
        "spec.podSelector.matchLabels.a/b/c",
        "invalid prefix",
        id="label-key-two-slashes",
    ),
    case(
        pod_selector({"matchLabels": {"app": "a b"}}),
        "spec.podSelector.matchLabels.app",
        "label value 'a b' is invalid",
        "up to 63 letters",
        id="label-value-space",
    ),
    case(
        pod_selector({"matchLabels": {"app": "web-"}}),
        "spec.podSelector.matchLabels.app",
        "label value 'web-' is invalid",
        id="label-value-trailing-dash",
    ),
    case(
        pod_selector({"matchLabels": {"app": "v" * 64}}),
        "spec.podSelector.matchLabels.app",
        "is invalid",
        "up to 63",
        id="label-value-too-long",
    ),
    case(
        pod_selector({"matchLabels": {"app": 8080}}),
        "spec.podSelector.matchLabels.app",
        "must be a string",
        id="label-value-number",
    ),
    case(
        pod_selector({"matchLabels": {"app": "web\n"}}),
        "spec.podSelector.matchLabels.app",
        "is invalid",
        id="label-value-trailing-newline",
    ),
    case(
        pod_selector({"matchLabels": {"app\n": "web"}}),
        "spec.podSelector.matchLabels.app\n",
        "is invalid",
        id="label-key-trailing-newline",
    ),
    case(
        egress_peer({"namespaceSelector": {"matchLabels": {"env": "prod!"}}}),
        "spec.egress[0].to[0].namespaceSelector.matchLabels.env",
        "label value 'prod!' is invalid",
        id="namespace-selector-invalid-value",
    ),
    case(
        pod_selector({"matchlabels": {"app": "web"}}),
        "spec.podSelector.matchlabels",
        "unknown field",
        "matchLabels or matchExpressions",
        id="selector-unknown-field",
    ),
    case(pod_selector(["app=web"]), "spec.podSelector", "got list", "label selector", id="selector-not-a-mapping"),
    # -- ports
    *[
        case(ingress_port({"port": name}), f"{PORT}.port", f"{name!r} is not a valid port name", PORT_NAME_RULE, id=i)
        for name, i in [
            ("HTTP", "port-name-uppercase"),
            ("metrics-exporter", "port-name-too-long"),
            ("web--api", "port-name-double-dash"),
            ("8080", "port-name-digits-only"),
            ("-http", "port-name-leading-dash"),
            ("http-", "port-name-trailing-dash"),
            ("http_alt", "port-name-underscore"),
            ("", "port-name-empty"),
            ("http\n", "port-name-trailing-newline"),
        ]
    ],
    case(ingress_port({"port": 0}), f"{PORT}.port", "0 is outside 1-65535", id="port-zero"),
    case(ingress_port({"port": 70000}), f"{PORT}.port", "70000 is outside 1-65535", id="port-too-big"),
    case(ingress_port({"port": -80}), f"{PORT}.port", "outside 1-65535", id="port-negative"),
    case(ingress_port({"port": 80.5}), f"{PORT}.port", "got 80.5", "a port number 1-65535 or a port name", id="port-float"),
    case(ingress_port({"port": True}), f"{PORT}.port", "got True", id="port-boolean"),
    case(ingress_port({"endPort": 90}), f"{PORT}.endPort", "endPort requires port", id="endport-without-port"),
    case(
        ingress_port({"protocol": "UDP", "endPort": 90}), f"{PORT}.endPort", "endPort requires port", id="endport-protocol-only"
    ),
    case(
        ingress_port({"port": 80, "endPort": 79}),
        f"{PORT}.endPort",
        "endPort 79 is smaller than port 80",
        "from 80 to 65535",
        id="endport-below-port",
    ),
    case(
        ingress_port({"port": "http", "endPort": 90}),
        f"{PORT}.endPort",
        "cannot be used with a named port",
        "a numeric port",
        id="endport-named-port",
    ),
    case(ingress_port({"port": 80, "endPort": 70000}), f"{PORT}.endPort", "70000 is outside 1-65535", id="endport-too-big"),
    case(ingress_port({"port": 80, "endPort": "90"}), f"{PORT}.endPort", "got '90'", id="endport-string"),
    case(
        ingress_port({"port": 80, "protocol": "ICMP"}),
        f"{PORT}.protocol",
        "unsupported protocol 'ICMP'",
        "TCP, UDP or SCTP",
        id="protocol-unknown",
    ),
    case(
        ingress_port({"port": 80, "protocol": "tcp"}),
        f"{PORT}.protocol",
        "unsupported protocol 'tcp'",
        "TCP, UDP or SCTP",
        id="protocol-lowercase",
    ),
    case(ingress_port({"port": 80, "portName": "http"}), f"{PORT}.portName", "unknown field", id="port-unknown-field"),
    case(ingress_port(80), PORT, "got int", "a mapping", id="port-not-a-mapping"),
    # -- peers and ipBlock
    case(ingress_peer({}), "spec.ingress[0].from[0]", "must set podSelector, namespaceSelector or ipBlock", id="peer-empty"),
    case(egress_peer({}), "spec.egress[0].to[0]", "must set podSelector, namespaceSelector or ipBlock", id="egress-peer-empty"),
    case(
        ingress_peer({"podSelector": None}),
        "spec.ingress[0].from[0]",
        "must set podSelector, namespaceSelector or ipBlock",
        id="peer-only-null-selector",
    ),
    case(
        ingress_peer({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}),
        "spec.ingress[0].from[0]",
        "ipBlock cannot be combined with podSelector or namespaceSelector",
        id="ipblock-with-pod-selector",
    ),
    case(
        egress_peer({"ipBlock": {"cidr": "10.0.0.0/8"}, "namespaceSelector": {}}),
        "spec.egress[0].to[0]",
        "ipBlock cannot be combined",
        id="ipblock-with-namespace-selector",
    ),
    case(
        egress_peer({"ipBlock": {"cidr": "10.0.0.0/33"}}),
        f"{BLOCK}.cidr",
        "'10.0.0.0/33' is not a CIDR",
        "a CIDR such as",
        id="cidr-prefix-too-long",
    ),
    case(egress_peer({"ipBlock": {"cidr": "10.0.0.300/8"}}), f"{BLOCK}.cidr", "is not a CIDR", id="cidr-bad-octet"),
    case(egress_peer({"ipBlock": {"cidr": "example.com"}}), f"{BLOCK}.cidr", "is not a CIDR", id="cidr-hostname"),
    case(egress_peer({"ipBlock": {"cidr": 10}}), f"{BLOCK}.cidr", "got 10", "a CIDR such as", id="cidr-number"),
    case(egress_peer({"ipBlock": {}}), f"{BLOCK}.cidr", "required field is missing", id="cidr-missing"),
    case(
        egress_peer({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}),
        f"{BLOCK}.except[0]",
        "10.1.0.0/24 is not a strict subset of cidr 10.0.0.0/16",
        "inside cidr",
        id="except-outside-cidr",
    ),
    case(
        egress_peer({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.1.0/24", "10.0.0.0/16"]}}),
        f"{BLOCK}.except[1]",
        "not a strict subset",
        id="except-equal-to-cidr",
    ),
    case(
        egress_peer({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.0.0/8"]}}),
        f"{BLOCK}.except[0]",
        "not a strict subset",
        id="except-wider-than-cidr",
    ),
    case(
        egress_peer({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["fd00::/64"]}}),
        f"{BLOCK}.except[0]",
        "not a strict subset",
        id="except-other-family",
    ),
    case(
        egress_peer({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.0/24"]}}),
        f"{BLOCK}.except[0]",
        "is not a CIDR",
        id="except-not-a-cidr",
    ),
    case(
        egress_peer({"ipBlock": {"cidr": "10.0.0.0/16", "excepts": []}}),
        f"{BLOCK}.excepts",
        "unknown field",
        id="ipblock-unknown-field",
    ),
    # -- structure and unknown fields
    case(
        manifest(specs={}),
        "specs",
        "unknown field",
        "apiVersion or kind or metadata or spec or status",
        policy="p",
        id="unknown-top-level-field",
    ),
    case(manifest({"podSelector": {}, "ingres": []}), "spec.ingres", "unknown field", "ingress", id="unknown-spec-field"),
    case(
        manifest({"podSelector": {}, "ingress": [{"form": []}]}),
        "spec.ingress[0].form",
        "unknown field",
        "from or ports",
        id="unknown-ingress-rule-field",
    ),
    case(
        manifest({"podSelector": {}, "egress": [{"from": []}]}),
        "spec.egress[0].from",
        "unknown field",
        "ports or to",
        id="from-in-egress-rule",
    ),
    case(ingress_peer({"podselector": {}}), "spec.ingress[0].from[0].podselector", "unknown field", id="unknown-peer-field"),
    case(manifest({"podSelector": {}, "ingress": {"from": []}}), "spec.ingress", "got dict", "a list", id="ingress-not-a-list"),
    case(
        manifest({"podSelector": {}, "ingress": [{"from": {"podSelector": {}}}]}),
        "spec.ingress[0].from",
        "got dict",
        "a list",
        id="from-not-a-list",
    ),
    case(manifest({"podSelector": {}, "ingress": ["all"]}), "spec.ingress[0]", "got str", "a mapping", id="rule-not-a-mapping"),
    case(manifest(["podSelector"]), "spec", "got list", "a mapping", id="spec-not-a-mapping"),
    case(
        manifest(apiVersion="networking.k8s.io/v1beta1"),
        "apiVersion",
        "'networking.k8s.io/v1beta1'",
        "networking.k8s.io/v1",
        policy="p",
        id="api-version-beta",
    ),
    case(
        manifest(apiVersion="extensions/v1beta1"), "apiVersion", "networking.k8s.io/v1", policy="p", id="api-version-extensions"
    ),
    case(
        {k: v for k, v in manifest().items() if k != "apiVersion"},
        "apiVersion",
        "got None",
        "networking.k8s.io/v1",
        policy="p",
        id="api-version-missing",
    ),
    case(manifest(kind="NetworkPolicies"), "kind", "'NetworkPolicies'", "NetworkPolicy", policy="p", id="kind-wrong"),
    case(manifest(kind="Service"), "kind", "'Service'", "NetworkPolicy", policy="p", id="kind-service"),
    case(
        {k: v for k, v in manifest().items() if k != "metadata"},
        "metadata",
        "required field is missing",
        "name",
        policy="<unnamed>",
        id="metadata-missing",
    ),
    case(
        manifest(name=None),
        "metadata.name",
        "None is not a valid name",
        "lowercase DNS subdomain",
        policy="<unnamed>",
        id="name-missing",
    ),
    case(
        manifest(name="Allow_DB"),
        "metadata.name",
        "'Allow_DB' is not a valid name",
        "lowercase DNS subdomain",
        policy="Allow_DB",
        id="name-invalid",
    ),
    case(manifest(name="a" * 254), "metadata.name", "is not a valid name", policy="a" * 254, id="name-too-long"),
    case(manifest(name="allow\n"), "metadata.name", "is not a valid name", policy="allow\n", id="name-trailing-newline"),
    case(
        manifest(namespace="Prod"),
        "metadata.namespace",
        "'Prod' is not a valid namespace name",
        "a lowercase DNS label",
        policy="p",
        id="namespace-uppercase",
    ),
    case(
        manifest(namespace="team.prod"),
        "metadata.namespace",
        "is not a valid namespace name",
        policy="p",
        id="namespace-with-dot",
    ),
    case(
        manifest(namespace="n" * 64), "metadata.namespace", "is not a valid namespace name", policy="p", id="namespace-too-long"
    ),
    case(manifest(namespace=7), "metadata.namespace", "7 is not a valid namespace name", policy="p", id="namespace-number"),
    case(
        manifest(namespace="prod\n"),
        "metadata.namespace",
        "is not a valid namespace name",
        policy="p",
        id="namespace-trailing-newline",
    ),
    case(
        manifest(namespace=None),
        "metadata.namespace",
        "no namespace given",
        "metadata.namespace",
        policy="p",
        id="namespace-missing",
    ),
    # -- policyTypes
    case(
        manifest({"podSelector": {}, "policyTypes": ["ingress"]}),
        "spec.policyTypes[0]",
        "unknown policy type 'ingress'",
        "Ingress or Egress",
        id="policy-type-lowercase",
    ),
    case(
        manifest({"podSelector": {}, "policyTypes": ["Ingress", "Both"]}),
        "spec.policyTypes[1]",
        "unknown policy type 'Both'",
        "Ingress or Egress",
        id="policy-type-unknown",
    ),
    case(
        manifest({"podSelector": {}, "policyTypes": ["Ingress", "Egress", "Ingress"]}),
        "spec.policyTypes",
        "3 entries",
        "at most Ingress and Egress",
        id="policy-types-three",
    ),
    case(
        manifest({"podSelector": {}, "policyTypes": "Ingress"}),
        "spec.policyTypes",
        "got str",
        "a list",
        id="policy-types-not-a-list",
    ),
]


@pytest.mark.parametrize(("doc", "field", "policy", "words"), REJECTIONS)
def test_rejected_policy(doc: dict[str, Any], field: str, policy: str, words: tuple[str, ...]) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(doc, SOURCE)
    err = info.value
    assert isinstance(err, ScenarioError)
    assert err.source == SOURCE
    assert err.field == field
    assert err.policy == policy
    text = str(err)
    assert text.startswith(f"{SOURCE}: {field}: NetworkPolicy {policy}: "), text
    for word in words:
        assert word in text, f"{word!r} not in {text!r}"
    # What would have been accepted is said, either in the message or as ``expected``.
    assert err.expected or len(err.message) > len(f"NetworkPolicy {policy}: ") + 10


def test_rejected_manifest_that_is_not_a_mapping() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(["kind", "NetworkPolicy"], SOURCE)
    assert info.value.policy == "<unnamed>"
    assert "got list" in str(info.value)
    assert info.value.expected == "a mapping"


def test_error_on_a_later_rule_names_its_index() -> None:
    doc = manifest(
        {
            "podSelector": {},
            "ingress": [
                {"from": [{"podSelector": {}}], "ports": [{"port": 80}]},
                {"from": [{"podSelector": {}}, {"namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "In"}]}}]},
            ],
        }
    )
    with pytest.raises(PolicyError) as info:
        parse_policy(doc, SOURCE)
    assert info.value.field == "spec.ingress[1].from[1].namespaceSelector.matchExpressions[0].values"


# -- accepted manifests -------------------------------------------------------------------


def test_minimal_policy_gets_the_api_server_defaults() -> None:
    policy = parse_policy(manifest(), SOURCE)
    assert policy.ref == "x/p"
    assert policy.namespace == "x" and policy.name == "p"
    assert policy.source == SOURCE
    assert policy.pod_selector == LabelSelector()
    assert policy.pod_selector.is_empty
    assert policy.policy_types == {PolicyType.INGRESS}
    assert policy.ingress == () and policy.egress == ()


def test_absent_pod_selector_selects_every_pod() -> None:
    policy = parse_policy(manifest({}), SOURCE)
    assert policy.pod_selector.is_empty
    assert policy.policy_types == {PolicyType.INGRESS}


def test_egress_rules_add_egress_to_defaulted_policy_types() -> None:
    policy = parse_policy(manifest({"podSelector": {}, "egress": [{}]}), SOURCE)
    assert policy.policy_types == {PolicyType.INGRESS, PolicyType.EGRESS}
    assert len(policy.egress) == 1 and policy.egress[0].peers == () and policy.egress[0].ports == ()


def test_empty_egress_list_does_not_add_egress() -> None:
    policy = parse_policy(manifest({"podSelector": {}, "egress": []}), SOURCE)
    assert policy.policy_types == {PolicyType.INGRESS}


def test_explicit_policy_types_are_kept() -> None:
    egress_only = parse_policy(manifest({"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}]}), SOURCE)
    assert egress_only.policy_types == {PolicyType.EGRESS}
    both = parse_policy(manifest({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}), SOURCE)
    assert both.policy_types == {PolicyType.INGRESS, PolicyType.EGRESS}
    repeated = parse_policy(manifest({"podSelector": {}, "policyTypes": ["Ingress", "Ingress"]}), SOURCE)
    assert repeated.policy_types == {PolicyType.INGRESS}


def test_empty_policy_types_list_is_defaulted() -> None:
    # The API server defaults policyTypes when the list is empty, not only when absent.
    policy = parse_policy(manifest({"podSelector": {}, "policyTypes": [], "egress": [{}]}), SOURCE)
    assert policy.policy_types == {PolicyType.INGRESS, PolicyType.EGRESS}


def test_ports_are_parsed_with_protocol_defaulted_to_tcp() -> None:
    policy = parse_policy(
        manifest(
            {
                "podSelector": {},
                "ingress": [
                    {
                        "ports": [
                            {"port": 80},
                            {"port": 53, "protocol": "UDP"},
                            {"port": "http"},
                            {"port": 8000, "endPort": 9000},
                            {},
                            {"protocol": "SCTP"},
                            {"port": 443, "endPort": 443},
                        ]
                    }
                ],
            }
        ),
        SOURCE,
    )
    assert policy.ingress[0].ports == (
        PolicyPort(Protocol.TCP, 80),
        PolicyPort(Protocol.UDP, 53),
        PolicyPort(Protocol.TCP, "http"),
        PolicyPort(Protocol.TCP, 8000, 9000),
        PolicyPort(Protocol.TCP, None),
        PolicyPort(Protocol.SCTP, None),
        PolicyPort(Protocol.TCP, 443, 443),
    )


@pytest.mark.parametrize("name", ["http", "h2c", "web-8080", "a", "abcdefghijklmno", "9p"])
def test_valid_port_names(name: str) -> None:
    policy = parse_policy(ingress_port({"port": name}), SOURCE)
    assert policy.ingress[0].ports[0].port == name


@pytest.mark.parametrize("port", [1, 65535])
def test_port_bounds(port: int) -> None:
    assert parse_policy(ingress_port({"port": port, "endPort": 65535}), SOURCE).ingress[0].ports[0].port == port


def test_peers_are_parsed() -> None:
    policy = parse_policy(
        manifest(
            {
                "podSelector": {"matchLabels": {"app": "db"}},
                "ingress": [
                    {
                        "from": [
                            {"podSelector": {"matchLabels": {"app": "web"}}},
                            {
                                "namespaceSelector": {
                                    "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev", "test"]}]
                                }
                            },
                            {
                                "namespaceSelector": {},
                                "podSelector": {"matchExpressions": [{"key": "tier", "operator": "Exists"}]},
                            },
                            {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "10.2.3.0/24"]}},
                        ]
                    }
                ],
            }
        ),
        SOURCE,
    )
    peers = policy.ingress[0].peers
    assert policy.pod_selector == LabelSelector({"app": "db"})
    assert peers[0].pod_selector == LabelSelector({"app": "web"}) and peers[0].namespace_selector is None
    assert peers[1].pod_selector is None
    assert peers[1].namespace_selector == LabelSelector({}, (Requirement("env", Operator.NOT_IN, frozenset({"dev", "test"})),))
    assert peers[2].namespace_selector == LabelSelector()
    assert peers[2].pod_selector == LabelSelector({}, (Requirement("tier", Operator.EXISTS),))
    block = peers[3].ip_block
    assert block is not None and peers[3].pod_selector is None and peers[3].namespace_selector is None
    assert block.cidr == ipaddress.ip_network("10.0.0.0/8")
    assert block.excepts == (ipaddress.ip_network("10.1.0.0/16"), ipaddress.ip_network("10.2.3.0/24"))
    assert block.contains(ipaddress.ip_address("10.9.9.9"))
    assert not block.contains(ipaddress.ip_address("10.1.2.3"))
    assert not block.contains(ipaddress.ip_address("11.0.0.1"))


def test_cidr_with_host_bits_and_ipv6_are_accepted() -> None:
    policy = parse_policy(egress_peer({"ipBlock": {"cidr": "10.0.0.1/8"}}), SOURCE)
    assert policy.egress[0].peers[0].ip_block is not None
    assert policy.egress[0].peers[0].ip_block.cidr == ipaddress.ip_network("10.0.0.0/8")
    v6 = parse_policy(egress_peer({"ipBlock": {"cidr": "fd00::/48", "except": ["fd00::/64"]}}), SOURCE)
    block = v6.egress[0].peers[0].ip_block
    assert block is not None
    assert not block.contains(ipaddress.ip_address("10.0.0.1"))
    assert block.contains(ipaddress.ip_address("fd00:0:0:1::1"))
    assert not block.contains(ipaddress.ip_address("fd00::1"))


def test_label_keys_with_prefix_and_empty_values_are_accepted() -> None:
    selector = {"matchLabels": {"app.kubernetes.io/name": "web", "empty": "", "a" * 63: "v" * 63}}
    policy = parse_policy(pod_selector(selector), SOURCE)
    assert policy.pod_selector.matches({"app.kubernetes.io/name": "web", "empty": "", "a" * 63: "v" * 63})


def test_null_fields_mean_absent() -> None:
    policy = parse_policy(
        manifest({"podSelector": None, "policyTypes": None, "ingress": [{"from": None, "ports": None}], "egress": None}), SOURCE
    )
    assert policy.pod_selector.is_empty
    assert policy.policy_types == {PolicyType.INGRESS}
    assert policy.ingress[0].peers == () and policy.ingress[0].ports == ()


def test_null_namespace_selector_in_a_peer_is_absent() -> None:
    # On the API server a JSON null leaves the selector pointer nil: this peer is a
    # podSelector alone (same namespace), not "pods in every namespace".
    policy = parse_policy(ingress_peer({"podSelector": {"matchLabels": {"app": "web"}}, "namespaceSelector": None}), SOURCE)
    assert policy.ingress[0].peers[0].namespace_selector is None


def test_null_ip_block_next_to_a_selector_is_absent() -> None:
    policy = parse_policy(ingress_peer({"podSelector": {"matchLabels": {"app": "web"}}, "ipBlock": None}), SOURCE)
    peer = policy.ingress[0].peers[0]
    assert peer.ip_block is None and peer.pod_selector == LabelSelector({"app": "web"})


def test_metadata_extras_and_status_are_accepted() -> None:
    doc = manifest(status={})
    doc["metadata"].update({"labels": {"team": "a"}, "annotations": {"note": "x"}})
    assert parse_policy(doc, SOURCE).ref == "x/p"


def test_default_namespace_is_used_only_when_the_manifest_has_none() -> None:
    doc = manifest(namespace=None)
    original = copy.deepcopy(doc)
    policy = parse_policy(doc, SOURCE, default_namespace="prod")
    assert policy.ref == "prod/p"
    assert policy.manifest["metadata"]["namespace"] == "prod"
    assert doc == original  # the caller's manifest is not modified
    explicit = parse_policy(manifest(namespace="dev"), SOURCE, default_namespace="prod")
    assert explicit.ref == "dev/p"


def test_manifest_is_kept_as_written() -> None:
    doc = manifest({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"ports": [{"port": 5432}]}]})
    policy = parse_policy(doc, SOURCE)
    assert policy.manifest["spec"] == doc["spec"]
    assert policy.manifest["apiVersion"] == "networking.k8s.io/v1"
    assert policy.manifest["kind"] == "NetworkPolicy"


def test_longest_valid_names() -> None:
    policy = parse_policy(manifest(name="a" * 253, namespace="n" * 63), SOURCE)
    assert policy.ref == f"{'n' * 63}/{'a' * 253}"


def with_metadata(**fields: Any) -> dict[str, Any]:
    doc = manifest()
    doc["metadata"].update(fields)
    return doc


@pytest.mark.parametrize(
    ("doc", "field", "message"),
    [
        (with_metadata(labelz={"a": "b"}), "metadata.labelz", "unknown field (expected a field of metadata: annotations, "),
        (with_metadata(annotations={"team": 1}), "metadata.annotations.team", "got int (expected a string (quote numbers"),
        (with_metadata(annotations={"team": ["a"] * 3}), "metadata.annotations.team", "got list (expected a string"),
        (with_metadata(annotations={"-bad": "x"}), "metadata.annotations.-bad", "annotation key '-bad' is invalid"),
        (with_metadata(annotations="team"), "metadata.annotations", "got str (expected a mapping of keys to string values)"),
        (with_metadata(annotations={"big": "x" * (256 * 1024)}), "metadata.annotations", "the annotations are more than 256 KiB"),
        (with_metadata(labels={"app": 3}), "metadata.labels.app", "label value 3 must be a string"),
        (with_metadata(labels={"a/b/c": "x"}), "metadata.labels.a/b/c", "label key 'a/b/c' has an invalid prefix"),
    ],
    ids=["unknown-field", "int-annotation", "list-annotation", "bad-key", "not-a-map", "too-big", "int-label", "bad-label"],
)
def test_metadata_is_checked_as_the_api_server_does(doc: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(doc, SOURCE)
    assert info.value.field == field
    assert str(info.value).startswith(f"{SOURCE}: {field}: NetworkPolicy x/p: {message}")


def test_metadata_copied_from_a_cluster_is_accepted() -> None:
    """What ``kubectl get networkpolicy -o yaml`` prints is valid ObjectMeta."""
    doc = with_metadata(
        uid="0f3c0c2e-7b1e-4a57-9d0a-2f1d8c7e5b11",
        resourceVersion="4711",
        generation=2,
        creationTimestamp="2026-11-30T09:00:00Z",
        annotations={"kubectl.kubernetes.io/last-applied-configuration": '{"apiVersion":"networking.k8s.io/v1"}\n'},
        labels={"app.kubernetes.io/part-of": "shop"},
        managedFields=[{"manager": "kubectl", "operation": "Apply"}],
    )
    assert parse_policy(doc, SOURCE).ref == "x/p"
