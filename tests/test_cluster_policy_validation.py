"""``parse_cluster_policy`` accepts what the API server accepts with the
network-policy-api CRDs installed, and rejects the rest with a PolicyError naming
the file, the kind and name of the policy, and the field.

Every rule checked here is a line of the generated CRDs of
kubernetes-sigs/network-policy-api (config/crd/experimental/ and
config/crd/standard/, tag v0.2.0 for policy.networking.k8s.io_clusternetworkpolicies.yaml,
tag v0.1.8 for ..._adminnetworkpolicies.yaml and ..._baselineadminnetworkpolicies.yaml)
or of the Go types they are generated from (apis/v1alpha2/clusternetworkpolicy_types.go,
apis/v1alpha1/*_types.go); the comment on each case names the schema keyword.
The accepted side is recorded too: the manifests of the conformance scenarios
are transcribed from those tags' conformance/base/, which the upstream
conformance suite applies to real API servers.
"""

from __future__ import annotations

import copy
import ipaddress
from pathlib import Path
from typing import Any

import pytest

from harness.core.cluster_policy import (
    Action,
    Channel,
    ClusterPolicy,
    ClusterPolicyKind,
    ClusterPort,
    PeerForm,
    Tier,
    is_cluster_policy,
    parse_cluster_policy,
)
from harness.core.cluster_policy.cidr import parse_cidr
from harness.core.errors import PolicyError
from harness.core.policy import PolicyType
from harness.core.selectors import LabelSelector
from harness.core.topology import Protocol
from harness.scenario import load_scenario

SOURCE = "policies/cnp.yaml"

V1ALPHA2 = "policy.networking.k8s.io/v1alpha2"
V1ALPHA1 = "policy.networking.k8s.io/v1alpha1"


def cnp(spec: Any = None, *, name: Any = "guard", **top: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": V1ALPHA2,
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": {"tier": "Admin", "priority": 10, "subject": {"namespaces": {}}} if spec is None else spec,
    }
    doc.update(top)
    return doc


def anp(spec: Any = None, *, name: Any = "guard") -> dict[str, Any]:
    return {
        "apiVersion": V1ALPHA1,
        "kind": "AdminNetworkPolicy",
        "metadata": {"name": name},
        "spec": {"priority": 10, "subject": {"namespaces": {}}} if spec is None else spec,
    }


def banp(spec: Any = None, *, name: Any = "default") -> dict[str, Any]:
    return {
        "apiVersion": V1ALPHA1,
        "kind": "BaselineAdminNetworkPolicy",
        "metadata": {"name": name},
        "spec": {"subject": {"namespaces": {}}} if spec is None else spec,
    }


def with_egress(doc: dict[str, Any], *rules: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["spec"]["egress"] = list(rules)
    return doc


def with_ingress(doc: dict[str, Any], *rules: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["spec"]["ingress"] = list(rules)
    return doc


def to(*peers: Any, action: str = "Deny", **rule: Any) -> dict[str, Any]:
    return {"action": action, "to": list(peers), **rule}


def from_(*peers: Any, action: str = "Deny", **rule: Any) -> dict[str, Any]:
    return {"action": action, "from": list(peers), **rule}


ALL_NAMESPACES: dict[str, Any] = {"namespaces": {}}


def tcp(number: int) -> dict[str, Any]:
    return {"tcp": {"destinationPort": {"number": number}}}


def case(doc: Any, field: str, *words: str, id: str, channel: Channel = Channel.EXPERIMENTAL) -> Any:
    return pytest.param(doc, field, words, channel, id=id)


REJECTIONS = [
    # -- the object
    case({**cnp(), "apiVersion": V1ALPHA1}, "apiVersion", V1ALPHA2, id="cnp-is-v1alpha2-only"),
    case({**anp(), "apiVersion": V1ALPHA2}, "apiVersion", V1ALPHA1, id="anp-is-v1alpha1-only"),
    case({**cnp(), "extra": 1}, "extra", "unknown field", id="unknown-top-level-field"),
    case(cnp(name="Guard"), "metadata.name", "not a valid name", id="name-not-dns-subdomain"),
    case({k: v for k, v in cnp().items() if k != "spec"}, "spec", "required", id="spec-required"),
    case({k: v for k, v in cnp().items() if k != "metadata"}, "metadata", "required", id="metadata-required"),
    # BANP: x-kubernetes-validations on the root, self.metadata.name == 'default'
    case(banp(name="cluster"), "metadata.name", 'metadata.name="default"', id="banp-must-be-named-default"),
    # -- spec: required [priority, subject, tier], tier enum, priority minimum 0 maximum 1000
    case(cnp({"priority": 1, "subject": ALL_NAMESPACES}), "spec.tier", "required", id="tier-required"),
    case(cnp({"tier": "Admin", "subject": ALL_NAMESPACES}), "spec.priority", "required", id="priority-required"),
    case(cnp({"tier": "Admin", "priority": 1}), "spec.subject", "required", id="subject-required"),
    case(
        cnp({"tier": "admin", "priority": 1, "subject": ALL_NAMESPACES}),
        "spec.tier",
        "'admin'",
        "Admin or Baseline",
        id="tier-enum",
    ),
    case(
        cnp({"tier": "Admin", "priority": 1001, "subject": ALL_NAMESPACES}), "spec.priority", "outside 0-1000", id="priority-max"
    ),
    case(cnp({"tier": "Admin", "priority": -1, "subject": ALL_NAMESPACES}), "spec.priority", "outside 0-1000", id="priority-min"),
    case(
        cnp({"tier": "Admin", "priority": "5", "subject": ALL_NAMESPACES}), "spec.priority", "got string", id="priority-integer"
    ),
    case(cnp({"tier": "Admin", "priority": 2.5, "subject": ALL_NAMESPACES}), "spec.priority", "number 2.5", id="priority-float"),
    case(cnp({"tier": "Admin", "priority": True, "subject": ALL_NAMESPACES}), "spec.priority", "boolean", id="priority-bool"),
    case(anp({"priority": 1, "subject": ALL_NAMESPACES, "tier": "Admin"}), "spec.tier", "unknown field", id="anp-has-no-tier"),
    case(banp({"priority": 1, "subject": ALL_NAMESPACES}), "spec.priority", "unknown field", id="banp-has-no-priority"),
    # -- subject: minProperties 1, maxProperties 1; NamespacedPod required fields
    case(cnp({"tier": "Admin", "priority": 1, "subject": {}}), "spec.subject", "exactly one", id="subject-empty"),
    case(
        cnp({"tier": "Admin", "priority": 1, "subject": {"namespaces": {}, "pods": {"podSelector": {}}}}),
        "spec.subject",
        "namespaces and pods",
        id="subject-two-forms",
    ),
    case(
        cnp({"tier": "Admin", "priority": 1, "subject": {"pods": {"namespaceSelector": {}}}}),
        "spec.subject.pods.podSelector",
        "required",
        id="pods-need-pod-selector",
    ),
    case(
        anp({"priority": 1, "subject": {"pods": {"podSelector": {}}}}),
        "spec.subject.pods.namespaceSelector",
        "required",
        id="v1alpha1-pods-need-namespace-selector",
    ),
    case(
        cnp({"tier": "Admin", "priority": 1, "subject": {"namespaces": {"matchLabels": {"a": "b c"}}}}),
        "spec.subject.namespaces.matchLabels.a",
        "label value",
        "no implementation can evaluate",
        id="selector-value-invalid",
    ),
    case(
        cnp(
            {
                "tier": "Admin",
                "priority": 1,
                "subject": {"namespaces": {"matchExpressions": [{"key": "a", "operator": "Equals"}]}},
            }
        ),
        "spec.subject.namespaces.matchExpressions[0].operator",
        "unknown operator",
        id="selector-operator-invalid",
    ),
    # -- rules: maxItems 25 (v1alpha2) / 100 (v1alpha1); required [action, from|to]; name maxLength 100; action enum
    case(with_ingress(cnp(), *[from_(ALL_NAMESPACES)] * 26), "spec.ingress", "26 items, at most 25", id="cnp-max-25-rules"),
    case(with_egress(anp(), *[to(ALL_NAMESPACES)] * 101), "spec.egress", "101 items, at most 100", id="anp-max-100-rules"),
    case(with_ingress(cnp(), {"action": "Deny"}), "spec.ingress[0].from", "required", id="from-required"),
    case(with_egress(cnp(), {"to": [ALL_NAMESPACES]}), "spec.egress[0].action", "required", id="action-required"),
    case(
        with_ingress(cnp(), from_(action="Allow")),
        "spec.ingress[0].action",
        "'Allow'",
        "Accept or Deny or Pass",
        id="cnp-says-accept",
    ),
    case(
        with_ingress(anp(), from_(action="Accept")),
        "spec.ingress[0].action",
        "'Accept'",
        "Allow or Deny or Pass",
        id="anp-says-allow",
    ),
    case(
        with_ingress(banp(), from_(ALL_NAMESPACES, action="Pass")),
        "spec.ingress[0].action",
        "'Pass'",
        "Allow or Deny",
        id="banp-has-no-pass",
    ),
    case(
        with_ingress(cnp(), from_(ALL_NAMESPACES, name="r" * 101)),
        "spec.ingress[0].name",
        "at most 100",
        id="rule-name-max-length",
    ),
    case(with_ingress(cnp(), from_()), "spec.ingress[0].from", "0 items, at least 1", id="from-min-items"),
    case(with_ingress(cnp(), from_(*[ALL_NAMESPACES] * 26)), "spec.ingress[0].from", "26 items, at most 25", id="from-max-items"),
    case(
        with_ingress(cnp(), {**from_(ALL_NAMESPACES), "ports": []}),
        "spec.ingress[0].ports",
        "unknown field",
        id="cnp-has-protocols-not-ports",
    ),
    # -- peers: exactly one field; ingress peers are namespaces or pods only
    case(with_ingress(cnp(), from_({})), "spec.ingress[0].from[0]", "exactly one", id="peer-empty"),
    case(with_ingress(cnp(), from_({"namespaces": None})), "spec.ingress[0].from[0]", "exactly one", id="peer-null-is-absent"),
    case(
        with_ingress(cnp(), from_({"networks": ["10.0.0.0/8"]})),
        "spec.ingress[0].from[0].networks",
        "unknown field",
        id="no-networks-in-ingress",
    ),
    case(
        with_egress(cnp(), to({"namespaces": {}, "networks": ["10.0.0.0/8"]})),
        "spec.egress[0].to[0]",
        "namespaces and networks",
        id="peer-two-forms",
    ),
    case(
        with_egress(banp(), to({"domainNames": ["example.com"]})),
        "spec.egress[0].to[0].domainNames",
        "unknown field",
        id="banp-no-domain-names",
    ),
    # -- networks: minItems 1, maxItems 25, set, items maxLength 43 and isCIDR
    case(with_egress(cnp(), to({"networks": []})), "spec.egress[0].to[0].networks", "at least 1", id="networks-min-items"),
    case(
        with_egress(cnp(), to({"networks": [f"10.0.{i}.0/24" for i in range(26)]})),
        "spec.egress[0].to[0].networks",
        "at most 25",
        id="networks-max-items",
    ),
    case(
        with_egress(cnp(), to({"networks": ["10.0.0.0/8", "10.0.0.0/8"]})),
        "spec.egress[0].to[0].networks[1]",
        "duplicate",
        id="networks-are-a-set",
    ),
    case(
        with_egress(cnp(), to({"networks": ["10.0.0.0"]})),
        "spec.egress[0].to[0].networks[0]",
        "Invalid CIDR",
        id="cidr-needs-prefix",
    ),
    case(
        with_egress(cnp(), to({"networks": ["10.0.0.0/33"]})),
        "spec.egress[0].to[0].networks[0]",
        "Invalid CIDR",
        id="cidr-prefix-too-long",
    ),
    case(
        with_egress(cnp(), to({"networks": ["10.0.0.0/08"]})),
        "spec.egress[0].to[0].networks[0]",
        "Invalid CIDR",
        id="cidr-prefix-leading-zero",
    ),
    case(
        with_egress(cnp(), to({"networks": ["010.0.0.0/8"]})),
        "spec.egress[0].to[0].networks[0]",
        "Invalid CIDR",
        id="cidr-octet-leading-zero",
    ),
    case(
        with_egress(cnp(), to({"networks": ["fe80::1%eth0/64"]})),
        "spec.egress[0].to[0].networks[0]",
        "Invalid CIDR",
        id="cidr-zone",
    ),
    case(
        with_egress(cnp(), to({"networks": ["::ffff:10.0.0.1/128"]})),
        "spec.egress[0].to[0].networks[0]",
        "Invalid CIDR",
        id="cidr-ipv4-mapped",
    ),
    case(
        with_egress(cnp(), to({"networks": ["10.0.0.0/255.0.0.0"]})),
        "spec.egress[0].to[0].networks[0]",
        "Invalid CIDR",
        id="cidr-netmask-form",
    ),
    case(
        with_egress(cnp(), to({"networks": ["0000:0000:0000:0000:0000:0000:255.255.255.255/128"]})),
        "spec.egress[0].to[0].networks[0]",
        "at most 43",
        id="cidr-max-length",
    ),
    case(
        with_egress(cnp(), to({"networks": [167772160]})), "spec.egress[0].to[0].networks[0]", "got number", id="cidr-is-a-string"
    ),
    # -- domainNames: the DomainName pattern, set; experimental only
    case(
        with_egress(cnp(), to({"domainNames": ["exa mple.com"]})),
        "spec.egress[0].to[0].domainNames[0]",
        "not a domain name",
        id="domain-pattern",
    ),
    case(
        with_egress(cnp(), to({"domainNames": ["a.*.example.com"]})),
        "spec.egress[0].to[0].domainNames[0]",
        "not a domain name",
        id="wildcard-prefix-only",
    ),
    case(
        with_egress(cnp(), to({"domainNames": ["localhost"]})),
        "spec.egress[0].to[0].domainNames[0]",
        "not a domain name",
        id="domain-needs-a-dot",
    ),
    case(
        with_egress(cnp(), to({"domainNames": ["example.com"]})),
        "spec.egress[0].to[0].domainNames",
        "experimental channel",
        id="domain-names-not-standard",
        channel=Channel.STANDARD,
    ),
    case(
        with_egress(cnp(), to({"nodes": {}})),
        "spec.egress[0].to[0].nodes",
        "experimental channel",
        id="nodes-not-standard",
        channel=Channel.STANDARD,
    ),
    # -- protocols (v1alpha2): minItems 1, exactly one of tcp/udp/sctp/destinationNamedPort,
    #    tcp minProperties 1, destinationPort exactly one of number/range, 1-65535, start < end (CEL)
    case(
        with_egress(cnp(), to(ALL_NAMESPACES, protocols=[])), "spec.egress[0].protocols", "at least 1", id="protocols-min-items"
    ),
    case(
        with_egress(cnp(), to(ALL_NAMESPACES, protocols=[{}])), "spec.egress[0].protocols[0]", "exactly one", id="protocol-empty"
    ),
    case(
        with_egress(
            cnp(),
            to(
                ALL_NAMESPACES,
                protocols=[{"tcp": {"destinationPort": {"number": 80}}, "udp": {"destinationPort": {"number": 53}}}],
            ),
        ),
        "spec.egress[0].protocols[0]",
        "tcp and udp",
        id="protocol-two-fields",
    ),
    case(
        with_egress(cnp(), to(ALL_NAMESPACES, protocols=[{"tcp": {}}])),
        "spec.egress[0].protocols[0].tcp",
        "at least one field",
        id="tcp-min-properties",
    ),
    case(
        with_egress(cnp(), to(ALL_NAMESPACES, protocols=[{"icmp": {}}])),
        "spec.egress[0].protocols[0].icmp",
        "unknown field",
        id="no-icmp",
    ),
    case(
        with_egress(cnp(), to(ALL_NAMESPACES, protocols=[tcp(0)])),
        "spec.egress[0].protocols[0].tcp.destinationPort.number",
        "outside 1-65535",
        id="port-min",
    ),
    case(
        with_egress(cnp(), to(ALL_NAMESPACES, protocols=[tcp(65536)])),
        "spec.egress[0].protocols[0].tcp.destinationPort.number",
        "outside 1-65535",
        id="port-max",
    ),
    case(
        with_egress(
            cnp(), to(ALL_NAMESPACES, protocols=[{"udp": {"destinationPort": {"number": 53, "range": {"start": 1, "end": 2}}}}])
        ),
        "spec.egress[0].protocols[0].udp.destinationPort",
        "number and range",
        id="number-or-range",
    ),
    case(
        with_egress(cnp(), to(ALL_NAMESPACES, protocols=[{"tcp": {"destinationPort": {"range": {"start": 90, "end": 80}}}}])),
        "spec.egress[0].protocols[0].tcp.destinationPort.range",
        "Start port must be less than End port",
        id="range-start-below-end",
    ),
    case(
        with_egress(cnp(), to(ALL_NAMESPACES, protocols=[{"tcp": {"destinationPort": {"range": {"start": 80, "end": 80}}}}])),
        "spec.egress[0].protocols[0].tcp.destinationPort.range",
        "Start port must be less than End port",
        id="range-of-one-port",
    ),
    case(
        with_egress(cnp(), to(ALL_NAMESPACES, protocols=[{"sctp": {"destinationPort": {"range": {"start": 80}}}}])),
        "spec.egress[0].protocols[0].sctp.destinationPort.range.end",
        "required",
        id="range-needs-end",
    ),
    # -- the experimental CEL rule on egress rules: no named ports with networks/nodes/domainNames
    case(
        with_egress(cnp(), to({"networks": ["0.0.0.0/0"]}, protocols=[{"destinationNamedPort": "http"}])),
        "spec.egress[0]",
        "networks/nodes/domainNames peer cannot be set with namedPorts",
        id="cel-named-port-with-networks",
    ),
    case(
        with_egress(anp(), to(ALL_NAMESPACES, {"nodes": {}}, ports=[{"namedPort": "http"}])),
        "spec.egress[0]",
        "networks/nodes/domainNames peer cannot be set with namedPorts",
        id="cel-named-port-with-nodes-v1alpha1",
    ),
    case(
        with_egress(banp(), to({"networks": ["10.0.0.0/8"]}, ports=[{"namedPort": "http"}])),
        "spec.egress[0]",
        "networks/nodes peer cannot be set with namedPorts",
        id="cel-named-port-banp",
    ),
    # -- ports (v1alpha1): exactly one of portNumber/namedPort/portRange; port required
    case(
        with_ingress(anp(), from_(ALL_NAMESPACES, ports=[{"portNumber": {"protocol": "TCP"}}])),
        "spec.ingress[0].ports[0].portNumber.port",
        "required",
        id="port-number-needs-port",
    ),
    case(
        with_ingress(anp(), from_(ALL_NAMESPACES, ports=[{"portNumber": {"port": 80}, "namedPort": "http"}])),
        "spec.ingress[0].ports[0]",
        "portNumber and namedPort",
        id="v1alpha1-one-port-form",
    ),
    case(
        with_ingress(anp(), from_(ALL_NAMESPACES, ports=[{"portNumber": {"port": 80, "protocol": "ICMP"}}])),
        "spec.ingress[0].ports[0].portNumber.protocol",
        "unknown protocol 'ICMP'",
        "TCP, UDP or SCTP",
        id="v1alpha1-protocol-free-string-refused",
    ),
    case(
        with_ingress(anp(), from_(ALL_NAMESPACES, ports=[{"namedPort": "http"}])),
        "spec.ingress[0].ports[0].namedPort",
        "experimental channel",
        id="v1alpha1-named-port-not-standard",
        channel=Channel.STANDARD,
    ),
    case(
        with_ingress(anp(), from_(ALL_NAMESPACES, protocols=[tcp(80)])),
        "spec.ingress[0].protocols",
        "unknown field",
        id="anp-has-ports-not-protocols",
    ),
]


@pytest.mark.parametrize(("doc", "field", "words", "channel"), REJECTIONS)
def test_what_the_api_server_rejects(doc: Any, field: str, words: tuple[str, ...], channel: Channel) -> None:
    with pytest.raises(PolicyError) as info:
        parse_cluster_policy(doc, SOURCE, channel)
    err = info.value
    assert err.source == SOURCE
    assert err.field == field
    assert err.kind == doc["kind"]
    text = str(err)
    assert text.startswith(f"{SOURCE}: {field}: {doc['kind']} ")
    for word in words:
        assert word in text, text


def test_a_policy_without_rules_is_valid() -> None:
    policy = parse_cluster_policy(cnp(), SOURCE)
    assert (policy.kind, policy.tier, policy.priority) == (ClusterPolicyKind.CLUSTER_NETWORK_POLICY, Tier.ADMIN, 10)
    assert policy.ref == "ClusterNetworkPolicy/guard"
    assert policy.ingress == policy.egress == ()
    assert policy.subject.namespace_selector == LabelSelector() and policy.subject.pod_selector is None


def test_the_manifest_is_kept_as_written() -> None:
    doc = with_egress(cnp(), to({"networks": ["10.0.0.1/8"]}, name="out"))
    policy = parse_cluster_policy(doc, SOURCE)
    assert policy.manifest == doc
    # Host bits are accepted (netip.ParsePrefix keeps them) and cleared in the typed form.
    assert policy.egress[0].peers[0].networks == (ipaddress.IPv4Network("10.0.0.0/8"),)


def test_nulls_are_dropped_before_validation() -> None:
    doc = cnp({"tier": "Baseline", "priority": 0, "subject": {"namespaces": None, "pods": {"podSelector": {}}}, "ingress": None})
    policy = parse_cluster_policy(doc, SOURCE)
    assert policy.subject.pod_selector == LabelSelector() and policy.ingress == ()


def test_v1alpha2_pods_default_to_every_namespace() -> None:
    doc = with_ingress(cnp(), from_({"pods": {"podSelector": {"matchLabels": {"app": "db"}}}}))
    peer = parse_cluster_policy(doc, SOURCE).ingress[0].peers[0]
    assert peer.form is PeerForm.PODS
    assert peer.pods is not None and peer.pods.namespace_selector == LabelSelector()


def test_protocols_numbers_ranges_and_named_ports() -> None:
    doc = with_egress(
        cnp(),
        to(
            ALL_NAMESPACES,
            protocols=[
                tcp(80),
                {"udp": {"destinationPort": {"range": {"start": 5000, "end": 5010}}}},
                {"sctp": {"destinationPort": {"number": 9003}}},
                {"destinationNamedPort": "dns"},
            ],
        ),
    )
    assert parse_cluster_policy(doc, SOURCE).egress[0].ports == (
        ClusterPort(Protocol.TCP, 80, 80),
        ClusterPort(Protocol.UDP, 5000, 5010),
        ClusterPort(Protocol.SCTP, 9003, 9003),
        ClusterPort(None, name="dns"),
    )


def test_a_rule_without_protocols_matches_every_port() -> None:
    rule = parse_cluster_policy(with_egress(cnp(), to(ALL_NAMESPACES)), SOURCE).egress[0]
    assert rule.ports is None


def test_named_ports_with_networks_pass_on_the_standard_channel() -> None:
    # The CEL rule is marked <network-policy-api:experimental:validation> and is only
    # in the experimental CRD; the standard one accepts the combination.
    doc = with_egress(cnp(), to({"networks": ["0.0.0.0/0"]}, protocols=[{"destinationNamedPort": "http"}]))
    assert parse_cluster_policy(doc, SOURCE, Channel.STANDARD).egress[0].ports == (ClusterPort(None, name="http"),)


def test_v1alpha1_ports_default_to_tcp_and_allow_is_accept() -> None:
    doc = with_ingress(
        anp(),
        from_(
            {"pods": {"namespaceSelector": {}, "podSelector": {}}},
            action="Allow",
            ports=[{"portNumber": {"port": 80}}, {"portRange": {"start": 8000, "end": 8080, "protocol": "UDP"}}],
        ),
    )
    rule = parse_cluster_policy(doc, SOURCE).ingress[0]
    assert rule.action is Action.ACCEPT
    assert rule.ports == (ClusterPort(Protocol.TCP, 80, 80), ClusterPort(Protocol.UDP, 8000, 8080))


def test_v1alpha1_port_range_has_no_order_rule() -> None:
    # Unlike v1alpha2, v1alpha1's PortRange has no start < end validation.
    doc = with_ingress(anp(), from_(ALL_NAMESPACES, ports=[{"portRange": {"start": 90, "end": 80}}]))
    assert parse_cluster_policy(doc, SOURCE).ingress[0].ports == (ClusterPort(Protocol.TCP, 90, 80),)


def test_banp_is_the_baseline_tier_without_priority() -> None:
    policy = parse_cluster_policy(with_egress(banp(), to({"networks": ["0.0.0.0/0"]}, action="Allow")), SOURCE)
    assert (policy.tier, policy.priority, policy.ref) == (Tier.BASELINE, 0, "BaselineAdminNetworkPolicy/default")
    assert policy.describe_rule(PolicyType.EGRESS, 0) == "BaselineAdminNetworkPolicy/default egress[0] (Allow, Baseline tier)"


def test_the_experimental_peers_parse() -> None:
    doc = with_egress(
        cnp(), to({"nodes": {"matchLabels": {"kubernetes.io/os": "linux"}}}, {"domainNames": ["*.example.com", "example.org."]})
    )
    peers = parse_cluster_policy(doc, SOURCE).egress[0].peers
    assert [p.form for p in peers] == [PeerForm.NODES, PeerForm.DOMAIN_NAMES]
    assert peers[1].domain_names == ("*.example.com", "example.org.")


def test_is_cluster_policy_by_kind() -> None:
    assert is_cluster_policy(cnp()) and is_cluster_policy(anp()) and is_cluster_policy(banp())
    assert not is_cluster_policy({"kind": "NetworkPolicy"}) and not is_cluster_policy("ClusterNetworkPolicy")


@pytest.mark.parametrize(
    ("text", "network"),
    [
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("10.1.2.3/8", "10.0.0.0/8"),
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("::/0", "::/0"),
        ("fd00::1/8", "fd00::/8"),
        ("203.0.113.10/32", "203.0.113.10/32"),
        ("10.0.0.0/", None),
        ("/8", None),
        ("10.0.0.0/+8", None),
        ("10.0.0.0/-1", None),
        ("10.0.0.0/8/8", None),
        (" 10.0.0.0/8", None),
        ("::/129", None),
    ],
)
def test_cidrs_as_go_netip_parses_them(text: str, network: str | None) -> None:
    parsed = parse_cidr(text)
    assert (str(parsed) if parsed is not None else None) == network


LIBRARY = Path(__file__).resolve().parent.parent / "scenarios"
CONFORMANCE = sorted(LIBRARY.glob("conformance-cnp-*.yaml")) + sorted(LIBRARY.glob("conformance-anp-*.yaml"))


def test_the_transcribed_upstream_manifests_need_the_channel_upstream_files_them_under() -> None:
    """Recorded: the conformance scenarios' policies are transcribed from
    network-policy-api conformance/base/ (v0.2.0 and v0.1.8), which upstream CI
    applies to real API servers. Its standard-*.yaml manifests need only the
    standard CRDs; the named-port tests patch in v1alpha1's namedPort, which is
    experimental (v1alpha2's destinationNamedPort is standard)."""
    kinds = set()
    for path in CONFORMANCE:
        for step in load_scenario(path).steps:
            for policy in step.changes.apply:
                if not isinstance(policy, ClusterPolicy):
                    continue
                kinds.add(policy.kind)
                if "named-ports" in path.name and policy.kind.is_v1alpha1:
                    with pytest.raises(PolicyError, match="experimental channel"):
                        parse_cluster_policy(policy.manifest, policy.source, Channel.STANDARD)
                else:
                    assert parse_cluster_policy(policy.manifest, policy.source, Channel.STANDARD) == policy
    assert kinds == set(ClusterPolicyKind)
